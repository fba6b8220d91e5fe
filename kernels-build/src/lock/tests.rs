use super::*;

fn p() -> &'static Path {
    Path::new("kernels.lock")
}

fn errs(text: &str) -> String {
    match Lock::parse(text, p()) {
        Ok(l) => panic!("expected an error for:\n{text}\ngot {l:#?}"),
        Err(LockError::Invalid(d)) => d.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"),
        Err(e) => panic!("unexpected {e}"),
    }
}

fn file(path: &str, c: char, size: u64) -> ResolvedFile {
    ResolvedFile { path: path.into(), sha256: c.to_string().repeat(64), size }
}

fn sample() -> Lock {
    Lock {
        kernels: vec![
            ResolvedKernel {
                name: "norm".into(),
                repo: "org/norm".into(),
                requested: Requested::Revision("main".into()),
                commit: "c".repeat(40),
                variants: vec![ResolvedVariant {
                    name: "tvm-ffi01-cpu-x86_64-linux".into(),
                    files: vec![
                        file("metadata.json", 'b', 10),
                        file("_n.so", 'a', 20),
                        file("layers/__init__.py", 'd', 0),
                    ],
                }],
            },
            ResolvedKernel {
                name: "act".into(),
                repo: "org/act".into(),
                requested: Requested::Version(1),
                commit: "d".repeat(40),
                variants: vec![
                    ResolvedVariant { name: "tvm-ffi01-cu130-x86_64-linux".into(), files: vec![file("x.so", 'e', 1)] },
                    ResolvedVariant { name: "tvm-ffi01-cpu-x86_64-linux".into(), files: vec![file("y.so", 'f', 2)] },
                ],
            },
        ],
        tvm_ffi: Some(RuntimePin {
            file: "libtvm_ffi.so".into(),
            sha256: "0".repeat(64),
            size: 5,
            source: "apache-tvm-ffi==0.1.15.post2".into(),
        }),
        cuda_runtime: Some(RuntimePin {
            file: "libcudart.so.13".into(),
            sha256: "1".repeat(64),
            size: 7,
            source: "nvidia-cuda-runtime==13.0.96".into(),
        }),
    }
}

fn sorted(mut lock: Lock) -> Lock {
    lock.kernels.sort_by(|a, b| a.name.cmp(&b.name));
    for k in &mut lock.kernels {
        k.variants.sort_by(|a, b| a.name.cmp(&b.name));
        for v in &mut k.variants {
            v.files.sort_by(|a, b| a.path.cmp(&b.path));
        }
    }
    lock
}

const GOLDEN: &str = r#"# This file is written by `cargo kernels lock`. Do not edit it by hand.
version = 1

[[kernel]]
name = "act"
repo = "org/act"
requested-version = 1
commit = "dddddddddddddddddddddddddddddddddddddddd"

[[kernel.variant]]
name = "tvm-ffi01-cpu-x86_64-linux"
files = [
    { path = "y.so", sha256 = "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff", size = 2 },
]

[[kernel.variant]]
name = "tvm-ffi01-cu130-x86_64-linux"
files = [
    { path = "x.so", sha256 = "eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee", size = 1 },
]

[[kernel]]
name = "norm"
repo = "org/norm"
requested-revision = "main"
commit = "cccccccccccccccccccccccccccccccccccccccc"

[[kernel.variant]]
name = "tvm-ffi01-cpu-x86_64-linux"
files = [
    { path = "_n.so", sha256 = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", size = 20 },
    { path = "layers/__init__.py", sha256 = "dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd", size = 0 },
    { path = "metadata.json", sha256 = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", size = 10 },
]

[tvm-ffi]
file = "libtvm_ffi.so"
sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
size = 5
source = "apache-tvm-ffi==0.1.15.post2"

[cuda-runtime]
file = "libcudart.so.13"
sha256 = "1111111111111111111111111111111111111111111111111111111111111111"
size = 7
source = "nvidia-cuda-runtime==13.0.96"
"#;

#[test]
fn the_writer_lays_out_a_sorted_stable_file() {
    assert_eq!(sample().render(), GOLDEN);
}

#[test]
fn write_read_write_is_byte_identical() {
    let text = sample().render();
    let read = Lock::parse(&text, p()).unwrap();
    assert_eq!(read, sorted(sample()));
    assert_eq!(read.render(), text);
    // And once more, from what was read.
    assert_eq!(Lock::parse(&read.render(), p()).unwrap().render(), text);
}

#[test]
fn order_of_the_input_does_not_change_the_bytes() {
    let mut shuffled = sample();
    shuffled.kernels.reverse();
    for k in &mut shuffled.kernels {
        k.variants.reverse();
        for v in &mut k.variants {
            v.files.reverse();
        }
    }
    assert_eq!(shuffled.render(), GOLDEN);
    // A hand-merged lock in another order, with comments and other spacing, reads the same.
    let merged = r#"
version = 1
# a comment
[cuda-runtime]
size = 7
source = "nvidia-cuda-runtime==13.0.96"
file = "libcudart.so.13"
sha256 = "1111111111111111111111111111111111111111111111111111111111111111"

[tvm-ffi]
source = "apache-tvm-ffi==0.1.15.post2"
size = 5
sha256 = "0000000000000000000000000000000000000000000000000000000000000000"
file = "libtvm_ffi.so"

[[kernel]]
commit = "cccccccccccccccccccccccccccccccccccccccc"
requested-revision = "main"
repo = "org/norm"
name = "norm"
[[kernel.variant]]
files = [{ size = 10, sha256 = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb", path = "metadata.json" },
  { path = "layers/__init__.py", sha256 = "dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd", size = 0 },
  { path = "_n.so", sha256 = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", size = 20 }]
name = "tvm-ffi01-cpu-x86_64-linux"

[[kernel]]
name = "act"
repo = "org/act"
requested-version = 1
commit = "dddddddddddddddddddddddddddddddddddddddd"
[[kernel.variant]]
name = "tvm-ffi01-cu130-x86_64-linux"
files = [{ path = "x.so", sha256 = "eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee", size = 1 }]
[[kernel.variant]]
name = "tvm-ffi01-cpu-x86_64-linux"
files = [{ path = "y.so", sha256 = "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff", size = 2 }]
"#;
    let read = Lock::parse(merged, p()).unwrap();
    assert_eq!(read, sorted(sample()));
    assert_eq!(read.render(), GOLDEN);
}

#[test]
fn minimal_locks_round_trip() {
    // No kernels, no pin.
    let empty = Lock::default();
    assert_eq!(
        empty.render(),
        "# This file is written by `cargo kernels lock`. Do not edit it by hand.\nversion = 1\n"
    );
    assert_eq!(Lock::parse(&empty.render(), p()).unwrap(), empty);
    // A variant without files, strings that need escapes.
    let odd = Lock {
        kernels: vec![ResolvedKernel {
            name: "k".into(),
            repo: "o/k".into(),
            requested: Requested::Revision("tag\"with\\quotes-é".into()),
            commit: "a".repeat(64),
            variants: vec![ResolvedVariant { name: "tvm-ffi01-metal-aarch64-darwin".into(), files: vec![] }],
        }],
        tvm_ffi: Some(RuntimePin {
            file: "libtvm_ffi.dylib".into(),
            sha256: "2".repeat(64),
            size: 0,
            source: "/opt/tvm ffi/lib \"quoted\"".into(),
        }),
        cuda_runtime: None,
    };
    let text = odd.render();
    assert!(text.contains("requested-revision = \"tag\\\"with\\\\quotes-é\"\n"), "{text}");
    assert!(text.contains("files = []\n"), "{text}");
    assert!(text.contains("source = \"/opt/tvm ffi/lib \\\"quoted\\\"\"\n"), "{text}");
    let read = Lock::parse(&text, p()).unwrap();
    assert_eq!(read, odd);
    assert_eq!(read.render(), text);
    // The CUDA runtime pinned alone, by the path it was found at.
    let cuda_only = Lock {
        cuda_runtime: Some(RuntimePin {
            file: "libcudart.so.12".into(),
            sha256: "3".repeat(64),
            size: 1,
            source: "/usr/local/cuda-12.8/lib64/libcudart.so.12".into(),
        }),
        ..Lock::default()
    };
    let text = cuda_only.render();
    assert_eq!(
        text,
        format!(
            "# This file is written by `cargo kernels lock`. Do not edit it by hand.\nversion = 1\n\n[cuda-runtime]\n\
             file = \"libcudart.so.12\"\nsha256 = \"{}\"\nsize = 1\nsource = \"/usr/local/cuda-12.8/lib64/libcudart.so.12\"\n",
            "3".repeat(64)
        )
    );
    assert!(!text.contains("[tvm-ffi]"), "{text}");
    let read = Lock::parse(&text, p()).unwrap();
    assert_eq!(read, cuda_only);
    assert_eq!(read.render(), text);
}

const KER: &str = "version = 1\n[[kernel]]\nname = \"a\"\nrepo = \"o/a\"\nrequested-version = 1\ncommit = \"cccccccccccccccccccccccccccccccccccccccc\"\n";
const VAR: &str = "[[kernel.variant]]\nname = \"tvm-ffi01-cpu-x86_64-linux\"\n";
const SHA: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

fn pin(replace: (&str, &str)) -> String {
    let lines = [
        ("file", "\"libtvm_ffi.so\""),
        ("sha256", "\"0000000000000000000000000000000000000000000000000000000000000000\""),
        ("size", "5"),
        ("source", "\"apache-tvm-ffi==0.1.15.post2\""),
    ];
    let mut s = String::from("version = 1\n[tvm-ffi]\n");
    for (k, v) in lines {
        if k == replace.0 {
            if !replace.1.is_empty() {
                s.push_str(&format!("{k} = {}\n", replace.1));
            }
        } else {
            s.push_str(&format!("{k} = {v}\n"));
        }
    }
    if replace.0 == "extra" {
        s.push_str(&format!("{} = {}\n", replace.0, replace.1));
    }
    s
}

/// [`pin`] for `[cuda-runtime]`, the lines in the same places.
fn cuda_pin(replace: (&str, &str)) -> String {
    pin(replace)
        .replace("[tvm-ffi]", "[cuda-runtime]")
        .replace("\"libtvm_ffi.so\"", "\"libcudart.so.13\"")
        .replace("apache-tvm-ffi==0.1.15.post2", "nvidia-cuda-runtime==13.0.96")
}

/// One case per message: the full text, with `file:line:column` and the key.
#[test]
fn every_error_message() {
    let files = |f: &str| format!("{KER}{VAR}files = [\n    {f},\n]\n");
    let cases: Vec<(String, &str)> = vec![
        ("version = [\n".into(), "kernels.lock:1:12: invalid TOML: unclosed array, expected `]`"),
        ("".into(), "kernels.lock:1:1: version: missing `version = 1` (the lock format version) at the top"),
        (
            "version = 2\n[[kernel]]\nwhatever = 1\n".into(),
            "kernels.lock:1:11: version: lock format version 2 is not supported: this kernels-build reads version 1; update kernels-build, or run `cargo kernels lock` to rewrite the lock",
        ),
        (
            "version = \"1\"\n".into(),
            "kernels.lock:1:11: version: expected a non-negative integer (the lock format version), found the string \"1\"",
        ),
        ("version = 1\nextra = 1\n".into(), "kernels.lock:2:1: extra: unknown key (expected `version`, `kernel`, `tvm-ffi` or `cuda-runtime`)"),
        (
            "version = 1\nkernels = 1\n".into(),
            "kernels.lock:2:1: kernels: unknown key; did you mean `kernel`? (expected `version`, `kernel`, `tvm-ffi` or `cuda-runtime`)",
        ),
        ("version = 1\nkernel = 1\n".into(), "kernels.lock:2:10: kernel: expected an array of `[[kernel]]` tables, found the integer 1"),
        (
            format!("{KER}colour = 1\n"),
            "kernels.lock:7:1: kernel[0].colour: unknown key (expected `name`, `repo`, `requested-version`, `requested-revision`, `commit` or `variant`)",
        ),
        (
            "version = 1\n[[kernel]]\nrepo = \"o/a\"\nrequested-version = 1\ncommit = \"cccccccccccccccccccccccccccccccccccccccc\"\n".into(),
            "kernels.lock:2:1: kernel[0]: missing `name`",
        ),
        (
            KER.replace("name = \"a\"", "name = \"a b\""),
            "kernels.lock:3:8: kernel[0].name: kernel name \"a b\" may only hold ASCII letters, digits, `-` and `_`",
        ),
        (
            KER.replace("repo = \"o/a\"", "repo = \"o\""),
            "kernels.lock:4:8: kernel[0].repo: \"o\" is not a Hub repo id `org/name`: it has no `/`",
        ),
        (
            KER.replace("requested-version = 1", "requested-version = 1\nrequested-revision = \"main\""),
            "kernels.lock:6:1: kernel[0].requested-revision: `requested-version` and `requested-revision` are exclusive; keep the one kernels.toml asks for",
        ),
        (
            KER.replace("requested-version = 1\n", ""),
            "kernels.lock:2:1: kernel[0]: missing `requested-version` or `requested-revision` (what kernels.toml asks for)",
        ),
        (
            KER.replace("requested-version = 1", "requested-version = -1"),
            "kernels.lock:5:21: kernel[0].requested-version: expected a non-negative integer (the major version asked for), found -1",
        ),
        (
            KER.replace("requested-version = 1", "requested-revision = \"a b\""),
            "kernels.lock:5:22: kernel[0].requested-revision: \"a b\" is not a revision: give a commit, branch or tag, without spaces",
        ),
        (
            KER.replace("cccccccccccccccccccccccccccccccccccccccc", "main"),
            "kernels.lock:6:10: kernel[0].commit: \"main\" is not a commit id (40 or 64 lowercase hex digits)",
        ),
        (
            format!("{KER}{}", &KER["version = 1\n".len()..]),
            "kernels.lock:8:8: kernel[1].name: kernel \"a\" is locked twice (also kernel[0]); keep one",
        ),
        (format!("{KER}variant = 1\n"), "kernels.lock:7:11: kernel[0].variant: expected an array of `[[kernel.variant]]` tables, found the integer 1"),
        (
            format!("{KER}{VAR}files = []\nfile = 1\n"),
            "kernels.lock:10:1: kernel[0].variant[0].file: unknown key; did you mean `files`? (expected `name` or `files`)",
        ),
        (format!("{KER}[[kernel.variant]]\nfiles = []\n"), "kernels.lock:7:1: kernel[0].variant[0]: missing `name`"),
        (
            format!("{KER}[[kernel.variant]]\nname = \"tvm-ffi01-cpu-riscv64-linux\"\nfiles = []\n"),
            "kernels.lock:8:8: kernel[0].variant[0].name: `tvm-ffi01-cpu-riscv64-linux` is not a kernel variant name: unknown CPU arch `riscv64` (expected x86_64 or aarch64)",
        ),
        (
            format!("{KER}{VAR}files = []\n{VAR}files = []\n"),
            "kernels.lock:11:8: kernel[0].variant[1].name: variant \"tvm-ffi01-cpu-x86_64-linux\" is listed twice",
        ),
        (format!("{KER}{VAR}"), "kernels.lock:7:1: kernel[0].variant[0]: missing `files`"),
        (
            format!("{KER}{VAR}files = \"x\"\n"),
            "kernels.lock:9:9: kernel[0].variant[0].files: expected an array of `{ path, sha256, size }` tables, found the string \"x\"",
        ),
        (
            files("\"x\""),
            "kernels.lock:10:5: kernel[0].variant[0].files[0]: expected a table `{ path = \"…\", sha256 = \"…\", size = … }`, found the string \"x\"",
        ),
        (
            files(&format!("{{ path = \"x\", sha256 = \"{SHA}\", size = 1, mode = 7 }}")),
            "kernels.lock:10:106: kernel[0].variant[0].files[0].mode: unknown key (expected `path`, `sha256` or `size`)",
        ),
        (
            files(&format!("{{ sha256 = \"{SHA}\", size = 1 }}")),
            "kernels.lock:10:5: kernel[0].variant[0].files[0]: missing `path`",
        ),
        (files("{ path = \"x\", size = 1 }"), "kernels.lock:10:5: kernel[0].variant[0].files[0]: missing `sha256`"),
        (files(&format!("{{ path = \"x\", sha256 = \"{SHA}\" }}")), "kernels.lock:10:5: kernel[0].variant[0].files[0]: missing `size`"),
        (
            files(&format!("{{ path = \"../x\", sha256 = \"{SHA}\", size = 1 }}")),
            "kernels.lock:10:14: kernel[0].variant[0].files[0].path: \"../x\" is not a safe path inside a variant directory: it has an empty, `.` or `..` component",
        ),
        (
            files(&format!("{{ path = \"/etc/x\", sha256 = \"{SHA}\", size = 1 }}")),
            "kernels.lock:10:14: kernel[0].variant[0].files[0].path: \"/etc/x\" is not a safe path inside a variant directory: it must be relative and use `/`",
        ),
        (
            files(&format!("{{ path = \"\", sha256 = \"{SHA}\", size = 1 }}")),
            "kernels.lock:10:14: kernel[0].variant[0].files[0].path: \"\" is not a safe path inside a variant directory: it is empty",
        ),
        (
            files(&format!("{{ path = \"x\", sha256 = \"{SHA}\", size = 1 }},\n    {{ path = \"x\", sha256 = \"{SHA}\", size = 2 }}")),
            "kernels.lock:11:14: kernel[0].variant[0].files[1].path: \"x\" is listed twice",
        ),
        (
            files(&format!("{{ path = \"x\", sha256 = \"{}\", size = 1 }}", SHA.to_uppercase())),
            "kernels.lock:10:28: kernel[0].variant[0].files[0].sha256: \"BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB\" is not a sha256 (64 lowercase hex digits)",
        ),
        (
            files(&format!("{{ path = \"x\", sha256 = \"{SHA}\", size = -1 }}")),
            "kernels.lock:10:103: kernel[0].variant[0].files[0].size: expected a non-negative integer (bytes), found -1",
        ),
        ("version = 1\ntvm-ffi = 1\n".into(), "kernels.lock:2:11: [tvm-ffi]: expected a table, found the integer 1"),
        (pin(("extra", "1")), "kernels.lock:7:1: [tvm-ffi].extra: unknown key (expected `file`, `sha256`, `size` or `source`)"),
        (pin(("file", "")), "kernels.lock:2:1: [tvm-ffi]: missing `file`"),
        (pin(("sha256", "")), "kernels.lock:2:1: [tvm-ffi]: missing `sha256`"),
        (pin(("size", "")), "kernels.lock:2:1: [tvm-ffi]: missing `size`"),
        (pin(("source", "")), "kernels.lock:2:1: [tvm-ffi]: missing `source`"),
        (pin(("file", "\"lib/libtvm_ffi.so\"")), "kernels.lock:3:8: [tvm-ffi].file: \"lib/libtvm_ffi.so\" is not a file name (no directories)"),
        (pin(("sha256", "\"00\"")), "kernels.lock:4:10: [tvm-ffi].sha256: \"00\" is not a sha256 (64 lowercase hex digits)"),
        (pin(("size", "\"5\"")), "kernels.lock:5:8: [tvm-ffi].size: expected a non-negative integer (bytes), found the string \"5\""),
        (
            pin(("source", "\" \"")),
            "kernels.lock:6:10: [tvm-ffi].source: the source is empty: give where the library came from (e.g. \"apache-tvm-ffi==0.1.15.post2\")",
        ),
        ("version = 1\ncuda-runtime = \"x\"\n".into(), "kernels.lock:2:16: [cuda-runtime]: expected a table, found the string \"x\""),
        (
            cuda_pin(("extra", "1")),
            "kernels.lock:7:1: [cuda-runtime].extra: unknown key (expected `file`, `sha256`, `size` or `source`)",
        ),
        (cuda_pin(("extra", "\"x\"")).replace("extra", "sourse"), "kernels.lock:7:1: [cuda-runtime].sourse: unknown key; did you mean `source`? (expected `file`, `sha256`, `size` or `source`)"),
        (cuda_pin(("size", "")), "kernels.lock:2:1: [cuda-runtime]: missing `size`"),
        (
            cuda_pin(("file", "\"/usr/lib/libcudart.so.13\"")),
            "kernels.lock:3:8: [cuda-runtime].file: \"/usr/lib/libcudart.so.13\" is not a file name (no directories)",
        ),
        (
            cuda_pin(("source", "\"\"")),
            "kernels.lock:6:10: [cuda-runtime].source: the source is empty: give where the library came from (e.g. \"nvidia-cuda-runtime==13.0.96\")",
        ),
    ];
    let mut failures = Vec::new();
    for (text, expected) in &cases {
        let got = errs(text);
        if got != *expected {
            failures.push(format!("for:\n{text}\nexpected: {expected}\n     got: {got}\n"));
        }
    }
    assert!(failures.is_empty(), "{} of {} cases differ:\n{}", failures.len(), cases.len(), failures.join("\n"));
}

#[test]
fn an_invalid_lock_says_how_to_recover() {
    let err = Lock::parse("version = 1\nextra = 1\n", p()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "kernels.lock:2:1: extra: unknown key (expected `version`, `kernel`, `tvm-ffi` or `cuda-runtime`)\n\
         fix it, or delete it and run `cargo kernels lock` to write it again"
    );
}

#[test]
fn reading_a_missing_lock_is_none_and_an_unreadable_one_an_error() {
    assert_eq!(Lock::read(Path::new("/nonexistent/dir/kernels.lock")).unwrap(), None);
    let dir = std::env::temp_dir().join(format!("kernels-build-lock-{}", std::process::id()));
    std::fs::create_dir_all(dir.join(LOCK_FILE)).unwrap();
    let err = Lock::read(&dir.join(LOCK_FILE)).unwrap_err();
    assert!(matches!(err, LockError::Read { .. }), "{err:?}");
    assert!(
        err.to_string().starts_with(&format!("{}: cannot read the kernels lock: ", dir.join(LOCK_FILE).display())),
        "{err}"
    );
    std::fs::remove_dir_all(dir.join(LOCK_FILE)).unwrap();
    std::fs::write(dir.join(LOCK_FILE), GOLDEN).unwrap();
    assert_eq!(Lock::read(&dir.join(LOCK_FILE)).unwrap(), Some(sorted(sample())));
    std::fs::remove_dir_all(&dir).unwrap();
}

fn manifest(text: &str) -> Manifest {
    Manifest::parse(text, Path::new("kernels.toml")).unwrap()
}

#[test]
fn a_lock_is_fresh_for_the_manifest_it_was_made_for() {
    let m = manifest(
        "[kernels.act]\nrepo = \"org/act\"\nversion = 1\n[kernels.norm]\nrepo = \"org/norm\"\nrevision = \"main\"\n\
         [kernels.local]\npath = \"../k\"\n",
    );
    assert_eq!(sample().staleness(&m), []);
    assert_eq!(Lock::check(p(), Some(&sample()), &m), Ok(()));
    // The tvm-ffi pin is the lock's own business.
    let mut unpinned = sample();
    unpinned.tvm_ffi = None;
    assert_eq!(Lock::check(p(), Some(&unpinned), &m), Ok(()));
    // Nothing to lock, nothing locked; no lock needed either.
    let local = manifest("[kernels.local]\npath = \"../k\"\n");
    assert_eq!(Lock::check(p(), Some(&Lock::default()), &local), Ok(()));
    assert_eq!(Lock::check(p(), None, &local), Ok(()));
}

#[test]
fn a_missing_lock_is_stale_when_there_are_hub_kernels() {
    let m = manifest("[kernels.act]\nrepo = \"org/act\"\nversion = 1\n");
    let stale = Lock::check(Path::new("crate/kernels.lock"), None, &m).unwrap_err();
    assert_eq!(stale.state(), "missing");
    assert_eq!(
        stale.to_string(),
        "crate/kernels.lock is missing:\n\
         \x20 no kernels.lock next to kernels.toml\n\
         run `cargo kernels lock` in crate and commit kernels.lock"
    );
}

#[test]
fn a_lock_pinning_kernels_no_longer_declared_is_stale() {
    // The build used to accept it when kernels.toml had no Hub kernel left; `cargo kernels
    // download` did not. Both now read it as out of date.
    let stale = Lock::check(p(), Some(&sample()), &manifest("[kernels.local]\npath = \"../k\"\n")).unwrap_err();
    assert_eq!(stale.state(), "out of date");
    assert_eq!(stale.changes.len(), 2, "{stale}");
}

#[test]
fn staleness_names_each_change() {
    let m = manifest(
        "[kernels.act]\nrepo = \"org/act\"\nversion = 2\n[kernels.new]\nrepo = \"org/new\"\nrevision = \"v0.3\"\n\
         [kernels.norm]\npath = \"../norm\"\n",
    );
    assert_eq!(
        sample().staleness(&m),
        [
            Staleness::Changed {
                name: "act".into(),
                locked_repo: "org/act".into(),
                locked: Requested::Version(1),
                declared_repo: "org/act".into(),
                declared: Requested::Version(2),
            },
            Staleness::Missing {
                name: "new".into(),
                repo: "org/new".into(),
                requested: Requested::Revision("v0.3".into())
            },
            Staleness::NowLocal { name: "norm".into(), repo: "org/norm".into(), path: "../norm".into() },
        ]
    );
    assert_eq!(
        Lock::check(p(), Some(&sample()), &m).unwrap_err().to_string(),
        "kernels.lock is out of date:\n\
         \x20 kernel `act` is locked as org/act @ version 1 but declared as org/act @ version 2\n\
         \x20 kernel `new` (org/new, revision `v0.3`) is declared in kernels.toml but not locked\n\
         \x20 kernel `norm` now comes from path `../norm`; the lock still pins org/norm\n\
         run `cargo kernels lock` in . and commit kernels.lock"
    );
    let moved = manifest("[kernels.act]\nrepo = \"other/act\"\nversion = 1\n");
    assert_eq!(
        sample().staleness(&moved).iter().map(ToString::to_string).collect::<Vec<_>>(),
        [
            "kernel `act` is locked as org/act @ version 1 but declared as other/act @ version 1",
            "kernel `norm` (org/norm) is locked but no longer declared in kernels.toml",
        ]
    );
}

#[test]
fn file_paths_must_stay_inside_the_variant() {
    for ok in ["metadata.json", "layers/__init__.py", "_ops.py", "a.b/c..d"] {
        assert_eq!(check_file_path(ok), Ok(()), "{ok}");
    }
    for bad in ["", "/x", "../x", "a/../b", "./x", "a//b", "a/", "a\\b", "C:x", "a\u{1}"] {
        assert!(check_file_path(bad).is_err(), "{bad}");
    }
}
