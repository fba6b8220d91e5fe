//! What the stable-ABI host provides: the targets it serves, the shim functions it exports,
//! the ATen ops it implements and the sonames it stands in for. Every name is PyTorch's,
//! as declared in `torch/csrc/inductor/aoti_torch/c/shim.h`, `torch/csrc/stable/c/shim.h`
//! and `torch/csrc/inductor/aoti_torch/generated/c_shim_aten.h`.

use crate::variant::Version;

/// The oldest stable-ABI target served (`torch-stable-abi29`): the first release whose
/// `torch::stable` registers ops without libtorch's C++ API.
pub const OLDEST_TARGET: Version = Version::new(2, 9);

/// The newest stable-ABI target served (`torch-stable-abi213`). Each release adds shim
/// functions (11 in 2.11, 52 in 2.12, 18 in 2.13); a newer target may need ones missing here.
pub const NEWEST_TARGET: Version = Version::new(2, 13);

/// Why a stable-ABI target is not served.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("built for torch stable ABI {target}; this runtime serves targets {} through {}", OLDEST_TARGET, NEWEST_TARGET)]
pub struct UnsupportedTarget {
    /// The variant's target (`torch-stable-abi<MM>`).
    pub target: Version,
}

/// Whether a variant built for stable-ABI `target` (the `<MM>` of `torch-stable-abi<MM>`) is
/// within [`OLDEST_TARGET`]..=[`NEWEST_TARGET`].
pub fn stable_abi_target_supported(target: Version) -> Result<(), UnsupportedTarget> {
    if (OLDEST_TARGET..=NEWEST_TARGET).contains(&target) { Ok(()) } else { Err(UnsupportedTarget { target }) }
}

/// The shim functions the host exports, by concern. ATen ops reached through a C shim of their
/// own (`aoti_torch_aten_*`) are listed with the op in [`ATEN_OPS`] instead.
pub const SHIM_FUNCTIONS: &[&str] = &[
    // The libtorch version the host claims to be.
    "aoti_torch_abi_version",
    // Op registration, run by the library's static initialisers (2.10 adds the version
    // argument to `impl`).
    "aoti_torch_library_init_def",
    "aoti_torch_library_init_impl",
    "aoti_torch_library_init_fragment",
    "aoti_torch_library_def",
    "aoti_torch_library_impl",
    "torch_library_impl",
    "aoti_torch_delete_library_object",
    // Calling ATen ops by name with a boxed stack (2.10 adds the build version).
    "aoti_torch_call_dispatcher",
    "torch_call_dispatcher",
    // `int[]` arguments (sizes of `view`, `reshape`, `empty`, `new_empty`) as StableLists.
    "torch_new_list_reserve_size",
    "torch_list_size",
    "torch_list_get_item",
    "torch_list_set_item",
    "torch_list_push_back",
    "torch_delete_list",
    // 2.13 headers: optional arguments as StableIValues on the heap.
    "torch_new_stable_ivalue",
    "torch_delete_stable_ivalue",
    // 2.13 headers: the last error's message (thread-local, borrowed).
    "torch_exception_get_what",
    "torch_exception_get_what_without_backtrace",
    // Tensors: allocation, owning handles, and what a kernel reads of them.
    "aoti_torch_empty_strided",
    "aoti_torch_new_uninitialized_tensor",
    "aoti_torch_new_tensor_handle",
    "aoti_torch_delete_tensor_object",
    "aoti_torch_is_defined",
    "aoti_torch_get_data_ptr",
    "torch_get_mutable_data_ptr",
    "torch_get_const_data_ptr",
    "aoti_torch_get_dim",
    "aoti_torch_get_numel",
    "aoti_torch_get_size",
    "aoti_torch_get_sizes",
    "aoti_torch_get_stride",
    "aoti_torch_get_strides",
    "aoti_torch_get_storage_offset",
    "aoti_torch_is_contiguous",
    "aoti_torch_get_dtype",
    "aoti_torch_get_layout",
    "aoti_torch_get_device_type",
    "aoti_torch_get_device_index",
    // Devices: guards, the current device and CUDA stream.
    "aoti_torch_create_device_guard",
    "aoti_torch_delete_device_guard",
    "aoti_torch_device_guard_set_index",
    "aoti_torch_get_current_device_index",
    "aoti_torch_get_current_cuda_stream",
    // CPU threads, with at::parallel_for's semantics.
    "torch_parallel_for",
    "torch_get_num_threads",
    "torch_get_thread_idx",
    // Constants: the host picks the codes, the kernel only compares them.
    "aoti_torch_device_type_cpu",
    "aoti_torch_device_type_cuda",
    "aoti_torch_device_type_meta",
    "aoti_torch_device_type_mps",
    "aoti_torch_device_type_privateuse1",
    "aoti_torch_device_type_xpu",
    "aoti_torch_dtype_bfloat16",
    "aoti_torch_dtype_bool",
    "aoti_torch_dtype_complex128",
    "aoti_torch_dtype_complex32",
    "aoti_torch_dtype_complex64",
    "aoti_torch_dtype_float16",
    "aoti_torch_dtype_float32",
    "aoti_torch_dtype_float64",
    "aoti_torch_dtype_float8_e4m3fn",
    "aoti_torch_dtype_float8_e4m3fnuz",
    "aoti_torch_dtype_float8_e5m2",
    "aoti_torch_dtype_float8_e5m2fnuz",
    "aoti_torch_dtype_int16",
    "aoti_torch_dtype_int32",
    "aoti_torch_dtype_int64",
    "aoti_torch_dtype_int8",
    "aoti_torch_dtype_uint16",
    "aoti_torch_dtype_uint32",
    "aoti_torch_dtype_uint64",
    "aoti_torch_dtype_uint8",
    "torch_dtype_float4_e2m1fn_x2",
    "torch_dtype_float8_e8m0fnu",
    "aoti_torch_dtype_element_size",
    "aoti_torch_layout_strided",
    "aoti_torch_layout_sparse_coo",
    "aoti_torch_layout_sparse_csr",
    "aoti_torch_layout_sparse_csc",
    "aoti_torch_layout_sparse_bsr",
    "aoti_torch_layout_sparse_bsc",
    "aoti_torch_layout__mkldnn",
    "aoti_torch_layout_jagged",
    "aoti_torch_memory_format_contiguous_format",
    "aoti_torch_memory_format_channels_last",
    "aoti_torch_memory_format_channels_last_3d",
    "aoti_torch_memory_format_preserve_format",
];

/// An ATen op the host implements, as a kernel reaches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AtenOp {
    /// The op's name through the dispatcher (`aten::empty_like`), a string literal in the
    /// library; every overload of it is served.
    pub name: &'static str,
    /// The op's own C shims (`aoti_torch_aten_fill__Scalar`), which `torch::stable` calls
    /// instead of the dispatcher for some ops and targets.
    pub c_shims: &'static [&'static str],
}

/// The ATen ops the host implements, sorted by name: allocation, filling and views.
/// `torch::stable` reaches 27 ops in all; kernels calling the others are not served.
pub const ATEN_OPS: &[AtenOp] = &[
    AtenOp { name: "aten::empty", c_shims: &[] },
    AtenOp { name: "aten::empty_like", c_shims: &[] },
    AtenOp { name: "aten::fill_", c_shims: &["aoti_torch_aten_fill__Scalar"] },
    AtenOp { name: "aten::narrow", c_shims: &["aoti_torch_aten_narrow"] },
    AtenOp { name: "aten::new_empty", c_shims: &["aoti_torch_aten_new_empty"] },
    AtenOp { name: "aten::reshape", c_shims: &[] },
    AtenOp { name: "aten::select", c_shims: &[] },
    AtenOp { name: "aten::squeeze", c_shims: &[] },
    AtenOp { name: "aten::transpose", c_shims: &[] },
    AtenOp { name: "aten::unsqueeze", c_shims: &[] },
    AtenOp { name: "aten::view", c_shims: &[] },
    AtenOp { name: "aten::zero_", c_shims: &[] },
];

/// The sonames of libtorch's libraries, served by the host's stand-ins.
pub const TORCH_LIBRARIES: &[&str] =
    &["libc10.so", "libc10_cuda.so", "libtorch.so", "libtorch_cpu.so", "libtorch_cuda.so"];

/// Libraries of the system that a stable-ABI kernel may need: the C and C++ runtimes.
pub const SYSTEM_LIBRARIES: &[&str] = &[
    "ld-linux-aarch64.so.1",
    "ld-linux-x86-64.so.2",
    "libc.so.6",
    "libdl.so.2",
    "libgcc_s.so.1",
    "libm.so.6",
    "libpthread.so.0",
    "librt.so.1",
    "libstdc++.so.6",
];

/// The CUDA runtime's soname prefix: CUDA kernels link the shared `libcudart.so.<major>`.
pub const CUDA_RUNTIME_PREFIX: &str = "libcudart.so.";

/// The Python function a kernel imports (for its `PyInit_<name>`, which only Python's import
/// calls); the host stubs it.
pub const PYTHON_FUNCTIONS: &[&str] = &["PyModule_Create2"];

/// Whether the host exports shim function `name`: one of [`SHIM_FUNCTIONS`] or a C shim of one
/// of [`ATEN_OPS`].
pub fn provides_shim_function(name: &str) -> bool {
    SHIM_FUNCTIONS.contains(&name) || ATEN_OPS.iter().any(|op| op.c_shims.contains(&name))
}

/// The op [`ATEN_OPS`] lists for dispatcher name `name` (`aten::view`), if the host implements it.
pub fn aten_op(name: &str) -> Option<&'static AtenOp> {
    ATEN_OPS.binary_search_by(|op| op.name.cmp(name)).ok().map(|i| &ATEN_OPS[i])
}

/// Whether a library that lists `soname` in `DT_NEEDED` finds it when the host serves it: a
/// libtorch soname (a stand-in), the CUDA runtime, or a system library.
pub fn provides_library(soname: &str) -> bool {
    TORCH_LIBRARIES.contains(&soname)
        || SYSTEM_LIBRARIES.contains(&soname)
        || soname
            .strip_prefix(CUDA_RUNTIME_PREFIX)
            .is_some_and(|major| !major.is_empty() && major.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_sorted_unique(names: &[&str], what: &str) {
        for pair in names.windows(2) {
            assert!(pair[0] < pair[1], "{what}: `{}` must come before `{}`", pair[1], pair[0]);
        }
    }

    #[test]
    fn tables_are_sorted_and_unique() {
        let mut shims = SHIM_FUNCTIONS.to_vec();
        shims.sort_unstable();
        assert_sorted_unique(&shims, "SHIM_FUNCTIONS");
        assert_sorted_unique(&ATEN_OPS.iter().map(|op| op.name).collect::<Vec<_>>(), "ATEN_OPS");
        assert_sorted_unique(TORCH_LIBRARIES, "TORCH_LIBRARIES");
        assert_sorted_unique(SYSTEM_LIBRARIES, "SYSTEM_LIBRARIES");
    }

    #[test]
    fn every_name_has_its_family_prefix() {
        for name in SHIM_FUNCTIONS {
            assert!(name.starts_with("aoti_torch_") || name.starts_with("torch_"), "{name}");
            assert!(!name.starts_with("aoti_torch_aten_"), "{name}: list it with its op in ATEN_OPS");
        }
        for op in ATEN_OPS {
            assert!(op.name.starts_with("aten::") && !op.name.contains('.'), "{}", op.name);
            for shim in op.c_shims {
                let bare = op.name.trim_start_matches("aten::");
                assert!(shim.starts_with(&format!("aoti_torch_aten_{bare}")), "{shim} is not a C shim of {}", op.name);
            }
        }
    }

    /// The 48 imports measured on seven Hub-style builds (2.9 to 2.13 targets, CPU and CUDA).
    const MEASURED_UNION: &[&str] = &[
        "PyModule_Create2",
        "aoti_torch_abi_version",
        "aoti_torch_create_device_guard",
        "aoti_torch_delete_device_guard",
        "aoti_torch_delete_library_object",
        "aoti_torch_delete_tensor_object",
        "aoti_torch_get_current_cuda_stream",
        "aoti_torch_get_data_ptr",
        "aoti_torch_get_device_index",
        "aoti_torch_get_device_type",
        "aoti_torch_get_dim",
        "aoti_torch_get_dtype",
        "aoti_torch_get_numel",
        "aoti_torch_get_size",
        "aoti_torch_is_contiguous",
        "aoti_torch_library_def",
        "aoti_torch_library_impl",
        "aoti_torch_library_init_def",
        "aoti_torch_library_init_impl",
        "aoti_torch_new_tensor_handle",
        "aoti_torch_call_dispatcher",
        "torch_call_dispatcher",
        "torch_library_impl",
        "torch_parallel_for",
        "torch_exception_get_what",
        "torch_exception_get_what_without_backtrace",
    ];

    #[test]
    fn the_measured_imports_are_provided() {
        for name in MEASURED_UNION {
            assert!(provides_shim_function(name) || PYTHON_FUNCTIONS.contains(name), "{name}");
        }
        for name in ["aoti_torch_empty_strided", "aoti_torch_get_sizes", "aoti_torch_get_strides"] {
            assert!(provides_shim_function(name), "{name}");
        }
        // Every constant getter of the 2.11 headers.
        let constants = SHIM_FUNCTIONS.iter().filter(|n| {
            ["aoti_torch_dtype_", "aoti_torch_device_type_", "torch_dtype_"].iter().any(|p| n.starts_with(p))
                && **n != "aoti_torch_dtype_element_size"
        });
        assert_eq!(constants.count(), 20 + 6 + 2);
    }

    #[test]
    fn ops_and_their_c_shims() {
        assert_eq!(aten_op("aten::empty_like").map(|op| op.name), Some("aten::empty_like"));
        assert!(aten_op("aten::matmul").is_none());
        assert!(aten_op("aten::empty_like.out").is_none(), "overloads are not op names");
        assert!(provides_shim_function("aoti_torch_aten_fill__Scalar"));
        assert!(provides_shim_function("aoti_torch_aten_new_empty"));
        for missing in ["aoti_torch_aten_pad", "aoti_torch_aten_amax", "torch_from_blob", "torch_foo", ""] {
            assert!(!provides_shim_function(missing), "{missing}");
        }
    }

    #[test]
    fn libraries() {
        for ok in
            ["libtorch.so", "libtorch_cuda.so", "libc10_cuda.so", "libcudart.so.13", "libcudart.so.12", "libc.so.6"]
        {
            assert!(provides_library(ok), "{ok}");
        }
        for missing in ["libcudart.so", "libcudart.so.", "libcudart.so.12.8", "libtorch_python.so", "libfoo.so", ""] {
            assert!(!provides_library(missing), "{missing}");
        }
    }

    #[test]
    fn target_range() {
        for (major, minor) in [(2, 9), (2, 10), (2, 11), (2, 12), (2, 13)] {
            assert_eq!(stable_abi_target_supported(Version::new(major, minor)), Ok(()));
        }
        for (major, minor) in [(2, 8), (2, 14), (3, 0), (1, 13), (0, 0)] {
            let err = stable_abi_target_supported(Version::new(major, minor)).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("built for torch stable ABI {major}.{minor}; this runtime serves targets 2.9 through 2.13")
            );
        }
    }
}
