//! `cargo kernels init [DIR]`: a starter for a crate that uses kernels-rs.
//!
//! In a crate (DIR holds a `Cargo.toml`) it writes `kernels.toml` and `build.rs`, then prints
//! what to paste into `Cargo.toml` and the crate root. Elsewhere (DIR missing, or without a
//! `Cargo.toml`) it makes a whole crate in DIR: `Cargo.toml`, `src/main.rs` with one
//! kernelized layer on [`HostTensor`]s, `kernels.toml` and `build.rs`. It never overwrites a
//! file unless asked to (`--force`).
//!
//! [`HostTensor`]: kernels_runtime::dispatch::HostTensor

use std::path::{Component, Path, PathBuf};

/// The Git repository the crates are depended on from (they are not on crates.io yet).
const GIT: &str = "https://github.com/kernels-rs/kernels-rs";

/// What `cargo kernels init` was asked.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Init {
    /// The crate's directory.
    pub(crate) dir: PathBuf,
    /// Where the kernel comes from.
    pub(crate) kernel: KernelFrom,
    /// The layer mapped (`[layers.<layer>]`, `#[kernelize(layer = "…")]`).
    pub(crate) layer: String,
    /// The function the kernel exports for it.
    pub(crate) function: String,
    /// Overwrite existing files.
    pub(crate) force: bool,
    /// Depend on a checkout of this workspace by `path` instead of by git.
    pub(crate) path_deps: Option<PathBuf>,
}

/// The kernel `init` declares.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum KernelFrom {
    /// A Hub repo, `org/name`, at major version 1.
    Hub(String),
    /// A local Hub-layout directory or kernel crate.
    Path(PathBuf),
}

/// The default kernel repo, layer and function.
pub(crate) const DEFAULT_REPO: &str = "kernels-community/activation";
pub(crate) const DEFAULT_LAYER: &str = "SiluAndMul";
pub(crate) const DEFAULT_FUNCTION: &str = "silu_and_mul";

/// Whether `name` is a Rust identifier made of ASCII letters, digits and `_`, not starting
/// with a digit.
fn is_identifier(name: &str) -> bool {
    name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name != "_"
}

/// Checks `name` as a Cargo package name: ASCII letters, digits, `-` and `_`, starting with a
/// letter, and not a name Cargo reserves.
fn check_package_name(name: &str) -> Result<(), String> {
    const RESERVED: &[&str] = &["test", "core", "std", "alloc", "proc_macro", "proc-macro", "build", "deps"];
    if !name.starts_with(|c: char| c.is_ascii_alphabetic())
        || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(format!(
            "`{name}` is not a valid package name (ASCII letters, digits, `-` and `_`, starting with a letter)"
        ));
    }
    if RESERVED.contains(&name) {
        return Err(format!("`{name}` is a name Cargo reserves"));
    }
    Ok(())
}

/// The local name of the kernel in `[kernels.<name>]`: the repo's or directory's name, with
/// characters a bare TOML key cannot hold replaced by `-`.
fn kernel_name(kernel: &KernelFrom) -> String {
    let raw = match kernel {
        KernelFrom::Hub(repo) => repo.rsplit('/').next().unwrap_or(repo).to_owned(),
        KernelFrom::Path(p) => kernels_runtime::variant::dir_name(p),
    };
    let name: String =
        raw.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '_' { c } else { '-' }).collect();
    let name = name.trim_matches('-');
    if name.is_empty() { "kernel".to_owned() } else { name.to_owned() }
}

/// `to` relative to `from` (both absolute), with `..` where needed; `to` itself when they
/// share nothing below the root.
fn relative(from: &Path, to: &Path) -> PathBuf {
    let from: Vec<Component<'_>> = from.components().collect();
    let to: Vec<Component<'_>> = to.components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    if common <= 1 {
        return to.iter().collect();
    }
    let mut out = PathBuf::new();
    for _ in common..from.len() {
        out.push("..");
    }
    for c in &to[common..] {
        out.push(c);
    }
    if out.as_os_str().is_empty() { PathBuf::from(".") } else { out }
}

/// A TOML basic string holding `s`.
fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The `kernels.toml` for `init`, `kernel_path` being the `path` as written (relative to it).
fn kernels_toml(init: &Init, kernel_path: Option<&Path>) -> String {
    let name = kernel_name(&init.kernel);
    let (layer, function) = (&init.layer, &init.function);
    let source = match (&init.kernel, kernel_path) {
        (KernelFrom::Path(_), Some(p)) => format!(
            "# path: a Hub-layout directory (build/<variant>/), or a Rust kernel crate to compile;\n\
             # relative to this file.\n\
             path = {}\n",
            toml_string(&p.to_string_lossy())
        ),
        (KernelFrom::Hub(_), _) | (KernelFrom::Path(_), None) => {
            let repo = match &init.kernel {
                KernelFrom::Hub(repo) => repo.as_str(),
                KernelFrom::Path(_) => DEFAULT_REPO,
            };
            format!(
                "# repo: the Hub kernel repo, org/name; version: its major version, Hub branch v<N>\n\
                 # (or revision = \"<branch|tag|commit>\" instead of version).\n\
                 repo = {}\n\
                 version = 1\n",
                toml_string(repo)
            )
        }
    };
    format!(
        "# kernels.toml: the kernels this crate uses, and which layer each serves on which device.\n\
         # The full rules open kernels-build/src/manifest.rs ({GIT}).\n\
         # After editing: `cargo kernels lock` pins Hub kernels in kernels.lock (commit it).\n\
         \n\
         # A kernel, under the local name `{name}` that mappings refer to.\n\
         [kernels.{name}]\n\
         {source}\
         \n\
         # The layer marked #[kernelize(layer = \"{layer}\")], mapped per device (cpu, cuda, rocm, metal, xpu).\n\
         # Each mapping: kernel = a [kernels.*] name above; function = what the kernel exports\n\
         # (`__tvm_ffi_<function>`). Optional keys: mode = \"training\" (the kernel has a backward;\n\
         # default \"inference\"), deterministic = true (bitwise-identical output for identical input:\n\
         # KERNELS_DETERMINISTIC=1 chooses only such mappings), tolerance = {{ atol = 1e-5, rtol = 1e-4 }}\n\
         # (how far KERNELS_VERIFY lets its output be from the Rust forward).\n\
         # A device without a usable kernel runs the layer's Rust forward.\n\
         [layers.{layer}]\n\
         cpu = {{ kernel = \"{name}\", function = {function} }}\n\
         # capability: the CUDA compute capabilities served, MAJOR.MINOR..MAJOR.MINOR (either end optional).\n\
         cuda = {{ kernel = \"{name}\", function = {function}, capability = \"8.0..\" }}\n",
        function = toml_string(function),
    )
}

/// The `build.rs` the README recommends.
const BUILD_RS: &str = "\
//! Fetches, verifies and embeds the kernels of kernels.toml (pinned by kernels.lock).
fn main() {
    kernels_build::build().unwrap();
}
";

/// The dependency lines for `Cargo.toml`.
fn dependencies(init: &Init) -> (String, String) {
    match &init.path_deps {
        Some(ws) => (
            format!("kernels-runtime = {{ path = {} }}", toml_string(&ws.join("kernels-runtime").to_string_lossy())),
            format!("kernels-build = {{ path = {} }}", toml_string(&ws.join("kernels-build").to_string_lossy())),
        ),
        None => (format!("kernels-runtime = {{ git = \"{GIT}\" }}"), format!("kernels-build = {{ git = \"{GIT}\" }}")),
    }
}

/// A new crate's `Cargo.toml`.
fn cargo_toml(init: &Init, package: &str) -> String {
    let (runtime, build) = dependencies(init);
    let workspace = if init.path_deps.is_some() { "\n[workspace]\n" } else { "" };
    format!(
        "[package]\nname = \"{package}\"\nversion = \"0.1.0\"\nedition = \"2024\"\n\n\
         [dependencies]\n{runtime}\n\n[build-dependencies]\n{build}\n{workspace}"
    )
}

/// A new crate's `src/main.rs`: one kernelized layer on host tensors, run once.
fn main_rs(init: &Init) -> String {
    let (layer, function) = (&init.layer, &init.function);
    format!(
        r#"//! A layer marked `#[kernelize]`: `kernel_forward` runs the kernel kernels.toml maps it to
//! where one fits this machine, else its Rust `forward`. `dispatch::report()` says which, and why.

use kernels_runtime::dispatch::{{self, DispatchError, HostTensor}};
use kernels_runtime::kernelize;

kernels_runtime::include_kernels!();

/// `silu(x[..d]) * x[d..]` per row: a `[rows, 2d]` input gives a `[rows, d]` output.
#[kernelize(
    layer = "{layer}",                              // [layers.{layer}] in kernels.toml
    forward = fn forward(&self, x: &HostTensor<f32>) -> Result<HostTensor<f32>, DispatchError>,
    output = HostTensor::zeros(&[x.shape()[0], x.shape()[1] / 2]),
    args = (output, x),                             // what {function}(out, x) receives
)]
struct {layer};

impl {layer} {{
    /// The reference, and the fallback where no kernel fits: plain Rust.
    fn forward(&self, x: &HostTensor<f32>) -> Result<HostTensor<f32>, DispatchError> {{
        let d = x.shape()[1] / 2;
        let mut out = HostTensor::zeros(&[x.shape()[0], d]);
        for (row, o) in x.data().chunks(2 * d).zip(out.data_mut().chunks_mut(d)) {{
            for (i, o) in o.iter_mut().enumerate() {{
                let (a, b) = (row[i], row[d + i]);
                *o = a / (1.0 + (-a).exp()) * b;
            }}
        }}
        Ok(out)
    }}
}}

fn main() -> Result<(), Box<dyn std::error::Error>> {{
    let x = HostTensor::new((0..8).map(|i| i as f32 * 0.5 - 2.0).collect(), &[2, 4])?;
    let y = {layer}.kernel_forward(&x)?;
    println!("{{:?}}", y.data());
    println!("{{}}", dispatch::report());
    Ok(())
}}
"#
    )
}

/// Writes the starter; prints what was written and what to do next.
pub(crate) fn run(init: &Init) -> Result<(), String> {
    if !is_identifier(&init.layer) {
        return Err(format!(
            "--layer {:?}: give the layer's name as a Rust identifier (its struct's name), e.g. --layer {DEFAULT_LAYER}",
            init.layer
        ));
    }
    if !is_identifier(&init.function) {
        return Err(format!(
            "--function {:?}: give the exported function's name (letters, digits, `_`), e.g. --function {DEFAULT_FUNCTION}",
            init.function
        ));
    }
    if let KernelFrom::Hub(repo) = &init.kernel {
        let plain = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
        if !repo.split_once('/').is_some_and(|(org, name)| plain(org) && plain(name)) {
            return Err(format!("--kernel `{repo}` is not a Hub repo id: give it as `org/name`, e.g. {DEFAULT_REPO}"));
        }
    }
    let dir = &init.dir;
    let new_crate = !dir.join("Cargo.toml").is_file();
    if dir.exists() && !dir.is_dir() {
        return Err(format!("{}: not a directory", dir.display()));
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: cannot create the directory: {e}", dir.display()))?;
    let abs_dir = dir.canonicalize().map_err(|e| format!("{}: {e}", dir.display()))?;
    let kernel_path = match &init.kernel {
        KernelFrom::Path(p) => {
            let abs = p.canonicalize().map_err(|e| {
                format!("--path {}: {e}; give a Hub-layout kernel directory or a Rust kernel crate", p.display())
            })?;
            if !abs.is_dir() {
                return Err(format!("--path {}: not a directory", p.display()));
            }
            Some(relative(&abs_dir, &abs))
        }
        KernelFrom::Hub(_) => None,
    };
    let mut files: Vec<(PathBuf, String)> = vec![
        (dir.join("kernels.toml"), kernels_toml(init, kernel_path.as_deref())),
        (dir.join("build.rs"), BUILD_RS.to_owned()),
    ];
    if new_crate {
        let package = kernels_runtime::variant::dir_name(&abs_dir);
        check_package_name(&package).map_err(|e| {
            format!(
                "{}: {e}, and it would name the new crate: rename the directory, or create the crate with \
                 `cargo new --name <name> {}` and run `cargo kernels init` in it",
                abs_dir.display(),
                dir.display()
            )
        })?;
        files.push((dir.join("Cargo.toml"), cargo_toml(init, &package)));
        files.push((dir.join("src/main.rs"), main_rs(init)));
    }
    if !init.force
        && let Some((existing, _)) = files.iter().find(|(p, _)| p.exists())
    {
        return Err(format!(
            "{} exists: `cargo kernels init` does not overwrite it; move it away, or pass --force to overwrite it",
            existing.display()
        ));
    }
    for (path, text) in &files {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
        }
        std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
        println!("wrote {}", path.display());
    }
    let lock_step = match init.kernel {
        KernelFrom::Hub(_) => "  cargo kernels lock      # pins the Hub kernel in kernels.lock (commit it)\n",
        KernelFrom::Path(_) => "",
    };
    if new_crate {
        println!(
            "\nnext, in {}:\n{lock_step}  cargo build             # embeds the kernel variants this target can run\n  \
             cargo run               # runs the layer, and prints which kernel served it and why",
            dir.display()
        );
        return Ok(());
    }
    let (runtime, build) = dependencies(init);
    let (layer, function) = (&init.layer, &init.function);
    println!(
        r#"
add to Cargo.toml (the crates are not on crates.io yet: by git; `features = ["candle"]` for candle tensors):

  [dependencies]
  {runtime}

  [build-dependencies]
  {build}

add once, at the crate root (src/main.rs or src/lib.rs):

  kernels_runtime::include_kernels!();

mark the layer, e.g. on host tensors:

  use kernels_runtime::dispatch::{{DispatchError, HostTensor}};

  #[kernels_runtime::kernelize(
      layer = "{layer}",                              // [layers.{layer}] in kernels.toml
      forward = fn forward(&self, x: &HostTensor<f32>) -> Result<HostTensor<f32>, DispatchError>,
      output = HostTensor::zeros(&[x.shape()[0], x.shape()[1] / 2]),
      args = (output, x),                             // what {function}(out, x) receives
  )]
  struct {layer};
  // impl {layer} {{ fn forward(&self, x: &HostTensor<f32>) -> … }}: the reference, in plain Rust.
  // {layer}.kernel_forward(&x) runs the kernel where one fits, else `forward`.

next:
{lock_step}  cargo build             # embeds the kernel variants this target can run"#
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(is_identifier("SiluAndMul") && is_identifier("rms_norm") && !is_identifier("9a"));
        assert!(!is_identifier("a-b") && !is_identifier("") && !is_identifier("_"));
        check_package_name("my-app_2").unwrap();
        for bad in ["2app", "my app", "", "test", "ünï"] {
            assert!(check_package_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn kernel_paths_are_relative_to_the_manifest() {
        assert_eq!(relative(Path::new("/a/b/app"), Path::new("/a/k/cpu")), PathBuf::from("../../k/cpu"));
        assert_eq!(relative(Path::new("/a"), Path::new("/a/k")), PathBuf::from("k"));
        assert_eq!(relative(Path::new("/a"), Path::new("/a")), PathBuf::from("."));
        assert_eq!(relative(Path::new("/tmp/x"), Path::new("/work/k")), PathBuf::from("/work/k"));
        assert_eq!(kernel_name(&KernelFrom::Hub("org/act.v2".into())), "act-v2");
        assert_eq!(kernel_name(&KernelFrom::Path("/tmp/.tmpAb1".into())), "tmpAb1");
        assert_eq!(kernel_name(&KernelFrom::Path("/tmp/..".into())), "kernel");
    }
}
