//! Latency on the CPU at decode and prefill shapes: what one call costs, from a
//! `#[kernelize]`d layer down to the raw kernel call, beside candle's own op, side by side in
//! one run. The CPU half of the latency table (the CUDA half is in the GPU suite,
//! `gpu-check/src/suite/latency.rs`).
//!
//! For each shape (rows × hidden: 1×4096, 8×4096, 128×2048, 2048×4096) and dtype (bf16, f32),
//! for `rms_norm` and `silu_and_mul` (x [rows × hidden] → [rows × hidden/2]) of the Rust
//! example kernel (`examples/kernels/rust-cpu`, laid out by `cargo kernels package` and
//! found through `LOCAL_KERNELS`):
//!
//! - `kernelized`: the layer's `kernel_forward` (dispatch, its output allocated per call, the
//!   candle adapter, the kernel), strict;
//! - `adapter`: `kernels_runtime::candle::call` into a preallocated output;
//! - `raw`: the kernel function on prepared views of the same memory (no candle, no locks);
//! - `candle`: `candle_nn::ops::rms_norm`, or `silu(a) * b` on the halves.
//!
//! Each case runs a batch of calls per round (about a millisecond's worth), rounds rotate the
//! cases, medians over rounds, per call.
//!
//! `cargo bench -p kernels-benches --bench latency_cpu` (options: `--rounds N`,
//! `--kernel-dir DIR`: a Hub layout of the example kernel made beforehand, e.g. on a machine
//! without cargo; `--shape RxH`: that shape alone, e.g. a tiny one to profile the host path).

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use kernels_benches::machine;
use kernels_runtime::candle::{self as kc, CandleArg, output, output_like};
use kernels_runtime::dispatch::{self, Choice, Mode, Target};
use kernels_runtime::ffi::KernelFunction;
use kernels_runtime::kernelize;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// The repo name the registry gives the example kernel; `LOCAL_KERNELS` maps it to its layout.
const REPO: &str = "kernels-benches/cpu-ops";
const EPS: f64 = 1e-6;
const SHAPES: [(usize, usize); 4] = [(1, 4096), (8, 4096), (128, 2048), (2048, 4096)];

/// `RMSNorm` and `SiluAndMul` on the CPU map to the example kernel (a hand-written registry:
/// the bench lays the kernel out itself and names it with `LOCAL_KERNELS`).
#[doc(hidden)]
pub static __KERNELS_REGISTRY: kernels_runtime::registry::Registry = {
    use kernels_runtime::registry::{KernelEntry, LayerEntry, ModeSupport, Registry};
    use kernels_runtime::variant::BackendKind;
    const fn cpu(layer: &'static str, function: &'static str) -> LayerEntry {
        LayerEntry {
            layer,
            device: BackendKind::Cpu,
            kernel: "cpu-ops",
            function,
            capability: None,
            mode: ModeSupport::Inference,
            deterministic: false,
            tolerance: None,
        }
    }
    Registry {
        kernels: &[KernelEntry { name: "cpu-ops", repo: REPO, commit: None, variants: &[], cached: &[] }],
        layers: &[cpu("RMSNorm", "rms_norm"), cpu("SiluAndMul", "silu_and_mul")],
        tvm_ffi: None,
        cuda_runtime: None,
    }
};

/// RMSNorm, kernelized: the example kernel's `rms_norm`, else candle's.
#[kernelize(
    layer = "RMSNorm",
    forward = fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor>,
    output = output_like(x)?,
    args = (output, x, self.weight, self.eps),
)]
struct RmsNorm {
    weight: Tensor,
    eps: f32,
}

impl RmsNorm {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        candle_nn::ops::rms_norm(x, &self.weight, self.eps)
    }
}

/// SiLU-and-multiply, kernelized.
#[kernelize(
    layer = "SiluAndMul",
    forward = fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor>,
    output = {
        let (rows, cols) = x.dims2()?;
        output((rows, cols / 2), x.dtype(), x.device())?
    },
    args = (output, x),
)]
struct SiluAndMul;

impl SiluAndMul {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let d = x.dim(1)? / 2;
        candle_nn::ops::silu(&x.narrow(1, 0, d)?)? * x.narrow(1, d, d)?
    }
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

/// The example kernel laid out as the Hub does, by `cargo kernels package` (release).
fn package_example_kernel() -> Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().ok_or("no workspace root")?;
    let out = workspace.join("target/bench-latency-cpu-kernel");
    let status = Command::new(cargo)
        .current_dir(workspace)
        .args(["run", "-q", "--release", "-p", "kernels-cli", "--", "kernels", "package", "examples/kernels/rust-cpu"])
        .arg("--out")
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .status()?;
    if !status.success() {
        return Err("cargo kernels package examples/kernels/rust-cpu failed".into());
    }
    Ok(out)
}

/// The variant directory inside a Hub layout (its one `build/<variant>`).
fn variant_dir(layout: &Path) -> Result<PathBuf> {
    let mut dirs = std::fs::read_dir(layout.join("build"))?.filter_map(|e| e.ok().map(|e| e.path()));
    dirs.next().ok_or_else(|| format!("{} holds no build/<variant>", layout.display()).into())
}

/// The library file in a variant directory.
fn library(variant: &Path) -> Result<PathBuf> {
    let mut libs = std::fs::read_dir(variant)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "so"));
    libs.next().ok_or_else(|| format!("no library in {}", variant.display()).into())
}

type Run<'a> = Box<dyn Fn(usize) -> Result<()> + 'a>;

fn repeat<'a>(f: impl Fn() -> Result<()> + 'a) -> Run<'a> {
    Box::new(move |n| (0..n).try_for_each(|_| f()))
}

/// `n` raw calls of `f` on views of the memory of `tensors` (read-locked once) and of `out`.
fn raw<'a>(f: &'a KernelFunction, out: &'a Tensor, inputs: &'a [&'a Tensor], scalar: Option<f64>) -> Run<'a> {
    Box::new(move |n| {
        let mut args = vec![CandleArg::output(out)];
        args.extend(inputs.iter().map(|t| CandleArg::input(t)));
        if let Some(eps) = scalar {
            args.push(CandleArg::Float(eps));
        }
        kc::with_args(&args, |args, _| -> Result<()> {
            for _ in 0..n {
                // SAFETY: the example kernels read their inputs and write only the output.
                unsafe { f.call(args) }?;
            }
            Ok(())
        })?
    })
}

fn run() -> Result<()> {
    let rounds: usize = arg("--rounds").and_then(|r| r.parse().ok()).unwrap_or(31);
    let shapes = match arg("--shape") {
        None => SHAPES.to_vec(),
        Some(text) => {
            let parsed = text.split_once('x').and_then(|(r, h)| Some((r.parse().ok()?, h.parse().ok()?)));
            match parsed {
                Some((rows, hidden)) if rows > 0 && hidden > 0 && hidden % 2 == 0 => vec![(rows, hidden)],
                _ => return Err(format!("--shape takes RxH (hidden size even), got `{text}`").into()),
            }
        }
    };
    let layout = match arg("--kernel-dir") {
        Some(dir) => PathBuf::from(dir),
        None => package_example_kernel()?,
    };
    let lib = library(&variant_dir(&layout)?)?;
    // SAFETY: set before any other thread runs and before the first dispatch reads it.
    unsafe { std::env::set_var(kernels_runtime::env::LOCAL_KERNELS, format!("{REPO}={}", layout.display())) };
    // SAFETY: the example library follows the TVM-FFI ABI and has no initialisers.
    let [rms_norm, silu_and_mul] = unsafe { kernels_benches::load_functions(&lib, ["rms_norm", "silu_and_mul"]) }?;
    dispatch::set_strict(true);
    println!("machine: {}", machine());
    println!("{rounds} rounds, cases rotated; µs per call (median over rounds); ratio to candle's op");
    println!();
    println!("| shape | dtype | op | kernelized | adapter | raw | candle |");
    println!("|---|---|---|---:|---:|---:|---:|");
    let device = Device::Cpu;
    for (rows, hidden) in shapes {
        for dtype in [DType::BF16, DType::F32] {
            let x = Tensor::randn(0f32, 1.0, (rows, hidden), &device)?.to_dtype(dtype)?;
            let w = Tensor::rand(0.5f32, 1.5, hidden, &device)?.to_dtype(dtype)?;
            let out = Tensor::zeros((rows, hidden), dtype, &device)?;
            let half = Tensor::zeros((rows, hidden / 2), dtype, &device)?;
            let (a, b) = (x.narrow(1, 0, hidden / 2)?, x.narrow(1, hidden / 2, hidden / 2)?);
            let norm = RmsNorm { weight: w.clone(), eps: EPS as f32 };
            let rms_args = [CandleArg::output(&out), CandleArg::input(&x), CandleArg::input(&w), CandleArg::Float(EPS)];
            let silu_args = [CandleArg::output(&half), CandleArg::input(&x)];
            let inputs_rms = [&x, &w];
            let inputs_silu = [&x];
            let cases: Vec<(&str, &str, Run<'_>)> = vec![
                (
                    "rms_norm",
                    "kernelized",
                    repeat(|| {
                        drop(black_box(norm.kernel_forward(&x)?));
                        Ok(())
                    }),
                ),
                (
                    "rms_norm",
                    "adapter",
                    // SAFETY: rms_norm(out, x, weight, eps) reads x, w and writes out.
                    repeat(|| Ok(unsafe { kc::call(&rms_norm, &rms_args) }?)),
                ),
                ("rms_norm", "raw", raw(&rms_norm, &out, &inputs_rms, Some(EPS))),
                (
                    "rms_norm",
                    "candle",
                    repeat(|| {
                        drop(black_box(candle_nn::ops::rms_norm(&x, &w, EPS as f32)?));
                        Ok(())
                    }),
                ),
                (
                    "silu_and_mul",
                    "kernelized",
                    repeat(|| {
                        drop(black_box(SiluAndMul.kernel_forward(&x)?));
                        Ok(())
                    }),
                ),
                (
                    "silu_and_mul",
                    "adapter",
                    // SAFETY: silu_and_mul(out, x) reads x and writes out.
                    repeat(|| Ok(unsafe { kc::call(&silu_and_mul, &silu_args) }?)),
                ),
                ("silu_and_mul", "raw", raw(&silu_and_mul, &half, &inputs_silu, None)),
                (
                    "silu_and_mul",
                    "candle",
                    repeat(|| {
                        drop(black_box((candle_nn::ops::silu(&a)? * &b)?));
                        Ok(())
                    }),
                ),
            ];
            // About a millisecond of work per case and round.
            let calls = (1 << 22) / (rows * hidden).max(1) + 1;
            for case in &cases {
                (case.2)(calls.min(8))?;
            }
            let mut times: Vec<Vec<f64>> = vec![Vec::with_capacity(rounds); cases.len()];
            for round in 0..rounds {
                for k in 0..cases.len() {
                    let i = (round + k) % cases.len();
                    let t = Instant::now();
                    (cases[i].2)(calls)?;
                    times[i].push(t.elapsed().as_secs_f64() * 1e6 / calls as f64);
                }
            }
            let median = |v: &mut Vec<f64>| {
                v.sort_unstable_by(f64::total_cmp);
                v[v.len() / 2]
            };
            let medians: Vec<f64> = times.iter_mut().map(median).collect();
            let dt = if dtype == DType::BF16 { "bf16" } else { "f32" };
            for op in ["rms_norm", "silu_and_mul"] {
                let of =
                    |imp: &str| cases.iter().position(|c| c.0 == op && c.1 == imp).map_or(f64::NAN, |i| medians[i]);
                let candle = of("candle");
                let cell = |imp: &str| format!("{:.2} ({:.2})", of(imp), of(imp) / candle);
                println!(
                    "| {rows}×{hidden} | {dt} | {op} | {} | {} | {} | {:.2} |",
                    cell("kernelized"),
                    cell("adapter"),
                    cell("raw"),
                    candle
                );
            }
        }
    }
    // Every kernelized layer ran its kernel (strict mode would have failed the call otherwise).
    let report = dispatch::report();
    for layer in ["RMSNorm", "SiluAndMul"] {
        let chosen = report.find(layer, Target::Device(kernels_runtime::variant::BackendKind::Cpu, 0), Mode::Inference);
        if !chosen.is_some_and(|r| matches!(r.choice(), Choice::Kernel(_))) {
            return Err(format!("{layer}: no kernel chosen\n{report}").into());
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("latency_cpu: {e}");
            ExitCode::FAILURE
        }
    }
}
