//! Loading kernel variants: from a directory, from bytes embedded in the binary, or from a
//! `LOCAL_KERNELS` override; verified before `dlopen`, never unloaded.
//!
//! Embedded libraries are checked against the digest the build recorded, then loaded from a
//! sealed memfd on Linux (see `unpack`), or from a content-addressed file (named by sha256)
//! in a private cache directory: `$KERNELS_RS_CACHE`, else `$XDG_CACHE_HOME/kernels-rs`, else
//! `$HOME/.cache/kernels-rs`, then `<temp>/kernels-rs-<uid>`. A cache file is re-hashed through
//! the very descriptor handed to `dlopen` (`/proc/self/fd/N` on Linux), so what is loaded is
//! what was verified; that descriptor stays open for the life of the process.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use libloading::Library;

use crate::cuda_runtime;
use crate::env;
use crate::ffi::{KernelFunction, ResolveError};
use crate::hub_cache;
use crate::metadata::{self, Metadata, VerifyError};
use crate::platform::Platform;
use crate::registry::{CachedVariant, PinnedFile};
use crate::registry::{EmbeddedFile, EmbeddedVariant};
use crate::select::{Candidate, DecisionTrace, Rejection, Request, Selection, select};
use crate::torch_stable_abi::StableAbiOps;
use crate::unpack::{self, Strategy};
use crate::variant::{BackendKind, Framework, VariantName};

/// Where a loaded kernel came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// Bytes embedded in the binary, unpacked to the kernels cache.
    Embedded,
    /// The Hugging Face cache, pinned by the lock.
    Cached,
    /// A directory named by `LOCAL_KERNELS` or given explicitly.
    Local,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Source::Embedded => "embedded",
            Source::Cached => "cached",
            Source::Local => "local",
        })
    }
}

/// Loading a kernel failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The variant's files disagree with its digest, or it has none.
    #[error(transparent)]
    Verify(#[from] VerifyError),
    /// Embedded bytes, or the unpacked file, do not hash to what the build recorded.
    #[error(
        "{path}: sha256 is {actual}, expected {expected}; the file was modified or truncated (it is rewritten on the next load)"
    )]
    DigestMismatch {
        /// The file checked.
        path: PathBuf,
        /// Recorded hex sha256.
        expected: String,
        /// Hex sha256 found.
        actual: String,
    },
    /// A file of a Hub cache snapshot is not the one `kernels.lock` pinned when the binary
    /// was built.
    #[error(
        "{path}: sha256 {actual} ({actual_size} bytes), but kernels.lock pins sha256 {expected} ({expected_size} bytes); \
         the Hub cache no longer holds the pinned file, so it is not loaded. Run `cargo kernels download` to fetch the \
         pinned files again, or `cargo kernels lock` and rebuild to pin the new ones"
    )]
    PinMismatch {
        /// The file checked.
        path: PathBuf,
        /// Hex sha256 the lock pins.
        expected: String,
        /// Size the lock pins.
        expected_size: u64,
        /// Hex sha256 found.
        actual: String,
        /// Size found.
        actual_size: u64,
    },
    /// The pinned `metadata.json` names another library than the lock pins.
    #[error(
        "{dir}: metadata.json names the library `{found}`, but kernels.lock pins `{expected}`; run `cargo kernels lock` and rebuild"
    )]
    PinnedLibrary {
        /// Variant directory.
        dir: PathBuf,
        /// The library file the lock pins.
        expected: String,
        /// The library file `metadata.json` names.
        found: String,
    },
    /// `dlopen` refused the library.
    #[error("cannot load {path}: {message}")]
    Dlopen {
        /// The library.
        path: PathBuf,
        /// The dynamic loader's message.
        message: String,
    },
    /// The library needs `libtvm_ffi.so` and it could not be found or loaded.
    #[error("{path} needs libtvm_ffi.so: {message}")]
    TvmFfiRuntime {
        /// The kernel library.
        path: PathBuf,
        /// Why the tvm-ffi runtime is unavailable.
        message: String,
    },
    /// The library needs the CUDA runtime (`libcudart.so.<major>`) and it could not be found
    /// or loaded.
    #[error("{path} needs the CUDA runtime: {message}")]
    CudaRuntime {
        /// The kernel library.
        path: PathBuf,
        /// Why the CUDA runtime is unavailable, naming its soname and the fixes.
        message: String,
    },
    /// A function is not exported by the library.
    #[error(transparent)]
    MissingSymbol(#[from] ResolveError),
    /// A torch stable-ABI library needs what the host does not provide (the pre-load check).
    #[error(transparent)]
    StableAbiUnsupported(#[from] crate::torch_stable_abi::CheckError),
    /// The torch stable-ABI host cannot be loaded, or a stable-ABI library failed to load.
    #[error("{path}: {message}")]
    TorchHost {
        /// The kernel library.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A torch stable-ABI library registers no usable op of the name asked for.
    #[error("{path}: function `{function}`: {message}")]
    MissingOp {
        /// The kernel library.
        path: PathBuf,
        /// The function asked for.
        function: String,
        /// Why it cannot be called.
        message: String,
    },
    /// No variant of the kernel fits this machine.
    #[error("no usable variant of {kernel}:\n{trace}")]
    NoUsableVariant {
        /// Kernel repo or name.
        kernel: String,
        /// Why each candidate was rejected.
        trace: Box<DecisionTrace>,
    },
    /// Reading or writing files failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// A `LOCAL_KERNELS` entry is malformed.
    #[error("LOCAL_KERNELS: {0}")]
    LocalKernels(String),
    /// An embedded library could be put neither in a memfd nor in any private cache directory.
    #[error(
        "cannot unpack the embedded {library}: {}; set KERNELS_RS_CACHE to a directory owned by this user and not writable by others",
        refused.iter().map(|(place, why)| format!("{}: {why}", place.display())).collect::<Vec<_>>().join("; ")
    )]
    NoUnpackDir {
        /// The library's file name in its variant.
        library: String,
        /// Each place tried, with why it was refused.
        refused: Vec<(PathBuf, String)>,
    },
}

impl LoadError {
    /// Whether the error only means "the files are not there" (as opposed to present but
    /// wrong, or unreadable).
    pub fn is_not_found(&self) -> bool {
        matches!(self, LoadError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> LoadError + '_ {
    move |source| LoadError::Io { path: path.to_owned(), source }
}

/// A loaded kernel library (never unloaded) and what is known about it.
#[derive(Debug, Clone)]
pub struct LoadedKernel {
    library: &'static Library,
    path: PathBuf,
    variant: String,
    source: Source,
    /// What a torch stable-ABI library registered while it loaded.
    ops: Option<Arc<StableAbiOps>>,
}

impl LoadedKernel {
    fn new(opened: Opened, path: PathBuf, variant: String, source: Source) -> Self {
        LoadedKernel { library: opened.library, path, variant, source, ops: opened.ops }
    }

    /// Resolves function `name`: `__tvm_ffi_<name>` of a tvm-ffi library, or, for a torch
    /// stable-ABI library, the op `name` it registered in its namespace for the variant's
    /// dispatch key (`CPU`, `CUDA`).
    pub fn function(&self, name: &str) -> Result<KernelFunction, LoadError> {
        if let Some(ops) = &self.ops {
            let key = match VariantName::parse(&self.variant).ok().and_then(|v| v.backend()).map(|b| b.kind()) {
                Some(BackendKind::Cpu) => "CPU",
                Some(BackendKind::Cuda | BackendKind::Rocm) => "CUDA",
                Some(BackendKind::Xpu) => "XPU",
                Some(BackendKind::Metal) => "MPS",
                _ => "CPU",
            };
            let op = ops.resolve(name, key).map_err(|message| LoadError::MissingOp {
                path: self.path.clone(),
                function: name.to_owned(),
                message,
            })?;
            return Ok(KernelFunction::stable_abi(name, &self.path, op));
        }
        // SAFETY: the library was loaded by this module from verified bytes and is never
        // unloaded; the symbol is a TVM-FFI safe-call export by the ABI's naming rule.
        Ok(unsafe { KernelFunction::resolve(self.library, &self.path, name) }?)
    }

    /// The file `dlopen` loaded.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The variant name (`tvm-ffi01-cpu-x86_64-linux`).
    pub fn variant(&self) -> &str {
        &self.variant
    }

    /// Where it came from.
    pub fn source(&self) -> Source {
        self.source
    }
}

/// Which ABI a library follows, from its variant name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Abi {
    /// `tvm-ffi<MM>` (and anything else selection let through).
    TvmFfi,
    /// `torch-stable-abi<MM>`: served by the torch stable-ABI host.
    TorchStable,
}

impl Abi {
    fn of(variant: &str) -> Self {
        match VariantName::parse(variant).ok().and_then(|v| v.framework()) {
            Some(Framework::TorchStableAbi(_)) => Abi::TorchStable,
            _ => Abi::TvmFfi,
        }
    }
}

/// A library loaded by this module, with what it registered if it is a stable-ABI one.
#[derive(Debug, Clone)]
struct Opened {
    library: &'static Library,
    display_path: PathBuf,
    ops: Option<Arc<StableAbiOps>>,
}

/// Loads a verified library once per `key` (its sha256, or its path), keeping the handle for
/// the life of the process. `path` is what `dlopen` opens, `display_path` what messages show.
///
/// A torch stable-ABI library is first checked against what the host provides
/// (`torch_stable_abi::check_library`, on the very file that is then opened), then opened
/// after the host, with its registrations recorded. A library that lists the CUDA runtime
/// (`libcudart.so.<major>`) in `DT_NEEDED` is opened after it is loaded
/// (`cuda_runtime::ensure_cuda_runtime`).
fn open(key: &str, path: &Path, display_path: &Path, abi: Abi) -> Result<Opened, LoadError> {
    if let Some(found) = opened(key) {
        return Ok(found);
    }
    if abi == Abi::TorchStable {
        let mut file = std::fs::File::open(path).map_err(io_err(display_path))?;
        crate::torch_stable_abi::check_library_from(&mut file, display_path)?;
    } else {
        let needs = crate::ffi::needs_tvm_ffi(path).map_err(io_err(display_path))?;
        if needs {
            ensure_tvm_ffi().map_err(|message| LoadError::TvmFfiRuntime { path: display_path.to_owned(), message })?;
        }
    }
    // A kernel that links the CUDA runtime dynamically gets it loaded first, so that its
    // `DT_NEEDED` entry binds to the copy chosen here (see `cuda_runtime`).
    let needed = crate::ffi::needed_libraries(path).map_err(io_err(display_path))?;
    for soname in needed.iter().filter(|name| cuda_runtime::is_cuda_runtime(name)) {
        cuda_runtime::ensure_cuda_runtime(soname)
            .map_err(|message| LoadError::CudaRuntime { path: display_path.to_owned(), message })?;
    }
    let mut opened = OPENED.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    if let Some(found) = opened.get(key) {
        return Ok(found.clone());
    }
    let (lib, ops) = if abi == Abi::TorchStable {
        let (lib, ops) = crate::torch_stable_abi::host::open_kernel(path, display_path)
            .map_err(|message| LoadError::TorchHost { path: display_path.to_owned(), message })?;
        (lib, Some(Arc::new(ops)))
    } else {
        // SAFETY: the bytes were verified against the digest recorded at build time or in the
        // variant's metadata; loading runs the library's initialisers, which is the point.
        let lib = unsafe { libloading::os::unix::Library::open(Some(path), libc::RTLD_NOW | libc::RTLD_LOCAL) }
            .map_err(|e| LoadError::Dlopen { path: display_path.to_owned(), message: e.to_string() })?;
        (Library::from(lib), None)
    };
    let lib: &'static Library = Box::leak(Box::new(lib));
    let entry = Opened { library: lib, display_path: display_path.to_owned(), ops };
    opened.insert(key.to_owned(), entry.clone());
    Ok(entry)
}

/// Libraries loaded so far, by key.
static OPENED: OnceLock<Mutex<BTreeMap<String, Opened>>> = OnceLock::new();

fn opened(key: &str) -> Option<Opened> {
    OPENED.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner()).get(key).cloned()
}

static EMBEDDED_TVM_FFI: OnceLock<EmbeddedFile> = OnceLock::new();

/// Hands over the `libtvm_ffi.so` the build embedded, to be used when a kernel needs it and
/// `KERNELS_TVM_FFI_LIB` does not name one. The first call wins.
pub fn provide_tvm_ffi(file: EmbeddedFile) {
    let _ = EMBEDDED_TVM_FFI.set(file);
}

/// Makes sure `libtvm_ffi.so` is loaded: already preloaded; else `KERNELS_TVM_FFI_LIB`; else
/// the copy the build embedded (unpacked like kernels, verified); else `tvm-ffi-config`.
fn ensure_tvm_ffi() -> Result<(), String> {
    if crate::ffi::preloaded_tvm_ffi().is_some() {
        return Ok(());
    }
    let env_override = env::var_os(env::TVM_FFI_LIB).is_some();
    if let (false, Some(file)) = (env_override, EMBEDDED_TVM_FFI.get()) {
        let unpacked = unpack::unpack(file, &unpack::dirs(), Strategy::from_env()).map_err(|e| e.to_string())?;
        let result = crate::ffi::preload_tvm_ffi_from(&unpacked.load_path()).map(|_| ()).map_err(|e| e.to_string());
        unpacked.keep_open();
        return result;
    }
    crate::ffi::preload_tvm_ffi().map(|_| ()).map_err(|e| e.to_string())
}

/// Loads a Hub-layout variant directory (`build/<variant>/`), verifying every file against
/// its `metadata.json` first; the library is `<id>.so`, which the digest must list.
pub fn load_variant_dir(dir: &Path) -> Result<LoadedKernel, LoadError> {
    let meta = metadata::read_and_verify(dir)?;
    let os = crate::variant::Os::current();
    let file = meta.checked_library_file(dir, &os)?;
    let path = dir.join(file);
    let variant = crate::variant::dir_name(dir);
    let opened = open(&path.to_string_lossy(), &path, &path, Abi::of(&variant))?;
    Ok(LoadedKernel::new(opened, path, variant, Source::Local))
}

/// The variant directories of a Hub-layout kernel directory (`<root>/build/*`), or the
/// directory itself when it is one variant (holds `metadata.json`).
pub fn variant_dirs(root: &Path) -> Result<Vec<PathBuf>, LoadError> {
    if root.join(metadata::METADATA_FILE).is_file() {
        return Ok(vec![root.to_owned()]);
    }
    let build = root.join("build");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&build)
        .map_err(io_err(&build))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect();
    dirs.sort();
    Ok(dirs)
}

/// Selects among the variants of a Hub-layout directory and loads the chosen one.
pub fn load_from_dir(
    kernel: &str,
    root: &Path,
    platform: &Platform,
    request: Request,
) -> Result<(LoadedKernel, DecisionTrace), LoadError> {
    let dirs = variant_dirs(root)?;
    let candidates: Vec<Candidate> = dirs
        .iter()
        .map(|d| {
            let name = crate::variant::dir_name(d);
            let archs = Metadata::read(d).ok().and_then(|m| m.backend).map(|b| b.archs);
            Candidate { name, archs }
        })
        .collect();
    let selection = select(platform, request, &candidates);
    load_in_rank_order(kernel, selection, &candidates, |i| load_variant_dir(&dirs[i]))
}

/// Loads the usable candidates of `selection` best first until one loads. A torch stable-ABI
/// library refused by the check before loading is recorded in the trace as refused, and the
/// next one is tried; when every one is refused, the first refusal is the error. Any other
/// load error is returned as it is.
fn load_in_rank_order(
    kernel: &str,
    selection: Selection,
    candidates: &[Candidate],
    mut load: impl FnMut(usize) -> Result<LoadedKernel, LoadError>,
) -> Result<(LoadedKernel, DecisionTrace), LoadError> {
    let mut trace = selection.trace;
    let ranked: Vec<usize> = trace.usable().filter_map(|name| candidates.iter().position(|c| c.name == name)).collect();
    let mut first_refusal = None;
    for i in ranked {
        match load(i) {
            Ok(loaded) => return Ok((loaded, trace)),
            Err(LoadError::StableAbiUnsupported(e)) => {
                trace.refuse(&candidates[i].name, Rejection::Refused(e.to_string()));
                first_refusal.get_or_insert(LoadError::StableAbiUnsupported(e));
            }
            Err(e) => return Err(e),
        }
    }
    Err(first_refusal
        .unwrap_or_else(|| LoadError::NoUsableVariant { kernel: kernel.to_owned(), trace: Box::new(trace) }))
}

/// Loads `repo` at the pinned `commit` from the Hub cache (kernels built with
/// `[build] embed = false` are prefetched there): one of `variants` (what the build pinned
/// from `kernels.lock`) is selected, and loaded from
/// `<cache>/kernels--<org>--<name>/snapshots/<commit>/build/<variant>/` only when its
/// `metadata.json` and library have the pinned sha256 and size and the directory matches the
/// `metadata.json` digest. The library is hashed through the descriptor that is loaded.
/// Never touches the network.
pub fn load_cached(
    repo: &str,
    commit: &str,
    variants: &[CachedVariant],
    platform: &Platform,
    request: Request,
) -> Result<(LoadedKernel, DecisionTrace), LoadError> {
    let cache = hub_cache::dir().ok_or_else(|| LoadError::Io {
        path: PathBuf::from("$HF_HUB_CACHE"),
        source: std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no Hub cache: KERNELS_CACHE, HF_HUB_CACHE, HF_HOME and HOME are all unset",
        ),
    })?;
    let root = hub_cache::snapshot(&cache, repo, commit);
    let candidates: Vec<Candidate> =
        variants.iter().map(|v| Candidate::new(v.variant).with_archs(v.archs.iter().copied())).collect();
    let selection = select(platform, request, &candidates);
    load_in_rank_order(repo, selection, &candidates, |i| {
        load_pinned(&root.join("build").join(variants[i].variant), &variants[i])
    })
}

/// Checks a file's size and hex sha256 against its pin.
fn check_pin(path: &Path, pin: &PinnedFile, size: u64, sha256: String) -> Result<(), LoadError> {
    if size == pin.size && sha256 == pin.sha256 {
        return Ok(());
    }
    Err(LoadError::PinMismatch {
        path: path.to_owned(),
        expected: pin.sha256.to_owned(),
        expected_size: pin.size,
        actual: sha256,
        actual_size: size,
    })
}

/// Loads a Hub cache variant directory when its files are the ones `pinned` records.
fn load_pinned(dir: &Path, pinned: &CachedVariant) -> Result<LoadedKernel, LoadError> {
    // The metadata bytes checked against the lock are the bytes parsed.
    let meta_path = dir.join(metadata::METADATA_FILE);
    let bytes = std::fs::read(&meta_path).map_err(io_err(&meta_path))?;
    check_pin(&meta_path, &pinned.metadata, bytes.len() as u64, crate::digest::sha256_hex(&bytes))?;
    let meta = Metadata::parse(&String::from_utf8_lossy(&bytes), &meta_path).map_err(VerifyError::from)?;
    metadata::verify_dir(dir, &meta)?;
    let file = meta.checked_library_file(dir, &crate::variant::Os::current())?;
    if file != pinned.library.path {
        return Err(LoadError::PinnedLibrary {
            dir: dir.to_owned(),
            expected: pinned.library.path.to_owned(),
            found: file,
        });
    }
    // The library is hashed through the descriptor that is then loaded.
    let path = dir.join(&file);
    let lib = std::fs::File::open(&path).map_err(io_err(&path))?;
    let size = lib.metadata().map_err(io_err(&path))?.len();
    let sha256 = crate::digest::sha256_hex_reader(&lib).map_err(io_err(&path))?;
    check_pin(&path, &pinned.library, size, sha256)?;
    #[cfg(target_os = "linux")]
    let load_path = {
        use std::os::fd::AsRawFd as _;
        PathBuf::from(format!("/proc/self/fd/{}", lib.as_raw_fd()))
    };
    #[cfg(not(target_os = "linux"))]
    let load_path = path.clone();
    let opened = open(pinned.library.sha256, &load_path, &path, Abi::of(pinned.variant));
    // Never closed: glibc knows the library by its `/proc/self/fd/N` name (see `unpack`).
    std::mem::forget(lib);
    Ok(LoadedKernel::new(opened?, path, pinned.variant.to_owned(), Source::Cached))
}

/// Parses `LOCAL_KERNELS` (`org/repo=path:org/repo2=path2`) into repo → path.
pub fn parse_local_kernels(value: &str) -> Result<BTreeMap<String, PathBuf>, LoadError> {
    let mut out = BTreeMap::new();
    for entry in value.split(':').filter(|e| !e.trim().is_empty()) {
        let (repo, path) = entry
            .split_once('=')
            .ok_or_else(|| LoadError::LocalKernels(format!("`{entry}` is not `org/repo=path`")))?;
        let (repo, path) = (repo.trim(), path.trim());
        if repo.is_empty() || path.is_empty() {
            return Err(LoadError::LocalKernels(format!("`{entry}` is not `org/repo=path`")));
        }
        out.insert(repo.to_owned(), PathBuf::from(path));
    }
    Ok(out)
}

/// Writes `file` to `<cache>/<sha256>.<ext>` unless an intact copy is already there, and
/// returns it opened, checked through that descriptor: a regular file of this user, not
/// writable by others, with the recorded digest. `cache` is created mode 0700 and must be
/// this user's and not writable by others.
pub fn unpack(file: &EmbeddedFile, cache: &Path) -> Result<(std::fs::File, PathBuf), LoadError> {
    let unpacked = unpack::unpack(file, &[cache.to_owned()], Strategy::File)?;
    Ok((unpacked.fd.into(), unpacked.path))
}

/// Unpacks (if needed), verifies and loads an embedded variant.
pub fn load_embedded(variant: &EmbeddedVariant) -> Result<LoadedKernel, LoadError> {
    let key = variant.library.sha256;
    let opened = match opened(key) {
        Some(found) => found,
        None => {
            let unpacked = unpack::unpack(&variant.library, &unpack::dirs(), Strategy::from_env())?;
            let opened = open(key, &unpacked.load_path(), &unpacked.path, Abi::of(variant.variant));
            // Kept open even on failure: glibc may have recorded the name.
            unpacked.keep_open();
            opened?
        }
    };
    let path = opened.display_path.clone();
    Ok(LoadedKernel::new(opened, path, variant.variant.to_owned(), Source::Embedded))
}

/// Selects among embedded variants and loads the chosen one.
pub fn select_embedded(
    kernel: &str,
    variants: &[EmbeddedVariant],
    platform: &Platform,
    request: Request,
) -> Result<(LoadedKernel, DecisionTrace), LoadError> {
    let candidates: Vec<Candidate> =
        variants.iter().map(|v| Candidate::new(v.variant).with_archs(v.archs.iter().copied())).collect();
    let selection = select(platform, request, &candidates);
    load_in_rank_order(kernel, selection, &candidates, |i| load_embedded(&variants[i]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_kernels_syntax() {
        let m = parse_local_kernels("org/a=/x/a:org/b=rel/b").unwrap();
        assert_eq!(m["org/a"], PathBuf::from("/x/a"));
        assert_eq!(m["org/b"], PathBuf::from("rel/b"));
        assert!(parse_local_kernels("").unwrap().is_empty());
        let err = parse_local_kernels("org/a").unwrap_err().to_string();
        assert!(err.contains("`org/a` is not `org/repo=path`"), "{err}");
        assert!(parse_local_kernels("=x").is_err());
    }

    #[test]
    fn unpack_writes_once_and_repairs_damage() {
        static BYTES: &[u8] = b"pretend library bytes";
        let sha = crate::digest::sha256_hex(BYTES);
        let sha: &'static str = Box::leak(sha.into_boxed_str());
        let file = EmbeddedFile { path: "_k.so", sha256: sha, bytes: BYTES };
        let cache = tempfile::tempdir().unwrap();
        let (_, path) = unpack(&file, cache.path()).unwrap();
        assert_eq!(path, cache.path().join(format!("{sha}.so")));
        assert_eq!(std::fs::read(&path).unwrap(), BYTES);
        // Damage it: the next unpack rewrites it.
        std::fs::write(&path, b"pretend library bytes, truncated?").unwrap();
        unpack(&file, cache.path()).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), BYTES);
        // No temp files are left behind.
        let names: Vec<_> = std::fs::read_dir(cache.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names.len(), 1, "{names:?}");
    }

    #[test]
    fn embedded_bytes_that_do_not_match_are_refused() {
        let file = EmbeddedFile { path: "_k.so", sha256: "00", bytes: b"x" };
        let cache = tempfile::tempdir().unwrap();
        let err = unpack(&file, cache.path()).unwrap_err();
        assert!(matches!(err, LoadError::DigestMismatch { .. }), "{err}");
        assert_eq!(std::fs::read_dir(cache.path()).unwrap().count(), 0, "nothing is written");
    }
}
