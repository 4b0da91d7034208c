//! The communication port end to end: a tiny test driver in this file on the kernel side
//! (FltSendMessage, MessageNotify), fltlib and kernel32 on the user side, and the
//! verifier checks of FltSendMessage made to fire.
//!
//! Nothing here depends on the cloudflt driver: the port model is tested on its own.

use std::ffi::c_void;
use std::sync::atomic::{AtomicIsize, AtomicU32, Ordering};
use std::sync::{Mutex, mpsc};
use std::thread;
use std::time::Duration;

use cloudflt_tests::model::fltlib::{
    CancelIoEx, CloseHandle, CreateEventW, FilterConnectCommunicationPort, FilterGetMessage,
    FilterReplyMessage, FilterSendMessage, GetLastError, GetOverlappedResult, INFINITE,
    WaitForMultipleObjects, WaitForSingleObject, hresult_from_win32,
};
use cloudflt_tests::model::fltmgr::{FltRegisterFilter, FltStartFiltering, FltUnregisterFilter};
use cloudflt_tests::model::irql::{self, DISPATCH_LEVEL};
use cloudflt_tests::model::port::{
    FltBuildDefaultSecurityDescriptor, FltCloseClientPort, FltCloseCommunicationPort,
    FltCreateCommunicationPort, FltFreeSecurityDescriptor, FltSendMessage,
};
use cloudflt_tests::model::process::{self, PsGetCurrentProcessId};
use cloudflt_tests::model::{ClientId, Machine, Violation, VolumeConfig};
use windows_sys::Wdk::Foundation::{DRIVER_OBJECT, OBJECT_ATTRIBUTES};
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{FLT_REGISTRATION, PFLT_PORT};
use windows_sys::Win32::Foundation::{
    E_ACCESSDENIED, ERROR_CONNECTION_COUNT_LIMIT, ERROR_FILE_NOT_FOUND,
    ERROR_FLT_NO_WAITER_FOR_REPLY, ERROR_INVALID_HANDLE, ERROR_IO_INCOMPLETE, ERROR_IO_PENDING,
    ERROR_MORE_DATA, ERROR_NOT_FOUND, ERROR_OPERATION_ABORTED, HANDLE, INVALID_HANDLE_VALUE,
    NTSTATUS, STATUS_BUFFER_OVERFLOW, STATUS_PORT_DISCONNECTED, STATUS_SUCCESS,
    STATUS_THREAD_IS_TERMINATING, STATUS_TIMEOUT, UNICODE_STRING, WAIT_OBJECT_0, WAIT_TIMEOUT,
};
use windows_sys::Win32::Storage::InstallableFileSystems::{
    FILTER_MESSAGE_HEADER, FILTER_REPLY_HEADER,
};
use windows_sys::Win32::System::IO::OVERLAPPED;
use windows_sys::core::HRESULT;

const PORT: &str = "\\PortTest";
const HEADER: usize = 16;
/// -10 ms in 100 ns units: a relative timeout.
const TEN_MS: i64 = -100_000;

// The test driver's globals, as a minifilter keeps them.
static FILTER: AtomicIsize = AtomicIsize::new(0);
static SERVER: AtomicIsize = AtomicIsize::new(0);
/// The client port of the one connection, NULLed by FltCloseClientPort.
static CLIENT: AtomicIsize = AtomicIsize::new(0);
static DISCONNECTS: AtomicU32 = AtomicU32::new(0);

/// What MessageNotify saw: input, input length, output, output length, pid.
type Seen = (usize, u32, usize, u32, u32);
static SEEN: Mutex<Option<Seen>> = Mutex::new(None);

unsafe extern "system" fn unload(_flags: u32) -> NTSTATUS {
    FltCloseCommunicationPort(SERVER.load(Ordering::SeqCst));
    FltUnregisterFilter(FILTER.load(Ordering::SeqCst));
    STATUS_SUCCESS
}

unsafe extern "system" fn connect_notify(
    client: PFLT_PORT,
    _server_cookie: *const c_void,
    _context: *const c_void,
    _size: u32,
    cookie: *mut *mut c_void,
) -> NTSTATUS {
    CLIENT.store(client, Ordering::SeqCst);
    // SAFETY: FltMgr's out variable.
    unsafe { cookie.write(client as *mut c_void) };
    STATUS_SUCCESS
}

unsafe extern "system" fn disconnect_notify(_cookie: *const c_void) {
    DISCONNECTS.fetch_add(1, Ordering::SeqCst);
    // SAFETY: the driver's own port variable.
    unsafe { FltCloseClientPort(FILTER.load(Ordering::SeqCst), CLIENT.as_ptr()) };
}

unsafe extern "system" fn message_notify(
    _cookie: *const c_void,
    input: *const c_void,
    input_len: u32,
    output: *mut c_void,
    output_len: u32,
    returned: *mut u32,
) -> NTSTATUS {
    let pid = PsGetCurrentProcessId() as usize as u32;
    *SEEN.lock().unwrap() = Some((input as usize, input_len, output as usize, output_len, pid));
    if output_len >= 4 {
        // SAFETY: a test's own buffer of `output_len` bytes (a real driver would probe
        // and copy under an exception guard).
        unsafe { std::ptr::copy_nonoverlapping(b"pong".as_ptr(), output.cast::<u8>(), 4) };
        // SAFETY: FltMgr's out variable.
        unsafe { returned.write(4) };
    }
    STATUS_SUCCESS
}

/// Boots a machine with the test driver registered and its port created.
fn boot(max_connections: i32) -> Machine {
    let machine = Machine::boot(&[VolumeConfig::ntfs(1)]);
    CLIENT.store(0, Ordering::SeqCst);
    DISCONNECTS.store(0, Ordering::SeqCst);
    *SEEN.lock().unwrap() = None;
    // SAFETY: DRIVER_OBJECT is plain data for which all-zero is a valid value.
    let driver: &'static DRIVER_OBJECT = Box::leak(Box::new(unsafe { std::mem::zeroed() }));
    let registration = FLT_REGISTRATION {
        Size: std::mem::size_of::<FLT_REGISTRATION>() as u16,
        Version: 0x0203,
        FilterUnloadCallback: Some(unload),
        ..Default::default()
    };
    let mut filter = 0;
    // SAFETY: valid pointers for the call.
    let status = unsafe { FltRegisterFilter(driver, &registration, &mut filter) };
    assert_eq!(status, STATUS_SUCCESS);
    FILTER.store(filter, Ordering::SeqCst);

    let name: Vec<u16> = PORT.encode_utf16().collect();
    let us = UNICODE_STRING {
        Length: (name.len() * 2) as u16,
        MaximumLength: (name.len() * 2) as u16,
        Buffer: name.as_ptr().cast_mut(),
    };
    let mut sd = std::ptr::null_mut();
    // SAFETY: a valid out pointer.
    let status = unsafe { FltBuildDefaultSecurityDescriptor(&mut sd, 0x1F_0001) };
    assert_eq!(status, STATUS_SUCCESS);
    let oa = OBJECT_ATTRIBUTES {
        Length: std::mem::size_of::<OBJECT_ATTRIBUTES>() as u32,
        RootDirectory: std::ptr::null_mut(),
        ObjectName: &us,
        Attributes: 0x240, // OBJ_CASE_INSENSITIVE | OBJ_KERNEL_HANDLE
        SecurityDescriptor: sd.cast(),
        SecurityQualityOfService: std::ptr::null(),
    };
    let mut server = 0;
    // SAFETY: valid attributes and out pointer.
    let status = unsafe {
        FltCreateCommunicationPort(
            filter,
            &mut server,
            &oa,
            std::ptr::null(),
            Some(connect_notify),
            Some(disconnect_notify),
            Some(message_notify),
            max_connections,
        )
    };
    assert_eq!(status, STATUS_SUCCESS);
    FltFreeSecurityDescriptor(sd);
    SERVER.store(server, Ordering::SeqCst);
    assert_eq!(FltStartFiltering(filter), STATUS_SUCCESS);
    machine
}

fn provider(machine: &Machine) -> u32 {
    machine.spawn_process("\\Device\\HarddiskVolume1\\provider.exe", 0, true)
}

/// FltSendMessage on the driver's client port from this thread: status and reply.
fn send(payload: &[u8], reply: Option<u32>, timeout: Option<i64>) -> (NTSTATUS, Vec<u8>) {
    let mut buffer = vec![0u8; reply.unwrap_or(0) as usize];
    let mut length = reply.unwrap_or(0);
    let timeout_ptr = timeout
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const i64);
    // SAFETY: every buffer is valid for the call; the port variable is the driver's.
    let status = unsafe {
        FltSendMessage(
            FILTER.load(Ordering::SeqCst),
            CLIENT.as_ptr(),
            payload.as_ptr().cast(),
            payload.len() as u32,
            if reply.is_some() {
                buffer.as_mut_ptr().cast()
            } else {
                std::ptr::null_mut()
            },
            if reply.is_some() {
                &mut length
            } else {
                std::ptr::null_mut()
            },
            timeout_ptr,
        )
    };
    buffer.truncate(length as usize);
    (status, buffer)
}

/// A synchronous FilterGetMessage into a `size`-byte buffer: result, header, payload.
fn get(port: HANDLE, size: usize) -> (HRESULT, FILTER_MESSAGE_HEADER, Vec<u8>) {
    let mut buffer = vec![0u8; size];
    // SAFETY: a buffer of `size` bytes, blocking call.
    let hr = unsafe {
        FilterGetMessage(
            port,
            buffer.as_mut_ptr().cast(),
            size as u32,
            std::ptr::null_mut(),
        )
    };
    // SAFETY: at least a header's bytes.
    let header = unsafe {
        buffer
            .as_ptr()
            .cast::<FILTER_MESSAGE_HEADER>()
            .read_unaligned()
    };
    (hr, header, buffer[HEADER..].to_vec())
}

fn reply(port: HANDLE, id: u64, payload: &[u8]) -> HRESULT {
    let mut buffer = vec![0u8; HEADER + payload.len()];
    let header = FILTER_REPLY_HEADER {
        Status: 0,
        MessageId: id,
    };
    // SAFETY: the buffer holds a header and the payload.
    unsafe {
        buffer
            .as_mut_ptr()
            .cast::<FILTER_REPLY_HEADER>()
            .write_unaligned(header)
    };
    buffer[HEADER..].copy_from_slice(payload);
    // SAFETY: as above.
    unsafe { FilterReplyMessage(port, buffer.as_ptr().cast(), buffer.len() as u32) }
}

/// A HANDLE that can cross to a helper thread.
#[derive(Clone, Copy)]
struct H(isize);
impl H {
    fn get(self) -> HANDLE {
        self.0 as HANDLE
    }
}

fn fired(violations: &[Violation], api: &str, needle: &str) -> bool {
    violations
        .iter()
        .any(|v| v.api == api && v.message.contains(needle))
}

#[test]
fn send_and_reply_round_trip_from_a_provider_thread() {
    let mut machine = boot(1);
    let pid = provider(&machine);
    let client = machine.connect(PORT, b"ctx", pid).unwrap();
    let port = H(client.handle() as isize);
    let provider = thread::spawn(move || {
        process::run_as(pid, || {
            let (hr, header, payload) = get(port.get(), HEADER + 64);
            assert_eq!(hr, 0);
            // ReplyLength counts the FILTER_REPLY_HEADER (fltuserstructures.h).
            assert_eq!(header.ReplyLength, (HEADER + 8) as u32);
            assert_eq!(&payload[..5], b"hello");
            assert_eq!(reply(port.get(), header.MessageId, b"world!"), 0);
            // Answering twice: nobody waits any more.
            assert_eq!(
                reply(port.get(), header.MessageId, b"again"),
                ERROR_FLT_NO_WAITER_FOR_REPLY
            );
        })
    });
    let (status, answer) = send(b"hello", Some(8), None);
    assert_eq!(status, STATUS_SUCCESS);
    assert_eq!(answer, b"world!", "the reply arrives without its header");
    provider.join().unwrap();

    // A reply longer than the driver's buffer is cut: STATUS_BUFFER_OVERFLOW.
    let provider = thread::spawn(move || {
        process::run_as(pid, || {
            let (_, header, _) = get(port.get(), HEADER + 64);
            assert_eq!(reply(port.get(), header.MessageId, b"0123456789"), 0);
        })
    });
    let (status, answer) = send(b"short", Some(4), None);
    assert_eq!(status, STATUS_BUFFER_OVERFLOW);
    assert_eq!(answer, b"0123");
    provider.join().unwrap();

    machine.disconnect(client);
    assert_eq!(DISCONNECTS.load(Ordering::SeqCst), 1);
    assert_eq!(
        CLIENT.load(Ordering::SeqCst),
        0,
        "DisconnectNotify closed it"
    );
    assert_eq!(machine.unload_driver(), STATUS_SUCCESS);
    machine.assert_clean();
}

#[test]
fn messages_queue_until_the_provider_asks_and_a_cut_message_is_more_data() {
    let mut machine = boot(1);
    let pid = provider(&machine);
    let client = machine.connect(PORT, b"", pid).unwrap();
    // No reader yet: a send without a reply buffer waits until the message is taken.
    let sender = thread::spawn(|| send(b"queued message", None, None).0);
    thread::sleep(Duration::from_millis(20));
    assert!(!sender.is_finished(), "delivery is part of FltSendMessage");
    let (hr, header, payload) = process::run_as(pid, || get(client.handle(), HEADER + 6));
    assert_eq!(hr, hresult_from_win32(ERROR_MORE_DATA));
    assert_eq!(header.ReplyLength, 0, "no reply expected");
    assert_eq!(payload, b"queued");
    assert_eq!(sender.join().unwrap(), STATUS_SUCCESS);
    // A zero timeout does not wait: nobody is reading.
    assert_eq!(send(b"x", None, Some(0)).0, STATUS_TIMEOUT);
    assert_eq!(machine.unload_driver(), STATUS_SUCCESS);
    assert_eq!(
        DISCONNECTS.load(Ordering::SeqCst),
        1,
        "unregister disconnects"
    );
    machine.assert_clean();
}

#[test]
fn a_relative_timeout_returns_status_timeout_and_a_late_reply_finds_no_waiter() {
    let mut machine = boot(1);
    let pid = provider(&machine);
    let client = machine.connect(PORT, b"", pid).unwrap();
    // Nobody reading: not delivered within 10 ms.
    let (status, _) = send(b"nobody", Some(8), Some(TEN_MS));
    assert_eq!(status, STATUS_TIMEOUT);
    // The timed-out message was withdrawn: a reader now waits for a new one.
    let port = H(client.handle() as isize);
    let (tx, rx) = mpsc::channel();
    let provider = thread::spawn(move || {
        process::run_as(pid, || {
            let (hr, header, payload) = get(port.get(), HEADER + 16);
            assert_eq!(hr, 0);
            tx.send((header.MessageId, payload)).unwrap();
        })
    });
    // Delivered, never answered: STATUS_TIMEOUT after 10 ms.
    let (status, _) = send(b"second", Some(8), Some(TEN_MS));
    assert_eq!(status, STATUS_TIMEOUT);
    provider.join().unwrap();
    let (id, payload) = rx.recv().unwrap();
    assert_eq!(&payload[..6], b"second");
    let late = process::run_as(pid, || reply(client.handle(), id, b"late"));
    assert_eq!(late, ERROR_FLT_NO_WAITER_FOR_REPLY);
    assert_eq!(machine.unload_driver(), STATUS_SUCCESS);
    machine.assert_clean();
}

#[test]
fn a_disconnect_while_fltsendmessage_waits_is_port_disconnected() {
    let mut machine = boot(1);
    let pid = provider(&machine);
    let client = machine.connect(PORT, b"", pid).unwrap();
    let port = H(client.handle() as isize);
    let (tx, rx) = mpsc::channel();
    let provider = thread::spawn(move || {
        process::run_as(pid, || {
            let (hr, _, _) = get(port.get(), HEADER + 16);
            tx.send(hr).unwrap();
        })
    });
    let sender = thread::spawn(|| send(b"wait", Some(8), None).0);
    // The provider has the message, so the sender waits for the reply; then the
    // provider's handle goes away under it.
    assert_eq!(rx.recv().unwrap(), 0);
    assert!(machine.sever(client));
    assert_eq!(sender.join().unwrap(), STATUS_PORT_DISCONNECTED);
    provider.join().unwrap();
    assert_eq!(DISCONNECTS.load(Ordering::SeqCst), 1);
    // The driver's variable is NULL now: sending is simply disconnected, not a misuse.
    assert_eq!(send(b"after", None, None).0, STATUS_PORT_DISCONNECTED);
    assert_eq!(machine.unload_driver(), STATUS_SUCCESS);
    machine.assert_clean();
}

/// A pending overlapped FilterGetMessage on `port` with a fresh manual-reset event.
struct Pending {
    overlapped: Box<OVERLAPPED>,
    buffer: Vec<u8>,
    event: HANDLE,
}

fn get_overlapped(port: HANDLE, size: usize) -> Pending {
    // SAFETY: no attributes, no name.
    let event = unsafe { CreateEventW(std::ptr::null(), 1, 0, std::ptr::null()) };
    assert!(!event.is_null());
    let mut pending = Pending {
        overlapped: Box::new(OVERLAPPED {
            hEvent: event,
            ..Default::default()
        }),
        buffer: vec![0; size],
        event,
    };
    // SAFETY: the buffer and OVERLAPPED live in `pending` until it completes.
    let hr = unsafe {
        FilterGetMessage(
            port,
            pending.buffer.as_mut_ptr().cast(),
            size as u32,
            &mut *pending.overlapped,
        )
    };
    assert_eq!(hr, hresult_from_win32(ERROR_IO_PENDING));
    pending
}

fn overlapped_result(port: HANDLE, pending: &Pending, wait: bool) -> (bool, u32, u32) {
    let mut bytes = 0;
    // SAFETY: a valid OVERLAPPED and out variable.
    let ok = unsafe { GetOverlappedResult(port, &*pending.overlapped, &mut bytes, wait.into()) };
    (ok != 0, bytes, GetLastError())
}

#[test]
fn an_overlapped_get_completes_through_its_event() {
    let mut machine = boot(1);
    let pid = provider(&machine);
    let client = machine.connect(PORT, b"", pid).unwrap();
    process::run_as(pid, || {
        let port = client.handle();
        let pending = get_overlapped(port, HEADER + 32);
        assert_eq!(WaitForSingleObject(pending.event, 0), WAIT_TIMEOUT);
        assert_eq!(
            overlapped_result(port, &pending, false),
            (false, 0, ERROR_IO_INCOMPLETE)
        );
        // The driver sends from one of its threads; the provider thread only waits.
        let sender = thread::spawn(|| send(b"overlapped", None, None).0);
        assert_eq!(WaitForSingleObject(pending.event, 5_000), WAIT_OBJECT_0);
        assert_eq!(sender.join().unwrap(), STATUS_SUCCESS);
        assert_eq!(pending.overlapped.Internal, 0, "STATUS_SUCCESS");
        assert_eq!(pending.overlapped.InternalHigh, HEADER + 10);
        assert_eq!(
            overlapped_result(port, &pending, true),
            (true, (HEADER + 10) as u32, ERROR_IO_INCOMPLETE),
            "success leaves the last error alone"
        );
        assert_eq!(&pending.buffer[HEADER..HEADER + 10], b"overlapped");
        // Either of two events: the signaled one's index.
        // SAFETY: no attributes, no name.
        let other = unsafe { CreateEventW(std::ptr::null(), 0, 0, std::ptr::null()) };
        let both = [other, pending.event];
        // SAFETY: two valid handles.
        let index = unsafe { WaitForMultipleObjects(2, both.as_ptr(), 0, INFINITE) };
        assert_eq!(index, WAIT_OBJECT_0 + 1);
        assert_ne!(CloseHandle(other), 0);
        assert_ne!(CloseHandle(pending.event), 0);
        assert_eq!(CloseHandle(pending.event), 0);
        assert_eq!(GetLastError(), ERROR_INVALID_HANDLE);
    });
    assert_eq!(machine.unload_driver(), STATUS_SUCCESS);
    machine.assert_clean();
}

#[test]
fn cancel_close_and_driver_disconnect_end_pending_gets() {
    let mut machine = boot(1);
    let pid = provider(&machine);
    let client = machine.connect(PORT, b"", pid).unwrap();
    process::run_as(pid, || {
        let port = client.handle();
        // CancelIoEx on one request: aborted, event set.
        let pending = get_overlapped(port, HEADER + 8);
        // SAFETY: the pending request's OVERLAPPED.
        assert_ne!(unsafe { CancelIoEx(port, &*pending.overlapped) }, 0);
        assert_eq!(WaitForSingleObject(pending.event, 0), WAIT_OBJECT_0);
        assert_eq!(
            overlapped_result(port, &pending, true),
            (false, 0, ERROR_OPERATION_ABORTED)
        );
        // SAFETY: nothing is pending now.
        assert_eq!(unsafe { CancelIoEx(port, std::ptr::null()) }, 0);
        assert_eq!(GetLastError(), ERROR_NOT_FOUND);
        // Not a handle of this process: the System process cannot use it.
        let outsider = process::run_as(process::SYSTEM_PID, || {
            // SAFETY: as above.
            unsafe { CancelIoEx(port, std::ptr::null()) }
        });
        assert_eq!(outsider, 0);
        CloseHandle(pending.event);
    });

    // The driver closes the client port: a pending get sees a bad handle (how the
    // scanner sample's user half notices "port disconnected").
    let port = H(client.handle() as isize);
    let reader = thread::spawn(move || process::run_as(pid, || get(port.get(), HEADER + 8).0));
    thread::sleep(Duration::from_millis(20));
    // SAFETY: the driver's port variable.
    unsafe { FltCloseClientPort(FILTER.load(Ordering::SeqCst), CLIENT.as_ptr()) };
    assert_eq!(
        reader.join().unwrap(),
        hresult_from_win32(ERROR_INVALID_HANDLE)
    );
    let again = process::run_as(pid, || get(client.handle(), HEADER + 8).0);
    assert_eq!(again, hresult_from_win32(ERROR_INVALID_HANDLE));
    machine.disconnect(client);
    assert_eq!(DISCONNECTS.load(Ordering::SeqCst), 1);

    // Closing the handle with an overlapped get pending aborts it.
    let second = machine.connect(PORT, b"", pid).unwrap();
    process::run_as(pid, || {
        let pending = get_overlapped(second.handle(), HEADER + 8);
        assert_ne!(CloseHandle(second.handle()), 0);
        assert_eq!(WaitForSingleObject(pending.event, 0), WAIT_OBJECT_0);
        assert_eq!(pending.overlapped.Internal, 0xC000_0120, "STATUS_CANCELLED");
        CloseHandle(pending.event);
    });
    assert_eq!(DISCONNECTS.load(Ordering::SeqCst), 2);
    assert_eq!(machine.unload_driver(), STATUS_SUCCESS);
    machine.assert_clean();
}

#[test]
fn killing_processes_closes_their_ports_and_stops_their_senders() {
    let mut machine = boot(1);
    let pid = provider(&machine);
    let app = machine.spawn_process("\\Device\\HarddiskVolume1\\app.exe", 0, false);
    let client = machine.connect(PORT, b"", pid).unwrap();

    // A thread of `app` reads a file; the driver asks the provider from that thread.
    let port = H(client.handle() as isize);
    let (tx, rx) = mpsc::channel();
    let provider = thread::spawn(move || {
        process::run_as(pid, || tx.send(get(port.get(), HEADER + 8).0).unwrap())
    });
    let reader = thread::spawn(move || process::run_as(app, || send(b"hydrate", Some(8), None).0));
    assert_eq!(rx.recv().unwrap(), 0);
    machine.kill_process(app);
    assert_eq!(reader.join().unwrap(), STATUS_THREAD_IS_TERMINATING);
    provider.join().unwrap();

    // The provider dies with a get pending: it is aborted, the port disconnects.
    let stuck = thread::spawn(move || process::run_as(pid, || get(port.get(), HEADER + 8).0));
    thread::sleep(Duration::from_millis(20));
    machine.kill_process(pid);
    assert_eq!(
        stuck.join().unwrap(),
        hresult_from_win32(ERROR_OPERATION_ABORTED)
    );
    assert_eq!(DISCONNECTS.load(Ordering::SeqCst), 1);
    assert_eq!(machine.ports()[0].connections, 0);
    assert!(!machine.sever(client), "already closed with its process");
    // A dead process cannot connect.
    assert!(machine.connect(PORT, b"", pid).is_err());
    assert_eq!(machine.unload_driver(), STATUS_SUCCESS);
    machine.assert_clean();
}

#[test]
fn filter_send_message_reaches_message_notify_with_the_callers_buffers() {
    let mut machine = boot(1);
    let pid = provider(&machine);
    let client = machine.connect(PORT, b"", pid).unwrap();
    process::run_as(pid, || {
        let input = *b"ping!";
        let mut output = [0u8; 32];
        let mut returned = 0;
        // SAFETY: valid buffers and out variable.
        let hr = unsafe {
            FilterSendMessage(
                client.handle(),
                input.as_ptr().cast(),
                input.len() as u32,
                output.as_mut_ptr().cast(),
                output.len() as u32,
                &mut returned,
            )
        };
        assert_eq!(hr, 0);
        assert_eq!(returned, 4);
        assert_eq!(&output[..4], b"pong");
        let seen = SEEN.lock().unwrap().unwrap();
        assert_eq!(
            seen,
            (
                input.as_ptr() as usize,
                5,
                output.as_ptr() as usize,
                32,
                pid
            ),
            "the very user buffers, on the caller's thread in the caller's process"
        );
    });
    assert_eq!(machine.unload_driver(), STATUS_SUCCESS);
    machine.assert_clean();
}

#[test]
fn connecting_checks_name_access_and_max_connections() {
    let mut machine = boot(1);
    let admin = provider(&machine);
    let user = machine.spawn_process("\\Device\\HarddiskVolume1\\user.exe", 0, false);
    let connect = |pid: u32, name: &str| {
        let name: Vec<u16> = name.encode_utf16().chain([0]).collect();
        let mut port: HANDLE = std::ptr::null_mut();
        let hr = process::run_as(pid, || {
            // SAFETY: a NUL-terminated name and a valid out variable.
            unsafe {
                FilterConnectCommunicationPort(
                    name.as_ptr(),
                    0,
                    std::ptr::null(),
                    0,
                    std::ptr::null(),
                    &mut port,
                )
            }
        });
        (hr, port)
    };
    assert_eq!(
        connect(admin, "\\NoSuchPort"),
        (
            hresult_from_win32(ERROR_FILE_NOT_FOUND),
            INVALID_HANDLE_VALUE
        )
    );
    assert_eq!(connect(user, PORT), (E_ACCESSDENIED, INVALID_HANDLE_VALUE));
    let (hr, first) = connect(admin, PORT);
    assert_eq!(hr, 0);
    assert_eq!(
        connect(admin, PORT),
        (
            hresult_from_win32(ERROR_CONNECTION_COUNT_LIMIT),
            INVALID_HANDLE_VALUE
        )
    );
    assert_eq!(machine.ports()[0].client_pids, [admin]);
    assert_ne!(process::run_as(admin, || CloseHandle(first)), 0);
    let (hr, second) = connect(admin, PORT);
    assert_eq!(hr, 0);
    assert_ne!(second, first);
    assert_eq!(machine.unload_driver(), STATUS_SUCCESS);
    machine.assert_clean();
}

#[test]
fn fltsendmessage_misuse_is_caught() {
    let mut machine = boot(1);
    let pid = provider(&machine);
    let client = machine.connect(PORT, b"", pid).unwrap();

    // A positive timeout is an absolute time: 1 means 1601, long past.
    assert_eq!(send(b"abs", None, Some(1)).0, STATUS_TIMEOUT);
    let v = machine.take_violations();
    assert!(
        fired(
            &v,
            "FltSendMessage",
            "FltSendMessage with a positive (absolute) timeout"
        ),
        "{v:?}"
    );

    // Above APC_LEVEL (zero timeout so the call cannot block).
    let status = irql::at(DISPATCH_LEVEL, || send(b"irql", None, Some(0)).0);
    assert_eq!(status, STATUS_TIMEOUT);
    let v = machine.take_violations();
    assert!(
        fired(
            &v,
            "FltSendMessage",
            "called at IRQL 2, documented maximum is 1"
        ),
        "{v:?}"
    );

    // A copy of the client port kept past FltCloseClientPort.
    let stale = AtomicIsize::new(CLIENT.load(Ordering::SeqCst));
    // SAFETY: the driver's port variable.
    unsafe { FltCloseClientPort(FILTER.load(Ordering::SeqCst), CLIENT.as_ptr()) };
    // SAFETY: a valid buffer; the stale copy is what is being tested.
    let status = unsafe {
        FltSendMessage(
            FILTER.load(Ordering::SeqCst),
            stale.as_ptr(),
            b"stale".as_ptr().cast(),
            5,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            &TEN_MS,
        )
    };
    assert_eq!(status, STATUS_PORT_DISCONNECTED);
    let v = machine.take_violations();
    assert!(
        fired(&v, "FltSendMessage", "used after FltCloseClientPort"),
        "{v:?}"
    );
    machine.disconnect(client);
    assert_eq!(machine.unload_driver(), STATUS_SUCCESS);
    machine.assert_clean();
}

#[test]
fn client_ids_are_user_handles_of_their_process() {
    let mut machine = boot(2);
    let pid = provider(&machine);
    let client: ClientId = machine.connect(PORT, b"", pid).unwrap();
    // From a thread of another process the handle means nothing.
    let (hr, _, _) = get(client.handle(), HEADER);
    assert_eq!(hr, hresult_from_win32(ERROR_INVALID_HANDLE));
    assert_eq!(machine.unload_driver(), STATUS_SUCCESS);
    machine.assert_clean();
}
