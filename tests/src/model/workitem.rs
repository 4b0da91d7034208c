//! FltMgr generic work items and the system worker threads that run them.
//!
//! Owns: every generic work item (FltMgr pool with tag `FMwi`, so a leaked one also shows
//! in the pool report at unload), the Critical and Delayed work queues, the model's
//! worker threads, and the per-filter accounting FltUnregisterFilter uses to wait for the
//! work a filter queued ([`drain`]) and to report the items it never freed
//! ([`outstanding_work_items`], or both at once with [`unregister`]).
//!
//! A work routine runs on a worker thread of the System process at PASSIVE_LEVEL, as the
//! kernel's worker threads run it, and must hand the thread back as it found it.
//!
//! Checks: each API's IRQL; queueing an item that is still queued (its list entry is in
//! use); freeing an item that is still queued, or twice; queueing to a filter after
//! FltUnregisterFilter, or to something that is neither a filter nor an instance; a
//! queue type other than the two FltQueueGenericWorkItem documents; a routine that
//! returns at raised IRQL, inside a critical region or holding locks; a filter
//! unregistered from its own work routine (it would wait for itself); items never freed
//! by unregister time.
//!
//! Does not model: FltQueueDeferredIoWorkItem (it needs the I/O model's callback data),
//! IoQueueWorkItem / ExQueueWorkItem, and thread priorities: Critical items are only
//! taken before Delayed ones.

use crate::model::fast::{HashMap, HashSet};
use std::cell::Cell;
use std::collections::VecDeque;
use std::ffi::c_void;
use std::sync::PoisonError;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    PFLT_FILTER, PFLT_GENERIC_WORKITEM, PFLT_GENERIC_WORKITEM_ROUTINE,
};
use windows_sys::Wdk::System::SystemServices::{
    CriticalWorkQueue, DelayedWorkQueue, WORK_QUEUE_TYPE,
};
use windows_sys::Win32::Foundation::{
    NTSTATUS, STATUS_FLT_DELETING_OBJECT, STATUS_INVALID_PARAMETER, STATUS_SUCCESS,
};

use super::irql::{self, DISPATCH_LEVEL, PASSIVE_LEVEL};
use super::pool::Owner;
use super::sync::{self, Key, block_until, current_thread};
use super::waits;
use super::{KERNEL, Kernel, Machine, with_kernel};

/// Worker threads per machine; enough to run a blocked item's unblocker.
const MAX_WORKERS: usize = 4;
/// How long an idle worker waits for work before its thread ends.
const IDLE_EXIT: Duration = Duration::from_millis(200);
/// How often a worker kept alive by paused queues looks again.
const MIN_NAP: Duration = Duration::from_millis(20);
/// How long [`Machine::idle`] waits (machine time) before it calls the queue stuck.
const IDLE_LIMIT: u64 = 60 * 10_000_000;
/// FltMgr's pool tag for generic work items.
const WORK_ITEM_TAG: u32 = u32::from_le_bytes(*b"FMwi");
/// The opaque FLT_GENERIC_WORKITEM; the driver never looks inside.
const WORK_ITEM_SIZE: usize = 64;
const OWNER: Owner = Owner::FltMgr("generic work item");

/// Distinguishes one machine's work state from the next, so a worker thread left over
/// from a dropped machine never takes the next machine's work.
static GENERATION: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// The filter whose work routine this thread is running.
    static RUNNING_FILTER: Cell<Option<PFLT_FILTER>> = const { Cell::new(None) };
}

type Routine = unsafe extern "system" fn(PFLT_GENERIC_WORKITEM, *const c_void, *const c_void);

struct Item {
    /// The filter it was last queued for; at allocation, the one registered filter.
    filter: Option<PFLT_FILTER>,
    queued: bool,
}

#[derive(Clone, Copy)]
struct Entry {
    item: PFLT_GENERIC_WORKITEM,
    filter: PFLT_FILTER,
    object: usize,
    routine: Routine,
    context: usize,
}

struct Running {
    filter: PFLT_FILTER,
    /// The FltObject it was queued with.
    object: usize,
    thread: u64,
    item: PFLT_GENERIC_WORKITEM,
}

/// The work-item state of one machine.
pub(crate) struct WorkItems {
    generation: u64,
    items: HashMap<PFLT_GENERIC_WORKITEM, Item>,
    critical: VecDeque<Entry>,
    delayed: VecDeque<Entry>,
    running: Vec<Running>,
    workers: usize,
    idle: usize,
    /// Filters inside FltUnregisterFilter: new work for them is refused.
    draining: HashSet<PFLT_FILTER>,
    /// Set by tests: workers take nothing, so queued items stay queued.
    paused: bool,
}

impl Default for WorkItems {
    fn default() -> Self {
        Self {
            generation: GENERATION.fetch_add(1, Ordering::Relaxed),
            items: HashMap::default(),
            critical: VecDeque::new(),
            delayed: VecDeque::new(),
            running: Vec::new(),
            workers: 0,
            idle: 0,
            draining: HashSet::default(),
            paused: false,
        }
    }
}

impl WorkItems {
    fn busy_with(&self, filter: PFLT_FILTER, except: u64) -> bool {
        self.critical
            .iter()
            .chain(&self.delayed)
            .any(|e| e.filter == filter)
            || self
                .running
                .iter()
                .any(|r| r.filter == filter && r.thread != except)
    }

    fn is_idle(&self) -> bool {
        self.critical.is_empty() && self.delayed.is_empty() && self.running.is_empty()
    }

    /// Items queued or running with `instance` as their FltObject: each holds a rundown
    /// reference on the instance until its routine returns, which instance teardown waits
    /// for (teardown.rs).
    pub(crate) fn holding_instance(&self, instance: isize) -> usize {
        let object = instance as usize;
        let queued = self.critical.iter().chain(&self.delayed);
        queued.filter(|e| e.object == object).count()
            + self.running.iter().filter(|r| r.object == object).count()
    }
}

impl Kernel {
    /// Generic work items attributed to `filter` that were never freed. For use inside
    /// `with_kernel`; see [`outstanding_work_items`].
    pub(crate) fn outstanding_work_items(&self, filter: PFLT_FILTER) -> usize {
        self.work
            .items
            .values()
            .filter(|i| i.filter == Some(filter))
            .count()
    }

    /// The filter `object` (a filter or one of its instances) belongs to.
    fn filter_of_object(&mut self, api: &'static str, object: usize) -> Option<PFLT_FILTER> {
        let handle = object as isize;
        if self.filters.contains_key(&handle) {
            return self.live_filter(api, handle).then_some(handle);
        }
        let owner = self
            .filters
            .iter()
            .find(|(_, f)| f.instances.iter().any(|i| i.handle == handle))
            .map(|(h, _)| *h);
        if owner.is_none() {
            self.violation(
                api,
                format!(
                    "FltObject {object:#x} is neither a filter nor a live instance \
                     (used after teardown?)"
                ),
            );
        }
        owner
    }
}

/// Refuses new work for `filter` (FltQueueGenericWorkItem returns
/// STATUS_FLT_DELETING_OBJECT) and waits until every item queued for it has run. Call
/// from FltUnregisterFilter with the kernel lock released.
pub(crate) fn drain(filter: PFLT_FILTER) {
    let me = current_thread();
    let own = RUNNING_FILTER.with(Cell::get) == Some(filter);
    with_kernel(|k| {
        k.work.draining.insert(filter);
        if own {
            k.violation(
                "FltUnregisterFilter",
                "called from a work routine of the filter it unregisters: it waits for \
                 that routine to return, that is, for itself",
            );
        }
    });
    block_until(&[Key::WorkDone], None, |k, _| {
        (!k.work.busy_with(filter, me)).then_some(())
    });
}

/// What FltUnregisterFilter does about work items: [`drain`], then report the items the
/// filter never freed.
pub(crate) fn unregister(filter: PFLT_FILTER) {
    drain(filter);
    with_kernel(|k| {
        let leaked = k.outstanding_work_items(filter);
        if leaked > 0 {
            k.violation(
                "FltUnregisterFilter",
                format!(
                    "{leaked} generic work item(s) leaked: never freed with FltFreeGenericWorkItem"
                ),
            );
        }
    });
}

/// FltAllocateGenericWorkItem. NULL when pool runs out (or an injected failure fires).
#[unsafe(no_mangle)]
pub extern "system" fn FltAllocateGenericWorkItem() -> PFLT_GENERIC_WORKITEM {
    const API: &str = "FltAllocateGenericWorkItem";
    irql::check(API, DISPATCH_LEVEL);
    with_kernel(|k| {
        if k.injected(API).is_some() {
            return 0;
        }
        let Some(ptr) = k.pool.allocate(WORK_ITEM_SIZE, WORK_ITEM_TAG, OWNER) else {
            return 0;
        };
        // The item names no filter until it is queued; the model runs one driver at a
        // time, so it belongs to the one registered filter.
        let live: Vec<PFLT_FILTER> = k
            .filters
            .iter()
            .filter(|(_, f)| !f.is_unregistered())
            .map(|(h, _)| *h)
            .collect();
        let filter = match live.as_slice() {
            [only] => Some(*only),
            _ => None,
        };
        let item = ptr as PFLT_GENERIC_WORKITEM;
        k.work.items.insert(
            item,
            Item {
                filter,
                queued: false,
            },
        );
        item
    })
}

/// FltQueueGenericWorkItem: the routine runs later on a System worker thread at
/// PASSIVE_LEVEL.
#[unsafe(no_mangle)]
pub extern "system" fn FltQueueGenericWorkItem(
    item: PFLT_GENERIC_WORKITEM,
    object: *const c_void,
    routine: PFLT_GENERIC_WORKITEM_ROUTINE,
    queue: WORK_QUEUE_TYPE,
    context: *const c_void,
) -> NTSTATUS {
    const API: &str = "FltQueueGenericWorkItem";
    irql::check(API, DISPATCH_LEVEL);
    let queued = with_kernel(|k| {
        let Some(routine) = routine else {
            k.violation(API, "NULL WorkerRoutine");
            return Err(STATUS_INVALID_PARAMETER);
        };
        if queue != CriticalWorkQueue && queue != DelayedWorkQueue {
            k.violation(
                API,
                format!(
                    "QueueType {queue} is neither CriticalWorkQueue nor DelayedWorkQueue, \
                     the two it accepts"
                ),
            );
            return Err(STATUS_INVALID_PARAMETER);
        }
        let Some(filter) = k.filter_of_object(API, object as usize) else {
            return Err(STATUS_INVALID_PARAMETER);
        };
        if k.work.draining.contains(&filter) {
            return Err(STATUS_FLT_DELETING_OBJECT);
        }
        // Queueing takes a rundown reference on the FltObject, which an instance being
        // torn down refuses (FltObjectReference).
        let object_handle = object as isize;
        let tearing_down = k
            .filters
            .values()
            .flat_map(|f| f.instances.iter())
            .any(|i| i.handle == object_handle && i.tearing_down);
        if tearing_down {
            return Err(STATUS_FLT_DELETING_OBJECT);
        }
        let Some(it) = k.work.items.get_mut(&item) else {
            k.violation(
                API,
                format!(
                    "{item:#x} is not a work item from FltAllocateGenericWorkItem (or was freed)"
                ),
            );
            return Err(STATUS_INVALID_PARAMETER);
        };
        if it.queued {
            k.violation(
                API,
                format!(
                    "work item {item:#x} queued again before its routine ran: its list entry \
                     is still in the queue"
                ),
            );
            return Err(STATUS_INVALID_PARAMETER);
        }
        it.queued = true;
        it.filter = Some(filter);
        let entry = Entry {
            item,
            filter,
            object: object as usize,
            routine,
            context: context as usize,
        };
        let work = &mut k.work;
        if queue == CriticalWorkQueue {
            work.critical.push_back(entry);
        } else {
            work.delayed.push_back(entry);
        }
        let pending = work.critical.len() + work.delayed.len();
        let spawn = pending > work.idle && work.workers < MAX_WORKERS;
        if spawn {
            work.workers += 1;
        }
        let generation = work.generation;
        // One item, one worker: an idle one takes it, as a kernel queue readies one
        // waiting thread per entry (a new one is started when none is idle).
        k.sync.waits.wake_one(Key::WorkQueued);
        Ok(spawn.then_some(generation))
    });
    match queued {
        Err(status) => status,
        Ok(spawn) => {
            if let Some(generation) = spawn {
                std::thread::Builder::new()
                    .name("model System worker".into())
                    .spawn(move || worker(generation))
                    .expect("the host could not start a worker thread");
            }
            STATUS_SUCCESS
        }
    }
}

/// FltFreeGenericWorkItem. Allowed from the item's own routine once it runs.
#[unsafe(no_mangle)]
pub extern "system" fn FltFreeGenericWorkItem(item: PFLT_GENERIC_WORKITEM) {
    const API: &str = "FltFreeGenericWorkItem";
    irql::check(API, DISPATCH_LEVEL);
    with_kernel(|k| {
        match k.work.items.get(&item) {
            None => {
                k.violation(
                    API,
                    format!("{item:#x} is not a live work item (freed twice?)"),
                );
                return;
            }
            Some(it) if it.queued => {
                // Freeing it would leave freed memory linked into the work queue.
                k.violation(
                    API,
                    format!(
                        "work item {item:#x} freed while still queued: its routine has not run"
                    ),
                );
                return;
            }
            Some(_) => {}
        }
        k.work.items.remove(&item);
        if let Err(message) = k.pool.free(item as *mut u8, None, OWNER) {
            k.violation(API, message);
        }
    });
}

/// A System worker thread: runs items until the queues stay empty for [`IDLE_EXIT`].
fn worker(generation: u64) {
    while let Some(entry) = next_entry(generation) {
        RUNNING_FILTER.with(|c| c.set(Some(entry.filter)));
        // SAFETY: the driver's routine with the arguments it queued, called once per
        // queueing at PASSIVE_LEVEL on a System thread, as FltMgr calls it.
        unsafe {
            (entry.routine)(
                entry.item,
                entry.object as *const c_void,
                entry.context as *const c_void,
            )
        };
        RUNNING_FILTER.with(|c| c.set(None));
        sync::check_thread_clean("FltQueueGenericWorkItem", "work routine", PASSIVE_LEVEL);
        finished(generation, entry.item);
    }
}

/// Takes the next entry, marking it running; `None` when the thread should end.
fn next_entry(generation: u64) -> Option<Entry> {
    let me = current_thread();
    let idle_since = Instant::now();
    let mut guard = KERNEL.lock().unwrap_or_else(PoisonError::into_inner);
    loop {
        let work = &mut guard.as_mut()?.work;
        if work.generation != generation {
            return None;
        }
        let next = if work.paused {
            None
        } else {
            work.critical
                .pop_front()
                .or_else(|| work.delayed.pop_front())
        };
        if let Some(entry) = next {
            // Dequeued: from here on the driver may queue it again or free it.
            if let Some(it) = work.items.get_mut(&entry.item) {
                it.queued = false;
            }
            work.running.push(Running {
                filter: entry.filter,
                object: entry.object,
                thread: me,
                item: entry.item,
            });
            return Some(entry);
        }
        let waited = idle_since.elapsed();
        if waited >= IDLE_EXIT && !work.paused {
            work.workers -= 1;
            return None;
        }
        work.idle += 1;
        guard = waits::sleep(
            &KERNEL,
            guard,
            sync::kernel_waits,
            &[Key::WorkQueued],
            None,
            Some(IDLE_EXIT.saturating_sub(waited).max(MIN_NAP)),
        );
        if let Some(k) = guard.as_mut()
            && k.work.generation == generation
        {
            k.work.idle -= 1;
        }
    }
}

fn finished(generation: u64, item: PFLT_GENERIC_WORKITEM) {
    let me = current_thread();
    {
        let mut guard = KERNEL.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(k) = guard.as_mut()
            && k.work.generation == generation
            && let Some(pos) = k
                .work
                .running
                .iter()
                .position(|r| r.thread == me && r.item == item)
        {
            let running = k.work.running.remove(pos);
            k.wake(Key::WorkDone);
            // Its rundown reference on an instance FltObject is gone.
            k.wake(Key::Instance(running.object as isize));
        }
    }
}

impl Machine {
    /// Holds the work queues (`true`): queued items stay queued until released (`false`),
    /// as on a machine whose worker threads are all busy. Lets a test observe the time
    /// between queueing and running.
    pub fn hold_work_queues(&self, hold: bool) {
        with_kernel(|k| {
            k.work.paused = hold;
            if !hold {
                k.wake(Key::WorkQueued);
            }
        });
    }

    /// Waits until no work item is queued or running. Panics if that takes more than a
    /// minute of machine time: a routine that never returns is a hang to report.
    pub fn idle(&self) {
        let deadline = with_kernel(|k| k.sync.clock.interrupt_time() + IDLE_LIMIT);
        let drained = block_until(&[Key::WorkDone], Some(deadline), |k, expired| {
            if k.work.is_idle() {
                Some(true)
            } else {
                expired.then_some(false)
            }
        });
        assert!(drained, "work items still queued or running after a minute");
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use windows_sys::Wdk::Foundation::DRIVER_OBJECT;
    use windows_sys::Wdk::Storage::FileSystem::Minifilters::FLT_REGISTRATION;

    use super::*;
    use crate::model::fltmgr::{FltRegisterFilter, FltUnregisterFilter};

    static RAN: AtomicBool = AtomicBool::new(false);

    unsafe extern "system" fn mark(_: PFLT_GENERIC_WORKITEM, _: *const c_void, _: *const c_void) {
        RAN.store(true, Ordering::SeqCst);
    }

    fn register() -> PFLT_FILTER {
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

    #[test]
    fn unregister_waits_for_queued_work_then_reports_unfreed_items() {
        let mut machine = Machine::boot(&[]);
        let filter = register();
        let never_queued = FltAllocateGenericWorkItem();
        let item = FltAllocateGenericWorkItem();
        machine.hold_work_queues(true);
        let status = FltQueueGenericWorkItem(
            item,
            filter as *const c_void,
            Some(mark),
            DelayedWorkQueue,
            std::ptr::null(),
        );
        assert_eq!(status, STATUS_SUCCESS);
        let release = std::thread::spawn(|| {
            std::thread::sleep(Duration::from_millis(30));
            with_kernel(|k| {
                k.work.paused = false;
                k.wake(Key::WorkQueued);
            });
        });
        unregister(filter);
        assert!(
            RAN.load(Ordering::SeqCst),
            "drain returned before the item ran"
        );
        release.join().unwrap();
        // Still inside FltUnregisterFilter: new work is refused, not queued.
        let status = FltQueueGenericWorkItem(
            item,
            filter as *const c_void,
            Some(mark),
            DelayedWorkQueue,
            std::ptr::null(),
        );
        assert_eq!(status, STATUS_FLT_DELETING_OBJECT);
        let v = machine.take_violations();
        assert!(
            v.iter().any(|v| v.api == "FltUnregisterFilter"
                && v.message.contains("2 generic work item(s) leaked")),
            "{v:?}"
        );
        FltFreeGenericWorkItem(never_queued);
        FltFreeGenericWorkItem(item);
        assert_eq!(with_kernel(|k| k.outstanding_work_items(filter)), 0);
        FltUnregisterFilter(filter);
        machine.take_violations();
    }
}
