//! The FltMgr contexts the filter registers, one pool tag per type.
//!
//! FltMgr allocates and frees context memory itself; the cleanup callback runs just before
//! the free and checks the signature, so a context of the wrong type reaching it shows up
//! in a debugger instead of corrupting pool.

use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FLT_CALLBACK_DATA_QUEUE, FLT_CONTEXT_END, FLT_CONTEXT_REGISTRATION, FLT_INSTANCE_CONTEXT,
    FLT_STREAM_CONTEXT, FLT_STREAMHANDLE_CONTEXT, FltGetInstanceContext, FltReleaseContext,
    PFLT_CONTEXT,
};

use core::cell::UnsafeCell;
use core::ptr::NonNull;

use cloudflt_proto::PlaceholderFlags;
use cloudflt_proto::placeholder::MAX_IDENTITY_LEN;
use windows_sys::Wdk::Storage::FileSystem::Minifilters::PFLT_INSTANCE;

use super::file::{OwnedFile, PoolBuf};
use super::pool::{PoolBox, TAG_RANGES, tag};
use super::queue::PendedQueue;
use super::sync::Event;
use crate::engine::policy::Policy;
use crate::engine::ranges::{Range, RangeSet};
use crate::engine::stream::{Activity, Kind, Refused, step};
use crate::engine::visibility::Visibility;

/// Per-volume facts gathered at InstanceSetup.
#[repr(C)]
pub(crate) struct InstanceContext {
    pub(crate) signature: u32,
    /// Sector size for non-cached I/O on this volume (at least 512).
    pub(crate) sector_size: u32,
    /// `FileSystemAttributes` the volume reported.
    pub(crate) fs_attributes: u32,
    /// Where this volume's pended reads wait, cancellably.
    pub(crate) queue: PendedQueue,
}

/// A reference on an instance's context (the wrapper every user of it goes through),
/// released on drop.
///
/// # Invariants
/// The pointer is a live instance context of this filter, referenced by this value.
pub(crate) struct InstanceRef(NonNull<InstanceContext>);

// SAFETY: a context reference may be used and released from any thread.
unsafe impl Send for InstanceRef {}

impl InstanceRef {
    /// The context of `instance`, referenced; `None` if it has none.
    pub(crate) fn get(instance: PFLT_INSTANCE) -> Option<Self> {
        let mut context: PFLT_CONTEXT = core::ptr::null_mut();
        // SAFETY: an instance of this filter; a valid out pointer.
        let status = unsafe { FltGetInstanceContext(instance, &mut context) };
        if status < 0 {
            return None;
        }
        // INVARIANT: FltGetInstanceContext returned it referenced.
        NonNull::new(context.cast::<InstanceContext>()).map(Self)
    }

    fn context(&self) -> &InstanceContext {
        // SAFETY: referenced while this value lives (type invariant).
        unsafe { self.0.as_ref() }
    }

    /// Sector size for non-cached I/O on the volume.
    pub(crate) fn sector_size(&self) -> u32 {
        self.context().sector_size
    }

    /// The volume's cancel-safe queue of pended reads (initialised at InstanceSetup,
    /// before the context is published).
    pub(crate) fn queue(&self) -> *mut FLT_CALLBACK_DATA_QUEUE {
        self.context().queue.raw()
    }

    /// Refuses new pended reads (the instance is being torn down).
    pub(crate) fn disable_queue(&self) {
        self.context().queue.disable();
    }
}

impl Drop for InstanceRef {
    fn drop(&mut self) {
        // SAFETY: the reference this value holds, released once.
        unsafe { FltReleaseContext(self.0.as_ptr().cast()) };
    }
}

/// Separate ranges a placeholder's record holds: as many as its reparse data can
/// (cloudflt_proto's MAX_RANGES, 764, present and modified together), so memory never forgets what the disk could record.
/// Beyond that the smallest range is forgotten (fetched again if read, never invented);
/// a read whose range was just written still completes (hydrate's `recorded`).
pub(crate) const STREAM_RANGES: usize = cloudflt_proto::placeholder::MAX_RANGES;

/// A stream's present ranges, in pool of their own (12 KiB: too large for the stack).
pub(crate) type Present = PoolBox<RangeSet<STREAM_RANGES>>;

/// A new empty set of present ranges; `None` when pool is exhausted.
pub(crate) fn new_present() -> Option<Present> {
    // SAFETY: an all-zero RangeSet is the empty set (no ranges, length 0).
    unsafe { PoolBox::try_zeroed(TAG_RANGES) }
}

/// Ranges transfers wrote while a write of the reparse data was under way, waiting to be
/// taken by the next one (`hydrate::record`'s group commit).
pub(crate) type Batch = RangeSet<32>;

/// Per-stream state of a placeholder, attached the first time it is opened (or touched by
/// a provider request) from the reparse data on disk.
///
/// The immutable part is set before the context is published; the hydration state is
/// reached only through [`StreamContext::with_state`], under the fetch table's lock.
#[repr(C)]
pub(crate) struct StreamContext {
    pub(crate) signature: u32,
    /// The instance the context belongs to: the driver's own I/O on the file goes below it.
    pub(crate) instance: PFLT_INSTANCE,
    /// NTFS file id (FileInternalInformation), for the provider.
    pub(crate) file_id: u64,
    /// Set when a write of the reparse data ends: the next writer's turn (`hydrate`).
    pub(crate) turn: Event,
    /// The provider was told the file is deleted (a POSIX delete, whose name went with
    /// the call): its last cleanup tells nobody again.
    pub(crate) deletion_told: core::sync::atomic::AtomicBool,
    state: UnsafeCell<StreamState>,
}

/// What changes as data arrives: the one place a placeholder's state lives.
pub(crate) struct StreamState {
    /// A placeholder, one whose reparse data is corrupt, or one reverted.
    kind: Kind,
    pub(crate) flags: PlaceholderFlags,
    pub(crate) file_size: u64,
    pub(crate) present: Present,
    /// Ranges a user changed since the file was last in sync (cfapi's MODIFIED range
    /// class): always present, never forgotten, never fetched over.
    pub(crate) modified: Present,
    /// The file's local change counter: one more at every change a user makes (data,
    /// size, overwrite), kept in the reparse data. A provider's `update` or
    /// `set_in_sync` "if unchanged" compares it with the value it last saw.
    pub(crate) changes: u64,
    /// `changes` as the last record this context wrote (or was read from) has it: while
    /// they differ, the context knows of changes its record on disk does not hold yet.
    pub(crate) recorded_changes: u64,
    /// A section for writing was made for the stream (a writable mapped view): its
    /// paging writes may carry changes made through a view, whoever writes them.
    pub(crate) mapped_for_write: bool,
    /// What the data waits for: fetches and transfers out (with the driver's writer), a
    /// dehydration zeroing, or nothing.
    activity: Activity<OwnedFile>,
    /// File objects of the stream between their create and their cleanup.
    pub(crate) opens: u32,
    /// Renames and hard links taking the file where no provider serves it, between the
    /// pre-operation that found it whole and the post-operation: while any is out the
    /// file's data may not be dropped nor its size grown (`hydrate::begin_move_out`).
    pub(crate) moving_out: u32,
    /// Number of the last snapshot taken of the state for the reparse data. A write of
    /// the reparse data is under way while it is ahead of `persisted` (one at a time per
    /// stream: see `hydrate::record`).
    pub(crate) snapshot: u64,
    /// Number of the last snapshot whose write finished.
    pub(crate) persisted: u64,
    /// Written by transfers, waiting for the next snapshot to record them.
    pub(crate) batch: Batch,
    /// Number of the last snapshot whose write failed (0: none).
    pub(crate) failed_snapshot: u64,
    /// Written by transfers of a root that requires validation, not yet acknowledged by
    /// the provider (ACK_DATA): on disk, neither present nor recorded, so nothing reads
    /// them (VALIDATION_REQUIRED).
    pub(crate) unvalidated: Batch,
    /// Written by transfers of a root that allows streaming: present in memory, so the
    /// reads of this context are served, but never recorded in the reparse data
    /// (STREAMING_ALLOWED): once the context is gone they are missing again and fetched
    /// anew. Recorded after all as soon as a user's change makes the record hold
    /// modified ranges, which must lie in present ones.
    pub(crate) streamed: Batch,
    /// Written by a fetch that then failed before its data was validated (refused,
    /// timed out, cancelled): never present, never read, and zeroed off the disk at the
    /// stream's last cleanup with the streamed data, so that what the provider refused
    /// does not lie in the file for whoever reads it without the driver. Best effort: a
    /// range the set cannot take stays on disk, unrecorded.
    pub(crate) discarded: Batch,
    /// The provider's identity for the file (up to 4 KiB, so in a pool buffer of its own,
    /// exactly its length; `None` when empty). In the state, not the context's fixed
    /// part, because the provider may replace it (UPDATE with SET_IDENTITY).
    identity: Option<PoolBuf>,
}

impl StreamState {
    /// A stream's state as its reparse data says, with nothing under way.
    pub(crate) fn new(
        kind: Kind,
        flags: PlaceholderFlags,
        file_size: u64,
        present: Present,
        modified: Present,
        changes: u64,
    ) -> Self {
        Self {
            kind,
            flags,
            file_size,
            present,
            modified,
            changes,
            recorded_changes: changes,
            mapped_for_write: false,
            activity: Activity::Idle,
            opens: 0,
            moving_out: 0,
            snapshot: 0,
            persisted: 0,
            batch: Batch::new(),
            failed_snapshot: 0,
            unvalidated: Batch::new(),
            streamed: Batch::new(),
            discarded: Batch::new(),
            identity: None,
        }
    }

    /// The provider's identity for the file.
    pub(crate) fn identity(&self) -> &[u8] {
        self.identity.as_ref().map_or(&[], PoolBuf::as_slice)
    }

    /// Replaces the identity, returning the old buffer (to be dropped by the caller,
    /// after the lock).
    pub(crate) fn set_identity(&mut self, identity: Option<PoolBuf>) -> Option<PoolBuf> {
        core::mem::replace(&mut self.identity, identity)
    }

    /// One more fetch or transfer of the stream (engine::stream::Activity::join).
    pub(crate) fn join(&mut self) -> Result<(), Refused> {
        step(&mut self.activity, Activity::Idle, |a| match a.join() {
            Ok(next) => (next, Ok(())),
            Err((same, why)) => (same, Err(why)),
        })
    }

    /// A fetch or transfer is over: the writer, if it was the last (closed by the caller
    /// outside the lock).
    #[must_use]
    pub(crate) fn leave(&mut self) -> Option<OwnedFile> {
        step(&mut self.activity, Activity::Idle, Activity::leave)
    }

    /// The writer a fetch opened: kept, or given back to close.
    #[must_use]
    pub(crate) fn install(&mut self, writer: OwnedFile) -> Option<OwnedFile> {
        step(&mut self.activity, Activity::Idle, |a| a.install(writer))
    }

    /// A dehydration starts zeroing (only with nothing out).
    pub(crate) fn begin_zeroing(&mut self) -> Result<(), Refused> {
        step(&mut self.activity, Activity::Idle, |a| {
            match a.begin_zeroing() {
                Ok(next) => (next, Ok(())),
                Err((same, why)) => (same, Err(why)),
            }
        })
    }

    /// The dehydration's zeroing is done.
    pub(crate) fn end_zeroing(&mut self) {
        step(&mut self.activity, Activity::Idle, |a| {
            (a.end_zeroing(), ())
        });
    }

    /// The writer the stream's fetches share, if open.
    pub(crate) fn writer(&self) -> Option<&OwnedFile> {
        self.activity.writer()
    }

    pub(crate) fn is_zeroing(&self) -> bool {
        self.activity.is_zeroing()
    }

    /// Still carries cloudflt's reparse point (its data corrupt or not): not reverted.
    pub(crate) fn is_placeholder(&self) -> bool {
        self.kind != Kind::Reverted
    }

    /// The reparse point is gone (revert): its data is all on disk.
    pub(crate) fn revert(&mut self) {
        self.kind = Kind::Reverted;
    }

    pub(crate) fn is_corrupt(&self) -> bool {
        self.kind == Kind::Corrupt
    }

    /// How many more ranges the batch of transfers waiting for a record can surely take
    /// (each may be a separate range).
    pub(crate) fn batch_room(&self) -> usize {
        32usize.saturating_sub(self.batch.len())
    }

    /// How many more separate ranges the on-disk record can take, with `pending` more
    /// still to arrive (fetches out).
    pub(crate) fn room(&self, pending: usize) -> usize {
        STREAM_RANGES
            .saturating_sub(self.present.len())
            .saturating_sub(self.modified.len())
            .saturating_sub(pending)
    }

    /// A user changed `range` (written, or zeros a new end of file added): present,
    /// modified, no longer in sync, one more change. `false`, with nothing changed, when
    /// the record cannot take one more modified range.
    pub(crate) fn modify(&mut self, range: Range) -> bool {
        if !range.is_empty() {
            if !self.modified.try_insert(range) {
                return false;
            }
            self.present.insert(range);
        }
        self.flags = self.flags.difference(PlaceholderFlags::IN_SYNC);
        self.changes = self.changes.wrapping_add(1);
        true
    }

    /// The file was overwritten (a create replaced its data): `size` bytes, all local and
    /// modified, with `flags`, one change further.
    pub(crate) fn replaced(&mut self, flags: PlaceholderFlags, size: u64, changes: u64) {
        self.kind = Kind::Placeholder;
        self.flags = flags;
        self.present.truncate(0);
        self.modified.truncate(0);
        self.file_size = size;
        let whole = Range {
            start: 0,
            end: size,
        };
        self.present.insert(whole);
        self.modified.insert(whole);
        self.changes = changes;
    }

    /// End of file moved to `size` (a user's truncation or extension): what lies past a
    /// new, lower end is gone; what a higher one adds is the user's zeros.
    pub(crate) fn resize(&mut self, size: u64) -> bool {
        if size > self.file_size {
            let added = Range {
                start: self.file_size,
                end: size,
            };
            if !self.modify(added) {
                return false;
            }
        } else {
            self.present.truncate(size);
            self.modified.truncate(size);
            let _ = self.modify(Range::default());
        }
        self.file_size = size;
        true
    }
}

/// A pool copy of `identity` (at most [`MAX_IDENTITY_LEN`] bytes are kept), `Ok(None)`
/// when it is empty, `Err` when pool is exhausted.
pub(crate) fn identity_buffer(identity: &[u8]) -> Result<Option<PoolBuf>, ()> {
    let identity = identity.get(..MAX_IDENTITY_LEN).unwrap_or(identity);
    if identity.is_empty() {
        return Ok(None);
    }
    let mut buffer = PoolBuf::zeroed(identity.len()).ok_or(())?;
    super::file::copy(buffer.as_mut_slice(), identity);
    Ok(Some(buffer))
}

/// Proof that the fetch table's lock is held (only `hydrate` makes one).
pub(crate) struct Held(pub(super) ());

impl StreamContext {
    /// A context for a placeholder; `None` when pool for its identity is exhausted.
    pub(crate) fn new(
        instance: PFLT_INSTANCE,
        file_id: u64,
        identity: &[u8],
        mut state: StreamState,
    ) -> Option<Self> {
        let _ = state.set_identity(identity_buffer(identity).ok()?);
        Some(Self {
            signature: TAG_STREAM_CONTEXT,
            instance,
            file_id,
            turn: Event::uninit(),
            deletion_told: core::sync::atomic::AtomicBool::new(false),
            state: UnsafeCell::new(state),
        })
    }

    /// Runs `f` on the hydration state; `Held` shows the fetch table's lock is held, which
    /// serialises every access. `f` must not call `with_state` on the same context.
    pub(crate) fn with_state<R>(&self, _held: &Held, f: impl FnOnce(&mut StreamState) -> R) -> R {
        // SAFETY: all access goes through this function with the one lock held, and no
        // caller nests it for the same context, so the reference is unique.
        f(unsafe { &mut *self.state.get() })
    }
}

/// Per-open state of a placeholder or a directory, decided at create and fixed for the open's life.
#[repr(C)]
pub(crate) struct StreamHandleContext {
    pub(crate) signature: u32,
    /// The open's effective hydration policy (cfapi fixes it at open), or `None` when no
    /// provider served the file then (the provider's policy applies at read time).
    pub(crate) policy: Option<Policy>,
    /// The in-sync policy of the provider that served the file's sync root at the open
    /// (none when no provider did): which attribute and time changes made through this
    /// open take the placeholder out of sync.
    pub(crate) in_sync: cloudflt_proto::InSyncPolicy,
    /// Whether the open sees cloudflt's placeholders as they are or disguised as ordinary
    /// files, decided at create in the requestor's context (engine::visibility).
    pub(crate) visibility: Visibility,
    /// The open is counted in its stream's `opens` (it was a placeholder's open when it
    /// was created): only such an open's cleanup takes the count down. A handle opened
    /// before `convert` made the file a placeholder is not counted.
    pub(crate) counted: bool,
    /// The provider ([`ProviderRef::key`](crate::nt::providers::ProviderRef)) that asked
    /// to hear when this open of one of its placeholders closes
    /// (NOTIFY_FILE_CLOSE_COMPLETION); 0 for none.
    pub(crate) notify_close: usize,
    /// The open will set its file's delete disposition at its cleanup
    /// (FILE_DELETE_ON_CLOSE at create, or FileDispositionInformationEx with ON_CLOSE
    /// since): the file system sets it only inside that cleanup, after cloudflt's
    /// pre-cleanup has looked.
    pub(crate) delete_on_close: core::sync::atomic::AtomicBool,
    /// The open was made by the provider connected to the root the file lies in: its
    /// I/O passes untouched (a provider serving another root is an application there).
    pub(crate) by_provider: bool,
    /// A directory open in a sync root whose population policy is FULL: its first
    /// directory query makes sure the directory is populated first (issue 15), and
    /// clears this once it is.
    pub(crate) populate: core::sync::atomic::AtomicBool,
}

pub(crate) const TAG_INSTANCE_CONTEXT: u32 = tag(b"CFic");
pub(crate) const TAG_STREAM_CONTEXT: u32 = tag(b"CFsc");
pub(crate) const TAG_STREAMHANDLE_CONTEXT: u32 = tag(b"CFsh");

/// The registration table FltMgr reads at FltRegisterFilter.
pub(super) const CONTEXTS: [FLT_CONTEXT_REGISTRATION; 4] = [
    entry(
        FLT_INSTANCE_CONTEXT,
        core::mem::size_of::<InstanceContext>(),
        TAG_INSTANCE_CONTEXT,
    ),
    entry(
        FLT_STREAM_CONTEXT,
        core::mem::size_of::<StreamContext>(),
        TAG_STREAM_CONTEXT,
    ),
    entry(
        FLT_STREAMHANDLE_CONTEXT,
        core::mem::size_of::<StreamHandleContext>(),
        TAG_STREAMHANDLE_CONTEXT,
    ),
    FLT_CONTEXT_REGISTRATION {
        ContextType: FLT_CONTEXT_END as u16,
        Flags: 0,
        ContextCleanupCallback: None,
        Size: 0,
        PoolTag: 0,
        ContextAllocateCallback: None,
        ContextFreeCallback: None,
        Reserved1: core::ptr::null_mut(),
    },
];

const fn entry(context_type: u32, size: usize, pool_tag: u32) -> FLT_CONTEXT_REGISTRATION {
    FLT_CONTEXT_REGISTRATION {
        ContextType: context_type as u16,
        Flags: 0,
        ContextCleanupCallback: Some(cleanup),
        Size: size,
        PoolTag: pool_tag,
        ContextAllocateCallback: None,
        ContextFreeCallback: None,
        Reserved1: core::ptr::null_mut(),
    }
}

/// ContextCleanupCallback: drops what a stream context owns (its identity buffer; its
/// writer is always closed before the last reference goes, since each fetch holds both)
/// and clears the signature, so that a released context seen in a debugger does not look
/// alive.
unsafe extern "system" fn cleanup(context: PFLT_CONTEXT, context_type: u16) {
    if context.is_null() {
        return;
    }
    if u32::from(context_type) == FLT_STREAM_CONTEXT {
        // SAFETY: FltMgr passes our live stream context, ours until this returns and
        // never used again: its owned parts (the identity buffer) are dropped here.
        unsafe { core::ptr::drop_in_place(context.cast::<StreamContext>()) };
    }
    // SAFETY: FltMgr passes a live context of one of our types, all `repr(C)` and starting
    // with a `u32` signature, pool-aligned, ours until this callback returns.
    unsafe { context.cast::<u32>().write(0) };
}
