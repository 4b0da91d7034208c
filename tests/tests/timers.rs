//! Kernel timers and DPCs in the model: due times relative and absolute, expiry by the
//! machine clock (clock jumps included), cancellation, periods, waits on timer objects,
//! DPC routines at DISPATCH_LEVEL, and the verifier's checks at free and at unload.

use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use cloudflt_tests::model::fltmgr::{FltRegisterFilter, FltUnregisterFilter};
use cloudflt_tests::model::irql::{self, DISPATCH_LEVEL, PASSIVE_LEVEL};
use cloudflt_tests::model::pool::{ExAllocatePool2, ExFreePoolWithTag};
use cloudflt_tests::model::sync::{
    KeAcquireSpinLockForDpc, KeInitializeEvent, KeInitializeSpinLock, KeSetEvent,
    KeWaitForMultipleObjects, KeWaitForSingleObject,
};
use cloudflt_tests::model::timer::{
    KeCancelTimer, KeFlushQueuedDpcs, KeInitializeDpc, KeInitializeTimer, KeInitializeTimerEx,
    KeInsertQueueDpc, KeReadStateTimer, KeRemoveQueueDpc, KeSetTimer, KeSetTimerEx,
};
use cloudflt_tests::model::workitem::{
    FltAllocateGenericWorkItem, FltFreeGenericWorkItem, FltQueueGenericWorkItem,
};
use cloudflt_tests::model::{Machine, Violation};
use windows_sys::Wdk::Foundation::{DRIVER_OBJECT, KDPC, KEVENT, PKDEFERRED_ROUTINE};
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FLT_REGISTRATION, PFLT_FILTER, PFLT_GENERIC_WORKITEM,
};
use windows_sys::Wdk::System::SystemServices::{DelayedWorkQueue, KTIMER};
use windows_sys::Win32::Foundation::{NTSTATUS, STATUS_SUCCESS, STATUS_TIMEOUT, STATUS_WAIT_0};
use windows_sys::Win32::System::Kernel::{NotificationEvent, SynchronizationTimer, WaitAny};

const MS: i64 = 10_000;
/// POOL_FLAG_NON_PAGED: a KTIMER and a KDPC must live in non-paged memory.
const NON_PAGED: u64 = 0x40;
const TAG: u32 = u32::from_le_bytes(*b"Tmrt");

/// KDEFERRED_ROUTINE as wdm.h declares it.
type DeferredRoutine =
    unsafe extern "system" fn(*const KDPC, *const c_void, *const c_void, *const c_void);

fn fired(violations: &[Violation], api: &str, needle: &str) -> bool {
    violations
        .iter()
        .any(|v| v.api == api && v.message.contains(needle))
}

/// windows-sys declares PKDEFERRED_ROUTINE without parameters: a driver casts its
/// routine to that type, as this does.
fn routine(f: DeferredRoutine) -> PKDEFERRED_ROUTINE {
    // SAFETY: both are function pointers; the kernel (here the model) calls it back
    // with the four parameters it really has.
    Some(unsafe { std::mem::transmute::<DeferredRoutine, unsafe extern "system" fn()>(f) })
}

/// A timer that stays where it was initialised, for the whole test.
fn timer(synchronization: bool) -> &'static mut KTIMER {
    let t: &'static mut KTIMER = Box::leak(Box::default());
    if synchronization {
        // SAFETY: writable KTIMER memory that never moves.
        unsafe { KeInitializeTimerEx(t, SynchronizationTimer) };
    } else {
        // SAFETY: as above.
        unsafe { KeInitializeTimer(t) };
    }
    t
}

fn dpc(f: DeferredRoutine, context: usize) -> &'static mut KDPC {
    let d: &'static mut KDPC = Box::leak(Box::default());
    // SAFETY: writable KDPC memory that never moves.
    unsafe { KeInitializeDpc(d, routine(f), context as *const c_void) };
    d
}

fn event() -> usize {
    let e: &'static mut KEVENT = Box::leak(Box::default());
    // SAFETY: writable KEVENT memory that never moves.
    unsafe { KeInitializeEvent(e, NotificationEvent, false) };
    e as *mut KEVENT as usize
}

fn wait(object: usize, timeout: Option<i64>) -> NTSTATUS {
    let timeout_ptr = timeout
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const i64);
    // SAFETY: a live dispatcher object; the timeout is NULL or a live i64.
    unsafe { KeWaitForSingleObject(object as *const c_void, 0, 0, false, timeout_ptr) }
}

fn addr(t: &mut KTIMER) -> usize {
    t as *mut KTIMER as usize
}

/// Registers a filter (its unload callback `unload`, if any) for the tests that need one.
fn filter(unload: Option<unsafe extern "system" fn(u32) -> NTSTATUS>) -> PFLT_FILTER {
    // SAFETY: DRIVER_OBJECT is plain data for which all-zero is valid.
    let driver: &'static DRIVER_OBJECT = Box::leak(Box::new(unsafe { std::mem::zeroed() }));
    let registration = FLT_REGISTRATION {
        Size: std::mem::size_of::<FLT_REGISTRATION>() as u16,
        Version: 0x0203,
        FilterUnloadCallback: unload,
        ..Default::default()
    };
    let mut filter = 0;
    // SAFETY: valid registration and out pointer.
    let status = unsafe { FltRegisterFilter(driver, &registration, &mut filter) };
    assert_eq!(status, STATUS_SUCCESS);
    filter
}

// ---------------------------------------------------------------------------------------
// Due times and expiry
// ---------------------------------------------------------------------------------------

#[test]
fn a_relative_timer_is_signaled_when_its_time_comes_and_can_be_waited_on() {
    let mut machine = Machine::boot(&[]);
    let t = timer(false);
    let start = Instant::now();
    assert!(!KeSetTimer(t, -30 * MS, std::ptr::null()), "was not queued");
    assert!(!KeReadStateTimer(t));
    assert_eq!(wait(addr(t), Some(-5_000 * MS)), STATUS_SUCCESS);
    assert!(start.elapsed() >= Duration::from_millis(30));
    // A notification timer stays signaled, releasing every later wait...
    assert!(KeReadStateTimer(t));
    assert_eq!(wait(addr(t), Some(0)), STATUS_SUCCESS);
    // ...until it is set again, which resets it; set while queued, it says so.
    assert!(!KeSetTimer(t, -60_000 * MS, std::ptr::null()));
    assert!(!KeReadStateTimer(t));
    assert!(KeSetTimer(t, -60_000 * MS, std::ptr::null()), "was queued");
    assert_eq!(wait(addr(t), Some(-10 * MS)), STATUS_TIMEOUT);
    assert!(KeCancelTimer(t));
    machine.assert_clean();
}

#[test]
fn an_absolute_due_time_is_a_system_time() {
    let mut machine = Machine::boot(&[]);
    let t = timer(false);
    let start = Instant::now();
    KeSetTimer(t, machine.system_time() + 30 * MS, std::ptr::null());
    assert!(!KeReadStateTimer(t));
    assert_eq!(wait(addr(t), Some(-5_000 * MS)), STATUS_SUCCESS);
    assert!(start.elapsed() >= Duration::from_millis(30));
    // A time already past expires at once.
    KeSetTimer(t, machine.system_time() - 1, std::ptr::null());
    assert!(KeReadStateTimer(t));
    // A clock jump reaches an absolute due time as it does a relative one.
    KeSetTimer(t, machine.system_time() + 3_600_000 * MS, std::ptr::null());
    machine.advance_clock(Duration::from_secs(3_601));
    assert!(KeReadStateTimer(t));
    assert!(
        !KeCancelTimer(t),
        "a one-shot timer leaves the table when it expires"
    );
    machine.assert_clean();
}

static JUMP_RUNS: AtomicU32 = AtomicU32::new(0);
static JUMP_CONTEXT: AtomicUsize = AtomicUsize::new(0);
static JUMP_TIME: AtomicU64 = AtomicU64::new(0);

unsafe extern "system" fn on_jump(
    _: *const KDPC,
    context: *const c_void,
    low: *const c_void,
    high: *const c_void,
) {
    JUMP_RUNS.fetch_add(1, Ordering::SeqCst);
    JUMP_CONTEXT.store(context as usize, Ordering::SeqCst);
    JUMP_TIME.store(((high as u64) << 32) | low as u64, Ordering::SeqCst);
}

#[test]
fn moving_the_clock_past_a_timer_fires_it_at_once() {
    let mut machine = Machine::boot(&[]);
    JUMP_RUNS.store(0, Ordering::SeqCst);
    let t = timer(false);
    let d = dpc(on_jump, 0xc0de);
    let start = Instant::now();
    let set_at = machine.system_time();
    KeSetTimer(t, -60_000 * MS, d);
    machine.advance_clock(Duration::from_secs(61));
    assert!(
        KeReadStateTimer(t),
        "signaled by the time advance_clock returns"
    );
    KeFlushQueuedDpcs();
    assert_eq!(JUMP_RUNS.load(Ordering::SeqCst), 1);
    assert_eq!(JUMP_CONTEXT.load(Ordering::SeqCst), 0xc0de);
    // SystemArgument1/2: the expiry's system time, low and high parts.
    assert!(JUMP_TIME.load(Ordering::SeqCst) >= (set_at + 60_000 * MS) as u64);
    assert!(start.elapsed() < Duration::from_secs(10), "no minute slept");
    assert_eq!(machine.pending_timers_and_dpcs(), (0, 0));
    machine.assert_clean();
}

static CANCELLED_RUNS: AtomicU32 = AtomicU32::new(0);

unsafe extern "system" fn on_cancelled(
    _: *const KDPC,
    _: *const c_void,
    _: *const c_void,
    _: *const c_void,
) {
    CANCELLED_RUNS.fetch_add(1, Ordering::SeqCst);
}

#[test]
fn a_timer_cancelled_before_its_time_never_fires() {
    let mut machine = Machine::boot(&[]);
    let t = timer(false);
    let d = dpc(on_cancelled, 0);
    KeSetTimer(t, -60_000 * MS, d);
    assert_eq!(machine.pending_timers_and_dpcs(), (1, 0));
    assert!(KeCancelTimer(t), "it was in the timer table");
    assert!(!KeCancelTimer(t), "and is no more");
    machine.advance_clock(Duration::from_secs(120));
    KeFlushQueuedDpcs();
    assert!(!KeReadStateTimer(t));
    assert_eq!(CANCELLED_RUNS.load(Ordering::SeqCst), 0);
    assert_eq!(machine.pending_timers_and_dpcs(), (0, 0));
    machine.assert_clean();
}

static PERIODIC_RUNS: AtomicU32 = AtomicU32::new(0);

unsafe extern "system" fn on_period(
    _: *const KDPC,
    _: *const c_void,
    _: *const c_void,
    _: *const c_void,
) {
    PERIODIC_RUNS.fetch_add(1, Ordering::SeqCst);
}

#[test]
fn a_periodic_timer_fires_every_period_until_cancelled() {
    let mut machine = Machine::boot(&[]);
    PERIODIC_RUNS.store(0, Ordering::SeqCst);
    let t = timer(false);
    let d = dpc(on_period, 0);
    let runs = || {
        KeFlushQueuedDpcs();
        PERIODIC_RUNS.load(Ordering::SeqCst)
    };
    assert!(!KeSetTimerEx(t, -1_000 * MS, 1_000, d));
    assert_eq!(runs(), 0);
    machine.advance_clock(Duration::from_millis(1_000));
    assert_eq!(runs(), 1);
    machine.advance_clock(Duration::from_millis(1_000));
    assert_eq!(runs(), 2);
    // A jump over many periods expires it once: it is re-armed from the expiry.
    machine.advance_clock(Duration::from_secs(10));
    assert_eq!(runs(), 3);
    // Periodic timers stay in the table, so cancelling one always finds it there.
    assert!(KeCancelTimer(t));
    machine.advance_clock(Duration::from_secs(10));
    assert_eq!(runs(), 3);
    // In real time too.
    KeSetTimerEx(t, -5 * MS, 5, d);
    let start = Instant::now();
    while runs() < 6 {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "periodic timer stalled"
        );
        thread::sleep(Duration::from_millis(1));
    }
    assert!(KeCancelTimer(t));
    // A period must not be negative.
    assert!(!KeSetTimerEx(t, -MS, -1, d));
    let v = machine.take_violations();
    assert!(fired(&v, "KeSetTimerEx", "Period -1"), "{v:?}");
    assert_eq!(v.len(), 1, "{v:?}");
}

#[test]
fn a_synchronization_timer_releases_one_waiter_and_resets() {
    let mut machine = Machine::boot(&[]);
    let t = addr(timer(true));
    let (done, finished) = mpsc::channel();
    let waiters: Vec<_> = (0..2)
        .map(|_| {
            let done = done.clone();
            thread::spawn(move || {
                let status = wait(t, None);
                done.send(status).unwrap();
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(30));
    KeSetTimer(t as *mut KTIMER, -1_000 * MS, std::ptr::null());
    machine.advance_clock(Duration::from_secs(2));
    assert_eq!(finished.recv().unwrap(), STATUS_SUCCESS);
    assert!(
        finished.recv_timeout(Duration::from_millis(50)).is_err(),
        "one expiry released two waiters"
    );
    assert!(
        !KeReadStateTimer(t as *const KTIMER),
        "the satisfied wait reset it"
    );
    KeSetTimer(t as *mut KTIMER, -MS, std::ptr::null());
    assert_eq!(finished.recv().unwrap(), STATUS_SUCCESS);
    for w in waiters {
        w.join().unwrap();
    }
    machine.assert_clean();
}

#[test]
fn a_wait_on_several_objects_names_the_timer_that_expired() {
    let mut machine = Machine::boot(&[]);
    let e = event();
    let t = addr(timer(false));
    KeSetTimer(t as *mut KTIMER, -30_000 * MS, std::ptr::null());
    let waiter = thread::spawn(move || {
        let objects = [e, t].map(|o| o as *const c_void);
        // SAFETY: two live dispatcher objects, no timeout, no wait blocks needed.
        unsafe {
            KeWaitForMultipleObjects(
                2,
                objects.as_ptr(),
                WaitAny,
                0,
                0,
                false,
                std::ptr::null(),
                std::ptr::null_mut(),
            )
        }
    });
    thread::sleep(Duration::from_millis(20));
    machine.advance_clock(Duration::from_secs(31));
    assert_eq!(waiter.join().unwrap(), STATUS_WAIT_0 + 1);
    machine.assert_clean();
}

// ---------------------------------------------------------------------------------------
// DPC routines
// ---------------------------------------------------------------------------------------

static DPC_IRQL: AtomicU32 = AtomicU32::new(u32::MAX);
static WORK_IRQL: AtomicU32 = AtomicU32::new(u32::MAX);
static WORK_ITEM: AtomicUsize = AtomicUsize::new(0);
static FILTER: AtomicUsize = AtomicUsize::new(0);

unsafe extern "system" fn record_work(
    _: PFLT_GENERIC_WORKITEM,
    _: *const c_void,
    _: *const c_void,
) {
    WORK_IRQL.store(u32::from(irql::current()), Ordering::SeqCst);
}

/// What a DPC routine may and may not do, all in one.
unsafe extern "system" fn busy_dpc(
    _: *const KDPC,
    context: *const c_void,
    _: *const c_void,
    _: *const c_void,
) {
    DPC_IRQL.store(u32::from(irql::current()), Ordering::SeqCst);
    let event = context as usize;
    // A poll is allowed at DISPATCH_LEVEL; a wait that can block is not.
    assert_eq!(wait(event, Some(0)), STATUS_SUCCESS);
    assert_eq!(wait(event, Some(-MS)), STATUS_SUCCESS);
    // It would wait for this very routine.
    KeFlushQueuedDpcs();
    // Work may be queued from here: it runs later at PASSIVE_LEVEL.
    let status = FltQueueGenericWorkItem(
        WORK_ITEM.load(Ordering::SeqCst) as PFLT_GENERIC_WORKITEM,
        FILTER.load(Ordering::SeqCst) as *const c_void,
        Some(record_work),
        DelayedWorkQueue,
        std::ptr::null(),
    );
    assert_eq!(status, STATUS_SUCCESS);
}

#[test]
fn a_dpc_runs_at_dispatch_level_where_blocking_calls_are_reported() {
    let mut machine = Machine::boot(&[]);
    let f = filter(None);
    FILTER.store(f as usize, Ordering::SeqCst);
    WORK_ITEM.store(FltAllocateGenericWorkItem() as usize, Ordering::SeqCst);
    let e = event();
    KeSetEvent(e as *mut KEVENT, 0, false);
    let t = timer(false);
    let d = dpc(busy_dpc, e);
    KeSetTimer(t, -10 * MS, d);
    machine.advance_clock(Duration::from_millis(10));
    KeFlushQueuedDpcs();
    machine.idle();
    assert_eq!(DPC_IRQL.load(Ordering::SeqCst), u32::from(DISPATCH_LEVEL));
    assert_eq!(WORK_IRQL.load(Ordering::SeqCst), u32::from(PASSIVE_LEVEL));
    let v = machine.take_violations();
    assert!(
        fired(
            &v,
            "KeWaitForSingleObject",
            "called at IRQL 2, documented maximum is 1"
        ),
        "{v:?}"
    );
    assert!(fired(&v, "KeFlushQueuedDpcs", "called at IRQL 2"), "{v:?}");
    assert!(fired(&v, "KeFlushQueuedDpcs", "for itself"), "{v:?}");
    assert_eq!(v.len(), 3, "the poll and the work item are allowed: {v:?}");
    FltFreeGenericWorkItem(WORK_ITEM.load(Ordering::SeqCst) as PFLT_GENERIC_WORKITEM);
    FltUnregisterFilter(f);
    machine.assert_clean();
}

static SPIN: AtomicUsize = AtomicUsize::new(0);

unsafe extern "system" fn keeps_spin_lock(
    _: *const KDPC,
    _: *const c_void,
    _: *const c_void,
    _: *const c_void,
) {
    KeAcquireSpinLockForDpc(SPIN.load(Ordering::SeqCst) as *mut usize);
}

#[test]
fn a_dpc_routine_that_returns_holding_a_spin_lock_is_caught() {
    let mut machine = Machine::boot(&[]);
    let lock: &'static mut usize = Box::leak(Box::new(0));
    // SAFETY: writable memory that never moves.
    unsafe { KeInitializeSpinLock(lock) };
    SPIN.store(lock as *mut usize as usize, Ordering::SeqCst);
    let d = dpc(keeps_spin_lock, 0);
    assert!(KeInsertQueueDpc(d, std::ptr::null(), std::ptr::null()));
    KeFlushQueuedDpcs();
    let v = machine.take_violations();
    assert!(
        fired(
            &v,
            "DeferredRoutine",
            "DPC routine returned holding spin lock"
        ),
        "{v:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Checks: initialisation and IRQL, free, unload
// ---------------------------------------------------------------------------------------

static GATE: AtomicBool = AtomicBool::new(false);
static GATED_RUNS: AtomicU32 = AtomicU32::new(0);

/// Runs until the test opens the gate: holds the DPC thread busy.
unsafe extern "system" fn gated(
    _: *const KDPC,
    _: *const c_void,
    _: *const c_void,
    _: *const c_void,
) {
    GATED_RUNS.fetch_add(1, Ordering::SeqCst);
    while !GATE.load(Ordering::SeqCst) {
        thread::sleep(Duration::from_millis(1));
    }
}

unsafe extern "system" fn nothing(
    _: *const KDPC,
    _: *const c_void,
    _: *const c_void,
    _: *const c_void,
) {
}

#[test]
fn timers_and_dpcs_are_checked_for_initialisation_and_irql() {
    let mut machine = Machine::boot(&[]);
    let raw: &'static mut KTIMER = Box::leak(Box::default());
    assert!(!KeSetTimer(raw, -MS, std::ptr::null()));
    assert!(!KeReadStateTimer(raw));
    let t = timer(false);
    let stray: &'static mut KDPC = Box::leak(Box::default());
    assert!(!KeSetTimer(t, -MS, stray));
    let v = machine.take_violations();
    assert!(fired(&v, "KeSetTimer", "not a KTIMER initialised"), "{v:?}");
    assert!(
        fired(&v, "KeReadStateTimer", "not a KTIMER initialised"),
        "{v:?}"
    );
    assert!(fired(&v, "KeSetTimer", "not a KDPC initialised"), "{v:?}");

    // IRQL: setting and cancelling up to DISPATCH_LEVEL, flushing at PASSIVE_LEVEL only.
    irql::at(DISPATCH_LEVEL, || {
        KeSetTimer(t, -60_000 * MS, std::ptr::null());
        // SAFETY: writable KTIMER memory that never moves.
        unsafe { KeInitializeTimer(Box::leak(Box::default())) };
        KeCancelTimer(t);
    });
    machine.assert_clean();
    irql::at(DISPATCH_LEVEL + 1, || KeSetTimer(t, -MS, std::ptr::null()));
    irql::at(DISPATCH_LEVEL, || KeFlushQueuedDpcs());
    let v = machine.take_violations();
    assert!(fired(&v, "KeSetTimer", "called at IRQL 3"), "{v:?}");
    assert!(fired(&v, "KeFlushQueuedDpcs", "called at IRQL 2"), "{v:?}");

    // A queued timer or DPC may not be initialised again.
    KeSetTimer(t, -60_000 * MS, std::ptr::null());
    // SAFETY: the same live timer.
    unsafe { KeInitializeTimer(t) };
    assert!(KeCancelTimer(t), "the re-initialisation was refused");
    GATE.store(false, Ordering::SeqCst);
    GATED_RUNS.store(0, Ordering::SeqCst);
    let busy = dpc(gated, 0);
    let d = dpc(nothing, 0);
    assert!(KeInsertQueueDpc(busy, std::ptr::null(), std::ptr::null()));
    while GATED_RUNS.load(Ordering::SeqCst) == 0 {
        thread::sleep(Duration::from_millis(1));
    }
    assert!(KeInsertQueueDpc(d, std::ptr::null(), std::ptr::null()));
    assert!(
        !KeInsertQueueDpc(d, std::ptr::null(), std::ptr::null()),
        "already queued"
    );
    // SAFETY: the same live DPC.
    unsafe { KeInitializeDpc(d, routine(nothing), std::ptr::null()) };
    assert!(KeRemoveQueueDpc(d));
    assert!(!KeRemoveQueueDpc(d));
    GATE.store(true, Ordering::SeqCst);
    KeFlushQueuedDpcs();
    let v = machine.take_violations();
    assert!(
        fired(
            &v,
            "KeInitializeTimer",
            "re-initialised while in the timer table"
        ),
        "{v:?}"
    );
    assert!(
        fired(&v, "KeInitializeDpc", "re-initialised while queued"),
        "{v:?}"
    );
    assert_eq!(v.len(), 2, "{v:?}");
}

#[test]
fn freeing_pool_with_a_queued_timer_or_dpc_in_it_is_caught() {
    let mut machine = Machine::boot(&[]);
    let request = || {
        let block = ExAllocatePool2(NON_PAGED, 256, TAG) as usize;
        assert_ne!(block, 0);
        let t = block as *mut KTIMER;
        let d = (block + 128) as *mut KDPC;
        // SAFETY: fresh pool memory large enough for both, freed only below.
        unsafe { KeInitializeTimer(t) };
        // SAFETY: as above.
        unsafe { KeInitializeDpc(d, routine(nothing), std::ptr::null()) };
        (block, t, d)
    };
    // Cancelled first: fine.
    let (block, t, d) = request();
    KeSetTimer(t, -60_000 * MS, d);
    assert!(KeCancelTimer(t));
    ExFreePoolWithTag(block as *mut c_void, TAG);
    machine.assert_clean();
    // Still queued: bug check 0xC7, and the model forgets it rather than write to freed
    // memory when it would have expired.
    let (block, t, d) = request();
    KeSetTimer(t, -60_000 * MS, d);
    ExFreePoolWithTag(block as *mut c_void, TAG);
    let v = machine.take_violations();
    assert!(
        fired(&v, "ExFreePoolWithTag", "TIMER_OR_DPC_INVALID"),
        "{v:?}"
    );
    assert!(
        fired(&v, "ExFreePoolWithTag", "still in the timer table"),
        "{v:?}"
    );
    assert_eq!(machine.pending_timers_and_dpcs(), (0, 0));
    machine.advance_clock(Duration::from_secs(61));
    machine.assert_clean();
}

static UNLOAD_TIMER: AtomicUsize = AtomicUsize::new(0);
static UNLOAD_FILTER: AtomicUsize = AtomicUsize::new(0);
static UNLOAD_CLEANLY: AtomicBool = AtomicBool::new(true);

/// FilterUnload: cancels its timer and flushes its DPCs, or (when told not to) forgets.
unsafe extern "system" fn unload(_: u32) -> NTSTATUS {
    if UNLOAD_CLEANLY.load(Ordering::SeqCst) {
        KeCancelTimer(UNLOAD_TIMER.load(Ordering::SeqCst) as *mut KTIMER);
        KeFlushQueuedDpcs();
    }
    FltUnregisterFilter(UNLOAD_FILTER.load(Ordering::SeqCst) as PFLT_FILTER);
    STATUS_SUCCESS
}

#[test]
fn timers_and_dpcs_left_behind_at_unload_are_reported() {
    for clean in [true, false] {
        let mut machine = Machine::boot(&[]);
        UNLOAD_CLEANLY.store(clean, Ordering::SeqCst);
        UNLOAD_FILTER.store(filter(Some(unload)) as usize, Ordering::SeqCst);
        let t = timer(false);
        UNLOAD_TIMER.store(t as *mut KTIMER as usize, Ordering::SeqCst);
        let d = dpc(nothing, 0);
        KeSetTimerEx(t, -1_000 * MS, 1_000, d);
        // One DPC running and one queued behind it.
        GATE.store(false, Ordering::SeqCst);
        GATED_RUNS.store(0, Ordering::SeqCst);
        let busy = dpc(gated, 0);
        let queued = dpc(nothing, 0);
        KeInsertQueueDpc(busy, std::ptr::null(), std::ptr::null());
        while GATED_RUNS.load(Ordering::SeqCst) == 0 {
            thread::sleep(Duration::from_millis(1));
        }
        KeInsertQueueDpc(queued, std::ptr::null(), std::ptr::null());
        if clean {
            // The unload's flush waits for the running DPC: let it finish.
            let opener = thread::spawn(|| {
                thread::sleep(Duration::from_millis(30));
                GATE.store(true, Ordering::SeqCst);
            });
            assert_eq!(machine.unload_driver(), STATUS_SUCCESS);
            opener.join().unwrap();
            assert_eq!(machine.pending_timers_and_dpcs(), (0, 0));
            machine.assert_clean();
            continue;
        }
        assert_eq!(machine.unload_driver(), STATUS_SUCCESS);
        let v = machine.take_violations();
        assert!(fired(&v, "DriverUnload", "pending timers or DPCs"), "{v:?}");
        let message = &v.iter().find(|v| v.api == "DriverUnload").unwrap().message;
        assert!(message.contains("periodic"), "{message}");
        assert!(message.contains("still queued"), "{message}");
        assert!(message.contains("still running"), "{message}");
        // Reported once, then cancelled: nothing calls into the unloaded driver later.
        GATE.store(true, Ordering::SeqCst);
        KeFlushQueuedDpcs();
        assert_eq!(machine.pending_timers_and_dpcs(), (0, 0));
        machine.advance_clock(Duration::from_secs(5));
        machine.assert_clean();
    }
}
