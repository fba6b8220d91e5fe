//! Printable NUL-terminated strings with a prefix, such as the `aten::` operator names a
//! kernel calls through the PyTorch dispatcher, found without loading the library.
//!
//! Only the file bytes of the `PT_LOAD` segments are scanned: string literals live in
//! `.rodata`, which is loaded, while debug sections and the static symbol table are not (and
//! hold the same names as text). Every loaded segment is scanned, not only the read-only
//! ones: some linkers put `.rodata` in the executable segment. A file without loaded segments
//! is scanned whole. The bytes are streamed through a 64 KiB buffer; only a string that could
//! still match is kept across two reads.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::{self, Read, Seek};
use std::ops::Range;
use std::path::Path;

use super::file::{Elf, PT_LOAD, truncated};

/// A longer string is not an identifier: it is skipped, not cut.
const MAX_STRING_BYTES: usize = 256;
/// The most bytes scanned in one file.
const MAX_SCAN_BYTES: u64 = 1 << 30;
const CHUNK_BYTES: usize = 64 << 10;

/// Every string in the loaded segments of the ELF file at `path` that starts with `prefix`,
/// sorted and without duplicates: e.g. for `b"aten::"`, `["aten::empty_like",
/// "aten::fill_.Scalar"]`.
///
/// A string is a run of printable ASCII bytes (space to `~`) that starts after a NUL or a
/// non-printable byte and ends at a NUL; one longer than 256 bytes is left out. The prefix
/// is looked for at the start of each run only (`"calling aten::add"` is not an `aten::`
/// string), so a literal right after printable bytes of other data is not found; compilers
/// put literals in string sections, where each follows the NUL of the one before.
///
/// Errors: I/O errors as they come; `InvalidData` for a file that is not ELF, whose loaded
/// segments exceed 1 GiB, or with more than `limit` such strings; `UnexpectedEof` for a
/// truncated one.
pub fn strings_with_prefix(path: &Path, prefix: &[u8], limit: usize) -> io::Result<Vec<String>> {
    strings_with_prefix_from(&mut File::open(path)?, path, prefix, limit)
}

/// [`strings_with_prefix`] of an ELF file held by `reader` (positioned anywhere); `origin`
/// names it in errors.
pub fn strings_with_prefix_from<R: Read + Seek>(
    reader: &mut R,
    origin: &Path,
    prefix: &[u8],
    limit: usize,
) -> io::Result<Vec<String>> {
    let mut elf = Elf::parse(reader, origin)?;
    let ranges = loaded_ranges(&elf)?;
    let mut scanner = Scanner::new(prefix);
    let mut buf = vec![0u8; CHUNK_BYTES];
    for range in ranges {
        let mut stream = elf.stream_at(range.start, range.end - range.start)?;
        loop {
            let n = match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            scanner.feed(&buf[..n]);
            if scanner.found.len() > limit {
                let prefix = String::from_utf8_lossy(prefix);
                return Err(elf.invalid(&format!("more than {limit} strings starting with {prefix:?}")));
            }
        }
        if stream.limit() > 0 {
            return Err(truncated());
        }
        // A string does not run from one segment into the next.
        scanner.end_run();
    }
    Ok(scanner.found.into_iter().map(|s| String::from_utf8(s).expect("printable ASCII")).collect())
}

/// The file ranges of the loaded segments, sorted, overlaps merged; the whole file when there
/// are none.
fn loaded_ranges<R: Read + Seek>(elf: &Elf<'_, R>) -> io::Result<Vec<Range<u64>>> {
    let mut ranges = Vec::new();
    for s in elf.segments.iter().filter(|s| s.kind == PT_LOAD && s.filesz > 0) {
        elf.check_range(s.offset, s.filesz)?;
        ranges.push(s.offset..s.offset + s.filesz);
    }
    if elf.segments.iter().all(|s| s.kind != PT_LOAD) {
        ranges.push(0..elf.len());
    }
    ranges.sort_by_key(|r| r.start);
    let mut merged: Vec<Range<u64>> = Vec::with_capacity(ranges.len());
    for r in ranges {
        match merged.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => merged.push(r),
        }
    }
    if merged.iter().map(|r| r.end - r.start).sum::<u64>() > MAX_SCAN_BYTES {
        return Err(elf.invalid("loaded segments larger than 1 GiB"));
    }
    Ok(merged)
}

/// Finds the strings across the pieces of a stream.
struct Scanner<'p> {
    prefix: &'p [u8],
    /// The current run of printable bytes, kept only while it may match.
    run: Vec<u8>,
    run_len: usize,
    /// Whether the run so far agrees with the prefix and is short enough.
    candidate: bool,
    found: BTreeSet<Vec<u8>>,
}

impl<'p> Scanner<'p> {
    fn new(prefix: &'p [u8]) -> Self {
        Scanner { prefix, run: Vec::new(), run_len: 0, candidate: true, found: BTreeSet::new() }
    }

    fn end_run(&mut self) {
        self.run.clear();
        self.run_len = 0;
        self.candidate = true;
    }

    fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            if b == 0 {
                if self.candidate && self.run_len >= self.prefix.len().max(1) {
                    self.found.insert(std::mem::take(&mut self.run));
                }
                self.end_run();
            } else if (0x20..0x7f).contains(&b) {
                if self.candidate {
                    let at = self.run_len;
                    if (at < self.prefix.len() && self.prefix[at] != b) || at == MAX_STRING_BYTES {
                        self.candidate = false;
                        self.run.clear();
                    } else {
                        self.run.push(b);
                    }
                }
                self.run_len += 1;
            } else {
                self.end_run();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Cursor, SeekFrom};

    use super::super::tiny_elf::{KERNEL_C, TinyElf, compile_shared, libc_path};
    use super::*;

    fn aten(bytes: &[u8]) -> io::Result<Vec<String>> {
        strings_with_prefix_from(&mut Cursor::new(bytes), Path::new("mem.so"), b"aten::", 100)
    }

    fn with_strings(is64: bool, little: bool, strings: &[&[u8]]) -> Vec<u8> {
        TinyElf::new(is64, little).needed(&["libc.so.6"]).strings(strings).build().bytes
    }

    #[test]
    fn finds_strings_with_the_prefix_sorted_and_once() {
        let longest = format!("aten::{}", "a".repeat(MAX_STRING_BYTES - 6));
        let too_long = format!("aten::{}", "b".repeat(MAX_STRING_BYTES - 5));
        let strings: &[&[u8]] = &[
            b"aten::fill_.Scalar",
            b"aten::empty_like",
            b"aten::empty_like",
            b"xaten::add",
            b"calling aten::add failed",
            b"\x01aten::after_a_control_byte",
            b"aten::cut\x01short",
            b"aten:",
            b"aten::\xc3\xa9",
            longest.as_bytes(),
            too_long.as_bytes(),
        ];
        for is64 in [true, false] {
            for little in [true, false] {
                let found = aten(&with_strings(is64, little, strings)).unwrap();
                assert_eq!(
                    found,
                    [longest.as_str(), "aten::after_a_control_byte", "aten::empty_like", "aten::fill_.Scalar"],
                    "64-bit {is64}, little-endian {little}"
                );
            }
        }
    }

    #[test]
    fn only_loaded_bytes_are_scanned_or_the_whole_file_without_segments() {
        let built = TinyElf::new(true, true).strings(&[b"aten::add"]).build();
        let mut elf = built.bytes.clone();
        // The PT_LOAD segment (p_filesz at 64 + 32) ends before the strings.
        elf[96..104].copy_from_slice(&(built.strings as u64).to_le_bytes());
        assert!(aten(&elf).unwrap().is_empty());
        // No program headers: the whole file.
        let mut elf = built.bytes.clone();
        elf[56..58].copy_from_slice(&0u16.to_le_bytes());
        assert_eq!(aten(&elf).unwrap(), ["aten::add"]);
    }

    #[test]
    fn hostile_segments_are_errors() {
        let built = TinyElf::new(true, true).strings(&[b"aten::add"]).build();
        for (at, value, kind) in [
            (64 + 8, u64::MAX, io::ErrorKind::InvalidData),
            (64 + 8, 1 << 63, io::ErrorKind::InvalidData),
            (64 + 8, 1 << 62, io::ErrorKind::UnexpectedEof),
            (64 + 32, u64::MAX, io::ErrorKind::InvalidData),
            (64 + 32, 1 << 40, io::ErrorKind::UnexpectedEof),
        ] {
            let mut elf = built.bytes.clone();
            elf[at..at + 8].copy_from_slice(&value.to_le_bytes());
            assert_eq!(aten(&elf).unwrap_err().kind(), kind, "{at} = {value:#x}");
        }
        let err = aten(b"MZ\x90\0 not ELF").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(err.to_string().starts_with("mem.so: "), "{err}");
    }

    #[test]
    fn the_number_of_strings_is_bounded() {
        let elf = with_strings(true, true, &[b"aten::a", b"aten::b", b"aten::c"]);
        let read = |limit| strings_with_prefix_from(&mut Cursor::new(&elf), Path::new("mem.so"), b"aten::", limit);
        assert_eq!(read(3).unwrap().len(), 3);
        let err = read(2).unwrap_err();
        assert!(err.to_string().contains("more than 2 strings starting with \"aten::\""), "{err}");
        // The empty prefix: every string, the library names included.
        let all = strings_with_prefix_from(&mut Cursor::new(&elf), Path::new("mem.so"), b"", 100).unwrap();
        assert!(all.contains(&"libc.so.6".to_owned()) && all.contains(&"aten::b".to_owned()), "{all:?}");
    }

    #[test]
    fn strings_cut_by_a_read_are_found_whole() {
        // Every split of the stream gives the same strings.
        let bytes = b"\0aten::a\0junk\x02aten::bc\0aten::d";
        let mut whole = Scanner::new(b"aten::");
        whole.feed(bytes);
        assert_eq!(whole.found.len(), 2);
        for cut in 0..bytes.len() {
            let mut split = Scanner::new(b"aten::");
            split.feed(&bytes[..cut]);
            split.feed(&bytes[cut..]);
            assert_eq!(split.found, whole.found, "cut at {cut}");
        }
        // Through the file: a string across the first 64 KiB read.
        let at = TinyElf::new(true, true).build().strings;
        let filler = vec![0x01u8; CHUNK_BYTES - at - 4];
        let elf = with_strings(true, true, &[&filler, b"aten::across"]);
        assert_eq!(aten(&elf).unwrap(), ["aten::across"]);
    }

    /// Records the largest single read.
    struct Largest<R> {
        inner: R,
        largest: usize,
    }

    impl<R: Read> Read for Largest<R> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.inner.read(buf)?;
            self.largest = self.largest.max(n);
            Ok(n)
        }
    }

    impl<R: Seek> Seek for Largest<R> {
        fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
            self.inner.seek(pos)
        }
    }

    #[test]
    fn large_files_are_read_a_piece_at_a_time() {
        let filler = vec![b'x'; 4 << 20];
        let elf = with_strings(true, true, &[&filler, b"aten::last"]);
        let mut reader = Largest { inner: Cursor::new(&elf), largest: 0 };
        let found = strings_with_prefix_from(&mut reader, Path::new("mem.so"), b"aten::", 10).unwrap();
        assert_eq!(found, ["aten::last"]);
        assert!(reader.largest <= CHUNK_BYTES, "{} bytes in one read", reader.largest);
    }

    #[test]
    fn reads_a_compiled_kernel_library() {
        let dir = tempfile::tempdir().unwrap();
        let Some(elf) = compile_shared(dir.path(), "kernel", KERNEL_C, &["-g"]) else { return };
        assert_eq!(aten(&elf).unwrap(), ["aten::empty_like", "aten::fill_.Scalar"]);
        let path = dir.path().join("libkernel.so");
        assert_eq!(strings_with_prefix(&path, b"aten::", 10).unwrap(), ["aten::empty_like", "aten::fill_.Scalar"]);
        assert_eq!(strings_with_prefix(&path, b"__tvm_ffi_", 10).unwrap(), ["__tvm_ffi_foo"]);
    }

    #[test]
    fn reads_the_c_library() {
        let Some(path) = libc_path() else {
            eprintln!("skipped: libc.so.6 is not mapped into this process");
            return;
        };
        let started = std::time::Instant::now();
        let symbols = super::super::dynamic_symbols(&path).unwrap();
        let aten = strings_with_prefix(&path, b"aten::", 1000).unwrap();
        let glibc = strings_with_prefix(&path, b"GLIBC_2.", 1000).unwrap();
        let elapsed = started.elapsed();
        eprintln!(
            "{}: {} symbols, {} aten:: strings, {} GLIBC_2. strings; dynamic_symbols + two scans {elapsed:?}",
            path.display(),
            symbols.defined.len() + symbols.undefined.len(),
            aten.len(),
            glibc.len()
        );
        assert!(aten.is_empty(), "{aten:?}");
        assert!(glibc.contains(&"GLIBC_2.2.5".to_owned()) || glibc.contains(&"GLIBC_2.17".to_owned()), "{glibc:?}");
    }
}
