//! Kernels prefetched into the Hub cache (`[build] embed = false`) load at run time only when
//! the snapshot still holds the files `kernels.lock` pinned: a snapshot replaced with other,
//! self-consistent files (a digest that matches them) is refused and never loaded.

use std::path::{Path, PathBuf};

use kernels_runtime::dispatch::{Choice, Mode, Settings, Target, decide};
use kernels_runtime::loader::{self, LoadError, Source};
use kernels_runtime::metadata::{self, METADATA_FILE};
use kernels_runtime::platform::Platform;
use kernels_runtime::registry::{CachedVariant, KernelEntry, LayerEntry, ModeSupport, PinnedFile, Registry};
use kernels_runtime::select::Request;
use kernels_runtime::variant::{BackendKind, CpuArch, Os};

#[allow(dead_code)] // only the intact layout is used here
#[path = "support/example_kernel.rs"]
mod example_kernel;

const REPO: &str = "kernels-test/pinned";

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

fn variant_name() -> String {
    format!("tvm-ffi01-cpu-{}-{}", CpuArch::current(), Os::current())
}

/// The intact variant directory of the example kernel.
fn intact_variant() -> PathBuf {
    example_kernel::hubs().intact.join("build").join(variant_name())
}

fn library_name(dir: &Path) -> String {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .find(|n| n.ends_with(".so"))
        .expect("the variant has a library")
}

fn pin(dir: &Path, file: &str) -> PinnedFile {
    let bytes = std::fs::read(dir.join(file)).unwrap();
    PinnedFile {
        path: leak(file.to_owned()),
        sha256: leak(kernels_runtime::digest::sha256_hex(&bytes)),
        size: bytes.len() as u64,
    }
}

/// What the build generates for the intact variant from `kernels.lock`.
fn pins() -> &'static [CachedVariant] {
    let dir = intact_variant();
    let library = pin(&dir, &library_name(&dir));
    let metadata = pin(&dir, METADATA_FILE);
    Box::leak(Box::new([CachedVariant { variant: leak(variant_name()), archs: &[], library, metadata }]))
}

/// Copies the intact variant into `<cache>/kernels--<org>--<name>/snapshots/<commit>/`;
/// returns the variant directory.
fn snapshot(cache: &Path, commit: &str) -> PathBuf {
    let dir = cache
        .join(format!("kernels--{}", REPO.replace('/', "--")))
        .join("snapshots")
        .join(commit)
        .join("build")
        .join(variant_name());
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(intact_variant()).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), dir.join(entry.file_name())).unwrap();
    }
    dir
}

/// Replaces the variant's library with another loadable one (the same code with bytes
/// appended) and rewrites `metadata.json` so its digest matches: self-consistent, not pinned.
fn replace_consistently(dir: &Path) -> PathBuf {
    let lib = dir.join(library_name(dir));
    let mut bytes = std::fs::read(&lib).unwrap();
    bytes.extend_from_slice(b"\0replaced");
    std::fs::write(&lib, bytes).unwrap();
    let mut meta: serde_json::Value = serde_json::from_slice(&std::fs::read(dir.join(METADATA_FILE)).unwrap()).unwrap();
    meta["digest"]["files"] = serde_json::to_value(metadata::digest_files(dir).unwrap()).unwrap();
    std::fs::write(dir.join(METADATA_FILE), serde_json::to_vec_pretty(&meta).unwrap()).unwrap();
    metadata::read_and_verify(dir).expect("the replaced variant is self-consistent");
    lib
}

fn is_mapped(path: &Path) -> bool {
    let real = std::fs::canonicalize(path).unwrap();
    std::fs::read_to_string("/proc/self/maps").unwrap().contains(real.to_str().unwrap())
}

fn registry(commit: &str, cached: &'static [CachedVariant]) -> &'static Registry {
    let kernels: &'static [KernelEntry] = Box::leak(Box::new([KernelEntry {
        name: "ops",
        repo: REPO,
        commit: Some(leak(commit.to_owned())),
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
}

// One test: it sets HF_HUB_CACHE for the process.
#[test]
fn cached_variants_load_only_with_the_pinned_hashes() {
    let cache = tempfile::tempdir().unwrap();
    // SAFETY: the only test of this binary; nothing else reads the environment concurrently.
    unsafe { std::env::set_var("HF_HUB_CACHE", cache.path()) };
    let platform = Platform::detect();
    let pins = pins();

    // The pinned snapshot loads, from the cache, through its pins.
    let intact = "a".repeat(40);
    let dir = snapshot(cache.path(), &intact);
    let (loaded, trace) = loader::load_cached(REPO, &intact, pins, &platform, Request::cpu()).unwrap();
    assert_eq!(loaded.source(), Source::Cached);
    assert_eq!(trace.chosen(), Some(variant_name().as_str()));
    assert_eq!(loaded.path(), dir.join(pins[0].library.path));
    loaded.function("rms_norm").unwrap();

    // A replaced snapshot whose digest matches its own files is refused: metadata.json is not
    // the pinned one. Nothing of it is loaded.
    let replaced = "b".repeat(40);
    let dir = snapshot(cache.path(), &replaced);
    let lib = replace_consistently(&dir);
    let err = loader::load_cached(REPO, &replaced, pins, &platform, Request::cpu()).unwrap_err();
    let LoadError::PinMismatch { path, expected, actual, .. } = &err else { panic!("{err}") };
    assert_eq!(path, &dir.join(METADATA_FILE));
    assert_eq!(expected, pins[0].metadata.sha256);
    assert_eq!(actual, &kernels_runtime::digest::sha256_hex(&std::fs::read(dir.join(METADATA_FILE)).unwrap()));
    let msg = err.to_string();
    let meta_path = dir.join(METADATA_FILE).display().to_string();
    for part in [meta_path.as_str(), expected, actual, "cargo kernels download"] {
        assert!(msg.contains(part), "{part} not in: {msg}");
    }
    assert!(!is_mapped(&lib), "the replaced library was loaded");

    // The library is checked against its own pin too (here the lock pins other bytes than
    // the snapshot's metadata.json digest lists).
    let other = "c".repeat(40);
    let dir = snapshot(cache.path(), &other);
    let mut lib_pin = pins[0];
    lib_pin.library.sha256 = leak(kernels_runtime::digest::sha256_hex(b"other library"));
    let lib_pins: &'static [CachedVariant] = Box::leak(Box::new([lib_pin]));
    let err = loader::load_cached(REPO, &other, lib_pins, &platform, Request::cpu()).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(&err, LoadError::PinMismatch { path, .. } if path == &dir.join(pins[0].library.path)), "{msg}");
    assert!(msg.contains(lib_pin.library.sha256) && msg.contains("cargo kernels lock"), "{msg}");
    assert!(!is_mapped(&dir.join(pins[0].library.path)), "the refused library was loaded");

    // Dispatch falls back to the Rust forward, saying why; the pinned snapshot is used.
    let settings = Settings::default();
    let cpu = Target::of(None);
    let d = decide(registry(&replaced, pins), "RMSNorm", cpu, Mode::Inference, &settings, &platform);
    assert!(matches!(&d.choice, Choice::Fallback(_)), "{}", d.choice);
    assert!(d.choice.to_string().contains("kernels.lock pins"), "{}", d.choice);
    let d = decide(registry(&intact, pins), "RMSNorm", cpu, Mode::Inference, &settings, &platform);
    assert!(matches!(&d.choice, Choice::Kernel(k) if k.source == Source::Cached), "{}", d.choice);
}
