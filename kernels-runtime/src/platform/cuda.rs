//! NVIDIA driver probe through `libcuda.so.1` (the driver API), loaded at run time.

use std::ffi::{CStr, c_char, c_int, c_uint};
use std::fmt;

use super::{Probe, open_library};
use crate::variant::Version;

/// The CUDA driver and its visible devices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CudaInfo {
    /// Highest CUDA version the driver supports (`cuDriverGetVersion`).
    pub driver_version: Version,
    /// Visible devices, by ordinal.
    pub devices: Vec<CudaDevice>,
}

/// One CUDA device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CudaDevice {
    /// Device ordinal as the driver numbers it (after `CUDA_VISIBLE_DEVICES`).
    pub ordinal: u32,
    /// Marketing name (`NVIDIA H100 80GB HBM3`).
    pub name: String,
    /// Compute capability (9.0 for sm_90).
    pub capability: Version,
}

impl fmt::Display for CudaInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.devices.len();
        write!(f, "CUDA {}, {n} device{}", self.driver_version, if n == 1 { "" } else { "s" })?;
        for (i, d) in self.devices.iter().enumerate() {
            write!(f, "{}{d}", if i == 0 { ": " } else { ", " })?;
        }
        Ok(())
    }
}

impl fmt::Display for CudaDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{} {} (sm_{}{})", self.ordinal, self.name, self.capability.major, self.capability.minor)
    }
}

type CuResult = c_int;
const CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR: c_int = 75;
const CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR: c_int = 76;

/// Decodes `cuDriverGetVersion`'s `1000 * major + 10 * minor`.
pub(crate) fn decode_driver_version(v: c_int) -> Version {
    let v = v.max(0) as u32;
    Version::new(v / 1000, (v % 1000) / 10)
}

pub(super) fn probe() -> Probe<CudaInfo> {
    match probe_inner() {
        Ok(info) => Probe::Present(info),
        Err(reason) => Probe::Absent(reason),
    }
}

fn probe_inner() -> Result<CudaInfo, String> {
    let lib = open_library("libcuda.so.1")?;
    // The library stays loaded for the life of the process: the driver does not support
    // being unloaded after cuInit, and later CUDA users load the same handle.
    let lib: &'static libloading::Library = Box::leak(Box::new(lib));
    macro_rules! sym {
        ($name:literal, $ty:ty) => {{
            // SAFETY: the signature is the documented driver API signature of this symbol.
            let s: libloading::Symbol<'static, $ty> = unsafe { lib.get($name) }.map_err(|e| {
                format!("libcuda.so.1 lacks {}: {e}", String::from_utf8_lossy(&$name[..$name.len() - 1]))
            })?;
            *s
        }};
    }
    let cu_init = sym!(b"cuInit\0", unsafe extern "C" fn(c_uint) -> CuResult);
    let cu_driver_get_version = sym!(b"cuDriverGetVersion\0", unsafe extern "C" fn(*mut c_int) -> CuResult);
    let cu_device_get_count = sym!(b"cuDeviceGetCount\0", unsafe extern "C" fn(*mut c_int) -> CuResult);
    let cu_device_get = sym!(b"cuDeviceGet\0", unsafe extern "C" fn(*mut c_int, c_int) -> CuResult);
    let cu_device_get_attribute =
        sym!(b"cuDeviceGetAttribute\0", unsafe extern "C" fn(*mut c_int, c_int, c_int) -> CuResult);
    let cu_device_get_name = sym!(b"cuDeviceGetName\0", unsafe extern "C" fn(*mut c_char, c_int, c_int) -> CuResult);

    let check = |what: &str, r: CuResult| if r == 0 { Ok(()) } else { Err(format!("{what} failed with CUresult {r}")) };
    // SAFETY: all calls below follow the driver API contract: valid out-pointers, cuInit first.
    unsafe {
        let mut version = 0;
        check("cuDriverGetVersion", cu_driver_get_version(&mut version))?;
        check("cuInit", cu_init(0))
            .map_err(|e| format!("{e} (driver {} present, no usable GPU?)", decode_driver_version(version)))?;
        let mut count = 0;
        check("cuDeviceGetCount", cu_device_get_count(&mut count))?;
        let mut devices = Vec::new();
        for ordinal in 0..count {
            let mut dev = 0;
            check("cuDeviceGet", cu_device_get(&mut dev, ordinal))?;
            let (mut major, mut minor) = (0, 0);
            check(
                "cuDeviceGetAttribute",
                cu_device_get_attribute(&mut major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev),
            )?;
            check(
                "cuDeviceGetAttribute",
                cu_device_get_attribute(&mut minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev),
            )?;
            let mut name = [0 as c_char; 256];
            check("cuDeviceGetName", cu_device_get_name(name.as_mut_ptr(), name.len() as c_int, dev))?;
            name[name.len() - 1] = 0;
            devices.push(CudaDevice {
                ordinal: ordinal as u32,
                name: CStr::from_ptr(name.as_ptr()).to_string_lossy().into_owned(),
                capability: Version::new(major.max(0) as u32, minor.max(0) as u32),
            });
        }
        if devices.is_empty() {
            return Err(format!("driver CUDA {} reports no devices", decode_driver_version(version)));
        }
        Ok(CudaInfo { driver_version: decode_driver_version(version), devices })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn driver_version_decoding() {
        assert_eq!(decode_driver_version(13000), Version::new(13, 0));
        assert_eq!(decode_driver_version(12090), Version::new(12, 9));
        assert_eq!(decode_driver_version(12080), Version::new(12, 8));
        assert_eq!(decode_driver_version(-1), Version::new(0, 0));
    }
}
