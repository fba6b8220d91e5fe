//! `kernels.toml`: the kernels a crate uses and which layer each serves on which device.
//!
//! ```toml
//! [kernels.activation]                  # a kernel, named locally
//! repo = "kernels-community/activation"
//! version = 1                           # major version: Hub branch `v1`
//!
//! [kernels.rmsnorm]
//! repo = "kernels-community/rmsnorm"
//! revision = "4f8c3a1"                  # or a commit, branch or tag
//!
//! [kernels.relu]
//! path = "../kernels/relu"              # a Hub-layout directory, or a kernel crate to build
//!
//! [kernels.relu-cuda]
//! path = "../../build-out/relu-cuda"    # built by another tool, maybe not yet:
//! optional = true                       # missing → a build warning, its layers use their Rust forward
//!
//! [layers.SiluAndMul]                   # the name given to #[kernelize(layer = "…")]
//! cuda = { kernel = "activation", function = "silu_and_mul" }
//! cpu  = { kernel = "activation", function = "silu_and_mul" }
//!
//! [layers.RMSNorm]
//! cuda = [
//!     { kernel = "rmsnorm", function = "rms_norm", capability = "8.0.." },
//!     { kernel = "rmsnorm", function = "rms_norm_hopper", capability = "9.0..9.0", mode = "training" },
//! ]
//! cpu = { kernel = "rmsnorm", function = "rms_norm", deterministic = true, tolerance = { atol = 1e-5, rtol = 1e-4 } }
//!
//! [build]
//! backends = ["cpu", "cuda"]            # variants to fetch and embed (default: all the target runs)
//! embed = true                          # embed into the binary (default), or only fetch into the cache
//!                                       # (loaded from there at run time if the lock's hashes still match)
//! ```
//!
//! Rules:
//!
//! - A kernel comes from the Hub (`repo` = `org/name`, with exactly one of `version` — an
//!   integer major version, Hub branch `v<N>` — or `revision`, a commit, branch or tag) or from
//!   a local directory (`path`, relative to `kernels.toml`). Any other combination is an error.
//! - `optional = true` (`path` kernels only) lets the directory be missing: the build warns,
//!   names the layers mapped to the kernel, and embeds nothing for it, so those layers use
//!   their Rust forward at run time. A directory that exists is built and verified as usual.
//! - `[layers.<Layer>]` maps a layer per device (`cuda`, `rocm`, `metal`, `xpu`, `cpu`) to one
//!   mapping or an array of them. `kernel` must name a `[kernels.*]` entry; `function` is the
//!   exported name (the library exports `__tvm_ffi_<function>`).
//! - `capability` (CUDA only) is an inclusive range of compute capabilities,
//!   `MAJOR.MINOR..MAJOR.MINOR`, either end optional (`..` is every GPU), or a single
//!   `MAJOR.MINOR` for that capability alone. Among the mappings whose range holds the GPU's
//!   capability, the smallest range wins; ties go to the one declared first (the runtime's
//!   `kernels_runtime::registry::pick_mapping`). A mapping that an earlier one with the same
//!   range, modes and determinism would always win over is an error.
//! - `mode = "inference"` (the default) is a forward-only kernel: it is never chosen in training
//!   mode. `mode = "training"` promises backward support: it serves training, and inference too.
//! - `deterministic = true` (default `false`) promises that the kernel gives bitwise-identical
//!   output for identical input on the same device. In deterministic mode
//!   (`KERNELS_DETERMINISTIC=1`) only such mappings are chosen.
//! - `tolerance = { atol = …, rtol = … }` (finite, non-negative; a missing part is 0) is how far
//!   verify mode (`KERNELS_VERIFY`) lets the kernel's output be from the layer's Rust forward,
//!   element by element: `|kernel - forward| <= atol + rtol * |forward|`. Without it, the
//!   output dtype's default applies (`kernels_runtime::registry::Tolerance::for_dtype`).
//! - Unknown keys are errors at every level. Every error names `file:line:column` and the key.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::{Path, PathBuf};

use kernels_runtime::registry::{CapabilityRange, CapabilityRangeError, ModeSupport, Tolerance};
use kernels_runtime::variant::BackendKind;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::diagnostic::{Diagnostic, Location, Reporter, article, child, entry, header, one_of, quote};

/// One located problem of `kernels.toml`: `file:line:column: key: message`.
pub type ManifestError = Diagnostic;

/// The manifest's file name.
pub const MANIFEST_FILE: &str = "kernels.toml";

/// The devices a layer can be mapped on, in the order `kernels.toml` documents them.
pub const DEVICES: [BackendKind; 5] =
    [BackendKind::Cuda, BackendKind::Rocm, BackendKind::Metal, BackendKind::Xpu, BackendKind::Cpu];

const DEVICE_NAMES: [&str; 5] = ["cuda", "rocm", "metal", "xpu", "cpu"];
const ROOT_KEYS: [&str; 3] = ["kernels", "layers", "build"];
const KERNEL_KEYS: [&str; 5] = ["repo", "version", "revision", "path", "optional"];
const MAPPING_KEYS: [&str; 6] = ["kernel", "function", "capability", "mode", "deterministic", "tolerance"];
const TOLERANCE_KEYS: [&str; 2] = ["atol", "rtol"];
const BUILD_KEYS: [&str; 2] = ["backends", "embed"];

/// What `kernels.toml` asks of a Hub kernel.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Requested {
    /// A major version: the `v<N>` branch.
    Version(u64),
    /// A branch, tag or commit.
    Revision(String),
}

impl std::fmt::Display for Requested {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Requested::Version(v) => write!(f, "version {v}"),
            Requested::Revision(r) => write!(f, "revision `{r}`"),
        }
    }
}

/// A parsed, checked `kernels.toml`.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    /// The file it was read from, as given (used in messages).
    pub path: PathBuf,
    /// Kernels by local name.
    pub kernels: BTreeMap<String, KernelDecl>,
    /// Layer mappings, sorted by layer then device; mappings of one layer and device keep
    /// their declaration order.
    pub layers: Vec<LayerMapping>,
    /// `[build]`.
    pub build: BuildOptions,
}

/// `[kernels.<name>]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelDecl {
    /// The local name.
    pub name: String,
    /// Where the kernel comes from.
    pub source: KernelSource,
    /// Where it is declared (the name in its header or key).
    pub location: Location,
    /// `optional = true` (`path` kernels only): a missing directory is a warning, not an error.
    pub optional: bool,
}

/// Where a kernel comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelSource {
    /// A Hub repository of type `kernel`.
    Hub {
        /// `org/name`.
        repo: String,
        /// The major version or revision asked for.
        requested: Requested,
    },
    /// A local directory — a Hub layout (`build/<variant>/…`), one variant directory, or a
    /// kernel crate to build — as written, relative to [`Manifest::dir`].
    Path(PathBuf),
}

/// One mapping of a layer on a device.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerMapping {
    /// Layer name (`[layers.<name>]`).
    pub layer: String,
    /// The device it serves.
    pub device: BackendKind,
    /// Local kernel name; always a declared `[kernels.*]` entry.
    pub kernel: String,
    /// The exported function (`__tvm_ffi_<function>`).
    pub function: String,
    /// Compute capabilities served (CUDA); `None` serves every GPU (also written `..`).
    pub capability: Option<CapabilityRange>,
    /// `Inference` (forward only, the default) or `Training` (has backward; serves both).
    pub mode: ModeSupport,
    /// `deterministic = true`: bitwise-identical output for identical input on the same device.
    pub deterministic: bool,
    /// `tolerance = { atol = …, rtol = … }`: how far verify mode lets the kernel's output be
    /// from the layer's Rust forward (a missing part is 0); `None`: the output dtype's default.
    pub tolerance: Option<Tolerance>,
    /// The mapping's key, e.g. `[layers.RMSNorm].cuda[1]`.
    pub key: String,
    /// Where it is declared.
    pub location: Location,
}

/// `[build]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildOptions {
    /// Backends whose variants are fetched and embedded; `None`: all the target can run.
    pub backends: Option<Vec<BackendKind>>,
    /// Embed the variants into the binary (`true`, the default) or only fetch them into the
    /// Hub cache, to be loaded from there at run time when their library and `metadata.json`
    /// still have the sha256 and size `kernels.lock` pins.
    pub embed: bool,
}

impl Default for BuildOptions {
    fn default() -> Self {
        BuildOptions { backends: None, embed: true }
    }
}

impl Manifest {
    /// Reads and checks a manifest file. Every problem found is reported, in file order.
    pub fn from_path(path: &Path) -> Result<Self, Vec<ManifestError>> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| vec![Diagnostic::whole_file(path, format!("cannot read the kernels manifest: {e}"))])?;
        Self::parse(&text, path)
    }

    /// Checks the text of a manifest. `origin` is the file it came from: messages name it and
    /// `path` kernels are relative to its directory. Every problem found is reported, in file
    /// order.
    pub fn parse(text: &str, origin: &Path) -> Result<Self, Vec<ManifestError>> {
        let mut rep = Reporter::new(text, origin);
        let manifest = match toml::de::DeTable::parse(text) {
            Ok(root) => Some(walk(&mut rep, origin, root.get_ref())),
            Err(e) => {
                rep.syntax(&e);
                None
            }
        };
        match manifest {
            Some(m) if !rep.has_errors() => Ok(m),
            _ => Err(rep.finish()),
        }
    }

    /// The directory `path` kernels are relative to.
    pub fn dir(&self) -> &Path {
        match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        }
    }

    /// The kernel with this local name.
    pub fn kernel(&self, name: &str) -> Option<&KernelDecl> {
        self.kernels.get(name)
    }

    /// The mappings of `layer` on `device`, in declaration order.
    pub fn mappings(&self, layer: &str, device: BackendKind) -> &[LayerMapping] {
        let start = self.layers.partition_point(|m| (m.layer.as_str(), m.device) < (layer, device));
        let len = self.layers[start..].partition_point(|m| m.layer == layer && m.device == device);
        &self.layers[start..start + len]
    }

    /// The kernels that come from the Hub: what `kernels.lock` pins.
    pub fn hub_kernels(&self) -> impl Iterator<Item = (&str, &str, &Requested)> {
        self.kernels.values().filter_map(|k| match &k.source {
            KernelSource::Hub { repo, requested } => Some((k.name.as_str(), repo.as_str(), requested)),
            KernelSource::Path(_) => None,
        })
    }

    /// A diagnostic at `location` of this manifest, for errors found after parsing (e.g. a
    /// kernel that does not resolve).
    pub fn diagnostic(&self, location: Location, key: &str, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            path: self.path.clone(),
            line: location.line,
            column: location.column,
            key: Some(key.to_owned()),
            message: message.into(),
        }
    }
}

/// Parses a capability range as `kernels.toml` writes it ([`CapabilityRange`]'s syntax); `..`
/// (every capability) is `None`.
fn parse_capability_range(text: &str) -> Result<Option<CapabilityRange>, String> {
    match text.parse::<CapabilityRange>() {
        Ok(r) => Ok((!r.is_unbounded()).then_some(r)),
        Err(e @ CapabilityRangeError::Syntax) => Err(format!("bad range {} ({e})", quote(text))),
        Err(e @ CapabilityRangeError::Empty { .. }) => Err(format!("empty range {}: {e}", quote(text))),
    }
}

/// A mapping's range as `kernels.toml` writes it: `..` when it has none.
fn range_text(range: Option<CapabilityRange>) -> String {
    range.unwrap_or(CapabilityRange { min: None, max: None }).to_string()
}

/// Checks a local kernel name: ASCII letters, digits, `-` and `_`.
pub(crate) fn check_local_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("a kernel name cannot be empty".to_owned());
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return Err(format!("kernel name {} may only hold ASCII letters, digits, `-` and `_`", quote(name)));
    }
    Ok(())
}

/// Checks a Hub repo id: `org/name`, each part 1–96 of ASCII letters, digits, `-`, `_`, `.`,
/// not starting or ending with `-` or `.`, without `--` or `..`.
pub(crate) fn check_repo(repo: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("{} is not a Hub repo id `org/name`: {why}", quote(repo)));
    let Some((org, name)) = repo.split_once('/') else {
        return bad("it has no `/`");
    };
    for part in [org, name] {
        if part.is_empty() || part.len() > 96 {
            return bad("each part must hold 1 to 96 characters");
        }
        if !part.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.')) {
            return bad("only ASCII letters, digits, `-`, `_` and `.` are allowed, and one `/`");
        }
        if part.starts_with(['-', '.']) || part.ends_with(['-', '.']) || part.contains("--") || part.contains("..") {
            return bad("a part cannot start or end with `-` or `.`, nor hold `--` or `..`");
        }
    }
    Ok(())
}

/// Checks a revision (commit, branch or tag).
pub(crate) fn check_revision(revision: &str) -> Result<(), String> {
    if revision.is_empty() || revision.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{} is not a revision: give a commit, branch or tag, without spaces", quote(revision)));
    }
    Ok(())
}

fn walk(rep: &mut Reporter<'_>, origin: &Path, root: &DeTable<'_>) -> Manifest {
    rep.unknown_keys(root, "", &ROOT_KEYS);

    let mut kernels = BTreeMap::new();
    let mut declared = BTreeSet::new();
    if let Some((_, value)) = entry(root, "kernels")
        && let Some(table) = rep.table(value, "kernels", " of kernels (`[kernels.<name>]`)")
    {
        for (name, value) in table.iter() {
            declared.insert(name.get_ref().to_string());
            if let Some(k) = kernel_decl(rep, name, value) {
                kernels.insert(k.name.clone(), k);
            }
        }
    }

    let mut layers = Vec::new();
    if let Some((_, value)) = entry(root, "layers")
        && let Some(table) = rep.table(value, "layers", " of layers (`[layers.<Layer>]`)")
    {
        for (name, value) in table.iter() {
            layer(rep, &declared, name, value, &mut layers);
        }
    }
    layers.sort_by(|(a, _), (b, _)| (&a.layer, a.device).cmp(&(&b.layer, b.device)));
    check_reachable(rep, &layers);

    let build = match entry(root, "build") {
        Some((_, value)) => build_options(rep, value),
        None => BuildOptions::default(),
    };

    Manifest { path: origin.to_owned(), kernels, layers: layers.into_iter().map(|(m, _)| m).collect(), build }
}

fn kernel_decl(
    rep: &mut Reporter<'_>,
    name: &Spanned<std::borrow::Cow<'_, str>>,
    value: &Spanned<DeValue<'_>>,
) -> Option<KernelDecl> {
    let path = header(&["kernels", name.get_ref()]);
    if let Err(e) = check_local_name(name.get_ref()) {
        rep.error(name.span(), &path, e);
    }
    let table = rep.table(value, &path, " with `repo` and `version` (or `revision`), or `path`")?;
    rep.unknown_keys(table, &path, &KERNEL_KEYS);

    let repo = entry(table, "repo");
    let version = entry(table, "version");
    let revision = entry(table, "revision");
    let local = entry(table, "path");
    let key = |k: &str| child(&path, k);
    let location = rep.locate(name.span().start);
    let optional = match entry(table, "optional") {
        None => Some(false),
        Some((k, _)) if local.is_none() => {
            rep.error(
                k.span(),
                &key("optional"),
                "`optional` applies to `path` kernels; a Hub kernel is pinned by kernels.lock and always fetched; remove it",
            );
            None
        }
        Some((_, v)) => rep.boolean(v, &key("optional")),
    };

    if let Some((_, local_value)) = local {
        let mut ok = true;
        for (other, what) in [(repo, "repo"), (version, "version"), (revision, "revision")] {
            if let Some((k, _)) = other {
                let message = if what == "repo" {
                    "a kernel comes either from the Hub (`repo`) or from a local directory (`path`), not both; remove one".to_owned()
                } else {
                    format!(
                        "`{what}` applies to Hub kernels (`repo`); a `path` kernel is used as it is on disk; remove it"
                    )
                };
                rep.error(k.span(), &key(what), message);
                ok = false;
            }
        }
        let written = rep.string(local_value, &key("path"), " (a directory, relative to kernels.toml)")?;
        if written.trim().is_empty() {
            rep.error(
                local_value.span(),
                &key("path"),
                "the path is empty: name a Hub-layout directory or a kernel crate",
            );
            return None;
        }
        return (ok && optional.is_some()).then(|| KernelDecl {
            name: name.get_ref().to_string(),
            source: KernelSource::Path(PathBuf::from(written)),
            location,
            optional: optional.unwrap_or(false),
        });
    }

    let Some((_, repo_value)) = repo else {
        let message = if version.is_some() || revision.is_some() {
            "no `repo`: add `repo = \"<org>/<name>\"` (the Hub repository), or use `path` for a local kernel"
        } else {
            "empty kernel: give `repo = \"<org>/<name>\"` with `version = <major>` or `revision = \"<commit, branch or tag>\"`, or `path = \"<dir>\"`"
        };
        rep.error(name.span(), &path, message);
        return None;
    };
    let repo = rep.string(repo_value, &key("repo"), " (`org/name` of a Hub kernel repository)");
    if let Some(r) = repo
        && let Err(e) = check_repo(r)
    {
        rep.error(repo_value.span(), &key("repo"), e);
    }
    let requested = match (version, revision) {
        (Some(_), Some((k, _))) => {
            rep.error(
                k.span(),
                &key("revision"),
                "`version` and `revision` are exclusive: ask for a major version (Hub branch `v<N>`) or for one revision, not both",
            );
            None
        }
        (None, None) => {
            rep.error(
                name.span(),
                &path,
                "`repo` needs `version = <major>` (Hub branch `v<major>`) or `revision = \"<commit, branch or tag>\"`",
            );
            None
        }
        (Some((_, v)), None) => rep
            .unsigned(v, &key("version"), " (the major version; `version = 1` is Hub branch `v1`)")
            .map(Requested::Version),
        (None, Some((_, v))) => {
            let r = rep.string(v, &key("revision"), " (a commit, branch or tag)")?;
            match check_revision(r) {
                Ok(()) => Some(Requested::Revision(r.to_owned())),
                Err(e) => {
                    rep.error(v.span(), &key("revision"), e);
                    None
                }
            }
        }
    };
    Some(KernelDecl {
        name: name.get_ref().to_string(),
        source: KernelSource::Hub { repo: repo?.to_owned(), requested: requested? },
        location,
        optional: false,
    })
}

fn layer(
    rep: &mut Reporter<'_>,
    declared: &BTreeSet<String>,
    name: &Spanned<std::borrow::Cow<'_, str>>,
    value: &Spanned<DeValue<'_>>,
    out: &mut Vec<(LayerMapping, Range<usize>)>,
) {
    let layer_name = name.get_ref().as_ref();
    let path = header(&["layers", layer_name]);
    if layer_name.trim().is_empty() {
        rep.error(name.span(), &path, "a layer name cannot be empty");
    }
    let hint = " mapping devices to kernels, e.g. `cuda = { kernel = \"…\", function = \"…\" }`";
    let Some(table) = rep.table(value, &path, hint) else { return };
    rep.unknown_keys(table, &path, &DEVICE_NAMES);
    for (device_key, value) in table.iter() {
        let Some(device) = DEVICE_NAMES.iter().position(|d| *d == device_key.get_ref().as_ref()).map(|i| DEVICES[i])
        else {
            continue;
        };
        let device_path = child(&path, device_key.get_ref());
        match value.get_ref() {
            DeValue::Array(items) => {
                if items.is_empty() {
                    rep.error(
                        value.span(),
                        &device_path,
                        "an empty list maps nothing: add a mapping or remove the key (the layer then uses its Rust forward)",
                    );
                }
                for (i, item) in items.iter().enumerate() {
                    let item_path = format!("{device_path}[{i}]");
                    if let Some(m) = mapping(rep, declared, layer_name, device, &item_path, item, item.span()) {
                        out.push(m);
                    }
                }
            }
            DeValue::Table(_) => {
                if let Some(m) = mapping(rep, declared, layer_name, device, &device_path, value, device_key.span()) {
                    out.push(m);
                }
            }
            other => rep.error(
                value.span(),
                &device_path,
                format!(
                    "expected a mapping `{{ kernel = \"…\", function = \"…\" }}` or an array of them, found {}",
                    article(other)
                ),
            ),
        }
    }
}

fn mapping(
    rep: &mut Reporter<'_>,
    declared: &BTreeSet<String>,
    layer: &str,
    device: BackendKind,
    path: &str,
    value: &Spanned<DeValue<'_>>,
    anchor: Range<usize>,
) -> Option<(LayerMapping, Range<usize>)> {
    let table = rep.table(value, path, " `{ kernel = \"…\", function = \"…\" }`")?;
    rep.unknown_keys(table, path, &MAPPING_KEYS);
    let key = |k: &str| child(path, k);

    let kernel = match entry(table, "kernel") {
        None => {
            rep.error(
                anchor.clone(),
                path,
                "missing `kernel = \"<name>\"`: the `[kernels.<name>]` entry that serves this layer",
            );
            None
        }
        Some((_, v)) => {
            let k = rep.string(v, &key("kernel"), " (the name of a `[kernels.<name>]` entry)");
            match k {
                Some(k) if !declared.contains(k) => {
                    let known: Vec<&str> = declared.iter().map(String::as_str).collect();
                    let known = if known.is_empty() {
                        "none is declared".to_owned()
                    } else {
                        format!("declared: {}", one_of(&known))
                    };
                    rep.error(
                        v.span(),
                        &key("kernel"),
                        format!("unknown kernel {}: declare it as `{}` ({known})", quote(k), header(&["kernels", k])),
                    );
                    None
                }
                other => other,
            }
        }
    };

    let function = match entry(table, "function") {
        None => {
            rep.error(
                anchor.clone(),
                path,
                "missing `function = \"<name>\"`: the function the kernel exports (`__tvm_ffi_<name>`)",
            );
            None
        }
        Some((_, v)) => {
            let f = rep.string(v, &key("function"), " (the exported function's name)")?;
            let symbol_ok = f.bytes().next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
                && f.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if symbol_ok {
                Some(f)
            } else {
                rep.error(
                    v.span(),
                    &key("function"),
                    format!(
                        "{} is not a function name: the kernel exports `__tvm_ffi_<function>`, so use ASCII letters, digits and `_`, not starting with a digit",
                        quote(f)
                    ),
                );
                None
            }
        }
    };

    let mut capability = Some(None);
    if let Some((k, v)) = entry(table, "capability") {
        if device != BackendKind::Cuda {
            rep.error(
                k.span(),
                &key("capability"),
                format!(
                    "`capability` applies to `cuda` mappings only (CUDA compute capability), not `{device}`; remove it"
                ),
            );
            capability = None;
        } else {
            capability = rep
                .string(v, &key("capability"), " like \"8.0..9.0\"")
                .and_then(|s| parse_capability_range(s).map_err(|e| rep.error(v.span(), &key("capability"), e)).ok());
        }
    }

    let mode = match entry(table, "mode") {
        None => Some(ModeSupport::Inference),
        Some((_, v)) => match rep.string(v, &key("mode"), " (`inference` or `training`)") {
            Some("inference") => Some(ModeSupport::Inference),
            Some("training") => Some(ModeSupport::Training),
            Some(other) => {
                rep.error(
                    v.span(),
                    &key("mode"),
                    format!(
                        "unknown mode {} (expected `inference` for a forward-only kernel, or `training` for one with backward support)",
                        quote(other)
                    ),
                );
                None
            }
            None => None,
        },
    };

    let deterministic = match entry(table, "deterministic") {
        None => Some(false),
        Some((_, v)) => rep.boolean(v, &key("deterministic")),
    };

    let tolerance = match entry(table, "tolerance") {
        None => Some(None),
        Some((_, v)) => tolerance(rep, v, &key("tolerance")).map(Some),
    };

    Some((
        LayerMapping {
            layer: layer.to_owned(),
            device,
            kernel: kernel?.to_owned(),
            function: function?.to_owned(),
            capability: capability?,
            mode: mode?,
            deterministic: deterministic?,
            tolerance: tolerance?,
            key: path.to_owned(),
            location: rep.locate(anchor.start),
        },
        anchor,
    ))
}

/// `tolerance = { atol = …, rtol = … }`.
fn tolerance(rep: &mut Reporter<'_>, value: &Spanned<DeValue<'_>>, path: &str) -> Option<Tolerance> {
    let hint = " like `{ atol = 1e-5, rtol = 1e-3 }`";
    let table = rep.table(value, path, hint)?;
    rep.unknown_keys(table, path, &TOLERANCE_KEYS);
    if !TOLERANCE_KEYS.iter().any(|k| entry(table, k).is_some()) {
        rep.error(value.span(), path, format!("give `atol`, `rtol` or both{hint}"));
        return None;
    }
    let mut part = |k: &str| match entry(table, k) {
        None => Some(0.0),
        Some((_, v)) => rep.non_negative(v, &child(path, k), ""),
    };
    let (atol, rtol) = (part("atol"), part("rtol"));
    Some(Tolerance { atol: atol?, rtol: rtol? })
}

/// A mapping is never chosen when an earlier one of the same layer and device has the same
/// range, serves every mode it serves and, if it is deterministic, is deterministic too (ties go
/// to the earlier one; deterministic mode skips the mappings that are not).
fn check_reachable(rep: &mut Reporter<'_>, layers: &[(LayerMapping, Range<usize>)]) {
    for (j, (later, span)) in layers.iter().enumerate() {
        let shadow = layers[..j].iter().map(|(m, _)| m).find(|earlier| {
            earlier.layer == later.layer
                && earlier.device == later.device
                && earlier.capability == later.capability
                && (earlier.mode == later.mode || earlier.mode == ModeSupport::Training)
                && (earlier.deterministic || !later.deterministic)
        });
        if let Some(earlier) = shadow {
            let range = range_text(later.capability);
            let deterministic = if later.deterministic { " and is deterministic too" } else { "" };
            rep.error(
                span.clone(),
                &later.key,
                format!(
                    "never chosen: `{}` (line {}) has the same capability range `{range}` and serves every mode this one does{deterministic}; \
                     remove one, or give them different ranges or modes",
                    earlier.key, earlier.location.line
                ),
            );
        }
    }
}

fn build_options(rep: &mut Reporter<'_>, value: &Spanned<DeValue<'_>>) -> BuildOptions {
    let mut options = BuildOptions::default();
    let path = header(&["build"]);
    let Some(table) = rep.table(value, &path, "") else { return options };
    rep.unknown_keys(table, &path, &BUILD_KEYS);
    let key = |k: &str| child(&path, k);

    if let Some((_, v)) = entry(table, "backends")
        && let Some(items) = rep.array(v, &key("backends"), &format!(" of backends ({})", one_of(&DEVICE_NAMES)))
    {
        if items.is_empty() {
            rep.error(
                v.span(),
                &key("backends"),
                "an empty list embeds no kernel: list at least one backend, or remove the key for every backend the target can run",
            );
        }
        let mut backends = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let item_key = format!("{}[{i}]", key("backends"));
            let Some(s) = rep.string(item, &item_key, &format!(" ({})", one_of(&DEVICE_NAMES))) else { continue };
            match DEVICE_NAMES.iter().position(|d| *d == s) {
                None => rep.error(
                    item.span(),
                    &item_key,
                    format!("unknown backend {} (expected {})", quote(s), one_of(&DEVICE_NAMES)),
                ),
                Some(p) if backends.contains(&DEVICES[p]) => {
                    rep.error(item.span(), &item_key, format!("{} is listed twice", quote(s)));
                }
                Some(p) => backends.push(DEVICES[p]),
            }
        }
        options.backends = Some(backends);
    }

    if let Some((_, v)) = entry(table, "embed")
        && let Some(b) = rep.boolean(v, &key("embed"))
    {
        options.embed = b;
    }

    options
}

#[cfg(test)]
mod tests;
