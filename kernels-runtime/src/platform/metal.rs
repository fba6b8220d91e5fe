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
    Probe::Present(MetalInfo { device_name: "default Metal device".into(), macos_version: macos_version() })
}

/// The macOS product version (`26.0`), from `sysctl kern.osproductversion`.
fn macos_version() -> Option<crate::variant::Version> {
    let mut buf = [0u8; 32];
    let mut len = buf.len();
    // SAFETY: the name is NUL-terminated; `buf` and `len` describe a writable buffer, which the
    // call fills with a NUL-terminated string no longer than `len`.
    let rc = unsafe {
        libc::sysctlbyname(
            c"kern.osproductversion".as_ptr(),
            buf.as_mut_ptr().cast(),
            &mut len,
            std::ptr::null_mut(),
            0,
        )
    };
    if rc != 0 {
        return None;
    }
    let text = std::ffi::CStr::from_bytes_until_nul(&buf).ok()?.to_str().ok()?;
    super::parse_product_version(text)
}
