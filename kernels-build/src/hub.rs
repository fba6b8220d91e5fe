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

use std::collections::HashSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kernels_runtime::digest::sha256_hex;
use kernels_runtime::env::{CARGO_NET_OFFLINE, HF_ENDPOINT, HF_HUB_OFFLINE, HF_TOKEN, HF_TOKEN_PATH};
use kernels_runtime::hub_cache;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue, LINK, LOCATION};
use reqwest::{StatusCode, Url};
use sha2::{Digest as _, Sha256};

use crate::env::Env;

/// The largest file, and the largest listed size, accepted: 16 GiB.
pub const MAX_FILE_SIZE: u64 = 16 << 30;
/// The most pages one listing may span.
pub const MAX_PAGES: usize = 100;
/// The most entries one listing may hold.
const MAX_ENTRIES: usize = 100_000;
/// The largest API answer read (a listing page, refs, repo info).
const MAX_API_BODY: usize = 32 << 20;
/// The most redirects one request follows.
const MAX_REDIRECTS: usize = 10;
/// Retries after a failed request (a transient status or no answer), with doubling waits.
const RETRIES: u32 = 3;
const RETRY_DELAY: Duration = Duration::from_millis(200);
/// The slowest transfer a download's deadline allows for, in bytes per second.
const MIN_RATE: u64 = 128 << 10;

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
    match Url::parse(endpoint) {
        Ok(url) => shown_url(&url).trim_end_matches('/').to_owned(),
        Err(_) => match endpoint.split_once("://") {
            Some((scheme, rest)) => {
                let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
                let host = rest[..end].rsplit_once('@').map_or(&rest[..end], |(_, host)| host);
                format!("{scheme}://{host}{}", &rest[end..])
            }
            None => endpoint.to_owned(),
        },
    }
}

/// A URL without user name and password, for messages.
fn shown_url(url: &Url) -> String {
    let mut url = url.clone();
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.to_string()
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
            HubError::Transport(e) => e.is_timeout(),
            HubError::Deadline(_) => true,
            _ => false,
        }
    }

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
struct ProgressHook(Box<dyn Progress>);

impl std::fmt::Debug for ProgressHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Progress")
    }
}

/// A Hub client for kernel repos.
#[derive(Debug)]
pub struct Hub {
    settings: HubSettings,
    /// Told of each download's bytes, when set ([`Hub::with_progress`]).
    progress: Option<ProgressHook>,
    /// Why the network is off, when a caller switched it off ([`Hub::offline_because`]).
    offline_why: Option<&'static str>,
    /// What the caller should tell the user ([`Hub::take_notes`]).
    notes: Vec<String>,
    http: Option<Http>,
    connect_timeout: Duration,
    read_timeout: Duration,
    request_timeout: Duration,
}

/// The HTTP side: a client that follows no redirects by itself, and the runtime it runs on.
struct Http {
    runtime: tokio::runtime::Runtime,
    client: reqwest::Client,
    endpoint: Url,
    token: Option<HeaderValue>,
}

impl std::fmt::Debug for Http {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Http")
            .field("endpoint", &shown_url(&self.endpoint))
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish_non_exhaustive()
    }
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

/// Whether `s` is a commit id: 40 (SHA-1) or 64 (SHA-256) lowercase hex digits.
fn is_commit_id(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Why `path` is not a plain relative path, if it is not one (the rule of digest keys).
fn path_problem(path: &str) -> Option<&'static str> {
    kernels_runtime::metadata::check_digest_path(path).err()
}

/// Percent-encodes `segment` so it is exactly one path segment: everything but unreserved
/// characters, as `huggingface_hub` does for revisions.
fn encode_segment(segment: &str) -> String {
    let mut out = String::new();
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
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
        self.http = None;
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
            None => format!("{HF_HUB_OFFLINE} or {CARGO_NET_OFFLINE} is set"),
        }
    }

    /// The HTTP client, created on first use; an error when the network is off.
    fn http(&mut self, what: &str) -> Result<&Http, FetchError> {
        if self.settings.offline {
            return Err(FetchError::Offline {
                what: what.to_owned(),
                cache: self.settings.cache_dir.clone(),
                why: self.offline_why(),
            });
        }
        let http = match self.http.take() {
            Some(http) => http,
            None => self.new_http().map_err(|e| self.hub_err("creating the Hub client", e))?,
        };
        Ok(self.http.insert(http))
    }

    fn new_http(&self) -> Result<Http, HubError> {
        let endpoint = Url::parse(&self.settings.endpoint)
            .map_err(|e| HubError::Invalid(format!("the endpoint is not a URL: {e}")))?;
        if !matches!(endpoint.scheme(), "http" | "https") || endpoint.cannot_be_a_base() {
            return Err(HubError::Invalid("the endpoint is not an http(s) URL".into()));
        }
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| HubError::Invalid(format!("cannot start the HTTP runtime: {e}")))?;
        let client = {
            let _context = runtime.enter();
            reqwest::Client::builder()
                .connect_timeout(self.connect_timeout)
                .read_timeout(self.read_timeout)
                .redirect(reqwest::redirect::Policy::none())
                .user_agent(concat!("kernels-rs/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(HubError::transport)?
        };
        let token = match &self.settings.token {
            Some(token) => {
                let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
                    .map_err(|_| HubError::Invalid("the token is not a valid header value".into()))?;
                value.set_sensitive(true);
                Some(value)
            }
            None => None,
        };
        Ok(Http { runtime, client, endpoint, token })
    }

    /// `<endpoint>/<segments...>`, each segment percent-encoded.
    fn url(&self, segments: &[&str]) -> Result<Url, HubError> {
        let mut text = self.settings.endpoint.trim_end_matches('/').to_owned();
        for segment in segments {
            if segment.is_empty() || *segment == "." || *segment == ".." {
                return Err(HubError::Invalid(format!("{} cannot be a segment of a URL path", shown(segment))));
            }
            text.push('/');
            text.push_str(&encode_segment(segment));
        }
        let url = Url::parse(&text).map_err(|e| HubError::Invalid(format!("the endpoint is not a URL: {e}")))?;
        if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
            return Err(HubError::Invalid("the endpoint is not an http(s) URL".into()));
        }
        Ok(url)
    }

    /// A JSON answer of the Hub API.
    fn api<T: serde::de::DeserializeOwned>(&mut self, what: &str, url: Url) -> Result<(T, HeaderMap), FetchError> {
        let timeout = self.request_timeout;
        let http = self.http(what)?;
        let result = http.runtime.block_on(async {
            let response = http.get(url, timeout).await?;
            if !response.status().is_success() {
                return Err(status_error(response).await);
            }
            let headers = response.headers().clone();
            let body = read_capped(response, MAX_API_BODY, timeout).await?;
            let value = serde_json::from_slice(&body)
                .map_err(|e| HubError::Invalid(format!("the answer is not the JSON expected: {e}")))?;
            Ok((value, headers))
        });
        result.map_err(|e| self.hub_err(what, e))
    }

    /// The repo's branches and tags, as the Hub lists them.
    fn refs(&mut self, what: &str, repo: &str) -> Result<Refs, FetchError> {
        let (org, name) = split_repo(repo)?;
        let url = self.url(&["api", "kernels", org, name, "refs"]).map_err(|e| self.hub_err(what, e))?;
        Ok(self.api::<Refs>(what, url)?.0)
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
        let (org, name) = split_repo(repo)?;
        let url = self.url(&["api", "kernels", org, name, "revision", revision]).map_err(|e| self.hub_err(&what, e))?;
        let (info, _) = self.api::<RepoInfo>(&what, url)?;
        let sha = info.sha.unwrap_or_default();
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

    /// Every entry of `dir` at `commit`, following the listing's pages.
    fn list_tree(
        &mut self,
        what: &str,
        repo: &str,
        commit: &str,
        dir: &str,
        recursive: bool,
    ) -> Result<Vec<TreeEntry>, FetchError> {
        let (org, name) = split_repo(repo)?;
        if !is_commit_id(commit) {
            return Err(FetchError::Commit { repo: repo.to_owned(), commit: commit.to_owned() });
        }
        let mut segments = vec!["api", "kernels", org, name, "tree", commit];
        segments.extend(dir.split('/'));
        let mut url = self.url(&segments).map_err(|e| self.hub_err(what, e))?;
        if recursive {
            url.set_query(Some("recursive=true"));
        }
        let origin = self.url(&[]).map_err(|e| self.hub_err(what, e))?.origin();
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for page in 1.. {
            seen.insert(url.clone());
            let (entries, headers) = self.api::<Vec<TreeEntry>>(what, url.clone())?;
            out.extend(entries);
            if out.len() > MAX_ENTRIES {
                let why = format!("the listing has more than {MAX_ENTRIES} entries");
                return Err(self.hub_err(what, HubError::Invalid(why)));
            }
            let next = next_link(&headers, &url).map_err(|e| self.hub_err(what, e))?;
            let Some(next) = next else { break };
            let why = if next.origin() != origin {
                format!("the listing continues on another origin, {}; it is not followed", shown_url(&next))
            } else if seen.contains(&next) {
                format!("the listing's Link loops back to {}", shown_url(&next))
            } else if page >= MAX_PAGES {
                format!("the listing has more than {MAX_PAGES} pages")
            } else {
                url = next;
                continue;
            };
            return Err(self.hub_err(what, HubError::Invalid(why)));
        }
        Ok(out)
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
        split_repo(repo)?;
        if !is_commit_id(commit) {
            return Err(FetchError::Commit { repo: repo.to_owned(), commit: commit.to_owned() });
        }
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
                if self.settings.offline {
                    return Err(FetchError::Damaged { what, cache: cached, why, offline: self.offline_why() });
                }
                self.notes.push(format!("{what}: the cached copy {why}; removed it, downloading it again"));
            }
        }
        self.download(repo, commit, path, sha256, size)
    }

    fn download(
        &mut self,
        repo: &str,
        commit: &str,
        path: &str,
        sha256: Option<&str>,
        size: Option<u64>,
    ) -> Result<(PathBuf, Vec<u8>), FetchError> {
        let what = format!("{repo}@{commit}: downloading {path}");
        let (org, name) = split_repo(repo)?;
        let mut segments = vec!["kernels", org, name, "resolve", commit];
        segments.extend(path.split('/'));
        let url = self.url(&segments).map_err(|e| self.hub_err(&what, e))?;
        let limit = size.unwrap_or(MAX_FILE_SIZE);
        let timeout = self.request_timeout + Duration::from_secs(limit / MIN_RATE);
        let cache_dir = self.settings.cache_dir.clone();
        let folder = folder_name(repo);
        // Check the network before touching the cache.
        self.http(&what)?;
        let blobs = ensure_dirs(&cache_dir, &[&folder, "blobs"])?;
        let mut temp = TempFile::create(&blobs)?;

        let too_large =
            || FetchError::TooLarge { repo: repo.to_owned(), commit: commit.to_owned(), path: path.to_owned(), limit };
        let mut progress = self.progress.take();
        let http = match self.http(&what) {
            Ok(http) => http,
            Err(e) => {
                self.progress = progress;
                return Err(e);
            }
        };
        let received = http.runtime.block_on(async {
            let deadline = tokio::time::Instant::now() + timeout;
            let mut response = http.get(url, timeout).await?;
            if !response.status().is_success() {
                return Err(Stop::Hub(status_error(response).await));
            }
            if response.content_length().is_some_and(|n| n > limit) {
                return Err(Stop::Fetch(too_large()));
            }
            let total = size.or(response.content_length());
            if let Some(p) = progress.as_mut() {
                p.0.bytes(path, 0, total);
            }
            let mut hasher = Sha256::new();
            let capacity = response.content_length().unwrap_or(0).min(limit).min(256 << 20);
            let mut bytes = Vec::with_capacity(usize::try_from(capacity).unwrap_or(0));
            loop {
                let chunk = match tokio::time::timeout_at(deadline, response.chunk()).await {
                    Err(_) => return Err(Stop::Hub(HubError::Deadline(timeout))),
                    Ok(Err(e)) => return Err(Stop::Hub(HubError::transport(e))),
                    Ok(Ok(None)) => break,
                    Ok(Ok(Some(chunk))) => chunk,
                };
                if bytes.len() as u64 + chunk.len() as u64 > limit {
                    return Err(Stop::Fetch(too_large()));
                }
                temp.file.write_all(&chunk).map_err(|source| Stop::Fetch(temp.io(source)))?;
                hasher.update(&chunk);
                bytes.extend_from_slice(&chunk);
                if let Some(p) = progress.as_mut() {
                    p.0.bytes(path, bytes.len() as u64, total);
                }
            }
            Ok((bytes, hasher.finalize()))
        });
        if let Some(mut p) = progress {
            p.0.done(path);
            self.progress = Some(p);
        }
        let (bytes, digest) = match received {
            Ok(received) => received,
            Err(Stop::Hub(source)) => return Err(self.hub_err(&what, source)),
            Err(Stop::Fetch(e)) => return Err(e),
        };
        let actual: String = digest.iter().map(|b| format!("{b:02x}")).collect();
        if let Some(expected) = size.filter(|&n| n != bytes.len() as u64) {
            return Err(FetchError::Size {
                repo: repo.to_owned(),
                commit: commit.to_owned(),
                path: path.to_owned(),
                expected,
                actual: bytes.len() as u64,
            });
        }
        if let Some(want) = sha256.filter(|&want| want != actual) {
            return Err(FetchError::Mismatch {
                repo: repo.to_owned(),
                commit: commit.to_owned(),
                path: path.to_owned(),
                expected: want.to_owned(),
                actual,
            });
        }
        temp.file.sync_all().map_err(|e| temp.io(e))?;
        let blob = blobs.join(&actual);
        temp.persist(&blob)?;

        let (dirs, file_name) = path.rsplit_once('/').map_or(("", path), |(d, f)| (d, f));
        let dirs: Vec<&str> = dirs.split('/').filter(|d| !d.is_empty()).collect();
        let mut snapshot = vec![folder.as_str(), "snapshots", commit];
        snapshot.extend(&dirs);
        let dir = ensure_dirs(&cache_dir, &snapshot)?;
        let up = "../".repeat(dirs.len() + 2);
        place_link(&blob, &format!("{up}blobs/{actual}"), &dir, file_name)?;
        Ok((dir.join(file_name), bytes))
    }
}

impl Http {
    /// Whether `url` has the endpoint's origin (scheme, host and port).
    fn is_endpoint(&self, url: &Url) -> bool {
        url.origin() == self.endpoint.origin()
    }

    /// `GET url`, retried while the Hub answers with a transient status or not at all.
    async fn get(&self, url: Url, timeout: Duration) -> Result<reqwest::Response, HubError> {
        let mut delay = RETRY_DELAY;
        let mut attempt = 0;
        loop {
            let result = self.follow(url.clone(), timeout).await;
            let transient = match &result {
                Ok(response) => matches!(
                    response.status(),
                    StatusCode::REQUEST_TIMEOUT
                        | StatusCode::TOO_MANY_REQUESTS
                        | StatusCode::INTERNAL_SERVER_ERROR
                        | StatusCode::BAD_GATEWAY
                        | StatusCode::SERVICE_UNAVAILABLE
                        | StatusCode::GATEWAY_TIMEOUT
                ),
                Err(HubError::Transport(e)) => e.is_timeout() || e.is_connect() || e.is_request(),
                Err(_) => false,
            };
            if !transient || attempt == RETRIES {
                return result;
            }
            attempt += 1;
            tokio::time::sleep(delay).await;
            delay *= 2;
        }
    }

    /// One `GET`, following redirects: at most [`MAX_REDIRECTS`], never from https to http, and
    /// with the token only for the endpoint's origin.
    async fn follow(&self, mut url: Url, timeout: Duration) -> Result<reqwest::Response, HubError> {
        let start = Instant::now();
        for _ in 0..=MAX_REDIRECTS {
            let remaining = timeout.saturating_sub(start.elapsed());
            if remaining.is_zero() {
                return Err(HubError::Deadline(timeout));
            }
            let mut request = self.client.get(url.clone()).timeout(remaining);
            if let Some(token) = self.token.as_ref().filter(|_| self.is_endpoint(&url)) {
                request = request.header(AUTHORIZATION, token.clone());
            }
            let response = request.send().await.map_err(HubError::transport)?;
            if !response.status().is_redirection() || response.status() == StatusCode::NOT_MODIFIED {
                return Ok(response);
            }
            let Some(location) = response.headers().get(LOCATION) else { return Ok(response) };
            let location =
                location.to_str().map_err(|_| HubError::Invalid("a redirect whose Location is not text".into()))?;
            let next =
                url.join(location).map_err(|e| HubError::Invalid(format!("a redirect to {}: {e}", shown(location))))?;
            if !matches!(next.scheme(), "http" | "https") || (url.scheme() == "https" && next.scheme() == "http") {
                return Err(HubError::Invalid(format!(
                    "a redirect from {} to {} is not followed",
                    shown_url(&url),
                    shown_url(&next)
                )));
            }
            url = next;
        }
        Err(HubError::Invalid(format!("more than {MAX_REDIRECTS} redirects")))
    }
}

/// The body of `response`, at most `limit` bytes, within `timeout`.
async fn read_capped(mut response: reqwest::Response, limit: usize, timeout: Duration) -> Result<Vec<u8>, HubError> {
    let read = async {
        let mut out = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(HubError::transport)? {
            if out.len() + chunk.len() > limit {
                return Err(HubError::Invalid(format!("the answer is larger than {limit} bytes")));
            }
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    };
    tokio::time::timeout(timeout, read).await.map_err(|_| HubError::Deadline(timeout))?
}

/// The error for a non-success answer, with the Hub's explanation when it gives one.
async fn status_error(response: reqwest::Response) -> HubError {
    let status = response.status().as_u16();
    let from_header = response.headers().get("x-error-message").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let message = match from_header {
        Some(m) => Some(m),
        None => read_capped(response, 64 << 10, Duration::from_secs(10)).await.ok().and_then(|body| {
            let value: serde_json::Value = serde_json::from_slice(&body).ok()?;
            value.get("error").and_then(|e| e.as_str()).map(str::to_owned)
        }),
    };
    let message = message.map(|m| {
        let m: String = m.chars().take(300).collect();
        m.escape_debug().to_string()
    });
    HubError::Status { status, message }
}

/// The `rel="next"` target of the `Link` headers, resolved against `base`.
fn next_link(headers: &HeaderMap, base: &Url) -> Result<Option<Url>, HubError> {
    let mut next = None;
    for value in headers.get_all(LINK) {
        let bad = |why: &str| HubError::Invalid(format!("malformed Link header {:?}: {why}", value));
        let text = value.to_str().map_err(|_| bad("not text"))?;
        for (target, rels) in parse_link_header(text).map_err(|why| bad(&why))? {
            if !rels.iter().any(|r| r.eq_ignore_ascii_case("next")) || next.is_some() {
                continue;
            }
            if target.trim().is_empty() {
                return Err(bad("an empty target"));
            }
            let url = base.join(target).map_err(|e| bad(&format!("the target is not a URL: {e}")))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(bad("the target is not an http(s) URL"));
            }
            next = Some(url);
        }
    }
    Ok(next)
}

/// Splits a `Link` header (RFC 8288) into `(target, rel values)` pairs.
fn parse_link_header(text: &str) -> Result<Vec<(&str, Vec<String>)>, String> {
    let mut out = Vec::new();
    let mut rest = text.trim_start();
    while !rest.is_empty() {
        let Some(after) = rest.strip_prefix('<') else { return Err("a link does not start with `<`".into()) };
        let Some(end) = after.find('>') else { return Err("a `<` without its `>`".into()) };
        let target = &after[..end];
        rest = after[end + 1..].trim_start();
        let mut rels = Vec::new();
        while let Some(param) = rest.strip_prefix(';') {
            let param = param.trim_start();
            let name_end = param.find(['=', ';', ',']).unwrap_or(param.len());
            let name = param[..name_end].trim();
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$&+-.^_`|~*".contains(&b)) {
                return Err(format!("a parameter name {name:?}"));
            }
            rest = &param[name_end..];
            let mut value = String::new();
            if let Some(v) = rest.strip_prefix('=') {
                let v = v.trim_start();
                if let Some(quoted) = v.strip_prefix('"') {
                    let mut chars = quoted.char_indices();
                    let mut closed = None;
                    while let Some((i, c)) = chars.next() {
                        match c {
                            '\\' => match chars.next() {
                                Some((_, escaped)) => value.push(escaped),
                                None => break,
                            },
                            '"' => {
                                closed = Some(i);
                                break;
                            }
                            c => value.push(c),
                        }
                    }
                    let Some(close) = closed else { return Err("an unterminated quoted value".into()) };
                    rest = &quoted[close + 1..];
                } else {
                    let end = v.find([';', ',']).unwrap_or(v.len());
                    value = v[..end].trim().to_owned();
                    rest = &v[end..];
                }
            }
            if name.eq_ignore_ascii_case("rel") {
                rels.extend(value.split_whitespace().map(str::to_owned));
            }
            rest = rest.trim_start();
        }
        out.push((target, rels));
        if rest.is_empty() {
            break;
        }
        let Some(after) = rest.strip_prefix(',') else { return Err("text after a link that is not `;` or `,`".into()) };
        rest = after.trim_start();
    }
    Ok(out)
}

/// The cache folder of a kernel repo: `kernels--<org>--<name>`.
fn folder_name(repo: &str) -> String {
    format!("kernels--{}", repo.replace('/', "--"))
}

/// `base/<components...>`, creating what is missing; every component must be a directory
/// itself, not a link to one, so nothing in the cache leads outside it.
fn ensure_dirs(base: &Path, components: &[&str]) -> Result<PathBuf, FetchError> {
    std::fs::create_dir_all(base).map_err(|source| FetchError::Io { path: base.to_owned(), source })?;
    let mut dir = base.to_owned();
    for component in components {
        dir.push(component);
        match std::fs::symlink_metadata(&dir) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                let source =
                    std::io::Error::other("in the Hub cache, this should be a directory (not a link or a file)");
                return Err(FetchError::Io { path: dir, source });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match std::fs::create_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => {}
                Err(source) => return Err(FetchError::Io { path: dir, source }),
            },
            Err(source) => return Err(FetchError::Io { path: dir, source }),
        }
    }
    Ok(dir)
}

/// A unique name next to the files of `dir`, for a file being written.
fn temp_name(dir: &Path, stem: &str) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    dir.join(format!(".{stem}.{}-{nanos}-{n}.incomplete", std::process::id()))
}

/// Why a download stopped: the Hub (or the network), or something on our side.
enum Stop {
    Hub(HubError),
    Fetch(FetchError),
}

impl From<HubError> for Stop {
    fn from(e: HubError) -> Self {
        Stop::Hub(e)
    }
}

/// A file being downloaded; removed unless persisted.
struct TempFile {
    path: PathBuf,
    file: std::fs::File,
    keep: bool,
}

impl TempFile {
    fn create(dir: &Path) -> Result<Self, FetchError> {
        let path = temp_name(dir, "download");
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|source| FetchError::Io { path: path.clone(), source })?;
        Ok(TempFile { path, file, keep: false })
    }

    fn io(&self, source: std::io::Error) -> FetchError {
        FetchError::Io { path: self.path.clone(), source }
    }

    /// Renames the file to `to` (atomically replacing what is there).
    fn persist(mut self, to: &Path) -> Result<(), FetchError> {
        std::fs::rename(&self.path, to).map_err(|e| self.io(e))?;
        self.keep = true;
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Makes `dir/name` a relative link to `target` (the blob), replacing what is there
/// atomically; a copy of `blob` where links are not available.
fn place_link(blob: &Path, target: &str, dir: &Path, name: &str) -> Result<(), FetchError> {
    let link = dir.join(name);
    let temp = temp_name(dir, "link");
    let io = |source| FetchError::Io { path: link.to_owned(), source };
    #[cfg(unix)]
    let made = {
        let _ = blob;
        std::os::unix::fs::symlink(target, &temp)
    };
    #[cfg(not(unix))]
    let made = {
        let _ = target;
        std::fs::copy(blob, &temp).map(|_| ())
    };
    made.map_err(io)?;
    std::fs::rename(&temp, &link).map_err(|e| {
        let _ = std::fs::remove_file(&temp);
        io(e)
    })
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

    #[test]
    fn link_headers() {
        let base = Url::parse("http://h/api/x?p=1").unwrap();
        let mut headers = HeaderMap::new();
        assert_eq!(next_link(&headers, &base).unwrap(), None);
        headers.insert(LINK, HeaderValue::from_static(r#"<http://h/a?p=0>; rel="prev", </api/x?p=2>; rel="next""#));
        assert_eq!(next_link(&headers, &base).unwrap().unwrap().as_str(), "http://h/api/x?p=2");
        headers.insert(LINK, HeaderValue::from_static(r#"<http://h/b,c>;title="a;b,c";rel=next"#));
        assert_eq!(next_link(&headers, &base).unwrap().unwrap().as_str(), "http://h/b,c");
        for bad in [
            r#">x<; rel="next""#,
            r#"<x; rel="next""#,
            r#"<>; rel="next""#,
            r#"<x>; rel="next"#,
            "<x> junk",
            "<ftp://h/x>; rel=next",
        ] {
            headers.insert(LINK, HeaderValue::from_static(bad));
            let err = next_link(&headers, &base).unwrap_err();
            assert!(err.to_string().contains("malformed Link header"), "{bad}: {err}");
        }
    }

    #[test]
    fn revisions_are_one_path_segment() {
        assert_eq!(encode_segment("v1.0.0"), "v1.0.0");
        assert_eq!(encode_segment("feature/x y"), "feature%2Fx%20y");
        assert_eq!(encode_segment("a%2E"), "a%252E");
        let hub = Hub::new(HubSettings {
            endpoint: "http://h/mirror/".into(),
            cache_dir: "/c".into(),
            token: None,
            offline: false,
        });
        let url = hub.url(&["api", "kernels", "o", "n", "revision", "../x/.."]).unwrap();
        assert_eq!(url.as_str(), "http://h/mirror/api/kernels/o/n/revision/..%2Fx%2F..");
        for bad in ["..", ".", ""] {
            let err = hub.url(&["api", "kernels", "o", "n", "revision", bad]).unwrap_err();
            assert!(err.to_string().contains("cannot be a segment"), "{err}");
        }
    }
}
