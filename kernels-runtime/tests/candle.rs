//! Kernel calls on candle tensors: the example Rust CPU kernels (`examples/kernels/rust-cpu`),
//! built as a real cdylib and loaded, called through `kernels_runtime::candle` and compared with
//! the same computation written with candle's own ops.
//!
//! Tolerances (the kernels compute in `f32` and round once; the references are candle ops in
//! `f32` on the same inputs): `float32` within `2e-5 · |ref| + 1e-6`; `float16` within 2 f16
//! ulps (`2 · 2^-10 · |ref|`) plus 2^-14, `bfloat16` within 2 bf16 ulps (`2 · 2^-7 · |ref|`)
//! plus 1e-6.

mod support;

use std::path::PathBuf;
use std::sync::{Arc, Barrier, OnceLock, mpsc};
use std::time::Duration;

use candle_core::{D, DType, Device, Tensor};
use kernels_runtime::candle::{
    self as kc, CandleArg, CandleError, CandleInput, CandleOutput, backend_of, candle_dtype, dl_device, dl_dtype,
    with_args,
};
use kernels_runtime::ffi::{Arg, DLDataType, DLDevice, KernelError, KernelFunction};
use kernels_runtime::variant::BackendKind;

// ---------------------------------------------------------------------------------------------
// Building and loading the kernel library.
// ---------------------------------------------------------------------------------------------

use support::build_example;

fn function(name: &str) -> &'static KernelFunction {
    static LIBRARY: OnceLock<(PathBuf, &'static libloading::Library)> = OnceLock::new();
    static FUNCTIONS: OnceLock<[KernelFunction; 3]> = OnceLock::new();
    let functions = FUNCTIONS.get_or_init(|| {
        let (path, library) = LIBRARY.get_or_init(|| {
            let path = build_example();
            // SAFETY: the example library has no initialisers with preconditions.
            let library = unsafe { libloading::Library::new(&path) }.expect("load the example kernels");
            (path, Box::leak(Box::new(library)))
        });
        // SAFETY: the example library exports the TVM-FFI ABI.
        ["silu_and_mul", "rms_norm", "add_rms_norm"]
            .map(|name| unsafe { KernelFunction::resolve(library, path, name) }.expect("resolve"))
    });
    functions.iter().find(|f| f.name() == name).expect("a known function")
}

/// Calls kernel `name` on `args`.
fn call(name: &str, args: &[CandleArg<'_>]) -> Result<(), CandleError> {
    // SAFETY: the example kernels read their inputs and write only their outputs (`out`,
    // `residual_out`), which the tests pass as `CandleArg::Output`; they check every argument.
    unsafe { kc::call(function(name), args) }
}

// ---------------------------------------------------------------------------------------------
// Inputs, references, tolerances.
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

/// A tensor of deterministic values of `shape` and `dtype` on the CPU.
fn tensor(shape: &[usize], dtype: DType, seed: u64) -> Tensor {
    let n = shape.iter().product();
    Tensor::from_vec(values(n, seed), shape, &Device::Cpu).unwrap().to_dtype(dtype).unwrap()
}

/// Relative tolerance and absolute floor of `dtype`.
fn tolerance(dtype: DType) -> (f32, f32) {
    match dtype {
        DType::F32 => (2e-5, 1e-6),
        DType::F16 => (2.0 * 2f32.powi(-10), 2f32.powi(-14)),
        DType::BF16 => (2.0 * 2f32.powi(-7), 1e-6),
        other => panic!("no tolerance for {other:?}"),
    }
}

fn flat_f32(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

fn assert_close(got: &Tensor, want: &Tensor, what: &str) {
    assert_eq!(got.dims(), want.dims(), "{what}: shape");
    let (rel, abs) = tolerance(got.dtype());
    let (got, want) = (flat_f32(got), flat_f32(want));
    for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
        let err = (g - w).abs();
        assert!(err <= rel * w.abs() + abs, "{what}: element {i}: got {g}, want {w} (error {err})");
    }
    assert!(got.iter().any(|&v| v != 0.0), "{what}: all zeros");
}

/// `silu(x[..., :d]) * x[..., d:]` with candle ops, in `f32`.
fn silu_and_mul_ref(x: &Tensor) -> Tensor {
    let x = x.to_dtype(DType::F32).unwrap();
    let d = x.dim(D::Minus1).unwrap() / 2;
    let a = x.narrow(D::Minus1, 0, d).unwrap();
    let b = x.narrow(D::Minus1, d, d).unwrap();
    (a.silu().unwrap() * b).unwrap()
}

/// `x / sqrt(mean(x²) + eps) * w` over the last dimension, with candle ops, in `f32`.
fn rms_norm_ref(x: &Tensor, w: &Tensor, eps: f64) -> Tensor {
    let x = x.to_dtype(DType::F32).unwrap();
    let w = w.to_dtype(DType::F32).unwrap();
    let mean_sq = x.sqr().unwrap().mean_keepdim(D::Minus1).unwrap();
    let scale = (mean_sq + eps).unwrap().sqrt().unwrap();
    x.broadcast_div(&scale).unwrap().broadcast_mul(&w).unwrap()
}

const DTYPES: [DType; 3] = [DType::F32, DType::F16, DType::BF16];

// ---------------------------------------------------------------------------------------------
// Results against candle's own ops.
// ---------------------------------------------------------------------------------------------

#[test]
fn silu_and_mul_matches_candle() {
    for dtype in DTYPES {
        // 7 rows of 2 × 200: rows are not a multiple of any chunk size.
        let x = tensor(&[7, 400], dtype, 1);
        let out = Tensor::zeros((7, 200), dtype, x.device()).unwrap();
        call("silu_and_mul", &[CandleArg::output(&out), CandleArg::input(&x)]).unwrap();
        assert_close(&out, &silu_and_mul_ref(&x), &format!("silu_and_mul {dtype:?}"));
    }
}

#[test]
fn rms_norm_matches_candle() {
    for dtype in DTYPES {
        let x = tensor(&[2, 5, 96], dtype, 2);
        let w = tensor(&[96], dtype, 3);
        let out = Tensor::zeros(x.shape(), dtype, x.device()).unwrap();
        let eps = 1e-5;
        call("rms_norm", &[CandleArg::output(&out), CandleArg::input(&x), CandleArg::input(&w), eps.into()]).unwrap();
        assert_close(&out, &rms_norm_ref(&x, &w, eps), &format!("rms_norm {dtype:?}"));
    }
}

#[test]
fn add_rms_norm_matches_candle() {
    for dtype in DTYPES {
        let x = tensor(&[6, 128], dtype, 4);
        let residual = tensor(&[6, 128], dtype, 5);
        let w = tensor(&[128], dtype, 6);
        let out = Tensor::zeros(x.shape(), dtype, x.device()).unwrap();
        let residual_out = Tensor::zeros(x.shape(), dtype, x.device()).unwrap();
        let eps = 1e-6;
        let args = [
            CandleArg::output(&out),
            CandleArg::output(&residual_out),
            CandleArg::input(&x),
            CandleArg::input(&residual),
            CandleArg::input(&w),
            CandleArg::Float(eps),
        ];
        call("add_rms_norm", &args).unwrap();
        // The sum, rounded to `dtype` by candle, as the kernel rounds it.
        let sum = (&x + &residual).unwrap();
        assert_close(&residual_out, &sum, &format!("add_rms_norm residual_out {dtype:?}"));
        assert_close(&out, &rms_norm_ref(&sum, &w, eps), &format!("add_rms_norm out {dtype:?}"));
    }
}

#[test]
fn uninitialised_outputs_are_fully_written() {
    let x = tensor(&[3, 64], DType::F32, 7);
    // SAFETY: silu_and_mul writes every element of `out` and the tensor is read only after it
    // succeeded.
    let out = unsafe { Tensor::empty((3, 32), DType::F32, x.device()) }.unwrap();
    call("silu_and_mul", &[CandleArg::output(&out), CandleArg::input(&x)]).unwrap();
    assert_close(&out, &silu_and_mul_ref(&x), "silu_and_mul into an uninitialised output");
}

// ---------------------------------------------------------------------------------------------
// Storage offsets and layouts.
// ---------------------------------------------------------------------------------------------

#[test]
fn storage_offsets_are_honoured_for_inputs_and_outputs() {
    for dtype in DTYPES {
        // Rows 3..8 of a [10, 2·48] tensor: contiguous, starting 3·96 elements into its storage.
        let big = tensor(&[10, 96], dtype, 8);
        let x = big.narrow(0, 3, 5).unwrap();
        assert_eq!(x.layout().start_offset(), 3 * 96);
        // The weight is elements 10..58 of a longer vector.
        let w_big = tensor(&[100], dtype, 9);
        let w = w_big.narrow(0, 10, 48).unwrap();
        // The outputs are rows 2..7 of zero buffers: rows outside must stay zero.
        let out_big = Tensor::zeros((9, 48), dtype, &Device::Cpu).unwrap();
        let out = out_big.narrow(0, 2, 5).unwrap();
        let silu_big = Tensor::zeros((9, 48), dtype, &Device::Cpu).unwrap();
        let silu_out = silu_big.narrow(0, 2, 5).unwrap();
        let x48 = x.narrow(1, 0, 48).unwrap().contiguous().unwrap();

        call("silu_and_mul", &[CandleArg::output(&silu_out), CandleArg::input(&x)]).unwrap();
        call("rms_norm", &[CandleArg::output(&out), CandleArg::input(&x48), CandleArg::input(&w), 1e-5.into()])
            .unwrap();

        assert_close(&silu_out, &silu_and_mul_ref(&x), &format!("silu_and_mul at an offset {dtype:?}"));
        assert_close(&out, &rms_norm_ref(&x48, &w, 1e-5), &format!("rms_norm at an offset {dtype:?}"));
        for buffer in [&out_big, &silu_big] {
            for rows in [buffer.narrow(0, 0, 2).unwrap(), buffer.narrow(0, 7, 2).unwrap()] {
                assert!(flat_f32(&rows).iter().all(|&v| v == 0.0), "rows outside the output were written");
            }
        }
    }
}

#[test]
fn views_point_at_the_first_element_with_compact_strides() {
    let big = tensor(&[4, 6], DType::F32, 10);
    let x = big.narrow(0, 1, 2).unwrap();
    let base = {
        let (storage, _) = big.storage_and_layout();
        match &*storage {
            candle_core::Storage::Cpu(s) => s.as_slice::<f32>().unwrap().as_ptr() as usize,
            _ => unreachable!("a CPU tensor"),
        }
    };
    // A [2, 1, 6] tensor from a reshape: candle may give the extent-1 dimension any stride.
    let y = x.reshape((2, 1, 6)).unwrap();
    let seen = with_args(&[CandleArg::input(&x), CandleArg::input(&y), CandleArg::Int(3)], |args, stream| {
        assert!(stream.is_none(), "no stream on the CPU");
        let [Arg::Tensor(a), Arg::Tensor(b), Arg::Int(3)] = args else { panic!("unexpected args {args:?}") };
        (a.data_ptr() as usize, a.byte_offset(), a.strides().to_vec(), b.strides().to_vec(), a.device(), a.dtype())
    })
    .unwrap();
    assert_eq!(seen.0, base + 6 * 4, "data is the first element: base + start_offset · 4 bytes");
    assert_eq!(seen.1, 0, "byte_offset is folded into data");
    assert_eq!(seen.2, [6, 1]);
    assert_eq!(seen.3, [6, 6, 1]);
    assert_eq!((seen.4, seen.5), (DLDevice::CPU, DLDataType::F32));
}

#[test]
fn non_contiguous_tensors_are_refused_with_a_reason() {
    let x = tensor(&[64, 8], DType::F32, 11);
    let xt = x.t().unwrap();
    assert!(!xt.is_contiguous());
    let out = Tensor::zeros((8, 32), DType::F32, &Device::Cpu).unwrap();
    let err = call("silu_and_mul", &[CandleArg::output(&out), CandleArg::input(&xt)]).unwrap_err();
    let CandleError::NonContiguous { index, ref shape, ref strides } = err else { panic!("{err:?}") };
    assert_eq!((index, shape.as_slice(), strides.as_slice()), (Some(1), [8, 64].as_slice(), [1, 8].as_slice()));
    assert!(err.to_string().starts_with("argument 1 is not contiguous"), "{err}");
    assert!(err.to_string().contains("call `.contiguous()`"), "{err}");
    // The output is untouched.
    assert!(flat_f32(&out).iter().all(|&v| v == 0.0));

    // A column slice (the gate half of a row) is not contiguous either.
    let half = x.narrow(1, 0, 4).unwrap();
    let out = Tensor::zeros((64, 2), DType::F32, &Device::Cpu).unwrap();
    let err = call("silu_and_mul", &[CandleArg::output(&out), CandleArg::input(&half)]).unwrap_err();
    assert!(matches!(err, CandleError::NonContiguous { index: Some(1), .. }), "{err:?}");

    // Nor is a transposed output.
    let x = tensor(&[8, 64], DType::F32, 12);
    let out = Tensor::zeros((32, 8), DType::F32, &Device::Cpu).unwrap().t().unwrap();
    let err = call("silu_and_mul", &[CandleArg::output(&out), CandleArg::input(&x)]).unwrap_err();
    assert!(matches!(err, CandleError::NonContiguous { index: Some(0), .. }), "{err:?}");

    // Made contiguous explicitly, the transpose works.
    let out = Tensor::zeros((8, 32), DType::F32, &Device::Cpu).unwrap();
    let xt = xt.contiguous().unwrap();
    call("silu_and_mul", &[CandleArg::output(&out), CandleArg::input(&xt)]).unwrap();
    assert_close(&out, &silu_and_mul_ref(&xt), "silu_and_mul of a contiguous copy");
}

#[test]
fn strided_inputs_carry_their_real_strides() {
    // The example kernels read only contiguous tensors: given the real strides of a transpose,
    // the kernel itself refuses it, naming them.
    let x = tensor(&[64, 8], DType::F32, 13).t().unwrap();
    let out = Tensor::zeros((8, 32), DType::F32, &Device::Cpu).unwrap();
    let err = call("silu_and_mul", &[CandleArg::output(&out), CandleArg::strided_input(&x)]).unwrap_err();
    let CandleError::Kernel(ref kernel) = err else { panic!("{err:?}") };
    let (kind, message) = kernel.raised().expect("raised by the kernel");
    assert_eq!(kind, "ValueError");
    assert!(message.contains("not contiguous (shape [8, 64], strides [1, 8])"), "{message}");

    // Broadcast dimensions have stride 0.
    let w = tensor(&[6], DType::F32, 14).broadcast_as((3, 6)).unwrap();
    let strides = with_args(&[CandleArg::strided_input(&w)], |args, _| match args {
        [Arg::Tensor(v)] => v.strides().to_vec(),
        _ => unreachable!(),
    })
    .unwrap();
    assert_eq!(strides, [0, 1]);
}

// ---------------------------------------------------------------------------------------------
// Shared storage, locking, errors.
// ---------------------------------------------------------------------------------------------

#[test]
fn an_output_and_an_input_may_share_a_storage() {
    // One buffer: the input in elements 0..128, the output in 128..192. The storage is locked
    // once, for writing, and both views derive from that borrow.
    let buffer = Tensor::from_vec(values(192, 15), 192, &Device::Cpu).unwrap();
    let x = buffer.narrow(0, 0, 128).unwrap().reshape((2, 64)).unwrap();
    let out = buffer.narrow(0, 128, 64).unwrap().reshape((2, 32)).unwrap();
    let want = silu_and_mul_ref(&x);
    call("silu_and_mul", &[CandleArg::output(&out), CandleArg::input(&x)]).unwrap();
    assert_close(&out, &want, "silu_and_mul into the same storage");
    assert_eq!(flat_f32(&x), values(128, 15), "the input is unchanged");

    // Overlapping output and input: the kernel sees the overlap and refuses.
    let out = buffer.narrow(0, 100, 64).unwrap().reshape((2, 32)).unwrap();
    let err = call("silu_and_mul", &[CandleArg::output(&out), CandleArg::input(&x)]).unwrap_err();
    let (_, message) = match &err {
        CandleError::Kernel(e) => e.raised().expect("raised"),
        other => panic!("{other:?}"),
    };
    assert!(message.contains("overlaps"), "{message}");
}

#[test]
fn the_same_tensor_may_be_passed_twice() {
    // x as the input and its own transpose-free alias as the weight source: one read lock.
    let x = tensor(&[4, 32], DType::F32, 16);
    let w = x.narrow(0, 0, 1).unwrap().reshape(32).unwrap();
    let out = Tensor::zeros((4, 32), DType::F32, &Device::Cpu).unwrap();
    call("rms_norm", &[CandleArg::output(&out), CandleArg::input(&x), CandleArg::input(&w), 1e-5.into()]).unwrap();
    assert_close(&out, &rms_norm_ref(&x, &w, 1e-5), "rms_norm with weight and input in one storage");
}

#[test]
fn crossed_calls_on_two_threads_do_not_deadlock() {
    // Thread A writes storage 1 reading storage 2, thread B the reverse. Locking in address
    // order makes both take the locks in the same order.
    let s1 = Tensor::from_vec(values(64 * 32, 17), 64 * 32, &Device::Cpu).unwrap();
    let s2 = Tensor::from_vec(values(64 * 32, 18), 64 * 32, &Device::Cpu).unwrap();
    let (done, finished) = mpsc::channel();
    let start = Arc::new(Barrier::new(2));
    for (out_storage, in_storage) in [(s1.clone(), s2.clone()), (s2, s1)] {
        let (done, start) = (done.clone(), start.clone());
        std::thread::spawn(move || {
            let out = out_storage.narrow(0, 0, 16 * 32).unwrap().reshape((16, 32)).unwrap();
            let x = in_storage.narrow(0, 1024, 16 * 64).unwrap().reshape((16, 64)).unwrap();
            start.wait();
            for _ in 0..5_000 {
                call("silu_and_mul", &[CandleArg::output(&out), CandleArg::input(&x)]).unwrap();
            }
            done.send(()).unwrap();
        });
    }
    for _ in 0..2 {
        finished.recv_timeout(Duration::from_secs(120)).expect("both threads finish (no deadlock)");
    }
}

#[test]
fn kernel_errors_come_back_typed() {
    let x = tensor(&[2, 16], DType::F32, 19);
    let out = Tensor::zeros((2, 8), DType::F16, &Device::Cpu).unwrap();
    let err = call("silu_and_mul", &[CandleArg::output(&out), CandleArg::input(&x)]).unwrap_err();
    match &err {
        CandleError::Kernel(KernelError::Raised { kind, message, .. }) => {
            assert_eq!(kind, "TypeError");
            assert!(message.contains("float16") && message.contains("float32"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    // It converts into a candle error for `?` in a candle forward.
    let candle_err: candle_core::Error = err.into();
    assert!(candle_err.to_string().contains("TypeError"), "{candle_err}");
}

#[test]
fn refusals_happen_before_the_kernel_runs() {
    let x = tensor(&[2, 16], DType::F32, 20);
    let out = Tensor::zeros((2, 8), DType::F32, &Device::Cpu).unwrap();
    let too_many = vec![CandleArg::Int(0); 17];
    assert!(matches!(call("silu_and_mul", &too_many), Err(CandleError::TooManyArgs { given: 17 })));
    let nine_dims = Tensor::zeros(&[1usize; 9][..], DType::F32, &Device::Cpu).unwrap();
    let err = call("silu_and_mul", &[CandleArg::output(&out), CandleArg::input(&nine_dims)]).unwrap_err();
    assert!(err.to_string().contains("at most 8 dimensions"), "{err}");
    // Scalars pass through as they are.
    let kinds =
        with_args(&[CandleArg::input(&x), 2i64.into(), 0.5f32.into(), true.into(), CandleArg::None], |args, _| {
            args.iter().map(|a| format!("{a:?}").split('(').next().unwrap().to_owned()).collect::<Vec<_>>()
        })
        .unwrap();
    assert_eq!(kinds, ["Tensor", "Int", "Float", "Bool", "None"]);
}

// ---------------------------------------------------------------------------------------------
// One tensor at a time: CandleInput and CandleOutput.
// ---------------------------------------------------------------------------------------------

#[test]
fn inputs_and_outputs_one_at_a_time() {
    for dtype in DTYPES {
        let big = tensor(&[6, 80], dtype, 24);
        let x = big.narrow(0, 1, 4).unwrap();
        let w = tensor(&[80], dtype, 25);
        let eps = 1e-5;
        let (x_in, w_in) = (CandleInput::new(&x).unwrap(), CandleInput::new(&w).unwrap());
        // SAFETY: rms_norm writes every element of `out`, and `into_tensor` follows its success.
        let mut out = CandleOutput::new((4, 80), dtype, &Device::Cpu).unwrap();
        assert_eq!((out.shape().dims(), out.dtype(), out.device()), ([4, 80].as_slice(), dtype, DLDevice::CPU));
        assert!(x_in.stream().is_none() && out.stream().is_none());
        {
            let (out_view, x_view, w_view) = (out.view_mut().unwrap(), x_in.view(), w_in.view());
            let args = [Arg::from(&out_view), Arg::from(x_view), Arg::from(w_view), Arg::Float(eps)];
            // SAFETY: rms_norm reads x and w and writes only `out`, which this value owns.
            unsafe { function("rms_norm").call(&args) }.unwrap();
        }
        drop((x_in, w_in));
        let out = out.into_tensor();
        assert!(out.is_contiguous() && out.dims() == [4, 80]);
        assert_close(&out, &rms_norm_ref(&x, &w, eps), &format!("rms_norm one at a time {dtype:?}"));
    }
    // The read lock is released on drop: the same storage can now be written.
    let buffer = tensor(&[192], DType::F32, 26);
    let x = buffer.narrow(0, 0, 128).unwrap().reshape((2, 64)).unwrap();
    drop(CandleInput::new(&x).unwrap());
    let out = buffer.narrow(0, 128, 64).unwrap().reshape((2, 32)).unwrap();
    let want = silu_and_mul_ref(&x);
    call("silu_and_mul", &[CandleArg::output(&out), CandleArg::input(&x)]).unwrap();
    assert_close(&out, &want, "silu_and_mul after the input guard was dropped");
}

#[test]
fn single_tensor_helpers_check_what_the_call_helpers_check() {
    let x = tensor(&[8, 4], DType::F32, 27).t().unwrap();
    let err = CandleInput::new(&x).unwrap_err();
    assert!(matches!(err, CandleError::NonContiguous { index: None, .. }), "{err:?}");
    assert!(err.to_string().starts_with("the tensor is not contiguous (shape [4, 8], strides [1, 4])"), "{err}");
    assert_eq!(CandleInput::strided(&x).unwrap().view().strides(), [1, 4]);
    let err = CandleOutput::new(3, DType::F4, &Device::Cpu).unwrap_err();
    assert!(matches!(err, CandleError::UnsupportedDType { dtype: DType::F4, .. }), "{err:?}");
    // On the CPU an output is zero-filled: one never written is a zero tensor.
    let out = CandleOutput::new((2, 3), DType::BF16, &Device::Cpu).unwrap();
    assert!(format!("{out:?}").contains("BF16"));
    let out = out.into_tensor();
    assert_eq!((out.dims(), out.dtype()), ([2, 3].as_slice(), DType::BF16));
    assert!(flat_f32(&out).iter().all(|&v| v == 0.0));
}

// ---------------------------------------------------------------------------------------------
// Vocabulary.
// ---------------------------------------------------------------------------------------------

#[test]
fn dtypes_map_both_ways() {
    let table = [
        (DType::U8, "uint8"),
        (DType::U32, "uint32"),
        (DType::I16, "int16"),
        (DType::I32, "int32"),
        (DType::I64, "int64"),
        (DType::BF16, "bfloat16"),
        (DType::F16, "float16"),
        (DType::F32, "float32"),
        (DType::F64, "float64"),
        (DType::F8E4M3, "float8_e4m3fn"),
        (DType::F8E8M0, "float8_e8m0fnu"),
    ];
    for (dtype, name) in table {
        let dl = dl_dtype(dtype).unwrap();
        assert_eq!(dl.to_string(), name);
        assert_eq!(dl.size_in_bytes(), Some(dtype.size_in_bytes()), "{name}");
        assert_eq!(candle_dtype(dl), Some(dtype));
    }
    for dtype in [DType::F6E2M3, DType::F6E3M2, DType::F4] {
        let err = dl_dtype(dtype).unwrap_err();
        assert!(err.to_string().contains("one per byte"), "{err}");
    }
    assert_eq!(candle_dtype(DLDataType::U16), None);
    assert_eq!(candle_dtype(DLDataType::BOOL), None);
}

#[test]
fn devices_map_to_backends() {
    assert_eq!(backend_of(&Device::Cpu), (BackendKind::Cpu, 0));
    assert_eq!(backend_of(tensor(&[2], DType::F32, 21).device()), (BackendKind::Cpu, 0));
    assert_eq!(dl_device(&Device::Cpu), DLDevice::CPU);
}

// ---------------------------------------------------------------------------------------------
// CUDA (feature `candle-cuda`, on a machine with a GPU).
// ---------------------------------------------------------------------------------------------

#[cfg(feature = "candle-cuda")]
#[test]
fn cuda_views_use_candle_pointers_ordinal_and_stream() {
    use candle_core::cuda_backend::cudarc::driver::DevicePtr;

    let device = Device::new_cuda(0).expect("feature candle-cuda is on, so a CUDA device is expected");
    let Device::Cuda(cuda) = &device else { unreachable!() };
    assert_eq!(backend_of(&device), (BackendKind::Cuda, 0));
    assert_eq!(dl_device(&device), DLDevice::cuda(0));
    let big = tensor(&[8, 16], DType::BF16, 22).to_device(&device).unwrap();
    let x = big.narrow(0, 2, 3).unwrap();
    let out = Tensor::zeros((3, 16), DType::BF16, &device).unwrap();
    let stream = cuda.cuda_stream();
    let base = {
        let (storage, _) = big.storage_and_layout();
        let candle_core::Storage::Cuda(s) = &*storage else { unreachable!() };
        let slice = s.as_cuda_slice::<half::bf16>().unwrap();
        let (ptr, _guard) = slice.device_ptr(&stream);
        ptr as usize
    };
    let seen = with_args(&[CandleArg::output(&out), CandleArg::input(&x)], |args, s| {
        let [Arg::Tensor(o), Arg::Tensor(v)] = args else { unreachable!() };
        (s.expect("a stream for CUDA tensors"), o.device(), v.data_ptr() as usize, v.byte_offset(), v.dtype())
    })
    .unwrap();
    assert_eq!(seen.0.handle(), stream.cu_stream().cast(), "candle's stream");
    assert_eq!(seen.0.device(), DLDevice::cuda(0));
    assert_eq!(seen.1, DLDevice::cuda(0));
    assert_eq!((seen.2, seen.3, seen.4), (base + 2 * 16 * 2, 0, DLDataType::BF16));

    // A CPU and a CUDA tensor in one call are refused (before any kernel is needed).
    let cpu = tensor(&[3, 32], DType::BF16, 23);
    let err = with_args(&[CandleArg::output(&out), CandleArg::input(&cpu)], |_, _| ()).unwrap_err();
    assert!(matches!(err, CandleError::DeviceMismatch { first: 0, index: 1, .. }), "{err:?}");

    // One tensor at a time: the same pointers and stream.
    let input = CandleInput::new(&x).unwrap();
    assert_eq!(input.view().data_ptr() as usize, base + 2 * 16 * 2);
    assert_eq!(input.stream().map(|s| s.handle()), Some(stream.cu_stream().cast()));
    let mut output = CandleOutput::new((3, 16), DType::BF16, &device).unwrap();
    assert_eq!(output.view_mut().unwrap().device(), DLDevice::cuda(0));
    drop(input);
    // On CUDA an output is not filled (the kernel writes every element): only its shape,
    // dtype and device are given.
    let out = output.into_tensor();
    assert_eq!(
        (out.dims(), out.dtype(), dl_device(out.device())),
        ([3, 16].as_slice(), DType::BF16, DLDevice::cuda(0))
    );
}
