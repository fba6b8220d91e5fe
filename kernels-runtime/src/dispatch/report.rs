//! [`report()`]: which layer uses what on which device, and why.

use std::collections::BTreeMap;
use std::fmt;

use crate::registry::Registry;
use crate::variant::BackendKind;

use super::cache::{Resolution, state};
use super::decide::Choice;
use super::mode::{Mode, is_deterministic};
use super::target::Target;

/// Every kernelized layer seen so far with its choice per target and mode, and every layer of
/// the registries they dispatch through (including layers not called yet).
pub fn report() -> Report {
    let state = state();
    build_report(&state.resolutions, &state.registries)
}

/// Like [`report`], also listing the layers of `registry` (e.g. `&crate::__KERNELS_REGISTRY`)
/// when no layer has dispatched through it yet.
pub fn report_with(registry: &'static Registry) -> Report {
    let state = state();
    let mut registries = state.registries.clone();
    if !registries.iter().any(|r| std::ptr::eq(*r, registry)) {
        registries.push(registry);
    }
    build_report(&state.resolutions, &registries)
}

fn build_report(resolutions: &[&'static Resolution], registries: &[&'static Registry]) -> Report {
    fn layer<'m>(layers: &'m mut BTreeMap<&'static str, LayerReport>, name: &'static str) -> &'m mut LayerReport {
        layers.entry(name).or_insert_with(|| LayerReport { layer: name, mapped: Vec::new(), resolutions: Vec::new() })
    }
    let mut layers: BTreeMap<&'static str, LayerReport> = BTreeMap::new();
    for m in registries.iter().flat_map(|r| r.layers) {
        let report = layer(&mut layers, m.layer);
        if !report.mapped.contains(&m.device) {
            report.mapped.push(m.device);
        }
    }
    for r in resolutions {
        layer(&mut layers, r.layer).resolutions.push(r);
    }
    let mut layers: Vec<LayerReport> = layers.into_values().collect();
    for l in &mut layers {
        l.mapped.sort();
        l.resolutions.sort_by_key(|r| (r.type_name, r.target, r.mode, r.deterministic));
    }
    Report { layers }
}

/// What every known layer uses; [`Display`](fmt::Display) renders a table and the decision
/// traces.
#[derive(Debug, Clone)]
pub struct Report {
    /// By layer name.
    pub layers: Vec<LayerReport>,
}

/// One layer in a [`Report`].
#[derive(Debug, Clone)]
pub struct LayerReport {
    /// The layer name.
    pub layer: &'static str,
    /// The device kinds `kernels.toml` maps it for.
    pub mapped: Vec<BackendKind>,
    /// Its decisions so far.
    pub resolutions: Vec<&'static Resolution>,
}

impl Report {
    /// The decision for `layer` on `target` in `mode`, with deterministic mode as it is now
    /// ([`is_deterministic`]), if made.
    pub fn find(&self, layer: &str, target: Target, mode: Mode) -> Option<&'static Resolution> {
        let deterministic = is_deterministic();
        self.layers
            .iter()
            .filter(|l| l.layer == layer)
            .flat_map(|l| l.resolutions.iter().copied())
            .find(|r| r.target == target && r.mode == mode && r.deterministic == deterministic)
    }
}

/// The choice, and what verify mode found of it.
fn verified(r: &Resolution) -> String {
    let v = r.verification();
    match v.checks {
        0 => r.choice.to_string(),
        _ if v.is_clean() => format!("{} (verified: {} checks within tolerance)", r.choice, v.checks),
        _ => format!(
            "{} (verify: {} checks, {} beyond tolerance, {} not compared)",
            r.choice, v.checks, v.beyond, v.failed
        ),
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rows: Vec<[String; 5]> = vec![["layer", "type", "device", "mode", "choice"].map(str::to_owned)];
        for l in &self.layers {
            if l.resolutions.is_empty() {
                let mapped: Vec<&str> = l.mapped.iter().map(|k| k.as_str()).collect();
                let choice = format!("not called yet (mapped for {})", mapped.join(", "));
                rows.push([l.layer.to_owned(), "-".into(), "-".into(), "-".into(), choice]);
            }
            for r in &l.resolutions {
                rows.push([
                    l.layer.to_owned(),
                    r.type_name.to_owned(),
                    r.target.to_string(),
                    if r.deterministic { format!("{}, deterministic", r.mode) } else { r.mode.to_string() },
                    match r.switched_off() {
                        Some(by) => format!("Rust forward: {by} (else {})", r.choice),
                        None => verified(r),
                    },
                ]);
            }
        }
        let widths: Vec<usize> = (0..5).map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0)).collect();
        for row in &rows {
            let mut line = String::new();
            for (c, cell) in row.iter().enumerate() {
                line.push_str(&format!("{cell:<w$}  ", w = widths[c]));
            }
            writeln!(f, "{}", line.trim_end())?;
        }
        for r in self.layers.iter().flat_map(|l| &l.resolutions) {
            let mut detail = match &r.choice {
                Choice::Kernel(k) => k.trace.to_string(),
                Choice::Fallback(reason) => format!("Rust forward: {reason}"),
            };
            let verification = r.verification();
            if verification.checks > 0 {
                detail.push_str(&format!("\nverify: {verification}"));
            }
            writeln!(f, "\n{r}:")?;
            for line in detail.lines() {
                writeln!(f, "  {line}")?;
            }
        }
        Ok(())
    }
}
