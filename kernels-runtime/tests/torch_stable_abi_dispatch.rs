//! `#[kernelize]` layers served by a torch stable-ABI CPU kernel through the runtime's own
//! host, selected like any variant: the example kernels of `scripts/build-stable-abi-kernel.sh`
//! (`build-out/stable-abi-cpu`, a Hub layout with targets 2.9 and 2.11) named by
//! `LOCAL_KERNELS`, in a process without libtorch.
//!
//! With the `candle` feature, a candle CPU layer is served the same way.
//!
//! Each test runs in a process of its own (decisions are cached per process). Without the
//! builds the tests say so on stderr and pass, unless `KERNELS_TEST_REQUIRE_STABLE_ABI=1`.

use std::path::{Path, PathBuf};

use kernels_runtime::dispatch::{self, Choice, DispatchError, FallbackReason, HostTensor, Mode, Target, report};
use kernels_runtime::ffi::KernelError;
use kernels_runtime::kernelize;
use kernels_runtime::loader::Source;
use kernels_runtime::registry::{KernelEntry, LayerEntry, ModeSupport, Registry};
use kernels_runtime::variant::BackendKind;

const STABLE: &str = "kernels-test/stable-abi-cpu";
const UNSUPPORTED: &str = "kernels-test/stable-abi-cpu-unsupported";
/// A Hub layout whose 2.11 variant is the unsupported build and whose 2.9 variant is good.
const MIXED: &str = "kernels-test/stable-abi-cpu-mixed";

const fn cpu(layer: &'static str, kernel: &'static str, function: &'static str) -> LayerEntry {
    LayerEntry {
        layer,
        device: BackendKind::Cpu,
        kernel,
        function,
        capability: None,
        mode: ModeSupport::Inference,
        deterministic: false,
        tolerance: None,
    }
}

static __KERNELS_REGISTRY: Registry = Registry {
    kernels: &[
        KernelEntry { name: "stable", repo: STABLE, commit: None, variants: &[], cached: &[] },
        KernelEntry { name: "unsupported", repo: UNSUPPORTED, commit: None, variants: &[], cached: &[] },
        KernelEntry { name: "mixed", repo: MIXED, commit: None, variants: &[], cached: &[] },
    ],
    layers: &[
        cpu("BadShape", "stable", "silu_and_mul"),
        cpu("CandleSiluAndMul", "stable", "silu_and_mul"),
        cpu("GeluTanhAndMul", "stable", "gelu_tanh_and_mul"),
        cpu("Mixed", "mixed", "silu_and_mul"),
        cpu("Returning", "stable", "gelu_tanh"),
        cpu("SiluAndMul", "stable", "silu_and_mul"),
        cpu("TooFewArgs", "stable", "silu_and_mul"),
        cpu("Unsupported", "unsupported", "silu_and_mul"),
    ],
    tvm_ffi: None,
    cuda_runtime: None,
};

fn gated(x: &HostTensor<f32>, act: fn(f64) -> f64) -> HostTensor<f32> {
    let d = x.shape()[1] / 2;
    let out = x
        .data()
        .chunks(2 * d)
        .flat_map(|row| (0..d).map(move |i| (act(f64::from(row[i])) * f64::from(row[d + i])) as f32))
        .collect();
    HostTensor::new(out, &[x.shape()[0], d]).expect("half of x")
}

fn silu(x: f64) -> f64 {
    x / (1.0 + (-x).exp())
}

fn gelu_tanh(x: f64) -> f64 {
    0.5 * x * (1.0 + (0.797_884_560_802_865_4 * (x + 0.044715 * x * x * x)).tanh())
}

fn elementwise(x: &HostTensor<f32>, act: fn(f64) -> f64) -> HostTensor<f32> {
    HostTensor::new(x.data().iter().map(|&v| act(f64::from(v)) as f32).collect(), x.shape()).expect("x's shape")
}

/// Defines a gated layer `$ty` served by layer `$layer`, with output shape `$out` and kernel
/// arguments `$args`.
macro_rules! gated_layer {
    ($ty:ident, $layer:literal, $act:expr, |$x:ident| $out:expr, ($($args:tt)*)) => {
        layer!($ty, $layer, |$x| gated($x, $act), $out, ($($args)*));
    };
}

/// Defines a layer `$ty` served by layer `$layer`, whose Rust forward is `$forward`, with output
/// shape `$out` and kernel arguments `$args`.
macro_rules! layer {
    ($ty:ident, $layer:literal, |$x:ident| $forward:expr, $out:expr, ($($args:tt)*)) => {
        #[kernelize(
            layer = $layer,
            forward = fn forward(&self, $x: &HostTensor<f32>) -> Result<HostTensor<f32>, DispatchError>,
            output = HostTensor::zeros(&$out),
            args = ($($args)*),
        )]
        struct $ty {
            forward_calls: std::sync::atomic::AtomicUsize,
        }

        impl $ty {
            fn new() -> Self {
                $ty { forward_calls: std::sync::atomic::AtomicUsize::new(0) }
            }

            fn forward(&self, $x: &HostTensor<f32>) -> Result<HostTensor<f32>, DispatchError> {
                self.forward_calls.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Ok($forward)
            }

            #[allow(dead_code)]
            fn forward_calls(&self) -> usize {
                self.forward_calls.load(std::sync::atomic::Ordering::Relaxed)
            }
        }
    };
}

gated_layer!(SiluAndMul, "SiluAndMul", silu, |x| [x.shape()[0], x.shape()[1] / 2], (output, x));
gated_layer!(GeluTanhAndMul, "GeluTanhAndMul", gelu_tanh, |x| [x.shape()[0], x.shape()[1] / 2], (output, x));
// `out` as large as `input`: the kernel refuses it.
gated_layer!(BadShape, "BadShape", silu, |x| [x.shape()[0], x.shape()[1]], (output, x));
// One argument where the schema has two.
gated_layer!(TooFewArgs, "TooFewArgs", silu, |x| [x.shape()[0], x.shape()[1] / 2], (output));
// `gelu_tanh(Tensor input) -> Tensor` allocates its result through the dispatcher
// (`aten::empty_like`) and returns it; the call passes the output it is copied into first.
layer!(Returning, "Returning", |x| elementwise(x, gelu_tanh), [x.shape()[0], x.shape()[1]], (output, x));
// The result's shape is not the output's.
layer!(ReturningBadShape, "Returning", |x| elementwise(x, gelu_tanh), [x.shape()[0], x.shape()[1] / 2], (output, x));
gated_layer!(Unsupported, "Unsupported", silu, |x| [x.shape()[0], x.shape()[1] / 2], (output, x));
gated_layer!(Mixed, "Mixed", silu, |x| [x.shape()[0], x.shape()[1] / 2], (output, x));

// ---- helpers ------------------------------------------------------------------------------

fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("kernels-runtime sits in the workspace")
}

/// The example builds, or `None` (with a note) when they are missing.
fn builds() -> Option<(PathBuf, PathBuf)> {
    let stable = workspace().join("build-out/stable-abi-cpu");
    let unsupported = workspace().join("build-out/stable-abi-cpu-unsupported");
    let variant = format!("torch-stable-abi211-cpu-{}-linux", std::env::consts::ARCH);
    if stable.join("build").join(&variant).is_dir() && unsupported.join("build").is_dir() {
        return Some((stable, unsupported));
    }
    let what = format!("{} is missing: run `scripts/build-stable-abi-kernel.sh`", stable.display());
    if std::env::var("KERNELS_TEST_REQUIRE_STABLE_ABI").as_deref() == Ok("1") {
        panic!("KERNELS_TEST_REQUIRE_STABLE_ABI=1 but {what}");
    }
    eprintln!("SKIPPED: {what}");
    None
}

/// Deterministic values in [-4, 4).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 8.0 - 4.0
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

fn resolution(layer: &str) -> &'static dispatch::Resolution {
    report().find(layer, CPU, Mode::Inference).unwrap_or_else(|| panic!("no decision for {layer}:\n{}", report()))
}

fn fallback_of(layer: &str) -> FallbackReason {
    match resolution(layer).choice() {
        Choice::Fallback(reason) => reason.clone(),
        Choice::Kernel(k) => panic!("{layer} uses kernel {k:?}"),
    }
}

/// Libraries mapped into this process whose file name is libtorch's or libc10's.
fn mapped_libtorch() -> Vec<String> {
    let maps = std::fs::read_to_string("/proc/self/maps").expect("/proc/self/maps is readable");
    let mut found: Vec<String> = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .filter(|p| {
            let name = p.rsplit('/').next().unwrap_or(p);
            name.starts_with("libtorch") || name.starts_with("libc10")
        })
        .map(str::to_owned)
        .collect();
    found.dedup();
    found
}

#[path = "support/own_process.rs"]
mod own_process;

use own_process::in_own_process;

fn env(stable: &Path, unsupported: &Path, strict: bool) -> Vec<(&'static str, String)> {
    let mut env = vec![(
        kernels_runtime::env::LOCAL_KERNELS,
        format!("{STABLE}={}:{UNSUPPORTED}={}", stable.display(), unsupported.display()),
    )];
    if strict {
        env.push((kernels_runtime::env::STRICT, "1".to_owned()));
    }
    env
}

// ---- tests --------------------------------------------------------------------------------

#[test]
fn a_kernelized_layer_runs_the_stable_abi_kernel_in_strict_mode() {
    let Some((stable, unsupported)) = builds() else { return };
    let test = "a_kernelized_layer_runs_the_stable_abi_kernel_in_strict_mode";
    in_own_process(test, &env(&stable, &unsupported, true), || {
        assert!(mapped_libtorch().is_empty(), "{:?}", mapped_libtorch());
        let layer = SiluAndMul::new();
        let x = HostTensor::new(values(5 * 64, 1), &[5, 64]).unwrap();
        let by_kernel = layer.kernel_forward(&x).unwrap_or_else(|e| panic!("{e}\n{}", report()));
        assert_eq!(layer.forward_calls(), 0, "the Rust forward was not called");
        assert_eq!(by_kernel.shape(), [5, 32]);
        assert_close(by_kernel.data(), gated(&x, silu).data());

        let Choice::Kernel(k) = resolution("SiluAndMul").choice() else { panic!("{}", report()) };
        let chosen = format!("torch-stable-abi211-cpu-{}-linux", std::env::consts::ARCH);
        assert_eq!((k.kernel.as_str(), k.function.as_str(), k.source), ("stable", "silu_and_mul", Source::Local));
        assert_eq!(k.variant, chosen);
        assert_eq!(k.trace.chosen(), Some(chosen.as_str()), "{}", k.trace);
        let older = format!("torch-stable-abi29-cpu-{}-linux", std::env::consts::ARCH);
        assert!(
            matches!(k.trace.verdict(&older), Some(kernels_runtime::select::Verdict::Accepted { rank: 2, .. })),
            "{}",
            k.trace
        );
        eprintln!("{}", k.trace);

        // A second op of the same library, and many calls.
        let gelu = GeluTanhAndMul::new();
        for seed in 0..20 {
            let x = HostTensor::new(values(3 * 16, seed), &[3, 16]).unwrap();
            assert_close(gelu.kernel_forward(&x).unwrap().data(), gated(&x, gelu_tanh).data());
        }
        assert_eq!(gelu.forward_calls(), 0);

        // An op that returns its result: copied into the layer's output.
        let returning = Returning::new();
        for seed in 0..20 {
            let x = HostTensor::new(values(3 * 16, 100 + seed), &[3, 16]).unwrap();
            let y = returning.kernel_forward(&x).unwrap_or_else(|e| panic!("{e}\n{}", report()));
            assert_close(y.data(), elementwise(&x, gelu_tanh).data());
        }
        assert_eq!(returning.forward_calls(), 0);
        let Choice::Kernel(k) = resolution("Returning").choice() else { panic!("{}", report()) };
        assert_eq!(k.function, "gelu_tanh");
        // Still no real libtorch: the kernel's libtorch sonames are the host's stand-ins.
        assert!(mapped_libtorch().is_empty(), "{:?}", mapped_libtorch());
    });
}

#[test]
fn kernel_and_signature_errors_are_errors_not_fallbacks() {
    let Some((stable, unsupported)) = builds() else { return };
    let test = "kernel_and_signature_errors_are_errors_not_fallbacks";
    in_own_process(test, &env(&stable, &unsupported, false), || {
        let x = HostTensor::new(values(2 * 8, 2), &[2, 8]).unwrap();
        let layer = BadShape::new();
        let err = layer.kernel_forward(&x).unwrap_err();
        let DispatchError::Kernel { source, .. } = &err else { panic!("{err:?}") };
        let Some((kind, message)) = source.raised() else { panic!("{source:?}") };
        assert_eq!(kind, "RuntimeError");
        assert!(message.contains("the last dimension of `input` (8) must be twice that of `out` (8)"), "{message}");
        assert_eq!(layer.forward_calls(), 0, "a kernel error is not a fallback");

        let layer = TooFewArgs::new();
        let err = layer.kernel_forward(&x).unwrap_err();
        let DispatchError::Kernel { source, .. } = &err else { panic!("{err:?}") };
        assert!(matches!(**source, KernelError::Signature { .. }), "{source:?}");
        assert!(
            source
                .to_string()
                .contains("`silu_and_mul(Tensor! out, Tensor input) -> ()` takes 2 arguments, the call passes 1"),
            "{source}"
        );

        // A returned tensor of another shape than the output's, and no output for it.
        let err = ReturningBadShape::new().kernel_forward(&x).unwrap_err().to_string();
        assert!(err.contains("result 1: the op returned shape [2, 8], the output has [2, 4]"), "{err}");
        // (`#[kernelize]` refuses `args` without `output` at compile time; a direct call can omit it.)
        let platform = kernels_runtime::platform::Platform::detect();
        let request = kernels_runtime::select::Request::cpu();
        let (kernel, _) = kernels_runtime::loader::load_from_dir("stable", &stable, &platform, request).unwrap();
        let gelu = kernel.function("gelu_tanh").unwrap();
        let input = [1f32; 4];
        let view = kernels_runtime::ffi::TensorView::from_slice(&input, &[4]).unwrap();
        // SAFETY: the call is refused before anything runs (no output for the result).
        let err = unsafe { gelu.call(&[kernels_runtime::ffi::Arg::from(&view)]) }.unwrap_err().to_string();
        assert!(
            err.contains(
                "`gelu_tanh(Tensor input) -> Tensor` returns 1 tensor(s): the call passes as many outputs first"
            ),
            "{err}"
        );
        // A read-only output is refused too.
        // SAFETY: as above.
        let err = unsafe { gelu.call(&[(&view).into(), (&view).into()]) }.unwrap_err().to_string();
        assert!(err.contains("argument 1 of the call must be a writable tensor"), "{err}");

        // After errors the op still runs.
        let ok = SiluAndMul::new().kernel_forward(&x).unwrap();
        assert_close(ok.data(), gated(&x, silu).data());
    });
}

#[test]
fn unservable_libraries_and_ops_fall_back_with_the_reason() {
    let Some((stable, unsupported)) = builds() else { return };
    let test = "unservable_libraries_and_ops_fall_back_with_the_reason";
    in_own_process(test, &env(&stable, &unsupported, false), || {
        let x = HostTensor::new(values(2 * 8, 3), &[2, 8]).unwrap();
        let layer = Unsupported::new();
        assert_close(layer.kernel_forward(&x).unwrap().data(), gated(&x, silu).data());
        assert_eq!(layer.forward_calls(), 1, "the Rust forward ran");
        let reason = fallback_of("Unsupported").to_string();
        eprintln!("Unsupported: {reason}");
        assert!(reason.contains("calls `aten::matmul`, which this runtime does not implement"), "{reason}");
        assert!(reason.contains("cannot be served without libtorch"), "{reason}");

        assert!(mapped_libtorch().is_empty(), "{:?}", mapped_libtorch());
    });
}

/// Copies the files of variant directory `from` into `to`.
fn copy_variant(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

#[test]
fn a_refused_variant_gives_way_to_the_next_accepted_one() {
    let Some((stable, unsupported)) = builds() else { return };
    let arch = std::env::consts::ARCH;
    let (newer, older) =
        (format!("torch-stable-abi211-cpu-{arch}-linux"), format!("torch-stable-abi29-cpu-{arch}-linux"));
    // Made by the parent, kept until the child is done; the child finds it in LOCAL_KERNELS.
    let mixed = tempfile::tempdir().unwrap();
    if !own_process::is_child() {
        copy_variant(&unsupported.join("build").join(&newer), &mixed.path().join("build").join(&newer));
        copy_variant(&stable.join("build").join(&older), &mixed.path().join("build").join(&older));
    }
    let mut env = env(&stable, &unsupported, true);
    env[0].1.push_str(&format!(":{MIXED}={}", mixed.path().display()));
    let test = "a_refused_variant_gives_way_to_the_next_accepted_one";
    in_own_process(test, &env, || {
        let layer = Mixed::new();
        let x = HostTensor::new(values(4 * 12, 6), &[4, 12]).unwrap();
        let by_kernel = layer.kernel_forward(&x).unwrap_or_else(|e| panic!("{e}\n{}", report()));
        assert_eq!(layer.forward_calls(), 0, "the Rust forward was not called");
        assert_close(by_kernel.data(), gated(&x, silu).data());

        let Choice::Kernel(k) = resolution("Mixed").choice() else { panic!("{}", report()) };
        eprintln!("{}", k.trace);
        assert_eq!((k.kernel.as_str(), k.variant.as_str(), k.source), ("mixed", older.as_str(), Source::Local));
        assert_eq!(k.trace.chosen(), Some(older.as_str()), "{}", k.trace);
        let Some(kernels_runtime::select::Verdict::Rejected(why)) = k.trace.verdict(&newer) else {
            panic!("{newer} is not rejected:\n{}", k.trace)
        };
        let why = why.to_string();
        assert!(why.starts_with("refused before loading: "), "{why}");
        assert!(why.contains("calls `aten::matmul`, which this runtime does not implement"), "{why}");
        let shown = k.trace.to_string();
        assert!(shown.contains("rejected  refused before loading"), "{shown}");
        assert!(shown.ends_with(&format!("=> {older}")), "{shown}");
        assert!(mapped_libtorch().is_empty(), "{:?}", mapped_libtorch());
    });
}

#[test]
fn a_process_that_already_holds_libtorch_is_refused() {
    let Some((stable, unsupported)) = builds() else { return };
    // Anything with libtorch's soname counts: the stand-in of `scripts/build-torch-host.sh`
    // stands in for a real libtorch loaded by another library (e.g. tch).
    let other = workspace().join("target/torch-host/libtorch_cpu.so");
    if !other.is_file() {
        eprintln!("SKIPPED: {} is missing: run `scripts/build-torch-host.sh`", other.display());
        return;
    }
    let test = "a_process_that_already_holds_libtorch_is_refused";
    in_own_process(test, &env(&stable, &unsupported, false), || {
        // SAFETY: an empty library whose only dependency is the host of target/torch-host,
        // whose initialisers set up nothing but its own state.
        let held = unsafe { libloading::os::unix::Library::open(Some(&other), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        let _held = held.unwrap_or_else(|e| panic!("{e}"));
        let x = HostTensor::new(values(2 * 8, 4), &[2, 8]).unwrap();
        let layer = SiluAndMul::new();
        assert_close(layer.kernel_forward(&x).unwrap().data(), gated(&x, silu).data());
        assert_eq!(layer.forward_calls(), 1, "the Rust forward ran");
        let reason = fallback_of("SiluAndMul").to_string();
        assert!(reason.contains("a real libtorch (`libtorch_cpu.so`) is already loaded in this process"), "{reason}");
    });
}

/// The embedded form of a variant directory's library, as the build script would generate it.
fn embedded(dir: &Path) -> kernels_runtime::registry::EmbeddedVariant {
    let so = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.to_string_lossy().ends_with(".abi3.so"))
        .unwrap_or_else(|| panic!("{}: no .abi3.so", dir.display()));
    let bytes: &'static [u8] = Box::leak(std::fs::read(&so).unwrap().into_boxed_slice());
    let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
    kernels_runtime::registry::EmbeddedVariant {
        variant: leak(dir.file_name().unwrap().to_string_lossy().into_owned()),
        archs: &[],
        library: kernels_runtime::registry::EmbeddedFile {
            path: leak(so.file_name().unwrap().to_string_lossy().into_owned()),
            sha256: leak(kernels_runtime::digest::sha256_hex(bytes)),
            bytes,
        },
    }
}

#[test]
fn embedded_stable_abi_variants_load_from_sealed_memory() {
    let Some((stable, unsupported)) = builds() else { return };
    let test = "embedded_stable_abi_variants_load_from_sealed_memory";
    in_own_process(test, &env(&stable, &unsupported, false), || {
        use kernels_runtime::ffi::{Arg, TensorView};
        use kernels_runtime::loader::{self, LoadError};
        use kernels_runtime::platform::Platform;
        use kernels_runtime::select::Request;

        let arch = std::env::consts::ARCH;
        let variants: Vec<_> = ["29", "211"]
            .iter()
            .map(|t| embedded(&stable.join(format!("build/torch-stable-abi{t}-cpu-{arch}-linux"))))
            .collect();
        let platform = Platform::detect();
        let (loaded, trace) = loader::select_embedded("stable", &variants, &platform, Request::cpu()).unwrap();
        assert_eq!(loaded.source(), Source::Embedded);
        assert_eq!(trace.chosen(), Some(format!("torch-stable-abi211-cpu-{arch}-linux").as_str()), "{trace}");
        let function = loaded.function("silu_and_mul").unwrap();
        assert!(function.is_stable_abi());
        assert!(function.symbol().ends_with("::silu_and_mul"), "{}", function.symbol());

        let x = values(3 * 10, 5);
        let mut out = vec![0f32; 3 * 5];
        let x_view = TensorView::from_slice(&x, &[3, 10]).unwrap();
        let out_view = TensorView::from_slice_mut(&mut out, &[3, 5]).unwrap();
        // SAFETY: silu_and_mul(out, input) writes only `out`, which nothing else touches.
        unsafe { function.call(&[Arg::from(&out_view), Arg::from(&x_view)]) }.unwrap();
        // A scalar where the schema has a tensor: a located error, before the kernel runs.
        // SAFETY: refused before any call.
        let err = unsafe { function.call(&[Arg::from(&out_view), Arg::Int(3)]) }.unwrap_err();
        assert!(
            err.to_string().contains("argument 2 (`input`: `Tensor`) of `silu_and_mul(Tensor! out, Tensor input) -> ()` must be a tensor, the call passes an int"),
            "{err}"
        );

        // A read-only view where the op writes: refused too.
        // SAFETY: refused before any call.
        let err = unsafe { function.call(&[Arg::from(&x_view), Arg::from(&x_view)]) }.unwrap_err();
        assert!(
            err.to_string().contains("argument 1 (`out`: `Tensor!`) of `silu_and_mul(Tensor! out, Tensor input) -> ()` must be a writable tensor (the op writes it), the call passes a read-only tensor"),
            "{err}"
        );

        let x_tensor = HostTensor::new(x.clone(), &[3, 10]).unwrap();
        assert_close(&out, gated(&x_tensor, silu).data());

        let refused = [embedded(&unsupported.join(format!("build/torch-stable-abi211-cpu-{arch}-linux")))];
        let err = loader::select_embedded("unsupported", &refused, &platform, Request::cpu()).unwrap_err();
        assert!(matches!(err, LoadError::StableAbiUnsupported(_)), "{err:?}");
        assert!(err.to_string().contains("calls `aten::matmul`, which this runtime does not implement"), "{err}");

        // Refused first, then the next accepted variant loads; the trace says why.
        let mixed = [
            embedded(&unsupported.join(format!("build/torch-stable-abi211-cpu-{arch}-linux"))),
            embedded(&stable.join(format!("build/torch-stable-abi29-cpu-{arch}-linux"))),
        ];
        let (loaded, trace) = loader::select_embedded("mixed", &mixed, &platform, Request::cpu()).unwrap();
        assert_eq!(loaded.variant(), mixed[1].variant);
        assert_eq!(trace.chosen(), Some(mixed[1].variant), "{trace}");
        let refused = trace.verdict(mixed[0].variant).map(|v| format!("{v:?}")).unwrap_or_default();
        assert!(refused.contains("Refused") && refused.contains("aten::matmul"), "{trace}");
        assert!(mapped_libtorch().is_empty(), "{:?}", mapped_libtorch());
    });
}

#[cfg(feature = "candle")]
mod on_candle {
    use candle_core::{D, Device, Tensor};
    use kernels_runtime::candle::output;

    use super::*;

    #[kernelize(
        layer = "CandleSiluAndMul",
        forward = fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor>,
        output = {
            let (rows, cols) = x.dims2()?;
            output((rows, cols / 2), x.dtype(), x.device())?
        },
        args = (output, x),
    )]
    struct CandleSiluAndMul;

    impl CandleSiluAndMul {
        fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
            let d = x.dim(D::Minus1)? / 2;
            let g = x.narrow(D::Minus1, 0, d)?;
            (&g / (g.neg()?.exp()? + 1.0)?)? * x.narrow(D::Minus1, d, d)?
        }
    }

    #[test]
    fn a_candle_layer_runs_the_stable_abi_kernel() {
        let Some((stable, unsupported)) = builds() else { return };
        let test = "on_candle::a_candle_layer_runs_the_stable_abi_kernel";
        in_own_process(test, &env(&stable, &unsupported, true), || {
            let x = Tensor::from_vec(values(4 * 32, 9), (4, 32), &Device::Cpu).unwrap();
            let by_kernel = CandleSiluAndMul.kernel_forward(&x).unwrap();
            let by_candle = CandleSiluAndMul.forward(&x).unwrap();
            assert_eq!(by_kernel.dims(), [4, 16]);
            let (k, c) = (by_kernel.flatten_all().unwrap(), by_candle.flatten_all().unwrap());
            assert_close(&k.to_vec1::<f32>().unwrap(), &c.to_vec1::<f32>().unwrap());
            let Choice::Kernel(k) = resolution("CandleSiluAndMul").choice() else { panic!("{}", report()) };
            assert!(k.variant.starts_with("torch-stable-abi211-cpu-"), "{}", k.variant);
            assert!(mapped_libtorch().is_empty(), "{:?}", mapped_libtorch());
        });
    }
}
