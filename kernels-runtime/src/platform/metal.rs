//! Apple Metal probe (macOS only): `MTLCreateSystemDefaultDevice` from Metal.framework.

use std::ffi::c_void;

use super::{MetalInfo, Probe, open_library};

pub(super) fn probe() -> Probe<MetalInfo> {
    let lib = match open_library("/System/Library/Frameworks/Metal.framework/Metal") {
        Ok(l) => l,
        Err(e) => return Probe::Absent(e),
    };
    let lib: &'static libloading::Library = Box::leak(Box::new(lib));
    // SAFETY: documented Metal C entry point returning a retained id<MTLDevice> or nil.
    let create: libloading::Symbol<'static, unsafe extern "C" fn() -> *mut c_void> =
        match unsafe { lib.get(b"MTLCreateSystemDefaultDevice\0") } {
            Ok(s) => s,
            Err(e) => return Probe::Absent(format!("Metal lacks MTLCreateSystemDefaultDevice: {e}")),
        };
    // SAFETY: no arguments; a null return means no device.
    let dev = unsafe { create() };
    if dev.is_null() {
        return Probe::absent("MTLCreateSystemDefaultDevice returned no device");
    }
    Probe::Present(MetalInfo { device_name: "default Metal device".into() })
}
