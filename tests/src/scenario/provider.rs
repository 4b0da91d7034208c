//! The scenario's sync providers, written with the real provider library (`cloudflt`):
//! each `[[provider]]` is an elevated process that connects its sync root with
//! [`SyncRoot::connect`] and answers the driver's fetches from its remote content, the way
//! its `behaviour` says.
//!
//! Owns: each provider's process (its pid, and a new process of the same identity when
//! `connect` follows `kill`), its connections, the [`SyncProvider`] that serves fetches,
//! the transfers a `hang` provider keeps, the placeholder requests the provider steps make
//! through [`Connection`], and what the provider saw (`provider_stats`). Does not own: any
//! decision of the driver's. Every library call runs on a thread of the provider's
//! process (`process::run_as`), as it would on Windows: the port handle belongs to that
//! process.
//!
//! How a provider serves a fetch:
//! - the content is the remote file the request's identity names (placeholders are
//!   created and converted with the root-relative path as identity); an identity naming no
//!   remote file, or a placeholder larger than its remote file, fails the fetch with
//!   STATUS_CLOUD_FILE_UNSUCCESSFUL, as a provider that lost the file would;
//! - the required range widened to 4 KiB boundaries (the tail ends at end of file), in
//!   pieces of [`PIECE`] bytes, each a [`Transfer::write`]; a refused piece ends the fetch;
//! - `delay:MS` sleeps MS before serving each fetch; `fail:STATUS` answers with
//!   `Transfer::fail` and the library's error for that status; `hang` keeps the transfer
//!   (dropping it would send FETCH_FAILED) until its process disconnects and exits;
//! - `crash_after:BYTES` counts bytes over every fetch of one provider process; a piece
//!   that would pass BYTES is cut to the whole 4 KiB pages that fit (or to the tail at end
//!   of file); once BYTES are served, or nothing fits, the process dies at once (as
//!   `kill`). A new process after `connect` starts counting from zero.
//! - `provider_stats` counts over every process of the provider: `fetches` is the
//!   FETCH_DATA callbacks a live process received, `bytes_served` the bytes of successful
//!   `Transfer::write` calls, `cancels` the CANCEL_FETCH_DATA and CANCEL_FETCH_PLACEHOLDERS
//!   callbacks, `populations` the FETCH_PLACEHOLDERS callbacks.
//!
//! How a provider serves a population (FETCH_PLACEHOLDERS):
//! - the entries are the remote listing of the directory asked for (the one its identity
//!   names, else the one at its path): its remote files (in
//!   sync, their remote size) and directories (named with `dir = true`, or parents of
//!   deeper remote entries; each not populated in turn), identified by their
//!   root-relative path, in batches of [`POPULATION_BATCH`], the directory marked
//!   complete (DISABLE_ON_DEMAND_POPULATION); a directory with no remote counterpart
//!   completes empty;
//! - `behaviour` applies as to fetches: `delay:MS` before answering, `fail:STATUS` fails
//!   the population with that status, `hang` keeps it unanswered, `crash_after:BYTES`
//!   kills the process at a population only once its process has served BYTES (a
//!   population transfers no file data; `crash_after:0` dies at the first one).
//!
//! For `if_unchanged`, a provider keeps what a sync engine keeps: per file, the change
//! counter the driver last reported to it — 0 for a placeholder it created, then the
//! counter in the answer to each `hydrate`, `update` and `set_in_sync` it made — and
//! passes that.
//!
//! A process that died runs no more code: the transfers it kept and its connections are
//! forgotten (never dropped, which would send FETCH_FAILED or close handles), and its
//! callbacks still running stop before their next call.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use cloudflt::{
    CancelFetch, CancelPopulation, Connection, ConvertOptions, Dehydration, Error, FetchRequest,
    HydrationPolicy, InSyncPolicy, PlaceholderInfo, PlaceholderSpec, Population, PopulationPolicy,
    PopulationRequest, SyncProvider, SyncRoot, SyncRootConfig, TRANSFER_ALIGNMENT, Transfer,
    UpdateOptions, Validation, ValidationRequest,
};
use windows_sys::Win32::Foundation::{NTSTATUS, STATUS_OBJECT_NAME_COLLISION, STATUS_SUCCESS};

use cloudflt::notify::{
    Ack, CloseCompletion, DehydrateNotification, DeleteNotification, NotifySet, OpenCompletion,
    RenameNotification,
};
use cloudflt::registration::{
    HardLinkPolicy, HydrationModifiers, ManagementPolicy, RegisterFlags, SyncRootRegistration,
};

use super::expect::RemoteRoot;
use super::format::ProviderSpec;
use crate::model::process::{self, PHCM_APPLICATION_DEFAULT};
use crate::model::{fltlib, with_kernel};
use crate::ntstatus;

/// Bytes per `Transfer::write` of a normal answer: 64 KiB, aligned, several messages
/// per large fetch, as cfapi samples transfer in chunks.
pub(crate) const PIECE: u64 = 64 * 1024;

/// Entries per TRANSFER_PLACEHOLDERS batch of a population: several batches for a
/// directory of some size, as a provider paging through a server listing sends them.
pub(crate) const POPULATION_BATCH: usize = 256;

/// How long the runner waits for a dead or exiting provider's threads to end.
const EXIT_WAIT: Duration = Duration::from_secs(60);

/// How long `provider_stats` waits for completion callbacks still running.
const CALLBACKS_WAIT: Duration = Duration::from_millis(500);

/// How long `provider_stats` lets a message the driver just delivered reach the
/// provider's message loop and its worker.
const DELIVERY_SETTLE: Duration = Duration::from_millis(20);

/// The provider's version in its connection context.
const VERSION: &str = "1.0";

/// How a provider answers fetches (`behaviour`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Behaviour {
    /// `normal`.
    Normal,
    /// `delay:MS`.
    Delay(Duration),
    /// `fail:STATUS`.
    Fail(NTSTATUS),
    /// `crash_after:BYTES`.
    CrashAfter(u64),
    /// `hang`.
    Hang,
}

impl Behaviour {
    pub(crate) fn parse(text: &str) -> Result<Self, String> {
        let number = |n: &str| {
            n.replace('_', "")
                .parse::<u64>()
                .map_err(|_| format!("behaviour {text:?}: {n:?} is not a number"))
        };
        match text.split_once(':') {
            None if text == "normal" => Ok(Self::Normal),
            None if text == "hang" => Ok(Self::Hang),
            Some(("delay", ms)) => Ok(Self::Delay(Duration::from_millis(number(ms)?))),
            Some(("crash_after", bytes)) => Ok(Self::CrashAfter(number(bytes)?)),
            Some(("fail", name)) => match ntstatus::value(name) {
                Some(status) if status < 0 => Ok(Self::Fail(status)),
                Some(_) => Err(format!(
                    "behaviour {text:?}: {name} is not a failure status"
                )),
                None => Err(format!(
                    "behaviour {text:?}: {name} is not an NTSTATUS name the runner knows"
                )),
            },
            _ => Err(format!(
                "behaviour {text:?} is not normal, delay:MS, fail:STATUS, crash_after:BYTES \
                 or hang"
            )),
        }
    }
}

fn hydration(text: &str) -> Result<HydrationPolicy, String> {
    Ok(match text {
        "partial" => HydrationPolicy::Partial,
        "progressive" => HydrationPolicy::Progressive,
        "full" => HydrationPolicy::Full,
        "always_full" => HydrationPolicy::AlwaysFull,
        other => {
            return Err(format!(
                "hydration {other:?} is not partial, progressive, full or always_full"
            ));
        }
    })
}

/// `in_sync_policy`: cfapi's CF_INSYNC_POLICY names without the prefix, lower case.
fn in_sync_policy(names: &[String]) -> Result<InSyncPolicy, String> {
    names.iter().try_fold(InSyncPolicy::NONE, |policy, name| {
        let bit = match name.as_str() {
            "none" => InSyncPolicy::NONE,
            "track_file_creation_time" => InSyncPolicy::TRACK_FILE_CREATION_TIME,
            "track_file_readonly_attribute" => InSyncPolicy::TRACK_FILE_READONLY_ATTRIBUTE,
            "track_file_hidden_attribute" => InSyncPolicy::TRACK_FILE_HIDDEN_ATTRIBUTE,
            "track_file_system_attribute" => InSyncPolicy::TRACK_FILE_SYSTEM_ATTRIBUTE,
            "track_directory_creation_time" => InSyncPolicy::TRACK_DIRECTORY_CREATION_TIME,
            "track_directory_readonly_attribute" => {
                InSyncPolicy::TRACK_DIRECTORY_READONLY_ATTRIBUTE
            }
            "track_directory_hidden_attribute" => InSyncPolicy::TRACK_DIRECTORY_HIDDEN_ATTRIBUTE,
            "track_directory_system_attribute" => InSyncPolicy::TRACK_DIRECTORY_SYSTEM_ATTRIBUTE,
            "track_file_last_write_time" => InSyncPolicy::TRACK_FILE_LAST_WRITE_TIME,
            "track_directory_last_write_time" => InSyncPolicy::TRACK_DIRECTORY_LAST_WRITE_TIME,
            "track_file_all" => InSyncPolicy::TRACK_FILE_ALL,
            "track_directory_all" => InSyncPolicy::TRACK_DIRECTORY_ALL,
            "track_all" => InSyncPolicy::TRACK_ALL,
            "preserve_insync_for_sync_engine" => InSyncPolicy::PRESERVE_INSYNC_FOR_SYNC_ENGINE,
            other => {
                return Err(format!(
                    "in_sync_policy {other:?} is not a CF_INSYNC_POLICY name"
                ));
            }
        };
        Ok(policy.union(bit))
    })
}

fn population(text: &str) -> Result<PopulationPolicy, String> {
    Ok(match text {
        "full" => PopulationPolicy::Full,
        "always_full" => PopulationPolicy::AlwaysFull,
        other => return Err(format!("population {other:?} is not full or always_full")),
    })
}

/// The `modifiers` of a `[[provider]]`.
fn modifiers(names: &[String]) -> Result<HydrationModifiers, String> {
    let mut bits = HydrationModifiers::NONE;
    for name in names {
        bits = bits.union(match name.as_str() {
            "validation_required" => HydrationModifiers::VALIDATION_REQUIRED,
            "streaming_allowed" => HydrationModifiers::STREAMING_ALLOWED,
            "auto_dehydration_allowed" => HydrationModifiers::AUTO_DEHYDRATION_ALLOWED,
            other => {
                return Err(format!(
                    "modifier {other:?} is not validation_required, streaming_allowed or \
                     auto_dehydration_allowed"
                ));
            }
        });
    }
    Ok(bits)
}

/// The format's `hard_links`: `default` (none in the sync root) or `allowed`.
fn hard_links(text: Option<&str>) -> Result<HardLinkPolicy, String> {
    Ok(match text.unwrap_or("default") {
        "default" => HardLinkPolicy::NONE,
        "allowed" => HardLinkPolicy::ALLOWED,
        other => return Err(format!("hard_links {other:?} is not default or allowed")),
    })
}

/// The format's `notify` names: each asks for its notification and its completion.
fn notifications(names: &[String]) -> Result<NotifySet, String> {
    let mut set = NotifySet::NONE;
    for name in names {
        set = set.union(match name.as_str() {
            "delete" => NotifySet::DELETE.union(NotifySet::DELETE_COMPLETION),
            "rename" => NotifySet::RENAME.union(NotifySet::RENAME_COMPLETION),
            "dehydrate" => NotifySet::DEHYDRATE.union(NotifySet::DEHYDRATE_COMPLETION),
            "open" => NotifySet::OPEN_COMPLETION,
            "close" => NotifySet::CLOSE_COMPLETION,
            other => {
                return Err(format!(
                    "notify {other:?} is not delete, rename, dehydrate, open or close"
                ));
            }
        });
    }
    Ok(set)
}

/// The format's `management` names: who besides the provider may manage placeholders.
fn management(names: &[String]) -> Result<ManagementPolicy, String> {
    let mut bits = ManagementPolicy::DEFAULT;
    for name in names {
        bits = bits.union(match name.as_str() {
            "create" => ManagementPolicy::CREATE_UNRESTRICTED,
            "convert" => ManagementPolicy::CONVERT_TO_UNRESTRICTED,
            "update" => ManagementPolicy::UPDATE_UNRESTRICTED,
            other => {
                return Err(format!(
                    "management {other:?} is not create, convert or update"
                ));
            }
        });
    }
    Ok(bits)
}

/// How a provider answers a request it may allow or refuse (`on_validate`, and the
/// notifications' `on_delete`, `on_rename`, `on_dehydrate`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    /// `allow`.
    Allow,
    /// `deny:STATUS`.
    Deny(NTSTATUS),
    /// `delay:MS`, then allow.
    Delay(Duration),
    /// `hang`: never answers.
    Hang,
}

impl Answer {
    pub(crate) fn parse(field: &str, text: Option<&str>) -> Result<Self, String> {
        let Some(text) = text else {
            return Ok(Self::Allow);
        };
        match text.split_once(':') {
            None if text == "allow" => Ok(Self::Allow),
            None if text == "hang" => Ok(Self::Hang),
            Some(("delay", ms)) => ms
                .replace('_', "")
                .parse::<u64>()
                .map(|ms| Self::Delay(Duration::from_millis(ms)))
                .map_err(|_| format!("{field} {text:?}: {ms:?} is not a number")),
            Some(("deny", name)) => match ntstatus::value(name) {
                Some(status) if status < 0 => Ok(Self::Deny(status)),
                Some(_) => Err(format!("{field} {text:?}: {name} is not a failure status")),
                None => Err(format!("{field} {text:?}: unknown status {name}")),
            },
            _ => Err(format!(
                "{field} {text:?} is not allow, deny:STATUS, delay:MS or hang"
            )),
        }
    }
}

/// What a provider saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct ProviderStats {
    pub fetches: u64,
    pub bytes_served: u64,
    pub cancels: u64,
    pub validations: u64,
    /// NOTIFY_DELETE received (one per delete or undelete asked about).
    pub deletes: u64,
    /// NOTIFY_RENAME received (one per rename asked about).
    pub renames: u64,
    /// NOTIFY_DEHYDRATE received (one per dehydration someone else asked for).
    pub dehydrates: u64,
    /// NOTIFY_FILE_OPEN_COMPLETION received.
    pub opens: u64,
    /// NOTIFY_FILE_CLOSE_COMPLETION received.
    pub closes: u64,
    /// FETCH_PLACEHOLDERS received.
    pub populations: u64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The NTSTATUS a failed library call stands for. A port HRESULT that carries a Win32
/// error (`HRESULT_FROM_WIN32(RtlNtStatusToDosError(status))`) is mapped back to the first
/// status the model's table gives that error for, so that, say, connecting with no driver
/// loaded reads STATUS_OBJECT_NAME_NOT_FOUND rather than the library's catch-all.
pub(crate) fn status_of(error: &Error) -> NTSTATUS {
    if let Error::Port { hresult, .. } = error {
        let raw = *hresult as u32;
        if raw & 0xffff_0000 == 0x8007_0000 {
            let code = raw & 0xffff;
            if let Some((_, status)) = ntstatus::NAMES
                .iter()
                .find(|(_, s)| *s < 0 && fltlib::win32_from_nt(*s) == code)
            {
                return *status;
            }
        }
    }
    error.status()
}

/// One process of a provider.
struct Life {
    pid: u32,
    alive: AtomicBool,
    /// Transfers a `hang` provider keeps without answering.
    hung: Mutex<Vec<Transfer>>,
    /// Validations an `on_validate = "hang"` provider keeps without answering.
    hung_validations: Mutex<Vec<Validation>>,
    /// Notifications an `on_… = "hang"` provider keeps without answering.
    hung_acks: Mutex<Vec<Ack>>,
    /// Populations a `hang` provider keeps without answering.
    hung_populations: Mutex<Vec<Population>>,
    /// Bytes served by this process under `crash_after`; held while serving, so that
    /// concurrent fetches count one after the other.
    served: Mutex<u64>,
}

impl Life {
    fn new(pid: u32) -> Arc<Self> {
        Arc::new(Self {
            pid,
            alive: AtomicBool::new(true),
            hung: Mutex::new(Vec::new()),
            hung_validations: Mutex::new(Vec::new()),
            hung_acks: Mutex::new(Vec::new()),
            hung_populations: Mutex::new(Vec::new()),
            served: Mutex::new(0),
        })
    }

    fn alive(&self) -> bool {
        self.alive.load(Ordering::SeqCst)
    }

    /// Ends a transfer as this process can: dropped (FETCH_FAILED if unanswered) while it
    /// lives, forgotten once it is dead.
    fn release(&self, transfer: Transfer) {
        if self.alive() {
            drop(transfer);
        } else {
            std::mem::forget(transfer);
        }
    }
}

/// The current process of a provider and its connections (the newest last).
struct Live {
    life: Arc<Life>,
    connections: Vec<Arc<Connection>>,
}

/// What a provider's callbacks share with the runner.
struct Inner {
    name: String,
    behaviour: Behaviour,
    on_validate: Answer,
    /// The notifications asked for at connect (`notify`).
    notifications: NotifySet,
    on_delete: Answer,
    on_rename: Answer,
    on_dehydrate: Answer,
    remote: Arc<RemoteRoot>,
    fetches: AtomicU64,
    validations: AtomicU64,
    deletes: AtomicU64,
    renames: AtomicU64,
    dehydrates: AtomicU64,
    opens: AtomicU64,
    closes: AtomicU64,
    populations: AtomicU64,
    bytes_served: AtomicU64,
    cancels: AtomicU64,
    live: Mutex<Live>,
    /// Callbacks running now, over every process of the provider.
    running: Mutex<usize>,
    idle: Condvar,
}

/// Counts a running callback until dropped.
struct Running<'a>(&'a Inner);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        let mut n = lock(&self.0.running);
        *n -= 1;
        if *n == 0 {
            self.0.idle.notify_all();
        }
    }
}

impl Inner {
    fn running(&self) -> Running<'_> {
        *lock(&self.running) += 1;
        Running(self)
    }

    /// The remote bytes a fetch asks for: by identity, else by path.
    fn content(&self, request: &FetchRequest) -> Option<Arc<[u8]>> {
        let by = |name: &str| self.remote.get(name).map(|(_, bytes)| bytes);
        std::str::from_utf8(&request.identity)
            .ok()
            .and_then(by)
            .or_else(|| by(&request.path))
    }

    /// The provider process dies abruptly, as `Machine::kill_process` does it: its
    /// waits in the kernel end, its I/O is cancelled, every handle it holds is closed
    /// (its port disconnects). The transfers it kept and its connections are forgotten:
    /// a dead process runs no destructor. False if it was already dead.
    fn kill(&self) -> bool {
        let (life, connections) = {
            let mut live = lock(&self.live);
            let connections = std::mem::take(&mut live.connections);
            (live.life.clone(), connections)
        };
        if !life.alive.swap(false, Ordering::SeqCst) {
            return false;
        }
        kill_process(life.pid);
        for transfer in lock(&life.hung).drain(..) {
            std::mem::forget(transfer);
        }
        for validation in lock(&life.hung_validations).drain(..) {
            std::mem::forget(validation);
        }
        for ack in lock(&life.hung_acks).drain(..) {
            std::mem::forget(ack);
        }
        for population in lock(&life.hung_populations).drain(..) {
            std::mem::forget(population);
        }
        for connection in connections {
            // The message loop ends once its FilterGetMessage fails on the closed port;
            // waiting for it keeps its last calls inside this machine.
            connection.wait_closed(EXIT_WAIT);
            std::mem::forget(connection);
        }
        true
    }
}

/// `Machine::kill_process` for a thread that has no `Machine` at hand (a provider's own
/// callback crashing it, or a step on a `parallel` thread): the same three steps.
fn kill_process(pid: u32) {
    with_kernel(|k| {
        if let Some(p) = k.processes.get_mut(pid) {
            p.alive = false;
        }
    });
    crate::model::port::process_terminated(pid);
    crate::model::files::cancel_process_io(pid);
    fltlib::close_process_handles(pid);
}

/// `Machine::spawn_process` for the same reason: a provider process (elevated or the
/// standard user's, default compatibility mode) running `image`.
fn spawn_process(image: &str, elevated: bool) -> u32 {
    with_kernel(|k| {
        k.processes
            .spawn(image.to_owned(), PHCM_APPLICATION_DEFAULT, elevated)
    })
}

/// The [`SyncProvider`] of one provider process.
struct Handler {
    inner: Arc<Inner>,
    life: Arc<Life>,
}

impl SyncProvider for Handler {
    fn notifications(&self) -> NotifySet {
        self.inner.notifications
    }

    /// `on_delete`: counted, then answered as the field says.
    fn notify_delete(&self, delete: DeleteNotification, ack: Ack) {
        let _ = delete;
        let _running = self.inner.running();
        if !self.life.alive() {
            std::mem::forget(ack);
            return;
        }
        self.inner.deletes.fetch_add(1, Ordering::SeqCst);
        self.answer(self.inner.on_delete, ack);
    }

    /// `on_rename`: counted, then answered as the field says.
    fn notify_rename(&self, rename: RenameNotification, ack: Ack) {
        let _ = rename;
        let _running = self.inner.running();
        if !self.life.alive() {
            std::mem::forget(ack);
            return;
        }
        self.inner.renames.fetch_add(1, Ordering::SeqCst);
        self.answer(self.inner.on_rename, ack);
    }

    fn file_opened(&self, open: OpenCompletion) {
        let _ = open;
        if self.life.alive() {
            self.inner.opens.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn file_closed(&self, close: CloseCompletion) {
        let _ = close;
        if self.life.alive() {
            self.inner.closes.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// `on_dehydrate`: counted, then answered as the field says.
    fn notify_dehydrate(&self, dehydrate: DehydrateNotification, ack: Ack) {
        let _ = dehydrate;
        let _running = self.inner.running();
        if !self.life.alive() {
            std::mem::forget(ack);
            return;
        }
        self.inner.dehydrates.fetch_add(1, Ordering::SeqCst);
        self.answer(self.inner.on_dehydrate, ack);
    }

    fn fetch_data(&self, request: FetchRequest, transfer: Transfer) {
        let _running = self.inner.running();
        if !self.life.alive() {
            std::mem::forget(transfer);
            return;
        }
        self.inner.fetches.fetch_add(1, Ordering::SeqCst);
        match self.inner.behaviour {
            Behaviour::Normal => self.serve(&request, transfer, None),
            Behaviour::Delay(delay) => {
                std::thread::sleep(delay);
                self.serve(&request, transfer, None);
            }
            Behaviour::Fail(status) => {
                // A refusal (the fetch was cancelled meanwhile) changes nothing.
                let _ = transfer.fail(Error::from_status(status));
            }
            Behaviour::CrashAfter(limit) => {
                let mut served = lock(&self.life.served);
                self.serve(&request, transfer, Some((&mut served, limit)));
            }
            Behaviour::Hang => {
                // `kill` clears alive before it takes this lock to forget them.
                let mut hung = lock(&self.life.hung);
                if self.life.alive() {
                    hung.push(transfer);
                } else {
                    std::mem::forget(transfer);
                }
            }
        }
    }

    fn cancel_fetch(&self, _cancel: CancelFetch) {
        let _running = self.inner.running();
        if self.life.alive() {
            self.inner.cancels.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// A population: answered from the remote listing of the directory as `behaviour`
    /// says (`crash_after` counts fetched bytes; a population transfers none, so the
    /// process dies on it only once its budget is spent, `crash_after:0` at once).
    fn fetch_placeholders(&self, request: PopulationRequest, population: Population) {
        let _running = self.inner.running();
        if !self.life.alive() {
            std::mem::forget(population);
            return;
        }
        self.inner.populations.fetch_add(1, Ordering::SeqCst);
        match self.inner.behaviour {
            Behaviour::Normal => self.populate(&request, population),
            Behaviour::Delay(delay) => {
                std::thread::sleep(delay);
                self.populate(&request, population);
            }
            Behaviour::Fail(status) => {
                let _ = population.fail(Error::from_status(status));
            }
            Behaviour::CrashAfter(limit) => {
                let served = lock(&self.life.served);
                if *served >= limit {
                    drop(served);
                    std::mem::forget(population);
                    self.inner.kill();
                } else {
                    drop(served);
                    self.populate(&request, population);
                }
            }
            Behaviour::Hang => {
                let mut hung = lock(&self.life.hung_populations);
                if self.life.alive() {
                    hung.push(population);
                } else {
                    std::mem::forget(population);
                }
            }
        }
    }

    fn cancel_fetch_placeholders(&self, _cancel: CancelPopulation) {
        let _running = self.inner.running();
        if self.life.alive() {
            self.inner.cancels.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// `on_validate`: reads the data back (RETRIEVE_DATA) and acknowledges it, after
    /// `delay`; refuses it with `deny`; keeps it unanswered with `hang`. Data that does
    /// not read back whole is refused, as a provider comparing it would.
    fn validate_data(&self, request: ValidationRequest, validation: Validation) {
        let _running = self.inner.running();
        if !self.life.alive() {
            std::mem::forget(validation);
            return;
        }
        self.inner.validations.fetch_add(1, Ordering::SeqCst);
        let range = request.range.clone();
        match self.inner.on_validate {
            Answer::Deny(status) => {
                let _ = validation.refuse(range, Error::from_status(status));
                return;
            }
            Answer::Hang => {
                let mut hung = lock(&self.life.hung_validations);
                if self.life.alive() {
                    hung.push(validation);
                } else {
                    std::mem::forget(validation);
                }
                return;
            }
            Answer::Delay(delay) => std::thread::sleep(delay),
            Answer::Allow => {}
        }
        if !self.life.alive() {
            std::mem::forget(validation);
            return;
        }
        match validation.read(range.clone()) {
            Ok(bytes) if bytes.len() as u64 == range.end - range.start => {
                let _ = validation.acknowledge(range);
            }
            _ => {
                let _ = validation.refuse(range, Error::ValidationFailed);
            }
        }
    }
}

impl Handler {
    /// Answers a notification as `answer` says: allow, refuse with its status, allow
    /// after a delay, or keep the ack unanswered until the process ends.
    fn answer(&self, answer: Answer, ack: Ack) {
        match answer {
            Answer::Allow => {
                let _ = ack.allow();
            }
            Answer::Deny(status) => {
                let _ = ack.refuse(Error::from_status(status));
            }
            Answer::Delay(delay) => {
                std::thread::sleep(delay);
                if self.life.alive() {
                    let _ = ack.allow();
                } else {
                    std::mem::forget(ack);
                }
            }
            Answer::Hang => {
                let mut hung = lock(&self.life.hung_acks);
                if self.life.alive() {
                    hung.push(ack);
                } else {
                    std::mem::forget(ack);
                }
            }
        }
    }
    /// Answers a fetch with the remote content (see the module comment); `budget` is the
    /// process's served count and its `crash_after` limit.
    fn serve(
        &self,
        request: &FetchRequest,
        mut transfer: Transfer,
        mut budget: Option<(&mut u64, u64)>,
    ) {
        let size = request.file_size;
        let start = request.required.start / TRANSFER_ALIGNMENT * TRANSFER_ALIGNMENT;
        let end = request
            .required
            .end
            .div_ceil(TRANSFER_ALIGNMENT)
            .saturating_mul(TRANSFER_ALIGNMENT)
            .min(size);
        let content = match self.inner.content(request) {
            Some(c) if c.len() as u64 >= end => c,
            _ => {
                if self.life.alive() {
                    let _ = transfer.fail(Error::Unsuccessful);
                } else {
                    std::mem::forget(transfer);
                }
                return;
            }
        };
        let mut at = start;
        while at < end {
            let mut length = PIECE.min(end - at);
            if let Some((served, limit)) = &budget {
                let left = limit.saturating_sub(**served);
                if left < length {
                    length = if at + left == size {
                        left
                    } else {
                        left / TRANSFER_ALIGNMENT * TRANSFER_ALIGNMENT
                    };
                }
                if length == 0 {
                    self.crash(transfer);
                    return;
                }
            }
            if !self.life.alive() {
                std::mem::forget(transfer);
                return;
            }
            let piece = &content[at as usize..(at + length) as usize];
            // Counted before it is sent: the driver may complete the waiting read inside
            // the send, and a step right after that read must see the bytes.
            self.inner.bytes_served.fetch_add(length, Ordering::SeqCst);
            if transfer.write(at, piece).is_err() {
                // The driver refused it (cancelled, timed out, gone): nothing more to send.
                self.inner.bytes_served.fetch_sub(length, Ordering::SeqCst);
                break;
            }
            if let Some((served, limit)) = &mut budget {
                **served += length;
                if **served >= *limit {
                    self.crash(transfer);
                    return;
                }
            }
            at += length;
        }
        self.life.release(transfer);
    }

    /// Answers a population with the remote listing of its directory, in batches of
    /// [`POPULATION_BATCH`]: files as in-sync placeholders of their remote size,
    /// directories as in-sync directory placeholders populated on demand in turn, each
    /// identified by its root-relative path; the directory is then complete
    /// (DISABLE_ON_DEMAND_POPULATION). A directory with no remote counterpart completes
    /// empty.
    fn populate(&self, request: &PopulationRequest, mut population: Population) {
        // The directory's identity names its remote directory (its root-relative path
        // when it was made), wherever it has been renamed to since; the root has none.
        let by_identity = std::str::from_utf8(&request.identity)
            .ok()
            .filter(|id| !id.is_empty())
            .map(str::to_string);
        let rel = if let Some(id) = by_identity {
            id
        } else if request.path_is_full {
            request
                .path
                .split_once(&*self.inner.remote.sync_root)
                .map_or(String::new(), |(_, r)| r.trim_matches('\\').to_string())
        } else {
            request.path.clone()
        };
        let entries: Vec<PlaceholderSpec> = self
            .inner
            .remote
            .listing(&rel)
            .into_iter()
            .map(|(name, size)| {
                let path = if rel.is_empty() {
                    name.clone()
                } else {
                    format!("{rel}\\{name}")
                };
                let spec = match size {
                    Some(size) => PlaceholderSpec::file(name, size),
                    None => PlaceholderSpec::directory(name).on_demand(true),
                };
                spec.identity(path.into_bytes()).in_sync(true)
            })
            .collect();
        population.disable_on_demand_population(true);
        let total = entries.len() as u64;
        if entries.is_empty() {
            let _ = population.send(&[], 0);
        }
        for batch in entries.chunks(POPULATION_BATCH) {
            if !self.life.alive() {
                std::mem::forget(population);
                return;
            }
            if population.send(batch, total).is_err() {
                // Refused (cancelled, timed out): nothing more to send.
                break;
            }
        }
        if self.life.alive() {
            drop(population);
        } else {
            std::mem::forget(population);
        }
    }

    /// `crash_after`: this process dies now, from its own thread.
    fn crash(&self, transfer: Transfer) {
        std::mem::forget(transfer);
        self.inner.kill();
    }
}

/// One `[[provider]]`.
pub(crate) struct Provider {
    name: String,
    /// Image path, NT form.
    image: String,
    sync_root: String,
    hydration: HydrationPolicy,
    population: PopulationPolicy,
    in_sync: InSyncPolicy,
    modifiers: HydrationModifiers,
    management: ManagementPolicy,
    hard_links: HardLinkPolicy,
    timeout: Duration,
    /// Whether its processes run elevated (`elevated = false`: the standard user).
    elevated: bool,
    inner: Arc<Inner>,
    /// Per file (root-relative, lower case), the change counter the driver last reported
    /// to this provider.
    changes: Mutex<HashMap<String, u64>>,
}

/// What an `update` step asks for besides the remote copy's size.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct UpdateStep {
    pub dehydrate: bool,
    pub mark_in_sync: bool,
    pub clear_in_sync: bool,
    pub if_unchanged: bool,
}

impl Provider {
    /// A provider whose first process is `pid`, serving `remote`.
    pub(crate) fn new(
        spec: &ProviderSpec,
        image: String,
        pid: u32,
        remote: Arc<RemoteRoot>,
    ) -> Result<Self, String> {
        let what = |e: String| format!("provider {:?}: {e}", spec.name);
        Ok(Self {
            name: spec.name.clone(),
            image,
            sync_root: spec.sync_root.clone(),
            hydration: hydration(&spec.hydration).map_err(what)?,
            population: population(&spec.population).map_err(what)?,
            in_sync: in_sync_policy(&spec.in_sync_policy).map_err(what)?,
            modifiers: modifiers(&spec.modifiers).map_err(what)?,
            management: management(&spec.management).map_err(what)?,
            hard_links: hard_links(spec.hard_links.as_deref()).map_err(what)?,
            timeout: Duration::from_millis(spec.timeout_ms),
            elevated: spec.elevated != Some(false),
            inner: Arc::new(Inner {
                name: spec.name.clone(),
                behaviour: Behaviour::parse(&spec.behaviour).map_err(what)?,
                on_validate: Answer::parse("on_validate", spec.on_validate.as_deref())
                    .map_err(what)?,
                notifications: notifications(&spec.notify).map_err(what)?,
                on_delete: Answer::parse("on_delete", spec.on_delete.as_deref()).map_err(what)?,
                on_rename: Answer::parse("on_rename", spec.on_rename.as_deref()).map_err(what)?,
                on_dehydrate: Answer::parse("on_dehydrate", spec.on_dehydrate.as_deref())
                    .map_err(what)?,
                remote,
                fetches: AtomicU64::new(0),
                validations: AtomicU64::new(0),
                deletes: AtomicU64::new(0),
                renames: AtomicU64::new(0),
                dehydrates: AtomicU64::new(0),
                opens: AtomicU64::new(0),
                closes: AtomicU64::new(0),
                populations: AtomicU64::new(0),
                bytes_served: AtomicU64::new(0),
                cancels: AtomicU64::new(0),
                live: Mutex::new(Live {
                    life: Life::new(pid),
                    connections: Vec::new(),
                }),
                running: Mutex::new(0),
                idle: Condvar::new(),
            }),
            changes: Mutex::new(HashMap::new()),
        })
    }

    /// The change counter the driver last reported for `rel` (0 if it never did).
    pub(crate) fn last_changes(&self, rel: &str) -> u64 {
        lock(&self.changes)
            .get(&rel.to_lowercase())
            .copied()
            .unwrap_or(0)
    }

    /// Keeps the change counter an answer about `rel` carried; the answer's status.
    fn remember(&self, rel: &str, result: Result<PlaceholderInfo, Error>) -> NTSTATUS {
        match result {
            Ok(info) => {
                lock(&self.changes).insert(rel.to_lowercase(), info.changes);
                STATUS_SUCCESS
            }
            Err(e) => status_of(&e),
        }
    }

    /// The provider's name.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// The provider's current process, if it is running.
    pub(crate) fn pid(&self) -> Result<u32, String> {
        let live = lock(&self.inner.live);
        if live.life.alive() {
            Ok(live.life.pid)
        } else {
            Err(format!(
                "provider {:?}'s process is dead (killed or crashed); `connect` starts a new one",
                self.name
            ))
        }
    }

    /// What the provider saw.
    pub(crate) fn stats(&self) -> ProviderStats {
        // Completions (opens, closes) are counted once their callbacks ran: the driver
        // sends them without waiting, so they reach their worker just after the
        // operation that caused them returned (delivered as the closing thread returns,
        // handed to a worker a moment later). A short settle lets a message just
        // delivered reach its worker, then those workers finish. Fetches, cancellations
        // and the blocking notifications are read as they are.
        let connections = lock(&self.inner.live).connections.clone();
        if !connections.is_empty() {
            std::thread::sleep(DELIVERY_SETTLE);
        }
        for connection in connections {
            connection.wait_for_completions(CALLBACKS_WAIT);
        }
        ProviderStats {
            fetches: self.inner.fetches.load(Ordering::SeqCst),
            bytes_served: self.inner.bytes_served.load(Ordering::SeqCst),
            cancels: self.inner.cancels.load(Ordering::SeqCst),
            validations: self.inner.validations.load(Ordering::SeqCst),
            deletes: self.inner.deletes.load(Ordering::SeqCst),
            renames: self.inner.renames.load(Ordering::SeqCst),
            dehydrates: self.inner.dehydrates.load(Ordering::SeqCst),
            opens: self.inner.opens.load(Ordering::SeqCst),
            closes: self.inner.closes.load(Ordering::SeqCst),
            populations: self.inner.populations.load(Ordering::SeqCst),
        }
    }

    fn config(&self) -> SyncRootConfig {
        SyncRootConfig::new(&self.sync_root, &self.name, VERSION)
            .hydration(self.hydration)
            .population(self.population)
            .in_sync(self.in_sync)
            .modifiers(self.modifiers)
            .management(self.management)
            .hard_links(self.hard_links)
            .timeout(self.timeout)
    }

    /// What `register` records, and `connect` on a root not registered yet.
    fn registration(&self) -> SyncRootRegistration {
        SyncRootRegistration::new(&self.sync_root, &self.name, VERSION)
            .hydration(self.hydration)
            .population(self.population)
            .in_sync(self.in_sync)
            .modifiers(self.modifiers)
            .management(self.management)
            .hard_links(self.hard_links)
    }

    /// The running process, or a new one of the same identity after `kill`.
    fn life(&self) -> Arc<Life> {
        let mut live = lock(&self.inner.live);
        if !live.life.alive() {
            live.life = Life::new(spawn_process(&self.image, self.elevated));
        }
        live.life.clone()
    }

    /// `register`: CfRegisterSyncRoot from the provider's process with `flags` (the
    /// format's names).
    pub(crate) fn register(&self, flags: &[String]) -> Result<NTSTATUS, String> {
        let mut bits = RegisterFlags::NONE;
        for flag in flags {
            bits = bits.union(match flag.as_str() {
                "update" => RegisterFlags::UPDATE,
                "disable_on_demand_population_on_root" => {
                    RegisterFlags::DISABLE_ON_DEMAND_POPULATION_ON_ROOT
                }
                "mark_in_sync_on_root" => RegisterFlags::MARK_IN_SYNC_ON_ROOT,
                other => return Err(format!("unknown register flag {other:?}")),
            });
        }
        let life = self.life();
        let registration = self.registration();
        Ok(
            match process::run_as(life.pid, || SyncRoot::register(&registration, bits)) {
                Ok(()) => STATUS_SUCCESS,
                Err(e) => status_of(&e),
            },
        )
    }

    /// `unregister`: CfUnregisterSyncRoot from the provider's process.
    pub(crate) fn unregister(&self) -> NTSTATUS {
        let life = self.life();
        match process::run_as(life.pid, || SyncRoot::unregister(&self.sync_root)) {
            Ok(()) => STATUS_SUCCESS,
            Err(e) => status_of(&e),
        }
    }

    /// `connect`: from the running process, or after `kill` from a new process of the
    /// same identity. On a root not registered yet the driver registers it first from the
    /// connection (the provider's name, id and policies), as the format says.
    pub(crate) fn connect(&self) -> NTSTATUS {
        let life = self.life();

        let handler = Handler {
            inner: self.inner.clone(),
            life: life.clone(),
        };
        let config = self.config();
        match process::run_as(life.pid, || SyncRoot::connect(config, handler)) {
            Ok(connection) => {
                lock(&self.inner.live)
                    .connections
                    .push(Arc::new(connection));
                STATUS_SUCCESS
            }
            Err(e) => status_of(&e),
        }
    }

    /// `disconnect`: every connection of the running process, in order.
    pub(crate) fn disconnect(&self) -> Result<NTSTATUS, String> {
        let (life, connections) = {
            let mut live = lock(&self.inner.live);
            (live.life.clone(), std::mem::take(&mut live.connections))
        };
        if connections.is_empty() {
            return Err(format!("provider {:?} is not connected", self.name));
        }
        let mut status = STATUS_SUCCESS;
        for connection in connections {
            if let Err(e) = close(&life, connection) {
                status = status_of(&e);
            }
        }
        Ok(status)
    }

    /// `kill`.
    pub(crate) fn kill(&self) -> Result<NTSTATUS, String> {
        if self.inner.kill() {
            Ok(STATUS_SUCCESS)
        } else {
            Err(format!(
                "provider {:?}'s process is already dead",
                self.name
            ))
        }
    }

    /// Runs `f` with the newest connection on a thread of the provider's process.
    fn with_connection(&self, f: impl FnOnce(&Connection) -> NTSTATUS) -> Result<NTSTATUS, String> {
        let (connection, pid) = {
            let live = lock(&self.inner.live);
            match live.connections.last() {
                Some(c) if live.life.alive() => (c.clone(), live.life.pid),
                _ => return Err(format!("provider {:?} is not connected", self.name)),
            }
        };
        // The clone is dropped in the process too: if `disconnect` waits for it, the
        // last reference may be this one.
        Ok(process::run_as(pid, move || {
            let status = f(&connection);
            drop(connection);
            status
        }))
    }

    /// The root-relative form of `path`: a DOS path under the sync root, or already
    /// relative (`/` or `\` separated).
    pub(crate) fn relative(&self, path: &str) -> Result<String, String> {
        let path = path.replace('/', "\\");
        if !path.contains(':') {
            return Ok(path.trim_matches('\\').to_string());
        }
        let root = format!("{}\\", self.sync_root.trim_end_matches('\\'));
        match path.get(..root.len()) {
            Some(head) if head.eq_ignore_ascii_case(&root) => Ok(path[root.len()..].to_string()),
            _ => Err(format!(
                "{path} is not under provider {:?}'s sync root {}",
                self.name, self.sync_root
            )),
        }
    }

    /// `remote_write`: the cloud copy of `path` (under the sync root, or root-relative)
    /// becomes `bytes`; fetches answered from now on serve them.
    pub(crate) fn remote_write(&self, path: &str, bytes: Vec<u8>) -> Result<(), String> {
        let rel = self.relative(path)?;
        if rel.is_empty() {
            return Err(format!("{path} is the sync root itself, not a file"));
        }
        self.inner.remote.put(&rel, bytes);
        Ok(())
    }

    /// `remote_delete`: the cloud copy of `path` (under the sync root, or root-relative)
    /// is removed; fetches of it fail from now on (STATUS_CLOUD_FILE_UNSUCCESSFUL, as for
    /// any content the provider does not have). Nothing local changes.
    pub(crate) fn remote_delete(&self, path: &str) -> Result<(), String> {
        let rel = self.relative(path)?;
        if self.inner.remote.remove(&rel) {
            Ok(())
        } else {
            Err(format!(
                "{path} is not a remote file of provider {:?}",
                self.name
            ))
        }
    }

    /// The provider's process ends with the machine (`reboot`): as `kill`, if it runs.
    pub(crate) fn end_process(&self) {
        self.inner.kill();
    }

    /// `create_placeholders`: directory placeholders for the parents first, then one
    /// in-sync placeholder per remote file (and remote directory), its identity the
    /// root-relative path. An existing directory placeholder is fine; the step's status is
    /// the first other failure.
    ///
    /// With `populate` (the format's default) the root and every directory created are
    /// marked populated, so nothing is asked for later; without it only the listed paths
    /// (and their parents) are created, every directory among them not populated, and the
    /// root's state is left as it is.
    pub(crate) fn create_placeholders(
        &self,
        paths: Option<&[String]>,
        populate: bool,
    ) -> Result<NTSTATUS, String> {
        // (path, size): `None` for a directory.
        let wanted: Vec<(String, Option<u64>)> = match paths {
            None => {
                let mut all: Vec<(String, Option<u64>)> = self
                    .inner
                    .remote
                    .files()
                    .into_iter()
                    .map(|(rel, bytes)| (rel, Some(bytes.len() as u64)))
                    .collect();
                all.extend(self.inner.remote.dirs().into_iter().map(|d| (d, None)));
                all
            }
            Some(paths) => paths
                .iter()
                .map(|p| {
                    let rel = self.relative(p)?;
                    if let Some((rel, bytes)) = self.inner.remote.get(&rel) {
                        return Ok((rel, Some(bytes.len() as u64)));
                    }
                    if !rel.is_empty() && self.inner.remote.is_dir(&rel) {
                        return Ok((rel, None));
                    }
                    Err(format!(
                        "{p} is not a remote file or directory of provider {:?}",
                        self.name
                    ))
                })
                .collect::<Result<_, _>>()?,
        };
        let directory = |dir: &str| {
            PlaceholderSpec::directory(dir.to_string())
                .identity(dir.as_bytes().to_vec())
                .in_sync(true)
                .on_demand(!populate)
        };
        let mut specs = Vec::new();
        let mut directories: Vec<String> = Vec::new();
        for (rel, size) in wanted {
            let parts: Vec<&str> = rel.split('\\').collect();
            let last = if size.is_some() {
                parts.len()
            } else {
                parts.len() + 1
            };
            for i in 1..last {
                let dir = parts[..i].join("\\");
                if !directories.iter().any(|d| d.eq_ignore_ascii_case(&dir)) {
                    specs.push(directory(&dir));
                    directories.push(dir);
                }
            }
            if let Some(size) = size {
                specs.push(
                    PlaceholderSpec::file(rel.clone(), size)
                        .identity(rel.as_bytes().to_vec())
                        .in_sync(true),
                );
            }
        }
        let mut changes = lock(&self.changes);
        for spec in &specs {
            changes.insert(spec.path.to_lowercase(), 0);
        }
        drop(changes);
        // With `populate`, the root is marked complete; without, its state is left as it
        // is (a root registered without `disable_on_demand_population_on_root` starts not
        // populated; one populated since stays so: creating entries in a directory does
        // not change its own state, as CfCreatePlaceholders does not).
        let mark_root = populate && self.population == PopulationPolicy::Full;
        self.with_connection(|c| {
            let results = c.create_placeholders(&specs);
            let created = specs
                .iter()
                .zip(results)
                .find_map(|(spec, r)| match r {
                    Err(e)
                        if !(spec.is_directory()
                            && status_of(&e) == STATUS_OBJECT_NAME_COLLISION) =>
                    {
                        Some(status_of(&e))
                    }
                    _ => None,
                })
                .unwrap_or(STATUS_SUCCESS);
            let marked = if mark_root {
                c.set_populated("", true)
                    .map_or_else(|e| status_of(&e), |()| STATUS_SUCCESS)
            } else {
                STATUS_SUCCESS
            };
            if created == STATUS_SUCCESS {
                marked
            } else {
                created
            }
        })
    }

    /// `convert`: the file becomes an in-sync placeholder (its data kept), its identity
    /// the root-relative path.
    pub(crate) fn convert(&self, path: &str) -> Result<NTSTATUS, String> {
        let rel = self.relative(path)?;
        let options = ConvertOptions {
            in_sync: true,
            dehydrate: false,
        };
        self.with_connection(|c| status(c.convert(&rel, rel.as_bytes(), options)))
    }

    /// `hydrate` (`dehydrate` = false) or `dehydrate`: `offset` / `length` as a range,
    /// to the end of file without `length`, the whole file without either.
    pub(crate) fn hydrate_or_dehydrate(
        &self,
        dehydrate: bool,
        path: &str,
        offset: Option<u64>,
        length: Option<u64>,
    ) -> Result<NTSTATUS, String> {
        let rel = self.relative(path)?;
        let start = offset.unwrap_or(0);
        let end = length.map(|l| start.saturating_add(l));
        self.with_connection(|c| match (end, dehydrate) {
            (None, false) => self.remember(&rel, c.hydrate(&rel, start..)),
            (None, true) => status(c.dehydrate(&rel, start..)),
            (Some(end), false) => self.remember(&rel, c.hydrate(&rel, start..end)),
            (Some(end), true) => status(c.dehydrate(&rel, start..end)),
        })
    }

    /// `update`: CfUpdatePlaceholder from the remote copy's current size. The remote
    /// copies carry no times, so the file's own are kept (times of 0).
    pub(crate) fn update(&self, path: &str, step: UpdateStep) -> Result<NTSTATUS, String> {
        let rel = self.relative(path)?;
        let (_, remote) = self.inner.remote.get(&rel).ok_or_else(|| {
            format!(
                "{path} is not a remote file of provider {:?}: `update` takes the remote \
                 copy's size",
                self.name
            )
        })?;
        let mut options = UpdateOptions::new(remote.len() as u64)
            .mark_in_sync(step.mark_in_sync)
            .clear_in_sync(step.clear_in_sync);
        if step.dehydrate {
            options = options.dehydrate(Dehydration::All);
        }
        if step.if_unchanged {
            options = options.if_unchanged(self.last_changes(&rel));
        }
        self.with_connection(|c| self.remember(&rel, c.update(&rel, &options)))
    }

    /// `set_in_sync`: CfSetInSyncState, with the change counter last reported if
    /// `if_unchanged`.
    pub(crate) fn set_in_sync(
        &self,
        path: &str,
        in_sync: bool,
        if_unchanged: bool,
    ) -> Result<NTSTATUS, String> {
        let rel = self.relative(path)?;
        let expected = if_unchanged.then(|| self.last_changes(&rel));
        self.with_connection(|c| self.remember(&rel, c.set_in_sync(&rel, in_sync, expected)))
    }

    /// The process exits at the end of the scenario: its connections disconnect, the
    /// transfers it kept are dropped, and every callback of every process of the provider
    /// has returned before the machine goes away. What went wrong, if anything.
    pub(crate) fn exit(&self) -> Vec<String> {
        let mut problems = Vec::new();
        let (life, connections) = {
            let mut live = lock(&self.inner.live);
            (live.life.clone(), std::mem::take(&mut live.connections))
        };
        if life.alive() {
            for connection in connections {
                if let Err(e) = close(&life, connection) {
                    problems.push(format!(
                        "provider {:?}: disconnecting at exit failed: {e}",
                        self.name
                    ));
                }
            }
            let hung = std::mem::take(&mut *lock(&life.hung));
            process::run_as(life.pid, || drop(hung));
        }
        let deadline = Instant::now() + EXIT_WAIT;
        let mut running = lock(&self.inner.running);
        while *running > 0 {
            let now = Instant::now();
            if now >= deadline {
                problems.push(format!(
                    "provider {:?}: {} callback(s) still running {} s after the scenario ended",
                    self.inner.name,
                    *running,
                    EXIT_WAIT.as_secs()
                ));
                break;
            }
            running = self
                .inner
                .idle
                .wait_timeout(running, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        problems
    }
}

/// Disconnects `connection` on a thread of `life`'s process once no step uses it any
/// more; a connection of a process that died meanwhile is forgotten instead.
fn close(life: &Life, mut connection: Arc<Connection>) -> Result<(), Error> {
    loop {
        if !life.alive() {
            std::mem::forget(connection);
            return Ok(());
        }
        match Arc::try_unwrap(connection) {
            Ok(c) => return process::run_as(life.pid, || c.disconnect()),
            Err(shared) => {
                connection = shared;
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
}

fn status(result: Result<(), Error>) -> NTSTATUS {
    match result {
        Ok(()) => STATUS_SUCCESS,
        Err(e) => status_of(&e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use windows_sys::Win32::Foundation::{
        STATUS_ACCESS_DENIED, STATUS_CLOUD_FILE_NETWORK_UNAVAILABLE,
    };

    #[test]
    fn behaviours_parse_and_bad_ones_say_why() {
        assert_eq!(Behaviour::parse("normal"), Ok(Behaviour::Normal));
        assert_eq!(Behaviour::parse("hang"), Ok(Behaviour::Hang));
        assert_eq!(
            Behaviour::parse("delay:250"),
            Ok(Behaviour::Delay(Duration::from_millis(250)))
        );
        assert_eq!(
            Behaviour::parse("crash_after:262_144"),
            Ok(Behaviour::CrashAfter(262_144))
        );
        assert_eq!(
            Behaviour::parse("fail:STATUS_CLOUD_FILE_NETWORK_UNAVAILABLE"),
            Ok(Behaviour::Fail(STATUS_CLOUD_FILE_NETWORK_UNAVAILABLE))
        );
        assert_eq!(
            Behaviour::parse("fail:STATUS_ACCESS_DENIED"),
            Ok(Behaviour::Fail(STATUS_ACCESS_DENIED))
        );
        for bad in [
            "slow",
            "delay:soon",
            "fail:STATUS_SUCCESS",
            "fail:STATUS_MADE_UP",
            "crash_after:",
        ] {
            assert!(Behaviour::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_port_error_carrying_a_win32_code_reads_as_its_status() {
        // HRESULT_FROM_WIN32(ERROR_FILE_NOT_FOUND): the port does not exist.
        let missing = Error::from_hresult("FilterConnectCommunicationPort", 0x8007_0002_u32 as i32);
        assert_eq!(
            status_of(&missing),
            windows_sys::Win32::Foundation::STATUS_OBJECT_NAME_NOT_FOUND
        );
        assert_eq!(
            status_of(&Error::NetworkUnavailable),
            STATUS_CLOUD_FILE_NETWORK_UNAVAILABLE
        );
    }
}
