//! Calling kernels through the TVM-FFI stable C ABI.
//!
//! A kernel library exports functions as `__tvm_ffi_<name>` with one signature
//! ([`abi::TVMFFISafeCallType`]): arguments are 16-byte tagged values ([`abi::TVMFFIAny`]),
//! tensors are borrowed DLPack `DLTensor*`s, a non-zero return means an error was raised.
//!
//! - [`abi`]: the `#[repr(C)]` types and constants of the ABI (always compiled, no
//!   dependencies).
//! - [`TensorView`] and [`Arg`]: what a call passes, built without heap allocation.
//! - [`KernelFunction`]: a function resolved once from a loaded library; [`call`] packs the
//!   arguments on the stack, sets the CUDA/ROCm stream (`TVMFFIEnvSetStream`) when a tensor
//!   lives on such a device, and turns a failure into [`KernelError`] with the kernel's own
//!   kind and message. The same type holds an op of a torch stable-ABI library, called
//!   through the host of [`torch_stable_abi`](crate::torch_stable_abi) with the same
//!   arguments, so dispatch and the tensor adapters do not care which ABI serves a layer.
//! - [`needs_tvm_ffi`] and [`preload_tvm_ffi`]/[`preload_tvm_ffi_from`]: kernels built against tvm-ffi
//!   list `libtvm_ffi.so` in `DT_NEEDED` without an RPATH, so it is preloaded by absolute path
//!   (once per process, `RTLD_NOW | RTLD_GLOBAL`) before such a kernel is opened. Kernels that
//!   do not need it load without it.
//! - [`needed_libraries`], [`dynamic_symbols`] and [`strings_with_prefix`]: what else an ELF
//!   library needs and provides, read without loading it (its `DT_NEEDED` entries, its defined
//!   and undefined dynamic symbols, string literals such as the `aten::` operators it calls).
//! - [`kernel`] (feature `kernel-abi`): writing kernels in Rust.
//!
//! # Error channels
//!
//! A failing call reports its error through one of two channels, found when the function is
//! resolved (symbols are looked up through the kernel library's own handle, which also searches
//! its dependencies):
//!
//! 1. Kernels written in Rust export `__kernels_rs_take_error` ([`abi::KernelsTakeErrorFn`]);
//!    see [`kernel`] for the protocol. It is tried first.
//! 2. Kernels linked against tvm-ffi raise with `TVMFFIErrorSetRaisedFromCStr`; the caller
//!    takes the error object with `TVMFFIErrorMoveFromRaised`, reads kind, message and
//!    backtrace from its `TVMFFIErrorCell`, and releases it with `TVMFFIObjectDecRef`.
//!
//! A library with neither still reports the failure ([`KernelError::NoMessage`]).
//!
//! # Example
//!
//! ```no_run
//! use std::path::Path;
//! use kernels_runtime::ffi::{self, Arg, KernelFunction, TensorView};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let path = Path::new("/path/to/build/tvm-ffi01-cpu-x86_64-linux/_activation_0123abc.so");
//! if ffi::needs_tvm_ffi(path)? {
//!     ffi::preload_tvm_ffi()?; // KERNELS_TVM_FFI_LIB, else `tvm-ffi-config --libdir`
//! }
//! // Kernel libraries are never unloaded: leak the handle to get `&'static`.
//! // SAFETY: the file is a kernel library whose initialisers are safe to run.
//! let library = Box::leak(Box::new(unsafe { libloading::Library::new(path)? }));
//! // SAFETY: the library follows the TVM-FFI ABI.
//! let silu_and_mul = unsafe { KernelFunction::resolve(library, path, "silu_and_mul")? };
//!
//! let x = vec![0.5f32; 2 * 8];
//! let mut out = vec![0f32; 2 * 4];
//! let x_view = TensorView::from_slice(&x, &[2, 8])?;
//! let out_view = TensorView::from_slice_mut(&mut out, &[2, 4])?;
//! // SAFETY: silu_and_mul(out, x) writes only `out`, which nothing else touches meanwhile.
//! unsafe { silu_and_mul.call(&[Arg::from(&out_view), Arg::from(&x_view)])? };
//! # Ok(())
//! # }
//! ```
//!
//! [`call`]: KernelFunction::call

pub mod abi;
#[cfg(feature = "runtime")]
mod call;
#[cfg(feature = "runtime")]
mod elf;
#[cfg(feature = "kernel-abi")]
pub mod kernel;
#[cfg(feature = "runtime")]
mod tensor;
#[cfg(feature = "runtime")]
mod tvm_ffi;

pub use abi::{DLDataType, DLDevice, DLDeviceType, DLTensor, Element};
#[cfg(feature = "runtime")]
pub use call::{Arg, KernelError, KernelFunction, MAX_ARGS, ResolveError, Stream, Value};
#[cfg(feature = "runtime")]
pub use elf::{
    DynSymbol, DynamicSymbols, SymbolBinding, SymbolKind, TVM_FFI_LIBRARY, dynamic_symbols, dynamic_symbols_from,
    needed_libraries, needed_libraries_from, needs_tvm_ffi, strings_with_prefix, strings_with_prefix_from,
};
#[cfg(feature = "runtime")]
pub use tensor::{MAX_NDIM, TensorError, TensorView};
#[cfg(feature = "runtime")]
pub use tvm_ffi::{
    TVM_FFI_CONFIG, TvmFfiError, TvmFfiLibrary, TvmFfiOrigin, locate_tvm_ffi, preload_tvm_ffi, preload_tvm_ffi_from,
    preloaded_tvm_ffi,
};
