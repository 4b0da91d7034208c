//! What a provider registers once for its sync root (cfapi's CfRegisterSyncRoot), as
//! opposed to what it says each time it connects ([`SyncRootConfig`](crate::SyncRootConfig)).
//!
//! Registration is being built (issue 13): this module holds the parts that do not need
//! the driver yet.

use md5::{Digest, Md5};

/// The provider id cfapi's documentation promises when a registration names none: a GUID
/// made from the MD5 hash of the provider name.
///
/// The documentation does not say which bytes are hashed nor how the hash becomes a GUID.
/// Chosen here: the name's UTF-16LE bytes (how Windows holds the string), made a
/// name-based UUID as RFC 4122 does for MD5 (version 3 in the high nibble of byte 6, the
/// variant bits 10 in byte 8), returned in Windows' GUID byte order (Data1, Data2 and
/// Data3 little-endian). The same name always gives the same id; the id is only ever
/// compared, never parsed.
///
/// ```
/// let id = cloudflt::registration::provider_id_from_name("Mirror");
/// assert_eq!(id, cloudflt::registration::provider_id_from_name("Mirror"));
/// assert_ne!(id, cloudflt::registration::provider_id_from_name("mirror"));
/// ```
pub fn provider_id_from_name(name: &str) -> [u8; 16] {
    let mut hasher = Md5::new();
    for unit in name.encode_utf16() {
        hasher.update(unit.to_le_bytes());
    }
    let mut uuid: [u8; 16] = hasher.finalize().into();
    uuid[6] = (uuid[6] & 0x0f) | 0x30;
    uuid[8] = (uuid[8] & 0x3f) | 0x80;
    // RFC 4122 bytes are big-endian; a GUID stores its first three fields little-endian.
    let mut guid = uuid;
    guid[..4].reverse();
    guid[4..6].reverse();
    guid[6..8].reverse();
    guid
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_of_a_name_is_its_md5_as_a_version_3_guid() {
        // Computed independently (Python: hashlib.md5 of the UTF-16LE name, then
        // uuid.UUID(bytes=…) with the version and variant set, .bytes_le):
        // 05f695ea-1a75-39c5-add5-29df149821c5.
        assert_eq!(
            provider_id_from_name("Mirror"),
            [
                234, 149, 246, 5, 117, 26, 197, 57, 173, 213, 41, 223, 20, 152, 33, 197
            ]
        );
    }
}
