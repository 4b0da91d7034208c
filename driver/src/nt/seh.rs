//! Exception-guarded access to user memory: the driver's `__try`/`__except`.
//!
//! Owns the two guarded primitives and the one mapping from a caught exception to the
//! status the provider gets:
//! - [`copy`]: a copy whose source or destination is a user-mode address, that returns
//!   the exception code (STATUS_ACCESS_VIOLATION for a freed, decommitted or protected
//!   page, STATUS_IN_PAGE_ERROR for a page the pager cannot read back) instead of
//!   faulting without a handler, which is a bug check;
//! - [`probe_and_lock`]: MmProbeAndLockPages inside the guard — it reports a range it
//!   cannot lock only by raising, so an unguarded call on a bad user range is a bug check.
//!
//! In the image they are `cloudflt_seh_copy` / `cloudflt_seh_call3`, assembly with SEH
//! unwind data and `__C_specific_handler` as handler (`rt::seh`). On the host the kernel
//! model defines the same symbols over its model of user memory: it checks each page
//! instead of touching a bad one and reports an unguarded MmProbeAndLockPages of a bad
//! range as the bug check Windows would make of it.
//!
//! A guard only catches faults on *user* addresses (a bad kernel address is a bug check
//! whatever handler is set up); the callers pass the user pointers FltMgr handed
//! MessageNotify, which FltMgr checked with ProbeForRead to lie in user space.

use core::ffi::c_void;

use windows_sys::Wdk::Foundation::MDL;
use windows_sys::Wdk::System::SystemServices::{LOCK_OPERATION, MmProbeAndLockPages};
use windows_sys::Win32::Foundation::{
    NTSTATUS, STATUS_ACCESS_VIOLATION, STATUS_DATATYPE_MISALIGNMENT, STATUS_INVALID_USER_BUFFER,
    STATUS_SUCCESS,
};

unsafe extern "system" {
    /// Copies `len` bytes from `src` to `dst` inside a guard: STATUS_SUCCESS, or the code
    /// of the exception that stopped it (some bytes may have been copied).
    fn cloudflt_seh_copy(dst: *mut u8, src: *const u8, len: usize) -> NTSTATUS;
    /// Calls `f(a, b, c)` inside a guard: STATUS_SUCCESS once it returns (its own return
    /// value, if any, is dropped), or the code of the exception it raised.
    fn cloudflt_seh_call3(f: *const c_void, a: usize, b: usize, c: usize) -> NTSTATUS;
}

/// Copies `dst.len()` bytes from `src` into `dst`, guarded; `Err(code)` with the
/// exception's code if a page of the source could not be read.
///
/// # Safety
/// `src` is a user-mode address of the current process (in the provider's context: the
/// callback's contract), or kernel memory valid for `dst.len()` bytes. IRQL <= APC_LEVEL
/// (a user page may have to be paged in).
pub(crate) unsafe fn copy_from_user(dst: &mut [u8], src: *const u8) -> Result<(), NTSTATUS> {
    // SAFETY: `dst` is our own writable memory of that length; the source is the caller's
    // contract, and any fault on it is caught by the guard.
    unsafe { copy(dst.as_mut_ptr(), src, dst.len()) }
}

/// Copies `src` to the user-mode address `dst`, guarded; `Err(code)` with the exception's
/// code if a page of the destination could not be written (nothing can be said then about
/// how much of it was).
///
/// # Safety
/// `dst` is a user-mode address of the current process. IRQL <= APC_LEVEL.
pub(crate) unsafe fn copy_to_user(dst: *mut u8, src: &[u8]) -> Result<(), NTSTATUS> {
    // SAFETY: as for `copy_from_user`, the kernel side is our own slice.
    unsafe { copy(dst, src.as_ptr(), src.len()) }
}

/// The guarded copy.
///
/// # Safety
/// One side is our own memory valid for `len` bytes, the other a user-mode address of the
/// current process; IRQL <= APC_LEVEL.
unsafe fn copy(dst: *mut u8, src: *const u8, len: usize) -> Result<(), NTSTATUS> {
    if len == 0 {
        return Ok(());
    }
    // SAFETY: the caller's contract; every fault on the user side is caught and returned.
    let status = unsafe { cloudflt_seh_copy(dst, src, len) };
    if status == STATUS_SUCCESS {
        Ok(())
    } else {
        Err(status)
    }
}

/// MmProbeAndLockPages(`mdl`, `mode`, `operation`) inside the guard: `Ok` once the pages
/// are locked (the caller owes MmUnlockPages), `Err(code)` with the code it raised and
/// nothing locked.
///
/// # Safety
/// `mdl` is an MDL from IoAllocateMdl describing a user range of the current process (for
/// `mode` UserMode) and not locked yet; IRQL <= APC_LEVEL (DISPATCH_LEVEL only for
/// non-paged kernel memory, which this driver never probes).
pub(crate) unsafe fn probe_and_lock(
    mdl: *mut MDL,
    mode: i8,
    operation: LOCK_OPERATION,
) -> Result<(), NTSTATUS> {
    let probe: unsafe extern "system" fn(*mut MDL, i8, LOCK_OPERATION) = MmProbeAndLockPages;
    // SAFETY: `probe` has three register-sized (or smaller) arguments, which the
    // guarded call passes in the registers the Windows ABI puts them in; the MDL and mode
    // are the caller's contract, and the exception MmProbeAndLockPages raises for a range
    // it cannot lock is caught.
    let status = unsafe {
        cloudflt_seh_call3(
            probe as *const c_void,
            mdl as usize,
            mode as u8 as usize,
            operation as u32 as usize,
        )
    };
    if status == STATUS_SUCCESS {
        Ok(())
    } else {
        Err(status)
    }
}

/// The status a provider gets when a guarded access to one of its buffers faulted with
/// `code`: the buffer is bad (freed, decommitted, protected, misaligned) —
/// STATUS_INVALID_USER_BUFFER, "the supplied user buffer is not valid for the requested
/// operation" — or, for any other exception (an in-page error above all), that exception's
/// own code, which says more than a generic failure.
pub(crate) fn user_buffer_status(code: NTSTATUS) -> NTSTATUS {
    match code {
        STATUS_ACCESS_VIOLATION | STATUS_DATATYPE_MISALIGNMENT => STATUS_INVALID_USER_BUFFER,
        other => other,
    }
}
