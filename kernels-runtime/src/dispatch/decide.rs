//! Deciding what a layer uses on a target in a mode: [`decide`], and why a layer falls back
//! ([`FallbackReason`]).

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use crate::env;
use crate::ffi::{DLDeviceType, KernelFunction};
use crate::loader::{self, LoadError, LoadedKernel, Source};
use crate::platform::Platform;
use crate::registry::{CapabilityRange, LayerEntry, ModeSupport, Needs, Registry, Tolerance, pick_mapping};
use crate::select::{DecisionTrace, Request};
use crate::variant::{BackendKind, Version};

use super::disable::{self, Switch};
use super::mode::{Mode, Settings};
use super::target::Target;

/// Why a layer uses its Rust forward.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum FallbackReason {
    /// A switch turned the layer's kernel off (this is not a failure, and strict mode allows it).
    Disabled {
        /// Which switch.
        by: Switch,
    },
    /// The tensors live on a kind of device no kernel variant targets.
    UnsupportedDevice {
        /// The DLPack device type.
        device_type: i32,
    },
    /// `kernels.toml` maps the layer to no kernel for this kind of device.
    NoMapping {
        /// The device kind asked for.
        device: BackendKind,
        /// The kinds it is mapped for.
        mapped: Vec<BackendKind>,
    },
    /// The device is not present or not usable.
    NoDevice {
        device: BackendKind,
        ordinal: u32,
        /// What the platform probe said.
        reason: String,
    },
    /// The GPU's compute capability is outside every mapping's range.
    Capability {
        /// The GPU's compute capability.
        capability: Version,
        /// The mappings' ranges, as `kernel range`.
        ranges: Vec<String>,
    },
    /// Training mode, and no mapping for the device declares backward support.
    NoBackward {
        /// The inference-only kernels that would otherwise serve.
        kernels: Vec<String>,
    },
    /// Deterministic mode, and no mapping for the device declares `deterministic = true`.
    /// Not a failure (logged at `info`), but strict mode refuses it: the kernel was meant to
    /// serve, and the Rust forward gives different numbers.
    NotDeterministic {
        /// The kernels that would otherwise serve.
        kernels: Vec<String>,
    },
    /// A mapping names a kernel the registry does not have.
    UnknownKernel {
        /// The kernel's local name.
        kernel: String,
    },
    /// No variant of the kernel fits this machine (or none is available).
    NoVariant {
        /// The kernel's local name.
        kernel: String,
        repo: String,
        /// Why each candidate was rejected; `None` when there were no candidates.
        trace: Option<Box<DecisionTrace>>,
    },
    /// The kernel library could not be loaded.
    LoadFailed {
        /// The kernel's local name.
        kernel: String,
        repo: String,
        error: Arc<LoadError>,
    },
    /// The library does not export the mapped function.
    MissingSymbol {
        /// The kernel's local name.
        kernel: String,
        function: String,
        error: Arc<LoadError>,
    },
}

impl FallbackReason {
    /// Whether this is a failure (a kernel was meant to serve but could not) rather than a
    /// configuration without a kernel.
    pub fn is_failure(&self) -> bool {
        matches!(
            self,
            FallbackReason::UnknownKernel { .. }
                | FallbackReason::NoVariant { .. }
                | FallbackReason::LoadFailed { .. }
                | FallbackReason::MissingSymbol { .. }
        )
    }

    /// The variant selection trace, when variants were considered.
    pub fn trace(&self) -> Option<&DecisionTrace> {
        match self {
            FallbackReason::NoVariant { trace, .. } => trace.as_deref(),
            _ => None,
        }
    }
}

impl fmt::Display for FallbackReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FallbackReason::Disabled { by } => write!(f, "{by}"),
            FallbackReason::UnsupportedDevice { device_type } => {
                write!(f, "its tensors are on {} devices, which no kernel variant targets", DLDeviceType(*device_type))
            }
            FallbackReason::NoMapping { device, mapped } if mapped.is_empty() => {
                write!(f, "kernels.toml maps it to no kernel (for {device} or any device)")
            }
            FallbackReason::NoMapping { device, mapped } => {
                let mapped: Vec<&str> = mapped.iter().map(|k| k.as_str()).collect();
                write!(f, "kernels.toml maps it to no kernel for {device} (only for {})", mapped.join(", "))
            }
            FallbackReason::NoDevice { device, ordinal, reason } => {
                write!(f, "{device} device {ordinal} is not usable: {reason}")
            }
            FallbackReason::Capability { capability, ranges } => write!(
                f,
                "the GPU's compute capability {capability} is outside the range of every mapping ({})",
                ranges.join("; ")
            ),
            FallbackReason::NoBackward { kernels } => write!(
                f,
                "training mode needs a kernel with backward support; the mapped kernels ({}) are inference-only \
                 (declare `mode = \"training\"` in kernels.toml for kernels that have backward)",
                kernels.join(", ")
            ),
            FallbackReason::NotDeterministic { kernels } => write!(
                f,
                "deterministic mode ({}=1 or dispatch::set_deterministic(true)) needs a mapping declared \
                 `deterministic = true` in kernels.toml; the mapped kernels ({}) are not",
                env::DETERMINISTIC,
                kernels.join(", ")
            ),
            FallbackReason::UnknownKernel { kernel } => {
                write!(f, "the mapping names kernel `{kernel}`, which the registry does not have; rebuild the crate")
            }
            FallbackReason::NoVariant { kernel, repo, trace: Some(trace) } => {
                write!(f, "no variant of kernel `{kernel}` ({repo}) fits this machine:\n{trace}")
            }
            FallbackReason::NoVariant { kernel, repo, trace: None } => write!(
                f,
                "kernel `{kernel}` ({repo}) has no variant in the binary or the Hub cache and {local} \
                 does not name it; embed its variants (`[build] embed = true` in kernels.toml), prefetch them \
                 (`cargo kernels download`) or set {local}={repo}=<dir>",
                local = env::LOCAL_KERNELS
            ),
            FallbackReason::LoadFailed { kernel, repo, error } => {
                write!(f, "kernel `{kernel}` ({repo}) failed to load: {error}")
            }
            FallbackReason::MissingSymbol { kernel, function, error } => {
                write!(f, "kernel `{kernel}` has no function `{function}`: {error}")
            }
        }
    }
}

/// The kernel a layer uses, and why.
#[derive(Debug, Clone)]
pub struct KernelChoice {
    /// The kernel's local name (`[kernels.<name>]`).
    pub kernel: String,
    pub repo: String,
    /// The function called.
    pub function: String,
    /// The variant loaded.
    pub variant: String,
    /// Where it came from.
    pub source: Source,
    /// The library file.
    pub library: PathBuf,
    /// The mapping's capability range, if limited.
    pub capability: Option<CapabilityRange>,
    /// The mapping's declared modes.
    pub mode: ModeSupport,
    /// Whether the mapping is declared `deterministic = true`.
    pub deterministic: bool,
    /// The mapping's verify-mode tolerance, if it declares one.
    pub tolerance: Option<Tolerance>,
    /// How the variant was selected.
    pub trace: DecisionTrace,
}

/// What a layer uses on a target in a mode.
#[derive(Debug, Clone)]
pub enum Choice {
    /// A kernel function.
    Kernel(KernelChoice),
    /// Its Rust forward.
    Fallback(FallbackReason),
}

impl fmt::Display for Choice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Choice::Kernel(k) => {
                write!(f, "kernel {}::{} ({}, {})", k.kernel, k.function, k.variant, k.source)
            }
            Choice::Fallback(reason) => {
                let text = reason.to_string();
                write!(f, "Rust forward: {}", text.lines().next().unwrap_or_default())
            }
        }
    }
}

/// The outcome of [`decide`]: the choice, and the resolved function when it is a kernel.
#[derive(Debug)]
pub struct Decision {
    /// What the layer uses.
    pub choice: Choice,
    /// The resolved kernel function, for [`Choice::Kernel`].
    pub function: Option<KernelFunction>,
}

impl Decision {
    fn fallback(reason: FallbackReason) -> Self {
        Decision { choice: Choice::Fallback(reason), function: None }
    }
}

/// Decides what `layer` uses on `target` in `mode`: the steps of the [module docs](crate::dispatch).
/// Loads the kernel library when one is chosen; does not log or cache (the layers do).
pub fn decide(
    registry: &Registry,
    layer: &str,
    target: Target,
    mode: Mode,
    settings: &Settings,
    platform: &Platform,
) -> Decision {
    if settings.disable_mapping {
        return Decision::fallback(FallbackReason::Disabled { by: Switch::All });
    }
    if !settings.disabled.is_empty() {
        disable::warn_unknown(registry, &settings.disabled);
        if let Some(name) = settings.disabled.iter().find(|n| *n == layer) {
            return Decision::fallback(FallbackReason::Disabled { by: Switch::Env(name.clone()) });
        }
    }
    let (kind, ordinal) = match target {
        Target::Device(kind, ordinal) => (kind, ordinal),
        Target::Unsupported(device_type) => {
            return Decision::fallback(FallbackReason::UnsupportedDevice { device_type });
        }
    };
    let mappings: Vec<&LayerEntry> = registry.mappings(layer, kind).collect();
    if mappings.is_empty() {
        let mut mapped: Vec<BackendKind> =
            registry.layers.iter().filter(|m| m.layer == layer).map(|m| m.device).collect();
        mapped.sort();
        mapped.dedup();
        return Decision::fallback(FallbackReason::NoMapping { device: kind, mapped });
    }
    if let Err(reason) = platform.has_backend(kind) {
        return Decision::fallback(FallbackReason::NoDevice { device: kind, ordinal, reason });
    }
    let capability = match (kind, platform.cuda.present()) {
        (BackendKind::Cuda, Some(cuda)) => match cuda.devices.iter().find(|d| d.ordinal == ordinal) {
            Some(d) => Some(d.capability),
            None => {
                let reason = format!("the driver lists {} device(s)", cuda.devices.len());
                return Decision::fallback(FallbackReason::NoDevice { device: kind, ordinal, reason });
            }
        },
        _ => None,
    };
    let needs = Needs { training: mode == Mode::Training, deterministic: settings.deterministic };
    let Some(mapping) = pick_mapping(mappings.iter().copied(), capability, needs) else {
        // Which need no mapping meets: the capability range first, then the mode, then
        // determinism.
        let pick = |needs| pick_mapping(mappings.iter().copied(), capability, needs);
        if let (Some(cc), None) = (capability, pick(Needs::default())) {
            let ranges = mappings.iter().filter_map(|m| m.capability.map(|r| format!("{} {r}", m.kernel))).collect();
            return Decision::fallback(FallbackReason::Capability { capability: cc, ranges });
        }
        let mut kernels: Vec<String> = mappings.iter().map(|m| m.kernel.to_owned()).collect();
        kernels.dedup();
        if pick(Needs { deterministic: false, ..needs }).is_none() {
            return Decision::fallback(FallbackReason::NoBackward { kernels });
        }
        return Decision::fallback(FallbackReason::NotDeterministic { kernels });
    };
    let Some(entry) = registry.kernel(mapping.kernel) else {
        return Decision::fallback(FallbackReason::UnknownKernel { kernel: mapping.kernel.to_owned() });
    };
    if let Some(name) = settings.disabled.iter().find(|n| disable::names(n, layer, entry.name, entry.repo)) {
        return Decision::fallback(FallbackReason::Disabled { by: Switch::Env(name.clone()) });
    }
    if let Some(lib) = registry.tvm_ffi {
        loader::provide_tvm_ffi(lib);
    }
    if let Some(lib) = registry.cuda_runtime {
        crate::cuda_runtime::provide_cuda_runtime(lib);
    }
    let request = Request::new(kind, ordinal);
    let (kernel, repo) = (entry.name.to_owned(), entry.repo.to_owned());
    let local = match settings.local_kernels.as_deref().map(loader::parse_local_kernels).transpose() {
        Ok(map) => map.and_then(|mut m| m.remove(entry.repo)),
        Err(e) => return Decision::fallback(FallbackReason::LoadFailed { kernel, repo, error: Arc::new(e) }),
    };
    let loaded: Result<(LoadedKernel, DecisionTrace), LoadError> = match &local {
        Some(dir) => loader::load_from_dir(entry.name, dir, platform, request),
        // Prefetched without embedding (`[build] embed = false`): the lock-pinned commit in the
        // Hub cache, its files checked against the lock's hashes; never the network.
        None if entry.variants.is_empty() => match entry.commit {
            Some(commit) if !entry.cached.is_empty() => {
                match loader::load_cached(entry.repo, commit, entry.cached, platform, request) {
                    // Only absent files mean "not prefetched"; present but unreadable or invalid
                    // files are a load failure and say what is wrong with them.
                    Err(e) if e.is_not_found() => {
                        return Decision::fallback(FallbackReason::NoVariant { kernel, repo, trace: None });
                    }
                    other => other,
                }
            }
            _ => return Decision::fallback(FallbackReason::NoVariant { kernel, repo, trace: None }),
        },
        None => loader::select_embedded(entry.name, entry.variants, platform, request),
    };
    let (loaded, trace) = match loaded {
        Ok(ok) => ok,
        Err(LoadError::NoUsableVariant { trace, .. }) => {
            return Decision::fallback(FallbackReason::NoVariant { kernel, repo, trace: Some(trace) });
        }
        Err(e) => return Decision::fallback(FallbackReason::LoadFailed { kernel, repo, error: Arc::new(e) }),
    };
    match loaded.function(mapping.function) {
        Ok(function) => Decision {
            choice: Choice::Kernel(KernelChoice {
                kernel,
                repo,
                function: mapping.function.to_owned(),
                variant: loaded.variant().to_owned(),
                source: loaded.source(),
                library: loaded.path().to_owned(),
                capability: mapping.capability,
                mode: mapping.mode,
                deterministic: mapping.deterministic,
                tolerance: mapping.tolerance,
                trace,
            }),
            function: Some(function),
        },
        Err(e) => Decision::fallback(FallbackReason::MissingSymbol {
            kernel,
            function: mapping.function.to_owned(),
            error: Arc::new(e),
        }),
    }
}
