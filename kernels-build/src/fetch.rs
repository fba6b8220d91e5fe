//! Fetching a pinned variant: every file `kernels.lock` pins for it, from the Hub cache or
//! the Hub, each checked against its pinned sha256 and size as it is read. With a warm cache
//! no network call is made.

use std::path::PathBuf;

use crate::hub::{FetchError, Hub};
use crate::lock::{ResolvedFile, ResolvedVariant};

/// One pinned file, fetched.
#[derive(Debug, Clone)]
pub struct FetchedFile {
    /// The pin it was checked against.
    pub pin: ResolvedFile,
    /// Where it lies in the Hub cache snapshot.
    pub path: PathBuf,
    /// Its bytes, as checked.
    pub bytes: Vec<u8>,
}

/// Downloads (or finds in the cache) every pinned file of `variant` of `repo` at `commit`.
pub fn pinned_files(
    hub: &mut Hub,
    repo: &str,
    commit: &str,
    variant: &ResolvedVariant,
) -> Result<Vec<FetchedFile>, FetchError> {
    variant
        .files
        .iter()
        .map(|pin| {
            let remote = format!("build/{}/{}", variant.name, pin.path);
            let (path, bytes) = hub.fetch_expecting(repo, commit, &remote, Some(&pin.sha256), Some(pin.size))?;
            Ok(FetchedFile { pin: pin.clone(), path, bytes })
        })
        .collect()
}
