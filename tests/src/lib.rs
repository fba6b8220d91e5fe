//! Support for the end-to-end tests: building the example kernels into Hub layouts and
//! finding the pieces the test script prepares.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use kernels_build::env::{CargoOutput, Env};
use kernels_build::local;

/// The workspace root.
pub fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("the tests crate sits in the workspace")
}

/// The target triple these tests were built for.
pub fn target() -> &'static str {
    env!("KERNELS_TESTS_TARGET")
}

/// The example Rust CPU kernel crate, compiled (release) and laid out as a Hub kernel repo;
/// returns the repo root (holding `build/<variant>/`). Built once per test process.
pub fn rust_cpu_kernel() -> &'static Path {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    ROOT.get_or_init(|| {
        let target_dir = workspace().join("target").join("kernels-tests");
        let env = Env::process();
        let mut out = CargoOutput::default();
        let lib =
            local::build_crate(&workspace().join("examples/kernels/rust-cpu"), target(), &target_dir, &env, &mut out)
                .unwrap_or_else(|e| panic!("{e}"));
        let root = target_dir.join("hub").join("rust-cpu");
        let variant = local::cpu_variant_for(target()).unwrap_or_else(|e| panic!("{e}"));
        local::lay_out(&lib, "rust-cpu-ops", "Apache-2.0", &variant, &root).unwrap_or_else(|e| panic!("{e}"));
        root
    })
}

/// The C++ example kernel in Hub layout, as `scripts/build-cpp-kernel.sh` leaves it.
pub fn cpp_cpu_kernel() -> PathBuf {
    let root = workspace().join("build-out").join("cpp-cpu");
    assert!(
        root.join("build").is_dir(),
        "{} is missing: run `scripts/build-cpp-kernel.sh` (scripts/test.sh does) before these tests",
        root.display()
    );
    root
}

/// Copies a directory tree (files only), for tests that damage a copy.
pub fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let dest = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), &dest).unwrap();
        }
    }
}

/// Deterministic test values in [-2, 2).
pub fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
        })
        .collect()
}

/// `silu(x[..d]) * x[d..]` per row, in f64.
pub fn silu_and_mul_ref(x: &[f32], d: usize) -> Vec<f32> {
    x.chunks(2 * d)
        .flat_map(|row| {
            (0..d).map(move |i| {
                let a = f64::from(row[i]);
                let b = f64::from(row[d + i]);
                (a / (1.0 + (-a).exp()) * b) as f32
            })
        })
        .collect()
}

/// RMSNorm per row over the last dim, in f64.
pub fn rms_norm_ref(x: &[f32], w: &[f32], eps: f64) -> Vec<f32> {
    let d = w.len();
    x.chunks(d)
        .flat_map(|row| {
            let ms = row.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>() / d as f64;
            let inv = 1.0 / (ms + eps).sqrt();
            row.iter().zip(w).map(move |(v, w)| (f64::from(*v) * inv * f64::from(*w)) as f32)
        })
        .collect()
}

/// Largest relative difference `|a-b| / max(|b|, 1e-3)`.
pub fn max_rel_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(a, b)| (a - b).abs() / b.abs().max(1e-3)).fold(0.0, f32::max)
}

/// The loopback Hub the test script started (`KERNELS_TEST_HF_ENDPOINT`).
pub fn hub_endpoint() -> String {
    std::env::var("KERNELS_TEST_HF_ENDPOINT").unwrap_or_else(|_| {
        panic!(
            "KERNELS_TEST_HF_ENDPOINT is not set: run the tests with `scripts/test.sh`, which starts the loopback Hub"
        )
    })
}

/// Publishes a Hub-layout directory as kernel repo `repo` on the loopback Hub (branches
/// `main` and `v1` unless `refs` names others); returns the commit sha.
pub fn publish(repo: &str, dir: &Path, refs: &[&str]) -> String {
    let out = std::process::Command::new("bash")
        .arg(workspace().join("scripts/hub/make-repo.sh"))
        .arg(repo)
        .arg(dir)
        .args(refs)
        .output()
        .expect("run make-repo.sh");
    assert!(out.status.success(), "make-repo.sh failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// A Hub repo made of the Rust CPU kernel plus a torch variant kernels-rs must skip.
pub fn rust_cpu_repo_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = workspace().join("target").join("kernels-tests").join("repo-rust-cpu");
        let _ = std::fs::remove_dir_all(&dir);
        copy_tree(rust_cpu_kernel(), &dir);
        let torch = dir.join("build").join("torch212-cxx11-cpu-x86_64-linux");
        std::fs::create_dir_all(&torch).unwrap();
        std::fs::write(torch.join("__init__.py"), "# a PyTorch extension kernels-rs cannot load\n").unwrap();
        std::fs::write(dir.join("README.md"), "# rust-cpu-ops\n\nExample kernels for kernels-rs tests.\n").unwrap();
        dir
    })
}

/// `cargo`, as the test harness was run with.
pub fn cargo() -> std::process::Command {
    std::process::Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

/// The output of a finished command, stdout then stderr; fails unless it succeeded.
pub fn check(out: std::process::Output, what: &str) -> String {
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{what} failed:\n{text}");
    text
}

/// A fresh crate made from fixture `tests/fixtures/<fixture>` in `dir`, depending on this
/// workspace's kernels-runtime and kernels-build by path, with `kernels_toml` as its
/// `kernels.toml`. It reuses the workspace's lock file, so it builds with the same
/// dependency versions. Built in `target/kernels-app` (shared by these crates, so their
/// dependencies are compiled once); its binaries are named after `package`.
#[derive(Debug)]
pub struct FreshCrate {
    /// The crate's directory.
    pub dir: PathBuf,
    /// Its package (and binary) name.
    pub package: String,
    /// `HF_HOME` for every Hub access of its build.
    pub hf_home: PathBuf,
}

impl FreshCrate {
    /// Writes the crate into `root/<fixture>`; `root/hf` is its `HF_HOME`.
    pub fn new(root: &Path, fixture: &str, package: &str, kernels_toml: &str) -> Self {
        let ws = workspace();
        let dir = root.join(fixture);
        copy_tree(&ws.join("tests/fixtures").join(fixture), &dir);
        std::fs::write(
            dir.join("Cargo.toml"),
            format!(
                "[package]\nname = \"{package}\"\nversion = \"0.1.0\"\nedition = \"2024\"\npublish = false\n\n\
                 [dependencies]\nkernels-runtime = {{ path = {:?} }}\n\n\
                 [build-dependencies]\nkernels-build = {{ path = {:?} }}\n\n[workspace]\n",
                ws.join("kernels-runtime"),
                ws.join("kernels-build")
            ),
        )
        .unwrap();
        std::fs::write(dir.join("kernels.toml"), kernels_toml).unwrap();
        std::fs::copy(ws.join("Cargo.lock"), dir.join("Cargo.lock")).unwrap();
        FreshCrate { dir, package: package.to_owned(), hf_home: root.join("hf") }
    }

    /// Points `cmd` at the loopback Hub, with this crate's `HF_HOME`.
    pub fn with_hub(&self, cmd: &mut std::process::Command) {
        cmd.env("HF_ENDPOINT", hub_endpoint())
            .env("HF_HOME", &self.hf_home)
            .env_remove("HF_HUB_CACHE")
            .env_remove("HF_HUB_OFFLINE");
    }

    /// `cargo kernels lock` against the loopback Hub; returns `kernels.lock`.
    pub fn lock(&self) -> String {
        let mut lock = cargo();
        lock.current_dir(workspace())
            .args(["run", "-q", "-p", "kernels-cli", "--", "kernels", "lock", "--manifest-path"])
            .arg(self.dir.join("kernels.toml"));
        self.with_hub(&mut lock);
        check(lock.output().unwrap(), "cargo kernels lock");
        std::fs::read_to_string(self.dir.join("kernels.lock")).unwrap()
    }

    /// The directory the crate is built in.
    pub fn target_dir(&self) -> PathBuf {
        workspace().join("target").join("kernels-app")
    }

    /// `cargo build --release`, locked, against the loopback Hub; returns its output.
    pub fn build(&self, verbose: bool) -> String {
        let mut cmd = cargo();
        cmd.current_dir(&self.dir)
            .args(["build", "--release"])
            .env("CARGO_TARGET_DIR", self.target_dir())
            .env("KERNELS_LOCKED", "1");
        if verbose {
            cmd.arg("-v");
        }
        self.with_hub(&mut cmd);
        check(cmd.output().unwrap(), "cargo build")
    }

    /// The release binary, copied alone into `dir` (created, with a `tmp/` inside).
    pub fn copy_binary_into(&self, dir: &Path) -> PathBuf {
        std::fs::create_dir_all(dir.join("tmp")).unwrap();
        let bin = dir.join(&self.package);
        std::fs::copy(self.target_dir().join("release").join(&self.package), &bin).unwrap();
        bin
    }
}

/// The torch stable-ABI example kernel in Hub layout (targets 2.9 and 2.11), as
/// `scripts/build-stable-abi-kernel.sh` leaves it; `None` (with a note) when it is missing,
/// unless `KERNELS_TEST_REQUIRE_STABLE_ABI=1`.
pub fn stable_abi_cpu_kernel() -> Option<PathBuf> {
    let root = workspace().join("build-out").join("stable-abi-cpu");
    if root.join("build").is_dir() {
        return Some(root);
    }
    let what = format!("{} is missing: run `scripts/build-stable-abi-kernel.sh`", root.display());
    if std::env::var("KERNELS_TEST_REQUIRE_STABLE_ABI").as_deref() == Ok("1") {
        panic!("KERNELS_TEST_REQUIRE_STABLE_ABI=1 but {what}");
    }
    eprintln!("SKIPPED: {what}");
    None
}
