//! [`Target`]: the device a layer runs on, from its first tensor's DLPack device.

use std::fmt;

use crate::ffi::{DLDevice, DLDeviceType};
use crate::select::Request;
use crate::variant::BackendKind;

/// Where a layer runs, as far as dispatch is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    /// A device of a kind kernels are built for; the ordinal is 0 for the CPU.
    Device(BackendKind, u32),
    /// Memory of a DLPack device type no kernel variant targets (Vulkan, WebGPU, …).
    Unsupported(i32),
}

impl Target {
    /// The target of a tensor on `device`; no tensor means the CPU.
    pub fn of(device: Option<DLDevice>) -> Target {
        let Some(device) = device else { return Target::Device(BackendKind::Cpu, 0) };
        let kind = match device.device_type {
            DLDeviceType::CPU | DLDeviceType::CUDA_HOST | DLDeviceType::ROCM_HOST => {
                return Target::Device(BackendKind::Cpu, 0);
            }
            DLDeviceType::CUDA | DLDeviceType::CUDA_MANAGED => BackendKind::Cuda,
            DLDeviceType::ROCM => BackendKind::Rocm,
            DLDeviceType::METAL => BackendKind::Metal,
            DLDeviceType::ONE_API => BackendKind::Xpu,
            other => return Target::Unsupported(other.0),
        };
        match u32::try_from(device.device_id) {
            Ok(ordinal) => Target::Device(kind, ordinal),
            Err(_) => Target::Unsupported(device.device_type.0),
        }
    }

    /// The selection request for this target, if it is a supported device.
    pub fn request(self) -> Option<Request> {
        match self {
            Target::Device(kind, ordinal) => Some(Request::new(kind, ordinal)),
            Target::Unsupported(_) => None,
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Device(BackendKind::Cpu, _) => f.write_str("cpu"),
            Target::Device(kind, ordinal) => write!(f, "{kind}:{ordinal}"),
            Target::Unsupported(t) => write!(f, "{}", DLDeviceType(*t)),
        }
    }
}
