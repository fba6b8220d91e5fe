//! Bad arguments: the kernel's own error messages, the adapter's refusals, and a good call
//! afterwards.

use candle_core::{DType, Device, Result, Tensor};
use kernels_runtime::candle::{self as kc, CandleArg, CandleError};

use super::correctness::rms_norm_reference;
use super::{EPS, Kernels, Outcome};
use crate::check::{Tolerance, compare};
use crate::setup::expect_raised;
use crate::{first_line, result_line};

fn kernel_error(
    result: std::result::Result<(), CandleError>,
) -> std::result::Result<(), Option<kernels_runtime::ffi::KernelError>> {
    result.map_err(|e| match e {
        CandleError::Kernel(k) => Some(k),
        _ => None,
    })
}

fn report(outcome: &mut Outcome, case: &str, found: std::result::Result<String, String>) {
    outcome.record(found.is_ok());
    let found = found.map(|m| first_line(&m).to_owned()).map_err(|p| first_line(&p).to_owned());
    match found {
        Ok(message) => {
            println!("ok      {case:<22} {message}");
            result_line("error-check", &[("case", case.into()), ("status", "pass".into()), ("message", message)]);
        }
        Err(problem) => {
            println!("FAILED  {case:<22} {problem}");
            result_line("error-check", &[("case", case.into()), ("status", "fail".into()), ("problem", problem)]);
        }
    }
}

pub(crate) fn run(kernels: &Kernels, device: &Device) -> Result<Outcome> {
    let mut outcome = Outcome::default();
    let rms = |out: &Tensor, x: &Tensor, w: &Tensor| {
        // SAFETY: rms_norm(out, x, weight, eps) reads x and weight and writes only out; the
        // kernel checks every argument before touching memory.
        unsafe {
            kc::call(
                &kernels.rms_norm,
                &[CandleArg::output(out), CandleArg::input(x), CandleArg::input(w), CandleArg::Float(EPS)],
            )
        }
    };

    // A dtype the kernel does not implement.
    let x = Tensor::zeros((4, 8), DType::I64, device)?;
    let w = Tensor::zeros(8, DType::I64, device)?;
    let out = Tensor::zeros((4, 8), DType::I64, device)?;
    report(
        &mut outcome,
        "wrong-dtype (i64)",
        expect_raised(kernel_error(rms(&out, &x, &w)), "TypeError", "must be float32, float16 or bfloat16"),
    );

    // Mixed dtypes.
    let x = Tensor::ones((4, 8), DType::F32, device)?;
    let w = Tensor::ones(8, DType::BF16, device)?;
    let out = Tensor::zeros((4, 8), DType::F32, device)?;
    report(&mut outcome, "mixed-dtypes", expect_raised(kernel_error(rms(&out, &x, &w)), "TypeError", "same dtype"));

    // CPU tensors handed to the CUDA kernel.
    let x = Tensor::ones((4, 8), DType::F32, &Device::Cpu)?;
    let w = Tensor::ones(8, DType::F32, &Device::Cpu)?;
    let out = Tensor::zeros((4, 8), DType::F32, &Device::Cpu)?;
    report(
        &mut outcome,
        "cpu-tensors",
        expect_raised(kernel_error(rms(&out, &x, &w)), "ValueError", "must be a CUDA device tensor"),
    );

    // A shape the kernel refuses.
    let x = Tensor::ones((4, 8), DType::F32, device)?;
    let out = Tensor::zeros((4, 3), DType::F32, device)?;
    // SAFETY: silu_and_mul(out, x) reads x and writes only out; it checks shapes first.
    let bad_shape = unsafe { kc::call(&kernels.silu_and_mul, &[CandleArg::output(&out), CandleArg::input(&x)]) };
    report(&mut outcome, "bad-shape", expect_raised(kernel_error(bad_shape), "ValueError", "twice"));

    // Refused by the adapter before any call.
    let wide = Tensor::ones((4, 16), DType::F32, device)?;
    let x = wide.narrow(1, 0, 8)?;
    let w = Tensor::ones(8, DType::F32, device)?;
    let out = Tensor::zeros((4, 8), DType::F32, device)?;
    let found = match rms(&out, &x, &w) {
        Err(e @ CandleError::NonContiguous { .. }) => Ok(e.to_string()),
        Err(e) => Err(format!("expected the adapter's NonContiguous, got: {e}")),
        Ok(()) => Err("a non-contiguous input was accepted".into()),
    };
    report(&mut outcome, "non-contiguous", found);

    let out_cpu = Tensor::zeros((4, 8), DType::F32, &Device::Cpu)?;
    let x = Tensor::ones((4, 8), DType::F32, device)?;
    let found = match rms(&out_cpu, &x, &w) {
        Err(e @ CandleError::DeviceMismatch { .. }) => Ok(e.to_string()),
        Err(e) => Err(format!("expected the adapter's DeviceMismatch, got: {e}")),
        Ok(()) => Err("tensors on two devices were accepted".into()),
    };
    report(&mut outcome, "mixed-devices", found);

    // The device and the kernel still work.
    let x = Tensor::from_vec((0..64).map(|i| i as f32 / 8.0 - 4.0).collect::<Vec<_>>(), (8, 8), &Device::Cpu)?
        .to_device(device)?;
    let out = Tensor::zeros((8, 8), DType::F32, device)?;
    let found = match rms(&out, &x, &w) {
        Ok(()) => {
            let got = out.flatten_all()?.to_vec1::<f32>()?;
            let want = rms_norm_reference(&x, &w)?.flatten_all()?.to_vec1::<f32>()?;
            let tol = Tolerance::for_dtype("f32").expect("f32 has a tolerance");
            let c = compare(&got, &want, tol);
            if c.passed() {
                Ok(format!("rms_norm after the errors: max abs error {:e}", c.max_abs))
            } else {
                Err(format!("rms_norm after the errors is wrong: {} elements off", c.violations))
            }
        }
        Err(e) => Err(format!("a good call after the errors failed: {e}")),
    };
    report(&mut outcome, "good-call-after", found);
    Ok(outcome)
}
