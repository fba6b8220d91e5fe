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
//! median over rounds of (case − off) in the same round, in ms. Builds nothing itself:
//!
//! ```sh
//! cargo build --release -p kernels-demo
//! cargo bench -p kernels-benches --bench cold_start [-- --rounds N --bin PATH -- ARGS…]
//! ```

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Variables that change what the measured binary does with kernels; each case sets its own.
const CLEARED: [&str; 6] =
    ["KERNELS_UNPACK", "KERNELS_RS_CACHE", "DISABLE_KERNEL_MAPPING", "KERNELS_DISABLE", "KERNELS_VERIFY", "KERNELS_STRICT"];

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
    bin: PathBuf,
    args: Vec<String>,
    rounds: usize,
    warmup: usize,
}

fn default_bin() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("target"));
    target.join("release").join("kernels-demo")
}

fn parse() -> Result<Options, String> {
    let mut o = Options { bin: default_bin(), args: vec!["--once".into(), "1024".into()], rounds: 40, warmup: 3 };
    let mut args = std::env::args().skip(1);
    let mut custom_args = None;
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--bin" => o.bin = PathBuf::from(value()?),
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
    if !o.bin.is_file() {
        return Err(format!(
            "{} does not exist: build it first (`cargo build --release -p kernels-demo`) or pass --bin",
            o.bin.display()
        ));
    }
    Ok(o)
}

/// One run of the binary in `case`; its wall time to the end of the process.
fn run_once(o: &Options, case: Case, scratch: &Path, run: usize) -> Result<Duration, String> {
    let mut cmd = Command::new(&o.bin);
    cmd.args(&o.args).stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    for name in CLEARED {
        cmd.env_remove(name);
    }
    match case {
        Case::Fresh => {
            cmd.env("KERNELS_UNPACK", "file").env("KERNELS_RS_CACHE", scratch.join(format!("fresh-{run}")));
        }
        Case::Warm => {
            cmd.env("KERNELS_UNPACK", "file").env("KERNELS_RS_CACHE", scratch.join("warm"));
        }
        Case::Memfd => {}
        Case::Off => {
            cmd.env("DISABLE_KERNEL_MAPPING", "1");
        }
    }
    let start = Instant::now();
    let child = cmd.spawn().map_err(|e| format!("{}: {e}", o.bin.display()))?;
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    let elapsed = start.elapsed();
    if !out.status.success() {
        return Err(format!("{} ({}) exited with {}: {}", o.bin.display(), case.name(), out.status, String::from_utf8_lossy(&out.stderr)));
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

fn main() {
    let o = match parse() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("cold_start: {e}");
            std::process::exit(2);
        }
    };
    let scratch = tempdir();
    let mut times: Vec<Vec<f64>> = vec![Vec::new(); Case::ALL.len()];
    let mut run = 0;
    let result = (|| -> Result<(), String> {
        for round in 0..o.warmup + o.rounds {
            for k in 0..Case::ALL.len() {
                let i = (round + k) % Case::ALL.len();
                run += 1;
                let t = run_once(&o, Case::ALL[i], &scratch, run)?;
                if round >= o.warmup {
                    times[i].push(t.as_secs_f64() * 1e3);
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
        "cold start of `{} {}`: {} rounds (after {} warm-up), cases interleaved; ms",
        o.bin.display(),
        o.args.join(" "),
        o.rounds,
        o.warmup
    );
    println!("| case | median | p10 – p90 | median − off | median of paired (case − off) | ratio to off |");
    println!("|---|---:|---:|---:|---:|---:|");
    let med = |v: &[f64]| {
        let mut s = v.to_vec();
        s.sort_by(f64::total_cmp);
        s
    };
    let off_sorted = med(&times[off]);
    let off_median = percentile(&off_sorted, 0.5);
    for (i, case) in Case::ALL.iter().enumerate() {
        let sorted = med(&times[i]);
        let paired: Vec<f64> = times[i].iter().zip(&times[off]).map(|(a, b)| a - b).collect();
        let paired = med(&paired);
        let m = percentile(&sorted, 0.5);
        println!(
            "| {} | {:.1} | {:.1} – {:.1} | {:+.1} | {:+.1} | {:.3} |",
            case.name(),
            m,
            percentile(&sorted, 0.1),
            percentile(&sorted, 0.9),
            m - off_median,
            percentile(&paired, 0.5),
            m / off_median
        );
    }
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
