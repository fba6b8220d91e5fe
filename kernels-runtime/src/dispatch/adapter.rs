//! The adapter interface: how values become kernel arguments ([`KernelArg`], [`KernelOutput`],
//! [`KernelValue`]), for the standard types here and for tensor libraries in their adapters.

use std::fmt;
use std::rc::Rc;
use std::sync::Arc;

use crate::ffi::{DLDevice, Element, Stream, TensorError, TensorView, Value};
use crate::registry::Tolerance;

use super::verify::{CompareError, Difference};

/// A value converted for a kernel call: an argument ([`Value`], whose scalars are the ABI's),
/// or why it cannot be passed (the call then fails with
/// [`DispatchError::Argument`](super::DispatchError::Argument)).
pub type KernelValue<'a> = Result<Value<KernelTensor<'a>>, ArgError>;

/// A tensor argument of a layer's kernel call.
#[derive(Debug, Clone)]
pub enum KernelTensor<'a> {
    /// Borrowed from the caller.
    View(&'a TensorView<'a>),
    /// A view made for the call (of a slice, a `Vec`, a [`HostTensor`](super::HostTensor)).
    Made(TensorView<'a>),
    /// A view with what keeps its memory valid (e.g. a storage lock), released when the last
    /// clone is dropped: what tensor adapters pass when a borrow of the tensor alone does not
    /// keep its memory in place.
    Held(Rc<dyn HeldTensor>),
}

impl KernelTensor<'_> {
    /// The view the kernel receives.
    #[inline]
    pub fn view(&self) -> &TensorView<'_> {
        match self {
            KernelTensor::View(v) => v,
            KernelTensor::Made(v) => v,
            KernelTensor::Held(h) => h.view(),
        }
    }
}

/// Why a value could not be converted into a kernel argument.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ArgError {
    /// The tensor view could not be built.
    #[error(transparent)]
    Tensor(#[from] TensorError),
    /// An unsigned integer too large for the ABI's signed 64-bit integers.
    #[error("{value} does not fit in the ABI's signed 64-bit integer")]
    IntOutOfRange {
        /// The value.
        value: u64,
    },
    /// A tensor adapter refused the value (e.g. a non-contiguous tensor); its error.
    #[error(transparent)]
    Adapter(AdapterError),
}

/// The error of a tensor adapter that could not pass a value ([`ArgError::Adapter`]), shared
/// so that it can be cloned. Two are equal when they are the same shared error.
#[derive(Debug, Clone)]
pub struct AdapterError(Arc<dyn std::error::Error + Send + Sync + 'static>);

impl AdapterError {
    /// Wraps an adapter's error.
    pub fn new(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        AdapterError(Arc::new(error))
    }

    /// The adapter's error, e.g. to downcast it.
    pub fn get_ref(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.0
    }
}

impl fmt::Display for AdapterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl std::error::Error for AdapterError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl PartialEq for AdapterError {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for AdapterError {}

/// A tensor view together with what keeps its memory valid and unchanged for as long as this
/// value lives (a lock on the tensor's storage, a reference to it), for
/// [`KernelTensor::Held`].
///
/// It owns what it holds (`'static`): a kernel call's arguments then borrow nothing when they
/// are dropped, so a layer can hand its output back while the guards of its inputs are
/// released after the call. (The macro's generated code relies on this.)
pub trait HeldTensor: fmt::Debug + 'static {
    /// The view, valid while `self` lives.
    fn view(&self) -> &TensorView<'_>;

    /// The stream kernels using this tensor run on (e.g. the stream of the adapter's CUDA
    /// device); `None`: the device's default stream, or a device without streams.
    fn stream(&self) -> Option<Stream> {
        None
    }
}

/// A value a layer can pass to its kernel function (an input, a field, a literal).
///
/// Implemented for [`TensorView`]s, [`HostTensor`](super::HostTensor)s, slices, `Vec`s and arrays of tensor
/// elements (1-D tensors), `f32`/`f64`, the integer types, `bool`, `Option`s (`None` is passed
/// as the ABI's none) and references to any of these. Tensor adapters implement it for their
/// tensor types.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be passed to a kernel",
    label = "not a kernel argument",
    note = "kernel arguments are tensors (`TensorView`, `HostTensor`, slices, `Vec`s and arrays of tensor elements), \
            scalars (`f32`, `f64`, integers, `bool`), `Option`s of these, and references to them",
    note = "to pass a `{Self}`, convert it in `args` or implement `kernels_runtime::dispatch::KernelArg` for it"
)]
pub trait KernelArg {
    /// The value to pass, borrowing `self` for the call. An adapter whose tensors must stay
    /// locked while a kernel reads them returns [`KernelTensor::Held`].
    fn kernel_arg(&self) -> KernelValue<'_>;

    /// The device of the data, for tensors; layers dispatch on the first input or field that
    /// has one (the CPU when none does).
    fn device(&self) -> Option<DLDevice> {
        None
    }
}

/// An allocation a kernel writes its result into (`output = …` of `#[kernelize]`).
///
/// Implemented for [`HostTensor`](super::HostTensor)s, `Vec`s and arrays of tensor elements (1-D) and
/// [`TensorView`]s of writable memory (see [`TensorView::from_raw_parts`]).
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot receive a kernel's output",
    label = "not a kernel output",
    note = "kernel outputs are `HostTensor`s, `Vec`s and arrays of tensor elements, and `TensorView`s of writable memory",
    note = "implement `kernels_runtime::dispatch::KernelOutput` for `{Self}` to use it as an output"
)]
pub trait KernelOutput {
    /// A writable view of the allocation, borrowing `self` mutably for the call.
    fn kernel_output(&mut self) -> KernelValue<'_>;

    /// How far this output (the kernel's) is from `forward` (the Rust forward's), for verify
    /// mode ([`set_verify`](super::set_verify)); `tolerance` is the mapping's, else the
    /// implementation applies its dtype's default ([`Tolerance::for_dtype`]). Types that do
    /// not implement it are reported as not comparable.
    fn difference(&self, forward: &Self, tolerance: Option<Tolerance>) -> Result<Difference, CompareError> {
        let _ = (forward, tolerance);
        Err(CompareError::Unsupported(std::any::type_name::<Self>()))
    }
}

impl KernelArg for TensorView<'_> {
    #[inline]
    fn kernel_arg(&self) -> KernelValue<'_> {
        Ok(Value::Tensor(KernelTensor::View(self)))
    }

    #[inline]
    fn device(&self) -> Option<DLDevice> {
        Some(TensorView::device(self))
    }
}

impl KernelOutput for TensorView<'_> {
    /// The view itself: it must describe writable memory (not a view of a shared slice).
    #[inline]
    fn kernel_output(&mut self) -> KernelValue<'_> {
        Ok(Value::Tensor(KernelTensor::Made(*self)))
    }
}

pub(super) fn view_of<'a, T: Element>(data: &'a [T], shape: &[usize]) -> KernelValue<'a> {
    Ok(Value::Tensor(KernelTensor::Made(TensorView::from_slice(data, shape)?)))
}

pub(super) fn view_of_mut<'a, T: Element>(data: &'a mut [T], shape: &[usize]) -> KernelValue<'a> {
    Ok(Value::Tensor(KernelTensor::Made(TensorView::from_slice_mut(data, shape)?)))
}

impl<T: Element> KernelArg for [T] {
    #[inline]
    fn kernel_arg(&self) -> KernelValue<'_> {
        view_of(self, &[self.len()])
    }

    #[inline]
    fn device(&self) -> Option<DLDevice> {
        Some(DLDevice::CPU)
    }
}

impl<T: Element> KernelArg for Vec<T> {
    #[inline]
    fn kernel_arg(&self) -> KernelValue<'_> {
        view_of(self, &[self.len()])
    }

    #[inline]
    fn device(&self) -> Option<DLDevice> {
        Some(DLDevice::CPU)
    }
}

impl<T: Element, const N: usize> KernelArg for [T; N] {
    #[inline]
    fn kernel_arg(&self) -> KernelValue<'_> {
        view_of(self, &[N])
    }

    #[inline]
    fn device(&self) -> Option<DLDevice> {
        Some(DLDevice::CPU)
    }
}

impl<T: Element> KernelOutput for Vec<T> {
    #[inline]
    fn kernel_output(&mut self) -> KernelValue<'_> {
        let len = self.len();
        view_of_mut(self, &[len])
    }

    fn difference(&self, forward: &Self, tolerance: Option<Tolerance>) -> Result<Difference, CompareError> {
        Difference::of_elements(self, forward, tolerance)
    }
}

impl<T: Element, const N: usize> KernelOutput for [T; N] {
    #[inline]
    fn kernel_output(&mut self) -> KernelValue<'_> {
        view_of_mut(self, &[N])
    }

    fn difference(&self, forward: &Self, tolerance: Option<Tolerance>) -> Result<Difference, CompareError> {
        Difference::of_elements(self, forward, tolerance)
    }
}

macro_rules! scalar_args {
    ($($ty:ty => |$v:ident| $value:expr),* $(,)?) => {$(
        impl KernelArg for $ty {
            #[inline]
            fn kernel_arg(&self) -> KernelValue<'_> {
                let $v = *self;
                $value
            }
        }
    )*};
}

scalar_args! {
    f32 => |v| Ok(Value::Float(f64::from(v))),
    f64 => |v| Ok(Value::Float(v)),
    i8 => |v| Ok(Value::Int(i64::from(v))),
    i16 => |v| Ok(Value::Int(i64::from(v))),
    i32 => |v| Ok(Value::Int(i64::from(v))),
    i64 => |v| Ok(Value::Int(v)),
    u8 => |v| Ok(Value::Int(i64::from(v))),
    u16 => |v| Ok(Value::Int(i64::from(v))),
    u32 => |v| Ok(Value::Int(i64::from(v))),
    u64 => |v| unsigned(v),
    usize => |v| unsigned(v as u64),
    isize => |v| Ok(Value::Int(v as i64)),
    bool => |v| Ok(Value::Bool(v)),
}

fn unsigned<'a>(v: u64) -> KernelValue<'a> {
    match i64::try_from(v) {
        Ok(v) => Ok(Value::Int(v)),
        Err(_) => Err(ArgError::IntOutOfRange { value: v }),
    }
}

impl<T: KernelArg> KernelArg for Option<T> {
    #[inline]
    fn kernel_arg(&self) -> KernelValue<'_> {
        match self {
            Some(v) => v.kernel_arg(),
            None => Ok(Value::None),
        }
    }

    #[inline]
    fn device(&self) -> Option<DLDevice> {
        self.as_ref().and_then(KernelArg::device)
    }
}

impl<T: KernelArg + ?Sized> KernelArg for &T {
    #[inline]
    fn kernel_arg(&self) -> KernelValue<'_> {
        (**self).kernel_arg()
    }

    #[inline]
    fn device(&self) -> Option<DLDevice> {
        (**self).device()
    }
}

impl<T: KernelArg + ?Sized> KernelArg for &mut T {
    #[inline]
    fn kernel_arg(&self) -> KernelValue<'_> {
        (**self).kernel_arg()
    }

    #[inline]
    fn device(&self) -> Option<DLDevice> {
        (**self).device()
    }
}

impl<T: KernelArg + ?Sized> KernelArg for Box<T> {
    #[inline]
    fn kernel_arg(&self) -> KernelValue<'_> {
        (**self).kernel_arg()
    }

    #[inline]
    fn device(&self) -> Option<DLDevice> {
        (**self).device()
    }
}
