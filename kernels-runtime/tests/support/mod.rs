//! Shared by the integration tests: building the example Rust CPU kernels.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Builds `kernels-example-cpu` in release mode and returns the cdylib's path, taken from
/// cargo's artifact messages.
pub(crate) fn build_example() -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root");
    let output = Command::new(cargo)
        .current_dir(workspace)
        .args(["build", "-p", "kernels-example-cpu", "--release", "--message-format=json-render-diagnostics"])
        .output()
        .expect("run cargo build");
    assert!(
        output.status.success(),
        "building kernels-example-cpu failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8(output.stdout).expect("cargo prints UTF-8");
    for line in stdout.lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        if message["reason"] != "compiler-artifact" || message["target"]["name"] != "kernels_example_cpu" {
            continue;
        }
        let files = message["filenames"].as_array().expect("filenames");
        if let Some(so) = files.iter().filter_map(|f| f.as_str()).find(|f| f.ends_with(".so")) {
            return PathBuf::from(so);
        }
    }
    panic!("cargo reported no cdylib for kernels-example-cpu:\n{stdout}");
}
