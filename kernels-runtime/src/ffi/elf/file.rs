//! The part every reader shares: the ELF header, the program headers, the dynamic segment, the
//! dynamic string table, and bounded reads at file offsets or at loaded addresses.

use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

use super::invalid;

pub(super) const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
pub(super) const DT_NULL: u64 = 0;
pub(super) const DT_NEEDED: u64 = 1;
pub(super) const DT_HASH: u64 = 4;
pub(super) const DT_STRTAB: u64 = 5;
pub(super) const DT_SYMTAB: u64 = 6;
pub(super) const DT_STRSZ: u64 = 10;
pub(super) const DT_SYMENT: u64 = 11;
pub(super) const DT_GNU_HASH: u64 = 0x6fff_fef5;

/// Upper bounds that keep a corrupt file from making us allocate, read or loop without end.
const MAX_PROGRAM_HEADERS: u64 = 4096;
/// Program header entries are 56 (ELF64) or 32 (ELF32) bytes; larger ones are allowed (the
/// reader skips the tail of each), up to this.
pub(super) const MAX_PROGRAM_HEADER_SIZE: u16 = 256;
const MAX_DYNAMIC_BYTES: u64 = 1 << 20;

/// Field reader for one ELF class and byte order.
#[derive(Clone, Copy)]
pub(super) struct Layout {
    pub(super) is64: bool,
    little: bool,
}

impl Layout {
    pub(super) fn u16(self, b: &[u8], at: usize) -> u16 {
        let v = [b[at], b[at + 1]];
        if self.little { u16::from_le_bytes(v) } else { u16::from_be_bytes(v) }
    }

    pub(super) fn u32(self, b: &[u8], at: usize) -> u32 {
        let v = b[at..at + 4].try_into().expect("4 bytes");
        if self.little { u32::from_le_bytes(v) } else { u32::from_be_bytes(v) }
    }

    fn u64(self, b: &[u8], at: usize) -> u64 {
        let v = b[at..at + 8].try_into().expect("8 bytes");
        if self.little { u64::from_le_bytes(v) } else { u64::from_be_bytes(v) }
    }

    /// An address-sized field.
    pub(super) fn word(self, b: &[u8], at: usize) -> u64 {
        if self.is64 { self.u64(b, at) } else { u64::from(self.u32(b, at)) }
    }

    /// The size of an address, in bytes.
    pub(super) fn word_size(self) -> u64 {
        if self.is64 { 8 } else { 4 }
    }
}

pub(super) struct Segment {
    pub(super) kind: u32,
    pub(super) offset: u64,
    pub(super) vaddr: u64,
    pub(super) filesz: u64,
}

/// The entries of the dynamic segment, up to `DT_NULL`.
pub(super) struct Dynamic(Vec<(u64, u64)>);

impl Dynamic {
    /// The value of the last entry with `tag` (as the dynamic loader keeps the last one).
    pub(super) fn get(&self, tag: u64) -> Option<u64> {
        self.0.iter().rev().find(|(t, _)| *t == tag).map(|(_, v)| *v)
    }

    /// The values of every entry with `tag`, in order.
    pub(super) fn all(&self, tag: u64) -> impl Iterator<Item = u64> + '_ {
        self.0.iter().filter(move |(t, _)| *t == tag).map(|(_, v)| *v)
    }
}

/// An ELF file whose headers were read: its class and byte order, its program headers, and
/// the reader to read the rest through.
pub(super) struct Elf<'r, R> {
    reader: &'r mut R,
    path: &'r Path,
    /// The file length, taken first: nothing past it is ever sought to.
    len: u64,
    pub(super) layout: Layout,
    pub(super) segments: Vec<Segment>,
}

impl<'r, R: Read + Seek> Elf<'r, R> {
    /// Reads the ELF header and the program headers of the file held by `reader` (positioned
    /// anywhere); `path` names it in errors. Reads at most 64 bytes and 1 MiB.
    pub(super) fn parse(reader: &'r mut R, path: &'r Path) -> io::Result<Self> {
        let len = reader.seek(SeekFrom::End(0))?;
        reader.seek(SeekFrom::Start(0))?;
        let mut ident = Vec::with_capacity(64);
        reader.take(64).read_to_end(&mut ident)?;
        let n = ident.len();
        if n < 16 || &ident[..4] != b"\x7fELF" {
            return Err(invalid(path, "missing ELF magic"));
        }
        let layout = match (ident[4], ident[5]) {
            (1 | 2, 1 | 2) => Layout { is64: ident[4] == 2, little: ident[5] == 1 },
            _ => return Err(invalid(path, "unknown ELF class or byte order")),
        };
        let header_len = if layout.is64 { 64 } else { 52 };
        if n < header_len {
            return Err(invalid(path, "truncated ELF header"));
        }
        let h = &ident[..header_len];
        let (phoff, phentsize, phnum) = if layout.is64 {
            (layout.u64(h, 32), layout.u16(h, 54), layout.u16(h, 56))
        } else {
            (u64::from(layout.u32(h, 28)), layout.u16(h, 42), layout.u16(h, 44))
        };
        let min_entry = if layout.is64 { 56 } else { 32 };
        if u64::from(phnum) > MAX_PROGRAM_HEADERS
            || (phnum > 0 && (usize::from(phentsize) < min_entry || phentsize > MAX_PROGRAM_HEADER_SIZE))
        {
            return Err(invalid(path, "bad program header table"));
        }
        let mut elf = Elf { reader, path, len, layout, segments: Vec::new() };
        // At most 4096 × 256 bytes: no overflow, and a bounded read.
        let table = elf.read_at(phoff, u64::from(phentsize) * u64::from(phnum))?;
        elf.segments = table
            .chunks_exact(usize::from(phentsize.max(1)))
            .map(|p| {
                if layout.is64 {
                    Segment {
                        kind: layout.u32(p, 0),
                        offset: layout.u64(p, 8),
                        vaddr: layout.u64(p, 16),
                        filesz: layout.u64(p, 32),
                    }
                } else {
                    Segment {
                        kind: layout.u32(p, 0),
                        offset: u64::from(layout.u32(p, 4)),
                        vaddr: u64::from(layout.u32(p, 8)),
                        filesz: u64::from(layout.u32(p, 16)),
                    }
                }
            })
            .collect();
        Ok(elf)
    }

    /// The length of the file, in bytes.
    pub(super) fn len(&self) -> u64 {
        self.len
    }

    /// An `InvalidData` error naming the file.
    pub(super) fn invalid(&self, what: &str) -> io::Error {
        invalid(self.path, what)
    }

    /// Checks that `offset..offset + len` lies in the file: a range that does not fit in a
    /// file offset is invalid data, one past the end of the file is truncation. Neither is
    /// sought to (a seek far past the end fails with an I/O error on some file systems).
    pub(super) fn check_range(&self, offset: u64, len: u64) -> io::Result<()> {
        let end = offset.checked_add(len).filter(|&end| end <= i64::MAX as u64);
        let Some(end) = end else {
            return Err(self.invalid("offset out of range"));
        };
        if end > self.len {
            return Err(truncated());
        }
        Ok(())
    }

    /// Reads exactly `len` bytes at `offset`; `len` is bounded by the caller.
    pub(super) fn read_at(&mut self, offset: u64, len: u64) -> io::Result<Vec<u8>> {
        if len == 0 {
            return Ok(Vec::new());
        }
        self.check_range(offset, len)?;
        let mut buf = Vec::new();
        self.stream_at(offset, len)?.read_to_end(&mut buf)?;
        if (buf.len() as u64) < len {
            return Err(truncated());
        }
        Ok(buf)
    }

    /// A reader of the `len` bytes at `offset`, for ranges read a piece at a time; the range
    /// was checked with [`check_range`](Self::check_range).
    pub(super) fn stream_at(&mut self, offset: u64, len: u64) -> io::Result<io::Take<&mut R>> {
        self.reader.seek(SeekFrom::Start(offset))?;
        Ok((&mut *self.reader).take(len))
    }

    /// The file offset of the loaded address `address`, through the `PT_LOAD` segment whose
    /// file bytes hold it; `what` names the table in errors.
    pub(super) fn offset_of(&self, address: u64, what: &str) -> io::Result<u64> {
        let load = self
            .segments
            .iter()
            .find(|s| s.kind == PT_LOAD && s.vaddr <= address && address - s.vaddr < s.filesz)
            .ok_or_else(|| self.invalid(&format!("{what} outside every loaded segment")))?;
        // `vaddr <= address` holds for the segment found; its file offset plus the distance
        // into it may still leave the u64 range.
        load.offset
            .checked_add(address - load.vaddr)
            .ok_or_else(|| self.invalid(&format!("{what} offset out of range")))
    }

    /// The dynamic segment's entries up to `DT_NULL`, or `None` for a file without one (a
    /// statically linked object). Reads at most 1 MiB.
    pub(super) fn dynamic(&mut self) -> io::Result<Option<Dynamic>> {
        let Some(dynamic) = self.segments.iter().find(|s| s.kind == PT_DYNAMIC) else {
            return Ok(None);
        };
        if dynamic.filesz > MAX_DYNAMIC_BYTES {
            return Err(self.invalid("dynamic segment too large"));
        }
        let bytes = self.read_at(dynamic.offset, dynamic.filesz)?;
        let entry = 2 * self.layout.word_size() as usize;
        let layout = self.layout;
        let entries = bytes
            .chunks_exact(entry)
            .map(|d| (layout.word(d, 0), layout.word(d, entry / 2)))
            .take_while(|&(tag, _)| tag != DT_NULL)
            .collect();
        Ok(Some(Dynamic(entries)))
    }

    /// The dynamic string table (`DT_STRTAB`, `DT_STRSZ`), of at most `max` bytes.
    pub(super) fn dynamic_strings(&mut self, dynamic: &Dynamic, max: u64, user: &str) -> io::Result<Vec<u8>> {
        let (Some(strtab), Some(strsz)) = (dynamic.get(DT_STRTAB), dynamic.get(DT_STRSZ)) else {
            return Err(self.invalid(&format!("{user} without a string table")));
        };
        if strsz > max {
            return Err(self.invalid("string table too large"));
        }
        let offset = self.offset_of(strtab, "string table")?;
        self.read_at(offset, strsz)
    }
}

pub(super) fn truncated() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "ELF file is truncated")
}

/// The NUL-terminated name at `at` in the string table `strings`, of at most `max` bytes;
/// `what` names it in errors (`bad {what} offset`, `{what} name too long`, `unterminated
/// {what} name`).
pub(super) fn name_at<'s>(path: &Path, strings: &'s [u8], at: u64, max: usize, what: &str) -> io::Result<&'s [u8]> {
    let rest = usize::try_from(at)
        .ok()
        .and_then(|at| strings.get(at..))
        .ok_or_else(|| invalid(path, &format!("bad {what} offset")))?;
    let rest = &rest[..rest.len().min(max + 1)];
    let end = rest.iter().position(|&b| b == 0).ok_or_else(|| {
        let why = if rest.len() > max { format!("{what} name too long") } else { format!("unterminated {what} name") };
        invalid(path, &why)
    })?;
    Ok(&rest[..end])
}
