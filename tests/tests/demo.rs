//! The demo (`examples/demo`) as the README runs it: `cargo build --release -p kernels-demo`
//! offline (`HF_HUB_OFFLINE=1`: it needs no Hub), then its binary, in place and copied alone
//! into an empty directory with an empty `HOME`. On the CPU every mapped layer must run its
//! embedded kernel and the block's output must match candle's within the stated tolerance;
//! with `DISABLE_KERNEL_MAPPING=1` every layer uses candle.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use kernels_tests::workspace;

const LAYERS: [(&str, &str); 3] =
    [("RMSNorm", "rms_norm"), ("AddRMSNorm", "add_rms_norm"), ("SiluAndMul", "silu_and_mul")];

/// Builds the demo in release mode, in the workspace's target dir, and returns its binary.
fn build_demo() -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(workspace())
        .args(["build", "--release", "-p", "kernels-demo", "--message-format=json-render-diagnostics"])
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .expect("cargo runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "building the demo failed:\n{}", String::from_utf8_lossy(&out.stderr));
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == "kernels-demo")
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .unwrap_or_else(|| panic!("cargo reported no kernels-demo executable:\n{stdout}"))
}

/// The demo's output; fails unless it exited successfully.
fn output(out: Output, what: &str) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The layer table's first line for `layer`.
fn layer_line<'a>(stdout: &'a str, layer: &str) -> &'a str {
    stdout
        .lines()
        .find(|l| l.trim_start().starts_with(&format!("{layer} ")))
        .unwrap_or_else(|| panic!("no line for layer {layer}:\n{stdout}"))
}

/// The max abs difference the demo reports, and its tolerance.
fn difference(stdout: &str) -> (f64, f64) {
    let line = stdout
        .lines()
        .find(|l| l.starts_with("max |kernels - fallback|"))
        .unwrap_or_else(|| panic!("no difference line:\n{stdout}"));
    let after = line.split("]: ").nth(1).unwrap_or_else(|| panic!("{line}"));
    let diff: f64 = after.split_whitespace().next().unwrap().parse().unwrap_or_else(|e| panic!("{line}: {e}"));
    let tol: f64 = after.split("tolerance ").nth(1).unwrap().split(')').next().unwrap().parse().unwrap();
    assert!(line.ends_with(": ok"), "{line}");
    (diff, tol)
}

/// Asserts that every mapped layer ran its embedded CPU kernel and the output matched.
fn assert_kernels_on_cpu(stdout: &str) {
    let variant = format!("tvm-ffi01-cpu-{}", kernels_runtime::variant::CpuArch::current());
    for (layer, function) in LAYERS {
        let line = layer_line(stdout, layer);
        let fields: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(fields[..3], [layer, "kernel", &format!("cpu-ops::{function}")], "{line}");
        assert!(fields[4].starts_with(&variant), "{line}");
        assert_eq!(fields[5..], ["source", "embedded"], "{line}");
    }
    let (diff, tol) = difference(stdout);
    assert!(diff <= tol && tol <= 1e-3, "max abs diff {diff} (tolerance {tol})");
    assert!(diff > 0.0, "kernels and candle round differently: a zero difference means no kernel ran\n{stdout}");
    let ratio = stdout.lines().find(|l| l.starts_with("block time:")).unwrap_or_else(|| panic!("{stdout}"));
    assert!(ratio.contains("kernels/fallback = "), "{ratio}");
}

fn demo(bin: &Path, dir: &Path) -> Command {
    let mut cmd = Command::new(bin);
    cmd.current_dir(dir).args(["--runs", "3"]).env("HF_HUB_OFFLINE", "1");
    for var in ["DISABLE_KERNEL_MAPPING", "KERNELS_STRICT", "LOCAL_KERNELS", "KERNELS_DEMO_DEVICE"] {
        cmd.env_remove(var);
    }
    cmd
}

#[test]
fn the_demo_runs_kernels_offline_and_from_an_empty_directory() {
    let bin = build_demo();
    let tmp = tempfile::tempdir().unwrap();

    // In place, strict: a layer without its kernel would be an error.
    let out =
        demo(&bin, tmp.path()).env("KERNELS_RS_CACHE", tmp.path().join("cache")).env("KERNELS_STRICT", "1").output();
    let stdout = output(out.unwrap(), "the demo");
    assert_kernels_on_cpu(&stdout);

    // Copied alone into an empty directory, no HOME, no Hub: it loads its embedded kernels
    // from memory and writes nothing; asked to use files, it unpacks them to the temp dir.
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(empty.join("tmp")).unwrap();
    let copy = empty.join("kernels-demo");
    std::fs::copy(&bin, &copy).unwrap();
    let unpacked = || {
        std::fs::read_dir(empty.join("tmp"))
            .unwrap()
            .flat_map(|d| std::fs::read_dir(d.unwrap().path()).unwrap())
            .count()
    };
    for unpack in ["memfd", "file"] {
        let out = demo(&copy, &empty)
            .env_clear()
            .env("HOME", "")
            .env("HF_HUB_OFFLINE", "1")
            .env("TMPDIR", empty.join("tmp"))
            .env("KERNELS_UNPACK", unpack)
            .output();
        let stdout = output(out.unwrap(), &format!("the copied demo, KERNELS_UNPACK={unpack}"));
        assert_kernels_on_cpu(&stdout);
        match unpack {
            "memfd" => assert_eq!(unpacked(), 0, "memfd wrote files under {}", empty.join("tmp").display()),
            _ => assert!(unpacked() >= 1, "nothing was unpacked under {}", empty.join("tmp").display()),
        }
    }

    // DISABLE_KERNEL_MAPPING=1: candle everywhere, the same output.
    let out = demo(&bin, tmp.path())
        .args(["--runs", "1"])
        .env("KERNELS_RS_CACHE", tmp.path().join("cache"))
        .env("DISABLE_KERNEL_MAPPING", "1")
        .output();
    let stdout = output(out.unwrap(), "the demo with DISABLE_KERNEL_MAPPING=1");
    for (layer, _) in LAYERS {
        let line = layer_line(&stdout, layer);
        assert!(line.split_whitespace().nth(1) == Some("fallback"), "{line}");
    }
    assert!(stdout.contains("why: DISABLE_KERNEL_MAPPING is set"), "{stdout}");
    assert_eq!(difference(&stdout).0, 0.0, "{stdout}");
}
