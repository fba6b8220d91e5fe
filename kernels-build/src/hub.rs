//! Talking to the Hub: resolving versions, listing variant files, and downloading into the
//! standard Hugging Face cache — every file verified by sha256.
//!
//! The cache is the one the Python `kernels` package uses:
//! `<cache>/kernels--<org>--<name>/snapshots/<commit>/<path>`, a relative link to
//! `blobs/<sha256 of the content>`. A file already there with the expected hash is used
//! without any network call; a damaged one is removed, snapshot link and blob both.
//!
//! Nothing the endpoint sends reaches a file system path unchecked: listed paths must be plain
//! paths inside their variant directory, commits must be commit ids, sizes are bounded, and
//! file names in the cache are computed here (never taken from `ETag` or `X-Repo-Commit`).
//! Every request has a deadline, listings a page limit, and the token goes to the endpoint's
//! own origin only.
//!
//! The network side (the `http` submodule: reqwest, tokio and a TLS stack) is the crate's
//! default feature `hub`. Without it, a `Hub` serves what the cache holds and nothing else:
//! a step that needs the Hub fails with [`FetchError::NeedsHubFeature`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use kernels_runtime::digest::sha256_hex;
use kernels_runtime::env::{CARGO_NET_OFFLINE, HF_ENDPOINT, HF_HUB_OFFLINE, HF_TOKEN, HF_TOKEN_PATH};
use kernels_runtime::hub_cache;

use crate::env::Env;

#[cfg(feature = "hub")]
mod http;

/// The largest file, and the largest listed size, accepted: 16 GiB.
pub const MAX_FILE_SIZE: u64 = 16 << 30;
/// The most pages one listing may span.
pub const MAX_PAGES: usize = 100;

/// Why a build without the `hub` feature cannot download.
const NO_HUB_FEATURE: &str = "kernels-build was built without its \"hub\" feature; enable it to download";

/// Hub access settings, resolved from the environment (DESIGN's env table) or set by hand.
#[derive(Clone, PartialEq, Eq)]
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

impl std::fmt::Debug for HubSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubSettings")
            .field("endpoint", &redact_endpoint(&self.endpoint))
            .field("cache_dir", &self.cache_dir)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("offline", &self.offline)
            .finish()
    }
}

impl HubSettings {
    /// Reads the settings the way the Python `kernels` package and `huggingface_hub` do.
    pub fn from_env(env: &Env) -> Self {
        let hf_home = hub_cache::hf_home_from(|k| env.path(k));
        let cache_dir = hub_cache::dir_from(|k| env.path(k))
            .unwrap_or_else(|| std::env::temp_dir().join("huggingface").join("hub"));
        let token = env.var(HF_TOKEN).or_else(|| {
            let path = env.path(HF_TOKEN_PATH).or_else(|| hf_home.as_ref().map(|h| h.join("token")))?;
            std::fs::read_to_string(path).ok().map(|t| t.trim().to_owned()).filter(|t| !t.is_empty())
        });
        let offline = env.flag(HF_HUB_OFFLINE) || env.flag(CARGO_NET_OFFLINE);
        let endpoint = env.var(HF_ENDPOINT).unwrap_or_else(|| "https://huggingface.co".to_owned());
        HubSettings { endpoint: endpoint.trim_end_matches('/').to_owned(), cache_dir, token, offline }
    }
}

/// `endpoint` without the `user:password@` part, for messages.
fn redact_endpoint(endpoint: &str) -> String {
    #[cfg(feature = "hub")]
    if let Ok(url) = reqwest::Url::parse(endpoint) {
        return http::shown_url(&url).trim_end_matches('/').to_owned();
    }
    match endpoint.split_once("://") {
        Some((scheme, rest)) => {
            let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            let host = rest[..end].rsplit_once('@').map_or(&rest[..end], |(_, host)| host);
            format!("{scheme}://{host}{}", &rest[end..])
        }
        None => endpoint.to_owned(),
    }
}

/// A value from the Hub or a caller, quoted and with control characters escaped, for messages.
fn shown(value: &str) -> String {
    format!("`{}`", value.escape_debug())
}

/// A Hub operation failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Network use is needed but switched off.
    #[error(
        "{what}: not in the Hub cache ({cache}) and the network is off ({why}); run `cargo kernels download` with network access, or unset {HF_HUB_OFFLINE}/{CARGO_NET_OFFLINE}"
    )]
    Offline {
        /// What was needed.
        what: String,
        /// The cache searched.
        cache: PathBuf,
        /// Which setting turned the network off.
        why: String,
    },
    /// The Hub is needed (to resolve, list or download), and this build of kernels-build has
    /// no network side: its `hub` feature is off.
    #[error(
        "{what}: needs the Hub, but kernels-build was built without its \"hub\" feature, so it reads the Hub cache ({cache}) only: enable kernels-build's \"hub\" feature, or run `cargo kernels download` (with an up-to-date kernels.lock, from `cargo kernels lock`) to put the files in the cache"
    )]
    NeedsHubFeature {
        /// What was needed.
        what: String,
        /// The cache searched.
        cache: PathBuf,
    },
    /// A cached file failed verification, was removed, and cannot be fetched again offline.
    #[error(
        "{what}: the cached copy ({cache}) {why}; it was removed, and the network is off ({offline}): run `cargo kernels download` with network access to fetch it again"
    )]
    Damaged {
        /// The file.
        what: String,
        /// Where it was cached.
        cache: PathBuf,
        /// How it failed.
        why: String,
        /// Why the network is off.
        offline: String,
    },
    /// The Hub answered with an error, an answer that cannot be used, or not at all.
    #[error("{what}: {} (endpoint {endpoint})", error_chain(.source))]
    Hub {
        /// What was being done.
        what: String,
        /// Endpoint used, without credentials.
        endpoint: String,
        /// What went wrong.
        #[source]
        source: HubError,
    },
    /// A version's branch does not exist.
    #[error("{repo}: no branch `{branch}` (version {version}); branches: {available}")]
    NoSuchVersion {
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
        repo: String,
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
        repo: String,
        commit: String,
        /// Path in the repo.
        path: String,
        /// Listed size.
        expected: u64,
        /// Received size.
        actual: u64,
    },
    /// A download carried more bytes than the file may have; it was stopped.
    #[error(
        "{repo}@{commit}: {path} is larger than the {limit} bytes it may have; the download was stopped and nothing was kept"
    )]
    TooLarge {
        repo: String,
        commit: String,
        /// Path in the repo.
        path: String,
        /// The size it may have.
        limit: u64,
    },
    /// A path (listed by the Hub or asked for) that is not a plain path inside the repo, or a
    /// listed entry that cannot be used.
    #[error("{repo}@{commit}: {}: {why}; nothing was read or written for it", shown(.path))]
    UnsafePath {
        repo: String,
        commit: String,
        path: String,
        /// What is wrong with it.
        why: String,
    },
    /// A commit that is not a commit id, so it cannot name a snapshot directory.
    #[error("{repo}: {} is not a commit id (40 or 64 lowercase hex digits)", shown(.commit))]
    Commit {
        repo: String,
        /// The value.
        commit: String,
    },
    /// Reading or writing the cache failed.
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// A repo id is not `org/name`.
    #[error("`{0}` is not a Hub repo id of the form `org/name`")]
    RepoId(String),
}

/// What went wrong between us and the Hub.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// The Hub answered with an error status.
    #[error("HTTP {status}{}", .message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
    Status {
        /// The status code.
        status: u16,
        /// The Hub's explanation, when it gave one.
        message: Option<String>,
    },
    /// The request could not be sent, or the answer broke off.
    #[cfg(feature = "hub")]
    #[error(transparent)]
    Transport(reqwest::Error),
    /// The request was still running at its deadline.
    #[error("no complete answer within {0:?} (timed out)")]
    Deadline(Duration),
    /// The answer breaks the Hub's protocol or holds a value that is unsafe to use.
    #[error("{0}")]
    Invalid(String),
}

impl HubError {
    /// Whether a timeout (of a connection, a read or the whole request) ended the request.
    pub fn is_timeout(&self) -> bool {
        match self {
            #[cfg(feature = "hub")]
            HubError::Transport(e) => e.is_timeout(),
            HubError::Deadline(_) => true,
            _ => false,
        }
    }

    #[cfg(feature = "hub")]
    fn transport(e: reqwest::Error) -> Self {
        let url = e.url().map(|u| {
            let mut u = u.clone();
            let _ = u.set_username("");
            let _ = u.set_password(None);
            u.set_query(None);
            u
        });
        HubError::Transport(match url {
            Some(url) => e.with_url(url),
            None => e,
        })
    }
}

/// An error and its causes, `: `-separated.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
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

/// Told how each download advances, e.g. to draw a progress bar. A [`Hub`] has none unless
/// one is given ([`Hub::with_progress`]); the build never gives one (cargo captures its output).
pub trait Progress: Send {
    /// `so_far` bytes of `path` (in the repo) received, of `total` when known; called with 0
    /// when the download starts, then after each chunk.
    fn bytes(&mut self, path: &str, so_far: u64, total: Option<u64>);

    /// The download of `path` ended, received or not.
    fn done(&mut self, path: &str) {
        let _ = path;
    }
}

/// A [`Progress`] hook, kept by the [`Hub`].
struct ProgressHook(#[cfg_attr(not(feature = "hub"), allow(dead_code))] Box<dyn Progress>);

impl std::fmt::Debug for ProgressHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Progress")
    }
}

/// A Hub client for kernel repos.
#[derive(Debug)]
pub struct Hub {
    settings: HubSettings,
    /// Told of each download's bytes, when set ([`Hub::with_progress`]); only downloads (the
    /// `hub` feature) read it.
    #[cfg_attr(not(feature = "hub"), allow(dead_code))]
    progress: Option<ProgressHook>,
    /// Why the network is off, when a caller switched it off ([`Hub::offline_because`]).
    offline_why: Option<&'static str>,
    /// What the caller should tell the user ([`Hub::take_notes`]).
    notes: Vec<String>,
    #[cfg(feature = "hub")]
    http: Option<http::Http>,
    #[cfg_attr(not(feature = "hub"), allow(dead_code))]
    connect_timeout: Duration,
    #[cfg_attr(not(feature = "hub"), allow(dead_code))]
    read_timeout: Duration,
    #[cfg_attr(not(feature = "hub"), allow(dead_code))]
    request_timeout: Duration,
}

/// `org/name`, each part a plain name as the Hub allows them (no `--` or `..`): it becomes part
/// of URLs and of the cache folder name.
fn split_repo(repo: &str) -> Result<(&str, &str), FetchError> {
    let plain = |s: &str| {
        !s.is_empty()
            && s != "."
            && s != ".."
            && !s.contains("--")
            && !s.contains("..")
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    };
    match repo.split_once('/') {
        Some((org, name)) if plain(org) && plain(name) => Ok((org, name)),
        _ => Err(FetchError::RepoId(repo.to_owned())),
    }
}

/// `repo` split as [`split_repo`] does, when `commit` is a commit id: what every request for
/// a file or listing at a pinned commit checks first.
fn split_pinned<'r>(repo: &'r str, commit: &str) -> Result<(&'r str, &'r str), FetchError> {
    let parts = split_repo(repo)?;
    if !is_commit_id(commit) {
        return Err(FetchError::Commit { repo: repo.to_owned(), commit: commit.to_owned() });
    }
    Ok(parts)
}

/// Whether `s` is a commit id: 40 (SHA-1) or 64 (SHA-256) lowercase hex digits.
fn is_commit_id(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Why `path` is not a plain relative path, if it is not one (the rule of digest keys).
fn path_problem(path: &str) -> Option<&'static str> {
    kernels_runtime::metadata::check_digest_path(path).err()
}

#[derive(serde::Deserialize)]
struct Refs {
    branches: Vec<Ref>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Ref {
    name: String,
    target_commit: String,
}

#[cfg(feature = "hub")]
#[derive(serde::Deserialize)]
struct RepoInfo {
    sha: Option<String>,
}

#[derive(serde::Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum TreeEntry {
    File { path: String, size: u64 },
    Directory { path: String },
}

impl TreeEntry {
    fn path(&self) -> &str {
        match self {
            TreeEntry::File { path, .. } | TreeEntry::Directory { path } => path,
        }
    }
}

impl Hub {
    /// A client with these settings. No network is used until a call needs it.
    pub fn new(settings: HubSettings) -> Self {
        Hub {
            settings,
            progress: None,
            offline_why: None,
            notes: Vec::new(),
            #[cfg(feature = "hub")]
            http: None,
            connect_timeout: Duration::from_secs(20),
            read_timeout: Duration::from_secs(60),
            request_timeout: Duration::from_secs(300),
        }
    }

    /// Replaces the HTTP timeouts (default: 20 s to connect, 60 s for each wait for data).
    pub fn with_timeouts(mut self, connect: Duration, read: Duration) -> Self {
        self.connect_timeout = connect;
        self.read_timeout = read;
        #[cfg(feature = "hub")]
        {
            self.http = None;
        }
        self
    }

    /// Replaces the deadline of one request, redirects and retries aside (default 300 s).
    /// A download gets one more second for each 128 KiB it may carry.
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Tells `progress` how each download advances (files found in the cache are not downloaded,
    /// so it hears nothing of them).
    pub fn with_progress(mut self, progress: Box<dyn Progress>) -> Self {
        self.progress = Some(ProgressHook(progress));
        self
    }

    /// The settings in use.
    pub fn settings(&self) -> &HubSettings {
        &self.settings
    }

    fn endpoint_shown(&self) -> String {
        redact_endpoint(&self.settings.endpoint)
    }

    fn hub_err(&self, what: &str, source: HubError) -> FetchError {
        FetchError::Hub { what: what.to_owned(), endpoint: self.endpoint_shown(), source }
    }

    /// Switches the network off, saying why in messages (e.g. "`cargo kernels verify` checks the
    /// cache only").
    pub fn offline_because(mut self, why: &'static str) -> Self {
        self.settings.offline = true;
        self.offline_why = Some(why);
        self
    }

    /// What happened that the user should hear of (a damaged cached file removed and fetched
    /// again), since the last call.
    pub fn take_notes(&mut self) -> Vec<String> {
        std::mem::take(&mut self.notes)
    }

    fn offline_why(&self) -> String {
        match self.offline_why {
            Some(why) => why.to_owned(),
            None if !self.settings.offline => NO_HUB_FEATURE.to_owned(),
            None => format!("{HF_HUB_OFFLINE} or {CARGO_NET_OFFLINE} is set"),
        }
    }

    /// The error for a step that needs the Hub when the `hub` feature is off.
    pub fn needs_hub_feature(&self, what: &str) -> FetchError {
        FetchError::NeedsHubFeature { what: what.to_owned(), cache: self.settings.cache_dir.clone() }
    }

    /// The newest major version the repo publishes (the highest `<N>` of its `v<N>` branches)
    /// and the commit it points to; `None` when it has no such branch.
    pub fn newest_version(&mut self, repo: &str) -> Result<Option<(u64, String)>, FetchError> {
        let what = format!("{repo}: listing its version branches (v<N>)");
        let refs = self.refs(&what, repo)?;
        let newest = refs
            .branches
            .iter()
            .filter_map(|b| {
                let digits = b.name.strip_prefix('v')?;
                let plain = !digits.is_empty() && digits.bytes().all(|c| c.is_ascii_digit());
                plain.then(|| digits.parse::<u64>().ok().map(|n| (n, b)))?
            })
            .max_by_key(|(n, _)| *n);
        match newest {
            Some((n, b)) => Ok(Some((n, self.checked_commit(&what, &b.target_commit)?))),
            None => Ok(None),
        }
    }

    /// The commit a major version (`v<N>` branch) points to.
    pub fn resolve_version(&mut self, repo: &str, version: u64) -> Result<String, FetchError> {
        let what = format!("{repo}: resolving version {version}");
        let refs = self.refs(&what, repo)?;
        let branch = format!("v{version}");
        let Some(found) = refs.branches.iter().find(|b| b.name == branch) else {
            let mut names: Vec<String> = refs.branches.iter().map(|b| b.name.escape_debug().to_string()).collect();
            names.sort();
            return Err(FetchError::NoSuchVersion {
                repo: repo.to_owned(),
                branch,
                version,
                available: names.join(", "),
            });
        };
        self.checked_commit(&what, &found.target_commit)
    }

    /// The commit a revision (branch, tag or commit) points to.
    pub fn resolve_revision(&mut self, repo: &str, revision: &str) -> Result<String, FetchError> {
        let what = format!("{repo}: resolving revision {}", shown(revision));
        let sha = self.revision_sha(&what, repo, revision)?;
        if sha.is_empty() {
            return Err(self.hub_err(&what, HubError::Invalid("the Hub's answer names no commit sha".into())));
        }
        self.checked_commit(&what, &sha)
    }

    fn checked_commit(&self, what: &str, commit: &str) -> Result<String, FetchError> {
        if is_commit_id(commit) {
            return Ok(commit.to_owned());
        }
        let why =
            format!("the Hub names {commit:?} as the commit, which is not a commit id (40 or 64 lowercase hex digits)");
        Err(self.hub_err(what, HubError::Invalid(why)))
    }

    /// The variant directories under `build/` at `commit`.
    pub fn list_variants(&mut self, repo: &str, commit: &str) -> Result<Vec<String>, FetchError> {
        let what = format!("{repo}@{commit}: listing build/");
        let entries = self.list_tree(&what, repo, commit, "build", false)?;
        let mut out = Vec::new();
        for entry in entries {
            let path = entry.path();
            let name = path.strip_prefix("build/").filter(|n| !n.contains('/') && path_problem(n).is_none());
            let Some(name) = name else {
                return Err(FetchError::UnsafePath {
                    repo: repo.to_owned(),
                    commit: commit.to_owned(),
                    path: path.to_owned(),
                    why: "the Hub lists it in build/, but it is not a plain name inside build/".into(),
                });
            };
            if let TreeEntry::Directory { .. } = entry {
                out.push(name.to_owned());
            }
        }
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// Every file of `build/<variant>/` at `commit`, sorted by path.
    pub fn list_variant_files(
        &mut self,
        repo: &str,
        commit: &str,
        variant: &str,
    ) -> Result<Vec<RemoteFile>, FetchError> {
        let unsafe_path = |path: &str, why: String| FetchError::UnsafePath {
            repo: repo.to_owned(),
            commit: commit.to_owned(),
            path: path.to_owned(),
            why,
        };
        if variant.contains('/') || path_problem(variant).is_some() {
            return Err(unsafe_path(variant, "not a plain variant directory name".into()));
        }
        let what = format!("{repo}@{commit}: listing build/{variant}");
        let dir = format!("build/{variant}");
        let entries = self.list_tree(&what, repo, commit, &dir, true)?;
        let prefix = format!("{dir}/");
        let mut out: Vec<RemoteFile> = Vec::new();
        for entry in entries {
            let path = entry.path();
            let Some(rel) = path.strip_prefix(&prefix) else {
                return Err(unsafe_path(path, format!("the Hub lists it, but it is not inside {prefix}")));
            };
            if let Some(problem) = path_problem(rel) {
                return Err(unsafe_path(path, format!("the Hub lists it, but it is not a plain path ({problem})")));
            }
            if let TreeEntry::File { path, size } = entry {
                if size > MAX_FILE_SIZE {
                    let why = format!("the Hub lists it with {size} bytes, more than the {MAX_FILE_SIZE} accepted");
                    return Err(unsafe_path(&path, why));
                }
                out.push(RemoteFile { path, size });
            }
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        if let Some(twice) = out.windows(2).find(|w| w[0].path == w[1].path) {
            return Err(unsafe_path(&twice[0].path, "the Hub lists it twice".into()));
        }
        Ok(out)
    }

    /// Removes a cached file (snapshot link and blob) that turned out to be wrong. Only files
    /// inside a snapshot directory of this cache are touched.
    pub fn forget(&self, cached: &Path) {
        remove_cached(&self.settings.cache_dir, cached);
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
        self.fetch_expecting(repo, commit, path, expected, None)
    }

    /// As [`Hub::fetch`], and with `size` the file must have exactly that many bytes: a
    /// download is stopped as soon as it carries more.
    pub fn fetch_expecting(
        &mut self,
        repo: &str,
        commit: &str,
        path: &str,
        sha256: Option<&str>,
        size: Option<u64>,
    ) -> Result<(PathBuf, Vec<u8>), FetchError> {
        split_pinned(repo, commit)?;
        if let Some(problem) = path_problem(path) {
            return Err(FetchError::UnsafePath {
                repo: repo.to_owned(),
                commit: commit.to_owned(),
                path: path.to_owned(),
                why: format!("not a plain path in the repo ({problem})"),
            });
        }
        let cached = self.cache_path(repo, commit, path);
        if let Ok(meta) = std::fs::metadata(&cached)
            && meta.is_file()
        {
            // A copy of the wrong size is not even read.
            let damage = match size {
                Some(want) if meta.len() != want => Err(format!("has {} bytes, not the pinned {want}", meta.len())),
                _ => std::fs::read(&cached).map_err(|e| format!("cannot be read ({e})")),
            };
            let damage: Result<(), String> = match damage {
                Ok(bytes) => match sha256 {
                    Some(want) if sha256_hex(&bytes) != want => {
                        Err(format!("does not match its pinned sha256 {want} (it has {})", sha256_hex(&bytes)))
                    }
                    _ => return Ok((cached, bytes)),
                },
                Err(why) => Err(why),
            };
            if let Err(why) = damage {
                remove_cached(&self.settings.cache_dir, &cached);
                let what = format!("{repo}@{commit}: {path}");
                if self.settings.offline || !cfg!(feature = "hub") {
                    return Err(FetchError::Damaged { what, cache: cached, why, offline: self.offline_why() });
                }
                self.notes.push(format!("{what}: the cached copy {why}; removed it, downloading it again"));
            }
        }
        self.download(repo, commit, path, sha256, size)
    }
}

/// The cache folder of a kernel repo: `kernels--<org>--<name>`.
fn folder_name(repo: &str) -> String {
    format!("kernels--{}", repo.replace('/', "--"))
}

/// Without the `hub` feature: every step that needs the Hub checks its arguments as the
/// network side does, then fails with [`FetchError::NeedsHubFeature`].
#[cfg(not(feature = "hub"))]
impl Hub {
    fn refs(&mut self, what: &str, repo: &str) -> Result<Refs, FetchError> {
        split_repo(repo)?;
        Err(self.needs_hub_feature(what))
    }

    fn revision_sha(&mut self, what: &str, repo: &str, _revision: &str) -> Result<String, FetchError> {
        split_repo(repo)?;
        Err(self.needs_hub_feature(what))
    }

    fn list_tree(
        &mut self,
        what: &str,
        repo: &str,
        commit: &str,
        _dir: &str,
        _recursive: bool,
    ) -> Result<Vec<TreeEntry>, FetchError> {
        split_pinned(repo, commit)?;
        Err(self.needs_hub_feature(what))
    }

    fn download(
        &mut self,
        repo: &str,
        commit: &str,
        path: &str,
        _sha256: Option<&str>,
        _size: Option<u64>,
    ) -> Result<(PathBuf, Vec<u8>), FetchError> {
        Err(self.needs_hub_feature(&format!("{repo}@{commit}: downloading {path}")))
    }
}

/// Removes a cached file: the snapshot entry and, when it links to a blob of the same repo
/// folder, that blob. Paths that are not inside a snapshot directory of `cache_dir` are left.
fn remove_cached(cache_dir: &Path, path: &Path) {
    let Ok(rel) = path.strip_prefix(cache_dir) else { return };
    let parts: Vec<_> = rel.components().collect();
    let plain = parts.iter().all(|c| matches!(c, std::path::Component::Normal(_)));
    if !plain || parts.len() < 4 || parts[1].as_os_str() != "snapshots" {
        return;
    }
    let blobs = cache_dir.join(parts[0].as_os_str()).join("blobs");
    if let Ok(meta) = std::fs::symlink_metadata(path)
        && meta.file_type().is_symlink()
        && let (Ok(blob), Ok(blobs)) = (std::fs::canonicalize(path), std::fs::canonicalize(&blobs))
        && blob.parent() == Some(blobs.as_path())
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
    fn any_non_zero_number_turns_offline_on() {
        let offline =
            |value: &str| HubSettings::from_env(&Env::fixed([("HOME", "/h"), (HF_HUB_OFFLINE, value)])).offline;
        assert!(offline("2"));
        assert!(offline("1"));
        assert!(!offline("0"));
    }

    const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

    /// Settings with no token, for `endpoint` and the cache in `cache_dir`.
    fn settings_for(endpoint: &str, cache_dir: impl Into<std::path::PathBuf>, offline: bool) -> HubSettings {
        HubSettings { endpoint: endpoint.into(), cache_dir: cache_dir.into(), token: None, offline }
    }

    #[test]
    fn offline_never_touches_the_network() {
        let cache = tempfile::tempdir().unwrap();
        let settings = settings_for("http://127.0.0.1:9", cache.path().to_owned(), true);
        let mut hub = Hub::new(settings);
        let err = hub.resolve_version("org/k", 1).unwrap_err();
        // Without the network side, that it is missing is the first thing to fix.
        let off = if cfg!(feature = "hub") { "network is off" } else { "without its \"hub\" feature" };
        assert!(err.to_string().contains(off), "{err}");
        // A cached file with the right hash is served offline.
        let p = hub.cache_path("org/k", COMMIT, "build/v/x.so");
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, b"bytes").unwrap();
        let (_, bytes) = hub.fetch("org/k", COMMIT, "build/v/x.so", Some(&sha256_hex(b"bytes"))).unwrap();
        assert_eq!(bytes, b"bytes");
        // A damaged one is removed, and offline there is no way to get it again: the error says
        // which file, how it failed, and why the network is off.
        let err = hub.fetch("org/k", COMMIT, "build/v/x.so", Some(&sha256_hex(b"other"))).unwrap_err();
        assert!(matches!(err, FetchError::Damaged { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("org/k@")
                && text.contains("build/v/x.so")
                && text.contains(&format!("does not match its pinned sha256 {}", sha256_hex(b"other")))
                && text.contains("it was removed")
                && text.contains("HF_HUB_OFFLINE or CARGO_NET_OFFLINE is set"),
            "{text}"
        );
        assert!(!p.exists());
        // A wrong size is named too, and a caller that switched the network off says why.
        std::fs::write(&p, b"bytes").unwrap();
        let mut hub = Hub::new(hub.settings.clone()).offline_because("`cargo kernels verify` reads the cache only");
        let err =
            hub.fetch_expecting("org/k", COMMIT, "build/v/x.so", Some(&sha256_hex(b"bytes")), Some(9)).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("has 5 bytes, not the pinned 9") && text.contains("reads the cache only"), "{text}");
        assert!(!p.exists());
        assert!(matches!(hub.fetch("bad", COMMIT, "x", None), Err(FetchError::RepoId(_))));
    }

    #[test]
    fn the_missing_hub_feature_is_named_with_its_fix() {
        let hub = Hub::new(settings_for("https://huggingface.co", "/c", false));
        let err = hub.needs_hub_feature("org/k@0123: downloading build/v/x.so");
        assert!(matches!(err, FetchError::NeedsHubFeature { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.starts_with("org/k@0123: downloading build/v/x.so: needs the Hub")
                && text.contains("Hub cache (/c)")
                && text.contains("enable kernels-build's \"hub\" feature, or run `cargo kernels download`"),
            "{text}"
        );
    }

    /// Without the `hub` feature (`cargo test -p kernels-build --no-default-features`): what
    /// the cache holds is served, and whatever needs the Hub names the fix.
    #[cfg(not(feature = "hub"))]
    #[test]
    fn without_the_hub_feature_only_the_cache_is_read() {
        let cache = tempfile::tempdir().unwrap();
        let settings = settings_for("http://127.0.0.1:9", cache.path().to_owned(), false);
        let mut hub = Hub::new(settings);
        let fix = "enable kernels-build's \"hub\" feature, or run `cargo kernels download`";
        let err = hub.fetch("org/k", COMMIT, "build/v/x.so", Some(&sha256_hex(b"bytes"))).unwrap_err();
        assert!(matches!(err, FetchError::NeedsHubFeature { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.starts_with(&format!("org/k@{COMMIT}: downloading build/v/x.so: ")) && text.contains(fix),
            "{text}"
        );
        for err in [
            hub.resolve_version("org/k", 1).unwrap_err(),
            hub.resolve_revision("org/k", "main").unwrap_err(),
            hub.list_variants("org/k", COMMIT).unwrap_err(),
        ] {
            assert!(matches!(err, FetchError::NeedsHubFeature { .. }) && err.to_string().contains(fix), "{err}");
        }
        // A cached file with the right hash is served; a damaged one is removed and named.
        let p = hub.cache_path("org/k", COMMIT, "build/v/x.so");
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, b"bytes").unwrap();
        let (_, bytes) = hub.fetch("org/k", COMMIT, "build/v/x.so", Some(&sha256_hex(b"bytes"))).unwrap();
        assert_eq!(bytes, b"bytes");
        let err = hub.fetch("org/k", COMMIT, "build/v/x.so", Some(&sha256_hex(b"other"))).unwrap_err();
        assert!(matches!(err, FetchError::Damaged { .. }) && err.to_string().contains("\"hub\" feature"), "{err}");
        assert!(!p.exists());
        assert!(matches!(hub.fetch("bad", COMMIT, "x", None), Err(FetchError::RepoId(_))));
    }

    #[test]
    fn unsafe_arguments_are_refused_before_any_file_is_touched() {
        let root = tempfile::tempdir().unwrap();
        let cache = root.path().join("cache");
        let settings =
            HubSettings { endpoint: "http://127.0.0.1:9".into(), cache_dir: cache.clone(), token: None, offline: true };
        let mut hub = Hub::new(settings);
        std::fs::write(root.path().join("victim"), b"x").unwrap();
        for commit in ["abc", "../../..", &COMMIT.to_uppercase()] {
            let err = hub.fetch("org/k", commit, "build/v/x.so", Some(&sha256_hex(b"y"))).unwrap_err();
            assert!(matches!(err, FetchError::Commit { .. }), "{commit}: {err}");
        }
        let victim = root.path().join("victim");
        for path in [victim.to_str().unwrap(), "../../../../victim", "build/v/./x", "a\\b", "a\0b", "", "c:x"] {
            let err = hub.fetch("org/k", COMMIT, path, Some(&sha256_hex(b"y"))).unwrap_err();
            assert!(matches!(err, FetchError::UnsafePath { .. }), "{path:?}: {err}");
            assert!(err.to_string().contains(&path.escape_debug().to_string()), "{err}");
        }
        for repo in ["org/../k", "../k", "org/k/x", "org/", "o--x/k", "org/a..b", "org/a b"] {
            assert!(matches!(hub.fetch(repo, COMMIT, "x", None), Err(FetchError::RepoId(_))), "{repo}");
        }
        // `forget` removes nothing outside a snapshot directory of the cache.
        hub.forget(&victim);
        hub.forget(&cache.join("kernels--org--k/snapshots/../../../victim"));
        assert!(victim.exists());
        assert!(!cache.exists(), "nothing was created");
    }

    #[test]
    fn credentials_are_redacted() {
        assert_eq!(redact_endpoint("https://user:pw@hub.example/x"), "https://hub.example/x");
        assert_eq!(redact_endpoint("https://hub.example"), "https://hub.example");
        assert_eq!(redact_endpoint("not a url://user:pw@host/p"), "not a url://host/p");
        let settings = HubSettings {
            endpoint: "http://u:pw@h".into(),
            cache_dir: "/c".into(),
            token: Some("hf_x".into()),
            offline: false,
        };
        assert_eq!(
            format!("{settings:?}"),
            r#"HubSettings { endpoint: "http://h", cache_dir: "/c", token: Some("<redacted>"), offline: false }"#
        );
    }
}
