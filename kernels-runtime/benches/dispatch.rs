//! A `#[kernelize]`d call against a direct call of the same resolved kernel function, on a
//! tiny tensor (RMSNorm of 1×64 f32, the example CPU kernel), both doing the same work a
//! caller must do: allocate the output, describe the tensors, call.
//!
//! `cargo bench -p kernels-runtime --bench dispatch` runs the criterion benchmarks, then
//! measures both calls interleaved (rounds of alternating batches, median per call) and prints
//! `kernelized / direct`; the goal is ≤ 1.05.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::Criterion;
use kernels_runtime::dispatch::{self, DispatchError, HostTensor};
use kernels_runtime::ffi::{Arg, KernelFunction, TensorView};
use kernels_runtime::kernelize;
use kernels_runtime::registry::{KernelEntry, LayerEntry, ModeSupport, Registry};
use kernels_runtime::select::Request;
use kernels_runtime::variant::BackendKind;

#[allow(dead_code)] // the benchmark needs only the intact layout
#[path = "../tests/support/example_kernel.rs"]
mod example_kernel;

const REPO: &str = "kernels-bench/rust-cpu";

static __KERNELS_REGISTRY: Registry = Registry {
    kernels: &[KernelEntry { name: "ops", repo: REPO, commit: None, variants: &[], cached: &[] }],
    layers: &[LayerEntry {
        layer: "RMSNorm",
        device: BackendKind::Cpu,
        kernel: "ops",
        function: "rms_norm",
        capability: None,
        mode: ModeSupport::Inference,
        deterministic: false,
        tolerance: None,
    }],
    tvm_ffi: None,
    cuda_runtime: None,
};

#[kernelize(
    layer = "RMSNorm",
    forward = fn forward(&self, x: &HostTensor<f32>) -> Result<HostTensor<f32>, DispatchError>,
    output = HostTensor::zeros(x.shape()),
    args = (output, x, self.weight, self.eps),
)]
struct RmsNorm {
    weight: Vec<f32>,
    eps: f32,
}

impl RmsNorm {
    fn forward(&self, _x: &HostTensor<f32>) -> Result<HostTensor<f32>, DispatchError> {
        panic!("the benchmark must run the kernel, not the Rust forward:\n{}", dispatch::report())
    }

    /// What a caller writes without `#[kernelize]`: the same allocation, views and call.
    fn direct(&self, f: &KernelFunction, x: &HostTensor<f32>) -> HostTensor<f32> {
        let mut out = HostTensor::zeros(x.shape());
        {
            let o = out.view_mut().expect("at most 8 dims");
            let xv = x.view().expect("at most 8 dims");
            let w = TensorView::from_slice(&self.weight, &[self.weight.len()]).expect("1-D");
            // SAFETY: rms_norm(out, x, weight, eps) writes only `out`, borrowed mutably here.
            unsafe { f.call(&[Arg::from(&o), Arg::from(&xv), Arg::from(&w), Arg::from(self.eps)]) }
                .expect("the kernel accepts its arguments");
        }
        out
    }
}

/// Median nanoseconds per call of each closure, measured in alternating batches.
fn interleaved(mut a: impl FnMut(), mut b: impl FnMut(), rounds: usize, batch: u32) -> (f64, f64) {
    let time = |f: &mut dyn FnMut()| {
        let start = Instant::now();
        for _ in 0..batch {
            f();
        }
        start.elapsed().as_nanos() as f64 / f64::from(batch)
    };
    let (mut ta, mut tb) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        ta.push(time(&mut a));
        tb.push(time(&mut b));
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    (median(&mut ta), median(&mut tb))
}

fn main() {
    // KERNELS_BENCH_HUB names a laid-out kernel, for machines without cargo.
    let hub = match std::env::var_os("KERNELS_BENCH_HUB") {
        Some(dir) => std::path::PathBuf::from(dir),
        None => example_kernel::hubs().intact.clone(),
    };
    // SAFETY: no other thread exists yet; the variable is read when the layer first dispatches.
    unsafe { std::env::set_var(kernels_runtime::env::LOCAL_KERNELS, format!("{REPO}={}", hub.display())) };

    let d = 64;
    let norm = RmsNorm { weight: (0..d).map(|i| 0.5 + i as f32 / d as f32).collect(), eps: 1e-6 };
    let x = HostTensor::new((0..d).map(|i| (i as f32 * 0.37).sin()).collect(), &[1, d]).unwrap();

    // The same resolved function the layer uses (the loader keeps one handle per library).
    let platform = kernels_runtime::platform::Platform::detect();
    let (loaded, _) = kernels_runtime::loader::load_from_dir("ops", &hub, &platform, Request::cpu()).unwrap();
    let function = loaded.function("rms_norm").unwrap();
    assert_eq!(norm.kernel_forward(&x).unwrap(), norm.direct(&function, &x), "both calls compute the same");

    let mut c = Criterion::default().configure_from_args().warm_up_time(Duration::from_secs(1));
    let mut group = c.benchmark_group("rms_norm_1x64");
    group.bench_function("kernelized", |b| b.iter(|| norm.kernel_forward(black_box(&x)).unwrap()));
    group.bench_function("direct", |b| b.iter(|| norm.direct(black_box(&function), black_box(&x))));
    group.finish();
    c.final_summary();

    let (kernelized, direct) = interleaved(
        || drop(black_box(norm.kernel_forward(black_box(&x)).unwrap())),
        || drop(black_box(norm.direct(black_box(&function), black_box(&x)))),
        201,
        2_000,
    );
    println!(
        "rms_norm 1x64 f32, median of 201 interleaved batches of 2000 calls: kernelized {kernelized:.1} ns, \
         direct {direct:.1} ns, ratio {:.3} (goal <= 1.05)",
        kernelized / direct
    );
}
