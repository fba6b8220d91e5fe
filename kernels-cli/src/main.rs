//! `cargo kernels`: the command-line face of kernels-rs.
//!
//! ```text
//! cargo kernels platform [VARIANT...]   detected platform + selection trace per device
//! ```

use std::process::ExitCode;

use kernels_runtime::platform::Platform;
use kernels_runtime::select::{Candidate, Request, select};
use kernels_runtime::variant::BackendKind;

/// Real names as the Hub publishes them, used when `platform` is given none.
const SAMPLE_VARIANTS: &[&str] = &[
    "tvm-ffi01-cu130-x86_64-linux",
    "tvm-ffi01-cu128-x86_64-linux",
    "tvm-ffi01-cu126-x86_64-linux",
    "tvm-ffi01-cpu-x86_64-linux",
    "tvm-ffi01-cpu-aarch64-linux",
    "tvm-ffi01-rocm71-x86_64-linux",
    "tvm-ffi01-metal-aarch64-darwin",
    "torch212-cxx11-cu130-x86_64-linux",
    "torch-stable-abi211-cu126-x86_64-linux",
    "torch212-cxx11-xpu20253-x86_64-linux",
    "torch-cuda",
    "torch-universal",
];

const USAGE: &str = "\
usage: cargo kernels <command>

commands:
  platform [VARIANT[:ARCHS]...]  print the detected platform and, for each device kind present,
                                 which of the given variant names would be selected and why
                                 (ARCHS: comma-separated backend.archs, e.g. 8.0,9.0+PTX)";

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    // Invoked as `cargo kernels …`, cargo passes `kernels` first.
    if args.first().map(String::as_str) == Some("kernels") {
        args.remove(0);
    }
    match args.first().map(String::as_str) {
        Some("platform") => platform(&args[1..]),
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            ExitCode::SUCCESS
        }
        Some(other) => {
            eprintln!("error: unknown command `{other}`\n\n{USAGE}");
            ExitCode::from(2)
        }
        None => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn platform(names: &[String]) -> ExitCode {
    let platform = Platform::detect();
    println!("{platform}\n");
    let candidates: Vec<Candidate> = if names.is_empty() {
        SAMPLE_VARIANTS.iter().map(|n| Candidate::new(*n).with_archs(["8.0", "9.0+PTX"])).collect()
    } else {
        names
            .iter()
            .map(|n| match n.split_once(':') {
                Some((name, archs)) => Candidate::new(name).with_archs(archs.split(',')),
                None => Candidate::new(n.as_str()),
            })
            .collect()
    };
    let mut requests = vec![Request::cpu()];
    if let Some(cuda) = platform.cuda.present() {
        requests.extend(cuda.devices.iter().map(|d| Request::cuda(d.ordinal)));
    }
    for kind in [BackendKind::Rocm, BackendKind::Xpu, BackendKind::Metal] {
        if platform.has_backend(kind).is_ok() {
            requests.push(Request::new(kind, 0));
        }
    }
    for request in requests {
        println!("{}\n", select(&platform, request, &candidates).trace);
    }
    ExitCode::SUCCESS
}
