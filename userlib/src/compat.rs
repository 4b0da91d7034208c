//! Placeholder compatibility modes: how a process or one of its threads asks to see
//! cloudflt's placeholders as what they are (exposed: the reparse point, its tag and
//! attribute reported) or as ordinary files (disguised).
//!
//! These are Windows' own modes, the ones `RtlSetProcessPlaceholderCompatibilityMode` and
//! `RtlSetThreadPlaceholderCompatibilityMode` in ntdll set; this module calls exactly
//! those functions and nothing else. The driver reads the documented modes of the
//! process and thread that open a file (`RtlQuery*PlaceholderCompatibilityMode`, in the
//! requestor's context), so a program that calls the ntdll functions itself, in any
//! language, is honoured the same as one that uses this module.
//!
//! # Precedence
//!
//! For each open of a file in a sync root, the driver decides once:
//!
//! 1. The sync root's connected provider always sees its placeholders exposed.
//! 2. The thread's mode, when the thread set one other than
//!    [`PlaceholderCompatibility::ApplicationDefault`], wins over the process's mode; a
//!    thread left at (or put back to) `ApplicationDefault` follows its process.
//!    [`PlaceholderCompatibility::Expose`] exposes; [`PlaceholderCompatibility::Disguise`]
//!    and [`PlaceholderCompatibility::DisguiseFull`] disguise, even for Windows' own
//!    images. A program that states what it handles beats every default.
//! 3. Otherwise an administrator's image rule decides, if one matches the program (see
//!    [`crate::admin`]).
//! 4. Otherwise images under `%SystemRoot%` and the System process see placeholders
//!    exposed, and every other program sees them disguised.
//!
//! The decision is made when the file is opened and holds for that handle: changing a
//! mode affects the opens that follow, not handles already open.
//!
//! ```no_run
//! use cloudflt::compat::{self, PlaceholderCompatibility, ThreadModeGuard};
//!
//! // The whole program understands placeholders.
//! compat::set_process_mode(PlaceholderCompatibility::Expose)?;
//! {
//!     // ...except this thread, for a while: it hands paths to a library that takes
//!     // every reparse point for a symbolic link.
//!     let _disguised = ThreadModeGuard::set(PlaceholderCompatibility::Disguise)?;
//!     assert_eq!(compat::thread_mode()?, PlaceholderCompatibility::Disguise);
//! }
//! assert_eq!(compat::thread_mode()?, PlaceholderCompatibility::ApplicationDefault);
//! # Ok::<(), cloudflt::Error>(())
//! ```

use std::marker::PhantomData;

use crate::{Error, sys};

/// A placeholder compatibility mode, one of the SDK's `PHCM_*` values.
///
/// Invalid values cannot be expressed, so setting a mode can only fail for a reason
/// outside the caller's control (a thread without a TEB).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PlaceholderCompatibility {
    /// `PHCM_APPLICATION_DEFAULT` (0): no preference; the defaults and the
    /// administrator's rules decide (for a thread: the process's mode decides).
    ApplicationDefault,
    /// `PHCM_DISGUISE_PLACEHOLDER` (1): placeholders look like ordinary files.
    Disguise,
    /// `PHCM_EXPOSE_PLACEHOLDERS` (2): placeholders are reported as reparse points with
    /// cloudflt's tag.
    Expose,
    /// `PHCM_DISGUISE_FULL_PLACEHOLDERS` (3, newer SDKs). cloudflt treats it as
    /// [`Disguise`](Self::Disguise): whichever way the name is read, the program asked
    /// not to be shown reparse points.
    DisguiseFull,
}

impl PlaceholderCompatibility {
    /// The raw `PHCM_*` value.
    ///
    /// ```
    /// use cloudflt::compat::PlaceholderCompatibility;
    /// assert_eq!(PlaceholderCompatibility::Expose.raw(), 2);
    /// ```
    pub const fn raw(self) -> i8 {
        match self {
            Self::ApplicationDefault => 0,
            Self::Disguise => 1,
            Self::Expose => 2,
            Self::DisguiseFull => 3,
        }
    }

    /// The mode a raw `PHCM_*` value names; `None` for the negative `PHCM_ERROR_*`
    /// values and anything no SDK defines.
    ///
    /// ```
    /// use cloudflt::compat::PlaceholderCompatibility;
    /// assert_eq!(PlaceholderCompatibility::from_raw(1), Some(PlaceholderCompatibility::Disguise));
    /// assert_eq!(PlaceholderCompatibility::from_raw(-2), None); // PHCM_ERROR_NO_TEB
    /// ```
    pub const fn from_raw(raw: i8) -> Option<Self> {
        match raw {
            0 => Some(Self::ApplicationDefault),
            1 => Some(Self::Disguise),
            2 => Some(Self::Expose),
            3 => Some(Self::DisguiseFull),
            _ => None,
        }
    }
}

/// The mode a raw answer of `function` names, or the [`Error::CompatMode`] it is.
fn answer(function: &'static str, raw: i8) -> Result<PlaceholderCompatibility, Error> {
    PlaceholderCompatibility::from_raw(raw).ok_or(Error::CompatMode {
        function,
        code: raw,
    })
}

/// The calling process's mode (RtlQueryProcessPlaceholderCompatibilityMode).
pub fn process_mode() -> Result<PlaceholderCompatibility, Error> {
    answer(
        "RtlQueryProcessPlaceholderCompatibilityMode",
        sys::query_process_compat(),
    )
}

/// The calling thread's own mode (RtlQueryThreadPlaceholderCompatibilityMode).
/// [`PlaceholderCompatibility::ApplicationDefault`] means the thread follows its
/// process; this does not report the mode in force (see [`process_mode`]).
pub fn thread_mode() -> Result<PlaceholderCompatibility, Error> {
    answer(
        "RtlQueryThreadPlaceholderCompatibilityMode",
        sys::query_thread_compat(),
    )
}

/// Sets the calling process's mode, for every thread of it that has not set its own
/// (RtlSetProcessPlaceholderCompatibilityMode); the previous process mode.
pub fn set_process_mode(mode: PlaceholderCompatibility) -> Result<PlaceholderCompatibility, Error> {
    answer(
        "RtlSetProcessPlaceholderCompatibilityMode",
        sys::set_process_compat(mode.raw()),
    )
}

/// Sets the calling thread's mode, which wins over the process's unless it is
/// [`PlaceholderCompatibility::ApplicationDefault`]
/// (RtlSetThreadPlaceholderCompatibilityMode); the thread's previous mode. To set a mode
/// for a scope, use [`ThreadModeGuard`].
pub fn set_thread_mode(mode: PlaceholderCompatibility) -> Result<PlaceholderCompatibility, Error> {
    answer(
        "RtlSetThreadPlaceholderCompatibilityMode",
        sys::set_thread_compat(mode.raw()),
    )
}

/// The calling thread's mode, set for as long as the guard lives: dropping it puts back
/// the mode the thread had before.
///
/// The guard concerns the thread that created it, so it cannot be sent to another one.
/// Guards nest when dropped in the reverse order of their creation, as scopes drop them.
#[derive(Debug)]
#[must_use = "dropping the guard restores the previous mode at once"]
pub struct ThreadModeGuard {
    previous: PlaceholderCompatibility,
    /// The mode belongs to this thread: `!Send` and `!Sync`.
    _thread: PhantomData<*const ()>,
}

impl ThreadModeGuard {
    /// Sets the calling thread's mode to `mode` until the guard is dropped.
    pub fn set(mode: PlaceholderCompatibility) -> Result<Self, Error> {
        Ok(Self {
            previous: set_thread_mode(mode)?,
            _thread: PhantomData,
        })
    }

    /// The mode the thread had before, which the guard restores.
    pub fn previous(&self) -> PlaceholderCompatibility {
        self.previous
    }
}

impl Drop for ThreadModeGuard {
    fn drop(&mut self) {
        // Setting the mode succeeded on this thread once, with a valid value, so it
        // succeeds again: the thread still has its TEB.
        let _ = sys::set_thread_compat(self.previous.raw());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_values_are_the_sdk_ones_and_round_trip() {
        for raw in i8::MIN..=i8::MAX {
            match PlaceholderCompatibility::from_raw(raw) {
                Some(mode) => assert_eq!(mode.raw(), raw),
                None => assert!(!(0..=3).contains(&raw), "{raw}"),
            }
        }
    }

    #[test]
    fn error_answers_become_typed_errors() {
        for code in [-1, -2, -3, 4] {
            let error = answer("f", code).unwrap_err();
            assert!(
                matches!(error, Error::CompatMode { function: "f", code: c } if c == code),
                "{error}"
            );
        }
        let text = answer("RtlQueryThreadPlaceholderCompatibilityMode", -2)
            .unwrap_err()
            .to_string();
        assert!(text.contains("PHCM_ERROR_NO_TEB"), "{text}");
    }
}
