//! candle's dtypes and devices in DLPack terms, and which of them this build can pass.

use candle_core::{DType, Device, DeviceLocation, Tensor};

use crate::ffi::{DLDataType, DLDevice, DLDeviceType, abi::dtype_code};
use crate::variant::BackendKind;

use super::CandleError;

/// The DLPack dtype of a candle dtype.
pub fn dl_dtype(dtype: DType) -> Result<DLDataType, CandleError> {
    Ok(match dtype {
        DType::U8 => DLDataType::U8,
        DType::U32 => DLDataType::U32,
        DType::I16 => DLDataType::I16,
        DType::I32 => DLDataType::I32,
        DType::I64 => DLDataType::I64,
        DType::BF16 => DLDataType::BF16,
        DType::F16 => DLDataType::F16,
        DType::F32 => DLDataType::F32,
        DType::F64 => DLDataType::F64,
        // The `float8` crate's E4M3 has the e4m3fn bit layout (bias 7, NaN = S.1111.111).
        DType::F8E4M3 => DLDataType::new(dtype_code::FLOAT8_E4M3FN, 8, 1),
        DType::F8E8M0 => DLDataType::new(dtype_code::FLOAT8_E8M0FNU, 8, 1),
        DType::F6E2M3 | DType::F6E3M2 | DType::F4 => {
            return Err(CandleError::UnsupportedDType {
                dtype,
                reason: "candle stores these sub-byte floats one per byte, a layout DLPack cannot describe",
            });
        }
        _ => return Err(CandleError::UnsupportedDType { dtype, reason: "a dtype newer than this kernels-runtime" }),
    })
}

/// The candle dtype of a DLPack dtype, when candle has one.
pub fn candle_dtype(dtype: DLDataType) -> Option<DType> {
    const E4M3FN: DLDataType = DLDataType::new(dtype_code::FLOAT8_E4M3FN, 8, 1);
    const E8M0FNU: DLDataType = DLDataType::new(dtype_code::FLOAT8_E8M0FNU, 8, 1);
    Some(match dtype {
        DLDataType::U8 => DType::U8,
        DLDataType::U32 => DType::U32,
        DLDataType::I16 => DType::I16,
        DLDataType::I32 => DType::I32,
        DLDataType::I64 => DType::I64,
        DLDataType::BF16 => DType::BF16,
        DLDataType::F16 => DType::F16,
        DLDataType::F32 => DType::F32,
        DLDataType::F64 => DType::F64,
        E4M3FN => DType::F8E4M3,
        E8M0FNU => DType::F8E8M0,
        _ => return None,
    })
}

/// The backend kind and ordinal of a candle device, for kernel dispatch.
pub fn backend_of(device: &Device) -> (BackendKind, usize) {
    match device.location() {
        DeviceLocation::Cpu => (BackendKind::Cpu, 0),
        DeviceLocation::Cuda { gpu_id } => (BackendKind::Cuda, gpu_id),
        DeviceLocation::Metal { gpu_id } => (BackendKind::Metal, gpu_id),
    }
}

/// The DLPack device of a candle device.
pub fn dl_device(device: &Device) -> DLDevice {
    let ordinal = |id: usize| i32::try_from(id).unwrap_or(i32::MAX);
    match device.location() {
        DeviceLocation::Cpu => DLDevice::CPU,
        DeviceLocation::Cuda { gpu_id } => DLDevice::cuda(ordinal(gpu_id)),
        DeviceLocation::Metal { gpu_id } => DLDevice::new(DLDeviceType::METAL, ordinal(gpu_id)),
    }
}

/// Checks that `tensor` (argument `index`) can be passed: a dtype with a DLPack equivalent, on a
/// device this build supports. Returns its device.
pub(super) fn check_tensor(index: Option<usize>, tensor: &Tensor) -> Result<DLDevice, CandleError> {
    dl_dtype(tensor.dtype())?;
    check_device(index, tensor.device())
}

/// The error for storage on a device this build has no path for (what [`check_device`] refuses
/// before any storage is reached).
pub(super) fn not_in_this_build(location: DeviceLocation) -> CandleError {
    CandleError::UnsupportedDevice {
        index: None,
        device: format!("{location:?}"),
        reason: "not supported by this build",
    }
}

pub(super) fn check_device(index: Option<usize>, device: &Device) -> Result<DLDevice, CandleError> {
    let dl = dl_device(device);
    let unsupported =
        |reason| CandleError::UnsupportedDevice { index, device: format!("{:?}", device.location()), reason };
    if dl.device_type == DLDeviceType::METAL {
        return Err(unsupported("kernels on candle Metal tensors are not supported; move the tensors to the CPU"));
    }
    if cfg!(not(feature = "candle-cuda")) && dl.device_type == DLDeviceType::CUDA {
        return Err(unsupported("kernels-runtime was built without its `candle-cuda` feature; enable it"));
    }
    Ok(dl)
}
