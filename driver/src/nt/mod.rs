//! The Filter Manager glue: turns FltMgr callbacks into engine calls and engine answers
//! back into statuses. All of the driver's `unsafe` lives in this layer.
//!
//! Layers, each importing only from the ones below it (no cycle):
//! - [`filter`]: DriverEntry, FLT_REGISTRATION, unload and the one teardown;
//! - `registration`: the operation table (one row per `ops` module) and context table;
//! - `ops/{create,read,section,cleanup,fs_control,dir_control,query}`: one module per
//!   operation, thin callbacks; `instance`: volume attachment and teardown; `port`: the
//!   communication port and the provider's messages;
//! - `placeholder`: the providers' management requests;
//! - `stream`: a placeholder's stream and stream-handle contexts; `hydrate`: fetches,
//!   waiters, pended reads, transfers and the record; `disguise`: who sees what;
//! - `providers`, `rules`, `reparse`, `names`, `file`, `queue`, `list`, `timer`,
//!   `context`, `driver` (the driver state), `pool`, `sync`, `ntos`, `status`, `layout`,
//!   `user` (every touch of a provider's buffer: guarded copies, pages locked in an MDL,
//!   the secured reply), `seh` (the exception guard those go through).
//!
//! [`status`] is the one table from engine and proto errors to NTSTATUS. [`layout`]
//! defines the parameter block FltMgr passes every callback (windows-sys lays it out
//! wrong); the kernel model builds it from the same definitions.

pub mod filter;
pub mod layout;
pub mod status;

mod buffer;
mod context;
mod direct;
mod disguise;
mod driver;
mod file;
mod hydrate;
mod instance;
mod list;
mod names;
mod notify;
mod ntos;
mod ops;
mod placeholder;
mod pool;
mod populate;
mod port;
mod providers;
mod queue;
mod registration;
mod reparse;
mod roots;
mod rules;
mod security;
mod seh;
mod stream;
mod sync;
mod timer;
mod user;

pub use filter::driver_entry;
pub use pool::{POOL_ALIGNMENT, POOL_FLAG_NON_PAGED, tag};
