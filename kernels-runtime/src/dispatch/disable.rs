//! Turning kernels off by name, without turning off the rest: `KERNELS_DISABLE` (layer names,
//! kernel names or repos, comma separated), and at run time for the whole process
//! ([`disable`]/[`enable`]) or for the current thread within a scope ([`with_disabled`]).
//!
//! Off, this costs each kernelized call one relaxed atomic load and one thread-local read.

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, RwLock};

use crate::env;
use crate::registry::Registry;

/// What turned a layer's kernel off.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Switch {
    /// `DISABLE_KERNEL_MAPPING`: every layer.
    All,
    /// `KERNELS_DISABLE`, by the entry that names the layer, its kernel or the kernel's repo.
    Env(String),
    /// [`disable`] or [`with_disabled`], by the name given.
    Api(String),
}

impl fmt::Display for Switch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Switch::All => write!(f, "{} is set", env::DISABLE_MAPPING),
            Switch::Env(name) => write!(f, "{} names `{name}`", env::DISABLE),
            Switch::Api(name) => write!(f, "turned off at run time (`dispatch::disable(\"{name}\")`)"),
        }
    }
}

/// The names in a `KERNELS_DISABLE` value: comma separated, blanks ignored.
pub(super) fn parse(value: &str) -> Vec<String> {
    value.split(',').map(str::trim).filter(|n| !n.is_empty()).map(str::to_owned).collect()
}

/// Whether `name` names the layer, its kernel's local name or the kernel's repo.
pub(super) fn names(name: &str, layer: &str, kernel: &str, repo: &str) -> bool {
    name == layer || name == kernel || name == repo
}

static PROCESS: RwLock<Vec<String>> = RwLock::new(Vec::new());
static PROCESS_ANY: AtomicBool = AtomicBool::new(false);

thread_local! {
    static SCOPED: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
    static SCOPED_ANY: Cell<bool> = const { Cell::new(false) };
}

/// Turns off, for the whole process, the kernels of the layer, kernel or repo `name`: those
/// layers use their Rust forward until [`enable`]. Strict mode does not count this as an error.
pub fn disable(name: &str) {
    let mut names = PROCESS.write().unwrap_or_else(|e| e.into_inner());
    if !names.iter().any(|n| n == name) {
        names.push(name.to_owned());
    }
    PROCESS_ANY.store(true, Ordering::Release);
}

/// Undoes [`disable`] for `name`; returns whether it was disabled.
pub fn enable(name: &str) -> bool {
    let mut names = PROCESS.write().unwrap_or_else(|e| e.into_inner());
    let before = names.len();
    names.retain(|n| n != name);
    PROCESS_ANY.store(!names.is_empty(), Ordering::Release);
    names.len() != before
}

/// Runs `f` with the kernels of `names` (layers, kernels or repos) turned off on the current
/// thread, restoring the previous set afterwards (also when `f` panics), as [`with_mode`]
/// does for the mode.
///
/// [`with_mode`]: super::with_mode
pub fn with_disabled<R>(names: &[&str], f: impl FnOnce() -> R) -> R {
    struct Restore(usize);
    impl Drop for Restore {
        fn drop(&mut self) {
            SCOPED.with(|s| {
                let mut s = s.borrow_mut();
                s.truncate(self.0);
                SCOPED_ANY.with(|any| any.set(!s.is_empty()));
            });
        }
    }
    let restore = SCOPED.with(|s| {
        let mut s = s.borrow_mut();
        let before = s.len();
        s.extend(names.iter().map(|n| (*n).to_owned()));
        SCOPED_ANY.with(|any| any.set(!s.is_empty()));
        Restore(before)
    });
    let out = f();
    drop(restore);
    out
}

/// Whether any run-time switch is on (for this thread or the process): the fast check.
#[inline]
pub(super) fn any_at_run_time() -> bool {
    PROCESS_ANY.load(Ordering::Relaxed) || SCOPED_ANY.with(Cell::get)
}

/// The run-time switch that turns off `layer` using `kernel` of `repo`, if one does.
#[cold]
pub(super) fn at_run_time(layer: &str, kernel: &str, repo: &str) -> Option<Switch> {
    // `SCOPED` owns a `Vec`, so its first use on a thread registers a destructor, which takes
    // glibc's loader lock: only threads that entered `with_disabled` touch it, so that no
    // thread (a `report()` among them) waits behind another thread's library load here.
    let scoped = SCOPED_ANY
        .with(Cell::get)
        .then(|| SCOPED.with(|s| s.borrow().iter().find(|n| names(n, layer, kernel, repo)).cloned()))
        .flatten();
    scoped
        .or_else(|| {
            if !PROCESS_ANY.load(Ordering::Acquire) {
                return None;
            }
            let process = PROCESS.read().unwrap_or_else(|e| e.into_inner());
            process.iter().find(|n| names(n, layer, kernel, repo)).cloned()
        })
        .map(Switch::Api)
}

/// Warns once per registry about `KERNELS_DISABLE` entries that name no layer, kernel or repo
/// of it, listing those it has.
pub(super) fn warn_unknown(registry: &Registry, disabled: &[String]) {
    static WARNED: Mutex<Option<HashSet<usize>>> = Mutex::new(None);
    let unknown: Vec<&str> = disabled
        .iter()
        .map(String::as_str)
        .filter(|n| {
            !registry.layers.iter().any(|l| l.layer == *n)
                && !registry.kernels.iter().any(|k| k.name == *n || k.repo == *n)
        })
        .collect();
    if unknown.is_empty() {
        return;
    }
    let mut warned = WARNED.lock().unwrap_or_else(|e| e.into_inner());
    if !warned.get_or_insert_with(HashSet::new).insert(std::ptr::from_ref(registry) as usize) {
        return;
    }
    let mut layers: Vec<&str> = registry.layers.iter().map(|l| l.layer).collect();
    layers.dedup();
    let kernels: Vec<String> = registry.kernels.iter().map(|k| format!("{} ({})", k.name, k.repo)).collect();
    tracing::warn!(
        "{} names {}, which this binary does not know; its layers are {} and its kernels {}",
        env::DISABLE,
        unknown.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", "),
        if layers.is_empty() { "none".to_owned() } else { layers.join(", ") },
        if kernels.is_empty() { "none".to_owned() } else { kernels.join(", ") },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_comma_separated_and_trimmed() {
        assert_eq!(parse(" RMSNorm, ,cuda-ops ,"), ["RMSNorm", "cuda-ops"]);
        assert!(parse("").is_empty());
    }

    #[test]
    fn scoped_switches_nest_and_are_restored_on_panic() {
        assert!(at_run_time("A", "k", "o/k").is_none());
        with_disabled(&["A"], || {
            assert_eq!(at_run_time("A", "k", "o/k"), Some(Switch::Api("A".into())));
            with_disabled(&["o/k"], || assert!(at_run_time("B", "k", "o/k").is_some()));
            assert!(at_run_time("B", "k", "o/k").is_none());
        });
        assert!(!SCOPED_ANY.with(Cell::get));
        let caught = std::panic::catch_unwind(|| with_disabled(&["A"], || panic!("inside")));
        assert!(caught.is_err());
        assert!(at_run_time("A", "k", "o/k").is_none() && !SCOPED_ANY.with(Cell::get));
    }
}
