//! `cargo kernels download` and `cargo kernels verify`: the pinned variants a target can run,
//! fetched into the Hub cache or checked there, file by file; and the progress bars drawn
//! while files download.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use kernels_build::hub::{Hub, Progress};
use kernels_build::lock::{ResolvedFile, ResolvedKernel, ResolvedVariant};
use kernels_build::verify;
use kernels_runtime::digest::sha256_hex;
use serde_json::json;

/// One bar per file downloading, on stderr. indicatif draws nothing when stderr is not a
/// terminal; [`bars`] does not even make one then.
#[derive(Debug, Default)]
pub(crate) struct Bars {
    bar: Option<ProgressBar>,
}

/// Progress bars for a [`Hub`], when stderr is a terminal.
pub(crate) fn bars() -> Option<Box<dyn Progress>> {
    std::io::stderr().is_terminal().then(|| Box::new(Bars::default()) as Box<dyn Progress>)
}

/// `hub`, drawing a bar for each download when stderr is a terminal.
pub(crate) fn with_bars(hub: Hub) -> Hub {
    match bars() {
        Some(progress) => hub.with_progress(progress),
        None => hub,
    }
}

impl Progress for Bars {
    fn bytes(&mut self, path: &str, so_far: u64, total: Option<u64>) {
        let bar = self.bar.get_or_insert_with(|| {
            let name = path.rsplit('/').next().unwrap_or(path).to_owned();
            // `wide_bar` takes what the terminal's width leaves, so a bar never wraps.
            let (template, len) = match total {
                Some(total) => {
                    ("  {msg:24!} {bytes:>10}/{total_bytes:<10} {bytes_per_sec:>12} [{wide_bar}]", Some(total))
                }
                None => ("  {msg:24!} {bytes:>10} {bytes_per_sec:>12} {spinner}", None),
            };
            let bar = ProgressBar::with_draw_target(len, ProgressDrawTarget::stderr());
            if let Ok(style) = ProgressStyle::with_template(template) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_message(name);
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        bar.set_position(so_far);
    }

    fn done(&mut self, _path: &str) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

/// A pinned file as found in the cache.
#[derive(Debug, Clone)]
pub(crate) struct FileCheck {
    pub(crate) file: ResolvedFile,
    /// Where it lies (or would lie) in the Hub cache.
    pub(crate) path: PathBuf,
    /// `ok`, `mismatch` or `missing`.
    pub(crate) status: &'static str,
    pub(crate) sha256: Option<String>,
    pub(crate) size: Option<u64>,
    /// Why it cannot be read, when it is there but unreadable.
    pub(crate) error: Option<String>,
}

impl FileCheck {
    fn ok(&self) -> bool {
        self.status == "ok"
    }
}

/// Each pinned file of `variant` in the cache, checked against its pin; nothing is changed.
pub(crate) fn check_cached(hub: &Hub, kernel: &ResolvedKernel, variant: &ResolvedVariant) -> Vec<FileCheck> {
    variant
        .files
        .iter()
        .map(|pin| {
            let path = hub.cache_path(&kernel.repo, &kernel.commit, &format!("build/{}/{}", variant.name, pin.path));
            let found = |status, sha256, size, error| FileCheck {
                file: pin.clone(),
                path: path.clone(),
                status,
                sha256,
                size,
                error,
            };
            match std::fs::read(&path) {
                Ok(bytes) => {
                    let sha = sha256_hex(&bytes);
                    let size = bytes.len() as u64;
                    let status = if sha == pin.sha256 && size == pin.size { "ok" } else { "mismatch" };
                    found(status, Some(sha), Some(size), None)
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => found("missing", None, None, None),
                Err(e) => found("mismatch", None, None, Some(e.to_string())),
            }
        })
        .collect()
}

/// The text line for a file that failed verification.
fn failure_line(kernel: &ResolvedKernel, variant: &ResolvedVariant, c: &FileCheck) -> String {
    let whose = format!("{} of kernel `{}`, variant {} ({})", c.file.path, kernel.name, variant.name, c.path.display());
    match (c.status, &c.sha256, &c.error) {
        ("missing", _, _) => format!("missing: {whose}: not in the cache"),
        (_, Some(sha), _) => {
            let size = match c.size {
                Some(n) if n != c.file.size => format!(" ({n} bytes, pinned {})", c.file.size),
                _ => String::new(),
            };
            format!("sha256 mismatch: {whose}: pinned {}, found {sha}{size}", c.file.sha256)
        }
        (_, None, e) => format!("unreadable: {whose}: {}", e.as_deref().unwrap_or("cannot be read")),
    }
}

/// `verify`: every pinned file of each variant the target runs, checked in the cache. With
/// every file intact, the variant is also checked against its `metadata.json` digest.
pub(crate) fn verify(
    hub: &mut Hub,
    variants: &[(&ResolvedKernel, &ResolvedVariant)],
    triple: &str,
    os: &kernels_runtime::variant::Os,
    json: bool,
) -> Result<(), String> {
    let mut files = Vec::new();
    let mut variant_rows = Vec::new();
    let (mut failed_files, mut failed_variants) = (0usize, 0usize);
    for &(k, v) in variants {
        let checks = check_cached(hub, k, v);
        let mut error = None;
        for c in checks.iter().filter(|c| !c.ok()) {
            eprintln!("  {}", failure_line(k, v, c));
        }
        if checks.iter().all(FileCheck::ok) {
            if let Err(e) = verify::hub_variant(hub, &k.repo, &k.commit, v, os) {
                error = Some(e.to_string());
            }
            for note in hub.take_notes() {
                eprintln!("  note: {note}");
            }
        } else {
            error = Some(format!(
                "{} of {} file(s) do not match kernels.lock",
                checks.iter().filter(|c| !c.ok()).count(),
                checks.len()
            ));
        }
        failed_files += checks.iter().filter(|c| !c.ok()).count();
        match &error {
            None => eprintln!("  verified {} {}", k.name, v.name),
            Some(e) => {
                failed_variants += 1;
                eprintln!("  failed {} {}: {e}", k.name, v.name);
            }
        }
        for c in &checks {
            files.push(json!({
                "kernel": k.name,
                "repo": k.repo,
                "commit": k.commit,
                "variant": v.name,
                "file": c.file.path,
                "path": c.path.display().to_string(),
                "status": c.status,
                "expected_sha256": c.file.sha256,
                "actual_sha256": c.sha256,
                "expected_size": c.file.size,
                "actual_size": c.size,
                "error": c.error,
            }));
        }
        variant_rows.push(json!({
            "kernel": k.name,
            "variant": v.name,
            "status": if error.is_none() { "ok" } else { "failed" },
            "error": error,
        }));
    }
    let cache = hub.settings().cache_dir.display().to_string();
    eprintln!("{} variant(s) for {triple} in {cache}", variants.len());
    if json {
        let count = |status: &str| files.iter().filter(|f| f["status"] == status).count();
        let value = json!({
            "target": triple,
            "cache": cache,
            "ok": failed_variants == 0,
            "summary": {
                "variants": variants.len(),
                "variants_failed": failed_variants,
                "files": files.len(),
                "ok": count("ok"),
                "mismatch": count("mismatch"),
                "missing": count("missing"),
            },
            "variants": variant_rows,
            "files": files,
        });
        crate::print_json(&value)?;
    }
    match (failed_variants, failed_files) {
        (0, _) => Ok(()),
        (v, 0) => Err(format!("{v} variant(s) failed verification")),
        (v, f) => Err(format!(
            "{f} file(s) of {v} variant(s) do not match kernels.lock: `cargo kernels download` fetches them again"
        )),
    }
}

/// `download`: every pinned variant the target runs, from the cache when intact there, else
/// from the Hub, verified.
pub(crate) fn download(
    hub: &mut Hub,
    variants: &[(&ResolvedKernel, &ResolvedVariant)],
    triple: &str,
    os: &kernels_runtime::variant::Os,
    json: bool,
) -> Result<(), String> {
    let mut rows = Vec::new();
    let (mut fetched, mut total_bytes) = (0usize, 0u64);
    for &(k, v) in variants {
        let cached = check_cached(hub, k, v).iter().all(FileCheck::ok);
        let checked = verify::hub_variant(hub, &k.repo, &k.commit, v, os);
        for note in hub.take_notes() {
            eprintln!("  note: {note}");
        }
        let verified = checked.map_err(|e| format!("kernel `{}`, variant {}: {e}", k.name, v.name))?;
        eprintln!("  {} {} {}", if cached { "cached" } else { "fetched" }, k.name, v.name);
        let bytes: u64 = v.files.iter().map(|f| f.size).sum();
        total_bytes += bytes;
        fetched += usize::from(!cached);
        let files: Vec<serde_json::Value> = v
            .files
            .iter()
            .map(|f| json!({ "file": f.path, "path": variant_file(&verified.dir, &f.path), "bytes": f.size, "sha256": f.sha256 }))
            .collect();
        rows.push(json!({
            "kernel": k.name,
            "repo": k.repo,
            "commit": k.commit,
            "variant": v.name,
            "status": if cached { "cached" } else { "fetched" },
            "dir": verified.dir.display().to_string(),
            "bytes": bytes,
            "files": files,
        }));
    }
    let cache = hub.settings().cache_dir.display().to_string();
    eprintln!("{} variant(s) for {triple} in {cache}", variants.len());
    if json {
        let value = json!({
            "target": triple,
            "cache": cache,
            "summary": {
                "variants": variants.len(),
                "fetched": fetched,
                "cached": variants.len() - fetched,
                "bytes": total_bytes,
            },
            "variants": rows,
        });
        crate::print_json(&value)?;
    }
    Ok(())
}

fn variant_file(dir: &Path, file: &str) -> String {
    dir.join(file).display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_bar_is_drawn_when_stderr_is_not_a_terminal() {
        if std::io::stderr().is_terminal() {
            return;
        }
        assert!(bars().is_none());
        // indicatif hides its stderr target too.
        assert!(ProgressDrawTarget::stderr().is_hidden());
        let mut bars = Bars::default();
        bars.bytes("build/v/x.so", 0, Some(10));
        assert!(bars.bar.as_ref().is_some_and(ProgressBar::is_hidden));
        bars.bytes("build/v/x.so", 10, Some(10));
        bars.done("build/v/x.so");
        assert!(bars.bar.is_none());
    }

    #[test]
    fn cached_files_are_checked_without_being_changed() {
        use kernels_build::hub::HubSettings;
        let cache = tempfile::tempdir().unwrap();
        let settings = HubSettings {
            endpoint: "http://127.0.0.1:9".into(),
            cache_dir: cache.path().to_owned(),
            token: None,
            offline: true,
        };
        let hub = Hub::new(settings);
        let pin = |path: &str, bytes: &[u8]| ResolvedFile {
            path: path.into(),
            sha256: sha256_hex(bytes),
            size: bytes.len() as u64,
        };
        let variant = ResolvedVariant {
            name: "tvm-ffi01-cpu-x86_64-linux".into(),
            files: vec![pin("a.so", b"good"), pin("b.so", b"also good"), pin("metadata.json", b"{}")],
        };
        let kernel = ResolvedKernel {
            name: "k".into(),
            repo: "org/k".into(),
            requested: kernels_build::manifest::Requested::Version(1),
            commit: "0123456789abcdef0123456789abcdef01234567".into(),
            variants: vec![variant.clone()],
        };
        let put = |file: &str, bytes: &[u8]| {
            let p = hub.cache_path(&kernel.repo, &kernel.commit, &format!("build/{}/{file}", variant.name));
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, bytes).unwrap();
        };
        put("a.so", b"good");
        put("b.so", b"bad!");
        let checks = check_cached(&hub, &kernel, &variant);
        let status: Vec<&str> = checks.iter().map(|c| c.status).collect();
        assert_eq!(status, ["ok", "mismatch", "missing"]);
        assert_eq!(checks[1].sha256.as_deref(), Some(sha256_hex(b"bad!").as_str()));
        let line = failure_line(&kernel, &variant, &checks[1]);
        assert!(
            line.starts_with("sha256 mismatch: b.so of kernel `k`") && line.contains("(4 bytes, pinned 9)"),
            "{line}"
        );
        assert!(failure_line(&kernel, &variant, &checks[2]).starts_with("missing: metadata.json"));
        // The damaged file is still there: verify reports, download repairs.
        assert!(checks[1].path.is_file());
    }
}
