//! Two different embedded kernels in one process, the C++ one (against the real tvm-ffi) and
//! the Rust one: each function must run code from its own library. The loader opens
//! `/proc/self/fd/N`, and glibc knows a loaded object by that name, so a descriptor number
//! reused for the second library would hand it the first one's handle.
//!
//! A test binary with one test, so that nothing else loads libraries in between; the file-cache
//! way (`KERNELS_UNPACK=file`) runs the same check in a child process afterwards.

use std::path::Path;
use std::process::Command;

use kernels_runtime::digest::sha256_hex;
use kernels_runtime::loader::{self, LoadedKernel, Source};
use kernels_runtime::registry::{EmbeddedFile, EmbeddedVariant};
use kernels_tests::*;

/// The one variant of a Hub-layout kernel, as the build would embed it.
fn embedded(root: &Path) -> EmbeddedVariant {
    let mut dirs = loader::variant_dirs(root).unwrap();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    let dir = dirs.remove(0);
    let lib = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "so"))
        .unwrap();
    let bytes: &'static [u8] = Box::leak(std::fs::read(&lib).unwrap().into_boxed_slice());
    let name = dir.file_name().unwrap().to_string_lossy().into_owned();
    EmbeddedVariant {
        variant: Box::leak(name.into_boxed_str()),
        archs: &[],
        library: EmbeddedFile {
            path: Box::leak(lib.file_name().unwrap().to_string_lossy().into_owned().into_boxed_str()),
            sha256: Box::leak(sha256_hex(bytes).into_boxed_str()),
            bytes,
        },
    }
}

/// `rms_norm` of `kernel` on a small input, checked against the reference.
fn rms_norm_runs(kernel: &LoadedKernel) {
    use kernels_runtime::ffi::{Arg, TensorView};
    let (x, w) = (values(2 * 8, 1), values(8, 2));
    let mut out = vec![0f32; 2 * 8];
    let f = kernel.function("rms_norm").unwrap();
    {
        let (xv, wv) = (TensorView::from_slice(&x, &[2, 8]).unwrap(), TensorView::from_slice(&w, &[8]).unwrap());
        let ov = TensorView::from_slice_mut(&mut out, &[2, 8]).unwrap();
        // SAFETY: rms_norm writes only `out`.
        unsafe { f.call(&[Arg::from(&ov), Arg::from(&xv), Arg::from(&wv), Arg::from(1e-6f64)]) }.unwrap();
    }
    assert!(max_rel_diff(&out, &rms_norm_ref(&x, &w, 1e-6)) < 1e-5);
}

/// The object files this process has mapped, from `/proc/self/maps`.
fn mapped_files() -> String {
    std::fs::read_to_string("/proc/self/maps").unwrap()
}

/// `libtvm_ffi.so` as the build embeds it, handed to the loader the way generated code does.
fn embed_tvm_ffi() -> (&'static str, std::path::PathBuf) {
    let path = kernels_runtime::ffi::locate_tvm_ffi().expect("the tests need apache-tvm-ffi (scripts/test.sh)");
    let bytes: &'static [u8] = Box::leak(std::fs::read(&path).unwrap().into_boxed_slice());
    let sha256: &'static str = Box::leak(sha256_hex(bytes).into_boxed_str());
    loader::provide_tvm_ffi(EmbeddedFile { path: "libtvm_ffi.so", sha256, bytes });
    // SAFETY: this binary's one test runs this before any other thread reads the environment.
    unsafe { std::env::remove_var(kernels_runtime::env::TVM_FFI_LIB) };
    (sha256, path)
}

#[test]
fn two_embedded_kernels_each_run_their_own_code() {
    let (tvm_ffi_sha, tvm_ffi_path) = embed_tvm_ffi();
    let (cpp, rust) = (embedded(&cpp_cpu_kernel()), embedded(rust_cpu_kernel()));
    assert_ne!(cpp.library.sha256, rust.library.sha256);
    let cpp_kernel = loader::load_embedded(&cpp).unwrap();
    let rust_kernel = loader::load_embedded(&rust).unwrap();
    assert_eq!((cpp_kernel.source(), rust_kernel.source()), (Source::Embedded, Source::Embedded));

    // Each function comes from its own library: the Rust kernel's error channel is its own.
    assert!(!cpp_kernel.function("rms_norm").unwrap().is_rust_kernel(), "the C++ kernel resolved into Rust code");
    assert!(rust_kernel.function("rms_norm").unwrap().is_rust_kernel(), "the Rust kernel resolved into C++ code");
    rms_norm_runs(&cpp_kernel);
    rms_norm_runs(&rust_kernel);

    // The C++ kernel's libtvm_ffi.so is the embedded copy, loaded through its verified descriptor.
    let runtime = kernels_runtime::ffi::preloaded_tvm_ffi().expect("preloaded for the C++ kernel");
    assert!(runtime.path().starts_with("/proc/self/fd"), "{}", runtime.path().display());

    // Every library is mapped, each from its own verified copy.
    let maps = mapped_files();
    assert!(maps.contains(tvm_ffi_sha), "the embedded libtvm_ffi.so is not mapped:\n{maps}");
    for kernel in [&cpp, &rust] {
        assert!(maps.contains(kernel.library.sha256), "{} is not mapped:\n{maps}", kernel.library.path);
    }
    let file_mode = std::env::var("KERNELS_UNPACK").as_deref() == Ok("file");
    for loaded in [&cpp_kernel, &rust_kernel] {
        let shown = loaded.path().to_string_lossy().into_owned();
        if file_mode {
            let cache = std::env::var("KERNELS_RS_CACHE").unwrap();
            assert!(loaded.path().starts_with(&cache), "{shown} is not in {cache}");
        } else {
            assert!(shown.starts_with("memfd:kernels-rs:"), "{shown}");
        }
    }

    // Loading them again gives the same libraries, and a third load of either changes nothing.
    let again = loader::load_embedded(&rust).unwrap();
    assert!(again.function("rms_norm").unwrap().is_rust_kernel());
    assert_eq!(again.path(), rust_kernel.path());

    if !file_mode {
        from_the_file_cache(&tvm_ffi_path);
    }
}

/// The same check in a child process that unpacks to the file cache.
fn from_the_file_cache(tvm_ffi: &Path) {
    let cache = tempfile::tempdir().unwrap();
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "two_embedded_kernels_each_run_their_own_code", "--nocapture"])
        .env("KERNELS_UNPACK", "file")
        .env("KERNELS_RS_CACHE", cache.path())
        .env(kernels_runtime::env::TVM_FFI_LIB, tvm_ffi)
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    assert!(text.contains("1 passed"), "{text}");
    let files = std::fs::read_dir(cache.path()).unwrap().count();
    assert_eq!(files, 3, "one file per kernel, and libtvm_ffi.so");
}
