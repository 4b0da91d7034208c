//! The kernel model that cloudflt's real driver code runs against on any host.
//!
//! On non-Windows targets windows-sys declares each kernel API as a plain
//! `extern "system"` function; this crate defines those symbols, so the driver crate,
//! built for the host, links here and runs unchanged. The model behaves like Windows with
//! Driver Verifier on: API misuse is recorded as a [`Violation`](model::Violation) with a
//! message naming the rule, and a [`Machine`](model::Machine) fails the test that caused it.
//!
//! What it models so far: non-paged pool by tag, IRQL per thread, filter registration,
//! volumes and InstanceSetup, instance contexts with reference counts, the communication
//! port with both its kernel and user sides, and unload with leak reports.

pub mod bench;
pub mod model;
pub mod ntstatus;
pub mod probe;
pub mod rig;
pub mod scenario;
