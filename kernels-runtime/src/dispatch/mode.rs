//! The switches a decision depends on: the thread's [`Mode`], strict and deterministic mode,
//! and the environment ([`Settings`]).

use std::cell::Cell;
use std::fmt;
use std::sync::atomic::{AtomicU8, Ordering};

use crate::env;

/// What a layer is run for: plain inference, or training (kernels need backward support).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Mode {
    /// Forward only (the default).
    #[default]
    Inference,
    /// Training: only kernels declared with backward support are chosen.
    Training,
}

impl Mode {
    /// The mode of the current thread (see [`with_mode`]).
    pub fn current() -> Mode {
        MODE.with(Cell::get)
    }

    pub(super) fn index(self) -> usize {
        match self {
            Mode::Inference => 0,
            Mode::Training => 1,
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Inference => "inference",
            Mode::Training => "training",
        })
    }
}

thread_local! {
    static MODE: Cell<Mode> = const { Cell::new(Mode::Inference) };
}

/// Runs `f` with `mode` as the current thread's mode, restoring the previous mode afterwards
/// (also when `f` panics).
pub fn with_mode<R>(mode: Mode, f: impl FnOnce() -> R) -> R {
    struct Restore(Mode);
    impl Drop for Restore {
        fn drop(&mut self) {
            MODE.with(|m| m.set(self.0));
        }
    }
    let _restore = Restore(MODE.with(|m| m.replace(mode)));
    f()
}

/// A process-wide switch: what the last `set` call said, else the environment flag `var`
/// (read once).
struct ProcessSwitch {
    state: AtomicU8,
    var: &'static str,
}

const UNSET: u8 = 0;
const OFF: u8 = 1;
const ON: u8 = 2;

impl ProcessSwitch {
    const fn new(var: &'static str) -> Self {
        ProcessSwitch { state: AtomicU8::new(UNSET), var }
    }

    fn set(&self, on: bool) {
        self.state.store(if on { ON } else { OFF }, Ordering::Relaxed);
    }

    #[inline]
    fn get(&self) -> bool {
        match self.state.load(Ordering::Relaxed) {
            ON => true,
            OFF => false,
            _ => {
                let value = if env::flag(self.var) { ON } else { OFF };
                let _ = self.state.compare_exchange(UNSET, value, Ordering::Relaxed, Ordering::Relaxed);
                self.state.load(Ordering::Relaxed) == ON
            }
        }
    }
}

static STRICT: ProcessSwitch = ProcessSwitch::new(env::STRICT);
static DETERMINISTIC: ProcessSwitch = ProcessSwitch::new(env::DETERMINISTIC);

/// Turns strict mode on or off for the whole process, overriding `KERNELS_STRICT`. In strict
/// mode a layer that would use its Rust forward returns [`DispatchError::Strict`](super::DispatchError::Strict) instead.
pub fn set_strict(on: bool) {
    STRICT.set(on);
}

/// Whether strict mode is on: [`set_strict`], else `KERNELS_STRICT` (read once).
pub fn is_strict() -> bool {
    STRICT.get()
}

/// Turns deterministic mode on or off for the whole process, overriding
/// `KERNELS_DETERMINISTIC`. In deterministic mode a layer uses only a mapping declared
/// `deterministic = true` in `kernels.toml`, else its Rust forward
/// ([`FallbackReason::NotDeterministic`](super::FallbackReason::NotDeterministic)). Takes
/// effect at each layer's next call: decisions are kept per setting, so turning it off again
/// finds the earlier decisions.
pub fn set_deterministic(on: bool) {
    DETERMINISTIC.set(on);
}

/// Whether deterministic mode is on: [`set_deterministic`], else `KERNELS_DETERMINISTIC`
/// (read once).
#[inline]
pub fn is_deterministic() -> bool {
    DETERMINISTIC.get()
}

/// The environment a decision is made in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    /// `DISABLE_KERNEL_MAPPING`: every layer uses its Rust forward.
    pub disable_mapping: bool,
    /// `LOCAL_KERNELS`, unparsed.
    pub local_kernels: Option<String>,
    /// `KERNELS_DISABLE`: layers, kernels or repos whose kernels are off.
    pub disabled: Vec<String>,
    /// Deterministic mode ([`is_deterministic`]): only mappings declared
    /// `deterministic = true` are chosen.
    pub deterministic: bool,
}

impl Settings {
    /// Reads `DISABLE_KERNEL_MAPPING`, `LOCAL_KERNELS` and `KERNELS_DISABLE`, and whether
    /// deterministic mode is on ([`is_deterministic`]).
    pub fn from_env() -> Self {
        Settings {
            disable_mapping: env::flag(env::DISABLE_MAPPING),
            local_kernels: env::var(env::LOCAL_KERNELS).filter(|v| !v.trim().is_empty()),
            disabled: env::var(env::DISABLE).map(|v| super::disable::parse(&v)).unwrap_or_default(),
            deterministic: is_deterministic(),
        }
    }
}
