//! The torch stable-ABI host (`kernels-runtime/host/torch-stable/`, built by
//! `scripts/build-torch-host.sh` into `target/torch-host/`) serving the real example kernels
//! of `scripts/build-stable-abi-kernel.sh` (targets 2.9 and 2.11), in a process without
//! libtorch: everything is opened `RTLD_LOCAL`, the kernels' registrations are read back from
//! the host, and their ops are called through the host's catching trampoline.
//!
//! Without the builds the tests say so on stderr and pass, unless
//! `KERNELS_TEST_REQUIRE_STABLE_ABI=1` (scripts/test.sh sets it). A host built into another
//! folder (`scripts/build-torch-host.sh OUTDIR`) is found through
//! `KERNELS_TEST_TORCH_HOST_DIR`. The host's state is
//! process-wide, so the libraries are loaded once for all tests of this binary.

use std::ffi::{CStr, CString, c_char, c_void};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use libloading::os::unix::Library;

type BoxedFn = unsafe extern "C" fn(*mut u64, u64, u64);
/// `KernelsTorchAllocFn`: (ctx, bytes, alignment, device type, device index) -> memory.
type AllocFn = unsafe extern "C" fn(*mut c_void, usize, usize, i32, i32) -> *mut c_void;
/// `KernelsTorchReleaseFn`: (ctx, memory, bytes, device type, device index).
type ReleaseFn = unsafe extern "C" fn(*mut c_void, *mut c_void, usize, i32, i32);

/// `KernelsTorchHostRegistration` of `kernels_torch_host.h`.
#[repr(C)]
#[derive(Debug)]
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

/// The host's functions the tests call, copied out of the library (which is never unloaded).
#[derive(Debug, Clone, Copy)]
struct Api {
    set_allocator: unsafe extern "C" fn(Option<AllocFn>, Option<ReleaseFn>, *mut c_void),
    last_error: unsafe extern "C" fn() -> *const c_char,
    tensor_new:
        unsafe extern "C" fn(*mut c_void, i64, *const i64, *const i64, i64, i32, i32, i32, *mut *mut c_void) -> i32,
    call: unsafe extern "C" fn(BoxedFn, *mut u64, u64, u64, i32, i32, *mut c_void, *mut c_char, usize) -> i32,
    registration_count: unsafe extern "C" fn() -> usize,
    registration: unsafe extern "C" fn(usize, *mut RawRegistration) -> i32,
    problem_count: unsafe extern "C" fn() -> usize,
    set_num_threads: unsafe extern "C" fn(u32),
    parallel_for_split_calls: unsafe extern "C" fn() -> u64,
    abi_version: unsafe extern "C" fn() -> u64,
    // Shim functions, as a kernel sees them.
    delete_tensor: unsafe extern "C" fn(*mut c_void) -> i32,
    get_data_ptr: unsafe extern "C" fn(*mut c_void, *mut *mut c_void) -> i32,
    get_dim: unsafe extern "C" fn(*mut c_void, *mut i64) -> i32,
    get_sizes: unsafe extern "C" fn(*mut c_void, *mut *const i64) -> i32,
    get_strides: unsafe extern "C" fn(*mut c_void, *mut *const i64) -> i32,
    get_size: unsafe extern "C" fn(*mut c_void, i64, *mut i64) -> i32,
    get_dtype: unsafe extern "C" fn(*mut c_void, *mut i32) -> i32,
    get_device_index: unsafe extern "C" fn(*mut c_void, *mut i32) -> i32,
    call_dispatcher: unsafe extern "C" fn(*const c_char, *const c_char, *mut u64, u64) -> i32,
    exception_get_what: unsafe extern "C" fn() -> *const c_char,
}

/// One captured op: its def joined with its impl.
#[derive(Debug, Clone)]
struct Op {
    schema: String,
    dispatch_key: String,
    num_args: u64,
    num_returns: u64,
    build_version: u64,
    fn_: BoxedFn,
}

#[derive(Debug)]
struct Kernel {
    target: &'static str,
    namespace: String,
    ops: Vec<(String, Op)>,
}

impl Kernel {
    fn op(&self, name: &str) -> &Op {
        self.ops
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, op)| op)
            .unwrap_or_else(|| panic!("{}: no op `{name}`", self.target))
    }
}

#[derive(Debug)]
struct Fixture {
    dir: PathBuf,
    api: Api,
    kernels: Vec<Kernel>,
    /// The host first, then the stand-ins and kernels; open for the life of the process.
    libraries: Vec<Library>,
}

const DT_F16: i32 = 5;
const DT_F32: i32 = 6;
const DT_F64: i32 = 7;
const DT_I32: i32 = 3;
const DT_BF16: i32 = 15;
const CPU: i32 = 0;

fn workspace() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("kernels-runtime sits in the workspace")
}

fn missing(what: String) -> Option<Fixture> {
    if std::env::var("KERNELS_TEST_REQUIRE_STABLE_ABI").as_deref() == Ok("1") {
        panic!("KERNELS_TEST_REQUIRE_STABLE_ABI=1 but {what}");
    }
    eprintln!("SKIPPED: {what}");
    None
}

fn open_local(path: &Path) -> Library {
    // SAFETY: the libraries opened here are the host, its stand-ins and the example kernels,
    // whose initialisers only register ops with the host (which never fails).
    unsafe { Library::open(Some(path), libc::RTLD_NOW | libc::RTLD_LOCAL) }
        .unwrap_or_else(|e| panic!("dlopen {}: {e}", path.display()))
}

fn cstr(p: *const c_char) -> String {
    if p.is_null() {
        return String::new();
    }
    // SAFETY: the host's strings are NUL-terminated and live as long as the process.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

fn load() -> Option<Fixture> {
    let dir = std::env::var_os("KERNELS_TEST_TORCH_HOST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/torch-host"));
    let host_path = dir.join("libkernels_torch_host.so");
    if !host_path.is_file() {
        return missing(format!("{} is missing: run `scripts/build-torch-host.sh`", host_path.display()));
    }
    let mut kernel_paths = Vec::new();
    for target in ["29", "211"] {
        let name = format!("torch-stable-abi{target}-cpu-{}-linux", std::env::consts::ARCH);
        let variant = workspace().join("build-out/stable-abi-cpu/build").join(name);
        let so = std::fs::read_dir(&variant).ok().and_then(|entries| {
            entries.filter_map(|e| e.ok().map(|e| e.path())).find(|p| p.to_string_lossy().ends_with(".abi3.so"))
        });
        match so {
            Some(so) => kernel_paths.push((if target == "29" { "2.9" } else { "2.11" }, so)),
            None => {
                return missing(format!("{} is missing: run `scripts/build-stable-abi-kernel.sh`", variant.display()));
            }
        }
    }

    // The host first, then the stand-ins by full path, then the kernels: all RTLD_LOCAL.
    let host = open_local(&host_path);
    macro_rules! sym {
        ($name:literal) => {
            // SAFETY: the type is the function's as `kernels_torch_host.h` / PyTorch's shim
            // headers declare it; the library stays loaded for the life of the process.
            *unsafe { host.get(concat!($name, "\0").as_bytes()) }.unwrap_or_else(|e| panic!("{}: {e}", $name))
        };
    }
    let api = Api {
        set_allocator: sym!("kernels_torch_host_set_allocator"),
        last_error: sym!("kernels_torch_host_last_error"),
        tensor_new: sym!("kernels_torch_host_tensor_new"),
        call: sym!("kernels_torch_host_call"),
        registration_count: sym!("kernels_torch_host_registration_count"),
        registration: sym!("kernels_torch_host_registration"),
        problem_count: sym!("kernels_torch_host_problem_count"),
        set_num_threads: sym!("kernels_torch_host_set_num_threads"),
        parallel_for_split_calls: sym!("kernels_torch_host_parallel_for_split_calls"),
        abi_version: sym!("kernels_torch_host_abi_version"),
        delete_tensor: sym!("aoti_torch_delete_tensor_object"),
        get_data_ptr: sym!("aoti_torch_get_data_ptr"),
        get_dim: sym!("aoti_torch_get_dim"),
        get_sizes: sym!("aoti_torch_get_sizes"),
        get_strides: sym!("aoti_torch_get_strides"),
        get_size: sym!("aoti_torch_get_size"),
        get_dtype: sym!("aoti_torch_get_dtype"),
        get_device_index: sym!("aoti_torch_get_device_index"),
        call_dispatcher: sym!("torch_call_dispatcher"),
        exception_get_what: sym!("torch_exception_get_what"),
    };
    let mut libraries = vec![host];
    for soname in ["libtorch.so", "libtorch_cpu.so", "libtorch_cuda.so", "libc10.so", "libc10_cuda.so"] {
        libraries.push(open_local(&dir.join(soname)));
    }
    // SAFETY: installs functions that never unwind; `ctx` is unused.
    unsafe { (api.set_allocator)(Some(counting_alloc), Some(counting_release), std::ptr::null_mut()) };

    let mut kernels = Vec::new();
    for (target, path) in kernel_paths {
        // SAFETY: plain calls into the host, which never throws.
        let before = unsafe { (api.registration_count)() };
        libraries.push(open_local(&path));
        // SAFETY: as above.
        let after = unsafe { (api.registration_count)() };
        let mut defs = Vec::new();
        let mut impls = Vec::new();
        let mut namespace = String::new();
        for i in before..after {
            // SAFETY: an all-null record is a valid value of the struct; the host fills it.
            let mut r: RawRegistration = unsafe { std::mem::zeroed() };
            // SAFETY: `r` is a valid out pointer.
            assert_eq!(unsafe { (api.registration)(i, &mut r) }, 0, "registration {i}");
            namespace = cstr(r.ns);
            if r.kind == 0 {
                defs.push(r);
            } else {
                impls.push(r);
            }
        }
        let mut ops = Vec::new();
        for def in &defs {
            let name = cstr(def.name);
            let imp =
                impls.iter().find(|i| cstr(i.name) == name).unwrap_or_else(|| panic!("{target}: no impl of {name}"));
            ops.push((
                name,
                Op {
                    schema: cstr(def.schema),
                    dispatch_key: cstr(imp.dispatch_key),
                    num_args: u64::try_from(def.num_args).expect("schema read"),
                    num_returns: u64::try_from(def.num_returns).expect("schema read"),
                    build_version: imp.build_version,
                    fn_: imp.fn_.expect("impl has a function"),
                },
            ));
        }
        assert_eq!(impls.len(), defs.len(), "{target}: every impl has a def");
        kernels.push(Kernel { target, namespace, ops });
    }
    Some(Fixture { dir, api, kernels, libraries })
}

fn fixture() -> Option<&'static Fixture> {
    static FIXTURE: OnceLock<Option<Fixture>> = OnceLock::new();
    FIXTURE.get_or_init(load).as_ref()
}

static ALLOCATED: AtomicUsize = AtomicUsize::new(0);
static RELEASED: AtomicUsize = AtomicUsize::new(0);

/// The allocator the tests install: Rust's, counted. Never unwinds.
unsafe extern "C" fn counting_alloc(_: *mut c_void, bytes: usize, align: usize, device: i32, _: i32) -> *mut c_void {
    let Ok(layout) = std::alloc::Layout::from_size_align(bytes.max(1), align) else { return std::ptr::null_mut() };
    if device != CPU {
        return std::ptr::null_mut();
    }
    ALLOCATED.fetch_add(1, Ordering::SeqCst);
    // SAFETY: the layout has a non-zero size.
    unsafe { std::alloc::alloc(layout) }.cast()
}

unsafe extern "C" fn counting_release(_: *mut c_void, ptr: *mut c_void, bytes: usize, _: i32, _: i32) {
    RELEASED.fetch_add(1, Ordering::SeqCst);
    if let Ok(layout) = std::alloc::Layout::from_size_align(bytes.max(1), 64) {
        // SAFETY: `ptr` came from `counting_alloc` with this size and the host's 64-byte alignment.
        unsafe { std::alloc::dealloc(ptr.cast(), layout) };
    }
}

impl Fixture {
    /// A handle over `data` (borrowed: it must outlive every use of the handle).
    fn tensor<T>(&self, data: &mut [T], sizes: &[i64], dtype: i32) -> *mut c_void {
        let mut handle = std::ptr::null_mut();
        // SAFETY: sizes has `sizes.len()` entries; null strides mean contiguous.
        let rc = unsafe {
            (self.api.tensor_new)(
                data.as_mut_ptr().cast(),
                sizes.len() as i64,
                sizes.as_ptr(),
                std::ptr::null(),
                0,
                dtype,
                CPU,
                -1,
                &mut handle,
            )
        };
        assert_eq!(rc, 0, "{}", self.last_error());
        handle
    }

    fn last_error(&self) -> String {
        // SAFETY: the host returns a thread-local NUL-terminated string.
        cstr(unsafe { (self.api.last_error)() })
    }

    /// Calls `op` with `args` (handles it takes over), checking the arity against the schema first.
    fn call(&self, op: &Op, args: &[u64]) -> Result<Vec<u64>, String> {
        if args.len() as u64 != op.num_args {
            return Err(format!("`{}` takes {} arguments, not {}", op.schema, op.num_args, args.len()));
        }
        let mut stack = args.to_vec();
        stack.resize(args.len().max(op.num_returns as usize), 0);
        let mut err = [0 as c_char; 1024];
        // SAFETY: the stack has max(num_args, num_returns) slots holding the arguments in schema
        // order; the trampoline catches every C++ exception.
        let rc = unsafe {
            (self.api.call)(
                op.fn_,
                stack.as_mut_ptr(),
                op.num_args,
                op.num_returns,
                0,
                -1,
                std::ptr::null_mut(),
                err.as_mut_ptr(),
                err.len(),
            )
        };
        if rc != 0 {
            return Err(cstr(err.as_ptr()));
        }
        stack.truncate(op.num_returns as usize);
        Ok(stack)
    }

    /// The f32 values, sizes and device index of an output handle; drops the handle.
    fn read_f32(&self, handle: *mut c_void) -> (Vec<f32>, Vec<i64>, i32) {
        let (mut dim, mut dtype, mut index) = (0i64, 0i32, 0i32);
        let mut sizes: *const i64 = std::ptr::null();
        let mut data: *mut c_void = std::ptr::null_mut();
        // SAFETY: `handle` is a live tensor handle; the out pointers are valid.
        unsafe {
            assert_eq!((self.api.get_dim)(handle, &mut dim), 0);
            assert_eq!((self.api.get_dtype)(handle, &mut dtype), 0);
            assert_eq!((self.api.get_device_index)(handle, &mut index), 0);
            assert_eq!((self.api.get_sizes)(handle, &mut sizes), 0);
            assert_eq!((self.api.get_data_ptr)(handle, &mut data), 0);
        }
        assert_eq!(dtype, DT_F32);
        // SAFETY: the host's sizes array has `dim` entries while the handle lives.
        let sizes = unsafe { std::slice::from_raw_parts(sizes, dim as usize) }.to_vec();
        let n = sizes.iter().product::<i64>() as usize;
        // SAFETY: a contiguous f32 tensor of `n` elements starts at `data`.
        let values = unsafe { std::slice::from_raw_parts(data.cast::<f32>(), n) }.to_vec();
        // SAFETY: the handle is ours and used no more.
        assert_eq!(unsafe { (self.api.delete_tensor)(handle) }, 0);
        (values, sizes, index)
    }
}

fn silu(x: f64) -> f64 {
    x / (1.0 + (-x).exp())
}

fn gelu_tanh(x: f64) -> f64 {
    0.5 * x * (1.0 + (0.797_884_560_802_865_4 * (x + 0.044715 * x * x * x)).tanh())
}

/// `rows` x `2d` inputs in [-4, 4).
fn input(rows: usize, d: usize) -> Vec<f64> {
    (0..rows * 2 * d).map(|i| ((i * 7919) % 1000) as f64 / 125.0 - 4.0).collect()
}

fn gated_reference(x: &[f64], rows: usize, d: usize, act: fn(f64) -> f64) -> Vec<f64> {
    let mut out = Vec::with_capacity(rows * d);
    for r in 0..rows {
        for i in 0..d {
            out.push(act(x[r * 2 * d + i]) * x[r * 2 * d + d + i]);
        }
    }
    out
}

#[test]
fn registrations_are_captured_with_their_schemas() {
    let Some(f) = fixture() else { return };
    // SAFETY: plain calls into the host.
    assert_eq!(unsafe { (f.api.problem_count)() }, 0, "registration problems");
    // SAFETY: as above.
    assert_eq!(unsafe { (f.api.abi_version)() }, (2 << 56) | (11 << 48));
    assert_eq!(f.kernels.len(), 2);
    for k in &f.kernels {
        assert!(k.namespace.starts_with("_stable_abi_cpu_cpu_"), "{}: {}", k.target, k.namespace);
        let mut schemas: Vec<_> = k.ops.iter().map(|(_, op)| op.schema.as_str()).collect();
        schemas.sort_unstable();
        assert_eq!(
            schemas,
            [
                "gelu_tanh(Tensor input) -> Tensor",
                "gelu_tanh_and_mul(Tensor! out, Tensor input) -> ()",
                "silu_and_mul(Tensor! out, Tensor input) -> ()",
            ]
        );
        for (name, op) in &k.ops {
            assert_eq!(op.dispatch_key, "CPU", "{name}");
            // 2.9's aoti_torch_library_impl has no version; 2.10's torch_library_impl passes the
            // headers' (2.11).
            let version = if k.target == "2.9" { 0 } else { (2 << 56) | (11 << 48) };
            assert_eq!(op.build_version, version, "{} {name}", k.target);
        }
        assert_eq!((k.op("silu_and_mul").num_args, k.op("silu_and_mul").num_returns), (2, 0));
        assert_eq!((k.op("gelu_tanh").num_args, k.op("gelu_tanh").num_returns), (1, 1));
        eprintln!("{}: namespace {}, {} ops", k.target, k.namespace, k.ops.len());
    }
}

#[test]
fn gated_ops_match_the_rust_reference_in_f32_and_f64() {
    let Some(f) = fixture() else { return };
    let (rows, d) = (3, 5);
    let x = input(rows, d);
    for k in &f.kernels {
        for (name, act) in [("silu_and_mul", silu as fn(f64) -> f64), ("gelu_tanh_and_mul", gelu_tanh)] {
            let expected = gated_reference(&x, rows, d, act);
            // f32
            let mut xin: Vec<f32> = x.iter().map(|&v| v as f32).collect();
            let mut out = vec![0f32; rows * d];
            let h_out = f.tensor(&mut out, &[rows as i64, d as i64], DT_F32);
            let h_in = f.tensor(&mut xin, &[rows as i64, 2 * d as i64], DT_F32);
            let rets = f.call(k.op(name), &[h_out as u64, h_in as u64]).unwrap_or_else(|e| panic!("{e}"));
            assert!(rets.is_empty());
            for (got, want) in out.iter().zip(&expected) {
                assert!(
                    (f64::from(*got) - want).abs() <= 1e-5 * (1.0 + want.abs()),
                    "{} {name}: {got} vs {want}",
                    k.target
                );
            }
            // f64
            let mut xin = x.clone();
            let mut out = vec![0f64; rows * d];
            let h_out = f.tensor(&mut out, &[rows as i64, d as i64], DT_F64);
            let h_in = f.tensor(&mut xin, &[rows as i64, 2 * d as i64], DT_F64);
            f.call(k.op(name), &[h_out as u64, h_in as u64]).unwrap_or_else(|e| panic!("{e}"));
            for (got, want) in out.iter().zip(&expected) {
                assert!((got - want).abs() <= 1e-12 * (1.0 + want.abs()), "{} {name}: {got} vs {want}", k.target);
            }
        }
    }
}

#[test]
fn gelu_tanh_allocates_its_output_through_the_installed_allocator() {
    let Some(f) = fixture() else { return };
    let x = input(2, 4);
    for k in &f.kernels {
        let mut xin: Vec<f32> = x.iter().map(|&v| v as f32).collect();
        let h_in = f.tensor(&mut xin, &[2, 8], DT_F32);
        let allocated = ALLOCATED.load(Ordering::SeqCst);
        let rets = f.call(k.op("gelu_tanh"), &[h_in as u64]).unwrap_or_else(|e| panic!("{e}"));
        assert!(ALLOCATED.load(Ordering::SeqCst) > allocated, "aten::empty_like went through the callback");
        let released = RELEASED.load(Ordering::SeqCst);
        let (values, sizes, device_index) = f.read_f32(rets[0] as *mut c_void);
        assert!(RELEASED.load(Ordering::SeqCst) > released, "the last handle released the storage");
        assert_eq!(sizes, [2, 8]);
        assert_eq!(device_index, -1);
        for (got, v) in values.iter().zip(&x) {
            let want = gelu_tanh(*v);
            assert!((f64::from(*got) - want).abs() <= 1e-5 * (1.0 + want.abs()), "{}: {got} vs {want}", k.target);
        }
    }
}

#[test]
fn kernel_checks_come_back_as_rust_errors() {
    let Some(f) = fixture() else { return };
    for k in &f.kernels {
        let op = k.op("silu_and_mul");
        // The last dimension of `out` is not half of `input`'s.
        let mut xin = vec![0f32; 16];
        let mut out = vec![0f32; 3];
        let err = f
            .call(op, &[f.tensor(&mut out, &[2, 3], DT_F32) as u64, f.tensor(&mut xin, &[2, 8], DT_F32) as u64])
            .unwrap_err();
        assert!(
            err.contains("silu_and_mul: the last dimension of `input` (8) must be twice that of `out` (3)"),
            "{}: {err}",
            k.target
        );
        // Integer and half-precision tensors: the example kernels take float32 and float64 only.
        for dtype in [DT_I32, DT_F16, DT_BF16] {
            let mut xin = vec![0u32; 8];
            let mut out = vec![0u32; 4];
            let err = f
                .call(op, &[f.tensor(&mut out, &[4], dtype) as u64, f.tensor(&mut xin, &[8], dtype) as u64])
                .unwrap_err();
            assert!(err.contains("silu_and_mul: `out` must be float32 or float64"), "{} {dtype}: {err}", k.target);
        }
        // A wrong arity is refused before the call, from the schema.
        let mut xin = vec![0f32; 2];
        let h = f.tensor(&mut xin, &[2], DT_F32);
        let err = f.call(op, &[h as u64]).unwrap_err();
        assert!(err.contains("takes 2 arguments, not 1"), "{err}");
        // SAFETY: the handle was not handed over.
        assert_eq!(unsafe { (f.api.delete_tensor)(h) }, 0);
    }
}

#[test]
fn ops_the_host_does_not_serve_fail_with_their_name() {
    let Some(f) = fixture() else { return };
    let name = CString::new("aten::matmul").unwrap();
    let mut stack = [0u64; 2];
    // SAFETY: an unknown op reads nothing of the stack.
    let rc = unsafe { (f.api.call_dispatcher)(name.as_ptr(), c"".as_ptr(), stack.as_mut_ptr(), 0) };
    assert_eq!(rc, 1);
    // SAFETY: a thread-local NUL-terminated string.
    let what = cstr(unsafe { (f.api.exception_get_what)() });
    assert!(what.contains("ATen op `aten::matmul` is not served by this host"), "{what}");
    assert_eq!(f.last_error(), what);

    // A dimension out of range, through a shim.
    let mut data = vec![0f32; 6];
    let h = f.tensor(&mut data, &[2, 3], DT_F32);
    let mut size = 0;
    // SAFETY: a live handle and a valid out pointer.
    unsafe {
        assert_eq!((f.api.get_size)(h, -1, &mut size), 0);
        assert_eq!(size, 3);
        assert_eq!((f.api.get_size)(h, 2, &mut size), 1);
        assert_eq!((f.api.delete_tensor)(h), 0);
    }
    assert!(f.last_error().contains("aoti_torch_get_size: dimension 2 is out of range for 2 dimensions"));

    // A view op through the dispatcher: transpose.int steals its input and returns a new handle.
    let h = f.tensor(&mut data, &[2, 3], DT_F32);
    let transpose = CString::new("aten::transpose").unwrap();
    let mut stack = [h as u64, 0, 1];
    // SAFETY: transpose.int's stack: (self, dim0, dim1).
    assert_eq!(unsafe { (f.api.call_dispatcher)(transpose.as_ptr(), c"int".as_ptr(), stack.as_mut_ptr(), 0) }, 0);
    let t = stack[0] as *mut c_void;
    let mut strides: *const i64 = std::ptr::null();
    // SAFETY: `t` is a new handle with two dimensions.
    unsafe {
        assert_eq!((f.api.get_strides)(t, &mut strides), 0);
        assert_eq!(std::slice::from_raw_parts(strides, 2), [1, 3]);
        assert_eq!((f.api.delete_tensor)(t), 0);
    }
}

#[test]
fn the_process_holds_no_libtorch_and_the_shim_is_not_global() {
    let Some(f) = fixture() else { return };
    let maps = std::fs::read_to_string("/proc/self/maps").expect("/proc/self/maps");
    let torch: Vec<&str> = maps
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .filter(|p| p.contains("libtorch") || p.contains("libc10"))
        .collect();
    assert!(!torch.is_empty(), "the stand-ins are mapped");
    for path in &torch {
        assert!(Path::new(path).starts_with(&f.dir), "{path} is not one of the stand-ins in {}", f.dir.display());
    }
    // RTLD_LOCAL: the global scope does not see the shim ...
    let this = Library::this();
    // SAFETY: only looked up, never called.
    assert!(unsafe { this.get::<unsafe extern "C" fn() -> u64>(b"aoti_torch_abi_version\0") }.is_err());
    // ... yet the kernels' imports were bound to the host through their DT_NEEDED stand-ins.
    let abi_version = f.api.abi_version as *const c_void;
    let mut info: libc::Dl_info = Dl_info_zeroed();
    // SAFETY: dladdr only reads the loader's tables.
    assert_ne!(unsafe { libc::dladdr(abi_version, &mut info) }, 0);
    let owner = cstr(info.dli_fname);
    assert!(owner.ends_with("libkernels_torch_host.so"), "{owner}");
}

#[allow(non_snake_case)]
fn Dl_info_zeroed() -> libc::Dl_info {
    libc::Dl_info {
        dli_fname: std::ptr::null(),
        dli_fbase: std::ptr::null_mut(),
        dli_sname: std::ptr::null(),
        dli_saddr: std::ptr::null_mut(),
    }
}

#[test]
fn the_2_11_kernel_splits_large_tensors_with_torch_parallel_for() {
    let Some(f) = fixture() else { return };
    // SAFETY: plain call into the host.
    unsafe { (f.api.set_num_threads)(4) };
    let k = f.kernels.iter().find(|k| k.target == "2.11").expect("2.11 kernel");
    let (rows, d) = (256, 2048);
    let x = input(rows, d);
    let mut xin: Vec<f32> = x.iter().map(|&v| v as f32).collect();
    let mut out = vec![0f32; rows * d];
    // SAFETY: plain call into the host.
    let split_before = unsafe { (f.api.parallel_for_split_calls)() };
    let h_out = f.tensor(&mut out, &[rows as i64, d as i64], DT_F32);
    let h_in = f.tensor(&mut xin, &[rows as i64, 2 * d as i64], DT_F32);
    f.call(k.op("silu_and_mul"), &[h_out as u64, h_in as u64]).unwrap_or_else(|e| panic!("{e}"));
    // SAFETY: as above.
    assert!(unsafe { (f.api.parallel_for_split_calls)() } > split_before, "rows were split over threads");
    let expected = gated_reference(&x, rows, d, silu);
    for (i, (got, want)) in out.iter().zip(&expected).enumerate() {
        assert!((f64::from(*got) - want).abs() <= 1e-5 * (1.0 + want.abs()), "element {i}: {got} vs {want}");
    }
}

/// Not an assertion of speed: prints what one boxed call costs, for BENCHMARKS.md.
#[test]
fn cost_of_a_boxed_call() {
    let Some(f) = fixture() else { return };
    unsafe extern "C" fn nothing(_: *mut u64, _: u64, _: u64) {}
    const N: u32 = 20_000;
    let mut err = [0 as c_char; 256];
    let mut stack = [0u64; 2];
    let start = Instant::now();
    for _ in 0..N {
        // SAFETY: `nothing` ignores its stack.
        let rc = unsafe {
            (f.api.call)(nothing, stack.as_mut_ptr(), 0, 0, 0, -1, std::ptr::null_mut(), err.as_mut_ptr(), err.len())
        };
        assert_eq!(rc, 0);
    }
    let trampoline = start.elapsed() / N;

    let mut data = [1f32; 2];
    let h = f.tensor(&mut data, &[1, 2], DT_F32);
    let mut dim = 0;
    let start = Instant::now();
    for _ in 0..N {
        // SAFETY: a live handle and a valid out pointer.
        assert_eq!(unsafe { (f.api.get_dim)(h, &mut dim) }, 0);
    }
    let direct = start.elapsed() / N;
    // SAFETY: the handle is ours.
    assert_eq!(unsafe { (f.api.delete_tensor)(h) }, 0);

    for k in &f.kernels {
        let mut xin = [0.5f32, 2.0];
        let mut out = [0f32; 1];
        let start = Instant::now();
        for _ in 0..N {
            let h_out = f.tensor(&mut out, &[1, 1], DT_F32);
            let h_in = f.tensor(&mut xin, &[1, 2], DT_F32);
            f.call(k.op("silu_and_mul"), &[h_out as u64, h_in as u64]).unwrap_or_else(|e| panic!("{e}"));
        }
        let full = start.elapsed() / N;
        eprintln!(
            "{}: silu_and_mul on [1, 2] (two handles + arity check + boxed call) {full:?}; trampoline around \
             a no-op {trampoline:?}; direct shim call (aoti_torch_get_dim) {direct:?}",
            k.target
        );
    }
}

/// The list the pre-load check trusts (`torch_stable_abi::provided`) is what the host exports.
#[test]
fn the_host_exports_every_function_the_pre_load_check_counts_on() {
    use kernels_runtime::torch_stable_abi::{ATEN_OPS, PYTHON_FUNCTIONS, SHIM_FUNCTIONS, TORCH_LIBRARIES};
    let Some(f) = fixture() else { return };
    let host = &f.libraries[0];
    let c_shims = ATEN_OPS.iter().flat_map(|op| op.c_shims.iter());
    let mut missing = Vec::new();
    for name in SHIM_FUNCTIONS.iter().chain(c_shims).chain(PYTHON_FUNCTIONS) {
        let symbol = CString::new(*name).unwrap();
        // SAFETY: only looked up, never called.
        if unsafe { host.get::<*const c_void>(symbol.as_bytes_with_nul()) }.is_err() {
            missing.push(*name);
        }
    }
    assert!(missing.is_empty(), "listed as provided but not exported by the host: {missing:?}");
    for soname in TORCH_LIBRARIES {
        assert!(f.dir.join(soname).is_file(), "no stand-in {soname} in {}", f.dir.display());
    }
}
