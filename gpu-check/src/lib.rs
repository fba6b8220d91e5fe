//! The GPU suite of kernels-rs: one run on a CUDA machine shows which variant of the CUDA
//! example kernels the runtime selects and why, checks the kernels on candle CUDA tensors
//! against candle's own ops, and measures their bandwidth against a device-to-device copy and
//! their time against candle's CUDA ops.
//!
//! Two binaries:
//!
//! - `gpu-check` needs no CUDA library to start. It prints the platform and the decision
//!   trace, loads the selected variant, checks that the kernel refuses host memory with its own
//!   error message, and, when a CUDA device is present, runs `gpu-check-cuda` (next to it) for
//!   the rest. Without CUDA it says why and exits with status 2.
//! - `gpu-check-cuda` (feature `cuda`) is the suite on candle's CUDA backend. candle links the
//!   CUDA driver, cuBLAS, cuRAND and NVRTC dynamically, so this binary cannot start where they
//!   are missing; `gpu-check` checks them first and names what is missing.
//!
//! Exit status: 0 all checks passed, 1 a check failed, 2 the suite could not run.
//! Build and run: `scripts/build-gpu-check.sh`, then `scripts/gpu-check.sh` on the GPU machine.

pub mod check;
pub mod options;
pub mod setup;
pub mod suite;

/// The registry of the suite's `#[kernelize]`d layers (the latency benchmark): `RMSNorm` and
/// `SiluAndMul` on CUDA map to the CUDA example kernels, which `gpu-check-cuda` names with
/// `LOCAL_KERNELS` (a hand-written registry instead of a build script's: the suite loads the
/// kernel directory it is given).
#[cfg(feature = "cuda")]
#[doc(hidden)]
pub static __KERNELS_REGISTRY: kernels_runtime::registry::Registry = {
    use kernels_runtime::registry::{KernelEntry, LayerEntry, ModeSupport, Registry};
    use kernels_runtime::variant::BackendKind;
    const fn cuda(layer: &'static str, function: &'static str) -> LayerEntry {
        LayerEntry {
            layer,
            device: BackendKind::Cuda,
            kernel: "cuda-ops",
            function,
            capability: None,
            mode: ModeSupport::Inference,
            deterministic: true,
            tolerance: None,
        }
    }
    Registry {
        kernels: &[KernelEntry {
            name: "cuda-ops",
            repo: suite::LATENCY_REPO,
            commit: None,
            variants: &[],
            cached: &[],
        }],
        layers: &[cuda("RMSNorm", "rms_norm"), cuda("SiluAndMul", "silu_and_mul")],
        tvm_ffi: None,
        cuda_runtime: None,
    }
};

/// Exit status when a check failed.
pub const EXIT_FAILED: i32 = 1;
/// Exit status when the suite could not run (no CUDA, no kernel, bad arguments).
pub const EXIT_CANNOT_RUN: i32 = 2;

/// The name of the CUDA suite binary, looked for next to `gpu-check`.
pub const CUDA_SUITE_BINARY: &str = "gpu-check-cuda";

/// The kernel functions the suite calls.
pub const FUNCTIONS: [&str; 3] = ["rms_norm", "silu_and_mul", "add_rms_norm"];

/// Prints a machine-readable line: `RESULT <kind> key=value ...`. Values with spaces or quotes
/// are quoted (Rust string syntax).
pub fn result_line(kind: &str, fields: &[(&str, String)]) {
    println!("{}", format_result(kind, fields));
}

/// The first line of `text` (errors may carry a backtrace on the following lines).
pub fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default()
}

/// The text of a [`result_line`].
pub fn format_result(kind: &str, fields: &[(&str, String)]) -> String {
    let mut line = format!("RESULT {kind}");
    for (key, value) in fields {
        line.push(' ');
        line.push_str(key);
        line.push('=');
        if value.is_empty() || value.contains(|c: char| c.is_whitespace() || c == '"' || c == '=') {
            line.push_str(&format!("{value:?}"));
        } else {
            line.push_str(value);
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn result_lines_quote_values_that_need_it() {
        let line = format_result(
            "check",
            &[("op", "rms_norm".into()), ("message", "a \"b\" c".into()), ("empty", String::new())],
        );
        assert_eq!(line, r#"RESULT check op=rms_norm message="a \"b\" c" empty="""#);
        assert_eq!(first_line("error\n   0: backtrace"), "error");
        assert_eq!(first_line(""), "");
    }
}
