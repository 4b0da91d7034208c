//! ACQUIRE_FOR_SECTION_SYNCHRONIZATION: a placeholder about to be mapped (or run) is
//! hydrated whole first, in the mapping thread, since page faults on it must never wait
//! for a provider. A view made for writing takes the file out of sync at once: what is
//! changed through it reaches the driver only as the mapped page writer's paging writes,
//! where the reparse data cannot be written (the writer holds the file system's locks),
//! so the changed ranges follow from the postman; the in-sync state must not wait.

use super::*;

/// PreOperation of ACQUIRE_FOR_SECTION_SYNCHRONIZATION: a placeholder about to be mapped
/// (or run) is hydrated whole first, since page faults on it must never wait for a
/// provider.
///
/// # Safety
/// Called by FltMgr with valid callback data.
pub(crate) unsafe extern "system" fn pre_acquire_section(
    data: *mut FLT_CALLBACK_DATA,
    objects: *const FLT_RELATED_OBJECTS,
    _completion_context: *mut *mut core::ffi::c_void,
) -> FLT_PREOP_CALLBACK_STATUS {
    // SAFETY: FltMgr's callback data and related objects for the call.
    let Some((data_ref, _, stream)) = (unsafe { placeholder_io(data, objects) }) else {
        return FLT_PREOP_SUCCESS_NO_CALLBACK;
    };
    let writable = section_is_writable(data_ref);
    let (placeholder, corrupt, size, full) = hydrate::with_held(|held| {
        stream.with_state(held, |s| {
            // Pages changed through a writable view reach the disk by paging writes
            // whoever writes them (the mapped page writer, or the lazy writer when the
            // file is also cached): those are the user's changes.
            s.mapped_for_write |= writable;
            (
                s.is_placeholder(),
                s.is_corrupt(),
                s.file_size,
                s.present.contains(Range {
                    start: 0,
                    end: s.file_size,
                }),
            )
        })
    });
    if !placeholder {
        return FLT_PREOP_SUCCESS_NO_CALLBACK;
    }
    if corrupt {
        return complete(data_ref, STATUS_CLOUD_FILE_METADATA_CORRUPT);
    }
    if !full {
        let status = fetch_whole(data, &stream, size);
        if !nt_success(status) {
            return complete(data_ref, status);
        }
    }
    if writable {
        // SAFETY: FltMgr's related objects for the call (placeholder_io checked them).
        let objects = unsafe { &*objects };
        let status = hydrate::mapped_for_writing(
            &stream,
            &Fo {
                instance: objects.Instance,
                file_object: objects.FileObject,
            },
        );
        if !nt_success(status) {
            return complete(data_ref, status);
        }
    }
    FLT_PREOP_SUCCESS_NO_CALLBACK
}

/// Whether the section is made for writing back to the file (PAGE_READWRITE or
/// PAGE_EXECUTE_READWRITE; a copy-on-write view never writes the file).
fn section_is_writable(data: &FLT_CALLBACK_DATA) -> bool {
    // SAFETY: Iopb points at the operation's parameter block, valid during the operation.
    let Some(iopb) = (unsafe { data.Iopb.cast::<FLT_IO_PARAMETER_BLOCK>().as_ref() }) else {
        return false;
    };
    // SAFETY: ACQUIRE_FOR_SECTION_SYNCHRONIZATION: the union holds its parameters.
    let protection = unsafe {
        iopb.Parameters
            .AcquireForSectionSynchronization
            .PageProtection
    };
    protection & (0x04 | 0x40) != 0
}

/// Makes all of a `size`-byte placeholder present for operation `data` (a section about
/// to be created), waiting in the requesting thread.
fn fetch_whole(data: *const FLT_CALLBACK_DATA, stream: &StreamRef, size: u64) -> NTSTATUS {
    let name = match NameInfo::normalized(data) {
        Ok(name) => name,
        Err(status) => return status,
    };
    // SAFETY: live callback data.
    let pid = unsafe { FltGetRequestorProcessId(data) };
    let image = ImageName::of(data);
    let target = hydrate::Target {
        stream,
        name: name.units(),
        requestor_pid: pid,
        requestor_image: image.units(),
        data: core::ptr::null(),
        file_object: target_file_object(data),
    };
    hydrate::ensure_range(
        &target,
        Range {
            start: 0,
            end: size,
        },
    )
}
