//! Notifications: what users do to the namespace of the provider's sync root, as cfapi's
//! NOTIFY_* callbacks tell it (issue 14).
//!
//! A provider asks for the kinds it wants with [`SyncProvider::notifications`]; the driver
//! sends no other. Deletes, renames and dehydrations wait for the provider's verdict,
//! given through an [`Ack`]: [`Ack::allow`] lets the operation proceed, [`Ack::refuse`]
//! fails it with the error's status (one of the STATUS_CLOUD_FILE_* family reaches the
//! caller as it is; any other becomes STATUS_CLOUD_FILE_UNSUCCESSFUL), and a provider
//! that does neither within the root's timeout makes it fail with
//! STATUS_CLOUD_FILE_REQUEST_TIMEOUT. Completions, opens and closes only inform.
//!
//! [`SyncProvider::notifications`]: crate::SyncProvider::notifications

use std::sync::Arc;

use cloudflt_proto::msg::{
    self, AckNotify, CloseFlags, DehydrateCompletionFlags, DehydrateFlags, DeleteFlags, NotifyKind,
    OpenFlags, RenameFlags,
};

pub use cloudflt_proto::msg::{DehydrationReason, NotifySet};

use crate::connection::Shared;
use crate::{Error, RequestingProcess, SyncProvider};

/// What every notification says about the file.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NotifiedFile {
    /// The driver's id of the notification ([`Ack`] answers it).
    pub request_id: u64,
    /// The file's NTFS id.
    pub file_id: u64,
    /// Its size (0 for a directory).
    pub file_size: u64,
    /// Its path relative to the sync root, `\`-separated; with
    /// [`ConnectFlags::REQUIRE_FULL_FILE_PATH`](crate::ConnectFlags) its full NT path, and
    /// `path_is_full` set.
    pub path: String,
    /// Whether `path` is the full NT path.
    pub path_is_full: bool,
    /// The file identity of a placeholder (empty for an ordinary file of the root).
    pub identity: Vec<u8>,
    /// The sync root's identity, as registered.
    pub sync_root_identity: Vec<u8>,
    /// Whose operation it is.
    pub process: RequestingProcess,
}

impl NotifiedFile {
    fn of(m: &msg::Notify<'_>) -> Self {
        Self {
            request_id: m.request_id,
            file_id: m.file_id,
            file_size: m.file_size,
            path: m.path.chars_lossy().collect(),
            path_is_full: m.request_flags.contains(msg::RequestFlags::FULL_PATH),
            identity: m.identity.to_vec(),
            sync_root_identity: m.sync_root_identity.to_vec(),
            process: RequestingProcess::from_wire(
                m.requestor_pid,
                &m.requestor_image,
                m.request_flags,
                &m.requestor_command_line,
            ),
        }
    }
}

/// A file or directory is about to be deleted (NOTIFY_DELETE), or its delete undone.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeleteNotification {
    /// The file.
    pub file: NotifiedFile,
    /// It is a directory.
    pub is_directory: bool,
    /// The delete is being undone (the disposition cleared).
    pub is_undelete: bool,
}

/// A file or directory was deleted (NOTIFY_DELETE_COMPLETION).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeleteCompletion {
    /// The file, as it was.
    pub file: NotifiedFile,
}

/// A file or directory is about to be renamed (NOTIFY_RENAME).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RenameNotification {
    /// The file, under its current name.
    pub file: NotifiedFile,
    /// The new name's full NT path (it may lie outside the root).
    pub target_path: String,
    /// It is a directory.
    pub is_directory: bool,
    /// The current name is in the provider's sync root.
    pub source_in_scope: bool,
    /// The new name is in the provider's sync root.
    pub target_in_scope: bool,
}

/// A file or directory was renamed (NOTIFY_RENAME_COMPLETION).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RenameCompletion {
    /// The file, under its new name.
    pub file: NotifiedFile,
    /// Its former full NT path.
    pub source_path: String,
}

/// A placeholder is about to lose its local data (NOTIFY_DEHYDRATE).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DehydrateNotification {
    /// The file.
    pub file: NotifiedFile,
    /// Why.
    pub reason: DehydrationReason,
    /// Asked for by the system in the background rather than for a user.
    pub background: bool,
}

/// A dehydration ended (NOTIFY_DEHYDRATE_COMPLETION).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DehydrateCompletion {
    /// The file.
    pub file: NotifiedFile,
    /// Why it was asked for.
    pub reason: DehydrationReason,
    /// Asked for in the background.
    pub background: bool,
    /// The data was dropped (false: the dehydration failed or was refused).
    pub dehydrated: bool,
}

/// A file of the root was opened (NOTIFY_FILE_OPEN_COMPLETION).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct OpenCompletion {
    /// The file.
    pub file: NotifiedFile,
    /// Its placeholder data could not be read.
    pub placeholder_unknown: bool,
    /// It is a placeholder of a kind the driver does not support.
    pub placeholder_unsupported: bool,
}

/// The last handle of a file of the root was closed (NOTIFY_FILE_CLOSE_COMPLETION).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CloseCompletion {
    /// The file.
    pub file: NotifiedFile,
    /// It was deleted as it closed.
    pub deleted: bool,
}

/// A notification as the message loop hands it to the provider.
pub(crate) enum Notified {
    Delete(DeleteNotification),
    DeleteCompletion(DeleteCompletion),
    Rename(RenameNotification),
    RenameCompletion(RenameCompletion),
    Dehydrate(DehydrateNotification),
    DehydrateCompletion(DehydrateCompletion),
    Open(OpenCompletion),
    Close(CloseCompletion),
}

impl Notified {
    pub(crate) fn of(m: &msg::Notify<'_>) -> Option<Self> {
        let file = NotifiedFile::of(m);
        let target = || m.target_path.chars_lossy().collect::<String>();
        Some(match m.kind {
            NotifyKind::Delete => {
                let flags = DeleteFlags::from_bits(m.flags)?;
                Notified::Delete(DeleteNotification {
                    file,
                    is_directory: flags.contains(DeleteFlags::IS_DIRECTORY),
                    is_undelete: flags.contains(DeleteFlags::IS_UNDELETE),
                })
            }
            NotifyKind::DeleteCompletion => Notified::DeleteCompletion(DeleteCompletion { file }),
            NotifyKind::Rename => {
                let flags = RenameFlags::from_bits(m.flags)?;
                Notified::Rename(RenameNotification {
                    file,
                    target_path: target(),
                    is_directory: flags.contains(RenameFlags::IS_DIRECTORY),
                    source_in_scope: flags.contains(RenameFlags::SOURCE_IN_SCOPE),
                    target_in_scope: flags.contains(RenameFlags::TARGET_IN_SCOPE),
                })
            }
            NotifyKind::RenameCompletion => Notified::RenameCompletion(RenameCompletion {
                file,
                source_path: target(),
            }),
            NotifyKind::Dehydrate => {
                let flags = DehydrateFlags::from_bits(m.flags)?;
                Notified::Dehydrate(DehydrateNotification {
                    file,
                    reason: m.reason,
                    background: flags.contains(DehydrateFlags::BACKGROUND),
                })
            }
            NotifyKind::DehydrateCompletion => {
                let flags = DehydrateCompletionFlags::from_bits(m.flags)?;
                Notified::DehydrateCompletion(DehydrateCompletion {
                    file,
                    reason: m.reason,
                    background: flags.contains(DehydrateCompletionFlags::BACKGROUND),
                    dehydrated: flags.contains(DehydrateCompletionFlags::DEHYDRATED),
                })
            }
            NotifyKind::OpenCompletion => {
                let flags = OpenFlags::from_bits(m.flags)?;
                Notified::Open(OpenCompletion {
                    file,
                    placeholder_unknown: flags.contains(OpenFlags::PLACEHOLDER_UNKNOWN),
                    placeholder_unsupported: flags.contains(OpenFlags::PLACEHOLDER_UNSUPPORTED),
                })
            }
            NotifyKind::CloseCompletion => {
                let flags = CloseFlags::from_bits(m.flags)?;
                Notified::Close(CloseCompletion {
                    file,
                    deleted: flags.contains(CloseFlags::DELETED),
                })
            }
            _ => return None,
        })
    }
}

impl Notified {
    /// Calls the provider's callback for it; `ack` is the verdict channel of a blocking
    /// kind (dropped, it refuses).
    pub(crate) fn deliver(self, provider: &dyn SyncProvider, ack: Option<Ack>) {
        match (self, ack) {
            (Notified::Delete(n), Some(ack)) => provider.notify_delete(n, ack),
            (Notified::Rename(n), Some(ack)) => provider.notify_rename(n, ack),
            (Notified::Dehydrate(n), Some(ack)) => provider.notify_dehydrate(n, ack),
            (Notified::DeleteCompletion(n), _) => provider.delete_completed(n),
            (Notified::RenameCompletion(n), _) => provider.rename_completed(n),
            (Notified::DehydrateCompletion(n), _) => provider.dehydrate_completed(n),
            (Notified::Open(n), _) => provider.file_opened(n),
            (Notified::Close(n), _) => provider.file_closed(n),
            // A blocking kind without its ack cannot happen (`NotifyKind::blocks`).
            (Notified::Delete(_) | Notified::Rename(_) | Notified::Dehydrate(_), None) => {}
        }
    }
}

/// The verdict channel of a delete, rename or dehydration waiting for the provider.
///
/// Dropping an ack unanswered refuses the operation (STATUS_CLOUD_FILE_UNSUCCESSFUL): a
/// provider that lost the request, or panicked, keeps the file as it is rather than let
/// a change through it never judged.
#[derive(Debug)]
pub struct Ack {
    shared: Arc<Shared>,
    request_id: u64,
    answered: bool,
}

impl Ack {
    pub(crate) fn new(shared: Arc<Shared>, request_id: u64) -> Self {
        Self {
            shared,
            request_id,
            answered: false,
        }
    }

    /// The notification this ack answers.
    pub fn request_id(&self) -> u64 {
        self.request_id
    }

    /// Lets the operation proceed.
    pub fn allow(mut self) -> Result<(), Error> {
        self.answered = true;
        send(&self.shared, self.request_id, 0)
    }

    /// Refuses the operation: the caller gets `error`'s status if it is a
    /// STATUS_CLOUD_FILE_* status, STATUS_CLOUD_FILE_UNSUCCESSFUL otherwise, and nothing
    /// changes on disk.
    ///
    /// ```no_run
    /// # fn f(ack: cloudflt::notify::Ack) -> Result<(), cloudflt::Error> {
    /// // The cloud holds a lock on this file.
    /// ack.refuse(cloudflt::Error::InUse)?;
    /// # Ok(()) }
    /// ```
    pub fn refuse(mut self, error: Error) -> Result<(), Error> {
        self.answered = true;
        let status = error.status();
        send(
            &self.shared,
            self.request_id,
            if status < 0 {
                status
            } else {
                Error::Unsuccessful.status()
            },
        )
    }
}

impl Drop for Ack {
    fn drop(&mut self) {
        if !self.answered {
            let _ = send(&self.shared, self.request_id, Error::Unsuccessful.status());
        }
    }
}

fn send(shared: &Shared, request_id: u64, status: i32) -> Result<(), Error> {
    let message = AckNotify { request_id, status };
    let mut bytes = vec![0u8; message.encoded_len()];
    message.encode(&mut bytes)?;
    shared.request(&bytes, 0).map(drop)
}
