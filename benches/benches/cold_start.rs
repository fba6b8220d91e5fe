//! Cold start: what kernels add to a process that calls each kernelized layer once.
//!
//! Runs one already built binary (by default the demo's `--once 1024` mode: each of its three
//! layers called once on `[1 × 1024]` f32 on the CPU) as separate processes, many times, the
//! cases interleaved and rotated each round so that load on a shared machine hits them alike:
//!
//! - `fresh`: kernels on, libraries unpacked to files (`KERNELS_UNPACK=file`) in a new, empty
//!   unpack directory (`KERNELS_RS_CACHE`) every run: the first start after an install;
//! - `warm`: the same, with an unpack directory filled by an earlier run;
//! - `memfd`: kernels on, the default unpacking (a sealed memfd per library, every run);
//! - `off`: `DISABLE_KERNEL_MAPPING=1`: every layer uses its Rust forward.
//!
//! Each time is from `spawn` to the end of `wait`. Prints medians, p10–p90 and, per case, the
//! median over rounds of (case − off) in the same round, in ms. `--bin` may be given more than
//! once (before and after a change): every binary runs every case once per round.
//!
//! `--breakdown LIB` instead times, in this process, the steps a first kernel call on the CPU
//! takes on the kernel library `LIB`: platform detection, sha256, unpacking to a fresh and to a
//! warm directory, the ELF reads and `dlopen` (and the sha256 of `KERNELS_TVM_FFI_LIB`, if set).
//! Builds nothing itself:
//!
//! ```sh
//! cargo build --release -p kernels-demo
//! cargo bench -p kernels-benches --bench cold_start [-- --rounds N --bin PATH… -- ARGS…]
//! cargo bench -p kernels-benches --bench cold_start -- --breakdown LIB [--rounds N]
//! ```

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Variables that change what the measured binary does with kernels; each case sets its own.
const CLEARED: [&str; 6] = [
    "KERNELS_UNPACK",
    "KERNELS_RS_CACHE",
    "DISABLE_KERNEL_MAPPING",
    "KERNELS_DISABLE",
    "KERNELS_VERIFY",
    "KERNELS_STRICT",
];

#[derive(Clone, Copy, PartialEq, Eq)]
enum Case {
    Fresh,
    Warm,
    Memfd,
    Off,
}

impl Case {
    const ALL: [Case; 4] = [Case::Fresh, Case::Warm, Case::Memfd, Case::Off];

    fn name(self) -> &'static str {
        match self {
            Case::Fresh => "kernels on, fresh unpack dir (file)",
            Case::Warm => "kernels on, warm unpack dir (file)",
            Case::Memfd => "kernels on, memfd (default)",
            Case::Off => "kernels off (DISABLE_KERNEL_MAPPING=1)",
        }
    }
}

struct Options {
    /// The binaries compared (`--bin`, repeatable: e.g. before and after a change).
    bins: Vec<PathBuf>,
    args: Vec<String>,
    rounds: usize,
    warmup: usize,
    /// `--breakdown LIB`: time the steps of loading this kernel library in this process.
    breakdown: Option<PathBuf>,
}

fn default_bin() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("target"));
    target.join("release").join("kernels-demo")
}

fn parse() -> Result<Options, String> {
    let mut o = Options {
        bins: Vec::new(),
        args: vec!["--once".into(), "1024".into()],
        rounds: 40,
        warmup: 3,
        breakdown: None,
    };
    let mut args = std::env::args().skip(1);
    let mut custom_args = None;
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--bin" => o.bins.push(PathBuf::from(value()?)),
            "--breakdown" => o.breakdown = Some(PathBuf::from(value()?)),
            "--rounds" => o.rounds = value()?.parse().map_err(|e| format!("--rounds: {e}"))?,
            "--warmup" => o.warmup = value()?.parse().map_err(|e| format!("--warmup: {e}"))?,
            // `cargo bench` passes this to every bench target.
            "--bench" => {}
            "--" => {
                custom_args = Some(args.by_ref().collect());
                break;
            }
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    if let Some(a) = custom_args {
        o.args = a;
    }
    // The warm case needs one earlier run to fill its directory.
    o.warmup = o.warmup.max(1);
    if o.rounds == 0 {
        return Err("--rounds must be at least 1".into());
    }
    if o.bins.is_empty() {
        o.bins.push(default_bin());
    }
    for bin in &o.bins {
        if !bin.is_file() {
            return Err(format!(
                "{} does not exist: build it first (`cargo build --release -p kernels-demo`) or pass --bin",
                bin.display()
            ));
        }
    }
    Ok(o)
}

/// One run of the binary in `case`; its wall time to the end of the process.
fn run_once(o: &Options, bin: &Path, case: Case, scratch: &Path, run: usize) -> Result<Duration, String> {
    let mut cmd = Command::new(bin);
    cmd.args(&o.args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    for name in CLEARED {
        cmd.env_remove(name);
    }
    match case {
        Case::Fresh => {
            cmd.env("KERNELS_UNPACK", "file").env("KERNELS_RS_CACHE", scratch.join(format!("fresh-{run}")));
        }
        Case::Warm => {
            cmd.env("KERNELS_UNPACK", "file").env("KERNELS_RS_CACHE", scratch.join(format!("warm-{}", bin_id(o, bin))));
        }
        Case::Memfd => {}
        Case::Off => {
            cmd.env("DISABLE_KERNEL_MAPPING", "1");
        }
    }
    let start = Instant::now();
    let child = cmd.spawn().map_err(|e| format!("{}: {e}", bin.display()))?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let elapsed = start.elapsed();
    if !out.status.success() {
        return Err(format!(
            "{} ({}) exited with {}: {}",
            bin.display(),
            case.name(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    if case == Case::Fresh {
        // Keep the scratch directory small; the next fresh run gets a new name anyway.
        let _ = std::fs::remove_dir_all(scratch.join(format!("fresh-{run}")));
    }
    Ok(elapsed)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn bin_id(o: &Options, bin: &Path) -> usize {
    o.bins.iter().position(|b| b == bin).unwrap_or(0)
}

fn main() {
    let o = match parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("cold_start: {e}");
            std::process::exit(2);
        }
    };
    if let Some(lib) = &o.breakdown {
        breakdown::run(lib, o.rounds);
        return;
    }
    let scratch = tempdir();
    // times[bin][case]
    let mut times: Vec<Vec<Vec<f64>>> = vec![vec![Vec::new(); Case::ALL.len()]; o.bins.len()];
    let runs: Vec<(usize, usize)> = (0..o.bins.len()).flat_map(|b| (0..Case::ALL.len()).map(move |c| (b, c))).collect();
    let mut run = 0;
    let result = (|| -> Result<(), String> {
        for round in 0..o.warmup + o.rounds {
            for k in 0..runs.len() {
                let (b, c) = runs[(round + k) % runs.len()];
                run += 1;
                let t = run_once(&o, &o.bins[b], Case::ALL[c], &scratch, run)?;
                if round >= o.warmup {
                    times[b][c].push(t.as_secs_f64() * 1e3);
                }
            }
        }
        Ok(())
    })();
    let _ = std::fs::remove_dir_all(&scratch);
    if let Err(e) = result {
        eprintln!("cold_start: {e}");
        std::process::exit(1);
    }
    let off = Case::ALL.iter().position(|c| *c == Case::Off).unwrap_or(0);
    println!(
        "cold start of `<bin> {}`: {} rounds (after {} warm-up), every (binary, case) once per round, \
         rotated; time from spawn to exit, ms",
        o.args.join(" "),
        o.rounds,
        o.warmup
    );
    println!("| binary | case | median | p10 – p90 | median − off | median of paired (case − off) | ratio to off |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    for (b, bin) in o.bins.iter().enumerate() {
        let off_sorted = sorted(&times[b][off]);
        let off_median = percentile(&off_sorted, 0.5);
        for (i, case) in Case::ALL.iter().enumerate() {
            let s = sorted(&times[b][i]);
            let paired: Vec<f64> = times[b][i].iter().zip(&times[b][off]).map(|(a, b)| a - b).collect();
            let m = percentile(&s, 0.5);
            println!(
                "| {} | {} | {:.2} | {:.2} – {:.2} | {:+.2} | {:+.2} | {:.2} |",
                bin.file_name().map_or_else(|| bin.display().to_string(), |n| n.to_string_lossy().into_owned()),
                case.name(),
                m,
                percentile(&s, 0.1),
                percentile(&s, 0.9),
                m - off_median,
                percentile(&sorted(&paired), 0.5),
                m / off_median
            );
        }
    }
}

fn sorted(v: &[f64]) -> Vec<f64> {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    s
}

/// A new private scratch directory under the system's temp dir.
fn tempdir() -> PathBuf {
    use std::os::unix::fs::DirBuilderExt;
    let base = std::env::temp_dir();
    for n in 0u32.. {
        let dir = base.join(format!("kernels-cold-start-{}-{n}", std::process::id()));
        if std::fs::DirBuilder::new().mode(0o700).create(&dir).is_ok() {
            return dir;
        }
    }
    unreachable!()
}

/// In-process timings of the steps a first kernel call on the CPU takes, on one library file.
mod breakdown {
    use std::path::Path;
    use std::time::Instant;

    use kernels_runtime::digest::sha256_hex;
    use kernels_runtime::platform::Platform;
    use kernels_runtime::registry::EmbeddedFile;
    use kernels_runtime::variant::BackendKind;

    use super::{percentile, sorted, tempdir};

    /// Median and p90 of `rounds` runs of `f`, in ms.
    fn time(rounds: usize, mut f: impl FnMut(usize)) -> (f64, f64) {
        let mut t = Vec::with_capacity(rounds);
        for i in 0..rounds {
            let start = Instant::now();
            f(i);
            t.push(start.elapsed().as_secs_f64() * 1e3);
        }
        let s = sorted(&t);
        (percentile(&s, 0.5), percentile(&s, 0.9))
    }

    fn row(step: &str, (median, p90): (f64, f64)) {
        println!("| {step} | {median:.3} | {p90:.3} |");
    }

    pub(super) fn run(lib: &Path, rounds: usize) {
        let bytes: &'static [u8] = Box::leak(std::fs::read(lib).expect("the library").into_boxed_slice());
        let sha: &'static str = Box::leak(sha256_hex(bytes).into_boxed_str());
        let file = EmbeddedFile { path: "kernel.so", sha256: sha, bytes };
        let scratch = tempdir();
        println!(
            "steps of a first kernel call on the CPU, in this process, {rounds} rounds each; {} ({} bytes); ms",
            lib.display(),
            bytes.len()
        );
        println!("| step | median | p90 |");
        println!("|---|---:|---:|");
        row(
            "platform: Platform::detect_for(Cpu) (now)",
            time(rounds, |_| drop(Platform::detect_for(BackendKind::Cpu))),
        );
        row("platform: Platform::detect() (every probe; before)", time(rounds, |_| drop(Platform::detect())));
        row("sha256 of the library (in memory)", time(rounds, |_| drop(sha256_hex(bytes))));
        if let Some(tvm) = kernels_runtime::env::path(kernels_runtime::env::TVM_FFI_LIB) {
            let tvm_bytes = std::fs::read(&tvm).expect("KERNELS_TVM_FFI_LIB");
            row(
                &format!("sha256 of libtvm_ffi.so ({} bytes)", tvm_bytes.len()),
                time(rounds, |_| drop(sha256_hex(&tvm_bytes))),
            );
        }
        let fresh = |i: usize| scratch.join(format!("fresh-{i}"));
        row(
            "unpack to a fresh dir: verify, write, fsync, rename",
            time(rounds, |i| drop(kernels_runtime::loader::unpack(&file, &fresh(i)).expect("unpack"))),
        );
        let warm = scratch.join("warm");
        kernels_runtime::loader::unpack(&file, &warm).expect("unpack");
        row(
            "unpack, warm dir: open and hash the copy",
            time(rounds, |_| drop(kernels_runtime::loader::unpack(&file, &warm).expect("unpack"))),
        );
        let copy = |i: usize| fresh(i).join(format!("{sha}.so"));
        row(
            "ELF: needs_tvm_ffi + needed_libraries",
            time(rounds, |i| {
                kernels_runtime::ffi::needs_tvm_ffi(&copy(i)).expect("ELF");
                kernels_runtime::ffi::needed_libraries(&copy(i)).expect("ELF");
            }),
        );
        row(
            "dlopen (RTLD_NOW | RTLD_LOCAL, initialisers), a fresh copy each",
            time(rounds, |i| {
                // SAFETY: the library is the example kernel the demo loads; it is never unloaded.
                let lib = unsafe { libloading::os::unix::Library::open(Some(copy(i)), libc_flags()).expect("dlopen") };
                std::mem::forget(lib);
            }),
        );
        let _ = std::fs::remove_dir_all(&scratch);
    }

    fn libc_flags() -> i32 {
        libloading::os::unix::RTLD_NOW | libloading::os::unix::RTLD_LOCAL
    }
}
