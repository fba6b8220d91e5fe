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
//! 1. reads `kernels.toml` and `kernels.lock`;
//! 2. for Hub kernels, takes the pinned commit and file hashes from the lock; when the lock is
//!    missing or stale, resolves against the Hub in memory, writes the proposed
//!    lock to `$OUT_DIR/kernels/kernels.lock` and warns with the command that fixes it
//!    (`KERNELS_LOCKED=1` makes that an error);
//! 3. fetches only the variants the *target* can run into the standard Hugging Face cache,
//!    each file checked against its pinned sha256 and each variant against its
//!    `metadata.json` digest; with a warm cache no network call is made;
//! 4. builds `path` kernels that are crates for the target;
//! 5. writes `$OUT_DIR/kernels/registry.rs` and the embedded blobs: the bytes
//!    embedded are the bytes verified, read once; with `[build] embed = false` the registry
//!    lists instead the lock's sha256 and size of each variant's library and `metadata.json`,
//!    which the runtime checks before loading them from the Hub cache. A `libtvm_ffi.so` to
//!    embed that differs from the lock's `[tvm-ffi]` pin, or a CUDA runtime
//!    (`libcudart.so.<major>`, embedded for kernels that link it) that differs from its
//!    `[cuda-runtime]` pin, is a warning, and an error when the build is locked.
//!
//! ## Features
//!
//! - `hub` (default): the Hub client (reqwest with rustls, tokio), for resolving versions and
//!   downloading variants. Without it (`default-features = false`) the crate builds with far
//!   fewer dependencies and reads `path` kernels and the Hugging Face cache only: a Hub kernel
//!   that is pinned by `kernels.lock` and already in the cache (`cargo kernels download`)
//!   builds as before, and one that needs the network fails with a message naming the fix
//!   (enable the feature, or run `cargo kernels download`). For offline and vendored builds.
//!
//! Every variable read is tracked with `cargo:rerun-if-env-changed` and `rerun-if-changed` is
//! emitted only for files that exist.
//!
//! Only [`build`], [`Builder`], [`BuildReport`] and [`BuildError`] are this crate's API. The
//! modules and items hidden from the docs are shared with `cargo kernels` (kernels-cli) and
//! the tests: they are exempt from semver and may change in any release.
//!
//! The modules follow the build: `manifest` → `lock` → `resolve` → `fetch` → `verify` →
//! `codegen`, driven by `pipeline`; each imports only the stages before it, and each stage's
//! data types live with the stage that produces them. `diagnostic` (located TOML errors),
//! `env`, `hub` (the Hub client and cache), `target`, `local` (`path` kernels) and
//! `cuda_runtime` (the `libcudart.so.<major>` a kernel links) serve them.

#![allow(clippy::needless_doctest_main)] // the docs show the whole build.rs

#[doc(hidden)]
pub mod codegen;
#[doc(hidden)]
pub mod cuda_runtime;
#[doc(hidden)]
pub mod diagnostic;
#[doc(hidden)]
pub mod env;
#[doc(hidden)]
pub mod fetch;
#[doc(hidden)]
pub mod hub;
#[doc(hidden)]
pub mod local;
#[doc(hidden)]
pub mod lock;
#[doc(hidden)]
pub mod manifest;
mod pipeline;
#[doc(hidden)]
pub mod resolve;
#[doc(hidden)]
pub mod target;
#[doc(hidden)]
pub mod verify;

use std::path::PathBuf;

use crate::codegen::GenRegistry;
use crate::env::{CargoOutput, Env};
use crate::hub::HubSettings;
use crate::pipeline::Inputs;

/// The build failed; the message says what to do.
///
/// `Debug` prints the same message as `Display`, so the `kernels_build::build().unwrap()` of a
/// build script shows `kernels.toml:2:1: … did you mean `repo`?` or the stale lock and the
/// command that fixes it in Cargo's output, not the error's fields.
#[derive(thiserror::Error)]
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
    #[error("{stale}{why}")]
    Locked {
        /// What is stale.
        stale: lock::StaleLock,
        /// Why resolving is not allowed.
        why: String,
    },
    /// The local `libtvm_ffi.so` is not the one `kernels.lock` pins, and the build is locked.
    #[error(
        "{} (sha256 {found}) differs from the libtvm_ffi.so pinned in kernels.lock ({source_name}, sha256 {pinned}) \
         and the build is locked{why}: point {} at the pinned {source_name}, or run `cargo kernels lock` \
         to pin the local one",
        path.display(),
        kernels_runtime::env::TVM_FFI_LIB
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
        why: String,
    },
    /// An embedded kernel needs `libtvm_ffi.so`, none was found, and the build is locked: the
    /// binary would fail on a machine without it.
    #[error(
        "{kernels} needs libtvm_ffi.so and none was found at build time, and the build is locked{why}: \
         set {} to the libtvm_ffi.so of {wanted} (`tvm-ffi-config --libfiles` prints it), so that \
         the binary carries it",
        kernels_runtime::env::TVM_FFI_LIB
    )]
    TvmFfiMissing {
        /// The kernels and variants that need it, as shown.
        kernels: String,
        /// What to install: the lock's `[tvm-ffi]` source, or the package.
        wanted: String,
        /// Why the build is locked.
        why: String,
    },
    /// The local CUDA runtime is not the one `kernels.lock` pins, and the build is locked.
    #[error(
        "{} (sha256 {found}) differs from the CUDA runtime pinned in kernels.lock ({}, {}, sha256 {}) \
         and the build is locked{why}: point {} at the pinned {}, or run `cargo kernels lock` \
         to pin the local one",
        path.display(),
        pin.file,
        pin.source,
        pin.sha256,
        kernels_runtime::env::CUDART_LIB,
        pin.source
    )]
    CudaRuntimePin {
        /// The local library.
        path: PathBuf,
        /// Its hex sha256.
        found: String,
        /// The lock's `[cuda-runtime]` pin.
        pin: Box<lock::RuntimePin>,
        /// Why the build is locked.
        why: String,
    },
    /// An embedded kernel needs the CUDA runtime, none was found, and the build is locked: the
    /// binary would fail on a machine without it.
    #[error(
        "{kernels} needs {soname} and none was found at build time, and the build is locked{why}: \
         set {}=<the {soname} of {}, or the directory holding it>, or `pip install {}`, \
         so that the binary carries it",
        kernels_runtime::env::CUDART_LIB,
        self.wanted(),
        self.install()
    )]
    CudaRuntimeMissing {
        /// The kernels and variants that need it, as shown.
        kernels: String,
        /// The soname they need (`libcudart.so.13`).
        soname: String,
        /// The source of the lock's `[cuda-runtime]` pin of that soname, if any.
        pinned: Option<String>,
        /// Why the build is locked.
        why: String,
    },
    /// The target has no variants.
    #[error(transparent)]
    Target(#[from] target::UnsupportedTarget),
    /// Resolution against the Hub failed.
    #[error("kernel `{name}`: {source}")]
    Resolve {
        /// Local name.
        name: String,
        source: Box<resolve::ResolveError>,
    },
    /// Fetching or verifying a variant failed.
    #[error("kernel `{name}`, variant {variant}: {source}")]
    Variant {
        /// Local name.
        name: String,
        variant: String,
        source: Box<verify::VariantError>,
    },
    /// A local kernel could not be built or verified.
    #[error("kernel `{name}` ({path}): {source}")]
    Local {
        /// Local name.
        name: String,
        path: PathBuf,
        source: Box<local::LocalError>,
    },
    /// Writing the generated files failed.
    #[error("writing {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
}

impl BuildError {
    /// For [`BuildError::CudaRuntimeMissing`]: the wheel to install, the pinned release when the
    /// lock names one.
    fn install(&self) -> String {
        match self {
            BuildError::CudaRuntimeMissing { pinned: Some(p), .. } if p.starts_with("nvidia-cuda-runtime") => p.clone(),
            BuildError::CudaRuntimeMissing { soname, .. } => {
                let major = cuda_runtime::major(soname).map(|m| m.to_string()).unwrap_or_default();
                kernels_runtime::cuda_runtime::wheel(&major)
            }
            _ => String::new(),
        }
    }

    /// For [`BuildError::CudaRuntimeMissing`]: where the library should come from, the lock's
    /// pin when there is one.
    fn wanted(&self) -> String {
        match self {
            BuildError::CudaRuntimeMissing { pinned: Some(p), .. } => p.clone(),
            BuildError::CudaRuntimeMissing { soname, .. } => {
                let major = cuda_runtime::major(soname).map(|m| m.to_string()).unwrap_or_default();
                format!("a CUDA {major} toolkit or the {} wheel", self.install())
            }
            _ => String::new(),
        }
    }
}

impl std::fmt::Debug for BuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// What a build did, for tests and tools.
#[derive(Debug, Clone)]
pub struct BuildReport {
    /// The `cargo:` lines (already printed by [`Builder::build`]).
    #[doc(hidden)]
    pub cargo: CargoOutput,
    /// The generated registry file.
    pub registry: PathBuf,
    /// The registry's content model.
    #[doc(hidden)]
    pub generated: GenRegistry,
    /// The proposed lock, when the lock was missing or stale.
    pub proposed_lock: Option<PathBuf>,
}

/// Configures a build; every input Cargo gives a build script can be overridden.
#[derive(Debug, Default)]
pub struct Builder {
    env: Option<Env>,
    inputs: Inputs,
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
    #[doc(hidden)]
    pub fn env(mut self, env: Env) -> Self {
        self.env = Some(env);
        self
    }

    /// The directory holding `kernels.toml` (default `CARGO_MANIFEST_DIR`).
    pub fn manifest_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.inputs.manifest_dir = Some(dir.into());
        self
    }

    /// Where generated files go (default `OUT_DIR`); they land in `<out_dir>/kernels/`.
    pub fn out_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.inputs.out_dir = Some(dir.into());
        self
    }

    /// The target triple (default `TARGET`).
    pub fn target(mut self, triple: impl Into<String>) -> Self {
        self.inputs.target = Some(triple.into());
        self
    }

    /// Hub endpoint, cache, token and offline mode (default: from the environment).
    #[doc(hidden)]
    pub fn hub(mut self, settings: HubSettings) -> Self {
        self.inputs.hub = Some(settings);
        self
    }

    /// Whether a missing or stale lock, or a `libtvm_ffi.so` or CUDA runtime other than the one
    /// the lock's `[tvm-ffi]` or `[cuda-runtime]` pins, is an error (default: `KERNELS_LOCKED`). Cargo does not tell build
    /// scripts about `--locked`, so CI sets `KERNELS_LOCKED=1`.
    pub fn locked(mut self, locked: bool) -> Self {
        self.inputs.locked = Some(locked);
        self
    }

    /// Runs the build and prints the `cargo:` lines.
    pub fn build(self) -> Result<BuildReport, BuildError> {
        let report = self.run()?;
        report.cargo.print();
        Ok(report)
    }

    /// Runs the build without printing (tests look at the report's `cargo` lines).
    pub fn run(self) -> Result<BuildReport, BuildError> {
        let env = self.env.unwrap_or_default();
        let mut out = CargoOutput::default();
        let result = pipeline::run(&env, self.inputs, &mut out);
        for key in env.read_vars() {
            out.rerun_if_env_changed(&key);
        }
        result.map(|o| BuildReport {
            cargo: out,
            registry: o.registry,
            generated: o.generated,
            proposed_lock: o.proposed_lock,
        })
    }
}
