//! User-mode buffers: the provider's reply buffer, which MessageNotify writes.
//!
//! Owns the one way the driver writes into user memory: [`SecuredOutput`], a range held
//! with MmSecureVirtualMemory(PAGE_READWRITE) for as long as the guard lives and released
//! with MmUnsecureVirtualMemory when it drops. Reading user memory is not done here:
//! MessageNotify copies its input with MmCopyMemory, which fails instead of faulting.
//!
//! Why securing: FltMgr hands MessageNotify the raw, unlocked user-mode pointers of
//! FilterSendMessage, "valid only in the context of the user-mode process" and to be
//! touched "only from within a try/except block" (PFLT_MESSAGE_NOTIFY). Rust has no
//! `__try`, so a plain store into a buffer that another thread of the provider freed,
//! decommitted or made read-only meanwhile is an unhandled kernel-mode access violation:
//! a bug check. MmSecureVirtualMemory closes that race: while the range is secured the
//! process can neither free it nor make its protection more restrictive than the probe
//! mode (ntddk.h, MmSecureVirtualMemory remarks), and a range that is already freed,
//! uncommitted or not writable is refused with NULL instead of being secured.
//!
//! KNOWN GAP (documented, not closed here): the same remarks say securing guarantees no
//! exception *from page permissions*, "but it does not protect against other types of
//! exceptions", e.g. the one raised when a page of the range must be read back from the
//! paging file and the disk block is bad (an in-page I/O error: the VAD is secured, the
//! page itself is not locked: PREfast warning 253, "MmSecureVirtualMemory locks VADs not
//! pages"). That store still faults without a handler. Only an
//! SEH-guarded copy closes it: a small C `__try`/`__except` shim built with clang for
//! both Windows targets, the step DESIGN.md names ("copied through an SEH-safe path").

use core::ffi::c_void;
use core::marker::PhantomData;
use core::ptr::NonNull;

use windows_sys::Wdk::System::SystemServices::{MmSecureVirtualMemory, MmUnsecureVirtualMemory};

/// `PAGE_READWRITE` (winnt.h): the probe mode under which the secured range must stay
/// readable and writable — it cannot be made PAGE_READONLY or PAGE_NOACCESS, nor freed.
const PAGE_READWRITE: u32 = 0x04;

/// A user-mode output range secured for writing; unsecured on drop.
///
/// # Invariants
/// `handle` is the non-NULL value MmSecureVirtualMemory(`base`, `len`, PAGE_READWRITE)
/// returned in the current process, not yet passed to MmUnsecureVirtualMemory: until it
/// is, all `len` bytes at `base` are committed and writable in this process.
///
/// The guard is neither `Send` nor `Sync`: MmUnsecureVirtualMemory must run in the context
/// of the process that secured the range, so the guard stays on the stack of the thread
/// (MessageNotify, in the provider's process) that made it.
#[must_use = "the range is unsecured as soon as the guard drops"]
pub(super) struct SecuredOutput {
    handle: NonNull<c_void>,
    base: NonNull<u8>,
    len: usize,
    _process_bound: PhantomData<*mut u8>,
}

impl SecuredOutput {
    /// Secures `len` bytes at `base` for writing, or `None` if MmSecureVirtualMemory
    /// returns NULL, "unable to secure the memory address range": on Windows because the
    /// range is not (or no longer) committed, is not writable, or is no user address of
    /// this process (MmSecureVirtualMemoryEx: "protection problems, noncommitted memory
    /// or invalid parameters").
    ///
    /// # Safety
    /// Called at IRQL <= APC_LEVEL (MmSecureVirtualMemory's documented maximum), on a
    /// thread running in the context of the process whose address `base` is (FltMgr
    /// calls MessageNotify in the provider's own context).
    pub(super) unsafe fn secure(base: *mut c_void, len: usize) -> Option<Self> {
        let base = NonNull::new(base.cast::<u8>())?;
        if len == 0 {
            return None;
        }
        // SAFETY: no memory is touched; MmSecureVirtualMemory validates the range itself
        // (user space, one allocation, committed and writable) and returns NULL when it
        // cannot secure it. IRQL and process context are the caller's contract.
        let handle = unsafe { MmSecureVirtualMemory(base.as_ptr().cast(), len, PAGE_READWRITE) };
        let handle = NonNull::new(handle)?;
        // INVARIANT: `handle` secures exactly [`base`, `base + len`) in this process.
        Some(Self {
            handle,
            base,
            len,
            _process_bound: PhantomData,
        })
    }

    /// Copies `bytes` to the start of the range; `false` (nothing written) if they do not
    /// fit.
    pub(super) fn write(&mut self, bytes: &[u8]) -> bool {
        if bytes.len() > self.len {
            return false;
        }
        // SAFETY: by the type's invariant the range is committed and writable for `len`
        // >= `bytes.len()` bytes and stays so while it is secured: the process can neither
        // free nor decommit it nor make it read-only. The source is our own kernel memory,
        // and a user range cannot overlap it. The remaining fault (an in-page error
        // reading a paged-out page back) is the known gap in the module header.
        unsafe {
            core::ptr::copy_nonoverlapping(bytes.as_ptr(), self.base.as_ptr(), bytes.len());
        }
        true
    }
}

impl Drop for SecuredOutput {
    fn drop(&mut self) {
        // SAFETY: the handle MmSecureVirtualMemory returned, unsecured once, here; the
        // guard is not `Send`, so this runs on the thread (and in the process context)
        // that secured it, at the IRQL it was secured at.
        unsafe { MmUnsecureVirtualMemory(self.handle.as_ptr()) };
    }
}
