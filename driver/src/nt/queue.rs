//! The cancel-safe queue of each instance, where pended reads wait (FltCbdq).
//!
//! The reads themselves are tracked in the hydration table, which decides when each one
//! ends; the queue is there for what only FltMgr can do: cancel a pended operation
//! safely. So the list callbacks keep no list of their own (nothing is ever taken with
//! FltCbdqRemoveNextIo: settled reads are taken by their IO_CSQ_IRP_CONTEXT), and the
//! queue's lock is a spin lock of its own, taken under the hydration table's lock and
//! never the other way round.

use core::cell::UnsafeCell;

use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FLT_CALLBACK_DATA, FLT_CALLBACK_DATA_QUEUE, FltCbdqDisable, FltCbdqInitialize,
    PFLT_CALLBACK_DATA_QUEUE_COMPLETE_CANCELED_IO, PFLT_INSTANCE,
};
use windows_sys::Wdk::System::SystemServices::{KeAcquireSpinLockForDpc, KeReleaseSpinLockForDpc};
use windows_sys::Win32::Foundation::{NTSTATUS, STATUS_SUCCESS};

/// A queue and its lock; `repr(C)` with the queue first, so the queue's address is the
/// whole's.
#[repr(C)]
pub(crate) struct PendedQueue {
    pub(crate) cbdq: UnsafeCell<FLT_CALLBACK_DATA_QUEUE>,
    /// A KSPIN_LOCK (zero: free, as KeInitializeSpinLock sets it).
    lock: UnsafeCell<usize>,
}

impl PendedQueue {
    /// A queue to initialise with [`PendedQueue::init`] once it is at its final address.
    pub(crate) fn new() -> Self {
        Self {
            // SAFETY: plain data, filled by FltCbdqInitialize.
            cbdq: UnsafeCell::new(unsafe { core::mem::zeroed() }),
            lock: UnsafeCell::new(0),
        }
    }

    /// FltCbdqInitialize for `instance`, with `complete` as the cancel path. The queue
    /// must not move afterwards (it lives in the instance context).
    pub(crate) fn init(
        &self,
        instance: PFLT_INSTANCE,
        complete: PFLT_CALLBACK_DATA_QUEUE_COMPLETE_CANCELED_IO,
    ) -> NTSTATUS {
        // SAFETY: the queue at its final address, not yet used; the callbacks below.
        unsafe {
            FltCbdqInitialize(
                instance,
                self.cbdq.get(),
                Some(insert),
                Some(remove),
                Some(peek),
                Some(acquire),
                Some(release),
                complete,
            )
        }
    }

    /// Refuses new inserts (InstanceTeardownStart).
    pub(crate) fn disable(&self) {
        // SAFETY: an initialised queue.
        unsafe { FltCbdqDisable(self.cbdq.get()) };
    }

    pub(crate) fn raw(&self) -> *mut FLT_CALLBACK_DATA_QUEUE {
        self.cbdq.get()
    }
}

/// The lock of the queue at `cbdq`.
///
/// # Safety
/// `cbdq` is the `cbdq` field of a live [`PendedQueue`].
unsafe fn lock_of(cbdq: *const FLT_CALLBACK_DATA_QUEUE) -> *mut usize {
    // SAFETY: the caller's contract; `repr(C)` puts the queue first.
    unsafe { (*cbdq.cast::<PendedQueue>()).lock.get() }
}

unsafe extern "system" fn insert(
    _cbdq: *mut FLT_CALLBACK_DATA_QUEUE,
    _cbd: *const FLT_CALLBACK_DATA,
    _context: *const core::ffi::c_void,
) -> NTSTATUS {
    STATUS_SUCCESS
}

unsafe extern "system" fn remove(
    _cbdq: *mut FLT_CALLBACK_DATA_QUEUE,
    _cbd: *const FLT_CALLBACK_DATA,
) {
}

unsafe extern "system" fn peek(
    _cbdq: *const FLT_CALLBACK_DATA_QUEUE,
    _cbd: *const FLT_CALLBACK_DATA,
    _context: *const core::ffi::c_void,
) -> *mut FLT_CALLBACK_DATA {
    core::ptr::null_mut()
}

/// # Safety
/// Called by FltMgr with one of our queues and a place for the old IRQL.
unsafe extern "system" fn acquire(cbdq: *mut FLT_CALLBACK_DATA_QUEUE, irql: *mut u8) {
    // SAFETY: our queue (the only ones initialised with these callbacks).
    let lock = unsafe { lock_of(cbdq) };
    // SAFETY: an initialised spin lock; raises to DISPATCH_LEVEL if below it.
    let old = unsafe { KeAcquireSpinLockForDpc(lock) };
    // SAFETY: FltMgr's out pointer.
    if let Some(out) = unsafe { irql.as_mut() } {
        *out = old;
    }
}

/// # Safety
/// Called by FltMgr with one of our queues and the IRQL `acquire` returned.
unsafe extern "system" fn release(cbdq: *mut FLT_CALLBACK_DATA_QUEUE, irql: u8) {
    // SAFETY: our queue.
    let lock = unsafe { lock_of(cbdq) };
    // SAFETY: the lock `acquire` took, with its IRQL.
    unsafe { KeReleaseSpinLockForDpc(lock, irql) };
}
