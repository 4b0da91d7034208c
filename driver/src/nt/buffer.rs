//! I/O buffers of operations, reached through a system address: the MDL the
//! pre-operation's FltLockUserBuffer made, mapped as MmGetSystemAddressForMdlSafe does.
//! The caller's user-mode address is never touched: another thread of its process could
//! free those pages at any moment, and Rust has no exception guard for the fault. A
//! kernel-mode caller's buffer without an MDL is a system address already.

use core::ptr::NonNull;

use windows_sys::Wdk::Foundation::MDL;
use windows_sys::Wdk::System::SystemServices::{
    MdlMappingNoExecute, MmCached, MmMapLockedPagesSpecifyCache, NormalPagePriority,
};

/// MDL_MAPPED_TO_SYSTEM_VA (wdm.h).
const MDL_MAPPED_TO_SYSTEM_VA: i16 = 0x0001;
/// MDL_SOURCE_IS_NONPAGED_POOL (wdm.h).
const MDL_SOURCE_IS_NONPAGED_POOL: i16 = 0x0004;
/// KernelMode.
pub(crate) const KERNEL_MODE: i8 = 0;

/// `length` bytes of an operation's buffer at a system address: through `mdl` if it has
/// one, else `user` when the requestor is kernel mode. `None` when neither exists, the
/// MDL is shorter than `length`, or the mapping fails.
///
/// # Safety
/// `mdl` is NULL or the operation's live MDL (locked by FltLockUserBuffer or given by the
/// requestor); `user` is the operation's buffer; the slice must not outlive the operation.
pub(crate) unsafe fn system_buffer<'a>(
    requestor_mode: i8,
    user: *mut core::ffi::c_void,
    mdl: *mut MDL,
    length: usize,
) -> Option<&'a mut [u8]> {
    let address = match NonNull::new(mdl) {
        Some(mdl) => {
            // SAFETY: the operation's MDL, alive until the operation completes.
            let (flags, mapped, count) = unsafe {
                let m = mdl.as_ref();
                (m.MdlFlags, m.MappedSystemVa, m.ByteCount)
            };
            if (count as usize) < length {
                return None;
            }
            if flags & (MDL_MAPPED_TO_SYSTEM_VA | MDL_SOURCE_IS_NONPAGED_POOL) != 0 {
                mapped
            } else {
                // SAFETY: a locked MDL; a kernel-mode mapping owned by the MDL, released
                // by the I/O manager when it frees it; IRQL <= DISPATCH_LEVEL.
                unsafe {
                    MmMapLockedPagesSpecifyCache(
                        mdl.as_ptr(),
                        KERNEL_MODE,
                        MmCached,
                        core::ptr::null(),
                        0,
                        NormalPagePriority as u32 | MdlMappingNoExecute,
                    )
                }
            }
        }
        None if requestor_mode == KERNEL_MODE => user,
        None => return None,
    };
    if address.is_null() {
        return None;
    }
    // SAFETY: `length` bytes at a system address (checked against the MDL's byte count),
    // valid until the operation completes (the caller's contract).
    Some(unsafe { core::slice::from_raw_parts_mut(address.cast::<u8>(), length) })
}
