//! The Filter Manager glue: turns FltMgr callbacks into engine calls and engine answers
//! back into statuses. All of the driver's `unsafe` lives in this layer.
//!
//! One module per kernel object: [`filter`] owns the filter registration and the
//! driver's lifetime (DriverEntry, unload, teardown), `instance` the volume attachment,
//! `port` the communication port, `context` the FltMgr contexts, `ops` the I/O
//! callbacks, `pool` tagged non-paged allocations. [`status`] is the one table from
//! engine and proto errors to NTSTATUS. [`layout`] defines the parameter block FltMgr
//! passes every callback (windows-sys lays it out wrong); the kernel model builds it
//! from the same definitions.

pub mod filter;
pub mod layout;
pub mod status;

mod context;
mod disguise;
mod file;
mod hydrate;
mod instance;
mod list;
mod ntos;
mod ops;
mod placeholder;
mod pool;
mod port;
mod providers;
mod queue;
mod registration;
mod rules;
mod sync;
mod timer;

pub use filter::driver_entry;
pub use pool::{POOL_ALIGNMENT, POOL_FLAG_NON_PAGED, tag};
