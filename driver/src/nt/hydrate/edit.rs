//! Edits: a user's write or change of end of file on a placeholder. What an edit needs
//! present first (engine::write) is fetched like a read's data, the edit pending in the
//! same queue meanwhile; then it *goes*: it is registered as busy over its range (no
//! transfer writes there while it is on its way to the file system, and it never goes
//! over a range a transfer is writing), and its post-operation records what it changed
//! (present, modified, not in sync, one more change, the new end of file) in memory and in
//! the reparse data before the application sees it complete.

use super::*;
use crate::engine::write::{needed_before_resize, needed_before_write};
use crate::nt::file::Fo;

/// What a user changes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Edit {
    /// Writes these bytes.
    Write(Range),
    /// Moves end of file here.
    Resize(u64),
}

/// How an edit goes on.
pub(crate) enum Begin {
    /// Registered busy with this id: on to the file system, with a post-operation that
    /// calls [`end_edit`].
    Go(u64),
    /// This range must be present first.
    Need(Range),
    /// Fail it with this status.
    Fail(NTSTATUS),
}

/// Data being changed right now, by a user's edit (from its go to its post-operation)
/// or a transfer (from the choice of its parts to their record): neither writes where
/// the other is busy.
pub(super) struct Busy {
    pub(super) id: u64,
    pub(super) stream: usize,
    pub(super) range: Range,
    pub(super) by: By,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum By {
    User,
    Transfer,
}

const TAG_BUSY: u32 = tag(b"CFbz");

/// The range an edit occupies while it goes: a write's bytes; a resize's bytes between
/// the two ends of file.
fn footprint(edit: Edit, size: u64) -> Range {
    match edit {
        Edit::Write(r) => r,
        Edit::Resize(new) => Range {
            start: new.min(size),
            end: new.max(size),
        },
    }
}

/// Decides whether `edit` may go now: with nothing missing that it needs (`whole`: the
/// open is FULL or ALWAYS_FULL, so a write needs the whole file), no dehydration zeroing
/// and no transfer writing where it would write, it is registered busy and goes.
pub(crate) fn begin_edit(stream: &StreamContext, edit: Edit, whole: bool) -> Begin {
    let Some(node) = Node::new(
        Busy {
            id: 0,
            stream: key(stream),
            range: Range::default(),
            by: By::User,
        },
        TAG_BUSY,
    ) else {
        return Begin::Fail(STATUS_CLOUD_FILE_INSUFFICIENT_RESOURCES);
    };
    let mut node = Some(node);
    TABLE.with(|t| {
        let k = key(stream);
        let decided = stream.with_state(&t.held, |s| {
            if s.is_corrupt() {
                return Err(Begin::Fail(STATUS_CLOUD_FILE_METADATA_CORRUPT));
            }
            let range = footprint(edit, s.file_size);
            if s.is_zeroing() {
                // Asked for, and gone on, once the dehydration is over.
                return Err(Begin::Need(range.align_out(UNIT, s.file_size.max(1))));
            }
            let needed = match edit {
                Edit::Write(w) => needed_before_write(w, s.file_size, &s.present, whole),
                Edit::Resize(new) => needed_before_resize(s.file_size, new, &s.present),
            };
            if let Some(needed) = needed {
                return Err(Begin::Need(needed));
            }
            // Room for what the edit will record: it must never fail to record a change
            // it let through.
            if s.room(0) < 2 {
                return Err(Begin::Fail(STATUS_CLOUD_FILE_INSUFFICIENT_RESOURCES));
            }
            Ok(range)
        });
        let range = match decided {
            Ok(range) => range,
            Err(begin) => return begin,
        };
        // Over a transfer's parts: wait for them to be recorded.
        let covered = range.align_out(UNIT, u64::MAX);
        if let Some(b) = t
            .busy
            .iter()
            .find(|b| b.stream == k && b.by == By::Transfer && overlaps(b.range, covered))
        {
            return Begin::Need(b.range);
        }
        let id = t.next_id();
        let Some(mut node) = node.take() else {
            return Begin::Fail(STATUS_CLOUD_FILE_UNSUCCESSFUL);
        };
        node.value.id = id;
        node.value.range = range;
        t.busy.push(node);
        Begin::Go(id)
    })
}

fn overlaps(a: Range, b: Range) -> bool {
    a.start < b.end && b.start < a.end
}

/// How an edit that went ended, as its post-operation saw it.
pub(crate) struct Ended {
    /// It succeeded: these bytes were written (empty for a resize).
    pub(crate) written: Option<Range>,
    /// End of file after it.
    pub(crate) size: u64,
}

/// The post-operation of edit `id`: records what it changed (if it succeeded) and writes
/// the record through `file`; the edit stops being busy and operations waiting on the
/// stream are looked at again. PASSIVE_LEVEL. Returns the status to complete the edit
/// with: a change the record could not keep fails the operation (the bytes stay, and
/// stay recorded in memory).
pub(crate) fn end_edit(
    stream: &StreamContext,
    id: u64,
    ended: Option<Ended>,
    file: &Fo,
) -> NTSTATUS {
    let recorded = TABLE.with(|t| {
        let ok = match &ended {
            Some(e) => stream.with_state(&t.held, |s| {
                let mut ok = true;
                if e.size != s.file_size {
                    ok &= s.resize(e.size);
                }
                if let Some(w) = e.written {
                    ok &= s.modify(w.clip(Range {
                        start: 0,
                        end: s.file_size,
                    }));
                } else if e.size == s.file_size {
                    // A resize to the same size still changed nothing on disk, but the
                    // user asked: no longer in sync is the safe side.
                    ok &= s.modify(Range::default());
                }
                ok
            }),
            None => true,
        };
        drop(t.busy.take_first(|b| b.id == id));
        ok
    });
    let status = if ended.is_some() {
        let status = persist(stream, file);
        if recorded {
            status
        } else {
            STATUS_CLOUD_FILE_INSUFFICIENT_RESOURCES
        }
    } else {
        STATUS_SUCCESS
    };
    finish_present(stream);
    status
}

/// Fetches of `stream` whose range is now all present are done, and its waiters are
/// looked at again (an edit made data present, or stopped being busy).
pub(super) fn finish_present(stream: &StreamContext) {
    let k = key(stream);
    let mut after = After::new();
    TABLE.with(|t| {
        while let Some(done) = t
            .fetches
            .iter()
            .find(|f| {
                f.request.stream == k
                    && stream.with_state(&t.held, |s| {
                        s.present.contains(f.request.range.clip(Range {
                            start: 0,
                            end: s.file_size,
                        }))
                    })
            })
            .map(|f| f.request.id)
        {
            t.finish(done, NtStatus::SUCCESS, Change::default(), &mut after);
        }
        t.settle(k, Change::default(), &mut after);
    });
    after.run();
}

/// An edit's post-operation that cannot run at PASSIVE_LEVEL (or runs while the instance
/// drains): what it wrote is recorded in memory at once, the reparse data follows from
/// the postman's work item, and the edit stops being busy.
pub(crate) fn end_edit_later(stream: &StreamContext, id: u64, written: Option<Range>) {
    TABLE.with(|t| drop(t.busy.take_first(|b| b.id == id)));
    if let Some(w) = written {
        mapped_write(stream, w);
    }
}

/// A paging write the memory manager's mapped page writer (or any writer of a stream
/// mapped for writing) sends: the pages a user changed through a view. Recorded as
/// modified in memory at once (no lock of the file system may be taken here: the writer
/// holds them); the reparse data follows from the postman's work item.
pub(crate) fn mapped_write(stream: &StreamContext, write: Range) {
    let queued = TABLE.with(|t| {
        let changed = stream.with_state(&t.held, |s| {
            if !s.is_placeholder() || s.is_corrupt() {
                return false;
            }
            let w = write.clip(Range {
                start: 0,
                end: s.file_size,
            });
            // A write past end of file (its size not known here) is left to what the
            // file system does with it: only what lies in the file is recorded.
            // Nothing to do when those pages are already recorded as changed.
            if s.modified.contains(w) && !s.flags.contains(PlaceholderFlags::IN_SYNC) {
                return false;
            }
            // Present already (a mapped file is whole before it is mapped); a record
            // that cannot take one more modified range still loses no data, and the
            // file is no longer in sync either way.
            let _ = s.modify(w) || s.modify(Range::default());
            true
        });
        if !changed {
            return false;
        }
        let Some(node) = Node::new(StreamHold::new(stream), TAG_BUSY) else {
            return false;
        };
        t.unpersisted.push(node);
        POSTMAN.set(1);
        true
    });
    let _ = queued;
}

/// The postman's part: writes the reparse data of the streams whose state changed where
/// it could not be written (paging writes), through a handle of its own.
pub(super) fn persist_unpersisted() {
    while let Some(node) = TABLE.with(|t| t.unpersisted.take_first(|_| true)) {
        persist_by_id(node.value.get());
        drop(node);
    }
}

/// Writes the stream's state into its reparse data through a handle of the driver's own
/// (opened by id, below the instance, its times frozen).
fn persist_by_id(stream: &StreamContext) {
    if let Some(filter) = crate::nt::driver::filter()
        && let Ok(file) = OwnedFile::open_by_id(
            filter,
            stream.instance,
            stream.file_id,
            0x0002 | 0x0100 | 0x0080, // FILE_WRITE_DATA | FILE_WRITE_ATTRIBUTES | FILE_READ_ATTRIBUTES
        )
    {
        let _ = file.freeze_times();
        // The open holds the file's stream, so the context attached to it cannot change
        // meanwhile. `stream` may be an older one: the stream was torn down after the
        // paging write this runs for (the postman holds a reference on the context, not
        // on the stream), and a later open attached another context from the record on
        // disk, which has gone on since (a truncation, an update, a set_in_sync…). Its
        // state must never be written over that context's record.
        let Ok(Some(live)) = crate::nt::stream::attach(filter, *file) else {
            return;
        };
        if core::ptr::eq::<StreamContext>(&*live, stream) || adopt(stream, &live) {
            let _ = persist(&live, &file);
        }
    }
}

/// `old` is no longer its file's stream context, `live` is: what `old` recorded in
/// memory but never wrote to disk (a mapped writer's pages, recorded as modified after
/// its last record) is recorded in `live` too, where it is still present there (data
/// `live` truncated or dehydrated since is not the user's any more); `old` is never
/// written again. True when `live` took something, so that its record is to be written.
fn adopt(old: &StreamContext, live: &StreamContext) -> bool {
    let Some(mut unrecorded) = super::new_present() else {
        return false;
    };
    let pending = TABLE.with(|t| {
        old.with_state(&t.held, |s| {
            let pending = s.changes != s.recorded_changes;
            if pending {
                unrecorded.copy_from(&s.modified);
                s.recorded_changes = s.changes;
            }
            pending
        })
    });
    if !pending {
        return false;
    }
    let Some(mut parts) = super::new_present() else {
        return false;
    };
    TABLE.with(|t| {
        live.with_state(&t.held, |s| {
            let file = Range {
                start: 0,
                end: s.file_size,
            };
            for m in unrecorded.iter() {
                for p in s.present.iter() {
                    let part = m.clip(p).clip(file);
                    if !part.is_empty() && !s.modified.contains(part) {
                        parts.insert(part);
                    }
                }
            }
            for part in parts.iter() {
                // As in `mapped_write`: a record that cannot take it still says the file
                // is not in sync.
                let _ = s.modify(part) || s.modify(Range::default());
            }
        })
    });
    true
}

/// The last handle of `stream` is closing (pre-cleanup: PASSIVE_LEVEL, no file system
/// lock held). If the stream was ever mapped for writing, what its views changed and the
/// memory manager has not written yet is flushed now, through `file` (the flush's
/// paging writes are recorded as modified by [`mapped_write`]), and the stream's record
/// is written before the close completes: a provider that looks at the file once the
/// application has closed it finds the modified ranges on disk, not only later, when the
/// postman has run. Best effort: a failed flush leaves it to the mapped page writer and
/// the postman, which lose nothing either.
pub(crate) fn closing(stream: &StreamContext, file: &Fo) {
    let mapped = TABLE.with(|t| {
        stream.with_state(&t.held, |s| {
            s.mapped_for_write && s.is_placeholder() && !s.is_corrupt()
        })
    });
    if !mapped {
        return;
    }
    let _ = file.flush();
    // Written here even if the postman holds the stream's node already: one write at a
    // time per stream, each with the newest state (`record`), so this one is not done
    // before the flushed pages are on disk as modified.
    persist_by_id(stream);
}

/// A create just overwrote or superseded the placeholder whose reparse data was `old`
/// (NTFS dropped the reparse point with the data): the file, opened through `file`, is
/// made a placeholder again with the same identity and pin state, wholly local (its
/// data, if any, present and modified), not in sync and one change further, with no
/// fetch. A stream context the file still has takes the same state.
pub(crate) fn overwritten(file: &Fo, old: &[u8]) -> Result<(), NTSTATUS> {
    let old = cloudflt_proto::Placeholder::decode_reparse(old)
        .map_err(|_| STATUS_CLOUD_FILE_METADATA_CORRUPT)?;
    let flags = old.flags.difference(PlaceholderFlags::IN_SYNC);
    let size = file.size()?;
    let whole = [WireRange::new(0, size)];
    let ranges = if size > 0 {
        RangeList::from_slice(&whole)
    } else {
        RangeList::EMPTY
    };
    let changes = old.changes.wrapping_add(1);
    let (blob, len) = crate::nt::reparse::encode(&cloudflt_proto::Placeholder {
        flags,
        file_size: size,
        identity: old.identity,
        ranges,
        modified: ranges,
        changes,
    })?;
    file.tag(blob.as_slice().get(..len).unwrap_or(&[]))?;
    file.change_attributes(MISSING_DATA_ATTRIBUTES, 0)?;
    if let Some(stream) = crate::nt::stream::get(file.instance, file.file_object) {
        TABLE.with(|t| {
            stream.with_state(&t.held, |s| {
                s.replaced(flags, size, changes);
            })
        });
        changed(&stream);
    }
    Ok(())
}

/// What a provider's UPDATE asks of a file's state (checked before anything changes).
pub(crate) struct ProviderChange {
    /// `if_unchanged`: the change counter the provider last saw.
    pub(crate) expected: Option<u64>,
    pub(crate) mark_in_sync: bool,
    pub(crate) dehydrate: bool,
    /// The cloud copy's size.
    pub(crate) size: u64,
}

/// Checks a provider's UPDATE against the file as it is: a stale `expected` counter, or a
/// change that would drop a user's modified data (dehydrating a file with modified
/// ranges, or one not in sync unless the update marks it in sync; a new size below a
/// modified range, or growing a file whose last, partial unit holds one), fails with
/// STATUS_CLOUD_FILE_NOT_IN_SYNC; a size change while a fetch or an edit of the file is
/// out, with STATUS_CLOUD_FILE_IN_USE. Returns the change counter seen, which
/// [`provider_mark`] compares again.
pub(crate) fn check_provider_change(
    stream: &StreamContext,
    change: &ProviderChange,
) -> Result<u64, NTSTATUS> {
    TABLE.with(|t| {
        let k = key(stream);
        let out =
            t.fetches.iter().any(|f| f.request.stream == k) || t.busy.iter().any(|b| b.stream == k);
        stream.with_state(&t.held, |s| {
            if s.is_corrupt() {
                return Err(STATUS_CLOUD_FILE_METADATA_CORRUPT);
            }
            if change.expected.is_some_and(|e| e != s.changes) {
                return Err(STATUS_CLOUD_FILE_NOT_IN_SYNC);
            }
            let in_sync = s.flags.contains(PlaceholderFlags::IN_SYNC);
            if change.dehydrate && (!s.modified.is_empty() || (!in_sync && !change.mark_in_sync)) {
                return Err(STATUS_CLOUD_FILE_NOT_IN_SYNC);
            }
            if change.size != s.file_size {
                let lost_modified = s.modified.iter().any(|r| r.end > change.size);
                let tail = Range {
                    start: s.file_size - s.file_size % UNIT,
                    end: s.file_size,
                };
                let grown_over_modified = change.size > s.file_size
                    && !tail.is_empty()
                    && s.modified.first_gap(tail) != Some(tail);
                if lost_modified || grown_over_modified {
                    return Err(STATUS_CLOUD_FILE_NOT_IN_SYNC);
                }
                if out {
                    return Err(STATUS_CLOUD_FILE_IN_USE);
                }
            }
            // A file on its way out of its root (`begin_move_out`) takes no missing data.
            if s.moving_out > 0 && (change.dehydrate || change.size > s.file_size) {
                return Err(STATUS_CLOUD_FILE_IN_USE);
            }
            Ok(s.changes)
        })
    })
}

/// The cloud copy's size became `size` (a provider's UPDATE, checked by
/// [`check_provider_change`]): end of file moves on disk through `file`; what a lower end
/// cuts off is gone, and what a higher one adds is missing (the cloud's data, fetched
/// when read), as is the old last unit if it was partial — its end was the old cloud
/// end of file, its rest now the cloud's data.
pub(crate) fn cloud_resize(stream: &StreamContext, file: &Fo, size: u64) -> Result<(), NTSTATUS> {
    file.set_end_of_file(size)?;
    TABLE.with(|t| {
        stream.with_state(&t.held, |s| {
            if size > s.file_size {
                let tail = Range {
                    start: s.file_size - s.file_size % UNIT,
                    end: s.file_size,
                };
                s.present.remove(tail);
            } else {
                s.present.truncate(size);
                s.modified.truncate(size);
            }
            s.file_size = size;
        })
    });
    Ok(())
}

/// The in-sync part of an UPDATE or SET_IN_SYNC: marks the file in sync or not, and
/// counts one more change. Marked in sync by the provider (`forget_modified`), its
/// modified ranges are the provider's now and forgotten; by another process, they stay.
/// Refused with STATUS_CLOUD_FILE_NOT_IN_SYNC when the counter moved since `seen` (a
/// user's change arrived meanwhile: marking in sync would drop it from the provider's
/// view). Returns the new counter.
pub(crate) fn provider_mark(
    stream: &StreamContext,
    seen: u64,
    in_sync: Option<bool>,
    forget_modified: bool,
) -> Result<u64, NTSTATUS> {
    TABLE.with(|t| {
        stream.with_state(&t.held, |s| {
            if s.changes != seen {
                return Err(STATUS_CLOUD_FILE_NOT_IN_SYNC);
            }
            match in_sync {
                Some(true) => {
                    s.flags = s.flags.union(PlaceholderFlags::IN_SYNC);
                    if forget_modified {
                        s.modified.truncate(0);
                    }
                }
                Some(false) => s.flags = s.flags.difference(PlaceholderFlags::IN_SYNC),
                None => {}
            }
            s.changes = s.changes.wrapping_add(1);
            Ok(s.changes)
        })
    })
}

/// A change the root's in-sync policy tracks (an attribute or a time a user set) was
/// made to `stream` through `file`: the file leaves in-sync and counts one more change,
/// in memory and in its reparse data. Called at PASSIVE_LEVEL with no file system lock
/// held (the set-information's synchronized post-operation).
pub(crate) fn tracked_change(stream: &StreamContext, file: &Fo) -> NTSTATUS {
    let placeholder = TABLE.with(|t| {
        stream.with_state(&t.held, |s| {
            if !s.is_placeholder() || s.is_corrupt() {
                return false;
            }
            s.modify(Range::default())
        })
    });
    if placeholder {
        persist(stream, file)
    } else {
        STATUS_SUCCESS
    }
}

/// A section for writing is being made for `stream` (a writable mapped view): the file
/// leaves in-sync now, in the reparse data too (through `file`, at PASSIVE_LEVEL with no
/// file system lock held), since what the view changes arrives later as paging writes,
/// recorded as modified by [`mapped_write`] and written by the postman. A file already
/// out of sync is left as it is.
pub(crate) fn mapped_for_writing(stream: &StreamContext, file: &Fo) -> NTSTATUS {
    let changed = TABLE.with(|t| {
        stream.with_state(&t.held, |s| {
            if !s.flags.contains(PlaceholderFlags::IN_SYNC) {
                return false;
            }
            let _ = s.modify(Range::default());
            true
        })
    });
    if changed {
        persist(stream, file)
    } else {
        STATUS_SUCCESS
    }
}
