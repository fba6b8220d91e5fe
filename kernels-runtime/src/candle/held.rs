//! One tensor at a time, each value owning what keeps its memory valid: [`CandleInput`] (a
//! read lock) and [`CandleOutput`] (storage nothing else reaches). `#[kernelize]` passes candle
//! tensors through these.

use core::fmt;

#[cfg(feature = "candle-cuda")]
use std::sync::Arc;

#[cfg(feature = "candle-cuda")]
use candle_core::cuda_backend::cudarc::driver::SyncOnDrop;

use candle_core::backend::BackendDevice;
use candle_core::cpu_backend::CpuDevice;
use candle_core::op::BackpropOp;
use candle_core::{DType, Device, Layout, Shape, Storage, StorageRef, Tensor};

use crate::ffi::{DLDevice, Stream, TensorView};

use super::CandleError;
use super::lock::{Locked, contiguous_view, cpu_read, cpu_write, view_of};
use super::mapping::{check_device, check_tensor, dl_dtype, not_in_this_build};

/// A tensor a kernel reads, its storage read-locked while this value lives.
///
/// Prefer [`call`](super::call) when tensors of one call may share a storage: each
/// `CandleInput` takes its own read lock, and a thread holding a read lock that asks for the
/// same lock again waits behind any writer already waiting for it (candle's task-fair
/// `parking_lot` lock), which never comes.
pub struct CandleInput {
    // Field order is drop order: the read is recorded on the stream first, then the lock is
    // released, then the tensor that owns it.
    /// On CUDA: records the read on the stream when dropped (after the kernel was enqueued).
    #[cfg(feature = "candle-cuda")]
    _record: Option<SyncOnDrop<'static>>,
    /// Held for its lock.
    _storage: StorageRef<'static>,
    view: TensorView<'static>,
    #[cfg(feature = "candle-cuda")]
    stream: Option<Arc<super::cuda::CudaStream>>,
    /// A clone of the tensor: keeps the locked storage alive.
    _tensor: Tensor,
}

impl CandleInput {
    /// Read-locks `tensor`'s storage and views it; the tensor must be contiguous.
    #[inline]
    pub fn new(tensor: &Tensor) -> Result<Self, CandleError> {
        Self::lock(tensor.clone(), false)
    }

    /// Like [`new`](Self::new), with candle's strides as they are, for kernels that read
    /// strided tensors.
    pub fn strided(tensor: &Tensor) -> Result<Self, CandleError> {
        Self::lock(tensor.clone(), true)
    }

    #[inline]
    fn lock(tensor: Tensor, strided: bool) -> Result<Self, CandleError> {
        let device = check_tensor(None, &tensor)?;
        #[cfg(feature = "candle-cuda")]
        let stream = match tensor.device() {
            Device::Cuda(cuda) => Some(cuda.cuda_stream()),
            _ => None,
        };
        let (storage, _) = tensor.storage_and_layout();
        // SAFETY: only the lifetime changes. The guard refers to the lock inside candle's
        // shared storage allocation (the `Arc<RwLock<Storage>>` of the tensor), not to the
        // `Tensor` handle it was borrowed through; `_tensor` owns a clone of that `Arc` and is
        // dropped after `storage` (field order), and the guard never leaves `self`.
        let storage = unsafe { core::mem::transmute::<StorageRef<'_>, StorageRef<'static>>(storage) };
        #[cfg(feature = "candle-cuda")]
        let mut record = None;
        let locked = match &*storage {
            Storage::Cpu(cpu) => cpu_read(cpu),
            // The stream waits for pending writes now; the read is recorded when `record` is
            // dropped, after the kernel using the view was enqueued.
            #[cfg(feature = "candle-cuda")]
            Storage::Cuda(gpu) => {
                let stream = super::cuda::expect(stream.as_deref())?;
                let (locked, guard) = super::cuda::read_held(gpu, stream);
                // SAFETY: only the lifetime changes. The guard refers to the slice's event,
                // inside the storage `_storage` keeps locked (and `_tensor` alive), and to the
                // stream the `Arc` in `stream` owns; `_record` is the first field dropped.
                record = Some(unsafe { core::mem::transmute::<SyncOnDrop<'_>, SyncOnDrop<'static>>(guard) });
                locked
            }
            other => return Err(not_in_this_build(other.device().location())),
        };
        // Valid while `storage` holds the lock: lent out only borrowed from `self`.
        let view = view_of(device, None, tensor.layout(), strided, &locked)?;
        Ok(Self {
            #[cfg(feature = "candle-cuda")]
            _record: record,
            _storage: storage,
            view,
            #[cfg(feature = "candle-cuda")]
            stream,
            _tensor: tensor,
        })
    }

    /// The view of the tensor, valid while `self` holds the lock.
    pub fn view(&self) -> &TensorView<'_> {
        &self.view
    }

    /// Where the tensor lives.
    pub fn device(&self) -> DLDevice {
        self.view.device()
    }

    /// The stream kernels reading this tensor run on: candle's stream of its CUDA device
    /// (`None` on the CPU), for [`KernelFunction::call_with_stream`](crate::ffi::KernelFunction::call_with_stream).
    pub fn stream(&self) -> Option<Stream> {
        #[cfg(feature = "candle-cuda")]
        if let Some(stream) = &self.stream {
            // SAFETY: candle's stream of the tensor's device, kept alive by the `Arc`.
            return Some(unsafe { Stream::from_raw(self.device(), stream.cu_stream().cast()) });
        }
        None
    }
}

impl fmt::Debug for CandleInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CandleInput").field("view", &self.view).finish_non_exhaustive()
    }
}

/// A kernel's output: storage allocated by candle on a device and owned by this value, so the
/// kernel writes memory nothing else reaches, until [`into_tensor`](Self::into_tensor) makes
/// it a (contiguous, gradient-free) tensor.
///
/// The memory is zero-filled on the CPU and not filled on CUDA: the kernel must write every
/// element (part of the kernel call's contract), else the tensor holds whatever the device
/// memory held.
pub struct CandleOutput {
    storage: Storage,
    layout: Layout,
    device: DLDevice,
    #[cfg(feature = "candle-cuda")]
    stream: Option<Arc<super::cuda::CudaStream>>,
}

impl CandleOutput {
    /// An output of `shape` and `dtype` on `device` (see the type's docs for its contents).
    pub fn new(shape: impl Into<Shape>, dtype: DType, device: &Device) -> Result<Self, CandleError> {
        Self::make(shape.into(), dtype, device)
    }

    fn make(shape: Shape, dtype: DType, device: &Device) -> Result<Self, CandleError> {
        dl_dtype(dtype)?;
        let dl = check_device(None, device)?;
        let storage = match device {
            Device::Cpu => Storage::Cpu(CpuDevice.zeros_impl(&shape, dtype)?),
            // SAFETY: device memory holds no Rust values, so reading it unwritten is not
            // undefined behaviour, only garbage; the kernel's contract is to write all of it.
            #[cfg(feature = "candle-cuda")]
            Device::Cuda(cuda) => Storage::Cuda(unsafe { cuda.alloc_uninit(&shape, dtype)? }),
            _ => return Err(not_in_this_build(device.location())),
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
        let locked = self.lock_mut()?;
        view_of(self.device, None, &self.layout, false, &locked)
    }

    fn lock_mut(&mut self) -> Result<Locked, CandleError> {
        Ok(match &mut self.storage {
            Storage::Cpu(cpu) => cpu_write(cpu),
            // The stream waits for pending work on the slice now; the write is recorded in
            // `into_tensor`, after the kernel was enqueued.
            #[cfg(feature = "candle-cuda")]
            Storage::Cuda(gpu) => super::cuda::write_unrecorded(gpu, super::cuda::expect(self.stream.as_deref())?),
            other => return Err(not_in_this_build(other.device().location())),
        })
    }

    pub fn shape(&self) -> &Shape {
        self.layout.shape()
    }

    pub fn dtype(&self) -> DType {
        self.storage.dtype()
    }

    /// Where the output lives.
    pub fn device(&self) -> DLDevice {
        self.device
    }

    /// The stream kernels writing this output run on: candle's stream of its CUDA device
    /// (`None` on the CPU), for [`KernelFunction::call_with_stream`](crate::ffi::KernelFunction::call_with_stream).
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
            let _ = super::cuda::write(gpu, stream, |_| Ok(()));
        }
        Tensor::from_storage(this.storage, this.layout.shape().clone(), BackpropOp::none(), false)
    }
}

/// A `#[kernelize]` call's output: a new tensor of `shape` and `dtype` on `device`, its memory
/// not filled (on any device); a writable view of it; the write to record once the kernel is
/// enqueued (on CUDA); and the stream the kernel runs on (candle's, on CUDA). Built directly,
/// with one allocation of the shape and no layout beside the tensor's own.
///
/// # Safety
/// The view points into the tensor's storage (a `Vec`'s heap buffer or device memory, which
/// moving the storage into the tensor does not move): the caller uses it only while the tensor
/// lives and while nothing else reaches that tensor, and a kernel writes every element before
/// anything reads the tensor (the memory is uninitialised).
#[inline]
pub(super) unsafe fn fresh_output(
    shape: &Shape,
    dtype: DType,
    device: &Device,
) -> Result<(Tensor, TensorView<'static>, Pending, Option<Stream>), CandleError> {
    dl_dtype(dtype)?;
    let dl = check_device(None, device)?;
    let (storage, locked, pending, stream) = match device {
        Device::Cpu => {
            // SAFETY: the caller's kernel writes every element before anything reads it.
            let mut cpu = unsafe { CpuDevice.alloc_uninit(shape, dtype)? };
            let locked = cpu_write(&mut cpu);
            (Storage::Cpu(cpu), locked, Pending::NONE, None)
        }
        #[cfg(feature = "candle-cuda")]
        Device::Cuda(cuda) => {
            // SAFETY: device memory holds no Rust values, so reading it unwritten is not
            // undefined behaviour, only garbage; the kernel's contract is to write all of it.
            let mut gpu = unsafe { cuda.alloc_uninit(shape, dtype)? };
            let (locked, write) = super::cuda::write_pending(&mut gpu, cuda.cuda_stream());
            // SAFETY: candle's stream of the output's device, kept alive by `write` and by the
            // tensor's storage.
            let stream = unsafe { Stream::from_raw(dl, write.cu_stream().cast()) };
            (Storage::Cuda(gpu), locked, Pending { _write: Some(write) }, Some(stream))
        }
        _ => return Err(not_in_this_build(device.location())),
    };
    // The view's memory is the storage's, not a local's: valid as long as the caller says.
    let view = contiguous_view(dl, shape.dims(), &locked)?;
    let tensor = Tensor::from_storage(storage, shape.clone(), BackpropOp::none(), false);
    Ok((tensor, view, pending, stream))
}

/// The write of an output made by [`fresh_output`], recorded on its CUDA stream when dropped
/// (nothing on the CPU): drop it once the kernel is enqueued, before the tensor.
pub(super) struct Pending {
    /// Held for its `Drop`, which records the write.
    #[cfg(feature = "candle-cuda")]
    _write: Option<super::cuda::PendingWrite>,
}

impl Pending {
    const NONE: Self = Pending {
        #[cfg(feature = "candle-cuda")]
        _write: None,
    };
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
