//! kernels-demo: one Llama-style decoder block in candle, with its RMSNorm, residual-add +
//! RMSNorm and SiLU-and-mul layers dispatched to kernels (`#[kernelize]`, `kernels.toml`),
//! checked against the same block on candle alone.
//!
//! ```text
//! cargo run --release -p kernels-demo [-- --device cpu|cuda] [--dtype f32|bf16|f16] [--runs N]
//! cargo run --release -p kernels-demo -- --once [N]
//! ```
//!
//! Prints what each layer uses and why, the largest difference between the block's output
//! with kernels and with candle alone, and the time ratio of the two. Exits with status 1 when
//! the difference exceeds the tolerance, 2 on any other error. `DISABLE_KERNEL_MAPPING=1`
//! makes every layer use candle; `KERNELS_STRICT=1` makes a layer without a kernel an error.
//!
//! `--once N` does only what a program needs to start the kernels: each kernelized layer called
//! once on `[1 × N]` (default 1024), one line printed. The cold-start benchmark
//! (`cargo bench -p kernels-benches --bench cold_start`) times it.

mod model;

use std::process::ExitCode;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use kernels_runtime::dispatch::{self, Choice, Mode, Target};

use crate::model::{Block, Config, LAYERS, Path};

kernels_runtime::include_kernels!();

const USAGE: &str = "usage: kernels-demo [--device cpu|cuda] [--dtype f32|bf16|f16] [--runs N] [--seq N] [--once N]

  --device  where the block runs (default: cpu; env KERNELS_DEMO_DEVICE)
  --dtype   the block's dtype (default: f32)
  --runs    timed runs per path, after one warm-up (default: 7)
  --seq     tokens (default: 128)
  --once    only call each kernelized layer once on [1 x N] (N = 1024 if no number follows) and exit";

/// Command-line options.
#[derive(Debug)]
struct Options {
    device: String,
    dtype: DType,
    runs: usize,
    seq: usize,
    /// `--once N`: call each layer once on `[1 × N]` and exit.
    once: Option<usize>,
}

fn parse_options() -> Result<Options, String> {
    let mut options = Options {
        device: std::env::var("KERNELS_DEMO_DEVICE").unwrap_or_else(|_| "cpu".to_owned()),
        dtype: DType::F32,
        runs: 7,
        seq: Config::DEFAULT.seq,
        once: None,
    };
    let mut args = std::env::args().skip(1).peekable();
    while let Some(arg) = args.next() {
        if arg == "--once" {
            let width = match args.next_if(|a| !a.starts_with("--")) {
                Some(n) => n.parse().map_err(|e| format!("--once: {e}"))?,
                None => 1024,
            };
            options.once = Some(width);
            continue;
        }
        let (key, inline) = match arg.split_once('=') {
            Some((k, v)) => (k.to_owned(), Some(v.to_owned())),
            None => (arg.clone(), None),
        };
        let mut value =
            || inline.clone().or_else(|| args.next()).ok_or_else(|| format!("{key} needs a value\n{USAGE}"));
        match key.as_str() {
            "--device" => options.device = value()?,
            "--dtype" => {
                options.dtype = match value()?.as_str() {
                    "f32" => DType::F32,
                    "bf16" => DType::BF16,
                    "f16" => DType::F16,
                    other => return Err(format!("unknown dtype `{other}` (expected f32, bf16 or f16)")),
                }
            }
            "--runs" => options.runs = value()?.parse().map_err(|e| format!("--runs: {e}"))?,
            "--seq" => options.seq = value()?.parse().map_err(|e| format!("--seq: {e}"))?,
            _ => return Err(format!("unknown argument `{arg}`\n{USAGE}")),
        }
    }
    if options.runs == 0 || options.seq == 0 || options.once == Some(0) {
        return Err("--runs, --seq and --once must be at least 1".to_owned());
    }
    Ok(options)
}

fn device(name: &str) -> Result<Device, String> {
    match name {
        "cpu" => Ok(Device::Cpu),
        #[cfg(feature = "cuda")]
        "cuda" => Device::new_cuda(0).map_err(|e| format!("no CUDA device for candle: {e}")),
        #[cfg(not(feature = "cuda"))]
        "cuda" => Err("this build has no CUDA support: build it with \
                       `cargo run --release -p kernels-demo --features cuda -- --device cuda` \
                       (candle's CUDA backend needs nvcc; see scripts/cuda-env.sh)"
            .to_owned()),
        other => Err(format!("unknown device `{other}` (expected cpu or cuda)")),
    }
}

/// The largest `|a - b|` allowed between the block's output with kernels and without, per
/// dtype: the kernels round differently from candle's ops (a few ulps of the activations),
/// and the matmuls after them carry that through.
fn tolerance(dtype: DType) -> f32 {
    match dtype {
        DType::F32 => 1e-3,
        DType::F16 => 5e-2,
        _ => 2.5e-1,
    }
}

fn main() -> ExitCode {
    if std::env::args().skip(1).any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let options = match parse_options() {
        Ok(o) => o,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    match run(&options) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(2)
        }
    }
}

/// Seconds one call of `f` takes, its device work included.
fn time_once(device: &Device, f: &mut impl FnMut() -> candle_core::Result<Tensor>) -> Result<f64, String> {
    let start = Instant::now();
    let out = f().map_err(|e| e.to_string())?;
    device.synchronize().map_err(|e| e.to_string())?;
    let elapsed = start.elapsed();
    drop(out);
    Ok(elapsed.as_secs_f64())
}

/// Times two closures over `runs` alternating rounds (so load on a shared machine hits both
/// alike), after one warm-up call each; returns their median seconds.
fn interleaved(
    device: &Device,
    runs: usize,
    mut a: impl FnMut() -> candle_core::Result<Tensor>,
    mut b: impl FnMut() -> candle_core::Result<Tensor>,
) -> Result<(f64, f64), String> {
    time_once(device, &mut a)?;
    time_once(device, &mut b)?;
    let (mut ta, mut tb) = (Vec::with_capacity(runs), Vec::with_capacity(runs));
    for _ in 0..runs {
        ta.push(time_once(device, &mut a)?);
        tb.push(time_once(device, &mut b)?);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    Ok((median(&mut ta), median(&mut tb)))
}

fn ms(seconds: f64) -> String {
    format!("{:.2} ms", seconds * 1e3)
}

fn run(options: &Options) -> Result<bool, String> {
    let device = device(&options.device)?;
    if let Some(width) = options.once {
        let sum = model::each_layer_once(width, options.dtype, &device).map_err(|e| e.to_string())?;
        println!("kernels-demo --once {width}: each layer called once on {}, sum of outputs {sum}", options.device);
        return Ok(true);
    }
    if device.is_cpu() && options.dtype == DType::BF16 {
        return Err("candle's CPU backend has no bf16 matmul: use --dtype f16 or f32 on the CPU".to_owned());
    }
    let config = Config { seq: options.seq, ..Config::DEFAULT };
    let e = |e: candle_core::Error| e.to_string();
    println!(
        "kernels-demo: one Llama-style decoder block (hidden {}, {} heads, MLP {}, {} tokens, {:?}) on {}",
        config.hidden, config.heads, config.intermediate, config.seq, options.dtype, options.device
    );
    let block = Block::new(config, 0x006B_6572_6E65_6C73, options.dtype, &device).map_err(e)?;
    let x = block.input(7).map_err(e)?;

    // With kernels, then candle alone (the references, called directly in this process).
    let with_kernels = block.forward(&x, Path::Kernels).map_err(e)?;
    let reference = block.forward(&x, Path::Reference).map_err(e)?;

    println!("\nlayers ({}):", layer_summary());
    let target = target_of(&device);
    let report = dispatch::report();
    for layer in LAYERS {
        let Some(resolution) = report.find(layer, target, Mode::Inference) else {
            println!("  {layer:<11} not called");
            continue;
        };
        match resolution.choice() {
            Choice::Kernel(k) => {
                println!(
                    "  {layer:<11} kernel    {}::{}  variant {}  source {}",
                    k.kernel, k.function, k.variant, k.source
                );
                println!("  {:<11} why: {}", "", k.trace.to_string().lines().next().unwrap_or_default());
                for line in k.trace.to_string().lines().skip(1) {
                    println!("  {:<11}   {line}", "");
                }
            }
            Choice::Fallback(reason) => {
                println!("  {layer:<11} fallback  candle forward");
                let text = reason.to_string();
                let mut lines = text.lines();
                println!("  {:<11} why: {}", "", lines.next().unwrap_or_default());
                for line in lines {
                    println!("  {:<11}   {line}", "");
                }
            }
        }
        // Verify mode (KERNELS_VERIFY=1): how far the kernel was from the candle forward.
        let verification = resolution.verification();
        if verification.checks > 0 {
            for line in verification.to_string().lines() {
                println!("  {:<11} verify: {}", "", line.trim_start());
            }
        }
    }

    let diff = max_abs_diff(&with_kernels, &reference).map_err(e)?;
    let tol = tolerance(options.dtype);
    let ok = diff <= tol;
    println!(
        "\nmax |kernels - fallback| over the block's output {:?}: {diff:.3e} (tolerance {tol:.0e}): {}",
        with_kernels.dims(),
        if ok { "ok" } else { "TOO LARGE" }
    );

    // Timings: the whole block, then each kernelizable layer alone.
    let (t_kernels, t_reference) =
        interleaved(&device, options.runs, || block.forward(&x, Path::Kernels), || block.forward(&x, Path::Reference))?;
    println!(
        "block time: kernels {}, fallback {} (median of {} runs after a warm-up): kernels/fallback = {:.3}",
        ms(t_kernels),
        ms(t_reference),
        options.runs,
        t_kernels / t_reference
    );
    let inputs = block.layer_inputs(&x).map_err(e)?;
    for layer in LAYERS {
        let runs = 10 * options.runs + 1;
        let (k, r) = interleaved(
            &device,
            runs,
            || block.run_layer(layer, &inputs, Path::Kernels),
            || block.run_layer(layer, &inputs, Path::Reference),
        )?;
        println!(
            "  {layer:<11} {:?}: kernels {}, fallback {} (median of {runs}): kernels/fallback = {:.3}",
            inputs.shape_of(layer),
            ms(k),
            ms(r),
            k / r
        );
    }

    if !ok {
        eprintln!("error: the block's output with kernels differs from candle's by {diff:.3e}, more than {tol:.0e}");
    }
    Ok(ok)
}

/// What decided the layers: the kill switch, or the registry.
fn layer_summary() -> String {
    if kernels_runtime::env::flag(kernels_runtime::env::DISABLE_MAPPING) {
        format!("{} is set", kernels_runtime::env::DISABLE_MAPPING)
    } else {
        let kernels: Vec<String> = __KERNELS_REGISTRY
            .kernels
            .iter()
            .map(|k| format!("{} with {} embedded variant(s)", k.name, k.variants.len()))
            .collect();
        format!("kernels.toml maps them; this binary carries {}", kernels.join(", "))
    }
}

fn target_of(device: &Device) -> Target {
    let (kind, ordinal) = kernels_runtime::candle::backend_of(device);
    Target::Device(kind, u32::try_from(ordinal).unwrap_or(u32::MAX))
}

/// `max |a - b|`, in f32.
fn max_abs_diff(a: &Tensor, b: &Tensor) -> candle_core::Result<f32> {
    let a = a.to_dtype(DType::F32)?;
    let b = b.to_dtype(DType::F32)?;
    (a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()
}
