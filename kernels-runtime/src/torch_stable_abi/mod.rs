//! PyTorch's stable ABI without libtorch: what the host inside kernels-rs provides to
//! `torch-stable-abi<MM>` variants, the check, before loading, that a library needs nothing
//! more, and calling the ops such a library registers.
//!
//! A stable-ABI kernel imports C functions of PyTorch's shim (`aoti_torch_*`, `torch_*`) from
//! libtorch's sonames, registers its ops through them while it loads, and may call ATen ops
//! through the dispatcher by name (`aten::empty_like`). A host stands in for libtorch: it
//! exports the shim functions of [`SHIM_FUNCTIONS`], implements the ops of [`ATEN_OPS`],
//! carries the sonames of [`TORCH_LIBRARIES`], and serves targets [`OLDEST_TARGET`] through
//! [`NEWEST_TARGET`].
//!
//! Loading a library whose imports are missing would fail inside `dlopen`, or terminate the
//! process when a registration shim fails in its static initialisers, so [`check_library`]
//! reads the file first, without loading it (the ELF readers of [`ffi`](crate::ffi)): each
//! `DT_NEEDED` entry, each undefined symbol and each `aten::` op name must be provided, and
//! C++ symbols of PyTorch's namespaces are refused.
//!
//! The host (feature `torch-stable`, on by default, Linux x86_64/aarch64; see
//! [`host_compiled_in`]) is a C++ library that `build.rs` compiles and the runtime embeds,
//! with five empty stand-ins carrying libtorch's sonames. The loader materialises them like
//! embedded kernels (sealed memfd or private cache file, verified) and opens them
//! `RTLD_NOW | RTLD_LOCAL`, host first, once per process, before the first stable-ABI
//! kernel; a process that already holds a real libtorch is refused. Each kernel is opened
//! after [`check_library`] accepts its verified file, and what its static initialisers
//! register during that `dlopen` is recorded for it alone. `LoadedKernel::function` then
//! resolves a function name to the op of that name in the library's namespace for the
//! variant's dispatch key (`CPU`, `CUDA`), and [`KernelFunction`](crate::ffi::KernelFunction) calls
//! it: arguments checked against the op's schema (count, tensor or scalar), tensor handles
//! built over the [`TensorView`](crate::ffi::TensorView)s, scalars as `StableIValue`s, the
//! boxed function called through the host's catching trampoline, a C++ exception returned
//! as [`KernelError::Raised`](crate::ffi::KernelError::Raised) with its message.
//!
//! CUDA kernels link the shared CUDA runtime. When one loads, the host is handed that runtime's
//! `cudaGetDevice`/`cudaSetDevice`/`cudaMallocAsync`/`cudaFreeAsync`, found through the kernel's
//! own dependencies; a call on CUDA tensors then runs with the tensors' device current and the
//! caller's stream as the device's current stream (`aoti_torch_get_current_cuda_stream`), and
//! memory the host allocates for it is ordered on that stream.
//!
//! Not yet: ops that return values (`-> Tensor`), parameters other than `Tensor`, `int`,
//! `float`, `bool` and `None` for `T?`, and ROCm, XPU or Metal kernels.

mod check;
pub(crate) mod host;
mod op;
mod provided;

pub use check::{CheckError, StableAbiLibrary, Unsupported, check_imports, check_library, check_library_from};
pub use host::host_compiled_in;
pub(crate) use op::{StableAbiOp, StableAbiOps};
pub use provided::{
    ATEN_OPS, AtenOp, CUDA_RUNTIME_PREFIX, NEWEST_TARGET, OLDEST_TARGET, PYTHON_FUNCTIONS, SHIM_FUNCTIONS,
    SYSTEM_LIBRARIES, TORCH_LIBRARIES, UnsupportedTarget, aten_op, provides_library, provides_shim_function,
    stable_abi_target_supported,
};
