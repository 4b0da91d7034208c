//! Fetch requests outstanding with providers.
//!
//! One request per missing range, however many readers wait for it: a reader whose
//! range an in-flight request already covers waits for that request instead of asking
//! again. Each request has a deadline (the sync root's timeout); as in cfapi, any valid
//! message from the provider restarts the clocks of all its requests.

use super::ranges::Range;

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
    /// Bytes of `range` received so far.
    pub received: u64,
}

/// The table is full: the read fails with insufficient resources rather than waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

/// Up to `N` outstanding requests.
#[derive(Debug)]
pub struct Requests<const N: usize> {
    slots: [Option<Request>; N],
    next_id: u64,
}

impl<const N: usize> Default for Requests<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> Requests<N> {
    /// An empty table.
    pub const fn new() -> Self {
        Self {
            slots: [None; N],
            next_id: 1,
        }
    }

    /// The outstanding requests.
    pub fn iter(&self) -> impl Iterator<Item = &Request> {
        self.live()
    }

    fn live(&self) -> impl Iterator<Item = &Request> {
        self.slots.iter().flatten()
    }

    /// How many requests are outstanding.
    pub fn len(&self) -> usize {
        self.live().count()
    }

    /// Whether none are.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// An in-flight request of `stream` that will deliver `range` (wholly inside it).
    pub fn covering(&self, stream: usize, range: Range) -> Option<u64> {
        self.live()
            .find(|r| {
                r.stream == stream && r.range.start <= range.start && range.end <= r.range.end
            })
            .map(|r| r.id)
    }

    /// Records a new request and returns its id.
    pub fn start(
        &mut self,
        stream: usize,
        range: Range,
        owner: usize,
        deadline: i64,
    ) -> Result<u64, Full> {
        let slot = self.slots.iter_mut().find(|s| s.is_none()).ok_or(Full)?;
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        *slot = Some(Request {
            id,
            stream,
            range,
            owner,
            deadline,
            received: 0,
        });
        Ok(id)
    }

    /// The request with this id.
    pub fn get(&self, id: u64) -> Option<&Request> {
        self.live().find(|r| r.id == id)
    }

    /// Notes `bytes` more received for request `id`; true once all of its range arrived.
    pub fn received(&mut self, id: u64, bytes: u64) -> bool {
        match self.slots.iter_mut().flatten().find(|r| r.id == id) {
            Some(r) => {
                r.received = r.received.saturating_add(bytes);
                r.received >= r.range.len()
            }
            None => false,
        }
    }

    /// Removes and returns request `id`.
    pub fn finish(&mut self, id: u64) -> Option<Request> {
        let slot = self
            .slots
            .iter_mut()
            .find(|s| s.is_some_and(|r| r.id == id))?;
        slot.take()
    }

    /// Restarts the clock of every request of `owner` (a valid provider message arrived).
    pub fn touch(&mut self, owner: usize, deadline: i64) {
        for r in self.slots.iter_mut().flatten() {
            if r.owner == owner {
                r.deadline = deadline;
            }
        }
    }

    /// The first request past its deadline at `now`.
    pub fn expired(&self, now: i64) -> Option<u64> {
        self.live().find(|r| r.deadline <= now).map(|r| r.id)
    }

    /// The first request sent on `owner` (to fail them all when it disconnects).
    pub fn of_owner(&self, owner: usize) -> Option<u64> {
        self.live().find(|r| r.owner == owner).map(|r| r.id)
    }

    /// The first request of `stream` (to cancel them when its last handle closes).
    pub fn of_stream(&self, stream: usize) -> Option<u64> {
        self.live().find(|r| r.stream == stream).map(|r| r.id)
    }

    /// The first part of `gap` that no in-flight request of `stream` will deliver, so a
    /// reader asks only for what nobody has asked for yet.
    pub fn unrequested(&self, stream: usize, gap: Range) -> Option<Range> {
        let mut start = gap.start;
        loop {
            if start >= gap.end {
                return None;
            }
            let covering = self
                .live()
                .find(|r| r.stream == stream && r.range.start <= start && start < r.range.end);
            match covering {
                Some(r) => start = r.range.end,
                None => {
                    let end = self
                        .live()
                        .filter(|r| r.stream == stream && r.range.start > start)
                        .map(|r| r.range.start)
                        .fold(gap.end, u64::min);
                    return Some(Range { start, end });
                }
            }
        }
    }

    /// The first request of `stream` whose range `done` says has fully arrived.
    pub fn first_done(&self, stream: usize, done: impl Fn(Range) -> bool) -> Option<u64> {
        self.live()
            .find(|r| r.stream == stream && done(r.range))
            .map(|r| r.id)
    }

    /// The earliest deadline, if any request is outstanding.
    pub fn next_deadline(&self) -> Option<i64> {
        self.live().map(|r| r.deadline).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_of_a_covered_range_join_the_request_in_flight() {
        let mut t = Requests::<4>::new();
        let started = t.start(7, Range::at(0, 8192), 1, 100);
        assert!(started.is_ok());
        let id = started.unwrap_or_default();
        assert_eq!(t.covering(7, Range::at(4096, 4096)), Some(id));
        assert_eq!(t.covering(7, Range::at(4096, 8192)), None);
        assert_eq!(t.covering(8, Range::at(0, 10)), None);
        assert!(!t.received(id, 4096));
        assert!(t.received(id, 4096));
        assert_eq!(t.finish(id).map(|r| r.range), Some(Range::at(0, 8192)));
        assert!(t.is_empty());
    }

    #[test]
    fn ids_are_unique_and_the_table_is_bounded() {
        let mut t = Requests::<2>::new();
        let a = t.start(1, Range::at(0, 1), 1, 10);
        let b = t.start(1, Range::at(1, 1), 1, 10);
        assert!(a.is_ok() && b.is_ok() && a != b, "{a:?} {b:?}");
        assert_eq!(t.start(1, Range::at(2, 1), 1, 10), Err(Full));
        assert!(t.finish(a.unwrap_or_default()).is_some());
        let c = t.start(1, Range::at(2, 1), 1, 10);
        assert!(c.is_ok() && c != a && c != b, "{c:?}");
    }

    #[test]
    fn only_what_nobody_asked_for_is_requested() {
        let mut t = Requests::<4>::new();
        assert!(t.start(1, Range::at(4096, 4096), 1, 10).is_ok());
        assert!(t.start(1, Range::at(12288, 4096), 1, 10).is_ok());
        assert!(t.start(2, Range::at(0, 65536), 1, 10).is_ok());
        let gap = Range::at(0, 20480);
        assert_eq!(t.unrequested(1, gap), Some(Range::at(0, 4096)));
        assert_eq!(
            t.unrequested(1, Range::at(4096, 16384)),
            Some(Range::at(8192, 4096))
        );
        assert_eq!(
            t.unrequested(1, Range::at(12288, 8192)),
            Some(Range::at(16384, 4096))
        );
        assert_eq!(t.unrequested(1, Range::at(4096, 4096)), None);
        assert_eq!(t.unrequested(2, gap), None);
        assert_eq!(
            t.first_done(1, |r| r.start >= 12288),
            t.of_stream(1).map(|id| id + 1)
        );
        assert_eq!(t.first_done(3, |_| true), None);
    }

    #[test]
    fn deadlines_expire_and_provider_activity_restarts_them() {
        let mut t = Requests::<4>::new();
        let (a, b) = (
            t.start(1, Range::at(0, 1), 5, 100),
            t.start(2, Range::at(0, 1), 6, 200),
        );
        assert!(a.is_ok() && b.is_ok(), "{a:?} {b:?}");
        let (a, b) = (a.unwrap_or_default(), b.unwrap_or_default());
        assert_eq!(t.expired(99), None);
        assert_eq!(t.expired(100), Some(a));
        t.touch(5, 300);
        assert_eq!(t.expired(250), Some(b));
        assert_eq!(t.next_deadline(), Some(200));
        assert_eq!(t.of_owner(5), Some(a));
        assert_eq!(t.of_stream(2), Some(b));
    }
}
