//! What a change to a placeholder's data needs first, and what it leaves behind: writes,
//! truncation and extension keep every 4 KiB unit of the file either wholly present or
//! wholly missing, so that a provider's transfer (whole units, cfapi's alignment rule)
//! never lands on bytes a user wrote, and a missing unit never holds some of them.
//!
//! - A write covering a unit only in part needs the unit's missing data first; a unit it
//!   covers wholly needs nothing (its old data is replaced).
//! - Moving end of file up (a write past it, or an extension) needs the unit holding the
//!   old end first when that end is not on a unit boundary: the bytes after it become
//!   the user's zeros, the bytes before it must be the provider's.
//! - Moving end of file down needs the unit holding the new end first when that end is
//!   not on a unit boundary (the part that survives must be right); nothing it discards
//!   is ever fetched.
//! - Under FULL and ALWAYS_FULL a write needs the whole file, as a read does.
//!
//! And the range record's budget: when the on-disk record is close to full, a fetch is
//! widened to reach its nearer present neighbour, so the set never has to forget a
//! range ([`widen_to_fit`]).

use super::policy::UNIT;
use super::ranges::{Range, RangeSet};

fn unit_of(offset: u64) -> Range {
    let start = offset - offset % UNIT;
    Range {
        start,
        end: start.saturating_add(UNIT),
    }
}

/// The first range that must be present before `write` may reach a file of `size` bytes
/// whose present data is `present`; `None` when it may go now. `whole`: the open's policy
/// is FULL or ALWAYS_FULL.
pub fn needed_before_write<const N: usize>(
    write: Range,
    size: u64,
    present: &RangeSet<N>,
    whole: bool,
) -> Option<Range> {
    let file = Range {
        start: 0,
        end: size,
    };
    if whole && !present.contains(file) {
        return Some(file);
    }
    if write.is_empty() {
        return None;
    }
    let covers = |u: Range| write.start <= u.start && write.end >= u.end;
    let mut candidates = [
        unit_of(write.start),
        unit_of(write.end.saturating_sub(1)),
        // The unit holding the old end of file, when the write moves it up.
        if write.end > size && !size.is_multiple_of(UNIT) {
            unit_of(size)
        } else {
            Range::default()
        },
    ];
    for u in &mut candidates {
        *u = u.clip(file);
    }
    candidates
        .into_iter()
        .find(|u| !u.is_empty() && !covers(*u) && !present.contains(*u))
}

/// The range that must be present before end of file moves from `size` to `new_size`;
/// `None` when it may move now.
pub fn needed_before_resize<const N: usize>(
    size: u64,
    new_size: u64,
    present: &RangeSet<N>,
) -> Option<Range> {
    let edge = size.min(new_size);
    if edge.is_multiple_of(UNIT) || new_size == size {
        return None;
    }
    let unit = unit_of(edge).clip(Range {
        start: 0,
        end: size,
    });
    (!unit.is_empty() && !present.contains(unit)).then_some(unit)
}

/// `want` (a range to fetch), widened when the record has room for at most `room` more
/// separate ranges: if a new separate range would not fit, it reaches over the smaller
/// gap to its nearer present neighbour, so that what arrives merges with it. The gap is
/// fetched too (never a range already present, so nothing is fetched twice); the count
/// of ranges does not grow.
pub fn widen_to_fit<const N: usize>(
    want: Range,
    present: &RangeSet<N>,
    coming: impl Iterator<Item = Range> + Clone,
    room: usize,
) -> Range {
    // Two: the new range itself, and one for a split a dehydration may need.
    if room >= 2 || want.is_empty() {
        return want;
    }
    // Neighbours: present ranges, and ranges already asked for (`coming`), which will
    // be present and merge with what this fetch brings.
    let before = present
        .iter()
        .chain(coming.clone())
        .filter(|r| r.end <= want.start)
        .max_by_key(|r| r.end);
    let after = present
        .iter()
        .chain(coming)
        .filter(|r| r.start >= want.end)
        .min_by_key(|r| r.start);
    match (before, after) {
        (Some(b), Some(a)) if want.start - b.end <= a.start - want.end => Range {
            start: b.end,
            end: want.end,
        },
        (_, Some(a)) => Range {
            start: want.start,
            end: a.start,
        },
        (Some(b), None) => Range {
            start: b.end,
            end: want.end,
        },
        (None, None) => want,
    }
}

/// The parts of a transfer's `range` that it may write: neither `present` (never over
/// data that is there, a user's above all) nor `blocked` (a user's edit on its way);
/// each starts on a unit boundary and ends on one or at `eof`, since a transfer writes
/// whole units. At most `out.len()` parts, in order; returns how many.
pub fn free_parts<const N: usize, const M: usize>(
    range: Range,
    present: &RangeSet<N>,
    blocked: &RangeSet<M>,
    eof: u64,
    out: &mut [Range],
) -> usize {
    let mut n = 0;
    let mut at = range.start;
    while at < range.end && n < out.len() {
        let Some(gap) = present.first_gap(Range {
            start: at,
            end: range.end,
        }) else {
            break;
        };
        let mut inner = gap.start;
        while inner < gap.end && n < out.len() {
            let Some(free) = blocked.first_gap(Range {
                start: inner,
                end: gap.end,
            }) else {
                break;
            };
            let start = free.start.next_multiple_of(UNIT);
            let end = if free.end == eof {
                free.end
            } else {
                free.end - free.end % UNIT
            };
            if start < end
                && let Some(slot) = out.get_mut(n)
            {
                *slot = Range { start, end };
                n += 1;
            }
            inner = free.end;
        }
        at = gap.end;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ranges: &[(u64, u64)]) -> RangeSet<16> {
        let mut s = RangeSet::new();
        for &(a, b) in ranges {
            s.insert(Range { start: a, end: b });
        }
        s
    }

    const R: fn(u64, u64) -> Range = |start, end| Range { start, end };

    #[test]
    fn a_write_inside_a_missing_unit_needs_that_unit() {
        let none = set(&[]);
        assert_eq!(
            needed_before_write(R(8200, 8208), 65536, &none, false),
            Some(R(8192, 12288))
        );
        // Present: nothing needed.
        let have = set(&[(8192, 12288)]);
        assert_eq!(
            needed_before_write(R(8200, 8208), 65536, &have, false),
            None
        );
    }

    #[test]
    fn whole_units_need_nothing() {
        let none = set(&[]);
        assert_eq!(
            needed_before_write(R(4096, 12288), 65536, &none, false),
            None
        );
        // A write over the last, short unit up to end of file covers it wholly.
        assert_eq!(needed_before_write(R(8192, 9000), 9000, &none, false), None);
    }

    #[test]
    fn both_edges_are_needed_in_turn() {
        let none = set(&[]);
        let w = R(100, 5000);
        assert_eq!(
            needed_before_write(w, 65536, &none, false),
            Some(R(0, 4096))
        );
        let head = set(&[(0, 4096)]);
        assert_eq!(
            needed_before_write(w, 65536, &head, false),
            Some(R(4096, 8192))
        );
    }

    #[test]
    fn moving_end_of_file_up_needs_the_old_last_unit() {
        let none = set(&[]);
        // Appending at 9000 covers the unit 8192.. only in part.
        assert_eq!(
            needed_before_write(R(9000, 9010), 9000, &none, false),
            Some(R(8192, 9000))
        );
        // Far past it too: NTFS zero-fills from 9000 on.
        assert_eq!(
            needed_before_write(R(20000, 20010), 9000, &none, false),
            Some(R(8192, 9000))
        );
        // An aligned end of file leaves no unit in part.
        assert_eq!(needed_before_write(R(8192, 8200), 8192, &none, false), None);
        assert_eq!(
            needed_before_resize(9000, 20000, &none),
            Some(R(8192, 9000))
        );
        assert_eq!(needed_before_resize(8192, 20000, &none), None);
    }

    #[test]
    fn truncation_needs_only_the_surviving_part_of_its_unit() {
        let none = set(&[]);
        assert_eq!(
            needed_before_resize(65536, 5000, &none),
            Some(R(4096, 8192))
        );
        assert_eq!(needed_before_resize(65536, 4096, &none), None);
        assert_eq!(needed_before_resize(65536, 0, &none), None);
        assert_eq!(needed_before_resize(6000, 5000, &none), Some(R(4096, 6000)));
        assert_eq!(
            needed_before_resize(65536, 5000, &set(&[(4096, 8192)])),
            None
        );
    }

    #[test]
    fn full_needs_the_whole_file() {
        let none = set(&[]);
        assert_eq!(
            needed_before_write(R(0, 4096), 65536, &none, true),
            Some(R(0, 65536))
        );
        assert_eq!(
            needed_before_write(R(0, 4096), 65536, &set(&[(0, 65536)]), true),
            None
        );
    }

    #[test]
    fn transfers_write_only_free_whole_units() {
        let present = set(&[(4096, 8192)]);
        let mut blocked: RangeSet<4> = RangeSet::new();
        blocked.insert(R(16384, 20480));
        let mut out = [Range::default(); 8];
        let n = free_parts(R(0, 40000), &present, &blocked, 40000, &mut out);
        assert_eq!(&out[..n], &[R(0, 4096), R(8192, 16384), R(20480, 40000)]);
        // An unaligned edge that is not end of file is left out.
        let none: RangeSet<4> = RangeSet::new();
        let mut odd: RangeSet<4> = RangeSet::new();
        odd.insert(R(5000, 6000));
        let n = free_parts(R(0, 12288), &none, &odd, 40000, &mut out);
        assert_eq!(&out[..n], &[R(0, 4096), R(8192, 12288)]);
        // Room for one part only.
        let n = free_parts(R(0, 40000), &present, &blocked, 40000, &mut out[..1]);
        assert_eq!(n, 1);
    }

    #[test]
    fn a_full_record_widens_fetches_to_a_neighbour() {
        let s = set(&[(0, 4096), (16384, 20480)]);
        let want = R(8192, 12288);
        assert_eq!(widen_to_fit(want, &s, core::iter::empty(), 10), want);
        // Nearer to the left neighbour.
        assert_eq!(
            widen_to_fit(want, &s, core::iter::empty(), 1),
            R(4096, 12288)
        );
        // Nearer to the right one.
        assert_eq!(
            widen_to_fit(R(12288, 14336), &s, core::iter::empty(), 0),
            R(12288, 16384)
        );
        // Nothing to the right.
        assert_eq!(
            widen_to_fit(R(24576, 28672), &s, core::iter::empty(), 0),
            R(20480, 28672)
        );
        // Never over a present range: the result starts or ends at a neighbour.
        let w = widen_to_fit(R(8192, 12288), &s, core::iter::empty(), 0);
        assert!(s.first_gap(w) == Some(w));
        // A range already asked for is a neighbour too.
        let asked = [R(12288, 14336)];
        assert_eq!(
            widen_to_fit(R(24576, 28672), &set(&[]), asked.iter().copied(), 0),
            R(14336, 28672)
        );
    }
}
