//! `#[kernelize]` on candle layers against the example CPU kernels (built here with cargo and
//! laid out as a Hub kernel repo, loaded through `LOCAL_KERNELS`): kernel results equal the
//! candle forwards, outputs are fresh tensors, locks are released, and refusals and failures
//! come back as candle errors.
//!
//! Each test runs in a process of its own (the binary re-runs itself for that one test), since
//! dispatch decisions are made once per process from the environment.
//!
//! Tolerance: the kernels and candle's ops both compute in f32, in different orders:
//! `|kernel - forward| <= 1e-5 * max(1, |forward|)`.

use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use candle_core::{CpuStorage, D, DType, Device, InplaceOp1, Layout, Tensor};
use kernels_runtime::candle::CandleError;
use kernels_runtime::candle::{output, output_like};
use kernels_runtime::dispatch::{self, ArgError, Choice, DispatchError, KernelArg, KernelTensor, Mode, Target};
use kernels_runtime::ffi::Value;
use kernels_runtime::kernelize;
use kernels_runtime::loader::Source;
use kernels_runtime::registry::{KernelEntry, LayerEntry, ModeSupport, Registry};
use kernels_runtime::variant::BackendKind;

#[allow(dead_code)] // only the intact layout is used here
#[path = "support/example_kernel.rs"]
mod example_kernel;

const REPO: &str = "kernels-test/candle-ops";

const fn cpu(layer: &'static str, function: &'static str) -> LayerEntry {
    LayerEntry {
        layer,
        device: BackendKind::Cpu,
        kernel: "ops",
        function,
        capability: None,
        mode: ModeSupport::Inference,
        deterministic: false,
        tolerance: None,
    }
}

static __KERNELS_REGISTRY: Registry = Registry {
    kernels: &[KernelEntry { name: "ops", repo: REPO, commit: None, variants: &[], cached: &[] }],
    layers: &[
        cpu("AddRMSNorm", "add_rms_norm"),
        cpu("InPlace", "rms_norm"),
        cpu("RMSNorm", "rms_norm"),
        cpu("SiluAndMul", "silu_and_mul"),
        // In kernels.toml (a layer it lacks does not compile), mapped for CUDA only: on the
        // CPU it has no mapping.
        LayerEntry { device: BackendKind::Cuda, ..cpu("Unmapped", "rms_norm") },
    ],
    tvm_ffi: None,
    cuda_runtime: None,
};

// ---- layers: candle forwards, kernelized ----------------------------------------------------

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
    fn new(d: usize) -> Self {
        let weight = Tensor::new(values(d, 7), &Device::Cpu).unwrap();
        RmsNorm { weight, eps: 1e-6 }
    }

    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let scale = (x.sqr()?.mean_keepdim(D::Minus1)? + f64::from(self.eps))?.sqrt()?;
        x.broadcast_div(&scale)?.broadcast_mul(&self.weight)
    }
}

/// An output described by a clone of the input: the kernel must not write the input.
#[kernelize(
    layer = "InPlace",
    forward = fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor>,
    output = x.clone(),
    args = (output, x, self.weight, 1e-6),
)]
struct InPlace {
    weight: Tensor,
}

impl InPlace {
    fn forward(&self, _x: &Tensor) -> candle_core::Result<Tensor> {
        candle_core::bail!("InPlace has no Rust forward: the test expects the kernel")
    }
}

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
        let d = x.dim(D::Minus1)? / 2;
        candle_nn_free_silu(&x.narrow(D::Minus1, 0, d)?)? * x.narrow(D::Minus1, d, d)?
    }
}

/// `silu(g) = g / (1 + e^-g)` with candle-core ops.
fn candle_nn_free_silu(g: &Tensor) -> candle_core::Result<Tensor> {
    g / (g.neg()?.exp()? + 1.0)?
}

#[kernelize(
    layer = "AddRMSNorm",
    forward = fn forward(&self, x: &Tensor, residual: &Tensor) -> candle_core::Result<(Tensor, Tensor)>,
    output = (output_like(x)?, output_like(x)?),
    args = (output.0, output.1, x, residual, self.norm.weight, self.norm.eps),
)]
struct AddRmsNorm {
    norm: RmsNorm,
}

impl AddRmsNorm {
    fn forward(&self, x: &Tensor, residual: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        let sum = (x + residual)?;
        Ok((self.norm.forward(&sum)?, sum))
    }
}

/// A layer `kernels.toml` does not map.
#[kernelize(
    layer = "Unmapped",
    forward = fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor>,
    output = output_like(x)?,
    args = (output, x),
)]
struct Unmapped;

impl Unmapped {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        x.affine(2.0, 0.0)
    }
}

// ---- helpers ------------------------------------------------------------------------------

/// Deterministic values in [-2, 2).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(1);
    (0..n)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
        })
        .collect()
}

fn tensor(rows: usize, cols: usize, seed: u64) -> Tensor {
    Tensor::from_vec(values(rows * cols, seed), (rows, cols), &Device::Cpu).unwrap()
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1().unwrap()
}

fn assert_close(got: &Tensor, want: &Tensor) {
    assert_eq!(got.dims(), want.dims());
    for (i, (g, w)) in flat(got).iter().zip(flat(want)).enumerate() {
        assert!((g - w).abs() <= 1e-5 * w.abs().max(1.0), "element {i}: kernel {g}, forward {w}");
    }
}

fn kernel_of(layer: &str) -> kernels_runtime::dispatch::KernelChoice {
    let report = dispatch::report();
    let resolution = report
        .find(layer, Target::Device(BackendKind::Cpu, 0), Mode::Inference)
        .unwrap_or_else(|| panic!("{layer} has not dispatched:\n{report}"));
    match resolution.choice() {
        Choice::Kernel(k) => k.clone(),
        Choice::Fallback(reason) => panic!("{layer} fell back: {reason}"),
    }
}

const CHILD: &str = "KERNELS_CANDLE_DISPATCH_TEST_CHILD";

/// Runs `body` in a fresh process of this test binary, with the example kernels named by
/// `LOCAL_KERNELS` and `env` set (the other dispatch variables unset).
fn in_own_process(test: &str, env: &[(&str, &str)], body: impl FnOnce()) {
    if std::env::var(CHILD).as_deref() == Ok(test) {
        body();
        return;
    }
    let hub = example_kernel::hubs().intact.clone();
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, test)
        .env(kernels_runtime::env::LOCAL_KERNELS, format!("{REPO}={}", hub.display()))
        .env_remove(kernels_runtime::env::DISABLE_MAPPING)
        .env_remove(kernels_runtime::env::STRICT)
        .envs(env.iter().copied());
    let out = cmd.output().expect("the test binary runs");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{test} failed in its own process:\n{stdout}\n{stderr}");
    assert!(stdout.contains("1 passed"), "{test} did not run in its own process:\n{stdout}\n{stderr}");
}

/// Runs an in-place op on `t` (taking its storage's write lock) on another thread; fails if
/// it does not finish in time, i.e. if a read lock was left behind.
fn write_lock_is_free(t: &Tensor) {
    struct Negate;
    impl InplaceOp1 for Negate {
        fn name(&self) -> &'static str {
            "negate"
        }
        fn cpu_fwd(&self, storage: &mut CpuStorage, _: &Layout) -> candle_core::Result<()> {
            if let CpuStorage::F32(v) = storage {
                v.iter_mut().for_each(|x| *x = -*x);
            }
            Ok(())
        }
    }
    let (done, wait) = mpsc::channel();
    let t = t.clone();
    std::thread::spawn(move || done.send(t.inplace_op1(&Negate).is_ok()).unwrap());
    assert_eq!(wait.recv_timeout(Duration::from_secs(20)), Ok(true), "the storage is still locked");
}

// ---- tests --------------------------------------------------------------------------------

#[test]
fn candle_layers_run_the_example_kernels() {
    in_own_process("candle_layers_run_the_example_kernels", &[], || {
        let norm = RmsNorm::new(96);
        let x = tensor(5, 96, 1);
        let y = norm.kernel_forward(&x).unwrap();
        assert_close(&y, &norm.forward(&x).unwrap());
        assert!(y.is_contiguous());
        assert_eq!((y.dtype(), y.device().is_cpu()), (DType::F32, true));
        let k = kernel_of("RMSNorm");
        assert_eq!((k.kernel.as_str(), k.function.as_str(), k.source), ("ops", "rms_norm", Source::Local));

        let silu = SiluAndMul;
        let x = tensor(3, 64, 2);
        let y = silu.kernel_forward(&x).unwrap();
        assert_eq!(y.dims(), [3, 32]);
        assert_close(&y, &silu.forward(&x).unwrap());
        kernel_of("SiluAndMul");

        let add = AddRmsNorm { norm: RmsNorm::new(48) };
        let (x, r) = (tensor(4, 48, 3), tensor(4, 48, 4));
        let (out, sum) = add.kernel_forward(&x, &r).unwrap();
        let (out_ref, sum_ref) = add.forward(&x, &r).unwrap();
        assert_close(&sum, &sum_ref);
        assert_close(&out, &out_ref);
        kernel_of("AddRMSNorm");

        // Half types too (the reference in f32, rounded once).
        let xb = x.to_dtype(DType::BF16).unwrap();
        let norm_b = RmsNorm { weight: add.norm.weight.to_dtype(DType::BF16).unwrap(), eps: 1e-6 };
        let yb = norm_b.kernel_forward(&xb).unwrap();
        assert_eq!(yb.dtype(), DType::BF16);
        let want = add.norm.forward(&xb.to_dtype(DType::F32).unwrap()).unwrap();
        for (g, w) in flat(&yb).iter().zip(flat(&want)) {
            assert!((g - w).abs() <= 2.0 * 2f32.powi(-7) * w.abs() + 1e-6, "bf16: kernel {g}, reference {w}");
        }
    });
}

#[test]
fn outputs_are_fresh_tensors_and_inputs_are_unlocked_after_the_call() {
    in_own_process("outputs_are_fresh_tensors_and_inputs_are_unlocked_after_the_call", &[], || {
        // The output is described by a clone of the input: the kernel writes a new tensor.
        let layer = InPlace { weight: Tensor::ones(32, DType::F32, &Device::Cpu).unwrap() };
        let x = tensor(2, 32, 5);
        let before = flat(&x);
        let y = layer.kernel_forward(&x).unwrap();
        assert_eq!(flat(&x), before, "the input was written");
        assert_close(&y, &RmsNorm { weight: layer.weight.clone(), eps: 1e-6 }.forward(&x).unwrap());

        // Descriptions share one element, which no call writes.
        let description = output((2, 3), DType::F32, &Device::Cpu).unwrap();
        assert_eq!((description.dims(), description.stride()), ([2, 3].as_slice(), [0, 0].as_slice()));
        assert!(flat(&output_like(&y).unwrap()).iter().all(|v| *v == 0.0));

        // An input viewed at a storage offset (a narrow of a larger tensor) reads the right rows.
        let norm = RmsNorm::new(16);
        let big = tensor(6, 16, 6);
        let part = big.narrow(0, 2, 3).unwrap();
        assert_close(&norm.kernel_forward(&part).unwrap(), &norm.forward(&part.contiguous().unwrap()).unwrap());

        // No lock outlives the call: writers of the input and of the field get through.
        write_lock_is_free(&big);
        write_lock_is_free(&norm.weight);

        // The value an input converts to holds the lock, and releases it when dropped.
        let held = big.kernel_arg();
        assert!(matches!(held, Ok(Value::Tensor(KernelTensor::Held(_)))), "{held:?}");
        drop(held);
        write_lock_is_free(&big);

        // Threads call one layer concurrently.
        let expected = norm.forward(&big).unwrap();
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..25 {
                        assert_close(&norm.kernel_forward(&big).unwrap(), &expected);
                    }
                });
            }
        });
    });
}

#[test]
fn refused_inputs_and_kernel_failures_are_candle_errors() {
    in_own_process("refused_inputs_and_kernel_failures_are_candle_errors", &[], || {
        // A non-contiguous input is refused, never misread.
        let norm = RmsNorm::new(8);
        let t = tensor(8, 8, 8).t().unwrap();
        let err = norm.kernel_forward(&t).unwrap_err().to_string();
        assert!(err.contains("layer `RMSNorm`: argument 1 (`x`) cannot be passed to the kernel"), "{err}");
        assert!(err.contains("not contiguous") && err.contains(".contiguous()"), "{err}");
        let Err(ArgError::Adapter(e)) = t.kernel_arg() else { panic!("a non-contiguous view") };
        assert!(matches!(e.get_ref().downcast_ref::<CandleError>(), Some(CandleError::NonContiguous { .. })), "{e}");
        assert!(norm.kernel_forward(&t.contiguous().unwrap()).is_ok());

        // The kernel's own error (a weight of the wrong length), through `?` as a candle error.
        let wrong = RmsNorm { weight: Tensor::ones(5, DType::F32, &Device::Cpu).unwrap(), eps: 1e-6 };
        let run = || -> candle_core::Result<Tensor> { wrong.kernel_forward(&tensor(2, 8, 9)) };
        let err = run().unwrap_err().to_string();
        assert!(err.starts_with("layer `RMSNorm`: "), "{err}");
        assert!(err.contains("rms_norm"), "{err}");
        // A failed call leaves nothing locked.
        write_lock_is_free(&wrong.weight);
    });
}

#[test]
fn fallbacks_use_the_candle_forward() {
    in_own_process("fallbacks_use_the_candle_forward", &[(kernels_runtime::env::DISABLE_MAPPING, "1")], || {
        let norm = RmsNorm::new(32);
        let x = tensor(2, 32, 10);
        let y = norm.kernel_forward(&x).unwrap();
        assert_eq!(flat(&y), flat(&norm.forward(&x).unwrap()), "exactly the forward");
        let report = dispatch::report();
        let r = report.find("RMSNorm", Target::Device(BackendKind::Cpu, 0), Mode::Inference).unwrap();
        assert!(r.choice().to_string().contains("DISABLE_KERNEL_MAPPING is set"), "{report}");
        assert_eq!(flat(&Unmapped.kernel_forward(&x).unwrap()), flat(&x.affine(2.0, 0.0).unwrap()));
    });
}

#[test]
fn strict_mode_refusals_are_candle_errors() {
    in_own_process("strict_mode_refusals_are_candle_errors", &[(kernels_runtime::env::STRICT, "1")], || {
        let err: candle_core::Error = Unmapped.kernel_forward(&tensor(1, 4, 11)).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("would use its Rust forward") && text.contains("strict mode"), "{text}");
        // Mapped layers still run their kernel.
        assert!(RmsNorm::new(4).kernel_forward(&tensor(1, 4, 12)).is_ok());
        let _: fn(DispatchError) -> candle_core::Error = candle_core::Error::from;
    });
}
