//! Names of kernel build variants, as the Hub lays them out under `build/<variant>/`.
//!
//! The grammar follows the Python `kernels` package:
//!
//! | form | example |
//! |---|---|
//! | torch, per arch | `torch212-cxx11-cu130-x86_64-linux`, `torch212-metal-aarch64-darwin` |
//! | torch stable ABI | `torch-stable-abi211-cu126-x86_64-linux` |
//! | tvm-ffi | `tvm-ffi01-cu130-x86_64-linux`, `tvm-ffi01-cpu-x86_64-linux` |
//! | torch noarch | `torch-cuda`, `torch-cpu`, `torch-npu` |
//! | legacy universal | `torch-universal` |
//!
//! Framework versions put the major in the first digit (`torch212` is 2.12, `tvm-ffi01` is
//! 0.1); backend versions put the minor in the last digit (`cu130` is 13.0, `xpu20253` is
//! 2025.3). [`VariantName`] prints exactly what it parsed, so names round-trip.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

/// The name of the variant directory `dir` (its last component, lossily as text; empty when it
/// has none): the name [`VariantName::parse`] reads and selection goes by.
pub fn dir_name(dir: &Path) -> String {
    dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default()
}

/// A `major.minor` version, as found in variant names and reported by drivers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    /// Major component.
    pub major: u32,
    /// Minor component.
    pub minor: u32,
}

impl Version {
    /// `major.minor`.
    pub const fn new(major: u32, minor: u32) -> Self {
        Self { major, minor }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// Why kernels-rs cannot load a variant ([`VariantName::loadable`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unloadable {
    /// A PyTorch extension module (full ABI, noarch, universal): what kind.
    #[error("needs PyTorch ({0})")]
    NeedsPyTorch(&'static str),
    /// A torch stable-ABI variant this runtime cannot serve: its target, and why.
    #[error("{reason}")]
    StableAbi {
        /// The variant's target (`torch-stable-abi<MM>`).
        target: Version,
        /// Why (target out of range, or no host in this build).
        reason: String,
    },
}

/// Why a variant name could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{name}` is not a kernel variant name: {reason}")]
pub struct VariantParseError {
    /// The name as given.
    pub name: String,
    /// What is wrong with it.
    pub reason: String,
}

/// The framework a variant was built for: the part before the first arch component.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Framework {
    /// A PyTorch extension for one torch `major.minor` (`torch212`).
    Torch(Version),
    /// A PyTorch extension against torch's stable ABI (`torch-stable-abi211`).
    TorchStableAbi(Version),
    /// A library exporting the TVM-FFI stable C ABI (`tvm-ffi01`).
    TvmFfi(Version),
}

impl Framework {
    /// Whether variants of this framework can only be loaded by PyTorch.
    pub fn needs_pytorch(self) -> bool {
        !matches!(self, Framework::TvmFfi(_))
    }
}

impl fmt::Display for Framework {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Framework::Torch(v) => write!(f, "torch{}{}", v.major, v.minor),
            Framework::TorchStableAbi(v) => write!(f, "torch-stable-abi{}{}", v.major, v.minor),
            Framework::TvmFfi(v) => write!(f, "tvm-ffi{}{}", v.major, v.minor),
        }
    }
}

/// The C++ standard library ABI marker of Linux torch variants.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CxxAbi {
    /// `cxx11`: the new libstdc++ ABI.
    Cxx11,
    /// `cxx98`: the pre-C++11 libstdc++ ABI.
    Cxx98,
}

impl fmt::Display for CxxAbi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CxxAbi::Cxx11 => "cxx11",
            CxxAbi::Cxx98 => "cxx98",
        })
    }
}

/// The compute backend of an arch variant, with its toolkit version where it has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// NVIDIA CUDA, `cu<M><m>` (`cu130` = CUDA 13.0).
    Cuda(Version),
    /// AMD ROCm, `rocm<M><m>` (`rocm71` = ROCm 7.1).
    Rocm(Version),
    /// Intel XPU (oneAPI), `xpu<YYYY><m>` (`xpu20253` = 2025.3).
    Xpu(Version),
    /// Huawei Ascend CANN, `cann<M><m>`.
    Cann(Version),
    /// Plain CPU code.
    Cpu,
    /// Apple Metal.
    Metal,
    /// AWS Neuron.
    Neuron,
    /// Google TPU.
    Tpu,
}

/// A backend without its version: the kind of device a layer runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BackendKind {
    /// NVIDIA GPUs.
    Cuda,
    /// AMD GPUs.
    Rocm,
    /// Intel GPUs.
    Xpu,
    /// Ascend NPUs.
    Cann,
    /// The host CPU.
    Cpu,
    /// Apple GPUs.
    Metal,
    /// AWS Neuron devices.
    Neuron,
    /// Google TPUs.
    Tpu,
}

impl BackendKind {
    /// Every kind, in a stable order.
    pub const ALL: [BackendKind; 8] = [
        BackendKind::Cuda,
        BackendKind::Rocm,
        BackendKind::Xpu,
        BackendKind::Cann,
        BackendKind::Cpu,
        BackendKind::Metal,
        BackendKind::Neuron,
        BackendKind::Tpu,
    ];

    /// The lowercase name used in `kernels.toml` and traces (`cuda`, `cpu`, …).
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Cuda => "cuda",
            BackendKind::Rocm => "rocm",
            BackendKind::Xpu => "xpu",
            BackendKind::Cann => "cann",
            BackendKind::Cpu => "cpu",
            BackendKind::Metal => "metal",
            BackendKind::Neuron => "neuron",
            BackendKind::Tpu => "tpu",
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for BackendKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        BackendKind::ALL.into_iter().find(|k| k.as_str() == s).ok_or_else(|| {
            format!("unknown backend `{s}` (expected one of: cuda, rocm, xpu, cann, cpu, metal, neuron, tpu)")
        })
    }
}

impl Backend {
    /// The backend without its version.
    pub fn kind(self) -> BackendKind {
        match self {
            Backend::Cuda(_) => BackendKind::Cuda,
            Backend::Rocm(_) => BackendKind::Rocm,
            Backend::Xpu(_) => BackendKind::Xpu,
            Backend::Cann(_) => BackendKind::Cann,
            Backend::Cpu => BackendKind::Cpu,
            Backend::Metal => BackendKind::Metal,
            Backend::Neuron => BackendKind::Neuron,
            Backend::Tpu => BackendKind::Tpu,
        }
    }

    /// The toolkit version, for backends whose variants carry one.
    pub fn version(self) -> Option<Version> {
        match self {
            Backend::Cuda(v) | Backend::Rocm(v) | Backend::Xpu(v) | Backend::Cann(v) => Some(v),
            Backend::Cpu | Backend::Metal | Backend::Neuron | Backend::Tpu => None,
        }
    }

    fn parse(s: &str) -> Result<Self, String> {
        match s {
            "cpu" => return Ok(Backend::Cpu),
            "metal" => return Ok(Backend::Metal),
            "neuron" => return Ok(Backend::Neuron),
            "tpu" => return Ok(Backend::Tpu),
            _ => {}
        }
        type MakeBackend = fn(Version) -> Backend;
        let versioned: [(&str, MakeBackend); 4] =
            [("rocm", Backend::Rocm), ("xpu", Backend::Xpu), ("cann", Backend::Cann), ("cu", Backend::Cuda)];
        for (prefix, make) in versioned {
            if let Some(digits) = s.strip_prefix(prefix) {
                return backend_version(digits).map(make).map_err(|e| {
                    digits_reason(e, s, || {
                        format!(
                            "backend `{s}` needs `{prefix}` followed by at least two digits (e.g. `{prefix}{}`)",
                            example_digits(prefix)
                        )
                    })
                });
            }
        }
        Err(format!(
            "unknown backend `{s}` (expected cu<ver>, rocm<ver>, xpu<ver>, cann<ver>, cpu, metal, neuron or tpu)"
        ))
    }
}

fn example_digits(prefix: &str) -> &'static str {
    match prefix {
        "xpu" => "20253",
        "rocm" => "71",
        _ => "130",
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Backend::Cuda(v) => write!(f, "cu{}{}", v.major, v.minor),
            Backend::Rocm(v) => write!(f, "rocm{}{}", v.major, v.minor),
            Backend::Xpu(v) => write!(f, "xpu{}{}", v.major, v.minor),
            Backend::Cann(v) => write!(f, "cann{}{}", v.major, v.minor),
            Backend::Cpu => f.write_str("cpu"),
            Backend::Metal => f.write_str("metal"),
            Backend::Neuron => f.write_str("neuron"),
            Backend::Tpu => f.write_str("tpu"),
        }
    }
}

/// CPU architecture component of a variant name, or of the running system.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CpuArch {
    /// `x86_64`.
    X86_64,
    /// `aarch64`.
    Aarch64,
    /// Anything else the system reports (never produced by parsing a variant name).
    Other(String),
}

impl CpuArch {
    /// The arch this binary was compiled for.
    pub fn current() -> Self {
        match std::env::consts::ARCH {
            "x86_64" => CpuArch::X86_64,
            "aarch64" => CpuArch::Aarch64,
            other => CpuArch::Other(other.to_owned()),
        }
    }
}

impl fmt::Display for CpuArch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CpuArch::X86_64 => "x86_64",
            CpuArch::Aarch64 => "aarch64",
            CpuArch::Other(s) => s,
        })
    }
}

/// Operating system component of a variant name, or of the running system.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Os {
    /// `linux`.
    Linux,
    /// `darwin` (macOS).
    Darwin,
    /// `windows`.
    Windows,
    /// Anything else the system reports (never produced by parsing a variant name).
    Other(String),
}

impl Os {
    /// The OS this binary was compiled for.
    pub fn current() -> Self {
        match std::env::consts::OS {
            "linux" => Os::Linux,
            "macos" => Os::Darwin,
            "windows" => Os::Windows,
            other => Os::Other(other.to_owned()),
        }
    }
}

impl fmt::Display for Os {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Os::Linux => "linux",
            Os::Darwin => "darwin",
            Os::Windows => "windows",
            Os::Other(s) => s,
        })
    }
}

/// The backend of a torch noarch variant (`torch-<backend>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NoarchBackend {
    /// `torch-cpu`.
    Cpu,
    /// `torch-cuda`.
    Cuda,
    /// `torch-metal`.
    Metal,
    /// `torch-neuron`.
    Neuron,
    /// `torch-npu` (Ascend).
    Npu,
    /// `torch-rocm`.
    Rocm,
    /// `torch-tpu`.
    Tpu,
    /// `torch-xpu`.
    Xpu,
}

impl NoarchBackend {
    const ALL: [(NoarchBackend, &'static str); 8] = [
        (NoarchBackend::Cpu, "cpu"),
        (NoarchBackend::Cuda, "cuda"),
        (NoarchBackend::Metal, "metal"),
        (NoarchBackend::Neuron, "neuron"),
        (NoarchBackend::Npu, "npu"),
        (NoarchBackend::Rocm, "rocm"),
        (NoarchBackend::Tpu, "tpu"),
        (NoarchBackend::Xpu, "xpu"),
    ];

    fn as_str(self) -> &'static str {
        Self::ALL.iter().find(|(b, _)| *b == self).map(|(_, s)| *s).unwrap_or("?")
    }
}

/// A parsed build variant name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum VariantName {
    /// Compiled code for one backend, CPU arch and OS.
    Arch {
        /// What the code was built against.
        framework: Framework,
        /// The libstdc++ ABI marker, present only on names that carry one.
        cxx_abi: Option<CxxAbi>,
        /// The compute backend and its toolkit version.
        backend: Backend,
        /// CPU architecture.
        cpu: CpuArch,
        /// Operating system.
        os: Os,
    },
    /// A pure-Python torch kernel for one backend (`torch-cuda`).
    Noarch(NoarchBackend),
    /// The legacy pure-Python torch kernel for every backend (`torch-universal`).
    Universal,
}

impl VariantName {
    /// Parses a variant directory name.
    pub fn parse(name: &str) -> Result<Self, VariantParseError> {
        parse_variant(name).map_err(|reason| VariantParseError { name: name.to_owned(), reason })
    }

    /// The framework of an arch variant; `None` for noarch and universal (pure torch).
    pub fn framework(&self) -> Option<Framework> {
        match self {
            VariantName::Arch { framework, .. } => Some(*framework),
            VariantName::Noarch(_) | VariantName::Universal => None,
        }
    }

    /// The backend of an arch variant.
    pub fn backend(&self) -> Option<Backend> {
        match self {
            VariantName::Arch { backend, .. } => Some(*backend),
            VariantName::Noarch(_) | VariantName::Universal => None,
        }
    }

    /// Whether only PyTorch can load this variant (everything but `tvm-ffi*`).
    pub fn needs_pytorch(&self) -> bool {
        self.framework().is_none_or(Framework::needs_pytorch)
    }

    /// Whether kernels-rs can load this variant, or why not. The one switch for which variants
    /// are loadable: locking, embedding and selection all ask here.
    ///
    /// `tvm-ffi<MM>` variants load; `torch-stable-abi<MM>` variants load when `<MM>` is within
    /// the targets the torch stable-ABI host serves
    /// ([`OLDEST_TARGET`](crate::torch_stable_abi::OLDEST_TARGET) through
    /// [`NEWEST_TARGET`](crate::torch_stable_abi::NEWEST_TARGET)) and this runtime carries the
    /// host (feature `torch-stable`, Linux on x86_64 or aarch64), for the CPU and CUDA backends
    /// (not ROCm, XPU or Metal yet); full-ABI torch, noarch and
    /// universal variants need PyTorch.
    pub fn loadable(&self) -> Result<(), Unloadable> {
        match self {
            VariantName::Arch { framework: Framework::TvmFfi(_), .. } => Ok(()),
            VariantName::Arch { framework: Framework::Torch(_), .. } => {
                Err(Unloadable::NeedsPyTorch("torch extension module"))
            }
            VariantName::Arch { framework: Framework::TorchStableAbi(target), backend, .. } => {
                use crate::torch_stable_abi::{NEWEST_TARGET, OLDEST_TARGET, host_compiled_in};
                let target = *target;
                let reason = if target > NEWEST_TARGET {
                    format!(
                        "torch stable-ABI {target} is newer than this runtime serves ({OLDEST_TARGET}\u{2013}{NEWEST_TARGET})"
                    )
                } else if target < OLDEST_TARGET {
                    format!(
                        "torch stable-ABI {target} is older than this runtime serves ({OLDEST_TARGET}\u{2013}{NEWEST_TARGET})"
                    )
                } else if !matches!(backend, Backend::Cpu | Backend::Cuda(_)) {
                    format!(
                        "torch stable-ABI {target} {}: the torch stable-ABI host serves CPU and CUDA kernels only",
                        backend.kind()
                    )
                } else if let Err(why) = host_compiled_in() {
                    format!("torch stable-ABI {target}: {why}")
                } else {
                    return Ok(());
                };
                Err(Unloadable::StableAbi { target, reason })
            }
            VariantName::Noarch(_) => Err(Unloadable::NeedsPyTorch("torch noarch variant")),
            VariantName::Universal => Err(Unloadable::NeedsPyTorch("legacy universal torch variant")),
        }
    }

    /// Whether `name` parses as a variant kernels-rs can load ([`VariantName::loadable`]).
    pub fn is_loadable(name: &str) -> bool {
        VariantName::parse(name).is_ok_and(|v| v.loadable().is_ok())
    }
}

impl FromStr for VariantName {
    type Err = VariantParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        VariantName::parse(s)
    }
}

impl fmt::Display for VariantName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VariantName::Arch { framework, cxx_abi, backend, cpu, os } => {
                write!(f, "{framework}-")?;
                if let Some(abi) = cxx_abi {
                    write!(f, "{abi}-")?;
                }
                write!(f, "{backend}-{cpu}-{os}")
            }
            VariantName::Noarch(b) => write!(f, "torch-{}", b.as_str()),
            VariantName::Universal => f.write_str("torch-universal"),
        }
    }
}

/// Why version digits were refused.
enum DigitsError {
    /// Fewer than two digits, something else than digits, or a number past `u32`.
    Malformed,
    /// A multi-digit component starting with `0` (`torch207`): it would print without the zero,
    /// so the name would not round-trip.
    LeadingZero,
}

/// Splits version digits at `at` into major and minor.
fn split_version(digits: &str, at: usize) -> Result<Version, DigitsError> {
    if digits.len() < 2 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(DigitsError::Malformed);
    }
    let (major, minor) = digits.split_at(at);
    if [major, minor].iter().any(|part| part.len() > 1 && part.starts_with('0')) {
        return Err(DigitsError::LeadingZero);
    }
    let number = |part: &str| part.parse::<u32>().map_err(|_| DigitsError::Malformed);
    Ok(Version::new(number(major)?, number(minor)?))
}

/// Splits framework digits: the major is the first digit, the minor the rest (`212` → 2.12).
fn framework_version(digits: &str) -> Result<Version, DigitsError> {
    split_version(digits, 1)
}

/// Splits backend digits: the minor is the last digit, the major the rest (`130` → 13.0).
fn backend_version(digits: &str) -> Result<Version, DigitsError> {
    split_version(digits, digits.len().saturating_sub(1))
}

/// The reason for refused version digits in `found`; `malformed` describes the usual form.
fn digits_reason(error: DigitsError, found: &str, malformed: impl FnOnce() -> String) -> String {
    match error {
        DigitsError::Malformed => malformed(),
        DigitsError::LeadingZero => {
            format!("the version of `{found}` has a leading zero (it would not print back as written)")
        }
    }
}

fn parse_variant(name: &str) -> Result<VariantName, String> {
    if name.is_empty() {
        return Err("the name is empty".into());
    }
    if name == "torch-universal" {
        return Ok(VariantName::Universal);
    }
    // Framework prefix, then the arch components that follow it.
    let (framework, rest) = if let Some(rest) = name.strip_prefix("tvm-ffi") {
        let (digits, rest) = rest.split_once('-').unwrap_or((rest, ""));
        let v = framework_version(digits).map_err(|e| {
            digits_reason(e, &format!("tvm-ffi{digits}"), || {
                format!("`tvm-ffi` must be followed by its version digits (e.g. `tvm-ffi01`), found `tvm-ffi{digits}`")
            })
        })?;
        (Framework::TvmFfi(v), rest)
    } else if let Some(rest) = name.strip_prefix("torch-stable-abi") {
        let (digits, rest) = rest.split_once('-').unwrap_or((rest, ""));
        let v = framework_version(digits).map_err(|e| {
            digits_reason(e, &format!("torch-stable-abi{digits}"), || {
                format!("`torch-stable-abi` must be followed by the torch version digits (e.g. `torch-stable-abi211`), found `{digits}`")
            })
        })?;
        (Framework::TorchStableAbi(v), rest)
    } else if let Some(rest) = name.strip_prefix("torch-") {
        return NoarchBackend::ALL
            .iter()
            .find(|(_, s)| *s == rest)
            .map(|(b, _)| VariantName::Noarch(*b))
            .ok_or_else(|| {
                format!("unknown noarch backend `{rest}` (expected torch-cpu, torch-cuda, torch-metal, torch-neuron, torch-npu, torch-rocm, torch-tpu, torch-xpu or torch-universal)")
            });
    } else if let Some(rest) = name.strip_prefix("torch") {
        let (digits, rest) = rest.split_once('-').unwrap_or((rest, ""));
        let v = framework_version(digits).map_err(|e| {
            digits_reason(e, &format!("torch{digits}"), || {
                format!("`torch` must be followed by its version digits (e.g. `torch212`), found `torch{digits}`")
            })
        })?;
        (Framework::Torch(v), rest)
    } else {
        return Err("it starts with neither `torch` nor `tvm-ffi`".into());
    };

    let mut parts: Vec<&str> = rest.split('-').collect();
    let cxx_abi = match parts.first() {
        Some(&"cxx11") => Some(CxxAbi::Cxx11),
        Some(&"cxx98") => Some(CxxAbi::Cxx98),
        _ => None,
    };
    if cxx_abi.is_some() {
        if !matches!(framework, Framework::Torch(_)) {
            return Err(format!("a `{}` marker only appears on torch<ver> variants", parts[0]));
        }
        parts.remove(0);
    }
    let [backend, cpu, os] = parts[..] else {
        return Err(format!("expected `{framework}-[cxx11-]<backend>-<cpu>-<os>` after the framework, found `{rest}`"));
    };
    let backend = Backend::parse(backend)?;
    let cpu = match cpu {
        "x86_64" => CpuArch::X86_64,
        "aarch64" => CpuArch::Aarch64,
        other => return Err(format!("unknown CPU arch `{other}` (expected x86_64 or aarch64)")),
    };
    let os = match os {
        "linux" => Os::Linux,
        "darwin" => Os::Darwin,
        "windows" => Os::Windows,
        other => return Err(format!("unknown OS `{other}` (expected linux, darwin or windows)")),
    };
    Ok(VariantName::Arch { framework, cxx_abi, backend, cpu, os })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Names as they appear on the Hub; each must parse and print back unchanged.
    const REAL_NAMES: &[&str] = &[
        "torch212-cxx11-cu130-x86_64-linux",
        "torch212-cxx11-cu126-aarch64-linux",
        "torch27-cxx98-cu118-x86_64-linux",
        "torch28-cxx11-rocm64-x86_64-linux",
        "torch212-cxx11-xpu20253-x86_64-linux",
        "torch212-cxx11-cpu-x86_64-linux",
        "torch212-metal-aarch64-darwin",
        "torch210-cu128-x86_64-windows",
        "torch29-cxx11-cann81-aarch64-linux",
        "torch212-cxx11-neuron-x86_64-linux",
        "torch-stable-abi211-cu126-x86_64-linux",
        "tvm-ffi01-cu130-x86_64-linux",
        "tvm-ffi01-cpu-x86_64-linux",
        "tvm-ffi01-rocm71-x86_64-linux",
        "tvm-ffi01-metal-aarch64-darwin",
        "tvm-ffi01-tpu-x86_64-linux",
        "torch-cuda",
        "torch-cpu",
        "torch-npu",
        "torch-universal",
    ];

    #[test]
    fn real_names_round_trip() {
        for name in REAL_NAMES {
            let parsed = VariantName::parse(name).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(parsed.to_string(), *name);
        }
    }

    #[test]
    fn versions_split_like_upstream() {
        let v = VariantName::parse("torch212-cxx11-cu130-x86_64-linux").unwrap();
        assert_eq!(
            v,
            VariantName::Arch {
                framework: Framework::Torch(Version::new(2, 12)),
                cxx_abi: Some(CxxAbi::Cxx11),
                backend: Backend::Cuda(Version::new(13, 0)),
                cpu: CpuArch::X86_64,
                os: Os::Linux,
            }
        );
        let v = VariantName::parse("tvm-ffi01-cu128-x86_64-linux").unwrap();
        assert_eq!(v.framework(), Some(Framework::TvmFfi(Version::new(0, 1))));
        assert_eq!(v.backend(), Some(Backend::Cuda(Version::new(12, 8))));
        let v = VariantName::parse("torch212-cxx11-xpu20253-x86_64-linux").unwrap();
        assert_eq!(v.backend(), Some(Backend::Xpu(Version::new(2025, 3))));
        let v = VariantName::parse("torch-stable-abi211-cu126-x86_64-linux").unwrap();
        assert_eq!(v.framework(), Some(Framework::TorchStableAbi(Version::new(2, 11))));
        assert_eq!(
            VariantName::parse("torch28-cxx11-rocm64-x86_64-linux").unwrap().backend(),
            Some(Backend::Rocm(Version::new(6, 4)))
        );
    }

    #[test]
    fn tvm_ffi_and_served_stable_abi_targets_are_loadable() {
        assert!(!VariantName::parse("tvm-ffi01-cpu-x86_64-linux").unwrap().needs_pytorch());
        assert!(VariantName::is_loadable("tvm-ffi01-cpu-x86_64-linux"));
        assert!(!VariantName::is_loadable("not a variant"));
        for name in ["torch212-cxx11-cpu-x86_64-linux", "torch-cuda", "torch-universal"] {
            assert!(VariantName::parse(name).unwrap().needs_pytorch(), "{name}");
            let err = VariantName::parse(name).unwrap().loadable().unwrap_err();
            assert!(err.to_string().starts_with("needs PyTorch"), "{name}: {err}");
        }
        let host = crate::torch_stable_abi::host_compiled_in();
        for name in ["torch-stable-abi29-cpu-x86_64-linux", "torch-stable-abi213-cpu-aarch64-linux"] {
            match host {
                Ok(()) => assert!(VariantName::is_loadable(name), "{name}"),
                Err(why) => {
                    let err = VariantName::parse(name).unwrap().loadable().unwrap_err().to_string();
                    assert!(err.contains(why), "{name}: {err}");
                }
            }
        }
        // CUDA variants load; the host has no ROCm, XPU or Metal device guard or stream: such a
        // variant would be chosen and then fail at its first call, instead of falling back.
        if host.is_ok() {
            assert!(VariantName::is_loadable("torch-stable-abi210-cu130-x86_64-linux"));
        }
        for name in ["torch-stable-abi210-rocm71-x86_64-linux", "torch-stable-abi211-xpu20253-x86_64-linux"] {
            let err = VariantName::parse(name).unwrap().loadable().unwrap_err().to_string();
            assert!(err.contains("serves CPU and CUDA kernels only"), "{name}: {err}");
        }
        let err = VariantName::parse("torch-stable-abi214-cpu-x86_64-linux").unwrap().loadable().unwrap_err();
        assert_eq!(err.to_string(), "torch stable-ABI 2.14 is newer than this runtime serves (2.9\u{2013}2.13)");
        let err = VariantName::parse("torch-stable-abi28-cpu-x86_64-linux").unwrap().loadable().unwrap_err();
        assert_eq!(err.to_string(), "torch stable-ABI 2.8 is older than this runtime serves (2.9\u{2013}2.13)");
    }

    #[test]
    fn a_variant_is_named_by_its_directory() {
        assert_eq!(dir_name(Path::new("/cache/build/tvm-ffi01-cpu-x86_64-linux")), "tvm-ffi01-cpu-x86_64-linux");
        assert_eq!(dir_name(Path::new("build/tvm-ffi01-cpu-x86_64-linux/")), "tvm-ffi01-cpu-x86_64-linux");
        assert_eq!(dir_name(Path::new("/")), "");
    }

    #[test]
    fn bad_names_are_errors_with_reasons() {
        let cases = [
            ("", "empty"),
            ("jax04-cu126-x86_64-linux", "neither"),
            ("torch-foo", "unknown noarch backend `foo`"),
            ("torch2-cxx11-cu126-x86_64-linux", "version digits"),
            ("tvm-ffi-cu126-x86_64-linux", "version digits"),
            ("tvm-ffi01-cxx11-cu126-x86_64-linux", "only appears on torch"),
            ("tvm-ffi01-cu126-x86_64", "expected"),
            ("tvm-ffi01-cu126-x86_64-linux-extra", "expected"),
            ("tvm-ffi01-vulkan-x86_64-linux", "unknown backend `vulkan`"),
            ("tvm-ffi01-cu1-x86_64-linux", "at least two digits"),
            ("tvm-ffi01-cuda-x86_64-linux", "at least two digits"),
            ("tvm-ffi01-cpu-riscv64-linux", "unknown CPU arch `riscv64`"),
            ("tvm-ffi01-cpu-x86_64-freebsd", "unknown OS `freebsd`"),
            ("torch212-cxx11-cu130-x86_64-linux\u{0}", "unknown OS"),
        ];
        for (name, needle) in cases {
            let err = VariantName::parse(name).expect_err(name);
            assert!(err.reason.contains(needle), "{name}: {}", err.reason);
            assert!(err.to_string().contains(&format!("`{name}`")));
        }
    }

    #[test]
    fn version_digits_with_a_leading_zero_are_refused() {
        // Each would print without its zero (`torch207` as `torch27`), so the name would not
        // round-trip; the Hub writes none of them.
        for name in [
            "torch207-cxx98-cu118-x86_64-linux",
            "torch20112-cxx11-cu130-x86_64-linux",
            "tvm-ffi001-cpu-x86_64-linux",
            "torch-stable-abi2011-cu126-x86_64-linux",
            "torch212-cxx11-cu0130-x86_64-linux",
            "tvm-ffi01-rocm071-x86_64-linux",
            "torch212-cxx11-xpu020253-x86_64-linux",
        ] {
            let err = VariantName::parse(name).expect_err(name);
            assert!(err.reason.contains("leading zero"), "{name}: {}", err.reason);
        }
        // A lone zero is a version component, not a leading zero.
        for name in ["tvm-ffi01-cpu-x86_64-linux", "torch20-cu00-x86_64-linux", "torch210-cu100-x86_64-linux"] {
            assert_eq!(VariantName::parse(name).unwrap().to_string(), name);
        }
    }
}
