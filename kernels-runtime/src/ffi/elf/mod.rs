//! Reading an ELF shared library without loading it: its `DT_NEEDED` entries (to know whether
//! a kernel needs `libtvm_ffi.so` before it is opened), its dynamic symbols (what it defines
//! and what it expects another library to provide) and the string literals with a given
//! prefix. Reads only what each answer needs, never the whole file at once.
//!
//! Every offset, size and count comes from the file and is untrusted: arithmetic on them is
//! checked, and each read is bounded, so a corrupt or hostile file gives an error, never a
//! panic, a huge allocation or a long read.
//!
//! - [`file`](mod@file): the ELF and program headers, the dynamic segment and string table, bounded
//!   reads; parsed once and shared by the readers below.
//! - [`needed`]: `DT_NEEDED`, and whether tvm-ffi must be preloaded.
//! - [`symbols`]: the dynamic symbol table (`.dynsym`), counted through `DT_HASH` or
//!   `DT_GNU_HASH`.
//! - [`strings`]: printable NUL-terminated strings with a prefix, in the loaded segments.

mod file;
mod needed;
mod strings;
mod symbols;
#[cfg(test)]
#[path = "../../../tests/support/tiny_elf.rs"]
mod tiny_elf;

use std::io;
use std::path::Path;

pub use needed::{TVM_FFI_LIBRARY, needed_libraries, needed_libraries_from, needs_tvm_ffi};
pub use strings::{strings_with_prefix, strings_with_prefix_from};
pub use symbols::{DynSymbol, DynamicSymbols, SymbolBinding, SymbolKind, dynamic_symbols, dynamic_symbols_from};

fn invalid(path: &Path, what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("{}: not a valid ELF shared library: {what}", path.display()))
}
