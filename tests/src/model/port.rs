//! Filter communication ports, kernel side: FltCreateCommunicationPort and the server
//! port, the client port of each connection, and the message traffic over it
//! (FltSendMessage one way, MessageNotify the other).
//!
//! Owns: server ports by name, client ports (kept as tombstones after they close, so a
//! stale client-port pointer is recognised), each connection's [`Channel`] (messages
//! queued for the provider, FilterGetMessage requests waiting for one, replies awaited),
//! and the security descriptors FltBuildDefaultSecurityDescriptor hands out.
//! Does not own: user-mode handles, events and OVERLAPPED completion; those are
//! [`fltlib`](super::fltlib), which calls in here.
//!
//! Checks: a port is created with a security descriptor and OBJ_KERNEL_HANDLE,
//! descriptors are freed, every connection's client port is closed in DisconnectNotify,
//! (in fltmgr) server ports are closed before FltUnregisterFilter, FltSendMessage runs at
//! IRQL <= APC_LEVEL with a relative timeout on a client port that is still open, and
//! MessageNotify reports no more output than the caller's buffer holds.
//!
//! Waiting: a thread in FltSendMessage or FilterGetMessage waits on its connection's
//! channel (own mutex and [wait queue](super::waits)), never holding the kernel lock, and
//! is woken only by what ends its own wait: its message delivered or answered, its read
//! completed, its process killed, or the connection ended. Lock order is kernel lock,
//! released, then channel lock, then the user-mode dispatcher lock of fltlib; nothing
//! takes the kernel lock while holding a channel.

use crate::model::fast::{HashMap, HashSet};
use std::collections::VecDeque;
use std::ffi::c_void;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use windows_sys::Wdk::Foundation::OBJECT_ATTRIBUTES;
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    PFLT_CONNECT_NOTIFY, PFLT_DISCONNECT_NOTIFY, PFLT_FILTER, PFLT_MESSAGE_NOTIFY, PFLT_PORT,
};
use windows_sys::Win32::Foundation::{
    NTSTATUS, OBJ_KERNEL_HANDLE, STATUS_ACCESS_DENIED, STATUS_BUFFER_OVERFLOW,
    STATUS_CONNECTION_COUNT_LIMIT, STATUS_FLT_NO_WAITER_FOR_REPLY, STATUS_INSUFFICIENT_RESOURCES,
    STATUS_INVALID_PARAMETER, STATUS_OBJECT_NAME_COLLISION, STATUS_OBJECT_NAME_NOT_FOUND,
    STATUS_PORT_DISCONNECTED, STATUS_PROCESS_IS_TERMINATING, STATUS_SUCCESS,
    STATUS_THREAD_IS_TERMINATING, STATUS_TIMEOUT,
};
use windows_sys::Win32::Security::PSECURITY_DESCRIPTOR;
use windows_sys::Win32::Storage::InstallableFileSystems::FILTER_MESSAGE_HEADER;

use super::fltlib::Completion;
use super::irql::{self, APC_LEVEL, PASSIVE_LEVEL};
use super::pool::Owner;
use super::process;
use super::vm::{self, MidCall};
use super::waits::{self, WaitQueue};
use super::{Machine, with_kernel};

/// `FLT_PORT_CONNECT`.
const FLT_PORT_CONNECT: u32 = 0x0001;
/// Largest connection context FilterConnectCommunicationPort accepts (`wSizeOfContext`
/// is a WORD, and it travels in an EA value after a header).
pub(crate) const MAX_CONTEXT: usize = u16::MAX as usize - 0x40;
/// Bytes of a security descriptor handed out (SYSTEM + Administrators DACL).
const SD_BYTES: usize = 64;
/// `sizeof(FILTER_MESSAGE_HEADER)` and `sizeof(FILTER_REPLY_HEADER)`: 16 on every
/// Windows target (a ULONG/NTSTATUS padded to the ULONGLONG MessageId).
pub(crate) const HEADER_BYTES: usize = 16;

/// Message ids: unique across every port of every machine, as FltMgr's are per boot;
/// a reply to a stale id then can never match a newer message.
static NEXT_MESSAGE_ID: AtomicU64 = AtomicU64::new(1);

pub(crate) struct ServerPort {
    pub(crate) filter: PFLT_FILTER,
    pub(crate) name: String,
    pub(crate) closed: bool,
    cookie: usize,
    connect: PFLT_CONNECT_NOTIFY,
    disconnect: PFLT_DISCONNECT_NOTIFY,
    message: PFLT_MESSAGE_NOTIFY,
    max_connections: usize,
    /// Access the descriptor grants SYSTEM and Administrators.
    access: u32,
    /// Access it grants Authenticated Users (every logged-on user, elevated or not).
    authenticated: u32,
    /// MessageNotify and DisconnectNotify callbacks running now: FltUnregisterFilter
    /// waits for them (FltMgr holds rundown protection on the filter across each, so an
    /// unload waits for a disconnect that a killed provider's handle began).
    pub(crate) calls_in_flight: usize,
}

pub(crate) struct ClientPort {
    server: PFLT_PORT,
    /// ConnectNotify's ConnectionPortCookie.
    cookie: usize,
    /// Set once the driver closes it with FltCloseClientPort.
    closed: bool,
    /// Set once DisconnectNotify has run (the user-mode handle is gone).
    disconnected: bool,
    /// The process that connected (whose handle table holds the user-mode end).
    owner: u32,
    pub(crate) channel: Arc<Channel>,
}

impl ClientPort {
    /// Counts against MaxConnections and shows in [`PortView::connections`].
    fn is_open(&self) -> bool {
        !self.closed && !self.disconnected
    }
}

/// Who opens the port from user mode: the kind of process [`Machine::spawn_caller`]
/// starts. Whether the port's DACL admits a process is decided by its `elevated` flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// LocalSystem or an elevated administrator: in the default descriptor's DACL.
    Administrator,
    /// A standard user: not in the DACL.
    StandardUser,
}

/// A user-mode connection: the port handle FilterConnectCommunicationPort returned, in
/// the handle table of the process that connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientId(pub(crate) isize);

impl ClientId {
    /// The user-mode HANDLE, for the fltlib calls (`FilterGetMessage` and friends), made
    /// from a thread of the owning process ([`process::run_as`]).
    pub fn handle(self) -> windows_sys::Win32::Foundation::HANDLE {
        self.0 as windows_sys::Win32::Foundation::HANDLE
    }
}

/// A message FltSendMessage queued that no FilterGetMessage has taken yet.
struct Queued {
    id: u64,
    data: Vec<u8>,
    /// The driver's reply buffer size, if it waits for a reply.
    reply: Option<u32>,
}

/// Where one FltSendMessage stands, by message id.
enum SendState {
    Queued,
    /// Delivered; no reply expected.
    Delivered,
    /// Delivered; the driver waits for a reply of at most this many bytes.
    AwaitingReply(u32),
    /// FilterReplyMessage answered: the payload (already cut to the driver's buffer) and
    /// the status FltSendMessage returns.
    Replied(Vec<u8>, NTSTATUS),
}

/// A caller's buffer, written by whichever thread completes the request.
///
/// # Invariants
/// Points to `len` writable bytes for as long as the request is pending: the caller of
/// FilterGetMessage guarantees that (it blocks, or for overlapped I/O must keep the
/// buffer alive until completion), and a request leaves the channel when it completes
/// or is cancelled, before the caller may free the buffer.
pub(crate) struct UserBuffer {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the buffer is only touched under the channel lock by the completing thread,
// while the request is pending (see the invariants).
unsafe impl Send for UserBuffer {}

/// A pending FilterGetMessage.
pub(crate) struct Reader {
    id: u64,
    /// The user handle it was issued on (CancelIoEx matches on it).
    handle: isize,
    buffer: UserBuffer,
    completion: Completion,
}

/// One connection's message traffic.
pub(crate) struct Channel {
    state: Mutex<ChannelState>,
}

/// What a thread waiting on a channel waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Wake {
    /// A synchronous FilterGetMessage, by reader id: completed.
    Read(u64),
    /// A FltSendMessage, by message id: delivered (when no reply is expected) or
    /// answered.
    Send(u64),
    /// The sender's process was killed.
    Process(u32),
}

#[derive(Default)]
struct ChannelState {
    /// The connection is gone: the user handle closed, the driver closed the client port,
    /// or the filter unregistered. Nothing more is delivered.
    ended: bool,
    queue: VecDeque<Queued>,
    readers: VecDeque<Reader>,
    sends: HashMap<u64, SendState>,
    /// Outcomes of synchronous readers, by reader id: status and bytes.
    finished: HashMap<u64, (NTSTATUS, u32)>,
    /// Processes killed while a thread of theirs may wait here.
    terminated: HashSet<u32>,
    next_reader: u64,
    waits: WaitQueue<Wake>,
}

/// How a FltSendMessage ended.
enum SendOutcome {
    /// Delivered; no reply was asked for.
    Delivered,
    /// Answered: the payload cut to the driver's buffer, and the status to return.
    Replied(Vec<u8>, NTSTATUS),
    /// Not (fully) answered: STATUS_TIMEOUT, STATUS_PORT_DISCONNECTED or
    /// STATUS_THREAD_IS_TERMINATING.
    Ended(NTSTATUS),
}

/// What a FilterGetMessage call gets back right away.
pub(crate) enum ReadStart {
    /// Completed (synchronous reads always end here): status and bytes.
    Done(NTSTATUS, u32),
    /// Overlapped and queued; completion comes through the OVERLAPPED.
    Pending,
}

impl Channel {
    fn new() -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(ChannelState::default()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, ChannelState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Ends the connection: pending reads complete with `read_status`, waiting senders
    /// see STATUS_PORT_DISCONNECTED, queued messages are dropped.
    pub(crate) fn end(&self, read_status: NTSTATUS) {
        let mut s = self.lock();
        if !s.ended {
            s.ended = true;
            s.queue.clear();
            let readers: Vec<Reader> = s.readers.drain(..).collect();
            for reader in readers {
                s.complete(reader, read_status, 0);
            }
        }
        // Every sender and reader of the connection is done waiting.
        s.waits.wake_all();
    }

    /// Marks `pid` killed so a FltSendMessage from one of its threads stops waiting.
    fn terminate(&self, pid: u32) {
        let mut s = self.lock();
        s.terminated.insert(pid);
        s.waits.wake(Wake::Process(pid));
    }

    /// FilterGetMessage on this connection into `buffer` (at least a header long).
    pub(crate) fn read(
        &self,
        handle: isize,
        buffer: *mut u8,
        len: usize,
        completion: Completion,
    ) -> ReadStart {
        let mut s = self.lock();
        if s.ended {
            return ReadStart::Done(STATUS_PORT_DISCONNECTED, 0);
        }
        s.next_reader += 1;
        let id = s.next_reader;
        let synchronous = matches!(completion, Completion::Sync);
        s.readers.push_back(Reader {
            id,
            handle,
            // INVARIANT: the caller's buffer, pending until completed or cancelled.
            buffer: UserBuffer { ptr: buffer, len },
            completion,
        });
        s.deliver();
        if !synchronous {
            // FltMgr pends every overlapped FilterGetMessage, even when a message is
            // already queued (the scanner sample treats anything but ERROR_IO_PENDING as
            // failure).
            return ReadStart::Pending;
        }
        loop {
            if let Some((status, bytes)) = s.finished.remove(&id) {
                return ReadStart::Done(status, bytes);
            }
            s = waits::sleep(
                &self.state,
                s,
                |s| Some(&mut s.waits),
                &[Wake::Read(id)],
                None,
                None,
            );
        }
    }

    /// CancelIoEx: cancels reads issued on `handle` (only the one using `overlapped`
    /// when it is not null). Returns how many were cancelled.
    pub(crate) fn cancel(&self, handle: isize, overlapped: Option<usize>) -> usize {
        let mut s = self.lock();
        let (cancelled, kept): (Vec<Reader>, Vec<Reader>) = s.readers.drain(..).partition(|r| {
            r.handle == handle && overlapped.is_none_or(|ov| r.completion.overlapped() == Some(ov))
        });
        s.readers = kept.into();
        let n = cancelled.len();
        for reader in cancelled {
            s.complete(reader, windows_sys::Win32::Foundation::STATUS_CANCELLED, 0);
        }
        n
    }

    /// FilterReplyMessage: `payload` is what followed the FILTER_REPLY_HEADER.
    pub(crate) fn reply(&self, id: u64, payload: &[u8]) -> NTSTATUS {
        let mut s = self.lock();
        if s.ended {
            return STATUS_PORT_DISCONNECTED;
        }
        let Some(SendState::AwaitingReply(capacity)) = s.sends.get(&id) else {
            // Timed out, never expected a reply, already answered, or never sent.
            return STATUS_FLT_NO_WAITER_FOR_REPLY;
        };
        let capacity = *capacity as usize;
        // The fltkernel.h remarks: a reply longer than the driver's buffer makes
        // FltSendMessage return STATUS_BUFFER_OVERFLOW; the driver gets what fits.
        let (data, status) = if payload.len() > capacity {
            (payload[..capacity].to_vec(), STATUS_BUFFER_OVERFLOW)
        } else {
            (payload.to_vec(), STATUS_SUCCESS)
        };
        s.sends.insert(id, SendState::Replied(data, status));
        s.waits.wake(Wake::Send(id));
        STATUS_SUCCESS
    }

    /// FltSendMessage's wait: queue the message, then wait for delivery and the reply.
    fn send(
        &self,
        data: Vec<u8>,
        reply: Option<u32>,
        deadline: Option<Instant>,
        sender: u32,
    ) -> SendOutcome {
        let mut s = self.lock();
        if s.ended {
            return SendOutcome::Ended(STATUS_PORT_DISCONNECTED);
        }
        let id = NEXT_MESSAGE_ID.fetch_add(1, Ordering::Relaxed);
        s.sends.insert(id, SendState::Queued);
        s.queue.push_back(Queued { id, data, reply });
        s.deliver();
        loop {
            match s.sends.get(&id) {
                Some(SendState::Delivered) => {
                    s.sends.remove(&id);
                    return SendOutcome::Delivered;
                }
                Some(SendState::Replied(..)) => {
                    if let Some(SendState::Replied(data, status)) = s.sends.remove(&id) {
                        return SendOutcome::Replied(data, status);
                    }
                }
                _ => {}
            }
            let outcome = if s.ended {
                Some(STATUS_PORT_DISCONNECTED)
            } else if sender != process::SYSTEM_PID && s.terminated.contains(&sender) {
                Some(STATUS_THREAD_IS_TERMINATING)
            } else if deadline.is_some_and(|d| Instant::now() >= d) {
                Some(STATUS_TIMEOUT)
            } else {
                None
            };
            if let Some(status) = outcome {
                // Not delivered: withdraw it. Delivered and awaiting a reply: forget it,
                // so a late FilterReplyMessage finds no waiter.
                s.sends.remove(&id);
                s.queue.retain(|q| q.id != id);
                return SendOutcome::Ended(status);
            }
            let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
            s = waits::sleep(
                &self.state,
                s,
                |s| Some(&mut s.waits),
                &[Wake::Send(id), Wake::Process(sender)],
                None,
                left,
            );
        }
    }
}

impl ChannelState {
    /// Hands queued messages to waiting readers, oldest first on both sides.
    fn deliver(&mut self) {
        while !self.queue.is_empty() && !self.readers.is_empty() {
            let (Some(message), Some(reader)) = (self.queue.pop_front(), self.readers.pop_front())
            else {
                break;
            };
            // FILTER_MESSAGE_HEADER.ReplyLength counts the FILTER_REPLY_HEADER too
            // (fltuserstructures.h); zero when no reply is expected.
            let header = FILTER_MESSAGE_HEADER {
                ReplyLength: message.reply.map_or(0, |r| r + HEADER_BYTES as u32),
                MessageId: message.id,
            };
            // SAFETY: the reader's buffer holds at least a header (checked at
            // FilterGetMessage) and is pending (UserBuffer invariants); unaligned since
            // user buffers need not be aligned.
            unsafe {
                reader
                    .buffer
                    .ptr
                    .cast::<FILTER_MESSAGE_HEADER>()
                    .write_unaligned(header)
            };
            let room = reader.buffer.len - HEADER_BYTES;
            let copied = message.data.len().min(room);
            // SAFETY: `copied` bytes fit after the header in the pending user buffer;
            // the message is our own allocation, so the two do not overlap.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    message.data.as_ptr(),
                    reader.buffer.ptr.wrapping_add(HEADER_BYTES),
                    copied,
                )
            };
            // A message longer than the buffer is cut and still counts as delivered
            // (inference: FltMgr completes the read with STATUS_BUFFER_OVERFLOW).
            let status = if copied < message.data.len() {
                STATUS_BUFFER_OVERFLOW
            } else {
                STATUS_SUCCESS
            };
            let state = match message.reply {
                Some(capacity) => SendState::AwaitingReply(capacity),
                None => {
                    // Delivered is all this sender waits for.
                    self.waits.wake(Wake::Send(message.id));
                    SendState::Delivered
                }
            };
            self.sends.insert(message.id, state);
            self.complete(reader, status, (HEADER_BYTES + copied) as u32);
        }
    }

    fn complete(&mut self, reader: Reader, status: NTSTATUS, bytes: u32) {
        match reader.completion {
            Completion::Sync => {
                self.finished.insert(reader.id, (status, bytes));
                self.waits.wake(Wake::Read(reader.id));
            }
            overlapped => overlapped.complete(status, bytes),
        }
    }
}

/// FltBuildDefaultSecurityDescriptor.
///
/// # Safety
/// `out` must be writable.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn FltBuildDefaultSecurityDescriptor(
    out: *mut PSECURITY_DESCRIPTOR,
    access: u32,
) -> NTSTATUS {
    irql::check("FltBuildDefaultSecurityDescriptor", PASSIVE_LEVEL);
    if out.is_null() {
        return STATUS_INVALID_PARAMETER;
    }
    with_kernel(|k| {
        // FltMgr allocates it from paged pool with its own tag ('FMsd').
        let Some(ptr) = k.pool.allocate(
            SD_BYTES,
            u32::from_le_bytes(*b"FMsd"),
            Owner::FltMgr("security descriptor"),
        ) else {
            return STATUS_INSUFFICIENT_RESOURCES;
        };
        k.security_descriptors.insert(ptr as usize, access);
        // SAFETY: checked non-null above.
        unsafe { out.write(ptr.cast()) };
        STATUS_SUCCESS
    })
}

/// FltFreeSecurityDescriptor.
#[unsafe(no_mangle)]
pub extern "system" fn FltFreeSecurityDescriptor(sd: PSECURITY_DESCRIPTOR) {
    irql::check("FltFreeSecurityDescriptor", PASSIVE_LEVEL);
    with_kernel(|k| {
        if k.security_descriptors.remove(&(sd as usize)).is_none() {
            k.violation(
                "FltFreeSecurityDescriptor",
                format!(
                    "{sd:p} was not built by FltBuildDefaultSecurityDescriptor or is freed twice"
                ),
            );
            return;
        }
        if let Err(message) = k
            .pool
            .free(sd.cast(), None, Owner::FltMgr("security descriptor"))
        {
            k.violation("FltFreeSecurityDescriptor", message);
        }
    });
}

/// FltCreateCommunicationPort.
///
/// # Safety
/// `attributes` must be a valid OBJECT_ATTRIBUTES with a valid name.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "system" fn FltCreateCommunicationPort(
    filter: PFLT_FILTER,
    server_port: *mut PFLT_PORT,
    attributes: *const OBJECT_ATTRIBUTES,
    cookie: *const c_void,
    connect: PFLT_CONNECT_NOTIFY,
    disconnect: PFLT_DISCONNECT_NOTIFY,
    message: PFLT_MESSAGE_NOTIFY,
    max_connections: i32,
) -> NTSTATUS {
    irql::check("FltCreateCommunicationPort", PASSIVE_LEVEL);
    // SAFETY: the caller's OBJECT_ATTRIBUTES.
    let Some(oa) = (unsafe { attributes.as_ref() }) else {
        return STATUS_INVALID_PARAMETER;
    };
    // SAFETY: the name the caller points at, read within its Length.
    let name = unsafe { unicode(oa.ObjectName) };
    with_kernel(|k| {
        let Some(name) = name else {
            k.violation(
                "FltCreateCommunicationPort",
                "ObjectName is not a valid UNICODE_STRING",
            );
            return STATUS_INVALID_PARAMETER;
        };
        if oa.Length as usize != std::mem::size_of::<OBJECT_ATTRIBUTES>()
            || server_port.is_null()
            || max_connections <= 0
            || connect.is_none()
        {
            return STATUS_INVALID_PARAMETER;
        }
        if !k.live_filter("FltCreateCommunicationPort", filter) {
            return STATUS_INVALID_PARAMETER;
        }
        if let Some(status) = k.injected("FltCreateCommunicationPort") {
            return status;
        }
        if oa.Attributes & OBJ_KERNEL_HANDLE == 0 {
            k.violation("FltCreateCommunicationPort", "port handle created without OBJ_KERNEL_HANDLE: it lands in the current process's handle table");
        }
        // Either a descriptor FltBuildDefaultSecurityDescriptor made (SYSTEM and
        // Administrators), or a self-relative one the driver built itself, whose DACL is
        // read as the object manager would.
        let sd = oa.SecurityDescriptor as usize;
        let (access, authenticated) = match k.security_descriptors.get(&sd) {
            Some(access) => (*access, 0),
            // SAFETY: the caller's descriptor; its own lengths bound every read.
            None => match unsafe { self_relative_dacl(oa.SecurityDescriptor.cast()) } {
                Ok(grants) => grants,
                Err(why) => {
                    k.violation(
                        "FltCreateCommunicationPort",
                        format!("the port's security descriptor: {why}"),
                    );
                    (0, 0)
                }
            },
        };
        if k.server_ports
            .values()
            .any(|p| !p.closed && p.name.eq_ignore_ascii_case(&name))
        {
            return STATUS_OBJECT_NAME_COLLISION;
        }
        let handle = k.handle();
        k.server_ports.insert(
            handle,
            ServerPort {
                filter,
                name,
                closed: false,
                cookie: cookie as usize,
                connect,
                disconnect,
                message,
                max_connections: max_connections as usize,
                access,
                authenticated,
                calls_in_flight: 0,
            },
        );
        // SAFETY: checked non-null above.
        unsafe { server_port.write(handle) };
        STATUS_SUCCESS
    })
}

/// # Safety
/// `s` is NULL or a UNICODE_STRING whose buffer holds `Length` bytes.
unsafe fn unicode(s: *const windows_sys::Win32::Foundation::UNICODE_STRING) -> Option<String> {
    // SAFETY: per the contract.
    let s = unsafe { s.as_ref() }?;
    if s.Length % 2 != 0 || s.Length > s.MaximumLength || (s.Length > 0 && s.Buffer.is_null()) {
        return None;
    }
    if s.Length == 0 {
        return Some(String::new());
    }
    // SAFETY: `Length` bytes at `Buffer`, per the contract.
    let units = unsafe { std::slice::from_raw_parts(s.Buffer, usize::from(s.Length) / 2) };
    String::from_utf16(units).ok()
}

/// FltCloseCommunicationPort: no new connections; existing ones stay.
#[unsafe(no_mangle)]
pub extern "system" fn FltCloseCommunicationPort(port: PFLT_PORT) {
    irql::check("FltCloseCommunicationPort", PASSIVE_LEVEL);
    with_kernel(|k| match k.server_ports.get_mut(&port) {
        Some(p) if !p.closed => p.closed = true,
        _ => k.violation(
            "FltCloseCommunicationPort",
            format!("{port:#x} is not an open server port"),
        ),
    });
}

/// FltCloseClientPort: the connection ends for both sides. The provider's pending
/// FilterGetMessage calls fail with STATUS_PORT_DISCONNECTED (ERROR_INVALID_HANDLE in
/// user mode, which the scanner sample reads as "port disconnected"); FltSendMessage
/// calls waiting on it return STATUS_PORT_DISCONNECTED; queued messages are dropped.
/// The user-mode handle stays open until the provider closes it.
///
/// # Safety
/// `port` must be writable.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn FltCloseClientPort(_filter: PFLT_FILTER, port: *mut PFLT_PORT) {
    irql::check("FltCloseClientPort", PASSIVE_LEVEL);
    if port.is_null() {
        return;
    }
    // SAFETY: the driver's port slot.
    let handle = unsafe { port.read() };
    if handle == 0 {
        // Documented: closing an already-closed (NULL) client port does nothing.
        return;
    }
    let channel = with_kernel(|k| match k.client_ports.get_mut(&handle) {
        Some(c) if !c.closed => {
            c.closed = true;
            Some(c.channel.clone())
        }
        Some(_) => {
            k.violation("FltCloseClientPort", format!("{handle:#x} closed twice"));
            None
        }
        None => {
            k.violation(
                "FltCloseClientPort",
                format!("{handle:#x} is not a client port"),
            );
            None
        }
    });
    if let Some(channel) = channel {
        channel.end(STATUS_PORT_DISCONNECTED);
    }
    // SAFETY: as above; FltCloseClientPort sets the caller's handle to NULL.
    unsafe { port.write(0) };
}

/// How long FltSendMessage may wait, from its `Timeout` argument.
enum Wait {
    Forever,
    Until(Instant),
}

/// A KeWaitForSingleObject-style timeout: NULL waits forever, negative is relative in
/// 100 ns units, zero does not wait, positive is an absolute system time (100 ns since
/// 1601-01-01) on the model's clock.
///
/// # Safety
/// `timeout` is NULL or readable.
unsafe fn deadline(timeout: *const i64) -> (Wait, Option<i64>) {
    // SAFETY: per the contract.
    let Some(&t) = (unsafe { timeout.as_ref() }) else {
        return (Wait::Forever, None);
    };
    let now = Instant::now();
    if t <= 0 {
        let wait = Duration::from_nanos(t.unsigned_abs().saturating_mul(100));
        // Beyond what an Instant can hold is forever for any test.
        return (
            now.checked_add(wait).map_or(Wait::Forever, Wait::Until),
            Some(t),
        );
    }
    // Absolute: against the model's system clock, the one KeQuerySystemTime reads.
    let left = u64::try_from(t.saturating_sub(super::now())).unwrap_or(0);
    let wait = Duration::from_nanos(left.saturating_mul(100));
    (
        now.checked_add(wait).map_or(Wait::Forever, Wait::Until),
        Some(t),
    )
}

/// FltSendMessage.
///
/// Queues the message for the connection's provider (delivered at once to a waiting
/// FilterGetMessage), then waits until it is delivered and, when `reply_buffer` is not
/// NULL, until FilterReplyMessage answers it. The reply reaches the driver without its
/// FILTER_REPLY_HEADER; `*reply_length` becomes the bytes copied. STATUS_TIMEOUT (a
/// success code) when the timeout passes first, STATUS_PORT_DISCONNECTED when the
/// connection ends first (or `*client_port` is NULL, as FltCloseClientPort leaves it),
/// STATUS_THREAD_IS_TERMINATING when the sending thread's process is killed.
///
/// # Safety
/// The buffers are valid for their lengths; `client_port`, `reply_length` and `timeout`
/// are NULL or valid.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn FltSendMessage(
    filter: PFLT_FILTER,
    client_port: *const PFLT_PORT,
    sender_buffer: *const c_void,
    sender_buffer_length: u32,
    reply_buffer: *mut c_void,
    reply_length: *mut u32,
    timeout: *const i64,
) -> NTSTATUS {
    const API: &str = "FltSendMessage";
    irql::check(API, APC_LEVEL);
    // SAFETY: the caller's timeout, NULL or readable.
    let (wait, raw) = unsafe { deadline(timeout) };
    if raw.is_some_and(|t| t > 0) {
        with_kernel(|k| {
            k.violation(
                API,
                "FltSendMessage with a positive (absolute) timeout: a system-time change \
                 moves the deadline; use a negative (relative) one",
            )
        });
    }
    if client_port.is_null()
        || sender_buffer.is_null()
        || (!reply_buffer.is_null() && reply_length.is_null())
    {
        with_kernel(|k| {
            k.violation(
                API,
                "ClientPort and SenderBuffer are required, and ReplyLength when ReplyBuffer is given",
            )
        });
        return STATUS_INVALID_PARAMETER;
    }
    // SAFETY: checked non-null; the driver's port variable.
    let handle = unsafe { client_port.read() };
    if handle == 0 {
        // FltCloseClientPort NULLs the driver's variable; FltMgr reads it under its
        // lock, which is why FltSendMessage takes a pointer to it.
        return STATUS_PORT_DISCONNECTED;
    }
    let channel = with_kernel(|k| {
        if !k.live_filter(API, filter) {
            return Err(STATUS_INVALID_PARAMETER);
        }
        let Some(c) = k.client_ports.get(&handle) else {
            k.violation(API, format!("{handle:#x} is not a client port"));
            return Err(STATUS_INVALID_PARAMETER);
        };
        if c.closed {
            k.violation(
                API,
                format!(
                    "client port {handle:#x} used after FltCloseClientPort (the port object \
                     may already be freed)"
                ),
            );
            return Err(STATUS_PORT_DISCONNECTED);
        }
        let owner = k.server_ports.get(&c.server).map(|s| s.filter);
        let channel = c.channel.clone();
        if owner != Some(filter) {
            k.violation(
                API,
                format!("client port {handle:#x} belongs to another filter"),
            );
        }
        Ok(channel)
    });
    let channel = match channel {
        Ok(channel) => channel,
        Err(status) => return status,
    };
    // SAFETY: the sender's buffer, readable for its length; FltMgr captures it.
    let data = unsafe {
        std::slice::from_raw_parts(sender_buffer.cast::<u8>(), sender_buffer_length as usize)
    }
    .to_vec();
    let capacity = if reply_buffer.is_null() {
        None
    } else {
        // SAFETY: checked non-null with a reply buffer above.
        Some(unsafe { reply_length.read() })
    };
    let deadline = match wait {
        Wait::Forever => None,
        Wait::Until(d) => Some(d),
    };
    match channel.send(data, capacity, deadline, process::current_pid()) {
        SendOutcome::Delivered => STATUS_SUCCESS,
        SendOutcome::Replied(data, status) => {
            // SAFETY: the driver's reply buffer holds `*reply_length` bytes and `data`
            // was cut to that.
            unsafe {
                std::ptr::copy_nonoverlapping(data.as_ptr(), reply_buffer.cast(), data.len())
            };
            // SAFETY: checked non-null with a reply buffer above.
            unsafe { reply_length.write(data.len() as u32) };
            status
        }
        SendOutcome::Ended(status) => status,
    }
}

/// Connects the calling thread's process to the server port `name`, as the I/O manager
/// and FltMgr do for FilterConnectCommunicationPort: access check against the process
/// token, MaxConnections, then ConnectNotify in the caller's context with a kernel copy
/// of the context. Returns the new client port.
pub(crate) fn connect(name: &str, context: &[u8]) -> Result<PFLT_PORT, NTSTATUS> {
    if context.len() > MAX_CONTEXT {
        return Err(STATUS_INVALID_PARAMETER);
    }
    let pid = process::current_pid();
    let plan = with_kernel(|k| {
        let (alive, elevated) = k
            .processes
            .get(pid)
            .map_or((false, false), |p| (p.alive, p.elevated));
        let (server, port) = k
            .server_ports
            .iter()
            .find(|(_, p)| !p.closed && p.name.eq_ignore_ascii_case(name))?;
        let server = *server;
        // SYSTEM and elevated administrators hold the Administrators group; every
        // process of a logged-on user (the model's processes) is an Authenticated User.
        let granted = (elevated && port.access & FLT_PORT_CONNECT != 0)
            || port.authenticated & FLT_PORT_CONNECT != 0;
        let open = k
            .client_ports
            .values()
            .filter(|c| c.server == server && c.is_open())
            .count();
        Some((
            server,
            port.cookie,
            port.connect,
            alive,
            granted,
            open >= port.max_connections,
        ))
    });
    let Some((server, cookie, connect, alive, granted, full)) = plan else {
        return Err(STATUS_OBJECT_NAME_NOT_FOUND);
    };
    if !alive {
        return Err(STATUS_PROCESS_IS_TERMINATING);
    }
    if !granted {
        return Err(STATUS_ACCESS_DENIED);
    }
    if full {
        return Err(STATUS_CONNECTION_COUNT_LIMIT);
    }
    let client = with_kernel(|k| {
        let h = k.handle();
        k.client_ports.insert(
            h,
            ClientPort {
                server,
                cookie: 0,
                closed: false,
                disconnected: false,
                owner: pid,
                channel: Channel::new(),
            },
        );
        h
    });
    // The I/O manager captures the EA buffer: the driver sees a kernel copy.
    let captured: Vec<u8> = context.to_vec();
    let mut connection_cookie: *mut c_void = std::ptr::null_mut();
    irql::check("ConnectNotify", PASSIVE_LEVEL);
    let status = match connect {
        // SAFETY: the driver's ConnectNotify with a captured context valid for the call.
        Some(connect) => unsafe {
            connect(
                client,
                cookie as *const c_void,
                if captured.is_empty() {
                    std::ptr::null()
                } else {
                    captured.as_ptr().cast()
                },
                captured.len() as u32,
                &mut connection_cookie,
            )
        },
        None => STATUS_SUCCESS,
    };
    with_kernel(|k| {
        if status < 0 {
            k.client_ports.remove(&client);
            return Err(status);
        }
        if status != STATUS_SUCCESS {
            k.violation(
                "ConnectNotify",
                format!("returned success code {status:#x} other than STATUS_SUCCESS"),
            );
        }
        if let Some(c) = k.client_ports.get_mut(&client) {
            c.cookie = connection_cookie as usize;
        }
        Ok(client)
    })
}

/// The user-mode handle of `client` closed (CloseHandle, process exit, or a severed
/// connection): pending reads complete with STATUS_CANCELLED, waiting senders get
/// STATUS_PORT_DISCONNECTED, then FltMgr calls DisconnectNotify.
pub(crate) fn handle_closed(client: PFLT_PORT) {
    let channel = with_kernel(|k| k.client_ports.get(&client).map(|c| c.channel.clone()));
    if let Some(channel) = channel {
        channel.end(windows_sys::Win32::Foundation::STATUS_CANCELLED);
    }
    disconnect(client);
}

/// Runs DisconnectNotify for one connection and checks the driver closed its port.
fn disconnect(client: PFLT_PORT) {
    let plan = with_kernel(|k| {
        let c = k.client_ports.get_mut(&client)?;
        if c.disconnected {
            return None;
        }
        c.disconnected = true;
        let (cookie, server) = (c.cookie, c.server);
        let port = k.server_ports.get_mut(&server)?;
        let callback = port.disconnect;
        port.calls_in_flight += 1;
        Some((callback, cookie, server))
    });
    let Some((callback, cookie, server)) = plan else {
        return;
    };
    if let Some(callback) = callback {
        irql::check("DisconnectNotify", PASSIVE_LEVEL);
        // SAFETY: the driver's DisconnectNotify with the cookie its ConnectNotify gave.
        unsafe { callback(cookie as *const c_void) };
    }
    with_kernel(|k| {
        if let Some(port) = k.server_ports.get_mut(&server) {
            port.calls_in_flight = port.calls_in_flight.saturating_sub(1);
        }
    });
    with_kernel(|k| {
        if k.client_ports.get(&client).is_some_and(|c| !c.closed) {
            k.violation(
                "DisconnectNotify",
                "returned without FltCloseClientPort: the connection leaks",
            );
        }
    });
}

/// FltUnregisterFilter's part: every client of the filter's ports is disconnected.
pub(crate) fn disconnect_all(filter: PFLT_FILTER) {
    let clients: Vec<(PFLT_PORT, Arc<Channel>)> = with_kernel(|k| {
        k.client_ports
            .iter()
            .filter(|(_, c)| {
                !c.disconnected
                    && k.server_ports
                        .get(&c.server)
                        .is_some_and(|s| s.filter == filter)
            })
            .map(|(h, c)| (*h, c.channel.clone()))
            .collect()
    });
    for (client, channel) in clients {
        channel.end(STATUS_PORT_DISCONNECTED);
        disconnect(client);
    }
}

/// A process was killed: its threads waiting in FltSendMessage stop with
/// STATUS_THREAD_IS_TERMINATING.
pub(crate) fn process_terminated(pid: u32) {
    let channels: Vec<Arc<Channel>> =
        with_kernel(|k| k.client_ports.values().map(|c| c.channel.clone()).collect());
    for channel in channels {
        channel.terminate(pid);
    }
}

/// The channel of `client` while the connection is usable from user mode, or the status
/// a user-mode call on it fails with.
pub(crate) fn live_channel(client: PFLT_PORT) -> Result<Arc<Channel>, NTSTATUS> {
    with_kernel(|k| match k.client_ports.get(&client) {
        Some(c) if c.is_open() => Ok(c.channel.clone()),
        _ => Err(STATUS_PORT_DISCONNECTED),
    })
}

/// FilterSendMessage's kernel half: the driver's MessageNotify, at PASSIVE_LEVEL on the
/// calling thread (so in the provider's process), with the caller's own buffers, as
/// FltMgr passes them (METHOD_NEITHER: raw user pointers the driver must probe and
/// copy under an exception guard). Returns the status and the output length reported.
pub(crate) fn message_notify(
    client: PFLT_PORT,
    input: *mut c_void,
    input_len: u32,
    output: *mut c_void,
    output_len: u32,
) -> (NTSTATUS, u32) {
    let plan = with_kernel(|k| {
        let c = k.client_ports.get(&client).filter(|c| c.is_open())?;
        let (server, cookie) = (c.server, c.cookie);
        let port = k.server_ports.get_mut(&server)?;
        let callback = port.message;
        if callback.is_some() {
            port.calls_in_flight += 1;
        }
        Some((callback, cookie, server))
    });
    let Some((callback, cookie, server)) = plan else {
        return (STATUS_PORT_DISCONNECTED, 0);
    };
    let Some(callback) = callback else {
        // No MessageNotifyCallback registered (inference: FltMgr refuses the request).
        return (STATUS_INVALID_PARAMETER, 0);
    };
    // Released when the callback has returned, however it returns.
    struct InFlight(PFLT_PORT);
    impl Drop for InFlight {
        fn drop(&mut self) {
            with_kernel(|k| {
                if let Some(port) = k.server_ports.get_mut(&self.0) {
                    port.calls_in_flight = port.calls_in_flight.saturating_sub(1);
                }
            });
        }
    }
    let _in_flight = InFlight(server);
    let mut returned: u32 = 0;
    let mark = vm::begin_message();
    let status = irql::at(PASSIVE_LEVEL, || {
        // SAFETY: the driver's MessageNotify with its connection cookie and the user
        // buffers exactly as the caller passed them.
        unsafe {
            callback(
                cookie as *const c_void,
                input,
                input_len,
                output,
                output_len,
                &mut returned,
            )
        }
    });
    // What the callback wrote into user memory that was not writable, and what it left
    // secured, is reported now: the call is over.
    vm::end_message(mark);
    if returned > output_len {
        with_kernel(|k| {
            k.violation(
                "MessageNotify",
                format!(
                    "ReturnOutputBufferLength {returned} exceeds the {output_len}-byte output \
                     buffer: user mode would be told of bytes never written"
                ),
            )
        });
        returned = output_len;
    }
    (status, returned)
}

/// A server port as a test sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortView {
    /// Object name.
    pub name: String,
    /// Whether FltCloseCommunicationPort was called.
    pub closed: bool,
    /// MaxConnections.
    pub max_connections: usize,
    /// Access the descriptor grants SYSTEM and Administrators; 0 if created without one.
    pub access: u32,
    /// Access it grants Authenticated Users.
    pub authenticated: u32,
    /// Open client connections.
    pub connections: usize,
    /// The process of each open connection, in connection order.
    pub client_pids: Vec<u32>,
}

impl Machine {
    /// Every server port ever created, in no particular order.
    pub fn ports(&self) -> Vec<PortView> {
        with_kernel(|k| {
            k.server_ports
                .iter()
                .map(|(h, p)| PortView {
                    name: p.name.clone(),
                    closed: p.closed,
                    max_connections: p.max_connections,
                    access: p.access,
                    authenticated: p.authenticated,
                    connections: k
                        .client_ports
                        .values()
                        .filter(|c| c.server == *h && c.is_open())
                        .count(),
                    client_pids: {
                        let mut open: Vec<(isize, u32)> = k
                            .client_ports
                            .iter()
                            .filter(|(_, c)| c.server == *h && c.is_open())
                            .map(|(ch, c)| (*ch, c.owner))
                            .collect();
                        open.sort_unstable();
                        open.into_iter().map(|(_, pid)| pid).collect()
                    },
                })
                .collect()
        })
    }

    /// Starts a provider-like process of the `caller` kind and returns its pid.
    pub fn spawn_caller(&self, caller: Caller) -> u32 {
        let image = match caller {
            Caller::Administrator => {
                "\\Device\\HarddiskVolume1\\Program Files\\Provider\\provider.exe"
            }
            Caller::StandardUser => "\\Device\\HarddiskVolume1\\Users\\user\\app.exe",
        };
        self.spawn_process(
            image,
            process::PHCM_APPLICATION_DEFAULT,
            caller == Caller::Administrator,
        )
    }
}

/// MmCopyMemory with MM_COPY_MEMORY_VIRTUAL: how a MessageNotify callback copies the
/// provider's buffer without an exception handler. A source in user memory that is not
/// readable in the current process (freed, decommitted, no-access: [`vm`]) ends the copy
/// there with STATUS_ACCESS_VIOLATION and the bytes copied before it, as the documented
/// "error status … NumberOfBytesTransferred" contract says; it never faults. The IRQL and
/// flag rules are checked. A mid-call action armed for [`MidCall::AfterInputCopy`] runs
/// when it returns.
///
/// # Safety
/// `target` is writable for `length` bytes of non-paged memory.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn MmCopyMemory(
    target: *const c_void,
    source: windows_sys::Wdk::System::SystemServices::MM_COPY_ADDRESS,
    length: usize,
    flags: u32,
    transferred: *mut usize,
) -> NTSTATUS {
    irql::check("MmCopyMemory", irql::APC_LEVEL);
    const MM_COPY_MEMORY_PHYSICAL: u32 = 1;
    const MM_COPY_MEMORY_VIRTUAL: u32 = 2;
    if flags != MM_COPY_MEMORY_VIRTUAL && flags != MM_COPY_MEMORY_PHYSICAL {
        return STATUS_INVALID_PARAMETER;
    }
    if flags == MM_COPY_MEMORY_PHYSICAL {
        // The model has no physical memory.
        return windows_sys::Win32::Foundation::STATUS_NOT_IMPLEMENTED;
    }
    if transferred.is_null() {
        return STATUS_INVALID_PARAMETER;
    }
    // SAFETY: VirtualAddress is the member MM_COPY_MEMORY_VIRTUAL selects.
    let from = unsafe { source.Anonymous.VirtualAddress };
    let mut status = STATUS_SUCCESS;
    let mut copied = length;
    if length > 0 {
        copied = if from.is_null() || target.is_null() {
            0
        } else {
            vm::readable_prefix(from as usize, length)
        };
        if copied > 0 {
            // SAFETY: the caller's contract for the target; the source's first `copied`
            // bytes are readable memory of this process.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    from.cast::<u8>(),
                    target.cast_mut().cast::<u8>(),
                    copied,
                )
            };
        }
        if copied < length {
            // On Windows an inaccessible source fails the copy instead of faulting.
            status = windows_sys::Win32::Foundation::STATUS_ACCESS_VIOLATION;
        }
    }
    // SAFETY: checked non-null above.
    unsafe { transferred.write(copied) };
    vm::reach(MidCall::AfterInputCopy);
    status
}

/// The grants of a self-relative SECURITY_DESCRIPTOR's DACL, as (SYSTEM and
/// Administrators, Authenticated Users): the ACCESS_ALLOWED ACEs for S-1-5-18 and
/// S-1-5-32-544 (which must agree) and for S-1-5-11. A descriptor that is not
/// self-relative, has no DACL or a NULL DACL (open to everyone), an ACE of another type or
/// for another SID, or lengths that do not hold, is refused with why.
///
/// # Safety
/// `sd` is NULL or readable for the lengths its own headers declare (at most 64 KiB).
unsafe fn self_relative_dacl(sd: *const u8) -> Result<(u32, u32), String> {
    const SE_DACL_PRESENT: u16 = 0x0004;
    const SE_SELF_RELATIVE: u16 = 0x8000;
    if sd.is_null() {
        return Err("none: the port would be open to everyone".into());
    }
    // SAFETY: the header's 20 bytes (the caller's contract).
    let head = unsafe { std::slice::from_raw_parts(sd, 20) };
    let control = u16::from_le_bytes([head[2], head[3]]);
    let dacl = u32::from_le_bytes([head[16], head[17], head[18], head[19]]) as usize;
    if head[0] != 1 || control & SE_SELF_RELATIVE == 0 {
        return Err("not a self-relative revision-1 descriptor".into());
    }
    if control & SE_DACL_PRESENT == 0 || dacl == 0 {
        return Err("no DACL, or a NULL DACL: open to everyone".into());
    }
    // SAFETY: the DACL's offset within the descriptor (the caller's contract).
    let acl_at = unsafe { sd.add(dacl) };
    // SAFETY: the ACL header at that offset.
    let acl_head = unsafe { std::slice::from_raw_parts(acl_at, 8) };
    let acl_size = usize::from(u16::from_le_bytes([acl_head[2], acl_head[3]]));
    let count = usize::from(u16::from_le_bytes([acl_head[4], acl_head[5]]));
    if !(8..=0x1_0000).contains(&acl_size) {
        return Err(format!("an ACL of {acl_size} bytes"));
    }
    // SAFETY: the whole ACL, as its header sizes it.
    let acl = unsafe { std::slice::from_raw_parts(acl_at, acl_size) };
    let (mut system, mut admins, mut users) = (None, None, 0u32);
    let mut at = 8;
    for _ in 0..count {
        let ace = acl.get(at..at + 8).ok_or("an ACE past the ACL")?;
        let size = usize::from(u16::from_le_bytes([ace[2], ace[3]]));
        if ace[0] != 0 {
            return Err(format!(
                "an ACE of type {} (only ACCESS_ALLOWED is modelled)",
                ace[0]
            ));
        }
        let mask = u32::from_le_bytes([ace[4], ace[5], ace[6], ace[7]]);
        let sid = acl.get(at + 8..at + size).ok_or("an ACE past the ACL")?;
        match sid {
            [1, 1, 0, 0, 0, 0, 0, 5, 18, 0, 0, 0] => system = Some(mask),
            [1, 2, 0, 0, 0, 0, 0, 5, 32, 0, 0, 0, 0x20, 2, 0, 0] => admins = Some(mask),
            [1, 1, 0, 0, 0, 0, 0, 5, 11, 0, 0, 0] => users = mask,
            other => {
                return Err(format!(
                    "an ACE for a SID the model does not know: {other:?}"
                ));
            }
        }
        at += size;
    }
    match (system, admins) {
        (Some(s), Some(a)) if s == a => Ok((a, users)),
        _ => Err("SYSTEM and Administrators must both be granted the same access".into()),
    }
}
