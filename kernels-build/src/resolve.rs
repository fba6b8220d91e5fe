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

use crate::hub::{FetchError, Hub, RemoteFile};
use crate::lock::{Lock, ResolvedFile, ResolvedKernel, ResolvedVariant};
use crate::manifest::{Manifest, Requested};

/// Resolution failed.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// Talking to the Hub failed.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// A variant's `metadata.json` is unreadable.
    #[error("{repo}@{commit}: build/{variant}/metadata.json: {message}")]
    Metadata {
        repo: String,
        commit: String,
        variant: String,
        /// What is wrong.
        message: String,
    },
    /// The commit has no variant kernels-rs can load.
    #[error("{repo}@{commit} has no tvm-ffi variant (found: {found}); kernels-rs loads only tvm-ffi builds")]
    NoLoadableVariant {
        repo: String,
        commit: String,
        /// Variants found.
        found: String,
    },
}

/// Resolving one kernel of `kernels.toml` failed.
#[derive(Debug, thiserror::Error)]
#[error("kernel `{name}`: {source}")]
pub struct KernelError {
    /// Its local name.
    pub name: String,
    pub source: Box<ResolveError>,
}

/// The lock for `manifest`: `old`'s pin of each Hub kernel whose repo and request are
/// unchanged (none with `update`), every other one resolved against the Hub and handed to
/// `on_resolved`; `old`'s `[tvm-ffi]` pin is kept. What `cargo kernels lock` writes and what a
/// build with a stale lock proposes.
pub fn relock(
    manifest: &Manifest,
    old: Option<&Lock>,
    hub: &mut Hub,
    update: bool,
    mut on_resolved: impl FnMut(&ResolvedKernel),
) -> Result<Lock, KernelError> {
    let mut lock = Lock {
        kernels: Vec::new(),
        tvm_ffi: old.and_then(|l| l.tvm_ffi.clone()),
        cuda_runtime: old.and_then(|l| l.cuda_runtime.clone()),
    };
    for (name, repo, requested) in manifest.hub_kernels() {
        let kept = old.and_then(|l| l.kernel(name)).filter(|k| !update && k.repo == repo && &k.requested == requested);
        let pinned = match kept {
            Some(k) => k.clone(),
            None => {
                let k = resolve(hub, name, repo, requested)
                    .map_err(|e| KernelError { name: name.to_owned(), source: Box::new(e) })?;
                on_resolved(&k);
                k
            }
        };
        lock.kernels.push(pinned);
    }
    Ok(lock)
}

/// Resolves `repo` at `requested` against the Hub.
pub fn resolve(hub: &mut Hub, name: &str, repo: &str, requested: &Requested) -> Result<ResolvedKernel, ResolveError> {
    let commit = match requested {
        Requested::Version(v) => hub.resolve_version(repo, *v)?,
        Requested::Revision(r) => hub.resolve_revision(repo, r)?,
    };
    let all = hub.list_variants(repo, &commit)?;
    let loadable: Vec<&String> = all.iter().filter(|v| VariantName::is_loadable(v)).collect();
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
fn fetch_sized(hub: &mut Hub, repo: &str, commit: &str, remote: &RemoteFile) -> Result<Vec<u8>, FetchError> {
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
