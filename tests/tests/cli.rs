//! `cargo kernels package`: a Rust kernel crate laid out as a Hub variant that the loader
//! verifies and loads.

use std::process::Command;

use kernels_runtime::ffi::{Arg, TensorView};
use kernels_runtime::loader;
use kernels_tests::*;

#[test]
fn package_lays_out_a_loadable_verified_variant() {
    let out = tempfile::tempdir().unwrap();
    let result = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .current_dir(workspace())
        .args(["run", "-q", "-p", "kernels-cli", "--", "kernels", "package"])
        .arg(workspace().join("examples/kernels/rust-cpu"))
        .arg("--out")
        .arg(out.path())
        .args(["--target", target()])
        .output()
        .unwrap();
    assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));
    let dir = std::path::PathBuf::from(String::from_utf8(result.stdout).unwrap().trim());
    assert_eq!(dir, out.path().join("build/tvm-ffi01-cpu-x86_64-linux"));
    let kernel = loader::load_variant_dir(&dir).unwrap();
    let f = kernel.function("silu_and_mul").unwrap();
    let x = [1.0f32, 2.0, 3.0, 4.0];
    let mut o = [0f32; 2];
    {
        let (xv, ov) =
            (TensorView::from_slice(&x, &[1, 4]).unwrap(), TensorView::from_slice_mut(&mut o, &[1, 2]).unwrap());
        // SAFETY: silu_and_mul writes only `out`.
        unsafe { f.call(&[Arg::from(&ov), Arg::from(&xv)]) }.unwrap();
    }
    let want = silu_and_mul_ref(&x, 2);
    assert!(max_rel_diff(&o, &want) < 1e-5, "{o:?} vs {want:?}");
}
