//! `kernels.lock`: what `cargo kernels lock` pinned; the build script only reads it.
//!
//! ```toml
//! # This file is written by `cargo kernels lock`. Do not edit it by hand.
//! version = 1
//!
//! [[kernel]]
//! name = "activation"
//! repo = "kernels-community/activation"
//! requested-version = 1                 # or: requested-revision = "<commit, branch or tag>"
//! commit = "0123456789abcdef0123456789abcdef01234567"
//!
//! [[kernel.variant]]
//! name = "tvm-ffi01-cpu-x86_64-linux"
//! files = [
//!     { path = "_activation_cpu_7a4e5a7.so", sha256 = "<64 hex>", size = 123456 },
//!     { path = "metadata.json", sha256 = "<64 hex>", size = 789 },
//! ]
//!
//! [tvm-ffi]                             # the runtime library the lock was made with
//! file = "libtvm_ffi.so"
//! sha256 = "<64 hex>"
//! size = 3141592
//! source = "apache-tvm-ffi==0.1.15.post2"
//!
//! [cuda-runtime]                        # the CUDA runtime, when a locked variant links it
//! file = "libcudart.so.13"              # its soname
//! sha256 = "<64 hex>"
//! size = 745664
//! source = "nvidia-cuda-runtime==13.0.96"
//! ```
//!
//! The build embeds a `libtvm_ffi.so` that differs from `[tvm-ffi]`, or a CUDA runtime that
//! differs from `[cuda-runtime]`, with a warning, and refuses it when locked
//! (`KERNELS_LOCKED=1`). Kernels built with `[build] embed = false`
//! carry their variants' library and `metadata.json` pins into the binary, which checks the
//! Hub cache against them before loading.
//!
//! Only Hub kernels are locked: `path` kernels are verified by their own `metadata.json`. The
//! writer owns the layout: kernels sorted by name, variants by name, files by path, one file
//! per line, `\n` line ends. The same pins always give the same bytes, and a change is a small
//! diff. The reader accepts any order (a hand-merged lock) and rejects unknown keys, bad
//! hashes, unsafe file paths and duplicates, each error at `file:line:column` with its key.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::{self, Write as _};
use std::path::{Path, PathBuf};

use kernels_runtime::variant::VariantName;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use kernels_runtime::metadata::METADATA_FILE;

use crate::diagnostic::{Diagnostic, Reporter, child, entry, header, quote};
use crate::manifest::{KernelSource, Manifest, Requested, check_local_name, check_repo, check_revision};

/// The lock file name.
pub const LOCK_FILE: &str = "kernels.lock";

/// The format version this crate writes and reads.
pub const LOCK_VERSION: u32 = 1;

/// The command that writes the lock, named in every message about a stale or broken one.
pub const LOCK_COMMAND: &str = "cargo kernels lock";

const HEADER: &str = "# This file is written by `cargo kernels lock`. Do not edit it by hand.\n";
const ROOT_KEYS: [&str; 4] = ["version", "kernel", "tvm-ffi", "cuda-runtime"];
const KERNEL_KEYS: [&str; 6] = ["name", "repo", "requested-version", "requested-revision", "commit", "variant"];
const VARIANT_KEYS: [&str; 2] = ["name", "files"];
const FILE_KEYS: [&str; 3] = ["path", "sha256", "size"];
const PIN_KEYS: [&str; 4] = ["file", "sha256", "size", "source"];
/// The section pinning `libtvm_ffi.so`.
const TVM_FFI_SECTION: &str = "tvm-ffi";
/// The section pinning the CUDA runtime.
const CUDA_RUNTIME_SECTION: &str = "cuda-runtime";

/// A parsed `kernels.lock`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lock {
    /// Pinned Hub kernels (sorted by name once read or rendered).
    pub kernels: Vec<ResolvedKernel>,
    /// The pinned tvm-ffi runtime library.
    pub tvm_ffi: Option<RuntimePin>,
    /// The pinned CUDA runtime (`libcudart.so.<major>`).
    pub cuda_runtime: Option<RuntimePin>,
}

/// A Hub kernel pinned to a commit, with every loadable variant's files: what resolving
/// produces and what the lock records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedKernel {
    /// Local name in `kernels.toml`.
    pub name: String,
    /// `org/name`.
    pub repo: String,
    /// What `kernels.toml` asked for.
    pub requested: Requested,
    /// The commit it resolved to.
    pub commit: String,
    /// Variants, sorted by name.
    pub variants: Vec<ResolvedVariant>,
}

/// One variant's pinned files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedVariant {
    /// Variant directory name.
    pub name: String,
    /// Files, sorted by path (relative to the variant directory).
    pub files: Vec<ResolvedFile>,
}

/// One pinned file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedFile {
    /// Path relative to the variant directory.
    pub path: String,
    /// Hex sha256.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
}

impl ResolvedVariant {
    /// The pinned `metadata.json`, if the variant has one.
    pub fn metadata_file(&self) -> Option<&ResolvedFile> {
        self.files.iter().find(|f| f.path == METADATA_FILE)
    }
}

/// A pinned runtime library: `libtvm_ffi.so` (`[tvm-ffi]`) or the CUDA runtime
/// (`[cuda-runtime]`), the one the lock was made with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimePin {
    /// The library's file name (`libtvm_ffi.so`), or the CUDA runtime's soname
    /// (`libcudart.so.13`).
    pub file: String,
    /// Hex sha256 of the library.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
    /// Where it came from: the release (`apache-tvm-ffi==0.1.15.post2`,
    /// `nvidia-cuda-runtime==13.0.96`), a wheel URL or a path.
    pub source: String,
}

/// Reading `kernels.lock` failed.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// The file exists but could not be read.
    #[error("{}: cannot read the kernels lock: {source}", path.display())]
    Read { path: PathBuf, source: std::io::Error },
    /// The file has errors, each at `file:line:column` with its key, one per line.
    #[error("{}\nfix it, or delete it and run `{LOCK_COMMAND}` to write it again", join_lines(.0))]
    Invalid(Vec<Diagnostic>),
}

fn join_lines(items: &[Diagnostic]) -> String {
    items.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n")
}

/// One way the lock disagrees with `kernels.toml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Staleness {
    /// A Hub kernel of `kernels.toml` has no lock entry.
    Missing {
        /// Local name.
        name: String,
        /// `org/name`.
        repo: String,
        /// What `kernels.toml` asks for.
        requested: Requested,
    },
    /// The lock pins a kernel `kernels.toml` no longer declares.
    Removed {
        /// Local name.
        name: String,
        /// The locked repo.
        repo: String,
    },
    /// `kernels.toml` now takes the kernel from a local `path`.
    NowLocal {
        /// Local name.
        name: String,
        /// The locked repo.
        repo: String,
        /// The path, as written.
        path: PathBuf,
    },
    /// The kernel's repo or requested version/revision changed.
    Changed {
        /// Local name.
        name: String,
        /// The locked repo.
        locked_repo: String,
        /// What the lock was made for.
        locked: Requested,
        /// The repo `kernels.toml` names.
        declared_repo: String,
        /// What `kernels.toml` asks for.
        declared: Requested,
    },
}

impl fmt::Display for Staleness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Staleness::Missing { name, repo, requested } => {
                write!(f, "kernel `{name}` ({repo}, {requested}) is declared in kernels.toml but not locked")
            }
            Staleness::Removed { name, repo } => {
                write!(f, "kernel `{name}` ({repo}) is locked but no longer declared in kernels.toml")
            }
            Staleness::NowLocal { name, repo, path } => {
                write!(f, "kernel `{name}` now comes from path `{}`; the lock still pins {repo}", path.display())
            }
            Staleness::Changed { name, locked_repo, locked, declared_repo, declared } => write!(
                f,
                "kernel `{name}` is locked as {locked_repo} @ {locked} but declared as {declared_repo} @ {declared}"
            ),
        }
    }
}

/// The lock is missing while `kernels.toml` declares Hub kernels, or does not match it: every
/// difference, and the command that fixes it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{} is {}:\n{}\nrun `{LOCK_COMMAND}` in {} and commit kernels.lock",
    path.display(),
    self.state(),
    self.details(),
    self.dir().display()
)]
pub struct StaleLock {
    /// The lock file.
    pub path: PathBuf,
    /// Whether it exists.
    pub exists: bool,
    /// Every way it disagrees with `kernels.toml` (when it exists).
    pub changes: Vec<Staleness>,
}

impl StaleLock {
    /// `missing` or `out of date`.
    pub fn state(&self) -> &'static str {
        if self.exists { "out of date" } else { "missing" }
    }

    /// The directory holding the lock (and `kernels.toml`).
    pub fn dir(&self) -> &Path {
        match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        }
    }

    fn details(&self) -> String {
        if !self.exists {
            return "  no kernels.lock next to kernels.toml".to_owned();
        }
        self.changes.iter().map(|s| format!("  {s}")).collect::<Vec<_>>().join("\n")
    }
}

/// Whether `s` is a lowercase hex sha256.
pub fn is_sha256(s: &str) -> bool {
    s.len() == 64 && is_lower_hex(s)
}

fn is_lower_hex(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Checks a file path inside a variant directory: relative, `/`-separated, no `.`/`..`/empty
/// components, no `\` — it is joined to cache directories, so it must stay inside them.
pub(crate) fn check_file_path(path: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("{} is not a safe path inside a variant directory: {why}", quote(path)));
    if path.is_empty() {
        return bad("it is empty");
    }
    if path.starts_with('/') || path.contains('\\') || path.contains(':') {
        return bad("it must be relative and use `/`");
    }
    if path.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
        return bad("it has an empty, `.` or `..` component");
    }
    if path.chars().any(char::is_control) {
        return bad("it holds a control character");
    }
    Ok(())
}

impl Lock {
    /// Reads `path`; `Ok(None)` when it does not exist.
    pub fn read(path: &Path) -> Result<Option<Self>, LockError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text, path).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(LockError::Read { path: path.to_owned(), source }),
        }
    }

    /// Parses lock text; `origin` names the file in errors. Entries are sorted as
    /// [`Lock::render`] writes them.
    pub fn parse(text: &str, origin: &Path) -> Result<Self, LockError> {
        let mut rep = Reporter::new(text, origin);
        let lock = match DeTable::parse(text) {
            Ok(root) => walk(&mut rep, root.get_ref()),
            Err(e) => {
                rep.syntax(&e);
                None
            }
        };
        match lock {
            Some(lock) if !rep.has_errors() => Ok(lock),
            _ => Err(LockError::Invalid(rep.finish())),
        }
    }

    /// The lock as text: sorted and stable, so equal pins give equal bytes.
    pub fn render(&self) -> String {
        let mut kernels: Vec<&ResolvedKernel> = self.kernels.iter().collect();
        kernels.sort_by(|a, b| a.name.cmp(&b.name));
        let mut s = String::from(HEADER);
        let _ = writeln!(s, "version = {LOCK_VERSION}");
        for k in kernels {
            s.push_str("\n[[kernel]]\n");
            let _ = writeln!(s, "name = {}", quote(&k.name));
            let _ = writeln!(s, "repo = {}", quote(&k.repo));
            match &k.requested {
                Requested::Version(v) => {
                    let _ = writeln!(s, "requested-version = {v}");
                }
                Requested::Revision(r) => {
                    let _ = writeln!(s, "requested-revision = {}", quote(r));
                }
            }
            let _ = writeln!(s, "commit = {}", quote(&k.commit));
            let mut variants: Vec<&ResolvedVariant> = k.variants.iter().collect();
            variants.sort_by(|a, b| a.name.cmp(&b.name));
            for v in variants {
                s.push_str("\n[[kernel.variant]]\n");
                let _ = writeln!(s, "name = {}", quote(&v.name));
                let mut files: Vec<&ResolvedFile> = v.files.iter().collect();
                files.sort_by(|a, b| a.path.cmp(&b.path));
                if files.is_empty() {
                    s.push_str("files = []\n");
                    continue;
                }
                s.push_str("files = [\n");
                for f in files {
                    let _ = writeln!(
                        s,
                        "    {{ path = {}, sha256 = {}, size = {} }},",
                        quote(&f.path),
                        quote(&f.sha256),
                        f.size
                    );
                }
                s.push_str("]\n");
            }
        }
        for (section, pin) in [(TVM_FFI_SECTION, &self.tvm_ffi), (CUDA_RUNTIME_SECTION, &self.cuda_runtime)] {
            let Some(p) = pin else { continue };
            let _ = writeln!(s, "\n[{section}]");
            let _ = writeln!(s, "file = {}", quote(&p.file));
            let _ = writeln!(s, "sha256 = {}", quote(&p.sha256));
            let _ = writeln!(s, "size = {}", p.size);
            let _ = writeln!(s, "source = {}", quote(&p.source));
        }
        s
    }

    /// The entry of kernel `name`.
    pub fn kernel(&self, name: &str) -> Option<&ResolvedKernel> {
        self.kernels.iter().find(|k| k.name == name)
    }

    /// Every way the lock disagrees with `manifest`, in kernel-name order. Only what
    /// `kernels.toml` says is compared — which Hub kernels, their repo and request — so a
    /// branch that moved on the Hub does not make the lock stale.
    pub fn staleness(&self, manifest: &Manifest) -> Vec<Staleness> {
        let mut out = Vec::new();
        let locked: BTreeMap<&str, &ResolvedKernel> = self.kernels.iter().map(|k| (k.name.as_str(), k)).collect();
        let names: BTreeSet<&str> = locked.keys().copied().chain(manifest.kernels.keys().map(String::as_str)).collect();
        for name in names {
            let owned = name.to_owned();
            match (locked.get(name), manifest.kernels.get(name).map(|d| &d.source)) {
                (None, Some(KernelSource::Hub { repo, requested })) => {
                    out.push(Staleness::Missing { name: owned, repo: repo.clone(), requested: requested.clone() });
                }
                (Some(k), None) => out.push(Staleness::Removed { name: owned, repo: k.repo.clone() }),
                (Some(k), Some(KernelSource::Path(path))) => {
                    out.push(Staleness::NowLocal { name: owned, repo: k.repo.clone(), path: path.clone() });
                }
                (Some(k), Some(KernelSource::Hub { repo, requested })) => {
                    if &k.repo != repo || &k.requested != requested {
                        out.push(Staleness::Changed {
                            name: owned,
                            locked_repo: k.repo.clone(),
                            locked: k.requested.clone(),
                            declared_repo: repo.clone(),
                            declared: requested.clone(),
                        });
                    }
                }
                (None, Some(KernelSource::Path(_)) | None) => {}
            }
        }
        out
    }

    /// Checks the lock at `path` (`lock`, as read; `None` when there is none) against
    /// `manifest`: `Ok` when it pins exactly the Hub kernels `manifest` asks for (no lock is
    /// needed when it asks for none).
    pub fn check(path: &Path, lock: Option<&Lock>, manifest: &Manifest) -> Result<(), StaleLock> {
        let stale = |exists, changes| Err(StaleLock { path: path.to_owned(), exists, changes });
        match lock {
            None if manifest.hub_kernels().next().is_some() => stale(false, Vec::new()),
            None => Ok(()),
            Some(lock) => {
                let changes = lock.staleness(manifest);
                if changes.is_empty() { Ok(()) } else { stale(true, changes) }
            }
        }
    }
}

fn walk(rep: &mut Reporter<'_>, root: &DeTable<'_>) -> Option<Lock> {
    let Some((_, version)) = entry(root, "version") else {
        rep.error(0..0, "version", format!("missing `version = {LOCK_VERSION}` (the lock format version) at the top"));
        return None;
    };
    let v = rep.unsigned(version, "version", " (the lock format version)")?;
    if v != u64::from(LOCK_VERSION) {
        rep.error(
            version.span(),
            "version",
            format!("lock format version {v} is not supported: this kernels-build reads version {LOCK_VERSION}; update kernels-build, or run `{LOCK_COMMAND}` to rewrite the lock"),
        );
        return None;
    }
    rep.unknown_keys(root, "", &ROOT_KEYS);

    let mut kernels = Vec::new();
    if let Some((_, value)) = entry(root, "kernel")
        && let Some(items) = rep.array(value, "kernel", " of `[[kernel]]` tables")
    {
        let mut seen: BTreeMap<String, usize> = BTreeMap::new();
        for (i, item) in items.iter().enumerate() {
            let Some((k, name_span)) = kernel(rep, i, item) else { continue };
            if let Some(first) = seen.get(&k.name) {
                rep.error(
                    name_span,
                    &format!("kernel[{i}].name"),
                    format!("kernel {} is locked twice (also kernel[{first}]); keep one", quote(&k.name)),
                );
                continue;
            }
            seen.insert(k.name.clone(), i);
            kernels.push(k);
        }
    }
    kernels.sort_by(|a, b| a.name.cmp(&b.name));

    let tvm_ffi = entry(root, TVM_FFI_SECTION)
        .and_then(|(_, v)| runtime_pin(rep, v, TVM_FFI_SECTION, "apache-tvm-ffi==0.1.15.post2"));
    let cuda_runtime = entry(root, CUDA_RUNTIME_SECTION)
        .and_then(|(_, v)| runtime_pin(rep, v, CUDA_RUNTIME_SECTION, "nvidia-cuda-runtime==13.0.96"));
    Some(Lock { kernels, tvm_ffi, cuda_runtime })
}

fn sha256_value(rep: &mut Reporter<'_>, value: &Spanned<DeValue<'_>>, key: &str) -> Option<String> {
    let s = rep.string(value, key, " (a hex sha256)")?;
    if is_sha256(s) {
        Some(s.to_owned())
    } else {
        rep.error(value.span(), key, format!("{} is not a sha256 (64 lowercase hex digits)", quote(s)));
        None
    }
}

fn required<'t, 'i>(
    rep: &mut Reporter<'_>,
    table: &'t DeTable<'i>,
    key: &str,
    path: &str,
    anchor: std::ops::Range<usize>,
) -> Option<&'t Spanned<DeValue<'i>>> {
    match entry(table, key) {
        Some((_, v)) => Some(v),
        None => {
            rep.error(anchor, path, format!("missing `{key}`"));
            None
        }
    }
}

fn kernel(
    rep: &mut Reporter<'_>,
    index: usize,
    item: &Spanned<DeValue<'_>>,
) -> Option<(ResolvedKernel, std::ops::Range<usize>)> {
    let path = format!("kernel[{index}]");
    let table = rep.table(item, &path, " (`[[kernel]]`)")?;
    rep.unknown_keys(table, &path, &KERNEL_KEYS);
    let anchor = item.span();
    let key = |k: &str| child(&path, k);

    let name_value = required(rep, table, "name", &path, anchor.clone());
    let name = name_value.and_then(|v| {
        let n = rep.string(v, &key("name"), " (the kernel's name in kernels.toml)")?;
        check_local_name(n).map_err(|e| rep.error(v.span(), &key("name"), e)).ok()?;
        Some(n.to_owned())
    });
    let repo = required(rep, table, "repo", &path, anchor.clone()).and_then(|v| {
        let r = rep.string(v, &key("repo"), " (`org/name`)")?;
        check_repo(r).map_err(|e| rep.error(v.span(), &key("repo"), e)).ok()?;
        Some(r.to_owned())
    });
    let requested = match (entry(table, "requested-version"), entry(table, "requested-revision")) {
        (Some((_, v)), None) => {
            rep.unsigned(v, &key("requested-version"), " (the major version asked for)").map(Requested::Version)
        }
        (None, Some((_, v))) => rep.string(v, &key("requested-revision"), " (the revision asked for)").and_then(|r| {
            check_revision(r).map_err(|e| rep.error(v.span(), &key("requested-revision"), e)).ok()?;
            Some(Requested::Revision(r.to_owned()))
        }),
        (Some(_), Some((k, _))) => {
            rep.error(
                k.span(),
                &key("requested-revision"),
                "`requested-version` and `requested-revision` are exclusive; keep the one kernels.toml asks for",
            );
            None
        }
        (None, None) => {
            rep.error(
                anchor.clone(),
                &path,
                "missing `requested-version` or `requested-revision` (what kernels.toml asks for)",
            );
            None
        }
    };
    let commit = required(rep, table, "commit", &path, anchor.clone()).and_then(|v| {
        let c = rep.string(v, &key("commit"), " (the resolved commit)")?;
        if (c.len() == 40 || c.len() == 64) && is_lower_hex(c) {
            Some(c.to_owned())
        } else {
            rep.error(
                v.span(),
                &key("commit"),
                format!("{} is not a commit id (40 or 64 lowercase hex digits)", quote(c)),
            );
            None
        }
    });

    let mut variants = Vec::new();
    if let Some((_, value)) = entry(table, "variant")
        && let Some(items) = rep.array(value, &key("variant"), " of `[[kernel.variant]]` tables")
    {
        let mut seen = BTreeSet::new();
        for (j, item) in items.iter().enumerate() {
            let vpath = format!("{path}.variant[{j}]");
            let Some((v, name_span)) = variant(rep, &vpath, item) else { continue };
            if !seen.insert(v.name.clone()) {
                rep.error(name_span, &child(&vpath, "name"), format!("variant {} is listed twice", quote(&v.name)));
                continue;
            }
            variants.push(v);
        }
    }
    variants.sort_by(|a, b| a.name.cmp(&b.name));

    let name_span = name_value.map_or(anchor, Spanned::span);
    Some((ResolvedKernel { name: name?, repo: repo?, requested: requested?, commit: commit?, variants }, name_span))
}

fn variant(
    rep: &mut Reporter<'_>,
    path: &str,
    item: &Spanned<DeValue<'_>>,
) -> Option<(ResolvedVariant, std::ops::Range<usize>)> {
    let table = rep.table(item, path, " (`[[kernel.variant]]`)")?;
    rep.unknown_keys(table, path, &VARIANT_KEYS);
    let key = |k: &str| child(path, k);
    let name_value = required(rep, table, "name", path, item.span());
    let name = name_value.and_then(|v| {
        let n = rep.string(v, &key("name"), " (a variant directory name)")?;
        VariantName::parse(n).map_err(|e| rep.error(v.span(), &key("name"), e.to_string())).ok()?;
        Some(n.to_owned())
    });
    let mut files = Vec::new();
    if let Some(value) = required(rep, table, "files", path, item.span())
        && let Some(items) = rep.array(value, &key("files"), " of `{ path, sha256, size }` tables")
    {
        let mut seen = BTreeSet::new();
        for (i, item) in items.iter().enumerate() {
            let fpath = format!("{}[{i}]", key("files"));
            let Some(table) = rep.table(item, &fpath, " `{ path = \"…\", sha256 = \"…\", size = … }`") else {
                continue;
            };
            rep.unknown_keys(table, &fpath, &FILE_KEYS);
            let fkey = |k: &str| child(&fpath, k);
            let file_path = required(rep, table, "path", &fpath, item.span()).and_then(|v| {
                let p = rep.string(v, &fkey("path"), " (relative to the variant directory)")?;
                check_file_path(p).map_err(|e| rep.error(v.span(), &fkey("path"), e)).ok()?;
                if !seen.insert(p.to_owned()) {
                    rep.error(v.span(), &fkey("path"), format!("{} is listed twice", quote(p)));
                    return None;
                }
                Some(p.to_owned())
            });
            let sha256 =
                required(rep, table, "sha256", &fpath, item.span()).and_then(|v| sha256_value(rep, v, &fkey("sha256")));
            let size = required(rep, table, "size", &fpath, item.span())
                .and_then(|v| rep.unsigned(v, &fkey("size"), " (bytes)"));
            if let (Some(path), Some(sha256), Some(size)) = (file_path, sha256, size) {
                files.push(ResolvedFile { path, sha256, size });
            }
        }
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let name_span = name_value.map_or(item.span(), Spanned::span);
    Some((ResolvedVariant { name: name?, files }, name_span))
}

/// A runtime pin section (`[tvm-ffi]`, `[cuda-runtime]`); `example` is a source shown when it
/// is empty.
fn runtime_pin(
    rep: &mut Reporter<'_>,
    value: &Spanned<DeValue<'_>>,
    section: &str,
    example: &str,
) -> Option<RuntimePin> {
    let path = header(&[section]);
    let table = rep.table(value, &path, "")?;
    rep.unknown_keys(table, &path, &PIN_KEYS);
    let key = |k: &str| child(&path, k);
    let anchor = value.span();

    let file = required(rep, table, "file", &path, anchor.clone()).and_then(|v| {
        let s = rep.string(v, &key("file"), " (the library's file name)")?;
        if s.is_empty() || s.contains(['/', '\\']) || s == "." || s == ".." {
            rep.error(v.span(), &key("file"), format!("{} is not a file name (no directories)", quote(s)));
            return None;
        }
        Some(s.to_owned())
    });
    let sha256 =
        required(rep, table, "sha256", &path, anchor.clone()).and_then(|v| sha256_value(rep, v, &key("sha256")));
    let size =
        required(rep, table, "size", &path, anchor.clone()).and_then(|v| rep.unsigned(v, &key("size"), " (bytes)"));
    let source = required(rep, table, "source", &path, anchor.clone()).and_then(|v| {
        let s = rep.string(v, &key("source"), " (where the library came from)")?;
        if s.trim().is_empty() {
            rep.error(
                v.span(),
                &key("source"),
                format!("the source is empty: give where the library came from (e.g. {})", quote(example)),
            );
            return None;
        }
        Some(s.to_owned())
    });
    Some(RuntimePin { file: file?, sha256: sha256?, size: size?, source: source? })
}

#[cfg(test)]
mod tests;
