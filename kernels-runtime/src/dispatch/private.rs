//! What the code `#[kernelize]` generates calls: the per-layer static ([`Layer`]) and the call
//! itself. Not a public API: it changes with the macro.

use std::fmt;
use std::sync::atomic::{AtomicPtr, Ordering};

use crate::ffi::{Arg, DLDevice, KernelFunction, MAX_ARGS, Value};
use crate::registry::Registry;
use crate::variant::BackendKind;

use super::adapter::{KernelTensor, KernelValue};
use super::cache::{Resolution, SLOTS, State, log_resolution, slot_index, state};
use super::decide::{Choice, decide};
use super::disable;
use super::mode::{Mode, Settings, is_deterministic, is_strict};
use super::platform_for;
use super::target::Target;
use super::verify::{self, Difference, VerifyState};

pub use super::verify::CompareError;
pub use super::{DispatchError, KernelArg, KernelOutput};
pub use crate::registry::Tolerance;

/// The per-layer static of a `kernel_<forward>` method: its names and its decision slots.
pub struct Layer {
    name: &'static str,
    type_name: &'static str,
    module: &'static str,
    args: &'static [&'static str],
    registry: &'static Registry,
    slots: [AtomicPtr<Resolution>; SLOTS],
}

impl fmt::Debug for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Layer").field("name", &self.name).field("type_name", &self.type_name).finish_non_exhaustive()
    }
}

/// Why a `#[kernelize(layer = …)]` name cannot be served by a registry: its text, or empty
/// when the registry maps the layer. Built at compile time by [`check_layer`].
#[derive(Debug, Clone, Copy)]
pub struct UnknownLayer {
    text: [u8; UnknownLayer::CAPACITY],
    len: usize,
}

impl UnknownLayer {
    /// The longest text; the list of layers is cut there.
    const CAPACITY: usize = 512;

    /// Whether the registry maps the layer.
    pub const fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The text (up to the last whole character when cut).
    pub const fn as_str(&self) -> &str {
        let text = self.text.split_at(self.len).0;
        match std::str::from_utf8(text) {
            Ok(s) => s,
            Err(e) => match std::str::from_utf8(text.split_at(e.valid_up_to()).0) {
                Ok(s) => s,
                Err(_) => "",
            },
        }
    }

    const fn push(mut self, s: &str) -> Self {
        let bytes = s.as_bytes();
        let mut i = 0;
        while i < bytes.len() && self.len < Self::CAPACITY {
            self.text[self.len] = bytes[i];
            self.len += 1;
            i += 1;
        }
        self
    }
}

const fn same(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// Checks at compile time that `registry` (the crate's `kernels.toml`) has a `[layers.<layer>]`
/// table: the generated code panics in a `const` with the text when it has not.
pub const fn check_layer(registry: &Registry, layer: &str) -> UnknownLayer {
    let layers = registry.layers;
    let mut i = 0;
    while i < layers.len() {
        if same(layers[i].layer, layer) {
            return UnknownLayer { text: [0; UnknownLayer::CAPACITY], len: 0 };
        }
        i += 1;
    }
    let mut text = UnknownLayer { text: [0; UnknownLayer::CAPACITY], len: 0 }
        .push("layer `")
        .push(layer)
        .push("` is not in kernels.toml: add a [layers.")
        .push(layer)
        .push("] table mapping it to a kernel");
    if layers.is_empty() {
        return text.push(" (kernels.toml maps no layers)");
    }
    text = text.push(" (layers there: ");
    // Each name once, in the registry's order.
    let mut i = 0;
    while i < layers.len() {
        let mut j = 0;
        while j < i && !same(layers[j].layer, layers[i].layer) {
            j += 1;
        }
        if j == i {
            if i > 0 {
                text = text.push(", ");
            }
            text = text.push(layers[i].layer);
        }
        i += 1;
    }
    text.push(")")
}

/// A resolved kernel function of a layer.
#[derive(Debug, Clone, Copy)]
pub struct Bound {
    function: &'static KernelFunction,
    resolution: &'static Resolution,
}

impl Layer {
    /// A layer with no decision made yet.
    pub const fn new(
        name: &'static str,
        type_name: &'static str,
        module: &'static str,
        args: &'static [&'static str],
        registry: &'static Registry,
    ) -> Self {
        Layer {
            name,
            type_name,
            module,
            args,
            registry,
            slots: [const { AtomicPtr::new(std::ptr::null_mut()) }; SLOTS],
        }
    }

    /// The kernel to call on `device` in the current mode (and deterministic mode or not),
    /// `None` for the Rust forward, or the strict-mode error.
    #[inline]
    pub fn kernel(&'static self, device: Option<DLDevice>) -> Result<Option<Bound>, DispatchError> {
        let target = Target::of(device);
        let mode = Mode::current();
        let deterministic = is_deterministic();
        let resolution = match slot_index(target, mode, deterministic) {
            Some(i) => {
                let p = self.slots[i].load(Ordering::Acquire);
                if p.is_null() {
                    self.resolve(target, mode, deterministic, Some(i))
                } else {
                    // SAFETY: slots only ever hold pointers to leaked (never freed)
                    // resolutions, published with Release after being fully written.
                    unsafe { &*p }
                }
            }
            None => self.resolve(target, mode, deterministic, None),
        };
        match &resolution.function {
            Some(_) if disable::any_at_run_time() && resolution.switched_off().is_some() => Ok(None),
            Some(function) => Ok(Some(Bound { function, resolution })),
            None if is_strict() && !resolution.is_disabled() => Err(DispatchError::Strict { resolution }),
            None => Ok(None),
        }
    }

    #[cold]
    #[inline(never)]
    fn resolve(
        &'static self,
        target: Target,
        mode: Mode,
        deterministic: bool,
        slot: Option<usize>,
    ) -> &'static Resolution {
        let key = (self as *const Layer as usize, target, mode, deterministic);
        let made = |state: &State| match slot {
            Some(i) => {
                let p = self.slots[i].load(Ordering::Acquire);
                // SAFETY: as in `kernel`.
                (!p.is_null()).then(|| unsafe { &*p })
            }
            None => state.overflow.get(&key).copied(),
        };
        if let Some(r) = made(&state()) {
            return r;
        }
        // Deciding may load libraries (file I/O, dlopen, initialisers): it runs without the
        // dispatch lock, so other layers and `report()` are never held up behind it. Two
        // threads may decide the same slot at once; the first to publish wins, and the
        // loader makes each library load only once.
        // The slot's setting, even if another thread has changed it since.
        let settings = Settings { deterministic, ..Settings::from_env() };
        let kind = match target {
            Target::Device(kind, _) => kind,
            Target::Unsupported(_) => BackendKind::Cpu,
        };
        let decision = decide(self.registry, self.name, target, mode, &settings, platform_for(kind));
        let mut state = state();
        if let Some(r) = made(&state) {
            return r;
        }
        let resolution: &'static Resolution = Box::leak(Box::new(Resolution {
            layer: self.name,
            type_name: self.type_name,
            module: self.module,
            args: self.args,
            target,
            mode,
            deterministic,
            choice: decision.choice,
            function: decision.function,
            verify: VerifyState::default(),
        }));
        log_resolution(resolution);
        state.resolutions.push(resolution);
        if !state.registries.iter().any(|r| std::ptr::eq(*r, self.registry)) {
            state.registries.push(self.registry);
        }
        match slot {
            Some(i) => self.slots[i].store(std::ptr::from_ref(resolution).cast_mut(), Ordering::Release),
            None => {
                state.overflow.insert(key, resolution);
            }
        }
        resolution
    }
}

/// Calls the bound kernel with `args` (as written in `#[kernelize(args = …)]`).
#[inline]
pub fn call<const N: usize>(bound: Bound, args: &[KernelValue<'_>; N]) -> Result<(), DispatchError> {
    const { assert!(N <= MAX_ARGS, "a kernel call takes at most MAX_ARGS arguments") };
    let layer = bound.resolution.layer;
    let mut stream = None;
    for (i, v) in args.iter().enumerate() {
        match v {
            Err(error) => {
                let name = bound.resolution.args.get(i).copied().unwrap_or("?");
                return Err(DispatchError::Argument { layer, index: i, name, error: error.clone() });
            }
            Ok(Value::Tensor(KernelTensor::Held(held))) if stream.is_none() => stream = held.stream(),
            Ok(_) => {}
        }
    }
    let packed: [Arg<'_>; N] = std::array::from_fn(|i| match &args[i] {
        Ok(value) => value.as_ref().map_tensor(KernelTensor::view),
        Err(_) => Value::None,
    });
    // The call's contract: the kernel function and its arguments were declared together,
    // by the layer's mapping in kernels.toml and its `#[kernelize(args = …)]` (see the
    // module docs); the tensors borrow live memory for the duration of the call (held
    // tensors stay valid while `args` lives), and the outputs are borrowed mutably from
    // allocations nothing else can reach, which the kernel writes in full.
    // SAFETY: the call's contract (above); the stream is the held tensor's device's.
    let result = unsafe { bound.function.call_with_stream(stream, &packed) };
    result.map_err(|source| DispatchError::Kernel { layer, source: Box::new(source) })
}

/// Whether verify mode checks this call of the bound kernel against the layer's Rust forward.
#[inline]
pub fn verify_due(bound: Bound) -> bool {
    verify::is_on() && due(bound.resolution)
}

#[cold]
#[inline(never)]
fn due(r: &'static Resolution) -> bool {
    let Choice::Kernel(k) = &r.choice else { return false };
    let setting = verify::setting(r.layer, &k.kernel, &k.repo);
    setting != verify::Verify::Off && r.verify.count(setting)
}

/// Verify mode's check of one call, out of line: runs the Rust forward, compares each output
/// of `result` (the kernel's) with the forward's under the mapping's tolerance, and records it.
#[cold]
#[inline(never)]
pub fn verify<R, const N: usize>(
    bound: Bound,
    result: &R,
    forward: impl FnOnce() -> R,
    compare: impl FnOnce(&R, &R, Option<Tolerance>) -> Result<[Result<Difference, CompareError>; N], CompareError>,
) -> Result<(), DispatchError> {
    let reference = forward();
    verified(bound, compare(result, &reference, tolerance(bound)))
}

/// The tolerance the bound kernel's mapping declares, if any.
fn tolerance(bound: Bound) -> Option<Tolerance> {
    match &bound.resolution.choice {
        Choice::Kernel(k) => k.tolerance,
        Choice::Fallback(_) => None,
    }
}

/// Records how far each output of a verified call is from the forward's (`Err` when the
/// forward failed); in strict mode, an output beyond its tolerance or one that could not be
/// compared is an error.
fn verified<const N: usize>(
    bound: Bound,
    outputs: Result<[Result<Difference, CompareError>; N], CompareError>,
) -> Result<(), DispatchError> {
    let r = bound.resolution;
    let outputs: Vec<Result<Difference, CompareError>> = match outputs {
        Ok(o) => o.into_iter().collect(),
        Err(e) => vec![Err(e)],
    };
    if r.verify.record(&outputs) {
        tracing::debug!(layer = r.layer, target = %r.target, "{r}: verified against the Rust forward: {}", describe(&outputs));
        return Ok(());
    }
    tracing::warn!(layer = r.layer, target = %r.target, "{r}: verify mode: {}", describe(&outputs));
    if is_strict() {
        return Err(DispatchError::Verify { resolution: r, found: describe(&outputs) });
    }
    Ok(())
}

fn describe(outputs: &[Result<Difference, CompareError>]) -> String {
    let one = |o: &Result<Difference, CompareError>| match o {
        Ok(d) => d.to_string(),
        Err(e) => format!("not compared: {e}"),
    };
    match outputs {
        [o] => one(o),
        _ => outputs.iter().enumerate().map(|(i, o)| format!("output {i}: {}", one(o))).collect::<Vec<_>>().join("; "),
    }
}

/// Converts a dispatch error into the layer's error type.
#[inline]
pub fn layer_error<E: From<DispatchError>>(error: DispatchError) -> E {
    E::from(error)
}
