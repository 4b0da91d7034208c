//! The alarm: a kernel timer (KTIMER) whose DPC queues a FltMgr generic work item, so
//! that deadlines are acted on at PASSIVE_LEVEL without any thread sleeping until them.
//!
//! One work item, allocated at start and reused: the DPC queues it unless it is queued
//! or running already, in which case the running item goes round once more. Stopping
//! (teardown) refuses new settings, cancels the timer, flushes queued DPCs and waits for
//! the work item to finish, in that order, so that no DPC or work routine of the driver
//! runs after unload.

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicIsize, AtomicU8, Ordering};

use windows_sys::Wdk::Foundation::KDPC;
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FltAllocateGenericWorkItem, FltFreeGenericWorkItem, FltQueueGenericWorkItem, PFLT_FILTER,
    PFLT_GENERIC_WORKITEM,
};
use windows_sys::Wdk::System::SystemServices::{
    DelayedWorkQueue, Executive, KTIMER, KeCancelTimer, KeFlushQueuedDpcs, KeInitializeDpc,
    KeInitializeTimerEx, KeSetTimer, KeWaitForSingleObject, KernelMode,
};
use windows_sys::Win32::Foundation::{NTSTATUS, STATUS_INSUFFICIENT_RESOURCES, STATUS_SUCCESS};
use windows_sys::Win32::System::Kernel::NotificationTimer;

use super::status::nt_success;
use super::sync::{Event, SpinLock};

/// Now, in 100 ns units of the interrupt clock (never goes back): what deadlines are
/// measured in.
pub(crate) fn now() -> i64 {
    // SAFETY: no preconditions; the QPC out pointer is optional.
    let t = unsafe {
        windows_sys::Wdk::System::SystemServices::KeQueryInterruptTimePrecise(core::ptr::null_mut())
    };
    i64::try_from(t).unwrap_or(i64::MAX)
}

/// The work item is neither queued nor running.
const IDLE: u8 = 0;
/// Queued or running.
const BUSY: u8 = 1;
/// Running, and the timer fired again meanwhile: run once more.
const AGAIN: u8 = 2;

/// A timer that calls `routine` at PASSIVE_LEVEL when it expires.
///
/// # Invariants
/// `timer`, `dpc` and `idle` are initialised by [`Alarm::start`] at their final address
/// (the alarm is a static) before any other method touches them; `item` is non-zero
/// exactly between a successful start and the end of stop.
pub(crate) struct Alarm {
    routine: fn(),
    timer: UnsafeCell<KTIMER>,
    dpc: UnsafeCell<KDPC>,
    /// Set while the work item is not queued or running.
    idle: Event,
    item: AtomicIsize,
    filter: AtomicIsize,
    state: AtomicU8,
    /// Started and not stopping. Tested and set under its lock together with the timer,
    /// so that no setting can slip in after `stop` cancelled the timer.
    running: SpinLock<bool>,
}

// SAFETY: the kernel objects are used only through the kernel's own synchronised calls;
// the rest is atomic.
unsafe impl Sync for Alarm {}

impl Alarm {
    pub(crate) const fn new(routine: fn()) -> Self {
        Self {
            routine,
            // SAFETY: plain kernel structures; all zero until KeInitialize* in `start`.
            timer: UnsafeCell::new(unsafe { core::mem::zeroed() }),
            // SAFETY: as above.
            dpc: UnsafeCell::new(unsafe { core::mem::zeroed() }),
            idle: Event::uninit(),
            item: AtomicIsize::new(0),
            filter: AtomicIsize::new(0),
            state: AtomicU8::new(IDLE),
            running: SpinLock::new(false),
        }
    }

    /// Initialises the timer and its DPC and allocates the work item (DriverEntry,
    /// PASSIVE_LEVEL, after FltRegisterFilter).
    pub(crate) fn start(&'static self, filter: PFLT_FILTER) -> NTSTATUS {
        // SAFETY: no preconditions; checked for NULL.
        let item = unsafe { FltAllocateGenericWorkItem() };
        if item == 0 {
            return STATUS_INSUFFICIENT_RESOURCES;
        }
        // SAFETY: the static's timer, at its final address, not in use (stopped or never
        // started).
        unsafe { KeInitializeTimerEx(self.timer.get(), NotificationTimer) };
        // SAFETY: KDEFERRED_ROUTINE is documented as
        // `VOID (PKDPC, PVOID DeferredContext, PVOID SystemArgument1, PVOID SystemArgument2)`;
        // windows-sys declares PKDEFERRED_ROUTINE without parameters, so the documented
        // signature is cast to it (same calling convention, the kernel passes the four).
        let routine = unsafe {
            core::mem::transmute::<
                unsafe extern "system" fn(
                    *const KDPC,
                    *const core::ffi::c_void,
                    *const core::ffi::c_void,
                    *const core::ffi::c_void,
                ),
                unsafe extern "system" fn(),
            >(dpc_routine)
        };
        // SAFETY: the static's DPC at its final address; the context is this static.
        unsafe { KeInitializeDpc(self.dpc.get(), Some(routine), (self as *const Self).cast()) };
        self.idle.init();
        self.idle.set();
        self.state.store(IDLE, Ordering::Release);
        self.filter.store(filter, Ordering::Release);
        self.item.store(item, Ordering::Release);
        self.running.with(|r| *r = true);
        STATUS_SUCCESS
    }

    /// Sets the alarm to go off in `relative` 100 ns units (at least one), replacing any
    /// earlier setting. IRQL <= DISPATCH_LEVEL. Ignored when not running.
    pub(crate) fn set(&self, relative: i64) {
        self.running.with(|running| {
            if *running {
                // SAFETY: initialised by `start` (running); a negative due time is
                // relative; legal at DISPATCH_LEVEL, where the lock holds us.
                unsafe { KeSetTimer(self.timer.get(), -relative.max(1), self.dpc.get()) };
            }
        });
    }

    /// Whether it is started and not stopping.
    pub(crate) fn is_running(&self) -> bool {
        self.running.with(|r| *r)
    }

    /// Stops the alarm for good (teardown, PASSIVE_LEVEL): after this no DPC or work
    /// routine of it runs.
    pub(crate) fn stop(&self) {
        // Under the lock `set` takes: once this returns, no setting can follow.
        let was = self.running.with(|running| {
            let was = *running;
            *running = false;
            if was {
                // SAFETY: initialised by `start`; legal at DISPATCH_LEVEL.
                unsafe { KeCancelTimer(self.timer.get()) };
            }
            was
        });
        if !was {
            return;
        }
        // SAFETY: PASSIVE_LEVEL; waits for DPCs already queued on any processor.
        unsafe { KeFlushQueuedDpcs() };
        // SAFETY: the initialised event; PASSIVE_LEVEL; set when the work item is done.
        unsafe {
            KeWaitForSingleObject(
                self.idle.object(),
                Executive,
                KernelMode as i8,
                false,
                core::ptr::null(),
            )
        };
        let item = self.item.swap(0, Ordering::AcqRel);
        if item != 0 {
            // SAFETY: allocated by `start`, neither queued nor running (idle), freed once.
            unsafe { FltFreeGenericWorkItem(item) };
        }
    }

    /// The DPC: queues the work item, or asks the running one to go round again.
    fn fire(&'static self) {
        if !self.is_running() {
            return;
        }
        let previous = self
            .state
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| {
                Some(if s == IDLE { BUSY } else { AGAIN })
            })
            .unwrap_or(BUSY);
        if previous != IDLE {
            return;
        }
        self.idle.reset();
        let item = self.item.load(Ordering::Acquire);
        // SAFETY: the allocated item, not queued (the state was IDLE); the filter is
        // registered while the alarm runs; DISPATCH_LEVEL is allowed; the context is this
        // static.
        let status = unsafe {
            FltQueueGenericWorkItem(
                item,
                self.filter.load(Ordering::Acquire) as *const core::ffi::c_void,
                Some(work_routine),
                DelayedWorkQueue,
                (self as *const Self).cast(),
            )
        };
        if !nt_success(status) {
            self.state.store(IDLE, Ordering::Release);
            self.idle.set();
            // Try again shortly: a deadline must not be forgotten.
            self.set(10 * 10_000);
        }
    }

    /// The work item: runs the routine, again if the timer fired meanwhile.
    fn work(&self) {
        loop {
            (self.routine)();
            let previous = self
                .state
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |s| {
                    Some(if s == AGAIN { BUSY } else { IDLE })
                })
                .unwrap_or(IDLE);
            if previous != AGAIN {
                break;
            }
        }
        self.idle.set();
    }
}

/// KDEFERRED_ROUTINE of the alarm.
///
/// # Safety
/// Called by the kernel at DISPATCH_LEVEL with the context given to KeInitializeDpc.
unsafe extern "system" fn dpc_routine(
    _dpc: *const KDPC,
    context: *const core::ffi::c_void,
    _argument1: *const core::ffi::c_void,
    _argument2: *const core::ffi::c_void,
) {
    // SAFETY: the context is the static alarm (see `start`).
    if let Some(alarm) = unsafe { context.cast::<Alarm>().as_ref() } {
        // SAFETY: the alarm is a static; a shared reference lives as long as it.
        let alarm: &'static Alarm = unsafe { &*(alarm as *const Alarm) };
        alarm.fire();
    }
}

/// The generic work routine of the alarm.
///
/// # Safety
/// Called by FltMgr at PASSIVE_LEVEL with the context given to FltQueueGenericWorkItem.
unsafe extern "system" fn work_routine(
    _item: PFLT_GENERIC_WORKITEM,
    _filter: *const core::ffi::c_void,
    context: *const core::ffi::c_void,
) {
    // SAFETY: the context is the static alarm (see `fire`).
    if let Some(alarm) = unsafe { context.cast::<Alarm>().as_ref() } {
        alarm.work();
    }
}
