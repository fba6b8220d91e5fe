//! Comparing results with a tolerance, and summarising timings. No GPU needed.

use std::fmt;

/// `|got - want| <= abs + rel * |want|`, element by element.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tolerance {
    /// Absolute part.
    pub abs: f32,
    /// Relative part.
    pub rel: f32,
}

impl Tolerance {
    /// The tolerance for results stored as `dtype` ("f32", "f16", "bf16") and computed in f32
    /// by kernel and reference alike: both round once to the dtype, so they differ by at most
    /// about one unit in the last place; the relative part allows two (f16: 2^-10 per unit,
    /// bf16: 2^-7 per unit, measured at the bottom of a binade), the absolute part covers
    /// values near zero. For f32 the difference is the order of summation over a row.
    pub fn for_dtype(dtype: &str) -> Option<Self> {
        Some(match dtype {
            "f32" => Tolerance { abs: 1e-5, rel: 1e-4 },
            "f16" => Tolerance { abs: 1e-4, rel: 2e-3 },
            "bf16" => Tolerance { abs: 1e-3, rel: 1.6e-2 },
            _ => return None,
        })
    }
}

impl fmt::Display for Tolerance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "abs {:e} + rel {:e}", self.abs, self.rel)
    }
}

/// How far `got` is from `want`.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// Elements compared.
    pub len: usize,
    /// Largest `|got - want|`.
    pub max_abs: f32,
    /// Largest `|got - want| / |want|` over elements with `want != 0`.
    pub max_rel: f32,
    /// Elements outside the tolerance (NaN or infinite results count).
    pub violations: usize,
    /// The first element outside the tolerance: index, got, want.
    pub first_violation: Option<(usize, f32, f32)>,
}

impl Comparison {
    /// Whether every element is within the tolerance and the lengths matched.
    pub fn passed(&self) -> bool {
        self.violations == 0
    }
}

/// Compares `got` with `want` element by element. A length mismatch is one violation per
/// missing or extra element.
pub fn compare(got: &[f32], want: &[f32], tol: Tolerance) -> Comparison {
    let mut c =
        Comparison { len: got.len().min(want.len()), max_abs: 0.0, max_rel: 0.0, violations: 0, first_violation: None };
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let diff = (g - w).abs();
        // False for NaN and infinite differences.
        let ok = diff <= tol.abs + tol.rel * w.abs();
        if diff.is_finite() {
            c.max_abs = c.max_abs.max(diff);
            if w != 0.0 {
                c.max_rel = c.max_rel.max(diff / w.abs());
            }
        } else {
            c.max_abs = f32::INFINITY;
        }
        if !ok {
            c.violations += 1;
            c.first_violation.get_or_insert((i, g, w));
        }
    }
    c.violations += got.len().abs_diff(want.len());
    c
}

/// Summary of repeated timings, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timing {
    /// Number of timed runs.
    pub runs: usize,
    /// Median.
    pub median_us: f64,
    /// Fastest.
    pub min_us: f64,
    /// 10th percentile.
    pub p10_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
}

impl Timing {
    /// Summarises `samples_us` (any order). `None` when empty.
    pub fn from_samples(samples_us: &[f64]) -> Option<Self> {
        if samples_us.is_empty() {
            return None;
        }
        let mut s = samples_us.to_vec();
        s.sort_by(f64::total_cmp);
        let at = |q: f64| s[((s.len() - 1) as f64 * q).round() as usize];
        let median = if s.len() % 2 == 1 { s[s.len() / 2] } else { (s[s.len() / 2 - 1] + s[s.len() / 2]) / 2.0 };
        Some(Timing { runs: s.len(), median_us: median, min_us: s[0], p10_us: at(0.1), p90_us: at(0.9) })
    }

    /// Bandwidth in GB/s (10^9 bytes per second) for `bytes` moved per run, at the median.
    pub fn gbps(&self, bytes: u64) -> f64 {
        bytes as f64 / (self.median_us * 1e-6) / 1e9
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_values_pass_and_report_zero_error() {
        let c = compare(&[1.0, -2.0, 0.0], &[1.0, -2.0, 0.0], Tolerance { abs: 0.0, rel: 0.0 });
        assert!(c.passed());
        assert_eq!((c.max_abs, c.max_rel, c.len), (0.0, 0.0, 3));
    }

    #[test]
    fn relative_and_absolute_parts_both_count() {
        let tol = Tolerance { abs: 1e-3, rel: 1e-2 };
        // 100 ± 1 is within 1e-3 + 1e-2 * 100.
        assert!(compare(&[101.0], &[100.0], tol).passed());
        // 100 vs 102 is not.
        let c = compare(&[102.0], &[100.0], tol);
        assert!(!c.passed());
        assert_eq!(c.first_violation, Some((0, 102.0, 100.0)));
        // Near zero only the absolute part helps.
        assert!(compare(&[5e-4], &[0.0], tol).passed());
        assert!(!compare(&[2e-3], &[0.0], tol).passed());
    }

    #[test]
    fn nan_and_length_mismatch_are_violations() {
        let tol = Tolerance { abs: 1.0, rel: 1.0 };
        let c = compare(&[f32::NAN, 1.0], &[1.0, 1.0], tol);
        assert_eq!(c.violations, 1);
        assert_eq!(c.max_abs, f32::INFINITY);
        let c = compare(&[1.0], &[1.0, 2.0, 3.0], tol);
        assert_eq!(c.violations, 2);
    }

    #[test]
    fn tolerances_exist_for_the_kernel_dtypes_only() {
        assert!(Tolerance::for_dtype("f32").unwrap().rel < Tolerance::for_dtype("f16").unwrap().rel);
        assert!(Tolerance::for_dtype("f16").unwrap().rel < Tolerance::for_dtype("bf16").unwrap().rel);
        assert!(Tolerance::for_dtype("i64").is_none());
    }

    #[test]
    fn timing_takes_the_median_and_percentiles() {
        let t = Timing::from_samples(&[5.0, 1.0, 3.0, 2.0, 4.0]).unwrap();
        assert_eq!((t.runs, t.median_us, t.min_us), (5, 3.0, 1.0));
        let t = Timing::from_samples(&[4.0, 1.0, 3.0, 2.0]).unwrap();
        assert_eq!(t.median_us, 2.5);
        assert!(Timing::from_samples(&[]).is_none());
        // 1 GB in 1 ms is 1000 GB/s.
        let t = Timing::from_samples(&[1000.0]).unwrap();
        assert!((t.gbps(1_000_000_000) - 1000.0).abs() < 1e-9);
    }
}
