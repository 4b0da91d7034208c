//! cloudflt's reparse tag and GUID: what marks a file on NTFS as a cloudflt placeholder.
//!
//! The tag is a third-party tag: bit 31 (Microsoft) clear, so NTFS requires a
//! REPARSE_GUID_DATA_BUFFER carrying [`GUID`]; bit 28 (D) set, so a tagged directory may
//! have children; the reserved bits 16-27 zero. Production builds need a tag Microsoft
//! assigns; this value is unassigned and fine for development.

/// cloudflt's reparse tag.
pub const TAG: u32 = 0x1000_0C1F;

/// The GUID every cloudflt reparse point carries, in REPARSE_GUID_DATA_BUFFER byte order
/// ({c10df17e-5a1d-4c0e-9f3b-6c6f7564666c}).
pub const GUID: [u8; 16] = [
    0x7e, 0xf1, 0x0d, 0xc1, 0x1d, 0x5a, 0x0e, 0x4c, 0x9f, 0x3b, 0x6c, 0x6f, 0x75, 0x64, 0x66, 0x6c,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tag_is_a_directory_capable_third_party_tag() {
        assert_eq!(TAG & 0x8000_0000, 0, "Microsoft bit must be clear");
        assert_ne!(
            TAG & 0x1000_0000,
            0,
            "D bit lets directories be placeholders"
        );
        assert_eq!(TAG & 0x0FFF_0000, 0, "reserved bits must be zero");
        assert_eq!(TAG & 0x2000_0000, 0, "not a name surrogate");
    }
}
