//! Placeholder operations any process may ask for, as the sync root's registration
//! allows: cfapi's CfDehydratePlaceholder and CfSetInSyncState called by an application
//! or a system component rather than the root's provider (which uses its
//! [`Connection`](crate::Connection)).
//!
//! Each call opens a management connection (any authenticated user may), names the file
//! by its path, and the driver decides in the caller's context:
//!
//! - [`dehydrate`] is allowed only under a root registered with
//!   [`HydrationModifiers::AUTO_DEHYDRATION_ALLOWED`], and only for an in-sync file
//!   with nothing modified ([`Error::NotInSync`]) that is neither pinned nor always
//!   full; otherwise [`Error::DehydrationDisallowed`]. No provider need be running.
//! - [`set_in_sync`] is allowed only under a root whose management policy is
//!   [`ManagementPolicy::UPDATE_UNRESTRICTED`], otherwise
//!   [`Error::ConnectedProviderOnly`]. Marking in sync this way never forgets what a
//!   user modified: only the provider, which uploads it, can.
//!
//! Both fail with [`Error::NotUnderSyncRoot`] outside every registered root and with
//! [`Error::AccessDenied`] for a file the caller may not open.
//!
//! [`HydrationModifiers::AUTO_DEHYDRATION_ALLOWED`]: crate::registration::HydrationModifiers
//! [`ManagementPolicy::UPDATE_UNRESTRICTED`]: crate::registration::ManagementPolicy

use std::ops::RangeBounds;
use std::path::Path;

use cloudflt_proto::Utf16;
use cloudflt_proto::msg::{DehydrateByPath, SetInSyncByPath, SetInSyncFlags};

use crate::config;
use crate::error::Error;
use cloudflt_proto::placeholder::MAX_BLOB_SIZE;

use crate::placeholder::{PlaceholderInfo, op_range};
use crate::registration::{Control, encode};

/// Drops `range` of the placeholder at `path` (an absolute path) from the local disk,
/// as cfapi's CfDehydratePlaceholder does for a process that is not the provider.
///
/// ```no_run
/// // Free the space of a file the cloud holds (its root allows auto-dehydration).
/// cloudflt::app::dehydrate(r"C:\Cloud\video.mp4", ..)?;
/// # Ok::<(), cloudflt::Error>(())
/// ```
pub fn dehydrate(path: impl AsRef<Path>, range: impl RangeBounds<u64>) -> Result<(), Error> {
    let nt: Vec<u16> = config::nt_path(path.as_ref(), "path")?
        .encode_utf16()
        .collect();
    let control = Control::connect()?;
    let message = DehydrateByPath {
        request_id: control.next_request_id(),
        path: Utf16::from_units(&nt),
        range: op_range(range)?,
    };
    let bytes = encode(message.encoded_len(), |out| message.encode(out))?;
    control.request(&bytes, 0).map(drop)
}

/// Marks the placeholder at `path` (an absolute path) in sync or not, as cfapi's
/// CfSetInSyncState does for a process that is not the provider; returns its state
/// afterwards. With `if_unchanged`, a file whose change counter moved on since that value
/// (see [`PlaceholderInfo::changes`]) is left alone and the call fails with
/// [`Error::NotInSync`].
///
/// ```no_run
/// let info = cloudflt::app::set_in_sync(r"C:\Cloud\notes.txt", false, None)?;
/// assert!(!info.in_sync);
/// # Ok::<(), cloudflt::Error>(())
/// ```
pub fn set_in_sync(
    path: impl AsRef<Path>,
    in_sync: bool,
    if_unchanged: Option<u64>,
) -> Result<PlaceholderInfo, Error> {
    let nt: Vec<u16> = config::nt_path(path.as_ref(), "path")?
        .encode_utf16()
        .collect();
    let mut flags = SetInSyncFlags::NOT_IN_SYNC;
    if in_sync {
        flags = flags.union(SetInSyncFlags::IN_SYNC);
    }
    if if_unchanged.is_some() {
        flags = flags.union(SetInSyncFlags::IF_UNCHANGED);
    }
    let control = Control::connect()?;
    let message = SetInSyncByPath {
        request_id: control.next_request_id(),
        path: Utf16::from_units(&nt),
        flags,
        expected_changes: if_unchanged.unwrap_or(0),
    };
    let bytes = encode(message.encoded_len(), |out| message.encode(out))?;
    let blob = control.request(&bytes, MAX_BLOB_SIZE)?;
    PlaceholderInfo::decode(&blob)
}
