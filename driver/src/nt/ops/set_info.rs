//! SET_INFORMATION: a user's change of a placeholder's end of file (FileEndOfFileInformation,
//! or FileAllocationInformation below end of file, which truncates) is an edit
//! (hydrate::edit): the unit holding the new (truncation) or old (extension) end of file is
//! fetched first when it is missing and that end is not on a unit boundary, nothing the
//! truncation discards is ever fetched, and the post-operation records the new size —
//! extension adds present, modified zeros — and clears in-sync before the caller sees it.
//! The cache manager's own AdvanceOnly end-of-file updates (paging I/O) pass: they never
//! move end of file.
//!
//! FileBasicInformation: a change the sync root's in-sync policy tracks (cfapi's
//! CF_INSYNC_POLICY: the creation or last-write time set to another value, the
//! read-only, hidden or system attribute set or cleared, each for files or for
//! directories) takes the placeholder out of sync. The pre-operation compares the
//! request with the file's current basic information and synchronizes only a tracked
//! change; the post-operation, once the file system applied it, clears in-sync and
//! counts the change in the reparse data before the caller sees success. The policy is
//! the one the open was made under (its stream-handle context). With
//! PRESERVE_INSYNC_FOR_SYNC_ENGINE a provider's own process changes them freely.

use super::*;
use crate::nt::context::StreamHandleContext;
use crate::nt::hydrate::{Edit, Ended};
use crate::nt::status::STATUS_CLOUD_FILE_NOT_A_CLOUD_FILE;
use cloudflt_proto::InSyncPolicy;
use windows_sys::Wdk::Storage::FileSystem::FILE_BASIC_INFORMATION;
use windows_sys::Win32::Foundation::STATUS_SUCCESS;
use windows_sys::Win32::Storage::FileSystem::{
    FILE_ATTRIBUTE_HIDDEN, FILE_ATTRIBUTE_READONLY, FILE_ATTRIBUTE_SYSTEM,
};

/// FILE_INFORMATION_CLASS values.
const FILE_BASIC_INFORMATION_CLASS: i32 = 4;
const FILE_ALLOCATION_INFORMATION: i32 = 19;
const FILE_END_OF_FILE_INFORMATION: i32 = 20;

/// The end of file a SET_INFORMATION asks for, given the current `size`; `None` when it
/// does not move end of file (another class, an allocation at or above end of file, a
/// buffer too short, a negative size).
fn new_size_of(data: &FLT_CALLBACK_DATA, size: u64) -> Option<u64> {
    // SAFETY: Iopb points at the operation's parameter block, valid during the operation.
    let iopb = unsafe { data.Iopb.cast::<FLT_IO_PARAMETER_BLOCK>().as_ref() }?;
    // SAFETY: IRP_MJ_SET_INFORMATION: the union holds its parameters.
    let set = unsafe { iopb.Parameters.SetFileInformation };
    let class = set.FileInformationClass;
    if class != FILE_ALLOCATION_INFORMATION && class != FILE_END_OF_FILE_INFORMATION {
        return None;
    }
    if (set.Length as usize) < core::mem::size_of::<i64>() || set.InfoBuffer.is_null() {
        return None;
    }
    // SAFETY: the caller's buffer of at least 8 bytes (checked), a LARGE_INTEGER for
    // both classes; it may be unaligned in a user's buffer.
    let value = unsafe { set.InfoBuffer.cast::<i64>().read_unaligned() };
    let value = u64::try_from(value).ok()?;
    if class == FILE_ALLOCATION_INFORMATION {
        // NTFS truncates end of file to an allocation below it, and leaves it otherwise.
        return (value < size).then_some(value);
    }
    Some(value)
}

/// The policy bits a FileBasicInformation request `new` trips, given the file's
/// `current` basic information: the creation and last-write times it sets to another
/// value (0 leaves a time alone; -1 and -2 only stop or resume its updates), and the
/// read-only, hidden and system attributes it sets or clears (attributes of 0 are left
/// alone). `directory` picks the directory bits.
pub(crate) fn tracked_bits(
    new: &FILE_BASIC_INFORMATION,
    current: &FILE_BASIC_INFORMATION,
    directory: bool,
) -> InSyncPolicy {
    let changed_time = |new: i64, current: i64| new > 0 && new != current;
    let flipped = if new.FileAttributes == 0 {
        0
    } else {
        new.FileAttributes ^ current.FileAttributes
    };
    // (changed, the file bit, the directory bit): cfapi lays most directory bits 4 above
    // their file bits, but not the last-write time's (0x100 and 0x200).
    let triggers = [
        (
            changed_time(new.CreationTime, current.CreationTime),
            InSyncPolicy::TRACK_FILE_CREATION_TIME,
            InSyncPolicy::TRACK_DIRECTORY_CREATION_TIME,
        ),
        (
            changed_time(new.LastWriteTime, current.LastWriteTime),
            InSyncPolicy::TRACK_FILE_LAST_WRITE_TIME,
            InSyncPolicy::TRACK_DIRECTORY_LAST_WRITE_TIME,
        ),
        (
            flipped & FILE_ATTRIBUTE_READONLY != 0,
            InSyncPolicy::TRACK_FILE_READONLY_ATTRIBUTE,
            InSyncPolicy::TRACK_DIRECTORY_READONLY_ATTRIBUTE,
        ),
        (
            flipped & FILE_ATTRIBUTE_HIDDEN != 0,
            InSyncPolicy::TRACK_FILE_HIDDEN_ATTRIBUTE,
            InSyncPolicy::TRACK_DIRECTORY_HIDDEN_ATTRIBUTE,
        ),
        (
            flipped & FILE_ATTRIBUTE_SYSTEM != 0,
            InSyncPolicy::TRACK_FILE_SYSTEM_ATTRIBUTE,
            InSyncPolicy::TRACK_DIRECTORY_SYSTEM_ATTRIBUTE,
        ),
    ];
    triggers
        .into_iter()
        .filter(|(changed, _, _)| *changed)
        .fold(InSyncPolicy::NONE, |bits, (_, file, dir)| {
            bits.union(if directory { dir } else { file })
        })
}

/// What the post-operation of a synchronized FileBasicInformation does, as bits of its
/// completion context (a value, not a pointer): take the file out of sync (a tracked
/// change), and dehydrate it (UNPINNED newly set by a user, see
/// `placeholder::dehydrate_unpinned`).
const AFTER_TRACKED: usize = 0x1;
const AFTER_UNPINNED: usize = 0x2;

/// FILE_ATTRIBUTE_UNPINNED.
const FILE_ATTRIBUTE_UNPINNED: u32 = 0x0010_0000;

/// The pre-operation's part for FileBasicInformation: `Some` when the request is a
/// change the open's in-sync policy tracks, or sets UNPINNED on a placeholder file for
/// a process other than a provider, synchronized so that its post-operation takes the
/// file out of sync or dehydrates it (`AFTER_*` in the completion context).
///
/// # Safety
/// FltMgr's arguments for this pre-operation.
unsafe fn pre_basic(
    data: *mut FLT_CALLBACK_DATA,
    objects: *const FLT_RELATED_OBJECTS,
    completion_context: *mut *mut core::ffi::c_void,
) -> Option<FLT_PREOP_CALLBACK_STATUS> {
    // SAFETY: the caller's contract.
    let data_ref = unsafe { data.as_ref() }?;
    // SAFETY: as above.
    let objects = unsafe { objects.as_ref() }?;
    if data_ref.Flags & FLTFL_CALLBACK_DATA_IRP_OPERATION == 0 {
        return None;
    }
    // SAFETY: Iopb points at the operation's parameter block, valid during the operation.
    let iopb = unsafe { data_ref.Iopb.cast::<FLT_IO_PARAMETER_BLOCK>().as_ref() }?;
    // SAFETY: IRP_MJ_SET_INFORMATION: the union holds its parameters.
    let set = unsafe { iopb.Parameters.SetFileInformation };
    if set.FileInformationClass != FILE_BASIC_INFORMATION_CLASS
        || (set.Length as usize) < core::mem::size_of::<FILE_BASIC_INFORMATION>()
        || set.InfoBuffer.is_null()
    {
        return None;
    }
    let handle = stream::HandleRef::get(objects.Instance, objects.FileObject)?;
    // SAFETY: the caller's buffer of at least the structure's size (checked); it may be
    // unaligned in a user's buffer.
    let new = unsafe {
        set.InfoBuffer
            .cast::<FILE_BASIC_INFORMATION>()
            .read_unaligned()
    };
    let fo = Fo {
        instance: objects.Instance,
        file_object: objects.FileObject,
    };
    let directory = match stream::get(objects.Instance, objects.FileObject) {
        Some(stream) => {
            let placeholder =
                hydrate::with_held(|held| stream.with_state(held, |s| s.is_placeholder()));
            if !placeholder {
                return None;
            }
            false
        }
        // No stream state: a directory of a sync root, a placeholder or not (the
        // post-operation looks).
        None => true,
    };
    let current = fo.basic().ok()?;
    let mut after = 0;
    if tracked_policy(&handle, data)
        .is_some_and(|policy| policy.intersects(tracked_bits(&new, &current, directory)))
    {
        after |= AFTER_TRACKED;
    }
    // SAFETY: live callback data.
    let pid = unsafe { FltGetRequestorProcessId(data) };
    if !directory
        && new.FileAttributes & FILE_ATTRIBUTE_UNPINNED != 0
        && current.FileAttributes & FILE_ATTRIBUTE_UNPINNED == 0
        && !(handle.by_provider && providers::is_provider(pid as usize))
    {
        after |= AFTER_UNPINNED;
    }
    if after == 0 {
        return None;
    }
    // SAFETY: FltMgr's out pointer for this pre-operation; a value, never dereferenced.
    unsafe { completion_context.write(after as *mut core::ffi::c_void) };
    Some(FLT_PREOP_SYNCHRONIZE)
}

/// The in-sync policy that applies to a change through the open `handle` by the
/// requestor of `data`; `None` when it tracks nothing.
fn tracked_policy(
    handle: &StreamHandleContext,
    data: *mut FLT_CALLBACK_DATA,
) -> Option<InSyncPolicy> {
    let policy = handle.in_sync;
    if !policy.intersects(InSyncPolicy::TRACK_ALL) {
        return None;
    }
    if policy.contains(InSyncPolicy::PRESERVE_INSYNC_FOR_SYNC_ENGINE) {
        // SAFETY: live callback data.
        let pid = unsafe { FltGetRequestorProcessId(data) };
        if handle.by_provider && providers::is_provider(pid as usize) {
            return None;
        }
    }
    Some(policy)
}

/// The post-operation's part for a FileBasicInformation change `pre_basic`
/// synchronized, at PASSIVE_LEVEL in the requestor's thread, with its `AFTER_*` bits.
fn post_basic(data: &mut FLT_CALLBACK_DATA, objects: &FLT_RELATED_OBJECTS, after: usize) {
    // SAFETY: the status block of the completed operation.
    let status = unsafe { data.IoStatus.Anonymous.Status };
    if !nt_success(status) {
        return;
    }
    if after & AFTER_TRACKED != 0 {
        post_tracked(data, objects);
    }
    if after & AFTER_UNPINNED != 0
        && let Ok(name) = NameInfo::normalized(data)
    {
        // SAFETY: the live file object of the operation (FltMgr's related objects).
        let idle = unsafe { objects.FileObject.as_ref() }
            .is_some_and(|fo| !fo.ReadAccess && !fo.WriteAccess)
            && stream::HandleRef::get(objects.Instance, objects.FileObject)
                .is_some_and(|h| h.counted);
        // The attribute is set whatever becomes of the dehydration (a file not in sync,
        // a provider's veto, a root without AUTO_DEHYDRATION_ALLOWED keep the data).
        let _ = crate::nt::placeholder::dehydrate_unpinned(objects.Filter, name.units(), idle);
    }
}

/// A tracked change went through: the file is out of sync.
fn post_tracked(data: &mut FLT_CALLBACK_DATA, objects: &FLT_RELATED_OBJECTS) {
    let fo = Fo {
        instance: objects.Instance,
        file_object: objects.FileObject,
    };
    let recorded = match stream::get(objects.Instance, objects.FileObject) {
        Some(stream) => hydrate::tracked_change(&stream, &fo),
        None => match crate::nt::placeholder::directory_mark(&fo, false, None) {
            Ok(()) => STATUS_SUCCESS,
            // An ordinary directory of the sync root: nothing is in sync or not.
            Err(STATUS_CLOUD_FILE_NOT_A_CLOUD_FILE) => STATUS_SUCCESS,
            Err(status) => status,
        },
    };
    if !nt_success(recorded) {
        // The attributes are set, the record could not say so: the caller learns it.
        data.IoStatus.Anonymous.Status = recorded;
    }
}

/// The information class of a SET_INFORMATION.
fn class_of(data: &FLT_CALLBACK_DATA) -> Option<i32> {
    // SAFETY: Iopb points at the operation's parameter block, valid during the operation.
    let iopb = unsafe { data.Iopb.cast::<FLT_IO_PARAMETER_BLOCK>().as_ref() }?;
    // SAFETY: IRP_MJ_SET_INFORMATION: the union holds its parameters.
    Some(unsafe { iopb.Parameters.SetFileInformation }.FileInformationClass)
}

/// PreOperation of SET_INFORMATION.
///
/// # Safety
/// Called by FltMgr with valid callback data.
pub(crate) unsafe extern "system" fn pre_set_information(
    data: *mut FLT_CALLBACK_DATA,
    objects: *const FLT_RELATED_OBJECTS,
    completion_context: *mut *mut core::ffi::c_void,
) -> FLT_PREOP_CALLBACK_STATUS {
    // SAFETY: FltMgr's arguments for this pre-operation.
    if let Some(status) = unsafe { pre_basic(data, objects, completion_context) } {
        return status;
    }
    // SAFETY: as above.
    if let Some(status) = unsafe { super::namespace::pre_delete(data, objects, completion_context) }
    {
        return status;
    }
    // SAFETY: as above.
    if let Some(status) = unsafe { super::namespace::populate_target(data, objects) } {
        // SAFETY: FltMgr's live callback data, ours to complete in the pre-operation.
        if let Some(d) = unsafe { data.as_mut() } {
            return complete(d, status);
        }
    }
    // SAFETY: as above.
    if let Some(status) = unsafe { super::namespace::pre_link(data, objects, completion_context) } {
        return status;
    }
    // SAFETY: as above.
    if let Some(status) = unsafe { super::namespace::pre_rename(data, objects, completion_context) }
    {
        return status;
    }
    // SAFETY: FltMgr's callback data and related objects for the call.
    let Some((data_ref, objects, stream)) = (unsafe { placeholder_io(data, objects) }) else {
        return FLT_PREOP_SUCCESS_NO_CALLBACK;
    };
    let (placeholder, corrupt, size) = hydrate::with_held(|held| {
        stream.with_state(held, |s| (s.is_placeholder(), s.is_corrupt(), s.file_size))
    });
    if !placeholder || data_ref.Flags & FLTFL_CALLBACK_DATA_IRP_OPERATION == 0 {
        return FLT_PREOP_SUCCESS_NO_CALLBACK;
    }
    // SAFETY: Iopb is valid during the operation.
    let irp_flags = unsafe { (*data_ref.Iopb.cast::<FLT_IO_PARAMETER_BLOCK>()).IrpFlags };
    if irp_flags & IRP_PAGING_IO != 0 {
        return FLT_PREOP_SUCCESS_NO_CALLBACK;
    }
    let Some(new_size) = new_size_of(data_ref, size) else {
        return FLT_PREOP_SUCCESS_NO_CALLBACK;
    };
    if corrupt {
        return complete(data_ref, STATUS_CLOUD_FILE_METADATA_CORRUPT);
    }
    // SAFETY: FltMgr's arguments for this pre-operation.
    unsafe {
        super::write::begin(
            data,
            objects,
            &stream,
            Edit::Resize(new_size),
            false,
            completion_context,
        )
    }
}

/// PostOperation of SET_INFORMATION (only for end-of-file changes that went as edits).
///
/// # Safety
/// Called by FltMgr with valid callback data.
pub(crate) unsafe extern "system" fn post_set_information(
    data: *mut FLT_CALLBACK_DATA,
    objects: *const FLT_RELATED_OBJECTS,
    context: *const core::ffi::c_void,
    flags: u32,
) -> FLT_POSTOP_CALLBACK_STATUS {
    // SAFETY: FltMgr's live callback data.
    let mut d = unsafe { data.as_mut() };
    // SAFETY: FltMgr's live related objects.
    let o = unsafe { objects.as_ref() };
    if let (Some(d), Some(o)) = (d.as_deref_mut(), o)
        && matches!(
            class_of(d),
            Some(
                super::namespace::FILE_RENAME_INFORMATION
                    | super::namespace::FILE_RENAME_INFORMATION_EX
                    | super::namespace::FILE_LINK_INFORMATION
                    | super::namespace::FILE_LINK_INFORMATION_EX
            )
        )
    {
        // Synchronized (pre_rename, or pre_link for a link that replaced a
        // placeholder): PASSIVE_LEVEL, the requesting thread.
        // SAFETY: the context pre_rename or pre_link wrote for this operation.
        unsafe {
            super::namespace::post_rename(d, o, context, flags & FLTFL_POST_OPERATION_DRAINING != 0)
        };
        return FLT_POSTOP_FINISHED_PROCESSING;
    }
    if let (Some(d), Some(o)) = (d.as_deref(), o)
        && matches!(
            class_of(d),
            Some(super::namespace::FILE_DISPOSITION_INFORMATION_EX)
        )
    {
        // Synchronized (pre_delete, a POSIX delete): PASSIVE_LEVEL, the deleting thread.
        // SAFETY: the context pre_delete wrote for this operation.
        unsafe {
            super::namespace::post_delete(d, o, context, flags & FLTFL_POST_OPERATION_DRAINING != 0)
        };
        return FLT_POSTOP_FINISHED_PROCESSING;
    }
    if let (Some(d), Some(o)) = (d, o)
        && class_of(d) == Some(FILE_BASIC_INFORMATION_CLASS)
    {
        // Synchronized (pre_basic): PASSIVE_LEVEL, the requestor's thread; a draining
        // post-operation has nothing to record.
        if flags & FLTFL_POST_OPERATION_DRAINING == 0 {
            post_basic(d, o, context as usize);
        }
        return FLT_POSTOP_FINISHED_PROCESSING;
    }
    // SAFETY: FltMgr's arguments.
    unsafe { super::write::post_edit(data, objects, context, flags, post_set_safe) }
}

/// The post-set-information at PASSIVE_LEVEL: records the new end of file.
unsafe extern "system" fn post_set_safe(
    data: *mut FLT_CALLBACK_DATA,
    objects: *const FLT_RELATED_OBJECTS,
    context: *const core::ffi::c_void,
    _flags: u32,
) -> FLT_POSTOP_CALLBACK_STATUS {
    // SAFETY: FltMgr's live callback data.
    let Some(d) = (unsafe { data.as_mut() }) else {
        return FLT_POSTOP_FINISHED_PROCESSING;
    };
    // SAFETY: FltMgr's live related objects.
    let Some(o) = (unsafe { objects.as_ref() }) else {
        return FLT_POSTOP_FINISHED_PROCESSING;
    };
    let Some(stream) = stream::get(o.Instance, o.FileObject) else {
        return FLT_POSTOP_FINISHED_PROCESSING;
    };
    let fo = Fo {
        instance: o.Instance,
        file_object: o.FileObject,
    };
    // SAFETY: the status block of the completed operation.
    let status = unsafe { d.IoStatus.Anonymous.Status };
    let ended = if nt_success(status) {
        fo.size().ok().map(|size| Ended {
            written: None,
            size,
        })
    } else {
        None
    };
    let recorded = hydrate::end_edit(&stream, context as usize as u64, ended, &fo);
    if nt_success(status) && !nt_success(recorded) {
        d.IoStatus.Anonymous.Status = recorded;
    }
    FLT_POSTOP_FINISHED_PROCESSING
}
