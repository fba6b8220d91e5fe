//! One of many processes unpacking the same embedded kernel at once (see tests/loader.rs).
//!
//! `unpack-child <library> <start-unix-ms>`: reads the library bytes as if embedded, waits
//! until the start time so all children race, unpacks + loads + calls `rms_norm`, prints `ok`.

use kernels_runtime::digest::sha256_hex;
use kernels_runtime::ffi::{Arg, TensorView};
use kernels_runtime::loader::load_embedded;
use kernels_runtime::registry::{EmbeddedFile, EmbeddedVariant};

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(lib), Some(start)) = (args.next(), args.next()) else {
        eprintln!("usage: unpack-child <library> <start-unix-ms>");
        std::process::exit(2);
    };
    let bytes: &'static [u8] = Box::leak(std::fs::read(&lib).expect("read library").into_boxed_slice());
    let sha: &'static str = Box::leak(sha256_hex(bytes).into_boxed_str());
    let start: u128 = start.parse().expect("start time");
    while std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() < start {
        std::hint::spin_loop();
    }
    let variant = EmbeddedVariant {
        variant: "tvm-ffi01-cpu-x86_64-linux",
        archs: &[],
        library: EmbeddedFile { path: "kernel.so", sha256: sha, bytes },
    };
    let kernel = load_embedded(&variant).unwrap_or_else(|e| panic!("{e}"));
    let f = kernel.function("rms_norm").unwrap_or_else(|e| panic!("{e}"));
    let x = [1.0f32, 2.0, 3.0, 4.0];
    let w = [1.0f32; 4];
    let mut out = [0f32; 4];
    let xv = TensorView::from_slice(&x, &[1, 4]).unwrap();
    let wv = TensorView::from_slice(&w, &[4]).unwrap();
    let ov = TensorView::from_slice_mut(&mut out, &[1, 4]).unwrap();
    // SAFETY: rms_norm(out, x, weight, eps) writes only `out`.
    unsafe { f.call(&[Arg::from(&ov), Arg::from(&xv), Arg::from(&wv), Arg::from(1e-6f64)]) }
        .unwrap_or_else(|e| panic!("{e}"));
    let rms = (30.0f32 / 4.0).sqrt();
    assert!((out[3] - 4.0 / rms).abs() < 1e-5, "{out:?}");
    println!("ok");
}
