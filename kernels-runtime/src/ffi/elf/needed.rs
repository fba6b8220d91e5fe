//! The `DT_NEEDED` entries of a shared library, and whether it needs tvm-ffi preloaded.

use std::fs::File;
use std::io::{self, Read, Seek};
use std::path::Path;

use super::file::{DT_NEEDED, Elf, name_at};

/// The file name (and `DT_SONAME`) of the tvm-ffi runtime library.
pub const TVM_FFI_LIBRARY: &str = "libtvm_ffi.so";

const MAX_STRTAB_BYTES: u64 = 16 << 20;
/// Real libraries need a few dozen; each name is at most a path.
const MAX_NEEDED: usize = 4096;
const MAX_NEEDED_NAME_BYTES: usize = 4096;

/// The `DT_NEEDED` entries of the ELF shared library at `path`, in order.
///
/// Errors: I/O errors as they come; `InvalidData` for a file that is not ELF or is malformed;
/// `UnexpectedEof` for a truncated one.
pub fn needed_libraries(path: &Path) -> io::Result<Vec<String>> {
    needed_libraries_from(&mut File::open(path)?, path)
}

/// [`needed_libraries`] of an ELF file held by `reader` (positioned anywhere); `origin` names
/// it in errors. Reads at most the headers, 1 MiB of program headers, 1 MiB of dynamic
/// segment and 16 MiB of string table.
pub fn needed_libraries_from<R: Read + Seek>(reader: &mut R, origin: &Path) -> io::Result<Vec<String>> {
    let mut elf = Elf::parse(reader, origin)?;
    let Some(dynamic) = elf.dynamic()? else {
        // A statically linked object needs nothing.
        return Ok(Vec::new());
    };
    let needed: Vec<u64> = dynamic.all(DT_NEEDED).collect();
    if needed.len() > MAX_NEEDED {
        return Err(elf.invalid("too many DT_NEEDED entries"));
    }
    if needed.is_empty() {
        return Ok(Vec::new());
    }
    let strings = elf.dynamic_strings(&dynamic, MAX_STRTAB_BYTES, "DT_NEEDED")?;
    needed
        .into_iter()
        .map(|at| {
            let name = name_at(origin, &strings, at, MAX_NEEDED_NAME_BYTES, "DT_NEEDED")?;
            Ok(String::from_utf8_lossy(name).into_owned())
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
    use super::super::file::MAX_PROGRAM_HEADER_SIZE;
    use super::super::tiny_elf::tiny_elf;
    use super::*;

    /// A minimal ELF64 little-endian shared object with the given DT_NEEDED names.
    fn elf64(needed: &[&str]) -> Vec<u8> {
        tiny_elf(true, true, needed)
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
    fn reads_every_class_and_byte_order() {
        for is64 in [true, false] {
            for little in [true, false] {
                let elf = tiny_elf(is64, little, &["libtvm_ffi.so.0", "libc.so.6"]);
                let names = needed_libraries_from(&mut std::io::Cursor::new(elf), Path::new("mem.so")).unwrap();
                assert_eq!(names, ["libtvm_ffi.so.0", "libc.so.6"], "64-bit {is64}, little-endian {little}");
            }
        }
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
