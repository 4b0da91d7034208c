//! CLEANUP: the last handle of a file object closed — operations waiting through it give
//! up, and on the stream's last cleanup with nobody waiting, background fills stop; a
//! stream mapped for writing has what its views changed flushed and recorded; streamed
//! data is dropped from the disk.

use super::*;

/// PreOperation of CLEANUP (the last handle of a file object closed): reads waiting
/// through it give up, and when no open of the stream is left waiting, PROGRESSIVE
/// background fills stop (cfapi: "until full or the last handle closes").
///
/// # Safety
/// Called by FltMgr with valid callback data.
pub(crate) unsafe extern "system" fn pre_cleanup(
    data: *mut FLT_CALLBACK_DATA,
    objects: *const FLT_RELATED_OBJECTS,
    completion_context: *mut *mut core::ffi::c_void,
) -> FLT_PREOP_CALLBACK_STATUS {
    // SAFETY: FltMgr passes valid related objects for the duration of the call.
    let Some(objects) = (unsafe { objects.as_ref() }) else {
        return FLT_PREOP_SUCCESS_NO_CALLBACK;
    };
    let Some(stream) = stream::get(objects.Instance, objects.FileObject) else {
        // SAFETY: FltMgr's arguments for this pre-operation.
        return unsafe {
            super::namespace::pre_cleanup_directory(data, objects, completion_context)
        };
    };
    let handle = stream::HandleRef::get(objects.Instance, objects.FileObject);
    let last = stream::close_open(&stream, handle.as_ref());
    let notify_close = handle.as_ref().map_or(0, |h| h.notify_close);
    let delete_on_close = handle.as_ref().is_some_and(|h| {
        h.delete_on_close
            .load(core::sync::atomic::Ordering::Relaxed)
    });
    drop(handle);
    if notify_close != 0 {
        super::namespace::closed(data, objects, notify_close, &stream, last, delete_on_close);
    }
    let deletion = if last {
        super::namespace::last_closed(data, objects, &stream, delete_on_close)
    } else {
        None
    };
    if last {
        hydrate::closing(
            &stream,
            &Fo {
                instance: objects.Instance,
                file_object: objects.FileObject,
            },
        );
    }
    hydrate::file_closed(&stream, objects.FileObject as usize, last);
    if last {
        hydrate::drop_streamed(&stream);
    }
    match deletion {
        Some(deletion) => {
            // SAFETY: FltMgr's out pointer for this pre-operation; the post-operation
            // takes the block back.
            unsafe { completion_context.write(PoolBox::into_raw(deletion).as_ptr().cast()) };
            FLT_PREOP_SYNCHRONIZE
        }
        None => FLT_PREOP_SUCCESS_NO_CALLBACK,
    }
}

/// PostOperation of CLEANUP: only for the placeholders `pre_cleanup` synchronized (a
/// delete pending, a provider to tell once it happened).
///
/// # Safety
/// Called by FltMgr with valid callback data.
pub(crate) unsafe extern "system" fn post_cleanup(
    data: *mut FLT_CALLBACK_DATA,
    objects: *const FLT_RELATED_OBJECTS,
    context: *const core::ffi::c_void,
    flags: u32,
) -> FLT_POSTOP_CALLBACK_STATUS {
    // SAFETY: FltMgr's live callback data.
    let d = unsafe { data.as_ref() };
    // SAFETY: FltMgr's live related objects.
    let o = unsafe { objects.as_ref() };
    if let (Some(d), Some(o)) = (d, o) {
        // SAFETY: the context pre_cleanup_directory wrote for this operation.
        unsafe {
            super::namespace::post_cleanup_deletion(
                d,
                o,
                context,
                flags & FLTFL_POST_OPERATION_DRAINING != 0,
            )
        };
    }
    FLT_POSTOP_FINISHED_PROCESSING
}
