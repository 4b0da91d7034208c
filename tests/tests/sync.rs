//! Kernel synchronisation, time and deferred work in the model: that they behave as on
//! Windows, and that each of their verifier checks fires on a deliberately broken caller.

use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use cloudflt_tests::model::fltmgr::{FltRegisterFilter, FltUnregisterFilter};
use cloudflt_tests::model::irql::{self, DISPATCH_LEVEL, PASSIVE_LEVEL};
use cloudflt_tests::model::process::{PsGetCurrentProcessId, SYSTEM_PID};
use cloudflt_tests::model::sync::{
    ExAcquirePushLockExclusiveEx, ExAcquireResourceExclusiveLite, ExAcquireResourceSharedLite,
    ExDeleteResourceLite, ExInitializePushLock, ExInitializeResourceLite,
    ExIsResourceAcquiredExclusiveLite, ExIsResourceAcquiredSharedLite,
    ExReleasePushLockExclusiveEx, ExReleaseResourceLite, FltAcquirePushLockExclusive,
    FltAcquirePushLockShared, FltAcquireResourceExclusive, FltCancellableWaitForSingleObject,
    FltDeletePushLock, FltInitializePushLock, FltReleasePushLock, FltReleaseResource,
    KeAcquireInStackQueuedSpinLock, KeAreApcsDisabled, KeClearEvent, KeDelayExecutionThread,
    KeEnterCriticalRegion, KeInitializeEvent, KeInitializeSpinLock, KeLeaveCriticalRegion,
    KeQueryInterruptTimePrecise, KeQuerySystemTimePrecise, KeQueryTimeIncrement, KeReadStateEvent,
    KeReleaseInStackQueuedSpinLock, KeResetEvent, KeSetEvent, KeWaitForMultipleObjects,
    KeWaitForSingleObject,
};
use cloudflt_tests::model::workitem::{
    FltAllocateGenericWorkItem, FltFreeGenericWorkItem, FltQueueGenericWorkItem,
};
use cloudflt_tests::model::{Machine, Violation};
use windows_sys::Wdk::Foundation::{DRIVER_OBJECT, ERESOURCE, KEVENT};
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FLT_REGISTRATION, PFLT_FILTER, PFLT_GENERIC_WORKITEM,
};
use windows_sys::Wdk::System::SystemServices::{
    CriticalWorkQueue, DelayedWorkQueue, HyperCriticalWorkQueue, KLOCK_QUEUE_HANDLE,
};
use windows_sys::Win32::Foundation::{
    NTSTATUS, STATUS_INVALID_PARAMETER, STATUS_SUCCESS, STATUS_TIMEOUT,
};
use windows_sys::Win32::System::Kernel::{
    EVENT_TYPE, NotificationEvent, SynchronizationEvent, WaitAll, WaitAny,
};

/// 2026-01-01T00:00:00Z as a FILETIME.
const JAN_2026: i64 = 134_116_992_000_000_000;
const MS: i64 = 10_000;

fn fired(violations: &[Violation], api: &str, needle: &str) -> bool {
    violations
        .iter()
        .any(|v| v.api == api && v.message.contains(needle))
}

fn machine() -> Machine {
    Machine::boot(&[])
}

/// A KEVENT on the heap, so it stays at the address it was initialised at.
fn event(kind: EVENT_TYPE, signaled: bool) -> Box<KEVENT> {
    let mut e = Box::new(KEVENT::default());
    // SAFETY: writable KEVENT memory that does not move while the test uses it.
    unsafe { KeInitializeEvent(&mut *e, kind, signaled) };
    e
}

fn addr(e: &KEVENT) -> usize {
    e as *const KEVENT as usize
}

/// KeWaitForSingleObject on an event address, with an optional timeout.
fn wait(event: usize, timeout: Option<i64>) -> NTSTATUS {
    let timeout_ptr = timeout
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const i64);
    // SAFETY: the timeout is NULL or a live i64.
    unsafe { KeWaitForSingleObject(event as *const c_void, 0, 0, false, timeout_ptr) }
}

fn set(event: usize) -> i32 {
    KeSetEvent(event as *mut KEVENT, 0, false)
}

fn push_lock() -> Box<usize> {
    let mut lock = Box::new(0usize);
    // SAFETY: writable memory that stays put.
    unsafe { FltInitializePushLock(&mut *lock) };
    lock
}

fn resource() -> Box<ERESOURCE> {
    // SAFETY: ERESOURCE is plain data; ExInitializeResourceLite initialises it.
    let mut r: Box<ERESOURCE> = Box::new(unsafe { std::mem::zeroed() });
    // SAFETY: writable memory that stays put until deleted.
    assert_eq!(unsafe { ExInitializeResourceLite(&mut *r) }, STATUS_SUCCESS);
    r
}

/// Registers a minimal filter for the work-item tests.
fn filter() -> PFLT_FILTER {
    // SAFETY: DRIVER_OBJECT is plain data for which all-zero is valid.
    let driver: &'static DRIVER_OBJECT = Box::leak(Box::new(unsafe { std::mem::zeroed() }));
    let registration = FLT_REGISTRATION {
        Size: std::mem::size_of::<FLT_REGISTRATION>() as u16,
        Version: 0x0203,
        ..Default::default()
    };
    let mut filter = 0;
    // SAFETY: valid registration and out pointer.
    let status = unsafe { FltRegisterFilter(driver, &registration, &mut filter) };
    assert_eq!(status, STATUS_SUCCESS);
    filter
}

// ---------------------------------------------------------------------------------------
// Events and waits
// ---------------------------------------------------------------------------------------

#[test]
fn an_event_wakes_a_waiter_on_another_thread() {
    let mut machine = machine();
    let e = event(NotificationEvent, false);
    let a = addr(&e);
    let waiter = thread::spawn(move || wait(a, None));
    thread::sleep(Duration::from_millis(30));
    assert!(
        !waiter.is_finished(),
        "the wait ended before the event was set"
    );
    assert_eq!(set(a), 0, "KeSetEvent returns the previous state");
    assert_eq!(waiter.join().unwrap(), STATUS_SUCCESS);
    machine.assert_clean();
}

#[test]
fn a_wait_times_out_with_status_timeout() {
    let mut machine = machine();
    let e = event(NotificationEvent, false);
    let start = Instant::now();
    assert_eq!(wait(addr(&e), Some(-20 * MS)), STATUS_TIMEOUT);
    assert!(start.elapsed() >= Duration::from_millis(20));
    // A zero timeout polls, and may do so at DISPATCH_LEVEL.
    assert_eq!(
        irql::at(DISPATCH_LEVEL, || wait(addr(&e), Some(0))),
        STATUS_TIMEOUT
    );
    // An absolute time already past is a poll too.
    assert_eq!(wait(addr(&e), Some(JAN_2026)), STATUS_TIMEOUT);
    machine.assert_clean();
}

#[test]
fn advancing_the_clock_ends_a_long_wait_without_sleeping() {
    let mut machine = machine();
    let e = event(NotificationEvent, false);
    let a = addr(&e);
    let start = Instant::now();
    let waiter = thread::spawn(move || wait(a, Some(-60_000 * MS)));
    thread::sleep(Duration::from_millis(20));
    machine.advance_clock(Duration::from_secs(61));
    assert_eq!(waiter.join().unwrap(), STATUS_TIMEOUT);
    assert!(start.elapsed() < Duration::from_secs(10));
    machine.assert_clean();
}

#[test]
fn a_synchronization_event_releases_one_waiter_and_resets() {
    let mut machine = machine();
    let e = event(SynchronizationEvent, false);
    let a = addr(&e);
    let woken = std::sync::Arc::new(AtomicU32::new(0));
    let waiters: Vec<_> = (0..2)
        .map(|_| {
            let woken = woken.clone();
            thread::spawn(move || {
                if wait(a, Some(-2_000 * MS)) == STATUS_SUCCESS {
                    woken.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    thread::sleep(Duration::from_millis(30));
    set(a);
    // Reset straight away: the waiter the set satisfied stays satisfied.
    KeClearEvent(a as *mut KEVENT);
    thread::sleep(Duration::from_millis(50));
    assert_eq!(
        woken.load(Ordering::SeqCst),
        1,
        "exactly one waiter released"
    );
    machine.advance_clock(Duration::from_secs(3));
    for w in waiters {
        w.join().unwrap();
    }
    assert_eq!(woken.load(Ordering::SeqCst), 1);
    // Signalled with nobody waiting, it stays signalled until one wait consumes it.
    set(a);
    assert_eq!(KeReadStateEvent(a as *const KEVENT), 1);
    assert_eq!(wait(a, Some(0)), STATUS_SUCCESS);
    assert_eq!(KeReadStateEvent(a as *const KEVENT), 0);
    assert_eq!(wait(a, Some(0)), STATUS_TIMEOUT);
    machine.assert_clean();
}

#[test]
fn a_notification_event_stays_signaled_until_reset() {
    let mut machine = machine();
    let e = event(NotificationEvent, true);
    let a = addr(&e);
    assert_eq!(wait(a, Some(0)), STATUS_SUCCESS);
    assert_eq!(wait(a, None), STATUS_SUCCESS);
    assert_eq!(KeResetEvent(a as *mut KEVENT), 1);
    assert_eq!(wait(a, Some(0)), STATUS_TIMEOUT);
    machine.assert_clean();
}

#[test]
fn wait_any_names_the_object_and_wait_all_needs_every_one() {
    let mut machine = machine();
    let first = event(NotificationEvent, false);
    let second = event(SynchronizationEvent, true);
    let objects = [
        addr(&first) as *const c_void,
        addr(&second) as *const c_void,
    ];
    let zero = 0i64;
    // SAFETY: two live object pointers and a live timeout.
    let any = unsafe {
        KeWaitForMultipleObjects(
            2,
            objects.as_ptr(),
            WaitAny,
            0,
            0,
            false,
            &zero,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(any, 1, "STATUS_WAIT_1: the second object");
    set(addr(&second));
    // SAFETY: as above.
    let all = unsafe {
        KeWaitForMultipleObjects(
            2,
            objects.as_ptr(),
            WaitAll,
            0,
            0,
            false,
            &zero,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(all, STATUS_TIMEOUT, "the first is not signalled");
    assert_eq!(
        KeReadStateEvent(addr(&second) as *const KEVENT),
        1,
        "a WaitAll that is not satisfied consumes nothing"
    );
    set(addr(&first));
    // SAFETY: as above.
    let all = unsafe {
        KeWaitForMultipleObjects(
            2,
            objects.as_ptr(),
            WaitAll,
            0,
            0,
            false,
            &zero,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(all, STATUS_SUCCESS);
    assert_eq!(KeReadStateEvent(addr(&second) as *const KEVENT), 0);
    machine.assert_clean();
}

#[test]
fn a_cancellable_wait_without_callback_data_is_an_ordinary_wait() {
    let mut machine = machine();
    let e = event(NotificationEvent, false);
    let timeout = -5 * MS;
    // SAFETY: live event and timeout.
    let status = unsafe {
        FltCancellableWaitForSingleObject(addr(&e) as *const c_void, &timeout, std::ptr::null())
    };
    assert_eq!(status, STATUS_TIMEOUT);
    set(addr(&e));
    // SAFETY: as above.
    let status = unsafe {
        FltCancellableWaitForSingleObject(addr(&e) as *const c_void, &timeout, std::ptr::null())
    };
    assert_eq!(status, STATUS_SUCCESS);
    machine.assert_clean();
}

#[test]
fn an_event_used_without_initialisation_is_caught() {
    let mut machine = machine();
    let mut raw = Box::new(KEVENT::default());
    KeSetEvent(&mut *raw, 0, false);
    let v = machine.take_violations();
    assert!(
        fired(
            &v,
            "KeSetEvent",
            "not a KEVENT initialised by KeInitializeEvent"
        ),
        "{v:?}"
    );
}

#[test]
fn an_event_moved_after_initialisation_is_caught() {
    let mut machine = machine();
    let e = event(NotificationEvent, true);
    // Safe Rust moves values freely; a KEVENT must not move once initialised.
    let moved = Box::new(*e);
    assert_eq!(wait(addr(&moved), Some(0)), STATUS_INVALID_PARAMETER);
    let v = machine.take_violations();
    assert!(fired(&v, "KeWaitForSingleObject", "moved since"), "{v:?}");
}

#[test]
fn a_blocking_wait_above_apc_level_is_caught() {
    let mut machine = machine();
    let e = event(NotificationEvent, true);
    irql::at(DISPATCH_LEVEL, || wait(addr(&e), Some(-MS)));
    let v = machine.take_violations();
    assert!(
        fired(
            &v,
            "KeWaitForSingleObject",
            "called at IRQL 2, documented maximum is 1"
        ),
        "{v:?}"
    );
}

#[test]
fn too_many_wait_objects_without_wait_blocks_are_caught() {
    let mut machine = machine();
    let events: Vec<Box<KEVENT>> = (0..4).map(|_| event(NotificationEvent, true)).collect();
    let objects: Vec<*const c_void> = events.iter().map(|e| addr(e) as *const c_void).collect();
    // SAFETY: four live object pointers; NULL timeout.
    let status = unsafe {
        KeWaitForMultipleObjects(
            4,
            objects.as_ptr(),
            WaitAny,
            0,
            0,
            false,
            std::ptr::null(),
            std::ptr::null_mut(),
        )
    };
    assert_eq!(status, STATUS_INVALID_PARAMETER);
    let v = machine.take_violations();
    assert!(
        fired(&v, "KeWaitForMultipleObjects", "without a WaitBlockArray"),
        "{v:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Time
// ---------------------------------------------------------------------------------------

#[test]
fn system_time_starts_in_2026_and_advances_with_real_time() {
    let mut machine = machine();
    let mut before = 0i64;
    // SAFETY: a writable i64.
    unsafe { KeQuerySystemTimePrecise(&mut before) };
    assert!((JAN_2026..JAN_2026 + 3_600 * 1_000 * MS).contains(&before));
    let mut qpc = 0u64;
    // SAFETY: a writable u64.
    let interrupt = unsafe { KeQueryInterruptTimePrecise(&mut qpc) };
    assert_eq!(qpc, interrupt);
    let delay = -10 * MS;
    // SAFETY: a readable interval.
    let slept = unsafe { KeDelayExecutionThread(0, false, &delay) };
    assert_eq!(slept, STATUS_SUCCESS);
    let mut after = 0i64;
    // SAFETY: a writable i64.
    unsafe { KeQuerySystemTimePrecise(&mut after) };
    assert!(after - before >= 10 * MS);
    // SAFETY: a writable u64.
    assert!(unsafe { KeQueryInterruptTimePrecise(&mut qpc) } >= interrupt + 10 * MS as u64);
    assert_eq!(KeQueryTimeIncrement(), 156_250);
    machine.advance_clock(Duration::from_secs(3_600));
    assert!(machine.system_time() >= after + 3_600 * 1_000 * MS);
    machine.assert_clean();
}

// ---------------------------------------------------------------------------------------
// Push locks, resources, critical regions, spin locks
// ---------------------------------------------------------------------------------------

#[test]
fn an_exclusive_push_lock_keeps_other_threads_out() {
    let mut machine = machine();
    let mut lock = push_lock();
    let l = &mut *lock as *mut usize as usize;
    FltAcquirePushLockExclusive(l as *mut usize);
    assert!(
        KeAreApcsDisabled(),
        "FltMgr's acquire enters a critical region"
    );
    let inside = std::sync::Arc::new(AtomicBool::new(false));
    let reader = {
        let inside = inside.clone();
        thread::spawn(move || {
            FltAcquirePushLockShared(l as *mut usize);
            inside.store(true, Ordering::SeqCst);
            FltReleasePushLock(l as *mut usize);
        })
    };
    thread::sleep(Duration::from_millis(30));
    assert!(
        !inside.load(Ordering::SeqCst),
        "shared access granted under an exclusive owner"
    );
    FltReleasePushLock(l as *mut usize);
    assert!(
        !KeAreApcsDisabled(),
        "FltReleasePushLock leaves the critical region"
    );
    reader.join().unwrap();
    assert!(inside.load(Ordering::SeqCst));
    FltDeletePushLock(l as *const usize);
    machine.assert_clean();
}

#[test]
fn a_push_lock_acquired_recursively_is_caught() {
    let mut machine = machine();
    let mut lock = push_lock();
    FltAcquirePushLockExclusive(&mut *lock);
    FltAcquirePushLockShared(&mut *lock);
    let v = machine.take_violations();
    assert!(
        fired(
            &v,
            "FltAcquirePushLockShared",
            "acquired again by the thread that holds it"
        ),
        "{v:?}"
    );
    FltReleasePushLock(&mut *lock);
    machine.assert_clean();
}

#[test]
fn a_push_lock_released_by_a_thread_that_does_not_hold_it_is_caught() {
    let mut machine = machine();
    let mut lock = push_lock();
    let l = &mut *lock as *mut usize as usize;
    FltAcquirePushLockExclusive(l as *mut usize);
    thread::spawn(move || FltReleasePushLock(l as *mut usize))
        .join()
        .unwrap();
    let v = machine.take_violations();
    assert!(
        fired(
            &v,
            "FltReleasePushLock",
            "released by a thread that does not hold it"
        ),
        "{v:?}"
    );
    FltReleasePushLock(l as *mut usize);
    machine.assert_clean();
}

#[test]
fn a_push_lock_deleted_while_held_or_never_initialised_is_caught() {
    let mut machine = machine();
    let mut lock = push_lock();
    FltAcquirePushLockExclusive(&mut *lock);
    FltDeletePushLock(&*lock);
    let v = machine.take_violations();
    assert!(
        fired(&v, "FltDeletePushLock", "deleted while held"),
        "{v:?}"
    );
    let mut never = Box::new(0usize);
    FltAcquirePushLockExclusive(&mut *never);
    let v = machine.take_violations();
    assert!(
        fired(&v, "FltAcquirePushLockExclusive", "never initialised"),
        "{v:?}"
    );
    assert!(
        KeAreApcsDisabled(),
        "the first acquire's critical region is still entered"
    );
    KeLeaveCriticalRegion();
    machine.assert_clean();
}

#[test]
fn an_ex_push_lock_acquired_with_apcs_enabled_is_caught() {
    let mut machine = machine();
    let mut lock = Box::new(0usize);
    // SAFETY: writable memory that stays put.
    unsafe { ExInitializePushLock(&mut *lock) };
    ExAcquirePushLockExclusiveEx(&mut *lock, 0);
    let v = machine.take_violations();
    assert!(
        fired(
            &v,
            "ExAcquirePushLockExclusiveEx",
            "normal kernel APCs enabled"
        ),
        "{v:?}"
    );
    ExReleasePushLockExclusiveEx(&mut *lock, 0);
    // Inside a critical region it is fine.
    KeEnterCriticalRegion();
    ExAcquirePushLockExclusiveEx(&mut *lock, 0);
    ExReleasePushLockExclusiveEx(&mut *lock, 0);
    KeLeaveCriticalRegion();
    machine.assert_clean();
}

#[test]
fn an_unbalanced_critical_region_leave_is_caught() {
    let mut machine = machine();
    KeEnterCriticalRegion();
    KeLeaveCriticalRegion();
    machine.assert_clean();
    KeLeaveCriticalRegion();
    let v = machine.take_violations();
    assert!(
        fired(
            &v,
            "KeLeaveCriticalRegion",
            "without a matching KeEnterCriticalRegion"
        ),
        "{v:?}"
    );
}

#[test]
fn an_eresource_is_recursive_for_its_exclusive_owner() {
    let mut machine = machine();
    let mut r = resource();
    FltAcquireResourceExclusive(&mut *r);
    assert!(ExAcquireResourceExclusiveLite(&mut *r, true));
    assert!(ExAcquireResourceSharedLite(&mut *r, true));
    assert!(ExIsResourceAcquiredExclusiveLite(&*r));
    assert_eq!(ExIsResourceAcquiredSharedLite(&*r), 3);
    let p = &mut *r as *mut ERESOURCE as usize;
    let other = thread::spawn(move || {
        KeEnterCriticalRegion();
        let got = ExAcquireResourceSharedLite(p as *mut ERESOURCE, false);
        KeLeaveCriticalRegion();
        got
    });
    assert!(
        !other.join().unwrap(),
        "another thread got it while owned exclusive"
    );
    ExReleaseResourceLite(&mut *r);
    ExReleaseResourceLite(&mut *r);
    FltReleaseResource(&mut *r);
    assert!(!KeAreApcsDisabled());
    assert_eq!(ExIsResourceAcquiredSharedLite(&*r), 0);
    assert_eq!(ExDeleteResourceLite(&mut *r), STATUS_SUCCESS);
    machine.assert_clean();
}

#[test]
fn an_eresource_acquired_outside_a_critical_region_is_caught() {
    let mut machine = machine();
    let mut r = resource();
    assert!(ExAcquireResourceExclusiveLite(&mut *r, true));
    let v = machine.take_violations();
    assert!(
        fired(
            &v,
            "ExAcquireResourceExclusiveLite",
            "normal kernel APCs enabled"
        ),
        "{v:?}"
    );
    ExReleaseResourceLite(&mut *r);
    ExDeleteResourceLite(&mut *r);
    machine.assert_clean();
}

#[test]
fn an_eresource_released_by_a_non_owner_or_deleted_while_held_is_caught() {
    let mut machine = machine();
    let mut r = resource();
    let p = &mut *r as *mut ERESOURCE as usize;
    FltAcquireResourceExclusive(p as *mut ERESOURCE);
    thread::spawn(move || ExReleaseResourceLite(p as *mut ERESOURCE))
        .join()
        .unwrap();
    let v = machine.take_violations();
    assert!(
        fired(&v, "ExReleaseResourceLite", "RESOURCE_NOT_OWNED"),
        "{v:?}"
    );
    ExDeleteResourceLite(p as *mut ERESOURCE);
    let v = machine.take_violations();
    assert!(
        fired(&v, "ExDeleteResourceLite", "deleted while held"),
        "{v:?}"
    );
    KeLeaveCriticalRegion();
}

#[test]
fn a_shared_owner_asking_for_exclusive_is_a_deadlock() {
    let mut machine = machine();
    let mut r = resource();
    KeEnterCriticalRegion();
    assert!(ExAcquireResourceSharedLite(&mut *r, true));
    assert!(!ExAcquireResourceExclusiveLite(&mut *r, true));
    let v = machine.take_violations();
    assert!(
        fired(
            &v,
            "ExAcquireResourceExclusiveLite",
            "acquired again by the thread that holds it"
        ),
        "{v:?}"
    );
    ExReleaseResourceLite(&mut *r);
    KeLeaveCriticalRegion();
    ExDeleteResourceLite(&mut *r);
    machine.assert_clean();
}

#[test]
fn a_lock_order_inversion_between_two_threads_is_caught_instead_of_hanging() {
    let mut machine = machine();
    let mut one = resource();
    let mut two = resource();
    let (a, b) = (
        &mut *one as *mut ERESOURCE as usize,
        &mut *two as *mut ERESOURCE as usize,
    );
    let (held_tx, held_rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let other = thread::spawn(move || {
        KeEnterCriticalRegion();
        assert!(ExAcquireResourceExclusiveLite(b as *mut ERESOURCE, true));
        held_tx.send(()).unwrap();
        go_rx.recv().unwrap();
        let got = ExAcquireResourceExclusiveLite(a as *mut ERESOURCE, true);
        if got {
            ExReleaseResourceLite(a as *mut ERESOURCE);
        }
        ExReleaseResourceLite(b as *mut ERESOURCE);
        KeLeaveCriticalRegion();
        got
    });
    KeEnterCriticalRegion();
    assert!(ExAcquireResourceExclusiveLite(a as *mut ERESOURCE, true));
    held_rx.recv().unwrap();
    go_tx.send(()).unwrap();
    thread::sleep(Duration::from_millis(20));
    let got = ExAcquireResourceExclusiveLite(b as *mut ERESOURCE, true);
    if got {
        ExReleaseResourceLite(b as *mut ERESOURCE);
    }
    ExReleaseResourceLite(a as *mut ERESOURCE);
    KeLeaveCriticalRegion();
    let other_got = other.join().unwrap();
    assert!(got != other_got, "exactly one side is refused");
    let v = machine.take_violations();
    assert!(
        v.iter()
            .any(|v| v.api == "ExAcquireResourceExclusiveLite" && v.message.starts_with("deadlock")),
        "{v:?}"
    );
    ExDeleteResourceLite(a as *mut ERESOURCE);
    ExDeleteResourceLite(b as *mut ERESOURCE);
    machine.assert_clean();
}

#[test]
fn a_spin_lock_runs_its_holder_at_dispatch_level() {
    let mut machine = machine();
    let mut lock = Box::new(7usize);
    // SAFETY: writable memory.
    unsafe { KeInitializeSpinLock(&mut *lock) };
    let mut handle = KLOCK_QUEUE_HANDLE::default();
    // SAFETY: a lock and a handle that stay put until the release.
    unsafe { KeAcquireInStackQueuedSpinLock(&mut *lock, &mut handle) };
    assert_eq!(irql::current(), DISPATCH_LEVEL);
    assert_ne!(*lock, 0, "a held spin lock is not zero");
    // SAFETY: the handle the acquire filled.
    unsafe { KeReleaseInStackQueuedSpinLock(&handle) };
    assert_eq!(irql::current(), PASSIVE_LEVEL);
    assert_eq!(*lock, 0);
    machine.assert_clean();
}

#[test]
fn a_spin_lock_acquired_recursively_is_caught() {
    let mut machine = machine();
    let mut lock = Box::new(0usize);
    let (mut first, mut second) = (KLOCK_QUEUE_HANDLE::default(), KLOCK_QUEUE_HANDLE::default());
    // SAFETY: a lock and handles that stay put until the release.
    unsafe { KeAcquireInStackQueuedSpinLock(&mut *lock, &mut first) };
    // SAFETY: as above.
    unsafe { KeAcquireInStackQueuedSpinLock(&mut *lock, &mut second) };
    let v = machine.take_violations();
    assert!(
        fired(&v, "KeAcquireInStackQueuedSpinLock", "spin lock")
            && fired(&v, "KeAcquireInStackQueuedSpinLock", "acquired again"),
        "{v:?}"
    );
    // SAFETY: the handle the first acquire filled.
    unsafe { KeReleaseInStackQueuedSpinLock(&first) };
    assert_eq!(irql::current(), PASSIVE_LEVEL);
    machine.assert_clean();
}

// ---------------------------------------------------------------------------------------
// Work items
// ---------------------------------------------------------------------------------------

static ROUTINE_PID: AtomicU32 = AtomicU32::new(0);
static ROUTINE_IRQL: AtomicU32 = AtomicU32::new(u32::MAX);
static ROUTINE_CONTEXT: AtomicU64 = AtomicU64::new(0);

unsafe extern "system" fn record_and_free(
    item: PFLT_GENERIC_WORKITEM,
    _filter: *const c_void,
    context: *const c_void,
) {
    ROUTINE_PID.store(PsGetCurrentProcessId() as u32, Ordering::SeqCst);
    ROUTINE_IRQL.store(u32::from(irql::current()), Ordering::SeqCst);
    ROUTINE_CONTEXT.store(context as u64, Ordering::SeqCst);
    // Freeing its own item from the routine is the documented pattern.
    FltFreeGenericWorkItem(item);
}

unsafe extern "system" fn nothing(_: PFLT_GENERIC_WORKITEM, _: *const c_void, _: *const c_void) {}

unsafe extern "system" fn stays_in_critical_region(
    _: PFLT_GENERIC_WORKITEM,
    _: *const c_void,
    _: *const c_void,
) {
    KeEnterCriticalRegion();
}

#[test]
fn a_work_item_runs_later_on_a_system_thread_at_passive_level() {
    let mut machine = machine();
    let filter = filter();
    let item = FltAllocateGenericWorkItem();
    assert_ne!(item, 0);
    assert!(machine.pool_bytes(*b"FMwi") > 0);
    let status = irql::at(DISPATCH_LEVEL, || {
        FltQueueGenericWorkItem(
            item,
            filter as *const c_void,
            Some(record_and_free),
            DelayedWorkQueue,
            0x5eed as *const c_void,
        )
    });
    assert_eq!(status, STATUS_SUCCESS);
    machine.idle();
    assert_eq!(ROUTINE_PID.load(Ordering::SeqCst), SYSTEM_PID);
    assert_eq!(
        ROUTINE_IRQL.load(Ordering::SeqCst),
        u32::from(PASSIVE_LEVEL)
    );
    assert_eq!(ROUTINE_CONTEXT.load(Ordering::SeqCst), 0x5eed);
    assert_eq!(
        machine.pool_bytes(*b"FMwi"),
        0,
        "the routine freed its item"
    );
    FltUnregisterFilter(filter);
    machine.assert_clean();
}

#[test]
fn a_work_item_queued_twice_or_freed_while_queued_is_caught() {
    let mut machine = machine();
    let filter = filter();
    let item = FltAllocateGenericWorkItem();
    machine.hold_work_queues(true);
    let queue = || {
        FltQueueGenericWorkItem(
            item,
            filter as *const c_void,
            Some(nothing),
            CriticalWorkQueue,
            std::ptr::null(),
        )
    };
    assert_eq!(queue(), STATUS_SUCCESS);
    assert_eq!(queue(), STATUS_INVALID_PARAMETER);
    FltFreeGenericWorkItem(item);
    let v = machine.take_violations();
    assert!(
        fired(
            &v,
            "FltQueueGenericWorkItem",
            "queued again before its routine ran"
        ),
        "{v:?}"
    );
    assert!(
        fired(&v, "FltFreeGenericWorkItem", "freed while still queued"),
        "{v:?}"
    );
    machine.hold_work_queues(false);
    machine.idle();
    // Once it has run it may be queued again, and freed.
    assert_eq!(queue(), STATUS_SUCCESS);
    machine.idle();
    FltFreeGenericWorkItem(item);
    FltUnregisterFilter(filter);
    machine.assert_clean();
}

#[test]
fn queueing_after_unregister_or_to_a_reserved_queue_is_caught() {
    let mut machine = machine();
    let filter = filter();
    let item = FltAllocateGenericWorkItem();
    let status = FltQueueGenericWorkItem(
        item,
        filter as *const c_void,
        Some(nothing),
        HyperCriticalWorkQueue,
        std::ptr::null(),
    );
    assert_eq!(status, STATUS_INVALID_PARAMETER);
    let v = machine.take_violations();
    assert!(
        fired(
            &v,
            "FltQueueGenericWorkItem",
            "neither CriticalWorkQueue nor DelayedWorkQueue"
        ),
        "{v:?}"
    );
    FltUnregisterFilter(filter);
    machine.take_violations();
    let status = FltQueueGenericWorkItem(
        item,
        filter as *const c_void,
        Some(nothing),
        DelayedWorkQueue,
        std::ptr::null(),
    );
    assert_ne!(status, STATUS_SUCCESS);
    let v = machine.take_violations();
    assert!(
        fired(
            &v,
            "FltQueueGenericWorkItem",
            "used after FltUnregisterFilter"
        ),
        "{v:?}"
    );
    FltFreeGenericWorkItem(item);
    machine.assert_clean();
}

#[test]
fn a_work_routine_that_returns_inside_a_critical_region_is_caught() {
    let mut machine = machine();
    let filter = filter();
    let item = FltAllocateGenericWorkItem();
    let status = FltQueueGenericWorkItem(
        item,
        filter as *const c_void,
        Some(stays_in_critical_region),
        DelayedWorkQueue,
        std::ptr::null(),
    );
    assert_eq!(status, STATUS_SUCCESS);
    machine.idle();
    let v = machine.take_violations();
    assert!(
        fired(
            &v,
            "FltQueueGenericWorkItem",
            "work routine returned inside 1 critical region"
        ),
        "{v:?}"
    );
    FltFreeGenericWorkItem(item);
    FltUnregisterFilter(filter);
    machine.assert_clean();
}
