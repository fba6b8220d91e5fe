//! A fresh crate following the README (kernels.toml + three-line build.rs + include_kernels!)
//! builds with real `cargo` against the loopback Hub; its binary, copied alone into an empty
//! directory and run with `HF_HUB_OFFLINE=1` and an empty `HOME`, loads its embedded kernels and
//! calls them. A no-op rebuild does not rerun the build script.

use std::path::Path;
use std::process::Command;

use kernels_tests::*;

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

fn check(out: std::process::Output, what: &str) -> String {
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{what} failed:\n{text}");
    text
}

#[test]
fn a_fresh_crate_builds_embeds_and_runs_offline_from_an_empty_directory() {
    let commit = publish("kernels-test/app-ops", rust_cpu_repo_dir(), &["main", "v1"]);
    let tmp = tempfile::tempdir().unwrap();
    let app = tmp.path().join("app");
    copy_tree(&workspace().join("tests/fixtures/app"), &app);
    let ws = workspace();
    std::fs::write(
        app.join("Cargo.toml"),
        format!(
            "[package]\nname = \"kernels-app\"\nversion = \"0.1.0\"\nedition = \"2024\"\npublish = false\n\n\
             [dependencies]\nkernels-runtime = {{ path = {:?} }}\n\n\
             [build-dependencies]\nkernels-build = {{ path = {:?} }}\n\n[workspace]\n",
            ws.join("kernels-runtime"),
            ws.join("kernels-build")
        ),
    )
    .unwrap();
    std::fs::write(
        app.join("kernels.toml"),
        format!(
            "[kernels.hub-ops]\nrepo = \"kernels-test/app-ops\"\nversion = 1\n\n\
             [kernels.cpp-ops]\npath = {:?}\n\n\
             [layers.RMSNorm]\ncpu = {{ kernel = \"hub-ops\", function = \"rms_norm\" }}\n\n\
             [build]\nbackends = [\"cpu\"]\n",
            cpp_cpu_kernel()
        ),
    )
    .unwrap();
    // The app reuses the workspace's lock file so it builds with the same dependency versions.
    std::fs::copy(ws.join("Cargo.lock"), app.join("Cargo.lock")).unwrap();

    let hf_home = tmp.path().join("hf");
    let endpoint = hub_endpoint();
    let with_hub = |cmd: &mut Command| {
        cmd.env("HF_ENDPOINT", &endpoint)
            .env("HF_HOME", &hf_home)
            .env_remove("HF_HUB_CACHE")
            .env_remove("HF_HUB_OFFLINE");
    };

    // `cargo kernels lock` pins the Hub kernel.
    let mut lock = cargo();
    lock.current_dir(ws)
        .args(["run", "-q", "-p", "kernels-cli", "--", "kernels", "lock", "--manifest-path"])
        .arg(app.join("kernels.toml"));
    with_hub(&mut lock);
    check(lock.output().unwrap(), "cargo kernels lock");
    let locked = std::fs::read_to_string(app.join("kernels.lock")).unwrap();
    assert!(locked.contains(&commit), "{locked}");
    // The C++ kernel needs libtvm_ffi.so: the lock pins the wheel's by its release.
    assert!(locked.contains("[tvm-ffi]") && locked.contains("source = \"apache-tvm-ffi==0."), "{locked}");

    // Build, locked, against the Hub; then a no-op rebuild.
    let target_dir = ws.join("target").join("kernels-app");
    let build = |verbose: bool| {
        let mut cmd = cargo();
        cmd.current_dir(&app)
            .args(["build", "--release"])
            .env("CARGO_TARGET_DIR", &target_dir)
            .env("KERNELS_LOCKED", "1");
        if verbose {
            cmd.arg("-v");
        }
        with_hub(&mut cmd);
        check(cmd.output().unwrap(), "cargo build")
    };
    build(false);
    let again = build(true);
    assert!(again.contains("Fresh kernels-app"), "{again}");
    let reran =
        again.lines().any(|l| l.contains("Running") && l.contains("/kernels-app-") && l.contains("build-script-build"));
    assert!(!reran, "the build script ran again:\n{again}");
    if let Some(path) = std::env::var_os("KERNELS_TEST_SAVE_NOOP_BUILD") {
        std::fs::write(path, &again).unwrap();
    }

    // Copy the binary alone into an empty directory and run it with no Hub, no HOME.
    let bin_dir = tmp.path().join("empty");
    std::fs::create_dir_all(bin_dir.join("tmp")).unwrap();
    let bin = bin_dir.join("kernels-app");
    std::fs::copy(target_dir.join("release/kernels-app"), &bin).unwrap();
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
