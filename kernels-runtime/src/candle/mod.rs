//! Kernel calls on [candle](https://github.com/huggingface/candle) 0.11 tensors (feature
//! `candle`; CUDA storage with feature `candle-cuda`), and `#[kernelize]` on candle layers.
//!
//! - [`call`] / [`with_args`]: one call on existing tensors, each named by its role
//!   ([`CandleArg::input`], [`CandleArg::output`], …): the storages are locked for the call
//!   and outputs are written in place. Allocate outputs with candle (`Tensor::zeros`, or
//!   `Tensor::empty` when the kernel writes every element).
//! - `#[kernelize]`: a candle `Tensor` is a kernel input or field ([`CandleInput`], read-locked
//!   until the kernel has run) and, described by [`output`] / [`output_like`], a kernel output
//!   ([`CandleOutput`], a new tensor the kernel writes). See the README for a layer.
//! - [`CandleInput`] / [`CandleOutput`]: one tensor at a time, owning what keeps its memory
//!   valid, for callers that gather a call's arguments one by one.
//! - [`dl_dtype`], [`candle_dtype`], [`dl_device`], [`backend_of`]: candle's dtypes and devices in
//!   DLPack terms.
//!
//! ```no_run
//! use candle_core::{DType, Device, Tensor};
//! use kernels_runtime::candle::{self as kc, CandleArg};
//! # fn run(silu_and_mul: &kernels_runtime::ffi::KernelFunction) -> Result<(), Box<dyn std::error::Error>> {
//! let x = Tensor::randn(0f32, 1.0, (4, 16), &Device::Cpu)?;
//! let out = Tensor::zeros((4, 8), x.dtype(), x.device())?;
//! // SAFETY: silu_and_mul(out, x) reads `x` and writes every element of `out`, nothing else.
//! unsafe { kc::call(silu_and_mul, &[CandleArg::output(&out), CandleArg::input(&x)])? };
//! # Ok(())
//! # }
//! ```
//!
//! # What a view holds
//!
//! - **dtype**: [`dl_dtype`]; the sub-byte floats candle stores one per byte (`F6E2M3`,
//!   `F6E3M2`, `F4`) are refused.
//! - **data**: the tensor's first element (storage base plus `start_offset` elements);
//!   `byte_offset` is always 0, as in PyTorch's DLPack export.
//! - **shape and strides**: inputs and outputs must be contiguous (compact row-major strides are
//!   passed), else [`CandleError::NonContiguous`]; nothing is copied behind the caller's back.
//!   [`CandleArg::strided_input`] passes candle's strides as they are.
//! - **bounds**: every element the layout addresses lies inside the storage (checked).
//! - **device**: `cpu:0`, or `cuda:<ordinal>` (feature `candle-cuda`); one device per call.
//!   Metal tensors are refused.
//!
//! # Soundness
//!
//! candle keeps a tensor's data in an `Arc<RwLock<Storage>>` shared by every tensor derived
//! from it (narrow, reshape, clones). For the duration of a [`call`]:
//!
//! - each distinct storage is locked once: for writing (through candle's `InplaceOp1`, which
//!   hands out `&mut` storage under the write lock) when an output lives in it, else for
//!   reading. All views into one storage derive from that one borrow, so an output and an
//!   input may share a storage (narrows of one buffer);
//! - storages are locked in address order, so calls on other threads cannot deadlock each
//!   other, and no storage is locked twice by one call;
//! - on CUDA, each slice's pointer is taken with cudarc's `device_ptr`/`device_ptr_mut` on
//!   candle's stream and its event guard is dropped only after the kernel is enqueued, so
//!   candle's cross-stream event tracking orders the kernel after earlier writes and later
//!   users after it;
//! - on CUDA, a call ([`call`], [`with_args`] or `#[kernelize]`) leaves the thread's current
//!   CUDA context as it found it (candle binds the tensors' context to wait, allocate and
//!   record, and a kernel may set its device): the context found before the call's first
//!   tensor is made current again when the call's last tensor is let go, so code after the
//!   call (the CUDA runtime API, another library) still runs on the device it chose. Candle's
//!   own ops leave the tensors' current. A [`CandleInput`] or [`CandleOutput`] made by hand is
//!   not a call: it restores nothing.
//!
//! A [`CandleInput`] holds its read lock (and a clone of the tensor) until dropped; each one
//! takes its own lock, so passing one storage twice this way can deadlock against a waiting
//! writer (candle's lock is task-fair): use [`call`] for such calls. A [`CandleOutput`]'s
//! storage is reachable only through it until [`CandleOutput::into_tensor`], so writing it
//! needs no lock.
//!
//! What no lock can promise is the kernel's side: that it reads only what the views describe,
//! writes only the outputs and, for a [`CandleOutput`] (every `#[kernelize]` output), writes
//! every element. That is the contract of the (`unsafe`) kernel call, and of a layer's mapping
//! in `kernels.toml`. Writing an output that shares storage with other tensors changes them too,
//! as candle's in-place ops do. Outputs carry no gradient: kernels are for inference.
//!
//! # Cost
//!
//! A [`CandleOutput`] is zero-filled on the CPU (one pass; host memory is never left
//! uninitialised) and not filled on CUDA (no `memset` before the kernel). The outputs of a
//! `#[kernelize]` call are filled on neither: its kernel writes them in full before anything
//! reads them, and a failed call drops them unread. [`output`] and [`output_like`] allocate
//! nothing: they broadcast one shared element. On CUDA, each tensor of a call costs what it
//! costs candle's own ops: the stream waits for the slice's pending work once, and the kernel's
//! read or write is recorded once, after the launch.

mod call;
#[cfg(feature = "candle-cuda")]
mod cuda;
mod held;
mod kernelize;
mod lock;
mod mapping;

use candle_core::DType;

use crate::ffi::{DLDevice, KernelError, MAX_ARGS, TensorError};

pub use call::{CandleArg, CandleTensor, call, with_args};
pub use candle_core;
pub use held::{CandleInput, CandleOutput};
pub use kernelize::{output, output_like};
pub use mapping::{backend_of, candle_dtype, dl_device, dl_dtype};

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
