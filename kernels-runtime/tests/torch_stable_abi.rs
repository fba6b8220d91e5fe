//! The stable-ABI pre-load check on real libraries: the example kernels that
//! `scripts/build-stable-abi-kernel.sh` compiles against the pinned torch headers, laid out as
//! Hub variants under `build-out/` (targets 2.9 and 2.11, and one that calls `aten::matmul`
//! and needs libc10's C++ ABI).
//!
//! The CUDA example kernel (`scripts/build-stable-abi-cuda-kernel.sh`, nvcc from PyPI, no GPU
//! needed) is checked from the variant directory named by `KERNELS_TEST_STABLE_ABI_CUDA`
//! (scripts/test.sh sets it).
//!
//! Without those builds the tests say so on stderr and pass, unless
//! `KERNELS_TEST_REQUIRE_STABLE_ABI=1` (scripts/test.sh sets it), which turns the absence into
//! a failure.

use std::io::Cursor;
use std::path::{Path, PathBuf};

use kernels_runtime::metadata::{read_and_verify, read_verified};
use kernels_runtime::torch_stable_abi::{
    CheckError, StableAbiLibrary, Unsupported, check_library, check_library_from, stable_abi_target_supported,
};
use kernels_runtime::variant::{Backend, CpuArch, Framework, Os, VariantName, Version};

const BUILD_SCRIPT: &str = "scripts/build-stable-abi-kernel.sh";

/// `build-out/<repo>/build/torch-stable-abi<MM>-cpu-<arch>-linux`, or `None` (with a note)
/// when it has not been built and the build is not required.
fn variant(repo: &str, target: &str) -> Option<PathBuf> {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("kernels-runtime sits in the workspace");
    let name = format!("torch-stable-abi{target}-cpu-{}-linux", std::env::consts::ARCH);
    let dir = workspace.join("build-out").join(repo).join("build").join(name);
    if dir.join("metadata.json").is_file() {
        return Some(dir);
    }
    let missing = format!("{} is missing: run `{BUILD_SCRIPT}` (scripts/test.sh does)", dir.display());
    if std::env::var("KERNELS_TEST_REQUIRE_STABLE_ABI").as_deref() == Ok("1") {
        panic!("KERNELS_TEST_REQUIRE_STABLE_ABI=1 but {missing}");
    }
    eprintln!("SKIPPED: {missing}");
    None
}

/// The library of a variant directory, as the loader will have it: verified against the
/// digest of its `metadata.json`, then checked from those bytes.
fn check_variant(dir: &Path) -> (PathBuf, Result<StableAbiLibrary, CheckError>) {
    let metadata = read_and_verify(dir).unwrap_or_else(|e| panic!("{e}"));
    let id = metadata.id.clone().expect("metadata.json has an id");
    let file = format!("{id}.abi3.so");
    let bytes = read_verified(dir, &metadata, &file).unwrap_or_else(|e| panic!("{e}"));
    let path = dir.join(&file);
    let from_bytes = check_library_from(&mut Cursor::new(bytes), &path);
    // The same answer from the file.
    match (&from_bytes, check_library(&path)) {
        (Ok(a), Ok(b)) => assert_eq!(*a, b),
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
        (a, b) => panic!("bytes and file disagree: {a:?} vs {b:?}"),
    }
    (path, from_bytes)
}

fn target_of(dir: &Path) -> Version {
    let name = VariantName::parse(&dir.file_name().unwrap().to_string_lossy()).unwrap();
    match name.framework() {
        Some(Framework::TorchStableAbi(v)) => v,
        other => panic!("{}: not a stable-ABI variant: {other:?}", dir.display()),
    }
}

#[test]
fn the_example_kernels_need_only_what_the_host_provides() {
    for (target, registration) in [
        ("29", ["aoti_torch_call_dispatcher", "aoti_torch_library_impl"]),
        ("211", ["torch_call_dispatcher", "torch_library_impl"]),
    ] {
        let Some(dir) = variant("stable-abi-cpu", target) else { return };
        let version = target_of(&dir);
        assert_eq!(stable_abi_target_supported(version), Ok(()));
        // Loadable wherever the runtime carries the host.
        let loadable = VariantName::parse(&dir.file_name().unwrap().to_string_lossy()).unwrap().loadable();
        assert_eq!(loadable.is_ok(), kernels_runtime::torch_stable_abi::host_compiled_in().is_ok(), "{loadable:?}");

        let (path, checked) = check_variant(&dir);
        let library = checked.unwrap_or_else(|e| panic!("{e}"));
        eprintln!(
            "{}: target {version}, {} DT_NEEDED {:?}, {} shim functions, ATen ops {:?}",
            path.display(),
            library.needed.len(),
            library.needed,
            library.shim_functions.len(),
            library.aten_ops
        );
        for soname in ["libtorch.so", "libtorch_cpu.so", "libc10.so"] {
            assert!(library.needed.iter().any(|n| n == soname), "{soname}: {:?}", library.needed);
        }
        assert_eq!(library.aten_ops, ["aten::empty_like"]);
        for name in registration.iter().chain(&["aoti_torch_library_init_def", "aoti_torch_library_def"]) {
            assert!(library.shim_functions.iter().any(|f| f == name), "{name}: {:?}", library.shim_functions);
        }
        // torch::stable::parallel_for needs a 2.10 target.
        let parallel = library.shim_functions.iter().any(|f| f == "torch_parallel_for");
        assert_eq!(parallel, version >= Version::new(2, 10), "{:?}", library.shim_functions);
    }
}

#[test]
fn the_unsupported_kernel_is_refused_with_each_reason() {
    let Some(dir) = variant("stable-abi-cpu-unsupported", "211") else { return };
    let (path, checked) = check_variant(&dir);
    let err = checked.unwrap_err();
    let CheckError::Unsupported { path: named, reasons } = &err else { panic!("{err}") };
    assert_eq!(*named, path);
    assert_eq!(
        *reasons,
        [
            Unsupported::CxxAbi {
                symbol: "_ZN3c106detail14torchCheckFailEPKcS2_jS2_".into(),
                name: "c10::detail::torchCheckFail".into(),
            },
            Unsupported::AtenOp("aten::matmul".into()),
        ]
    );
    let text = err.to_string();
    eprintln!("{text}");
    assert!(text.starts_with(&format!("{}: cannot be served without libtorch: ", path.display())), "{text}");
    assert!(text.contains("calls `aten::matmul`, which this runtime does not implement"), "{text}");
    assert!(text.contains("needs `c10::detail::torchCheckFail`"), "{text}");
}

/// The CUDA example kernel's variant directory from `KERNELS_TEST_STABLE_ABI_CUDA`, or `None`
/// (with a note) when it is unset and the build is not required.
fn cuda_variant() -> Option<PathBuf> {
    match std::env::var_os("KERNELS_TEST_STABLE_ABI_CUDA") {
        Some(dir) if !dir.is_empty() => {
            let dir = PathBuf::from(dir);
            assert!(
                dir.join("metadata.json").is_file(),
                "KERNELS_TEST_STABLE_ABI_CUDA={} holds no metadata.json: run `scripts/build-stable-abi-cuda-kernel.sh`",
                dir.display()
            );
            Some(dir)
        }
        _ => {
            let missing = "KERNELS_TEST_STABLE_ABI_CUDA is unset: point it at the variant directory that \
                           `scripts/build-stable-abi-cuda-kernel.sh` prints (scripts/test.sh does)";
            if std::env::var("KERNELS_TEST_REQUIRE_STABLE_ABI").as_deref() == Ok("1") {
                panic!("KERNELS_TEST_REQUIRE_STABLE_ABI=1 but {missing}");
            }
            eprintln!("SKIPPED: {missing}");
            None
        }
    }
}

#[test]
fn the_cuda_example_kernel_needs_only_what_the_host_provides() {
    let Some(dir) = cuda_variant() else { return };
    let name = VariantName::parse(&dir.file_name().expect("a variant directory").to_string_lossy())
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        name,
        VariantName::Arch {
            framework: Framework::TorchStableAbi(Version::new(2, 11)),
            cxx_abi: None,
            backend: Backend::Cuda(Version::new(13, 0)),
            cpu: CpuArch::current(),
            os: Os::current(),
        },
        "{}",
        dir.display()
    );
    assert_eq!(stable_abi_target_supported(target_of(&dir)), Ok(()));
    let metadata = read_and_verify(&dir).unwrap_or_else(|e| panic!("{e}"));
    let backend = metadata.backend.expect("metadata.json has a backend");
    assert_eq!(backend.kind, "cuda");
    assert!(!backend.archs.is_empty(), "metadata.json lists no CUDA archs");

    let (path, checked) = check_variant(&dir);
    let library = checked.unwrap_or_else(|e| panic!("{e}"));
    eprintln!(
        "{}: {} DT_NEEDED {:?}, {} shim functions {:?}, ATen ops {:?}",
        path.display(),
        library.needed.len(),
        library.needed,
        library.shim_functions.len(),
        library.shim_functions,
        library.aten_ops
    );
    for soname in
        ["libtorch.so", "libtorch_cpu.so", "libtorch_cuda.so", "libc10.so", "libc10_cuda.so", "libcudart.so.13"]
    {
        assert!(library.needed.iter().any(|n| n == soname), "{soname}: {:?}", library.needed);
    }
    // Outputs come from the caller, except `silu_and_mul_new`'s, allocated through the dispatcher.
    assert_eq!(library.aten_ops, ["aten::new_empty"], "{:?}", library.aten_ops);
    // Registration for a 2.11 target, and the launch stream of the input's device, taken under
    // a device guard.
    for name in [
        "aoti_torch_library_init_def",
        "aoti_torch_library_init_impl",
        "aoti_torch_library_def",
        "torch_library_impl",
        "aoti_torch_create_device_guard",
        "aoti_torch_delete_device_guard",
        "aoti_torch_get_current_cuda_stream",
        "aoti_torch_get_device_index",
    ] {
        assert!(library.shim_functions.iter().any(|f| f == name), "{name}: {:?}", library.shim_functions);
    }
    assert!(library.shim_functions.iter().any(|f| f == "torch_call_dispatcher"), "{:?}", library.shim_functions);
}
