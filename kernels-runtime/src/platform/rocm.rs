//! AMD ROCm probe: the HIP runtime library for the version, KFD sysfs for the GPUs.

use std::ffi::c_int;
use std::fmt;
use std::path::Path;

use super::{Probe, open_library};
use crate::variant::Version;

/// The ROCm runtime and its GPUs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RocmInfo {
    /// ROCm (HIP runtime) `major.minor`.
    pub version: Version,
    /// GPUs found in the KFD topology.
    pub devices: Vec<RocmDevice>,
}

/// One AMD GPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RocmDevice {
    /// The `gfx` target, e.g. `gfx942`.
    pub gfx_target: String,
}

impl fmt::Display for RocmInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ROCm {}, {} device(s)", self.version, self.devices.len())?;
        for (i, d) in self.devices.iter().enumerate() {
            write!(f, "{}{}", if i == 0 { ": " } else { ", " }, d.gfx_target)?;
        }
        Ok(())
    }
}

pub(super) fn probe() -> Probe<RocmInfo> {
    let devices = match kfd_devices(Path::new("/sys/class/kfd/kfd/topology/nodes")) {
        Ok(d) if !d.is_empty() => d,
        Ok(_) => return Probe::absent("the KFD topology lists no AMD GPU"),
        Err(e) => return Probe::Absent(e),
    };
    match hip_version() {
        Ok(version) => Probe::Present(RocmInfo { version, devices }),
        Err(e) => Probe::Absent(e),
    }
}

/// Decodes `hipRuntimeGetVersion`: `major * 10_000_000 + minor * 100_000 + patch`.
pub(crate) fn decode_hip_version(v: c_int) -> Version {
    let v = v.max(0) as u32;
    Version::new(v / 10_000_000, (v / 100_000) % 100)
}

fn hip_version() -> Result<Version, String> {
    let lib = open_library("libamdhip64.so")
        .or_else(|_| open_library("libamdhip64.so.7"))
        .or_else(|_| open_library("libamdhip64.so.6"))?;
    let lib: &'static libloading::Library = Box::leak(Box::new(lib));
    // SAFETY: documented HIP runtime signature.
    let get: libloading::Symbol<'static, unsafe extern "C" fn(*mut c_int) -> c_int> =
        unsafe { lib.get(b"hipRuntimeGetVersion\0") }
            .map_err(|e| format!("libamdhip64 lacks hipRuntimeGetVersion: {e}"))?;
    let mut v = 0;
    // SAFETY: valid out-pointer.
    let r = unsafe { get(&mut v) };
    if r != 0 {
        return Err(format!("hipRuntimeGetVersion failed with hipError {r}"));
    }
    Ok(decode_hip_version(v))
}

/// Reads GPU nodes from a KFD topology directory (`nodes/<n>/properties`, `gfx_target_version`).
pub(crate) fn kfd_devices(nodes: &Path) -> Result<Vec<RocmDevice>, String> {
    let entries = std::fs::read_dir(nodes).map_err(|e| format!("no AMD KFD driver ({}: {e})", nodes.display()))?;
    let mut found = Vec::new();
    let mut paths: Vec<_> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for node in paths {
        let Ok(props) = std::fs::read_to_string(node.join("properties")) else { continue };
        let gfx = props
            .lines()
            .filter_map(|l| l.strip_prefix("gfx_target_version "))
            .find_map(|v| v.trim().parse::<u32>().ok())
            .unwrap_or(0);
        if gfx == 0 {
            continue; // CPU node
        }
        // 90402 → gfx942: major, then minor and stepping as hex digits.
        let (major, minor, step) = (gfx / 10000, (gfx / 100) % 100, gfx % 100);
        found.push(RocmDevice { gfx_target: format!("gfx{major}{minor:x}{step:x}") });
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hip_version_decoding() {
        assert_eq!(decode_hip_version(60_443_484), Version::new(6, 4));
        assert_eq!(decode_hip_version(70_100_000), Version::new(7, 1));
    }

    #[test]
    fn kfd_topology_parsing() {
        let dir = tempfile::tempdir().unwrap();
        for (n, props) in [
            ("0", "cpu_cores_count 64\ngfx_target_version 0\n"),
            ("1", "simd_count 304\ngfx_target_version 90402\n"),
            ("2", "gfx_target_version 100300\n"),
        ] {
            std::fs::create_dir(dir.path().join(n)).unwrap();
            std::fs::write(dir.path().join(n).join("properties"), props).unwrap();
        }
        let devs = kfd_devices(dir.path()).unwrap();
        let names: Vec<_> = devs.iter().map(|d| d.gfx_target.as_str()).collect();
        assert_eq!(names, ["gfx942", "gfx1030"]);
        let err = kfd_devices(&dir.path().join("missing")).unwrap_err();
        assert!(err.contains("no AMD KFD driver"), "{err}");
    }
}
