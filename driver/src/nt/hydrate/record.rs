//! Transfers and the record: a provider's bytes are written non-cached through the
//! driver's own handle, straight from the provider's locked pages, recorded in the
//! reparse data (one write of it at a time per stream, each from a snapshot taken when its
//! turn comes), and only then settle the waiters.

use cloudflt_proto::msg::TransferHead;
use windows_sys::Win32::Foundation::STATUS_DATATYPE_MISALIGNMENT_ERROR;

use super::*;
use crate::engine::ranges::RangeSet;
use crate::engine::write::free_parts;
use crate::nt::context::Batch;
use crate::nt::file::{Fo, NONCACHED_BUFFER_ALIGNMENT};

const TAG_TRANSFER_CLAIM: u32 = tag(b"CFtc");
use crate::nt::user::UserData;

/// Why a transfer did not record its range.
#[derive(Clone, Copy)]
enum Unwritten {
    /// Nothing reached the disk because the provider's buffer could not be read or
    /// locked (freed, decommitted or protected meanwhile, misaligned, an in-page error),
    /// or no MDL or bounce unit could be allocated. The fetch is left as it was: the
    /// provider gets the status and may send the same data again.
    Refused(NTSTATUS),
    /// The transfer breaks the rules, or writing or recording it failed: the fetch
    /// fails, as the data on disk may be partial.
    Failed(NTSTATUS),
}

/// TRANSFER_DATA from `provider`, its `data` still in the provider's buffer: writes the
/// data, records it, settles the waiters.
pub(crate) fn transfer(provider: &ProviderRef, head: &TransferHead, data: &UserData) -> NTSTATUS {
    let id = head.request_id;
    let owner = provider.key();
    // Pin the request's stream and writer for the duration of the write.
    let pinned = TABLE.with(|t| {
        let fetch = t
            .fetches
            .iter()
            .find(|f| f.request.id == id && f.request.owner == owner)?;
        let keep = fetch.keep;
        let stream = StreamHold::new(fetch.stream.get());
        // The fetch itself is a user, so no dehydration can be zeroing: the join holds.
        let size = stream
            .get()
            .with_state(&t.held, |s| s.join().ok().map(|()| s.file_size))?;
        // Progress restarts the clocks of the provider's sent fetches, but only a transfer
        // that can be taken is progress: a provider answering with garbage for a live id
        // must not keep its other fetches from timing out.
        if policy::transfer_is_valid(head.offset, data.len() as u64, size) {
            let due = now().saturating_add(provider.timeout);
            for f in t
                .fetches
                .iter_mut()
                .filter(|f| f.request.owner == owner && f.sent)
            {
                f.request.deadline = due;
            }
        }
        Some((stream, size, keep))
    });
    let Some((stream, size, keep)) = pinned else {
        return STATUS_CLOUD_FILE_INVALID_REQUEST;
    };
    let result = write_and_record(stream.get(), head.offset, data, size, keep);
    let mut after = After::new();
    let mut validations = false;
    let writer = TABLE.with(|t| {
        let k = stream.key();
        let writer = stream.get().with_state(&t.held, |s| s.leave());
        match result {
            Ok(_) if keep == Keep::Validate => {
                validations = validate::start(t, stream.get(), owner, &mut after);
            }
            Ok(recorded) => {
                let change = Change {
                    recorded,
                    failed: None,
                };
                // Every fetch of this stream whose range is now on disk is done.
                while let Some(done) = t
                    .fetches
                    .iter()
                    .find(|f| {
                        f.request.stream == k
                            // Only a fetch this transfer touched can have become whole.
                            && recorded.is_none_or(|r| {
                                f.request.range.start < r.end && r.start < f.request.range.end
                            })
                            && stream.get().with_state(&t.held, |s| {
                                let r = f.request.range.clip(Range {
                                    start: 0,
                                    end: s.file_size,
                                });
                                requests::verdict::<NTSTATUS, STREAM_RANGES>(
                                    r,
                                    &s.present,
                                    recorded,
                                    None,
                                    core::iter::empty(),
                                    k,
                                ) == Verdict::Ready
                            })
                    })
                    .map(|f| f.request.id)
                {
                    t.finish(done, NtStatus::SUCCESS, change, &mut after);
                }
                // Waiters whose range this transfer completed go on now, even while the
                // rest of a larger fetch is still coming.
                t.settle(k, change, &mut after);
            }
            Err(Unwritten::Failed(_)) => t.finish(
                id,
                NtStatus::from_raw(STATUS_CLOUD_FILE_UNSUCCESSFUL),
                Change::default(),
                &mut after,
            ),
            Err(Unwritten::Refused(_)) => {}
        }
        writer
    });
    drop(writer);
    after.run();
    if validations {
        // Sent by the postman: this thread is the provider's, inside its TRANSFER_DATA.
        flush_later(stream.get(), provider);
    }
    drop(stream);
    match result {
        Ok(_) => STATUS_SUCCESS,
        Err(Unwritten::Refused(status) | Unwritten::Failed(status)) => status,
    }
}

/// Most separate parts one transfer writes (a transfer for a fetch has one: a fetch asks
/// for a gap; more only when the provider sends more than asked over present data). A
/// part left out stays missing and is asked for again.
const MAX_PARTS: usize = 8;

/// Most user edits a transfer's range may meet at once (each a range it must leave out).
const MAX_BLOCKED: usize = 32;

/// Writes a transfer's bytes to disk and records them in the stream and the reparse
/// data; the range recorded, when it was written in one part.
///
/// Only the parts of the transfer that are neither present nor being changed by a user
/// are written (`engine::write::free_parts`): nothing a user wrote, and nothing already
/// on disk, is ever overwritten by a provider's bytes, whatever the provider sends. The
/// parts are claimed busy while they are written, so no user edit goes over them.
///
/// Whole 4 KiB units go from the provider's pages, locked under the exception guard, to
/// a non-cached FltWriteFileEx with their MDL: no copy in pool. A partial last unit (a
/// part may end off a unit boundary only at end of file) goes through a one-unit pool
/// buffer instead: a non-cached write covers whole sectors, and the provider's buffer
/// ends with the file. Everything that can fail on the provider's buffer is done before
/// the first byte is written.
fn write_and_record(
    stream: &StreamContext,
    offset: u64,
    data: &UserData,
    size: u64,
    keep: Keep,
) -> Result<Option<Range>, Unwritten> {
    let invalid = Unwritten::Failed(STATUS_CLOUD_FILE_INVALID_REQUEST);
    let length = data.len() as u64;
    let end = offset.checked_add(length).ok_or(invalid)?;
    // Bytes past end of file (an aligned tail) are not data.
    let useful = Range {
        start: offset,
        end: end.min(size),
    };
    let no_memory = Unwritten::Refused(STATUS_CLOUD_FILE_INSUFFICIENT_RESOURCES);
    let Some(claim) = Node::new(
        Busy {
            id: 0,
            stream: key(stream),
            range: Range::default(),
            by: By::Transfer,
        },
        TAG_TRANSFER_CLAIM,
    ) else {
        return Err(no_memory);
    };
    let mut claim = Some(claim);
    let mut parts = [Range::default(); MAX_PARTS];
    // Under one hold of the lock: the parts to write, claimed; a copy of the writer's
    // file object and instance (never a pointer into the stream's state, whose
    // transitions move the writer under the lock while this thread writes; the handle
    // stays open while the stream's activity counts this transfer as a user).
    let chosen = TABLE.with(|t| {
        let k = key(stream);
        let mut blocked: RangeSet<MAX_BLOCKED> = RangeSet::new();
        let mut meeting = 0usize;
        for b in t.busy.iter() {
            if b.stream == k
                && b.by == By::User
                && b.range.start < useful.end
                && useful.start < b.range.end
            {
                meeting += 1;
                blocked.insert(b.range);
            }
        }
        if meeting > MAX_BLOCKED {
            // Too many edits at once to leave each out exactly: the provider may send
            // the data again.
            return Err(Unwritten::Refused(STATUS_CLOUD_FILE_IN_USE));
        }
        let (n, writer) = stream.with_state(&t.held, |s| {
            // cfapi's alignment rule, against the file as it is now. A transfer may end
            // off a unit boundary before end of file only where the rest of its last
            // unit is present already (the provider's end of file, before a user made
            // the file longer): that unit is not written.
            let tail = Range {
                start: end - end % UNIT,
                end: (end - end % UNIT).saturating_add(UNIT).min(s.file_size),
            };
            let valid = policy::transfer_is_valid(offset, length, s.file_size)
                || (offset.is_multiple_of(UNIT)
                    && length > 0
                    && end <= s.file_size
                    && s.present.contains(tail));
            if !valid {
                return Err(invalid);
            }
            // Within the file as it is now: a truncation or an overwrite since the fetch
            // was pinned leaves less of it.
            let useful = useful.clip(Range {
                start: 0,
                end: s.file_size,
            });
            let n = free_parts(useful, &s.present, &blocked, s.file_size, &mut parts);
            let writer = s.writer().map(|w| **w).ok_or(invalid)?;
            Ok((n, writer))
        })?;
        let (first, last) = (
            parts.first().copied(),
            n.checked_sub(1).and_then(|i| parts.get(i)).copied(),
        );
        if let (Some(first), Some(last), Some(mut node)) = (first, last, claim.take()) {
            node.value.id = t.next_id();
            node.value.range = Range {
                start: first.start,
                end: last.end,
            };
            let id = node.value.id;
            t.busy.push(node);
            return Ok((n, writer, Some(id)));
        }
        Ok((n, writer, None))
    });
    drop(claim);
    let (n, writer, claimed) = chosen?;
    let parts = parts.get(..n).unwrap_or(&[]);
    let result = write_parts(stream, &writer, offset, data, parts);
    let result = result.and_then(|()| match keep {
        Keep::Validate => hold_for_validation(stream, parts),
        Keep::Stream if stream_only(stream, parts) => Ok(()),
        // Present once recorded: nobody reads the parts, or finishes a fetch for them,
        // before the reparse data holds them. (Streamed data the stream cannot keep track
        // of is recorded: on disk, it is the provider's.)
        Keep::Record | Keep::Stream => {
            let status = record(stream, &writer, parts);
            if nt_success(status) {
                Ok(())
            } else {
                Err(Unwritten::Failed(status))
            }
        }
    });
    if let Some(id) = claimed {
        TABLE.with(|t| drop(t.busy.take_first(|b| b.id == id)));
    }
    result.map(|()| match parts {
        [one] => Some(*one),
        _ => None,
    })
}

/// VALIDATION_REQUIRED: `parts`, just written, wait for the provider's acknowledgement,
/// neither present nor recorded. A stream that cannot keep track of them refuses the
/// transfer (the provider may send it again): they are not validated, so never read.
fn hold_for_validation(stream: &StreamContext, parts: &[Range]) -> Result<(), Unwritten> {
    TABLE.with(|t| {
        stream.with_state(&t.held, |s| {
            let mut kept = s.unvalidated;
            for p in parts {
                if !kept.try_insert(*p) {
                    return Err(Unwritten::Refused(STATUS_CLOUD_FILE_INSUFFICIENT_RESOURCES));
                }
            }
            s.unvalidated = kept;
            Ok(())
        })
    })
}

/// STREAMING_ALLOWED: `parts`, just written, are present for this context's readers but
/// never recorded; `false` when the stream cannot keep track of one more streamed range
/// (the caller records them instead).
fn stream_only(stream: &StreamContext, parts: &[Range]) -> bool {
    TABLE.with(|t| {
        stream.with_state(&t.held, |s| {
            let mut streamed = s.streamed;
            for p in parts {
                if !streamed.try_insert(*p) {
                    return false;
                }
            }
            s.streamed = streamed;
            let file = Range {
                start: 0,
                end: s.file_size,
            };
            for p in parts {
                s.present.insert(p.clip(file));
            }
            true
        })
    })
}

/// Streamed data (STREAMING_ALLOWED) becomes the file's for good: recorded in its
/// reparse data and never dropped at the last close. For a placeholder that is about to
/// be reachable where no provider serves it (a hard link out of its root), whose
/// streamed bytes would otherwise be zeroed under the new name. The status of the
/// record; on failure the ranges stay present in memory and are fetched again after a
/// restart (never invented).
pub(crate) fn keep_streamed(stream: &StreamContext) -> NTSTATUS {
    let any = TABLE.with(|t| {
        stream.with_state(&t.held, |s| {
            let any = !s.streamed.is_empty();
            s.streamed = Batch::new();
            any
        })
    });
    if !any {
        return STATUS_SUCCESS;
    }
    let Some(filter) = crate::nt::driver::filter() else {
        return STATUS_CLOUD_FILE_UNSUCCESSFUL;
    };
    match OwnedFile::open_by_id(
        filter,
        stream.instance,
        stream.file_id,
        0x0100 | 0x0080, // FILE_WRITE_ATTRIBUTES | FILE_READ_ATTRIBUTES
    ) {
        Ok(file) => record(stream, &file, &[]),
        Err(status) => status,
    }
}

/// The stream's last handle closed: streamed data (STREAMING_ALLOWED) is dropped from
/// the disk, so that nothing the provider streamed outlives the opens that read it, and
/// so is data a failed validation left there (`StreamState::discarded`), where it is
/// still not present.
/// Zeroed as a dehydration is (nothing fetched or read meanwhile: `begin_zeroing`), and
/// only while no fetch, transfer or edit is out; streamed data only while no user's
/// change is on record: otherwise it stays, on disk and present, and is recorded with
/// the next record (a user's change makes it part of the file). Best effort: a range
/// that cannot be zeroed stays on disk unrecorded, which no read ever serves.
pub(crate) fn drop_streamed(stream: &StreamContext) {
    let k = key(stream);
    let taken = TABLE.with(|t| {
        if t.fetches.iter().any(|f| f.request.stream == k) || t.busy.iter().any(|b| b.stream == k) {
            return None;
        }
        stream.with_state(&t.held, |s| {
            let streamed = !s.streamed.is_empty() && s.modified.is_empty();
            if !s.is_placeholder() || (!streamed && s.discarded.is_empty()) {
                return None;
            }
            s.begin_zeroing().ok()?;
            let mut set = if streamed {
                core::mem::take(&mut s.streamed)
            } else {
                Batch::new()
            };
            for r in set.iter() {
                s.present.remove(r);
            }
            // What a failed validation wrote, where nothing present has replaced it
            // since; a part the set cannot take stays on disk, unrecorded and unread.
            let discarded = core::mem::take(&mut s.discarded);
            for r in discarded.iter() {
                let mut at = r.start;
                while let Some(gap) = s.present.first_gap(Range {
                    start: at,
                    end: r.end,
                }) {
                    let _ = set.try_insert(gap);
                    at = gap.end;
                }
            }
            Some(set)
        })
    });
    let Some(set) = taken else {
        return;
    };
    if let Some(filter) = crate::nt::driver::filter()
        && let Ok(file) = OwnedFile::open_by_id(
            filter,
            stream.instance,
            stream.file_id,
            0x0002 | 0x0100 | 0x0080, // FILE_WRITE_DATA | FILE_WRITE_ATTRIBUTES | FILE_READ_ATTRIBUTES
        )
    {
        // The file's times stay as the user left them.
        if file.freeze_times().is_ok() {
            for r in set.iter() {
                let _ = file.zero_range(r.start, r.end);
            }
        }
    }
    end_dehydration(stream);
}

/// Writes `parts` of a transfer at `offset` from the provider's `data` through
/// `writer`: every buffer locked or copied first, then the writes.
fn write_parts(
    stream: &StreamContext,
    writer: &Fo,
    offset: u64,
    data: &UserData,
    parts: &[Range],
) -> Result<(), Unwritten> {
    let invalid = Unwritten::Failed(STATUS_CLOUD_FILE_INVALID_REQUEST);
    let no_memory = Unwritten::Refused(STATUS_CLOUD_FILE_INSUFFICIENT_RESOURCES);
    if parts.is_empty() {
        return Ok(());
    }
    if !data.aligned_to(NONCACHED_BUFFER_ALIGNMENT) {
        // Written non-cached from where it lies, the data must start where a device's
        // DMA can take it; userlib lays its messages out so that it does.
        return Err(Unwritten::Refused(STATUS_DATATYPE_MISALIGNMENT_ERROR));
    }
    let unit = usize::try_from(UNIT).map_err(|_| invalid)?;
    // Per part: its whole units' pages, and its partial last unit in pool.
    let mut locked: [Option<crate::nt::user::LockedUserPages>; MAX_PARTS] =
        [const { None }; MAX_PARTS];
    let mut last: Option<(u64, PoolBuf)> = None;
    // The partial last unit is copied before any page is locked: once locked, the
    // provider's pages are written whatever it does to its buffer.
    for p in parts {
        let from = usize::try_from(p.start - offset).map_err(|_| invalid)?;
        let len = usize::try_from(p.len()).map_err(|_| invalid)?;
        let whole = len - len % unit;
        let partial = len - whole;
        if partial > 0 {
            let mut unit_buffer = PoolBuf::zeroed(unit).ok_or(no_memory)?;
            let into = unit_buffer
                .as_mut_slice()
                .get_mut(..partial)
                .ok_or(invalid)?;
            data.copy_out(from + whole, into)
                .map_err(Unwritten::Refused)?;
            last = Some((p.start + whole as u64, unit_buffer));
        }
    }
    for (i, p) in parts.iter().enumerate() {
        let from = usize::try_from(p.start - offset).map_err(|_| invalid)?;
        let len = usize::try_from(p.len()).map_err(|_| invalid)?;
        let whole = len - len % unit;
        if whole > 0 {
            let pages = data.lock_at(from, whole).map_err(|status| {
                if status == STATUS_INSUFFICIENT_RESOURCES {
                    no_memory
                } else {
                    Unwritten::Refused(status)
                }
            })?;
            if let Some(slot) = locked.get_mut(i) {
                *slot = Some(pages);
            }
        }
    }
    for (i, p) in parts.iter().enumerate() {
        if let Some(Some(pages)) = locked.get(i) {
            let whole = usize::try_from(p.len()).map_err(|_| invalid)?;
            writer
                .write_noncached_pages(p.start, whole - whole % unit, pages)
                .map_err(Unwritten::Failed)?;
        }
        // Unlocked as soon as they are on disk.
        if let Some(slot) = locked.get_mut(i) {
            *slot = None;
        }
    }
    if let Some((at, unit_buffer)) = &last {
        writer
            .write_noncached(*at, unit_buffer)
            .map_err(Unwritten::Failed)?;
        // The unit went past end of file: put it back where it is now (never lower:
        // `free_parts` ends a partial part only at the current end of file, and no edit
        // moving it can be on its way while that unit is missing).
        let size = TABLE.with(|t| stream.with_state(&t.held, |s| s.file_size));
        if at.saturating_add(UNIT) > size {
            writer.set_end_of_file(size).map_err(Unwritten::Failed)?;
        }
    }
    Ok(())
}

/// Writes the stream's current state into its reparse data (and the OFFLINE /
/// RECALL_ON_DATA_ACCESS attributes), after any write of it already under way.
pub(crate) fn persist(stream: &StreamContext, file: &Fo) -> NTSTATUS {
    record(stream, file, &[])
}

/// Writes the stream's state, with `added` present, into its reparse data; once that is
/// written, `added` is present in memory too. One write at a time per stream: the
/// snapshot is taken when its writer's turn comes, so it holds every range recorded
/// before it, and the record on disk only ever gets newer.
///
/// Group commit: a transfer that finds a write under way leaves its ranges in the
/// stream's batch and waits; the next writer takes the whole batch into its snapshot, so
/// a thousand transfers of one file cost a handful of reparse-data writes, not a
/// thousand in turn. A waiter's ranges are recorded when they are present once the
/// write that took them is done (present only after a successful write).
pub(super) fn record(stream: &StreamContext, file: &Fo, added: &[Range]) -> NTSTATUS {
    let mut snapshot = Snapshot::new();
    let mut queued: Option<u64> = None;
    loop {
        let step = TABLE.with(|t| {
            stream.with_state(&t.held, |s| {
                if let Some(need) = queued
                    && s.persisted.wrapping_sub(need) < u64::MAX / 2
                {
                    // The write that took the batch: its failure is this thread's.
                    return Turn::Done(if s.failed_snapshot == need {
                        STATUS_CLOUD_FILE_UNSUCCESSFUL
                    } else {
                        STATUS_SUCCESS
                    });
                }
                // Reverted (moved out of its root): an ordinary file now, never tagged
                // again.
                if !s.is_placeholder() {
                    return Turn::Done(crate::nt::status::STATUS_CLOUD_FILE_NOT_A_CLOUD_FILE);
                }
                if s.snapshot == s.persisted {
                    s.snapshot = s.snapshot.wrapping_add(1);
                    // Queued: this thread's ranges are in the batch already.
                    snapshot.fill(s, if queued.is_some() { &[] } else { added });
                    return Turn::Write(s.snapshot);
                }
                if queued.is_none() && !added.is_empty() && s.batch_room() >= added.len() {
                    for r in added {
                        s.batch.insert(*r);
                    }
                    queued = Some(s.snapshot.wrapping_add(1));
                }
                // Reset under the lock the writer sets it under: no wake-up is lost.
                stream.turn.reset();
                Turn::Wait
            })
        });
        match step {
            Turn::Done(status) => return status,
            Turn::Write(seq) => {
                let status = snapshot.write(file);
                TABLE.with(|t| {
                    stream.with_state(&t.held, |s| {
                        if nt_success(status) {
                            s.recorded_changes = snapshot.changes;
                            for range in added.iter().copied().chain(snapshot.batch.iter()) {
                                s.present.insert(range.clip(Range {
                                    start: 0,
                                    end: s.file_size,
                                }));
                            }
                        } else {
                            s.failed_snapshot = seq;
                        }
                        // The turn passes on.
                        s.persisted = seq;
                    });
                    stream.turn.set();
                });
                return status;
            }
            Turn::Wait => {
                // SAFETY: the stream's initialised event (the caller holds a reference
                // on the context); PASSIVE_LEVEL (transfers and the provider's
                // requests); no timeout: the writer under way sets it when its disk
                // write is done.
                unsafe {
                    KeWaitForSingleObject(
                        stream.turn.object(),
                        Executive,
                        KernelMode as i8,
                        false,
                        core::ptr::null(),
                    )
                };
            }
        }
    }
}

/// What a thread recording ranges does next.
enum Turn {
    /// Its ranges were taken by a write that is done: recorded or not.
    Done(NTSTATUS),
    /// Write this snapshot.
    Write(u64),
    /// Wait for the write under way.
    Wait,
}

/// A copy of the state to encode with no lock held; its ranges in pool (a full set is
/// 12 KiB, too large for the kernel stack).
struct Snapshot {
    flags: PlaceholderFlags,
    size: u64,
    changes: u64,
    present: Option<Present>,
    modified: Option<Present>,
    /// The ranges other transfers left in the stream's batch, taken with this snapshot:
    /// present once it is written.
    batch: Batch,
    /// The provider's identity as it was (`Err`: no pool to copy it).
    identity: Result<Option<PoolBuf>, ()>,
}

/// `set` in its on-disk form (offset and length, little-endian, per range), in pool;
/// `Ok(None)` for an empty set.
fn wire_ranges(set: &Present) -> Result<Option<PoolBuf>, NTSTATUS> {
    let count = set.len();
    if count == 0 {
        return Ok(None);
    }
    let mut buffer = PoolBuf::zeroed(count.saturating_mul(RANGE_SIZE))
        .ok_or(STATUS_CLOUD_FILE_INSUFFICIENT_RESOURCES)?;
    for (chunk, r) in buffer
        .as_mut_slice()
        .chunks_exact_mut(RANGE_SIZE)
        .zip(set.iter())
    {
        let (offset, length) = chunk.split_at_mut(8);
        offset.copy_from_slice(&r.start.to_le_bytes());
        length.copy_from_slice(&r.len().to_le_bytes());
    }
    Ok(Some(buffer))
}

fn as_list(wire: &Option<PoolBuf>) -> Option<RangeList<'_>> {
    match wire {
        Some(buffer) => RangeList::from_le_bytes(buffer.as_slice()),
        None => Some(RangeList::EMPTY),
    }
}

impl Snapshot {
    fn new() -> Self {
        Self {
            flags: PlaceholderFlags::EMPTY,
            size: 0,
            changes: 0,
            present: new_present(),
            modified: new_present(),
            batch: Batch::new(),
            identity: Ok(None),
        }
    }

    /// Takes the state, with `added` and the stream's batch present; the batch moves
    /// into the snapshot.
    fn fill(&mut self, s: &mut StreamState, added: &[Range]) {
        self.batch = core::mem::take(&mut s.batch);
        self.flags = s.flags;
        self.size = s.file_size;
        self.changes = s.changes;
        // Non-paged pool, so allowed under the lock; a few bytes to 4 KiB, once a write.
        self.identity = crate::nt::context::identity_buffer(s.identity());
        if let Some(present) = &mut self.present {
            present.copy_from(&s.present);
            for range in added.iter().copied().chain(self.batch.iter()) {
                present.insert(range);
            }
            // Streamed data is never recorded, unless the record holds a user's changes:
            // those lie in present ranges, whole units of them (the edit fetched its
            // partial units, perhaps as streamed data), so it all goes in.
            if s.modified.is_empty() {
                for r in s.streamed.iter() {
                    present.remove(r);
                }
            } else {
                s.streamed = Batch::new();
            }
            // Nothing past end of file is a range of the file (a transfer recorded as the
            // file shrank).
            present.truncate(s.file_size);
            // Present and modified share the record's budget: over it, the smallest
            // present ranges holding nothing modified are left out of the record (their
            // data stays on disk and is fetched again after a restart, never invented).
            while present.len() + s.modified.len() > STREAM_RANGES {
                let smallest = present
                    .iter()
                    .filter(|r| s.modified.first_gap(*r) == Some(*r))
                    .min_by_key(|r| r.len());
                match smallest {
                    Some(r) => present.remove(r),
                    None => break,
                }
            }
        }
        if let Some(modified) = &mut self.modified {
            modified.copy_from(&s.modified);
        }
    }

    fn write(&self, file: &Fo) -> NTSTATUS {
        let (Some(present), Some(modified), Ok(identity)) =
            (&self.present, &self.modified, &self.identity)
        else {
            return STATUS_CLOUD_FILE_INSUFFICIENT_RESOURCES;
        };
        let (wire_present, wire_modified) = match (wire_ranges(present), wire_ranges(modified)) {
            (Ok(p), Ok(m)) => (p, m),
            (Err(status), _) | (_, Err(status)) => return status,
        };
        let (Some(ranges), Some(modified_list)) = (as_list(&wire_present), as_list(&wire_modified))
        else {
            return STATUS_CLOUD_FILE_INVALID_REQUEST;
        };
        let full = present.bytes() >= self.size;
        let result = crate::nt::reparse::encode(&cloudflt_proto::Placeholder {
            flags: self.flags,
            file_size: self.size,
            identity: identity.as_ref().map_or(&[], PoolBuf::as_slice),
            ranges,
            modified: modified_list,
            changes: self.changes,
        })
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
