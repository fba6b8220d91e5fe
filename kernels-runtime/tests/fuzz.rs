//! Fuzz smoke of kernels-runtime's readers of untrusted input: variant names, `metadata.json`
//! (parsing and the digest check of a variant directory) and the ELF `DT_NEEDED` reader.
//! A few seconds per target (`KERNELS_FUZZ_SECS`); see `support/fuzz.rs` for the knobs.

#[path = "support/fuzz.rs"]
mod fuzz;

use std::io::{self, Cursor, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Command;

use fuzz::Target;
use kernels_runtime::ffi::{TVM_FFI_LIBRARY, needed_libraries, needed_libraries_from};
use kernels_runtime::metadata::{
    self, CudaArch, METADATA_FILE, Metadata, MetadataError, VerifyError, Violation, variant_files,
};
use kernels_runtime::variant::{Os, VariantName};

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

fn check_elf(scratch: &Path, input: &[u8]) -> Result<(), String> {
    let mut reader = Counting { inner: Cursor::new(input), read: 0, seeks: 0 };
    let outcome = needed_libraries_from(&mut reader, Path::new("fuzz.so"));
    // The length, then headers, program headers, dynamic segment, string table: five seeks
    // and four reads at most, each read at most the input (they may overlap) and its limit.
    if reader.seeks > 5 {
        return Err(format!("{} seeks", reader.seeks));
    }
    let limit = (4 * input.len() as u64).min(64 + (256 << 10) + (1 << 20) + (16 << 20));
    if reader.read > limit {
        return Err(format!("{} bytes read of {}", reader.read, input.len()));
    }
    match &outcome {
        Ok(names) => {
            if names.len() > 4096 || names.iter().any(|n| n.len() > 4096 * 3 || n.contains('\0')) {
                return Err(format!("implausible names: {} of them", names.len()));
            }
        }
        Err(e) if matches!(e.kind(), io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof) => {
            if !e.to_string().starts_with("fuzz.so: ") && e.kind() == io::ErrorKind::InvalidData {
                return Err(format!("the error does not name the file: {e}"));
            }
        }
        Err(e) => return Err(format!("an error of kind {:?} from memory: {e}", e.kind())),
    }
    // Through a real file, one input in eight: the same answer.
    if input.len().is_multiple_of(8) {
        std::fs::write(scratch, input).map_err(|e| e.to_string())?;
        let from_file = needed_libraries(scratch);
        let same = match (&outcome, &from_file) {
            (Ok(a), Ok(b)) => a == b,
            (Err(a), Err(b)) => a.kind() == b.kind(),
            _ => false,
        };
        if !same {
            return Err(format!("memory gives {outcome:?}, the file {from_file:?}"));
        }
    }
    Ok(())
}

/// A minimal shared object: ELF header, PT_LOAD and PT_DYNAMIC, the dynamic segment, the
/// string table; either class and byte order.
fn tiny_elf(is64: bool, little: bool, needed: &[&str]) -> Vec<u8> {
    let put = |out: &mut Vec<u8>, value: u64, width: usize| {
        let bytes = if little { value.to_le_bytes() } else { value.to_be_bytes() };
        let bytes = if little { &bytes[..width] } else { &bytes[8 - width..] };
        out.extend_from_slice(bytes);
    };
    let word = if is64 { 8 } else { 4 };
    let (header, phent) = if is64 { (64u64, 56u64) } else { (52, 32) };
    let mut strtab = vec![0u8];
    let mut offsets = Vec::new();
    for name in needed {
        offsets.push(strtab.len() as u64);
        strtab.extend_from_slice(name.as_bytes());
        strtab.push(0);
    }
    let dyn_off = header + 2 * phent;
    let dyn_len = (offsets.len() as u64 + 3) * 2 * word as u64;
    let str_off = dyn_off + dyn_len;
    let total = str_off + strtab.len() as u64;
    let base = 0x1000;

    let mut f = b"\x7fELF".to_vec();
    f.extend_from_slice(&[if is64 { 2 } else { 1 }, if little { 1 } else { 2 }, 1]);
    f.resize(16, 0);
    put(&mut f, 3, 2); // ET_DYN
    put(&mut f, 62, 2); // EM_X86_64
    put(&mut f, 1, 4); // EV_CURRENT
    put(&mut f, 0, word); // e_entry
    put(&mut f, header, word); // e_phoff
    put(&mut f, 0, word); // e_shoff
    put(&mut f, 0, 4); // e_flags
    put(&mut f, header, 2); // e_ehsize
    put(&mut f, phent, 2); // e_phentsize
    put(&mut f, 2, 2); // e_phnum
    put(&mut f, 0, 6); // e_shentsize, e_shnum, e_shstrndx
    assert_eq!(f.len() as u64, header);
    for (kind, offset, size) in [(1u64, 0u64, total), (2, dyn_off, dyn_len)] {
        put(&mut f, kind, 4);
        if is64 {
            put(&mut f, 6, 4); // p_flags
        }
        put(&mut f, offset, word);
        put(&mut f, base + offset, word); // p_vaddr
        put(&mut f, base + offset, word); // p_paddr
        put(&mut f, size, word); // p_filesz
        put(&mut f, size, word); // p_memsz
        if !is64 {
            put(&mut f, 6, 4); // p_flags
        }
        put(&mut f, 8, word); // p_align
    }
    let entries = offsets.iter().map(|o| (1u64, *o)).chain([(5, base + str_off), (10, strtab.len() as u64), (0, 0)]);
    for (tag, value) in entries {
        put(&mut f, tag, word);
        put(&mut f, value, word);
    }
    f.extend_from_slice(&strtab);
    assert_eq!(f.len() as u64, total);
    f
}

/// A real shared object, compiled by the C compiler, when there is one.
fn compiled_elf(dir: &Path) -> Option<Vec<u8>> {
    let source = dir.join("seed.c");
    std::fs::write(&source, "#include <math.h>\ndouble seed(double x) { return sqrt(x); }\n").ok()?;
    let out = dir.join("libseed.so");
    let cc = std::env::var_os("CC").unwrap_or_else(|| "cc".into());
    let status = Command::new(cc).arg("-shared").arg("-fPIC").arg("-o").arg(&out).arg(&source).arg("-lm").status();
    match status {
        Ok(s) if s.success() => std::fs::read(out).ok(),
        _ => {
            eprintln!("no C compiler: the ELF target starts from the hand-built seeds only");
            None
        }
    }
}

#[test]
fn fuzz_elf_needed() {
    let dir = tempfile::tempdir().unwrap();
    let mut seeds = vec![
        tiny_elf(true, true, &["libc.so.6", TVM_FFI_LIBRARY]),
        tiny_elf(true, false, &["libm.so.6"]),
        tiny_elf(false, true, &["libtvm_ffi.so.0", "libstdc++.so.6"]),
        tiny_elf(false, false, &[]),
    ];
    for seed in &seeds[..3] {
        let names = needed_libraries_from(&mut Cursor::new(seed), Path::new("seed.so")).unwrap();
        assert!(!names.is_empty(), "the hand-built seeds are read back");
    }
    if let Some(real) = compiled_elf(dir.path()) {
        let names = needed_libraries_from(&mut Cursor::new(&real), Path::new("libseed.so")).unwrap();
        assert!(!names.is_empty(), "the compiled seed needs libraries");
        seeds.push(real);
    }
    let target = Target {
        name: "elf_needed",
        seeds,
        tokens: vec![
            b"\x7fELF\x02\x01\x01".to_vec(),
            u64::MAX.to_le_bytes().to_vec(),
            (i64::MAX as u64).to_le_bytes().to_vec(),
            1u64.to_le_bytes().to_vec(),
            5u64.to_le_bytes().to_vec(),
            10u64.to_le_bytes().to_vec(),
            b"libtvm_ffi.so".to_vec(),
        ],
        max_len: 64 << 10,
    };
    let scratch = dir.path().join("input.so");
    fuzz::run(&target, |input| check_elf(&scratch, input));
}
