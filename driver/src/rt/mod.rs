//! What only the built image needs: the `DriverEntry` export, the global allocator, the
//! panic handler and the symbols the prebuilt `core` library expects from a C runtime.
//!
//! With feature `wdk` the allocator and panic handler come from wdk-alloc and wdk-panic,
//! as in the windows-drivers-rs samples; otherwise they are defined here.

use windows_sys::Wdk::Foundation::DRIVER_OBJECT;
use windows_sys::Win32::Foundation::{NTSTATUS, UNICODE_STRING};

/// The image's entry point and only export.
///
/// # Safety
/// Called once by the I/O manager at PASSIVE_LEVEL.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn DriverEntry(
    driver_object: *mut DRIVER_OBJECT,
    registry_path: *const UNICODE_STRING,
) -> NTSTATUS {
    // SAFETY: forwarded unchanged from the I/O manager.
    unsafe { crate::nt::driver_entry(driver_object, registry_path) }
}

#[cfg(feature = "wdk")]
extern crate wdk_panic;

#[cfg(feature = "wdk")]
#[global_allocator]
static ALLOCATOR: wdk_alloc::WdkAllocator = wdk_alloc::WdkAllocator;

#[cfg(not(feature = "wdk"))]
mod lld;
mod seh;
