//! kernels-runtime: the run-time half of kernels-rs.
//!
//! It names variants ([`variant`]), detects the platform ([`platform`]), selects the variant a
//! machine can run and explains why ([`select`]), reads and verifies a variant's
//! `metadata.json` ([`metadata`]), and loads and calls TVM-FFI kernels ([`ffi`], [`loader`]),
//! with the CUDA runtime of kernels that link it ([`cuda_runtime`]).
//!
//! Features: `runtime` (default) is everything above; without it only [`ffi`]'s ABI types
//! remain, and `kernel-abi` adds [`ffi::kernel`] for writing kernels in Rust. `candle` adds
//! kernel calls on candle tensors and `#[kernelize]` on candle layers ([`candle`];
//! `candle-cuda` for CUDA tensors).

#[cfg(feature = "candle")]
pub mod candle;
#[cfg(feature = "runtime")]
pub mod cuda_runtime;
#[cfg(feature = "runtime")]
pub mod digest;
#[cfg(feature = "runtime")]
pub mod dispatch;
#[cfg(feature = "runtime")]
pub mod env;
pub mod ffi;
#[cfg(feature = "runtime")]
pub mod hub_cache;
#[cfg(feature = "runtime")]
pub mod loader;
#[cfg(feature = "runtime")]
pub mod metadata;
#[cfg(feature = "runtime")]
pub mod platform;
#[cfg(feature = "runtime")]
pub mod registry;
#[cfg(feature = "runtime")]
pub mod select;
#[cfg(feature = "runtime")]
pub mod torch_stable_abi;
#[cfg(feature = "runtime")]
mod unpack;
#[cfg(feature = "runtime")]
pub mod variant;

#[cfg(feature = "runtime")]
#[doc(hidden)]
pub use dispatch::__private;
/// Marks a layer as replaceable by a Hub kernel: see [`dispatch`] (feature `macros`).
#[cfg(feature = "macros")]
pub use kernels_macros::kernelize;
