//! Hydration: fetching a placeholder's missing data from its provider, and the I/O that
//! waits for it.
//!
//! Owns the list of outstanding fetches and the list of waiters, both allocated per
//! element (no driver-wide cap: a storm of a thousand readers costs a thousand small
//! allocations, and an allocation failure fails only the operation that needed it).
//!
//! - A read of missing data is *pended* ([`pend_read`]): it asks the provider for the
//!   parts nobody has asked for yet, sits in its instance's cancel-safe queue, and returns
//!   `FLT_PREOP_PENDING`. No thread waits for it. Whoever settles it completes it: the
//!   transfer that brings its data, the failure or timeout of a fetch it needs, the
//!   provider's disconnect, its handle's cleanup, its cancellation, or the instance's
//!   teardown.
//! - Operations that cannot pend (section synchronisation, the provider's own HYDRATE,
//!   pinning) wait in [`ensure_range`] on an event of their own, in the requesting
//!   thread (never a system worker), cancellably.
//! - Timeouts are a kernel timer ([`Alarm`]) set for the earliest deadline; its DPC queues
//!   a work item that fails the expired fetches. Nothing polls.
//!
//! Transfers ([`transfer`]) write the data non-cached through the driver's own handle,
//! record the range in the reparse data, and only then settle the waiters. The stream's
//! `present` set is what the reparse data on disk records (a range is added once a
//! snapshot holding it is written; dehydration removes one before its write), so a
//! waiter that finds its range present never runs ahead of the record. Snapshots of one
//! stream are written one at a time ([`persist`]): each is taken when its writer's turn
//! comes, so a write never replaces a newer record with an older one.
//!
//! Submodules: [`read`] the pended reads, [`wait`] the waiting threads, [`record`] the
//! transfers and the reparse-data record, [`asker`] what a fetch says about who asked.
//!
//! Lock order: the fetch table's lock, then a cancel-safe queue's lock (FltCbdqRemoveIo
//! under the table's lock). The cancel path (`read_cancelled`) runs with no queue lock
//! held and takes the table's lock. Nothing waits or does I/O under either; what must
//! happen after the lock is returned as data ([`After`]).

use core::ptr::NonNull;

use cloudflt_proto::ByteRange as WireRange;
use cloudflt_proto::connect::ConnectFlags;
use cloudflt_proto::msg::{CancelFetch, CancelReason, FetchData, FetchFailed, RequestFlags};
use cloudflt_proto::placeholder::RANGE_SIZE;
use cloudflt_proto::registration::HydrationModifiers;
use cloudflt_proto::{PlaceholderFlags, RangeList, Utf16};
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FLT_CALLBACK_DATA, FLT_CALLBACK_DATA_QUEUE, FLT_PREOP_COMPLETE, FLT_PREOP_SUCCESS_NO_CALLBACK,
    FLT_PREOP_SUCCESS_WITH_CALLBACK, FltCancellableWaitForSingleObject, FltCbdqInsertIo,
    FltCbdqRemoveIo, FltCompletePendedPreOperation, FltReferenceContext, FltReleaseContext,
    PFLT_INSTANCE,
};
use windows_sys::Wdk::System::SystemServices::{
    Executive, IO_CSQ_IRP_CONTEXT, KeAreAllApcsDisabled, KeWaitForSingleObject, KernelMode,
};
use windows_sys::Win32::Foundation::{
    NTSTATUS, STATUS_ALERTED, STATUS_CANCELLED, STATUS_CLOUD_FILE_IN_USE,
    STATUS_CLOUD_FILE_INSUFFICIENT_RESOURCES, STATUS_CLOUD_FILE_INVALID_REQUEST,
    STATUS_CLOUD_FILE_METADATA_CORRUPT, STATUS_CLOUD_FILE_NOT_IN_SYNC,
    STATUS_CLOUD_FILE_PROVIDER_NOT_RUNNING, STATUS_CLOUD_FILE_PROVIDER_TERMINATED,
    STATUS_CLOUD_FILE_REQUEST_ABORTED, STATUS_CLOUD_FILE_REQUEST_CANCELED,
    STATUS_CLOUD_FILE_REQUEST_TIMEOUT, STATUS_CLOUD_FILE_UNSUCCESSFUL,
    STATUS_INSUFFICIENT_RESOURCES, STATUS_SUCCESS, STATUS_THREAD_IS_TERMINATING, STATUS_TIMEOUT,
    STATUS_USER_APC,
};
use windows_sys::Win32::System::IO::{IO_STATUS_BLOCK, IO_STATUS_BLOCK_0};

use super::context::{
    Held, InstanceRef, Present, STREAM_RANGES, StreamContext, StreamState, new_present,
};
use super::file::{OwnedFile, PoolBuf};
use super::list::{List, Node};
use super::pool::{PoolBox, tag};
use super::providers::{self, ProviderRef};
use super::status::{NtStatus, nt_success};
use super::sync::{Event, SpinLock};
use super::timer::Alarm;
use crate::engine::policy::{self, Plan, UNIT};
use crate::engine::ranges::Range;
use crate::engine::requests::{self, Request, Verdict};
use crate::engine::syncroot;
use crate::engine::write::widen_to_fit;

mod asker;
mod edit;
mod read;
mod record;
mod validate;
mod wait;

pub(crate) use asker::Asker;
pub(crate) use edit::{
    Begin, Edit, Ended, ProviderChange, begin_edit, check_provider_change, closing, cloud_resize,
    end_edit, end_edit_later, mapped_for_writing, mapped_write, overwritten, provider_mark,
    tracked_change,
};
use edit::{Busy, By};
use read::conclude;
pub(crate) use read::{Pend, ReadTarget, pend_read, read_cancelled};
pub(crate) use record::{drop_streamed, keep_streamed, persist, transfer};
pub(crate) use validate::{acknowledge, retrieve};
pub(crate) use wait::{Target, ensure_range};

/// Priority hints: a reader waits, background fills do not.
const PRIORITY_READ: u8 = 12;
const PRIORITY_BACKGROUND: u8 = 4;
/// Expired fetches failed per hold of the table's lock (the rest on the next hold), so
/// a mass timeout never keeps the lock, and IRQL DISPATCH_LEVEL, for long.
const EXPIRE_BATCH: usize = 32;
/// How long a CANCEL_FETCH waits for the provider to take it: the fetch is already over
/// in the driver, so a provider too busy to take the message learns it when its transfer
/// is refused, and the postman's work item is never held long (100 ns units).
const CANCEL_TIMEOUT: i64 = 1000 * 10_000;

const TAG_FETCH: u32 = tag(b"CFft");
const TAG_WAITER: u32 = tag(b"CFwt");

/// FILE_ATTRIBUTE_OFFLINE | FILE_ATTRIBUTE_RECALL_ON_DATA_ACCESS: what a placeholder with
/// data missing carries.
pub(crate) const MISSING_DATA_ATTRIBUTES: u32 = 0x1000 | 0x0040_0000;

/// A reference on a stream context, released on drop.
struct StreamHold(NonNull<StreamContext>);

impl StreamHold {
    /// Takes a new reference on `stream`.
    fn new(stream: &StreamContext) -> Self {
        let ptr = NonNull::from(stream);
        // SAFETY: a live context (the caller holds a reference to it).
        unsafe { FltReferenceContext(ptr.as_ptr().cast()) };
        Self(ptr)
    }

    fn get(&self) -> &StreamContext {
        // SAFETY: referenced until this hold is dropped.
        unsafe { self.0.as_ref() }
    }

    fn key(&self) -> usize {
        key(self.get())
    }
}

impl Drop for StreamHold {
    fn drop(&mut self) {
        // SAFETY: the reference `new` took, released once.
        unsafe { FltReleaseContext(self.0.as_ptr().cast()) };
    }
}

// SAFETY: a context reference may be used and released from any thread.
unsafe impl Send for StreamHold {}

fn key(stream: &StreamContext) -> usize {
    stream as *const StreamContext as usize
}

/// What the transfers of a fetch do with its data: the root's hydration modifiers when
/// the fetch was asked for.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Keep {
    /// Record it in the reparse data, then settle the waiters.
    Record,
    /// VALIDATION_REQUIRED: write it, ask the provider to validate it (VALIDATE_DATA),
    /// and record it only for the ranges it acknowledges ([`validate`]).
    Validate,
    /// STREAMING_ALLOWED: write it and serve it, never record it.
    Stream,
}

impl Keep {
    fn of(provider: &ProviderRef) -> Self {
        let modifiers = provider.modifiers();
        if modifiers.contains(HydrationModifiers::VALIDATION_REQUIRED) {
            Self::Validate
        } else if modifiers.contains(HydrationModifiers::STREAMING_ALLOWED) {
            Self::Stream
        } else {
            Self::Record
        }
    }
}

/// A fetch outstanding with a provider.
struct Fetch {
    request: Request,
    stream: StreamHold,
    /// The encoded FETCH_DATA until a thread takes it to send it (then, once its data is
    /// written, the VALIDATE_DATA of a fetch to validate).
    message: Option<(PoolBuf, usize)>,
    keep: Keep,
    /// A fetch to validate keeps its FETCH_DATA once sent: its VALIDATE_DATA is the same
    /// body under another kind.
    sent_message: Option<(PoolBuf, usize)>,
    /// Its VALIDATE_DATA was made: it waits for the provider's ACK_DATA.
    validating: bool,
    /// Taken to be sent: only now does its clock run (a fetch cannot time out before
    /// the provider was asked) and would a cancellation mean anything to the provider.
    sent: bool,
    /// Set when it is finished: how.
    outcome: NtStatus,
    /// The stream's writer, when this fetch was its last user.
    writer: Option<OwnedFile>,
}

/// How a waiter ends.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Outcome {
    /// With this status (success: its data is present).
    Done(NtStatus),
    /// Part of its range is neither present nor asked for: it asks again.
    Stalled,
}

/// Where a pended read is in its hand-over between the thread that pends it, the
/// settlers and the cancel path.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum ReadState {
    /// Linked, not yet in the cancel-safe queue: a settler only notes the outcome; the
    /// pending thread acts on it once the read is queued.
    Arming(Option<Outcome>),
    /// In the queue: a settler takes it out (FltCbdqRemoveIo) and completes it.
    Queued,
    /// Taken out of the queue by a settler, to be unlinked and completed with this.
    Settled(Outcome),
    /// The cancel path has it (FltCbdqRemoveIo found it gone): it unlinks and completes.
    Cancelling,
}

struct PendedRead {
    data: *mut FLT_CALLBACK_DATA,
    instance: InstanceRef,
    csq: IO_CSQ_IRP_CONTEXT,
    state: ReadState,
    /// PROGRESSIVE: fetched after the read completes.
    background: Option<Range>,
    /// The instance the read came through, for serving it below the driver.
    instance_handle: PFLT_INSTANCE,
    /// A cached read of a placeholder not yet whole: served by the driver from disk
    /// (`nt::direct`) once its data is present, never passed to the cache.
    serve: bool,
    /// Not a read but an edit (and whether its open needs the whole file): once what it
    /// needs is present it goes ([`edit::begin_edit`]) instead of passing.
    edit: Option<(Edit, bool)>,
}

/// A thread waiting on its own event.
struct ThreadWait {
    event: Event,
    outcome: Option<Outcome>,
}

enum WaitKind {
    Read(PendedRead),
    Thread(ThreadWait),
}

/// An operation waiting for data of a stream.
struct Waiter {
    /// Never reused while the driver runs (a cancelled read is found by it, never by an
    /// address that may have been freed and reused).
    id: u64,
    stream: StreamHold,
    /// The file object the operation came through (0 for the driver's own), whose
    /// cleanup ends the wait.
    file_object: usize,
    /// What must be present (already clipped to the file when it was planned).
    required: Range,
    asker: Asker,
    kind: WaitKind,
}

impl Waiter {
    fn is_open(&self) -> bool {
        match &self.kind {
            WaitKind::Read(r) => matches!(r.state, ReadState::Arming(None) | ReadState::Queued),
            WaitKind::Thread(t) => t.outcome.is_none(),
        }
    }
}

// SAFETY: the raw pointers (callback data, instance context) are kernel objects usable
// from any thread; the table is only reached under its lock.
unsafe impl Send for Waiter {}
// SAFETY: as above.
unsafe impl Send for Fetch {}

/// What changed for a stream, for [`Table::settle`].
#[derive(Clone, Copy, Default)]
struct Change {
    /// Just written and recorded (present even if a full range set could not keep it).
    recorded: Option<Range>,
    /// A fetch that failed, with the status its waiters fail with.
    failed: Option<(Range, NtStatus)>,
}

struct Table {
    fetches: List<Fetch>,
    waiters: List<Waiter>,
    /// Finished fetches whose CANCEL_FETCH the postman's work item sends, so that a thread
    /// closing a handle never waits for a provider to take a message.
    outbox: List<Fetch>,
    /// Edits and transfers changing data right now ([`edit`]).
    busy: List<Busy>,
    /// Streams whose state changed where their reparse data could not be written (paging
    /// writes): the postman writes it.
    unpersisted: List<StreamHold>,
    next_id: u64,
    /// The deadline the alarm is set for (`i64::MAX`: not set).
    alarm_due: i64,
    held: Held,
}

static TABLE: SpinLock<Table> = SpinLock::new(Table {
    fetches: List::new(),
    waiters: List::new(),
    outbox: List::new(),
    busy: List::new(),
    unpersisted: List::new(),
    next_id: 1,
    alarm_due: i64::MAX,
    held: Held(()),
});

/// Fails expired fetches; set for the earliest deadline.
static ALARM: Alarm = Alarm::new(expire);

/// Sends the outbox's cancellations and the fetches settlers made, on a work item of its
/// own: a provider slow to take them must not hold up the alarm, whose work is to fail
/// what has expired, nor the settler (see [`flush_later`]).
static POSTMAN: Alarm = Alarm::new(deliver);

use super::timer::now;

impl Table {
    fn next_id(&mut self) -> u64 {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        id
    }

    /// Sets the alarm if `due` is earlier than what it is set for.
    fn arm_alarm(&mut self, due: i64) {
        if due < self.alarm_due {
            self.alarm_due = due;
            ALARM.set(due.saturating_sub(now()));
        }
    }

    /// Asks for the parts of `need` that are neither present nor asked for: a fetch per
    /// missing range, its FETCH_DATA encoded for whoever sends it next.
    fn ask(
        &mut self,
        stream: &StreamContext,
        need: Range,
        provider: &ProviderRef,
        asker: &Asker,
        priority: u8,
    ) -> Result<(), NTSTATUS> {
        let first = self.next_id;
        let result = self.ask_each(stream, need, provider, asker, priority);
        if result.is_err() {
            // All or nothing: a fetch made before the failure would never be sent (whoever
            // asked gives up) and never time out. Nobody waits on these yet, so they go
            // as if never made. Dropping them here releases stream references the caller
            // also holds (never the last one) and pool, both allowed at DISPATCH_LEVEL.
            let k = key(stream);
            while let Some(node) = self
                .fetches
                .take_first(|f| f.request.stream == k && !f.sent && f.request.id >= first)
            {
                // Never a writer: if these were the only users, the stream was idle (no
                // writer) when this hold of the lock began, and a writer is installed
                // only under the lock.
                let writer = stream.with_state(&self.held, |s| s.leave());
                debug_assert!(writer.is_none());
                core::mem::forget(writer);
                drop(node);
            }
        }
        result
    }

    fn ask_each(
        &mut self,
        stream: &StreamContext,
        need: Range,
        provider: &ProviderRef,
        asker: &Asker,
        priority: u8,
    ) -> Result<(), NTSTATUS> {
        let k = key(stream);
        if stream.with_state(&self.held, |s| s.is_zeroing()) {
            // Asked for once the dehydration is done (`end_dehydration` settles again).
            return Ok(());
        }
        let mut cursor = need.start;
        while cursor < need.end {
            let gap = stream.with_state(&self.held, |s| {
                s.present.first_gap(Range {
                    start: cursor,
                    end: need.end,
                })
            });
            let Some(gap) = gap else { break };
            let mut at = gap.start;
            while let Some(missing) = requests::unrequested(
                self.fetches.iter().map(|f| &f.request),
                k,
                Range {
                    start: at,
                    end: gap.end,
                },
            ) {
                // A record close to full: the fetch reaches over to a present neighbour
                // (never over data present or asked for), so that the set never has to
                // forget a range (engine::write::widen_to_fit).
                let pending = self
                    .fetches
                    .iter()
                    .filter(|f| f.request.stream == k)
                    .count();
                let fetches = &self.fetches;
                let coming = fetches
                    .iter()
                    .filter(|f| f.request.stream == k)
                    .map(|f| f.request.range);
                let widened = stream.with_state(&self.held, |s| {
                    widen_to_fit(missing, &s.present, coming, s.room(pending)).clip(Range {
                        start: 0,
                        end: s.file_size,
                    })
                });
                let range = if widened != missing
                    && requests::unrequested(self.fetches.iter().map(|f| &f.request), k, widened)
                        == Some(widened)
                {
                    widened
                } else {
                    missing
                };
                at = range.end.max(missing.end);
                let request = Request {
                    id: self.next_id(),
                    stream: k,
                    range,
                    owner: provider.key(),
                    // Set when the FETCH_DATA is sent (`flush`).
                    deadline: i64::MAX,
                };
                let size = stream.with_state(&self.held, |s| s.file_size);
                let message = stream
                    .with_state(&self.held, |s| {
                        encode_fetch(
                            stream,
                            s.identity(),
                            provider,
                            asker,
                            &request,
                            size,
                            priority,
                        )
                    })
                    .ok_or(STATUS_CLOUD_FILE_INSUFFICIENT_RESOURCES)?;
                let fetch = Fetch {
                    request,
                    stream: StreamHold::new(stream),
                    message: Some(message),
                    keep: Keep::of(provider),
                    sent_message: None,
                    validating: false,
                    sent: false,
                    outcome: NtStatus::SUCCESS,
                    writer: None,
                };
                let node =
                    Node::new(fetch, TAG_FETCH).ok_or(STATUS_CLOUD_FILE_INSUFFICIENT_RESOURCES)?;
                // Not zeroing (checked above, under this hold of the lock): the join holds.
                if stream.with_state(&self.held, |s| s.join()).is_err() {
                    return Err(STATUS_CLOUD_FILE_IN_USE);
                }
                self.fetches.push(node);
            }
            cursor = gap.end.max(at);
        }
        Ok(())
    }

    /// Retires fetch `id` with `status` and settles its stream's waiters.
    fn finish(&mut self, id: u64, status: NtStatus, change: Change, after: &mut After) {
        let Some(mut node) = self.fetches.take_first(|f| f.request.id == id) else {
            return;
        };
        let fetch = &mut node.value;
        fetch.outcome = status;
        let range = fetch.request.range;
        let writer = fetch.stream.get().with_state(&self.held, |s| {
            if !status.is_success() {
                // Data a failed fetch wrote but nobody validated is never read: the next
                // fetch of the range writes and validates it again, and the last cleanup
                // zeroes what is still not present then (`drop_streamed`).
                let StreamState {
                    unvalidated,
                    discarded,
                    ..
                } = &mut *s;
                for part in unvalidated.iter().map(|r| r.clip(range)) {
                    if !part.is_empty() {
                        let _ = discarded.try_insert(part);
                    }
                }
                s.unvalidated.remove(range);
            }
            s.leave()
        });
        fetch.writer = writer;
        let stream = fetch.stream.key();
        let range = fetch.request.range;
        after.fetches.push(node);
        let change = if status.is_success() {
            change
        } else {
            Change {
                failed: Some((range, status)),
                ..change
            }
        };
        self.settle(stream, change, after);
    }

    /// Decides every open waiter of `stream` that `change` (or the state as it is)
    /// decides: threads get their outcome and their event; queued reads are taken out of
    /// their queue and handed to `after` to complete.
    fn settle(&mut self, stream: usize, change: Change, after: &mut After) {
        let Table {
            fetches,
            waiters,
            held,
            ..
        } = self;
        // A transfer that recorded one range (and nothing failed) can decide only the
        // waiters that need part of it: any other waiter's missing data and the fetches
        // asking for it are as they were. Skipping them keeps a storm of a thousand
        // readers of one file linear, not quadratic, in the transfers.
        let only = match change {
            Change {
                recorded: Some(r),
                failed: None,
            } => Some(r),
            _ => None,
        };
        for w in waiters.iter_mut() {
            if w.stream.key() != stream || !w.is_open() {
                continue;
            }
            if let Some(r) = only
                && (w.required.end <= r.start || r.end <= w.required.start)
            {
                continue;
            }
            let outcome = w.stream.get().with_state(held, |s| {
                if s.is_corrupt() {
                    return Some(Outcome::Done(NtStatus::from_raw(
                        STATUS_CLOUD_FILE_METADATA_CORRUPT,
                    )));
                }
                if !s.is_placeholder() {
                    return Some(Outcome::Done(NtStatus::from_raw(STATUS_SUCCESS)));
                }
                let need = w.required.clip(Range {
                    start: 0,
                    end: s.file_size,
                });
                match requests::verdict(
                    need,
                    &s.present,
                    change.recorded,
                    change.failed,
                    fetches.iter().map(|f| &f.request),
                    stream,
                ) {
                    Verdict::Ready => Some(Outcome::Done(NtStatus::from_raw(STATUS_SUCCESS))),
                    Verdict::Failed(status) => Some(Outcome::Done(status)),
                    Verdict::Stalled => Some(Outcome::Stalled),
                    Verdict::Waiting => None,
                }
            });
            if let Some(outcome) = outcome {
                decide(w, outcome);
            }
        }
        after.take_settled(waiters);
    }

    /// Whether a waiter other than `except` still waits on `stream`.
    fn others_wait(&self, stream: usize, except: u64) -> bool {
        self.waiters
            .iter()
            .any(|w| w.id != except && w.stream.key() == stream && w.is_open())
    }

    /// A waiter gave up: the fetches of its range are cancelled too, unless another
    /// operation still waits on the stream (cfapi sends CANCEL_FETCH_DATA with IO_ABORTED
    /// then).
    fn abandon(&mut self, stream: usize, range: Range, me: u64, after: &mut After) {
        if self.others_wait(stream, me) {
            return;
        }
        while let Some(id) = self
            .fetches
            .iter()
            .find(|f| {
                f.request.stream == stream
                    && f.request.range.start < range.end
                    && range.start < f.request.range.end
            })
            .map(|f| f.request.id)
        {
            self.finish(
                id,
                NtStatus::from_raw(STATUS_CLOUD_FILE_REQUEST_CANCELED),
                Change::default(),
                after,
            );
        }
    }
}

/// Gives `w` its outcome: a thread's is noted and its event set; a queued read is taken
/// out of its queue (or left to the cancel path that already has it).
fn decide(w: &mut Waiter, outcome: Outcome) {
    match &mut w.kind {
        WaitKind::Thread(t) => {
            t.outcome = Some(outcome);
            t.event.set();
        }
        WaitKind::Read(r) => match r.state {
            ReadState::Arming(None) => r.state = ReadState::Arming(Some(outcome)),
            ReadState::Queued => {
                // SAFETY: the instance's initialised queue; the IRP context of this read,
                // in its node, which stays linked (and alive) while the lock is held.
                let taken = unsafe { FltCbdqRemoveIo(r.instance.queue(), &r.csq) };
                r.state = if taken.is_null() {
                    ReadState::Cancelling
                } else {
                    ReadState::Settled(outcome)
                };
            }
            _ => {}
        },
    }
}

/// Work for after the lock: finished fetches (their cancellations to send, references
/// and writers to drop) and settled reads to complete. Nodes move here; nothing is
/// allocated.
struct After {
    fetches: List<Fetch>,
    reads: List<Waiter>,
    /// Waiters to free (their references dropped with no lock held).
    spent: List<Waiter>,
    /// Leave cancellations to the postman's work item (the caller must not wait for the
    /// provider: a cleanup, a cancel routine).
    defer_cancels: bool,
}

impl After {
    fn new() -> Self {
        Self {
            fetches: List::new(),
            reads: List::new(),
            spent: List::new(),
            defer_cancels: false,
        }
    }

    /// Moves the reads a settle took out of their queues from `waiters` to here.
    fn take_settled(&mut self, waiters: &mut List<Waiter>) {
        while let Some(node) = waiters.take_first(
            |w| matches!(&w.kind, WaitKind::Read(r) if matches!(r.state, ReadState::Settled(_))),
        ) {
            self.reads.push(node);
        }
    }

    /// Runs it all at PASSIVE_LEVEL with no lock held.
    fn run(mut self) {
        // The writers the finished fetches leave are closed before anyone waiting goes
        // on: a reader that closes its handle and deletes or replaces the file must find
        // no handle of the driver's still open on it (a delete would wait for it, a
        // replacing rename would be refused). A close is quick; no provider is involved.
        for node in self.fetches.iter_mut() {
            drop(node.writer.take());
        }
        // The operations waiting first: a provider slow to take a cancellation must not
        // hold them up.
        while let Some(node) = self.reads.take_first(|_| true) {
            let outcome = match &node.value.kind {
                WaitKind::Read(PendedRead {
                    state: ReadState::Settled(outcome),
                    ..
                }) => *outcome,
                _ => Outcome::Done(NtStatus::from_raw(STATUS_CLOUD_FILE_UNSUCCESSFUL)),
            };
            conclude(node, outcome);
        }
        while let Some(mut node) = self.fetches.take_first(|_| true) {
            // A provider that died or failed the fetch itself needs no cancellation.
            let reason = match node.value.outcome.raw() {
                // Never asked: nothing to cancel.
                _ if !node.value.sent => None,
                STATUS_CLOUD_FILE_REQUEST_TIMEOUT => Some(CancelReason::IoTimeout),
                STATUS_CLOUD_FILE_REQUEST_CANCELED | STATUS_CLOUD_FILE_REQUEST_ABORTED => {
                    Some(CancelReason::IoAborted)
                }
                _ => None,
            };
            match reason {
                Some(reason) if !self.defer_cancels => send_cancel(node.value.request, reason),
                Some(reason) => {
                    // Closed here (PASSIVE_LEVEL); the rest waits in the outbox for the
                    // postman, unless it is stopping (unload), which sends what is left.
                    drop(node.value.writer.take());
                    let back = TABLE.with(|t| {
                        if !POSTMAN.is_running() {
                            return Some(node);
                        }
                        t.outbox.push(node);
                        POSTMAN.set(1);
                        None
                    });
                    if let Some(node) = back {
                        send_cancel(node.value.request, reason);
                    }
                    continue;
                }
                None => {}
            }
            drop(node);
        }
    }
}

/// Sends CANCEL_FETCH for `request` to its provider, if it is still connected.
fn send_cancel(request: Request, reason: CancelReason) {
    let Some(provider) =
        NonNull::new(request.owner as *mut providers::Provider).and_then(providers::by_cookie)
    else {
        return;
    };
    let message = CancelFetch {
        request_id: request.id,
        range: WireRange::new(request.range.start, request.range.len()),
        reason,
    };
    let mut bytes = [0u8; 64];
    if let Ok(len) = message.encode(&mut bytes) {
        let _ = send_within(
            &provider,
            bytes.get(..len).unwrap_or(&[]),
            provider.timeout.min(CANCEL_TIMEOUT),
        );
    }
}

/// FltSendMessage without a reply, bounded by the provider's timeout.
fn send(provider: &ProviderRef, message: &[u8]) -> NTSTATUS {
    provider.send_within(message, provider.timeout)
}

fn send_within(provider: &ProviderRef, message: &[u8], within: i64) -> NTSTATUS {
    provider.send_within(message, within)
}

/// FETCH_DATA for `request`, encoded into pool.
fn encode_fetch(
    stream: &StreamContext,
    identity: &[u8],
    provider: &ProviderRef,
    asker: &Asker,
    request: &Request,
    size: u64,
    priority: u8,
) -> Option<(PoolBuf, usize)> {
    let wants = provider.connect_flags;
    let mut flags = RequestFlags::EMPTY;
    // REQUIRE_FULL_FILE_PATH: the NT path the operation named; otherwise the path below
    // the root.
    let path = if wants.contains(ConnectFlags::REQUIRE_FULL_FILE_PATH) {
        flags = flags.union(RequestFlags::FULL_PATH);
        asker.name.get()
    } else {
        syncroot::under(provider.root(), asker.name.get()).unwrap_or(&[])
    };
    // REQUIRE_PROCESS_INFO: the command line read in the requesting thread, or UNKNOWN
    // as cfapi says when it cannot be read.
    const UNKNOWN: [u16; 7] = [85, 78, 75, 78, 79, 87, 78];
    let command_line: &[u16] = if wants.contains(ConnectFlags::REQUIRE_PROCESS_INFO) {
        flags = flags.union(RequestFlags::PROCESS_INFO);
        asker.command_line.as_ref().map_or(&UNKNOWN, |c| c.get())
    } else {
        &[]
    };
    provider.with_identities(|sync_root_identity, _root_file_identity| {
        let message = FetchData {
            request_id: request.id,
            file_id: stream.file_id,
            file_size: size,
            required: WireRange::new(request.range.start, request.range.len()),
            priority,
            requestor_pid: asker.pid,
            requestor_image: Utf16::from_units(asker.image.get()),
            path: Utf16::from_units(path),
            identity,
            flags,
            requestor_command_line: Utf16::from_units(command_line),
            sync_root_identity,
            // A fetch is about a file's data, never the root directory's.
            root_file_identity: &[],
        };
        let mut buffer = PoolBuf::zeroed(message.encoded_len())?;
        let len = message.encode(buffer.as_mut_slice()).ok()?;
        Some((buffer, len))
    })
}

/// Fails fetch `id`, whose FETCH_DATA the provider never took (the send failed or timed
/// out, or was never tried), with `status`: no CANCEL_FETCH follows for a request the
/// provider never received.
fn fail_untaken(id: u64, status: NtStatus) {
    let mut after = After::new();
    TABLE.with(|t| {
        if let Some(f) = t.fetches.iter_mut().find(|f| f.request.id == id) {
            f.sent = false;
        }
        t.finish(id, status, Change::default(), &mut after);
    });
    after.run();
}

/// Sends every FETCH_DATA of `stream` not sent yet, after opening the stream's writer if
/// it has none.
fn flush(stream: &StreamContext, provider: &ProviderRef) {
    let unsent = TABLE.with(|t| {
        t.fetches
            .iter()
            .any(|f| f.request.stream == key(stream) && f.message.is_some())
    });
    if !unsent {
        return;
    }
    let opened = open_writer(stream);
    loop {
        let next = TABLE.with(|t| {
            let f = t
                .fetches
                .iter_mut()
                .find(|f| f.request.stream == key(stream) && f.message.is_some())?;
            let message = f.message.take()?;
            f.sent = true;
            let due = now().saturating_add(provider.timeout);
            f.request.deadline = due;
            let id = f.request.id;
            t.arm_alarm(due);
            Some((id, message))
        });
        let Some((id, (buffer, len))) = next else {
            return;
        };
        let status = match opened {
            Ok(()) => send(provider, buffer.as_slice().get(..len).unwrap_or(&[])),
            Err(status) => status,
        };
        let sent = opened.is_ok() && nt_success(status) && status != STATUS_TIMEOUT;
        if sent {
            // A fetch to validate keeps its FETCH_DATA for its VALIDATE_DATA. The provider
            // may have transferred all of the fetch's data before the send returned (it
            // runs on other threads): the validation it then could not start begins here,
            // and this loop's next turn sends it.
            let mut buffer = Some(buffer);
            let mut after = After::new();
            TABLE.with(|t| {
                if let Some(f) = t
                    .fetches
                    .iter_mut()
                    .find(|f| f.request.id == id && f.keep == Keep::Validate && !f.validating)
                {
                    f.sent_message = buffer.take().map(|b| (b, len));
                    validate::start(t, stream, provider.key(), &mut after);
                }
            });
            drop(buffer);
            after.run();
        } else {
            drop(buffer);
        }
        if opened.is_err() {
            // What the reader sees is a cloud-file status, whatever the open said.
            fail_untaken(id, NtStatus::from_writer_failure(status));
        } else if !nt_success(status) || status == STATUS_TIMEOUT {
            fail_untaken(id, NtStatus::from_send_failure(status));
        }
    }
}

/// Has the postman send `stream`'s FETCH_DATA not sent yet, or sends them now if it is
/// stopped (unload).
///
/// For fetches made where an operation is settled rather than where it was asked for:
/// a settle runs in the provider's own TRANSFER_DATA or FETCH_FAILED call, a cleanup, a
/// cancel routine or the alarm, none of which may wait for a provider to take a message
/// (a provider that answers on one thread would wait on itself until the timeout).
fn flush_later(stream: &StreamContext, provider: &ProviderRef) {
    if POSTMAN.is_running() {
        POSTMAN.set(1);
    } else {
        flush(stream, provider);
    }
}

/// Sends every FETCH_DATA not sent yet (the postman's work item), stream by stream, each
/// through its own provider; one whose provider is gone fails.
fn flush_unsent() {
    loop {
        let next = TABLE.with(|t| {
            let f = t.fetches.iter().find(|f| f.message.is_some())?;
            Some((
                StreamHold::new(f.stream.get()),
                f.request.owner,
                f.request.id,
            ))
        });
        let Some((stream, owner, id)) = next else {
            return;
        };
        match NonNull::new(owner as *mut providers::Provider).and_then(providers::by_cookie) {
            // Takes every unsent message of the stream, so the loop moves on.
            Some(provider) => flush(stream.get(), &provider),
            None => fail_untaken(
                id,
                NtStatus::from_raw(STATUS_CLOUD_FILE_PROVIDER_NOT_RUNNING),
            ),
        }
    }
}

/// Opens the stream's writer if it has none (the first fetch of a round).
///
/// By the stream's file id, below cloudflt's instance (`OwnedFile::open_by_id`): a name
/// taken when a read came in may name another file by the time a later round opens
/// its writer (the file renamed, a new one made at its old name), and the provider's
/// bytes must land in the file the stream is.
fn open_writer(stream: &StreamContext) -> Result<(), NTSTATUS> {
    let has = TABLE.with(|t| stream.with_state(&t.held, |s| s.writer().is_some()));
    if has {
        return Ok(());
    }
    let Some(filter) = crate::nt::driver::filter() else {
        return Err(STATUS_CLOUD_FILE_PROVIDER_NOT_RUNNING);
    };
    let file = OwnedFile::open_by_id(
        filter,
        stream.instance,
        stream.file_id,
        // FILE_READ_DATA (validation reads back what it wrote) | FILE_WRITE_DATA |
        // FILE_WRITE_ATTRIBUTES | FILE_READ_ATTRIBUTES
        0x0001 | 0x0002 | 0x0100 | 0x0080,
    )?;
    file.freeze_times()?;
    let extra = TABLE.with(|t| stream.with_state(&t.held, |s| s.install(file)));
    drop(extra);
    Ok(())
}

/// A waiter just linked by this thread: what the thread needs of it, taken under the
/// lock that linked it (raw, because settlers reach the waiter under that lock from now
/// on; each pointer stays valid as long as the comment on its use says).
struct Linked {
    id: u64,
    /// The waiter's stream (it holds a reference).
    stream: NonNull<StreamContext>,
    /// A read's callback data, queue and IRP context (null for a thread).
    data: *mut FLT_CALLBACK_DATA,
    queue: *mut FLT_CALLBACK_DATA_QUEUE,
    csq: *mut IO_CSQ_IRP_CONTEXT,
    /// A thread's event (null for a read).
    event: *const core::ffi::c_void,
}

impl Linked {
    /// The stream, for [`flush`].
    ///
    /// # Safety
    /// Only while the waiter cannot be freed: a read before [`queue`], a thread waiter
    /// before its own thread unlinks it.
    unsafe fn stream<'a>(&self) -> &'a StreamContext {
        // SAFETY: the caller's contract; the waiter's reference on the stream lives as
        // long as it does.
        unsafe { self.stream.as_ref() }
    }
}

enum Armed {
    /// Decided at once: the node back, with its status.
    Now(PoolBox<Node<Waiter>>, NTSTATUS),
    Linked(Linked),
    /// Decided, and the node already gone.
    Failed(NTSTATUS),
}

/// Links the waiter in `node` after asking for what it needs that nobody has asked for,
/// or says at once how it ends. Both happen under one hold of the lock, so no settle can
/// come between the look at the state and the link.
fn arm(node: PoolBox<Node<Waiter>>, provider: &ProviderRef, priority: u8) -> Armed {
    let mut slot = Some(node);
    let linked = TABLE.with(|t| {
        let node = slot.as_mut().ok_or(STATUS_CLOUD_FILE_UNSUCCESSFUL)?;
        let w = &mut node.value;
        w.id = t.next_id();
        let stream = w.stream.get();
        let need = stream.with_state(&t.held, |s| {
            if s.is_corrupt() {
                return Err(STATUS_CLOUD_FILE_METADATA_CORRUPT);
            }
            let need = w.required.clip(Range {
                start: 0,
                end: s.file_size,
            });
            if !s.is_placeholder() || s.present.contains(need) {
                return Err(STATUS_SUCCESS);
            }
            Ok(need)
        })?;
        // Read under this lock, which `provider_gone` takes after setting it: a fetch
        // started here is either refused or failed by it.
        if provider.is_gone() {
            return Err(STATUS_CLOUD_FILE_PROVIDER_TERMINATED);
        }
        t.ask(stream, need, provider, &w.asker, priority)?;
        let mut linked = Linked {
            id: w.id,
            stream: NonNull::from(stream),
            data: core::ptr::null_mut(),
            queue: core::ptr::null_mut(),
            csq: core::ptr::null_mut(),
            event: core::ptr::null(),
        };
        match &mut w.kind {
            WaitKind::Read(r) => {
                linked.data = r.data;
                linked.queue = r.instance.queue();
                linked.csq = &mut r.csq;
            }
            WaitKind::Thread(tw) => linked.event = tw.event.object(),
        }
        if let Some(node) = slot.take() {
            t.waiters.push(node);
        }
        Ok(linked)
    });
    match (linked, slot) {
        (Ok(linked), _) => Armed::Linked(linked),
        (Err(status), Some(node)) => Armed::Now(node, status),
        // Unreachable: the node is taken only on success.
        (Err(status), None) => {
            // Not reachable (the node is taken only on success); the status says it.
            Armed::Failed(status)
        }
    }
}

/// The cleanup of `file_object` (its last handle closed): operations waiting through it
/// end with STATUS_CANCELLED; on the stream's last cleanup, with nobody waiting,
/// background fills stop too.
pub(crate) fn file_closed(stream: &StreamContext, file_object: usize, last: bool) {
    let k = key(stream);
    let mut after = After::new();
    after.defer_cancels = true;
    TABLE.with(|t| {
        for w in t.waiters.iter_mut() {
            if w.stream.key() == k && w.file_object == file_object && w.is_open() {
                decide(w, Outcome::Done(NtStatus::from_raw(STATUS_CANCELLED)));
            }
        }
        after.take_settled(&mut t.waiters);
        if last && !t.others_wait(k, 0) {
            t.abandon(
                k,
                Range {
                    start: 0,
                    end: u64::MAX,
                },
                0,
                &mut after,
            );
        }
    });
    after.run();
}

/// Fails every expired fetch with REQUEST_TIMEOUT (the alarm's work item, PASSIVE_LEVEL),
/// then sets the alarm for the next deadline.
fn expire() {
    // The alarm went off: it is set for nothing until this sets it again (a setting made
    // meanwhile by a new fetch stays, as it is earlier than the MAX put here).
    TABLE.with(|t| t.alarm_due = i64::MAX);
    loop {
        let mut after = After::new();
        // Cancellations wait in the outbox until every expired fetch is failed and its
        // readers completed.
        after.defer_cancels = true;
        let more = TABLE.with(|t| {
            let at = now();
            for _ in 0..EXPIRE_BATCH {
                let expired = t
                    .fetches
                    .iter()
                    .find(|f| f.request.deadline <= at)
                    .map(|f| f.request.id);
                match expired {
                    Some(id) => t.finish(
                        id,
                        NtStatus::from_raw(STATUS_CLOUD_FILE_REQUEST_TIMEOUT),
                        Change::default(),
                        &mut after,
                    ),
                    None => {
                        if let Some(next) = t.fetches.iter().map(|f| f.request.deadline).min() {
                            t.arm_alarm(next);
                        }
                        return false;
                    }
                }
            }
            true
        });
        after.run();
        if !more {
            return;
        }
    }
}

/// The postman's round: the cancellations in the outbox, then the fetches made by
/// settlers ([`flush_later`]).
fn deliver() {
    send_outbox();
    flush_unsent();
    edit::persist_unpersisted();
}

/// Sends the CANCEL_FETCH messages waiting in the outbox.
fn send_outbox() {
    while let Some(node) = TABLE.with(|t| t.outbox.take_first(|_| true)) {
        let reason = if node.value.outcome.raw() == STATUS_CLOUD_FILE_REQUEST_TIMEOUT {
            CancelReason::IoTimeout
        } else {
            CancelReason::IoAborted
        };
        send_cancel(node.value.request, reason);
        drop(node);
    }
}

/// Starts the alarm and the postman (DriverEntry, after FltRegisterFilter). The table
/// outlives an unload in the image's statics, so what the alarm was set for is forgotten
/// here.
pub(crate) fn start(
    filter: windows_sys::Wdk::Storage::FileSystem::Minifilters::PFLT_FILTER,
) -> NTSTATUS {
    TABLE.with(|t| t.alarm_due = i64::MAX);
    let status = ALARM.start(filter);
    if !nt_success(status) {
        return status;
    }
    let status = POSTMAN.start(filter);
    if !nt_success(status) {
        ALARM.stop();
    }
    status
}

/// Stops the alarm and the postman (teardown, before FltUnregisterFilter): no DPC or
/// work item of the driver runs after this, and the cancellations not sent yet are sent
/// here.
pub(crate) fn stop() {
    ALARM.stop();
    POSTMAN.stop();
    deliver();
}

/// Fails every fetch matching `which` with `status`, in batches.
fn fail_all(which: impl Fn(&Fetch) -> bool, status: NtStatus) {
    loop {
        let mut after = After::new();
        let more = TABLE.with(|t| {
            for _ in 0..EXPIRE_BATCH {
                match t.fetches.iter().find(|f| which(f)).map(|f| f.request.id) {
                    Some(id) => t.finish(id, status, Change::default(), &mut after),
                    None => return false,
                }
            }
            true
        });
        after.run();
        if !more {
            return;
        }
    }
}

/// Fails every fetch of a provider that went away (DisconnectNotify).
pub(crate) fn provider_gone(owner: usize) {
    fail_all(
        |f| f.request.owner == owner,
        NtStatus::from_raw(STATUS_CLOUD_FILE_PROVIDER_TERMINATED),
    );
}

/// InstanceTeardownStart: every fetch for a stream of the instance is failed (its
/// waiters with it), so `fltmc detach` never waits for a provider.
pub(crate) fn instance_gone(
    instance: windows_sys::Wdk::Storage::FileSystem::Minifilters::PFLT_INSTANCE,
) {
    fail_all(
        |f| f.stream.get().instance == instance,
        NtStatus::from_raw(STATUS_CLOUD_FILE_REQUEST_ABORTED),
    );
    // Changes of mapped pages not yet in the reparse data are written while the instance
    // can still do I/O.
    edit::persist_unpersisted();
    // Operations that wait with no fetch out (for a dehydration to end, or to ask again)
    // are aborted too: teardown never waits on anything but its own I/O.
    let mut after = After::new();
    after.defer_cancels = true;
    TABLE.with(|t| {
        for w in t.waiters.iter_mut() {
            if w.stream.get().instance == instance && w.is_open() {
                decide(
                    w,
                    Outcome::Done(NtStatus::from_raw(STATUS_CLOUD_FILE_REQUEST_ABORTED)),
                );
            }
        }
        after.take_settled(&mut t.waiters);
    });
    after.run();
}

/// FETCH_FAILED from `provider`: the waiting operations fail with the provider's status,
/// or STATUS_CLOUD_FILE_UNSUCCESSFUL for one outside the cloud-file family.
pub(crate) fn failed(provider: &ProviderRef, message: &FetchFailed) -> NTSTATUS {
    let status = NtStatus::from_provider(message.status);
    let mut after = After::new();
    let known = TABLE.with(|t| {
        let known = t
            .fetches
            .iter()
            .any(|f| f.request.id == message.request_id && f.request.owner == provider.key());
        if known {
            let due = now().saturating_add(provider.timeout);
            for f in t
                .fetches
                .iter_mut()
                .filter(|f| f.request.owner == provider.key() && f.sent)
            {
                f.request.deadline = due;
            }
            t.finish(message.request_id, status, Change::default(), &mut after);
        }
        known
    });
    after.run();
    if known {
        STATUS_SUCCESS
    } else {
        STATUS_CLOUD_FILE_INVALID_REQUEST
    }
}

/// Runs `f` with the fetch table's lock held, for the placeholder operations that read
/// or change a stream's state.
pub(crate) fn with_held<R>(f: impl FnOnce(&Held) -> R) -> R {
    TABLE.with(|t| f(&t.held))
}

/// Starts dropping `range` of `stream` (a dehydration), atomically against fetches,
/// edits and readers: refused with STATUS_CLOUD_FILE_NOT_IN_SYNC when the file is not in
/// sync or holds a user's modified ranges, with STATUS_CLOUD_FILE_IN_USE while a fetch
/// or an edit of the stream is out or
/// another handle than the dehydrating one (`own_opens`) is open — a read through it
/// may be on its way to the disk; otherwise the range is no longer present, and until
/// [`end_dehydration`] nothing is fetched for the stream.
pub(crate) fn begin_dehydration(
    stream: &StreamContext,
    range: Range,
    own_opens: u32,
    marking_in_sync: bool,
) -> Result<(), NTSTATUS> {
    TABLE.with(|t| {
        // A user's changes not yet taken by the provider are never dropped (cfapi:
        // dehydrating a file that is not in sync fails).
        // An UPDATE that marks the file in sync as it dehydrates says the data is the
        // cloud's; modified ranges are never dropped.
        let in_sync = stream.with_state(&t.held, |s| {
            (marking_in_sync || s.flags.contains(PlaceholderFlags::IN_SYNC))
                && s.modified.is_empty()
        });
        if !in_sync {
            return Err(STATUS_CLOUD_FILE_NOT_IN_SYNC);
        }
        // Reverted since the dehydrating open was made (moved out of its root while the
        // provider was asked): an ordinary file keeps its data.
        if !stream.with_state(&t.held, |s| s.is_placeholder()) {
            return Err(crate::nt::status::STATUS_CLOUD_FILE_NOT_A_CLOUD_FILE);
        }
        if t.fetches.iter().any(|f| f.request.stream == key(stream))
            || t.busy.iter().any(|b| b.stream == key(stream))
        {
            return Err(STATUS_CLOUD_FILE_IN_USE);
        }
        stream.with_state(&t.held, |s| {
            // A transfer still writing holds the writer even after its fetch was retired;
            // it would record its range after the zeroing. A file on its way out of its
            // root keeps its data.
            if s.opens > own_opens || s.moving_out > 0 {
                return Err(STATUS_CLOUD_FILE_IN_USE);
            }
            s.begin_zeroing().map_err(|_| STATUS_CLOUD_FILE_IN_USE)?;
            s.present.remove(range);
            s.streamed.remove(range);
            s.unvalidated.remove(range);
            s.discarded.remove(range);
            Ok(())
        })
    })
}

/// A rename or hard link is about to take the file where no provider serves it: if all
/// of it is present now, no dehydration and no growth of its size can happen until
/// [`end_move_out`] (both are refused with STATUS_CLOUD_FILE_IN_USE), and `true`;
/// `false` when something is missing (a dehydration got in since it was fetched: fetch
/// again). Checked and marked under one hold of the lock, so nothing slips in between.
pub(crate) fn begin_move_out(stream: &StreamContext) -> bool {
    TABLE.with(|t| {
        stream.with_state(&t.held, |s| {
            let whole = s.present.contains(Range {
                start: 0,
                end: s.file_size,
            });
            // Not while a dehydration zeroes: its ranges are gone from `present` already,
            // but this keeps the rule plain.
            if !whole || s.is_zeroing() {
                return false;
            }
            s.moving_out = s.moving_out.saturating_add(1);
            true
        })
    })
}

/// The rename or link [`begin_move_out`] marked is over (done or not).
pub(crate) fn end_move_out(stream: &StreamContext) {
    TABLE.with(|t| {
        stream.with_state(&t.held, |s| s.moving_out = s.moving_out.saturating_sub(1));
    });
}

/// Ends a dehydration: fetches may start again, and operations that waited for it ask.
pub(crate) fn end_dehydration(stream: &StreamContext) {
    TABLE.with(|t| stream.with_state(&t.held, |s| s.end_zeroing()));
    changed(stream);
}

/// Whether any fetch of `stream` is outstanding.
pub(crate) fn busy(stream: &StreamContext) -> bool {
    TABLE.with(|t| t.fetches.iter().any(|f| f.request.stream == key(stream)))
}

/// A stream's state changed outside a transfer (dehydrated, reverted): its waiters are
/// looked at again.
pub(crate) fn changed(stream: &StreamContext) {
    let mut after = After::new();
    TABLE.with(|t| t.settle(key(stream), Change::default(), &mut after));
    after.run();
}
