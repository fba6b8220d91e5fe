//! The per-layer cache of decisions: each (layer, target, mode, deterministic mode or not) is
//! decided once, kept for the life of the process ([`Resolution`]), and found again with one
//! atomic load.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Mutex, MutexGuard, OnceLock};

use crate::ffi::KernelFunction;
use crate::registry::Registry;
use crate::select::DecisionTrace;
use crate::variant::BackendKind;

use super::decide::{Choice, FallbackReason};
use super::disable::{self, Switch};
use super::mode::Mode;
use super::target::Target;
use super::verify::{Verification, VerifyState};

/// A decision made for a kernelized layer on a target in a mode, with deterministic mode on or
/// off, kept for the life of the process.
#[derive(Debug)]
pub struct Resolution {
    pub(super) layer: &'static str,
    pub(super) type_name: &'static str,
    pub(super) module: &'static str,
    pub(super) args: &'static [&'static str],
    pub(super) target: Target,
    pub(super) mode: Mode,
    pub(super) deterministic: bool,
    pub(super) choice: Choice,
    pub(super) function: Option<KernelFunction>,
    pub(super) verify: VerifyState,
}

impl Resolution {
    /// The layer name (`[layers.<name>]`).
    pub fn layer(&self) -> &'static str {
        self.layer
    }

    /// The Rust type carrying `#[kernelize]`.
    pub fn type_name(&self) -> &'static str {
        self.type_name
    }

    /// The module the type is defined in.
    pub fn module(&self) -> &'static str {
        self.module
    }

    /// Where it runs.
    pub fn target(&self) -> Target {
        self.target
    }

    /// In which mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Whether it was made in deterministic mode ([`is_deterministic`](super::is_deterministic)).
    pub fn deterministic(&self) -> bool {
        self.deterministic
    }

    /// What it uses.
    pub fn choice(&self) -> &Choice {
        &self.choice
    }

    /// The run-time switch ([`disable`](super::disable), [`with_disabled`](super::with_disabled))
    /// that turns this layer's kernel off now, on this thread, if any.
    pub fn switched_off(&self) -> Option<Switch> {
        match &self.choice {
            Choice::Kernel(k) => disable::at_run_time(self.layer, &k.kernel, &k.repo),
            Choice::Fallback(_) => None,
        }
    }

    /// Whether a switch turned the kernel off (when deciding, or now at run time).
    pub fn is_disabled(&self) -> bool {
        matches!(self.choice, Choice::Fallback(FallbackReason::Disabled { .. })) || self.switched_off().is_some()
    }

    /// What verify mode ([`set_verify`](super::set_verify)) found on this layer's calls so far.
    pub fn verification(&self) -> Verification {
        self.verify.snapshot()
    }

    /// The variant selection trace, when variants were considered.
    pub fn trace(&self) -> Option<&DecisionTrace> {
        match &self.choice {
            Choice::Kernel(k) => Some(&k.trace),
            Choice::Fallback(r) => r.trace(),
        }
    }
}

impl fmt::Display for Resolution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "layer `{}` ({}) on {} in {} mode", self.layer, self.type_name, self.target, self.mode)?;
        if self.deterministic {
            f.write_str(", deterministic")?;
        }
        Ok(())
    }
}

/// Ordinals below this get a lock-free slot per (kind, mode, deterministic); higher ones go
/// through a map.
pub(super) const SLOT_ORDINALS: usize = 8;
const SLOT_KINDS: usize = BackendKind::ALL.len();
pub(super) const SLOTS: usize = SLOT_KINDS * SLOT_ORDINALS * 2 * 2;

pub(super) fn slot_index(target: Target, mode: Mode, deterministic: bool) -> Option<usize> {
    let Target::Device(kind, ordinal) = target else { return None };
    let ordinal = ordinal as usize;
    if ordinal >= SLOT_ORDINALS {
        return None;
    }
    let kind = match kind {
        BackendKind::Cuda => 0,
        BackendKind::Rocm => 1,
        BackendKind::Xpu => 2,
        BackendKind::Cann => 3,
        BackendKind::Cpu => 4,
        BackendKind::Metal => 5,
        BackendKind::Neuron => 6,
        BackendKind::Tpu => 7,
    };
    Some(((kind * SLOT_ORDINALS + ordinal) * 2 + mode.index()) * 2 + usize::from(deterministic))
}

/// Everything dispatch records, behind one lock.
#[derive(Default)]
pub(super) struct State {
    /// Every resolution, in the order made.
    pub(super) resolutions: Vec<&'static Resolution>,
    /// Resolutions of targets without a slot, by (layer address, target, mode, deterministic).
    pub(super) overflow: HashMap<(usize, Target, Mode, bool), &'static Resolution>,
    /// The registries layers dispatched through (by address).
    pub(super) registries: Vec<&'static Registry>,
}

pub(super) fn state() -> MutexGuard<'static, State> {
    static STATE: OnceLock<Mutex<State>> = OnceLock::new();
    STATE.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner())
}

pub(super) fn log_resolution(r: &Resolution) {
    match &r.choice {
        Choice::Kernel(k) => tracing::info!(
            layer = r.layer,
            target = %r.target,
            mode = %r.mode,
            deterministic = r.deterministic,
            kernel = %k.kernel,
            function = %k.function,
            variant = %k.variant,
            source = %k.source,
            "{r} uses kernel {}::{} ({}, {})",
            k.kernel,
            k.function,
            k.variant,
            k.source
        ),
        Choice::Fallback(reason) if reason.is_failure() => tracing::warn!(
            layer = r.layer,
            target = %r.target,
            mode = %r.mode,
            deterministic = r.deterministic,
            "{r} uses its Rust forward: {reason}"
        ),
        Choice::Fallback(reason) => tracing::info!(
            layer = r.layer,
            target = %r.target,
            mode = %r.mode,
            deterministic = r.deterministic,
            "{r} uses its Rust forward: {reason}"
        ),
    }
}
