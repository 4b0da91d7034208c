//! A probe filter for model tests: registers a minifilter with the given operation table
//! on the running machine and starts it, as a test's own stand-in for a driver. One probe
//! at a time (the model hosts one filter): its handle is kept here, and its unload
//! unregisters it.

use std::sync::atomic::{AtomicIsize, Ordering};

use windows_sys::Wdk::Foundation::DRIVER_OBJECT;
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FLT_OPERATION_REGISTRATION, FLT_REGISTRATION, PFLT_FILTER, PFLT_INSTANCE_SETUP_CALLBACK,
    PFLT_POST_OPERATION_CALLBACK, PFLT_PRE_OPERATION_CALLBACK,
};
use windows_sys::Win32::Foundation::{NTSTATUS, STATUS_SUCCESS};

use crate::model::fltmgr::{FltRegisterFilter, FltStartFiltering, FltUnregisterFilter};

/// IRP_MJ_OPERATION_END, which ends an operation table.
const OPERATION_END: u8 = 0x80;

static FILTER: AtomicIsize = AtomicIsize::new(0);

/// An operation table in a static: FLT_OPERATION_REGISTRATION holds raw pointers.
pub struct Operations<const N: usize>(pub [FLT_OPERATION_REGISTRATION; N]);

// SAFETY: an immutable table of function pointers, read by the model only.
unsafe impl<const N: usize> Sync for Operations<N> {}

/// One row of an operation table.
pub const fn op(
    major: u8,
    pre: PFLT_PRE_OPERATION_CALLBACK,
    post: PFLT_POST_OPERATION_CALLBACK,
) -> FLT_OPERATION_REGISTRATION {
    FLT_OPERATION_REGISTRATION {
        MajorFunction: major,
        Flags: 0,
        PreOperation: pre,
        PostOperation: post,
        Reserved1: std::ptr::null_mut(),
    }
}

/// The row that ends a table.
pub const END: FLT_OPERATION_REGISTRATION = op(OPERATION_END, None, None);

/// The running probe's filter.
pub fn filter() -> PFLT_FILTER {
    FILTER.load(Ordering::SeqCst)
}

unsafe extern "system" fn unload(_flags: u32) -> NTSTATUS {
    FltUnregisterFilter(filter());
    STATUS_SUCCESS
}

/// Registers a probe with `operations` (ending with [`END`]) and starts filtering.
pub fn start(operations: &'static [FLT_OPERATION_REGISTRATION]) -> PFLT_FILTER {
    start_with(operations, None)
}

/// As [`start`], with an InstanceSetupCallback.
pub fn start_with(
    operations: &'static [FLT_OPERATION_REGISTRATION],
    instance_setup: PFLT_INSTANCE_SETUP_CALLBACK,
) -> PFLT_FILTER {
    assert_eq!(
        operations.last().map(|o| o.MajorFunction),
        Some(OPERATION_END),
        "an operation table ends with END"
    );
    let registration = FLT_REGISTRATION {
        Size: std::mem::size_of::<FLT_REGISTRATION>() as u16,
        Version: 0x0203,
        OperationRegistration: operations.as_ptr(),
        FilterUnloadCallback: Some(unload),
        InstanceSetupCallback: instance_setup,
        ..Default::default()
    };
    // SAFETY: DRIVER_OBJECT is plain data; zero is valid.
    let driver: &'static DRIVER_OBJECT = Box::leak(Box::new(unsafe { std::mem::zeroed() }));
    let mut filter: PFLT_FILTER = 0;
    // SAFETY: a registration that outlives the call (FltMgr copies what it keeps).
    let status = unsafe { FltRegisterFilter(driver, &registration, &mut filter) };
    assert_eq!(status, STATUS_SUCCESS, "FltRegisterFilter");
    FILTER.store(filter, Ordering::SeqCst);
    assert_eq!(
        FltStartFiltering(filter),
        STATUS_SUCCESS,
        "FltStartFiltering"
    );
    filter
}

/// Stops the probe as FltMgr's unload would (its FilterUnloadCallback).
pub fn stop() -> NTSTATUS {
    // SAFETY: the probe's own unload callback, called once for the running probe.
    unsafe { unload(0) }
}
