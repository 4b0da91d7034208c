//! A placeholder stream's lifecycle as states: what the stream is ([`Kind`]) and what its
//! data is waiting for ([`Activity`]). Each transition consumes the state it leaves and
//! returns the next, so a state that no longer holds cannot be kept by mistake; none
//! allocates.
//!
//! The `nt` layer keeps one of each per stream, under the fetch table's lock, and is the
//! only place that holds the writer (`W`, the driver's own handle on the file).

use core::num::NonZeroU32;

/// What a stream carrying cloudflt's tag is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    /// A placeholder whose reparse data decoded.
    Placeholder,
    /// The tag is cloudflt's but its data does not decode: reads fail with
    /// STATUS_CLOUD_FILE_METADATA_CORRUPT, never return what is on disk.
    Corrupt,
    /// No longer a placeholder (reverted): its data is all on disk, nothing to do.
    Reverted,
}

/// What a placeholder's data is waiting for.
#[derive(Debug, PartialEq, Eq)]
pub enum Activity<W> {
    /// Nothing: no fetch or transfer is out, no dehydration under way.
    Idle,
    /// `users` fetches and transfers are out; they share the stream's `writer` once one
    /// of them opened it.
    AwaitingTransfers {
        users: NonZeroU32,
        writer: Option<W>,
    },
    /// A dehydration is zeroing data: nothing is fetched until it ends (a fetch would write
    /// data the zeroing then drops).
    AwaitingZeroing,
}

/// Why a transition was refused.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Refused {
    /// A dehydration is zeroing the stream's data.
    Zeroing,
    /// Fetches or transfers are out.
    Transfers,
}

impl<W> Activity<W> {
    /// One more fetch or transfer: refused while a dehydration is zeroing.
    pub fn join(self) -> Result<Self, (Self, Refused)> {
        match self {
            Self::Idle => Ok(Self::AwaitingTransfers {
                users: NonZeroU32::MIN,
                writer: None,
            }),
            Self::AwaitingTransfers { users, writer } => Ok(Self::AwaitingTransfers {
                users: users.saturating_add(1),
                writer,
            }),
            Self::AwaitingZeroing => Err((Self::AwaitingZeroing, Refused::Zeroing)),
        }
    }

    /// A fetch or transfer is over; the last one takes the writer with it (to be closed
    /// outside the lock).
    pub fn leave(self) -> (Self, Option<W>) {
        match self {
            Self::AwaitingTransfers { users, writer } => match NonZeroU32::new(users.get() - 1) {
                Some(users) => (Self::AwaitingTransfers { users, writer }, None),
                None => (Self::Idle, writer),
            },
            other => (other, None),
        }
    }

    /// The writer a fetch opened: kept if the fetches still have none; otherwise given
    /// back to be closed (another opened one first, or they are all over).
    pub fn install(self, writer: W) -> (Self, Option<W>) {
        match self {
            Self::AwaitingTransfers {
                users,
                writer: None,
            } => (
                Self::AwaitingTransfers {
                    users,
                    writer: Some(writer),
                },
                None,
            ),
            other => (other, Some(writer)),
        }
    }

    /// A dehydration starts zeroing: only when nothing is out.
    pub fn begin_zeroing(self) -> Result<Self, (Self, Refused)> {
        match self {
            Self::Idle => Ok(Self::AwaitingZeroing),
            Self::AwaitingZeroing => Err((Self::AwaitingZeroing, Refused::Zeroing)),
            busy @ Self::AwaitingTransfers { .. } => Err((busy, Refused::Transfers)),
        }
    }

    /// The dehydration's zeroing is done.
    pub fn end_zeroing(self) -> Self {
        match self {
            Self::AwaitingZeroing => Self::Idle,
            other => other,
        }
    }

    /// The writer the fetches share, if one is open.
    pub fn writer(&self) -> Option<&W> {
        match self {
            Self::AwaitingTransfers { writer, .. } => writer.as_ref(),
            _ => None,
        }
    }

    /// Whether a dehydration is zeroing.
    pub fn is_zeroing(&self) -> bool {
        matches!(self, Self::AwaitingZeroing)
    }

    /// Whether fetches or transfers are out.
    pub fn is_transferring(&self) -> bool {
        matches!(self, Self::AwaitingTransfers { .. })
    }
}

/// Runs the transition `f` on the state in `slot`, leaving the next state there and
/// returning what the transition hands back.
pub fn step<T, R>(slot: &mut T, idle: T, f: impl FnOnce(T) -> (T, R)) -> R {
    let (next, r) = f(core::mem::replace(slot, idle));
    *slot = next;
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users(n: u32, writer: Option<u8>) -> Activity<u8> {
        Activity::AwaitingTransfers {
            users: NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN),
            writer,
        }
    }

    #[test]
    fn the_last_user_takes_the_writer() {
        assert_eq!(Activity::<u8>::Idle.join(), Ok(users(1, None)));
        assert_eq!(users(1, None).join(), Ok(users(2, None)));
        assert_eq!(users(2, None).install(7), (users(2, Some(7)), None));
        assert_eq!(
            users(2, Some(7)).install(9),
            (users(2, Some(7)), Some(9)),
            "a second writer is given back"
        );
        assert_eq!(users(2, Some(7)).writer(), Some(&7));
        assert_eq!(users(2, Some(7)).leave(), (users(1, Some(7)), None));
        assert_eq!(users(1, Some(7)).leave(), (Activity::Idle, Some(7)));
    }

    #[test]
    fn zeroing_excludes_transfers_both_ways() {
        assert_eq!(
            users(1, None).begin_zeroing(),
            Err((users(1, None), Refused::Transfers))
        );
        assert_eq!(
            Activity::<u8>::Idle.begin_zeroing(),
            Ok(Activity::AwaitingZeroing)
        );
        assert_eq!(
            Activity::<u8>::AwaitingZeroing.join(),
            Err((Activity::AwaitingZeroing, Refused::Zeroing))
        );
        assert_eq!(
            Activity::<u8>::AwaitingZeroing.begin_zeroing(),
            Err((Activity::AwaitingZeroing, Refused::Zeroing))
        );
        assert!(Activity::<u8>::AwaitingZeroing.is_zeroing());
        assert_eq!(
            Activity::<u8>::AwaitingZeroing.end_zeroing(),
            Activity::Idle
        );
        assert_eq!(users(1, None).end_zeroing(), users(1, None));
    }

    #[test]
    fn a_writer_with_no_users_is_given_back() {
        assert_eq!(Activity::<u8>::Idle.install(3), (Activity::Idle, Some(3)));
        assert_eq!(
            Activity::<u8>::AwaitingZeroing.install(3),
            (Activity::AwaitingZeroing, Some(3))
        );
    }

    #[test]
    fn step_leaves_the_next_state() {
        let mut slot: Activity<u8> = Activity::Idle;
        let joined = step(&mut slot, Activity::Idle, |a| match a.join() {
            Ok(next) => (next, true),
            Err((same, _)) => (same, false),
        });
        assert!(joined);
        assert!(slot.is_transferring());
    }
}
