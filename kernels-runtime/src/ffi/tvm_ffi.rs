//! The tvm-ffi runtime library, `libtvm_ffi.so`: finding it and preloading it once per process,
//! so that kernels whose `DT_NEEDED` names it resolve to it (see [`needs_tvm_ffi`]).
//!
//! [`needs_tvm_ffi`]: super::needs_tvm_ffi

use std::ffi::{OsStr, OsString};
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use libloading::os::unix::{Library, RTLD_GLOBAL, RTLD_NOW};

use super::abi::{
    TVMFFIEnvGetStreamFn, TVMFFIEnvSetStreamFn, TVMFFIErrorMoveFromRaisedFn, TVMFFIErrorSetRaisedFromCStrFn,
    TVMFFIObjectDecRefFn, symbol,
};
use super::elf::TVM_FFI_LIBRARY;

/// The tool of the `apache-tvm-ffi` wheel that prints where the library is.
pub const TVM_FFI_CONFIG: &str = "tvm-ffi-config";

/// Finding or loading `libtvm_ffi.so` failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TvmFfiError {
    /// `KERNELS_TVM_FFI_LIB` names something that is not there.
    #[error("{env}={path}: {source}; point it at libtvm_ffi.so (`tvm-ffi-config --libfiles` prints it)", env = crate::env::TVM_FFI_LIB)]
    EnvPath {
        /// The path the variable names.
        path: PathBuf,
        /// Why it cannot be used.
        #[source]
        source: io::Error,
    },
    /// Neither the variable nor `tvm-ffi-config` gave a library.
    #[error(
        "libtvm_ffi.so not found: {env} is unset and {reason}; install the runtime with \
         `pip install apache-tvm-ffi` or set {env} to the library's path",
        env = crate::env::TVM_FFI_LIB
    )]
    NotFound {
        /// What went wrong with `tvm-ffi-config`.
        reason: String,
    },
    /// The dynamic loader refused the library.
    #[error("cannot load {path}: {source}")]
    Open {
        /// The library.
        path: PathBuf,
        /// The loader's message.
        #[source]
        source: libloading::Error,
    },
    /// The library lacks a function every tvm-ffi 0.1 release exports.
    #[error("{path} does not export `{symbol}`; is it libtvm_ffi.so from apache-tvm-ffi 0.1?")]
    MissingSymbol {
        /// The library.
        path: PathBuf,
        /// The missing symbol.
        symbol: &'static str,
        /// The loader's message.
        #[source]
        source: libloading::Error,
    },
}

/// How the process got its `libtvm_ffi.so`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TvmFfiOrigin {
    /// Opened from a path by [`preload_tvm_ffi_from`].
    Preloaded,
    /// Already in the process (linked by the executable, or loaded by someone else); that copy
    /// is used so there is only one tvm-ffi runtime.
    AlreadyLoaded,
}

/// The process's tvm-ffi runtime and the functions callers need from it.
#[derive(Debug)]
pub struct TvmFfiLibrary {
    path: PathBuf,
    origin: TvmFfiOrigin,
    // Kept for the life of the process (this value lives in a static and is never dropped).
    _library: Library,
    error_move_from_raised: TVMFFIErrorMoveFromRaisedFn,
    error_set_raised_from_cstr: TVMFFIErrorSetRaisedFromCStrFn,
    object_dec_ref: TVMFFIObjectDecRefFn,
    env_set_stream: TVMFFIEnvSetStreamFn,
    env_get_stream: TVMFFIEnvGetStreamFn,
}

impl TvmFfiLibrary {
    /// The path it was preloaded from (for [`TvmFfiOrigin::AlreadyLoaded`], the path asked for).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How it got into the process.
    pub fn origin(&self) -> TvmFfiOrigin {
        self.origin
    }

    /// `TVMFFIErrorMoveFromRaised`.
    pub fn error_move_from_raised(&self) -> TVMFFIErrorMoveFromRaisedFn {
        self.error_move_from_raised
    }

    /// `TVMFFIErrorSetRaisedFromCStr`.
    pub fn error_set_raised_from_cstr(&self) -> TVMFFIErrorSetRaisedFromCStrFn {
        self.error_set_raised_from_cstr
    }

    /// `TVMFFIObjectDecRef`.
    pub fn object_dec_ref(&self) -> TVMFFIObjectDecRefFn {
        self.object_dec_ref
    }

    /// `TVMFFIEnvSetStream`.
    pub fn env_set_stream(&self) -> TVMFFIEnvSetStreamFn {
        self.env_set_stream
    }

    /// `TVMFFIEnvGetStream`.
    pub fn env_get_stream(&self) -> TVMFFIEnvGetStreamFn {
        self.env_get_stream
    }
}

static PRELOADED: OnceLock<TvmFfiLibrary> = OnceLock::new();
static PRELOAD_LOCK: Mutex<()> = Mutex::new(());

/// Finds `libtvm_ffi.so`: `KERNELS_TVM_FFI_LIB` if set, else `tvm-ffi-config --libdir`.
/// (A copy embedded by the build is the loader's to unpack; it then calls
/// [`preload_tvm_ffi_from`] with the unpacked path.)
pub fn locate_tvm_ffi() -> Result<PathBuf, TvmFfiError> {
    locate_with(crate::env::var_os(crate::env::TVM_FFI_LIB), OsStr::new(TVM_FFI_CONFIG), CONFIG_TOOL_DEADLINE)
}

/// How long `tvm-ffi-config --libdir` may take before it is killed.
const CONFIG_TOOL_DEADLINE: Duration = Duration::from_secs(10);

/// Runs `tool arg`, killing it if it has not exited within `deadline`.
fn output_within(tool: &OsStr, arg: &str, deadline: Duration) -> io::Result<std::process::Output> {
    let mut child = Command::new(tool)
        .arg(arg)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    let start = Instant::now();
    loop {
        if child.try_wait()?.is_some() {
            return child.wait_with_output();
        }
        if start.elapsed() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(io::Error::new(io::ErrorKind::TimedOut, format!("no answer within {deadline:?}; killed")));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn locate_with(env_value: Option<OsString>, config_tool: &OsStr, deadline: Duration) -> Result<PathBuf, TvmFfiError> {
    if let Some(value) = env_value.filter(|v| !v.is_empty()) {
        let mut path = PathBuf::from(value);
        if path.is_dir() {
            path.push(TVM_FFI_LIBRARY);
        }
        return match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => Ok(std::path::absolute(&path).unwrap_or(path)),
            Ok(_) => Err(TvmFfiError::EnvPath {
                path,
                source: io::Error::new(io::ErrorKind::InvalidInput, "not a regular file"),
            }),
            Err(source) => Err(TvmFfiError::EnvPath { path, source }),
        };
    }
    let tool = Path::new(config_tool).display();
    let output = output_within(config_tool, "--libdir", deadline)
        .map_err(|e| TvmFfiError::NotFound { reason: format!("`{tool} --libdir` could not run ({e})") })?;
    if !output.status.success() {
        return Err(TvmFfiError::NotFound {
            reason: format!(
                "`{tool} --libdir` failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ),
        });
    }
    let libdir = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    let path = libdir.join(TVM_FFI_LIBRARY);
    if path.is_file() {
        Ok(path)
    } else {
        Err(TvmFfiError::NotFound {
            reason: format!("`{tool} --libdir` printed {}, which has no {TVM_FFI_LIBRARY}", libdir.display()),
        })
    }
}

/// The tvm-ffi runtime preloaded into this process, if any.
pub fn preloaded_tvm_ffi() -> Option<&'static TvmFfiLibrary> {
    PRELOADED.get()
}

/// Preloads the tvm-ffi runtime at `path` (made absolute) with `RTLD_NOW | RTLD_GLOBAL`, once
/// per process, and resolves the functions callers need. Later calls return the first library,
/// whatever path they pass. If a `libtvm_ffi.so` is already in the process, that one is used
/// instead of opening a second copy.
pub fn preload_tvm_ffi_from(path: &Path) -> Result<&'static TvmFfiLibrary, TvmFfiError> {
    if let Some(lib) = PRELOADED.get() {
        return Ok(lib);
    }
    // A poisoned lock only means another thread panicked while loading; the state it guards is
    // the OnceLock, which is consistent either way.
    let _guard = PRELOAD_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(lib) = PRELOADED.get() {
        return Ok(lib);
    }
    let path = std::path::absolute(path).unwrap_or_else(|_| path.to_owned());
    // SAFETY: RTLD_NOLOAD never runs initialisers: it only returns a handle to an object that is
    // already loaded (and initialised) under that soname.
    let existing = unsafe { Library::open(Some(TVM_FFI_LIBRARY), RTLD_NOW | libc::RTLD_NOLOAD) }.ok();
    let (library, origin) = match existing {
        Some(library) => (library, TvmFfiOrigin::AlreadyLoaded),
        None => {
            // SAFETY: loading libtvm_ffi.so runs its initialisers (type registration), which
            // have no preconditions; the caller chose the file.
            let library = unsafe { Library::open(Some(&path), RTLD_NOW | RTLD_GLOBAL) }
                .map_err(|source| TvmFfiError::Open { path: path.clone(), source })?;
            (library, TvmFfiOrigin::Preloaded)
        }
    };
    fn get<T: Copy>(library: &Library, path: &Path, symbol: &'static str) -> Result<T, TvmFfiError> {
        // SAFETY: each `T` below is the signature the tvm-ffi headers declare for `symbol`; the
        // library is kept alive for the process, so the copied pointer stays valid.
        unsafe { library.get::<T>(symbol.as_bytes()).map(|s| *s) }.map_err(|source| TvmFfiError::MissingSymbol {
            path: path.to_owned(),
            symbol,
            source,
        })
    }
    let lib = TvmFfiLibrary {
        error_move_from_raised: get(&library, &path, symbol::ERROR_MOVE_FROM_RAISED)?,
        error_set_raised_from_cstr: get(&library, &path, symbol::ERROR_SET_RAISED_FROM_CSTR)?,
        object_dec_ref: get(&library, &path, symbol::OBJECT_DEC_REF)?,
        env_set_stream: get(&library, &path, symbol::ENV_SET_STREAM)?,
        env_get_stream: get(&library, &path, symbol::ENV_GET_STREAM)?,
        path,
        origin,
        _library: library,
    };
    tracing::debug!(path = %lib.path.display(), origin = ?lib.origin, "tvm-ffi runtime ready");
    Ok(PRELOADED.get_or_init(|| lib))
}

/// The tvm-ffi runtime of this process: the one already preloaded, else [`locate_tvm_ffi`] +
/// [`preload_tvm_ffi_from`].
pub fn preload_tvm_ffi() -> Result<&'static TvmFfiLibrary, TvmFfiError> {
    match PRELOADED.get() {
        Some(lib) => Ok(lib),
        None => preload_tvm_ffi_from(&locate_tvm_ffi()?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_env_override_wins_and_must_exist() {
        let dir = tempfile::tempdir().unwrap();
        let lib = dir.path().join(TVM_FFI_LIBRARY);
        std::fs::write(&lib, b"not really a library").unwrap();
        let nowhere = OsStr::new("/nonexistent/tvm-ffi-config");
        assert_eq!(locate_with(Some(lib.clone().into()), nowhere, CONFIG_TOOL_DEADLINE).unwrap(), lib);
        // A directory means the library inside it.
        assert_eq!(locate_with(Some(dir.path().into()), nowhere, CONFIG_TOOL_DEADLINE).unwrap(), lib);
        let missing = dir.path().join("missing.so");
        let err = locate_with(Some(missing.into()), nowhere, CONFIG_TOOL_DEADLINE).unwrap_err();
        assert!(matches!(err, TvmFfiError::EnvPath { ref source, .. } if source.kind() == io::ErrorKind::NotFound));
        assert!(err.to_string().starts_with("KERNELS_TVM_FFI_LIB="), "{err}");
    }

    #[test]
    fn tvm_ffi_config_is_asked_next() {
        let dir = tempfile::tempdir().unwrap();
        let libdir = dir.path().join("lib");
        std::fs::create_dir(&libdir).unwrap();
        let tool = dir.path().join("tvm-ffi-config");
        let script = format!("#!/bin/sh\n[ \"$1\" = --libdir ] || exit 3\necho '{}'\n", libdir.display());
        std::fs::write(&tool, script).unwrap();
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
        // The directory has no library yet.
        let err = locate_with(None, tool.as_os_str(), CONFIG_TOOL_DEADLINE).unwrap_err();
        assert!(err.to_string().contains("which has no libtvm_ffi.so"), "{err}");
        std::fs::write(libdir.join(TVM_FFI_LIBRARY), b"").unwrap();
        assert_eq!(
            locate_with(Some(OsString::new()), tool.as_os_str(), CONFIG_TOOL_DEADLINE).unwrap(),
            libdir.join(TVM_FFI_LIBRARY)
        );
        let err = locate_with(None, OsStr::new("/nonexistent/tvm-ffi-config"), CONFIG_TOOL_DEADLINE).unwrap_err();
        assert!(matches!(err, TvmFfiError::NotFound { .. }));
        assert!(err.to_string().contains("pip install apache-tvm-ffi"), "{err}");
    }

    #[test]
    fn a_tvm_ffi_config_that_hangs_is_killed() {
        let dir = tempfile::tempdir().unwrap();
        let tool = dir.path().join("tvm-ffi-config");
        std::fs::write(&tool, "#!/bin/sh\nexec sleep 60\n").unwrap();
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
        let start = Instant::now();
        let err = locate_with(None, tool.as_os_str(), Duration::from_millis(300)).unwrap_err();
        assert!(start.elapsed() < Duration::from_secs(30), "waited {:?}", start.elapsed());
        assert!(matches!(err, TvmFfiError::NotFound { .. }), "{err}");
        assert!(err.to_string().contains("no answer within"), "{err}");
    }
}
