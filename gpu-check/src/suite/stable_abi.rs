//! The torch stable-ABI variant of the CUDA example kernels (`examples/kernels/stable-abi-cuda`,
//! the same device code as the tvm-ffi variant behind PyTorch's stable C ABI), loaded through
//! the runtime's own host with no libtorch and no Python in the process:
//!
//! 1. it is selected and loaded (`torch-stable-abi…` chosen in the trace), and the process maps
//!    no real libtorch or libpython afterwards;
//! 2. the correctness suite on candle CUDA tensors on candle's own (non-default) stream, which
//!    the host hands the kernel as the current CUDA stream;
//! 3. errors: the kernel's `STD_TORCH_CHECK` text for host memory and for a dtype it lacks,
//!    and a good call afterwards; an op that allocates its result through the host and returns
//!    it, copied into the candle output;
//! 4. per-call cost on a tiny tensor, side by side in one run: the stable-ABI call, the
//!    tvm-ffi call of the same device code, and candle's op (host time per call over a loop,
//!    the stream synchronised once at the end).

use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Device, Result, Tensor};
use kernels_runtime::candle::{self as kc, CandleArg, CandleError};
use kernels_runtime::ffi::KernelFunction;
use kernels_runtime::platform::Platform;

use super::correctness::{self, rms_norm_reference};
use super::{EPS, Kernels, Outcome};
use crate::check::{Timing, Tolerance, compare};
use crate::{first_line, result_line, setup};

/// Goal for a stable-ABI call's host time over the tvm-ffi call's, on a tiny tensor.
const OVERHEAD_GOAL: f64 = 2.0;

/// The stable-ABI variant: the suite's three ops, the chosen variant, and `silu_and_mul_new`
/// (which allocates its output through the host and returns it).
pub(crate) struct Stable {
    pub(crate) kernels: Kernels,
    pub(crate) chosen: String,
    silu_and_mul_new: KernelFunction,
}

/// Selects and loads the stable-ABI variant in `dir` for CUDA device 0 and resolves its ops.
pub(crate) fn load(dir: &Path) -> std::result::Result<Stable, String> {
    let platform = Platform::detect();
    let (kernel, trace) = setup::select_and_load(dir, &platform).map_err(|e| e.to_string())?;
    let chosen = trace.chosen().unwrap_or("?").to_owned();
    println!("{trace}");
    println!("gpu-check-cuda: {chosen} selected ({})", kernel.path().display());
    let [rms_norm, silu_and_mul, add_rms_norm] = setup::resolve(&kernel).map_err(|e| e.to_string())?;
    let silu_and_mul_new = kernel.function("silu_and_mul_new").map_err(|e| e.to_string())?;
    Ok(Stable { kernels: Kernels { rms_norm, silu_and_mul, add_rms_norm }, chosen, silu_and_mul_new })
}

fn record(outcome: &mut Outcome, case: &str, found: std::result::Result<String, String>) {
    outcome.record(found.is_ok());
    match found {
        Ok(message) => {
            let message = first_line(&message).to_owned();
            println!("ok      {case:<28} {message}");
            result_line("stable-abi", &[("case", case.into()), ("status", "pass".into()), ("message", message)]);
        }
        Err(problem) => {
            let problem = first_line(&problem).to_owned();
            println!("FAILED  {case:<28} {problem}");
            result_line("stable-abi", &[("case", case.into()), ("status", "fail".into()), ("problem", problem)]);
        }
    }
}

/// Files mapped into this process whose name is libtorch's, c10's or Python's, other than the
/// host's stand-ins (memfds or files under 1 MiB): a real libtorch is hundreds of MiB.
fn foreign_torch_mappings() -> std::result::Result<Vec<String>, String> {
    let maps = std::fs::read_to_string("/proc/self/maps").map_err(|e| format!("/proc/self/maps: {e}"))?;
    let mut found: Vec<String> = maps
        .lines()
        .filter_map(|line| line.split_whitespace().nth(5))
        .filter(|path| {
            let name = path.rsplit('/').next().unwrap_or(path);
            (name.starts_with("libtorch") || name.starts_with("libc10") || name.starts_with("libpython"))
                && !path.contains("memfd:")
                && std::fs::metadata(path).map_or(true, |m| m.len() >= 1 << 20)
        })
        .map(str::to_owned)
        .collect();
    found.sort();
    found.dedup();
    Ok(found)
}

fn kernel_message(result: std::result::Result<(), CandleError>, needle: &str) -> std::result::Result<String, String> {
    match result {
        Ok(()) => Err(format!("the call succeeded; expected the kernel's error mentioning `{needle}`")),
        Err(CandleError::Kernel(kernels_runtime::ffi::KernelError::Raised { message, .. }))
            if message.contains(needle) =>
        {
            Ok(message)
        }
        Err(e) => Err(format!("expected the kernel's error mentioning `{needle}`, got: {e}")),
    }
}

/// Everything above but the correctness suite, which the caller runs with [`correctness::run`].
pub(crate) fn run(loaded: &Stable, tvm: &Kernels, device: &Device, bench: bool) -> Result<Outcome> {
    let (stable, chosen) = (&loaded.kernels, loaded.chosen.as_str());
    let mut outcome = Outcome::default();
    record(
        &mut outcome,
        "selected",
        if chosen.starts_with("torch-stable-abi") && chosen.contains("-cu") {
            Ok(chosen.to_owned())
        } else {
            Err(format!("expected a torch-stable-abi CUDA variant, got {chosen}"))
        },
    );
    record(
        &mut outcome,
        "no libtorch or libpython",
        foreign_torch_mappings().and_then(|found| {
            if found.is_empty() {
                Ok("no real libtorch, libc10 or libpython mapped".to_owned())
            } else {
                Err(format!("mapped: {}", found.join(", ")))
            }
        }),
    );

    let rms = |out: &Tensor, x: &Tensor, w: &Tensor| {
        // SAFETY: rms_norm(out, x, weight, eps) reads x and weight and writes only out; the
        // kernel checks every argument before launching.
        unsafe {
            kc::call(
                &stable.rms_norm,
                &[CandleArg::output(out), CandleArg::input(x), CandleArg::input(w), CandleArg::Float(EPS)],
            )
        }
    };
    // Host memory: the op's own check refuses it, and the text comes back.
    let x = Tensor::ones((2, 8), DType::F32, &Device::Cpu)?;
    let w = Tensor::ones(8, DType::F32, &Device::Cpu)?;
    let out = Tensor::zeros((2, 8), DType::F32, &Device::Cpu)?;
    record(&mut outcome, "host memory refused", kernel_message(rms(&out, &x, &w), "CUDA"));
    // A dtype the kernel does not implement.
    let x = Tensor::zeros((2, 8), DType::F64, device)?;
    let w = Tensor::zeros(8, DType::F64, device)?;
    let out = Tensor::zeros((2, 8), DType::F64, device)?;
    record(&mut outcome, "f64 refused", kernel_message(rms(&out, &x, &w), "must be float32, float16 or bfloat16"));
    // A good call afterwards.
    let x = Tensor::randn(0f32, 1.0, (4, 256), device)?;
    let w = Tensor::rand(0.5f32, 1.5, 256, device)?;
    let out = Tensor::zeros((4, 256), DType::F32, device)?;
    let good = rms(&out, &x, &w).map_err(|e| e.to_string()).and_then(|()| {
        let want = rms_norm_reference(&x, &w).and_then(|t| t.flatten_all()?.to_vec1::<f32>());
        let got = out.flatten_all().and_then(|t| t.to_vec1::<f32>());
        match (got, want) {
            (Ok(got), Ok(want)) => {
                let c = compare(&got, &want, Tolerance::for_dtype("f32").unwrap_or(Tolerance { abs: 1e-5, rel: 1e-5 }));
                if c.passed() { Ok(format!("max abs {:.2e}", c.max_abs)) } else { Err(format!("{c:?}")) }
            }
            (Err(e), _) | (_, Err(e)) => Err(e.to_string()),
        }
    });
    record(&mut outcome, "good call after errors", good);

    // An op that allocates its result through the host (aten::new_empty: cudaMallocAsync on the
    // call's stream) and returns it; the result is copied into the candle output on that stream.
    for dtype in [DType::F32, DType::BF16, DType::F16] {
        let x = Tensor::randn(0f32, 1.0, (33, 2 * 1000), device)?.to_dtype(dtype)?;
        let want = Tensor::zeros((33, 1000), dtype, device)?;
        let got = Tensor::zeros((33, 1000), dtype, device)?;
        let found = (|| -> std::result::Result<String, String> {
            // SAFETY: silu_and_mul(out, x) / silu_and_mul_new(x) read x; `want` and the output
            // `got` are written.
            unsafe {
                kc::call(&stable.silu_and_mul, &[CandleArg::output(&want), CandleArg::input(&x)])
                    .map_err(|e| e.to_string())?;
                kc::call(&loaded.silu_and_mul_new, &[CandleArg::output(&got), CandleArg::input(&x)])
                    .map_err(|e| e.to_string())?;
            }
            let diff = (|| -> Result<f32> {
                got.to_dtype(DType::F32)?.sub(&want.to_dtype(DType::F32)?)?.abs()?.max_all()?.to_scalar::<f32>()
            })()
            .map_err(|e| e.to_string())?;
            if diff == 0.0 {
                Ok(format!("{dtype:?}: equal to silu_and_mul's"))
            } else {
                Err(format!("{dtype:?}: max |diff| {diff}"))
            }
        })();
        record(&mut outcome, "returned tensor copied", found);
    }

    if bench {
        overhead(stable, tvm, device, &mut outcome)?;
    }
    Ok(outcome)
}

/// Host time per call on a tiny tensor: stable-ABI, tvm-ffi and candle, interleaved in rounds.
fn overhead(stable: &Kernels, tvm: &Kernels, device: &Device, outcome: &mut Outcome) -> Result<()> {
    const CALLS: usize = 2000;
    const ROUNDS: usize = 15;
    let Device::Cuda(cuda) = device else {
        candle_core::bail!("the overhead benchmark needs a CUDA device");
    };
    let stream = cuda.cuda_stream();
    let sync = || stream.synchronize().map_err(|e| candle_core::Error::Msg(format!("CUDA: {e:?}")));
    for dtype in [DType::BF16, DType::F32] {
        let (rows, hidden) = (1usize, 4096usize);
        let x = Tensor::randn(0f32, 1.0, (rows, hidden), device)?.to_dtype(dtype)?;
        let w = Tensor::rand(0.5f32, 1.5, hidden, device)?.to_dtype(dtype)?;
        let out = Tensor::zeros((rows, hidden), dtype, device)?;
        let silu_out = Tensor::zeros((rows, hidden / 2), dtype, device)?;
        let call_rms = |k: &Kernels| -> Result<()> {
            // SAFETY: as in `run`.
            unsafe {
                kc::call(
                    &k.rms_norm,
                    &[CandleArg::output(&out), CandleArg::input(&x), CandleArg::input(&w), CandleArg::Float(EPS)],
                )
            }
            .map_err(candle_core::Error::from)
        };
        let call_silu = |k: &Kernels| -> Result<()> {
            // SAFETY: silu_and_mul(out, x) reads x and writes out.
            unsafe { kc::call(&k.silu_and_mul, &[CandleArg::output(&silu_out), CandleArg::input(&x)]) }
                .map_err(candle_core::Error::from)
        };
        let a = x.narrow(1, 0, hidden / 2)?;
        let b = x.narrow(1, hidden / 2, hidden / 2)?;
        type Run<'a> = Box<dyn Fn() -> Result<()> + 'a>;
        let cases: Vec<(&str, &str, Run<'_>)> = vec![
            ("rms_norm", "stable-abi", Box::new(|| call_rms(stable))),
            ("rms_norm", "tvm-ffi", Box::new(|| call_rms(tvm))),
            ("rms_norm", "candle", Box::new(|| candle_nn::ops::rms_norm(&x, &w, EPS as f32).map(drop))),
            ("silu_and_mul", "stable-abi", Box::new(|| call_silu(stable))),
            ("silu_and_mul", "tvm-ffi", Box::new(|| call_silu(tvm))),
            ("silu_and_mul", "candle", Box::new(|| (candle_nn::ops::silu(&a)? * &b).map(drop))),
        ];
        let mut samples: Vec<Vec<f64>> = vec![Vec::with_capacity(ROUNDS); cases.len()];
        for case in &cases {
            (case.2)()?;
        }
        sync()?;
        for _ in 0..ROUNDS {
            for (i, case) in cases.iter().enumerate() {
                let start = Instant::now();
                for _ in 0..CALLS {
                    (case.2)()?;
                }
                sync()?;
                samples[i].push(start.elapsed().as_secs_f64() * 1e6 / CALLS as f64);
            }
        }
        let dt = correctness::dtype_name(dtype);
        let median = |i: usize| Timing::from_samples(&samples[i]).map_or(f64::NAN, |t| t.median_us);
        for (op, first) in [("rms_norm", 0usize), ("silu_and_mul", 3)] {
            let (s, t, c) = (median(first), median(first + 1), median(first + 2));
            let ratio = s / t;
            println!(
                "{op:<13} {dt:<5} [{rows} x {hidden}] host us/call: stable-abi {s:.2}, tvm-ffi {t:.2}, candle {c:.2}; \
                 stable-abi/tvm-ffi {ratio:.2} (goal <= {OVERHEAD_GOAL}), stable-abi/candle {:.2}",
                s / c
            );
            result_line(
                "overhead",
                &[
                    ("op", op.into()),
                    ("dtype", dt.into()),
                    ("shape", format!("{rows}x{hidden}")),
                    ("stable_abi_us", format!("{s:.3}")),
                    ("tvm_ffi_us", format!("{t:.3}")),
                    ("candle_us", format!("{c:.3}")),
                    ("stable_over_tvm", format!("{ratio:.3}")),
                    ("stable_over_candle", format!("{:.3}", s / c)),
                ],
            );
            outcome.record(ratio <= OVERHEAD_GOAL);
        }
    }
    Ok(())
}
