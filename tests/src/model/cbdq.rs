//! FltMgr's cancel-safe callback-data queues: FltCbdqInitialize, Insert, Remove,
//! RemoveNext, Enable, Disable.
//!
//! Owns: per queue (keyed by the driver's FLT_CALLBACK_DATA_QUEUE address) whether it
//! is enabled and which callback data sit in it, with their IO_CSQ_IRP_CONTEXT. The
//! driver's own list is the driver's: the model only calls its callbacks under its lock
//! callbacks, as IoCsq does, and runs the cancel path when an operation in a queue is
//! cancelled (RemoveIo, then CompleteCanceledIo, outside the lock).

use crate::model::fast::HashMap;

use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FLT_CALLBACK_DATA, FLT_CALLBACK_DATA_QUEUE, PFLT_CALLBACK_DATA_QUEUE_ACQUIRE,
    PFLT_CALLBACK_DATA_QUEUE_COMPLETE_CANCELED_IO, PFLT_CALLBACK_DATA_QUEUE_INSERT_IO,
    PFLT_CALLBACK_DATA_QUEUE_PEEK_NEXT_IO, PFLT_CALLBACK_DATA_QUEUE_RELEASE,
    PFLT_CALLBACK_DATA_QUEUE_REMOVE_IO, PFLT_INSTANCE,
};
use windows_sys::Wdk::System::SystemServices::IO_CSQ_IRP_CONTEXT;
use windows_sys::Win32::Foundation::{
    NTSTATUS, STATUS_FLT_CBDQ_DISABLED, STATUS_INVALID_PARAMETER, STATUS_SUCCESS,
};

use super::irql::{self, DISPATCH_LEVEL};
use super::with_kernel;

pub(crate) struct Queue {
    enabled: bool,
    /// The instance FltCbdqInitialize set it up for.
    instance: PFLT_INSTANCE,
    /// Callback data in the queue, with the IRP context they were inserted with.
    members: HashMap<usize, usize>,
}

#[derive(Default)]
pub(crate) struct Queues {
    pub(crate) queues: HashMap<usize, Queue>,
}

fn callbacks(
    cbdq: *mut FLT_CALLBACK_DATA_QUEUE,
) -> (
    PFLT_CALLBACK_DATA_QUEUE_ACQUIRE,
    PFLT_CALLBACK_DATA_QUEUE_RELEASE,
) {
    // SAFETY: an initialised queue in the driver's memory.
    let q = unsafe { &*cbdq };
    (q.Acquire, q.Release)
}

/// Runs `f` between the driver's Acquire and Release callbacks.
fn locked<R>(cbdq: *mut FLT_CALLBACK_DATA_QUEUE, f: impl FnOnce() -> R) -> R {
    let (acquire, release) = callbacks(cbdq);
    let mut level = irql::current();
    if let Some(acquire) = acquire {
        // SAFETY: the driver's lock callback for its own queue.
        unsafe { acquire(cbdq, &mut level) };
    }
    let r = f();
    if let Some(release) = release {
        // SAFETY: releases what acquire took, with the IRQL it returned.
        unsafe { release(cbdq, level) };
    }
    r
}

fn known(api: &'static str, cbdq: *mut FLT_CALLBACK_DATA_QUEUE) -> bool {
    with_kernel(|k| {
        if k.cbdq.queues.contains_key(&(cbdq as usize)) {
            true
        } else {
            k.violation(
                api,
                format!("{cbdq:p} was not set up with FltCbdqInitialize"),
            );
            false
        }
    })
}

/// FltCbdqInitialize.
///
/// # Safety
/// `cbdq` must be the driver's writable queue, alive until its instance is torn down.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn FltCbdqInitialize(
    instance: PFLT_INSTANCE,
    cbdq: *mut FLT_CALLBACK_DATA_QUEUE,
    insert: PFLT_CALLBACK_DATA_QUEUE_INSERT_IO,
    remove: PFLT_CALLBACK_DATA_QUEUE_REMOVE_IO,
    peek: PFLT_CALLBACK_DATA_QUEUE_PEEK_NEXT_IO,
    acquire: PFLT_CALLBACK_DATA_QUEUE_ACQUIRE,
    release: PFLT_CALLBACK_DATA_QUEUE_RELEASE,
    complete_canceled: PFLT_CALLBACK_DATA_QUEUE_COMPLETE_CANCELED_IO,
) -> NTSTATUS {
    irql::check("FltCbdqInitialize", DISPATCH_LEVEL);
    if cbdq.is_null()
        || insert.is_none()
        || remove.is_none()
        || peek.is_none()
        || acquire.is_none()
        || release.is_none()
        || complete_canceled.is_none()
    {
        return STATUS_INVALID_PARAMETER;
    }
    // SAFETY: the driver's queue, writable per the contract.
    let q = unsafe { &mut *cbdq };
    q.Instance = instance;
    q.InsertIo = insert;
    q.RemoveIo = remove;
    q.PeekNextIo = peek;
    q.Acquire = acquire;
    q.Release = release;
    q.CompleteCanceledIo = complete_canceled;
    with_kernel(|k| {
        k.cbdq.queues.insert(
            cbdq as usize,
            Queue {
                enabled: true,
                instance,
                members: HashMap::default(),
            },
        );
    });
    STATUS_SUCCESS
}

/// FltCbdqInsertIo: queues a callback data whose pre-operation will return
/// FLT_PREOP_PENDING.
///
/// # Safety
/// `cbdq` must be initialised; `context` NULL or the driver's IO_CSQ_IRP_CONTEXT.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn FltCbdqInsertIo(
    cbdq: *mut FLT_CALLBACK_DATA_QUEUE,
    cbd: *const FLT_CALLBACK_DATA,
    context: *const IO_CSQ_IRP_CONTEXT,
    insert_context: *const core::ffi::c_void,
) -> NTSTATUS {
    irql::check("FltCbdqInsertIo", DISPATCH_LEVEL);
    if !known("FltCbdqInsertIo", cbdq) {
        return STATUS_INVALID_PARAMETER;
    }
    let addr = cbd as usize;
    let state = with_kernel(|k| {
        let enabled = k
            .cbdq
            .queues
            .get(&(cbdq as usize))
            .is_some_and(|q| q.enabled);
        let op =
            k.io.ops
                .get(&addr)
                .map(|o| (o.kind, o.queued_in, o.cancelled));
        (enabled, op)
    });
    let (enabled, op) = state;
    let Some((kind, queued, cancelled)) = op else {
        with_kernel(|k| {
            k.violation(
                "FltCbdqInsertIo",
                format!("{cbd:p} is not the callback data of a live operation"),
            )
        });
        return STATUS_INVALID_PARAMETER;
    };
    if kind != super::io::Kind::Irp {
        with_kernel(|k| {
            k.violation(
                "FltCbdqInsertIo",
                "only IRP operations can be pended in a cancel-safe queue",
            )
        });
        return STATUS_INVALID_PARAMETER;
    }
    if queued.is_some() {
        with_kernel(|k| k.violation("FltCbdqInsertIo", "callback data inserted in a queue twice"));
        return STATUS_INVALID_PARAMETER;
    }
    if !enabled {
        return STATUS_FLT_CBDQ_DISABLED;
    }
    // SAFETY: an initialised queue.
    let insert = unsafe { (*cbdq).InsertIo };
    let status = locked(cbdq, || match insert {
        // SAFETY: the driver's insert callback under its lock.
        Some(insert) => unsafe { insert(cbdq, cbd, insert_context) },
        None => STATUS_INVALID_PARAMETER,
    });
    if status < 0 {
        return status;
    }
    with_kernel(|k| {
        if let Some(q) = k.cbdq.queues.get_mut(&(cbdq as usize)) {
            q.members.insert(addr, context as usize);
        }
        if let Some(op) = k.io.ops.get_mut(&addr) {
            op.queued_in = Some(cbdq as usize);
        }
    });
    if cancelled {
        // Cancelled before it was queued: IoCsq runs the cancel path at once.
        cancel_queued(cbdq as usize, addr);
    }
    STATUS_SUCCESS
}

/// Takes `cbd` out of the queue under the driver's lock; false if it was not there.
fn take(cbdq: *mut FLT_CALLBACK_DATA_QUEUE, cbd: usize) -> bool {
    let member = with_kernel(|k| {
        k.cbdq
            .queues
            .get(&(cbdq as usize))
            .is_some_and(|q| q.members.contains_key(&cbd))
    });
    if !member {
        return false;
    }
    // SAFETY: an initialised queue.
    let remove = unsafe { (*cbdq).RemoveIo };
    if let Some(remove) = remove {
        // SAFETY: the driver's remove callback, called with its lock held by the caller.
        unsafe { remove(cbdq, cbd as *const FLT_CALLBACK_DATA) };
    }
    with_kernel(|k| {
        if let Some(q) = k.cbdq.queues.get_mut(&(cbdq as usize)) {
            q.members.remove(&cbd);
        }
        if let Some(op) = k.io.ops.get_mut(&cbd) {
            op.queued_in = None;
        }
    });
    true
}

/// The cancel path of a queued operation: remove under the lock, then the driver's
/// CompleteCanceledIo outside it. True if the operation was still queued.
pub(crate) fn cancel_queued(queue: usize, cbd: usize) -> bool {
    let cbdq = queue as *mut FLT_CALLBACK_DATA_QUEUE;
    let removed = locked(cbdq, || take(cbdq, cbd));
    if removed {
        // SAFETY: an initialised queue.
        let complete = unsafe { (*cbdq).CompleteCanceledIo };
        if let Some(complete) = complete {
            // SAFETY: the driver's completion for a cancelled operation it no longer holds.
            irql::at(DISPATCH_LEVEL, || unsafe {
                complete(cbdq, cbd as *mut FLT_CALLBACK_DATA)
            });
        }
    }
    removed
}

/// FltCbdqRemoveIo: removes the operation inserted with `context`, unless it was
/// cancelled meanwhile.
///
/// # Safety
/// `cbdq` must be initialised.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn FltCbdqRemoveIo(
    cbdq: *mut FLT_CALLBACK_DATA_QUEUE,
    context: *const IO_CSQ_IRP_CONTEXT,
) -> *mut FLT_CALLBACK_DATA {
    irql::check("FltCbdqRemoveIo", DISPATCH_LEVEL);
    if !known("FltCbdqRemoveIo", cbdq) || context.is_null() {
        return std::ptr::null_mut();
    }
    let cbd = with_kernel(|k| {
        k.cbdq.queues.get(&(cbdq as usize)).and_then(|q| {
            q.members
                .iter()
                .find(|(_, c)| **c == context as usize)
                .map(|(d, _)| *d)
        })
    });
    let Some(cbd) = cbd else {
        return std::ptr::null_mut();
    };
    if locked(cbdq, || take(cbdq, cbd)) {
        cbd as *mut FLT_CALLBACK_DATA
    } else {
        std::ptr::null_mut()
    }
}

/// FltCbdqRemoveNextIo: the first operation PeekNextIo offers, removed.
///
/// # Safety
/// `cbdq` must be initialised.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn FltCbdqRemoveNextIo(
    cbdq: *mut FLT_CALLBACK_DATA_QUEUE,
    peek_context: *const core::ffi::c_void,
) -> *mut FLT_CALLBACK_DATA {
    irql::check("FltCbdqRemoveNextIo", DISPATCH_LEVEL);
    if !known("FltCbdqRemoveNextIo", cbdq) {
        return std::ptr::null_mut();
    }
    // SAFETY: an initialised queue.
    let peek = unsafe { (*cbdq).PeekNextIo };
    locked(cbdq, || {
        let Some(peek) = peek else {
            return std::ptr::null_mut();
        };
        // SAFETY: the driver's peek callback under its lock.
        let next = unsafe { peek(cbdq, std::ptr::null(), peek_context) };
        if next.is_null() {
            return std::ptr::null_mut();
        }
        if take(cbdq, next as usize) {
            next
        } else {
            with_kernel(|k| {
                k.violation(
                    "FltCbdqRemoveNextIo",
                    "PeekNextIo returned a callback data that is not in the queue",
                )
            });
            std::ptr::null_mut()
        }
    })
}

impl Queues {
    /// The instance's teardown is over (teardown.rs): each queue set up for it that still
    /// holds operations, with how many, for the report. Empty queues are forgotten: they
    /// live in the filter's memory (an instance context, usually), which may now be
    /// freed, so using one again is using a queue no FltCbdqInitialize set up. Queues
    /// still holding operations are kept, so that those can still be removed or
    /// cancelled.
    pub(crate) fn instance_gone(&mut self, instance: PFLT_INSTANCE) -> Vec<(usize, usize)> {
        self.queues
            .retain(|_, q| q.instance != instance || !q.members.is_empty());
        self.queues
            .iter()
            .filter(|(_, q)| q.instance == instance)
            .map(|(addr, q)| (*addr, q.members.len()))
            .collect()
    }
}

/// FltCbdqEnable.
#[unsafe(no_mangle)]
pub extern "system" fn FltCbdqEnable(cbdq: *mut FLT_CALLBACK_DATA_QUEUE) {
    irql::check("FltCbdqEnable", DISPATCH_LEVEL);
    with_kernel(|k| {
        if let Some(q) = k.cbdq.queues.get_mut(&(cbdq as usize)) {
            q.enabled = true;
        }
    });
}

/// FltCbdqDisable: later inserts fail with STATUS_FLT_CBDQ_DISABLED.
#[unsafe(no_mangle)]
pub extern "system" fn FltCbdqDisable(cbdq: *mut FLT_CALLBACK_DATA_QUEUE) {
    irql::check("FltCbdqDisable", DISPATCH_LEVEL);
    with_kernel(|k| {
        if let Some(q) = k.cbdq.queues.get_mut(&(cbdq as usize)) {
            q.enabled = false;
        }
    });
}
