//! WRITE: a user's bytes written into a placeholder are kept, recorded and never fetched
//! over (hydrate::edit).
//!
//! - A write that covers a 4 KiB unit only in part, or moves end of file up from the
//!   middle of a unit, pends until the unit's missing data is fetched (under FULL and
//!   ALWAYS_FULL, until the whole file is); then it goes, registered busy over its
//!   bytes, so no transfer writes there meanwhile.
//! - Its post-operation records the bytes present and modified, the file not in sync and
//!   its new end of file, in memory and in the reparse data, before the application sees
//!   the write complete.
//! - Paging writes never wait: the lazy writer's carry bytes already recorded by their
//!   cached write; the mapped page writer's (and the lazy writer's for a stream mapped
//!   for writing) carry a user's changes made through a view, recorded as modified on
//!   the spot and written into the reparse data by the postman (the writer holds the
//!   file system's locks, which writing the reparse data would need).
//! - Fast I/O writes are refused for placeholders, so that every write comes as an IRP
//!   this callback can hold.

use super::*;
use crate::nt::hydrate::{Begin, Edit, Ended};
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FLTFL_POST_OPERATION_DRAINING, FltDoCompletionProcessingWhenSafe,
};

/// The top-level IRP value of the mapped page writer's thread (ntifs.h: FSP 1, CACHE 2,
/// MOD_WRITE 3, FAST_IO 4).
const FSRTL_MOD_WRITE_TOP_LEVEL_IRP: usize = 0x3;

/// ByteOffset of a write to end of file (FILE_WRITE_TO_END_OF_FILE in its low part, -1
/// in its high part).
const WRITE_TO_END_OF_FILE: i64 = 0xFFFF_FFFF_u32 as i64 | (-1_i64 << 32);

unsafe extern "system" {
    /// ntifs.h: the calling thread's top-level IRP (or an FSRTL_*_TOP_LEVEL_IRP value).
    fn IoGetTopLevelIrp() -> *mut core::ffi::c_void;
}

/// The write an operation asks for: (offset, length), `None` for an offset that is not a
/// place in the file (left to NTFS). An append resolves to `size`.
fn write_of(data: &FLT_CALLBACK_DATA, size: u64) -> Option<(u64, u64)> {
    // SAFETY: Iopb points at the operation's parameter block, valid during the operation,
    // laid out as fltKernel.h declares it (nt::layout).
    let iopb = unsafe { data.Iopb.cast::<FLT_IO_PARAMETER_BLOCK>().as_ref() }?;
    // SAFETY: IRP_MJ_WRITE: the union holds the write parameters.
    let write = unsafe { iopb.Parameters.Write };
    let offset = if write.ByteOffset == WRITE_TO_END_OF_FILE {
        size
    } else {
        u64::try_from(write.ByteOffset).ok()?
    };
    Some((offset, u64::from(write.Length)))
}

/// PreOperation of WRITE.
///
/// # Safety
/// Called by FltMgr with valid callback data.
pub(crate) unsafe extern "system" fn pre_write(
    data: *mut FLT_CALLBACK_DATA,
    objects: *const FLT_RELATED_OBJECTS,
    completion_context: *mut *mut core::ffi::c_void,
) -> FLT_PREOP_CALLBACK_STATUS {
    // SAFETY: FltMgr's callback data and related objects for the call.
    let Some((data_ref, objects, stream)) = (unsafe { placeholder_io(data, objects) }) else {
        return FLT_PREOP_SUCCESS_NO_CALLBACK;
    };
    let (placeholder, corrupt, size, mapped) = hydrate::with_held(|held| {
        stream.with_state(held, |s| {
            (
                s.is_placeholder(),
                s.is_corrupt(),
                s.file_size,
                s.mapped_for_write,
            )
        })
    });
    if !placeholder {
        return FLT_PREOP_SUCCESS_NO_CALLBACK;
    }
    if data_ref.Flags & FLTFL_CALLBACK_DATA_FAST_IO_OPERATION != 0 {
        return FLT_PREOP_DISALLOW_FASTIO;
    }
    if data_ref.Flags & FLTFL_CALLBACK_DATA_IRP_OPERATION == 0 {
        return FLT_PREOP_SUCCESS_NO_CALLBACK;
    }
    let Some((offset, length)) = write_of(data_ref, size) else {
        return FLT_PREOP_SUCCESS_NO_CALLBACK;
    };
    // SAFETY: Iopb is valid during the operation (write_of succeeded).
    let irp_flags = unsafe { (*data_ref.Iopb.cast::<FLT_IO_PARAMETER_BLOCK>()).IrpFlags };
    if irp_flags & IRP_PAGING_IO != 0 {
        // SAFETY: no preconditions; reads the current thread's top-level IRP.
        let top = unsafe { IoGetTopLevelIrp() } as usize;
        // The mapped page writer carries only pages changed through views. Any other
        // paging write (the lazy writer's, a flush's) carries cached writes, recorded
        // when they were made, and, for a stream mapped for writing, pages changed
        // through its views: those are recorded now. A provider's request flushes the
        // file first (`placeholder`), so its own later I/O finds nothing dirty.
        if top == FSRTL_MOD_WRITE_TOP_LEVEL_IRP || mapped {
            hydrate::mapped_write(&stream, Range::at(offset, length));
        }
        return FLT_PREOP_SUCCESS_NO_CALLBACK;
    }
    if corrupt {
        return complete(data_ref, STATUS_CLOUD_FILE_METADATA_CORRUPT);
    }
    if length == 0 {
        return FLT_PREOP_SUCCESS_NO_CALLBACK;
    }
    let whole = stream::handle_policy(objects.Instance, objects.FileObject)
        .is_some_and(|p| p >= Policy::Full);
    let edit = Edit::Write(Range::at(offset, length));
    // SAFETY: the caller's out pointer for this operation.
    unsafe { begin(data, objects, &stream, edit, whole, completion_context) }
}

/// Goes on with `edit` as `hydrate::begin_edit` decides, pending it while what it needs
/// is fetched. Shared by WRITE and SET_INFORMATION.
///
/// # Safety
/// `data`, `objects` and `completion_context` are what FltMgr passed the pre-operation.
pub(super) unsafe fn begin(
    data: *mut FLT_CALLBACK_DATA,
    objects: &FLT_RELATED_OBJECTS,
    stream: &StreamRef,
    edit: Edit,
    whole: bool,
    completion_context: *mut *mut core::ffi::c_void,
) -> FLT_PREOP_CALLBACK_STATUS {
    // SAFETY: live callback data (the caller's).
    let data_ref = unsafe { &mut *data };
    loop {
        let needed = match hydrate::begin_edit(stream, edit, whole) {
            Begin::Go(id) => {
                // SAFETY: the caller's out pointer: the edit's id, read back by the
                // post-operation.
                unsafe { *completion_context = id as usize as *mut core::ffi::c_void };
                return FLT_PREOP_SUCCESS_WITH_CALLBACK;
            }
            Begin::Fail(status) => return complete(data_ref, status),
            Begin::Need(range) => range,
        };
        match pend(data, objects, stream, edit, whole, needed) {
            hydrate::Pend::Pass => continue,
            hydrate::Pend::Complete(status) => return complete(data_ref, status),
            hydrate::Pend::Pended => return FLT_PREOP_PENDING,
        }
    }
}

/// Pends `edit` until `needed` is present (hydrate::pend_read, as an edit): nothing
/// waits in this thread.
fn pend(
    data: *mut FLT_CALLBACK_DATA,
    objects: &FLT_RELATED_OBJECTS,
    stream: &StreamRef,
    edit: Edit,
    whole: bool,
    needed: Range,
) -> hydrate::Pend {
    let name = match NameInfo::normalized(data) {
        Ok(name) => name,
        Err(status) => return hydrate::Pend::Complete(status),
    };
    let Some(provider) = providers::for_path(name.units()) else {
        return hydrate::Pend::Complete(roots::no_provider_status(name.units()));
    };
    let Some(instance) = InstanceRef::get(objects.Instance) else {
        return hydrate::Pend::Complete(STATUS_CLOUD_FILE_INSUFFICIENT_RESOURCES);
    };
    // SAFETY: live callback data.
    let pid = unsafe { FltGetRequestorProcessId(data) };
    let image = ImageName::of(data);
    let command_line = provider
        .connect_flags
        .contains(ConnectFlags::REQUIRE_PROCESS_INFO)
        .then(|| CommandLine::of_current(pid));
    let Some(asker) = hydrate::Asker::new(
        pid,
        name.units(),
        image.units(),
        command_line.as_ref().map(CommandLine::units),
    ) else {
        return hydrate::Pend::Complete(STATUS_CLOUD_FILE_INSUFFICIENT_RESOURCES);
    };
    let target = hydrate::ReadTarget {
        data,
        instance,
        instance_handle: objects.Instance,
        file_object: objects.FileObject as usize,
        plan: policy::Plan {
            required: needed,
            background: None,
        },
        serve: false,
        edit: Some((edit, whole)),
    };
    hydrate::pend_read(stream, &provider, target, asker)
}

/// PostOperation of WRITE (only for writes that went as edits): records what was written.
///
/// # Safety
/// Called by FltMgr with valid callback data.
pub(crate) unsafe extern "system" fn post_write(
    data: *mut FLT_CALLBACK_DATA,
    objects: *const FLT_RELATED_OBJECTS,
    context: *const core::ffi::c_void,
    flags: u32,
) -> FLT_POSTOP_CALLBACK_STATUS {
    // SAFETY: as for every post-operation: FltMgr's arguments.
    unsafe { post_edit(data, objects, context, flags, post_write_safe) }
}

/// Runs `safe` at PASSIVE_LEVEL for an edit's post-operation; when FltMgr cannot (or the
/// instance is draining), the edit's change is recorded in memory at once and written
/// into the reparse data by the postman.
///
/// # Safety
/// FltMgr's post-operation arguments.
pub(super) unsafe fn post_edit(
    data: *mut FLT_CALLBACK_DATA,
    objects: *const FLT_RELATED_OBJECTS,
    context: *const core::ffi::c_void,
    flags: u32,
    safe: unsafe extern "system" fn(
        *mut FLT_CALLBACK_DATA,
        *const FLT_RELATED_OBJECTS,
        *const core::ffi::c_void,
        u32,
    ) -> FLT_POSTOP_CALLBACK_STATUS,
) -> FLT_POSTOP_CALLBACK_STATUS {
    if flags & FLTFL_POST_OPERATION_DRAINING == 0 {
        let mut status = FLT_POSTOP_FINISHED_PROCESSING;
        // SAFETY: FltMgr's arguments, passed on; `status` is a valid out pointer.
        let done = unsafe {
            FltDoCompletionProcessingWhenSafe(
                data,
                objects,
                context,
                flags,
                Some(safe),
                &mut status,
            )
        };
        if done {
            return status;
        }
    }
    // SAFETY: live callback data.
    let d = unsafe { data.as_ref() };
    // SAFETY: live related objects.
    let o = unsafe { objects.as_ref() };
    if let (Some(d), Some(o)) = (d, o)
        && let Some(stream) = stream::get(o.Instance, o.FileObject)
    {
        let id = context as usize as u64;
        // SAFETY: the status block of the completed operation.
        let status = unsafe { d.IoStatus.Anonymous.Status };
        let written = nt_success(status)
            .then(|| write_of(d, 0))
            .flatten()
            .map(|(offset, _)| Range::at(offset, d.IoStatus.Information as u64));
        hydrate::end_edit_later(&stream, id, written);
    }
    FLT_POSTOP_FINISHED_PROCESSING
}

/// The post-write at PASSIVE_LEVEL: records the bytes written and the new end of file;
/// a write whose record failed fails.
unsafe extern "system" fn post_write_safe(
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
    let id = context as usize as u64;
    let fo = Fo {
        instance: o.Instance,
        file_object: o.FileObject,
    };
    // SAFETY: the status block of the completed operation.
    let status = unsafe { d.IoStatus.Anonymous.Status };
    let ended = if nt_success(status) {
        let n = d.IoStatus.Information as u64;
        let size = fo.size().ok();
        match (write_of(d, u64::MAX), size) {
            (Some((offset, _)), Some(size)) => {
                // An append: where NTFS put it is the end of file less what it wrote.
                let offset = if offset == u64::MAX {
                    size.saturating_sub(n)
                } else {
                    offset
                };
                Some(Ended {
                    written: Some(Range::at(offset, n)),
                    size,
                })
            }
            _ => None,
        }
    } else {
        None
    };
    let recorded = hydrate::end_edit(&stream, id, ended, &fo);
    if nt_success(status) && !nt_success(recorded) {
        // The bytes are in the file and recorded in memory; the application learns that
        // the record on disk could not keep them.
        d.IoStatus.Anonymous.Status = recorded;
    }
    FLT_POSTOP_FINISHED_PROCESSING
}
