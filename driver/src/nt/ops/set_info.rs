//! SET_INFORMATION: a user's change of a placeholder's end of file (FileEndOfFileInformation,
//! or FileAllocationInformation below end of file, which truncates) is an edit
//! (hydrate::edit): the unit holding the new (truncation) or old (extension) end of file is
//! fetched first when it is missing and that end is not on a unit boundary, nothing the
//! truncation discards is ever fetched, and the post-operation records the new size —
//! extension adds present, modified zeros — and clears in-sync before the caller sees it.
//! The cache manager's own AdvanceOnly end-of-file updates (paging I/O) pass: they never
//! move end of file.

use super::*;
use crate::nt::hydrate::{Edit, Ended};

/// FILE_INFORMATION_CLASS values.
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

/// PreOperation of SET_INFORMATION.
///
/// # Safety
/// Called by FltMgr with valid callback data.
pub(crate) unsafe extern "system" fn pre_set_information(
    data: *mut FLT_CALLBACK_DATA,
    objects: *const FLT_RELATED_OBJECTS,
    completion_context: *mut *mut core::ffi::c_void,
) -> FLT_PREOP_CALLBACK_STATUS {
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
