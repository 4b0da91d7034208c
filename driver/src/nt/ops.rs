//! The I/O callbacks of the operation table.
//!
//! FILE_SYSTEM_CONTROL guards cloudflt's reparse tag (engine::tagguard); every other
//! operation passes through untouched until hydration and disguise are built.

use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FLT_CALLBACK_DATA, FLT_POSTOP_CALLBACK_STATUS, FLT_POSTOP_FINISHED_PROCESSING,
    FLT_PREOP_CALLBACK_STATUS, FLT_PREOP_COMPLETE, FLT_PREOP_SUCCESS_NO_CALLBACK,
    FLT_RELATED_OBJECTS, FLTFL_CALLBACK_DATA_IRP_OPERATION,
};
use windows_sys::Win32::Foundation::STATUS_ACCESS_DENIED;
use windows_sys::Win32::System::IO::{IO_STATUS_BLOCK, IO_STATUS_BLOCK_0};

use crate::engine::tagguard;

/// PreOperation for every registered operation: pass the I/O down unchanged.
///
/// # Safety
/// Called by FltMgr with valid callback data.
pub(super) unsafe extern "system" fn pre_pass_through(
    _data: *mut FLT_CALLBACK_DATA,
    _objects: *const FLT_RELATED_OBJECTS,
    _completion_context: *mut *mut core::ffi::c_void,
) -> FLT_PREOP_CALLBACK_STATUS {
    FLT_PREOP_SUCCESS_NO_CALLBACK
}

/// PostOperation of CREATE: nothing to do after an open yet.
///
/// # Safety
/// Called by FltMgr with valid callback data.
pub(super) unsafe extern "system" fn post_create(
    _data: *mut FLT_CALLBACK_DATA,
    _objects: *const FLT_RELATED_OBJECTS,
    _completion_context: *const core::ffi::c_void,
    _flags: u32,
) -> FLT_POSTOP_CALLBACK_STATUS {
    FLT_POSTOP_FINISHED_PROCESSING
}

/// METHOD_BUFFERED: the only transfer method of the reparse-point FSCTLs.
const METHOD_BUFFERED: u32 = 0;
/// IRP_MN_USER_FS_REQUEST.
const IRP_MN_USER_FS_REQUEST: u8 = 0;

/// PreOperation of FILE_SYSTEM_CONTROL: refuses a user's FSCTL that would set, replace or
/// delete cloudflt's reparse point (the driver's own tagging goes below the filter).
///
/// # Safety
/// Called by FltMgr with valid callback data.
pub(super) unsafe extern "system" fn pre_fs_control(
    data: *mut FLT_CALLBACK_DATA,
    _objects: *const FLT_RELATED_OBJECTS,
    _completion_context: *mut *mut core::ffi::c_void,
) -> FLT_PREOP_CALLBACK_STATUS {
    // SAFETY: FltMgr passes valid callback data for the duration of the call.
    let Some(data) = (unsafe { data.as_mut() }) else {
        return FLT_PREOP_SUCCESS_NO_CALLBACK;
    };
    if data.Flags & FLTFL_CALLBACK_DATA_IRP_OPERATION == 0 {
        return FLT_PREOP_SUCCESS_NO_CALLBACK;
    }
    // SAFETY: Iopb points at the operation's parameter block, valid during the callback.
    let Some(iopb) = (unsafe { data.Iopb.as_ref() }) else {
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
