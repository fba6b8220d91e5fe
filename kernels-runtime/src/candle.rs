//! Kernel calls on [candle](https://github.com/huggingface/candle) tensors (feature `candle`;
//! CUDA storage with feature `candle-cuda`).
//!
//! A call names each tensor's role ([`CandleArg`]): inputs are read, outputs are written.
//! [`with_args`] borrows the tensors' storage for the duration of a closure and hands it the
//! [`Arg`]s of a kernel call (one [`TensorView`] per tensor) and, on CUDA, candle's stream;
//! [`call`] does that and calls a [`KernelFunction`]. Outputs are candle tensors the caller
//! allocates, usually with [`output_zeros`] or [`output_uninit`].
//!
//! For callers that convert a call's arguments one at a time (each lending a view until the
//! call is made), [`CandleInput`] holds one tensor's storage read-locked while it lives, and
//! [`CandleOutput`] owns storage that candle allocated until the kernel has written it and
//! [`CandleOutput::into_tensor`] makes it a tensor. (candle hands out writable storage only
//! inside an `InplaceOp` callback, so an existing tensor can be written only within a scope:
//! [`with_args`].)
//!
//! For dispatch: [`tensor_backend`] gives the `(BackendKind, ordinal)` of a tensor's device,
//! [`dl_device`] its DLPack device.
//!
//! ```no_run
//! use candle_core::{DType, Device, Tensor};
//! use kernels_runtime::candle::{self as kc, CandleArg};
//! # fn run(silu_and_mul: &kernels_runtime::ffi::KernelFunction) -> Result<(), Box<dyn std::error::Error>> {
//! let x = Tensor::randn(0f32, 1.0, (4, 16), &Device::Cpu)?;
//! let out = kc::output_zeros((4, 8), x.dtype(), x.device())?;
//! // SAFETY: silu_and_mul(out, x) reads `x` and writes every element of `out`, nothing else.
//! unsafe { kc::call(silu_and_mul, &[CandleArg::Output(&out), CandleArg::Input(&x)])? };
//! # Ok(())
//! # }
//! ```
//!
//! # What a view holds
//!
//! - **dtype**: candle's dtype mapped by [`dl_dtype`] (`f32`, `f16`, `bf16`, `f64`, `u8`,
//!   `u32`, `i16`, `i32`, `i64`, `F8E4M3` as `float8_e4m3fn`, `F8E8M0` as `float8_e8m0fnu`);
//!   the sub-byte types candle stores one per byte (`F6E2M3`, `F6E3M2`, `F4`) are refused.
//! - **data**: the first element of the tensor: the storage's base address plus the layout's
//!   `start_offset` (in elements) times the element size. `byte_offset` is always 0, as in
//!   PyTorch's DLPack export, since some kernels ignore `byte_offset`.
//! - **shape and strides**: a contiguous tensor is passed with compact row-major strides (candle
//!   lets extent-1 dimensions carry any stride; compact strides address the same elements).
//!   Inputs and outputs must be contiguous, else [`CandleError::NonContiguous`] says so (call
//!   candle's `Tensor::contiguous` first); nothing is copied behind the caller's back.
//!   [`CandleArg::StridedInput`] passes candle's own strides, for kernels that read strided
//!   tensors (broadcast dimensions have stride 0).
//! - **bounds**: every element the layout addresses is checked to lie inside the storage.
//! - **device**: `cpu:0`, or `cuda:<ordinal>` (feature `candle-cuda`). Every tensor of a call
//!   must be on the same device. Metal tensors are refused.
//!
//! # Soundness
//!
//! candle keeps a tensor's data in an `Arc<RwLock<Storage>>` shared by every tensor derived
//! from it (narrow, reshape, clones). For the duration of the call:
//!
//! - each distinct storage is locked once: for writing (through candle's `InplaceOp1`, which
//!   hands out `&mut` storage under the write lock) when an [`Output`](CandleArg::Output) lives
//!   in it, else for reading (`Tensor::storage_and_layout`). The data pointers of all views into
//!   one storage derive from that one borrow, so an output and an input may even share a
//!   storage (narrows of one buffer);
//! - storages are locked in address order, so two calls on other threads that lock the same
//!   storages cannot deadlock each other, and a storage is never locked twice by one call;
//! - on CUDA, each slice's pointer is taken with cudarc's `device_ptr`/`device_ptr_mut` on
//!   candle's stream and its event guard is dropped only after the kernel is enqueued, so
//!   candle's cross-stream event tracking orders the kernel after earlier writes and later
//!   users after it.
//!
//! A [`CandleInput`] holds its read lock until dropped; a [`CandleOutput`]'s storage is
//! reachable only through it until `into_tensor`, so writing it needs no lock. On CUDA they
//! make candle's stream wait for pending work on the slice when the view is taken, and record
//! the kernel's access on the stream when dropped / turned into a tensor.
//!
//! What the lock cannot promise is the kernel's side: that it reads only what the views
//! describe and writes only the outputs. That is the contract of the (`unsafe`) kernel call.
//! Writing an output that shares storage with other tensors changes them too, as candle's own
//! in-place ops do. Outputs carry no gradient: kernels are for inference.

use core::cell::RefCell;
use core::ffi::c_void;
use core::fmt;

#[cfg(feature = "candle-cuda")]
use std::sync::Arc;

use candle_core::backend::{BackendDevice, BackendStorage};
use candle_core::cpu_backend::CpuDevice;
use candle_core::op::BackpropOp;
use candle_core::{CpuStorage, DType, Device, DeviceLocation, InplaceOp1, Layout, Shape, Storage, StorageRef, Tensor};

use crate::ffi::{
    Arg, DLDataType, DLDevice, DLDeviceType, KernelError, KernelFunction, MAX_ARGS, MAX_NDIM, Stream, TensorError,
    TensorView, abi::dtype_code,
};
use crate::variant::BackendKind;

pub use candle_core;

/// A kernel call on candle tensors failed before, or while, calling the kernel.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CandleError {
    /// The tensor's dtype has no DLPack equivalent a kernel could read correctly.
    #[error("candle dtype {dtype:?} cannot be passed to a kernel: {reason}")]
    UnsupportedDType {
        /// candle's dtype.
        dtype: DType,
        /// Why.
        reason: &'static str,
    },
    /// A tensor passed as contiguous is not.
    #[error(
        "{} is not contiguous (shape {shape:?}, strides {strides:?}); call `.contiguous()` on \
         it first, or pass it as a strided input if the kernel reads strided tensors",
        which(.index)
    )]
    NonContiguous {
        /// Position of the argument in the call (`None` for a single tensor).
        index: Option<usize>,
        /// Its shape.
        shape: Vec<usize>,
        /// Its strides, in elements.
        strides: Vec<usize>,
    },
    /// Tensors of one call live on different devices.
    #[error("argument {index} is on {found} but argument {first} is on {expected}; move them to one device")]
    DeviceMismatch {
        /// The first tensor argument.
        first: usize,
        /// Its device.
        expected: DLDevice,
        /// The argument on another device.
        index: usize,
        /// That device.
        found: DLDevice,
    },
    /// The tensor's device cannot be passed to kernels by this build.
    #[error("{} is on {device}: {reason}", which(.index))]
    UnsupportedDevice {
        /// Position of the argument in the call (`None` for a single tensor).
        index: Option<usize>,
        /// The device, as candle names it.
        device: String,
        /// Why, and what to do.
        reason: &'static str,
    },
    /// The layout addresses elements beyond the storage (never expected from candle; checked
    /// so that a view never reads outside it).
    #[error("{} addresses elements up to {end} but its storage holds {len}", which(.index))]
    OutOfBounds {
        /// Position of the argument in the call (`None` for a single tensor).
        index: Option<usize>,
        /// One past the last element addressed.
        end: usize,
        /// Elements in the storage.
        len: usize,
    },
    /// More arguments than a call passes.
    #[error("{given} arguments given; a kernel call passes at most {MAX_ARGS}")]
    TooManyArgs {
        /// Number of arguments given.
        given: usize,
    },
    /// The kernel cannot run on the stream candle uses for the tensors' device.
    #[error(
        "kernel `{function}` cannot be given a stream (its library does not link libtvm_ffi), \
         but the tensors' candle device {device} runs on a non-default stream; create the device \
         with `Device::new_cuda` (default stream) or use a kernel built against tvm-ffi"
    )]
    StreamUnsupported {
        /// The function called.
        function: String,
        /// The device.
        device: DLDevice,
    },
    /// A view could not be built (too many dimensions, extents beyond `i64`).
    #[error(transparent)]
    View(#[from] TensorError),
    /// The kernel failed.
    #[error(transparent)]
    Kernel(#[from] KernelError),
    /// candle failed (allocating an output, locking a storage).
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// "argument N" or "the tensor", for messages.
fn which(index: &Option<usize>) -> String {
    match index {
        Some(i) => format!("argument {i}"),
        None => "the tensor".to_owned(),
    }
}

impl From<CandleError> for candle_core::Error {
    fn from(error: CandleError) -> Self {
        match error {
            CandleError::Candle(e) => e,
            other => candle_core::Error::wrap(other),
        }
    }
}

/// One argument of a kernel call on candle tensors.
#[derive(Clone, Copy)]
pub enum CandleArg<'a> {
    /// A tensor the kernel reads. Must be contiguous (any storage offset).
    Input(&'a Tensor),
    /// A tensor the kernel reads with candle's strides as they are, for kernels that accept
    /// strided tensors.
    StridedInput(&'a Tensor),
    /// A tensor the kernel writes. Must be contiguous; its storage is locked for writing
    /// during the call.
    Output(&'a Tensor),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A bool.
    Bool(bool),
    /// `None`, for optional parameters.
    None,
}

impl fmt::Debug for CandleArg<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tensor = |f: &mut fmt::Formatter<'_>, role: &str, t: &Tensor| {
            f.debug_struct(role)
                .field("dtype", &t.dtype())
                .field("shape", &t.dims())
                .field("device", &t.device().location())
                .finish()
        };
        match self {
            CandleArg::Input(t) => tensor(f, "Input", t),
            CandleArg::StridedInput(t) => tensor(f, "StridedInput", t),
            CandleArg::Output(t) => tensor(f, "Output", t),
            CandleArg::Int(v) => f.debug_tuple("Int").field(v).finish(),
            CandleArg::Float(v) => f.debug_tuple("Float").field(v).finish(),
            CandleArg::Bool(v) => f.debug_tuple("Bool").field(v).finish(),
            CandleArg::None => f.write_str("None"),
        }
    }
}

impl From<i64> for CandleArg<'_> {
    fn from(value: i64) -> Self {
        CandleArg::Int(value)
    }
}

impl From<i32> for CandleArg<'_> {
    fn from(value: i32) -> Self {
        CandleArg::Int(value.into())
    }
}

impl From<f64> for CandleArg<'_> {
    fn from(value: f64) -> Self {
        CandleArg::Float(value)
    }
}

impl From<f32> for CandleArg<'_> {
    fn from(value: f32) -> Self {
        CandleArg::Float(value.into())
    }
}

impl From<bool> for CandleArg<'_> {
    fn from(value: bool) -> Self {
        CandleArg::Bool(value)
    }
}

// ---------------------------------------------------------------------------------------------
// Vocabulary: dtypes and devices
// ---------------------------------------------------------------------------------------------

/// The DLPack dtype of a candle dtype.
pub fn dl_dtype(dtype: DType) -> Result<DLDataType, CandleError> {
    Ok(match dtype {
        DType::U8 => DLDataType::U8,
        DType::U32 => DLDataType::U32,
        DType::I16 => DLDataType::I16,
        DType::I32 => DLDataType::I32,
        DType::I64 => DLDataType::I64,
        DType::BF16 => DLDataType::BF16,
        DType::F16 => DLDataType::F16,
        DType::F32 => DLDataType::F32,
        DType::F64 => DLDataType::F64,
        // The `float8` crate's E4M3 has the e4m3fn bit layout (bias 7, NaN = S.1111.111).
        DType::F8E4M3 => DLDataType::new(dtype_code::FLOAT8_E4M3FN, 8, 1),
        DType::F8E8M0 => DLDataType::new(dtype_code::FLOAT8_E8M0FNU, 8, 1),
        DType::F6E2M3 | DType::F6E3M2 | DType::F4 => {
            return Err(CandleError::UnsupportedDType {
                dtype,
                reason: "candle stores these sub-byte floats one per byte, a layout DLPack cannot describe",
            });
        }
        _ => return Err(CandleError::UnsupportedDType { dtype, reason: "a dtype newer than this kernels-runtime" }),
    })
}

/// The candle dtype of a DLPack dtype, when candle has one.
pub fn candle_dtype(dtype: DLDataType) -> Option<DType> {
    const E4M3FN: DLDataType = DLDataType::new(dtype_code::FLOAT8_E4M3FN, 8, 1);
    const E8M0FNU: DLDataType = DLDataType::new(dtype_code::FLOAT8_E8M0FNU, 8, 1);
    Some(match dtype {
        DLDataType::U8 => DType::U8,
        DLDataType::U32 => DType::U32,
        DLDataType::I16 => DType::I16,
        DLDataType::I32 => DType::I32,
        DLDataType::I64 => DType::I64,
        DLDataType::BF16 => DType::BF16,
        DLDataType::F16 => DType::F16,
        DLDataType::F32 => DType::F32,
        DLDataType::F64 => DType::F64,
        E4M3FN => DType::F8E4M3,
        E8M0FNU => DType::F8E8M0,
        _ => return None,
    })
}

/// The backend kind and ordinal of a candle device, for kernel dispatch.
pub fn backend_of(device: &Device) -> (BackendKind, usize) {
    match device.location() {
        DeviceLocation::Cpu => (BackendKind::Cpu, 0),
        DeviceLocation::Cuda { gpu_id } => (BackendKind::Cuda, gpu_id),
        DeviceLocation::Metal { gpu_id } => (BackendKind::Metal, gpu_id),
    }
}

/// The backend kind and ordinal of the device a tensor lives on.
pub fn tensor_backend(tensor: &Tensor) -> (BackendKind, usize) {
    backend_of(tensor.device())
}

/// The DLPack device of a candle device.
pub fn dl_device(device: &Device) -> DLDevice {
    let ordinal = |id: usize| i32::try_from(id).unwrap_or(i32::MAX);
    match device.location() {
        DeviceLocation::Cpu => DLDevice::CPU,
        DeviceLocation::Cuda { gpu_id } => DLDevice::cuda(ordinal(gpu_id)),
        DeviceLocation::Metal { gpu_id } => DLDevice::new(DLDeviceType::METAL, ordinal(gpu_id)),
    }
}

// ---------------------------------------------------------------------------------------------
// Outputs
// ---------------------------------------------------------------------------------------------

/// A zero-filled tensor for a kernel to write, allocated by candle on `device`.
pub fn output_zeros(shape: impl Into<Shape>, dtype: DType, device: &Device) -> Result<Tensor, CandleError> {
    Ok(Tensor::zeros(shape, dtype, device)?)
}

/// An uninitialised tensor for a kernel to write, allocated by candle on `device` (no fill
/// pass: what a kernel that writes every element of its output wants).
///
/// # Safety
/// Every element must be written (by the kernel) before anything reads the tensor, and the
/// tensor must be dropped unread if the kernel call fails.
pub unsafe fn output_uninit(shape: impl Into<Shape>, dtype: DType, device: &Device) -> Result<Tensor, CandleError> {
    // SAFETY: forwarded to the caller.
    Ok(unsafe { Tensor::empty(shape, dtype, device)? })
}

// ---------------------------------------------------------------------------------------------
// Calls
// ---------------------------------------------------------------------------------------------

/// Calls `function` with `args`: locks the tensors' storage ([`with_args`]) and runs the kernel
/// on the tensors' device, on candle's stream for CUDA tensors.
///
/// # Safety
/// The kernel's contract must hold for these arguments: it reads only the elements the views
/// describe, writes only tensors passed as [`CandleArg::Output`], and takes the arguments in
/// this order and of these kinds (see [`KernelFunction::call`]). An output allocated with
/// [`output_uninit`] must be fully written by the kernel.
pub unsafe fn call(function: &KernelFunction, args: &[CandleArg<'_>]) -> Result<(), CandleError> {
    with_args(args, |args, stream| match stream {
        // SAFETY: the caller guarantees the kernel's contract; `stream` is candle's stream of
        // the tensors' device, alive while the storages are locked.
        Some(stream) if function.accepts_stream() => Ok(unsafe { function.call_on_stream(stream, args) }?),
        // A kernel that cannot be given a stream runs on the default one: refused unless that
        // is candle's.
        Some(stream) if !stream.handle().is_null() => {
            Err(CandleError::StreamUnsupported { function: function.name().to_owned(), device: stream.device() })
        }
        // SAFETY: as above; on the CPU or candle's default stream nothing needs setting.
        _ => Ok(unsafe { function.call(args) }?),
    })?
}

/// Locks the storage of every tensor in `args`, builds the kernel arguments (a [`TensorView`]
/// per tensor, scalars as they are) and runs `body` with them and, for CUDA tensors, candle's
/// stream of their device (`None` on the CPU). The locks are held until `body` returns.
///
/// Fails before `body` runs when a tensor cannot be passed: dtype, layout, device (see the
/// [module docs](self)).
pub fn with_args<R>(
    args: &[CandleArg<'_>],
    body: impl FnOnce(&[Arg<'_>], Option<Stream>) -> R,
) -> Result<R, CandleError> {
    if args.len() > MAX_ARGS {
        return Err(CandleError::TooManyArgs { given: args.len() });
    }
    let plan = Plan::new(args)?;
    let ctx = LockCtx::new(&plan);
    let mut body = Some(body);
    let mut output = None;
    let mut locked = [Locked::EMPTY; MAX_ARGS];
    lock_from(&plan, &ctx, 0, &mut locked, &mut |locked| {
        let mut views = [None::<TensorView<'_>>; MAX_ARGS];
        for (i, arg) in args.iter().enumerate() {
            let (tensor, strided) = match *arg {
                CandleArg::Input(t) | CandleArg::Output(t) => (t, false),
                CandleArg::StridedInput(t) => (t, true),
                _ => continue,
            };
            views[i] = Some(view_of(plan.device, Some(i), tensor.layout(), strided, &locked[plan.storage_of[i]])?);
        }
        let mut call_args = [Arg::None; MAX_ARGS];
        for ((slot, arg), view) in call_args.iter_mut().zip(args).zip(&views) {
            *slot = match (*arg, view) {
                (_, Some(view)) => Arg::Tensor(view),
                (CandleArg::Int(v), None) => Arg::Int(v),
                (CandleArg::Float(v), None) => Arg::Float(v),
                (CandleArg::Bool(v), None) => Arg::Bool(v),
                _ => Arg::None,
            };
        }
        if let Some(body) = body.take() {
            output = Some(body(&call_args[..args.len()], ctx.stream(plan.device)));
        }
        Ok(())
    })?;
    Ok(output.expect("lock_from runs the body exactly once when it succeeds"))
}

// ---------------------------------------------------------------------------------------------
// One tensor at a time
// ---------------------------------------------------------------------------------------------

/// A tensor a kernel reads, its storage read-locked while this value lives: for callers that
/// gather a call's arguments one at a time, each lending a view.
///
/// Prefer [`with_args`] when tensors of one call may share a storage: each `CandleInput`
/// takes its own read lock, and a thread holding a read lock that asks for the same lock again
/// waits behind any writer already waiting for it (candle's task-fair `parking_lot` lock),
/// which never comes.
pub struct CandleInput<'t> {
    /// Held for its lock (and, on CUDA, read again on drop).
    #[cfg_attr(not(feature = "candle-cuda"), allow(dead_code))]
    storage: StorageRef<'t>,
    view: TensorView<'t>,
    #[cfg(feature = "candle-cuda")]
    stream: Option<Arc<cuda::CudaStream>>,
}

impl<'t> CandleInput<'t> {
    /// Read-locks `tensor`'s storage and views it; the tensor must be contiguous.
    pub fn new(tensor: &'t Tensor) -> Result<Self, CandleError> {
        Self::lock(tensor, false)
    }

    /// Like [`new`](Self::new), with candle's strides as they are, for kernels that read
    /// strided tensors.
    pub fn strided(tensor: &'t Tensor) -> Result<Self, CandleError> {
        Self::lock(tensor, true)
    }

    fn lock(tensor: &'t Tensor, strided: bool) -> Result<Self, CandleError> {
        let device = check_tensor(None, tensor)?;
        let (storage, layout) = tensor.storage_and_layout();
        #[cfg(feature = "candle-cuda")]
        let stream = match tensor.device() {
            Device::Cuda(cuda) => Some(cuda.cuda_stream()),
            _ => None,
        };
        let locked = match &*storage {
            Storage::Cpu(cpu) => cpu_read(cpu),
            // The stream waits for pending writes now; the read is recorded again on drop.
            #[cfg(feature = "candle-cuda")]
            Storage::Cuda(gpu) => cuda::read(gpu, cuda::expect(stream.as_deref())?, Ok)?,
            other => {
                return Err(CandleError::UnsupportedDevice {
                    index: None,
                    device: format!("{:?}", other.device().location()),
                    reason: "not supported by this build",
                });
            }
        };
        let view = view_of(device, None, layout, strided, &locked)?;
        Ok(Self {
            storage,
            view,
            #[cfg(feature = "candle-cuda")]
            stream,
        })
    }

    /// The view of the tensor, valid while `self` holds the lock.
    pub fn view(&self) -> TensorView<'_> {
        self.view
    }

    /// Where the tensor lives.
    pub fn device(&self) -> DLDevice {
        self.view.device()
    }

    /// The stream kernels reading this tensor run on: candle's stream of its CUDA device
    /// (`None` on the CPU). Pass it to [`KernelFunction::call_on_stream`].
    pub fn stream(&self) -> Option<Stream> {
        #[cfg(feature = "candle-cuda")]
        if let Some(stream) = &self.stream {
            // SAFETY: candle's stream of the tensor's device, kept alive by the `Arc`.
            return Some(unsafe { Stream::from_raw(self.device(), stream.cu_stream().cast()) });
        }
        None
    }
}

impl Drop for CandleInput<'_> {
    fn drop(&mut self) {
        // Record the read on the stream now that the kernel using the view is enqueued, so
        // later writers on other streams wait for it.
        #[cfg(feature = "candle-cuda")]
        if let (Storage::Cuda(gpu), Some(stream)) = (&*self.storage, &self.stream) {
            let _ = cuda::read(gpu, stream, |_| Ok(()));
        }
    }
}

impl fmt::Debug for CandleInput<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CandleInput").field("view", &self.view).finish_non_exhaustive()
    }
}

/// A kernel's output: storage allocated by candle on a device and owned by this value, so the
/// kernel writes memory nothing else reaches, until [`into_tensor`](Self::into_tensor) makes
/// it a (contiguous, gradient-free) tensor.
pub struct CandleOutput {
    storage: Storage,
    layout: Layout,
    device: DLDevice,
    #[cfg(feature = "candle-cuda")]
    stream: Option<Arc<cuda::CudaStream>>,
}

impl CandleOutput {
    /// A zero-filled output of `shape` and `dtype` on `device`.
    pub fn zeros(shape: impl Into<Shape>, dtype: DType, device: &Device) -> Result<Self, CandleError> {
        // SAFETY: zero-filled memory is initialised.
        unsafe { Self::alloc(shape.into(), dtype, device, true) }
    }

    /// An uninitialised output of `shape` and `dtype` on `device` (no fill pass).
    ///
    /// # Safety
    /// [`into_tensor`](Self::into_tensor) may only be called once every element was written
    /// (by a kernel that writes its whole output, whose call succeeded).
    pub unsafe fn uninit(shape: impl Into<Shape>, dtype: DType, device: &Device) -> Result<Self, CandleError> {
        // SAFETY: forwarded to the caller.
        unsafe { Self::alloc(shape.into(), dtype, device, false) }
    }

    /// # Safety
    /// With `zeroed == false`, as for [`uninit`](Self::uninit).
    unsafe fn alloc(shape: Shape, dtype: DType, device: &Device, zeroed: bool) -> Result<Self, CandleError> {
        dl_dtype(dtype)?;
        let dl = check_device(None, device)?;
        let unsupported = || CandleError::UnsupportedDevice {
            index: None,
            device: format!("{:?}", device.location()),
            reason: "not supported by this build",
        };
        let storage = match device {
            Device::Cpu if zeroed => Storage::Cpu(CpuDevice.zeros_impl(&shape, dtype)?),
            // SAFETY: the caller vouches that the memory is written before it is read.
            Device::Cpu => Storage::Cpu(unsafe { CpuDevice.alloc_uninit(&shape, dtype)? }),
            #[cfg(feature = "candle-cuda")]
            Device::Cuda(cuda) if zeroed => Storage::Cuda(cuda.zeros_impl(&shape, dtype)?),
            // SAFETY: as above.
            #[cfg(feature = "candle-cuda")]
            Device::Cuda(cuda) => Storage::Cuda(unsafe { cuda.alloc_uninit(&shape, dtype)? }),
            _ => return Err(unsupported()),
        };
        Ok(Self {
            storage,
            layout: Layout::contiguous(shape),
            device: dl,
            #[cfg(feature = "candle-cuda")]
            stream: match device {
                Device::Cuda(cuda) => Some(cuda.cuda_stream()),
                _ => None,
            },
        })
    }

    /// A writable view of the output, borrowing it mutably for the kernel call.
    pub fn view_mut(&mut self) -> Result<TensorView<'_>, CandleError> {
        let locked = match &mut self.storage {
            Storage::Cpu(cpu) => cpu_write(cpu),
            // The stream waits for pending work on the slice now; the write is recorded again
            // in `into_tensor`, after the kernel was enqueued.
            #[cfg(feature = "candle-cuda")]
            Storage::Cuda(gpu) => cuda::write(gpu, cuda::expect(self.stream.as_deref())?, Ok)?,
            other => {
                return Err(CandleError::UnsupportedDevice {
                    index: None,
                    device: format!("{:?}", other.device().location()),
                    reason: "not supported by this build",
                });
            }
        };
        view_of(self.device, None, &self.layout, false, &locked)
    }

    /// The output's shape.
    pub fn shape(&self) -> &Shape {
        self.layout.shape()
    }

    /// The output's dtype.
    pub fn dtype(&self) -> DType {
        self.storage.dtype()
    }

    /// Where the output lives.
    pub fn device(&self) -> DLDevice {
        self.device
    }

    /// The stream kernels writing this output run on: candle's stream of its CUDA device
    /// (`None` on the CPU). Pass it to [`KernelFunction::call_on_stream`].
    pub fn stream(&self) -> Option<Stream> {
        #[cfg(feature = "candle-cuda")]
        if let Some(stream) = &self.stream {
            // SAFETY: candle's stream of the output's device, kept alive by the `Arc`.
            return Some(unsafe { Stream::from_raw(self.device, stream.cu_stream().cast()) });
        }
        None
    }

    /// The output as a candle tensor (after the kernel call).
    pub fn into_tensor(self) -> Tensor {
        #[cfg(feature = "candle-cuda")]
        let mut this = self;
        #[cfg(not(feature = "candle-cuda"))]
        let this = self;
        // Record the kernel's write on the stream, so later users on other streams wait for it.
        #[cfg(feature = "candle-cuda")]
        if let (Storage::Cuda(gpu), Some(stream)) = (&mut this.storage, &this.stream) {
            let _ = cuda::write(gpu, stream, |_| Ok(()));
        }
        Tensor::from_storage(this.storage, this.layout.shape().clone(), BackpropOp::none(), false)
    }
}

impl fmt::Debug for CandleOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CandleOutput")
            .field("dtype", &self.dtype())
            .field("shape", &self.shape())
            .field("device", &self.device)
            .finish_non_exhaustive()
    }
}

// ---------------------------------------------------------------------------------------------
// Internals
// ---------------------------------------------------------------------------------------------

/// Checks that `tensor` (argument `index`) can be passed: a dtype with a DLPack equivalent, on a
/// device this build supports. Returns its device.
fn check_tensor(index: Option<usize>, tensor: &Tensor) -> Result<DLDevice, CandleError> {
    dl_dtype(tensor.dtype())?;
    check_device(index, tensor.device())
}

fn check_device(index: Option<usize>, device: &Device) -> Result<DLDevice, CandleError> {
    let dl = dl_device(device);
    let unsupported =
        |reason| CandleError::UnsupportedDevice { index, device: format!("{:?}", device.location()), reason };
    if dl.device_type == DLDeviceType::METAL {
        return Err(unsupported("kernels on candle Metal tensors are not supported; move the tensors to the CPU"));
    }
    if cfg!(not(feature = "candle-cuda")) && dl.device_type == DLDeviceType::CUDA {
        return Err(unsupported("kernels-runtime was built without its `candle-cuda` feature; enable it"));
    }
    Ok(dl)
}

/// Which storages a call touches, in lock order, and how.
struct Plan<'t> {
    /// The device of every tensor.
    device: DLDevice,
    /// Distinct storages, sorted by address: its address, one tensor living in it, and whether
    /// any output lives in it.
    storages: [Option<(usize, &'t Tensor, bool)>; MAX_ARGS],
    count: usize,
    /// For each argument, the index of its storage in `storages` (tensors only).
    storage_of: [usize; MAX_ARGS],
}

impl<'t> Plan<'t> {
    fn new(args: &[CandleArg<'t>]) -> Result<Self, CandleError> {
        let mut plan = Plan { device: DLDevice::CPU, storages: [None; MAX_ARGS], count: 0, storage_of: [0; MAX_ARGS] };
        let mut ids = [None::<usize>; MAX_ARGS];
        let mut first = None;
        for (index, arg) in args.iter().enumerate() {
            let (tensor, writes) = match *arg {
                CandleArg::Input(t) | CandleArg::StridedInput(t) => (t, false),
                CandleArg::Output(t) => (t, true),
                _ => continue,
            };
            let device = check_tensor(Some(index), tensor)?;
            match first {
                None => {
                    first = Some(index);
                    plan.device = device;
                }
                Some(first) if device != plan.device => {
                    return Err(CandleError::DeviceMismatch { first, expected: plan.device, index, found: device });
                }
                Some(_) => {}
            }
            // The storage's identity: the address of the `Storage` inside its lock, fixed for
            // the tensor's life. The read lock is released at once: nothing is held across
            // tensors yet, so a storage that another argument will write is not locked twice.
            let id = {
                let (storage, _) = tensor.storage_and_layout();
                core::ptr::from_ref::<Storage>(&storage).addr()
            };
            ids[index] = Some(id);
            match plan.storages[..plan.count].iter_mut().flatten().find(|(s, _, _)| *s == id) {
                Some(entry) => entry.2 |= writes,
                None => {
                    plan.storages[plan.count] = Some((id, tensor, writes));
                    plan.count += 1;
                }
            }
        }
        // Lock order: by address, the same in every call.
        plan.storages[..plan.count].sort_unstable_by_key(|s| s.map(|(id, _, _)| id));
        for (slot, id) in plan.storage_of.iter_mut().zip(ids) {
            if let Some(id) = id {
                *slot =
                    plan.storages[..plan.count].iter().position(|s| s.is_some_and(|(s, _, _)| s == id)).unwrap_or(0);
            }
        }
        Ok(plan)
    }
}

/// What a locked storage provides: its base address (host pointer or device address), its
/// length in elements and its dtype.
#[derive(Clone, Copy)]
struct Locked {
    base: *mut c_void,
    len: usize,
    dtype: DType,
}

impl Locked {
    const EMPTY: Self = Self { base: core::ptr::null_mut(), len: 0, dtype: DType::U8 };
}

/// Base pointer and length of a CPU storage read through `&`.
fn cpu_read(storage: &CpuStorage) -> Locked {
    macro_rules! read {
        ($($variant:ident),*) => {
            match storage {
                $(CpuStorage::$variant(v) => (v.as_ptr().cast::<c_void>().cast_mut(), v.len()),)*
            }
        };
    }
    let (base, len) = read!(U8, U32, I16, I32, I64, BF16, F16, F32, F64, F8E4M3, F6E2M3, F6E3M2, F4, F8E8M0);
    Locked { base, len, dtype: storage.dtype() }
}

/// Base pointer and length of a CPU storage borrowed mutably.
fn cpu_write(storage: &mut CpuStorage) -> Locked {
    let dtype = storage.dtype();
    macro_rules! write {
        ($($variant:ident),*) => {
            match storage {
                $(CpuStorage::$variant(v) => (v.as_mut_ptr().cast::<c_void>(), v.len()),)*
            }
        };
    }
    let (base, len) = write!(U8, U32, I16, I32, I64, BF16, F16, F32, F64, F8E4M3, F6E2M3, F6E3M2, F4, F8E8M0);
    Locked { base, len, dtype }
}

/// A mutable borrow of a storage, handed out by candle under its write lock.
enum StorageMut<'s> {
    Cpu(&'s mut CpuStorage),
    #[cfg(feature = "candle-cuda")]
    Cuda(&'s mut candle_core::CudaStorage),
}

/// An `InplaceOp1` that runs a closure with the `&mut` storage candle hands it.
struct Exclusive<F>(RefCell<F>);

impl<F: FnMut(StorageMut<'_>)> InplaceOp1 for Exclusive<F> {
    fn name(&self) -> &'static str {
        "kernels-runtime kernel call"
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, _: &Layout) -> candle_core::Result<()> {
        let mut f = self.0.try_borrow_mut().map_err(candle_core::Error::wrap)?;
        f(StorageMut::Cpu(storage));
        Ok(())
    }

    #[cfg(feature = "candle-cuda")]
    fn cuda_fwd(&self, storage: &mut candle_core::CudaStorage, _: &Layout) -> candle_core::Result<()> {
        let mut f = self.0.try_borrow_mut().map_err(candle_core::Error::wrap)?;
        f(StorageMut::Cuda(storage));
        Ok(())
    }
}

/// Per-call state shared by the lock levels: the CUDA stream the kernel runs on.
struct LockCtx {
    #[cfg(feature = "candle-cuda")]
    stream: Option<std::sync::Arc<cuda::CudaStream>>,
}

#[cfg(not(feature = "candle-cuda"))]
impl LockCtx {
    fn new(_: &Plan<'_>) -> Self {
        Self {}
    }

    fn stream(&self, _: DLDevice) -> Option<Stream> {
        None
    }
}

#[cfg(feature = "candle-cuda")]
impl LockCtx {
    /// Takes the stream of the first CUDA tensor's candle device. Tensors of other candle
    /// devices with the same ordinal may use other streams: cudarc's event tracking (the
    /// guards of `cuda::read`/`cuda::write`) orders the call after their pending work.
    fn new(plan: &Plan<'_>) -> Self {
        let stream = plan.storages[..plan.count].iter().flatten().find_map(|(_, tensor, _)| match tensor.device() {
            Device::Cuda(device) => Some(device.cuda_stream()),
            _ => None,
        });
        Self { stream }
    }

    /// The stream to hand to the kernel call.
    fn stream(&self, device: DLDevice) -> Option<Stream> {
        let stream = self.stream.as_ref()?;
        // SAFETY: candle's stream of `device`, kept alive by the `Arc` in `self`, which
        // outlives the call.
        Some(unsafe { Stream::from_raw(device, stream.cu_stream().cast()) })
    }
}

/// Locks storage `depth` of `plan` (and, recursively, the following ones), then runs `body`
/// with every storage's [`Locked`]. Each level keeps its guard alive until `body` returned.
#[cfg_attr(not(feature = "candle-cuda"), allow(clippy::only_used_in_recursion))]
fn lock_from(
    plan: &Plan<'_>,
    ctx: &LockCtx,
    depth: usize,
    locked: &mut [Locked; MAX_ARGS],
    body: &mut dyn FnMut(&[Locked; MAX_ARGS]) -> Result<(), CandleError>,
) -> Result<(), CandleError> {
    let Some(Some((_, tensor, writes))) = plan.storages[..plan.count].get(depth).copied() else {
        return body(locked);
    };
    if writes {
        let mut result = Ok(());
        let op = Exclusive(RefCell::new(|storage: StorageMut<'_>| {
            result = match storage {
                StorageMut::Cpu(storage) => {
                    locked[depth] = cpu_write(storage);
                    lock_from(plan, ctx, depth + 1, locked, body)
                }
                #[cfg(feature = "candle-cuda")]
                StorageMut::Cuda(storage) => cuda::expect(ctx.stream.as_deref()).and_then(|stream| {
                    cuda::write(storage, stream, |l| {
                        locked[depth] = l;
                        lock_from(plan, ctx, depth + 1, locked, body)
                    })
                }),
            };
        }));
        tensor.inplace_op1(&op)?;
        result
    } else {
        let (storage, _) = tensor.storage_and_layout();
        match &*storage {
            Storage::Cpu(storage) => {
                locked[depth] = cpu_read(storage);
                lock_from(plan, ctx, depth + 1, locked, body)
            }
            #[cfg(feature = "candle-cuda")]
            Storage::Cuda(storage) => cuda::read(storage, cuda::expect(ctx.stream.as_deref())?, |l| {
                locked[depth] = l;
                lock_from(plan, ctx, depth + 1, locked, body)
            }),
            // Refused in `Plan::new`.
            other => Err(CandleError::UnsupportedDevice {
                index: None,
                device: format!("{:?}", other.device().location()),
                reason: "not supported by this build",
            }),
        }
    }
}

/// The view of a tensor with `layout` (argument `index`) into its locked storage.
fn view_of<'v>(
    device: DLDevice,
    index: Option<usize>,
    layout: &Layout,
    strided: bool,
    locked: &Locked,
) -> Result<TensorView<'v>, CandleError> {
    let dims = layout.dims();
    let dtype = dl_dtype(locked.dtype)?;
    if dims.len() > MAX_NDIM {
        return Err(TensorError::TooManyDims { ndim: dims.len() }.into());
    }
    if !strided && !layout.is_contiguous() {
        return Err(CandleError::NonContiguous { index, shape: dims.to_vec(), strides: layout.stride().to_vec() });
    }
    let overflow = || TensorError::Overflow { shape: dims.to_vec() };
    let to_i64 = |v: usize| i64::try_from(v).map_err(|_| overflow());
    let mut shape = [0i64; MAX_NDIM];
    for (slot, &d) in shape.iter_mut().zip(dims) {
        *slot = to_i64(d)?;
    }
    let shape = &shape[..dims.len()];
    // One past the last element addressed, checked against the storage.
    let start = layout.start_offset();
    let numel: usize = dims.iter().product();
    let end = if numel == 0 {
        start
    } else if strided {
        let last =
            dims.iter().zip(layout.stride()).try_fold(start, |acc, (&d, &s)| (d - 1).checked_mul(s)?.checked_add(acc));
        last.and_then(|l| l.checked_add(1)).ok_or_else(overflow)?
    } else {
        start.checked_add(numel).ok_or_else(overflow)?
    };
    if end > locked.len {
        return Err(CandleError::OutOfBounds { index, end, len: locked.len });
    }
    let mut strides = [0i64; MAX_NDIM];
    let strides = if strided {
        for (slot, &s) in strides.iter_mut().zip(layout.stride()) {
            *slot = to_i64(s)?;
        }
        Some(&strides[..dims.len()])
    } else {
        None
    };
    // `start` is within the storage (checked above), so this stays inside its allocation.
    let data = locked.base.cast::<u8>().wrapping_add(start * locked.dtype.size_in_bytes()).cast::<c_void>();
    // SAFETY: `data` is the tensor's first element inside its locked storage, on `device`,
    // holding `dtype` elements; the shape and strides address only elements of the storage
    // (checked). The caller holds the lock while the view is used, and outputs come from
    // write-locked storages.
    Ok(unsafe { TensorView::from_raw_parts(data, device, dtype, shape, strides, 0)? })
}

#[cfg(feature = "candle-cuda")]
mod cuda {
    //! CUDA storage: device pointers on candle's stream, with cudarc's event guards held for
    //! the call.

    use core::ffi::c_void;

    use candle_core::CudaStorage;
    use candle_core::backend::BackendStorage;
    use candle_core::cuda_backend::CudaStorageSlice;
    pub(super) use candle_core::cuda_backend::cudarc::driver::CudaStream;
    use candle_core::cuda_backend::cudarc::driver::{DevicePtr, DevicePtrMut};

    use super::{CandleError, Locked};

    fn address(ptr: u64) -> *mut c_void {
        core::ptr::without_provenance_mut(ptr as usize)
    }

    /// The stream of the call, or an error if there is none (no CUDA tensor seen).
    pub(super) fn expect(stream: Option<&CudaStream>) -> Result<&CudaStream, CandleError> {
        stream.ok_or_else(|| CandleError::Candle(candle_core::Error::Msg("a CUDA tensor without its stream".into())))
    }

    /// Runs `then` with the base of `storage`, read on `stream`: `stream` first waits for the
    /// slice's pending writes, and the read is recorded on `stream` when `then` has returned
    /// (after the kernel was enqueued).
    pub(super) fn read<R>(
        storage: &CudaStorage,
        stream: &CudaStream,
        then: impl FnOnce(Locked) -> Result<R, CandleError>,
    ) -> Result<R, CandleError> {
        let dtype = storage.dtype();
        macro_rules! read {
            ($($variant:ident),*) => {
                match &storage.slice {
                    $(CudaStorageSlice::$variant(slice) => {
                        let (ptr, _record_on_drop) = slice.device_ptr(stream);
                        then(Locked { base: address(ptr), len: slice.len(), dtype })
                    })*
                }
            };
        }
        read!(U8, U32, I16, I32, I64, BF16, F16, F32, F64, F8E4M3, F6E2M3, F6E3M2, F4, F8E8M0)
    }

    /// Runs `then` with the base of `storage`, written on `stream`: `stream` first waits for
    /// the slice's pending reads and writes, and the write is recorded on `stream` when `then`
    /// has returned (after the kernel was enqueued).
    pub(super) fn write<R>(
        storage: &mut CudaStorage,
        stream: &CudaStream,
        then: impl FnOnce(Locked) -> Result<R, CandleError>,
    ) -> Result<R, CandleError> {
        let dtype = storage.dtype();
        macro_rules! write {
            ($($variant:ident),*) => {
                match &mut storage.slice {
                    $(CudaStorageSlice::$variant(slice) => {
                        let len = slice.len();
                        let (ptr, _record_on_drop) = slice.device_ptr_mut(stream);
                        then(Locked { base: address(ptr), len, dtype })
                    })*
                }
            };
        }
        write!(U8, U32, I16, I32, I64, BF16, F16, F32, F64, F8E4M3, F6E2M3, F6E3M2, F4, F8E8M0)
    }
}
