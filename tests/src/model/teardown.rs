//! Instance teardown: how FltMgr takes a filter's instance off a volume, for a manual
//! detach (FltDetachVolume, and `fltmc detach` through FilterDetach:
//! [`Machine::detach`]) and for each instance of a filter FltUnregisterFilter
//! unregisters.
//!
//! Owns: the teardown sequence and its bound. Does not own: instances and contexts
//! (`fltmgr.rs`), operations and the rundown protection they hold on an instance
//! (`io.rs`), cancel-safe queues (`cbdq.rs`).
//!
//! The sequence, as the FLT_REGISTRATION, PFLT_INSTANCE_QUERY_TEARDOWN_CALLBACK,
//! PFLT_INSTANCE_TEARDOWN_CALLBACK, FltDetachVolume and FltObjectReference pages
//! describe it:
//! 1. A manual detach asks InstanceQueryTeardownCallback first (PASSIVE_LEVEL): a filter
//!    that registered none cannot be detached manually, and an error or warning status
//!    keeps the instance attached. Unloading does not ask.
//! 2. The instance stops taking new work: an operation that starts afterwards passes it
//!    by (io.rs refuses it the instance's rundown protection), and a new rundown
//!    reference (FltGetVolumeInstanceFromName, FltQueueGenericWorkItem on the instance)
//!    fails with STATUS_FLT_DELETING_OBJECT, as a second detach does.
//! 3. InstanceTeardownStartCallback (PASSIVE_LEVEL), with the reason: the filter must
//!    complete the operations it pended and start nothing new.
//! 4. FltMgr waits for every operation that holds the instance: one in its callbacks,
//!    pended by it (a pre-operation that returned FLT_PREOP_PENDING, in a cancel-safe
//!    queue or not; a post-operation that returned FLT_POSTOP_MORE_PROCESSING_REQUIRED),
//!    or still owing it a post-operation.
//! 5. InstanceTeardownCompleteCallback (PASSIVE_LEVEL). A cancel-safe queue of the
//!    instance that still holds an operation now is reported: nobody will complete it.
//! 6. The contexts set through the instance (stream, stream-handle and its instance
//!    context) are deleted: FltMgr drops its own reference on each.
//! 7. FltMgr waits for the rundown references on the instance to be dropped (those
//!    FltGetVolumeInstanceFromName gave, until FltObjectDereference; a generic work item
//!    queued with the instance as its FltObject, until its routine returns), then frees
//!    it: the volume is no longer filtered.
//!
//! Where Windows waits forever (4 and 7: an operation the filter pended and never
//! completes, a reference never dropped), the model waits [`DEFAULT_WAIT_LIMIT`] of real
//! time ([`Machine::set_teardown_wait_limit`]), reports the hang it would be and goes on,
//! so that a test run does not hang.
//!
//! Simplified: FltMgr also drains an operation that owes the instance a post-operation
//! while it is still below the instance (in the file system): it calls the
//! post-operation early, with FLTFL_POST_OPERATION_DRAINING and a copy of the callback
//! data. The model's file system completes every operation synchronously on the issuing
//! thread, so the model waits for it to come back up and delivers its post-operation
//! normally: on Windows, the interleaving where the completion wins its race with the
//! drain. No post-operation is called with FLTFL_POST_OPERATION_DRAINING here.
//! Not modelled: volume dismount (FLTFL_INSTANCE_TEARDOWN_VOLUME_DISMOUNT), attaching
//! again (FltAttachVolume), named instances, and the context routines' answers while an
//! instance is being torn down.

use std::time::{Duration, Instant};

use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FLTFL_INSTANCE_TEARDOWN_MANUAL, PFLT_FILTER, PFLT_INSTANCE, PFLT_VOLUME,
};
use windows_sys::Win32::Foundation::{
    NTSTATUS, STATUS_FLT_DELETING_OBJECT, STATUS_FLT_DO_NOT_DETACH, STATUS_FLT_FILTER_NOT_FOUND,
    STATUS_FLT_INSTANCE_NOT_FOUND, STATUS_FLT_VOLUME_NOT_FOUND, STATUS_INVALID_PARAMETER,
    STATUS_NOT_IMPLEMENTED, STATUS_SUCCESS, UNICODE_STRING,
};

use super::fltmgr::{finish_release, related};
use super::io::{self, Stage};
use super::irql::{self, APC_LEVEL, PASSIVE_LEVEL};
use super::sync::{Key, block_until};
use super::{Kernel, Machine, with_kernel};

/// How long, in real time, a teardown waits for what Windows would wait for forever (the
/// operations holding the instance, its rundown references) before it reports the hang.
/// A filter that completes its pended operations in InstanceTeardownStartCallback lets
/// go within milliseconds; ten seconds leaves room for a loaded test machine. Real time,
/// not the machine clock: a test moving the clock (`Machine::advance_clock`) to fire a
/// filter's timeouts must not be taken for a hang.
pub const DEFAULT_WAIT_LIMIT: Duration = Duration::from_secs(10);

/// FltDetachVolume: detaches `filter`'s instance from `volume` and tears it down; returns
/// once the teardown is over.
///
/// The model's filters have one unnamed instance per volume (as FltGetVolumeInstanceFromName
/// has it): an instance name answers STATUS_NOT_IMPLEMENTED, so that a use shows up.
#[unsafe(no_mangle)]
pub extern "system" fn FltDetachVolume(
    filter: PFLT_FILTER,
    volume: PFLT_VOLUME,
    instance_name: *const UNICODE_STRING,
) -> NTSTATUS {
    irql::check("FltDetachVolume", APC_LEVEL);
    let known = with_kernel(|k| {
        k.live_filter("FltDetachVolume", filter) && k.volumes.iter().any(|v| v.handle == volume)
    });
    if !known {
        return STATUS_INVALID_PARAMETER;
    }
    if !instance_name.is_null() {
        return STATUS_NOT_IMPLEMENTED;
    }
    detach("FltDetachVolume", filter, volume)
}

impl Machine {
    /// Detaches the loaded filter from the volume whose device name is `device_name`
    /// (`\Device\HarddiskVolume1`), as `fltmc detach <filter> <volume>` does through
    /// FilterDetach: the same manual detach as FltDetachVolume, returning once the
    /// instance is torn down. STATUS_FLT_FILTER_NOT_FOUND with no filter loaded,
    /// STATUS_FLT_VOLUME_NOT_FOUND for no such volume, STATUS_FLT_INSTANCE_NOT_FOUND when
    /// the filter is not attached to it, STATUS_FLT_DO_NOT_DETACH when the filter refuses
    /// (or registered no InstanceQueryTeardownCallback).
    pub fn detach(&self, device_name: &str) -> NTSTATUS {
        let found = with_kernel(|k| {
            let filter = k
                .filters
                .iter()
                .find(|(_, f)| !f.is_unregistered())
                .map(|(h, _)| *h);
            let volume = k
                .volumes
                .iter()
                .find(|v| v.config.device_name.eq_ignore_ascii_case(device_name))
                .map(|v| v.handle);
            (filter, volume)
        });
        match found {
            (None, _) => STATUS_FLT_FILTER_NOT_FOUND,
            (_, None) => STATUS_FLT_VOLUME_NOT_FOUND,
            (Some(filter), Some(volume)) => {
                irql::at(PASSIVE_LEVEL, || detach("FilterDetach", filter, volume))
            }
        }
    }

    /// How long an instance teardown waits for the operations holding the instance, and
    /// for its rundown references, before it reports the hang ([`DEFAULT_WAIT_LIMIT`]
    /// unless set). A shorter limit makes a test of that report quick.
    pub fn set_teardown_wait_limit(&self, limit: Duration) {
        with_kernel(|k| k.teardown_limit = limit);
    }
}

/// A manual detach: InstanceQueryTeardownCallback, then the teardown.
fn detach(api: &'static str, filter: PFLT_FILTER, volume: PFLT_VOLUME) -> NTSTATUS {
    let found = with_kernel(|k| {
        let f = k.filters.get(&filter)?;
        let i = f.instances.iter().find(|i| i.volume == volume)?;
        Some((i.handle, i.tearing_down, f.query_teardown))
    });
    let Some((instance, tearing_down, query)) = found else {
        return STATUS_FLT_INSTANCE_NOT_FOUND;
    };
    if tearing_down {
        return STATUS_FLT_DELETING_OBJECT;
    }
    // "If the minifilter driver does not define an InstanceQueryTeardownCallback routine,
    // its instances cannot be detached manually."
    let Some(query) = query else {
        return STATUS_FLT_DO_NOT_DETACH;
    };
    let objects = related(filter, volume, instance);
    // SAFETY: the filter's InstanceQueryTeardownCallback, with related objects that live
    // across the call, at PASSIVE_LEVEL; no flags are defined.
    let status = irql::at(PASSIVE_LEVEL, || unsafe { query(&objects, 0) });
    // Errors and warnings (both negative) keep the instance attached.
    if status < 0 {
        return status;
    }
    if teardown(api, filter, instance, FLTFL_INSTANCE_TEARDOWN_MANUAL) {
        STATUS_SUCCESS
    } else {
        // Another detach, or the unload, began meanwhile.
        STATUS_FLT_DELETING_OBJECT
    }
}

/// Tears down `filter`'s `instance` for `reason` (FLT_INSTANCE_TEARDOWN_FLAGS), the steps
/// of the module comment from 2 on, and returns once it is freed; `api` names the caller
/// in reports. False, having done nothing, if its teardown had already begun.
pub(crate) fn teardown(
    api: &'static str,
    filter: PFLT_FILTER,
    instance: PFLT_INSTANCE,
    reason: u32,
) -> bool {
    let plan = with_kernel(|k| {
        let limit = k.teardown_limit;
        let f = k.filters.get_mut(&filter)?;
        let (start, complete) = (f.teardown_start, f.teardown_complete);
        let i = f.instances.iter_mut().find(|i| i.handle == instance)?;
        if i.tearing_down {
            return None;
        }
        i.tearing_down = true;
        Some((i.volume, start, complete, limit))
    });
    let Some((volume, start, complete, limit)) = plan else {
        return false;
    };
    let objects = related(filter, volume, instance);
    if let Some(start) = start {
        // SAFETY: the filter's InstanceTeardownStartCallback, once per instance, with
        // related objects that live across the call, at PASSIVE_LEVEL.
        irql::at(PASSIVE_LEVEL, || unsafe { start(&objects, reason) });
    }
    let holding = wait_for_none(instance, limit, |k| io::holding(k, instance));
    if holding > 0 {
        with_kernel(|k| report_held(k, api, instance, holding, limit, start.is_some()));
    }
    if let Some(complete) = complete {
        // SAFETY: the filter's InstanceTeardownCompleteCallback, once, after the start
        // callback and the wait, at PASSIVE_LEVEL.
        irql::at(PASSIVE_LEVEL, || unsafe { complete(&objects, reason) });
    }
    with_kernel(|k| {
        for (queue, members) in k.cbdq.instance_gone(instance) {
            k.violation(
                api,
                format!(
                    "the cancel-safe queue at {queue:#x} of instance {instance:#x} still holds \
                     {members} operation(s) after InstanceTeardownCompleteCallback: nothing \
                     will ever complete them (InstanceTeardownStartCallback must remove and \
                     complete what the filter queued)"
                ),
            );
        }
    });
    delete_contexts(api, instance);
    let references = wait_for_none(instance, limit, |k| {
        k.object_refs.get(&instance).map_or(0, |(_, n)| *n) + k.work.holding_instance(instance)
    });
    with_kernel(|k| {
        if references > 0 {
            k.violation(
                api,
                format!(
                    "{references} rundown reference(s) on instance {instance:#x} still held \
                     after {limit:?} (FltGetVolumeInstanceFromName without \
                     FltObjectDereference, or a generic work item queued on it that never \
                     ran to its end): FltMgr never frees the instance, the teardown hangs"
                ),
            );
        }
        if let Some(f) = k.filters.get_mut(&filter) {
            f.instances.retain(|i| i.handle != instance);
        }
        k.wake(Key::Instance(instance));
    });
    true
}

/// Waits until the teardown of `instance`, begun by someone else, has freed it.
pub(crate) fn wait_removed(filter: PFLT_FILTER, instance: PFLT_INSTANCE) {
    block_until(&[Key::Instance(instance)], None, |k, _| {
        let attached = k
            .filters
            .get(&filter)
            .is_some_and(|f| f.instances.iter().any(|i| i.handle == instance));
        (!attached).then_some(())
    });
}

/// Sleeps until `count` is zero, woken by what lets go of `instance`, for at most `limit`
/// of real time; returns the count it ended with.
fn wait_for_none(
    instance: PFLT_INSTANCE,
    limit: Duration,
    count: impl Fn(&Kernel) -> usize,
) -> usize {
    let started = Instant::now();
    loop {
        let left = limit.saturating_sub(started.elapsed());
        let left = u64::try_from(left.as_nanos() / 100).unwrap_or(u64::MAX);
        let deadline = with_kernel(|k| k.sync.clock.interrupt_time().saturating_add(left));
        let n = block_until(&[Key::Instance(instance)], Some(deadline), |k, expired| {
            let n = count(k);
            (n == 0 || expired).then_some(n)
        });
        // The machine clock runs at least as fast as real time, so the deadline passes
        // no later than the limit; when a test moved the clock past it, wait on.
        if n == 0 || started.elapsed() >= limit {
            return n;
        }
    }
}

/// The hang of step 4, with what the operations are doing.
fn report_held(
    k: &mut Kernel,
    api: &'static str,
    instance: PFLT_INSTANCE,
    holding: usize,
    limit: Duration,
    has_start: bool,
) {
    let held = || k.io.ops.values().filter(|o| o.held.contains(&instance));
    let pended = held()
        .filter(|o| matches!(o.stage, Stage::PrePended | Stage::PostPended))
        .count();
    let queued = held().filter(|o| o.queued_in.is_some()).count();
    let advice = if has_start {
        "InstanceTeardownStartCallback must complete every operation the filter pended"
    } else {
        "the filter registered no InstanceTeardownStartCallback, where it must complete \
         every operation it pended"
    };
    k.violation(
        api,
        format!(
            "{holding} operation(s) still hold instance {instance:#x} after {limit:?} of \
             teardown ({pended} pended by the filter, {queued} in a cancel-safe queue): \
             FltMgr waits for them forever, the teardown hangs; {advice}"
        ),
    );
}

/// Step 6: unlinks every context set through `instance` (stream-handle and stream
/// contexts, then its instance context) and drops FltMgr's reference on each, in one step
/// under the kernel lock, so that a file closing meanwhile on another thread, which
/// unlinks its own, is no race; the cleanup callbacks of those whose last reference that
/// was run afterwards.
fn delete_contexts(api: &'static str, instance: PFLT_INSTANCE) {
    let released = with_kernel(|k| {
        let mut attached = Vec::new();
        let mut unlink = |list: &mut Vec<(PFLT_INSTANCE, usize)>| {
            list.retain(|&(i, c)| {
                if i == instance {
                    attached.push(c);
                }
                i != instance
            });
        };
        for f in k.io.files.values_mut() {
            unlink(&mut f.handle_contexts);
        }
        for s in k.io.streams.values_mut() {
            unlink(&mut s.contexts);
        }
        for i in k.filters.values_mut().flat_map(|f| f.instances.iter_mut()) {
            if i.handle == instance {
                attached.extend(i.context.take());
            }
        }
        attached
            .into_iter()
            .filter_map(|c| k.release(api, c).map(|cleanup| (c, cleanup)))
            .collect::<Vec<_>>()
    });
    for (context, cleanup) in released {
        finish_release(context, cleanup);
    }
}
