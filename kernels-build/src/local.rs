//! Kernels given by `path`: a Hub-layout directory used as it is, or a kernel crate of this
//! repository's kind (a Rust `cdylib` exporting the TVM-FFI ABI) compiled for the build
//! target and laid out as the Hub's kernel-builder lays out a `tvm-ffi` variant.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use kernels_runtime::metadata::{self, METADATA_FILE};
use kernels_runtime::platform::TVM_FFI_ABI_VERSION;
use kernels_runtime::variant::{Backend, Framework, Os, VariantName};

use crate::env::{CargoOutput, Env};
use crate::target::target_parts;

/// Building or laying out a local kernel failed.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// The directory is neither a Hub layout nor a crate.
    #[error(
        "{0}: not a kernel directory: expected `build/<variant>/metadata.json` (Hub layout), `metadata.json` (one variant) or `Cargo.toml` (a kernel crate)"
    )]
    NotAKernel(PathBuf),
    /// `cargo build` of the kernel crate failed.
    #[error("building kernel crate {dir} for {target} failed ({status}):\n{stderr}")]
    Cargo {
        /// Crate directory.
        dir: PathBuf,
        target: String,
        status: String,
        /// What cargo printed.
        stderr: String,
    },
    /// The crate built but produced no shared library.
    #[error("kernel crate {0} produced no cdylib; add `[lib] crate-type = [\"cdylib\"]` to its Cargo.toml")]
    NoCdylib(PathBuf),
    /// The target has no variant name (unknown CPU arch or OS).
    #[error(transparent)]
    Target(#[from] crate::target::UnsupportedTarget),
    /// I/O.
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// Verification of the laid-out directory failed.
    #[error(transparent)]
    Verify(#[from] metadata::VerifyError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LocalError + '_ {
    move |source| LocalError::Io { path: path.to_owned(), source }
}

/// The CPU variant name a kernel crate built for `target` gets.
pub fn cpu_variant_for(target: &str) -> Result<VariantName, LocalError> {
    let (cpu, os) = target_parts(target)?;
    Ok(VariantName::Arch {
        framework: Framework::TvmFfi(TVM_FFI_ABI_VERSION),
        cxx_abi: None,
        backend: Backend::Cpu,
        cpu,
        os,
    })
}

/// What a `path` kernel turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LocalKind {
    /// A directory holding `build/<variant>/…`.
    HubLayout(PathBuf),
    /// A single variant directory (holds `metadata.json`).
    Variant(PathBuf),
    /// A crate to compile.
    Crate(PathBuf),
}

/// Classifies a `path` kernel.
pub fn classify(dir: &Path) -> Result<LocalKind, LocalError> {
    if dir.join("build").is_dir() {
        Ok(LocalKind::HubLayout(dir.to_owned()))
    } else if dir.join(METADATA_FILE).is_file() {
        Ok(LocalKind::Variant(dir.to_owned()))
    } else if dir.join("Cargo.toml").is_file() {
        Ok(LocalKind::Crate(dir.to_owned()))
    } else {
        Err(LocalError::NotAKernel(dir.to_owned()))
    }
}

/// Compiles a kernel crate for `target` (release profile) and returns its cdylib.
pub fn build_crate(
    crate_dir: &Path,
    target: &str,
    target_dir: &Path,
    env: &Env,
    out: &mut CargoOutput,
) -> Result<PathBuf, LocalError> {
    build_crate_with(crate_dir, target, target_dir, env, out, None)
}

/// [`build_crate`], without debug info (`CARGO_PROFILE_RELEASE_STRIP=debuginfo`; the symbol
/// table stays, so backtraces still name functions): what the build embeds. Every start of
/// the binary hashes and copies the library it loads, and debug info is most of a Rust
/// cdylib (the example CPU kernels: 5.3 MB with it, 0.7 MB without).
pub fn build_crate_for_embedding(
    crate_dir: &Path,
    target: &str,
    target_dir: &Path,
    env: &Env,
    out: &mut CargoOutput,
) -> Result<PathBuf, LocalError> {
    build_crate_with(crate_dir, target, target_dir, env, out, Some("debuginfo"))
}

/// [`build_crate`], with the library's symbol table stripped (`CARGO_PROFILE_RELEASE_STRIP=symbols`;
/// the dynamic symbols that export its functions stay): what a published variant carries.
pub fn build_crate_stripped(
    crate_dir: &Path,
    target: &str,
    target_dir: &Path,
    env: &Env,
    out: &mut CargoOutput,
) -> Result<PathBuf, LocalError> {
    build_crate_with(crate_dir, target, target_dir, env, out, Some("symbols"))
}

fn build_crate_with(
    crate_dir: &Path,
    target: &str,
    target_dir: &Path,
    env: &Env,
    out: &mut CargoOutput,
    strip: Option<&str>,
) -> Result<PathBuf, LocalError> {
    let cargo = env.path("CARGO").unwrap_or_else(|| PathBuf::from("cargo"));
    let manifest = crate_dir.join("Cargo.toml");
    out.rerun_if_changed(&manifest);
    out.rerun_if_changed(&crate_dir.join("src"));
    out.rerun_if_changed(&crate_dir.join("build.rs"));
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--release", "--lib", "--message-format=json-render-diagnostics", "--target", target])
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--target-dir")
        .arg(target_dir);
    if env.flag(kernels_runtime::env::CARGO_NET_OFFLINE) {
        cmd.arg("--offline");
    }
    if let Some(strip) = strip {
        cmd.env("CARGO_PROFILE_RELEASE_STRIP", strip);
    }
    // What the outer build gives its build script must not redirect the inner build.
    for key in
        ["CARGO_TARGET_DIR", "CARGO_BUILD_TARGET", "RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS", "CARGO_PRIMARY_PACKAGE"]
    {
        cmd.env_remove(key);
    }
    let output = cmd.output().map_err(io(crate_dir))?;
    if !output.status.success() {
        return Err(LocalError::Cargo {
            dir: crate_dir.to_owned(),
            target: target.to_owned(),
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        });
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let manifest_canon = std::fs::canonicalize(&manifest).unwrap_or(manifest.clone());
    let ext = match target_parts(target)?.1 {
        Os::Darwin => ".dylib",
        Os::Windows => ".dll",
        _ => ".so",
    };
    for line in stdout.lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        if msg["reason"] != "compiler-artifact" {
            continue;
        }
        let same = msg["manifest_path"].as_str().is_some_and(|m| Path::new(m) == manifest_canon);
        let cdylib = msg["target"]["crate_types"].as_array().is_some_and(|t| t.iter().any(|k| k == "cdylib"));
        if !(same && cdylib) {
            continue;
        }
        if let Some(file) =
            msg["filenames"].as_array().into_iter().flatten().filter_map(|f| f.as_str()).find(|f| f.ends_with(ext))
        {
            return Ok(PathBuf::from(file));
        }
    }
    Err(LocalError::NoCdylib(crate_dir.to_owned()))
}

/// The `metadata.json` kernel-builder would write for a CPU variant, with its digest.
/// Keys are written in upstream's order; `digest.files` sorted; no trailing newline.
pub fn metadata_json(name: &str, id: &str, license: &str, files: &BTreeMap<String, String>) -> String {
    let value = serde_json::json!({
        "name": name,
        "id": id,
        "version": 1,
        "license": license,
        "python-depends": [],
        "kernel-depends": [],
        "backend": { "type": "cpu" },
        "digest": { "algorithm": "sha256", "files": files },
    });
    serde_json::to_string_pretty(&value).expect("JSON values always serialise")
}

/// Lays a built library out as `<root>/build/<variant>/<id>.so` (`<id>.abi3.so` for a torch
/// stable-ABI variant) + `metadata.json`, the way the Hub's kernel-builder does for a CPU `tvm-ffi` variant. The id is
/// `_<name>_cpu_<first 7 hex of the library's sha256>`, so the same bytes give the same id.
/// Returns the variant directory.
pub fn lay_out(
    library: &Path,
    name: &str,
    license: &str,
    variant: &VariantName,
    root: &Path,
) -> Result<PathBuf, LocalError> {
    lay_out_with_files(library, name, license, variant, root, &[])
}

/// The id [`lay_out`] gives a library of `name` with these bytes.
pub fn variant_id(name: &str, library_bytes: &[u8]) -> String {
    format!("_{}_cpu_{}", name.replace('-', "_"), &kernels_runtime::digest::sha256_hex(library_bytes)[..7])
}

/// [`lay_out`], with `files` (plain file names and their bytes, e.g. the variant's Python
/// package) written beside the library before the digest is computed.
pub fn lay_out_with_files(
    library: &Path,
    name: &str,
    license: &str,
    variant: &VariantName,
    root: &Path,
    files: &[(String, Vec<u8>)],
) -> Result<PathBuf, LocalError> {
    let bytes = std::fs::read(library).map_err(io(library))?;
    let id = variant_id(name, &bytes);
    // A torch stable-ABI library is an abi3 Python module: `<id>.abi3.so`, as the runtime looks for it.
    let ext = match variant.framework() {
        Some(kernels_runtime::variant::Framework::TorchStableAbi(_)) => "abi3.so",
        _ => library.extension().and_then(|e| e.to_str()).unwrap_or("so"),
    };
    let dir = root.join("build").join(variant.to_string());
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(io(&dir))?;
    }
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let lib_path = dir.join(format!("{id}.{ext}"));
    std::fs::write(&lib_path, &bytes).map_err(io(&lib_path))?;
    for (file, contents) in files {
        let plain = Path::new(file).file_name().is_some_and(|n| n == file.as_str()) && file != METADATA_FILE;
        if !plain {
            return Err(LocalError::Io {
                path: dir.join(file),
                source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a plain file name"),
            });
        }
        std::fs::write(dir.join(file), contents).map_err(io(&dir.join(file)))?;
    }
    let files = metadata::digest_files(&dir)?;
    let meta_path = dir.join(METADATA_FILE);
    std::fs::write(&meta_path, metadata_json(name, &id, license, &files)).map_err(io(&meta_path))?;
    metadata::read_and_verify(&dir)?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_triples_map_to_variant_names() {
        assert_eq!(cpu_variant_for("x86_64-unknown-linux-gnu").unwrap().to_string(), "tvm-ffi01-cpu-x86_64-linux");
        assert_eq!(cpu_variant_for("aarch64-unknown-linux-musl").unwrap().to_string(), "tvm-ffi01-cpu-aarch64-linux");
        assert_eq!(cpu_variant_for("aarch64-apple-darwin").unwrap().to_string(), "tvm-ffi01-cpu-aarch64-darwin");
        assert_eq!(cpu_variant_for("x86_64-pc-windows-msvc").unwrap().to_string(), "tvm-ffi01-cpu-x86_64-windows");
        let err = cpu_variant_for("riscv64gc-unknown-linux-gnu").unwrap_err();
        assert!(err.to_string().contains("riscv64gc-unknown-linux-gnu"), "{err}");
    }

    #[test]
    fn lay_out_writes_a_verifiable_hub_variant() {
        let tmp = tempfile::tempdir().unwrap();
        let lib = tmp.path().join("libk.so");
        std::fs::write(&lib, b"\x7fELF not really").unwrap();
        let variant = cpu_variant_for("x86_64-unknown-linux-gnu").unwrap();
        let dir = lay_out(&lib, "my-ops", "Apache-2.0", &variant, &tmp.path().join("hub")).unwrap();
        assert_eq!(dir, tmp.path().join("hub/build/tvm-ffi01-cpu-x86_64-linux"));
        let meta = metadata::read_and_verify(&dir).unwrap();
        let id = meta.id.unwrap();
        assert!(id.starts_with("_my_ops_cpu_") && id.len() == "_my_ops_cpu_".len() + 7, "{id}");
        assert!(dir.join(format!("{id}.so")).is_file());
        let text = std::fs::read_to_string(dir.join(METADATA_FILE)).unwrap();
        assert!(text.starts_with("{\n  \"name\": \"my-ops\",\n  \"id\""), "{text}");
        assert!(!text.ends_with('\n'));
        // Same bytes, same layout.
        let again = lay_out(&lib, "my-ops", "Apache-2.0", &variant, &tmp.path().join("hub2")).unwrap();
        assert_eq!(std::fs::read(dir.join(METADATA_FILE)).unwrap(), std::fs::read(again.join(METADATA_FILE)).unwrap());
        assert!(matches!(classify(&tmp.path().join("hub")).unwrap(), LocalKind::HubLayout(_)));
        assert!(matches!(classify(&dir).unwrap(), LocalKind::Variant(_)));
        assert!(classify(tmp.path()).is_err());
    }
}
