//! Population on demand (issue 15): a directory placeholder created not populated
//! ([`PlaceholderSpec::on_demand`], or the sync root until it is marked with
//! [`Connection::set_populated`]) is filled from the provider the first time anyone lists
//! it or opens a name beneath it, under population policy FULL.
//!
//! The driver asks once per directory, however many processes look at once, with a
//! [`PopulationRequest`]; the provider answers through the [`Population`] it is handed:
//! batches of entries ([`Population::send`]), each a [`PlaceholderSpec`] named by its
//! name in the directory, with the directory's total count, until that many were sent.
//! The driver creates each entry as [`Connection::create_placeholder`] would; a name that
//! exists locally is left as it is and reported ([`EntryError::Exists`]). With
//! [`Population::disable_on_demand_population`] the directory is marked populated once
//! every entry arrived and none failed, and is never asked for again; without it, the
//! listing goes on with what was created and the next one asks again.
//!
//! [`Connection::create_placeholder`]: crate::Connection::create_placeholder
//! [`Connection::set_populated`]: crate::Connection::set_populated

use std::sync::Arc;

use cloudflt_proto::Utf16;
use cloudflt_proto::msg::HEADER_SIZE;
use cloudflt_proto::msg::{
    self, FetchPlaceholders, MAX_BATCH_ENTRIES, MAX_PROVIDER_MESSAGE_LEN, PlaceholderEntries,
    PlaceholderEntry, PopulationFlags, TRANSFER_PLACEHOLDERS_FIXED, TransferPlaceholders,
    TransferPlaceholdersResult,
};

use crate::connection::Shared;
use crate::{CancelReason, Error, PlaceholderSpec, RequestingProcess};

/// STATUS_OBJECT_NAME_COLLISION: the entry's name exists in the directory.
const STATUS_OBJECT_NAME_COLLISION: i32 = 0xC000_0035_u32 as i32;

/// A request to fill a directory placeholder.
///
/// ```
/// use cloudflt::{Population, PopulationRequest, SyncProvider, FetchRequest, Transfer};
///
/// struct Tree;
/// impl SyncProvider for Tree {
///     fn fetch_data(&self, _request: FetchRequest, _transfer: Transfer) {}
///     fn fetch_placeholders(&self, request: PopulationRequest, mut population: Population) {
///         println!("{} lists {:?} (pattern {})", request.process.image, request.path, request.pattern);
///         population.disable_on_demand_population(true);
///         let entries = [cloudflt::PlaceholderSpec::file("a.txt", 5)];
///         let _ = population.send(&entries, 1);
///     }
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PopulationRequest {
    /// The driver's id of this population; the [`Population`] and any
    /// [`CancelPopulation`] carry it.
    pub request_id: u64,
    /// The directory's NTFS file id.
    pub file_id: u64,
    /// The directory's path relative to the sync root (empty for the root itself); with
    /// [`ConnectFlags::REQUIRE_FULL_FILE_PATH`](crate::ConnectFlags) its full NT path,
    /// and `path_is_full` set.
    pub path: String,
    /// Whether `path` is the full NT path.
    pub path_is_full: bool,
    /// The pattern the listing asked for (`*` for an open beneath the directory). A
    /// hint: the whole directory is what completes it.
    pub pattern: String,
    /// The directory's file identity (empty for the root).
    pub identity: Vec<u8>,
    /// The sync root's identity, as registered.
    pub sync_root_identity: Vec<u8>,
    /// The root directory's file identity, when the directory is the root (empty
    /// otherwise).
    pub root_file_identity: Vec<u8>,
    /// Who listed or opened.
    pub process: RequestingProcess,
    /// The driver's priority hint, 0 to 15.
    pub priority: u8,
}

impl PopulationRequest {
    pub(crate) fn from_message(m: &FetchPlaceholders<'_>) -> Self {
        Self {
            request_id: m.request_id,
            file_id: m.file_id,
            path: m.path.chars_lossy().collect(),
            path_is_full: m.flags.contains(msg::RequestFlags::FULL_PATH),
            pattern: m.pattern.chars_lossy().collect(),
            identity: m.identity.to_vec(),
            sync_root_identity: m.sync_root_identity.to_vec(),
            root_file_identity: m.root_file_identity.to_vec(),
            process: RequestingProcess::from_wire(
                m.requestor_pid,
                &m.requestor_image,
                m.flags,
                &m.requestor_command_line,
            ),
            priority: m.priority,
        }
    }
}

/// The driver no longer waits for a population: everyone who listed or opened gave up,
/// or the provider took longer than the root's timeout. Later batches are refused.
///
/// ```
/// fn on_cancel(cancel: cloudflt::CancelPopulation) {
///     eprintln!("population {} cancelled: {:?}", cancel.request_id, cancel.reason);
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CancelPopulation {
    /// The population's request id ([`PopulationRequest::request_id`]).
    pub request_id: u64,
    /// Why.
    pub reason: CancelReason,
}

impl CancelPopulation {
    pub(crate) fn from_message(m: &msg::CancelFetchPlaceholders) -> Self {
        Self {
            request_id: m.request_id,
            reason: m.reason,
        }
    }
}

/// Why one entry of a batch was not created.
#[derive(Debug, thiserror::Error)]
pub enum EntryError {
    /// A file or directory of that name exists in the directory: it was left as it is.
    /// The directory has the entry, so this does not keep it from being complete.
    #[error("a file of that name exists already; it was left as it is")]
    Exists,
    /// The driver could not create it.
    #[error("the placeholder could not be created: {0}")]
    Failed(Error),
}

/// The answer channel of one population: batches with [`send`](Self::send), or a failure
/// with [`fail`](Self::fail).
///
/// Dropping a population that did not send the directory's total fails it with
/// STATUS_CLOUD_FILE_UNSUCCESSFUL, so the listing is not left waiting.
///
/// ```no_run
/// # fn serve(mut population: cloudflt::Population) -> Result<(), cloudflt::Error> {
/// use cloudflt::PlaceholderSpec;
/// population.disable_on_demand_population(true);
/// let first = [PlaceholderSpec::file("a.txt", 10), PlaceholderSpec::directory("sub").on_demand(true)];
/// population.send(&first, 3)?;
/// population.send(&[PlaceholderSpec::file("b.txt", 20)], 3)?;
/// assert!(population.is_complete());
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Population {
    shared: Arc<Shared>,
    request_id: u64,
    sent: u64,
    total: Option<u64>,
    disable: bool,
    stop_on_error: bool,
    /// The total was sent, or the population failed: nothing more to say.
    finished: bool,
}

impl Population {
    pub(crate) fn new(shared: Arc<Shared>, request: &PopulationRequest) -> Self {
        Self {
            shared,
            request_id: request.request_id,
            sent: 0,
            total: None,
            disable: false,
            stop_on_error: false,
            finished: false,
        }
    }

    /// The population this answers.
    pub fn request_id(&self) -> u64 {
        self.request_id
    }

    /// Mark the directory populated once every entry arrived and succeeded, so it is
    /// never asked for again (DISABLE_ON_DEMAND_POPULATION; rides on every batch).
    pub fn disable_on_demand_population(&mut self, disable: bool) {
        self.disable = disable;
    }

    /// Stop a batch at its first entry that fails (STOP_ON_ERROR); an entry that exists
    /// already is not a failure.
    pub fn stop_on_error(&mut self, stop: bool) {
        self.stop_on_error = stop;
    }

    /// Whether the directory's total was sent.
    pub fn is_complete(&self) -> bool {
        self.total.is_some_and(|total| self.sent >= total)
    }

    /// Sends `entries` — each named by its name in the directory (one component), sizes,
    /// times, attributes, identities and state as for a created placeholder — the
    /// directory having `total` entries in all. Split into as many messages as the
    /// protocol's limits need (at most [`MAX_BATCH_ENTRIES`] entries each). The outcome
    /// of each entry, in order; entries after one that failed under
    /// [`stop_on_error`](Self::stop_on_error) are not created and not in the list. An
    /// empty `entries` with `total` reached completes the directory (an empty directory:
    /// `send(&[], 0)`).
    ///
    /// The driver's refusal comes back typed: a population that is over (completed,
    /// cancelled, timed out) is [`Error::InvalidRequest`].
    pub fn send(
        &mut self,
        entries: &[PlaceholderSpec],
        total: u64,
    ) -> Result<Vec<Result<(), EntryError>>, Error> {
        let names: Vec<Vec<u16>> = entries
            .iter()
            .map(|e| entry_name(&e.path))
            .collect::<Result<_, _>>()?;
        let wire: Vec<PlaceholderEntry<'_>> = entries
            .iter()
            .zip(&names)
            .map(|(e, name)| PlaceholderEntry {
                file_size: if e.is_directory() { 0 } else { e.size },
                basic: e.times.basic(e.attributes),
                flags: e.flags(),
                name: Utf16::from_units(name),
                identity: &e.identity,
            })
            .collect();
        self.total = Some(total);
        let mut results = Vec::with_capacity(entries.len());
        let room = MAX_PROVIDER_MESSAGE_LEN - HEADER_SIZE - TRANSFER_PLACEHOLDERS_FIXED;
        let mut start = 0;
        loop {
            // The longest run from `start` that fits one message.
            let mut end = start;
            let mut bytes = 0usize;
            while let Some(e) = wire.get(end) {
                if end - start == MAX_BATCH_ENTRIES || bytes + e.encoded_len() > room {
                    break;
                }
                bytes += e.encoded_len();
                end += 1;
            }
            let batch = wire.get(start..end).unwrap_or_default();
            let statuses = self.send_batch(batch, total)?;
            let stopped = statuses.len() < batch.len();
            self.sent += statuses.len() as u64;
            results.extend(statuses.into_iter().map(|status| match status {
                s if s >= 0 => Ok(()),
                STATUS_OBJECT_NAME_COLLISION => Err(EntryError::Exists),
                s => Err(EntryError::Failed(Error::from_status(s))),
            }));
            start = end;
            if stopped || start >= wire.len() {
                break;
            }
        }
        if self.is_complete() {
            self.finished = true;
        }
        Ok(results)
    }

    fn send_batch(&self, batch: &[PlaceholderEntry<'_>], total: u64) -> Result<Vec<i32>, Error> {
        let mut flags = PopulationFlags::EMPTY;
        if self.disable {
            flags = flags.union(PopulationFlags::DISABLE_ON_DEMAND_POPULATION);
        }
        if self.stop_on_error {
            flags = flags.union(PopulationFlags::STOP_ON_ERROR);
        }
        let message = TransferPlaceholders {
            request_id: self.request_id,
            status: 0,
            flags,
            total,
            entries: PlaceholderEntries::from_slice(batch),
        };
        let mut bytes = vec![0u8; message.encoded_len()];
        message.encode(&mut bytes)?;
        let reply = self
            .shared
            .request(&bytes, TransferPlaceholdersResult::encoded_len(batch.len()))?;
        Ok(TransferPlaceholdersResult::decode(&reply)?.collect())
    }

    /// Fails the population: the waiting listings and opens fail with `error`'s status
    /// (one outside the cloud-file family becomes STATUS_CLOUD_FILE_UNSUCCESSFUL), and
    /// the directory stays not populated, with what was created so far.
    pub fn fail(mut self, error: Error) -> Result<(), Error> {
        self.finished = true;
        self.send_failure(error.status())
    }

    fn send_failure(&self, status: i32) -> Result<(), Error> {
        let message = TransferPlaceholders {
            request_id: self.request_id,
            status,
            flags: PopulationFlags::EMPTY,
            total: 0,
            entries: PlaceholderEntries::from_slice(&[]),
        };
        let mut bytes = vec![0u8; message.encoded_len()];
        message.encode(&mut bytes)?;
        self.shared.request(&bytes, 0).map(drop)
    }
}

impl Drop for Population {
    fn drop(&mut self) {
        if !self.finished {
            // Nobody can answer any more; failing now spares the listing the timeout.
            let _ = self.send_failure(Error::Unsuccessful.status());
        }
    }
}

/// An entry's name: one path component.
fn entry_name(name: &str) -> Result<Vec<u16>, Error> {
    if name.is_empty() || name == "." || name == ".." || name.contains(['\\', '/', '\0']) {
        return Err(Error::InvalidArgument(format!(
            "{name:?} is not a name in the directory (one path component)"
        )));
    }
    Ok(name.encode_utf16().collect())
}
