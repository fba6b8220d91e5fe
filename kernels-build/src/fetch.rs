//! Talking to the Hub through the `hf-hub` crate: resolving versions, listing variant files,
//! and downloading into the standard Hugging Face cache — every file verified by sha256.
//!
//! The cache is the one the Python `kernels` package uses:
//! `<cache>/kernels--<org>--<name>/snapshots/<commit>/<path>`. A file already there with the
//! expected hash is used without any network call; a file that arrives with the wrong hash
//! (an error page stored as content, a truncated body) is removed from the cache, snapshot
//! link and blob both, and reported.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hf_hub::repository::RepoTreeEntry;
use hf_hub::{HFClientBuilder, HFClientSync, HFError, HFRepositorySync, RepoTypeKernel};
use kernels_runtime::loader;
use kernels_runtime::metadata::sha256_hex;

use crate::env::Env;

/// Hub access settings, resolved from the environment (DESIGN's env table) or set by hand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HubSettings {
    /// Base URL (`HF_ENDPOINT`, default `https://huggingface.co`).
    pub endpoint: String,
    /// Hub cache (`HF_HUB_CACHE`, `$HF_HOME/hub`, `$XDG_CACHE_HOME/huggingface/hub`,
    /// `~/.cache/huggingface/hub`).
    pub cache_dir: PathBuf,
    /// Token (`HF_TOKEN`, the file at `HF_TOKEN_PATH`, `$HF_HOME/token`).
    pub token: Option<String>,
    /// No network (`HF_HUB_OFFLINE`, `CARGO_NET_OFFLINE`).
    pub offline: bool,
}

impl HubSettings {
    /// Reads the settings the way the Python `kernels` package and `huggingface_hub` do.
    pub fn from_env(env: &Env) -> Self {
        let hf_home = loader::hf_home_from(|k| env.path(k));
        let cache_dir = loader::hf_hub_cache_from(|k| env.path(k))
            .unwrap_or_else(|| std::env::temp_dir().join("huggingface").join("hub"));
        let token = env.var("HF_TOKEN").or_else(|| {
            let path = env.path("HF_TOKEN_PATH").or_else(|| hf_home.as_ref().map(|h| h.join("token")))?;
            std::fs::read_to_string(path).ok().map(|t| t.trim().to_owned()).filter(|t| !t.is_empty())
        });
        let offline = env.flag("HF_HUB_OFFLINE") || env.flag("CARGO_NET_OFFLINE");
        let endpoint = env.var("HF_ENDPOINT").unwrap_or_else(|| "https://huggingface.co".to_owned());
        // hf-hub reads these itself when a setting is not given; they are recorded so the
        // build reruns when they change.
        for key in ["HUGGINGFACE_HUB_CACHE", "HF_HUB_DISABLE_IMPLICIT_TOKEN", "HF_HUB_USER_AGENT_ORIGIN"] {
            let _ = env.var_os(key);
        }
        HubSettings { endpoint: endpoint.trim_end_matches('/').to_owned(), cache_dir, token, offline }
    }
}

/// A Hub operation failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Network use is needed but switched off.
    #[error(
        "{what}: not in the Hub cache ({cache}) and the network is off ({why}); run `cargo kernels download` with network access, or unset HF_HUB_OFFLINE/CARGO_NET_OFFLINE"
    )]
    Offline {
        /// What was needed.
        what: String,
        /// The cache searched.
        cache: PathBuf,
        /// Which setting turned the network off.
        why: &'static str,
    },
    /// The Hub answered with an error or could not be reached.
    #[error("{what}: {} (endpoint {endpoint})", error_chain(.source))]
    Hub {
        /// What was being done.
        what: String,
        /// Endpoint used.
        endpoint: String,
        /// hf-hub's error.
        #[source]
        source: Box<HFError>,
    },
    /// A version's branch does not exist.
    #[error("{repo}: no branch `{branch}` (version {version}); branches: {available}")]
    NoSuchVersion {
        /// Repo.
        repo: String,
        /// `v<N>`.
        branch: String,
        /// The requested major version.
        version: u64,
        /// Branch names found.
        available: String,
    },
    /// A downloaded (or cached) file does not have the expected hash.
    #[error(
        "{repo}@{commit}: {path} has sha256 {actual}, expected {expected}; the damaged copy was removed from the cache"
    )]
    Mismatch {
        /// Repo.
        repo: String,
        /// Commit.
        commit: String,
        /// Path in the repo.
        path: String,
        /// Expected hex sha256.
        expected: String,
        /// Found hex sha256.
        actual: String,
    },
    /// A downloaded file does not have the size the Hub lists for it.
    #[error(
        "{repo}@{commit}: {path} arrived with {actual} bytes, the Hub lists {expected}; the copy was removed from the cache"
    )]
    Size {
        /// Repo.
        repo: String,
        /// Commit.
        commit: String,
        /// Path in the repo.
        path: String,
        /// Listed size.
        expected: u64,
        /// Received size.
        actual: u64,
    },
    /// Reading a cached file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// A repo id is not `org/name`.
    #[error("`{0}` is not a Hub repo id of the form `org/name`")]
    RepoId(String),
}

/// An error and its causes, `: `-separated (hf-hub's top line alone often hides the cause).
fn error_chain(e: &HFError) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let line = s.to_string();
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        source = s.source();
    }
    text
}

/// A file in a variant directory on the Hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteFile {
    /// Path in the repo (`build/<variant>/<file>`).
    pub path: String,
    /// Size in bytes.
    pub size: u64,
}

/// A Hub client for kernel repos.
#[derive(Debug)]
pub struct Hub {
    settings: HubSettings,
    client: Option<HFClientSync>,
    connect_timeout: Duration,
    read_timeout: Duration,
}

fn split_repo(repo: &str) -> Result<(&str, &str), FetchError> {
    match repo.split_once('/') {
        Some((org, name)) if !org.is_empty() && !name.is_empty() && !name.contains('/') => Ok((org, name)),
        _ => Err(FetchError::RepoId(repo.to_owned())),
    }
}

impl Hub {
    /// A client with these settings. No network is used until a call needs it.
    pub fn new(settings: HubSettings) -> Self {
        Hub { settings, client: None, connect_timeout: Duration::from_secs(20), read_timeout: Duration::from_secs(60) }
    }

    /// Replaces the HTTP timeouts (default: 20 s to connect, 60 s for each wait for data).
    /// hf-hub sends its metadata `HEAD` requests through a client of its own, which these do
    /// not reach.
    pub fn with_timeouts(mut self, connect: Duration, read: Duration) -> Self {
        self.connect_timeout = connect;
        self.read_timeout = read;
        self.client = None;
        self
    }

    /// The settings in use.
    pub fn settings(&self) -> &HubSettings {
        &self.settings
    }

    fn offline_reason(&self) -> Option<&'static str> {
        self.settings.offline.then_some("HF_HUB_OFFLINE or CARGO_NET_OFFLINE is set")
    }

    fn repo(&mut self, repo: &str, what: &str) -> Result<HFRepositorySync<RepoTypeKernel>, FetchError> {
        if let Some(why) = self.offline_reason() {
            return Err(FetchError::Offline { what: what.to_owned(), cache: self.settings.cache_dir.clone(), why });
        }
        let (org, name) = split_repo(repo)?;
        if self.client.is_none() {
            let hub_err = |source: HFError| FetchError::Hub {
                what: "creating the Hub client".into(),
                endpoint: self.settings.endpoint.clone(),
                source: Box::new(source),
            };
            let http = reqwest::Client::builder()
                .connect_timeout(self.connect_timeout)
                .read_timeout(self.read_timeout)
                .user_agent(concat!("kernels-rs/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|e| hub_err(HFError::from(e)))?;
            let mut builder = HFClientBuilder::new()
                .endpoint(self.settings.endpoint.clone())
                .cache_dir(self.settings.cache_dir.clone())
                .client(http)
                .retry_max_attempts(3)
                .retry_base_delay(Duration::from_millis(200));
            if let Some(token) = &self.settings.token {
                builder = builder.token(token.clone());
            }
            self.client = Some(builder.build_sync().map_err(hub_err)?);
        }
        Ok(self.client.as_ref().map(|c| c.kernel(org, name)).expect("client was just created"))
    }

    fn hub_err(&self, what: impl Into<String>) -> impl FnOnce(HFError) -> FetchError + '_ {
        let what = what.into();
        move |source| FetchError::Hub { what, endpoint: self.settings.endpoint.clone(), source: Box::new(source) }
    }

    /// The commit a major version (`v<N>` branch) points to.
    pub fn resolve_version(&mut self, repo: &str, version: u64) -> Result<String, FetchError> {
        let what = format!("{repo}: resolving version {version}");
        let handle = self.repo(repo, &what)?;
        let refs = handle.list_refs().send().map_err(self.hub_err(what))?;
        let branch = format!("v{version}");
        refs.branches.iter().find(|b| b.name == branch).map(|b| b.target_commit.clone()).ok_or_else(|| {
            let mut names: Vec<_> = refs.branches.iter().map(|b| b.name.as_str()).collect();
            names.sort();
            FetchError::NoSuchVersion { repo: repo.to_owned(), branch, version, available: names.join(", ") }
        })
    }

    /// The commit a revision (branch, tag or commit) points to.
    pub fn resolve_revision(&mut self, repo: &str, revision: &str) -> Result<String, FetchError> {
        let what = format!("{repo}: resolving revision `{revision}`");
        let handle = self.repo(repo, &what)?;
        let info = handle.info().revision(revision).send().map_err(self.hub_err(what.clone()))?;
        info.sha.filter(|s| !s.is_empty()).ok_or_else(|| FetchError::Hub {
            what,
            endpoint: self.settings.endpoint.clone(),
            source: Box::new(HFError::InvalidParameter("the Hub's answer names no commit sha".into())),
        })
    }

    /// The variant directories under `build/` at `commit`.
    pub fn list_variants(&mut self, repo: &str, commit: &str) -> Result<Vec<String>, FetchError> {
        let what = format!("{repo}@{commit}: listing build/");
        let handle = self.repo(repo, &what)?;
        let entries = handle.list_tree().revision(commit).path_in_repo("build").send().map_err(self.hub_err(what))?;
        let mut out: Vec<String> = entries
            .into_iter()
            .filter_map(|e| match e {
                RepoTreeEntry::Directory { path, .. } => path.rsplit('/').next().map(str::to_owned),
                RepoTreeEntry::File { .. } => None,
            })
            .collect();
        out.sort();
        Ok(out)
    }

    /// Every file of `build/<variant>/` at `commit`, sorted by path.
    pub fn list_variant_files(
        &mut self,
        repo: &str,
        commit: &str,
        variant: &str,
    ) -> Result<Vec<RemoteFile>, FetchError> {
        let what = format!("{repo}@{commit}: listing build/{variant}");
        let handle = self.repo(repo, &what)?;
        let entries = handle
            .list_tree()
            .revision(commit)
            .path_in_repo(format!("build/{variant}"))
            .recursive(true)
            .send()
            .map_err(self.hub_err(what))?;
        let mut out: Vec<RemoteFile> = entries
            .into_iter()
            .filter_map(|e| match e {
                RepoTreeEntry::File { path, size, .. } => Some(RemoteFile { path, size }),
                RepoTreeEntry::Directory { .. } => None,
            })
            .collect();
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    /// Removes a cached file (snapshot link and blob) that turned out to be wrong.
    pub fn forget(&self, cached: &Path) {
        remove_cached(cached);
    }

    /// Where `path` of `repo` at `commit` lives in the Hub cache.
    pub fn cache_path(&self, repo: &str, commit: &str, path: &str) -> PathBuf {
        self.settings.cache_dir.join(folder_name(repo)).join("snapshots").join(commit).join(path)
    }

    /// The bytes of `path` at `commit`, from the cache when an intact copy is there, else
    /// downloaded into the cache. With `expected` (hex sha256) the bytes are verified and a
    /// damaged copy is removed; without it (resolution before a lock exists) they are
    /// returned as found.
    pub fn fetch(
        &mut self,
        repo: &str,
        commit: &str,
        path: &str,
        expected: Option<&str>,
    ) -> Result<(PathBuf, Vec<u8>), FetchError> {
        let cached = self.cache_path(repo, commit, path);
        if let Ok(bytes) = std::fs::read(&cached) {
            match expected {
                Some(want) if sha256_hex(&bytes) != want => remove_cached(&cached),
                _ => return Ok((cached, bytes)),
            }
        }
        let what = format!("{repo}@{commit}: downloading {path}");
        let handle = self.repo(repo, &what)?;
        let result = handle.download_file().filename(path).revision(commit).send();
        let file = match result {
            Ok(p) => p,
            Err(e) => {
                remove_cached(&cached);
                remove_partial_downloads(&self.settings.cache_dir, &folder_name(repo));
                return Err(self.hub_err(what)(e));
            }
        };
        let bytes = std::fs::read(&file).map_err(|source| FetchError::Io { path: file.clone(), source })?;
        if let Some(want) = expected {
            let actual = sha256_hex(&bytes);
            if actual != want {
                remove_cached(&file);
                return Err(FetchError::Mismatch {
                    repo: repo.to_owned(),
                    commit: commit.to_owned(),
                    path: path.to_owned(),
                    expected: want.to_owned(),
                    actual,
                });
            }
        }
        Ok((file, bytes))
    }
}

/// The cache folder of a kernel repo: `kernels--<org>--<name>`.
fn folder_name(repo: &str) -> String {
    format!("kernels--{}", repo.replace('/', "--"))
}

/// Removes the partial downloads (`blobs/<etag>.incomplete`) that hf-hub leaves when a transfer
/// breaks off. Each is removed only while holding hf-hub's lock for that blob
/// (`.locks/<folder>/<etag>.lock`, also used by huggingface_hub), so a download in progress in
/// another process is left alone.
// `File::try_lock` is newer than the declared MSRV, but hf-hub already needs it (`File::lock`).
#[allow(clippy::incompatible_msrv)]
fn remove_partial_downloads(cache_dir: &Path, folder: &str) {
    let Ok(entries) = std::fs::read_dir(cache_dir.join(folder).join("blobs")) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(etag) = name.to_str().and_then(|n| n.strip_suffix(".incomplete")) else { continue };
        let lock_path = cache_dir.join(".locks").join(folder).join(format!("{etag}.lock"));
        let lock = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(&lock_path);
        if let Ok(lock) = lock
            && lock.try_lock().is_ok()
        {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Removes a cached file: the blob a snapshot link points to, and the link.
fn remove_cached(path: &Path) {
    if let Ok(blob) = std::fs::canonicalize(path)
        && blob != path
    {
        let _ = std::fs::remove_file(&blob);
    }
    let _ = std::fs::remove_file(path);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_follow_the_hub_conventions() {
        let env = Env::fixed([("HOME", "/home/u")]);
        let s = HubSettings::from_env(&env);
        assert_eq!(s.cache_dir, PathBuf::from("/home/u/.cache/huggingface/hub"));
        assert_eq!(s.endpoint, "https://huggingface.co");
        assert!(!s.offline);
        assert!(env.read_vars().contains(&"HF_HUB_OFFLINE".to_owned()));

        let env =
            Env::fixed([("HF_HOME", "/hf"), ("HF_ENDPOINT", "http://127.0.0.1:1/"), ("CARGO_NET_OFFLINE", "true")]);
        let s = HubSettings::from_env(&env);
        assert_eq!(s.cache_dir, PathBuf::from("/hf/hub"));
        assert_eq!(s.endpoint, "http://127.0.0.1:1");
        assert!(s.offline);

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("token"), "hf_abc\n").unwrap();
        let env = Env::fixed([("HF_HOME", dir.path().as_os_str()), ("HF_HUB_CACHE", "/c".as_ref())]);
        let s = HubSettings::from_env(&env);
        assert_eq!(s.token.as_deref(), Some("hf_abc"));
        assert_eq!(s.cache_dir, PathBuf::from("/c"));
        let env = Env::fixed([("HF_HOME", dir.path().as_os_str()), ("HF_TOKEN", "hf_env".as_ref())]);
        assert_eq!(HubSettings::from_env(&env).token.as_deref(), Some("hf_env"));
    }

    #[test]
    fn offline_never_touches_the_network() {
        let cache = tempfile::tempdir().unwrap();
        let settings = HubSettings {
            endpoint: "http://127.0.0.1:9".into(),
            cache_dir: cache.path().to_owned(),
            token: None,
            offline: true,
        };
        let mut hub = Hub::new(settings);
        let err = hub.resolve_version("org/k", 1).unwrap_err();
        assert!(err.to_string().contains("network is off"), "{err}");
        // A cached file with the right hash is served offline.
        let p = hub.cache_path("org/k", "abc", "build/v/x.so");
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, b"bytes").unwrap();
        let (_, bytes) = hub.fetch("org/k", "abc", "build/v/x.so", Some(&sha256_hex(b"bytes"))).unwrap();
        assert_eq!(bytes, b"bytes");
        // A damaged one is removed, and offline there is no way to get it again.
        let err = hub.fetch("org/k", "abc", "build/v/x.so", Some(&sha256_hex(b"other"))).unwrap_err();
        assert!(matches!(err, FetchError::Offline { .. }), "{err}");
        assert!(!p.exists());
        assert!(matches!(hub.fetch("bad", "abc", "x", None), Err(FetchError::Offline { .. } | FetchError::RepoId(_))));
    }
}
