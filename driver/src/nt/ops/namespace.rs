//! What users do to the namespace of a sync root, as the provider hears of it (issue 14):
//! the pre-operation side of deletes (FileDispositionInformation and
//! FileDispositionInformationEx, POSIX semantics included), which asks the provider for
//! its verdict (`nt::notify`) when it asked for NOTIFY_DELETE.
//!
//! Scope, as cfapi's: placeholders — files and directories carrying cloudflt's tag —
//! under a sync root whose provider is connected ("a placeholder file or directory
//! under one of its sync roots is about to be deleted or undeleted"). Ordinary files of
//! a root, and placeholders with no provider connected, are deleted as NTFS lets them
//! (nobody is there to ask; a sync engine learns of them when it next looks).

use super::*;
use crate::nt::notify::{self, Subject};
use cloudflt_proto::Placeholder;
use cloudflt_proto::msg::{DehydrationReason, DeleteFlags, NotifyKind};

/// FileDispositionInformation, FileDispositionInformationEx.
const FILE_DISPOSITION_INFORMATION: i32 = 13;
const FILE_DISPOSITION_INFORMATION_EX: i32 = 64;
/// FILE_DISPOSITION_DELETE in FileDispositionInformationEx's flags.
const FILE_DISPOSITION_DELETE: u32 = 0x1;

/// Whether a SET_INFORMATION sets (`Some(true)`) or clears (`Some(false)`) a file's
/// disposition; `None` for any other class or a buffer too short.
fn disposition_of(data: &FLT_CALLBACK_DATA) -> Option<bool> {
    // SAFETY: Iopb points at the operation's parameter block, valid during the operation.
    let iopb = unsafe { data.Iopb.cast::<FLT_IO_PARAMETER_BLOCK>().as_ref() }?;
    // SAFETY: IRP_MJ_SET_INFORMATION: the union holds its parameters.
    let set = unsafe { iopb.Parameters.SetFileInformation };
    if set.InfoBuffer.is_null() {
        return None;
    }
    match set.FileInformationClass {
        FILE_DISPOSITION_INFORMATION if set.Length >= 1 => {
            // SAFETY: the caller's buffer of at least one byte (checked): DeleteFile.
            Some(unsafe { set.InfoBuffer.cast::<u8>().read() } != 0)
        }
        FILE_DISPOSITION_INFORMATION_EX if set.Length >= 4 => {
            // SAFETY: the caller's buffer of at least four bytes (checked): Flags; it
            // may be unaligned in a user's buffer.
            let flags = unsafe { set.InfoBuffer.cast::<u32>().read_unaligned() };
            Some(flags & FILE_DISPOSITION_DELETE != 0)
        }
        _ => None,
    }
}

/// The pre-operation's part for a delete (or undelete) of a placeholder whose provider
/// asked for NOTIFY_DELETE: `Some` with how the operation ends when the provider refused
/// or did not answer; `None` to let it go on.
///
/// # Safety
/// FltMgr's arguments for the SET_INFORMATION pre-operation.
pub(super) unsafe fn pre_delete(
    data: *mut FLT_CALLBACK_DATA,
    objects: *const FLT_RELATED_OBJECTS,
) -> Option<FLT_PREOP_CALLBACK_STATUS> {
    // SAFETY: the caller's contract.
    let data_ref = unsafe { data.as_mut() }?;
    // SAFETY: as above.
    let objects = unsafe { objects.as_ref() }?;
    if data_ref.Flags & FLTFL_CALLBACK_DATA_IRP_OPERATION == 0 {
        return None;
    }
    let delete = disposition_of(data_ref)?;
    let fo = Fo {
        instance: objects.Instance,
        file_object: objects.FileObject,
    };
    let (attributes, tag) = fo.attribute_tag().ok()?;
    if tag != cloudflt_proto::reparse::TAG {
        return None;
    }
    let name = NameInfo::normalized(data).ok()?;
    // No provider connected: nobody to ask, the delete proceeds.
    let provider = providers::for_path(name.units())?;
    if !provider.notifications.wants(NotifyKind::Delete) {
        return None;
    }
    let directory = attributes & FILE_ATTRIBUTE_DIRECTORY != 0;
    let mut flags = DeleteFlags::NONE;
    if directory {
        flags = flags.union(DeleteFlags::IS_DIRECTORY);
    }
    if !delete {
        flags = flags.union(DeleteFlags::IS_UNDELETE);
    }
    let blob = fo.reparse_point().ok().flatten();
    let identity = blob
        .as_ref()
        .and_then(|(buffer, len)| buffer.as_slice().get(..*len))
        .and_then(|bytes| Placeholder::decode_reparse(bytes).ok())
        .map_or(&[][..], |p| p.identity);
    // SAFETY: live callback data.
    let pid = unsafe { FltGetRequestorProcessId(data) };
    let image = ImageName::of(data);
    let command_line = provider
        .connect_flags
        .contains(ConnectFlags::REQUIRE_PROCESS_INFO)
        .then(|| CommandLine::of_current(pid));
    let subject = Subject {
        kind: NotifyKind::Delete,
        flags: flags.bits(),
        reason: DehydrationReason::None,
        file_id: fo.file_id().unwrap_or(0),
        file_size: if directory { 0 } else { fo.size().unwrap_or(0) },
        name: name.units(),
        target: &[],
        identity,
        requestor_pid: pid,
        requestor_image: image.units(),
        command_line: command_line.as_ref().map(CommandLine::units),
    };
    match notify::ask(&provider, &subject, data) {
        Ok(()) => None,
        Err(status) => Some(complete(data_ref, status)),
    }
}

/// FILE_ATTRIBUTE_DIRECTORY.
const FILE_ATTRIBUTE_DIRECTORY: u32 = 0x10;
