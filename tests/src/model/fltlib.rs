//! The user-mode side a sync provider calls: fltlib's communication-port functions and
//! the few kernel32 functions around them (events, threads, waits, overlapped results,
//! cancellation, drive letters, the thread's last error), with the signatures
//! windows-sys 0.61 declares.
//!
//! Owns: user-mode handles (which process holds each, and whether it is a port, an event
//! or a thread), event objects, user threads (CreateThread: the new thread runs in its
//! creator's process, which `std::thread::spawn` cannot express), OVERLAPPED completion,
//! the thread-local last error, the drive-letter table QueryDosDeviceW reads (derived from
//! the mounted volumes), and the NTSTATUS -> Win32 error -> HRESULT conversion fltlib
//! applies to FltMgr's answers.
//! Does not own: the port traffic itself; that is [`port`](super::port), the kernel half.
//!
//! Handles are per process, as on Windows: a handle works only from a thread of the
//! process that opened it ([`process::run_as`]). Killing a process closes its handles.
//! Waits hold the dispatcher lock of this module (never the kernel lock); completing a
//! request takes it after the channel lock, never before. A waiting thread sleeps on the
//! objects it waits for ([`waits`](super::waits)): setting an event, ending a thread or
//! completing an OVERLAPPED wakes only the threads waiting on that object.
//!
//! Not modelled: named events, I/O completion ports, alertable waits and APCs, waiting
//! on a port handle itself, suspended threads and thread exit codes, killing a process's
//! threads (they run to their end), drive letters other than those of local volumes, and
//! security attributes (ignored).

use std::cell::Cell;
use std::ffi::c_void;
use std::mem::offset_of;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use windows_sys::Wdk::Storage::FileSystem::Minifilters::PFLT_PORT;
use windows_sys::Win32::Foundation::{
    self as F, HANDLE, INVALID_HANDLE_VALUE, NTSTATUS, WAIT_EVENT, WAIT_FAILED, WAIT_OBJECT_0,
    WAIT_TIMEOUT, WIN32_ERROR,
};
use windows_sys::Win32::Security::SECURITY_ATTRIBUTES;
use windows_sys::Win32::Storage::InstallableFileSystems::{
    FILTER_MESSAGE_HEADER, FILTER_REPLY_HEADER, FLT_PORT_FLAG_SYNC_HANDLE,
};
use windows_sys::Win32::System::IO::OVERLAPPED;
use windows_sys::core::{BOOL, HRESULT, PCWSTR, PWSTR};

use super::files;
use super::port::{self, ClientId, HEADER_BYTES, MAX_CONTEXT, ReadStart};
use super::process;
use super::waits::{self, WaitQueue};
use super::{Machine, with_kernel};

/// `INFINITE` (winbase.h).
pub const INFINITE: u32 = u32::MAX;
/// `MAXIMUM_WAIT_OBJECTS` (winnt.h).
const MAXIMUM_WAIT_OBJECTS: u32 = 64;
/// `S_OK`.
pub const S_OK: HRESULT = 0;
/// `E_INVALIDARG`, which is `HRESULT_FROM_WIN32(ERROR_INVALID_PARAMETER)`.
const E_INVALIDARG: HRESULT = F::E_INVALIDARG;
/// `E_HANDLE`, which is `HRESULT_FROM_WIN32(ERROR_INVALID_HANDLE)`.
const E_HANDLE: HRESULT = F::E_HANDLE;
/// NTSTATUS facility of the filter manager (`FACILITY_FILTER_MANAGER`).
const FACILITY_FILTER_MANAGER: u32 = 0x1c;
/// HRESULT facility fltlib uses for filter-manager statuses
/// (`FACILITY_USERMODE_FILTER_MANAGER`).
const FACILITY_USERMODE_FILTER_MANAGER: u32 = 0x1f;

/// `HRESULT_FROM_WIN32`.
pub const fn hresult_from_win32(error: WIN32_ERROR) -> HRESULT {
    if error == 0 {
        S_OK
    } else {
        ((error & 0xffff) | 0x8007_0000) as HRESULT
    }
}

/// The Win32 error `RtlNtStatusToDosError` gives for the statuses the port paths
/// produce, the STATUS_CLOUD_FILE_* family included. Statuses outside this table map to
/// `ERROR_MR_MID_NOT_FOUND` (317), as Windows does for a status it has no entry for.
pub fn win32_from_nt(status: NTSTATUS) -> WIN32_ERROR {
    match status {
        F::STATUS_SUCCESS => F::ERROR_SUCCESS,
        F::STATUS_ACCESS_DENIED | F::STATUS_THREAD_IS_TERMINATING => F::ERROR_ACCESS_DENIED,
        F::STATUS_OBJECT_NAME_NOT_FOUND => F::ERROR_FILE_NOT_FOUND,
        F::STATUS_OBJECT_PATH_NOT_FOUND => F::ERROR_PATH_NOT_FOUND,
        F::STATUS_OBJECT_NAME_INVALID => F::ERROR_INVALID_NAME,
        F::STATUS_CONNECTION_COUNT_LIMIT => F::ERROR_CONNECTION_COUNT_LIMIT,
        // A disconnected port reads as a bad handle: the scanner sample's user-mode
        // half tests for HRESULT_FROM_WIN32(ERROR_INVALID_HANDLE) to notice it.
        F::STATUS_PORT_DISCONNECTED | F::STATUS_INVALID_HANDLE => F::ERROR_INVALID_HANDLE,
        F::STATUS_INVALID_PARAMETER => F::ERROR_INVALID_PARAMETER,
        F::STATUS_INSUFFICIENT_RESOURCES => F::ERROR_NO_SYSTEM_RESOURCES,
        F::STATUS_NO_MEMORY => F::ERROR_NOT_ENOUGH_MEMORY,
        F::STATUS_CANCELLED => F::ERROR_OPERATION_ABORTED,
        F::STATUS_BUFFER_OVERFLOW => F::ERROR_MORE_DATA,
        F::STATUS_BUFFER_TOO_SMALL => F::ERROR_INSUFFICIENT_BUFFER,
        F::STATUS_INVALID_BUFFER_SIZE | F::STATUS_INVALID_USER_BUFFER => {
            F::ERROR_INVALID_USER_BUFFER
        }
        // The memory manager's refusals (VirtualFree, VirtualProtect), as
        // RtlNtStatusToDosError maps them.
        F::STATUS_INVALID_PAGE_PROTECTION => F::ERROR_INVALID_PARAMETER,
        F::STATUS_MEMORY_NOT_ALLOCATED
        | F::STATUS_FREE_VM_NOT_AT_BASE
        | F::STATUS_NOT_COMMITTED => F::ERROR_INVALID_ADDRESS,
        F::STATUS_INFO_LENGTH_MISMATCH => F::ERROR_BAD_LENGTH,
        F::STATUS_REVISION_MISMATCH => F::ERROR_REVISION_MISMATCH,
        F::STATUS_NOT_SUPPORTED => F::ERROR_NOT_SUPPORTED,
        F::STATUS_INVALID_DEVICE_REQUEST | F::STATUS_NOT_IMPLEMENTED => F::ERROR_INVALID_FUNCTION,
        F::STATUS_UNSUCCESSFUL => F::ERROR_GEN_FAILURE,
        F::STATUS_PROCESS_IS_TERMINATING => F::ERROR_ACCESS_DENIED,
        F::STATUS_PENDING => F::ERROR_IO_PENDING,
        // Exceptions a guarded access to a user buffer returns as statuses.
        F::STATUS_ACCESS_VIOLATION | F::STATUS_DATATYPE_MISALIGNMENT => F::ERROR_NOACCESS,
        F::STATUS_IN_PAGE_ERROR => F::ERROR_SWAPERROR,
        // The cloud-file family, which the driver answers with (ntstatus.h / winerror.h).
        F::STATUS_CLOUD_FILE_SYNC_ROOT_METADATA_CORRUPT => {
            F::ERROR_CLOUD_FILE_SYNC_ROOT_METADATA_CORRUPT
        }
        F::STATUS_CLOUD_FILE_PROVIDER_NOT_RUNNING => F::ERROR_CLOUD_FILE_PROVIDER_NOT_RUNNING,
        F::STATUS_CLOUD_FILE_METADATA_CORRUPT => F::ERROR_CLOUD_FILE_METADATA_CORRUPT,
        F::STATUS_CLOUD_FILE_METADATA_TOO_LARGE => F::ERROR_CLOUD_FILE_METADATA_TOO_LARGE,
        F::STATUS_CLOUD_FILE_PROPERTY_VERSION_NOT_SUPPORTED => {
            F::ERROR_CLOUD_FILE_PROPERTY_VERSION_NOT_SUPPORTED
        }
        F::STATUS_CLOUD_FILE_NOT_IN_SYNC => F::ERROR_CLOUD_FILE_NOT_IN_SYNC,
        F::STATUS_CLOUD_FILE_ALREADY_CONNECTED => F::ERROR_CLOUD_FILE_ALREADY_CONNECTED,
        F::STATUS_CLOUD_FILE_NOT_SUPPORTED => F::ERROR_CLOUD_FILE_NOT_SUPPORTED,
        F::STATUS_CLOUD_FILE_INVALID_REQUEST => F::ERROR_CLOUD_FILE_INVALID_REQUEST,
        F::STATUS_CLOUD_FILE_READ_ONLY_VOLUME => F::ERROR_CLOUD_FILE_READ_ONLY_VOLUME,
        F::STATUS_CLOUD_FILE_CONNECTED_PROVIDER_ONLY => F::ERROR_CLOUD_FILE_CONNECTED_PROVIDER_ONLY,
        F::STATUS_CLOUD_FILE_VALIDATION_FAILED => F::ERROR_CLOUD_FILE_VALIDATION_FAILED,
        F::STATUS_CLOUD_FILE_AUTHENTICATION_FAILED => F::ERROR_CLOUD_FILE_AUTHENTICATION_FAILED,
        F::STATUS_CLOUD_FILE_INSUFFICIENT_RESOURCES => F::ERROR_CLOUD_FILE_INSUFFICIENT_RESOURCES,
        F::STATUS_CLOUD_FILE_NETWORK_UNAVAILABLE => F::ERROR_CLOUD_FILE_NETWORK_UNAVAILABLE,
        F::STATUS_CLOUD_FILE_UNSUCCESSFUL => F::ERROR_CLOUD_FILE_UNSUCCESSFUL,
        F::STATUS_CLOUD_FILE_NOT_UNDER_SYNC_ROOT => F::ERROR_CLOUD_FILE_NOT_UNDER_SYNC_ROOT,
        F::STATUS_CLOUD_FILE_IN_USE => F::ERROR_CLOUD_FILE_IN_USE,
        F::STATUS_CLOUD_FILE_PINNED => F::ERROR_CLOUD_FILE_PINNED,
        F::STATUS_CLOUD_FILE_REQUEST_ABORTED => F::ERROR_CLOUD_FILE_REQUEST_ABORTED,
        F::STATUS_CLOUD_FILE_PROPERTY_CORRUPT => F::ERROR_CLOUD_FILE_PROPERTY_CORRUPT,
        F::STATUS_CLOUD_FILE_ACCESS_DENIED => F::ERROR_CLOUD_FILE_ACCESS_DENIED,
        F::STATUS_CLOUD_FILE_INCOMPATIBLE_HARDLINKS => F::ERROR_CLOUD_FILE_INCOMPATIBLE_HARDLINKS,
        F::STATUS_CLOUD_FILE_PROPERTY_LOCK_CONFLICT => F::ERROR_CLOUD_FILE_PROPERTY_LOCK_CONFLICT,
        F::STATUS_CLOUD_FILE_REQUEST_CANCELED => F::ERROR_CLOUD_FILE_REQUEST_CANCELED,
        F::STATUS_CLOUD_FILE_PROVIDER_TERMINATED => F::ERROR_CLOUD_FILE_PROVIDER_TERMINATED,
        F::STATUS_CLOUD_FILE_REQUEST_TIMEOUT => F::ERROR_CLOUD_FILE_REQUEST_TIMEOUT,
        F::STATUS_CLOUD_FILE_DEHYDRATION_DISALLOWED => F::ERROR_CLOUD_FILE_DEHYDRATION_DISALLOWED,
        F::STATUS_NOT_A_CLOUD_FILE => F::ERROR_NOT_A_CLOUD_FILE,
        F::STATUS_NOT_A_CLOUD_SYNC_ROOT => F::ERROR_NOT_A_CLOUD_SYNC_ROOT,
        _ => F::ERROR_MR_MID_NOT_FOUND,
    }
}

/// The HRESULT a fltlib function returns for FltMgr's NTSTATUS: S_OK for any success
/// code; a filter-manager status keeps its code under the user-mode filter-manager
/// facility (`FILTER_HRESULT_FROM_FLT_NTSTATUS`, so STATUS_FLT_NO_WAITER_FOR_REPLY
/// becomes ERROR_FLT_NO_WAITER_FOR_REPLY); anything else is
/// `HRESULT_FROM_WIN32(RtlNtStatusToDosError(status))`. Where the model's table has no
/// entry, `HRESULT_FROM_NT(status)` keeps the status visible instead of collapsing it.
pub fn hresult_from_nt(status: NTSTATUS) -> HRESULT {
    if status >= 0 {
        return S_OK;
    }
    let raw = status as u32;
    if (raw >> 16) & 0x0fff == FACILITY_FILTER_MANAGER {
        return ((raw & 0x8000_ffff) | (FACILITY_USERMODE_FILTER_MANAGER << 16)) as HRESULT;
    }
    match win32_from_nt(status) {
        F::ERROR_MR_MID_NOT_FOUND => (raw | 0x1000_0000) as HRESULT,
        error => hresult_from_win32(error),
    }
}

thread_local! {
    static LAST_ERROR: Cell<WIN32_ERROR> = const { Cell::new(0) };
}

/// GetLastError.
#[unsafe(no_mangle)]
pub extern "system" fn GetLastError() -> WIN32_ERROR {
    LAST_ERROR.with(Cell::get)
}

/// SetLastError.
#[unsafe(no_mangle)]
pub extern "system" fn SetLastError(error: WIN32_ERROR) {
    LAST_ERROR.with(|c| c.set(error));
}

/// Sets the last error and returns the failure value of a BOOL function.
fn fail(error: WIN32_ERROR) -> BOOL {
    SetLastError(error);
    0
}

/// An event object (CreateEventW).
pub(crate) struct Event {
    manual_reset: bool,
    /// Changed only under the dispatcher lock, so a wait checks and consumes it
    /// atomically with its other objects.
    signaled: AtomicBool,
}

/// What a user-mode handle refers to.
#[derive(Clone)]
pub(crate) enum UserObject {
    /// A communication port connection (FilterConnectCommunicationPort).
    Port {
        client: PFLT_PORT,
        /// Opened with FLT_PORT_FLAG_SYNC_HANDLE: every request completes before
        /// returning.
        synchronous: bool,
    },
    Event(Arc<Event>),
    /// A user thread (CreateThread). The event is manual-reset and set when the thread
    /// returns, which is what waiting on a thread handle waits for.
    Thread(Arc<Event>),
}

/// One entry of a process's handle table.
pub(crate) struct UserHandle {
    pub(crate) pid: u32,
    pub(crate) object: UserObject,
}

/// What a user-mode wait waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Wake {
    /// An event or a thread's exit event, by the address of its [`Event`].
    Event(usize),
    /// An OVERLAPPED without an event (GetOverlappedResult waits on the request itself),
    /// by address.
    Overlapped(usize),
}

impl Wake {
    fn event(event: &Arc<Event>) -> Self {
        Self::Event(Arc::as_ptr(event) as usize)
    }
}

/// Guards every event's state and every OVERLAPPED the model completes, like the NT
/// dispatcher lock: one lock so WaitForMultipleObjects sees its objects consistently.
/// What it guards also holds the threads waiting, by what they wait for.
static DISPATCHER: LazyLock<Mutex<WaitQueue<Wake>>> = LazyLock::new(Mutex::default);

fn dispatcher() -> MutexGuard<'static, WaitQueue<Wake>> {
    DISPATCHER.lock().unwrap_or_else(PoisonError::into_inner)
}

/// An OVERLAPPED of a pending request.
///
/// # Invariants
/// Points to a writable OVERLAPPED for as long as the request is pending: the caller of
/// an overlapped request must keep it alive until the request completes.
pub(crate) struct OverlappedPtr(*mut OVERLAPPED);

// SAFETY: written only by the completing thread under the dispatcher lock, while the
// request is pending (see the invariants).
unsafe impl Send for OverlappedPtr {}

impl OverlappedPtr {
    fn field(&self, offset: usize) -> *mut usize {
        self.0.wrapping_byte_add(offset).cast()
    }
}

/// How a pending FilterGetMessage reports its end.
pub(crate) enum Completion {
    /// The caller blocks in FilterGetMessage and reads the outcome itself.
    Sync,
    /// The caller gets ERROR_IO_PENDING; the outcome goes to the OVERLAPPED, then the
    /// event (if any) is set.
    Overlapped {
        overlapped: OverlappedPtr,
        event: Option<Arc<Event>>,
    },
}

impl Completion {
    /// The OVERLAPPED address, for CancelIoEx to match on.
    pub(crate) fn overlapped(&self) -> Option<usize> {
        match self {
            Completion::Sync => None,
            Completion::Overlapped { overlapped, .. } => Some(overlapped.0 as usize),
        }
    }

    /// Completes an overlapped request as the I/O manager does: the status into
    /// `Internal`, the byte count into `InternalHigh`, then the event.
    pub(crate) fn complete(self, status: NTSTATUS, bytes: u32) {
        let Completion::Overlapped { overlapped, event } = self else {
            return;
        };
        let mut waits = dispatcher();
        let high = overlapped.field(offset_of!(OVERLAPPED, InternalHigh));
        // SAFETY: the pending request's OVERLAPPED (OverlappedPtr invariants).
        unsafe { high.write_volatile(bytes as usize) };
        let internal = overlapped.field(offset_of!(OVERLAPPED, Internal));
        // SAFETY: as above.
        unsafe { internal.write_volatile(status as u32 as usize) };
        if let Some(event) = event {
            event.signaled.store(true, Ordering::SeqCst);
            waits.wake(Wake::event(&event));
        }
        waits.wake(Wake::Overlapped(overlapped.0 as usize));
    }
}

/// The object behind `handle` if the calling thread's process holds it.
fn lookup(handle: HANDLE) -> Option<UserObject> {
    let pid = process::current_pid();
    with_kernel(|k| {
        k.user_handles
            .get(&(handle as isize))
            .filter(|h| h.pid == pid)
            .map(|h| h.object.clone())
    })
}

fn lookup_port(handle: HANDLE) -> Option<(PFLT_PORT, bool)> {
    match lookup(handle)? {
        UserObject::Port {
            client,
            synchronous,
        } => Some((client, synchronous)),
        UserObject::Event(_) | UserObject::Thread(_) => None,
    }
}

fn lookup_event(handle: HANDLE) -> Option<Arc<Event>> {
    match lookup(handle)? {
        UserObject::Event(event) => Some(event),
        UserObject::Port { .. } | UserObject::Thread(_) => None,
    }
}

/// The object a wait on `handle` waits for: an event, or a thread's exit.
fn lookup_waitable(handle: HANDLE) -> Option<Arc<Event>> {
    match lookup(handle)? {
        UserObject::Event(event) | UserObject::Thread(event) => Some(event),
        UserObject::Port { .. } => None,
    }
}

fn insert_handle(object: UserObject) -> isize {
    let pid = process::current_pid();
    with_kernel(|k| {
        let h = k.handle();
        k.user_handles.insert(h, UserHandle { pid, object });
        h
    })
}

/// Connects the calling thread's process to port `name`; the new user handle.
fn open_port(name: &str, context: &[u8], synchronous: bool) -> Result<isize, NTSTATUS> {
    let client = port::connect(name, context)?;
    Ok(insert_handle(UserObject::Port {
        client,
        synchronous,
    }))
}

/// Closes a user handle whoever holds it, on a thread of the process that holds it
/// (so DisconnectNotify sees that process as current). False if there is no such handle.
fn close_user_handle(handle: isize) -> bool {
    let Some(entry) = with_kernel(|k| k.user_handles.remove(&handle)) else {
        return false;
    };
    if let UserObject::Port { client, .. } = entry.object {
        process::run_as(entry.pid, || port::handle_closed(client));
    }
    true
}

/// Process exit: every handle the process holds is closed.
pub(crate) fn close_process_handles(pid: u32) {
    let mut handles: Vec<isize> = with_kernel(|k| {
        k.user_handles
            .iter()
            .filter(|(_, h)| h.pid == pid)
            .map(|(h, _)| *h)
            .collect()
    });
    handles.sort_unstable();
    for handle in handles {
        close_user_handle(handle);
    }
}

/// FilterConnectCommunicationPort.
///
/// # Safety
/// `port_name` is a NUL-terminated UTF-16 string; `context` holds `context_size` bytes;
/// `port` is writable.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn FilterConnectCommunicationPort(
    port_name: PCWSTR,
    options: u32,
    context: *const c_void,
    context_size: u16,
    _security_attributes: *const SECURITY_ATTRIBUTES,
    port: *mut HANDLE,
) -> HRESULT {
    if port.is_null() {
        return E_INVALIDARG;
    }
    // SAFETY: checked non-null; the caller's out variable. Documented: it receives
    // INVALID_HANDLE_VALUE unless the call succeeds.
    unsafe { port.write(INVALID_HANDLE_VALUE) };
    if port_name.is_null()
        || options & !FLT_PORT_FLAG_SYNC_HANDLE != 0
        || (context.is_null() && context_size != 0)
        || usize::from(context_size) > MAX_CONTEXT
    {
        return E_INVALIDARG;
    }
    // SAFETY: a NUL-terminated wide string, per the contract.
    let name = unsafe { wide(port_name) };
    let context: &[u8] = if context_size == 0 {
        &[]
    } else {
        // SAFETY: `context_size` readable bytes, per the contract.
        unsafe { std::slice::from_raw_parts(context.cast(), usize::from(context_size)) }
    };
    match open_port(&name, context, options & FLT_PORT_FLAG_SYNC_HANDLE != 0) {
        Ok(handle) => {
            // SAFETY: as above.
            unsafe { port.write(handle as HANDLE) };
            S_OK
        }
        Err(status) => hresult_from_nt(status),
    }
}

/// # Safety
/// `s` is a NUL-terminated UTF-16 string.
unsafe fn wide(s: PCWSTR) -> String {
    let mut len = 0;
    // SAFETY: every unit up to and including the terminator is readable.
    while unsafe { s.wrapping_add(len).read() } != 0 {
        len += 1;
    }
    // SAFETY: `len` units before the terminator.
    String::from_utf16_lossy(unsafe { std::slice::from_raw_parts(s, len) })
}

/// FilterGetMessage: the next message the driver sent on this connection, preceded by
/// its FILTER_MESSAGE_HEADER. Without an OVERLAPPED (or on a port opened with
/// FLT_PORT_FLAG_SYNC_HANDLE) it blocks; with one it returns
/// `HRESULT_FROM_WIN32(ERROR_IO_PENDING)` and completes through the OVERLAPPED and its
/// event. A message longer than the buffer is cut: ERROR_MORE_DATA.
///
/// # Safety
/// `message` holds `message_size` writable bytes until the request completes;
/// `overlapped` is NULL or stays valid until then.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn FilterGetMessage(
    port: HANDLE,
    message: *mut FILTER_MESSAGE_HEADER,
    message_size: u32,
    overlapped: *mut OVERLAPPED,
) -> HRESULT {
    let Some((client, synchronous)) = lookup_port(port) else {
        return E_HANDLE;
    };
    if message.is_null() || (message_size as usize) < HEADER_BYTES {
        // (inference) FltMgr needs at least the header to describe the message.
        return E_INVALIDARG;
    }
    let channel = match port::live_channel(client) {
        Ok(channel) => channel,
        Err(status) => return hresult_from_nt(status),
    };
    let buffer = message.cast::<u8>();
    let len = message_size as usize;
    if overlapped.is_null() || synchronous {
        return match channel.read(port as isize, buffer, len, Completion::Sync) {
            ReadStart::Done(status, bytes) => {
                if !overlapped.is_null() {
                    // A synchronous handle still reports through the OVERLAPPED.
                    Completion::Overlapped {
                        overlapped: OverlappedPtr(overlapped),
                        event: None,
                    }
                    .complete(status, bytes);
                }
                hresult_from_nt(status)
            }
            ReadStart::Pending => hresult_from_win32(F::ERROR_IO_PENDING),
        };
    }
    let ov = OverlappedPtr(overlapped);
    // SAFETY: the caller's OVERLAPPED, valid per the contract.
    let h_event = unsafe { ov.field(offset_of!(OVERLAPPED, hEvent)).read_volatile() };
    // The low bit only tells the system not to queue to a completion port.
    let h_event = (h_event & !1) as HANDLE;
    let event = if h_event.is_null() {
        None
    } else {
        match lookup_event(h_event) {
            Some(event) => Some(event),
            None => return E_HANDLE,
        }
    };
    {
        // The I/O manager marks the request pending and resets its event at issue.
        let _dispatcher = dispatcher();
        if let Some(event) = &event {
            event.signaled.store(false, Ordering::SeqCst);
        }
        let internal = ov.field(offset_of!(OVERLAPPED, Internal));
        // SAFETY: the caller's OVERLAPPED, valid per the contract.
        unsafe { internal.write_volatile(F::STATUS_PENDING as u32 as usize) };
        let high = ov.field(offset_of!(OVERLAPPED, InternalHigh));
        // SAFETY: as above.
        unsafe { high.write_volatile(0) };
    }
    let completion = Completion::Overlapped {
        // INVARIANT: the caller keeps it valid until completion (contract).
        overlapped: ov,
        event,
    };
    match channel.read(port as isize, buffer, len, completion) {
        ReadStart::Pending => hresult_from_win32(F::ERROR_IO_PENDING),
        ReadStart::Done(status, _) => hresult_from_nt(status),
    }
}

/// FilterReplyMessage: answers the message `MessageId` names. The driver receives what
/// follows the FILTER_REPLY_HEADER (the header's Status is not passed on); a reply longer
/// than the driver's buffer is cut and the driver's FltSendMessage returns
/// STATUS_BUFFER_OVERFLOW. No driver waiting (timed out, or no reply asked for):
/// ERROR_FLT_NO_WAITER_FOR_REPLY.
///
/// # Safety
/// `reply` holds `reply_size` readable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn FilterReplyMessage(
    port: HANDLE,
    reply: *const FILTER_REPLY_HEADER,
    reply_size: u32,
) -> HRESULT {
    let Some((client, _)) = lookup_port(port) else {
        return E_HANDLE;
    };
    if reply.is_null() || (reply_size as usize) < HEADER_BYTES {
        return E_INVALIDARG;
    }
    // SAFETY: at least a header is readable (checked); user buffers need not be aligned.
    let header = unsafe { reply.read_unaligned() };
    // SAFETY: `reply_size` readable bytes, the header first.
    let payload = unsafe {
        std::slice::from_raw_parts(
            reply.cast::<u8>().wrapping_add(HEADER_BYTES),
            reply_size as usize - HEADER_BYTES,
        )
    };
    match port::live_channel(client) {
        Ok(channel) => hresult_from_nt(channel.reply(header.MessageId, payload)),
        Err(status) => hresult_from_nt(status),
    }
}

/// FilterSendMessage: the driver's MessageNotify runs on this thread with these very
/// buffers; `*bytes_returned` gets the output length it reported.
///
/// # Safety
/// The buffers are valid for their sizes (or NULL); `bytes_returned` is writable.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn FilterSendMessage(
    port: HANDLE,
    in_buffer: *const c_void,
    in_size: u32,
    out_buffer: *mut c_void,
    out_size: u32,
    bytes_returned: *mut u32,
) -> HRESULT {
    let Some((client, _)) = lookup_port(port) else {
        return E_HANDLE;
    };
    if bytes_returned.is_null() {
        return E_INVALIDARG;
    }
    let (status, returned) =
        port::message_notify(client, in_buffer.cast_mut(), in_size, out_buffer, out_size);
    // IoStatus.Information reaches the caller for success and warning statuses only.
    let returned = if (status as u32) >> 30 == 3 {
        0
    } else {
        returned
    };
    // SAFETY: checked non-null; the caller's variable.
    unsafe { bytes_returned.write(returned) };
    hresult_from_nt(status)
}

/// CloseHandle. Closing a port handle ends the connection: the process's pending
/// FilterGetMessage calls on it complete with ERROR_OPERATION_ABORTED, the driver's
/// FltSendMessage calls on it return STATUS_PORT_DISCONNECTED, then DisconnectNotify runs.
/// A file handle of the I/O model is closed there (NtClose).
#[unsafe(no_mangle)]
pub extern "system" fn CloseHandle(object: HANDLE) -> BOOL {
    if lookup(object).is_some() && close_user_handle(object as isize) {
        return 1;
    }
    match files::close(files::Handle(object as isize)) {
        F::STATUS_SUCCESS => 1,
        status => fail(win32_from_nt(status)),
    }
}

/// CreateEventW. Unnamed events only.
///
/// # Safety
/// Pointers are NULL or valid (none is read: security attributes are not modelled).
#[unsafe(no_mangle)]
pub unsafe extern "system" fn CreateEventW(
    _attributes: *const SECURITY_ATTRIBUTES,
    manual_reset: BOOL,
    initial_state: BOOL,
    name: PCWSTR,
) -> HANDLE {
    if !name.is_null() {
        // Named events share one object across processes; nothing here needs that.
        SetLastError(F::ERROR_NOT_SUPPORTED);
        return std::ptr::null_mut();
    }
    let event = Arc::new(Event {
        manual_reset: manual_reset != 0,
        signaled: AtomicBool::new(initial_state != 0),
    });
    SetLastError(F::ERROR_SUCCESS);
    insert_handle(UserObject::Event(event)) as HANDLE
}

/// SetEvent.
#[unsafe(no_mangle)]
pub extern "system" fn SetEvent(event: HANDLE) -> BOOL {
    let Some(event) = lookup_event(event) else {
        return fail(F::ERROR_INVALID_HANDLE);
    };
    let mut waits = dispatcher();
    event.signaled.store(true, Ordering::SeqCst);
    waits.wake(Wake::event(&event));
    1
}

/// ResetEvent.
#[unsafe(no_mangle)]
pub extern "system" fn ResetEvent(event: HANDLE) -> BOOL {
    let Some(event) = lookup_event(event) else {
        return fail(F::ERROR_INVALID_HANDLE);
    };
    let _dispatcher = dispatcher();
    event.signaled.store(false, Ordering::SeqCst);
    1
}

/// Waits under the dispatcher lock until `ready` says the wait is satisfied (and has
/// consumed what it needed), or `milliseconds` pass, sleeping on `objects` in between.
fn wait_until(
    milliseconds: u32,
    objects: &[Wake],
    mut ready: impl FnMut() -> Option<WAIT_EVENT>,
) -> WAIT_EVENT {
    let deadline = (milliseconds != INFINITE)
        .then(|| Instant::now() + Duration::from_millis(milliseconds.into()));
    let mut guard = dispatcher();
    loop {
        if let Some(result) = ready() {
            return result;
        }
        let left = match deadline {
            None => None,
            Some(deadline) => {
                let now = Instant::now();
                if now >= deadline {
                    return WAIT_TIMEOUT;
                }
                Some(deadline - now)
            }
        };
        guard = waits::sleep(&*DISPATCHER, guard, |w| Some(w), objects, None, left);
    }
}

/// Takes a signaled event as a satisfied wait does: an auto-reset event resets.
fn consume(event: &Event) {
    if !event.manual_reset {
        event.signaled.store(false, Ordering::SeqCst);
    }
}

/// WaitForSingleObject, on an event or a thread.
#[unsafe(no_mangle)]
pub extern "system" fn WaitForSingleObject(object: HANDLE, milliseconds: u32) -> WAIT_EVENT {
    let Some(event) = lookup_waitable(object) else {
        SetLastError(F::ERROR_INVALID_HANDLE);
        return WAIT_FAILED;
    };
    wait_until(milliseconds, &[Wake::event(&event)], || {
        event.signaled.load(Ordering::SeqCst).then(|| {
            consume(&event);
            WAIT_OBJECT_0
        })
    })
}

/// WaitForMultipleObjects, on events and threads: the lowest signaled index, or all at
/// once.
///
/// # Safety
/// `handles` holds `count` handles.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn WaitForMultipleObjects(
    count: u32,
    handles: *const HANDLE,
    wait_all: BOOL,
    milliseconds: u32,
) -> WAIT_EVENT {
    if count == 0 || count > MAXIMUM_WAIT_OBJECTS || handles.is_null() {
        SetLastError(F::ERROR_INVALID_PARAMETER);
        return WAIT_FAILED;
    }
    // SAFETY: `count` handles, per the contract.
    let handles = unsafe { std::slice::from_raw_parts(handles, count as usize) };
    let mut events = Vec::with_capacity(handles.len());
    for &handle in handles {
        match lookup_waitable(handle) {
            Some(event) => events.push(event),
            None => {
                SetLastError(F::ERROR_INVALID_HANDLE);
                return WAIT_FAILED;
            }
        }
    }
    let objects: Vec<Wake> = events.iter().map(Wake::event).collect();
    wait_until(milliseconds, &objects, || {
        if wait_all != 0 {
            if events.iter().all(|e| e.signaled.load(Ordering::SeqCst)) {
                events.iter().for_each(|e| consume(e));
                return Some(WAIT_OBJECT_0);
            }
            return None;
        }
        let index = events
            .iter()
            .position(|e| e.signaled.load(Ordering::SeqCst))?;
        consume(&events[index]);
        Some(WAIT_OBJECT_0 + index as u32)
    })
}

/// GetOverlappedResult: FALSE with ERROR_IO_INCOMPLETE while pending (unless told to
/// wait, which waits on the event, or on the request itself when there is none); then
/// the byte count, and FALSE with the request's error (ERROR_MORE_DATA for a cut
/// message, ERROR_OPERATION_ABORTED for a cancelled one) unless it succeeded.
///
/// # Safety
/// `overlapped` is a valid OVERLAPPED; `transferred` is writable.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn GetOverlappedResult(
    file: HANDLE,
    overlapped: *const OVERLAPPED,
    transferred: *mut u32,
    wait: BOOL,
) -> BOOL {
    if lookup(file).is_none() {
        return fail(F::ERROR_INVALID_HANDLE);
    }
    if overlapped.is_null() || transferred.is_null() {
        return fail(F::ERROR_INVALID_PARAMETER);
    }
    let ov = OverlappedPtr(overlapped.cast_mut());
    let status_of = || {
        let internal = ov.field(offset_of!(OVERLAPPED, Internal));
        // SAFETY: the caller's OVERLAPPED, valid per the contract.
        unsafe { internal.read_volatile() as u32 as NTSTATUS }
    };
    let pending = {
        let _dispatcher = dispatcher();
        status_of() == F::STATUS_PENDING
    };
    if pending {
        if wait == 0 {
            return fail(F::ERROR_IO_INCOMPLETE);
        }
        // SAFETY: as above.
        let h_event = unsafe { ov.field(offset_of!(OVERLAPPED, hEvent)).read_volatile() };
        let h_event = (h_event & !1) as HANDLE;
        if h_event.is_null() {
            wait_until(INFINITE, &[Wake::Overlapped(ov.0 as usize)], || {
                (status_of() != F::STATUS_PENDING).then_some(WAIT_OBJECT_0)
            });
        } else if WaitForSingleObject(h_event, INFINITE) == WAIT_FAILED {
            return 0;
        }
    }
    let (status, bytes) = {
        let _dispatcher = dispatcher();
        let high = ov.field(offset_of!(OVERLAPPED, InternalHigh));
        // SAFETY: as above.
        (status_of(), unsafe { high.read_volatile() } as u32)
    };
    // SAFETY: checked non-null; the caller's variable.
    unsafe { transferred.write(bytes) };
    if status < 0 {
        return fail(win32_from_nt(status));
    }
    1
}

/// CancelIoEx: cancels this process's pending requests on `file` (only the one using
/// `overlapped` when it is not NULL); they complete with ERROR_OPERATION_ABORTED.
/// FALSE with ERROR_NOT_FOUND when there was none. On a file handle of the I/O model,
/// every operation in flight on it is cancelled (`overlapped` is not matched there).
///
/// # Safety
/// `overlapped` is only compared, never read.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn CancelIoEx(file: HANDLE, overlapped: *const OVERLAPPED) -> BOOL {
    let cancelled = match lookup(file) {
        Some(UserObject::Port { client, .. }) => {
            let channel = with_kernel(|k| k.client_ports.get(&client).map(|c| c.channel.clone()));
            let which = (!overlapped.is_null()).then_some(overlapped as usize);
            channel.map_or(0, |c| c.cancel(file as isize, which))
        }
        Some(UserObject::Event(_) | UserObject::Thread(_)) => 0,
        None => files::cancel_io(files::Handle(file as isize)),
    };
    if cancelled == 0 {
        return fail(F::ERROR_NOT_FOUND);
    }
    1
}

/// `STACK_SIZE_PARAM_IS_A_RESERVATION` (processthreadsapi.h): changes only how the stack
/// size is read, which the model ignores.
const STACK_SIZE_PARAM_IS_A_RESERVATION: u32 = 0x0001_0000;

/// Thread ids handed out by CreateThread: multiples of four, as Windows' are, from a
/// range no real thread of a small test machine has.
static NEXT_THREAD_ID: AtomicU32 = AtomicU32::new(0x7e50);

/// The start routine's parameter on its way to the new thread.
struct StartParameter(*mut c_void);

// SAFETY: the pointer is only handed to the start routine, as CreateThread does; what it
// points to and how it may be shared is the contract between the caller and its routine.
unsafe impl Send for StartParameter {}

impl StartParameter {
    /// Taking `self` makes a closure capture the whole wrapper, not the raw field.
    fn into_raw(self) -> *mut c_void {
        self.0
    }
}

/// CreateThread: `start(parameter)` runs on a new thread of the calling thread's process,
/// so the handles that process holds work there. The handle is signaled once the routine
/// returns; close it with CloseHandle (the thread runs on regardless).
/// `CREATE_SUSPENDED` is refused with ERROR_NOT_SUPPORTED: ResumeThread is not modelled.
///
/// # Safety
/// `start` may be called on another thread with `parameter`; `thread_id` is NULL or
/// writable. A panic that leaves `start` aborts the process, as it would on Windows.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn CreateThread(
    _attributes: *const SECURITY_ATTRIBUTES,
    _stack_size: usize,
    start: Option<unsafe extern "system" fn(parameter: *mut c_void) -> u32>,
    parameter: *const c_void,
    flags: u32,
    thread_id: *mut u32,
) -> HANDLE {
    let Some(start) = start else {
        SetLastError(F::ERROR_INVALID_PARAMETER);
        return std::ptr::null_mut();
    };
    if flags & !STACK_SIZE_PARAM_IS_A_RESERVATION != 0 {
        SetLastError(F::ERROR_NOT_SUPPORTED);
        return std::ptr::null_mut();
    }
    let pid = process::current_pid();
    let exited = Arc::new(Event {
        manual_reset: true,
        signaled: AtomicBool::new(false),
    });
    let handle = insert_handle(UserObject::Thread(exited.clone()));
    let id = NEXT_THREAD_ID.fetch_add(4, Ordering::Relaxed);
    let parameter = StartParameter(parameter.cast_mut());
    let spawned = std::thread::Builder::new()
        .name(format!("user thread {id:#x} of pid {pid}"))
        .spawn(move || {
            let parameter = parameter.into_raw();
            // SAFETY: the caller's start routine and parameter, per the contract.
            process::run_as(pid, || unsafe { start(parameter) });
            let mut waits = dispatcher();
            exited.signaled.store(true, Ordering::SeqCst);
            waits.wake(Wake::event(&exited));
        });
    if spawned.is_err() {
        with_kernel(|k| k.user_handles.remove(&handle));
        SetLastError(F::ERROR_NOT_ENOUGH_MEMORY);
        return std::ptr::null_mut();
    }
    if !thread_id.is_null() {
        // SAFETY: checked non-null; the caller's variable.
        unsafe { thread_id.write(id) };
    }
    SetLastError(F::ERROR_SUCCESS);
    handle as HANDLE
}

/// The drive letters of the mounted volumes: `C:` names `\Device\HarddiskVolume1`, `D:`
/// `\Device\HarddiskVolume2`, and so on, as a fresh single-disk install numbers them.
/// Volumes without such a name (network volumes) have no letter.
fn drive_letters() -> Vec<(char, String)> {
    let mut letters: Vec<(char, String)> = with_kernel(|k| {
        k.volumes
            .iter()
            .filter_map(|v| {
                let n: u32 = v
                    .config
                    .device_name
                    .strip_prefix("\\Device\\HarddiskVolume")?
                    .parse()
                    .ok()?;
                let letter =
                    char::from_u32(u32::from('C') + n.checked_sub(1)?).filter(|c| *c <= 'Z')?;
                Some((letter, v.config.device_name.clone()))
            })
            .collect()
    });
    letters.sort();
    letters
}

/// QueryDosDeviceW: the NT device a drive letter (`C:`, any case) names, as a
/// double-NUL-terminated list of one; with a NULL name, every drive letter in use. Returns
/// the code units stored, terminators included; 0 with ERROR_FILE_NOT_FOUND for a name
/// that is not a drive letter in use (`C:\` included) and with ERROR_INSUFFICIENT_BUFFER
/// when `max` units are too few.
///
/// # Safety
/// `device_name` is NULL or a NUL-terminated UTF-16 string; `target_path` holds `max`
/// writable code units.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn QueryDosDeviceW(
    device_name: PCWSTR,
    target_path: PWSTR,
    max: u32,
) -> u32 {
    let letters = drive_letters();
    let entries: Vec<String> = if device_name.is_null() {
        letters.iter().map(|(l, _)| format!("{l}:")).collect()
    } else {
        // SAFETY: a NUL-terminated wide string, per the contract.
        let name = unsafe { wide(device_name) }.to_ascii_uppercase();
        let found = letters
            .into_iter()
            .find(|(l, _)| name.strip_suffix(':') == Some(l.encode_utf8(&mut [0; 4])));
        match found {
            Some((_, device)) => vec![device],
            None => {
                SetLastError(F::ERROR_FILE_NOT_FOUND);
                return 0;
            }
        }
    };
    let mut units: Vec<u16> = Vec::new();
    for entry in &entries {
        units.extend(entry.encode_utf16());
        units.push(0);
    }
    units.push(0);
    if target_path.is_null() || units.len() > max as usize {
        SetLastError(F::ERROR_INSUFFICIENT_BUFFER);
        return 0;
    }
    // SAFETY: `max` writable units, at least `units.len()` (checked).
    unsafe { std::ptr::copy_nonoverlapping(units.as_ptr(), target_path, units.len()) };
    SetLastError(F::ERROR_SUCCESS);
    units.len() as u32
}

impl Machine {
    /// `FilterConnectCommunicationPort(name, 0, context, ...)` from a thread of process
    /// `pid`: the NTSTATUS the driver (or FltMgr) refused with, or the connection, whose
    /// handle that process holds.
    pub fn connect(&self, name: &str, context: &[u8], pid: u32) -> Result<ClientId, NTSTATUS> {
        process::run_as(pid, || open_port(name, context, false)).map(ClientId)
    }

    /// The provider closes its port handle: pending FilterGetMessage calls are aborted,
    /// DisconnectNotify runs.
    pub fn disconnect(&self, client: ClientId) {
        close_user_handle(client.0);
    }

    /// Fault injection: the connection is severed as if the provider's handle closed
    /// abruptly under it (its process crashing mid-call): waiting FltSendMessage calls
    /// return STATUS_PORT_DISCONNECTED, pending reads are aborted, DisconnectNotify
    /// runs. Returns false if the handle was already closed.
    pub fn sever(&self, client: ClientId) -> bool {
        close_user_handle(client.0)
    }
}
