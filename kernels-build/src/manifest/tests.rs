use kernels_runtime::registry::{LayerEntry, Needs, pick_mapping};
use kernels_runtime::variant::Version;

use super::*;

fn parse(text: &str) -> Result<Manifest, String> {
    Manifest::parse(text, Path::new("kernels.toml"))
        .map_err(|errs| errs.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))
}

fn err(text: &str) -> String {
    match parse(text) {
        Ok(m) => panic!("expected an error for:\n{text}\ngot {m:#?}"),
        Err(e) => e,
    }
}

/// A declared kernel `a`, for the layer cases.
const K: &str = "[kernels.a]\npath = \"k\"\n";

fn v(major: u32, minor: u32) -> Version {
    Version::new(major, minor)
}

fn range(min: Option<Version>, max: Option<Version>) -> Option<CapabilityRange> {
    Some(CapabilityRange { min, max })
}

const FULL: &str = r#"
[kernels.activation]
repo = "kernels-community/activation"
version = 1

[kernels.norm]
repo = "kernels-community/rmsnorm"
revision = "main"

[kernels.local-ops]
path = "../kernels/ops"

[layers.SiluAndMul]
cpu = { kernel = "local-ops", function = "silu_and_mul", deterministic = true, tolerance = { atol = 1e-4 } }
cuda = [
  { kernel = "activation", function = "silu_and_mul", capability = "9.0..9.0" },
  { kernel = "activation", function = "silu_and_mul_any" },
  { kernel = "activation", function = "silu_and_mul", capability = "8.0..", mode = "training" },
]

[[layers.RMSNorm.cuda]]
kernel = "norm"
function = "rms_norm"
capability = "8.0"

[layers.RMSNorm.metal]
kernel = "norm"
function = "rms_norm"

[build]
backends = ["cpu", "cuda"]
embed = false
"#;

#[test]
fn a_full_manifest_becomes_the_typed_model() {
    let m = Manifest::parse(FULL, Path::new("crate/kernels.toml")).unwrap();
    assert_eq!(m.path, Path::new("crate/kernels.toml"));
    assert_eq!(m.dir(), Path::new("crate"));
    assert_eq!(m.kernels.keys().collect::<Vec<_>>(), ["activation", "local-ops", "norm"]);
    assert_eq!(
        m.kernels["activation"].source,
        KernelSource::Hub { repo: "kernels-community/activation".into(), requested: Requested::Version(1) }
    );
    assert_eq!(m.kernels["activation"].location, Location { line: 2, column: 10 });
    assert_eq!(
        m.kernels["norm"].source,
        KernelSource::Hub { repo: "kernels-community/rmsnorm".into(), requested: Requested::Revision("main".into()) }
    );
    assert_eq!(m.kernels["local-ops"].source, KernelSource::Path("../kernels/ops".into()));
    let hub: Vec<_> = m.hub_kernels().map(|(name, repo, _)| (name, repo)).collect();
    assert_eq!(hub, [("activation", "kernels-community/activation"), ("norm", "kernels-community/rmsnorm")]);

    // Sorted by layer, then device; declaration order within one layer and device.
    let order: Vec<(&str, BackendKind, &str)> =
        m.layers.iter().map(|l| (l.layer.as_str(), l.device, l.key.as_str())).collect();
    assert_eq!(
        order,
        [
            ("RMSNorm", BackendKind::Cuda, "[layers.RMSNorm].cuda[0]"),
            ("RMSNorm", BackendKind::Metal, "[layers.RMSNorm].metal"),
            ("SiluAndMul", BackendKind::Cuda, "[layers.SiluAndMul].cuda[0]"),
            ("SiluAndMul", BackendKind::Cuda, "[layers.SiluAndMul].cuda[1]"),
            ("SiluAndMul", BackendKind::Cuda, "[layers.SiluAndMul].cuda[2]"),
            ("SiluAndMul", BackendKind::Cpu, "[layers.SiluAndMul].cpu"),
        ]
    );
    let cuda = m.mappings("SiluAndMul", BackendKind::Cuda);
    assert_eq!(cuda.len(), 3);
    assert_eq!(cuda[0].capability, range(Some(v(9, 0)), Some(v(9, 0))));
    assert_eq!(cuda[0].location, Location { line: 16, column: 3 });
    assert_eq!(cuda[1].capability, None);
    assert_eq!(cuda[1].mode, ModeSupport::Inference);
    assert_eq!((cuda[2].capability, cuda[2].mode), (range(Some(v(8, 0)), None), ModeSupport::Training));
    // A single capability is that capability alone; `[[…]]` tables are array elements.
    let norm = &m.mappings("RMSNorm", BackendKind::Cuda)[0];
    assert_eq!(norm.capability, range(Some(v(8, 0)), Some(v(8, 0))));
    assert_eq!(norm.location, Location { line: 21, column: 1 });
    assert_eq!(m.mappings("SiluAndMul", BackendKind::Cpu)[0].function, "silu_and_mul");
    assert!(m.mappings("SiluAndMul", BackendKind::Cpu)[0].deterministic);
    assert!(m.layers.iter().filter(|l| l.device != BackendKind::Cpu).all(|l| !l.deterministic));
    assert_eq!(m.mappings("SiluAndMul", BackendKind::Cpu)[0].tolerance, Some(Tolerance { atol: 1e-4, rtol: 0.0 }));
    assert!(m.layers.iter().filter(|l| l.device != BackendKind::Cpu).all(|l| l.tolerance.is_none()));
    assert!(m.mappings("SiluAndMul", BackendKind::Rocm).is_empty());
    assert!(m.mappings("Nope", BackendKind::Cuda).is_empty());
    assert_eq!(m.build, BuildOptions { backends: Some(vec![BackendKind::Cpu, BackendKind::Cuda]), embed: false });
}

#[test]
fn an_empty_manifest_has_defaults() {
    let m = parse("").unwrap();
    assert!(m.kernels.is_empty() && m.layers.is_empty());
    assert_eq!(m.build, BuildOptions { backends: None, embed: true });
    assert_eq!(Manifest::parse("", Path::new("kernels.toml")).unwrap().dir(), Path::new("."));
}

#[test]
fn dotted_keys_and_header_tables_are_mappings_too() {
    let m = parse(&format!(
        "{K}[layers.L]\ncpu.kernel = \"a\"\ncpu.function = \"f\"\n[layers.M.cuda]\nkernel = \"a\"\nfunction = \"g\"\n"
    ))
    .unwrap();
    assert_eq!(m.mappings("L", BackendKind::Cpu)[0].key, "[layers.L].cpu");
    assert_eq!(m.mappings("L", BackendKind::Cpu)[0].location, Location { line: 4, column: 1 });
    assert_eq!(m.mappings("M", BackendKind::Cuda)[0].function, "g");
}

/// One case per message: the full text, with `file:line:column` and the key.
#[test]
fn every_error_message() {
    let cases: Vec<(String, &str)> = vec![
        // TOML itself.
        ("[kernels.a\n".into(), "kernels.toml:1:11: invalid TOML: unclosed table, expected `]`"),
        (
            "[kernels.a]\npath = \"x\"\npath = \"y\"\n".into(),
            "kernels.toml:3:1: invalid TOML: duplicate key (at `path`)",
        ),
        // Unknown keys, at every level.
        (
            "[kernel.a]\npath = \"x\"\n".into(),
            "kernels.toml:1:2: kernel: unknown key; did you mean `kernels`? (expected `kernels`, `layers` or `build`)",
        ),
        (
            "[kernels.a]\nrepo = \"o/a\"\nversion = 1\ncolour = 2\n".into(),
            "kernels.toml:4:1: [kernels.a].colour: unknown key (expected `repo`, `version`, `revision`, `path` or `optional`)",
        ),
        (
            format!("{K}[layers.L]\ngpu = {{ kernel = \"a\", function = \"f\" }}\n"),
            "kernels.toml:4:1: [layers.L].gpu: unknown key; did you mean `xpu` or `cpu`? (expected `cuda`, `rocm`, `metal`, `xpu` or `cpu`)",
        ),
        (
            format!("{K}[layers.L]\ncpu = {{ kernel = \"a\", function = \"f\", fn = 1 }}\n"),
            "kernels.toml:4:39: [layers.L].cpu.fn: unknown key (expected `kernel`, `function`, `capability`, `mode`, `deterministic` or `tolerance`)",
        ),
        (
            format!("{K}[layers.L.cuda]\nkernel = \"a\"\nfunction = \"f\"\ncapabilty = \"8.0..\"\n"),
            "kernels.toml:6:1: [layers.L].cuda.capabilty: unknown key; did you mean `capability`? (expected `kernel`, `function`, `capability`, `mode`, `deterministic` or `tolerance`)",
        ),
        (
            format!("{K}[[layers.L.rocm]]\nkernel = \"a\"\nfunction = \"f\"\nmodes = \"training\"\n"),
            "kernels.toml:6:1: [layers.L].rocm[0].modes: unknown key; did you mean `mode`? (expected `kernel`, `function`, `capability`, `mode`, `deterministic` or `tolerance`)",
        ),
        (
            format!("{K}[layers.L]\ncpu = {{ kernel = \"a\", function = \"f\", determinstic = true }}\n"),
            "kernels.toml:4:39: [layers.L].cpu.determinstic: unknown key; did you mean `deterministic`? (expected `kernel`, `function`, `capability`, `mode`, `deterministic` or `tolerance`)",
        ),
        (
            "[build]\nembedd = true\n".into(),
            "kernels.toml:2:1: [build].embedd: unknown key; did you mean `embed`? (expected `backends` or `embed`)",
        ),
        // Shapes.
        ("kernels = 1\n".into(), "kernels.toml:1:11: kernels: expected a table of kernels (`[kernels.<name>]`), found the integer 1"),
        (
            "[kernels]\na = \"org/a\"\n".into(),
            "kernels.toml:2:5: [kernels.a]: expected a table with `repo` and `version` (or `revision`), or `path`, found the string \"org/a\"",
        ),
        ("layers = []\n".into(), "kernels.toml:1:10: layers: expected a table of layers (`[layers.<Layer>]`), found an array"),
        (
            format!("{K}[layers]\nL = 1\n"),
            "kernels.toml:4:5: [layers.L]: expected a table mapping devices to kernels, e.g. `cuda = { kernel = \"…\", function = \"…\" }`, found the integer 1",
        ),
        (
            format!("{K}[layers.L]\ncpu = \"a\"\n"),
            "kernels.toml:4:7: [layers.L].cpu: expected a mapping `{ kernel = \"…\", function = \"…\" }` or an array of them, found the string \"a\"",
        ),
        (
            format!("{K}[layers.L]\ncuda = [\"a\"]\n"),
            "kernels.toml:4:9: [layers.L].cuda[0]: expected a table `{ kernel = \"…\", function = \"…\" }`, found the string \"a\"",
        ),
        ("build = 1\n".into(), "kernels.toml:1:9: [build]: expected a table, found the integer 1"),
        // Kernels.
        (
            "[kernels.\"a b\"]\npath = \"k\"\n".into(),
            "kernels.toml:1:10: [kernels.\"a b\"]: kernel name \"a b\" may only hold ASCII letters, digits, `-` and `_`",
        ),
        (
            "[kernels.a]\npath = \"k\"\nrepo = \"o/a\"\n".into(),
            "kernels.toml:3:1: [kernels.a].repo: a kernel comes either from the Hub (`repo`) or from a local directory (`path`), not both; remove one",
        ),
        (
            "[kernels.a]\npath = \"k\"\nversion = 1\n".into(),
            "kernels.toml:3:1: [kernels.a].version: `version` applies to Hub kernels (`repo`); a `path` kernel is used as it is on disk; remove it",
        ),
        (
            "[kernels.a]\npath = \"\"\n".into(),
            "kernels.toml:2:8: [kernels.a].path: the path is empty: name a Hub-layout directory or a kernel crate",
        ),
        (
            "[kernels.a]\npath = 1\n".into(),
            "kernels.toml:2:8: [kernels.a].path: expected a string (a directory, relative to kernels.toml), found the integer 1",
        ),
        (
            "[kernels.a]\nversion = 1\n".into(),
            "kernels.toml:1:10: [kernels.a]: no `repo`: add `repo = \"<org>/<name>\"` (the Hub repository), or use `path` for a local kernel",
        ),
        (
            "[kernels.a]\n".into(),
            "kernels.toml:1:10: [kernels.a]: empty kernel: give `repo = \"<org>/<name>\"` with `version = <major>` or `revision = \"<commit, branch or tag>\"`, or `path = \"<dir>\"`",
        ),
        (
            "[kernels.a]\nrepo = \"no-slash\"\nversion = 1\n".into(),
            "kernels.toml:2:8: [kernels.a].repo: \"no-slash\" is not a Hub repo id `org/name`: it has no `/`",
        ),
        (
            "[kernels.a]\nrepo = \"org/a b\"\nversion = 1\n".into(),
            "kernels.toml:2:8: [kernels.a].repo: \"org/a b\" is not a Hub repo id `org/name`: only ASCII letters, digits, `-`, `_` and `.` are allowed, and one `/`",
        ),
        (
            "[kernels.a]\nrepo = \"org/-a\"\nversion = 1\n".into(),
            "kernels.toml:2:8: [kernels.a].repo: \"org/-a\" is not a Hub repo id `org/name`: a part cannot start or end with `-` or `.`, nor hold `--` or `..`",
        ),
        (
            "[kernels.a]\nrepo = \"org/\"\nversion = 1\n".into(),
            "kernels.toml:2:8: [kernels.a].repo: \"org/\" is not a Hub repo id `org/name`: each part must hold 1 to 96 characters",
        ),
        (
            "[kernels.a]\nrepo = 1\nversion = 1\n".into(),
            "kernels.toml:2:8: [kernels.a].repo: expected a string (`org/name` of a Hub kernel repository), found the integer 1",
        ),
        (
            "[kernels.a]\nrepo = \"o/a\"\nversion = 1\nrevision = \"x\"\n".into(),
            "kernels.toml:4:1: [kernels.a].revision: `version` and `revision` are exclusive: ask for a major version (Hub branch `v<N>`) or for one revision, not both",
        ),
        (
            "[kernels.a]\nrepo = \"o/a\"\n".into(),
            "kernels.toml:1:10: [kernels.a]: `repo` needs `version = <major>` (Hub branch `v<major>`) or `revision = \"<commit, branch or tag>\"`",
        ),
        (
            "[kernels.a]\nrepo = \"o/a\"\nversion = -1\n".into(),
            "kernels.toml:3:11: [kernels.a].version: expected a non-negative integer (the major version; `version = 1` is Hub branch `v1`), found -1",
        ),
        (
            "[kernels.a]\nrepo = \"o/a\"\nversion = \"1\"\n".into(),
            "kernels.toml:3:11: [kernels.a].version: expected a non-negative integer (the major version; `version = 1` is Hub branch `v1`), found the string \"1\"",
        ),
        (
            "[kernels.a]\nrepo = \"o/a\"\nrevision = \"my branch\"\n".into(),
            "kernels.toml:3:12: [kernels.a].revision: \"my branch\" is not a revision: give a commit, branch or tag, without spaces",
        ),
        // Layers.
        (
            format!("{K}[layers.\"\"]\ncpu = {{ kernel = \"a\", function = \"f\" }}\n"),
            "kernels.toml:3:9: [layers.\"\"]: a layer name cannot be empty",
        ),
        (
            format!("{K}[layers.L]\ncuda = []\n"),
            "kernels.toml:4:8: [layers.L].cuda: an empty list maps nothing: add a mapping or remove the key (the layer then uses its Rust forward)",
        ),
        (
            format!("{K}[layers.L]\ncpu = {{ function = \"f\" }}\n"),
            "kernels.toml:4:1: [layers.L].cpu: missing `kernel = \"<name>\"`: the `[kernels.<name>]` entry that serves this layer",
        ),
        (
            format!("{K}[layers.L]\ncpu = {{ kernel = \"b\", function = \"f\" }}\n"),
            "kernels.toml:4:18: [layers.L].cpu.kernel: unknown kernel \"b\": declare it as `[kernels.b]` (declared: `a`)",
        ),
        (
            "[layers.L]\ncpu = { kernel = \"b\", function = \"f\" }\n".into(),
            "kernels.toml:2:18: [layers.L].cpu.kernel: unknown kernel \"b\": declare it as `[kernels.b]` (none is declared)",
        ),
        (
            format!("{K}[layers.L]\ncpu = {{ kernel = 1, function = \"f\" }}\n"),
            "kernels.toml:4:18: [layers.L].cpu.kernel: expected a string (the name of a `[kernels.<name>]` entry), found the integer 1",
        ),
        (
            format!("{K}[layers.L]\ncpu = {{ kernel = \"a\" }}\n"),
            "kernels.toml:4:1: [layers.L].cpu: missing `function = \"<name>\"`: the function the kernel exports (`__tvm_ffi_<name>`)",
        ),
        (
            format!("{K}[layers.L]\ncpu = {{ kernel = \"a\", function = \"silu-and-mul\" }}\n"),
            "kernels.toml:4:34: [layers.L].cpu.function: \"silu-and-mul\" is not a function name: the kernel exports `__tvm_ffi_<function>`, so use ASCII letters, digits and `_`, not starting with a digit",
        ),
        (
            format!("{K}[layers.L]\ncpu = {{ kernel = \"a\", function = \"f\", capability = \"8.0..\" }}\n"),
            "kernels.toml:4:39: [layers.L].cpu.capability: `capability` applies to `cuda` mappings only (CUDA compute capability), not `cpu`; remove it",
        ),
        (
            "[kernels.rmsnorm]\nrepo = \"kernels-community/rmsnorm\"\nversion = 1\n\n[[layers.RMSNorm.cuda]]\nkernel = \"rmsnorm\"\ncapability = \"8.0..x\"\nfunction = \"rms_norm\"\n".into(),
            "kernels.toml:7:14: [layers.RMSNorm].cuda[0].capability: bad range \"8.0..x\" (expected \"MAJOR.MINOR..MAJOR.MINOR\", either end optional)",
        ),
        (
            format!("{K}[layers.L]\ncuda = {{ kernel = \"a\", function = \"f\", capability = \"9.0..8.0\" }}\n"),
            "kernels.toml:4:53: [layers.L].cuda.capability: empty range \"9.0..8.0\": its start 9.0 is above its end 8.0",
        ),
        (
            format!("{K}[layers.L]\ncuda = {{ kernel = \"a\", function = \"f\", capability = 8.0 }}\n"),
            "kernels.toml:4:53: [layers.L].cuda.capability: expected a string like \"8.0..9.0\", found the float 8.0",
        ),
        (
            format!("{K}[layers.L]\ncpu = {{ kernel = \"a\", function = \"f\", mode = \"train\" }}\n"),
            "kernels.toml:4:46: [layers.L].cpu.mode: unknown mode \"train\" (expected `inference` for a forward-only kernel, or `training` for one with backward support)",
        ),
        (
            format!(
                "{K}[layers.L]\ncuda = [\n  {{ kernel = \"a\", function = \"f\", capability = \"8.0..\", mode = \"training\" }},\n  {{ kernel = \"a\", function = \"g\", capability = \"8.0..\" }},\n]\n"
            ),
            "kernels.toml:6:3: [layers.L].cuda[1]: never chosen: `[layers.L].cuda[0]` (line 5) has the same capability range `8.0..` and serves every mode this one does; remove one, or give them different ranges or modes",
        ),
        (
            format!("{K}[layers.L]\ncpu = {{ kernel = \"a\", function = \"f\", deterministic = \"yes\" }}\n"),
            "kernels.toml:4:55: [layers.L].cpu.deterministic: expected `true` or `false`, found the string \"yes\"",
        ),
        (
            format!(
                "{K}[layers.L]\ncpu = [\n  {{ kernel = \"a\", function = \"f\", deterministic = true }},\n  {{ kernel = \"a\", function = \"g\", deterministic = true }},\n]\n"
            ),
            "kernels.toml:6:3: [layers.L].cpu[1]: never chosen: `[layers.L].cpu[0]` (line 5) has the same capability range `..` and serves every mode this one does and is deterministic too; remove one, or give them different ranges or modes",
        ),
        (
            format!("{K}[layers.L]\ncpu = {{ kernel = \"a\", function = \"f\", tolerance = 1e-3 }}\n"),
            "kernels.toml:4:51: [layers.L].cpu.tolerance: expected a table like `{ atol = 1e-5, rtol = 1e-3 }`, found the float 1e-3",
        ),
        (
            format!("{K}[layers.L]\ncpu = {{ kernel = \"a\", function = \"f\", tolerance = {{}} }}\n"),
            "kernels.toml:4:51: [layers.L].cpu.tolerance: give `atol`, `rtol` or both like `{ atol = 1e-5, rtol = 1e-3 }`",
        ),
        (
            format!("{K}[layers.L]\ncpu = {{ kernel = \"a\", function = \"f\", tolerance = {{ atol = -1e-3 }} }}\n"),
            "kernels.toml:4:60: [layers.L].cpu.tolerance.atol: expected a finite, non-negative number, found -1e-3",
        ),
        (
            format!("{K}[layers.L]\ncpu = {{ kernel = \"a\", function = \"f\", tolerance = {{ rtol = \"1%\" }} }}\n"),
            "kernels.toml:4:60: [layers.L].cpu.tolerance.rtol: expected a number, found the string \"1%\"",
        ),
        (
            format!("{K}[layers.L]\ncpu = {{ kernel = \"a\", function = \"f\", tolerance = {{ atl = 1.0, rtol = 0.1 }} }}\n"),
            "kernels.toml:4:53: [layers.L].cpu.tolerance.atl: unknown key; did you mean `atol`? (expected `atol` or `rtol`)",
        ),
        (
            format!("{K}[layers.L]\ncpu = {{ kernel = \"a\", function = \"f\", tolerance = {{ rtol = nan }} }}\n"),
            "kernels.toml:4:60: [layers.L].cpu.tolerance.rtol: expected a finite, non-negative number, found nan",
        ),
        // [build].
        (
            "[build]\nbackends = \"cpu\"\n".into(),
            "kernels.toml:2:12: [build].backends: expected an array of backends (`cuda`, `rocm`, `metal`, `xpu` or `cpu`), found the string \"cpu\"",
        ),
        (
            "[build]\nbackends = []\n".into(),
            "kernels.toml:2:12: [build].backends: an empty list embeds no kernel: list at least one backend, or remove the key for every backend the target can run",
        ),
        (
            "[build]\nbackends = [\"cpu\", \"vulkan\"]\n".into(),
            "kernels.toml:2:20: [build].backends[1]: unknown backend \"vulkan\" (expected `cuda`, `rocm`, `metal`, `xpu` or `cpu`)",
        ),
        ("[build]\nbackends = [\"cpu\", \"cpu\"]\n".into(), "kernels.toml:2:20: [build].backends[1]: \"cpu\" is listed twice"),
        (
            "[build]\nbackends = [1]\n".into(),
            "kernels.toml:2:13: [build].backends[0]: expected a string (`cuda`, `rocm`, `metal`, `xpu` or `cpu`), found the integer 1",
        ),
        ("[build]\nembed = \"yes\"\n".into(), "kernels.toml:2:9: [build].embed: expected `true` or `false`, found the string \"yes\""),
        (
            "[build]\ntvm-ffi = \"0.1.15\"\n".into(),
            "kernels.toml:2:1: [build].tvm-ffi: unknown key (expected `backends` or `embed`)",
        ),
    ];
    let mut failures = Vec::new();
    for (text, expected) in &cases {
        let got = err(text);
        if got != *expected {
            failures.push(format!("for:\n{text}\nexpected: {expected}\n     got: {got}\n"));
        }
    }
    assert!(failures.is_empty(), "{} of {} cases differ:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

#[test]
fn all_errors_are_reported_in_file_order() {
    let text = "[layers.L]\ncpu = { kernel = \"nope\", function = \"f\" }\n[kernels.a]\nrepo = \"o/a\"\nverison = 1\n[build]\nembed = 1\n";
    assert_eq!(
        err(text),
        [
            "kernels.toml:2:18: [layers.L].cpu.kernel: unknown kernel \"nope\": declare it as `[kernels.nope]` (declared: `a`)",
            "kernels.toml:3:10: [kernels.a]: `repo` needs `version = <major>` (Hub branch `v<major>`) or `revision = \"<commit, branch or tag>\"`",
            "kernels.toml:5:1: [kernels.a].verison: unknown key; did you mean `version`? (expected `repo`, `version`, `revision`, `path` or `optional`)",
            "kernels.toml:7:9: [build].embed: expected `true` or `false`, found the integer 1",
        ]
        .join("\n")
    );
}

#[test]
fn a_broken_kernel_entry_is_still_a_declared_name() {
    // The layer refers to `a`, whose entry is wrong: one error, at the entry, not a second
    // "unknown kernel" at the layer.
    let got = err("[kernels.a]\nrepo = \"o/a\"\n[layers.L]\ncpu = { kernel = \"a\", function = \"f\" }\n");
    assert_eq!(got.lines().count(), 1, "{got}");
    assert!(got.starts_with("kernels.toml:1:10: [kernels.a]: `repo` needs"), "{got}");
}

#[test]
fn the_same_range_in_another_mode_is_reachable() {
    // Inference first, training second: training mode reaches the second.
    let m = parse(&format!(
        "{K}[layers.L]\ncuda = [\n  {{ kernel = \"a\", function = \"f\" }},\n  {{ kernel = \"a\", function = \"g\", mode = \"training\" }},\n]\n"
    ))
    .unwrap();
    let maps = m.mappings("L", BackendKind::Cuda);
    assert_eq!(pick(maps, None, ModeSupport::Inference).unwrap().function, "f");
    assert_eq!(pick(maps, None, ModeSupport::Training).unwrap().function, "g");
    // `..` is the same as no range: a second unbounded mapping is never chosen.
    let got = err(&format!(
        "{K}[layers.L]\ncuda = [\n  {{ kernel = \"a\", function = \"f\", capability = \"..\" }},\n  {{ kernel = \"a\", function = \"g\" }},\n]\n"
    ));
    assert!(got.starts_with("kernels.toml:6:3: [layers.L].cuda[1]: never chosen: `[layers.L].cuda[0]` (line 5) has the same capability range `..`"), "{got}");
}

#[test]
fn deterministic_mappings_are_declared_and_picked_in_deterministic_mode() {
    // A fast kernel first, a deterministic one second with the same range: the second is
    // reachable, in deterministic mode only.
    let m = parse(&format!(
        "{K}[layers.L]\ncpu = [\n  {{ kernel = \"a\", function = \"fast\" }},\n  {{ kernel = \"a\", function = \"steady\", deterministic = true }},\n]\n\
         [layers.M.cuda]\nkernel = \"a\"\nfunction = \"f\"\ndeterministic = false\n"
    ))
    .unwrap();
    let maps = m.mappings("L", BackendKind::Cpu);
    assert_eq!(maps.iter().map(|m| m.deterministic).collect::<Vec<_>>(), [false, true]);
    assert!(!m.mappings("M", BackendKind::Cuda)[0].deterministic);
    let needs = |deterministic| Needs { training: false, deterministic };
    assert_eq!(pick_needing(maps, None, needs(false)).unwrap().function, "fast");
    assert_eq!(pick_needing(maps, None, needs(true)).unwrap().function, "steady");
    assert_eq!(pick_needing(&maps[..1], None, needs(true)), None);

    // A deterministic mapping first: a later one with the same range is never chosen.
    let got = err(&format!(
        "{K}[layers.L]\ncpu = [\n  {{ kernel = \"a\", function = \"steady\", deterministic = true }},\n  {{ kernel = \"a\", function = \"fast\" }},\n]\n"
    ));
    assert!(got.starts_with("kernels.toml:6:3: [layers.L].cpu[1]: never chosen: `[layers.L].cpu[0]` (line 5) has the same capability range `..` and serves every mode this one does;"), "{got}");
}

#[test]
fn optional_applies_to_path_kernels_only() {
    let m = parse("[kernels.a]\npath = \"k\"\noptional = true\n[kernels.b]\npath = \"k\"\n[kernels.c]\npath = \"k\"\noptional = false\n")
        .unwrap();
    let optional: Vec<(&str, bool)> = m.kernels.values().map(|k| (k.name.as_str(), k.optional)).collect();
    assert_eq!(optional, [("a", true), ("b", false), ("c", false)]);
    assert_eq!(m.kernels["a"].source, KernelSource::Path("k".into()));
    let hub = parse("[kernels.h]\nrepo = \"o/h\"\nversion = 1\n").unwrap();
    assert!(!hub.kernels["h"].optional);

    assert_eq!(
        err("[kernels.h]\nrepo = \"o/h\"\nversion = 1\noptional = true\n"),
        "kernels.toml:4:1: [kernels.h].optional: `optional` applies to `path` kernels; a Hub kernel is pinned by kernels.lock and always fetched; remove it"
    );
    assert_eq!(
        err("[kernels.a]\npath = \"k\"\noptional = \"yes\"\n"),
        "kernels.toml:3:12: [kernels.a].optional: expected `true` or `false`, found the string \"yes\""
    );
    // A broken `optional` still declares the kernel: no second error at the layer.
    let got = err("[kernels.a]\npath = \"k\"\noptional = 1\n[layers.L]\ncpu = { kernel = \"a\", function = \"f\" }\n");
    assert_eq!(got.lines().count(), 1, "{got}");
}

#[test]
fn reading_a_missing_file_names_it() {
    let errs = Manifest::from_path(Path::new("/nonexistent/dir/kernels.toml")).unwrap_err();
    assert_eq!(errs.len(), 1);
    assert_eq!(errs[0].line, 0);
    let text = errs[0].to_string();
    assert!(text.starts_with("/nonexistent/dir/kernels.toml: cannot read the kernels manifest: "), "{text}");
}

#[test]
fn from_path_reads_the_file() {
    let dir = std::env::temp_dir().join(format!("kernels-build-manifest-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(MANIFEST_FILE);
    std::fs::write(&path, FULL).unwrap();
    let m = Manifest::from_path(&path).unwrap();
    assert_eq!(m.dir(), dir);
    std::fs::write(&path, "[kernels.a]\n").unwrap();
    let errs = Manifest::from_path(&path).unwrap_err();
    assert_eq!(
        errs[0].to_string(),
        format!(
            "{}:1:10: [kernels.a]: empty kernel: give `repo = \"<org>/<name>\"` with `version = <major>` or `revision = \"<commit, branch or tag>\"`, or `path = \"<dir>\"`",
            path.display()
        )
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn capability_ranges_parse_and_print() {
    let ok = |s: &str| parse_capability_range(s).unwrap();
    assert_eq!(ok("8.0..9.0"), range(Some(v(8, 0)), Some(v(9, 0))));
    assert_eq!(ok("8.0.."), range(Some(v(8, 0)), None));
    assert_eq!(ok("..9.0"), range(None, Some(v(9, 0))));
    assert_eq!(ok(".."), None);
    assert_eq!(ok("9.0"), range(Some(v(9, 0)), Some(v(9, 0))));
    assert_eq!(ok("10.0..12.1"), range(Some(v(10, 0)), Some(v(12, 1))));
    assert_eq!(ok("9.0..9.0"), range(Some(v(9, 0)), Some(v(9, 0))));
    assert_eq!(
        parse_capability_range("9.0..8.0").unwrap_err(),
        "empty range \"9.0..8.0\": its start 9.0 is above its end 8.0"
    );
    for bad in ["", "9", "8.0..x", "8..9", "a.b..", "8.0...9.0", "8.0..9.0..10.0", "+8.0..", "8.0a..", "8.-1.."] {
        let e = parse_capability_range(bad).expect_err(bad);
        assert_eq!(e, format!("bad range {} (expected \"MAJOR.MINOR..MAJOR.MINOR\", either end optional)", quote(bad)));
    }
    for text in ["8.0..9.0", "8.0..", "..9.0", "..", "12.1..12.1"] {
        assert_eq!(range_text(ok(text)), text);
    }
}

/// The mapping the runtime picks among `maps` (the rule is `kernels_runtime::registry::pick_mapping`).
fn pick(maps: &[LayerMapping], capability: Option<Version>, mode: ModeSupport) -> Option<&LayerMapping> {
    pick_needing(maps, capability, Needs { training: mode == ModeSupport::Training, deterministic: false })
}

fn pick_needing(maps: &[LayerMapping], capability: Option<Version>, needs: Needs) -> Option<&LayerMapping> {
    let entries: Vec<LayerEntry> = maps
        .iter()
        .map(|m| LayerEntry {
            layer: "L",
            device: m.device,
            kernel: "k",
            function: "f",
            capability: m.capability,
            mode: m.mode,
            deterministic: m.deterministic,
            tolerance: m.tolerance,
        })
        .collect();
    let chosen = pick_mapping(&entries, capability, needs)?;
    let i = entries.iter().position(|e| std::ptr::eq(e, chosen)).expect("one of the entries");
    Some(&maps[i])
}

fn mapping(function: &str, capability: &str, mode: ModeSupport) -> LayerMapping {
    LayerMapping {
        layer: "L".into(),
        device: BackendKind::Cuda,
        kernel: "k".into(),
        function: function.into(),
        capability: parse_capability_range(capability).unwrap(),
        mode,
        deterministic: false,
        tolerance: None,
        key: String::new(),
        location: Location { line: 1, column: 1 },
    }
}

#[test]
fn the_smallest_matching_range_wins() {
    use ModeSupport::{Inference, Training};
    let maps = [
        mapping("any", "..", Inference),
        mapping("ampere_up", "8.0..", Inference),
        mapping("hopper", "9.0..9.0", Inference),
        mapping("ampere", "8.0..8.9", Inference),
    ];
    let name = |cc: Option<Version>| pick(&maps, cc, Inference).map(|m| m.function.as_str());
    assert_eq!(name(Some(v(9, 0))), Some("hopper"));
    assert_eq!(name(Some(v(8, 6))), Some("ampere"));
    assert_eq!(name(Some(v(9, 1))), Some("ampere_up"));
    assert_eq!(name(Some(v(10, 0))), Some("ampere_up"));
    assert_eq!(name(Some(v(7, 5))), Some("any"));
    // Unknown capability: every range holds; the smallest wins.
    assert_eq!(name(None), Some("hopper"));
    // Bounds are inclusive.
    assert_eq!(pick(&maps[3..], Some(v(8, 9)), Inference).map(|m| m.function.as_str()), Some("ampere"));
    assert_eq!(pick(&maps[3..], Some(v(9, 0)), Inference), None);
    assert_eq!(pick(&maps[1..], Some(v(7, 0)), Inference), None);
    assert_eq!(pick(&[], Some(v(9, 0)), Inference), None);
    // Equal widths: the one declared first.
    let tie = [mapping("first", "8.0..8.9", Inference), mapping("second", "8.5..9.4", Inference)];
    assert_eq!(pick(&tie, Some(v(8, 6)), Inference).unwrap().function, "first");
    // Training needs backward; a training kernel also serves inference.
    let modes = [mapping("fwd", "9.0..9.0", Inference), mapping("bwd", "8.0..", Training)];
    assert_eq!(pick(&modes, Some(v(9, 0)), Inference).unwrap().function, "fwd");
    assert_eq!(pick(&modes, Some(v(9, 0)), Training).unwrap().function, "bwd");
    assert_eq!(pick(&modes[..1], Some(v(9, 0)), Training), None);
    assert_eq!(pick(&modes[1..], Some(v(8, 6)), Inference).unwrap().function, "bwd");
}
