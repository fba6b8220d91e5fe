//! With feature `cuda`: adds `GPU_CHECK_CUDA_LINK_DIR` (the link-time CUDA libraries that
//! scripts/build-gpu-check.sh prepares, see BUILD.md) to the linker's search path. Without it
//! the CUDA libraries must be where cudarc's build script looks (a CUDA toolkit install).

fn main() {
    println!("cargo::rerun-if-env-changed=GPU_CHECK_CUDA_LINK_DIR");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    if let Some(dir) = std::env::var_os("GPU_CHECK_CUDA_LINK_DIR").filter(|d| !d.is_empty()) {
        let dir = std::path::PathBuf::from(dir);
        println!("cargo::rustc-link-search=native={}", dir.display());
    }
}
