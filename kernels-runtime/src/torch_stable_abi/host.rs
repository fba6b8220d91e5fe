//! The host inside the runtime: the C++ shim (`host/torch-stable/`, built by `build.rs` into
//! `libkernels_torch_host.so`) and five empty stand-ins with libtorch's sonames, embedded in
//! the binary and loaded once per process, host first, each from a verified descriptor (a
//! sealed memfd or a private cache file, as embedded kernels are), `RTLD_NOW | RTLD_LOCAL`,
//! never unloaded. A stable-ABI kernel opened afterwards finds libtorch's sonames among the
//! libraries already loaded, and its imports resolve to the host without anything entering
//! the global scope.
//!
//! Each kernel library is opened with a window on the host's registration records
//! ([`open_kernel`]): what its static initialisers registered during that `dlopen` belongs to
//! it alone.

use std::ffi::{CStr, c_char, c_void};
use std::path::Path;
use std::sync::{Mutex, OnceLock};

use libloading::Library;

use super::op::{Registration, RegistrationKind, StableAbiOps};

/// A boxed op function: (stack, num_args, num_outputs).
pub(crate) type BoxedFn = unsafe extern "C" fn(*mut u64, u64, u64);

/// `KernelsTorchHostRegistration` of `kernels_torch_host.h`.
#[repr(C)]
struct RawRegistration {
    kind: i32,
    ns: *const c_char,
    name: *const c_char,
    schema: *const c_char,
    dispatch_key: *const c_char,
    fn_: Option<BoxedFn>,
    build_version: u64,
    num_args: i64,
    num_returns: i64,
    file: *const c_char,
    line: u32,
}

/// The host functions the runtime calls, copied out of the host (never unloaded).
#[derive(Debug, Clone, Copy)]
pub(crate) struct HostApi {
    pub(crate) tensor_new:
        unsafe extern "C" fn(*mut c_void, i64, *const i64, *const i64, i64, i32, i32, i32, *mut *mut c_void) -> i32,
    pub(crate) delete_tensor: unsafe extern "C" fn(*mut c_void) -> i32,
    /// (fn, stack, num_args, num_outputs, device type, device index, stream, err, err_len).
    pub(crate) call:
        unsafe extern "C" fn(BoxedFn, *mut u64, u64, u64, i32, i32, *mut c_void, *mut c_char, usize) -> i32,
    pub(crate) last_error: unsafe extern "C" fn() -> *const c_char,
    /// (dst, src, device type, device index, stream, err, err_len): copies a returned tensor
    /// into an output and drops it.
    pub(crate) copy_returned:
        unsafe extern "C" fn(*mut c_void, *mut c_void, i32, i32, *mut c_void, *mut c_char, usize) -> i32,
    registration_count: unsafe extern "C" fn() -> usize,
    registration: unsafe extern "C" fn(usize, *mut RawRegistration) -> i32,
    problem_count: unsafe extern "C" fn() -> usize,
    problem: unsafe extern "C" fn(usize) -> *const c_char,
    set_cuda_runtime: unsafe extern "C" fn(*const CudaRuntime) -> i32,
    has_cuda_runtime: unsafe extern "C" fn() -> i32,
}

/// `KernelsTorchCudaRuntime` of `kernels_torch_host.h`: the CUDA runtime functions the host's
/// device guards, current streams and device allocations use.
#[repr(C)]
struct CudaRuntime {
    get_device: unsafe extern "C" fn(*mut i32) -> i32,
    set_device: unsafe extern "C" fn(i32) -> i32,
    malloc_async: unsafe extern "C" fn(*mut *mut c_void, usize, *mut c_void) -> i32,
    free_async: unsafe extern "C" fn(*mut c_void, *mut c_void) -> i32,
    get_error_string: Option<unsafe extern "C" fn(i32) -> *const c_char>,
    memset_async: Option<unsafe extern "C" fn(*mut c_void, i32, usize, *mut c_void) -> i32>,
    memcpy_async: Option<unsafe extern "C" fn(*mut c_void, *const c_void, usize, i32, *mut c_void) -> i32>,
}

/// Hands the host the CUDA runtime that `kernel` links (found through the kernel's own
/// dependencies, so it is the very copy its launches use), once per process. A kernel that
/// links no shared CUDA runtime leaves the host as it was.
fn adopt_cuda_runtime(api: &HostApi, kernel: &libloading::os::unix::Library) {
    // SAFETY: a plain call into the host.
    if unsafe { (api.has_cuda_runtime)() } != 0 {
        return;
    }
    // SAFETY: the types are the CUDA runtime API's (cudaError_t is a C enum, an int; streams
    // are pointers); dlsym on the kernel's handle searches the kernel and the libraries it
    // needs, which stay loaded as long as the kernel, which is never unloaded.
    let runtime = unsafe {
        let (Ok(get_device), Ok(set_device), Ok(malloc_async), Ok(free_async)) = (
            kernel.get::<unsafe extern "C" fn(*mut i32) -> i32>(b"cudaGetDevice\0"),
            kernel.get::<unsafe extern "C" fn(i32) -> i32>(b"cudaSetDevice\0"),
            kernel.get::<unsafe extern "C" fn(*mut *mut c_void, usize, *mut c_void) -> i32>(b"cudaMallocAsync\0"),
            kernel.get::<unsafe extern "C" fn(*mut c_void, *mut c_void) -> i32>(b"cudaFreeAsync\0"),
        ) else {
            return;
        };
        let get_error_string =
            kernel.get::<unsafe extern "C" fn(i32) -> *const c_char>(b"cudaGetErrorString\0").ok().map(|f| *f);
        let memset_async = kernel
            .get::<unsafe extern "C" fn(*mut c_void, i32, usize, *mut c_void) -> i32>(b"cudaMemsetAsync\0")
            .ok()
            .map(|f| *f);
        let memcpy_async = kernel
            .get::<unsafe extern "C" fn(*mut c_void, *const c_void, usize, i32, *mut c_void) -> i32>(
                b"cudaMemcpyAsync\0",
            )
            .ok()
            .map(|f| *f);
        CudaRuntime {
            memset_async,
            memcpy_async,
            get_device: *get_device,
            set_device: *set_device,
            malloc_async: *malloc_async,
            free_async: *free_async,
            get_error_string,
        }
    };
    // SAFETY: the host copies the table; every function pointer stays valid (see above).
    unsafe { (api.set_cuda_runtime)(&runtime) };
}

/// Whether this build of the runtime carries the host, or why not.
pub fn host_compiled_in() -> Result<(), &'static str> {
    if cfg!(kernels_torch_host) {
        Ok(())
    } else if cfg!(all(target_os = "linux", any(target_arch = "x86_64", target_arch = "aarch64"))) {
        Err("this runtime was built without its torch stable-ABI host (feature `torch-stable`)")
    } else {
        Err("the torch stable-ABI host is built only for Linux on x86_64 and aarch64")
    }
}

#[cfg(kernels_torch_host)]
mod embedded {
    /// (file name, bytes): the host first, then the stand-ins.
    pub(super) const FILES: [(&str, &[u8]); 6] = [
        ("libkernels_torch_host.so", include_bytes!(concat!(env!("OUT_DIR"), "/libkernels_torch_host.so"))),
        ("libtorch.so", include_bytes!(concat!(env!("OUT_DIR"), "/libtorch.so"))),
        ("libtorch_cpu.so", include_bytes!(concat!(env!("OUT_DIR"), "/libtorch_cpu.so"))),
        ("libtorch_cuda.so", include_bytes!(concat!(env!("OUT_DIR"), "/libtorch_cuda.so"))),
        ("libc10.so", include_bytes!(concat!(env!("OUT_DIR"), "/libc10.so"))),
        ("libc10_cuda.so", include_bytes!(concat!(env!("OUT_DIR"), "/libc10_cuda.so"))),
    ];
}

#[cfg(not(kernels_torch_host))]
mod embedded {
    pub(super) const FILES: [(&str, &[u8]); 0] = [];
}

/// The host, loaded on first use; the error says why it cannot be (and stays).
pub(crate) fn host() -> Result<&'static HostApi, String> {
    static HOST: OnceLock<Result<HostApi, String>> = OnceLock::new();
    HOST.get_or_init(load_host).as_ref().map_err(Clone::clone)
}

/// A real libtorch already in the process, found by soname without loading anything.
fn real_libtorch() -> Option<&'static str> {
    ["libtorch_cpu.so", "libc10.so", "libtorch.so"].into_iter().find(|name| {
        let Ok(cname) = std::ffi::CString::new(*name) else { return false };
        // SAFETY: RTLD_NOLOAD only looks the name up among loaded libraries; a handle it
        // returns holds a reference that is dropped at once.
        unsafe {
            let handle = libc::dlopen(cname.as_ptr(), libc::RTLD_NOLOAD | libc::RTLD_LAZY);
            if handle.is_null() {
                false
            } else {
                libc::dlclose(handle);
                true
            }
        }
    })
}

fn load_host() -> Result<HostApi, String> {
    host_compiled_in()?;
    if let Some(name) = real_libtorch() {
        return Err(format!(
            "a real libtorch (`{name}`) is already loaded in this process; its symbols would clash with the \
             torch stable-ABI host, so stable-ABI kernels are not loaded"
        ));
    }
    let mut libraries = Vec::with_capacity(embedded::FILES.len());
    for (name, bytes) in embedded::FILES {
        let sha256: &'static str = Box::leak(crate::digest::sha256_hex(bytes).into_boxed_str());
        let file = crate::registry::EmbeddedFile { path: name, sha256, bytes };
        let unpacked = crate::unpack::unpack(&file, &crate::unpack::dirs(), crate::unpack::Strategy::from_env())
            .map_err(|e| format!("torch stable-ABI host: {e}"))?;
        let load_path = unpacked.load_path();
        // SAFETY: the bytes are the host and its stand-ins, built with this runtime and checked
        // against their digest through the descriptor opened here; the host's initialisers
        // only set up its own state.
        let opened =
            unsafe { libloading::os::unix::Library::open(Some(&load_path), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        // Kept open even on failure: glibc may have recorded the name.
        unpacked.keep_open();
        let library = opened.map_err(|e| format!("torch stable-ABI host: cannot load the embedded {name}: {e}"))?;
        libraries.push(&*Box::leak(Box::new(Library::from(library))));
    }
    let Some(host) = libraries.first() else {
        return Err("the torch stable-ABI host is not part of this runtime".to_owned());
    };
    macro_rules! sym {
        ($name:literal) => {
            // SAFETY: the type is the function's as `kernels_torch_host.h` and PyTorch's shim
            // headers declare it; the host is never unloaded, so the pointer stays valid.
            unsafe { host.get(concat!($name, "\0").as_bytes()).map(|s| *s) }
                .map_err(|e| format!("torch stable-ABI host: {}: {e}", $name))?
        };
    }
    Ok(HostApi {
        tensor_new: sym!("kernels_torch_host_tensor_new"),
        delete_tensor: sym!("aoti_torch_delete_tensor_object"),
        call: sym!("kernels_torch_host_call"),
        last_error: sym!("kernels_torch_host_last_error"),
        copy_returned: sym!("kernels_torch_host_copy_returned"),
        registration_count: sym!("kernels_torch_host_registration_count"),
        registration: sym!("kernels_torch_host_registration"),
        problem_count: sym!("kernels_torch_host_problem_count"),
        problem: sym!("kernels_torch_host_problem"),
        set_cuda_runtime: sym!("kernels_torch_host_set_cuda_runtime"),
        has_cuda_runtime: sym!("kernels_torch_host_has_cuda_runtime"),
    })
}

/// A string of the host's (NUL-terminated, alive for the process), copied.
pub(crate) fn host_string(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: the host's strings are NUL-terminated and never freed.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

/// Opens a stable-ABI kernel library (already verified and checked) with the host loaded
/// first, and returns what it registered while loading. Loads are serialised so each has
/// its own window of registration records.
pub(crate) fn open_kernel(load_path: &Path, display_path: &Path) -> Result<(Library, StableAbiOps), String> {
    static LOADING: Mutex<()> = Mutex::new(());
    let api = host()?;
    let _guard = LOADING.lock().unwrap_or_else(|e| e.into_inner());
    // SAFETY: plain calls into the host, which never throws.
    let (before, problems_before) = unsafe { ((api.registration_count)(), (api.problem_count)()) };
    // SAFETY: the library's bytes were verified and its imports checked against what the host
    // provides; its initialisers register ops with the host, whose registration shims never fail.
    let library = unsafe { libloading::os::unix::Library::open(Some(load_path), libc::RTLD_NOW | libc::RTLD_LOCAL) }
        .map_err(|e| format!("cannot load {}: {e}", display_path.display()))?;
    adopt_cuda_runtime(api, &library);
    // SAFETY: as above.
    let (after, problems_after) = unsafe { ((api.registration_count)(), (api.problem_count)()) };
    let mut registrations = Vec::with_capacity(after.saturating_sub(before));
    for index in before..after {
        let mut raw = RawRegistration {
            kind: -1,
            ns: std::ptr::null(),
            name: std::ptr::null(),
            schema: std::ptr::null(),
            dispatch_key: std::ptr::null(),
            fn_: None,
            build_version: 0,
            num_args: -1,
            num_returns: -1,
            file: std::ptr::null(),
            line: 0,
        };
        // SAFETY: `raw` is a valid out pointer of the record's type.
        if unsafe { (api.registration)(index, &mut raw) } != 0 {
            continue;
        }
        let kind = match raw.kind {
            0 => RegistrationKind::Def,
            1 => RegistrationKind::Impl,
            _ => continue,
        };
        registrations.push(Registration {
            kind,
            namespace: host_string(raw.ns),
            name: host_string(raw.name),
            schema: host_string(raw.schema),
            dispatch_key: host_string(raw.dispatch_key),
            function: raw.fn_,
        });
    }
    // SAFETY: indices below the count; the host's strings live for the process.
    let problems = (problems_before..problems_after).map(|i| host_string(unsafe { (api.problem)(i) })).collect();
    Ok((Library::from(library), StableAbiOps::new(registrations, problems)))
}
