//! Resolving a Hub kernel to what `kernels.lock` pins: the commit a version or revision points
//! to, and for every loadable (tvm-ffi) variant each file's sha256 and size.
//!
//! Hashes come from each variant's `metadata.json` digest where it has one, so locking
//! downloads only the small `metadata.json` files; files the digest does not cover (and
//! variants without a digest) are downloaded and hashed.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use kernels_runtime::digest::sha256_hex;
use kernels_runtime::metadata::{METADATA_FILE, Metadata};
use kernels_runtime::variant::VariantName;

use crate::fetch::{FetchError, Hub};

/// What `kernels.toml` asked for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Requested {
    /// A major version: the `v<N>` branch.
    Version(u64),
    /// A branch, tag or commit.
    Revision(String),
}

impl std::fmt::Display for Requested {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Requested::Version(v) => write!(f, "version {v}"),
            Requested::Revision(r) => write!(f, "revision `{r}`"),
        }
    }
}

/// A Hub kernel pinned to a commit, with every loadable variant's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedKernel {
    /// Local name in `kernels.toml`.
    pub name: String,
    /// `org/name`.
    pub repo: String,
    /// What was asked for.
    pub requested: Requested,
    /// The commit it resolved to.
    pub commit: String,
    /// Variants, sorted by name.
    pub variants: Vec<ResolvedVariant>,
}

/// One variant's files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedVariant {
    /// Variant directory name.
    pub name: String,
    /// Files, sorted by path (relative to the variant directory).
    pub files: Vec<ResolvedFile>,
}

/// One pinned file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedFile {
    /// Path relative to the variant directory.
    pub path: String,
    /// Hex sha256.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
}

impl ResolvedVariant {
    /// The pinned `metadata.json`, if the variant has one.
    pub fn metadata_file(&self) -> Option<&ResolvedFile> {
        self.files.iter().find(|f| f.path == METADATA_FILE)
    }
}

/// Resolution failed.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// Talking to the Hub failed.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// A variant's `metadata.json` is unreadable.
    #[error("{repo}@{commit}: build/{variant}/metadata.json: {message}")]
    Metadata {
        /// Repo.
        repo: String,
        /// Commit.
        commit: String,
        /// Variant.
        variant: String,
        /// What is wrong.
        message: String,
    },
    /// The commit has no variant kernels-rs can load.
    #[error("{repo}@{commit} has no tvm-ffi variant (found: {found}); kernels-rs loads only tvm-ffi builds")]
    NoLoadableVariant {
        /// Repo.
        repo: String,
        /// Commit.
        commit: String,
        /// Variants found.
        found: String,
    },
}

/// Resolves `repo` at `requested` against the Hub.
pub fn resolve(hub: &mut Hub, name: &str, repo: &str, requested: &Requested) -> Result<ResolvedKernel, ResolveError> {
    let commit = match requested {
        Requested::Version(v) => hub.resolve_version(repo, *v)?,
        Requested::Revision(r) => hub.resolve_revision(repo, r)?,
    };
    let all = hub.list_variants(repo, &commit)?;
    let loadable: Vec<&String> =
        all.iter().filter(|v| VariantName::parse(v).is_ok_and(|n| !n.needs_pytorch())).collect();
    if loadable.is_empty() {
        return Err(ResolveError::NoLoadableVariant {
            repo: repo.to_owned(),
            commit,
            found: if all.is_empty() { "none".into() } else { all.join(", ") },
        });
    }
    let mut variants = Vec::new();
    for variant in loadable {
        variants.push(resolve_variant(hub, repo, &commit, variant)?);
    }
    Ok(ResolvedKernel { name: name.to_owned(), repo: repo.to_owned(), requested: requested.clone(), commit, variants })
}

/// Fetches a file that no lock pins yet. Without a hash to check, the size the Hub's tree
/// listing gives is checked instead, so an error page or a cut-off body is never pinned.
fn fetch_sized(
    hub: &mut Hub,
    repo: &str,
    commit: &str,
    remote: &crate::fetch::RemoteFile,
) -> Result<Vec<u8>, FetchError> {
    Ok(hub.fetch_expecting(repo, commit, &remote.path, None, Some(remote.size))?.1)
}

fn resolve_variant(hub: &mut Hub, repo: &str, commit: &str, variant: &str) -> Result<ResolvedVariant, ResolveError> {
    let prefix = format!("build/{variant}/");
    let listed = hub.list_variant_files(repo, commit, variant)?;
    let meta_err = |message: String| ResolveError::Metadata {
        repo: repo.to_owned(),
        commit: commit.to_owned(),
        variant: variant.to_owned(),
        message,
    };
    let mut digest = std::collections::BTreeMap::new();
    if listed.iter().any(|f| f.path == format!("{prefix}{METADATA_FILE}")) {
        let meta_remote = listed.iter().find(|f| f.path == format!("{prefix}{METADATA_FILE}")).expect("checked above");
        let bytes = fetch_sized(hub, repo, commit, meta_remote)?;
        let path = hub.cache_path(repo, commit, &meta_remote.path);
        let text = String::from_utf8(bytes).map_err(|_| meta_err("not UTF-8".into()))?;
        let meta = Metadata::parse(&text, &path).map_err(|e| meta_err(e.to_string()))?;
        if let Some(d) = meta.digest.filter(|d| d.algorithm == "sha256") {
            digest = d.files;
        }
    }
    let mut files = Vec::new();
    for remote in listed {
        let rel = remote.path.strip_prefix(&prefix).unwrap_or(&remote.path).to_owned();
        let from_digest = digest.get(&rel).and_then(|b64| BASE64.decode(b64).ok()).filter(|raw| raw.len() == 32);
        let sha256 = match from_digest {
            Some(raw) => raw.iter().map(|b| format!("{b:02x}")).collect(),
            None => sha256_hex(&fetch_sized(hub, repo, commit, &remote)?),
        };
        files.push(ResolvedFile { path: rel, sha256, size: remote.size });
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(ResolvedVariant { name: variant.to_owned(), files })
}

/// A variant fetched into the Hub cache and verified.
#[derive(Debug, Clone)]
pub struct FetchedVariant {
    /// The variant directory in the Hub cache snapshot.
    pub dir: std::path::PathBuf,
    /// Its metadata.
    pub metadata: Metadata,
    /// The library's file name (`<id>.so`).
    pub library_file: String,
    /// The library's bytes: the very bytes that were checked against the lock.
    pub library: Vec<u8>,
    /// The library and `metadata.json` as the lock pins them.
    pub pins: (ResolvedFile, ResolvedFile),
}

/// Fetching a pinned variant failed.
#[derive(Debug, thiserror::Error)]
pub enum VariantError {
    /// Download or cache access failed, or a file's hash differs from the lock.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// The variant directory does not match its own `metadata.json` digest.
    #[error(transparent)]
    Verify(#[from] kernels_runtime::metadata::VerifyError),
    /// The lock pins no file of that name for the variant, so the library is not verified.
    #[error(
        "{repo}@{commit}: build/{variant}/{file} is the variant's library but kernels.lock pins no such file; run `cargo kernels lock`"
    )]
    LibraryNotPinned {
        /// Repo.
        repo: String,
        /// Commit.
        commit: String,
        /// Variant.
        variant: String,
        /// The library file.
        file: String,
    },
    /// The variant has no `metadata.json` or no `id`, so its library is unknown.
    #[error(
        "{repo}@{commit}: build/{variant} has no metadata.json with an `id`; kernels-rs cannot tell which file is the library"
    )]
    NoLibrary {
        /// Repo.
        repo: String,
        /// Commit.
        commit: String,
        /// Variant.
        variant: String,
    },
}

/// Downloads (or finds in the cache) every pinned file of `variant`, each checked against its
/// pinned sha256, then verifies the directory against its `metadata.json` digest. The library
/// bytes returned are the ones read and checked against the lock, never a second read.
pub fn fetch_variant(
    hub: &mut Hub,
    repo: &str,
    commit: &str,
    variant: &ResolvedVariant,
    os: &kernels_runtime::variant::Os,
) -> Result<FetchedVariant, VariantError> {
    fetch_variant_then(hub, repo, commit, variant, os, |_| {})
}

/// [`fetch_variant`], running `after_verify` on the variant directory once every file is
/// verified (tests change files there to show that nothing is read again).
fn fetch_variant_then(
    hub: &mut Hub,
    repo: &str,
    commit: &str,
    variant: &ResolvedVariant,
    os: &kernels_runtime::variant::Os,
    after_verify: impl FnOnce(&std::path::Path),
) -> Result<FetchedVariant, VariantError> {
    let no_library =
        || VariantError::NoLibrary { repo: repo.to_owned(), commit: commit.to_owned(), variant: variant.name.clone() };
    let mut dir = None;
    let mut meta_bytes = None;
    let mut verified = std::collections::BTreeMap::new();
    for file in &variant.files {
        let path = format!("build/{}/{}", variant.name, file.path);
        let (local, bytes) = hub.fetch_expecting(repo, commit, &path, Some(&file.sha256), Some(file.size))?;
        if file.path == METADATA_FILE {
            dir = local.parent().map(std::path::Path::to_path_buf);
            meta_bytes = Some(bytes);
        } else {
            verified.insert(file.path.as_str(), bytes);
        }
    }
    let (Some(dir), Some(meta_bytes), Some(meta_pin)) = (dir, meta_bytes, variant.metadata_file()) else {
        return Err(no_library());
    };
    let text = String::from_utf8_lossy(&meta_bytes);
    let metadata =
        Metadata::parse(&text, &dir.join(METADATA_FILE)).map_err(kernels_runtime::metadata::VerifyError::from)?;
    kernels_runtime::metadata::verify_dir(&dir, &metadata)?;
    let library_file = metadata.checked_library_file(&dir, os)?;
    after_verify(&dir);
    let not_pinned = || VariantError::LibraryNotPinned {
        repo: repo.to_owned(),
        commit: commit.to_owned(),
        variant: variant.name.clone(),
        file: library_file.clone(),
    };
    let library_pin = variant.files.iter().find(|f| f.path == library_file).ok_or_else(not_pinned)?;
    let library = verified.remove(library_file.as_str()).ok_or_else(not_pinned)?;
    let pins = (library_pin.clone(), meta_pin.clone());
    Ok(FetchedVariant { dir, metadata, library_file, library, pins })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fetch::HubSettings;

    #[test]
    fn the_library_returned_is_the_one_verified_not_a_second_read() {
        let cache = tempfile::tempdir().unwrap();
        let mut hub = Hub::new(HubSettings {
            endpoint: "http://127.0.0.1:9".into(),
            cache_dir: cache.path().to_owned(),
            token: None,
            offline: true,
        });
        let (repo, commit, variant) =
            ("org/k", "0123456789abcdef0123456789abcdef01234567", "tvm-ffi01-cpu-x86_64-linux");
        let library = b"\x7fELF the pinned library".to_vec();
        let meta = serde_json::json!({
            "id": "_k",
            "digest": { "algorithm": "sha256", "files": { "_k.so": kernels_runtime::digest::sha256_base64(&library) } },
        });
        let meta = serde_json::to_vec(&meta).unwrap();
        let mut files = Vec::new();
        for (rel, bytes) in [("_k.so", &library), (METADATA_FILE, &meta)] {
            let path = hub.cache_path(repo, commit, &format!("build/{variant}/{rel}"));
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, bytes).unwrap();
            files.push(ResolvedFile { path: rel.into(), sha256: sha256_hex(bytes), size: bytes.len() as u64 });
        }
        let pinned = ResolvedVariant { name: variant.into(), files };

        // The library changes on disk once every file was verified: what is returned (and
        // embedded) is still the verified buffer.
        let fetched =
            fetch_variant_then(&mut hub, repo, commit, &pinned, &kernels_runtime::variant::Os::Linux, |dir| {
                std::fs::write(dir.join("_k.so"), b"\x7fELF swapped in after the check").unwrap();
            })
            .unwrap();
        assert_eq!(fetched.library, library);
        assert_eq!(fetched.library_file, "_k.so");
        assert_eq!(fetched.pins.0, pinned.files[0]);
        assert_eq!(fetched.pins.1, pinned.files[1]);

        // An `id` outside the variant directory is refused.
        let dir = fetched.dir;
        let bad = serde_json::to_vec(&serde_json::json!({
            "id": "../_k",
            "digest": { "algorithm": "sha256", "files": {} },
        }))
        .unwrap();
        std::fs::write(dir.join("_k.so"), &library).unwrap();
        std::fs::write(dir.join(METADATA_FILE), &bad).unwrap();
        let mut pinned = pinned;
        pinned.files[1].sha256 = sha256_hex(&bad);
        pinned.files[1].size = bad.len() as u64;
        let err = fetch_variant(&mut hub, repo, commit, &pinned, &kernels_runtime::variant::Os::Linux).unwrap_err();
        assert!(err.to_string().contains("is not a bare file name"), "{err}");
    }
}
