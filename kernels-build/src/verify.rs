//! Verifying a variant before it is embedded or listed: a Hub variant's pinned files (fetched
//! and checked against `kernels.lock`) against its `metadata.json` digest, or a local variant
//! directory against its own digest. The library bytes handed on are the bytes verified.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kernels_runtime::metadata::{self, METADATA_FILE, Metadata, VerifyError};
use kernels_runtime::variant::Os;

use crate::fetch;
use crate::hub::{FetchError, Hub};
use crate::lock::{ResolvedFile, ResolvedVariant};

/// A Hub variant fetched into the Hub cache and verified.
#[derive(Debug, Clone)]
pub struct VerifiedVariant {
    /// The variant directory in the Hub cache snapshot.
    pub dir: PathBuf,
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
    Verify(#[from] VerifyError),
    /// The lock pins no file of that name for the variant, so the library is not verified.
    #[error(
        "{repo}@{commit}: build/{variant}/{file} is the variant's library but kernels.lock pins no such file; run `cargo kernels lock`"
    )]
    LibraryNotPinned {
        repo: String,
        commit: String,
        variant: String,
        /// The library file.
        file: String,
    },
    /// The variant has no `metadata.json` or no `id`, so its library is unknown.
    #[error(
        "{repo}@{commit}: build/{variant} has no metadata.json with an `id`; kernels-rs cannot tell which file is the library"
    )]
    NoLibrary { repo: String, commit: String, variant: String },
}

/// Fetches every pinned file of `variant` (each checked against its pinned sha256 as it is
/// read), then verifies the directory against its `metadata.json` digest and finds its
/// library. The library bytes returned are the ones checked against the lock, never a second
/// read.
pub fn hub_variant(
    hub: &mut Hub,
    repo: &str,
    commit: &str,
    variant: &ResolvedVariant,
    os: &Os,
) -> Result<VerifiedVariant, VariantError> {
    hub_variant_then(hub, repo, commit, variant, os, |_| {})
}

/// [`hub_variant`], running `after_verify` on the variant directory once every file is
/// verified (tests change files there to show that nothing is read again).
fn hub_variant_then(
    hub: &mut Hub,
    repo: &str,
    commit: &str,
    variant: &ResolvedVariant,
    os: &Os,
    after_verify: impl FnOnce(&Path),
) -> Result<VerifiedVariant, VariantError> {
    let no_library =
        || VariantError::NoLibrary { repo: repo.to_owned(), commit: commit.to_owned(), variant: variant.name.clone() };
    let mut dir = None;
    let mut meta_bytes = None;
    let mut verified = BTreeMap::new();
    for file in fetch::pinned_files(hub, repo, commit, variant)? {
        if file.pin.path == METADATA_FILE {
            dir = file.path.parent().map(Path::to_path_buf);
            meta_bytes = Some(file.bytes);
        } else {
            verified.insert(file.pin.path, file.bytes);
        }
    }
    let (Some(dir), Some(meta_bytes), Some(meta_pin)) = (dir, meta_bytes, variant.metadata_file()) else {
        return Err(no_library());
    };
    let text = String::from_utf8_lossy(&meta_bytes);
    let metadata = Metadata::parse(&text, &dir.join(METADATA_FILE)).map_err(VerifyError::from)?;
    metadata::verify_dir(&dir, &metadata)?;
    let library_file = metadata.checked_library_file(&dir, os)?;
    after_verify(&dir);
    let not_pinned = || VariantError::LibraryNotPinned {
        repo: repo.to_owned(),
        commit: commit.to_owned(),
        variant: variant.name.clone(),
        file: library_file.clone(),
    };
    let library_pin = variant.files.iter().find(|f| f.path == library_file).ok_or_else(not_pinned)?;
    let library = verified.remove(&library_file).ok_or_else(not_pinned)?;
    let pins = (library_pin.clone(), meta_pin.clone());
    Ok(VerifiedVariant { dir, metadata, library_file, library, pins })
}

/// A local variant directory, verified against its own `metadata.json`.
#[derive(Debug, Clone)]
pub struct LocalVariant {
    pub metadata: Metadata,
    /// The library's file name (`<id>.so`).
    pub library_file: String,
    /// The library's bytes: the very bytes checked against the digest, read once.
    pub library: Vec<u8>,
}

/// Verifies a local variant directory against its `metadata.json` digest and reads its
/// library, checked against the digest.
pub fn local_variant(dir: &Path, os: &Os) -> Result<LocalVariant, VerifyError> {
    let metadata = metadata::read_and_verify(dir)?;
    let library_file = metadata.checked_library_file(dir, os)?;
    let library = metadata::read_verified(dir, &metadata, &library_file)?;
    Ok(LocalVariant { metadata, library_file, library })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::HubSettings;
    use kernels_runtime::digest::sha256_hex;

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
        let fetched = hub_variant_then(&mut hub, repo, commit, &pinned, &kernels_runtime::variant::Os::Linux, |dir| {
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
        let err = hub_variant(&mut hub, repo, commit, &pinned, &kernels_runtime::variant::Os::Linux).unwrap_err();
        assert!(err.to_string().contains("is not a bare file name"), "{err}");
    }
}
