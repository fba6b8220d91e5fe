//! Element conversions and the per-chunk arithmetic, written so that LLVM vectorises them:
//! fixed-width lane accumulators instead of a serial sum, and an `exp` made of multiplies,
//! adds and bit operations instead of a libm call.

use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};
use kernels_runtime::ffi::abi::Element;

/// Elements per chunk: rows are converted to `f32` and processed this many at a time.
pub(crate) const CHUNK: usize = 512;

/// Independent accumulators for sums; a multiple of every SIMD width in use.
const LANES: usize = 16;

/// A floating-point element type the kernels accept; all arithmetic happens in `f32`.
pub(crate) trait Float: Element {
    /// The values as `f32`, when `Self` is `f32` (no conversion needed).
    fn as_f32(values: &[Self]) -> Option<&[f32]>;
    /// As [`as_f32`](Self::as_f32), mutably.
    fn as_f32_mut(values: &mut [Self]) -> Option<&mut [f32]>;
    /// Converts `src` into `dst` (same length).
    fn load(src: &[Self], dst: &mut [f32]);
    /// Converts `src` into `dst` (same length), rounding to nearest even.
    fn store(src: &[f32], dst: &mut [Self]);
}

impl Float for f32 {
    #[inline(always)]
    fn as_f32(values: &[Self]) -> Option<&[f32]> {
        Some(values)
    }
    #[inline(always)]
    fn as_f32_mut(values: &mut [Self]) -> Option<&mut [f32]> {
        Some(values)
    }
    #[inline(always)]
    fn load(src: &[Self], dst: &mut [f32]) {
        dst.copy_from_slice(src);
    }
    #[inline(always)]
    fn store(src: &[f32], dst: &mut [Self]) {
        dst.copy_from_slice(src);
    }
}

impl Float for bf16 {
    #[inline(always)]
    fn as_f32(_: &[Self]) -> Option<&[f32]> {
        None
    }
    #[inline(always)]
    fn as_f32_mut(_: &mut [Self]) -> Option<&mut [f32]> {
        None
    }
    #[inline(always)]
    fn load(src: &[Self], dst: &mut [f32]) {
        // bfloat16 is the top half of an f32.
        for (d, s) in dst.iter_mut().zip(src) {
            *d = f32::from_bits(u32::from(s.to_bits()) << 16);
        }
    }
    #[inline(always)]
    fn store(src: &[f32], dst: &mut [Self]) {
        for (d, &s) in dst.iter_mut().zip(src) {
            let bits = s.to_bits();
            // Round to nearest, ties to even; NaNs stay (quiet) NaNs.
            let rounded = (bits.wrapping_add(0x7fff + ((bits >> 16) & 1)) >> 16) as u16;
            let nan = ((bits >> 16) as u16) | 0x0040;
            *d = bf16::from_bits(if s.is_nan() { nan } else { rounded });
        }
    }
}

impl Float for f16 {
    #[inline(always)]
    fn as_f32(_: &[Self]) -> Option<&[f32]> {
        None
    }
    #[inline(always)]
    fn as_f32_mut(_: &mut [Self]) -> Option<&mut [f32]> {
        None
    }
    #[inline(always)]
    fn load(src: &[Self], dst: &mut [f32]) {
        // Uses F16C when the CPU has it (checked at run time by `half`).
        src.convert_to_f32_slice(dst);
    }
    #[inline(always)]
    fn store(src: &[f32], dst: &mut [Self]) {
        dst.convert_from_f32_slice(src);
    }
}

/// Per-lane sums of squares, added into `acc`.
#[inline(always)]
pub(crate) fn sum_squares_into(acc: &mut [f32; LANES], values: &[f32]) {
    let mut chunks = values.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(chunk) {
            *a += v * v;
        }
    }
    for (a, &v) in acc.iter_mut().zip(chunks.remainder()) {
        *a += v * v;
    }
}

/// Lane accumulators, reduced pairwise.
#[inline(always)]
pub(crate) fn new_lanes() -> [f32; LANES] {
    [0.0; LANES]
}

/// The sum of the lanes.
#[inline(always)]
pub(crate) fn reduce(mut acc: [f32; LANES]) -> f32 {
    let mut width = LANES;
    while width > 1 {
        width /= 2;
        for i in 0..width {
            acc[i] += acc[i + width];
        }
    }
    acc[0]
}

/// `e^x` in `f32`, about 2 ulp, branch-free so loops over it vectorise. Range reduction
/// `x = n·ln2 + r` with `|r| ≤ ln2/2`, a degree-7 polynomial for `e^r` (the classic Cephes
/// `expf` coefficients), and `2^n` built from its exponent bits. Saturates to `e^±88`-ish
/// outside the representable range; NaN stays NaN.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    const LOG2_E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split so that n·LN2_HI is exact.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // 1.5·2^23: adding and subtracting it rounds to the nearest integer.
    const ROUND: f32 = 12_582_912.0;
    let x = x.clamp(-87.3, 88.3);
    // t = ROUND + n exactly, so n also sits in the low mantissa bits of t.
    let t = x * LOG2_E + ROUND;
    let n = t - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 1.666_666_5e-1;
    p = p * r + 0.5;
    let y = p * r * r + r + 1.0;
    // 2^n from its biased exponent n + 127, taken from t's bits (an integer conversion of n
    // would not vectorise). n is in [-126, 127] after the clamp, so 2^n is a normal float.
    let scale = f32::from_bits(t.to_bits().wrapping_sub(ROUND.to_bits()).wrapping_add(127) << 23);
    y * scale
}

/// `silu(a) · b = a / (1 + e^-a) · b`, element-wise.
#[inline(always)]
pub(crate) fn silu_mul(a: &[f32], b: &[f32], out: &mut [f32]) {
    for ((o, &a), &b) in out.iter_mut().zip(a).zip(b) {
        *o = a / (1.0 + exp(-a)) * b;
    }
}

/// `x · scale · w`, element-wise.
#[inline(always)]
pub(crate) fn scale_mul(x: &[f32], w: &[f32], scale: f32, out: &mut [f32]) {
    for ((o, &x), &w) in out.iter_mut().zip(x).zip(w) {
        *o = x * scale * w;
    }
}

/// `a + b`, element-wise.
#[inline(always)]
pub(crate) fn add(a: &[f32], b: &[f32], out: &mut [f32]) {
    for ((o, &a), &b) in out.iter_mut().zip(a).zip(b) {
        *o = a + b;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_is_accurate() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x < 88.0 {
            let got = f64::from(exp(x));
            let want = f64::from(x).exp();
            worst = worst.max(((got - want) / want).abs());
            x += 0.001_37;
        }
        assert!(worst < 3e-7, "worst relative error {worst:e}");
        assert!(exp(f32::NAN).is_nan());
        assert!(exp(-1000.0) < 1e-37 && exp(-1000.0) >= 0.0);
        assert!(exp(1000.0).is_finite() && exp(1000.0) > 1e38);
    }

    #[test]
    fn bf16_rounds_to_nearest_even() {
        let values = [0.0f32, -0.0, 1.0, 1.001, -3.25, 65504.0, 1e-40, f32::INFINITY, f32::MIN_POSITIVE, 3.0e38];
        let mut ours = [bf16::ZERO; 10];
        bf16::store(&values, &mut ours);
        for (v, o) in values.iter().zip(ours) {
            assert_eq!(o.to_bits(), bf16::from_f32(*v).to_bits(), "{v}");
        }
        // Ties go to even: 1 + 2^-8 lies halfway between two bf16 values.
        let mut tie = [bf16::ZERO];
        bf16::store(&[1.0 + 1.0 / 256.0], &mut tie);
        assert_eq!(tie[0].to_f32(), 1.0);
        bf16::store(&[f32::NAN], &mut tie);
        assert!(tie[0].is_nan());
        let mut back = [0f32; 10];
        bf16::load(&ours, &mut back);
        for (b, o) in back.iter().zip(ours) {
            assert_eq!(*b, o.to_f32());
        }
    }

    #[test]
    fn lane_sums_match_a_serial_sum() {
        let values: Vec<f32> = (0..1037).map(|i| (i as f32 * 0.37).sin()).collect();
        let mut acc = new_lanes();
        sum_squares_into(&mut acc, &values[..500]);
        sum_squares_into(&mut acc, &values[500..]);
        let serial: f64 = values.iter().map(|&v| f64::from(v) * f64::from(v)).sum();
        assert!((f64::from(reduce(acc)) - serial).abs() < 1e-4 * serial);
    }
}
