//! Fetch requests outstanding with providers, and what a waiter's outcome is.
//!
//! One request per missing range, however many readers wait for it: a reader whose
//! range an in-flight request already covers waits for that request instead of asking
//! again. Each request has a deadline (the sync root's timeout); as in cfapi, any valid
//! message from the provider restarts the clocks of all its requests.
//!
//! The nt layer keeps the requests in lists it allocates per request (no table, no cap);
//! these functions decide over any iterator of them.

use super::ranges::{Range, RangeSet};

/// One request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// Request id sent to the provider (never 0, never reused while the driver runs).
    pub id: u64,
    /// The stream it fills (the nt layer's key for a file).
    pub stream: usize,
    /// The range asked for.
    pub range: Range,
    /// The connection it was sent on.
    pub owner: usize,
    /// When it times out (the nt layer's clock, 100 ns units).
    pub deadline: i64,
}

/// The first part of `gap` that no in-flight request of `stream` will deliver, so a
/// reader asks only for what nobody has asked for yet.
pub fn unrequested<'a>(
    requests: impl Iterator<Item = &'a Request> + Clone,
    stream: usize,
    gap: Range,
) -> Option<Range> {
    let mut start = gap.start;
    loop {
        if start >= gap.end {
            return None;
        }
        let covering = requests
            .clone()
            .find(|r| r.stream == stream && r.range.start <= start && start < r.range.end);
        match covering {
            Some(r) => start = r.range.end,
            None => {
                let end = requests
                    .clone()
                    .filter(|r| r.stream == stream && r.range.start > start)
                    .map(|r| r.range.start)
                    .fold(gap.end, u64::min);
                return Some(Range { start, end });
            }
        }
    }
}

/// What a waiter for `need` (already clipped to the file) learns from an event on its
/// stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict<S> {
    /// Everything it needs is present: it may go on.
    Ready,
    /// A request it depends on failed with this status.
    Failed(S),
    /// Part of what it needs is neither present nor asked for (forgotten by a full range
    /// set, or dropped): it must ask again.
    Stalled,
    /// Still waiting for requests in flight.
    Waiting,
}

/// The outcome for a waiter that needs `need`, given what is `present`, a range just
/// `recorded` (present on disk even if a full range set could not keep it), the request
/// that just `failed` with its status, and the requests still in flight.
pub fn verdict<'a, S: Copy, const N: usize>(
    need: Range,
    present: &RangeSet<N>,
    recorded: Option<Range>,
    failed: Option<(Range, S)>,
    in_flight: impl Iterator<Item = &'a Request> + Clone,
    stream: usize,
) -> Verdict<S> {
    let missing = |range: Range| gaps(present, recorded, range);
    if missing(need).next().is_none() {
        return Verdict::Ready;
    }
    if let Some((range, status)) = failed {
        let lost = need.clip(range);
        if !lost.is_empty() && missing(lost).next().is_some() {
            return Verdict::Failed(status);
        }
    }
    if missing(need).any(|gap| unrequested(in_flight.clone(), stream, gap).is_some()) {
        Verdict::Stalled
    } else {
        Verdict::Waiting
    }
}

/// The parts of `range` that neither `present` nor `recorded` hold.
fn gaps<const N: usize>(
    present: &RangeSet<N>,
    recorded: Option<Range>,
    range: Range,
) -> impl Iterator<Item = Range> + '_ {
    let mut cursor = range.start;
    core::iter::from_fn(move || {
        loop {
            let gap = present.first_gap(Range {
                start: cursor,
                end: range.end,
            })?;
            // The recorded range covers a prefix, a suffix or the middle of the gap.
            let (first, after) = match recorded {
                Some(r) if r.start <= gap.start && gap.start < r.end => {
                    cursor = r.end.min(gap.end);
                    if cursor >= gap.end {
                        continue;
                    }
                    (
                        Range {
                            start: cursor,
                            end: gap.end,
                        },
                        gap.end,
                    )
                }
                Some(r) if gap.start < r.start && r.start < gap.end => (
                    Range {
                        start: gap.start,
                        end: r.start,
                    },
                    r.end.min(gap.end),
                ),
                _ => (gap, gap.end),
            };
            cursor = after.max(first.end);
            return Some(first);
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(id: u64, stream: usize, range: Range) -> Request {
        Request {
            id,
            stream,
            range,
            owner: 1,
            deadline: 10,
        }
    }

    #[test]
    fn only_what_nobody_asked_for_is_requested() {
        let t = [
            req(1, 1, Range::at(4096, 4096)),
            req(2, 1, Range::at(12288, 4096)),
            req(3, 2, Range::at(0, 65536)),
        ];
        let gap = Range::at(0, 20480);
        assert_eq!(unrequested(t.iter(), 1, gap), Some(Range::at(0, 4096)));
        assert_eq!(
            unrequested(t.iter(), 1, Range::at(4096, 16384)),
            Some(Range::at(8192, 4096))
        );
        assert_eq!(
            unrequested(t.iter(), 1, Range::at(12288, 8192)),
            Some(Range::at(16384, 4096))
        );
        assert_eq!(unrequested(t.iter(), 1, Range::at(4096, 4096)), None);
        assert_eq!(unrequested(t.iter(), 2, gap), None);
    }

    #[test]
    fn a_waiter_is_ready_once_its_range_is_present_or_just_recorded() {
        let mut present = RangeSet::<2>::new();
        present.insert(Range::at(0, 4096));
        let none: [Request; 0] = [];
        let v = verdict::<i32, 2>(Range::at(0, 4096), &present, None, None, none.iter(), 1);
        assert_eq!(v, Verdict::Ready);
        // A full set forgets ranges; the one just written still counts.
        let v = verdict::<i32, 2>(
            Range::at(0, 12288),
            &present,
            Some(Range::at(4096, 8192)),
            None,
            none.iter(),
            1,
        );
        assert_eq!(v, Verdict::Ready);
        let v = verdict::<i32, 2>(
            Range::at(0, 16384),
            &present,
            Some(Range::at(4096, 8192)),
            None,
            none.iter(),
            1,
        );
        assert_eq!(v, Verdict::Stalled);
    }

    #[test]
    fn a_failed_request_fails_only_waiters_that_still_need_its_range() {
        let mut present = RangeSet::<4>::new();
        present.insert(Range::at(0, 4096));
        let flying = [req(7, 1, Range::at(8192, 4096))];
        let failed = Some((Range::at(0, 8192), -5));
        // Needs 4096..8192, which the failed request was to deliver.
        let v = verdict(Range::at(0, 8192), &present, None, failed, flying.iter(), 1);
        assert_eq!(v, Verdict::Failed(-5));
        // Its part of the failed range is present: it waits for request 7.
        let v = verdict(
            Range::at(0, 4096).clip(Range::at(0, 4096)),
            &present,
            None,
            failed,
            flying.iter(),
            1,
        );
        assert_eq!(v, Verdict::Ready);
        let v = verdict(
            Range::at(8192, 4096),
            &present,
            None,
            failed,
            flying.iter(),
            1,
        );
        assert_eq!(v, Verdict::Waiting);
        // Nothing in flight for another stream's key.
        let v = verdict::<i32, 4>(
            Range::at(8192, 4096),
            &present,
            None,
            None,
            flying.iter(),
            2,
        );
        assert_eq!(v, Verdict::Stalled);
    }

    #[test]
    fn gaps_skip_what_was_just_recorded() {
        let present = RangeSet::<4>::new();
        let all: std::vec::Vec<Range> =
            gaps(&present, Some(Range::at(4096, 4096)), Range::at(0, 16384)).collect();
        assert_eq!(all, [Range::at(0, 4096), Range::at(8192, 8192)]);
        let all: std::vec::Vec<Range> =
            gaps(&present, Some(Range::at(0, 4096)), Range::at(0, 8192)).collect();
        assert_eq!(all, [Range::at(4096, 4096)]);
        let all: std::vec::Vec<Range> =
            gaps(&present, Some(Range::at(0, 8192)), Range::at(0, 8192)).collect();
        assert!(all.is_empty());
    }
}
