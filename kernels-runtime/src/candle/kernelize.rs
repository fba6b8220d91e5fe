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
//!   [`output`]); the call replaces it by a new tensor of that shape, dtype and
//!   device, which the kernel must write in full (it is not filled before, on any device). On CUDA the
//!   kernel's write is recorded on candle's stream once it is enqueued.
//! - **Errors**: `From<DispatchError> for candle_core::Error` wraps the error
//!   (`candle_core::Error::wrap`): the message is kept, the type is not. A layer whose callers
//!   must tell errors apart by type declares a forward error type implementing
//!   `From<DispatchError>` and `From<candle_core::Error>`.
//! - **Streams**: kernels on CUDA tensors run on candle's stream of the tensors' device.

use core::fmt;
use std::rc::Rc;

use candle_core::{DType, Device, Shape, Tensor};

use crate::dispatch::{
    AdapterError, ArgError, CompareError, Difference, DispatchError, HeldTensor, KernelArg, KernelOutput, KernelTensor,
    KernelValue,
};
use crate::ffi::{DLDevice, Stream, TensorView, Value};
use crate::registry::Tolerance;

use super::held::Pending;
use super::mapping::{dl_device, dl_dtype};
use super::{CandleError, CandleInput};

impl From<DispatchError> for candle_core::Error {
    fn from(error: DispatchError) -> Self {
        candle_core::Error::wrap(error)
    }
}

/// The description of a `#[kernelize]` output shaped, typed and placed like `like`: see
/// [`output`].
pub fn output_like(like: &Tensor) -> candle_core::Result<Tensor> {
    describe(like.dims(), like.dtype(), like.device())
}

/// The description of a `#[kernelize]` output of `shape` and `dtype` on `device`: one element,
/// broadcast. The call replaces it by a new tensor the kernel writes. The element is made once
/// per dtype and device and shared, and the last descriptions made on a thread are handed out
/// again, so describing allocates nothing of the output's size (and, for a shape described
/// before, nothing at all); no kernel call reads or writes it.
pub fn output(shape: impl Into<Shape>, dtype: DType, device: &Device) -> candle_core::Result<Tensor> {
    describe(shape.into().dims(), dtype, device)
}

/// What [`describe`] keeps on a thread: shared zeros, one per dtype and device, and the last
/// descriptions made. Dropped when the thread ends.
#[derive(Default)]
struct Described {
    elements: Vec<Tensor>,
    outputs: Vec<Tensor>,
    /// The description the next new one replaces, once `outputs` is full.
    next: usize,
}

impl Drop for Described {
    fn drop(&mut self) {
        // When the thread ends, these may be the last handles of a device, whose release
        // destroys its library handles (cuBLAS, cuRAND), and those libraries panic on an error
        // there: a panic in a thread-local destructor aborts the process, so it stops here.
        let tensors = (core::mem::take(&mut self.outputs), core::mem::take(&mut self.elements));
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || drop(tensors)));
    }
}

/// A shared zero of `dtype` on `device`, broadcast to `dims`.
fn describe(dims: &[usize], dtype: DType, device: &Device) -> candle_core::Result<Tensor> {
    /// At most this many (dtype, device) pairs are kept per thread; others get a fresh element.
    const ELEMENTS: usize = 64;
    /// The descriptions kept per thread: a model's layers each describe a few shapes.
    const OUTPUTS: usize = 16;
    thread_local! {
        static DESCRIBED: core::cell::RefCell<Described> = core::cell::RefCell::new(Described::default());
    }
    let same = |t: &Tensor| t.dtype() == dtype && Tensor::device(t).same_device(device);
    DESCRIBED.with(|described| {
        let mut described = described.borrow_mut();
        if let Some(t) = described.outputs.iter().find(|t| t.dims() == dims && same(t)) {
            return Ok(t.clone());
        }
        let element = match described.elements.iter().find(|t| same(t)) {
            Some(t) => t.clone(),
            None => {
                let t = Tensor::zeros((), dtype, device)?;
                if described.elements.len() < ELEMENTS {
                    described.elements.push(t.clone());
                }
                t
            }
        };
        let output = element.broadcast_as(dims)?;
        if described.outputs.len() < OUTPUTS {
            described.outputs.push(output.clone());
        } else {
            let next = described.next;
            described.outputs[next] = output.clone();
            described.next = (next + 1) % OUTPUTS;
        }
        Ok(output)
    })
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
    #[inline]
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
    /// Replaces `self` by a new tensor of its shape, dtype and device (its memory not filled),
    /// and lends the kernel a writable view of it.
    #[inline]
    fn kernel_output(&mut self) -> KernelValue<'_> {
        // Noted before candle binds the device's context to allocate.
        #[cfg(feature = "candle-cuda")]
        let context = if Tensor::device(self).is_cuda() { super::cuda::keep_context() } else { None };
        // SAFETY: the tensor becomes `*self`, its only handle, which the returned value
        // borrows mutably: the view is used while the tensor lives and nothing else reaches it;
        // a `#[kernelize]` call's kernel writes its outputs in full before anything reads them
        // (the call's contract), and a failed call drops them unread.
        let (tensor, view, pending, stream) =
            unsafe { super::held::fresh_output(self.shape(), self.dtype(), Tensor::device(self)) }
                .map_err(adapter_error)?;
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
    _context: Option<super::cuda::KeepContext>,
}

/// A CUDA input during the call: the read-locked tensor, and the keeper of the caller's
/// context (dropped after the input's read is recorded, which binds the tensor's).
#[cfg(feature = "candle-cuda")]
struct HeldInput {
    input: CandleInput,
    _context: Option<super::cuda::KeepContext>,
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

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Storage, Tensor};

    use super::{output, output_like};

    /// The address of a tensor's storage, to tell shared storages apart.
    fn storage_of(t: &Tensor) -> usize {
        let (storage, _) = t.storage_and_layout();
        core::ptr::from_ref::<Storage>(&storage).addr()
    }

    #[test]
    fn descriptions_are_handed_out_again_and_never_confused() {
        let cpu = Device::Cpu;
        let first = output((2, 3), DType::F32, &cpu).unwrap();
        // The same description again is the one kept, not a new tensor.
        assert_eq!(output((2, 3), DType::F32, &cpu).unwrap().id(), first.id());
        assert_eq!(output_like(&Tensor::ones((2, 3), DType::F32, &cpu).unwrap()).unwrap().id(), first.id());
        // Another dtype or shape is another description, of its own dtype and shape.
        let bf16 = output((2, 3), DType::BF16, &cpu).unwrap();
        assert_eq!((bf16.dtype(), bf16.dims()), (DType::BF16, [2, 3].as_slice()));
        assert_ne!(bf16.id(), first.id());
        let other = output((3, 2), DType::F32, &cpu).unwrap();
        assert_eq!((other.dtype(), other.dims()), (DType::F32, [3, 2].as_slice()));
        assert_ne!(other.id(), first.id());
        // More shapes than are kept: each is still right, and all of one dtype share one element.
        let f16 = output(1, DType::F16, &cpu).unwrap();
        for n in 1..=40 {
            for dtype in [DType::F32, DType::F16] {
                let d = output((n, 7), dtype, &cpu).unwrap();
                assert_eq!((d.dtype(), d.dims(), d.stride()), (dtype, [n, 7].as_slice(), [0, 0].as_slice()));
                let same_dtype = if dtype == DType::F32 { &first } else { &f16 };
                assert_eq!(storage_of(&d), storage_of(same_dtype));
            }
        }
        let after = output((2, 3), DType::F32, &cpu).unwrap();
        assert_eq!((after.dims(), storage_of(&after)), ([2, 3].as_slice(), storage_of(&first)));
        // Another thread keeps descriptions of its own.
        let elsewhere = std::thread::spawn(|| output((2, 3), DType::F32, &Device::Cpu).unwrap().id()).join().unwrap();
        assert_ne!(elsewhere, first.id());
    }
}
