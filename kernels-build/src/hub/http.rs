//! The network side of the Hub client (feature `hub`): the HTTP client and its runtime,
//! requests with deadlines, retries and checked redirects, paged listings, and downloads into
//! the cache. Without the feature, [`Hub`] reads the cache only and every step that needs the
//! Hub fails with [`FetchError::NeedsHubFeature`].

use std::collections::HashSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue, LINK, LOCATION};
use reqwest::{StatusCode, Url};
use sha2::{Digest as _, Sha256};

use super::{
    FetchError, Hub, HubError, MAX_FILE_SIZE, MAX_PAGES, Refs, RepoInfo, TreeEntry, folder_name, shown, split_pinned,
    split_repo,
};

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

/// A URL without user name and password, for messages.
pub(super) fn shown_url(url: &Url) -> String {
    let mut url = url.clone();
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.to_string()
}

/// The HTTP side: a client that follows no redirects by itself, and the runtime it runs on.
pub(super) struct Http {
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

impl Hub {
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
        // rustls's crypto provider is ring (see Cargo.toml): made the process default unless one
        // is already (whichever was installed first serves every client of the process).
        let _ = rustls::crypto::ring::default_provider().install_default();
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
    pub(super) fn refs(&mut self, what: &str, repo: &str) -> Result<Refs, FetchError> {
        let (org, name) = split_repo(repo)?;
        let url = self.url(&["api", "kernels", org, name, "refs"]).map_err(|e| self.hub_err(what, e))?;
        Ok(self.api::<Refs>(what, url)?.0)
    }

    /// The commit sha the Hub names for `revision`, unchecked.
    pub(super) fn revision_sha(&mut self, what: &str, repo: &str, revision: &str) -> Result<String, FetchError> {
        let (org, name) = split_repo(repo)?;
        let url = self.url(&["api", "kernels", org, name, "revision", revision]).map_err(|e| self.hub_err(what, e))?;
        let (info, _) = self.api::<RepoInfo>(what, url)?;
        Ok(info.sha.unwrap_or_default())
    }

    /// Every entry of `dir` at `commit`, following the listing's pages.
    pub(super) fn list_tree(
        &mut self,
        what: &str,
        repo: &str,
        commit: &str,
        dir: &str,
        recursive: bool,
    ) -> Result<Vec<TreeEntry>, FetchError> {
        let (org, name) = split_pinned(repo, commit)?;
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

    /// Downloads `path` at `commit` into the cache, checked against `sha256` and `size`.
    pub(super) fn download(
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::HubSettings;

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
