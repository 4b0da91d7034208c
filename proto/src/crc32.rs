//! CRC-32/ISO-HDLC (the zlib, PNG and Ethernet CRC), for the placeholder checksum.
//!
//! Written here rather than taken from a crate so that proto keeps no dependencies in the
//! kernel image. The 1 KiB table is built at compile time.

/// The reflected polynomial 0x04C11DB7.
const POLY: u32 = 0xEDB8_8320;

const TABLE: [u32; 256] = table();

#[expect(
    clippy::indexing_slicing,
    reason = "evaluated only in const context, where an out-of-range index fails the build"
)]
const fn table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ POLY
            } else {
                crc >> 1
            };
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
}

/// The CRC-32 of `bytes` (what zlib's `crc32(0, bytes, len)` returns).
pub fn crc32(bytes: &[u8]) -> u32 {
    !bytes.iter().fold(!0u32, |crc, &b| {
        #[expect(
            clippy::indexing_slicing,
            reason = "a u8 index is always inside the 256-entry table"
        )]
        let entry = TABLE[usize::from((crc as u8) ^ b)];
        (crc >> 8) ^ entry
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_standard_check_values() {
        // The catalogue check value of CRC-32/ISO-HDLC and zlib's crc32 of a pangram.
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(
            crc32(b"The quick brown fox jumps over the lazy dog"),
            0x414F_A339
        );
        assert_eq!(crc32(b""), 0);
    }
}
