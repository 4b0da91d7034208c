//! The one driver-state object and where it is published: reachable by every module,
//! below all of them (callbacks that get no cookie find the registered filter here).

use core::ptr::null_mut;
use core::sync::atomic::{AtomicIsize, AtomicPtr, Ordering};

use windows_sys::Wdk::Storage::FileSystem::Minifilters::PFLT_FILTER;

/// The one driver-state object, created by DriverEntry and freed by unload.
///
/// # Invariants
/// Once the server port exists, ConnectNotify may hold a shared reference to this object
/// on another thread, so from then on it is only ever accessed through `&Driver`: `filter`
/// is written once before the port is created, `server_port` is atomic.
pub(crate) struct Driver {
    pub(super) filter: PFLT_FILTER,
    pub(super) server_port: AtomicIsize,
}

impl Driver {
    /// The registered filter.
    pub(crate) fn filter(&self) -> PFLT_FILTER {
        self.filter
    }
}

/// The registered filter, while the driver is loaded (for callbacks that get no cookie).
pub(crate) fn filter() -> Option<PFLT_FILTER> {
    // SAFETY: a published state lives until teardown, and FltUnregisterFilter waits for
    // callbacks in flight before teardown frees it.
    let state = unsafe { DRIVER.load(Ordering::Acquire).as_ref() }?;
    (state.filter != 0).then_some(state.filter)
}

/// FilterUnload receives no context, so the state is reachable from here; callbacks that
/// get a cookie use the cookie instead.
pub(super) static DRIVER: AtomicPtr<Driver> = AtomicPtr::new(null_mut());
