//! `kernels.lock`: what `cargo kernels lock` pinned, read by the build script.
//!
//! ```toml
//! # Written by `cargo kernels lock`. Do not edit by hand.
//! version = 1
//!
//! [[kernel]]
//! name = "activation"
//! repo = "kernels-community/activation"
//! requested-version = 1
//! commit = "0123456789abcdef0123456789abcdef01234567"
//!
//! [[kernel.variant]]
//! name = "tvm-ffi01-cpu-x86_64-linux"
//! files = [
//!     { path = "_activation_cpu_abc1234.so", sha256 = "…", size = 123456 },
//!     { path = "metadata.json", sha256 = "…", size = 789 },
//! ]
//!
//! [tvm-ffi]
//! file = "libtvm_ffi.so"
//! sha256 = "…"
//! size = 3141592
//! source = "apache-tvm-ffi==0.1.15.post2"
//! ```
//!
//! Kernels are sorted by name, variants by name, files by path: the same pins always give the
//! same bytes, and a change shows up as a small diff.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::manifest::{KernelSource, Manifest, line_col};
use crate::resolve::{Requested, ResolvedFile, ResolvedKernel, ResolvedVariant};

/// The lock file name.
pub const LOCK_FILE: &str = "kernels.lock";

/// The format version this crate writes and reads.
pub const LOCK_VERSION: u32 = 1;

/// A parsed `kernels.lock`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lock {
    /// Pinned Hub kernels, sorted by name.
    pub kernels: Vec<ResolvedKernel>,
    /// The tvm-ffi runtime library pin.
    pub tvm_ffi: Option<RuntimePin>,
}

/// The pinned `libtvm_ffi.so`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimePin {
    /// File name.
    pub file: String,
    /// Hex sha256.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
    /// Where it comes from (e.g. `apache-tvm-ffi==0.1.15.post2`).
    pub source: String,
}

/// A lock error, located.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{line}:{column}: {message}", path.display())]
pub struct LockError {
    /// The file.
    pub path: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// What is wrong.
    pub message: String,
}

/// How a lock disagrees with the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Staleness {
    /// A Hub kernel of the manifest has no lock entry.
    Missing {
        /// Local name.
        name: String,
    },
    /// The lock pins a kernel the manifest no longer declares (or declares by path).
    Removed {
        /// Local name.
        name: String,
    },
    /// Repo or requested version/revision changed.
    Changed {
        /// Local name.
        name: String,
        /// Locked `repo @ requested`.
        locked: String,
        /// Declared `repo @ requested`.
        declared: String,
    },
}

impl std::fmt::Display for Staleness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Staleness::Missing { name } => write!(f, "kernel `{name}` is not locked"),
            Staleness::Removed { name } => write!(f, "kernel `{name}` is locked but no longer declared"),
            Staleness::Changed { name, locked, declared } => {
                write!(f, "kernel `{name}` is locked as {locked} but declared as {declared}")
            }
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLock {
    version: u32,
    #[serde(default)]
    kernel: Vec<RawKernel>,
    #[serde(rename = "tvm-ffi")]
    tvm_ffi: Option<RawPin>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct RawKernel {
    name: String,
    repo: String,
    requested_version: Option<u64>,
    requested_revision: Option<String>,
    commit: String,
    #[serde(default)]
    variant: Vec<RawVariant>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVariant {
    name: String,
    files: Vec<RawFile>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    path: String,
    sha256: String,
    size: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPin {
    file: String,
    sha256: String,
    size: u64,
    source: String,
}

fn is_sha256(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn quote(s: &str) -> String {
    // TOML basic strings accept the same escapes as JSON for everything we write.
    serde_json::to_string(s).expect("strings always serialise")
}

impl Lock {
    /// Reads `path`; `Ok(None)` when it does not exist.
    pub fn read(path: &Path) -> Result<Option<Self>, LockError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text, path).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => {
                Err(LockError { path: path.to_owned(), line: 0, column: 0, message: format!("cannot read: {e}") })
            }
        }
    }

    /// Parses lock text; `path` names the file in errors.
    pub fn parse(text: &str, path: &Path) -> Result<Self, LockError> {
        let err = |offset: usize, message: String| {
            let (line, column) = line_col(text, offset);
            LockError { path: path.to_owned(), line, column, message }
        };
        let raw: RawLock = toml::from_str(text).map_err(|e| {
            err(
                e.span().map_or(0, |s| s.start),
                format!("{} (run `cargo kernels lock` to rewrite it)", e.message().trim_end()),
            )
        })?;
        let find = |needle: &str| text.find(needle).unwrap_or(0);
        if raw.version != LOCK_VERSION {
            return Err(err(
                find("version"),
                format!(
                    "lock format version {} is not supported (expected {LOCK_VERSION}); run `cargo kernels lock`",
                    raw.version
                ),
            ));
        }
        let mut kernels = Vec::new();
        for k in raw.kernel {
            let at = find(&format!("name = {}", quote(&k.name)));
            let requested = match (k.requested_version, k.requested_revision) {
                (Some(v), None) => Requested::Version(v),
                (None, Some(r)) => Requested::Revision(r),
                _ => {
                    return Err(err(
                        at,
                        format!(
                            "kernel `{}`: needs exactly one of `requested-version` and `requested-revision`",
                            k.name
                        ),
                    ));
                }
            };
            let mut variants = Vec::new();
            for v in k.variant {
                let mut files = Vec::new();
                for f in v.files {
                    if !is_sha256(&f.sha256) {
                        return Err(err(
                            find(&f.sha256),
                            format!(
                                "kernel `{}`, variant `{}`, file `{}`: `{}` is not a hex sha256",
                                k.name, v.name, f.path, f.sha256
                            ),
                        ));
                    }
                    files.push(ResolvedFile { path: f.path, sha256: f.sha256, size: f.size });
                }
                files.sort_by(|a, b| a.path.cmp(&b.path));
                variants.push(ResolvedVariant { name: v.name, files });
            }
            variants.sort_by(|a, b| a.name.cmp(&b.name));
            kernels.push(ResolvedKernel { name: k.name, repo: k.repo, requested, commit: k.commit, variants });
        }
        kernels.sort_by(|a, b| a.name.cmp(&b.name));
        let tvm_ffi =
            raw.tvm_ffi.map(|p| RuntimePin { file: p.file, sha256: p.sha256, size: p.size, source: p.source });
        Ok(Lock { kernels, tvm_ffi })
    }

    /// The lock as text: sorted and stable.
    pub fn render(&self) -> String {
        let mut kernels = self.kernels.clone();
        kernels.sort_by(|a, b| a.name.cmp(&b.name));
        let mut s = String::from("# Written by `cargo kernels lock`. Do not edit by hand.\n");
        let _ = writeln!(s, "version = {LOCK_VERSION}");
        for k in &kernels {
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
            let mut variants = k.variants.clone();
            variants.sort_by(|a, b| a.name.cmp(&b.name));
            for v in &variants {
                s.push_str("\n[[kernel.variant]]\n");
                let _ = writeln!(s, "name = {}", quote(&v.name));
                s.push_str("files = [\n");
                let mut files = v.files.clone();
                files.sort_by(|a, b| a.path.cmp(&b.path));
                for f in &files {
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
        if let Some(p) = &self.tvm_ffi {
            s.push_str("\n[tvm-ffi]\n");
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

    /// Every way the lock disagrees with the manifest's Hub kernels (path kernels are not
    /// locked: they are verified by their own metadata).
    pub fn staleness(&self, manifest: &Manifest) -> Vec<Staleness> {
        let mut out = Vec::new();
        for decl in manifest.kernels.values() {
            let KernelSource::Hub { repo, requested } = &decl.source else { continue };
            match self.kernel(&decl.name) {
                None => out.push(Staleness::Missing { name: decl.name.clone() }),
                Some(k) if &k.repo != repo || &k.requested != requested => out.push(Staleness::Changed {
                    name: decl.name.clone(),
                    locked: format!("{} @ {}", k.repo, k.requested),
                    declared: format!("{repo} @ {requested}"),
                }),
                Some(_) => {}
            }
        }
        for k in &self.kernels {
            let declared = manifest.kernels.get(&k.name).is_some_and(|d| matches!(d.source, KernelSource::Hub { .. }));
            if !declared {
                out.push(Staleness::Removed { name: k.name.clone() });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Lock {
        let file = |p: &str, c: char, size| ResolvedFile { path: p.into(), sha256: c.to_string().repeat(64), size };
        Lock {
            kernels: vec![
                ResolvedKernel {
                    name: "norm".into(),
                    repo: "org/norm".into(),
                    requested: Requested::Revision("main".into()),
                    commit: "c".repeat(40),
                    variants: vec![ResolvedVariant {
                        name: "tvm-ffi01-cpu-x86_64-linux".into(),
                        files: vec![file("metadata.json", 'b', 10), file("_n.so", 'a', 20)],
                    }],
                },
                ResolvedKernel {
                    name: "act".into(),
                    repo: "org/act".into(),
                    requested: Requested::Version(1),
                    commit: "d".repeat(40),
                    variants: vec![
                        ResolvedVariant {
                            name: "tvm-ffi01-cu130-x86_64-linux".into(),
                            files: vec![file("x.so", 'e', 1)],
                        },
                        ResolvedVariant {
                            name: "tvm-ffi01-cpu-x86_64-linux".into(),
                            files: vec![file("y.so", 'f', 2)],
                        },
                    ],
                },
            ],
            tvm_ffi: Some(RuntimePin {
                file: "libtvm_ffi.so".into(),
                sha256: "0".repeat(64),
                size: 5,
                source: "apache-tvm-ffi==0.1.15.post2".into(),
            }),
        }
    }

    #[test]
    fn round_trip_is_byte_identical_and_sorted() {
        let text = sample().render();
        let parsed = Lock::parse(&text, Path::new("kernels.lock")).unwrap();
        assert_eq!(parsed.render(), text);
        assert!(text.find("name = \"act\"").unwrap() < text.find("name = \"norm\"").unwrap());
        assert!(text.find("tvm-ffi01-cpu-x86_64-linux").unwrap() < text.find("tvm-ffi01-cu130").unwrap());
        assert!(text.find("_n.so").unwrap() < text.find("metadata.json").unwrap());
        let mut shuffled = sample();
        shuffled.kernels.reverse();
        assert_eq!(shuffled.render(), text);
    }

    #[test]
    fn errors_name_file_line_and_column() {
        let path = Path::new("kernels.lock");
        let cases: &[(&str, &str)] = &[
            (
                "version = 2\n",
                "kernels.lock:1:1: lock format version 2 is not supported (expected 1); run `cargo kernels lock`",
            ),
            ("version = 1\nextra = 1\n", "kernels.lock:2:1: unknown field `extra`"),
            (
                "version = 1\n[[kernel]]\nname = \"a\"\nrepo = \"o/a\"\ncommit = \"c\"\n",
                "kernels.lock:3:1: kernel `a`: needs exactly one of `requested-version` and `requested-revision`",
            ),
            (
                "version = 1\n[[kernel]]\nname = \"a\"\nrepo = \"o/a\"\nrequested-version = 1\ncommit = \"c\"\n[[kernel.variant]]\nname = \"v\"\nfiles = [{ path = \"x\", sha256 = \"zz\", size = 1 }]\n",
                "kernels.lock:9:34: kernel `a`, variant `v`, file `x`: `zz` is not a hex sha256",
            ),
            ("version = [\n", "kernels.lock:"),
        ];
        for (text, expected) in cases {
            let err = Lock::parse(text, path).unwrap_err().to_string();
            assert!(err.starts_with(expected), "for:\n{text}\nexpected: {expected}\n     got: {err}");
        }
        assert_eq!(Lock::read(Path::new("/nonexistent/kernels.lock")).unwrap(), None);
    }

    #[test]
    fn staleness_names_what_changed() {
        let manifest = Manifest::parse(
            "[kernels.act]\nrepo = \"org/act\"\nversion = 2\n[kernels.new]\nrepo = \"org/new\"\nversion = 1\n[kernels.loc]\npath = \"x\"\n",
            Path::new("kernels.toml"),
        )
        .unwrap();
        let stale: Vec<String> = sample().staleness(&manifest).iter().map(ToString::to_string).collect();
        assert_eq!(
            stale,
            [
                "kernel `act` is locked as org/act @ version 1 but declared as org/act @ version 2",
                "kernel `new` is not locked",
                "kernel `norm` is locked but no longer declared",
            ]
        );
    }
}
