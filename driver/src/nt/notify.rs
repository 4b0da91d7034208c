//! Notifications (issue 14): telling a provider what users do to the placeholders of its
//! sync root, and for deletes, renames and dehydrations waiting for its verdict.
//!
//! - [`ask`] sends a blocking NOTIFY and waits for the provider's ACK_NOTIFY in the
//!   requesting thread, on an event of its own, cancellably (the operation's
//!   cancellation or the thread's termination end the wait). Never in a system thread:
//!   the operations that ask run in their requestor's context, and a system thread's
//!   operation is not held up for a user-mode verdict (it proceeds; see [`ask`]).
//! - The verdict: the provider's status when it refuses (one of the STATUS_CLOUD_FILE_*
//!   family as it is, any other failure as STATUS_CLOUD_FILE_UNSUCCESSFUL, cfapi's rule);
//!   STATUS_CLOUD_FILE_REQUEST_TIMEOUT when it said nothing within the root's timeout
//!   (any valid message of the provider restarts the clocks of all its notifications, as
//!   for fetches: [`restart`]); STATUS_CLOUD_FILE_PROVIDER_TERMINATED when it
//!   disconnected meanwhile.
//! - [`tell`] sends a completion, and does not wait for an answer.
//! - Deadlines are a kernel timer ([`Alarm`]) set for the earliest one; nothing polls.
//!
//! Which kinds a provider gets is its choice at connect ([`Provider::notifications`]);
//! with no provider connected nothing is asked and the operation proceeds.
//!
//! [`Provider::notifications`]: super::providers::Provider

use core::sync::atomic::{AtomicU64, Ordering};

use cloudflt_proto::Utf16;
use cloudflt_proto::connect::ConnectFlags;
use cloudflt_proto::msg::{
    AckNotify, DehydrationReason, MAX_IMAGE_BYTES, Notify, NotifyKind, RequestFlags,
};
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FLT_CALLBACK_DATA, FltCancellableWaitForSingleObject, PFLT_FILTER,
};
use windows_sys::Win32::Foundation::{
    NTSTATUS, STATUS_ALERTED, STATUS_CANCELLED, STATUS_CLOUD_FILE_INSUFFICIENT_RESOURCES,
    STATUS_CLOUD_FILE_INVALID_REQUEST, STATUS_CLOUD_FILE_PROVIDER_TERMINATED,
    STATUS_CLOUD_FILE_REQUEST_ABORTED, STATUS_CLOUD_FILE_REQUEST_TIMEOUT, STATUS_SUCCESS,
    STATUS_THREAD_IS_TERMINATING, STATUS_TIMEOUT, STATUS_USER_APC,
};

use super::file::PoolBuf;
use super::list::{List, Node};
use super::pool::tag;
use super::providers::ProviderRef;
use super::status::{NtStatus, nt_success};
use super::sync::{Event, SpinLock};
use super::timer::{Alarm, now};
use crate::engine::syncroot;

const TAG_NOTIFICATION: u32 = tag(b"CFnt");

/// The System process, whose threads are the system's own: their operations are not
/// held up for a user-mode verdict.
use crate::engine::visibility::SYSTEM_PID;

/// What a notification is about.
pub(crate) struct Subject<'a> {
    pub(crate) kind: NotifyKind,
    /// The kind's flags (cfapi's CF_CALLBACK_*_FLAGS).
    pub(crate) flags: u32,
    pub(crate) reason: DehydrationReason,
    pub(crate) file_id: u64,
    pub(crate) file_size: u64,
    /// The file's normalized NT path.
    pub(crate) name: &'a [u16],
    /// A rename's target, or a rename completion's source (an NT path); empty otherwise.
    pub(crate) target: &'a [u16],
    /// The placeholder's file identity.
    pub(crate) identity: &'a [u8],
    pub(crate) requestor_pid: u32,
    pub(crate) requestor_image: &'a [u16],
    /// The requestor's command line when it could be read (REQUIRE_PROCESS_INFO).
    pub(crate) command_line: Option<&'a [u16]>,
}

/// One notification waiting for its verdict.
struct Pending {
    /// Never reused while the driver runs.
    id: u64,
    /// The provider it was sent to ([`ProviderRef::key`]).
    owner: usize,
    deadline: i64,
    /// Set once the verdict is in; initialised at its final address, in the node.
    event: Event,
    verdict: Option<NTSTATUS>,
}

struct Table {
    pending: List<Pending>,
    /// What the alarm is set for (`i64::MAX`: nothing).
    alarm_due: i64,
}

static TABLE: SpinLock<Table> = SpinLock::new(Table {
    pending: List::new(),
    alarm_due: i64::MAX,
});

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

static ALARM: Alarm = Alarm::new(expire);

/// Starts the alarm (filter setup).
pub(crate) fn start(filter: PFLT_FILTER) -> NTSTATUS {
    TABLE.with(|t| t.alarm_due = i64::MAX);
    ALARM.start(filter)
}

/// Stops the alarm and ends every wait (teardown, before FltUnregisterFilter; the
/// providers are gone by then, so nothing is left to answer).
pub(crate) fn stop() {
    ALARM.stop();
    decide_all(|_| true, STATUS_CLOUD_FILE_REQUEST_ABORTED);
}

/// The message for `subject` as `provider` asked to be told (its path relative to the
/// root, or full; its command line), encoded into pool.
fn encode(provider: &ProviderRef, subject: &Subject<'_>, id: u64) -> Option<(PoolBuf, usize)> {
    let wants = provider.connect_flags;
    let mut request_flags = RequestFlags::EMPTY;
    let path = if wants.contains(ConnectFlags::REQUIRE_FULL_FILE_PATH) {
        request_flags = request_flags.union(RequestFlags::FULL_PATH);
        subject.name
    } else {
        syncroot::under(provider.root(), subject.name).unwrap_or(subject.name)
    };
    const UNKNOWN: [u16; 7] = [85, 78, 75, 78, 79, 87, 78];
    let command_line: &[u16] = if wants.contains(ConnectFlags::REQUIRE_PROCESS_INFO) {
        request_flags = request_flags.union(RequestFlags::PROCESS_INFO);
        match subject.command_line {
            Some(units) if !units.is_empty() => units,
            _ => &UNKNOWN,
        }
    } else {
        &[]
    };
    let image = subject
        .requestor_image
        .get(..MAX_IMAGE_BYTES / 2)
        .unwrap_or(subject.requestor_image);
    provider.with_identities(|sync_root_identity, _| {
        let message = Notify {
            request_id: id,
            kind: subject.kind,
            flags: subject.flags,
            reason: subject.reason,
            file_id: subject.file_id,
            file_size: subject.file_size,
            requestor_pid: subject.requestor_pid,
            requestor_image: Utf16::from_units(image),
            request_flags,
            path: Utf16::from_units(path),
            target_path: Utf16::from_units(subject.target),
            identity: subject.identity,
            requestor_command_line: Utf16::from_units(command_line),
            sync_root_identity,
        };
        let mut buffer = PoolBuf::zeroed(message.encoded_len())?;
        let len = message.encode(buffer.as_mut_slice()).ok()?;
        Some((buffer, len))
    })
}

/// How long a completion may wait for the provider to take it (100 ns units): it only
/// informs, and the operation it reports is over.
const TELL_TIMEOUT: i64 = 10_000_000;

/// Sends `subject` (a completion, an open or a close) if `provider` asked for its kind,
/// without waiting for an answer. Best effort: a provider that cannot take it within a
/// second misses it. PASSIVE_LEVEL.
pub(crate) fn tell(provider: &ProviderRef, subject: &Subject<'_>) {
    if !provider.notifications.wants(subject.kind)
        || subject.kind.blocks()
        || subject.requestor_pid as usize == provider.pid
    {
        return;
    }
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    if let Some((buffer, len)) = encode(provider, subject, id) {
        let _ = provider.send_within(
            buffer.as_slice().get(..len).unwrap_or(&[]),
            provider.timeout.min(TELL_TIMEOUT),
        );
    }
}

/// Asks `provider` about `subject` (a delete, rename or dehydration) if it asked for its
/// kind, and waits for its verdict in the calling thread: `Ok` to proceed, or the status
/// the operation fails with. `data` is the operation whose cancellation ends the wait
/// (NULL for none). PASSIVE_LEVEL, in the requestor's thread.
///
/// An operation of the System process does not wait for a user-mode verdict: it proceeds
/// (the driver never blocks a system thread on user mode; cfapi's callbacks serve the
/// operations of users).
pub(crate) fn ask(
    provider: &ProviderRef,
    subject: &Subject<'_>,
    data: *const FLT_CALLBACK_DATA,
) -> Result<(), NTSTATUS> {
    if !provider.notifications.wants(subject.kind) || !subject.kind.blocks() {
        return Ok(());
    }
    // The provider's own operations on its placeholders are its own business (its I/O
    // passes untouched, DESIGN.md): it is not asked about them.
    if subject.requestor_pid == SYSTEM_PID || subject.requestor_pid as usize == provider.pid {
        return Ok(());
    }
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let (buffer, len) =
        encode(provider, subject, id).ok_or(STATUS_CLOUD_FILE_INSUFFICIENT_RESOURCES)?;
    let node = Node::new(
        Pending {
            id,
            owner: provider.key(),
            deadline: i64::MAX,
            event: Event::uninit(),
            verdict: None,
        },
        TAG_NOTIFICATION,
    )
    .ok_or(STATUS_CLOUD_FILE_INSUFFICIENT_RESOURCES)?;
    // At its final address, in the node.
    node.value.event.init();
    let event = node.value.event.object();
    // Linked before it is sent: the provider's answer may come before the send returns.
    let due = now().saturating_add(provider.timeout);
    TABLE.with(|t| {
        let mut node = node;
        node.value.deadline = due;
        t.pending.push(node);
    });
    arm(due);
    let sent = provider.send_within(
        buffer.as_slice().get(..len).unwrap_or(&[]),
        provider.timeout,
    );
    drop(buffer);
    if !nt_success(sent) || sent == STATUS_TIMEOUT {
        // Never taken: nobody will answer it.
        take(id);
        return Err(NtStatus::from_send_failure(sent).raw());
    }
    wait(id, event, data)
}

/// Waits for notification `id` (linked by this thread, with `event`) to be decided, then
/// unlinks it.
fn wait(
    id: u64,
    event: *const core::ffi::c_void,
    data: *const FLT_CALLBACK_DATA,
) -> Result<(), NTSTATUS> {
    loop {
        // SAFETY: the notification's initialised event, alive until this thread unlinks
        // it below; PASSIVE_LEVEL; no timeout (the alarm ends notifications that take too
        // long); the callback data (if any) is the operation this thread serves.
        let status = unsafe { FltCancellableWaitForSingleObject(event, core::ptr::null(), data) };
        let gave_up = matches!(
            status,
            STATUS_CANCELLED | STATUS_THREAD_IS_TERMINATING | STATUS_USER_APC | STATUS_ALERTED
        );
        let verdict = TABLE.with(|t| {
            let verdict = t.pending.iter().find(|p| p.id == id)?.verdict;
            verdict.or(gave_up.then_some(STATUS_CANCELLED))
        });
        if let Some(verdict) = verdict {
            take(id);
            return if nt_success(verdict) {
                Ok(())
            } else {
                Err(verdict)
            };
        }
    }
}

/// Unlinks notification `id` and frees it (outside the lock).
fn take(id: u64) {
    let node = TABLE.with(|t| t.pending.take_first(|p| p.id == id));
    drop(node);
}

/// Sets the alarm for `due` if it is set for later.
fn arm(due: i64) {
    let set = TABLE.with(|t| {
        if due < t.alarm_due {
            t.alarm_due = due;
            true
        } else {
            false
        }
    });
    if set {
        ALARM.set(due.saturating_sub(now()));
    }
}

/// ACK_NOTIFY from `provider`: its verdict on one of its notifications. A notification
/// it does not have (answered already, timed out, never sent to it) is an invalid
/// request.
pub(crate) fn acknowledge(provider: &ProviderRef, m: &AckNotify) -> NTSTATUS {
    let owner = provider.key();
    let verdict = if m.status >= 0 {
        STATUS_SUCCESS
    } else {
        NtStatus::from_provider(m.status).raw()
    };
    let known = TABLE.with(|t| {
        let Some(p) = t
            .pending
            .iter_mut()
            .find(|p| p.id == m.request_id && p.owner == owner && p.verdict.is_none())
        else {
            return false;
        };
        p.verdict = Some(verdict);
        p.event.set();
        true
    });
    if known {
        STATUS_SUCCESS
    } else {
        STATUS_CLOUD_FILE_INVALID_REQUEST
    }
}

/// Any valid message of the provider `owner` restarts the clocks of all its
/// notifications (cfapi's rule, as for fetches).
pub(crate) fn restart(owner: usize, due: i64) {
    TABLE.with(|t| {
        for p in t
            .pending
            .iter_mut()
            .filter(|p| p.owner == owner && p.verdict.is_none())
        {
            p.deadline = due;
        }
    });
}

/// The provider `owner` went away (DisconnectNotify, or its root unregistered): its
/// notifications fail with STATUS_CLOUD_FILE_PROVIDER_TERMINATED.
pub(crate) fn provider_gone(owner: usize) {
    decide_all(|p| p.owner == owner, STATUS_CLOUD_FILE_PROVIDER_TERMINATED);
}

/// Decides every undecided notification `which` accepts with `status`.
fn decide_all(which: impl Fn(&Pending) -> bool, status: NTSTATUS) {
    TABLE.with(|t| {
        for p in t
            .pending
            .iter_mut()
            .filter(|p| p.verdict.is_none() && which(p))
        {
            p.verdict = Some(status);
            p.event.set();
        }
    });
}

/// The alarm: notifications past their deadline time out; it is set again for the
/// earliest deadline left.
fn expire() {
    let next = TABLE.with(|t| {
        t.alarm_due = i64::MAX;
        let at = now();
        let mut next = i64::MAX;
        for p in t.pending.iter_mut().filter(|p| p.verdict.is_none()) {
            if p.deadline <= at {
                p.verdict = Some(STATUS_CLOUD_FILE_REQUEST_TIMEOUT);
                p.event.set();
            } else {
                next = next.min(p.deadline);
            }
        }
        next
    });
    if next != i64::MAX {
        arm(next);
    }
}
