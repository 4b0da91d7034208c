//! Validation (a root registered with VALIDATION_REQUIRED): a fetch's data is written to
//! disk but held back ([`StreamState::unvalidated`]) until the provider has read it back
//! and acknowledged it.
//!
//! Once a fetch's whole range is on disk, present or held back, the fetch turns into a
//! validation ([`start`]): its FETCH_DATA, kept when it was sent, goes out again as
//! VALIDATE_DATA (the same body under another kind), and its clock restarts. The
//! provider reads the bytes as NTFS holds them ([`retrieve`], RETRIEVE_DATA) and answers
//! per range ([`acknowledge`], ACK_DATA): an acknowledged range is recorded and becomes
//! present, and the fetch succeeds once its whole range is; a refusal fails the fetch,
//! so its waiters fail with STATUS_CLOUD_FILE_VALIDATION_FAILED and its data stays
//! missing. A provider that never answers times the fetch out like any other.
//!
//! [`StreamState::unvalidated`]: crate::nt::context::StreamState

use cloudflt_proto::msg::Kind;
use cloudflt_proto::msg::{AckData, RetrieveData};
use windows_sys::Win32::Foundation::STATUS_CLOUD_FILE_VALIDATION_FAILED;

use super::*;
use crate::nt::file::Fo;
use crate::nt::placeholder::Payload;

/// Most held-back ranges one acknowledgement records per write of the reparse data.
const ACK_PARTS: usize = 8;

/// Turns every fetch of `stream` from `owner` whose range is now all on disk (present or
/// held back) into a validation: its VALIDATE_DATA is left for [`flush`] to send. `true`
/// when one was made. A fetch whose FETCH_DATA is still in the post (sent, not yet given
/// back to the fetch) waits: `flush` calls this again when it gives it back.
pub(super) fn start(
    t: &mut Table,
    stream: &StreamContext,
    owner: usize,
    after: &mut After,
) -> bool {
    let k = key(stream);
    let mut made = false;
    loop {
        let ready = t.fetches.iter().find(|f| {
            f.request.stream == k
                && f.request.owner == owner
                && f.keep == Keep::Validate
                && f.sent
                && !f.validating
                // Its FETCH_DATA is back from the post (see `flush`).
                && f.sent_message.is_some()
                && stream.with_state(&t.held, |s| on_disk(s, f.request.range))
        });
        let Some(id) = ready.map(|f| f.request.id) else {
            return made;
        };
        let kept = t
            .fetches
            .iter_mut()
            .find(|f| f.request.id == id)
            .and_then(|f| {
                f.validating = true;
                let (mut buffer, len) = f.sent_message.take()?;
                let kind = Kind::ValidateData.to_u16().to_le_bytes();
                buffer.as_mut_slice().get_mut(..2)?.copy_from_slice(&kind);
                f.message = Some((buffer, len));
                Some(())
            });
        match kept {
            Some(()) => made = true,
            None => t.finish(
                id,
                NtStatus::from_raw(STATUS_CLOUD_FILE_VALIDATION_FAILED),
                Change::default(),
                after,
            ),
        }
    }
}

/// Whether all of `range` (within the file) is present or held back for validation.
fn on_disk(s: &StreamState, range: Range) -> bool {
    let range = range.clip(Range {
        start: 0,
        end: s.file_size,
    });
    let mut at = range.start;
    while let Some(gap) = s.present.first_gap(Range {
        start: at,
        end: range.end,
    }) {
        if !s.unvalidated.contains(gap) {
            return false;
        }
        at = gap.end;
    }
    true
}

/// A fetch being validated, held for one provider request: its stream (joined, so the
/// writer stays open), its range and a copy of its writer.
struct Pinned {
    stream: StreamHold,
    range: Range,
    writer: Fo,
}

/// Finds validation `id` of `provider` and pins it; any valid request of the provider
/// restarts the clocks of all its sent fetches.
fn pin(provider: &ProviderRef, id: u64) -> Result<Pinned, NTSTATUS> {
    let owner = provider.key();
    TABLE.with(|t| {
        let fetch = t
            .fetches
            .iter()
            .find(|f| f.request.id == id && f.request.owner == owner && f.validating)
            .ok_or(STATUS_CLOUD_FILE_INVALID_REQUEST)?;
        let stream = StreamHold::new(fetch.stream.get());
        let range = fetch.request.range;
        let writer = stream.get().with_state(&t.held, |s| {
            // The fetch itself is a user, so no dehydration is zeroing: the join holds,
            // and the writer its FETCH_DATA was sent with is open.
            s.join().map_err(|_| STATUS_CLOUD_FILE_IN_USE)?;
            match s.writer().map(|w| **w) {
                Some(writer) => Ok(writer),
                None => {
                    // Not reachable while the fetch is out; undone all the same.
                    let extra = s.leave();
                    debug_assert!(extra.is_none());
                    core::mem::forget(extra);
                    Err(STATUS_CLOUD_FILE_INVALID_REQUEST)
                }
            }
        })?;
        let due = now().saturating_add(provider.timeout);
        for f in t
            .fetches
            .iter_mut()
            .filter(|f| f.request.owner == owner && f.sent)
        {
            f.request.deadline = due;
        }
        Ok(Pinned {
            stream,
            range,
            writer,
        })
    })
}

/// Ends what [`pin`] began; the writer, if this was its last user, is closed here.
fn unpin(pinned: Pinned) {
    let writer = TABLE.with(|t| pinned.stream.get().with_state(&t.held, |s| s.leave()));
    drop(writer);
    drop(pinned);
}

/// RETRIEVE_DATA: the bytes of `m.range`, within the validation's range, as NTFS holds
/// them (read non-cached through the stream's writer, below the driver, in whole units).
pub(crate) fn retrieve(provider: &ProviderRef, m: &RetrieveData) -> Result<Payload, NTSTATUS> {
    let pinned = pin(provider, m.request_id)?;
    let result = read_back(&pinned, m);
    unpin(pinned);
    result
}

fn read_back(pinned: &Pinned, m: &RetrieveData) -> Result<Payload, NTSTATUS> {
    let start = m.range.offset;
    let end = m.range.end().ok_or(STATUS_CLOUD_FILE_INVALID_REQUEST)?;
    if start < pinned.range.start || end > pinned.range.end || start >= end {
        return Err(STATUS_CLOUD_FILE_INVALID_REQUEST);
    }
    let from = start - start % UNIT;
    let to = end
        .div_ceil(UNIT)
        .checked_mul(UNIT)
        .ok_or(STATUS_CLOUD_FILE_INVALID_REQUEST)?;
    let span = usize::try_from(to - from).map_err(|_| STATUS_CLOUD_FILE_INVALID_REQUEST)?;
    let mut bounce = PoolBuf::zeroed(span).ok_or(STATUS_CLOUD_FILE_INSUFFICIENT_RESOURCES)?;
    let read = pinned.writer.read_noncached(from, &mut bounce)?;
    let skip = usize::try_from(start - from).map_err(|_| STATUS_CLOUD_FILE_INVALID_REQUEST)?;
    let wanted = usize::try_from(end - start).map_err(|_| STATUS_CLOUD_FILE_INVALID_REQUEST)?;
    let got = read.saturating_sub(skip).min(wanted);
    let mut out = PoolBuf::zeroed(got.max(1)).ok_or(STATUS_CLOUD_FILE_INSUFFICIENT_RESOURCES)?;
    let (Some(into), Some(from)) = (
        out.as_mut_slice().get_mut(..got),
        bounce.as_slice().get(skip..skip + got),
    ) else {
        return Err(STATUS_CLOUD_FILE_INVALID_REQUEST);
    };
    crate::nt::file::copy(into, from);
    Ok(Some((out, got)))
}

/// ACK_DATA: the provider's verdict on part of a validation. A refusal fails the fetch
/// (its waiters with STATUS_CLOUD_FILE_VALIDATION_FAILED, whatever status the provider
/// gave); an acknowledgement records the held-back data in `m.range` and completes the
/// fetch once all of its range is present.
pub(crate) fn acknowledge(provider: &ProviderRef, m: &AckData) -> NTSTATUS {
    let pinned = match pin(provider, m.request_id) {
        Ok(pinned) => pinned,
        Err(status) => return status,
    };
    let end = m.range.end().unwrap_or(u64::MAX);
    let judged = Range {
        start: m.range.offset,
        end,
    }
    .clip(pinned.range);
    let (status, conclusion) = if judged.is_empty() {
        (STATUS_CLOUD_FILE_INVALID_REQUEST, None)
    } else if m.status < 0 {
        (
            STATUS_SUCCESS,
            Some(NtStatus::from_raw(STATUS_CLOUD_FILE_VALIDATION_FAILED)),
        )
    } else {
        match record_acknowledged(&pinned, judged) {
            Ok(true) => (STATUS_SUCCESS, Some(NtStatus::SUCCESS)),
            Ok(false) => (STATUS_SUCCESS, None),
            Err(status) => (
                status,
                Some(NtStatus::from_raw(STATUS_CLOUD_FILE_UNSUCCESSFUL)),
            ),
        }
    };
    let range = pinned.range;
    // The stream is let go of before the waiters hear: a reader whose read completes
    // may close the file and dehydrate it at once, and must not find the stream still
    // held by this request (STATUS_CLOUD_FILE_IN_USE).
    unpin(pinned);
    if let Some(outcome) = conclusion {
        conclude_validation(m.request_id, outcome, range);
    }
    status
}

/// Records the held-back ranges within `judged`, a few per write: whether all of the
/// fetch's range is present now, or why the record failed.
fn record_acknowledged(pinned: &Pinned, judged: Range) -> Result<bool, NTSTATUS> {
    let stream = pinned.stream.get();
    loop {
        let mut parts = [Range::default(); ACK_PARTS];
        let n = TABLE.with(|t| {
            stream.with_state(&t.held, |s| {
                let mut n = 0;
                for (slot, r) in parts.iter_mut().zip(
                    s.unvalidated
                        .iter()
                        .map(|r| r.clip(judged))
                        .filter(|r| !r.is_empty()),
                ) {
                    *slot = r;
                    n += 1;
                }
                n
            })
        });
        let parts = parts.get(..n).unwrap_or(&[]);
        if parts.is_empty() {
            break;
        }
        let status = super::record::record(stream, &pinned.writer, parts);
        if !nt_success(status) {
            return Err(status);
        }
        TABLE.with(|t| {
            stream.with_state(&t.held, |s| {
                for p in parts {
                    s.unvalidated.remove(*p);
                }
            })
        });
    }
    Ok(TABLE.with(|t| {
        stream.with_state(&t.held, |s| {
            s.present.contains(pinned.range.clip(Range {
                start: 0,
                end: s.file_size,
            }))
        })
    }))
}

/// Ends validation `id` with `outcome`: success once all of `range` is recorded (its
/// waiters go on), or a failure its waiters fail with.
fn conclude_validation(id: u64, outcome: NtStatus, range: Range) {
    let change = if outcome.is_success() {
        Change {
            recorded: Some(range),
            failed: None,
        }
    } else {
        Change::default()
    };
    let mut after = After::new();
    TABLE.with(|t| t.finish(id, outcome, change, &mut after));
    after.run();
}
