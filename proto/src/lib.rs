//! Every byte format that crosses between `cloudflt.sys` and user mode.
//!
//! Kernel and user mode both build this crate, so a format is defined exactly once. All
//! integers are little-endian with explicit sizes; every header carries a version. Decoders
//! take `&[u8]`, check each length before reading, never panic and never allocate: they
//! return views borrowing the input. Input from user mode and reparse data read back from
//! disk are untrusted. Encoders write into the caller's buffer, say how long their output
//! is beforehand (`encoded_len`), and refuse any value their decoder would refuse.
//!
//! - [`connect`]: the context a provider connects with;
//! - [`msg`]: port messages in both directions and the driver's replies;
//! - [`rules`]: the administrator's image rules as management messages carry them;
//! - [`placeholder`]: the reparse data that makes a file a placeholder;
//! - [`registration`]: a sync root's registration, as requested and as kept;
//! - [`reparse`], [`port`]: constants both sides share.
#![no_std]
#![deny(missing_docs)]
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
// Tests may index (a wrong index fails the test), but never unwrap: a failed
// expectation should say what was expected, which assert_eq! on the Result does.
#![cfg_attr(test, allow(clippy::indexing_slicing))]
#![forbid(unsafe_code)]

#[macro_use]
mod bits;
pub mod connect;
pub mod crc32;
pub mod error;
#[cfg(any(test, feature = "fuzzing"))]
#[doc(hidden)]
pub mod fuzz;
pub mod msg;
pub mod placeholder;
pub mod port;
pub mod registration;
pub mod reparse;
pub mod rules;
pub mod utf16;
mod wire;

pub use connect::{
    ConnectError, ConnectionContext, HydrationPolicy, InSyncPolicy, PopulationPolicy, PortContext,
};
pub use error::{DecodeError, EncodeError, Field};
pub use placeholder::{ByteRange, Placeholder, PlaceholderFlags, RangeList};
pub use utf16::Utf16;

/// The protocol version this build of the driver and library speaks.
///
/// Bumped whenever a message layout changes in a way an older peer cannot read.
pub const PROTOCOL_VERSION: u16 = 1;
