//! SHA-256/512 as kernels-rs uses them: hex for content-addressed names and the lock, base64
//! for upstream's `metadata.json` digests, streamed for files.

use std::io::Read;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use sha2::{Digest as _, Sha256, Sha512};

/// Hex sha256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Hex sha256 of everything `reader` yields.
pub fn sha256_hex_reader(reader: impl Read) -> std::io::Result<String> {
    Ok(hex(&stream(reader, Sha256::new())?))
}

/// Base64 (standard, padded) of the sha256 of `bytes`.
pub fn sha256_base64(bytes: &[u8]) -> String {
    BASE64.encode(Sha256::digest(bytes))
}

/// Base64 of the sha256 of everything `reader` yields.
pub(crate) fn sha256_base64_reader(reader: impl Read) -> std::io::Result<String> {
    Ok(BASE64.encode(stream(reader, Sha256::new())?))
}

/// Base64 of the sha512 of everything `reader` yields.
pub(crate) fn sha512_base64_reader(reader: impl Read) -> std::io::Result<String> {
    Ok(BASE64.encode(stream(reader, Sha512::new())?))
}

/// Lowercase hex of `raw`.
pub fn hex(raw: &[u8]) -> String {
    raw.iter().map(|b| format!("{b:02x}")).collect()
}

/// Hashes everything `reader` yields, in 64 KiB chunks.
fn stream<H: sha2::Digest>(mut reader: impl Read, mut hasher: H) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if n == 0 {
            return Ok(hasher.finalize().to_vec());
        }
        hasher.update(&buf[..n]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_digests() {
        let empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(sha256_hex(b""), empty);
        assert_eq!(sha256_hex_reader(&b""[..]).unwrap(), empty);
        assert_eq!(sha256_base64(b""), "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=");
        assert_eq!(sha256_base64_reader(&b""[..]).unwrap(), sha256_base64(b""));
    }
}
