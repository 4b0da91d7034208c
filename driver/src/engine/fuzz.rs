//! The disguise rewriting's fuzz target body and the oracle behind it, shared by the
//! cargo-fuzz target `rewrite` under `fuzz/` and by the property tests of
//! [`super::rewrite`].
//!
//! The oracle is a second, independent implementation: field offsets taken from
//! windows-sys's structure definitions with `offset_of!` (and, for the classes newer than
//! windows-sys's metadata, from `#[repr(C)]` transcriptions of ntifs.h), a plain walk
//! that records every entry before touching one, written for clarity rather than for
//! the kernel. [`fuzz_rewrite`] runs both on the same input and requires the same bytes
//! out, the same error-or-not, an unchanged buffer on error, and a second pass that
//! changes nothing.
//!
//! Only built for tests and with the `fuzzing` feature: the asserts are the point here,
//! and they must never reach the kernel image.
#![allow(
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a failed fuzz property must abort the run"
)]

extern crate std;

use core::mem::offset_of;
use std::vec::Vec;

use windows_sys::Wdk::Storage::FileSystem::{
    FILE_ALL_INFORMATION, FILE_BASIC_INFORMATION, FILE_BOTH_DIR_INFORMATION,
    FILE_DIRECTORY_INFORMATION, FILE_FULL_DIR_INFORMATION, FILE_ID_BOTH_DIR_INFORMATION,
    FILE_ID_EXTD_BOTH_DIR_INFORMATION, FILE_ID_EXTD_DIR_INFORMATION, FILE_ID_FULL_DIR_INFORMATION,
    FILE_ID_GLOBAL_TX_DIR_INFORMATION, FILE_NAMES_INFORMATION, FILE_NETWORK_OPEN_INFORMATION,
    FILE_STAT_INFORMATION, FILE_STAT_LX_INFORMATION,
};
use windows_sys::Wdk::System::SystemServices::FILE_ATTRIBUTE_TAG_INFORMATION;

use super::rewrite::{
    self, DirectoryClass, FILE_ATTRIBUTE_NORMAL, FILE_ATTRIBUTE_OFFLINE,
    FILE_ATTRIBUTE_RECALL_ON_DATA_ACCESS, FILE_ATTRIBUTE_RECALL_ON_OPEN,
    FILE_ATTRIBUTE_REPARSE_POINT, FILE_ATTRIBUTE_SPARSE_FILE, HiddenAttributes, Name, QueryClass,
    TAG,
};

/// ntifs.h structures that windows-sys 0.61's metadata predates, transcribed field for
/// field so `offset_of!` gives the C layout.
#[allow(non_snake_case, dead_code, reason = "C field names, layout only")]
mod ntifs {
    /// FILE_ID_64_EXTD_DIR_INFORMATION.
    #[repr(C)]
    pub struct FILE_ID_64_EXTD_DIR_INFORMATION {
        pub NextEntryOffset: u32,
        pub FileIndex: u32,
        pub CreationTime: i64,
        pub LastAccessTime: i64,
        pub LastWriteTime: i64,
        pub ChangeTime: i64,
        pub EndOfFile: i64,
        pub AllocationSize: i64,
        pub FileAttributes: u32,
        pub FileNameLength: u32,
        pub EaSize: u32,
        pub ReparsePointTag: u32,
        pub FileId: i64,
        pub FileName: [u16; 1],
    }

    /// FILE_ID_64_EXTD_BOTH_DIR_INFORMATION.
    #[repr(C)]
    pub struct FILE_ID_64_EXTD_BOTH_DIR_INFORMATION {
        pub NextEntryOffset: u32,
        pub FileIndex: u32,
        pub CreationTime: i64,
        pub LastAccessTime: i64,
        pub LastWriteTime: i64,
        pub ChangeTime: i64,
        pub EndOfFile: i64,
        pub AllocationSize: i64,
        pub FileAttributes: u32,
        pub FileNameLength: u32,
        pub EaSize: u32,
        pub ReparsePointTag: u32,
        pub FileId: i64,
        pub ShortNameLength: i8,
        pub ShortName: [u16; 12],
        pub FileName: [u16; 1],
    }

    /// FILE_ID_ALL_EXTD_DIR_INFORMATION.
    #[repr(C)]
    pub struct FILE_ID_ALL_EXTD_DIR_INFORMATION {
        pub NextEntryOffset: u32,
        pub FileIndex: u32,
        pub CreationTime: i64,
        pub LastAccessTime: i64,
        pub LastWriteTime: i64,
        pub ChangeTime: i64,
        pub EndOfFile: i64,
        pub AllocationSize: i64,
        pub FileAttributes: u32,
        pub FileNameLength: u32,
        pub EaSize: u32,
        pub ReparsePointTag: u32,
        pub FileId: i64,
        pub FileId128: [u8; 16],
        pub FileName: [u16; 1],
    }

    /// FILE_ID_ALL_EXTD_BOTH_DIR_INFORMATION.
    #[repr(C)]
    pub struct FILE_ID_ALL_EXTD_BOTH_DIR_INFORMATION {
        pub NextEntryOffset: u32,
        pub FileIndex: u32,
        pub CreationTime: i64,
        pub LastAccessTime: i64,
        pub LastWriteTime: i64,
        pub ChangeTime: i64,
        pub EndOfFile: i64,
        pub AllocationSize: i64,
        pub FileAttributes: u32,
        pub FileNameLength: u32,
        pub EaSize: u32,
        pub ReparsePointTag: u32,
        pub FileId: i64,
        pub FileId128: [u8; 16],
        pub ShortNameLength: i8,
        pub ShortName: [u16; 12],
        pub FileName: [u16; 1],
    }

    /// FILE_STAT_BASIC_INFORMATION.
    #[repr(C)]
    pub struct FILE_STAT_BASIC_INFORMATION {
        pub FileId: i64,
        pub CreationTime: i64,
        pub LastAccessTime: i64,
        pub LastWriteTime: i64,
        pub ChangeTime: i64,
        pub AllocationSize: i64,
        pub EndOfFile: i64,
        pub FileAttributes: u32,
        pub ReparseTag: u32,
        pub NumberOfLinks: u32,
        pub DeviceType: u32,
        pub DeviceCharacteristics: u32,
        pub Reserved: u32,
        pub VolumeSerialNumber: i64,
        pub FileId128: [u8; 16],
    }
}

/// Where a directory class keeps each field, from the structure definitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirFields {
    /// Offset of FileName.
    pub name: usize,
    /// Offset of FileNameLength.
    pub name_length: usize,
    /// Offset of FileAttributes.
    pub attributes: Option<usize>,
    /// Offset of EaSize.
    pub ea_size: Option<usize>,
    /// Offset of ReparsePointTag.
    pub reparse_tag: Option<usize>,
}

macro_rules! dir_fields {
    ($t:ty, names) => {
        DirFields {
            name: offset_of!($t, FileName),
            name_length: offset_of!($t, FileNameLength),
            attributes: None,
            ea_size: None,
            reparse_tag: None,
        }
    };
    ($t:ty, untagged) => {
        DirFields {
            name: offset_of!($t, FileName),
            name_length: offset_of!($t, FileNameLength),
            attributes: Some(offset_of!($t, FileAttributes)),
            ea_size: None,
            reparse_tag: None,
        }
    };
    ($t:ty, ea) => {
        DirFields {
            name: offset_of!($t, FileName),
            name_length: offset_of!($t, FileNameLength),
            attributes: Some(offset_of!($t, FileAttributes)),
            ea_size: Some(offset_of!($t, EaSize)),
            reparse_tag: None,
        }
    };
    ($t:ty, extd) => {
        DirFields {
            name: offset_of!($t, FileName),
            name_length: offset_of!($t, FileNameLength),
            attributes: Some(offset_of!($t, FileAttributes)),
            ea_size: Some(offset_of!($t, EaSize)),
            reparse_tag: Some(offset_of!($t, ReparsePointTag)),
        }
    };
}

/// The fields of `class`'s entries.
pub fn dir_fields(class: DirectoryClass) -> DirFields {
    use DirectoryClass::*;
    match class {
        Directory => dir_fields!(FILE_DIRECTORY_INFORMATION, untagged),
        FullDirectory => dir_fields!(FILE_FULL_DIR_INFORMATION, ea),
        BothDirectory => dir_fields!(FILE_BOTH_DIR_INFORMATION, ea),
        Names => dir_fields!(FILE_NAMES_INFORMATION, names),
        IdBothDirectory => dir_fields!(FILE_ID_BOTH_DIR_INFORMATION, ea),
        IdFullDirectory => dir_fields!(FILE_ID_FULL_DIR_INFORMATION, ea),
        IdGlobalTxDirectory => dir_fields!(FILE_ID_GLOBAL_TX_DIR_INFORMATION, untagged),
        IdExtdDirectory => dir_fields!(FILE_ID_EXTD_DIR_INFORMATION, extd),
        IdExtdBothDirectory => dir_fields!(FILE_ID_EXTD_BOTH_DIR_INFORMATION, extd),
        Id64ExtdDirectory => dir_fields!(ntifs::FILE_ID_64_EXTD_DIR_INFORMATION, extd),
        Id64ExtdBothDirectory => {
            dir_fields!(ntifs::FILE_ID_64_EXTD_BOTH_DIR_INFORMATION, extd)
        }
        IdAllExtdDirectory => dir_fields!(ntifs::FILE_ID_ALL_EXTD_DIR_INFORMATION, extd),
        IdAllExtdBothDirectory => {
            dir_fields!(ntifs::FILE_ID_ALL_EXTD_BOTH_DIR_INFORMATION, extd)
        }
    }
}

/// Where a single-file class keeps its attributes and tag, and its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueryFields {
    /// Offset of FileAttributes.
    pub attributes: usize,
    /// Offset of the reparse tag.
    pub tag: Option<usize>,
    /// The structure's full size.
    pub size: usize,
}

/// The fields of `class`.
pub fn query_fields(class: QueryClass) -> QueryFields {
    use core::mem::size_of;
    match class {
        QueryClass::Basic => QueryFields {
            attributes: offset_of!(FILE_BASIC_INFORMATION, FileAttributes),
            tag: None,
            size: size_of::<FILE_BASIC_INFORMATION>(),
        },
        QueryClass::All => QueryFields {
            attributes: offset_of!(FILE_ALL_INFORMATION, BasicInformation)
                + offset_of!(FILE_BASIC_INFORMATION, FileAttributes),
            tag: None,
            size: size_of::<FILE_ALL_INFORMATION>(),
        },
        QueryClass::NetworkOpen => QueryFields {
            attributes: offset_of!(FILE_NETWORK_OPEN_INFORMATION, FileAttributes),
            tag: None,
            size: size_of::<FILE_NETWORK_OPEN_INFORMATION>(),
        },
        QueryClass::AttributeTag => QueryFields {
            attributes: offset_of!(FILE_ATTRIBUTE_TAG_INFORMATION, FileAttributes),
            tag: Some(offset_of!(FILE_ATTRIBUTE_TAG_INFORMATION, ReparseTag)),
            size: size_of::<FILE_ATTRIBUTE_TAG_INFORMATION>(),
        },
        QueryClass::Stat => QueryFields {
            attributes: offset_of!(FILE_STAT_INFORMATION, FileAttributes),
            tag: Some(offset_of!(FILE_STAT_INFORMATION, ReparseTag)),
            size: size_of::<FILE_STAT_INFORMATION>(),
        },
        QueryClass::StatLx => QueryFields {
            attributes: offset_of!(FILE_STAT_LX_INFORMATION, FileAttributes),
            tag: Some(offset_of!(FILE_STAT_LX_INFORMATION, ReparseTag)),
            size: size_of::<FILE_STAT_LX_INFORMATION>(),
        },
        QueryClass::StatBasic => QueryFields {
            attributes: offset_of!(ntifs::FILE_STAT_BASIC_INFORMATION, FileAttributes),
            tag: Some(offset_of!(ntifs::FILE_STAT_BASIC_INFORMATION, ReparseTag)),
            size: size_of::<ntifs::FILE_STAT_BASIC_INFORMATION>(),
        },
    }
}

/// IO_REPARSE_TAG_SYMLINK: a tag that is not ours and must never be touched.
pub const SYMLINK: u32 = 0xA000_000C;

/// One entry for [`build_listing`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntrySpec {
    /// FileAttributes.
    pub attributes: u32,
    /// EaSize (the tag, in the EaSize classes, for a reparse point).
    pub ea_size: u32,
    /// ReparsePointTag (Extd classes only).
    pub reparse_tag: u32,
    /// FileName.
    pub name: Vec<u16>,
    /// Extra zero bytes after the aligned entry (a file system may leave gaps).
    pub gap: usize,
}

/// A directory listing of `class` holding `entries`, laid out as NTFS does: each entry
/// 8-byte aligned, NextEntryOffset 0 on the last, filler bytes `0xEE` in every field the
/// rewrite has no business touching.
pub fn build_listing(class: DirectoryClass, entries: &[EntrySpec]) -> Vec<u8> {
    let f = dir_fields(class);
    let mut out = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        let start = out.len();
        let name_bytes = e.name.len() * 2;
        let mut entry = std::vec![0xEEu8; f.name + name_bytes];
        let put = |entry: &mut Vec<u8>, at: usize, v: u32| {
            entry[at..at + 4].copy_from_slice(&v.to_le_bytes());
        };
        put(&mut entry, f.name_length, name_bytes as u32);
        if let Some(a) = f.attributes {
            put(&mut entry, a, e.attributes);
        }
        if let Some(ea) = f.ea_size {
            put(&mut entry, ea, e.ea_size);
        }
        if let Some(t) = f.reparse_tag {
            put(&mut entry, t, e.reparse_tag);
        }
        for (k, unit) in e.name.iter().enumerate() {
            entry[f.name + 2 * k..f.name + 2 * k + 2].copy_from_slice(&unit.to_le_bytes());
        }
        let last = i + 1 == entries.len();
        let next = if last {
            0
        } else {
            (entry.len().div_ceil(8) * 8 + e.gap.div_ceil(8) * 8) as u32
        };
        put(&mut entry, 0, next);
        out.extend_from_slice(&entry);
        if !last {
            out.resize(start + next as usize, 0);
        }
    }
    out
}

fn get_u32(buf: &[u8], at: usize) -> u32 {
    let b = &buf[at..at + 4];
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

fn set_u32(buf: &mut [u8], at: usize, v: u32) {
    buf[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

/// The oracle's walk: the offsets and name ranges of every entry, or `None` if the
/// listing is malformed by the rules in [`super::rewrite`].
pub fn reference_entries(
    class: DirectoryClass,
    data: &[u8],
) -> Option<Vec<(usize, core::ops::Range<usize>)>> {
    let f = dir_fields(class);
    let mut entries = Vec::new();
    if data.is_empty() {
        return Some(entries);
    }
    let mut at: u64 = 0;
    let len = data.len() as u64;
    loop {
        if at + f.name as u64 > len {
            return None;
        }
        let a = at as usize;
        let name_len = u64::from(get_u32(data, a + f.name_length));
        if name_len % 2 == 1 || at + f.name as u64 + name_len > len {
            return None;
        }
        let name = a + f.name..a + f.name + name_len as usize;
        entries.push((a, name));
        let next = u64::from(get_u32(data, a));
        if next == 0 {
            return Some(entries);
        }
        if next % 8 != 0 || next < f.name as u64 + name_len || at + next >= len {
            return None;
        }
        at += next;
    }
}

/// The oracle's rewrite of a directory listing: `Some(rewritten)` or `None` when
/// malformed.
pub fn reference_directory(
    class: DirectoryClass,
    original: &[u8],
    returned: usize,
    hidden: HiddenAttributes,
    is_ours: &mut dyn FnMut(Name<'_>) -> bool,
) -> Option<(Vec<u8>, usize)> {
    if returned > original.len() {
        return None;
    }
    let f = dir_fields(class);
    let entries = reference_entries(class, &original[..returned])?;
    let mut out = original.to_vec();
    let mut disguised = 0;
    let Some(attr_off) = f.attributes else {
        return Some((out, 0));
    };
    for (at, name) in entries {
        let attributes = get_u32(original, at + attr_off);
        let reparse = attributes & FILE_ATTRIBUTE_REPARSE_POINT != 0;
        let ours = match (f.ea_size, f.reparse_tag) {
            (_, Some(tag)) => get_u32(original, at + tag) == TAG,
            (Some(ea), None) => reparse && get_u32(original, at + ea) == TAG,
            (None, None) => reparse && is_ours(name_of(&original[name])),
        };
        if !ours {
            continue;
        }
        disguised += 1;
        let left = attributes & !hidden.bits();
        set_u32(
            &mut out,
            at + attr_off,
            if left == 0 {
                FILE_ATTRIBUTE_NORMAL
            } else {
                left
            },
        );
        if let Some(ea) = f.ea_size {
            let mirrored =
                f.reparse_tag.is_none() || (reparse && get_u32(original, at + ea) == TAG);
            if mirrored {
                set_u32(&mut out, at + ea, 0);
            }
        }
        if let Some(tag) = f.reparse_tag {
            set_u32(&mut out, at + tag, 0);
        }
    }
    Some((out, disguised))
}

fn name_of(bytes: &[u8]) -> Name<'_> {
    Name(bytes)
}

/// The oracle's rewrite of a single-file class: `Some((rewritten, changed))` or `None`
/// when too short.
pub fn reference_query(
    class: QueryClass,
    original: &[u8],
    returned: usize,
    is_placeholder: bool,
    hidden: HiddenAttributes,
) -> Option<(Vec<u8>, bool)> {
    if returned > original.len() {
        return None;
    }
    let f = query_fields(class);
    let end = f.tag.unwrap_or(f.attributes).max(f.attributes) + 4;
    if returned < end {
        return None;
    }
    let mut out = original.to_vec();
    let attributes = get_u32(original, f.attributes);
    let ours = match f.tag {
        Some(tag) => get_u32(original, tag) == TAG,
        None => is_placeholder && attributes & FILE_ATTRIBUTE_REPARSE_POINT != 0,
    };
    if ours {
        let left = attributes & !hidden.bits();
        set_u32(
            &mut out,
            f.attributes,
            if left == 0 {
                FILE_ATTRIBUTE_NORMAL
            } else {
                left
            },
        );
        if let Some(tag) = f.tag {
            set_u32(&mut out, tag, 0);
        }
    }
    Some((out, ours))
}

/// How the oracle's closure decides for classes without a tag field: a rule of the name
/// alone, so both implementations get the same answers.
fn name_rule(name: Name<'_>) -> bool {
    name.units().next().is_some_and(|u| u % 2 == 0)
}

fn hidden_from(selector: u8, extra: u32) -> HiddenAttributes {
    match selector % 4 {
        0 => HiddenAttributes::DEFAULT,
        1 => HiddenAttributes::REPARSE_POINT_ONLY,
        2 => HiddenAttributes::new(
            FILE_ATTRIBUTE_RECALL_ON_OPEN | FILE_ATTRIBUTE_RECALL_ON_DATA_ACCESS,
        ),
        _ => HiddenAttributes::new(extra),
    }
}

/// Attribute values the structured mode picks from.
const ATTRIBUTES: [u32; 8] = [
    FILE_ATTRIBUTE_REPARSE_POINT,
    FILE_ATTRIBUTE_REPARSE_POINT | FILE_ATTRIBUTE_SPARSE_FILE | FILE_ATTRIBUTE_OFFLINE,
    FILE_ATTRIBUTE_REPARSE_POINT | FILE_ATTRIBUTE_RECALL_ON_DATA_ACCESS | 0x20,
    FILE_ATTRIBUTE_REPARSE_POINT | 0x10,
    0x20,
    FILE_ATTRIBUTE_NORMAL,
    FILE_ATTRIBUTE_SPARSE_FILE,
    0x10,
];

/// Tag values the structured mode picks from.
const TAGS: [u32; 4] = [TAG, SYMLINK, 0, 0x9000_001A];

/// Builds a well-formed listing from `spec` (4 bytes per entry), so the fuzzer reaches
/// the rewriting itself instead of spending its time on the validation.
fn structured(class: DirectoryClass, spec: &[u8]) -> Vec<u8> {
    let entries: Vec<EntrySpec> = spec
        .chunks_exact(4)
        .take(64)
        .map(|c| {
            let name: Vec<u16> = (0..u16::from(c[0] % 24))
                .map(|k| 0x41 + k + u16::from(c[3]))
                .collect();
            EntrySpec {
                attributes: ATTRIBUTES[usize::from(c[1] % 8)],
                ea_size: TAGS[usize::from(c[2] % 4)],
                reparse_tag: TAGS[usize::from((c[2] >> 2) % 4)],
                name,
                gap: usize::from(c[1] >> 6) * 8,
            }
        })
        .collect();
    build_listing(class, &entries)
}

/// Largest buffer the target looks at.
const MAX_INPUT: usize = 64 * 1024;

/// The fuzz target body. Input: a class selector, a flags byte, a 16-bit returned
/// length, then the buffer (raw, or an entry spec in structured mode).
///
/// Flags: bit 0-1 the hidden set, bit 2 `is_placeholder`, bit 5 corrupt one byte of a
/// structured listing, bit 6 use the 16-bit returned length (may exceed the buffer)
/// rather than the whole buffer, bit 7 structured mode.
pub fn fuzz_rewrite(data: &[u8]) {
    let [selector, flags, r0, r1, body @ ..] = data else {
        return;
    };
    if body.len() > MAX_INPUT {
        return;
    }
    let raw_returned = usize::from(u16::from_le_bytes([*r0, *r1]));
    let extra = body
        .iter()
        .take(4)
        .fold(0u32, |acc, b| acc << 8 | u32::from(*b));
    let hidden = hidden_from(*flags, extra);
    let is_placeholder = flags & 4 != 0;
    let dirs = DirectoryClass::ALL.len();
    let queries = QueryClass::ALL.len();
    let choice = usize::from(*selector) % (dirs + queries + 1);

    if let Some(class) = DirectoryClass::ALL.get(choice).copied() {
        let mut buffer = if flags & 0x80 != 0 {
            structured(class, body)
        } else {
            body.to_vec()
        };
        if flags & 0x20 != 0 && !buffer.is_empty() {
            let at = raw_returned % buffer.len();
            buffer[at] ^= extra as u8 | 1;
        }
        let returned = if flags & 0x40 != 0 {
            raw_returned
        } else {
            buffer.len()
        };
        check_directory(class, &buffer, returned, hidden);
    } else if let Some(class) = QueryClass::ALL.get(choice - dirs).copied() {
        let mut buffer = body.to_vec();
        if flags & 0x80 != 0 {
            // Structured: a full-size structure with chosen attributes and tag.
            let f = query_fields(class);
            buffer.resize(buffer.len().max(f.size), 0);
            set_u32(&mut buffer, f.attributes, ATTRIBUTES[usize::from(*r0 % 8)]);
            if let Some(tag) = f.tag {
                set_u32(&mut buffer, tag, TAGS[usize::from(*r1 % 4)]);
            }
        }
        let returned = if flags & 0x40 != 0 {
            raw_returned
        } else {
            buffer.len()
        };
        check_query(class, &buffer, returned, is_placeholder, hidden);
    } else {
        check_reparse_point(body, raw_returned.min(body.len() + 4));
    }
}

/// Runs the rewrite and the oracle on `original` and checks they agree.
pub fn check_directory(
    class: DirectoryClass,
    original: &[u8],
    returned: usize,
    hidden: HiddenAttributes,
) {
    let mut buffer = original.to_vec();
    let mut asked = 0usize;
    let got = rewrite::disguise_directory_with(class, &mut buffer, returned, hidden, |n| {
        asked += 1;
        name_rule(n)
    });
    let expected = reference_directory(class, original, returned, hidden, &mut name_rule);
    match (got, expected) {
        (Err(_), None) => assert_eq!(
            buffer, original,
            "a malformed buffer must be left as it was"
        ),
        (Ok(done), Some((want, disguised))) => {
            assert_eq!(buffer, want, "rewrite differs from the oracle");
            assert_eq!(done.disguised, disguised);
            if class.has_tag() {
                assert_eq!(asked, 0, "the closure is only for classes without a tag");
            }
            let mut again = buffer.clone();
            let second =
                rewrite::disguise_directory_with(class, &mut again, returned, hidden, name_rule);
            assert_eq!(second.map(|r| r.disguised), Ok(0), "second pass");
            assert_eq!(again, buffer, "rewriting twice must equal rewriting once");
            // Without the closure, untagged classes are left alone.
            let mut plain = original.to_vec();
            let r = rewrite::disguise_directory(class, &mut plain, returned, hidden);
            if class.has_tag() {
                assert_eq!(plain, buffer);
            } else {
                assert_eq!(r.map(|r| r.disguised), Ok(0));
                assert_eq!(plain, original);
            }
        }
        (got, expected) => panic!(
            "rewrite says {got:?}, oracle says {}",
            if expected.is_some() {
                "valid"
            } else {
                "malformed"
            }
        ),
    }
}

/// Runs the query rewrite and the oracle on `original` and checks they agree.
pub fn check_query(
    class: QueryClass,
    original: &[u8],
    returned: usize,
    is_placeholder: bool,
    hidden: HiddenAttributes,
) {
    let mut buffer = original.to_vec();
    let got = rewrite::disguise_query(class, &mut buffer, returned, is_placeholder, hidden);
    match (
        got,
        reference_query(class, original, returned, is_placeholder, hidden),
    ) {
        (Err(_), None) => assert_eq!(buffer, original),
        (Ok(changed), Some((want, ours))) => {
            assert_eq!(buffer, want, "query rewrite differs from the oracle");
            assert_eq!(changed, ours);
            let mut again = buffer.clone();
            let second =
                rewrite::disguise_query(class, &mut again, returned, is_placeholder, hidden);
            if class.has_tag() {
                assert_eq!(second, Ok(false), "second pass");
            }
            assert_eq!(again, buffer, "rewriting twice must equal rewriting once");
        }
        (got, expected) => panic!(
            "query rewrite says {got:?}, oracle {:?}",
            expected.map(|e| e.1)
        ),
    }
}

/// Checks the FSCTL_GET_REPARSE_POINT helpers on `output`.
pub fn check_reparse_point(output: &[u8], returned: usize) {
    let ours = returned <= output.len() && returned >= 4 && get_u32(output, 0) == TAG;
    assert_eq!(rewrite::is_own_reparse_point(output, returned), ours);
    let mut scrubbed = output.to_vec();
    assert_eq!(rewrite::scrub_reparse_point(&mut scrubbed, returned), ours);
    if ours {
        assert!(scrubbed[..returned].iter().all(|b| *b == 0));
        assert_eq!(scrubbed[returned..], output[returned..]);
    } else {
        assert_eq!(scrubbed, output);
    }
}
