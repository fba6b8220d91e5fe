//! Every environment variable kernels-rs reads, by name, and the one rule for boolean flags.
//!
//! The runtime reads the environment only through this module; kernels-build reads it through
//! its own recorder (so Cargo can rerun the build script) but with these names and [`is_true`].

use std::ffi::OsString;
use std::path::PathBuf;

/// Every fallback becomes an error (`KERNELS_STRICT=1`).
pub const STRICT: &str = "KERNELS_STRICT";
/// Only kernels declared `deterministic = true` are chosen (`KERNELS_DETERMINISTIC=1`).
pub const DETERMINISTIC: &str = "KERNELS_DETERMINISTIC";
/// Verify mode: `1` for every layer, or the layers, kernels or repos to check against their Rust
/// forward (comma separated).
pub const VERIFY: &str = "KERNELS_VERIFY";
/// Verify mode checks every Nth call of a layer on a device (default: its first call only).
pub const VERIFY_EVERY: &str = "KERNELS_VERIFY_EVERY";
/// Every layer uses its Rust forward, as upstream's `DISABLE_KERNEL_MAPPING`.
pub const DISABLE_MAPPING: &str = "DISABLE_KERNEL_MAPPING";
/// Layers, kernels or repos whose kernels are turned off (comma separated).
pub const DISABLE: &str = "KERNELS_DISABLE";
/// Local kernel directories, `org/repo=path:…`, as upstream.
pub const LOCAL_KERNELS: &str = "LOCAL_KERNELS";
/// `memfd` (default) or `file`: how embedded libraries are materialised.
pub const UNPACK: &str = "KERNELS_UNPACK";
/// The private directory embedded libraries are unpacked to when memfd is not used.
pub const UNPACK_DIR: &str = "KERNELS_RS_CACHE";
/// The Hub cache for kernels, ahead of `HF_HUB_CACHE` (as upstream's `KERNELS_CACHE`).
pub const KERNELS_CACHE: &str = "KERNELS_CACHE";
/// The Hugging Face Hub cache.
pub const HF_HUB_CACHE: &str = "HF_HUB_CACHE";
/// The Hugging Face home (`<HF_HOME>/hub` is the default Hub cache, `<HF_HOME>/token` the token).
pub const HF_HOME: &str = "HF_HOME";
/// Base directory for per-user caches.
pub const XDG_CACHE_HOME: &str = "XDG_CACHE_HOME";
/// The user's home directory.
pub const HOME: &str = "HOME";
/// The `libtvm_ffi.so` to load when the binary embeds none.
pub const TVM_FFI_LIB: &str = "KERNELS_TVM_FFI_LIB";
/// The CUDA runtime (`libcudart.so.<major>`, a file or the directory holding it) that CUDA
/// kernels linking it dynamically get, ahead of the one the binary embeds or the system's.
pub const CUDART_LIB: &str = "KERNELS_CUDART_LIB";
/// The oneAPI version to assume on Intel GPUs (`2025.1`), when it cannot be detected.
pub const XPU_VERSION: &str = "KERNELS_XPU_VERSION";
/// The build refuses anything not pinned by `kernels.lock`.
pub const LOCKED: &str = "KERNELS_LOCKED";
/// The Hub endpoint.
pub const HF_ENDPOINT: &str = "HF_ENDPOINT";
/// The Hub token.
pub const HF_TOKEN: &str = "HF_TOKEN";
/// A file holding the Hub token.
pub const HF_TOKEN_PATH: &str = "HF_TOKEN_PATH";
/// No network for Hub downloads.
pub const HF_HUB_OFFLINE: &str = "HF_HUB_OFFLINE";
/// No network for anything Cargo runs.
pub const CARGO_NET_OFFLINE: &str = "CARGO_NET_OFFLINE";

/// Whether a flag's value means "on": a non-zero integer (as upstream reads
/// `DISABLE_KERNEL_MAPPING`), or `true`, `yes`, `on` in any case. Anything else is off.
pub fn is_true(value: &str) -> bool {
    let v = value.trim();
    match v.parse::<i64>() {
        Ok(n) => n != 0,
        Err(_) => matches!(v.to_ascii_lowercase().as_str(), "true" | "yes" | "on"),
    }
}

/// The variable, if set and not empty (an empty value counts as unset, as in the Hub tools).
pub fn var_os(name: &str) -> Option<OsString> {
    std::env::var_os(name).filter(|v| !v.is_empty())
}

/// The variable as UTF-8 text, if set, not empty and valid UTF-8.
pub fn var(name: &str) -> Option<String> {
    var_os(name).and_then(|v| v.into_string().ok())
}

/// The variable as a path, if set and not empty.
pub fn path(name: &str) -> Option<PathBuf> {
    var_os(name).map(PathBuf::from)
}

/// Whether the flag is set to a true value ([`is_true`]).
pub fn flag(name: &str) -> bool {
    var(name).is_some_and(|v| is_true(&v))
}

#[cfg(test)]
mod tests {
    use super::is_true;

    #[test]
    fn flags_read_like_upstream() {
        for on in ["1", "2", "-1", " 1 ", "true", "TRUE", "yes", "On"] {
            assert!(is_true(on), "{on:?}");
        }
        for off in ["", "0", "00", "false", "no", "off", "maybe"] {
            assert!(!is_true(off), "{off:?}");
        }
    }
}
