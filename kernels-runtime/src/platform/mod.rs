//! What the running machine offers: OS, CPU, GPUs and their drivers, the tvm-ffi runtime.
//!
//! [`Platform::detect`] probes the machine; every probe is a `dlopen` or a file read that
//! reports [`Probe::Absent`] with a reason on any failure, so detection never panics and
//! needs no GPU toolkit at build or link time. [`Platform::detect_for`] probes only one kind
//! of accelerator: dispatch uses it, so a layer on the CPU loads no GPU driver. [`Platform::new`] and the `with_*` methods
//! build a platform from parts, so selection can be tested without hardware.

mod cuda;
#[cfg(target_os = "macos")]
mod metal;
mod rocm;
mod xpu;

use std::fmt;

use crate::variant::{BackendKind, CpuArch, Os, Version};

pub use cuda::{CudaDevice, CudaInfo};
pub use rocm::{RocmDevice, RocmInfo};
pub use xpu::XpuInfo;

/// The reason an accelerator shows as absent when it was not probed ([`Platform::new`],
/// [`Platform::detect_for`] another kind).
pub const NOT_PROBED: &str = "not probed";

/// The TVM-FFI ABI version (major.minor) this runtime speaks.
pub const TVM_FFI_ABI_VERSION: Version = Version::new(0, 1);

/// The outcome of probing one component: present with its facts, or absent and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe<T> {
    /// Found and usable.
    Present(T),
    /// Not usable, with the reason a user can act on.
    Absent(String),
}

impl<T> Probe<T> {
    /// The facts, if present.
    pub fn present(&self) -> Option<&T> {
        match self {
            Probe::Present(t) => Some(t),
            Probe::Absent(_) => None,
        }
    }

    /// Shorthand for an absent probe.
    pub fn absent(reason: impl Into<String>) -> Self {
        Probe::Absent(reason.into())
    }
}

/// Apple Metal on this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetalInfo {
    /// Name of the default Metal device.
    pub device_name: String,
    /// The macOS version (`kern.osproductversion`), when it could be read.
    pub macos_version: Option<Version>,
}

/// Everything selection needs to know about the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    /// Operating system.
    pub os: Os,
    /// CPU architecture.
    pub cpu: CpuArch,
    /// CPU features detected at run time (`avx2`, `avx512f`, `neon`, …).
    pub cpu_features: Vec<&'static str>,
    /// NVIDIA driver and GPUs.
    pub cuda: Probe<CudaInfo>,
    /// AMD ROCm runtime and GPUs.
    pub rocm: Probe<RocmInfo>,
    /// Intel Level Zero and GPUs.
    pub xpu: Probe<XpuInfo>,
    /// Apple Metal.
    pub metal: Probe<MetalInfo>,
    /// The TVM-FFI ABI version kernels are loaded with.
    pub tvm_ffi: Version,
}

impl Platform {
    /// A platform with the given OS and CPU, no accelerators, no CPU features, and the
    /// runtime's TVM-FFI version. Add parts with the `with_*` methods.
    pub fn new(os: Os, cpu: CpuArch) -> Self {
        Platform {
            os,
            cpu,
            cpu_features: Vec::new(),
            cuda: Probe::absent(NOT_PROBED),
            rocm: Probe::absent(NOT_PROBED),
            xpu: Probe::absent(NOT_PROBED),
            metal: Probe::absent(NOT_PROBED),
            tvm_ffi: TVM_FFI_ABI_VERSION,
        }
    }

    /// Sets the CUDA driver version and devices.
    pub fn with_cuda(mut self, cuda: CudaInfo) -> Self {
        self.cuda = Probe::Present(cuda);
        self
    }

    /// Sets the ROCm version and devices.
    pub fn with_rocm(mut self, rocm: RocmInfo) -> Self {
        self.rocm = Probe::Present(rocm);
        self
    }

    /// Sets Intel XPU facts.
    pub fn with_xpu(mut self, xpu: XpuInfo) -> Self {
        self.xpu = Probe::Present(xpu);
        self
    }

    /// Sets Metal facts.
    pub fn with_metal(mut self, metal: MetalInfo) -> Self {
        self.metal = Probe::Present(metal);
        self
    }

    /// Sets the TVM-FFI version kernels must have been built for.
    pub fn with_tvm_ffi(mut self, version: Version) -> Self {
        self.tvm_ffi = version;
        self
    }

    /// Sets the detected CPU features.
    pub fn with_cpu_features(mut self, features: Vec<&'static str>) -> Self {
        self.cpu_features = features;
        self
    }

    /// Probes this machine: every accelerator. Never panics; anything missing is
    /// [`Probe::Absent`] with a reason.
    pub fn detect() -> Self {
        Platform {
            os: Os::current(),
            cpu: CpuArch::current(),
            cpu_features: cpu_features(),
            cuda: cuda::probe(),
            rocm: rocm::probe(),
            xpu: xpu::probe(),
            metal: probe_metal(),
            tvm_ffi: TVM_FFI_ABI_VERSION,
        }
    }

    /// Probes only what selecting a variant for `kind` needs: the OS, the CPU, and `kind`'s
    /// own driver. Every other accelerator is left [`Probe::Absent`] with the reason
    /// [`NOT_PROBED`], so no GPU driver is loaded (`libcuda.so.1`, `cuInit`, ROCm, Level Zero)
    /// for a layer whose tensors are on the CPU. Selection for `kind` reads nothing else.
    pub fn detect_for(kind: BackendKind) -> Self {
        let mut platform = Platform::new(Os::current(), CpuArch::current()).with_cpu_features(cpu_features());
        match kind {
            BackendKind::Cuda => platform.cuda = cuda::probe(),
            BackendKind::Rocm => platform.rocm = rocm::probe(),
            BackendKind::Xpu => platform.xpu = xpu::probe(),
            BackendKind::Metal => platform.metal = probe_metal(),
            BackendKind::Cpu | BackendKind::Cann | BackendKind::Neuron | BackendKind::Tpu => {}
        }
        platform
    }

    /// Whether kernels for `kind` could run here at all (the device is present).
    pub fn has_backend(&self, kind: BackendKind) -> Result<(), String> {
        let absent = |p: Result<(), &String>, what: &str| p.map_err(|r| format!("{what}: {r}"));
        match kind {
            BackendKind::Cpu => Ok(()),
            BackendKind::Cuda => absent(probe_ok(&self.cuda), "no CUDA"),
            BackendKind::Rocm => absent(probe_ok(&self.rocm), "no ROCm"),
            BackendKind::Xpu => absent(probe_ok(&self.xpu), "no Intel XPU"),
            BackendKind::Metal => absent(probe_ok(&self.metal), "no Metal"),
            BackendKind::Cann | BackendKind::Neuron | BackendKind::Tpu => {
                Err(format!("{kind} devices are not detected by kernels-rs"))
            }
        }
    }
}

/// A macOS product version (`26.0`, `15.4.1`) as major.minor.
#[cfg_attr(not(target_os = "macos"), allow(dead_code, reason = "read on macOS; tested everywhere"))]
fn parse_product_version(text: &str) -> Option<Version> {
    let mut parts = text.trim().split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next().map_or(Some(0), |m| m.parse().ok())?;
    Some(Version::new(major, minor))
}

fn probe_ok<T>(p: &Probe<T>) -> Result<(), &String> {
    match p {
        Probe::Present(_) => Ok(()),
        Probe::Absent(r) => Err(r),
    }
}

#[cfg(target_os = "macos")]
fn probe_metal() -> Probe<MetalInfo> {
    metal::probe()
}

#[cfg(not(target_os = "macos"))]
fn probe_metal() -> Probe<MetalInfo> {
    Probe::absent("Metal exists only on macOS")
}

fn cpu_features() -> Vec<&'static str> {
    #[allow(unused_mut)]
    let mut found = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        macro_rules! x86 {
            ($($f:tt),*) => {$(
                if std::arch::is_x86_feature_detected!($f) { found.push($f); }
            )*};
        }
        x86!("sse4.2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw");
    }
    #[cfg(target_arch = "aarch64")]
    {
        macro_rules! arm {
            ($($f:tt),*) => {$(
                if std::arch::is_aarch64_feature_detected!($f) { found.push($f); }
            )*};
        }
        arm!("neon", "fp16", "bf16", "dotprod", "i8mm", "sve", "sve2");
    }
    found
}

impl<T: fmt::Display> fmt::Display for Probe<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Probe::Present(t) => t.fmt(f),
            Probe::Absent(reason) => write!(f, "absent ({reason})"),
        }
    }
}

impl fmt::Display for MetalInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.macos_version {
            Some(v) => write!(f, "{}, macOS {v}", self.device_name),
            None => write!(f, "{}, macOS version unknown", self.device_name),
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "os       {}", self.os)?;
        write!(f, "cpu      {}", self.cpu)?;
        if !self.cpu_features.is_empty() {
            write!(f, " ({})", self.cpu_features.join(" "))?;
        }
        writeln!(f)?;
        writeln!(f, "cuda     {}", self.cuda)?;
        writeln!(f, "rocm     {}", self.rocm)?;
        writeln!(f, "xpu      {}", self.xpu)?;
        writeln!(f, "metal    {}", self.metal)?;
        write!(f, "tvm-ffi  {}", self.tvm_ffi)
    }
}

/// Opens a shared library by soname, or says why not.
fn open_library(name: &str) -> Result<libloading::Library, String> {
    // SAFETY: loading a system driver library runs its initialisers; these are the vendor's
    // own driver entry points, loaded the same way every GPU runtime loads them.
    unsafe { libloading::Library::new(name) }.map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macos_product_versions_parse() {
        assert_eq!(parse_product_version("26.0"), Some(Version::new(26, 0)));
        assert_eq!(parse_product_version("15.4.1\n"), Some(Version::new(15, 4)));
        assert_eq!(parse_product_version("26"), Some(Version::new(26, 0)));
        assert_eq!(parse_product_version(""), None);
        assert_eq!(parse_product_version("x.1"), None);
    }

    #[test]
    fn detect_never_panics_and_reports_this_machine() {
        let p = Platform::detect();
        assert_eq!(p.os, Os::current());
        assert_eq!(p.cpu, CpuArch::current());
        assert_eq!(p.tvm_ffi, TVM_FFI_ABI_VERSION);
        #[cfg(not(target_os = "macos"))]
        assert!(matches!(p.metal, Probe::Absent(_)));
        // Whatever is or is not installed, the report renders.
        let shown = p.to_string();
        assert!(shown.contains("cuda"), "{shown}");
    }

    fn not_probed<T>(p: &Probe<T>) -> bool {
        matches!(p, Probe::Absent(r) if r == NOT_PROBED)
    }

    #[test]
    fn detect_for_probes_only_the_kind_asked_for() {
        let cpu = Platform::detect_for(BackendKind::Cpu);
        assert_eq!((&cpu.os, &cpu.cpu), (&Os::current(), &CpuArch::current()));
        assert_eq!(cpu.cpu_features, cpu_features());
        assert!(not_probed(&cpu.cuda) && not_probed(&cpu.rocm) && not_probed(&cpu.xpu) && not_probed(&cpu.metal));
        assert!(cpu.has_backend(BackendKind::Cpu).is_ok());
        // CUDA's own probe runs for CUDA, and only it: whatever it finds, it is not "not probed".
        let cuda = Platform::detect_for(BackendKind::Cuda);
        assert!(!not_probed(&cuda.cuda), "{cuda}");
        assert!(not_probed(&cuda.rocm) && not_probed(&cuda.xpu) && not_probed(&cuda.metal), "{cuda}");
    }

    #[test]
    fn constructor_builds_platforms_without_hardware() {
        let p = Platform::new(Os::Linux, CpuArch::X86_64).with_cuda(CudaInfo {
            driver_version: Version::new(12, 9),
            devices: vec![CudaDevice { ordinal: 0, name: "NVIDIA H100".into(), capability: Version::new(9, 0) }],
        });
        assert!(p.has_backend(BackendKind::Cuda).is_ok());
        assert!(p.has_backend(BackendKind::Cpu).is_ok());
        let err = p.has_backend(BackendKind::Rocm).unwrap_err();
        assert!(err.contains("no ROCm"), "{err}");
        assert!(p.to_string().contains("CUDA 12.9, 1 device: #0 NVIDIA H100 (sm_90)"), "{p}");
    }
}
