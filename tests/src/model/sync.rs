//! Kernel synchronisation and time: events and waits, the machine clock, critical and
//! guarded regions, push locks, ERESOURCEs and spin locks.
//!
//! Owns: the state of every event, push lock, resource and spin lock the driver
//! initialised, keyed by the address of the driver's own `KEVENT` / `EX_PUSH_LOCK` /
//! `ERESOURCE` / `KSPIN_LOCK`; which thread waits for which lock; each thread's
//! critical- and guarded-region depth; the clock; and the one place a model thread
//! blocks in the kernel, [`block_until`], which sleeps with the kernel lock handed back
//! on the [`Key`]s of what it waits for: a change wakes only the threads waiting on the
//! object that changed ([`waits`](super::waits)).
//!
//! Checks what Windows and Driver Verifier check: each API's documented IRQL (a wait with
//! a non-zero timeout needs `<= APC_LEVEL`, a zero-timeout poll is allowed at
//! `DISPATCH_LEVEL`), objects used without being initialised (or moved after it, which
//! safe Rust does easily), locks acquired recursively or in a cycle (a hang on Windows, a
//! violation here, and the acquire returns without the lock), locks released by a thread
//! that does not hold them, locks deleted or re-initialised while held, `Ex*` push locks
//! and resources acquired with normal kernel APCs enabled, unbalanced critical and
//! guarded regions, and spin locks released at the wrong IRQL.
//!
//! Does not model: APCs and alerts (alertable waits never end with `STATUS_ALERTED` or
//! `STATUS_USER_APC`), thread priorities and boosts, `KeSetEvent(.., Wait = TRUE)`'s
//! raised IRQL (treated as `FALSE`), semaphores, mutexes and fast mutexes. Timers (which
//! are dispatcher objects here too) and DPCs are [`timer`](super::timer)'s.
//! `KeAcquireSpinLockRaiseToDpc` / `KeReleaseSpinLock` are real x64 exports but
//! windows-sys 0.61 does not declare them, so no driver built on it can import them.
//!
//! Time is real and monotonic, but starts at a fixed date so that what the driver stamps
//! is reproducible, and tests can move it forward ([`Machine::advance_clock`]) so that a
//! 60-second timeout is tested without sleeping.

use crate::model::fast::{HashMap, HashSet};
use std::cell::Cell;
use std::ffi::c_void;
use std::mem::offset_of;
use std::sync::PoisonError;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use windows_sys::Wdk::Foundation::{
    DISPATCHER_HEADER, DISPATCHER_HEADER_0, DISPATCHER_HEADER_0_1, ERESOURCE, KEVENT, KWAIT_BLOCK,
};
use windows_sys::Wdk::Storage::FileSystem::Minifilters::FLT_CALLBACK_DATA;
use windows_sys::Wdk::System::SystemServices::{
    KLOCK_QUEUE_HANDLE, KSPIN_LOCK_QUEUE, KWAIT_REASON,
};
use windows_sys::Win32::Foundation::{
    NTSTATUS, STATUS_CANCELLED, STATUS_INVALID_PARAMETER, STATUS_SUCCESS, STATUS_TIMEOUT,
    STATUS_WAIT_0,
};
use windows_sys::Win32::System::Kernel::{
    EVENT_TYPE, LIST_ENTRY, NotificationEvent, SynchronizationEvent, WAIT_TYPE, WaitAll, WaitAny,
};

use super::irql::{self, APC_LEVEL, DISPATCH_LEVEL, PASSIVE_LEVEL};
use super::waits::{self, WaitQueue};
use super::{KERNEL, Kernel, Machine, with_kernel};

/// 2026-01-01T00:00:00Z in 100 ns units since 1601-01-01 (the FILETIME epoch):
/// (11_644_473_600 s to 1970 + 1_767_225_600 s to 2026) * 10^7.
const SYSTEM_TIME_AT_BOOT: u64 = 134_116_992_000_000_000;
/// Interrupt time (100 ns since boot) when the machine is booted. Not zero: a driver
/// never loads at the first instant of boot, and code that treats 0 as "unset" should
/// not get lucky.
const INTERRUPT_TIME_AT_BOOT: u64 = 30 * 10_000_000;
/// The default clock tick, 15.625 ms, as KeQueryTimeIncrement reports it.
const TIME_INCREMENT: u32 = 156_250;
/// QueryPerformanceFrequency on Windows 10 and later.
const QPC_FREQUENCY: i64 = 10_000_000;
/// `sizeof(KEVENT) / sizeof(LONG)`, what KeInitializeEvent stores in `Header.Size`.
const KEVENT_SIZE_IN_LONGS: u8 = 6;
/// THREAD_WAIT_OBJECTS: waits on more objects need the caller's wait blocks.
const THREAD_WAIT_OBJECTS: u32 = 3;
/// MAXIMUM_WAIT_OBJECTS: more is bug check MAXIMUM_WAIT_OBJECTS_EXCEEDED.
const MAXIMUM_WAIT_OBJECTS: u32 = 64;

/// What a thread blocked in the kernel waits for. Each change that can end a wait wakes
/// the key it changed, which wakes only the threads waiting on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Key {
    /// One dispatcher wait (KeWaitFor*, FltCancellableWaitFor*), by its waiter id: woken
    /// when the dispatcher satisfies it, as Windows readies the thread whose wait block
    /// an object's signal satisfied and leaves the other waiters of that object asleep.
    Wait(u64),
    /// One thread's wait for a push lock, ERESOURCE or spin lock: (lock address, thread).
    /// Woken when the lock would now be granted to it ([`SyncState::wake_lock`]), or is
    /// deleted: as Windows wakes the exclusive waiter or the run of shared waiters at the
    /// head of a lock's wait list, and leaves the rest asleep.
    Lock(usize, u64),
    /// The I/O operation of a callback data, by address: woken when it is cancelled.
    Cancel(usize),
    /// The work queues got an item, or were released: for idle worker threads.
    WorkQueued,
    /// A work item's routine returned: for FltUnregisterFilter and `Machine::idle`.
    WorkDone,
    /// A timer was set or a DPC queued: for the DPC thread (timer.rs).
    Timers,
    /// A DPC routine returned: for KeFlushQueuedDpcs.
    DpcDone,
    /// A filter instance, by handle: woken when an operation lets go of it (leaves its
    /// callbacks, or no longer owes it a post-operation), a rundown reference on it is
    /// dropped, or its teardown ends. For instance teardown (teardown.rs), which waits
    /// for the instance's rundown as FltMgr does.
    Instance(isize),
}

static NEXT_THREAD: AtomicU64 = AtomicU64::new(1);

thread_local! {
    static THREAD: u64 = NEXT_THREAD.fetch_add(1, Ordering::Relaxed);
    static CRITICAL: Cell<u32> = const { Cell::new(0) };
    static GUARDED: Cell<u32> = const { Cell::new(0) };
}

/// The calling model thread's id (what `KeGetCurrentThread` distinguishes).
pub(crate) fn current_thread() -> u64 {
    THREAD.with(|t| *t)
}

/// Whether normal kernel APCs are disabled on this thread: inside a critical or guarded
/// region, or at `APC_LEVEL` or above. ERESOURCEs and `Ex*` push locks require it.
pub(crate) fn normal_apcs_disabled() -> bool {
    CRITICAL.with(Cell::get) > 0 || GUARDED.with(Cell::get) > 0 || irql::current() >= APC_LEVEL
}

// ---------------------------------------------------------------------------------------
// State
// ---------------------------------------------------------------------------------------

/// The machine clock.
pub(crate) struct Clock {
    boot: Instant,
    /// How far tests moved time forward, in 100 ns units.
    skew: u64,
}

impl Clock {
    /// Interrupt time: 100 ns units since boot, monotonic.
    pub(crate) fn interrupt_time(&self) -> u64 {
        let elapsed = u64::try_from(self.boot.elapsed().as_nanos() / 100).unwrap_or(u64::MAX);
        INTERRUPT_TIME_AT_BOOT
            .saturating_add(elapsed)
            .saturating_add(self.skew)
    }

    /// System time: 100 ns units since 1601-01-01 UTC.
    pub(crate) fn system_time(&self) -> u64 {
        SYSTEM_TIME_AT_BOOT + (self.interrupt_time() - INTERRUPT_TIME_AT_BOOT)
    }

    /// The interrupt time at which a kernel timeout expires: `None` waits forever, a
    /// negative value is relative, a positive one an absolute system time, zero a poll.
    pub(crate) fn deadline(&self, timeout: Option<i64>) -> Option<u64> {
        let now = self.interrupt_time();
        let timeout = timeout?;
        Some(if timeout < 0 {
            now.saturating_add(timeout.unsigned_abs())
        } else {
            now.saturating_add(timeout.unsigned_abs().saturating_sub(self.system_time()))
        })
    }
}

/// Which dispatcher object a waitable address is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ObjectKind {
    Event,
    /// A KTIMER (timer.rs owns its timer-table state; its signal state lives here).
    Timer,
}

/// A dispatcher object's state.
struct Object {
    kind: ObjectKind,
    /// A synchronization event or timer: satisfying a wait resets it.
    synchronization: bool,
    signaled: bool,
}

struct Waiter {
    /// Also its wait key, [`Key::Wait`].
    id: u64,
    objects: Vec<usize>,
    all: bool,
    /// Index of the object that satisfied the wait, set by whoever signalled it.
    satisfied: Option<usize>,
}

#[derive(Default)]
struct PushLock {
    exclusive: Option<u64>,
    shared: Vec<u64>,
}

#[derive(Default)]
struct Resource {
    /// Owner and recursion count.
    exclusive: Option<(u64, u32)>,
    shared: Vec<(u64, u32)>,
}

/// The synchronisation state of one machine.
pub(crate) struct SyncState {
    pub(crate) clock: Clock,
    /// Every event and timer, by the address of its KEVENT / KTIMER.
    objects: HashMap<usize, Object>,
    /// In the order the waits began: signalling satisfies the oldest first.
    waiters: Vec<Waiter>,
    next_waiter: u64,
    push_locks: HashMap<usize, PushLock>,
    resources: HashMap<usize, Resource>,
    /// Held spin locks and their holder; a free spin lock needs no entry.
    spin_locks: HashMap<usize, u64>,
    /// Threads blocked on a lock, by thread.
    blocked_on: HashMap<u64, Blocked>,
    /// The same, by lock, oldest first (`since` → thread, exclusive): what a release
    /// looks at, without going through every blocked thread of the machine.
    lock_queues: HashMap<usize, std::collections::BTreeMap<u64, (u64, bool)>>,
    /// Orders [`Blocked::since`].
    next_blocked: u64,
    cancel_probe: Option<CancelProbe>,
    /// The threads blocked in the kernel, by what they wait for.
    pub(crate) waits: WaitQueue<Key>,
}

impl Default for SyncState {
    fn default() -> Self {
        Self {
            clock: Clock {
                boot: Instant::now(),
                skew: 0,
            },
            objects: HashMap::default(),
            waiters: Vec::new(),
            next_waiter: 1,
            push_locks: HashMap::default(),
            resources: HashMap::default(),
            spin_locks: HashMap::default(),
            blocked_on: HashMap::default(),
            lock_queues: HashMap::default(),
            next_blocked: 0,
            cancel_probe: None,
            waits: WaitQueue::default(),
        }
    }
}

/// A thread waiting for a lock.
#[derive(Clone, Copy)]
struct Blocked {
    lock: usize,
    exclusive: bool,
    /// When it started waiting: the lock's waiters are woken oldest first.
    since: u64,
}

/// Outcome of one attempt to take a lock.
enum Grant {
    Granted,
    Busy,
    /// The lock is not initialised (or was deleted): the message says so.
    Invalid(String),
}

impl SyncState {
    pub(crate) fn is_signaled(&self, object: usize) -> bool {
        self.objects.get(&object).is_some_and(|e| e.signaled)
    }

    pub(crate) fn set_signaled(&mut self, object: usize, signaled: bool) {
        if let Some(e) = self.objects.get_mut(&object) {
            e.signaled = signaled;
            publish_signal_state(object, signaled);
        }
    }

    /// What satisfying a wait does to the object: a synchronization event resets.
    fn consume(&mut self, object: usize) {
        if self.objects.get(&object).is_some_and(|e| e.synchronization) {
            self.set_signaled(object, false);
        }
    }

    /// Satisfies every waiter that can be, oldest first, as the dispatcher does when an
    /// object is signalled: a notification event releases them all, a synchronization
    /// event exactly one. A waiter satisfied here stays satisfied even if the event is
    /// reset before it runs.
    fn satisfy_waiters(&mut self) {
        for i in 0..self.waiters.len() {
            let waiter = &self.waiters[i];
            if waiter.satisfied.is_some() {
                continue;
            }
            let hit = if waiter.all {
                waiter
                    .objects
                    .iter()
                    .all(|&o| self.is_signaled(o))
                    .then_some(0)
            } else {
                waiter.objects.iter().position(|&o| self.is_signaled(o))
            };
            let Some(index) = hit else { continue };
            let consumed = if waiter.all {
                waiter.objects.clone()
            } else {
                vec![waiter.objects[index]]
            };
            for object in consumed {
                self.consume(object);
            }
            self.waiters[i].satisfied = Some(index);
            self.waits.wake(Key::Wait(self.waiters[i].id));
        }
    }

    /// Records a dispatcher object its initialise routine has just written at `addr`,
    /// and satisfies the waits it can (a waiter on the old object at that address, for
    /// one).
    pub(crate) fn init_object(
        &mut self,
        addr: usize,
        kind: ObjectKind,
        synchronization: bool,
        signaled: bool,
    ) {
        self.objects.insert(
            addr,
            Object {
                kind,
                synchronization,
                signaled,
            },
        );
        self.satisfy_waiters();
    }

    /// Forgets a dispatcher object whose memory was freed.
    pub(crate) fn forget_object(&mut self, addr: usize) {
        self.objects.remove(&addr);
    }

    /// Signals a dispatcher object and satisfies the waits it can, as an expiring timer
    /// or KeSetEvent does.
    pub(crate) fn signal(&mut self, addr: usize) {
        self.set_signaled(addr, true);
        self.satisfy_waiters();
    }

    /// Whether `addr` is a dispatcher object of `kind` (any kind when `None`) whose
    /// initialise routine ran at this address; says why not.
    pub(crate) fn check_object(
        &self,
        api: &'static str,
        addr: usize,
        kind: Option<ObjectKind>,
    ) -> Result<(), String> {
        if addr == 0 {
            return Err(format!("{api} on a NULL dispatcher object"));
        }
        let known = self
            .objects
            .get(&addr)
            .is_some_and(|o| kind.is_none_or(|k| o.kind == k));
        if known && header_points_to_itself(addr) {
            return Ok(());
        }
        let what = match kind {
            Some(ObjectKind::Event) => "a KEVENT initialised by KeInitializeEvent",
            Some(ObjectKind::Timer) => "a KTIMER initialised by KeInitializeTimer(Ex)",
            None => "a dispatcher object initialised by KeInitializeEvent or KeInitializeTimer(Ex)",
        };
        Err(format!(
            "{addr:#x} is not {what} at this address (never initialised, or moved since)"
        ))
    }

    /// Whether `event` is a KEVENT KeInitializeEvent set up at this address.
    fn check_event(&self, api: &'static str, event: usize) -> Result<(), String> {
        self.check_object(api, event, Some(ObjectKind::Event))
    }

    fn kind(&self, lock: usize) -> &'static str {
        if self.push_locks.contains_key(&lock) {
            "push lock"
        } else if self.resources.contains_key(&lock) {
            "ERESOURCE"
        } else {
            "spin lock"
        }
    }

    fn owners(&self, lock: usize) -> Vec<u64> {
        if let Some(p) = self.push_locks.get(&lock) {
            p.exclusive
                .into_iter()
                .chain(p.shared.iter().copied())
                .collect()
        } else if let Some(r) = self.resources.get(&lock) {
            r.exclusive
                .map(|(t, _)| t)
                .into_iter()
                .chain(r.shared.iter().map(|&(t, _)| t))
                .collect()
        } else {
            self.spin_locks.get(&lock).copied().into_iter().collect()
        }
    }

    /// The chain of (thread, lock it waits for) by which waiting for `lock` would come
    /// back to `me`; empty when `me` holds `lock` itself. `None` when there is no cycle.
    fn cycle(&self, me: u64, lock: usize, seen: &mut HashSet<usize>) -> Option<Vec<(u64, usize)>> {
        for owner in self.owners(lock) {
            if owner == me {
                return Some(Vec::new());
            }
            if let Some(&Blocked { lock: next, .. }) = self.blocked_on.get(&owner)
                && seen.insert(next)
                && let Some(mut chain) = self.cycle(me, next, seen)
            {
                chain.insert(0, (owner, next));
                return Some(chain);
            }
        }
        None
    }

    /// Why waiting for `lock` would never end, if it would not.
    fn deadlock(&self, me: u64, lock: usize) -> Option<String> {
        let chain = self.cycle(me, lock, &mut HashSet::from_iter([lock]))?;
        let kind = self.kind(lock);
        if chain.is_empty() {
            return Some(format!(
                "{kind} {lock:#x} acquired again by the thread that holds it: it is not \
                 recursive here, and the thread would wait for itself forever"
            ));
        }
        let path: Vec<String> = chain
            .iter()
            .map(|(t, l)| format!("thread {t}, which waits for {} {l:#x}", self.kind(*l)))
            .collect();
        Some(format!(
            "deadlock: {kind} {lock:#x} is held by {}, held by this thread",
            path.join(", held by ")
        ))
    }

    fn grant_push_lock(&mut self, lock: usize, me: u64, exclusive: bool) -> Grant {
        // Push locks are fair: a waiting exclusive acquirer holds back new shared ones.
        let exclusive_waiting = self.exclusive_waiting(lock, me);
        let Some(p) = self.push_locks.get_mut(&lock) else {
            return Grant::Invalid(format!(
                "push lock {lock:#x} was never initialised (or was deleted)"
            ));
        };
        match (exclusive, p.exclusive) {
            (_, Some(_)) => Grant::Busy,
            (true, None) if p.shared.is_empty() => {
                p.exclusive = Some(me);
                Grant::Granted
            }
            (false, None) if !exclusive_waiting => {
                p.shared.push(me);
                Grant::Granted
            }
            _ => Grant::Busy,
        }
    }

    fn grant_resource(&mut self, lock: usize, me: u64, exclusive: bool) -> Grant {
        let exclusive_waiting = self.exclusive_waiting(lock, me);
        let Some(r) = self.resources.get_mut(&lock) else {
            return Grant::Invalid(format!(
                "ERESOURCE {lock:#x} was never initialised with ExInitializeResourceLite \
                 (or was deleted)"
            ));
        };
        // An exclusive owner may acquire again either way: ERESOURCEs are recursive.
        if let Some((owner, count)) = r.exclusive.as_mut() {
            if *owner == me {
                *count += 1;
                return Grant::Granted;
            }
            return Grant::Busy;
        }
        if exclusive {
            if r.shared.is_empty() {
                r.exclusive = Some((me, 1));
                return Grant::Granted;
            }
            return Grant::Busy;
        }
        if let Some((_, count)) = r.shared.iter_mut().find(|(t, _)| *t == me) {
            *count += 1;
            return Grant::Granted;
        }
        if exclusive_waiting {
            return Grant::Busy;
        }
        r.shared.push((me, 1));
        Grant::Granted
    }

    fn grant_spin_lock(&mut self, lock: usize, me: u64) -> Grant {
        if self.spin_locks.contains_key(&lock) {
            return Grant::Busy;
        }
        // First come, first served: an in-stack queued spin lock is a FIFO queue of its
        // acquirers by construction (each waits on its own KLOCK_QUEUE_HANDLE behind the
        // one before it), and for an ordinary spin lock FIFO is one of the orders Windows
        // may take. A thread arriving while others wait queues behind them instead of
        // taking the lock the moment it is free.
        let mine = self.blocked_on.get(&me).map(|b| b.since);
        let ahead = self.lock_queues.get(&lock).is_some_and(|q| {
            q.iter()
                .find(|(_, (t, _))| *t != me)
                .is_some_and(|(since, _)| mine.is_none_or(|m| *since < m))
        });
        if ahead {
            return Grant::Busy;
        }
        self.spin_locks.insert(lock, me);
        // A held x64 spin lock is non-zero, which KeTestSpinLock and debuggers read.
        // SAFETY: `lock` is the KSPIN_LOCK the caller passed to an acquire routine.
        unsafe { (lock as *mut usize).write(1) };
        Grant::Granted
    }

    /// Everything the current thread still holds, described, and released so that the
    /// threads waiting for it do not hang the test.
    fn release_all_of(&mut self, me: u64) -> Vec<String> {
        let mut held = Vec::new();
        let mut released = Vec::new();
        for (&addr, p) in &mut self.push_locks {
            if p.exclusive == Some(me) || p.shared.contains(&me) {
                held.push(format!("push lock {addr:#x}"));
                released.push(addr);
                p.exclusive = p.exclusive.filter(|&t| t != me);
                p.shared.retain(|&t| t != me);
            }
        }
        for (&addr, r) in &mut self.resources {
            if r.exclusive.is_some_and(|(t, _)| t == me) || r.shared.iter().any(|&(t, _)| t == me) {
                held.push(format!("ERESOURCE {addr:#x}"));
                released.push(addr);
                r.exclusive = r.exclusive.filter(|&(t, _)| t != me);
                r.shared.retain(|&(t, _)| t != me);
            }
        }
        let spins: Vec<usize> = self
            .spin_locks
            .iter()
            .filter(|&(_, &t)| t == me)
            .map(|(&l, _)| l)
            .collect();
        for lock in spins {
            held.push(format!("spin lock {lock:#x}"));
            released.push(lock);
            self.spin_locks.remove(&lock);
        }
        for lock in released {
            self.wake_lock(lock);
        }
        held
    }

    /// The threads waiting for `lock`, oldest first, with whether they want it exclusive.
    fn lock_waiters(&self, lock: usize) -> Vec<(u64, bool)> {
        self.lock_queues
            .get(&lock)
            .map(|q| q.values().copied().collect())
            .unwrap_or_default()
    }

    /// Whether a thread other than `me` waits for `lock` exclusive.
    fn exclusive_waiting(&self, lock: usize, me: u64) -> bool {
        self.lock_queues
            .get(&lock)
            .is_some_and(|q| q.values().any(|&(t, ex)| ex && t != me))
    }

    /// Records that `me` waits for `blocked.lock`.
    fn block(&mut self, me: u64, blocked: Blocked) {
        self.blocked_on.insert(me, blocked);
        self.lock_queues
            .entry(blocked.lock)
            .or_default()
            .insert(blocked.since, (me, blocked.exclusive));
    }

    /// `me` waits no more; whether it was waiting.
    fn unblock(&mut self, me: u64) -> bool {
        let Some(blocked) = self.blocked_on.remove(&me) else {
            return false;
        };
        if let Some(queue) = self.lock_queues.get_mut(&blocked.lock) {
            queue.remove(&blocked.since);
            if queue.is_empty() {
                self.lock_queues.remove(&blocked.lock);
            }
        }
        true
    }

    /// Wakes the waiters of `lock` that the grant rules would let in now, trying them
    /// oldest first: the first exclusive waiter once the lock is free, or the shared
    /// waiters while it is not held exclusive and no exclusive waiter holds them back.
    /// The others sleep on: nothing they wait for has changed. Call wherever a lock may
    /// have become grantable: a hold ended, or a waiter left without the lock.
    fn wake_lock(&mut self, lock: usize) {
        let (mut exclusive, mut shared) = if let Some(p) = self.push_locks.get(&lock) {
            (p.exclusive.is_some(), p.shared.len())
        } else if let Some(r) = self.resources.get(&lock) {
            (r.exclusive.is_some(), r.shared.len())
        } else {
            (self.spin_locks.contains_key(&lock), 0)
        };
        let waiters = self.lock_waiters(lock);
        let mut exclusive_waiting = waiters.iter().filter(|(_, ex)| *ex).count();
        for (thread, wants_exclusive) in waiters {
            let grant = if wants_exclusive {
                !exclusive && shared == 0
            } else {
                !exclusive && exclusive_waiting == 0
            };
            if !grant {
                continue;
            }
            if wants_exclusive {
                exclusive = true;
                exclusive_waiting -= 1;
            } else {
                shared += 1;
            }
            self.waits.wake(Key::Lock(lock, thread));
        }
    }

    /// Wakes every waiter of `lock`: it was deleted, and each must find that out.
    fn wake_all_of_lock(&mut self, lock: usize) {
        for (thread, _) in self.lock_waiters(lock) {
            self.waits.wake(Key::Lock(lock, thread));
        }
    }
}

/// Where a dispatcher object's wait list head sits: its initialise routine points it at
/// itself. KEVENT and KTIMER both start with their DISPATCHER_HEADER.
pub(crate) fn wait_list_head(object: usize) -> usize {
    object + offset_of!(KEVENT, Header) + offset_of!(DISPATCHER_HEADER, WaitListHead)
}

fn header_points_to_itself(object: usize) -> bool {
    let head = wait_list_head(object) as *const LIST_ENTRY;
    // SAFETY: `object` names a KEVENT or KTIMER the driver passed to a kernel API, so it
    // is readable.
    let entry = unsafe { head.read_unaligned() };
    std::ptr::eq(entry.Flink, head)
}

fn publish_signal_state(object: usize, signaled: bool) {
    let state = (object + offset_of!(KEVENT, Header) + offset_of!(DISPATCHER_HEADER, SignalState))
        as *mut i32;
    // SAFETY: `object` is an initialised KEVENT or KTIMER that the caller, or a thread
    // blocked on it, names right now (or, for an expiring timer, one still in the timer
    // table, which the driver may not free), so it is live and writable.
    unsafe { state.write_unaligned(i32::from(signaled)) };
}

// ---------------------------------------------------------------------------------------
// Blocking
// ---------------------------------------------------------------------------------------

/// Blocks the calling thread until `poll` returns `Some`, with the kernel lock held only
/// while `poll` runs. Between polls the thread sleeps on `keys`: whatever can make `poll`
/// succeed must change the state under the kernel lock and then wake one of them
/// ([`Kernel::wake`]). `deadline` is an interrupt time ([`Clock::deadline`]); once it
/// has passed (in real time, or because the clock was moved past it) `poll` is called
/// with `expired` set and must then return `Some`.
///
/// Must be called with the kernel lock released (never from inside `with_kernel`).
pub(crate) fn block_until<R>(
    keys: &[Key],
    deadline: Option<u64>,
    mut poll: impl FnMut(&mut Kernel, bool) -> Option<R>,
) -> R {
    let mut guard = KERNEL.lock().unwrap_or_else(PoisonError::into_inner);
    loop {
        let kernel = guard
            .as_mut()
            .expect("a model thread blocked in the kernel after its Machine was dropped");
        let now = kernel.sync.clock.interrupt_time();
        let expired = deadline.is_some_and(|d| now >= d);
        if let Some(r) = poll(kernel, expired) {
            return r;
        }
        let left =
            deadline.map(|d| Duration::from_nanos(d.saturating_sub(now).saturating_mul(100)));
        guard = waits::sleep(&KERNEL, guard, kernel_waits, keys, deadline, left);
    }
}

/// The kernel's wait queue, while a machine is booted: for [`waits::sleep`].
pub(crate) fn kernel_waits(kernel: &mut Option<Kernel>) -> Option<&mut WaitQueue<Key>> {
    kernel.as_mut().map(|k| &mut k.sync.waits)
}

impl Kernel {
    /// Wakes the threads blocked on `key`. Call with the change that can end their wait
    /// already made (in this `with_kernel` or an earlier one).
    pub(crate) fn wake(&mut self, key: Key) {
        self.sync.waits.wake(key);
    }
}

/// Wakes a cancellable wait for the operation of the callback data at `data`, which the
/// I/O model has just marked cancelled.
pub(crate) fn wake_cancelled(data: usize) {
    with_kernel(|k| k.wake(Key::Cancel(data)));
}

/// Tells a cancellable wait whether the operation whose callback data it was given has
/// been cancelled. Called with the kernel lock held, from inside the wait's poll.
pub(crate) type CancelProbe = fn(&Kernel, *const FLT_CALLBACK_DATA) -> bool;

impl SyncState {
    /// Hook for the I/O model: installs, for this machine, the probe
    /// FltCancellableWaitFor* ask whether their callback data was cancelled (they then
    /// return STATUS_CANCELLED). Usable from inside `with_kernel`, e.g. when the first
    /// callback data is built. After marking an operation cancelled, call
    /// [`wake_cancelled`] so that a blocked wait notices. Without a probe, callback data is
    /// never cancelled.
    pub(crate) fn set_cancel_probe(&mut self, probe: CancelProbe) {
        self.cancel_probe = Some(probe);
    }
}

fn cancelled(k: &Kernel, data: *const FLT_CALLBACK_DATA) -> bool {
    !data.is_null() && k.sync.cancel_probe.is_some_and(|probe| probe(k, data))
}

/// The shared body of every dispatcher wait.
fn wait_for(
    api: &'static str,
    objects: &[usize],
    all: bool,
    timeout: Option<i64>,
    cancel: *const FLT_CALLBACK_DATA,
) -> NTSTATUS {
    let started = with_kernel(|k| {
        for &object in objects {
            if let Err(message) = k.sync.check_object(api, object, None) {
                k.violation(api, message);
                return None;
            }
        }
        let deadline = k.sync.clock.deadline(timeout);
        let id = k.sync.next_waiter;
        k.sync.next_waiter += 1;
        k.sync.waiters.push(Waiter {
            id,
            objects: objects.to_vec(),
            all,
            satisfied: None,
        });
        // Every older waiter is already unsatisfiable, so this only tries the new one.
        k.sync.satisfy_waiters();
        Some((id, deadline))
    });
    let Some((id, deadline)) = started else {
        return STATUS_INVALID_PARAMETER;
    };
    let mut keys = vec![Key::Wait(id)];
    if !cancel.is_null() {
        keys.push(Key::Cancel(cancel as usize));
    }
    block_until(&keys, deadline, |k, expired| {
        // Only this thread removes its own waiter, so it is always there.
        let Some(pos) = k.sync.waiters.iter().position(|w| w.id == id) else {
            return Some(STATUS_TIMEOUT);
        };
        let outcome = match k.sync.waiters[pos].satisfied {
            Some(_) if all => STATUS_SUCCESS,
            Some(index) => STATUS_WAIT_0 + index as i32,
            None if cancelled(k, cancel) => STATUS_CANCELLED,
            None if expired => STATUS_TIMEOUT,
            None => return None,
        };
        k.sync.waiters.remove(pos);
        Some(outcome)
    })
}

/// Reads an optional kernel timeout.
///
/// # Safety
/// `timeout` is NULL or points to a readable i64.
unsafe fn read_timeout(timeout: *const i64) -> Option<i64> {
    // SAFETY: the caller's contract.
    unsafe { timeout.as_ref() }.copied()
}

/// The IRQL a wait may be called at: a poll may run at DISPATCH_LEVEL, anything that can
/// block needs APC_LEVEL or below.
fn wait_irql(timeout: Option<i64>) -> u8 {
    if timeout == Some(0) {
        DISPATCH_LEVEL
    } else {
        APC_LEVEL
    }
}

/// Reads a wait's object array.
///
/// # Safety
/// `objects` points to `count` readable pointers.
unsafe fn read_objects(objects: *const *const c_void, count: u32) -> Vec<usize> {
    if objects.is_null() {
        return Vec::new();
    }
    // SAFETY: the caller's contract.
    let slice = unsafe { std::slice::from_raw_parts(objects, count as usize) };
    slice.iter().map(|&o| o as usize).collect()
}

/// Checks the parameters of a multi-object wait; `None` when they are invalid (recorded).
fn check_multiple(
    api: &'static str,
    count: u32,
    wait_type: WAIT_TYPE,
    wait_blocks: bool,
) -> Option<bool> {
    with_kernel(|k| {
        let problem = if count == 0 {
            Some("waits on zero objects".to_owned())
        } else if count > MAXIMUM_WAIT_OBJECTS {
            Some(format!(
                "waits on {count} objects: more than MAXIMUM_WAIT_OBJECTS ({MAXIMUM_WAIT_OBJECTS}) \
                 is bug check MAXIMUM_WAIT_OBJECTS_EXCEEDED"
            ))
        } else if count > THREAD_WAIT_OBJECTS && !wait_blocks {
            Some(format!(
                "waits on {count} objects without a WaitBlockArray: more than \
                 THREAD_WAIT_OBJECTS ({THREAD_WAIT_OBJECTS}) need the caller's wait blocks"
            ))
        } else if wait_type != WaitAll && wait_type != WaitAny {
            Some(format!(
                "wait type {wait_type} is neither WaitAll nor WaitAny"
            ))
        } else {
            None
        };
        match problem {
            Some(message) => {
                k.violation(api, message);
                None
            }
            None => Some(wait_type == WaitAll),
        }
    })
}

// ---------------------------------------------------------------------------------------
// Events and waits
// ---------------------------------------------------------------------------------------

/// KeInitializeEvent. Callable at any IRQL.
///
/// # Safety
/// `event` must point to writable KEVENT memory that stays put while the event is used.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn KeInitializeEvent(event: *mut KEVENT, kind: EVENT_TYPE, state: bool) {
    if event.is_null() || (kind != NotificationEvent && kind != SynchronizationEvent) {
        with_kernel(|k| {
            k.violation(
                "KeInitializeEvent",
                format!("event {event:p} of type {kind}: NULL, or neither NotificationEvent nor SynchronizationEvent"),
            )
        });
        return;
    }
    let head = wait_list_head(event as usize) as *mut LIST_ENTRY;
    let header = DISPATCHER_HEADER {
        Anonymous: DISPATCHER_HEADER_0 {
            Anonymous2: DISPATCHER_HEADER_0_1 {
                Type: kind as u8,
                Signalling: 0,
                Size: KEVENT_SIZE_IN_LONGS,
                Reserved1: 0,
            },
        },
        SignalState: i32::from(state),
        WaitListHead: LIST_ENTRY {
            Flink: head,
            Blink: head,
        },
    };
    // SAFETY: the caller's contract: `event` is writable KEVENT memory.
    unsafe { event.write_unaligned(KEVENT { Header: header }) };
    with_kernel(|k| {
        k.sync.init_object(
            event as usize,
            ObjectKind::Event,
            kind == SynchronizationEvent,
            state,
        );
    });
}

/// KeSetEvent: signals the event and returns its previous state.
#[unsafe(no_mangle)]
pub extern "system" fn KeSetEvent(event: *mut KEVENT, _increment: i32, _wait: bool) -> i32 {
    irql::check("KeSetEvent", DISPATCH_LEVEL);
    with_kernel(|k| {
        if let Err(message) = k.sync.check_event("KeSetEvent", event as usize) {
            k.violation("KeSetEvent", message);
            return 0;
        }
        let previous = i32::from(k.sync.is_signaled(event as usize));
        k.sync.signal(event as usize);
        previous
    })
}

fn reset(api: &'static str, event: usize) -> i32 {
    irql::check(api, DISPATCH_LEVEL);
    with_kernel(|k| {
        if let Err(message) = k.sync.check_event(api, event) {
            k.violation(api, message);
            return 0;
        }
        let previous = i32::from(k.sync.is_signaled(event));
        k.sync.set_signaled(event, false);
        previous
    })
}

/// KeResetEvent: resets the event and returns its previous state.
#[unsafe(no_mangle)]
pub extern "system" fn KeResetEvent(event: *mut KEVENT) -> i32 {
    reset("KeResetEvent", event as usize)
}

/// KeClearEvent.
#[unsafe(no_mangle)]
pub extern "system" fn KeClearEvent(event: *mut KEVENT) {
    reset("KeClearEvent", event as usize);
}

/// KeReadStateEvent.
#[unsafe(no_mangle)]
pub extern "system" fn KeReadStateEvent(event: *const KEVENT) -> i32 {
    irql::check("KeReadStateEvent", DISPATCH_LEVEL);
    with_kernel(|k| {
        if let Err(message) = k.sync.check_event("KeReadStateEvent", event as usize) {
            k.violation("KeReadStateEvent", message);
            return 0;
        }
        i32::from(k.sync.is_signaled(event as usize))
    })
}

/// KeWaitForSingleObject. Returns STATUS_SUCCESS or STATUS_TIMEOUT.
///
/// # Safety
/// `timeout` is NULL or readable.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn KeWaitForSingleObject(
    object: *const c_void,
    _reason: KWAIT_REASON,
    _mode: i8,
    _alertable: bool,
    timeout: *const i64,
) -> NTSTATUS {
    // SAFETY: the caller's contract.
    let timeout = unsafe { read_timeout(timeout) };
    irql::check("KeWaitForSingleObject", wait_irql(timeout));
    wait_for(
        "KeWaitForSingleObject",
        &[object as usize],
        false,
        timeout,
        std::ptr::null(),
    )
}

/// KeWaitForMultipleObjects. WaitAny returns STATUS_WAIT_0 + the index of the object
/// that satisfied it, WaitAll STATUS_SUCCESS; both may time out.
///
/// # Safety
/// `objects` holds `count` readable pointers; `timeout` is NULL or readable.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)] // the documented signature
pub unsafe extern "system" fn KeWaitForMultipleObjects(
    count: u32,
    objects: *const *const c_void,
    wait_type: WAIT_TYPE,
    _reason: KWAIT_REASON,
    _mode: i8,
    _alertable: bool,
    timeout: *const i64,
    wait_blocks: *mut KWAIT_BLOCK,
) -> NTSTATUS {
    const API: &str = "KeWaitForMultipleObjects";
    // SAFETY: the caller's contract.
    let timeout = unsafe { read_timeout(timeout) };
    irql::check(API, wait_irql(timeout));
    let Some(all) = check_multiple(API, count, wait_type, !wait_blocks.is_null()) else {
        return STATUS_INVALID_PARAMETER;
    };
    // SAFETY: the caller's contract.
    let objects = unsafe { read_objects(objects, count) };
    wait_for(API, &objects, all, timeout, std::ptr::null())
}

/// FltCancellableWaitForSingleObject: a wait that also ends with STATUS_CANCELLED when
/// the I/O operation of `data` is cancelled (see [`set_cancel_probe`]).
///
/// # Safety
/// `timeout` is NULL or readable.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn FltCancellableWaitForSingleObject(
    object: *const c_void,
    timeout: *const i64,
    data: *const FLT_CALLBACK_DATA,
) -> NTSTATUS {
    irql::check("FltCancellableWaitForSingleObject", APC_LEVEL);
    // SAFETY: the caller's contract.
    let timeout = unsafe { read_timeout(timeout) };
    wait_for(
        "FltCancellableWaitForSingleObject",
        &[object as usize],
        false,
        timeout,
        data,
    )
}

/// FltCancellableWaitForMultipleObjects.
///
/// # Safety
/// `objects` holds `count` readable pointers; `timeout` is NULL or readable.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn FltCancellableWaitForMultipleObjects(
    count: u32,
    objects: *const *const c_void,
    wait_type: WAIT_TYPE,
    timeout: *const i64,
    wait_blocks: *const KWAIT_BLOCK,
    data: *const FLT_CALLBACK_DATA,
) -> NTSTATUS {
    const API: &str = "FltCancellableWaitForMultipleObjects";
    irql::check(API, APC_LEVEL);
    // SAFETY: the caller's contract.
    let timeout = unsafe { read_timeout(timeout) };
    let Some(all) = check_multiple(API, count, wait_type, !wait_blocks.is_null()) else {
        return STATUS_INVALID_PARAMETER;
    };
    // SAFETY: the caller's contract.
    let objects = unsafe { read_objects(objects, count) };
    wait_for(API, &objects, all, timeout, data)
}

/// KeDelayExecutionThread: sleeps for the interval (negative relative, positive
/// absolute). Advancing the clock ends the sleep early, as it would on Windows.
///
/// # Safety
/// `interval` is readable.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn KeDelayExecutionThread(
    _mode: i8,
    _alertable: bool,
    interval: *const i64,
) -> NTSTATUS {
    irql::check("KeDelayExecutionThread", APC_LEVEL);
    // SAFETY: the caller's contract.
    let Some(interval) = (unsafe { read_timeout(interval) }) else {
        with_kernel(|k| k.violation("KeDelayExecutionThread", "NULL interval"));
        return STATUS_INVALID_PARAMETER;
    };
    let deadline = with_kernel(|k| k.sync.clock.deadline(Some(interval)));
    // Nothing but time ends it: no key to wake.
    block_until(&[], deadline, |_, expired| {
        expired.then_some(STATUS_SUCCESS)
    })
}

// ---------------------------------------------------------------------------------------
// Time
// ---------------------------------------------------------------------------------------

/// KeQuerySystemTimePrecise.
///
/// # Safety
/// `time` is writable.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn KeQuerySystemTimePrecise(time: *mut i64) {
    let now = with_kernel(|k| k.sync.clock.system_time());
    // SAFETY: the caller's contract.
    unsafe { time.write(now as i64) };
}

/// KeQueryInterruptTimePrecise: interrupt time, and the QPC value it was read at (the
/// model's QPC counts 100 ns, as Windows 10 and later do).
///
/// # Safety
/// `qpc` is writable.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn KeQueryInterruptTimePrecise(qpc: *mut u64) -> u64 {
    let now = with_kernel(|k| k.sync.clock.interrupt_time());
    if !qpc.is_null() {
        // SAFETY: the caller's contract.
        unsafe { qpc.write(now) };
    }
    now
}

/// KeQueryUnbiasedInterruptTime. The model never sleeps, so it equals interrupt time.
#[unsafe(no_mangle)]
pub extern "system" fn KeQueryUnbiasedInterruptTime() -> u64 {
    with_kernel(|k| k.sync.clock.interrupt_time())
}

/// KeQueryUnbiasedInterruptTimePrecise.
///
/// # Safety
/// `qpc` is writable.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn KeQueryUnbiasedInterruptTimePrecise(qpc: *mut u64) -> u64 {
    // SAFETY: the caller's contract, passed on.
    unsafe { KeQueryInterruptTimePrecise(qpc) }
}

/// KeQueryTimeIncrement: the clock tick in 100 ns units.
#[unsafe(no_mangle)]
pub extern "system" fn KeQueryTimeIncrement() -> u32 {
    TIME_INCREMENT
}

/// KeQueryPerformanceCounter (hal.dll).
///
/// # Safety
/// `frequency` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn KeQueryPerformanceCounter(frequency: *mut i64) -> i64 {
    if !frequency.is_null() {
        // SAFETY: the caller's contract.
        unsafe { frequency.write(QPC_FREQUENCY) };
    }
    with_kernel(|k| k.sync.clock.interrupt_time()) as i64
}

// ---------------------------------------------------------------------------------------
// Critical and guarded regions
// ---------------------------------------------------------------------------------------

fn leave(api: &'static str, depth: &'static std::thread::LocalKey<Cell<u32>>, enter: &str) {
    irql::check(api, APC_LEVEL);
    let left = depth.with(|d| match d.get() {
        0 => false,
        n => {
            d.set(n - 1);
            true
        }
    });
    if !left {
        with_kernel(|k| k.violation(api, format!("called without a matching {enter}")));
    }
}

/// KeEnterCriticalRegion.
#[unsafe(no_mangle)]
pub extern "system" fn KeEnterCriticalRegion() {
    irql::check("KeEnterCriticalRegion", APC_LEVEL);
    CRITICAL.with(|d| d.set(d.get() + 1));
}

/// KeLeaveCriticalRegion.
#[unsafe(no_mangle)]
pub extern "system" fn KeLeaveCriticalRegion() {
    leave("KeLeaveCriticalRegion", &CRITICAL, "KeEnterCriticalRegion");
}

/// KeEnterGuardedRegion.
#[unsafe(no_mangle)]
pub extern "system" fn KeEnterGuardedRegion() {
    irql::check("KeEnterGuardedRegion", APC_LEVEL);
    GUARDED.with(|d| d.set(d.get() + 1));
}

/// KeLeaveGuardedRegion.
#[unsafe(no_mangle)]
pub extern "system" fn KeLeaveGuardedRegion() {
    leave("KeLeaveGuardedRegion", &GUARDED, "KeEnterGuardedRegion");
}

/// KeAreApcsDisabled: inside a critical or guarded region.
#[unsafe(no_mangle)]
pub extern "system" fn KeAreApcsDisabled() -> bool {
    CRITICAL.with(Cell::get) > 0 || GUARDED.with(Cell::get) > 0
}

/// KeAreAllApcsDisabled: inside a guarded region or at APC_LEVEL or above.
#[unsafe(no_mangle)]
pub extern "system" fn KeAreAllApcsDisabled() -> bool {
    GUARDED.with(Cell::get) > 0 || irql::current() >= APC_LEVEL
}

/// Records a violation when the calling thread finishes a unit of work (a work item, a
/// callback, a DPC routine) in a state the next unit must not inherit: at another IRQL
/// than `level`, the one it was called at, inside a critical or guarded region, or
/// holding locks. Resets the thread (to PASSIVE_LEVEL) and releases the locks, so that
/// one bug is reported once and waiters do not hang the test.
pub(crate) fn check_thread_clean(api: &'static str, what: &str, level: u8) {
    let mut problems = Vec::new();
    let now = irql::set(PASSIVE_LEVEL);
    if now != level {
        problems.push(format!("at IRQL {now} instead of {}", irql::name(level)));
    }
    let critical = CRITICAL.with(|d| d.replace(0));
    if critical > 0 {
        problems.push(format!(
            "inside {critical} critical region(s) (normal kernel APCs still disabled)"
        ));
    }
    let guarded = GUARDED.with(|d| d.replace(0));
    if guarded > 0 {
        problems.push(format!("inside {guarded} guarded region(s)"));
    }
    let me = current_thread();
    with_kernel(|k| {
        let held = k.sync.release_all_of(me);
        if !held.is_empty() {
            problems.push(format!("holding {}", held.join(", ")));
        }
        if !problems.is_empty() {
            k.violation(api, format!("{what} returned {}", problems.join("; ")));
        }
    });
}

// ---------------------------------------------------------------------------------------
// Locks: the common part
// ---------------------------------------------------------------------------------------

/// Takes `lock` for the calling thread, waiting while it is busy. Returns false, with a
/// violation recorded, when the lock is invalid or waiting for it would never end.
fn take(
    api: &'static str,
    lock: usize,
    exclusive: bool,
    mut grant: impl FnMut(&mut SyncState, u64) -> Grant,
) -> bool {
    let me = current_thread();
    block_until(&[Key::Lock(lock, me)], None, |k, _| {
        let outcome = match grant(&mut k.sync, me) {
            Grant::Granted => Some(true),
            Grant::Invalid(message) => {
                k.violation(api, message);
                Some(false)
            }
            Grant::Busy => match k.sync.deadlock(me, lock) {
                Some(message) => {
                    k.violation(api, message);
                    Some(false)
                }
                None => {
                    if !k.sync.blocked_on.contains_key(&me) {
                        k.sync.next_blocked += 1;
                        let since = k.sync.next_blocked;
                        k.sync.block(
                            me,
                            Blocked {
                                lock,
                                exclusive,
                                since,
                            },
                        );
                    }
                    None
                }
            },
        };
        if let Some(taken) = outcome
            && k.sync.unblock(me)
            && !taken
        {
            // A waiting exclusive acquirer holds back new shared ones (the grant rules);
            // leaving without the lock may let them in. (Had it got the lock, its hold
            // would keep them out until its release wakes them.)
            k.sync.wake_lock(lock);
        }
        outcome
    })
}

// ---------------------------------------------------------------------------------------
// Push locks
// ---------------------------------------------------------------------------------------

fn init_push_lock(api: &'static str, lock: *mut usize) {
    irql::check(api, DISPATCH_LEVEL);
    if lock.is_null() {
        with_kernel(|k| k.violation(api, "NULL push lock"));
        return;
    }
    let addr = lock as usize;
    let held = with_kernel(|k| {
        let held = k
            .sync
            .push_locks
            .get(&addr)
            .is_some_and(|p| p.exclusive.is_some() || !p.shared.is_empty());
        if held {
            k.violation(
                api,
                format!("push lock {addr:#x} re-initialised while held"),
            );
        } else {
            k.sync.push_locks.insert(addr, PushLock::default());
        }
        held
    });
    if !held {
        // SAFETY: the documented out parameter; an initialised push lock is zero.
        unsafe { lock.write(0) };
    }
}

/// Acquires a push lock. FltMgr's wrappers enter a critical region themselves (as
/// their documentation says); the `Ex` routines require the caller to have done it.
fn acquire_push_lock(api: &'static str, lock: usize, exclusive: bool, fltmgr: bool) {
    irql::check(api, APC_LEVEL);
    if fltmgr {
        CRITICAL.with(|d| d.set(d.get() + 1));
    } else if !normal_apcs_disabled() {
        with_kernel(|k| {
            k.violation(
                api,
                "acquired with normal kernel APCs enabled: call KeEnterCriticalRegion first",
            )
        });
    }
    let taken = take(api, lock, exclusive, |s, me| {
        s.grant_push_lock(lock, me, exclusive)
    });
    if !taken && fltmgr {
        CRITICAL.with(|d| d.set(d.get().saturating_sub(1)));
    }
}

/// Releases the calling thread's hold; `mode` is `Some(exclusive)` for the `Ex` release
/// routines, which name the mode they release.
fn release_push_lock(api: &'static str, lock: usize, mode: Option<bool>, fltmgr: bool) {
    irql::check(api, APC_LEVEL);
    let me = current_thread();
    let released = with_kernel(|k| {
        let Some(p) = k.sync.push_locks.get_mut(&lock) else {
            k.violation(
                api,
                format!("push lock {lock:#x} was never initialised (or was deleted)"),
            );
            return false;
        };
        let held_exclusive = p.exclusive == Some(me);
        let held_shared = p.shared.contains(&me);
        if !held_exclusive && !held_shared {
            k.violation(
                api,
                format!("push lock {lock:#x} released by a thread that does not hold it"),
            );
            return false;
        }
        if held_exclusive {
            p.exclusive = None;
        } else if let Some(pos) = p.shared.iter().position(|&t| t == me) {
            p.shared.remove(pos);
        }
        if let Some(exclusive) = mode
            && exclusive != held_exclusive
        {
            let name = |exclusive| if exclusive { "exclusive" } else { "shared" };
            k.violation(
                api,
                format!(
                    "push lock {lock:#x} is held {} but released {}",
                    name(held_exclusive),
                    name(exclusive)
                ),
            );
        }
        k.sync.wake_lock(lock);
        true
    });
    if released && fltmgr {
        leave(api, &CRITICAL, "critical region");
    }
}

fn delete_push_lock(api: &'static str, lock: usize) {
    irql::check(api, APC_LEVEL);
    with_kernel(|k| {
        if !k.sync.push_locks.contains_key(&lock) {
            k.violation(
                api,
                format!("push lock {lock:#x} was never initialised (or deleted twice)"),
            );
            return;
        }
        let owners = k.sync.owners(lock);
        if !owners.is_empty() {
            k.violation(
                api,
                format!("push lock {lock:#x} deleted while held by thread(s) {owners:?}"),
            );
        }
        k.sync.push_locks.remove(&lock);
        // A thread still waiting for it finds it gone (and says so) instead of hanging.
        k.sync.wake_all_of_lock(lock);
    });
}

/// FltInitializePushLock.
///
/// # Safety
/// `lock` is writable.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn FltInitializePushLock(lock: *mut usize) {
    init_push_lock("FltInitializePushLock", lock);
}

/// FltDeletePushLock.
#[unsafe(no_mangle)]
pub extern "system" fn FltDeletePushLock(lock: *const usize) {
    delete_push_lock("FltDeletePushLock", lock as usize);
}

/// FltAcquirePushLockExclusive: enters a critical region, then acquires.
#[unsafe(no_mangle)]
pub extern "system" fn FltAcquirePushLockExclusive(lock: *mut usize) {
    acquire_push_lock("FltAcquirePushLockExclusive", lock as usize, true, true);
}

/// FltAcquirePushLockExclusiveEx. Flags only tune priority boosting.
#[unsafe(no_mangle)]
pub extern "system" fn FltAcquirePushLockExclusiveEx(lock: *mut usize, _flags: u32) {
    acquire_push_lock("FltAcquirePushLockExclusiveEx", lock as usize, true, true);
}

/// FltAcquirePushLockShared: enters a critical region, then acquires.
#[unsafe(no_mangle)]
pub extern "system" fn FltAcquirePushLockShared(lock: *mut usize) {
    acquire_push_lock("FltAcquirePushLockShared", lock as usize, false, true);
}

/// FltAcquirePushLockSharedEx.
#[unsafe(no_mangle)]
pub extern "system" fn FltAcquirePushLockSharedEx(lock: *mut usize, _flags: u32) {
    acquire_push_lock("FltAcquirePushLockSharedEx", lock as usize, false, true);
}

/// FltReleasePushLock: releases, then leaves the critical region.
#[unsafe(no_mangle)]
pub extern "system" fn FltReleasePushLock(lock: *mut usize) {
    release_push_lock("FltReleasePushLock", lock as usize, None, true);
}

/// FltReleasePushLockEx.
#[unsafe(no_mangle)]
pub extern "system" fn FltReleasePushLockEx(lock: *mut usize, _flags: u32) {
    release_push_lock("FltReleasePushLockEx", lock as usize, None, true);
}

/// ExInitializePushLock.
///
/// # Safety
/// `lock` is writable.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn ExInitializePushLock(lock: *mut usize) {
    init_push_lock("ExInitializePushLock", lock);
}

/// ExAcquirePushLockExclusiveEx: the caller must already have disabled normal kernel
/// APCs.
#[unsafe(no_mangle)]
pub extern "system" fn ExAcquirePushLockExclusiveEx(lock: *mut usize, _flags: u32) {
    acquire_push_lock("ExAcquirePushLockExclusiveEx", lock as usize, true, false);
}

/// ExAcquirePushLockSharedEx.
#[unsafe(no_mangle)]
pub extern "system" fn ExAcquirePushLockSharedEx(lock: *mut usize, _flags: u32) {
    acquire_push_lock("ExAcquirePushLockSharedEx", lock as usize, false, false);
}

/// ExReleasePushLockExclusiveEx.
#[unsafe(no_mangle)]
pub extern "system" fn ExReleasePushLockExclusiveEx(lock: *mut usize, _flags: u32) {
    release_push_lock(
        "ExReleasePushLockExclusiveEx",
        lock as usize,
        Some(true),
        false,
    );
}

/// ExReleasePushLockSharedEx.
#[unsafe(no_mangle)]
pub extern "system" fn ExReleasePushLockSharedEx(lock: *mut usize, _flags: u32) {
    release_push_lock(
        "ExReleasePushLockSharedEx",
        lock as usize,
        Some(false),
        false,
    );
}

// ---------------------------------------------------------------------------------------
// ERESOURCE
// ---------------------------------------------------------------------------------------

/// ExInitializeResourceLite.
///
/// # Safety
/// `resource` is writable ERESOURCE memory that stays put until ExDeleteResourceLite.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn ExInitializeResourceLite(resource: *mut ERESOURCE) -> NTSTATUS {
    const API: &str = "ExInitializeResourceLite";
    irql::check(API, DISPATCH_LEVEL);
    if resource.is_null() {
        with_kernel(|k| k.violation(API, "NULL resource"));
        return STATUS_INVALID_PARAMETER;
    }
    let addr = resource as usize;
    let again = with_kernel(|k| k.sync.resources.contains_key(&addr));
    if again {
        // Windows links every resource into a system list; initialising a linked one
        // again corrupts it.
        with_kernel(|k| {
            k.violation(
                API,
                format!("ERESOURCE {addr:#x} initialised again without ExDeleteResourceLite"),
            )
        });
        return STATUS_SUCCESS;
    }
    // SAFETY: the caller's contract; Windows starts from a zeroed structure too.
    unsafe { resource.write_bytes(0, 1) };
    with_kernel(|k| k.sync.resources.insert(addr, Resource::default()));
    STATUS_SUCCESS
}

/// ExDeleteResourceLite.
#[unsafe(no_mangle)]
pub extern "system" fn ExDeleteResourceLite(resource: *mut ERESOURCE) -> NTSTATUS {
    const API: &str = "ExDeleteResourceLite";
    irql::check(API, DISPATCH_LEVEL);
    let addr = resource as usize;
    with_kernel(|k| {
        if !k.sync.resources.contains_key(&addr) {
            k.violation(
                API,
                format!("ERESOURCE {addr:#x} was never initialised (or deleted twice)"),
            );
            return STATUS_INVALID_PARAMETER;
        }
        let owners = k.sync.owners(addr);
        if !owners.is_empty() {
            k.violation(
                API,
                format!("ERESOURCE {addr:#x} deleted while held by thread(s) {owners:?}"),
            );
        }
        k.sync.resources.remove(&addr);
        // A thread still waiting for it finds it gone (and says so) instead of hanging.
        k.sync.wake_all_of_lock(addr);
        STATUS_SUCCESS
    })
}

fn acquire_resource(
    api: &'static str,
    resource: usize,
    exclusive: bool,
    wait: bool,
    fltmgr: bool,
) -> bool {
    irql::check(api, APC_LEVEL);
    if fltmgr {
        CRITICAL.with(|d| d.set(d.get() + 1));
    } else if !normal_apcs_disabled() {
        // Driver Verifier: a thread suspended by an APC while it owns a resource can
        // deadlock the system.
        with_kernel(|k| {
            k.violation(
                api,
                "ERESOURCE acquired with normal kernel APCs enabled: call KeEnterCriticalRegion first",
            )
        });
    }
    let me = current_thread();
    let taken = if wait {
        take(api, resource, exclusive, |s, me| {
            s.grant_resource(resource, me, exclusive)
        })
    } else {
        with_kernel(|k| match k.sync.grant_resource(resource, me, exclusive) {
            Grant::Granted => true,
            Grant::Busy => false,
            Grant::Invalid(message) => {
                k.violation(api, message);
                false
            }
        })
    };
    if !taken && fltmgr {
        CRITICAL.with(|d| d.set(d.get().saturating_sub(1)));
    }
    taken
}

fn release_resource(api: &'static str, resource: usize) -> bool {
    irql::check(api, DISPATCH_LEVEL);
    let me = current_thread();
    with_kernel(|k| {
        let Some(r) = k.sync.resources.get_mut(&resource) else {
            k.violation(
                api,
                format!("ERESOURCE {resource:#x} was never initialised (or was deleted)"),
            );
            return false;
        };
        if let Some((owner, count)) = r.exclusive.as_mut()
            && *owner == me
        {
            *count -= 1;
            if *count == 0 {
                r.exclusive = None;
                k.sync.wake_lock(resource);
            }
            return true;
        }
        if let Some(pos) = r.shared.iter().position(|&(t, _)| t == me) {
            r.shared[pos].1 -= 1;
            if r.shared[pos].1 == 0 {
                r.shared.remove(pos);
                k.sync.wake_lock(resource);
            }
            return true;
        }
        k.violation(
            api,
            format!(
                "ERESOURCE {resource:#x} released by a thread that does not own it \
                 (bug check RESOURCE_NOT_OWNED)"
            ),
        );
        false
    })
}

/// ExAcquireResourceExclusiveLite.
#[unsafe(no_mangle)]
pub extern "system" fn ExAcquireResourceExclusiveLite(
    resource: *mut ERESOURCE,
    wait: bool,
) -> bool {
    acquire_resource(
        "ExAcquireResourceExclusiveLite",
        resource as usize,
        true,
        wait,
        false,
    )
}

/// ExAcquireResourceSharedLite. An exclusive owner gets it again as exclusive.
#[unsafe(no_mangle)]
pub extern "system" fn ExAcquireResourceSharedLite(resource: *mut ERESOURCE, wait: bool) -> bool {
    acquire_resource(
        "ExAcquireResourceSharedLite",
        resource as usize,
        false,
        wait,
        false,
    )
}

/// ExReleaseResourceLite.
#[unsafe(no_mangle)]
pub extern "system" fn ExReleaseResourceLite(resource: *mut ERESOURCE) {
    release_resource("ExReleaseResourceLite", resource as usize);
}

/// ExIsResourceAcquiredExclusiveLite.
#[unsafe(no_mangle)]
pub extern "system" fn ExIsResourceAcquiredExclusiveLite(resource: *const ERESOURCE) -> bool {
    irql::check("ExIsResourceAcquiredExclusiveLite", DISPATCH_LEVEL);
    let me = current_thread();
    with_kernel(|k| {
        k.sync
            .resources
            .get(&(resource as usize))
            .and_then(|r| r.exclusive)
            .is_some_and(|(t, _)| t == me)
    })
}

/// ExIsResourceAcquiredSharedLite: how many times the calling thread holds it, in
/// either mode.
#[unsafe(no_mangle)]
pub extern "system" fn ExIsResourceAcquiredSharedLite(resource: *const ERESOURCE) -> u32 {
    irql::check("ExIsResourceAcquiredSharedLite", DISPATCH_LEVEL);
    let me = current_thread();
    with_kernel(|k| {
        let Some(r) = k.sync.resources.get(&(resource as usize)) else {
            return 0;
        };
        match r.exclusive {
            Some((t, n)) if t == me => n,
            _ => r
                .shared
                .iter()
                .find(|&&(t, _)| t == me)
                .map_or(0, |&(_, n)| n),
        }
    })
}

/// FltAcquireResourceExclusive: enters a critical region, then acquires, waiting.
#[unsafe(no_mangle)]
pub extern "system" fn FltAcquireResourceExclusive(resource: *mut ERESOURCE) {
    acquire_resource(
        "FltAcquireResourceExclusive",
        resource as usize,
        true,
        true,
        true,
    );
}

/// FltAcquireResourceShared.
#[unsafe(no_mangle)]
pub extern "system" fn FltAcquireResourceShared(resource: *mut ERESOURCE) {
    acquire_resource(
        "FltAcquireResourceShared",
        resource as usize,
        false,
        true,
        true,
    );
}

/// FltReleaseResource: releases, then leaves the critical region.
#[unsafe(no_mangle)]
pub extern "system" fn FltReleaseResource(resource: *mut ERESOURCE) {
    if release_resource("FltReleaseResource", resource as usize) {
        leave("FltReleaseResource", &CRITICAL, "critical region");
    }
}

// ---------------------------------------------------------------------------------------
// Spin locks
// ---------------------------------------------------------------------------------------

/// KeInitializeSpinLock.
///
/// # Safety
/// `lock` is writable.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn KeInitializeSpinLock(lock: *mut usize) {
    if lock.is_null() {
        with_kernel(|k| k.violation("KeInitializeSpinLock", "NULL spin lock"));
        return;
    }
    let held = with_kernel(|k| k.sync.spin_locks.contains_key(&(lock as usize)));
    if held {
        with_kernel(|k| {
            k.violation(
                "KeInitializeSpinLock",
                format!("spin lock {lock:p} re-initialised while held"),
            )
        });
        return;
    }
    // SAFETY: the caller's contract.
    unsafe { lock.write(0) };
}

/// Acquires a spin lock; `raise` for the routines that raise to DISPATCH_LEVEL (returns
/// the old IRQL), otherwise the caller must already be there.
fn acquire_spin_lock(api: &'static str, lock: usize, raise: bool) -> u8 {
    let old = if raise {
        irql::check(api, DISPATCH_LEVEL);
        irql::set(DISPATCH_LEVEL.max(irql::current()))
    } else {
        require_dispatch(api, "called");
        irql::current()
    };
    if lock == 0 {
        with_kernel(|k| k.violation(api, "NULL spin lock"));
        return old;
    }
    take(api, lock, true, |s, me| s.grant_spin_lock(lock, me));
    old
}

fn require_dispatch(api: &'static str, what: &str) {
    let now = irql::current();
    if now < DISPATCH_LEVEL {
        with_kernel(|k| {
            k.violation(
                api,
                format!("{what} at IRQL {now}: it must be called at DISPATCH_LEVEL"),
            )
        });
    }
}

/// Releases a spin lock the calling thread holds; `lower_to` restores the IRQL saved at
/// acquire.
fn release_spin_lock(api: &'static str, lock: usize, lower_to: Option<u8>) {
    require_dispatch(api, "spin lock released");
    let me = current_thread();
    with_kernel(|k| match k.sync.spin_locks.get(&lock) {
        Some(&holder) if holder == me => {
            k.sync.spin_locks.remove(&lock);
            // SAFETY: the KSPIN_LOCK this thread acquired; zero means free.
            unsafe { (lock as *mut usize).write(0) };
            k.sync.wake_lock(lock);
        }
        _ => k.violation(
            api,
            format!("spin lock {lock:#x} released by a thread that does not hold it"),
        ),
    });
    if let Some(old) = lower_to {
        if old > DISPATCH_LEVEL {
            with_kernel(|k| k.violation(api, format!("old IRQL {old} is not a saved IRQL")));
        } else {
            irql::set(old);
        }
    }
}

/// KeAcquireInStackQueuedSpinLock: raises to DISPATCH_LEVEL and acquires.
///
/// # Safety
/// `handle` is writable and stays put until the release.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn KeAcquireInStackQueuedSpinLock(
    lock: *mut usize,
    handle: *mut KLOCK_QUEUE_HANDLE,
) {
    let old = acquire_spin_lock("KeAcquireInStackQueuedSpinLock", lock as usize, true);
    // SAFETY: the caller's contract.
    unsafe { write_handle(handle, lock, old) };
}

/// KeAcquireInStackQueuedSpinLockAtDpcLevel.
///
/// # Safety
/// `handle` is writable and stays put until the release.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn KeAcquireInStackQueuedSpinLockAtDpcLevel(
    lock: *mut usize,
    handle: *mut KLOCK_QUEUE_HANDLE,
) {
    let old = acquire_spin_lock(
        "KeAcquireInStackQueuedSpinLockAtDpcLevel",
        lock as usize,
        false,
    );
    // SAFETY: the caller's contract.
    unsafe { write_handle(handle, lock, old) };
}

/// KeAcquireInStackQueuedSpinLockForDpc: raises only if below DISPATCH_LEVEL.
///
/// # Safety
/// `handle` is writable and stays put until the release.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn KeAcquireInStackQueuedSpinLockForDpc(
    lock: *mut usize,
    handle: *mut KLOCK_QUEUE_HANDLE,
) {
    let old = acquire_spin_lock("KeAcquireInStackQueuedSpinLockForDpc", lock as usize, true);
    // SAFETY: the caller's contract.
    unsafe { write_handle(handle, lock, old) };
}

/// # Safety
/// `handle` is NULL or writable.
unsafe fn write_handle(handle: *mut KLOCK_QUEUE_HANDLE, lock: *mut usize, old: u8) {
    if handle.is_null() {
        with_kernel(|k| k.violation("KeAcquireInStackQueuedSpinLock", "NULL lock handle"));
        return;
    }
    let value = KLOCK_QUEUE_HANDLE {
        LockQueue: KSPIN_LOCK_QUEUE {
            Next: std::ptr::null_mut(),
            Lock: lock,
        },
        OldIrql: old,
    };
    // SAFETY: the caller's contract.
    unsafe { handle.write(value) };
}

/// # Safety
/// `handle` is NULL or readable.
unsafe fn read_handle(api: &'static str, handle: *const KLOCK_QUEUE_HANDLE) -> Option<(usize, u8)> {
    // SAFETY: the caller's contract.
    let h = unsafe { handle.as_ref() }.copied();
    match h {
        Some(h) if !h.LockQueue.Lock.is_null() => Some((h.LockQueue.Lock as usize, h.OldIrql)),
        _ => {
            with_kernel(|k| {
                k.violation(
                    api,
                    "lock handle was not filled by a KeAcquireInStackQueuedSpinLock routine",
                )
            });
            None
        }
    }
}

/// KeReleaseInStackQueuedSpinLock: releases and returns to the IRQL saved in the handle.
///
/// # Safety
/// `handle` is readable.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn KeReleaseInStackQueuedSpinLock(handle: *const KLOCK_QUEUE_HANDLE) {
    const API: &str = "KeReleaseInStackQueuedSpinLock";
    // SAFETY: the caller's contract.
    if let Some((lock, old)) = unsafe { read_handle(API, handle) } {
        release_spin_lock(API, lock, Some(old));
    }
}

/// KeReleaseInStackQueuedSpinLockFromDpcLevel: releases, staying at DISPATCH_LEVEL.
///
/// # Safety
/// `handle` is readable.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn KeReleaseInStackQueuedSpinLockFromDpcLevel(
    handle: *const KLOCK_QUEUE_HANDLE,
) {
    const API: &str = "KeReleaseInStackQueuedSpinLockFromDpcLevel";
    // SAFETY: the caller's contract.
    if let Some((lock, _)) = unsafe { read_handle(API, handle) } {
        release_spin_lock(API, lock, None);
    }
}

/// KeReleaseInStackQueuedSpinLockForDpc.
///
/// # Safety
/// `handle` is readable.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn KeReleaseInStackQueuedSpinLockForDpc(
    handle: *const KLOCK_QUEUE_HANDLE,
) {
    const API: &str = "KeReleaseInStackQueuedSpinLockForDpc";
    // SAFETY: the caller's contract.
    if let Some((lock, old)) = unsafe { read_handle(API, handle) } {
        release_spin_lock(API, lock, Some(old));
    }
}

/// KeAcquireSpinLockForDpc: raises only if below DISPATCH_LEVEL; returns the old IRQL.
#[unsafe(no_mangle)]
pub extern "system" fn KeAcquireSpinLockForDpc(lock: *mut usize) -> u8 {
    acquire_spin_lock("KeAcquireSpinLockForDpc", lock as usize, true)
}

/// KeReleaseSpinLockForDpc.
#[unsafe(no_mangle)]
pub extern "system" fn KeReleaseSpinLockForDpc(lock: *mut usize, old: u8) {
    release_spin_lock("KeReleaseSpinLockForDpc", lock as usize, Some(old));
}

/// KeTryToAcquireSpinLockAtDpcLevel.
#[unsafe(no_mangle)]
pub extern "system" fn KeTryToAcquireSpinLockAtDpcLevel(lock: *mut usize) -> bool {
    require_dispatch("KeTryToAcquireSpinLockAtDpcLevel", "called");
    let me = current_thread();
    with_kernel(|k| matches!(k.sync.grant_spin_lock(lock as usize, me), Grant::Granted))
}

/// KeTestSpinLock: TRUE when the lock looks free.
#[unsafe(no_mangle)]
pub extern "system" fn KeTestSpinLock(lock: *const usize) -> bool {
    with_kernel(|k| !k.sync.spin_locks.contains_key(&(lock as usize)))
}

// ---------------------------------------------------------------------------------------
// Tests' view
// ---------------------------------------------------------------------------------------

impl Machine {
    /// Moves the machine clock (system and interrupt time) forward, ending the waits and
    /// sleeps whose timeouts fall inside the jump, as if that time had passed.
    pub fn advance_clock(&self, by: Duration) {
        with_kernel(|k| {
            let ticks = u64::try_from(by.as_nanos() / 100).unwrap_or(u64::MAX);
            k.sync.clock.skew = k.sync.clock.skew.saturating_add(ticks);
            // Timers due inside the jump expire now (their DPCs run on the DPC thread,
            // which KeFlushQueuedDpcs waits for), and timed waits and sleeps end.
            k.expire_timers();
            let now = k.sync.clock.interrupt_time();
            k.sync.waits.wake_expired(now);
        });
    }

    /// The machine's system time, as KeQuerySystemTimePrecise reports it.
    pub fn system_time(&self) -> i64 {
        with_kernel(|k| k.sync.clock.system_time()) as i64
    }

    /// How many threads are asleep in this machine's kernel right now (in a wait, a
    /// lock, a delay, or a worker waiting for work): lets a test know its threads have
    /// all begun waiting before it signals one.
    pub fn blocked_threads(&self) -> usize {
        with_kernel(|k| k.sync.waits.len())
    }

    /// The model's wake-up counter ([`waits::wakeups`]): read it before and after an
    /// action to see how many sleeping threads the action woke.
    pub fn wakeups(&self) -> u64 {
        waits::wakeups()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use super::*;

    static CANCELLED: AtomicBool = AtomicBool::new(false);
    const DATA: usize = 0xcafe_0000;

    fn probe(_: &Kernel, data: *const FLT_CALLBACK_DATA) -> bool {
        data as usize == DATA && CANCELLED.load(Ordering::SeqCst)
    }

    #[test]
    fn cancelling_the_operation_ends_its_cancellable_wait() {
        let mut machine = Machine::boot(&[]);
        with_kernel(|k| k.sync.set_cancel_probe(probe));
        let mut event = Box::new(KEVENT::default());
        // SAFETY: writable memory that stays put.
        unsafe { KeInitializeEvent(&mut *event, NotificationEvent, false) };
        let object = &*event as *const KEVENT as usize;
        let waiter = std::thread::spawn(move || {
            // SAFETY: a live event, no timeout.
            unsafe {
                FltCancellableWaitForSingleObject(
                    object as *const c_void,
                    std::ptr::null(),
                    DATA as *const FLT_CALLBACK_DATA,
                )
            }
        });
        std::thread::sleep(Duration::from_millis(20));
        assert!(!waiter.is_finished());
        // What the I/O model does when the operation is cancelled.
        CANCELLED.store(true, Ordering::SeqCst);
        wake_cancelled(DATA);
        assert_eq!(waiter.join().unwrap(), STATUS_CANCELLED);
        // Other callback data is not cancelled.
        let timeout = -10_000i64;
        // SAFETY: a live event and timeout.
        let status = unsafe {
            FltCancellableWaitForSingleObject(
                object as *const c_void,
                &timeout,
                (DATA + 8) as *const FLT_CALLBACK_DATA,
            )
        };
        assert_eq!(status, STATUS_TIMEOUT);
        machine.assert_clean();
    }
}
