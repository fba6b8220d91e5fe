//! PyTorch's stable ABI without libtorch: what a host inside kernels-rs will provide to
//! `torch-stable-abi<MM>` variants, and the check, before loading, that a library needs
//! nothing more.
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
//! C++ symbols of PyTorch's namespaces are refused. Selection does not load these variants
//! yet.

mod check;
mod provided;

pub use check::{CheckError, StableAbiLibrary, Unsupported, check_imports, check_library, check_library_from};
pub use provided::{
    ATEN_OPS, AtenOp, CUDA_RUNTIME_PREFIX, NEWEST_TARGET, OLDEST_TARGET, PYTHON_FUNCTIONS, SHIM_FUNCTIONS,
    SYSTEM_LIBRARIES, TORCH_LIBRARIES, UnsupportedTarget, aten_op, provides_library, provides_shim_function,
    stable_abi_target_supported,
};
