//! Kernel timers and DPCs: KeInitializeTimer(Ex), KeSetTimer(Ex), KeCancelTimer,
//! KeReadStateTimer, KeInitializeDpc, KeInsertQueueDpc, KeRemoveQueueDpc,
//! KeFlushQueuedDpcs, and the processor that expires timers and runs DPC routines.
//!
//! Owns: the timer table (each timer's due time, period and DPC, by KTIMER address),
//! every DPC object initialised (routine, context, whether queued, by KDPC address), the
//! DPC queue, and the model's DPC thread. A timer's signal state is a dispatcher object's
//! and lives with the events ([`sync`](super::sync)), so KeWaitFor* wait on timers too.
//!
//! Time is the machine clock. A timer expires when its due time comes in real time (the
//! DPC thread sleeps until the earliest one), at once when it is set with a due time
//! already past, and at once when a test moves the clock past it
//! ([`Machine::advance_clock`]): a 60-second timer is tested without waiting a minute.
//! Expiring, as KeSetTimerEx documents: the timer leaves the table (a periodic one is
//! put back, `Period` milliseconds after the expiry is processed, so a clock jump over
//! several periods fires it once, as a late clock interrupt does on Windows), is set to
//! the signaled state (satisfying every waiter of a notification timer, one waiter of a
//! synchronization timer, which that resets), and its DPC, if it has one, is queued with
//! the low and high parts of the expiry's system time as SystemArgument1/2 (the kernel
//! passes those; CustomTimerDpc documents them as unused).
//!
//! DPC routines run one at a time, oldest queued first, on the DPC thread at
//! DISPATCH_LEVEL, so every API they call checks its IRQL against that: a DPC that calls
//! FltSendMessage, or waits with a non-zero timeout, is reported, as Driver Verifier
//! reports it. A DPC may queue work (FltQueueGenericWorkItem allows DISPATCH_LEVEL).
//!
//! Checks: each API's documented IRQL; timers and DPC objects used without being
//! initialised at that address (or moved since); a negative period; a timer or DPC
//! re-initialised while queued; a DPC routine that returns at another IRQL, in a critical
//! or guarded region, or holding a lock; KeFlushQueuedDpcs from a DPC routine (it would
//! wait for itself); pool freed with a queued timer or DPC in it, or with the DPC of a
//! queued timer in it (Driver Verifier checks each free: bug check 0xC7
//! TIMER_OR_DPC_INVALID); and at driver unload, a timer still queued or a DPC still
//! queued or running (0xC7 for an object in the unloaded image, 0xCE
//! DRIVER_UNLOADED_WITHOUT_CANCELLING_PENDING_OPERATIONS for one whose routine is in
//! it). The model runs one driver and sets no timer of its own, so every timer and DPC
//! is the driver's.
//!
//! Does not model: more than one processor (DPC routines never run concurrently with
//! each other), DPC importance and target processors, threaded DPCs, the 15.6 ms clock
//! tick (a timer expires at its due time, not at the next tick), high-resolution,
//! coalescable and EX_TIMER timers, and system time changes (an absolute due time is
//! converted to interrupt time when the timer is set, which is the same thing while the
//! system time only moves with the clock).

use crate::model::fast::HashMap;
use std::cell::Cell;
use std::collections::VecDeque;
use std::ffi::c_void;
use std::mem::{offset_of, size_of};
use std::sync::PoisonError;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use windows_sys::Wdk::Foundation::{
    DISPATCHER_HEADER, DISPATCHER_HEADER_0, DISPATCHER_HEADER_0_1, KDPC, KDPC_0, KDPC_0_0,
    PKDEFERRED_ROUTINE,
};
use windows_sys::Wdk::System::SystemServices::KTIMER;
use windows_sys::Win32::System::Kernel::{
    LIST_ENTRY, NotificationTimer, SINGLE_LIST_ENTRY, SynchronizationTimer, TIMER_TYPE,
};

use super::irql::{self, DISPATCH_LEVEL, PASSIVE_LEVEL};
use super::sync::{self, Key, ObjectKind, block_until};
use super::waits;
use super::{KERNEL, Kernel, Machine, with_kernel};

/// KOBJECTS values: what KeInitializeTimerEx stores in `Header.Type`, and
/// KeInitializeDpc in `Type`.
const TIMER_NOTIFICATION_OBJECT: u8 = 8;
const TIMER_SYNCHRONIZATION_OBJECT: u8 = 9;
const DPC_OBJECT: u8 = 0x13;
/// MediumImportance, the importance KeInitializeDpc gives a DPC.
const MEDIUM_IMPORTANCE: u8 = 1;
/// `sizeof(KTIMER) / sizeof(LONG)`, what KeInitializeTimerEx stores in `Header.Size`.
const KTIMER_SIZE_IN_LONGS: u8 = (size_of::<KTIMER>() / 4) as u8;
/// KeSetTimerEx's Period is in milliseconds; the clock counts 100 ns.
const TICKS_PER_MS: u64 = 10_000;

/// Distinguishes one machine's timer state from the next, so a DPC thread left over
/// from a dropped machine never runs the next machine's DPCs.
static GENERATION: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// Set on the DPC thread while a DPC routine runs.
    static IN_DPC: Cell<bool> = const { Cell::new(false) };
}

/// KDEFERRED_ROUTINE as wdm.h declares it. windows-sys 0.61 declares PKDEFERRED_ROUTINE
/// without parameters (`Option<unsafe extern "system" fn()>`), so a driver casts its
/// routine to that type, and the kernel calls it with these four.
type DeferredRoutine =
    unsafe extern "system" fn(*const KDPC, *const c_void, *const c_void, *const c_void);

struct Timer {
    /// The interrupt time at which it expires, while it is in the timer table.
    due: Option<u64>,
    /// Milliseconds between expiries of a periodic timer; 0 for a one-shot one.
    period: u32,
    /// The KDPC it queues when it expires; 0 for none.
    dpc: usize,
    /// Orders timers due at the same instant: the one set first expires first.
    set: u64,
}

struct Dpc {
    /// The DeferredRoutine, as an address.
    routine: usize,
    context: usize,
    /// In the DPC queue: its ticket (the order DPCs run in) and SystemArgument1/2.
    queued: Option<(u64, usize, usize)>,
}

/// The DPC routine running on the DPC thread.
struct Running {
    dpc: usize,
    routine: usize,
    ticket: u64,
}

/// The timer and DPC state of one machine.
pub(crate) struct Timers {
    generation: u64,
    timers: HashMap<usize, Timer>,
    dpcs: HashMap<usize, Dpc>,
    /// Queued DPCs, by address, in the order they run.
    queue: VecDeque<usize>,
    running: Option<Running>,
    next_ticket: u64,
    next_set: u64,
    /// Whether the DPC thread is alive. It ends once no timer is in the table and no DPC
    /// is queued; the next KeSetTimer or KeInsertQueueDpc starts another.
    thread: bool,
}

impl Default for Timers {
    fn default() -> Self {
        Self {
            generation: GENERATION.fetch_add(1, Ordering::Relaxed),
            timers: HashMap::default(),
            dpcs: HashMap::default(),
            queue: VecDeque::new(),
            running: None,
            next_ticket: 0,
            next_set: 0,
            thread: false,
        }
    }
}

impl Timers {
    /// The earliest due time in the table.
    fn next_due(&self) -> Option<u64> {
        self.timers.values().filter_map(|t| t.due).min()
    }

    /// Whether a DPC queued or running holds a ticket up to `ticket`.
    fn pending_through(&self, ticket: u64) -> bool {
        let queued = self
            .queue
            .iter()
            .filter_map(|d| self.dpcs.get(d)?.queued)
            .any(|(t, _, _)| t <= ticket);
        queued || self.running.as_ref().is_some_and(|r| r.ticket <= ticket)
    }

    /// The last ticket given to a DPC still queued or running.
    fn last_pending_ticket(&self) -> Option<u64> {
        let queued = self
            .queue
            .iter()
            .filter_map(|d| self.dpcs.get(d)?.queued)
            .map(|(t, _, _)| t);
        queued.chain(self.running.as_ref().map(|r| r.ticket)).max()
    }

    /// Takes `dpc` out of the DPC queue; whether it was in it.
    fn dequeue(&mut self, dpc: usize) -> bool {
        let Some(d) = self.dpcs.get_mut(&dpc) else {
            return false;
        };
        if d.queued.take().is_none() {
            return false;
        }
        self.queue.retain(|&q| q != dpc);
        true
    }
}

// ---------------------------------------------------------------------------------------
// Expiry and the DPC thread
// ---------------------------------------------------------------------------------------

impl Kernel {
    /// Expires every timer in the table whose due time has come, earliest first. Called
    /// by the DPC thread when it wakes, by KeSetTimer(Ex) (a due time already past
    /// expires at once) and by `Machine::advance_clock`.
    pub(crate) fn expire_timers(&mut self) {
        let now = self.sync.clock.interrupt_time();
        loop {
            let next = self
                .timers
                .timers
                .iter()
                .filter_map(|(&addr, t)| t.due.filter(|&d| d <= now).map(|d| (d, t.set, addr)))
                .min();
            let Some((_, _, addr)) = next else {
                break;
            };
            let system_time = self.sync.clock.system_time();
            let Some(timer) = self.timers.timers.get_mut(&addr) else {
                break;
            };
            // A periodic timer goes back in the table relative to this expiry, so it
            // expires once however far the clock jumped.
            timer.due = (timer.period > 0)
                .then(|| now.saturating_add(u64::from(timer.period) * TICKS_PER_MS));
            let (due, dpc) = (timer.due, timer.dpc);
            if let Some(due) = due {
                write_due_time(addr, due);
            }
            self.sync.signal(addr);
            if dpc != 0 {
                let low = (system_time & 0xFFFF_FFFF) as usize;
                let high = (system_time >> 32) as usize;
                self.queue_dpc(dpc, low, high);
            }
        }
    }

    /// Inserts `dpc` in the DPC queue with its system arguments; false when it is
    /// already queued (it then runs once, with the arguments it was first queued with).
    fn queue_dpc(&mut self, dpc: usize, arg1: usize, arg2: usize) -> bool {
        let timers = &mut self.timers;
        let Some(d) = timers.dpcs.get_mut(&dpc) else {
            return false;
        };
        if d.queued.is_some() {
            return false;
        }
        timers.next_ticket += 1;
        d.queued = Some((timers.next_ticket, arg1, arg2));
        timers.queue.push_back(dpc);
        self.timers_changed();
        true
    }

    /// Tells the DPC thread the timer table or DPC queue changed, starting it if needed.
    fn timers_changed(&mut self) {
        if !self.timers.thread {
            self.timers.thread = true;
            let generation = self.timers.generation;
            std::thread::Builder::new()
                .name("model DPC processor".into())
                .spawn(move || dpc_thread(generation))
                .expect("the host could not start the DPC thread");
        }
        self.wake(Key::Timers);
    }
}

/// The model's one processor at DISPATCH_LEVEL: expires due timers and runs queued DPC
/// routines, sleeping until the next due time otherwise.
fn dpc_thread(generation: u64) {
    let mut guard = KERNEL.lock().unwrap_or_else(PoisonError::into_inner);
    loop {
        let Some(k) = guard.as_mut() else {
            return;
        };
        if k.timers.generation != generation {
            return;
        }
        k.expire_timers();
        if let Some(dpc) = k.timers.queue.pop_front() {
            let Some(d) = k.timers.dpcs.get_mut(&dpc) else {
                continue;
            };
            let Some((ticket, arg1, arg2)) = d.queued.take() else {
                continue;
            };
            let (routine, context) = (d.routine, d.context);
            k.timers.running = Some(Running {
                dpc,
                routine,
                ticket,
            });
            drop(guard);
            run_dpc(dpc, routine, context, arg1, arg2);
            guard = KERNEL.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(k) = guard.as_mut()
                && k.timers.generation == generation
            {
                k.timers.running = None;
                k.wake(Key::DpcDone);
            }
            continue;
        }
        let Some(next) = k.timers.next_due() else {
            k.timers.thread = false;
            return;
        };
        let now = k.sync.clock.interrupt_time();
        let left = Duration::from_nanos(next.saturating_sub(now).saturating_mul(100));
        // The deadline lets a clock jump past it wake this thread too.
        guard = waits::sleep(
            &KERNEL,
            guard,
            sync::kernel_waits,
            &[Key::Timers],
            Some(next),
            Some(left),
        );
    }
}

/// Runs one DPC routine at DISPATCH_LEVEL, then checks that it handed the processor back
/// as it found it.
fn run_dpc(dpc: usize, routine: usize, context: usize, arg1: usize, arg2: usize) {
    // SAFETY: `routine` is the non-NULL DeferredRoutine KeInitializeDpc recorded, a
    // KDEFERRED_ROUTINE cast to windows-sys's parameterless PKDEFERRED_ROUTINE; the
    // kernel calls it with the documented four parameters, and so does this.
    let routine = unsafe { std::mem::transmute::<usize, DeferredRoutine>(routine) };
    irql::set(DISPATCH_LEVEL);
    IN_DPC.with(|c| c.set(true));
    // SAFETY: the driver's DPC routine, called once per queueing with its DPC object,
    // the context it gave KeInitializeDpc and the system arguments, at DISPATCH_LEVEL on
    // the model's processor, as the kernel calls it.
    unsafe {
        routine(
            dpc as *const KDPC,
            context as *const c_void,
            arg1 as *const c_void,
            arg2 as *const c_void,
        )
    };
    IN_DPC.with(|c| c.set(false));
    sync::check_thread_clean("DeferredRoutine", "DPC routine", DISPATCH_LEVEL);
}

// ---------------------------------------------------------------------------------------
// The object layouts
// ---------------------------------------------------------------------------------------

fn write_due_time(timer: usize, due: u64) {
    let field = (timer + offset_of!(KTIMER, DueTime)) as *mut u64;
    // SAFETY: `timer` is a KTIMER in the timer table: initialised by KeInitializeTimer(Ex)
    // at this address and not freed (a free of a queued timer takes it out of the table).
    unsafe { field.write_unaligned(due) };
}

/// Whether `dpc` is a KDPC KeInitializeDpc set up at this address, and still holds the
/// routine it was given there; says why not.
fn check_dpc(k: &Kernel, api: &'static str, dpc: usize) -> Result<(), String> {
    if dpc == 0 {
        return Err(format!("{api} on a NULL DPC object"));
    }
    let recorded = k.timers.dpcs.get(&dpc).map(|d| d.routine);
    let field = (dpc + offset_of!(KDPC, DeferredRoutine)) as *const usize;
    // SAFETY: `dpc` names a KDPC the driver passed to a kernel API, so it is readable.
    let in_memory = unsafe { field.read_unaligned() };
    match recorded {
        Some(routine) if routine == in_memory => Ok(()),
        _ => Err(format!(
            "{dpc:#x} is not a KDPC initialised by KeInitializeDpc at this address (never \
             initialised, or moved or overwritten since)"
        )),
    }
}

// ---------------------------------------------------------------------------------------
// Timers
// ---------------------------------------------------------------------------------------

/// KeInitializeTimer: a notification timer.
///
/// # Safety
/// `timer` must point to writable KTIMER memory that stays put while the timer is used.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn KeInitializeTimer(timer: *mut KTIMER) {
    // SAFETY: the caller's contract, passed on.
    unsafe { initialize_timer("KeInitializeTimer", timer, NotificationTimer) };
}

/// KeInitializeTimerEx.
///
/// # Safety
/// `timer` must point to writable KTIMER memory that stays put while the timer is used.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn KeInitializeTimerEx(timer: *mut KTIMER, kind: TIMER_TYPE) {
    // SAFETY: the caller's contract, passed on.
    unsafe { initialize_timer("KeInitializeTimerEx", timer, kind) };
}

/// # Safety
/// As for KeInitializeTimerEx.
unsafe fn initialize_timer(api: &'static str, timer: *mut KTIMER, kind: TIMER_TYPE) {
    irql::check(api, DISPATCH_LEVEL);
    let addr = timer as usize;
    if timer.is_null() || (kind != NotificationTimer && kind != SynchronizationTimer) {
        with_kernel(|k| {
            k.violation(
                api,
                format!(
                    "timer {timer:p} of type {kind}: NULL, or neither NotificationTimer nor \
                     SynchronizationTimer"
                ),
            )
        });
        return;
    }
    let queued = with_kernel(|k| {
        let queued = k.timers.timers.get(&addr).is_some_and(|t| t.due.is_some());
        if queued {
            // Its list entry is still linked into the timer table: writing over it
            // corrupts the table.
            k.violation(
                api,
                format!("timer {addr:#x} re-initialised while in the timer table"),
            );
        }
        queued
    });
    if queued {
        return;
    }
    let head = sync::wait_list_head(addr) as *mut LIST_ENTRY;
    let value = KTIMER {
        Header: DISPATCHER_HEADER {
            Anonymous: DISPATCHER_HEADER_0 {
                Anonymous2: DISPATCHER_HEADER_0_1 {
                    Type: if kind == NotificationTimer {
                        TIMER_NOTIFICATION_OBJECT
                    } else {
                        TIMER_SYNCHRONIZATION_OBJECT
                    },
                    Signalling: 0,
                    Size: KTIMER_SIZE_IN_LONGS,
                    Reserved1: 0,
                },
            },
            SignalState: 0,
            WaitListHead: LIST_ENTRY {
                Flink: head,
                Blink: head,
            },
        },
        DueTime: 0,
        TimerListEntry: LIST_ENTRY {
            Flink: std::ptr::null_mut(),
            Blink: std::ptr::null_mut(),
        },
        Dpc: std::ptr::null_mut(),
        Period: 0,
    };
    // SAFETY: the caller's contract: `timer` is writable KTIMER memory.
    unsafe { timer.write_unaligned(value) };
    with_kernel(|k| {
        k.timers.timers.insert(
            addr,
            Timer {
                due: None,
                period: 0,
                dpc: 0,
                set: 0,
            },
        );
        k.sync
            .init_object(addr, ObjectKind::Timer, kind == SynchronizationTimer, false);
    });
}

/// KeSetTimer: KeSetTimerEx without a period.
#[unsafe(no_mangle)]
pub extern "system" fn KeSetTimer(timer: *mut KTIMER, due_time: i64, dpc: *const KDPC) -> bool {
    set_timer("KeSetTimer", timer as usize, due_time, 0, dpc as usize)
}

/// KeSetTimerEx: puts the timer in the timer table to expire at `due_time` (negative:
/// relative, in 100 ns; positive: an absolute system time), then every `period`
/// milliseconds if that is not zero, queuing `dpc` at each expiry. The timer is set to
/// not-signaled. Returns whether it was already in the table (it is then cancelled
/// first; a DPC it already queued stays queued).
#[unsafe(no_mangle)]
pub extern "system" fn KeSetTimerEx(
    timer: *mut KTIMER,
    due_time: i64,
    period: i32,
    dpc: *const KDPC,
) -> bool {
    set_timer(
        "KeSetTimerEx",
        timer as usize,
        due_time,
        period,
        dpc as usize,
    )
}

fn set_timer(api: &'static str, timer: usize, due_time: i64, period: i32, dpc: usize) -> bool {
    irql::check(api, DISPATCH_LEVEL);
    with_kernel(|k| {
        if let Err(message) = k.sync.check_object(api, timer, Some(ObjectKind::Timer)) {
            k.violation(api, message);
            return false;
        }
        let Ok(period) = u32::try_from(period) else {
            k.violation(
                api,
                format!("Period {period}: it must be greater than or equal to zero"),
            );
            return false;
        };
        if dpc != 0
            && let Err(message) = check_dpc(k, api, dpc)
        {
            k.violation(api, message);
            return false;
        }
        let due = k
            .sync
            .clock
            .deadline(Some(due_time))
            .unwrap_or_else(|| k.sync.clock.interrupt_time());
        k.timers.next_set += 1;
        let set = k.timers.next_set;
        let Some(t) = k.timers.timers.get_mut(&timer) else {
            return false;
        };
        let was_queued = t.due.is_some();
        *t = Timer {
            due: Some(due),
            period,
            dpc,
            set,
        };
        k.sync.set_signaled(timer, false);
        write_due_time(timer, due);
        // What a debugger shows in the KTIMER.
        let dpc_field = (timer + offset_of!(KTIMER, Dpc)) as *mut usize;
        // SAFETY: an initialised KTIMER (checked above), writable.
        unsafe { dpc_field.write_unaligned(dpc) };
        let period_field = (timer + offset_of!(KTIMER, Period)) as *mut u32;
        // SAFETY: as above.
        unsafe { period_field.write_unaligned(period) };
        k.timers_changed();
        // A due time already past expires now, as the kernel does when inserting it.
        k.expire_timers();
        was_queued
    })
}

/// KeCancelTimer: takes the timer out of the timer table; whether it was in it. Its
/// signal state is unchanged, and a DPC its expiry already queued stays queued (for a
/// one-shot timer the routine then returns FALSE, as documented).
#[unsafe(no_mangle)]
pub extern "system" fn KeCancelTimer(timer: *mut KTIMER) -> bool {
    const API: &str = "KeCancelTimer";
    irql::check(API, DISPATCH_LEVEL);
    with_kernel(|k| {
        if let Err(message) = k
            .sync
            .check_object(API, timer as usize, Some(ObjectKind::Timer))
        {
            k.violation(API, message);
            return false;
        }
        k.timers
            .timers
            .get_mut(&(timer as usize))
            .and_then(|t| t.due.take())
            .is_some()
    })
}

/// KeReadStateTimer: whether the timer is signaled.
#[unsafe(no_mangle)]
pub extern "system" fn KeReadStateTimer(timer: *const KTIMER) -> bool {
    const API: &str = "KeReadStateTimer";
    irql::check(API, DISPATCH_LEVEL);
    with_kernel(|k| {
        if let Err(message) = k
            .sync
            .check_object(API, timer as usize, Some(ObjectKind::Timer))
        {
            k.violation(API, message);
            return false;
        }
        k.sync.is_signaled(timer as usize)
    })
}

// ---------------------------------------------------------------------------------------
// DPCs
// ---------------------------------------------------------------------------------------

/// KeInitializeDpc. Callable at any IRQL.
///
/// # Safety
/// `dpc` must point to writable KDPC memory that stays put while the DPC is used.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn KeInitializeDpc(
    dpc: *mut KDPC,
    routine: PKDEFERRED_ROUTINE,
    context: *const c_void,
) {
    const API: &str = "KeInitializeDpc";
    let addr = dpc as usize;
    let problem = if dpc.is_null() {
        Some("NULL DPC object".to_owned())
    } else if routine.is_none() {
        Some("NULL DeferredRoutine".to_owned())
    } else if with_kernel(|k| k.timers.dpcs.get(&addr).is_some_and(|d| d.queued.is_some())) {
        // Its list entry is still linked into the DPC queue.
        Some(format!("DPC {addr:#x} re-initialised while queued"))
    } else {
        None
    };
    if let Some(message) = problem {
        with_kernel(|k| k.violation(API, message));
        return;
    }
    let value = KDPC {
        Anonymous: KDPC_0 {
            Anonymous: KDPC_0_0 {
                Type: DPC_OBJECT,
                Importance: MEDIUM_IMPORTANCE,
                Number: 0,
            },
        },
        DpcListEntry: SINGLE_LIST_ENTRY {
            Next: std::ptr::null_mut(),
        },
        ProcessorHistory: 0,
        DeferredRoutine: routine,
        DeferredContext: context.cast_mut(),
        SystemArgument1: std::ptr::null_mut(),
        SystemArgument2: std::ptr::null_mut(),
        DpcData: std::ptr::null_mut(),
    };
    // SAFETY: the caller's contract: `dpc` is writable KDPC memory.
    unsafe { dpc.write_unaligned(value) };
    let routine = routine.map_or(0, |r| r as usize);
    with_kernel(|k| {
        k.timers.dpcs.insert(
            addr,
            Dpc {
                routine,
                context: context as usize,
                queued: None,
            },
        );
    });
}

/// KeInsertQueueDpc: queues the DPC with its system arguments; FALSE when it is already
/// queued. Callable at any IRQL.
#[unsafe(no_mangle)]
pub extern "system" fn KeInsertQueueDpc(
    dpc: *mut KDPC,
    arg1: *const c_void,
    arg2: *const c_void,
) -> bool {
    const API: &str = "KeInsertQueueDpc";
    with_kernel(|k| {
        if let Err(message) = check_dpc(k, API, dpc as usize) {
            k.violation(API, message);
            return false;
        }
        k.queue_dpc(dpc as usize, arg1 as usize, arg2 as usize)
    })
}

/// KeRemoveQueueDpc: takes the DPC out of the DPC queue; whether it was queued (a routine
/// already running runs on). Callable at any IRQL.
#[unsafe(no_mangle)]
pub extern "system" fn KeRemoveQueueDpc(dpc: *mut KDPC) -> bool {
    const API: &str = "KeRemoveQueueDpc";
    with_kernel(|k| {
        if let Err(message) = check_dpc(k, API, dpc as usize) {
            k.violation(API, message);
            return false;
        }
        let removed = k.timers.dequeue(dpc as usize);
        if removed {
            // A KeFlushQueuedDpcs waiting for it has nothing left to wait for.
            k.wake(Key::DpcDone);
        }
        removed
    })
}

/// KeFlushQueuedDpcs: returns once every DPC queued (or running) when it was called has
/// run. PASSIVE_LEVEL only.
#[unsafe(no_mangle)]
pub extern "system" fn KeFlushQueuedDpcs() {
    const API: &str = "KeFlushQueuedDpcs";
    irql::check(API, PASSIVE_LEVEL);
    if IN_DPC.with(Cell::get) {
        with_kernel(|k| {
            k.violation(
                API,
                "called from a DPC routine: it waits for that routine to return, that is, \
                 for itself",
            )
        });
        return;
    }
    let Some(target) = with_kernel(|k| k.timers.last_pending_ticket()) else {
        return;
    };
    block_until(&[Key::DpcDone], None, |k, _| {
        (!k.timers.pending_through(target)).then_some(())
    });
}

// ---------------------------------------------------------------------------------------
// Verifier checks at free and at unload
// ---------------------------------------------------------------------------------------

impl Kernel {
    /// Driver Verifier's check of a pool block the driver frees (bug check 0xC7
    /// TIMER_OR_DPC_INVALID): no timer in it may be in the timer table, no DPC in it may
    /// be queued, and no queued timer may have its DPC in it. Reported with `api`, the
    /// routine that freed the `size` bytes at `block`; every timer and DPC object that
    /// was in them is then forgotten (the queued ones as if the bug check had stopped
    /// them), so the model never touches the freed memory. Compares addresses only.
    pub(crate) fn check_freed_timers(&mut self, api: &'static str, block: usize, size: usize) {
        let inside = |addr: usize| addr >= block && addr < block + size;
        let mut found = Vec::new();
        for (&addr, t) in &self.timers.timers {
            if t.due.is_some() && inside(addr) {
                found.push(format!("timer {addr:#x} is still in the timer table"));
            } else if t.due.is_some() && t.dpc != 0 && inside(t.dpc) {
                found.push(format!(
                    "DPC {:#x} is the DPC of timer {addr:#x}, which is still in the timer table",
                    t.dpc
                ));
            }
        }
        for (&addr, d) in &self.timers.dpcs {
            if d.queued.is_some() && inside(addr) {
                found.push(format!("DPC {addr:#x} is still queued"));
            }
        }
        if !found.is_empty() {
            found.sort();
            self.violation(
                api,
                format!(
                    "pool block {block:#x} freed while {} (bug check 0xC7 \
                     TIMER_OR_DPC_INVALID: cancel the timer with KeCancelTimer, remove the DPC \
                     with KeRemoveQueueDpc or wait for it with KeFlushQueuedDpcs)",
                    found.join("; ")
                ),
            );
        }
        let timers: Vec<usize> = self
            .timers
            .timers
            .keys()
            .copied()
            .filter(|&a| inside(a))
            .collect();
        for addr in timers {
            self.timers.timers.remove(&addr);
            self.sync.forget_object(addr);
        }
        for t in self.timers.timers.values_mut() {
            if t.dpc != 0 && inside(t.dpc) {
                t.due = None;
            }
        }
        let dpcs: Vec<usize> = self
            .timers
            .dpcs
            .keys()
            .copied()
            .filter(|&a| inside(a))
            .collect();
        for addr in dpcs {
            self.timers.dequeue(addr);
            self.timers.dpcs.remove(&addr);
        }
        // A KeFlushQueuedDpcs waiting for a DPC just dropped has nothing left to wait for.
        self.wake(Key::DpcDone);
    }

    /// What Windows checks when a driver image unloads: no timer of the driver may be in
    /// the timer table, and no DPC of it queued or running (its routine is about to be
    /// unmapped): bug check 0xC7 TIMER_OR_DPC_INVALID, Driver Verifier's 0xCE
    /// DRIVER_UNLOADED_WITHOUT_CANCELLING_PENDING_OPERATIONS. Reported with `api` (the
    /// unload or failed DriverEntry); the timers are then cancelled and the DPCs removed,
    /// so nothing calls into the unloaded driver later.
    pub(crate) fn check_timers_at_unload(&mut self, api: &'static str) {
        let now = self.sync.clock.interrupt_time();
        let mut found: Vec<String> = self
            .timers
            .timers
            .iter()
            .filter_map(|(&addr, t)| {
                let due = t.due?;
                Some(format!(
                    "timer {addr:#x} still in the timer table (due in {} ms{})",
                    due.saturating_sub(now) / TICKS_PER_MS,
                    if t.period > 0 { ", periodic" } else { "" }
                ))
            })
            .collect();
        found.sort();
        for &dpc in &self.timers.queue {
            let routine = self.timers.dpcs.get(&dpc).map_or(0, |d| d.routine);
            found.push(format!("DPC {dpc:#x} still queued (routine {routine:#x})"));
        }
        if let Some(r) = &self.timers.running {
            found.push(format!(
                "DPC {:#x} still running (routine {:#x})",
                r.dpc, r.routine
            ));
        }
        if found.is_empty() {
            return;
        }
        self.violation(
            api,
            format!(
                "driver unloaded with pending timers or DPCs: {} (bug check 0xC7 \
                 TIMER_OR_DPC_INVALID / 0xCE DRIVER_UNLOADED_WITHOUT_CANCELLING_PENDING_OPERATIONS: \
                 KeCancelTimer each timer, then KeFlushQueuedDpcs, before unload returns)",
                found.join("; ")
            ),
        );
        for t in self.timers.timers.values_mut() {
            t.due = None;
        }
        let queued: Vec<usize> = self.timers.queue.iter().copied().collect();
        for dpc in queued {
            self.timers.dequeue(dpc);
        }
        self.wake(Key::DpcDone);
    }
}

impl Machine {
    /// How many timers are in the timer table and DPCs queued or running, for tests.
    pub fn pending_timers_and_dpcs(&self) -> (usize, usize) {
        with_kernel(|k| {
            let timers = k.timers.timers.values().filter(|t| t.due.is_some()).count();
            let dpcs = k.timers.queue.len() + usize::from(k.timers.running.is_some());
            (timers, dpcs)
        })
    }
}
