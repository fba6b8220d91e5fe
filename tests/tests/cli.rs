//! `cargo kernels package`: a Rust kernel crate laid out as a Hub variant that the loader
//! verifies and loads, and that Python's `kernels` package loads and runs too. `cargo kernels variants`: a repo's variants on the loopback Hub (olah),
//! judged on this machine and for another target.

use std::process::Command;

use kernels_runtime::ffi::{Arg, TensorView};
use kernels_runtime::loader;
use kernels_tests::*;

#[test]
fn package_lays_out_a_loadable_verified_variant() {
    let out = tempfile::tempdir().unwrap();
    let result = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .current_dir(workspace())
        .args(["run", "-q", "-p", "kernels-cli", "--", "kernels", "package"])
        .arg(workspace().join("examples/kernels/rust-cpu"))
        .arg("--out")
        .arg(out.path())
        .args(["--target", target()])
        .output()
        .unwrap();
    assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));
    let dir = std::path::PathBuf::from(String::from_utf8(result.stdout).unwrap().trim());
    assert_eq!(dir, out.path().join("build/tvm-ffi01-cpu-x86_64-linux"));
    let kernel = loader::load_variant_dir(&dir).unwrap();
    let f = kernel.function("silu_and_mul").unwrap();
    let x = [1.0f32, 2.0, 3.0, 4.0];
    let mut o = [0f32; 2];
    {
        let (xv, ov) =
            (TensorView::from_slice(&x, &[1, 4]).unwrap(), TensorView::from_slice_mut(&mut o, &[1, 2]).unwrap());
        // SAFETY: silu_and_mul writes only `out`.
        unsafe { f.call(&[Arg::from(&ov), Arg::from(&xv)]) }.unwrap();
    }
    let want = silu_and_mul_ref(&x, 2);
    assert!(max_rel_diff(&o, &want) < 1e-5, "{o:?} vs {want:?}");

    // Only the variant, no build files, in the output; the library's symbol table stripped.
    let entries: Vec<_> = std::fs::read_dir(out.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(entries, ["build"], "{entries:?}");
    let lib = kernel.path().to_owned();
    let symbols = kernels_runtime::ffi::dynamic_symbols(&lib).unwrap();
    assert!(symbols.defined_functions().any(|n| n == "__tvm_ffi_rms_norm"));
    let sections = std::process::Command::new("readelf").arg("-S").arg(&lib).output();
    if let Ok(sections) = sections {
        let text = String::from_utf8_lossy(&sections.stdout);
        assert!(!text.contains(".symtab"), "the library keeps its symbol table:\n{text}");
    }

    // `explain` reads the library and finds the mapped function; an unexported one falls back.
    let apps = tempfile::tempdir().unwrap();
    let app = apps.path().join("app");
    check(kernels(&[&"init", &app, &"--path", &out.path()]), "cargo kernels init --path");
    let manifest = app.join("kernels.toml");
    let variant = "tvm-ffi01-cpu-x86_64-linux";
    let text = check(kernels(&[&"explain", &"--manifest-path", &manifest]), "cargo kernels explain");
    let name = out.path().file_name().unwrap().to_string_lossy().trim_start_matches('.').to_owned();
    assert!(text.contains(&format!("here, cpu: runs {name}::silu_and_mul from {variant}\n")), "{text}");
    let args: [&dyn AsRef<std::ffi::OsStr>; 7] =
        [&"init", &app, &"--path", &out.path(), &"--function", &"no_such_function", &"--force"];
    check(kernels(&args), "cargo kernels init --force");
    let text = check(kernels(&[&"explain", &"--manifest-path", &manifest]), "cargo kernels explain");
    assert!(
        text.contains(&format!(
            "falls back to the Rust forward: {variant} does not export `__tvm_ffi_no_such_function`"
        )),
        "{text}"
    );

    // Python's `kernels` loads it as a Hub kernel (its digest, its __init__.py and _ops.py
    // through tvm-ffi) and runs it.
    let Some(python) = std::env::var_os("KERNELS_TEST_PYTHON_KERNELS").filter(|p| !p.is_empty()) else {
        assert!(
            std::env::var("KERNELS_TEST_REQUIRE_STABLE_ABI").as_deref() != Ok("1"),
            "KERNELS_TEST_PYTHON_KERNELS is unset: run scripts/test.sh (scripts/python-kernels-env.sh)"
        );
        eprintln!("SKIPPED: KERNELS_TEST_PYTHON_KERNELS is unset (scripts/python-kernels-env.sh makes one)");
        return;
    };
    let script = r#"
import sys
from pathlib import Path
import numpy as np
import tvm_ffi
import kernels
k = kernels.get_local_kernel(Path(sys.argv[1]))
assert sorted(k.__all__) == ["add_rms_norm", "rms_norm", "silu_and_mul"], k.__all__
x = np.linspace(-3, 3, 4 * 16, dtype=np.float32).reshape(4, 16)
w = np.linspace(0.5, 1.5, 16, dtype=np.float32)
out = np.zeros_like(x)
k.rms_norm(tvm_ffi.from_dlpack(out), tvm_ffi.from_dlpack(x), tvm_ffi.from_dlpack(w), 1e-6)
ref = x / np.sqrt((x * x).mean(-1, keepdims=True) + 1e-6) * w
assert np.abs(out - ref).max() < 1e-5, np.abs(out - ref).max()
half = np.zeros((4, 8), np.float32)
k.silu_and_mul(tvm_ffi.from_dlpack(half), tvm_ffi.from_dlpack(x))
a, b = x[:, :8], x[:, 8:]
assert np.abs(half - a / (1 + np.exp(-a)) * b).max() < 1e-5
print("python kernels", kernels.__version__, "ran", sys.argv[1])
"#;
    let ran = Command::new(python).arg("-c").arg(script).arg(out.path()).env("HF_HUB_OFFLINE", "1").output().unwrap();
    assert!(
        ran.status.success(),
        "Python's kernels could not load or run the package:\n{}\n{}",
        String::from_utf8_lossy(&ran.stdout),
        String::from_utf8_lossy(&ran.stderr)
    );
    eprintln!("{}", String::from_utf8_lossy(&ran.stdout).trim());
}

/// `cargo kernels variants ARGS` against the loopback Hub, with an empty Hugging Face home.
fn variants(hf_home: &std::path::Path, args: &[&str]) -> std::process::Output {
    cargo()
        .current_dir(workspace())
        .args(["run", "-q", "-p", "kernels-cli", "--", "kernels", "variants"])
        .args(args)
        .env("HF_ENDPOINT", hub_endpoint())
        .env("HF_HOME", hf_home)
        .env_remove("HF_HUB_CACHE")
        .env_remove("HF_HUB_OFFLINE")
        .env_remove("HF_TOKEN")
        .output()
        .unwrap()
}

#[test]
fn variants_lists_each_variant_with_its_verdict_and_reason() {
    // This machine's CPU and OS (`x86_64-linux`), a CUDA variant, a full-ABI torch one and one
    // for a tvm-ffi this runtime does not speak.
    let cpu = kernels_build::local::cpu_variant_for(target()).unwrap().to_string();
    let here = cpu.strip_prefix("tvm-ffi01-cpu-").unwrap().to_owned();
    let cuda = format!("tvm-ffi01-cu130-{here}");
    let torch = format!("torch212-cxx11-cpu-{here}");
    let ffi02 = format!("tvm-ffi02-cpu-{here}");
    let (other_triple, other) = if here.starts_with("x86_64") {
        ("aarch64-unknown-linux-gnu", "tvm-ffi01-cpu-aarch64-linux")
    } else {
        ("x86_64-unknown-linux-gnu", "tvm-ffi01-cpu-x86_64-linux")
    };
    let dir = tempfile::tempdir().unwrap();
    let repo_dir = dir.path().join("repo");
    for v in [&cpu, &cuda, &torch, &ffi02, other] {
        let d = repo_dir.join("build").join(v);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("metadata.json"), "{\"version\": 1}\n").unwrap();
    }
    std::fs::write(repo_dir.join("README.md"), "# variants\n").unwrap();
    // v10 is the newest version: versions compare as numbers.
    let commit = publish("kernels-test/variants", &repo_dir, &["main", "v1", "v10", "v2"]);
    let hf_home = dir.path().join("hf");

    // On this machine: the CPU variant is chosen for the CPU, the others say why not.
    let out = variants(&hf_home, &["kernels-test/variants", "--version", "1"]);
    let text = check(out, "cargo kernels variants");
    eprintln!("{text}");
    let row = |name: &str| row_of(&text, name);
    assert!(text.starts_with(&format!("kernels-test/variants at v1 (commit {commit})")), "{text}");
    assert!(row(&cpu).contains(" chosen "), "{text}");
    assert!(row(&torch).contains(" rejected ") && row(&torch).contains("needs PyTorch"), "{text}");
    assert!(row(&ffi02).contains(" rejected ") && row(&ffi02).contains("tvm-ffi 0.2"), "{text}");
    assert!(row(other).contains(" rejected "), "{text}");
    assert!(text.contains(&format!("chosen:\n  cpu       {cpu}")), "{text}");

    // JSON, at the default revision: the newest version branch.
    let out = variants(&hf_home, &["kernels-test/variants", "--json"]);
    let json: serde_json::Value = serde_json::from_str(&check(out, "cargo kernels variants --json")).unwrap();
    eprintln!("{}", serde_json::to_string_pretty(&json).unwrap());
    assert_eq!(json["repo"], "kernels-test/variants");
    assert_eq!(json["revision"], "v10");
    assert_eq!(json["version"], 10);
    assert_eq!(json["commit"], commit.as_str());
    let listed = json["variants"].as_array().unwrap();
    let entry = |name: &str| listed.iter().find(|v| v["name"] == name).unwrap_or_else(|| panic!("{name}: {json}"));
    assert_eq!(entry(&cpu)["verdict"], "chosen");
    assert_eq!(entry(&cpu)["device"], "cpu");
    assert_eq!(entry(&cpu)["loadable"], true);
    assert_eq!(entry(&torch)["verdict"], "rejected");
    assert_eq!(entry(&torch)["loadable"], false);
    assert!(entry(&torch)["reason"].as_str().unwrap().contains("needs PyTorch"), "{json}");
    assert_eq!(entry(&ffi02)["verdict"], "rejected");
    assert!(entry(&ffi02)["reason"].as_str().unwrap().contains("tvm-ffi 0.2"), "{json}");
    // The CUDA variant is judged by a CUDA device (rejected for want of one without CUDA).
    assert!(entry(&cuda)["device"].as_str().unwrap().starts_with("cuda"), "{json}");
    assert_eq!(entry(&cuda)["loadable"], true);
    assert_eq!(json["devices"][0]["device"], "cpu");
    assert_eq!(json["devices"][0]["chosen"], cpu.as_str());

    // For another target: only its own CPU variant is embedded.
    let out = variants(&hf_home, &["kernels-test/variants", "--revision", "main", "--target", other_triple, "--json"]);
    let json: serde_json::Value = serde_json::from_str(&check(out, "cargo kernels variants --target")).unwrap();
    assert_eq!(json["revision"], "main");
    assert_eq!(json["target"], other_triple);
    assert_eq!(json["embedded"], serde_json::json!([other]));
    for v in json["variants"].as_array().unwrap() {
        let name = v["name"].as_str().unwrap();
        assert_eq!(v["verdict"], if name == other { "accepted" } else { "rejected" }, "{json}");
    }
    let out = variants(&hf_home, &["kernels-test/variants", "--revision", "main", "--target", other_triple]);
    let text = check(out, "cargo kernels variants --target");
    eprintln!("{text}");
    assert!(text.contains(&format!("a build for {other_triple} embeds: {other}")), "{text}");
    assert!(row_of(&text, &cpu).contains(" rejected "), "{text}");

    // A repo without version branches is listed at main.
    publish("kernels-test/variants-main-only", &repo_dir, &["main"]);
    let out = variants(&hf_home, &["kernels-test/variants-main-only", "--json"]);
    let json: serde_json::Value = serde_json::from_str(&check(out, "cargo kernels variants (main)")).unwrap();
    assert_eq!(json["revision"], "main");
    assert_eq!(json["version"], serde_json::Value::Null);
}

/// The table row of `name` in `text`.
fn row_of<'t>(text: &'t str, name: &str) -> &'t str {
    text.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("no row {name}:\n{text}"))
}

#[test]
fn variants_fails_clearly_for_an_unknown_repo_or_version_and_bad_usage() {
    let dir = tempfile::tempdir().unwrap();
    let out = variants(dir.path(), &["kernels-test/no-such-kernel-repo"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("`kernels-test/no-such-kernel-repo`") && err.contains("check that"), "{err}");

    publish("kernels-test/variants-v1", rust_cpu_repo_dir(), &["main", "v1"]);
    let out = variants(dir.path(), &["kernels-test/variants-v1", "--version", "4"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("at v4") && err.contains("no branch `v4`") && err.contains("main, v1"), "{err}");

    let out = variants(dir.path(), &["kernels-test/variants-v1", "--version", "1", "--revision", "main"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("exclusive"), "{err}");
    let out = variants(dir.path(), &["not-a-repo-id"]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
}

/// `cargo kernels ARGS` (the CLI as built from this workspace).
fn kernels(args: &[&dyn AsRef<std::ffi::OsStr>]) -> std::process::Output {
    cargo()
        .current_dir(workspace())
        .args(["run", "-q", "-p", "kernels-cli", "--", "kernels"])
        .args(args.iter().map(|a| a.as_ref()))
        .output()
        .unwrap()
}

#[test]
fn init_writes_a_starter_that_parses_and_never_overwrites() {
    use kernels_build::manifest::{KernelSource, Manifest, Requested};
    let tmp = tempfile::tempdir().unwrap();

    // In a crate: kernels.toml and build.rs, and what to paste.
    let app = tmp.path().join("app");
    std::fs::create_dir_all(&app).unwrap();
    std::fs::write(app.join("Cargo.toml"), "[package]\nname = \"app\"\n").unwrap();
    let text = check(kernels(&[&"init", &app]), "cargo kernels init");
    eprintln!("{text}");
    let manifest = Manifest::from_path(&app.join("kernels.toml")).unwrap_or_else(|e| panic!("{e:?}"));
    let decl = manifest.kernel("activation").expect("[kernels.activation]");
    assert_eq!(
        decl.source,
        KernelSource::Hub { repo: "kernels-community/activation".into(), requested: Requested::Version(1) }
    );
    let devices: Vec<String> = manifest.layers.iter().map(|m| format!("{}:{}", m.layer, m.device)).collect();
    assert_eq!(devices.len(), 2, "{devices:?}");
    assert!(devices.contains(&"SiluAndMul:cpu".into()) && devices.contains(&"SiluAndMul:cuda".into()));
    assert!(manifest.layers.iter().all(|m| m.function == "silu_and_mul"));
    let build_rs = std::fs::read_to_string(app.join("build.rs")).unwrap();
    assert!(build_rs.contains("kernels_build::build().unwrap();"), "{build_rs}");
    for want in
        ["kernels-runtime = { git = ", "[build-dependencies]", "include_kernels!();", "#[kernels_runtime::kernelize("]
    {
        assert!(text.contains(want), "{want}: {text}");
    }
    assert!(text.contains("cargo kernels lock") && text.contains("cargo build"), "{text}");
    assert_eq!(std::fs::read_to_string(app.join("Cargo.toml")).unwrap(), "[package]\nname = \"app\"\n");
    assert!(!app.join("src").exists(), "an existing crate gets no src/main.rs");

    // Again: refused, naming the file and --force; nothing is touched.
    std::fs::write(app.join("build.rs"), "// mine\n").unwrap();
    let out = kernels(&[&"init", &app, &"--kernel", &"org/other"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&app.join("kernels.toml").display().to_string()) && err.contains("--force"), "{err}");
    assert_eq!(std::fs::read_to_string(app.join("build.rs")).unwrap(), "// mine\n");
    // With --force: written, with the kernel and layer asked for.
    let args: [&dyn AsRef<std::ffi::OsStr>; 9] =
        [&"init", &app, &"--kernel", &"org/other", &"--layer", &"RmsNorm", &"--function", &"rms_norm", &"--force"];
    check(kernels(&args), "cargo kernels init --force");
    let manifest = Manifest::from_path(&app.join("kernels.toml")).unwrap_or_else(|e| panic!("{e:?}"));
    assert!(matches!(&manifest.kernel("other").unwrap().source, KernelSource::Hub { repo, .. } if repo == "org/other"));
    assert!(manifest.layers.iter().all(|m| m.layer == "RmsNorm" && m.function == "rms_norm"));
    assert!(std::fs::read_to_string(app.join("build.rs")).unwrap().contains("kernels_build::build()"));

    // Bad usage: exit status 2, saying what to give.
    let out = kernels(&[&"init", &app, &"--kernel", &"org/k", &"--path", &app]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("exclusive"));
    let out = kernels(&[&"init", &tmp.path().join("x"), &"--layer", &"Not-A-Name"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--layer \"Not-A-Name\""));
    let out = kernels(&[&"init", &tmp.path().join("9lives")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a valid package name"));
    assert!(!tmp.path().join("9lives/kernels.toml").exists());
}

/// A Hub layout with a CPU variant for this machine, a CUDA one and a full-ABI torch one.
fn fake_hub_layout(root: &std::path::Path) -> (String, String) {
    let cpu = kernels_build::local::cpu_variant_for(target()).unwrap().to_string();
    let here = cpu.strip_prefix("tvm-ffi01-cpu-").unwrap().to_owned();
    let cuda = format!("tvm-ffi01-cu130-{here}");
    for v in [&cpu, &cuda, &format!("torch212-cxx11-cpu-{here}")] {
        let d = root.join("build").join(v);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("metadata.json"), "{\"version\": 1, \"backend\": {\"type\": \"cpu\"}}\n").unwrap();
        std::fs::write(d.join("_ops_0000000.so"), "not a library\n").unwrap();
    }
    (cpu, cuda)
}

#[test]
fn explain_names_the_chosen_variant_and_the_absent_devices() {
    let tmp = tempfile::tempdir().unwrap();
    let kernel = tmp.path().join("ops");
    let (cpu, _cuda) = fake_hub_layout(&kernel);
    let app = tmp.path().join("explained");
    check(kernels(&[&"init", &app, &"--path", &kernel]), "cargo kernels init --path");
    let manifest = app.join("kernels.toml");
    assert!(std::fs::read_to_string(&manifest).unwrap().contains("path = \"../ops\""));

    let text = check(kernels(&[&"explain", &"--manifest-path", &manifest]), "cargo kernels explain");
    eprintln!("{text}");
    assert!(text.contains(&format!("here, cpu: runs ops::silu_and_mul from {cpu}")), "{text}");
    let row = text.lines().map(str::trim).find(|l| l.starts_with(&format!("{cpu} "))).unwrap_or_default();
    assert!(row.ends_with(" chosen"), "{text}");
    assert!(text.contains(&format!("source: path {} (hub)", kernel.canonicalize().unwrap().display())), "{text}");
    let cuda_present = kernels_runtime::platform::Platform::detect().cuda.present().is_some();
    if !cuda_present {
        assert!(text.contains("here: no cuda device on this machine"), "{text}");
    }

    let out = kernels(&[&"explain", &"--manifest-path", &manifest, &"--json"]);
    let json: serde_json::Value = serde_json::from_str(&check(out, "cargo kernels explain --json")).unwrap();
    let mappings = json["mappings"].as_array().unwrap();
    let on = |device: &str| mappings.iter().find(|m| m["device"] == device).unwrap_or_else(|| panic!("{json}"));
    let cpu_entry = on("cpu");
    assert_eq!(cpu_entry["layer"], "SiluAndMul");
    assert_eq!(cpu_entry["kernel"], "ops");
    assert_eq!(cpu_entry["function"], "silu_and_mul");
    assert_eq!(cpu_entry["mode"], "inference");
    assert_eq!(cpu_entry["deterministic"], false);
    assert_eq!(cpu_entry["source"]["type"], "path");
    assert_eq!(cpu_entry["source"]["layout"], "hub");
    assert_eq!(cpu_entry["present"], true);
    assert_eq!(cpu_entry["decisions"][0]["device"], "cpu");
    assert_eq!(cpu_entry["decisions"][0]["chosen"], cpu.as_str());
    assert_eq!(cpu_entry["decisions"][0]["runs_kernel"], true);
    let cuda_entry = on("cuda");
    assert_eq!(cuda_entry["capability"], "8.0..");
    if !cuda_present {
        assert_eq!(cuda_entry["present"], false);
        assert!(cuda_entry["absent"].as_str().unwrap().contains("no cuda device"), "{json}");
        assert_eq!(cuda_entry["decisions"], serde_json::json!([]));
    }

    // A Hub kernel without a lock: the command that pins it.
    let hub_app = tmp.path().join("hub-app");
    check(kernels(&[&"init", &hub_app]), "cargo kernels init");
    let text =
        check(kernels(&[&"explain", &"--manifest-path", &hub_app.join("kernels.toml")]), "cargo kernels explain (Hub)");
    assert!(text.contains("not locked: run `cargo kernels lock`"), "{text}");
}

#[test]
fn the_crate_init_makes_builds_and_runs_the_kernel() {
    let tmp = tempfile::tempdir().unwrap();
    let app = tmp.path().join("init-app");
    let kernel = workspace().join("examples/kernels/rust-cpu");
    let text = check(
        kernels(&[&"init", &app, &"--path", &kernel, &"--path-deps", &workspace()]),
        "cargo kernels init (new crate)",
    );
    for file in ["Cargo.toml", "src/main.rs", "kernels.toml", "build.rs"] {
        assert!(app.join(file).is_file(), "{file}: {text}");
    }
    std::fs::copy(workspace().join("Cargo.lock"), app.join("Cargo.lock")).unwrap();
    let target_dir = workspace().join("target").join("kernels-app");
    let out = cargo()
        .current_dir(&app)
        .args(["build", "--offline"])
        .env("CARGO_TARGET_DIR", &target_dir)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    check(out, "cargo build of the crate init made");
    let out =
        std::process::Command::new(target_dir.join("debug/init-app")).env("KERNELS_STRICT", "1").output().unwrap();
    let text = check(out, "the crate init made");
    eprintln!("{text}");
    assert!(text.contains("kernel rust-cpu::silu_and_mul"), "{text}");
}

#[test]
fn explain_reads_a_locked_hub_kernel_from_the_lock_and_the_cache() {
    let tmp = tempfile::tempdir().unwrap();
    let repo_dir = tmp.path().join("repo");
    let (cpu, cuda) = fake_hub_layout(&repo_dir);
    std::fs::write(repo_dir.join("README.md"), "# explain\n").unwrap();
    let commit = publish("kernels-test/explain", &repo_dir, &["main", "v1"]);
    let app = tmp.path().join("hub-explained");
    check(kernels(&[&"init", &app, &"--kernel", &"kernels-test/explain"]), "cargo kernels init --kernel");
    let manifest = app.join("kernels.toml");
    let hf_home = tmp.path().join("hf");
    let run = |args: &[&dyn AsRef<std::ffi::OsStr>]| {
        let mut cmd = cargo();
        cmd.current_dir(workspace())
            .args(["run", "-q", "-p", "kernels-cli", "--", "kernels"])
            .args(args.iter().map(|a| a.as_ref()))
            .env("HF_ENDPOINT", hub_endpoint())
            .env("HF_HOME", &hf_home)
            .env_remove("HF_HUB_CACHE")
            .env_remove("KERNELS_CACHE")
            .env_remove("HF_HUB_OFFLINE");
        cmd.output().unwrap()
    };
    check(run(&[&"lock", &"--manifest-path", &manifest]), "cargo kernels lock");
    // Locking fetched the files into the cache; take them away, as on a fresh checkout.
    let snapshot = kernels_runtime::hub_cache::snapshot(&hf_home.join("hub"), "kernels-test/explain", &commit);
    let aside = tmp.path().join("aside");
    std::fs::rename(&snapshot, &aside).unwrap();

    // Locked, nothing downloaded: the lock's variants are selected from, and the command that
    // fetches them is named.
    let text = check(run(&[&"explain", &"--manifest-path", &manifest]), "cargo kernels explain");
    eprintln!("{text}");
    assert!(text.contains(&format!("source: Hub kernels-test/explain@{commit} (version 1)")), "{text}");
    assert!(text.contains("run `cargo kernels download`"), "{text}");
    assert!(text.contains(&format!("here, cpu: runs explain::silu_and_mul from {cpu}")), "{text}");

    // In the cache: no note, the same choice; JSON names the commit.
    std::fs::rename(&aside, &snapshot).unwrap();
    assert!(snapshot.join("build").join(&cuda).join("metadata.json").is_file());
    let out = run(&[&"explain", &"--manifest-path", &manifest, &"--json"]);
    let json: serde_json::Value = serde_json::from_str(&check(out, "cargo kernels explain --json")).unwrap();
    let entry = json["mappings"].as_array().unwrap().iter().find(|m| m["device"] == "cpu").unwrap().clone();
    assert_eq!(entry["source"]["type"], "hub");
    assert_eq!(entry["source"]["commit"], commit.as_str());
    assert_eq!(entry["decisions"][0]["chosen"], cpu.as_str());
    assert!(
        entry["notes"].as_array().unwrap().iter().all(|n| !n.as_str().unwrap().contains("not downloaded")),
        "{json}"
    );
    assert_eq!(json["lock_stale"], serde_json::Value::Null);
}

/// `cargo kernels ARGS` against the loopback Hub, with `hf_home` as the Hugging Face home.
fn kernels_on_hub(hf_home: &std::path::Path, args: &[&dyn AsRef<std::ffi::OsStr>]) -> std::process::Output {
    cargo()
        .current_dir(workspace())
        .args(["run", "-q", "-p", "kernels-cli", "--", "kernels"])
        .args(args.iter().map(|a| a.as_ref()))
        .env("HF_ENDPOINT", hub_endpoint())
        .env("HF_HOME", hf_home)
        .env_remove("HF_HUB_CACHE")
        .env_remove("KERNELS_CACHE")
        .env_remove("HF_HUB_OFFLINE")
        .env_remove("HF_TOKEN")
        .output()
        .unwrap()
}

/// The JSON object a command printed on stdout, whatever its exit status.
fn json_of(out: &std::process::Output, what: &str) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{what}: stdout is not one JSON object ({e}):\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

#[test]
fn lock_download_and_verify_a_hub_kernel() {
    use kernels_build::lock::Lock;
    let tmp = tempfile::tempdir().unwrap();
    let repo_dir = rust_cpu_repo_dir();
    let commit = publish("kernels-test/cli-fetch", repo_dir, &["main", "v1"]);
    let app = tmp.path().join("fetch-app");
    check(kernels(&[&"init", &app, &"--kernel", &"kernels-test/cli-fetch"]), "cargo kernels init --kernel");
    let manifest = app.join("kernels.toml");
    let lock_path = app.join("kernels.lock");
    let lock_home = tmp.path().join("hf-lock");

    // No lock yet: --check says it is missing, exit 1.
    let out = kernels_on_hub(&lock_home, &[&"lock", &"--check", &"--manifest-path", &manifest, &"--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let json = json_of(&out, "lock --check --json (missing)");
    assert_eq!(json["fresh"], false, "{json}");
    assert_eq!(json["state"], "missing", "{json}");
    assert_eq!(json["fix"], "cargo kernels lock", "{json}");

    // `lock` pins the commit and the sha256 of every file of the CPU variant; --json says so.
    let out = kernels_on_hub(&lock_home, &[&"lock", &"--manifest-path", &manifest, &"--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json = json_of(&out, "lock --json");
    assert_eq!(json["written"], true, "{json}");
    assert_eq!(json["kernels"][0]["repo"], "kernels-test/cli-fetch", "{json}");
    assert_eq!(json["kernels"][0]["commit"], commit.as_str(), "{json}");
    assert_eq!(json["kernels"][0]["requested"]["version"], 1, "{json}");
    let lock = Lock::read(&lock_path).unwrap().expect("kernels.lock");
    let locked: Vec<_> =
        json["kernels"][0]["variants"].as_array().unwrap().iter().map(|v| v["variant"].clone()).collect();
    let want: Vec<serde_json::Value> = lock.kernels[0].variants.iter().map(|v| v.name.as_str().into()).collect();
    assert_eq!(locked, want, "{json}");
    // Again: nothing to write.
    let out = kernels_on_hub(&lock_home, &[&"lock", &"--manifest-path", &manifest, &"--json"]);
    assert_eq!(json_of(&out, "lock --json (again)")["written"], false);
    assert!(String::from_utf8_lossy(&out.stderr).contains("unchanged"));
    // Commands with nothing to print as JSON refuse it: exit 2.
    let out = kernels(&[&"package", &"--json"]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("`package` has no --json output"));
    let cpu = kernels_build::local::cpu_variant_for(target()).unwrap().to_string();
    let kernel = &lock.kernels[0];
    assert_eq!((kernel.repo.as_str(), kernel.commit.as_str()), ("kernels-test/cli-fetch", commit.as_str()));
    let variant = kernel.variants.iter().find(|v| v.name == cpu).unwrap_or_else(|| panic!("{cpu} not locked"));
    let published: Vec<_> = std::fs::read_dir(repo_dir.join("build").join(&cpu)).unwrap().map(|e| e.unwrap()).collect();
    assert_eq!(variant.files.len(), published.len(), "{:?}", variant.files);
    for file in &published {
        let name = file.file_name().into_string().unwrap();
        let pin = variant.files.iter().find(|f| f.path == name).unwrap_or_else(|| panic!("{name} not pinned"));
        let bytes = std::fs::read(file.path()).unwrap();
        assert_eq!(pin.sha256, kernels_runtime::digest::sha256_hex(&bytes), "{name}");
        assert_eq!(pin.size, bytes.len() as u64, "{name}");
    }
    let library = variant.files.iter().find(|f| f.path.ends_with(".so")).expect("a pinned library").path.clone();

    // Fresh: exit 0, text and JSON.
    let out = kernels_on_hub(&lock_home, &[&"lock", &"--check", &"--manifest-path", &manifest]);
    assert!(check(out, "lock --check").contains("is up to date"));
    let out = kernels_on_hub(&lock_home, &[&"lock", &"--check", &"--manifest-path", &manifest, &"--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let json = json_of(&out, "lock --check --json (fresh)");
    assert_eq!((json["fresh"].clone(), json["state"].clone()), (true.into(), "fresh".into()), "{json}");
    assert_eq!(json["changes"], serde_json::json!([]));

    // Stale once kernels.toml asks for another version: exit 1, saying what changed.
    let toml = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, toml.replacen("version = 1", "version = 2", 1)).unwrap();
    let out = kernels_on_hub(&lock_home, &[&"lock", &"--check", &"--manifest-path", &manifest, &"--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stderr));
    let json = json_of(&out, "lock --check --json (stale)");
    assert_eq!((json["fresh"].clone(), json["state"].clone()), (false.into(), "out of date".into()), "{json}");
    assert!(!json["changes"].as_array().unwrap().is_empty(), "{json}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("out of date"));
    std::fs::write(&manifest, toml).unwrap();

    // `download` into an empty cache: the CPU variant is fetched, its files land there.
    let hf_home = tmp.path().join("hf-download");
    let out = kernels_on_hub(&hf_home, &[&"download", &"--manifest-path", &manifest, &"--json"]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    // stderr is no terminal here: no progress bar is drawn.
    assert!(!stderr.contains('\u{1b}') && !stderr.contains('\r'), "{stderr:?}");
    assert!(stderr.contains(&format!("fetched cli-fetch {cpu}")), "{stderr}");
    let json = json_of(&out, "download --json");
    eprintln!("{}", serde_json::to_string_pretty(&json).unwrap());
    assert!(json["cache"].as_str().unwrap().starts_with(hf_home.to_str().unwrap()), "{json}");
    let fetched = json["variants"].as_array().unwrap();
    assert_eq!(fetched.len(), 1, "{json}");
    assert_eq!(fetched[0]["variant"], cpu.as_str());
    assert_eq!(fetched[0]["status"], "fetched");
    assert_eq!(fetched[0]["commit"], commit.as_str());
    assert_eq!(json["summary"]["fetched"], 1);
    let files = fetched[0]["files"].as_array().unwrap();
    assert_eq!(files.len(), variant.files.len(), "{json}");
    for f in files {
        let path = std::path::Path::new(f["path"].as_str().unwrap());
        assert!(path.starts_with(&hf_home) && path.is_file(), "{json}");
        assert_eq!(std::fs::metadata(path).unwrap().len(), f["bytes"].as_u64().unwrap(), "{json}");
    }
    let total: u64 = variant.files.iter().map(|f| f.size).sum();
    assert_eq!(json["summary"]["bytes"], total);
    // Again: found in the cache.
    let out = kernels_on_hub(&hf_home, &[&"download", &"--manifest-path", &manifest, &"--json"]);
    let json = json_of(&out, "download --json (cached)");
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains(&format!("cached cli-fetch {cpu}")));
    assert_eq!(json["variants"][0]["status"], "cached", "{json}");
    assert_eq!(json["summary"]["fetched"], 0, "{json}");

    // `verify` on the fresh download: every file ok.
    let text = check(kernels_on_hub(&hf_home, &[&"verify", &"--manifest-path", &manifest]), "cargo kernels verify");
    assert!(text.contains(&format!("verified cli-fetch {cpu}")), "{text}");
    let out = kernels_on_hub(&hf_home, &[&"verify", &"--manifest-path", &manifest, &"--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json = json_of(&out, "verify --json");
    assert_eq!(json["ok"], true, "{json}");
    assert_eq!(json["summary"]["files"], variant.files.len());
    assert_eq!(json["summary"]["ok"], variant.files.len());
    assert!(
        json["files"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["status"] == "ok" && f["actual_sha256"] == f["expected_sha256"])
    );

    // One cached file corrupted: named with its sha256 mismatch, exit 1, and left as it is.
    let cached = kernels_runtime::hub_cache::snapshot(&hf_home.join("hub"), "kernels-test/cli-fetch", &commit)
        .join("build")
        .join(&cpu)
        .join(&library);
    let mut bytes = std::fs::read(&cached).unwrap();
    bytes[0] ^= 0xff;
    std::fs::remove_file(&cached).unwrap();
    std::fs::write(&cached, &bytes).unwrap();
    let out = kernels_on_hub(&hf_home, &[&"verify", &"--manifest-path", &manifest]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let line = stderr.lines().find(|l| l.contains("sha256 mismatch")).unwrap_or_else(|| panic!("{stderr}"));
    assert!(line.contains(&library) && line.contains(&kernels_runtime::digest::sha256_hex(&bytes)), "{stderr}");
    let out = kernels_on_hub(&hf_home, &[&"verify", &"--manifest-path", &manifest, &"--json"]);
    assert_eq!(out.status.code(), Some(1));
    let json = json_of(&out, "verify --json (corrupted)");
    assert_eq!(json["ok"], false, "{json}");
    assert_eq!(json["summary"]["mismatch"], 1, "{json}");
    let bad = json["files"].as_array().unwrap().iter().find(|f| f["status"] == "mismatch").unwrap();
    assert_eq!(bad["file"], library.as_str());
    assert_eq!(bad["actual_sha256"], kernels_runtime::digest::sha256_hex(&bytes).as_str());
    assert_ne!(bad["actual_sha256"], bad["expected_sha256"]);
    assert_eq!(std::fs::read(&cached).unwrap(), bytes, "verify changed the cache");

    // `download` repairs it.
    check(kernels_on_hub(&hf_home, &[&"download", &"--manifest-path", &manifest]), "cargo kernels download (repair)");
    check(kernels_on_hub(&hf_home, &[&"verify", &"--manifest-path", &manifest]), "cargo kernels verify (repaired)");
}

#[test]
fn platform_json_names_the_cpu_device_and_judges_the_names_given() {
    let cpu = kernels_build::local::cpu_variant_for(target()).unwrap().to_string();
    let ffi02 = cpu.replacen("tvm-ffi01", "tvm-ffi02", 1);
    let out = kernels(&[&"platform", &cpu, &ffi02, &"--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json = json_of(&out, "platform --json");
    eprintln!("{}", serde_json::to_string_pretty(&json).unwrap());
    assert!(!json["platform"].as_str().unwrap().is_empty());
    assert_eq!(json["sample"], false);
    let device = &json["devices"][0];
    assert_eq!(device["device"], "cpu", "{json}");
    assert_eq!(device["chosen"], cpu.as_str(), "{json}");
    let judged = device["variants"].as_array().unwrap();
    assert_eq!(judged.len(), 2, "{json}");
    assert_eq!((judged[0]["name"].as_str(), judged[0]["verdict"].as_str()), (Some(cpu.as_str()), Some("chosen")));
    assert_eq!(judged[1]["verdict"], "rejected", "{json}");
    assert!(judged[1]["reason"].as_str().unwrap().contains("tvm-ffi 0.2"), "{json}");
    // Without names: a sample, judged for the same devices; the text output is unchanged.
    let json = json_of(&kernels(&[&"platform", &"--json"]), "platform --json (sample)");
    assert_eq!(json["sample"], true);
    assert!(json["devices"][0]["variants"].as_array().unwrap().len() > 2, "{json}");
    let text = check(kernels(&[&"platform", &cpu]), "cargo kernels platform");
    assert!(text.contains("variant selection for cpu") && text.contains(&cpu), "{text}");
}

#[test]
fn help_has_an_example_per_command_and_the_exit_codes() {
    for args in [&["help"][..], &["-h"], &["--help"], &["lock", "--help"], &["verify", "-h", "--json"]] {
        let args: Vec<&dyn AsRef<std::ffi::OsStr>> = args.iter().map(|a| a as &dyn AsRef<std::ffi::OsStr>).collect();
        let out = kernels(&args);
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8(out.stdout).unwrap();
        for command in ["init", "explain", "lock", "download", "verify", "platform", "describe", "package", "variants"]
        {
            assert!(text.contains(&format!("e.g. cargo kernels {command}")), "no example for {command}:\n{text}");
        }
        assert!(text.contains("exit status: 0 done; 1 failed") && text.contains("2 bad usage"), "{text}");
    }
    let out = kernels(&[&"verify", &"--no-such-option"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown option `--no-such-option`"));
}

#[test]
fn describe_reads_a_hub_kernel_as_it_reads_a_path() {
    let tmp = tempfile::tempdir().unwrap();
    let repo_dir = rust_cpu_repo_dir();
    let commit = publish("kernels-test/cli-describe", repo_dir, &["main", "v1"]);
    let cpu = kernels_build::local::cpu_variant_for(target()).unwrap().to_string();
    let hf_home = tmp.path().join("hf-describe");

    // From the Hub: the variant a build for this machine embeds, fetched, verified, described.
    let out = kernels_on_hub(&hf_home, &[&"describe", &"kernels-test/cli-describe", &"--json"]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains(&format!("kernels-test/cli-describe at v1 ({commit})")), "{stderr}");
    let json = json_of(&out, "describe REPO --json");
    let described = json.as_array().unwrap();
    assert_eq!(described.len(), 1, "only the CPU variant is embedded here: {json}");
    assert_eq!(described[0]["variant"], cpu.as_str(), "{json}");
    assert_eq!(described[0]["abi"], "tvm-ffi", "{json}");
    let library = std::path::Path::new(described[0]["library"].as_str().unwrap());
    assert!(library.starts_with(&hf_home), "the library is read from the cache: {json}");
    // The same functions as the published directory itself.
    let local = json_of(&kernels(&[&"describe", &repo_dir.join("build").join(&cpu), &"--json"]), "describe PATH");
    assert_eq!(described[0]["functions"], local[0]["functions"], "{json}\n{local}");
    assert!(!local[0]["functions"].as_array().unwrap().is_empty(), "{local}");

    // Another target embeds none of it: exit 1, naming the command that lists the variants.
    let out = kernels_on_hub(
        &hf_home,
        &[&"describe", &"kernels-test/cli-describe", &"--target", &"aarch64-unknown-linux-gnu"],
    );
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cargo kernels variants kernels-test/cli-describe --target aarch64"), "{stderr}");
    // An unknown version: exit 1, naming the repo.
    let out = kernels_on_hub(&hf_home, &[&"describe", &"kernels-test/cli-describe", &"--version", &"7"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("kernels-test/cli-describe"));
}
