//! QUERY_INFORMATION, QUERY_OPEN and NETWORK_QUERY_OPEN: attribute answers are
//! disguised for disguised opens; query-opens that would show a placeholder to a disguised
//! caller fall back to a full open, whose query is rewritten.

use super::*;

/// PreOperation of QUERY_INFORMATION: a disguised open's attribute query gets its post
/// (its fast-I/O form is refused, so that it comes back as an IRP that does).
///
/// # Safety
/// Called by FltMgr with valid callback data.
pub(crate) unsafe extern "system" fn pre_query_information(
    data: *mut FLT_CALLBACK_DATA,
    objects: *const FLT_RELATED_OBJECTS,
    _completion_context: *mut *mut core::ffi::c_void,
) -> FLT_PREOP_CALLBACK_STATUS {
    // SAFETY: FltMgr passes valid callback data for the call.
    let Some(d) = (unsafe { data.as_ref() }) else {
        return FLT_PREOP_SUCCESS_NO_CALLBACK;
    };
    // SAFETY: its parameter block, valid during the callback, laid out as fltKernel.h
    // declares it (nt::layout).
    let Some(iopb) = (unsafe { d.Iopb.cast::<FLT_IO_PARAMETER_BLOCK>().as_ref() }) else {
        return FLT_PREOP_SUCCESS_NO_CALLBACK;
    };
    // SAFETY: QUERY_INFORMATION: the union holds its parameters.
    let q = unsafe { iopb.Parameters.QueryFileInformation };
    let wanted = u32::try_from(q.FileInformationClass)
        .ok()
        .and_then(QueryClass::from_raw)
        .is_some();
    if !wanted || !disguised(objects) {
        return FLT_PREOP_SUCCESS_NO_CALLBACK;
    }
    if !is_irp(d) {
        // FastIoQueryBasicInfo / StandardInfo have no post-operation that could rewrite
        // the answer: refused, the I/O manager asks again with an IRP, which gets one.
        return FLT_PREOP_DISALLOW_FASTIO;
    }
    FLT_PREOP_SYNCHRONIZE
}

/// PostOperation of QUERY_INFORMATION (synchronised): disguises the attributes.
///
/// # Safety
/// Called by FltMgr with valid callback data.
pub(crate) unsafe extern "system" fn post_query_information(
    data: *mut FLT_CALLBACK_DATA,
    objects: *const FLT_RELATED_OBJECTS,
    _completion_context: *const core::ffi::c_void,
    flags: u32,
) -> FLT_POSTOP_CALLBACK_STATUS {
    // SAFETY: FltMgr's callback data of this post-operation.
    let Some((d, iopb)) = (unsafe { completed(data, flags) }) else {
        return FLT_POSTOP_FINISHED_PROCESSING;
    };
    // SAFETY: FltMgr passes valid related objects for the call.
    let Some(objects) = (unsafe { objects.as_ref() }) else {
        return FLT_POSTOP_FINISHED_PROCESSING;
    };
    // SAFETY: QUERY_INFORMATION: the union holds its parameters.
    let q = unsafe { iopb.Parameters.QueryFileInformation };
    let Some(class) = u32::try_from(q.FileInformationClass)
        .ok()
        .and_then(QueryClass::from_raw)
    else {
        return FLT_POSTOP_FINISHED_PROCESSING;
    };
    if q.InfoBuffer.is_null() || q.Length == 0 {
        return FLT_POSTOP_FINISHED_PROCESSING;
    }
    // SAFETY: the system buffer of Length bytes the I/O manager gave the file system.
    let buffer =
        unsafe { core::slice::from_raw_parts_mut(q.InfoBuffer.cast::<u8>(), q.Length as usize) };
    let returned = d.IoStatus.Information;
    // A file placeholder has its stream context; a directory placeholder has none, so
    // its tag is asked (the file may also have been reverted since it was opened).
    let is_placeholder = stream::get(objects.Instance, objects.FileObject).is_some()
        || (!class.has_tag()
            && is_ours(
                Fo {
                    instance: objects.Instance,
                    file_object: objects.FileObject,
                }
                .attribute_tag(),
            ));
    if rewrite::disguise_query(
        class,
        buffer,
        returned,
        is_placeholder,
        HiddenAttributes::DEFAULT,
    )
    .is_err()
    {
        fail_malformed(d, buffer, returned);
    }
    FLT_POSTOP_FINISHED_PROCESSING
}

/// PreOperation of QUERY_OPEN: every query-open gets its post, which looks at what the
/// file system answered. Deciding here would cost every GetFileAttributesEx on the volume
/// an image-name lookup; the post needs one only for files that show a reparse point.
///
/// # Safety
/// Called by FltMgr with valid callback data.
pub(crate) unsafe extern "system" fn pre_query_open(
    _data: *mut FLT_CALLBACK_DATA,
    _objects: *const FLT_RELATED_OBJECTS,
    _completion_context: *mut *mut core::ffi::c_void,
) -> FLT_PREOP_CALLBACK_STATUS {
    FLT_PREOP_SUCCESS_WITH_CALLBACK
}

/// PostOperation of QUERY_OPEN (in the issuing thread, at PASSIVE_LEVEL): an answer that
/// shows a reparse point, for a disguised caller, is refused with
/// FLT_POSTOP_DISALLOW_FSFILTER_IO, so that the I/O manager opens, queries (rewritten by
/// [`post_query_information`], which knows whether the reparse point is cloudflt's) and
/// closes. Answers without one, classes without attributes and exposed callers pass.
///
/// # Safety
/// Called by FltMgr with valid callback data.
pub(crate) unsafe extern "system" fn post_query_open(
    data: *mut FLT_CALLBACK_DATA,
    _objects: *const FLT_RELATED_OBJECTS,
    _completion_context: *const core::ffi::c_void,
    flags: u32,
) -> FLT_POSTOP_CALLBACK_STATUS {
    // SAFETY: FltMgr's callback data of this post-operation.
    let Some((_, iopb)) = (unsafe { completed(data, flags) }) else {
        return FLT_POSTOP_FINISHED_PROCESSING;
    };
    // SAFETY: IRP_MJ_QUERY_OPEN: the union holds its parameters.
    let q = unsafe { iopb.Parameters.QueryOpen };
    let Some(class) = u32::try_from(q.FileInformationClass)
        .ok()
        .and_then(QueryClass::from_raw)
    else {
        return FLT_POSTOP_FINISHED_PROCESSING;
    };
    // SAFETY: Length points at the returned length the file system set (NULL-checked).
    let Some(length) = (unsafe { q.Length.as_ref() }).map(|l| *l as usize) else {
        return FLT_POSTOP_FINISHED_PROCESSING;
    };
    let shows_reparse_point = if q.FileInformation.is_null() || length == 0 {
        true
    } else {
        // SAFETY: the I/O manager's system buffer, holding `length` returned bytes.
        let answer = unsafe { core::slice::from_raw_parts(q.FileInformation.cast::<u8>(), length) };
        rewrite::may_show_reparse_point(class, answer, length)
    };
    if shows_reparse_point && requestor_disguised(data) {
        FLT_POSTOP_DISALLOW_FSFILTER_IO
    } else {
        FLT_POSTOP_FINISHED_PROCESSING
    }
}

/// PreOperation of NETWORK_QUERY_OPEN: the fast-I/O form is refused for disguised callers
/// (the IRP form follows as a full open and query).
///
/// # Safety
/// Called by FltMgr with valid callback data.
pub(crate) unsafe extern "system" fn pre_network_query_open(
    data: *mut FLT_CALLBACK_DATA,
    _objects: *const FLT_RELATED_OBJECTS,
    _completion_context: *mut *mut core::ffi::c_void,
) -> FLT_PREOP_CALLBACK_STATUS {
    // SAFETY: FltMgr passes valid callback data for the call.
    let Some(d) = (unsafe { data.as_ref() }) else {
        return FLT_PREOP_SUCCESS_NO_CALLBACK;
    };
    if d.Flags & FLTFL_CALLBACK_DATA_FAST_IO_OPERATION != 0 && requestor_disguised(data) {
        FLT_PREOP_DISALLOW_FASTIO
    } else {
        FLT_PREOP_SUCCESS_NO_CALLBACK
    }
}
