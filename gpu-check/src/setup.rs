//! Finding, selecting and loading the CUDA kernel; the checks that need no GPU.

use std::path::{Path, PathBuf};

use kernels_runtime::ffi::{self, Arg, KernelError, KernelFunction, TensorView};
use kernels_runtime::loader::{self, LoadError, LoadedKernel};
use kernels_runtime::platform::Platform;
use kernels_runtime::select::{DecisionTrace, Request};
use kernels_runtime::variant::{BackendKind, CpuArch, Os, VariantName};

use crate::FUNCTIONS;

/// The directory of the running executable, if it can be found.
pub fn exe_dir() -> Option<PathBuf> {
    std::env::current_exe().ok()?.parent().map(Path::to_owned)
}

/// The kernel directory: the one given, else `kernel` next to the executable.
pub fn kernel_dir(given: Option<&Path>) -> Result<PathBuf, String> {
    match given {
        Some(dir) => Ok(dir.to_owned()),
        None => exe_dir()
            .map(|d| d.join("kernel"))
            .ok_or_else(|| "cannot find the executable's directory; pass KERNEL_DIR".to_owned()),
    }
}

/// Preloads `libtvm_ffi.so`: `KERNELS_TVM_FFI_LIB` if set, else `lib/libtvm_ffi.so` next to
/// the executable, else what `tvm-ffi-config` reports. Returns the path loaded.
pub fn preload_tvm_ffi() -> Result<PathBuf, String> {
    let from_env = std::env::var_os(kernels_runtime::env::TVM_FFI_LIB).is_some_and(|v| !v.is_empty());
    let beside = exe_dir().map(|d| d.join("lib").join(ffi::TVM_FFI_LIBRARY)).filter(|p| p.is_file());
    let loaded = match (from_env, beside) {
        (false, Some(path)) => ffi::preload_tvm_ffi_from(&path),
        _ => ffi::preload_tvm_ffi(),
    };
    loaded.map(|lib| lib.path().to_owned()).map_err(|e| e.to_string())
}

/// Selects the variant of the kernel in `dir` for CUDA device 0 and loads it.
pub fn select_and_load(dir: &Path, platform: &Platform) -> Result<(LoadedKernel, DecisionTrace), LoadError> {
    loader::load_from_dir(&dir.display().to_string(), dir, platform, Request::cuda(0))
}

/// Resolves [`FUNCTIONS`] in `kernel`.
pub fn resolve(kernel: &LoadedKernel) -> Result<[KernelFunction; 3], LoadError> {
    Ok([kernel.function(FUNCTIONS[0])?, kernel.function(FUNCTIONS[1])?, kernel.function(FUNCTIONS[2])?])
}

/// The CUDA variant directories of `dir` built for this CPU and OS, for the checks that run
/// without a GPU (the library loads anywhere; it reaches for the driver only when launching).
pub fn cuda_variant_dirs(dir: &Path) -> Vec<PathBuf> {
    let Ok(dirs) = loader::variant_dirs(dir) else { return Vec::new() };
    dirs.into_iter()
        .filter(|d| {
            let Ok(variant) = VariantName::parse(&kernels_runtime::variant::dir_name(d)) else { return false };
            match &variant {
                VariantName::Arch { backend, cpu, os, .. } => {
                    variant.loadable().is_ok()
                        && backend.kind() == BackendKind::Cuda
                        && *cpu == CpuArch::current()
                        && *os == Os::current()
                }
                _ => false,
            }
        })
        .collect()
}

/// The libraries the executable at `path` links (`DT_NEEDED`), and those of them that cannot be
/// loaded here (`name: reason`): what would stop it from starting.
pub fn unloadable_libraries(path: &Path) -> std::io::Result<(Vec<String>, Vec<String>)> {
    use libloading::os::unix::{Library, RTLD_LAZY, RTLD_LOCAL};
    let needed = ffi::needed_libraries(path)?;
    let missing = needed
        .iter()
        .filter_map(|name| {
            // SAFETY: these are libraries the executable links (system and CUDA libraries);
            // opening them runs their initialisers, as starting the executable would.
            let opened = unsafe { Library::open(Some(name), RTLD_LAZY | RTLD_LOCAL) };
            opened.err().map(|e| format!("{name}: {e}"))
        })
        .collect();
    Ok((needed, missing))
}

/// Calls `rms_norm` with host memory: the kernel must refuse it with its own error message
/// (a `ValueError` saying it wants CUDA tensors), not crash. Returns that message.
pub fn host_memory_is_refused(rms_norm: &KernelFunction) -> Result<String, String> {
    let x = [1f32; 8];
    let weight = [1f32; 4];
    let mut out = [0f32; 8];
    let views = (|| -> Result<_, ffi::TensorError> {
        Ok((TensorView::from_slice(&x, &[2, 4])?, TensorView::from_slice(&weight, &[4])?))
    })();
    let (x_view, w_view) = views.map_err(|e| e.to_string())?;
    let out_view = TensorView::from_slice_mut(&mut out, &[2, 4]).map_err(|e| e.to_string())?;
    // SAFETY: rms_norm(out, x, weight, eps) reads x and weight and writes out; the views cover
    // live host arrays of those shapes. The kernel refuses host memory before touching it.
    let result =
        unsafe { rms_norm.call(&[Arg::from(&out_view), Arg::from(&x_view), Arg::from(&w_view), Arg::Float(1e-6)]) };
    expect_raised(result.map_err(Some), "ValueError", "must be a CUDA device tensor")
}

/// Checks that a call failed with a kernel error of `kind` whose message contains `needle`;
/// returns the message. `Err(None)` stands for a failure that is not a kernel error.
pub fn expect_raised(result: Result<(), Option<KernelError>>, kind: &str, needle: &str) -> Result<String, String> {
    match result {
        Ok(()) => Err(format!("the call succeeded; expected {kind} mentioning `{needle}`")),
        Err(Some(KernelError::Raised { kind: k, message, .. })) if k == kind && message.contains(needle) => Ok(message),
        Err(Some(e)) => Err(format!("expected {kind} mentioning `{needle}`, got: {e}")),
        Err(None) => Err(format!("expected the kernel's {kind}, got another error")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expect_raised_matches_kind_and_message() {
        let raised = |kind: &str, message: &str| KernelError::Raised {
            function: "f".into(),
            kind: kind.into(),
            message: message.into(),
            backtrace: String::new(),
        };
        assert_eq!(
            expect_raised(Err(Some(raised("TypeError", "x: bad dtype"))), "TypeError", "bad dtype").unwrap(),
            "x: bad dtype"
        );
        assert!(expect_raised(Err(Some(raised("ValueError", "x: bad dtype"))), "TypeError", "bad").is_err());
        assert!(expect_raised(Err(Some(raised("TypeError", "other"))), "TypeError", "bad").is_err());
        assert!(expect_raised(Ok(()), "TypeError", "bad").unwrap_err().contains("succeeded"));
    }

    #[test]
    fn the_libraries_of_this_executable_load() {
        let exe = std::env::current_exe().unwrap();
        let (needed, missing) = unloadable_libraries(&exe).unwrap();
        assert!(needed.iter().any(|n| n.starts_with("libc.so")), "{needed:?}");
        assert!(missing.is_empty(), "{missing:?}");
    }

    #[test]
    fn cuda_variants_are_picked_by_name() {
        let dir = std::env::temp_dir().join(format!("gpu-check-variants-{}", std::process::id()));
        let cpu = CpuArch::current();
        let os = Os::current();
        for name in [
            format!("tvm-ffi01-cu130-{cpu}-{os}"),
            format!("tvm-ffi01-cpu-{cpu}-{os}"),
            format!("torch210-cxx11-cu130-{cpu}-{os}"),
            "not-a-variant".to_owned(),
        ] {
            std::fs::create_dir_all(dir.join("build").join(name)).unwrap();
        }
        let found = cuda_variant_dirs(&dir);
        std::fs::remove_dir_all(&dir).unwrap();
        let names: Vec<_> = found.iter().map(|d| d.file_name().unwrap().to_string_lossy().into_owned()).collect();
        assert_eq!(names, [format!("tvm-ffi01-cu130-{cpu}-{os}")]);
    }
}
