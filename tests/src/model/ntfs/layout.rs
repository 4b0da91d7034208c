//! The byte-exact x64 encodings NTFS writes for query-information and directory
//! enumeration. Offsets are written out here once and checked against windows-sys (or,
//! for structures windows-sys 0.61 lacks, against `#[repr(C)]` copies of the documented
//! C declarations) by the tests at the bottom.

use windows_sys::Wdk::Storage::FileSystem as fs;

/// What every encoder needs to know about one file.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Meta {
    pub id: u64,
    pub times: [i64; 4],
    pub size: u64,
    pub allocation: u64,
    /// As reported: FILE_ATTRIBUTE_NORMAL when nothing else is set.
    pub attributes: u32,
    /// Reparse tag, 0 when none.
    pub tag: u32,
    pub directory: bool,
    pub delete_pending: bool,
    pub links: u32,
}

pub(crate) fn put_u16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}
pub(crate) fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
pub(crate) fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}
pub(crate) fn put_i64(b: &mut [u8], at: usize, v: i64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}
pub(crate) fn get_u16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}
pub(crate) fn get_u32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}
pub(crate) fn get_i64(b: &[u8], at: usize) -> Option<i64> {
    Some(i64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

pub(crate) fn utf16_bytes(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

/// NTFS's 128-bit file id: the 64-bit file reference zero-extended.
fn put_id128(b: &mut [u8], at: usize, id: u64) {
    put_u64(b, at, id);
    put_u64(b, at + 8, 0);
}

// FILE_BASIC_INFORMATION
pub(crate) const BASIC_LEN: usize = 40;
// FILE_STANDARD_INFORMATION
pub(crate) const STANDARD_LEN: usize = 24;
// FILE_NETWORK_OPEN_INFORMATION
pub(crate) const NETWORK_OPEN_LEN: usize = 56;
// FILE_ALL_INFORMATION: fixed parts, then FILE_NAME_INFORMATION at 96.
pub(crate) const ALL_NAME_INFO: usize = 96;
pub(crate) const ALL_LEN: usize = 104;
// FILE_NAME_INFORMATION
pub(crate) const NAME_LEN: usize = 8;
// FILE_STREAM_INFORMATION
pub(crate) const STREAM_NAME: usize = 24;
pub(crate) const STREAM_LEN: usize = 32;
// FILE_ID_INFORMATION
pub(crate) const ID_LEN: usize = 24;
// FILE_STAT_INFORMATION, FILE_STAT_LX_INFORMATION, FILE_STAT_BASIC_INFORMATION
pub(crate) const STAT_LEN: usize = 72;
pub(crate) const STAT_LX_LEN: usize = 96;
pub(crate) const STAT_BASIC_LEN: usize = 104;

/// `FileStatBasicInformation`: missing from windows-sys 0.61 (its enum stops at 76).
pub const FILE_STAT_BASIC_INFORMATION_CLASS: i32 = 77;
/// `FileId64ExtdDirectoryInformation` (ntifs.h; not in windows-sys 0.61).
pub const FILE_ID_64_EXTD_DIRECTORY_INFORMATION: i32 = 78;
/// `FileId64ExtdBothDirectoryInformation`.
pub const FILE_ID_64_EXTD_BOTH_DIRECTORY_INFORMATION: i32 = 79;
/// `FileIdAllExtdDirectoryInformation`.
pub const FILE_ID_ALL_EXTD_DIRECTORY_INFORMATION: i32 = 80;
/// `FileIdAllExtdBothDirectoryInformation`.
pub const FILE_ID_ALL_EXTD_BOTH_DIRECTORY_INFORMATION: i32 = 81;

/// FILE_DEVICE_DISK: what FileStatBasicInformation reports as DeviceType on NTFS.
const FILE_DEVICE_DISK: u32 = 7;

fn basic(b: &mut [u8], at: usize, m: &Meta) {
    for (i, t) in m.times.iter().enumerate() {
        put_i64(b, at + 8 * i, *t);
    }
    put_u32(b, at + 32, m.attributes);
}

fn standard(b: &mut [u8], at: usize, m: &Meta) {
    put_u64(b, at, m.allocation);
    put_u64(b, at + 8, m.size);
    put_u32(b, at + 16, m.links);
    b[at + 20] = u8::from(m.delete_pending);
    b[at + 21] = u8::from(m.directory);
}

pub(crate) fn basic_info(m: &Meta) -> Vec<u8> {
    let mut b = vec![0; BASIC_LEN];
    basic(&mut b, 0, m);
    b
}

pub(crate) fn standard_info(m: &Meta) -> Vec<u8> {
    let mut b = vec![0; STANDARD_LEN];
    standard(&mut b, 0, m);
    b
}

pub(crate) fn network_open_info(m: &Meta) -> Vec<u8> {
    let mut b = vec![0; NETWORK_OPEN_LEN];
    for (i, t) in m.times.iter().enumerate() {
        put_i64(&mut b, 8 * i, *t);
    }
    put_u64(&mut b, 32, m.allocation);
    put_u64(&mut b, 40, m.size);
    put_u32(&mut b, 48, m.attributes);
    b
}

pub(crate) fn attribute_tag_info(m: &Meta) -> Vec<u8> {
    let mut b = vec![0; 8];
    put_u32(&mut b, 0, m.attributes);
    put_u32(&mut b, 4, m.tag);
    b
}

pub(crate) fn id_info(m: &Meta, volume_serial: u64) -> Vec<u8> {
    let mut b = vec![0; ID_LEN];
    put_u64(&mut b, 0, volume_serial);
    put_id128(&mut b, 8, m.id);
    b
}

pub(crate) fn stat_info(m: &Meta, access: u32) -> Vec<u8> {
    let mut b = vec![0; STAT_LEN];
    put_u64(&mut b, 0, m.id);
    for (i, t) in m.times.iter().enumerate() {
        put_i64(&mut b, 8 + 8 * i, *t);
    }
    put_u64(&mut b, 40, m.allocation);
    put_u64(&mut b, 48, m.size);
    put_u32(&mut b, 56, m.attributes);
    put_u32(&mut b, 60, m.tag);
    put_u32(&mut b, 64, m.links);
    put_u32(&mut b, 68, access);
    b
}

/// FILE_STAT_LX_INFORMATION: the stat part, then no WSL metadata (LxFlags 0).
pub(crate) fn stat_lx_info(m: &Meta, access: u32) -> Vec<u8> {
    let mut b = stat_info(m, access);
    b.resize(STAT_LX_LEN, 0);
    b
}

pub(crate) fn stat_basic_info(m: &Meta, volume_serial: u64) -> Vec<u8> {
    let mut b = vec![0; STAT_BASIC_LEN];
    put_u64(&mut b, 0, m.id);
    for (i, t) in m.times.iter().enumerate() {
        put_i64(&mut b, 8 + 8 * i, *t);
    }
    put_u64(&mut b, 40, m.allocation);
    put_u64(&mut b, 48, m.size);
    put_u32(&mut b, 56, m.attributes);
    put_u32(&mut b, 60, m.tag);
    put_u32(&mut b, 64, m.links);
    put_u32(&mut b, 68, FILE_DEVICE_DISK);
    put_u64(&mut b, 80, volume_serial);
    put_id128(&mut b, 88, m.id);
    b
}

/// A name-carrying structure: `fixed` bytes with the name's byte length at
/// `length_at` and the name from `name_at`, cut to `buffer_len` bytes. Returns
/// whether the name was cut (STATUS_BUFFER_OVERFLOW).
pub(crate) fn with_name(
    mut fixed: Vec<u8>,
    length_at: usize,
    name_at: usize,
    name: &[u8],
    buffer_len: usize,
) -> (Vec<u8>, bool) {
    put_u32(&mut fixed, length_at, name.len() as u32);
    fixed.truncate(name_at);
    let room = buffer_len.saturating_sub(name_at);
    let take = room.min(name.len());
    fixed.extend_from_slice(&name[..take]);
    (fixed, take < name.len())
}

/// FILE_ALL_INFORMATION up to (not including) the name.
pub(crate) fn all_info_fixed(m: &Meta, access: u32) -> Vec<u8> {
    let mut b = vec![0; ALL_LEN];
    basic(&mut b, 0, m);
    standard(&mut b, 40, m);
    put_u64(&mut b, 64, m.id);
    // EaSize (72) stays 0: the model has no extended attributes.
    put_u32(&mut b, 76, access);
    // CurrentByteOffset (80), Mode (88) and AlignmentRequirement (92) belong to the
    // file object and the device; NTFS copies them from there. The model has neither.
    b
}

/// One directory-enumeration class: where its fields sit.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DirClass {
    /// FileNameLength.
    pub name_length: usize,
    /// FileName: also the MS-FSA minimum buffer size for the class.
    pub name: usize,
    /// Times, sizes and attributes at 8..60 (all but FileNames).
    pub common: bool,
    pub ea: Option<usize>,
    pub tag: Option<usize>,
    pub id64: Option<usize>,
    pub id128: Option<usize>,
    /// ShortNameLength; ShortName follows 2 bytes later.
    pub short: Option<usize>,
}

const fn class(
    name: usize,
    ea: Option<usize>,
    tag: Option<usize>,
    id64: Option<usize>,
    id128: Option<usize>,
    short: Option<usize>,
) -> DirClass {
    DirClass {
        name_length: 60,
        name,
        common: true,
        ea,
        tag,
        id64,
        id128,
        short,
    }
}

/// The layout of a directory class, None for a class NTFS does not enumerate with.
pub(crate) fn dir_class(c: i32) -> Option<DirClass> {
    Some(match c {
        fs::FileDirectoryInformation => class(64, None, None, None, None, None),
        fs::FileFullDirectoryInformation => class(68, Some(64), None, None, None, None),
        fs::FileBothDirectoryInformation => class(94, Some(64), None, None, None, Some(68)),
        fs::FileNamesInformation => DirClass {
            name_length: 8,
            name: 12,
            common: false,
            ea: None,
            tag: None,
            id64: None,
            id128: None,
            short: None,
        },
        fs::FileIdBothDirectoryInformation => class(104, Some(64), None, Some(96), None, Some(68)),
        fs::FileIdFullDirectoryInformation => class(80, Some(64), None, Some(72), None, None),
        // LockingTransactionId (72) and TxInfoFlags (88) stay 0: no transactions.
        fs::FileIdGlobalTxDirectoryInformation => class(92, None, None, Some(64), None, None),
        fs::FileIdExtdDirectoryInformation => class(88, Some(64), Some(68), None, Some(72), None),
        fs::FileIdExtdBothDirectoryInformation => {
            class(114, Some(64), Some(68), None, Some(72), Some(88))
        }
        FILE_ID_64_EXTD_DIRECTORY_INFORMATION => {
            class(80, Some(64), Some(68), Some(72), None, None)
        }
        FILE_ID_64_EXTD_BOTH_DIRECTORY_INFORMATION => {
            class(106, Some(64), Some(68), Some(72), None, Some(80))
        }
        FILE_ID_ALL_EXTD_DIRECTORY_INFORMATION => {
            class(96, Some(64), Some(68), Some(72), Some(80), None)
        }
        FILE_ID_ALL_EXTD_BOTH_DIRECTORY_INFORMATION => {
            class(122, Some(64), Some(68), Some(72), Some(80), Some(96))
        }
        _ => return None,
    })
}

/// One directory entry with NextEntryOffset 0 and the whole name.
///
/// EaSize carries the reparse tag for a reparse point, as NTFS does (a file cannot have
/// both EAs and a reparse point); ShortNameLength stays 0 (8.3 names off).
pub(crate) fn dir_entry(c: &DirClass, m: &Meta, name: &[u8]) -> Vec<u8> {
    let mut b = vec![0; c.name + name.len()];
    if c.common {
        for (i, t) in m.times.iter().enumerate() {
            put_i64(&mut b, 8 + 8 * i, *t);
        }
        put_u64(&mut b, 40, m.size);
        put_u64(&mut b, 48, m.allocation);
        put_u32(&mut b, 56, m.attributes);
    }
    put_u32(&mut b, c.name_length, name.len() as u32);
    if let Some(at) = c.ea {
        put_u32(&mut b, at, m.tag);
    }
    if let Some(at) = c.tag {
        put_u32(&mut b, at, m.tag);
    }
    if let Some(at) = c.id64 {
        put_u64(&mut b, at, m.id);
    }
    if let Some(at) = c.id128 {
        put_id128(&mut b, at, m.id);
    }
    if let Some(at) = c.short {
        // ShortNameLength 0: volumes made since Windows 8 have 8.3 names off.
        b[at] = 0;
    }
    b[c.name..].copy_from_slice(name);
    b
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};
    use windows_sys::Win32::Storage::FileSystem::FILE_ID_128;

    macro_rules! at {
        ($t:ty, $($f:tt).+) => {
            offset_of!($t, $($f).+)
        };
    }

    #[test]
    fn query_information_layouts_match_windows_sys() {
        assert_eq!(size_of::<fs::FILE_BASIC_INFORMATION>(), BASIC_LEN);
        assert_eq!(at!(fs::FILE_BASIC_INFORMATION, ChangeTime), 24);
        assert_eq!(at!(fs::FILE_BASIC_INFORMATION, FileAttributes), 32);
        assert_eq!(size_of::<fs::FILE_STANDARD_INFORMATION>(), STANDARD_LEN);
        assert_eq!(at!(fs::FILE_STANDARD_INFORMATION, EndOfFile), 8);
        assert_eq!(at!(fs::FILE_STANDARD_INFORMATION, NumberOfLinks), 16);
        assert_eq!(at!(fs::FILE_STANDARD_INFORMATION, DeletePending), 20);
        assert_eq!(at!(fs::FILE_STANDARD_INFORMATION, Directory), 21);
        assert_eq!(size_of::<fs::FILE_INTERNAL_INFORMATION>(), 8);
        assert_eq!(size_of::<fs::FILE_EA_INFORMATION>(), 4);
        assert_eq!(size_of::<fs::FILE_NAME_INFORMATION>(), NAME_LEN);
        assert_eq!(at!(fs::FILE_NAME_INFORMATION, FileName), 4);
        type All = fs::FILE_ALL_INFORMATION;
        assert_eq!(size_of::<All>(), ALL_LEN);
        assert_eq!(at!(All, StandardInformation), 40);
        assert_eq!(at!(All, InternalInformation), 64);
        assert_eq!(at!(All, EaInformation), 72);
        assert_eq!(at!(All, AccessInformation), 76);
        assert_eq!(at!(All, PositionInformation), 80);
        assert_eq!(at!(All, ModeInformation), 88);
        assert_eq!(at!(All, AlignmentInformation), 92);
        assert_eq!(at!(All, NameInformation), ALL_NAME_INFO);
        assert_eq!(at!(All, NameInformation.FileName), ALL_NAME_INFO + 4);
        type Net = fs::FILE_NETWORK_OPEN_INFORMATION;
        assert_eq!(size_of::<Net>(), NETWORK_OPEN_LEN);
        assert_eq!(at!(Net, AllocationSize), 32);
        assert_eq!(at!(Net, EndOfFile), 40);
        assert_eq!(at!(Net, FileAttributes), 48);
        type Tag = windows_sys::Win32::Storage::FileSystem::FILE_ATTRIBUTE_TAG_INFO;
        assert_eq!(size_of::<Tag>(), 8);
        assert_eq!(at!(Tag, ReparseTag), 4);
        assert_eq!(size_of::<fs::FILE_ID_INFORMATION>(), ID_LEN);
        assert_eq!(at!(fs::FILE_ID_INFORMATION, FileId), 8);
        type Stat = fs::FILE_STAT_INFORMATION;
        assert_eq!(size_of::<Stat>(), STAT_LEN);
        assert_eq!(at!(Stat, CreationTime), 8);
        assert_eq!(at!(Stat, AllocationSize), 40);
        assert_eq!(at!(Stat, EndOfFile), 48);
        assert_eq!(at!(Stat, FileAttributes), 56);
        assert_eq!(at!(Stat, ReparseTag), 60);
        assert_eq!(at!(Stat, NumberOfLinks), 64);
        assert_eq!(at!(Stat, EffectiveAccess), 68);
        type Lx = fs::FILE_STAT_LX_INFORMATION;
        assert_eq!(size_of::<Lx>(), STAT_LX_LEN);
        assert_eq!(at!(Lx, EffectiveAccess), 68);
        assert_eq!(at!(Lx, LxFlags), 72);
        type Stream = fs::FILE_STREAM_INFORMATION;
        assert_eq!(size_of::<Stream>(), STREAM_LEN);
        assert_eq!(at!(Stream, StreamNameLength), 4);
        assert_eq!(at!(Stream, StreamSize), 8);
        assert_eq!(at!(Stream, StreamAllocationSize), 16);
        assert_eq!(at!(Stream, StreamName), STREAM_NAME);
    }

    /// FILE_STAT_BASIC_INFORMATION as ntifs.h declares it (windows-sys 0.61 lacks it).
    #[repr(C)]
    struct StatBasic {
        file_id: i64,
        creation: i64,
        access: i64,
        write: i64,
        change: i64,
        allocation: i64,
        eof: i64,
        attributes: u32,
        reparse_tag: u32,
        links: u32,
        device_type: u32,
        device_characteristics: u32,
        reserved: u32,
        volume_serial: i64,
        file_id_128: FILE_ID_128,
    }

    #[test]
    fn stat_basic_layout_matches_the_documented_declaration() {
        assert_eq!(size_of::<StatBasic>(), STAT_BASIC_LEN);
        assert_eq!(offset_of!(StatBasic, attributes), 56);
        assert_eq!(offset_of!(StatBasic, reparse_tag), 60);
        assert_eq!(offset_of!(StatBasic, links), 64);
        assert_eq!(offset_of!(StatBasic, device_type), 68);
        assert_eq!(offset_of!(StatBasic, volume_serial), 80);
        assert_eq!(offset_of!(StatBasic, file_id_128), 88);
    }

    fn check(c: i32, name: usize, size: usize, ea: Option<usize>, short: Option<usize>) {
        let l = dir_class(c).expect("class");
        assert_eq!(l.name, name, "class {c} FileName");
        assert_eq!(l.ea, ea, "class {c} EaSize");
        assert_eq!(l.short, short, "class {c} ShortNameLength");
        // Entries in a buffer are 8-byte aligned; the C size is the name offset plus
        // one WCHAR, rounded to the structure's alignment of 8.
        assert_eq!((name + 2).next_multiple_of(8), size, "class {c} size");
    }

    #[test]
    fn directory_layouts_match_windows_sys() {
        type D = fs::FILE_DIRECTORY_INFORMATION;
        check(
            fs::FileDirectoryInformation,
            at!(D, FileName),
            size_of::<D>(),
            None,
            None,
        );
        assert_eq!(at!(D, EndOfFile), 40);
        assert_eq!(at!(D, AllocationSize), 48);
        assert_eq!(at!(D, FileAttributes), 56);
        assert_eq!(at!(D, FileNameLength), 60);
        type F = fs::FILE_FULL_DIR_INFORMATION;
        check(
            fs::FileFullDirectoryInformation,
            at!(F, FileName),
            size_of::<F>(),
            Some(at!(F, EaSize)),
            None,
        );
        type B = fs::FILE_BOTH_DIR_INFORMATION;
        check(
            fs::FileBothDirectoryInformation,
            at!(B, FileName),
            size_of::<B>(),
            Some(at!(B, EaSize)),
            Some(at!(B, ShortNameLength)),
        );
        assert_eq!(at!(B, ShortName), 70);
        type N = fs::FILE_NAMES_INFORMATION;
        let n = dir_class(fs::FileNamesInformation).expect("names");
        assert_eq!(n.name_length, at!(N, FileNameLength));
        assert_eq!(n.name, at!(N, FileName));
        assert_eq!(size_of::<N>(), 16);
        type IB = fs::FILE_ID_BOTH_DIR_INFORMATION;
        check(
            fs::FileIdBothDirectoryInformation,
            at!(IB, FileName),
            size_of::<IB>(),
            Some(at!(IB, EaSize)),
            Some(at!(IB, ShortNameLength)),
        );
        assert_eq!(
            dir_class(fs::FileIdBothDirectoryInformation).and_then(|c| c.id64),
            Some(at!(IB, FileId))
        );
        type IF = fs::FILE_ID_FULL_DIR_INFORMATION;
        check(
            fs::FileIdFullDirectoryInformation,
            at!(IF, FileName),
            size_of::<IF>(),
            Some(at!(IF, EaSize)),
            None,
        );
        assert_eq!(
            dir_class(fs::FileIdFullDirectoryInformation).and_then(|c| c.id64),
            Some(at!(IF, FileId))
        );
        type G = fs::FILE_ID_GLOBAL_TX_DIR_INFORMATION;
        check(
            fs::FileIdGlobalTxDirectoryInformation,
            at!(G, FileName),
            size_of::<G>(),
            None,
            None,
        );
        assert_eq!(
            dir_class(fs::FileIdGlobalTxDirectoryInformation).and_then(|c| c.id64),
            Some(at!(G, FileId))
        );
        assert_eq!(at!(G, TxInfoFlags), 88);
        type E = fs::FILE_ID_EXTD_DIR_INFORMATION;
        check(
            fs::FileIdExtdDirectoryInformation,
            at!(E, FileName),
            size_of::<E>(),
            Some(at!(E, EaSize)),
            None,
        );
        let e = dir_class(fs::FileIdExtdDirectoryInformation).expect("extd");
        assert_eq!(e.tag, Some(at!(E, ReparsePointTag)));
        assert_eq!(e.id128, Some(at!(E, FileId)));
        type EB = fs::FILE_ID_EXTD_BOTH_DIR_INFORMATION;
        check(
            fs::FileIdExtdBothDirectoryInformation,
            at!(EB, FileName),
            size_of::<EB>(),
            Some(at!(EB, EaSize)),
            Some(at!(EB, ShortNameLength)),
        );
        let eb = dir_class(fs::FileIdExtdBothDirectoryInformation).expect("extd both");
        assert_eq!(eb.tag, Some(at!(EB, ReparsePointTag)));
        assert_eq!(eb.id128, Some(at!(EB, FileId)));
        assert_eq!(at!(EB, ShortName), eb.short.map(|s| s + 2).unwrap_or(0));
    }

    /// The four classes windows-sys 0.61 lacks, declared as ntifs.h does.
    #[repr(C)]
    struct Head {
        next: u32,
        index: u32,
        times: [i64; 4],
        eof: i64,
        allocation: i64,
        attributes: u32,
        name_length: u32,
        ea: u32,
        tag: u32,
    }
    #[repr(C)]
    struct Id64Extd {
        h: Head,
        id: i64,
        name: [u16; 1],
    }
    #[repr(C)]
    struct Id64ExtdBoth {
        h: Head,
        id: i64,
        short_length: i8,
        short: [u16; 12],
        name: [u16; 1],
    }
    #[repr(C)]
    struct IdAllExtd {
        h: Head,
        id: i64,
        id128: FILE_ID_128,
        name: [u16; 1],
    }
    #[repr(C)]
    struct IdAllExtdBoth {
        h: Head,
        id: i64,
        id128: FILE_ID_128,
        short_length: i8,
        short: [u16; 12],
        name: [u16; 1],
    }

    #[test]
    fn new_directory_layouts_match_the_documented_declarations() {
        assert_eq!(offset_of!(Head, ea), 64);
        assert_eq!(offset_of!(Head, tag), 68);
        let c = FILE_ID_64_EXTD_DIRECTORY_INFORMATION;
        check(
            c,
            offset_of!(Id64Extd, name),
            size_of::<Id64Extd>(),
            Some(64),
            None,
        );
        assert_eq!(
            dir_class(c).and_then(|l| l.id64),
            Some(offset_of!(Id64Extd, id))
        );
        let c = FILE_ID_64_EXTD_BOTH_DIRECTORY_INFORMATION;
        check(
            c,
            offset_of!(Id64ExtdBoth, name),
            size_of::<Id64ExtdBoth>(),
            Some(64),
            Some(offset_of!(Id64ExtdBoth, short_length)),
        );
        assert_eq!(offset_of!(Id64ExtdBoth, short), 82);
        let c = FILE_ID_ALL_EXTD_DIRECTORY_INFORMATION;
        check(
            c,
            offset_of!(IdAllExtd, name),
            size_of::<IdAllExtd>(),
            Some(64),
            None,
        );
        assert_eq!(
            dir_class(c).and_then(|l| l.id128),
            Some(offset_of!(IdAllExtd, id128))
        );
        let c = FILE_ID_ALL_EXTD_BOTH_DIRECTORY_INFORMATION;
        check(
            c,
            offset_of!(IdAllExtdBoth, name),
            size_of::<IdAllExtdBoth>(),
            Some(64),
            Some(offset_of!(IdAllExtdBoth, short_length)),
        );
        assert_eq!(offset_of!(IdAllExtdBoth, short), 98);
        for c in [78, 79, 80, 81] {
            assert_eq!(dir_class(c).and_then(|l| l.tag), Some(68));
        }
    }
}
