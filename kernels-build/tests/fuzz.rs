//! Fuzz smoke of the `kernels.toml` and `kernels.lock` readers: a few seconds per target
//! (`KERNELS_FUZZ_SECS`) of mutated real files. Never a panic or a hang; an error is a list of
//! diagnostics, each naming `file:line:column` inside the text, with a message.

// The engine lives with kernels-runtime's tests; both crates' fuzz tests share it.
#[path = "../../kernels-runtime/tests/support/fuzz.rs"]
mod fuzz;

use std::path::Path;

use fuzz::Target;
use kernels_build::diagnostic::Diagnostic;
use kernels_build::lock::{Lock, LockError, RuntimePin};
use kernels_build::lock::{ResolvedFile, ResolvedKernel, ResolvedVariant};
use kernels_build::manifest::{DEVICES, Manifest, Requested};
use kernels_runtime::registry::{CapabilityRange, LayerEntry, Needs, pick_mapping};
use kernels_runtime::variant::Version;

fn tokens(items: &[&str]) -> Vec<Vec<u8>> {
    items.iter().map(|t| t.as_bytes().to_vec()).collect()
}

fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("workspace root")
}

/// The ```` ```toml ```` block of a module's documentation.
fn doc_example(source: &str) -> Vec<u8> {
    let text = std::fs::read_to_string(workspace().join(source)).unwrap();
    let block: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("//!"))
        .map(|l| l.strip_prefix(' ').unwrap_or(l))
        .skip_while(|l| *l != "```toml")
        .skip(1)
        .take_while(|l| *l != "```")
        .collect();
    assert!(!block.is_empty(), "{source} has a ```toml example");
    (block.join("\n") + "\n").into_bytes()
}

/// Every diagnostic names the file, a line and column inside `text`, and says something.
fn check_diagnostics(text: &str, origin: &Path, diagnostics: &[Diagnostic]) -> Result<(), String> {
    if diagnostics.is_empty() {
        return Err("an error without a diagnostic".into());
    }
    let lines: Vec<&str> = text.split('\n').collect();
    for d in diagnostics {
        let rendered = d.to_string();
        let line = d.line.checked_sub(1).and_then(|l| lines.get(l));
        let Some(line) = line else {
            return Err(format!("line {} is outside the text ({} lines): {rendered:?}", d.line, lines.len()));
        };
        if d.column == 0 || d.column > line.chars().count() + 1 {
            return Err(format!("column {} is outside line {}: {rendered:?}", d.column, d.line));
        }
        let prefix = format!("{}:{}:{}: ", origin.display(), d.line, d.column);
        if !rendered.starts_with(&prefix) || d.message.trim().is_empty() || d.path != origin {
            return Err(format!("a diagnostic without place or message: {rendered:?}"));
        }
    }
    Ok(())
}

fn check_manifest(input: &[u8]) -> Result<(), String> {
    let text = String::from_utf8_lossy(input);
    let origin = Path::new("fuzz/kernels.toml");
    let manifest = match Manifest::parse(&text, origin) {
        Ok(m) => m,
        Err(diagnostics) => return check_diagnostics(&text, origin, &diagnostics),
    };
    // A manifest that parses can be used: every mapping names a declared kernel, lookups and
    // picks work, and capability ranges print back to what they were.
    let _ = (manifest.dir(), manifest.hub_kernels().count());
    for m in &manifest.layers {
        if manifest.kernel(&m.kernel).is_none() {
            return Err(format!("{} maps undeclared kernel {:?}", m.key, m.kernel));
        }
        let printed = m.capability.unwrap_or(CapabilityRange { min: None, max: None }).to_string();
        let again: CapabilityRange = printed.parse().map_err(|e| format!("{printed:?} does not parse back: {e}"))?;
        let again = (!again.is_unbounded()).then_some(again);
        if again != m.capability {
            return Err(format!("capability {:?} prints as {printed:?}, which parses as {again:?}", m.capability));
        }
    }
    let layers: std::collections::BTreeSet<&str> = manifest.layers.iter().map(|m| m.layer.as_str()).collect();
    for layer in layers {
        for device in DEVICES {
            let mappings: Vec<LayerEntry> = manifest
                .mappings(layer, device)
                .iter()
                .map(|m| LayerEntry {
                    layer: "L",
                    device,
                    kernel: "k",
                    function: "f",
                    capability: m.capability,
                    mode: m.mode,
                    deterministic: m.deterministic,
                    tolerance: m.tolerance,
                })
                .collect();
            for cc in [None, Some(Version::new(0, 0)), Some(Version::new(9, 0)), Some(Version::new(u32::MAX, u32::MAX))]
            {
                for (training, deterministic) in [(false, false), (true, false), (false, true), (true, true)] {
                    if let Some(chosen) = pick_mapping(&mappings, cc, Needs { training, deterministic })
                        && !mappings.iter().any(|m| std::ptr::eq(m, chosen))
                    {
                        return Err("pick chose a mapping it was not given".into());
                    }
                }
            }
        }
    }
    Ok(())
}

#[test]
fn fuzz_manifest() {
    let demo = std::fs::read(workspace().join("examples/demo/kernels.toml")).unwrap();
    let documented = doc_example("kernels-build/src/manifest.rs");
    for (name, seed) in [("demo", &demo), ("documented", &documented)] {
        let text = String::from_utf8_lossy(seed);
        if let Err(d) = Manifest::parse(&text, Path::new("kernels.toml")) {
            panic!("the {name} seed is a valid manifest: {d:?}");
        }
    }
    let target = Target {
        name: "manifest",
        seeds: vec![demo, documented],
        tokens: tokens(&[
            "[kernels.",
            "[layers.",
            "[build]",
            "repo = ",
            "\"org/name\"",
            "version = ",
            "revision = ",
            "path = ",
            "optional = true",
            "kernel = ",
            "function = ",
            "capability = ",
            "\"9.0..\"",
            "\"..8.9\"",
            "\"4294967295.4294967295\"",
            "mode = \"training\"",
            "deterministic = true",
            "cuda = ",
            "cpu = ",
            "backends = [\"cpu\", \"cuda\"]",
            "embed = false",
            "{ kernel = \"a\", function = \"f\" }",
            "[[",
            "a.b.c",
        ]),
        max_len: 16 << 10,
    };
    fuzz::run(&target, check_manifest);
}

fn check_lock(input: &[u8]) -> Result<(), String> {
    let text = String::from_utf8_lossy(input);
    let origin = Path::new("fuzz/kernels.lock");
    let lock = match Lock::parse(&text, origin) {
        Ok(lock) => lock,
        Err(LockError::Invalid(diagnostics)) => {
            let rendered = LockError::Invalid(diagnostics.clone()).to_string();
            if rendered.trim().is_empty() {
                return Err("an empty error".into());
            }
            return check_diagnostics(&text, origin, &diagnostics);
        }
        Err(e) => return Err(format!("parsing text gave a read error: {e}")),
    };
    // What the reader accepts, the writer writes back, and the reader reads back the same.
    let rendered = lock.render();
    match Lock::parse(&rendered, origin) {
        Ok(again) if again == lock => {}
        Ok(again) => return Err(format!("rendered and read back, the lock changed:\n{rendered}\n{again:#?}")),
        Err(e) => return Err(format!("the rendered lock does not read back: {e}\n{rendered}")),
    }
    Ok(())
}

/// A lock as `cargo kernels lock` writes it: two kernels, a version and a revision request,
/// a few variants and files, the runtime pin.
fn written_lock() -> Vec<u8> {
    let file = |path: &str, digit: char, size: u64| ResolvedFile {
        path: path.into(),
        sha256: digit.to_string().repeat(64),
        size,
    };
    let lock = Lock {
        kernels: vec![
            ResolvedKernel {
                name: "activation".into(),
                repo: "kernels-community/activation".into(),
                requested: Requested::Version(1),
                commit: "0123456789abcdef0123456789abcdef01234567".into(),
                variants: vec![
                    ResolvedVariant {
                        name: "tvm-ffi01-cpu-x86_64-linux".into(),
                        files: vec![file("_activation_cpu_7a4e5a7.so", 'a', 123_456), file("metadata.json", 'b', 789)],
                    },
                    ResolvedVariant {
                        name: "tvm-ffi01-cu130-x86_64-linux".into(),
                        files: vec![
                            file("_activation_cuda_7a4e5a7.so", 'c', 1 << 40),
                            file("layers/__init__.py", 'd', 0),
                        ],
                    },
                ],
            },
            ResolvedKernel {
                name: "rms-norm_2".into(),
                repo: "org/rms.norm".into(),
                requested: Requested::Revision("refs/pr/1".into()),
                commit: "f".repeat(64),
                variants: vec![ResolvedVariant { name: "torch-universal".into(), files: vec![] }],
            },
        ],
        tvm_ffi: Some(RuntimePin {
            file: "libtvm_ffi.so".into(),
            sha256: "e".repeat(64),
            size: 3_141_592,
            source: "apache-tvm-ffi==0.1.15.post2".into(),
        }),
        cuda_runtime: Some(RuntimePin {
            file: "libcudart.so.13".into(),
            sha256: "f".repeat(64),
            size: 745_664,
            source: "nvidia-cuda-runtime==13.0.96".into(),
        }),
    };
    lock.render().into_bytes()
}

#[test]
fn fuzz_lock() {
    let written = written_lock();
    Lock::parse(&String::from_utf8_lossy(&written), Path::new("kernels.lock")).expect("the written seed reads back");
    let target = Target {
        name: "lock",
        seeds: vec![written, doc_example("kernels-build/src/lock.rs")],
        tokens: tokens(&[
            "version = 1",
            "[[kernel]]",
            "[[kernel.variant]]",
            "[tvm-ffi]",
            "name = ",
            "repo = ",
            "requested-version = ",
            "requested-revision = ",
            "commit = ",
            "files = [",
            "{ path = \"a.so\", sha256 = \"0000000000000000000000000000000000000000000000000000000000000000\", size = 1 },",
            "sha256 = ",
            "size = ",
            "source = ",
            "\"tvm-ffi01-cpu-x86_64-linux\"",
            "\"../x\"",
            "\"C:/x\"",
        ]),
        max_len: 16 << 10,
    };
    fuzz::run(&target, check_lock);
}
