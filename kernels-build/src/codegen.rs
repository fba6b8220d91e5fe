//! Writing `$OUT_DIR/kernels/`: the registry (`registry.rs`) and the embedded libraries
//! (`blobs/<sha256>.<ext>`, pulled in with relative `include_bytes!`). Variants prefetched
//! without embedding (`[build] embed = false`) are listed with the sha256 and size
//! `kernels.lock` pins for their library and `metadata.json`, which the runtime checks before
//! loading them from the Hub cache. The output depends only
//! on its inputs — no absolute paths, no timestamps, sorted — and files are rewritten only
//! when their bytes change, so a no-op build touches nothing.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use kernels_runtime::digest::sha256_hex;
use kernels_runtime::registry::{CapabilityRange, ModeSupport, Tolerance};
use kernels_runtime::variant::{BackendKind, Version};

use crate::lock::ResolvedFile;

/// A kernel as the registry lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenKernel {
    /// Local name.
    pub name: String,
    /// Hub repo, or the `path` as written in `kernels.toml`.
    pub repo: String,
    /// Resolved commit (Hub kernels).
    pub commit: Option<String>,
    /// Embedded variants.
    pub variants: Vec<GenVariant>,
    /// Variants prefetched into the Hub cache instead, with their pins.
    pub cached: Vec<GenCachedVariant>,
}

/// A variant loaded from the Hub cache at run time, pinned by the lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenCachedVariant {
    /// Variant directory name.
    pub variant: String,
    /// `backend.archs` of its metadata.
    pub archs: Vec<String>,
    /// The library as the lock pins it.
    pub library: ResolvedFile,
    /// `metadata.json` as the lock pins it.
    pub metadata: ResolvedFile,
}

/// A variant whose library is embedded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenVariant {
    /// Variant directory name.
    pub variant: String,
    /// `backend.archs` of its metadata.
    pub archs: Vec<String>,
    /// Library file name inside the variant directory (`<id>.so`).
    pub library_file: String,
    /// Library bytes (already verified).
    pub bytes: Vec<u8>,
    /// Whether the library lists `libtvm_ffi.so` in `DT_NEEDED`, so the runtime library is
    /// embedded too (not rendered).
    pub needs_tvm_ffi: bool,
    /// The CUDA runtime soname the library lists in `DT_NEEDED` (`libcudart.so.13`), if any,
    /// so that it is embedded too (not rendered).
    pub cuda_runtime: Option<String>,
}

/// A layer mapping as the registry lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct GenLayer {
    pub layer: String,
    pub device: BackendKind,
    /// Local kernel name.
    pub kernel: String,
    pub function: String,
    /// Inclusive capability range, either end open; `None` serves every GPU.
    pub capability: Option<CapabilityRange>,
    pub mode: ModeSupport,
    /// Declared `deterministic = true`.
    pub deterministic: bool,
    /// Declared `tolerance = { atol, rtol }`.
    pub tolerance: Option<Tolerance>,
}

/// A runtime library to embed: `libtvm_ffi.so`, or the CUDA runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenRuntimeLib {
    /// File name: `libtvm_ffi.so`, or the CUDA runtime's soname (`libcudart.so.13`).
    pub file: String,
    /// The library's bytes.
    pub bytes: Vec<u8>,
}

/// Everything the registry holds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GenRegistry {
    pub kernels: Vec<GenKernel>,
    /// Layer mappings, in declaration order within a layer and device.
    pub layers: Vec<GenLayer>,
    /// The tvm-ffi runtime library, when an embedded variant needs it.
    pub tvm_ffi: Option<GenRuntimeLib>,
    /// The CUDA runtime (`libcudart.so.<major>`), when an embedded variant lists it in
    /// `DT_NEEDED`.
    pub cuda_runtime: Option<GenRuntimeLib>,
}

const RT: &str = "::kernels_runtime";

fn version(v: Option<Version>) -> String {
    match v {
        Some(v) => format!("::core::option::Option::Some({RT}::variant::Version::new({}, {}))", v.major, v.minor),
        None => "::core::option::Option::None".to_owned(),
    }
}

fn backend(kind: BackendKind) -> String {
    let name = match kind {
        BackendKind::Cuda => "Cuda",
        BackendKind::Rocm => "Rocm",
        BackendKind::Xpu => "Xpu",
        BackendKind::Cann => "Cann",
        BackendKind::Cpu => "Cpu",
        BackendKind::Metal => "Metal",
        BackendKind::Neuron => "Neuron",
        BackendKind::Tpu => "Tpu",
    };
    format!("{RT}::variant::BackendKind::{name}")
}

fn blob_name(file: &str, bytes: &[u8]) -> (String, String) {
    let sha = sha256_hex(bytes);
    let ext = Path::new(file).extension().and_then(|e| e.to_str()).unwrap_or("bin");
    (format!("{sha}.{ext}"), sha)
}

fn embedded_file(out: &mut String, indent: &str, file: &str, bytes: &[u8]) {
    let (blob, sha) = blob_name(file, bytes);
    let _ = writeln!(out, "{RT}::registry::EmbeddedFile {{");
    let _ = writeln!(out, "{indent}    path: {file:?},");
    let _ = writeln!(out, "{indent}    sha256: {sha:?},");
    let _ = writeln!(out, "{indent}    bytes: include_bytes!({:?}),", format!("blobs/{blob}"));
    let _ = write!(out, "{indent}}}");
}

fn pinned_file(f: &ResolvedFile) -> String {
    format!("{RT}::registry::PinnedFile {{ path: {:?}, sha256: {:?}, size: {} }}", f.path, f.sha256, f.size)
}

/// The text of `registry.rs`.
pub fn render(reg: &GenRegistry) -> String {
    let mut kernels = reg.kernels.clone();
    kernels.sort_by(|a, b| a.name.cmp(&b.name));
    for k in &mut kernels {
        k.variants.sort_by(|a, b| a.variant.cmp(&b.variant));
        k.cached.sort_by(|a, b| a.variant.cmp(&b.variant));
    }
    let mut layers: Vec<(usize, &GenLayer)> = reg.layers.iter().enumerate().collect();
    layers.sort_by(|(i, a), (j, b)| (&a.layer, a.device, i).cmp(&(&b.layer, b.device, j)));

    let mut s = String::new();
    s.push_str("// @generated by kernels-build from kernels.toml and kernels.lock. Do not edit.\n");
    s.push_str("// Brought into the crate by `kernels_runtime::include_kernels!()`.\n\n");
    s.push_str("#[doc(hidden)]\n#[allow(dead_code)]\n");
    let _ = writeln!(s, "pub(crate) static __KERNELS_REGISTRY: {RT}::registry::Registry = {RT}::registry::Registry {{");
    s.push_str("    kernels: &[\n");
    for k in &kernels {
        let _ = writeln!(s, "        {RT}::registry::KernelEntry {{");
        let _ = writeln!(s, "            name: {:?},", k.name);
        let _ = writeln!(s, "            repo: {:?},", k.repo);
        match &k.commit {
            Some(c) => {
                let _ = writeln!(s, "            commit: ::core::option::Option::Some({c:?}),");
            }
            None => s.push_str("            commit: ::core::option::Option::None,\n"),
        }
        s.push_str("            variants: &[\n");
        for v in &k.variants {
            let _ = writeln!(s, "                {RT}::registry::EmbeddedVariant {{");
            let _ = writeln!(s, "                    variant: {:?},", v.variant);
            let archs: Vec<String> = v.archs.iter().map(|a| format!("{a:?}")).collect();
            let _ = writeln!(s, "                    archs: &[{}],", archs.join(", "));
            s.push_str("                    library: ");
            embedded_file(&mut s, "                    ", &v.library_file, &v.bytes);
            s.push_str(",\n                },\n");
        }
        if k.cached.is_empty() {
            s.push_str("            ],\n            cached: &[],\n        },\n");
            continue;
        }
        s.push_str("            ],\n            cached: &[\n");
        for v in &k.cached {
            let _ = writeln!(s, "                {RT}::registry::CachedVariant {{");
            let _ = writeln!(s, "                    variant: {:?},", v.variant);
            let archs: Vec<String> = v.archs.iter().map(|a| format!("{a:?}")).collect();
            let _ = writeln!(s, "                    archs: &[{}],", archs.join(", "));
            let _ = writeln!(s, "                    library: {},", pinned_file(&v.library));
            let _ = writeln!(s, "                    metadata: {},", pinned_file(&v.metadata));
            s.push_str("                },\n");
        }
        s.push_str("            ],\n        },\n");
    }
    s.push_str("    ],\n    layers: &[\n");
    for (_, l) in &layers {
        let _ = writeln!(s, "        {RT}::registry::LayerEntry {{");
        let _ = writeln!(s, "            layer: {:?},", l.layer);
        let _ = writeln!(s, "            device: {},", backend(l.device));
        let _ = writeln!(s, "            kernel: {:?},", l.kernel);
        let _ = writeln!(s, "            function: {:?},", l.function);
        match l.capability {
            Some(CapabilityRange { min, max }) => {
                let _ = writeln!(
                    s,
                    "            capability: ::core::option::Option::Some({RT}::registry::CapabilityRange {{ min: {}, max: {} }}),",
                    version(min),
                    version(max)
                );
            }
            None => s.push_str("            capability: ::core::option::Option::None,\n"),
        }
        let mode = match l.mode {
            ModeSupport::Inference => "Inference",
            ModeSupport::Training => "Training",
        };
        let _ = writeln!(s, "            mode: {RT}::registry::ModeSupport::{mode},");
        let _ = writeln!(s, "            deterministic: {},", l.deterministic);
        match l.tolerance {
            // `{:?}` writes an f64 that reads back as the same value.
            Some(t) => {
                let _ = writeln!(
                    s,
                    "            tolerance: ::core::option::Option::Some({RT}::registry::Tolerance {{ atol: {:?}, rtol: {:?} }}),",
                    t.atol, t.rtol
                );
            }
            None => s.push_str("            tolerance: ::core::option::Option::None,\n"),
        }
        s.push_str("        },\n");
    }
    s.push_str("    ],\n");
    match &reg.tvm_ffi {
        Some(lib) => {
            s.push_str("    tvm_ffi: ::core::option::Option::Some(");
            embedded_file(&mut s, "    ", &lib.file, &lib.bytes);
            s.push_str("),\n");
        }
        None => s.push_str("    tvm_ffi: ::core::option::Option::None,\n"),
    }
    match &reg.cuda_runtime {
        Some(lib) => {
            s.push_str("    cuda_runtime: ::core::option::Option::Some(");
            embedded_file(&mut s, "    ", &lib.file, &lib.bytes);
            s.push_str("),\n");
        }
        None => s.push_str("    cuda_runtime: ::core::option::Option::None,\n"),
    }
    s.push_str("};\n");
    s
}

/// Writes `dir/name` only when the bytes differ, so timestamps move only on real changes.
pub fn write_if_changed(path: &Path, bytes: &[u8]) -> std::io::Result<bool> {
    if std::fs::read(path).is_ok_and(|old| old == bytes) {
        return Ok(false);
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let tmp = path.with_extension("tmp-kernels-build");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)?;
    Ok(true)
}

/// Writes `<dir>/registry.rs` and `<dir>/blobs/*`, removing blobs no longer referenced.
/// Returns the registry path.
pub fn write(dir: &Path, reg: &GenRegistry) -> std::io::Result<PathBuf> {
    let blobs = dir.join("blobs");
    std::fs::create_dir_all(&blobs)?;
    let mut wanted = std::collections::BTreeSet::new();
    let files = reg
        .kernels
        .iter()
        .flat_map(|k| &k.variants)
        .map(|v| (v.library_file.as_str(), v.bytes.as_slice()))
        .chain(reg.tvm_ffi.iter().chain(&reg.cuda_runtime).map(|l| (l.file.as_str(), l.bytes.as_slice())));
    for (file, bytes) in files {
        let (blob, _) = blob_name(file, bytes);
        write_if_changed(&blobs.join(&blob), bytes)?;
        wanted.insert(blob);
    }
    for entry in std::fs::read_dir(&blobs)? {
        let entry = entry?;
        if !wanted.contains(&entry.file_name().to_string_lossy().into_owned()) {
            std::fs::remove_file(entry.path())?;
        }
    }
    let path = dir.join("registry.rs");
    write_if_changed(&path, render(reg).as_bytes())?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> GenRegistry {
        GenRegistry {
            kernels: vec![
                GenKernel {
                    name: "norm".into(),
                    repo: "kernels-test/norm".into(),
                    commit: Some("0123456789abcdef0123456789abcdef01234567".into()),
                    variants: vec![
                        GenVariant {
                            variant: "tvm-ffi01-cu130-x86_64-linux".into(),
                            archs: vec!["8.0".into(), "9.0+PTX".into()],
                            library_file: "_norm_cuda_abc1234.so".into(),
                            bytes: b"cuda".to_vec(),
                            needs_tvm_ffi: true,
                            cuda_runtime: None,
                        },
                        GenVariant {
                            variant: "tvm-ffi01-cpu-x86_64-linux".into(),
                            archs: vec![],
                            library_file: "_norm_cpu_abc1234.so".into(),
                            bytes: b"cpu".to_vec(),
                            needs_tvm_ffi: false,
                            cuda_runtime: None,
                        },
                    ],
                    cached: vec![],
                },
                GenKernel {
                    name: "act".into(),
                    repo: "../kernels/act".into(),
                    commit: None,
                    variants: vec![],
                    cached: vec![],
                },
                GenKernel {
                    name: "prefetched".into(),
                    repo: "kernels-test/prefetched".into(),
                    commit: Some("89abcdef0123456789abcdef0123456789abcdef".into()),
                    variants: vec![],
                    cached: vec![
                        GenCachedVariant {
                            variant: "tvm-ffi01-cu130-x86_64-linux".into(),
                            archs: vec!["9.0".into()],
                            library: ResolvedFile {
                                path: "_prefetched_cuda_def5678.so".into(),
                                sha256: sha256_hex(b"cuda library"),
                                size: 12,
                            },
                            metadata: ResolvedFile { path: "metadata.json".into(), sha256: sha256_hex(b"{}"), size: 2 },
                        },
                        GenCachedVariant {
                            variant: "tvm-ffi01-cpu-x86_64-linux".into(),
                            archs: vec![],
                            library: ResolvedFile {
                                path: "_prefetched_cpu_def5678.so".into(),
                                sha256: sha256_hex(b"cpu library"),
                                size: 11,
                            },
                            metadata: ResolvedFile {
                                path: "metadata.json".into(),
                                sha256: sha256_hex(b"{ }"),
                                size: 3,
                            },
                        },
                    ],
                },
            ],
            layers: vec![
                GenLayer {
                    layer: "RMSNorm".into(),
                    device: BackendKind::Cuda,
                    kernel: "norm".into(),
                    function: "rms_norm".into(),
                    capability: Some(CapabilityRange { min: Some(Version::new(8, 0)), max: None }),
                    mode: ModeSupport::Inference,
                    deterministic: false,
                    tolerance: None,
                },
                GenLayer {
                    layer: "RMSNorm".into(),
                    device: BackendKind::Cpu,
                    kernel: "norm".into(),
                    function: "rms_norm".into(),
                    capability: None,
                    mode: ModeSupport::Training,
                    deterministic: true,
                    tolerance: Some(Tolerance { atol: 1e-5, rtol: 1e-3 }),
                },
            ],
            tvm_ffi: Some(GenRuntimeLib { file: "libtvm_ffi.so".into(), bytes: b"rt".to_vec() }),
            cuda_runtime: Some(GenRuntimeLib { file: "libcudart.so.13".into(), bytes: b"cudart".to_vec() }),
        }
    }

    #[test]
    fn registry_matches_the_golden_file() {
        let golden = include_str!("../tests/golden/registry.rs");
        let rendered = render(&sample());
        if rendered != golden && std::env::var_os("KERNELS_BLESS").is_some() {
            std::fs::write(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/golden/registry.rs"), &rendered).unwrap();
            return;
        }
        assert_eq!(rendered, golden, "rerun with KERNELS_BLESS=1 to accept the new output");
    }

    #[test]
    fn rendering_ignores_input_order() {
        let a = sample();
        let mut b = sample();
        b.kernels.reverse();
        b.kernels[2].variants.reverse();
        b.kernels[0].cached.reverse();
        assert_eq!(render(&a), render(&b));
    }

    #[test]
    fn write_is_idempotent_and_prunes_stale_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let reg = sample();
        let path = write(dir.path(), &reg).unwrap();
        let stale = dir.path().join("blobs/stale.so");
        std::fs::write(&stale, b"x").unwrap();
        let before = std::fs::metadata(&path).unwrap().modified().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        write(dir.path(), &reg).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().modified().unwrap(), before, "unchanged file rewritten");
        assert!(!stale.exists());
        let blobs: Vec<_> =
            std::fs::read_dir(dir.path().join("blobs")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(blobs.len(), 4, "{blobs:?}");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains(&format!("include_bytes!(\"blobs/{}.so\")", sha256_hex(b"cpu"))), "{text}");
        assert!(!text.contains(dir.path().to_str().unwrap()), "absolute path in generated code");
    }
}
