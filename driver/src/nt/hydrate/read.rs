//! Pended reads: an IRP read of missing data waits in its instance's cancel-safe queue,
//! holding no thread, and is completed by whoever settles it (a transfer, a failure, a
//! timeout, a disconnect, its handle's cleanup, its cancellation, the instance's
//! teardown). PROGRESSIVE background fills start here once the read may go on.

use super::*;

/// How a read that [`pend_read`] was asked about goes on.
pub(crate) enum Pend {
    /// Its data is present: on to the file system.
    Pass,
    /// Fail it with this status.
    Complete(NTSTATUS),
    /// Pended: it is completed from elsewhere; return FLT_PREOP_PENDING.
    Pended,
}

/// What a pended read needs: its operation, its instance and its plan.
pub(crate) struct ReadTarget {
    pub(crate) data: *mut FLT_CALLBACK_DATA,
    /// The instance context; the read keeps the reference.
    pub(crate) instance: InstanceRef,
    /// The instance the read came through.
    pub(crate) instance_handle: PFLT_INSTANCE,
    pub(crate) file_object: usize,
    pub(crate) plan: Plan,
    /// Served by the driver from disk once present (`nt::direct`), not passed down.
    pub(crate) serve: bool,
    /// An edit (and whether its open needs the whole file) rather than a read.
    pub(crate) edit: Option<(Edit, bool)>,
}

/// Pends an IRP read of missing data of `stream` until the provider delivers it, per
/// `target.plan`. Called from the pre-read at PASSIVE_LEVEL.
pub(crate) fn pend_read(
    stream: &StreamContext,
    provider: &ProviderRef,
    target: ReadTarget,
    asker: Asker,
) -> Pend {
    let instance = target.instance;
    let waiter = Waiter {
        id: 0,
        stream: StreamHold::new(stream),
        file_object: target.file_object,
        required: target.plan.required,
        asker,
        kind: WaitKind::Read(PendedRead {
            data: target.data,
            instance,
            // SAFETY: plain data; FltCbdqInsertIo initialises it.
            csq: unsafe { core::mem::zeroed() },
            state: ReadState::Arming(None),
            background: target.plan.background,
            instance_handle: target.instance_handle,
            serve: target.serve,
            edit: target.edit,
        }),
    };
    let Some(node) = Node::new(waiter, TAG_WAITER) else {
        return Pend::Complete(STATUS_CLOUD_FILE_INSUFFICIENT_RESOURCES);
    };
    match arm(node, provider, PRIORITY_READ) {
        Armed::Now(node, status) => {
            if nt_success(status)
                && let WaitKind::Read(r) = &node.value.kind
                && let Some(background) = r.background
            {
                start_background(&node.value, provider, background);
            }
            drop(node);
            if nt_success(status) {
                Pend::Pass
            } else {
                Pend::Complete(status)
            }
        }
        Armed::Linked(linked) => {
            // SAFETY: an Arming read, not yet queued.
            let stream = unsafe { linked.stream() };
            flush(stream, provider);
            queue(linked);
            Pend::Pended
        }
        Armed::Failed(status) => Pend::Complete(status),
    }
}

/// Puts the read just linked in its instance's cancel-safe queue; if it was decided
/// meanwhile, takes it back out and concludes it.
pub(super) fn queue(linked: Linked) {
    let Linked {
        id,
        data,
        queue,
        csq,
        ..
    } = linked;
    // SAFETY: the pended read's live callback data (completed only once its waiter is
    // settled, which needs it queued or this thread).
    let d = unsafe { &mut *data };
    // SAFETY: QueueContext is the queue owner's while the data is queued (the union's
    // other member, FilterContext, is not used): the cancel path finds the waiter by id.
    unsafe { d.Anonymous.Anonymous.QueueContext[0] = id as *mut core::ffi::c_void };
    // SAFETY: the instance's initialised queue (the waiter holds the instance context);
    // an IRP operation the pre-read returns FLT_PREOP_PENDING for; the IRP context lives
    // in the waiter's node, which nobody frees while it is Arming. Not under the table's
    // lock: a read already cancelled runs the cancel path (which takes it) at once.
    let status = unsafe { FltCbdqInsertIo(queue, data, csq, core::ptr::null()) };
    let mut after = After::new();
    let concluded = TABLE.with(|t| {
        // The cancel path may have unlinked it during the insert: look it up by id.
        let w = t.waiters.iter_mut().find(|w| w.id == id)?;
        let WaitKind::Read(r) = &mut w.kind else {
            return None;
        };
        if !nt_success(status) {
            // The queue is disabled: the instance is being torn down.
            let stream = w.stream.key();
            let required = w.required;
            let node = t.waiters.take_first(|w| w.id == id)?;
            t.abandon(stream, required, id, &mut after);
            return Some((
                node,
                Outcome::Done(NtStatus::from_raw(STATUS_CLOUD_FILE_REQUEST_ABORTED)),
            ));
        }
        match r.state {
            ReadState::Arming(None) => {
                r.state = ReadState::Queued;
                None
            }
            ReadState::Arming(Some(outcome)) => {
                r.state = ReadState::Queued;
                decide(w, outcome);
                after.take_settled(&mut t.waiters);
                None
            }
            _ => None,
        }
    });
    after.run();
    if let Some((node, outcome)) = concluded {
        conclude(node, outcome);
    }
}

/// Completes a settled read that is out of its queue and unlinked: on to the file system
/// (after starting its background fill), failed, or armed again if it stalled.
pub(super) fn conclude(mut node: PoolBox<Node<Waiter>>, mut outcome: Outcome) {
    loop {
        match outcome {
            Outcome::Done(status) if status.is_success() && edit_of(&node).is_some() => {
                let WaitKind::Read(r) = &node.value.kind else {
                    return;
                };
                let data = r.data;
                let Some((edit, whole)) = r.edit else { return };
                match begin_edit(node.value.stream.get(), edit, whole) {
                    Begin::Go(id) => {
                        drop(node);
                        // SAFETY: an operation the pre-operation pended, completed once
                        // (out of its queue, its waiter gone); the context is the edit's
                        // id, which its post-operation reads back.
                        unsafe {
                            FltCompletePendedPreOperation(
                                data,
                                FLT_PREOP_SUCCESS_WITH_CALLBACK,
                                id as usize as *const core::ffi::c_void,
                            )
                        };
                        return;
                    }
                    Begin::Fail(status) => {
                        drop(node);
                        complete_pended(data, status);
                        return;
                    }
                    Begin::Need(range) => {
                        node.value.required = range;
                        outcome = Outcome::Stalled;
                    }
                }
            }
            Outcome::Done(status) => {
                let WaitKind::Read(r) = &node.value.kind else {
                    return;
                };
                let data = r.data;
                if status.is_success()
                    && let Some(background) = r.background
                    && let Some(provider) = providers::for_path(node.value.asker.name.get())
                {
                    start_background(&node.value, &provider, background);
                }
                let served = (status.is_success() && r.serve).then(|| {
                    let size = TABLE
                        .with(|t| node.value.stream.get().with_state(&t.held, |s| s.file_size));
                    let sector = r.instance.sector_size();
                    crate::nt::direct::serve(data, r.instance_handle, size, sector)
                });
                // Freed first: completing may let the filter unload.
                drop(node);
                match served {
                    Some((status, n)) => complete_served(data, status, n),
                    None => complete_pended(data, status.raw()),
                }
                return;
            }
            Outcome::Stalled => {
                let Some(provider) = providers::for_path(node.value.asker.name.get()) else {
                    outcome = Outcome::Done(NtStatus::from_raw(
                        crate::nt::roots::no_provider_status(node.value.asker.name.get()),
                    ));
                    continue;
                };
                let WaitKind::Read(r) = &mut node.value.kind else {
                    return;
                };
                r.state = ReadState::Arming(None);
                let data = r.data;
                match arm(node, &provider, PRIORITY_READ) {
                    Armed::Now(back, status) => {
                        node = back;
                        outcome = Outcome::Done(NtStatus::from_raw(status));
                    }
                    Armed::Linked(linked) => {
                        // SAFETY: an Arming read, not yet queued.
                        let stream = unsafe { linked.stream() };
                        flush_later(stream, &provider);
                        queue(linked);
                        return;
                    }
                    Armed::Failed(status) => {
                        complete_pended(data, status);
                        return;
                    }
                }
            }
        }
    }
}

/// The edit a pended operation is, if it is one.
fn edit_of(node: &Node<Waiter>) -> Option<(Edit, bool)> {
    match &node.value.kind {
        WaitKind::Read(r) => r.edit,
        WaitKind::Thread(_) => None,
    }
}

/// Completes a pended read the driver served itself, with `status` and `n` bytes.
fn complete_served(data: *mut FLT_CALLBACK_DATA, status: NTSTATUS, n: usize) {
    // SAFETY: the pended operation's callback data stays valid until it is completed.
    if let Some(d) = unsafe { data.as_mut() } {
        d.IoStatus = IO_STATUS_BLOCK {
            Anonymous: IO_STATUS_BLOCK_0 { Status: status },
            Information: n,
        };
    }
    // SAFETY: an operation the pre-read pended, completed once (out of its queue, its
    // waiter gone).
    unsafe { FltCompletePendedPreOperation(data, FLT_PREOP_COMPLETE, core::ptr::null()) };
}

/// Completes a pended pre-operation: on to the file system, or failed with `status`.
pub(crate) fn complete_pended(data: *mut FLT_CALLBACK_DATA, status: NTSTATUS) {
    if nt_success(status) {
        // SAFETY: an operation the pre-read pended, completed once (it is out of its
        // queue and its waiter is gone).
        unsafe {
            FltCompletePendedPreOperation(data, FLT_PREOP_SUCCESS_NO_CALLBACK, core::ptr::null())
        };
        return;
    }
    // SAFETY: the pended operation's callback data stays valid until it is completed.
    if let Some(d) = unsafe { data.as_mut() } {
        d.IoStatus = IO_STATUS_BLOCK {
            Anonymous: IO_STATUS_BLOCK_0 { Status: status },
            Information: 0,
        };
    }
    // SAFETY: as above.
    unsafe { FltCompletePendedPreOperation(data, FLT_PREOP_COMPLETE, core::ptr::null()) };
}

/// CompleteCanceledIo of the instances' queues: a pended read was cancelled (its
/// thread's I/O cancelled, CancelIoEx). Its waiter goes, its fetches too unless another
/// operation waits on the stream, and it completes with STATUS_CANCELLED.
///
/// # Safety
/// Called by FltMgr at IRQL <= DISPATCH_LEVEL with a queue's callback data, no queue
/// lock held.
pub(crate) unsafe extern "system" fn read_cancelled(
    _queue: *mut FLT_CALLBACK_DATA_QUEUE,
    data: *mut FLT_CALLBACK_DATA,
) {
    // SAFETY: the cancelled callback data, ours to complete.
    let d = unsafe { &*data };
    // SAFETY: `queue` stored the id there before inserting it.
    let id = unsafe { d.Anonymous.Anonymous.QueueContext[0] } as u64;
    let mut after = After::new();
    // Cancelling fetches means messages to the provider and closing the writer, which
    // need PASSIVE_LEVEL; a cancel routine may run higher, and then leaves the fetches
    // to finish or time out on their own.
    // SAFETY: no preconditions.
    let passive = !unsafe { KeAreAllApcsDisabled() };
    after.defer_cancels = true;
    let node = TABLE.with(|t| {
        let node = t.waiters.take_first(|w| w.id == id)?;
        if passive {
            t.abandon(node.value.stream.key(), node.value.required, id, &mut after);
        }
        Some(node)
    });
    drop(node);
    complete_pended(data, STATUS_CANCELLED);
    after.run();
}

/// PROGRESSIVE: asks for the rest of the file after the read completed; nobody waits.
/// Sent by the postman (see [`flush_later`]): this runs where a read is settled, which
/// may be the provider's own TRANSFER_DATA call.
pub(super) fn start_background(waiter: &Waiter, provider: &ProviderRef, whole: Range) {
    let stream = waiter.stream.get();
    let asked = TABLE.with(|t| {
        // As in `arm`: a provider going away refuses new requests.
        if provider.is_gone() {
            return false;
        }
        // A fill that cannot be asked for in full is asked for in part; nobody waits.
        let _ = t.ask(stream, whole, provider, &waiter.asker, PRIORITY_BACKGROUND);
        true
    });
    if asked {
        flush_later(stream, provider);
    }
}
