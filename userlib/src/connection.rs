//! A provider's connection to the driver: connecting a sync root, the message loop that
//! turns the driver's messages into [`SyncProvider`] callbacks, request/reply round trips,
//! and disconnecting.
//!
//! Threads: one message loop per connection, which only waits, decodes and hands each
//! message to a new worker thread, so a provider that blocks in a callback never stops
//! the loop. Disconnecting signals the loop's stop event, cancels its outstanding
//! FilterGetMessage, waits for it to end, then closes the port (the driver's
//! DisconnectNotify runs). Callbacks still running then find their transfers refused with
//! [`Error::Disconnected`].

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError, RwLock};
use std::time::Duration;

use cloudflt_proto::msg::{KernelMessage, MAX_KERNEL_MESSAGE_LEN, REPLY_HEADER_SIZE, Reply};
use cloudflt_proto::port::PORT_NAME;

use crate::Error;
use crate::config::{self, SyncRootConfig};
use crate::notify::{Ack, Notified};
use crate::populate::{CancelPopulation, Population, PopulationRequest};
use crate::provider::{CancelFetch, FetchRequest, SyncProvider, Transfer, Validation};
use crate::sys::{self, MessageReader, Received};

/// Connects sync roots: the entry point of the library.
///
/// ```no_run
/// use cloudflt::{FetchRequest, SyncProvider, SyncRoot, SyncRootConfig, Transfer};
///
/// struct Provider;
/// impl SyncProvider for Provider {
///     fn fetch_data(&self, request: FetchRequest, transfer: Transfer) {
///         let _ = transfer.fail(cloudflt::Error::NetworkUnavailable);
///     }
/// }
///
/// let config = SyncRootConfig::new(r"C:\Users\me\Cloud", "Example", "1.0");
/// let connection = SyncRoot::connect(config, Provider)?;
/// // ... serve until asked to stop ...
/// connection.disconnect()?;
/// # Ok::<(), cloudflt::Error>(())
/// ```
#[derive(Debug)]
pub struct SyncRoot {
    _not_constructible: (),
}

impl SyncRoot {
    /// Connects `provider` to the driver for the sync root `config` describes and starts
    /// serving its requests.
    ///
    /// The sync root path is turned into NT form (QueryDosDeviceW) and sent with the
    /// provider's name, version, policies and timeout in the connection context. The
    /// driver registers a root not registered yet from `config` (see
    /// [`SyncRootConfig::registration`]); a registered one keeps the policies it was
    /// registered with (`config`'s are not used: change them with
    /// [`SyncRoot::register`] and [`RegisterFlags::UPDATE`](crate::registration::RegisterFlags::UPDATE)). The
    /// driver refuses a root that another provider serves or that overlaps one
    /// ([`Error::AlreadyConnected`]); an unreachable driver is an [`Error::Port`].
    ///
    /// ```no_run
    /// # use cloudflt::*;
    /// # struct P; impl SyncProvider for P { fn fetch_data(&self, _: FetchRequest, _: Transfer) {} }
    /// let config = SyncRootConfig::new(r"D:\Sync", "P", "1").hydration(HydrationPolicy::Full);
    /// match SyncRoot::connect(config, P) {
    ///     Ok(connection) => println!("serving {}", connection.nt_root()),
    ///     Err(Error::AlreadyConnected) => eprintln!("another provider serves D:\\Sync"),
    ///     Err(e) => eprintln!("cannot connect: {e}"),
    /// }
    /// ```
    pub fn connect(
        config: SyncRootConfig,
        provider: impl SyncProvider + Send + Sync + 'static,
    ) -> Result<Connection, Error> {
        let nt_root = config::nt_root(config.path())?;
        let context = config.context(&nt_root, provider.notifications())?;
        let port = sys::connect_port(PORT_NAME, &context)?;
        let reader = MessageReader::new(&port, MAX_KERNEL_MESSAGE_LEN)?;
        let stop = Arc::new(sys::create_event(true)?);
        let shared = Arc::new(Shared {
            port: RwLock::new(Some(port)),
            next_id: AtomicU64::new(1),
            serving: Mutex::new(true),
            stopped: Condvar::new(),
            callbacks: Mutex::new(0),
            callbacks_done: Condvar::new(),
        });
        let provider: Arc<dyn SyncProvider + Send + Sync> = Arc::new(provider);
        let thread = sys::spawn({
            let shared = shared.clone();
            let stop = stop.clone();
            move || message_loop(&shared, reader, &stop, &provider)
        })?;
        Ok(Connection {
            shared,
            stop,
            thread: Some(thread),
            root: config.path().to_path_buf(),
            nt_root,
        })
    }
}

/// A connected sync root. Placeholder management happens through it
/// ([`create_placeholders`](Self::create_placeholders), [`info`](Self::info), ...);
/// dropping it disconnects, like [`disconnect`](Self::disconnect).
///
/// ```no_run
/// # use cloudflt::*;
/// # fn f(connection: Connection) -> Result<(), Error> {
/// println!("{} is {}", connection.root().display(), connection.nt_root());
/// connection.disconnect()
/// # }
/// ```
#[derive(Debug)]
pub struct Connection {
    pub(crate) shared: Arc<Shared>,
    stop: Arc<sys::Handle>,
    thread: Option<sys::Handle>,
    root: PathBuf,
    nt_root: String,
}

impl Connection {
    /// The sync root as configured.
    ///
    /// ```no_run
    /// # fn f(connection: cloudflt::Connection) {
    /// let root = connection.root().to_path_buf();
    /// # }
    /// ```
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The sync root in the NT form the driver knows it by
    /// (`\Device\HarddiskVolume3\Users\me\Cloud`).
    ///
    /// ```no_run
    /// # fn f(connection: cloudflt::Connection) {
    /// assert!(connection.nt_root().starts_with(r"\Device\"));
    /// # }
    /// ```
    pub fn nt_root(&self) -> &str {
        &self.nt_root
    }

    /// Whether the message loop still runs: false once the driver ended the connection
    /// (it unloaded) or [`disconnect`](Self::disconnect) began.
    ///
    /// ```no_run
    /// # fn f(connection: cloudflt::Connection) {
    /// if !connection.is_serving() {
    ///     eprintln!("the driver went away");
    /// }
    /// # }
    /// ```
    pub fn is_serving(&self) -> bool {
        *self
            .shared
            .serving
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits up to `timeout` until every completion notification received so far (file
    /// open and close, and the delete, rename and dehydrate completions: the driver sends
    /// them without waiting, so each reaches its worker just after the operation it
    /// reports returned) has been handled by the provider; whether all have. For a
    /// provider that reads what its callbacks recorded, or finishes before it stops.
    ///
    /// ```no_run
    /// # fn f(connection: cloudflt::Connection) {
    /// if connection.wait_for_completions(std::time::Duration::from_secs(2)) {
    ///     // every completion received so far has been handled
    /// }
    /// # }
    /// ```
    pub fn wait_for_completions(&self, timeout: Duration) -> bool {
        let n = self
            .shared
            .callbacks
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (n, _) = self
            .shared
            .callbacks_done
            .wait_timeout_while(n, timeout, |n| *n > 0)
            .unwrap_or_else(PoisonError::into_inner);
        *n == 0
    }

    /// Waits up to `timeout` for the message loop to end; whether it has.
    ///
    /// ```no_run
    /// # fn f(connection: cloudflt::Connection) {
    /// while !connection.wait_closed(std::time::Duration::from_secs(1)) {
    ///     // still serving: do periodic work here
    /// }
    /// # }
    /// ```
    pub fn wait_closed(&self, timeout: Duration) -> bool {
        let serving = self
            .shared
            .serving
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let (serving, _) = self
            .shared
            .stopped
            .wait_timeout_while(serving, timeout, |serving| *serving)
            .unwrap_or_else(PoisonError::into_inner);
        !*serving
    }

    /// Stops serving and closes the connection: the message loop ends (its pending
    /// FilterGetMessage is cancelled), then the port handle is closed, so the driver fails
    /// whatever still waits on this provider. Callbacks still running get
    /// [`Error::Disconnected`] from their transfers.
    ///
    /// ```no_run
    /// # fn f(connection: cloudflt::Connection) -> Result<(), cloudflt::Error> {
    /// connection.disconnect()?;
    /// # Ok(()) }
    /// ```
    pub fn disconnect(mut self) -> Result<(), Error> {
        self.shut_down()
    }

    fn shut_down(&mut self) -> Result<(), Error> {
        let mut outcome = Ok(());
        if let Some(thread) = self.thread.take() {
            outcome = sys::set_event(&self.stop).and_then(|()| sys::join(thread));
        }
        // Only now that the loop no longer uses the port is it closed; waiting for the
        // write lock lets transfers already inside FilterSendMessage finish.
        let port = self
            .shared
            .port
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        drop(port);
        outcome
    }

    /// A fresh id for a request this provider starts.
    pub(crate) fn next_request_id(&self) -> u64 {
        self.shared.next_id.fetch_add(1, Ordering::Relaxed)
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // Errors cannot be reported from here; `disconnect` reports them.
        let _ = self.shut_down();
    }
}

/// What a connection's threads share.
#[derive(Debug)]
pub(crate) struct Shared {
    /// The port; `None` once disconnected, so that late transfers fail cleanly instead of
    /// using a closed (and possibly reused) handle value.
    port: RwLock<Option<sys::Handle>>,
    next_id: AtomicU64,
    /// True while the message loop runs.
    serving: Mutex<bool>,
    stopped: Condvar,
    /// Completion notifications handed to a worker and not yet handled (see
    /// [`Connection::wait_for_completions`]).
    callbacks: Mutex<usize>,
    callbacks_done: Condvar,
}

impl Shared {
    /// One more callback is on its way to a worker.
    fn callback_started(&self) {
        *self
            .callbacks
            .lock()
            .unwrap_or_else(PoisonError::into_inner) += 1;
    }

    /// A callback returned (or never started).
    fn callback_ended(&self) {
        let mut n = self
            .callbacks
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *n = n.saturating_sub(1);
        if *n == 0 {
            self.callbacks_done.notify_all();
        }
    }
}

impl Shared {
    /// Sends an encoded provider message and waits for the driver's [`Reply`]; its
    /// payload (at most `payload_capacity` bytes), or the failure it carries.
    pub(crate) fn request(
        &self,
        message: &[u8],
        payload_capacity: usize,
    ) -> Result<Vec<u8>, Error> {
        let port = self.port.read().unwrap_or_else(PoisonError::into_inner);
        let port = port.as_ref().ok_or(Error::Disconnected)?;
        let mut out = vec![0u8; REPLY_HEADER_SIZE + payload_capacity];
        let returned = sys::send(port, message, &mut out)?;
        let reply = Reply::decode(out.get(..returned).unwrap_or_default())?;
        if reply.status < 0 {
            return Err(Error::from_status(reply.status));
        }
        Ok(reply.payload.to_vec())
    }
}

/// The message loop: one overlapped FilterGetMessage at a time, waited for together with
/// the stop event, each message handed to a worker.
fn message_loop(
    shared: &Arc<Shared>,
    mut reader: MessageReader,
    stop: &sys::Handle,
    provider: &Arc<dyn SyncProvider + Send + Sync>,
) {
    loop {
        if reader.start().is_err() {
            // The port is gone (the driver closed it): nothing more will come.
            break;
        }
        match sys::wait_any(&[reader.event(), stop]) {
            Ok(0) => {}
            // Stop requested, or waiting itself failed: either way, stop cleanly.
            _ => {
                reader.cancel();
                break;
            }
        }
        match reader.finish() {
            Received::Message(bytes) => dispatch(shared, provider, bytes),
            // A message this build cannot hold is lost; the driver's timeout will fail it.
            Received::Truncated => {}
            Received::Ended => break,
        }
    }
    drop(reader);
    *shared
        .serving
        .lock()
        .unwrap_or_else(PoisonError::into_inner) = false;
    shared.stopped.notify_all();
}

/// Ends a callback's count when dropped: when its worker returns (or unwinds), or
/// when it never starts.
struct Finished(Arc<Shared>);

impl Drop for Finished {
    fn drop(&mut self) {
        self.0.callback_ended();
    }
}

/// Hands one message from the driver to the provider, on a worker thread (a completion
/// notification counted in `Shared::callbacks` until it is handled).
fn dispatch(shared: &Arc<Shared>, provider: &Arc<dyn SyncProvider + Send + Sync>, bytes: &[u8]) {
    let provider = provider.clone();
    // A message that does not decode (a driver speaking another protocol version) has no
    // request anyone could answer; the driver's timeout deals with it.
    let spawned = match KernelMessage::decode(bytes) {
        Ok(KernelMessage::FetchData(m)) => {
            let request = FetchRequest::from_message(&m);
            let transfer = Transfer::new(shared.clone(), &request);
            // If no thread can be started, the closure is dropped with the transfer in
            // it, which fails the fetch at once.
            sys::spawn(move || provider.fetch_data(request, transfer))
        }
        Ok(KernelMessage::ValidateData(m)) => {
            let request = FetchRequest::from_validation(&m);
            let validation = Validation::new(shared.clone(), &request);
            // Unstarted, the validation is dropped and refuses its range at once.
            sys::spawn(move || provider.validate_data(request, validation))
        }
        Ok(KernelMessage::CancelFetch(m)) => {
            let cancel = CancelFetch::from_message(&m);
            sys::spawn(move || provider.cancel_fetch(cancel))
        }
        Ok(KernelMessage::FetchPlaceholders(m)) => {
            let request = PopulationRequest::from_message(&m);
            let population = Population::new(shared.clone(), &request);
            // Unstarted, the population is dropped and fails at once.
            sys::spawn(move || provider.fetch_placeholders(request, population))
        }
        Ok(KernelMessage::CancelFetchPlaceholders(m)) => {
            let cancel = CancelPopulation::from_message(&m);
            sys::spawn(move || provider.cancel_fetch_placeholders(cancel))
        }
        Ok(KernelMessage::Notify(m)) => {
            // A blocking kind's ack is made before the worker: unstarted, it is dropped
            // and refuses at once.
            let ack = m
                .kind
                .blocks()
                .then(|| Ack::new(shared.clone(), m.request_id));
            let Some(notified) = Notified::of(&m) else {
                return;
            };
            let done = (!m.kind.blocks()).then(|| {
                shared.callback_started();
                Finished(shared.clone())
            });
            sys::spawn(move || {
                notified.deliver(&*provider, ack);
                drop(done);
            })
        }
        Ok(_) | Err(_) => return,
    };
    // The worker runs on detached; its handle is not needed.
    drop(spawned);
}
