//! Fuzz smoke of kernels-runtime's readers of untrusted input: variant names, `metadata.json`
//! (parsing and the digest check of a variant directory) and the ELF readers (`DT_NEEDED`,
//! dynamic symbols, string literals).
//! A few seconds per target (`KERNELS_FUZZ_SECS`); see `support/fuzz.rs` for the knobs.

#[path = "support/fuzz.rs"]
mod fuzz;
#[path = "support/tiny_elf.rs"]
mod tiny_elf;

use std::io::{self, Cursor, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use fuzz::Target;
use kernels_runtime::ffi::{
    DynamicSymbols, TVM_FFI_LIBRARY, dynamic_symbols, dynamic_symbols_from, needed_libraries, needed_libraries_from,
    strings_with_prefix, strings_with_prefix_from,
};
use kernels_runtime::metadata::{
    self, CudaArch, METADATA_FILE, Metadata, MetadataError, VerifyError, Violation, variant_files,
};
use kernels_runtime::torch_stable_abi::{CheckError, check_imports, check_library_from};
use kernels_runtime::variant::{Os, VariantName};
use tiny_elf::{Hash, KERNEL_C, Sym, TinyElf, compile_shared, tiny_elf};

fn tokens(items: &[&str]) -> Vec<Vec<u8>> {
    items.iter().map(|t| t.as_bytes().to_vec()).collect()
}

/// Variant names as the Hub lays them out.
const VARIANT_NAMES: &[&str] = &[
    "torch212-cxx11-cu130-x86_64-linux",
    "torch212-cxx11-cu126-aarch64-linux",
    "torch27-cxx98-cu118-x86_64-linux",
    "torch28-cxx11-rocm64-x86_64-linux",
    "torch212-cxx11-xpu20253-x86_64-linux",
    "torch212-cxx11-cpu-x86_64-linux",
    "torch212-metal-aarch64-darwin",
    "torch210-cu128-x86_64-windows",
    "torch29-cxx11-cann81-aarch64-linux",
    "torch212-cxx11-neuron-x86_64-linux",
    "torch-stable-abi211-cu126-x86_64-linux",
    "tvm-ffi01-cu130-x86_64-linux",
    "tvm-ffi01-cpu-x86_64-linux",
    "tvm-ffi01-rocm71-x86_64-linux",
    "tvm-ffi01-metal-aarch64-darwin",
    "tvm-ffi01-tpu-x86_64-linux",
    "torch-cuda",
    "torch-cpu",
    "torch-npu",
    "torch-universal",
];

fn check_variant_name(input: &[u8]) -> Result<(), String> {
    let name = String::from_utf8_lossy(input);
    match VariantName::parse(&name) {
        Ok(parsed) => {
            // The name prints exactly as it was written, and parses back to the same value.
            let printed = parsed.to_string();
            if printed != name {
                return Err(format!("`{name}` parses, but prints as `{printed}`"));
            }
            let again = VariantName::parse(&printed).map_err(|e| format!("`{printed}` does not parse back: {e}"))?;
            if again != parsed {
                return Err(format!("`{printed}` parses back to {again:?}, not {parsed:?}"));
            }
            let _ = (parsed.framework(), parsed.backend(), parsed.needs_pytorch());
            Ok(())
        }
        Err(e) if e.reason.trim().is_empty() || e.name != name => Err(format!("a bad error for `{name}`: {e:?}")),
        Err(_) => Ok(()),
    }
}

#[test]
fn fuzz_variant_names() {
    let target = Target {
        name: "variant_names",
        seeds: tokens(VARIANT_NAMES),
        tokens: tokens(&[
            "torch",
            "tvm-ffi",
            "torch-stable-abi",
            "cxx11",
            "cxx98",
            "-cu",
            "rocm",
            "xpu",
            "cann",
            "cpu",
            "metal",
            "neuron",
            "tpu",
            "x86_64",
            "aarch64",
            "linux",
            "darwin",
            "windows",
            "universal",
            "0",
            "00",
            "01",
            "9",
        ]),
        max_len: 256,
    };
    fuzz::run(&target, check_variant_name);
}

/// A variant directory as kernel-builder lays it out, its `metadata.json` written the way
/// kernels-rs writes one (and a copy of its files one level up, for paths that climb out).
struct Variant {
    _root: tempfile::TempDir,
    dir: PathBuf,
    metadata: String,
}

fn variant() -> Variant {
    const FILES: &[(&str, &[u8])] = &[
        ("_relu_cpu_7a4e5a7.so", b"\x7fELF not really a library"),
        ("__init__.py", b"from ._ops import ops\n"),
        ("layers/__init__.py", b"class ReLU:\n    pass\n"),
    ];
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("tvm-ffi01-cpu-x86_64-linux");
    for (rel, bytes) in FILES {
        for base in [root.path(), dir.as_path()] {
            let path = base.join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, bytes).unwrap();
        }
    }
    let files = metadata::digest_files(&dir).unwrap();
    let metadata = serde_json::to_string_pretty(&serde_json::json!({
        "name": "relu",
        "id": "_relu_cpu_7a4e5a7",
        "version": 1,
        "license": "Apache-2.0",
        "backend": { "type": "cuda", "archs": ["8.0", "9.0a", "10.0f", "9.0+PTX", "gfx942"] },
        "digest": { "algorithm": "sha256", "files": files },
        "python-depends": ["einops"],
        "provenance": { "builder": "kernel-builder", "commit": "0123abc", "nested": [1, [2, {"x": null}]] },
    }))
    .unwrap();
    std::fs::write(dir.join(METADATA_FILE), &metadata).unwrap();
    Variant { _root: root, dir, metadata }
}

/// Whether a digest key names a file inside the variant directory.
fn inside(path: &str) -> bool {
    !path.is_empty()
        && !path.starts_with('/')
        && !path.contains(['\\', ':'])
        && path.split('/').all(|c| !c.is_empty() && c != "." && c != "..")
}

fn check_metadata(variant: &Variant, input: &[u8]) -> Result<(), String> {
    let text = String::from_utf8_lossy(input);
    let origin = Path::new("fuzz/metadata.json");
    let parsed = match Metadata::parse(&text, origin) {
        Ok(parsed) => parsed,
        Err(MetadataError::Parse { path, line, column, message }) => {
            let rendered =
                MetadataError::Parse { path: path.clone(), line, column, message: message.clone() }.to_string();
            if path != origin
                || message.trim().is_empty()
                || !rendered.starts_with(&format!("fuzz/metadata.json:{line}:{column}: "))
            {
                return Err(format!("a bad parse error: {rendered:?}"));
            }
            return Ok(());
        }
        Err(e) => return Err(format!("parsing text gave an I/O error: {e}")),
    };
    for arch in parsed.backend.iter().flat_map(|b| &b.archs) {
        if let Ok(cc) = CudaArch::parse(arch) {
            let again = CudaArch::parse(&cc.to_string()).map_err(|e| format!("{cc} does not parse back: {e}"))?;
            if again != cc {
                return Err(format!("arch `{arch}` prints as `{cc}`, which parses as {again:?}"));
            }
        }
    }
    let _ = parsed.cuda_archs();
    let _ = parsed.library_file(&Os::Linux);

    let Some(digest) = &parsed.digest else {
        return match metadata::verify_dir(&variant.dir, &parsed) {
            Err(VerifyError::NoDigest { .. }) => Ok(()),
            other => Err(format!("no digest, yet verification gave {other:?}")),
        };
    };
    let outcome = metadata::verify_dir(&variant.dir, &parsed);
    let escaping: Vec<&String> = digest.files.keys().filter(|p| !inside(p)).collect();
    match outcome {
        Ok(()) => {
            let on_disk = variant_files(&variant.dir).map_err(|e| e.to_string())?;
            let listed: Vec<&String> = digest.files.keys().collect();
            if !escaping.is_empty() || listed != on_disk.iter().collect::<Vec<_>>() {
                return Err(format!("verified, yet the digest lists {listed:?} and the directory holds {on_disk:?}"));
            }
        }
        Err(VerifyError::Violations { violations, .. }) => {
            for v in &violations {
                let path = match v {
                    Violation::Missing { path } | Violation::Mismatch { path, .. } => path,
                    Violation::Unknown { path } => {
                        if !inside(path) {
                            return Err(format!("an unknown file outside the directory: {v}"));
                        }
                        continue;
                    }
                    Violation::Unsafe { .. } => continue,
                };
                if !inside(path) {
                    return Err(format!("a file outside the variant directory was looked at: {v}"));
                }
            }
            for path in &escaping {
                if !violations.iter().any(|v| matches!(v, Violation::Unsafe { path: p } if p == *path)) {
                    return Err(format!("digest key {path:?} leaves the variant directory and is not reported"));
                }
            }
        }
        Err(VerifyError::UnsafeId { id, .. }) if metadata::check_id(&id).is_err() => {}
        Err(e @ (VerifyError::Algorithm { .. } | VerifyError::Io { .. })) => {
            if e.to_string().trim().is_empty() {
                return Err("an empty error".into());
            }
        }
        Err(e) => return Err(format!("unexpected error {e}")),
    }
    Ok(())
}

#[test]
fn fuzz_metadata() {
    let variant = variant();
    let upstream = r#"{
  "name": "relu", "id": "_relu_cpu_7a4e5a7", "version": 1, "license": "Apache-2.0",
  "backend": { "type": "cuda", "archs": ["8.0", "9.0", "9.0+PTX"] },
  "digest": { "algorithm": "sha512", "files": { "_relu_cpu_7a4e5a7.so": "AAAA" } },
  "provenance": { "kernel-builder": "0.4" }
}"#;
    let target = Target {
        name: "metadata",
        seeds: vec![variant.metadata.clone().into_bytes(), upstream.as_bytes().to_vec(), b"{}".to_vec()],
        tokens: tokens(&[
            "\"digest\"",
            "\"files\"",
            "\"algorithm\"",
            "\"sha256\"",
            "\"sha512\"",
            "\"backend\"",
            "\"archs\"",
            "\"9.0a+PTX\"",
            "\"version\"",
            "__init__.py",
            "layers/",
            "metadata.json",
            "./",
            "//",
            "\\/",
            "\\u002e\\u002e/",
            "{\"a\":",
            "[[[[[[[[",
        ]),
        max_len: 16 << 10,
    };
    fuzz::run(&target, |input| check_metadata(&variant, input));
}

/// Counts the bytes read and the seeks made, so that the ELF reader is seen to stay bounded.
struct Counting<R> {
    inner: R,
    read: u64,
    seeks: u32,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        Ok(n)
    }
}

impl<R: Seek> Seek for Counting<R> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        self.seeks += 1;
        self.inner.seek(pos)
    }
}

/// The error of an ELF reader: `InvalidData` naming the file, or `UnexpectedEof`.
fn check_elf_error(e: &io::Error) -> Result<(), String> {
    match e.kind() {
        io::ErrorKind::InvalidData if !e.to_string().starts_with("fuzz.so: ") => {
            Err(format!("the error does not name the file: {e}"))
        }
        io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof => Ok(()),
        kind => Err(format!("an error of kind {kind:?} from memory: {e}")),
    }
}

/// Runs `read` on `input` through a counting reader; fails past `max_seeks` seeks or `max_read`
/// bytes read, or on an error that is not the reader's own.
fn counted<T>(
    what: &str,
    input: &[u8],
    max_seeks: u32,
    max_read: u64,
    read: impl FnOnce(&mut Counting<Cursor<&[u8]>>) -> io::Result<T>,
) -> Result<io::Result<T>, String> {
    let mut reader = Counting { inner: Cursor::new(input), read: 0, seeks: 0 };
    let outcome = read(&mut reader);
    if reader.seeks > max_seeks {
        return Err(format!("{what}: {} seeks", reader.seeks));
    }
    if reader.read > max_read {
        return Err(format!("{what}: {} bytes read of {}", reader.read, input.len()));
    }
    if let Err(e) = &outcome {
        check_elf_error(e).map_err(|m| format!("{what}: {m}"))?;
    }
    Ok(outcome)
}

/// Whether two outcomes agree: the same value, or errors of the same kind.
fn same<T: PartialEq>(a: &io::Result<T>, b: &io::Result<T>) -> bool {
    match (a, b) {
        (Ok(a), Ok(b)) => a == b,
        (Err(a), Err(b)) => a.kind() == b.kind(),
        _ => false,
    }
}

fn check_elf(scratch: &Path, input: &[u8]) -> Result<(), String> {
    let origin = Path::new("fuzz.so");
    let len = input.len() as u64;
    // The length, then headers, program headers, dynamic segment, string table: five seeks
    // and four reads at most, each read at most the input (they may overlap) and its limit.
    let limit = (4 * len).min(64 + (256 << 10) + (1 << 20) + (16 << 20));
    let needed = counted("needed_libraries_from", input, 5, limit, |r| needed_libraries_from(r, origin))?;
    if let Ok(names) = &needed
        && (names.len() > 4096 || names.iter().any(|n| n.len() > 4096 * 3 || n.contains('\0')))
    {
        return Err(format!("implausible names: {} of them", names.len()));
    }
    // Besides, the hash table's header and buckets, and the GNU hash chain a piece at a time:
    // every read within the input.
    let seeks = 10 + u32::try_from(len / (4 * 4096)).unwrap_or(u32::MAX);
    let symbols = counted("dynamic_symbols_from", input, seeks, 8 * len + 64, |r| dynamic_symbols_from(r, origin))?;
    if let Ok(DynamicSymbols { defined, undefined }) = &symbols {
        let all = defined.iter().chain(undefined);
        if defined.len() + undefined.len() > 1_000_000
            || all.clone().any(|s| s.name.is_empty() || s.name.contains('\0'))
        {
            return Err(format!("implausible symbols: {} of them", defined.len() + undefined.len()));
        }
    }
    // The header, the program headers, then each loaded range once: within twice the input
    // and one seek per program header.
    let strings = counted("strings_with_prefix_from", input, 3 + 4096, 2 * len + 64, |r| {
        strings_with_prefix_from(r, origin, b"aten::", 64)
    })?;
    if let Ok(found) = &strings {
        let sorted = found.windows(2).all(|w| w[0] < w[1]);
        let plausible =
            |s: &String| s.starts_with("aten::") && s.len() <= 256 && s.bytes().all(|b| (0x20..0x7f).contains(&b));
        if found.len() > 64 || !sorted || !found.iter().all(plausible) {
            return Err(format!("implausible strings: {found:?}"));
        }
    }
    // The stable-ABI pre-load check: on what was read, the verdict it reaches reading itself.
    if let (Ok(needed), Ok(symbols), Ok(strings)) = (&needed, &symbols, &strings) {
        let rules = check_imports(needed.clone(), symbols, strings);
        match (rules, check_library_from(&mut Cursor::new(input), origin)) {
            (Ok(a), Ok(b)) if a == b => {}
            (Err(a), Err(CheckError::Unsupported { reasons: b, .. })) if a == b => {}
            (a, b) => return Err(format!("stable-ABI check: the rules give {a:?}, check_library_from {b:?}")),
        }
    }
    // Through a real file, one input in eight: the same answers.
    if input.len().is_multiple_of(8) {
        std::fs::write(scratch, input).map_err(|e| e.to_string())?;
        let from_file = needed_libraries(scratch);
        if !same(&needed, &from_file) {
            return Err(format!("memory gives {needed:?}, the file {from_file:?}"));
        }
        let from_file = dynamic_symbols(scratch);
        if !same(&symbols, &from_file) {
            return Err(format!("memory gives {symbols:?}, the file {from_file:?}"));
        }
        let from_file = strings_with_prefix(scratch, b"aten::", 64);
        if !same(&strings, &from_file) {
            return Err(format!("memory gives {strings:?}, the file {from_file:?}"));
        }
    }
    Ok(())
}

#[test]
fn fuzz_elf() {
    let dir = tempfile::tempdir().unwrap();
    let symbols = [
        Sym::func("__tvm_ffi_foo"),
        Sym::func("weak_helper").weak(),
        Sym::object("exported_counter"),
        Sym::undefined("aoti_torch_get_data_ptr"),
        Sym::undefined("__gmon_start__").weak(),
    ];
    let strings: &[&[u8]] = &[b"aten::empty_like", b"aten::fill_.Scalar", b"calling aten::add"];
    let with_symbols = |is64, little, hash| {
        TinyElf::new(is64, little).needed(&["libc.so.6"]).symbols(&symbols, hash).strings(strings).build().bytes
    };
    let mut seeds = vec![
        tiny_elf(true, true, &["libc.so.6", TVM_FFI_LIBRARY]),
        tiny_elf(true, false, &["libm.so.6"]),
        tiny_elf(false, true, &["libtvm_ffi.so.0", "libstdc++.so.6"]),
        tiny_elf(false, false, &[]),
        with_symbols(true, true, Hash::Gnu),
        with_symbols(true, false, Hash::Sysv),
        with_symbols(false, true, Hash::Both),
        with_symbols(false, false, Hash::Gnu),
    ];
    for seed in &seeds[..3] {
        let names = needed_libraries_from(&mut Cursor::new(seed), Path::new("seed.so")).unwrap();
        assert!(!names.is_empty(), "the hand-built seeds are read back");
    }
    for seed in &seeds[4..] {
        let found = dynamic_symbols_from(&mut Cursor::new(seed), Path::new("seed.so")).unwrap();
        assert_eq!((found.defined.len(), found.undefined.len()), (3, 2), "the hand-built symbols are read back");
        let found = strings_with_prefix_from(&mut Cursor::new(seed), Path::new("seed.so"), b"aten::", 64).unwrap();
        assert_eq!(found, ["aten::empty_like", "aten::fill_.Scalar"]);
    }
    let source = format!("{KERNEL_C}#include <math.h>\ndouble seed(double x) {{ return sqrt(x); }}\n");
    match compile_shared(dir.path(), "seed", &source, &["-lm"]) {
        Some(real) => {
            let names = needed_libraries_from(&mut Cursor::new(&real), Path::new("libseed.so")).unwrap();
            assert!(!names.is_empty(), "the compiled seed needs libraries");
            let found = dynamic_symbols_from(&mut Cursor::new(&real), Path::new("libseed.so")).unwrap();
            assert!(found.defined.iter().any(|s| s.name == "__tvm_ffi_foo"), "{found:?}");
            seeds.push(real);
        }
        None => eprintln!("the ELF target starts from the hand-built seeds only"),
    }
    // A stable-ABI library the pre-load check refuses for each kind of reason.
    let unsupported = [
        Sym::undefined("torch_library_impl"),
        Sym::undefined("torch_foo"),
        Sym::undefined("_ZN3c106detail14torchCheckFailEPKcS2_jS2_"),
        Sym::undefined("PyErr_SetString"),
    ];
    let refused = TinyElf::new(true, true)
        .needed(&["libtorch.so", "libc10.so", "libfoo.so"])
        .symbols(&unsupported, Hash::Gnu)
        .strings(&[b"aten::matmul", b"aten::view"])
        .build()
        .bytes;
    let Err(CheckError::Unsupported { reasons, .. }) =
        check_library_from(&mut Cursor::new(&refused), Path::new("seed.so"))
    else {
        panic!("the hand-built stable-ABI seed is refused");
    };
    assert_eq!(reasons.len(), 5, "{reasons:?}");
    seeds.push(refused);
    let target = Target {
        name: "elf",
        seeds,
        tokens: vec![
            b"\x7fELF\x02\x01\x01".to_vec(),
            u64::MAX.to_le_bytes().to_vec(),
            (i64::MAX as u64).to_le_bytes().to_vec(),
            1u64.to_le_bytes().to_vec(),
            5u64.to_le_bytes().to_vec(),
            6u64.to_le_bytes().to_vec(),
            10u64.to_le_bytes().to_vec(),
            11u64.to_le_bytes().to_vec(),
            4u64.to_le_bytes().to_vec(),
            0x6fff_fef5u64.to_le_bytes().to_vec(),
            u32::MAX.to_le_bytes().to_vec(),
            1_000_000u32.to_le_bytes().to_vec(),
            b"libtvm_ffi.so".to_vec(),
            b"aten::".to_vec(),
        ],
        max_len: 64 << 10,
    };
    let scratch = dir.path().join("input.so");
    fuzz::run(&target, |input| check_elf(&scratch, input));
}
