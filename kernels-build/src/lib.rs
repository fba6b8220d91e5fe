//! kernels-build: the build-time half of kernels-rs.
//!
//! A crate with a `kernels.toml` and this `build.rs` gets the kernel variants its target can
//! run, verified and embedded:
//!
//! ```no_run
//! fn main() {
//!     kernels_build::build().unwrap();
//! }
//! ```
//!
//! and brings them in with `kernels_runtime::include_kernels!()` at its crate root.
//!
//! What the build does, in order:
//!
//! 1. reads `kernels.toml` ([`manifest`]) and `kernels.lock` ([`lock`]);
//! 2. for Hub kernels, takes the pinned commit and file hashes from the lock; when the lock is
//!    missing or stale, resolves against the Hub in memory ([`resolve`]), writes the proposed
//!    lock to `$OUT_DIR/kernels/kernels.lock` and warns with the command that fixes it
//!    (`KERNELS_LOCKED=1` makes that an error);
//! 3. fetches only the variants the *target* can run ([`target`]) into the standard Hugging
//!    Face cache, each file checked against its pinned sha256 and each variant against its
//!    `metadata.json` digest ([`fetch`]); with a warm cache no network call is made;
//! 4. builds `path` kernels that are crates for the target ([`local`]);
//! 5. writes `$OUT_DIR/kernels/registry.rs` and the embedded blobs ([`codegen`]): the bytes
//!    embedded are the bytes verified, read once; with `[build] embed = false` the registry
//!    lists instead the lock's sha256 and size of each variant's library and `metadata.json`,
//!    which the runtime checks before loading them from the Hub cache. A `libtvm_ffi.so` to
//!    embed that differs from the lock's `[tvm-ffi]` pin is a warning, and an error when the
//!    build is locked.
//!
//! Every variable read is tracked with `cargo:rerun-if-env-changed` and `rerun-if-changed` is
//! emitted only for files that exist ([`env`](mod@env)).

#![allow(clippy::needless_doctest_main)] // the docs show the whole build.rs

pub mod codegen;
pub mod env;
pub mod fetch;
pub mod local;
pub mod lock;
pub mod manifest;
pub mod resolve;
pub mod target;

use std::path::{Path, PathBuf};

use kernels_runtime::ffi::needs_tvm_ffi;
use kernels_runtime::metadata;

use crate::codegen::{GenCachedVariant, GenKernel, GenLayer, GenRegistry, GenRuntimeLib, GenVariant};
use crate::env::{CargoOutput, Env};
use crate::fetch::{Hub, HubSettings};
use crate::lock::{LOCK_FILE, Lock};
use crate::manifest::{KernelSource, MANIFEST_FILE, Manifest};
use crate::target::TargetSpec;

/// The build failed; the message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A variable Cargo sets for build scripts is missing.
    #[error("{0} is not set: kernels_build::build() runs from a build script (or set it with the Builder)")]
    MissingEnv(&'static str),
    /// `kernels.toml` is invalid.
    #[error("{}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
    Manifest(Vec<manifest::ManifestError>),
    /// `kernels.lock` is invalid.
    #[error(transparent)]
    Lock(#[from] lock::LockError),
    /// The lock is missing or stale and the build may not resolve.
    #[error("{path} is {state}:\n{details}\nrun `cargo kernels lock` in {dir} and commit kernels.lock{why}")]
    Locked {
        /// The lock path.
        path: PathBuf,
        /// "missing" or "out of date".
        state: &'static str,
        /// What is stale.
        details: String,
        /// The crate directory.
        dir: PathBuf,
        /// Why resolving is not allowed.
        why: &'static str,
    },
    /// The local `libtvm_ffi.so` is not the one `kernels.lock` pins, and the build is locked.
    #[error(
        "{} (sha256 {found}) differs from the libtvm_ffi.so pinned in kernels.lock ({source_name}, sha256 {pinned}) \
         and the build is locked{why}: point KERNELS_TVM_FFI_LIB at the pinned {source_name}, or run `cargo kernels lock` \
         to pin the local one",
        path.display()
    )]
    TvmFfiPin {
        /// The local library.
        path: PathBuf,
        /// Its hex sha256.
        found: String,
        /// The pinned hex sha256.
        pinned: String,
        /// Where the pinned one came from (`apache-tvm-ffi==…`).
        source_name: String,
        /// Why the build is locked.
        why: &'static str,
    },
    /// The target has no variants.
    #[error(transparent)]
    Target(#[from] target::UnsupportedTarget),
    /// Resolution against the Hub failed.
    #[error("kernel `{name}`: {source}")]
    Resolve {
        /// Local name.
        name: String,
        /// Why.
        source: Box<resolve::ResolveError>,
    },
    /// Fetching or verifying a variant failed.
    #[error("kernel `{name}`, variant {variant}: {source}")]
    Variant {
        /// Local name.
        name: String,
        /// Variant.
        variant: String,
        /// Why.
        source: Box<resolve::VariantError>,
    },
    /// A local kernel could not be built or verified.
    #[error("kernel `{name}` ({path}): {source}")]
    Local {
        /// Local name.
        name: String,
        /// Its path.
        path: PathBuf,
        /// Why.
        source: Box<local::LocalError>,
    },
    /// Writing the generated files failed.
    #[error("writing {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// What a build did, for tests and tools.
#[derive(Debug, Clone)]
pub struct BuildReport {
    /// The `cargo:` lines (already printed by [`Builder::build`]).
    pub cargo: CargoOutput,
    /// The generated registry file.
    pub registry: PathBuf,
    /// The registry's content model.
    pub generated: GenRegistry,
    /// The proposed lock, when the lock was missing or stale.
    pub proposed_lock: Option<PathBuf>,
}

/// Configures a build; every input Cargo gives a build script can be overridden.
#[derive(Debug, Default)]
pub struct Builder {
    env: Option<Env>,
    manifest_dir: Option<PathBuf>,
    out_dir: Option<PathBuf>,
    target: Option<String>,
    hub: Option<HubSettings>,
    locked: Option<bool>,
}

/// Builds with the defaults: what a three-line `build.rs` calls.
pub fn build() -> Result<(), BuildError> {
    Builder::new().build().map(|_| ())
}

impl Builder {
    /// A builder reading everything from the environment Cargo gives build scripts.
    pub fn new() -> Self {
        Self::default()
    }

    /// Reads variables from `env` instead of the process environment.
    pub fn env(mut self, env: Env) -> Self {
        self.env = Some(env);
        self
    }

    /// The directory holding `kernels.toml` (default `CARGO_MANIFEST_DIR`).
    pub fn manifest_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.manifest_dir = Some(dir.into());
        self
    }

    /// Where generated files go (default `OUT_DIR`); they land in `<out_dir>/kernels/`.
    pub fn out_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.out_dir = Some(dir.into());
        self
    }

    /// The target triple (default `TARGET`).
    pub fn target(mut self, triple: impl Into<String>) -> Self {
        self.target = Some(triple.into());
        self
    }

    /// Hub endpoint, cache, token and offline mode (default: from the environment).
    pub fn hub(mut self, settings: HubSettings) -> Self {
        self.hub = Some(settings);
        self
    }

    /// Whether a missing or stale lock, or a `libtvm_ffi.so` other than the one the lock's
    /// `[tvm-ffi]` pins, is an error (default: `KERNELS_LOCKED`). Cargo does not tell build
    /// scripts about `--locked`, so CI sets `KERNELS_LOCKED=1`.
    pub fn locked(mut self, locked: bool) -> Self {
        self.locked = Some(locked);
        self
    }

    /// Runs the build and prints the `cargo:` lines.
    pub fn build(self) -> Result<BuildReport, BuildError> {
        let report = self.run()?;
        report.cargo.print();
        Ok(report)
    }

    /// Runs the build without printing (tests look at [`BuildReport::cargo`]).
    pub fn run(self) -> Result<BuildReport, BuildError> {
        let env = self.env.unwrap_or_default();
        let mut out = CargoOutput::default();
        let result = run(&env, self.manifest_dir, self.out_dir, self.target, self.hub, self.locked, &mut out);
        for key in env.read_vars() {
            out.rerun_if_env_changed(&key);
        }
        result.map(|(registry, generated, proposed_lock)| BuildReport {
            cargo: out,
            registry,
            generated,
            proposed_lock,
        })
    }
}

fn required(given: Option<PathBuf>, env: &Env, key: &'static str) -> Result<PathBuf, BuildError> {
    given.or_else(|| env.path(key)).ok_or(BuildError::MissingEnv(key))
}

fn run(
    env: &Env,
    manifest_dir: Option<PathBuf>,
    out_dir: Option<PathBuf>,
    target: Option<String>,
    hub: Option<HubSettings>,
    locked: Option<bool>,
    out: &mut CargoOutput,
) -> Result<(PathBuf, GenRegistry, Option<PathBuf>), BuildError> {
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
    let stale = match &lock {
        Some(l) => l.staleness(&manifest),
        None => Vec::new(),
    };
    let needs_hub = manifest.kernels.values().any(|k| matches!(k.source, KernelSource::Hub { .. }));
    let mut pins = lock.clone().unwrap_or_default();
    let mut proposed_lock = None;
    let locked_by = if locked == Some(true) {
        Some(" (the build was told to stay locked)")
    } else if locked.is_none() && env.flag("KERNELS_LOCKED") {
        Some(" (KERNELS_LOCKED is set)")
    } else {
        None
    };
    if needs_hub && (lock.is_none() || !stale.is_empty()) {
        let state = if lock.is_none() { "missing" } else { "out of date" };
        let details = if lock.is_none() {
            "  no kernels.lock next to kernels.toml".to_owned()
        } else {
            stale.iter().map(|s| format!("  {s}")).collect::<Vec<_>>().join("\n")
        };
        if let Some(why) = locked_by {
            return Err(BuildError::Locked { path: lock_path, state, details, dir: manifest_dir, why });
        }
        pins = resolve_all(&manifest, lock.as_ref(), &mut hub)?;
        let proposed = kernels_dir.join(LOCK_FILE);
        codegen::write_if_changed(&proposed, pins.render().as_bytes())
            .map_err(|source| BuildError::Io { path: proposed.clone(), source })?;
        out.warning(&format!(
            "{} is {state}; resolved against the Hub for this build. Run `cargo kernels lock` in {} to pin it (proposed lock: {})",
            lock_path.display(),
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
                    let fetched = resolve::fetch_variant(&mut hub, repo, &pinned.commit, variant, &spec.os)
                        .map_err(variant_err)?;
                    let archs = fetched.metadata.backend.map(|b| b.archs).unwrap_or_default();
                    if !manifest.build.embed {
                        // Loaded from the Hub cache at run time, checked against these pins.
                        let (library, metadata) = fetched.pins;
                        cached.push(GenCachedVariant { variant: variant.name.clone(), archs, library, metadata });
                        continue;
                    }
                    let needs_tvm_ffi = needs_tvm_ffi(&fetched.dir.join(&fetched.library_file)).unwrap_or(false);
                    variants.push(GenVariant {
                        variant: variant.name.clone(),
                        archs,
                        library_file: fetched.library_file,
                        bytes: fetched.library,
                        needs_tvm_ffi,
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
            capability: l.capability.map(|c| (c.min, c.max)),
            mode: l.mode,
        })
        .collect();
    generated.tvm_ffi = runtime_library(&generated, env, pins.tvm_ffi.as_ref(), locked_by, out)?;

    let registry = codegen::write(&kernels_dir, &generated)
        .map_err(|source| BuildError::Io { path: kernels_dir.join("registry.rs"), source })?;
    Ok((registry, generated, proposed_lock))
}

fn resolve_all(manifest: &Manifest, lock: Option<&Lock>, hub: &mut Hub) -> Result<Lock, BuildError> {
    let mut pins = Lock { kernels: Vec::new(), tvm_ffi: lock.and_then(|l| l.tvm_ffi.clone()) };
    for decl in manifest.kernels.values() {
        let KernelSource::Hub { repo, requested } = &decl.source else { continue };
        let fresh = lock.and_then(|l| l.kernel(&decl.name)).filter(|k| &k.repo == repo && &k.requested == requested);
        let pinned = match fresh {
            Some(k) => k.clone(),
            None => resolve::resolve(hub, &decl.name, repo, requested)
                .map_err(|source| BuildError::Resolve { name: decl.name.clone(), source: Box::new(source) })?,
        };
        pins.kernels.push(pinned);
    }
    Ok(pins)
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
            let lib = local::build_crate(&crate_dir, &spec.triple, &kernels_dir.join("crates"), env, out)
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
        let variant = vdir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        if spec.wants(&variant).is_err() {
            continue;
        }
        let verify_err = |e| local_err(local::LocalError::Verify(e));
        let meta = metadata::read_and_verify(&vdir).map_err(verify_err)?;
        let library_file = meta.checked_library_file(&vdir, &spec.os).map_err(verify_err)?;
        let path = vdir.join(&library_file);
        // Embedded are the bytes checked against the digest, read once.
        let bytes = metadata::read_verified(&vdir, &meta, &library_file).map_err(verify_err)?;
        let archs = meta.backend.map(|b| b.archs).unwrap_or_default();
        let needs_tvm_ffi = needs_tvm_ffi(&path).unwrap_or(false);
        variants.push(GenVariant { variant, archs, library_file, bytes, needs_tvm_ffi });
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
    pin: Option<&lock::RuntimePin>,
    locked_by: Option<&'static str>,
    out: &mut CargoOutput,
) -> Result<Option<GenRuntimeLib>, BuildError> {
    if !generated.kernels.iter().flat_map(|k| &k.variants).any(|v| v.needs_tvm_ffi) {
        return Ok(None);
    }
    let located = match env.path(kernels_runtime::env::TVM_FFI_LIB) {
        Some(p) if p.is_dir() => Some(p.join(kernels_runtime::ffi::TVM_FFI_LIBRARY)),
        Some(p) => Some(p),
        None => kernels_runtime::ffi::locate_tvm_ffi().ok(),
    };
    let Some(path) = located.filter(|p| p.is_file()) else {
        out.warning(
            "an embedded kernel needs libtvm_ffi.so and none was found at build time (set KERNELS_TVM_FFI_LIB or install apache-tvm-ffi); the binary will look for it where it runs",
        );
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
                why,
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
    Ok(Some(GenRuntimeLib { file: kernels_runtime::ffi::TVM_FFI_LIBRARY.to_owned(), bytes }))
}
