//! Two GPUs in one process: the latency benchmark's `#[kernelize]`d layers (`RMSNorm`,
//! `SiluAndMul`) on `cuda:0` and `cuda:1` candle tensors, each device on its own non-default
//! stream, in strict mode. Runs when the CUDA driver reports at least two devices; otherwise it
//! prints a `SKIPPED` line and `RESULT two-gpus status=skipped reason=…` and counts no check.
//!
//! On a machine with two GPUs: `bash scripts/build-gpu-check.sh` on the build machine, then on
//! the GPU machine `bash scripts/gpu-check.sh .device.tar.xz` (or the unpacked `.device`
//! folder); `gpu-check-cuda` runs this case itself (`RESULT two-gpus …` lines, counted in
//! `RESULT summary`).
//!
//! The checks, each a `RESULT two-gpus case=… status=pass|fail` line:
//!
//! 0. `context-none` and `result-none` (one device, run even with fewer than two): with no
//!    context current on the thread, a call on `cuda:0` (kernelized, or through
//!    `candle::call`) must leave none current and give candle's result. See [`no_context`].
//! 1. `context-kept` and `alternate` (per layer, dtype f32 and bf16, device): calls alternate
//!    between the two devices, four rounds. Before each call on one device the *other*
//!    device's context is made current on the thread (`CudaContext::bind_to_thread`, a
//!    `cuCtxSetCurrent`). The call must leave that context current (`cuCtxGetCurrent` before
//!    and after; the runtime must restore what it or candle made current for the call), and
//!    its result must match candle's op on the same device (computed in f32 from the same inputs, within
//!    [`Tolerance::for_dtype`]). A call that leaves another context current than it found
//!    (candle binds the tensors' context to allocate the output and to wait on and record
//!    events, and the kernel may make its device current) fails `context-kept`: code after
//!    the call that relies on the thread's current device (the CUDA runtime API, another
//!    library's kernels) would run on the wrong GPU. The `context-kept` line also says, for
//!    comparison, whether candle's own op on the same tensors kept it
//!    (`candle_op_keeps_context`).
//! 2. `stream-order` (per layer, dtype, device): the kernel runs on the stream of its tensors,
//!    shown by a data dependency held back on that stream. See [`stream_order`].
//! 3. `concurrent` (per device, layer): two threads, one per device, each call the layer
//!    10,000 times on their own device's tensors (`RMSNorm` in f32, then `SiluAndMul` in
//!    bf16); every call must succeed and the last result must match candle's op.
//! 4. `report`: after all that, `dispatch::report()` holds exactly one decision per (layer,
//!    device) for `Target::Device(Cuda, 0)` and `(Cuda, 1)`, each a kernel.

use std::ffi::c_void;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use candle_core::cuda_backend::cudarc::driver::{CudaContext, CudaStream, result as cu, sys};
use candle_core::{DType, Device, Result, Tensor};
use kernels_runtime::candle::CandleArg;
use kernels_runtime::dispatch::{self, Choice, Target};
use kernels_runtime::variant::BackendKind;

use super::correctness::dtype_name;
use super::latency::{RmsNorm, SiluAndMul};
use super::{EPS, Kernels, Outcome, uniform};
use crate::check::{Tolerance, compare};
use crate::{first_line, result_line};

/// The `RESULT` kind of every line of this case.
const KIND: &str = "two-gpus";
/// Rows and hidden size of every input (a decode batch).
const ROWS: usize = 8;
const HIDDEN: usize = 4096;
/// Alternating rounds per layer and dtype.
const ROUNDS: usize = 4;
/// Calls per thread and layer in the concurrent part.
const CONCURRENT_CALLS: usize = 10_000;
/// How long the stream stays held after the call returned (see [`stream_order`]).
const HOLD: Duration = Duration::from_millis(200);
/// The longest a held stream waits before it lets itself go, so that a call that waits for the
/// held stream cannot hang the suite (it then fails the check instead).
const HOLD_LIMIT: Duration = Duration::from_secs(20);

fn cuda_err(e: impl std::fmt::Debug) -> candle_core::Error {
    candle_core::Error::Msg(format!("CUDA: {e:?}"))
}

/// The number of CUDA devices the driver reports.
fn device_count() -> std::result::Result<usize, String> {
    let n = CudaContext::device_count().map_err(|e| format!("the CUDA driver cannot count devices: {e:?}"))?;
    Ok(usize::try_from(n).unwrap_or(0))
}

/// One device: candle's device (its own stream) and the context behind it.
struct Gpu {
    ordinal: usize,
    device: Device,
    stream: Arc<CudaStream>,
    context: Arc<CudaContext>,
}

impl Gpu {
    fn new(ordinal: usize, device: Device) -> Result<Gpu> {
        let Device::Cuda(cuda) = &device else {
            candle_core::bail!("cuda:{ordinal} is not a CUDA device");
        };
        let stream = cuda.cuda_stream();
        let context = stream.context().clone();
        Ok(Gpu { ordinal, device, stream, context })
    }

    fn name(&self) -> String {
        format!("cuda:{}", self.ordinal)
    }
}

/// The thread's current CUDA context, as an address (0: none).
fn current_context() -> Result<usize> {
    Ok(cu::ctx::get_current().map_err(cuda_err)?.map_or(0, |c| c as usize))
}

/// A context address as a name: `cuda:N` for the devices' (primary) contexts.
fn context_name(ctx: usize, gpus: &[Gpu]) -> String {
    if ctx == 0 {
        return "none".into();
    }
    gpus.iter()
        .find(|g| g.context.cu_ctx() as usize == ctx)
        .map_or_else(|| format!("{ctx:#x}"), |g| format!("{} (its context)", g.name()))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layer {
    RmsNorm,
    SiluAndMul,
}

impl Layer {
    fn name(self) -> &'static str {
        match self {
            Layer::RmsNorm => "RMSNorm",
            Layer::SiluAndMul => "SiluAndMul",
        }
    }
}

/// A layer with its input and weight on one device.
struct Case {
    layer: Layer,
    dtype: DType,
    x: Tensor,
    w: Tensor,
    norm: RmsNorm,
}

impl Case {
    fn new(layer: Layer, dtype: DType, device: &Device, seed: u64) -> Result<Case> {
        let x = Tensor::from_vec(uniform(seed, ROWS * HIDDEN, -3.0, 3.0), (ROWS, HIDDEN), device)?.to_dtype(dtype)?;
        let w = Tensor::from_vec(uniform(seed + 1, HIDDEN, 0.5, 1.5), HIDDEN, device)?.to_dtype(dtype)?;
        let norm = RmsNorm::new(w.clone(), EPS as f32);
        Ok(Case { layer, dtype, x, w, norm })
    }

    /// The kernelized layer on `x`.
    fn call(&self, x: &Tensor) -> Result<Tensor> {
        match self.layer {
            Layer::RmsNorm => self.norm.kernel_forward(x),
            Layer::SiluAndMul => SiluAndMul.kernel_forward(x),
        }
    }

    /// candle's op on `x`'s device, in f32 from the same inputs.
    fn want(&self, x: &Tensor) -> Result<Tensor> {
        let x32 = x.to_dtype(DType::F32)?;
        match self.layer {
            Layer::RmsNorm => candle_nn::ops::rms_norm(&x32, &self.w.to_dtype(DType::F32)?, EPS as f32),
            Layer::SiluAndMul => {
                let d = HIDDEN / 2;
                candle_nn::ops::silu(&x32.narrow(1, 0, d)?)? * x32.narrow(1, d, d)?
            }
        }
    }

    /// `None` when `got` matches `want` within the dtype's tolerance, else what differs.
    fn mismatch(&self, got: &Tensor, want: &Tensor) -> Result<Option<String>> {
        if got.dims() != want.dims() {
            return Ok(Some(format!("shape {:?}, want {:?}", got.dims(), want.dims())));
        }
        let got = got.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
        let want = want.flatten_all()?.to_vec1::<f32>()?;
        let tol = Tolerance::for_dtype(dtype_name(self.dtype)).expect("f32 and bf16 have tolerances");
        let c = compare(&got, &want, tol);
        Ok(match c.first_violation {
            None if c.passed() => None,
            first => Some(format!(
                "{} of {} elements beyond {tol} (max abs {:e}); first: {first:?} (index, got, want)",
                c.violations, c.len, c.max_abs
            )),
        })
    }
}

/// Prints and records one check.
fn report(outcome: &mut Outcome, case: &str, fields: &[(&str, String)], problem: Option<String>) {
    outcome.record(problem.is_none());
    let details = fields.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(" ");
    let mut line: Vec<(&str, String)> = vec![("case", case.into())];
    line.extend(fields.iter().cloned());
    match problem {
        None => {
            println!("ok      {case:<13} {details}");
            line.push(("status", "pass".into()));
        }
        Some(problem) => {
            println!("FAILED  {case:<13} {details}: {problem}");
            line.push(("status", "fail".into()));
            line.push(("problem", first_line(&problem).to_owned()));
        }
    }
    result_line(KIND, &line);
}

/// Strict mode for the life of the value, then as it was.
struct Strict(bool);

impl Strict {
    fn on() -> Strict {
        let was = dispatch::is_strict();
        dispatch::set_strict(true);
        Strict(was)
    }
}

impl Drop for Strict {
    fn drop(&mut self) {
        dispatch::set_strict(self.0);
    }
}

/// Runs the case on `device0` (the suite's `cuda:0`) and a new `cuda:1`, or prints why it is
/// skipped.
pub(crate) fn run(device0: &Device, kernels: &Kernels) -> Result<Outcome> {
    let mut outcome = Outcome::default();
    no_context(device0, kernels, &mut outcome)?;
    let count = match device_count() {
        Ok(n) if n >= 2 => n,
        found => {
            let reason = match found {
                Ok(n) => format!("needs 2 CUDA devices, the driver reports {n}"),
                Err(e) => e,
            };
            println!("SKIPPED two-gpus: {reason}");
            result_line(KIND, &[("status", "skipped".into()), ("reason", reason)]);
            return Ok(outcome);
        }
    };
    println!("{count} CUDA devices; using cuda:0 and cuda:1, each on its own stream, strict");
    let _strict = Strict::on();
    let device1 =
        Device::new_cuda_with_stream(1).map_err(|e| candle_core::Error::Msg(format!("cannot open cuda:1: {e}")))?;
    let gpus = [Gpu::new(0, device0.clone())?, Gpu::new(1, device1)?];
    if gpus[0].context.cu_ctx() == gpus[1].context.cu_ctx() {
        candle_core::bail!("cuda:0 and cuda:1 share one context");
    }

    alternate(&gpus, &mut outcome)?;
    stream_order(&gpus, &mut outcome)?;
    concurrent(&gpus, &mut outcome);
    decisions(&mut outcome);
    Ok(outcome)
}

/// Part 0, on one device (so it runs on any CUDA machine): with no context current on the
/// thread, a kernelized call on `cuda:0`, and a call through `candle::call`, must leave none
/// current (the runtime restores what it found; candle's own op, for comparison, leaves
/// `cuda:0`'s current) and give candle's result.
fn no_context(device: &Device, kernels: &Kernels, outcome: &mut Outcome) -> Result<()> {
    let _strict = Strict::on();
    for (seed, layer) in [(90, Layer::RmsNorm), (92, Layer::SiluAndMul)] {
        let case = Case::new(layer, DType::F32, device, seed)?;
        let want = case.want(&case.x)?;
        let mut context_problem = None;
        let mut result_problem = None;
        for _ in 0..ROUNDS {
            // SAFETY: a null context only unbinds the thread; candle binds its own again.
            unsafe { cu::ctx::set_current(std::ptr::null_mut()) }.map_err(cuda_err)?;
            let got = case.call(&case.x);
            let after = current_context()?;
            if after != 0 && context_problem.is_none() {
                context_problem = Some(format!("no context was current before the call, {after:#x} after"));
            }
            let problem = match got {
                Ok(got) => case.mismatch(&got, &want)?,
                Err(e) => Some(format!("the call failed: {e}")),
            };
            if result_problem.is_none() {
                result_problem = problem;
            }
        }
        // SAFETY: as above.
        unsafe { cu::ctx::set_current(std::ptr::null_mut()) }.map_err(cuda_err)?;
        drop(case.want(&case.x)?);
        let candle_keeps = current_context()? == 0;
        let fields = [
            ("layer", layer.name().to_owned()),
            ("path", "kernelize".to_owned()),
            ("dtype", dtype_name(DType::F32).to_owned()),
            ("device", "cuda:0".to_owned()),
            ("current_before", "none".to_owned()),
            ("calls", ROUNDS.to_string()),
        ];
        let mut context_fields = fields.to_vec();
        context_fields.push(("candle_op_keeps_context", candle_keeps.to_string()));
        report(outcome, "context-none", &context_fields, context_problem);
        report(outcome, "result-none", &fields, result_problem);
    }

    // The same through the adapter, into a preallocated output.
    let case = Case::new(Layer::SiluAndMul, DType::F32, device, 94)?;
    let want = case.want(&case.x)?;
    let out = Tensor::zeros((ROWS, HIDDEN / 2), DType::F32, device)?;
    // SAFETY: a null context only unbinds the thread; candle binds its own again.
    unsafe { cu::ctx::set_current(std::ptr::null_mut()) }.map_err(cuda_err)?;
    let args = [CandleArg::output(&out), CandleArg::input(&case.x)];
    // SAFETY: silu_and_mul(out, x) reads x and writes all of out.
    let called = unsafe { kernels_runtime::candle::call(&kernels.silu_and_mul, &args) };
    let after = current_context()?;
    let context_problem = (after != 0).then(|| format!("no context was current before the call, {after:#x} after"));
    let result_problem = match called {
        Ok(()) => case.mismatch(&out, &want)?,
        Err(e) => Some(format!("the call failed: {e}")),
    };
    let fields = [
        ("layer", "silu_and_mul".to_owned()),
        ("path", "candle::call".to_owned()),
        ("dtype", dtype_name(DType::F32).to_owned()),
        ("device", "cuda:0".to_owned()),
        ("current_before", "none".to_owned()),
        ("calls", "1".to_owned()),
    ];
    report(outcome, "context-none", &fields, context_problem);
    report(outcome, "result-none", &fields, result_problem);
    Ok(())
}

/// Part 1: calls alternating between the devices, each with the other device's context
/// current on the thread.
fn alternate(gpus: &[Gpu; 2], outcome: &mut Outcome) -> Result<()> {
    let mut seed = 100;
    for dtype in [DType::F32, DType::BF16] {
        for layer in [Layer::RmsNorm, Layer::SiluAndMul] {
            let mut cases = Vec::with_capacity(2);
            for gpu in gpus {
                seed += 2;
                let case = Case::new(layer, dtype, &gpu.device, seed)?;
                let want = case.want(&case.x)?;
                cases.push((case, want));
            }
            // Per device: the first context problem, the first result problem, and whether
            // candle's own op kept the other context current (for the reader: candle binds the
            // tensors' context for its work and leaves it current).
            let mut context_problem: [Option<String>; 2] = [None, None];
            let mut result_problem: [Option<String>; 2] = [None, None];
            let mut candle_keeps = [true; 2];
            for _ in 0..ROUNDS {
                for (i, gpu) in gpus.iter().enumerate() {
                    let other = &gpus[1 - i];
                    let (case, want) = &cases[i];
                    other.context.bind_to_thread().map_err(cuda_err)?;
                    let before = current_context()?;
                    if before != other.context.cu_ctx() as usize {
                        candle_core::bail!("cannot make {} current: {}", other.name(), context_name(before, gpus));
                    }
                    let got = case.call(&case.x);
                    let after = current_context()?;
                    if after != before && context_problem[i].is_none() {
                        context_problem[i] = Some(format!(
                            "{} was current before the call on {}, {} after",
                            other.name(),
                            gpu.name(),
                            context_name(after, gpus)
                        ));
                    }
                    let problem = match got {
                        Ok(got) => case.mismatch(&got, want)?,
                        Err(e) => Some(format!("the call failed: {e}")),
                    };
                    if result_problem[i].is_none() {
                        result_problem[i] = problem;
                    }
                    // The same with candle's op, for comparison only.
                    other.context.bind_to_thread().map_err(cuda_err)?;
                    drop(case.want(&case.x)?);
                    candle_keeps[i] &= current_context()? == other.context.cu_ctx() as usize;
                }
            }
            for (i, gpu) in gpus.iter().enumerate() {
                let fields = [
                    ("layer", layer.name().to_owned()),
                    ("dtype", dtype_name(dtype).to_owned()),
                    ("device", gpu.name()),
                    ("current_before", gpus[1 - i].name()),
                    ("calls", ROUNDS.to_string()),
                ];
                let mut context_fields = fields.to_vec();
                context_fields.push(("candle_op_keeps_context", candle_keeps[i].to_string()));
                report(outcome, "context-kept", &context_fields, context_problem[i].take());
                report(outcome, "alternate", &fields, result_problem[i].take());
            }
        }
    }
    Ok(())
}

/// What the host function holding a stream shares with the thread that lets it go.
#[derive(Default)]
struct HoldState {
    released: AtomicBool,
    gave_up: AtomicBool,
}

/// Runs on the CUDA driver's callback thread, in stream order: the stream proceeds only when
/// it returns. Makes no CUDA call.
unsafe extern "C" fn hold(data: *mut c_void) {
    // SAFETY: `data` is the `Arc` that `Hold::new` leaked for this one call.
    let state = unsafe { Arc::from_raw(data.cast_const().cast::<HoldState>()) };
    let start = Instant::now();
    while !state.released.load(Ordering::Acquire) {
        if start.elapsed() > HOLD_LIMIT {
            state.gave_up.store(true, Ordering::Release);
            break;
        }
        std::thread::sleep(Duration::from_micros(100));
    }
}

/// A host function enqueued on a stream that keeps the stream's later work from starting
/// until [`Hold::release`] (or the drop) lets it go.
struct Hold {
    state: Arc<HoldState>,
}

impl Hold {
    fn new(stream: &CudaStream) -> Result<Hold> {
        let state = Arc::new(HoldState::default());
        let data = Arc::into_raw(state.clone()).cast_mut().cast::<c_void>();
        stream.context().bind_to_thread().map_err(cuda_err)?;
        // SAFETY: `hold` has the host-function signature, makes no CUDA call and reclaims
        // `data`, which stays valid until then; the stream is alive.
        let code = unsafe { sys::cuLaunchHostFunc(stream.cu_stream(), Some(hold), data) };
        if let Err(e) = code.result() {
            // SAFETY: not enqueued, so `hold` will not reclaim it.
            drop(unsafe { Arc::from_raw(data.cast_const().cast::<HoldState>()) });
            return Err(cuda_err(e));
        }
        Ok(Hold { state })
    }

    /// Lets the stream go; whether it had already let itself go after [`HOLD_LIMIT`].
    fn release(&self) -> bool {
        self.state.released.store(true, Ordering::Release);
        self.state.gave_up.load(Ordering::Acquire)
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.state.released.store(true, Ordering::Release);
    }
}

/// Part 2: each call's kernel runs on its tensors' stream (candle's stream of the device).
///
/// The input `x` holds values A. On the tensors' stream S we enqueue a host function that
/// holds S (it spins until we release it), then, behind it, the copy of values B into `x`
/// (`slice_set`, candle's op on S). With the other device's context current we call the
/// layer on `x` and record an event on S; then we wait [`HOLD`] and release S.
///
/// - A kernel enqueued on S runs after the copy: its result is the layer of B.
/// - A kernel enqueued anywhere not ordered after S (the legacy default stream, a stream of
///   its own, the other device) starts at once, while S is held and `x` still holds A, and
///   finishes long before [`HOLD`] (the kernel takes microseconds on an idle GPU): its result is
///   the layer of A, and the output holds that, since nothing on S writes it. So the check
///   compares with the layer of B computed by candle after the release.
/// - The event recorded on S after the call must still be pending when we release S: this
///   shows the hold was in force for the whole call (else the check would prove nothing), and
///   that the call did not wait for S (a call that synchronised S would have hung until
///   [`HOLD_LIMIT`], which is reported too).
///
/// The earlier parts already made the decisions and loaded the kernel into both contexts, and
/// the copy into `x` runs once before the hold, so nothing has a reason to wait for the held
/// stream (CUDA's lazy loading may synchronise a context to load a function).
fn stream_order(gpus: &[Gpu; 2], outcome: &mut Outcome) -> Result<()> {
    let mut seed = 200;
    for dtype in [DType::F32, DType::BF16] {
        for layer in [Layer::RmsNorm, Layer::SiluAndMul] {
            for (i, gpu) in gpus.iter().enumerate() {
                let other = &gpus[1 - i];
                seed += 4;
                let case = Case::new(layer, dtype, &gpu.device, seed)?;
                let b = Case::new(layer, dtype, &gpu.device, seed + 2)?.x;
                let want = case.want(&b)?;
                let x = case.x.copy()?;
                // The copy's own CUDA function, loaded now: a function loaded lazily while the
                // stream is held could wait for the held stream.
                x.slice_set(&case.x, 0, 0)?;
                gpu.stream.synchronize().map_err(cuda_err)?;

                let held = Hold::new(&gpu.stream)?;
                x.slice_set(&b, 0, 0)?;
                other.context.bind_to_thread().map_err(cuda_err)?;
                let t = Instant::now();
                let got = case.call(&x);
                let call_time = t.elapsed();
                let after_call = gpu.stream.record_event(None).map_err(cuda_err)?;
                std::thread::sleep(HOLD.saturating_sub(t.elapsed()));
                let pending = !after_call.try_is_complete().map_err(cuda_err)?;
                let gave_up = held.release();
                drop(held);

                let problem = if gave_up {
                    Some(format!("the call waited for its held stream ({:.1} s)", call_time.as_secs_f64()))
                } else if !pending {
                    Some("the held stream ran on before the release: nothing shown".into())
                } else {
                    match got {
                        Ok(got) => case
                            .mismatch(&got, &want)?
                            .map(|m| format!("the kernel did not run after the stream's earlier work ({m})")),
                        Err(e) => Some(format!("the call failed: {e}")),
                    }
                };
                let fields = [
                    ("layer", layer.name().to_owned()),
                    ("dtype", dtype_name(dtype).to_owned()),
                    ("device", gpu.name()),
                    ("call_us", format!("{:.1}", call_time.as_secs_f64() * 1e6)),
                ];
                report(outcome, "stream-order", &fields, problem);
            }
        }
    }
    Ok(())
}

/// What one thread found for one layer.
struct Hammered {
    layer: Layer,
    calls: usize,
    errors: usize,
    first_error: Option<String>,
    mismatch: Option<String>,
}

/// One thread's work on `gpu`: each layer [`CONCURRENT_CALLS`] times.
fn hammer(gpu: &Gpu, seed: u64) -> Result<Vec<Hammered>> {
    let mut found = Vec::new();
    for (layer, dtype) in [(Layer::RmsNorm, DType::F32), (Layer::SiluAndMul, DType::BF16)] {
        let case = Case::new(layer, dtype, &gpu.device, seed)?;
        let want = case.want(&case.x)?;
        let mut h = Hammered { layer, calls: 0, errors: 0, first_error: None, mismatch: None };
        let mut last = None;
        for _ in 0..CONCURRENT_CALLS {
            match case.call(&case.x) {
                Ok(y) => {
                    h.calls += 1;
                    last = Some(y);
                }
                Err(e) => {
                    h.errors += 1;
                    h.first_error.get_or_insert_with(|| e.to_string());
                }
            }
        }
        gpu.stream.synchronize().map_err(cuda_err)?;
        h.mismatch = match last {
            Some(y) => case.mismatch(&y, &want)?,
            None => Some("no call succeeded".into()),
        };
        found.push(h);
    }
    Ok(found)
}

/// Part 3: one thread per device, each calling the layers on its own device's tensors.
fn concurrent(gpus: &[Gpu; 2], outcome: &mut Outcome) {
    let start = Instant::now();
    let results: Vec<std::result::Result<Result<Vec<Hammered>>, String>> = std::thread::scope(|s| {
        let threads: Vec<_> =
            gpus.iter().enumerate().map(|(i, gpu)| s.spawn(move || hammer(gpu, 300 + 10 * i as u64))).collect();
        threads
            .into_iter()
            .map(|t| {
                t.join().map_err(|p| {
                    p.downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                        .unwrap_or_else(|| "a panic".into())
                })
            })
            .collect()
    });
    let seconds = start.elapsed().as_secs_f64();
    println!("two threads, {CONCURRENT_CALLS} calls per layer each: {seconds:.2} s");
    for (gpu, result) in gpus.iter().zip(results) {
        let found = match result {
            Ok(Ok(found)) => found,
            Ok(Err(e)) => {
                let problem = format!("the thread stopped: {e}");
                report(outcome, "concurrent", &[("device", gpu.name())], Some(problem));
                continue;
            }
            Err(panic) => {
                report(outcome, "concurrent", &[("device", gpu.name())], Some(format!("the thread panicked: {panic}")));
                continue;
            }
        };
        for h in found {
            let problem = if h.errors > 0 {
                Some(format!("{} calls failed; the first: {}", h.errors, h.first_error.unwrap_or_default()))
            } else if h.calls != CONCURRENT_CALLS {
                Some(format!("{} calls made, want {CONCURRENT_CALLS}", h.calls))
            } else {
                h.mismatch.map(|m| format!("last result: {m}"))
            };
            let fields = [
                ("layer", h.layer.name().to_owned()),
                ("device", gpu.name()),
                ("calls", h.calls.to_string()),
                ("errors", h.errors.to_string()),
            ];
            report(outcome, "concurrent", &fields, problem);
        }
    }
}

/// Part 4: one decision per (layer, device), each a kernel.
fn decisions(outcome: &mut Outcome) {
    let report_now = dispatch::report();
    for layer in [Layer::RmsNorm, Layer::SiluAndMul] {
        for ordinal in [0u32, 1] {
            let target = Target::Device(BackendKind::Cuda, ordinal);
            let found: Vec<_> = report_now
                .layers
                .iter()
                .filter(|l| l.layer == layer.name())
                .flat_map(|l| l.resolutions.iter())
                .filter(|r| r.target() == target)
                .collect();
            let problem = match found.as_slice() {
                [one] if matches!(one.choice(), Choice::Kernel(_)) => None,
                [one] => Some(format!("no kernel: {}", one.choice())),
                many => Some(format!("{} decisions, want one", many.len())),
            };
            if problem.is_some() {
                println!("{report_now}");
            }
            let fields = [("layer", layer.name().to_owned()), ("device", format!("cuda:{ordinal}"))];
            report(outcome, "report", &fields, problem);
        }
    }
}
