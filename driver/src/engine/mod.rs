//! Pure decisions and state of the driver: no FFI, no `unsafe`, no clock of its own.
//!
//! Each module takes facts the `nt` layer gathered and returns a decision the `nt` layer
//! carries out, so every rule here is tested on the host without a kernel.
#![forbid(unsafe_code)]

/// Fuzz target bodies and the rewrite oracle (tests and the `fuzzing` feature only).
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzz;
pub mod policy;
pub mod ranges;
pub mod requests;
pub mod rewrite;
pub mod stream;
pub mod syncroot;
pub mod tagguard;
pub mod visibility;
pub mod volume;
pub mod write;
