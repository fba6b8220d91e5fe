//! Dispatching `#[kernelize]`d layers: kernel or Rust forward, decided once and explained.
//!
//! `#[kernelize]` (re-exported as [`crate::kernelize`]) gives a layer a `kernel_<forward>`
//! method. Each call finds the device of its first tensor argument ([`KernelArg::device`]) and
//! the current [`Mode`], and looks up the decision for (layer, device, mode, deterministic mode
//! or not): the first call makes it, every later call reads it with one atomic load. Then
//! either the kernel function runs (output allocated, arguments converted with
//! [`KernelArg`]/[`KernelOutput`]) or the layer's Rust forward does.
//!
//! # Example
//!
//! ```
//! use kernels_runtime::dispatch::{self, DispatchError, HostTensor};
//! use kernels_runtime::kernelize;
//!
//! // Brings in the registry the build script generated from kernels.toml (`build.rs`:
//! // `kernels_build::build()`); here one that maps `RMSNorm` for CUDA only, so on the CPU the
//! // layer uses its Rust forward. A `layer` that kernels.toml lacks does not compile.
//! // kernels_runtime::include_kernels!();
//! # use kernels_runtime::registry::{LayerEntry, ModeSupport, Registry};
//! # use kernels_runtime::variant::BackendKind;
//! static __KERNELS_REGISTRY: Registry = Registry {
//!     layers: &[LayerEntry {
//!         layer: "RMSNorm",
//!         device: BackendKind::Cuda,
//!         kernel: "ops",
//!         function: "rms_norm",
//!         capability: None,
//!         mode: ModeSupport::Inference,
//!         deterministic: false,
//!         tolerance: None,
//!     }],
//!     ..Registry::EMPTY
//! };
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
//!    [`Mode::Training`] only mappings declared with backward support count, and in
//!    deterministic mode (`KERNELS_DETERMINISTIC=1` or [`set_deterministic`]) only mappings
//!    declared `deterministic = true`.
//! 4. The kernel is loaded from `LOCAL_KERNELS` when it names the kernel's repo, else from the
//!    variants embedded in the binary (the best one for this machine, with a
//!    [decision trace](crate::select::DecisionTrace)).
//! 5. The mapped function is resolved (`__tvm_ffi_<function>`, or for a torch stable-ABI
//!    variant the op of that name the library registered for the device's dispatch key).
//!
//! Any step that fails makes the layer use its Rust forward, logged once through `tracing`
//! (`warn` for failures, `info` for configurations without a kernel) and recorded for
//! [`report`]. In strict mode (`KERNELS_STRICT=1` or [`set_strict`]) each such fallback is a
//! [`DispatchError::Strict`] instead; a switch that turns a kernel off is allowed, but a layer
//! that deterministic mode leaves without a kernel
//! ([`FallbackReason::NotDeterministic`]) is an error. A kernel that runs and fails is always an error
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
//! After the first call, a call costs one thread-local read (the mode), two relaxed loads
//! (deterministic mode, run-time switches), one `Acquire` load and the conversion of each
//! argument into a stack array, then the kernel's indirect call.
//! Tensor adapters whose tensors must stay locked during the call ([`KernelTensor::Held`])
//! add one allocation per such tensor.
//! Decisions for device ordinals ≥ 8 live behind a mutex instead of an atomic slot.

mod adapter;
mod cache;
mod decide;
mod disable;
mod error;
mod host_tensor;
mod mode;
mod private;
mod report;
mod target;
#[cfg(test)]
mod tests;
mod verify;

use std::sync::OnceLock;

use crate::platform::Platform;
use crate::variant::BackendKind;

pub use adapter::{AdapterError, ArgError, HeldTensor, KernelArg, KernelOutput, KernelTensor, KernelValue};
pub use cache::Resolution;
pub use decide::{Choice, Decision, FallbackReason, KernelChoice, decide};
pub use disable::{Switch, disable, enable, with_disabled};
pub use error::DispatchError;
pub use host_tensor::HostTensor;
pub use mode::{Mode, Settings, is_deterministic, is_strict, set_deterministic, set_strict, with_mode};
pub use report::{LayerReport, Report, report, report_with};
pub use target::Target;
pub use verify::{CompareError, Difference, Verification, Verify, set_verify, set_verify_for};

pub use crate::registry::Tolerance;

/// Items the code generated by `#[kernelize]` uses. Not a public API: it changes with the macro.
#[doc(hidden)]
pub mod __private {
    pub use super::private::*;
}

/// The platform as selection for `kind` sees it, probed once per kind and process: the CPU's
/// needs no driver probe, so a process whose layers all run on the CPU never loads one
/// ([`Platform::detect_for`]).
pub(super) fn platform_for(kind: BackendKind) -> &'static Platform {
    static PLATFORMS: [OnceLock<Platform>; 5] = [const { OnceLock::new() }; 5];
    let (slot, probed) = match kind {
        BackendKind::Cuda => (1, kind),
        BackendKind::Rocm => (2, kind),
        BackendKind::Xpu => (3, kind),
        BackendKind::Metal => (4, kind),
        // Kinds kernels-rs has no probe for are absent on every platform.
        BackendKind::Cpu | BackendKind::Cann | BackendKind::Neuron | BackendKind::Tpu => (0, BackendKind::Cpu),
    };
    PLATFORMS[slot].get_or_init(|| Platform::detect_for(probed))
}
