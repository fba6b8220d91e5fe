//! How `kernels_build::fetch::Hub` (over hf-hub) behaves when the Hub or the network fails:
//! every download ends with verified bytes or a clear error, and the cache never keeps a
//! corrupt or partial file. The failures come from a scripted loopback server
//! (`support/mod.rs`), because a real Hub server cannot be made to produce them on demand.

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use hf_hub::HFError;
use kernels_build::fetch::{FetchError, Hub, HubSettings};
use kernels_runtime::metadata::sha256_hex;
use support::{Fault, Reply, Server, tree};

const REPO: &str = "kernels-test/relu";
const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
const FILE: &str = "build/tvm-ffi-cpu-x86_64-linux/relu.so";
const BYTES: &[u8] = b"\x7fELF pretend shared object, long enough to be cut in half by a failing transfer";

fn resolve() -> String {
    format!("/kernels/{REPO}/resolve/{COMMIT}/{FILE}")
}

fn hub(server: &Server, cache: &Path) -> Hub {
    let settings =
        HubSettings { endpoint: server.endpoint(), cache_dir: cache.to_owned(), token: None, offline: false };
    Hub::new(settings).with_timeouts(Duration::from_secs(2), Duration::from_secs(1))
}

fn expected() -> String {
    sha256_hex(BYTES)
}

/// The hf-hub error inside a `FetchError::Hub`.
fn hub_source(err: &FetchError) -> &HFError {
    match err {
        FetchError::Hub { source, .. } => source,
        other => panic!("expected FetchError::Hub, got {other:?}"),
    }
}

/// The error and all its causes, one line.
fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

/// A download broke off: hf-hub reports the transport error, with the cause in the chain.
fn assert_broken_transfer(err: &FetchError, cause: &str) {
    match hub_source(err) {
        HFError::Request { .. } => {}
        other => panic!("expected a transport error, got {other:?}"),
    }
    let text = chain(err);
    assert!(text.contains(&format!("downloading {FILE}")), "{text}");
    assert!(text.to_lowercase().contains(cause), "{text}");
}

/// A mismatch for `FILE` whose found hash is that of `found`.
fn assert_mismatch(err: &FetchError, found: &[u8]) {
    match err {
        FetchError::Mismatch { repo, commit, path, expected: want, actual } => {
            assert_eq!((repo.as_str(), commit.as_str(), path.as_str()), (REPO, COMMIT, FILE));
            assert_eq!(want, &expected());
            assert_eq!(actual, &sha256_hex(found));
        }
        other => panic!("expected a mismatch, got {other:?}"),
    }
    assert!(err.to_string().contains(FILE), "{err}");
}

/// The cache holds nothing but hf-hub's (empty) lock files: no snapshot link, no blob, no
/// `.incomplete` download, no ref.
fn assert_nothing_cached(cache: &Path) {
    let entries = tree(cache);
    let kept: Vec<&String> = entries
        .iter()
        .filter(|e| !e.ends_with('/'))
        .filter(|e| !(e.starts_with(".locks/") && e.ends_with(".lock (0 bytes)")))
        .collect();
    assert!(kept.is_empty(), "the cache keeps files after a failed download: {entries:#?}");
}

/// The cache holds exactly the intact file: a snapshot link to a blob with the right bytes.
fn assert_cached_intact(hub: &Hub, cache: &Path) {
    let link = hub.cache_path(REPO, COMMIT, FILE);
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink(), "{}", link.display());
    assert_eq!(std::fs::read(&link).unwrap(), BYTES);
    let entries = tree(cache);
    let blobs: Vec<&String> =
        entries.iter().filter(|e| e.starts_with("kernels--kernels-test--relu/blobs/") && !e.ends_with('/')).collect();
    assert_eq!(blobs.len(), 1, "exactly one blob, no partial download: {entries:#?}");
    assert!(blobs[0].ends_with(&format!("/blobs/{} ({} bytes)", expected(), BYTES.len())), "{entries:#?}");
}

#[test]
fn missing_file_head_404_is_entry_not_found_and_caches_nothing() {
    let server = Server::start();
    server.route("HEAD", &resolve(), [Reply::status(404).header("x-error-code", "EntryNotFound")]);
    let cache = tempfile::tempdir().unwrap();
    let mut hub = hub(&server, cache.path());

    let err = hub.fetch(REPO, COMMIT, FILE, Some(&expected())).unwrap_err();
    assert!(matches!(hub_source(&err), HFError::EntryNotFound { path, .. } if path == FILE), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(FILE) && msg.contains(&server.endpoint()), "{msg}");
    assert_eq!(server.count("HEAD", &resolve()), 1, "a 404 is not retried");
    assert_eq!(server.count("GET", &resolve()), 0);
    assert_nothing_cached(cache.path());
}

#[test]
fn missing_file_head_404_with_commit_leaves_only_a_no_exist_marker() {
    // The Hub names the commit on a 404 too; hf-hub then records a negative-cache marker
    // (`.no_exist/<commit>/<path>`, empty), as huggingface_hub does. It holds no content.
    let server = Server::start();
    server.route("HEAD", &resolve(), [Reply::status(404).header("x-repo-commit", COMMIT)]);
    let cache = tempfile::tempdir().unwrap();
    let mut hub = hub(&server, cache.path());

    let err = hub.fetch(REPO, COMMIT, FILE, Some(&expected())).unwrap_err();
    assert!(matches!(hub_source(&err), HFError::EntryNotFound { .. }), "{err:?}");
    let files: Vec<String> = tree(cache.path()).into_iter().filter(|e| !e.ends_with('/')).collect();
    assert_eq!(files, [format!("kernels--kernels-test--relu/.no_exist/{COMMIT}/{FILE} (0 bytes)")]);
    assert!(!hub.cache_path(REPO, COMMIT, FILE).exists());
}

#[test]
fn error_page_after_a_good_head_is_reported_and_not_cached() {
    // hf-hub does not check the status of the download itself: the 404 page is written as
    // the file. The sha256 check catches it and removes it.
    let server = Server::start();
    server.route("HEAD", &resolve(), [Reply::file(COMMIT, BYTES)]);
    server.route("GET", &resolve(), [Reply::status(404)]);
    let cache = tempfile::tempdir().unwrap();
    let mut hub = hub(&server, cache.path());

    let err = hub.fetch(REPO, COMMIT, FILE, Some(&expected())).unwrap_err();
    assert_mismatch(&err, &Reply::status(404).body);
    assert_eq!(server.count("GET", &resolve()), 1, "a 404 is not retried");
    assert_nothing_cached(cache.path());
}

#[test]
fn server_errors_are_retried_until_the_bytes_arrive() {
    let server = Server::start();
    server.route("HEAD", &resolve(), [Reply::status(503), Reply::file(COMMIT, BYTES)]);
    server.route("GET", &resolve(), [Reply::status(500), Reply::status(502), Reply::file(COMMIT, BYTES)]);
    let cache = tempfile::tempdir().unwrap();
    let mut hub = hub(&server, cache.path());

    let (path, bytes) = hub.fetch(REPO, COMMIT, FILE, Some(&expected())).unwrap();
    assert_eq!(bytes, BYTES);
    assert_eq!(path, hub.cache_path(REPO, COMMIT, FILE));
    assert_eq!(server.count("HEAD", &resolve()), 2);
    assert_eq!(server.count("GET", &resolve()), 3);
    assert_cached_intact(&hub, cache.path());
}

#[test]
fn persistent_server_errors_name_the_status() {
    let server = Server::start();
    server.route("HEAD", &resolve(), [Reply::status(503)]);
    let cache = tempfile::tempdir().unwrap();
    let mut hub = hub(&server, cache.path());

    let err = hub.fetch(REPO, COMMIT, FILE, Some(&expected())).unwrap_err();
    match hub_source(&err) {
        HFError::Http { context } => assert_eq!(context.status.as_u16(), 503),
        other => panic!("expected an HTTP error, got {other:?}"),
    }
    assert!(err.to_string().contains("503"), "{err}");
    assert_eq!(server.count("HEAD", &resolve()), 4, "one try and three retries");
    assert_eq!(server.count("GET", &resolve()), 0);
    assert_nothing_cached(cache.path());
}

#[test]
fn persistent_server_errors_on_the_download_are_not_cached() {
    let server = Server::start();
    server.route("HEAD", &resolve(), [Reply::file(COMMIT, BYTES)]);
    server.route("GET", &resolve(), [Reply::status(500)]);
    let cache = tempfile::tempdir().unwrap();
    let mut hub = hub(&server, cache.path());

    // As with a 404: after the retries the last error page is what hf-hub stores.
    let err = hub.fetch(REPO, COMMIT, FILE, Some(&expected())).unwrap_err();
    assert_mismatch(&err, &Reply::status(500).body);
    assert_eq!(server.count("GET", &resolve()), 4, "one try and three retries");
    assert_nothing_cached(cache.path());
}

#[test]
fn connection_reset_mid_body_fails_without_a_corrupt_file() {
    let server = Server::start();
    server.route("HEAD", &resolve(), [Reply::file(COMMIT, BYTES)]);
    let reset = Reply::file(COMMIT, BYTES).fault(Fault::Reset(BYTES.len() / 2));
    server.route("GET", &resolve(), [reset, Reply::file(COMMIT, BYTES)]);
    let cache = tempfile::tempdir().unwrap();
    let mut hub = hub(&server, cache.path());

    // hf-hub retries failed requests, not bodies that break off: the fetch fails, and the
    // partial download is gone.
    let err = hub.fetch(REPO, COMMIT, FILE, Some(&expected())).unwrap_err();
    assert_broken_transfer(&err, "reset");
    assert_eq!(server.count("GET", &resolve()), 1);
    assert_nothing_cached(cache.path());
    // The next try gets the whole file.
    let (_, bytes) = hub.fetch(REPO, COMMIT, FILE, Some(&expected())).unwrap();
    assert_eq!(bytes, BYTES);
    assert_cached_intact(&hub, cache.path());
}

#[test]
fn truncated_body_fails_without_a_corrupt_file() {
    let server = Server::start();
    server.route("HEAD", &resolve(), [Reply::file(COMMIT, BYTES)]);
    let short = Reply::file(COMMIT, BYTES).fault(Fault::Truncate(BYTES.len() / 2));
    server.route("GET", &resolve(), [short, Reply::file(COMMIT, BYTES)]);
    let cache = tempfile::tempdir().unwrap();
    let mut hub = hub(&server, cache.path());

    let err = hub.fetch(REPO, COMMIT, FILE, Some(&expected())).unwrap_err();
    assert_broken_transfer(&err, "end of file before message length reached");
    assert_eq!(server.count("GET", &resolve()), 1);
    assert_nothing_cached(cache.path());
    let (_, bytes) = hub.fetch(REPO, COMMIT, FILE, Some(&expected())).unwrap();
    assert_eq!(bytes, BYTES);
    assert_cached_intact(&hub, cache.path());
}

#[test]
fn a_partial_download_of_another_process_is_left_alone() {
    // A partial blob whose lock is held belongs to a download in progress elsewhere.
    let server = Server::start();
    server.route("HEAD", &resolve(), [Reply::file(COMMIT, BYTES)]);
    server.route("GET", &resolve(), [Reply::file(COMMIT, BYTES).fault(Fault::Truncate(BYTES.len() / 2))]);
    let cache = tempfile::tempdir().unwrap();
    let folder = "kernels--kernels-test--relu";
    let busy = "0000000000000000000000000000000000000000000000000000000000000000";
    std::fs::create_dir_all(cache.path().join(folder).join("blobs")).unwrap();
    std::fs::create_dir_all(cache.path().join(".locks").join(folder)).unwrap();
    let partial = cache.path().join(folder).join("blobs").join(format!("{busy}.incomplete"));
    std::fs::write(&partial, b"in progress").unwrap();
    let lock = std::fs::File::create(cache.path().join(".locks").join(folder).join(format!("{busy}.lock"))).unwrap();
    #[allow(clippy::incompatible_msrv)] // as hf-hub, which needs `File::lock` itself
    lock.lock().unwrap();

    let mut hub = hub(&server, cache.path());
    let err = hub.fetch(REPO, COMMIT, FILE, Some(&expected())).unwrap_err();
    assert_broken_transfer(&err, "end of file before message length reached");
    assert_eq!(std::fs::read(&partial).unwrap(), b"in progress");
    let ours = cache.path().join(folder).join("blobs").join(format!("{}.incomplete", expected()));
    assert!(!ours.exists(), "{:#?}", tree(cache.path()));
    drop(lock);
}

#[test]
fn wrong_bytes_are_a_mismatch_and_are_removed() {
    let other = b"not the kernel that the lock pins";
    let server = Server::start();
    server.route("HEAD", &resolve(), [Reply::file(COMMIT, other)]);
    server.route("GET", &resolve(), [Reply::file(COMMIT, other)]);
    let cache = tempfile::tempdir().unwrap();
    let mut hub = hub(&server, cache.path());

    let err = hub.fetch(REPO, COMMIT, FILE, Some(&expected())).unwrap_err();
    assert_mismatch(&err, other);
    assert_nothing_cached(cache.path());
}

#[test]
fn slow_headers_time_out_and_the_retry_succeeds() {
    let server = Server::start();
    server.route("HEAD", &resolve(), [Reply::file(COMMIT, BYTES)]);
    server.route(
        "GET",
        &resolve(),
        [Reply::file(COMMIT, BYTES).fault(Fault::DelayHead(Duration::from_secs(4))), Reply::file(COMMIT, BYTES)],
    );
    let cache = tempfile::tempdir().unwrap();
    let mut hub = hub(&server, cache.path());

    let start = Instant::now();
    let (_, bytes) = hub.fetch(REPO, COMMIT, FILE, Some(&expected())).unwrap();
    assert_eq!(bytes, BYTES);
    assert!(start.elapsed() < Duration::from_secs(4), "the read timeout did not end the wait: {:?}", start.elapsed());
    assert_eq!(server.count("GET", &resolve()), 2);
    assert_cached_intact(&hub, cache.path());
}

#[test]
fn a_stall_mid_body_times_out_without_a_corrupt_file() {
    let server = Server::start();
    server.route("HEAD", &resolve(), [Reply::file(COMMIT, BYTES)]);
    server.route(
        "GET",
        &resolve(),
        [Reply::file(COMMIT, BYTES).fault(Fault::Stall(BYTES.len() / 2, Duration::from_secs(5)))],
    );
    let cache = tempfile::tempdir().unwrap();
    let mut hub = hub(&server, cache.path());

    let start = Instant::now();
    let err = hub.fetch(REPO, COMMIT, FILE, Some(&expected())).unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(4), "the read timeout did not end the wait: {:?}", start.elapsed());
    match hub_source(&err) {
        HFError::Request { source, .. } => assert!(source.is_timeout(), "{err:?}"),
        other => panic!("expected a transport error, got {other:?}"),
    }
    assert_eq!(server.count("GET", &resolve()), 1, "a body that stops is not retried");
    assert_nothing_cached(cache.path());
}

#[test]
fn redirects_to_a_content_server_are_followed() {
    let server = Server::start();
    let cdn = "/cdn/blobs/relu.so";
    let etag = expected();
    // The Hub answers LFS files with a redirect that carries the file's metadata in
    // `X-Linked-*` headers; the download follows it.
    server.route(
        "HEAD",
        &resolve(),
        [Reply::redirect(302, &format!("{}{cdn}", server.endpoint()))
            .header("x-repo-commit", COMMIT)
            .header("x-linked-etag", &format!("\"{etag}\""))
            .header("x-linked-size", &BYTES.len().to_string())],
    );
    server.route("GET", &resolve(), [Reply::redirect(302, &format!("{}{cdn}", server.endpoint()))]);
    server.route("GET", cdn, [Reply::file(COMMIT, BYTES)]);
    let cache = tempfile::tempdir().unwrap();
    let mut hub = hub(&server, cache.path());

    let (_, bytes) = hub.fetch(REPO, COMMIT, FILE, Some(&expected())).unwrap();
    assert_eq!(bytes, BYTES);
    assert_eq!(server.count("HEAD", cdn), 0, "metadata comes from the redirect itself");
    assert_eq!(server.count("GET", cdn), 1);
    assert_cached_intact(&hub, cache.path());
}

#[test]
fn relative_redirects_of_the_metadata_request_are_followed() {
    // The Hub sends a relative redirect when a repo id differs in case from the canonical one.
    let server = Server::start();
    let canonical = format!("/kernels/Kernels-Test/relu/resolve/{COMMIT}/{FILE}");
    server.route("HEAD", &resolve(), [Reply::redirect(307, &canonical)]);
    server.route("HEAD", &canonical, [Reply::file(COMMIT, BYTES)]);
    server.route("GET", &resolve(), [Reply::redirect(307, &canonical)]);
    server.route("GET", &canonical, [Reply::file(COMMIT, BYTES)]);
    let cache = tempfile::tempdir().unwrap();
    let mut hub = hub(&server, cache.path());

    let (_, bytes) = hub.fetch(REPO, COMMIT, FILE, Some(&expected())).unwrap();
    assert_eq!(bytes, BYTES);
    assert_eq!(server.count("HEAD", &canonical), 1);
    assert_eq!(server.count("GET", &canonical), 1);
    assert_cached_intact(&hub, cache.path());
}

#[test]
fn an_intact_cached_file_is_used_without_any_request() {
    let server = Server::start();
    server.route("HEAD", &resolve(), [Reply::file(COMMIT, BYTES)]);
    server.route("GET", &resolve(), [Reply::file(COMMIT, BYTES)]);
    let cache = tempfile::tempdir().unwrap();
    let mut hub = hub(&server, cache.path());
    hub.fetch(REPO, COMMIT, FILE, Some(&expected())).unwrap();
    let first = server.requests();
    assert_eq!(first.len(), 2, "{first:?}");

    let (_, bytes) = hub.fetch(REPO, COMMIT, FILE, Some(&expected())).unwrap();
    assert_eq!(bytes, BYTES);
    // A fresh client (a later build) finds it too.
    let (_, bytes) = self::hub(&server, cache.path()).fetch(REPO, COMMIT, FILE, Some(&expected())).unwrap();
    assert_eq!(bytes, BYTES);
    assert_eq!(server.requests(), first, "the cached file was fetched again");
}

#[test]
fn a_damaged_cached_file_is_downloaded_again() {
    let server = Server::start();
    server.route("HEAD", &resolve(), [Reply::file(COMMIT, BYTES)]);
    server.route("GET", &resolve(), [Reply::file(COMMIT, BYTES)]);
    let cache = tempfile::tempdir().unwrap();
    let mut hub = hub(&server, cache.path());
    let (path, _) = hub.fetch(REPO, COMMIT, FILE, Some(&expected())).unwrap();
    std::fs::write(&path, b"damaged").unwrap();

    let (_, bytes) = hub.fetch(REPO, COMMIT, FILE, Some(&expected())).unwrap();
    assert_eq!(bytes, BYTES);
    assert_eq!(server.count("GET", &resolve()), 2);
    assert_cached_intact(&hub, cache.path());
}

#[test]
fn a_missing_version_branch_lists_the_branches_there_are() {
    let server = Server::start();
    let branch = |name: &str, commit: &str| serde_json::json!({ "name": name, "ref": format!("refs/heads/{name}"), "targetCommit": commit });
    let refs = serde_json::json!({
        "branches": [branch("v2", COMMIT), branch("main", "1111111111111111111111111111111111111111")],
        "tags": [],
    });
    server.route("GET", &format!("/api/kernels/{REPO}/refs"), [Reply::json(&refs)]);
    let cache = tempfile::tempdir().unwrap();
    let mut hub = hub(&server, cache.path());

    assert_eq!(hub.resolve_version(REPO, 2).unwrap(), COMMIT);
    match hub.resolve_version(REPO, 1).unwrap_err() {
        FetchError::NoSuchVersion { repo, branch, version, available } => {
            assert_eq!((repo.as_str(), branch.as_str(), version), (REPO, "v1", 1));
            assert_eq!(available, "main, v2");
        }
        other => panic!("expected NoSuchVersion, got {other:?}"),
    }
    assert_eq!(server.count("GET", &format!("/api/kernels/{REPO}/refs")), 2);
}
