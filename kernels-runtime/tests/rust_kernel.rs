//! Builds the example Rust CPU kernels (`examples/kernels/rust-cpu`) as a real cdylib, loads it
//! and calls it through `KernelFunction`, comparing with plain Rust references.
//!
//! Tolerances: `float32` results must be within `1e-5 · |ref| + 1e-6` of an `f64` reference;
//! `bfloat16` within 2 bf16 ulps (`2^-7 · |ref|`) and `float16` within 2 f16 ulps (`2^-10 · |ref|`)
//! of the `f64` reference rounded once, plus the smallest normal of the type.

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::PathBuf;
use std::sync::OnceLock;

use half::{bf16, f16};
use kernels_runtime::ffi::{
    Arg, DLDataType, DLDevice, KernelError, KernelFunction, ResolveError, Stream, TensorView, needs_tvm_ffi,
};

// ---------------------------------------------------------------------------------------------
// Allocation counting, to check that calls do not allocate.
// ---------------------------------------------------------------------------------------------

struct CountingAllocator;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator; the counter is a const-initialised thread-local
// without destructor, so touching it cannot allocate or recurse.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: forwarded contract.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded contract.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: forwarded contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

fn allocations_during(f: impl FnOnce()) -> usize {
    let before = ALLOCATIONS.with(Cell::get);
    f();
    ALLOCATIONS.with(Cell::get) - before
}

// ---------------------------------------------------------------------------------------------
// Building and loading the kernel library.
// ---------------------------------------------------------------------------------------------

use support::build_example;

struct Kernels {
    path: PathBuf,
    library: &'static libloading::Library,
}

fn kernels() -> &'static Kernels {
    static KERNELS: OnceLock<Kernels> = OnceLock::new();
    KERNELS.get_or_init(|| {
        let path = build_example();
        // SAFETY: the example library has no initialisers with preconditions.
        let library = unsafe { libloading::Library::new(&path) }.expect("load the example kernels");
        Kernels { path, library: Box::leak(Box::new(library)) }
    })
}

fn function(name: &str) -> KernelFunction {
    let k = kernels();
    // SAFETY: the example library exports the TVM-FFI ABI.
    unsafe { KernelFunction::resolve(k.library, &k.path, name) }.expect("resolve")
}

/// Calls `f` with `args`.
fn call(f: &KernelFunction, args: &[Arg<'_>]) -> Result<(), KernelError> {
    // SAFETY: every test passes outputs made with `from_slice_mut` that nothing else touches, and
    // inputs the kernels only read.
    unsafe { f.call(args) }
}

// ---------------------------------------------------------------------------------------------
// Inputs and references.
// ---------------------------------------------------------------------------------------------

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

fn silu_and_mul_ref(x: &[f64], d: usize) -> Vec<f64> {
    x.chunks(2 * d).flat_map(|row| (0..d).map(move |j| row[j] / (1.0 + (-row[j]).exp()) * row[d + j])).collect()
}

fn rms_norm_ref(x: &[f64], w: &[f64], eps: f64) -> Vec<f64> {
    let d = w.len();
    x.chunks(d)
        .flat_map(|row| {
            let inv = 1.0 / (row.iter().map(|v| v * v).sum::<f64>() / d as f64 + eps).sqrt();
            row.iter().zip(w).map(move |(v, w)| v * inv * w)
        })
        .collect()
}

/// An element type under test, with its tolerance.
trait Elem: kernels_runtime::ffi::Element + Default {
    fn from_f32(v: f32) -> Self;
    fn to_f64(self) -> f64;
    /// Relative tolerance and absolute floor.
    const TOLERANCE: (f64, f64);
}

impl Elem for f32 {
    fn from_f32(v: f32) -> Self {
        v
    }
    fn to_f64(self) -> f64 {
        f64::from(self)
    }
    const TOLERANCE: (f64, f64) = (1e-5, 1e-6);
}

impl Elem for bf16 {
    fn from_f32(v: f32) -> Self {
        bf16::from_f32(v)
    }
    fn to_f64(self) -> f64 {
        f64::from(self.to_f32())
    }
    const TOLERANCE: (f64, f64) = (1.0 / 128.0, 1.2e-38);
}

impl Elem for f16 {
    fn from_f32(v: f32) -> Self {
        f16::from_f32(v)
    }
    fn to_f64(self) -> f64 {
        f64::from(self.to_f32())
    }
    const TOLERANCE: (f64, f64) = (1.0 / 1024.0, 6.2e-5);
}

fn convert<T: Elem>(v: &[f32]) -> Vec<T> {
    v.iter().map(|&v| T::from_f32(v)).collect()
}

fn widen<T: Elem>(v: &[T]) -> Vec<f64> {
    v.iter().map(|&v| v.to_f64()).collect()
}

#[track_caller]
fn assert_close<T: Elem>(got: &[T], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    let (rel, abs) = T::TOLERANCE;
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let g = g.to_f64();
        assert!((g - w).abs() <= rel * w.abs() + abs, "{what}: element {i}: got {g}, expected {w}");
    }
}

// ---------------------------------------------------------------------------------------------
// Results.
// ---------------------------------------------------------------------------------------------

fn check_silu_and_mul<T: Elem>(rows: usize, d: usize) {
    let f = function("silu_and_mul");
    let x: Vec<T> = convert(&values(rows * 2 * d, (rows * d) as u64));
    let mut out = vec![T::default(); rows * d];
    let xv = TensorView::from_slice(&x, &[rows, 2 * d]).unwrap();
    let ov = TensorView::from_slice_mut(&mut out, &[rows, d]).unwrap();
    call(&f, &[Arg::from(&ov), Arg::from(&xv)]).unwrap();
    assert_close(&out, &silu_and_mul_ref(&widen(&x), d), &format!("silu_and_mul {} [{rows}, {d}]", T::DTYPE));
}

#[test]
fn silu_and_mul_matches_the_reference() {
    // Small rows, rows longer than a chunk with a remainder, and a large input that is split
    // over threads (from 64Ki elements; 256Ki for the normalisations below).
    for (rows, d) in [(1, 1), (3, 7), (5, 1000), (2, 4096), (64, 2048)] {
        check_silu_and_mul::<f32>(rows, d);
    }
    check_silu_and_mul::<bf16>(5, 1000);
    check_silu_and_mul::<f16>(5, 1000);
    check_silu_and_mul::<bf16>(64, 2048);

    // Leading dimensions of any rank; extreme values stay finite and exact in sign.
    let f = function("silu_and_mul");
    let x = [-100.0f32, 0.0, 100.0, f32::NAN, 2.0, 3.0, 4.0, 5.0];
    let mut out = [0f32; 4];
    let xv = TensorView::from_slice(&x, &[1, 1, 8]).unwrap();
    let ov = TensorView::from_slice_mut(&mut out, &[1, 1, 4]).unwrap();
    call(&f, &[Arg::from(&ov), Arg::from(&xv)]).unwrap();
    assert!(out[0].abs() < 1e-30 && out[1] == 0.0 && (out[2] - 400.0).abs() < 1e-3 && out[3].is_nan(), "{out:?}");
}

fn check_rms_norm<T: Elem>(rows: usize, d: usize, eps: f64) {
    let f = function("rms_norm");
    let x: Vec<T> = convert(&values(rows * d, 7 + d as u64));
    let w: Vec<T> = convert(&values(d, 11));
    let mut out = vec![T::default(); rows * d];
    let xv = TensorView::from_slice(&x, &[rows, d]).unwrap();
    let wv = TensorView::from_slice(&w, &[d]).unwrap();
    let ov = TensorView::from_slice_mut(&mut out, &[rows, d]).unwrap();
    call(&f, &[Arg::from(&ov), Arg::from(&xv), Arg::from(&wv), Arg::Float(eps)]).unwrap();
    assert_close(&out, &rms_norm_ref(&widen(&x), &widen(&w), eps), &format!("rms_norm {} [{rows}, {d}]", T::DTYPE));
}

#[test]
fn rms_norm_matches_the_reference() {
    for (rows, d) in [(1, 1), (4, 7), (3, 1000), (2, 4096), (300, 1024)] {
        check_rms_norm::<f32>(rows, d, 1e-6);
    }
    check_rms_norm::<bf16>(3, 1000, 1e-5);
    check_rms_norm::<f16>(3, 1000, 1e-5);
    check_rms_norm::<bf16>(300, 1024, 1e-5);

    // eps as an integer or f32 converts; a constant row normalises to the weight.
    let f = function("rms_norm");
    let x = [3.0f32; 4];
    let w = [1.0f32, 2.0, 3.0, 4.0];
    let mut out = [0f32; 4];
    let (xv, wv) = (TensorView::from_slice(&x, &[4]).unwrap(), TensorView::from_slice(&w, &[4]).unwrap());
    let ov = TensorView::from_slice_mut(&mut out, &[4]).unwrap();
    call(&f, &[Arg::from(&ov), Arg::from(&xv), Arg::from(&wv), Arg::from(0i64)]).unwrap();
    assert_eq!(out, w);
}

fn check_add_rms_norm<T: Elem>(rows: usize, d: usize) {
    let f = function("add_rms_norm");
    let eps = 1e-6;
    let x: Vec<T> = convert(&values(rows * d, 3));
    let r: Vec<T> = convert(&values(rows * d, 5));
    let w: Vec<T> = convert(&values(d, 13));
    let (mut out, mut r_out) = (vec![T::default(); rows * d], vec![T::default(); rows * d]);
    let shape = [rows, d];
    let (xv, rv) = (TensorView::from_slice(&x, &shape).unwrap(), TensorView::from_slice(&r, &shape).unwrap());
    let wv = TensorView::from_slice(&w, &[d]).unwrap();
    let ov = TensorView::from_slice_mut(&mut out, &shape).unwrap();
    let rov = TensorView::from_slice_mut(&mut r_out, &shape).unwrap();
    let args = [Arg::from(&ov), Arg::from(&rov), Arg::from(&xv), Arg::from(&rv), Arg::from(&wv), Arg::Float(eps)];
    call(&f, &args).unwrap();
    let sum: Vec<f64> = widen(&x).iter().zip(widen(&r)).map(|(a, b)| a + b).collect();
    assert_close(&r_out, &sum, &format!("add_rms_norm residual_out {}", T::DTYPE));
    // The normalisation is of the residual as stored (rounded to T), as fused kernels do.
    assert_close(&out, &rms_norm_ref(&widen(&r_out), &widen(&w), eps), &format!("add_rms_norm out {}", T::DTYPE));
}

#[test]
fn add_rms_norm_matches_the_reference() {
    check_add_rms_norm::<f32>(3, 1000);
    check_add_rms_norm::<f32>(300, 1024);
    check_add_rms_norm::<bf16>(3, 1000);
    check_add_rms_norm::<f16>(7, 64);
}

#[test]
fn empty_tensors_are_fine() {
    let f = function("rms_norm");
    let (x, w) = ([0f32; 0], [1f32; 8]);
    let mut out = [0f32; 0];
    let xv = TensorView::from_slice(&x, &[0, 8]).unwrap();
    let wv = TensorView::from_slice(&w, &[8]).unwrap();
    let ov = TensorView::from_slice_mut(&mut out, &[0, 8]).unwrap();
    call(&f, &[Arg::from(&ov), Arg::from(&xv), Arg::from(&wv), Arg::Float(1e-6)]).unwrap();
}

// ---------------------------------------------------------------------------------------------
// Errors.
// ---------------------------------------------------------------------------------------------

#[track_caller]
fn expect_raised(result: Result<(), KernelError>, kind: &str, message: &str) {
    let err = result.expect_err("the kernel must refuse");
    assert_eq!(err.raised(), Some((kind, message)), "{err:?}");
}

#[test]
fn a_wrong_dtype_returns_the_kernels_message() {
    let f = function("rms_norm");
    let x = [1i64, 2, 3, 4];
    let w = [1f32; 4];
    let mut out = [0f32; 4];
    let xv = TensorView::from_slice(&x, &[4]).unwrap();
    let wv = TensorView::from_slice(&w, &[4]).unwrap();
    let ov = TensorView::from_slice_mut(&mut out, &[4]).unwrap();
    let err = call(&f, &[Arg::from(&ov), Arg::from(&xv), Arg::from(&wv), Arg::Float(1e-6)]).unwrap_err();
    assert_eq!(
        err,
        KernelError::Raised {
            function: "rms_norm".into(),
            kind: "TypeError".into(),
            message: "rms_norm: `x` has dtype int64; expected float32, float16 or bfloat16".into(),
            backtrace: String::new(),
        }
    );
    assert_eq!(
        err.to_string(),
        "kernel `rms_norm` failed: TypeError: rms_norm: `x` has dtype int64; expected float32, float16 or bfloat16"
    );

    // Mixed dtypes are refused too.
    let xb = [bf16::ONE; 4];
    let xv = TensorView::from_slice(&xb, &[4]).unwrap();
    expect_raised(
        call(&f, &[Arg::from(&ov), Arg::from(&xv), Arg::from(&wv), Arg::Float(1e-6)]),
        "TypeError",
        "rms_norm: `out` has dtype float32, but `x` has bfloat16; all tensors must share one dtype",
    );
}

#[test]
fn bad_arguments_are_kernel_errors_not_crashes() {
    let f = function("silu_and_mul");
    let x = [1f32; 12];
    let mut out = [0f32; 6];
    let xv = TensorView::from_slice(&x, &[2, 6]).unwrap();
    let ov = TensorView::from_slice_mut(&mut out, &[2, 3]).unwrap();
    call(&f, &[Arg::from(&ov), Arg::from(&xv)]).unwrap();

    expect_raised(call(&f, &[Arg::from(&ov)]), "TypeError", "silu_and_mul(out, x) takes 2 arguments, got 1");
    expect_raised(
        call(&f, &[Arg::from(&ov), Arg::Float(1.0)]),
        "TypeError",
        "argument 1 (`x`) must be a tensor, got a float",
    );
    let x_odd = TensorView::from_slice(&x, &[4, 3]).unwrap();
    expect_raised(
        call(&f, &[Arg::from(&ov), Arg::from(&x_odd)]),
        "ValueError",
        "silu_and_mul: the last dimension of `x` must be even (gate and up halves), got 3",
    );
    let x_other = TensorView::from_slice(&x, &[3, 4]).unwrap();
    expect_raised(
        call(&f, &[Arg::from(&ov), Arg::from(&x_other)]),
        "ValueError",
        "silu_and_mul: `out` has shape [2, 3], expected [3, 2] (x's shape with the last dimension halved)",
    );
    let scalar = TensorView::from_slice(&x[..1], &[]).unwrap();
    expect_raised(
        call(&f, &[Arg::from(&ov), Arg::from(&scalar)]),
        "ValueError",
        "silu_and_mul: `x` must have at least one dimension, got a scalar",
    );

    // Non-contiguous: x viewed transposed through explicit strides.
    // SAFETY: the view covers `x` (12 elements) and the kernel refuses it before reading.
    let transposed = unsafe {
        TensorView::from_raw_parts(
            x.as_ptr().cast_mut().cast(),
            DLDevice::CPU,
            DLDataType::F32,
            &[2, 6],
            Some(&[1, 2]),
            0,
        )
    }
    .unwrap();
    expect_raised(
        call(&f, &[Arg::from(&ov), Arg::from(&transposed)]),
        "ValueError",
        "silu_and_mul: tensor `x` is not contiguous (shape [2, 6], strides [1, 2]); pass a contiguous tensor",
    );

    // Device memory: refused before the pointer is touched (it is not even valid).
    // SAFETY: the kernel never dereferences the pointer of a non-CPU tensor.
    let on_gpu =
        unsafe { TensorView::from_raw_parts(0x1000 as *mut _, DLDevice::cuda(0), DLDataType::F32, &[2, 6], None, 0) }
            .unwrap();
    expect_raised(
        call(&f, &[Arg::from(&ov), Arg::from(&on_gpu)]),
        "ValueError",
        "silu_and_mul: tensor `x` is on cuda:0; this kernel runs on the CPU",
    );

    // In place (output overlapping the input) is refused.
    let mut buf = [1f32; 12];
    let whole = TensorView::from_slice_mut(&mut buf, &[2, 6]).unwrap();
    // SAFETY: a view of the first half of `buf`; the kernel refuses the call before writing.
    let half_view =
        unsafe { TensorView::from_raw_parts(whole.data_ptr(), DLDevice::CPU, DLDataType::F32, &[2, 3], None, 0) }
            .unwrap();
    expect_raised(
        call(&f, &[Arg::from(&half_view), Arg::from(&whole)]),
        "ValueError",
        "silu_and_mul: output `out` overlaps `x`; in-place use is not supported",
    );

    let g = function("rms_norm");
    let w = [1f32; 6];
    let wv = TensorView::from_slice(&w, &[6]).unwrap();
    let ov2 = TensorView::from_slice_mut(&mut out, &[6]).unwrap();
    let x6 = TensorView::from_slice(&x[..6], &[6]).unwrap();
    expect_raised(
        call(&g, &[Arg::from(&ov2), Arg::from(&x6), Arg::from(&wv), Arg::Float(-1.0)]),
        "ValueError",
        "rms_norm: `eps` must be finite and >= 0, got -1",
    );
    let w3 = TensorView::from_slice(&w[..3], &[3]).unwrap();
    expect_raised(
        call(&g, &[Arg::from(&ov2), Arg::from(&x6), Arg::from(&w3), Arg::Float(1e-6)]),
        "ValueError",
        "rms_norm: `weight` has shape [3], expected [6] (the last dimension of x)",
    );
}

#[test]
fn a_missing_symbol_is_its_own_error() {
    let k = kernels();
    // SAFETY: the example library exports the TVM-FFI ABI.
    let err = unsafe { KernelFunction::resolve(k.library, &k.path, "gelu_tanh") }.unwrap_err();
    let ResolveError::MissingSymbol { function, symbol, library, .. } = &err else { panic!("{err:?}") };
    assert_eq!(
        (function.as_str(), symbol.as_str(), library.as_path()),
        ("gelu_tanh", "__tvm_ffi_gelu_tanh", k.path.as_path())
    );
    let message = err.to_string();
    assert!(message.contains("__tvm_ffi_gelu_tanh") && message.contains(&*k.path.to_string_lossy()), "{message}");
    // SAFETY: as above.
    let err = unsafe { KernelFunction::resolve(k.library, &k.path, "") }.unwrap_err();
    assert!(matches!(err, ResolveError::InvalidName { .. }), "{err:?}");
}

#[test]
fn the_library_is_a_rust_kernel_without_tvm_ffi() {
    let f = function("rms_norm");
    assert_eq!((f.name(), f.symbol()), ("rms_norm", "__tvm_ffi_rms_norm"));
    assert_eq!(f.library_path(), kernels().path);
    assert!(f.is_rust_kernel());
    assert!(!f.accepts_stream());
    assert!(!needs_tvm_ffi(&kernels().path).unwrap());
    // A non-default stream cannot reach a kernel that does not use tvm-ffi's stream context:
    // refused before the kernel runs, naming the stream's device.
    let cuda = DLDevice::cuda(0);
    // SAFETY: never used as a stream: the call is refused first.
    let stream = unsafe { Stream::from_raw(cuda, core::ptr::dangling_mut()) };
    // SAFETY: refused before the kernel runs.
    let err = unsafe { f.call_on_stream(stream, &[]) }.unwrap_err();
    assert!(matches!(err, KernelError::StreamUnsupported { device, .. } if device == cuda), "{err:?}");
    assert!(err.to_string().contains("non-default stream of cuda:0"), "{err}");
    // The default stream is where such a kernel runs anyway: it is called.
    let silu = function("silu_and_mul");
    let x = vec![0.5f32; 8];
    let mut out = vec![0f32; 4];
    let (xv, ov) =
        (TensorView::from_slice(&x, &[1, 8]).unwrap(), TensorView::from_slice_mut(&mut out, &[1, 4]).unwrap());
    // SAFETY: silu_and_mul reads `x` and writes only `out`.
    unsafe { silu.call_on_stream(Stream::default_of(cuda), &[Arg::from(&ov), Arg::from(&xv)]) }.unwrap();
    assert!(out.iter().all(|&v| v != 0.0), "{out:?}");
}

#[test]
fn too_many_arguments_are_refused_before_the_call() {
    let f = function("rms_norm");
    let args = [Arg::Int(0); 17];
    let err = call(&f, &args).unwrap_err();
    assert_eq!(err, KernelError::TooManyArgs { function: "rms_norm".into(), given: 17 });
}

#[test]
fn calls_do_not_allocate() {
    let f = function("rms_norm");
    let x = values(4 * 256, 1);
    let w = values(256, 2);
    let mut out = vec![0f32; 4 * 256];
    let xv = TensorView::from_slice(&x, &[4, 256]).unwrap();
    let wv = TensorView::from_slice(&w, &[256]).unwrap();
    let ov = TensorView::from_slice_mut(&mut out, &[4, 256]).unwrap();
    let args = [Arg::from(&ov), Arg::from(&xv), Arg::from(&wv), Arg::Float(1e-6)];
    call(&f, &args).unwrap(); // warm-up: the kernel's own lazy state
    assert_eq!(allocations_during(|| call(&f, &args).unwrap()), 0);
    // The counter works: the error path allocates (it copies the message).
    let bad = [Arg::from(&ov)];
    assert!(allocations_during(|| drop(call(&f, &bad))) > 0);
}

#[test]
fn errors_stay_on_their_thread() {
    let f = function("rms_norm");
    std::thread::scope(|s| {
        for t in 0..4 {
            let f = &f;
            s.spawn(move || {
                for i in 0..50 {
                    let x = [1f32; 8];
                    let w = [1f32; 8];
                    let mut out = [0f32; 8];
                    let xv = TensorView::from_slice(&x, &[8]).unwrap();
                    let wv = TensorView::from_slice(&w, &[8]).unwrap();
                    let ov = TensorView::from_slice_mut(&mut out, &[8]).unwrap();
                    if (t + i) % 2 == 0 {
                        call(f, &[Arg::from(&ov), Arg::from(&xv), Arg::from(&wv), Arg::Float(0.0)]).unwrap();
                        assert_eq!(out, [1.0; 8]);
                    } else {
                        let eps = -(t as f64) - 1.0;
                        let err = call(f, &[Arg::from(&ov), Arg::from(&xv), Arg::from(&wv), Arg::Float(eps)]);
                        let expected = format!("rms_norm: `eps` must be finite and >= 0, got {eps}");
                        expect_raised(err, "ValueError", &expected);
                    }
                }
            });
        }
    });
}
