//! Writing kernels in Rust: a cdylib that exports the TVM-FFI ABI (feature `kernel-abi`).
//!
//! Kernels written in Rust do not link `libtvm_ffi.so`, so they cannot raise errors through
//! `TVMFFIErrorSetRaisedFromCStr`. Instead [`export_kernels!`](crate::export_kernels) makes the
//! library export, next to each `__tvm_ffi_<name>`, one error channel:
//!
//! - every export runs the kernel inside `catch_unwind`; an `Err(KernelFailure)` or a panic
//!   stores `(kind, message)` in a thread-local of the library and the export returns -1;
//! - `__kernels_rs_take_error(ctx, sink)` ([`KernelsTakeErrorFn`](super::abi::KernelsTakeErrorFn)) hands the calling thread's
//!   pending error to `sink(ctx, kind, message)` and clears it (returns 0), or returns 1 when
//!   none is pending. The runtime's `KernelFunction` calls it right after a failed call, on the
//!   same thread.
//!
//! Kernels must be built with `panic = "unwind"` (the default) for panics to be caught.
//!
//! ```no_run,standalone_crate
//! use kernels_runtime::ffi::kernel::{KernelArgs, KernelFailure};
//!
//! fn scale(args: KernelArgs<'_>) -> Result<(), KernelFailure> {
//!     args.expect_count(3, "scale(out, x, factor)")?;
//!     let (out, x) = (args.tensor(0, "out")?, args.tensor(1, "x")?);
//!     let factor = args.f64(2, "factor")? as f32;
//!     // SAFETY: the caller passes tensors whose pointers are valid (ABI contract).
//!     let (out, x) = unsafe { (out.as_mut_slice::<f32>()?, x.as_slice::<f32>()?) };
//!     if out.len() != x.len() { return Err(KernelFailure::value_error("shape mismatch")); }
//!     out.iter_mut().zip(x).for_each(|(o, v)| *o = v * factor);
//!     Ok(())
//! }
//!
//! kernels_runtime::export_kernels! { scale => scale }
//! ```

use core::cell::RefCell;
use core::ffi::{c_int, c_void};
use core::ops::Range;
use std::borrow::Cow;
use std::panic::{AssertUnwindSafe, catch_unwind};

use super::abi::{
    DLDataType, DLDevice, DLDeviceType, DLTensor, Element, KernelsErrorSinkFn, OBJECT_CELL_OFFSET, TVMFFIAny,
    TVMFFIByteArray, type_index,
};

/// An error a kernel reports: a kind (`ValueError`, `TypeError`, …) and a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelFailure {
    kind: Cow<'static, str>,
    message: String,
}

impl KernelFailure {
    /// An error of `kind` (use the Python-style names tvm-ffi uses).
    pub fn new(kind: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        Self { kind: kind.into(), message: message.into() }
    }

    /// A `TypeError`: wrong argument or element type.
    pub fn type_error(message: impl Into<String>) -> Self {
        Self::new("TypeError", message)
    }

    /// A `ValueError`: wrong shape, layout, device or value.
    pub fn value_error(message: impl Into<String>) -> Self {
        Self::new("ValueError", message)
    }

    /// A `RuntimeError`.
    pub fn runtime_error(message: impl Into<String>) -> Self {
        Self::new("RuntimeError", message)
    }

    /// The kind.
    pub fn kind(&self) -> &str {
        &self.kind
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

thread_local! {
    static PENDING: RefCell<Option<KernelFailure>> = const { RefCell::new(None) };
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic with a non-string payload".to_owned()
    }
}

/// Runs `kernel` on the raw arguments of an export and turns its outcome into the ABI's return
/// code, recording a failure (or panic) for `__kernels_rs_take_error`. Used by
/// [`export_kernels!`](crate::export_kernels).
///
/// # Safety
/// `args` must point to `num_args` initialised values (or `num_args` must be 0).
pub unsafe fn run_export<F>(name: &str, args: *const TVMFFIAny, num_args: i32, kernel: F) -> c_int
where
    F: FnOnce(KernelArgs<'_>) -> Result<(), KernelFailure>,
{
    let outcome = if num_args < 0 || (num_args > 0 && args.is_null()) {
        Err(KernelFailure::value_error(format!("{name}: invalid argument array ({num_args} arguments at {args:p})")))
    } else {
        let raw = if num_args == 0 {
            &[][..]
        } else {
            // SAFETY: the caller guarantees `num_args` initialised values at `args`.
            unsafe { core::slice::from_raw_parts(args, num_args as usize) }
        };
        // The kernel only borrows the arguments; a panic leaves nothing half-updated that the
        // runtime reads afterwards (outputs are the caller's to discard).
        match catch_unwind(AssertUnwindSafe(|| kernel(KernelArgs { raw }))) {
            Ok(outcome) => outcome,
            Err(payload) => Err(KernelFailure::runtime_error(format!(
                "{name}: kernel panicked: {}",
                panic_message(payload.as_ref())
            ))),
        }
    };
    match outcome {
        Ok(()) => 0,
        Err(failure) => {
            // `try_with` fails only while the thread is being torn down; the return code still
            // reports the failure then.
            let _ = PENDING.try_with(|slot| *slot.borrow_mut() = Some(failure));
            -1
        }
    }
}

/// The body of `__kernels_rs_take_error` (see the [module docs](self)).
///
/// # Safety
/// `sink` must be safe to call with `ctx` and two valid byte-array pointers.
pub unsafe fn take_error(ctx: *mut c_void, sink: KernelsErrorSinkFn) -> c_int {
    let pending = PENDING.try_with(|slot| slot.borrow_mut().take()).ok().flatten();
    match pending {
        Some(failure) => {
            let kind = TVMFFIByteArray::from_bytes(failure.kind.as_bytes());
            let message = TVMFFIByteArray::from_bytes(failure.message.as_bytes());
            // SAFETY: the caller vouches for `sink`/`ctx`; the byte arrays borrow `failure`,
            // which outlives the call.
            unsafe { sink(ctx, &kind, &message) };
            0
        }
        None => 1,
    }
}

/// Exports kernel functions with the TVM-FFI ABI, plus the error channel
/// `__kernels_rs_take_error`. Invoke it once per cdylib, listing every function:
///
/// ```no_run,standalone_crate
/// # use kernels_runtime::ffi::kernel::{KernelArgs, KernelFailure};
/// # fn rms_norm(_: KernelArgs<'_>) -> Result<(), KernelFailure> { Ok(()) }
/// # fn silu_and_mul(_: KernelArgs<'_>) -> Result<(), KernelFailure> { Ok(()) }
/// kernels_runtime::export_kernels! {
///     rms_norm => rms_norm, // exports `__tvm_ffi_rms_norm`
///     silu_and_mul => silu_and_mul,
/// }
/// ```
///
/// Each function is `fn(KernelArgs<'_>) -> Result<(), KernelFailure>`; the symbol is
/// `__tvm_ffi_` followed by the name on the left.
#[macro_export]
macro_rules! export_kernels {
    ($($name:ident => $kernel:path),+ $(,)?) => {
        $(
            const _: () = {
                #[unsafe(export_name = concat!("__tvm_ffi_", stringify!($name)))]
                unsafe extern "C" fn __kernels_export(
                    _handle: *mut ::core::ffi::c_void,
                    args: *const $crate::ffi::abi::TVMFFIAny,
                    num_args: i32,
                    _result: *mut $crate::ffi::abi::TVMFFIAny,
                ) -> ::core::ffi::c_int {
                    // SAFETY: the caller follows the TVM-FFI ABI: `num_args` values at `args`.
                    unsafe { $crate::ffi::kernel::run_export(stringify!($name), args, num_args, $kernel) }
                }
            };
        )+
        const _: () = {
            #[unsafe(export_name = "__kernels_rs_take_error")]
            unsafe extern "C" fn __kernels_take_error(
                ctx: *mut ::core::ffi::c_void,
                sink: $crate::ffi::abi::KernelsErrorSinkFn,
            ) -> ::core::ffi::c_int {
                // SAFETY: the runtime passes a sink that accepts `ctx`.
                unsafe { $crate::ffi::kernel::take_error(ctx, sink) }
            }
        };
    };
}

/// The arguments of one call.
#[derive(Debug, Clone, Copy)]
pub struct KernelArgs<'a> {
    raw: &'a [TVMFFIAny],
}

impl<'a> KernelArgs<'a> {
    /// Wraps raw arguments (for tests and custom exports).
    pub fn new(raw: &'a [TVMFFIAny]) -> Self {
        Self { raw }
    }

    /// Number of arguments.
    pub fn len(&self) -> usize {
        self.raw.len()
    }

    /// Whether there are no arguments.
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// The raw argument values.
    pub fn raw(&self) -> &'a [TVMFFIAny] {
        self.raw
    }

    /// Fails with a `TypeError` naming `signature` unless there are exactly `count` arguments.
    pub fn expect_count(&self, count: usize, signature: &str) -> Result<(), KernelFailure> {
        if self.raw.len() == count {
            Ok(())
        } else {
            Err(KernelFailure::type_error(format!("{signature} takes {count} arguments, got {}", self.raw.len())))
        }
    }

    fn get(&self, index: usize, name: &str) -> Result<&'a TVMFFIAny, KernelFailure> {
        self.raw.get(index).ok_or_else(|| KernelFailure::type_error(format!("missing argument {index} (`{name}`)")))
    }

    fn mismatch(index: usize, name: &str, expected: &str, got: &TVMFFIAny) -> KernelFailure {
        KernelFailure::type_error(format!(
            "argument {index} (`{name}`) must be {expected}, got {}",
            type_name(got.type_index)
        ))
    }

    /// Argument `index` as a tensor (`DLTensor*` or tensor object).
    pub fn tensor(&self, index: usize, name: &'static str) -> Result<TensorArg<'a>, KernelFailure> {
        let any = self.get(index, name)?;
        let ptr: *const DLTensor = match any.type_index {
            type_index::DL_TENSOR_PTR => any.ptr().cast(),
            // A tensor object is its header followed by the DLTensor.
            type_index::TENSOR if !any.ptr().is_null() => {
                any.ptr().cast::<u8>().wrapping_add(OBJECT_CELL_OFFSET).cast()
            }
            _ => return Err(Self::mismatch(index, name, "a tensor", any)),
        };
        if ptr.is_null() {
            return Err(KernelFailure::value_error(format!("argument {index} (`{name}`) is a null tensor")));
        }
        // SAFETY: the ABI caller passes a pointer to a live DLTensor for the call's duration.
        let raw = unsafe { &*ptr };
        TensorArg::new(raw, name)
    }

    /// Argument `index` as a float (floats, ints and bools convert, as in tvm-ffi).
    pub fn f64(&self, index: usize, name: &str) -> Result<f64, KernelFailure> {
        let any = self.get(index, name)?;
        match any.type_index {
            type_index::FLOAT => Ok(f64::from_bits(any.bits())),
            type_index::INT | type_index::BOOL => Ok(any.bits() as i64 as f64),
            _ => Err(Self::mismatch(index, name, "a float", any)),
        }
    }

    /// Argument `index` as an integer (ints and bools).
    pub fn i64(&self, index: usize, name: &str) -> Result<i64, KernelFailure> {
        let any = self.get(index, name)?;
        match any.type_index {
            type_index::INT | type_index::BOOL => Ok(any.bits() as i64),
            _ => Err(Self::mismatch(index, name, "an integer", any)),
        }
    }

    /// Argument `index` as a bool (bools and ints).
    pub fn bool(&self, index: usize, name: &str) -> Result<bool, KernelFailure> {
        let any = self.get(index, name)?;
        match any.type_index {
            type_index::BOOL | type_index::INT => Ok(any.bits() != 0),
            _ => Err(Self::mismatch(index, name, "a bool", any)),
        }
    }

    /// Whether argument `index` is `None` (or absent).
    pub fn is_none(&self, index: usize) -> bool {
        self.raw.get(index).is_none_or(|a| a.type_index == type_index::NONE)
    }
}

/// A name for a type index in messages.
fn type_name(index: i32) -> Cow<'static, str> {
    Cow::Borrowed(match index {
        type_index::NONE => "None",
        type_index::INT => "an integer",
        type_index::BOOL => "a bool",
        type_index::FLOAT => "a float",
        type_index::OPAQUE_PTR => "an opaque pointer",
        type_index::DATA_TYPE => "a dtype",
        type_index::DEVICE => "a device",
        type_index::DL_TENSOR_PTR | type_index::TENSOR => "a tensor",
        type_index::RAW_STR | type_index::SMALL_STR | type_index::STR => "a string",
        type_index::BYTE_ARRAY_PTR | type_index::SMALL_BYTES | type_index::BYTES => "bytes",
        type_index::FUNCTION => "a function",
        type_index::SHAPE => "a shape",
        type_index::ARRAY => "an array",
        type_index::MAP => "a map",
        other => return Cow::Owned(format!("an object of type index {other}")),
    })
}

/// A tensor argument whose metadata (ndim, shape, strides pointers) has been checked.
#[derive(Debug, Clone, Copy)]
pub struct TensorArg<'a> {
    raw: &'a DLTensor,
    shape: &'a [i64],
    strides: Option<&'a [i64]>,
    name: &'static str,
}

impl<'a> TensorArg<'a> {
    /// Checks `raw`'s metadata: `ndim` ≥ 0, shape (and strides, if any) readable, extents ≥ 0,
    /// and an element count and byte size that fit in memory.
    pub fn new(raw: &'a DLTensor, name: &'static str) -> Result<Self, KernelFailure> {
        let bad = |what: &str| KernelFailure::value_error(format!("tensor `{name}`: {what}"));
        let ndim = usize::try_from(raw.ndim).map_err(|_| bad(&format!("negative ndim {}", raw.ndim)))?;
        let read = |ptr: *mut i64| -> &'a [i64] {
            // SAFETY: DLPack producers pass `ndim` readable extents/strides (checked non-null
            // by the callers below); the tensor outlives the call.
            unsafe { core::slice::from_raw_parts(ptr, ndim) }
        };
        let shape = match (ndim, raw.shape.is_null()) {
            (0, _) => &[][..],
            (_, true) => return Err(bad("null shape")),
            _ => read(raw.shape),
        };
        let strides = match (ndim, raw.strides.is_null()) {
            (_, true) => None,
            (0, false) => Some(&[][..]),
            _ => Some(read(raw.strides)),
        };
        if shape.iter().any(|&e| e < 0) {
            return Err(bad(&format!("negative extent in shape {shape:?}")));
        }
        let count = shape.iter().try_fold(1usize, |acc, &e| acc.checked_mul(e as usize));
        let bytes = count.zip(raw.dtype.size_in_bytes()).and_then(|(c, s)| c.checked_mul(s));
        if count.is_none() || bytes.is_some_and(|b| b > isize::MAX as usize) {
            return Err(bad(&format!("shape {shape:?} is too large")));
        }
        Ok(Self { raw, shape, strides, name })
    }

    /// The argument's name (for messages).
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The raw `DLTensor`.
    pub fn raw(&self) -> &'a DLTensor {
        self.raw
    }

    /// Extents.
    pub fn shape(&self) -> &'a [i64] {
        self.shape
    }

    /// Strides in elements, `None` when compact.
    pub fn strides(&self) -> Option<&'a [i64]> {
        self.strides
    }

    /// Number of dimensions.
    pub fn ndim(&self) -> usize {
        self.shape.len()
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        // Checked in `new` not to overflow.
        self.shape.iter().map(|&e| e as usize).product()
    }

    /// The element type.
    pub fn dtype(&self) -> DLDataType {
        self.raw.dtype
    }

    /// The device.
    pub fn device(&self) -> DLDevice {
        self.raw.device
    }

    /// Whether the elements are compact row-major (strides of extent-1 dimensions are free).
    pub fn is_contiguous(&self) -> bool {
        let Some(strides) = self.strides else { return true };
        let mut expected = 1i64;
        for (&extent, &stride) in self.shape.iter().zip(strides).rev() {
            if extent != 1 && stride != expected {
                return false;
            }
            expected = expected.saturating_mul(extent);
        }
        true
    }

    /// Fails with a `ValueError` unless the tensor is in host memory.
    pub fn expect_cpu(&self) -> Result<(), KernelFailure> {
        let device = self.device();
        if device.device_type == DLDeviceType::CPU {
            Ok(())
        } else {
            Err(KernelFailure::value_error(format!(
                "tensor `{}` is on {device}; this kernel runs on the CPU",
                self.name
            )))
        }
    }

    /// Fails with a `ValueError` unless the tensor is compact row-major.
    pub fn expect_contiguous(&self) -> Result<(), KernelFailure> {
        if self.is_contiguous() {
            Ok(())
        } else {
            Err(KernelFailure::value_error(format!(
                "tensor `{}` is not contiguous (shape {:?}, strides {:?}); pass a contiguous tensor",
                self.name,
                self.shape,
                self.strides.unwrap_or_default()
            )))
        }
    }

    /// Fails with a `TypeError` unless the element type is `dtype`.
    pub fn expect_dtype(&self, dtype: DLDataType) -> Result<(), KernelFailure> {
        if self.dtype() == dtype {
            Ok(())
        } else {
            Err(KernelFailure::type_error(format!(
                "tensor `{}` has dtype {}, expected {dtype}",
                self.name,
                self.dtype()
            )))
        }
    }

    /// The first element's address (`data + byte_offset`).
    pub fn first_element(&self) -> *mut u8 {
        self.raw.data.cast::<u8>().wrapping_add(self.raw.byte_offset as usize)
    }

    /// The bytes a compact tensor spans, as an address range (for overlap checks).
    pub fn byte_range(&self) -> Range<usize> {
        let start = self.first_element() as usize;
        let len = self.numel() * self.dtype().size_in_bytes().unwrap_or(0);
        start..start.saturating_add(len)
    }

    /// Whether two tensors' memory overlaps (compact tensors; empty tensors never overlap).
    pub fn overlaps(&self, other: &TensorArg<'_>) -> bool {
        let (a, b) = (self.byte_range(), other.byte_range());
        !a.is_empty() && !b.is_empty() && a.start < b.end && b.start < a.end
    }

    fn checked_ptr<T: Element>(&self) -> Result<*mut T, KernelFailure> {
        self.expect_dtype(T::DTYPE)?;
        self.expect_cpu()?;
        self.expect_contiguous()?;
        let ptr = self.first_element();
        if self.numel() == 0 {
            return Ok(core::ptr::NonNull::<T>::dangling().as_ptr());
        }
        if ptr.is_null() {
            return Err(KernelFailure::value_error(format!("tensor `{}` has a null data pointer", self.name)));
        }
        if !(ptr as usize).is_multiple_of(align_of::<T>()) {
            return Err(KernelFailure::value_error(format!(
                "tensor `{}` data at {ptr:p} is not aligned for {}",
                self.name,
                T::DTYPE
            )));
        }
        Ok(ptr.cast())
    }

    /// The elements as a slice, after checking dtype, device (CPU), layout (contiguous), a
    /// non-null data pointer and alignment.
    ///
    /// # Safety
    /// The data must be valid host memory holding the tensor's elements for `'a`, not written
    /// to while the slice lives.
    pub unsafe fn as_slice<T: Element>(&self) -> Result<&'a [T], KernelFailure> {
        let ptr = self.checked_ptr::<T>()?;
        // SAFETY: checked non-null, aligned, host memory; the caller vouches for validity.
        Ok(unsafe { core::slice::from_raw_parts(ptr, self.numel()) })
    }

    /// The elements as a mutable slice, after the checks of [`as_slice`](Self::as_slice).
    ///
    /// # Safety
    /// As for [`as_slice`](Self::as_slice), and no other reference to the memory may exist while
    /// the slice lives (check [`overlaps`](Self::overlaps) against the other arguments).
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn as_mut_slice<T: Element>(&self) -> Result<&'a mut [T], KernelFailure> {
        let ptr = self.checked_ptr::<T>()?;
        // SAFETY: as above, plus exclusivity from the caller.
        Ok(unsafe { core::slice::from_raw_parts_mut(ptr, self.numel()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor(data: &mut [f32], shape: &mut [i64], strides: Option<&mut [i64]>) -> DLTensor {
        DLTensor {
            data: data.as_mut_ptr().cast(),
            device: DLDevice::CPU,
            ndim: shape.len() as i32,
            dtype: DLDataType::F32,
            shape: shape.as_mut_ptr(),
            strides: strides.map_or(core::ptr::null_mut(), |s| s.as_mut_ptr()),
            byte_offset: 0,
        }
    }

    #[test]
    fn arguments_convert_like_tvm_ffi() {
        let raw = [TVMFFIAny::float(0.5), TVMFFIAny::int(3), TVMFFIAny::bool(true), TVMFFIAny::none()];
        let args = KernelArgs::new(&raw);
        assert_eq!(args.f64(0, "eps").unwrap(), 0.5);
        assert_eq!(args.f64(1, "eps").unwrap(), 3.0);
        assert_eq!(args.i64(2, "n").unwrap(), 1);
        assert!(args.bool(1, "flag").unwrap());
        assert!(args.is_none(3) && args.is_none(9));
        let err = args.i64(0, "n").unwrap_err();
        assert_eq!(err.kind(), "TypeError");
        assert_eq!(err.message(), "argument 0 (`n`) must be an integer, got a float");
        assert_eq!(args.tensor(1, "x").unwrap_err().message(), "argument 1 (`x`) must be a tensor, got an integer");
        assert_eq!(args.f64(7, "eps").unwrap_err().message(), "missing argument 7 (`eps`)");
        assert_eq!(args.expect_count(2, "f(a, b)").unwrap_err().message(), "f(a, b) takes 2 arguments, got 4");
    }

    #[test]
    fn tensors_are_checked_before_use() {
        let mut data = [1f32, 2., 3., 4., 5., 6.];
        let mut shape = [2i64, 3];
        let mut t = tensor(&mut data, &mut shape, None);
        let raw = [TVMFFIAny::dl_tensor(&mut t)];
        let x = KernelArgs::new(&raw).tensor(0, "x").unwrap();
        assert_eq!((x.shape(), x.numel(), x.is_contiguous()), ([2i64, 3].as_slice(), 6, true));
        // SAFETY: `data` is alive and not written while the slice lives.
        assert_eq!(unsafe { x.as_slice::<f32>() }.unwrap(), &[1., 2., 3., 4., 5., 6.]);
        // SAFETY: the dtype check fails before any memory is touched.
        let err = unsafe { x.as_slice::<i64>() }.unwrap_err();
        assert_eq!(err.message(), "tensor `x` has dtype float32, expected int64");

        // Transposed strides are not contiguous; extent-1 dims may have any stride.
        let mut strides = [1i64, 2];
        let t = tensor(&mut data, &mut shape, Some(&mut strides));
        let x = TensorArg::new(&t, "x").unwrap();
        assert!(!x.is_contiguous());
        assert!(x.expect_contiguous().unwrap_err().message().contains("not contiguous"));
        let mut shape1 = [1i64, 6];
        let mut strides1 = [99i64, 1];
        let t = tensor(&mut data, &mut shape1, Some(&mut strides1));
        assert!(TensorArg::new(&t, "x").unwrap().is_contiguous());

        let mut t = tensor(&mut data, &mut shape, None);
        t.device = DLDevice::cuda(0);
        let err = TensorArg::new(&t, "x").unwrap().expect_cpu().unwrap_err();
        assert_eq!(err.message(), "tensor `x` is on cuda:0; this kernel runs on the CPU");

        let mut t = tensor(&mut data, &mut shape, None);
        t.ndim = -1;
        assert!(TensorArg::new(&t, "x").unwrap_err().message().contains("negative ndim"));
        t.ndim = 2;
        t.shape = core::ptr::null_mut();
        assert!(TensorArg::new(&t, "x").unwrap_err().message().contains("null shape"));
        let mut t = tensor(&mut data, &mut shape, None);
        t.data = core::ptr::null_mut();
        // SAFETY: the null check fails before any memory is touched.
        assert!(unsafe { TensorArg::new(&t, "x").unwrap().as_slice::<f32>() }.unwrap_err().message().contains("null"));
        let raw = [TVMFFIAny::dl_tensor(core::ptr::null_mut())];
        assert!(KernelArgs::new(&raw).tensor(0, "x").unwrap_err().message().contains("null tensor"));
    }

    #[test]
    fn overlap_is_detected() {
        let mut data = [0f32; 8];
        let mut shape = [4i64];
        let a = tensor(&mut data, &mut shape, None);
        let mut b = a;
        b.byte_offset = 8; // elements 2..6
        let mut c = a;
        c.byte_offset = 16; // elements 4..8
        let (a, b, c) =
            (TensorArg::new(&a, "a").unwrap(), TensorArg::new(&b, "b").unwrap(), TensorArg::new(&c, "c").unwrap());
        assert!(a.overlaps(&b) && b.overlaps(&c));
        assert!(!a.overlaps(&c));
    }

    fn failing(args: KernelArgs<'_>) -> Result<(), KernelFailure> {
        let n = args.i64(0, "n")?;
        if n == 0 {
            panic!("boom {n}");
        }
        Err(KernelFailure::value_error(format!("n = {n}")))
    }

    unsafe extern "C" fn sink(ctx: *mut c_void, kind: *const TVMFFIByteArray, message: *const TVMFFIByteArray) {
        // SAFETY: ctx is the test's `Vec<String>`; the arrays are valid during the call.
        unsafe {
            let out = &mut *ctx.cast::<Vec<String>>();
            out.push(String::from_utf8_lossy((*kind).as_bytes()).into_owned());
            out.push(String::from_utf8_lossy((*message).as_bytes()).into_owned());
        }
    }

    #[test]
    fn failures_and_panics_reach_the_error_channel() {
        let take = |out: &mut Vec<String>| {
            // SAFETY: `sink` accepts a `Vec<String>` context.
            unsafe { take_error((out as *mut Vec<String>).cast(), sink) }
        };
        let mut out = Vec::new();
        assert_eq!(take(&mut out), 1, "nothing pending yet");
        let args = [TVMFFIAny::int(5)];
        // SAFETY: one initialised argument.
        assert_eq!(unsafe { run_export("failing", args.as_ptr(), 1, failing) }, -1);
        assert_eq!(take(&mut out), 0);
        assert_eq!(out, ["ValueError", "n = 5"]);
        assert_eq!(take(&mut out), 1, "taking clears the error");

        let args = [TVMFFIAny::int(0)];
        // SAFETY: as above.
        assert_eq!(unsafe { run_export("failing", args.as_ptr(), 1, failing) }, -1);
        out.clear();
        assert_eq!(take(&mut out), 0);
        assert_eq!(out, ["RuntimeError", "failing: kernel panicked: boom 0"]);

        // SAFETY: a null array with a count is refused before it is read.
        assert_eq!(unsafe { run_export("failing", core::ptr::null(), 2, failing) }, -1);
        out.clear();
        take(&mut out);
        assert!(out[1].contains("invalid argument array"), "{out:?}");
    }
}
