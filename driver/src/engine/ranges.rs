//! Which byte ranges of a placeholder are present on disk.
//!
//! A fixed-capacity set of half-open ranges, kept sorted and merged (adjacent ranges
//! join), so it can live inline in a stream context without allocating. When a new range
//! would need more slots than there are, the set forgets the smallest range: forgetting
//! that data is present only costs a second fetch, while recording data that is not
//! present would return zeros to an application.

/// A half-open byte range `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Range {
    /// First byte.
    pub start: u64,
    /// One past the last byte.
    pub end: u64,
}

impl Range {
    /// `[start, start + len)`, saturating at `u64::MAX`.
    pub const fn at(start: u64, len: u64) -> Self {
        Self {
            start,
            end: start.saturating_add(len),
        }
    }

    /// Bytes covered.
    pub const fn len(&self) -> u64 {
        self.end.saturating_sub(self.start)
    }

    /// Whether it covers nothing.
    pub const fn is_empty(&self) -> bool {
        self.end <= self.start
    }

    /// The part of `self` inside `other`.
    pub fn clip(&self, other: Range) -> Range {
        Range {
            start: self.start.max(other.start),
            end: self.end.min(other.end),
        }
    }

    /// `self` widened to `align` boundaries (a power of two), the end clipped to `limit`.
    pub fn align_out(&self, align: u64, limit: u64) -> Range {
        let mask = align.saturating_sub(1);
        Range {
            start: self.start & !mask,
            end: self.end.saturating_add(mask) & !mask,
        }
        .clip(Range {
            start: 0,
            end: limit,
        })
    }
}

/// A sorted set of disjoint, non-adjacent ranges with room for `N`.
#[derive(Debug, Clone, Copy)]
pub struct RangeSet<const N: usize> {
    ranges: [Range; N],
    len: usize,
}

impl<const N: usize> Default for RangeSet<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> RangeSet<N> {
    /// The empty set.
    pub const fn new() -> Self {
        Self {
            ranges: [Range { start: 0, end: 0 }; N],
            len: 0,
        }
    }

    /// The ranges, in order.
    pub fn iter(&self) -> impl Iterator<Item = Range> + '_ {
        self.ranges.iter().take(self.len).copied()
    }

    /// How many ranges there are.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is present.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Total bytes present.
    pub fn bytes(&self) -> u64 {
        self.iter().map(|r| r.len()).sum()
    }

    /// Whether all of `range` is present.
    pub fn contains(&self, range: Range) -> bool {
        range.is_empty()
            || self
                .iter()
                .any(|r| r.start <= range.start && range.end <= r.end)
    }

    /// The first part of `range` not present, if any.
    pub fn first_gap(&self, range: Range) -> Option<Range> {
        let mut at = range.start;
        for r in self.iter() {
            if r.end <= at {
                continue;
            }
            if r.start >= range.end {
                break;
            }
            if r.start > at {
                return Some(Range {
                    start: at,
                    end: r.start.min(range.end),
                });
            }
            at = r.end;
            if at >= range.end {
                return None;
            }
        }
        (at < range.end).then_some(Range {
            start: at,
            end: range.end,
        })
    }

    /// Records `range` as present, merging it with the ranges it overlaps or touches.
    /// When a new separate range does not fit, the smallest of the ranges and `range`
    /// is forgotten (it will be fetched again if read; never invented). In place: no
    /// copy of the set on the stack, which matters for the large sets the driver keeps.
    pub fn insert(&mut self, range: Range) {
        if range.is_empty() {
            return;
        }
        // The first range that touches or follows `range`.
        let first = self
            .iter()
            .position(|r| r.end >= range.start)
            .unwrap_or(self.len);
        let mut merged = range;
        let mut last = first;
        while last < self.len {
            let Some(r) = self.ranges.get(last).copied() else {
                break;
            };
            if r.start > merged.end {
                break;
            }
            merged = Range {
                start: merged.start.min(r.start),
                end: merged.end.max(r.end),
            };
            last += 1;
        }
        if last > first {
            if let Some(slot) = self.ranges.get_mut(first) {
                *slot = merged;
            }
            for _ in first + 1..last {
                self.remove_at(first + 1);
            }
            return;
        }
        self.insert_at(first, range);
    }

    /// Records `range` as [`insert`](Self::insert) does, but only if no range has to be
    /// forgotten for it; `false` (the set unchanged) otherwise. For what must never be
    /// forgotten: a user's modified ranges.
    pub fn try_insert(&mut self, range: Range) -> bool {
        let joins = self
            .iter()
            .any(|r| r.end >= range.start && r.start <= range.end);
        if range.is_empty() || joins || self.len < N {
            self.insert(range);
            true
        } else {
            false
        }
    }

    /// Puts `r` (separate from its neighbours) at `at`; when full, the smallest of the
    /// ranges and `r` is forgotten.
    fn insert_at(&mut self, mut at: usize, r: Range) {
        if self.len >= N {
            let smallest = self
                .iter()
                .enumerate()
                .min_by_key(|(_, x)| x.len())
                .map(|(i, x)| (i, x.len()));
            let Some((i, len)) = smallest else { return };
            if r.len() <= len {
                return;
            }
            self.remove_at(i);
            if i < at {
                at -= 1;
            }
        }
        let mut j = self.len;
        while j > at {
            if let Some(prev) = self.ranges.get(j - 1).copied()
                && let Some(slot) = self.ranges.get_mut(j)
            {
                *slot = prev;
            }
            j -= 1;
        }
        if let Some(slot) = self.ranges.get_mut(at) {
            *slot = r;
            self.len += 1;
        }
    }

    /// Removes the range at `at`, shifting the rest left.
    fn remove_at(&mut self, at: usize) {
        if at >= self.len {
            return;
        }
        for j in at..self.len - 1 {
            if let Some(next) = self.ranges.get(j + 1).copied()
                && let Some(slot) = self.ranges.get_mut(j)
            {
                *slot = next;
            }
        }
        self.len -= 1;
    }

    /// Forgets `range` (dehydration): what remains of the ranges around it stays.
    pub fn remove(&mut self, range: Range) {
        if range.is_empty() {
            return;
        }
        let mut i = 0;
        while i < self.len {
            let Some(r) = self.ranges.get(i).copied() else {
                break;
            };
            if r.end <= range.start || r.start >= range.end {
                i += 1;
                continue;
            }
            let left = Range {
                start: r.start,
                end: r.end.min(range.start),
            };
            let right = Range {
                start: r.start.max(range.end),
                end: r.end,
            };
            match (left.is_empty(), right.is_empty()) {
                (true, true) => self.remove_at(i),
                (false, true) => {
                    if let Some(slot) = self.ranges.get_mut(i) {
                        *slot = left;
                    }
                    i += 1;
                }
                (true, false) => {
                    if let Some(slot) = self.ranges.get_mut(i) {
                        *slot = right;
                    }
                    i += 1;
                }
                (false, false) => {
                    if let Some(slot) = self.ranges.get_mut(i) {
                        *slot = left;
                    }
                    // A split needs one more slot; when full, the smaller part may be
                    // forgotten (see `insert_at`).
                    self.insert_at(i + 1, right);
                    i += 2;
                }
            }
        }
    }

    /// Forgets everything at or past `size` (the file shrank).
    pub fn truncate(&mut self, size: u64) {
        self.remove(Range {
            start: size,
            end: u64::MAX,
        });
    }

    /// Makes `self` a copy of `other`, element by element (no temporary of the whole
    /// set on the stack).
    pub fn copy_from(&mut self, other: &Self) {
        for (dst, src) in self.ranges.iter_mut().zip(other.ranges.iter()) {
            *dst = *src;
        }
        self.len = other.len;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    fn set(ranges: &[(u64, u64)]) -> RangeSet<8> {
        let mut s = RangeSet::new();
        for &(a, b) in ranges {
            s.insert(Range { start: a, end: b });
        }
        s
    }

    fn list(s: &RangeSet<8>) -> Vec<(u64, u64)> {
        s.iter().map(|r| (r.start, r.end)).collect()
    }

    #[test]
    fn inserts_merge_overlapping_and_adjacent_ranges() {
        let s = set(&[(0, 10), (20, 30), (10, 20), (50, 60), (55, 70)]);
        assert_eq!(list(&s), [(0, 30), (50, 70)]);
        assert_eq!(s.bytes(), 50);
    }

    #[test]
    fn contains_and_gaps() {
        let s = set(&[(0, 4096), (8192, 12288)]);
        assert!(s.contains(Range::at(100, 100)));
        assert!(!s.contains(Range::at(4000, 200)));
        assert_eq!(
            s.first_gap(Range::at(0, 12288)),
            Some(Range::at(4096, 4096))
        );
        assert_eq!(s.first_gap(Range::at(8192, 4096)), None);
        assert_eq!(
            s.first_gap(Range::at(12288, 10)),
            Some(Range::at(12288, 10))
        );
        assert_eq!(
            RangeSet::<8>::new().first_gap(Range::at(5, 5)),
            Some(Range::at(5, 5))
        );
    }

    #[test]
    fn remove_splits_and_truncate_cuts() {
        let mut s = set(&[(0, 100)]);
        s.remove(Range { start: 10, end: 20 });
        assert_eq!(list(&s), [(0, 10), (20, 100)]);
        s.truncate(50);
        assert_eq!(list(&s), [(0, 10), (20, 50)]);
    }

    #[test]
    fn a_full_set_forgets_the_smallest_range_never_invents_one() {
        let mut s = RangeSet::<2>::new();
        s.insert(Range { start: 0, end: 10 });
        s.insert(Range {
            start: 100,
            end: 101,
        });
        s.insert(Range {
            start: 200,
            end: 250,
        });
        let kept: Vec<_> = s.iter().map(|r| (r.start, r.end)).collect();
        assert_eq!(kept, [(0, 10), (200, 250)]);
        // Everything reported present was inserted.
        assert!(!s.contains(Range::at(100, 1)));
    }

    #[test]
    fn align_out_rounds_to_pages_and_clips_to_the_file() {
        let r = Range::at(5000, 10).align_out(4096, 6000);
        assert_eq!(
            r,
            Range {
                start: 4096,
                end: 6000
            }
        );
        let r = Range::at(0, 1).align_out(4096, 1 << 20);
        assert_eq!(
            r,
            Range {
                start: 0,
                end: 4096
            }
        );
    }

    #[test]
    fn random_operations_match_a_byte_map() {
        // A deterministic pseudo-random walk against a plain bitmap.
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut s = RangeSet::<256>::new();
        let mut bytes = [false; 512];
        for _ in 0..2000 {
            let a = next() % 512;
            let b = (a + next() % 64).min(512);
            if next() % 3 == 0 {
                s.remove(Range { start: a, end: b });
                bytes[a as usize..b as usize]
                    .iter_mut()
                    .for_each(|x| *x = false);
            } else {
                s.insert(Range { start: a, end: b });
                bytes[a as usize..b as usize]
                    .iter_mut()
                    .for_each(|x| *x = true);
            }
            for i in 0..512u64 {
                assert_eq!(s.contains(Range::at(i, 1)), bytes[i as usize], "byte {i}");
            }
            let v: Vec<_> = s.iter().collect();
            assert!(v.windows(2).all(|w| w[0].end < w[1].start), "{v:?}");
        }
    }
}
