//! Shared pieces of the kernels-rs benchmarks: building and loading the example kernels, a
//! side-by-side timer, and a description of the machine. The benchmarks themselves are in
//! `benches/`; their results are recorded in `BENCHMARKS.md`.

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use kernels_runtime::ffi::KernelFunction;

/// Builds `kernels-example-cpu` (release) and returns its cdylib, from cargo's artifact messages.
pub fn build_example_cpu_kernels() -> Result<PathBuf, String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().ok_or("no workspace root")?;
    let output = Command::new(cargo)
        .current_dir(workspace)
        .args(["build", "-p", "kernels-example-cpu", "--release", "--message-format=json-render-diagnostics"])
        .output()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    if !output.status.success() {
        return Err(format!("building kernels-example-cpu failed:\n{}", String::from_utf8_lossy(&output.stderr)));
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    for line in stdout.lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        if message["reason"] != "compiler-artifact" || message["target"]["name"] != "kernels_example_cpu" {
            continue;
        }
        let files = message["filenames"].as_array().into_iter().flatten();
        if let Some(so) = files.filter_map(|f| f.as_str()).find(|f| f.ends_with(".so")) {
            return Ok(PathBuf::from(so));
        }
    }
    Err("cargo reported no cdylib for kernels-example-cpu".to_owned())
}

/// Loads the library at `path` (never unloaded) and resolves `names` in it.
///
/// # Safety
/// The library must follow the TVM-FFI ABI and have initialisers that are safe to run.
pub unsafe fn load_functions<const N: usize>(path: &Path, names: [&str; N]) -> Result<[KernelFunction; N], String> {
    // SAFETY: forwarded to the caller.
    let library = unsafe { libloading::Library::new(path) }.map_err(|e| format!("cannot load {path:?}: {e}"))?;
    let library: &'static libloading::Library = Box::leak(Box::new(library));
    let mut out = Vec::with_capacity(N);
    for name in names {
        // SAFETY: forwarded to the caller.
        out.push(unsafe { KernelFunction::resolve(library, path, name) }.map_err(|e| e.to_string())?);
    }
    out.try_into().map_err(|_| "resolved a different number of functions".to_owned())
}

/// Timing statistics of one case.
#[derive(Debug, Clone)]
pub struct Stats {
    /// The case's name.
    pub name: String,
    /// Median time of one run.
    pub median: Duration,
    /// 10th percentile.
    pub p10: Duration,
    /// 90th percentile.
    pub p90: Duration,
}

/// A named piece of work to time.
pub type Case<'a> = (&'a str, Box<dyn FnMut() + 'a>);

/// Times `cases` side by side: `warmup` rounds untimed, then `rounds` rounds, each running
/// every case once in turn (rotating the starting case) so that slow phases of a shared
/// machine hit every case alike. Returns the statistics per case.
pub fn compare(cases: &mut [Case<'_>], warmup: usize, rounds: usize) -> Vec<Stats> {
    let n = cases.len();
    for _ in 0..warmup {
        for (_, run) in cases.iter_mut() {
            run();
        }
    }
    let mut times = vec![Vec::with_capacity(rounds); n];
    for round in 0..rounds {
        for k in 0..n {
            let i = (round + k) % n;
            let start = Instant::now();
            (cases[i].1)();
            times[i].push(black_box(start.elapsed()));
        }
    }
    cases
        .iter()
        .zip(times)
        .map(|((name, _), mut t)| {
            t.sort_unstable();
            let at = |q: f64| t[((t.len() - 1) as f64 * q).round() as usize];
            Stats { name: (*name).to_owned(), median: at(0.5), p10: at(0.1), p90: at(0.9) }
        })
        .collect()
}

/// One line about the machine: CPU model, logical CPUs available, thread overrides and the
/// load average (other work on a shared machine shows there).
pub fn machine() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let rayon = std::env::var("RAYON_NUM_THREADS").map(|n| format!(", RAYON_NUM_THREADS={n}")).unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg")
        .map(|l| format!(", load average {}", l.split_whitespace().take(3).collect::<Vec<_>>().join(" ")))
        .unwrap_or_default();
    format!("{model}, {cpus} logical CPUs available{rayon}{load}")
}
