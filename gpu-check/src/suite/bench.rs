//! Benchmarks at [rows × hidden] bf16 (default 16384 × 8192), all measured in the same run:
//!
//! - the reference: a device-to-device copy of `x` (`cuMemcpyDtoDAsync`), whose bandwidth
//!   counts the bytes read and written;
//! - each kernel's effective bandwidth: the bytes it must read and write (inputs once, outputs
//!   once) over its median time, as a fraction of the copy's;
//! - each kernel's time against candle's CUDA ops doing the same work: `candle_nn::ops::rms_norm`,
//!   unfused `silu(a) * b`, and `x + residual` followed by `rms_norm`.
//!
//! For silu·mul, `a` and `b` are the two halves of `x` narrowed along the last dimension. candle's
//! unary and binary CUDA ops read strided tensors directly, so the fair comparison passes the
//! narrowed halves as they are; making them contiguous first adds two copies a candle user
//! would not write, and is shown only for reference.
//!
//! Timing: CUDA events recorded on candle's stream around each run; every case runs once per
//! round, rounds follow each other without synchronising (so the GPU never waits for the CPU),
//! after untimed warm-up rounds; the median over the rounds is reported. The kernel outputs at
//! this shape are also checked against the f32 reference on the device.

use std::sync::Arc;

use candle_core::cuda_backend::cudarc::driver::sys::CUevent_flags;
use candle_core::cuda_backend::cudarc::driver::{CudaEvent, CudaStream};
use candle_core::{D, DType, Device, Result, Storage, Tensor};
use kernels_runtime::candle::{self as kc, CandleArg};

use super::correctness::{Op, rms_norm_reference, silu_and_mul_reference};
use super::{EPS, Kernels, Outcome};
use crate::check::{Timing, Tolerance};
use crate::options::Options;
use crate::result_line;

/// Goal for the kernels' bandwidth, as a fraction of the copy's.
const BANDWIDTH_GOAL: f64 = 0.85;

/// The silu·mul baseline that copies the halves first.
const CONTIGUOUS_HALVES: &str = "candle silu(a)*b, contiguous halves";

/// A timed case: its name, what implements it, the bytes it must move, and the work.
struct Case<'a> {
    op: &'static str,
    implementation: &'static str,
    bytes: u64,
    run: Box<dyn FnMut() -> Result<()> + 'a>,
}

fn cuda_err(e: impl std::fmt::Debug) -> candle_core::Error {
    candle_core::Error::Msg(format!("CUDA: {e:?}"))
}

/// `label` names the kernels' rows (`kernel`, or which variant they are).
pub(crate) fn run(kernels: &Kernels, label: &'static str, device: &Device, options: &Options) -> Result<Outcome> {
    let Device::Cuda(cuda) = device else {
        candle_core::bail!("the benchmarks need a CUDA device");
    };
    let stream: Arc<CudaStream> = cuda.cuda_stream();
    let (rows, hidden) = options.bench_shape;
    let d = hidden / 2;
    let elem = DType::BF16.size_in_bytes() as u64;
    let n = (rows * hidden) as u64;
    println!(
        "x [{rows} x {hidden}] bf16 (silu_and_mul writes [{rows} x {d}]); {} warm-up and {} timed rounds",
        options.warmup, options.iters
    );

    let x = Tensor::randn(0f32, 1.0, (rows, hidden), device)?.to_dtype(DType::BF16)?;
    let residual = Tensor::randn(0f32, 1.0, (rows, hidden), device)?.to_dtype(DType::BF16)?;
    let w = (Tensor::rand(0.5f32, 1.5, hidden, device)?).to_dtype(DType::BF16)?;
    let out = Tensor::zeros((rows, hidden), DType::BF16, device)?;
    let residual_out = Tensor::zeros((rows, hidden), DType::BF16, device)?;
    let silu_out = Tensor::zeros((rows, d), DType::BF16, device)?;
    let a = x.narrow(D::Minus1, 0, d)?;
    let b = x.narrow(D::Minus1, d, d)?;

    // The copy: a standalone copy of `x`'s bytes to a buffer of the same size.
    let copy_src = {
        let (storage, layout) = x.storage_and_layout();
        let Storage::Cuda(storage) = &*storage else {
            candle_core::bail!("x is not on the CUDA device");
        };
        let slice = storage.as_cuda_slice::<half::bf16>()?;
        if layout.start_offset() != 0 || slice.len() != n as usize {
            candle_core::bail!("x is not a fresh contiguous tensor");
        }
        stream.clone_dtod(slice).map_err(cuda_err)?
    };
    let mut copy_dst = stream.alloc_zeros::<half::bf16>(n as usize).map_err(cuda_err)?;
    let add_out = Tensor::zeros((rows, hidden), DType::BF16, device)?;

    let rms_norm = &kernels.rms_norm;
    let silu_and_mul = &kernels.silu_and_mul;
    let add_rms_norm = &kernels.add_rms_norm;
    let mut cases: Vec<Case<'_>> = vec![
        Case {
            op: "copy",
            implementation: "cuMemcpyDtoDAsync",
            bytes: 2 * n * elem,
            run: Box::new(|| stream.memcpy_dtod(&copy_src, &mut copy_dst).map_err(cuda_err)),
        },
        Case {
            op: Op::RmsNorm.name(),
            implementation: label,
            bytes: 2 * n * elem + hidden as u64 * elem,
            run: Box::new(|| {
                // SAFETY: rms_norm(out, x, weight, eps) reads x and w and writes out.
                unsafe {
                    kc::call(
                        rms_norm,
                        &[CandleArg::output(&out), CandleArg::input(&x), CandleArg::input(&w), CandleArg::Float(EPS)],
                    )
                }
                .map_err(candle_core::Error::from)
            }),
        },
        Case {
            op: Op::RmsNorm.name(),
            implementation: "candle_nn::ops::rms_norm",
            bytes: 2 * n * elem + hidden as u64 * elem,
            run: Box::new(|| candle_nn::ops::rms_norm(&x, &w, EPS as f32).map(drop)),
        },
        Case {
            op: Op::SiluAndMul.name(),
            implementation: label,
            bytes: n * elem + n / 2 * elem,
            run: Box::new(|| {
                // SAFETY: silu_and_mul(out, x) reads x and writes silu_out, a separate buffer.
                unsafe { kc::call(silu_and_mul, &[CandleArg::output(&silu_out), CandleArg::input(&x)]) }
                    .map_err(candle_core::Error::from)
            }),
        },
        Case {
            op: Op::SiluAndMul.name(),
            implementation: "candle silu(a)*b",
            bytes: n * elem + n / 2 * elem,
            run: Box::new(|| (a.silu()? * &b).map(drop)),
        },
        Case {
            op: Op::SiluAndMul.name(),
            implementation: CONTIGUOUS_HALVES,
            bytes: n * elem + n / 2 * elem,
            run: Box::new(|| (a.contiguous()?.silu()? * b.contiguous()?).map(drop)),
        },
        Case {
            op: Op::AddRmsNorm.name(),
            implementation: label,
            bytes: 4 * n * elem + hidden as u64 * elem,
            run: Box::new(|| {
                // SAFETY: add_rms_norm(out, residual_out, x, residual, weight, eps) reads x,
                // residual and w and writes add_out and residual_out, separate buffers.
                unsafe {
                    kc::call(
                        add_rms_norm,
                        &[
                            CandleArg::output(&add_out),
                            CandleArg::output(&residual_out),
                            CandleArg::input(&x),
                            CandleArg::input(&residual),
                            CandleArg::input(&w),
                            CandleArg::Float(EPS),
                        ],
                    )
                }
                .map_err(candle_core::Error::from)
            }),
        },
        Case {
            op: Op::AddRmsNorm.name(),
            implementation: "candle x+residual, rms_norm",
            bytes: 4 * n * elem + hidden as u64 * elem,
            run: Box::new(|| {
                let sum = (&x + &residual)?;
                candle_nn::ops::rms_norm(&sum, &w, EPS as f32).map(drop)
            }),
        },
    ];

    let described: Vec<(&'static str, &'static str, u64)> =
        cases.iter().map(|c| (c.op, c.implementation, c.bytes)).collect();
    let timings = time_cases(&stream, &mut cases, options.warmup, options.iters)?;
    drop(cases);

    let mut outcome = Outcome::default();
    let copy_gbps = timings[0].gbps(described[0].2);
    println!(
        "\n{:<13} {:<36} {:>10} {:>10} {:>10} {:>9} {:>9}",
        "op", "implementation", "median us", "p10 us", "p90 us", "GB/s", "of copy"
    );
    let kernel_time = |op: &str| {
        described.iter().zip(&timings).find(|((o, i, _), _)| *o == op && *i == label).map(|(_, t)| t.median_us)
    };
    for ((op, implementation, bytes), t) in described.iter().zip(&timings) {
        let gbps = t.gbps(*bytes);
        let fraction = gbps / copy_gbps;
        println!(
            "{op:<13} {implementation:<36} {:>10.1} {:>10.1} {:>10.1} {gbps:>9.0} {fraction:>9.3}",
            t.median_us, t.p10_us, t.p90_us
        );
        let mut fields = vec![
            ("op", (*op).to_owned()),
            ("impl", (*implementation).to_owned()),
            ("shape", format!("{rows}x{hidden}")),
            ("dtype", "bf16".into()),
            ("bytes", bytes.to_string()),
            ("median_us", format!("{:.2}", t.median_us)),
            ("p10_us", format!("{:.2}", t.p10_us)),
            ("p90_us", format!("{:.2}", t.p90_us)),
            ("runs", t.runs.to_string()),
            ("gbps", format!("{gbps:.1}")),
            ("of_copy", format!("{fraction:.3}")),
        ];
        if *implementation == label && *op != "copy" {
            fields.push(("goal", if fraction >= BANDWIDTH_GOAL { "met" } else { "missed" }.into()));
        }
        result_line("bench", &fields);
    }

    println!();
    for ((op, implementation, _), t) in described.iter().zip(&timings) {
        if *implementation == label || *op == "copy" {
            continue;
        }
        let Some(kernel_us) = kernel_time(op) else { continue };
        let speedup = t.median_us / kernel_us;
        // Contiguous copies of the halves are extra work a candle user would not write: shown,
        // not a goal.
        let goal = match (*implementation == CONTIGUOUS_HALVES, speedup > 1.0) {
            (true, _) => "reference-only",
            (false, true) => "met",
            (false, false) => "missed",
        };
        println!("{op:<13} kernel {kernel_us:.1} us vs {implementation} {:.1} us: {speedup:.2}x", t.median_us);
        result_line(
            "speedup",
            &[
                ("op", (*op).to_owned()),
                ("baseline", (*implementation).to_owned()),
                ("kernel_us", format!("{kernel_us:.2}")),
                ("baseline_us", format!("{:.2}", t.median_us)),
                ("speedup", format!("{speedup:.3}")),
                ("goal", goal.into()),
            ],
        );
    }

    println!("\n== results at the benchmark shape (reference: candle ops in f32, on the device)");
    let tol = Tolerance::for_dtype("bf16").expect("bf16 has a tolerance");
    let x32 = x.to_dtype(DType::F32)?;
    let w32 = w.to_dtype(DType::F32)?;
    let sum = (&x32 + residual.to_dtype(DType::F32)?)?.to_dtype(DType::BF16)?.to_dtype(DType::F32)?;
    let checks: [(&str, &Tensor, Tensor); 4] = [
        ("rms_norm", &out, rms_norm_reference(&x32, &w32)?),
        ("silu_and_mul", &silu_out, silu_and_mul_reference(&x32)?),
        ("add_rms_norm", &add_out, rms_norm_reference(&sum, &w32)?),
        ("add_rms_norm residual_out", &residual_out, sum.clone()),
    ];
    for (name, got, want) in checks {
        let (violations, max_abs) = device_compare(got, &want, tol)?;
        let passed = violations == 0;
        outcome.record(passed);
        println!(
            "{name:<26} max abs error {max_abs:.3e}, {violations} of {} elements outside {tol}: {}",
            got.elem_count(),
            if passed { "ok" } else { "FAILED" }
        );
        result_line(
            "check",
            &[
                ("op", name.into()),
                ("dtype", "bf16".into()),
                ("shape", format!("{rows}x{hidden}")),
                ("placement", "benchmark".into()),
                ("max_abs", format!("{max_abs:e}")),
                ("violations", violations.to_string()),
                ("status", if passed { "pass" } else { "fail" }.into()),
            ],
        );
    }
    Ok(outcome)
}

/// Runs every case once per round, `warmup` untimed rounds then `iters` timed ones, with a
/// pair of events around each timed run; synchronises once at the end.
fn time_cases(stream: &Arc<CudaStream>, cases: &mut [Case<'_>], warmup: usize, iters: usize) -> Result<Vec<Timing>> {
    for _ in 0..warmup {
        for case in cases.iter_mut() {
            (case.run)()?;
        }
    }
    let timed = Some(CUevent_flags::CU_EVENT_DEFAULT);
    let mut events: Vec<Vec<(CudaEvent, CudaEvent)>> = (0..cases.len()).map(|_| Vec::with_capacity(iters)).collect();
    for _ in 0..iters {
        for (case, pairs) in cases.iter_mut().zip(events.iter_mut()) {
            let start = stream.record_event(timed).map_err(cuda_err)?;
            (case.run)()?;
            let end = stream.record_event(timed).map_err(cuda_err)?;
            pairs.push((start, end));
        }
    }
    stream.synchronize().map_err(cuda_err)?;
    let mut timings = Vec::with_capacity(cases.len());
    for (case, pairs) in cases.iter().zip(&events) {
        let samples: Vec<f64> = pairs
            .iter()
            .map(|(start, end)| start.elapsed_ms(end).map(|ms| f64::from(ms) * 1e3).map_err(cuda_err))
            .collect::<Result<_>>()?;
        let timing = Timing::from_samples(&samples)
            .ok_or_else(|| candle_core::Error::Msg(format!("{} {}: no samples", case.op, case.implementation)))?;
        timings.push(timing);
    }
    Ok(timings)
}

/// Counts the elements of `got` (any float dtype) outside `tol` of `want` (f32), and the
/// largest absolute difference, computed on the device.
fn device_compare(got: &Tensor, want: &Tensor, tol: Tolerance) -> Result<(u64, f32)> {
    let got = got.to_dtype(DType::F32)?;
    let diff = (got - want)?.abs()?;
    let bound = want.abs()?.affine(f64::from(tol.rel), f64::from(tol.abs))?;
    // NaN differences fail `le`, so they count as violations.
    let within = u64::from(diff.le(&bound)?.to_dtype(DType::U32)?.sum_all()?.to_scalar::<u32>()?);
    let violations = diff.elem_count() as u64 - within;
    let max_abs = diff.max_all()?.to_scalar::<f32>()?;
    Ok((violations, max_abs))
}
