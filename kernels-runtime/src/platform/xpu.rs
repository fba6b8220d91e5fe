//! Intel GPU probe through the Level Zero loader (`libze_loader.so.1`).

use std::ffi::{c_int, c_void};
use std::fmt;

use super::{Probe, open_library};
use crate::variant::Version;

/// Intel GPUs seen through Level Zero.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XpuInfo {
    /// Number of Level Zero GPU devices across drivers.
    pub device_count: u32,
    /// The oneAPI version kernels must match (`xpu<YYYY><m>`), when known. Level Zero does
    /// not report it; it is taken from `KERNELS_XPU_VERSION` (e.g. `2025.3`).
    pub oneapi_version: Option<Version>,
}

impl fmt::Display for XpuInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Level Zero, {} device(s), oneAPI ", self.device_count)?;
        match self.oneapi_version {
            Some(v) => write!(f, "{v}"),
            None => f.write_str("version unknown (set KERNELS_XPU_VERSION)"),
        }
    }
}

pub(super) fn probe() -> Probe<XpuInfo> {
    match probe_inner() {
        Ok(info) => Probe::Present(info),
        Err(e) => Probe::Absent(e),
    }
}

fn probe_inner() -> Result<XpuInfo, String> {
    let lib = open_library("libze_loader.so.1")?;
    let lib: &'static libloading::Library = Box::leak(Box::new(lib));
    type ZeInit = unsafe extern "C" fn(u32) -> c_int;
    type ZeDriverGet = unsafe extern "C" fn(*mut u32, *mut *mut c_void) -> c_int;
    type ZeDeviceGet = unsafe extern "C" fn(*mut c_void, *mut u32, *mut *mut c_void) -> c_int;
    // SAFETY: documented Level Zero signatures.
    let (init, driver_get, device_get) = unsafe {
        let init: libloading::Symbol<'static, ZeInit> =
            lib.get(b"zeInit\0").map_err(|e| format!("libze_loader lacks zeInit: {e}"))?;
        let dg: libloading::Symbol<'static, ZeDriverGet> =
            lib.get(b"zeDriverGet\0").map_err(|e| format!("libze_loader lacks zeDriverGet: {e}"))?;
        let dv: libloading::Symbol<'static, ZeDeviceGet> =
            lib.get(b"zeDeviceGet\0").map_err(|e| format!("libze_loader lacks zeDeviceGet: {e}"))?;
        (*init, *dg, *dv)
    };
    const ZE_INIT_FLAG_GPU_ONLY: u32 = 1;
    // SAFETY: Level Zero contract: zeInit first, counts queried with null arrays.
    unsafe {
        let r = init(ZE_INIT_FLAG_GPU_ONLY);
        if r != 0 {
            return Err(format!("zeInit failed with ze_result 0x{r:x}"));
        }
        let mut n_drivers = 0u32;
        if driver_get(&mut n_drivers, std::ptr::null_mut()) != 0 || n_drivers == 0 {
            return Err("Level Zero reports no GPU driver".into());
        }
        let mut drivers = vec![std::ptr::null_mut(); n_drivers as usize];
        if driver_get(&mut n_drivers, drivers.as_mut_ptr()) != 0 {
            return Err("zeDriverGet failed".into());
        }
        let mut total = 0;
        for d in drivers.into_iter().take(n_drivers as usize) {
            let mut n = 0u32;
            if device_get(d, &mut n, std::ptr::null_mut()) == 0 {
                total += n;
            }
        }
        if total == 0 {
            return Err("Level Zero reports no GPU device".into());
        }
        let oneapi_version = crate::env::var(crate::env::XPU_VERSION).and_then(|s| {
            let (a, b) = s.trim().split_once('.')?;
            Some(Version::new(a.parse().ok()?, b.parse().ok()?))
        });
        Ok(XpuInfo { device_count: total, oneapi_version })
    }
}
