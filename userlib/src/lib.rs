//! The provider library for cloudflt: what `cfapi` is to `cldflt.sys`, for the open
//! cloudflt placeholder filter.
//!
//! A sync provider connects a sync root with [`SyncRoot::connect`], passing its
//! [`SyncRootConfig`] (root path, name, version, policies, timeout) and a
//! [`SyncProvider`]. From then on the driver asks it for placeholder data whenever an
//! application reads bytes that are not on disk yet: the provider's
//! [`fetch_data`](SyncProvider::fetch_data) receives a [`FetchRequest`] (with the
//! requesting process) and answers through a [`Transfer`], which enforces cfapi's 4 KiB
//! alignment rule before anything is sent. The [`Connection`] it gets back manages
//! placeholders (create, convert, revert, hydrate, dehydrate, pin, update, set in sync,
//! info) and disconnects when dropped. Every failure is one typed [`Error`] whose [`Error::status`] is the
//! NTSTATUS the driver uses.
//!
//! ```no_run
//! use cloudflt::{FetchRequest, PlaceholderSpec, SyncProvider, SyncRoot, SyncRootConfig, Transfer};
//!
//! /// Every file holds its own name, repeated.
//! struct Names;
//!
//! impl SyncProvider for Names {
//!     fn fetch_data(&self, request: FetchRequest, mut transfer: Transfer) {
//!         let data: Vec<u8> = request.path.bytes().cycle().take(request.file_size as usize).collect();
//!         // More than asked is fine: the whole file in one piece.
//!         if let Err(e) = transfer.write(0, &data) {
//!             eprintln!("{}: {e}", request.path);
//!         }
//!     }
//! }
//!
//! let connection = SyncRoot::connect(SyncRootConfig::new(r"C:\Names", "Names", "1.0"), Names)?;
//! connection.create_placeholder(&PlaceholderSpec::file("hello.txt", 100))?;
//! std::thread::park();
//! # Ok::<(), cloudflt::Error>(())
//! ```
//!
//! A provider with a large tree need not create it up front: directories created with
//! [`PlaceholderSpec::on_demand`] (and the sync root, until it is marked with
//! [`Connection::set_populated`]) are filled the first time anyone lists them or opens a
//! name beneath them, through [`fetch_placeholders`](SyncProvider::fetch_placeholders)
//! and the [`Population`] it is handed — one request per directory, however many
//! processes look at once.
//!
//! Any program, provider or not, can say whether it wants to see placeholders as what
//! they are or as ordinary files with [`compat`], Windows' placeholder compatibility
//! modes for the process or one thread. An administrator decides it for programs that do
//! not say, by image path or name, with [`admin::ImageRules`].
//!
//! The Windows calls go through `windows-sys` to fltlib.dll and kernel32.dll. On other
//! hosts the kernel model in `cloudflt-tests` defines the same symbols, and this same
//! code runs against it, threads and all.
#![deny(missing_docs)]

// The unit tests link against the kernel model where there is no fltlib.dll.
#[cfg(all(test, not(windows)))]
extern crate cloudflt_tests as _;

pub mod admin;
pub mod app;
pub mod compat;
mod config;
mod connection;
mod error;
pub mod notify;
mod placeholder;
mod populate;
mod provider;
pub mod registration;
mod sys;

pub use cloudflt_proto::PROTOCOL_VERSION;
pub use cloudflt_proto::connect::ConnectFlags;
pub use cloudflt_proto::port::PORT_NAME;
pub use cloudflt_proto::{HydrationPolicy, InSyncPolicy, PopulationPolicy};

pub use config::SyncRootConfig;
pub use connection::{Connection, SyncRoot};
pub use error::Error;
pub use placeholder::{
    ConvertOptions, Dehydration, FileTimes, PinState, PlaceholderInfo, PlaceholderSpec,
    UpdateOptions,
};
pub use populate::{CancelPopulation, EntryError, Population, PopulationRequest};
pub use provider::{
    CancelFetch, CancelReason, FetchRequest, RequestingProcess, SyncProvider, TRANSFER_ALIGNMENT,
    Transfer, Validation, ValidationRequest,
};
