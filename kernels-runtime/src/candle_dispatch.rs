//! `#[kernelize]` on candle layers (feature `candle`): candle [`Tensor`]s as kernel inputs,
//! fields and outputs, and [`DispatchError`] as a `candle_core::Error`, so a layer keeps
//! candle's signature:
//!
//! ```
//! use candle_core::{D, Device, Result, Tensor};
//! use kernels_runtime::candle_dispatch::output_like;
//! use kernels_runtime::kernelize;
//! # static __KERNELS_REGISTRY: kernels_runtime::registry::Registry = kernels_runtime::registry::Registry::EMPTY;
//!
//! #[kernelize(
//!     layer = "RMSNorm",
//!     forward = fn forward(&self, x: &Tensor) -> Result<Tensor>,
//!     output = output_like(x)?,             // shape, dtype and device of the result
//!     args = (output, x, self.weight, self.eps),
//! )]
//! pub struct RmsNorm {
//!     weight: Tensor,
//!     eps: f32,
//! }
//!
//! impl RmsNorm {
//!     /// The reference, and the fallback: plain candle.
//!     pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
//!         let scale = (x.sqr()?.mean_keepdim(D::Minus1)? + f64::from(self.eps))?.sqrt()?;
//!         x.broadcast_div(&scale)?.broadcast_mul(&self.weight)
//!     }
//! }
//!
//! # fn main() -> Result<()> {
//! let norm = RmsNorm { weight: Tensor::ones(4, candle_core::DType::F32, &Device::Cpu)?, eps: 1e-6 };
//! let x = Tensor::new(&[[1f32, 2.0, 3.0, 4.0]], &Device::Cpu)?;
//! let y = norm.kernel_forward(&x)?; // a kernel where kernels.toml maps one, else `forward`
//! # assert_eq!(y.to_vec2::<f32>()?, norm.forward(&x)?.to_vec2::<f32>()?);
//! # Ok(())
//! # }
//! ```
//!
//! # Inputs and fields
//!
//! A `Tensor` argument is passed as a [`CandleInput`]: its storage stays read-locked until the
//! kernel has run (a [`KernelValue::Held`] that also owns a clone of the tensor, so the lock
//! outlives no storage), viewed with the rules of [`crate::candle`]: contiguous (any storage
//! offset), a dtype with a DLPack equivalent, on the CPU or (feature `candle-cuda`) a CUDA
//! device. A tensor that breaks a rule makes the call fail with
//! [`DispatchError::Argument`] whose [`ArgError::Adapter`] holds the [`CandleError`] (for
//! a non-contiguous one: call `.contiguous()` first); nothing is copied behind the caller's
//! back. A layer dispatches on the device of its first tensor argument.
//!
//! Each tensor argument takes its own read lock: passing one storage twice in a call (the same
//! tensor, or two views of one buffer) locks it twice on one thread, which waits forever if
//! another thread is already waiting to write that storage (candle's task-fair lock). Use
//! [`crate::candle::with_args`] for such calls.
//!
//! # Outputs
//!
//! A `Tensor` used as a kernel output (`output = …`) describes the result: the kernel writes a
//! new contiguous tensor of its shape, dtype and device, allocated by candle (zero-filled)
//! when the call is made, which then replaces it. The kernel thus never writes memory that
//! another tensor shares, and the description costs nothing to make: [`output_like`] and
//! [`output`] broadcast one shared element. (The fill of the new tensor is one pass over it;
//! on CUDA one `memset`, enqueued before the kernel.) On CUDA the kernel's write is recorded on
//! candle's stream after the kernel was enqueued, so users on other streams wait for it.
//!
//! # Errors
//!
//! `From<DispatchError> for candle_core::Error` wraps the error with `candle_core::Error::wrap`,
//! so forwards keep returning `candle_core::Result` and `?` works on both sides. The message
//! is kept (``layer `RMSNorm`: …``), the type is not: candle's wrapped errors are only
//! `Display`. A layer whose callers must tell a kernel failure or a strict-mode refusal apart
//! by type declares its forward with an error type of its own that implements
//! `From<DispatchError>` (and `From<candle_core::Error>`).
//!
//! # Streams
//!
//! Kernels on CUDA tensors run on candle's stream of the tensors' device, set for the call
//! through `TVMFFIEnvSetStream` when it is not the default stream.

use core::fmt;
use std::sync::Mutex;

use candle_core::{DType, Device, Shape, Tensor};

use crate::candle::{CandleError, CandleInput, CandleOutput, dl_device};
use crate::dispatch::{AdapterError, ArgError, DispatchError, HeldTensor, KernelArg, KernelOutput, KernelValue};
use crate::ffi::{DLDevice, Stream, TensorView};

impl From<DispatchError> for candle_core::Error {
    fn from(error: DispatchError) -> Self {
        candle_core::Error::wrap(error)
    }
}

/// The description of a kernel output shaped, typed and placed like `like` (see the
/// [module docs](self)): one element of `like`'s dtype on its device, broadcast to its shape.
pub fn output_like(like: &Tensor) -> candle_core::Result<Tensor> {
    output(like.shape().clone(), like.dtype(), like.device())
}

/// The description of a kernel output of `shape` and `dtype` on `device` (see the
/// [module docs](self)): one element, broadcast. The element is made once per dtype and
/// device and shared by every description, so describing costs no allocation (nor, on CUDA,
/// a fill on the device); it is never read or written by kernel calls.
pub fn output(shape: impl Into<Shape>, dtype: DType, device: &Device) -> candle_core::Result<Tensor> {
    one_element(dtype, device)?.broadcast_as(shape)
}

/// A zero of `dtype` on `device`, shared.
fn one_element(dtype: DType, device: &Device) -> candle_core::Result<Tensor> {
    /// At most this many (dtype, device) pairs are kept; others get a fresh element.
    const KEEP: usize = 64;
    static ELEMENTS: Mutex<Vec<Tensor>> = Mutex::new(Vec::new());
    let mut elements = ELEMENTS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(t) = elements.iter().find(|t| t.dtype() == dtype && Tensor::device(t).same_device(device)) {
        return Ok(t.clone());
    }
    let t = Tensor::zeros((), dtype, device)?;
    if elements.len() < KEEP {
        elements.push(t.clone());
    }
    Ok(t)
}

fn adapter_error(error: CandleError) -> KernelValue<'static> {
    KernelValue::Invalid(ArgError::Adapter(AdapterError::new(error)))
}

impl KernelArg for Tensor {
    /// The tensor's storage, read-locked until the value (and every clone of it) is dropped.
    fn kernel_arg(&self) -> KernelValue<'_> {
        match HeldInput::lock(self) {
            Ok(held) => KernelValue::Held(std::rc::Rc::new(held)),
            Err(e) => adapter_error(e),
        }
    }

    fn device(&self) -> Option<DLDevice> {
        Some(dl_device(Tensor::device(self)))
    }
}

impl KernelOutput for Tensor {
    /// Replaces `self` by a new zero-filled tensor of its shape, dtype and device, and lends
    /// the kernel a writable view of it.
    fn kernel_output(&mut self) -> KernelValue<'_> {
        match fresh_output(self) {
            Ok(value) => value,
            Err(e) => adapter_error(e),
        }
    }
}

/// A read-locked input: the lock, its view, and a clone of the tensor that keeps the locked
/// storage alive.
struct HeldInput {
    /// Declared first: dropped (unlocked) before `_tensor`.
    input: CandleInput<'static>,
    view: TensorView<'static>,
    _tensor: Tensor,
}

impl HeldInput {
    fn lock(tensor: &Tensor) -> Result<Self, CandleError> {
        let input = CandleInput::new(tensor)?;
        // SAFETY: only the lifetimes change. The lock guard and the view refer to the
        // tensor's storage, which candle keeps in a shared heap allocation
        // (`Arc<RwLock<Storage>>` inside the tensor's `Arc`), not to the `Tensor` handle the
        // borrow was taken from; `_tensor` holds a clone of the tensor, so that allocation
        // lives until after `input` is dropped (field order), and the view is only lent out
        // borrowed from `self`.
        let (view, input) = unsafe {
            (
                core::mem::transmute::<TensorView<'_>, TensorView<'static>>(input.view()),
                core::mem::transmute::<CandleInput<'_>, CandleInput<'static>>(input),
            )
        };
        Ok(HeldInput { input, view, _tensor: tensor.clone() })
    }
}

impl HeldTensor for HeldInput {
    fn view(&self) -> &TensorView<'_> {
        &self.view
    }

    fn stream(&self) -> Option<Stream> {
        self.input.stream()
    }
}

impl fmt::Debug for HeldInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeldInput").field("view", &self.view).finish_non_exhaustive()
    }
}

/// Allocates the output `target` describes, makes it `target`, and returns a writable view of
/// it for the call.
fn fresh_output(target: &mut Tensor) -> Result<KernelValue<'_>, CandleError> {
    let mut output = CandleOutput::zeros(target.shape().clone(), target.dtype(), Tensor::device(target))?;
    let stream = output.stream();
    let view = output.view_mut()?;
    // SAFETY: only the lifetime changes. The view points into the storage's memory (a `Vec`'s
    // heap buffer, or device memory), which moving the storage into the tensor below does not
    // move. That tensor is the only handle to the storage and becomes `*target`, which the
    // returned value borrows mutably: nothing else can reach the memory while the kernel
    // writes it.
    let view = unsafe { core::mem::transmute::<TensorView<'_>, TensorView<'static>>(view) };
    *target = output.into_tensor();
    Ok(match stream {
        None => KernelValue::Tensor(view),
        // On CUDA, record the kernel's write on the stream once the call is done.
        Some(stream) => KernelValue::Held(std::rc::Rc::new(HeldOutput { view, stream, _tensor: target.clone() })),
    })
}

/// A CUDA output during the call: its view, and (on drop) the kernel's write recorded on the
/// stream.
struct HeldOutput {
    view: TensorView<'static>,
    stream: Stream,
    _tensor: Tensor,
}

impl HeldTensor for HeldOutput {
    fn view(&self) -> &TensorView<'_> {
        &self.view
    }

    fn stream(&self) -> Option<Stream> {
        Some(self.stream)
    }
}

impl fmt::Debug for HeldOutput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeldOutput").field("view", &self.view).finish_non_exhaustive()
    }
}

impl Drop for HeldOutput {
    fn drop(&mut self) {
        #[cfg(feature = "candle-cuda")]
        cuda::record_write(&self._tensor);
    }
}

#[cfg(feature = "candle-cuda")]
mod cuda {
    //! Recording a kernel's write of a CUDA output on candle's stream.

    use candle_core::cuda_backend::CudaStorageSlice;
    use candle_core::cuda_backend::cudarc::driver::DevicePtrMut;
    use candle_core::{CpuStorage, CudaStorage, Device, InplaceOp1, Layout, Tensor};

    /// Takes the storage's device pointer for writing on candle's stream and lets it go:
    /// cudarc records the write as an event on that stream, so later users on other streams
    /// wait for the kernel enqueued before.
    pub(super) fn record_write(tensor: &Tensor) {
        let Device::Cuda(device) = tensor.device() else { return };
        let _ = tensor.inplace_op1(&RecordWrite(device.cuda_stream()));
    }

    struct RecordWrite(std::sync::Arc<candle_core::cuda_backend::cudarc::driver::CudaStream>);

    impl InplaceOp1 for RecordWrite {
        fn name(&self) -> &'static str {
            "kernels-runtime record kernel write"
        }

        fn cpu_fwd(&self, _: &mut CpuStorage, _: &Layout) -> candle_core::Result<()> {
            Ok(())
        }

        fn cuda_fwd(&self, storage: &mut CudaStorage, _: &Layout) -> candle_core::Result<()> {
            macro_rules! record {
                ($($variant:ident),*) => {
                    match &mut storage.slice {
                        $(CudaStorageSlice::$variant(slice) => drop(slice.device_ptr_mut(&self.0)),)*
                    }
                };
            }
            record!(U8, U32, I16, I32, I64, BF16, F16, F32, F64, F8E4M3, F6E2M3, F6E3M2, F4, F8E8M0);
            Ok(())
        }
    }
}
