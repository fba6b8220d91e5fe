//! The loader against real kernels: the Rust example kernel (compiled here) and the C++
//! example kernel built against the real tvm-ffi wheel, both in the Hub layout.
//!
//! Tolerance: f32 results within 1e-5 relative (1e-3 absolute floor) of an f64 reference.

use std::path::Path;
use std::process::Command;

use kernels_runtime::digest::sha256_hex;
use kernels_runtime::ffi::{Arg, KernelError, TensorView};
use kernels_runtime::loader::{self, LoadError, Source};
use kernels_runtime::metadata::{VerifyError, Violation};
use kernels_runtime::platform::Platform;
use kernels_runtime::registry::{EmbeddedFile, EmbeddedVariant};
use kernels_runtime::select::Request;
use kernels_tests::*;

const TOL: f32 = 1e-5;

fn check_rms_and_silu(kernel: &loader::LoadedKernel) {
    let (rows, d) = (7, 96);
    let x = values(rows * d, 1);
    let w = values(d, 2);
    let mut out = vec![0f32; rows * d];
    let rms = kernel.function("rms_norm").unwrap();
    {
        let (xv, wv) = (TensorView::from_slice(&x, &[rows, d]).unwrap(), TensorView::from_slice(&w, &[d]).unwrap());
        let ov = TensorView::from_slice_mut(&mut out, &[rows, d]).unwrap();
        // SAFETY: rms_norm writes only `out`.
        unsafe { rms.call(&[Arg::from(&ov), Arg::from(&xv), Arg::from(&wv), Arg::from(1e-6f64)]) }.unwrap();
    }
    let diff = max_rel_diff(&out, &rms_norm_ref(&x, &w, 1e-6));
    assert!(diff < TOL, "rms_norm differs by {diff}");

    let x = values(rows * 2 * d, 3);
    let mut out = vec![0f32; rows * d];
    let silu = kernel.function("silu_and_mul").unwrap();
    {
        let xv = TensorView::from_slice(&x, &[rows, 2 * d]).unwrap();
        let ov = TensorView::from_slice_mut(&mut out, &[rows, d]).unwrap();
        // SAFETY: silu_and_mul writes only `out`.
        unsafe { silu.call(&[Arg::from(&ov), Arg::from(&xv)]) }.unwrap();
    }
    let diff = max_rel_diff(&out, &silu_and_mul_ref(&x, d));
    assert!(diff < TOL, "silu_and_mul differs by {diff}");
}

fn wrong_dtype(kernel: &loader::LoadedKernel) -> KernelError {
    let x = vec![1i64; 8];
    let mut out = vec![0i64; 4];
    let xv = TensorView::from_slice(&x, &[1, 8]).unwrap();
    let ov = TensorView::from_slice_mut(&mut out, &[1, 4]).unwrap();
    let silu = kernel.function("silu_and_mul").unwrap();
    // SAFETY: the kernel checks dtypes before touching memory.
    unsafe { silu.call(&[Arg::from(&ov), Arg::from(&xv)]) }.unwrap_err()
}

#[test]
fn rust_kernel_loads_from_a_hub_layout_and_matches_the_reference() {
    let (kernel, trace) =
        loader::load_from_dir("local/rust-cpu", rust_cpu_kernel(), &Platform::detect(), Request::cpu()).unwrap();
    assert_eq!(kernel.variant(), trace.chosen().unwrap());
    assert_eq!(kernel.source(), Source::Local);
    check_rms_and_silu(&kernel);
    let err = wrong_dtype(&kernel);
    assert!(
        matches!(&err, KernelError::Raised { kind, message, .. } if kind == "TypeError" && message.contains("int64")),
        "{err}"
    );
}

#[test]
fn cpp_kernel_against_real_tvm_ffi_loads_and_matches_the_reference() {
    let (kernel, trace) =
        loader::load_from_dir("local/cpp-cpu", &cpp_cpu_kernel(), &Platform::detect(), Request::cpu()).unwrap();
    assert_eq!(trace.chosen(), Some(kernel.variant()));
    assert!(kernels_runtime::ffi::needs_tvm_ffi(kernel.path()).unwrap(), "the C++ kernel links libtvm_ffi.so");
    assert!(kernels_runtime::ffi::preloaded_tvm_ffi().is_some(), "libtvm_ffi.so was preloaded for it");
    check_rms_and_silu(&kernel);
    let err = wrong_dtype(&kernel);
    let KernelError::Raised { kind, message, .. } = &err else { panic!("{err}") };
    assert_eq!(kind, "TypeError");
    assert!(message.contains("must be float32, float16 or bfloat16, got int64"), "{message}");
}

#[test]
fn a_missing_symbol_is_refused_with_its_own_error() {
    let (kernel, _) =
        loader::load_from_dir("local/cpp-cpu", &cpp_cpu_kernel(), &Platform::detect(), Request::cpu()).unwrap();
    let err = kernel.function("no_such_function").unwrap_err();
    assert!(matches!(err, LoadError::MissingSymbol(_)), "{err}");
    assert!(err.to_string().contains("__tvm_ffi_no_such_function"), "{err}");
}

fn only_variant(root: &Path) -> std::path::PathBuf {
    let mut dirs = loader::variant_dirs(root).unwrap();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    dirs.remove(0)
}

fn library_in(dir: &Path) -> std::path::PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "so"))
        .unwrap()
}

#[test]
fn a_tampered_byte_is_refused_before_dlopen() {
    let tmp = tempfile::tempdir().unwrap();
    copy_tree(&cpp_cpu_kernel(), tmp.path());
    let dir = only_variant(tmp.path());
    let lib = library_in(&dir);
    let mut bytes = std::fs::read(&lib).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    std::fs::write(&lib, bytes).unwrap();
    let err = loader::load_variant_dir(&dir).unwrap_err();
    let LoadError::Verify(VerifyError::Violations { violations, .. }) = &err else { panic!("{err}") };
    let name = lib.file_name().unwrap().to_str().unwrap();
    assert!(matches!(&violations[..], [Violation::Mismatch { path, .. }] if path == name), "{err}");
}

#[test]
fn a_truncated_file_is_refused_before_dlopen() {
    let tmp = tempfile::tempdir().unwrap();
    copy_tree(rust_cpu_kernel(), tmp.path());
    let dir = only_variant(tmp.path());
    let lib = library_in(&dir);
    let bytes = std::fs::read(&lib).unwrap();
    std::fs::write(&lib, &bytes[..bytes.len() / 3]).unwrap();
    let err = loader::load_variant_dir(&dir).unwrap_err();
    assert!(matches!(&err, LoadError::Verify(VerifyError::Violations { .. })), "{err}");

    // Embedded bytes that are cut short never reach the cache.
    let full = std::fs::read(library_in(&only_variant(rust_cpu_kernel()))).unwrap();
    let sha: &'static str = Box::leak(sha256_hex(&full).into_boxed_str());
    let short: &'static [u8] = Box::leak(full[..full.len() / 2].to_vec().into_boxed_slice());
    let cache = tempfile::tempdir().unwrap();
    let err = loader::unpack(&EmbeddedFile { path: "k.so", sha256: sha, bytes: short }, cache.path()).unwrap_err();
    assert!(matches!(err, LoadError::DigestMismatch { .. }), "{err}");
    assert_eq!(std::fs::read_dir(cache.path()).unwrap().count(), 0);
}

#[test]
fn embedded_kernels_load_from_the_content_addressed_cache() {
    let lib = library_in(&only_variant(rust_cpu_kernel()));
    let bytes: &'static [u8] = Box::leak(std::fs::read(&lib).unwrap().into_boxed_slice());
    let sha: &'static str = Box::leak(sha256_hex(bytes).into_boxed_str());
    let variant = EmbeddedVariant {
        variant: "tvm-ffi01-cpu-x86_64-linux",
        archs: &[],
        library: EmbeddedFile { path: "kernel.so", sha256: sha, bytes },
    };
    let cache = tempfile::tempdir().unwrap();
    let (file, path) = loader::unpack(&variant.library, cache.path()).unwrap();
    drop(file);
    assert_eq!(path, cache.path().join(format!("{sha}.so")));
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
}

/// Runs `unpack-child` on `lib` in `n` processes that start together, with `env` set (and
/// the cache variables cleared first); returns each child's output.
fn race_children(lib: &Path, n: usize, env: &[(&str, &std::ffi::OsStr)]) -> Vec<std::process::Output> {
    let start = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() + 1500;
    let children: Vec<_> = (0..n)
        .map(|_| {
            let mut cmd = Command::new(env!("CARGO_BIN_EXE_unpack-child"));
            cmd.arg(lib).arg(start.to_string());
            for key in ["KERNELS_RS_CACHE", "KERNELS_UNPACK", "XDG_CACHE_HOME"] {
                cmd.env_remove(key);
            }
            cmd.envs(env.iter().copied());
            cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().unwrap()
        })
        .collect();
    children.into_iter().map(|c| c.wait_with_output().unwrap()).collect()
}

fn assert_ok(out: &std::process::Output) {
    assert!(out.status.success(), "child failed: {}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
}

#[test]
fn thirty_two_processes_unpacking_the_same_kernel_to_files_all_succeed_and_leave_one_file() {
    let lib = library_in(&only_variant(rust_cpu_kernel()));
    let cache = tempfile::tempdir().unwrap();
    let env = [("KERNELS_UNPACK", "file".as_ref()), ("KERNELS_RS_CACHE", cache.path().as_os_str())];
    race_children(&lib, 32, &env).iter().for_each(assert_ok);
    let files: Vec<_> = std::fs::read_dir(cache.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    let sha = sha256_hex(&std::fs::read(&lib).unwrap());
    assert_eq!(files, vec![std::ffi::OsString::from(format!("{sha}.so"))], "exactly one file, no temp files");
}

#[test]
fn kernels_run_without_any_writable_cache_directory() {
    let lib = library_in(&only_variant(rust_cpu_kernel()));
    // A HOME that cannot hold a cache (a file), as with a read-only root file system:
    // memfd needs no directory at all.
    let home = tempfile::NamedTempFile::new().unwrap();
    race_children(&lib, 4, &[("HOME", home.path().as_os_str())]).iter().for_each(assert_ok);

    // Without memfd, a KERNELS_RS_CACHE that names a file falls through to the per-user temp dir.
    let tmp = tempfile::tempdir().unwrap();
    let env = [
        ("KERNELS_UNPACK", "file".as_ref()),
        ("KERNELS_RS_CACHE", home.path().as_os_str()),
        ("TMPDIR", tmp.path().as_os_str()),
    ];
    race_children(&lib, 4, &env).iter().for_each(assert_ok);
    let uid = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(tmp.path()).unwrap());
    let per_user = tmp.path().join(format!("kernels-rs-{uid}"));
    assert_eq!(std::fs::read_dir(&per_user).unwrap().count(), 1, "{}", per_user.display());

    // And when nothing is usable, the error names each place and the fix.
    let env = [
        ("KERNELS_UNPACK", "file".as_ref()),
        ("KERNELS_RS_CACHE", home.path().as_os_str()),
        ("TMPDIR", home.path().as_os_str()),
    ];
    let out = &race_children(&lib, 1, &env)[0];
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot unpack the embedded kernel.so"), "{stderr}");
    assert!(stderr.contains(&format!("{}: it is not a directory", home.path().display())), "{stderr}");
    assert!(stderr.contains("set KERNELS_RS_CACHE to a directory owned by this user"), "{stderr}");
}

#[test]
fn whatever_is_planted_at_a_cache_name_is_replaced_and_never_blocks() {
    let lib = library_in(&only_variant(rust_cpu_kernel()));
    let bytes: &'static [u8] = Box::leak(std::fs::read(&lib).unwrap().into_boxed_slice());
    let sha: &'static str = Box::leak(sha256_hex(bytes).into_boxed_str());
    let file = EmbeddedFile { path: "kernel.so", sha256: sha, bytes };
    let cache = tempfile::tempdir().unwrap();
    let target = cache.path().join(format!("{sha}.so"));
    let plant = |what: &str| {
        let _ = std::fs::remove_file(&target);
        let _ = std::fs::remove_dir_all(&target);
        match what {
            "a symlink to /dev/zero" => std::os::unix::fs::symlink("/dev/zero", &target).unwrap(),
            "a FIFO" => {
                let status = Command::new("mkfifo").arg(&target).status().unwrap();
                assert!(status.success());
            }
            "a directory" => std::fs::create_dir_all(target.join("inside")).unwrap(),
            _ => {
                // The right bytes, but writable by everyone: anyone could change them later.
                std::fs::write(&target, bytes).unwrap();
                let mode = std::os::unix::fs::PermissionsExt::from_mode(0o666);
                std::fs::set_permissions(&target, mode).unwrap();
            }
        }
    };
    for what in ["a symlink to /dev/zero", "a FIFO", "a directory", "a world-writable copy"] {
        plant(what);
        // Run in a thread, so a blocking open is a failure, not a hung test.
        let (tx, rx) = std::sync::mpsc::channel();
        let cache_dir = cache.path().to_owned();
        std::thread::spawn(move || tx.send(loader::unpack(&file, &cache_dir).map(|(_, path)| path)));
        let result = rx.recv_timeout(std::time::Duration::from_secs(20)).unwrap_or_else(|_| panic!("{what}: blocked"));
        let path = result.unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(path, target, "{what}");
        let meta = std::fs::symlink_metadata(&target).unwrap();
        assert!(meta.is_file(), "{what}: {meta:?}");
        assert_eq!(std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o022, 0, "{what}");
        assert_eq!(std::fs::read(&target).unwrap(), bytes, "{what}");
    }
}
