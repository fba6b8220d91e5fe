//! `#[repr(C)]` types of the TVM-FFI stable C ABI and of DLPack, written from the layouts that
//! `tvm/ffi/c_api.h`, `tvm/ffi/extra/c_env_api.h` and `dlpack/dlpack.h` specify (tvm-ffi 0.1,
//! DLPack 1.x). The tests at the bottom pin every size, alignment and field offset.
//!
//! Enumerations whose values come from foreign code (device types, type indices, dtype codes)
//! are plain integers with named constants, never Rust `enum`s: an unknown value from a newer
//! producer must stay representable.

use core::ffi::{c_char, c_int, c_void};
use core::fmt;

// ---------------------------------------------------------------------------------------------
// DLPack
// ---------------------------------------------------------------------------------------------

/// `DLDeviceType`: where a tensor's memory lives (a C enum, so 32 bits).
#[repr(transparent)]
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct DLDeviceType(pub i32);

impl DLDeviceType {
    /// `kDLCPU`: host memory.
    pub const CPU: Self = Self(1);
    /// `kDLCUDA`: CUDA device memory.
    pub const CUDA: Self = Self(2);
    /// `kDLCUDAHost`: pinned host memory allocated by CUDA.
    pub const CUDA_HOST: Self = Self(3);
    /// `kDLOpenCL`.
    pub const OPENCL: Self = Self(4);
    /// `kDLVulkan`.
    pub const VULKAN: Self = Self(7);
    /// `kDLMetal`.
    pub const METAL: Self = Self(8);
    /// `kDLVPI`.
    pub const VPI: Self = Self(9);
    /// `kDLROCM`: ROCm/HIP device memory.
    pub const ROCM: Self = Self(10);
    /// `kDLROCMHost`: pinned host memory allocated by ROCm.
    pub const ROCM_HOST: Self = Self(11);
    /// `kDLExtDev`.
    pub const EXT_DEV: Self = Self(12);
    /// `kDLCUDAManaged`: CUDA unified memory.
    pub const CUDA_MANAGED: Self = Self(13);
    /// `kDLOneAPI`: SYCL/oneAPI (Intel XPU) memory.
    pub const ONE_API: Self = Self(14);
    /// `kDLWebGPU`.
    pub const WEBGPU: Self = Self(15);
    /// `kDLHexagon`.
    pub const HEXAGON: Self = Self(16);
    /// `kDLMAIA`.
    pub const MAIA: Self = Self(17);
    /// `kDLTrn`.
    pub const TRN: Self = Self(18);

    /// The short lower-case name of a known device type (`"cpu"`, `"cuda"`, …).
    pub const fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            1 => "cpu",
            2 => "cuda",
            3 => "cuda_host",
            4 => "opencl",
            7 => "vulkan",
            8 => "metal",
            9 => "vpi",
            10 => "rocm",
            11 => "rocm_host",
            12 => "ext_dev",
            13 => "cuda_managed",
            14 => "oneapi",
            15 => "webgpu",
            16 => "hexagon",
            17 => "maia",
            18 => "trn",
            _ => return None,
        })
    }

    /// Whether kernels on this device run on a stream (`TVMFFIEnvSetStream` applies).
    pub const fn has_streams(self) -> bool {
        matches!(self.0, 2 | 10 | 13)
    }
}

impl fmt::Debug for DLDeviceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for DLDeviceType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => f.write_str(name),
            None => write!(f, "device_type({})", self.0),
        }
    }
}

/// `DLDevice`: device type and ordinal.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct DLDevice {
    /// The kind of device.
    pub device_type: DLDeviceType,
    /// The device ordinal (0 for the host).
    pub device_id: i32,
}

impl DLDevice {
    /// Host memory.
    pub const CPU: Self = Self { device_type: DLDeviceType::CPU, device_id: 0 };

    /// A device of `device_type` with ordinal `device_id`.
    pub const fn new(device_type: DLDeviceType, device_id: i32) -> Self {
        Self { device_type, device_id }
    }

    /// CUDA device `device_id`.
    pub const fn cuda(device_id: i32) -> Self {
        Self::new(DLDeviceType::CUDA, device_id)
    }

    /// ROCm device `device_id`.
    pub const fn rocm(device_id: i32) -> Self {
        Self::new(DLDeviceType::ROCM, device_id)
    }
}

impl fmt::Debug for DLDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for DLDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.device_type, self.device_id)
    }
}

/// `DLDataTypeCode` values (the `code` byte of [`DLDataType`]).
pub mod dtype_code {
    /// `kDLInt`: signed integer.
    pub const INT: u8 = 0;
    /// `kDLUInt`: unsigned integer.
    pub const UINT: u8 = 1;
    /// `kDLFloat`: IEEE floating point.
    pub const FLOAT: u8 = 2;
    /// `kDLOpaqueHandle`.
    pub const OPAQUE_HANDLE: u8 = 3;
    /// `kDLBfloat`: bfloat16.
    pub const BFLOAT: u8 = 4;
    /// `kDLComplex`.
    pub const COMPLEX: u8 = 5;
    /// `kDLBool`.
    pub const BOOL: u8 = 6;
    /// `kDLFloat8_e3m4`.
    pub const FLOAT8_E3M4: u8 = 7;
    /// `kDLFloat8_e4m3`.
    pub const FLOAT8_E4M3: u8 = 8;
    /// `kDLFloat8_e4m3b11fnuz`.
    pub const FLOAT8_E4M3B11FNUZ: u8 = 9;
    /// `kDLFloat8_e4m3fn`.
    pub const FLOAT8_E4M3FN: u8 = 10;
    /// `kDLFloat8_e4m3fnuz`.
    pub const FLOAT8_E4M3FNUZ: u8 = 11;
    /// `kDLFloat8_e5m2`.
    pub const FLOAT8_E5M2: u8 = 12;
    /// `kDLFloat8_e5m2fnuz`.
    pub const FLOAT8_E5M2FNUZ: u8 = 13;
    /// `kDLFloat8_e8m0fnu`.
    pub const FLOAT8_E8M0FNU: u8 = 14;
    /// `kDLFloat6_e2m3fn`.
    pub const FLOAT6_E2M3FN: u8 = 15;
    /// `kDLFloat6_e3m2fn`.
    pub const FLOAT6_E3M2FN: u8 = 16;
    /// `kDLFloat4_e2m1fn`.
    pub const FLOAT4_E2M1FN: u8 = 17;
}

/// `DLDataType`: element type code, bits per lane and lanes.
#[repr(C)]
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct DLDataType {
    /// Type code, one of [`dtype_code`].
    pub code: u8,
    /// Bits per lane.
    pub bits: u8,
    /// Lanes (1 for scalars).
    pub lanes: u16,
}

impl DLDataType {
    /// `bool` (one byte per element, as PyTorch stores it).
    pub const BOOL: Self = Self::new(dtype_code::BOOL, 8, 1);
    /// `int8`.
    pub const I8: Self = Self::new(dtype_code::INT, 8, 1);
    /// `int16`.
    pub const I16: Self = Self::new(dtype_code::INT, 16, 1);
    /// `int32`.
    pub const I32: Self = Self::new(dtype_code::INT, 32, 1);
    /// `int64`.
    pub const I64: Self = Self::new(dtype_code::INT, 64, 1);
    /// `uint8`.
    pub const U8: Self = Self::new(dtype_code::UINT, 8, 1);
    /// `uint16`.
    pub const U16: Self = Self::new(dtype_code::UINT, 16, 1);
    /// `uint32`.
    pub const U32: Self = Self::new(dtype_code::UINT, 32, 1);
    /// `uint64`.
    pub const U64: Self = Self::new(dtype_code::UINT, 64, 1);
    /// `float16`.
    pub const F16: Self = Self::new(dtype_code::FLOAT, 16, 1);
    /// `bfloat16`.
    pub const BF16: Self = Self::new(dtype_code::BFLOAT, 16, 1);
    /// `float32`.
    pub const F32: Self = Self::new(dtype_code::FLOAT, 32, 1);
    /// `float64`.
    pub const F64: Self = Self::new(dtype_code::FLOAT, 64, 1);

    /// A data type from its three fields.
    pub const fn new(code: u8, bits: u8, lanes: u16) -> Self {
        Self { code, bits, lanes }
    }

    /// Bytes per element, when elements are whole bytes.
    pub const fn size_in_bytes(self) -> Option<usize> {
        let bits = self.bits as usize * self.lanes as usize;
        if bits.is_multiple_of(8) { Some(bits / 8) } else { None }
    }
}

impl fmt::Debug for DLDataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Names in the style of PyTorch and tvm-ffi: `float32`, `bfloat16`, `int64`, `bool`,
/// `float32x4` for vectors.
impl fmt::Display for DLDataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == Self::BOOL {
            return f.write_str("bool");
        }
        let base = match self.code {
            dtype_code::INT => "int",
            dtype_code::UINT => "uint",
            dtype_code::FLOAT => "float",
            dtype_code::BFLOAT => "bfloat",
            dtype_code::COMPLEX => "complex",
            dtype_code::BOOL => "bool",
            dtype_code::OPAQUE_HANDLE => "handle",
            dtype_code::FLOAT8_E3M4 => "float8_e3m4",
            dtype_code::FLOAT8_E4M3 => "float8_e4m3",
            dtype_code::FLOAT8_E4M3B11FNUZ => "float8_e4m3b11fnuz",
            dtype_code::FLOAT8_E4M3FN => "float8_e4m3fn",
            dtype_code::FLOAT8_E4M3FNUZ => "float8_e4m3fnuz",
            dtype_code::FLOAT8_E5M2 => "float8_e5m2",
            dtype_code::FLOAT8_E5M2FNUZ => "float8_e5m2fnuz",
            dtype_code::FLOAT8_E8M0FNU => "float8_e8m0fnu",
            dtype_code::FLOAT6_E2M3FN => "float6_e2m3fn",
            dtype_code::FLOAT6_E3M2FN => "float6_e3m2fn",
            dtype_code::FLOAT4_E2M1FN => "float4_e2m1fn",
            code => return write!(f, "dtype(code={code}, bits={}, lanes={})", self.bits, self.lanes),
        };
        // The small float formats carry their width in the name already.
        if self.code <= dtype_code::BOOL {
            write!(f, "{base}{}", self.bits)?;
        } else {
            f.write_str(base)?;
        }
        if self.lanes != 1 {
            write!(f, "x{}", self.lanes)?;
        }
        Ok(())
    }
}

/// `DLTensor`: a borrowed, strided n-dimensional array.
///
/// `strides` may be null (compact row-major); strides and `byte_offset` are in elements and
/// bytes respectively; the element at index `i` lives at
/// `data + byte_offset + sum(i[k] * strides[k]) * element_size`.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct DLTensor {
    /// Base pointer (device memory for non-CPU devices).
    pub data: *mut c_void,
    /// Where `data` lives.
    pub device: DLDevice,
    /// Number of dimensions.
    pub ndim: i32,
    /// Element type.
    pub dtype: DLDataType,
    /// `ndim` extents.
    pub shape: *mut i64,
    /// `ndim` strides in elements, or null for compact row-major.
    pub strides: *mut i64,
    /// Offset of the first element from `data`, in bytes.
    pub byte_offset: u64,
}

// ---------------------------------------------------------------------------------------------
// TVM-FFI
// ---------------------------------------------------------------------------------------------

/// `TVMFFITypeIndex` values: what a [`TVMFFIAny`] holds.
pub mod type_index {
    /// `kTVMFFIAny`: "any type" (never stored in a value).
    pub const ANY: i32 = -1;
    /// `kTVMFFINone`: no value.
    pub const NONE: i32 = 0;
    /// `kTVMFFIInt`: `v_int64`.
    pub const INT: i32 = 1;
    /// `kTVMFFIBool`: `v_int64` holding 0 or 1.
    pub const BOOL: i32 = 2;
    /// `kTVMFFIFloat`: `v_float64`.
    pub const FLOAT: i32 = 3;
    /// `kTVMFFIOpaquePtr`: `v_ptr`.
    pub const OPAQUE_PTR: i32 = 4;
    /// `kTVMFFIDataType`: `v_dtype`.
    pub const DATA_TYPE: i32 = 5;
    /// `kTVMFFIDevice`: `v_device`.
    pub const DEVICE: i32 = 6;
    /// `kTVMFFIDLTensorPtr`: `v_ptr` is a borrowed `DLTensor*`.
    pub const DL_TENSOR_PTR: i32 = 7;
    /// `kTVMFFIRawStr`: `v_c_str`, a borrowed NUL-terminated string.
    pub const RAW_STR: i32 = 8;
    /// `kTVMFFIByteArrayPtr`: `v_ptr` is a `TVMFFIByteArray*`.
    pub const BYTE_ARRAY_PTR: i32 = 9;
    /// `kTVMFFIObjectRValueRef`.
    pub const OBJECT_RVALUE_REF: i32 = 10;
    /// `kTVMFFISmallStr`: up to 7 bytes inline, length in `small_str_len`.
    pub const SMALL_STR: i32 = 11;
    /// `kTVMFFISmallBytes`.
    pub const SMALL_BYTES: i32 = 12;
    /// `kTVMFFIStaticObjectBegin`: indices from here on are reference-counted objects.
    pub const STATIC_OBJECT_BEGIN: i32 = 64;
    /// `kTVMFFIObject`.
    pub const OBJECT: i32 = 64;
    /// `kTVMFFIStr`.
    pub const STR: i32 = 65;
    /// `kTVMFFIBytes`.
    pub const BYTES: i32 = 66;
    /// `kTVMFFIError`: an error object, header followed by a `TVMFFIErrorCell`.
    pub const ERROR: i32 = 67;
    /// `kTVMFFIFunction`.
    pub const FUNCTION: i32 = 68;
    /// `kTVMFFIShape`.
    pub const SHAPE: i32 = 69;
    /// `kTVMFFITensor`: an object, header followed by a `DLTensor`.
    pub const TENSOR: i32 = 70;
    /// `kTVMFFIArray`.
    pub const ARRAY: i32 = 71;
    /// `kTVMFFIMap`.
    pub const MAP: i32 = 72;
    /// `kTVMFFIModule`.
    pub const MODULE: i32 = 73;
    /// `kTVMFFIOpaquePyObject`.
    pub const OPAQUE_PY_OBJECT: i32 = 74;
    /// `kTVMFFIDynObjectBegin`: first index allocated at run time.
    pub const DYN_OBJECT_BEGIN: i32 = 128;
}

/// `TVMFFIObjectHandle`: an opaque pointer to an object (its [`TVMFFIObject`] header).
pub type TVMFFIObjectHandle = *mut c_void;

/// `TVMFFIStreamHandle`: an opaque device stream (`cudaStream_t`, `hipStream_t`).
pub type TVMFFIStreamHandle = *mut c_void;

/// The 8-byte union at the end of [`TVMFFIObject`].
#[repr(C)]
#[derive(Clone, Copy)]
pub union TVMFFIObjectDeleter {
    /// Called when a reference count drops to zero, with `TVMFFIObjectDeleterFlagBitMask` flags.
    pub deleter: Option<unsafe extern "C" fn(object: *mut c_void, flags: c_int)>,
    /// Keeps the union 8 bytes on every platform.
    pub ensure_align: i64,
}

/// `TVMFFIObject`: the header of every heap object.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct TVMFFIObject {
    /// Strong count (low 32 bits) and weak count (high 32 bits).
    pub combined_ref_count: u64,
    /// The object's type, see [`type_index`].
    pub type_index: i32,
    /// Padding to 8-byte alignment.
    pub padding: u32,
    /// How the object is destroyed.
    pub deleter: TVMFFIObjectDeleter,
}

impl fmt::Debug for TVMFFIObjectDeleter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // SAFETY: both members are 8 bytes of plain data; reading them as i64 reads initialised
        // integer bytes.
        write!(f, "TVMFFIObjectDeleter({:#x})", unsafe { self.ensure_align })
    }
}

impl fmt::Debug for TVMFFIObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TVMFFIObject")
            .field("combined_ref_count", &self.combined_ref_count)
            .field("type_index", &self.type_index)
            .finish_non_exhaustive()
    }
}

/// The 4-byte union after [`TVMFFIAny::type_index`].
#[repr(C)]
#[derive(Clone, Copy)]
pub union TVMFFIAnyPadding {
    /// Must be zero for every value but small strings.
    pub zero_padding: u32,
    /// Length of a small string or small bytes value (at most 7).
    pub small_str_len: u32,
}

impl fmt::Debug for TVMFFIAnyPadding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // SAFETY: both members are the same u32.
        write!(f, "TVMFFIAnyPadding({})", unsafe { self.zero_padding })
    }
}

/// The 8-byte payload of [`TVMFFIAny`].
#[repr(C)]
#[derive(Clone, Copy)]
pub union TVMFFIAnyValue {
    /// Integers and bools.
    pub v_int64: i64,
    /// Floats.
    pub v_float64: f64,
    /// Pointers (`DLTensor*`, opaque pointers, `TVMFFIByteArray*`).
    pub v_ptr: *mut c_void,
    /// Borrowed C strings.
    pub v_c_str: *const c_char,
    /// Objects.
    pub v_obj: *mut TVMFFIObject,
    /// Data types.
    pub v_dtype: DLDataType,
    /// Devices.
    pub v_device: DLDevice,
    /// Small string bytes.
    pub v_bytes: [u8; 8],
    /// The raw bits.
    pub v_uint64: u64,
}

impl fmt::Debug for TVMFFIAnyValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // SAFETY: every member is at most 8 bytes of plain data; values built by this crate or
        // received through the ABI have all 8 bytes initialised.
        write!(f, "TVMFFIAnyValue({:#018x})", unsafe { self.v_uint64 })
    }
}

/// `TVMFFIAny`: the 16-byte tagged value every argument and result is passed as.
///
/// Values built here always initialise all 16 bytes (the payload through `v_uint64` first), so
/// reading any payload field of them is sound; [`TVMFFIAny::bits`] reads the payload as raw
/// bits without `unsafe`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct TVMFFIAny {
    /// What the value holds, see [`type_index`].
    pub type_index: i32,
    /// Zero, or a small string's length.
    pub padding: TVMFFIAnyPadding,
    /// The payload.
    pub value: TVMFFIAnyValue,
}

impl TVMFFIAny {
    const fn with_bits(type_index: i32, bits: u64) -> Self {
        Self { type_index, padding: TVMFFIAnyPadding { zero_padding: 0 }, value: TVMFFIAnyValue { v_uint64: bits } }
    }

    /// `None`.
    pub const fn none() -> Self {
        Self::with_bits(type_index::NONE, 0)
    }

    /// An integer.
    pub const fn int(value: i64) -> Self {
        Self::with_bits(type_index::INT, value as u64)
    }

    /// A bool (`v_int64` = 0 or 1).
    pub const fn bool(value: bool) -> Self {
        Self::with_bits(type_index::BOOL, value as u64)
    }

    /// A float.
    pub const fn float(value: f64) -> Self {
        Self::with_bits(type_index::FLOAT, value.to_bits())
    }

    /// A borrowed `DLTensor*`.
    pub fn dl_tensor(tensor: *mut DLTensor) -> Self {
        let mut any = Self::with_bits(type_index::DL_TENSOR_PTR, 0);
        any.value.v_ptr = tensor.cast();
        any
    }

    /// An opaque pointer.
    pub fn opaque_ptr(ptr: *mut c_void) -> Self {
        let mut any = Self::with_bits(type_index::OPAQUE_PTR, 0);
        any.value.v_ptr = ptr;
        any
    }

    /// The payload as raw bits.
    pub fn bits(&self) -> u64 {
        // SAFETY: every field of the payload union is plain data of 8 bytes or fewer and a
        // TVMFFIAny always has its 8 payload bytes initialised (the ABI passes them by value),
        // so reading them as u64 is reading initialised integer bytes.
        unsafe { self.value.v_uint64 }
    }

    /// The payload as a pointer (for pointer- and object-typed values).
    pub fn ptr(&self) -> *mut c_void {
        // SAFETY: as in `bits`: the payload is initialised plain data; any bit pattern is a
        // valid raw pointer value (it is not dereferenced here).
        unsafe { self.value.v_ptr }
    }
}

impl fmt::Debug for TVMFFIAny {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("TVMFFIAny");
        s.field("type_index", &self.type_index);
        match self.type_index {
            type_index::NONE => {}
            type_index::INT => {
                s.field("v_int64", &(self.bits() as i64));
            }
            type_index::BOOL => {
                s.field("v_bool", &(self.bits() != 0));
            }
            type_index::FLOAT => {
                s.field("v_float64", &f64::from_bits(self.bits()));
            }
            _ => {
                s.field("v_ptr", &self.ptr());
            }
        }
        s.finish()
    }
}

/// `TVMFFIByteArray`: borrowed bytes (not NUL-terminated).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct TVMFFIByteArray {
    /// First byte (may be null when `size` is 0).
    pub data: *const c_char,
    /// Number of bytes.
    pub size: usize,
}

impl TVMFFIByteArray {
    /// Borrows `bytes` (valid as long as `bytes` is).
    pub const fn from_bytes(bytes: &[u8]) -> Self {
        Self { data: bytes.as_ptr().cast(), size: bytes.len() }
    }

    /// The bytes.
    ///
    /// # Safety
    /// `data` must point to `size` readable bytes that stay valid and unmodified for `'a`
    /// (or `size` must be 0).
    pub unsafe fn as_bytes<'a>(&self) -> &'a [u8] {
        if self.size == 0 || self.data.is_null() {
            return &[];
        }
        // SAFETY: the caller guarantees `size` readable bytes at `data` for `'a`.
        unsafe { core::slice::from_raw_parts(self.data.cast(), self.size) }
    }
}

/// `TVMFFIErrorCell`: what follows the [`TVMFFIObject`] header of an error object.
///
/// Only the fields every tvm-ffi 0.1 release has are declared; since 0.1.8 two more handles
/// (`cause_chain`, `extra_context`) follow, which this crate never reads. Never construct or
/// copy an error cell by value: borrow it inside the object.
#[repr(C)]
#[derive(Debug)]
pub struct TVMFFIErrorCell {
    /// The error kind, e.g. `ValueError`.
    pub kind: TVMFFIByteArray,
    pub message: TVMFFIByteArray,
    /// The backtrace, most recent call first.
    pub backtrace: TVMFFIByteArray,
    /// Replaces or appends to the backtrace.
    pub update_backtrace:
        Option<unsafe extern "C" fn(object: TVMFFIObjectHandle, backtrace: *const TVMFFIByteArray, update_mode: i32)>,
}

/// Offset of the cell that follows an object header (`TVMFFIErrorGetCellPtr` and friends).
pub const OBJECT_CELL_OFFSET: usize = core::mem::size_of::<TVMFFIObject>();

/// `TVMFFISafeCallType`: the signature of every `__tvm_ffi_<name>` export.
///
/// `result` must hold `None` (or another non-object value) on entry. Returns 0 on success, -1
/// when an error was raised (fetch it with `TVMFFIErrorMoveFromRaised`), -2 when the error was
/// recorded by a frontend.
pub type TVMFFISafeCallType =
    unsafe extern "C" fn(handle: *mut c_void, args: *const TVMFFIAny, num_args: i32, result: *mut TVMFFIAny) -> c_int;

/// `TVMFFIErrorMoveFromRaised`: moves the calling thread's raised error (or null) into `*result`.
pub type TVMFFIErrorMoveFromRaisedFn = unsafe extern "C" fn(result: *mut TVMFFIObjectHandle);

/// `TVMFFIErrorSetRaisedFromCStr`: raises an error of `kind` with `message` on this thread.
pub type TVMFFIErrorSetRaisedFromCStrFn = unsafe extern "C" fn(kind: *const c_char, message: *const c_char);

/// `TVMFFIObjectDecRef`: drops one strong reference.
pub type TVMFFIObjectDecRefFn = unsafe extern "C" fn(object: TVMFFIObjectHandle) -> c_int;

/// `TVMFFIEnvSetStream`: sets this thread's stream for a device, optionally returning the old one.
pub type TVMFFIEnvSetStreamFn = unsafe extern "C" fn(
    device_type: i32,
    device_id: i32,
    stream: TVMFFIStreamHandle,
    opt_out_original_stream: *mut TVMFFIStreamHandle,
) -> c_int;

/// `TVMFFIEnvGetStream`: this thread's stream for a device (null when none was set).
pub type TVMFFIEnvGetStreamFn = unsafe extern "C" fn(device_type: i32, device_id: i32) -> TVMFFIStreamHandle;

/// Symbol names of the ABI.
pub mod symbol {
    /// Prefix of every exported kernel function: `__tvm_ffi_<name>`.
    pub const FUNCTION_PREFIX: &str = "__tvm_ffi_";
    /// `TVMFFIErrorMoveFromRaised`.
    pub const ERROR_MOVE_FROM_RAISED: &str = "TVMFFIErrorMoveFromRaised";
    /// `TVMFFIErrorSetRaisedFromCStr`.
    pub const ERROR_SET_RAISED_FROM_CSTR: &str = "TVMFFIErrorSetRaisedFromCStr";
    /// `TVMFFIObjectDecRef`.
    pub const OBJECT_DEC_REF: &str = "TVMFFIObjectDecRef";
    /// `TVMFFIEnvSetStream`.
    pub const ENV_SET_STREAM: &str = "TVMFFIEnvSetStream";
    /// `TVMFFIEnvGetStream`.
    pub const ENV_GET_STREAM: &str = "TVMFFIEnvGetStream";
    /// The error channel of kernels written in Rust (see [`KernelsTakeErrorFn`](super::KernelsTakeErrorFn)).
    pub const KERNELS_TAKE_ERROR: &str = "__kernels_rs_take_error";
}

/// Receives a Rust kernel's error: `kind` and `message` are valid only during the call.
pub type KernelsErrorSinkFn =
    unsafe extern "C" fn(ctx: *mut c_void, kind: *const TVMFFIByteArray, message: *const TVMFFIByteArray);

/// `__kernels_rs_take_error`, exported by kernels written in Rust with
/// `kernels_runtime::export_kernels!`: if the calling thread has a pending error, passes it to
/// `sink(ctx, kind, message)`, clears it and returns 0; otherwise returns 1 without calling
/// `sink`.
pub type KernelsTakeErrorFn = unsafe extern "C" fn(ctx: *mut c_void, sink: KernelsErrorSinkFn) -> c_int;

/// A Rust type whose values are elements of a DLPack tensor of dtype [`Element::DTYPE`].
///
/// # Safety
/// `size_of::<Self>()` must equal `DTYPE.bits / 8 * DTYPE.lanes`, every bit pattern a kernel
/// may write for `DTYPE` must be a valid `Self`, and `Self` must have no padding.
pub unsafe trait Element: Copy + Send + Sync + 'static {
    /// The DLPack data type of `Self`.
    const DTYPE: DLDataType;
}

macro_rules! element {
    ($($ty:ty => $dtype:ident),* $(,)?) => {$(
        // SAFETY: primitive number types have no padding, accept every bit pattern, and have
        // the size the dtype states.
        unsafe impl Element for $ty {
            const DTYPE: DLDataType = DLDataType::$dtype;
        }
    )*};
}

element! {
    i8 => I8, i16 => I16, i32 => I32, i64 => I64,
    u8 => U8, u16 => U16, u32 => U32, u64 => U64,
    f32 => F32, f64 => F64, half::f16 => F16, half::bf16 => BF16,
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{align_of, offset_of, size_of};

    #[test]
    fn dlpack_layouts() {
        assert_eq!((size_of::<DLDeviceType>(), align_of::<DLDeviceType>()), (4, 4));
        assert_eq!((size_of::<DLDevice>(), align_of::<DLDevice>()), (8, 4));
        assert_eq!(offset_of!(DLDevice, device_id), 4);
        assert_eq!((size_of::<DLDataType>(), align_of::<DLDataType>()), (4, 2));
        assert_eq!((offset_of!(DLDataType, bits), offset_of!(DLDataType, lanes)), (1, 2));
    }

    #[test]
    #[cfg(target_pointer_width = "64")]
    fn dltensor_layout() {
        assert_eq!((size_of::<DLTensor>(), align_of::<DLTensor>()), (48, 8));
        assert_eq!(offset_of!(DLTensor, data), 0);
        assert_eq!(offset_of!(DLTensor, device), 8);
        assert_eq!(offset_of!(DLTensor, ndim), 16);
        assert_eq!(offset_of!(DLTensor, dtype), 20);
        assert_eq!(offset_of!(DLTensor, shape), 24);
        assert_eq!(offset_of!(DLTensor, strides), 32);
        assert_eq!(offset_of!(DLTensor, byte_offset), 40);
    }

    #[test]
    fn any_layout() {
        // 128 bits: type index, 32 reserved bits, 64-bit payload (on 32- and 64-bit targets).
        assert_eq!((size_of::<TVMFFIAny>(), align_of::<TVMFFIAny>()), (16, 8));
        assert_eq!(offset_of!(TVMFFIAny, type_index), 0);
        assert_eq!(offset_of!(TVMFFIAny, padding), 4);
        assert_eq!(offset_of!(TVMFFIAny, value), 8);
        assert_eq!(size_of::<TVMFFIAnyValue>(), 8);
        assert_eq!(size_of::<TVMFFIAnyPadding>(), 4);
    }

    #[test]
    fn object_and_error_layouts() {
        assert_eq!((size_of::<TVMFFIObject>(), align_of::<TVMFFIObject>()), (24, 8));
        assert_eq!(offset_of!(TVMFFIObject, type_index), 8);
        assert_eq!(offset_of!(TVMFFIObject, padding), 12);
        assert_eq!(offset_of!(TVMFFIObject, deleter), 16);
        assert_eq!(OBJECT_CELL_OFFSET, 24);
        #[cfg(target_pointer_width = "64")]
        {
            assert_eq!(size_of::<TVMFFIByteArray>(), 16);
            assert_eq!(offset_of!(TVMFFIByteArray, size), 8);
            assert_eq!(offset_of!(TVMFFIErrorCell, kind), 0);
            assert_eq!(offset_of!(TVMFFIErrorCell, message), 16);
            assert_eq!(offset_of!(TVMFFIErrorCell, backtrace), 32);
            assert_eq!(offset_of!(TVMFFIErrorCell, update_backtrace), 48);
        }
    }

    #[test]
    fn type_indices_match_the_header() {
        use type_index::*;
        let expected = [
            (NONE, 0),
            (INT, 1),
            (BOOL, 2),
            (FLOAT, 3),
            (OPAQUE_PTR, 4),
            (DATA_TYPE, 5),
            (DEVICE, 6),
            (DL_TENSOR_PTR, 7),
            (RAW_STR, 8),
            (BYTE_ARRAY_PTR, 9),
            (OBJECT_RVALUE_REF, 10),
            (SMALL_STR, 11),
            (SMALL_BYTES, 12),
            (OBJECT, 64),
            (STR, 65),
            (BYTES, 66),
            (ERROR, 67),
            (FUNCTION, 68),
            (SHAPE, 69),
            (TENSOR, 70),
            (ARRAY, 71),
            (MAP, 72),
            (MODULE, 73),
            (OPAQUE_PY_OBJECT, 74),
            (DYN_OBJECT_BEGIN, 128),
        ];
        for (value, header) in expected {
            assert_eq!(value, header);
        }
    }

    #[test]
    fn any_values_fill_the_payload() {
        let i = TVMFFIAny::int(-2);
        assert_eq!((i.type_index, i.bits() as i64), (type_index::INT, -2));
        let b = TVMFFIAny::bool(true);
        assert_eq!((b.type_index, b.bits()), (type_index::BOOL, 1));
        let f = TVMFFIAny::float(1.5);
        assert_eq!((f.type_index, f64::from_bits(f.bits())), (type_index::FLOAT, 1.5));
        let mut t = DLTensor {
            data: core::ptr::null_mut(),
            device: DLDevice::CPU,
            ndim: 0,
            dtype: DLDataType::F32,
            shape: core::ptr::null_mut(),
            strides: core::ptr::null_mut(),
            byte_offset: 0,
        };
        let p = TVMFFIAny::dl_tensor(&mut t);
        assert_eq!(p.type_index, type_index::DL_TENSOR_PTR);
        assert_eq!(p.ptr(), (&raw mut t).cast());
        // SAFETY: the padding union is always initialised by the constructors.
        assert_eq!(unsafe { p.padding.zero_padding }, 0);
    }

    #[test]
    fn dtype_names() {
        assert_eq!(DLDataType::F32.to_string(), "float32");
        assert_eq!(DLDataType::BF16.to_string(), "bfloat16");
        assert_eq!(DLDataType::I64.to_string(), "int64");
        assert_eq!(DLDataType::BOOL.to_string(), "bool");
        assert_eq!(DLDataType::new(dtype_code::FLOAT, 32, 4).to_string(), "float32x4");
        assert_eq!(DLDataType::new(dtype_code::FLOAT8_E4M3FN, 8, 1).to_string(), "float8_e4m3fn");
        assert_eq!(DLDataType::new(99, 8, 1).to_string(), "dtype(code=99, bits=8, lanes=1)");
        assert_eq!(DLDataType::BF16.size_in_bytes(), Some(2));
        assert_eq!(DLDataType::new(dtype_code::FLOAT4_E2M1FN, 4, 1).size_in_bytes(), None);
        assert_eq!(DLDevice::cuda(1).to_string(), "cuda:1");
        assert_eq!(DLDeviceType(42).to_string(), "device_type(42)");
    }

    #[test]
    fn element_sizes_match_dtypes() {
        fn check<T: Element>() {
            assert_eq!(T::DTYPE.size_in_bytes(), Some(size_of::<T>()), "{}", T::DTYPE);
        }
        check::<i8>();
        check::<i16>();
        check::<i32>();
        check::<i64>();
        check::<u8>();
        check::<u16>();
        check::<u32>();
        check::<u64>();
        check::<f32>();
        check::<f64>();
        check::<half::f16>();
        check::<half::bf16>();
    }
}
