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
    STATUS_CLOUD_FILE_UNSUCCESSFUL, STATUS_OBJECT_NAME_COLLISION, STATUS_OBJECT_NAME_NOT_FOUND,
    STATUS_OBJECT_PATH_NOT_FOUND, STATUS_SUCCESS, STATUS_THREAD_IS_TERMINATING, STATUS_TIMEOUT,
    STATUS_USER_APC,
};

use super::file::{Kind, OwnedFile, PoolBuf};
use super::list::{List, Node};
use super::names::{CommandLine, ImageName, NameInfo};
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

/// Who wants a directory filled: the operation (a query or a create) and its requestor.
/// What the provider is told about the requestor (image, command line) is read only when a
/// population is actually sent.
#[derive(Clone, Copy)]
pub(crate) struct Asking {
    /// The operation whose cancellation ends the wait.
    pub(crate) data: *const FLT_CALLBACK_DATA,
    pub(crate) pid: u32,
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
}

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
    /// Not populated: its id, its reparse data (none for the root) and its normalized
    /// name as the file system has it now (none for the root, or when it could not be
    /// had: the name looked up is used then).
    Unpopulated {
        file_id: u64,
        blob: Option<(PoolBuf, usize)>,
        name: Option<NameInfo>,
    },
}

/// The population state of the directory at `path` (an NT path under `root`, or the root
/// itself), read below cloudflt. PASSIVE_LEVEL.
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
            name: None,
        };
    }
    let Ok(Some((blob, len))) = file.reparse_point() else {
        return State::Settled;
    };
    if !not_populated(blob.as_slice().get(..len).unwrap_or(&[])) {
        return State::Settled;
    }
    State::Unpopulated {
        file_id,
        blob: Some((blob, len)),
        name: NameInfo::of_file(&file).ok(),
    }
}

/// Whether reparse data `bytes` is cloudflt's for a directory that is not populated.
pub(crate) fn not_populated(bytes: &[u8]) -> bool {
    Placeholder::decode_reparse(bytes).is_ok_and(|p| {
        p.flags
            .contains(PlaceholderFlags::DIRECTORY.union(PlaceholderFlags::NOT_POPULATED))
    })
}

/// Makes sure the directory at `path` (under `provider`'s root or the root itself) is
/// populated before the caller's query or open goes on: populates it if it is not,
/// waiting for the provider. PASSIVE_LEVEL, in the requestor's thread.
pub(crate) fn ensure(
    provider: &ProviderRef,
    instance: PFLT_INSTANCE,
    path: &[u16],
    pattern: &[u16],
    asking: Asking,
) -> Result<(), NTSTATUS> {
    let filter = crate::nt::driver::filter().ok_or(STATUS_CLOUD_FILE_INVALID_REQUEST)?;
    match state(filter, instance, provider.root(), path) {
        State::Unpopulated {
            file_id,
            blob,
            name,
        } => {
            let identity = blob
                .as_ref()
                .and_then(|(b, len)| b.as_slice().get(..*len))
                .and_then(|bytes| Placeholder::decode_reparse(bytes).ok())
                .map_or(&[][..], |p| p.identity);
            // The name the file system has for it now (a name opened with another case,
            // or through a short name, is what the provider would not know).
            let path = name.as_ref().map_or(path, NameInfo::units);
            let directory = Directory {
                instance,
                file_id,
                path,
                identity,
            };
            populate(provider, filter, &directory, pattern, asking)
        }
        State::Settled | State::Missing => Ok(()),
    }
}

/// The directory a population is for.
struct Directory<'a> {
    instance: PFLT_INSTANCE,
    file_id: u64,
    /// Its normalized NT path.
    path: &'a [u16],
    /// Its file identity (empty for the root).
    identity: &'a [u8],
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
    asking: Asking,
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
        State::Unpopulated { .. } => return ensure(provider, instance, parent, &STAR, asking),
        State::Missing => {}
    }
    // Each directory from the root down to the parent, by prefix.
    let mut end = root.len();
    loop {
        let directory = target.get(..end).unwrap_or(root);
        match state(filter, instance, root, directory) {
            State::Missing => return Ok(()),
            State::Settled => {}
            State::Unpopulated { .. } => ensure(provider, instance, directory, &STAR, asking)?,
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

/// Populates `directory`: joins the population in flight for it, or starts one, and
/// waits for its outcome.
fn populate(
    provider: &ProviderRef,
    filter: PFLT_FILTER,
    directory: &Directory<'_>,
    pattern: &[u16],
    asking: Asking,
) -> Result<(), NTSTATUS> {
    let owner = provider.key();
    let volume = directory.instance as usize;
    let file_id = directory.file_id;
    let same = |p: &Population| {
        p.owner == owner && p.instance == volume && p.file_id == file_id && p.outcome.is_none()
    };
    let joined = TABLE.with(|t| {
        let p = t.populations.iter_mut().find(|p| same(p))?;
        p.waiters += 1;
        Some((p.id, p.event.object()))
    });
    if let Some((id, event)) = joined {
        return wait(provider, id, event, asking.data);
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
        if let Some(p) = t.populations.iter_mut().find(|p| same(p)) {
            p.waiters += 1;
            return Some((p.id, p.event.object()));
        }
        let mut node = node;
        node.value.deadline = due;
        t.populations.push(node);
        arm(t, due);
        None
    });
    if let Some((other, other_event)) = raced {
        return wait(provider, other, other_event, asking.data);
    }
    // A provider that went away after it was looked up is not told of it by
    // `provider_gone`, which ran before the link: nobody would answer.
    if provider.is_gone() {
        decide(id, STATUS_CLOUD_FILE_PROVIDER_TERMINATED, None);
        return wait(provider, id, event, asking.data);
    }
    // A population that completed between the caller's look and the link marked the
    // directory before it was decided: looked at again, nothing is asked twice.
    if !matches!(
        state(filter, directory.instance, provider.root(), directory.path),
        State::Unpopulated { .. }
    ) {
        decide(id, STATUS_SUCCESS, None);
        return wait(provider, id, event, asking.data);
    }
    let sent = match encode(provider, id, directory, pattern, asking) {
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
    wait(provider, id, event, asking.data)
}

/// FETCH_PLACEHOLDERS for `directory`, as `provider` asked to be told (its path relative
/// to the root or full, the requestor's command line), encoded into pool. The requestor's
/// image and command line are read now, in its thread.
fn encode(
    provider: &ProviderRef,
    id: u64,
    directory: &Directory<'_>,
    pattern: &[u16],
    asking: Asking,
) -> Option<(PoolBuf, usize)> {
    let wants = provider.connect_flags;
    let mut flags = RequestFlags::EMPTY;
    let relative = syncroot::under(provider.root(), directory.path).unwrap_or(&[]);
    let is_root = relative.is_empty();
    let shown = if wants.contains(ConnectFlags::REQUIRE_FULL_FILE_PATH) {
        flags = flags.union(RequestFlags::FULL_PATH);
        directory.path
    } else {
        relative
    };
    const UNKNOWN: [u16; 7] = [85, 78, 75, 78, 79, 87, 78];
    let read = wants
        .contains(ConnectFlags::REQUIRE_PROCESS_INFO)
        .then(|| CommandLine::of_current(asking.pid));
    let command_line: &[u16] = match &read {
        Some(line) => {
            flags = flags.union(RequestFlags::PROCESS_INFO);
            match line.units() {
                [] => &UNKNOWN,
                units => units,
            }
        }
        None => &[],
    };
    let image = ImageName::of(asking.data);
    let image = image.units();
    let image = image.get(..MAX_IMAGE_BYTES / 2).unwrap_or(image);
    let pattern = pattern.get(..msg::MAX_PATTERN_BYTES / 2).unwrap_or(pattern);
    provider.with_identities(|sync_root_identity, root_file_identity| {
        let message = FetchPlaceholders {
            request_id: id,
            file_id: directory.file_id,
            priority: PRIORITY_POPULATE,
            flags,
            requestor_pid: asking.pid,
            requestor_image: Utf16::from_units(image),
            path: Utf16::from_units(shown),
            pattern: Utf16::from_units(pattern),
            identity: directory.identity,
            requestor_command_line: Utf16::from_units(command_line),
            sync_root_identity,
            root_file_identity: if is_root { root_file_identity } else { &[] },
        };
        let mut buffer = PoolBuf::zeroed(message.encoded_len())?;
        let len = message.encode(buffer.as_mut_slice()).ok()?;
        Some((buffer, len))
    })
}

/// Waits for population `id` (joined by this thread, with `event`) to be decided. A
/// waiter whose operation is cancelled leaves at once; the last one to leave an undecided
/// population cancels it (unless a batch is completing it). The population is unlinked by
/// whoever makes it both decided and unwaited-for ([`reap`]), who also sends the
/// cancellation it calls for.
fn wait(
    provider: &ProviderRef,
    id: u64,
    event: *const core::ffi::c_void,
    data: *const FLT_CALLBACK_DATA,
) -> Result<(), NTSTATUS> {
    loop {
        // SAFETY: the population's initialised event, alive while this thread is one of
        // its waiters (it is unlinked only once it has none); PASSIVE_LEVEL; no timeout
        // (the alarm ends populations that take too long); the callback data (if any) is
        // the operation this thread serves.
        let status = unsafe { FltCancellableWaitForSingleObject(event, core::ptr::null(), data) };
        let gave_up = matches!(
            status,
            STATUS_CANCELLED | STATUS_THREAD_IS_TERMINATING | STATUS_USER_APC | STATUS_ALERTED
        );
        let verdict = TABLE.with(|t| {
            let p = t.populations.iter_mut().find(|p| p.id == id)?;
            let verdict = match p.outcome {
                Some(outcome) => outcome,
                None if gave_up => {
                    if p.waiters == 1 && !p.completing {
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
            Some(verdict)
        });
        let Some(verdict) = verdict else {
            continue;
        };
        reap(provider, id);
        return if nt_success(verdict) {
            Ok(())
        } else {
            Err(verdict)
        };
    }
}

/// Unlinks population `id` if it is decided and nobody waits for it, and sends the
/// cancellation its decision calls for.
fn reap(provider: &ProviderRef, id: u64) {
    let node = TABLE.with(|t| {
        t.populations
            .take_first(|p| p.id == id && p.waiters == 0 && p.outcome.is_some())
    });
    if let Some(reason) = node.as_ref().and_then(|n| n.value.cancel) {
        tell_cancel(provider, id, reason);
    }
    drop(node);
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

/// Decides population `id` with `status` if it is undecided (a batch completing it
/// included: it is then no longer completing).
fn decide(id: u64, status: NTSTATUS, cancel: Option<CancelReason>) {
    TABLE.with(|t| {
        if let Some(p) = t
            .populations
            .iter_mut()
            .find(|p| p.id == id && p.outcome.is_none())
        {
            p.outcome = Some(status);
            p.cancel = cancel;
            p.completing = false;
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

/// Sets the alarm for `due` if it is set for later; called with the table locked, so that
/// two settings cannot cross (the later one would win).
fn arm(t: &mut Table, due: i64) {
    if due < t.alarm_due {
        t.alarm_due = due;
        ALARM.set(due.saturating_sub(now()));
    }
}

/// The alarm: populations past their deadline time out (their provider is told by the
/// last waiter to leave); it is set again for the earliest deadline left.
fn expire() {
    TABLE.with(|t| {
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
        if next != i64::MAX {
            arm(t, next);
        }
    });
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
/// a population that is over (completed, failed, timed out, cancelled — before or while
/// the batch is processed) or not the provider's is refused with
/// STATUS_CLOUD_FILE_INVALID_REQUEST, and nothing more is created.
///
/// The entries go into the directory found by its file id for each batch, under the name
/// it has then: a directory renamed while it is populated gets its own entries where it
/// now is, never another directory that took its old name. One that is gone, or left the
/// sync root, ends the population (STATUS_CLOUD_FILE_UNSUCCESSFUL for its waiters).
pub(crate) fn transfer(
    provider: &ProviderRef,
    m: &TransferPlaceholders<'_>,
) -> Result<Payload, NTSTATUS> {
    let owner = provider.key();
    let id = m.request_id;
    let open =
        |p: &Population| p.id == id && p.owner == owner && p.outcome.is_none() && !p.completing;
    let still_open = || TABLE.with(|t| t.populations.iter().any(&open));
    let (instance, file_id) = TABLE
        .with(|t| {
            t.populations
                .iter()
                .find(|p| open(p))
                .map(|p| (p.instance, p.file_id))
        })
        .ok_or(STATUS_CLOUD_FILE_INVALID_REQUEST)?;
    if m.status < 0 {
        decide(id, NtStatus::from_provider(m.status).raw(), None);
        reap(provider, id);
        return Ok(None);
    }
    let filter = crate::nt::driver::filter().ok_or(STATUS_CLOUD_FILE_INVALID_REQUEST)?;
    let directory = OwnedFile::open_kind_by_id(
        filter,
        instance as PFLT_INSTANCE,
        file_id,
        FILE_READ_ATTRIBUTES | FILE_WRITE_ATTRIBUTES,
        Kind::Directory,
    );
    let located = directory.and_then(|directory| {
        let name = NameInfo::of_file(&directory)?;
        Ok((directory, name))
    });
    let Some((directory, name)) = located
        .ok()
        .filter(|(_, name)| syncroot::under(provider.root(), name.units()).is_some())
    else {
        decide(
            id,
            STATUS_CLOUD_FILE_UNSUCCESSFUL,
            Some(CancelReason::IoAborted),
        );
        reap(provider, id);
        return Err(STATUS_CLOUD_FILE_INVALID_REQUEST);
    };
    let is_root = syncroot::under(provider.root(), name.units()).is_some_and(<[u16]>::is_empty);
    // The reply: each processed entry's status, written as it is known.
    let header = TransferPlaceholdersResult::encoded_len(0);
    let mut reply = PoolBuf::zeroed(TransferPlaceholdersResult::encoded_len(m.entries.len()))
        .ok_or(STATUS_CLOUD_FILE_INSUFFICIENT_RESOURCES)?;
    let mut processed = 0usize;
    let mut failed = false;
    for entry in m.entries.iter() {
        // Timed out or cancelled meanwhile: nothing more is made for it.
        if !still_open() {
            return Err(STATUS_CLOUD_FILE_INVALID_REQUEST);
        }
        let status = match create_entry(provider, &directory, name.units(), &entry) {
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
    let Some((complete, any_failed)) = complete else {
        return Err(STATUS_CLOUD_FILE_INVALID_REQUEST);
    };
    if complete {
        let marked = if m
            .flags
            .contains(PopulationFlags::DISABLE_ON_DEMAND_POPULATION)
            && !any_failed
        {
            if is_root {
                roots::set_root_populated(provider.root(), true)
            } else {
                mark_open(&directory, true)
            }
        } else {
            Ok(())
        };
        decide(id, marked.err().unwrap_or(STATUS_SUCCESS), None);
        reap(provider, id);
        marked?;
    }
    Ok(Some((
        reply,
        TransferPlaceholdersResult::encoded_len(processed),
    )))
}

/// Creates one entry of a batch in `directory` (normalized name `directory_name`), as
/// CREATE_PLACEHOLDER would, relative to that open.
fn create_entry(
    provider: &ProviderRef,
    directory: &OwnedFile,
    directory_name: &[u16],
    entry: &msg::PlaceholderEntry<'_>,
) -> Result<(), NTSTATUS> {
    // The name, contiguous (the message holds it unaligned); checked at decode to be one
    // component of at most MAX_ENTRY_NAME_BYTES.
    let mut name = [0u16; msg::MAX_ENTRY_NAME_BYTES / 2];
    let mut len = 0;
    for unit in entry.name.units() {
        *name.get_mut(len).ok_or(STATUS_CLOUD_FILE_INVALID_REQUEST)? = unit;
        len += 1;
    }
    let new = super::placeholder::NewPlaceholder {
        file_size: entry.file_size,
        basic: entry.basic,
        flags: entry.flags,
        identity: entry.identity,
    };
    super::placeholder::create_in(
        provider,
        directory,
        directory_name,
        name.get(..len).unwrap_or(&[]),
        &new,
    )
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
