//! Wait queues: signalling one object wakes only the threads waiting on that object, as
//! Windows readies only the waiters an object's signal satisfies. Counted with the
//! model's wake-up counter ([`Machine::wakeups`]), so the figures are exact, not timed.

use std::ffi::c_void;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use cloudflt_tests::model::Machine;
use cloudflt_tests::model::sync::{
    FltAcquirePushLockExclusive, FltAcquirePushLockShared, FltDeletePushLock,
    FltInitializePushLock, FltReleasePushLock, KeDelayExecutionThread, KeInitializeEvent,
    KeSetEvent, KeWaitForSingleObject,
};
use windows_sys::Wdk::Foundation::KEVENT;
use windows_sys::Win32::Foundation::{NTSTATUS, STATUS_SUCCESS};
use windows_sys::Win32::System::Kernel::{EVENT_TYPE, NotificationEvent, SynchronizationEvent};

/// Threads per test: the concurrency of the 64-reader hydration case.
const N: usize = 64;
const MS: i64 = 10_000;

/// A KEVENT that stays at the address it was initialised at, for the whole test.
fn event(kind: EVENT_TYPE) -> usize {
    let e: &'static mut KEVENT = Box::leak(Box::default());
    // SAFETY: writable KEVENT memory that never moves.
    unsafe { KeInitializeEvent(e, kind, false) };
    e as *mut KEVENT as usize
}

fn wait(event: usize) -> NTSTATUS {
    // SAFETY: a live event, no timeout.
    unsafe { KeWaitForSingleObject(event as *const c_void, 0, 0, false, std::ptr::null()) }
}

fn set(event: usize) {
    KeSetEvent(event as *mut KEVENT, 0, false);
}

/// Waits (in real time) until exactly `n` threads are asleep in the kernel.
fn until_blocked(machine: &Machine, n: usize) {
    let start = Instant::now();
    while machine.blocked_threads() != n {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{} threads blocked, expected {n}",
            machine.blocked_threads()
        );
        thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn signalling_one_of_many_events_wakes_only_its_waiter() {
    let mut machine = Machine::boot(&[]);
    let events: Vec<usize> = (0..N).map(|_| event(NotificationEvent)).collect();
    let mut waiters: Vec<_> = events
        .iter()
        .map(|&e| thread::spawn(move || wait(e)))
        .collect();
    until_blocked(&machine, N);
    let before = machine.wakeups();
    set(events[0]);
    let one = machine.wakeups() - before;
    assert_eq!(one, 1, "signalling one event woke {one} of {N} waiters");
    assert_eq!(waiters.remove(0).join().unwrap(), STATUS_SUCCESS);
    until_blocked(&machine, N - 1);
    for &e in &events[1..] {
        set(e);
    }
    for w in waiters {
        assert_eq!(w.join().unwrap(), STATUS_SUCCESS);
    }
    let all = machine.wakeups() - before;
    assert_eq!(all, N as u64, "each waiter woken once");
    println!("{N} waiters on their own events: signalling one woke {one}, all {N} woke {all}");
    machine.assert_clean();
}

#[test]
fn a_synchronization_event_wakes_only_the_waiter_it_releases() {
    let mut machine = Machine::boot(&[]);
    let e = event(SynchronizationEvent);
    let (done, finished) = mpsc::channel();
    let waiters: Vec<_> = (0..N)
        .map(|_| {
            let done = done.clone();
            thread::spawn(move || {
                let status = wait(e);
                done.send(()).unwrap();
                status
            })
        })
        .collect();
    until_blocked(&machine, N);
    for left in (0..N).rev() {
        let before = machine.wakeups();
        set(e);
        assert_eq!(machine.wakeups() - before, 1, "one set releases one waiter");
        finished.recv().unwrap();
        until_blocked(&machine, left);
    }
    for w in waiters {
        assert_eq!(w.join().unwrap(), STATUS_SUCCESS);
    }
    // A notification event releases every waiter: each is woken, once.
    let e = event(NotificationEvent);
    let waiters: Vec<_> = (0..N).map(|_| thread::spawn(move || wait(e))).collect();
    until_blocked(&machine, N);
    let before = machine.wakeups();
    set(e);
    assert_eq!(machine.wakeups() - before, N as u64);
    for w in waiters {
        assert_eq!(w.join().unwrap(), STATUS_SUCCESS);
    }
    machine.assert_clean();
}

#[test]
fn releasing_a_push_lock_wakes_only_the_waiters_it_lets_in() {
    let mut machine = Machine::boot(&[]);
    let lock: &'static mut usize = Box::leak(Box::new(0));
    // SAFETY: writable memory that never moves.
    unsafe { FltInitializePushLock(lock) };
    let l = lock as *mut usize as usize;
    // Exclusive waiters get it one at a time: each release wakes the next one only.
    FltAcquirePushLockExclusive(l as *mut usize);
    let waiters: Vec<_> = (0..N)
        .map(|_| {
            thread::spawn(move || {
                FltAcquirePushLockExclusive(l as *mut usize);
                FltReleasePushLock(l as *mut usize);
            })
        })
        .collect();
    until_blocked(&machine, N);
    let before = machine.wakeups();
    FltReleasePushLock(l as *mut usize);
    for w in waiters {
        w.join().unwrap();
    }
    let exclusive = machine.wakeups() - before;
    assert_eq!(
        exclusive, N as u64,
        "{N} handovers woke {exclusive} threads"
    );
    // Shared waiters all get in together: one release wakes them all, once.
    FltAcquirePushLockExclusive(l as *mut usize);
    let waiters: Vec<_> = (0..N)
        .map(|_| {
            thread::spawn(move || {
                FltAcquirePushLockShared(l as *mut usize);
                FltReleasePushLock(l as *mut usize);
            })
        })
        .collect();
    until_blocked(&machine, N);
    let before = machine.wakeups();
    FltReleasePushLock(l as *mut usize);
    assert_eq!(machine.wakeups() - before, N as u64);
    for w in waiters {
        w.join().unwrap();
    }
    FltDeletePushLock(l as *const usize);
    machine.assert_clean();
}

#[test]
fn moving_the_clock_wakes_only_the_sleepers_whose_time_has_come() {
    let mut machine = Machine::boot(&[]);
    let sleep = |ms: i64| {
        thread::spawn(move || {
            let interval = -ms * MS;
            // SAFETY: a live interval.
            unsafe { KeDelayExecutionThread(0, false, &interval) }
        })
    };
    let short = sleep(1_000);
    let long = sleep(100_000);
    until_blocked(&machine, 2);
    let before = machine.wakeups();
    machine.advance_clock(Duration::from_secs(2));
    assert_eq!(machine.wakeups() - before, 1);
    assert_eq!(short.join().unwrap(), STATUS_SUCCESS);
    until_blocked(&machine, 1);
    machine.advance_clock(Duration::from_secs(100));
    assert_eq!(long.join().unwrap(), STATUS_SUCCESS);
    machine.assert_clean();
}
