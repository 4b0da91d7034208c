//! The I/O callbacks of the operation table.
//!
//! Until placeholders exist (hydration, disguise and tag protection are separate pieces
//! of work), every operation passes through untouched and asks for no post callback.

use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FLT_CALLBACK_DATA, FLT_POSTOP_CALLBACK_STATUS, FLT_POSTOP_FINISHED_PROCESSING,
    FLT_PREOP_CALLBACK_STATUS, FLT_PREOP_SUCCESS_NO_CALLBACK, FLT_RELATED_OBJECTS,
};

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
