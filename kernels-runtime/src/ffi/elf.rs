//! Reading the `DT_NEEDED` entries of an ELF shared library, to know whether a kernel needs
//! `libtvm_ffi.so` before it is opened. Reads only the headers, the dynamic segment and the
//! dynamic string table, never the whole file.
//!
//! Every offset, size and count comes from the file and is untrusted: arithmetic on them is
//! checked, and each read is bounded, so a corrupt or hostile file gives an error, never a
//! panic, a huge allocation or a long read.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

/// The file name (and `DT_SONAME`) of the tvm-ffi runtime library.
pub const TVM_FFI_LIBRARY: &str = "libtvm_ffi.so";

const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const DT_NULL: u64 = 0;
const DT_NEEDED: u64 = 1;
const DT_STRTAB: u64 = 5;
const DT_STRSZ: u64 = 10;

/// Upper bounds that keep a corrupt file from making us allocate, read or loop without end.
const MAX_PROGRAM_HEADERS: u64 = 4096;
/// Program header entries are 56 (ELF64) or 32 (ELF32) bytes; larger ones are allowed (the
/// reader skips the tail of each), up to this.
const MAX_PROGRAM_HEADER_SIZE: u16 = 256;
const MAX_DYNAMIC_BYTES: u64 = 1 << 20;
const MAX_STRTAB_BYTES: u64 = 16 << 20;
/// Real libraries need a few dozen; each name is at most a path.
const MAX_NEEDED: usize = 4096;
const MAX_NEEDED_NAME_BYTES: usize = 4096;

fn invalid(path: &Path, what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("{}: not a valid ELF shared library: {what}", path.display()))
}

/// Field reader for one ELF class and byte order.
#[derive(Clone, Copy)]
struct Layout {
    is64: bool,
    little: bool,
}

impl Layout {
    fn u16(self, b: &[u8], at: usize) -> u16 {
        let v = [b[at], b[at + 1]];
        if self.little { u16::from_le_bytes(v) } else { u16::from_be_bytes(v) }
    }

    fn u32(self, b: &[u8], at: usize) -> u32 {
        let v = b[at..at + 4].try_into().expect("4 bytes");
        if self.little { u32::from_le_bytes(v) } else { u32::from_be_bytes(v) }
    }

    fn u64(self, b: &[u8], at: usize) -> u64 {
        let v = b[at..at + 8].try_into().expect("8 bytes");
        if self.little { u64::from_le_bytes(v) } else { u64::from_be_bytes(v) }
    }

    /// An address-sized field.
    fn word(self, b: &[u8], at: usize) -> u64 {
        if self.is64 { self.u64(b, at) } else { u64::from(self.u32(b, at)) }
    }
}

struct Segment {
    kind: u32,
    offset: u64,
    vaddr: u64,
    filesz: u64,
}

/// The file being read, and its length.
struct Input<'r, R> {
    reader: &'r mut R,
    path: &'r Path,
    len: u64,
}

/// Reads exactly `len` bytes at `offset`; `len` is bounded by the caller. A range that does not
/// fit in a file offset is invalid data, one past the end of the file is truncation: neither
/// is sought to (a seek far past the end fails with an I/O error on some file systems).
fn read_at<R: Read + Seek>(input: &mut Input<'_, R>, offset: u64, len: u64) -> io::Result<Vec<u8>> {
    if len == 0 {
        return Ok(Vec::new());
    }
    let end = offset.checked_add(len).filter(|&end| end <= i64::MAX as u64);
    let Some(end) = end else {
        return Err(invalid(input.path, "offset out of range"));
    };
    if end > input.len {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "ELF file is truncated"));
    }
    let reader = &mut *input.reader;
    reader.seek(SeekFrom::Start(offset))?;
    let mut buf = Vec::new();
    reader.take(len).read_to_end(&mut buf)?;
    if (buf.len() as u64) < len {
        return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "ELF file is truncated"));
    }
    Ok(buf)
}

/// The `DT_NEEDED` entries of the ELF shared library at `path`, in order.
///
/// Errors: I/O errors as they come; `InvalidData` for a file that is not ELF or is malformed;
/// `UnexpectedEof` for a truncated one.
pub fn needed_libraries(path: &Path) -> io::Result<Vec<String>> {
    needed_libraries_from(&mut File::open(path)?, path)
}

/// [`needed_libraries`] of an ELF file held by `reader` (positioned anywhere); `origin` names
/// it in errors. Reads at most the headers, 256 KiB of program headers, 1 MiB of dynamic
/// segment and 16 MiB of string table.
pub fn needed_libraries_from<R: Read + Seek>(reader: &mut R, origin: &Path) -> io::Result<Vec<String>> {
    let path = origin;
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
    // At most 4096 × 256 bytes: no overflow, and a bounded read.
    let mut input = Input { reader, path, len };
    let table = read_at(&mut input, phoff, u64::from(phentsize) * u64::from(phnum))?;
    let segments: Vec<Segment> = table
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
    let Some(dynamic) = segments.iter().find(|s| s.kind == PT_DYNAMIC) else {
        // A statically linked object needs nothing.
        return Ok(Vec::new());
    };
    if dynamic.filesz > MAX_DYNAMIC_BYTES {
        return Err(invalid(path, "dynamic segment too large"));
    }
    let dynamic = read_at(&mut input, dynamic.offset, dynamic.filesz)?;
    let entry = if layout.is64 { 16 } else { 8 };
    let half = entry / 2;
    let (mut needed, mut strtab, mut strsz) = (Vec::new(), None, None);
    for d in dynamic.chunks_exact(entry) {
        let (tag, value) = (layout.word(d, 0), layout.word(d, half));
        match tag {
            DT_NULL => break,
            DT_NEEDED if needed.len() == MAX_NEEDED => return Err(invalid(path, "too many DT_NEEDED entries")),
            DT_NEEDED => needed.push(value),
            DT_STRTAB => strtab = Some(value),
            DT_STRSZ => strsz = Some(value),
            _ => {}
        }
    }
    if needed.is_empty() {
        return Ok(Vec::new());
    }
    let (Some(strtab), Some(strsz)) = (strtab, strsz) else {
        return Err(invalid(path, "DT_NEEDED without a string table"));
    };
    if strsz > MAX_STRTAB_BYTES {
        return Err(invalid(path, "string table too large"));
    }
    // DT_STRTAB is an address: find the loaded segment that maps it to a file offset.
    let load = segments
        .iter()
        .find(|s| s.kind == PT_LOAD && s.vaddr <= strtab && strtab - s.vaddr < s.filesz)
        .ok_or_else(|| invalid(path, "string table outside every loaded segment"))?;
    // `vaddr <= strtab` holds for the segment found; its file offset plus the distance into it
    // may still leave the u64 range.
    let strtab_offset = load
        .offset
        .checked_add(strtab - load.vaddr)
        .ok_or_else(|| invalid(path, "string table offset out of range"))?;
    let strings = read_at(&mut input, strtab_offset, strsz)?;
    needed
        .into_iter()
        .map(|at| {
            let rest = usize::try_from(at)
                .ok()
                .and_then(|at| strings.get(at..))
                .ok_or_else(|| invalid(path, "bad DT_NEEDED offset"))?;
            let rest = &rest[..rest.len().min(MAX_NEEDED_NAME_BYTES + 1)];
            let end = rest.iter().position(|&b| b == 0).ok_or_else(|| {
                let why = if rest.len() > MAX_NEEDED_NAME_BYTES {
                    "DT_NEEDED name too long"
                } else {
                    "unterminated DT_NEEDED name"
                };
                invalid(path, why)
            })?;
            Ok(String::from_utf8_lossy(&rest[..end]).into_owned())
        })
        .collect()
}

/// Whether the shared library at `path` lists `libtvm_ffi.so` (or a versioned
/// `libtvm_ffi.so.N`) in `DT_NEEDED`, i.e. must be opened after tvm-ffi is preloaded.
pub fn needs_tvm_ffi(path: &Path) -> io::Result<bool> {
    Ok(needed_libraries(path)?
        .iter()
        .any(|name| name.strip_prefix(TVM_FFI_LIBRARY).is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a minimal ELF64 little-endian shared object with the given DT_NEEDED names.
    fn elf64(needed: &[&str]) -> Vec<u8> {
        let mut strtab = vec![0u8];
        let mut offsets = Vec::new();
        for name in needed {
            offsets.push(strtab.len() as u64);
            strtab.extend_from_slice(name.as_bytes());
            strtab.push(0);
        }
        let phoff = 64u64;
        let ph_len = 2 * 56u64;
        let dyn_off = phoff + ph_len;
        let mut dynamic = Vec::new();
        for off in &offsets {
            dynamic.extend_from_slice(&DT_NEEDED.to_le_bytes());
            dynamic.extend_from_slice(&off.to_le_bytes());
        }
        let str_off = dyn_off + (offsets.len() as u64 + 3) * 16;
        let vaddr_base = 0x1000u64;
        for (tag, value) in [(DT_STRTAB, vaddr_base + str_off), (DT_STRSZ, strtab.len() as u64), (DT_NULL, 0)] {
            dynamic.extend_from_slice(&tag.to_le_bytes());
            dynamic.extend_from_slice(&value.to_le_bytes());
        }
        let total = str_off + strtab.len() as u64;
        let mut f = vec![0u8; 64];
        f[..4].copy_from_slice(b"\x7fELF");
        f[4] = 2; // ELFCLASS64
        f[5] = 1; // little endian
        f[6] = 1;
        f[16..18].copy_from_slice(&3u16.to_le_bytes()); // ET_DYN
        f[32..40].copy_from_slice(&phoff.to_le_bytes());
        f[54..56].copy_from_slice(&56u16.to_le_bytes());
        f[56..58].copy_from_slice(&2u16.to_le_bytes());
        let ph = |kind: u32, offset: u64, vaddr: u64, size: u64| {
            let mut p = vec![0u8; 56];
            p[0..4].copy_from_slice(&kind.to_le_bytes());
            p[8..16].copy_from_slice(&offset.to_le_bytes());
            p[16..24].copy_from_slice(&vaddr.to_le_bytes());
            p[32..40].copy_from_slice(&size.to_le_bytes());
            p
        };
        f.extend(ph(PT_LOAD, 0, vaddr_base, total));
        f.extend(ph(PT_DYNAMIC, dyn_off, vaddr_base + dyn_off, dynamic.len() as u64));
        f.extend(dynamic);
        f.extend(strtab);
        f
    }

    fn write(bytes: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut f, bytes).unwrap();
        f
    }

    #[test]
    fn reads_needed_entries() {
        let f = write(&elf64(&["libc.so.6", "libtvm_ffi.so"]));
        assert_eq!(needed_libraries(f.path()).unwrap(), ["libc.so.6", "libtvm_ffi.so"]);
        assert!(needs_tvm_ffi(f.path()).unwrap());
        let f = write(&elf64(&["libc.so.6", "libtvm_ffi_testing.so"]));
        assert!(!needs_tvm_ffi(f.path()).unwrap());
        let f = write(&elf64(&[]));
        assert!(needed_libraries(f.path()).unwrap().is_empty());
    }

    #[test]
    fn reads_real_libraries() {
        // The test binary itself is a dynamically linked ELF that needs libc.
        let exe = std::env::current_exe().unwrap();
        let needed = needed_libraries(&exe).unwrap();
        assert!(needed.iter().any(|n| n.starts_with("libc.so")), "{needed:?}");
        assert!(!needs_tvm_ffi(&exe).unwrap());
    }

    #[test]
    fn refuses_broken_files() {
        let not_elf = write(b"#!/bin/sh\necho hi\n");
        assert_eq!(needed_libraries(not_elf.path()).unwrap_err().kind(), io::ErrorKind::InvalidData);
        let full = elf64(&["libtvm_ffi.so"]);
        let truncated = write(&full[..full.len() - 8]);
        assert_eq!(needed_libraries(truncated.path()).unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
        let mut bad_offset = full.clone();
        // Point the DT_NEEDED entry past the string table.
        let dyn_off = 64 + 112;
        bad_offset[dyn_off + 8..dyn_off + 16].copy_from_slice(&1000u64.to_le_bytes());
        assert_eq!(needed_libraries(write(&bad_offset).path()).unwrap_err().kind(), io::ErrorKind::InvalidData);
        assert_eq!(needed_libraries(Path::new("/nonexistent/lib.so")).unwrap_err().kind(), io::ErrorKind::NotFound);
    }

    #[test]
    fn load_segment_offset_near_u64_max_is_an_error() {
        // The string table's file offset is the PT_LOAD offset plus the address's distance
        // into the segment: with an offset near u64::MAX that sum leaves the u64 range.
        let mut elf = elf64(&["libtvm_ffi.so"]);
        let load_offset = 64 + 8;
        elf[load_offset..load_offset + 8].copy_from_slice(&(u64::MAX - 8).to_le_bytes());
        let err = needed_libraries(write(&elf).path()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
    }

    #[test]
    fn offsets_past_the_file_offset_range_are_invalid_data() {
        // The PT_DYNAMIC offset (second program header, bytes 8..16) past i64::MAX: a seek
        // there cannot be made, and is reported as a bad file, not as an I/O failure.
        let mut elf = elf64(&["libc.so.6"]);
        let dynamic_offset = 64 + 56 + 8;
        for offset in [1u64 << 63, u64::MAX, u64::MAX - 16] {
            elf[dynamic_offset..dynamic_offset + 8].copy_from_slice(&offset.to_le_bytes());
            let err = needed_libraries(write(&elf).path()).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{offset:#x}: {err}");
        }
    }

    #[test]
    fn ranges_past_the_end_of_the_file_are_truncation() {
        // From a fuzz run: no program headers, at an offset the file system refuses to seek to
        // (EINVAL, an I/O error), though the same bytes read from memory were a valid file.
        let mut elf = elf64(&["libc.so.6"]);
        elf[32..40].copy_from_slice(&0x0008_0006_0000_0040u64.to_le_bytes());
        elf[56..58].copy_from_slice(&0u16.to_le_bytes());
        assert!(needed_libraries(write(&elf).path()).unwrap().is_empty());
        // With program headers to read there, the file is truncated.
        elf[56..58].copy_from_slice(&2u16.to_le_bytes());
        let err = needed_libraries(write(&elf).path()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof, "{err}");
    }

    #[test]
    fn oversized_program_header_entries_are_refused_before_reading() {
        // 4096 entries of 65535 bytes would be a 256 MiB read.
        let mut elf = elf64(&["libc.so.6"]);
        elf[54..56].copy_from_slice(&u16::MAX.to_le_bytes());
        elf[56..58].copy_from_slice(&4096u16.to_le_bytes());
        let err = needed_libraries(write(&elf).path()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        // Entries a little larger than the ELF64 size are still read.
        let mut elf = elf64(&["libc.so.6"]);
        elf[54..56].copy_from_slice(&MAX_PROGRAM_HEADER_SIZE.to_le_bytes());
        elf[56..58].copy_from_slice(&0u16.to_le_bytes());
        assert!(needed_libraries(write(&elf).path()).unwrap().is_empty());
    }

    #[test]
    fn needed_names_and_their_number_are_bounded() {
        let longest = "l".repeat(MAX_NEEDED_NAME_BYTES);
        assert_eq!(needed_libraries(write(&elf64(&[&longest])).path()).unwrap(), [longest.as_str()]);
        let too_long = "l".repeat(MAX_NEEDED_NAME_BYTES + 1);
        let err = needed_libraries(write(&elf64(&[&too_long])).path()).unwrap_err();
        assert!(err.to_string().contains("DT_NEEDED name too long"), "{err}");

        let names = vec!["libc.so.6"; MAX_NEEDED];
        assert_eq!(needed_libraries(write(&elf64(&names)).path()).unwrap().len(), MAX_NEEDED);
        let names = vec!["libc.so.6"; MAX_NEEDED + 1];
        let err = needed_libraries(write(&elf64(&names)).path()).unwrap_err();
        assert!(err.to_string().contains("too many DT_NEEDED entries"), "{err}");
    }

    #[test]
    fn reads_from_memory() {
        let elf = elf64(&["libtvm_ffi.so.0"]);
        let mut reader = std::io::Cursor::new(elf);
        reader.set_position(100);
        assert_eq!(needed_libraries_from(&mut reader, Path::new("mem.so")).unwrap(), ["libtvm_ffi.so.0"]);
        let err = needed_libraries_from(&mut std::io::Cursor::new(b"\x7fELF"), Path::new("mem.so")).unwrap_err();
        assert!(err.to_string().starts_with("mem.so: "), "{err}");
    }
}
