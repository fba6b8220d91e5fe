//! How `kernels_build::hub::Hub` behaves when the Hub or the network fails, or the Hub is
//! hostile: every download ends with verified bytes or a clear error, the cache never keeps a
//! corrupt or partial file, and nothing the server sends reaches a path outside the cache,
//! leaks the token, hangs or crashes the build. The failures come from a scripted loopback
//! server (`support/mod.rs`), because a real Hub server cannot be made to produce them on
//! demand. They need the network side, the `hub` feature.
#![cfg(feature = "hub")]

mod support;

use std::path::Path;
use std::time::{Duration, Instant};

use kernels_build::hub::{FetchError, Hub, HubError, HubSettings};
use kernels_runtime::digest::sha256_hex;
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

/// The Hub error inside a `FetchError::Hub`.
fn hub_source(err: &FetchError) -> &HubError {
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

/// A download broke off: a transport error, with the cause in the chain.
fn assert_broken_transfer(err: &FetchError, cause: &str) {
    match hub_source(err) {
        HubError::Transport(_) => {}
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

/// The cache holds nothing but directories: no snapshot link, no blob, no partial download,
/// no ref, no marker.
fn assert_nothing_cached(cache: &Path) {
    let entries = tree(cache);
    let kept: Vec<&String> = entries.iter().filter(|e| !e.ends_with('/')).collect();
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
fn a_missing_file_is_a_404_and_caches_nothing() {
    let server = Server::start();
    let not_found =
        Reply::status(404).header("x-error-code", "EntryNotFound").header("x-error-message", "Entry not found");
    server.route("GET", &resolve(), [not_found]);
    let cache = tempfile::tempdir().unwrap();
    let mut hub = hub(&server, cache.path());

    let err = hub.fetch(REPO, COMMIT, FILE, Some(&expected())).unwrap_err();
    assert!(matches!(hub_source(&err), HubError::Status { status: 404, .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(FILE) && msg.contains(&server.endpoint()) && msg.contains("Entry not found"), "{msg}");
    assert_eq!(server.count("GET", &resolve()), 1, "a 404 is not retried");
    assert_eq!(server.count("HEAD", &resolve()), 0);
    assert_nothing_cached(cache.path());
}

#[test]
fn a_404_that_names_a_commit_leaves_nothing_either() {
    // The Hub names the commit on a 404 too; no negative-cache marker is written for it.
    let server = Server::start();
    server.route("GET", &resolve(), [Reply::status(404).header("x-repo-commit", COMMIT)]);
    let cache = tempfile::tempdir().unwrap();
    let mut hub = hub(&server, cache.path());

    let err = hub.fetch(REPO, COMMIT, FILE, Some(&expected())).unwrap_err();
    assert!(matches!(hub_source(&err), HubError::Status { status: 404, .. }), "{err:?}");
    assert_nothing_cached(cache.path());
    assert!(!hub.cache_path(REPO, COMMIT, FILE).exists());
}

#[test]
fn an_error_page_is_reported_and_not_cached() {
    // The status of the download itself is checked: an error page is never stored as the file,
    // and without a hash to check (resolution) it is not returned as content either.
    let server = Server::start();
    server.route("GET", &resolve(), [Reply::status(404)]);
    let cache = tempfile::tempdir().unwrap();
    let mut hub = hub(&server, cache.path());

    for expected in [Some(expected()), None] {
        let err = hub.fetch(REPO, COMMIT, FILE, expected.as_deref()).unwrap_err();
        assert!(matches!(hub_source(&err), HubError::Status { status: 404, .. }), "{err:?}");
        assert!(err.to_string().contains("status 404 from the test server"), "{err}");
        assert_nothing_cached(cache.path());
    }
    assert_eq!(server.count("GET", &resolve()), 2, "a 404 is not retried");
}

#[test]
fn server_errors_are_retried_until_the_bytes_arrive() {
    let server = Server::start();
    server.route("GET", &resolve(), [Reply::status(500), Reply::status(502), Reply::file(COMMIT, BYTES)]);
    let cache = tempfile::tempdir().unwrap();
    let mut hub = hub(&server, cache.path());

    let (path, bytes) = hub.fetch(REPO, COMMIT, FILE, Some(&expected())).unwrap();
    assert_eq!(bytes, BYTES);
    assert_eq!(path, hub.cache_path(REPO, COMMIT, FILE));
    assert_eq!(server.count("GET", &resolve()), 3);
    assert_cached_intact(&hub, cache.path());
}

#[test]
fn persistent_server_errors_name_the_status() {
    let server = Server::start();
    server.route("GET", &resolve(), [Reply::status(503).header("x-error-message", "down for maintenance")]);
    let cache = tempfile::tempdir().unwrap();
    let mut hub = hub(&server, cache.path());

    let err = hub.fetch(REPO, COMMIT, FILE, Some(&expected())).unwrap_err();
    match hub_source(&err) {
        HubError::Status { status, message } => {
            assert_eq!(*status, 503);
            assert_eq!(message.as_deref(), Some("down for maintenance"));
        }
        other => panic!("expected an HTTP error, got {other:?}"),
    }
    assert!(err.to_string().contains("503"), "{err}");
    assert_eq!(server.count("GET", &resolve()), 4, "one try and three retries");
    assert_nothing_cached(cache.path());
}

#[test]
fn persistent_server_errors_on_the_download_are_not_cached() {
    let server = Server::start();
    server.route("GET", &resolve(), [Reply::status(500)]);
    let cache = tempfile::tempdir().unwrap();
    let mut hub = hub(&server, cache.path());

    // As with a 404: the last error page is reported, never stored.
    let err = hub.fetch(REPO, COMMIT, FILE, Some(&expected())).unwrap_err();
    assert!(matches!(hub_source(&err), HubError::Status { status: 500, .. }), "{err:?}");
    assert_eq!(server.count("GET", &resolve()), 4, "one try and three retries");
    assert_nothing_cached(cache.path());
}

#[test]
fn connection_reset_mid_body_fails_without_a_corrupt_file() {
    let server = Server::start();
    let reset = Reply::file(COMMIT, BYTES).fault(Fault::Reset(BYTES.len() / 2));
    server.route("GET", &resolve(), [reset, Reply::file(COMMIT, BYTES)]);
    let cache = tempfile::tempdir().unwrap();
    let mut hub = hub(&server, cache.path());

    // Failed requests are retried, bodies that break off are not: the fetch fails, and the
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
    // A partial blob that is not ours belongs to a download in progress elsewhere (here one of
    // huggingface_hub).
    let server = Server::start();
    server.route("GET", &resolve(), [Reply::file(COMMIT, BYTES).fault(Fault::Truncate(BYTES.len() / 2))]);
    let cache = tempfile::tempdir().unwrap();
    let folder = "kernels--kernels-test--relu";
    let busy = "0000000000000000000000000000000000000000000000000000000000000000";
    std::fs::create_dir_all(cache.path().join(folder).join("blobs")).unwrap();
    let partial = cache.path().join(folder).join("blobs").join(format!("{busy}.incomplete"));
    std::fs::write(&partial, b"in progress").unwrap();

    let mut hub = hub(&server, cache.path());
    let err = hub.fetch(REPO, COMMIT, FILE, Some(&expected())).unwrap_err();
    assert_broken_transfer(&err, "end of file before message length reached");
    assert_eq!(std::fs::read(&partial).unwrap(), b"in progress");
    let blobs = tree(&cache.path().join(folder).join("blobs"));
    assert_eq!(blobs, [format!("{busy}.incomplete (11 bytes)")], "{:#?}", tree(cache.path()));
}

#[test]
fn wrong_bytes_are_a_mismatch_and_are_removed() {
    let other = b"not the kernel that the lock pins";
    let server = Server::start();
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
    assert!(hub_source(&err).is_timeout(), "{err:?}");
    assert_eq!(server.count("GET", &resolve()), 1, "a body that stops is not retried");
    assert_nothing_cached(cache.path());
}

#[test]
fn redirects_to_a_content_server_are_followed() {
    let server = Server::start();
    let cdn = "/cdn/blobs/relu.so";
    // The Hub answers LFS files with a redirect to a content server; the download follows it.
    server.route(
        "GET",
        &resolve(),
        [Reply::redirect(302, &format!("{}{cdn}", server.endpoint())).header("x-repo-commit", COMMIT)],
    );
    server.route("GET", cdn, [Reply::file(COMMIT, BYTES)]);
    let cache = tempfile::tempdir().unwrap();
    let mut hub = hub(&server, cache.path());

    let (_, bytes) = hub.fetch(REPO, COMMIT, FILE, Some(&expected())).unwrap();
    assert_eq!(bytes, BYTES);
    assert!(server.requests().iter().all(|r| r.method == "GET"), "{:?}", server.requests());
    assert_eq!(server.count("GET", cdn), 1);
    assert_cached_intact(&hub, cache.path());
}

#[test]
fn relative_redirects_of_the_metadata_request_are_followed() {
    // The Hub sends a relative redirect when a repo id differs in case from the canonical one.
    let server = Server::start();
    let canonical = format!("/kernels/Kernels-Test/relu/resolve/{COMMIT}/{FILE}");
    server.route("GET", &resolve(), [Reply::redirect(307, &canonical)]);
    server.route("GET", &canonical, [Reply::file(COMMIT, BYTES)]);
    let cache = tempfile::tempdir().unwrap();
    let mut hub = hub(&server, cache.path());

    let (_, bytes) = hub.fetch(REPO, COMMIT, FILE, Some(&expected())).unwrap();
    assert_eq!(bytes, BYTES);
    assert_eq!(server.count("GET", &canonical), 1);
    assert_cached_intact(&hub, cache.path());
}

#[test]
fn an_intact_cached_file_is_used_without_any_request() {
    let server = Server::start();
    server.route("GET", &resolve(), [Reply::file(COMMIT, BYTES)]);
    let cache = tempfile::tempdir().unwrap();
    let mut hub = hub(&server, cache.path());
    hub.fetch(REPO, COMMIT, FILE, Some(&expected())).unwrap();
    let first = server.requests();
    assert_eq!(first.len(), 1, "{first:?}");

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
    server.route("GET", &resolve(), [Reply::file(COMMIT, BYTES)]);
    let cache = tempfile::tempdir().unwrap();
    let mut hub = hub(&server, cache.path());
    let (path, _) = hub.fetch(REPO, COMMIT, FILE, Some(&expected())).unwrap();
    std::fs::write(&path, b"damaged").unwrap();

    assert!(hub.take_notes().is_empty(), "an intact download is not worth a note");
    let (_, bytes) = hub.fetch(REPO, COMMIT, FILE, Some(&expected())).unwrap();
    assert_eq!(bytes, BYTES);
    assert_eq!(server.count("GET", &resolve()), 2);
    assert_cached_intact(&hub, cache.path());
    // The user hears of it (the build prints it as a warning, `cargo kernels` as a note).
    let notes = hub.take_notes();
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(
        notes[0].contains(FILE)
            && notes[0].contains("does not match its pinned sha256")
            && notes[0].ends_with("removed it, downloading it again"),
        "{notes:?}"
    );
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

// ---- A hostile Hub: nothing it sends may reach a path outside the cache, leak the token,
// ---- hang the build or crash it.

const VARIANT: &str = "tvm-ffi01-cpu-x86_64-linux";

/// Runs `f` on its own thread and returns what it returns; fails the test when `f` panics or
/// is still running after `limit` (a hang).
fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        Ok(value) => value,
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!("still running after {limit:?}"),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            let panic = thread.join().expect_err("the thread ended without an answer");
            let text = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            panic!("panicked: {text}")
        }
    }
}

fn tree_route(path_in_repo: &str) -> String {
    format!("/api/kernels/{REPO}/tree/{COMMIT}/{path_in_repo}")
}

fn file_entry(path: &str, size: u64) -> serde_json::Value {
    serde_json::json!({ "type": "file", "oid": "0000000000000000000000000000000000000000", "size": size, "path": path })
}

fn dir_entry(path: &str) -> serde_json::Value {
    serde_json::json!({ "type": "directory", "oid": "0000000000000000000000000000000000000000", "size": 0, "path": path })
}

/// A kernel whose only variant's listing names `listed`; `kernels.toml` asks for `COMMIT`.
fn hostile_listing(server: &Server, listed: &str, size: u64) {
    server.route(
        "GET",
        &format!("/api/kernels/{REPO}/revision/{COMMIT}"),
        [Reply::json(&serde_json::json!({ "id": REPO, "sha": COMMIT }))],
    );
    server.route(
        "GET",
        &tree_route("build"),
        [Reply::json(&serde_json::json!([dir_entry(&format!("build/{VARIANT}"))]))],
    );
    server.route(
        "GET",
        &tree_route(&format!("build/{VARIANT}")),
        [Reply::json(&serde_json::json!([file_entry(listed, size)]))],
    );
}

#[test]
fn listed_paths_outside_the_variant_never_reach_the_file_system() {
    // A listing that names a file outside the cache made resolution read it, find its size
    // wrong and "clean it up".
    let root = tempfile::tempdir().unwrap();
    let cache = root.path().join("cache");
    let victim = root.path().join("victim");
    // A snapshot directory of the commit exists already, as after fetching another variant.
    let snapshot_variant = cache.join("kernels--kernels-test--relu/snapshots").join(COMMIT).join("build").join(VARIANT);
    std::fs::create_dir_all(&snapshot_variant).unwrap();
    let dotdot = format!("build/{VARIANT}/../../../../../../victim");
    assert!(snapshot_variant.join("../../../../../../victim").ends_with("victim"));
    for listed in [victim.display().to_string(), dotdot] {
        std::fs::write(&victim, b"a file of the user, outside the cache").unwrap();
        let server = Server::start();
        hostile_listing(&server, &listed, 1);
        let mut hub = hub(&server, &cache);
        let err = kernels_build::resolve::resolve(
            &mut hub,
            "relu",
            REPO,
            &kernels_build::manifest::Requested::Revision(COMMIT.into()),
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(REPO) && msg.contains(COMMIT) && msg.contains(&listed), "{msg}");
        assert_eq!(std::fs::read(&victim).unwrap(), b"a file of the user, outside the cache", "{listed}");
        assert!(server.requests().iter().all(|r| !r.path.contains("/resolve/")), "{listed}: {:?}", server.requests());
    }
}

#[test]
fn every_listed_path_must_be_a_plain_path_inside_the_variant() {
    let bad = [
        "/etc/passwd".to_owned(),
        format!("build/{VARIANT}/../x.so"),
        format!("build/{VARIANT}/./x.so"),
        format!("build/{VARIANT}//x.so"),
        format!("build/{VARIANT}/"),
        format!("build/{VARIANT}/a\\..\\x.so"),
        format!("build/{VARIANT}/x\u{0}.so"),
        "build/other-variant/x.so".to_owned(),
        format!("build/{VARIANT}"),
        "x.so".to_owned(),
    ];
    for listed in bad {
        let server = Server::start();
        hostile_listing(&server, &listed, 3);
        let cache = tempfile::tempdir().unwrap();
        let mut hub = hub(&server, cache.path());
        let err = hub.list_variant_files(REPO, COMMIT, VARIANT).expect_err(&listed);
        let msg = err.to_string();
        assert!(msg.contains(REPO) && msg.contains(COMMIT), "{msg}");
        assert!(msg.contains(&listed.escape_debug().to_string()), "{listed:?}: {msg}");
    }
    // Variant names come from the listing too.
    for listed in ["build/..", "build/a/b", "other/x", "build/a\\b"] {
        let server = Server::start();
        server.route("GET", &tree_route("build"), [Reply::json(&serde_json::json!([dir_entry(listed)]))]);
        let cache = tempfile::tempdir().unwrap();
        let err = hub(&server, cache.path()).list_variants(REPO, COMMIT).expect_err(listed);
        assert!(err.to_string().contains(&listed.escape_debug().to_string()), "{err}");
    }
}

#[test]
fn listed_sizes_must_be_sane() {
    let server = Server::start();
    hostile_listing(&server, &format!("build/{VARIANT}/relu.so"), 1 << 60);
    let cache = tempfile::tempdir().unwrap();
    let err = hub(&server, cache.path()).list_variant_files(REPO, COMMIT, VARIANT).unwrap_err();
    assert!(err.to_string().contains("relu.so") && err.to_string().contains(&(1u64 << 60).to_string()), "{err}");
}

#[test]
fn commits_from_the_hub_must_be_commit_ids() {
    let server = Server::start();
    let branch = serde_json::json!({ "name": "v1", "ref": "refs/heads/v1", "targetCommit": "../../../planted" });
    server.route(
        "GET",
        &format!("/api/kernels/{REPO}/refs"),
        [Reply::json(&serde_json::json!({ "branches": [branch], "tags": [] }))],
    );
    server.route(
        "GET",
        &format!("/api/kernels/{REPO}/revision/main"),
        [Reply::json(&serde_json::json!({ "sha": "../x" }))],
    );
    let cache = tempfile::tempdir().unwrap();
    let mut hub = hub(&server, cache.path());
    let err = hub.resolve_version(REPO, 1).unwrap_err();
    assert!(err.to_string().contains("../../../planted"), "{err}");
    let err = hub.resolve_revision(REPO, "main").unwrap_err();
    assert!(err.to_string().contains("\"../x\""), "{err}");
}

#[test]
fn an_etag_never_names_a_cache_file() {
    let root = tempfile::tempdir().unwrap();
    let cache = root.path().join("cache");
    let server = Server::start();
    let hostile = Reply::file(COMMIT, BYTES).set_header("etag", "\"../../../escaped\"");
    server.route("HEAD", &resolve(), [hostile.clone()]);
    server.route("GET", &resolve(), [hostile]);
    let mut hub = hub(&server, &cache);

    let (path, bytes) = hub.fetch(REPO, COMMIT, FILE, Some(&expected())).unwrap();
    assert_eq!(bytes, BYTES);
    assert_eq!(path, hub.cache_path(REPO, COMMIT, FILE));
    assert!(!root.path().join("escaped").exists(), "{:#?}", tree(root.path()));
    assert_eq!(tree(root.path()).iter().filter(|e| !e.starts_with("cache")).count(), 0, "{:#?}", tree(root.path()));
    assert_cached_intact(&hub, &cache);
}

#[test]
fn x_repo_commit_never_names_the_snapshot() {
    let other = "1111111111111111111111111111111111111111";
    for claimed in ["../../../planted", other] {
        let root = tempfile::tempdir().unwrap();
        let cache = root.path().join("cache");
        let server = Server::start();
        let hostile = Reply::file(COMMIT, BYTES).set_header("x-repo-commit", claimed);
        server.route("HEAD", &resolve(), [hostile.clone()]);
        server.route("GET", &resolve(), [hostile]);
        let mut hub = hub(&server, &cache);

        let (path, bytes) = hub.fetch(REPO, COMMIT, FILE, Some(&expected())).unwrap();
        assert_eq!(bytes, BYTES);
        assert_eq!(path, hub.cache_path(REPO, COMMIT, FILE), "{claimed}");
        assert!(!root.path().join("planted").exists(), "{:#?}", tree(root.path()));
        let snapshots: Vec<String> = tree(&cache.join("kernels--kernels-test--relu/snapshots"))
            .into_iter()
            .filter(|e| !e.starts_with(COMMIT))
            .collect();
        assert!(snapshots.is_empty(), "{claimed}: {snapshots:#?}");
        assert_cached_intact(&hub, &cache);
    }
}

#[test]
fn the_token_goes_to_the_endpoint_only() {
    let server = Server::start();
    let elsewhere = Server::start();
    let variant_dir = format!("build/{VARIANT}");
    let next = format!("{}{}?cursor=2", elsewhere.endpoint(), tree_route(&variant_dir));
    server.route(
        "GET",
        &tree_route(&variant_dir),
        [Reply::json(&serde_json::json!([file_entry(&format!("{variant_dir}/a.so"), 1)]))
            .header("link", &format!("<{next}>; rel=\"next\""))],
    );
    elsewhere.route(
        "GET",
        &tree_route(&variant_dir),
        [Reply::json(&serde_json::json!([file_entry(&format!("{variant_dir}/b.so"), 1)]))],
    );
    let cache = tempfile::tempdir().unwrap();
    let settings = HubSettings {
        endpoint: server.endpoint(),
        cache_dir: cache.path().to_owned(),
        token: Some("hf_secret_token".into()),
        offline: false,
    };
    let mut hub = Hub::new(settings).with_timeouts(Duration::from_secs(2), Duration::from_secs(1));

    let result = hub.list_variant_files(REPO, COMMIT, VARIANT);
    let sent: Vec<_> = server.requests();
    assert_eq!(sent[0].header("authorization"), Some("Bearer hf_secret_token"), "{sent:?}");
    let leaked: Vec<_> = elsewhere.requests().into_iter().filter(|r| r.header("authorization").is_some()).collect();
    assert!(leaked.is_empty(), "the token went to another origin: {leaked:?}");
    let err = result.expect_err("a listing that continues on another origin is refused");
    assert!(err.to_string().contains(&next), "{err}");
    assert!(!err.to_string().contains("hf_secret_token"), "{err}");

    // A download redirected to another origin (a content server) gets no token either.
    let cdn = "/cdn/blob";
    server.route("GET", &resolve(), [Reply::redirect(302, &format!("{}{cdn}", elsewhere.endpoint()))]);
    elsewhere.route("GET", cdn, [Reply::file(COMMIT, BYTES)]);
    let (_, bytes) = hub.fetch(REPO, COMMIT, FILE, Some(&expected())).unwrap();
    assert_eq!(bytes, BYTES);
    let to_endpoint: Vec<_> = server.requests().into_iter().filter(|r| r.path == resolve()).collect();
    assert!(to_endpoint.iter().all(|r| r.header("authorization") == Some("Bearer hf_secret_token")), "{to_endpoint:?}");
    let to_cdn: Vec<_> = elsewhere.requests().into_iter().filter(|r| r.path == cdn).collect();
    assert_eq!(to_cdn.len(), 1);
    assert_eq!(to_cdn[0].header("authorization"), None, "{to_cdn:?}");
}

#[test]
fn a_stalled_server_ends_in_a_timeout_not_a_hang() {
    let server = Server::start();
    let stalled = Reply::file(COMMIT, BYTES).fault(Fault::DelayHead(Duration::from_secs(60)));
    server.route("HEAD", &resolve(), [stalled.clone()]);
    server.route("GET", &resolve(), [stalled]);
    let cache = tempfile::tempdir().unwrap();
    let mut hub = hub(&server, cache.path());

    let start = Instant::now();
    let err = within(Duration::from_secs(20), move || hub.fetch(REPO, COMMIT, FILE, Some(&expected())).map(|_| ()))
        .unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(20), "{:?}", start.elapsed());
    assert!(chain(&err).contains("timed out"), "{}", chain(&err));
    assert_nothing_cached(cache.path());
}

#[test]
fn a_pagination_link_that_loops_is_an_error() {
    let server = Server::start();
    let variant_dir = format!("build/{VARIANT}");
    let page = |server: &Server, n: usize| {
        let next = format!("{}{}?cursor={}", server.endpoint(), tree_route(&variant_dir), n + 1);
        Reply::json(&serde_json::json!([file_entry(&format!("{variant_dir}/f{n}.so"), 1)]))
            .header("link", &format!("<{next}>; rel=\"next\""))
    };
    // The same page again and again (the last reply repeats)...
    server.route("GET", &tree_route(&variant_dir), [page(&server, 1)]);
    let cache = tempfile::tempdir().unwrap();
    let mut hub = hub(&server, cache.path());
    let err = within(Duration::from_secs(20), move || hub.list_variant_files(REPO, COMMIT, VARIANT)).unwrap_err();
    assert!(err.to_string().contains("cursor=2"), "{err}");
    assert!(server.count("GET", &tree_route(&variant_dir)) <= 3, "{}", server.count("GET", &tree_route(&variant_dir)));

    // ... or a new page every time.
    let server = Server::start();
    server.route("GET", &tree_route(&variant_dir), (1..=10_000).map(|n| page(&server, n)));
    let mut hub = self::hub(&server, cache.path());
    let err = within(Duration::from_secs(60), move || hub.list_variant_files(REPO, COMMIT, VARIANT)).unwrap_err();
    assert!(err.to_string().contains("pages"), "{err}");
    assert!(server.count("GET", &tree_route(&variant_dir)) <= 1000);
}

#[test]
fn a_malformed_pagination_link_is_an_error_not_a_crash() {
    let variant_dir = format!("build/{VARIANT}");
    for link in [">x<; rel=\"next\"", "<http://[::1; rel=\"next\"", "<unterminated; rel=\"next\"", "<>; rel=\"next\""] {
        let server = Server::start();
        server.route(
            "GET",
            &tree_route(&variant_dir),
            [Reply::json(&serde_json::json!([file_entry(&format!("{variant_dir}/a.so"), 1)])).header("link", link)],
        );
        let cache = tempfile::tempdir().unwrap();
        let mut hub = hub(&server, cache.path());
        let err = within(Duration::from_secs(20), move || hub.list_variant_files(REPO, COMMIT, VARIANT)).unwrap_err();
        assert!(err.to_string().contains("Link"), "{link}: {err}");
    }
}

#[test]
fn the_token_and_endpoint_credentials_are_never_printed() {
    let settings = HubSettings {
        endpoint: "https://user:hunter2@hub.example".into(),
        cache_dir: "/c".into(),
        token: Some("hf_secret_token".into()),
        offline: false,
    };
    let debug = format!("{settings:?}");
    assert!(debug.contains("token: Some(\"<redacted>\")"), "{debug}");
    assert!(!debug.contains("hf_secret_token") && !debug.contains("hunter2"), "{debug}");
    let debug = format!("{:?}", Hub::new(settings));
    assert!(!debug.contains("hf_secret_token") && !debug.contains("hunter2"), "{debug}");

    let server = Server::start();
    server.route("GET", &resolve(), [Reply::status(404)]);
    server.route("HEAD", &resolve(), [Reply::status(404)]);
    let endpoint = server.endpoint().replace("http://", "http://user:hunter2@");
    let cache = tempfile::tempdir().unwrap();
    let settings = HubSettings { endpoint, cache_dir: cache.path().to_owned(), token: None, offline: false };
    let mut hub = Hub::new(settings).with_timeouts(Duration::from_secs(2), Duration::from_secs(1));
    let err = hub.fetch(REPO, COMMIT, FILE, Some(&expected())).unwrap_err();
    let text = format!("{} | {} | {err:?}", chain(&err), err);
    assert!(!text.contains("hunter2") && !text.contains("user:"), "{text}");
    assert!(text.contains(&server.endpoint()), "{text}");
}

#[test]
fn a_body_that_trickles_past_the_deadline_is_cut_off() {
    // Each byte comes well within the read timeout, so only the request's deadline ends it.
    let server = Server::start();
    server.route("GET", &resolve(), [Reply::file(COMMIT, BYTES).fault(Fault::Trickle(Duration::from_millis(200)))]);
    let cache = tempfile::tempdir().unwrap();
    let mut hub = hub(&server, cache.path()).with_request_timeout(Duration::from_secs(2));

    let start = Instant::now();
    let size = Some(BYTES.len() as u64);
    let err = within(Duration::from_secs(30), move || {
        hub.fetch_expecting(REPO, COMMIT, FILE, Some(&expected()), size).map(|_| ())
    })
    .unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(6), "{:?}", start.elapsed());
    assert!(hub_source(&err).is_timeout(), "{err:?}");
    assert_eq!(server.count("GET", &resolve()), 1, "a body that breaks off is not retried");
    assert_nothing_cached(cache.path());
}

#[test]
fn a_body_larger_than_the_expected_size_is_stopped() {
    let big = vec![b'x'; 1 << 20];
    for reply in [Reply::file(COMMIT, &big), Reply::file(COMMIT, &big).fault(Fault::Unsized)] {
        let server = Server::start();
        server.route("GET", &resolve(), [reply.clone()]);
        let cache = tempfile::tempdir().unwrap();
        let mut hub = hub(&server, cache.path());
        let err = hub.fetch_expecting(REPO, COMMIT, FILE, None, Some(BYTES.len() as u64)).unwrap_err();
        match &err {
            FetchError::TooLarge { path, limit, .. } => assert_eq!((path.as_str(), *limit), (FILE, BYTES.len() as u64)),
            other => panic!("expected TooLarge, got {other:?}"),
        }
        assert!(err.to_string().contains(FILE), "{err}");
        assert_nothing_cached(cache.path());
    }
    // A body without a length that ends early is short, and not kept either.
    let server = Server::start();
    server.route("GET", &resolve(), [Reply::file(COMMIT, &BYTES[..10]).fault(Fault::Unsized)]);
    let cache = tempfile::tempdir().unwrap();
    let err =
        hub(&server, cache.path()).fetch_expecting(REPO, COMMIT, FILE, None, Some(BYTES.len() as u64)).unwrap_err();
    assert!(matches!(err, FetchError::Size { actual: 10, .. }), "{err:?}");
    assert_nothing_cached(cache.path());
}

#[test]
fn a_redirect_loop_ends_in_an_error() {
    let server = Server::start();
    server.route("GET", &resolve(), [Reply::redirect(302, &resolve())]);
    let cache = tempfile::tempdir().unwrap();
    let mut hub = hub(&server, cache.path());
    let err = within(Duration::from_secs(20), move || hub.fetch(REPO, COMMIT, FILE, None).map(|_| ())).unwrap_err();
    assert!(err.to_string().contains("redirects"), "{err}");
    assert!(server.count("GET", &resolve()) <= 11, "{}", server.count("GET", &resolve()));
    assert_nothing_cached(cache.path());
}

#[test]
fn two_fetches_of_the_same_file_at_once_both_succeed() {
    let server = Server::start();
    server.route("GET", &resolve(), [Reply::file(COMMIT, BYTES).fault(Fault::Stall(10, Duration::from_millis(300)))]);
    let cache = tempfile::tempdir().unwrap();
    let fetches: Vec<_> = (0..2)
        .map(|_| {
            let mut hub = hub(&server, cache.path());
            std::thread::spawn(move || hub.fetch(REPO, COMMIT, FILE, Some(&expected())).map(|(_, bytes)| bytes))
        })
        .collect();
    for fetch in fetches {
        assert_eq!(fetch.join().unwrap().unwrap(), BYTES);
    }
    assert_eq!(server.count("GET", &resolve()), 2);
    assert_cached_intact(&hub(&server, cache.path()), cache.path());
}

#[cfg(unix)]
#[test]
fn a_link_planted_in_the_cache_is_not_written_through() {
    // An older client could be made to leave a snapshot directory that links elsewhere.
    let root = tempfile::tempdir().unwrap();
    let cache = root.path().join("cache");
    let outside = root.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    let snapshots = cache.join("kernels--kernels-test--relu/snapshots");
    std::fs::create_dir_all(&snapshots).unwrap();
    std::os::unix::fs::symlink(&outside, snapshots.join(COMMIT)).unwrap();
    let server = Server::start();
    server.route("GET", &resolve(), [Reply::file(COMMIT, BYTES)]);
    let mut hub = hub(&server, &cache);

    let err = hub.fetch(REPO, COMMIT, FILE, Some(&expected())).unwrap_err();
    assert!(matches!(&err, FetchError::Io { path, .. } if path == &snapshots.join(COMMIT)), "{err:?}");
    assert!(err.to_string().contains("should be a directory"), "{err}");
    assert!(tree(&outside).is_empty(), "{:#?}", tree(&outside));
}
