//! `kernels_build::Builder` end to end, in process: a manifest with a Hub kernel (served by the
//! loopback Hub), a Hub-layout `path` kernel (the C++ one) and a kernel crate `path` (the Rust
//! one, compiled for the target), with and without a lock.

use std::path::{Path, PathBuf};

use kernels_build::env::Env;
use kernels_build::hub::HubSettings;
use kernels_build::lock::Lock;
use kernels_build::{BuildError, Builder};
use kernels_tests::*;

const REPO: &str = "kernels-test/build-rust-cpu";

fn manifest(dir: &Path, version: u64) {
    let cpp = cpp_cpu_kernel();
    let crate_dir = workspace().join("examples/kernels/rust-cpu");
    std::fs::write(
        dir.join("kernels.toml"),
        format!(
            r#"[kernels.hub-ops]
repo = "{REPO}"
version = {version}

[kernels.cpp-ops]
path = {cpp:?}

[kernels.crate-ops]
path = {crate_dir:?}

[layers.RMSNorm]
cpu = {{ kernel = "hub-ops", function = "rms_norm" }}

[layers.SiluAndMul]
cpu = [{{ kernel = "cpp-ops", function = "silu_and_mul" }}]
cuda = {{ kernel = "hub-ops", function = "silu_and_mul", capability = "8.0.." }}

[build]
backends = ["cpu", "cuda"]
"#
        ),
    )
    .unwrap();
}

fn builder(dir: &Path, out: &Path, cache: &Path, offline: bool) -> Builder {
    let tvm = std::env::var_os("KERNELS_TVM_FFI_LIB").expect("KERNELS_TVM_FFI_LIB: run the tests with scripts/test.sh");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    Builder::new()
        .env(Env::fixed([("KERNELS_TVM_FFI_LIB", tvm), ("CARGO", cargo)]))
        .manifest_dir(dir)
        .out_dir(out)
        .target(target())
        .hub(HubSettings { endpoint: hub_endpoint(), cache_dir: cache.to_owned(), token: None, offline })
}

fn registry_and_blobs(out: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = out.join("kernels");
    let mut files: Vec<_> = std::fs::read_dir(dir.join("blobs")).unwrap().map(|e| e.unwrap().path()).collect();
    files.push(dir.join("registry.rs"));
    files.sort();
    files.into_iter().map(|p| (p.strip_prefix(out).unwrap().to_owned(), std::fs::read(&p).unwrap())).collect()
}

#[test]
fn builds_resolve_lock_embed_and_stay_deterministic() {
    publish(REPO, rust_cpu_repo_dir(), &["main", "v1"]);
    let tmp = tempfile::tempdir().unwrap();
    let (dir, cache) = (tmp.path().join("crate"), tmp.path().join("hf"));
    std::fs::create_dir_all(&dir).unwrap();
    manifest(&dir, 1);

    // No lock, locked build: an error naming the command that fixes it.
    let err = builder(&dir, &tmp.path().join("out0"), &cache, false).locked(true).run().unwrap_err();
    assert!(matches!(err, BuildError::Locked { .. }), "{err}");
    assert!(err.to_string().contains("run `cargo kernels lock`"), "{err}");

    // No lock: resolved in memory, proposed lock in OUT_DIR, a warning naming the command.
    let first = builder(&dir, &tmp.path().join("out1"), &cache, false).run().unwrap();
    let proposed = first.proposed_lock.clone().expect("a proposed lock");
    assert!(proposed.starts_with(tmp.path().join("out1/kernels")));
    assert!(first.cargo.lines().iter().any(|l| l.starts_with("cargo:warning=") && l.contains("cargo kernels lock")));
    assert!(!dir.join("kernels.lock").exists(), "the build script never writes the lock");
    let names: Vec<_> = first.generated.kernels.iter().map(|k| (k.name.as_str(), k.variants.len())).collect();
    assert_eq!(names, [("cpp-ops", 1), ("crate-ops", 1), ("hub-ops", 1)]);
    assert!(first.generated.tvm_ffi.is_some(), "the C++ kernel needs libtvm_ffi.so, so it is embedded");

    // With the lock in place: no warning, same output, also into another OUT_DIR.
    std::fs::copy(&proposed, dir.join("kernels.lock")).unwrap();
    let second = builder(&dir, &tmp.path().join("out2"), &cache, false).run().unwrap();
    assert!(second.proposed_lock.is_none());
    assert!(!second.cargo.lines().iter().any(|l| l.starts_with("cargo:warning=")), "{:?}", second.cargo.lines());
    assert_eq!(registry_and_blobs(&tmp.path().join("out1")), registry_and_blobs(&tmp.path().join("out2")));

    // Offline, with a warm cache: the same bytes, no network.
    let third = builder(&dir, &tmp.path().join("out3"), &cache, true).run().unwrap();
    assert_eq!(registry_and_blobs(&tmp.path().join("out2")), registry_and_blobs(&tmp.path().join("out3")));
    let lines = third.cargo.lines().join("\n");
    assert!(lines.contains(&format!("cargo:rerun-if-changed={}", dir.join("kernels.toml").display())), "{lines}");
    assert!(lines.contains(&format!("cargo:rerun-if-changed={}", dir.join("kernels.lock").display())), "{lines}");
    assert!(lines.contains("cargo:rerun-if-env-changed=KERNELS_TVM_FFI_LIB"), "{lines}");

    // Offline with a cold cache: a clear error naming the fix.
    let err = builder(&dir, &tmp.path().join("out4"), &tmp.path().join("cold"), true).run().unwrap_err();
    assert!(err.to_string().contains("cargo kernels download"), "{err}");

    // A stale lock says what changed.
    manifest(&dir, 2);
    let err = builder(&dir, &tmp.path().join("out5"), &cache, false).locked(true).run().unwrap_err();
    assert!(
        err.to_string().contains(
            "locked as kernels-test/build-rust-cpu @ version 1 but declared as kernels-test/build-rust-cpu @ version 2"
        ),
        "{err}"
    );
    let lock = Lock::read(&dir.join("kernels.lock")).unwrap().unwrap();
    assert_eq!(lock.kernels.len(), 1);
}

#[test]
fn a_missing_lock_emits_no_rerun_line_for_it() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("kernels.toml"), "[build]\nbackends = [\"cpu\"]\n").unwrap();
    let report = Builder::new()
        .env(Env::fixed::<&str, &str>([]))
        .manifest_dir(tmp.path())
        .out_dir(tmp.path().join("out"))
        .target(target())
        .hub(HubSettings {
            endpoint: "http://127.0.0.1:9".into(),
            cache_dir: tmp.path().join("hf"),
            token: None,
            offline: true,
        })
        .run()
        .unwrap();
    let lines = report.cargo.lines().join("\n");
    assert!(!lines.contains("kernels.lock"), "{lines}");
    assert!(lines.contains("kernels.toml"), "{lines}");
    let text = std::fs::read_to_string(&report.registry).unwrap();
    assert!(text.starts_with("// @generated"), "{text}");
}

#[test]
fn a_missing_optional_path_kernel_is_a_warning_and_its_layers_fall_back() {
    let tmp = tempfile::tempdir().unwrap();
    let write = |optional: bool| {
        std::fs::write(
            tmp.path().join("kernels.toml"),
            format!(
                "[kernels.cpu-ops]\npath = {:?}\noptional = true\n\n\
                 [kernels.gpu-ops]\npath = \"not-built-yet\"\noptional = {optional}\n\n\
                 [layers.RMSNorm]\ncpu = {{ kernel = \"cpu-ops\", function = \"rms_norm\" }}\n\
                 cuda = {{ kernel = \"gpu-ops\", function = \"rms_norm\" }}\n\n\
                 [layers.SiluAndMul]\ncuda = {{ kernel = \"gpu-ops\", function = \"silu_and_mul\" }}\n\n\
                 [build]\nbackends = [\"cpu\", \"cuda\"]\n",
                rust_cpu_kernel()
            ),
        )
        .unwrap();
    };
    let run = |out: &str| {
        Builder::new()
            .env(Env::fixed::<&str, &str>([]))
            .manifest_dir(tmp.path())
            .out_dir(tmp.path().join(out))
            .target(target())
            .hub(HubSettings {
                endpoint: "http://127.0.0.1:9".into(),
                cache_dir: tmp.path().join("hf"),
                token: None,
                offline: true,
            })
            .run()
    };

    // Optional and missing: a warning naming the directory and the layers that fall back; the
    // present optional kernel is embedded as usual.
    write(true);
    let report = run("out1").unwrap();
    let missing = tmp.path().join("not-built-yet");
    let warnings: Vec<&String> = report.cargo.lines().iter().filter(|l| l.starts_with("cargo:warning=")).collect();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(warnings[0].contains(&format!("optional kernel `gpu-ops`: {}", missing.display())), "{}", warnings[0]);
    assert!(warnings[0].contains("RMSNorm (cuda), SiluAndMul (cuda) will use the Rust forward"), "{}", warnings[0]);
    let kernels: Vec<_> = report.generated.kernels.iter().map(|k| (k.name.as_str(), k.variants.len())).collect();
    assert_eq!(kernels, [("cpu-ops", 1), ("gpu-ops", 0)]);
    assert_eq!(report.generated.layers.len(), 3, "the mappings stay, so the runtime explains the fallback");
    // No rerun line for a path that does not exist (Cargo would rerun the script every build).
    let reruns = report.cargo.lines().iter().filter(|l| l.contains("rerun-if-changed") && l.contains("not-built-yet"));
    assert_eq!(reruns.count(), 0, "{:?}", report.cargo.lines());

    // Once it exists it is used: here, the same kernel laid out there.
    copy_tree(rust_cpu_kernel(), &missing);
    let report = run("out2").unwrap();
    assert!(!report.cargo.lines().iter().any(|l| l.starts_with("cargo:warning=")), "{:?}", report.cargo.lines());
    assert_eq!(report.generated.kernels.iter().map(|k| k.variants.len()).collect::<Vec<_>>(), [1, 1]);

    // Not optional and missing: the build fails, naming the kernel and its path.
    std::fs::remove_dir_all(&missing).unwrap();
    write(false);
    let err = run("out3").unwrap_err();
    assert!(matches!(err, BuildError::Local { ref name, .. } if name == "gpu-ops"), "{err}");
    assert!(err.to_string().contains("not a kernel directory"), "{err}");
}

#[test]
fn a_tvm_ffi_runtime_other_than_the_pinned_one_fails_a_locked_build() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(
        dir.join("kernels.toml"),
        format!(
            "[kernels.cpp-ops]\npath = {:?}\n\n[layers.SiluAndMul]\ncpu = {{ kernel = \"cpp-ops\", function = \"silu_and_mul\" }}\n\n\
             [build]\nbackends = [\"cpu\"]\n",
            cpp_cpu_kernel()
        ),
    )
    .unwrap();
    // The lock pins another libtvm_ffi.so than the one KERNELS_TVM_FFI_LIB names.
    let pinned = "0".repeat(64);
    std::fs::write(
        dir.join("kernels.lock"),
        format!(
            "version = 1\n\n[tvm-ffi]\nfile = \"libtvm_ffi.so\"\nsha256 = \"{pinned}\"\nsize = 1\nsource = \"apache-tvm-ffi==0.0.1\"\n"
        ),
    )
    .unwrap();
    let tvm = std::env::var_os("KERNELS_TVM_FFI_LIB").expect("KERNELS_TVM_FFI_LIB: run the tests with scripts/test.sh");
    let local = kernels_runtime::digest::sha256_hex(&std::fs::read(&tvm).unwrap());
    let run = |out: &str, locked: bool| {
        let mut vars = vec![("KERNELS_TVM_FFI_LIB", tvm.clone())];
        if locked {
            vars.push(("KERNELS_LOCKED", "1".into()));
        }
        Builder::new()
            .env(Env::fixed(vars))
            .manifest_dir(dir)
            .out_dir(dir.join(out))
            .target(target())
            .hub(HubSettings {
                endpoint: "http://127.0.0.1:9".into(),
                cache_dir: dir.join("hf"),
                token: None,
                offline: true,
            })
            .run()
    };

    // Not locked: a warning, and the local one is embedded.
    let report = run("out1", false).unwrap();
    let warnings: Vec<&String> = report.cargo.lines().iter().filter(|l| l.starts_with("cargo:warning=")).collect();
    assert!(warnings.iter().any(|w| w.contains(&local) && w.contains("embedding the local one")), "{warnings:?}");
    assert!(report.generated.tvm_ffi.is_some());

    // Locked: an error naming both hashes and the fixes; nothing is generated.
    let Err(err) = run("out2", true) else { panic!("a locked build embedded a libtvm_ffi.so the lock does not pin") };
    let msg = err.to_string();
    for part in [local.as_str(), pinned.as_str(), "KERNELS_LOCKED", "cargo kernels lock", "KERNELS_TVM_FFI_LIB"] {
        assert!(msg.contains(part), "{part} not in: {msg}");
    }
    assert!(!dir.join("out2/kernels/registry.rs").exists());
}

#[test]
fn a_prefetch_only_build_lists_the_lock_pins_of_each_variant() {
    publish("kernels-test/prefetch-pins", rust_cpu_repo_dir(), &["main", "v1"]);
    let tmp = tempfile::tempdir().unwrap();
    let (dir, cache) = (tmp.path().join("crate"), tmp.path().join("hf"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("kernels.toml"),
        "[kernels.hub-ops]\nrepo = \"kernels-test/prefetch-pins\"\nversion = 1\n\n\
         [layers.RMSNorm]\ncpu = { kernel = \"hub-ops\", function = \"rms_norm\" }\n\n\
         [build]\nbackends = [\"cpu\"]\nembed = false\n",
    )
    .unwrap();
    let first = builder(&dir, &tmp.path().join("out1"), &cache, false).run().unwrap();
    std::fs::copy(first.proposed_lock.unwrap(), dir.join("kernels.lock")).unwrap();
    let report = builder(&dir, &tmp.path().join("out2"), &cache, true).locked(true).run().unwrap();

    let lock = Lock::read(&dir.join("kernels.lock")).unwrap().unwrap();
    let pinned = &lock.kernels[0].variants[0];
    let kernel = &report.generated.kernels[0];
    assert!(kernel.variants.is_empty(), "nothing is embedded");
    let [cached] = &kernel.cached[..] else { panic!("{:?}", kernel.cached) };
    assert_eq!(cached.variant, pinned.name);
    assert_eq!(Some(&cached.metadata), pinned.metadata_file());
    assert!(cached.library.path.ends_with(".so"));
    assert!(pinned.files.contains(&cached.library), "{:?} not in {:?}", cached.library, pinned.files);
    let text = std::fs::read_to_string(&report.registry).unwrap();
    for pin in [&cached.library, &cached.metadata] {
        assert!(text.contains(&format!("sha256: {:?}, size: {}", pin.sha256, pin.size)), "{text}");
    }
}
