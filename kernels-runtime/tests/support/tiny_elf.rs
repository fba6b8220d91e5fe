//! Hand-built ELF shared objects, for the tests of the ELF readers (`ffi::elf`, through
//! `#[path]`) and the fuzz seeds: either class and byte order, `DT_NEEDED` entries, a dynamic
//! symbol table counted through `DT_HASH`, `DT_GNU_HASH` or both, and string literals.
//!
//! The layout is fixed, so tests can corrupt a field at a known offset: the ELF header, two
//! program headers (a `PT_LOAD` mapping the whole file at address `BASE`, then `PT_DYNAMIC`),
//! the dynamic segment (the `DT_NEEDED` entries first), the string table, the symbol table,
//! the hash tables and the string literals.
#![allow(dead_code)]

/// The address the file is loaded at.
pub(crate) const BASE: u64 = 0x1000;

pub(crate) const STB_GLOBAL: u8 = 1;
pub(crate) const STB_WEAK: u8 = 2;
pub(crate) const STT_NOTYPE: u8 = 0;
pub(crate) const STT_OBJECT: u8 = 1;
pub(crate) const STT_FUNC: u8 = 2;

/// Which tables give the number of symbols.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hash {
    None,
    Sysv,
    Gnu,
    Both,
}

/// A dynamic symbol.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sym<'a> {
    pub(crate) name: &'a str,
    pub(crate) defined: bool,
    pub(crate) bind: u8,
    pub(crate) kind: u8,
}

impl<'a> Sym<'a> {
    /// A defined global function.
    pub(crate) fn func(name: &'a str) -> Self {
        Sym { name, defined: true, bind: STB_GLOBAL, kind: STT_FUNC }
    }

    /// A defined global object.
    pub(crate) fn object(name: &'a str) -> Self {
        Sym { name, defined: true, bind: STB_GLOBAL, kind: STT_OBJECT }
    }

    /// An undefined global reference without a type, as the GNU linker writes one.
    pub(crate) fn undefined(name: &'a str) -> Self {
        Sym { name, defined: false, bind: STB_GLOBAL, kind: STT_NOTYPE }
    }

    pub(crate) fn weak(self) -> Self {
        Sym { bind: STB_WEAK, ..self }
    }

    pub(crate) fn bind(self, bind: u8) -> Self {
        Sym { bind, ..self }
    }
}

/// What to build.
#[derive(Debug, Clone)]
pub(crate) struct TinyElf<'a> {
    pub(crate) is64: bool,
    pub(crate) little: bool,
    pub(crate) needed: &'a [&'a str],
    /// With `Hash::None` and no symbols, no symbol table at all.
    pub(crate) symbols: &'a [Sym<'a>],
    pub(crate) hash: Hash,
    /// Written one after the other after a NUL, each followed by a NUL.
    pub(crate) strings: &'a [&'a [u8]],
}

/// A built file and where its parts are.
#[derive(Debug, Clone)]
pub(crate) struct Built {
    pub(crate) bytes: Vec<u8>,
    pub(crate) dynamic: usize,
    pub(crate) symtab: usize,
    pub(crate) hash: Option<usize>,
    pub(crate) gnu_hash: Option<usize>,
    pub(crate) strings: usize,
}

/// The GNU hash of a symbol name.
pub(crate) fn gnu_hash(name: &str) -> u32 {
    name.bytes().fold(5381u32, |h, c| h.wrapping_mul(33).wrapping_add(u32::from(c)))
}

/// Only `DT_NEEDED` entries.
pub(crate) fn tiny_elf(is64: bool, little: bool, needed: &[&str]) -> Vec<u8> {
    TinyElf::new(is64, little).needed(needed).build().bytes
}

fn align8(n: usize) -> usize {
    n.div_ceil(8) * 8
}

impl<'a> TinyElf<'a> {
    pub(crate) fn new(is64: bool, little: bool) -> Self {
        TinyElf { is64, little, needed: &[], symbols: &[], hash: Hash::None, strings: &[] }
    }

    pub(crate) fn needed(self, needed: &'a [&'a str]) -> Self {
        TinyElf { needed, ..self }
    }

    pub(crate) fn symbols(self, symbols: &'a [Sym<'a>], hash: Hash) -> Self {
        TinyElf { symbols, hash, ..self }
    }

    pub(crate) fn strings(self, strings: &'a [&'a [u8]]) -> Self {
        TinyElf { strings, ..self }
    }

    pub(crate) fn build(&self) -> Built {
        let (is64, little) = (self.is64, self.little);
        let put = |out: &mut Vec<u8>, value: u64, width: usize| {
            let bytes = if little { value.to_le_bytes() } else { value.to_be_bytes() };
            let bytes = if little { &bytes[..width] } else { &bytes[8 - width..] };
            out.extend_from_slice(bytes);
        };
        let word = if is64 { 8 } else { 4 };
        let (header, phent) = if is64 { (64usize, 56usize) } else { (52, 32) };
        let syment = if is64 { 24 } else { 16 };
        let with_symtab = self.hash != Hash::None || !self.symbols.is_empty();

        // Symbols: the null one, the undefined ones, then the defined ones by GNU hash bucket.
        let mut symbols: Vec<Sym<'a>> = self.symbols.iter().filter(|s| !s.defined).copied().collect();
        let symoffset = 1 + symbols.len();
        let hashed: Vec<Sym<'a>> = self.symbols.iter().filter(|s| s.defined).copied().collect();
        let nbuckets = (hashed.len() / 2).max(1) + usize::from(hashed.len() > 1);
        let mut hashed: Vec<(usize, Sym<'a>)> =
            hashed.into_iter().map(|s| (gnu_hash(s.name) as usize % nbuckets, s)).collect();
        hashed.sort_by_key(|(bucket, _)| *bucket);
        symbols.extend(hashed.iter().map(|(_, s)| *s));
        let count = 1 + symbols.len();

        let mut strtab = vec![0u8];
        let mut name = |s: &str| {
            let at = strtab.len() as u64;
            strtab.extend_from_slice(s.as_bytes());
            strtab.push(0);
            at
        };
        let needed: Vec<u64> = self.needed.iter().map(|n| name(n)).collect();
        let names: Vec<u64> = symbols.iter().map(|s| name(s.name)).collect();

        let mut entries = needed.len() + 3;
        if with_symtab {
            entries += 2;
            entries += match self.hash {
                Hash::None => 0,
                Hash::Sysv | Hash::Gnu => 1,
                Hash::Both => 2,
            };
        }
        let dyn_off = header + 2 * phent;
        let dyn_len = entries * 2 * word;
        let str_off = dyn_off + dyn_len;
        let sym_off = align8(str_off + strtab.len());
        let sym_len = if with_symtab { count * syment } else { 0 };
        let mut at = align8(sym_off + sym_len);
        let hash_off = matches!(self.hash, Hash::Sysv | Hash::Both).then_some(at);
        if hash_off.is_some() {
            at = align8(at + (2 + 1 + count) * 4);
        }
        let gnu_off = matches!(self.hash, Hash::Gnu | Hash::Both).then_some(at);
        if gnu_off.is_some() {
            at = align8(at + 16 + word + nbuckets * 4 + (count - symoffset) * 4);
        }
        // A NUL first, as in a string section: the bytes before may be printable.
        let strings_off = at + 1;
        let total = strings_off + self.strings.iter().map(|s| s.len() + 1).sum::<usize>();
        let (base, total64) = (BASE, total as u64);

        let mut f = b"\x7fELF".to_vec();
        f.extend_from_slice(&[if is64 { 2 } else { 1 }, if little { 1 } else { 2 }, 1]);
        f.resize(16, 0);
        put(&mut f, 3, 2); // ET_DYN
        put(&mut f, 62, 2); // EM_X86_64
        put(&mut f, 1, 4); // EV_CURRENT
        put(&mut f, 0, word); // e_entry
        put(&mut f, header as u64, word); // e_phoff
        put(&mut f, 0, word); // e_shoff
        put(&mut f, 0, 4); // e_flags
        put(&mut f, header as u64, 2); // e_ehsize
        put(&mut f, phent as u64, 2); // e_phentsize
        put(&mut f, 2, 2); // e_phnum
        put(&mut f, 0, 6); // e_shentsize, e_shnum, e_shstrndx
        assert_eq!(f.len(), header);
        for (kind, offset, size) in [(1u64, 0u64, total64), (2, dyn_off as u64, dyn_len as u64)] {
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
        let address = |offset: usize| base + offset as u64;
        let mut dynamic: Vec<(u64, u64)> = needed.iter().map(|o| (1u64, *o)).collect();
        dynamic.extend([(5, address(str_off)), (10, strtab.len() as u64)]);
        if with_symtab {
            dynamic.extend([(6, address(sym_off)), (11, syment as u64)]);
            if let Some(off) = hash_off {
                dynamic.push((4, address(off)));
            }
            if let Some(off) = gnu_off {
                dynamic.push((0x6fff_fef5, address(off)));
            }
        }
        dynamic.push((0, 0));
        assert_eq!(dynamic.len(), entries);
        for (tag, value) in dynamic {
            put(&mut f, tag, word);
            put(&mut f, value, word);
        }
        f.extend_from_slice(&strtab);
        f.resize(sym_off, 0);
        if with_symtab {
            f.resize(sym_off + syment, 0); // the null symbol
            for (i, (s, name)) in symbols.iter().zip(&names).enumerate() {
                let info = u64::from(s.bind << 4 | s.kind);
                let (value, shndx) = if s.defined { (0x2000 + 16 * i as u64, 7) } else { (0, 0) };
                put(&mut f, *name, 4);
                if is64 {
                    put(&mut f, info, 1);
                    put(&mut f, 0, 1); // st_other
                    put(&mut f, shndx, 2);
                    put(&mut f, value, 8);
                    put(&mut f, 16, 8); // st_size
                } else {
                    put(&mut f, value, 4);
                    put(&mut f, 16, 4); // st_size
                    put(&mut f, info, 1);
                    put(&mut f, 0, 1); // st_other
                    put(&mut f, shndx, 2);
                }
            }
        }
        if let Some(off) = hash_off {
            // One bucket holding every symbol, last to first.
            f.resize(off, 0);
            put(&mut f, 1, 4);
            put(&mut f, count as u64, 4);
            put(&mut f, count as u64 - 1, 4);
            for i in 0..count {
                put(&mut f, i.saturating_sub(1) as u64, 4);
            }
        }
        if let Some(off) = gnu_off {
            f.resize(off, 0);
            put(&mut f, nbuckets as u64, 4);
            put(&mut f, symoffset as u64, 4);
            put(&mut f, 1, 4); // bloom size: one word, every bit set
            put(&mut f, 6, 4); // bloom shift
            put(&mut f, u64::MAX, word);
            for bucket in 0..nbuckets {
                let first = hashed.iter().position(|(b, _)| *b == bucket).map_or(0, |i| symoffset + i);
                put(&mut f, first as u64, 4);
            }
            for (i, (bucket, s)) in hashed.iter().enumerate() {
                let last = hashed.get(i + 1).is_none_or(|(next, _)| next != bucket);
                put(&mut f, u64::from(gnu_hash(s.name) & !1 | u32::from(last)), 4);
            }
        }
        f.resize(strings_off, 0);
        for s in self.strings {
            f.extend_from_slice(s);
            f.push(0);
        }
        assert_eq!(f.len(), total);
        Built { bytes: f, dynamic: dyn_off, symtab: sym_off, hash: hash_off, gnu_hash: gnu_off, strings: strings_off }
    }
}

/// A C library as a PyTorch stable-ABI or TVM-FFI kernel looks to the ELF readers: exported
/// functions (one weak), an exported object, a call to a function another library provides,
/// and `aten::` operator names as string literals.
pub(crate) const KERNEL_C: &str = r#"
extern void *aoti_torch_get_data_ptr(void *);
static const char *const ops[] = {"aten::empty_like", "aten::fill_.Scalar", "aten::empty_like"};
const char *op_name(int i) { return ops[i % 3]; }
const char *message(void) { return "calling aten::add failed"; }
int __tvm_ffi_foo(void *h, const void *args, int n, void *r) {
    (void)h; (void)args; (void)n; (void)r;
    return aoti_torch_get_data_ptr(0) != 0;
}
__attribute__((weak)) int weak_helper(void) { return 1; }
int exported_counter = 3;
static int hidden(void) { return 2; }
int use_hidden(void) { return hidden(); }
"#;

/// Compiles `source` into a shared library in `dir` with `cc -shared -fPIC` and `args`; `None`
/// (with the reason printed) when there is no C compiler.
pub(crate) fn compile_shared(dir: &std::path::Path, name: &str, source: &str, args: &[&str]) -> Option<Vec<u8>> {
    let c = dir.join(format!("{name}.c"));
    std::fs::write(&c, source).unwrap();
    let out = dir.join(format!("lib{name}.so"));
    let cc = std::env::var_os("CC").unwrap_or_else(|| "cc".into());
    let status =
        std::process::Command::new(&cc).args(["-shared", "-fPIC", "-O2", "-o"]).arg(&out).arg(&c).args(args).status();
    match status {
        Ok(s) if s.success() => Some(std::fs::read(out).unwrap()),
        Ok(s) => panic!("{} failed on {}: {s}", cc.to_string_lossy(), c.display()),
        Err(e) => {
            eprintln!("skipped: no C compiler ({}: {e})", cc.to_string_lossy());
            None
        }
    }
}

/// The path of the C library this process runs with, from `/proc/self/maps`.
pub(crate) fn libc_path() -> Option<std::path::PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines().filter_map(|l| l.split_whitespace().nth(5)).find(|p| p.ends_with("/libc.so.6")).map(Into::into)
}
