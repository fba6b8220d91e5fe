//! Kernel results on candle CUDA tensors against candle's ops computed in f32.

use std::fmt;

use candle_core::{D, DType, Device, Result, Tensor};
use kernels_runtime::candle::{self as kc, CandleArg};

use super::{EPS, Kernels, Outcome, uniform};
use crate::check::{Comparison, Tolerance, compare};
use crate::{first_line, result_line};

/// The three kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    RmsNorm,
    SiluAndMul,
    AddRmsNorm,
}

impl Op {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Op::RmsNorm => "rms_norm",
            Op::SiluAndMul => "silu_and_mul",
            Op::AddRmsNorm => "add_rms_norm",
        }
    }
}

/// Where the tensors of a case live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Placement {
    /// Fresh contiguous tensors.
    Plain,
    /// Inputs and outputs are rows 1.. of a buffer one row larger (storage offset of a row);
    /// the output buffer has a guard row before and after.
    RowOffset,
    /// Inputs and outputs start one element into their buffer (misaligned for vector loads);
    /// the output buffer has a guard element before.
    ElementOffset,
    /// Outputs are the inputs (`out` = `x`, and for add_rms_norm `residual_out` = `residual`).
    InPlace,
}

impl fmt::Display for Placement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Placement::Plain => "plain",
            Placement::RowOffset => "row-offset",
            Placement::ElementOffset => "element-offset",
            Placement::InPlace => "in-place",
        })
    }
}

pub(crate) fn dtype_name(dtype: DType) -> &'static str {
    match dtype {
        DType::F32 => "f32",
        DType::F16 => "f16",
        DType::BF16 => "bf16",
        _ => "other",
    }
}

fn shape_name(dims: &[usize]) -> String {
    dims.iter().map(ToString::to_string).collect::<Vec<_>>().join("x")
}

/// The cases: `dims` is the shape of `x` for the norms and of `out` for silu_and_mul.
fn cases(op: Op) -> Vec<(Vec<usize>, Placement)> {
    use Placement::*;
    let mut cases: Vec<(Vec<usize>, Placement)> = vec![
        (vec![1, 8], Plain),
        (vec![3, 5], Plain),
        (vec![7, 1023], Plain),
        (vec![16, 4096], Plain),
        (vec![5, 8191], Plain),
        (vec![2, 3, 769], Plain),
        (vec![4, 20000], Plain),
        (vec![2, 10001], Plain),
        (vec![3, 40960], Plain),
        (vec![7, 1023], RowOffset),
        (vec![6, 4096], RowOffset),
        (vec![3, 5], ElementOffset),
        (vec![4, 4096], ElementOffset),
    ];
    match op {
        Op::RmsNorm | Op::AddRmsNorm => {
            cases.push((vec![100_000, 8], Plain));
            cases.push((vec![16, 4096], InPlace));
            cases.push((vec![7, 1023], InPlace));
        }
        Op::SiluAndMul => cases.push((vec![200_000, 8], Plain)),
    }
    cases
}

/// Which cases a kernel library supports beyond the common ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scope {
    /// Outputs may be the inputs themselves (`out` = `x`).
    pub in_place: bool,
}

impl Scope {
    /// The CUDA example kernels: everything.
    pub const CUDA: Scope = Scope { in_place: true };
}

/// Runs every case on `device`, printing a table and `RESULT check` lines.
pub fn run(kernels: &Kernels, device: &Device, scope: Scope) -> Result<Outcome> {
    let mut outcome = Outcome::default();
    println!(
        "{:<13} {:<5} {:<12} {:<15} {:>10} {:>10}  result",
        "op", "dtype", "shape", "placement", "max abs", "max rel"
    );
    let mut seed = 1;
    for op in [Op::RmsNorm, Op::SiluAndMul, Op::AddRmsNorm] {
        for dtype in [DType::F32, DType::F16, DType::BF16] {
            for (dims, placement) in cases(op) {
                seed += 1;
                if placement == Placement::InPlace && !scope.in_place {
                    continue;
                }
                let found = run_case(kernels, device, op, dtype, &dims, placement, seed);
                let tol = Tolerance::for_dtype(dtype_name(dtype)).expect("kernel dtypes have tolerances");
                let (passed, detail, cmp) = match found {
                    Ok(results) => summarise(&results, tol),
                    Err(e) => (false, format!("error: {}", first_line(&e.to_string())), None),
                };
                outcome.record(passed);
                let (max_abs, max_rel) = cmp.map_or((f32::NAN, f32::NAN), |c| (c.max_abs, c.max_rel));
                println!(
                    "{:<13} {:<5} {:<12} {:<15} {:>10.3e} {:>10.3e}  {}",
                    op.name(),
                    dtype_name(dtype),
                    shape_name(&dims),
                    placement.to_string(),
                    max_abs,
                    max_rel,
                    if passed { "ok".to_owned() } else { format!("FAILED: {detail}") }
                );
                result_line(
                    "check",
                    &[
                        ("op", op.name().into()),
                        ("dtype", dtype_name(dtype).into()),
                        ("shape", shape_name(&dims)),
                        ("placement", placement.to_string()),
                        ("max_abs", format!("{max_abs:e}")),
                        ("max_rel", format!("{max_rel:e}")),
                        ("atol", format!("{:e}", tol.abs)),
                        ("rtol", format!("{:e}", tol.rel)),
                        ("status", if passed { "pass" } else { "fail" }.into()),
                    ],
                );
            }
        }
    }
    for dtype in ["f32", "f16", "bf16"] {
        if let Some(t) = Tolerance::for_dtype(dtype) {
            println!("tolerance {dtype}: |kernel - reference| <= {t}");
        }
    }
    Ok(outcome)
}

/// What one case produced: for each output, its name, values, reference values, and whether
/// the guard elements around it were left alone.
struct CaseResult {
    outputs: Vec<(&'static str, Vec<f32>, Vec<f32>)>,
    guard_problem: Option<String>,
}

fn summarise(result: &CaseResult, tol: Tolerance) -> (bool, String, Option<Comparison>) {
    let mut worst: Option<Comparison> = None;
    let mut problems = Vec::new();
    for (name, got, want) in &result.outputs {
        let c = compare(got, want, tol);
        if !c.passed() {
            let first = c
                .first_violation
                .map(|(i, g, w)| format!(" (first at flat index {i}: {g} vs {w})"))
                .unwrap_or_default();
            problems.push(format!("{name}: {} of {} elements off{first}", c.violations, c.len));
        }
        worst = Some(match worst {
            Some(w) => Comparison {
                max_abs: w.max_abs.max(c.max_abs),
                max_rel: w.max_rel.max(c.max_rel),
                violations: w.violations + c.violations,
                ..w
            },
            None => c,
        });
    }
    if let Some(g) = &result.guard_problem {
        problems.push(g.clone());
    }
    (problems.is_empty(), problems.join("; "), worst)
}

/// A tensor of `dims` holding `values` in `dtype` on `device`, placed as `placement` says.
/// Returns the tensor and the buffer it lives in.
fn place(
    values: &[f32],
    dims: &[usize],
    dtype: DType,
    device: &Device,
    placement: Placement,
) -> Result<(Tensor, Tensor)> {
    let n = values.len();
    let last = *dims.last().unwrap_or(&1);
    let (pad, total) = match placement {
        Placement::Plain | Placement::InPlace => (0, n),
        Placement::RowOffset => (last, n + last),
        Placement::ElementOffset => (1, n + 1),
    };
    let mut data = vec![0f32; total];
    // The padding holds values a kernel reading before its view would pick up.
    data[..pad].iter_mut().for_each(|v| *v = 1000.0);
    data[pad..].copy_from_slice(values);
    let buffer = Tensor::from_vec(data, total, &Device::Cpu)?.to_dtype(dtype)?.to_device(device)?;
    let tensor = buffer.narrow(0, pad, n)?.reshape(dims)?;
    Ok((tensor, buffer))
}

/// A zero output of `dims`, placed as `placement` says (guards around it), with the guard
/// positions of its buffer.
fn place_output(
    dims: &[usize],
    dtype: DType,
    device: &Device,
    placement: Placement,
) -> Result<(Tensor, Tensor, Vec<usize>)> {
    let n: usize = dims.iter().product();
    let last = *dims.last().unwrap_or(&1);
    let (pad, total, guards): (usize, usize, Vec<usize>) = match placement {
        Placement::Plain | Placement::InPlace => (0, n, vec![]),
        Placement::RowOffset => (last, n + 2 * last, (0..last).chain(n + last..n + 2 * last).collect()),
        Placement::ElementOffset => (1, n + 1, vec![0]),
    };
    let buffer = Tensor::zeros(total, dtype, device)?;
    let tensor = buffer.narrow(0, pad, n)?.reshape(dims)?;
    Ok((tensor, buffer, guards))
}

fn host(t: &Tensor) -> Result<Vec<f32>> {
    t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()
}

fn guard_problem(name: &str, buffer: &Tensor, guards: &[usize]) -> Result<Option<String>> {
    if guards.is_empty() {
        return Ok(None);
    }
    let values = host(buffer)?;
    let touched: Vec<usize> = guards.iter().copied().filter(|&i| values[i] != 0.0).collect();
    Ok((!touched.is_empty()).then(|| {
        format!(
            "{name}: {} element(s) outside the view were written (first at buffer index {})",
            touched.len(),
            touched[0]
        )
    }))
}

/// The f32 reference of RMSNorm: `x / sqrt(mean(x^2) + eps) * w` with candle's ops.
pub(crate) fn rms_norm_reference(x32: &Tensor, w32: &Tensor) -> Result<Tensor> {
    let mean_sq = x32.sqr()?.mean_keepdim(D::Minus1)?;
    let inv = (mean_sq + EPS)?.sqrt()?.recip()?;
    x32.broadcast_mul(&inv)?.broadcast_mul(w32)
}

/// The f32 reference of SiLU-and-mul: `silu(x[..., :d]) * x[..., d:]` with candle's ops.
pub(crate) fn silu_and_mul_reference(x32: &Tensor) -> Result<Tensor> {
    let d = x32.dim(D::Minus1)? / 2;
    x32.narrow(D::Minus1, 0, d)?.silu()?.mul(&x32.narrow(D::Minus1, d, d)?)
}

fn run_case(
    kernels: &Kernels,
    device: &Device,
    op: Op,
    dtype: DType,
    dims: &[usize],
    placement: Placement,
    seed: u64,
) -> Result<CaseResult> {
    let last = *dims.last().unwrap_or(&1);
    let n: usize = dims.iter().product();
    let weight = || -> Result<Tensor> {
        Tensor::from_vec(uniform(seed ^ 0xAAAA, last, 0.5, 1.5), last, &Device::Cpu)?.to_dtype(dtype)?.to_device(device)
    };
    match op {
        Op::RmsNorm => {
            let (x, _) = place(&uniform(seed, n, -3.0, 3.0), dims, dtype, device, placement)?;
            let w = weight()?;
            let x32 = x.to_dtype(DType::F32)?;
            let want = host(&rms_norm_reference(&x32, &w.to_dtype(DType::F32)?)?)?;
            let (out, buffer, guards) = if placement == Placement::InPlace {
                (x.clone(), x.clone(), vec![])
            } else {
                place_output(dims, dtype, device, placement)?
            };
            // SAFETY: rms_norm(out, x, weight, eps) reads x and weight and writes every
            // element of out (the same tensor as x in place, which the kernel allows).
            unsafe {
                kc::call(
                    &kernels.rms_norm,
                    &[CandleArg::output(&out), CandleArg::input(&x), CandleArg::input(&w), CandleArg::Float(EPS)],
                )?
            };
            Ok(CaseResult {
                outputs: vec![("out", host(&out)?, want)],
                guard_problem: guard_problem("out", &buffer, &guards)?,
            })
        }
        Op::SiluAndMul => {
            let mut x_dims = dims.to_vec();
            if let Some(l) = x_dims.last_mut() {
                *l *= 2;
            }
            let (x, _) = place(&uniform(seed, 2 * n, -6.0, 6.0), &x_dims, dtype, device, placement)?;
            let want = host(&silu_and_mul_reference(&x.to_dtype(DType::F32)?)?)?;
            let (out, buffer, guards) = place_output(dims, dtype, device, placement)?;
            // SAFETY: silu_and_mul(out, x) reads x and writes every element of out, a
            // separate buffer.
            unsafe { kc::call(&kernels.silu_and_mul, &[CandleArg::output(&out), CandleArg::input(&x)])? };
            Ok(CaseResult {
                outputs: vec![("out", host(&out)?, want)],
                guard_problem: guard_problem("out", &buffer, &guards)?,
            })
        }
        Op::AddRmsNorm => {
            let (x, _) = place(&uniform(seed, n, -3.0, 3.0), dims, dtype, device, placement)?;
            let (r, _) = place(&uniform(seed ^ 0x5555, n, -3.0, 3.0), dims, dtype, device, placement)?;
            let w = weight()?;
            // residual_out = x + residual rounded to the dtype, then RMSNorm of it.
            let sum = (x.to_dtype(DType::F32)? + r.to_dtype(DType::F32)?)?.to_dtype(dtype)?.to_dtype(DType::F32)?;
            let want_residual = host(&sum)?;
            let want = host(&rms_norm_reference(&sum, &w.to_dtype(DType::F32)?)?)?;
            let (out, residual_out, guards) = if placement == Placement::InPlace {
                (x.clone(), r.clone(), None)
            } else {
                let (out, out_buffer, out_guards) = place_output(dims, dtype, device, placement)?;
                let (res, res_buffer, res_guards) = place_output(dims, dtype, device, placement)?;
                (out, res, Some((out_buffer, out_guards, res_buffer, res_guards)))
            };
            // SAFETY: add_rms_norm(out, residual_out, x, residual, weight, eps) reads x,
            // residual and weight and writes every element of out and residual_out, which
            // are either separate buffers or exactly x and residual (allowed in place).
            unsafe {
                kc::call(
                    &kernels.add_rms_norm,
                    &[
                        CandleArg::output(&out),
                        CandleArg::output(&residual_out),
                        CandleArg::input(&x),
                        CandleArg::input(&r),
                        CandleArg::input(&w),
                        CandleArg::Float(EPS),
                    ],
                )?
            };
            let guard_problem = match &guards {
                Some((ob, og, rb, rg)) => guard_problem("out", ob, og)?.or(guard_problem("residual_out", rb, rg)?),
                None => None,
            };
            Ok(CaseResult {
                outputs: vec![("out", host(&out)?, want), ("residual_out", host(&residual_out)?, want_residual)],
                guard_problem,
            })
        }
    }
}
