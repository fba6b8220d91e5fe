//! Verify mode: run a layer's Rust forward beside its kernel on chosen calls and record how far
//! the kernel's outputs are from the forward's ([`Difference`], against a [`Tolerance`]).
//!
//! Turned on by `KERNELS_VERIFY` (`1` for every layer, or layer, kernel and repo names, comma
//! separated), [`set_verify`] (every layer) or [`set_verify_for`] (one name). By default the
//! first call of each layer on each device is checked; `KERNELS_VERIFY_EVERY=N` or
//! [`Verify::Every`] checks every Nth. Results go to the log and to [`report()`](super::report);
//! in strict mode a difference beyond tolerance, or an output that cannot be compared, is an
//! error ([`DispatchError::Verify`](super::DispatchError::Verify)).
//!
//! Off, this costs each kernelized call one relaxed atomic load.

use std::fmt;
use std::num::NonZeroU64;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock, RwLock};

use crate::env;
use crate::ffi::{DLDataType, Element};
use crate::registry::Tolerance;

use super::adapter::AdapterError;
use super::disable;

/// How often a layer's kernel is checked against its Rust forward.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verify {
    /// Never.
    Off,
    /// The first call on each device (and mode).
    First,
    /// The first call and every Nth after it, on each device (and mode).
    Every(NonZeroU64),
}

impl fmt::Display for Verify {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Verify::Off => f.write_str("off"),
            Verify::First => f.write_str("the first call"),
            Verify::Every(n) => write!(f, "every {n}th call"),
        }
    }
}

/// What the environment asks for, read once.
#[derive(Debug, Clone, PartialEq, Eq)]
struct EnvVerify {
    /// `None`: every layer; else the names.
    names: Option<Vec<String>>,
    every: Verify,
}

fn parse_env(verify: Option<&str>, every: Option<&str>) -> Option<EnvVerify> {
    let verify = verify?.trim();
    let names = if verify.parse::<i64>().is_ok()
        || ["true", "yes", "on", "false", "no", "off"].contains(&verify.to_ascii_lowercase().as_str())
    {
        if !env::is_true(verify) {
            return None;
        }
        None
    } else {
        let names = disable::parse(verify);
        if names.is_empty() {
            return None;
        }
        Some(names)
    };
    let every = match every.map(str::trim) {
        None => Verify::First,
        Some(n) => match n.parse::<NonZeroU64>() {
            Ok(n) => Verify::Every(n),
            Err(_) => {
                tracing::warn!("{} is {n:?}, not a positive integer: checking first calls only", env::VERIFY_EVERY);
                Verify::First
            }
        },
    };
    Some(EnvVerify { names, every })
}

fn from_env() -> &'static Option<EnvVerify> {
    static ENV: OnceLock<Option<EnvVerify>> = OnceLock::new();
    ENV.get_or_init(|| parse_env(env::var(env::VERIFY).as_deref(), env::var(env::VERIFY_EVERY).as_deref()))
}

/// The run-time settings: [`set_verify`] and [`set_verify_for`].
struct Settings {
    all: Option<Verify>,
    names: Vec<(String, Verify)>,
}

static SETTINGS: RwLock<Settings> = RwLock::new(Settings { all: None, names: Vec::new() });

const UNSET: u8 = 0;
const OFF: u8 = 1;
const ON: u8 = 2;
/// Whether anything may be verified: the fast check.
static ANY: AtomicU8 = AtomicU8::new(UNSET);

fn refresh(settings: &Settings) {
    let env_any = from_env().is_some();
    let on =
        settings.names.iter().any(|(_, v)| *v != Verify::Off) || settings.all.map_or(env_any, |v| v != Verify::Off);
    ANY.store(if on { ON } else { OFF }, Ordering::Relaxed);
}

/// Verifies every layer as `verify` says, overriding `KERNELS_VERIFY` (names set with
/// [`set_verify_for`] keep their own setting).
pub fn set_verify(verify: Verify) {
    let mut settings = SETTINGS.write().unwrap_or_else(|e| e.into_inner());
    settings.all = Some(verify);
    refresh(&settings);
}

/// Verifies the layers named `name` (a layer, a kernel's local name or its repo) as `verify`
/// says, overriding [`set_verify`] and `KERNELS_VERIFY` for them.
pub fn set_verify_for(name: &str, verify: Verify) {
    let mut settings = SETTINGS.write().unwrap_or_else(|e| e.into_inner());
    settings.names.retain(|(n, _)| n != name);
    settings.names.push((name.to_owned(), verify));
    refresh(&settings);
}

/// Whether verify mode may check any call.
#[inline]
pub(super) fn is_on() -> bool {
    match ANY.load(Ordering::Relaxed) {
        OFF => false,
        ON => true,
        _ => {
            refresh(&SETTINGS.read().unwrap_or_else(|e| e.into_inner()));
            ANY.load(Ordering::Relaxed) == ON
        }
    }
}

/// How the layer `layer` using `kernel` of `repo` is verified now.
pub(super) fn setting(layer: &str, kernel: &str, repo: &str) -> Verify {
    let settings = SETTINGS.read().unwrap_or_else(|e| e.into_inner());
    if let Some((_, v)) = settings.names.iter().rev().find(|(n, _)| disable::names(n, layer, kernel, repo)) {
        return *v;
    }
    if let Some(v) = settings.all {
        return v;
    }
    match from_env() {
        Some(EnvVerify { names: None, every }) => *every,
        Some(EnvVerify { names: Some(names), every })
            if names.iter().any(|n| disable::names(n, layer, kernel, repo)) =>
        {
            *every
        }
        _ => Verify::Off,
    }
}

/// Whether the call numbered `call` (from 0) is checked under `verify`.
pub(super) fn is_due(verify: Verify, call: u64) -> bool {
    match verify {
        Verify::Off => false,
        Verify::First => call == 0,
        Verify::Every(n) => call.is_multiple_of(n.get()),
    }
}

/// How far one output of a kernel is from the forward's, element by element.
#[derive(Debug, Clone, PartialEq)]
pub struct Difference {
    /// Elements compared.
    pub elements: usize,
    /// The largest `|kernel - forward|` (infinite where one side is not finite and they differ).
    pub max_abs: f64,
    /// The largest `|kernel - forward| / |forward|` (infinite where the forward is 0 and the kernel not).
    pub max_rel: f64,
    /// Elements beyond the tolerance.
    pub beyond: usize,
    /// The first element beyond the tolerance: its index (row-major) and the two values.
    pub first_beyond: Option<(usize, f64, f64)>,
    /// The tolerance applied.
    pub tolerance: Tolerance,
}

impl Difference {
    /// Compares `kernel` with `forward` (same length) under `tolerance`.
    pub fn between(
        kernel: impl IntoIterator<Item = f64>,
        forward: impl IntoIterator<Item = f64>,
        tolerance: Tolerance,
    ) -> Difference {
        let mut d = Difference { elements: 0, max_abs: 0.0, max_rel: 0.0, beyond: 0, first_beyond: None, tolerance };
        for (i, (k, r)) in kernel.into_iter().zip(forward).enumerate() {
            d.elements += 1;
            let same = (k.is_nan() && r.is_nan()) || k == r;
            let abs = if same { 0.0 } else { (k - r).abs() };
            let abs = if abs.is_nan() { f64::INFINITY } else { abs };
            let rel = if same {
                0.0
            } else if r == 0.0 {
                f64::INFINITY
            } else {
                abs / r.abs()
            };
            d.max_abs = d.max_abs.max(abs);
            d.max_rel = d.max_rel.max(rel);
            if !tolerance.accepts(k, r) {
                d.beyond += 1;
                d.first_beyond.get_or_insert((i, k, r));
            }
        }
        d
    }

    /// Compares two host buffers of tensor elements with the tolerance given, else the dtype's
    /// default ([`Tolerance::for_dtype`]).
    pub fn of_elements<T: Element>(
        kernel: &[T],
        forward: &[T],
        tolerance: Option<Tolerance>,
    ) -> Result<Difference, CompareError> {
        if kernel.len() != forward.len() {
            return Err(CompareError::Shape { kernel: vec![kernel.len()], forward: vec![forward.len()] });
        }
        let (Some(k), Some(f)) = (to_f64(kernel), to_f64(forward)) else {
            return Err(CompareError::Dtype(T::DTYPE));
        };
        Ok(Difference::between(k, f, tolerance.unwrap_or_else(|| Tolerance::for_dtype(T::DTYPE))))
    }

    /// Whether every element is within the tolerance.
    pub fn is_within(&self) -> bool {
        self.beyond == 0
    }
}

impl fmt::Display for Difference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "max |Δ| {:.3e}, max rel {:.3e} over {} elements", self.max_abs, self.max_rel, self.elements)?;
        match self.first_beyond {
            None => write!(f, ", within {}", self.tolerance),
            Some((i, k, r)) => {
                write!(f, ", {} beyond {} (first at element {i}: kernel {k}, forward {r})", self.beyond, self.tolerance)
            }
        }
    }
}

/// The values of tensor elements, or `None` for a dtype without a numeric reading.
fn to_f64<T: Element>(data: &[T]) -> Option<Vec<f64>> {
    // SAFETY: `Element` types have no padding and are `DTYPE.bits / 8 * lanes` bytes long, so
    // their memory is initialised bytes of that length.
    let bytes = unsafe { std::slice::from_raw_parts(data.as_ptr().cast::<u8>(), std::mem::size_of_val(data)) };
    let d = T::DTYPE;
    if d.lanes != 1 {
        return None;
    }
    let read = |f: fn(&[u8]) -> f64, width: usize| Some(bytes.chunks_exact(width).map(f).collect());
    fn n(c: &[u8]) -> [u8; 8] {
        let mut a = [0; 8];
        a[..c.len()].copy_from_slice(c);
        a
    }
    match d {
        _ if d == DLDataType::F16 => read(|c| half::f16::from_ne_bytes([c[0], c[1]]).to_f64(), 2),
        _ if d == DLDataType::BF16 => read(|c| half::bf16::from_ne_bytes([c[0], c[1]]).to_f64(), 2),
        _ if d == DLDataType::F32 => read(|c| f64::from(f32::from_ne_bytes([c[0], c[1], c[2], c[3]])), 4),
        _ if d == DLDataType::F64 => read(|c| f64::from_ne_bytes(n(c)), 8),
        _ if d == DLDataType::I8 => read(|c| f64::from(c[0] as i8), 1),
        _ if d == DLDataType::U8 => read(|c| f64::from(c[0]), 1),
        _ if d == DLDataType::I16 => read(|c| f64::from(i16::from_ne_bytes([c[0], c[1]])), 2),
        _ if d == DLDataType::U16 => read(|c| f64::from(u16::from_ne_bytes([c[0], c[1]])), 2),
        _ if d == DLDataType::I32 => read(|c| f64::from(i32::from_ne_bytes([c[0], c[1], c[2], c[3]])), 4),
        _ if d == DLDataType::U32 => read(|c| f64::from(u32::from_ne_bytes([c[0], c[1], c[2], c[3]])), 4),
        _ if d == DLDataType::I64 => read(|c| i64::from_ne_bytes(n(c)) as f64, 8),
        _ if d == DLDataType::U64 => read(|c| u64::from_ne_bytes(n(c)) as f64, 8),
        _ => None,
    }
}

/// An output that could not be compared with the forward's.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum CompareError {
    /// The output type has no [`KernelOutput::difference`](super::KernelOutput::difference).
    #[error("`{0}` cannot be compared with the forward's output (it does not implement `KernelOutput::difference`)")]
    Unsupported(&'static str),
    /// The shapes differ.
    #[error("the kernel's output has shape {kernel:?}, the forward's {forward:?}")]
    Shape {
        /// The kernel output's shape.
        kernel: Vec<usize>,
        /// The forward output's shape.
        forward: Vec<usize>,
    },
    /// The element type has no numeric reading.
    #[error("elements of dtype {0} cannot be compared")]
    Dtype(DLDataType),
    /// The dtypes differ.
    #[error("the kernel's output is {kernel}, the forward's {forward}")]
    DtypeMismatch {
        /// The kernel output's dtype.
        kernel: String,
        /// The forward output's dtype.
        forward: String,
    },
    /// The forward returned an error.
    #[error("the Rust forward failed")]
    ForwardFailed,
    /// The tensor library failed reading the outputs.
    #[error(transparent)]
    Adapter(#[from] AdapterError),
}

/// What verify mode found for one layer on one device and mode, so far.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Verification {
    /// Calls made since verify mode was first on.
    pub calls: u64,
    /// Calls checked.
    pub checks: u64,
    /// Checks with an output beyond its tolerance.
    pub beyond: u64,
    /// Checks that could not compare.
    pub failed: u64,
    /// The largest `|kernel - forward|` seen.
    pub max_abs: f64,
    /// The largest relative difference seen.
    pub max_rel: f64,
    /// The outputs of the last check that went beyond tolerance, else of the last check.
    pub last: Vec<Difference>,
    /// Why the last failed check could not compare.
    pub last_error: Option<String>,
}

impl Verification {
    /// Whether every check so far compared, within tolerance.
    pub fn is_clean(&self) -> bool {
        self.beyond == 0 && self.failed == 0
    }
}

impl fmt::Display for Verification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} of {} calls checked against the Rust forward", self.checks, self.calls)?;
        if self.checks > self.failed {
            write!(f, ": max |Δ| {:.3e}, max rel {:.3e}", self.max_abs, self.max_rel)?;
        }
        if self.beyond > 0 {
            write!(f, "; {} beyond tolerance", self.beyond)?;
        } else if self.checks > self.failed {
            f.write_str("; all within tolerance")?;
        }
        if let Some(e) = &self.last_error {
            write!(f, "; {} could not compare: {e}", self.failed)?;
        }
        for (i, d) in self.last.iter().enumerate() {
            write!(f, "\n  output {i}: {d}")?;
        }
        Ok(())
    }
}

/// A resolution's verify-mode state.
#[derive(Debug, Default)]
pub(super) struct VerifyState {
    calls: AtomicU64,
    record: Mutex<Verification>,
}

impl VerifyState {
    /// Counts a call; whether it is due for a check under `verify`.
    pub(super) fn count(&self, verify: Verify) -> bool {
        is_due(verify, self.calls.fetch_add(1, Ordering::Relaxed))
    }

    /// Records a check; returns whether it was clean.
    pub(super) fn record(&self, outputs: &[Result<Difference, CompareError>]) -> bool {
        let mut r = self.record.lock().unwrap_or_else(|e| e.into_inner());
        r.checks += 1;
        let mut clean = true;
        let mut beyond = false;
        let mut diffs = Vec::with_capacity(outputs.len());
        for o in outputs {
            match o {
                Ok(d) => {
                    r.max_abs = r.max_abs.max(d.max_abs);
                    r.max_rel = r.max_rel.max(d.max_rel);
                    beyond |= !d.is_within();
                    diffs.push(d.clone());
                }
                Err(e) => {
                    clean = false;
                    r.last_error = Some(e.to_string());
                }
            }
        }
        if !clean {
            r.failed += 1;
        }
        if beyond {
            r.beyond += 1;
        }
        if beyond || r.beyond == 0 {
            r.last = diffs;
        }
        clean && !beyond
    }

    pub(super) fn snapshot(&self) -> Verification {
        let mut v = self.record.lock().unwrap_or_else(|e| e.into_inner()).clone();
        v.calls = self.calls.load(Ordering::Relaxed);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_values() {
        assert_eq!(parse_env(None, None), None);
        assert_eq!(parse_env(Some("0"), None), None);
        assert_eq!(parse_env(Some("off"), Some("4")), None);
        assert_eq!(parse_env(Some("1"), None), Some(EnvVerify { names: None, every: Verify::First }));
        assert_eq!(
            parse_env(Some("RMSNorm, cuda-ops"), Some("10")),
            Some(EnvVerify {
                names: Some(vec!["RMSNorm".into(), "cuda-ops".into()]),
                every: Verify::Every(NonZeroU64::new(10).unwrap())
            })
        );
        assert_eq!(parse_env(Some("TRUE"), Some("zero")), Some(EnvVerify { names: None, every: Verify::First }));
    }

    #[test]
    fn due_calls() {
        let every3 = Verify::Every(NonZeroU64::new(3).unwrap());
        let due: Vec<u64> = (0..7).filter(|&c| is_due(every3, c)).collect();
        assert_eq!(due, [0, 3, 6]);
        assert!(is_due(Verify::First, 0) && !is_due(Verify::First, 1));
        assert!(!is_due(Verify::Off, 0));
    }

    #[test]
    fn differences_follow_the_tolerance_rule() {
        let t = Tolerance { atol: 1e-3, rtol: 1e-2 };
        let d = Difference::between(
            [1.0, 2.0, 100.5, f64::NAN, f64::INFINITY],
            [1.0, 2.0005, 100.0, f64::NAN, f64::INFINITY],
            t,
        );
        assert_eq!(d.elements, 5);
        assert!(d.is_within(), "{d}");
        assert!((d.max_abs - 0.5).abs() < 1e-12);
        let d = Difference::between([1.0, 0.5, f64::NAN, 0.0], [1.0, 0.0, 1.0, 0.0], t);
        assert_eq!(d.beyond, 2);
        assert_eq!(d.first_beyond, Some((1, 0.5, 0.0)));
        assert_eq!(d.max_rel, f64::INFINITY);
        assert_eq!(d.max_abs, f64::INFINITY);
        assert!(
            d.to_string().contains("2 beyond atol 1e-3, rtol 1e-2 (first at element 1: kernel 0.5, forward 0)"),
            "{d}"
        );
    }

    #[test]
    fn element_buffers_use_the_dtype_default() {
        let f = [1.0f32, 2.0, 3.0];
        let d = Difference::of_elements(&[1.0f32, 2.0, 3.0 + 1e-6], &f, None).unwrap();
        assert!(d.is_within(), "{d}");
        assert_eq!(d.tolerance, Tolerance::for_dtype(DLDataType::F32));
        let d = Difference::of_elements(&[1.0f32, 2.0, 3.1], &f, None).unwrap();
        assert_eq!(d.beyond, 1);
        let b = |v: f32| half::bf16::from_f32(v);
        assert!(Difference::of_elements(&[b(1.0), b(2.0)], &[b(1.0), b(2.01)], None).unwrap().is_within());
        assert!(!Difference::of_elements(&[3i32], &[4i32], None).unwrap().is_within());
        assert!(matches!(Difference::of_elements(&[1u8], &[1u8, 2], None), Err(CompareError::Shape { .. })));
    }

    #[test]
    fn records_keep_the_worst() {
        let state = VerifyState::default();
        let t = Tolerance { atol: 0.0, rtol: 0.0 };
        assert!(state.count(Verify::First) && !state.count(Verify::First));
        assert!(state.record(&[Ok(Difference::between([1.0], [1.0], t))]));
        assert!(!state.record(&[Ok(Difference::between([2.0], [1.0], t)), Err(CompareError::ForwardFailed)]));
        assert!(state.record(&[Ok(Difference::between([1.0], [1.0], t))]));
        let v = state.snapshot();
        assert_eq!((v.calls, v.checks, v.beyond, v.failed), (2, 3, 1, 1));
        assert_eq!(v.max_abs, 1.0);
        assert_eq!(v.last.len(), 1, "the beyond check stays the one shown");
        assert_eq!(v.last[0].beyond, 1);
        assert!(!v.is_clean());
        assert!(v.to_string().contains("1 beyond tolerance"), "{v}");
    }
}
