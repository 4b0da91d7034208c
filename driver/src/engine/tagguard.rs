//! Only the driver sets or removes cloudflt's reparse point.
//!
//! A user-mode FSCTL_SET_REPARSE_POINT(_EX) or FSCTL_DELETE_REPARSE_POINT that names
//! cloudflt's tag — as the new tag or as the tag it expects to replace — is refused
//! before NTFS sees it. The driver's own tagging (FltTagFile) is issued below the filter
//! and never reaches this check. Refusing at the FSCTL closes the path cldflt's parser
//! bugs were reached by: attacker-written reparse data that the driver would later parse.
//!
//! Pure over the FSCTL's input bytes: a buffer too short to carry a tag is left to NTFS,
//! which rejects it.

/// `FSCTL_SET_REPARSE_POINT`.
pub const FSCTL_SET_REPARSE_POINT: u32 = 0x0009_00A4;
/// `FSCTL_SET_REPARSE_POINT_EX`.
pub const FSCTL_SET_REPARSE_POINT_EX: u32 = 0x0009_040C;
/// `FSCTL_DELETE_REPARSE_POINT`.
pub const FSCTL_DELETE_REPARSE_POINT: u32 = 0x0009_00AC;

/// Offset of the reparse buffer inside REPARSE_DATA_BUFFER_EX (Flags, ExistingReparseTag,
/// ExistingReparseGuid, Reserved).
const EX_HEADER: usize = 32;

fn tag_at(input: &[u8], offset: usize) -> Option<u32> {
    let bytes = input.get(offset..offset.checked_add(4)?)?;
    let mut word = [0u8; 4];
    word.copy_from_slice(bytes);
    Some(u32::from_le_bytes(word))
}

/// Whether an FSCTL with this code and input would set, replace or delete `tag`.
pub fn touches_tag(code: u32, input: &[u8], tag: u32) -> bool {
    match code {
        FSCTL_SET_REPARSE_POINT | FSCTL_DELETE_REPARSE_POINT => tag_at(input, 0) == Some(tag),
        FSCTL_SET_REPARSE_POINT_EX => {
            tag_at(input, 4) == Some(tag) || tag_at(input, EX_HEADER) == Some(tag)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    const TAG: u32 = 0x1000_0C1F;

    fn buffer(tag: u32) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&tag.to_le_bytes());
        b.extend_from_slice(&[0; 20]);
        b
    }

    #[test]
    fn set_and_delete_with_our_tag_are_caught() {
        assert!(touches_tag(FSCTL_SET_REPARSE_POINT, &buffer(TAG), TAG));
        assert!(touches_tag(FSCTL_DELETE_REPARSE_POINT, &buffer(TAG), TAG));
        assert!(!touches_tag(FSCTL_SET_REPARSE_POINT, &buffer(0x1234), TAG));
        assert!(
            !touches_tag(0x0009_00A8, &buffer(TAG), TAG),
            "GET is not guarded"
        );
    }

    #[test]
    fn the_ex_form_is_caught_as_new_tag_or_as_the_tag_it_replaces() {
        let mut ex = Vec::new();
        ex.extend_from_slice(&0u32.to_le_bytes());
        ex.extend_from_slice(&TAG.to_le_bytes()); // ExistingReparseTag
        ex.extend_from_slice(&[0; 24]);
        ex.extend_from_slice(&buffer(0x1234));
        assert!(touches_tag(FSCTL_SET_REPARSE_POINT_EX, &ex, TAG));
        let mut ex2 = Vec::new();
        ex2.extend_from_slice(&[0; 32]);
        ex2.extend_from_slice(&buffer(TAG));
        assert!(touches_tag(FSCTL_SET_REPARSE_POINT_EX, &ex2, TAG));
        ex2.truncate(33);
        assert!(!touches_tag(FSCTL_SET_REPARSE_POINT_EX, &ex2, TAG));
    }

    #[test]
    fn short_buffers_are_left_to_ntfs() {
        assert!(!touches_tag(FSCTL_SET_REPARSE_POINT, &[0x1f, 0x0c], TAG));
        assert!(!touches_tag(FSCTL_SET_REPARSE_POINT, &[], TAG));
    }
}
