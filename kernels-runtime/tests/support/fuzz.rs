//! A small deterministic mutation fuzzer, on stable Rust, for the readers of untrusted input
//! (`kernels.toml`, `kernels.lock`, `metadata.json`, variant names, ELF headers).
//!
//! It starts from real seed inputs and applies a few random mutations to one of them: bit
//! flips, interesting bytes and integers (`0`, `0xff`, `0x7f`, `u64::MAX`, … at aligned
//! offsets, either byte order), truncation, deletion, duplication, splicing with another seed,
//! and insertion of dictionary tokens (`..`, `/`, `"`, `[`, `=`, NUL, huge numbers, Unicode).
//! The check must not panic and must return `Ok`; a check running longer than the hang limit
//! aborts the process. Either way, the input's seed and bytes are printed (and written under
//! the target's temporary directory), so that the failure can be replayed.
//!
//! Every input is derived from its own 64-bit seed alone, and the seed of the next input from
//! the seed of the previous one, so `KERNELS_FUZZ_SEED=<seed>` replays a failing input first
//! and then the very sequence that followed it.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `KERNELS_FUZZ_SECS` | time budget per target, seconds | `2` |
//! | `KERNELS_FUZZ_ITERS` | at most this many inputs per target | `1000000` |
//! | `KERNELS_FUZZ_SEED` | the first input's seed (decimal or `0x` hex) | from the clock |
//! | `KERNELS_FUZZ_HANG_SECS` | one input taking longer is a hang | `10` |
//!
//! Shared by the `fuzz` tests of kernels-runtime and kernels-build (through `#[path]`).

use std::fmt::Write as _;
use std::panic::{self, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Seconds per target.
pub(crate) const SECS_VAR: &str = "KERNELS_FUZZ_SECS";
/// Inputs per target, at most.
pub(crate) const ITERS_VAR: &str = "KERNELS_FUZZ_ITERS";
/// The first input's seed.
pub(crate) const SEED_VAR: &str = "KERNELS_FUZZ_SEED";
/// Seconds one input may take.
pub(crate) const HANG_VAR: &str = "KERNELS_FUZZ_HANG_SECS";

/// Tokens that break parsers: path pieces, TOML and JSON punctuation, NUL, numbers at and past
/// the integer limits, Unicode that is wide, invisible, combining or reversing.
pub(crate) const COMMON_TOKENS: &[&str] = &[
    "..",
    "../",
    "/",
    "\\",
    "\"",
    "'",
    "\"\"\"",
    "'''",
    "[",
    "]",
    "[[",
    "]]",
    "{",
    "}",
    "=",
    ",",
    ":",
    ".",
    "-",
    "#",
    "\0",
    "\n",
    "\r\n",
    "\t",
    " ",
    "\\u0000",
    "\\uD800",
    "\\U0010FFFF",
    "0",
    "-1",
    "127",
    "255",
    "4294967295",
    "4294967296",
    "9223372036854775807",
    "9223372036854775808",
    "18446744073709551615",
    "18446744073709551616",
    "340282366920938463463374607431768211456",
    "1e999",
    "-0.0",
    "nan",
    "inf",
    "true",
    "null",
    "é",
    "\u{301}",
    "\u{200b}",
    "\u{202e}",
    "\u{fffd}",
    "\u{feff}",
    "\u{1f980}",
    "\u{10ffff}",
];

/// A splitmix64 generator: tiny, fast, and the same sequence everywhere.
#[derive(Debug, Clone)]
pub(crate) struct Rng(u64);

impl Rng {
    pub(crate) fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub(crate) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`; `0` when `n` is `0`.
    pub(crate) fn below(&mut self, n: usize) -> usize {
        if n == 0 { 0 } else { (self.next_u64() % n as u64) as usize }
    }

    /// True once in `n` times.
    pub(crate) fn one_in(&mut self, n: usize) -> bool {
        self.below(n) == 0
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// What to fuzz.
#[derive(Debug)]
pub(crate) struct Target {
    /// Shown in reports and in the names of saved failing inputs.
    pub(crate) name: &'static str,
    /// Real inputs to start from; at least one.
    pub(crate) seeds: Vec<Vec<u8>>,
    /// Target-specific tokens, used next to [`COMMON_TOKENS`].
    pub(crate) tokens: Vec<Vec<u8>>,
    /// Inputs are cut to this many bytes.
    pub(crate) max_len: usize,
}

/// What a run did.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Stats {
    /// Inputs checked (the seeds included).
    pub(crate) executions: u64,
    /// Wall time.
    pub(crate) elapsed: Duration,
}

const INTERESTING_BYTES: [u8; 10] = [0x00, 0x01, 0x7f, 0x80, 0xff, b'\n', b' ', b'"', b'\\', b'-'];

fn interesting_u64(rng: &mut Rng) -> u64 {
    let values = [
        0,
        1,
        u64::MAX,
        u64::MAX - 1,
        u64::MAX - 0xfff,
        i64::MAX as u64,
        1 << 63,
        u64::from(u32::MAX),
        1 << 32,
        u64::from(u16::MAX),
        0x7f,
        0x80,
    ];
    if rng.one_in(4) { rng.next_u64() >> rng.below(64) } else { *rng.pick(&values) }
}

/// A range `start..end` of `len` (empty when `len` is 0), at most `max` long.
fn chunk(rng: &mut Rng, len: usize, max: usize) -> std::ops::Range<usize> {
    let start = rng.below(len + 1);
    let end = start + rng.below((len - start).min(max) + 1);
    start..end
}

fn mutate_once(rng: &mut Rng, data: &mut Vec<u8>, target: &Target) {
    let len = data.len();
    match rng.below(12) {
        // Flip one bit.
        0 if len > 0 => {
            let at = rng.below(len);
            data[at] ^= 1 << rng.below(8);
        }
        // An interesting or random byte.
        1 if len > 0 => {
            let at = rng.below(len);
            data[at] = if rng.one_in(3) { rng.next_u64() as u8 } else { *rng.pick(&INTERESTING_BYTES) };
        }
        // An interesting integer, 2, 4 or 8 bytes wide, at an offset aligned to its width.
        2 | 3 if len >= 2 => {
            let width = *rng.pick(&[2usize, 4, 8]);
            let width = if width > len { 2 } else { width };
            let at = rng.below(len - width + 1) / width * width;
            let low = interesting_u64(rng).to_le_bytes();
            let low = &low[..width];
            if rng.one_in(2) {
                data[at..at + width].copy_from_slice(low);
            } else {
                data[at..at + width].iter_mut().zip(low.iter().rev()).for_each(|(d, b)| *d = *b);
            }
        }
        // Truncate.
        4 => data.truncate(rng.below(len + 1)),
        // Delete a chunk.
        5 => {
            let r = chunk(rng, len, 64);
            data.drain(r);
        }
        // Duplicate a chunk somewhere.
        6 => {
            let r = chunk(rng, len, 256);
            let piece = data[r].to_vec();
            let at = rng.below(data.len() + 1);
            data.splice(at..at, piece);
        }
        // Splice: this input's head, another seed's tail.
        7 => {
            let other = rng.pick(&target.seeds);
            let cut = rng.below(len + 1);
            let from = rng.below(other.len() + 1);
            data.truncate(cut);
            data.extend_from_slice(&other[from..]);
        }
        // Insert a token, sometimes many times over (deep nesting, long runs).
        8 | 9 => {
            let token = pick_token(rng, target);
            let times = if rng.one_in(8) { 1 + rng.below(4096) } else { 1 };
            let at = rng.below(len + 1);
            let insert: Vec<u8> = token.iter().copied().cycle().take(token.len() * times).collect();
            data.splice(at..at, insert);
        }
        // Replace a chunk with a token.
        10 => {
            let token = pick_token(rng, target);
            let r = chunk(rng, len, 16);
            data.splice(r, token);
        }
        // A long decimal number.
        _ => {
            let digits: Vec<u8> = (0..1 + rng.below(48)).map(|_| b'0' + rng.below(10) as u8).collect();
            let at = rng.below(len + 1);
            data.splice(at..at, digits);
        }
    }
}

fn pick_token(rng: &mut Rng, target: &Target) -> Vec<u8> {
    if !target.tokens.is_empty() && rng.one_in(2) {
        rng.pick(&target.tokens).clone()
    } else {
        rng.pick(COMMON_TOKENS).as_bytes().to_vec()
    }
}

/// The input of one seed: a seed input with one to eight mutations.
pub(crate) fn generate(target: &Target, seed: u64) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let mut data = rng.pick(&target.seeds).clone();
    for _ in 0..1 + rng.below(8) {
        mutate_once(&mut rng, &mut data, target);
    }
    data.truncate(target.max_len);
    data
}

fn env_number(var: &str) -> Option<f64> {
    let value = std::env::var(var).ok()?;
    let value = value.trim();
    let parsed = match value.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok().map(|v| v as f64),
        None => value.parse::<f64>().ok(),
    };
    Some(parsed.unwrap_or_else(|| panic!("{var}={value} is not a number")))
}

fn env_seed() -> Option<u64> {
    let value = std::env::var(SEED_VAR).ok()?;
    let value = value.trim();
    let parsed = match value.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => value.parse::<u64>(),
    };
    Some(parsed.unwrap_or_else(|_| panic!("{SEED_VAR}={value} is not a 64-bit number")))
}

/// The input, readable: escaped text when it is UTF-8, a hex dump otherwise; the first 2 KiB
/// (the whole input is saved to a file).
pub(crate) fn render(input: &[u8]) -> String {
    let shown = &input[..input.len().min(2048)];
    let mut out = if std::str::from_utf8(input).is_ok() {
        // A cut through a character shows as U+FFFD at the end.
        format!("{:?}", String::from_utf8_lossy(shown))
    } else {
        let mut hex = String::new();
        for (i, line) in shown.chunks(32).enumerate() {
            let _ = write!(hex, "\n{:08x}:", i * 32);
            for b in line {
                let _ = write!(hex, " {b:02x}");
            }
        }
        hex
    };
    if input.len() > shown.len() {
        let _ = write!(out, "\n… {} more bytes", input.len() - shown.len());
    }
    out
}

fn save(target: &str, seed: u64, input: &[u8]) -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("fuzz-failures");
    std::fs::create_dir_all(&dir).ok()?;
    let path = dir.join(format!("{target}-{seed:#018x}.bin"));
    std::fs::write(&path, input).ok()?;
    Some(path)
}

/// At most 1000 characters of a failure's description.
fn shorten(what: &str) -> String {
    match what.char_indices().nth(1000) {
        Some((cut, _)) => format!("{}… ({} bytes in all)", &what[..cut], what.len()),
        None => what.to_owned(),
    }
}

fn report(target: &str, seed: u64, input: &[u8], what: &str) -> String {
    let what = shorten(what);
    let saved = save(target, seed, input).map_or_else(String::new, |p| format!("\nsaved to {}", p.display()));
    format!(
        "fuzz target `{target}`: {what}\nreplay: {SEED_VAR}={seed:#018x} cargo test --test fuzz {target}\ninput ({} bytes): {}{saved}",
        input.len(),
        render(input)
    )
}

struct Current {
    started: Instant,
    seed: u64,
    input: Vec<u8>,
    running: bool,
}

/// Checks the seeds unchanged, then mutated inputs until the time budget or the input cap is
/// spent. Panics, naming the seed and the input, on the first input whose check panics or
/// returns an error; aborts the process on one that hangs.
pub(crate) fn run(target: &Target, mut check: impl FnMut(&[u8]) -> Result<(), String>) -> Stats {
    assert!(!target.seeds.is_empty(), "fuzz target `{}` has no seeds", target.name);
    let budget = Duration::from_secs_f64(env_number(SECS_VAR).unwrap_or(2.0));
    let max_iters = env_number(ITERS_VAR).map_or(1_000_000, |n| n as u64);
    let hang = Duration::from_secs_f64(env_number(HANG_VAR).unwrap_or(10.0));
    let first_seed = env_seed().unwrap_or_else(|| {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        Rng::new(now.as_nanos() as u64 ^ u64::from(std::process::id())).next_u64()
    });
    eprintln!("fuzz target `{}`: first seed {first_seed:#018x}, {} s", target.name, budget.as_secs_f64());

    let current = Arc::new(Mutex::new(Current { started: Instant::now(), seed: 0, input: Vec::new(), running: false }));
    let done = Arc::new(AtomicBool::new(false));
    let watchdog = {
        let (current, done, name) = (Arc::clone(&current), Arc::clone(&done), target.name);
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(50));
                let c = current.lock().unwrap_or_else(|e| e.into_inner());
                if c.running && c.started.elapsed() > hang {
                    let what = format!("one input ran for more than {} s (a hang)", hang.as_secs_f64());
                    eprintln!("{}", report(name, c.seed, &c.input, &what));
                    std::process::abort();
                }
            }
        })
    };

    let started = Instant::now();
    let mut executions = 0u64;
    let mut next_seed = first_seed;
    let seeds = target.seeds.iter().map(|s| (None, s.clone()));
    let mutated = std::iter::from_fn(|| {
        let seed = next_seed;
        next_seed = Rng::new(seed).next_u64();
        Some((Some(seed), generate(target, seed)))
    });
    for (seed, input) in seeds.chain(mutated) {
        if executions >= max_iters || (seed.is_some() && started.elapsed() >= budget) {
            break;
        }
        {
            let mut c = current.lock().unwrap_or_else(|e| e.into_inner());
            c.started = Instant::now();
            c.seed = seed.unwrap_or(0);
            c.input.clone_from(&input);
            c.running = true;
        }
        let outcome = panic::catch_unwind(AssertUnwindSafe(|| check(&input)));
        current.lock().unwrap_or_else(|e| e.into_inner()).running = false;
        executions += 1;
        let failure = match outcome {
            Ok(Ok(())) => continue,
            Ok(Err(message)) => message,
            Err(payload) => {
                let message = payload
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_default();
                format!("panicked: {message}")
            }
        };
        done.store(true, Ordering::Relaxed);
        let _ = watchdog.join();
        match seed {
            Some(seed) => panic!("{}", report(target.name, seed, &input, &failure)),
            None => panic!(
                "fuzz target `{}`: a seed input fails: {}\ninput: {}",
                target.name,
                shorten(&failure),
                render(&input)
            ),
        }
    }
    done.store(true, Ordering::Relaxed);
    let _ = watchdog.join();
    let stats = Stats { executions, elapsed: started.elapsed() };
    eprintln!(
        "fuzz target `{}`: {} executions in {:.1} s, no failures",
        target.name,
        stats.executions,
        stats.elapsed.as_secs_f64()
    );
    stats
}
