//! The argument plan of a call (which storages, locked how, in which order), the locks
//! themselves, and the views into locked storage.

use core::cell::RefCell;
use core::ffi::c_void;

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, DType, InplaceOp1, Layout, Storage, Tensor};

use crate::ffi::{DLDevice, MAX_ARGS, MAX_NDIM, Stream, TensorError, TensorView, Value};

use super::mapping::{check_tensor, dl_dtype, not_in_this_build};
use super::{CandleArg, CandleError};

/// Which storages a call touches, in lock order, and how.
pub(super) struct Plan<'t> {
    /// The device of every tensor.
    pub(super) device: DLDevice,
    /// Distinct storages, sorted by address: its address, one tensor living in it, and whether
    /// any output lives in it.
    storages: [Option<(usize, &'t Tensor, bool)>; MAX_ARGS],
    count: usize,
    /// For each argument, the index of its storage in `storages` (tensors only).
    pub(super) storage_of: [usize; MAX_ARGS],
}

impl<'t> Plan<'t> {
    pub(super) fn new(args: &[CandleArg<'t>]) -> Result<Self, CandleError> {
        let mut plan = Plan { device: DLDevice::CPU, storages: [None; MAX_ARGS], count: 0, storage_of: [0; MAX_ARGS] };
        let mut ids = [None::<usize>; MAX_ARGS];
        let mut first = None;
        for (index, arg) in args.iter().enumerate() {
            let Value::Tensor(arg) = arg else { continue };
            let (tensor, writes) = (arg.tensor(), arg.writes());
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
pub(super) struct Locked {
    pub(super) base: *mut c_void,
    pub(super) len: usize,
    pub(super) dtype: DType,
}

impl Locked {
    pub(super) const EMPTY: Self = Self { base: core::ptr::null_mut(), len: 0, dtype: DType::U8 };
}

/// Base pointer and length of a CPU storage read through `&`.
pub(super) fn cpu_read(storage: &CpuStorage) -> Locked {
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
pub(super) fn cpu_write(storage: &mut CpuStorage) -> Locked {
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
pub(super) struct LockCtx {
    #[cfg(feature = "candle-cuda")]
    stream: Option<std::sync::Arc<super::cuda::CudaStream>>,
}

#[cfg(not(feature = "candle-cuda"))]
impl LockCtx {
    pub(super) fn new(_: &Plan<'_>) -> Self {
        Self {}
    }

    pub(super) fn stream(&self, _: DLDevice) -> Option<Stream> {
        None
    }
}

#[cfg(feature = "candle-cuda")]
impl LockCtx {
    /// Takes the stream of the first CUDA tensor's candle device. Tensors of other candle
    /// devices with the same ordinal may use other streams: cudarc's event tracking (the
    /// guards of `cuda::read`/`cuda::write`) orders the call after their pending work.
    pub(super) fn new(plan: &Plan<'_>) -> Self {
        let stream = plan.storages[..plan.count].iter().flatten().find_map(|(_, tensor, _)| match tensor.device() {
            candle_core::Device::Cuda(device) => Some(device.cuda_stream()),
            _ => None,
        });
        Self { stream }
    }

    /// The stream to hand to the kernel call.
    pub(super) fn stream(&self, device: DLDevice) -> Option<Stream> {
        let stream = self.stream.as_ref()?;
        // SAFETY: candle's stream of `device`, kept alive by the `Arc` in `self`, which
        // outlives the call.
        Some(unsafe { Stream::from_raw(device, stream.cu_stream().cast()) })
    }
}

/// Locks storage `depth` of `plan` (and, recursively, the following ones), then runs `body`
/// with every storage's [`Locked`]. Each level keeps its guard alive until `body` returned.
#[cfg_attr(not(feature = "candle-cuda"), allow(clippy::only_used_in_recursion))]
pub(super) fn lock_from(
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
                StorageMut::Cuda(storage) => super::cuda::expect(ctx.stream.as_deref()).and_then(|stream| {
                    super::cuda::write(storage, stream, |l| {
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
            Storage::Cuda(storage) => super::cuda::read(storage, super::cuda::expect(ctx.stream.as_deref())?, |l| {
                locked[depth] = l;
                lock_from(plan, ctx, depth + 1, locked, body)
            }),
            // Refused in `Plan::new`.
            other => Err(not_in_this_build(other.device().location())),
        }
    }
}

/// The view of a tensor with `layout` (argument `index`) into its locked storage. The view's
/// lifetime is the caller's to bound: it is valid while the storage stays locked or owned.
#[inline]
pub(super) fn view_of<'v>(
    device: DLDevice,
    index: Option<usize>,
    layout: &Layout,
    strided: bool,
    locked: &Locked,
) -> Result<TensorView<'v>, CandleError> {
    let dims = layout.dims();
    if !strided && !layout.is_contiguous() {
        return Err(CandleError::NonContiguous { index, shape: dims.to_vec(), strides: layout.stride().to_vec() });
    }
    view_from(device, index, dims, strided.then(|| layout.stride()), layout.start_offset(), locked)
}

/// The view of a whole, contiguous storage of `dims` (a fresh output), as [`view_of`] makes it
/// for a contiguous layout of them, with no layout built.
#[inline]
pub(super) fn contiguous_view<'v>(
    device: DLDevice,
    dims: &[usize],
    locked: &Locked,
) -> Result<TensorView<'v>, CandleError> {
    view_from(device, None, dims, None, 0, locked)
}

/// The view of `dims` elements from `start` into a locked storage, with candle's `strides`
/// (`None`: contiguous), checked against the storage.
#[inline]
fn view_from<'v>(
    device: DLDevice,
    index: Option<usize>,
    dims: &[usize],
    strides: Option<&[usize]>,
    start: usize,
    locked: &Locked,
) -> Result<TensorView<'v>, CandleError> {
    let dtype = dl_dtype(locked.dtype)?;
    if dims.len() > MAX_NDIM {
        return Err(TensorError::TooManyDims { ndim: dims.len() }.into());
    }
    let overflow = || TensorError::Overflow { shape: dims.to_vec() };
    // One past the last element addressed, checked against the storage.
    let numel = dims.iter().try_fold(1usize, |n, &d| n.checked_mul(d)).ok_or_else(overflow)?;
    let end = match strides {
        _ if numel == 0 => start,
        Some(strides) => {
            let last =
                dims.iter().zip(strides).try_fold(start, |acc, (&d, &s)| (d - 1).checked_mul(s)?.checked_add(acc));
            last.and_then(|l| l.checked_add(1)).ok_or_else(overflow)?
        }
        None => start.checked_add(numel).ok_or_else(overflow)?,
    };
    if end > locked.len {
        return Err(CandleError::OutOfBounds { index, end, len: locked.len });
    }
    // `start` is within the storage (checked above), so this stays inside its allocation.
    let data = locked.base.cast::<u8>().wrapping_add(start * locked.dtype.size_in_bytes()).cast::<c_void>();
    // SAFETY: `data` is the tensor's first element inside its locked storage, on `device`,
    // holding `dtype` elements; the shape and strides address only elements of the storage
    // (checked). The caller keeps the memory locked (or owned) while the view is used, and
    // outputs come from write-locked or owned storages.
    Ok(unsafe { TensorView::from_dims(data, device, dtype, dims, strides)? })
}
