//! The provider's side of a fetch: the [`SyncProvider`] callbacks, what they receive
//! ([`FetchRequest`], [`CancelFetch`]), and the [`Transfer`] handle they answer through.
//!
//! The transfer checks cfapi's alignment rule before anything is sent, splits data into
//! messages the driver accepts, marks the piece that completes the required range as the
//! last one, and — if dropped before it completed or failed — fails the fetch at once, so
//! a provider that loses a request (or panics) never leaves an application waiting for the
//! timeout.

use std::ops::Range;
use std::sync::Arc;

use cloudflt_proto::ByteRange;
use cloudflt_proto::msg::{
    self, AckData, FetchFailed, MAX_TRANSFER_LEN, RetrieveData, TransferData, TransferFlags,
};

use crate::Error;
use crate::connection::Shared;
use crate::notify::{
    Ack, CloseCompletion, DehydrateCompletion, DehydrateNotification, DeleteCompletion,
    DeleteNotification, NotifySet, OpenCompletion, RenameCompletion, RenameNotification,
};
use crate::populate::{CancelPopulation, Population, PopulationRequest};

pub use cloudflt_proto::msg::CancelReason;

/// cfapi's transfer granularity: offsets, and lengths not ending at end of file, are
/// multiples of it.
pub const TRANSFER_ALIGNMENT: u64 = 4096;

/// What a sync provider does when the driver needs something from it.
///
/// Callbacks run on worker threads of the library, one per request, so a slow fetch
/// does not hold up others; they may block. They may also hand the [`Transfer`] to
/// another thread and return at once.
///
/// ```
/// use cloudflt::{FetchRequest, SyncProvider, Transfer};
///
/// /// Serves every file as zeros.
/// struct Zeros;
///
/// impl SyncProvider for Zeros {
///     fn fetch_data(&self, request: FetchRequest, mut transfer: Transfer) {
///         let data = vec![0u8; (request.required.end - request.required.start) as usize];
///         if let Err(e) = transfer.write(request.required.start, &data) {
///             eprintln!("transfer of {} failed: {e}", request.path);
///         }
///     }
/// }
/// ```
pub trait SyncProvider {
    /// The driver needs `request.required` of a placeholder's data: answer with
    /// [`Transfer::write`] (in one or several pieces, covering at least the required
    /// range), or [`Transfer::fail`].
    fn fetch_data(&self, request: FetchRequest, transfer: Transfer);

    /// The driver no longer needs (part of) an earlier fetch: every waiting I/O went away
    /// or the request timed out. Transfers for it will be refused from now on; stop
    /// working on it. The default does nothing.
    ///
    /// ```
    /// use cloudflt::{CancelFetch, FetchRequest, SyncProvider, Transfer};
    ///
    /// struct Logged;
    /// impl SyncProvider for Logged {
    ///     fn fetch_data(&self, _request: FetchRequest, transfer: Transfer) {
    ///         let _ = transfer.fail(cloudflt::Error::NetworkUnavailable);
    ///     }
    ///     fn cancel_fetch(&self, cancel: CancelFetch) {
    ///         eprintln!("fetch {} cancelled: {:?}", cancel.request_id, cancel.reason);
    ///     }
    /// }
    /// ```
    fn cancel_fetch(&self, cancel: CancelFetch) {
        let _ = cancel;
    }

    /// Only for a sync root registered with
    /// [`HydrationModifiers::VALIDATION_REQUIRED`](crate::registration::HydrationModifiers): the data
    /// of a fetch is on disk, and the reads waiting for it complete only for the ranges
    /// acknowledged here. Read the bytes back with [`Validation::read`] (they are what
    /// NTFS holds, not what was sent), then [`Validation::acknowledge`] what is right
    /// and [`Validation::refuse`] what is not: a refusal fails the waiting reads with
    /// STATUS_CLOUD_FILE_VALIDATION_FAILED and leaves the range missing, to be fetched
    /// again by the next read.
    ///
    /// The default acknowledges the whole range without reading it.
    ///
    /// ```
    /// use cloudflt::{FetchRequest, SyncProvider, Transfer, Validation, ValidationRequest};
    ///
    /// /// Refuses any data that is not all 0x5A.
    /// struct Checked;
    /// impl SyncProvider for Checked {
    ///     fn fetch_data(&self, _request: FetchRequest, transfer: Transfer) {
    ///         let _ = transfer.fail(cloudflt::Error::NetworkUnavailable);
    ///     }
    ///     fn validate_data(&self, request: ValidationRequest, validation: Validation) {
    ///         let range = request.range.clone();
    ///         match validation.read(range.clone()) {
    ///             Ok(bytes) if bytes.iter().all(|b| *b == 0x5A) => {
    ///                 let _ = validation.acknowledge(range);
    ///             }
    ///             _ => {
    ///                 let _ = validation.refuse(range, cloudflt::Error::ValidationFailed);
    ///             }
    ///         }
    ///     }
    /// }
    /// ```
    fn validate_data(&self, request: ValidationRequest, validation: Validation) {
        let _ = validation.acknowledge(request.range);
    }

    /// The notifications this provider wants (cfapi: the NOTIFY_* callbacks of its
    /// registration table), asked for when it connects; the driver sends no other. The
    /// default is none, so the `notify_*` and `*_completed` callbacks below are never
    /// called unless this names them.
    ///
    /// ```
    /// use cloudflt::notify::{Ack, DeleteNotification, NotifySet};
    /// use cloudflt::{FetchRequest, SyncProvider, Transfer};
    ///
    /// /// Keeps everything under `locked\` from being deleted.
    /// struct Guard;
    /// impl SyncProvider for Guard {
    ///     fn fetch_data(&self, _request: FetchRequest, transfer: Transfer) {
    ///         let _ = transfer.fail(cloudflt::Error::NetworkUnavailable);
    ///     }
    ///     fn notifications(&self) -> NotifySet {
    ///         NotifySet::DELETE
    ///     }
    ///     fn notify_delete(&self, delete: DeleteNotification, ack: Ack) {
    ///         let _ = if delete.file.path.starts_with("locked\\") {
    ///             ack.refuse(cloudflt::Error::InUse)
    ///         } else {
    ///             ack.allow()
    ///         };
    ///     }
    /// }
    /// ```
    fn notifications(&self) -> NotifySet {
        NotifySet::NONE
    }

    /// A file or directory of the root is about to be deleted (or its delete undone):
    /// the deleting thread waits for `ack`. The default allows.
    fn notify_delete(&self, delete: DeleteNotification, ack: Ack) {
        let _ = delete;
        let _ = ack.allow();
    }

    /// A file or directory of the root was deleted. The default does nothing.
    fn delete_completed(&self, completion: DeleteCompletion) {
        let _ = completion;
    }

    /// A file or directory is about to be renamed into, within or out of the root: the
    /// renaming thread waits for `ack`. The default allows.
    fn notify_rename(&self, rename: RenameNotification, ack: Ack) {
        let _ = rename;
        let _ = ack.allow();
    }

    /// A file or directory was renamed. The default does nothing.
    fn rename_completed(&self, completion: RenameCompletion) {
        let _ = completion;
    }

    /// A placeholder is about to lose its local data at someone else's request (a user,
    /// the system): the dehydration waits for `ack`. The default allows.
    fn notify_dehydrate(&self, dehydrate: DehydrateNotification, ack: Ack) {
        let _ = dehydrate;
        let _ = ack.allow();
    }

    /// A dehydration ended. The default does nothing.
    fn dehydrate_completed(&self, completion: DehydrateCompletion) {
        let _ = completion;
    }

    /// A file of the root was opened. The default does nothing.
    fn file_opened(&self, open: OpenCompletion) {
        let _ = open;
    }

    /// The last handle of a file of the root was closed. The default does nothing.
    fn file_closed(&self, close: CloseCompletion) {
        let _ = close;
    }

    /// Under population policy FULL, a directory placeholder that is not populated (or
    /// the sync root, until marked populated) is being listed, or a name beneath it
    /// opened: send its entries through `population` ([`Population::send`]), or
    /// [`Population::fail`]. The listing or open waits for the directory's total, within
    /// the root's timeout; concurrent listers of one directory share one request.
    ///
    /// The default adds nothing and marks the directory populated: a provider that creates
    /// its placeholders up front lists what it created, and each directory is asked about
    /// once.
    ///
    /// ```
    /// use cloudflt::{FetchRequest, PlaceholderSpec, Population, PopulationRequest, SyncProvider, Transfer};
    ///
    /// /// Every directory holds one file, `readme.txt`, and one subdirectory, `more`.
    /// struct Endless;
    /// impl SyncProvider for Endless {
    ///     fn fetch_data(&self, _request: FetchRequest, transfer: Transfer) {
    ///         let _ = transfer.fail(cloudflt::Error::NetworkUnavailable);
    ///     }
    ///     fn fetch_placeholders(&self, _request: PopulationRequest, mut population: Population) {
    ///         population.disable_on_demand_population(true);
    ///         let entries = [
    ///             PlaceholderSpec::file("readme.txt", 12),
    ///             PlaceholderSpec::directory("more").on_demand(true),
    ///         ];
    ///         let _ = population.send(&entries, 2);
    ///     }
    /// }
    /// ```
    fn fetch_placeholders(&self, request: PopulationRequest, mut population: Population) {
        let _ = request;
        population.disable_on_demand_population(true);
        let _ = population.send(&[], 0);
    }

    /// The driver no longer waits for a population (everyone gave up, or the root's
    /// timeout passed); its later batches are refused. The default does nothing.
    fn cancel_fetch_placeholders(&self, cancel: CancelPopulation) {
        let _ = cancel;
    }
}

/// The data of a fetch to validate (VALIDATE_DATA): the fields of the
/// [`FetchRequest`] it was written for, with the range to validate.
pub type ValidationRequest = FetchRequest;

/// The answer channel of one validation: read the data back, then acknowledge or refuse
/// it, range by range.
///
/// Dropping a validation that left part of its range unjudged refuses that part with
/// STATUS_CLOUD_FILE_VALIDATION_FAILED, so the reads waiting for it do not wait for the
/// timeout.
#[derive(Debug)]
pub struct Validation {
    shared: Arc<Shared>,
    request_id: u64,
    range: Range<u64>,
    /// What of `range` has been acknowledged or refused, merged and sorted.
    judged: Vec<Range<u64>>,
}

impl Validation {
    pub(crate) fn new(shared: Arc<Shared>, request: &ValidationRequest) -> Self {
        Self {
            shared,
            request_id: request.request_id,
            range: request.range.clone(),
            judged: Vec::new(),
        }
    }

    /// The bytes of `range` as they are on disk (RETRIEVE_DATA), read in pieces of at
    /// most one transfer's worth. `range` must lie within the range to validate
    /// ([`Error::OutOfRange`] otherwise, checked here).
    ///
    /// ```no_run
    /// # fn f(validation: cloudflt::Validation) -> Result<(), cloudflt::Error> {
    /// let head = validation.read(0..4096)?;
    /// assert_eq!(head.len(), 4096);
    /// # Ok(()) }
    /// ```
    pub fn read(&self, range: Range<u64>) -> Result<Vec<u8>, Error> {
        self.check(&range)?;
        let mut out = Vec::with_capacity(usize::try_from(range.end - range.start).unwrap_or(0));
        let mut at = range.start;
        while at < range.end {
            let len = (range.end - at).min(MAX_TRANSFER_LEN as u64);
            let message = RetrieveData {
                request_id: self.request_id,
                range: ByteRange::new(at, len),
            };
            let mut bytes = vec![0u8; message.encoded_len()];
            message.encode(&mut bytes)?;
            let piece = self.shared.request(&bytes, len as usize)?;
            if piece.is_empty() {
                break;
            }
            at += piece.len() as u64;
            out.extend_from_slice(&piece);
        }
        Ok(out)
    }

    /// Acknowledges `range`: it is recorded as present and the reads waiting for it
    /// complete.
    pub fn acknowledge(mut self, range: Range<u64>) -> Result<(), Error> {
        self.judge(range, 0)
    }

    /// Refuses `range`: the reads waiting on the fetch fail with
    /// STATUS_CLOUD_FILE_VALIDATION_FAILED, whatever `error` says (its status is sent,
    /// the driver answers readers with the validation status).
    pub fn refuse(mut self, range: Range<u64>, error: Error) -> Result<(), Error> {
        let status = error.status();
        self.judge(
            range,
            if status < 0 {
                status
            } else {
                Error::ValidationFailed.status()
            },
        )
    }

    /// Acknowledges `range` and keeps the validation for the rest.
    pub fn acknowledge_part(&mut self, range: Range<u64>) -> Result<(), Error> {
        self.judge(range, 0)
    }

    fn check(&self, range: &Range<u64>) -> Result<(), Error> {
        if range.start >= range.end || range.start < self.range.start || range.end > self.range.end
        {
            return Err(Error::OutOfRange {
                offset: range.start,
                length: range.end.saturating_sub(range.start),
                file_size: self.range.end,
            });
        }
        Ok(())
    }

    fn judge(&mut self, range: Range<u64>, status: i32) -> Result<(), Error> {
        self.check(&range)?;
        let within = self.range.clone();
        add_range(&mut self.judged, range.clone(), &within);
        send_ack(&self.shared, self.request_id, range, status)
    }
}

fn send_ack(shared: &Shared, request_id: u64, range: Range<u64>, status: i32) -> Result<(), Error> {
    let message = AckData {
        request_id,
        range: ByteRange::new(range.start, range.end - range.start),
        status,
    };
    let mut bytes = vec![0u8; message.encoded_len()];
    message.encode(&mut bytes)?;
    shared.request(&bytes, 0).map(drop)
}

impl Drop for Validation {
    fn drop(&mut self) {
        if !covers(&self.judged, &self.range) {
            // Unjudged data never completes a read; saying so spares the timeout.
            let _ = send_ack(
                &self.shared,
                self.request_id,
                self.range.clone(),
                Error::ValidationFailed.status(),
            );
        }
    }
}

/// The process whose I/O made the driver fetch.
///
/// ```
/// let who = cloudflt::RequestingProcess {
///     pid: 1234,
///     image: r"\Device\HarddiskVolume1\app.exe".into(),
///     command_line: None,
/// };
/// assert!(who.image.ends_with("app.exe"));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestingProcess {
    /// Its process id.
    pub pid: u32,
    /// Its image path in NT form, possibly cut short by the driver.
    pub image: String,
    /// With [`ConnectFlags::REQUIRE_PROCESS_INFO`](crate::ConnectFlags), its command
    /// line (`UNKNOWN` when the driver could not read it, as cfapi says).
    pub command_line: Option<String>,
}

impl RequestingProcess {
    /// As a request carries it: the command line only with
    /// [`RequestFlags::PROCESS_INFO`](msg::RequestFlags::PROCESS_INFO).
    pub(crate) fn from_wire(
        pid: u32,
        image: &cloudflt_proto::Utf16<'_>,
        flags: msg::RequestFlags,
        command_line: &cloudflt_proto::Utf16<'_>,
    ) -> Self {
        Self {
            pid,
            image: image.chars_lossy().collect(),
            command_line: flags
                .contains(msg::RequestFlags::PROCESS_INFO)
                .then(|| command_line.chars_lossy().collect()),
        }
    }
}

/// A request for a placeholder's data.
///
/// ```
/// use cloudflt::{FetchRequest, SyncProvider, Transfer};
///
/// struct Show;
/// impl SyncProvider for Show {
///     fn fetch_data(&self, request: FetchRequest, transfer: Transfer) {
///         println!(
///             "{} wants {:?} of {} ({} bytes), identity {:?}",
///             request.process.image, request.required, request.path, request.file_size,
///             request.identity,
///         );
///         drop(transfer); // fails the fetch with STATUS_CLOUD_FILE_UNSUCCESSFUL
///     }
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FetchRequest {
    /// The driver's id of this fetch; the [`Transfer`] and any [`CancelFetch`] carry it.
    pub request_id: u64,
    /// The placeholder's NTFS file id.
    pub file_id: u64,
    /// The placeholder's size.
    pub file_size: u64,
    /// The bytes the waiting I/O needs, never empty, within the file.
    pub required: Range<u64>,
    /// For a [`ValidationRequest`], the bytes to validate; for a fetch, `required`.
    pub range: Range<u64>,
    /// The placeholder's path relative to the sync root, `\`-separated; with
    /// [`ConnectFlags::REQUIRE_FULL_FILE_PATH`](crate::ConnectFlags) its full NT path
    /// (`\Device\HarddiskVolume3\Users\me\Cloud\a.txt`), and `path_is_full` set.
    pub path: String,
    /// Whether `path` is the full NT path.
    pub path_is_full: bool,
    /// The sync root's identity, as registered (empty when it has none).
    pub sync_root_identity: Vec<u8>,
    /// The sync root directory's file identity, for a request about the root itself
    /// (empty otherwise).
    pub root_file_identity: Vec<u8>,
    /// The file identity the provider gave the placeholder.
    pub identity: Vec<u8>,
    /// Who caused the fetch.
    pub process: RequestingProcess,
    /// The driver's priority hint, 0 (background) to 15 (urgent).
    pub priority: u8,
}

impl FetchRequest {
    pub(crate) fn from_validation(m: &msg::ValidateData<'_>) -> Self {
        Self::from_message(&m.as_fetch())
    }

    pub(crate) fn from_message(m: &msg::FetchData<'_>) -> Self {
        Self {
            request_id: m.request_id,
            file_id: m.file_id,
            file_size: m.file_size,
            required: m.required.offset..m.required.offset.saturating_add(m.required.length),
            range: m.required.offset..m.required.offset.saturating_add(m.required.length),
            path: m.path.chars_lossy().collect(),
            identity: m.identity.to_vec(),
            path_is_full: m.flags.contains(msg::RequestFlags::FULL_PATH),
            process: RequestingProcess::from_wire(
                m.requestor_pid,
                &m.requestor_image,
                m.flags,
                &m.requestor_command_line,
            ),
            priority: m.priority,
            sync_root_identity: m.sync_root_identity.to_vec(),
            root_file_identity: m.root_file_identity.to_vec(),
        }
    }
}

/// The driver no longer needs (part of) a fetch.
///
/// ```
/// use cloudflt::{CancelFetch, CancelReason};
///
/// fn on_cancel(cancel: CancelFetch) {
///     if cancel.reason == CancelReason::IoTimeout {
///         eprintln!("too slow for fetch {}", cancel.request_id);
///     }
/// }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CancelFetch {
    /// The fetch's request id ([`FetchRequest::request_id`]).
    pub request_id: u64,
    /// The part of it no longer needed (possibly all of it).
    pub range: Range<u64>,
    /// Why.
    pub reason: CancelReason,
}

impl CancelFetch {
    pub(crate) fn from_message(m: &msg::CancelFetch) -> Self {
        Self {
            request_id: m.request_id,
            range: m.range.offset..m.range.offset.saturating_add(m.range.length),
            reason: m.reason,
        }
    }
}

/// The answer channel of one fetch: data with [`write`](Self::write), or a failure with
/// [`fail`](Self::fail).
///
/// Dropping a transfer whose required range was not fully written fails the fetch with
/// STATUS_CLOUD_FILE_UNSUCCESSFUL, so the application is not left waiting.
///
/// ```no_run
/// # fn serve(mut transfer: cloudflt::Transfer) -> Result<(), cloudflt::Error> {
/// // A 10,000-byte file answered in two pieces: 8 KiB, then the unaligned tail.
/// transfer.write(0, &[1u8; 8192])?;
/// transfer.write(8192, &[2u8; 10_000 - 8192])?;
/// assert!(transfer.is_complete());
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Transfer {
    shared: Arc<Shared>,
    request_id: u64,
    file_size: u64,
    required: Range<u64>,
    /// What of `required` has been sent, merged and sorted.
    covered: Vec<Range<u64>>,
    /// Completed (required range covered, LAST sent) or failed: nothing more to say.
    finished: bool,
}

impl Transfer {
    pub(crate) fn new(shared: Arc<Shared>, request: &FetchRequest) -> Self {
        Self {
            shared,
            request_id: request.request_id,
            file_size: request.file_size,
            required: request.required.clone(),
            covered: Vec::new(),
            finished: false,
        }
    }

    /// The fetch this transfer answers.
    ///
    /// ```no_run
    /// # fn f(transfer: cloudflt::Transfer) {
    /// println!("answering fetch {}", transfer.request_id());
    /// # }
    /// ```
    pub fn request_id(&self) -> u64 {
        self.request_id
    }

    /// The placeholder's size, where an unaligned last piece must end.
    ///
    /// ```no_run
    /// # fn f(transfer: cloudflt::Transfer) {
    /// let tail = transfer.file_size() % cloudflt::TRANSFER_ALIGNMENT;
    /// # let _ = tail; }
    /// ```
    pub fn file_size(&self) -> u64 {
        self.file_size
    }

    /// Whether the required range has been fully written.
    ///
    /// ```no_run
    /// # fn f(transfer: cloudflt::Transfer) {
    /// assert!(!transfer.is_complete(), "nothing written yet");
    /// # }
    /// ```
    pub fn is_complete(&self) -> bool {
        covers(&self.covered, &self.required)
    }

    /// Sends `data` as the file's bytes from `offset`.
    ///
    /// cfapi's rule is checked first, and nothing is sent if it is broken: `offset` must be
    /// a multiple of [`TRANSFER_ALIGNMENT`], and so must the length unless the data ends
    /// exactly at the end of the file ([`Error::Alignment`]); the data must not be empty
    /// nor reach past the end of the file ([`Error::OutOfRange`]). Within that, a piece may
    /// lie anywhere in the file, including outside the required range; large pieces are
    /// sent as several messages. The piece that completes the required range is marked as
    /// the fetch's last, after which the driver may retire the fetch: send data beyond the
    /// required range before or together with that piece. The driver's refusal comes back typed (a cancelled or
    /// timed-out fetch is [`Error::InvalidRequest`] or [`Error::RequestTimeout`]).
    ///
    /// ```no_run
    /// # fn f(mut transfer: cloudflt::Transfer) {
    /// // Misaligned: refused here, never sent.
    /// assert!(matches!(
    ///     transfer.write(100, &[0u8; 4096]),
    ///     Err(cloudflt::Error::Alignment { .. })
    /// ));
    /// # }
    /// ```
    pub fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), Error> {
        let length = data.len() as u64;
        let end = check_transfer(offset, length, self.file_size)?;
        let mut covered = self.covered.clone();
        add_range(&mut covered, offset..end, &self.required);
        // LAST rides on the piece that first completes the required range: the driver may
        // retire the fetch then, so a later piece is sent without it (and may be refused).
        let completes = !self.finished && covers(&covered, &self.required);
        let mut pieces = data.chunks(MAX_TRANSFER_LEN).peekable();
        let mut at = offset;
        while let Some(piece) = pieces.next() {
            let last = completes && pieces.peek().is_none();
            let message = TransferData {
                request_id: self.request_id,
                offset: at,
                flags: if last {
                    TransferFlags::LAST
                } else {
                    TransferFlags::EMPTY
                },
                data: piece,
            };
            let mut buffer = PageAlignedData::new(message.encoded_len());
            message.encode(buffer.message())?;
            self.shared.request(buffer.message(), 0)?;
            let piece_end = at + piece.len() as u64;
            add_range(&mut self.covered, at..piece_end, &self.required);
            at = piece_end;
        }
        if completes {
            self.finished = true;
        }
        Ok(())
    }

    /// Fails the fetch: the waiting I/O completes with `error`'s status
    /// ([`Error::status`]; the driver turns a status outside the cloud-file family into
    /// STATUS_CLOUD_FILE_UNSUCCESSFUL).
    ///
    /// ```no_run
    /// # fn f(transfer: cloudflt::Transfer) {
    /// transfer.fail(cloudflt::Error::NetworkUnavailable).ok();
    /// # }
    /// ```
    pub fn fail(mut self, error: Error) -> Result<(), Error> {
        self.finished = true;
        self.send_failure(error.status())
    }

    fn send_failure(&self, status: i32) -> Result<(), Error> {
        let message = FetchFailed {
            request_id: self.request_id,
            status,
        };
        let mut bytes = vec![0u8; message.encoded_len()];
        message.encode(&mut bytes)?;
        self.shared.request(&bytes, 0).map(drop)
    }
}

impl Drop for Transfer {
    fn drop(&mut self) {
        if !self.finished {
            // Nobody can answer any more; failing now spares the application the timeout.
            // If the driver already gave up on the fetch it refuses this, which is fine.
            let _ = self.send_failure(Error::Unsuccessful.status());
        }
    }
}

/// Checks cfapi's rule for `length` bytes at `offset` of a `file_size`-byte file; the
/// end of the data.
pub(crate) fn check_transfer(offset: u64, length: u64, file_size: u64) -> Result<u64, Error> {
    let end = offset
        .checked_add(length)
        .filter(|&end| length > 0 && end <= file_size);
    let Some(end) = end else {
        return Err(Error::OutOfRange {
            offset,
            length,
            file_size,
        });
    };
    if !offset.is_multiple_of(TRANSFER_ALIGNMENT)
        || (!length.is_multiple_of(TRANSFER_ALIGNMENT) && end != file_size)
    {
        return Err(Error::Alignment {
            offset,
            length,
            file_size,
        });
    }
    Ok(end)
}

/// Adds the part of `range` inside `within` to the sorted, merged list `covered`.
fn add_range(covered: &mut Vec<Range<u64>>, range: Range<u64>, within: &Range<u64>) {
    let start = range.start.max(within.start);
    let end = range.end.min(within.end);
    if start >= end {
        return;
    }
    covered.push(start..end);
    covered.sort_by_key(|r| r.start);
    let mut merged: Vec<Range<u64>> = Vec::with_capacity(covered.len());
    for r in covered.drain(..) {
        match merged.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => merged.push(r),
        }
    }
    *covered = merged;
}

/// Whether the merged list `covered` contains all of `range`.
fn covers(covered: &[Range<u64>], range: &Range<u64>) -> bool {
    covered
        .iter()
        .any(|r| r.start <= range.start && r.end >= range.end)
}

/// A message buffer laid out so that a transfer's data starts on a page boundary: the
/// driver writes the data to disk non-cached straight from this memory (it locks the
/// pages instead of copying them), which needs the data aligned for the disk's DMA, and
/// refuses a transfer whose data is not with STATUS_DATATYPE_MISALIGNMENT_ERROR.
struct PageAlignedData {
    bytes: Vec<u8>,
    start: usize,
    len: usize,
}

impl PageAlignedData {
    const PAGE: usize = 4096;

    /// Room for a message of `len` bytes whose data follows the transfer head.
    fn new(len: usize) -> Self {
        let bytes = vec![0u8; len + Self::PAGE];
        let data_at = bytes.as_ptr() as usize + msg::TRANSFER_HEAD_LEN;
        let start = (Self::PAGE - data_at % Self::PAGE) % Self::PAGE;
        Self { bytes, start, len }
    }

    /// The message's bytes.
    fn message(&mut self) -> &mut [u8] {
        &mut self.bytes[self.start..self.start + self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn the_alignment_rule_is_cfapis() {
        // Aligned offset and length.
        assert_eq!(check_transfer(4096, 8192, MIB).unwrap(), 12288);
        // Unaligned length allowed only when it ends at end of file.
        assert_eq!(check_transfer(4096, 100, 4196).unwrap(), 4196);
        assert!(matches!(
            check_transfer(4096, 100, MIB),
            Err(Error::Alignment { .. })
        ));
        // Unaligned offset never.
        assert!(matches!(
            check_transfer(512, 4096, MIB),
            Err(Error::Alignment { .. })
        ));
        assert!(matches!(
            check_transfer(10, 90, 100),
            Err(Error::Alignment { .. })
        ));
        // Empty, past end of file, overflowing.
        for (offset, length) in [(0, 0), (MIB - 4096, 8192), (u64::MAX - 4095, 8192)] {
            assert!(
                matches!(
                    check_transfer(offset, length, MIB),
                    Err(Error::OutOfRange { .. })
                ),
                "{offset} {length}"
            );
        }
    }

    #[test]
    fn coverage_merges_pieces_in_any_order_and_ignores_what_lies_outside() {
        let required = 4096..16384;
        let mut covered = Vec::new();
        add_range(&mut covered, 12288..20480, &required);
        assert!(!covers(&covered, &required));
        add_range(&mut covered, 0..8192, &required);
        assert!(!covers(&covered, &required));
        add_range(&mut covered, 8192..12288, &required);
        assert_eq!(covered, vec![4096..16384]);
        assert!(covers(&covered, &required));
    }
}
