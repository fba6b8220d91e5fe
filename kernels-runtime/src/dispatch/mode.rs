//! The switches a decision depends on: the thread's [`Mode`], strict mode, and the
//! environment ([`Settings`]).

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

const STRICT_UNSET: u8 = 0;
const STRICT_OFF: u8 = 1;
const STRICT_ON: u8 = 2;
static STRICT: AtomicU8 = AtomicU8::new(STRICT_UNSET);

/// Turns strict mode on or off for the whole process, overriding `KERNELS_STRICT`. In strict
/// mode a layer that would use its Rust forward returns [`DispatchError::Strict`](super::DispatchError::Strict) instead.
pub fn set_strict(on: bool) {
    STRICT.store(if on { STRICT_ON } else { STRICT_OFF }, Ordering::Relaxed);
}

/// Whether strict mode is on: [`set_strict`], else `KERNELS_STRICT` (read once).
pub fn is_strict() -> bool {
    match STRICT.load(Ordering::Relaxed) {
        STRICT_ON => true,
        STRICT_OFF => false,
        _ => {
            let on = env::flag(env::STRICT);
            let value = if on { STRICT_ON } else { STRICT_OFF };
            let _ = STRICT.compare_exchange(STRICT_UNSET, value, Ordering::Relaxed, Ordering::Relaxed);
            STRICT.load(Ordering::Relaxed) == STRICT_ON
        }
    }
}

/// The environment a decision is made in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    /// `DISABLE_KERNEL_MAPPING`: every layer uses its Rust forward.
    pub disable_mapping: bool,
    /// `LOCAL_KERNELS`, unparsed.
    pub local_kernels: Option<String>,
}

impl Settings {
    /// Reads `DISABLE_KERNEL_MAPPING` and `LOCAL_KERNELS`.
    pub fn from_env() -> Self {
        Settings {
            disable_mapping: env::flag(env::DISABLE_MAPPING),
            local_kernels: env::var(env::LOCAL_KERNELS).filter(|v| !v.trim().is_empty()),
        }
    }
}
