//! Bounds-checked little-endian reads and writes used by every decoder and encoder.
//!
//! Every read goes through `slice::get`, so a short input becomes [`DecodeError::Truncated`]
//! (or `None`) rather than a panic; every write goes through `get_mut`, so a short output
//! becomes [`EncodeError::BufferTooSmall`].

use crate::error::{DecodeError, EncodeError, Field};
use crate::utf16::Utf16;

/// Reads `N` bytes at `offset`, or `None` if the slice is too short.
pub(crate) fn array<const N: usize>(bytes: &[u8], offset: usize) -> Option<[u8; N]> {
    let end = offset.checked_add(N)?;
    bytes.get(offset..end)?.try_into().ok()
}

pub(crate) fn u16_at(bytes: &[u8], offset: usize) -> Option<u16> {
    array(bytes, offset).map(u16::from_le_bytes)
}

pub(crate) fn u32_at(bytes: &[u8], offset: usize) -> Option<u32> {
    array(bytes, offset).map(u32::from_le_bytes)
}

/// A cursor over untrusted input that only moves forward.
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(bytes: &'a [u8]) -> Self {
        Self { rest: bytes }
    }

    /// The next `n` bytes, borrowed from the input.
    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let (head, tail) = self
            .rest
            .split_at_checked(n)
            .ok_or(DecodeError::Truncated)?;
        self.rest = tail;
        Ok(head)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        self.take(N)?.try_into().map_err(|_| DecodeError::Truncated)
    }

    pub(crate) fn u8(&mut self) -> Result<u8, DecodeError> {
        self.array().map(u8::from_le_bytes)
    }

    pub(crate) fn u16(&mut self) -> Result<u16, DecodeError> {
        self.array().map(u16::from_le_bytes)
    }

    pub(crate) fn u32(&mut self) -> Result<u32, DecodeError> {
        self.array().map(u32::from_le_bytes)
    }

    pub(crate) fn u64(&mut self) -> Result<u64, DecodeError> {
        self.array().map(u64::from_le_bytes)
    }

    pub(crate) fn i32(&mut self) -> Result<i32, DecodeError> {
        self.array().map(i32::from_le_bytes)
    }

    pub(crate) fn i64(&mut self) -> Result<i64, DecodeError> {
        self.array().map(i64::from_le_bytes)
    }

    /// Skips `n` reserved bytes, which must be zero: a later version may give them a
    /// meaning, and a peer that sets them expects this one to notice.
    pub(crate) fn reserved(&mut self, n: usize) -> Result<(), DecodeError> {
        if self.take(n)?.iter().all(|&b| b == 0) {
            Ok(())
        } else {
            Err(DecodeError::BadValue(Field::Reserved))
        }
    }

    /// A UTF-16LE string of `len` bytes.
    pub(crate) fn utf16(&mut self, len: u16, field: Field) -> Result<Utf16<'a>, DecodeError> {
        let bytes = self.take(usize::from(len))?;
        Utf16::from_le_bytes(bytes).ok_or(DecodeError::BadString(field))
    }

    /// Everything not read yet.
    pub(crate) fn rest(&self) -> &'a [u8] {
        self.rest
    }

    /// Fails unless the input has been read to its end.
    pub(crate) fn finish(&self) -> Result<(), DecodeError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::LengthMismatch)
        }
    }
}

/// A cursor over a caller's output buffer.
pub(crate) struct Writer<'a> {
    out: &'a mut [u8],
    pos: usize,
}

impl<'a> Writer<'a> {
    /// A writer over the first `len` bytes of `out`: encoders check the whole length up
    /// front so that a short buffer fails before anything is written.
    pub(crate) fn new(out: &'a mut [u8], len: usize) -> Result<Self, EncodeError> {
        let out = out
            .get_mut(..len)
            .ok_or(EncodeError::BufferTooSmall { needed: len })?;
        Ok(Self { out, pos: 0 })
    }

    /// A writer over all of `out`, for encoders that learn their length as they go.
    pub(crate) fn whole(out: &'a mut [u8]) -> Self {
        Self { out, pos: 0 }
    }

    pub(crate) fn put(&mut self, bytes: &[u8]) -> Result<(), EncodeError> {
        let err = self.too_small();
        let end = self.pos.checked_add(bytes.len()).ok_or(err)?;
        let dst = self.out.get_mut(self.pos..end).ok_or(err)?;
        dst.copy_from_slice(bytes);
        self.pos = end;
        Ok(())
    }

    /// Lets `encode` write `len` bytes in place (a nested record with its own encoder);
    /// it must write exactly `len`.
    pub(crate) fn put_with(
        &mut self,
        len: usize,
        encode: impl FnOnce(&mut [u8]) -> Result<usize, EncodeError>,
    ) -> Result<(), EncodeError> {
        let err = self.too_small();
        let end = self.pos.checked_add(len).ok_or(err)?;
        let dst = self.out.get_mut(self.pos..end).ok_or(err)?;
        if encode(dst)? != len {
            return Err(err);
        }
        self.pos = end;
        Ok(())
    }

    /// Writing past the length given to [`Writer::new`] is an encoder bug (its length
    /// computation and its writes disagree); it is still an error, not a panic.
    fn too_small(&self) -> EncodeError {
        EncodeError::BufferTooSmall {
            needed: self.out.len().saturating_add(1),
        }
    }

    pub(crate) fn u8(&mut self, v: u8) -> Result<(), EncodeError> {
        self.put(&[v])
    }

    pub(crate) fn u16(&mut self, v: u16) -> Result<(), EncodeError> {
        self.put(&v.to_le_bytes())
    }

    pub(crate) fn u32(&mut self, v: u32) -> Result<(), EncodeError> {
        self.put(&v.to_le_bytes())
    }

    pub(crate) fn u64(&mut self, v: u64) -> Result<(), EncodeError> {
        self.put(&v.to_le_bytes())
    }

    pub(crate) fn i32(&mut self, v: i32) -> Result<(), EncodeError> {
        self.put(&v.to_le_bytes())
    }

    pub(crate) fn i64(&mut self, v: i64) -> Result<(), EncodeError> {
        self.put(&v.to_le_bytes())
    }

    pub(crate) fn zeros(&mut self, n: usize) -> Result<(), EncodeError> {
        for _ in 0..n {
            self.u8(0)?;
        }
        Ok(())
    }

    pub(crate) fn utf16(&mut self, s: &Utf16<'_>) -> Result<(), EncodeError> {
        for unit in s.units() {
            self.u16(unit)?;
        }
        Ok(())
    }

    /// The bytes written so far, for a checksum over what is already in place.
    pub(crate) fn written(&self) -> &[u8] {
        self.out.get(..self.pos).unwrap_or_default()
    }

    /// Overwrites four bytes already written at `offset` (a checksum filled in last).
    pub(crate) fn patch_u32(&mut self, offset: usize, v: u32) -> Result<(), EncodeError> {
        let err = self.too_small();
        let end = offset.checked_add(4).ok_or(err)?;
        let dst = self.out.get_mut(offset..end).ok_or(err)?;
        dst.copy_from_slice(&v.to_le_bytes());
        Ok(())
    }

    /// The number of bytes written; equal to the length given to [`Writer::new`] when the
    /// encoder's length computation and its writes agree.
    pub(crate) fn finish(self) -> usize {
        self.pos
    }
}

/// A length as the `u16` a wire field holds, or `TooLarge(field)`.
pub(crate) fn len_u16(len: usize, field: Field) -> Result<u16, EncodeError> {
    u16::try_from(len).map_err(|_| EncodeError::TooLarge(field))
}
