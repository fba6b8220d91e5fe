//! Example CPU kernels written in Rust, exported with the TVM-FFI stable C ABI.
//!
//! Built as a cdylib, this crate exports, for `float32`, `float16` and `bfloat16` tensors:
//!
//! | symbol | arguments | computes |
//! |---|---|---|
//! | `__tvm_ffi_silu_and_mul` | `out [..., d]`, `x [..., 2d]` | `out = silu(x[..., :d]) * x[..., d:]` |
//! | `__tvm_ffi_rms_norm` | `out`, `x [..., d]`, `weight [d]`, `eps` | `out = x / sqrt(mean(x²) + eps) * weight` |
//! | `__tvm_ffi_add_rms_norm` | `out`, `residual_out`, `x`, `residual`, `weight [d]`, `eps` | `residual_out = x + residual`; `out = rms_norm(residual_out) * weight` |
//!
//! plus `__kernels_rs_take_error`, the error channel of kernels written in Rust (see
//! `kernels_runtime::ffi::kernel`). Arithmetic is in `f32` (16-lane sums of squares, a
//! vectorisable `exp`), each result rounded once to the tensor's dtype; `add_rms_norm`
//! normalises the rounded `residual_out`, as fused kernels elsewhere do. Loops are compiled
//! twice, for the baseline CPU and for AVX2+FMA (picked at run time). Large inputs (from 64Ki
//! elements for `silu_and_mul`, 256Ki for the normalisations) are split by rows over a rayon
//! thread pool. Each row is computed by one thread in a fixed order, so a result does not depend
//! on the split or the thread count: the kernels are deterministic (`deterministic = true` in
//! `kernels.toml`).
//!
//! Every argument is checked before use: count, kind, dtype (all tensors of a call share one),
//! device (CPU), layout (contiguous), shapes, overlap between outputs and other tensors, and
//! `eps` (finite, ≥ 0). A violation comes back as a `TypeError` or `ValueError` naming the
//! kernel and the argument; a panic comes back as a `RuntimeError`.

use half::{bf16, f16};
use kernels_runtime::ffi::abi::DLDataType;
use kernels_runtime::ffi::kernel::{KernelArgs, KernelFailure, TensorArg};

mod math;
mod parallel;

use math::{CHUNK, Float};

kernels_runtime::export_kernels! {
    silu_and_mul => silu_and_mul,
    rms_norm => rms_norm,
    add_rms_norm => add_rms_norm,
}

/// Defines `fn $name<T: Float>(…)` whose body is compiled for the baseline CPU and, on x86-64,
/// again for AVX2+FMA, the latter used when the running CPU has them.
macro_rules! multiversion {
    ($(#[$meta:meta])* fn $name:ident<$T:ident: Float>($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $(#[$meta])*
        fn $name<$T: Float>($($arg: $ty),*) {
            #[inline(always)]
            fn imp<$T: Float>($($arg: $ty),*) $body

            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma")]
                fn avx2<$T: Float>($($arg: $ty),*) {
                    imp::<$T>($($arg),*)
                }
                if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma") {
                    // SAFETY: the running CPU has AVX2 and FMA.
                    return unsafe { avx2::<$T>($($arg),*) };
                }
            }
            imp::<$T>($($arg),*)
        }
    };
}

/// A stack buffer for one chunk converted to `f32`.
type Buf = [f32; CHUNK];

/// `values` as `f32`: the slice itself for `f32`, else converted into `buf`.
#[inline(always)]
fn as_f32<'a, T: Float>(values: &'a [T], buf: &'a mut Buf) -> &'a [f32] {
    match T::as_f32(values) {
        Some(v) => v,
        None => {
            let buf = &mut buf[..values.len()];
            T::load(values, buf);
            buf
        }
    }
}

/// Runs `compute` into `out` as `f32`: directly for `f32`, else through `buf` then rounded.
#[inline(always)]
fn write_f32<T: Float>(out: &mut [T], buf: &mut Buf, compute: impl FnOnce(&mut [f32])) {
    let n = out.len();
    match T::as_f32_mut(out) {
        Some(o) => compute(o),
        None => {
            compute(&mut buf[..n]);
            T::store(&buf[..n], out);
        }
    }
}

multiversion! {
    /// `out[r] = silu(x[r][..d]) * x[r][d..]` for each row `r`.
    fn silu_and_mul_rows<T: Float>(out: &mut [T], x: &[T], d: usize) {
        let (mut a_buf, mut b_buf, mut o_buf) = ([0f32; CHUNK], [0f32; CHUNK], [0f32; CHUNK]);
        for (out_row, x_row) in out.chunks_exact_mut(d).zip(x.chunks_exact(2 * d)) {
            let (a_row, b_row) = x_row.split_at(d);
            for ((o, a), b) in out_row.chunks_mut(CHUNK).zip(a_row.chunks(CHUNK)).zip(b_row.chunks(CHUNK)) {
                let a = as_f32(a, &mut a_buf);
                let b = as_f32(b, &mut b_buf);
                write_f32(o, &mut o_buf, |o| math::silu_mul(a, b, o));
            }
        }
    }
}

/// `1 / sqrt(sum_sq / d + eps)`.
#[inline(always)]
fn inv_rms(sum_sq: f32, d: usize, eps: f32) -> f32 {
    1.0 / (sum_sq / d as f32 + eps).sqrt()
}

multiversion! {
    /// `out[r] = x[r] * inv_rms(x[r]) * weight` for each row `r`.
    fn rms_norm_rows<T: Float>(out: &mut [T], x: &[T], weight: &[T], eps: f32) {
        let d = weight.len();
        let (mut x_buf, mut w_buf, mut o_buf) = ([0f32; CHUNK], [0f32; CHUNK], [0f32; CHUNK]);
        for (out_row, x_row) in out.chunks_exact_mut(d).zip(x.chunks_exact(d)) {
            let mut lanes = math::new_lanes();
            for chunk in x_row.chunks(CHUNK) {
                math::sum_squares_into(&mut lanes, as_f32(chunk, &mut x_buf));
            }
            let scale = inv_rms(math::reduce(lanes), d, eps);
            for ((o, xc), wc) in out_row.chunks_mut(CHUNK).zip(x_row.chunks(CHUNK)).zip(weight.chunks(CHUNK)) {
                let xc = as_f32(xc, &mut x_buf);
                let wc = as_f32(wc, &mut w_buf);
                write_f32(o, &mut o_buf, |o| math::scale_mul(xc, wc, scale, o));
            }
        }
    }
}

multiversion! {
    /// `residual_out[r] = x[r] + residual[r]`, then `out[r] = rms_norm(residual_out[r]) * weight`.
    fn add_rms_norm_rows<T: Float>(
        out: &mut [T],
        residual_out: &mut [T],
        x: &[T],
        residual: &[T],
        weight: &[T],
        eps: f32,
    ) {
        let d = weight.len();
        let (mut a_buf, mut b_buf, mut s_buf) = ([0f32; CHUNK], [0f32; CHUNK], [0f32; CHUNK]);
        let rows = out.chunks_exact_mut(d).zip(residual_out.chunks_exact_mut(d)).zip(x.chunks_exact(d)).zip(residual.chunks_exact(d));
        for (((out_row, sum_row), x_row), res_row) in rows {
            let mut lanes = math::new_lanes();
            for ((s, xc), rc) in sum_row.chunks_mut(CHUNK).zip(x_row.chunks(CHUNK)).zip(res_row.chunks(CHUNK)) {
                let xc = as_f32(xc, &mut a_buf);
                let rc = as_f32(rc, &mut b_buf);
                write_f32(s, &mut s_buf, |s| {
                    math::add(xc, rc, s);
                    math::sum_squares_into(&mut lanes, s);
                });
            }
            let scale = inv_rms(math::reduce(lanes), d, eps);
            for ((o, sc), wc) in out_row.chunks_mut(CHUNK).zip(sum_row.chunks(CHUNK)).zip(weight.chunks(CHUNK)) {
                let sc = as_f32(sc, &mut a_buf);
                let wc = as_f32(wc, &mut b_buf);
                write_f32(o, &mut s_buf, |o| math::scale_mul(sc, wc, scale, o));
            }
        }
    }
}

/// The dtypes the kernels accept.
const DTYPES: &str = "float32, float16 or bfloat16";

/// Checks what every tensor of a call must satisfy: CPU, contiguous, and `dtype` (the first
/// tensor's, which must be a supported float type).
fn check_tensors(kernel: &str, tensors: &[&TensorArg<'_>]) -> Result<DLDataType, KernelFailure> {
    let dtype = tensors[0].dtype();
    if ![DLDataType::F32, DLDataType::F16, DLDataType::BF16].contains(&dtype) {
        return Err(KernelFailure::type_error(format!(
            "{kernel}: `{}` has dtype {dtype}; expected {DTYPES}",
            tensors[0].name()
        )));
    }
    for t in tensors {
        let context = |e: KernelFailure| KernelFailure::new(e.kind().to_owned(), format!("{kernel}: {}", e.message()));
        t.expect_cpu().map_err(context)?;
        t.expect_contiguous().map_err(context)?;
        if t.dtype() != dtype {
            return Err(KernelFailure::type_error(format!(
                "{kernel}: `{}` has dtype {}, but `{}` has {dtype}; all tensors must share one dtype",
                t.name(),
                t.dtype(),
                tensors[0].name()
            )));
        }
    }
    Ok(dtype)
}

fn expect_shape(kernel: &str, t: &TensorArg<'_>, expected: &[i64], why: &str) -> Result<(), KernelFailure> {
    if t.shape() == expected {
        Ok(())
    } else {
        Err(KernelFailure::value_error(format!(
            "{kernel}: `{}` has shape {:?}, expected {expected:?} ({why})",
            t.name(),
            t.shape()
        )))
    }
}

/// Outputs must not share memory with any other tensor of the call.
fn expect_disjoint(kernel: &str, outputs: &[&TensorArg<'_>], all: &[&TensorArg<'_>]) -> Result<(), KernelFailure> {
    for out in outputs {
        for other in all {
            if !std::ptr::eq(*out, *other) && out.overlaps(other) {
                return Err(KernelFailure::value_error(format!(
                    "{kernel}: output `{}` overlaps `{}`; in-place use is not supported",
                    out.name(),
                    other.name()
                )));
            }
        }
    }
    Ok(())
}

/// The last dimension of `x`, which must have at least one.
fn last_dim(kernel: &str, x: &TensorArg<'_>) -> Result<usize, KernelFailure> {
    match x.shape().last() {
        Some(&d) => Ok(d as usize),
        None => Err(KernelFailure::value_error(format!(
            "{kernel}: `{}` must have at least one dimension, got a scalar",
            x.name()
        ))),
    }
}

fn check_eps(kernel: &str, eps: f64) -> Result<f32, KernelFailure> {
    let eps32 = eps as f32;
    if eps32.is_finite() && eps32 >= 0.0 {
        Ok(eps32)
    } else {
        Err(KernelFailure::value_error(format!("{kernel}: `eps` must be finite and >= 0, got {eps}")))
    }
}

/// Calls `$f::<T>($args)` for the element type of `$dtype`.
macro_rules! by_dtype {
    ($dtype:expr, $f:ident($($arg:expr),* $(,)?)) => {
        match $dtype {
            d if d == DLDataType::F32 => $f::<f32>($($arg),*),
            d if d == DLDataType::F16 => $f::<f16>($($arg),*),
            d if d == DLDataType::BF16 => $f::<bf16>($($arg),*),
            d => unreachable!("dtype {d} passed check_tensors"),
        }
    };
}

/// `silu_and_mul(out, x)`: `x [..., 2d]`, `out [..., d]`.
pub fn silu_and_mul(args: KernelArgs<'_>) -> Result<(), KernelFailure> {
    const K: &str = "silu_and_mul";
    args.expect_count(2, "silu_and_mul(out, x)")?;
    let (out, x) = (args.tensor(0, "out")?, args.tensor(1, "x")?);
    let dtype = check_tensors(K, &[&x, &out])?;
    let two_d = last_dim(K, &x)?;
    if two_d % 2 != 0 {
        return Err(KernelFailure::value_error(format!(
            "{K}: the last dimension of `x` must be even (gate and up halves), got {two_d}"
        )));
    }
    let mut expected = x.shape().to_vec();
    *expected.last_mut().expect("x has a dimension") = (two_d / 2) as i64;
    expect_shape(K, &out, &expected, "x's shape with the last dimension halved")?;
    expect_disjoint(K, &[&out], &[&out, &x])?;
    if out.numel() == 0 {
        return Ok(());
    }

    fn run<T: Float>(out: &TensorArg<'_>, x: &TensorArg<'_>, d: usize) -> Result<(), KernelFailure> {
        // SAFETY: the caller passes live host tensors (ABI contract); `out` does not overlap
        // `x` (checked), so the mutable slice is the only reference to its memory.
        let (out, x) = unsafe { (out.as_mut_slice::<T>()?, x.as_slice::<T>()?) };
        let per = parallel::rows_per_task(x.len(), out.len() / d, parallel::PARALLEL_MIN_ELEMENTS_ACTIVATION);
        parallel::run(out.chunks_mut(per * d).zip(x.chunks(per * 2 * d)), |(out, x)| silu_and_mul_rows::<T>(out, x, d));
        Ok(())
    }
    by_dtype!(dtype, run(&out, &x, two_d / 2))
}

/// `rms_norm(out, x, weight, eps)` over the last dimension.
pub fn rms_norm(args: KernelArgs<'_>) -> Result<(), KernelFailure> {
    const K: &str = "rms_norm";
    args.expect_count(4, "rms_norm(out, x, weight, eps)")?;
    let (out, x, weight) = (args.tensor(0, "out")?, args.tensor(1, "x")?, args.tensor(2, "weight")?);
    let eps = check_eps(K, args.f64(3, "eps")?)?;
    let dtype = check_tensors(K, &[&x, &out, &weight])?;
    let d = last_dim(K, &x)?;
    expect_shape(K, &weight, &[d as i64], "the last dimension of x")?;
    expect_shape(K, &out, x.shape(), "the shape of x")?;
    expect_disjoint(K, &[&out], &[&out, &x, &weight])?;
    if out.numel() == 0 {
        return Ok(());
    }

    fn run<T: Float>(out: &TensorArg<'_>, x: &TensorArg<'_>, w: &TensorArg<'_>, eps: f32) -> Result<(), KernelFailure> {
        // SAFETY: live host tensors (ABI contract); `out` overlaps no other tensor (checked).
        let (out, x, w) = unsafe { (out.as_mut_slice::<T>()?, x.as_slice::<T>()?, w.as_slice::<T>()?) };
        let d = w.len();
        let per = parallel::rows_per_task(x.len(), x.len() / d, parallel::PARALLEL_MIN_ELEMENTS_NORM);
        parallel::run(out.chunks_mut(per * d).zip(x.chunks(per * d)), |(out, x)| rms_norm_rows::<T>(out, x, w, eps));
        Ok(())
    }
    by_dtype!(dtype, run(&out, &x, &weight, eps))
}

/// `add_rms_norm(out, residual_out, x, residual, weight, eps)`.
pub fn add_rms_norm(args: KernelArgs<'_>) -> Result<(), KernelFailure> {
    const K: &str = "add_rms_norm";
    args.expect_count(6, "add_rms_norm(out, residual_out, x, residual, weight, eps)")?;
    let out = args.tensor(0, "out")?;
    let residual_out = args.tensor(1, "residual_out")?;
    let x = args.tensor(2, "x")?;
    let residual = args.tensor(3, "residual")?;
    let weight = args.tensor(4, "weight")?;
    let eps = check_eps(K, args.f64(5, "eps")?)?;
    let all = [&x, &residual, &out, &residual_out, &weight];
    let dtype = check_tensors(K, &all)?;
    let d = last_dim(K, &x)?;
    expect_shape(K, &weight, &[d as i64], "the last dimension of x")?;
    for t in [&residual, &out, &residual_out] {
        expect_shape(K, t, x.shape(), "the shape of x")?;
    }
    expect_disjoint(K, &[&out, &residual_out], &all)?;
    if out.numel() == 0 {
        return Ok(());
    }

    fn run<T: Float>(t: [&TensorArg<'_>; 5], eps: f32) -> Result<(), KernelFailure> {
        let [out, residual_out, x, residual, w] = t;
        // SAFETY: live host tensors (ABI contract); the two outputs overlap nothing (checked).
        let (out, residual_out, x, residual, w) = unsafe {
            (
                out.as_mut_slice::<T>()?,
                residual_out.as_mut_slice::<T>()?,
                x.as_slice::<T>()?,
                residual.as_slice::<T>()?,
                w.as_slice::<T>()?,
            )
        };
        let d = w.len();
        let per = parallel::rows_per_task(x.len(), x.len() / d, parallel::PARALLEL_MIN_ELEMENTS_NORM) * d;
        let tasks = out.chunks_mut(per).zip(residual_out.chunks_mut(per)).zip(x.chunks(per)).zip(residual.chunks(per));
        parallel::run(tasks, |(((out, residual_out), x), residual)| {
            add_rms_norm_rows::<T>(out, residual_out, x, residual, w, eps)
        });
        Ok(())
    }
    by_dtype!(dtype, run([&out, &residual_out, &x, &residual, &weight], eps))
}
