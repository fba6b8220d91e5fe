//! Tells the tests which target they were built for, so kernel crates are built for it too.
fn main() {
    let target = std::env::var("TARGET").unwrap_or_default();
    println!("cargo:rustc-env=KERNELS_TESTS_TARGET={target}");
    println!("cargo:rerun-if-changed=build.rs");
}
