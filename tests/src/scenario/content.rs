//! File contents a scenario names: the seeded pseudo-random bytes of `size` + `seed`, and
//! the literal `text:` / `hex:` forms of data expectations and writes.
//!
//! The generator is splitmix64 (Steele, Lea and Flood, "Fast splittable pseudorandom
//! number generators", 2014): the state starts at `seed`; each step adds
//! 0x9E37_79B9_7F4A_7C15 and mixes the state into one 64-bit output. Byte `i` of a file
//! is byte `i % 8` (little-endian) of output number `i / 8`, so any range can be computed
//! without the bytes before it, and the same seed gives the same bytes on every host.

/// The `n`th output of splitmix64 started at `seed` (n = 0 is the first).
fn splitmix64(seed: u64, n: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15u64.wrapping_mul(n + 1));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Bytes `[offset, offset + length)` of the seeded content of a file of `size` bytes
/// (cut at `size`).
pub(crate) fn seeded_range(seed: u64, size: u64, offset: u64, length: u64) -> Vec<u8> {
    let end = offset.saturating_add(length).min(size);
    (offset..end)
        .map(|i| splitmix64(seed, i / 8).to_le_bytes()[(i % 8) as usize])
        .collect()
}

/// The whole seeded content of a file of `size` bytes.
pub fn seeded(seed: u64, size: u64) -> Vec<u8> {
    seeded_range(seed, size, 0, size)
}

/// `hex:` digits (whitespace allowed between bytes) as bytes.
pub(crate) fn parse_hex(text: &str) -> Result<Vec<u8>, String> {
    let digits: Vec<u8> = text.bytes().filter(|b| !b.is_ascii_whitespace()).collect();
    if !digits.len().is_multiple_of(2) {
        return Err(format!("hex {text:?} has an odd number of digits"));
    }
    digits
        .chunks_exact(2)
        .map(|pair| {
            std::str::from_utf8(pair)
                .ok()
                .and_then(|s| u8::from_str_radix(s, 16).ok())
                .ok_or_else(|| format!("hex {text:?} is not hexadecimal"))
        })
        .collect()
}

/// Bytes for the report: short ones in full, long ones by length and first difference.
pub(crate) fn describe(bytes: &[u8]) -> String {
    const SHOWN: usize = 32;
    let hex: String = bytes
        .iter()
        .take(SHOWN)
        .map(|b| format!("{b:02x}"))
        .collect();
    if bytes.len() > SHOWN {
        format!("{} bytes {hex}…", bytes.len())
    } else {
        format!("{} bytes {hex}", bytes.len())
    }
}

/// Where two byte strings first differ, for a report line.
pub(crate) fn first_difference(a: &[u8], b: &[u8]) -> String {
    match a.iter().zip(b).position(|(x, y)| x != y) {
        Some(i) => format!(
            "first difference at byte {i} ({:02x} vs {:02x})",
            a[i], b[i]
        ),
        None => format!("lengths {} vs {}", a.len(), b.len()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_agree_with_the_whole() {
        let all = seeded(7, 100);
        assert_eq!(seeded_range(7, 100, 13, 50), all[13..63]);
        assert_eq!(seeded_range(7, 100, 90, 50), all[90..]);
        assert_ne!(seeded(7, 16), seeded(8, 16));
    }

    #[test]
    fn hex_parses_and_rejects() {
        assert_eq!(parse_hex("00 ff 1A").unwrap(), vec![0, 0xff, 0x1a]);
        assert!(parse_hex("abc").is_err());
        assert!(parse_hex("zz").is_err());
    }
}
