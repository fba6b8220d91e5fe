//! The CUDA torch stable-ABI example kernel (`scripts/build-stable-abi-cuda-kernel.sh`: nvcc
//! from PyPI, the shared CUDA runtime, no GPU needed to build) loaded through the runtime's own
//! host on a machine that may have no GPU, with the real `libcudart.so.13` of the pinned
//! `nvidia-cuda-runtime` wheel:
//!
//! - selection for a constructed CUDA 13.0 sm_90 platform picks the stable-ABI variant, and the
//!   library loads (its `DT_NEEDED` libcudart found, its ops registered for the `CUDA` key);
//! - the kernel's own checks reach the caller as text (host memory refused);
//! - a call on a CUDA tensor where the CUDA runtime has no device fails with the runtime's own
//!   error from the host's device guard, before the kernel runs, and never aborts.
//!
//! With a GPU (`KERNELS_TEST_HAS_GPU=1`) the last case is skipped; the GPU suite runs the kernel
//! for real. `KERNELS_TEST_STABLE_ABI_CUDA` names the variant directory and `KERNELS_TEST_CUDART`
//! the CUDA runtime (scripts/test.sh sets both); without them the test says so and passes,
//! unless `KERNELS_TEST_REQUIRE_STABLE_ABI=1`.

use std::path::PathBuf;

use kernels_runtime::ffi::{Arg, DLDataType, DLDevice, DLDeviceType, KernelError, TensorView};
use kernels_runtime::loader;
use kernels_runtime::platform::{CudaDevice, CudaInfo, Platform};
use kernels_runtime::select::Request;
use kernels_runtime::variant::{CpuArch, Os, Version};

fn env_path(name: &str) -> Option<PathBuf> {
    match std::env::var_os(name).filter(|v| !v.is_empty()) {
        Some(v) => Some(PathBuf::from(v)),
        None if std::env::var("KERNELS_TEST_REQUIRE_STABLE_ABI").as_deref() == Ok("1") => {
            panic!("KERNELS_TEST_REQUIRE_STABLE_ABI=1 but {name} is not set (scripts/test.sh sets it)")
        }
        None => {
            eprintln!("SKIPPED: {name} is not set (scripts/test.sh sets it)");
            None
        }
    }
}

#[test]
fn a_cuda_stable_abi_kernel_loads_and_its_errors_come_back_without_a_gpu() {
    let (Some(variant_dir), Some(cudart)) = (env_path("KERNELS_TEST_STABLE_ABI_CUDA"), env_path("KERNELS_TEST_CUDART"))
    else {
        return;
    };
    if kernels_runtime::torch_stable_abi::host_compiled_in().is_err() {
        eprintln!("SKIPPED: this runtime has no torch stable-ABI host");
        return;
    }
    // The runtime finds the CUDA runtime the kernel needs where this variable says.
    // SAFETY: set before any other thread of this test binary reads the environment.
    unsafe { std::env::set_var(kernels_runtime::env::CUDART_LIB, &cudart) };
    let kernel_dir = variant_dir.parent().and_then(|b| b.parent()).expect("<kernel>/build/<variant>").to_owned();
    let platform = Platform::new(Os::current(), CpuArch::current()).with_cuda(CudaInfo {
        driver_version: Version::new(13, 0),
        devices: vec![CudaDevice { ordinal: 0, name: "constructed sm_90".into(), capability: Version::new(9, 0) }],
    });
    let (kernel, trace) = loader::load_from_dir("stable-abi-cuda", &kernel_dir, &platform, Request::cuda(0))
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(kernel.variant().starts_with("torch-stable-abi211-cu130-"), "{trace}");
    let silu = kernel.function("silu_and_mul").unwrap_or_else(|e| panic!("{e}"));
    assert!(silu.is_stable_abi() && silu.accepts_stream());
    assert!(silu.symbol().ends_with("::silu_and_mul"), "{}", silu.symbol());
    let err = kernel.function("gelu").unwrap_err().to_string();
    assert!(err.contains("registers no op `gelu`"), "{err}");

    // Host memory: the kernel's STD_TORCH_CHECK, as text.
    let x = [1f32; 8];
    let mut out = [0f32; 4];
    let x_view = TensorView::from_slice(&x, &[2, 4]).unwrap();
    let out_view = TensorView::from_slice_mut(&mut out, &[2, 2]).unwrap();
    // SAFETY: silu_and_mul(out, input) checks its arguments first and refuses host memory.
    let err = unsafe { silu.call(&[Arg::from(&out_view), Arg::from(&x_view)]) }.unwrap_err();
    match &err {
        KernelError::Raised { message, .. } => {
            assert!(message.contains("silu_and_mul: `input` must be a CUDA tensor"), "{message}")
        }
        other => panic!("expected the kernel's error, got {other:?}"),
    }

    if std::env::var("KERNELS_TEST_HAS_GPU").as_deref() == Ok("1") {
        return;
    }
    // A CUDA tensor where there is no GPU: the host's device guard asks the kernel's own CUDA
    // runtime for the device and gets its error, so the kernel never runs.
    let cuda0 = DLDevice { device_type: DLDeviceType::CUDA, device_id: 0 };
    let fake = 0x1000usize as *mut core::ffi::c_void;
    // SAFETY: the host fails the call in its device guard, before the kernel could touch
    // the (made-up) device pointers.
    let (x_view, out_view) = unsafe {
        (
            TensorView::from_raw_parts(fake, cuda0, DLDataType::F32, &[2, 4], None, 0).unwrap(),
            TensorView::from_raw_parts(fake, cuda0, DLDataType::F32, &[2, 2], None, 64).unwrap(),
        )
    };
    // SAFETY: as above.
    let err = unsafe { silu.call(&[Arg::from(&out_view), Arg::from(&x_view)]) }.unwrap_err().to_string();
    assert!(err.contains("cudaGetDevice failed: CUDA error"), "{err}");
    eprintln!("a CUDA call without a GPU: {err}");
}
