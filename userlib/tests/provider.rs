//! The provider library end to end against the kernel model: a tiny test driver in this
//! file (port callbacks that speak the proto messages, FltSendMessage for fetches) on the
//! kernel side, the real `cloudflt` library on the user side, in a provider process.
//!
//! Nothing here uses the cloudflt driver: it tests the library's own behaviour — the
//! context it connects with, the message loop, transfers and their alignment rule,
//! failures, cancellations, placeholder requests, the typed errors, and disconnecting.
#![cfg(not(windows))]

use std::ffi::c_void;
use std::sync::atomic::{AtomicI32, AtomicIsize, AtomicU32, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use cloudflt::{
    CancelFetch, CancelReason, ConvertOptions, Dehydration, Error, FetchRequest, FileTimes,
    HydrationPolicy, PinState, PlaceholderSpec, PopulationPolicy, SyncProvider, SyncRoot,
    SyncRootConfig, Transfer, UpdateOptions,
};
use cloudflt_proto::msg::{self, KernelMessage, ProviderMessage, Reply, TransferFlags};
use cloudflt_proto::{
    ByteRange, ConnectionContext, Placeholder, PlaceholderFlags, RangeList, Utf16,
};
use cloudflt_tests::model::fltmgr::{FltRegisterFilter, FltStartFiltering, FltUnregisterFilter};
use cloudflt_tests::model::port::{
    FltBuildDefaultSecurityDescriptor, FltCloseClientPort, FltCloseCommunicationPort,
    FltCreateCommunicationPort, FltFreeSecurityDescriptor, FltSendMessage,
};
use cloudflt_tests::model::process::{self, PsGetCurrentProcessId};
use cloudflt_tests::model::{Machine, VolumeConfig};
use windows_sys::Wdk::Foundation::{DRIVER_OBJECT, OBJECT_ATTRIBUTES};
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{FLT_REGISTRATION, PFLT_PORT};
use windows_sys::Win32::Foundation::{
    NTSTATUS, STATUS_CLOUD_FILE_ALREADY_CONNECTED, STATUS_CLOUD_FILE_IN_USE,
    STATUS_CLOUD_FILE_INVALID_REQUEST, STATUS_CLOUD_FILE_NETWORK_UNAVAILABLE,
    STATUS_CLOUD_FILE_NOT_IN_SYNC, STATUS_CLOUD_FILE_REQUEST_TIMEOUT,
    STATUS_CLOUD_FILE_UNSUCCESSFUL, STATUS_PORT_DISCONNECTED, STATUS_SUCCESS, UNICODE_STRING,
};

const MIB: u64 = 1 << 20;
const IMAGE: &str = r"\Device\HarddiskVolume1\Apps\reader.exe";
const PROVIDER_IMAGE: &str = r"\Device\HarddiskVolume1\Sync\provider.exe";

// ---------------------------------------------------------------------------------------
// The test driver: a minifilter that owns cloudflt's port and records what arrives.
// ---------------------------------------------------------------------------------------

static FILTER: AtomicIsize = AtomicIsize::new(0);
static SERVER: AtomicIsize = AtomicIsize::new(0);
static CLIENT: AtomicIsize = AtomicIsize::new(0);
static DISCONNECTS: AtomicU32 = AtomicU32::new(0);
/// What ConnectNotify answers.
static CONNECT_STATUS: AtomicI32 = AtomicI32::new(STATUS_SUCCESS);
/// What MessageNotify returns itself (a failure here never reaches the Reply).
static NOTIFY_STATUS: AtomicI32 = AtomicI32::new(STATUS_SUCCESS);
/// The status MessageNotify puts in its Reply.
static REPLY_STATUS: AtomicI32 = AtomicI32::new(STATUS_SUCCESS);

/// What the driver saw: decoded context, and every provider message with its pid.
#[derive(Default)]
struct Seen {
    context: Option<Context>,
    messages: Vec<(u32, Received)>,
    /// The reply payload for GET_INFO, UPDATE and SET_IN_SYNC.
    info_blob: Vec<u8>,
    /// The reply payload for HYDRATE: none, as from a driver before issue 12, unless a
    /// test sets one.
    hydrate_blob: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq)]
struct Context {
    name: String,
    version: String,
    root: String,
    hydration: HydrationPolicy,
    population: PopulationPolicy,
    timeout_ms: u32,
    pid: u32,
}

/// An owned copy of a provider message.
#[derive(Debug, Clone, PartialEq)]
enum Received {
    Transfer {
        request_id: u64,
        offset: u64,
        last: bool,
        data: Vec<u8>,
    },
    Failed {
        request_id: u64,
        status: i32,
    },
    Create {
        path: String,
        size: u64,
        flags: PlaceholderFlags,
        attributes: u32,
        last_write_time: i64,
        identity: Vec<u8>,
    },
    Convert {
        path: String,
        flags: u32,
        identity: Vec<u8>,
    },
    Revert(String),
    Hydrate(String, ByteRange),
    Dehydrate(String, ByteRange),
    SetPin(String, PinState),
    GetInfo(String),
    Update {
        path: String,
        flags: u32,
        size: u64,
        last_write_time: i64,
        attributes: u32,
        expected_changes: u64,
        identity: Vec<u8>,
        dehydrate: Vec<ByteRange>,
    },
    SetInSync {
        path: String,
        flags: u32,
        expected_changes: u64,
    },
}

static SEEN: Mutex<Option<Seen>> = Mutex::new(None);

fn seen<R>(f: impl FnOnce(&mut Seen) -> R) -> R {
    let mut guard = SEEN.lock().unwrap_or_else(PoisonError::into_inner);
    f(guard.get_or_insert_with(Seen::default))
}

fn text(s: Utf16<'_>) -> String {
    s.chars_lossy().collect()
}

unsafe extern "system" fn unload(_flags: u32) -> NTSTATUS {
    FltCloseCommunicationPort(SERVER.load(Ordering::SeqCst));
    FltUnregisterFilter(FILTER.load(Ordering::SeqCst));
    STATUS_SUCCESS
}

unsafe extern "system" fn connect_notify(
    client: PFLT_PORT,
    _server_cookie: *const c_void,
    context: *const c_void,
    size: u32,
    cookie: *mut *mut c_void,
) -> NTSTATUS {
    // SAFETY: FltMgr's copy of the context, `size` bytes (a real driver would copy it
    // under an exception guard first).
    let bytes = unsafe { std::slice::from_raw_parts(context.cast::<u8>(), size as usize) };
    let decoded = ConnectionContext::decode(bytes).expect("the library's context decodes");
    seen(|s| {
        s.context = Some(Context {
            name: text(decoded.provider_name),
            version: text(decoded.provider_version),
            root: text(decoded.sync_root),
            hydration: decoded.hydration,
            population: decoded.population,
            timeout_ms: decoded.timeout_ms,
            pid: PsGetCurrentProcessId() as usize as u32,
        })
    });
    let status = CONNECT_STATUS.load(Ordering::SeqCst);
    if status == STATUS_SUCCESS {
        CLIENT.store(client, Ordering::SeqCst);
        // SAFETY: FltMgr's out variable.
        unsafe { cookie.write(client as *mut c_void) };
    }
    status
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
    // SAFETY: the provider's input buffer of `input_len` bytes (the test's own process).
    let bytes = unsafe { std::slice::from_raw_parts(input.cast::<u8>(), input_len as usize) };
    let message = ProviderMessage::decode(bytes).expect("the library's messages decode");
    let received = match message {
        ProviderMessage::TransferData(m) => Received::Transfer {
            request_id: m.request_id,
            offset: m.offset,
            last: m.flags.contains(TransferFlags::LAST),
            data: m.data.to_vec(),
        },
        ProviderMessage::FetchFailed(m) => Received::Failed {
            request_id: m.request_id,
            status: m.status,
        },
        ProviderMessage::CreatePlaceholder(m) => Received::Create {
            path: text(m.path),
            size: m.file_size,
            flags: m.flags,
            attributes: m.basic.attributes,
            last_write_time: m.basic.last_write_time,
            identity: m.identity.to_vec(),
        },
        ProviderMessage::Convert(m) => Received::Convert {
            path: text(m.path),
            flags: m.flags.bits(),
            identity: m.identity.to_vec(),
        },
        ProviderMessage::Revert(m) => Received::Revert(text(m.path)),
        ProviderMessage::Hydrate(m) => Received::Hydrate(text(m.path), m.range),
        ProviderMessage::Dehydrate(m) => Received::Dehydrate(text(m.path), m.range),
        ProviderMessage::SetPin(m) => Received::SetPin(text(m.path), m.state),
        ProviderMessage::GetInfo(m) => Received::GetInfo(text(m.path)),
        ProviderMessage::Update(m) => Received::Update {
            path: text(m.path),
            flags: m.flags.bits(),
            size: m.file_size,
            last_write_time: m.basic.last_write_time,
            attributes: m.basic.attributes,
            expected_changes: m.expected_changes,
            identity: m.identity.to_vec(),
            dehydrate: m.dehydrate.iter().collect(),
        },
        ProviderMessage::SetInSync(m) => Received::SetInSync {
            path: text(m.path),
            flags: m.flags.bits(),
            expected_changes: m.expected_changes,
        },
        other => panic!("unexpected message {other:?}"),
    };
    let pid = PsGetCurrentProcessId() as usize as u32;
    let payload = seen(|s| {
        s.messages.push((pid, received.clone()));
        match received {
            Received::GetInfo(_) | Received::Update { .. } | Received::SetInSync { .. } => {
                s.info_blob.clone()
            }
            Received::Hydrate(..) => s.hydrate_blob.clone(),
            _ => Vec::new(),
        }
    });
    let notify = NOTIFY_STATUS.load(Ordering::SeqCst);
    if notify != STATUS_SUCCESS {
        return notify;
    }
    let reply = Reply {
        status: REPLY_STATUS.load(Ordering::SeqCst),
        request_id: message.request_id(),
        payload: &payload,
    };
    let mut out = vec![0u8; reply.encoded_len()];
    reply.encode(&mut out).unwrap();
    assert!(
        out.len() <= output_len as usize,
        "the library's reply buffer is too small"
    );
    // SAFETY: the provider's output buffer holds `output_len` bytes (checked above).
    unsafe { std::ptr::copy_nonoverlapping(out.as_ptr(), output.cast::<u8>(), out.len()) };
    // SAFETY: FltMgr's out variable.
    unsafe { returned.write(out.len() as u32) };
    STATUS_SUCCESS
}

/// Boots a machine (volume 1 is C:) with the test driver's port open.
fn boot() -> Machine {
    let machine = Machine::boot(&[VolumeConfig::ntfs(1)]);
    CLIENT.store(0, Ordering::SeqCst);
    DISCONNECTS.store(0, Ordering::SeqCst);
    CONNECT_STATUS.store(STATUS_SUCCESS, Ordering::SeqCst);
    NOTIFY_STATUS.store(STATUS_SUCCESS, Ordering::SeqCst);
    REPLY_STATUS.store(STATUS_SUCCESS, Ordering::SeqCst);
    *SEEN.lock().unwrap_or_else(PoisonError::into_inner) = None;
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

    let name: Vec<u16> = cloudflt::PORT_NAME.encode_utf16().collect();
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
            4,
        )
    };
    assert_eq!(status, STATUS_SUCCESS);
    FltFreeSecurityDescriptor(sd);
    SERVER.store(server, Ordering::SeqCst);
    assert_eq!(FltStartFiltering(filter), STATUS_SUCCESS);
    machine
}

/// The driver sends a kernel message to the provider (no reply expected, as the driver
/// does for fetches and cancellations); the FltSendMessage status.
fn driver_send(message: &KernelMessage<'_>) -> NTSTATUS {
    let mut bytes = vec![0u8; message.encoded_len()];
    message.encode(&mut bytes).unwrap();
    let timeout = -50_000_000i64; // 5 s, relative: a hung library fails the test, not CI
    // SAFETY: valid buffers; the port variable is the driver's.
    unsafe {
        FltSendMessage(
            FILTER.load(Ordering::SeqCst),
            CLIENT.as_ptr(),
            bytes.as_ptr().cast(),
            bytes.len() as u32,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            &timeout,
        )
    }
}

fn fetch(request_id: u64, file_size: u64, required: ByteRange) -> KernelMessage<'static> {
    static IMAGE_UTF16: std::sync::OnceLock<Vec<u16>> = std::sync::OnceLock::new();
    static PATH_UTF16: std::sync::OnceLock<Vec<u16>> = std::sync::OnceLock::new();
    let image = IMAGE_UTF16.get_or_init(|| IMAGE.encode_utf16().collect());
    let path = PATH_UTF16.get_or_init(|| r"docs\report.txt".encode_utf16().collect());
    KernelMessage::FetchData(msg::FetchData {
        request_id,
        file_id: 0x1234,
        file_size,
        required,
        priority: 7,
        requestor_pid: 4242,
        requestor_image: Utf16::from_units(image),
        path: Utf16::from_units(path),
        identity: b"server/docs/report.txt",
        flags: msg::RequestFlags::EMPTY,
        requestor_command_line: Utf16::from_units(&[]),
        sync_root_identity: &[],
        root_file_identity: &[],
    })
}

fn messages() -> Vec<(u32, Received)> {
    seen(|s| s.messages.clone())
}

/// The transfers received, summarised (data is too long to print): pid, request id,
/// offset, length, LAST flag, first byte.
fn transfers() -> Vec<(u32, u64, u64, usize, bool, u8)> {
    messages()
        .into_iter()
        .map(|(pid, m)| match m {
            Received::Transfer {
                request_id,
                offset,
                last,
                data,
            } => (pid, request_id, offset, data.len(), last, data[0]),
            other => panic!("not a transfer: {other:?}"),
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Providers for the tests.
// ---------------------------------------------------------------------------------------

/// Hands each fetch to the test through a channel, with the pid of the worker thread.
struct Relay {
    fetches: Mutex<Sender<(u32, FetchRequest, Transfer)>>,
    cancels: Mutex<Sender<CancelFetch>>,
}

struct Relayed {
    fetches: Receiver<(u32, FetchRequest, Transfer)>,
    cancels: Receiver<CancelFetch>,
}

fn relay() -> (Relay, Relayed) {
    let (fetch_tx, fetches) = mpsc::channel();
    let (cancel_tx, cancels) = mpsc::channel();
    (
        Relay {
            fetches: Mutex::new(fetch_tx),
            cancels: Mutex::new(cancel_tx),
        },
        Relayed { fetches, cancels },
    )
}

impl SyncProvider for Relay {
    fn fetch_data(&self, request: FetchRequest, transfer: Transfer) {
        let pid = process::current_pid();
        let _ = self.fetches.lock().unwrap().send((pid, request, transfer));
    }

    fn cancel_fetch(&self, cancel: CancelFetch) {
        let _ = self.cancels.lock().unwrap().send(cancel);
    }
}

const WAIT: Duration = Duration::from_secs(5);

fn config() -> SyncRootConfig {
    SyncRootConfig::new(r"C:\Users\me\Cloud\", "Test provider", "1.2.3")
}

// ---------------------------------------------------------------------------------------
// Tests.
// ---------------------------------------------------------------------------------------

#[test]
fn connect_sends_the_nt_root_and_policies_and_disconnect_is_seen_by_the_driver() {
    let mut machine = boot();
    let pid = machine.spawn_process(PROVIDER_IMAGE, 0, true);
    let (provider, _relayed) = relay();
    let connection = process::run_as(pid, || {
        let config = config()
            .hydration(HydrationPolicy::Full)
            .population(PopulationPolicy::AlwaysFull)
            .timeout(Duration::from_secs(5));
        SyncRoot::connect(config, provider).unwrap()
    });
    assert_eq!(
        connection.nt_root(),
        r"\Device\HarddiskVolume1\Users\me\Cloud"
    );
    let context = seen(|s| s.context.clone()).unwrap();
    assert_eq!(
        context,
        Context {
            name: "Test provider".into(),
            version: "1.2.3".into(),
            root: r"\Device\HarddiskVolume1\Users\me\Cloud".into(),
            hydration: HydrationPolicy::Full,
            population: PopulationPolicy::AlwaysFull,
            timeout_ms: 5000,
            pid,
        }
    );
    assert!(connection.is_serving());
    assert!(!connection.wait_closed(Duration::from_millis(10)));
    assert_eq!(DISCONNECTS.load(Ordering::SeqCst), 0);

    process::run_as(pid, || connection.disconnect()).unwrap();
    assert_eq!(
        DISCONNECTS.load(Ordering::SeqCst),
        1,
        "DisconnectNotify ran"
    );
    assert_eq!(
        driver_send(&fetch(1, 4096, ByteRange::new(0, 4096))),
        STATUS_PORT_DISCONNECTED,
        "nobody is connected any more"
    );
    assert_eq!(machine.unload_driver(), STATUS_SUCCESS);
    machine.assert_clean();
}

#[test]
fn dropping_the_connection_disconnects_too() {
    let mut machine = boot();
    let pid = machine.spawn_process(PROVIDER_IMAGE, 0, true);
    let (provider, _relayed) = relay();
    process::run_as(pid, || {
        let connection = SyncRoot::connect(config(), provider).unwrap();
        drop(connection);
    });
    assert_eq!(DISCONNECTS.load(Ordering::SeqCst), 1);
    assert_eq!(machine.unload_driver(), STATUS_SUCCESS);
    machine.assert_clean();
}

#[test]
fn a_fetch_reaches_the_provider_on_a_worker_and_transfers_arrive_at_the_driver() {
    let mut machine = boot();
    let pid = machine.spawn_process(PROVIDER_IMAGE, 0, true);
    let (provider, relayed) = relay();
    let connection = process::run_as(pid, || SyncRoot::connect(config(), provider).unwrap());

    // A 10,000-byte file; the reader needs its second 4 KiB page.
    assert_eq!(
        driver_send(&fetch(77, 10_000, ByteRange::new(4096, 4096))),
        STATUS_SUCCESS
    );
    let (worker_pid, request, mut transfer) = relayed.fetches.recv_timeout(WAIT).unwrap();
    assert_eq!(worker_pid, pid, "callbacks run in the provider's process");
    assert_eq!(request.request_id, 77);
    assert_eq!(request.file_id, 0x1234);
    assert_eq!(request.file_size, 10_000);
    assert_eq!(request.required, 4096..8192);
    assert_eq!(request.path, r"docs\report.txt");
    assert_eq!(request.identity, b"server/docs/report.txt");
    assert_eq!(request.process.pid, 4242);
    assert_eq!(request.process.image, IMAGE);
    assert_eq!(request.priority, 7);
    assert_eq!(transfer.request_id(), 77);

    // More than asked, in two pieces: the whole file, the unaligned tail last.
    let head = vec![0xAB; 8192];
    let tail = vec![0xCD; 10_000 - 8192];
    process::run_as(pid, || {
        transfer.write(0, &head[..4096]).unwrap();
        assert!(!transfer.is_complete());
        transfer.write(4096, &head[4096..]).unwrap();
        assert!(transfer.is_complete());
        transfer.write(8192, &tail).unwrap();
        drop(transfer); // complete: nothing more is sent
    });
    assert_eq!(
        transfers(),
        vec![
            (pid, 77, 0, 4096, false, 0xAB),
            (pid, 77, 4096, 4096, true, 0xAB),
            (pid, 77, 8192, tail.len(), false, 0xCD),
        ],
        "(pid, request, offset, length, last, byte)"
    );
    let sent: Vec<u8> = messages()
        .into_iter()
        .flat_map(|(_, m)| match m {
            Received::Transfer { data, .. } => data,
            other => panic!("{other:?}"),
        })
        .collect();
    assert!(sent == [head, tail].concat(), "the bytes arrive unchanged");
    process::run_as(pid, || connection.disconnect()).unwrap();
    assert_eq!(machine.unload_driver(), STATUS_SUCCESS);
    machine.assert_clean();
}

#[test]
fn transfers_breaking_the_alignment_rule_are_refused_before_sending() {
    let mut machine = boot();
    let pid = machine.spawn_process(PROVIDER_IMAGE, 0, true);
    let (provider, relayed) = relay();
    let connection = process::run_as(pid, || SyncRoot::connect(config(), provider).unwrap());
    let size = 3 * MIB;
    assert_eq!(
        driver_send(&fetch(5, size, ByteRange::new(0, 100))),
        STATUS_SUCCESS
    );
    let (_, _, mut transfer) = relayed.fetches.recv_timeout(WAIT).unwrap();
    process::run_as(pid, || {
        // Unaligned offset.
        assert!(matches!(
            transfer.write(512, &[0; 4096]),
            Err(Error::Alignment {
                offset: 512,
                length: 4096,
                file_size: 3145728
            })
        ));
        // Unaligned length that does not end at end of file.
        let e = transfer.write(0, &[0; 100]).unwrap_err();
        assert!(matches!(e, Error::Alignment { .. }));
        assert_eq!(e.status(), STATUS_CLOUD_FILE_INVALID_REQUEST);
        // Past end of file, and empty.
        assert!(matches!(
            transfer.write(size - 4096, &[0; 8192]),
            Err(Error::OutOfRange { .. })
        ));
        assert!(matches!(
            transfer.write(0, &[]),
            Err(Error::OutOfRange { .. })
        ));
    });
    assert!(messages().is_empty(), "nothing was sent");

    // A piece larger than one message is split, aligned, and only the end says LAST.
    let big = vec![7u8; 2 * 1024 * 1024 + 4096];
    process::run_as(pid, || transfer.write(0, &big).unwrap());
    assert_eq!(
        transfers(),
        vec![
            (pid, 5, 0, 1 << 20, false, 7),
            (pid, 5, 1 << 20, 1 << 20, false, 7),
            (pid, 5, 2 << 20, 4096, true, 7)
        ]
    );
    process::run_as(pid, || connection.disconnect()).unwrap();
    assert_eq!(machine.unload_driver(), STATUS_SUCCESS);
    machine.assert_clean();
}

#[test]
fn the_drivers_refusals_come_back_as_typed_errors() {
    let mut machine = boot();
    let pid = machine.spawn_process(PROVIDER_IMAGE, 0, true);
    let (provider, relayed) = relay();
    let connection = process::run_as(pid, || SyncRoot::connect(config(), provider).unwrap());
    assert_eq!(
        driver_send(&fetch(9, 8192, ByteRange::new(0, 8192))),
        STATUS_SUCCESS
    );
    let (_, _, mut transfer) = relayed.fetches.recv_timeout(WAIT).unwrap();

    // In the Reply's status.
    REPLY_STATUS.store(STATUS_CLOUD_FILE_REQUEST_TIMEOUT, Ordering::SeqCst);
    let e = process::run_as(pid, || transfer.write(0, &[1; 4096])).unwrap_err();
    assert!(matches!(e, Error::RequestTimeout), "{e}");
    assert_eq!(e.status(), STATUS_CLOUD_FILE_REQUEST_TIMEOUT);

    // As MessageNotify's own status, which fltlib turns into an HRESULT.
    REPLY_STATUS.store(STATUS_SUCCESS, Ordering::SeqCst);
    NOTIFY_STATUS.store(STATUS_CLOUD_FILE_INVALID_REQUEST, Ordering::SeqCst);
    let e = process::run_as(pid, || transfer.write(4096, &[1; 4096])).unwrap_err();
    assert!(matches!(e, Error::InvalidRequest), "{e}");
    NOTIFY_STATUS.store(STATUS_SUCCESS, Ordering::SeqCst);

    // Placeholder requests too.
    REPLY_STATUS.store(0xC000_CF13_u32 as i32, Ordering::SeqCst);
    let e = process::run_as(pid, || connection.revert("x.txt")).unwrap_err();
    assert!(matches!(e, Error::NotUnderSyncRoot), "{e}");
    REPLY_STATUS.store(STATUS_SUCCESS, Ordering::SeqCst);

    process::run_as(pid, || {
        drop(transfer);
        connection.disconnect()
    })
    .unwrap();
    assert_eq!(machine.unload_driver(), STATUS_SUCCESS);
    machine.assert_clean();
}

#[test]
fn failing_or_dropping_a_transfer_fails_the_fetch_at_once() {
    let mut machine = boot();
    let pid = machine.spawn_process(PROVIDER_IMAGE, 0, true);
    let (provider, relayed) = relay();
    let connection = process::run_as(pid, || SyncRoot::connect(config(), provider).unwrap());
    for id in [1, 2] {
        assert_eq!(
            driver_send(&fetch(id, 4096, ByteRange::new(0, 4096))),
            STATUS_SUCCESS
        );
    }
    let mut transfers: Vec<Transfer> = (0..2)
        .map(|_| relayed.fetches.recv_timeout(WAIT).unwrap().2)
        .collect();
    transfers.sort_by_key(Transfer::request_id);
    let mut transfers = transfers.into_iter();
    let first = transfers.next().unwrap();
    let second = transfers.next().unwrap();
    process::run_as(pid, || {
        first.fail(Error::NetworkUnavailable).unwrap();
        drop(second);
    });
    assert_eq!(
        messages().into_iter().map(|(_, m)| m).collect::<Vec<_>>(),
        vec![
            Received::Failed {
                request_id: 1,
                status: STATUS_CLOUD_FILE_NETWORK_UNAVAILABLE
            },
            Received::Failed {
                request_id: 2,
                status: STATUS_CLOUD_FILE_UNSUCCESSFUL
            },
        ]
    );
    process::run_as(pid, || connection.disconnect()).unwrap();
    assert_eq!(machine.unload_driver(), STATUS_SUCCESS);
    machine.assert_clean();
}

/// Blocks in its callback until told to go on; the loop must keep delivering meanwhile.
struct Stuck {
    release: Mutex<Receiver<()>>,
    entered: Mutex<Sender<u64>>,
}

impl SyncProvider for Stuck {
    fn fetch_data(&self, request: FetchRequest, mut transfer: Transfer) {
        self.entered
            .lock()
            .unwrap()
            .send(request.request_id)
            .unwrap();
        if request.request_id == 1 {
            let _ = self.release.lock().unwrap().recv();
        }
        let data = vec![request.request_id as u8; request.file_size as usize];
        transfer.write(0, &data).unwrap();
    }
}

#[test]
fn a_blocked_callback_does_not_stop_other_fetches_or_cancellations() {
    let mut machine = boot();
    let pid = machine.spawn_process(PROVIDER_IMAGE, 0, true);
    let (release_tx, release_rx) = mpsc::channel();
    let (entered_tx, entered) = mpsc::channel();
    let provider = Stuck {
        release: Mutex::new(release_rx),
        entered: Mutex::new(entered_tx),
    };
    let connection = process::run_as(pid, || SyncRoot::connect(config(), provider).unwrap());
    assert_eq!(
        driver_send(&fetch(1, 100, ByteRange::new(0, 100))),
        STATUS_SUCCESS
    );
    assert_eq!(entered.recv_timeout(WAIT).unwrap(), 1);
    // Fetch 1 is stuck in its callback; fetch 2 still gets served.
    assert_eq!(
        driver_send(&fetch(2, 100, ByteRange::new(0, 100))),
        STATUS_SUCCESS
    );
    assert_eq!(entered.recv_timeout(WAIT).unwrap(), 2);
    let deadline = std::time::Instant::now() + WAIT;
    while messages().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "fetch 2 was not answered"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(matches!(
        messages()[0].1,
        Received::Transfer {
            request_id: 2,
            last: true,
            ..
        }
    ));
    release_tx.send(()).unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    while messages().len() < 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "fetch 1 was not answered"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    process::run_as(pid, || connection.disconnect()).unwrap();
    assert_eq!(machine.unload_driver(), STATUS_SUCCESS);
    machine.assert_clean();
}

#[test]
fn cancellations_reach_the_provider() {
    let mut machine = boot();
    let pid = machine.spawn_process(PROVIDER_IMAGE, 0, true);
    let (provider, relayed) = relay();
    let connection = process::run_as(pid, || SyncRoot::connect(config(), provider).unwrap());
    let cancel = KernelMessage::CancelFetch(msg::CancelFetch {
        request_id: 31,
        range: ByteRange::new(4096, 8192),
        reason: CancelReason::IoTimeout,
    });
    assert_eq!(driver_send(&cancel), STATUS_SUCCESS);
    let cancel = relayed.cancels.recv_timeout(WAIT).unwrap();
    assert_eq!(cancel.request_id, 31);
    assert_eq!(cancel.range, 4096..12288);
    assert_eq!(cancel.reason, CancelReason::IoTimeout);
    process::run_as(pid, || connection.disconnect()).unwrap();
    assert_eq!(machine.unload_driver(), STATUS_SUCCESS);
    machine.assert_clean();
}

#[test]
fn placeholder_management_is_one_round_trip_each() {
    let mut machine = boot();
    let pid = machine.spawn_process(PROVIDER_IMAGE, 0, true);
    let (provider, _relayed) = relay();
    let connection = process::run_as(pid, || SyncRoot::connect(config(), provider).unwrap());
    let times = FileTimes::all(std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000));
    let ranges = [ByteRange::new(0, 4096)];
    let blob = Placeholder {
        flags: PlaceholderFlags::PINNED | PlaceholderFlags::IN_SYNC,
        file_size: 10_000,
        identity: b"id-a",
        ranges: RangeList::from_slice(&ranges),
        modified: RangeList::EMPTY,
        changes: 0,
    };
    let mut encoded = vec![0u8; blob.encoded_len()];
    blob.encode(&mut encoded).unwrap();
    seen(|s| {
        s.hydrate_blob = encoded.clone();
        s.info_blob = encoded;
    });

    let info = process::run_as(pid, || {
        let results = connection.create_placeholders(&[
            PlaceholderSpec::directory("docs"),
            PlaceholderSpec::file("docs/a.txt", 10_000)
                .identity(b"id-a".to_vec())
                .times(times)
                .in_sync(true)
                .pin(PinState::Pinned),
        ]);
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        connection
            .convert(
                r"docs\full.bin",
                b"id-full",
                ConvertOptions {
                    in_sync: true,
                    dehydrate: true,
                },
            )
            .unwrap();
        connection.hydrate("docs/a.txt", ..).unwrap();
        connection.dehydrate("docs/a.txt", 4096..8192).unwrap();
        connection.set_pin("docs", PinState::Unpinned).unwrap();
        connection.revert(r"docs\full.bin").unwrap();
        assert!(matches!(
            connection.hydrate("../outside", ..),
            Err(Error::InvalidArgument(_))
        ));
        connection.info("docs/a.txt").unwrap()
    });
    assert_eq!(info.file_size, 10_000);
    assert_eq!(info.identity, b"id-a");
    assert_eq!(info.ranges, vec![0..4096]);
    assert_eq!(info.pin, PinState::Pinned);
    assert!(info.in_sync && !info.is_fully_hydrated());

    let received: Vec<Received> = messages().into_iter().map(|(_, m)| m).collect();
    assert_eq!(
        received,
        vec![
            Received::Create {
                path: "docs".into(),
                size: 0,
                flags: PlaceholderFlags::DIRECTORY,
                attributes: 0x10,
                last_write_time: 0,
                identity: vec![],
            },
            Received::Create {
                path: r"docs\a.txt".into(),
                size: 10_000,
                flags: PlaceholderFlags::IN_SYNC | PlaceholderFlags::PINNED,
                attributes: 0x80,
                last_write_time: times.last_write_time,
                identity: b"id-a".to_vec(),
            },
            Received::Convert {
                path: r"docs\full.bin".into(),
                flags: 3,
                identity: b"id-full".to_vec(),
            },
            // HYDRATE's reply carries the blob: no second request.
            Received::Hydrate(r"docs\a.txt".into(), ByteRange::new(0, 0)),
            Received::Dehydrate(r"docs\a.txt".into(), ByteRange::new(4096, 4096)),
            Received::SetPin("docs".into(), PinState::Unpinned),
            Received::Revert(r"docs\full.bin".into()),
            Received::GetInfo(r"docs\a.txt".into()),
        ]
    );

    // An ordinary file: the driver answers with no blob.
    seen(|s| s.info_blob.clear());
    let e = process::run_as(pid, || connection.info("plain.txt")).unwrap_err();
    assert!(matches!(e, Error::NotACloudFile), "{e}");

    process::run_as(pid, || connection.disconnect()).unwrap();
    assert_eq!(machine.unload_driver(), STATUS_SUCCESS);
    machine.assert_clean();
}

#[test]
fn update_set_in_sync_and_hydrate_answer_with_the_placeholders_state() {
    let mut machine = boot();
    let pid = machine.spawn_process(PROVIDER_IMAGE, 0, true);
    let (provider, _relayed) = relay();
    let connection = process::run_as(pid, || SyncRoot::connect(config(), provider).unwrap());
    let ranges = [ByteRange::new(0, 8192)];
    let modified = [ByteRange::new(4096, 10)];
    let blob = |changes: u64| {
        let p = Placeholder {
            flags: PlaceholderFlags::IN_SYNC,
            file_size: 9000,
            identity: b"v2",
            ranges: RangeList::from_slice(&ranges),
            modified: RangeList::from_slice(&modified),
            changes,
        };
        let mut encoded = vec![0u8; p.encoded_len()];
        p.encode(&mut encoded).unwrap();
        encoded
    };
    seen(|s| {
        s.info_blob = blob(5);
        s.hydrate_blob = blob(4);
    });
    let times = FileTimes {
        last_write_time: 77,
        ..FileTimes::default()
    };
    let (hydrated, updated, marked) = process::run_as(pid, || {
        let hydrated = connection.hydrate("f.bin", 0..100).unwrap();
        let options = UpdateOptions::new(9000)
            .times(times)
            .mark_in_sync(true)
            .dehydrate(Dehydration::Ranges(vec![4096..8192, 0..4096]))
            .if_unchanged(hydrated.changes)
            .identity(b"v2".to_vec());
        let updated = connection.update("f.bin", &options).unwrap();
        let marked = connection
            .set_in_sync("f.bin", false, Some(updated.changes))
            .unwrap();
        connection.set_in_sync("dir", true, None).unwrap();
        connection
            .update("f.bin", &UpdateOptions::new(1).dehydrate(Dehydration::All))
            .unwrap();
        // Refused before sending.
        let both = UpdateOptions::new(1).mark_in_sync(true).clear_in_sync(true);
        assert!(matches!(
            connection.update("f.bin", &both),
            Err(Error::InvalidArgument(_))
        ));
        (hydrated, updated, marked)
    });
    assert_eq!(hydrated.changes, 4);
    assert_eq!(updated.changes, 5);
    assert_eq!(updated.modified, vec![4096..4106]);
    assert_eq!(updated.identity, b"v2");
    assert_eq!(marked.ranges, vec![0..8192]);
    let received: Vec<Received> = messages().into_iter().map(|(_, m)| m).collect();
    assert_eq!(
        received,
        vec![
            Received::Hydrate("f.bin".into(), ByteRange::new(0, 100)),
            Received::Update {
                path: "f.bin".into(),
                flags: 1 | 4 | 8 | 16,
                size: 9000,
                last_write_time: 77,
                attributes: 0,
                expected_changes: 4,
                identity: b"v2".to_vec(),
                dehydrate: vec![ByteRange::new(0, 8192)],
            },
            Received::SetInSync {
                path: "f.bin".into(),
                flags: 2,
                expected_changes: 5,
            },
            Received::SetInSync {
                path: "dir".into(),
                flags: 1,
                expected_changes: 0,
            },
            Received::Update {
                path: "f.bin".into(),
                flags: 4,
                size: 1,
                last_write_time: 0,
                attributes: 0,
                expected_changes: 0,
                identity: vec![],
                dehydrate: vec![],
            },
        ]
    );

    // The driver's refusal of a stale change counter, and of a file in use.
    REPLY_STATUS.store(STATUS_CLOUD_FILE_NOT_IN_SYNC, Ordering::SeqCst);
    let e = process::run_as(pid, || connection.set_in_sync("f.bin", true, Some(1))).unwrap_err();
    assert!(matches!(e, Error::NotInSync), "{e}");
    REPLY_STATUS.store(STATUS_CLOUD_FILE_IN_USE, Ordering::SeqCst);
    let e = process::run_as(pid, || {
        connection.update("f.bin", &UpdateOptions::new(1).if_unchanged(1))
    })
    .unwrap_err();
    assert!(matches!(e, Error::InUse), "{e}");
    REPLY_STATUS.store(STATUS_SUCCESS, Ordering::SeqCst);
    seen(|s| s.hydrate_blob.clear());

    process::run_as(pid, || connection.disconnect()).unwrap();
    assert_eq!(machine.unload_driver(), STATUS_SUCCESS);
    machine.assert_clean();
}

#[test]
fn refused_connections_are_typed() {
    let mut machine = boot();
    let pid = machine.spawn_process(PROVIDER_IMAGE, 0, true);
    // The driver refuses: another provider serves the root.
    CONNECT_STATUS.store(STATUS_CLOUD_FILE_ALREADY_CONNECTED, Ordering::SeqCst);
    let e = process::run_as(pid, || SyncRoot::connect(config(), relay().0)).unwrap_err();
    assert!(matches!(e, Error::AlreadyConnected), "{e}");
    CONNECT_STATUS.store(STATUS_SUCCESS, Ordering::SeqCst);

    // No such drive letter: only C: is mounted.
    let e = process::run_as(pid, || {
        SyncRoot::connect(SyncRootConfig::new(r"D:\Cloud", "P", "1"), relay().0)
    })
    .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Io {
                function: "QueryDosDeviceW",
                code: 2
            }
        ),
        "{e}"
    );

    // No driver: the port does not exist.
    assert_eq!(machine.unload_driver(), STATUS_SUCCESS);
    let e = process::run_as(pid, || SyncRoot::connect(config(), relay().0)).unwrap_err();
    assert!(
        matches!(
            e,
            Error::Port {
                function: "FilterConnectCommunicationPort",
                ..
            }
        ),
        "{e}"
    );
    machine.assert_clean();
}

#[test]
fn a_driver_that_goes_away_ends_the_loop_and_later_requests_are_disconnected() {
    let mut machine = boot();
    let pid = machine.spawn_process(PROVIDER_IMAGE, 0, true);
    let (provider, relayed) = relay();
    let connection = process::run_as(pid, || SyncRoot::connect(config(), provider).unwrap());
    assert_eq!(
        driver_send(&fetch(3, 4096, ByteRange::new(0, 4096))),
        STATUS_SUCCESS
    );
    let (_, _, mut transfer) = relayed.fetches.recv_timeout(WAIT).unwrap();
    assert_eq!(machine.unload_driver(), STATUS_SUCCESS);
    assert!(connection.wait_closed(WAIT), "the loop noticed");
    assert!(!connection.is_serving());
    let e = process::run_as(pid, || transfer.write(0, &[0; 4096])).unwrap_err();
    assert!(matches!(e, Error::Disconnected), "{e}");
    process::run_as(pid, || {
        drop(transfer);
        connection.disconnect()
    })
    .unwrap();
    machine.assert_clean();
}
