//! `gpu-check`: platform, variant selection and loading of the CUDA example kernels, then the
//! CUDA suite (`gpu-check-cuda`) when a CUDA device is present. Starts on any machine.

use std::io::Write as _;
use std::path::Path;
use std::process::{Command, ExitCode};

use kernels_gpu_check::options::{Options, USAGE};
use kernels_gpu_check::{CUDA_SUITE_BINARY, EXIT_CANNOT_RUN, EXIT_FAILED, result_line, setup};
use kernels_runtime::ffi::{self, KernelFunction};
use kernels_runtime::loader::{self, LoadError};
use kernels_runtime::platform::{Platform, Probe};

fn main() -> ExitCode {
    let status = run();
    let _ = std::io::stdout().flush();
    ExitCode::from(u8::try_from(status).unwrap_or(EXIT_CANNOT_RUN as u8))
}

fn run() -> i32 {
    let options = match Options::parse(std::env::args_os().skip(1)) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("gpu-check: {e}\n\n{USAGE}");
            return EXIT_CANNOT_RUN;
        }
    };
    if options.help {
        println!("{USAGE}");
        return 0;
    }

    println!("== platform");
    let platform = Platform::detect();
    println!("{platform}");
    platform_result(&platform);

    let dir = match setup::kernel_dir(options.kernel_dir.as_deref()) {
        Ok(d) => d,
        Err(e) => return cannot_run(&e),
    };

    println!("\n== libtvm_ffi");
    match setup::preload_tvm_ffi() {
        Ok(path) => println!("preloaded {}", path.display()),
        Err(e) => return cannot_run(&format!("cannot load libtvm_ffi.so: {e}")),
    }

    println!("\n== variant selection in {}", dir.display());
    let selected = setup::select_and_load(&dir, &platform);
    let kernel = match selected {
        Ok((kernel, trace)) => {
            println!("{trace}");
            println!("loaded {} ({}, {})", kernel.variant(), kernel.source(), kernel.path().display());
            result_line(
                "select",
                &[
                    ("chosen", kernel.variant().to_owned()),
                    ("source", kernel.source().to_string()),
                    ("library", kernel.path().display().to_string()),
                ],
            );
            kernel
        }
        Err(LoadError::NoUsableVariant { trace, .. }) => {
            println!("{trace}");
            result_line("select", &[("chosen", "none".into())]);
            return match &platform.cuda {
                Probe::Absent(reason) => no_cuda(&dir, reason),
                Probe::Present(_) => cannot_run("no variant of the kernel can run on this GPU (see the trace above)"),
            };
        }
        Err(e) => return cannot_run(&e.to_string()),
    };

    let functions = match setup::resolve(&kernel) {
        Ok(f) => f,
        Err(e) => return cannot_run(&e.to_string()),
    };
    for f in &functions {
        println!("resolved {} ({})", f.name(), f.symbol());
    }

    println!("\n== host memory passed to the CUDA kernel");
    let failed = !host_memory_check(&functions[0]);

    println!("\n== CUDA suite");
    match run_cuda_suite(&options, ffi::preloaded_tvm_ffi().map(|l| l.path())) {
        0 if !failed => 0,
        0 | EXIT_FAILED => EXIT_FAILED,
        EXIT_CANNOT_RUN => EXIT_CANNOT_RUN,
        // The dynamic loader's status when a library is missing after all.
        127 => {
            println!("{CUDA_SUITE_BINARY} could not be started (exit status 127)");
            EXIT_CANNOT_RUN
        }
        // A panic (101) or anything else is a failure of the suite.
        other => {
            println!("{CUDA_SUITE_BINARY} failed with exit status {other}");
            result_line("suite", &[("status", "failed".into()), ("exit", other.to_string())]);
            EXIT_FAILED
        }
    }
}

fn cannot_run(message: &str) -> i32 {
    println!("gpu-check: cannot run: {message}");
    result_line("summary", &[("status", "cannot-run".into()), ("reason", message.to_owned())]);
    EXIT_CANNOT_RUN
}

fn platform_result(platform: &Platform) {
    let mut fields = vec![("os", platform.os.to_string()), ("cpu", platform.cpu.to_string())];
    match &platform.cuda {
        Probe::Present(cuda) => {
            fields.push(("cuda_driver", cuda.driver_version.to_string()));
            fields.push(("devices", cuda.devices.len().to_string()));
            if let Some(d) = cuda.devices.first() {
                fields.push(("gpu0", d.name.clone()));
                fields.push(("sm0", format!("{}{}", d.capability.major, d.capability.minor)));
            }
        }
        Probe::Absent(reason) => {
            fields.push(("cuda", "absent".into()));
            fields.push(("reason", reason.clone()));
        }
    }
    fields.push(("tvm_ffi", platform.tvm_ffi.to_string()));
    result_line("platform", &fields);
}

/// The kernel refuses host memory with its own message (runs anywhere the library loads).
fn host_memory_check(rms_norm: &KernelFunction) -> bool {
    match setup::host_memory_is_refused(rms_norm) {
        Ok(message) => {
            println!("ok: refused with ValueError: {message}");
            result_line(
                "error-check",
                &[("case", "host-memory".into()), ("status", "pass".into()), ("message", message)],
            );
            true
        }
        Err(problem) => {
            println!("FAILED: {problem}");
            result_line(
                "error-check",
                &[("case", "host-memory".into()), ("status", "fail".into()), ("problem", problem)],
            );
            false
        }
    }
}

/// No CUDA here: load the CUDA variant anyway (it needs the driver only to launch) to check
/// the host-memory refusal, then say why nothing else can run.
fn no_cuda(dir: &Path, reason: &str) -> i32 {
    for variant in setup::cuda_variant_dirs(dir) {
        println!("\n== without a GPU: {}", variant.display());
        let loaded = loader::load_variant_dir(&variant).and_then(|k| k.function("rms_norm"));
        match loaded {
            Ok(rms_norm) => {
                println!("loaded and resolved rms_norm ({})", rms_norm.library_path().display());
                host_memory_check(&rms_norm);
            }
            Err(e) => println!("cannot load it: {e}"),
        }
    }
    println!();
    cannot_run(&format!("no CUDA: {reason}; correctness checks and benchmarks need an NVIDIA GPU"))
}

/// Runs `gpu-check-cuda` next to this executable, after checking that the libraries it links
/// can be loaded. Returns its exit status.
fn run_cuda_suite(options: &Options, tvm_ffi: Option<&Path>) -> i32 {
    let Some(suite) = setup::exe_dir().map(|d| d.join(CUDA_SUITE_BINARY)).filter(|p| p.is_file()) else {
        println!("{CUDA_SUITE_BINARY} is not next to this executable; build it with scripts/build-gpu-check.sh");
        return EXIT_CANNOT_RUN;
    };
    let (needed, missing) = match setup::unloadable_libraries(&suite) {
        Ok(found) => found,
        Err(e) => {
            println!("cannot read {}: {e}", suite.display());
            return EXIT_CANNOT_RUN;
        }
    };
    println!("{} links {}", suite.display(), needed.join(", "));
    if !missing.is_empty() {
        for m in &missing {
            println!("cannot load {m}");
        }
        println!(
            "{CUDA_SUITE_BINARY} needs these CUDA libraries (candle links them); put the directories \
             holding them on LD_LIBRARY_PATH (scripts/gpu-check.sh searches the usual places)"
        );
        result_line("suite", &[("status", "cannot-start".into()), ("missing", missing.join("; "))]);
        return EXIT_CANNOT_RUN;
    }
    let _ = std::io::stdout().flush();
    let mut command = Command::new(&suite);
    command.args(options.to_args());
    if let Some(path) = tvm_ffi {
        command.env(kernels_runtime::env::TVM_FFI_LIB, path);
    }
    match command.status() {
        Ok(status) => match status.code() {
            Some(code) => code,
            None => {
                println!("{CUDA_SUITE_BINARY} died: {status}");
                result_line("suite", &[("status", "crashed".into()), ("detail", status.to_string())]);
                EXIT_FAILED
            }
        },
        Err(e) => {
            println!("cannot start {}: {e}", suite.display());
            EXIT_CANNOT_RUN
        }
    }
}
