//! Transfers and the record: a provider's bytes are written non-cached through the
//! driver's own handle, straight from the provider's locked pages, recorded in the
//! reparse data (one write of it at a time per stream, each from a snapshot taken when its
//! turn comes), and only then settle the waiters.

use cloudflt_proto::msg::TransferHead;
use windows_sys::Win32::Foundation::STATUS_DATATYPE_MISALIGNMENT_ERROR;

use super::*;
use crate::nt::file::{Fo, NONCACHED_BUFFER_ALIGNMENT};
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
        Some((stream, size))
    });
    let Some((stream, size)) = pinned else {
        return STATUS_CLOUD_FILE_INVALID_REQUEST;
    };
    let result = write_and_record(stream.get(), head.offset, data, size);
    let mut after = After::new();
    let writer = TABLE.with(|t| {
        let k = stream.key();
        let writer = stream.get().with_state(&t.held, |s| s.leave());
        match result {
            Ok(recorded) => {
                let change = Change {
                    recorded: Some(recorded),
                    failed: None,
                };
                // Every fetch of this stream whose range is now on disk is done.
                while let Some(done) = t
                    .fetches
                    .iter()
                    .find(|f| {
                        f.request.stream == k
                            && stream.get().with_state(&t.held, |s| {
                                let r = f.request.range.clip(Range {
                                    start: 0,
                                    end: s.file_size,
                                });
                                requests::verdict::<NTSTATUS, STREAM_RANGES>(
                                    r,
                                    &s.present,
                                    Some(recorded),
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
    drop(stream);
    match result {
        Ok(_) => STATUS_SUCCESS,
        Err(Unwritten::Refused(status) | Unwritten::Failed(status)) => status,
    }
}

/// Writes a transfer's bytes to disk and records them in the stream and the reparse
/// data; the range recorded.
///
/// Whole 4 KiB units go from the provider's pages, locked under the exception guard, to
/// a non-cached FltWriteFileEx with their MDL: no copy in pool. A partial last unit (a
/// transfer may end off a unit boundary only at end of file) goes through a one-unit pool
/// buffer instead: a non-cached write covers whole sectors, and the provider's buffer
/// ends with the file. Everything that can fail on the provider's buffer is done before
/// the first byte is written.
fn write_and_record(
    stream: &StreamContext,
    offset: u64,
    data: &UserData,
    size: u64,
) -> Result<Range, Unwritten> {
    let invalid = Unwritten::Failed(STATUS_CLOUD_FILE_INVALID_REQUEST);
    let length = data.len() as u64;
    if !policy::transfer_is_valid(offset, length, size) {
        return Err(invalid);
    }
    // Bytes past end of file (an aligned tail) are not data.
    let useful = length.min(size.saturating_sub(offset));
    let useful_len = usize::try_from(useful).map_err(|_| invalid)?;
    let unit = usize::try_from(UNIT).map_err(|_| invalid)?;
    let whole = useful_len - useful_len % unit;
    let partial = useful_len - whole;
    let no_memory = Unwritten::Refused(STATUS_CLOUD_FILE_INSUFFICIENT_RESOURCES);
    if whole > 0 && !data.aligned_to(NONCACHED_BUFFER_ALIGNMENT) {
        // Written non-cached from where it lies, the data must start where a device's
        // DMA can take it; userlib lays its messages out so that it does.
        return Err(Unwritten::Refused(STATUS_DATATYPE_MISALIGNMENT_ERROR));
    }
    let last = if partial > 0 {
        let mut unit_buffer = PoolBuf::zeroed(unit).ok_or(no_memory)?;
        let into = unit_buffer
            .as_mut_slice()
            .get_mut(..partial)
            .ok_or(invalid)?;
        data.copy_out(whole, into).map_err(Unwritten::Refused)?;
        Some(unit_buffer)
    } else {
        None
    };
    let pages = if whole > 0 {
        Some(data.lock(whole).map_err(|status| {
            if status == STATUS_INSUFFICIENT_RESOURCES {
                no_memory
            } else {
                Unwritten::Refused(status)
            }
        })?)
    } else {
        None
    };
    // A copy of the writer's file object and instance, taken under the lock: never a
    // pointer into the stream's state, whose transitions move the writer (in and out of
    // its slot) under the lock while this thread writes. The handle stays open while the
    // stream's activity counts this transfer as a user (joined in `transfer`, left after
    // this returns).
    let writer: Fo = TABLE
        .with(|t| stream.with_state(&t.held, |s| s.writer().map(|w| **w)))
        .ok_or(invalid)?;
    let writer = &writer;
    if let Some(pages) = &pages {
        writer
            .write_noncached_pages(offset, whole, pages)
            .map_err(Unwritten::Failed)?;
    }
    // Unlocked as soon as they are on disk.
    drop(pages);
    let mut written_end = offset.saturating_add(whole as u64);
    if let Some(unit_buffer) = &last {
        writer
            .write_noncached(written_end, unit_buffer)
            .map_err(Unwritten::Failed)?;
        written_end = written_end.saturating_add(UNIT);
    }
    if written_end > size {
        writer.set_end_of_file(size).map_err(Unwritten::Failed)?;
    }
    let range = Range {
        start: offset,
        end: offset.saturating_add(useful),
    };
    // Present once recorded: nobody reads the range, or finishes a fetch for it, before
    // the reparse data holds it.
    let status = record(stream, writer, Some(range));
    if nt_success(status) {
        Ok(range)
    } else {
        Err(Unwritten::Failed(status))
    }
}

/// Writes the stream's current state into its reparse data (and the OFFLINE /
/// RECALL_ON_DATA_ACCESS attributes), after any write of it already under way.
pub(crate) fn persist(stream: &StreamContext, file: &Fo) -> NTSTATUS {
    record(stream, file, None)
}

/// Writes the stream's state, with `added` present, into its reparse data; once that is
/// written, `added` is present in memory too. One write at a time per stream: the
/// snapshot is taken when this thread's turn comes, so it holds every range recorded
/// before it, and the record on disk only ever gets newer.
fn record(stream: &StreamContext, file: &Fo, added: Option<Range>) -> NTSTATUS {
    let mut snapshot = Snapshot::new();
    let seq = take_turn(stream, &mut snapshot, added);
    let status = snapshot.write(stream, file);
    TABLE.with(|t| {
        stream.with_state(&t.held, |s| {
            if nt_success(status)
                && let Some(range) = added
            {
                s.present.insert(range);
            }
            // The turn passes on.
            s.persisted = seq;
        });
        stream.turn.set();
    });
    status
}

/// Waits until no write of the stream's reparse data is under way (`snapshot` is ahead of
/// `persisted` while one is), then takes the turn: numbers a new snapshot and fills
/// `snapshot` from the state, with `added` present. Returns the snapshot's number.
fn take_turn(stream: &StreamContext, snapshot: &mut Snapshot, added: Option<Range>) -> u64 {
    loop {
        let taken = TABLE.with(|t| {
            stream.with_state(&t.held, |s| {
                if s.snapshot != s.persisted {
                    // Reset under the lock the writer sets it under: no wake-up is lost.
                    stream.turn.reset();
                    return None;
                }
                s.snapshot = s.snapshot.wrapping_add(1);
                snapshot.fill(s, added);
                Some(s.snapshot)
            })
        });
        if let Some(seq) = taken {
            return seq;
        }
        // SAFETY: the stream's initialised event (the caller holds a reference on the
        // context); PASSIVE_LEVEL (transfers and the provider's requests); no timeout:
        // the writer before this one sets it when its disk write is done.
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

/// A copy of the state to encode with no lock held; its ranges in pool (a full set is
/// 12 KiB, too large for the kernel stack).
struct Snapshot {
    flags: PlaceholderFlags,
    size: u64,
    present: Option<Present>,
}

impl Snapshot {
    fn new() -> Self {
        Self {
            flags: PlaceholderFlags::EMPTY,
            size: 0,
            present: new_present(),
        }
    }

    fn fill(&mut self, s: &StreamState, added: Option<Range>) {
        self.flags = s.flags;
        self.size = s.file_size;
        if let Some(present) = &mut self.present {
            present.copy_from(&s.present);
            if let Some(range) = added {
                present.insert(range);
            }
        }
    }

    fn write(&self, stream: &StreamContext, file: &Fo) -> NTSTATUS {
        let Some(present) = &self.present else {
            return STATUS_CLOUD_FILE_INSUFFICIENT_RESOURCES;
        };
        // The ranges in their on-disk form, built in pool.
        let count = present.len();
        let wire = if count == 0 {
            None
        } else {
            let Some(mut buffer) = PoolBuf::zeroed(count.saturating_mul(RANGE_SIZE)) else {
                return STATUS_CLOUD_FILE_INSUFFICIENT_RESOURCES;
            };
            for (chunk, r) in buffer
                .as_mut_slice()
                .chunks_exact_mut(RANGE_SIZE)
                .zip(present.iter())
            {
                let (offset, length) = chunk.split_at_mut(8);
                offset.copy_from_slice(&r.start.to_le_bytes());
                length.copy_from_slice(&r.len().to_le_bytes());
            }
            Some(buffer)
        };
        let ranges = match &wire {
            Some(buffer) => RangeList::from_le_bytes(buffer.as_slice()),
            None => Some(RangeList::EMPTY),
        };
        let Some(ranges) = ranges else {
            return STATUS_CLOUD_FILE_INVALID_REQUEST;
        };
        let full = present.bytes() >= self.size;
        let result =
            crate::nt::reparse::encode_blob(self.flags, self.size, stream.identity(), ranges)
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
