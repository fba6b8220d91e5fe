//! Latency at decode and prefill shapes: what one call costs, from the `#[kernelize]`d layer
//! down to a bare launch, beside candle's own op, all in one run on candle's stream.
//!
//! For each shape (rows × hidden: 1×4096, 8×4096, 128×2048, 2048×4096) and dtype (bf16, f32),
//! and for `rms_norm` and `silu_and_mul` (x [rows × hidden] → [rows × hidden/2]):
//!
//! - `kernelized`: the `#[kernelize]`d layer's `kernel_forward` (dispatch, its output
//!   allocated per call, the candle adapter, the kernel), strict;
//! - `adapter`: `kernels_runtime::candle::call` into a preallocated output (storage locks,
//!   argument packing, the kernel);
//! - `raw`: the kernel function called again and again with the same prepared arguments (the
//!   locks taken once): `TVMFFIEnvSetStream` and the launch;
//! - `candle`: candle's op (`candle_nn::ops::rms_norm`; `silu(a) * b` on the halves);
//! - `floor`: a 4-byte `cuMemsetD8Async` on the same stream, the cheapest thing one can enqueue.
//!
//! Host time: µs per call over a loop of calls, with the stream synchronised once at the end.
//! Device time: CUDA events recorded on the stream before and after the same loop, per call;
//! where the host is slower than the GPU (small shapes) it equals the host time, and where the
//! GPU is the bottleneck (large shapes) it is the GPU's time per call. Every case runs once per
//! round, rounds interleave the cases, medians over the rounds.

use std::time::Instant;

use candle_core::cuda_backend::cudarc::driver::sys::CUevent_flags;
use candle_core::cuda_backend::cudarc::driver::{DevicePtr, result as cudarc_result};
use candle_core::{DType, Device, Result, Tensor};
use kernels_runtime::candle::{self as kc, CandleArg, output, output_like};
use kernels_runtime::dispatch::{self, Choice, KernelArg, KernelOutput, Mode, Target};
use kernels_runtime::ffi::{KernelError, KernelFunction};
use kernels_runtime::kernelize;

use super::correctness::dtype_name;
use super::{EPS, Kernels, Outcome};
use crate::check::Timing;
use crate::result_line;

/// RMSNorm, kernelized: the CUDA example kernels' `rms_norm`, else candle's.
#[kernelize(
    layer = "RMSNorm",
    forward = fn forward(&self, x: &Tensor) -> Result<Tensor>,
    output = output_like(x)?,
    args = (output, x, self.weight, self.eps),
)]
pub(crate) struct RmsNorm {
    weight: Tensor,
    eps: f32,
}

impl RmsNorm {
    pub(crate) fn new(weight: Tensor, eps: f32) -> Self {
        RmsNorm { weight, eps }
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        candle_nn::ops::rms_norm(x, &self.weight, self.eps)
    }
}

/// SiLU-and-multiply, kernelized.
#[kernelize(
    layer = "SiluAndMul",
    forward = fn forward(&self, x: &Tensor) -> Result<Tensor>,
    output = {
        let (rows, cols) = x.dims2()?;
        output((rows, cols / 2), x.dtype(), x.device())?
    },
    args = (output, x),
)]
pub(crate) struct SiluAndMul;

impl SiluAndMul {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let d = x.dim(1)? / 2;
        candle_nn::ops::silu(&x.narrow(1, 0, d)?)? * x.narrow(1, d, d)?
    }
}

/// The shapes: decode (1 and 8 tokens), a short prefill, a long one.
const SHAPES: [(usize, usize); 4] = [(1, 4096), (8, 4096), (128, 2048), (2048, 4096)];

fn cuda_err(e: impl std::fmt::Debug) -> candle_core::Error {
    candle_core::Error::Msg(format!("CUDA: {e:?}"))
}

type Run<'a> = Box<dyn Fn(usize) -> Result<()> + 'a>;

/// `n` calls of `f` with the same prepared arguments: the storages locked once.
fn raw<'a>(f: &'a KernelFunction, args: &'a [CandleArg<'a>]) -> Run<'a> {
    Box::new(move |n| {
        kc::with_args(args, |args, stream| -> std::result::Result<(), KernelError> {
            let stream = stream.expect("CUDA tensors come with candle's stream");
            for _ in 0..n {
                // SAFETY: as for the adapter's call: the kernel reads the inputs and writes the
                // preallocated output, on candle's stream.
                unsafe { f.call_on_stream(stream, args) }?;
            }
            Ok(())
        })
        .map_err(candle_core::Error::from)?
        .map_err(|e| candle_core::Error::Msg(e.to_string()))
    })
}

/// The pieces of the host path, measured alone on `x`'s device and stream (`op` = "piece"):
///
/// - `event`: a CUDA event created and destroyed (cudarc makes two per allocation while it
///   tracks streams, as candle's context does);
/// - `wait+record`: one tensor access as cudarc makes it (the stream waits for the slice's
///   pending write, then records the read);
/// - `candle-alloc`: an uninitialised candle tensor allocated and dropped (what candle's own op
///   pays for its output);
/// - `our-output`: a `#[kernelize]` output made, lent to a kernel and its write recorded, then
///   dropped (no kernel);
/// - `our-input`: a `#[kernelize]` input held for a call and released (its storage locked, the
///   stream's wait and the read recorded);
/// - `ctx-current`: one `cuCtxGetCurrent` (a kernelized call makes two, to leave the caller's
///   context current; cudarc makes one per context bind);
/// - `describe`: `output_like(x)`, the description of a `#[kernelize]` output (no allocation
///   of its size);
/// - `input-lock`: a `CandleInput` made and dropped (the storage lock, the view, the stream's
///   wait and record), without the context keeper and the shared handle of `our-input`;
/// - `args`: a kernelized RMSNorm call's whole argument list (its output described and made, the
///   input, the weight and eps converted) made and dropped, without dispatch and the kernel.
fn pieces<'a>(
    x: &'a Tensor,
    w: &'a Tensor,
    out: &'a Tensor,
    dtype: DType,
    device: &'a Device,
) -> Result<Vec<(&'static str, &'static str, Run<'a>)>> {
    let Device::Cuda(cuda) = device else {
        candle_core::bail!("the pieces need a CUDA device");
    };
    let stream = cuda.cuda_stream();
    let shape = out.shape().clone();
    let ctx = stream.context().clone();
    let slice = stream.alloc_zeros::<u8>(4).map_err(cuda_err)?;
    let event: Run<'a> = Box::new(move |n| {
        for _ in 0..n {
            drop(ctx.new_event(None).map_err(cuda_err)?);
        }
        Ok(())
    });
    let access: Run<'a> = Box::new(move |n| {
        for _ in 0..n {
            let (_, record) = slice.device_ptr(&stream);
            drop(record);
        }
        Ok(())
    });
    let candle_alloc: Run<'a> = Box::new(move |n| {
        for _ in 0..n {
            // SAFETY: dropped unread.
            drop(unsafe { Tensor::empty(shape.clone(), dtype, device) }?);
        }
        Ok(())
    });
    let our_output: Run<'a> = Box::new(move |n| {
        for _ in 0..n {
            let mut o = output_like(x)?;
            let value = o.kernel_output();
            value.map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        }
        Ok(())
    });
    let our_input: Run<'a> = Box::new(move |n| {
        for _ in 0..n {
            x.kernel_arg().map_err(|e| candle_core::Error::Msg(e.to_string()))?;
        }
        Ok(())
    });
    let ctx_current: Run<'a> = Box::new(move |n| {
        for _ in 0..n {
            std::hint::black_box(cudarc_result::ctx::get_current().map_err(cuda_err)?);
        }
        Ok(())
    });
    let describe: Run<'a> = Box::new(move |n| {
        for _ in 0..n {
            drop(std::hint::black_box(output_like(x)?));
        }
        Ok(())
    });
    let input_lock: Run<'a> = Box::new(move |n| {
        for _ in 0..n {
            drop(std::hint::black_box(kc::CandleInput::new(x).map_err(candle_core::Error::from)?));
        }
        Ok(())
    });
    let args: Run<'a> = Box::new(move |n| {
        let eps = EPS as f32;
        for _ in 0..n {
            let mut o = output_like(x)?;
            let values = [o.kernel_output(), x.kernel_arg(), w.kernel_arg(), eps.kernel_arg()];
            drop(std::hint::black_box(values));
        }
        Ok(())
    });
    Ok(vec![
        ("piece", "event", event),
        ("piece", "wait+record", access),
        ("piece", "candle-alloc", candle_alloc),
        ("piece", "our-output", our_output),
        ("piece", "our-input", our_input),
        ("piece", "ctx-current", ctx_current),
        ("piece", "describe", describe),
        ("piece", "input-lock", input_lock),
        ("piece", "args", args),
    ])
}

/// Runs the latency table on `device` (the suite's own: a stream of its own, so cudarc tracks
/// events across streams), then its decode shapes again on candle's default device
/// (`Device::new_cuda`: the per-thread stream, one stream, no event waits or records, as most
/// candle applications run); `kernels` are the tvm-ffi variant's functions.
pub(crate) fn run(kernels: &Kernels, device: &Device) -> Result<Outcome> {
    let mut outcome = table(kernels, device, &SHAPES, "own")?;
    println!("-- again on Device::new_cuda(0): the per-thread stream, no cross-stream event tracking");
    let default = Device::new_cuda(0)?;
    outcome.add(table(kernels, &default, &SHAPES[..2], "per-thread")?);
    Ok(outcome)
}

/// One latency table: `shapes` on `device`, whose stream the lines name as `stream`.
fn table(kernels: &Kernels, device: &Device, shapes: &[(usize, usize)], stream_name: &str) -> Result<Outcome> {
    let Device::Cuda(cuda) = device else {
        candle_core::bail!("the latency benchmark needs a CUDA device");
    };
    let stream = cuda.cuda_stream();
    let sync = || stream.synchronize().map_err(cuda_err);
    let mut floor_buf = stream.alloc_zeros::<u8>(4).map_err(cuda_err)?;
    let floor_buf = std::cell::RefCell::new(&mut floor_buf);
    dispatch::set_strict(true);
    let mut outcome = Outcome::default();
    println!(
        "{:<13} {:<5} {:<10} {:<11} {:>9} {:>9} {:>12} {:>12}",
        "op", "dtype", "shape", "impl", "host us", "dev us", "host/candle", "dev/candle"
    );
    for &(rows, hidden) in shapes {
        for dtype in [DType::BF16, DType::F32] {
            let x = Tensor::randn(0f32, 1.0, (rows, hidden), device)?.to_dtype(dtype)?;
            let w = Tensor::rand(0.5f32, 1.5, hidden, device)?.to_dtype(dtype)?;
            let out = Tensor::zeros((rows, hidden), dtype, device)?;
            let half = Tensor::zeros((rows, hidden / 2), dtype, device)?;
            let (a, b) = (x.narrow(1, 0, hidden / 2)?, x.narrow(1, hidden / 2, hidden / 2)?);
            let norm = RmsNorm { weight: w.clone(), eps: EPS as f32 };
            let silu = SiluAndMul;
            let rms_args = [CandleArg::output(&out), CandleArg::input(&x), CandleArg::input(&w), CandleArg::Float(EPS)];
            let silu_args = [CandleArg::output(&half), CandleArg::input(&x)];
            let floor: Run<'_> = Box::new(|n| {
                let mut buf = floor_buf.borrow_mut();
                for _ in 0..n {
                    stream.memset_zeros(&mut **buf).map_err(cuda_err)?;
                }
                Ok(())
            });
            let cases: Vec<(&str, &str, Run<'_>)> = vec![
                (
                    "rms_norm",
                    "kernelized",
                    Box::new(|n| {
                        for _ in 0..n {
                            norm.kernel_forward(&x)?;
                        }
                        Ok(())
                    }),
                ),
                (
                    "rms_norm",
                    "adapter",
                    Box::new(|n| {
                        for _ in 0..n {
                            // SAFETY: rms_norm(out, x, weight, eps) reads x, w and writes out.
                            unsafe { kc::call(&kernels.rms_norm, &rms_args) }.map_err(candle_core::Error::from)?;
                        }
                        Ok(())
                    }),
                ),
                ("rms_norm", "raw", raw(&kernels.rms_norm, &rms_args)),
                (
                    "rms_norm",
                    "candle",
                    Box::new(|n| {
                        for _ in 0..n {
                            candle_nn::ops::rms_norm(&x, &w, EPS as f32)?;
                        }
                        Ok(())
                    }),
                ),
                (
                    "silu_and_mul",
                    "kernelized",
                    Box::new(|n| (0..n).try_for_each(|_| silu.kernel_forward(&x).map(drop))),
                ),
                (
                    "silu_and_mul",
                    "adapter",
                    Box::new(|n| {
                        for _ in 0..n {
                            // SAFETY: silu_and_mul(out, x) reads x and writes out.
                            unsafe { kc::call(&kernels.silu_and_mul, &silu_args) }.map_err(candle_core::Error::from)?;
                        }
                        Ok(())
                    }),
                ),
                ("silu_and_mul", "raw", raw(&kernels.silu_and_mul, &silu_args)),
                (
                    "silu_and_mul",
                    "candle",
                    Box::new(|n| (0..n).try_for_each(|_| (candle_nn::ops::silu(&a)? * &b).map(drop))),
                ),
                ("launch", "floor", floor),
            ];
            // The pieces of a kernelized call's host path, each alone (1x4096 only: they do not
            // depend on the shape), to tell by difference where its time goes.
            let mut cases = cases;
            if rows == 1 {
                cases.extend(pieces(&x, &w, &out, dtype, device)?);
            }
            // Enough calls per round for about a millisecond of host time at small shapes.
            let calls = if rows * hidden >= 2048 * 4096 { 20 } else { 200 };
            let rounds = 11;
            for case in &cases {
                (case.2)(2)?;
            }
            sync()?;
            let mut host: Vec<Vec<f64>> = vec![Vec::with_capacity(rounds); cases.len()];
            let mut dev: Vec<Vec<f64>> = vec![Vec::with_capacity(rounds); cases.len()];
            for _ in 0..rounds {
                for (i, case) in cases.iter().enumerate() {
                    let start_ev = stream.record_event(Some(CUevent_flags::CU_EVENT_DEFAULT)).map_err(cuda_err)?;
                    let t = Instant::now();
                    (case.2)(calls)?;
                    let end_ev = stream.record_event(Some(CUevent_flags::CU_EVENT_DEFAULT)).map_err(cuda_err)?;
                    sync()?;
                    host[i].push(t.elapsed().as_secs_f64() * 1e6 / calls as f64);
                    let ms = start_ev.elapsed_ms(&end_ev).map_err(cuda_err)?;
                    dev[i].push(f64::from(ms) * 1e3 / calls as f64);
                }
            }
            let median = |v: &[f64]| Timing::from_samples(v).map_or(f64::NAN, |t| t.median_us);
            let dt = dtype_name(dtype);
            let shape = format!("{rows}x{hidden}");
            for op in ["rms_norm", "silu_and_mul", "launch", "piece"] {
                let of = |imp: &str| cases.iter().position(|c| c.0 == op && c.1 == imp);
                let (candle_host, candle_dev) =
                    of("candle").map_or((f64::NAN, f64::NAN), |i| (median(&host[i]), median(&dev[i])));
                for (i, case) in cases.iter().enumerate().filter(|(_, c)| c.0 == op) {
                    let (h, d) = (median(&host[i]), median(&dev[i]));
                    println!(
                        "{op:<13} {dt:<5} {shape:<10} {:<11} {h:>9.2} {d:>9.2} {:>12.3} {:>12.3}",
                        case.1,
                        h / candle_host,
                        d / candle_dev
                    );
                    result_line(
                        "latency",
                        &[
                            ("op", op.into()),
                            ("dtype", dt.into()),
                            ("shape", shape.clone()),
                            ("impl", case.1.into()),
                            ("stream", stream_name.into()),
                            ("host_us", format!("{h:.3}")),
                            ("device_us", format!("{d:.3}")),
                            ("host_over_candle", format!("{:.3}", h / candle_host)),
                            ("device_over_candle", format!("{:.3}", d / candle_dev)),
                        ],
                    );
                }
            }
        }
    }
    // Every kernelized layer ran its kernel (strict mode would have failed the call otherwise).
    let report = dispatch::report();
    for layer in ["RMSNorm", "SiluAndMul"] {
        let chosen = report
            .find(layer, Target::Device(kernels_runtime::variant::BackendKind::Cuda, 0), Mode::Inference)
            .map(|r| matches!(r.choice(), Choice::Kernel(_)));
        outcome.record(chosen == Some(true));
        if chosen != Some(true) {
            println!("FAILED  {layer}: no kernel chosen\n{report}");
        }
    }
    Ok(outcome)
}
