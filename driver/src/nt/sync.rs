//! The kernel synchronisation objects the driver uses: a spin lock that owns the data it
//! protects, a notification event, and a gate (a synchronization event) for the rare
//! operations that must not interleave across I/O.
//!
//! Everything the hydration path shares between threads (provider table, outstanding
//! fetches, placeholder state of each stream) is small and only touched for a few
//! instructions, so one in-stack queued spin lock per table is enough; threads that
//! must wait do so on an [`Event`] with the lock released.

use core::cell::UnsafeCell;

use windows_sys::Wdk::Foundation::KEVENT;
use windows_sys::Wdk::System::SystemServices::{
    Executive, KLOCK_QUEUE_HANDLE, KeAcquireInStackQueuedSpinLock, KeInitializeEvent,
    KeReleaseInStackQueuedSpinLock, KeResetEvent, KeSetEvent, KeWaitForSingleObject, KernelMode,
};
use windows_sys::Win32::System::Kernel::{NotificationEvent, SynchronizationEvent};

/// A value reachable only with its spin lock held (IRQL raised to DISPATCH_LEVEL), so the
/// closure given to [`SpinLock::with`] must not wait, allocate paged memory or call
/// anything that needs PASSIVE_LEVEL.
pub(crate) struct SpinLock<T> {
    /// A KSPIN_LOCK; zero is its initialised (free) state, as KeInitializeSpinLock sets it.
    lock: UnsafeCell<usize>,
    value: UnsafeCell<T>,
}

// SAFETY: the value is only reached through `with`, which holds the lock; `T: Send`
// because the holder may be any thread.
unsafe impl<T: Send> Sync for SpinLock<T> {}
// SAFETY: moving the lock moves the value; nothing is borrowed while it moves.
unsafe impl<T: Send> Send for SpinLock<T> {}

impl<T> SpinLock<T> {
    pub(crate) const fn new(value: T) -> Self {
        Self {
            lock: UnsafeCell::new(0),
            value: UnsafeCell::new(value),
        }
    }

    /// Runs `f` with the lock held. Callable at IRQL <= DISPATCH_LEVEL.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        let mut handle = KLOCK_QUEUE_HANDLE {
            LockQueue: windows_sys::Wdk::System::SystemServices::KSPIN_LOCK_QUEUE {
                Next: core::ptr::null_mut(),
                Lock: core::ptr::null_mut(),
            },
            OldIrql: 0,
        };
        // SAFETY: `lock` is a live KSPIN_LOCK; `handle` stays on this frame until the
        // release below, as an in-stack queued lock requires.
        unsafe { KeAcquireInStackQueuedSpinLock(self.lock.get(), &mut handle) };
        // SAFETY: the lock is held, so this is the only reference to the value.
        let result = f(unsafe { &mut *self.value.get() });
        // SAFETY: the handle of the acquire above, released once.
        unsafe { KeReleaseInStackQueuedSpinLock(&handle) };
        result
    }
}

/// A notification event in memory that does not move (a pool object or a context).
pub(crate) struct Event(UnsafeCell<KEVENT>);

// SAFETY: a KEVENT is made for use from any thread; the kernel serialises access to it.
unsafe impl Sync for Event {}
// SAFETY: as above.
unsafe impl Send for Event {}

impl Event {
    /// An event not yet initialised: call [`Event::init`] once it is at its final address.
    pub(crate) const fn uninit() -> Self {
        // SAFETY: KEVENT is plain data (a dispatcher header); all zero is a valid bit
        // pattern, and `init` gives it its real state before any use.
        Self(UnsafeCell::new(unsafe { core::mem::zeroed() }))
    }

    /// Initialises the event (non-signalled) where it now lives.
    pub(crate) fn init(&self) {
        // SAFETY: the event lives at this address for as long as it is used (callers
        // only init events inside pool objects and contexts).
        unsafe { KeInitializeEvent(self.0.get(), NotificationEvent, false) };
    }

    /// Signals it. Callable at IRQL <= DISPATCH_LEVEL.
    pub(crate) fn set(&self) {
        // SAFETY: an initialised event; Wait = FALSE, so legal at DISPATCH_LEVEL.
        unsafe { KeSetEvent(self.0.get(), 0, false) };
    }

    /// Clears it. Callable at IRQL <= DISPATCH_LEVEL.
    pub(crate) fn reset(&self) {
        // SAFETY: an initialised event.
        unsafe { KeResetEvent(self.0.get()) };
    }

    /// The dispatcher object, for the wait functions.
    pub(crate) fn object(&self) -> *const core::ffi::c_void {
        self.0.get().cast_const().cast()
    }
}

/// A gate one thread at a time passes, at PASSIVE_LEVEL: a synchronization event that is
/// signalled while nobody holds it (the kernel releases one waiter per signal). For
/// operations that must not interleave and that wait on I/O (a spin lock cannot be held
/// across I/O).
pub(crate) struct Gate(UnsafeCell<KEVENT>);

// SAFETY: as for `Event`.
unsafe impl Sync for Gate {}
// SAFETY: as above.
unsafe impl Send for Gate {}

impl Gate {
    /// A gate not yet initialised: call [`Gate::init`] once it is at its final address.
    pub(crate) const fn uninit() -> Self {
        // SAFETY: as for `Event::uninit`.
        Self(UnsafeCell::new(unsafe { core::mem::zeroed() }))
    }

    /// Initialises it open.
    pub(crate) fn init(&self) {
        // SAFETY: the gate lives at this address for as long as it is used (a static).
        unsafe { KeInitializeEvent(self.0.get(), SynchronizationEvent, true) };
    }

    /// Waits until the gate is free and holds it until the guard drops. PASSIVE_LEVEL.
    pub(crate) fn enter(&self) -> GateGuard<'_> {
        // SAFETY: an initialised event; PASSIVE_LEVEL (the caller's contract); no
        // timeout: holders only do bounded kernel work (registry and file-system calls).
        unsafe {
            KeWaitForSingleObject(
                self.0.get().cast_const().cast(),
                Executive,
                KernelMode as i8,
                false,
                core::ptr::null(),
            )
        };
        GateGuard(self)
    }

    /// As [`Gate::enter`], giving up after `within` (100 ns units): for a holder of
    /// something the gate's holder may be waiting for (a provider reference, which
    /// unregistering waits to drain while it holds the gate). PASSIVE_LEVEL.
    pub(crate) fn enter_within(&self, within: i64) -> Option<GateGuard<'_>> {
        let timeout = -within.max(1);
        // SAFETY: an initialised event; PASSIVE_LEVEL (the caller's contract); a
        // negative (relative) timeout.
        let status = unsafe {
            KeWaitForSingleObject(
                self.0.get().cast_const().cast(),
                Executive,
                KernelMode as i8,
                false,
                &timeout,
            )
        };
        (status == windows_sys::Win32::Foundation::STATUS_SUCCESS).then_some(GateGuard(self))
    }
}

/// Holds a [`Gate`]; opens it when dropped.
pub(crate) struct GateGuard<'a>(&'a Gate);

impl Drop for GateGuard<'_> {
    fn drop(&mut self) {
        // SAFETY: an initialised event; Wait = FALSE.
        unsafe { KeSetEvent(self.0.0.get(), 0, false) };
    }
}
