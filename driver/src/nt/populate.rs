//! Population (issue 15): a directory placeholder that is not populated yet is filled from
//! its provider the first time anyone lists it or opens a name beneath it (cfapi's
//! population policy FULL).
//!
//! - Where the state lives: a directory placeholder's reparse data
//!   ([`PlaceholderFlags::NOT_POPULATED`]); the sync root's in its registration record
//!   (DISABLE_ON_DEMAND_POPULATION_ON_ROOT, [`roots::root_populated`]), as the root
//!   directory has no reparse data of its own.
//! - [`ensure`] runs in the requesting thread of a directory query or a create, at
//!   PASSIVE_LEVEL: one FETCH_PLACEHOLDERS per directory however many threads want it
//!   (they join the population in flight and wait on its notification event), cancellable
//!   by each waiter's operation; when the last waiter gives up, the population is
//!   cancelled (CANCEL_FETCH_PLACEHOLDERS, IO_ABORTED) and its later batches refused.
//! - [`transfer`] takes the provider's TRANSFER_PLACEHOLDERS batches in the provider's
//!   thread: each entry becomes a placeholder as CREATE_PLACEHOLDER makes one; a name that
//!   exists is left as it is and reported (STATUS_OBJECT_NAME_COLLISION). The population
//!   completes once the batches processed as many entries as the provider's total; it is
//!   then marked populated only if the completing batch carried
//!   DISABLE_ON_DEMAND_POPULATION and no entry failed — otherwise the listing proceeds
//!   with what was created, and the directory is asked for again next time.
//! - Deadlines: the root's timeout, restarted by any valid message of the provider (as for
//!   fetches and notifications); past it the waiters fail with
//!   STATUS_CLOUD_FILE_REQUEST_TIMEOUT and the provider is sent CANCEL_FETCH_PLACEHOLDERS
//!   (IO_TIMEOUT). A provider that disconnects fails its populations with
//!   STATUS_CLOUD_FILE_PROVIDER_TERMINATED; a batch with a failure status fails them with
//!   that status (a STATUS_CLOUD_FILE_* as it is, anything else as
//!   STATUS_CLOUD_FILE_UNSUCCESSFUL). Whatever placeholders were created stay.
//!
//! Memory: a population is one small node (its directory's path relative to the root);
//! each batch is processed from the message buffer FltMgr hands the driver (at most
//! [`MAX_BATCH_ENTRIES`] entries), so a directory of any size costs the same.
//!
//! [`MAX_BATCH_ENTRIES`]: cloudflt_proto::msg::MAX_BATCH_ENTRIES

use core::sync::atomic::{AtomicU64, Ordering};

use cloudflt_proto::connect::ConnectFlags;
use cloudflt_proto::msg::{
    self, CancelFetchPlaceholders, CancelReason, FetchPlaceholders, MAX_IMAGE_BYTES,
    PopulationFlags, RequestFlags, TransferPlaceholders, TransferPlaceholdersResult,
};
use cloudflt_proto::{Placeholder, PlaceholderFlags, Utf16};
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FLT_CALLBACK_DATA, FltCancellableWaitForSingleObject, PFLT_FILTER, PFLT_INSTANCE,
};
use windows_sys::Win32::Foundation::{
    NTSTATUS, STATUS_ALERTED, STATUS_CANCELLED, STATUS_CLOUD_FILE_INSUFFICIENT_RESOURCES,
    STATUS_CLOUD_FILE_INVALID_REQUEST, STATUS_CLOUD_FILE_PROVIDER_TERMINATED,
    STATUS_CLOUD_FILE_REQUEST_ABORTED, STATUS_CLOUD_FILE_REQUEST_TIMEOUT,
    STATUS_OBJECT_NAME_COLLISION, STATUS_OBJECT_NAME_NOT_FOUND, STATUS_OBJECT_PATH_NOT_FOUND,
    STATUS_SUCCESS, STATUS_THREAD_IS_TERMINATING, STATUS_TIMEOUT, STATUS_USER_APC,
};

use super::file::{Kind, OwnedFile, PoolBuf};
use super::list::{List, Node};
use super::placeholder::Payload;
use super::pool::tag;
use super::providers::ProviderRef;
use super::roots;
use super::status::{NtStatus, nt_success};
use super::sync::{Event, SpinLock};
use super::timer::{Alarm, now};
use crate::engine::syncroot;

const TAG_POPULATION: u32 = tag(b"CFpo");

/// The priority hint of a population: someone is waiting for it, as for a read.
const PRIORITY_POPULATE: u8 = 12;

const FILE_READ_ATTRIBUTES: u32 = 0x80;
const FILE_WRITE_ATTRIBUTES: u32 = 0x100;
const FILE_OPEN: u32 = 1;
const STATUS_NOT_A_DIRECTORY: NTSTATUS = 0xC000_0103_u32 as NTSTATUS;

/// Who wants the directory filled: the process whose query or open caused it.
pub(crate) struct Requestor<'a> {
    pub(crate) pid: u32,
    pub(crate) image: &'a [u16],
    /// Read in the requesting thread when the provider asked for process information.
    pub(crate) command_line: Option<&'a [u16]>,
}

/// One population in flight.
struct Population {
    /// Never reused while the driver runs; the provider's batches name it.
    id: u64,
    /// The provider it was sent to ([`ProviderRef::key`]).
    owner: usize,
    /// The directory: its volume's instance and its NTFS file id.
    instance: usize,
    file_id: u64,
    deadline: i64,
    /// Set once `outcome` is; initialised at its final address, in the node.
    event: Event,
    outcome: Option<NTSTATUS>,
    /// Threads waiting on it; the last one to leave unlinks it.
    waiters: u32,
    /// Entries processed so far, over every batch.
    processed: u64,
    /// An entry failed (other than by existing already): the directory is not complete.
    failed: bool,
    /// A batch is completing it (marking the directory): the alarm leaves it alone.
    completing: bool,
    /// What the provider is to be told when the population is unlinked.
    cancel: Option<CancelReason>,
    /// The directory's path relative to the root (empty: the root), in pool.
    relative: PoolBuf,
    relative_len: usize,
}

// SAFETY: the pool buffer it owns is usable and freed from any thread; the table is only
// reached under its lock.
unsafe impl Send for Population {}

struct Table {
    populations: List<Population>,
    /// What the alarm is set for (`i64::MAX`: nothing).
    alarm_due: i64,
}

static TABLE: SpinLock<Table> = SpinLock::new(Table {
    populations: List::new(),
    alarm_due: i64::MAX,
});

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

static ALARM: Alarm = Alarm::new(expire);

/// Starts the alarm (filter setup).
pub(crate) fn start(filter: PFLT_FILTER) -> NTSTATUS {
    TABLE.with(|t| t.alarm_due = i64::MAX);
    ALARM.start(filter)
}

/// Stops the alarm and ends every wait (teardown; the providers are gone by then).
pub(crate) fn stop() {
    ALARM.stop();
    decide_all(|_| true, STATUS_CLOUD_FILE_REQUEST_ABORTED, None);
}

/// What a directory's population state is.
pub(crate) enum State {
    /// Complete, or not cloudflt's, or not a directory: nothing to ask.
    Settled,
    /// Not there (yet): a parent may have to be populated first.
    Missing,
    /// Not populated: its id and its reparse data (none for the root).
    Unpopulated {
        file_id: u64,
        blob: Option<(PoolBuf, usize)>,
    },
}

/// The population state of the directory at `path` (a normalized NT path under `root`,
/// or the root itself), read below cloudflt. PASSIVE_LEVEL.
pub(crate) fn state(
    filter: PFLT_FILTER,
    instance: PFLT_INSTANCE,
    root: &[u16],
    path: &[u16],
) -> State {
    let is_root = syncroot::under(root, path).is_some_and(<[u16]>::is_empty);
    if is_root && roots::root_populated(root) != Some(false) {
        return State::Settled;
    }
    let file = match OwnedFile::open(
        filter,
        instance,
        path,
        FILE_READ_ATTRIBUTES,
        FILE_OPEN,
        Kind::Directory,
        0,
    ) {
        Ok(file) => file,
        Err(STATUS_OBJECT_NAME_NOT_FOUND | STATUS_OBJECT_PATH_NOT_FOUND) => return State::Missing,
        // A file, not a directory, or one the driver cannot open: nothing to populate
        // (the caller's own operation meets what it meets).
        Err(_) => return State::Settled,
    };
    let Ok(file_id) = file.file_id() else {
        return State::Settled;
    };
    if is_root {
        return State::Unpopulated {
            file_id,
            blob: None,
        };
    }
    let Ok(Some((blob, len))) = file.reparse_point() else {
        return State::Settled;
    };
    let unpopulated = Placeholder::decode_reparse(blob.as_slice().get(..len).unwrap_or(&[]))
        .is_ok_and(|p| {
            p.flags
                .contains(PlaceholderFlags::DIRECTORY.union(PlaceholderFlags::NOT_POPULATED))
        });
    if unpopulated {
        State::Unpopulated {
            file_id,
            blob: Some((blob, len)),
        }
    } else {
        State::Settled
    }
}

/// Makes sure the directory at `path` (normalized, under `provider`'s root or the root
/// itself) is populated before the caller's query or open goes on: populates it if it is
/// not, waiting for the provider. `data` is the operation whose cancellation ends the
/// wait. PASSIVE_LEVEL, in the requestor's thread.
pub(crate) fn ensure(
    provider: &ProviderRef,
    instance: PFLT_INSTANCE,
    path: &[u16],
    pattern: &[u16],
    who: &Requestor<'_>,
    data: *const FLT_CALLBACK_DATA,
) -> Result<(), NTSTATUS> {
    let filter = crate::nt::driver::filter().ok_or(STATUS_CLOUD_FILE_INVALID_REQUEST)?;
    match state(filter, instance, provider.root(), path) {
        State::Unpopulated { file_id, blob } => {
            let identity = blob
                .as_ref()
                .and_then(|(b, len)| b.as_slice().get(..*len))
                .and_then(|bytes| Placeholder::decode_reparse(bytes).ok())
                .map_or(&[][..], |p| p.identity);
            populate(
                provider, instance, file_id, path, identity, pattern, who, data,
            )
        }
        State::Settled | State::Missing => Ok(()),
    }
}

/// Makes sure every not-populated directory on the way to `target` (a name under
/// `provider`'s root being opened or created) is populated, so that the open finds what
/// the provider has: its parent first (one open below cloudflt in the common case); if
/// the parent is missing, the chain from the root down, each level populated in turn
/// until one is missing even after its parent's population.
pub(crate) fn ensure_path(
    provider: &ProviderRef,
    instance: PFLT_INSTANCE,
    target: &[u16],
    who: &Requestor<'_>,
    data: *const FLT_CALLBACK_DATA,
) -> Result<(), NTSTATUS> {
    const STAR: [u16; 1] = [b'*' as u16];
    let filter = crate::nt::driver::filter().ok_or(STATUS_CLOUD_FILE_INVALID_REQUEST)?;
    let root = provider.root();
    let Some(relative) = syncroot::under(root, target).filter(|r| !r.is_empty()) else {
        return Ok(());
    };
    let parent_len = target.len() - relative.len()
        + relative
            .iter()
            .rposition(|u| *u == u16::from(b'\\'))
            .unwrap_or(0);
    let parent = target.get(..parent_len).unwrap_or(root);
    let parent = if parent.len() < root.len() {
        root
    } else {
        parent
    };
    match state(filter, instance, root, parent) {
        State::Settled => return Ok(()),
        State::Unpopulated { .. } => return ensure(provider, instance, parent, &STAR, who, data),
        State::Missing => {}
    }
    // Each directory from the root down to the parent, by prefix.
    let mut end = root.len();
    loop {
        let directory = target.get(..end).unwrap_or(root);
        match state(filter, instance, root, directory) {
            State::Missing => return Ok(()),
            State::Settled => {}
            State::Unpopulated { .. } => ensure(provider, instance, directory, &STAR, who, data)?,
        }
        if end >= parent_len {
            return Ok(());
        }
        // The next component.
        let from = end + 1;
        end = target
            .get(from..parent_len)
            .and_then(|rest| rest.iter().position(|u| *u == u16::from(b'\\')))
            .map_or(parent_len, |at| from + at);
    }
}

/// Populates the directory `file_id` at `path`: joins the population in flight for it,
/// or starts one, and waits for its outcome.
#[allow(clippy::too_many_arguments)]
fn populate(
    provider: &ProviderRef,
    instance: PFLT_INSTANCE,
    file_id: u64,
    path: &[u16],
    identity: &[u8],
    pattern: &[u16],
    who: &Requestor<'_>,
    data: *const FLT_CALLBACK_DATA,
) -> Result<(), NTSTATUS> {
    let owner = provider.key();
    let volume = instance as usize;
    let joined = TABLE.with(|t| {
        let p = t.populations.iter_mut().find(|p| {
            p.owner == owner && p.instance == volume && p.file_id == file_id && p.outcome.is_none()
        })?;
        p.waiters += 1;
        Some((p.id, p.event.object()))
    });
    if let Some((id, event)) = joined {
        return wait(provider, id, event, data);
    }
    let relative = syncroot::under(provider.root(), path).unwrap_or(&[]);
    let mut copy = PoolBuf::zeroed(relative.len().saturating_mul(2).max(2))
        .ok_or(STATUS_CLOUD_FILE_INSUFFICIENT_RESOURCES)?;
    for (chunk, unit) in copy.as_mut_slice().chunks_exact_mut(2).zip(relative) {
        super::file::copy(chunk, &unit.to_le_bytes());
    }
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let node = Node::new(
        Population {
            id,
            owner,
            instance: volume,
            file_id,
            deadline: i64::MAX,
            event: Event::uninit(),
            outcome: None,
            waiters: 1,
            processed: 0,
            failed: false,
            completing: false,
            cancel: None,
            relative: copy,
            relative_len: relative.len(),
        },
        TAG_POPULATION,
    )
    .ok_or(STATUS_CLOUD_FILE_INSUFFICIENT_RESOURCES)?;
    node.value.event.init();
    let event = node.value.event.object();
    let due = now().saturating_add(provider.timeout);
    // Linked before anything is sent (the provider may answer before the send returns),
    // unless another thread linked one for the same directory meanwhile: then that one
    // is joined.
    let raced = TABLE.with(|t| {
        if let Some(p) = t.populations.iter_mut().find(|p| {
            p.owner == owner && p.instance == volume && p.file_id == file_id && p.outcome.is_none()
        }) {
            p.waiters += 1;
            return Some((p.id, p.event.object()));
        }
        let mut node = node;
        node.value.deadline = due;
        t.populations.push(node);
        None
    });
    if let Some((other, other_event)) = raced {
        return wait(provider, other, other_event, data);
    }
    // A population that completed between the caller's look and the link marked the
    // directory before it was decided: looked at again, nothing is asked twice.
    let filter = crate::nt::driver::filter().ok_or(STATUS_CLOUD_FILE_INVALID_REQUEST)?;
    if !matches!(
        state(filter, instance, provider.root(), path),
        State::Unpopulated { .. }
    ) {
        decide(id, STATUS_SUCCESS, None);
        return wait(provider, id, event, data);
    }
    arm(due);
    let sent = match encode(provider, id, file_id, path, identity, pattern, who) {
        Some((buffer, len)) => provider.send_within(
            buffer.as_slice().get(..len).unwrap_or(&[]),
            provider.timeout,
        ),
        None => STATUS_CLOUD_FILE_INSUFFICIENT_RESOURCES,
    };
    if !nt_success(sent) || sent == STATUS_TIMEOUT {
        // Never taken: nobody will answer it.
        decide(id, NtStatus::from_send_failure(sent).raw(), None);
    }
    wait(provider, id, event, data)
}

/// FETCH_PLACEHOLDERS for the directory, as `provider` asked to be told (its path
/// relative to the root or full, the requestor's command line), encoded into pool.
fn encode(
    provider: &ProviderRef,
    id: u64,
    file_id: u64,
    path: &[u16],
    identity: &[u8],
    pattern: &[u16],
    who: &Requestor<'_>,
) -> Option<(PoolBuf, usize)> {
    let wants = provider.connect_flags;
    let mut flags = RequestFlags::EMPTY;
    let relative = syncroot::under(provider.root(), path).unwrap_or(&[]);
    let is_root = relative.is_empty();
    let shown = if wants.contains(ConnectFlags::REQUIRE_FULL_FILE_PATH) {
        flags = flags.union(RequestFlags::FULL_PATH);
        path
    } else {
        relative
    };
    const UNKNOWN: [u16; 7] = [85, 78, 75, 78, 79, 87, 78];
    let command_line: &[u16] = if wants.contains(ConnectFlags::REQUIRE_PROCESS_INFO) {
        flags = flags.union(RequestFlags::PROCESS_INFO);
        match who.command_line {
            Some(units) if !units.is_empty() => units,
            _ => &UNKNOWN,
        }
    } else {
        &[]
    };
    let image = who.image.get(..MAX_IMAGE_BYTES / 2).unwrap_or(who.image);
    let pattern = pattern.get(..msg::MAX_PATTERN_BYTES / 2).unwrap_or(pattern);
    provider.with_identities(|sync_root_identity, root_file_identity| {
        let message = FetchPlaceholders {
            request_id: id,
            file_id,
            priority: PRIORITY_POPULATE,
            flags,
            requestor_pid: who.pid,
            requestor_image: Utf16::from_units(image),
            path: Utf16::from_units(shown),
            pattern: Utf16::from_units(pattern),
            identity,
            requestor_command_line: Utf16::from_units(command_line),
            sync_root_identity,
            root_file_identity: if is_root { root_file_identity } else { &[] },
        };
        let mut buffer = PoolBuf::zeroed(message.encoded_len())?;
        let len = message.encode(buffer.as_mut_slice()).ok()?;
        Some((buffer, len))
    })
}

/// Waits for population `id` (joined by this thread, with `event`) to be decided; the
/// last waiter to leave unlinks it, and sends the cancellation it calls for.
fn wait(
    provider: &ProviderRef,
    id: u64,
    event: *const core::ffi::c_void,
    data: *const FLT_CALLBACK_DATA,
) -> Result<(), NTSTATUS> {
    loop {
        // SAFETY: the population's initialised event, alive while this thread is one of
        // its waiters (it is unlinked only by the last one); PASSIVE_LEVEL; no timeout
        // (the alarm ends populations that take too long); the callback data (if any) is
        // the operation this thread serves.
        let status = unsafe { FltCancellableWaitForSingleObject(event, core::ptr::null(), data) };
        let gave_up = matches!(
            status,
            STATUS_CANCELLED | STATUS_THREAD_IS_TERMINATING | STATUS_USER_APC | STATUS_ALERTED
        );
        let left = TABLE.with(|t| {
            let p = t.populations.iter_mut().find(|p| p.id == id)?;
            let verdict = match p.outcome {
                Some(outcome) => outcome,
                None if gave_up => {
                    if p.waiters == 1 {
                        // Nobody waits any more: the provider may stop.
                        p.outcome = Some(STATUS_CANCELLED);
                        p.cancel = Some(CancelReason::IoAborted);
                        p.event.set();
                    }
                    STATUS_CANCELLED
                }
                None => return None,
            };
            p.waiters -= 1;
            Some((verdict, p.waiters == 0))
        });
        let Some((verdict, last)) = left else {
            continue;
        };
        if last {
            let node = TABLE.with(|t| t.populations.take_first(|p| p.id == id));
            if let Some(reason) = node.as_ref().and_then(|n| n.value.cancel) {
                tell_cancel(provider, id, reason);
            }
            drop(node);
        }
        return if nt_success(verdict) {
            Ok(())
        } else {
            Err(verdict)
        };
    }
}

/// CANCEL_FETCH_PLACEHOLDERS for population `id`: best effort, a second at most.
fn tell_cancel(provider: &ProviderRef, id: u64, reason: CancelReason) {
    let message = CancelFetchPlaceholders {
        request_id: id,
        reason,
    };
    let mut bytes = [0u8; 64];
    if let Ok(len) = message.encode(&mut bytes) {
        let _ = provider.send_within(
            bytes.get(..len).unwrap_or(&[]),
            provider.timeout.min(10_000_000),
        );
    }
}

/// Decides population `id` with `status` if it is undecided.
fn decide(id: u64, status: NTSTATUS, cancel: Option<CancelReason>) {
    TABLE.with(|t| {
        if let Some(p) = t
            .populations
            .iter_mut()
            .find(|p| p.id == id && p.outcome.is_none())
        {
            p.outcome = Some(status);
            p.cancel = cancel;
            p.event.set();
        }
    });
}

/// Decides every undecided population `which` accepts with `status`.
fn decide_all(which: impl Fn(&Population) -> bool, status: NTSTATUS, cancel: Option<CancelReason>) {
    TABLE.with(|t| {
        for p in t
            .populations
            .iter_mut()
            .filter(|p| p.outcome.is_none() && which(p))
        {
            p.outcome = Some(status);
            p.cancel = cancel;
            p.event.set();
        }
    });
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

/// The alarm: populations past their deadline time out (their provider is told by the
/// last waiter to leave); it is set again for the earliest deadline left.
fn expire() {
    let next = TABLE.with(|t| {
        t.alarm_due = i64::MAX;
        let at = now();
        let mut next = i64::MAX;
        for p in t
            .populations
            .iter_mut()
            .filter(|p| p.outcome.is_none() && !p.completing)
        {
            if p.deadline <= at {
                p.outcome = Some(STATUS_CLOUD_FILE_REQUEST_TIMEOUT);
                p.cancel = Some(CancelReason::IoTimeout);
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

/// Any valid message of the provider `owner` restarts the clocks of its populations.
pub(crate) fn restart(owner: usize, due: i64) {
    TABLE.with(|t| {
        for p in t
            .populations
            .iter_mut()
            .filter(|p| p.owner == owner && p.outcome.is_none())
        {
            p.deadline = due;
        }
    });
}

/// The provider `owner` went away: its populations fail with
/// STATUS_CLOUD_FILE_PROVIDER_TERMINATED.
pub(crate) fn provider_gone(owner: usize) {
    decide_all(
        |p| p.owner == owner,
        STATUS_CLOUD_FILE_PROVIDER_TERMINATED,
        None,
    );
}

/// TRANSFER_PLACEHOLDERS from `provider`: one batch of one of its populations. The reply
/// payload is each processed entry's status ([`TransferPlaceholdersResult`]). A batch for
/// a population that is over (completed, failed, timed out, cancelled) or not the
/// provider's is refused with STATUS_CLOUD_FILE_INVALID_REQUEST, and nothing is created.
pub(crate) fn transfer(
    provider: &ProviderRef,
    m: &TransferPlaceholders<'_>,
) -> Result<Payload, NTSTATUS> {
    let owner = provider.key();
    let open = |p: &Population| {
        p.id == m.request_id && p.owner == owner && p.outcome.is_none() && !p.completing
    };
    // The directory's path, copied out in two steps: its length under the lock, the
    // units into a buffer allocated outside it (room for one more component).
    let relative_len = TABLE
        .with(|t| {
            t.populations
                .iter()
                .find(|p| open(p))
                .map(|p| p.relative_len)
        })
        .ok_or(STATUS_CLOUD_FILE_INVALID_REQUEST)?;
    const MAX_NAME: usize = msg::MAX_ENTRY_NAME_BYTES / 2;
    let mut path = PoolBuf::zeroed((relative_len + 1 + MAX_NAME) * 2)
        .ok_or(STATUS_CLOUD_FILE_INSUFFICIENT_RESOURCES)?;
    let copied = TABLE.with(|t| {
        let p = t.populations.iter().find(|p| open(p))?;
        let from = p.relative.as_slice().get(..relative_len * 2)?;
        super::file::copy(path.as_mut_slice().get_mut(..relative_len * 2)?, from);
        Some(())
    });
    copied.ok_or(STATUS_CLOUD_FILE_INVALID_REQUEST)?;
    if m.status < 0 {
        decide(m.request_id, NtStatus::from_provider(m.status).raw(), None);
        return Ok(None);
    }
    // The reply: each processed entry's status, written as it is known.
    let header = TransferPlaceholdersResult::encoded_len(0);
    let mut reply = PoolBuf::zeroed(TransferPlaceholdersResult::encoded_len(m.entries.len()))
        .ok_or(STATUS_CLOUD_FILE_INSUFFICIENT_RESOURCES)?;
    let mut processed = 0usize;
    let mut failed = false;
    for entry in m.entries.iter() {
        let status = match create_entry(provider, &mut path, relative_len, &entry) {
            Ok(()) => STATUS_SUCCESS,
            Err(status) => status,
        };
        let at = header + processed * 4;
        if let Some(slot) = reply.as_mut_slice().get_mut(at..at + 4) {
            super::file::copy(slot, &status.to_le_bytes());
        }
        processed += 1;
        // A name that exists locally is left as it is, and counts as present: the
        // directory has that entry (a provider's own create racing the population).
        if !nt_success(status) && status != STATUS_OBJECT_NAME_COLLISION {
            failed = true;
            if m.flags.contains(PopulationFlags::STOP_ON_ERROR) {
                break;
            }
        }
    }
    if let Some(count) = reply.as_mut_slice().get_mut(..4) {
        super::file::copy(count, &(processed as u32).to_le_bytes());
    }
    let stopped = processed < m.entries.len();
    // The batch is counted; the population completes once the total is reached.
    let complete = TABLE.with(|t| {
        let p = t.populations.iter_mut().find(|p| open(p))?;
        p.processed = p.processed.saturating_add(processed as u64);
        p.failed |= failed || stopped;
        let complete = p.processed >= m.total;
        if complete {
            p.completing = true;
        }
        Some((complete, p.failed))
    });
    if let Some((true, any_failed)) = complete {
        let status = if m
            .flags
            .contains(PopulationFlags::DISABLE_ON_DEMAND_POPULATION)
            && !any_failed
        {
            mark(provider, path_units(&path, relative_len), true)
        } else {
            Ok(())
        };
        decide(m.request_id, status.err().unwrap_or(STATUS_SUCCESS), None);
    }
    Ok(Some((
        reply,
        TransferPlaceholdersResult::encoded_len(processed),
    )))
}

/// The first `len` units of `path`.
fn path_units(path: &PoolBuf, len: usize) -> &[u16] {
    let bytes = path.as_slice();
    // SAFETY: pool memory (16-byte aligned) of an even length.
    let units =
        unsafe { core::slice::from_raw_parts(bytes.as_ptr().cast::<u16>(), bytes.len() / 2) };
    units.get(..len).unwrap_or(&[])
}

/// Creates one entry of a batch in the directory whose relative path is the first
/// `relative_len` units of `path` (the entry's name is appended after them), as
/// CREATE_PLACEHOLDER would.
fn create_entry(
    provider: &ProviderRef,
    path: &mut PoolBuf,
    relative_len: usize,
    entry: &msg::PlaceholderEntry<'_>,
) -> Result<(), NTSTATUS> {
    let mut len = relative_len;
    {
        let bytes = path.as_mut_slice();
        if relative_len > 0 {
            super::file::copy(
                bytes
                    .get_mut(len * 2..len * 2 + 2)
                    .ok_or(STATUS_CLOUD_FILE_INVALID_REQUEST)?,
                &u16::from(b'\\').to_le_bytes(),
            );
            len += 1;
        }
        for unit in entry.name.units() {
            let slot = bytes
                .get_mut(len * 2..len * 2 + 2)
                .ok_or(STATUS_CLOUD_FILE_INVALID_REQUEST)?;
            super::file::copy(slot, &unit.to_le_bytes());
            len += 1;
        }
    }
    let create = msg::CreatePlaceholder {
        request_id: 0,
        file_size: entry.file_size,
        basic: entry.basic,
        flags: entry.flags,
        path: Utf16::from_units(path_units(path, len)),
        identity: entry.identity,
    };
    super::placeholder::create(provider, &create)
}

/// Marks the directory at `relative` (under `provider`'s root; empty: the root) populated
/// or not: the root in its registration record, a directory placeholder in its reparse
/// data. A directory that is not a placeholder is refused with
/// STATUS_CLOUD_FILE_NOT_A_CLOUD_FILE.
pub(crate) fn mark(
    provider: &ProviderRef,
    relative: &[u16],
    populated: bool,
) -> Result<(), NTSTATUS> {
    if relative.is_empty() {
        return roots::set_root_populated(provider.root(), populated);
    }
    let filter = crate::nt::driver::filter().ok_or(STATUS_CLOUD_FILE_INVALID_REQUEST)?;
    let root = provider.root();
    let mut full = PoolBuf::zeroed((root.len() + 1 + relative.len()) * 2)
        .ok_or(STATUS_CLOUD_FILE_INSUFFICIENT_RESOURCES)?;
    for (chunk, unit) in full.as_mut_slice().chunks_exact_mut(2).zip(
        root.iter()
            .copied()
            .chain(core::iter::once(u16::from(b'\\')))
            .chain(relative.iter().copied()),
    ) {
        super::file::copy(chunk, &unit.to_le_bytes());
    }
    let path = path_units(&full, root.len() + 1 + relative.len());
    let volume = super::placeholder::VolumeInstance::of(filter, root)?;
    let file = OwnedFile::open(
        filter,
        volume.instance,
        path,
        FILE_READ_ATTRIBUTES | FILE_WRITE_ATTRIBUTES,
        FILE_OPEN,
        Kind::Directory,
        0,
    )
    .map_err(|status| {
        if status == STATUS_NOT_A_DIRECTORY {
            STATUS_CLOUD_FILE_INVALID_REQUEST
        } else {
            status
        }
    })?;
    mark_open(&file, populated)
}

/// Sets or clears NOT_POPULATED in the reparse data of the directory placeholder open as
/// `file`.
pub(crate) fn mark_open(file: &super::file::Fo, populated: bool) -> Result<(), NTSTATUS> {
    let (buffer, len) = file
        .reparse_point()?
        .ok_or(super::status::STATUS_CLOUD_FILE_NOT_A_CLOUD_FILE)?;
    let old = Placeholder::decode_reparse(buffer.as_slice().get(..len).unwrap_or(&[]))
        .map_err(|_| super::status::STATUS_CLOUD_FILE_NOT_A_CLOUD_FILE)?;
    if !old.flags.contains(PlaceholderFlags::DIRECTORY) {
        return Err(STATUS_CLOUD_FILE_INVALID_REQUEST);
    }
    let flags = if populated {
        old.flags.difference(PlaceholderFlags::NOT_POPULATED)
    } else {
        old.flags.union(PlaceholderFlags::NOT_POPULATED)
    };
    if flags == old.flags {
        return Ok(());
    }
    let (blob, blob_len) = super::reparse::encode(&Placeholder { flags, ..old })?;
    file.tag(blob.as_slice().get(..blob_len).unwrap_or(&[]))
}
