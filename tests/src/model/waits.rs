//! Wait queues: how a model thread sleeps, and the one way it is woken — by a change to
//! what it waits for, never by a change to anything else.
//!
//! Owns: the [`WaitQueue`] each lock domain of the model embeds (the kernel state behind
//! the kernel lock, each port channel, fltlib's user-mode dispatcher), every thread's
//! parker, and the count of wake-ups delivered ([`wakeups`]), which tests read to check
//! that signalling one object wakes only the threads waiting on it.
//!
//! Windows links one wait block per object a thread waits on into that object's wait
//! list, and signalling the object walks that list only: a thread waiting on another
//! object is never made ready. The model does the same with keys. A thread calling
//! [`sleep`] is registered under each key it names (an event's wait, a lock's address, a
//! port message...), and [`WaitQueue::wake`] unparks the threads registered under that
//! key and no other. A woken thread re-checks its condition, so a wake is a hint, never
//! a grant: whoever wakes must have made the change under the domain's lock first.
//!
//! No lost wake-ups: a thread checks its condition and registers under the domain's lock,
//! a waker changes state and wakes under that same lock, and the parker remembers a wake
//! that lands between releasing the lock and parking.
//!
//! Does not model: thread priorities, or which of several woken threads runs first.

use crate::model::fast::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use super::sync::current_thread;

/// Wake-ups delivered since the process started: a sleeping (or about to sleep) thread
/// made runnable by a change to what it waits for. Timeouts are not wake-ups.
static WAKEUPS: AtomicU64 = AtomicU64::new(0);

/// How many times, since the process started, a thread sleeping in the model was woken
/// because what it waits for changed (timeouts are not counted). A debugging and
/// benchmarking counter: read it before and after an action to see how many threads
/// the action woke.
pub fn wakeups() -> u64 {
    WAKEUPS.load(Ordering::SeqCst)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One thread's bed: a flag and a condition variable of its own, so that waking it
/// disturbs no other thread.
#[derive(Default)]
struct Parker {
    woken: Mutex<bool>,
    bell: Condvar,
}

impl Parker {
    /// Wakes the thread; false when it was already woken (nothing delivered).
    fn unpark(&self) -> bool {
        let mut woken = lock(&self.woken);
        if *woken {
            return false;
        }
        *woken = true;
        self.bell.notify_one();
        WAKEUPS.fetch_add(1, Ordering::SeqCst);
        true
    }

    /// Sleeps until unparked or `timeout` (host time) has passed.
    fn park(&self, timeout: Option<Duration>) {
        // Beyond what an Instant can hold is forever for any test.
        let until = timeout.and_then(|t| Instant::now().checked_add(t));
        let mut woken = lock(&self.woken);
        while !*woken {
            match until {
                None => {
                    woken = self
                        .bell
                        .wait(woken)
                        .unwrap_or_else(PoisonError::into_inner)
                }
                Some(until) => {
                    let left = until.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return;
                    }
                    woken = self
                        .bell
                        .wait_timeout(woken, left)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
            }
        }
    }
}

thread_local! {
    static PARKER: Arc<Parker> = Arc::new(Parker::default());
}

struct Sleeper<K> {
    keys: Vec<K>,
    /// The machine time (interrupt time) at which its wait times out, so that moving the
    /// clock past it ([`WaitQueue::wake_expired`]) ends the sleep.
    deadline: Option<u64>,
    parker: Arc<Parker>,
}

/// The threads asleep in one lock domain, by what they wait for. Lives inside the data
/// the domain's mutex guards; every method is called with that mutex held.
pub(crate) struct WaitQueue<K> {
    sleepers: HashMap<u64, Sleeper<K>>,
    /// Sleeping threads under each key, in the order they went to sleep.
    by_key: HashMap<K, Vec<u64>>,
}

impl<K> Default for WaitQueue<K> {
    fn default() -> Self {
        Self {
            sleepers: HashMap::default(),
            by_key: HashMap::default(),
        }
    }
}

impl<K: Copy + Eq + Hash> WaitQueue<K> {
    fn register(&mut self, thread: u64, keys: &[K], deadline: Option<u64>, parker: Arc<Parker>) {
        for &key in keys {
            self.by_key.entry(key).or_default().push(thread);
        }
        self.sleepers.insert(
            thread,
            Sleeper {
                keys: keys.to_vec(),
                deadline,
                parker,
            },
        );
    }

    fn unregister(&mut self, thread: u64) {
        let Some(sleeper) = self.sleepers.remove(&thread) else {
            return;
        };
        for key in sleeper.keys {
            if let Some(threads) = self.by_key.get_mut(&key) {
                threads.retain(|&t| t != thread);
                if threads.is_empty() {
                    self.by_key.remove(&key);
                }
            }
        }
    }

    /// How many threads are asleep here.
    pub(crate) fn len(&self) -> usize {
        self.sleepers.len()
    }

    /// Wakes every thread sleeping on `key`; returns how many were woken.
    pub(crate) fn wake(&mut self, key: K) -> usize {
        let Some(threads) = self.by_key.get(&key) else {
            return 0;
        };
        threads
            .iter()
            .filter_map(|t| self.sleepers.get(t))
            .filter(|s| s.parker.unpark())
            .count()
    }

    /// Wakes the longest sleeper on `key` that is not already woken, as a queue that
    /// hands one item to one waiting thread does. Returns whether one was woken.
    pub(crate) fn wake_one(&mut self, key: K) -> bool {
        let Some(threads) = self.by_key.get(&key) else {
            return false;
        };
        threads
            .iter()
            .filter_map(|t| self.sleepers.get(t))
            .any(|s| s.parker.unpark())
    }

    /// Wakes every sleeper: the domain itself is going away.
    pub(crate) fn wake_all(&mut self) {
        for sleeper in self.sleepers.values() {
            sleeper.parker.unpark();
        }
    }

    /// Wakes the sleepers whose deadline (machine time) is `now` or earlier: the clock
    /// was moved past it.
    pub(crate) fn wake_expired(&mut self, now: u64) {
        for sleeper in self.sleepers.values() {
            if sleeper.deadline.is_some_and(|d| d <= now) {
                sleeper.parker.unpark();
            }
        }
    }
}

/// Puts the calling thread to sleep on `keys` with the domain lock released, and returns
/// the lock re-taken once a key is woken, `timeout` (host time) has passed, or the clock
/// was moved past `deadline` (machine time). May return early; the caller re-checks what
/// it waits for, in a loop, under the returned guard.
///
/// `queue` finds the domain's wait queue in the locked data; `None` (the domain is gone,
/// e.g. the machine was dropped) returns at once.
pub(crate) fn sleep<'a, T, K: Copy + Eq + Hash>(
    domain: &'a Mutex<T>,
    mut guard: MutexGuard<'a, T>,
    queue: impl Fn(&mut T) -> Option<&mut WaitQueue<K>>,
    keys: &[K],
    deadline: Option<u64>,
    timeout: Option<Duration>,
) -> MutexGuard<'a, T> {
    let me = current_thread();
    let parker = PARKER.with(Arc::clone);
    let Some(waits) = queue(&mut *guard) else {
        return guard;
    };
    // Under the domain lock: a wake meant for an earlier sleep cannot reach this one,
    // since that sleep was unregistered under the lock before this point.
    *lock(&parker.woken) = false;
    waits.register(me, keys, deadline, parker.clone());
    drop(guard);
    parker.park(timeout);
    let mut guard = lock(domain);
    if let Some(waits) = queue(&mut *guard) {
        waits.unregister(me);
    }
    guard
}
