//! Turning a library's verified bytes into a file descriptor the dynamic loader can open, and
//! keeping that descriptor open for the life of the process.
//!
//! On Linux the bytes go into a sealed `memfd` (no directory needed, and no one can write it
//! once sealed). Where memfd cannot be mapped executable (`vm.memfd_noexec=2`), or with
//! `KERNELS_UNPACK=file`, they go to a content-addressed file in a private cache directory
//! (owned by this user, not writable by group or others), which is trusted only if it is a
//! regular file of this user, of the right size, not writable by others, and hashing to the
//! expected digest through the descriptor that is then loaded. Anything else at that name is
//! replaced atomically.
//!
//! The loader opens `/proc/self/fd/N`. glibc remembers loaded objects by that name, so the
//! descriptor is never closed: a later library given the same number would otherwise receive
//! the first one's handle.

use std::fs::File;
use std::io::{Seek, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::env;
use crate::loader::LoadError;
use crate::registry::EmbeddedFile;

/// The directory embedded libraries are unpacked into when memfd is not used (see the module
/// docs).
pub(crate) fn dir() -> PathBuf {
    if let Some(dir) = env::path(env::UNPACK_DIR) {
        return dir;
    }
    if let Some(dir) = env::path(env::XDG_CACHE_HOME) {
        return dir.join("kernels-rs");
    }
    if let Some(home) = env::path(env::HOME) {
        return home.join(".cache").join("kernels-rs");
    }
    per_user_temp_dir()
}

fn per_user_temp_dir() -> PathBuf {
    // SAFETY: getuid has no preconditions.
    let uid = unsafe { libc::getuid() };
    std::env::temp_dir().join(format!("kernels-rs-{uid}"))
}

/// The cache directories to try, in order: [`dir`], then `<temp>/kernels-rs-<uid>`.
pub(crate) fn dirs() -> Vec<PathBuf> {
    let mut dirs = vec![dir()];
    let temp = per_user_temp_dir();
    if !dirs.contains(&temp) {
        dirs.push(temp);
    }
    dirs
}

/// Where verified bytes were put.
#[derive(Debug)]
pub(crate) struct Unpacked {
    /// An open descriptor of the verified bytes: sealed memfd or trusted cache file.
    pub(crate) fd: OwnedFd,
    /// What reports show: `memfd:<name>`, or the cache file.
    pub(crate) path: PathBuf,
}

impl Unpacked {
    /// The name to hand to `dlopen` for this descriptor. The descriptor must stay open for
    /// as long as the name is in use: see [`Unpacked::keep_open`].
    pub(crate) fn load_path(&self) -> PathBuf {
        if cfg!(target_os = "linux") {
            PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()))
        } else {
            self.path.clone()
        }
    }

    /// Leaks the descriptor, so its number is never reused while glibc knows a library by it.
    pub(crate) fn keep_open(self) {
        std::mem::forget(self.fd);
    }
}

/// How embedded libraries are materialised (`KERNELS_UNPACK`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Strategy {
    /// Sealed memfd first, then the cache directories (the default on Linux).
    Memfd,
    /// Cache directories only (`KERNELS_UNPACK=file`): less memory for very large libraries.
    File,
}

impl Strategy {
    pub(crate) fn from_env() -> Self {
        match env::var(env::UNPACK).as_deref() {
            Some("file") => Strategy::File,
            Some("memfd") | None => Strategy::Memfd,
            Some(other) => {
                tracing::warn!("KERNELS_UNPACK={other:?} is not `memfd` or `file`; using memfd");
                Strategy::Memfd
            }
        }
    }
}

/// Puts `file` where it can be loaded: a sealed memfd, else the first of `dirs` that is
/// private and writable. The embedded bytes are checked against their digest before they are
/// written anywhere; an intact copy already in a cache directory is checked through the
/// descriptor that is loaded instead, so a warm start hashes the library once, not twice.
pub(crate) fn unpack(file: &EmbeddedFile, dirs: &[PathBuf], strategy: Strategy) -> Result<Unpacked, LoadError> {
    let mut refused = Vec::new();
    if strategy == Strategy::Memfd && cfg!(target_os = "linux") {
        verify_bytes(file)?;
        match sealed_memfd(&memfd_name(file), file.bytes) {
            Ok(fd) => return Ok(Unpacked { fd, path: PathBuf::from(format!("memfd:{}", memfd_name(file))) }),
            Err(e) => {
                tracing::debug!("memfd unavailable ({e}); unpacking to a cache directory");
                refused.push((PathBuf::from("memfd"), e.to_string()));
            }
        }
    }
    let mut verified = strategy == Strategy::Memfd && cfg!(target_os = "linux");
    for dir in dirs {
        if let Err(e) = private_dir(dir) {
            refused.push((dir.clone(), e.to_string()));
            continue;
        }
        if let Some(unpacked) = trusted_copy(dir, file) {
            return Ok(unpacked);
        }
        if !verified {
            verify_bytes(file)?;
            verified = true;
        }
        match write_copy(dir, file) {
            Ok(unpacked) => return Ok(unpacked),
            Err(e) => refused.push((dir.clone(), e.to_string())),
        }
    }
    Err(LoadError::NoUnpackDir { library: file.path.to_owned(), refused })
}

/// Checks embedded bytes against the digest the build recorded.
pub(crate) fn verify_bytes(file: &EmbeddedFile) -> Result<(), LoadError> {
    let actual = crate::digest::sha256_hex(file.bytes);
    if actual != file.sha256 {
        return Err(LoadError::DigestMismatch {
            path: PathBuf::from(format!("<embedded {}>", file.path)),
            expected: file.sha256.to_owned(),
            actual,
        });
    }
    Ok(())
}

fn file_name(file: &EmbeddedFile) -> String {
    let ext = Path::new(file.path).extension().and_then(|e| e.to_str()).unwrap_or("so");
    format!("{}.{ext}", file.sha256)
}

fn memfd_name(file: &EmbeddedFile) -> String {
    format!("kernels-rs:{}", file_name(file))
}

/// Writes `bytes` into a new memfd, seals it against any change, and checks that it can be
/// mapped executable.
#[cfg(target_os = "linux")]
fn sealed_memfd(name: &str, bytes: &[u8]) -> std::io::Result<OwnedFd> {
    use std::os::fd::FromRawFd as _;
    // Linux 6.3: ask for an executable memfd explicitly (older kernels reject the flag).
    const MFD_EXEC: libc::c_uint = 0x0010;
    let cname = std::ffi::CString::new(name).map_err(std::io::Error::other)?;
    let flags = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    // SAFETY: `cname` is a valid C string; the flags are defined by memfd_create(2).
    let mut raw = unsafe { libc::memfd_create(cname.as_ptr(), flags | MFD_EXEC) };
    if raw < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
        // SAFETY: as above.
        raw = unsafe { libc::memfd_create(cname.as_ptr(), flags) };
    }
    if raw < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: memfd_create returned a new descriptor that nothing else owns.
    let mut file = File::from(unsafe { OwnedFd::from_raw_fd(raw) });
    file.write_all(bytes)?;
    let seals = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
    // SAFETY: F_ADD_SEALS takes an int of seal bits on a memfd created with MFD_ALLOW_SEALING.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // `vm.memfd_noexec` can forbid executable mappings: find out now, not inside dlopen.
    // SAFETY: a private read/exec mapping of the first byte of our own descriptor, unmapped
    // right away; nothing reads through it.
    let map = unsafe {
        libc::mmap(std::ptr::null_mut(), 1, libc::PROT_READ | libc::PROT_EXEC, libc::MAP_PRIVATE, file.as_raw_fd(), 0)
    };
    if map == libc::MAP_FAILED {
        let e = std::io::Error::last_os_error();
        return Err(std::io::Error::new(e.kind(), format!("memfd cannot be mapped executable ({e})")));
    }
    // SAFETY: `map` is the 1-byte mapping made above.
    unsafe { libc::munmap(map, 1) };
    Ok(file.into())
}

#[cfg(not(target_os = "linux"))]
fn sealed_memfd(_name: &str, _bytes: &[u8]) -> std::io::Result<OwnedFd> {
    Err(std::io::Error::new(std::io::ErrorKind::Unsupported, "memfd is Linux only"))
}

/// A directory failed the checks for holding libraries this process will load.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DirError {
    #[error("cannot create it: {0}")]
    Create(std::io::Error),
    #[error("it is not a directory")]
    NotADirectory,
    #[error("it is owned by uid {owner}, not by this user (uid {me})")]
    Owner { owner: u32, me: u32 },
    #[error("it is writable by group or others (mode {mode:o})")]
    Writable { mode: u32 },
    #[error("{0}")]
    Write(LoadError),
}

fn my_uid() -> u32 {
    // SAFETY: getuid has no preconditions.
    unsafe { libc::getuid() }
}

/// Creates `dir` (mode 0700) if needed and checks that only this user can change what is in it.
pub(crate) fn private_dir(dir: &Path) -> Result<(), DirError> {
    match std::fs::symlink_metadata(dir) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(DirError::Create)?;
        }
        Err(e) => return Err(DirError::Create(e)),
    }
    let me = my_uid();
    let link = std::fs::symlink_metadata(dir).map_err(DirError::Create)?;
    // A symlink counts only if it is ours; then its target is checked like a directory.
    if link.file_type().is_symlink() && link.uid() != me {
        return Err(DirError::Owner { owner: link.uid(), me });
    }
    let meta = std::fs::metadata(dir).map_err(DirError::Create)?;
    if !meta.is_dir() {
        return Err(DirError::NotADirectory);
    }
    if meta.uid() != me {
        return Err(DirError::Owner { owner: meta.uid(), me });
    }
    if meta.mode() & 0o022 != 0 {
        return Err(DirError::Writable { mode: meta.mode() & 0o7777 });
    }
    Ok(())
}

/// Why an existing cache file is not used as it is.
#[derive(Debug)]
enum Distrust {
    Missing,
    Bad(String),
}

/// Opens `path` without following links or blocking, and accepts it only if it is a regular
/// file of this user, not writable by others, `len` bytes long and hashing to `sha256`
/// through the descriptor returned.
fn open_trusted(path: &Path, len: u64, sha256: &str) -> Result<File, Distrust> {
    let mut f =
        std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(path).map_err(
            |e| match e.kind() {
                std::io::ErrorKind::NotFound => Distrust::Missing,
                _ => Distrust::Bad(e.to_string()),
            },
        )?;
    let meta = f.metadata().map_err(|e| Distrust::Bad(e.to_string()))?;
    if !meta.file_type().is_file() {
        return Err(Distrust::Bad(format!("not a regular file ({:?})", meta.file_type())));
    }
    if meta.uid() != my_uid() || meta.mode() & 0o022 != 0 {
        return Err(Distrust::Bad(format!("owned by uid {} with mode {:o}", meta.uid(), meta.mode() & 0o7777)));
    }
    if meta.len() != len {
        return Err(Distrust::Bad(format!("{} bytes, expected {len}", meta.len())));
    }
    let found = crate::digest::sha256_hex_reader(&f).map_err(|e| Distrust::Bad(e.to_string()))?;
    if found != sha256 {
        return Err(Distrust::Bad(format!("sha256 is {found}")));
    }
    f.rewind().map_err(|e| Distrust::Bad(e.to_string()))?;
    Ok(f)
}

/// `<dir>/<sha256>.<ext>`: the intact copy already there, else a fresh one written through a
/// temp file, `fsync` and an atomic `rename` over whatever held the name. `file`'s bytes must
/// have been checked against its digest ([`verify_bytes`]).
#[cfg(test)]
pub(crate) fn cache_file(dir: &Path, file: &EmbeddedFile) -> Result<Unpacked, DirError> {
    match trusted_copy(dir, file) {
        Some(unpacked) => Ok(unpacked),
        None => write_copy(dir, file),
    }
}

/// The intact copy of `file` at `<dir>/<sha256>.<ext>`, if there is one (see [`open_trusted`]).
fn trusted_copy(dir: &Path, file: &EmbeddedFile) -> Option<Unpacked> {
    let target = dir.join(file_name(file));
    match open_trusted(&target, file.bytes.len() as u64, file.sha256) {
        Ok(f) => Some(Unpacked { fd: f.into(), path: target }),
        Err(Distrust::Missing) => None,
        Err(Distrust::Bad(why)) => {
            tracing::warn!("{}: {why}; replacing it", target.display());
            None
        }
    }
}

/// Writes `file`'s (verified) bytes to `<dir>/<sha256>.<ext>` through a temp file, `fsync` and
/// an atomic `rename` over whatever held the name.
fn write_copy(dir: &Path, file: &EmbeddedFile) -> Result<Unpacked, DirError> {
    let target = dir.join(file_name(file));
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| DirError::Write(LoadError::Io { path, source })
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{}.", file.sha256))
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(io(dir))?;
    tmp.write_all(file.bytes).map_err(io(tmp.path()))?;
    tmp.as_file().sync_all().map_err(io(tmp.path()))?;
    // A directory at the name cannot be renamed over: move it aside first.
    if std::fs::symlink_metadata(&target).is_ok_and(|m| m.is_dir()) {
        let aside = dir.join(format!(".{}.stale-{}", file.sha256, std::process::id()));
        std::fs::rename(&target, &aside).map_err(io(&target))?;
        let _ = std::fs::remove_dir_all(&aside);
    }
    // The descriptor written stays the one loaded: the file is this user's, mode 0600, so
    // only this user could change it, and a rename by another process cannot swap it.
    let written =
        tmp.persist(&target).map_err(|e| DirError::Write(LoadError::Io { path: target.clone(), source: e.error }))?;
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(Unpacked { fd: written.into(), path: target })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn embedded(bytes: &'static [u8]) -> EmbeddedFile {
        let sha: &'static str = Box::leak(crate::digest::sha256_hex(bytes).into_boxed_str());
        EmbeddedFile { path: "_k.so", sha256: sha, bytes }
    }

    fn read_fd(u: &Unpacked) -> Vec<u8> {
        std::fs::read(format!("/proc/self/fd/{}", u.fd.as_raw_fd())).unwrap()
    }

    #[test]
    fn memfd_is_sealed_and_named_by_digest() {
        let file = embedded(b"memfd bytes");
        let u = unpack(&file, &[], Strategy::Memfd).unwrap();
        assert_eq!(u.path, PathBuf::from(format!("memfd:kernels-rs:{}.so", file.sha256)));
        assert_eq!(read_fd(&u), b"memfd bytes");
        // Sealed: no one can write it, not even through a new descriptor of ours.
        if let Ok(mut w) = std::fs::OpenOptions::new().write(true).open(u.load_path()) {
            assert!(w.write_all(b"x").is_err(), "a sealed memfd accepted a write");
        }
        // SAFETY: F_GET_SEALS reads the seals of our own descriptor.
        let seals = unsafe { libc::fcntl(u.fd.as_raw_fd(), libc::F_GET_SEALS) };
        assert_eq!(seals & libc::F_SEAL_WRITE, libc::F_SEAL_WRITE);
    }

    #[test]
    fn an_unusable_cache_is_not_needed_with_memfd() {
        let file = embedded(b"no cache needed");
        let not_a_dir = tempfile::NamedTempFile::new().unwrap();
        let u = unpack(&file, &[not_a_dir.path().to_owned()], Strategy::Memfd).unwrap();
        assert!(u.path.to_string_lossy().starts_with("memfd:"), "{u:?}");
    }

    #[test]
    fn without_memfd_every_refused_directory_is_named() {
        let file = embedded(b"nowhere to go");
        let not_a_dir = tempfile::NamedTempFile::new().unwrap();
        let under_a_file = not_a_dir.path().join("sub");
        let err = unpack(&file, &[not_a_dir.path().to_owned(), under_a_file.clone()], Strategy::File).unwrap_err();
        let text = err.to_string();
        assert!(text.contains(&format!("{}: it is not a directory", not_a_dir.path().display())), "{text}");
        assert!(text.contains(&under_a_file.display().to_string()), "{text}");
        assert!(text.contains("KERNELS_RS_CACHE"), "{text}");
    }

    #[test]
    fn the_first_private_directory_is_used() {
        let file = embedded(b"second dir");
        let not_a_dir = tempfile::NamedTempFile::new().unwrap();
        let good = tempfile::tempdir().unwrap();
        let u = unpack(&file, &[not_a_dir.path().to_owned(), good.path().join("k")], Strategy::File).unwrap();
        assert_eq!(u.path, good.path().join("k").join(format!("{}.so", file.sha256)));
        let mode = std::fs::metadata(good.path().join("k")).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700, "created private");
        assert_eq!(read_fd(&u), b"second dir");
    }

    #[test]
    fn a_warm_copy_is_checked_through_its_descriptor_and_the_embedded_bytes_only_before_writing() {
        let good = embedded(b"warm copy");
        let dir = tempfile::tempdir().unwrap();
        unpack(&good, &[dir.path().to_owned()], Strategy::File).unwrap();
        // Embedded bytes that no longer match: the intact copy is what gets loaded (it hashes
        // to the digest through the descriptor returned), so they are not hashed again.
        let damaged = EmbeddedFile { bytes: b"warm cop!", ..good };
        let u = unpack(&damaged, &[dir.path().to_owned()], Strategy::File).unwrap();
        assert_eq!(read_fd(&u), b"warm copy");
        // Without an intact copy they are checked before anything is written.
        let empty = tempfile::tempdir().unwrap();
        let err = unpack(&damaged, &[empty.path().to_owned()], Strategy::File).unwrap_err();
        assert!(matches!(err, LoadError::DigestMismatch { .. }), "{err}");
        assert_eq!(std::fs::read_dir(empty.path()).unwrap().count(), 0, "nothing written");
    }

    #[test]
    fn shared_or_foreign_directories_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(matches!(private_dir(dir.path()), Err(DirError::Writable { mode: 0o777 })));
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        private_dir(dir.path()).unwrap();
        // A directory of another user: `/` unless this is root, else one handed to nobody.
        let foreign = if my_uid() == 0 {
            let d = dir.path().join("theirs");
            std::fs::create_dir(&d).unwrap();
            std::os::unix::fs::chown(&d, Some(65534), Some(65534)).unwrap();
            d
        } else {
            PathBuf::from("/")
        };
        assert!(matches!(private_dir(&foreign), Err(DirError::Owner { .. })), "{foreign:?}");
    }

    #[test]
    fn whatever_holds_the_name_is_replaced_with_the_verified_bytes() {
        let file = embedded(b"the real library");
        let name = file_name(&file);
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join(&name);
        let check = |what: &str| {
            let u = cache_file(dir.path(), &file).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(read_fd(&u), b"the real library", "{what}");
            let meta = std::fs::symlink_metadata(&target).unwrap();
            assert!(meta.is_file(), "{what}: {meta:?}");
            assert_eq!(meta.mode() & 0o077, 0, "{what}");
            let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
            assert_eq!(names, vec![std::ffi::OsString::from(&name)], "{what}: nothing else left");
        };
        // A symlink to a device that never ends.
        std::os::unix::fs::symlink("/dev/zero", &target).unwrap();
        check("symlink to /dev/zero");
        // A FIFO: opening it for reading would block without O_NONBLOCK.
        std::fs::remove_file(&target).unwrap();
        let c = std::ffi::CString::new(target.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: mkfifo with a valid path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        check("fifo");
        // A directory (with something in it).
        std::fs::remove_file(&target).unwrap();
        std::fs::create_dir(&target).unwrap();
        std::fs::write(target.join("x"), b"x").unwrap();
        check("directory");
        // Group/other-writable file with the right bytes: someone else could change it later.
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o666)).unwrap();
        check("world-writable");
        // Same size, other bytes.
        std::fs::write(&target, b"the fake library").unwrap();
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o600)).unwrap();
        check("same size, other bytes");
        // Intact: used as it is (same inode).
        let before = std::fs::metadata(&target).unwrap().ino();
        check("intact");
        assert_eq!(std::fs::metadata(&target).unwrap().ino(), before, "an intact copy is not rewritten");
    }
}
