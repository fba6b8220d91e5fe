//! The CUDA runtime, `libcudart.so.<major>`, for kernels that link it dynamically (torch
//! stable-ABI kernels built for CUDA list it in `DT_NEEDED`): loaded once per soname per
//! process before such a kernel is opened. glibc then satisfies the kernel's `DT_NEEDED` entry
//! with the copy already loaded, which it knows by its `DT_SONAME` even when it was opened
//! `RTLD_LOCAL` or from a memfd.
//!
//! Where it comes from, the first that applies:
//!
//! 1. a copy already in the process (a later one would not be the one kernels bind to);
//! 2. `KERNELS_CUDART_LIB`: a file, or a directory holding the soname, loaded as it is;
//! 3. the copy the build embedded (when its name is the soname), checked against its digest
//!    and loaded from a sealed memfd or a private cache file like embedded kernels;
//! 4. the system's, by soname.
//!
//! Whatever was loaded must answer to the soname afterwards, or it is refused. It is never
//! unloaded.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use libloading::Library;

use crate::env;
use crate::registry::EmbeddedFile;
use crate::torch_stable_abi::CUDA_RUNTIME_PREFIX;
use crate::unpack::{self, Strategy};

/// The CUDA runtime the build embedded, if any.
static EMBEDDED: OnceLock<EmbeddedFile> = OnceLock::new();

/// The CUDA runtimes loaded so far, by soname, in load order.
static LOADED: Mutex<Vec<(String, &'static Library)>> = Mutex::new(Vec::new());

/// Hands over the `libcudart.so.<major>` the build embedded (its `path` is the soname), to be
/// used when a kernel needs that soname and `KERNELS_CUDART_LIB` does not name one. The first
/// call wins.
pub fn provide_cuda_runtime(file: EmbeddedFile) {
    let _ = EMBEDDED.set(file);
}

/// Whether `soname` is the CUDA runtime's: `libcudart.so.<major>`, the major all digits.
pub fn is_cuda_runtime(soname: &str) -> bool {
    soname
        .strip_prefix(CUDA_RUNTIME_PREFIX)
        .is_some_and(|major| !major.is_empty() && major.bytes().all(|b| b.is_ascii_digit()))
}

/// Makes sure the CUDA runtime `soname` (`libcudart.so.13`) is loaded, once per soname per
/// process, and returns it: see the module documentation for where it comes from. The error
/// names the soname and the ways to provide it.
pub(crate) fn ensure_cuda_runtime(soname: &str) -> Result<&'static Library, String> {
    // Held while loading, so that two threads never load two copies.
    let mut loaded = LOADED.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, lib)) = loaded.iter().find(|(name, _)| name == soname) {
        return Ok(lib);
    }
    let lib: &'static Library = Box::leak(Box::new(load(soname, env::path(env::CUDART_LIB), EMBEDDED.get())?));
    loaded.push((soname.to_owned(), lib));
    Ok(lib)
}

/// The first CUDA runtime [`ensure_cuda_runtime`] loaded in this process, if any. (The torch
/// stable-ABI host takes its CUDA entry points from each kernel's own dependencies instead, so
/// that they are the very copy the kernel launches through.)
#[cfg(test)]
pub(crate) fn loaded_cuda_runtime() -> Option<&'static Library> {
    LOADED.lock().unwrap_or_else(|e| e.into_inner()).first().map(|(_, lib)| *lib)
}

/// The PyPI wheel that carries `libcudart.so.<major>`, as `pip install` takes it
/// (`nvidia-cuda-runtime==13.*`; `nvidia-cuda-runtime-cu12` for CUDA 12).
pub fn wheel(major: &str) -> String {
    match major {
        "12" => "nvidia-cuda-runtime-cu12".to_owned(),
        _ => format!("nvidia-cuda-runtime=={major}.*"),
    }
}

/// Loads `soname` from the first place that has it: already loaded, `env_override`
/// (`KERNELS_CUDART_LIB`), `embedded` when its name is the soname, else the system's.
fn load(soname: &str, env_override: Option<PathBuf>, embedded: Option<&EmbeddedFile>) -> Result<Library, String> {
    let Some(major) = soname.strip_prefix(CUDA_RUNTIME_PREFIX).filter(|_| is_cuda_runtime(soname)) else {
        return Err(format!("`{soname}` is not a CUDA runtime soname ({CUDA_RUNTIME_PREFIX}<major>)"));
    };
    if let Some(lib) = already_loaded(soname) {
        return Ok(lib);
    }
    if let Some(given) = env_override {
        let path = if given.is_dir() { given.join(soname) } else { given.clone() };
        let lib = open_path(&path).map_err(|e| {
            format!(
                "{}={}: cannot load {}: {e}; point it at {soname} or the directory holding it",
                env::CUDART_LIB,
                given.display(),
                path.display()
            )
        })?;
        answers_to(soname, &path)?;
        return Ok(lib);
    }
    if let Some(file) = embedded.filter(|f| f.path == soname) {
        let unpacked = unpack::unpack(file, &unpack::dirs(), Strategy::from_env())
            .map_err(|e| format!("the embedded {soname}: {e}"))?;
        let shown = unpacked.path.clone();
        let opened = open_path(&unpacked.load_path());
        // Kept open even on failure: glibc may have recorded the name.
        unpacked.keep_open();
        let lib = opened.map_err(|e| format!("cannot load the embedded {soname} ({}): {e}", shown.display()))?;
        answers_to(soname, &shown)?;
        return Ok(lib);
    }
    // SAFETY: loading the CUDA runtime runs its initialisers, as loading the kernel that
    // needs it would; it is looked up by soname on the system's search path.
    let lib = unsafe { libloading::os::unix::Library::open(Some(soname), libc::RTLD_NOW | libc::RTLD_LOCAL) }.map_err(
        |e| {
            format!(
                "{soname} is not embedded in this binary and the system has none ({e}); set {} to a {soname} \
                 (or the directory holding it: a CUDA {major} toolkit's lib64/, or the lib/ of the {} wheel), \
                 add its directory to LD_LIBRARY_PATH, or rebuild where kernels-build finds it so that the \
                 binary carries it",
                env::CUDART_LIB,
                wheel(major)
            )
        },
    )?;
    Ok(Library::from(lib))
}

/// The copy of `soname` already in the process, if any, held for the life of the process.
fn already_loaded(soname: &str) -> Option<Library> {
    // SAFETY: RTLD_NOLOAD loads nothing: it only returns a handle to a library already loaded,
    // whose initialisers have run.
    let lib = unsafe { libloading::os::unix::Library::open(Some(soname), libc::RTLD_NOW | libc::RTLD_NOLOAD) };
    lib.ok().map(Library::from)
}

/// Opens the library at `path` (`RTLD_NOW | RTLD_LOCAL`).
fn open_path(path: &Path) -> Result<Library, libloading::Error> {
    // SAFETY: the file is the CUDA runtime, named by the user or verified against the digest
    // the build recorded; loading it runs its initialisers, as loading the kernel that needs
    // it would.
    let lib = unsafe { libloading::os::unix::Library::open(Some(path), libc::RTLD_NOW | libc::RTLD_LOCAL) }?;
    Ok(Library::from(lib))
}

/// Checks that the library just loaded from `shown` answers to `soname`, so that a kernel's
/// `DT_NEEDED` entry binds to it.
fn answers_to(soname: &str, shown: &Path) -> Result<(), String> {
    match already_loaded(soname) {
        // The extra reference is dropped: the caller holds its own.
        Some(_) => Ok(()),
        None => Err(format!(
            "{} loaded, but it is not {soname} (its DT_SONAME differs), so kernels that need {soname} would not use it",
            shown.display()
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::ffi::{CStr, CString};

    use super::*;

    /// Set in the child to the name of the test it runs.
    const CHILD: &str = "KERNELS_TEST_OWN_PROCESS";
    /// The real `libcudart.so.13` (scripts/test.sh sets it).
    const TEST_CUDART: &str = "KERNELS_TEST_CUDART";
    const SONAME: &str = "libcudart.so.13";

    /// Runs `body` in a fresh process of this test binary running only `test` (loading the
    /// CUDA runtime changes the process for every later test), with `KERNELS_CUDART_LIB` set
    /// to `cudart_lib` or unset; the parent asserts that it passed.
    fn in_own_process(test: &str, cudart_lib: Option<&Path>, body: impl FnOnce()) {
        if std::env::var(CHILD).as_deref() == Ok(test) {
            body();
            return;
        }
        let mut cmd = std::process::Command::new(std::env::current_exe().expect("the test binary"));
        cmd.args([test, "--exact", "--nocapture", "--test-threads=1"]).env(CHILD, test);
        cmd.env_remove(env::UNPACK);
        match cudart_lib {
            Some(path) => cmd.env(env::CUDART_LIB, path),
            None => cmd.env_remove(env::CUDART_LIB),
        };
        let out = cmd.output().expect("the test binary runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{test} failed in its own process:\n{stdout}\n{stderr}");
        assert!(stdout.contains("1 passed"), "{test} did not run in its own process:\n{stdout}\n{stderr}");
    }

    /// The real CUDA runtime to load, or `None` (the test is skipped) when it is not given.
    fn real_cudart() -> Option<PathBuf> {
        let path = env::path(TEST_CUDART);
        if path.is_none() {
            assert!(
                !env::flag("KERNELS_TEST_REQUIRE_STABLE_ABI"),
                "{TEST_CUDART} is unset but KERNELS_TEST_REQUIRE_STABLE_ABI=1: run scripts/test.sh"
            );
            eprintln!("skipped: {TEST_CUDART} is unset (scripts/test.sh sets it to the pinned wheel's {SONAME})");
        }
        path
    }

    /// Whether `soname` is loaded, and the file its `cudaGetDevice` comes from.
    fn cuda_get_device_file(soname: &str) -> Option<String> {
        let name = CString::new(soname).unwrap();
        // SAFETY: RTLD_NOLOAD loads nothing; the handle is closed again below.
        let handle = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD) };
        if handle.is_null() {
            return None;
        }
        // SAFETY: `handle` is a live handle; the symbol name is NUL-terminated.
        let symbol = unsafe { libc::dlsym(handle, c"cudaGetDevice".as_ptr()) };
        assert!(!symbol.is_null(), "{soname} is loaded but has no cudaGetDevice");
        // SAFETY: `Dl_info` is plain data (pointers and integers), valid when zeroed.
        let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
        // SAFETY: `symbol` is an address inside a loaded library; `info` is written by dladdr.
        assert_ne!(unsafe { libc::dladdr(symbol, &mut info) }, 0);
        // SAFETY: dladdr sets `dli_fname` to the library's NUL-terminated name.
        let file = unsafe { CStr::from_ptr(info.dli_fname) }.to_string_lossy().into_owned();
        // SAFETY: closes the reference taken above; the library stays loaded.
        unsafe { libc::dlclose(handle) };
        Some(file)
    }

    #[test]
    fn only_libcudart_with_a_numeric_major_is_the_cuda_runtime() {
        assert!(is_cuda_runtime("libcudart.so.13") && is_cuda_runtime("libcudart.so.12"));
        for other in ["libcudart.so", "libcudart.so.", "libcudart.so.13.0", "libcudart.so.x", "libcuda.so.1"] {
            assert!(!is_cuda_runtime(other), "{other}");
        }
        let err = load("libcudart.so", None, None).unwrap_err();
        assert!(err.contains("is not a CUDA runtime soname"), "{err}");
    }

    #[test]
    fn a_missing_cuda_runtime_is_an_error_naming_the_fixes() {
        let soname = "libcudart.so.99";
        // An embedded copy of another soname is not used for it.
        let other = EmbeddedFile { path: SONAME, sha256: "00", bytes: b"x" };
        let err = load(soname, None, Some(&other)).unwrap_err();
        assert!(
            err.starts_with("libcudart.so.99 is not embedded in this binary and the system has none")
                && err.contains("set KERNELS_CUDART_LIB to a libcudart.so.99")
                && err.contains("nvidia-cuda-runtime==99.*"),
            "{err}"
        );
        let dir = tempfile::tempdir().unwrap();
        let err = load(soname, Some(dir.path().to_owned()), None).unwrap_err();
        let shown =
            format!("KERNELS_CUDART_LIB={}: cannot load {}", dir.path().display(), dir.path().join(soname).display());
        assert!(err.starts_with(&shown) && err.ends_with("the directory holding it"), "{err}");
    }

    #[test]
    fn a_library_of_another_soname_is_refused() {
        // libc is already loaded: opening it again by path changes nothing.
        // SAFETY: `Dl_info` is plain data (pointers and integers), valid when zeroed.
        let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
        // SAFETY: `libc::malloc` is an address inside libc; `info` is written by dladdr.
        assert_ne!(unsafe { libc::dladdr(libc::malloc as *const libc::c_void, &mut info) }, 0);
        // SAFETY: dladdr sets `dli_fname` to the library's NUL-terminated name.
        let libc_path = PathBuf::from(unsafe { CStr::from_ptr(info.dli_fname) }.to_string_lossy().into_owned());
        let err = load("libcudart.so.98", Some(libc_path.clone()), None).unwrap_err();
        assert_eq!(
            err,
            format!(
                "{} loaded, but it is not libcudart.so.98 (its DT_SONAME differs), so kernels that need libcudart.so.98 would not use it",
                libc_path.display()
            )
        );
    }

    #[test]
    fn the_embedded_cuda_runtime_is_loaded_and_serves_its_soname() {
        let Some(real) = real_cudart() else { return };
        in_own_process("cuda_runtime::tests::the_embedded_cuda_runtime_is_loaded_and_serves_its_soname", None, || {
            assert_eq!(cuda_get_device_file(SONAME), None, "{SONAME} is loaded before the test");
            let bytes: &'static [u8] = Box::leak(std::fs::read(&real).unwrap().into_boxed_slice());
            let sha256: &'static str = Box::leak(crate::digest::sha256_hex(bytes).into_boxed_str());
            provide_cuda_runtime(EmbeddedFile { path: SONAME, sha256, bytes });
            assert!(loaded_cuda_runtime().is_none());

            let lib = ensure_cuda_runtime(SONAME).unwrap();
            assert!(std::ptr::eq(lib, ensure_cuda_runtime(SONAME).unwrap()), "loaded twice");
            assert!(loaded_cuda_runtime().is_some_and(|l| std::ptr::eq(l, lib)));
            // SAFETY: only the symbol's presence is checked; it is not called.
            assert!(unsafe { lib.get::<unsafe extern "C" fn(*mut i32) -> i32>(b"cudaGetDevice\0") }.is_ok());
            // A later `DT_NEEDED` (or dlopen) of the soname finds the embedded copy.
            let file = cuda_get_device_file(SONAME).expect("the soname is loaded");
            assert!(file.starts_with("/proc/self/fd/") || file.ends_with(&format!("{sha256}.13")), "{file}");
        });
    }

    #[test]
    fn kernels_cudart_lib_comes_before_the_embedded_copy() {
        let Some(real) = real_cudart() else { return };
        let dir = real.parent().unwrap().to_owned();
        in_own_process("cuda_runtime::tests::kernels_cudart_lib_comes_before_the_embedded_copy", Some(&dir), || {
            // Embedded bytes that would fail their digest: not looked at.
            provide_cuda_runtime(EmbeddedFile { path: SONAME, sha256: "00", bytes: b"not a library" });
            ensure_cuda_runtime(SONAME).unwrap();
            assert_eq!(cuda_get_device_file(SONAME).as_deref(), Some(dir.join(SONAME).to_str().unwrap()));
        });
    }
}
