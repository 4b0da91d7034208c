//! Reading what a directory query or a query-information call returned, as an
//! application would: one small layout per FILE_INFORMATION_CLASS, x64 offsets.
//!
//! Offsets come from windows-sys's declarations through `offset_of!`; for the classes
//! windows-sys 0.61 lacks (FileStatBasicInformation, FileId64Extd*, FileIdAllExtd*) they
//! are written out from their ntifs.h declarations. The decoders check every offset and
//! length against the bytes returned: a malformed buffer is reported, never read past.

use std::mem::{offset_of, size_of};

use windows_sys::Wdk::Storage::FileSystem::{
    self as fs, FILE_ALL_INFORMATION, FILE_BASIC_INFORMATION, FILE_BOTH_DIR_INFORMATION,
    FILE_DIRECTORY_INFORMATION, FILE_FULL_DIR_INFORMATION, FILE_ID_BOTH_DIR_INFORMATION,
    FILE_ID_EXTD_BOTH_DIR_INFORMATION, FILE_ID_EXTD_DIR_INFORMATION, FILE_ID_FULL_DIR_INFORMATION,
    FILE_ID_GLOBAL_TX_DIR_INFORMATION, FILE_ID_INFORMATION, FILE_NAMES_INFORMATION,
    FILE_NETWORK_OPEN_INFORMATION, FILE_STANDARD_INFORMATION, FILE_STAT_INFORMATION,
    FILE_STAT_LX_INFORMATION,
};
use windows_sys::Wdk::System::SystemServices::FILE_ATTRIBUTE_TAG_INFORMATION;

use crate::model::ntfs::{
    FILE_ID_64_EXTD_BOTH_DIRECTORY_INFORMATION, FILE_ID_64_EXTD_DIRECTORY_INFORMATION,
    FILE_ID_ALL_EXTD_BOTH_DIRECTORY_INFORMATION, FILE_ID_ALL_EXTD_DIRECTORY_INFORMATION,
    FILE_STAT_BASIC_INFORMATION_CLASS,
};

/// Where one directory class keeps the fields a scenario checks.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DirLayout {
    /// FILE_INFORMATION_CLASS value.
    pub class: i32,
    /// FileNameLength.
    name_length: usize,
    /// FileName: also the smallest entry.
    name: usize,
    attributes: Option<usize>,
    end_of_file: Option<usize>,
    ea_size: Option<usize>,
    reparse_tag: Option<usize>,
}

/// The directory classes and their layouts. FILE_DIRECTORY_INFORMATION's common head
/// (times, sizes, attributes) is shared by every class but FileNames.
pub(crate) fn dir_class(name: &str) -> Option<DirLayout> {
    let head = |class, name_length, name, ea_size, reparse_tag| DirLayout {
        class,
        name_length,
        name,
        attributes: Some(offset_of!(FILE_DIRECTORY_INFORMATION, FileAttributes)),
        end_of_file: Some(offset_of!(FILE_DIRECTORY_INFORMATION, EndOfFile)),
        ea_size,
        reparse_tag,
    };
    // FILE_ID_64_EXTD_DIR_INFORMATION / _BOTH_, FILE_ID_ALL_EXTD_DIR_INFORMATION / _BOTH_
    // (ntifs.h): the FILE_ID_EXTD head up to ReparsePointTag (68), then FileId
    // (LARGE_INTEGER, 72); the All forms add FileId128 (80); the Both forms add
    // ShortNameLength + ShortName[12] before FileName.
    const EXTD_NAME_LENGTH: usize = 60;
    const EXTD_EA: usize = 64;
    const EXTD_TAG: usize = 68;
    Some(match name {
        "FileDirectoryInformation" => head(
            fs::FileDirectoryInformation,
            offset_of!(FILE_DIRECTORY_INFORMATION, FileNameLength),
            offset_of!(FILE_DIRECTORY_INFORMATION, FileName),
            None,
            None,
        ),
        "FileFullDirectoryInformation" => head(
            fs::FileFullDirectoryInformation,
            offset_of!(FILE_FULL_DIR_INFORMATION, FileNameLength),
            offset_of!(FILE_FULL_DIR_INFORMATION, FileName),
            Some(offset_of!(FILE_FULL_DIR_INFORMATION, EaSize)),
            None,
        ),
        "FileBothDirectoryInformation" => head(
            fs::FileBothDirectoryInformation,
            offset_of!(FILE_BOTH_DIR_INFORMATION, FileNameLength),
            offset_of!(FILE_BOTH_DIR_INFORMATION, FileName),
            Some(offset_of!(FILE_BOTH_DIR_INFORMATION, EaSize)),
            None,
        ),
        "FileIdBothDirectoryInformation" => head(
            fs::FileIdBothDirectoryInformation,
            offset_of!(FILE_ID_BOTH_DIR_INFORMATION, FileNameLength),
            offset_of!(FILE_ID_BOTH_DIR_INFORMATION, FileName),
            Some(offset_of!(FILE_ID_BOTH_DIR_INFORMATION, EaSize)),
            None,
        ),
        "FileIdFullDirectoryInformation" => head(
            fs::FileIdFullDirectoryInformation,
            offset_of!(FILE_ID_FULL_DIR_INFORMATION, FileNameLength),
            offset_of!(FILE_ID_FULL_DIR_INFORMATION, FileName),
            Some(offset_of!(FILE_ID_FULL_DIR_INFORMATION, EaSize)),
            None,
        ),
        "FileIdGlobalTxDirectoryInformation" => head(
            fs::FileIdGlobalTxDirectoryInformation,
            offset_of!(FILE_ID_GLOBAL_TX_DIR_INFORMATION, FileNameLength),
            offset_of!(FILE_ID_GLOBAL_TX_DIR_INFORMATION, FileName),
            None,
            None,
        ),
        "FileIdExtdDirectoryInformation" => head(
            fs::FileIdExtdDirectoryInformation,
            offset_of!(FILE_ID_EXTD_DIR_INFORMATION, FileNameLength),
            offset_of!(FILE_ID_EXTD_DIR_INFORMATION, FileName),
            Some(offset_of!(FILE_ID_EXTD_DIR_INFORMATION, EaSize)),
            Some(offset_of!(FILE_ID_EXTD_DIR_INFORMATION, ReparsePointTag)),
        ),
        "FileIdExtdBothDirectoryInformation" => head(
            fs::FileIdExtdBothDirectoryInformation,
            offset_of!(FILE_ID_EXTD_BOTH_DIR_INFORMATION, FileNameLength),
            offset_of!(FILE_ID_EXTD_BOTH_DIR_INFORMATION, FileName),
            Some(offset_of!(FILE_ID_EXTD_BOTH_DIR_INFORMATION, EaSize)),
            Some(offset_of!(
                FILE_ID_EXTD_BOTH_DIR_INFORMATION,
                ReparsePointTag
            )),
        ),
        "FileId64ExtdDirectoryInformation" => head(
            FILE_ID_64_EXTD_DIRECTORY_INFORMATION,
            EXTD_NAME_LENGTH,
            80,
            Some(EXTD_EA),
            Some(EXTD_TAG),
        ),
        "FileId64ExtdBothDirectoryInformation" => head(
            FILE_ID_64_EXTD_BOTH_DIRECTORY_INFORMATION,
            EXTD_NAME_LENGTH,
            106,
            Some(EXTD_EA),
            Some(EXTD_TAG),
        ),
        "FileIdAllExtdDirectoryInformation" => head(
            FILE_ID_ALL_EXTD_DIRECTORY_INFORMATION,
            EXTD_NAME_LENGTH,
            96,
            Some(EXTD_EA),
            Some(EXTD_TAG),
        ),
        "FileIdAllExtdBothDirectoryInformation" => head(
            FILE_ID_ALL_EXTD_BOTH_DIRECTORY_INFORMATION,
            EXTD_NAME_LENGTH,
            122,
            Some(EXTD_EA),
            Some(EXTD_TAG),
        ),
        "FileNamesInformation" => DirLayout {
            class: fs::FileNamesInformation,
            name_length: offset_of!(FILE_NAMES_INFORMATION, FileNameLength),
            name: offset_of!(FILE_NAMES_INFORMATION, FileName),
            attributes: None,
            end_of_file: None,
            ea_size: None,
            reparse_tag: None,
        },
        _ => return None,
    })
}

/// Every directory class name [`dir_class`] knows.
pub(crate) const DIR_CLASSES: [&str; 13] = [
    "FileDirectoryInformation",
    "FileFullDirectoryInformation",
    "FileBothDirectoryInformation",
    "FileNamesInformation",
    "FileIdBothDirectoryInformation",
    "FileIdFullDirectoryInformation",
    "FileIdGlobalTxDirectoryInformation",
    "FileIdExtdDirectoryInformation",
    "FileIdExtdBothDirectoryInformation",
    "FileId64ExtdDirectoryInformation",
    "FileId64ExtdBothDirectoryInformation",
    "FileIdAllExtdDirectoryInformation",
    "FileIdAllExtdBothDirectoryInformation",
];

/// One directory entry as the class returned it; fields the class lacks are None.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub name: String,
    pub attributes: Option<u32>,
    pub size: Option<u64>,
    pub ea_size: Option<u32>,
    pub reparse_tag: Option<u32>,
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(at..at + 8)?.try_into().ok()?))
}

/// The entries of one directory-query buffer (IoStatus.Information bytes): chained by
/// NextEntryOffset, each 8-byte aligned, at least its fixed size, its name in bounds.
pub(crate) fn dir_entries(layout: &DirLayout, buffer: &[u8]) -> Result<Vec<Entry>, String> {
    let mut entries = Vec::new();
    let mut at = 0usize;
    loop {
        let entry = buffer
            .get(at..)
            .filter(|e| e.len() >= layout.name)
            .ok_or_else(|| format!("entry at {at} is shorter than the class's fixed part"))?;
        let next = u32_at(entry, 0).unwrap_or(0) as usize;
        let name_length = u32_at(entry, layout.name_length).unwrap_or(0) as usize;
        let name_bytes = entry
            .get(layout.name..layout.name + name_length)
            .filter(|_| next == 0 || layout.name + name_length <= next)
            .ok_or_else(|| format!("entry at {at}: FileNameLength {name_length} out of bounds"))?;
        if !name_length.is_multiple_of(2) {
            return Err(format!("entry at {at}: odd FileNameLength {name_length}"));
        }
        let units: Vec<u16> = name_bytes
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        entries.push(Entry {
            name: String::from_utf16_lossy(&units),
            attributes: layout.attributes.and_then(|o| u32_at(entry, o)),
            size: layout.end_of_file.and_then(|o| u64_at(entry, o)),
            ea_size: layout.ea_size.and_then(|o| u32_at(entry, o)),
            reparse_tag: layout.reparse_tag.and_then(|o| u32_at(entry, o)),
        });
        if next == 0 {
            return Ok(entries);
        }
        if !next.is_multiple_of(8) {
            return Err(format!(
                "entry at {at}: NextEntryOffset {next} not 8-byte aligned"
            ));
        }
        at += next;
    }
}

/// Where one query-information class keeps attributes, reparse tag and end of file.
#[derive(Debug, Clone, Copy)]
pub(crate) struct InfoLayout {
    pub class: i32,
    /// The buffer an application passes: the structure, plus room for a name where the
    /// class ends in one.
    pub buffer: usize,
    attributes: Option<usize>,
    reparse_tag: Option<usize>,
    end_of_file: Option<usize>,
}

/// Room for a file name after a structure that ends in one (MAX_PATH UTF-16 units).
const NAME_ROOM: usize = 520;

/// FILE_STAT_BASIC_INFORMATION (ntifs.h, not in windows-sys 0.61): FileId at 0, four
/// times, AllocationSize at 40, EndOfFile at 48, FileAttributes at 56, ReparseTag at 60,
/// …, FileId128 at 88; 104 bytes.
const STAT_BASIC_LEN: usize = 104;

/// The query-information classes and their layouts.
pub(crate) fn info_class(name: &str) -> Option<InfoLayout> {
    let plain = |class, buffer| InfoLayout {
        class,
        buffer,
        attributes: None,
        reparse_tag: None,
        end_of_file: None,
    };
    Some(match name {
        "FileBasicInformation" => InfoLayout {
            attributes: Some(offset_of!(FILE_BASIC_INFORMATION, FileAttributes)),
            ..plain(
                fs::FileBasicInformation,
                size_of::<FILE_BASIC_INFORMATION>(),
            )
        },
        "FileStandardInformation" => InfoLayout {
            end_of_file: Some(offset_of!(FILE_STANDARD_INFORMATION, EndOfFile)),
            ..plain(
                fs::FileStandardInformation,
                size_of::<FILE_STANDARD_INFORMATION>(),
            )
        },
        "FileAttributeTagInformation" => InfoLayout {
            attributes: Some(offset_of!(FILE_ATTRIBUTE_TAG_INFORMATION, FileAttributes)),
            reparse_tag: Some(offset_of!(FILE_ATTRIBUTE_TAG_INFORMATION, ReparseTag)),
            ..plain(
                fs::FileAttributeTagInformation,
                size_of::<FILE_ATTRIBUTE_TAG_INFORMATION>(),
            )
        },
        "FileNetworkOpenInformation" => InfoLayout {
            attributes: Some(offset_of!(FILE_NETWORK_OPEN_INFORMATION, FileAttributes)),
            end_of_file: Some(offset_of!(FILE_NETWORK_OPEN_INFORMATION, EndOfFile)),
            ..plain(
                fs::FileNetworkOpenInformation,
                size_of::<FILE_NETWORK_OPEN_INFORMATION>(),
            )
        },
        "FileAllInformation" => InfoLayout {
            attributes: Some(
                offset_of!(FILE_ALL_INFORMATION, BasicInformation)
                    + offset_of!(FILE_BASIC_INFORMATION, FileAttributes),
            ),
            end_of_file: Some(
                offset_of!(FILE_ALL_INFORMATION, StandardInformation)
                    + offset_of!(FILE_STANDARD_INFORMATION, EndOfFile),
            ),
            ..plain(
                fs::FileAllInformation,
                size_of::<FILE_ALL_INFORMATION>() + NAME_ROOM,
            )
        },
        "FileStatInformation" => InfoLayout {
            attributes: Some(offset_of!(FILE_STAT_INFORMATION, FileAttributes)),
            reparse_tag: Some(offset_of!(FILE_STAT_INFORMATION, ReparseTag)),
            end_of_file: Some(offset_of!(FILE_STAT_INFORMATION, EndOfFile)),
            ..plain(fs::FileStatInformation, size_of::<FILE_STAT_INFORMATION>())
        },
        "FileStatLxInformation" => InfoLayout {
            attributes: Some(offset_of!(FILE_STAT_LX_INFORMATION, FileAttributes)),
            reparse_tag: Some(offset_of!(FILE_STAT_LX_INFORMATION, ReparseTag)),
            end_of_file: Some(offset_of!(FILE_STAT_LX_INFORMATION, EndOfFile)),
            ..plain(
                fs::FileStatLxInformation,
                size_of::<FILE_STAT_LX_INFORMATION>(),
            )
        },
        "FileStatBasicInformation" => InfoLayout {
            attributes: Some(56),
            reparse_tag: Some(60),
            end_of_file: Some(48),
            ..plain(FILE_STAT_BASIC_INFORMATION_CLASS, STAT_BASIC_LEN)
        },
        "FileIdInformation" => plain(fs::FileIdInformation, size_of::<FILE_ID_INFORMATION>()),
        "FileInternalInformation" => plain(fs::FileInternalInformation, 8),
        "FileEaInformation" => plain(fs::FileEaInformation, 4),
        "FileAccessInformation" => plain(fs::FileAccessInformation, 4),
        "FilePositionInformation" => plain(fs::FilePositionInformation, 8),
        "FileNameInformation" => plain(fs::FileNameInformation, 4 + NAME_ROOM),
        "FileNormalizedNameInformation" => plain(fs::FileNormalizedNameInformation, 4 + NAME_ROOM),
        "FileStreamInformation" => plain(fs::FileStreamInformation, 24 + NAME_ROOM),
        _ => return None,
    })
}

/// What a query-information answer says about attributes, tag and size; None where the
/// class does not carry the field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Info {
    pub attributes: Option<u32>,
    pub reparse_tag: Option<u32>,
    pub size: Option<u64>,
}

/// Which of the fields the class carries: attributes, reparse tag, size.
pub(crate) fn info_fields(layout: &InfoLayout) -> (bool, bool, bool) {
    (
        layout.attributes.is_some(),
        layout.reparse_tag.is_some(),
        layout.end_of_file.is_some(),
    )
}

/// The fields of a successful answer; an answer too short for a field it must carry is
/// malformed.
pub(crate) fn info(layout: &InfoLayout, buffer: &[u8]) -> Result<Info, String> {
    let short = |what: &str| format!("{} bytes returned: too short for {what}", buffer.len());
    Ok(Info {
        attributes: match layout.attributes {
            Some(o) => Some(u32_at(buffer, o).ok_or_else(|| short("FileAttributes"))?),
            None => None,
        },
        reparse_tag: match layout.reparse_tag {
            Some(o) => Some(u32_at(buffer, o).ok_or_else(|| short("ReparseTag"))?),
            None => None,
        },
        size: match layout.end_of_file {
            Some(o) => Some(u64_at(buffer, o).ok_or_else(|| short("EndOfFile"))?),
            None => None,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_directory_class_name_has_a_layout() {
        for name in DIR_CLASSES {
            assert!(dir_class(name).is_some(), "{name}");
        }
    }

    #[test]
    fn a_chain_decodes_and_a_bad_chain_is_reported() {
        let layout = dir_class("FileNamesInformation").unwrap();
        let mut b = vec![0u8; 16];
        b[0] = 16; // next
        b[8] = 2; // name length
        b[12] = b'a';
        b.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, b'b', 0, b'c', 0]);
        let entries = dir_entries(&layout, &b).unwrap();
        let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["a", "bc"]);
        b[24] = 200;
        assert!(dir_entries(&layout, &b).is_err());
    }
}
