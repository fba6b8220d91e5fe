//! `cargo kernels`: the command-line face of kernels-rs.
//!
//! ```text
//! cargo kernels init [DIR] [--kernel REPO | --path KERNEL_DIR] [--layer NAME] [--function NAME] [--force]
//!                                                         a kernels.toml and build.rs starter (or a whole crate)
//! cargo kernels explain [--manifest-path PATH] [--json]  each layer mapping: its kernel's source, and what runs here
//! cargo kernels lock [--manifest-path PATH] [--update | --check] [--json]   pin kernels.toml's Hub kernels in kernels.lock
//! cargo kernels download [--manifest-path PATH] [--target TRIPLE] [--json]   prefetch the pinned variants
//! cargo kernels verify [--manifest-path PATH] [--target TRIPLE] [--json]     check cached variants against the lock
//! cargo kernels platform [VARIANT[:ARCHS]...] [--json]    what this machine offers, and what would be chosen
//! cargo kernels variants REPO [--version N | --revision R] [--target TRIPLE] [--json]
//!                                                         a Hub repo's variants, and which this machine would choose
//! cargo kernels package CRATE_DIR [--out DIR] [--target TRIPLE]  a Rust kernel crate as a Hub-layout variant
//! ```
//!
//! For example, `cargo kernels variants kernels-community/activation --version 1` lists the
//! variants of Hub branch `v1`, each with its verdict on this machine and why, then the variant
//! chosen for each device; `--target aarch64-unknown-linux-gnu` says instead which of them a
//! build for that target embeds.

mod explain;
mod fetched;
mod init;
mod variants;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use kernels_build::cuda_runtime;
use kernels_build::env::Env;
use kernels_build::hub::{Hub, HubSettings};
use kernels_build::lock::{LOCK_FILE, Lock, RuntimePin};
use kernels_build::manifest::{MANIFEST_FILE, Manifest, Requested};
use kernels_build::resolve;
use kernels_build::target::TargetSpec;
use kernels_runtime::env::{CUDART_LIB, HF_ENDPOINT, HF_HOME, HF_HUB_CACHE, HF_HUB_OFFLINE, HF_TOKEN};
use kernels_runtime::platform::Platform;
use kernels_runtime::select::{Candidate, select};

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
usage: cargo kernels <command> [options]

commands:
  init [DIR] [--kernel REPO | --path KERNEL_DIR] [--layer NAME] [--function NAME] [--force]
            start using kernels-rs in the crate in DIR (default: the current directory): write
            kernels.toml (one kernel: the Hub repo REPO at version 1, default
            kernels-community/activation, or the local kernel directory or crate KERNEL_DIR; and
            [layers.NAME] mapping cpu and cuda to its FUNCTION, default SiluAndMul and
            silu_and_mul, each key commented) and build.rs, then print what to add to Cargo.toml
            and the crate root. Where DIR holds no Cargo.toml (or does not exist), make a whole
            crate there: also Cargo.toml (named after DIR) and src/main.rs with a kernelized
            layer on HostTensors, ready for `cargo build`. Never overwrites a file unless --force
            e.g. cargo kernels init --kernel kernels-community/activation
  explain [--json]
            for every layer mapping of kernels.toml: the kernel, function, capability, mode and
            determinism, where the kernel comes from (Hub repo@commit from kernels.lock, or its
            path), and on this machine, from local files only, the variant the real selection
            chooses for each device present, with its trace, or why the layer falls back; a
            device kind absent here is said to be.
            e.g. cargo kernels explain --manifest-path app/kernels.toml
            --json prints { manifest, lock, lock_stale,
            platform, mappings: [{ layer, device, key, location, kernel, function, capability,
            mode, deterministic, source: { type: hub, repo, requested, commit } or { type: path,
            path, layout }, variants, notes, present, absent, decisions: [{ device, chosen,
            runs_kernel, outcome, trace }] }] }, one mapping per layer, device and entry
  lock [--update | --check] [--json]
            resolve kernels.toml's Hub kernels and write kernels.lock (keeps unchanged pins;
            --update re-resolves every kernel; --check only checks, offline, that kernels.lock
            matches kernels.toml: exit status 1 when it is missing or out of date, for CI).
            Files it downloads show a progress bar on stderr when that is a terminal.
            e.g. cargo kernels lock --check --json
            --check --json prints { manifest, lock, fresh (bool), state (fresh, missing or
            out of date), changes: [what differs], fix (the command, or null) }
            --json prints { manifest, lock, written (bool), kernels: [{ kernel, repo,
            requested: { version } or { revision }, commit, variants: [{ variant, files,
            bytes }] }], tvm_ffi, cuda_runtime: { file, sha256, bytes, source } or null }
  download [--target TRIPLE] [--json]
            fetch the pinned variants the target can run into the Hugging Face cache, each
            file checked against kernels.lock (a progress bar per file on stderr when that is
            a terminal); variants intact in the cache are not fetched again.
            e.g. cargo kernels download --target aarch64-unknown-linux-gnu
            --json prints { target, cache, summary: { variants, fetched, cached, bytes },
            variants: [{ kernel, repo, commit, variant, status (fetched or cached), dir, bytes,
            files: [{ file, path, bytes, sha256 }] }] }
  verify [--target TRIPLE] [--json]
            check, offline, that the cached variants match kernels.lock byte for byte (each
            pinned file's sha256 and size, then the variant's metadata.json digest); names each
            missing or mismatching file and exits 1; changes nothing (`download` repairs).
            e.g. cargo kernels verify
            --json prints { target, cache, ok (bool), summary: { variants, variants_failed,
            files, ok, mismatch, missing }, variants: [{ kernel, variant, status (ok or failed),
            error }], files: [{ kernel, repo, commit, variant, file, path, status (ok, mismatch
            or missing), expected_sha256, actual_sha256, expected_size, actual_size, error }] }
  platform [VARIANT[:ARCHS]...] [--json]
            print the detected platform and, for each device present, which of the given
            variant names (default: a sample of real ones) would be selected and why (ARCHS:
            backend.archs, e.g. 8.0,9.0+PTX)
            e.g. cargo kernels platform tvm-ffi01-cu130-x86_64-linux:8.0,9.0 --json
            --json prints { platform, sample (bool: no names given), devices: [{ device (cpu,
            cuda:0, ...), platform (the facts that mattered), chosen (a name or null),
            variants: [{ name, archs, verdict (chosen, accepted or rejected), reason }] }] }
  describe PATH|REPO [--version N | --revision R] [--target TRIPLE] [--json]
            what a kernel library offers, read from its ELF file without loading it: the
            functions a tvm-ffi library exports, or what a torch stable-ABI library imports
            and whether this runtime can serve it. PATH: a library, a variant directory, or
            a Hub layout (its build/<variant>/ directories). REPO (`org/name`, not a path
            here): the variants of that Hub kernel a build for the target embeds, fetched
            into the cache and verified first (default: newest v<N> branch, else main)
            e.g. cargo kernels describe hub/build/tvm-ffi01-cpu-x86_64-linux --json
            e.g. cargo kernels describe kernels-community/relu --version 1
            --json prints [{ library, variant, needed, abi (tvm-ffi, torch stable-ABI or
            unknown), functions | shim_functions, aten_ops, servable, why_not | error }]
  package CRATE_DIR [--out DIR]
            compile a Rust kernel crate (cdylib exporting the TVM-FFI ABI) for the target and
            lay it out as the Hub does: DIR/build/tvm-ffi01-cpu-<arch>-<os>/ holding <id>.so
            (symbols stripped), __init__.py and _ops.py (the Python package that Python's
            `kernels` imports: it loads the library with tvm_ffi.load_module) and metadata.json
            (default DIR: CRATE_DIR/hub; the build's files go to the crate's cargo target directory,
            under kernels-package/)
            e.g. cargo kernels package examples/kernels/rust-cpu --out hub
  variants REPO [--version N | --revision R] [--target TRIPLE] [--json]
            every variant the Hub kernel repo REPO (org/name) publishes, whether this runtime
            can load it, and its verdict with the reason: on this machine, from the real
            selection for each device present (the CPU, and CUDA, ROCm, XPU or Metal devices
            when detected; each variant judged by the device of its backend), then the variant
            chosen per device; with --target, whether a build for TRIPLE embeds it.
            Revision: --version N (Hub branch vN) or --revision R (branch, tag or commit);
            neither: the newest vN branch, else main.
            e.g. cargo kernels variants kernels-community/activation --version 1
            --json prints one object: { repo, revision, version (N or null), commit,
            variants: [{ name, loadable (bool), device (cpu, cuda:0, ...; with --target the
            backend; null for names without one), verdict (chosen, accepted or rejected),
            reason }], and on this machine platform and devices: [{ device, platform, chosen
            (a name or null) }]; with --target, target and embedded: [names] }

options:
  --manifest-path PATH  kernels.toml to use (default: ./kernels.toml)
  --target TRIPLE       target to download/verify/package for (default: this machine's)
  --version N           `variants`, `describe REPO`: Hub branch vN
  --revision R          `variants`, `describe REPO`: a branch, tag or commit (not with --version)
  --json                every command but `init` and `package`: print one JSON object on
                        stdout (messages stay on stderr)
  -h, --help            print this text (also `cargo kernels help`)
  --kernel REPO         `init`: the Hub kernel repo to declare (default kernels-community/activation)
  --path KERNEL_DIR     `init`: a local kernel instead (a Hub layout or a Rust kernel crate)
  --layer NAME          `init`: the layer to map (default SiluAndMul)
  --function NAME       `init`: the function the kernel exports for it (default silu_and_mul)
  --force               `init`: overwrite existing files

exit status: 0 done; 1 failed (Hub or network error, unknown repo or version, a file that does
not match kernels.lock), or `lock --check` found the lock stale; 2 bad usage

environment: ";

/// The usage text, with the variables the Hub commands read.
fn usage() -> String {
    format!("{USAGE}{}", [HF_ENDPOINT, HF_TOKEN, HF_HOME, HF_HUB_CACHE, HF_HUB_OFFLINE].join(", "))
}

/// The options after the command, as given.
#[derive(Debug, Clone, PartialEq)]
struct Options {
    manifest: PathBuf,
    /// `--target`; [`Options::target`] gives this machine's when it is not set.
    target: Option<String>,
    update: bool,
    check: bool,
    json: bool,
    out: Option<PathBuf>,
    /// `--version N` or `--revision R`, never both.
    requested: Option<Requested>,
    /// `init --kernel REPO`.
    kernel: Option<String>,
    /// `init --path KERNEL_DIR`.
    kernel_path: Option<PathBuf>,
    /// `init --layer NAME`.
    layer: Option<String>,
    /// `init --function NAME`.
    function: Option<String>,
    /// `init --force`.
    force: bool,
    /// `init --path-deps WORKSPACE` (hidden, for tests): depend on a checkout by path.
    path_deps: Option<PathBuf>,
    rest: Vec<String>,
}

impl Options {
    /// The target triple: `--target`, else this machine's.
    fn target(&self) -> String {
        self.target.clone().unwrap_or_else(host_triple)
    }
}

fn parse_options(args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        manifest: PathBuf::from(MANIFEST_FILE),
        target: None,
        update: false,
        check: false,
        json: false,
        out: None,
        requested: None,
        kernel: None,
        kernel_path: None,
        layer: None,
        function: None,
        force: false,
        path_deps: None,
        rest: Vec::new(),
    };
    let mut version = None;
    let mut revision = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--manifest-path" => o.manifest = it.next().ok_or("--manifest-path needs a path")?.into(),
            "--kernel" => o.kernel = Some(it.next().ok_or("--kernel needs a Hub repo id, org/name")?.clone()),
            "--path" => o.kernel_path = Some(it.next().ok_or("--path needs a kernel directory")?.into()),
            "--layer" => o.layer = Some(it.next().ok_or("--layer needs a layer name")?.clone()),
            "--function" => o.function = Some(it.next().ok_or("--function needs a function name")?.clone()),
            "--force" => o.force = true,
            "--path-deps" => o.path_deps = Some(it.next().ok_or("--path-deps needs a directory")?.into()),
            "--target" => o.target = Some(it.next().ok_or("--target needs a triple")?.clone()),
            "--version" => {
                let v = it.next().ok_or("--version needs a major version, e.g. `--version 1` for Hub branch v1")?;
                let n = v.strip_prefix('v').unwrap_or(v);
                let parsed = n.bytes().all(|b| b.is_ascii_digit()).then(|| n.parse::<u64>().ok()).flatten();
                version = Some(parsed.ok_or_else(|| {
                    format!("--version {v:?}: give the major version as a number, e.g. `--version 1` for Hub branch v1")
                })?);
            }
            "--revision" => {
                let r = it.next().ok_or("--revision needs a branch, tag or commit")?;
                if r.is_empty() || r.starts_with('-') || r.chars().any(|c| c.is_whitespace() || c.is_control()) {
                    return Err(format!("--revision {r:?}: give a branch, tag or commit, without spaces"));
                }
                revision = Some(r.clone());
            }
            "--update" => o.update = true,
            "--check" => o.check = true,
            "--json" => o.json = true,
            "--out" => o.out = Some(it.next().ok_or("--out needs a directory")?.into()),
            s if s.starts_with("--") => return Err(format!("unknown option `{s}`")),
            s => o.rest.push(s.to_owned()),
        }
    }
    o.requested = match (version, revision) {
        (Some(_), Some(_)) => {
            return Err("--version and --revision are exclusive: ask for a major version (Hub branch v<N>) \
                        or for one branch, tag or commit, not both"
                .into());
        }
        (Some(v), None) => Some(Requested::Version(v)),
        (None, Some(r)) => Some(Requested::Revision(r)),
        (None, None) => None,
    };
    Ok(o)
}

/// What `init` was asked: at most one DIR, and `--kernel` or `--path`, not both.
fn init_query(o: &Options) -> Result<init::Init, String> {
    let dir = match &o.rest[..] {
        [] => PathBuf::from("."),
        [dir] => PathBuf::from(dir),
        more => return Err(format!("init takes at most one DIR, got {}", more.join(" "))),
    };
    let kernel = match (&o.kernel, &o.kernel_path) {
        (Some(_), Some(_)) => {
            return Err("--kernel and --path are exclusive: the starter declares one kernel, \
                        from the Hub (--kernel org/name) or from a directory (--path DIR)"
                .into());
        }
        (Some(repo), None) => init::KernelFrom::Hub(repo.clone()),
        (None, Some(path)) => init::KernelFrom::Path(path.clone()),
        (None, None) => init::KernelFrom::Hub(init::DEFAULT_REPO.to_owned()),
    };
    let path_deps = match &o.path_deps {
        Some(p) => Some(p.canonicalize().map_err(|e| format!("--path-deps {}: {e}", p.display()))?),
        None => None,
    };
    Ok(init::Init {
        dir,
        kernel,
        layer: o.layer.clone().unwrap_or_else(|| init::DEFAULT_LAYER.to_owned()),
        function: o.function.clone().unwrap_or_else(|| init::DEFAULT_FUNCTION.to_owned()),
        force: o.force,
        path_deps,
    })
}

/// What `variants` was asked, checked before any network use: exactly one REPO of the form
/// `org/name`, and a target kernel variants exist for.
fn variants_query(o: &Options) -> Result<variants::Query, String> {
    let [repo] = &o.rest[..] else {
        return Err(format!(
            "variants needs exactly one REPO (a Hub kernel repo id, `org/name`), got {}",
            if o.rest.is_empty() { "none".to_owned() } else { o.rest.join(" ") }
        ));
    };
    let plain = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    if !repo.split_once('/').is_some_and(|(org, name)| plain(org) && plain(name)) {
        return Err(format!("`{repo}` is not a Hub repo id: give it as `org/name`, e.g. kernels-community/activation"));
    }
    let target = match &o.target {
        Some(t) => Some(TargetSpec::new(t, None).map_err(|e| format!("--target: {e}"))?),
        None => None,
    };
    Ok(variants::Query { repo: repo.clone(), requested: o.requested.clone(), target, json: o.json })
}

fn host_triple() -> String {
    let arch = std::env::consts::ARCH;
    match std::env::consts::OS {
        "linux" => format!("{arch}-unknown-linux-gnu"),
        "macos" => format!("{arch}-apple-darwin"),
        "windows" => format!("{arch}-pc-windows-msvc"),
        other => format!("{arch}-unknown-{other}"),
    }
}

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    // Invoked as `cargo kernels …`, cargo passes `kernels` first.
    if args.first().map(String::as_str) == Some("kernels") {
        args.remove(0);
    }
    let Some(command) = args.first().cloned() else {
        eprintln!("{}", usage());
        return ExitCode::from(2);
    };
    // `--help` or `-h` anywhere asks for the usage, whatever else is given.
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{}", usage());
        return ExitCode::SUCCESS;
    }
    let options = match parse_options(&args[1..]) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("error: {e}\n\n{}", usage());
            return ExitCode::from(2);
        }
    };
    if options.json && matches!(command.as_str(), "init" | "package") {
        eprintln!("error: `{command}` has no --json output\n\n{}", usage());
        return ExitCode::from(2);
    }
    let result = match command.as_str() {
        "lock" => lock(&options),
        "download" => download(&options, false),
        "verify" => download(&options, true),
        "package" => package(&options),
        "init" => match init_query(&options) {
            Ok(query) => init::run(&query),
            Err(e) => {
                eprintln!("error: {e}\n\n{}", usage());
                return ExitCode::from(2);
            }
        },
        "explain" => explain::run(&options.manifest, options.json),
        "describe" => describe(&options),
        "variants" => match variants_query(&options) {
            Ok(query) => variants::run(&query, &mut hub()),
            Err(e) => {
                eprintln!("error: {e}\n\n{}", usage());
                return ExitCode::from(2);
            }
        },
        "platform" => platform(&options.rest, options.json),
        "-h" | "--help" | "help" => {
            println!("{}", usage());
            Ok(())
        }
        other => Err(format!("unknown command `{other}`\n\n{}", usage())),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Prints `value` on stdout, pretty: the one object a `--json` command answers with. A reader
/// that stops early (`| head`) is no failure.
pub(crate) fn print_json(value: &serde_json::Value) -> Result<(), String> {
    use std::io::Write;
    let text = serde_json::to_string_pretty(value).map_err(|e| e.to_string())?;
    match writeln!(std::io::stdout().lock(), "{text}") {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(format!("stdout: {e}")),
        _ => Ok(()),
    }
}

fn read_manifest(path: &Path) -> Result<Manifest, String> {
    Manifest::from_path(path).map_err(|errs| errs.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))
}

fn lock_path(manifest: &Path) -> PathBuf {
    manifest.parent().unwrap_or(Path::new(".")).join(LOCK_FILE)
}

fn hub() -> Hub {
    Hub::new(HubSettings::from_env(&Env::process()))
}

/// `lock --check`: whether `kernels.lock` matches `kernels.toml`, without the network. With
/// `json`, one object on stdout says so either way.
fn check_lock(manifest_path: &Path, json: bool) -> Result<(), String> {
    let manifest = read_manifest(manifest_path)?;
    let path = lock_path(manifest_path);
    let lock = Lock::read(&path).map_err(|e| e.to_string())?;
    let checked = Lock::check(&path, lock.as_ref(), &manifest);
    if json {
        let (state, changes): (&str, Vec<String>) = match &checked {
            Ok(()) => ("fresh", Vec::new()),
            Err(stale) => (stale.state(), stale.changes.iter().map(ToString::to_string).collect()),
        };
        let value = serde_json::json!({
            "manifest": manifest_path.display().to_string(),
            "lock": path.display().to_string(),
            "fresh": checked.is_ok(),
            "state": state,
            "changes": changes,
            "fix": if checked.is_ok() { None } else { Some("cargo kernels lock") },
        });
        print_json(&value)?;
    }
    checked.map_err(|e| e.to_string())?;
    eprintln!("{} is up to date", path.display());
    Ok(())
}

fn lock(o: &Options) -> Result<(), String> {
    if o.check {
        return check_lock(&o.manifest, o.json);
    }
    let manifest = read_manifest(&o.manifest)?;
    let path = lock_path(&o.manifest);
    let old = Lock::read(&path).map_err(|e| e.to_string())?;
    let mut new = resolve::relock(&manifest, old.as_ref(), &mut fetched::with_bars(hub()), o.update, |k| {
        eprintln!("  locked {} ({} @ {}) at {}", k.name, k.repo, k.requested, k.commit);
    })
    .map_err(|e| e.to_string())?;
    // Pin the tvm-ffi runtime library this machine builds against, when there is one.
    if let Ok(lib) = kernels_runtime::ffi::locate_tvm_ffi() {
        let bytes = std::fs::read(&lib).map_err(|e| format!("{}: {e}", lib.display()))?;
        let source = tvm_ffi_source(&lib);
        new.tvm_ffi = Some(RuntimePin {
            file: kernels_runtime::ffi::TVM_FFI_LIBRARY.to_owned(),
            sha256: kernels_runtime::digest::sha256_hex(&bytes),
            size: bytes.len() as u64,
            source,
        });
    }
    pin_cuda_runtime(&mut new, &Env::process())?;
    let text = new.render();
    let unchanged = std::fs::read_to_string(&path).is_ok_and(|t| t == text);
    if !unchanged {
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    eprintln!("{} {}", if unchanged { "unchanged" } else { "wrote" }, path.display());
    if o.json {
        print_json(&lock_json(&o.manifest, &path, &new, !unchanged))?;
    }
    Ok(())
}

/// What `lock --json` prints: the lock just made, and whether the file changed.
fn lock_json(manifest: &Path, path: &Path, lock: &Lock, written: bool) -> serde_json::Value {
    let pin = |p: &Option<RuntimePin>| {
        p.as_ref()
            .map(|p| serde_json::json!({ "file": p.file, "sha256": p.sha256, "bytes": p.size, "source": p.source }))
    };
    let kernels: Vec<serde_json::Value> = lock
        .kernels
        .iter()
        .map(|k| {
            let requested = match &k.requested {
                Requested::Version(v) => serde_json::json!({ "version": v }),
                Requested::Revision(r) => serde_json::json!({ "revision": r }),
            };
            let variants: Vec<serde_json::Value> = k
                .variants
                .iter()
                .map(|v| {
                    let bytes: u64 = v.files.iter().map(|f| f.size).sum();
                    serde_json::json!({ "variant": v.name, "files": v.files.len(), "bytes": bytes })
                })
                .collect();
            serde_json::json!({
                "kernel": k.name,
                "repo": k.repo,
                "requested": requested,
                "commit": k.commit,
                "variants": variants,
            })
        })
        .collect();
    serde_json::json!({
        "manifest": manifest.display().to_string(),
        "lock": path.display().to_string(),
        "written": written,
        "kernels": kernels,
        "tvm_ffi": pin(&lock.tvm_ffi),
        "cuda_runtime": pin(&lock.cuda_runtime),
    })
}

/// Pins in `lock.cuda_runtime` the CUDA runtime its variants link (torch stable-ABI variants for
/// CUDA link `libcudart.so.<major>`): the newest soname needed that this machine has, found as
/// the build finds it. None is pinned when no variant needs one; when none is found, the old
/// pin stays.
fn pin_cuda_runtime(lock: &mut Lock, env: &Env) -> Result<(), String> {
    let mut needed: Vec<String> = lock
        .kernels
        .iter()
        .flat_map(|k| &k.variants)
        .filter_map(|v| cuda_runtime::variant_cuda_runtime(&v.name))
        .collect();
    needed.sort_by_key(|soname| cuda_runtime::major(soname));
    needed.dedup();
    if needed.is_empty() {
        lock.cuda_runtime = None;
        return Ok(());
    }
    let Some((soname, lib)) =
        needed.iter().rev().find_map(|soname| cuda_runtime::locate(env, soname).map(|lib| (soname, lib)))
    else {
        eprintln!(
            "  no {} found to pin (set {CUDART_LIB} or CUDA_HOME, or install the nvidia-cuda-runtime wheel)",
            needed.join(" or ")
        );
        return Ok(());
    };
    let bytes = std::fs::read(&lib).map_err(|e| format!("{}: {e}", lib.display()))?;
    lock.cuda_runtime = Some(RuntimePin {
        file: soname.clone(),
        sha256: kernels_runtime::digest::sha256_hex(&bytes),
        size: bytes.len() as u64,
        source: cuda_runtime::source(&lib, soname),
    });
    Ok(())
}

/// Where `lib` came from, for the lock's `[tvm-ffi].source`: `apache-tvm-ffi==<version>` when
/// it is the library of an installed `apache-tvm-ffi` wheel (`<site-packages>/tvm_ffi/lib/`, with
/// the wheel's `apache_tvm_ffi-<version>.dist-info` beside `tvm_ffi/`), else its path. (The
/// wheel's `tvm-ffi-config` has no `--version`.)
fn tvm_ffi_source(lib: &Path) -> String {
    let version = lib.parent().and_then(Path::parent).and_then(Path::parent).and_then(|site| {
        let entries = std::fs::read_dir(site).ok()?;
        entries.filter_map(Result::ok).find_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let version = name.strip_prefix("apache_tvm_ffi-")?.strip_suffix(".dist-info")?;
            let valid = version.starts_with(|c: char| c.is_ascii_digit())
                && version.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '+');
            valid.then(|| version.to_owned())
        })
    });
    let in_wheel = lib.parent().is_some_and(|d| d.ends_with("tvm_ffi/lib"));
    match version {
        Some(v) if in_wheel => format!("apache-tvm-ffi=={v}"),
        _ => lib.display().to_string(),
    }
}

fn download(o: &Options, verify_only: bool) -> Result<(), String> {
    let manifest = read_manifest(&o.manifest)?;
    let path = lock_path(&o.manifest);
    let lock = Lock::read(&path).map_err(|e| e.to_string())?;
    Lock::check(&path, lock.as_ref(), &manifest).map_err(|e| e.to_string())?;
    let lock = lock.unwrap_or_default();
    let spec = TargetSpec::new(&o.target(), manifest.build.backends.as_deref()).map_err(|e| e.to_string())?;
    let variants: Vec<_> = lock
        .kernels
        .iter()
        .flat_map(|k| k.variants.iter().filter(|v| spec.wants(&v.name).is_ok()).map(move |v| (k, v)))
        .collect();
    if verify_only {
        let mut hub = hub().offline_because("`cargo kernels verify` reads the cache only");
        fetched::verify(&mut hub, &variants, &spec.triple, &spec.os, o.json)
    } else {
        let mut hub = fetched::with_bars(hub());
        fetched::download(&mut hub, &variants, &spec.triple, &spec.os, o.json)
    }
}

/// The libraries of the variants of Hub kernel `repo` that a build for the target embeds, at
/// the version or revision asked for (default: the newest `v<N>`, else `main`): each variant's
/// files fetched into the cache (or found intact there) and verified against its digest first.
fn hub_libraries(o: &Options, repo: &str) -> Result<Vec<(Option<String>, PathBuf)>, String> {
    let query = variants_query(o)?;
    let spec = TargetSpec::new(&o.target(), None).map_err(|e| format!("--target: {e}"))?;
    let mut hub = fetched::with_bars(hub());
    let resolved = variants::resolve(&query, &mut hub)?;
    let name = repo.rsplit('/').next().unwrap_or(repo);
    let kernel = resolve::resolve(&mut hub, name, repo, &Requested::Revision(resolved.commit.clone()))
        .map_err(|e| e.to_string())?;
    eprintln!("{repo} at {} ({})", resolved.revision, kernel.commit);
    let mut out = Vec::new();
    for variant in kernel.variants.iter().filter(|v| spec.wants(&v.name).is_ok()) {
        let verified = kernels_build::verify::hub_variant(&mut hub, repo, &kernel.commit, variant, &spec.os)
            .map_err(|e| format!("{repo}, variant {}: {e}", variant.name))?;
        out.extend(libraries_under(&verified.dir)?.into_iter().map(|(_, lib)| (Some(variant.name.clone()), lib)));
    }
    if out.is_empty() {
        return Err(format!(
            "{repo} at {} has no variant a build for {} embeds (see `cargo kernels variants {repo} --target {}`)",
            resolved.revision, spec.triple, spec.triple
        ));
    }
    Ok(out)
}

/// The libraries under `path`: itself if a file, the `.so` files of a variant directory, or
/// those of every `build/<variant>/` of a Hub layout; each with its variant's name.
fn libraries_under(path: &Path) -> Result<Vec<(Option<String>, PathBuf)>, String> {
    let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
    if meta.is_file() {
        let variant = path
            .parent()
            .map(kernels_runtime::variant::dir_name)
            .filter(|d| kernels_runtime::variant::VariantName::parse(d).is_ok());
        return Ok(vec![(variant, path.to_owned())]);
    }
    let list = |dir: &Path| -> Result<Vec<PathBuf>, String> {
        let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .collect();
        entries.sort();
        Ok(entries)
    };
    let variant_dirs = if path.join("build").is_dir() {
        list(&path.join("build"))?.into_iter().filter(|d| d.is_dir()).collect()
    } else {
        vec![path.to_owned()]
    };
    let mut out = Vec::new();
    for dir in variant_dirs {
        let variant = kernels_runtime::variant::dir_name(&dir);
        for lib in list(&dir)?.into_iter().filter(|p| p.is_file() && p.extension().is_some_and(|e| e == "so")) {
            out.push((Some(variant.clone()), lib));
        }
    }
    if out.is_empty() {
        return Err(format!("{}: no kernel library (*.so) there, nor in build/<variant>/", path.display()));
    }
    Ok(out)
}

/// What `describe` says of one library.
fn describe_library(variant: Option<String>, lib: &Path) -> serde_json::Value {
    use serde_json::json;
    let symbols = match kernels_runtime::ffi::dynamic_symbols(lib) {
        Ok(s) => s,
        Err(e) => return json!({ "library": lib.display().to_string(), "variant": variant, "error": e.to_string() }),
    };
    let needed = kernels_runtime::ffi::needed_libraries(lib).unwrap_or_default();
    let mut functions: Vec<&str> = symbols
        .defined_functions()
        .filter_map(|n| n.strip_prefix(kernels_runtime::ffi::abi::symbol::FUNCTION_PREFIX))
        .collect();
    functions.sort_unstable();
    let imports_shim =
        symbols.undefined.iter().any(|s| s.name.starts_with("aoti_torch_") || s.name.starts_with("torch_"));
    let mut value = json!({
        "library": lib.display().to_string(),
        "variant": variant,
        "needed": needed,
    });
    if !functions.is_empty() {
        value["abi"] = json!("tvm-ffi");
        value["functions"] = json!(functions);
    } else if imports_shim {
        value["abi"] = json!("torch stable-ABI");
        match kernels_runtime::torch_stable_abi::check_library(lib) {
            Ok(l) => {
                value["shim_functions"] = json!(l.shim_functions.len());
                value["aten_ops"] = json!(l.aten_ops);
                value["servable"] = json!(true);
            }
            Err(e) => {
                value["servable"] = json!(false);
                value["why_not"] = json!(e.to_string());
            }
        }
    } else {
        value["abi"] = json!("unknown");
    }
    value
}

fn describe(o: &Options) -> Result<(), String> {
    let [what] = &o.rest[..] else {
        return Err("describe needs exactly one PATH or Hub REPO".into());
    };
    let path = Path::new(what);
    let libraries = if !path.exists() && what.split('/').count() == 2 && !what.starts_with('.') {
        hub_libraries(o, what)?
    } else {
        libraries_under(path)?
    };
    let described: Vec<serde_json::Value> = libraries.into_iter().map(|(v, lib)| describe_library(v, &lib)).collect();
    if o.json {
        print_json(&serde_json::Value::from(described))?;
        return Ok(());
    }
    for d in &described {
        let text = |k: &str| d[k].as_str().unwrap_or("-").to_owned();
        println!("{} ({})", text("library"), d["variant"].as_str().unwrap_or("variant unknown"));
        if let Some(e) = d["error"].as_str() {
            println!("  cannot be read: {e}");
            continue;
        }
        println!("  abi:       {}", text("abi"));
        let list = |k: &str| {
            d[k].as_array()
                .map(|a| a.iter().filter_map(|v| v.as_str()).collect::<Vec<_>>().join(", "))
                .unwrap_or_default()
        };
        println!("  needs:     {}", list("needed"));
        match d["abi"].as_str() {
            Some("tvm-ffi") => println!("  functions: {}", list("functions")),
            Some(_) if d["servable"] == serde_json::json!(true) => println!(
                "  imports {} shim functions, calls ATen ops [{}]: this runtime serves it (its ops are registered when it loads)",
                d["shim_functions"],
                list("aten_ops")
            ),
            Some(_) if d["servable"] == serde_json::json!(false) => println!("  not servable: {}", text("why_not")),
            _ => println!("  exports no tvm-ffi function and imports no torch shim function"),
        }
    }
    Ok(())
}

fn package(o: &Options) -> Result<(), String> {
    let [crate_dir] = &o.rest[..] else {
        return Err("package needs exactly one CRATE_DIR".into());
    };
    let crate_dir = PathBuf::from(crate_dir);
    let canonical = crate_dir.canonicalize().map_err(|e| format!("{}: {e}", crate_dir.display()))?;
    let name =
        Some(kernels_runtime::variant::dir_name(&canonical)).filter(|n| !n.is_empty()).unwrap_or("kernel".into());
    let out = o.out.clone().unwrap_or_else(|| crate_dir.join("hub"));
    let env = Env::process();
    let mut cargo_lines = kernels_build::env::CargoOutput::default();
    // The build's own files go where cargo puts the crate's (its workspace's target directory,
    // or CARGO_TARGET_DIR), never into the output.
    let target_dir = cargo_target_dir(&crate_dir).join("kernels-package");
    let lib = kernels_build::local::build_crate_stripped(&crate_dir, &o.target(), &target_dir, &env, &mut cargo_lines)
        .map_err(|e| e.to_string())?;
    let variant = kernels_build::local::cpu_variant_for(&o.target()).map_err(|e| e.to_string())?;
    let bytes = std::fs::read(&lib).map_err(|e| format!("{}: {e}", lib.display()))?;
    let id = kernels_build::local::variant_id(&name, &bytes);
    let file_name = format!("{id}.{}", lib.extension().and_then(|e| e.to_str()).unwrap_or("so"));
    let functions = exported_functions(&lib)?;
    let files = python_package(&name, &file_name, &functions);
    let dir = kernels_build::local::lay_out_with_files(&lib, &name, "Apache-2.0", &variant, &out, &files)
        .map_err(|e| e.to_string())?;
    println!("{}", dir.display());
    Ok(())
}

/// Where cargo builds the crate in `crate_dir` (`cargo metadata`'s `target_directory`), else
/// `crate_dir/target`.
fn cargo_target_dir(crate_dir: &Path) -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    std::process::Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--no-deps", "--offline", "--manifest-path"])
        .arg(crate_dir.join("Cargo.toml"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| serde_json::from_slice::<serde_json::Value>(&o.stdout).ok())
        .and_then(|m| m["target_directory"].as_str().map(PathBuf::from))
        .unwrap_or_else(|| crate_dir.join("target"))
}

/// The functions a tvm-ffi library exports (`__tvm_ffi_<name>`), sorted.
fn exported_functions(lib: &Path) -> Result<Vec<String>, String> {
    let symbols = kernels_runtime::ffi::dynamic_symbols(lib).map_err(|e| format!("{}: {e}", lib.display()))?;
    let mut functions: Vec<String> = symbols
        .defined_functions()
        .filter_map(|n| n.strip_prefix(kernels_runtime::ffi::abi::symbol::FUNCTION_PREFIX))
        .map(str::to_owned)
        .collect();
    functions.sort_unstable();
    functions.dedup();
    Ok(functions)
}

/// Python's keywords, which cannot name a module attribute in `name = …` form.
const PYTHON_KEYWORDS: &[&str] = &[
    "False", "None", "True", "and", "as", "assert", "async", "await", "break", "class", "continue", "def", "del",
    "elif", "else", "except", "finally", "for", "from", "global", "if", "import", "in", "is", "lambda", "nonlocal",
    "not", "or", "pass", "raise", "return", "try", "while", "with", "yield",
];

/// The Python package of a tvm-ffi variant, as kernel-builder lays one out: `_ops.py` loads the
/// library next to it with `tvm_ffi.load_module`, and `__init__.py` exposes its functions (those
/// whose names are Python identifiers; every one stays reachable as `ops["name"]`).
fn python_package(name: &str, library_file: &str, functions: &[String]) -> Vec<(String, Vec<u8>)> {
    let identifier = |f: &&String| {
        f.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && f.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !PYTHON_KEYWORDS.contains(&f.as_str())
    };
    let exposed: Vec<&String> = functions.iter().filter(identifier).collect();
    let mut init = format!(
        "\"\"\"{name}: a kernel written in Rust, packaged by `cargo kernels package`.\n\n\
         Its functions come from the library through tvm-ffi, as in kernel-builder's tvm-ffi variants.\n\
         Pass tensors the way tvm-ffi takes them (torch tensors, or `tvm_ffi.from_dlpack(array)`).\n\"\"\"\n\n\
         from ._ops import ops\n\n"
    );
    for f in &exposed {
        init.push_str(&format!("{f} = ops[\"{f}\"]\n"));
    }
    let all: Vec<String> = exposed.iter().map(|f| format!("\"{f}\"")).collect();
    init.push_str(&format!("\n__all__ = [{}]\n", all.join(", ")));
    let ops = format!(
        "\"\"\"Loads this variant's kernel library through tvm-ffi.\"\"\"\n\n\
         from pathlib import Path\n\n\
         import tvm_ffi\n\n\
         ops = tvm_ffi.load_module(Path(__file__).parent / \"{library_file}\")\n"
    );
    vec![("__init__.py".to_owned(), init.into_bytes()), ("_ops.py".to_owned(), ops.into_bytes())]
}

fn platform(names: &[String], json: bool) -> Result<(), String> {
    let platform = Platform::detect();
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
    let traces: Vec<_> = variants::requests(&platform)
        .into_iter()
        .map(|request| select(&platform, request, &candidates).trace)
        .collect();
    if json {
        let devices: Vec<serde_json::Value> = traces
            .iter()
            .map(|t| {
                let judged: Vec<serde_json::Value> = candidates
                    .iter()
                    .map(|c| {
                        let (verdict, reason) = variants::verdict_of(t, &c.name);
                        serde_json::json!({ "name": c.name, "archs": c.archs, "verdict": verdict, "reason": reason })
                    })
                    .collect();
                serde_json::json!({
                    "device": variants::device_label(t.request),
                    "platform": t.platform,
                    "chosen": t.chosen(),
                    "variants": judged,
                })
            })
            .collect();
        let value = serde_json::json!({
            "platform": platform.to_string(),
            "sample": names.is_empty(),
            "devices": devices,
        });
        print_json(&value)?;
        return Ok(());
    }
    println!("{platform}\n");
    for trace in &traces {
        println!("{trace}\n");
    }
    Ok(())
}

#[cfg(test)]
#[path = "../../kernels-runtime/tests/support/tiny_elf.rs"]
mod tiny_elf;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tvm_ffi_source_names_the_wheel_release() {
        let dir = tempfile::tempdir().unwrap();
        let site = dir.path().join("site-packages");
        let lib = site.join("tvm_ffi/lib/libtvm_ffi.so");
        std::fs::create_dir_all(lib.parent().unwrap()).unwrap();
        std::fs::write(&lib, b"").unwrap();
        // No dist-info: the path.
        assert_eq!(tvm_ffi_source(&lib), lib.display().to_string());
        std::fs::create_dir_all(site.join("apache_tvm_ffi-0.1.15.post2.dist-info")).unwrap();
        assert_eq!(tvm_ffi_source(&lib), "apache-tvm-ffi==0.1.15.post2");
        // A library elsewhere is named by its path, whatever sits two levels up.
        let other = site.join("elsewhere/lib/libtvm_ffi.so");
        assert_eq!(tvm_ffi_source(&other), other.display().to_string());
    }

    #[test]
    fn the_cuda_runtime_is_pinned_when_a_locked_variant_links_it() {
        use kernels_build::lock::{ResolvedKernel, ResolvedVariant};
        use kernels_build::manifest::Requested;

        let dir = tempfile::tempdir().unwrap();
        let lib = dir.path().join("libcudart.so.13");
        std::fs::write(&lib, b"cudart").unwrap();
        let env = Env::fixed([(CUDART_LIB, dir.path())]);
        let variant = |name: &str| ResolvedVariant { name: name.into(), files: vec![] };
        let mut lock = Lock {
            kernels: vec![ResolvedKernel {
                name: "ops".into(),
                repo: "org/ops".into(),
                requested: Requested::Version(1),
                commit: "c".repeat(40),
                variants: vec![
                    variant("torch-stable-abi211-cpu-x86_64-linux"),
                    variant("tvm-ffi01-cu130-x86_64-linux"),
                ],
            }],
            ..Lock::default()
        };
        // No variant links it: nothing is pinned, and an old pin goes.
        lock.cuda_runtime = Some(RuntimePin { file: "x".into(), sha256: "0".repeat(64), size: 0, source: "x".into() });
        pin_cuda_runtime(&mut lock, &env).unwrap();
        assert_eq!(lock.cuda_runtime, None);
        // A CUDA torch stable-ABI variant links libcudart.so.13: pinned under its soname.
        lock.kernels[0].variants.push(variant("torch-stable-abi211-cu130-x86_64-linux"));
        pin_cuda_runtime(&mut lock, &env).unwrap();
        let pin = lock.cuda_runtime.clone().expect("a [cuda-runtime] pin");
        assert_eq!(
            pin,
            RuntimePin {
                file: "libcudart.so.13".into(),
                sha256: kernels_runtime::digest::sha256_hex(b"cudart"),
                size: 6,
                source: lib.display().to_string(),
            }
        );
        assert!(lock.render().contains("\n[cuda-runtime]\nfile = \"libcudart.so.13\"\n"), "{}", lock.render());
        // Not found here: the old pin stays.
        let nowhere = Env::fixed([(CUDART_LIB, dir.path().join("no"))]);
        pin_cuda_runtime(&mut lock, &nowhere).unwrap();
        assert_eq!(lock.cuda_runtime, Some(pin));
    }

    #[test]
    fn describe_lists_the_exported_functions_without_loading() {
        use tiny_elf::{Hash, Sym, TinyElf};
        let dir = tempfile::tempdir().unwrap();
        let variant = dir.path().join("build/tvm-ffi01-cpu-x86_64-linux");
        std::fs::create_dir_all(&variant).unwrap();
        let symbols = [Sym::func("__tvm_ffi_rms_norm"), Sym::func("__tvm_ffi_silu_and_mul"), Sym::func("helper")];
        let bytes = TinyElf::new(true, true).needed(&["libtvm_ffi.so"]).symbols(&symbols, Hash::Gnu).build().bytes;
        std::fs::write(variant.join("_ops_cpu_abc1234.so"), bytes).unwrap();
        std::fs::write(variant.join("metadata.json"), "{}").unwrap();

        let found = libraries_under(dir.path()).unwrap();
        assert_eq!(found.len(), 1);
        let d = describe_library(found[0].0.clone(), &found[0].1);
        assert_eq!(d["variant"], "tvm-ffi01-cpu-x86_64-linux");
        assert_eq!(d["abi"], "tvm-ffi");
        assert_eq!(d["functions"], serde_json::json!(["rms_norm", "silu_and_mul"]));
        assert_eq!(d["needed"], serde_json::json!(["libtvm_ffi.so"]));
        // The variant directory and the file itself give the same.
        assert_eq!(libraries_under(&variant).unwrap(), found);
        assert_eq!(libraries_under(&found[0].1).unwrap(), found);
        let err = libraries_under(&dir.path().join("build")).unwrap_err();
        assert!(err.contains("no kernel library"), "{err}");
    }

    #[test]
    fn lock_check_reports_a_stale_lock() {
        let dir = tempfile::tempdir().unwrap();
        let manifest = dir.path().join("kernels.toml");
        std::fs::write(&manifest, "").unwrap();
        std::fs::write(
            dir.path().join("kernels.lock"),
            "version = 1\n\n[[kernel]]\nname = \"act\"\nrepo = \"org/act\"\nrequested-version = 1\n\
             commit = \"0123456789abcdef0123456789abcdef01234567\"\n",
        )
        .unwrap();
        let err = check_lock(&manifest, false).unwrap_err();
        assert!(err.contains("out of date") && err.contains("cargo kernels lock"), "{err}");
        std::fs::write(dir.path().join("kernels.lock"), Lock::default().render()).unwrap();
        check_lock(&manifest, false).unwrap();
        assert!(parse_options(&["--check".into()]).unwrap().check);
    }

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|a| (*a).to_owned()).collect()
    }

    #[test]
    fn version_and_revision_are_parsed_and_exclusive() {
        assert_eq!(parse_options(&args(&["org/k"])).unwrap().requested, None);
        assert_eq!(parse_options(&args(&["--version", "3"])).unwrap().requested, Some(Requested::Version(3)));
        assert_eq!(parse_options(&args(&["--version", "v2"])).unwrap().requested, Some(Requested::Version(2)));
        assert_eq!(
            parse_options(&args(&["--revision", "main"])).unwrap().requested,
            Some(Requested::Revision("main".into()))
        );
        for bad in [&["--version"][..], &["--version", "one"], &["--version", "-1"], &["--version", "1.2"]] {
            let err = parse_options(&args(bad)).unwrap_err();
            assert!(err.contains("--version") && err.contains("Hub branch v1"), "{bad:?}: {err}");
        }
        for bad in [&["--revision"][..], &["--revision", ""], &["--revision", "a b"], &["--revision", "--json"]] {
            let err = parse_options(&args(bad)).unwrap_err();
            assert!(err.contains("--revision"), "{bad:?}: {err}");
        }
        let err = parse_options(&args(&["--version", "1", "--revision", "main"])).unwrap_err();
        assert!(err.contains("exclusive"), "{err}");
        let err = parse_options(&args(&["--revision", "main", "--version", "1"])).unwrap_err();
        assert!(err.contains("exclusive"), "{err}");
    }

    #[test]
    fn init_takes_one_dir_and_one_kernel() {
        let query = |list: &[&str]| init_query(&parse_options(&args(list)).unwrap());
        let q = query(&[]).unwrap();
        assert_eq!(q.dir, PathBuf::from("."));
        assert_eq!(q.kernel, init::KernelFrom::Hub(init::DEFAULT_REPO.into()));
        assert_eq!((q.layer.as_str(), q.function.as_str(), q.force), ("SiluAndMul", "silu_and_mul", false));
        let q = query(&["app", "--path", "k", "--layer", "RMSNorm", "--function", "rms_norm", "--force"]).unwrap();
        assert_eq!(q.dir, PathBuf::from("app"));
        assert_eq!(q.kernel, init::KernelFrom::Path("k".into()));
        assert_eq!((q.layer.as_str(), q.function.as_str(), q.force), ("RMSNorm", "rms_norm", true));
        assert!(query(&["a", "b"]).unwrap_err().contains("at most one DIR"));
        assert!(query(&["--kernel", "o/k", "--path", "k"]).unwrap_err().contains("exclusive"));
        assert!(query(&["--path-deps", "/no/such/dir"]).unwrap_err().starts_with("--path-deps /no/such/dir"));
    }

    #[test]
    fn the_target_defaults_to_this_machine() {
        let o = parse_options(&[]).unwrap();
        assert_eq!(o.target, None);
        assert_eq!(o.target(), host_triple());
        let o = parse_options(&args(&["--target", "aarch64-unknown-linux-gnu"])).unwrap();
        assert_eq!(o.target(), "aarch64-unknown-linux-gnu");
    }

    #[test]
    fn variants_takes_one_repo_id_and_a_known_target() {
        let query = |list: &[&str]| variants_query(&parse_options(&args(list)).unwrap());
        let q = query(&["org/k", "--revision", "v1.0.0", "--json"]).unwrap();
        assert_eq!(q.repo, "org/k");
        assert_eq!(q.requested, Some(Requested::Revision("v1.0.0".into())));
        assert!(q.json && q.target.is_none());
        let q = query(&["org/k", "--target", "aarch64-unknown-linux-gnu"]).unwrap();
        assert_eq!(q.target.map(|t| t.triple), Some("aarch64-unknown-linux-gnu".to_owned()));
        assert!(query(&[]).unwrap_err().contains("exactly one REPO"));
        assert!(query(&["org/a", "org/b"]).unwrap_err().contains("org/a org/b"));
        for bad in ["org", "org/", "/k", "org/k/extra", "org/k k"] {
            let err = query(&[bad]).unwrap_err();
            assert!(err.contains(bad) && err.contains("org/name"), "{bad}: {err}");
        }
        let err = query(&["org/k", "--target", "riscv64gc-unknown-none-elf"]).unwrap_err();
        assert!(err.starts_with("--target:") && err.contains("riscv64gc"), "{err}");
    }

    #[test]
    fn the_installed_wheel_is_named_by_its_release() {
        // The pinned wheel that scripts/tvm-ffi-env.sh installs, when the tests run with it.
        let Some(lib) = kernels_runtime::env::path(kernels_runtime::env::TVM_FFI_LIB) else { return };
        if !lib.is_file() {
            return;
        }
        let source = tvm_ffi_source(&lib);
        assert!(source.starts_with("apache-tvm-ffi==0."), "{source}");
    }
}
