//! `#[kernelize]` on candle layers: a candle [`Tensor`] as a kernel input, field and output,
//! and [`DispatchError`] as a `candle_core::Error`, so a layer keeps candle's signature.
//!
//! ```
//! use candle_core::{D, Device, Result, Tensor};
//! use kernels_runtime::candle::output_like;
//! use kernels_runtime::kernelize;
//! # use kernels_runtime::registry::{LayerEntry, ModeSupport, Registry};
//! # use kernels_runtime::variant::BackendKind;
//! # static __KERNELS_REGISTRY: Registry = Registry {
//! #     layers: &[LayerEntry {
//! #         layer: "RMSNorm",
//! #         device: BackendKind::Cuda,
//! #         kernel: "ops",
//! #         function: "rms_norm",
//! #         capability: None,
//! #         mode: ModeSupport::Inference,
//! #         deterministic: false,
//! #         tolerance: None,
//! #     }],
//! #     ..Registry::EMPTY
//! # };
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
//! - **Inputs and fields** are passed as [`CandleInput`]s: read-locked until the kernel has run,
//!   with the rules of the [module docs](super) (contiguous, …). A tensor that breaks one fails
//!   the call with [`DispatchError::Argument`] holding the [`CandleError`]. A layer dispatches
//!   on the device of its first tensor argument. Each tensor takes its own read lock: passing
//!   one storage twice in a call can deadlock against a waiting writer; use
//!   [`call`](super::call) for such calls.
//! - **Outputs**: the `output = …` tensor only describes the result ([`output_like`],
//!   [`output`]); the call replaces it by a new [`CandleOutput`] of that shape, dtype and
//!   device, which the kernel must write in full (it is not filled before, on any device). On CUDA the
//!   kernel's write is recorded on candle's stream once it is enqueued.
//! - **Errors**: `From<DispatchError> for candle_core::Error` wraps the error
//!   (`candle_core::Error::wrap`): the message is kept, the type is not. A layer whose callers
//!   must tell errors apart by type declares a forward error type implementing
//!   `From<DispatchError>` and `From<candle_core::Error>`.
//! - **Streams**: kernels on CUDA tensors run on candle's stream of the tensors' device.

use core::fmt;
use std::rc::Rc;
use std::sync::Mutex;

use candle_core::{DType, Device, Shape, Tensor};

use crate::dispatch::{
    AdapterError, ArgError, CompareError, Difference, DispatchError, HeldTensor, KernelArg, KernelOutput, KernelTensor,
    KernelValue,
};
use crate::ffi::{DLDevice, Stream, TensorView, Value};
use crate::registry::Tolerance;

use super::held::Pending;
use super::mapping::{dl_device, dl_dtype};
use super::{CandleError, CandleInput, CandleOutput};

impl From<DispatchError> for candle_core::Error {
    fn from(error: DispatchError) -> Self {
        candle_core::Error::wrap(error)
    }
}

/// The description of a `#[kernelize]` output shaped, typed and placed like `like`: see
/// [`output`].
pub fn output_like(like: &Tensor) -> candle_core::Result<Tensor> {
    output(like.shape().clone(), like.dtype(), like.device())
}

/// The description of a `#[kernelize]` output of `shape` and `dtype` on `device`: one element,
/// broadcast. The call replaces it by a new tensor the kernel writes. The element is made once
/// per dtype and device and shared, so describing allocates nothing; no kernel call reads or
/// writes it.
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

fn adapter_error(error: CandleError) -> ArgError {
    ArgError::Adapter(AdapterError::new(error))
}

impl HeldTensor for CandleInput {
    fn view(&self) -> &TensorView<'_> {
        CandleInput::view(self)
    }

    fn stream(&self) -> Option<Stream> {
        CandleInput::stream(self)
    }
}

impl KernelArg for Tensor {
    /// The tensor's storage, read-locked until the value (and every clone of it) is dropped.
    fn kernel_arg(&self) -> KernelValue<'_> {
        #[cfg(feature = "candle-cuda")]
        if Tensor::device(self).is_cuda() {
            // Noted before candle binds the tensor's context for the stream wait.
            let context = super::cuda::keep_context();
            let input = CandleInput::new(self).map_err(adapter_error)?;
            return Ok(Value::Tensor(KernelTensor::Held(Rc::new(HeldInput { input, _context: context }))));
        }
        let input = CandleInput::new(self).map_err(adapter_error)?;
        Ok(Value::Tensor(KernelTensor::Held(Rc::new(input))))
    }

    fn device(&self) -> Option<DLDevice> {
        Some(dl_device(Tensor::device(self)))
    }
}

impl KernelOutput for Tensor {
    /// Replaces `self` by a new [`CandleOutput`] of its shape, dtype and device (made a tensor
    /// at once), and lends the kernel a writable view of it.
    fn kernel_output(&mut self) -> KernelValue<'_> {
        // Noted before candle binds the device's context to allocate.
        #[cfg(feature = "candle-cuda")]
        let context = if Tensor::device(self).is_cuda() { super::cuda::keep_context() } else { None };
        // SAFETY: a `#[kernelize]` call's kernel writes its outputs in full before anything
        // reads them (the call's contract); a failed call drops them unread.
        let output = unsafe { CandleOutput::new_unfilled(self.shape().clone(), self.dtype(), Tensor::device(self)) }
            .map_err(adapter_error)?;
        let stream = output.stream();
        // SAFETY: the tensor becomes `*self`, its only handle, which the returned value
        // borrows mutably: the view is used while the tensor lives and nothing else reaches it.
        let (tensor, view, pending) = unsafe { output.into_tensor_and_view() }.map_err(adapter_error)?;
        *self = tensor;
        Ok(Value::Tensor(match stream {
            None => KernelTensor::Made(view),
            // On CUDA, record the kernel's write on the stream once the call is done.
            Some(stream) => KernelTensor::Held(Rc::new(HeldOutput {
                _pending: pending,
                view,
                stream,
                _tensor: self.clone(),
                #[cfg(feature = "candle-cuda")]
                _context: context,
            })),
        }))
    }

    /// Compares on the host in f64 (copying device tensors there), with the tolerance given or
    /// the dtype's default.
    fn difference(&self, forward: &Self, tolerance: Option<Tolerance>) -> Result<Difference, CompareError> {
        if self.dims() != forward.dims() {
            return Err(CompareError::Shape { kernel: self.dims().to_vec(), forward: forward.dims().to_vec() });
        }
        if self.dtype() != forward.dtype() {
            return Err(CompareError::DtypeMismatch {
                kernel: format!("{:?}", self.dtype()),
                forward: format!("{:?}", forward.dtype()),
            });
        }
        let tolerance = match tolerance {
            Some(t) => t,
            None => Tolerance::for_dtype(dl_dtype(self.dtype()).map_err(AdapterError::new)?),
        };
        let values = |t: &Tensor| -> Result<Vec<f64>, CompareError> {
            let on_host = t.to_dtype(DType::F64).and_then(|t| t.flatten_all()).and_then(|t| t.to_vec1::<f64>());
            on_host.map_err(|e| CompareError::Adapter(AdapterError::new(e)))
        };
        Ok(Difference::between(values(self)?, values(forward)?, tolerance))
    }
}

/// A CUDA output during the call: its view, and (on drop) the kernel's write recorded on the
/// stream.
struct HeldOutput {
    // Field order is drop order: the write is recorded while the tensor still holds the slice.
    /// Records the kernel's write on the stream when dropped.
    _pending: Pending,
    view: TensorView<'static>,
    stream: Stream,
    /// Keeps the slice whose write event `pending` records alive.
    _tensor: Tensor,
    /// Makes the caller's CUDA context current again once the call's last value is gone
    /// (after the record above, which binds the tensor's).
    #[cfg(feature = "candle-cuda")]
    _context: Option<Rc<super::cuda::KeepContext>>,
}

/// A CUDA input during the call: the read-locked tensor, and the keeper of the caller's
/// context (dropped after the input's read is recorded, which binds the tensor's).
#[cfg(feature = "candle-cuda")]
struct HeldInput {
    input: CandleInput,
    _context: Option<Rc<super::cuda::KeepContext>>,
}

#[cfg(feature = "candle-cuda")]
impl HeldTensor for HeldInput {
    fn view(&self) -> &TensorView<'_> {
        self.input.view()
    }

    fn stream(&self) -> Option<Stream> {
        self.input.stream()
    }
}

#[cfg(feature = "candle-cuda")]
impl fmt::Debug for HeldInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.input.fmt(f)
    }
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
