//! The filter object and the driver's lifetime: DriverEntry, FilterUnload and the one
//! teardown both use.
//!
//! Teardown, in this order (avscan's `AvUnload` order):
//! 1. close the server port, so no provider can connect;
//! 2. stop the hydration alarm (its timer, DPC and work item);
//! 3. FltUnregisterFilter: FltMgr disconnects every provider (DisconnectNotify closes
//!    each client port), tears down every instance, waits for callbacks in flight and
//!    frees all contexts;
//! 4. free the driver state.
//!
//! DriverEntry's failure paths run the same teardown with only what exists so far.

use core::ptr::{NonNull, null_mut};

use core::sync::atomic::{AtomicIsize, Ordering};

use windows_sys::Wdk::Foundation::DRIVER_OBJECT;
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FLT_REGISTRATION, FLT_REGISTRATION_VERSION_0203, FltCloseCommunicationPort, FltRegisterFilter,
    FltStartFiltering, FltUnregisterFilter,
};
use windows_sys::Win32::Foundation::{
    NTSTATUS, STATUS_INSUFFICIENT_RESOURCES, STATUS_INVALID_DEVICE_STATE, STATUS_SUCCESS,
    UNICODE_STRING,
};

use super::driver::{DRIVER, Driver};
use super::instance;
use super::pool::{PoolBox, TAG_DRIVER};
use super::populate;
use super::port;
use super::registration;
use super::roots;
use super::status::nt_success;
use super::{hydrate, notify};

/// DriverEntry: registers the filter, creates the port, starts filtering.
///
/// On failure everything done so far is undone and the failing status returned, so the
/// I/O manager can unload the image without leaking.
///
/// # Safety
/// Called once by the I/O manager at PASSIVE_LEVEL with its driver object (the exported
/// `DriverEntry` of the image, or the kernel model on a host).
pub unsafe fn driver_entry(
    driver_object: *mut DRIVER_OBJECT,
    registry_path: *const UNICODE_STRING,
) -> NTSTATUS {
    // Each load resolves \SystemRoot afresh (the statics outlive an unload where the image
    // stays mapped, as in the kernel model).
    super::disguise::forget_system_root();
    let state = Driver {
        filter: 0,
        server_port: AtomicIsize::new(0),
    };
    let Some(mut state) = PoolBox::try_new(state, TAG_DRIVER) else {
        return STATUS_INSUFFICIENT_RESOURCES;
    };
    // SAFETY: `driver_object` is ours; REGISTRATION is a static that outlives the filter;
    // `state.filter` is a valid out pointer. PASSIVE_LEVEL.
    let status = unsafe { FltRegisterFilter(driver_object, &REGISTRATION.0, &mut state.filter) };
    if !nt_success(status) {
        return status;
    }
    // Published before anything can call FilterUnload, i.e. before FltStartFiltering.
    let raw = PoolBox::into_raw(state);
    if DRIVER
        .compare_exchange(
            null_mut(),
            raw.as_ptr(),
            Ordering::AcqRel,
            Ordering::Acquire,
        )
        .is_err()
    {
        // SAFETY: `raw` was just made by `into_raw` and was never published.
        teardown(unsafe { PoolBox::from_raw(raw, TAG_DRIVER) });
        return STATUS_INVALID_DEVICE_STATE;
    }
    // SAFETY: the live driver state, freed only by teardown, which cannot run before
    // DriverEntry returns; shared access only (type invariant).
    let state = unsafe { raw.as_ref() };
    let status = hydrate::start(state.filter);
    if !nt_success(status) {
        unpublish_and_teardown();
        return status;
    }
    let status = notify::start(state.filter);
    if !nt_success(status) {
        unpublish_and_teardown();
        return status;
    }
    let status = populate::start(state.filter);
    if !nt_success(status) {
        unpublish_and_teardown();
        return status;
    }
    // The registered sync roots, before the port lets anyone ask about them.
    // SAFETY: the I/O manager's UNICODE_STRING, valid during DriverEntry.
    let service_key = unsafe { registry_path.as_ref() }
        .filter(|s| !s.Buffer.is_null())
        // SAFETY: `Length` bytes of UTF-16 at `Buffer`, as the I/O manager passes them.
        .map(|s| unsafe { core::slice::from_raw_parts(s.Buffer, usize::from(s.Length / 2)) })
        .unwrap_or(&[]);
    roots::start(service_key);
    let status = match port::create(state.filter, raw.as_ptr()) {
        Ok(server_port) => {
            state.server_port.store(server_port, Ordering::Release);
            // SAFETY: the registered filter; PASSIVE_LEVEL.
            unsafe { FltStartFiltering(state.filter) }
        }
        Err(status) => status,
    };
    if !nt_success(status) {
        debug_print!("cloudflt: DriverEntry failed with {status:#010x}");
        unpublish_and_teardown();
        return status;
    }
    debug_print!("cloudflt: loaded");
    STATUS_SUCCESS
}

/// FilterUnloadCallback. Unload is always allowed: a test-signed development filter must
/// come off with `fltmc unload`, and teardown leaves nothing pending behind.
///
/// # Safety
/// Called by FltMgr at PASSIVE_LEVEL, once, after a successful DriverEntry.
pub(super) unsafe extern "system" fn filter_unload(_flags: u32) -> NTSTATUS {
    unpublish_and_teardown();
    STATUS_SUCCESS
}

fn unpublish_and_teardown() {
    if let Some(state) = NonNull::new(DRIVER.swap(null_mut(), Ordering::AcqRel)) {
        // SAFETY: the published pointer came from `PoolBox::into_raw` in DriverEntry and
        // the swap gave this caller sole ownership.
        teardown(unsafe { PoolBox::from_raw(state, TAG_DRIVER) });
    }
}

/// The teardown of the module comment; each step only for what exists.
///
/// Only shared access to the state until FltUnregisterFilter has returned: a ConnectNotify
/// already under way may still be reading it (type invariant).
fn teardown(state: PoolBox<Driver>) {
    let server_port = state.server_port.swap(0, Ordering::AcqRel);
    if server_port != 0 {
        // SAFETY: the port created by DriverEntry, closed once (the swap took it);
        // PASSIVE_LEVEL.
        unsafe { FltCloseCommunicationPort(server_port) };
    }
    // No DPC or work item of the driver may outlive it; fetches still outstanding are
    // failed by the instances' teardown and the providers' disconnect below.
    hydrate::stop();
    notify::stop();
    populate::stop();
    if state.filter != 0 {
        // SAFETY: the filter registered by DriverEntry, unregistered once; returns after
        // every callback, connection and instance is gone.
        unsafe { FltUnregisterFilter(state.filter) };
    }
    roots::stop();
    drop(state);
}

/// FLT_REGISTRATION holds raw pointers, which are not `Sync`; this one points only at
/// other immutable statics.
#[repr(transparent)]
struct Registration(FLT_REGISTRATION);

// SAFETY: the registration and everything it points to are immutable statics, read by
// FltMgr only.
unsafe impl Sync for Registration {}

/// What DriverEntry passes to FltRegisterFilter.
static REGISTRATION: Registration = Registration(FLT_REGISTRATION {
    Size: core::mem::size_of::<FLT_REGISTRATION>() as u16,
    Version: FLT_REGISTRATION_VERSION_0203 as u16,
    Flags: 0,
    ContextRegistration: registration::CONTEXTS.0.as_ptr(),
    OperationRegistration: registration::OPERATIONS.0.as_ptr(),
    FilterUnloadCallback: Some(filter_unload),
    InstanceSetupCallback: Some(instance::instance_setup),
    InstanceQueryTeardownCallback: Some(instance::instance_query_teardown),
    InstanceTeardownStartCallback: Some(instance::instance_teardown_start),
    InstanceTeardownCompleteCallback: None,
    GenerateFileNameCallback: None,
    NormalizeNameComponentCallback: None,
    NormalizeContextCleanupCallback: None,
    TransactionNotificationCallback: None,
    NormalizeNameComponentExCallback: None,
    SectionNotificationCallback: None,
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_is_version_0203_with_its_exact_size() {
        let r = &REGISTRATION.0;
        assert_eq!(r.Version, 0x0203);
        // x64 layout of FLT_REGISTRATION with SectionNotificationCallback (fltKernel.h).
        #[cfg(target_pointer_width = "64")]
        assert_eq!(r.Size, 0x70);
    }
}
