//! The CUDA suite (`gpu-check-cuda`, feature `cuda`): the CUDA example kernels on candle
//! CUDA tensors. The correctness part runs on any candle device, so it is also tested on the
//! CPU against the example CPU kernels, which implement the same functions.
//!
//! 1. Correctness: `rms_norm`, `silu_and_mul` and `add_rms_norm` in f32, f16 and bf16 on many
//!    shapes (hidden sizes that defeat 16-byte loads, rows narrowed out of a larger buffer,
//!    offsets of one element, in place), against candle's own ops computed in f32 from the same
//!    inputs, within [`crate::check::Tolerance::for_dtype`]. Outputs that live inside a larger buffer are
//!    checked not to write outside their view.
//! 2. Errors: a wrong dtype, mixed dtypes, CPU tensors and a bad shape reach the kernel and
//!    come back as its own error message; non-contiguous and mixed-device arguments are refused
//!    by the candle adapter before the call; a good call still works after them.
//! 3. Benchmarks (`bench`, feature `cuda`).
//! 4. Latency at decode and prefill shapes (`latency`): kernelized layer, adapter, raw call,
//!    candle's op and a bare launch, host and device time.
//! 5. Two GPUs in one process (`two_gpus`), when the driver reports at least two devices
//!    (else a `SKIPPED` line): the kernelized layers alternating between `cuda:0` and `cuda:1`
//!    with the other device's context current, each kernel on its tensors' stream, one
//!    dispatch decision per device, and two threads calling them concurrently.
//! 6. The torch stable-ABI variant of the same kernels (`stable_abi`), when given: selection,
//!    no libtorch in the process, the correctness suite, its errors, its benchmarks and its
//!    per-call cost beside the tvm-ffi variant's.
//!
//! Every tensor lives on a candle device with its own (non-default) stream, so the kernels
//! must run on the stream the adapter hands them for the results to be right.

#[cfg(feature = "cuda")]
mod bench;
pub mod correctness;
#[cfg(feature = "cuda")]
mod errors;
#[cfg(feature = "cuda")]
mod latency;
#[cfg(feature = "cuda")]
mod stable_abi;
#[cfg(feature = "cuda")]
mod two_gpus;

/// The repo name under which the latency benchmark's kernelized layers find the kernel
/// directory (`LOCAL_KERNELS`).
#[cfg(feature = "cuda")]
pub const LATENCY_REPO: &str = "kernels-gpu-check/cuda-ops";

#[cfg(feature = "cuda")]
use std::process::ExitCode;

#[cfg(feature = "cuda")]
use candle_core::Device;
use kernels_runtime::ffi::KernelFunction;
#[cfg(feature = "cuda")]
use kernels_runtime::platform::Platform;

#[cfg(feature = "cuda")]
use crate::options::{Options, USAGE};
#[cfg(feature = "cuda")]
use crate::{EXIT_CANNOT_RUN, EXIT_FAILED, first_line, result_line, setup};

/// The kernel functions, resolved.
#[derive(Debug)]
pub struct Kernels {
    /// `rms_norm(out, x, weight, eps)`.
    pub rms_norm: KernelFunction,
    /// `silu_and_mul(out, x)`.
    pub silu_and_mul: KernelFunction,
    /// `add_rms_norm(out, residual_out, x, residual, weight, eps)`.
    pub add_rms_norm: KernelFunction,
}

/// `eps` of every normalisation.
pub const EPS: f64 = 1e-6;

/// Entry point of `gpu-check-cuda`.
#[cfg(feature = "cuda")]
pub fn main() -> ExitCode {
    let status = run();
    ExitCode::from(u8::try_from(status).unwrap_or(EXIT_CANNOT_RUN as u8))
}

#[cfg(feature = "cuda")]
fn run() -> i32 {
    let options = match Options::parse(std::env::args_os().skip(1)) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("gpu-check-cuda: {e}\n\n{USAGE}");
            return EXIT_CANNOT_RUN;
        }
    };
    if options.help {
        println!("{USAGE}");
        return 0;
    }
    // The latency benchmark's kernelized layers load the kernel directory under test.
    if let Ok(dir) = setup::kernel_dir(options.kernel_dir.as_deref()) {
        let entry = format!("{LATENCY_REPO}={}", dir.display());
        let value = match std::env::var(kernels_runtime::env::LOCAL_KERNELS) {
            Ok(old) if !old.is_empty() => format!("{old}:{entry}"),
            _ => entry,
        };
        // SAFETY: set at start-up, before this process starts any thread.
        unsafe { std::env::set_var(kernels_runtime::env::LOCAL_KERNELS, value) };
    }
    let kernels = match load() {
        Ok(k) => k,
        Err(e) => {
            println!("gpu-check-cuda: cannot run: {e}");
            result_line("summary", &[("status", "cannot-run".into()), ("reason", first_line(&e).to_owned())]);
            return EXIT_CANNOT_RUN;
        }
    };
    let device = match Device::new_cuda_with_stream(0) {
        Ok(d) => d,
        Err(e) => {
            let reason = format!("candle cannot open CUDA device 0: {e}");
            println!("gpu-check-cuda: cannot run: {reason}");
            result_line("summary", &[("status", "cannot-run".into()), ("reason", first_line(&reason).to_owned())]);
            return EXIT_CANNOT_RUN;
        }
    };
    println!("candle CUDA device 0 on its own stream");

    if options.latency_only {
        return finish(run_latency(&kernels, &device, Outcome::default()));
    }

    let mut total = Outcome::default();
    println!("\n== correctness on candle CUDA tensors (reference: candle ops in f32)");
    total.add_part(correctness::run(&kernels, &device, correctness::Scope::CUDA), "correctness suite", None);

    println!("\n== errors");
    total.add_part(errors::run(&kernels, &device), "error checks", None);

    if !options.no_bench {
        println!("\n== benchmarks");
        total.add_part(bench::run(&kernels, "kernel", &device, &options), "benchmarks", None);
    }

    if !options.no_bench {
        total = run_latency(&kernels, &device, total);
    }

    println!("\n== two GPUs in one process");
    total.add_part(two_gpus::run(&device, &kernels), "two-GPU case", Some(("two-gpus", "run")));

    if let Some(dir) = stable_abi_dir(&options) {
        println!("\n== torch stable-ABI variant ({})", dir.display());
        let parts = stable_abi::load(&dir).map_err(candle_core::Error::Msg).and_then(|stable| {
            println!("\n== correctness of the torch stable-ABI variant on candle CUDA tensors");
            let mut outcome = correctness::run(&stable.kernels, &device, correctness::Scope::CUDA)?;
            println!("\n== torch stable-ABI checks and per-call cost");
            outcome.add(stable_abi::run(&stable, &kernels, &device, !options.no_bench)?);
            if !options.no_bench {
                println!("\n== benchmarks of the torch stable-ABI variant");
                outcome.add(bench::run(&stable.kernels, "stable-abi kernel", &device, &options)?);
            }
            Ok(outcome)
        });
        total.add_part(parts, "torch stable-ABI part", Some(("stable-abi", "load")));
    }

    finish(total)
}

/// The latency benchmark, added to `total`.
#[cfg(feature = "cuda")]
fn run_latency(kernels: &Kernels, device: &Device, mut total: Outcome) -> Outcome {
    println!("\n== latency at decode and prefill shapes (host and device time per call)");
    total.add_part(latency::run(kernels, device), "latency benchmark", None);
    total
}

/// Prints the summary of `total`; the exit status.
#[cfg(feature = "cuda")]
fn finish(total: Outcome) -> i32 {
    let Outcome { checks, failures } = total;
    println!("\n== summary: {checks} checks, {failures} failed");
    let status = if failures == 0 { "pass" } else { "fail" };
    result_line(
        "summary",
        &[("checks", checks.to_string()), ("failed", failures.to_string()), ("status", status.into())],
    );
    if failures == 0 { 0 } else { EXIT_FAILED }
}

/// The stable-ABI kernel directory: the one given, else `stable-abi-cuda` next to the
/// executable when it exists.
#[cfg(feature = "cuda")]
fn stable_abi_dir(options: &Options) -> Option<std::path::PathBuf> {
    options
        .stable_abi_dir
        .clone()
        .or_else(|| setup::exe_dir().map(|d| d.join("stable-abi-cuda")).filter(|d| d.is_dir()))
}

/// Selects and loads the kernel the way `gpu-check` does and resolves its functions.
#[cfg(feature = "cuda")]
fn load() -> Result<Kernels, String> {
    let options = Options::parse(std::env::args_os().skip(1))?;
    let dir = setup::kernel_dir(options.kernel_dir.as_deref())?;
    setup::preload_tvm_ffi().map_err(|e| format!("cannot load libtvm_ffi.so: {e}"))?;
    let platform = Platform::detect();
    let (kernel, trace) = setup::select_and_load(&dir, &platform).map_err(|e| e.to_string())?;
    println!("gpu-check-cuda: {} selected ({})", trace.chosen().unwrap_or("?"), kernel.path().display());
    let [rms_norm, silu_and_mul, add_rms_norm] = setup::resolve(&kernel).map_err(|e| e.to_string())?;
    Ok(Kernels { rms_norm, silu_and_mul, add_rms_norm })
}

/// What a part of the suite found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Checks made.
    pub checks: usize,
    /// Checks failed.
    pub failures: usize,
}

impl Outcome {
    pub(crate) fn record(&mut self, passed: bool) {
        self.checks += 1;
        if !passed {
            self.failures += 1;
        }
    }

    /// Adds what another part found.
    #[cfg(feature = "cuda")]
    pub(crate) fn add(&mut self, other: Outcome) {
        self.checks += other.checks;
        self.failures += other.failures;
    }

    /// Adds what a part found or, when it aborted, one failed check: "`what` aborted: …" is
    /// printed and, with `line = Some((kind, case))`, a `RESULT kind case=… status=fail` line.
    #[cfg(feature = "cuda")]
    fn add_part(&mut self, part: candle_core::Result<Outcome>, what: &str, line: Option<(&str, &str)>) {
        match part {
            Ok(outcome) => self.add(outcome),
            Err(e) => {
                println!("{what} aborted: {e}");
                if let Some((kind, case)) = line {
                    result_line(
                        kind,
                        &[
                            ("case", case.into()),
                            ("status", "fail".into()),
                            ("problem", first_line(&e.to_string()).to_owned()),
                        ],
                    );
                }
                self.record(false);
            }
        }
    }
}

/// Deterministic pseudo-random values uniform in `[lo, hi)` (splitmix64), so a failing case
/// can be reproduced.
pub fn uniform(seed: u64, len: usize, lo: f32, hi: f32) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0xD1B5_4A32_D192_ED03;
    (0..len)
        .map(|_| {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            let unit = (z >> 40) as f32 / (1u64 << 24) as f32;
            lo + (hi - lo) * unit
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_values_are_reproducible_and_in_range() {
        let a = uniform(7, 1000, -3.0, 3.0);
        assert_eq!(a, uniform(7, 1000, -3.0, 3.0));
        assert_ne!(a, uniform(8, 1000, -3.0, 3.0));
        assert!(a.iter().all(|v| (-3.0..3.0).contains(v)));
        let mean = a.iter().sum::<f32>() / a.len() as f32;
        assert!(mean.abs() < 0.3, "{mean}");
    }
}
