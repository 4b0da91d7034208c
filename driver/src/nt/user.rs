//! User-mode buffers: the provider's message (its data locked in place) and its reply
//! buffer, which MessageNotify writes.
//!
//! Owns every way the driver touches a provider's memory:
//! - [`UserData`], the part of the input that is not copied: a transfer's data. It is
//!   read only through [`UserData::copy_out`] (a guarded copy, for a partial last unit)
//!   or locked with [`UserData::lock`] into [`LockedUserPages`], an MDL probed and locked
//!   under the exception guard and unlocked and freed when it drops, which the
//!   non-cached write takes as it is: the bytes go from the provider's pages to the disk
//!   with no copy in pool.
//! - [`SecuredOutput`], the reply range held with MmSecureVirtualMemory(PAGE_READWRITE)
//!   for as long as the guard lives, and written with a guarded copy.
//!
//! The rest of the input (the header, and every message that is not a transfer) is
//! copied into kernel memory with a guarded copy by `port` before it is parsed.
//!
//! Why both securing and a guard for the reply: FltMgr hands MessageNotify the raw,
//! unlocked user-mode pointers of FilterSendMessage, "valid only in the context of the
//! user-mode process" and to be touched "only from within a try/except block"
//! (PFLT_MESSAGE_NOTIFY). The guard ([`super::seh`]) turns any fault into a status —
//! the provider's other thread freeing or protecting the buffer, or a page that cannot
//! be read back from the paging file (an in-page error, which securing does not prevent:
//! "it does not protect against other types of exceptions", MmSecureVirtualMemory
//! remarks). Securing stays for what it adds on top: it is taken *before* the request is
//! carried out, so a reply buffer that is already bad refuses the request with nothing
//! done, and once it is secured the provider can no longer free it or take write access
//! away (its VirtualFree / VirtualProtect fails) until the reply is written — a request
//! carried out is then answered except for an in-page error.

use core::ffi::c_void;
use core::marker::PhantomData;
use core::ptr::NonNull;

use windows_sys::Wdk::Foundation::MDL;
use windows_sys::Wdk::System::SystemServices::{
    IoAllocateMdl, IoFreeMdl, IoReadAccess, MmSecureVirtualMemory, MmUnlockPages,
    MmUnsecureVirtualMemory, UserMode,
};
use windows_sys::Win32::Foundation::{NTSTATUS, STATUS_INSUFFICIENT_RESOURCES};

use super::seh;

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

    /// Copies `bytes` to the start of the range, guarded: `Ok(false)` (nothing written)
    /// if they do not fit, `Err(code)` with the exception's code if a page of the range
    /// faulted (an in-page error: securing rules out the rest).
    pub(super) fn write(&mut self, bytes: &[u8]) -> Result<bool, NTSTATUS> {
        if bytes.len() > self.len {
            return Ok(false);
        }
        // SAFETY: by the type's invariant `base` is a user address of the current process
        // (the guard is not `Send`, so this is still MessageNotify's thread, at
        // PASSIVE_LEVEL) with room for `len` >= `bytes.len()` bytes; the guard catches
        // whatever fault touching it raises.
        unsafe { seh::copy_to_user(self.base.as_ptr(), bytes) }?;
        Ok(true)
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

/// A span of a provider's input buffer that is not copied: a transfer's data, where the
/// provider's FilterSendMessage left it.
///
/// # Invariants
/// `base` is a user-mode address of the current process that FltMgr handed MessageNotify
/// (FltMgr checked the input buffer with ProbeForRead, so `[base, base + len)` lies in
/// user space), and `len` bytes from it are inside that buffer. The pages may go bad at
/// any moment (another thread of the provider); they are only ever touched under the
/// guard. Not `Send`: the address means something only in the provider's process, on
/// MessageNotify's thread.
pub(crate) struct UserData {
    base: NonNull<u8>,
    len: usize,
    _process_bound: PhantomData<*mut u8>,
}

impl UserData {
    /// The `len` bytes at `base` of the input buffer of the MessageNotify call running on
    /// this thread.
    ///
    /// # Safety
    /// `base` and `len` lie inside that input buffer, and the value is used only during
    /// the call, on this thread.
    pub(super) unsafe fn new(base: NonNull<u8>, len: usize) -> Self {
        // INVARIANT: the caller's contract; FltMgr probed the whole input buffer.
        Self {
            base,
            len,
            _process_bound: PhantomData,
        }
    }

    /// How many bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Whether the bytes start at a multiple of `align` (a power of two), as a
    /// non-cached write's buffer must.
    pub(crate) fn aligned_to(&self, align: usize) -> bool {
        (self.base.as_ptr() as usize) & (align.wrapping_sub(1)) == 0
    }

    /// Copies the bytes from `from` on into `dst` (`dst.len()` of them), guarded;
    /// STATUS_INVALID_PARAMETER if they are not all inside, the provider-facing status
    /// ([`seh::user_buffer_status`]) if a page faulted.
    pub(crate) fn copy_out(&self, from: usize, dst: &mut [u8]) -> Result<(), NTSTATUS> {
        let end = from.checked_add(dst.len());
        if end.is_none_or(|end| end > self.len) {
            return Err(windows_sys::Win32::Foundation::STATUS_INVALID_PARAMETER);
        }
        // SAFETY: `from + dst.len() <= len`, so the source stays inside the probed user
        // range of this process (the type's invariant; not `Send`, so still the
        // MessageNotify thread at PASSIVE_LEVEL); the guard catches any fault.
        unsafe { seh::copy_from_user(dst, self.base.as_ptr().wrapping_add(from)) }
            .map_err(seh::user_buffer_status)
    }

    /// Locks the `len` bytes from `from` on for reading: an MDL from IoAllocateMdl, probed
    /// and locked (UserMode, IoReadAccess) under the guard. STATUS_INSUFFICIENT_RESOURCES
    /// if no MDL could be had, the provider-facing status of the fault if the pages could
    /// not be locked (nothing is left locked or allocated then).
    pub(crate) fn lock_at(&self, from: usize, len: usize) -> Result<LockedUserPages, NTSTATUS> {
        let length = u32::try_from(len)
            .ok()
            .filter(|&l| l > 0 && from.checked_add(len).is_some_and(|end| end <= self.len))
            .ok_or(windows_sys::Win32::Foundation::STATUS_INVALID_PARAMETER)?;
        // SAFETY: no memory is touched: IoAllocateMdl only records the range (it must be
        // at most 4 GiB less a page, which 1 MiB transfers are); no IRP; PASSIVE_LEVEL.
        let mdl = unsafe {
            IoAllocateMdl(
                self.base.as_ptr().wrapping_add(from).cast(),
                length,
                false,
                false,
                core::ptr::null_mut(),
            )
        };
        let mdl = NonNull::new(mdl).ok_or(STATUS_INSUFFICIENT_RESOURCES)?;
        // SAFETY: a fresh MDL describing a user range of this process (the type's
        // invariant), not locked yet; UserMode makes MmProbeAndLockPages check that the
        // range is user space as well as accessible; PASSIVE_LEVEL; a fault is caught.
        let locked = unsafe { seh::probe_and_lock(mdl.as_ptr(), UserMode as i8, IoReadAccess) };
        match locked {
            // INVARIANT: the pages are locked until the guard drops.
            Ok(()) => Ok(LockedUserPages { mdl }),
            Err(code) => {
                // SAFETY: ours, never locked (MmProbeAndLockPages raised and unlocked what
                // it had locked), freed once.
                unsafe { IoFreeMdl(mdl.as_ptr()) };
                Err(seh::user_buffer_status(code))
            }
        }
    }
}

/// Pages of a provider's buffer locked for reading, described by their MDL; unlocked and
/// the MDL freed on drop.
///
/// # Invariants
/// `mdl` came from IoAllocateMdl and MmProbeAndLockPages locked it; neither undone yet.
/// The physical pages stay resident and this MDL keeps describing them whatever the
/// provider does with the virtual range meanwhile (freeing it only drops its mapping).
#[must_use = "the pages are unlocked as soon as the guard drops"]
pub(crate) struct LockedUserPages {
    mdl: NonNull<MDL>,
}

impl LockedUserPages {
    /// The MDL, to hand to an I/O that reads from it while the guard lives.
    pub(crate) fn mdl(&self) -> *mut MDL {
        self.mdl.as_ptr()
    }
}

impl Drop for LockedUserPages {
    fn drop(&mut self) {
        // SAFETY: locked by MmProbeAndLockPages and allocated by IoAllocateMdl (the type's
        // invariant), each undone once, here, after every I/O that used it completed (the
        // writes that take it are synchronous); MmUnlockPages and IoFreeMdl need no
        // process context and run at <= DISPATCH_LEVEL.
        unsafe { MmUnlockPages(self.mdl.as_ptr()) };
        // SAFETY: as above; the pages are unlocked, so the MDL may go.
        unsafe { IoFreeMdl(self.mdl.as_ptr()) };
    }
}
