//! The example CPU kernels (`examples/kernels/rust-cpu`, loaded as a cdylib and called through
//! `kernels_runtime::candle`) against candle's own CPU ops, side by side in one run, on
//! [512 × 4096] f32:
//!
//! - `silu_and_mul(out, x)` (fused) vs candle's unfused `x[:, :d].silu() * x[:, d:]`;
//! - `rms_norm(out, x, w, eps)` vs `candle_nn::ops::rms_norm`.
//!
//! Each kernel row allocates its output through candle, as a forward does; the "direct" rows
//! call the kernel on the same input memory and a preallocated output without candle, to show
//! what the adapter and the allocation cost.
//!
//! `cargo bench -p kernels-benches --bench cpu_kernels` (options: `--rounds N`, `--warmup N`).

use std::hint::black_box;
use std::process::ExitCode;

use candle_core::{D, DType, Device, Storage, Tensor};
use kernels_benches::{Case, Stats, build_example_cpu_kernels, compare, load_functions, machine};
use kernels_runtime::candle::{self as kc, CandleArg};
use kernels_runtime::ffi::{Arg, KernelFunction, TensorView};

const ROWS: usize = 512;
const HIDDEN: usize = 4096;
const EPS: f64 = 1e-6;

/// Deterministic values in about [-4, 4].
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 8.0 - 4.0
        })
        .collect()
}

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// `kernel` on candle tensors, into a fresh candle output of `shape`.
fn kernel_on_candle(kernel: &KernelFunction, shape: (usize, usize), inputs: &[CandleArg<'_>], zeroed: bool) -> Tensor {
    let out = if zeroed {
        Tensor::zeros(shape, DType::F32, &Device::Cpu)
    } else {
        // SAFETY: both kernels write every element of `out`; it is read only after success.
        unsafe { Tensor::empty(shape, DType::F32, &Device::Cpu) }
    }
    .expect("allocate the output");
    let mut args = vec![CandleArg::output(&out)];
    args.extend_from_slice(inputs);
    // SAFETY: the example kernels read their inputs and write only `out`.
    unsafe { kc::call(kernel, &args) }.expect("kernel call");
    out
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
    Ok((a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?)
}

fn print_table(title: &str, bytes: usize, stats: &[Stats], baseline: &str) {
    let base = stats.iter().find(|s| s.name == baseline).map_or(f64::NAN, |s| s.median.as_secs_f64());
    println!("\n{title}\n");
    println!("| case | median | p10 – p90 | effective GB/s | speed-up vs candle |");
    println!("|---|---:|---:|---:|---:|");
    for s in stats {
        let m = s.median.as_secs_f64();
        println!(
            "| {} | {:.0} µs | {:.0} – {:.0} µs | {:.1} | {:.2}× |",
            s.name,
            m * 1e6,
            s.p10.as_secs_f64() * 1e6,
            s.p90.as_secs_f64() * 1e6,
            bytes as f64 / m / 1e9,
            base / m,
        );
    }
}

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn run() -> Result<()> {
    let (warmup, rounds) = (arg("--warmup", 20), arg("--rounds", 200));
    let path = build_example_cpu_kernels()?;
    // SAFETY: the example library follows the TVM-FFI ABI and has no initialisers.
    let [silu_and_mul, rms_norm] = unsafe { load_functions(&path, ["silu_and_mul", "rms_norm"]) }?;
    println!("machine: {}", machine());
    println!("shape: [{ROWS} × {HIDDEN}] f32; {warmup} warm-up rounds, {rounds} timed rounds, cases interleaved");

    let device = Device::Cpu;
    let x = Tensor::from_vec(values(ROWS * HIDDEN, 1), (ROWS, HIDDEN), &device)?;
    let w = Tensor::from_vec(values(HIDDEN, 2), HIDDEN, &device)?;
    let d = HIDDEN / 2;
    // The "direct" cases read the very memory of `x` and `w` (held under read locks for the
    // run), so that every case reads the same input and only the adapter's work differs.
    let (x_storage, _) = x.storage_and_layout();
    let (w_storage, _) = w.storage_and_layout();
    let (Storage::Cpu(x_cpu), Storage::Cpu(w_cpu)) = (&*x_storage, &*w_storage) else {
        return Err("CPU tensors expected".into());
    };
    let (x_data, w_data) = (x_cpu.as_slice::<f32>()?, w_cpu.as_slice::<f32>()?);

    // silu_and_mul: x [512, 4096] → out [512, 2048].
    let candle_silu_mul =
        || -> Result<Tensor> { Ok((x.narrow(D::Minus1, 0, d)?.silu()? * x.narrow(D::Minus1, d, d)?)?) };
    let diff =
        max_abs_diff(&kernel_on_candle(&silu_and_mul, (ROWS, d), &[CandleArg::input(&x)], false), &candle_silu_mul()?)?;
    println!("silu_and_mul: max |kernel − candle| = {diff:e}");
    let mut out_direct = vec![0f32; ROWS * d];
    let mut cases: Vec<Case<'_>> = vec![
        (
            "kernel `silu_and_mul` via candle adapter, uninitialised output",
            Box::new(|| drop(black_box(kernel_on_candle(&silu_and_mul, (ROWS, d), &[CandleArg::input(&x)], false)))),
        ),
        (
            "kernel `silu_and_mul` via candle adapter, zeroed output",
            Box::new(|| drop(black_box(kernel_on_candle(&silu_and_mul, (ROWS, d), &[CandleArg::input(&x)], true)))),
        ),
        (
            "kernel `silu_and_mul` direct (preallocated buffers, no candle)",
            Box::new(|| {
                let x = TensorView::from_slice(x_data, &[ROWS, HIDDEN]).expect("view");
                let out = TensorView::from_slice_mut(&mut out_direct, &[ROWS, d]).expect("view");
                // SAFETY: silu_and_mul reads `x` and writes only `out`, borrowed mutably here.
                unsafe { silu_and_mul.call(&[Arg::from(&out), Arg::from(&x)]) }.expect("kernel call");
            }),
        ),
        (
            "candle `x[:, :d].silu() * x[:, d:]` (unfused)",
            Box::new(|| drop(black_box(candle_silu_mul().expect("candle")))),
        ),
    ];
    let stats = compare(&mut cases, warmup, rounds);
    drop(cases);
    let silu_bytes = ROWS * HIDDEN * 4 + ROWS * d * 4;
    print_table("silu_and_mul, [512 × 4096] f32 → [512 × 2048]", silu_bytes, &stats, &stats[3].name);

    // rms_norm: x [512, 4096], w [4096].
    let candle_rms = || -> Result<Tensor> { Ok(candle_nn::ops::rms_norm(&x, &w, EPS as f32)?) };
    let rms_inputs = [CandleArg::input(&x), CandleArg::input(&w), CandleArg::Float(EPS)];
    let diff = max_abs_diff(&kernel_on_candle(&rms_norm, (ROWS, HIDDEN), &rms_inputs, false), &candle_rms()?)?;
    println!("\nrms_norm: max |kernel − candle| = {diff:e}");
    let mut out_direct = vec![0f32; ROWS * HIDDEN];
    let mut cases: Vec<Case<'_>> = vec![
        (
            "kernel `rms_norm` via candle adapter, uninitialised output",
            Box::new(|| drop(black_box(kernel_on_candle(&rms_norm, (ROWS, HIDDEN), &rms_inputs, false)))),
        ),
        (
            "kernel `rms_norm` via candle adapter, zeroed output",
            Box::new(|| drop(black_box(kernel_on_candle(&rms_norm, (ROWS, HIDDEN), &rms_inputs, true)))),
        ),
        (
            "kernel `rms_norm` direct (preallocated buffers, no candle)",
            Box::new(|| {
                let x = TensorView::from_slice(x_data, &[ROWS, HIDDEN]).expect("view");
                let w = TensorView::from_slice(w_data, &[HIDDEN]).expect("view");
                let out = TensorView::from_slice_mut(&mut out_direct, &[ROWS, HIDDEN]).expect("view");
                // SAFETY: rms_norm reads `x` and `w` and writes only `out`, borrowed mutably here.
                unsafe { rms_norm.call(&[Arg::from(&out), Arg::from(&x), Arg::from(&w), Arg::Float(EPS)]) }
                    .expect("kernel call");
            }),
        ),
        ("candle_nn::ops::rms_norm", Box::new(|| drop(black_box(candle_rms().expect("candle"))))),
    ];
    let stats = compare(&mut cases, warmup, rounds);
    drop(cases);
    let rms_bytes = 2 * ROWS * HIDDEN * 4 + HIDDEN * 4;
    print_table("rms_norm, [512 × 4096] f32, weight [4096]", rms_bytes, &stats, &stats[3].name);
    drop((x_storage, w_storage));

    // The adapter's own cost per call: a tiny input, the output allocated once.
    let small = Tensor::from_vec(values(128, 3), (1, 128), &device)?;
    let small_out = Tensor::zeros((1, 64), DType::F32, &device)?;
    let small_data = values(128, 3);
    let mut small_direct = vec![0f32; 64];
    let mut cases: Vec<Case<'_>> = vec![
        (
            "kernel `silu_and_mul` via candle adapter (output allocated once)",
            Box::new(|| {
                // SAFETY: silu_and_mul reads `small` and writes only `small_out`.
                unsafe { kc::call(&silu_and_mul, &[CandleArg::output(&small_out), CandleArg::input(&small)]) }
                    .expect("kernel call")
            }),
        ),
        (
            "kernel `silu_and_mul` direct",
            Box::new(|| {
                let x = TensorView::from_slice(&small_data, &[1, 128]).expect("view");
                let out = TensorView::from_slice_mut(&mut small_direct, &[1, 64]).expect("view");
                // SAFETY: silu_and_mul reads `x` and writes only `out`, borrowed mutably here.
                unsafe { silu_and_mul.call(&[Arg::from(&out), Arg::from(&x)]) }.expect("kernel call");
            }),
        ),
        (
            "candle `x[:, :d].silu() * x[:, d:]` (unfused)",
            Box::new(|| {
                drop(black_box(
                    (small.narrow(1, 0, 64).unwrap().silu().unwrap() * small.narrow(1, 64, 64).unwrap()).unwrap(),
                ))
            }),
        ),
    ];
    let stats = compare(&mut cases, warmup * 50, rounds * 50);
    drop(cases);
    println!("\ncall overhead, silu_and_mul on [1 × 128] f32\n");
    println!("| case | median | p10 – p90 |");
    println!("|---|---:|---:|");
    for s in &stats {
        println!(
            "| {} | {:.2} µs | {:.2} – {:.2} µs |",
            s.name,
            s.median.as_secs_f64() * 1e6,
            s.p10.as_secs_f64() * 1e6,
            s.p90.as_secs_f64() * 1e6
        );
    }
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cpu_kernels: {e}");
            ExitCode::FAILURE
        }
    }
}
