//! The build target (from `TARGET`, never from `cfg!` in the build script) and which variants
//! it can run: tvm-ffi variants of the runtime's tvm-ffi version, for the target's CPU arch and
//! OS, for the declared (or default) backends.

use kernels_runtime::platform::TVM_FFI_ABI_VERSION;
use kernels_runtime::variant::{BackendKind, CpuArch, Framework, Os, VariantName};

/// What the variants to embed must match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetSpec {
    pub triple: String,
    /// CPU arch of the triple.
    pub cpu: CpuArch,
    /// OS of the triple.
    pub os: Os,
    /// Backends whose variants are fetched and embedded.
    pub backends: Vec<BackendKind>,
}

/// The target triple names no CPU arch or OS that kernel variants exist for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("target `{0}` has no kernel variants (supported: x86_64 or aarch64 on linux, darwin or windows)")]
pub struct UnsupportedTarget(pub String);

/// The CPU arch and OS of a target triple (`x86_64-unknown-linux-gnu` → x86_64, linux).
pub fn target_parts(triple: &str) -> Result<(CpuArch, Os), UnsupportedTarget> {
    let cpu = match triple.split('-').next() {
        Some("x86_64") => CpuArch::X86_64,
        Some("aarch64" | "arm64") => CpuArch::Aarch64,
        _ => return Err(UnsupportedTarget(triple.to_owned())),
    };
    let os = if triple.contains("-linux") {
        Os::Linux
    } else if triple.contains("-apple-darwin") {
        Os::Darwin
    } else if triple.contains("-windows") {
        Os::Windows
    } else {
        return Err(UnsupportedTarget(triple.to_owned()));
    };
    Ok((cpu, os))
}

/// The backends a target's binaries could meet at run time, when `[build] backends` is not set.
pub fn default_backends(os: &Os) -> Vec<BackendKind> {
    match os {
        Os::Linux => vec![BackendKind::Cpu, BackendKind::Cuda, BackendKind::Rocm, BackendKind::Xpu],
        Os::Darwin => vec![BackendKind::Cpu, BackendKind::Metal],
        Os::Windows => vec![BackendKind::Cpu, BackendKind::Cuda, BackendKind::Xpu],
        Os::Other(_) => vec![BackendKind::Cpu],
    }
}

impl TargetSpec {
    /// The spec for `triple` with `backends` (or the target's defaults).
    pub fn new(triple: &str, backends: Option<&[BackendKind]>) -> Result<Self, UnsupportedTarget> {
        let (cpu, os) = target_parts(triple)?;
        let backends = backends.map(<[_]>::to_vec).unwrap_or_else(|| default_backends(&os));
        Ok(TargetSpec { triple: triple.to_owned(), cpu, os, backends })
    }

    /// Whether a variant is one to fetch and embed for this target, or why not.
    pub fn wants(&self, variant: &str) -> Result<(), String> {
        let name = VariantName::parse(variant).map_err(|e| e.reason)?;
        name.loadable().map_err(|why| why.to_string())?;
        let VariantName::Arch { framework, backend, cpu, os, .. } = name else {
            unreachable!("only arch variants are loadable");
        };
        if let Framework::TvmFfi(v) = framework
            && v != TVM_FFI_ABI_VERSION
        {
            return Err(format!("built for tvm-ffi {v}, the runtime speaks {TVM_FFI_ABI_VERSION}"));
        }
        if cpu != self.cpu || os != self.os {
            return Err(format!("built for {cpu}-{os}, the target is {}-{}", self.cpu, self.os));
        }
        if !self.backends.contains(&backend.kind()) {
            let list: Vec<_> = self.backends.iter().map(|b| b.as_str()).collect();
            return Err(format!("backend {} is not among the build's backends ({})", backend.kind(), list.join(", ")));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_target_decides_which_variants_are_embedded() {
        let t = TargetSpec::new("x86_64-unknown-linux-gnu", None).unwrap();
        assert!(t.wants("tvm-ffi01-cpu-x86_64-linux").is_ok());
        assert!(t.wants("tvm-ffi01-cu126-x86_64-linux").is_ok());
        assert!(t.wants("tvm-ffi01-cu130-x86_64-linux").is_ok());
        assert!(t.wants("tvm-ffi01-cpu-aarch64-linux").unwrap_err().contains("aarch64-linux"));
        assert!(t.wants("tvm-ffi01-metal-aarch64-darwin").is_err());
        assert_eq!(t.wants("torch212-cxx11-cu130-x86_64-linux").unwrap_err(), "needs PyTorch (torch extension module)");
        assert_eq!(t.wants("torch-universal").unwrap_err(), "needs PyTorch (legacy universal torch variant)");
        // Torch stable-ABI variants within the host's targets are embedded like tvm-ffi ones
        // wherever the runtime carries the host.
        let stable = t.wants("torch-stable-abi211-cpu-x86_64-linux");
        match kernels_runtime::torch_stable_abi::host_compiled_in() {
            Ok(()) => assert_eq!(stable, Ok(())),
            Err(why) => assert!(stable.unwrap_err().contains(why)),
        }
        // ROCm ones are not served yet, so not embedded.
        assert!(
            t.wants("torch-stable-abi211-rocm71-x86_64-linux")
                .unwrap_err()
                .contains("serves CPU and CUDA kernels only")
        );
        assert_eq!(
            t.wants("torch-stable-abi214-cpu-x86_64-linux").unwrap_err(),
            "torch stable-ABI 2.14 is newer than this runtime serves (2.9\u{2013}2.13)"
        );
        assert!(t.wants("tvm-ffi02-cpu-x86_64-linux").unwrap_err().contains("tvm-ffi 0.2"));
        let cpu_only = TargetSpec::new("x86_64-unknown-linux-gnu", Some(&[BackendKind::Cpu])).unwrap();
        assert!(
            cpu_only
                .wants("tvm-ffi01-cu130-x86_64-linux")
                .unwrap_err()
                .contains("not among the build's backends (cpu)")
        );
        let mac = TargetSpec::new("aarch64-apple-darwin", None).unwrap();
        assert!(mac.wants("tvm-ffi01-metal-aarch64-darwin").is_ok());
        assert!(TargetSpec::new("wasm32-unknown-unknown", None).is_err());
    }
}
