//! [`HostTensor`]: an owned tensor in host memory, the simplest layer input and output.

use crate::ffi::{DLDevice, Element, TensorError, TensorView};
use crate::registry::Tolerance;

use super::adapter::{KernelArg, KernelOutput, KernelValue, view_of, view_of_mut};
use super::verify::{CompareError, Difference};

/// An owned, compact, row-major tensor in host memory: the simplest input and output of a
/// kernelized layer on the CPU.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor<T> {
    data: Vec<T>,
    shape: Vec<usize>,
}

impl<T: Element> HostTensor<T> {
    /// A tensor of `shape` over `data` (row-major); the element count must match.
    pub fn new(data: Vec<T>, shape: &[usize]) -> Result<Self, TensorError> {
        TensorView::from_slice(&data, shape)?;
        Ok(HostTensor { data, shape: shape.to_vec() })
    }

    /// A tensor of `shape` filled with `T::default()` (zero for numbers).
    ///
    /// # Panics
    /// When the element count overflows `usize`, as `vec![…; n]` would.
    pub fn zeros(shape: &[usize]) -> Self
    where
        T: Default,
    {
        let count = shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d)).expect("tensor element count overflows");
        HostTensor { data: vec![T::default(); count], shape: shape.to_vec() }
    }

    /// Extents.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The elements, row-major.
    pub fn data(&self) -> &[T] {
        &self.data
    }

    /// The elements, row-major, writable.
    pub fn data_mut(&mut self) -> &mut [T] {
        &mut self.data
    }

    /// The elements.
    pub fn into_vec(self) -> Vec<T> {
        self.data
    }

    /// A read-only view, e.g. to call a kernel directly.
    pub fn view(&self) -> Result<TensorView<'_>, TensorError> {
        TensorView::from_slice(&self.data, &self.shape)
    }

    /// A writable view.
    pub fn view_mut(&mut self) -> Result<TensorView<'_>, TensorError> {
        TensorView::from_slice_mut(&mut self.data, &self.shape)
    }
}

impl<T: Element> KernelArg for HostTensor<T> {
    #[inline]
    fn kernel_arg(&self) -> KernelValue<'_> {
        view_of(&self.data, &self.shape)
    }

    #[inline]
    fn device(&self) -> Option<DLDevice> {
        Some(DLDevice::CPU)
    }
}

impl<T: Element> KernelOutput for HostTensor<T> {
    #[inline]
    fn kernel_output(&mut self) -> KernelValue<'_> {
        view_of_mut(&mut self.data, &self.shape)
    }

    fn difference(&self, forward: &Self, tolerance: Option<Tolerance>) -> Result<Difference, CompareError> {
        if self.shape != forward.shape {
            return Err(CompareError::Shape { kernel: self.shape.clone(), forward: forward.shape.clone() });
        }
        Difference::of_elements(&self.data, &forward.data, tolerance)
    }
}
