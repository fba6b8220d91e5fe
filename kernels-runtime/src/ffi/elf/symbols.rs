//! The dynamic symbol table (`.dynsym`): the symbols a library defines for others and those it
//! expects another loaded library to provide.
//!
//! The table is found through `DT_SYMTAB`, `DT_SYMENT` and `DT_STRTAB`; its length is not in
//! the dynamic segment, so it is taken from `DT_HASH` (`nchain`) or, without one, from
//! `DT_GNU_HASH`: the largest bucket's chain is followed to its end (the entry with the low
//! bit set), and the symbol after it is the first past the table. Section headers are never
//! needed.

use std::fs::File;
use std::io::{self, Read, Seek};
use std::path::Path;

use super::file::{DT_GNU_HASH, DT_HASH, DT_SYMENT, DT_SYMTAB, Dynamic, Elf, name_at};

/// At most this many symbols (libtorch has a few hundred thousand).
const MAX_SYMBOLS: u64 = 1_000_000;
/// A symbol entry is 24 (ELF64) or 16 (ELF32) bytes; larger ones are allowed up to this.
const MAX_SYMBOL_ENTRY: u64 = 64;
/// Long enough for the C++ names of template-heavy libraries.
const MAX_SYMBOL_NAME_BYTES: usize = 16 << 10;
const MAX_SYMBOL_STRTAB_BYTES: u64 = 64 << 20;
/// GNU hash chains are read this many entries at a time.
const CHAIN_CHUNK: u64 = 4096;

const STB_GLOBAL: u8 = 1;
const STB_WEAK: u8 = 2;
const STB_GNU_UNIQUE: u8 = 10;
const STT_OBJECT: u8 = 1;
const STT_FUNC: u8 = 2;
const STT_COMMON: u8 = 5;
const STT_GNU_IFUNC: u8 = 10;
const SHN_UNDEF: u16 = 0;

/// What a dynamic symbol names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SymbolKind {
    /// Code: `STT_FUNC`, or `STT_GNU_IFUNC` (a function whose implementation is picked at load
    /// time, as for many of libc's).
    Function,
    /// Data: `STT_OBJECT` or `STT_COMMON`.
    Object,
    /// Anything else, such as the untyped (`STT_NOTYPE`) references the GNU linker writes for
    /// undefined functions, and thread-local variables.
    Other,
}

/// How a dynamic symbol binds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SymbolBinding {
    /// `STB_GLOBAL`, and GNU's `STB_GNU_UNIQUE`.
    Global,
    /// `STB_WEAK`: a definition another may override, or a reference that may stay unresolved.
    Weak,
}

/// One global or weak dynamic symbol.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DynSymbol {
    /// As in the string table, without a version (`malloc`, not `malloc@GLIBC_2.2.5`).
    pub name: String,
    pub kind: SymbolKind,
    pub binding: SymbolBinding,
}

/// The global and weak symbols of a library's dynamic symbol table, each list in table order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DynamicSymbols {
    /// Defined in the library: what it exports.
    pub defined: Vec<DynSymbol>,
    /// Referenced but not defined: what some other loaded library must provide (a weak one
    /// may stay unresolved).
    pub undefined: Vec<DynSymbol>,
}

impl DynamicSymbols {
    /// The names of the functions the library defines.
    pub fn defined_functions(&self) -> impl Iterator<Item = &str> {
        self.defined.iter().filter(|s| s.kind == SymbolKind::Function).map(|s| s.name.as_str())
    }
}

/// The global and weak dynamic symbols of the ELF shared library at `path`; local symbols and
/// the null symbol are left out. A file without a dynamic segment or symbol table has none.
///
/// Errors: I/O errors as they come; `InvalidData` for a file that is not ELF or is malformed
/// (including one with a symbol table but neither `DT_HASH` nor `DT_GNU_HASH`); `UnexpectedEof`
/// for a truncated one.
pub fn dynamic_symbols(path: &Path) -> io::Result<DynamicSymbols> {
    dynamic_symbols_from(&mut File::open(path)?, path)
}

/// [`dynamic_symbols`] of an ELF file held by `reader` (positioned anywhere); `origin` names it
/// in errors. Reads at most 1,000,000 symbols, 64 MiB of string table and names of 16 KiB.
pub fn dynamic_symbols_from<R: Read + Seek>(reader: &mut R, origin: &Path) -> io::Result<DynamicSymbols> {
    read(reader, origin, Count::Any)
}

/// Which table gives the number of symbols.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Count {
    /// `DT_HASH` when there is one, else `DT_GNU_HASH`.
    Any,
    /// `DT_GNU_HASH` even when there is a `DT_HASH` (to test one against the other).
    #[cfg(test)]
    GnuOnly,
}

fn read<R: Read + Seek>(reader: &mut R, origin: &Path, count: Count) -> io::Result<DynamicSymbols> {
    let mut elf = Elf::parse(reader, origin)?;
    let Some(dynamic) = elf.dynamic()? else {
        return Ok(DynamicSymbols::default());
    };
    let Some(symtab) = dynamic.get(DT_SYMTAB) else {
        return Ok(DynamicSymbols::default());
    };
    let min_entry = if elf.layout.is64 { 24 } else { 16 };
    let entry = dynamic.get(DT_SYMENT).unwrap_or(min_entry);
    if !(min_entry..=MAX_SYMBOL_ENTRY).contains(&entry) {
        return Err(elf.invalid("bad DT_SYMENT"));
    }
    let count = symbol_count(&mut elf, &dynamic, count)?;
    if count > MAX_SYMBOLS {
        return Err(elf.invalid("too many dynamic symbols"));
    }
    let mut symbols = DynamicSymbols::default();
    if count <= 1 {
        return Ok(symbols);
    }
    let offset = elf.offset_of(symtab, "symbol table")?;
    // At most 1,000,000 × 64 bytes: no overflow, and a bounded read.
    let table = elf.read_at(offset, count * entry)?;
    let strings = elf.dynamic_strings(&dynamic, MAX_SYMBOL_STRTAB_BYTES, "symbol table")?;
    let layout = elf.layout;
    // The first entry is the null symbol.
    for s in table.chunks_exact(entry as usize).skip(1) {
        let (name, info, shndx) = if layout.is64 {
            (layout.u32(s, 0), s[4], layout.u16(s, 6))
        } else {
            (layout.u32(s, 0), s[12], layout.u16(s, 14))
        };
        let binding = match info >> 4 {
            STB_GLOBAL | STB_GNU_UNIQUE => SymbolBinding::Global,
            STB_WEAK => SymbolBinding::Weak,
            _ => continue,
        };
        let kind = match info & 0xf {
            STT_FUNC | STT_GNU_IFUNC => SymbolKind::Function,
            STT_OBJECT | STT_COMMON => SymbolKind::Object,
            _ => SymbolKind::Other,
        };
        let name = name_at(origin, &strings, u64::from(name), MAX_SYMBOL_NAME_BYTES, "symbol")?;
        if name.is_empty() {
            continue;
        }
        let symbol = DynSymbol { name: String::from_utf8_lossy(name).into_owned(), kind, binding };
        if shndx == SHN_UNDEF { &mut symbols.undefined } else { &mut symbols.defined }.push(symbol);
    }
    Ok(symbols)
}

/// The number of entries of the symbol table, the null symbol included.
fn symbol_count<R: Read + Seek>(elf: &mut Elf<'_, R>, dynamic: &Dynamic, count: Count) -> io::Result<u64> {
    let sysv = dynamic.get(DT_HASH).filter(|_| count == Count::Any);
    if let Some(hash) = sysv {
        // nbucket, nchain: the chain has one entry per symbol.
        let offset = elf.offset_of(hash, "DT_HASH table")?;
        let header = elf.read_at(offset, 8)?;
        return Ok(u64::from(elf.layout.u32(&header, 4)));
    }
    let Some(gnu) = dynamic.get(DT_GNU_HASH) else {
        return Err(elf.invalid("a symbol table without DT_HASH or DT_GNU_HASH"));
    };
    gnu_symbol_count(elf, gnu)
}

/// The number of symbols a GNU hash table covers: past the last symbol of the chain that the
/// largest bucket starts.
fn gnu_symbol_count<R: Read + Seek>(elf: &mut Elf<'_, R>, address: u64) -> io::Result<u64> {
    let layout = elf.layout;
    let offset = elf.offset_of(address, "DT_GNU_HASH table")?;
    let header = elf.read_at(offset, 16)?;
    let (nbuckets, symoffset, bloom_size) =
        (u64::from(layout.u32(&header, 0)), u64::from(layout.u32(&header, 4)), u64::from(layout.u32(&header, 8)));
    if nbuckets > MAX_SYMBOLS {
        return Err(elf.invalid("too many DT_GNU_HASH buckets"));
    }
    // Below 2^32 × 8 + 16 and 2^32 × 4: no overflow in u64 until added to the offset.
    let buckets_at = offset
        .checked_add(16 + bloom_size * layout.word_size())
        .ok_or_else(|| elf.invalid("DT_GNU_HASH table out of range"))?;
    let buckets = elf.read_at(buckets_at, nbuckets * 4)?;
    let last = buckets.chunks_exact(4).map(|b| u64::from(layout.u32(b, 0))).max().unwrap_or(0);
    if last == 0 {
        // No hashed symbols: only those before `symoffset`.
        return Ok(symoffset);
    }
    if last < symoffset {
        return Err(elf.invalid("DT_GNU_HASH bucket before the hashed symbols"));
    }
    // chain[i - symoffset] belongs to symbol i; follow the last bucket's chain to its end.
    let chain_at = buckets_at + nbuckets * 4;
    let mut index = last;
    loop {
        if index >= MAX_SYMBOLS {
            return Err(elf.invalid("too many dynamic symbols"));
        }
        let at = (index - symoffset)
            .checked_mul(4)
            .and_then(|d| chain_at.checked_add(d))
            .ok_or_else(|| elf.invalid("DT_GNU_HASH chain out of range"))?;
        // A chunk up to the end of the file, or to the symbol limit.
        let left = elf.len().saturating_sub(at) / 4;
        let n = CHAIN_CHUNK.min(MAX_SYMBOLS - index).min(left.max(1));
        let chain = elf.read_at(at, n * 4)?;
        for c in chain.chunks_exact(4) {
            if layout.u32(c, 0) & 1 == 1 {
                return Ok(index + 1);
            }
            index += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::super::tiny_elf::{Built, Hash, KERNEL_C, Sym, TinyElf, compile_shared, libc_path, tiny_elf};
    use super::*;
    use SymbolBinding::{Global, Weak};
    use SymbolKind::{Function, Object, Other};

    fn symbols(bytes: &[u8]) -> io::Result<DynamicSymbols> {
        dynamic_symbols_from(&mut Cursor::new(bytes), Path::new("mem.so"))
    }

    fn gnu_only(bytes: &[u8]) -> io::Result<DynamicSymbols> {
        read(&mut Cursor::new(bytes), Path::new("mem.so"), Count::GnuOnly)
    }

    fn sym(name: &str, kind: SymbolKind, binding: SymbolBinding) -> DynSymbol {
        DynSymbol { name: name.into(), kind, binding }
    }

    fn sorted(mut list: Vec<DynSymbol>) -> Vec<DynSymbol> {
        list.sort_by(|a, b| a.name.cmp(&b.name));
        list
    }

    fn set_u32(bytes: &mut [u8], at: usize, value: u32) {
        bytes[at..at + 4].copy_from_slice(&value.to_le_bytes());
    }

    fn error(outcome: io::Result<DynamicSymbols>) -> io::Error {
        let err = outcome.unwrap_err();
        assert!(matches!(err.kind(), io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof), "{err}");
        err
    }

    const KERNEL: &[Sym<'static>] = &[
        Sym { name: "__tvm_ffi_foo", defined: true, bind: 1, kind: 2 },
        Sym { name: "weak_helper", defined: true, bind: 2, kind: 2 },
        Sym { name: "exported_counter", defined: true, bind: 1, kind: 1 },
        Sym { name: "thread_state", defined: true, bind: 1, kind: 6 },
        Sym { name: "local_helper", defined: true, bind: 0, kind: 2 },
        Sym { name: "aoti_torch_get_data_ptr", defined: false, bind: 1, kind: 0 },
        Sym { name: "torch_call_dispatcher", defined: false, bind: 1, kind: 2 },
        Sym { name: "__gmon_start__", defined: false, bind: 2, kind: 0 },
    ];

    fn kernel(is64: bool, little: bool, hash: Hash) -> Built {
        TinyElf::new(is64, little).needed(&["libc.so.6"]).symbols(KERNEL, hash).build()
    }

    #[test]
    fn reads_symbols_in_every_class_byte_order_and_hash_table() {
        let defined = vec![
            sym("__tvm_ffi_foo", Function, Global),
            sym("exported_counter", Object, Global),
            sym("thread_state", Other, Global),
            sym("weak_helper", Function, Weak),
        ];
        let undefined = vec![
            sym("aoti_torch_get_data_ptr", Other, Global),
            sym("torch_call_dispatcher", Function, Global),
            sym("__gmon_start__", Other, Weak),
        ];
        for is64 in [true, false] {
            for little in [true, false] {
                for hash in [Hash::Sysv, Hash::Gnu, Hash::Both] {
                    let elf = kernel(is64, little, hash).bytes;
                    let found = symbols(&elf).unwrap();
                    let case = format!("64-bit {is64}, little-endian {little}, {hash:?}");
                    assert_eq!(sorted(found.defined.clone()), defined, "{case}");
                    assert_eq!(found.undefined, undefined, "{case}");
                    let functions: Vec<&str> = found.defined_functions().collect();
                    assert_eq!(functions.len(), 2, "{case}: {functions:?}");
                    if hash != Hash::Sysv {
                        assert_eq!(gnu_only(&elf).unwrap(), found, "{case}");
                    }
                    // The same parse still gives the needed libraries.
                    let needed = super::super::needed_libraries_from(&mut Cursor::new(&elf), Path::new("m")).unwrap();
                    assert_eq!(needed, ["libc.so.6"], "{case}");
                }
            }
        }
    }

    #[test]
    fn reads_from_a_file() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        io::Write::write_all(&mut f, &kernel(true, true, Hash::Gnu).bytes).unwrap();
        assert_eq!(dynamic_symbols(f.path()).unwrap().defined.len(), 4);
        assert_eq!(dynamic_symbols(Path::new("/nonexistent/lib.so")).unwrap_err().kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn gnu_hash_tables_without_hashed_symbols() {
        // Only undefined symbols: every bucket is empty, the count is `symoffset`.
        let imports = [Sym::undefined("PyModule_Create2"), Sym::undefined("__cudaRegisterFatBinary")];
        let elf = TinyElf::new(true, true).symbols(&imports, Hash::Gnu).build().bytes;
        let found = symbols(&elf).unwrap();
        assert!(found.defined.is_empty());
        let names: Vec<&str> = found.undefined.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["PyModule_Create2", "__cudaRegisterFatBinary"]);
        // Only the null symbol.
        let elf = TinyElf::new(false, false).symbols(&[], Hash::Gnu).build().bytes;
        assert_eq!(symbols(&elf).unwrap(), DynamicSymbols::default());
    }

    #[test]
    fn files_without_dynamic_symbols_have_none() {
        assert_eq!(symbols(&tiny_elf(true, true, &["libc.so.6"])).unwrap(), DynamicSymbols::default());
        let mut elf = kernel(true, true, Hash::Gnu).bytes;
        elf[56..58].copy_from_slice(&0u16.to_le_bytes()); // no program headers
        assert_eq!(symbols(&elf).unwrap(), DynamicSymbols::default());
        let err = symbols(b"#!/bin/sh\n").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().starts_with("mem.so: "), "{err}");
    }

    #[test]
    fn a_symbol_table_needs_a_hash_table_to_be_counted() {
        let err = error(symbols(&TinyElf::new(true, true).symbols(KERNEL, Hash::None).build().bytes));
        assert!(err.to_string().contains("without DT_HASH or DT_GNU_HASH"), "{err}");
    }

    #[test]
    fn hostile_sysv_counts_are_errors() {
        let built = kernel(true, true, Hash::Sysv);
        let nchain = built.hash.unwrap() + 4;
        for (count, message) in [(u32::MAX, Some("too many dynamic symbols")), (100_000, None)] {
            let mut elf = built.bytes.clone();
            set_u32(&mut elf, nchain, count);
            let err = error(symbols(&elf));
            match message {
                Some(m) => assert!(err.to_string().contains(m), "{err}"),
                None => assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{err}"),
            }
        }
    }

    #[test]
    fn hostile_gnu_hash_tables_are_errors() {
        let built = kernel(true, true, Hash::Gnu);
        let gnu = built.gnu_hash.unwrap();
        let (buckets, nbuckets) = (gnu + 16 + 8, 3);
        let chain = buckets + 4 * nbuckets;
        type Corrupt<'a> = Box<dyn Fn(&mut Vec<u8>) + 'a>;
        let cases: Vec<(&str, Corrupt<'_>, &str)> = vec![
            ("nbuckets", Box::new(|e| set_u32(e, gnu, u32::MAX)), "too many DT_GNU_HASH buckets"),
            ("bloom size", Box::new(|e| set_u32(e, gnu + 8, u32::MAX)), "truncated"),
            ("symoffset", Box::new(|e| set_u32(e, gnu + 4, 1000)), "bucket before the hashed symbols"),
            ("bucket", Box::new(|e| set_u32(e, buckets, u32::MAX)), "too many dynamic symbols"),
            ("endless chain", Box::new(|e| (0..5).for_each(|i| set_u32(e, chain + 4 * i, 2))), "truncated"),
        ];
        for (what, corrupt, message) in cases {
            let mut elf = built.bytes.clone();
            corrupt(&mut elf);
            let err = error(symbols(&elf));
            assert!(err.to_string().contains(message), "{what}: {err}");
        }
    }

    #[test]
    fn gnu_hash_chains_stop_at_the_symbol_limit() {
        // A chain with no end, longer than the limit: refused once the limit is passed.
        let built = kernel(true, true, Hash::Gnu);
        let chain = built.gnu_hash.unwrap() + 16 + 8 + 4 * 3;
        let mut elf = built.bytes;
        elf.truncate(chain);
        elf.resize(chain + 4 * (MAX_SYMBOLS as usize + 16), 0);
        let err = error(symbols(&elf));
        assert!(err.to_string().contains("too many dynamic symbols"), "{err}");
    }

    #[test]
    fn hostile_tables_and_names_are_errors() {
        let built = kernel(true, true, Hash::Gnu);
        let dynamic = built.dynamic;
        // Entries: DT_NEEDED, DT_STRTAB, DT_STRSZ, DT_SYMTAB, DT_SYMENT, DT_GNU_HASH, DT_NULL.
        let value = |entry: usize| dynamic + 16 * entry + 8;
        let cases: Vec<(&str, usize, u64, &str)> = vec![
            ("DT_SYMENT 0", value(4), 0, "bad DT_SYMENT"),
            ("DT_SYMENT huge", value(4), u64::MAX, "bad DT_SYMENT"),
            ("DT_SYMTAB", value(3), 0x10, "symbol table outside every loaded segment"),
            ("DT_GNU_HASH", value(5), u64::MAX, "DT_GNU_HASH table outside every loaded segment"),
            ("DT_STRSZ", value(2), 1 << 40, "string table too large"),
            ("st_name", built.symtab + 24, u64::from(u32::MAX), "bad symbol offset"),
        ];
        for (what, at, v, message) in cases {
            let mut elf = built.bytes.clone();
            let width = if what == "st_name" { 4 } else { 8 };
            elf[at..at + width].copy_from_slice(&v.to_le_bytes()[..width]);
            let err = error(symbols(&elf));
            assert!(err.to_string().contains(message), "{what}: {err}");
        }
    }

    #[test]
    fn symbol_names_are_bounded() {
        let longest = "s".repeat(MAX_SYMBOL_NAME_BYTES);
        let too_long = "s".repeat(MAX_SYMBOL_NAME_BYTES + 1);
        let elf = TinyElf::new(true, true).symbols(&[Sym::func(&longest)], Hash::Sysv).build().bytes;
        assert_eq!(symbols(&elf).unwrap().defined[0].name, longest);
        let elf = TinyElf::new(true, true).symbols(&[Sym::func(&too_long)], Hash::Sysv).build().bytes;
        let err = error(symbols(&elf));
        assert!(err.to_string().contains("symbol name too long"), "{err}");
    }

    #[test]
    fn reads_a_compiled_kernel_library() {
        let dir = tempfile::tempdir().unwrap();
        let styles =
            [("gnu", "-Wl,--hash-style=gnu"), ("sysv", "-Wl,--hash-style=sysv"), ("both", "-Wl,--hash-style=both")];
        for (name, flag) in styles {
            let Some(elf) = compile_shared(dir.path(), name, KERNEL_C, &[flag]) else { return };
            let found = symbols(&elf).unwrap();
            assert_eq!(
                sorted(found.defined.clone()),
                [
                    sym("__tvm_ffi_foo", Function, Global),
                    sym("exported_counter", Object, Global),
                    sym("message", Function, Global),
                    sym("op_name", Function, Global),
                    sym("use_hidden", Function, Global),
                    sym("weak_helper", Function, Weak),
                ],
                "{name}"
            );
            // Besides the kernel's own import, only the weak references of the C runtime's
            // start files.
            let (strong, weak): (Vec<_>, Vec<_>) = found.undefined.iter().partition(|s| s.binding == Global);
            assert_eq!(strong, [&sym("aoti_torch_get_data_ptr", Other, Global)], "{name}");
            let start_files =
                ["__cxa_finalize", "__gmon_start__", "_ITM_registerTMCloneTable", "_ITM_deregisterTMCloneTable"];
            assert!(weak.iter().all(|s| start_files.contains(&s.name.as_str())), "{name}: {weak:?}");
            if name != "sysv" {
                assert_eq!(gnu_only(&elf).unwrap(), found, "{name}");
            }
        }
    }

    #[test]
    fn reads_the_c_library() {
        let Some(path) = libc_path() else {
            eprintln!("skipped: libc.so.6 is not mapped into this process");
            return;
        };
        let started = std::time::Instant::now();
        let found = dynamic_symbols(&path).unwrap();
        eprintln!(
            "{}: {} defined, {} undefined, {:?}",
            path.display(),
            found.defined.len(),
            found.undefined.len(),
            started.elapsed()
        );
        assert!(found.defined_functions().count() > 1000, "{}", found.defined.len());
        assert!(found.defined.contains(&sym("malloc", Function, Global)));
        assert!(found.defined.iter().all(|s| !s.name.contains('@')));
        // Counted through DT_GNU_HASH alone (many distributions ship no DT_HASH): the same.
        assert_eq!(read(&mut File::open(&path).unwrap(), &path, Count::GnuOnly).unwrap(), found);
    }
}
