//! The placeholder's reparse data: what cloudflt stores on a file to make it a placeholder.
//!
//! The blob is the data part of a REPARSE_GUID_DATA_BUFFER carrying [`reparse::TAG`] and
//! [`reparse::GUID`]. It is read back from disk, where anyone who can write reparse data
//! might have put it, so the decoder trusts nothing: every length is checked against the
//! bytes present and the limits below, the checksum must match, and the range list must
//! be in canonical (sorted, merged) form, every modified range inside a present one.
//! Range-set arithmetic is the driver engine's; this
//! module only validates the list and iterates it.
//!
//! Blob layout, version 2, the version the encoder writes (all fields little-endian):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic, `b"CFPH"` |
//! | 4 | 2 | version, 2 |
//! | 6 | 2 | flags ([`PlaceholderFlags`]) |
//! | 8 | 8 | file size |
//! | 16 | 4 | checksum: CRC-32/ISO-HDLC of every byte from offset 20 to the end |
//! | 20 | 2 | identity length, ≤ [`MAX_IDENTITY_LEN`] |
//! | 22 | 2 | present range count |
//! | 24 | 2 | modified range count; the two counts together ≤ [`MAX_RANGES`] |
//! | 26 | 6 | reserved, zero |
//! | 32 | 8 | change counter ([`Placeholder::changes`]) |
//! | 40 | identity length | the provider's file identity |
//! | … | present count × 16 | present (hydrated) ranges: offset `u64`, length `u64` |
//! | … | modified count × 16 | modified ranges, the same form, each inside a present range |
//!
//! Version 1, still decoded (a placeholder written by an earlier build), has neither the
//! modified ranges nor the change counter; it reads as having no modified range and a
//! change counter of 0, and is written back as version 2:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic, `b"CFPH"` |
//! | 4 | 2 | version, 1 |
//! | 6 | 2 | flags ([`PlaceholderFlags`]) |
//! | 8 | 8 | file size |
//! | 16 | 4 | checksum: CRC-32/ISO-HDLC of every byte from offset 20 to the end |
//! | 20 | 2 | identity length, ≤ [`MAX_IDENTITY_LEN`] |
//! | 22 | 2 | range count, ≤ [`MAX_RANGES_V1`] |
//! | 24 | identity length | the provider's file identity |
//! | … | range count × 16 | hydrated ranges: offset `u64`, length `u64` |
//!
//! The checksum leaves the magic, version, flags and file size out: it was specified that
//! way; those fields are each validated on their own.
//!
//! The REPARSE_GUID_DATA_BUFFER around it: tag `u32`, data length `u16`, reserved `u16`
//! (zero), GUID (16 bytes), then the blob; [`MAX_REPARSE_SIZE`] bytes in all.

use crate::crc32::crc32;
use crate::error::{DecodeError, EncodeError, Field};
use crate::reparse;
use crate::wire::{Reader, Writer, len_u16};

/// The four bytes every placeholder blob starts with.
pub const MAGIC: [u8; 4] = *b"CFPH";

/// The blob version this build writes; it also reads [`VERSION_1`].
pub const VERSION: u16 = 2;

/// The first blob version, which this build still reads (never writes).
pub const VERSION_1: u16 = 1;

/// Size of the fixed header of a version 2 blob (the one written).
pub const HEADER_SIZE: usize = 40;

/// Size of the fixed header of a version 1 blob.
pub const HEADER_SIZE_V1: usize = 24;

/// Offset of the first byte the checksum covers.
const CHECKSUMMED_FROM: usize = 20;

/// Offset of the checksum field.
const CHECKSUM_AT: usize = 16;

/// Size of one encoded range (present or modified).
pub const RANGE_SIZE: usize = 16;

/// Size of the REPARSE_GUID_DATA_BUFFER header in front of the blob.
pub const REPARSE_HEADER_SIZE: usize = 24;

/// Largest reparse buffer NTFS stores (MAXIMUM_REPARSE_DATA_BUFFER_SIZE, 16 KiB),
/// header included.
pub const MAX_REPARSE_SIZE: usize = 16 * 1024;

/// Largest blob: what fits in [`MAX_REPARSE_SIZE`] after the reparse header.
pub const MAX_BLOB_SIZE: usize = MAX_REPARSE_SIZE - REPARSE_HEADER_SIZE;

/// Longest provider file identity, as in cfapi (4 KiB).
pub const MAX_IDENTITY_LEN: usize = 4096;

/// Most ranges a blob may hold, present and modified together: what fits beside an
/// identity of [`MAX_IDENTITY_LEN`] bytes (764). A file fragmented beyond that must be
/// hydrated further (ranges merge) before its state can be recorded.
pub const MAX_RANGES: usize = (MAX_BLOB_SIZE - HEADER_SIZE - MAX_IDENTITY_LEN) / RANGE_SIZE;

/// Most hydrated ranges a version 1 blob may hold (765), for decoding only.
pub const MAX_RANGES_V1: usize = (MAX_BLOB_SIZE - HEADER_SIZE_V1 - MAX_IDENTITY_LEN) / RANGE_SIZE;

/// A placeholder's state bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct PlaceholderFlags(u16);

impl PlaceholderFlags {
    /// No flag set.
    pub const EMPTY: Self = Self(0);
    /// The provider says the local copy matches the cloud copy.
    pub const IN_SYNC: Self = Self(1);
    /// Pinned: keep fully hydrated; dehydration fails.
    pub const PINNED: Self = Self(2);
    /// Unpinned: may be dehydrated. Exclusive with [`Self::PINNED`].
    pub const UNPINNED: Self = Self(4);
    /// Must always be fully hydrated (ALWAYS_FULL hydration policy).
    pub const ALWAYS_FULL: Self = Self(8);
    /// The placeholder is a directory.
    pub const DIRECTORY: Self = Self(16);
    /// A directory placeholder whose listing is not complete yet: it is filled from the
    /// provider the first time it is listed or a name under it is opened (population
    /// FULL). Its absence means populated, so directories written before population
    /// existed read as complete.
    pub const NOT_POPULATED: Self = Self(32);
    /// Every defined bit.
    pub const ALL: Self = Self(63);

    /// The flags for `bits`, or `None` if an undefined bit is set, both
    /// [`Self::PINNED`] and [`Self::UNPINNED`] are, or [`Self::NOT_POPULATED`] is without
    /// [`Self::DIRECTORY`].
    pub const fn from_bits(bits: u16) -> Option<Self> {
        let both_pins = Self::PINNED.0 | Self::UNPINNED.0;
        let file_not_populated = bits & Self::NOT_POPULATED.0 != 0 && bits & Self::DIRECTORY.0 == 0;
        if bits & !Self::ALL.0 != 0 || bits & both_pins == both_pins || file_not_populated {
            None
        } else {
            Some(Self(bits))
        }
    }

    /// The raw bits.
    pub const fn bits(self) -> u16 {
        self.0
    }

    /// Whether every bit of `other` is set in `self`.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// The bits of both. May produce a pin contradiction, which encoding refuses.
    #[must_use]
    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// `self` without the bits of `other`.
    #[must_use]
    pub const fn difference(self, other: Self) -> Self {
        Self(self.0 & !other.0)
    }
}

impl core::ops::BitOr for PlaceholderFlags {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        self.union(rhs)
    }
}

/// A byte range of a file: `length` bytes from `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ByteRange {
    /// The first byte.
    pub offset: u64,
    /// The number of bytes.
    pub length: u64,
}

impl ByteRange {
    /// The range of `length` bytes from `offset`.
    pub const fn new(offset: u64, length: u64) -> Self {
        Self { offset, length }
    }

    /// One past the last byte, or `None` if that overflows `u64`.
    pub const fn end(&self) -> Option<u64> {
        self.offset.checked_add(self.length)
    }
}

/// A placeholder's present or modified ranges: either a validated encoded list borrowed from a blob,
/// or a slice given to the encoder (validated when encoded).
///
/// Equal when the ranges are, however each list was built.
#[derive(Clone, Copy)]
pub struct RangeList<'a>(RangeRepr<'a>);

#[derive(Clone, Copy)]
enum RangeRepr<'a> {
    // INVARIANT: a multiple of RANGE_SIZE bytes.
    Encoded(&'a [u8]),
    Slice(&'a [ByteRange]),
}

impl<'a> RangeList<'a> {
    /// No ranges: a fully dehydrated placeholder, or one with no local change.
    pub const EMPTY: RangeList<'static> = RangeList(RangeRepr::Slice(&[]));

    /// Borrows ranges to encode. They must be sorted, non-empty, non-overlapping,
    /// non-adjacent and within the file size, or encoding fails with
    /// [`EncodeError::BadRange`].
    pub const fn from_slice(ranges: &'a [ByteRange]) -> Self {
        Self(RangeRepr::Slice(ranges))
    }

    /// Borrows ranges already in their on-disk form (offset and length, little-endian
    /// u64 each, [`RANGE_SIZE`] bytes a range), for an encoder that builds them in a
    /// buffer of its own; `None` unless `bytes` is a whole number of ranges. The ranges
    /// are checked when encoded, as for [`RangeList::from_slice`].
    pub const fn from_le_bytes(bytes: &'a [u8]) -> Option<Self> {
        if bytes.len().is_multiple_of(RANGE_SIZE) {
            Some(Self(RangeRepr::Encoded(bytes)))
        } else {
            None
        }
    }

    /// The number of ranges.
    pub const fn len(&self) -> usize {
        match self.0 {
            RangeRepr::Encoded(b) => b.len() / RANGE_SIZE,
            RangeRepr::Slice(s) => s.len(),
        }
    }

    /// Whether there are no ranges.
    pub const fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The ranges in order.
    pub fn iter(&self) -> impl Iterator<Item = ByteRange> + 'a {
        let (bytes, slice): (&'a [u8], &'a [ByteRange]) = match self.0 {
            RangeRepr::Encoded(b) => (b, &[]),
            RangeRepr::Slice(s) => (&[], s),
        };
        bytes
            .chunks_exact(RANGE_SIZE)
            .map(|chunk| {
                let mut r = Reader::new(chunk);
                // A chunk is exactly 16 bytes, so both reads succeed.
                ByteRange::new(r.u64().unwrap_or(0), r.u64().unwrap_or(0))
            })
            .chain(slice.iter().copied())
    }

    /// The total number of bytes the ranges cover (saturating): for the present list,
    /// the hydrated bytes.
    pub fn hydrated_bytes(&self) -> u64 {
        self.iter()
            .fold(0u64, |sum, r| sum.saturating_add(r.length))
    }
}

impl PartialEq for RangeList<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for RangeList<'_> {}

impl core::fmt::Debug for RangeList<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_list()
            .entries(
                self.iter()
                    .map(|r| r.offset..r.offset.saturating_add(r.length)),
            )
            .finish()
    }
}

impl Default for RangeList<'_> {
    fn default() -> Self {
        RangeList::EMPTY
    }
}

/// Whether `ranges` are canonical for a file of `file_size` bytes: each non-empty and
/// inside the file, each starting after the previous one ends (a gap of at least one byte,
/// so adjacent ranges must have been merged).
fn ranges_valid(ranges: impl Iterator<Item = ByteRange>, file_size: u64) -> bool {
    let mut next_allowed = 0u64;
    for range in ranges {
        let Some(end) = range.end() else {
            return false;
        };
        if range.length == 0 || end > file_size || range.offset < next_allowed {
            return false;
        }
        // Saturating: a range ending at u64::MAX leaves room for no non-empty successor,
        // and any successor starting at u64::MAX fails the overflow check above.
        next_allowed = end.saturating_add(1);
    }
    true
}

/// Whether every range of `inner` lies inside one range of `outer`, both canonical (see
/// [`ranges_valid`]). Canonical lists are merged, so a range that lies inside their
/// union lies inside one of them.
fn ranges_within(
    inner: impl Iterator<Item = ByteRange>,
    outer: impl Iterator<Item = ByteRange>,
) -> bool {
    let mut outer = outer.peekable();
    for range in inner {
        let Some(end) = range.end() else {
            return false;
        };
        loop {
            let Some(candidate) = outer.peek() else {
                return false;
            };
            let Some(candidate_end) = candidate.end() else {
                return false;
            };
            if candidate_end <= range.offset {
                outer.next();
                continue;
            }
            if candidate.offset > range.offset || candidate_end < end {
                return false;
            }
            break;
        }
    }
    true
}

/// A placeholder's reparse data, decoded (borrowing the blob) or ready to encode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Placeholder<'a> {
    /// State bits.
    pub flags: PlaceholderFlags,
    /// The file's logical size (end of file).
    pub file_size: u64,
    /// The provider's opaque file identity, at most [`MAX_IDENTITY_LEN`] bytes.
    pub identity: &'a [u8],
    /// The byte ranges present on disk (hydrated or written locally).
    pub ranges: RangeList<'a>,
    /// The byte ranges changed locally since the file was last in sync, as cfapi's
    /// CF_PLACEHOLDER_RANGE_INFO_MODIFIED class: each inside a range of [`Self::ranges`]
    /// (data changed locally is on disk). [`Self::ranges`] and this list hold at most
    /// [`MAX_RANGES`] ranges together.
    pub modified: RangeList<'a>,
    /// The file's local change counter: the driver adds to it whenever the file's data
    /// or state changes other than at the provider's request, and the provider's
    /// conditional requests (IF_UNCHANGED) name the value they last saw. A version 1
    /// blob reads as 0.
    pub changes: u64,
}

impl<'a> Placeholder<'a> {
    /// The encoded blob length. Saturates for oversized values, which encoding refuses.
    pub fn encoded_len(&self) -> usize {
        HEADER_SIZE
            .saturating_add(self.identity.len())
            .saturating_add(self.range_count().saturating_mul(RANGE_SIZE))
    }

    /// The length of the whole REPARSE_GUID_DATA_BUFFER.
    pub fn reparse_len(&self) -> usize {
        REPARSE_HEADER_SIZE.saturating_add(self.encoded_len())
    }

    /// Present and modified ranges together (saturating).
    fn range_count(&self) -> usize {
        self.ranges.len().saturating_add(self.modified.len())
    }

    fn check(&self) -> Result<(u16, u16, u16), EncodeError> {
        if PlaceholderFlags::from_bits(self.flags.bits()).is_none() {
            return Err(EncodeError::BadFlags(u32::from(self.flags.bits())));
        }
        if self.identity.len() > MAX_IDENTITY_LEN {
            return Err(EncodeError::TooLarge(Field::Identity));
        }
        if self.range_count() > MAX_RANGES {
            return Err(EncodeError::TooLarge(Field::Ranges));
        }
        if !ranges_valid(self.ranges.iter(), self.file_size)
            || !ranges_valid(self.modified.iter(), self.file_size)
            || !ranges_within(self.modified.iter(), self.ranges.iter())
        {
            return Err(EncodeError::BadRange);
        }
        Ok((
            len_u16(self.identity.len(), Field::Identity)?,
            len_u16(self.ranges.len(), Field::Ranges)?,
            len_u16(self.modified.len(), Field::Ranges)?,
        ))
    }

    /// Encodes the blob, always as version [`VERSION`], into `out`, returning
    /// [`Self::encoded_len`].
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
        let (identity_len, present_count, modified_count) = self.check()?;
        let len = self.encoded_len();
        let mut w = Writer::new(out, len)?;
        w.put(&MAGIC)?;
        w.u16(VERSION)?;
        w.u16(self.flags.bits())?;
        w.u64(self.file_size)?;
        w.u32(0)?; // checksum, filled in once the bytes it covers are written
        w.u16(identity_len)?;
        w.u16(present_count)?;
        w.u16(modified_count)?;
        w.zeros(6)?;
        w.u64(self.changes)?;
        w.put(self.identity)?;
        for range in self.ranges.iter().chain(self.modified.iter()) {
            w.u64(range.offset)?;
            w.u64(range.length)?;
        }
        let sum = crc32(w.written().get(CHECKSUMMED_FROM..).unwrap_or_default());
        w.patch_u32(CHECKSUM_AT, sum)?;
        Ok(w.finish())
    }

    /// Decodes a blob of version 2 or 1. The blob must be exactly as long as its header
    /// declares.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        if bytes.len() > MAX_BLOB_SIZE {
            return Err(DecodeError::TooLarge(Field::Message));
        }
        let mut r = Reader::new(bytes);
        if r.array::<4>()? != MAGIC {
            return Err(DecodeError::BadMagic);
        }
        let version = r.u16()?;
        if version != VERSION && version != VERSION_1 {
            return Err(DecodeError::BadVersion(version));
        }
        let bits = r.u16()?;
        let flags = PlaceholderFlags::from_bits(bits).ok_or(DecodeError::BadFlags(bits.into()))?;
        let file_size = r.u64()?;
        let checksum = r.u32()?;
        let identity_len = usize::from(r.u16()?);
        let present_count = usize::from(r.u16()?);
        let (modified_count, changes, header, max_ranges) = if version == VERSION {
            let modified_count = usize::from(r.u16()?);
            r.reserved(6)?;
            let changes = r.u64()?;
            (modified_count, changes, HEADER_SIZE, MAX_RANGES)
        } else {
            (0, 0, HEADER_SIZE_V1, MAX_RANGES_V1)
        };
        if identity_len > MAX_IDENTITY_LEN {
            return Err(DecodeError::TooLarge(Field::Identity));
        }
        if present_count + modified_count > max_ranges {
            return Err(DecodeError::TooLarge(Field::Ranges));
        }
        // Every count is bounded above, so this cannot overflow.
        let expected = header + identity_len + (present_count + modified_count) * RANGE_SIZE;
        if bytes.len() < expected {
            return Err(DecodeError::Truncated);
        }
        if bytes.len() > expected {
            return Err(DecodeError::LengthMismatch);
        }
        let covered = bytes
            .get(CHECKSUMMED_FROM..)
            .ok_or(DecodeError::Truncated)?;
        if crc32(covered) != checksum {
            return Err(DecodeError::BadChecksum);
        }
        let identity = r.take(identity_len)?;
        let ranges = RangeList(RangeRepr::Encoded(r.take(present_count * RANGE_SIZE)?));
        let modified = RangeList(RangeRepr::Encoded(r.take(modified_count * RANGE_SIZE)?));
        r.finish()?;
        if !ranges_valid(ranges.iter(), file_size)
            || !ranges_valid(modified.iter(), file_size)
            || !ranges_within(modified.iter(), ranges.iter())
        {
            return Err(DecodeError::BadRange);
        }
        Ok(Self {
            flags,
            file_size,
            identity,
            ranges,
            modified,
            changes,
        })
    }

    /// Encodes the whole REPARSE_GUID_DATA_BUFFER (tag, length, GUID, blob) into `out`,
    /// returning [`Self::reparse_len`]: what FltTagFile's caller hands to NTFS.
    pub fn encode_reparse(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
        self.check()?;
        let data_len = self.encoded_len();
        let header = write_reparse_header(data_len, out)?;
        let data = out.get_mut(header..).ok_or(EncodeError::BufferTooSmall {
            needed: self.reparse_len(),
        })?;
        let written = self.encode(data).map_err(|e| match e {
            EncodeError::BufferTooSmall { .. } => EncodeError::BufferTooSmall {
                needed: self.reparse_len(),
            },
            other => other,
        })?;
        Ok(header + written)
    }

    /// Decodes a whole REPARSE_GUID_DATA_BUFFER as FSCTL_GET_REPARSE_POINT returns it
    /// (sliced to the bytes returned).
    pub fn decode_reparse(buffer: &'a [u8]) -> Result<Self, DecodeError> {
        Self::decode(unwrap_reparse(buffer)?)
    }
}

/// Writes the REPARSE_GUID_DATA_BUFFER header for `data_len` bytes of data into the start
/// of `out`, returning [`REPARSE_HEADER_SIZE`]; the caller puts the data after it.
pub fn write_reparse_header(data_len: usize, out: &mut [u8]) -> Result<usize, EncodeError> {
    if data_len > MAX_BLOB_SIZE {
        return Err(EncodeError::TooLarge(Field::Message));
    }
    let data_len_u16 = len_u16(data_len, Field::Message)?;
    let mut w = Writer::new(out, REPARSE_HEADER_SIZE)?;
    w.u32(reparse::TAG)?;
    w.u16(data_len_u16)?;
    w.u16(0)?;
    w.put(&reparse::GUID)?;
    Ok(w.finish())
}

/// Wraps `data` in a REPARSE_GUID_DATA_BUFFER with cloudflt's tag and GUID, returning the
/// bytes written.
pub fn wrap_reparse(data: &[u8], out: &mut [u8]) -> Result<usize, EncodeError> {
    let needed = REPARSE_HEADER_SIZE.saturating_add(data.len());
    if data.len() > MAX_BLOB_SIZE {
        return Err(EncodeError::TooLarge(Field::Message));
    }
    if out.len() < needed {
        return Err(EncodeError::BufferTooSmall { needed });
    }
    let header = write_reparse_header(data.len(), out)?;
    let mut w = Writer::new(out.get_mut(header..).unwrap_or_default(), data.len())?;
    w.put(data)?;
    Ok(header + w.finish())
}

/// The data of a REPARSE_GUID_DATA_BUFFER, after checking that it carries cloudflt's tag
/// and GUID, a zero reserved field, and a data length that matches the buffer exactly.
pub fn unwrap_reparse(buffer: &[u8]) -> Result<&[u8], DecodeError> {
    if buffer.len() > MAX_REPARSE_SIZE {
        return Err(DecodeError::TooLarge(Field::Message));
    }
    let mut r = Reader::new(buffer);
    let tag = r.u32()?;
    if tag != reparse::TAG {
        return Err(DecodeError::BadTag(tag));
    }
    let data_len = usize::from(r.u16()?);
    r.reserved(2)?;
    if r.array::<16>()? != reparse::GUID {
        return Err(DecodeError::BadGuid);
    }
    let data = r.take(data_len)?;
    r.finish()?;
    Ok(data)
}

/// Tests build flags from arbitrary bits: every combination except PINNED together with
/// UNPINNED, which the format refuses.
#[cfg(test)]
pub(crate) fn flags_from_bits(bits: u32) -> PlaceholderFlags {
    [
        PlaceholderFlags::IN_SYNC,
        PlaceholderFlags::PINNED,
        PlaceholderFlags::ALWAYS_FULL,
        PlaceholderFlags::DIRECTORY,
    ]
    .iter()
    .enumerate()
    .filter(|(i, _)| bits >> i & 1 == 1)
    .fold(PlaceholderFlags::EMPTY, |all, (_, f)| all | *f)
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use proptest::prelude::*;
    use std::vec::Vec;

    const RANGES: [ByteRange; 2] = [ByteRange::new(0, 4096), ByteRange::new(8192, 100)];
    const MODIFIED: [ByteRange; 1] = [ByteRange::new(100, 50)];

    fn sample() -> Placeholder<'static> {
        Placeholder {
            flags: PlaceholderFlags::IN_SYNC | PlaceholderFlags::PINNED,
            file_size: 8292,
            identity: b"id-42",
            ranges: RangeList::from_slice(&RANGES),
            modified: RangeList::from_slice(&MODIFIED),
            changes: 7,
        }
    }

    fn encoded(p: &Placeholder<'_>) -> Vec<u8> {
        let mut out = std::vec![0u8; p.encoded_len()];
        assert_eq!(p.encode(&mut out), Ok(out.len()));
        out
    }

    /// A version 1 blob, laid out by hand as an earlier build wrote it.
    fn v1_blob(flags: u16, file_size: u64, identity: &[u8], ranges: &[ByteRange]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(b"CFPH");
        b.extend_from_slice(&1u16.to_le_bytes());
        b.extend_from_slice(&flags.to_le_bytes());
        b.extend_from_slice(&file_size.to_le_bytes());
        b.extend_from_slice(&[0; 4]);
        b.extend_from_slice(&(identity.len() as u16).to_le_bytes());
        b.extend_from_slice(&(ranges.len() as u16).to_le_bytes());
        b.extend_from_slice(identity);
        for r in ranges {
            b.extend_from_slice(&r.offset.to_le_bytes());
            b.extend_from_slice(&r.length.to_le_bytes());
        }
        reseal(&mut b);
        b
    }

    /// Rewrites the checksum so a test can reach the checks behind it.
    fn reseal(bytes: &mut [u8]) {
        let sum = crc32(&bytes[20..]);
        bytes[16..20].copy_from_slice(&sum.to_le_bytes());
    }

    /// `count` one-byte ranges two bytes apart.
    fn sparse(count: usize) -> Vec<ByteRange> {
        (0..count as u64)
            .map(|i| ByteRange::new(i * 2, 1))
            .collect()
    }

    #[test]
    fn the_limits_fill_a_reparse_buffer_exactly() {
        assert_eq!(MAX_BLOB_SIZE, 16_360);
        assert_eq!(MAX_RANGES, 764);
        assert_eq!(MAX_RANGES_V1, 765);
        let identity = [7u8; MAX_IDENTITY_LEN];
        // The budget is shared: present and modified ranges together.
        let present = sparse(MAX_RANGES - 4);
        let modified = sparse(4);
        let p = Placeholder {
            flags: PlaceholderFlags::EMPTY,
            file_size: 2 * MAX_RANGES as u64,
            identity: &identity,
            ranges: RangeList::from_slice(&present),
            modified: RangeList::from_slice(&modified),
            changes: u64::MAX,
        };
        assert_eq!(p.encoded_len(), MAX_BLOB_SIZE);
        assert_eq!(p.reparse_len(), MAX_REPARSE_SIZE);
        let mut out = std::vec![0u8; MAX_REPARSE_SIZE];
        assert_eq!(p.encode_reparse(&mut out), Ok(MAX_REPARSE_SIZE));
        assert_eq!(Placeholder::decode_reparse(&out), Ok(p));

        let all = sparse(MAX_RANGES);
        let one_more = Placeholder {
            ranges: RangeList::from_slice(&all),
            ..p
        };
        assert_eq!(
            one_more.encode(&mut out),
            Err(EncodeError::TooLarge(Field::Ranges))
        );
        let full_present = Placeholder {
            modified: RangeList::EMPTY,
            ..one_more
        };
        assert_eq!(full_present.encode(&mut out), Ok(MAX_BLOB_SIZE));
        let more = sparse(MAX_RANGES + 1);
        let p = Placeholder {
            ranges: RangeList::from_slice(&more),
            modified: RangeList::EMPTY,
            file_size: 4 * MAX_RANGES as u64,
            ..p
        };
        assert_eq!(
            p.encode(&mut out),
            Err(EncodeError::TooLarge(Field::Ranges))
        );
        let p = Placeholder {
            identity: &[0; MAX_IDENTITY_LEN + 1],
            ..sample()
        };
        assert_eq!(
            p.encode(&mut out),
            Err(EncodeError::TooLarge(Field::Identity))
        );
    }

    #[test]
    fn round_trips_with_the_documented_layout() {
        let bytes = encoded(&sample());
        assert_eq!(bytes.len(), 40 + 5 + 48);
        assert_eq!(&bytes[..4], b"CFPH");
        assert_eq!(&bytes[4..8], &[2, 0, 3, 0]);
        assert_eq!(&bytes[8..16], &8292u64.to_le_bytes());
        assert_eq!(&bytes[16..20], &crc32(&bytes[20..]).to_le_bytes());
        assert_eq!(&bytes[20..32], &[5, 0, 2, 0, 1, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&bytes[32..40], &7u64.to_le_bytes());
        assert_eq!(&bytes[40..45], b"id-42");
        assert_eq!(&bytes[45 + 16..45 + 24], &8192u64.to_le_bytes());
        assert_eq!(&bytes[45 + 32..45 + 40], &100u64.to_le_bytes());
        assert_eq!(&bytes[45 + 40..45 + 48], &50u64.to_le_bytes());
        let decoded = Placeholder::decode(&bytes);
        assert_eq!(decoded, Ok(sample()));
        assert_eq!(
            decoded.map(|d| (
                d.ranges.hydrated_bytes(),
                d.modified.hydrated_bytes(),
                d.changes,
                d.flags.contains(PlaceholderFlags::PINNED)
            )),
            Ok((4196, 50, 7, true))
        );
    }

    #[test]
    fn a_version_1_blob_reads_unmodified_and_is_written_back_as_version_2() {
        let blob = v1_blob(1 | 2, 8292, b"id-42", &RANGES);
        assert_eq!(blob.len(), 24 + 5 + 32);
        let v1 = Placeholder {
            modified: RangeList::EMPTY,
            changes: 0,
            ..sample()
        };
        assert_eq!(Placeholder::decode(&blob), Ok(v1));
        let again = encoded(&v1);
        assert_eq!(&again[4..6], &[2, 0]);
        assert_eq!(again.len(), 40 + 5 + 32);
        assert_eq!(Placeholder::decode(&again), Ok(v1));

        // Version 1's own limits and checks still hold.
        let identity = [1u8; MAX_IDENTITY_LEN];
        let full = sparse(MAX_RANGES_V1);
        let blob = v1_blob(0, 2 * MAX_RANGES_V1 as u64, &identity, &full);
        assert_eq!(blob.len(), MAX_BLOB_SIZE);
        assert!(Placeholder::decode(&blob).is_ok_and(|p| p.ranges.len() == MAX_RANGES_V1));
        let mut over = v1_blob(0, 10, b"", &[]);
        over[22..24].copy_from_slice(&(MAX_RANGES_V1 as u16 + 1).to_le_bytes());
        assert_eq!(
            Placeholder::decode(&over),
            Err(DecodeError::TooLarge(Field::Ranges))
        );
        let mut corrupt = v1_blob(0, 8292, b"id", &RANGES);
        corrupt[24] ^= 1;
        assert_eq!(Placeholder::decode(&corrupt), Err(DecodeError::BadChecksum));
        let overlapping = v1_blob(
            0,
            8292,
            b"",
            &[ByteRange::new(0, 10), ByteRange::new(5, 10)],
        );
        assert_eq!(
            Placeholder::decode(&overlapping),
            Err(DecodeError::BadRange)
        );
    }

    #[test]
    fn the_reparse_wrapper_carries_cloudflts_tag_and_guid() {
        let mut out = [0u8; 200];
        let n = sample().reparse_len();
        assert_eq!(sample().encode_reparse(&mut out), Ok(n));
        let buf = &out[..n];
        assert_eq!(&buf[..4], &reparse::TAG.to_le_bytes());
        assert_eq!(usize::from(u16::from_le_bytes([buf[4], buf[5]])), n - 24);
        assert_eq!(&buf[6..8], &[0, 0]);
        assert_eq!(&buf[8..24], &reparse::GUID);
        assert_eq!(Placeholder::decode_reparse(buf), Ok(sample()));

        let mut bad = buf.to_vec();
        bad[0] ^= 1;
        assert!(matches!(unwrap_reparse(&bad), Err(DecodeError::BadTag(_))));
        let mut bad = buf.to_vec();
        bad[10] ^= 1;
        assert_eq!(unwrap_reparse(&bad), Err(DecodeError::BadGuid));
        let mut bad = buf.to_vec();
        bad[6] = 1;
        assert_eq!(
            unwrap_reparse(&bad),
            Err(DecodeError::BadValue(Field::Reserved))
        );
        assert_eq!(unwrap_reparse(&buf[..n - 1]), Err(DecodeError::Truncated));
        let mut longer = buf.to_vec();
        longer.push(0);
        assert_eq!(unwrap_reparse(&longer), Err(DecodeError::LengthMismatch));
        assert_eq!(
            unwrap_reparse(&[0; MAX_REPARSE_SIZE + 1]),
            Err(DecodeError::TooLarge(Field::Message))
        );
        let mut small = [0u8; 30];
        assert_eq!(
            sample().encode_reparse(&mut small),
            Err(EncodeError::BufferTooSmall {
                needed: sample().reparse_len()
            })
        );
        let mut wrapped = [0u8; 40];
        assert_eq!(wrap_reparse(b"abc", &mut wrapped), Ok(27));
        assert_eq!(unwrap_reparse(&wrapped[..27]), Ok(&b"abc"[..]));
    }

    #[test]
    fn refuses_each_malformation_with_its_own_error() {
        let good = encoded(&sample());
        let patched = |offset: usize, bytes: &[u8], seal: bool| {
            let mut bad = good.clone();
            bad[offset..offset + bytes.len()].copy_from_slice(bytes);
            if seal {
                reseal(&mut bad);
            }
            Placeholder::decode(&bad).map(|_| ())
        };
        assert_eq!(patched(0, b"X", false), Err(DecodeError::BadMagic));
        assert_eq!(patched(4, &[3, 0], false), Err(DecodeError::BadVersion(3)));
        assert_eq!(patched(4, &[0, 0], false), Err(DecodeError::BadVersion(0)));
        assert_eq!(patched(6, &[64, 0], false), Err(DecodeError::BadFlags(64)));
        assert_eq!(
            patched(6, &[32, 0], false),
            Err(DecodeError::BadFlags(32)),
            "NOT_POPULATED is a directory's"
        );
        assert_eq!(patched(6, &[6, 0], false), Err(DecodeError::BadFlags(6)));
        assert_eq!(patched(40, b"x", false), Err(DecodeError::BadChecksum));
        assert_eq!(
            patched(32, &[8], false),
            Err(DecodeError::BadChecksum),
            "the change counter is covered"
        );
        assert_eq!(
            patched(26, &[1], true),
            Err(DecodeError::BadValue(Field::Reserved))
        );
        assert_eq!(
            patched(31, &[0x80], true),
            Err(DecodeError::BadValue(Field::Reserved))
        );
        assert_eq!(patched(20, &[6, 0], false), Err(DecodeError::Truncated));
        assert_eq!(
            patched(20, &[4, 0], false),
            Err(DecodeError::LengthMismatch)
        );
        assert_eq!(
            patched(20, &[1, 16], false),
            Err(DecodeError::TooLarge(Field::Identity))
        );
        // The budget is for both lists together: 764 + 1, then 2 + 764.
        assert_eq!(
            patched(22, &(MAX_RANGES as u16).to_le_bytes(), false),
            Err(DecodeError::TooLarge(Field::Ranges))
        );
        assert_eq!(
            patched(24, &(MAX_RANGES as u16 - 1).to_le_bytes(), false),
            Err(DecodeError::TooLarge(Field::Ranges))
        );
        // A range moved from one list to the other: the counts still add up.
        assert_eq!(
            patched(22, &[3, 0, 0, 0], true),
            Err(DecodeError::BadRange),
            "100+50 after 8192+100 is out of order"
        );
        // Range 2 at 8192: make it overlap, touch, be empty, pass EOF, overflow.
        let second = 45 + 16;
        assert_eq!(
            patched(second, &4000u64.to_le_bytes(), true),
            Err(DecodeError::BadRange)
        );
        assert_eq!(
            patched(second, &4096u64.to_le_bytes(), true),
            Err(DecodeError::BadRange),
            "adjacent ranges must have been merged"
        );
        assert_eq!(
            patched(second + 8, &0u64.to_le_bytes(), true),
            Err(DecodeError::BadRange)
        );
        assert_eq!(
            patched(second + 8, &101u64.to_le_bytes(), true),
            Err(DecodeError::BadRange)
        );
        assert_eq!(
            patched(second + 8, &u64::MAX.to_le_bytes(), true),
            Err(DecodeError::BadRange)
        );
        assert_eq!(
            patched(8, &8291u64.to_le_bytes(), true),
            Err(DecodeError::BadRange),
            "file size below the last range"
        );
        // The modified range (100, 50): leave its present range, fall in the gap, be
        // empty, overflow.
        let modified = 45 + 32;
        assert_eq!(
            patched(modified, &4050u64.to_le_bytes(), true),
            Err(DecodeError::BadRange),
            "modified bytes that are not present"
        );
        assert_eq!(
            patched(modified, &5000u64.to_le_bytes(), true),
            Err(DecodeError::BadRange)
        );
        assert_eq!(
            patched(modified + 8, &0u64.to_le_bytes(), true),
            Err(DecodeError::BadRange)
        );
        assert_eq!(
            patched(modified + 8, &u64::MAX.to_le_bytes(), true),
            Err(DecodeError::BadRange)
        );
        assert_eq!(
            patched(modified, &8192u64.to_le_bytes(), true),
            Ok(()),
            "inside the second present range"
        );
        assert_eq!(
            Placeholder::decode(&[0; MAX_BLOB_SIZE + 1]),
            Err(DecodeError::TooLarge(Field::Message))
        );
    }

    #[test]
    fn encoding_refuses_what_decoding_would() {
        let mut out = [0u8; 200];
        let bad_ranges = [ByteRange::new(0, 10), ByteRange::new(10, 10)];
        let p = Placeholder {
            ranges: RangeList::from_slice(&bad_ranges),
            modified: RangeList::EMPTY,
            ..sample()
        };
        assert_eq!(p.encode(&mut out), Err(EncodeError::BadRange));
        for modified in [
            [ByteRange::new(4000, 200)],
            [ByteRange::new(5000, 1)],
            [ByteRange::new(8192, 0)],
            [ByteRange::new(8200, 100)],
        ] {
            let p = Placeholder {
                modified: RangeList::from_slice(&modified),
                ..sample()
            };
            assert_eq!(
                p.encode(&mut out),
                Err(EncodeError::BadRange),
                "{modified:?}"
            );
        }
        let unsorted = [ByteRange::new(8192, 1), ByteRange::new(0, 1)];
        let p = Placeholder {
            modified: RangeList::from_slice(&unsorted),
            ..sample()
        };
        assert_eq!(p.encode(&mut out), Err(EncodeError::BadRange));
        let p = Placeholder {
            flags: PlaceholderFlags::PINNED | PlaceholderFlags::UNPINNED,
            ..sample()
        };
        assert_eq!(p.encode(&mut out), Err(EncodeError::BadFlags(6)));
        assert_eq!(
            sample().encode(&mut out[..20]),
            Err(EncodeError::BufferTooSmall {
                needed: sample().encoded_len()
            })
        );
    }

    /// Flags, identity, canonical present ranges (gaps of at least one byte, lengths of at
    /// least one), modified ranges inside some of them, the change counter, the file size.
    type Parts = (u16, Vec<u8>, Vec<ByteRange>, Vec<ByteRange>, u64, u64);

    fn arb_placeholder_parts() -> impl Strategy<Value = Parts> {
        let flags = any::<u16>().prop_filter_map("defined flags", |bits| {
            PlaceholderFlags::from_bits(bits & PlaceholderFlags::ALL.bits()).map(|f| f.bits())
        });
        let steps = proptest::collection::vec(
            (
                (1u64..1 << 40, 1u64..1 << 40),
                (any::<bool>(), any::<u64>(), any::<u64>()),
            ),
            0..40,
        );
        (
            flags,
            proptest::collection::vec(any::<u8>(), 0..=MAX_IDENTITY_LEN),
            steps,
            any::<u64>(),
            0u64..1 << 40,
        )
            .prop_map(|(flags, identity, steps, changes, slack)| {
                let mut ranges = Vec::new();
                let mut modified = Vec::new();
                let mut at = 0u64;
                for (i, ((gap, length), (change, from, len))) in steps.into_iter().enumerate() {
                    let offset = if i == 0 { gap - 1 } else { at + gap };
                    ranges.push(ByteRange::new(offset, length));
                    if change {
                        let skip = from % length;
                        modified.push(ByteRange::new(offset + skip, 1 + len % (length - skip)));
                    }
                    at = offset + length;
                }
                (flags, identity, ranges, modified, changes, at + slack)
            })
    }

    fn build<'a>(parts: &'a Parts) -> Placeholder<'a> {
        let (flags, identity, ranges, modified, changes, file_size) = parts;
        Placeholder {
            flags: flags_from_bits(u32::from(*flags)),
            file_size: *file_size,
            identity,
            ranges: RangeList::from_slice(ranges),
            modified: RangeList::from_slice(modified),
            changes: *changes,
        }
    }

    proptest! {
        #[test]
        fn any_valid_placeholder_round_trips(parts in arb_placeholder_parts()) {
            let p = build(&parts);
            let bytes = encoded(&p);
            prop_assert_eq!(Placeholder::decode(&bytes), Ok(p));
            let mut wrapped = std::vec![0u8; p.reparse_len()];
            prop_assert_eq!(p.encode_reparse(&mut wrapped), Ok(wrapped.len()));
            prop_assert_eq!(Placeholder::decode_reparse(&wrapped), Ok(p));
            prop_assert_eq!(p.ranges.iter().collect::<Vec<_>>(), parts.2.clone());
            prop_assert_eq!(p.modified.iter().collect::<Vec<_>>(), parts.3.clone());
            crate::fuzz::fuzz_placeholder(&bytes);
            // The same state as an earlier build wrote it reads back without the additions.
            let v1 = v1_blob(p.flags.bits(), parts.5, &parts.1, &parts.2);
            let as_v1 = Placeholder { modified: RangeList::EMPTY, changes: 0, ..p };
            prop_assert_eq!(Placeholder::decode(&v1), Ok(as_v1));
            crate::fuzz::fuzz_placeholder(&v1);
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Placeholder::decode(&bytes);
            let _ = Placeholder::decode_reparse(&bytes);
        }

        #[test]
        fn truncation_is_refused_and_corruption_detected(
            parts in arb_placeholder_parts(),
            cut in any::<prop::sample::Index>(),
            flip in any::<prop::sample::Index>(),
            xor in 1u8..,
        ) {
            let p = build(&parts);
            let bytes = encoded(&p);
            prop_assert!(Placeholder::decode(&bytes[..cut.index(bytes.len())]).is_err());
            let mut wrapped = std::vec![0u8; p.reparse_len()];
            prop_assert_eq!(p.encode_reparse(&mut wrapped), Ok(wrapped.len()));
            prop_assert!(Placeholder::decode_reparse(&wrapped[..cut.index(wrapped.len())]).is_err());
            // CRC-32 detects every single-byte error in the bytes it covers.
            let mut corrupt = bytes.clone();
            let at = 20 + flip.index(bytes.len() - 20);
            corrupt[at] ^= xor;
            prop_assert!(Placeholder::decode(&corrupt).is_err());
            crate::fuzz::fuzz_placeholder(&corrupt);
        }
    }
}
