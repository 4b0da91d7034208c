//! Every byte format that crosses between `cloudflt.sys` and user mode.
//!
//! Kernel and user mode both build this crate, so a format is defined exactly once. All
//! integers are little-endian with explicit sizes; every header carries a version. Decoders
//! take `&[u8]`, check each length before reading, never panic and never allocate: input
//! from user mode (and, later, reparse data read back from disk) is untrusted.
#![no_std]
#![deny(missing_docs)]
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::indexing_slicing))]
#![forbid(unsafe_code)]

pub mod connect;
pub mod port;
pub mod reparse;
mod wire;

pub use connect::{ConnectError, ConnectionContext};

/// The protocol version this build of the driver and library speaks.
///
/// Bumped whenever a message layout changes in a way an older peer cannot read.
pub const PROTOCOL_VERSION: u16 = 1;
