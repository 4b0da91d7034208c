//! Reparse-point buffers as NTFS takes and keeps them: tag rules, the
//! REPARSE_DATA_BUFFER / REPARSE_GUID_DATA_BUFFER / REPARSE_DATA_BUFFER_EX headers and
//! the checks of FSCTL_SET/DELETE_REPARSE_POINT(_EX) that depend on the input alone
//! (MS-FSA 2.1.5.10.37 and the FSCTL reference pages). What depends on the file lives
//! with the file, in `mod.rs`.

use windows_sys::Wdk::Storage::FileSystem::IO_REPARSE_TAG_VALID_VALUES;
use windows_sys::Win32::Foundation::{
    NTSTATUS, STATUS_IO_REPARSE_DATA_INVALID, STATUS_IO_REPARSE_TAG_INVALID,
};
use windows_sys::Win32::Storage::FileSystem::MAXIMUM_REPARSE_DATA_BUFFER_SIZE;
use windows_sys::Win32::System::SystemServices::{
    IO_REPARSE_TAG_RESERVED_INVALID, IO_REPARSE_TAG_RESERVED_RANGE,
};

use super::layout::{get_u16, get_u32, put_u16};

/// REPARSE_DATA_BUFFER_HEADER_SIZE.
pub(crate) const HEADER: usize = 8;
/// REPARSE_GUID_DATA_BUFFER_HEADER_SIZE.
pub(crate) const GUID_HEADER: usize = 24;
/// REPARSE_DATA_BUFFER_EX up to its embedded buffer.
pub(crate) const EX_HEADER: usize = 32;
/// MAXIMUM_REPARSE_DATA_BUFFER_SIZE.
pub(crate) const MAX_BUFFER: usize = MAXIMUM_REPARSE_DATA_BUFFER_SIZE as usize;

/// Tags owned by Microsoft (bit 31) carry no GUID.
pub(crate) fn is_microsoft(tag: u32) -> bool {
    tag & 0x8000_0000 != 0
}

/// The D bit (bit 28): a directory with this tag may have children.
pub(crate) fn is_directory_tag(tag: u32) -> bool {
    tag & 0x1000_0000 != 0
}

/// IsReparseTagValid, plus the one tag ntifs.h reserves as invalid.
pub(crate) fn tag_valid(tag: u32) -> bool {
    tag & !IO_REPARSE_TAG_VALID_VALUES == 0
        && tag > IO_REPARSE_TAG_RESERVED_RANGE
        && tag != IO_REPARSE_TAG_RESERVED_INVALID as u32
}

/// The tag of a stored buffer.
pub(crate) fn tag_of(stored: &[u8]) -> u32 {
    get_u32(stored, 0).unwrap_or(0)
}

/// The GUID of a stored non-Microsoft buffer.
pub(crate) fn guid_of(stored: &[u8]) -> Option<[u8; 16]> {
    if is_microsoft(tag_of(stored)) {
        return None;
    }
    stored.get(8..24)?.try_into().ok()
}

/// A REPARSE_DATA_BUFFER (Microsoft tag) or REPARSE_GUID_DATA_BUFFER (any other tag)
/// as FSCTL_SET_REPARSE_POINT takes it, checked and returned as NTFS stores it
/// (Reserved cleared, since FSCTL_GET_REPARSE_POINT reports it as zero).
pub(crate) fn parse_set(input: &[u8]) -> Result<Vec<u8>, NTSTATUS> {
    if input.len() < HEADER || input.len() > MAX_BUFFER {
        return Err(STATUS_IO_REPARSE_DATA_INVALID);
    }
    let tag = get_u32(input, 0).unwrap_or(0);
    if !tag_valid(tag) {
        return Err(STATUS_IO_REPARSE_TAG_INVALID);
    }
    let data = usize::from(get_u16(input, 4).unwrap_or(0));
    // A third-party tag given a REPARSE_DATA_BUFFER (no GUID) fails here too: its
    // length no longer adds up.
    let header = if is_microsoft(tag) {
        HEADER
    } else {
        GUID_HEADER
    };
    if input.len() != header + data {
        return Err(STATUS_IO_REPARSE_DATA_INVALID);
    }
    let mut stored = input.to_vec();
    put_u16(&mut stored, 6, 0);
    Ok(stored)
}

/// The header-only buffer FSCTL_DELETE_REPARSE_POINT takes: (tag, GUID if third-party).
pub(crate) fn parse_delete(input: &[u8]) -> Result<(u32, Option<[u8; 16]>), NTSTATUS> {
    if input.len() < HEADER {
        return Err(STATUS_IO_REPARSE_DATA_INVALID);
    }
    let tag = get_u32(input, 0).unwrap_or(0);
    if !tag_valid(tag) {
        return Err(STATUS_IO_REPARSE_TAG_INVALID);
    }
    let data = get_u16(input, 4).unwrap_or(0);
    let header = if is_microsoft(tag) {
        HEADER
    } else {
        GUID_HEADER
    };
    if data != 0 || input.len() != header {
        return Err(STATUS_IO_REPARSE_DATA_INVALID);
    }
    let guid = if is_microsoft(tag) {
        None
    } else {
        input.get(8..24).and_then(|g| g.try_into().ok())
    };
    Ok((tag, guid))
}

/// REPARSE_DATA_BUFFER_EX: (Flags, ExistingReparseTag, ExistingReparseGuid, the
/// embedded buffer checked as [`parse_set`] checks it).
pub(crate) struct SetEx {
    pub flags: u32,
    pub existing_tag: u32,
    pub existing_guid: [u8; 16],
    pub stored: Vec<u8>,
}

pub(crate) fn parse_set_ex(input: &[u8]) -> Result<SetEx, NTSTATUS> {
    if input.len() < EX_HEADER + HEADER {
        return Err(STATUS_IO_REPARSE_DATA_INVALID);
    }
    let flags = get_u32(input, 0).unwrap_or(0);
    let existing_tag = get_u32(input, 4).unwrap_or(0);
    let mut existing_guid = [0; 16];
    existing_guid.copy_from_slice(&input[8..24]);
    // The 16 KiB limit is on the reparse buffer NTFS keeps, not on the _EX wrapper.
    let stored = parse_set(&input[EX_HEADER..])?;
    Ok(SetEx {
        flags,
        existing_tag,
        existing_guid,
        stored,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};
    use windows_sys::Wdk::Storage::FileSystem::{REPARSE_DATA_BUFFER, REPARSE_DATA_BUFFER_EX};
    use windows_sys::Win32::Storage::FileSystem::REPARSE_GUID_DATA_BUFFER;

    #[test]
    fn headers_match_windows_sys() {
        assert_eq!(offset_of!(REPARSE_DATA_BUFFER, Anonymous), HEADER);
        assert_eq!(offset_of!(REPARSE_DATA_BUFFER, ReparseDataLength), 4);
        assert_eq!(offset_of!(REPARSE_GUID_DATA_BUFFER, ReparseGuid), 8);
        assert_eq!(
            offset_of!(REPARSE_GUID_DATA_BUFFER, GenericReparseBuffer),
            GUID_HEADER
        );
        assert_eq!(offset_of!(REPARSE_DATA_BUFFER_EX, ExistingReparseTag), 4);
        assert_eq!(offset_of!(REPARSE_DATA_BUFFER_EX, ExistingReparseGuid), 8);
        assert_eq!(offset_of!(REPARSE_DATA_BUFFER_EX, Anonymous), EX_HEADER);
        assert!(size_of::<REPARSE_DATA_BUFFER_EX>() > EX_HEADER);
    }

    #[test]
    fn tag_rules() {
        assert!(!tag_valid(0));
        assert!(!tag_valid(1));
        assert!(!tag_valid(2));
        assert!(tag_valid(3));
        assert!(!tag_valid(0x0001_0003), "reserved bits 16..27");
        assert!(!tag_valid(0xC000_8000));
        assert!(tag_valid(0x9000_001A));
        assert!(is_directory_tag(0x9000_001A));
        assert!(!is_directory_tag(0xA000_000C));
    }
}
