//! Everything the build script reads from its environment, and everything it tells Cargo.
//!
//! Every variable is read through [`Env::var`], which records it so that
//! `cargo:rerun-if-env-changed` is emitted for it; every `cargo:` line goes through
//! [`CargoOutput`], which tests capture instead of printing.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Where variables come from: the process environment, or a fixed map (tests).
#[derive(Debug)]
pub struct Env {
    overrides: Option<BTreeMap<String, OsString>>,
    read: Mutex<BTreeSet<String>>,
}

impl Default for Env {
    fn default() -> Self {
        Env::process()
    }
}

impl Env {
    /// Reads the process environment.
    pub fn process() -> Self {
        Env { overrides: None, read: Mutex::new(BTreeSet::new()) }
    }

    /// Reads only the given variables (for tests and embedding).
    pub fn fixed<K: Into<String>, V: Into<OsString>>(vars: impl IntoIterator<Item = (K, V)>) -> Self {
        Env {
            overrides: Some(vars.into_iter().map(|(k, v)| (k.into(), v.into())).collect()),
            read: Mutex::new(BTreeSet::new()),
        }
    }

    /// The variable's value; empty values count as unset. Records the read.
    pub fn var_os(&self, key: &str) -> Option<OsString> {
        self.read.lock().unwrap_or_else(|e| e.into_inner()).insert(key.to_owned());
        let v = match &self.overrides {
            Some(map) => map.get(key).cloned(),
            None => std::env::var_os(key),
        };
        v.filter(|v| !v.is_empty())
    }

    /// The variable as UTF-8 text, if set.
    pub fn var(&self, key: &str) -> Option<String> {
        self.var_os(key).map(|v| v.to_string_lossy().into_owned())
    }

    /// The variable as a path, if set.
    pub fn path(&self, key: &str) -> Option<PathBuf> {
        self.var_os(key).map(PathBuf::from)
    }

    /// Whether the variable is set to a true value, by the runtime's one rule
    /// ([`kernels_runtime::env::is_true`]).
    pub fn flag(&self, key: &str) -> bool {
        self.var(key).is_some_and(|v| kernels_runtime::env::is_true(&v))
    }

    /// Every variable read so far, sorted.
    pub fn read_vars(&self) -> Vec<String> {
        self.read.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned().collect()
    }
}

/// The `cargo:` lines a build script prints, collected so tests can inspect them.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CargoOutput {
    lines: Vec<String>,
}

impl CargoOutput {
    /// `cargo:rerun-if-changed=<path>`, only for paths that exist (a missing path would
    /// make Cargo rerun the script on every build).
    pub fn rerun_if_changed(&mut self, path: &Path) {
        if path.exists() {
            self.lines.push(format!("cargo:rerun-if-changed={}", path.display()));
        }
    }

    /// `cargo:rerun-if-env-changed=<key>`.
    pub fn rerun_if_env_changed(&mut self, key: &str) {
        self.lines.push(format!("cargo:rerun-if-env-changed={key}"));
    }

    /// `cargo:warning=<text>`, one line per line of text.
    pub fn warning(&mut self, text: &str) {
        for line in text.lines() {
            self.lines.push(format!("cargo:warning={line}"));
        }
    }

    /// `cargo:rustc-env=<key>=<value>`.
    pub fn rustc_env(&mut self, key: &str, value: &str) {
        self.lines.push(format!("cargo:rustc-env={key}={value}"));
    }

    /// The lines so far.
    pub fn lines(&self) -> &[String] {
        &self.lines
    }

    /// Prints the lines for Cargo, de-duplicated, in the order first emitted.
    pub fn print(&self) {
        let mut seen = BTreeSet::new();
        for line in &self.lines {
            if seen.insert(line) {
                println!("{line}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use kernels_runtime::env::{CARGO_NET_OFFLINE, HF_HUB_OFFLINE, LOCKED};

    use super::Env;

    #[test]
    fn flags_follow_the_runtime_rule() {
        let env = Env::fixed([(LOCKED, "2"), (HF_HUB_OFFLINE, "2"), (CARGO_NET_OFFLINE, "0"), ("OTHER", "yes")]);
        assert!(env.flag(LOCKED));
        assert!(env.flag(HF_HUB_OFFLINE));
        assert!(!env.flag(CARGO_NET_OFFLINE));
        assert!(env.flag("OTHER"));
        assert!(!env.flag("UNSET"));
    }
}
