//! `cargo kernels explain`: for every layer mapping of `kernels.toml`, where its kernel comes
//! from and what this machine would run, from what is local only (no network).
//!
//! A kernel's variants are those a build for this machine would embed: for a Hub kernel the
//! lock's (their `metadata.json` read from the Hugging Face cache, when downloaded, for the
//! CUDA architectures), for a `path` kernel the `build/<variant>/` directories there (or the
//! CPU variant a kernel crate compiles to). The real selection then runs for each device of
//! the mapping's kind present here; a kind with no device here is said to be absent.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kernels_build::lock::{LOCK_FILE, Lock};
use kernels_build::manifest::{KernelSource, LayerMapping, Manifest};
use kernels_build::target::TargetSpec;
use kernels_runtime::ffi::abi::symbol::FUNCTION_PREFIX;
use kernels_runtime::metadata::Metadata;
use kernels_runtime::platform::Platform;
use kernels_runtime::registry::ModeSupport;
use kernels_runtime::select::{Candidate, Request, select};
use kernels_runtime::variant::BackendKind;
use serde_json::{Value, json};

/// Where a kernel's variants come from, and what is known of each.
struct Source {
    /// JSON description: `{ type: "hub", repo, requested, commit }` or `{ type: "path", path, layout }`.
    value: Value,
    /// One line for the text output.
    text: String,
    /// The variants a build for this machine would embed, with their archs when known.
    candidates: Vec<Candidate>,
    /// Notes: variants not embedded for this target, variants not downloaded, …
    notes: Vec<String>,
    /// Why there is nothing to select from, when there is nothing.
    missing: Option<String>,
    /// The local directory of each variant that has one (a `path` kernel's, or a downloaded
    /// Hub variant's), to check that it exports the mapped function.
    dirs: BTreeMap<String, PathBuf>,
}

/// Prints what every mapping of the manifest at `manifest_path` would do on this machine.
pub(crate) fn run(manifest_path: &Path, json_out: bool) -> Result<(), String> {
    let manifest = crate::read_manifest(manifest_path)?;
    let lock_path = crate::lock_path(manifest_path);
    let lock = Lock::read(&lock_path).map_err(|e| e.to_string())?;
    let stale = lock.as_ref().and_then(|l| Lock::check(&lock_path, Some(l), &manifest).err()).map(|e| e.to_string());
    let triple = crate::host_triple();
    let spec = TargetSpec::new(&triple, manifest.build.backends.as_deref()).map_err(|e| e.to_string())?;
    let platform = Platform::detect();
    let requests = crate::variants::requests(&platform);
    let cache = kernels_runtime::hub_cache::dir();

    let (entries, texts): (Vec<Value>, Vec<String>) = manifest
        .layers
        .iter()
        .map(|mapping| {
            let source = source_of(&manifest, mapping, lock.as_ref(), &lock_path, cache.as_deref(), &spec);
            explain_mapping(&manifest, mapping, &source, &platform, &requests)
        })
        .unzip();
    if json_out {
        let out = json!({
            "manifest": manifest.path.display().to_string(),
            "lock": lock.as_ref().map(|_| lock_path.display().to_string()),
            "lock_stale": stale,
            "platform": platform.to_string(),
            "mappings": entries,
        });
        crate::print_json(&out)?;
        return Ok(());
    }
    println!("{}", platform);
    match (&lock, &stale) {
        (None, _) => println!("no {LOCK_FILE}: Hub kernels are not pinned (run `cargo kernels lock`)"),
        (Some(_), Some(why)) => println!("{why}"),
        (Some(_), None) => println!("{} is up to date", lock_path.display()),
    }
    if texts.is_empty() {
        println!("\n{} maps no layer: add a [layers.<Layer>] table", manifest.path.display());
    }
    for text in &texts {
        println!("\n{text}");
    }
    Ok(())
}

/// The source of the kernel `mapping` names.
fn source_of(
    manifest: &Manifest,
    mapping: &LayerMapping,
    lock: Option<&Lock>,
    lock_path: &Path,
    cache: Option<&Path>,
    spec: &TargetSpec,
) -> Source {
    let Some(decl) = manifest.kernel(&mapping.kernel) else {
        // The manifest's parser guarantees it; say so rather than panic.
        return Source {
            value: Value::Null,
            text: format!("kernel `{}` is not declared", mapping.kernel),
            candidates: Vec::new(),
            notes: Vec::new(),
            missing: Some(format!("[kernels.{}] is not declared", mapping.kernel)),
            dirs: BTreeMap::new(),
        };
    };
    let mut notes = Vec::new();
    let mut keep = |name: &str, notes: &mut Vec<String>| match spec.wants(name) {
        Ok(()) => true,
        Err(why) => {
            notes.push(format!("{name}: not embedded by a build for {}: {why}", spec.triple));
            false
        }
    };
    match &decl.source {
        KernelSource::Hub { repo, requested } => {
            let locked = lock.and_then(|l| l.kernels.iter().find(|k| k.name == decl.name && &k.repo == repo));
            let value = json!({
                "type": "hub",
                "repo": repo,
                "requested": requested.to_string(),
                "commit": locked.map(|k| k.commit.clone()),
            });
            let Some(k) = locked else {
                return Source {
                    value,
                    text: format!("Hub {repo} ({requested}), not in {}", lock_path.display()),
                    candidates: Vec::new(),
                    notes,
                    missing: Some(format!(
                        "not locked: run `cargo kernels lock` (`cargo kernels variants {repo}` lists what the Hub has)"
                    )),
                    dirs: BTreeMap::new(),
                };
            };
            let snapshot = cache.map(|c| kernels_runtime::hub_cache::snapshot(c, repo, &k.commit));
            let mut candidates = Vec::new();
            let mut absent = Vec::new();
            let mut dirs = BTreeMap::new();
            for v in &k.variants {
                if !keep(&v.name, &mut notes) {
                    continue;
                }
                let dir = snapshot.as_ref().map(|s| s.join("build").join(&v.name));
                // Downloaded: every file the lock pins is in the snapshot (the build verifies them).
                let downloaded = dir.as_ref().is_some_and(|d| v.files.iter().all(|f| d.join(&f.path).is_file()));
                match &dir {
                    Some(d) if downloaded => {
                        dirs.insert(v.name.clone(), d.clone());
                    }
                    _ => absent.push(v.name.clone()),
                }
                candidates.push(match dir.as_deref().map(Metadata::read) {
                    Some(Ok(m)) => with_archs(Candidate::new(&v.name), &m),
                    _ => Candidate::new(&v.name),
                });
            }
            if !absent.is_empty() {
                let then = if manifest.build.embed {
                    "a build fetches them too"
                } else {
                    "with [build].embed = false the binary loads them from this cache, and falls back without them"
                };
                notes.push(format!(
                    "not downloaded into {}: {} (run `cargo kernels download`; {then})",
                    cache.map_or_else(|| "the Hugging Face cache".to_owned(), |c| c.display().to_string()),
                    absent.join(", ")
                ));
            }
            Source {
                value,
                text: format!("Hub {repo}@{} ({requested})", k.commit),
                candidates,
                notes,
                missing: None,
                dirs,
            }
        }
        KernelSource::Path(rel) => {
            let dir = manifest.dir().join(rel);
            let dir = dir.canonicalize().unwrap_or(dir);
            let (layout, candidates, missing) = path_variants(&dir, decl.optional, &mut notes, &mut keep);
            let dirs = match layout {
                "hub" => candidates.iter().map(|c| (c.name.clone(), dir.join("build").join(&c.name))).collect(),
                "variant" => candidates.iter().map(|c| (c.name.clone(), dir.clone())).collect(),
                _ => BTreeMap::new(),
            };
            Source {
                value: json!({ "type": "path", "path": dir.display().to_string(), "layout": layout }),
                text: format!("path {} ({layout})", dir.display()),
                candidates,
                notes,
                missing,
                dirs,
            }
        }
    }
}

/// The variants of a `path` kernel: its layout (`hub`, `variant`, `crate` or `missing`), the
/// candidates a build for this machine embeds, and why there are none, when there are none.
fn path_variants(
    dir: &Path,
    optional: bool,
    notes: &mut Vec<String>,
    keep: &mut impl FnMut(&str, &mut Vec<String>) -> bool,
) -> (&'static str, Vec<Candidate>, Option<String>) {
    let candidate = |variant_dir: &Path| {
        let name = kernels_runtime::variant::dir_name(variant_dir);
        match Metadata::read(variant_dir) {
            Ok(m) => with_archs(Candidate::new(name), &m),
            Err(_) => Candidate::new(name),
        }
    };
    if dir.join("build").is_dir() {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(dir.join("build"))
            .map(|rd| rd.filter_map(Result::ok).map(|e| e.path()).filter(|p| p.is_dir()).collect())
            .unwrap_or_default();
        dirs.sort();
        let candidates: Vec<Candidate> = dirs.iter().map(|d| candidate(d)).filter(|c| keep(&c.name, notes)).collect();
        let missing = dirs.is_empty().then(|| format!("{}: no variant directory", dir.join("build").display()));
        return ("hub", candidates, missing);
    }
    if dir.join(kernels_runtime::metadata::METADATA_FILE).is_file() {
        let c = candidate(dir);
        return ("variant", if keep(&c.name, notes) { vec![c] } else { Vec::new() }, None);
    }
    if dir.join("Cargo.toml").is_file() {
        return match kernels_build::local::cpu_variant_for(&crate::host_triple()) {
            Ok(v) => {
                let name = v.to_string();
                notes.push(format!("a kernel crate: the build compiles it as {name}"));
                ("crate", if keep(&name, notes) { vec![Candidate::new(name)] } else { Vec::new() }, None)
            }
            Err(e) => ("crate", Vec::new(), Some(e.to_string())),
        };
    }
    let why = if optional {
        format!("{} is missing (optional: the build embeds nothing for it)", dir.display())
    } else {
        format!("{} is missing: the build fails until it holds the kernel", dir.display())
    };
    ("missing", Vec::new(), Some(why))
}

/// Whether the library of the tvm-ffi variant `variant` in `dir` exports `function` (read from
/// its ELF file, not loaded); `Ok(true)` for other variants, whose functions are ops the
/// library registers when it loads.
fn exports(dir: &Path, variant: &str, function: &str) -> Result<bool, String> {
    if !variant.starts_with("tvm-ffi") {
        return Ok(true);
    }
    let named = Metadata::read(dir)
        .ok()
        .and_then(|m| m.library_file_of(variant, &kernels_runtime::variant::Os::current()))
        .map(|f| dir.join(f))
        .filter(|p| p.is_file());
    let lib = match named {
        Some(lib) => lib,
        None => {
            let mut libs: Vec<PathBuf> = std::fs::read_dir(dir)
                .map_err(|e| format!("{}: {e}", dir.display()))?
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "so"))
                .collect();
            libs.sort();
            libs.into_iter().next().ok_or_else(|| format!("{}: no library (*.so)", dir.display()))?
        }
    };
    let symbols = kernels_runtime::ffi::dynamic_symbols(&lib).map_err(|e| format!("{}: {e}", lib.display()))?;
    let wanted = format!("{FUNCTION_PREFIX}{function}");
    Ok(symbols.defined_functions().any(|f| f == wanted))
}

/// `candidate` with the `backend.archs` of its `metadata.json`.
fn with_archs(candidate: Candidate, metadata: &Metadata) -> Candidate {
    match &metadata.backend {
        Some(b) => candidate.with_archs(b.archs.iter().cloned()),
        None => candidate,
    }
}

/// One mapping, explained: its JSON object and its text.
fn explain_mapping(
    manifest: &Manifest,
    m: &LayerMapping,
    source: &Source,
    platform: &Platform,
    requests: &[Request],
) -> (Value, String) {
    let mode = match m.mode {
        ModeSupport::Inference => "inference",
        ModeSupport::Training => "training",
    };
    let capability = m.capability.as_ref().map(ToString::to_string);
    let location = format!("{}:{}", manifest.path.display(), m.location);
    let mut text = format!(
        "{} on {}: {}::{} ({mode}{}{})  [{location}, {}]\n  source: {}",
        m.layer,
        m.device,
        m.kernel,
        m.function,
        capability.as_ref().map(|c| format!(", capability {c}")).unwrap_or_default(),
        if m.deterministic { ", deterministic" } else { "" },
        m.key,
        source.text,
    );
    for note in &source.notes {
        text.push_str(&format!("\n  note: {note}"));
    }
    let here: Vec<Request> = requests.iter().copied().filter(|r| r.backend == m.device).collect();
    let mut decisions = Vec::new();
    let absent = here.is_empty().then(|| {
        format!(
            "no {} device on this machine: this mapping is not used here (a layer whose tensors are on \
             another device uses that device's mapping, else its Rust forward)",
            m.device
        )
    });
    if let Some(why) = &absent {
        text.push_str(&format!("\n  here: {why}"));
    }
    for request in here {
        let device = match request.backend {
            BackendKind::Cpu => "cpu".to_owned(),
            kind => format!("{kind}:{}", request.device),
        };
        // A CUDA mapping serves only the GPUs its capability range holds.
        let gpu = (request.backend == BackendKind::Cuda)
            .then(|| platform.cuda.present())
            .flatten()
            .and_then(|c| c.devices.iter().find(|d| d.ordinal == request.device));
        let out_of_range = match (&m.capability, gpu) {
            (Some(range), Some(d)) if !range.contains(d.capability) => {
                Some(format!("{device} has compute capability {}, outside this mapping's {range}", d.capability))
            }
            _ => None,
        };
        // (the variant selected, whether the kernel runs, what happens, the trace)
        let (chosen, runs, outcome, trace) = if let Some(why) = source.missing.clone() {
            (None, false, format!("falls back to the Rust forward: {why}"), None)
        } else if let Some(why) = out_of_range {
            (None, false, format!("falls back to the Rust forward (unless another mapping serves it): {why}"), None)
        } else {
            let trace = select(platform, request, &source.candidates).trace;
            let chosen = trace.chosen().map(str::to_owned);
            let (runs, outcome) = match &chosen {
                Some(v) => match source.dirs.get(v).map(|d| (d, exports(d, v, &m.function))) {
                    Some((dir, Ok(false))) => (
                        false,
                        format!(
                            "falls back to the Rust forward: {v} does not export `{FUNCTION_PREFIX}{}`; check \
                             `function` against `cargo kernels describe {}`",
                            m.function,
                            dir.display()
                        ),
                    ),
                    Some((_, Err(why))) => (
                        true,
                        format!("runs {}::{} from {v} (its exports were not checked: {why})", m.kernel, m.function),
                    ),
                    Some((_, Ok(true))) | None => (true, format!("runs {}::{} from {v}", m.kernel, m.function)),
                },
                None if source.candidates.is_empty() => {
                    (false, "falls back to the Rust forward: no variant of the kernel for this machine".to_owned())
                }
                None => (false, "falls back to the Rust forward: no usable variant (the trace says why)".to_owned()),
            };
            (chosen, runs, outcome, Some(trace.to_string()))
        };
        text.push_str(&format!("\n  here, {device}: {outcome}"));
        if let Some(t) = &trace {
            for line in t.lines() {
                text.push_str(&format!("\n    {line}"));
            }
        }
        decisions.push(
            json!({ "device": device, "chosen": chosen, "runs_kernel": runs, "outcome": outcome, "trace": trace }),
        );
    }
    let value = json!({
        "layer": m.layer,
        "device": m.device.as_str(),
        "key": m.key,
        "location": location,
        "kernel": m.kernel,
        "function": m.function,
        "capability": capability,
        "mode": mode,
        "deterministic": m.deterministic,
        "source": source.value,
        "variants": source.candidates.iter().map(|c| c.name.clone()).collect::<Vec<_>>(),
        "notes": source.notes,
        "present": absent.is_none(),
        "absent": absent,
        "decisions": decisions,
    });
    (value, text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tiny_elf::{Hash, Sym, TinyElf};

    #[test]
    fn exports_reads_the_library_of_a_tvm_ffi_variant() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = TinyElf::new(true, true).symbols(&[Sym::func("__tvm_ffi_silu_and_mul")], Hash::Gnu).build().bytes;
        std::fs::write(dir.path().join("_ops_abc1234.so"), bytes).unwrap();
        let variant = "tvm-ffi01-cpu-x86_64-linux";
        assert_eq!(exports(dir.path(), variant, "silu_and_mul"), Ok(true));
        assert_eq!(exports(dir.path(), variant, "rms_norm"), Ok(false));
        // Ops of other variants are registered at load: not checked.
        assert_eq!(exports(dir.path(), "torch-stable-abi211-cpu-x86_64-linux", "rms_norm"), Ok(true));
        std::fs::write(dir.path().join("_ops_abc1234.so"), b"not elf").unwrap();
        assert!(exports(dir.path(), variant, "silu_and_mul").is_err());
        let empty = tempfile::tempdir().unwrap();
        assert!(exports(empty.path(), variant, "silu_and_mul").unwrap_err().contains("no library"));
    }
}
