//! The build, stage by stage: read `kernels.toml` and `kernels.lock`, check the lock (relock
//! in memory when it is stale and the build may), fetch and verify what the target runs,
//! build `path` kernels, and write the registry.

use std::path::{Path, PathBuf};

use kernels_runtime::env::{CUDART_LIB, LOCKED, TVM_FFI_LIB};
use kernels_runtime::ffi::{TVM_FFI_LIBRARY, locate_tvm_ffi, needs_tvm_ffi};

use crate::BuildError;
use crate::codegen::{self, GenCachedVariant, GenKernel, GenLayer, GenRegistry, GenRuntimeLib, GenVariant};
use crate::cuda_runtime;
use crate::env::{CargoOutput, Env};
use crate::hub::{Hub, HubSettings};
use crate::local;
use crate::lock::{LOCK_COMMAND, LOCK_FILE, Lock, RuntimePin};
use crate::manifest::{KernelSource, MANIFEST_FILE, Manifest};
use crate::resolve;
use crate::target::TargetSpec;
use crate::verify;

/// What the [`Builder`](crate::Builder) was given; `None` reads the environment.
#[derive(Debug, Default)]
pub(crate) struct Inputs {
    pub(crate) manifest_dir: Option<PathBuf>,
    pub(crate) out_dir: Option<PathBuf>,
    pub(crate) target: Option<String>,
    pub(crate) hub: Option<HubSettings>,
    pub(crate) locked: Option<bool>,
}

/// What a build wrote.
pub(crate) struct Outputs {
    pub(crate) registry: PathBuf,
    pub(crate) generated: GenRegistry,
    pub(crate) proposed_lock: Option<PathBuf>,
}

fn required(given: Option<PathBuf>, env: &Env, key: &'static str) -> Result<PathBuf, BuildError> {
    given.or_else(|| env.path(key)).ok_or(BuildError::MissingEnv(key))
}

pub(crate) fn run(env: &Env, inputs: Inputs, out: &mut CargoOutput) -> Result<Outputs, BuildError> {
    let Inputs { manifest_dir, out_dir, target, hub, locked } = inputs;
    let manifest_dir = required(manifest_dir, env, "CARGO_MANIFEST_DIR")?;
    let out_dir = required(out_dir, env, "OUT_DIR")?;
    let target = target.or_else(|| env.var("TARGET")).ok_or(BuildError::MissingEnv("TARGET"))?;
    let kernels_dir = out_dir.join("kernels");

    let manifest_path = manifest_dir.join(MANIFEST_FILE);
    out.rerun_if_changed(&manifest_path);
    let manifest = Manifest::from_path(&manifest_path).map_err(BuildError::Manifest)?;
    let lock_path = manifest_dir.join(LOCK_FILE);
    out.rerun_if_changed(&lock_path);
    let lock = Lock::read(&lock_path)?;
    let spec = TargetSpec::new(&target, manifest.build.backends.as_deref())?;
    let hub_settings = hub.unwrap_or_else(|| HubSettings::from_env(env));
    let mut hub = Hub::new(hub_settings);

    // Hub kernels: pinned by the lock, or resolved now and proposed.
    let mut pins = lock.clone().unwrap_or_default();
    let mut proposed_lock = None;
    let locked_by = if locked == Some(true) {
        Some(" (the build was told to stay locked)".to_owned())
    } else if locked.is_none() && env.flag(LOCKED) {
        Some(format!(" ({LOCKED} is set)"))
    } else {
        None
    };
    if let Err(stale) = Lock::check(&lock_path, lock.as_ref(), &manifest) {
        if let Some(why) = &locked_by {
            return Err(BuildError::Locked { stale, why: why.clone() });
        }
        pins = resolve::relock(&manifest, lock.as_ref(), &mut hub, false, |_| {})
            .map_err(|e| BuildError::Resolve { name: e.name, source: e.source })?;
        let proposed = kernels_dir.join(LOCK_FILE);
        codegen::write_if_changed(&proposed, pins.render().as_bytes())
            .map_err(|source| BuildError::Io { path: proposed.clone(), source })?;
        out.warning(&format!(
            "{} is {}; resolved against the Hub for this build. Run `{LOCK_COMMAND}` in {} to pin it (proposed lock: {})",
            lock_path.display(),
            stale.state(),
            manifest_dir.display(),
            proposed.display()
        ));
        proposed_lock = Some(proposed);
    }

    let mut generated = GenRegistry::default();
    for decl in manifest.kernels.values() {
        let kernel = match &decl.source {
            KernelSource::Hub { repo, .. } => {
                let pinned = pins.kernel(&decl.name).expect("every Hub kernel is pinned by now");
                let mut variants = Vec::new();
                let mut cached = Vec::new();
                for variant in pinned.variants.iter().filter(|v| spec.wants(&v.name).is_ok()) {
                    let variant_err = |source| BuildError::Variant {
                        name: decl.name.clone(),
                        variant: variant.name.clone(),
                        source: Box::new(source),
                    };
                    let fetched = verify::hub_variant(&mut hub, repo, &pinned.commit, variant, &spec.os);
                    for note in hub.take_notes() {
                        out.warning(&note);
                    }
                    let fetched = fetched.map_err(variant_err)?;
                    let archs = fetched.metadata.backend.map(|b| b.archs).unwrap_or_default();
                    if !manifest.build.embed {
                        // Loaded from the Hub cache at run time, checked against these pins.
                        let (library, metadata) = fetched.pins;
                        cached.push(GenCachedVariant { variant: variant.name.clone(), archs, library, metadata });
                        continue;
                    }
                    let library = fetched.dir.join(&fetched.library_file);
                    let needs_tvm_ffi = needs_tvm_ffi(&library).unwrap_or(false);
                    let cuda_runtime = cuda_runtime::needed_cuda_runtime(&library).ok().flatten();
                    variants.push(GenVariant {
                        variant: variant.name.clone(),
                        archs,
                        library_file: fetched.library_file,
                        bytes: fetched.library,
                        needs_tvm_ffi,
                        cuda_runtime,
                    });
                }
                GenKernel {
                    name: decl.name.clone(),
                    repo: repo.clone(),
                    commit: Some(pinned.commit.clone()),
                    variants,
                    cached,
                }
            }
            KernelSource::Path(rel) => {
                let variants = if decl.optional && !is_kernel_dir(&manifest_dir.join(rel)) {
                    out.warning(&missing_optional(&manifest, &decl.name, rel, &manifest_dir));
                    Vec::new()
                } else {
                    local_variants(&decl.name, rel, &manifest_dir, &kernels_dir, &spec, env, out)?
                };
                GenKernel {
                    name: decl.name.clone(),
                    repo: rel.to_string_lossy().into_owned(),
                    commit: None,
                    variants,
                    cached: Vec::new(),
                }
            }
        };
        generated.kernels.push(kernel);
    }
    if !manifest.build.embed {
        // Prefetch only: Hub variants are verified in the Hub cache and listed with their pins
        // (above); nothing is embedded.
        for k in &mut generated.kernels {
            k.variants.clear();
        }
    }
    generated.layers = manifest
        .layers
        .iter()
        .map(|l| GenLayer {
            layer: l.layer.clone(),
            device: l.device,
            kernel: l.kernel.clone(),
            function: l.function.clone(),
            capability: l.capability,
            mode: l.mode,
            deterministic: l.deterministic,
            tolerance: l.tolerance,
        })
        .collect();
    generated.tvm_ffi = runtime_library(&generated, env, pins.tvm_ffi.as_ref(), locked_by.as_deref(), out)?;
    generated.cuda_runtime =
        cuda_runtime_library(&generated, env, pins.cuda_runtime.as_ref(), locked_by.as_deref(), out)?;

    let registry = codegen::write(&kernels_dir, &generated)
        .map_err(|source| BuildError::Io { path: kernels_dir.join("registry.rs"), source })?;
    Ok(Outputs { registry, generated, proposed_lock })
}

/// Whether `dir` holds a kernel (`local::classify` accepts it).
fn is_kernel_dir(dir: &Path) -> bool {
    local::classify(dir).is_ok()
}

/// The warning for an `optional = true` kernel whose directory is missing: what falls back.
fn missing_optional(manifest: &Manifest, name: &str, rel: &Path, manifest_dir: &Path) -> String {
    let layers: Vec<String> =
        manifest.layers.iter().filter(|l| l.kernel == name).map(|l| format!("{} ({})", l.layer, l.device)).collect();
    let layers = if layers.is_empty() { "no layer".to_owned() } else { layers.join(", ") };
    format!(
        "optional kernel `{name}`: {} is not a kernel directory (yet), so nothing is embedded for it and {layers} \
         will use the Rust forward; once it is built, touch {} to embed it",
        manifest_dir.join(rel).display(),
        manifest.path.display()
    )
}

fn local_variants(
    name: &str,
    rel: &Path,
    manifest_dir: &Path,
    kernels_dir: &Path,
    spec: &TargetSpec,
    env: &Env,
    out: &mut CargoOutput,
) -> Result<Vec<GenVariant>, BuildError> {
    let dir = manifest_dir.join(rel);
    let local_err = |source| BuildError::Local { name: name.to_owned(), path: dir.clone(), source: Box::new(source) };
    let root = match local::classify(&dir).map_err(local_err)? {
        local::LocalKind::Crate(crate_dir) => {
            let lib = local::build_crate_for_embedding(&crate_dir, &spec.triple, &kernels_dir.join("crates"), env, out)
                .map_err(local_err)?;
            let variant = local::cpu_variant_for(&spec.triple).map_err(local_err)?;
            let root = kernels_dir.join("local").join(name);
            local::lay_out(&lib, name, "Apache-2.0", &variant, &root).map_err(local_err)?;
            root
        }
        local::LocalKind::HubLayout(root) => {
            out.rerun_if_changed(&root.join("build"));
            root
        }
        local::LocalKind::Variant(one) => {
            out.rerun_if_changed(&one);
            one
        }
    };
    let dirs = kernels_runtime::loader::variant_dirs(&root).map_err(|e| {
        local_err(local::LocalError::Io { path: root.clone(), source: std::io::Error::other(e.to_string()) })
    })?;
    let mut variants = Vec::new();
    for vdir in dirs {
        let variant = kernels_runtime::variant::dir_name(&vdir);
        if spec.wants(&variant).is_err() {
            continue;
        }
        // Embedded are the bytes checked against the digest, read once.
        let verified = verify::local_variant(&vdir, &spec.os).map_err(|e| local_err(local::LocalError::Verify(e)))?;
        let archs = verified.metadata.backend.map(|b| b.archs).unwrap_or_default();
        let library = vdir.join(&verified.library_file);
        let needs_tvm_ffi = needs_tvm_ffi(&library).unwrap_or(false);
        let cuda_runtime = cuda_runtime::needed_cuda_runtime(&library).ok().flatten();
        variants.push(GenVariant {
            variant,
            archs,
            library_file: verified.library_file,
            bytes: verified.library,
            needs_tvm_ffi,
            cuda_runtime,
        });
    }
    Ok(variants)
}

/// `libtvm_ffi.so` to embed, when an embedded variant needs it: `KERNELS_TVM_FFI_LIB`, else
/// `tvm-ffi-config --libdir`. Without one the runtime looks for it on the machine it runs on;
/// the build says so. One that differs from the lock's `[tvm-ffi]` pin is embedded with a
/// warning, or refused when the build is locked (`locked_by` says why).
fn runtime_library(
    generated: &GenRegistry,
    env: &Env,
    pin: Option<&RuntimePin>,
    locked_by: Option<&str>,
    out: &mut CargoOutput,
) -> Result<Option<GenRuntimeLib>, BuildError> {
    if !generated.kernels.iter().flat_map(|k| &k.variants).any(|v| v.needs_tvm_ffi) {
        return Ok(None);
    }
    let located = match env.path(TVM_FFI_LIB) {
        Some(p) if p.is_dir() => Some(p.join(TVM_FFI_LIBRARY)),
        Some(p) => Some(p),
        None => locate_tvm_ffi().ok(),
    };
    let Some(path) = located.filter(|p| p.is_file()) else {
        if let Some(why) = locked_by {
            let kernels: Vec<String> = generated
                .kernels
                .iter()
                .flat_map(|k| k.variants.iter().filter(|v| v.needs_tvm_ffi).map(move |v| (k, v)))
                .map(|(k, v)| format!("kernel `{}` ({})", k.name, v.variant))
                .collect();
            let wanted = pin.map_or_else(|| "the apache-tvm-ffi wheel".to_owned(), |p| p.source.clone());
            return Err(BuildError::TvmFfiMissing { kernels: kernels.join(", "), wanted, why: why.to_owned() });
        }
        out.warning(&format!(
            "an embedded kernel needs libtvm_ffi.so and none was found at build time (set {TVM_FFI_LIB} or install apache-tvm-ffi); the binary will look for it where it runs"
        ));
        return Ok(None);
    };
    out.rerun_if_changed(&path);
    let bytes = std::fs::read(&path).map_err(|source| BuildError::Io { path: path.clone(), source })?;
    if let Some(pin) = pin {
        let sha = kernels_runtime::digest::sha256_hex(&bytes);
        if sha != pin.sha256
            && let Some(why) = locked_by
        {
            return Err(BuildError::TvmFfiPin {
                path,
                found: sha,
                pinned: pin.sha256.clone(),
                source_name: pin.source.clone(),
                why: why.to_owned(),
            });
        }
        if sha != pin.sha256 {
            out.warning(&format!(
                "{} (sha256 {sha}) differs from the libtvm_ffi.so pinned in kernels.lock ({}, {}); embedding the local one",
                path.display(),
                pin.source,
                pin.sha256
            ));
        }
    }
    Ok(Some(GenRuntimeLib { file: TVM_FFI_LIBRARY.to_owned(), bytes }))
}

/// The CUDA runtime to embed, when an embedded variant lists `libcudart.so.<major>` in
/// `DT_NEEDED`: that soname, found as [`cuda_runtime::locate`] says. When variants need several
/// majors, the one the lock's `[cuda-runtime]` pins is embedded, else the newest, and the
/// binary loads the others from the machine it runs on. Without one the runtime looks for it
/// there; the build says so, or fails when locked. One that differs from the pin is embedded
/// with a warning, or refused when the build is locked (`locked_by` says why).
fn cuda_runtime_library(
    generated: &GenRegistry,
    env: &Env,
    pin: Option<&RuntimePin>,
    locked_by: Option<&str>,
    out: &mut CargoOutput,
) -> Result<Option<GenRuntimeLib>, BuildError> {
    let mut needed: Vec<&str> =
        generated.kernels.iter().flat_map(|k| &k.variants).filter_map(|v| v.cuda_runtime.as_deref()).collect();
    needed.sort_by_key(|soname| cuda_runtime::major(soname));
    needed.dedup();
    let pinned = pin.and_then(|p| needed.iter().copied().find(|s| *s == p.file));
    let Some(soname) = pinned.or_else(|| needed.last().copied()) else {
        return Ok(None);
    };
    let major = cuda_runtime::major(soname).map(|m| m.to_string()).unwrap_or_default();
    let others: Vec<&str> = needed.iter().copied().filter(|s| *s != soname).collect();
    if !others.is_empty() {
        out.warning(&format!(
            "embedded kernels need {} too; only {soname} is embedded, the binary loads the others from the machine it runs on",
            others.join(", ")
        ));
    }
    let Some(path) = cuda_runtime::locate(env, soname) else {
        if let Some(why) = locked_by {
            let kernels: Vec<String> = generated
                .kernels
                .iter()
                .flat_map(|k| {
                    k.variants.iter().filter(|v| v.cuda_runtime.as_deref() == Some(soname)).map(move |v| (k, v))
                })
                .map(|(k, v)| format!("kernel `{}` ({})", k.name, v.variant))
                .collect();
            return Err(BuildError::CudaRuntimeMissing {
                kernels: kernels.join(", "),
                soname: soname.to_owned(),
                pinned: pin.filter(|p| p.file == soname).map(|p| p.source.clone()),
                why: why.to_owned(),
            });
        }
        let install = kernels_runtime::cuda_runtime::wheel(&major);
        out.warning(&format!(
            "an embedded kernel needs {soname} and none was found at build time (set {CUDART_LIB} or CUDA_HOME, or `pip install {install}`); the binary will look for it where it runs"
        ));
        return Ok(None);
    };
    out.rerun_if_changed(&path);
    // `read` follows a symlink (`libcudart.so.13` -> `libcudart.so.13.0.96`) to the library.
    let bytes = std::fs::read(&path).map_err(|source| BuildError::Io { path: path.clone(), source })?;
    if let Some(pin) = pin {
        let sha = kernels_runtime::digest::sha256_hex(&bytes);
        if sha != pin.sha256
            && let Some(why) = locked_by
        {
            return Err(BuildError::CudaRuntimePin {
                path,
                found: sha,
                pin: Box::new(pin.clone()),
                why: why.to_owned(),
            });
        }
        if sha != pin.sha256 {
            out.warning(&format!(
                "{} (sha256 {sha}) differs from the CUDA runtime pinned in kernels.lock ({}, {}, {}); embedding the local one",
                path.display(),
                pin.file,
                pin.source,
                pin.sha256
            ));
        }
    }
    Ok(Some(GenRuntimeLib { file: soname.to_owned(), bytes }))
}

#[cfg(test)]
#[path = "../../kernels-runtime/tests/support/tiny_elf.rs"]
mod tiny_elf;

#[cfg(test)]
mod tests {
    use kernels_runtime::env::{CUDART_LIB, LOCKED, TVM_FFI_LIB};

    use crate::env::Env;
    use crate::hub::HubSettings;
    use crate::lock::Lock;
    use crate::{BuildError, BuildReport, Builder};

    /// A lock pinning `act`, which `kernels.toml` (no kernels at all) no longer declares.
    const LOCK: &str = "version = 1\n\n[[kernel]]\nname = \"act\"\nrepo = \"org/act\"\nrequested-version = 1\n\
                        commit = \"0123456789abcdef0123456789abcdef01234567\"\n";

    fn build(dir: &std::path::Path, env: &[(&str, &str)], locked: Option<bool>) -> Result<BuildReport, BuildError> {
        let hub = HubSettings {
            endpoint: "http://127.0.0.1:9".into(),
            cache_dir: dir.join("hub"),
            token: None,
            offline: true,
        };
        let mut builder = Builder::new()
            .env(Env::fixed(env.iter().copied()))
            .manifest_dir(dir)
            .out_dir(dir.join("out"))
            .target("x86_64-unknown-linux-gnu")
            .hub(hub);
        if let Some(locked) = locked {
            builder = builder.locked(locked);
        }
        builder.run()
    }

    /// What `kernels_build::build().unwrap()` prints in a build script's panic message.
    #[allow(clippy::unnecessary_literal_unwrap, reason = "the unwrap of an error is what is shown")]
    fn unwrap_message(err: BuildError) -> String {
        let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| Err::<(), _>(err).unwrap())).unwrap_err();
        panic.downcast_ref::<String>().cloned().expect("unwrap panics with a formatted message")
    }

    #[test]
    fn unwrap_prints_the_rendered_message() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("kernels.toml"), "[kernels.a]\nreop = \"org/a\"\nversion = 1\n").unwrap();
        let err = build(dir.path(), &[], None).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("kernels.toml:2:1") && text.contains("did you mean `repo`?"), "{text}");
        assert_eq!(format!("{err:?}"), text);
        assert_eq!(unwrap_message(err), format!("called `Result::unwrap()` on an `Err` value: {text}"));

        std::fs::write(dir.path().join("kernels.toml"), "").unwrap();
        std::fs::write(dir.path().join("kernels.lock"), LOCK).unwrap();
        let err = build(dir.path(), &[(LOCKED, "1")], None).unwrap_err();
        let shown = unwrap_message(err);
        assert!(shown.contains("cargo kernels lock") && !shown.contains("Locked {"), "{shown}");
    }

    /// A Hub kernel pinned by kernels.lock and already in the Hub cache builds without any
    /// network call, with or without the `hub` feature; without it, a file missing from the
    /// cache is an error naming the fix.
    #[test]
    fn a_locked_hub_kernel_in_the_cache_builds_without_the_network() {
        use crate::lock::{ResolvedFile, ResolvedKernel, ResolvedVariant};
        use crate::manifest::Requested;
        use kernels_runtime::digest::sha256_hex;

        let dir = tempfile::tempdir().unwrap();
        let (repo, commit, variant) =
            ("org/ops", "0123456789abcdef0123456789abcdef01234567", "tvm-ffi01-cpu-x86_64-linux");
        let lib = dir.path().join("ops.so");
        std::fs::write(&lib, super::tiny_elf::tiny_elf(true, true, &["libc.so.6"])).unwrap();
        let name = kernels_runtime::variant::VariantName::parse(variant).unwrap();
        let laid_out = crate::local::lay_out(&lib, "ops", "Apache-2.0", &name, &dir.path().join("src")).unwrap();
        // Into the Hub cache, as a download leaves it, and pinned by the lock.
        let hub = crate::hub::Hub::new(HubSettings {
            endpoint: "http://127.0.0.1:9".into(),
            cache_dir: dir.path().join("hub"),
            token: None,
            offline: false,
        });
        let mut files = Vec::new();
        for entry in std::fs::read_dir(&laid_out).unwrap() {
            let entry = entry.unwrap();
            let rel = entry.file_name().into_string().unwrap();
            let bytes = std::fs::read(entry.path()).unwrap();
            let cached = hub.cache_path(repo, commit, &format!("build/{variant}/{rel}"));
            std::fs::create_dir_all(cached.parent().unwrap()).unwrap();
            std::fs::write(&cached, &bytes).unwrap();
            files.push(ResolvedFile { path: rel, sha256: sha256_hex(&bytes), size: bytes.len() as u64 });
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        let lock = Lock {
            kernels: vec![ResolvedKernel {
                name: "ops".into(),
                repo: repo.into(),
                requested: Requested::Version(1),
                commit: commit.into(),
                variants: vec![ResolvedVariant { name: variant.into(), files }],
            }],
            ..Lock::default()
        };
        std::fs::write(dir.path().join("kernels.lock"), lock.render()).unwrap();
        std::fs::write(
            dir.path().join("kernels.toml"),
            format!("[kernels.ops]\nrepo = \"{repo}\"\nversion = 1\n\n[layers.RMSNorm]\ncpu = {{ kernel = \"ops\", function = \"rms_norm\" }}\n"),
        )
        .unwrap();
        let online = |dir: &std::path::Path| {
            Builder::new()
                .env(Env::fixed([(LOCKED, "1")]))
                .manifest_dir(dir)
                .out_dir(dir.join("out"))
                .target("x86_64-unknown-linux-gnu")
                .hub(hub.settings().clone())
                .run()
        };
        let report = online(dir.path()).unwrap();
        assert!(report.registry.exists() && report.proposed_lock.is_none(), "{report:?}");

        // Without the network side, a file the cache lacks cannot be had.
        #[cfg(not(feature = "hub"))]
        {
            let cached = hub.cache_path(repo, commit, &format!("build/{variant}/metadata.json"));
            std::fs::remove_file(&cached).unwrap();
            let err = online(dir.path()).unwrap_err();
            let text = err.to_string();
            assert!(
                text.contains(&format!("{repo}@{commit}: downloading build/{variant}/metadata.json"))
                    && text.contains("enable kernels-build's \"hub\" feature, or run `cargo kernels download`"),
                "{text}"
            );
        }
    }

    #[test]
    fn a_locked_build_refuses_to_embed_a_tvm_ffi_kernel_without_the_runtime() {
        // A path kernel whose library needs libtvm_ffi.so, laid out as the Hub does.
        let dir = tempfile::tempdir().unwrap();
        let lib = dir.path().join("ops.so");
        std::fs::write(&lib, super::tiny_elf::tiny_elf(true, true, &["libtvm_ffi.so", "libc.so.6"])).unwrap();
        let variant = kernels_runtime::variant::VariantName::parse("tvm-ffi01-cpu-x86_64-linux").unwrap();
        crate::local::lay_out(&lib, "cpp-ops", "Apache-2.0", &variant, &dir.path().join("cpp")).unwrap();
        std::fs::write(
            dir.path().join("kernels.toml"),
            "[kernels.cpp-ops]\npath = \"cpp\"\n\n[layers.RMSNorm]\ncpu = { kernel = \"cpp-ops\", function = \"rms_norm\" }\n",
        )
        .unwrap();
        let nowhere = dir.path().join("no/libtvm_ffi.so");
        let env = [(TVM_FFI_LIB, nowhere.to_str().unwrap())];

        // Not locked: a warning, and the binary looks for it where it runs.
        let report = build(dir.path(), &env, None).unwrap();
        assert!(report.generated.tvm_ffi.is_none());
        assert!(report.cargo.lines().iter().any(|l| l.contains("needs libtvm_ffi.so and none was found")));

        // Locked: an error naming the kernel, the variant and what to do.
        let err = build(dir.path(), &[env[0], (LOCKED, "1")], None).unwrap_err();
        assert!(matches!(err, BuildError::TvmFfiMissing { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.starts_with("kernel `cpp-ops` (tvm-ffi01-cpu-x86_64-linux) needs libtvm_ffi.so")
                && text.contains("the build is locked")
                && text.contains("set KERNELS_TVM_FFI_LIB"),
            "{text}"
        );
    }

    /// CUDA variants whose library may link the CUDA runtime dynamically. Only those the target
    /// embeds are built: the runtime does not load CUDA torch stable-ABI variants yet, so the
    /// build does not embed them.
    const CUDA_VARIANTS: [&str; 2] = ["torch-stable-abi211-cu130-x86_64-linux", "tvm-ffi01-cu130-x86_64-linux"];

    /// The [`CUDA_VARIANTS`] an `x86_64-unknown-linux-gnu` build embeds.
    fn embedded_cuda_variants() -> Vec<&'static str> {
        let spec = crate::target::TargetSpec::new("x86_64-unknown-linux-gnu", None).unwrap();
        let variants: Vec<&str> = CUDA_VARIANTS.into_iter().filter(|v| spec.wants(v).is_ok()).collect();
        assert!(!variants.is_empty(), "no CUDA variant is embedded");
        variants
    }

    /// A path kernel `cuda-ops` of one `variant`, laid out as the Hub does, whose library links
    /// `libcudart.so.13`, and a stand-in for that runtime in a toolkit's `lib64/`, returned.
    fn cuda_kernel(dir: &std::path::Path, variant: &str) -> std::path::PathBuf {
        let lib = dir.join("ops.so");
        let needed: &[&str] = if variant.starts_with("torch-stable-abi") {
            &["libtorch.so", "libcudart.so.13", "libc.so.6"]
        } else {
            &["libcudart.so.13", "libc.so.6"]
        };
        std::fs::write(&lib, super::tiny_elf::tiny_elf(true, true, needed)).unwrap();
        let variant = kernels_runtime::variant::VariantName::parse(variant).unwrap();
        let _ = std::fs::remove_dir_all(dir.join("cuda"));
        crate::local::lay_out(&lib, "cuda-ops", "Apache-2.0", &variant, &dir.join("cuda")).unwrap();
        std::fs::write(
            dir.join("kernels.toml"),
            "[kernels.cuda-ops]\npath = \"cuda\"\n\n[layers.RMSNorm]\ncuda = { kernel = \"cuda-ops\", function = \"rms_norm\" }\n",
        )
        .unwrap();
        let runtime = dir.join("toolkit/lib64/libcudart.so.13.0.96");
        std::fs::create_dir_all(runtime.parent().unwrap()).unwrap();
        std::fs::write(&runtime, b"the CUDA runtime").unwrap();
        runtime
    }

    #[test]
    fn a_kernel_linking_the_cuda_runtime_embeds_it_under_its_soname() {
        for variant in embedded_cuda_variants() {
            let dir = tempfile::tempdir().unwrap();
            let runtime = cuda_kernel(dir.path(), variant);
            // A symlink named by the soname, as a toolkit has: followed, embedded under the soname.
            let link = dir.path().join("toolkit/lib64/libcudart.so.13");
            std::os::unix::fs::symlink(&runtime, &link).unwrap();
            for given in [&runtime, &link, &dir.path().join("toolkit/lib64")] {
                let env = [(CUDART_LIB, given.to_str().unwrap()), (LOCKED, "1")];
                let report = build(dir.path(), &env, None).unwrap();
                let embedded = report.generated.cuda_runtime.expect("the CUDA runtime is embedded");
                assert_eq!(embedded.file, "libcudart.so.13", "{variant}: {}", given.display());
                assert_eq!(embedded.bytes, b"the CUDA runtime");
                assert_eq!(report.generated.kernels[0].variants[0].cuda_runtime.as_deref(), Some("libcudart.so.13"));
                let registry = std::fs::read_to_string(&report.registry).unwrap();
                let sha = kernels_runtime::digest::sha256_hex(b"the CUDA runtime");
                let expected = format!(
                    "    cuda_runtime: ::core::option::Option::Some(::kernels_runtime::registry::EmbeddedFile {{\n        \
                     path: \"libcudart.so.13\",\n        sha256: \"{sha}\",\n"
                );
                assert!(registry.contains(&expected), "{registry}");
                assert!(dir.path().join(format!("out/kernels/blobs/{sha}.13")).is_file());
                assert!(report.cargo.lines().contains(&format!("cargo:rerun-if-env-changed={CUDART_LIB}")));
            }

            // A lock pinning another one: a warning, or an error when locked.
            let pinned = "version = 1\n\n[cuda-runtime]\nfile = \"libcudart.so.13\"\n\
                          sha256 = \"0000000000000000000000000000000000000000000000000000000000000000\"\n\
                          size = 3\nsource = \"nvidia-cuda-runtime==13.0.96\"\n";
            std::fs::write(dir.path().join("kernels.lock"), pinned).unwrap();
            let env = [(CUDART_LIB, runtime.to_str().unwrap())];
            let report = build(dir.path(), &env, None).unwrap();
            assert!(report.generated.cuda_runtime.is_some());
            assert!(
                report.cargo.lines().iter().any(|l| l.contains("differs from the CUDA runtime pinned in kernels.lock"))
            );
            let err = build(dir.path(), &[env[0], (LOCKED, "1")], None).unwrap_err();
            assert!(matches!(err, BuildError::CudaRuntimePin { .. }), "{err}");
            let text = err.to_string();
            assert!(
                text.contains("nvidia-cuda-runtime==13.0.96")
                    && text.contains("point KERNELS_CUDART_LIB at the pinned"),
                "{text}"
            );
        }
    }

    #[test]
    fn a_locked_build_refuses_to_embed_a_cuda_runtime_kernel_without_the_runtime() {
        for variant in embedded_cuda_variants() {
            let dir = tempfile::tempdir().unwrap();
            cuda_kernel(dir.path(), variant);
            let nowhere = dir.path().join("no/libcudart.so.13");
            let env = [(CUDART_LIB, nowhere.to_str().unwrap())];

            // Not locked: a warning, and the binary looks for it where it runs.
            let report = build(dir.path(), &env, None).unwrap();
            assert!(report.generated.cuda_runtime.is_none());
            let registry = std::fs::read_to_string(&report.registry).unwrap();
            assert!(registry.contains("    cuda_runtime: ::core::option::Option::None,\n"), "{registry}");
            let lines = report.cargo.lines();
            assert!(
                lines.iter().any(|l| l.starts_with("cargo:warning=an embedded kernel needs libcudart.so.13 and none was found")),
                "{lines:?}"
            );

            // Locked: an error naming the kernel, the variant and what to do.
            let err = build(dir.path(), &[env[0], (LOCKED, "1")], None).unwrap_err();
            assert!(matches!(err, BuildError::CudaRuntimeMissing { .. }), "{err}");
            let text = err.to_string();
            assert!(
                text.starts_with(&format!("kernel `cuda-ops` ({variant}) needs libcudart.so.13 and none was found"))
                    && text.contains("the build is locked (KERNELS_LOCKED is set)")
                    && text.contains("set KERNELS_CUDART_LIB=")
                    && text.contains("`pip install nvidia-cuda-runtime==13.*`"),
                "{text}"
            );
        }
    }

    #[test]
    fn a_lock_pinning_a_removed_kernel_is_stale_without_hub_kernels_too() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("kernels.toml"), "").unwrap();
        std::fs::write(dir.path().join("kernels.lock"), LOCK).unwrap();

        let err = build(dir.path(), &[], Some(true)).unwrap_err();
        assert!(matches!(err, BuildError::Locked { .. }), "{err}");
        let text = err.to_string();
        assert!(text.contains("kernels.lock is out of date:"), "{text}");
        assert!(text.contains("kernel `act` (org/act) is locked but no longer declared in kernels.toml"), "{text}");
        assert!(text.ends_with("and commit kernels.lock (the build was told to stay locked)"), "{text}");

        // Not locked: the build goes on and proposes the lock without it.
        let report = build(dir.path(), &[], None).unwrap();
        let proposed = report.proposed_lock.expect("a proposed lock");
        assert_eq!(Lock::read(&proposed).unwrap(), Some(Lock::default()));
        assert!(report.cargo.lines().iter().any(|l| l.starts_with("cargo:warning=") && l.contains("is out of date")));
    }

    #[test]
    fn kernels_locked_reads_flags_like_the_runtime() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("kernels.toml"), "").unwrap();
        std::fs::write(dir.path().join("kernels.lock"), LOCK).unwrap();
        let err = build(dir.path(), &[(LOCKED, "2")], None).unwrap_err();
        assert!(err.to_string().ends_with(" (KERNELS_LOCKED is set)"), "{err}");
        assert!(build(dir.path(), &[(LOCKED, "0")], None).is_ok());
    }
}
