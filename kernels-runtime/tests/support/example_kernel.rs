//! The example CPU kernels of this repository (`examples/kernels/rust-cpu`), built with cargo
//! and laid out as Hub kernel repos, for the dispatch tests and benchmark.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use kernels_runtime::variant::{CpuArch, Os};

fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("kernels-runtime sits in the workspace")
}

fn host_triple() -> String {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".to_owned());
    let out = Command::new(rustc).arg("-vV").output().expect("rustc runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.lines().find_map(|l| l.strip_prefix("host: ")).expect("rustc -vV names the host").to_owned()
}

/// Builds `kernels-example-cpu` (release) and returns its shared library.
fn build_example_kernel() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| env!("CARGO").to_owned());
    let manifest = workspace().join("examples/kernels/rust-cpu/Cargo.toml");
    // A target dir of its own (shared with the end-to-end tests, built the same way): the
    // outer cargo may hold the workspace's.
    let target_dir = workspace().join("target").join("kernels-tests");
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--release", "--lib", "--message-format=json-render-diagnostics", "--target"])
        .arg(host_triple())
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&target_dir);
    for key in ["CARGO_TARGET_DIR", "CARGO_BUILD_TARGET", "RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS"] {
        cmd.env_remove(key);
    }
    let out = cmd.output().expect("cargo runs");
    assert!(out.status.success(), "building the example kernel failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    for line in stdout.lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        if msg["reason"] != "compiler-artifact" || msg["target"]["name"] != "kernels_example_cpu" {
            continue;
        }
        let libs = msg["filenames"].as_array().into_iter().flatten().filter_map(|f| f.as_str());
        if let Some(lib) = libs.map(PathBuf::from).find(|f| f.extension().is_some_and(|e| e == "so" || e == "dylib")) {
            return lib;
        }
    }
    panic!("cargo reported no shared library for kernels-example-cpu:\n{stdout}");
}

pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    kernels_runtime::digest::sha256_hex(bytes)
}

/// Lays `library` out as `<root>/build/<variant>/<id>.so` + `metadata.json`, as
/// kernel-builder does for a CPU tvm-ffi variant.
pub(crate) fn lay_out(library: &[u8], variant: &str, root: &Path) {
    let id = format!("_rust_cpu_ops_{}", &sha256_hex(library)[..7]);
    let dir = root.join("build").join(variant);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(format!("{id}.so")), library).unwrap();
    let files = kernels_runtime::metadata::digest_files(&dir).unwrap();
    let metadata = serde_json::json!({
        "name": "rust-cpu-ops",
        "id": id,
        "version": 1,
        "license": "Apache-2.0",
        "backend": { "type": "cpu" },
        "digest": { "algorithm": "sha256", "files": files },
    });
    std::fs::write(dir.join("metadata.json"), serde_json::to_string_pretty(&metadata).unwrap()).unwrap();
}

/// The Hub layouts the tests point `LOCAL_KERNELS` at: intact, damaged after its digest was
/// recorded, and built for another CPU. Made once per parent process, keyed by the library's
/// hash so concurrent runs share them.
pub(crate) struct Hubs {
    /// Verifies and loads.
    pub(crate) intact: PathBuf,
    /// Fails verification.
    pub(crate) damaged: PathBuf,
    /// Only a variant for another CPU.
    pub(crate) foreign: PathBuf,
}

pub(crate) fn hubs() -> &'static Hubs {
    static HUBS: OnceLock<Hubs> = OnceLock::new();
    HUBS.get_or_init(|| {
        let library = std::fs::read(build_example_kernel()).unwrap();
        let root =
            Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("dispatch-hubs-{}", &sha256_hex(&library)[..12]));
        let this = format!("tvm-ffi01-cpu-{}-{}", CpuArch::current(), Os::current());
        let other = if CpuArch::current() == CpuArch::X86_64 { "aarch64" } else { "x86_64" };
        let hubs = Hubs { intact: root.join("intact"), damaged: root.join("damaged"), foreign: root.join("foreign") };
        if !root.join("complete").is_file() {
            let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
            lay_out(&library, &this, &tmp.path().join("intact"));
            lay_out(&library, &this, &tmp.path().join("damaged"));
            lay_out(&library, &format!("tvm-ffi01-cpu-{other}-{}", Os::current()), &tmp.path().join("foreign"));
            // Damage the library after its digest was written.
            let lib = std::fs::read_dir(tmp.path().join("damaged/build").join(&this))
                .unwrap()
                .map(|e| e.unwrap().path())
                .find(|p| p.extension().is_some_and(|e| e == "so"))
                .unwrap();
            std::fs::OpenOptions::new().append(true).open(lib).unwrap().write_all(b"tampered").unwrap();
            std::fs::write(tmp.path().join("complete"), b"").unwrap();
            // Another process may have finished first; either copy is the same.
            let _ = std::fs::rename(tmp.keep(), &root);
        }
        assert!(root.join("complete").is_file(), "{} was not laid out", root.display());
        hubs
    })
}
