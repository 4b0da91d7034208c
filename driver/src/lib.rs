//! `cloudflt.sys`, the cloudflt placeholder minifilter.
//!
//! Three layers (see DESIGN.md):
//! - [`engine`]: pure decisions and state, no FFI and no `unsafe`; unit-tested on the host.
//! - [`nt`]: the Filter Manager glue. Every `unsafe` block of the driver lives here.
//! - `rt`: what only the built image needs (the `DriverEntry` export, allocator, panic
//!   handler, CRT symbols). It is compiled for Windows targets only; on other hosts the
//!   kernel model in `tests/` calls [`nt::driver_entry`] directly.
#![no_std]
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]
// Tests may index (a wrong index fails the test), but never unwrap: a failed
// expectation should say what was expected, which assert_eq! on the Result does.
#![cfg_attr(test, allow(clippy::indexing_slicing))]

#[cfg(test)]
extern crate std;
// The kernel model supplies the kernel symbols `nt` imports, so unit tests link.
#[cfg(test)]
extern crate cloudflt_tests as _;

/// Debug output for a kernel debugger: `DbgPrint` through `wdk::println!` in the WDK
/// build; compiled out elsewhere (the rust-lld build imports nothing it does not need).
macro_rules! debug_print {
    ($($arg:tt)*) => {
        #[cfg(all(feature = "wdk", target_os = "windows"))]
        {
            wdk::println!($($arg)*);
        }
    };
}

pub mod engine;
pub mod nt;

#[cfg(target_os = "windows")]
mod rt;
