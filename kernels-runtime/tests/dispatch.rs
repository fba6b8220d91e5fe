//! `#[kernelize]` layers against the example CPU kernels of this repository (built here with
//! cargo and laid out as a Hub kernel repo), and every fallback with its recorded and logged
//! reason.
//!
//! Each test runs in a process of its own (the test binary re-runs itself for that one test):
//! decisions are cached for the life of a process and read environment variables, so every
//! scenario starts fresh with exactly the environment it names.
//!
//! Kernel results must equal the Rust forward (computed in f64, rounded to f32) within
//! `|kernel - forward| <= 1e-5 * max(1, |forward|)`: the kernels sum in f32.

use std::process::Command;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use kernels_runtime::dispatch::{
    self, Choice, DispatchError, FallbackReason, HostTensor, Mode, Target, report, report_with, with_mode,
};
use kernels_runtime::ffi::TensorView;
use kernels_runtime::kernelize;
use kernels_runtime::loader::Source;
use kernels_runtime::registry::{KernelEntry, LayerEntry, ModeSupport, Registry, Tolerance};
use kernels_runtime::variant::{BackendKind, CpuArch, Os};

// ---- the registry a build script would generate -------------------------------------------

const RUST_CPU: &str = "kernels-test/rust-cpu";
const DAMAGED: &str = "kernels-test/damaged";
const FOREIGN: &str = "kernels-test/foreign";
const SLOW: &str = "kernels-test/slow";

const fn cpu(layer: &'static str, kernel: &'static str, function: &'static str, mode: ModeSupport) -> LayerEntry {
    LayerEntry {
        layer,
        device: BackendKind::Cpu,
        kernel,
        function,
        capability: None,
        mode,
        deterministic: false,
        tolerance: None,
    }
}

/// A mapping declared `deterministic = true`: the Rust example kernels compute each row on one
/// thread in a fixed order (see `examples/kernels/rust-cpu`).
const fn deterministic(entry: LayerEntry) -> LayerEntry {
    LayerEntry { deterministic: true, ..entry }
}

static __KERNELS_REGISTRY: Registry = Registry {
    kernels: &[
        KernelEntry { name: "damaged", repo: DAMAGED, commit: None, variants: &[], cached: &[] },
        KernelEntry { name: "foreign", repo: FOREIGN, commit: None, variants: &[], cached: &[] },
        KernelEntry { name: "ops", repo: RUST_CPU, commit: None, variants: &[], cached: &[] },
        KernelEntry { name: "slow", repo: SLOW, commit: None, variants: &[], cached: &[] },
    ],
    layers: &[
        deterministic(cpu("AddRMSNorm", "ops", "add_rms_norm", ModeSupport::Inference)),
        cpu("Damaged", "damaged", "rms_norm", ModeSupport::Inference),
        cpu("Foreign", "foreign", "rms_norm", ModeSupport::Inference),
        cpu("Misnamed", "ops", "rms_norm_v2", ModeSupport::Inference),
        deterministic(cpu("RMSNorm", "ops", "rms_norm", ModeSupport::Inference)),
        deterministic(cpu("SiluAndMul", "ops", "silu_and_mul", ModeSupport::Training)),
        cpu("Slow", "slow", "rms_norm", ModeSupport::Inference),
        // In kernels.toml (a layer it lacks does not compile), mapped for CUDA only: on the
        // CPU it has no mapping.
        LayerEntry { device: BackendKind::Cuda, ..cpu("Unmapped", "ops", "rms_norm", ModeSupport::Inference) },
        // The same kernel as `RMSNorm`, not declared deterministic.
        cpu("Undeclared", "ops", "rms_norm", ModeSupport::Inference),
        // The same kernel again, for layers whose forward differs from it by an offset (as a
        // kernel that drifts from its reference would): with the f32 default tolerance, and
        // with one wide enough to accept the offset.
        cpu("Offset", "ops", "rms_norm", ModeSupport::Inference),
        LayerEntry {
            tolerance: Some(Tolerance { atol: 0.5, rtol: 0.0 }),
            ..cpu("OffsetTolerated", "ops", "rms_norm", ModeSupport::Inference)
        },
    ],
    tvm_ffi: None,
    cuda_runtime: None,
};

// ---- layers -------------------------------------------------------------------------------

/// RMSNorm over the last dimension, in f64.
fn rms_norm_ref(x: &[f32], weight: &[f32], eps: f32) -> Vec<f32> {
    x.chunks(weight.len())
        .flat_map(|row| {
            let mean_sq = row.iter().map(|v| f64::from(*v).powi(2)).sum::<f64>() / row.len() as f64;
            let scale = 1.0 / (mean_sq + f64::from(eps)).sqrt();
            row.iter().zip(weight).map(move |(v, w)| (f64::from(*v) * scale * f64::from(*w)) as f32)
        })
        .collect()
}

/// Defines an RMSNorm layer type served by layer `$layer` of the registry.
macro_rules! rms_norm_layer {
    ($ty:ident, $layer:literal) => {
        #[kernelize(
                            layer = $layer,
                            forward = fn forward(&self, x: &HostTensor<f32>) -> Result<HostTensor<f32>, DispatchError>,
                            output = HostTensor::zeros(x.shape()),
                            args = (output, x, self.weight, self.eps),
                        )]
        struct $ty {
            weight: Vec<f32>,
            eps: f32,
            forward_calls: AtomicUsize,
        }

        impl $ty {
            fn new(d: usize) -> Self {
                let weight = (0..d).map(|i| 0.5 + i as f32 / d as f32).collect();
                $ty { weight, eps: 1e-6, forward_calls: AtomicUsize::new(0) }
            }

            fn forward(&self, x: &HostTensor<f32>) -> Result<HostTensor<f32>, DispatchError> {
                self.forward_calls.fetch_add(1, Ordering::Relaxed);
                let out = rms_norm_ref(x.data(), &self.weight, self.eps);
                Ok(HostTensor::new(out, x.shape()).expect("same shape as x"))
            }

            fn forward_calls(&self) -> usize {
                self.forward_calls.load(Ordering::Relaxed)
            }
        }
    };
}

rms_norm_layer!(RmsNorm, "RMSNorm");
rms_norm_layer!(Unmapped, "Unmapped");
rms_norm_layer!(Misnamed, "Misnamed");
rms_norm_layer!(Damaged, "Damaged");
rms_norm_layer!(Foreign, "Foreign");
rms_norm_layer!(Slow, "Slow");
rms_norm_layer!(Undeclared, "Undeclared");

/// An RMSNorm layer whose forward adds 0.25 to the kernel's result.
macro_rules! offset_layer {
    ($ty:ident, $layer:literal) => {
        #[kernelize(
                            layer = $layer,
                            forward = fn forward(&self, x: &HostTensor<f32>) -> Result<HostTensor<f32>, DispatchError>,
                            output = HostTensor::zeros(x.shape()),
                            args = (output, x, self.weight, self.eps),
                        )]
        struct $ty {
            weight: Vec<f32>,
            eps: f32,
        }

        impl $ty {
            fn new(d: usize) -> Self {
                $ty { weight: vec![1.0; d], eps: 1e-6 }
            }

            fn forward(&self, x: &HostTensor<f32>) -> Result<HostTensor<f32>, DispatchError> {
                let out = rms_norm_ref(x.data(), &self.weight, self.eps).into_iter().map(|v| v + 0.25).collect();
                Ok(HostTensor::new(out, x.shape()).expect("same shape as x"))
            }
        }
    };
}

offset_layer!(Offset, "Offset");
offset_layer!(OffsetTolerated, "OffsetTolerated");

/// `silu(x[..d]) * x[d..]` on a flat slice, with a `Vec` output and a boxed error type.
#[kernelize(
    layer = "SiluAndMul",
    forward = fn forward(&self, x: &[f32]) -> Result<Vec<f32>, Box<dyn std::error::Error + Send + Sync>>,
    output = vec![0f32; x.len() / 2],
    args = (output, x),
)]
struct SiluAndMul;

impl SiluAndMul {
    fn forward(&self, x: &[f32]) -> Result<Vec<f32>, Box<dyn std::error::Error + Send + Sync>> {
        let (a, b) = x.split_at(x.len() / 2);
        Ok(a.iter()
            .zip(b)
            .map(|(a, b)| {
                let (a, b) = (f64::from(*a), f64::from(*b));
                (a / (1.0 + (-a).exp()) * b) as f32
            })
            .collect())
    }
}

/// `SiluAndMul` on a `[rows, 2d]` tensor, whose rows the kernel can split over threads.
#[kernelize(
    layer = "SiluAndMul",
    forward = fn forward(&self, x: &HostTensor<f32>) -> Result<HostTensor<f32>, DispatchError>,
    output = HostTensor::zeros(&[x.shape()[0], x.shape()[1] / 2]),
    args = (output, x),
)]
struct SiluAndMulRows;

impl SiluAndMulRows {
    fn forward(&self, x: &HostTensor<f32>) -> Result<HostTensor<f32>, DispatchError> {
        let out = x.data().chunks(x.shape()[1]).flat_map(|row| SiluAndMul.forward(row).expect("an even row")).collect();
        Ok(HostTensor::new(out, &[x.shape()[0], x.shape()[1] / 2]).expect("half of x"))
    }
}

/// Two outputs: `residual_out = x + residual`, `out = rms_norm(residual_out) * weight`.
#[kernelize(
    layer = "AddRMSNorm",
    forward = fn forward(&self, x: &HostTensor<f32>, residual: &HostTensor<f32>)
        -> Result<(HostTensor<f32>, HostTensor<f32>), DispatchError>,
    output = (HostTensor::zeros(x.shape()), HostTensor::zeros(x.shape())),
    args = (output.0, output.1, x, residual, self.weight, self.eps),
)]
struct AddRmsNorm {
    weight: Vec<f32>,
    eps: f32,
}

impl AddRmsNorm {
    fn forward(
        &self,
        x: &HostTensor<f32>,
        residual: &HostTensor<f32>,
    ) -> Result<(HostTensor<f32>, HostTensor<f32>), DispatchError> {
        let sum: Vec<f32> = x.data().iter().zip(residual.data()).map(|(a, b)| a + b).collect();
        let out = rms_norm_ref(&sum, &self.weight, self.eps);
        Ok((HostTensor::new(out, x.shape()).unwrap(), HostTensor::new(sum, x.shape()).unwrap()))
    }
}

// ---- helpers ------------------------------------------------------------------------------

/// Deterministic values in [-2, 2).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 4.0 - 2.0
        })
        .collect()
}

fn assert_close(kernel: &[f32], forward: &[f32]) {
    assert_eq!(kernel.len(), forward.len());
    for (i, (k, f)) in kernel.iter().zip(forward).enumerate() {
        assert!((k - f).abs() <= 1e-5 * f.abs().max(1.0), "element {i}: kernel {k}, forward {f}");
    }
}

const CPU: Target = Target::Device(BackendKind::Cpu, 0);

fn resolution(layer: &str, mode: Mode) -> &'static dispatch::Resolution {
    report().find(layer, CPU, mode).unwrap_or_else(|| panic!("no decision for {layer} in {mode} mode:\n{}", report()))
}

fn fallback_of(layer: &str, mode: Mode) -> FallbackReason {
    match resolution(layer, mode).choice() {
        Choice::Fallback(reason) => reason.clone(),
        Choice::Kernel(k) => panic!("{layer} uses kernel {k:?}"),
    }
}

/// Log lines written through `tracing` in this process.
static LOGS: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct Capture;

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn logs() -> String {
    String::from_utf8_lossy(&LOGS.lock().unwrap()).into_owned()
}

/// The log lines that mention `needle`.
fn log_lines(needle: &str) -> Vec<String> {
    logs().lines().filter(|l| l.contains(needle)).map(str::to_owned).collect()
}

#[path = "support/own_process.rs"]
mod own_process;

/// [`own_process::in_own_process`], with this process's logs captured in the child.
fn in_own_process(test: &str, env: &[(&str, String)], body: impl FnOnce()) {
    own_process::in_own_process(test, env, || {
        let subscriber = tracing_subscriber::fmt().with_writer(|| Capture).with_ansi(false).finish();
        tracing::subscriber::set_global_default(subscriber).expect("one subscriber per process");
        body();
    });
}

// ---- the example kernels in a Hub layout --------------------------------------------------

#[path = "support/example_kernel.rs"]
mod example_kernel;

use example_kernel::hubs;

fn local_kernels() -> (&'static str, String) {
    let h = hubs();
    let value = format!(
        "{RUST_CPU}={}:{DAMAGED}={}:{FOREIGN}={}",
        h.intact.display(),
        h.damaged.display(),
        h.foreign.display()
    );
    (kernels_runtime::env::LOCAL_KERNELS, value)
}

// ---- tests --------------------------------------------------------------------------------

#[test]
fn mapped_layers_run_the_example_kernels() {
    in_own_process("mapped_layers_run_the_example_kernels", &[local_kernels()], || {
        let norm = RmsNorm::new(64);
        let x = HostTensor::new(values(4 * 64, 1), &[4, 64]).unwrap();
        let by_kernel = norm.kernel_forward(&x).unwrap();
        assert_eq!(norm.forward_calls(), 0, "the Rust forward was not called");
        assert_eq!(by_kernel.shape(), [4, 64]);
        assert_close(by_kernel.data(), norm.forward(&x).unwrap().data());

        let Choice::Kernel(k) = resolution("RMSNorm", Mode::Inference).choice() else { panic!("{}", report()) };
        assert_eq!((k.kernel.as_str(), k.function.as_str(), k.source), ("ops", "rms_norm", Source::Local));
        assert_eq!(k.variant, format!("tvm-ffi01-cpu-{}-{}", CpuArch::current(), Os::current()));
        assert_eq!(k.trace.chosen(), Some(k.variant.as_str()));

        let x = values(2 * 32, 2);
        assert_close(&SiluAndMul.kernel_forward(&x).unwrap(), &SiluAndMul.forward(&x).unwrap());

        let add = AddRmsNorm { weight: values(48, 3), eps: 1e-5 };
        let (x, r) = (
            HostTensor::new(values(3 * 48, 4), &[3, 48]).unwrap(),
            HostTensor::new(values(3 * 48, 5), &[3, 48]).unwrap(),
        );
        let (out, sum) = add.kernel_forward(&x, &r).unwrap();
        let (out_ref, sum_ref) = add.forward(&x, &r).unwrap();
        assert_close(sum.data(), sum_ref.data());
        assert_close(out.data(), out_ref.data());

        let lines = log_lines("uses kernel ops::rms_norm");
        assert_eq!(lines.len(), 1, "{}", logs());
        assert!(lines[0].contains("INFO"), "{}", lines[0]);
    });
}

/// A directory holding a loadable library named `libcuda.so.1` (a copy of this process's
/// `libgcc_s.so.1`): a "driver" that `dlopen` finds through `LD_LIBRARY_PATH`, and that stays
/// mapped once opened, so `/proc/self/maps` shows whether anything tried to probe CUDA.
#[cfg(target_os = "linux")]
fn fake_cuda_driver_dir() -> std::path::PathBuf {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let gcc = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| p.ends_with("/libgcc_s.so.1"))
        .expect("a Rust test binary links libgcc_s.so.1");
    let dir = std::env::temp_dir().join(format!("kernels-fake-cuda-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(gcc, dir.join("libcuda.so.1")).unwrap();
    dir
}

#[cfg(target_os = "linux")]
#[test]
fn cpu_layers_probe_no_gpu_driver() {
    let dir = if own_process::is_child() { std::path::PathBuf::new() } else { fake_cuda_driver_dir() };
    let env = [local_kernels(), ("LD_LIBRARY_PATH", dir.display().to_string())];
    in_own_process("cpu_layers_probe_no_gpu_driver", &env, || {
        let norm = RmsNorm::new(16);
        let x = HostTensor::new(values(16, 11), &[1, 16]).unwrap();
        norm.kernel_forward(&x).unwrap();
        let Choice::Kernel(k) = resolution("RMSNorm", Mode::Inference).choice() else { panic!("{}", report()) };
        assert!(!k.trace.to_string().contains("CUDA"), "{}", k.trace);
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let driver: Vec<&str> = maps.lines().filter(|l| l.contains("libcuda")).collect();
        assert!(driver.is_empty(), "a layer on the CPU loaded a CUDA driver: {driver:?}");
    });
    if !dir.as_os_str().is_empty() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

#[test]
fn decisions_are_made_once_and_shared_by_threads() {
    in_own_process("decisions_are_made_once_and_shared_by_threads", &[local_kernels()], || {
        let norm = RmsNorm::new(32);
        let x = HostTensor::new(values(2 * 32, 6), &[2, 32]).unwrap();
        let expected = norm.forward(&x).unwrap();
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..50 {
                        assert_close(norm.kernel_forward(&x).unwrap().data(), expected.data());
                    }
                });
            }
        });
        assert_eq!(norm.forward_calls(), 1, "only the reference call above");
        let report = report();
        let layer = report.layers.iter().find(|l| l.layer == "RMSNorm").unwrap();
        assert_eq!(layer.resolutions.len(), 1, "{report}");
        assert_eq!(log_lines("RMSNorm").len(), 1, "{}", logs());
    });
}

#[test]
fn kernel_errors_are_errors_not_fallbacks() {
    in_own_process("kernel_errors_are_errors_not_fallbacks", &[local_kernels()], || {
        // The weight does not match the last dimension: the kernel refuses with a ValueError.
        let mut norm = RmsNorm::new(8);
        norm.weight.pop();
        let x = HostTensor::new(values(16, 7), &[2, 8]).unwrap();
        let err = norm.kernel_forward(&x).unwrap_err();
        let DispatchError::Kernel { layer, source } = &err else { panic!("{err}") };
        assert_eq!(*layer, "RMSNorm");
        let (kind, message) = source.raised().expect("the kernel raised");
        assert_eq!(kind, "ValueError");
        assert!(message.contains("weight"), "{message}");
        assert_eq!(norm.forward_calls(), 0, "no silent fallback");

        // A tensor the ABI cannot describe is reported with its place in `args`.
        let norm = RmsNorm::new(1);
        let too_deep = HostTensor::<f32>::zeros(&[1; 9]);
        let err = norm.kernel_forward(&too_deep).unwrap_err();
        assert!(matches!(err, DispatchError::Argument { index: 0, name: "output", .. }), "{err}");
        assert!(err.to_string().contains("at most 8 dimensions"), "{err}");
    });
}

#[test]
fn unmapped_layers_use_their_forward() {
    in_own_process("unmapped_layers_use_their_forward", &[local_kernels()], || {
        let layer = Unmapped::new(16);
        let x = HostTensor::new(values(16, 8), &[1, 16]).unwrap();
        assert_eq!(layer.kernel_forward(&x).unwrap(), layer.forward(&x).unwrap());
        assert_eq!(layer.forward_calls(), 2);
        let reason = fallback_of("Unmapped", Mode::Inference);
        assert!(matches!(reason, FallbackReason::NoMapping { device: BackendKind::Cpu, .. }), "{reason:?}");
        let lines = log_lines("layer `Unmapped`");
        assert_eq!(lines.len(), 1, "{}", logs());
        assert!(lines[0].contains("INFO") && lines[0].contains("maps it to no kernel"), "{}", lines[0]);
    });
}

#[test]
fn disable_kernel_mapping_uses_every_forward() {
    let env = [local_kernels(), (kernels_runtime::env::DISABLE_MAPPING, "1".to_owned())];
    in_own_process("disable_kernel_mapping_uses_every_forward", &env, || {
        let norm = RmsNorm::new(16);
        let x = HostTensor::new(values(16, 9), &[1, 16]).unwrap();
        norm.kernel_forward(&x).unwrap();
        assert_eq!(norm.forward_calls(), 1);
        assert!(matches!(
            fallback_of("RMSNorm", Mode::Inference),
            FallbackReason::Disabled { by: dispatch::Switch::All }
        ));
        assert_eq!(log_lines("DISABLE_KERNEL_MAPPING is set").len(), 1, "{}", logs());
    });
}

#[test]
fn kernels_disable_turns_off_named_layers_and_kernels_even_in_strict_mode() {
    let env = [
        local_kernels(),
        (kernels_runtime::env::DISABLE, "RMSNorm, Nope".to_owned()),
        (kernels_runtime::env::STRICT, "1".to_owned()),
    ];
    in_own_process("kernels_disable_turns_off_named_layers_and_kernels_even_in_strict_mode", &env, || {
        let x = HostTensor::new(values(32, 21), &[2, 16]).unwrap();
        let norm = RmsNorm::new(16);
        let out = norm.kernel_forward(&x).expect("an explicit disable is not a strict-mode error");
        assert_eq!(norm.forward_calls(), 1);
        assert_eq!(out, norm.forward(&x).unwrap());
        let reason = fallback_of("RMSNorm", Mode::Inference);
        assert!(
            matches!(&reason, FallbackReason::Disabled { by: dispatch::Switch::Env(n) } if n == "RMSNorm"),
            "{reason:?}"
        );
        // Another layer of the same kernel still runs it.
        let add = AddRmsNorm { weight: vec![1.0; 16], eps: 1e-6 };
        add.kernel_forward(&x, &x).unwrap();
        assert!(matches!(resolution("AddRMSNorm", Mode::Inference).choice(), Choice::Kernel(_)));
        let text = report().to_string();
        assert!(text.contains("Rust forward: KERNELS_DISABLE names `RMSNorm`"), "{text}");
        // One warning for the unknown name, naming what is known.
        let warnings = log_lines("`Nope`");
        assert_eq!(warnings.len(), 1, "{}", logs());
        assert!(warnings[0].contains("RMSNorm") && warnings[0].contains("ops (kernels-test/rust-cpu)"), "{}", logs());
    });
}

#[test]
fn kernels_disable_by_kernel_name_turns_off_every_layer_of_it() {
    let env = [local_kernels(), (kernels_runtime::env::DISABLE, "ops".to_owned())];
    in_own_process("kernels_disable_by_kernel_name_turns_off_every_layer_of_it", &env, || {
        let x = HostTensor::new(values(16, 22), &[1, 16]).unwrap();
        let norm = RmsNorm::new(16);
        norm.kernel_forward(&x).unwrap();
        AddRmsNorm { weight: vec![1.0; 16], eps: 1e-6 }.kernel_forward(&x, &x).unwrap();
        assert_eq!(norm.forward_calls(), 1);
        for layer in ["RMSNorm", "AddRMSNorm"] {
            let reason = fallback_of(layer, Mode::Inference);
            assert_eq!(reason.to_string(), "KERNELS_DISABLE names `ops`");
        }
        assert!(log_lines("does not know").is_empty(), "{}", logs());
    });
}

#[test]
fn layers_and_kernels_can_be_turned_off_at_run_time() {
    let env = [local_kernels(), (kernels_runtime::env::STRICT, "1".to_owned())];
    in_own_process("layers_and_kernels_can_be_turned_off_at_run_time", &env, || {
        let x = HostTensor::new(values(16, 23), &[1, 16]).unwrap();
        let norm = RmsNorm::new(16);
        norm.kernel_forward(&x).unwrap();
        assert_eq!(norm.forward_calls(), 0, "the kernel runs");

        dispatch::disable("RMSNorm");
        norm.kernel_forward(&x).expect("not a strict-mode error");
        assert_eq!(norm.forward_calls(), 1);
        let text = report().to_string();
        assert!(text.contains("turned off at run time (`dispatch::disable(\"RMSNorm\")`)"), "{text}");
        let r = resolution("RMSNorm", Mode::Inference);
        assert_eq!(r.switched_off(), Some(dispatch::Switch::Api("RMSNorm".into())));
        // Other threads see a process-wide switch too.
        std::thread::scope(|s| s.spawn(|| norm.kernel_forward(&x).unwrap()).join().unwrap());
        assert_eq!(norm.forward_calls(), 2);
        assert!(dispatch::enable("RMSNorm"));
        assert!(!dispatch::enable("RMSNorm"));
        norm.kernel_forward(&x).unwrap();
        assert_eq!(norm.forward_calls(), 2, "the kernel again");

        // Scoped to this thread, by kernel name, and restored afterwards.
        dispatch::with_disabled(&["ops"], || {
            norm.kernel_forward(&x).unwrap();
            assert_eq!(norm.forward_calls(), 3);
            std::thread::scope(|s| s.spawn(|| norm.kernel_forward(&x).unwrap()).join().unwrap());
            assert_eq!(norm.forward_calls(), 3, "another thread still runs the kernel");
        });
        norm.kernel_forward(&x).unwrap();
        assert_eq!(norm.forward_calls(), 3);
        assert!(resolution("RMSNorm", Mode::Inference).switched_off().is_none());
    });
}

#[test]
fn training_mode_needs_a_kernel_with_backward() {
    in_own_process("training_mode_needs_a_kernel_with_backward", &[local_kernels()], || {
        let norm = RmsNorm::new(16);
        let x = HostTensor::new(values(16, 10), &[1, 16]).unwrap();
        with_mode(Mode::Training, || norm.kernel_forward(&x)).unwrap();
        assert_eq!(norm.forward_calls(), 1, "inference-only kernel refused in training");
        let reason = fallback_of("RMSNorm", Mode::Training);
        assert!(matches!(&reason, FallbackReason::NoBackward { kernels } if kernels == &["ops"]), "{reason:?}");
        // Inference is decided separately and gets the kernel.
        norm.kernel_forward(&x).unwrap();
        assert_eq!(norm.forward_calls(), 1);
        assert!(matches!(resolution("RMSNorm", Mode::Inference).choice(), Choice::Kernel(_)));
        // A kernel declared with backward serves training.
        let x = values(8, 11);
        with_mode(Mode::Training, || SiluAndMul.kernel_forward(&x)).unwrap();
        assert!(matches!(resolution("SiluAndMul", Mode::Training).choice(), Choice::Kernel(_)));
        assert_eq!(log_lines("in training mode uses its Rust forward").len(), 1, "{}", logs());
    });
}

#[test]
fn missing_functions_fall_back_with_a_warning() {
    in_own_process("missing_functions_fall_back_with_a_warning", &[local_kernels()], || {
        let layer = Misnamed::new(16);
        let x = HostTensor::new(values(16, 12), &[1, 16]).unwrap();
        layer.kernel_forward(&x).unwrap();
        assert_eq!(layer.forward_calls(), 1);
        let reason = fallback_of("Misnamed", Mode::Inference);
        assert!(matches!(&reason, FallbackReason::MissingSymbol { function, .. } if function == "rms_norm_v2"));
        let lines = log_lines("layer `Misnamed`");
        assert_eq!(lines.len(), 1, "{}", logs());
        assert!(lines[0].contains("WARN") && lines[0].contains("__tvm_ffi_rms_norm_v2"), "{}", lines[0]);
    });
}

#[test]
fn damaged_kernels_fall_back_with_a_warning() {
    in_own_process("damaged_kernels_fall_back_with_a_warning", &[local_kernels()], || {
        let layer = Damaged::new(16);
        let x = HostTensor::new(values(16, 13), &[1, 16]).unwrap();
        layer.kernel_forward(&x).unwrap();
        assert_eq!(layer.forward_calls(), 1);
        let reason = fallback_of("Damaged", Mode::Inference);
        assert!(matches!(reason, FallbackReason::LoadFailed { .. }), "{reason:?}");
        let lines = log_lines("layer `Damaged`");
        assert_eq!(lines.len(), 1, "{}", logs());
        assert!(lines[0].contains("WARN") && lines[0].contains("failed to load"), "{}", lines[0]);
    });
}

#[test]
fn kernels_without_a_variant_for_this_machine_fall_back_with_the_trace() {
    in_own_process("kernels_without_a_variant_for_this_machine_fall_back_with_the_trace", &[local_kernels()], || {
        let layer = Foreign::new(16);
        let x = HostTensor::new(values(16, 14), &[1, 16]).unwrap();
        layer.kernel_forward(&x).unwrap();
        assert_eq!(layer.forward_calls(), 1);
        let reason = fallback_of("Foreign", Mode::Inference);
        let trace = reason.trace().expect("a selection trace");
        assert_eq!(trace.chosen(), None, "{trace}");
        assert_eq!(trace.rows.len(), 1, "{trace}");
        assert!(log_lines("built for").iter().any(|l| l.contains("CPUs, this machine is")), "{}", logs());
    });
}

#[test]
fn strict_mode_turns_fallbacks_into_errors() {
    let env = [local_kernels(), (kernels_runtime::env::STRICT, "1".to_owned())];
    in_own_process("strict_mode_turns_fallbacks_into_errors", &env, || {
        assert!(dispatch::is_strict());
        let layer = Unmapped::new(16);
        let x = HostTensor::new(values(16, 15), &[1, 16]).unwrap();
        let err = layer.kernel_forward(&x).unwrap_err();
        assert!(matches!(err, DispatchError::Strict { .. }), "{err}");
        assert!(
            err.to_string().contains("maps it to no kernel") && err.to_string().contains("KERNELS_STRICT"),
            "{err}"
        );
        assert_eq!(layer.forward_calls(), 0);
        // Layers with a kernel are unaffected.
        RmsNorm::new(16).kernel_forward(&x).unwrap();
        // The switch overrides the variable both ways.
        dispatch::set_strict(false);
        layer.kernel_forward(&x).unwrap();
        assert_eq!(layer.forward_calls(), 1);
        dispatch::set_strict(true);
        assert!(layer.kernel_forward(&x).is_err());
    });
}

#[test]
fn deterministic_mode_runs_only_kernels_declared_deterministic() {
    let env = [local_kernels(), (kernels_runtime::env::DETERMINISTIC, "1".to_owned())];
    in_own_process("deterministic_mode_runs_only_kernels_declared_deterministic", &env, || {
        assert!(dispatch::is_deterministic());
        let x = HostTensor::new(values(2 * 16, 24), &[2, 16]).unwrap();
        let declared = RmsNorm::new(16);
        declared.kernel_forward(&x).unwrap();
        assert_eq!(declared.forward_calls(), 0, "the declared kernel runs");
        let Choice::Kernel(k) = resolution("RMSNorm", Mode::Inference).choice() else { panic!("{}", report()) };
        assert!(k.deterministic);

        // The same kernel function, mapped without the declaration: the Rust forward.
        let undeclared = Undeclared::new(16);
        assert_eq!(undeclared.kernel_forward(&x).unwrap(), undeclared.forward(&x).unwrap());
        assert_eq!(undeclared.forward_calls(), 2);
        let reason = fallback_of("Undeclared", Mode::Inference);
        assert!(matches!(&reason, FallbackReason::NotDeterministic { kernels } if kernels == &["ops"]), "{reason:?}");
        assert!(!reason.is_failure());
        let text = reason.to_string();
        assert!(text.contains("KERNELS_DETERMINISTIC=1") && text.contains("`deterministic = true`"), "{text}");
        let lines = log_lines("layer `Undeclared`");
        assert_eq!(lines.len(), 1, "{}", logs());
        assert!(lines[0].contains("INFO") && lines[0].contains("deterministic"), "{}", lines[0]);
        assert!(report().to_string().contains("inference, deterministic"), "{}", report());

        // Strict mode refuses it: determinism was asked for and a kernel was meant to serve.
        dispatch::set_strict(true);
        let err = undeclared.kernel_forward(&x).unwrap_err();
        assert!(matches!(err, DispatchError::Strict { .. }), "{err}");
        assert!(declared.kernel_forward(&x).is_ok());
        dispatch::set_strict(false);

        // Turned off after the decisions were made: the next call decides again, and turning
        // it back on finds the earlier decision.
        dispatch::set_deterministic(false);
        undeclared.kernel_forward(&x).unwrap();
        assert_eq!(undeclared.forward_calls(), 2, "the kernel runs");
        assert!(matches!(resolution("Undeclared", Mode::Inference).choice(), Choice::Kernel(_)));
        dispatch::set_deterministic(true);
        undeclared.kernel_forward(&x).unwrap();
        assert_eq!(undeclared.forward_calls(), 3);
        let layer = report().layers.into_iter().find(|l| l.layer == "Undeclared").unwrap();
        assert_eq!(layer.resolutions.iter().map(|r| r.deterministic()).collect::<Vec<_>>(), [false, true]);
    });
}

#[test]
fn verify_mode_checks_first_calls_against_the_forward() {
    let env = [local_kernels(), (kernels_runtime::env::VERIFY, "1".to_owned())];
    in_own_process("verify_mode_checks_first_calls_against_the_forward", &env, || {
        let x = HostTensor::new(values(4 * 32, 30), &[4, 32]).unwrap();
        let norm = RmsNorm::new(32);
        for _ in 0..3 {
            norm.kernel_forward(&x).unwrap();
        }
        assert_eq!(norm.forward_calls(), 1, "only the first call runs the forward beside the kernel");
        let v = resolution("RMSNorm", Mode::Inference).verification();
        assert_eq!((v.calls, v.checks, v.beyond, v.failed), (3, 1, 0, 0), "{v}");
        assert!(v.max_abs < 1e-5 && v.is_clean(), "{v}");
        assert_eq!(v.last[0].elements, 4 * 32);

        // Two outputs, each compared; a `Vec` output too.
        let add = AddRmsNorm { weight: values(16, 31), eps: 1e-5 };
        let r = HostTensor::new(values(2 * 16, 32), &[2, 16]).unwrap();
        let x16 = HostTensor::new(values(2 * 16, 33), &[2, 16]).unwrap();
        add.kernel_forward(&x16, &r).unwrap();
        let v = resolution("AddRMSNorm", Mode::Inference).verification();
        assert_eq!((v.checks, v.last.len()), (1, 2), "{v}");
        assert!(v.is_clean(), "{v}");
        SiluAndMul.kernel_forward(&values(32, 34)).unwrap();
        assert_eq!(resolution("SiluAndMul", Mode::Inference).verification().checks, 1);

        // A kernel 0.25 away from its forward: beyond the f32 default, reported and logged, and
        // the kernel's result is still what the call returns (strict mode is off).
        let offset = Offset::new(32);
        let got = offset.kernel_forward(&x).unwrap();
        assert_close(got.data(), &rms_norm_ref(x.data(), &offset.weight, offset.eps));
        let v = resolution("Offset", Mode::Inference).verification();
        assert_eq!((v.checks, v.beyond), (1, 1), "{v}");
        assert_eq!(v.last[0].beyond, 4 * 32);
        assert!((v.max_abs - 0.25).abs() < 1e-5, "{v}");
        let (_, kernel, forward) = v.last[0].first_beyond.unwrap();
        assert!((forward - kernel - 0.25).abs() < 1e-5, "{v}");
        let lines = log_lines("layer `Offset`");
        assert!(
            lines.iter().any(|l| l.contains("WARN") && l.contains("verify mode") && l.contains("beyond")),
            "{}",
            logs()
        );
        let text = report().to_string();
        assert!(text.contains("1 beyond tolerance") && text.contains("atol 1e-5, rtol 1.3e-6"), "{text}");
        assert!(text.contains("verified: 1 checks within tolerance"), "{text}");

        // The mapping's own tolerance accepts it.
        OffsetTolerated::new(32).kernel_forward(&x).unwrap();
        let v = resolution("OffsetTolerated", Mode::Inference).verification();
        assert!(v.is_clean() && v.last[0].tolerance == Tolerance { atol: 0.5, rtol: 0.0 }, "{v}");
    });
}

#[test]
fn verify_mode_by_name_every_nth_call_and_at_run_time() {
    let env = [
        local_kernels(),
        (kernels_runtime::env::VERIFY, "RMSNorm".to_owned()),
        (kernels_runtime::env::VERIFY_EVERY, "2".to_owned()),
    ];
    in_own_process("verify_mode_by_name_every_nth_call_and_at_run_time", &env, || {
        let x = HostTensor::new(values(2 * 16, 35), &[2, 16]).unwrap();
        let norm = RmsNorm::new(16);
        for _ in 0..5 {
            norm.kernel_forward(&x).unwrap();
        }
        assert_eq!(norm.forward_calls(), 3, "calls 1, 3 and 5 are checked");
        let offset = Offset::new(16);
        offset.kernel_forward(&x).unwrap();
        assert_eq!(resolution("Offset", Mode::Inference).verification().checks, 0, "not named");

        dispatch::set_verify_for("Offset", dispatch::Verify::First);
        offset.kernel_forward(&x).unwrap();
        assert_eq!(resolution("Offset", Mode::Inference).verification().beyond, 1);
        // By kernel name: every layer of `ops`, every call.
        dispatch::set_verify_for("ops", dispatch::Verify::Every(std::num::NonZeroU64::new(1).unwrap()));
        let undeclared = Undeclared::new(16);
        undeclared.kernel_forward(&x).unwrap();
        undeclared.kernel_forward(&x).unwrap();
        assert_eq!(undeclared.forward_calls(), 2);
        // Turned off for every layer; names set at run time keep their own setting.
        dispatch::set_verify_for("ops", dispatch::Verify::Off);
        dispatch::set_verify(dispatch::Verify::Off);
        let before = norm.forward_calls();
        for _ in 0..3 {
            norm.kernel_forward(&x).unwrap();
        }
        assert_eq!(norm.forward_calls(), before, "KERNELS_VERIFY is overridden");
        offset.kernel_forward(&x).unwrap();
        assert_eq!(resolution("Offset", Mode::Inference).verification().checks, 1, "checked on its first call only");
    });
}

#[test]
fn strict_verify_mode_fails_a_kernel_beyond_tolerance() {
    let env = [
        local_kernels(),
        (kernels_runtime::env::VERIFY, "1".to_owned()),
        (kernels_runtime::env::STRICT, "1".to_owned()),
    ];
    in_own_process("strict_verify_mode_fails_a_kernel_beyond_tolerance", &env, || {
        let x = HostTensor::new(values(2 * 16, 36), &[2, 16]).unwrap();
        RmsNorm::new(16).kernel_forward(&x).unwrap();
        let err = Offset::new(16).kernel_forward(&x).unwrap_err();
        assert!(matches!(err, DispatchError::Verify { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("layer `Offset`")
                && text.contains("differs from the Rust forward")
                && text.contains("32 beyond"),
            "{text}"
        );
        OffsetTolerated::new(16).kernel_forward(&x).unwrap();
    });
}

/// The example kernels keep their `deterministic = true` promise: fifty calls on one input give
/// the same bits, also when the input is large enough for the kernel to split its rows over
/// its thread pool (from 256Ki elements for the normalisations, 64Ki for `silu_and_mul`, with
/// at least two pool threads), and the rows computed alone, on the calling thread, give the
/// same bits as well.
#[test]
fn the_example_kernels_give_bitwise_identical_outputs() {
    let env =
        [local_kernels(), (kernels_runtime::env::DETERMINISTIC, "1".to_owned()), ("RAYON_NUM_THREADS", "4".to_owned())];
    in_own_process("the_example_kernels_give_bitwise_identical_outputs", &env, || {
        fn bits(values: &[f32]) -> Vec<u32> {
            values.iter().map(|v| v.to_bits()).collect()
        }
        /// The first `rows` rows of `t`, as a tensor of their own.
        fn head(t: &HostTensor<f32>, rows: usize) -> HostTensor<f32> {
            let d = t.shape()[1];
            HostTensor::new(t.data()[..rows * d].to_vec(), &[rows, d]).unwrap()
        }
        const CALLS: usize = 50;
        for (rows, d) in [(3, 48), (512, 1024)] {
            let x = HostTensor::new(values(rows * d, 31), &[rows, d]).unwrap();
            let residual = HostTensor::new(values(rows * d, 32), &[rows, d]).unwrap();
            let gate_up = HostTensor::new(values(rows * 2 * d, 33), &[rows, 2 * d]).unwrap();
            let norm = RmsNorm::new(d);
            let add = AddRmsNorm { weight: values(d, 34), eps: 1e-5 };

            let norm_first = bits(norm.kernel_forward(&x).unwrap().data());
            let (out, sum) = add.kernel_forward(&x, &residual).unwrap();
            let add_first = (bits(out.data()), bits(sum.data()));
            let silu_first = bits(SiluAndMulRows.kernel_forward(&gate_up).unwrap().data());
            for call in 1..CALLS {
                assert!(
                    bits(norm.kernel_forward(&x).unwrap().data()) == norm_first,
                    "rms_norm {rows}x{d}, call {call}"
                );
                let (out, sum) = add.kernel_forward(&x, &residual).unwrap();
                assert!((bits(out.data()), bits(sum.data())) == add_first, "add_rms_norm {rows}x{d}, call {call}");
                let silu = bits(SiluAndMulRows.kernel_forward(&gate_up).unwrap().data());
                assert!(silu == silu_first, "silu_and_mul {rows}x{d}, call {call}");
            }
            assert_eq!(norm.forward_calls(), 0, "the kernels ran");

            // Two rows alone stay on the calling thread: the same bits as inside the split.
            let (out, sum) = add.kernel_forward(&head(&x, 2), &head(&residual, 2)).unwrap();
            assert!(bits(norm.kernel_forward(&head(&x, 2)).unwrap().data()) == norm_first[..2 * d]);
            assert!(bits(out.data()) == add_first.0[..2 * d] && bits(sum.data()) == add_first.1[..2 * d]);
            assert!(bits(SiluAndMulRows.kernel_forward(&head(&gate_up, 2)).unwrap().data()) == silu_first[..2 * d]);
        }
        for layer in ["RMSNorm", "AddRMSNorm", "SiluAndMul"] {
            assert!(matches!(resolution(layer, Mode::Inference).choice(), Choice::Kernel(_)), "{}", report());
        }
    });
}

#[test]
fn the_report_lists_every_layer_with_its_choice() {
    in_own_process("the_report_lists_every_layer_with_its_choice", &[local_kernels()], || {
        let x = HostTensor::new(values(16, 16), &[1, 16]).unwrap();
        RmsNorm::new(16).kernel_forward(&x).unwrap();
        Unmapped::new(16).kernel_forward(&x).unwrap();
        let text = report_with(&__KERNELS_REGISTRY).to_string();
        println!("{text}");
        let row = |layer: &str| text.lines().find(|l| l.starts_with(layer)).unwrap_or_default().to_owned();
        assert!(row("RMSNorm ").contains("RmsNorm") && row("RMSNorm ").contains("kernel ops::rms_norm"), "{text}");
        assert!(row("Unmapped").contains("Rust forward: kernels.toml maps it to no kernel"), "{text}");
        assert!(row("AddRMSNorm").contains("not called yet (mapped for cpu)"), "{text}");
        assert!(text.contains("variant selection for cpu"), "the decision trace is shown:\n{text}");
        // Without the registry named, it is known from the layers that dispatched through it.
        assert!(report().to_string().contains("not called yet"));
    });
}

#[test]
fn views_and_unsupported_devices() {
    in_own_process("views_and_unsupported_devices", &[local_kernels()], || {
        // A layer whose input is a raw view: CPU views dispatch to the CPU kernel.
        #[kernelize(
            layer = "SiluAndMul",
            forward = fn forward(&self, x: &TensorView<'_>) -> Result<Vec<f32>, DispatchError>,
            output = vec![0f32; x.numel() as usize / 2],
            args = (output, x),
        )]
        struct ViewSilu {
            calls: AtomicUsize,
        }
        impl ViewSilu {
            fn forward(&self, x: &TensorView<'_>) -> Result<Vec<f32>, DispatchError> {
                self.calls.fetch_add(1, Ordering::Relaxed);
                Ok(vec![0.0; x.numel() as usize / 2])
            }
        }
        let layer = ViewSilu { calls: AtomicUsize::new(0) };
        let data = values(8, 17);
        let view = TensorView::from_slice(&data, &[8]).unwrap();
        assert_close(&layer.kernel_forward(&view).unwrap(), &SiluAndMul.forward(&data).unwrap());
        assert_eq!(layer.calls.load(Ordering::Relaxed), 0);
        // Vulkan memory: no kernel variant targets it; the forward runs (it reads nothing).
        use kernels_runtime::ffi::{DLDataType, DLDevice, DLDeviceType};
        // SAFETY: the view is only inspected (the forward reads its shape), never dereferenced.
        let vulkan = unsafe {
            TensorView::from_raw_parts(
                std::ptr::null_mut(),
                DLDevice::new(DLDeviceType::VULKAN, 0),
                DLDataType::F32,
                &[8],
                None,
                0,
            )
        }
        .unwrap();
        assert_eq!(layer.kernel_forward(&vulkan).unwrap().len(), 4);
        assert_eq!(layer.calls.load(Ordering::Relaxed), 1);
        let r = report().find("SiluAndMul", Target::Unsupported(7), Mode::Inference).expect("decided");
        assert!(matches!(r.choice(), Choice::Fallback(FallbackReason::UnsupportedDevice { device_type: 7 })));
    });
}

/// A library whose initialiser waits until the file `$KERNELS_TEST_GATE` exists (at most a
/// minute), laid out as a Hub kernel for this machine; returns the repo root.
fn slow_kernel() -> std::path::PathBuf {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("slow-kernel");
    std::fs::create_dir_all(&dir).unwrap();
    let source = dir.join("slow.c");
    std::fs::write(
        &source,
        "#include <stdlib.h>\n#include <unistd.h>\n\
         __attribute__((constructor)) static void wait_for_gate(void) {\n\
           const char* gate = getenv(\"KERNELS_TEST_GATE\");\n\
           for (int i = 0; gate && i < 60000 && access(gate, F_OK) != 0; ++i) usleep(1000);\n\
         }\n",
    )
    .unwrap();
    let library = dir.join("libslow.so");
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".to_owned());
    let status = Command::new(cc).args(["-shared", "-fPIC", "-o"]).arg(&library).arg(&source).status().unwrap();
    assert!(status.success(), "cc failed");
    let root = dir.join("hub");
    let _ = std::fs::remove_dir_all(&root);
    let variant = format!("tvm-ffi01-cpu-{}-{}", CpuArch::current(), Os::current());
    example_kernel::lay_out(&std::fs::read(&library).unwrap(), &variant, &root);
    root
}

#[test]
fn a_slow_library_load_does_not_hold_up_the_report() {
    let gate = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("slow-kernel-gate");
    let env = if own_process::is_child() {
        vec![]
    } else {
        let _ = std::fs::remove_file(&gate);
        let (key, value) = local_kernels();
        let value = format!("{value}:{SLOW}={}", slow_kernel().display());
        vec![(key, value), ("KERNELS_TEST_GATE", gate.display().to_string())]
    };
    in_own_process("a_slow_library_load_does_not_hold_up_the_report", &env, || {
        let norm = RmsNorm::new(16);
        let x = HostTensor::new(values(16, 3), &[1, 16]).unwrap();
        norm.kernel_forward(&x).unwrap();
        assert!(matches!(resolution("RMSNorm", Mode::Inference).choice(), Choice::Kernel(_)));
        std::thread::scope(|s| {
            // glibc holds its loader lock while a library's initialiser runs, and takes it to
            // create a thread or to register a thread-local destructor: the reporting thread
            // and both threads' channel state exist before the load starts.
            let (go, wait) = std::sync::mpsc::channel::<()>();
            let (tx, rx) = std::sync::mpsc::channel();
            s.spawn(move || {
                tx.send(String::new()).unwrap();
                wait.recv().unwrap();
                tx.send(report().to_string()).unwrap();
            });
            assert_eq!(rx.recv().unwrap(), "", "the reporting thread is ready");
            let slow = s.spawn(|| {
                let layer = Slow::new(16);
                layer.kernel_forward(&x).unwrap();
                layer.forward_calls()
            });
            // Wait until the slow library is mapped, i.e. its initialiser is running.
            let library = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("slow-kernel/libslow.so");
            let id = format!("_rust_cpu_ops_{}", &example_kernel::sha256_hex(&std::fs::read(library).unwrap())[..7]);
            let start = std::time::Instant::now();
            while !std::fs::read_to_string("/proc/self/maps").unwrap().contains(&id) {
                assert!(start.elapsed().as_secs() < 30, "the slow library was never mapped");
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            go.send(()).unwrap();
            let answer = rx.recv_timeout(std::time::Duration::from_secs(10));
            std::fs::write(&gate, b"").unwrap();
            let report = answer.expect("report() waited for another layer's library load");
            assert!(report.contains("RMSNorm"), "{report}");
            assert_eq!(slow.join().unwrap(), 1, "the slow layer fell back to its forward");
        });
        assert!(matches!(fallback_of("Slow", Mode::Inference), FallbackReason::MissingSymbol { .. }));
    });
}
