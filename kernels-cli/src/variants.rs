//! `cargo kernels variants`: every variant a Hub kernel repo publishes at one revision, and
//! what this machine (or a build target) makes of each.
//!
//! On this machine, the real selection runs for each device present (the CPU always, and each
//! CUDA device, ROCm, XPU or Metal when detected); every variant is judged by the device of its
//! own backend, so a CUDA variant on a machine without CUDA is rejected for want of the device.
//! With a target, each variant is judged by whether a build for that target embeds it.

use kernels_build::hub::{FetchError, Hub};
use kernels_build::manifest::Requested;
use kernels_build::target::TargetSpec;
use kernels_runtime::platform::Platform;
use kernels_runtime::select::{Candidate, DecisionTrace, Request, Verdict, select};
use kernels_runtime::variant::{BackendKind, VariantName};
use serde_json::json;

/// What `cargo kernels variants` was asked.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Query {
    /// The Hub kernel repo, `org/name`.
    pub(crate) repo: String,
    /// The version or revision asked for; `None`: the newest `v<N>` branch, else `main`.
    pub(crate) requested: Option<Requested>,
    /// Judge for this build target instead of this machine.
    pub(crate) target: Option<TargetSpec>,
    /// Print JSON instead of a table.
    pub(crate) json: bool,
}

/// The revision listed: how it was named and the commit it points to.
pub(crate) struct Resolved {
    /// `v<N>`, or the revision as given (`main` by default).
    pub(crate) revision: String,
    /// The major version, when a `v<N>` branch was listed.
    pub(crate) version: Option<u64>,
    pub(crate) commit: String,
}

/// One line of the answer: a variant as one device (or the target) sees it.
struct Row {
    name: String,
    /// Why this runtime cannot load it, if it cannot ([`VariantName::loadable`]).
    unloadable: Option<String>,
    /// `cpu`, `cuda:0`, … (the target's backend kind with a target); `None` for names that
    /// name no backend of their own (noarch, universal, unparseable).
    device: Option<String>,
    /// `chosen`, `accepted` or `rejected`.
    verdict: &'static str,
    reason: String,
}

/// The label of the device a request is for: `cpu`, or `<backend>:<ordinal>`.
pub(crate) fn device_label(request: Request) -> String {
    match request.backend {
        BackendKind::Cpu => "cpu".to_owned(),
        kind => format!("{kind}:{}", request.device),
    }
}

/// The devices present on `platform`, one request each: the CPU always, then every CUDA
/// device, then ROCm, XPU and Metal device 0 when detected.
pub(crate) fn requests(platform: &Platform) -> Vec<Request> {
    let mut requests = vec![Request::cpu()];
    if let Some(cuda) = platform.cuda.present() {
        requests.extend(cuda.devices.iter().map(|d| Request::cuda(d.ordinal)));
    }
    for kind in [BackendKind::Rocm, BackendKind::Xpu, BackendKind::Metal] {
        if platform.has_backend(kind).is_ok() {
            requests.push(Request::new(kind, 0));
        }
    }
    requests
}

/// Lists the variants and prints what becomes of each.
pub(crate) fn run(query: &Query, hub: &mut Hub) -> Result<(), String> {
    let resolved = resolve(query, hub)?;
    let names =
        hub.list_variants(&query.repo, &resolved.commit).map_err(|e| hub_failure(query, &resolved.revision, &e))?;
    let unloadable = |name: &str| match VariantName::parse(name) {
        Ok(v) => v.loadable().err().map(|e| e.to_string()),
        Err(e) => Some(format!("not a variant name: {}", e.reason)),
    };
    let mut header = json!({
        "repo": query.repo,
        "revision": resolved.revision,
        "version": resolved.version,
        "commit": resolved.commit,
    });
    let (rows, summary) = match &query.target {
        Some(spec) => {
            let rows: Vec<Row> = names
                .iter()
                .map(|name| {
                    let (verdict, reason) = match spec.wants(name) {
                        Ok(()) => ("accepted", format!("a build for {} embeds it", spec.triple)),
                        Err(why) => ("rejected", why),
                    };
                    Row {
                        name: name.clone(),
                        unloadable: unloadable(name),
                        device: backend_of(name).map(|k| k.as_str().to_owned()),
                        verdict,
                        reason,
                    }
                })
                .collect();
            let embedded: Vec<&str> =
                rows.iter().filter(|r| r.verdict == "accepted").map(|r| r.name.as_str()).collect();
            header["target"] = json!(spec.triple);
            header["embedded"] = json!(embedded);
            let summary = match embedded[..] {
                [] => format!("a build for {} embeds none of them", spec.triple),
                _ => format!("a build for {} embeds: {}", spec.triple, embedded.join(", ")),
            };
            (rows, summary)
        }
        None => {
            let platform = Platform::detect();
            let candidates: Vec<Candidate> = names.iter().map(Candidate::new).collect();
            let traces: Vec<DecisionTrace> =
                requests(&platform).into_iter().map(|r| select(&platform, r, &candidates).trace).collect();
            let mut rows = Vec::new();
            for name in &names {
                let kind = backend_of(name);
                let judged: Vec<&DecisionTrace> = match kind {
                    Some(kind) => traces.iter().filter(|t| t.request.backend == kind).collect(),
                    // No backend of its own: rejected whatever the device; the CPU's trace says why.
                    None => traces.iter().take(1).collect(),
                };
                // A backend this machine lacks: selection for its device 0 says why, and the
                // device is named by its kind alone (there is no such device here).
                let absent;
                let (judged, present) = match (kind, judged.is_empty()) {
                    (Some(kind), true) => {
                        absent = select(&platform, Request::new(kind, 0), &[Candidate::new(name)]).trace;
                        (vec![&absent], false)
                    }
                    _ => (judged, true),
                };
                for trace in judged {
                    let device = match (kind, present) {
                        (None, _) => None,
                        (Some(_), true) => Some(device_label(trace.request)),
                        (Some(kind), false) => Some(kind.as_str().to_owned()),
                    };
                    let (verdict, reason) = verdict_of(trace, name);
                    rows.push(Row { name: name.clone(), unloadable: unloadable(name), device, verdict, reason });
                }
            }
            let devices: Vec<serde_json::Value> = traces
                .iter()
                .map(|t| json!({ "device": device_label(t.request), "platform": t.platform, "chosen": t.chosen() }))
                .collect();
            let mut summary = String::from("chosen:");
            for t in &traces {
                let chosen = t.chosen().unwrap_or("none: no usable variant for this device");
                summary.push_str(&format!("\n  {:<8}  {chosen}", device_label(t.request)));
            }
            header["platform"] = json!(traces.first().map(|t| t.platform.clone()));
            header["devices"] = json!(devices);
            (rows, summary)
        }
    };
    if query.json {
        header["variants"] = rows
            .iter()
            .map(|r| {
                json!({
                    "name": r.name,
                    "loadable": r.unloadable.is_none(),
                    "device": r.device,
                    "verdict": r.verdict,
                    "reason": r.reason,
                })
            })
            .collect();
        crate::print_json(&header)?;
        return Ok(());
    }
    println!("{} at {} (commit {})", query.repo, resolved.revision, resolved.commit);
    match &query.target {
        Some(spec) => println!("for builds targeting {}\n", spec.triple),
        None => println!("on this machine: {}\n", header["platform"].as_str().unwrap_or("-")),
    }
    if rows.is_empty() {
        println!("no variants: build/ holds no variant directory");
        return Ok(());
    }
    println!("{}", table(&rows));
    println!("\n{summary}");
    Ok(())
}

/// `chosen`, `accepted` or `rejected`, and why, for `name` in `trace`.
pub(crate) fn verdict_of(trace: &DecisionTrace, name: &str) -> (&'static str, String) {
    match trace.verdict(name) {
        Some(Verdict::Chosen { note }) => (
            "chosen",
            note.clone().unwrap_or_else(|| format!("the best usable variant for {}", device_label(trace.request))),
        ),
        Some(Verdict::Accepted { rank, note }) => (
            "accepted",
            match note {
                Some(n) => format!("usable, ranked {rank}; {n}"),
                None => format!("usable, ranked {rank}"),
            },
        ),
        Some(Verdict::Rejected(r)) => ("rejected", r.to_string()),
        None => ("rejected", "not judged".into()),
    }
}

/// The backend kind a variant name is built for; `None` when it names none.
fn backend_of(name: &str) -> Option<BackendKind> {
    VariantName::parse(name).ok().and_then(|v| v.backend()).map(|b| b.kind())
}

/// The rows as an aligned table under a header line.
fn table(rows: &[Row]) -> String {
    let head = ["VARIANT", "LOADABLE", "DEVICE", "VERDICT", "REASON"];
    let cells: Vec<[String; 5]> = rows
        .iter()
        .map(|r| {
            [
                r.name.clone(),
                if r.unloadable.is_none() { "yes" } else { "no" }.to_owned(),
                r.device.clone().unwrap_or_else(|| "-".into()),
                r.verdict.to_owned(),
                r.reason.clone(),
            ]
        })
        .collect();
    let mut widths = head.map(str::len);
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cols: [&str; 5]| {
        let text: Vec<String> = cols.iter().zip(widths).map(|(c, w)| format!("{c:<w$}")).collect();
        text.join("  ").trim_end().to_owned()
    };
    let mut out = vec![line(head)];
    out.extend(cells.iter().map(|c| line([&c[0], &c[1], &c[2], &c[3], &c[4]])));
    out.join("\n")
}

/// The revision to list: the one asked for, else the newest `v<N>` branch, else `main`.
/// The revision `query` asks for (default: the newest `v<N>` branch, else `main`) and its commit.
pub(crate) fn resolve(query: &Query, hub: &mut Hub) -> Result<Resolved, String> {
    let repo = &query.repo;
    match &query.requested {
        Some(Requested::Version(v)) => {
            let revision = format!("v{v}");
            let commit = hub.resolve_version(repo, *v).map_err(|e| hub_failure(query, &revision, &e))?;
            Ok(Resolved { revision, version: Some(*v), commit })
        }
        Some(Requested::Revision(r)) => {
            let commit = hub.resolve_revision(repo, r).map_err(|e| hub_failure(query, r, &e))?;
            Ok(Resolved { revision: r.clone(), version: None, commit })
        }
        None => match hub.newest_version(repo).map_err(|e| hub_failure(query, "its newest version", &e))? {
            Some((v, commit)) => Ok(Resolved { revision: format!("v{v}"), version: Some(v), commit }),
            None => {
                let commit = hub.resolve_revision(repo, "main").map_err(|e| hub_failure(query, "main", &e))?;
                Ok(Resolved { revision: "main".into(), version: None, commit })
            }
        },
    }
}

/// A Hub failure, naming the repo and revision and what to check.
fn hub_failure(query: &Query, revision: &str, e: &FetchError) -> String {
    let check = match e {
        FetchError::NoSuchVersion { .. } => {
            "pick one of the versions listed with --version, or a branch, tag or commit with --revision".to_owned()
        }
        _ => {
            let has = match &query.requested {
                None => "a v<N> branch or main".to_owned(),
                Some(Requested::Version(v)) => format!("branch v{v}"),
                Some(Requested::Revision(r)) => format!("the branch, tag or commit `{r}`"),
            };
            format!(
                "check that `{}` is the id of a kernel repo on the Hub (HF_ENDPOINT), that it has {has}, \
                 that HF_TOKEN is set if it is private, and that the network is reachable",
                query.repo
            )
        }
    };
    format!("cannot list the variants of `{}` at {revision}: {e}\n  {check}", query.repo)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_aligned() {
        let row = |name: &str, verdict: &'static str, reason: &str| Row {
            name: name.into(),
            unloadable: None,
            device: Some("cpu".into()),
            verdict,
            reason: reason.into(),
        };
        let t = table(&[row("tvm-ffi01-cpu-x86_64-linux", "chosen", "best"), row("a", "rejected", "")]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3);
        let at = |l: &str| l.find(" cpu ").unwrap_or(usize::MAX);
        assert_eq!(at(lines[1]), at(lines[2]), "{t}");
        assert!(lines[2].ends_with("rejected"), "no trailing spaces: {t:?}");
    }
}
