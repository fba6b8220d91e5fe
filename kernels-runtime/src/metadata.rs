//! A variant's `metadata.json`: typed, lenient parsing, and verification of the variant's
//! files against the digest it records.
//!
//! The upstream format (keys may be added over time; unknown keys are ignored):
//!
//! ```json
//! {
//!   "name": "relu", "id": "_relu_cpu_7a4e5a7", "version": 1, "license": "Apache-2.0",
//!   "backend": { "type": "cuda", "archs": ["8.0", "9.0", "9.0+PTX"] },
//!   "digest": { "algorithm": "sha256", "files": { "_relu_cpu_7a4e5a7.so": "<base64 sha256>" } },
//!   "provenance": { … }
//! }
//! ```
//!
//! The digest covers every file of the variant directory except `metadata.json` itself;
//! paths are relative and `/`-separated.

use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::digest;

use crate::variant::Version;

/// The file name of a variant's metadata.
pub const METADATA_FILE: &str = "metadata.json";

/// The digest algorithm kernels-rs writes (it also verifies `sha512`, as upstream does).
pub const DIGEST_ALGORITHM: &str = "sha256";

/// The detached signature of `metadata.json`, which the digest does not cover.
pub const SIGNATURE_FILE: &str = "metadata.json.sigstore";

/// A parsed `metadata.json`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct Metadata {
    /// Kernel name.
    #[serde(default)]
    pub name: Option<String>,
    /// Library identifier: the file stem of the variant's shared library.
    #[serde(default)]
    pub id: Option<String>,
    /// Kernel major version.
    #[serde(default)]
    pub version: Option<u64>,
    /// SPDX license expression.
    #[serde(default)]
    pub license: Option<String>,
    /// Backend the code was compiled for.
    #[serde(default)]
    pub backend: Option<BackendMetadata>,
    /// Per-file digests of the variant.
    #[serde(default)]
    pub digest: Option<DigestMetadata>,
    /// Build provenance, kept as JSON.
    #[serde(default)]
    pub provenance: Option<serde_json::Value>,
    /// Python packages the Python side needs (ignored by kernels-rs).
    #[serde(default)]
    pub python_depends: Vec<String>,
}

/// `backend` of `metadata.json`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct BackendMetadata {
    /// `cuda`, `rocm`, `cpu`, `metal`, `xpu`, …
    #[serde(rename = "type")]
    pub kind: String,
    /// GPU architectures with code in the library (`"9.0"`, `"9.0+PTX"`, `"gfx942"`).
    #[serde(default)]
    pub archs: Vec<String>,
}

/// `digest` of `metadata.json`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct DigestMetadata {
    /// Hash algorithm: `sha256` or `sha512`.
    pub algorithm: String,
    /// Relative `/`-separated path → base64 of the file's hash.
    pub files: BTreeMap<String, String>,
}

/// Reading or parsing `metadata.json` failed.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The JSON is malformed or a known key has the wrong type.
    #[error("{path}:{line}:{column}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        message: String,
    },
}

impl Metadata {
    /// Parses `metadata.json` text; `origin` names the file in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<Self, MetadataError> {
        serde_json::from_str(text).map_err(|e| MetadataError::Parse {
            path: origin.to_owned(),
            line: e.line(),
            column: e.column(),
            message: e.to_string().split(" at line ").next().unwrap_or_default().to_owned(),
        })
    }

    /// Reads `<variant_dir>/metadata.json`.
    pub fn read(variant_dir: &Path) -> Result<Self, MetadataError> {
        let path = variant_dir.join(METADATA_FILE);
        let text =
            std::fs::read_to_string(&path).map_err(|source| MetadataError::Read { path: path.clone(), source })?;
        Self::parse(&text, &path)
    }

    /// The GPU architectures listed under `backend.archs`, parsed. Entries that are not
    /// CUDA compute capabilities (e.g. `gfx942`) are returned as errors by [`CudaArch::parse`]
    /// and skipped here.
    pub fn cuda_archs(&self) -> Vec<CudaArch> {
        self.backend.iter().flat_map(|b| &b.archs).filter_map(|a| CudaArch::parse(a).ok()).collect()
    }

    /// The library file the variant ships: `<id>.so` (`.dylib` on macOS, `.dll` on Windows);
    /// `None` without an `id` or when the `id` is not a bare file name (see [`check_id`]).
    pub fn library_file(&self, os: &crate::variant::Os) -> Option<String> {
        let ext = match os {
            crate::variant::Os::Darwin => "dylib",
            crate::variant::Os::Windows => "dll",
            _ => "so",
        };
        self.id.as_ref().filter(|id| check_id(id).is_ok()).map(|id| format!("{id}.{ext}"))
    }

    /// The library file of `variant`: `<id>.abi3.so` for a torch stable-ABI variant (an abi3
    /// Python extension module, as kernel-builder names it), else [`library_file`](Self::library_file).
    pub fn library_file_of(&self, variant: &str, os: &crate::variant::Os) -> Option<String> {
        let stable_abi = crate::variant::VariantName::parse(variant)
            .is_ok_and(|v| matches!(v.framework(), Some(crate::variant::Framework::TorchStableAbi(_))));
        if stable_abi {
            self.id.as_ref().filter(|id| check_id(id).is_ok()).map(|id| format!("{id}.abi3.so"))
        } else {
            self.library_file(os)
        }
    }

    /// The library file of the variant in `dir`, for loading it: `id` must be present, a bare
    /// file name, and `<id>.<ext>` must be listed in the digest, so the digest covers what is
    /// loaded. The directory's name is the variant's: a `torch-stable-abi<MM>-…` directory
    /// ships `<id>.abi3.so` ([`library_file_of`](Self::library_file_of)).
    pub fn checked_library_file(&self, dir: &Path, os: &crate::variant::Os) -> Result<String, VerifyError> {
        let id = self.id.as_deref().ok_or_else(|| VerifyError::NoId { dir: dir.to_owned() })?;
        check_id(id).map_err(|reason| VerifyError::UnsafeId { dir: dir.to_owned(), id: id.to_owned(), reason })?;
        let file = self
            .library_file_of(&crate::variant::dir_name(dir), os)
            .ok_or_else(|| VerifyError::NoId { dir: dir.to_owned() })?;
        let listed = self.digest.as_ref().is_some_and(|d| d.files.contains_key(&file));
        if !listed {
            return Err(VerifyError::LibraryNotInDigest { dir: dir.to_owned(), file });
        }
        Ok(file)
    }
}

/// Checks that a `metadata.json` `id` is a bare file name: not empty, no `/`, `\`, `..` or
/// NUL, so `<id>.so` names a file inside the variant directory.
pub fn check_id(id: &str) -> Result<(), &'static str> {
    if id.is_empty() {
        Err("it is empty")
    } else if id.contains(['/', '\\']) {
        Err("it contains a path separator")
    } else if id.contains("..") {
        Err("it contains `..`")
    } else if id.contains('\0') {
        Err("it contains a NUL byte")
    } else {
        Ok(())
    }
}

/// Checks that a path from a kernel repo (a digest key, a listed file) is a relative
/// `/`-separated path that stays inside its directory: not empty, not absolute, no `\`, `:`
/// (a drive or stream) or control character (NUL included), and no empty, `.` or `..` component.
pub fn check_digest_path(path: &str) -> Result<(), &'static str> {
    if path.is_empty() {
        Err("it is empty")
    } else if path.starts_with('/') {
        Err("it is absolute")
    } else if path.contains('\\') {
        Err("it contains `\\`; digest paths are `/`-separated")
    } else if path.contains(':') {
        Err("it contains `:`")
    } else if path.chars().any(char::is_control) {
        Err("it contains a control character")
    } else if path.split('/').any(|c| c == "..") {
        Err("it has a `..` component")
    } else if path.split('/').any(|c| c.is_empty() || c == ".") {
        Err("it has an empty or `.` component")
    } else {
        Ok(())
    }
}

/// One CUDA entry of `backend.archs`: a compute capability, optionally arch-specific
/// (`9.0a`, runs only on exactly 9.0) and optionally with PTX (`9.0+PTX`, JIT-compiles on
/// any newer GPU).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CudaArch {
    /// The compute capability the code targets.
    pub capability: Version,
    /// `a`: architecture-specific features, no forward compatibility of the cubin.
    pub arch_specific: bool,
    /// `+PTX`: PTX for this capability is embedded too.
    pub ptx: bool,
}

impl CudaArch {
    /// Parses `"9.0"`, `"9.0a"`, `"8.0+PTX"`, `"10.0f"`.
    pub fn parse(s: &str) -> Result<Self, String> {
        let (cc, ptx) = match s.strip_suffix("+PTX") {
            Some(cc) => (cc, true),
            None => (s, false),
        };
        let (cc, arch_specific) = match cc.strip_suffix('a') {
            Some(cc) => (cc, true),
            None => (cc.strip_suffix('f').unwrap_or(cc), false),
        };
        let (major, minor) =
            cc.split_once('.').ok_or_else(|| format!("`{s}` is not a CUDA compute capability like `9.0`"))?;
        let parse =
            |d: &str| d.parse::<u32>().map_err(|_| format!("`{s}` is not a CUDA compute capability like `9.0`"));
        Ok(CudaArch { capability: Version::new(parse(major)?, parse(minor)?), arch_specific, ptx })
    }

    /// Whether a GPU of compute capability `gpu` can run this code: a cubin runs on the same
    /// major with an equal or higher minor (exactly equal when arch-specific); PTX runs on
    /// any GPU at least as new.
    pub fn runs_on(&self, gpu: Version) -> bool {
        let cubin = if self.arch_specific {
            gpu == self.capability
        } else {
            gpu.major == self.capability.major && gpu.minor >= self.capability.minor
        };
        cubin || (self.ptx && gpu >= self.capability)
    }
}

impl fmt::Display for CudaArch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.capability)?;
        if self.arch_specific {
            f.write_str("a")?;
        }
        if self.ptx {
            f.write_str("+PTX")?;
        }
        Ok(())
    }
}

/// One way a variant directory disagrees with its digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    /// Listed in the digest, absent on disk.
    Missing {
        /// Relative path.
        path: String,
    },
    /// On disk, not listed in the digest.
    Unknown {
        /// Relative path.
        path: String,
    },
    /// Contents differ from the digest.
    Mismatch {
        /// Relative path.
        path: String,
        /// Base64 hash from `metadata.json`.
        expected: String,
        /// Base64 hash of the file on disk.
        actual: String,
    },
    /// Listed in the digest under a path that is not inside the variant directory (absolute,
    /// with a `..`, `.` or empty component, a `\` or a `:`); it is not looked at.
    Unsafe {
        /// The path as listed.
        path: String,
    },
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::Missing { path } => write!(f, "missing file `{path}` (listed in the digest)"),
            Violation::Unknown { path } => write!(f, "unknown file `{path}` (not listed in the digest)"),
            Violation::Mismatch { path, expected, actual } => {
                write!(f, "`{path}` does not match the digest (expected {expected}, found {actual})")
            }
            Violation::Unsafe { path } => {
                write!(f, "`{path}` (listed in the digest) is not a path inside the variant directory")
            }
        }
    }
}

/// Verification of a variant directory failed.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// `metadata.json` could not be read or parsed.
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    /// `metadata.json` records no digest, so nothing can be verified.
    #[error("{dir}: metadata.json records no digest; rebuild the kernel with a kernel-builder that writes one")]
    NoDigest {
        /// Variant directory.
        dir: PathBuf,
    },
    /// The digest uses an algorithm kernels-rs does not accept.
    #[error("{dir}: unsupported digest algorithm `{algorithm}` (expected sha256 or sha512)")]
    Algorithm {
        /// Variant directory.
        dir: PathBuf,
        /// The algorithm named.
        algorithm: String,
    },
    /// `metadata.json` has no `id`, so the library file name is unknown.
    #[error("{}: metadata.json has no `id`, so the library file name is unknown", dir.display())]
    NoId {
        /// Variant directory.
        dir: PathBuf,
    },
    /// The `id` of `metadata.json` is not a bare file name.
    #[error(
        "{}: metadata.json `id` {id:?} is not a bare file name ({reason}); the library must be a file of the variant directory that the digest lists",
        dir.join(METADATA_FILE).display()
    )]
    UnsafeId {
        /// Variant directory.
        dir: PathBuf,
        /// The `id` found.
        id: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A digest key is not a relative path inside the variant directory.
    #[error(
        "{}: digest entry {path:?} is not a relative path inside the variant directory ({reason})",
        dir.join(METADATA_FILE).display()
    )]
    UnsafePath {
        /// Variant directory.
        dir: PathBuf,
        /// The key found.
        path: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The library `<id>.<ext>` is not listed in the digest.
    #[error(
        "{}: the library `{file}` is not listed in the digest, so nothing verifies it",
        dir.join(METADATA_FILE).display()
    )]
    LibraryNotInDigest {
        /// Variant directory.
        dir: PathBuf,
        /// The library file name.
        file: String,
    },
    /// Walking or hashing the directory failed.
    #[error("cannot hash {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Files disagree with the digest; every disagreement is listed.
    #[error("{dir} does not match its metadata.json digest:\n{}", list(.violations))]
    Violations {
        /// Variant directory.
        dir: PathBuf,
        /// Each disagreement, sorted by path.
        violations: Vec<Violation>,
    },
}

fn list(v: &[Violation]) -> String {
    v.iter().map(|v| format!("  - {v}")).collect::<Vec<_>>().join("\n")
}

/// A digest algorithm `metadata.json` may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    fn named(name: &str) -> Option<Self> {
        match name {
            "sha256" => Some(Algorithm::Sha256),
            "sha512" => Some(Algorithm::Sha512),
            _ => None,
        }
    }

    /// Base64 of this digest of everything `reader` yields, as `metadata.json` records it.
    fn base64(self, reader: impl Read) -> std::io::Result<String> {
        match self {
            Algorithm::Sha256 => digest::sha256_base64_reader(reader),
            Algorithm::Sha512 => digest::sha512_base64_reader(reader),
        }
    }
}

fn digest_of(dir: &Path, digest: &DigestMetadata) -> Result<Algorithm, VerifyError> {
    Algorithm::named(&digest.algorithm)
        .ok_or_else(|| VerifyError::Algorithm { dir: dir.to_owned(), algorithm: digest.algorithm.clone() })
}

/// Reads `rel` of the variant directory `dir` once and checks those bytes against the digest
/// of `metadata`, so the bytes returned are the bytes verified (a file changed after the
/// check cannot slip in through a second read).
pub fn read_verified(dir: &Path, metadata: &Metadata, rel: &str) -> Result<Vec<u8>, VerifyError> {
    let digest = metadata.digest.as_ref().ok_or_else(|| VerifyError::NoDigest { dir: dir.to_owned() })?;
    let algorithm = digest_of(dir, digest)?;
    check_digest_path(rel).map_err(|reason| VerifyError::UnsafePath {
        dir: dir.to_owned(),
        path: rel.to_owned(),
        reason,
    })?;
    let violation = |v| VerifyError::Violations { dir: dir.to_owned(), violations: vec![v] };
    let expected = digest.files.get(rel).ok_or_else(|| violation(Violation::Unknown { path: rel.to_owned() }))?;
    let path = dir.join(rel);
    let bytes = std::fs::read(&path).map_err(|source| VerifyError::Io { path: path.clone(), source })?;
    let actual = algorithm.base64(&bytes[..]).map_err(|source| VerifyError::Io { path: path.clone(), source })?;
    if &actual != expected {
        return Err(violation(Violation::Mismatch { path: rel.to_owned(), expected: expected.clone(), actual }));
    }
    Ok(bytes)
}

fn hash_file(path: &Path, algorithm: Algorithm) -> Result<String, VerifyError> {
    let io = |source| VerifyError::Io { path: path.to_owned(), source };
    let file = std::fs::File::open(path).map_err(io)?;
    algorithm.base64(file).map_err(io)
}

/// The files a digest covers (relative `/`-separated paths, sorted): every regular file
/// (symlinks to files count, under the link's path; symlinked directories are not entered),
/// except `metadata.json` and its `.sigstore` signature at the top level, anything under
/// `__pycache__`, and `*.pyc` files Python may leave behind.
pub fn variant_files(dir: &Path) -> Result<Vec<String>, VerifyError> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<(), VerifyError> {
        let io = |source| VerifyError::Io { path: dir.to_owned(), source };
        for entry in std::fs::read_dir(dir).map_err(io)? {
            let entry = entry.map_err(io)?;
            let path = entry.path();
            let ty = entry.file_type().map_err(io)?;
            let name = entry.file_name();
            if ty.is_dir() {
                if name != "__pycache__" {
                    walk(root, &path, out)?;
                }
                continue;
            }
            // A symlink counts when it leads to a regular file.
            let is_file = ty.is_file() || (ty.is_symlink() && path.metadata().is_ok_and(|m| m.is_file()));
            if !is_file || name.to_string_lossy().ends_with(".pyc") {
                continue;
            }
            let rel = path.strip_prefix(root).unwrap_or(&path);
            let rel = rel.components().map(|c| c.as_os_str().to_string_lossy()).collect::<Vec<_>>().join("/");
            if rel != METADATA_FILE && rel != SIGNATURE_FILE {
                out.push(rel);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out)?;
    out.sort();
    Ok(out)
}

/// Computes the `digest.files` map of a variant directory (for writing `metadata.json`).
pub fn digest_files(dir: &Path) -> Result<BTreeMap<String, String>, VerifyError> {
    variant_files(dir)?
        .into_iter()
        .map(|rel| Ok((rel.clone(), hash_file(&dir.join(&rel), Algorithm::Sha256)?)))
        .collect()
}

/// Verifies every file of `dir` against `metadata.digest`: missing, unknown and mismatching
/// files are each reported, and so is a digest path that is not inside `dir`, which is never
/// read.
pub fn verify_dir(dir: &Path, metadata: &Metadata) -> Result<(), VerifyError> {
    let digest = metadata.digest.as_ref().ok_or_else(|| VerifyError::NoDigest { dir: dir.to_owned() })?;
    let algorithm = digest_of(dir, digest)?;
    if let Some(id) = &metadata.id {
        check_id(id).map_err(|reason| VerifyError::UnsafeId { dir: dir.to_owned(), id: id.clone(), reason })?;
    }
    let on_disk = variant_files(dir)?;
    let mut violations = Vec::new();
    for (path, expected) in &digest.files {
        // The key comes from the file: it is joined to `dir` only once it is known to stay there.
        if check_digest_path(path).is_err() {
            violations.push(Violation::Unsafe { path: path.clone() });
            continue;
        }
        let file = dir.join(path);
        if !file.is_file() {
            violations.push(Violation::Missing { path: path.clone() });
            continue;
        }
        let actual = hash_file(&file, algorithm)?;
        if &actual != expected {
            violations.push(Violation::Mismatch { path: path.clone(), expected: expected.clone(), actual });
        }
    }
    for path in on_disk {
        if !digest.files.contains_key(&path) {
            violations.push(Violation::Unknown { path });
        }
    }
    if violations.is_empty() {
        return Ok(());
    }
    violations.sort_by(|a, b| violation_path(a).cmp(violation_path(b)));
    Err(VerifyError::Violations { dir: dir.to_owned(), violations })
}

fn violation_path(v: &Violation) -> &str {
    match v {
        Violation::Missing { path }
        | Violation::Unknown { path }
        | Violation::Mismatch { path, .. }
        | Violation::Unsafe { path } => path,
    }
}

/// Reads `metadata.json` of `dir` and verifies the directory against it.
pub fn read_and_verify(dir: &Path) -> Result<Metadata, VerifyError> {
    let metadata = Metadata::read(dir)?;
    verify_dir(dir, &metadata)?;
    Ok(metadata)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::sha256_base64;

    fn variant(files: &[(&str, &[u8])]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for (rel, bytes) in files {
            let p = dir.path().join(rel);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, bytes).unwrap();
        }
        let files = digest_files(dir.path()).unwrap();
        let meta = serde_json::json!({
            "name": "relu", "id": "_relu_cpu_7a4e5a7", "version": 1, "license": "Apache-2.0",
            "backend": { "type": "cuda", "archs": ["8.0", "9.0+PTX"] },
            "digest": { "algorithm": "sha256", "files": files },
            "kernels-minver": "0.17", "some-future-key": {"nested": [1, 2]},
        });
        std::fs::write(dir.path().join(METADATA_FILE), serde_json::to_vec_pretty(&meta).unwrap()).unwrap();
        dir
    }

    const FILES: &[(&str, &[u8])] =
        &[("_relu_cpu_7a4e5a7.so", b"\x7fELF fake library"), ("__init__.py", b"# init\n"), ("layers/__init__.py", b"")];

    #[test]
    fn parses_upstream_keys_and_ignores_unknown_ones() {
        let dir = variant(FILES);
        let m = Metadata::read(dir.path()).unwrap();
        assert_eq!(m.id.as_deref(), Some("_relu_cpu_7a4e5a7"));
        assert_eq!(m.version, Some(1));
        assert_eq!(m.backend.as_ref().unwrap().kind, "cuda");
        assert_eq!(m.library_file(&crate::variant::Os::Linux).as_deref(), Some("_relu_cpu_7a4e5a7.so"));
        let files: Vec<_> = m.digest.as_ref().unwrap().files.keys().cloned().collect();
        assert_eq!(files, ["__init__.py", "_relu_cpu_7a4e5a7.so", "layers/__init__.py"]);
        assert_eq!(m.digest.unwrap().files["__init__.py"], sha256_base64(b"# init\n"));
        // The upstream test vector.
        assert_eq!(sha256_base64(b"hello world"), "uU0nuZNNPgilLlLX2n2r+sSE7+N6U4DukIj3rOLvzek=");
    }

    #[test]
    fn parse_errors_name_file_line_and_column() {
        let err = Metadata::parse("{\n  \"version\": \"one\"\n}", Path::new("x/metadata.json")).unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("x/metadata.json:2:"), "{msg}");
        assert!(msg.contains("invalid type"), "{msg}");
        let err = Metadata::parse("{\"digest\": {\"files\": {}}}", Path::new("m.json")).unwrap_err();
        assert!(err.to_string().contains("missing field `algorithm`"), "{err}");
    }

    #[test]
    fn intact_variant_verifies() {
        let dir = variant(FILES);
        read_and_verify(dir.path()).unwrap();
    }

    #[test]
    fn tampered_file_is_a_mismatch_naming_the_file() {
        let dir = variant(FILES);
        let lib = dir.path().join("_relu_cpu_7a4e5a7.so");
        let mut bytes = std::fs::read(&lib).unwrap();
        bytes[5] ^= 1;
        std::fs::write(&lib, bytes).unwrap();
        let err = read_and_verify(dir.path()).unwrap_err();
        let VerifyError::Violations { violations, .. } = &err else { panic!("{err}") };
        assert!(
            matches!(&violations[..], [Violation::Mismatch { path, .. }] if path == "_relu_cpu_7a4e5a7.so"),
            "{err}"
        );
        assert!(err.to_string().contains("`_relu_cpu_7a4e5a7.so` does not match the digest"), "{err}");
    }

    #[test]
    fn missing_and_unknown_files_are_distinct() {
        let dir = variant(FILES);
        std::fs::remove_file(dir.path().join("layers/__init__.py")).unwrap();
        std::fs::write(dir.path().join("extra.so"), b"x").unwrap();
        // Caches Python writes next to the files, and the signature, do not count.
        std::fs::create_dir(dir.path().join("__pycache__")).unwrap();
        std::fs::write(dir.path().join("__pycache__/x.pyc"), b"x").unwrap();
        std::fs::write(dir.path().join("layers/mod.pyc"), b"x").unwrap();
        std::fs::write(dir.path().join(SIGNATURE_FILE), b"sig").unwrap();
        let err = read_and_verify(dir.path()).unwrap_err();
        let VerifyError::Violations { violations, .. } = &err else { panic!("{err}") };
        assert_eq!(
            violations,
            &[Violation::Unknown { path: "extra.so".into() }, Violation::Missing { path: "layers/__init__.py".into() }]
        );
    }

    #[test]
    fn digest_is_required_and_its_algorithm_checked() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(METADATA_FILE), r#"{"id": "x"}"#).unwrap();
        assert!(matches!(read_and_verify(dir.path()), Err(VerifyError::NoDigest { .. })));
        std::fs::write(dir.path().join(METADATA_FILE), r#"{"digest": {"algorithm": "md5", "files": {}}}"#).unwrap();
        let err = read_and_verify(dir.path()).unwrap_err();
        assert!(err.to_string().contains("unsupported digest algorithm `md5`"), "{err}");
        // sha512 digests, which upstream also accepts, verify.
        let bytes = b"hello world";
        std::fs::write(dir.path().join("a.so"), bytes).unwrap();
        let h = digest::sha512_base64_reader(&bytes[..]).unwrap();
        let meta = format!(r#"{{"digest": {{"algorithm": "sha512", "files": {{"a.so": "{h}"}}}}}}"#);
        std::fs::write(dir.path().join(METADATA_FILE), meta).unwrap();
        read_and_verify(dir.path()).unwrap();
        assert!(matches!(Metadata::read(&dir.path().join("nope")), Err(MetadataError::Read { .. })));
    }

    /// Rewrites the variant's `metadata.json` with `id` and extra digest entries.
    fn rewrite(dir: &Path, id: &str, extra: &[(&str, &str)]) {
        let mut files = digest_files(dir).unwrap();
        for (k, v) in extra {
            files.insert((*k).to_owned(), (*v).to_owned());
        }
        let meta = serde_json::json!({ "id": id, "digest": { "algorithm": "sha256", "files": files } });
        std::fs::write(dir.join(METADATA_FILE), serde_json::to_vec_pretty(&meta).unwrap()).unwrap();
    }

    #[test]
    fn an_id_that_leaves_the_variant_directory_is_refused() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("variant");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("ok.so"), b"listed").unwrap();
        // A library next to the variant directory, which no digest covers.
        std::fs::write(root.path().join("x.so"), b"outside").unwrap();
        for id in ["../x", "..", "sub/x", "a\\b", "", "x\0y"] {
            rewrite(&dir, id, &[]);
            let err = read_and_verify(&dir).unwrap_err();
            assert!(matches!(err, VerifyError::UnsafeId { .. }), "{id:?}: {err}");
            let msg = err.to_string();
            assert!(msg.contains("metadata.json") && msg.contains("`id`"), "{msg}");
            let meta = Metadata::read(&dir).unwrap();
            assert_eq!(meta.library_file(&crate::variant::Os::Linux), None, "{id:?}");
        }
        // A bare id whose library the digest does not list names no loadable library either.
        rewrite(&dir, "unlisted", &[]);
        let meta = read_and_verify(&dir).unwrap();
        let err = meta.checked_library_file(&dir, &crate::variant::Os::Linux).unwrap_err();
        assert!(err.to_string().contains("`unlisted.so` is not listed in the digest"), "{err}");
        rewrite(&dir, "ok", &[]);
        let meta = read_and_verify(&dir).unwrap();
        assert_eq!(meta.checked_library_file(&dir, &crate::variant::Os::Linux).unwrap(), "ok.so");
    }

    #[test]
    fn digest_paths_outside_the_variant_directory_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("variant");
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("ok.so"), b"listed").unwrap();
        std::fs::write(root.path().join("x.so"), b"outside").unwrap();
        let outside = sha256_base64(b"outside");
        for key in ["../x.so", "/etc/passwd", "a\\..\\x.so", "./ok.so", "sub//x.so", ""] {
            rewrite(&dir, "ok", &[(key, &outside)]);
            let err = read_and_verify(&dir).unwrap_err();
            let VerifyError::Violations { violations, .. } = &err else { panic!("{key:?}: {err}") };
            assert!(violations.contains(&Violation::Unsafe { path: key.to_owned() }), "{key:?}: {err}");
            assert!(err.to_string().contains(&format!("`{key}`")), "{err}");
        }
    }

    #[test]
    fn read_verified_returns_the_bytes_it_checked() {
        let dir = variant(FILES);
        let meta = read_and_verify(dir.path()).unwrap();
        let lib = "_relu_cpu_7a4e5a7.so";
        assert_eq!(read_verified(dir.path(), &meta, lib).unwrap(), b"\x7fELF fake library");
        // Changed after the directory was verified: the changed bytes are refused, not returned.
        std::fs::write(dir.path().join(lib), b"\x7fELF other library").unwrap();
        let err = read_verified(dir.path(), &meta, lib).unwrap_err();
        assert!(err.to_string().contains(&format!("`{lib}` does not match the digest")), "{err}");
        let err = read_verified(dir.path(), &meta, "extra.so").unwrap_err();
        assert!(err.to_string().contains("unknown file `extra.so`"), "{err}");
        assert!(matches!(read_verified(dir.path(), &meta, "../x.so"), Err(VerifyError::UnsafePath { .. })));
    }

    #[test]
    fn digest_paths_outside_the_directory_are_unsafe_and_never_read() {
        // The variant's files, and a copy of them one level up: a digest key that climbs out of
        // the directory would find the copy, and its hash would match.
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("v");
        for (rel, bytes) in FILES {
            for base in [root.path(), dir.as_path()] {
                std::fs::create_dir_all(base.join(rel).parent().unwrap()).unwrap();
                std::fs::write(base.join(rel), bytes).unwrap();
            }
        }
        let mut files = digest_files(&dir).unwrap();
        let hash = files["__init__.py"].clone();
        // From fuzz runs: a trailing `/`, a `.` component, a climb out, an absolute path.
        let absolute = root.path().join("__init__.py").display().to_string();
        let unsafe_paths = ["layers/__init__.py/", "./__init__.py", "../__init__.py", &absolute, "a\\b", "C:x"];
        for path in unsafe_paths {
            files.insert(path.to_owned(), hash.clone());
        }
        let meta = Metadata {
            digest: Some(DigestMetadata { algorithm: DIGEST_ALGORITHM.into(), files }),
            ..Metadata::parse("{}", Path::new("m.json")).unwrap()
        };
        let err = verify_dir(&dir, &meta).unwrap_err();
        let VerifyError::Violations { violations, .. } = &err else { panic!("{err}") };
        let mut expected: Vec<Violation> =
            unsafe_paths.iter().map(|p| Violation::Unsafe { path: (*p).to_owned() }).collect();
        expected.sort_by(|a, b| violation_path(a).cmp(violation_path(b)));
        assert_eq!(violations, &expected, "{err}");
        assert!(err.to_string().contains("`../__init__.py` (listed in the digest) is not a path inside"), "{err}");
    }

    #[test]
    fn cuda_arch_rules() {
        let a = |s: &str| CudaArch::parse(s).unwrap();
        let cc = Version::new;
        assert!(a("9.0").runs_on(cc(9, 0)));
        assert!(!a("8.0").runs_on(cc(9, 0)), "sm_80 cubin has no code for sm_90");
        assert!(a("8.0").runs_on(cc(8, 6)), "cubins run on newer minors of the same major");
        assert!(!a("8.6").runs_on(cc(8, 0)));
        assert!(a("8.0+PTX").runs_on(cc(9, 0)), "PTX JIT-compiles for newer GPUs");
        assert!(a("9.0+PTX").runs_on(cc(12, 0)));
        assert!(!a("9.0+PTX").runs_on(cc(8, 9)));
        assert!(a("9.0a").runs_on(cc(9, 0)));
        assert!(!a("9.0a").runs_on(cc(9, 1)));
        assert!(a("10.0f").runs_on(cc(10, 3)));
        assert_eq!(a("9.0a+PTX").to_string(), "9.0a+PTX");
        assert!(CudaArch::parse("gfx942").is_err());
        assert!(CudaArch::parse("9.x").is_err());
    }
}
