//! READ: a read of data a placeholder does not have yet pends until its provider
//! delivers it (hydrate::pend_read; no thread waits); a paging read of missing data fails
//! at once; a cached read of a placeholder that is not whole is served by the driver
//! from disk (module `direct`); the provider's own reads pass untouched.

use super::*;

/// The read an operation asks for, as (offset, length).
fn read_of(data: &FLT_CALLBACK_DATA) -> Option<(u64, u64)> {
    // SAFETY: Iopb points at the operation's parameter block, valid during the operation,
    // laid out as fltKernel.h declares it (nt::layout).
    let iopb = unsafe { data.Iopb.cast::<FLT_IO_PARAMETER_BLOCK>().as_ref() }?;
    // SAFETY: IRP_MJ_READ: the union holds the read parameters.
    let read = unsafe { iopb.Parameters.Read };
    // A negative offset (FILE_USE_FILE_POINTER_POSITION reaching a file system) is not a
    // place in the file: the read goes down for NTFS to refuse, never served from 0.
    let offset = u64::try_from(read.ByteOffset).ok()?;
    Some((offset, u64::from(read.Length)))
}

/// PreOperation of READ: a read of data a placeholder does not have yet pends until the
/// provider delivers it (per the provider's hydration policy); a paging read of missing
/// data fails at once (the faulting thread may hold locks a fetch would need); the
/// provider's own reads pass untouched.
///
/// # Safety
/// Called by FltMgr with valid callback data.
pub(crate) unsafe extern "system" fn pre_read(
    data: *mut FLT_CALLBACK_DATA,
    objects: *const FLT_RELATED_OBJECTS,
    _completion_context: *mut *mut core::ffi::c_void,
) -> FLT_PREOP_CALLBACK_STATUS {
    // SAFETY: FltMgr's callback data and related objects for the call.
    let Some((data_ref, objects, stream)) = (unsafe { placeholder_io(data, objects) }) else {
        // SAFETY: as above.
        return unsafe { provider_read(data, objects) };
    };
    let Some((offset, length)) = read_of(data_ref) else {
        return FLT_PREOP_SUCCESS_NO_CALLBACK;
    };
    let fixed = stream::handle_policy(objects.Instance, objects.FileObject);
    let whole = fixed.is_some_and(|p| p >= Policy::Full);
    let (placeholder, corrupt, missing, read_missing, partial, size) = hydrate::with_held(|held| {
        stream.with_state(held, |s| {
            let file = Range {
                start: 0,
                end: s.file_size,
            };
            let read = Range::at(offset, length).clip(file);
            // FULL opens need the whole file before even a byte is read.
            let needed = if whole { file } else { read };
            (
                s.is_placeholder(),
                s.is_corrupt(),
                !read.is_empty() && !s.present.contains(needed),
                !read.is_empty() && !s.present.contains(read),
                !s.present.contains(file),
                s.file_size,
            )
        })
    });
    if !placeholder {
        return FLT_PREOP_SUCCESS_NO_CALLBACK;
    }
    if corrupt {
        return complete(data_ref, STATUS_CLOUD_FILE_METADATA_CORRUPT);
    }
    if data_ref.Flags & FLTFL_CALLBACK_DATA_FAST_IO_OPERATION != 0 {
        // A fast read copies from the cache, faulting pages in (clustered): while any data
        // is missing it comes back as an IRP, which this driver serves or pends.
        return if partial {
            FLT_PREOP_DISALLOW_FASTIO
        } else {
            FLT_PREOP_SUCCESS_NO_CALLBACK
        };
    }
    if data_ref.Flags & FLTFL_CALLBACK_DATA_IRP_OPERATION == 0 {
        return FLT_PREOP_SUCCESS_NO_CALLBACK;
    }
    // SAFETY: Iopb is valid during the operation (read_of succeeded).
    let irp_flags = unsafe { (*data_ref.Iopb.cast::<FLT_IO_PARAMETER_BLOCK>()).IrpFlags };
    if irp_flags & IRP_PAGING_IO != 0 {
        // The memory manager's page-in (of a view or the cache) asks only for its pages:
        // the FULL rule was applied where the view or the cached read began.
        return if read_missing {
            complete(data_ref, PAGING_READ_OF_MISSING_DATA)
        } else {
            FLT_PREOP_SUCCESS_NO_CALLBACK
        };
    }
    // A cached read of a placeholder not yet whole is served by the driver (module
    // `direct`): through the cache its page-in would be widened over missing pages.
    let serve = partial && irp_flags & IRP_NOCACHE == 0;
    if !missing && !serve {
        return FLT_PREOP_SUCCESS_NO_CALLBACK;
    }
    let Some(instance) = InstanceRef::get(objects.Instance) else {
        return complete(data_ref, STATUS_CLOUD_FILE_INSUFFICIENT_RESOURCES);
    };
    if serve {
        let status = direct::prepare(data);
        if !nt_success(status) {
            return complete(data_ref, status);
        }
    }
    if !missing {
        let (status, n) = direct::serve(data, objects.Instance, size, instance.sector_size());
        return complete_with(data_ref, status, n);
    }
    pend(
        data,
        objects,
        &stream,
        (offset, length),
        fixed,
        instance,
        serve,
    )
}

/// A read that is not intercepted: every read but a provider's own of a placeholder's
/// missing data passes. A provider connected with BLOCK_SELF_IMPLICIT_HYDRATION has its
/// own (non-paging) reads of data not present refused with
/// STATUS_CLOUD_FILE_ACCESS_DENIED: it said it never reads data implicitly, so such a
/// read (an antivirus scan in its process, a bug) gets a precise failure instead of what
/// NTFS holds there. Without the flag a provider's own I/O passes untouched, as DESIGN.md
/// decides: the provider reads its files as NTFS holds them and never fetches from
/// itself.
///
/// # Safety
/// `data` and `objects` are what FltMgr passed the pre-operation, valid for the call.
unsafe fn provider_read(
    data: *mut FLT_CALLBACK_DATA,
    objects: *const FLT_RELATED_OBJECTS,
) -> FLT_PREOP_CALLBACK_STATUS {
    // SAFETY: the caller's contract.
    let (Some(data_ref), Some(objects)) = (unsafe { data.as_mut() }, unsafe { objects.as_ref() })
    else {
        return FLT_PREOP_SUCCESS_NO_CALLBACK;
    };
    if data_ref.Flags & FLTFL_CALLBACK_DATA_IRP_OPERATION == 0 {
        return FLT_PREOP_SUCCESS_NO_CALLBACK;
    }
    // SAFETY: Iopb is valid during the operation.
    let irp_flags = unsafe { (*data_ref.Iopb.cast::<FLT_IO_PARAMETER_BLOCK>()).IrpFlags };
    if irp_flags & IRP_PAGING_IO != 0 {
        return FLT_PREOP_SUCCESS_NO_CALLBACK;
    }
    // SAFETY: live callback data.
    let pid = unsafe { FltGetRequestorProcessId(data) };
    // Only in its own root: in another provider's root it is an application.
    if !providers::blocks_self_hydration(pid as usize) || !super::opened_by_provider(objects) {
        return FLT_PREOP_SUCCESS_NO_CALLBACK;
    }
    let (Some(stream), Some((offset, length))) = (
        stream::get(objects.Instance, objects.FileObject),
        read_of(data_ref),
    ) else {
        return FLT_PREOP_SUCCESS_NO_CALLBACK;
    };
    let missing = hydrate::with_held(|held| {
        stream.with_state(held, |s| {
            let read = Range::at(offset, length).clip(Range {
                start: 0,
                end: s.file_size,
            });
            s.is_placeholder() && !read.is_empty() && !s.present.contains(read)
        })
    });
    if missing {
        complete(
            data_ref,
            windows_sys::Win32::Foundation::STATUS_CLOUD_FILE_ACCESS_DENIED,
        )
    } else {
        FLT_PREOP_SUCCESS_NO_CALLBACK
    }
}

/// What a paging read of data not on disk fails with.
const PAGING_READ_OF_MISSING_DATA: NTSTATUS = STATUS_CLOUD_FILE_UNSUCCESSFUL;

/// Pends a read of missing data until its provider delivers it (hydrate::pend_read):
/// nothing in this thread or any other waits for the provider. It is planned with the
/// policy its open fixed at create (`fixed`), or the provider's when the open has none:
/// a FULL open waits for the whole file even if the provider now says PARTIAL.
#[allow(clippy::too_many_arguments)] // one read's facts, gathered by the pre-read
fn pend(
    data: *mut FLT_CALLBACK_DATA,
    objects: &FLT_RELATED_OBJECTS,
    stream: &StreamRef,
    (offset, length): (u64, u64),
    fixed: Option<Policy>,
    instance: InstanceRef,
    serve: bool,
) -> FLT_PREOP_CALLBACK_STATUS {
    // SAFETY: live callback data (the caller's).
    let data_ref = unsafe { &mut *data };
    let name = match NameInfo::normalized(data) {
        Ok(name) => name,
        Err(status) => return complete(data_ref, status),
    };
    let Some(provider) = providers::for_path(name.units()) else {
        return complete(data_ref, roots::no_provider_status(name.units()));
    };
    let size = hydrate::with_held(|held| stream.with_state(held, |s| s.file_size));
    let sector = instance.sector_size();
    let pass = |data_ref: &mut FLT_CALLBACK_DATA| {
        if serve {
            let (status, n) = direct::serve(data, objects.Instance, size, sector);
            complete_with(data_ref, status, n)
        } else {
            FLT_PREOP_SUCCESS_NO_CALLBACK
        }
    };
    let policy = fixed.unwrap_or(provider.hydration());
    let Some(plan) = policy::plan(policy, Range::at(offset, length), size) else {
        return pass(data_ref);
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
        return complete(data_ref, STATUS_CLOUD_FILE_INSUFFICIENT_RESOURCES);
    };
    let target = hydrate::ReadTarget {
        data,
        instance,
        instance_handle: objects.Instance,
        file_object: objects.FileObject as usize,
        plan,
        serve,
        edit: None,
    };
    match hydrate::pend_read(stream, &provider, target, asker) {
        hydrate::Pend::Pass => pass(data_ref),
        hydrate::Pend::Complete(status) => complete(data_ref, status),
        hydrate::Pend::Pended => FLT_PREOP_PENDING,
    }
}
