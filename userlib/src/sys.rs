//! The Windows calls the library makes — fltlib's port functions, the kernel32
//! functions around them and ntdll's placeholder compatibility modes — each wrapped once,
//! so that this module holds all of the crate's `unsafe`.
//!
//! Owns: handle lifetime ([`Handle`] closes on drop), threads (started with
//! `CreateThread` so that, in the kernel model, they belong to the caller's process as
//! they do on Windows), events and waits, the overlapped `FilterGetMessage` of the message
//! loop, `FilterSendMessage`, drive-letter lookup, and the four
//! `Rtl*PlaceholderCompatibilityMode` calls (raw `PHCM_*` values in and out). Does not
//! own: what the bytes mean (`proto`) or what to do with them (the rest of the crate).
//!
//! On Windows these symbols come from fltlib.dll, kernel32.dll and ntdll.dll; elsewhere
//! the kernel model in `cloudflt-tests` defines them, and this same code runs against it.

use std::ffi::c_void;
use std::mem::size_of;
use std::panic::AssertUnwindSafe;

use windows_sys::Wdk::Storage::FileSystem::{
    RtlQueryProcessPlaceholderCompatibilityMode, RtlQueryThreadPlaceholderCompatibilityMode,
    RtlSetProcessPlaceholderCompatibilityMode, RtlSetThreadPlaceholderCompatibilityMode,
};
use windows_sys::Win32::Foundation::{
    CloseHandle, ERROR_INSUFFICIENT_BUFFER, ERROR_IO_PENDING, ERROR_MORE_DATA, GetLastError,
    HANDLE, INVALID_HANDLE_VALUE, WAIT_FAILED, WAIT_OBJECT_0,
};
use windows_sys::Win32::Storage::FileSystem::QueryDosDeviceW;
use windows_sys::Win32::Storage::InstallableFileSystems::{
    FILTER_MESSAGE_HEADER, FilterConnectCommunicationPort, FilterGetMessage, FilterSendMessage,
};
use windows_sys::Win32::System::IO::{CancelIoEx, GetOverlappedResult, OVERLAPPED};
use windows_sys::Win32::System::Threading::{
    CreateEventW, CreateThread, INFINITE, SetEvent, WaitForMultipleObjects, WaitForSingleObject,
};

use crate::Error;

/// `HRESULT_FROM_WIN32(ERROR_IO_PENDING)`: how an overlapped FilterGetMessage says it
/// was queued.
const HRESULT_IO_PENDING: i32 = (0x8007_0000 | ERROR_IO_PENDING) as i32;

/// The calling thread's last Win32 error as an [`Error::Io`] of `function`.
fn last_error(function: &'static str) -> Error {
    // SAFETY: reads the calling thread's last-error value; no arguments.
    let code = unsafe { GetLastError() };
    Error::Io { function, code }
}

/// A kernel object handle this process owns, closed when dropped.
///
/// # Invariants
/// Holds a valid handle, not NULL nor `INVALID_HANDLE_VALUE`, that nothing else closes.
#[derive(Debug)]
pub(crate) struct Handle(HANDLE);

// SAFETY: a kernel handle is a process-wide value; the objects behind the handles this
// crate opens (ports, events, threads) may be used from any thread of the process.
unsafe impl Send for Handle {}
// SAFETY: as above; every call made through `&Handle` is thread-safe in the kernel.
unsafe impl Sync for Handle {}

impl Handle {
    /// Takes ownership of `raw`, or `None` for NULL and `INVALID_HANDLE_VALUE`.
    fn new(raw: HANDLE) -> Option<Self> {
        // INVARIANT: both invalid values are refused; the caller hands over ownership.
        (!raw.is_null() && raw != INVALID_HANDLE_VALUE).then_some(Self(raw))
    }

    fn raw(&self) -> HANDLE {
        self.0
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        // Nothing useful can be done about a failed close: the handle is gone either way.
        // SAFETY: the handle is valid and owned by this value alone (type invariants).
        unsafe { CloseHandle(self.0) };
    }
}

/// A new unnamed event.
pub(crate) fn create_event(manual_reset: bool) -> Result<Handle, Error> {
    // SAFETY: no security attributes and no name, both documented as optional.
    let raw = unsafe {
        CreateEventW(
            std::ptr::null(),
            i32::from(manual_reset),
            0,
            std::ptr::null(),
        )
    };
    Handle::new(raw).ok_or_else(|| last_error("CreateEventW"))
}

/// Signals an event.
pub(crate) fn set_event(event: &Handle) -> Result<(), Error> {
    // SAFETY: a valid event handle, borrowed for the call.
    if unsafe { SetEvent(event.raw()) } == 0 {
        return Err(last_error("SetEvent"));
    }
    Ok(())
}

/// Waits without a timeout until one of `objects` is signaled; its index.
pub(crate) fn wait_any(objects: &[&Handle]) -> Result<usize, Error> {
    let raw: Vec<HANDLE> = objects.iter().map(|h| h.raw()).collect();
    let count = u32::try_from(raw.len()).unwrap_or(u32::MAX);
    // SAFETY: `raw` holds `count` valid handles for the duration of the call.
    let result = unsafe { WaitForMultipleObjects(count, raw.as_ptr(), 0, INFINITE) };
    if result == WAIT_FAILED {
        return Err(last_error("WaitForMultipleObjects"));
    }
    match result.checked_sub(WAIT_OBJECT_0) {
        Some(index) if (index as usize) < raw.len() => Ok(index as usize),
        // WAIT_ABANDONED_0 + i concerns mutexes only, which are not waited on here.
        _ => Err(Error::Io {
            function: "WaitForMultipleObjects",
            code: result,
        }),
    }
}

/// The work a thread started by [`spawn`] does.
type ThreadMain = Box<dyn FnOnce() + Send + 'static>;

/// Entry point of every thread this crate starts.
///
/// # Safety
/// `parameter` is a `Box<ThreadMain>` leaked by [`spawn`] for this thread alone.
unsafe extern "system" fn thread_start(parameter: *mut c_void) -> u32 {
    // SAFETY: per the contract, the box `spawn` leaked for this thread, taken back once.
    let main = unsafe { Box::from_raw(parameter.cast::<ThreadMain>()) };
    // A panic must not unwind into the system's thread start code, which would abort the
    // whole provider; the work's own guards (a dropped Transfer fails its fetch) report it.
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(main));
    u32::from(outcome.is_err())
}

/// Runs `main` on a new thread of this process; the thread's handle, which is signaled
/// when it ends.
pub(crate) fn spawn(main: impl FnOnce() + Send + 'static) -> Result<Handle, Error> {
    let boxed: Box<ThreadMain> = Box::new(Box::new(main));
    let parameter = Box::into_raw(boxed);
    // SAFETY: `thread_start` matches LPTHREAD_START_ROUTINE and takes back `parameter`,
    // which stays valid until it does; no attributes, default stack, no flags.
    let raw = unsafe {
        CreateThread(
            std::ptr::null(),
            0,
            Some(thread_start),
            parameter.cast::<c_void>().cast_const(),
            0,
            std::ptr::null_mut(),
        )
    };
    match Handle::new(raw) {
        Some(thread) => Ok(thread),
        None => {
            let error = last_error("CreateThread");
            // SAFETY: no thread was started, so the box is still ours to free.
            drop(unsafe { Box::from_raw(parameter) });
            Err(error)
        }
    }
}

/// Waits for a thread started by [`spawn`] to end, then closes its handle.
pub(crate) fn join(thread: Handle) -> Result<(), Error> {
    // SAFETY: a valid thread handle, closed only when `thread` drops after the wait.
    if unsafe { WaitForSingleObject(thread.raw(), INFINITE) } == WAIT_FAILED {
        return Err(last_error("WaitForSingleObject"));
    }
    Ok(())
}

/// The NT device path a DOS device name (`C:`) stands for
/// (`\Device\HarddiskVolume1`).
pub(crate) fn query_dos_device(name: &str) -> Result<String, Error> {
    let name: Vec<u16> = name.encode_utf16().chain([0]).collect();
    let mut buffer = vec![0u16; 512];
    loop {
        let max = u32::try_from(buffer.len()).unwrap_or(u32::MAX);
        // SAFETY: `name` is NUL-terminated; `buffer` holds `max` writable units.
        let stored = unsafe { QueryDosDeviceW(name.as_ptr(), buffer.as_mut_ptr(), max) };
        if stored != 0 {
            // The answer is a list of NUL-terminated strings; the first is the current
            // mapping.
            let first = buffer.split(|&u| u == 0).next().unwrap_or_default();
            return Ok(String::from_utf16_lossy(first));
        }
        // SAFETY: reads the calling thread's last-error value; no arguments.
        let code = unsafe { GetLastError() };
        if code != ERROR_INSUFFICIENT_BUFFER || buffer.len() >= 1 << 16 {
            return Err(Error::Io {
                function: "QueryDosDeviceW",
                code,
            });
        }
        buffer.resize(buffer.len() * 2, 0);
    }
}

/// Connects to the filter port `name` with `context`; the connection's handle.
pub(crate) fn connect_port(name: &str, context: &[u8]) -> Result<Handle, Error> {
    let name: Vec<u16> = name.encode_utf16().chain([0]).collect();
    let size = u16::try_from(context.len())
        .map_err(|_| Error::InvalidArgument("connection context over 64 KiB".into()))?;
    let mut port: HANDLE = std::ptr::null_mut();
    // SAFETY: `name` is NUL-terminated, `context` holds `size` bytes, `port` is writable;
    // options 0 (overlapped use allowed), default security.
    let hr = unsafe {
        FilterConnectCommunicationPort(
            name.as_ptr(),
            0,
            context.as_ptr().cast(),
            size,
            std::ptr::null(),
            &mut port,
        )
    };
    if hr < 0 {
        return Err(Error::from_hresult("FilterConnectCommunicationPort", hr));
    }
    Handle::new(port).ok_or(Error::Port {
        function: "FilterConnectCommunicationPort",
        hresult: hr,
    })
}

/// Sends `input` on `port` and waits for the driver's answer in `output`; the number of
/// bytes it wrote there.
pub(crate) fn send(port: &Handle, input: &[u8], output: &mut [u8]) -> Result<usize, Error> {
    let in_size = u32::try_from(input.len())
        .map_err(|_| Error::InvalidArgument("message over 4 GiB".into()))?;
    let out_size = u32::try_from(output.len())
        .map_err(|_| Error::InvalidArgument("reply buffer over 4 GiB".into()))?;
    let mut returned = 0u32;
    // SAFETY: both buffers are valid for their sizes for the whole (synchronous) call.
    let hr = unsafe {
        FilterSendMessage(
            port.raw(),
            input.as_ptr().cast(),
            in_size,
            output.as_mut_ptr().cast(),
            out_size,
            &mut returned,
        )
    };
    if hr < 0 {
        return Err(Error::from_hresult("FilterSendMessage", hr));
    }
    Ok((returned as usize).min(output.len()))
}

/// RtlQueryProcessPlaceholderCompatibilityMode: the calling process's raw `PHCM_*`
/// mode, negative on error.
pub(crate) fn query_process_compat() -> i8 {
    // SAFETY: no arguments; reads the calling process's PEB.
    unsafe { RtlQueryProcessPlaceholderCompatibilityMode() }
}

/// RtlQueryThreadPlaceholderCompatibilityMode: the calling thread's raw `PHCM_*` mode,
/// negative on error.
pub(crate) fn query_thread_compat() -> i8 {
    // SAFETY: no arguments; reads the calling thread's TEB.
    unsafe { RtlQueryThreadPlaceholderCompatibilityMode() }
}

/// RtlSetProcessPlaceholderCompatibilityMode: sets the calling process's raw mode; the
/// previous one, negative on error.
pub(crate) fn set_process_compat(mode: i8) -> i8 {
    // SAFETY: a value argument; the function validates it and writes only the PEB.
    unsafe { RtlSetProcessPlaceholderCompatibilityMode(mode) }
}

/// RtlSetThreadPlaceholderCompatibilityMode: sets the calling thread's raw mode; the
/// previous one, negative on error.
pub(crate) fn set_thread_compat(mode: i8) -> i8 {
    // SAFETY: a value argument; the function validates it and writes only the TEB.
    unsafe { RtlSetThreadPlaceholderCompatibilityMode(mode) }
}

/// What an overlapped FilterGetMessage came back with.
pub(crate) enum Received<'a> {
    /// A message: the bytes after the FILTER_MESSAGE_HEADER (the buffer's whole rest; the
    /// message's own header says where it ends).
    Message(&'a [u8]),
    /// The message did not fit the buffer and was cut; it is lost.
    Truncated,
    /// The request ended without a message: cancelled, or the port is gone.
    Ended,
}

/// The message loop's one outstanding overlapped FilterGetMessage.
///
/// # Invariants
/// While `pending`, the driver may write into `overlapped` and `buffer` at any moment, so
/// neither is touched, moved or freed until the request has completed; both are boxed so
/// that moving the reader does not move them.
pub(crate) struct MessageReader {
    port: HANDLE,
    event: Handle,
    overlapped: Box<OVERLAPPED>,
    buffer: Box<[u8]>,
    pending: bool,
}

// SAFETY: the raw port handle is a process-wide value (see `Handle`); the reader is used
// by one thread at a time.
unsafe impl Send for MessageReader {}

impl MessageReader {
    /// A reader on `port` with a buffer for messages of up to `message_len` bytes. `port`
    /// must stay open for as long as the reader exists.
    pub(crate) fn new(port: &Handle, message_len: usize) -> Result<Self, Error> {
        Ok(Self {
            port: port.raw(),
            event: create_event(true)?,
            overlapped: Box::default(),
            buffer: vec![0u8; size_of::<FILTER_MESSAGE_HEADER>() + message_len].into(),
            pending: false,
        })
    }

    /// The event that is signaled when the outstanding request completes.
    pub(crate) fn event(&self) -> &Handle {
        &self.event
    }

    /// Queues a FilterGetMessage.
    pub(crate) fn start(&mut self) -> Result<(), Error> {
        *self.overlapped = OVERLAPPED {
            hEvent: self.event.raw(),
            ..Default::default()
        };
        let size = u32::try_from(self.buffer.len()).unwrap_or(u32::MAX);
        // SAFETY: the buffer and OVERLAPPED are boxed and, from here until completion,
        // left alone (type invariants); the port is open (constructor contract).
        let hr = unsafe {
            FilterGetMessage(
                self.port,
                self.buffer.as_mut_ptr().cast(),
                size,
                &mut *self.overlapped,
            )
        };
        if hr == HRESULT_IO_PENDING {
            self.pending = true;
            return Ok(());
        }
        // FltMgr pends every overlapped read, so anything else is a failure.
        Err(Error::from_hresult("FilterGetMessage", hr))
    }

    /// Waits for the outstanding request to complete and says how it did.
    pub(crate) fn finish(&mut self) -> Received<'_> {
        let completed = self.complete();
        if let Err(error) = completed {
            return match error {
                Error::Io { code, .. } if code == ERROR_MORE_DATA => Received::Truncated,
                // ERROR_OPERATION_ABORTED (cancelled), ERROR_INVALID_HANDLE (the driver
                // closed the connection: unload, DisconnectNotify), anything else.
                _ => Received::Ended,
            };
        }
        let start = size_of::<FILTER_MESSAGE_HEADER>();
        Received::Message(self.buffer.get(start..).unwrap_or_default())
    }

    /// Cancels the outstanding request, if any, and waits until it has let go of the
    /// buffers.
    pub(crate) fn cancel(&mut self) {
        if !self.pending {
            return;
        }
        // SAFETY: the OVERLAPPED is only compared against the pending requests.
        // ERROR_NOT_FOUND (it completed meanwhile) is fine: `complete` collects it.
        unsafe { CancelIoEx(self.port, &*self.overlapped) };
        // Whatever it completed with, it has completed.
        let _ = self.complete();
    }

    /// Waits for the pending request; Ok once it succeeded.
    fn complete(&mut self) -> Result<(), Error> {
        let mut transferred = 0u32;
        // SAFETY: the OVERLAPPED of this reader's request; bWait = TRUE waits until the
        // request completes.
        let ok = unsafe { GetOverlappedResult(self.port, &*self.overlapped, &mut transferred, 1) };
        let outcome = if ok == 0 {
            Err(last_error("GetOverlappedResult"))
        } else {
            Ok(())
        };
        // INVARIANT: the wait returned, so the request has completed and the buffers are
        // ours again. (It returns early only for a handle closed under the reader, which
        // the constructor's contract rules out.)
        self.pending = false;
        outcome
    }
}

impl Drop for MessageReader {
    fn drop(&mut self) {
        // The request must not outlive the buffers it writes into.
        self.cancel();
    }
}
