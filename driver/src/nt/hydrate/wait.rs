//! Operations that cannot pend (section synchronisation, the provider's HYDRATE,
//! pinning) wait in the requesting thread on an event of their own, cancellably; never
//! in a system worker thread.

use super::*;

/// What a thread needs to fetch for a stream and wait for it.
pub(crate) struct Target<'a> {
    pub(crate) stream: &'a StreamContext,
    /// The file's normalized NT path.
    pub(crate) name: &'a [u16],
    pub(crate) requestor_pid: u32,
    pub(crate) requestor_image: &'a [u16],
    /// The operation whose cancellation ends the wait, or NULL (the waiting thread's
    /// termination still does).
    pub(crate) data: *const FLT_CALLBACK_DATA,
    /// The file object the operation came through (0 for the driver's own), whose
    /// cleanup ends the wait.
    pub(crate) file_object: usize,
}

/// Makes `range` present (a section being mapped, the provider's HYDRATE, pinning):
/// returns once it is on disk and recorded, or why it cannot be. Waits in the calling
/// thread.
pub(crate) fn ensure_range(target: &Target<'_>, range: Range) -> NTSTATUS {
    let Some(provider) = providers::for_path(target.name) else {
        return crate::nt::roots::no_provider_status(target.name);
    };
    loop {
        // Threads that wait here are the provider's own requests, a section being
        // mapped or a pin: no command line is read for them (the provider is told
        // UNKNOWN when it asked for one).
        let Some(asker) = Asker::new(
            target.requestor_pid,
            target.name,
            target.requestor_image,
            None,
        ) else {
            return STATUS_CLOUD_FILE_INSUFFICIENT_RESOURCES;
        };
        let waiter = Waiter {
            id: 0,
            stream: StreamHold::new(target.stream),
            file_object: target.file_object,
            required: range,
            asker,
            kind: WaitKind::Thread(ThreadWait {
                event: Event::uninit(),
                outcome: None,
            }),
        };
        let Some(node) = Node::new(waiter, TAG_WAITER) else {
            return STATUS_CLOUD_FILE_INSUFFICIENT_RESOURCES;
        };
        if let WaitKind::Thread(t) = &node.value.kind {
            // At its final address, in the node.
            t.event.init();
        }
        let linked = match arm(node, &provider, PRIORITY_READ) {
            Armed::Now(node, status) => {
                drop(node);
                return status;
            }
            Armed::Failed(status) => return status,
            Armed::Linked(linked) => linked,
        };
        flush(target.stream, &provider);
        match wait_thread(linked.id, linked.event, target.data) {
            Outcome::Done(status) => return status.raw(),
            Outcome::Stalled => continue,
        }
    }
}

/// Waits for the thread waiter `id` (linked by this thread, with `event`) to be
/// decided, then unlinks it.
fn wait_thread(
    id: u64,
    event: *const core::ffi::c_void,
    data: *const FLT_CALLBACK_DATA,
) -> Outcome {
    loop {
        // SAFETY: the waiter's initialised event, alive until this thread unlinks it below;
        // PASSIVE_LEVEL; no timeout (the alarm ends fetches that take too long); the
        // callback data (if any) is the operation this thread serves.
        let status = unsafe { FltCancellableWaitForSingleObject(event, core::ptr::null(), data) };
        let gave_up = matches!(
            status,
            STATUS_CANCELLED | STATUS_THREAD_IS_TERMINATING | STATUS_USER_APC | STATUS_ALERTED
        );
        let mut after = After::new();
        let outcome = TABLE.with(|t| {
            let w = t.waiters.iter().find(|w| w.id == id)?;
            let decided = match &w.kind {
                WaitKind::Thread(tw) => tw.outcome,
                WaitKind::Read(_) => None,
            };
            let outcome = match decided {
                Some(outcome) => outcome,
                None if gave_up => Outcome::Done(NtStatus::from_raw(STATUS_CANCELLED)),
                None => return None,
            };
            let node = t.waiters.take_first(|w| w.id == id)?;
            if outcome == Outcome::Done(NtStatus::from_raw(STATUS_CANCELLED)) {
                t.abandon(node.value.stream.key(), node.value.required, id, &mut after);
            }
            after.dispose(node);
            Some(outcome)
        });
        after.run();
        if let Some(outcome) = outcome {
            return outcome;
        }
    }
}

impl After {
    /// A waiter node to free once the lock is released (its references are dropped
    /// then).
    fn dispose(&mut self, node: PoolBox<Node<Waiter>>) {
        self.spent.push(node);
    }
}
