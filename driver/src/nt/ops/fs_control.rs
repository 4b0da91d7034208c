//! FILE_SYSTEM_CONTROL: only the driver sets or removes cloudflt's reparse tag
//! (engine::tagguard), and FSCTL_GET_REPARSE_POINT on a placeholder answers
//! STATUS_NOT_A_REPARSE_POINT to a disguised open.

use super::*;

/// METHOD_BUFFERED: the only transfer method of the reparse-point FSCTLs.
const METHOD_BUFFERED: u32 = 0;
/// IRP_MN_USER_FS_REQUEST.
const IRP_MN_USER_FS_REQUEST: u8 = 0;

/// PreOperation of FILE_SYSTEM_CONTROL: refuses a user's FSCTL that would set, replace or
/// delete cloudflt's reparse point (the driver's own tagging goes below the filter).
///
/// # Safety
/// Called by FltMgr with valid callback data.
pub(crate) unsafe extern "system" fn pre_fs_control(
    data: *mut FLT_CALLBACK_DATA,
    objects: *const FLT_RELATED_OBJECTS,
    _completion_context: *mut *mut core::ffi::c_void,
) -> FLT_PREOP_CALLBACK_STATUS {
    // SAFETY: FltMgr passes valid callback data for the duration of the call.
    let Some(data) = (unsafe { data.as_mut() }) else {
        return FLT_PREOP_SUCCESS_NO_CALLBACK;
    };
    if data.Flags & FLTFL_CALLBACK_DATA_IRP_OPERATION == 0 {
        return FLT_PREOP_SUCCESS_NO_CALLBACK;
    }
    // SAFETY: Iopb points at the operation's parameter block, valid during the callback,
    // laid out as fltKernel.h declares it (nt::layout).
    let Some(iopb) = (unsafe { data.Iopb.cast::<FLT_IO_PARAMETER_BLOCK>().as_ref() }) else {
        return FLT_PREOP_SUCCESS_NO_CALLBACK;
    };
    if iopb.MinorFunction != IRP_MN_USER_FS_REQUEST {
        return FLT_PREOP_SUCCESS_NO_CALLBACK;
    }
    // SAFETY: FILE_SYSTEM_CONTROL with IRP_MN_USER_FS_REQUEST: the union holds the FSCTL
    // parameters.
    let control = unsafe { iopb.Parameters.FileSystemControl };
    // SAFETY: the Common member overlays the first three fields of every method.
    let common = unsafe { control.Common };
    if common.FsControlCode & 3 != METHOD_BUFFERED {
        return FLT_PREOP_SUCCESS_NO_CALLBACK;
    }
    if wants_get_reparse_post(common.FsControlCode, objects) {
        return FLT_PREOP_SYNCHRONIZE;
    }
    // SAFETY: METHOD_BUFFERED: the Buffered member describes the system buffer.
    let buffered = unsafe { control.Buffered };
    let length = buffered.InputBufferLength as usize;
    let input: &[u8] = if buffered.SystemBuffer.is_null() || length == 0 {
        &[]
    } else {
        // SAFETY: the I/O manager's system buffer holds at least InputBufferLength bytes,
        // captured from the caller before the IRP was sent, so reading it is safe.
        unsafe { core::slice::from_raw_parts(buffered.SystemBuffer.cast::<u8>(), length) }
    };
    if !tagguard::touches_tag(common.FsControlCode, input, cloudflt_proto::reparse::TAG) {
        return FLT_PREOP_SUCCESS_NO_CALLBACK;
    }
    debug_print!(
        "cloudflt: refused FSCTL {:#x} on cloudflt's tag",
        common.FsControlCode
    );
    data.IoStatus = IO_STATUS_BLOCK {
        Anonymous: IO_STATUS_BLOCK_0 {
            Status: STATUS_ACCESS_DENIED,
        },
        Information: 0,
    };
    FLT_PREOP_COMPLETE
}

/// Whether a FILE_SYSTEM_CONTROL is FSCTL_GET_REPARSE_POINT by a disguised open: then
/// `pre_fs_control` synchronises it for [`post_fs_control`].
pub(super) fn wants_get_reparse_post(code: u32, objects: *const FLT_RELATED_OBJECTS) -> bool {
    code == FSCTL_GET_REPARSE_POINT && disguised(objects)
}

/// PostOperation of FILE_SYSTEM_CONTROL (only FSCTL_GET_REPARSE_POINT of disguised opens,
/// synchronised): cloudflt's reparse point is scrubbed and answered
/// STATUS_NOT_A_REPARSE_POINT; other tags pass as they are.
///
/// # Safety
/// Called by FltMgr with valid callback data.
pub(crate) unsafe extern "system" fn post_fs_control(
    data: *mut FLT_CALLBACK_DATA,
    _objects: *const FLT_RELATED_OBJECTS,
    _completion_context: *const core::ffi::c_void,
    flags: u32,
) -> FLT_POSTOP_CALLBACK_STATUS {
    // SAFETY: FltMgr's callback data of this post-operation.
    let Some((d, iopb)) = (unsafe { completed(data, flags) }) else {
        return FLT_POSTOP_FINISHED_PROCESSING;
    };
    // SAFETY: FILE_SYSTEM_CONTROL: the union holds the FSCTL parameters.
    let control = unsafe { iopb.Parameters.FileSystemControl };
    // SAFETY: the Common member overlays the first fields of every method.
    let common = unsafe { control.Common };
    if common.FsControlCode != FSCTL_GET_REPARSE_POINT {
        return FLT_POSTOP_FINISHED_PROCESSING;
    }
    // SAFETY: METHOD_BUFFERED: the Buffered member describes the system buffer.
    let buffered = unsafe { control.Buffered };
    if buffered.SystemBuffer.is_null() || buffered.OutputBufferLength == 0 {
        return FLT_POSTOP_FINISHED_PROCESSING;
    }
    // SAFETY: the system buffer holds OutputBufferLength bytes of output.
    let output = unsafe {
        core::slice::from_raw_parts_mut(
            buffered.SystemBuffer.cast::<u8>(),
            buffered.OutputBufferLength as usize,
        )
    };
    if rewrite::scrub_reparse_point(output, d.IoStatus.Information) {
        d.IoStatus = IO_STATUS_BLOCK {
            Anonymous: IO_STATUS_BLOCK_0 {
                Status: STATUS_NOT_A_REPARSE_POINT,
            },
            Information: 0,
        };
        // SAFETY: live callback data in its post-operation.
        unsafe { FltSetCallbackDataDirty(d) };
    }
    FLT_POSTOP_FINISHED_PROCESSING
}
