//! Borrowed UTF-16 strings as they travel on the wire.
//!
//! Windows names are sequences of UTF-16 code units that need not be valid UTF-16 (NTFS
//! accepts unpaired surrogates), so nothing here validates beyond the even byte length.
//! A decoded string borrows the message's bytes, which need not be 2-byte aligned, so it
//! is kept as bytes; an encoder's string usually comes from a `UNICODE_STRING` buffer or
//! `OsStr::encode_wide`, so it may also be given as code units.

use core::fmt;

/// A UTF-16 string borrowed either from little-endian wire bytes or from code units.
///
/// Two values are equal when they hold the same code units, however each was built.
#[derive(Clone, Copy)]
pub struct Utf16<'a>(Repr<'a>);

#[derive(Clone, Copy)]
enum Repr<'a> {
    // INVARIANT: even length.
    Bytes(&'a [u8]),
    Units(&'a [u16]),
}

impl<'a> Utf16<'a> {
    /// The empty string.
    pub const EMPTY: Utf16<'static> = Utf16(Repr::Units(&[]));

    /// Borrows UTF-16LE bytes; `None` if their length is odd.
    pub const fn from_le_bytes(bytes: &'a [u8]) -> Option<Self> {
        if bytes.len().is_multiple_of(2) {
            // INVARIANT: the length was just checked to be even.
            Some(Self(Repr::Bytes(bytes)))
        } else {
            None
        }
    }

    /// Borrows code units.
    pub const fn from_units(units: &'a [u16]) -> Self {
        Self(Repr::Units(units))
    }

    /// The number of code units.
    pub const fn len(&self) -> usize {
        match self.0 {
            Repr::Bytes(b) => b.len() / 2,
            Repr::Units(u) => u.len(),
        }
    }

    /// The encoded length in bytes (two per code unit).
    pub const fn byte_len(&self) -> usize {
        match self.0 {
            Repr::Bytes(b) => b.len(),
            Repr::Units(u) => u.len().saturating_mul(2),
        }
    }

    /// Whether the string has no code units.
    pub const fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The code units in order.
    pub fn units(&self) -> impl Iterator<Item = u16> + 'a {
        let (bytes, units): (&'a [u8], &'a [u16]) = match self.0 {
            Repr::Bytes(b) => (b, &[]),
            Repr::Units(u) => (&[], u),
        };
        bytes
            .chunks_exact(2)
            .map(|pair| {
                u16::from_le_bytes([
                    pair.first().copied().unwrap_or(0),
                    pair.last().copied().unwrap_or(0),
                ])
            })
            .chain(units.iter().copied())
    }

    /// The first code unit, if any.
    pub fn first(&self) -> Option<u16> {
        self.units().next()
    }

    /// The characters, with U+FFFD for each unpaired surrogate.
    pub fn chars_lossy(&self) -> impl Iterator<Item = char> + 'a {
        char::decode_utf16(self.units()).map(|c| c.unwrap_or(char::REPLACEMENT_CHARACTER))
    }

    /// Whether this string holds exactly the characters of `s`.
    pub fn eq_str(&self, s: &str) -> bool {
        self.units().eq(s.encode_utf16())
    }
}

impl PartialEq for Utf16<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.units().eq(other.units())
    }
}

impl Eq for Utf16<'_> {}

impl fmt::Debug for Utf16<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"")?;
        for c in self.chars_lossy() {
            fmt::Display::fmt(&c.escape_debug(), f)?;
        }
        f.write_str("\"")
    }
}

impl fmt::Display for Utf16<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.chars_lossy()
            .try_for_each(|c| fmt::Write::write_char(f, c))
    }
}

impl Default for Utf16<'_> {
    fn default() -> Self {
        Utf16::EMPTY
    }
}
