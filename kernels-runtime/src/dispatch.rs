//! Dispatching `#[kernelize]`d layers: kernel or Rust forward, decided once and explained.
//!
//! `#[kernelize]` (re-exported as [`crate::kernelize`]) gives a layer a `kernel_<forward>`
//! method. Each call finds the device of its first tensor argument ([`KernelArg::device`]) and
//! the current [`Mode`], and looks up the decision for (layer, device, mode): the first call
//! makes it, every later call reads it with one atomic load. Then either the kernel function
//! runs (output allocated, arguments converted with [`KernelArg`]/[`KernelOutput`]) or the
//! layer's Rust forward does.
//!
//! # Example
//!
//! ```
//! use kernels_runtime::dispatch::{self, DispatchError, HostTensor};
//! use kernels_runtime::kernelize;
//!
//! // Brings in the registry the build script generated from kernels.toml (`build.rs`:
//! // `kernels_build::build()`); here an empty one: every layer uses its Rust forward.
//! // kernels_runtime::include_kernels!();
//! static __KERNELS_REGISTRY: kernels_runtime::registry::Registry = kernels_runtime::registry::Registry::EMPTY;
//!
//! #[kernelize(
//!     layer = "RMSNorm",                    // [layers.RMSNorm] of kernels.toml
//!     forward = fn forward(&self, x: &HostTensor<f32>) -> Result<HostTensor<f32>, DispatchError>,
//!     output = HostTensor::zeros(x.shape()), // what the kernel writes into
//!     args = (output, x, self.weight, self.eps), // what the kernel function receives, in order
//! )]
//! pub struct RmsNorm {
//!     weight: Vec<f32>,
//!     eps: f32,
//! }
//!
//! impl RmsNorm {
//!     /// The reference, and the fallback.
//!     pub fn forward(&self, x: &HostTensor<f32>) -> Result<HostTensor<f32>, DispatchError> {
//!         let d = self.weight.len();
//!         let mut out = x.data().to_vec();
//!         for row in out.chunks_mut(d) {
//!             let scale = 1.0 / (row.iter().map(|v| v * v).sum::<f32>() / d as f32 + self.eps).sqrt();
//!             row.iter_mut().zip(&self.weight).for_each(|(v, w)| *v *= scale * w);
//!         }
//!         Ok(HostTensor::new(out, x.shape()).expect("same shape"))
//!     }
//! }
//!
//! # fn main() -> Result<(), DispatchError> {
//! let norm = RmsNorm { weight: vec![1.0; 4], eps: 1e-6 };
//! let x = HostTensor::new(vec![1.0, 2.0, 3.0, 4.0], &[1, 4]).expect("4 elements");
//! let y = norm.kernel_forward(&x)?; // the kernel when mapped and loadable here, else `forward`
//! assert_eq!(y, norm.forward(&x)?);
//! println!("{}", dispatch::report()); // which layer uses what, and why
//! # Ok(())
//! # }
//! ```
//!
//! # How the decision is made ([`decide`])
//!
//! 1. `DISABLE_KERNEL_MAPPING=1` → the Rust forward, for every layer.
//! 2. The layer's mappings for the device kind (`[layers.<name>]` of `kernels.toml`, in the
//!    registry the build script generates); none → the Rust forward.
//! 3. The device must be present; on CUDA, its compute capability must fall in the mapping's
//!    range (inclusive; the smallest matching range wins, as upstream); in
//!    [`Mode::Training`] only mappings declared with backward support count.
//! 4. The kernel is loaded from `LOCAL_KERNELS` when it names the kernel's repo, else from the
//!    variants embedded in the binary (the best one for this machine, with a
//!    [decision trace](crate::select::DecisionTrace)).
//! 5. The mapped function is resolved (`__tvm_ffi_<function>`).
//!
//! Any step that fails makes the layer use its Rust forward, logged once through `tracing`
//! (`warn` for failures, `info` for configurations without a kernel) and recorded for
//! [`report`]. In strict mode (`KERNELS_STRICT=1` or [`set_strict`]) each such fallback is a
//! [`DispatchError::Strict`] instead. A kernel that runs and fails is always an error
//! ([`DispatchError::Kernel`]), never a silent fallback.
//!
//! # Trust
//!
//! A mapping in `kernels.toml` together with `args` in `#[kernelize]` declares how the kernel
//! function is called, as any FFI binding does: the kernel may write only to the outputs.
//! Kernels validate what they can (argument count, dtypes, shapes, devices) and report
//! violations as errors.
//!
//! # Costs
//!
//! After the first call, a call costs one thread-local read (the mode), one `Acquire` load
//! and the conversion of each argument into a stack array, then the kernel's indirect call.
//! Tensor adapters whose tensors must stay locked during the call ([`KernelValue::Held`])
//! add one allocation per such tensor.
//! Decisions for device ordinals ≥ 8 live behind a mutex instead of an atomic slot.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicPtr, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use crate::env;
use crate::ffi::{
    Arg, DLDevice, DLDeviceType, Element, KernelError, KernelFunction, MAX_ARGS, Stream, TensorError, TensorView,
};
use crate::loader::{self, LoadError, LoadedKernel, Source};
use crate::platform::Platform;
use crate::registry::{CapabilityRange, LayerEntry, ModeSupport, Registry, pick_mapping};
use crate::select::{DecisionTrace, Request};
use crate::variant::{BackendKind, Version};

// ---- mode and switches -------------------------------------------------------------------

/// What a layer is run for: plain inference, or training (kernels need backward support).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Mode {
    /// Forward only (the default).
    #[default]
    Inference,
    /// Training: only kernels declared with backward support are chosen.
    Training,
}

impl Mode {
    /// The mode of the current thread (see [`with_mode`]).
    pub fn current() -> Mode {
        MODE.with(Cell::get)
    }

    fn index(self) -> usize {
        match self {
            Mode::Inference => 0,
            Mode::Training => 1,
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Inference => "inference",
            Mode::Training => "training",
        })
    }
}

thread_local! {
    static MODE: Cell<Mode> = const { Cell::new(Mode::Inference) };
}

/// Runs `f` with `mode` as the current thread's mode, restoring the previous mode afterwards
/// (also when `f` panics).
pub fn with_mode<R>(mode: Mode, f: impl FnOnce() -> R) -> R {
    struct Restore(Mode);
    impl Drop for Restore {
        fn drop(&mut self) {
            MODE.with(|m| m.set(self.0));
        }
    }
    let _restore = Restore(MODE.with(|m| m.replace(mode)));
    f()
}

const STRICT_UNSET: u8 = 0;
const STRICT_OFF: u8 = 1;
const STRICT_ON: u8 = 2;
static STRICT: AtomicU8 = AtomicU8::new(STRICT_UNSET);

/// Turns strict mode on or off for the whole process, overriding `KERNELS_STRICT`. In strict
/// mode a layer that would use its Rust forward returns [`DispatchError::Strict`] instead.
pub fn set_strict(on: bool) {
    STRICT.store(if on { STRICT_ON } else { STRICT_OFF }, Ordering::Relaxed);
}

/// Whether strict mode is on: [`set_strict`], else `KERNELS_STRICT` (read once).
pub fn is_strict() -> bool {
    match STRICT.load(Ordering::Relaxed) {
        STRICT_ON => true,
        STRICT_OFF => false,
        _ => {
            let on = env::flag(env::STRICT);
            let value = if on { STRICT_ON } else { STRICT_OFF };
            let _ = STRICT.compare_exchange(STRICT_UNSET, value, Ordering::Relaxed, Ordering::Relaxed);
            STRICT.load(Ordering::Relaxed) == STRICT_ON
        }
    }
}

/// The environment a decision is made in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    /// `DISABLE_KERNEL_MAPPING`: every layer uses its Rust forward.
    pub disable_mapping: bool,
    /// `LOCAL_KERNELS`, unparsed.
    pub local_kernels: Option<String>,
}

impl Settings {
    /// Reads `DISABLE_KERNEL_MAPPING` and `LOCAL_KERNELS`.
    pub fn from_env() -> Self {
        Settings {
            disable_mapping: env::flag(env::DISABLE_MAPPING),
            local_kernels: env::var(env::LOCAL_KERNELS).filter(|v| !v.trim().is_empty()),
        }
    }
}

fn platform() -> &'static Platform {
    static PLATFORM: OnceLock<Platform> = OnceLock::new();
    PLATFORM.get_or_init(Platform::detect)
}

// ---- devices -----------------------------------------------------------------------------

/// Where a layer runs, as far as dispatch is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// A device of a kind kernels are built for; the ordinal is 0 for the CPU.
    Device(BackendKind, u32),
    /// Memory of a DLPack device type no kernel variant targets (Vulkan, WebGPU, …).
    Unsupported(i32),
}

impl Target {
    /// The target of a tensor on `device`; no tensor means the CPU.
    pub fn of(device: Option<DLDevice>) -> Target {
        let Some(device) = device else { return Target::Device(BackendKind::Cpu, 0) };
        let kind = match device.device_type {
            DLDeviceType::CPU | DLDeviceType::CUDA_HOST | DLDeviceType::ROCM_HOST => {
                return Target::Device(BackendKind::Cpu, 0);
            }
            DLDeviceType::CUDA | DLDeviceType::CUDA_MANAGED => BackendKind::Cuda,
            DLDeviceType::ROCM => BackendKind::Rocm,
            DLDeviceType::METAL => BackendKind::Metal,
            DLDeviceType::ONE_API => BackendKind::Xpu,
            other => return Target::Unsupported(other.0),
        };
        match u32::try_from(device.device_id) {
            Ok(ordinal) => Target::Device(kind, ordinal),
            Err(_) => Target::Unsupported(device.device_type.0),
        }
    }

    /// The selection request for this target, if it is a supported device.
    pub fn request(self) -> Option<Request> {
        match self {
            Target::Device(kind, ordinal) => Some(Request::new(kind, ordinal)),
            Target::Unsupported(_) => None,
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Device(BackendKind::Cpu, _) => f.write_str("cpu"),
            Target::Device(kind, ordinal) => write!(f, "{kind}:{ordinal}"),
            Target::Unsupported(t) => write!(f, "{}", DLDeviceType(*t)),
        }
    }
}

// ---- arguments ---------------------------------------------------------------------------

/// A value converted for a kernel call.
#[derive(Debug, Clone)]
pub enum KernelValue<'a> {
    /// A tensor borrowed from the caller.
    View(&'a TensorView<'a>),
    /// A tensor view made for the call (of a slice, a `Vec`, a [`HostTensor`]).
    Tensor(TensorView<'a>),
    /// A tensor view with what keeps its memory valid (e.g. a storage lock), released when
    /// the last clone of the value is dropped: what tensor adapters pass when a borrow of
    /// the tensor alone does not keep its memory in place.
    Held(Rc<dyn HeldTensor>),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// A bool.
    Bool(bool),
    /// `None`, for optional parameters.
    None,
    /// The value cannot be passed; the call fails with [`DispatchError::Argument`].
    Invalid(ArgError),
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
/// [`KernelValue::Held`].
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
/// Implemented for [`TensorView`]s, [`HostTensor`]s, slices, `Vec`s and arrays of tensor
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
    /// locked while a kernel reads them returns [`KernelValue::Held`].
    fn kernel_arg(&self) -> KernelValue<'_>;

    /// The device of the data, for tensors; layers dispatch on the first input or field that
    /// has one (the CPU when none does).
    fn device(&self) -> Option<DLDevice> {
        None
    }
}

/// An allocation a kernel writes its result into (`output = …` of `#[kernelize]`).
///
/// Implemented for [`HostTensor`]s, `Vec`s and arrays of tensor elements (1-D) and
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
}

impl KernelArg for TensorView<'_> {
    #[inline]
    fn kernel_arg(&self) -> KernelValue<'_> {
        KernelValue::View(self)
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
        KernelValue::Tensor(*self)
    }
}

fn view_of<'a, T: Element>(data: &'a [T], shape: &[usize]) -> KernelValue<'a> {
    match TensorView::from_slice(data, shape) {
        Ok(v) => KernelValue::Tensor(v),
        Err(e) => KernelValue::Invalid(e.into()),
    }
}

fn view_of_mut<'a, T: Element>(data: &'a mut [T], shape: &[usize]) -> KernelValue<'a> {
    match TensorView::from_slice_mut(data, shape) {
        Ok(v) => KernelValue::Tensor(v),
        Err(e) => KernelValue::Invalid(e.into()),
    }
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
}

impl<T: Element, const N: usize> KernelOutput for [T; N] {
    #[inline]
    fn kernel_output(&mut self) -> KernelValue<'_> {
        view_of_mut(self, &[N])
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
    f32 => |v| KernelValue::Float(f64::from(v)),
    f64 => |v| KernelValue::Float(v),
    i8 => |v| KernelValue::Int(i64::from(v)),
    i16 => |v| KernelValue::Int(i64::from(v)),
    i32 => |v| KernelValue::Int(i64::from(v)),
    i64 => |v| KernelValue::Int(v),
    u8 => |v| KernelValue::Int(i64::from(v)),
    u16 => |v| KernelValue::Int(i64::from(v)),
    u32 => |v| KernelValue::Int(i64::from(v)),
    u64 => |v| unsigned(v),
    usize => |v| unsigned(v as u64),
    isize => |v| KernelValue::Int(v as i64),
    bool => |v| KernelValue::Bool(v),
}

fn unsigned<'a>(v: u64) -> KernelValue<'a> {
    match i64::try_from(v) {
        Ok(v) => KernelValue::Int(v),
        Err(_) => KernelValue::Invalid(ArgError::IntOutOfRange { value: v }),
    }
}

impl<T: KernelArg> KernelArg for Option<T> {
    #[inline]
    fn kernel_arg(&self) -> KernelValue<'_> {
        match self {
            Some(v) => v.kernel_arg(),
            None => KernelValue::None,
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
}

// ---- decisions ---------------------------------------------------------------------------

/// Why a layer uses its Rust forward.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum FallbackReason {
    /// `DISABLE_KERNEL_MAPPING` is set.
    Disabled,
    /// The tensors live on a kind of device no kernel variant targets.
    UnsupportedDevice {
        /// The DLPack device type.
        device_type: i32,
    },
    /// `kernels.toml` maps the layer to no kernel for this kind of device.
    NoMapping {
        /// The device kind asked for.
        device: BackendKind,
        /// The kinds it is mapped for.
        mapped: Vec<BackendKind>,
    },
    /// The device is not present or not usable.
    NoDevice {
        /// The device kind.
        device: BackendKind,
        /// Its ordinal.
        ordinal: u32,
        /// What the platform probe said.
        reason: String,
    },
    /// The GPU's compute capability is outside every mapping's range.
    Capability {
        /// The GPU's compute capability.
        capability: Version,
        /// The mappings' ranges, as `kernel range`.
        ranges: Vec<String>,
    },
    /// Training mode, and no mapping for the device declares backward support.
    NoBackward {
        /// The inference-only kernels that would otherwise serve.
        kernels: Vec<String>,
    },
    /// A mapping names a kernel the registry does not have.
    UnknownKernel {
        /// The kernel's local name.
        kernel: String,
    },
    /// No variant of the kernel fits this machine (or none is available).
    NoVariant {
        /// The kernel's local name.
        kernel: String,
        /// Its repo.
        repo: String,
        /// Why each candidate was rejected; `None` when there were no candidates.
        trace: Option<Box<DecisionTrace>>,
    },
    /// The kernel library could not be loaded.
    LoadFailed {
        /// The kernel's local name.
        kernel: String,
        /// Its repo.
        repo: String,
        /// What went wrong.
        error: Arc<LoadError>,
    },
    /// The library does not export the mapped function.
    MissingSymbol {
        /// The kernel's local name.
        kernel: String,
        /// The function.
        function: String,
        /// What went wrong.
        error: Arc<LoadError>,
    },
}

impl FallbackReason {
    /// Whether this is a failure (a kernel was meant to serve but could not) rather than a
    /// configuration without a kernel.
    pub fn is_failure(&self) -> bool {
        matches!(
            self,
            FallbackReason::UnknownKernel { .. }
                | FallbackReason::NoVariant { .. }
                | FallbackReason::LoadFailed { .. }
                | FallbackReason::MissingSymbol { .. }
        )
    }

    /// The variant selection trace, when variants were considered.
    pub fn trace(&self) -> Option<&DecisionTrace> {
        match self {
            FallbackReason::NoVariant { trace, .. } => trace.as_deref(),
            _ => None,
        }
    }
}

impl fmt::Display for FallbackReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FallbackReason::Disabled => write!(f, "{} is set", env::DISABLE_MAPPING),
            FallbackReason::UnsupportedDevice { device_type } => {
                write!(f, "its tensors are on {} devices, which no kernel variant targets", DLDeviceType(*device_type))
            }
            FallbackReason::NoMapping { device, mapped } if mapped.is_empty() => {
                write!(f, "kernels.toml maps it to no kernel (for {device} or any device)")
            }
            FallbackReason::NoMapping { device, mapped } => {
                let mapped: Vec<&str> = mapped.iter().map(|k| k.as_str()).collect();
                write!(f, "kernels.toml maps it to no kernel for {device} (only for {})", mapped.join(", "))
            }
            FallbackReason::NoDevice { device, ordinal, reason } => {
                write!(f, "{device} device {ordinal} is not usable: {reason}")
            }
            FallbackReason::Capability { capability, ranges } => write!(
                f,
                "the GPU's compute capability {capability} is outside the range of every mapping ({})",
                ranges.join("; ")
            ),
            FallbackReason::NoBackward { kernels } => write!(
                f,
                "training mode needs a kernel with backward support; the mapped kernels ({}) are inference-only \
                 (declare `mode = \"training\"` in kernels.toml for kernels that have backward)",
                kernels.join(", ")
            ),
            FallbackReason::UnknownKernel { kernel } => {
                write!(f, "the mapping names kernel `{kernel}`, which the registry does not have; rebuild the crate")
            }
            FallbackReason::NoVariant { kernel, repo, trace: Some(trace) } => {
                write!(f, "no variant of kernel `{kernel}` ({repo}) fits this machine:\n{trace}")
            }
            FallbackReason::NoVariant { kernel, repo, trace: None } => write!(
                f,
                "kernel `{kernel}` ({repo}) has no variant in the binary or the Hub cache and {local} \
                 does not name it; embed its variants (`[build] embed = true` in kernels.toml), prefetch them \
                 (`cargo kernels download`) or set {local}={repo}=<dir>",
                local = env::LOCAL_KERNELS
            ),
            FallbackReason::LoadFailed { kernel, repo, error } => {
                write!(f, "kernel `{kernel}` ({repo}) failed to load: {error}")
            }
            FallbackReason::MissingSymbol { kernel, function, error } => {
                write!(f, "kernel `{kernel}` has no function `{function}`: {error}")
            }
        }
    }
}

/// The kernel a layer uses, and why.
#[derive(Debug, Clone)]
pub struct KernelChoice {
    /// The kernel's local name (`[kernels.<name>]`).
    pub kernel: String,
    /// Its repo.
    pub repo: String,
    /// The function called.
    pub function: String,
    /// The variant loaded.
    pub variant: String,
    /// Where it came from.
    pub source: Source,
    /// The library file.
    pub library: PathBuf,
    /// The mapping's capability range, if limited.
    pub capability: Option<CapabilityRange>,
    /// The mapping's declared modes.
    pub mode: ModeSupport,
    /// How the variant was selected.
    pub trace: DecisionTrace,
}

/// What a layer uses on a target in a mode.
#[derive(Debug, Clone)]
pub enum Choice {
    /// A kernel function.
    Kernel(KernelChoice),
    /// Its Rust forward.
    Fallback(FallbackReason),
}

impl fmt::Display for Choice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Choice::Kernel(k) => {
                write!(f, "kernel {}::{} ({}, {})", k.kernel, k.function, k.variant, k.source)
            }
            Choice::Fallback(reason) => {
                let text = reason.to_string();
                write!(f, "Rust forward: {}", text.lines().next().unwrap_or_default())
            }
        }
    }
}

/// The outcome of [`decide`]: the choice, and the resolved function when it is a kernel.
#[derive(Debug)]
pub struct Decision {
    /// What the layer uses.
    pub choice: Choice,
    /// The resolved kernel function, for [`Choice::Kernel`].
    pub function: Option<KernelFunction>,
}

impl Decision {
    fn fallback(reason: FallbackReason) -> Self {
        Decision { choice: Choice::Fallback(reason), function: None }
    }
}

/// Decides what `layer` uses on `target` in `mode`: the steps of the [module docs](self).
/// Loads the kernel library when one is chosen; does not log or cache (the layers do).
pub fn decide(
    registry: &Registry,
    layer: &str,
    target: Target,
    mode: Mode,
    settings: &Settings,
    platform: &Platform,
) -> Decision {
    if settings.disable_mapping {
        return Decision::fallback(FallbackReason::Disabled);
    }
    let (kind, ordinal) = match target {
        Target::Device(kind, ordinal) => (kind, ordinal),
        Target::Unsupported(device_type) => {
            return Decision::fallback(FallbackReason::UnsupportedDevice { device_type });
        }
    };
    let mappings: Vec<&LayerEntry> = registry.mappings(layer, kind).collect();
    if mappings.is_empty() {
        let mut mapped: Vec<BackendKind> =
            registry.layers.iter().filter(|m| m.layer == layer).map(|m| m.device).collect();
        mapped.sort();
        mapped.dedup();
        return Decision::fallback(FallbackReason::NoMapping { device: kind, mapped });
    }
    if let Err(reason) = platform.has_backend(kind) {
        return Decision::fallback(FallbackReason::NoDevice { device: kind, ordinal, reason });
    }
    let capability = match (kind, platform.cuda.present()) {
        (BackendKind::Cuda, Some(cuda)) => match cuda.devices.iter().find(|d| d.ordinal == ordinal) {
            Some(d) => Some(d.capability),
            None => {
                let reason = format!("the driver lists {} device(s)", cuda.devices.len());
                return Decision::fallback(FallbackReason::NoDevice { device: kind, ordinal, reason });
            }
        },
        _ => None,
    };
    let training = mode == Mode::Training;
    let Some(mapping) = pick_mapping(mappings.iter().copied(), capability, training) else {
        if let (Some(cc), None) = (capability, pick_mapping(mappings.iter().copied(), capability, false)) {
            let ranges = mappings.iter().filter_map(|m| m.capability.map(|r| format!("{} {r}", m.kernel))).collect();
            return Decision::fallback(FallbackReason::Capability { capability: cc, ranges });
        }
        let mut kernels: Vec<String> = mappings.iter().map(|m| m.kernel.to_owned()).collect();
        kernels.dedup();
        return Decision::fallback(FallbackReason::NoBackward { kernels });
    };
    let Some(entry) = registry.kernel(mapping.kernel) else {
        return Decision::fallback(FallbackReason::UnknownKernel { kernel: mapping.kernel.to_owned() });
    };
    if let Some(lib) = registry.tvm_ffi {
        loader::provide_tvm_ffi(lib);
    }
    let request = Request::new(kind, ordinal);
    let (kernel, repo) = (entry.name.to_owned(), entry.repo.to_owned());
    let local = match settings.local_kernels.as_deref().map(loader::parse_local_kernels).transpose() {
        Ok(map) => map.and_then(|mut m| m.remove(entry.repo)),
        Err(e) => return Decision::fallback(FallbackReason::LoadFailed { kernel, repo, error: Arc::new(e) }),
    };
    let loaded: Result<(LoadedKernel, DecisionTrace), LoadError> = match &local {
        Some(dir) => loader::load_from_dir(entry.name, dir, platform, request),
        // Prefetched without embedding (`[build] embed = false`): the lock-pinned commit in the
        // Hub cache, its files checked against the lock's hashes; never the network.
        None if entry.variants.is_empty() => match entry.commit {
            Some(commit) if !entry.cached.is_empty() => {
                match loader::load_cached(entry.repo, commit, entry.cached, platform, request) {
                    // Only absent files mean "not prefetched"; present but unreadable or invalid
                    // files are a load failure and say what is wrong with them.
                    Err(e) if e.is_not_found() => {
                        return Decision::fallback(FallbackReason::NoVariant { kernel, repo, trace: None });
                    }
                    other => other,
                }
            }
            _ => return Decision::fallback(FallbackReason::NoVariant { kernel, repo, trace: None }),
        },
        None => loader::select_embedded(entry.name, entry.variants, platform, request),
    };
    let (loaded, trace) = match loaded {
        Ok(ok) => ok,
        Err(LoadError::NoUsableVariant { trace, .. }) => {
            return Decision::fallback(FallbackReason::NoVariant { kernel, repo, trace: Some(trace) });
        }
        Err(e) => return Decision::fallback(FallbackReason::LoadFailed { kernel, repo, error: Arc::new(e) }),
    };
    match loaded.function(mapping.function) {
        Ok(function) => Decision {
            choice: Choice::Kernel(KernelChoice {
                kernel,
                repo,
                function: mapping.function.to_owned(),
                variant: loaded.variant().to_owned(),
                source: loaded.source(),
                library: loaded.path().to_owned(),
                capability: mapping.capability,
                mode: mapping.mode,
                trace,
            }),
            function: Some(function),
        },
        Err(e) => Decision::fallback(FallbackReason::MissingSymbol {
            kernel,
            function: mapping.function.to_owned(),
            error: Arc::new(e),
        }),
    }
}

// ---- resolutions, cached -----------------------------------------------------------------

/// A decision made for a kernelized layer on a target in a mode, kept for the life of the
/// process.
#[derive(Debug)]
pub struct Resolution {
    layer: &'static str,
    type_name: &'static str,
    module: &'static str,
    args: &'static [&'static str],
    target: Target,
    mode: Mode,
    choice: Choice,
    function: Option<KernelFunction>,
}

impl Resolution {
    /// The layer name (`[layers.<name>]`).
    pub fn layer(&self) -> &'static str {
        self.layer
    }

    /// The Rust type carrying `#[kernelize]`.
    pub fn type_name(&self) -> &'static str {
        self.type_name
    }

    /// The module the type is defined in.
    pub fn module(&self) -> &'static str {
        self.module
    }

    /// Where it runs.
    pub fn target(&self) -> Target {
        self.target
    }

    /// In which mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// What it uses.
    pub fn choice(&self) -> &Choice {
        &self.choice
    }

    /// The variant selection trace, when variants were considered.
    pub fn trace(&self) -> Option<&DecisionTrace> {
        match &self.choice {
            Choice::Kernel(k) => Some(&k.trace),
            Choice::Fallback(r) => r.trace(),
        }
    }
}

impl fmt::Display for Resolution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "layer `{}` ({}) on {} in {} mode", self.layer, self.type_name, self.target, self.mode)
    }
}

/// A kernelized call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DispatchError {
    /// The kernel ran and reported an error.
    #[error("layer `{layer}`: {source}")]
    Kernel {
        /// The layer.
        layer: &'static str,
        /// The kernel's error.
        #[source]
        source: Box<KernelError>,
    },
    /// An argument could not be converted for the kernel.
    #[error("layer `{layer}`: argument {index} (`{name}`) cannot be passed to the kernel: {error}")]
    Argument {
        /// The layer.
        layer: &'static str,
        /// Position in `args`.
        index: usize,
        /// The argument as written in `args`.
        name: &'static str,
        /// Why.
        #[source]
        error: ArgError,
    },
    /// Strict mode: the layer would have used its Rust forward.
    #[error(
        "{resolution} would use its Rust forward: {reason}; strict mode ({strict}=1 or \
         dispatch::set_strict(true)) makes this an error",
        reason = fallback_reason(resolution),
        strict = env::STRICT
    )]
    Strict {
        /// The decision that was refused.
        resolution: &'static Resolution,
    },
}

fn fallback_reason(r: &Resolution) -> String {
    match &r.choice {
        Choice::Fallback(reason) => reason.to_string(),
        Choice::Kernel(_) => "no reason recorded".to_owned(),
    }
}

/// Ordinals below this get a lock-free slot per (kind, mode); higher ones go through a map.
const SLOT_ORDINALS: usize = 8;
const SLOT_KINDS: usize = BackendKind::ALL.len();
const SLOTS: usize = SLOT_KINDS * SLOT_ORDINALS * 2;

fn slot_index(target: Target, mode: Mode) -> Option<usize> {
    let Target::Device(kind, ordinal) = target else { return None };
    let ordinal = ordinal as usize;
    if ordinal >= SLOT_ORDINALS {
        return None;
    }
    let kind = match kind {
        BackendKind::Cuda => 0,
        BackendKind::Rocm => 1,
        BackendKind::Xpu => 2,
        BackendKind::Cann => 3,
        BackendKind::Cpu => 4,
        BackendKind::Metal => 5,
        BackendKind::Neuron => 6,
        BackendKind::Tpu => 7,
    };
    Some((kind * SLOT_ORDINALS + ordinal) * 2 + mode.index())
}

/// Everything dispatch records, behind one lock.
#[derive(Default)]
struct State {
    /// Every resolution, in the order made.
    resolutions: Vec<&'static Resolution>,
    /// Resolutions of targets without a slot, by (layer address, target, mode).
    overflow: HashMap<(usize, Target, Mode), &'static Resolution>,
    /// The registries layers dispatched through (by address).
    registries: Vec<&'static Registry>,
}

fn state() -> MutexGuard<'static, State> {
    static STATE: OnceLock<Mutex<State>> = OnceLock::new();
    STATE.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner())
}

fn log_resolution(r: &Resolution) {
    match &r.choice {
        Choice::Kernel(k) => tracing::info!(
            layer = r.layer,
            target = %r.target,
            mode = %r.mode,
            kernel = %k.kernel,
            function = %k.function,
            variant = %k.variant,
            source = %k.source,
            "{r} uses kernel {}::{} ({}, {})",
            k.kernel,
            k.function,
            k.variant,
            k.source
        ),
        Choice::Fallback(reason) if reason.is_failure() => tracing::warn!(
            layer = r.layer,
            target = %r.target,
            mode = %r.mode,
            "{r} uses its Rust forward: {reason}"
        ),
        Choice::Fallback(reason) => tracing::info!(
            layer = r.layer,
            target = %r.target,
            mode = %r.mode,
            "{r} uses its Rust forward: {reason}"
        ),
    }
}

// ---- introspection -----------------------------------------------------------------------

/// Every kernelized layer seen so far with its choice per target and mode, and every layer of
/// the registries they dispatch through (including layers not called yet).
pub fn report() -> Report {
    let state = state();
    build_report(&state.resolutions, &state.registries)
}

/// Like [`report`], also listing the layers of `registry` (e.g. `&crate::__KERNELS_REGISTRY`)
/// when no layer has dispatched through it yet.
pub fn report_with(registry: &'static Registry) -> Report {
    let state = state();
    let mut registries = state.registries.clone();
    if !registries.iter().any(|r| std::ptr::eq(*r, registry)) {
        registries.push(registry);
    }
    build_report(&state.resolutions, &registries)
}

fn build_report(resolutions: &[&'static Resolution], registries: &[&'static Registry]) -> Report {
    fn layer<'m>(layers: &'m mut BTreeMap<&'static str, LayerReport>, name: &'static str) -> &'m mut LayerReport {
        layers.entry(name).or_insert_with(|| LayerReport { layer: name, mapped: Vec::new(), resolutions: Vec::new() })
    }
    let mut layers: BTreeMap<&'static str, LayerReport> = BTreeMap::new();
    for m in registries.iter().flat_map(|r| r.layers) {
        let report = layer(&mut layers, m.layer);
        if !report.mapped.contains(&m.device) {
            report.mapped.push(m.device);
        }
    }
    for r in resolutions {
        layer(&mut layers, r.layer).resolutions.push(r);
    }
    let mut layers: Vec<LayerReport> = layers.into_values().collect();
    for l in &mut layers {
        l.mapped.sort();
        l.resolutions.sort_by_key(|r| (r.type_name, r.target, r.mode));
    }
    Report { layers }
}

/// What every known layer uses; [`Display`](fmt::Display) renders a table and the decision
/// traces.
#[derive(Debug, Clone)]
pub struct Report {
    /// By layer name.
    pub layers: Vec<LayerReport>,
}

/// One layer in a [`Report`].
#[derive(Debug, Clone)]
pub struct LayerReport {
    /// The layer name.
    pub layer: &'static str,
    /// The device kinds `kernels.toml` maps it for.
    pub mapped: Vec<BackendKind>,
    /// Its decisions so far.
    pub resolutions: Vec<&'static Resolution>,
}

impl Report {
    /// The decision for `layer` on `target` in `mode`, if made.
    pub fn find(&self, layer: &str, target: Target, mode: Mode) -> Option<&'static Resolution> {
        self.layers
            .iter()
            .filter(|l| l.layer == layer)
            .flat_map(|l| l.resolutions.iter().copied())
            .find(|r| r.target == target && r.mode == mode)
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rows: Vec<[String; 5]> = vec![["layer", "type", "device", "mode", "choice"].map(str::to_owned)];
        for l in &self.layers {
            if l.resolutions.is_empty() {
                let mapped: Vec<&str> = l.mapped.iter().map(|k| k.as_str()).collect();
                let choice = format!("not called yet (mapped for {})", mapped.join(", "));
                rows.push([l.layer.to_owned(), "-".into(), "-".into(), "-".into(), choice]);
            }
            for r in &l.resolutions {
                rows.push([
                    l.layer.to_owned(),
                    r.type_name.to_owned(),
                    r.target.to_string(),
                    r.mode.to_string(),
                    r.choice.to_string(),
                ]);
            }
        }
        let widths: Vec<usize> = (0..5).map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0)).collect();
        for row in &rows {
            let mut line = String::new();
            for (c, cell) in row.iter().enumerate() {
                line.push_str(&format!("{cell:<w$}  ", w = widths[c]));
            }
            writeln!(f, "{}", line.trim_end())?;
        }
        for r in self.layers.iter().flat_map(|l| &l.resolutions) {
            let detail = match &r.choice {
                Choice::Kernel(k) => k.trace.to_string(),
                Choice::Fallback(reason) => format!("Rust forward: {reason}"),
            };
            writeln!(f, "\n{r}:")?;
            for line in detail.lines() {
                writeln!(f, "  {line}")?;
            }
        }
        Ok(())
    }
}

// ---- what #[kernelize] expands to --------------------------------------------------------

/// Items the code generated by `#[kernelize]` uses. Not a public API: it changes with the macro.
#[doc(hidden)]
pub mod __private {
    use super::*;

    pub use super::{DispatchError, KernelArg, KernelOutput};

    /// The per-layer static of a `kernel_<forward>` method: its names and its decision slots.
    pub struct Layer {
        name: &'static str,
        type_name: &'static str,
        module: &'static str,
        args: &'static [&'static str],
        registry: &'static Registry,
        slots: [AtomicPtr<Resolution>; SLOTS],
    }

    impl fmt::Debug for Layer {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("Layer")
                .field("name", &self.name)
                .field("type_name", &self.type_name)
                .finish_non_exhaustive()
        }
    }

    /// A resolved kernel function of a layer.
    #[derive(Debug, Clone, Copy)]
    pub struct Bound {
        function: &'static KernelFunction,
        resolution: &'static Resolution,
    }

    impl Layer {
        /// A layer with no decision made yet.
        pub const fn new(
            name: &'static str,
            type_name: &'static str,
            module: &'static str,
            args: &'static [&'static str],
            registry: &'static Registry,
        ) -> Self {
            Layer {
                name,
                type_name,
                module,
                args,
                registry,
                slots: [const { AtomicPtr::new(std::ptr::null_mut()) }; SLOTS],
            }
        }

        /// The kernel to call on `device` in the current mode, `None` for the Rust forward, or
        /// the strict-mode error.
        #[inline]
        pub fn kernel(&'static self, device: Option<DLDevice>) -> Result<Option<Bound>, DispatchError> {
            let target = Target::of(device);
            let mode = Mode::current();
            let resolution = match slot_index(target, mode) {
                Some(i) => {
                    let p = self.slots[i].load(Ordering::Acquire);
                    if p.is_null() {
                        self.resolve(target, mode, Some(i))
                    } else {
                        // SAFETY: slots only ever hold pointers to leaked (never freed)
                        // resolutions, published with Release after being fully written.
                        unsafe { &*p }
                    }
                }
                None => self.resolve(target, mode, None),
            };
            match &resolution.function {
                Some(function) => Ok(Some(Bound { function, resolution })),
                None if is_strict() => Err(DispatchError::Strict { resolution }),
                None => Ok(None),
            }
        }

        #[cold]
        #[inline(never)]
        fn resolve(&'static self, target: Target, mode: Mode, slot: Option<usize>) -> &'static Resolution {
            let key = (self as *const Layer as usize, target, mode);
            let made = |state: &State| match slot {
                Some(i) => {
                    let p = self.slots[i].load(Ordering::Acquire);
                    // SAFETY: as in `kernel`.
                    (!p.is_null()).then(|| unsafe { &*p })
                }
                None => state.overflow.get(&key).copied(),
            };
            if let Some(r) = made(&state()) {
                return r;
            }
            // Deciding may load libraries (file I/O, dlopen, initialisers): it runs without the
            // dispatch lock, so other layers and `report()` are never held up behind it. Two
            // threads may decide the same slot at once; the first to publish wins, and the
            // loader makes each library load only once.
            let decision = decide(self.registry, self.name, target, mode, &Settings::from_env(), platform());
            let mut state = state();
            if let Some(r) = made(&state) {
                return r;
            }
            let resolution: &'static Resolution = Box::leak(Box::new(Resolution {
                layer: self.name,
                type_name: self.type_name,
                module: self.module,
                args: self.args,
                target,
                mode,
                choice: decision.choice,
                function: decision.function,
            }));
            log_resolution(resolution);
            state.resolutions.push(resolution);
            if !state.registries.iter().any(|r| std::ptr::eq(*r, self.registry)) {
                state.registries.push(self.registry);
            }
            match slot {
                Some(i) => self.slots[i].store(std::ptr::from_ref(resolution).cast_mut(), Ordering::Release),
                None => {
                    state.overflow.insert(key, resolution);
                }
            }
            resolution
        }
    }

    /// Calls the bound kernel with `args` (as written in `#[kernelize(args = …)]`).
    #[inline]
    pub fn call<const N: usize>(bound: Bound, args: &[KernelValue<'_>; N]) -> Result<(), DispatchError> {
        const { assert!(N <= MAX_ARGS, "a kernel call takes at most MAX_ARGS arguments") };
        let layer = bound.resolution.layer;
        let mut stream = None;
        for (i, v) in args.iter().enumerate() {
            match v {
                KernelValue::Invalid(error) => {
                    let name = bound.resolution.args.get(i).copied().unwrap_or("?");
                    return Err(DispatchError::Argument { layer, index: i, name, error: error.clone() });
                }
                KernelValue::Held(held) if stream.is_none() => stream = held.stream(),
                _ => {}
            }
        }
        let packed: [Arg<'_>; N] = std::array::from_fn(|i| match &args[i] {
            KernelValue::View(t) => Arg::Tensor(t),
            KernelValue::Tensor(t) => Arg::Tensor(t),
            KernelValue::Held(t) => Arg::Tensor(t.view()),
            KernelValue::Int(v) => Arg::Int(*v),
            KernelValue::Float(v) => Arg::Float(*v),
            KernelValue::Bool(v) => Arg::Bool(*v),
            KernelValue::None | KernelValue::Invalid(_) => Arg::None,
        });
        // The call's contract: the kernel function and its arguments were declared together,
        // by the layer's mapping in kernels.toml and its `#[kernelize(args = …)]` (see the
        // module docs); the tensors borrow live memory for the duration of the call (held
        // tensors stay valid while `args` lives), and the outputs are borrowed mutably from
        // allocations nothing else can reach.
        let result = match stream {
            // SAFETY: the call's contract (above); the stream is the held tensor's device's.
            Some(stream) if !stream.handle().is_null() => unsafe { bound.function.call_on_stream(stream, &packed) },
            // SAFETY: the call's contract (above); the default stream needs no setting.
            _ => unsafe { bound.function.call(&packed) },
        };
        result.map_err(|source| DispatchError::Kernel { layer, source: Box::new(source) })
    }

    /// Converts a dispatch error into the layer's error type.
    #[inline]
    pub fn layer_error<E: From<DispatchError>>(error: DispatchError) -> E {
        E::from(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loader::{EmbeddedFile, EmbeddedVariant};
    use crate::platform::{CudaDevice, CudaInfo};
    use crate::registry::KernelEntry;
    use crate::variant::{CpuArch, Os};

    /// A CPU variant name for an architecture this machine is not.
    const FOREIGN_CPU: &str =
        if cfg!(target_arch = "x86_64") { "tvm-ffi01-cpu-aarch64-linux" } else { "tvm-ffi01-cpu-x86_64-linux" };

    fn this_cpu_variant() -> String {
        format!("tvm-ffi01-cpu-{}-{}", CpuArch::current(), Os::current())
    }

    fn registry(variants: &'static [EmbeddedVariant]) -> Registry {
        let kernels: &'static [KernelEntry] = Box::leak(Box::new([
            KernelEntry { name: "act", repo: "kernels-test/act", commit: None, variants, cached: &[] },
            KernelEntry { name: "norm", repo: "kernels-test/norm", commit: None, variants: &[], cached: &[] },
        ]));
        let range = |min, max| Some(CapabilityRange { min, max });
        let v = |a, b| Some(Version::new(a, b));
        let layers: &'static [LayerEntry] = Box::leak(Box::new([
            LayerEntry {
                layer: "Act",
                device: BackendKind::Cpu,
                kernel: "act",
                function: "silu_and_mul",
                capability: None,
                mode: ModeSupport::Training,
            },
            LayerEntry {
                layer: "Norm",
                device: BackendKind::Cuda,
                kernel: "norm",
                function: "rms_norm",
                capability: range(v(8, 0), None),
                mode: ModeSupport::Inference,
            },
            LayerEntry {
                layer: "Norm",
                device: BackendKind::Cpu,
                kernel: "norm",
                function: "rms_norm",
                capability: None,
                mode: ModeSupport::Inference,
            },
            LayerEntry {
                layer: "Ghost",
                device: BackendKind::Cpu,
                kernel: "missing",
                function: "f",
                capability: None,
                mode: ModeSupport::Inference,
            },
        ]));
        Registry { kernels, layers, tvm_ffi: None }
    }

    fn cpu_platform() -> Platform {
        Platform::new(Os::current(), CpuArch::current())
    }

    fn gpu_platform(major: u32, minor: u32) -> Platform {
        cpu_platform().with_cuda(CudaInfo {
            driver_version: Version::new(13, 0),
            devices: vec![CudaDevice { ordinal: 0, name: "GPU".into(), capability: Version::new(major, minor) }],
        })
    }

    fn fallback(d: &Decision) -> &FallbackReason {
        match &d.choice {
            Choice::Fallback(r) => r,
            Choice::Kernel(k) => panic!("expected a fallback, got kernel {k:?}"),
        }
    }

    const CPU: Target = Target::Device(BackendKind::Cpu, 0);
    const CUDA0: Target = Target::Device(BackendKind::Cuda, 0);

    #[test]
    fn disabled_mapping_wins_over_everything() {
        let reg = registry(&[]);
        let settings = Settings { disable_mapping: true, local_kernels: None };
        let d = decide(&reg, "Norm", CPU, Mode::Inference, &settings, &cpu_platform());
        assert!(matches!(fallback(&d), FallbackReason::Disabled));
        assert!(!fallback(&d).is_failure());
        assert_eq!(fallback(&d).to_string(), "DISABLE_KERNEL_MAPPING is set");
    }

    #[test]
    fn no_mapping_names_the_devices_that_are_mapped() {
        let reg = registry(&[]);
        let d = decide(&reg, "Unknown", CPU, Mode::Inference, &Settings::default(), &cpu_platform());
        assert!(matches!(fallback(&d), FallbackReason::NoMapping { mapped, .. } if mapped.is_empty()));
        let d = decide(&reg, "Act", CUDA0, Mode::Inference, &Settings::default(), &gpu_platform(9, 0));
        let FallbackReason::NoMapping { device, mapped } = fallback(&d) else { panic!("{:?}", d.choice) };
        assert_eq!((*device, mapped.as_slice()), (BackendKind::Cuda, [BackendKind::Cpu].as_slice()));
        assert_eq!(fallback(&d).to_string(), "kernels.toml maps it to no kernel for cuda (only for cpu)");
    }

    #[test]
    fn unsupported_devices_and_absent_gpus_fall_back() {
        let reg = registry(&[]);
        let vulkan = Target::of(Some(DLDevice::new(DLDeviceType::VULKAN, 0)));
        let d = decide(&reg, "Norm", vulkan, Mode::Inference, &Settings::default(), &cpu_platform());
        assert!(matches!(fallback(&d), FallbackReason::UnsupportedDevice { device_type: 7 }), "{:?}", d.choice);
        let d = decide(&reg, "Norm", CUDA0, Mode::Inference, &Settings::default(), &cpu_platform());
        assert!(matches!(fallback(&d), FallbackReason::NoDevice { device: BackendKind::Cuda, .. }), "{:?}", d.choice);
        let cuda3 = Target::Device(BackendKind::Cuda, 3);
        let d = decide(&reg, "Norm", cuda3, Mode::Inference, &Settings::default(), &gpu_platform(9, 0));
        let reason = fallback(&d).to_string();
        assert!(reason.contains("cuda device 3 is not usable: the driver lists 1 device(s)"), "{reason}");
    }

    #[test]
    fn capability_outside_every_range_falls_back() {
        let reg = registry(&[]);
        let d = decide(&reg, "Norm", CUDA0, Mode::Inference, &Settings::default(), &gpu_platform(7, 5));
        let FallbackReason::Capability { capability, ranges } = fallback(&d) else { panic!("{:?}", d.choice) };
        assert_eq!((*capability, ranges.as_slice()), (Version::new(7, 5), ["norm 8.0..".to_owned()].as_slice()));
        // Inside the range, the decision moves on to finding a variant.
        let d = decide(&reg, "Norm", CUDA0, Mode::Inference, &Settings::default(), &gpu_platform(9, 0));
        assert!(matches!(fallback(&d), FallbackReason::NoVariant { trace: None, .. }), "{:?}", d.choice);
    }

    #[test]
    fn training_needs_a_kernel_with_backward() {
        let reg = registry(&[]);
        let d = decide(&reg, "Norm", CPU, Mode::Training, &Settings::default(), &cpu_platform());
        let FallbackReason::NoBackward { kernels } = fallback(&d) else { panic!("{:?}", d.choice) };
        assert_eq!(kernels, &["norm"]);
        assert!(fallback(&d).to_string().contains("mode = \"training\""));
        // The same layer in inference mode gets past the mode check.
        let d = decide(&reg, "Norm", CPU, Mode::Inference, &Settings::default(), &cpu_platform());
        assert!(matches!(fallback(&d), FallbackReason::NoVariant { .. }), "{:?}", d.choice);
    }

    #[test]
    fn kernels_without_variants_or_with_unknown_names_fall_back() {
        let reg = registry(&[]);
        let d = decide(&reg, "Ghost", CPU, Mode::Inference, &Settings::default(), &cpu_platform());
        assert!(matches!(fallback(&d), FallbackReason::UnknownKernel { kernel } if kernel == "missing"));
        assert!(fallback(&d).is_failure());
        let d = decide(&reg, "Norm", CPU, Mode::Inference, &Settings::default(), &cpu_platform());
        let reason = fallback(&d).to_string();
        assert!(reason.contains("LOCAL_KERNELS=kernels-test/norm=<dir>"), "{reason}");
    }

    #[test]
    fn embedded_variants_for_other_machines_are_explained() {
        static VARIANTS: &[EmbeddedVariant] = &[EmbeddedVariant {
            variant: FOREIGN_CPU,
            archs: &[],
            library: EmbeddedFile { path: "_act.so", sha256: "00", bytes: b"not a library" },
        }];
        let reg = registry(VARIANTS);
        let d = decide(&reg, "Act", CPU, Mode::Training, &Settings::default(), &cpu_platform());
        let trace = fallback(&d).trace().expect("a selection trace");
        assert_eq!(trace.chosen(), None);
        assert!(matches!(trace.verdict(FOREIGN_CPU), Some(crate::select::Verdict::Rejected(_))), "{trace}");
        assert!(fallback(&d).to_string().contains(FOREIGN_CPU));
    }

    #[test]
    fn load_failures_fall_back_with_the_loader_error() {
        let variant: &'static str = Box::leak(this_cpu_variant().into_boxed_str());
        let variants: &'static [EmbeddedVariant] = Box::leak(Box::new([EmbeddedVariant {
            variant,
            archs: &[],
            library: EmbeddedFile { path: "_act.so", sha256: "00", bytes: b"tampered" },
        }]));
        let reg = registry(variants);
        let d = decide(&reg, "Act", CPU, Mode::Inference, &Settings::default(), &cpu_platform());
        let FallbackReason::LoadFailed { error, .. } = fallback(&d) else { panic!("{:?}", d.choice) };
        assert!(matches!(**error, LoadError::DigestMismatch { .. }), "{error}");

        // A malformed LOCAL_KERNELS, and one naming a directory that does not exist.
        let settings = Settings { disable_mapping: false, local_kernels: Some("kernels-test/act".into()) };
        let d = decide(&reg, "Act", CPU, Mode::Inference, &settings, &cpu_platform());
        assert!(
            matches!(fallback(&d), FallbackReason::LoadFailed { error, .. } if matches!(**error, LoadError::LocalKernels(_)))
        );
        let settings =
            Settings { disable_mapping: false, local_kernels: Some("kernels-test/act=/nonexistent/k".into()) };
        let d = decide(&reg, "Act", CPU, Mode::Inference, &settings, &cpu_platform());
        assert!(
            matches!(fallback(&d), FallbackReason::LoadFailed { error, .. } if matches!(**error, LoadError::Io { .. }))
        );
    }

    /// On this machine's real platform: CUDA device 0 is either absent (no device) or has a
    /// capability that a range above it excludes and a range around it admits.
    #[test]
    fn cuda_decisions_on_this_machine() {
        let platform = Platform::detect();
        let gpu = platform.cuda.present().and_then(|c| c.devices.iter().find(|d| d.ordinal == 0));
        let cc = gpu.map_or(Version::new(9, 0), |d| d.capability);
        let layers: &'static [LayerEntry] = Box::leak(Box::new([
            LayerEntry {
                layer: "Above",
                device: BackendKind::Cuda,
                kernel: "norm",
                function: "rms_norm",
                capability: Some(CapabilityRange { min: Some(Version::new(cc.major + 1, 0)), max: None }),
                mode: ModeSupport::Inference,
            },
            LayerEntry {
                layer: "Around",
                device: BackendKind::Cuda,
                kernel: "norm",
                function: "rms_norm",
                capability: Some(CapabilityRange { min: Some(cc), max: Some(cc) }),
                mode: ModeSupport::Inference,
            },
        ]));
        let reg = Registry { layers, ..registry(&[]) };
        let above = decide(&reg, "Above", CUDA0, Mode::Inference, &Settings::default(), &platform);
        let around = decide(&reg, "Around", CUDA0, Mode::Inference, &Settings::default(), &platform);
        match gpu {
            Some(_) => {
                assert!(matches!(fallback(&above), FallbackReason::Capability { capability, .. } if *capability == cc));
                // Past the capability check: the registry has no variant of the kernel.
                assert!(matches!(fallback(&around), FallbackReason::NoVariant { .. }), "{:?}", around.choice);
            }
            None => {
                for d in [&above, &around] {
                    assert!(matches!(fallback(d), FallbackReason::NoDevice { .. }), "{:?}", d.choice);
                }
            }
        }
    }

    #[test]
    fn targets_come_from_dlpack_devices() {
        assert_eq!(Target::of(None), CPU);
        assert_eq!(Target::of(Some(DLDevice::CPU)), CPU);
        assert_eq!(Target::of(Some(DLDevice::new(DLDeviceType::CUDA_HOST, 0))), CPU);
        assert_eq!(Target::of(Some(DLDevice::cuda(2))), Target::Device(BackendKind::Cuda, 2));
        assert_eq!(Target::of(Some(DLDevice::rocm(1))), Target::Device(BackendKind::Rocm, 1));
        assert_eq!(Target::of(Some(DLDevice::cuda(-1))), Target::Unsupported(2));
        assert_eq!(Target::of(Some(DLDevice::new(DLDeviceType::WEBGPU, 0))).to_string(), "webgpu");
        assert_eq!(Target::Device(BackendKind::Cuda, 1).to_string(), "cuda:1");
    }

    #[test]
    fn every_slotted_target_has_its_own_slot() {
        let mut seen = std::collections::HashSet::new();
        for kind in BackendKind::ALL {
            for ordinal in 0..SLOT_ORDINALS as u32 {
                for mode in [Mode::Inference, Mode::Training] {
                    let i = slot_index(Target::Device(kind, ordinal), mode).expect("a slot");
                    assert!(i < SLOTS && seen.insert(i), "{kind} {ordinal} {mode} -> {i}");
                }
            }
        }
        assert_eq!(slot_index(Target::Device(BackendKind::Cuda, SLOT_ORDINALS as u32), Mode::Inference), None);
        assert_eq!(slot_index(Target::Unsupported(7), Mode::Inference), None);
    }

    #[test]
    fn modes_are_scoped_and_restored_on_panic() {
        assert_eq!(Mode::current(), Mode::Inference);
        let inner = with_mode(Mode::Training, || {
            let nested = with_mode(Mode::Inference, Mode::current);
            (Mode::current(), nested)
        });
        assert_eq!(inner, (Mode::Training, Mode::Inference));
        assert_eq!(Mode::current(), Mode::Inference);
        let caught = std::panic::catch_unwind(|| with_mode(Mode::Training, || panic!("inside")));
        assert!(caught.is_err());
        assert_eq!(Mode::current(), Mode::Inference);
        // Other threads keep their own mode.
        with_mode(Mode::Training, || {
            assert_eq!(std::thread::spawn(Mode::current).join().unwrap(), Mode::Inference);
        });
    }

    #[test]
    fn conversions_report_what_cannot_be_passed() {
        assert!(matches!(3usize.kernel_arg(), KernelValue::Int(3)));
        assert!(matches!(u64::MAX.kernel_arg(), KernelValue::Invalid(ArgError::IntOutOfRange { .. })));
        assert!(matches!(0.5f32.kernel_arg(), KernelValue::Float(v) if v == 0.5));
        assert!(matches!(None::<f32>.kernel_arg(), KernelValue::None));
        assert!(matches!((&&true).kernel_arg(), KernelValue::Bool(true)));
        let v = vec![1f32, 2.0, 3.0];
        assert!(matches!(v.kernel_arg(), KernelValue::Tensor(t) if t.shape() == [3]));
        assert_eq!(v.device(), Some(DLDevice::CPU));
        assert_eq!(2f32.device(), None);
        let t = HostTensor::new(vec![0f32; 6], &[2, 3]).unwrap();
        assert!(matches!(t.kernel_arg(), KernelValue::Tensor(v) if v.shape() == [2, 3]));
        assert!(HostTensor::new(vec![0f32; 5], &[2, 3]).is_err());
        let mut z = HostTensor::<f32>::zeros(&[1; 9]);
        assert!(matches!(z.kernel_output(), KernelValue::Invalid(ArgError::Tensor(TensorError::TooManyDims { .. }))));
    }

    #[test]
    fn errors_and_resolutions_can_cross_threads() {
        fn shared<T: Send + Sync + 'static>() {}
        shared::<DispatchError>();
        shared::<Resolution>();
        shared::<Report>();
        shared::<__private::Layer>();
    }
}
