//! Choosing the variant a device can run, with a decision trace that explains every
//! candidate.
//!
//! The rules mirror the Python `kernels` package, then go further:
//!
//! - `tvm-ffi` variants are loadable, and `torch-stable-abi<MM>` variants whose target is one
//!   the torch stable-ABI host serves (2.9 through 2.13) when this runtime carries the host
//!   (feature `torch-stable`, Linux x86_64/aarch64), for the CPU backend only so far (the host
//!   has no GPU stream or device guard yet); otherwise the rejection says which;
//!   torch, noarch and universal variants are rejected because they need PyTorch
//!   ([`VariantName::loadable`] decides);
//! - the variant's tvm-ffi `major.minor` equals the runtime's;
//! - CPU arch and OS match exactly;
//! - CUDA: same major as the driver, minor ≤ the driver's, highest minor wins;
//!   ROCm, XPU, Metal and CPU: the backend (and its version) matches exactly;
//! - Metal: tvm-ffi variants need macOS [`MIN_METAL_MACOS`] or later (upstream's rule; an
//!   unknown version is refused too);
//! - CUDA only, beyond upstream: the GPU's compute capability must be covered by
//!   `metadata.json` `backend.archs` (a cubin of the same major and lower-or-equal minor,
//!   or PTX of a lower-or-equal capability).
//!
//! # Ranking
//!
//! Among usable candidates the backend's own order comes first (CUDA: the highest minor).
//! Between candidates equal there, a `tvm-ffi` variant wins over every torch stable-ABI one,
//! and among stable-ABI variants the highest target wins
//! (`torch-stable-abi211` over `torch-stable-abi29`). Remaining ties go by name.

use std::fmt;

use crate::metadata::CudaArch;
use crate::platform::Platform;
use crate::variant::{Backend, BackendKind, CpuArch, Framework, Os, Unloadable, VariantName, Version};

/// A variant on offer: its directory name and, when its `metadata.json` is known, the GPU
/// architectures it lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Variant directory name, e.g. `tvm-ffi01-cu130-x86_64-linux`.
    pub name: String,
    /// `backend.archs` of its `metadata.json`; `None` when the metadata is not known.
    pub archs: Option<Vec<String>>,
}

impl Candidate {
    /// A candidate known only by name.
    pub fn new(name: impl Into<String>) -> Self {
        Candidate { name: name.into(), archs: None }
    }

    /// Adds the `backend.archs` list of the variant's metadata.
    pub fn with_archs<S: Into<String>>(mut self, archs: impl IntoIterator<Item = S>) -> Self {
        self.archs = Some(archs.into_iter().map(Into::into).collect());
        self
    }
}

/// What a kernel is wanted for: a backend kind and a device of that kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Request {
    /// The kind of device the layer runs on.
    pub backend: BackendKind,
    /// Device ordinal (ignored for the CPU).
    pub device: u32,
}

impl Request {
    /// Device `ordinal` of `backend`.
    pub fn new(backend: BackendKind, device: u32) -> Self {
        Request { backend, device }
    }

    /// The host CPU.
    pub fn cpu() -> Self {
        Request { backend: BackendKind::Cpu, device: 0 }
    }

    /// CUDA device `ordinal`.
    pub fn cuda(ordinal: u32) -> Self {
        Request { backend: BackendKind::Cuda, device: ordinal }
    }
}

/// Why a candidate was not usable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// The name does not follow the variant grammar.
    Unparseable(String),
    /// A torch variant: a PyTorch extension module.
    NeedsPyTorch(&'static str),
    /// A torch stable-ABI variant (`torch-stable-abi<MM>`) this runtime cannot serve: its
    /// target is outside the host's range, or the host is not part of this build.
    StableAbi {
        /// The variant's target.
        target: Version,
        /// Why, in words.
        reason: String,
    },
    /// Built for another tvm-ffi `major.minor`.
    TvmFfiVersion {
        /// The variant's.
        variant: Version,
        /// The runtime's.
        runtime: Version,
    },
    /// Built for another CPU architecture.
    CpuArch {
        /// The variant's.
        variant: CpuArch,
        /// This machine's.
        system: CpuArch,
    },
    /// Built for another OS.
    Os {
        /// The variant's.
        variant: Os,
        /// This machine's.
        system: Os,
    },
    /// Built for another kind of device than the one requested.
    OtherBackend {
        /// The variant's backend.
        variant: Backend,
        /// The requested kind.
        wanted: BackendKind,
    },
    /// The requested device is not present.
    NoDevice(String),
    /// CUDA major differs from the driver's.
    CudaMajor {
        /// The variant's CUDA version.
        variant: Version,
        /// The driver's.
        driver: Version,
    },
    /// CUDA minor is newer than the driver supports.
    CudaTooNew {
        /// The variant's CUDA version.
        variant: Version,
        /// The driver's.
        driver: Version,
    },
    /// ROCm/XPU/CANN toolkit version differs from the system's, or the system's is unknown.
    BackendVersion {
        /// The variant's backend.
        variant: Backend,
        /// The system's version, when known.
        system: Option<Version>,
    },
    /// Accepted by name, then refused when its library was checked before loading (a torch
    /// stable-ABI library that needs what the host does not provide); the reason, in words.
    Refused(String),
    /// A tvm-ffi Metal variant on macOS older than 26 (or of unknown version): upstream's rule,
    /// as the Metal kernels it builds need macOS 26's Metal.
    MetalTooOld {
        /// The macOS version, when known.
        system: Option<Version>,
    },
    /// The library has no code the GPU can run.
    NoCodeForGpu {
        /// The GPU's compute capability.
        capability: Version,
        /// What `metadata.json` lists.
        archs: Vec<String>,
    },
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::Unparseable(reason) => write!(f, "not a variant name: {reason}"),
            Rejection::NeedsPyTorch(what) => {
                write!(f, "needs PyTorch ({what}); only tvm-ffi and torch stable-ABI variants load without it")
            }
            Rejection::StableAbi { reason, .. } => f.write_str(reason),
            Rejection::TvmFfiVersion { variant, runtime } => {
                write!(f, "built for tvm-ffi {variant}, this runtime speaks tvm-ffi {runtime}")
            }
            Rejection::CpuArch { variant, system } => write!(f, "built for {variant} CPUs, this machine is {system}"),
            Rejection::Os { variant, system } => write!(f, "built for {variant}, this machine runs {system}"),
            Rejection::OtherBackend { variant, wanted } => {
                write!(f, "built for {}, the layer runs on {wanted}", variant.kind())
            }
            Rejection::NoDevice(reason) => f.write_str(reason),
            Rejection::Refused(reason) => write!(f, "refused before loading: {reason}"),
            Rejection::CudaMajor { variant, driver } => {
                write!(f, "built for CUDA {variant}, the driver supports CUDA {driver}: the major version must match")
            }
            Rejection::CudaTooNew { variant, driver } => write!(
                f,
                "built for CUDA {variant}, newer than the driver supports ({driver}); update the NVIDIA driver"
            ),
            Rejection::BackendVersion { variant, system: Some(v) } => {
                write!(f, "built for {variant}, the system has {} {v}: versions must match exactly", variant.kind())
            }
            Rejection::BackendVersion { variant, system: None } => {
                write!(f, "built for {variant}, the system's {} version is unknown", variant.kind())
            }
            Rejection::MetalTooOld { system: Some(v) } => {
                write!(f, "Metal kernels require macOS {MIN_METAL_MACOS} or later, this is macOS {v}")
            }
            Rejection::MetalTooOld { system: None } => {
                write!(f, "Metal kernels require macOS {MIN_METAL_MACOS} or later, and the macOS version is unknown")
            }
            Rejection::NoCodeForGpu { capability, archs } => write!(
                f,
                "no code for this GPU (sm_{}{}, compute capability {capability}): the library has [{}]",
                capability.major,
                capability.minor,
                archs.join(", ")
            ),
        }
    }
}

/// The verdict on one candidate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The best usable candidate.
    Chosen {
        /// Anything worth knowing about the choice (e.g. GPU code not checked).
        note: Option<String>,
    },
    /// Usable, but ranked below the chosen one.
    Accepted {
        /// 2 for the runner-up, and so on.
        rank: usize,
        /// Anything worth knowing.
        note: Option<String>,
    },
    /// Not usable.
    Rejected(Rejection),
}

/// One line of a decision trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceRow {
    /// The candidate's name.
    pub variant: String,
    /// What was decided.
    pub verdict: Verdict,
}

/// Every candidate with its verdict, and the facts the decision was made on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecisionTrace {
    /// What was asked for.
    pub request: Request,
    /// The platform facts that mattered, in one line.
    pub platform: String,
    /// Chosen first, then accepted by rank, then those refused at loading (in that order), then
    /// rejected in the order given.
    pub rows: Vec<TraceRow>,
}

impl DecisionTrace {
    /// The chosen variant's name, if any.
    pub fn chosen(&self) -> Option<&str> {
        self.rows.iter().find(|r| matches!(r.verdict, Verdict::Chosen { .. })).map(|r| r.variant.as_str())
    }

    /// The verdict for `variant`, if it was a candidate.
    pub fn verdict(&self, variant: &str) -> Option<&Verdict> {
        self.rows.iter().find(|r| r.variant == variant).map(|r| &r.verdict)
    }

    /// The chosen and accepted variants, best first.
    pub fn usable(&self) -> impl Iterator<Item = &str> {
        self.rows.iter().filter(|r| !matches!(r.verdict, Verdict::Rejected(_))).map(|r| r.variant.as_str())
    }

    /// Records that `variant`, chosen or accepted, was refused after all: it joins the rejected
    /// rows, after earlier refusals and before the rejections of selection, and the next usable
    /// variant is chosen (the others keep their order).
    /// A variant that is not usable is left as it is.
    pub fn refuse(&mut self, variant: &str, rejection: Rejection) {
        let Some(pos) =
            self.rows.iter().position(|r| r.variant == variant && !matches!(r.verdict, Verdict::Rejected(_)))
        else {
            return;
        };
        let mut row = self.rows.remove(pos);
        row.verdict = Verdict::Rejected(rejection);
        let usable = self.rows.iter().take_while(|r| !matches!(r.verdict, Verdict::Rejected(_))).count();
        let refused = self.rows[usable..]
            .iter()
            .take_while(|r| matches!(r.verdict, Verdict::Rejected(Rejection::Refused(_))))
            .count();
        self.rows.insert(usable + refused, row);
        for (rank, r) in self.rows[..usable].iter_mut().enumerate() {
            let note = match &mut r.verdict {
                Verdict::Chosen { note } | Verdict::Accepted { note, .. } => note.take(),
                Verdict::Rejected(_) => None,
            };
            r.verdict = if rank == 0 { Verdict::Chosen { note } } else { Verdict::Accepted { rank: rank + 1, note } };
        }
    }
}

impl fmt::Display for DecisionTrace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let target = match self.request.backend {
            BackendKind::Cpu => "cpu".to_owned(),
            kind => format!("{kind} device {}", self.request.device),
        };
        writeln!(f, "variant selection for {target} on {}", self.platform)?;
        if self.rows.is_empty() {
            return write!(f, "  (no candidates)\n  => no variant: the kernel offers none");
        }
        let width = self.rows.iter().map(|r| r.variant.len()).max().unwrap_or(0);
        for row in &self.rows {
            let (word, detail) = match &row.verdict {
                Verdict::Chosen { note } => ("chosen", note.clone().unwrap_or_default()),
                Verdict::Accepted { rank, note } => {
                    let mut d = format!("usable, ranked {rank}");
                    if let Some(n) = note {
                        d.push_str("; ");
                        d.push_str(n);
                    }
                    ("accepted", d)
                }
                Verdict::Rejected(r) => ("rejected", r.to_string()),
            };
            let line = format!("  {:<width$}  {word:<8}  {detail}", row.variant);
            writeln!(f, "{}", line.trim_end())?;
        }
        match self.chosen() {
            Some(v) => write!(f, "  => {v}"),
            None => write!(f, "  => no usable variant; the layer falls back to its Rust forward"),
        }
    }
}

/// The result of selection: the chosen candidate (index into the input) and the trace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// Index of the chosen candidate in the slice given to [`select`].
    pub chosen: Option<usize>,
    /// Why.
    pub trace: DecisionTrace,
}

/// Selects the best candidate for `request` on `platform`.
pub fn select(platform: &Platform, request: Request, candidates: &[Candidate]) -> Selection {
    let mut accepted: Vec<(usize, i64, Option<String>)> = Vec::new();
    let mut rejected: Vec<TraceRow> = Vec::new();
    for (i, c) in candidates.iter().enumerate() {
        match judge(platform, request, c) {
            Ok((rank_key, note)) => accepted.push((i, rank_key, note)),
            Err(r) => rejected.push(TraceRow { variant: c.name.clone(), verdict: Verdict::Rejected(r) }),
        }
    }
    // Higher key first; ties broken by name so the outcome never depends on listing order.
    accepted.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| candidates[a.0].name.cmp(&candidates[b.0].name)));
    let chosen = accepted.first().map(|a| a.0);
    let mut rows: Vec<TraceRow> = accepted
        .into_iter()
        .enumerate()
        .map(|(pos, (i, _, note))| TraceRow {
            variant: candidates[i].name.clone(),
            verdict: if pos == 0 { Verdict::Chosen { note } } else { Verdict::Accepted { rank: pos + 1, note } },
        })
        .collect();
    rows.extend(rejected);
    Selection { chosen, trace: DecisionTrace { request, platform: describe(platform, request), rows } }
}

fn describe(p: &Platform, request: Request) -> String {
    let mut s = format!("{}-{}, tvm-ffi {}", p.cpu, p.os, p.tvm_ffi);
    match request.backend {
        BackendKind::Cuda => match p.cuda.present() {
            Some(c) => {
                s.push_str(&format!(", CUDA driver {}", c.driver_version));
                if let Some(d) = c.devices.iter().find(|d| d.ordinal == request.device) {
                    s.push_str(&format!(", GPU {} sm_{}{}", d.name, d.capability.major, d.capability.minor));
                }
            }
            None => s.push_str(", no CUDA"),
        },
        BackendKind::Rocm => match p.rocm.present() {
            Some(r) => s.push_str(&format!(", ROCm {}", r.version)),
            None => s.push_str(", no ROCm"),
        },
        _ => {}
    }
    s
}

/// Accepts with a ranking key (higher is better) and an optional note, or rejects.
///
/// The key orders by the backend's own key first (the CUDA minor), then by framework: a
/// tvm-ffi variant above every torch stable-ABI one, and among those the highest target.
fn judge(p: &Platform, request: Request, c: &Candidate) -> Result<(i64, Option<String>), Rejection> {
    let (backend_key, note) = judge_backend(p, request, c)?;
    let framework_key = match VariantName::parse(&c.name).ok().and_then(|n| n.framework()) {
        Some(Framework::TorchStableAbi(target)) => i64::from(target.major) * 100 + i64::from(target.minor.min(99)),
        _ => FRAMEWORK_KEY_TVM_FFI,
    };
    Ok((backend_key.saturating_mul(FRAMEWORK_KEYS).saturating_add(framework_key), note))
}

/// Framework keys are below this (a torch stable-ABI target `M.m` is `M * 100 + m`).
const FRAMEWORK_KEYS: i64 = 1 << 20;
/// tvm-ffi's framework key: above every torch stable-ABI target.
const FRAMEWORK_KEY_TVM_FFI: i64 = FRAMEWORK_KEYS - 1;

/// The backend's verdict: a ranking key (higher is better) and an optional note, or a
/// rejection.
fn judge_backend(p: &Platform, request: Request, c: &Candidate) -> Result<(i64, Option<String>), Rejection> {
    let name = VariantName::parse(&c.name).map_err(|e| Rejection::Unparseable(e.reason))?;
    name.loadable().map_err(|why| match why {
        Unloadable::StableAbi { target, reason } => Rejection::StableAbi { target, reason },
        Unloadable::NeedsPyTorch(what) => Rejection::NeedsPyTorch(what),
    })?;
    let VariantName::Arch { framework, backend, cpu, os, .. } = name else {
        unreachable!("only arch variants are loadable");
    };
    if let Framework::TvmFfi(version) = framework
        && version != p.tvm_ffi
    {
        return Err(Rejection::TvmFfiVersion { variant: version, runtime: p.tvm_ffi });
    }
    if cpu != p.cpu {
        return Err(Rejection::CpuArch { variant: cpu, system: p.cpu.clone() });
    }
    if os != p.os {
        return Err(Rejection::Os { variant: os, system: p.os.clone() });
    }
    if backend.kind() != request.backend {
        return Err(Rejection::OtherBackend { variant: backend, wanted: request.backend });
    }
    p.has_backend(request.backend).map_err(Rejection::NoDevice)?;
    match backend {
        Backend::Cuda(v) => judge_cuda(p, request, v, c),
        Backend::Rocm(v) => {
            let system = p.rocm.present().map(|r| r.version);
            if system == Some(v) { Ok((0, None)) } else { Err(Rejection::BackendVersion { variant: backend, system }) }
        }
        Backend::Xpu(v) => {
            let system = p.xpu.present().and_then(|x| x.oneapi_version);
            if system == Some(v) { Ok((0, None)) } else { Err(Rejection::BackendVersion { variant: backend, system }) }
        }
        Backend::Cann(_) => Err(Rejection::BackendVersion { variant: backend, system: None }),
        Backend::Metal => {
            let system = p.metal.present().and_then(|m| m.macos_version);
            match framework {
                Framework::TvmFfi(_) if system.is_none_or(|v| v < MIN_METAL_MACOS) => {
                    Err(Rejection::MetalTooOld { system })
                }
                _ => Ok((0, None)),
            }
        }
        Backend::Cpu | Backend::Neuron | Backend::Tpu => Ok((0, None)),
    }
}

/// The oldest macOS that tvm-ffi Metal variants run on (upstream's rule).
pub const MIN_METAL_MACOS: Version = Version::new(26, 0);

fn judge_cuda(p: &Platform, request: Request, v: Version, c: &Candidate) -> Result<(i64, Option<String>), Rejection> {
    let Some(cuda) = p.cuda.present() else {
        return Err(Rejection::NoDevice("no CUDA driver".into()));
    };
    let driver = cuda.driver_version;
    if v.major != driver.major {
        return Err(Rejection::CudaMajor { variant: v, driver });
    }
    if v.minor > driver.minor {
        return Err(Rejection::CudaTooNew { variant: v, driver });
    }
    let Some(device) = cuda.devices.iter().find(|d| d.ordinal == request.device) else {
        return Err(Rejection::NoDevice(format!(
            "no CUDA device {} ({} device(s) visible)",
            request.device,
            cuda.devices.len()
        )));
    };
    let listed = c.archs.as_deref().unwrap_or_default();
    let archs: Vec<CudaArch> = listed.iter().filter_map(|a| CudaArch::parse(a).ok()).collect();
    let note = if archs.is_empty() {
        Some("GPU code not checked: metadata.json lists no CUDA archs".to_owned())
    } else if archs.iter().any(|a| a.runs_on(device.capability)) {
        None
    } else {
        return Err(Rejection::NoCodeForGpu { capability: device.capability, archs: listed.to_vec() });
    };
    Ok((i64::from(v.minor), note))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::{CudaDevice, CudaInfo, RocmDevice, RocmInfo};

    fn linux() -> Platform {
        Platform::new(Os::Linux, CpuArch::X86_64)
    }

    fn cuda(driver: Version, cc: Version) -> Platform {
        linux().with_cuda(CudaInfo {
            driver_version: driver,
            devices: vec![CudaDevice { ordinal: 0, name: "GPU".into(), capability: cc }],
        })
    }

    fn names(names: &[&str]) -> Vec<Candidate> {
        names.iter().map(|n| Candidate::new(*n).with_archs(["8.0", "9.0+PTX"])).collect()
    }

    fn rejection<'a>(s: &'a Selection, name: &str) -> &'a Rejection {
        match s.trace.verdict(name) {
            Some(Verdict::Rejected(r)) => r,
            other => panic!("{name}: {other:?}\n{}", s.trace),
        }
    }

    #[test]
    fn cuda_highest_compatible_minor_wins() {
        let p = cuda(Version::new(12, 9), Version::new(9, 0));
        let c =
            names(&["tvm-ffi01-cu126-x86_64-linux", "tvm-ffi01-cu130-x86_64-linux", "tvm-ffi01-cu128-x86_64-linux"]);
        let s = select(&p, Request::cuda(0), &c);
        assert_eq!(s.chosen, Some(2), "{}", s.trace);
        assert_eq!(s.trace.chosen(), Some("tvm-ffi01-cu128-x86_64-linux"));
        assert_eq!(s.trace.verdict("tvm-ffi01-cu126-x86_64-linux"), Some(&Verdict::Accepted { rank: 2, note: None }));
        assert_eq!(
            rejection(&s, "tvm-ffi01-cu130-x86_64-linux"),
            &Rejection::CudaMajor { variant: Version::new(13, 0), driver: Version::new(12, 9) }
        );
        // Same major, newer minor.
        let p = cuda(Version::new(12, 6), Version::new(9, 0));
        let s = select(&p, Request::cuda(0), &c);
        assert_eq!(s.trace.chosen(), Some("tvm-ffi01-cu126-x86_64-linux"));
        assert!(matches!(rejection(&s, "tvm-ffi01-cu128-x86_64-linux"), Rejection::CudaTooNew { .. }));
    }

    #[test]
    fn torch_variants_need_pytorch() {
        let p = cuda(Version::new(13, 0), Version::new(9, 0));
        let c = names(&["torch212-cxx11-cu130-x86_64-linux", "torch-cuda", "torch-universal"]);
        let s = select(&p, Request::cuda(0), &c);
        assert_eq!(s.chosen, None);
        for c in &c {
            assert!(rejection(&s, &c.name).to_string().starts_with("needs PyTorch"), "{}", s.trace);
        }
    }

    #[test]
    fn torch_stable_abi_variants_rank_below_tvm_ffi_and_by_target() {
        let p = linux();
        let c = names(&[
            "torch-stable-abi29-cpu-x86_64-linux",
            "torch-stable-abi211-cpu-x86_64-linux",
            "torch-stable-abi214-cpu-x86_64-linux",
            "torch212-cxx11-cpu-x86_64-linux",
        ]);
        let s = select(&p, Request::cpu(), &c);
        assert_eq!(
            rejection(&s, "torch-stable-abi214-cpu-x86_64-linux").to_string(),
            "torch stable-ABI 2.14 is newer than this runtime serves (2.9\u{2013}2.13)"
        );
        assert!(rejection(&s, "torch212-cxx11-cpu-x86_64-linux").to_string().starts_with("needs PyTorch"));
        match crate::torch_stable_abi::host_compiled_in() {
            Ok(()) => {
                assert_eq!(s.trace.chosen(), Some("torch-stable-abi211-cpu-x86_64-linux"), "{}", s.trace);
                assert!(matches!(
                    s.trace.verdict("torch-stable-abi29-cpu-x86_64-linux"),
                    Some(Verdict::Accepted { rank: 2, .. })
                ));
                // A tvm-ffi variant of the same backend wins over every stable-ABI one.
                let mut with_tvm = c.clone();
                with_tvm.push(Candidate::new("tvm-ffi01-cpu-x86_64-linux"));
                let s = select(&p, Request::cpu(), &with_tvm);
                assert_eq!(s.trace.chosen(), Some("tvm-ffi01-cpu-x86_64-linux"), "{}", s.trace);
                // CUDA stable-ABI variants follow the CUDA rules of tvm-ffi ones, which still
                // win at the same CUDA version; ROCm ones are not served yet.
                let p = cuda(Version::new(13, 0), Version::new(9, 0));
                let c = names(&[
                    "tvm-ffi01-cu130-x86_64-linux",
                    "torch-stable-abi210-cu130-x86_64-linux",
                    "torch-stable-abi211-cu131-x86_64-linux",
                ]);
                let s = select(&p, Request::cuda(0), &c);
                assert_eq!(s.trace.chosen(), Some("tvm-ffi01-cu130-x86_64-linux"), "{}", s.trace);
                assert!(matches!(
                    s.trace.verdict("torch-stable-abi210-cu130-x86_64-linux"),
                    Some(Verdict::Accepted { rank: 2, .. })
                ));
                let r = rejection(&s, "torch-stable-abi211-cu131-x86_64-linux").to_string();
                assert!(r.contains("13.1"), "{r}");
                let s = select(&p, Request::cuda(0), &names(&["torch-stable-abi210-cu130-x86_64-linux"]));
                assert_eq!(s.trace.chosen(), Some("torch-stable-abi210-cu130-x86_64-linux"), "{}", s.trace);
                let p = linux().with_rocm(RocmInfo {
                    version: Version::new(7, 1),
                    devices: vec![RocmDevice { gfx_target: "gfx942".into() }],
                });
                let s = select(
                    &p,
                    Request::new(BackendKind::Rocm, 0),
                    &names(&["torch-stable-abi210-rocm71-x86_64-linux"]),
                );
                let r = rejection(&s, "torch-stable-abi210-rocm71-x86_64-linux").to_string();
                assert!(r.contains("serves CPU and CUDA kernels only"), "{r}");
            }
            Err(why) => {
                assert_eq!(s.chosen, None);
                let r = rejection(&s, "torch-stable-abi29-cpu-x86_64-linux");
                assert!(matches!(r, Rejection::StableAbi { target, .. } if *target == Version::new(2, 9)));
                assert!(r.to_string().contains(why), "{r}");
            }
        }
    }

    #[test]
    fn a_refused_variant_gives_way_to_the_next_usable_one() {
        // tvm-ffi variants, so that the ranking holds with or without the host.
        let p = linux();
        let c = names(&["tvm-ffi01-cpu-x86_64-linux", "tvm-ffi01-cuda-x86_64-linux", "nonsense"]);
        let mut trace = select(&p, Request::cpu(), &c).trace;
        let mut with_torch = c.clone();
        with_torch.push(Candidate::new("torch-stable-abi211-cpu-x86_64-linux"));
        with_torch.push(Candidate::new("torch-stable-abi29-cpu-x86_64-linux"));
        let mut trace2 = select(&p, Request::cpu(), &with_torch).trace;
        // Not usable: nothing changes.
        let before = trace.clone();
        trace.refuse("nonsense", Rejection::Refused("no".into()));
        trace.refuse("missing", Rejection::Refused("no".into()));
        assert_eq!(trace, before);
        // The chosen one is refused: nothing usable is left, the refusal is the first rejection.
        trace.refuse("tvm-ffi01-cpu-x86_64-linux", Rejection::Refused("needs too much".into()));
        assert_eq!(trace.chosen(), None, "{trace}");
        assert_eq!(trace.rows[0].variant, "tvm-ffi01-cpu-x86_64-linux");
        assert!(trace.to_string().contains("rejected  refused before loading: needs too much"), "{trace}");
        assert!(trace.to_string().ends_with("=> no usable variant; the layer falls back to its Rust forward"));
        if crate::torch_stable_abi::host_compiled_in().is_ok() {
            let usable: Vec<&str> = trace2.usable().collect();
            assert_eq!(usable.len(), 3, "{trace2}");
            trace2.refuse("tvm-ffi01-cpu-x86_64-linux", Rejection::Refused("first".into()));
            assert_eq!(trace2.chosen(), Some("torch-stable-abi211-cpu-x86_64-linux"), "{trace2}");
            assert!(matches!(
                trace2.verdict("torch-stable-abi29-cpu-x86_64-linux"),
                Some(Verdict::Accepted { rank: 2, .. })
            ));
            trace2.refuse("torch-stable-abi211-cpu-x86_64-linux", Rejection::Refused("second".into()));
            assert_eq!(trace2.chosen(), Some("torch-stable-abi29-cpu-x86_64-linux"), "{trace2}");
            // Refusals in the order they happened, before the rejections of selection.
            let rejected: Vec<&str> = trace2.rows[1..3].iter().map(|r| r.variant.as_str()).collect();
            assert_eq!(rejected, ["tvm-ffi01-cpu-x86_64-linux", "torch-stable-abi211-cpu-x86_64-linux"]);
        }
    }

    #[test]
    fn gpu_without_code_in_the_library_is_rejected() {
        let p = cuda(Version::new(13, 0), Version::new(9, 0));
        let c = vec![
            Candidate::new("tvm-ffi01-cu130-x86_64-linux").with_archs(["8.0", "8.6"]),
            Candidate::new("tvm-ffi01-cu129-x86_64-linux").with_archs(["8.0"]),
        ];
        let s = select(&Platform { cuda: p.cuda.clone(), ..linux() }, Request::cuda(0), &c);
        let r = rejection(&s, "tvm-ffi01-cu130-x86_64-linux");
        assert_eq!(
            r,
            &Rejection::NoCodeForGpu { capability: Version::new(9, 0), archs: vec!["8.0".into(), "8.6".into()] }
        );
        assert!(r.to_string().contains("no code for this GPU (sm_90"), "{r}");
        // PTX of an older arch covers the newer GPU.
        let c = vec![Candidate::new("tvm-ffi01-cu130-x86_64-linux").with_archs(["8.0+PTX"])];
        assert_eq!(select(&p, Request::cuda(0), &c).chosen, Some(0));
        // Unknown archs are accepted, and the trace says the check did not happen.
        let c = vec![Candidate::new("tvm-ffi01-cu130-x86_64-linux")];
        let s = select(&p, Request::cuda(0), &c);
        assert!(matches!(&s.trace.rows[0].verdict, Verdict::Chosen { note: Some(n) } if n.contains("not checked")));
    }

    #[test]
    fn metal_variants_need_macos_26() {
        let mac = |version: Option<Version>| {
            Platform::new(Os::Darwin, CpuArch::Aarch64)
                .with_metal(crate::platform::MetalInfo { device_name: "Apple M4".into(), macos_version: version })
        };
        let c = names(&["tvm-ffi01-metal-aarch64-darwin"]);
        let request = Request::new(BackendKind::Metal, 0);
        let s = select(&mac(Some(Version::new(26, 0))), request, &c);
        assert_eq!(s.trace.chosen(), Some("tvm-ffi01-metal-aarch64-darwin"), "{}", s.trace);
        let s = select(&mac(Some(Version::new(15, 4))), request, &c);
        assert_eq!(s.chosen, None);
        let r = rejection(&s, "tvm-ffi01-metal-aarch64-darwin").to_string();
        assert_eq!(r, "Metal kernels require macOS 26.0 or later, this is macOS 15.4");
        let s = select(&mac(None), request, &c);
        let r = rejection(&s, "tvm-ffi01-metal-aarch64-darwin").to_string();
        assert!(r.ends_with("and the macOS version is unknown"), "{r}");
    }

    #[test]
    fn rocm_and_xpu_need_exact_versions() {
        let p = linux().with_rocm(RocmInfo {
            version: Version::new(7, 1),
            devices: vec![RocmDevice { gfx_target: "gfx942".into() }],
        });
        let c =
            names(&["tvm-ffi01-rocm72-x86_64-linux", "tvm-ffi01-rocm71-x86_64-linux", "tvm-ffi01-rocm70-x86_64-linux"]);
        let s = select(&p, Request::new(BackendKind::Rocm, 0), &c);
        assert_eq!(s.trace.chosen(), Some("tvm-ffi01-rocm71-x86_64-linux"), "{}", s.trace);
        assert!(matches!(rejection(&s, "tvm-ffi01-rocm72-x86_64-linux"), Rejection::BackendVersion { .. }));
        assert!(matches!(rejection(&s, "tvm-ffi01-rocm70-x86_64-linux"), Rejection::BackendVersion { .. }));
        let p = linux().with_xpu(crate::platform::XpuInfo { device_count: 1, oneapi_version: None });
        let s = select(&p, Request::new(BackendKind::Xpu, 0), &names(&["tvm-ffi01-xpu20253-x86_64-linux"]));
        assert!(rejection(&s, "tvm-ffi01-xpu20253-x86_64-linux").to_string().contains("version is unknown"));
    }

    #[test]
    fn cpu_arch_os_tvm_ffi_and_backend_must_match() {
        let p = linux();
        let c = names(&[
            "tvm-ffi01-cpu-aarch64-linux",
            "tvm-ffi01-cpu-x86_64-darwin",
            "tvm-ffi02-cpu-x86_64-linux",
            "tvm-ffi01-cu130-x86_64-linux",
            "tvm-ffi01-cpu-x86_64-linux",
            "not-a-variant",
        ]);
        let s = select(&p, Request::cpu(), &c);
        assert_eq!(s.trace.chosen(), Some("tvm-ffi01-cpu-x86_64-linux"));
        assert!(matches!(rejection(&s, "tvm-ffi01-cpu-aarch64-linux"), Rejection::CpuArch { .. }));
        assert!(matches!(rejection(&s, "tvm-ffi01-cpu-x86_64-darwin"), Rejection::Os { .. }));
        assert!(matches!(rejection(&s, "tvm-ffi02-cpu-x86_64-linux"), Rejection::TvmFfiVersion { .. }));
        assert!(matches!(rejection(&s, "tvm-ffi01-cu130-x86_64-linux"), Rejection::OtherBackend { .. }));
        assert!(matches!(rejection(&s, "not-a-variant"), Rejection::Unparseable(_)));
        // A CUDA request on a machine without CUDA.
        let s = select(&p, Request::cuda(0), &names(&["tvm-ffi01-cu130-x86_64-linux"]));
        assert!(matches!(rejection(&s, "tvm-ffi01-cu130-x86_64-linux"), Rejection::NoDevice(_)));
        // A device ordinal that does not exist.
        let p = cuda(Version::new(13, 0), Version::new(9, 0));
        let s = select(&p, Request::cuda(3), &names(&["tvm-ffi01-cu130-x86_64-linux"]));
        assert!(rejection(&s, "tvm-ffi01-cu130-x86_64-linux").to_string().contains("no CUDA device 3"));
    }

    #[test]
    fn selection_ignores_listing_order() {
        let p = cuda(Version::new(12, 8), Version::new(9, 0));
        let mut c =
            names(&["tvm-ffi01-cu126-x86_64-linux", "tvm-ffi01-cu128-x86_64-linux", "tvm-ffi01-cu124-x86_64-linux"]);
        let first = select(&p, Request::cuda(0), &c).trace;
        c.reverse();
        let second = select(&p, Request::cuda(0), &c).trace;
        assert_eq!(first.to_string(), second.to_string());
    }

    #[test]
    fn trace_reads_like_a_table() {
        let p = cuda(Version::new(12, 9), Version::new(9, 0));
        let c = names(&[
            "tvm-ffi01-cu128-x86_64-linux",
            "tvm-ffi01-cu130-x86_64-linux",
            "torch212-cxx11-cu128-x86_64-linux",
        ]);
        let shown = select(&p, Request::cuda(0), &c).trace.to_string();
        let expected = "\
variant selection for cuda device 0 on x86_64-linux, tvm-ffi 0.1, CUDA driver 12.9, GPU GPU sm_90
  tvm-ffi01-cu128-x86_64-linux       chosen
  tvm-ffi01-cu130-x86_64-linux       rejected  built for CUDA 13.0, the driver supports CUDA 12.9: the major version must match
  torch212-cxx11-cu128-x86_64-linux  rejected  needs PyTorch (torch extension module); only tvm-ffi and torch stable-ABI variants load without it
  => tvm-ffi01-cu128-x86_64-linux";
        assert_eq!(shown, expected);
        let none = select(&linux(), Request::cpu(), &[]).trace.to_string();
        assert!(none.contains("no candidates"), "{none}");
    }
}
