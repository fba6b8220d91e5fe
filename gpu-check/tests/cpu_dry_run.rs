//! The correctness suite run on the CPU against the example CPU kernels (written in Rust),
//! which implement the same three functions as the CUDA kernels: the cases, placements, guard
//! checks, f32 references and tolerances are exercised here, where there is no GPU.

use candle_core::Device;
use kernels_gpu_check::FUNCTIONS;
use kernels_gpu_check::suite::correctness::{self, Scope};
use kernels_gpu_check::suite::{Kernels, Outcome};

fn cpu_kernels() -> Kernels {
    let path = kernels_benches::build_example_cpu_kernels().expect("build the example CPU kernels");
    // SAFETY: the example library exports the TVM-FFI ABI and has no initialisers with
    // preconditions.
    let [rms_norm, silu_and_mul, add_rms_norm] =
        unsafe { kernels_benches::load_functions(&path, FUNCTIONS) }.expect("resolve the example functions");
    Kernels { rms_norm, silu_and_mul, add_rms_norm }
}

#[test]
fn correctness_suite_passes_with_the_example_cpu_kernels() {
    // The CPU kernels refuse outputs that alias inputs, so the in-place cases are left out.
    let outcome = correctness::run(&cpu_kernels(), &Device::Cpu, Scope { in_place: false }).expect("suite runs");
    assert_eq!(outcome.failures, 0, "{outcome:?}");
    // 3 dtypes x (13 common cases + 1 or 2 more per op).
    assert_eq!(outcome.checks, 3 * (14 + 14 + 14), "{outcome:?}");
}

#[test]
fn correctness_suite_reports_a_kernel_that_fails() {
    // rms_norm where silu_and_mul belongs: every silu_and_mul case fails (wrong arguments),
    // the others pass.
    let mut kernels = cpu_kernels();
    kernels.silu_and_mul = cpu_kernels().rms_norm;
    let outcome = correctness::run(&kernels, &Device::Cpu, Scope { in_place: false }).expect("suite runs");
    assert_eq!(outcome, Outcome { checks: 3 * 42, failures: 3 * 14 });
}
