//! [`TensorView`]: a borrowed tensor to pass to a kernel.

use core::ffi::c_void;
use core::fmt;
use core::marker::PhantomData;

use super::abi::{DLDataType, DLDevice, DLTensor, Element};

/// The most dimensions a [`TensorView`] can have.
pub const MAX_NDIM: usize = 8;

/// Why a [`TensorView`] could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TensorError {
    /// More dimensions than a view holds.
    #[error("a tensor view has at most {MAX_NDIM} dimensions, got {ndim}; reshape the tensor first")]
    TooManyDims {
        /// The requested number of dimensions.
        ndim: usize,
    },
    /// The shape's element count differs from the slice length.
    #[error("shape {shape:?} has {expected} elements but the slice has {actual}")]
    LengthMismatch {
        /// The requested shape.
        shape: Vec<usize>,
        /// Elements the shape describes (None when it overflows).
        expected: usize,
        /// Elements in the slice.
        actual: usize,
    },
    /// A dimension or stride does not fit the ABI's `int64_t`, or the extents overflow.
    #[error("shape {shape:?} does not fit in 64-bit signed extents")]
    Overflow {
        /// The requested shape.
        shape: Vec<usize>,
    },
    /// `strides` has a different number of entries than `shape`.
    #[error("{strides} strides given for {ndim} dimensions")]
    StridesMismatch {
        /// Number of dimensions.
        ndim: usize,
        /// Number of strides.
        strides: usize,
    },
    /// A negative extent.
    #[error("negative extent in shape {shape:?}")]
    NegativeExtent {
        /// The requested shape.
        shape: Vec<i64>,
    },
}

/// A borrowed tensor: data pointer, device, dtype, shape and strides (in elements), with no
/// heap allocation. Safe constructors borrow CPU slices (compact row-major); device memory goes
/// through [`TensorView::from_raw_parts`].
///
/// A view made from a `&[T]` must only be passed where the kernel reads; kernels may write
/// through any tensor argument, so outputs come from [`TensorView::from_slice_mut`].
#[derive(Clone, Copy)]
pub struct TensorView<'a> {
    data: *mut c_void,
    device: DLDevice,
    dtype: DLDataType,
    ndim: u8,
    shape: [i64; MAX_NDIM],
    strides: [i64; MAX_NDIM],
    byte_offset: u64,
    /// Made from a mutable borrow or memory the caller vouched for, not a shared slice.
    writable: bool,
    _borrow: PhantomData<&'a mut [u8]>,
}

// SAFETY: a view is a pointer plus plain metadata; the borrow it stands for (`&'a [T]` or
// `&'a mut [T]` of `Send + Sync` elements, or device memory the caller vouched for) may be
// used from any thread.
unsafe impl Send for TensorView<'_> {}
// SAFETY: `&TensorView` only exposes the metadata and the pointer value.
unsafe impl Sync for TensorView<'_> {}

fn compact_strides(shape: &[i64; MAX_NDIM], ndim: usize) -> [i64; MAX_NDIM] {
    let mut strides = [0i64; MAX_NDIM];
    let mut step = 1i64;
    for d in (0..ndim).rev() {
        strides[d] = step;
        // Cannot overflow: the constructors checked that the element count fits in i64.
        step = step.saturating_mul(shape[d].max(1));
    }
    strides
}

fn checked_shape(shape: &[usize]) -> Result<([i64; MAX_NDIM], usize), TensorError> {
    if shape.len() > MAX_NDIM {
        return Err(TensorError::TooManyDims { ndim: shape.len() });
    }
    let overflow = || TensorError::Overflow { shape: shape.to_vec() };
    let mut out = [0i64; MAX_NDIM];
    let mut count: i64 = 1;
    for (slot, &extent) in out.iter_mut().zip(shape) {
        *slot = i64::try_from(extent).map_err(|_| overflow())?;
        count = count.checked_mul(*slot).ok_or_else(overflow)?;
    }
    Ok((out, count as usize))
}

impl<'a> TensorView<'a> {
    fn from_slice_parts<T: Element>(
        data: *mut T,
        len: usize,
        shape: &[usize],
        writable: bool,
    ) -> Result<Self, TensorError> {
        let (dims, count) = checked_shape(shape)?;
        if count != len {
            return Err(TensorError::LengthMismatch { shape: shape.to_vec(), expected: count, actual: len });
        }
        Ok(Self {
            data: data.cast(),
            device: DLDevice::CPU,
            dtype: T::DTYPE,
            ndim: shape.len() as u8,
            strides: compact_strides(&dims, shape.len()),
            shape: dims,
            byte_offset: 0,
            writable,
            _borrow: PhantomData,
        })
    }

    /// A read-only CPU tensor of `shape` over `data` (row-major, `data.len()` must equal the
    /// product of `shape`).
    pub fn from_slice<T: Element>(data: &'a [T], shape: &[usize]) -> Result<Self, TensorError> {
        Self::from_slice_parts(data.as_ptr().cast_mut(), data.len(), shape, false)
    }

    /// A writable CPU tensor of `shape` over `data` (row-major).
    pub fn from_slice_mut<T: Element>(data: &'a mut [T], shape: &[usize]) -> Result<Self, TensorError> {
        Self::from_slice_parts(data.as_mut_ptr(), data.len(), shape, true)
    }

    /// A tensor over memory the caller vouches for: device memory (CUDA, ROCm, …) or strided
    /// host memory. `strides` are in elements; `None` means compact row-major.
    ///
    /// # Safety
    /// For `'a`, `data + byte_offset` must point to memory on `device` that holds every element
    /// the shape and strides address, with `dtype` elements, valid for the accesses the kernel
    /// makes, and not otherwise accessed while the kernel writes to it.
    #[inline]
    pub unsafe fn from_raw_parts(
        data: *mut c_void,
        device: DLDevice,
        dtype: DLDataType,
        shape: &[i64],
        strides: Option<&[i64]>,
        byte_offset: u64,
    ) -> Result<Self, TensorError> {
        if shape.len() > MAX_NDIM {
            return Err(TensorError::TooManyDims { ndim: shape.len() });
        }
        if shape.iter().any(|&e| e < 0) {
            return Err(TensorError::NegativeExtent { shape: shape.to_vec() });
        }
        let mut dims = [0i64; MAX_NDIM];
        dims[..shape.len()].copy_from_slice(shape);
        let strides = match strides {
            Some(s) if s.len() != shape.len() => {
                return Err(TensorError::StridesMismatch { ndim: shape.len(), strides: s.len() });
            }
            Some(s) => {
                let mut out = [0i64; MAX_NDIM];
                out[..s.len()].copy_from_slice(s);
                out
            }
            None => compact_strides(&dims, shape.len()),
        };
        Ok(Self {
            data,
            device,
            dtype,
            ndim: shape.len() as u8,
            shape: dims,
            strides,
            byte_offset,
            writable: true,
            _borrow: PhantomData,
        })
    }

    /// A view of `dims` (extents) at `data` with `strides` (in elements; `None`: compact
    /// row-major), converted and laid out in one pass: what tensor adapters build from their
    /// tensors' layouts.
    ///
    /// # Safety
    /// As for [`from_raw_parts`](Self::from_raw_parts).
    #[inline]
    #[cfg_attr(not(feature = "candle"), allow(dead_code))]
    pub(crate) unsafe fn from_dims(
        data: *mut c_void,
        device: DLDevice,
        dtype: DLDataType,
        dims: &[usize],
        strides: Option<&[usize]>,
    ) -> Result<Self, TensorError> {
        let (shape, _) = checked_shape(dims)?;
        let strides = match strides {
            Some(s) if s.len() != dims.len() => {
                return Err(TensorError::StridesMismatch { ndim: dims.len(), strides: s.len() });
            }
            Some(s) => {
                let mut out = [0i64; MAX_NDIM];
                for (slot, &v) in out.iter_mut().zip(s) {
                    *slot = i64::try_from(v).map_err(|_| TensorError::Overflow { shape: dims.to_vec() })?;
                }
                out
            }
            None => compact_strides(&shape, dims.len()),
        };
        Ok(Self {
            data,
            device,
            dtype,
            ndim: dims.len() as u8,
            shape,
            strides,
            byte_offset: 0,
            writable: true,
            _borrow: PhantomData,
        })
    }

    /// The data pointer (without `byte_offset`).
    pub fn data_ptr(&self) -> *mut c_void {
        self.data
    }

    /// Where the data lives.
    pub fn device(&self) -> DLDevice {
        self.device
    }

    /// The element type.
    pub fn dtype(&self) -> DLDataType {
        self.dtype
    }

    /// Extents.
    pub fn shape(&self) -> &[i64] {
        &self.shape[..self.ndim as usize]
    }

    /// Strides in elements.
    pub fn strides(&self) -> &[i64] {
        &self.strides[..self.ndim as usize]
    }

    /// Offset of the first element from [`data_ptr`](Self::data_ptr), in bytes.
    pub fn byte_offset(&self) -> u64 {
        self.byte_offset
    }

    /// Whether the kernel may write through the view: false for a view of a shared slice
    /// ([`from_slice`](Self::from_slice)), true otherwise. Torch stable-ABI calls refuse a
    /// read-only view for a parameter the op writes (`Tensor!`).
    pub fn is_writable(&self) -> bool {
        self.writable
    }

    /// Number of elements.
    pub fn numel(&self) -> i64 {
        self.shape().iter().product()
    }

    /// The `DLTensor` for this view. Its `shape` and `strides` point into `self`, so it is
    /// valid while `self` is neither moved nor dropped.
    pub fn as_dl_tensor(&self) -> DLTensor {
        DLTensor {
            data: self.data,
            device: self.device,
            ndim: i32::from(self.ndim),
            dtype: self.dtype,
            // Kernels take `int64_t*` but never write the shape or strides.
            shape: self.shape.as_ptr().cast_mut(),
            strides: self.strides.as_ptr().cast_mut(),
            byte_offset: self.byte_offset,
        }
    }
}

impl fmt::Debug for TensorView<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TensorView")
            .field("data", &self.data)
            .field("device", &self.device)
            .field("dtype", &self.dtype)
            .field("shape", &self.shape())
            .field("strides", &self.strides())
            .field("byte_offset", &self.byte_offset)
            .field("writable", &self.writable)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_get_compact_strides() {
        let data = [0f32; 24];
        let v = TensorView::from_slice(&data, &[2, 3, 4]).unwrap();
        assert_eq!(v.shape(), [2, 3, 4]);
        assert_eq!(v.strides(), [12, 4, 1]);
        assert_eq!(v.numel(), 24);
        assert_eq!(v.dtype(), DLDataType::F32);
        assert_eq!(v.device(), DLDevice::CPU);
        let t = v.as_dl_tensor();
        assert_eq!(t.ndim, 3);
        // SAFETY: `t` points into `v`, which is alive; ndim entries are readable.
        let (shape, strides) =
            unsafe { (std::slice::from_raw_parts(t.shape, 3), std::slice::from_raw_parts(t.strides, 3)) };
        assert_eq!((shape, strides), ([2i64, 3, 4].as_slice(), [12i64, 4, 1].as_slice()));

        let mut bf = [half::bf16::ZERO; 6];
        let v = TensorView::from_slice_mut(&mut bf, &[6]).unwrap();
        assert_eq!((v.dtype(), v.strides()), (DLDataType::BF16, [1i64].as_slice()));
        // Scalars: zero dimensions, one element.
        assert_eq!(TensorView::from_slice(&[1i64], &[]).unwrap().numel(), 1);
        // Empty dimensions keep well-defined strides.
        assert_eq!(TensorView::from_slice::<f32>(&[], &[0, 3]).unwrap().strides(), [3, 1]);
    }

    #[test]
    fn bad_shapes_are_refused() {
        let data = [0f32; 6];
        assert_eq!(
            TensorView::from_slice(&data, &[4, 2]).unwrap_err(),
            TensorError::LengthMismatch { shape: vec![4, 2], expected: 8, actual: 6 }
        );
        assert_eq!(TensorView::from_slice(&data, &[1; 9]).unwrap_err(), TensorError::TooManyDims { ndim: 9 });
        assert!(matches!(TensorView::from_slice(&data, &[usize::MAX, 2]).unwrap_err(), TensorError::Overflow { .. }));
        // SAFETY: the views are never passed to a kernel.
        unsafe {
            let p = core::ptr::null_mut();
            assert!(matches!(
                TensorView::from_raw_parts(p, DLDevice::cuda(0), DLDataType::F16, &[2, -1], None, 0),
                Err(TensorError::NegativeExtent { .. })
            ));
            assert!(matches!(
                TensorView::from_raw_parts(p, DLDevice::cuda(0), DLDataType::F16, &[2, 2], Some(&[1]), 0),
                Err(TensorError::StridesMismatch { ndim: 2, strides: 1 })
            ));
            let v =
                TensorView::from_raw_parts(p, DLDevice::cuda(1), DLDataType::F16, &[2, 3], Some(&[1, 2]), 8).unwrap();
            assert_eq!((v.strides(), v.byte_offset(), v.device()), ([1i64, 2].as_slice(), 8, DLDevice::cuda(1)));
        }
    }
}
