//! Resolution, fetching and verifying through `kernels_build` against the loopback Hub (olah),
//! serving kernel repos built from this repository's example kernels.

use kernels_build::hub::{Hub, HubSettings};
use kernels_build::lock::ResolvedFile;
use kernels_build::manifest::Requested;
use kernels_build::{resolve, verify};
use kernels_runtime::digest::sha256_hex;
use kernels_runtime::variant::Os;
use kernels_tests::*;

fn hub(cache: &std::path::Path, offline: bool) -> Hub {
    Hub::new(HubSettings { endpoint: hub_endpoint(), cache_dir: cache.to_owned(), token: None, offline })
}

#[test]
fn a_version_resolves_to_its_branch_and_pins_every_loadable_file() {
    let commit = publish("kernels-test/resolve-rust-cpu", rust_cpu_repo_dir(), &["main", "v1"]);
    let cache = tempfile::tempdir().unwrap();
    let mut hub = hub(cache.path(), false);
    let kernel = resolve::resolve(&mut hub, "ops", "kernels-test/resolve-rust-cpu", &Requested::Version(1)).unwrap();
    assert_eq!(kernel.commit, commit);
    let names: Vec<_> = kernel.variants.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["tvm-ffi01-cpu-x86_64-linux"], "the torch variant is not pinned");
    let local = rust_cpu_kernel().join("build/tvm-ffi01-cpu-x86_64-linux");
    for file in &kernel.variants[0].files {
        let bytes = std::fs::read(local.join(&file.path)).unwrap();
        assert_eq!(file.sha256, sha256_hex(&bytes), "{}", file.path);
        assert_eq!(file.size, bytes.len() as u64, "{}", file.path);
    }
    // Only metadata.json was downloaded to lock: the library's hash came from the digest.
    let lib = kernel.variants[0].files.iter().find(|f| f.path.ends_with(".so")).unwrap();
    assert!(
        !hub.cache_path(
            "kernels-test/resolve-rust-cpu",
            &commit,
            &format!("build/tvm-ffi01-cpu-x86_64-linux/{}", lib.path)
        )
        .exists()
    );

    // Fetching pins every byte; a second, offline, fetch is served from the cache alone.
    let fetched = verify::hub_variant(&mut hub, &kernel.repo, &kernel.commit, &kernel.variants[0], &Os::Linux).unwrap();
    assert_eq!(fetched.library, std::fs::read(local.join(&fetched.library_file)).unwrap());
    assert!(
        fetched.dir.starts_with(cache.path().join("kernels--kernels-test--resolve-rust-cpu/snapshots").join(&commit))
    );
    let mut offline = self::hub(cache.path(), true);
    let again =
        verify::hub_variant(&mut offline, &kernel.repo, &kernel.commit, &kernel.variants[0], &Os::Linux).unwrap();
    assert_eq!(again.library, fetched.library);
}

#[test]
fn revisions_and_missing_versions() {
    let commit = publish("kernels-test/revisions", rust_cpu_repo_dir(), &["main", "v1", "refs/tags/v1.0.0"]);
    let cache = tempfile::tempdir().unwrap();
    let mut hub = hub(cache.path(), false);
    for rev in ["main", "v1.0.0", commit.as_str()] {
        let k = resolve::resolve(&mut hub, "ops", "kernels-test/revisions", &Requested::Revision(rev.into())).unwrap();
        assert_eq!(k.commit, commit, "{rev}");
    }
    let err = resolve::resolve(&mut hub, "ops", "kernels-test/revisions", &Requested::Version(2)).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("no branch `v2`") && msg.contains("main, v1"), "{msg}");
}

#[test]
fn a_file_that_differs_from_the_lock_is_refused_and_not_kept() {
    let commit = publish("kernels-test/tampered-lock", rust_cpu_repo_dir(), &["main", "v1"]);
    let cache = tempfile::tempdir().unwrap();
    let mut hub = hub(cache.path(), false);
    let mut kernel = resolve::resolve(&mut hub, "ops", "kernels-test/tampered-lock", &Requested::Version(1)).unwrap();
    let lib = kernel.variants[0].files.iter_mut().find(|f| f.path.ends_with(".so")).unwrap();
    lib.sha256 = sha256_hex(b"something else");
    let path = format!("build/tvm-ffi01-cpu-x86_64-linux/{}", lib.path);
    let err = verify::hub_variant(&mut hub, &kernel.repo, &kernel.commit, &kernel.variants[0], &Os::Linux).unwrap_err();
    assert!(err.to_string().contains("expected") && err.to_string().contains(&path), "{err}");
    assert!(
        !hub.cache_path("kernels-test/tampered-lock", &commit, &path).exists(),
        "the refused file stays out of the cache"
    );
}

#[test]
fn prefetched_variants_load_from_the_hub_cache_at_run_time() {
    use kernels_runtime::loader::{self, Source};
    use kernels_runtime::platform::Platform;
    use kernels_runtime::select::Request;
    let commit = publish("kernels-test/cached", rust_cpu_repo_dir(), &["main", "v1"]);
    let cache = tempfile::tempdir().unwrap();
    let mut hub = hub(cache.path(), false);
    let kernel = resolve::resolve(&mut hub, "ops", "kernels-test/cached", &Requested::Version(1)).unwrap();
    let fetched = verify::hub_variant(&mut hub, &kernel.repo, &kernel.commit, &kernel.variants[0], &Os::Linux).unwrap();
    // What the build generates for it: the lock's pins of its library and metadata.json.
    use kernels_runtime::registry::{CachedVariant, PinnedFile};
    let leak = |s: &str| -> &'static str { Box::leak(s.to_owned().into_boxed_str()) };
    let pin = |f: &ResolvedFile| PinnedFile { path: leak(&f.path), sha256: leak(&f.sha256), size: f.size };
    let cached: &'static [CachedVariant] = Box::leak(Box::new([CachedVariant {
        variant: leak(&kernel.variants[0].name),
        archs: &[],
        library: pin(&fetched.pins.0),
        metadata: pin(&fetched.pins.1),
    }]));
    // SAFETY: tests in this binary do not read HF_HUB_CACHE concurrently with this write.
    unsafe { std::env::set_var("HF_HUB_CACHE", cache.path()) };
    let (loaded, trace) =
        loader::load_cached("kernels-test/cached", &commit, cached, &Platform::detect(), Request::cpu()).unwrap();
    assert_eq!(loaded.source(), Source::Cached);
    assert_eq!(trace.chosen(), Some("tvm-ffi01-cpu-x86_64-linux"));
    loaded.function("rms_norm").unwrap();
    let err = loader::load_cached("kernels-test/cached", &"0".repeat(40), cached, &Platform::detect(), Request::cpu())
        .unwrap_err();
    assert!(err.to_string().contains("snapshots"), "{err}");

    // Dispatch takes that tier for a kernel built with `embed = false` (pinned commit, no
    // embedded variants), and says so when the cache lacks it.
    use kernels_runtime::dispatch::{Choice, Mode, Settings, Target, decide};
    use kernels_runtime::registry::{KernelEntry, LayerEntry, ModeSupport, Registry};
    use kernels_runtime::variant::BackendKind;
    let registry = |commit: String| -> &'static Registry {
        let commit: &'static str = Box::leak(commit.into_boxed_str());
        let kernels: &'static [KernelEntry] = Box::leak(Box::new([KernelEntry {
            name: "ops",
            repo: "kernels-test/cached",
            commit: Some(commit),
            variants: &[],
            cached,
        }]));
        let layers: &'static [LayerEntry] = Box::leak(Box::new([LayerEntry {
            layer: "RMSNorm",
            device: BackendKind::Cpu,
            kernel: "ops",
            function: "rms_norm",
            capability: None,
            mode: ModeSupport::Inference,
            deterministic: false,
            tolerance: None,
        }]));
        Box::leak(Box::new(Registry { kernels, layers, tvm_ffi: None, cuda_runtime: None }))
    };
    let settings = Settings::default();
    let cpu = Target::of(None);
    let d = decide(registry(commit.clone()), "RMSNorm", cpu, Mode::Inference, &settings, &Platform::detect());
    assert!(matches!(&d.choice, Choice::Kernel(k) if k.source == Source::Cached), "{}", d.choice);
    let d = decide(registry("1".repeat(40)), "RMSNorm", cpu, Mode::Inference, &settings, &Platform::detect());
    assert!(matches!(&d.choice, Choice::Fallback(_)) && d.choice.to_string().contains("Hub cache"), "{}", d.choice);

    // A snapshot that is there but unreadable is a load failure that says what is wrong with
    // it, not "not prefetched".
    let broken = "2".repeat(40);
    let snapshot = cache.path().join("kernels--kernels-test--cached/snapshots").join(&broken);
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::write(snapshot.join("build"), b"a file where build/ should be").unwrap();
    let d = decide(registry(broken), "RMSNorm", cpu, Mode::Inference, &settings, &Platform::detect());
    use kernels_runtime::dispatch::FallbackReason;
    assert!(matches!(&d.choice, Choice::Fallback(FallbackReason::LoadFailed { .. })), "{}", d.choice);
    assert!(!d.choice.to_string().contains("prefetch"), "{}", d.choice);
}

/// One call a progress hook heard: the path, and bytes so far and total (`None, None`: done).
type Call = (String, Option<u64>, Option<u64>);

/// Every call a [`kernels_build::hub::Progress`] hook hears, shared with the test.
#[derive(Debug, Clone, Default)]
struct Heard(std::sync::Arc<std::sync::Mutex<Vec<Call>>>);

impl kernels_build::hub::Progress for Heard {
    fn bytes(&mut self, path: &str, so_far: u64, total: Option<u64>) {
        self.0.lock().unwrap().push((path.to_owned(), Some(so_far), total));
    }

    fn done(&mut self, path: &str) {
        self.0.lock().unwrap().push((path.to_owned(), None, None));
    }
}

#[test]
fn a_progress_hook_hears_each_download_from_zero_to_its_size() {
    let commit = publish("kernels-test/progress", rust_cpu_repo_dir(), &["main", "v1"]);
    let cache = tempfile::tempdir().unwrap();
    let heard = Heard::default();
    let mut hub = hub(cache.path(), false).with_progress(Box::new(heard.clone()));
    let variant = "tvm-ffi01-cpu-x86_64-linux";
    let local = rust_cpu_kernel().join("build").join(variant);
    let lib = std::fs::read_dir(&local)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .find(|n| n.ends_with(".so"))
        .unwrap();
    let bytes = std::fs::read(local.join(&lib)).unwrap();
    let path = format!("build/{variant}/{lib}");
    let size = bytes.len() as u64;
    hub.fetch_expecting("kernels-test/progress", &commit, &path, Some(&sha256_hex(&bytes)), Some(size)).unwrap();
    let calls = std::mem::take(&mut *heard.0.lock().unwrap());
    assert!(calls.iter().all(|(p, ..)| *p == path), "{calls:?}");
    assert_eq!(calls.first(), Some(&(path.clone(), Some(0), Some(size))), "{calls:?}");
    assert_eq!(calls[calls.len() - 2], (path.clone(), Some(size), Some(size)), "{calls:?}");
    assert_eq!(calls.last(), Some(&(path.clone(), None, None)), "done last: {calls:?}");
    let so_far: Vec<u64> = calls.iter().filter_map(|c| c.1).collect();
    assert!(so_far.windows(2).all(|w| w[0] <= w[1]), "{so_far:?}");
    // From the cache: nothing is downloaded, nothing heard.
    hub.fetch_expecting("kernels-test/progress", &commit, &path, Some(&sha256_hex(&bytes)), Some(size)).unwrap();
    assert!(heard.0.lock().unwrap().is_empty());
}
