//! cloudflt's reparse data for a stream: the state encoded into the versioned blob
//! (`cloudflt_proto::Placeholder`) that FltTagFile writes.

use cloudflt_proto::{Placeholder, PlaceholderFlags, RangeList};
use windows_sys::Win32::Foundation::{
    NTSTATUS, STATUS_CLOUD_FILE_INSUFFICIENT_RESOURCES, STATUS_CLOUD_FILE_INVALID_REQUEST,
};

use super::file::PoolBuf;

/// A new placeholder's blob (nothing modified, no change yet), encoded into a pool
/// buffer (it may be up to 16 KiB).
pub(crate) fn encode_blob(
    flags: PlaceholderFlags,
    size: u64,
    identity: &[u8],
    ranges: RangeList<'_>,
) -> Result<(PoolBuf, usize), NTSTATUS> {
    encode(&Placeholder {
        flags,
        file_size: size,
        identity,
        ranges,
        modified: RangeList::EMPTY,
        changes: 0,
    })
}

/// `placeholder`'s blob, encoded into a pool buffer.
pub(crate) fn encode(placeholder: &Placeholder<'_>) -> Result<(PoolBuf, usize), NTSTATUS> {
    let mut blob = PoolBuf::zeroed(placeholder.encoded_len())
        .ok_or(STATUS_CLOUD_FILE_INSUFFICIENT_RESOURCES)?;
    let len = placeholder
        .encode(blob.as_mut_slice())
        .map_err(|_| STATUS_CLOUD_FILE_INVALID_REQUEST)?;
    Ok((blob, len))
}
