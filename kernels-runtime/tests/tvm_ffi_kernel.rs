//! Calls kernels built against the real tvm-ffi (`tests/c/tvm_ffi_probe.c`, compiled here with
//! `cc` against the wheel's headers and linked to its `libtvm_ffi.so` without an RPATH, as the
//! Hub's kernel-builder links): preloading, argument packing, error objects, the stream
//! context, and the header's layouts compared with ours.
//!
//! Needs `apache-tvm-ffi` (`source scripts/tvm-ffi-env.sh`, then `KERNELS_TVM_FFI_LIB=$TVM_FFI_LIB`
//! or `tvm-ffi-config` on `PATH`) and a C compiler (`CC`, default `cc`). Without tvm-ffi the
//! tests say so on stderr and pass, unless `KERNELS_TEST_REQUIRE_TVM_FFI=1` (CI sets it), which
//! turns the absence into a failure.

use std::mem::{offset_of, size_of};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use kernels_runtime::ffi::abi::{self, TVMFFIAny, TVMFFIByteArray, TVMFFIErrorCell, TVMFFIObject, type_index};
use kernels_runtime::ffi::{
    Arg, DLDataType, DLDevice, DLTensor, KernelError, KernelFunction, Stream, TensorView, TvmFfiLibrary, TvmFfiOrigin,
    locate_tvm_ffi, needs_tvm_ffi, preload_tvm_ffi, preload_tvm_ffi_from, preloaded_tvm_ffi,
};

struct Probe {
    tvm_ffi: &'static TvmFfiLibrary,
    path: PathBuf,
    library: &'static libloading::Library,
}

fn include_dir(lib: &Path) -> PathBuf {
    if let Some(dir) = std::env::var_os("TVM_FFI_INCLUDE") {
        return dir.into();
    }
    if let Ok(out) = Command::new("tvm-ffi-config").arg("--includedir").output()
        && out.status.success()
    {
        return PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    }
    // The wheel's layout: tvm_ffi/lib/libtvm_ffi.so next to tvm_ffi/include.
    lib.parent().and_then(Path::parent).map(|p| p.join("include")).expect("include dir")
}

/// Builds the probe library, or `None` when tvm-ffi is not installed (and not required).
fn probe() -> Option<&'static Probe> {
    static PROBE: OnceLock<Option<Probe>> = OnceLock::new();
    PROBE
        .get_or_init(|| {
            let lib = match locate_tvm_ffi() {
                Ok(lib) => lib,
                Err(e) if std::env::var("KERNELS_TEST_REQUIRE_TVM_FFI").as_deref() == Ok("1") => {
                    panic!("KERNELS_TEST_REQUIRE_TVM_FFI=1 but tvm-ffi is missing: {e}")
                }
                Err(e) => {
                    eprintln!("SKIPPED: tvm-ffi tests need apache-tvm-ffi ({e})");
                    return None;
                }
            };
            let include = include_dir(&lib);
            let out_dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("tvm_ffi_probe");
            std::fs::create_dir_all(&out_dir).unwrap();
            let path = out_dir.join("libtvm_ffi_probe.so");
            let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c/tvm_ffi_probe.c");
            let cc = std::env::var_os("CC").unwrap_or_else(|| "cc".into());
            let status = Command::new(&cc)
                .args(["-shared", "-fPIC", "-O1", "-std=c11", "-Wall", "-Werror", "-o"])
                .arg(&path)
                .arg(&source)
                .arg("-I")
                .arg(&include)
                .arg("-L")
                .arg(lib.parent().unwrap())
                .arg("-ltvm_ffi")
                .status()
                .unwrap_or_else(|e| panic!("cannot run the C compiler {cc:?}: {e}"));
            assert!(status.success(), "compiling {} failed", source.display());
            // Linked like a Hub kernel: needs libtvm_ffi.so, has no RPATH to find it.
            assert!(needs_tvm_ffi(&path).unwrap());
            let tvm_ffi = preload_tvm_ffi_from(&lib).expect("preload libtvm_ffi.so");
            // SAFETY: the probe's initialisers are the C runtime's; its DT_NEEDED resolves to the
            // preloaded libtvm_ffi.so.
            let library = unsafe { libloading::Library::new(&path) }.expect("load the probe");
            Some(Probe { tvm_ffi, path, library: Box::leak(Box::new(library)) })
        })
        .as_ref()
}

fn function(p: &Probe, name: &str) -> KernelFunction {
    // SAFETY: the probe exports TVM-FFI safe-call functions.
    unsafe { KernelFunction::resolve(p.library, &p.path, name) }.unwrap()
}

#[test]
fn preloading_is_once_per_process() {
    let Some(p) = probe() else { return };
    assert_eq!(p.tvm_ffi.origin(), TvmFfiOrigin::Preloaded);
    assert!(p.tvm_ffi.path().is_absolute());
    // Later requests get the same library, whatever path they name.
    assert!(std::ptr::eq(preload_tvm_ffi().unwrap(), p.tvm_ffi));
    assert!(std::ptr::eq(preload_tvm_ffi_from(Path::new("/elsewhere/libtvm_ffi.so")).unwrap(), p.tvm_ffi));
    assert!(std::ptr::eq(preloaded_tvm_ffi().unwrap(), p.tvm_ffi));
}

#[test]
fn header_layouts_match_ours() {
    let Some(p) = probe() else { return };
    let mut out = [0i64; 29];
    let ov = TensorView::from_slice_mut(&mut out, &[29]).unwrap();
    // SAFETY: layout(out) writes only `out`.
    unsafe { function(p, "layout").call(&[Arg::from(&ov)]) }.unwrap();
    let ours = [
        size_of::<TVMFFIAny>() as i64,
        offset_of!(TVMFFIAny, value) as i64,
        size_of::<TVMFFIObject>() as i64,
        offset_of!(TVMFFIObject, type_index) as i64,
        size_of::<TVMFFIByteArray>() as i64,
        offset_of!(TVMFFIErrorCell, message) as i64,
        offset_of!(TVMFFIErrorCell, backtrace) as i64,
        size_of::<DLTensor>() as i64,
        offset_of!(DLTensor, ndim) as i64,
        offset_of!(DLTensor, dtype) as i64,
        offset_of!(DLTensor, shape) as i64,
        offset_of!(DLTensor, byte_offset) as i64,
        size_of::<DLDevice>() as i64,
        size_of::<DLDataType>() as i64,
        type_index::NONE.into(),
        type_index::INT.into(),
        type_index::BOOL.into(),
        type_index::FLOAT.into(),
        type_index::OPAQUE_PTR.into(),
        type_index::DL_TENSOR_PTR.into(),
        type_index::ERROR.into(),
        type_index::TENSOR.into(),
        type_index::STATIC_OBJECT_BEGIN.into(),
        abi::DLDeviceType::CPU.0.into(),
        abi::DLDeviceType::CUDA.0.into(),
        abi::DLDeviceType::ROCM.0.into(),
        abi::dtype_code::FLOAT.into(),
        abi::dtype_code::BFLOAT.into(),
        abi::dtype_code::BOOL.into(),
    ];
    assert_eq!(out, ours);
}

#[test]
fn arguments_arrive_as_packed() {
    let Some(p) = probe() else { return };
    let f = function(p, "echo");
    assert!(!f.is_rust_kernel());
    assert!(f.accepts_stream());
    let x = [0f32; 6];
    let xv = TensorView::from_slice(&x, &[3, 2]).unwrap();
    let mut out = [0i64; 12];
    let ov = TensorView::from_slice_mut(&mut out, &[12]).unwrap();
    let args = [Arg::from(&ov), Arg::Int(-7), Arg::Float(2.5), Arg::Bool(true), Arg::None, Arg::from(&xv)];
    // SAFETY: echo(out, …) writes only `out`.
    unsafe { f.call(&args) }.unwrap();
    assert_eq!(&out[..2], [i64::from(type_index::INT), -7]);
    assert_eq!(&out[2..4], [i64::from(type_index::FLOAT), 2.5f64.to_bits() as i64]);
    assert_eq!(&out[4..6], [i64::from(type_index::BOOL), 1]);
    assert_eq!(&out[6..8], [i64::from(type_index::NONE), 0]);
    assert_eq!(&out[8..10], [i64::from(type_index::DL_TENSOR_PTR), 2003]);
}

#[test]
fn raised_errors_carry_kind_and_message() {
    let Some(p) = probe() else { return };
    let f = function(p, "fail");
    // SAFETY: fail(code) touches no memory of ours.
    let err = unsafe { f.call(&[Arg::Int(42)]) }.unwrap_err();
    let KernelError::Raised { function: name, kind, message, .. } = &err else { panic!("{err:?}") };
    assert_eq!((name.as_str(), kind.as_str(), message.as_str()), ("fail", "ValueError", "probe failed with 42"));
    // The error was moved out: the next failure reports its own message, not a stale one.
    // SAFETY: as above.
    let err = unsafe { f.call(&[Arg::Int(7)]) }.unwrap_err();
    assert_eq!(err.raised(), Some(("ValueError", "probe failed with 7")));
    // And a kernel that checks its arguments reports through the same channel.
    // SAFETY: echo refuses a float first argument before touching memory.
    let err = unsafe { function(p, "echo").call(&[Arg::Float(1.0)]) }.unwrap_err();
    assert_eq!(err.raised(), Some(("TypeError", "echo: the first argument must be a large enough int64 tensor")));
}

#[test]
fn an_error_left_raised_by_a_successful_call_is_not_the_next_failures() {
    let Some(p) = probe() else { return };
    // SAFETY: neither function touches memory of ours.
    unsafe { function(p, "raise_but_succeed").call(&[]) }.unwrap();
    // SAFETY: as above.
    let err = unsafe { function(p, "fail_silently").call(&[]) }.unwrap_err();
    assert!(matches!(&err, KernelError::NoMessage { code: -2, .. }), "{err:?}");
    assert!(!err.to_string().contains("left behind"), "{err}");
}

#[test]
fn streams_are_set_for_the_call_and_restored() {
    let Some(p) = probe() else { return };
    let f = function(p, "stream");
    let (set, get) = (p.tvm_ffi.env_set_stream(), p.tvm_ffi.env_get_stream());
    let cuda = DLDevice::cuda(0);
    // A fake device tensor: the probe reads only its device.
    // SAFETY: `stream` never dereferences the data pointer.
    let x = unsafe { TensorView::from_raw_parts(0x1000 as *mut _, cuda, DLDataType::F16, &[4], None, 0) }.unwrap();
    let mut out = [0i64; 1];

    // Stream handles are opaque to tvm-ffi; these are never used as real streams.
    let (outer, given) = (0x51 as *mut std::ffi::c_void, 0xabc0 as *mut std::ffi::c_void);
    // SAFETY: TVMFFIEnvSetStream with a valid device and a null out-pointer.
    assert_eq!(unsafe { set(cuda.device_type.0, 0, outer, std::ptr::null_mut()) }, 0);

    {
        let ov = TensorView::from_slice_mut(&mut out, &[1]).unwrap();
        // SAFETY: stream(out, x) writes only `out`; the stream handle is never dereferenced.
        unsafe { f.call_on_stream(Stream::from_raw(cuda, given), &[Arg::from(&ov), Arg::from(&x)]) }.unwrap();
    }
    assert_eq!(out[0], given as i64, "the kernel sees the given stream");
    // SAFETY: TVMFFIEnvGetStream has no preconditions.
    assert_eq!(unsafe { get(cuda.device_type.0, 0) }, outer, "and the previous one is back");

    {
        let ov = TensorView::from_slice_mut(&mut out, &[1]).unwrap();
        // SAFETY: as above.
        unsafe { f.call(&[Arg::from(&ov), Arg::from(&x)]) }.unwrap();
    }
    assert_eq!(out[0], 0, "a CUDA tensor without a stream runs on the default stream");
    // SAFETY: as above.
    assert_eq!(unsafe { get(cuda.device_type.0, 0) }, outer);

    // CPU tensors leave the stream context alone.
    let cpu_x = [0f32; 1];
    let cv = TensorView::from_slice(&cpu_x, &[1]).unwrap();
    {
        let ov = TensorView::from_slice_mut(&mut out, &[1]).unwrap();
        // SAFETY: as above.
        unsafe { f.call(&[Arg::from(&ov), Arg::from(&cv)]) }.unwrap();
    }
    assert_eq!(out[0], 0, "no stream was set for the CPU");
    // SAFETY: restore the thread's default.
    assert_eq!(unsafe { set(cuda.device_type.0, 0, std::ptr::null_mut(), std::ptr::null_mut()) }, 0);
}
