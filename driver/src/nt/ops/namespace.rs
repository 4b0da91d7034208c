//! What users do to the namespace of a sync root, as the provider hears of it (issue 14):
//! deletes (FileDispositionInformation and FileDispositionInformationEx, POSIX semantics
//! included) and renames (FileRenameInformation and FileRenameInformationEx), each
//! asking the provider for its verdict (`nt::notify`) when it asked for NOTIFY_DELETE or
//! NOTIFY_RENAME.
//!
//! Renames of placeholders also keep every placeholder where a provider serves it:
//!
//! - a file renamed out of every sync root (a move out, the recycle bin included) is
//!   hydrated fully first, in the renaming thread, and arrives as an ordinary file (its
//!   tag removed once the rename succeeded); if the hydration fails, the rename fails
//!   with its status and the file stays where it was;
//! - a rename into another registered root, and a directory placeholder renamed out of
//!   its root, fail with STATUS_NOT_SAME_DEVICE, as a move across volumes does: a
//!   placeholder is its root's and no other provider could serve it, and a directory's
//!   placeholders would be left where none is served. Callers that can copy (Explorer,
//!   MoveFileEx with MOVEFILE_COPY_ALLOWED) then copy and delete, which reads every file
//!   through its provider and leaves nothing unreachable.
//!
//! Scope, as cfapi's: placeholders — files and directories carrying cloudflt's tag —
//! under a sync root whose provider is connected ("a placeholder file or directory
//! under one of its sync roots is about to be deleted or undeleted"). Ordinary files of
//! a root, and placeholders with no provider connected, are deleted as NTFS lets them
//! (nobody is there to ask; a sync engine learns of them when it next looks).

use super::*;
use crate::nt::notify::{self, Subject};
use cloudflt_proto::Placeholder;
use cloudflt_proto::msg::{DehydrationReason, DeleteFlags, NotifyKind, RenameFlags};
use cloudflt_proto::registration::HardLinkPolicy;
use windows_sys::Win32::Foundation::{
    STATUS_CLOUD_FILE_IN_USE, STATUS_CLOUD_FILE_INCOMPATIBLE_HARDLINKS,
};

/// FileDispositionInformation, FileDispositionInformationEx.
const FILE_DISPOSITION_INFORMATION: i32 = 13;
pub(super) const FILE_DISPOSITION_INFORMATION_EX: i32 = 64;
/// FILE_DISPOSITION_DELETE in FileDispositionInformationEx's flags.
const FILE_DISPOSITION_DELETE: u32 = 0x1;

/// FILE_DISPOSITION_POSIX_SEMANTICS: the name goes at once, not at the last cleanup.
const FILE_DISPOSITION_POSIX_SEMANTICS: u32 = 0x2;
/// FILE_DISPOSITION_ON_CLOSE: only the handle's delete-on-close changes; nothing goes
/// until its cleanup.
const FILE_DISPOSITION_ON_CLOSE: u32 = 0x8;

/// A SET_INFORMATION that changes a file's disposition: sets it (delete) or clears it,
/// and with POSIX semantics or not.
#[derive(Clone, Copy)]
struct Disposition {
    delete: bool,
    posix: bool,
    /// Only the handle's delete-on-close changes (FILE_DISPOSITION_ON_CLOSE).
    on_close: bool,
}

/// The disposition a SET_INFORMATION sets or clears; `None` for any other class or a
/// buffer too short.
fn disposition_of(data: &FLT_CALLBACK_DATA) -> Option<Disposition> {
    // SAFETY: Iopb points at the operation's parameter block, valid during the operation.
    let iopb = unsafe { data.Iopb.cast::<FLT_IO_PARAMETER_BLOCK>().as_ref() }?;
    // SAFETY: IRP_MJ_SET_INFORMATION: the union holds its parameters.
    let set = unsafe { iopb.Parameters.SetFileInformation };
    if set.InfoBuffer.is_null() {
        return None;
    }
    match set.FileInformationClass {
        FILE_DISPOSITION_INFORMATION if set.Length >= 1 => Some(Disposition {
            // SAFETY: the caller's buffer of at least one byte (checked): DeleteFile.
            delete: unsafe { set.InfoBuffer.cast::<u8>().read() } != 0,
            posix: false,
            on_close: false,
        }),
        FILE_DISPOSITION_INFORMATION_EX if set.Length >= 4 => {
            // SAFETY: the caller's buffer of at least four bytes (checked): Flags; it
            // may be unaligned in a user's buffer.
            let flags = unsafe { set.InfoBuffer.cast::<u32>().read_unaligned() };
            let delete = flags & FILE_DISPOSITION_DELETE != 0;
            Some(Disposition {
                delete,
                posix: delete
                    && flags & FILE_DISPOSITION_POSIX_SEMANTICS != 0
                    && flags & FILE_DISPOSITION_ON_CLOSE == 0,
                on_close: flags & FILE_DISPOSITION_ON_CLOSE != 0,
            })
        }
        _ => None,
    }
}

/// The pre-operation's part for a delete (or undelete) of a placeholder whose provider
/// asked for NOTIFY_DELETE: `Some` with how the operation ends when the provider refused
/// or did not answer; `None` to let it go on. A POSIX-semantics delete removes the name
/// at once, so a provider that asked for NOTIFY_DELETE_COMPLETION is told when the
/// operation succeeded (the post-operation, `post_delete`), not at the last cleanup.
///
/// # Safety
/// FltMgr's arguments for the SET_INFORMATION pre-operation.
pub(super) unsafe fn pre_delete(
    data: *mut FLT_CALLBACK_DATA,
    objects: *const FLT_RELATED_OBJECTS,
    completion_context: *mut *mut core::ffi::c_void,
) -> Option<FLT_PREOP_CALLBACK_STATUS> {
    // SAFETY: the caller's contract.
    let data_ref = unsafe { data.as_mut() }?;
    // SAFETY: as above.
    let objects = unsafe { objects.as_ref() }?;
    if data_ref.Flags & FLTFL_CALLBACK_DATA_IRP_OPERATION == 0 {
        return None;
    }
    let disposition = disposition_of(data_ref)?;
    let delete = disposition.delete;
    if disposition.on_close
        && let Some(handle) = stream::HandleRef::get(objects.Instance, objects.FileObject)
    {
        // What the cleanup will do (a refusal below fails the request, and the flag
        // only makes the cleanup look: `post_cleanup_deletion` tells of a file only once
        // it is gone).
        handle
            .delete_on_close
            .store(delete, core::sync::atomic::Ordering::Relaxed);
    }
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
    let directory = attributes & FILE_ATTRIBUTE_DIRECTORY != 0;
    let told_after =
        disposition.posix && provider.notifications.wants(NotifyKind::DeleteCompletion);
    if !provider.notifications.wants(NotifyKind::Delete) {
        return told_after
            .then(|| after_deletion(completion_context, &fo, directory, name.units()))
            .flatten();
    }
    let mut flags = DeleteFlags::NONE;
    if directory {
        flags = flags.union(DeleteFlags::IS_DIRECTORY);
    }
    if !delete {
        flags = flags.union(DeleteFlags::IS_UNDELETE);
    }
    match ask_delete(&provider, &fo, name.units(), flags, data) {
        Ok(()) if told_after => after_deletion(completion_context, &fo, directory, name.units()),
        Ok(()) => None,
        Err(status) => Some(complete(data_ref, status)),
    }
}

/// Asks `provider` about the delete of the placeholder open as `file`, named `name`
/// (NOTIFY_DELETE with its id, size and identity, and `flags`), for the requestor of
/// `data`: `Ok` to go on, or the status the operation fails with.
fn ask_delete(
    provider: &crate::nt::providers::ProviderRef,
    file: &Fo,
    name: &[u16],
    flags: DeleteFlags,
    data: *mut FLT_CALLBACK_DATA,
) -> Result<(), NTSTATUS> {
    let directory = flags.contains(DeleteFlags::IS_DIRECTORY);
    let blob = file.reparse_point().ok().flatten();
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
        file_id: file.file_id().unwrap_or(0),
        file_size: if directory {
            0
        } else {
            file.size().unwrap_or(0)
        },
        name,
        target: &[],
        identity: identity_in(blob.as_ref()),
        requestor_pid: pid,
        requestor_image: image.units(),
        command_line: command_line.as_ref().map(CommandLine::units),
    };
    notify::ask(provider, &subject, data)
}

/// A deletion to tell the provider of once it has happened
/// (NOTIFY_DELETE_COMPLETION), handed from a pre-operation to its post-operation (or
/// carried in a rename's [`RenameAfter`]): the file's id, size and name (copied into
/// pool).
pub(super) struct Deletion {
    file_id: u64,
    file_size: u64,
    name: crate::nt::file::PoolBuf,
    name_len: usize,
}

const TAG_DELETION: u32 = crate::nt::pool::tag(b"CFdl");

impl Deletion {
    fn new(file_id: u64, file_size: u64, name: &[u16]) -> Option<PoolBox<Self>> {
        let deletion = Self {
            file_id,
            file_size,
            name: copy_units(name)?,
            name_len: name.len(),
        };
        PoolBox::try_new(deletion, TAG_DELETION)
    }

    /// Takes back the block a pre-operation handed over as its completion context.
    ///
    /// # Safety
    /// `context` is null or a block [`Deletion::new`] made and a pre-operation handed
    /// over, taken back once.
    unsafe fn take(context: *const core::ffi::c_void) -> Option<PoolBox<Self>> {
        let ptr = NonNull::new(context.cast_mut().cast::<Self>())?;
        // SAFETY: the caller's contract.
        Some(unsafe { PoolBox::from_raw(ptr, TAG_DELETION) })
    }

    /// Tells the provider of the root the file was in, if it asked.
    fn tell(&self, data: *const FLT_CALLBACK_DATA) {
        let name = pool_units(&self.name, self.name_len);
        let Some(provider) = providers::for_path(name) else {
            return;
        };
        if !provider.notifications.wants(NotifyKind::DeleteCompletion) {
            return;
        }
        // SAFETY: live callback data.
        let pid = unsafe { FltGetRequestorProcessId(data.cast_mut()) };
        let image = ImageName::of(data);
        notify::tell(
            &provider,
            &Subject {
                kind: NotifyKind::DeleteCompletion,
                flags: 0,
                reason: DehydrationReason::None,
                file_id: self.file_id,
                file_size: self.file_size,
                name,
                target: &[],
                identity: &[],
                requestor_pid: pid,
                requestor_image: image.units(),
                command_line: None,
            },
        );
    }
}

/// `len` units of a pool copy made by `copy_units`.
fn pool_units(buffer: &crate::nt::file::PoolBuf, len: usize) -> &[u16] {
    let bytes = buffer.as_slice();
    let len = len.min(bytes.len() / 2);
    // SAFETY: pool memory (16-byte aligned, so aligned for u16) of at least `len` units.
    unsafe { core::slice::from_raw_parts(bytes.as_ptr().cast::<u16>(), len) }
}

/// Synchronizes a POSIX delete so that its post-operation tells of it; without pool
/// the delete goes on untold.
fn after_deletion(
    completion_context: *mut *mut core::ffi::c_void,
    fo: &Fo,
    directory: bool,
    name: &[u16],
) -> Option<FLT_PREOP_CALLBACK_STATUS> {
    let size = if directory { 0 } else { fo.size().unwrap_or(0) };
    let deletion = Deletion::new(fo.file_id().unwrap_or(0), size, name)?;
    // SAFETY: FltMgr's out pointer for this pre-operation; the post-operation takes the
    // block back.
    unsafe { completion_context.write(PoolBox::into_raw(deletion).as_ptr().cast()) };
    Some(FLT_PREOP_SYNCHRONIZE)
}

/// The post-operation of a POSIX delete `pre_delete` synchronized: the name is gone if
/// it succeeded, and the provider is told (once: the file's last cleanup does not tell
/// again).
///
/// # Safety
/// `context` is the completion context `pre_delete` wrote for this operation.
pub(super) unsafe fn post_delete(
    data: &FLT_CALLBACK_DATA,
    objects: &FLT_RELATED_OBJECTS,
    context: *const core::ffi::c_void,
    draining: bool,
) {
    // SAFETY: the caller's contract.
    let Some(deletion) = (unsafe { Deletion::take(context) }) else {
        return;
    };
    // SAFETY: the status block of the completed operation.
    let status = unsafe { data.IoStatus.Anonymous.Status };
    if draining || !nt_success(status) {
        return;
    }
    if let Some(stream) = stream::get(objects.Instance, objects.FileObject) {
        stream
            .deletion_told
            .store(true, core::sync::atomic::Ordering::Relaxed);
    }
    deletion.tell(data);
}

/// Pre-cleanup of a file object with no stream context: when it is a directory
/// placeholder whose delete is pending (or that this open deletes on close), and its
/// root's provider asked for NOTIFY_DELETE_COMPLETION, the cleanup is synchronized so
/// that its post-operation (`post_cleanup_deletion`) can see whether the directory
/// went. (A placeholder file's is looked at from its stream's last cleanup,
/// `last_closed`.)
///
/// # Safety
/// FltMgr's arguments for the CLEANUP pre-operation.
pub(super) unsafe fn pre_cleanup_directory(
    data: *mut FLT_CALLBACK_DATA,
    objects: &FLT_RELATED_OBJECTS,
    completion_context: *mut *mut core::ffi::c_void,
) -> FLT_PREOP_CALLBACK_STATUS {
    // Only opens the driver took note of: in a sync root, or of a placeholder.
    let Some(handle) = stream::HandleRef::get(objects.Instance, objects.FileObject) else {
        return FLT_PREOP_SUCCESS_NO_CALLBACK;
    };
    let on_close = handle
        .delete_on_close
        .load(core::sync::atomic::Ordering::Relaxed);
    drop(handle);
    let fo = Fo {
        instance: objects.Instance,
        file_object: objects.FileObject,
    };
    let Ok((attributes, tag)) = fo.attribute_tag() else {
        return FLT_PREOP_SUCCESS_NO_CALLBACK;
    };
    if tag != cloudflt_proto::reparse::TAG
        || attributes & FILE_ATTRIBUTE_DIRECTORY == 0
        || !(on_close || fo.delete_pending().unwrap_or(false))
    {
        return FLT_PREOP_SUCCESS_NO_CALLBACK;
    }
    let Ok(name) = NameInfo::normalized(data) else {
        return FLT_PREOP_SUCCESS_NO_CALLBACK;
    };
    let wanted = providers::for_path(name.units())
        .is_some_and(|p| p.notifications.wants(NotifyKind::DeleteCompletion));
    let file_id = fo.file_id().unwrap_or(0);
    if !wanted || file_id == 0 {
        return FLT_PREOP_SUCCESS_NO_CALLBACK;
    }
    let Some(deletion) = Deletion::new(file_id, 0, name.units()) else {
        return FLT_PREOP_SUCCESS_NO_CALLBACK;
    };
    // SAFETY: FltMgr's out pointer for this pre-operation; the post-operation takes the
    // block back.
    unsafe { completion_context.write(PoolBox::into_raw(deletion).as_ptr().cast()) };
    FLT_PREOP_SYNCHRONIZE
}

/// Post-cleanup of a delete-pending placeholder, file or directory (synchronized:
/// PASSIVE_LEVEL, the closing thread): it went if its id no longer opens
/// (STATUS_INVALID_PARAMETER, NTFS's answer for an id no file has, or
/// STATUS_FILE_DELETED); then its provider is told. While other handles keep it, the id
/// still opens (or is delete pending) and the last of them tells.
///
/// # Safety
/// `context` is the completion context `pre_cleanup_directory` or `last_closed`'s
/// caller wrote.
pub(super) unsafe fn post_cleanup_deletion(
    data: &FLT_CALLBACK_DATA,
    objects: &FLT_RELATED_OBJECTS,
    context: *const core::ffi::c_void,
    draining: bool,
) {
    // SAFETY: the caller's contract.
    let Some(deletion) = (unsafe { Deletion::take(context) }) else {
        return;
    };
    if draining {
        return;
    }
    let gone = matches!(
        crate::nt::file::OwnedFile::open_by_id(
            objects.Filter,
            objects.Instance,
            deletion.file_id,
            FILE_READ_ATTRIBUTES,
        ),
        Err(windows_sys::Win32::Foundation::STATUS_INVALID_PARAMETER
            | windows_sys::Win32::Foundation::STATUS_FILE_DELETED)
    );
    if gone {
        deletion.tell(data);
    }
}

/// The provider's file identity in a placeholder's reparse data (empty when it does not
/// decode).
fn identity_in(blob: Option<&(crate::nt::file::PoolBuf, usize)>) -> &[u8] {
    blob.and_then(|(buffer, len)| buffer.as_slice().get(..*len))
        .and_then(|bytes| Placeholder::decode_reparse(bytes).ok())
        .map_or(&[][..], |p| p.identity)
}

/// FILE_ATTRIBUTE_DIRECTORY.
const FILE_ATTRIBUTE_DIRECTORY: u32 = 0x10;

/// FileRenameInformation, FileRenameInformationEx.
pub(super) const FILE_RENAME_INFORMATION: i32 = 10;
pub(super) const FILE_RENAME_INFORMATION_EX: i32 = 65;

/// What the post-operation of a rename has to do, handed over as its completion
/// context (a pool block the post-operation frees).
pub(super) struct RenameAfter {
    /// The file left every sync root: it becomes an ordinary file.
    moved_out: bool,
    /// The pre-operation marked the stream as on its way out (`hydrate::begin_move_out`):
    /// the post-operation ends the mark, whatever the outcome.
    moving: bool,
    /// The rename replaces a placeholder file whose provider asked for
    /// NOTIFY_DELETE_COMPLETION: what to tell of its deletion once the rename is done.
    replaced: Option<PoolBox<Deletion>>,
    /// The provider asked for NOTIFY_RENAME_COMPLETION: it is told, with the former
    /// name (copied here, in pool: `len` units).
    complete: bool,
    source: Option<crate::nt::file::PoolBuf>,
    source_len: usize,
}

const TAG_RENAME: u32 = crate::nt::pool::tag(b"CFrn");

/// FILE_RENAME_INFORMATION (x64 and arm64 layout): ReplaceIfExists or Flags at 0,
/// RootDirectory at 8, FileNameLength at 16, FileName at 20.
struct RenameTarget {
    /// ReplaceIfExists (FILE_RENAME_REPLACE_IF_EXISTS in the _EX classes' Flags).
    replace: bool,
    root_directory: windows_sys::Win32::Foundation::HANDLE,
    name: *const u16,
    name_bytes: u32,
}

/// The new name a SET_INFORMATION of one of `classes` gives (a rename's or a hard
/// link's: FILE_LINK_INFORMATION(_EX) has FILE_RENAME_INFORMATION's layout); `None`
/// for another class or a buffer too short.
fn rename_target_of(data: &FLT_CALLBACK_DATA, classes: [i32; 2]) -> Option<RenameTarget> {
    // SAFETY: Iopb points at the operation's parameter block, valid during the operation.
    let iopb = unsafe { data.Iopb.cast::<FLT_IO_PARAMETER_BLOCK>().as_ref() }?;
    // SAFETY: IRP_MJ_SET_INFORMATION: the union holds its parameters.
    let set = unsafe { iopb.Parameters.SetFileInformation };
    let class = set.FileInformationClass;
    if !classes.contains(&class) {
        return None;
    }
    if set.InfoBuffer.is_null() || (set.Length as usize) < 20 {
        return None;
    }
    let base = set.InfoBuffer.cast::<u8>();
    // The offsets are within the caller's buffer of at least 20 bytes (checked).
    let (root_at, length_at) = (base.wrapping_add(8), base.wrapping_add(16));
    // SAFETY: RootDirectory, inside the buffer; it may be unaligned in a user's buffer.
    let root_directory = unsafe {
        root_at
            .cast::<windows_sys::Win32::Foundation::HANDLE>()
            .read_unaligned()
    };
    // SAFETY: FileNameLength, inside the buffer, read unaligned likewise.
    let name_bytes = unsafe { length_at.cast::<u32>().read_unaligned() };
    if u64::from(name_bytes) > u64::from(set.Length) - 20 {
        return None;
    }
    let replace = if class == FILE_RENAME_INFORMATION || class == FILE_LINK_INFORMATION {
        // SAFETY: ReplaceIfExists, the first byte of the buffer (checked above).
        unsafe { base.read() != 0 }
    } else {
        // SAFETY: Flags, the first four bytes of the buffer (checked above), unaligned.
        unsafe { base.cast::<u32>().read_unaligned() & 0x1 != 0 }
    };
    Some(RenameTarget {
        replace,
        root_directory,
        // Within the caller's buffer (checked above).
        name: base.wrapping_add(20).cast::<u16>(),
        name_bytes,
    })
}

/// The pre-operation's part for a rename of a placeholder: `Some` with how the
/// operation goes on (refused, or synchronized so that the post-operation reverts a file
/// moved out of its root); `None` to let it go on untouched.
///
/// # Safety
/// FltMgr's arguments for the SET_INFORMATION pre-operation.
pub(super) unsafe fn pre_rename(
    data: *mut FLT_CALLBACK_DATA,
    objects: *const FLT_RELATED_OBJECTS,
    completion_context: *mut *mut core::ffi::c_void,
) -> Option<FLT_PREOP_CALLBACK_STATUS> {
    // SAFETY: the caller's contract.
    let data_ref = unsafe { data.as_mut() }?;
    // SAFETY: as above.
    let objects = unsafe { objects.as_ref() }?;
    if data_ref.Flags & FLTFL_CALLBACK_DATA_IRP_OPERATION == 0 {
        return None;
    }
    let target = rename_target_of(
        data_ref,
        [FILE_RENAME_INFORMATION, FILE_RENAME_INFORMATION_EX],
    )?;
    let fo = Fo {
        instance: objects.Instance,
        file_object: objects.FileObject,
    };
    // What the file is decides what protects it: unknown, the rename fails (it could be
    // a placeholder leaving its root) rather than go unchecked.
    let (attributes, tag) = match fo.attribute_tag() {
        Ok(found) => found,
        Err(status) => return Some(complete(data_ref, status)),
    };
    let placeholder = tag == cloudflt_proto::reparse::TAG;
    let directory = attributes & FILE_ATTRIBUTE_DIRECTORY != 0;
    if !placeholder && !target.replace && !directory {
        return None;
    }
    let destination = match NameInfo::destination(
        objects.Instance,
        objects.FileObject,
        target.root_directory,
        target.name,
        target.name_bytes,
    ) {
        Ok(name) => name,
        // The file system refuses such a target too (a missing parent, a bad name);
        // for a placeholder or a directory the rename fails with that status rather
        // than go on unchecked.
        Err(status) if placeholder || directory => return Some(complete(data_ref, status)),
        Err(_) => return None,
    };
    let source_id = fo.file_id().unwrap_or(0);
    if directory && let Some(refused) = directory_refused(data, destination.units()) {
        return Some(complete(data_ref, refused));
    }
    if !placeholder {
        if !target.replace {
            return None;
        }
        // An ordinary file put in place of a placeholder: only the one it replaces is
        // the provider's business.
        let replaced = match ask_replaced(data, objects, destination.units(), source_id) {
            Ok(replaced) => replaced?,
            Err(status) => return Some(complete(data_ref, status)),
        };
        return synchronize_after(
            completion_context,
            RenameAfter {
                moved_out: false,
                moving: false,
                replaced: Some(replaced),
                complete: false,
                source: None,
                source_len: 0,
            },
        );
    }
    let source = match NameInfo::normalized(data) {
        Ok(name) => name,
        Err(status) => return Some(complete(data_ref, status)),
    };
    let from = roots::root_of(source.units());
    let to = roots::root_of(destination.units());
    let moved_out = from.is_some() && to.is_none();
    if to.is_some() && from != to || moved_out && directory {
        return Some(complete(
            data_ref,
            windows_sys::Win32::Foundation::STATUS_NOT_SAME_DEVICE,
        ));
    }
    // The provider of the root the placeholder is in; with none connected nobody is
    // asked (a move out still needs one to fetch what is missing).
    let provider = providers::for_path(source.units());
    if let Some(provider) = &provider
        && provider.notifications.wants(NotifyKind::Rename)
    {
        let mut flags = RenameFlags::SOURCE_IN_SCOPE;
        if directory {
            flags = flags.union(RenameFlags::IS_DIRECTORY);
        }
        if syncroot::under(provider.root(), destination.units()).is_some() {
            flags = flags.union(RenameFlags::TARGET_IN_SCOPE);
        }
        let blob = fo.reparse_point().ok().flatten();
        let identity = identity_in(blob.as_ref());
        // SAFETY: live callback data.
        let pid = unsafe { FltGetRequestorProcessId(data) };
        let image = ImageName::of(data);
        let command_line = provider
            .connect_flags
            .contains(ConnectFlags::REQUIRE_PROCESS_INFO)
            .then(|| CommandLine::of_current(pid));
        let subject = Subject {
            kind: NotifyKind::Rename,
            flags: flags.bits(),
            reason: DehydrationReason::None,
            file_id: fo.file_id().unwrap_or(0),
            file_size: if directory { 0 } else { fo.size().unwrap_or(0) },
            name: source.units(),
            target: destination.units(),
            identity,
            requestor_pid: pid,
            requestor_image: image.units(),
            command_line: command_line.as_ref().map(CommandLine::units),
        };
        if let Err(status) = notify::ask(provider, &subject, data) {
            return Some(complete(data_ref, status));
        }
    }
    let replaced = if target.replace {
        match ask_replaced(data, objects, destination.units(), source_id) {
            Ok(replaced) => replaced,
            Err(status) => return Some(complete(data_ref, status)),
        }
    } else {
        None
    };
    let completion = provider
        .as_ref()
        .is_some_and(|p| p.notifications.wants(NotifyKind::RenameCompletion));
    if !moved_out && !completion && replaced.is_none() {
        return None;
    }
    let after = RenameAfter {
        moved_out,
        moving: false,
        replaced,
        complete: completion,
        source: copy_units(source.units()),
        source_len: source.units().len(),
    };
    let Some(mut after) = PoolBox::try_new(after, TAG_RENAME) else {
        // Nothing to revert with: the move out is refused rather than leave a
        // placeholder where no provider serves it.
        return moved_out.then(|| complete(data_ref, STATUS_CLOUD_FILE_INSUFFICIENT_RESOURCES));
    };
    if !moved_out {
        // SAFETY: FltMgr's out pointer for this pre-operation; the post-operation takes
        // the block back.
        unsafe { completion_context.write(PoolBox::into_raw(after).as_ptr().cast()) };
        return Some(FLT_PREOP_SYNCHRONIZE);
    }
    // A file leaving every root: all of it on disk first, or the rename fails.
    match hydrate_whole(data, objects, source.units()) {
        Ok(marked) => after.moving = marked,
        Err(status) => return Some(complete(data_ref, status)),
    }
    // SAFETY: FltMgr's out pointer for this pre-operation; the post-operation takes the
    // block back.
    unsafe { completion_context.write(PoolBox::into_raw(after).as_ptr().cast()) };
    Some(FLT_PREOP_SYNCHRONIZE)
}

/// Whether a directory's rename to `destination` must be refused, and with what:
///
/// - a directory that is a registered sync root or holds one: STATUS_ACCESS_DENIED. The
///   registration names the folder; moving it would leave every placeholder below
///   outside any root, served by nobody (cfapi's way to move a root is to unregister it
///   first);
/// - any directory of a sync root, placeholder or not, leaving that root (moved out, or
///   into another root): STATUS_NOT_SAME_DEVICE, as a move across volumes. A directory
///   may hold placeholders at any depth, and they would be left where no provider
///   serves them; Explorer and MoveFileEx(MOVEFILE_COPY_ALLOWED) then copy and delete,
///   reading every file through its provider.
///
/// `None` lets the rename go on (within its root, into a root from outside, or nowhere
/// near one).
fn directory_refused(data: *mut FLT_CALLBACK_DATA, destination: &[u16]) -> Option<NTSTATUS> {
    if roots::none_registered() {
        return None;
    }
    let source = match NameInfo::normalized(data) {
        Ok(name) => name,
        Err(status) => return Some(status),
    };
    if roots::any_at_or_below(source.units()) {
        return Some(windows_sys::Win32::Foundation::STATUS_ACCESS_DENIED);
    }
    let from = roots::root_of(source.units())?;
    (roots::root_of(destination) != Some(from))
        .then_some(windows_sys::Win32::Foundation::STATUS_NOT_SAME_DEVICE)
}

/// Hands `after` to the post-operation of a rename (synchronized); without pool for it
/// the rename goes on with nothing to tell afterwards (only completions are lost).
fn synchronize_after(
    completion_context: *mut *mut core::ffi::c_void,
    after: RenameAfter,
) -> Option<FLT_PREOP_CALLBACK_STATUS> {
    let after = PoolBox::try_new(after, TAG_RENAME)?;
    // SAFETY: FltMgr's out pointer for this pre-operation; the post-operation takes the
    // block back.
    unsafe { completion_context.write(PoolBox::into_raw(after).as_ptr().cast()) };
    Some(FLT_PREOP_SYNCHRONIZE)
}

/// A rename that replaces an existing name deletes the file there: when that is a
/// placeholder file whose provider asked for NOTIFY_DELETE, the provider is asked
/// first, as for any delete of it (its refusal or silence fails the rename, and nothing
/// moves). `Ok(Some(deletion))` when its provider asked to hear of the deletion after
/// (NOTIFY_DELETE_COMPLETION); `Ok(None)` when nothing is to be told (no file there, an
/// ordinary file, a directory — which NTFS never replaces — the file itself under
/// another case of its name, no provider, or the provider's own rename).
fn ask_replaced(
    data: *mut FLT_CALLBACK_DATA,
    objects: &FLT_RELATED_OBJECTS,
    destination: &[u16],
    source_id: u64,
) -> Result<Option<PoolBox<Deletion>>, NTSTATUS> {
    let Some(provider) = providers::for_path(destination) else {
        return Ok(None);
    };
    let wants = provider.notifications;
    if !wants.wants(NotifyKind::Delete) && !wants.wants(NotifyKind::DeleteCompletion) {
        return Ok(None);
    }
    // SAFETY: live callback data.
    let pid = unsafe { FltGetRequestorProcessId(data) };
    if pid as usize == provider.pid {
        return Ok(None);
    }
    let there = match crate::nt::file::OwnedFile::open(
        objects.Filter,
        objects.Instance,
        destination,
        FILE_READ_ATTRIBUTES,
        windows_sys::Wdk::Storage::FileSystem::FILE_OPEN,
        crate::nt::file::Kind::File,
        0,
    ) {
        Ok(file) => file,
        // Nothing there (or a directory): nothing of the provider's is replaced.
        Err(_) => return Ok(None),
    };
    let (_, tag) = there.attribute_tag()?;
    if tag != cloudflt_proto::reparse::TAG {
        return Ok(None);
    }
    let file_id = there.file_id().unwrap_or(0);
    // The file itself under another case of its name (a case-only rename), or another
    // of its own hard links: nothing is deleted.
    if file_id == source_id && file_id != 0 {
        return Ok(None);
    }
    if wants.wants(NotifyKind::Delete) {
        ask_delete(&provider, &there, destination, DeleteFlags::NONE, data)?;
    }
    if !wants.wants(NotifyKind::DeleteCompletion) {
        return Ok(None);
    }
    Ok(Deletion::new(file_id, 0, destination))
}

/// Brings every byte of the placeholder file `objects.FileObject` (named `name`) onto
/// disk, in the requesting thread, before it becomes reachable where no provider serves
/// it: STATUS_SUCCESS once all of it is present and recorded (at once when it already
/// was: no provider is needed then), or the fetch's failure. Data streamed under
/// STREAMING_ALLOWED is recorded too, so that the last close does not drop it from under
/// the new name. A file with no stream context (opened before the driver loaded) gets
/// one from its reparse data first; one that cannot be had fails with why, rather than
/// let a placeholder through unhydrated. A thread of the System process (a file server,
/// a kernel component) is never made to wait on the provider: when data is missing its
/// operation fails at once (STATUS_CLOUD_FILE_NOT_SUPPORTED).
///
/// `Ok(true)`: the stream is marked as on its way out (`hydrate::begin_move_out`: no
/// dehydration, no growth until the caller's post-operation ends the mark);
/// `Ok(false)`: not a placeholder file, nothing to keep.
fn hydrate_whole(
    data: *mut FLT_CALLBACK_DATA,
    objects: &FLT_RELATED_OBJECTS,
    name: &[u16],
) -> Result<bool, NTSTATUS> {
    /// Fetches in a row that a dehydration may undo before the file is marked.
    const ATTEMPTS: usize = 3;
    let fo = Fo {
        instance: objects.Instance,
        file_object: objects.FileObject,
    };
    let stream = match stream::attach(objects.Filter, fo) {
        Ok(Some(stream)) => stream,
        // Not a placeholder file after all: nothing is missing.
        Ok(None) => return Ok(false),
        Err(status) => return Err(status),
    };
    // SAFETY: live callback data.
    let requestor_pid = unsafe { FltGetRequestorProcessId(data) };
    for _ in 0..ATTEMPTS {
        let status = hydrate::keep_streamed(&stream);
        if !nt_success(status) {
            return Err(status);
        }
        if hydrate::begin_move_out(&stream) {
            return Ok(true);
        }
        if requestor_pid == crate::engine::visibility::SYSTEM_PID {
            return Err(windows_sys::Win32::Foundation::STATUS_CLOUD_FILE_NOT_SUPPORTED);
        }
        let size = hydrate::with_held(|held| stream.with_state(held, |s| s.file_size));
        let status = hydrate::ensure_range(
            &hydrate::Target {
                stream: &stream,
                name,
                requestor_pid,
                requestor_image: ImageName::of(data).units(),
                data,
                file_object: objects.FileObject as usize,
            },
            Range {
                start: 0,
                end: size,
            },
        );
        if !nt_success(status) {
            return Err(status);
        }
    }
    // Dehydrated again after every fetch: someone keeps dropping it.
    Err(STATUS_CLOUD_FILE_IN_USE)
}

/// FileLinkInformation, FileLinkInformationEx.
pub(super) const FILE_LINK_INFORMATION: i32 = 11;
pub(super) const FILE_LINK_INFORMATION_EX: i32 = 72;

/// The pre-operation's part for a new hard link (FileLinkInformation(Ex),
/// CreateHardLink) whose file or new name lies in a sync root, under the root's
/// hard-link policy (cfapi's CF_HARDLINK_POLICY): `Some` with the status that refuses it,
/// `None` to let it go on.
///
/// - DEFAULT (NONE): no hard link in a sync root, from it or into it
///   (STATUS_CLOUD_FILE_INCOMPATIBLE_HARDLINKS), whoever asks, the provider included: a
///   root's files have one name each.
/// - ALLOWED: links within the root, and a name in the root for a file from outside,
///   go on; a name outside every root for a placeholder of the root is given only once
///   the file is wholly on disk (hydrated in the linking thread; the fetch's failure
///   fails the link), so no path outside a root ever reaches missing data. Such a file
///   is not dehydrated again while it has more than one name (`placeholder`).
/// - A link between two sync roots is refused under either policy (each root's files
///   are its provider's).
///
/// # Safety
/// FltMgr's arguments for the SET_INFORMATION pre-operation.
/// Issue 15: a rename or hard link whose new name lies beneath a directory that is not
/// populated first has it populated, as the open of its target does on Windows (the I/O
/// manager opens the target's directory with SL_OPEN_TARGET_DIRECTORY, a create of that
/// name beneath it): a name the provider has there is then found, so a rename without
/// replace fails with STATUS_OBJECT_NAME_COLLISION instead of hiding the provider's
/// entry. `Some(status)` when the population failed (the operation fails with it).
/// Exempt as for opens: the root's own provider, the System process, kernel mode.
///
/// # Safety
/// FltMgr's arguments for the SET_INFORMATION pre-operation.
pub(super) unsafe fn populate_target(
    data: *mut FLT_CALLBACK_DATA,
    objects: *const FLT_RELATED_OBJECTS,
) -> Option<NTSTATUS> {
    if roots::none_registered() {
        return None;
    }
    // SAFETY: the caller's contract.
    let data_ref = unsafe { data.as_ref() }?;
    // SAFETY: as above.
    let objects = unsafe { objects.as_ref() }?;
    if data_ref.Flags & FLTFL_CALLBACK_DATA_IRP_OPERATION == 0 || data_ref.RequestorMode == 0 {
        return None;
    }
    let target = rename_target_of(
        data_ref,
        [FILE_RENAME_INFORMATION, FILE_RENAME_INFORMATION_EX],
    )
    .or_else(|| rename_target_of(data_ref, [FILE_LINK_INFORMATION, FILE_LINK_INFORMATION_EX]))?;
    // SAFETY: live callback data.
    let pid = unsafe { FltGetRequestorProcessId(data) };
    if pid == crate::engine::visibility::SYSTEM_PID {
        return None;
    }
    // A target whose directory does not exist is not normalized: the file system refuses
    // the operation for that reason itself.
    let destination = NameInfo::destination(
        objects.Instance,
        objects.FileObject,
        target.root_directory,
        target.name,
        target.name_bytes,
    )
    .ok()?;
    let population = roots::policies(destination.units())?.population;
    if population != cloudflt_proto::PopulationPolicy::Full {
        return None;
    }
    let result = match providers::for_path(destination.units()) {
        Some(provider) if provider.pid == pid as usize => return None,
        Some(provider) => crate::nt::populate::ensure_path(
            &provider,
            objects.Instance,
            destination.units(),
            crate::nt::populate::Asking { data, pid },
        ),
        None => {
            let units = destination.units();
            let cut = units.iter().rposition(|u| *u == u16::from(b'\\'))?;
            let parent = units.get(..cut)?;
            roots::root_of(parent)?;
            super::dir_control::unpopulated_without_provider(objects, parent)
        }
    };
    result.err()
}

pub(super) unsafe fn pre_link(
    data: *mut FLT_CALLBACK_DATA,
    objects: *const FLT_RELATED_OBJECTS,
    completion_context: *mut *mut core::ffi::c_void,
) -> Option<FLT_PREOP_CALLBACK_STATUS> {
    // SAFETY: the caller's contract.
    let data_ref = unsafe { data.as_mut() }?;
    // SAFETY: as above.
    let objects = unsafe { objects.as_ref() }?;
    if data_ref.Flags & FLTFL_CALLBACK_DATA_IRP_OPERATION == 0 {
        return None;
    }
    let target = rename_target_of(data_ref, [FILE_LINK_INFORMATION, FILE_LINK_INFORMATION_EX])?;
    let destination = match NameInfo::destination(
        objects.Instance,
        objects.FileObject,
        target.root_directory,
        target.name,
        target.name_bytes,
    ) {
        Ok(name) => name,
        // The file system would refuse it too; let it say why.
        Err(_) => return None,
    };
    let source = match NameInfo::normalized(data) {
        Ok(name) => name,
        // Where the file is cannot be told: a link that may touch a root is refused.
        Err(status) => return Some(complete(data_ref, status)),
    };
    let from = roots::root_of(source.units());
    let to = roots::root_of(destination.units());
    let refuse = Some(STATUS_CLOUD_FILE_INCOMPATIBLE_HARDLINKS);
    let fo = Fo {
        instance: objects.Instance,
        file_object: objects.FileObject,
    };
    let foreign = || {
        // A placeholder reached through a name outside every root (one a link out of
        // another root made) belongs to that root: no root takes it in.
        fo.attribute_tag()
            .map_or(true, |(_, tag)| tag == cloudflt_proto::reparse::TAG)
    };
    let verdict = match (from, to) {
        (None, None) => None,
        (Some(a), Some(b)) if a != b => refuse,
        (None, Some(_)) if foreign() => refuse,
        _ => {
            let in_root = if from.is_some() {
                &source
            } else {
                &destination
            };
            match roots::policies(in_root.units()) {
                Some(p) if p.hard_links.contains(HardLinkPolicy::ALLOWED) => None,
                // Unregistered since `root_of`: outside every root now.
                None => None,
                Some(_) => refuse,
            }
        }
    };
    if let Some(status) = verdict {
        return Some(complete(data_ref, status));
    }
    // Unregistered since `root_of` leaves `policies` None: the link is let go above.
    let link_out = from.is_some() && to.is_none() && roots::policies(source.units()).is_some();
    let replacing = target.replace && to.is_some();
    if !link_out && !replacing {
        return None;
    }
    let after = RenameAfter {
        moved_out: false,
        moving: false,
        replaced: None,
        complete: false,
        source: None,
        source_len: 0,
    };
    let Some(mut after) = PoolBox::try_new(after, TAG_RENAME) else {
        return Some(complete(data_ref, STATUS_CLOUD_FILE_INSUFFICIENT_RESOURCES));
    };
    if link_out {
        // Out of the root: all of the file on disk first, and kept there until the
        // link is made (the post-operation ends the mark).
        match hydrate_whole(data, objects, source.units()) {
            Ok(marked) => after.moving = marked,
            Err(status) => return Some(complete(data_ref, status)),
        }
    } else {
        // A link that replaces a placeholder deletes it, as a replacing rename does.
        match ask_replaced(
            data,
            objects,
            destination.units(),
            fo.file_id().unwrap_or(0),
        ) {
            Ok(replaced) => after.replaced = replaced,
            Err(status) => return Some(complete(data_ref, status)),
        }
    }
    if !after.moving && after.replaced.is_none() {
        return None;
    }
    // SAFETY: FltMgr's out pointer for this pre-operation; the post-operation takes the
    // block back.
    unsafe { completion_context.write(PoolBox::into_raw(after).as_ptr().cast()) };
    Some(FLT_PREOP_SYNCHRONIZE)
}

/// `units` copied into pool (`None` when empty or out of pool: the completion then
/// carries no source).
fn copy_units(units: &[u16]) -> Option<crate::nt::file::PoolBuf> {
    let mut buffer = crate::nt::file::PoolBuf::zeroed(units.len().checked_mul(2)?)?;
    for (pair, unit) in buffer.as_mut_slice().chunks_exact_mut(2).zip(units) {
        pair.copy_from_slice(&unit.to_le_bytes());
    }
    Some(buffer)
}

/// The post-operation of a rename `pre_rename` synchronized (PASSIVE_LEVEL, the
/// renaming thread), with its context: a file that left every sync root, all present,
/// becomes an ordinary file (if that fails the rename stands and the file keeps its tag
/// with all its data, and the caller learns the failure); a provider that asked is told
/// the rename is done. `draining`: the instance is going away, only the context is freed.
///
/// # Safety
/// `context` is the completion context `pre_rename` wrote for this operation.
pub(super) unsafe fn post_rename(
    data: &mut FLT_CALLBACK_DATA,
    objects: &FLT_RELATED_OBJECTS,
    context: *const core::ffi::c_void,
    draining: bool,
) {
    let Some(ptr) = NonNull::new(context.cast_mut().cast::<RenameAfter>()) else {
        return;
    };
    // SAFETY: the block `pre_rename` handed over, taken back once.
    let after = unsafe { PoolBox::from_raw(ptr, TAG_RENAME) };
    // Ends the pre-operation's mark when this function returns, after the revert.
    let moving = MoveOut(
        after
            .moving
            .then(|| stream::get(objects.Instance, objects.FileObject))
            .flatten(),
    );
    // SAFETY: the status block of the completed operation.
    let status = unsafe { data.IoStatus.Anonymous.Status };
    if draining || !nt_success(status) {
        return;
    }
    if let Some(replaced) = &after.replaced {
        replaced.tell(data);
    }
    if after.moved_out
        && let Some(stream) = stream::get(objects.Instance, objects.FileObject)
        && let Err(failed) = crate::nt::placeholder::revert_moved_out(&stream)
    {
        data.IoStatus.Anonymous.Status = failed;
        // Still a placeholder, wholly on disk, where no provider serves it: the mark
        // stays for the stream's life, so that no dehydration or growth ever takes
        // data from it there.
        moving.keep();
    }
    if !after.complete {
        return;
    }
    let Ok(name) = NameInfo::normalized(data) else {
        return;
    };
    let source = after
        .source
        .as_ref()
        .map_or(&[][..], |b| pool_units(b, after.source_len));
    // The provider of the root the file was in (it is still there, unless it moved out).
    let Some(provider) = providers::for_path(source) else {
        return;
    };
    let fo = Fo {
        instance: objects.Instance,
        file_object: objects.FileObject,
    };
    let directory = fo
        .attribute_tag()
        .is_ok_and(|(attributes, _)| attributes & FILE_ATTRIBUTE_DIRECTORY != 0);
    // SAFETY: live callback data.
    let pid = unsafe { FltGetRequestorProcessId(data) };
    let image = ImageName::of(data);
    notify::tell(
        &provider,
        &Subject {
            kind: NotifyKind::RenameCompletion,
            flags: 0,
            reason: DehydrationReason::None,
            file_id: fo.file_id().unwrap_or(0),
            file_size: if directory { 0 } else { fo.size().unwrap_or(0) },
            name: name.units(),
            target: source,
            identity: &[],
            requestor_pid: pid,
            requestor_image: image.units(),
            command_line: None,
        },
    );
}

/// Ends a `hydrate::begin_move_out` mark when dropped.
struct MoveOut(Option<stream::StreamRef>);

impl MoveOut {
    /// Leaves the mark in place (the stream reference is released as usual).
    fn keep(mut self) {
        drop(self.0.take());
    }
}

impl Drop for MoveOut {
    fn drop(&mut self) {
        if let Some(stream) = &self.0 {
            hydrate::end_move_out(stream);
        }
    }
}

/// Access rights that make an open one cfapi reports (opened "for read/write/delete
/// access"): FILE_READ_DATA, FILE_WRITE_DATA, FILE_APPEND_DATA, FILE_EXECUTE, DELETE,
/// GENERIC_ALL / WRITE / READ (mapped already by the I/O manager, kept for safety).
const DATA_ACCESS: u32 =
    0x1 | 0x2 | 0x4 | 0x20 | 0x0001_0000 | 0x1000_0000 | 0x4000_0000 | 0x8000_0000;

/// A placeholder file of `provider`'s root was opened (post-create, PASSIVE_LEVEL): if
/// the open reads, writes or deletes and the provider asked, it hears of it
/// (NOTIFY_FILE_OPEN_COMPLETION). The provider's own opens are not reported. Returns the
/// provider's key when it asked to hear of the open's close, 0 otherwise.
pub(super) fn opened(
    data: &FLT_CALLBACK_DATA,
    provider: &crate::nt::providers::ProviderRef,
    name: &[u16],
    stream: &crate::nt::context::StreamContext,
    image: &[u16],
) -> usize {
    let wants = provider.notifications;
    if !wants.wants(NotifyKind::OpenCompletion) && !wants.wants(NotifyKind::CloseCompletion) {
        return 0;
    }
    // SAFETY: live callback data.
    let pid = unsafe { FltGetRequestorProcessId(data) };
    if pid as usize == provider.pid {
        return 0;
    }
    // SAFETY: Iopb points at the operation's parameter block, valid during the operation.
    let Some(iopb) = (unsafe { data.Iopb.cast::<FLT_IO_PARAMETER_BLOCK>().as_ref() }) else {
        return 0;
    };
    // SAFETY: IRP_MJ_CREATE: the union holds its parameters.
    let security = unsafe { iopb.Parameters.Create.SecurityContext };
    // SAFETY: the I/O manager's security context for the create, live during it.
    let access = unsafe { security.as_ref() }.map_or(0, |c| c.DesiredAccess);
    if access & DATA_ACCESS == 0 {
        return 0;
    }
    if wants.wants(NotifyKind::OpenCompletion) {
        let size = hydrate::with_held(|held| stream.with_state(held, |s| s.file_size));
        notify::tell(
            provider,
            &Subject {
                kind: NotifyKind::OpenCompletion,
                flags: 0,
                reason: DehydrationReason::None,
                file_id: stream.file_id,
                file_size: size,
                name,
                target: &[],
                identity: &[],
                requestor_pid: pid,
                requestor_image: image,
                command_line: None,
            },
        );
    }
    if wants.wants(NotifyKind::CloseCompletion) {
        provider.key()
    } else {
        0
    }
}

/// An open `opened` reported is closing (pre-cleanup, PASSIVE_LEVEL): its provider, if
/// still connected, hears of it (NOTIFY_FILE_CLOSE_COMPLETION), with DELETED when this
/// is the file's last open and it is to be deleted.
pub(super) fn closed(
    data: *const FLT_CALLBACK_DATA,
    objects: &FLT_RELATED_OBJECTS,
    owner: usize,
    stream: &crate::nt::context::StreamContext,
    last: bool,
    delete_on_close: bool,
) {
    let Some(provider) = NonNull::new(owner as *mut crate::nt::providers::Provider)
        .and_then(crate::nt::providers::by_cookie)
    else {
        return;
    };
    let Ok(name) = NameInfo::normalized(data) else {
        return;
    };
    let fo = Fo {
        instance: objects.Instance,
        file_object: objects.FileObject,
    };
    let deleted = last && (delete_on_close || fo.delete_pending().unwrap_or(false));
    let size = hydrate::with_held(|held| stream.with_state(held, |s| s.file_size));
    // SAFETY: live callback data.
    let pid = unsafe { FltGetRequestorProcessId(data.cast_mut()) };
    let image = ImageName::of(data);
    notify::tell(
        &provider,
        &Subject {
            kind: NotifyKind::CloseCompletion,
            flags: if deleted {
                cloudflt_proto::msg::CloseFlags::DELETED.bits()
            } else {
                0
            },
            reason: DehydrationReason::None,
            file_id: stream.file_id,
            file_size: size,
            name: name.units(),
            target: &[],
            identity: &[],
            requestor_pid: pid,
            requestor_image: image.units(),
            command_line: None,
        },
    );
}

/// The last open of a placeholder file is closing (pre-cleanup, PASSIVE_LEVEL): if its
/// delete is pending the file system deletes it now, and the root's provider, if it
/// asked, hears the delete is done (NOTIFY_DELETE_COMPLETION).
///
/// `delete_on_close`: this open deletes the file at its cleanup. `Some` with what to
/// tell once the file is gone (`post_cleanup_deletion` looks), when its provider asked.
pub(super) fn last_closed(
    data: *const FLT_CALLBACK_DATA,
    objects: &FLT_RELATED_OBJECTS,
    stream: &crate::nt::context::StreamContext,
    delete_on_close: bool,
) -> Option<PoolBox<Deletion>> {
    let fo = Fo {
        instance: objects.Instance,
        file_object: objects.FileObject,
    };
    if !delete_on_close && !fo.delete_pending().unwrap_or(false) {
        return None;
    }
    if stream
        .deletion_told
        .load(core::sync::atomic::Ordering::Relaxed)
    {
        return None;
    }
    // With other names left only one name goes (and which one is not this open's to
    // say): the placeholder itself is not deleted.
    if fo.links().unwrap_or(1) > 1 {
        return None;
    }
    let name = NameInfo::normalized(data).ok()?;
    let provider = providers::for_path(name.units())?;
    if !provider.notifications.wants(NotifyKind::DeleteCompletion) {
        return None;
    }
    let size = hydrate::with_held(|held| stream.with_state(held, |s| s.file_size));
    Deletion::new(stream.file_id, size, name.units())
}

/// FILE_DELETE_ON_CLOSE in a create's options.
const FILE_DELETE_ON_CLOSE: u32 = 0x1000;

/// Whether a create asks for FILE_DELETE_ON_CLOSE.
pub(super) fn deletes_on_close(data: &FLT_CALLBACK_DATA) -> bool {
    // SAFETY: Iopb points at the operation's parameter block, valid during the operation.
    let Some(iopb) = (unsafe { data.Iopb.cast::<FLT_IO_PARAMETER_BLOCK>().as_ref() }) else {
        return false;
    };
    // SAFETY: IRP_MJ_CREATE: the union holds its parameters.
    let options = unsafe { iopb.Parameters.Create.Options } & 0x00FF_FFFF;
    options & FILE_DELETE_ON_CLOSE != 0
}

/// A create that opened placeholder `stream` with FILE_DELETE_ON_CLOSE is a delete: its
/// provider, if it asked, is asked first (post-create, PASSIVE_LEVEL, the opener's
/// thread). `Some` with the status the create fails with when it refused or was silent;
/// the caller then undoes the open without deleting anything.
pub(super) fn delete_on_close_refused(
    data: &FLT_CALLBACK_DATA,
    objects: &FLT_RELATED_OBJECTS,
    stream: &crate::nt::context::StreamContext,
) -> Option<NTSTATUS> {
    if !deletes_on_close(data) {
        return None;
    }
    let placeholder = hydrate::with_held(|held| stream.with_state(held, |s| s.is_placeholder()));
    if !placeholder {
        return None;
    }
    let name = NameInfo::normalized(data).ok()?;
    let provider = providers::for_path(name.units())?;
    if !provider.notifications.wants(NotifyKind::Delete) {
        return None;
    }
    // SAFETY: live callback data.
    let pid = unsafe { FltGetRequestorProcessId(data) };
    let image = ImageName::of(data);
    let command_line = provider
        .connect_flags
        .contains(ConnectFlags::REQUIRE_PROCESS_INFO)
        .then(|| CommandLine::of_current(pid));
    let (size, identity) = hydrate::with_held(|held| {
        stream.with_state(held, |s| {
            (
                s.file_size,
                crate::nt::context::identity_buffer(s.identity()),
            )
        })
    });
    let identity = identity.ok().flatten();
    let subject = Subject {
        kind: NotifyKind::Delete,
        flags: DeleteFlags::NONE.bits(),
        reason: DehydrationReason::None,
        file_id: stream.file_id,
        file_size: size,
        name: name.units(),
        target: &[],
        identity: identity
            .as_ref()
            .map_or(&[][..], crate::nt::file::PoolBuf::as_slice),
        requestor_pid: pid,
        requestor_image: image.units(),
        command_line: command_line.as_ref().map(CommandLine::units),
    };
    let _ = objects;
    notify::ask(&provider, &subject, data).err()
}
