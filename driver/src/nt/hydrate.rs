//! Hydration: fetching a placeholder's missing data from its provider and waiting for it.
//!
//! Owns the table of outstanding fetches (engine `Requests`), the recent outcomes, and
//! the threads waiting. A thread that needs a range ([`ensure`]) asks the provider only
//! for the parts nobody has asked for yet, then sleeps on an event of its own until a
//! transfer, failure, timeout or disconnect changes something for its stream, and looks
//! again. Transfers ([`transfer`]) write the data non-cached through the driver's own
//! handle, record the range in the reparse data, and only then wake the waiters.
//!
//! The stream's `present` set is what the reparse data on disk records (a range is added
//! once a snapshot holding it is written; dehydration removes one before its write), so a
//! thread that finds its range present — a woken waiter, or a read that needs no fetch —
//! never runs ahead of the record. Snapshots of one stream are written one at a time
//! ([`persist`]): each is taken when its writer's turn comes, from the recorded state
//! plus the writer's own range, so a write never replaces a newer record with an older
//! one, and racing transfers each find the other's range in their snapshot or wait for it.
//!
//! Lock order: the fetch table's lock is a leaf; nothing waits or does I/O under it.

use core::ptr::NonNull;

use cloudflt_proto::ByteRange as WireRange;
use cloudflt_proto::msg::{CancelFetch, CancelReason, FetchData, FetchFailed, TransferData};
use cloudflt_proto::{PlaceholderFlags, RangeList, Utf16};
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FLT_CALLBACK_DATA, FltCancellableWaitForSingleObject, FltReferenceContext, FltReleaseContext,
    FltSendMessage,
};
use windows_sys::Wdk::System::SystemServices::{
    Executive, KeQueryInterruptTimePrecise, KeWaitForSingleObject, KernelMode,
};
use windows_sys::Win32::Foundation::{
    NTSTATUS, STATUS_ALERTED, STATUS_CANCELLED, STATUS_CLOUD_FILE_INSUFFICIENT_RESOURCES,
    STATUS_CLOUD_FILE_INVALID_REQUEST, STATUS_CLOUD_FILE_METADATA_CORRUPT,
    STATUS_CLOUD_FILE_PROVIDER_NOT_RUNNING, STATUS_CLOUD_FILE_PROVIDER_TERMINATED,
    STATUS_CLOUD_FILE_REQUEST_CANCELED, STATUS_CLOUD_FILE_REQUEST_TIMEOUT,
    STATUS_CLOUD_FILE_UNSUCCESSFUL, STATUS_INSUFFICIENT_RESOURCES, STATUS_PORT_DISCONNECTED,
    STATUS_SUCCESS, STATUS_THREAD_IS_TERMINATING, STATUS_TIMEOUT, STATUS_USER_APC,
};

use super::context::{Held, STREAM_RANGES, StreamContext, StreamState};
use super::file::{Kind, OwnedFile, PoolBuf};
use super::placeholder;
use super::providers::{self, ProviderRef};
use super::status::nt_success;
use super::sync::{Event, SpinLock};
use crate::engine::policy::{self, UNIT};
use crate::engine::ranges::{Range, RangeSet};
use crate::engine::requests::Requests;
use crate::engine::syncroot;

/// Outstanding fetches, driver-wide.
const MAX_FETCHES: usize = 64;
/// Outcomes kept for waiters that have not looked yet.
const OUTCOMES: usize = 64;
/// Threads that can sleep on an event of their own; more poll.
const MAX_WAITERS: usize = 64;
/// How long a thread without a waiter slot sleeps before it looks again (100 ns units).
const POLL: i64 = 20 * 10_000;
/// How long a thread waiting for its turn to persist sleeps at most before it looks
/// again, though the writer before it wakes it (100 ns units).
const PERSIST_WAIT: i64 = 1000 * 10_000;
/// Gaps one waiter asks for in one round; the rest on the next.
const GAPS_PER_ROUND: usize = 8;
/// Priority hints: a reader waits, background fills do not.
const PRIORITY_READ: u8 = 12;
const PRIORITY_BACKGROUND: u8 = 4;

/// FILE_ATTRIBUTE_OFFLINE | FILE_ATTRIBUTE_RECALL_ON_DATA_ACCESS: what a placeholder with
/// data missing carries.
pub(crate) const MISSING_DATA_ATTRIBUTES: u32 = 0x1000 | 0x0040_0000;

/// A thread waiting for a stream: its event, the file object it reads through, and
/// whether that open's cleanup has aborted the wait.
#[derive(Clone, Copy)]
struct WaiterEntry {
    stream: usize,
    file_object: usize,
    event: NonNull<Event>,
    aborted: bool,
    /// Waits for data (`ensure`), rather than for its turn to persist: only these keep
    /// fetches alive and are aborted by a cleanup.
    reader: bool,
}

struct Fetches {
    requests: Requests<MAX_FETCHES>,
    outcomes: [(u64, NTSTATUS); OUTCOMES],
    next_outcome: usize,
    waiters: [Option<WaiterEntry>; MAX_WAITERS],
    held: Held,
}

// SAFETY: the waiter events are on the stacks of threads blocked in `ensure`, which
// unregister them before returning; the table is only reached under its lock.
unsafe impl Send for Fetches {}

static FETCHES: SpinLock<Fetches> = SpinLock::new(Fetches {
    requests: Requests::new(),
    outcomes: [(0, 0); OUTCOMES],
    next_outcome: 0,
    waiters: [None; MAX_WAITERS],
    held: Held(()),
});

/// Now, in 100 ns units of the interrupt clock (never goes back).
fn now() -> i64 {
    // SAFETY: no preconditions; the QPC out pointer is optional.
    let t = unsafe { KeQueryInterruptTimePrecise(core::ptr::null_mut()) };
    i64::try_from(t).unwrap_or(i64::MAX)
}

/// The stream context behind an engine stream key.
///
/// # Safety
/// `key` must come from [`key`] of a context that is still referenced.
unsafe fn stream_of<'a>(key: usize) -> &'a StreamContext {
    // SAFETY: the caller's contract: a referenced context is alive.
    unsafe { &*(key as *const StreamContext) }
}

fn key(stream: &StreamContext) -> usize {
    stream as *const StreamContext as usize
}

impl Fetches {
    /// Sets the event of every thread waiting on `stream` (or on any stream for `None`).
    fn wake(&self, stream: Option<usize>) {
        for w in self.waiters.iter().flatten() {
            if stream.is_none_or(|k| k == w.stream) {
                // SAFETY: registered events stay alive until their thread unregisters.
                unsafe { w.event.as_ref() }.set();
            }
        }
    }

    /// Sets the event of every thread waiting for its turn to persist `stream`.
    fn wake_writers(&self, stream: usize) {
        for w in self.waiters.iter().flatten() {
            if !w.reader && w.stream == stream {
                // SAFETY: registered events stay alive until their thread unregisters.
                unsafe { w.event.as_ref() }.set();
            }
        }
    }

    fn outcome(&self, id: u64) -> Option<NTSTATUS> {
        self.outcomes
            .iter()
            .find(|(i, _)| *i == id)
            .map(|(_, s)| *s)
    }

    /// Retires request `id` with `status`; what the caller must release once the lock is
    /// dropped is added to `after`.
    fn finish(&mut self, id: u64, status: NTSTATUS, after: &mut After) {
        let Some(request) = self.requests.finish(id) else {
            return;
        };
        if let Some(slot) = self.outcomes.get_mut(self.next_outcome % OUTCOMES) {
            *slot = (id, status);
        }
        self.next_outcome = self.next_outcome.wrapping_add(1);
        // SAFETY: the request held a reference on its stream until now; `after` releases
        // it once the lock is dropped.
        let stream = unsafe { stream_of(request.stream) };
        let writer = stream.with_state(&self.held, |s| {
            s.writer_users = s.writer_users.saturating_sub(1);
            if s.writer_users == 0 {
                s.writer.take()
            } else {
                None
            }
        });
        after.release(request.stream, writer);
        if !nt_success(status) {
            after.cancel(request.owner, id, request.range, status);
        }
        self.wake(Some(request.stream));
    }
}

/// Work for after the lock: references to drop, writers to close, cancellations to send.
struct After {
    streams: [usize; 8],
    streams_len: usize,
    writers: [Option<OwnedFile>; 2],
    cancels: [(usize, u64, Range, NTSTATUS); 8],
    cancels_len: usize,
}

impl After {
    fn new() -> Self {
        Self {
            streams: [0; 8],
            streams_len: 0,
            writers: [None, None],
            cancels: [(0, 0, Range::default(), 0); 8],
            cancels_len: 0,
        }
    }

    /// Whether there is room for another `finish` (callers loop until done).
    fn has_room(&self) -> bool {
        self.streams_len < self.streams.len()
            && self.cancels_len < self.cancels.len()
            && self.writers.iter().any(Option::is_none)
    }

    fn release(&mut self, stream: usize, writer: Option<OwnedFile>) {
        if let Some(slot) = self.streams.get_mut(self.streams_len) {
            *slot = stream;
            self.streams_len += 1;
        }
        if let Some(w) = writer
            && let Some(slot) = self.writers.iter_mut().find(|s| s.is_none())
        {
            *slot = Some(w);
        }
    }

    fn cancel(&mut self, owner: usize, id: u64, range: Range, status: NTSTATUS) {
        if let Some(slot) = self.cancels.get_mut(self.cancels_len) {
            *slot = (owner, id, range, status);
            self.cancels_len += 1;
        }
    }

    /// Runs it all at PASSIVE_LEVEL with no lock held.
    fn run(self) {
        let After {
            streams,
            streams_len,
            writers,
            cancels,
            cancels_len,
        } = self;
        for (owner, id, range, status) in cancels.iter().take(cancels_len) {
            // A provider that died or failed the fetch itself needs no cancellation.
            match *status {
                STATUS_CLOUD_FILE_REQUEST_TIMEOUT => {
                    send_cancel(*owner, *id, *range, CancelReason::IoTimeout);
                }
                STATUS_CLOUD_FILE_REQUEST_CANCELED => {
                    send_cancel(*owner, *id, *range, CancelReason::IoAborted);
                }
                _ => {}
            }
        }
        drop(writers);
        for stream in streams.iter().take(streams_len) {
            // SAFETY: the reference the finished request held, dropped once.
            unsafe { FltReleaseContext((*stream as *const StreamContext).cast_mut().cast()) };
        }
    }
}

/// Sends CANCEL_FETCH to the provider `owner`, if it is still connected.
fn send_cancel(owner: usize, id: u64, range: Range, reason: CancelReason) {
    let Some(provider) =
        NonNull::new(owner as *mut providers::Provider).and_then(providers::by_cookie)
    else {
        return;
    };
    let message = CancelFetch {
        request_id: id,
        range: WireRange::new(range.start, range.len()),
        reason,
    };
    let mut bytes = [0u8; 64];
    if let Ok(len) = message.encode(&mut bytes) {
        let _ = send(&provider, bytes.get(..len).unwrap_or(&[]));
    }
}

/// FltSendMessage without a reply, bounded by the provider's timeout.
fn send(provider: &ProviderRef, message: &[u8]) -> NTSTATUS {
    let timeout = -provider.timeout.max(1);
    let Ok(length) = u32::try_from(message.len()) else {
        return STATUS_CLOUD_FILE_INVALID_REQUEST;
    };
    // SAFETY: the reference keeps the client port open; the buffer outlives the call;
    // PASSIVE_LEVEL; a negative (relative) timeout.
    unsafe {
        FltSendMessage(
            provider.filter,
            &provider.client_port,
            message.as_ptr().cast(),
            length,
            core::ptr::null_mut(),
            core::ptr::null_mut(),
            &timeout,
        )
    }
}

/// What a thread needs to fetch for a stream.
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
    /// cleanup aborts the wait.
    pub(crate) file_object: usize,
}

/// The provider's policy for reads of this stream, and the provider, or
/// PROVIDER_NOT_RUNNING.
fn provider_for(name: &[u16]) -> Result<ProviderRef, NTSTATUS> {
    providers::for_path(name).ok_or(STATUS_CLOUD_FILE_PROVIDER_NOT_RUNNING)
}

/// Makes `read` of the placeholder present, per the provider's hydration policy: returns
/// once the plan's required range is on disk and recorded, or why it cannot be.
pub(crate) fn ensure_read(target: &Target<'_>, read: Range) -> NTSTATUS {
    let provider = match provider_for(target.name) {
        Ok(p) => p,
        Err(status) => return status,
    };
    let size = FETCHES.with(|f| target.stream.with_state(&f.held, |s| s.file_size));
    let Some(plan) = policy::plan(provider.hydration, read, size) else {
        return STATUS_SUCCESS;
    };
    let status = ensure(target, &provider, plan.required);
    if nt_success(status)
        && let Some(background) = plan.background
    {
        start_background(target, &provider, background);
    }
    status
}

/// Makes `range` present (a provider's HYDRATE, a section being mapped).
pub(crate) fn ensure_range(target: &Target<'_>, range: Range) -> NTSTATUS {
    match provider_for(target.name) {
        Ok(provider) => ensure(target, &provider, range),
        Err(status) => status,
    }
}

/// A waiter slot registered in the table for as long as the value lives.
struct Waiter<'e> {
    slot: Option<usize>,
    event: &'e Event,
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        if let Some(i) = self.slot {
            FETCHES.with(|f| {
                if let Some(s) = f.waiters.get_mut(i) {
                    *s = None;
                }
            });
        }
    }
}

fn ensure(target: &Target<'_>, provider: &ProviderRef, required: Range) -> NTSTATUS {
    let stream = target.stream;
    let event = Event::uninit();
    event.init();
    let mut waiter = Waiter {
        slot: None,
        event: &event,
    };
    let mut deps = [0u64; GAPS_PER_ROUND * 2];
    let mut deps_len = 0;
    loop {
        event.reset();
        let mut to_send = [(0u64, Range::default()); GAPS_PER_ROUND];
        let mut sends = 0;
        let mut deadline = i64::MAX;
        let decided = FETCHES.with(|f| {
            let (placeholder, corrupt, present_all) = stream.with_state(&f.held, |s| {
                (
                    s.placeholder,
                    s.corrupt,
                    s.present.contains(required.clip(Range {
                        start: 0,
                        end: s.file_size,
                    })),
                )
            });
            if corrupt {
                return Some(STATUS_CLOUD_FILE_METADATA_CORRUPT);
            }
            if !placeholder || present_all {
                return Some(STATUS_SUCCESS);
            }
            // Read under this lock, which `provider_gone` takes after setting it: a
            // request started here is either refused or failed by it.
            if provider.is_gone() {
                return Some(STATUS_CLOUD_FILE_PROVIDER_TERMINATED);
            }
            // A fetch this thread depends on failed: so does its read.
            let mut kept = 0;
            for i in 0..deps_len {
                let id = deps.get(i).copied().unwrap_or(0);
                if let Some(r) = f.requests.get(id) {
                    deadline = deadline.min(r.deadline);
                    if let Some(d) = deps.get_mut(kept) {
                        *d = id;
                    }
                    kept += 1;
                } else if let Some(status) = f.outcome(id)
                    && !nt_success(status)
                {
                    return Some(status);
                }
            }
            deps_len = kept;
            // Ask for what is missing and not yet asked for; wait for what is asked.
            let mut cursor = required.start;
            while cursor < required.end {
                let gap = stream.with_state(&f.held, |s| {
                    s.present.first_gap(Range {
                        start: cursor,
                        end: required.end,
                    })
                });
                let Some(gap) = gap else { break };
                cursor = gap.end;
                let mut at = gap.start;
                while at < gap.end {
                    let piece = Range {
                        start: at,
                        end: gap.end,
                    };
                    match f.requests.unrequested(key(stream), piece) {
                        None => {
                            // Covered by requests already out: depend on them.
                            for id in covering_ids(&f.requests, key(stream), piece) {
                                push_dep(&mut deps, &mut deps_len, id);
                            }
                            at = gap.end;
                        }
                        Some(missing) => {
                            for id in covering_ids(
                                &f.requests,
                                key(stream),
                                Range {
                                    start: at,
                                    end: missing.start,
                                },
                            ) {
                                push_dep(&mut deps, &mut deps_len, id);
                            }
                            if sends >= GAPS_PER_ROUND || deps_len >= deps.len() {
                                at = gap.end;
                                cursor = required.end;
                                continue;
                            }
                            let due = now().saturating_add(provider.timeout);
                            let Ok(id) =
                                f.requests.start(key(stream), missing, provider.key(), due)
                            else {
                                return Some(STATUS_CLOUD_FILE_INSUFFICIENT_RESOURCES);
                            };
                            // The request holds a reference on the stream until it is
                            // finished.
                            // SAFETY: a live context (the caller holds a reference).
                            unsafe {
                                FltReferenceContext(
                                    (stream as *const StreamContext).cast_mut().cast(),
                                )
                            };
                            stream.with_state(&f.held, |s| s.writer_users += 1);
                            if let Some(slot) = to_send.get_mut(sends) {
                                *slot = (id, missing);
                                sends += 1;
                            }
                            push_dep(&mut deps, &mut deps_len, id);
                            deadline = deadline.min(due);
                            at = missing.end;
                        }
                    }
                }
            }
            match waiter
                .slot
                .and_then(|i| f.waiters.get(i).copied().flatten())
            {
                Some(entry) if entry.aborted => return Some(STATUS_CANCELLED),
                Some(_) => {}
                None => {
                    waiter.slot = f.waiters.iter().position(Option::is_none);
                    if let Some(slot) = waiter.slot.and_then(|i| f.waiters.get_mut(i)) {
                        *slot = Some(WaiterEntry {
                            stream: key(stream),
                            file_object: target.file_object,
                            event: NonNull::from(waiter.event),
                            aborted: false,
                            reader: true,
                        });
                    }
                }
            }
            None
        });
        if let Some(status) = decided {
            if status == STATUS_CANCELLED {
                abandon(stream, deps.get(..deps_len).unwrap_or(&[]), waiter.slot);
            }
            return status;
        }
        if sends > 0 {
            if let Err(status) = open_writer(target) {
                fail_ids(to_send.get(..sends).unwrap_or(&[]), status);
                return status;
            }
            for (id, range) in to_send.iter().take(sends) {
                let status = send_fetch(target, provider, *id, *range, PRIORITY_READ);
                if !nt_success(status) || status == STATUS_TIMEOUT {
                    fail_ids(&[(*id, *range)], send_failure(status));
                }
            }
        }
        let wait = if waiter.slot.is_some() {
            deadline.saturating_sub(now()).clamp(1, i64::MAX)
        } else {
            POLL
        };
        let relative = -wait;
        // SAFETY: an initialised event on this frame; PASSIVE_LEVEL; the callback data
        // (if any) is the pended operation this thread serves.
        let status =
            unsafe { FltCancellableWaitForSingleObject(event.object(), &relative, target.data) };
        match status {
            STATUS_CANCELLED | STATUS_THREAD_IS_TERMINATING | STATUS_USER_APC | STATUS_ALERTED => {
                abandon(stream, deps.get(..deps_len).unwrap_or(&[]), waiter.slot);
                return STATUS_CANCELLED;
            }
            STATUS_TIMEOUT => expire(),
            _ => {}
        }
    }
}

/// A waiter gave up (its I/O was cancelled or its handle closed): the fetches it was
/// waiting for are cancelled too, unless another thread still waits on the stream
/// (cfapi sends CANCEL_FETCH_DATA with IO_ABORTED then).
fn abandon(stream: &StreamContext, deps: &[u64], me: Option<usize>) {
    let mut after = After::new();
    FETCHES.with(|f| {
        let others = f.waiters.iter().enumerate().any(|(i, w)| {
            Some(i) != me && w.is_some_and(|w| w.reader && w.stream == key(stream) && !w.aborted)
        });
        if others {
            return;
        }
        for id in deps {
            if after.has_room() {
                f.finish(*id, STATUS_CLOUD_FILE_REQUEST_CANCELED, &mut after);
            }
        }
    });
    after.run();
}

/// The cleanup of `file_object` (its last handle closed): waits on reads through it end
/// with STATUS_CANCELLED; on the stream's last cleanup, background fills stop too.
pub(crate) fn file_closed(stream: &StreamContext, file_object: usize, last: bool) {
    let mut after = After::new();
    FETCHES.with(|f| {
        for w in f.waiters.iter_mut().flatten() {
            if w.reader && w.file_object == file_object && w.stream == key(stream) {
                w.aborted = true;
                // SAFETY: registered events stay alive until their thread unregisters.
                unsafe { w.event.as_ref() }.set();
            }
        }
        let waiting = f
            .waiters
            .iter()
            .flatten()
            .any(|w| w.reader && w.stream == key(stream) && !w.aborted);
        if last && !waiting {
            while after.has_room() {
                match f.requests.of_stream(key(stream)) {
                    Some(id) => f.finish(id, STATUS_CLOUD_FILE_REQUEST_CANCELED, &mut after),
                    None => break,
                }
            }
        }
    });
    after.run();
}

fn push_dep(deps: &mut [u64], len: &mut usize, id: u64) {
    if deps.iter().take(*len).any(|d| *d == id) {
        return;
    }
    if let Some(slot) = deps.get_mut(*len) {
        *slot = id;
        *len += 1;
    }
}

/// Ids of requests of `stream` overlapping `range`.
fn covering_ids<const N: usize>(
    requests: &Requests<N>,
    stream: usize,
    range: Range,
) -> impl Iterator<Item = u64> + '_ {
    requests
        .iter()
        .filter(move |r| {
            r.stream == stream && r.range.start < range.end && range.start < r.range.end
        })
        .map(|r| r.id)
}

/// What a failed FltSendMessage means for the reader.
fn send_failure(status: NTSTATUS) -> NTSTATUS {
    match status {
        STATUS_TIMEOUT => STATUS_CLOUD_FILE_REQUEST_TIMEOUT,
        STATUS_PORT_DISCONNECTED => STATUS_CLOUD_FILE_PROVIDER_TERMINATED,
        STATUS_INSUFFICIENT_RESOURCES => STATUS_CLOUD_FILE_INSUFFICIENT_RESOURCES,
        _ => STATUS_CLOUD_FILE_UNSUCCESSFUL,
    }
}

fn fail_ids(ids: &[(u64, Range)], status: NTSTATUS) {
    for (id, _) in ids {
        let mut after = After::new();
        FETCHES.with(|f| f.finish(*id, status, &mut after));
        after.run();
    }
}

/// Fails every request whose deadline has passed with REQUEST_TIMEOUT.
fn expire() {
    loop {
        let mut after = After::new();
        let more = FETCHES.with(|f| {
            let t = now();
            while after.has_room() {
                match f.requests.expired(t) {
                    Some(id) => f.finish(id, STATUS_CLOUD_FILE_REQUEST_TIMEOUT, &mut after),
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

/// Fails every request of a provider that went away (DisconnectNotify).
pub(crate) fn provider_gone(owner: usize) {
    loop {
        let mut after = After::new();
        let more = FETCHES.with(|f| {
            while after.has_room() {
                match f.requests.of_owner(owner) {
                    Some(id) => f.finish(id, STATUS_CLOUD_FILE_PROVIDER_TERMINATED, &mut after),
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

/// Opens the stream's writer if it has none (the first fetch of a round).
fn open_writer(target: &Target<'_>) -> Result<(), NTSTATUS> {
    let stream = target.stream;
    let has = FETCHES.with(|f| stream.with_state(&f.held, |s| s.writer.is_some()));
    if has {
        return Ok(());
    }
    let Some(filter) = super::filter::filter() else {
        return Err(STATUS_CLOUD_FILE_PROVIDER_NOT_RUNNING);
    };
    let file = OwnedFile::open(
        filter,
        stream.instance,
        target.name,
        0x0002 | 0x0100 | 0x0080, // FILE_WRITE_DATA | FILE_WRITE_ATTRIBUTES | FILE_READ_ATTRIBUTES
        1,                        // FILE_OPEN
        Kind::File,
        0,
    )?;
    file.freeze_times()?;
    let extra = FETCHES.with(|f| {
        stream.with_state(&f.held, |s| {
            if s.writer.is_none() && s.writer_users > 0 {
                s.writer = Some(file);
                None
            } else {
                Some(file)
            }
        })
    });
    drop(extra);
    Ok(())
}

/// Sends FETCH_DATA for request `id`.
fn send_fetch(
    target: &Target<'_>,
    provider: &ProviderRef,
    id: u64,
    range: Range,
    priority: u8,
) -> NTSTATUS {
    let stream = target.stream;
    let size = FETCHES.with(|f| stream.with_state(&f.held, |s| s.file_size));
    let relative = syncroot::under(provider.root(), target.name).unwrap_or(&[]);
    let message = FetchData {
        request_id: id,
        file_id: stream.file_id,
        file_size: size,
        required: WireRange::new(range.start, range.len()),
        priority,
        requestor_pid: target.requestor_pid,
        requestor_image: Utf16::from_units(clip_units(
            target.requestor_image,
            cloudflt_proto::msg::MAX_IMAGE_BYTES / 2,
        )),
        path: Utf16::from_units(relative),
        identity: stream.identity(),
    };
    let Some(mut buffer) = PoolBuf::zeroed(message.encoded_len()) else {
        return STATUS_INSUFFICIENT_RESOURCES;
    };
    match message.encode(buffer.as_mut_slice()) {
        Ok(len) => send(provider, buffer.as_slice().get(..len).unwrap_or(&[])),
        Err(_) => STATUS_CLOUD_FILE_INVALID_REQUEST,
    }
}

fn clip_units(units: &[u16], max: usize) -> &[u16] {
    units.get(..max).unwrap_or(units)
}

/// PROGRESSIVE: asks for the rest of the file after the read completed; nobody waits.
fn start_background(target: &Target<'_>, provider: &ProviderRef, whole: Range) {
    let stream = target.stream;
    let mut to_send = [(0u64, Range::default()); GAPS_PER_ROUND];
    let mut sends = 0;
    FETCHES.with(|f| {
        // As in `ensure`: a provider going away refuses new requests.
        if provider.is_gone() {
            return;
        }
        let mut cursor = whole.start;
        while sends < GAPS_PER_ROUND && cursor < whole.end {
            let gap = stream.with_state(&f.held, |s| {
                s.present.first_gap(Range {
                    start: cursor,
                    end: whole.end,
                })
            });
            let Some(gap) = gap else { break };
            let Some(missing) = f.requests.unrequested(key(stream), gap) else {
                cursor = gap.end;
                continue;
            };
            cursor = missing.end;
            let due = now().saturating_add(provider.timeout);
            let Ok(id) = f.requests.start(key(stream), missing, provider.key(), due) else {
                break;
            };
            // SAFETY: a live context (the caller holds a reference).
            unsafe { FltReferenceContext((stream as *const StreamContext).cast_mut().cast()) };
            stream.with_state(&f.held, |s| s.writer_users += 1);
            if let Some(slot) = to_send.get_mut(sends) {
                *slot = (id, missing);
                sends += 1;
            }
        }
    });
    if sends == 0 {
        return;
    }
    if let Err(status) = open_writer(target) {
        fail_ids(to_send.get(..sends).unwrap_or(&[]), status);
        return;
    }
    for (id, range) in to_send.iter().take(sends) {
        let status = send_fetch(target, provider, *id, *range, PRIORITY_BACKGROUND);
        if !nt_success(status) || status == STATUS_TIMEOUT {
            fail_ids(&[(*id, *range)], send_failure(status));
        }
    }
}

/// TRANSFER_DATA from `provider`: writes the data, records it, wakes the waiters.
pub(crate) fn transfer(provider: &ProviderRef, message: &TransferData<'_>) -> NTSTATUS {
    let id = message.request_id;
    let owner = provider.key();
    // Pin the request's stream and writer for the duration of the write.
    let pinned = FETCHES.with(|f| {
        let request = f.requests.get(id).copied().filter(|r| r.owner == owner)?;
        f.requests
            .touch(owner, now().saturating_add(provider.timeout));
        // SAFETY: the request holds a reference on its stream.
        let stream = unsafe { stream_of(request.stream) };
        // SAFETY: a live context; this reference is dropped at the end of `transfer`.
        unsafe { FltReferenceContext((stream as *const StreamContext).cast_mut().cast()) };
        let size = stream.with_state(&f.held, |s| {
            s.writer_users += 1;
            s.file_size
        });
        Some((request.stream, size))
    });
    let Some((stream_key, size)) = pinned else {
        return STATUS_CLOUD_FILE_INVALID_REQUEST;
    };
    // SAFETY: referenced just above.
    let stream = unsafe { stream_of(stream_key) };
    let status = write_and_record(stream, message, size);
    let mut after = After::new();
    FETCHES.with(|f| {
        let writer = stream.with_state(&f.held, |s| {
            s.writer_users = s.writer_users.saturating_sub(1);
            if s.writer_users == 0 {
                s.writer.take()
            } else {
                None
            }
        });
        after.release(stream_key, writer);
        if nt_success(status) {
            // Every request of this stream whose range is now present is done.
            while after.has_room() {
                let done = f.requests.first_done(stream_key, |r| {
                    stream.with_state(&f.held, |s| {
                        s.present.contains(r.clip(Range {
                            start: 0,
                            end: s.file_size,
                        }))
                    })
                });
                match done {
                    Some(done) => f.finish(done, STATUS_SUCCESS, &mut after),
                    None => break,
                }
            }
        } else {
            f.finish(id, STATUS_CLOUD_FILE_UNSUCCESSFUL, &mut after);
        }
    });
    after.run();
    status
}

/// Writes a transfer's bytes to disk and records them in the stream and the reparse data.
fn write_and_record(stream: &StreamContext, message: &TransferData<'_>, size: u64) -> NTSTATUS {
    let offset = message.offset;
    let length = message.data.len() as u64;
    if !policy::transfer_is_valid(offset, length, size) {
        return STATUS_CLOUD_FILE_INVALID_REQUEST;
    }
    // Bytes past end of file (an aligned tail) are not data.
    let useful = length.min(size.saturating_sub(offset));
    let Ok(useful_len) = usize::try_from(useful) else {
        return STATUS_CLOUD_FILE_INVALID_REQUEST;
    };
    let padded = useful.next_multiple_of(UNIT);
    let Some(mut buffer) = usize::try_from(padded).ok().and_then(PoolBuf::zeroed) else {
        return STATUS_CLOUD_FILE_INSUFFICIENT_RESOURCES;
    };
    if let (Some(dst), Some(src)) = (
        buffer.as_mut_slice().get_mut(..useful_len),
        message.data.get(..useful_len),
    ) {
        super::file::copy(dst, src);
    }
    let result = FETCHES.with(|f| {
        stream.with_state(&f.held, |s| {
            // The writer is pinned by this transfer's use count.
            s.writer.as_ref().map(|w| w as *const OwnedFile)
        })
    });
    let Some(writer) = result else {
        return STATUS_CLOUD_FILE_INVALID_REQUEST;
    };
    // SAFETY: the writer stays open while `writer_users` counts this transfer.
    let writer = unsafe { &*writer };
    if let Err(status) = writer.write_noncached(offset, &buffer) {
        return status;
    }
    if offset.saturating_add(padded) > size
        && let Err(status) = writer.set_end_of_file(size)
    {
        return status;
    }
    let range = Range {
        start: offset,
        end: offset.saturating_add(useful),
    };
    // Present once recorded: nobody reads the range, or finishes a fetch for it, before
    // the reparse data holds it.
    record(stream, writer, Some(range))
}

/// Writes the stream's current state into its reparse data (and the OFFLINE /
/// RECALL_ON_DATA_ACCESS attributes), after any write of it already under way.
pub(crate) fn persist(stream: &StreamContext, file: &OwnedFile) -> NTSTATUS {
    record(stream, file, None)
}

/// Writes the stream's state, with `added` present, into its reparse data; once that is
/// written, `added` is present in memory too. One write at a time per stream: the
/// snapshot is taken when this thread's turn comes, so it holds every range recorded
/// before it, and the record on disk only ever gets newer.
fn record(stream: &StreamContext, file: &OwnedFile, added: Option<Range>) -> NTSTATUS {
    let mut snapshot = Snapshot::new();
    let seq = take_turn(stream, &mut snapshot, added);
    let status = snapshot.write(stream, file);
    FETCHES.with(|f| {
        stream.with_state(&f.held, |s| {
            if nt_success(status)
                && let Some(range) = added
            {
                s.present.insert(range);
            }
            // The turn passes on.
            s.persisted = seq;
        });
        // Readers are woken by the fetches this finishes (`transfer`), in the same lock
        // as the requests leave the table: none returns while its fetch looks busy.
        f.wake_writers(key(stream));
    });
    status
}

/// Waits until no write of the stream's reparse data is under way (`snapshot` is ahead of
/// `persisted` while one is), then takes the turn: numbers a new snapshot and fills
/// `snapshot` from the state, with `added` present. Returns the snapshot's number.
fn take_turn(stream: &StreamContext, snapshot: &mut Snapshot, added: Option<Range>) -> u64 {
    let event = Event::uninit();
    event.init();
    let mut waiter = Waiter {
        slot: None,
        event: &event,
    };
    loop {
        event.reset();
        let taken = FETCHES.with(|f| {
            let taken = stream.with_state(&f.held, |s| {
                if s.snapshot != s.persisted {
                    return None;
                }
                s.snapshot = s.snapshot.wrapping_add(1);
                snapshot.fill(s, added);
                Some(s.snapshot)
            });
            if taken.is_none() && waiter.slot.is_none() {
                waiter.slot = f.waiters.iter().position(Option::is_none);
                if let Some(slot) = waiter.slot.and_then(|i| f.waiters.get_mut(i)) {
                    *slot = Some(WaiterEntry {
                        stream: key(stream),
                        file_object: 0,
                        event: NonNull::from(waiter.event),
                        aborted: false,
                        reader: false,
                    });
                }
            }
            taken
        });
        if let Some(seq) = taken {
            return seq;
        }
        // The writer before this one wakes the stream's waiters when it is done; without
        // a slot, look again soon.
        let relative = -if waiter.slot.is_some() {
            PERSIST_WAIT
        } else {
            POLL
        };
        // SAFETY: an initialised event on this frame; PASSIVE_LEVEL (transfers and the
        // provider's requests); a relative timeout.
        unsafe {
            KeWaitForSingleObject(
                event.object(),
                Executive,
                KernelMode as i8,
                false,
                &relative,
            )
        };
    }
}

/// A copy of the state to encode with no lock held.
struct Snapshot {
    flags: PlaceholderFlags,
    size: u64,
    present: RangeSet<STREAM_RANGES>,
}

impl Snapshot {
    fn new() -> Self {
        Self {
            flags: PlaceholderFlags::EMPTY,
            size: 0,
            present: RangeSet::new(),
        }
    }

    fn fill(&mut self, s: &StreamState, added: Option<Range>) {
        self.flags = s.flags;
        self.size = s.file_size;
        self.present = s.present;
        if let Some(range) = added {
            self.present.insert(range);
        }
    }

    fn write(&self, stream: &StreamContext, file: &OwnedFile) -> NTSTATUS {
        let mut wire = [WireRange::new(0, 0); STREAM_RANGES];
        let mut count = 0;
        for (slot, r) in wire.iter_mut().zip(self.present.iter()) {
            *slot = WireRange::new(r.start, r.len());
            count += 1;
        }
        let ranges = RangeList::from_slice(wire.get(..count).unwrap_or(&[]));
        let full = ranges.hydrated_bytes() >= self.size;
        let result = placeholder::encode_blob(self.flags, self.size, stream.identity(), ranges)
            .and_then(|(blob, len)| file.tag(blob.as_slice().get(..len).unwrap_or(&[])))
            .and_then(|()| {
                if full {
                    file.change_attributes(MISSING_DATA_ATTRIBUTES, 0)
                } else {
                    file.change_attributes(0, MISSING_DATA_ATTRIBUTES)
                }
            });
        match result {
            Ok(()) => STATUS_SUCCESS,
            Err(status) => status,
        }
    }
}

/// FETCH_FAILED from `provider`: the waiting reads fail with the provider's status, or
/// STATUS_CLOUD_FILE_UNSUCCESSFUL for one outside the cloud-file family.
pub(crate) fn failed(provider: &ProviderRef, message: &FetchFailed) -> NTSTATUS {
    let status = cloud_status(message.status);
    let mut after = After::new();
    let known = FETCHES.with(|f| {
        let known = f
            .requests
            .get(message.request_id)
            .is_some_and(|r| r.owner == provider.key());
        if known {
            f.requests
                .touch(provider.key(), now().saturating_add(provider.timeout));
            f.finish(message.request_id, status, &mut after);
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

/// A provider's failure status as the application will see it.
pub(crate) fn cloud_status(status: NTSTATUS) -> NTSTATUS {
    if (status as u32) & 0xFFFF_FF00 == 0xC000_CF00 {
        status
    } else {
        STATUS_CLOUD_FILE_UNSUCCESSFUL
    }
}

/// Runs `f` with the fetch table's lock held, for the placeholder operations that read
/// or change a stream's state.
pub(crate) fn with_held<R>(f: impl FnOnce(&Held) -> R) -> R {
    FETCHES.with(|t| f(&t.held))
}

/// Whether any fetch of `stream` is outstanding (dehydration waits for none).
pub(crate) fn busy(stream: &StreamContext) -> bool {
    FETCHES.with(|f| f.requests.of_stream(key(stream)).is_some())
}

/// Wakes every waiter (a stream's state changed outside a transfer).
pub(crate) fn wake_all() {
    FETCHES.with(|f| f.wake(None));
}
