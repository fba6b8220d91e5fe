//! A fresh crate following the README (kernels.toml + three-line build.rs + include_kernels!)
//! builds with real `cargo` against the loopback Hub; its binary, copied alone into an empty
//! directory and run with `HF_HUB_OFFLINE=1` and an empty `HOME`, loads its embedded kernels and
//! calls them. A no-op rebuild does not rerun the build script.

use std::path::Path;
use std::process::Command;

use kernels_tests::*;

#[test]
fn a_fresh_crate_builds_embeds_and_runs_offline_from_an_empty_directory() {
    let commit = publish("kernels-test/app-ops", rust_cpu_repo_dir(), &["main", "v1"]);
    let tmp = tempfile::tempdir().unwrap();
    let kernels_toml = format!(
        "[kernels.hub-ops]\nrepo = \"kernels-test/app-ops\"\nversion = 1\n\n\
         [kernels.cpp-ops]\npath = {:?}\n\n\
         [layers.RMSNorm]\ncpu = {{ kernel = \"hub-ops\", function = \"rms_norm\" }}\n\n\
         [build]\nbackends = [\"cpu\"]\n",
        cpp_cpu_kernel()
    );
    let app = FreshCrate::new(tmp.path(), "app", "kernels-app", &kernels_toml);

    // `cargo kernels lock` pins the Hub kernel.
    let locked = app.lock();
    assert!(locked.contains(&commit), "{locked}");
    // The C++ kernel needs libtvm_ffi.so: the lock pins the wheel's by its release.
    assert!(locked.contains("[tvm-ffi]") && locked.contains("source = \"apache-tvm-ffi==0."), "{locked}");

    // Build, locked, against the Hub; then a no-op rebuild.
    app.build(false);
    let again = app.build(true);
    assert!(again.contains("Fresh kernels-app"), "{again}");
    let reran =
        again.lines().any(|l| l.contains("Running") && l.contains("/kernels-app-") && l.contains("build-script-build"));
    assert!(!reran, "the build script ran again:\n{again}");
    if let Some(path) = std::env::var_os("KERNELS_TEST_SAVE_NOOP_BUILD") {
        std::fs::write(path, &again).unwrap();
    }

    // Copy the binary alone into an empty directory and run it with no Hub, no HOME.
    let bin_dir = tmp.path().join("empty");
    let bin = app.copy_binary_into(&bin_dir);
    let unpacked = || -> Vec<_> {
        std::fs::read_dir(bin_dir.join("tmp"))
            .unwrap()
            .flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
            .collect()
    };
    for unpack in ["memfd", "file"] {
        let out = Command::new(&bin)
            .current_dir(&bin_dir)
            .env_clear()
            .env("HOME", "")
            .env("HF_HUB_OFFLINE", "1")
            .env("TMPDIR", bin_dir.join("tmp"))
            .env("KERNELS_UNPACK", unpack)
            .output()
            .unwrap();
        let text = check(out, &format!("the copied binary, KERNELS_UNPACK={unpack}"));
        let mut lines: Vec<&str> = text.lines().collect();
        lines.sort();
        assert_eq!(
            lines,
            ["ok cpp-ops tvm-ffi01-cpu-x86_64-linux embedded", "ok hub-ops tvm-ffi01-cpu-x86_64-linux embedded"],
            "{text}"
        );
        // From memory, nothing is written. To files: unpacked once into the temp dir (HOME is
        // empty), content-addressed: the two kernels and the tvm-ffi runtime the C++ one needs.
        let files = unpacked();
        assert_eq!(files.len(), if unpack == "memfd" { 0 } else { 3 }, "{unpack}: {files:?}");
    }
    assert!(Path::new(&bin).exists());
}

/// The same for a torch stable-ABI kernel: the example kernel's Hub layout (targets 2.9 and
/// 2.11) served by the loopback Hub, locked, fetched, verified and embedded by the build; the
/// copied binary runs a `#[kernelize]` layer on it in strict mode, offline, and the trace
/// chooses the newest stable-ABI target.
#[test]
fn a_fresh_crate_runs_a_torch_stable_abi_kernel_from_the_hub_in_strict_mode_offline() {
    let Some(kernel) = stable_abi_cpu_kernel() else { return };
    let repo_dir = workspace().join("target").join("kernels-tests").join("repo-stable-abi-cpu");
    let _ = std::fs::remove_dir_all(&repo_dir);
    copy_tree(&kernel, &repo_dir);
    std::fs::write(repo_dir.join("README.md"), "# stable-abi-cpu\n\nA torch stable-ABI example kernel.\n").unwrap();
    let commit = publish("kernels-test/stable-abi-app-ops", &repo_dir, &["main", "v1"]);

    let tmp = tempfile::tempdir().unwrap();
    let kernels_toml = "[kernels.stable-ops]\nrepo = \"kernels-test/stable-abi-app-ops\"\nversion = 1\n\n\
                        [layers.SiluAndMul]\ncpu = { kernel = \"stable-ops\", function = \"silu_and_mul\" }\n\n\
                        [build]\nbackends = [\"cpu\"]\n";
    let app = FreshCrate::new(tmp.path(), "stable-abi-app", "kernels-stable-abi-app", kernels_toml);
    let arch = std::env::consts::ARCH;
    let (newest, older) =
        (format!("torch-stable-abi211-cpu-{arch}-linux"), format!("torch-stable-abi29-cpu-{arch}-linux"));

    let locked = app.lock();
    assert!(locked.contains(&commit), "{locked}");
    assert!(locked.contains(&newest) && locked.contains(&older), "{locked}");
    // Each variant's library is its `<id>.abi3.so`, pinned like any other.
    assert_eq!(locked.matches(".abi3.so").count(), 2, "{locked}");
    app.build(false);

    let bin_dir = tmp.path().join("empty");
    let bin = app.copy_binary_into(&bin_dir);
    for unpack in ["memfd", "file"] {
        let out = Command::new(&bin)
            .current_dir(&bin_dir)
            .env_clear()
            .env("HOME", "")
            .env("HF_HUB_OFFLINE", "1")
            .env(kernels_runtime::env::STRICT, "1")
            .env("TMPDIR", bin_dir.join("tmp"))
            .env("KERNELS_UNPACK", unpack)
            .output()
            .unwrap();
        let text = check(out, &format!("the copied binary, KERNELS_UNPACK={unpack}"));
        eprintln!("KERNELS_UNPACK={unpack}:\n{text}");
        let first = text.lines().next().unwrap_or_default();
        assert_eq!(first, format!("ok SiluAndMul stable-ops silu_and_mul {newest} embedded"), "{text}");
        assert!(text.contains(&format!("{newest}  chosen")), "{text}");
        assert!(text.contains(&format!("{older}   accepted  usable, ranked 2")), "{text}");
        assert!(text.trim_end().ends_with(&format!("=> {newest}")), "{text}");
    }
}

/// A Hub kernel whose newest stable-ABI variant the runtime refuses before loading (the
/// `unsupported` build laid out under the 2.11 name) and whose 2.9 variant is good: both are
/// embedded, and the copied binary, strict and offline, runs the layer on 2.9 with the
/// refusal in its trace.
#[test]
fn a_refused_stable_abi_variant_from_the_hub_gives_way_to_the_next_one() {
    let Some(kernel) = stable_abi_cpu_kernel() else { return };
    let arch = std::env::consts::ARCH;
    let (newest, older) =
        (format!("torch-stable-abi211-cpu-{arch}-linux"), format!("torch-stable-abi29-cpu-{arch}-linux"));
    let unsupported = workspace().join("build-out").join("stable-abi-cpu-unsupported").join("build").join(&newest);
    assert!(unsupported.is_dir(), "{} is missing: run `scripts/build-stable-abi-kernel.sh`", unsupported.display());
    let repo_dir = workspace().join("target").join("kernels-tests").join("repo-stable-abi-cpu-mixed");
    let _ = std::fs::remove_dir_all(&repo_dir);
    copy_tree(&kernel.join("build").join(&older), &repo_dir.join("build").join(&older));
    copy_tree(&unsupported, &repo_dir.join("build").join(&newest));
    std::fs::write(
        repo_dir.join("README.md"),
        "# stable-abi-cpu-mixed\n\nA refused 2.11 variant and a good 2.9 one.\n",
    )
    .unwrap();
    let commit = publish("kernels-test/stable-abi-mixed-ops", &repo_dir, &["main", "v1"]);

    let tmp = tempfile::tempdir().unwrap();
    let kernels_toml = "[kernels.stable-ops]\nrepo = \"kernels-test/stable-abi-mixed-ops\"\nversion = 1\n\n\
                        [layers.SiluAndMul]\ncpu = { kernel = \"stable-ops\", function = \"silu_and_mul\" }\n\n\
                        [build]\nbackends = [\"cpu\"]\n";
    let app = FreshCrate::new(tmp.path(), "stable-abi-app", "kernels-stable-abi-mixed-app", kernels_toml);
    let locked = app.lock();
    assert!(locked.contains(&commit) && locked.contains(&newest) && locked.contains(&older), "{locked}");
    app.build(false);

    let bin_dir = tmp.path().join("empty");
    let bin = app.copy_binary_into(&bin_dir);
    let out = Command::new(&bin)
        .current_dir(&bin_dir)
        .env_clear()
        .env("HOME", "")
        .env("HF_HUB_OFFLINE", "1")
        .env(kernels_runtime::env::STRICT, "1")
        .env("TMPDIR", bin_dir.join("tmp"))
        .output()
        .unwrap();
    let text = check(out, "the copied binary");
    eprintln!("{text}");
    let first = text.lines().next().unwrap_or_default();
    assert_eq!(first, format!("ok SiluAndMul stable-ops silu_and_mul {older} embedded"), "{text}");
    assert!(text.contains(&format!("{older}   chosen")), "{text}");
    let refused = text.lines().find(|l| l.trim_start().starts_with(&newest)).unwrap_or_default();
    assert!(refused.contains("rejected  refused before loading: "), "{text}");
    assert!(refused.contains("calls `aten::matmul`, which this runtime does not implement"), "{text}");
    assert!(text.trim_end().ends_with(&format!("=> {older}")), "{text}");
}
