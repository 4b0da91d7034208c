//! What a read of a placeholder needs present before it may complete, per hydration
//! policy.
//!
//! The effective policy of an open is the stricter of the application's and the
//! provider's (cfapi's rule), fixed when the file is opened.

use super::ranges::Range;

/// Transfers and partial hydration work in 4 KiB units (cfapi's alignment rule).
pub const UNIT: u64 = 4096;

/// Hydration policy, in increasing strictness.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Policy {
    /// Only the 4 KiB-aligned ranges read.
    Partial,
    /// The read completes when its range is present; the rest keeps coming.
    Progressive,
    /// The whole file before the read completes.
    Full,
    /// As Full, and the file may never be left partly hydrated.
    AlwaysFull,
}

impl Policy {
    /// The policy byte of the connection context.
    pub fn from_wire(value: u8) -> Option<Self> {
        match value {
            0 => Some(Self::Partial),
            1 => Some(Self::Progressive),
            2 => Some(Self::Full),
            3 => Some(Self::AlwaysFull),
            _ => None,
        }
    }
}

/// The effective policy: the stricter of the two.
pub fn effective(application: Policy, provider: Policy) -> Policy {
    application.max(provider)
}

/// What a read needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Must be present before the read completes.
    pub required: Range,
    /// Fetched after the read completes, while the file stays open.
    pub background: Option<Range>,
}

/// The plan for reading `read` from a file of `size` bytes under `policy`; `None` if the
/// read is entirely past the end of the file (the file system answers it).
pub fn plan(policy: Policy, read: Range, size: u64) -> Option<Plan> {
    let whole = Range {
        start: 0,
        end: size,
    };
    let wanted = read.clip(whole);
    if wanted.is_empty() {
        return None;
    }
    let aligned = wanted.align_out(UNIT, size);
    Some(match policy {
        Policy::Partial => Plan {
            required: aligned,
            background: None,
        },
        Policy::Progressive => Plan {
            required: aligned,
            background: Some(whole),
        },
        Policy::Full | Policy::AlwaysFull => Plan {
            required: whole,
            background: None,
        },
    })
}

/// Whether a provider's transfer obeys cfapi's rule: offset 4 KiB aligned, length 4 KiB
/// aligned unless the transfer ends exactly at end of file; non-empty; within the file.
pub fn transfer_is_valid(offset: u64, length: u64, size: u64) -> bool {
    let Some(end) = offset.checked_add(length) else {
        return false;
    };
    length > 0
        && offset.is_multiple_of(UNIT)
        && end
            <= size
                .checked_next_multiple_of(UNIT)
                .unwrap_or(u64::MAX)
                .max(size)
        && (length.is_multiple_of(UNIT) || end == size)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stricter_policy_wins() {
        assert_eq!(effective(Policy::Partial, Policy::Full), Policy::Full);
        assert_eq!(
            effective(Policy::AlwaysFull, Policy::Progressive),
            Policy::AlwaysFull
        );
        assert_eq!(Policy::from_wire(1), Some(Policy::Progressive));
        assert_eq!(Policy::from_wire(4), None);
    }

    #[test]
    fn plans_per_policy() {
        let size = 1 << 20;
        let read = Range::at(5000, 100);
        let page = Range::at(4096, 4096);
        let whole = Range::at(0, size);
        assert_eq!(
            plan(Policy::Partial, read, size),
            Some(Plan {
                required: page,
                background: None
            })
        );
        assert_eq!(
            plan(Policy::Progressive, read, size),
            Some(Plan {
                required: page,
                background: Some(whole)
            })
        );
        assert_eq!(
            plan(Policy::Full, read, size),
            Some(Plan {
                required: whole,
                background: None
            })
        );
        assert_eq!(plan(Policy::Full, Range::at(size, 10), size), None);
        // A read crossing end of file needs only what exists.
        assert_eq!(
            plan(Policy::Partial, Range::at(size - 10, 100), size).map(|p| p.required),
            Some(Range::at(size - 4096, 4096))
        );
    }

    #[test]
    fn transfers_follow_the_alignment_rule() {
        let size = 10_000;
        assert!(transfer_is_valid(0, 4096, size));
        assert!(transfer_is_valid(8192, 1808, size)); // the tail, ends at EOF
        assert!(!transfer_is_valid(8192, 1000, size)); // short, not at EOF
        assert!(!transfer_is_valid(100, 4096, size)); // unaligned offset
        assert!(!transfer_is_valid(0, 0, size));
        assert!(!transfer_is_valid(12288, 4096, size)); // past the end
        assert!(!transfer_is_valid(u64::MAX - 10, 4096, size));
    }
}
