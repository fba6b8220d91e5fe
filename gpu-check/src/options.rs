//! Command-line options, shared by `gpu-check` and `gpu-check-cuda`.

use std::ffi::OsString;
use std::path::PathBuf;

/// Usage text.
pub const USAGE: &str = "\
usage: gpu-check [OPTIONS] [KERNEL_DIR]

  KERNEL_DIR        a kernel in the Hub layout (holding build/<variant>/) or one variant
                    directory; default: `kernel` next to the executable
  --iters N         timed runs per benchmark (default 200)
  --warmup N        untimed runs before them (default 20)
  --bench-shape RxH rows x hidden size of the benchmarks (default 16384x8192)
  --no-bench        correctness only
  --latency-only    the latency benchmark only (decode and prefill shapes), no other part
  --stable-abi DIR  the torch stable-ABI variant of the same kernels, checked and benchmarked
                    beside the tvm-ffi one; default: `stable-abi-cuda` next to the
                    executable, when it exists
  -h, --help        this text

Environment: KERNELS_TVM_FFI_LIB names libtvm_ffi.so (default: lib/libtvm_ffi.so next to the
executable, else tvm-ffi-config). Exit status: 0 passed, 1 a check failed, 2 could not run.";

/// Parsed options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// The kernel directory, if given.
    pub kernel_dir: Option<PathBuf>,
    /// Timed runs per benchmark.
    pub iters: usize,
    /// Untimed runs first.
    pub warmup: usize,
    /// Rows and hidden size of the benchmarks.
    pub bench_shape: (usize, usize),
    /// Skip the benchmarks.
    pub no_bench: bool,
    /// Run the latency benchmark alone.
    pub latency_only: bool,
    /// The torch stable-ABI kernel directory, if given.
    pub stable_abi_dir: Option<PathBuf>,
    /// Print the usage and exit.
    pub help: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            kernel_dir: None,
            iters: 200,
            warmup: 20,
            bench_shape: (16384, 8192),
            no_bench: false,
            latency_only: false,
            stable_abi_dir: None,
            help: false,
        }
    }
}

impl Options {
    /// Parses the arguments after the program name.
    pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Self, String> {
        let mut options = Options::default();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let text = arg.to_str().map(str::to_owned);
            let mut value = |name: &str| {
                args.next().and_then(|v| v.into_string().ok()).ok_or_else(|| format!("{name} needs a value"))
            };
            match text.as_deref() {
                Some("-h" | "--help") => options.help = true,
                Some("--no-bench") => options.no_bench = true,
                Some("--latency-only") => options.latency_only = true,
                Some("--iters") => options.iters = count("--iters", &value("--iters")?)?,
                Some("--warmup") => {
                    options.warmup = value("--warmup")?.parse().map_err(|_| "--warmup needs a number")?
                }
                Some("--bench-shape") => options.bench_shape = shape(&value("--bench-shape")?)?,
                Some("--stable-abi") => options.stable_abi_dir = Some(PathBuf::from(value("--stable-abi")?)),
                Some(flag) if flag.starts_with('-') => return Err(format!("unknown option {flag}")),
                _ if options.kernel_dir.is_none() => options.kernel_dir = Some(PathBuf::from(arg)),
                _ => return Err(format!("unexpected argument {}", arg.to_string_lossy())),
            }
        }
        if options.latency_only && options.no_bench {
            return Err("--latency-only and --no-bench exclude each other".into());
        }
        Ok(options)
    }

    /// The arguments that reproduce these options (for the CUDA suite).
    pub fn to_args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![
            "--iters".into(),
            self.iters.to_string().into(),
            "--warmup".into(),
            self.warmup.to_string().into(),
            "--bench-shape".into(),
            format!("{}x{}", self.bench_shape.0, self.bench_shape.1).into(),
        ];
        if self.no_bench {
            args.push("--no-bench".into());
        }
        if self.latency_only {
            args.push("--latency-only".into());
        }
        if let Some(dir) = &self.stable_abi_dir {
            args.push("--stable-abi".into());
            args.push(dir.clone().into_os_string());
        }
        if let Some(dir) = &self.kernel_dir {
            args.push(dir.clone().into_os_string());
        }
        args
    }
}

fn count(name: &str, text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{name} needs a positive number, got `{text}`")),
    }
}

fn shape(text: &str) -> Result<(usize, usize), String> {
    let (rows, hidden) = text.split_once('x').ok_or_else(|| format!("--bench-shape takes RxH, got `{text}`"))?;
    let rows = count("--bench-shape rows", rows)?;
    let hidden = count("--bench-shape hidden size", hidden)?;
    if hidden % 2 != 0 {
        return Err(format!("--bench-shape hidden size must be even (silu_and_mul halves it), got {hidden}"));
    }
    Ok((rows, hidden))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Options, String> {
        Options::parse(args.iter().map(OsString::from))
    }

    #[test]
    fn defaults_and_round_trip() {
        assert_eq!(parse(&[]).unwrap(), Options::default());
        let o = parse(&[
            "--iters",
            "7",
            "--warmup",
            "0",
            "--bench-shape",
            "32x64",
            "--no-bench",
            "--stable-abi",
            "sdir",
            "dir",
        ])
        .unwrap();
        assert_eq!((o.iters, o.warmup, o.bench_shape, o.no_bench, o.latency_only), (7, 0, (32, 64), true, false));
        assert_eq!(o.stable_abi_dir, Some(PathBuf::from("sdir")));
        assert_eq!(o.kernel_dir, Some(PathBuf::from("dir")));
        assert_eq!(Options::parse(o.to_args()).unwrap(), o);
        let latency = parse(&["--latency-only", "dir"]).unwrap();
        assert!(latency.latency_only && !latency.no_bench);
        assert_eq!(Options::parse(latency.to_args()).unwrap(), latency);
    }

    #[test]
    fn bad_arguments_say_what_is_wrong() {
        assert_eq!(parse(&["--iters"]).unwrap_err(), "--iters needs a value");
        assert!(parse(&["--iters", "0"]).unwrap_err().contains("positive"));
        assert!(parse(&["--bench-shape", "8x7"]).unwrap_err().contains("even"));
        assert!(parse(&["--bench-shape", "8"]).unwrap_err().contains("RxH"));
        assert_eq!(parse(&["--frobnicate"]).unwrap_err(), "unknown option --frobnicate");
        assert!(parse(&["a", "b"]).unwrap_err().contains("unexpected argument b"));
        assert_eq!(
            parse(&["--no-bench", "--latency-only"]).unwrap_err(),
            "--latency-only and --no-bench exclude each other"
        );
    }
}
