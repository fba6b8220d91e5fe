//! `kernels.toml`: which kernels a crate uses and which layer each serves on which device.
//!
//! ```toml
//! [kernels.activation]
//! repo = "kernels-community/activation"
//! version = 1                      # the Hub branch `v1`; or `revision = "<branch|tag|commit>"`
//!
//! [kernels.local-ops]
//! path = "../kernels/ops"          # a Hub-layout directory, one variant, or a kernel crate
//!
//! [layers.SiluAndMul]
//! cpu  = { kernel = "local-ops", function = "silu_and_mul" }
//! cuda = [
//!   { kernel = "activation", function = "silu_and_mul", capability = "9.0..9.0" },
//!   { kernel = "activation", function = "silu_and_mul", capability = "8.0.." },
//! ]
//!
//! [build]
//! backends = ["cpu", "cuda"]       # which variants to embed (default: all the target can run)
//! embed = true                     # embed into the binary (default) or only prefetch
//! ```
//!
//! Unknown keys are errors. Every error names `file:line:column` and the key. `mode =
//! "training"` declares that the kernel has a backward pass: such a mapping serves training
//! and inference; `"inference"` (the default) serves inference only. Capability ranges are
//! inclusive, either end may be left open, and the smallest matching range wins.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use kernels_runtime::registry::{CapabilityRange, ModeSupport};
use kernels_runtime::variant::{BackendKind, Version};
use serde::Deserialize;
use toml::Spanned;

use crate::resolve::Requested;

/// The file name of the manifest.
pub const MANIFEST_FILE: &str = "kernels.toml";

/// A parsed `kernels.toml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// Where it was read from.
    pub path: PathBuf,
    /// Kernels by local name.
    pub kernels: BTreeMap<String, KernelDecl>,
    /// Layer mappings, by layer, in declaration order per device.
    pub layers: Vec<LayerMapping>,
    /// `[build]`.
    pub build: BuildOptions,
}

/// Where a kernel comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelSource {
    /// A Hub repo at a version or revision.
    Hub {
        /// `org/name`.
        repo: String,
        /// Version or revision.
        requested: Requested,
    },
    /// A local directory, as written (relative to the manifest's directory).
    Path(PathBuf),
}

/// `[kernels.<name>]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelDecl {
    /// Local name.
    pub name: String,
    /// Source.
    pub source: KernelSource,
}

/// One entry of `[layers.<Layer>].<device>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerMapping {
    /// Layer name.
    pub layer: String,
    /// Device kind.
    pub device: BackendKind,
    /// Local kernel name.
    pub kernel: String,
    /// Exported function.
    pub function: String,
    /// Capability range (CUDA only).
    pub capability: Option<CapabilityRange>,
    /// Modes served.
    pub mode: ModeSupport,
}

/// `[build]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildOptions {
    /// Backends to embed; `None`: everything the target can run.
    pub backends: Option<Vec<BackendKind>>,
    /// Embed (true) or only prefetch into the Hub cache.
    pub embed: bool,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions { backends: None, embed: true }
    }
}

/// A manifest error, located.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ManifestError {
    /// The file.
    pub path: PathBuf,
    /// 1-based line (0 when the file could not be read).
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// What is wrong, starting with the key.
    pub message: String,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.path.display(), self.message)
        } else {
            write!(f, "{}:{}:{}: {}", self.path.display(), self.line, self.column, self.message)
        }
    }
}

/// 1-based line and column of a byte offset.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    #[serde(default)]
    kernels: BTreeMap<Spanned<String>, Spanned<RawKernel>>,
    #[serde(default)]
    layers: BTreeMap<Spanned<String>, Spanned<RawLayer>>,
    #[serde(default)]
    build: Option<RawBuild>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKernel {
    repo: Option<Spanned<String>>,
    version: Option<Spanned<i64>>,
    revision: Option<Spanned<String>>,
    path: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLayer {
    cuda: Option<Spanned<toml::Value>>,
    rocm: Option<Spanned<toml::Value>>,
    metal: Option<Spanned<toml::Value>>,
    xpu: Option<Spanned<toml::Value>>,
    cpu: Option<Spanned<toml::Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMapping {
    kernel: String,
    function: String,
    capability: Option<String>,
    mode: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBuild {
    backends: Option<Spanned<Vec<String>>>,
    embed: Option<bool>,
}

/// Parses `"8.0..9.0"`, `"8.0.."`, `"..9.0"`, `".."` or a single `"9.0"` (= `9.0..9.0`).
pub fn parse_capability(s: &str) -> Result<CapabilityRange, String> {
    let bad = || format!("bad capability range `{s}` (expected \"MAJOR.MINOR..MAJOR.MINOR\", either end optional)");
    let version = |v: &str| -> Result<Option<Version>, String> {
        let v = v.trim();
        if v.is_empty() {
            return Ok(None);
        }
        let (a, b) = v.split_once('.').ok_or_else(bad)?;
        Ok(Some(Version::new(a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?)))
    };
    let range = match s.split_once("..") {
        Some((lo, hi)) => CapabilityRange { min: version(lo)?, max: version(hi)? },
        None => {
            let v = version(s)?.ok_or_else(bad)?;
            CapabilityRange { min: Some(v), max: Some(v) }
        }
    };
    if let (Some(lo), Some(hi)) = (range.min, range.max)
        && lo > hi
    {
        return Err(format!("empty capability range `{s}`: {lo} is above {hi}"));
    }
    Ok(range)
}

struct Ctx<'a> {
    path: &'a Path,
    text: &'a str,
    errors: Vec<ManifestError>,
}

impl Ctx<'_> {
    fn err(&mut self, span: std::ops::Range<usize>, message: String) {
        let (line, column) = line_col(self.text, span.start);
        self.errors.push(ManifestError { path: self.path.to_owned(), line, column, message });
    }
}

impl Manifest {
    /// Reads and parses a manifest file.
    pub fn from_path(path: &Path) -> Result<Self, Vec<ManifestError>> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            vec![ManifestError { path: path.to_owned(), line: 0, column: 0, message: format!("cannot read: {e}") }]
        })?;
        Self::parse(&text, path)
    }

    /// Parses manifest text; `path` names the file in errors. Every problem found is
    /// reported, not only the first.
    pub fn parse(text: &str, path: &Path) -> Result<Self, Vec<ManifestError>> {
        let mut ctx = Ctx { path, text, errors: Vec::new() };
        let raw: RawManifest = match toml::from_str(text) {
            Ok(r) => r,
            Err(e) => {
                let span = e.span().unwrap_or(0..0);
                ctx.err(span, e.message().trim_end().to_owned());
                return Err(ctx.errors);
            }
        };
        let mut kernels = BTreeMap::new();
        for (name, decl) in raw.kernels {
            let span = name.span();
            let name = name.into_inner();
            let decl = decl.into_inner();
            let key = format!("[kernels.{name}]");
            let source = match (decl.repo, decl.version, decl.revision, decl.path) {
                (Some(repo), Some(v), None, None) => {
                    let r = repo.get_ref();
                    if !valid_repo(r) {
                        ctx.err(repo.span(), format!("{key}.repo: `{r}` is not a Hub repo id of the form `org/name`"));
                        continue;
                    }
                    if *v.get_ref() < 0 {
                        ctx.err(
                            v.span(),
                            format!("{key}.version: must be a non-negative major version, got {}", v.get_ref()),
                        );
                        continue;
                    }
                    KernelSource::Hub { repo: repo.into_inner(), requested: Requested::Version(*v.get_ref() as u64) }
                }
                (Some(repo), None, Some(rev), None) => {
                    let r = repo.get_ref();
                    if !valid_repo(r) {
                        ctx.err(repo.span(), format!("{key}.repo: `{r}` is not a Hub repo id of the form `org/name`"));
                        continue;
                    }
                    if rev.get_ref().trim().is_empty() {
                        ctx.err(rev.span(), format!("{key}.revision: must not be empty"));
                        continue;
                    }
                    KernelSource::Hub { repo: repo.into_inner(), requested: Requested::Revision(rev.into_inner()) }
                }
                (None, None, None, Some(p)) => {
                    if p.get_ref().trim().is_empty() {
                        ctx.err(p.span(), format!("{key}.path: must not be empty"));
                        continue;
                    }
                    KernelSource::Path(PathBuf::from(p.into_inner()))
                }
                (Some(_), Some(v), Some(_), _) => {
                    ctx.err(v.span(), format!("{key}: give `version` or `revision`, not both"));
                    continue;
                }
                (Some(repo), None, None, None) => {
                    ctx.err(repo.span(), format!("{key}: `repo` needs `version = <major>` or `revision = \"<ref>\"`"));
                    continue;
                }
                (_, _, _, Some(p)) => {
                    ctx.err(p.span(), format!("{key}: `path` cannot be combined with `repo`, `version` or `revision`"));
                    continue;
                }
                (None, v, r, None) => {
                    let at = v.map(|v| v.span()).or(r.map(|r| r.span())).unwrap_or(span.clone());
                    ctx.err(at, format!("{key}: needs `repo` (with `version` or `revision`) or `path`"));
                    continue;
                }
            };
            kernels.insert(name.clone(), KernelDecl { name, source });
        }

        let mut layers = Vec::new();
        for (layer, table) in raw.layers {
            let layer = layer.into_inner();
            let table = table.into_inner();
            let devices = [
                (BackendKind::Cuda, table.cuda),
                (BackendKind::Rocm, table.rocm),
                (BackendKind::Metal, table.metal),
                (BackendKind::Xpu, table.xpu),
                (BackendKind::Cpu, table.cpu),
            ];
            for (device, value) in devices {
                let Some(value) = value else { continue };
                let span = value.span();
                let entries = match value.into_inner() {
                    toml::Value::Array(items) => items.into_iter().enumerate().map(|(i, v)| (Some(i), v)).collect(),
                    other => vec![(None, other)],
                };
                for (index, entry) in entries {
                    let key = match index {
                        Some(i) => format!("[layers.{layer}].{device}[{i}]"),
                        None => format!("[layers.{layer}].{device}"),
                    };
                    let raw: RawMapping = match entry.try_into() {
                        Ok(r) => r,
                        Err(e) => {
                            let msg = e.message().trim_end().to_owned();
                            ctx.err(
                                span.clone(),
                                format!(
                                    "{key}: {msg} (expected a table like {{ kernel = \"name\", function = \"fn\" }})"
                                ),
                            );
                            continue;
                        }
                    };
                    if !kernels.contains_key(&raw.kernel) {
                        let known: Vec<&str> = kernels.keys().map(String::as_str).collect();
                        let known = if known.is_empty() { "none declared".to_owned() } else { known.join(", ") };
                        ctx.err(
                            span.clone(),
                            format!("{key}.kernel: unknown kernel `{}` (declared in [kernels]: {known})", raw.kernel),
                        );
                        continue;
                    }
                    if raw.function.trim().is_empty()
                        || !raw.function.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                    {
                        ctx.err(
                            span.clone(),
                            format!(
                                "{key}.function: `{}` is not an exported function name (letters, digits, `_`)",
                                raw.function
                            ),
                        );
                        continue;
                    }
                    let capability = match raw.capability.as_deref() {
                        None => None,
                        Some(_) if device != BackendKind::Cuda => {
                            ctx.err(
                                span.clone(),
                                format!("{key}.capability: only CUDA mappings have a capability range"),
                            );
                            continue;
                        }
                        Some(c) => match parse_capability(c) {
                            Ok(r) => Some(r),
                            Err(e) => {
                                ctx.err(span.clone(), format!("{key}.capability: {e}"));
                                continue;
                            }
                        },
                    };
                    let mode = match raw.mode.as_deref() {
                        None | Some("inference") => ModeSupport::Inference,
                        Some("training") => ModeSupport::Training,
                        Some(other) => {
                            ctx.err(
                                span.clone(),
                                format!("{key}.mode: unknown mode `{other}` (expected \"inference\" or \"training\")"),
                            );
                            continue;
                        }
                    };
                    layers.push(LayerMapping {
                        layer: layer.clone(),
                        device,
                        kernel: raw.kernel,
                        function: raw.function,
                        capability,
                        mode,
                    });
                }
            }
        }

        let mut build = BuildOptions::default();
        if let Some(raw) = raw.build {
            build.embed = raw.embed.unwrap_or(true);
            if let Some(list) = raw.backends {
                let span = list.span();
                let mut kinds = Vec::new();
                for name in list.into_inner() {
                    match name.parse::<BackendKind>() {
                        Ok(k) if !kinds.contains(&k) => kinds.push(k),
                        Ok(_) => ctx.err(span.clone(), format!("[build].backends: `{name}` is listed twice")),
                        Err(e) => ctx.err(span.clone(), format!("[build].backends: {e}")),
                    }
                }
                build.backends = Some(kinds);
            }
        }
        if ctx.errors.is_empty() {
            Ok(Manifest { path: path.to_owned(), kernels, layers, build })
        } else {
            Err(ctx.errors)
        }
    }

    /// The directory `path` kernels are relative to.
    pub fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }
}

fn valid_repo(repo: &str) -> bool {
    let ok = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    matches!(repo.split_once('/'), Some((org, name)) if ok(org) && ok(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Manifest, String> {
        Manifest::parse(text, Path::new("kernels.toml"))
            .map_err(|errs| errs.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))
    }

    #[test]
    fn a_full_manifest() {
        let m = parse(
            r#"
[kernels.activation]
repo = "kernels-community/activation"
version = 1

[kernels.norm]
repo = "kernels-community/rmsnorm"
revision = "main"

[kernels.local]
path = "../kernels/ops"

[layers.SiluAndMul]
cpu = { kernel = "local", function = "silu_and_mul" }
cuda = [
  { kernel = "activation", function = "silu_and_mul", capability = "9.0..9.0" },
  { kernel = "activation", function = "silu_and_mul", capability = "8.0..", mode = "training" },
]

[build]
backends = ["cpu", "cuda"]
embed = false
"#,
        )
        .unwrap();
        assert_eq!(
            m.kernels["activation"].source,
            KernelSource::Hub { repo: "kernels-community/activation".into(), requested: Requested::Version(1) }
        );
        assert_eq!(
            m.kernels["norm"].source,
            KernelSource::Hub {
                repo: "kernels-community/rmsnorm".into(),
                requested: Requested::Revision("main".into())
            }
        );
        assert_eq!(m.kernels["local"].source, KernelSource::Path("../kernels/ops".into()));
        assert_eq!(m.layers.len(), 3);
        let cuda: Vec<_> = m.layers.iter().filter(|l| l.device == BackendKind::Cuda).collect();
        assert_eq!(
            cuda[0].capability,
            Some(CapabilityRange { min: Some(Version::new(9, 0)), max: Some(Version::new(9, 0)) })
        );
        assert_eq!(cuda[1].mode, ModeSupport::Training);
        assert_eq!(m.build, BuildOptions { backends: Some(vec![BackendKind::Cpu, BackendKind::Cuda]), embed: false });
    }

    #[test]
    fn every_error_names_file_line_column_and_key() {
        let cases: &[(&str, &str)] = &[
            (
                "[kernels.a]\nrepo = \"o/a\"\nversion = 1\ncolour = 2\n",
                "kernels.toml:4:1: unknown field `colour`, expected one of `repo`, `version`, `revision`, `path`",
            ),
            (
                "[kernel.a]\nrepo = \"o/a\"\n",
                "kernels.toml:1:2: unknown field `kernel`, expected one of `kernels`, `layers`, `build`",
            ),
            (
                "[kernels.a]\nrepo = \"o/a\"\n",
                "kernels.toml:2:8: [kernels.a]: `repo` needs `version = <major>` or `revision = \"<ref>\"`",
            ),
            (
                "[kernels.a]\nrepo = \"o/a\"\nversion = 1\nrevision = \"x\"\n",
                "kernels.toml:3:11: [kernels.a]: give `version` or `revision`, not both",
            ),
            (
                "[kernels.a]\nrepo = \"no-slash\"\nversion = 1\n",
                "kernels.toml:2:8: [kernels.a].repo: `no-slash` is not a Hub repo id of the form `org/name`",
            ),
            (
                "[kernels.a]\npath = \"x\"\nrepo = \"o/a\"\n",
                "kernels.toml:2:8: [kernels.a]: `path` cannot be combined with `repo`, `version` or `revision`",
            ),
            (
                "[kernels.a]\nversion = 1\n",
                "kernels.toml:2:11: [kernels.a]: needs `repo` (with `version` or `revision`) or `path`",
            ),
            (
                "[kernels.a]\nrepo = \"o/a\"\nversion = -1\n",
                "kernels.toml:3:11: [kernels.a].version: must be a non-negative major version, got -1",
            ),
            (
                "[kernels.a]\npath = \"k\"\n[layers.L]\ncpu = { kernel = \"b\", function = \"f\" }\n",
                "kernels.toml:4:7: [layers.L].cpu.kernel: unknown kernel `b` (declared in [kernels]: a)",
            ),
            (
                "[kernels.a]\npath = \"k\"\n[layers.L]\ncuda = [{ kernel = \"a\", function = \"f\", capability = \"8.0..x\" }]\n",
                "kernels.toml:4:8: [layers.L].cuda[0].capability: bad capability range `8.0..x` (expected \"MAJOR.MINOR..MAJOR.MINOR\", either end optional)",
            ),
            (
                "[kernels.a]\npath = \"k\"\n[layers.L]\ncuda = { kernel = \"a\", function = \"f\", capability = \"9.0..8.0\" }\n",
                "kernels.toml:4:8: [layers.L].cuda.capability: empty capability range `9.0..8.0`: 9.0 is above 8.0",
            ),
            (
                "[kernels.a]\npath = \"k\"\n[layers.L]\ncpu = { kernel = \"a\", function = \"f\", capability = \"8.0..\" }\n",
                "kernels.toml:4:7: [layers.L].cpu.capability: only CUDA mappings have a capability range",
            ),
            (
                "[kernels.a]\npath = \"k\"\n[layers.L]\ncpu = { kernel = \"a\", function = \"f\", mode = \"train\" }\n",
                "kernels.toml:4:7: [layers.L].cpu.mode: unknown mode `train` (expected \"inference\" or \"training\")",
            ),
            (
                "[kernels.a]\npath = \"k\"\n[layers.L]\ncpu = { kernel = \"a\", function = \"f\", fn = 1 }\n",
                "kernels.toml:4:7: [layers.L].cpu: unknown field `fn`, expected one of `kernel`, `function`, `capability`, `mode`",
            ),
            (
                "[kernels.a]\npath = \"k\"\n[layers.L]\ncpu = { kernel = \"a\", function = \"bad-name\" }\n",
                "kernels.toml:4:7: [layers.L].cpu.function: `bad-name` is not an exported function name (letters, digits, `_`)",
            ),
            (
                "[kernels.a]\npath = \"k\"\n[layers.L]\ngpu = { kernel = \"a\", function = \"f\" }\n",
                "kernels.toml:4:1: unknown field `gpu`, expected one of `cuda`, `rocm`, `metal`, `xpu`, `cpu`",
            ),
            (
                "[build]\nbackends = [\"cpu\", \"vulkan\"]\n",
                "kernels.toml:2:12: [build].backends: unknown backend `vulkan`",
            ),
            ("[build]\nembed = \"yes\"\n", "kernels.toml:2:9: invalid type: string \"yes\", expected a boolean"),
            ("[kernels.a\n", "kernels.toml:1:11: "),
        ];
        for (text, expected) in cases {
            let err = parse(text).expect_err(text);
            assert!(err.starts_with(expected), "for:\n{text}\nexpected: {expected}\n     got: {err}");
        }
    }

    #[test]
    fn all_errors_are_reported_together() {
        let err = parse("[kernels.a]\nrepo = \"x\"\nversion = 1\n[kernels.b]\nversion = 1\n").unwrap_err();
        assert_eq!(err.lines().count(), 2, "{err}");
    }

    #[test]
    fn capability_ranges() {
        let v = |a, b| Some(Version::new(a, b));
        assert_eq!(parse_capability("8.0..9.0").unwrap(), CapabilityRange { min: v(8, 0), max: v(9, 0) });
        assert_eq!(parse_capability("8.0..").unwrap(), CapabilityRange { min: v(8, 0), max: None });
        assert_eq!(parse_capability("..9.0").unwrap(), CapabilityRange { min: None, max: v(9, 0) });
        assert_eq!(parse_capability("..").unwrap(), CapabilityRange { min: None, max: None });
        assert_eq!(parse_capability("9.0").unwrap(), CapabilityRange { min: v(9, 0), max: v(9, 0) });
        assert!(parse_capability("9").is_err());
        assert!(parse_capability("").is_err());
    }

    #[test]
    fn line_and_column() {
        assert_eq!(line_col("ab\ncd", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
    }
}
