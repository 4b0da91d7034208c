//! The USN change journal as far as a file's own USN goes: the reasons NTFS posts, when
//! a record is written (and so when the file's USN advances), and the byte form of
//! FSCTL_READ_FILE_USN_DATA's answer.
//!
//! When the file's USN advances — the model's reading of the documentation, which the
//! driver may rely on as an "unchanged since I last looked" precondition:
//! - MS-FSA 2.1.4.11 ("Algorithm for Posting a USN Change for a File"): posting a change
//!   writes a record, adds its length to the volume's LastUsn and sets File.Usn to it.
//! - USN_RECORD_V2.Reason (winioctl.h docs, "Change journal records"): the reasons of a
//!   record are those *accumulated* since the file was opened; when the file is closed
//!   a final record with USN_REASON_CLOSE is written, and the next change starts a new
//!   set of reasons. NTFS writes a record when a change adds a reason the accumulated
//!   set does not hold yet (so a second write through the same open adds no record), and
//!   the close record at the cleanup of the file's last open, only if reasons were
//!   accumulated (an open that changed nothing writes no record).
//! - So: the first change of each kind after a close, and the last close after any
//!   change, each advance the file's USN; nothing else does. Reading, opening and
//!   closing an unchanged file never do.
//!
//! Which change posts which reason (NTFS's choices, from the USN_REASON_* descriptions):
//! a write inside the old end of file DATA_OVERWRITE, past it DATA_EXTEND; a smaller end
//! of file (set, allocation below it, overwrite or supersede of a non-empty file)
//! DATA_TRUNCATION; FileBasicInformation that changes times or attributes, and the
//! sparse flag, BASIC_INFO_CHANGE; setting or deleting a reparse point
//! REPARSE_POINT_CHANGE; a rename RENAME_OLD_NAME then RENAME_NEW_NAME; creation
//! FILE_CREATE; deletion FILE_DELETE with CLOSE. Where the change reaches NTFS: a cached
//! write posts at the write (NTFS's cached-write path), and the lazy writer's paging
//! write that later carries its data posts nothing more; a page written back by the
//! mapped page writer posts DATA_OVERWRITE, as the write NTFS sees is the only sign of a
//! change made through a mapped view (inference: the documentation does not say where
//! NTFS notices mapped changes; this is the one point it can).

/// `USN_REASON_DATA_OVERWRITE`.
pub const DATA_OVERWRITE: u32 = 0x0000_0001;
/// `USN_REASON_DATA_EXTEND`.
pub const DATA_EXTEND: u32 = 0x0000_0002;
/// `USN_REASON_DATA_TRUNCATION`.
pub const DATA_TRUNCATION: u32 = 0x0000_0004;
/// `USN_REASON_FILE_CREATE`.
pub const FILE_CREATE: u32 = 0x0000_0100;
/// `USN_REASON_FILE_DELETE`.
pub const FILE_DELETE: u32 = 0x0000_0200;
/// `USN_REASON_HARD_LINK_CHANGE`.
pub const HARD_LINK_CHANGE: u32 = 0x0001_0000;
/// `USN_REASON_RENAME_OLD_NAME`.
pub const RENAME_OLD_NAME: u32 = 0x0000_1000;
/// `USN_REASON_RENAME_NEW_NAME`.
pub const RENAME_NEW_NAME: u32 = 0x0000_2000;
/// `USN_REASON_BASIC_INFO_CHANGE`.
pub const BASIC_INFO_CHANGE: u32 = 0x0000_8000;
/// `USN_REASON_REPARSE_POINT_CHANGE`.
pub const REPARSE_POINT_CHANGE: u32 = 0x0010_0000;
/// `USN_REASON_CLOSE`.
pub const CLOSE: u32 = 0x8000_0000;

/// The volume's LastUsn when the model formats it: a journal that has run a while.
pub(super) const FIRST_USN: i64 = 0x0001_0000;

/// `FSCTL_READ_FILE_USN_DATA`: CTL_CODE(FILE_DEVICE_FILE_SYSTEM, 58, METHOD_NEITHER,
/// FILE_ANY_ACCESS).
pub const FSCTL_READ_FILE_USN_DATA: u32 = 0x0009_00EB;

/// USN_RECORD_V2's fixed part (FileName at offset 60).
pub const V2_HEADER: usize = 60;
/// USN_RECORD_V3's fixed part (128-bit file ids; FileName at offset 76).
pub const V3_HEADER: usize = 76;

/// The length of a journal record naming `name` (UTF-16 bytes): the V2 header plus the
/// name, rounded up to 8 as records are laid out in the journal. MS-FSA leaves the
/// length implementation-specific; this is the record NTFS writes for the name.
pub(super) fn record_length(name_bytes: usize) -> i64 {
    (V2_HEADER + name_bytes).div_ceil(8) as i64 * 8
}

/// What a record for FSCTL_READ_FILE_USN_DATA carries.
pub(super) struct Record<'a> {
    pub id: u64,
    pub parent: u64,
    pub usn: i64,
    pub attributes: u32,
    pub name: &'a [u8],
}

/// The major version FSCTL_READ_FILE_USN_DATA answers with (MS-FSA 2.1.5.10.27): 2
/// without a READ_FILE_USN_DATA input; with one, its range must be ordered and meet
/// 2..=3 (else STATUS_INVALID_PARAMETER), and NTFS answers with the lowest version in
/// it, whose 64-bit ids fit.
pub(super) fn version(input: &[u8]) -> Option<u16> {
    let (Some(min), Some(max)) = (input.get(0..2), input.get(2..4)) else {
        return Some(2);
    };
    let min = u16::from_le_bytes([min[0], min[1]]);
    let max = u16::from_le_bytes([max[0], max[1]]);
    if min > max || min > 3 || max < 2 {
        return None;
    }
    Some(min.max(2))
}

/// USN_RECORD_V2 or V3 for the file. Reason, TimeStamp, SourceInfo and SecurityId are
/// zero: the answer describes the file, not a journal record (inference: MS-FSA names
/// only Usn, the ids, attributes and the name as the file's).
pub(super) fn encode(r: &Record<'_>, major: u16) -> Vec<u8> {
    let header = if major == 3 { V3_HEADER } else { V2_HEADER };
    let length = (header + r.name.len()).div_ceil(8) * 8;
    let mut b = vec![0u8; length];
    b[0..4].copy_from_slice(&(length as u32).to_le_bytes());
    b[4..6].copy_from_slice(&major.to_le_bytes());
    let mut at = 8;
    if major == 3 {
        b[8..16].copy_from_slice(&r.id.to_le_bytes());
        b[24..32].copy_from_slice(&r.parent.to_le_bytes());
        at = 40;
    } else {
        b[8..16].copy_from_slice(&r.id.to_le_bytes());
        b[16..24].copy_from_slice(&r.parent.to_le_bytes());
        at += 16;
    }
    b[at..at + 8].copy_from_slice(&r.usn.to_le_bytes());
    // TimeStamp, Reason, SourceInfo, SecurityId: zero.
    let attributes_at = at + 8 + 8 + 4 + 4 + 4;
    b[attributes_at..attributes_at + 4].copy_from_slice(&r.attributes.to_le_bytes());
    let name_len_at = attributes_at + 4;
    b[name_len_at..name_len_at + 2].copy_from_slice(&(r.name.len() as u16).to_le_bytes());
    b[name_len_at + 2..name_len_at + 4].copy_from_slice(&(header as u16).to_le_bytes());
    b[header..header + r.name.len()].copy_from_slice(r.name);
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_follow_the_documented_layouts() {
        let name = [b'a', 0, b'b', 0];
        let r = Record {
            id: 0x0001_0000_0000_0040,
            parent: 0x0005_0000_0000_0005,
            usn: 0x1234,
            attributes: 0x20,
            name: &name,
        };
        let v2 = encode(&r, 2);
        assert_eq!(v2.len(), 64);
        assert_eq!(&v2[0..4], &64u32.to_le_bytes());
        assert_eq!(&v2[4..6], &2u16.to_le_bytes());
        assert_eq!(&v2[8..16], &r.id.to_le_bytes());
        assert_eq!(&v2[16..24], &r.parent.to_le_bytes());
        assert_eq!(&v2[24..32], &0x1234i64.to_le_bytes());
        assert_eq!(&v2[52..56], &0x20u32.to_le_bytes());
        assert_eq!(&v2[56..58], &4u16.to_le_bytes());
        assert_eq!(&v2[58..60], &60u16.to_le_bytes());
        assert_eq!(&v2[60..64], &name);
        let v3 = encode(&r, 3);
        assert_eq!(v3.len(), 80);
        assert_eq!(&v3[4..6], &3u16.to_le_bytes());
        assert_eq!(&v3[24..32], &r.parent.to_le_bytes());
        assert_eq!(&v3[40..48], &0x1234i64.to_le_bytes());
        assert_eq!(&v3[68..72], &0x20u32.to_le_bytes());
        assert_eq!(&v3[74..76], &76u16.to_le_bytes());
        assert_eq!(&v3[76..80], &name);
    }

    #[test]
    fn the_version_range_is_checked() {
        assert_eq!(version(&[]), Some(2));
        assert_eq!(version(&[2, 0, 3, 0]), Some(2));
        assert_eq!(version(&[3, 0, 3, 0]), Some(3));
        assert_eq!(version(&[3, 0, 2, 0]), None);
        assert_eq!(version(&[4, 0, 4, 0]), None);
    }
}
