//! The scenario runner reports honestly: unsupported operations, malformed files, unknown
//! names and expectations it cannot check all fail, with a line that says why.

use std::ffi::c_void;
use std::path::PathBuf;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::{Mutex, PoisonError};

use cloudflt_proto::msg::{self, KernelMessage, ProviderMessage, Reply, TransferFlags};
use cloudflt_proto::{ByteRange, PlaceholderFlags, Utf16};
use cloudflt_tests::model::files::{self, OpenParams};
use cloudflt_tests::model::port::{
    FltBuildDefaultSecurityDescriptor, FltCloseClientPort, FltCloseCommunicationPort,
    FltCreateCommunicationPort, FltFreeSecurityDescriptor, FltSendMessage,
};
use cloudflt_tests::model::process::PsGetCurrentProcessId;
use cloudflt_tests::scenario::{self, Mode, Summary};
use windows_sys::Wdk::Foundation::{DRIVER_OBJECT, OBJECT_ATTRIBUTES};
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FLT_REGISTRATION, FLT_REGISTRATION_VERSION, FltRegisterFilter, FltStartFiltering,
    FltUnregisterFilter, PFLT_FILTER, PFLT_PORT,
};
use windows_sys::Win32::Foundation::{
    NTSTATUS, STATUS_CLOUD_FILE_NETWORK_UNAVAILABLE, STATUS_SUCCESS, UNICODE_STRING,
};

/// A DriverEntry that must never be reached by these scenarios.
unsafe fn no_driver(_: *mut DRIVER_OBJECT, _: *const UNICODE_STRING) -> NTSTATUS {
    panic!("these scenarios do not load a driver")
}

fn run(name: &str, text: &str) -> (Summary, String) {
    run_with(name, text, no_driver, Mode::Normal)
}

fn run_with(name: &str, text: &str, entry: scenario::DriverEntry, mode: Mode) -> (Summary, String) {
    let path: PathBuf =
        std::env::temp_dir().join(format!("cloudflt-{}-{name}.toml", std::process::id()));
    std::fs::write(&path, text).unwrap();
    let mut out = Vec::new();
    let summary = scenario::run_file_as(&path, entry, mode, &mut out).unwrap();
    std::fs::remove_file(&path).unwrap();
    (summary, String::from_utf8(out).unwrap())
}

#[test]
fn provider_steps_without_a_driver_report_what_the_provider_would_see() {
    let (summary, out) = run(
        "no-driver",
        r#"
[[process]]
name = "app"
image = 'C:\Tools\app.exe'

[[provider]]
name = "mirror"
image = 'C:\Program Files\Mirror\mirror.exe'
sync_root = 'C:\Users\u\Cloud'
files = [{ path = "a.bin", size = 100, seed = 1 }]

# No driver, no port: FilterConnectCommunicationPort finds nothing.
[[step]]
do = "connect"
provider = "mirror"
expect = { status = "STATUS_OBJECT_NAME_NOT_FOUND" }

[[step]]
do = "create_placeholders"
provider = "mirror"

[[step]]
do = "provider_stats"
provider = "mirror"
expect = { fetches = 0, bytes_served = 0, cancels = 0 }

[[step]]
do = "create_file"
as = "mirror"
path = 'C:\Users\u\Cloud\a.bin'
text = "local"

[[step]]
do = "pin"
as = "app"
path = 'C:\Users\u\Cloud\a.bin'

[[step]]
do = "query"
as = "app"
path = 'C:\Users\u\Cloud\a.bin'
class = "FileBasicInformation"
expect = { attributes_include = ["PINNED", "ARCHIVE"], attributes_exclude = ["UNPINNED"] }

[[step]]
do = "state"
path = 'C:\Users\u\Cloud\a.bin'
expect = { pinned = true, placeholder = false, in_sync = false, hydrated = "all" }

[[step]]
do = "unpin"
as = "mirror"
path = 'C:\Users\u\Cloud\a.bin'

[[step]]
do = "query"
as = "app"
path = 'C:\Users\u\Cloud\a.bin'
class = "FileBasicInformation"
expect = { attributes_include = ["UNPINNED"], attributes_exclude = ["PINNED"] }

[[step]]
do = "state"
path = 'C:\Users\u\Cloud\a.bin'
expect = { pinned = true, in_sync = true }

[[step]]
do = "convert"
provider = "nobody"
path = 'C:\Users\u\Cloud\a.bin'
"#,
    );
    assert_eq!(
        summary,
        Summary {
            passed: 8,
            failed: 3
        },
        "{out}"
    );
    assert!(out.contains("  ok   [1] connect"), "{out}");
    assert!(
        out.contains(
            "FAIL [2] create_placeholders: invalid step: provider \"mirror\" is not connected"
        ),
        "{out}"
    );
    assert!(out.contains("  ok   [3] provider_stats"), "{out}");
    assert!(out.contains("  ok   [7] state"), "{out}");
    assert!(
        out.contains("FAIL [10] state: expected pinned = true, attributes are ARCHIVE|UNPINNED")
            && out.contains("expected in_sync = true, got false (not a placeholder)"),
        "{out}"
    );
    assert!(
        out.contains("FAIL [11] convert: invalid step: `provider = \"nobody\"` names no provider"),
        "{out}"
    );
}

// ---------------------------------------------------------------------------------------
// A test driver that fetches: it owns cloudflt's port, answers every provider message
// with success, and for every file placeholder the provider asks it to create sends one
// FETCH_DATA for the whole file from a kernel thread. What the provider sends back is
// recorded, so the tests see exactly what a behaviour answers.
// ---------------------------------------------------------------------------------------

static FETCH_FILTER: AtomicIsize = AtomicIsize::new(0);
static FETCH_SERVER: AtomicIsize = AtomicIsize::new(0);
static FETCH_CLIENT: AtomicIsize = AtomicIsize::new(0);

/// What the fetching driver saw.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Connected {
        pid: u32,
    },
    Disconnected,
    Transfer {
        pid: u32,
        offset: u64,
        length: usize,
        last: bool,
        data: Vec<u8>,
    },
    Failed {
        pid: u32,
        status: NTSTATUS,
    },
}

static SEEN: Mutex<Vec<Seen>> = Mutex::new(Vec::new());
/// Held by each test of the fetching driver: they read `SEEN` after their machine is gone.
static FETCH_TESTS: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    FETCH_TESTS.lock().unwrap_or_else(PoisonError::into_inner)
}
static FETCHERS: Mutex<Vec<std::thread::JoinHandle<()>>> = Mutex::new(Vec::new());

fn seen() -> Vec<Seen> {
    SEEN.lock().unwrap_or_else(PoisonError::into_inner).clone()
}

fn note(s: Seen) {
    SEEN.lock().unwrap_or_else(PoisonError::into_inner).push(s);
}

fn current_pid() -> u32 {
    PsGetCurrentProcessId() as usize as u32
}

static FETCH_REGISTRATION: Registration = Registration(FLT_REGISTRATION {
    Size: std::mem::size_of::<FLT_REGISTRATION>() as u16,
    Version: FLT_REGISTRATION_VERSION as u16,
    Flags: 0,
    ContextRegistration: std::ptr::null(),
    OperationRegistration: std::ptr::null(),
    FilterUnloadCallback: Some(fetch_unload),
    InstanceSetupCallback: None,
    InstanceQueryTeardownCallback: None,
    InstanceTeardownStartCallback: None,
    InstanceTeardownCompleteCallback: None,
    GenerateFileNameCallback: None,
    NormalizeNameComponentCallback: None,
    NormalizeContextCleanupCallback: None,
    TransactionNotificationCallback: None,
    NormalizeNameComponentExCallback: None,
    SectionNotificationCallback: None,
});

unsafe extern "system" fn fetch_unload(_flags: u32) -> NTSTATUS {
    let fetchers = std::mem::take(&mut *FETCHERS.lock().unwrap_or_else(PoisonError::into_inner));
    for f in fetchers {
        f.join().unwrap();
    }
    FltCloseCommunicationPort(FETCH_SERVER.load(Ordering::SeqCst));
    // SAFETY: the filter registered by fetch_driver, unregistered once.
    unsafe { FltUnregisterFilter(FETCH_FILTER.load(Ordering::SeqCst)) };
    STATUS_SUCCESS
}

unsafe extern "system" fn fetch_connect(
    client: PFLT_PORT,
    _server_cookie: *const c_void,
    _context: *const c_void,
    _size: u32,
    cookie: *mut *mut c_void,
) -> NTSTATUS {
    FETCH_CLIENT.store(client, Ordering::SeqCst);
    note(Seen::Connected { pid: current_pid() });
    // SAFETY: FltMgr's out variable.
    unsafe { cookie.write(std::ptr::null_mut()) };
    STATUS_SUCCESS
}

unsafe extern "system" fn fetch_disconnect(_cookie: *const c_void) {
    note(Seen::Disconnected);
    // SAFETY: the driver's own port variable.
    unsafe { FltCloseClientPort(FETCH_FILTER.load(Ordering::SeqCst), FETCH_CLIENT.as_ptr()) };
}

/// Sends FETCH_DATA for all of `path` (identity: the path) from a kernel thread.
fn send_fetch(path: Vec<u16>, identity: Vec<u8>, file_size: u64) {
    let thread = std::thread::spawn(move || {
        let image: Vec<u16> = r"\Device\HarddiskVolume1\Tools\app.exe"
            .encode_utf16()
            .collect();
        let message = KernelMessage::FetchData(msg::FetchData {
            request_id: 77,
            file_id: 0x1234,
            file_size,
            required: ByteRange::new(0, file_size),
            priority: 7,
            requestor_pid: 4242,
            requestor_image: Utf16::from_units(&image),
            path: Utf16::from_units(&path),
            identity: &identity,
            flags: msg::RequestFlags::EMPTY,
            requestor_command_line: Utf16::from_units(&[]),
            sync_root_identity: &[],
            root_file_identity: &[],
        });
        let mut bytes = vec![0u8; message.encoded_len()];
        message.encode(&mut bytes).unwrap();
        let timeout = -50_000_000i64;
        // SAFETY: valid buffers; the port variable is the driver's.
        unsafe {
            FltSendMessage(
                FETCH_FILTER.load(Ordering::SeqCst),
                FETCH_CLIENT.as_ptr(),
                bytes.as_ptr().cast(),
                bytes.len() as u32,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                &timeout,
            )
        };
    });
    FETCHERS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(thread);
}

unsafe extern "system" fn fetch_message(
    _cookie: *const c_void,
    input: *const c_void,
    input_len: u32,
    output: *mut c_void,
    output_len: u32,
    returned: *mut u32,
) -> NTSTATUS {
    // SAFETY: the provider's input buffer of `input_len` bytes (a test process).
    let bytes = unsafe { std::slice::from_raw_parts(input.cast::<u8>(), input_len as usize) };
    let message = ProviderMessage::decode(bytes).unwrap();
    let pid = current_pid();
    match &message {
        ProviderMessage::TransferData(m) => note(Seen::Transfer {
            pid,
            offset: m.offset,
            length: m.data.len(),
            last: m.flags.contains(TransferFlags::LAST),
            data: m.data.to_vec(),
        }),
        ProviderMessage::FetchFailed(m) => note(Seen::Failed {
            pid,
            status: m.status,
        }),
        ProviderMessage::CreatePlaceholder(m) if !m.flags.contains(PlaceholderFlags::DIRECTORY) => {
            send_fetch(m.path.units().collect(), m.identity.to_vec(), m.file_size);
        }
        _ => {}
    }
    let reply = Reply {
        status: STATUS_SUCCESS,
        request_id: message.request_id(),
        payload: &[],
    };
    let mut out = vec![0u8; reply.encoded_len()];
    reply.encode(&mut out).unwrap();
    assert!(out.len() <= output_len as usize);
    // SAFETY: the provider's output buffer holds `output_len` bytes (checked above).
    unsafe { std::ptr::copy_nonoverlapping(out.as_ptr(), output.cast::<u8>(), out.len()) };
    // SAFETY: FltMgr's out variable.
    unsafe { returned.write(out.len() as u32) };
    STATUS_SUCCESS
}

/// A driver with cloudflt's port that fetches each file placeholder once (see above).
unsafe fn fetch_driver(driver: *mut DRIVER_OBJECT, _: *const UNICODE_STRING) -> NTSTATUS {
    SEEN.lock().unwrap_or_else(PoisonError::into_inner).clear();
    let mut filter: PFLT_FILTER = 0;
    // SAFETY: a static registration and a live driver object.
    let status = unsafe { FltRegisterFilter(driver, &FETCH_REGISTRATION.0, &mut filter) };
    assert_eq!(status, STATUS_SUCCESS);
    FETCH_FILTER.store(filter, Ordering::SeqCst);
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
            Some(fetch_connect),
            Some(fetch_disconnect),
            Some(fetch_message),
            4,
        )
    };
    assert_eq!(status, STATUS_SUCCESS);
    FltFreeSecurityDescriptor(sd);
    FETCH_SERVER.store(server, Ordering::SeqCst);
    // SAFETY: the filter registered above.
    unsafe { FltStartFiltering(filter) }
}

/// One provider with one 300,000-byte file, `behaviour`, and the steps that connect it
/// and have the test driver fetch the file.
fn fetching(behaviour: &str, more: &str) -> String {
    format!(
        r#"
[[provider]]
name = "mirror"
image = 'C:\Program Files\Mirror\mirror.exe'
sync_root = 'C:\Users\u\Cloud'
behaviour = "{behaviour}"
files = [{{ path = "docs/a.bin", size = 300000, seed = 5 }}]

[[step]]
do = "load_driver"

[[step]]
do = "connect"
provider = "mirror"

[[step]]
do = "create_placeholders"
provider = "mirror"
{more}"#
    )
}

fn transfers() -> Vec<(u32, u64, usize, bool)> {
    seen()
        .into_iter()
        .filter_map(|s| match s {
            Seen::Transfer {
                pid,
                offset,
                length,
                last,
                ..
            } => Some((pid, offset, length, last)),
            _ => None,
        })
        .collect()
}

#[test]
fn a_normal_provider_answers_with_the_remote_content_in_aligned_pieces() {
    let _serial = serial();
    let text = fetching(
        "normal",
        r#"
[[step]]
do = "provider_stats"
provider = "mirror"
delay_ms = 300
expect = { fetches = 1, bytes_served = 300000, cancels = 0 }
"#,
    );
    let (summary, out) = run_with("normal", &text, fetch_driver, Mode::Normal);
    assert_eq!(summary.failed, 0, "{out}");
    let t = transfers();
    let pid = t[0].0;
    let pieces: Vec<(u64, usize, bool)> = t.iter().map(|(_, o, l, last)| (*o, *l, *last)).collect();
    assert_eq!(
        pieces,
        [
            (0, 65536, false),
            (65536, 65536, false),
            (131072, 65536, false),
            (196608, 65536, false),
            (262144, 37856, true)
        ]
    );
    assert!(t.iter().all(|(p, ..)| *p == pid));
    assert!(seen().contains(&Seen::Connected { pid }));
    let data: Vec<u8> = seen()
        .into_iter()
        .flat_map(|s| match s {
            Seen::Transfer { data, .. } => data,
            _ => Vec::new(),
        })
        .collect();
    assert!(
        data == scenario::seeded(5, 300000),
        "not the remote content"
    );
}

#[test]
fn a_failing_provider_answers_with_its_status() {
    let _serial = serial();
    let text = fetching(
        "fail:STATUS_CLOUD_FILE_NETWORK_UNAVAILABLE",
        r#"
[[step]]
do = "provider_stats"
provider = "mirror"
delay_ms = 300
expect = { fetches = 1, bytes_served = 0 }
"#,
    );
    let (summary, out) = run_with("fail", &text, fetch_driver, Mode::Normal);
    assert_eq!(summary.failed, 0, "{out}");
    let failed: Vec<NTSTATUS> = seen()
        .into_iter()
        .filter_map(|s| match s {
            Seen::Failed { status, .. } => Some(status),
            _ => None,
        })
        .collect();
    assert_eq!(failed, [STATUS_CLOUD_FILE_NETWORK_UNAVAILABLE]);
    assert!(transfers().is_empty());
}

#[test]
fn a_slow_provider_answers_after_its_delay() {
    let _serial = serial();
    let text = fetching(
        "delay:600",
        r#"
[[step]]
do = "provider_stats"
provider = "mirror"
delay_ms = 200
expect = { fetches = 1, bytes_served = 0 }

[[step]]
do = "provider_stats"
provider = "mirror"
delay_ms = 1000
expect = { fetches = 1, bytes_served = 300000 }
"#,
    );
    let (summary, out) = run_with("delay", &text, fetch_driver, Mode::Normal);
    assert_eq!(summary.failed, 0, "{out}");
}

#[test]
fn a_crashing_provider_serves_whole_pages_up_to_its_budget_then_dies_and_reconnects_as_a_new_process()
 {
    let _serial = serial();
    let text = fetching(
        "crash_after:100000",
        r#"
[[step]]
do = "provider_stats"
provider = "mirror"
delay_ms = 300
expect = { fetches = 1, bytes_served = 98304 }

# Dead: it acts no more.
[[step]]
do = "list"
as = "mirror"
path = 'C:\Users\u\Cloud'

[[step]]
do = "kill"
provider = "mirror"

[[step]]
do = "connect"
provider = "mirror"

# The new process acts.
[[step]]
do = "create_file"
as = "mirror"
path = 'C:\Users\u\Cloud\new.txt'
text = "written by the new process"
"#,
    );
    let (summary, out) = run_with("crash", &text, fetch_driver, Mode::Normal);
    assert_eq!(
        summary,
        Summary {
            passed: 6,
            failed: 2
        },
        "{out}"
    );
    assert!(
        out.contains("FAIL [5] list: invalid step: provider \"mirror\"'s process is dead"),
        "{out}"
    );
    assert!(
        out.contains("FAIL [6] kill: invalid step: provider \"mirror\"'s process is already dead"),
        "{out}"
    );
    let t = transfers();
    assert_eq!(
        t.iter()
            .map(|(_, o, l, last)| (*o, *l, *last))
            .collect::<Vec<_>>(),
        [(0, 65536, false), (65536, 32768, false)]
    );
    // Nothing after the crash: no failure for the fetch it held, no more data.
    let s = seen();
    let first = t[0].0;
    let Some(Seen::Connected { pid: second }) =
        s.iter().rfind(|x| matches!(x, Seen::Connected { .. }))
    else {
        panic!("{s:?}");
    };
    assert_ne!(first, *second);
    assert!(!s.iter().any(|x| matches!(x, Seen::Failed { .. })), "{s:?}");
    assert_eq!(
        s.iter().filter(|x| matches!(x, Seen::Disconnected)).count(),
        2,
        "the crash, then the new process's exit: {s:?}"
    );
}

#[test]
fn a_hanging_provider_never_answers_not_even_when_killed() {
    let _serial = serial();
    let text = fetching(
        "hang",
        r#"
[[step]]
do = "provider_stats"
provider = "mirror"
delay_ms = 300
expect = { fetches = 1, bytes_served = 0 }

[[step]]
do = "kill"
provider = "mirror"

[[step]]
do = "provider_stats"
provider = "mirror"
expect = { fetches = 1, bytes_served = 0 }
"#,
    );
    let (summary, out) = run_with("hang", &text, fetch_driver, Mode::Normal);
    assert_eq!(summary.failed, 0, "{out}");
    let s = seen();
    assert!(
        !s.iter()
            .any(|x| matches!(x, Seen::Failed { .. } | Seen::Transfer { .. })),
        "{s:?}"
    );
}

#[test]
fn provider_operations_are_skipped_without_the_driver_in_differential_mode() {
    let _serial = serial();
    let text = fetching(
        "normal",
        r#"
[[step]]
do = "provider_stats"
provider = "mirror"
delay_ms = 300
expect = { fetches = 1 }

[[step]]
do = "disconnect"
provider = "mirror"
"#,
    );
    // Differential mode loads the driver before the first step itself.
    let text = text.replacen("[[step]]\ndo = \"load_driver\"\n\n", "", 1);
    let (summary, out) = run_with("differential", &text, fetch_driver, Mode::Differential);
    assert_eq!(summary.failed, 0, "{out}");
}

#[test]
fn a_misspelt_field_is_an_error_not_ignored() {
    let (summary, out) = run("typo", "[[step]]\ndo = \"wait\"\nmillis = 5\n");
    assert_eq!(summary.failed, 1);
    assert!(
        out.contains("not a v1 scenario") && out.contains("millis"),
        "{out}"
    );
}

#[test]
fn unknown_operations_processes_and_statuses_are_reported() {
    let (summary, out) = run(
        "unknown",
        r#"
[[step]]
do = "teleport"

[[step]]
do = "wait"
ms = 1
as = "nobody"

[[step]]
do = "wait"
ms = 1
expect = { status = "STATUS_NO_SUCH_THING" }
"#,
    );
    assert_eq!(
        summary,
        Summary {
            passed: 0,
            failed: 3
        },
        "{out}"
    );
    assert!(out.contains("unknown operation `teleport`"), "{out}");
    assert!(out.contains("names no process or provider"), "{out}");
    assert!(
        out.contains("STATUS_NO_SUCH_THING is not an NTSTATUS name"),
        "{out}"
    );
}

#[test]
fn expectations_an_operation_cannot_produce_fail() {
    let (summary, out) = run(
        "inapplicable",
        "[[step]]\ndo = \"wait\"\nms = 1\nexpect = { fetches = 1 }\n",
    );
    assert_eq!(summary.failed, 1, "{out}");
    assert!(out.contains("cannot check fetches"), "{out}");
}

#[test]
fn a_wrong_status_expectation_fails_and_a_right_one_passes() {
    let (summary, out) = run(
        "status",
        "[[step]]\ndo = \"wait\"\nms = 1\nexpect = { failed = true }\n\n[[step]]\ndo = \"wait\"\nms = 1\n",
    );
    assert_eq!(
        summary,
        Summary {
            passed: 1,
            failed: 1
        },
        "{out}"
    );
    assert!(
        out.contains("expected a failure, got STATUS_SUCCESS"),
        "{out}"
    );
}

/// A scenario with one ordinary file, for the tests below.
const ONE_FILE: &str = r#"
[[process]]
name = "app"
image = 'C:\Tools\app.exe'

[[step]]
do = "create_file"
as = "app"
path = 'C:\d\a.txt'
text = "hello"
"#;

#[test]
fn wrong_expectations_fail_with_a_line_that_says_what_differed() {
    let text = format!(
        "{ONE_FILE}{}",
        r#"
[[step]]
do = "read"
as = "app"
path = 'C:\d\a.txt'
offset = 0
length = 10
expect = { data = "text:goodbye" }

[[step]]
do = "query"
as = "app"
path = 'C:\d\a.txt'
class = "FileStandardInformation"
expect = { size = 4 }

[[step]]
do = "query"
as = "app"
path = 'C:\d\a.txt'
class = "FileBasicInformation"
expect = { size = 5 }

[[step]]
do = "list"
as = "app"
path = 'C:\d'
expect = { count = 2, entries = [{ name = "a.txt", attributes_include = ["REPARSE_POINT"] }] }

[[step]]
do = "list"
as = "app"
path = 'C:\d'
class = "FileDirectoryInformation"
expect = { entries = [{ name = "a.txt", ea_size = 0 }] }

[[step]]
do = "state"
path = 'C:\d\a.txt'
expect = { placeholder = true, hydrated = "none" }

[[step]]
do = "read"
as = "app"
path = 'C:\d\a.txt'
offset = 0
length = 10
expect = { data = "text:hello", bytes = 5 }
"#
    );
    let (summary, out) = run("wrong", &text);
    assert_eq!(
        summary,
        Summary {
            passed: 2,
            failed: 6
        },
        "{out}"
    );
    assert!(out.contains("  ok   [1] create_file"), "{out}");
    assert!(
        out.contains("FAIL [2] read: expected data text:goodbye: 7 bytes"),
        "{out}"
    );
    assert!(
        out.contains("FAIL [3] query: expected size 4, got 5"),
        "{out}"
    );
    assert!(
        out.contains("FAIL [4] query: FileBasicInformation carries no end of file"),
        "{out}"
    );
    assert!(
        out.contains("expected 2 entries, got 1")
            && out.contains("entry \"a.txt\": expected REPARSE_POINT set"),
        "{out}"
    );
    assert!(
        out.contains("FAIL [6] list: entry \"a.txt\": FileDirectoryInformation has no EaSize"),
        "{out}"
    );
    assert!(
        out.contains("expected placeholder = true") && out.contains("expected hydrated none"),
        "{out}"
    );
    assert!(out.contains("  ok   [8] read"), "{out}");
}

#[test]
fn the_machine_has_its_system_root_sync_roots_and_remote_content() {
    let (summary, out) = run(
        "machine",
        r#"
[[process]]
name = "app"
image = 'C:\Tools\app.exe'

[[provider]]
name = "mirror"
image = 'C:\Program Files\Mirror\mirror.exe'
sync_root = 'C:\Users\u\Cloud'
files = [{ path = "docs/a.bin", size = 10000, seed = 3 }, { path = "b.txt", text = "remote b" }]

[[step]]
do = "list"
as = "app"
path = 'C:\'
expect = { entries = [{ name = "Windows", attributes_include = ["DIRECTORY"] }, { name = "Users" }] }

[[step]]
do = "create_file"
as = "mirror"
path = 'C:\Users\u\Cloud\docs\a.bin'
size = 10000
seed = 3

[[step]]
do = "read"
as = "app"
path = 'C:\Users\u\Cloud\docs\a.bin'
offset = 4000
length = 8000
expect = { data = "remote", bytes = 6000 }

[[step]]
do = "create_file"
as = "mirror"
path = 'C:\Users\u\Cloud\b.txt'
text = "remote c"

[[step]]
do = "read"
as = "app"
path = 'C:\Users\u\Cloud\b.txt'
offset = 0
length = 100
expect = { data = "remote" }
"#,
    );
    assert_eq!(
        summary,
        Summary {
            passed: 4,
            failed: 1
        },
        "{out}"
    );
    assert!(
        out.contains("FAIL [5] read: expected data remote: 8 bytes 72656d6f74652062"),
        "{out}"
    );
}

#[test]
fn parallel_steps_each_report_and_handles_are_per_scenario() {
    let text = format!(
        "{ONE_FILE}{}",
        r#"
[[step]]
do = "open"
as = "app"
path = 'C:\d\a.txt'
handle = "h"

[[step]]
do = "parallel"
steps = [
  { do = "read", handle = "h", offset = 0, length = 5, expect = { data = "text:hello" } },
  { do = "read", as = "app", path = 'C:\d\a.txt', offset = 0, length = 5, io = "mapped", expect = { data = "text:hellO" } },
  { do = "sequence", steps = [
    { do = "wait", ms = 1 },
    { do = "query", as = "app", path = 'C:\d\a.txt', class = "FileStatInformation", expect = { size = 5, reparse_tag = 0 } },
  ] },
]

[[step]]
do = "close"
handle = "h"

[[step]]
do = "close"
handle = "h"
"#
    );
    let (summary, out) = run("parallel", &text);
    assert_eq!(
        summary,
        Summary {
            passed: 6,
            failed: 2
        },
        "{out}"
    );
    assert!(out.contains("  ok   [3.1] read"), "{out}");
    assert!(
        out.contains("FAIL [3.2] read: expected data text:hellO"),
        "{out}"
    );
    assert!(out.contains("  ok   [3.3.2] query"), "{out}");
    assert!(
        out.contains("FAIL [5] close: invalid step: no handle named \"h\" is open"),
        "{out}"
    );
}

#[test]
fn windows_has_no_delete_reparse_ex_and_an_ordinary_file_is_not_in_sync() {
    let text = format!(
        "{ONE_FILE}{}",
        r#"
[[step]]
do = "delete_reparse"
as = "app"
path = 'C:\d\a.txt'
tag = 0x1234
ex = true

[[step]]
do = "state"
path = 'C:\d\a.txt'
expect = { in_sync = true }
"#
    );
    let (summary, out) = run("no-ex", &text);
    assert_eq!(summary.failed, 2, "{out}");
    assert!(
        out.contains(
            "FAIL [2] delete_reparse: unsupported: Windows has no FSCTL_DELETE_REPARSE_POINT_EX"
        ),
        "{out}"
    );
    assert!(
        out.contains("FAIL [3] state: expected in_sync = true, got false (not a placeholder)"),
        "{out}"
    );
}

/// The filter handle of [`marker_driver`], for its unload.
static MARKER_FILTER: AtomicIsize = AtomicIsize::new(0);

/// FLT_REGISTRATION holds raw pointers; this one points at nothing but a function.
struct Registration(FLT_REGISTRATION);
// SAFETY: immutable, read by the model's FltRegisterFilter only.
unsafe impl Sync for Registration {}

static MARKER_REGISTRATION: Registration = Registration(FLT_REGISTRATION {
    Size: std::mem::size_of::<FLT_REGISTRATION>() as u16,
    Version: FLT_REGISTRATION_VERSION as u16,
    Flags: 0,
    ContextRegistration: std::ptr::null(),
    OperationRegistration: std::ptr::null(),
    FilterUnloadCallback: Some(marker_unload),
    InstanceSetupCallback: None,
    InstanceQueryTeardownCallback: None,
    InstanceTeardownStartCallback: None,
    InstanceTeardownCompleteCallback: None,
    GenerateFileNameCallback: None,
    NormalizeNameComponentCallback: None,
    NormalizeContextCleanupCallback: None,
    TransactionNotificationCallback: None,
    NormalizeNameComponentExCallback: None,
    SectionNotificationCallback: None,
});

unsafe extern "system" fn marker_unload(_flags: u32) -> NTSTATUS {
    // SAFETY: the filter registered by marker_driver, unregistered once.
    unsafe { FltUnregisterFilter(MARKER_FILTER.load(Ordering::SeqCst)) };
    STATUS_SUCCESS
}

/// A driver whose loading changes what applications see: its DriverEntry leaves a file
/// on C:, as a badly behaved filter might.
unsafe fn marker_driver(driver: *mut DRIVER_OBJECT, _: *const UNICODE_STRING) -> NTSTATUS {
    let mut filter: PFLT_FILTER = 0;
    // SAFETY: a static registration and a live driver object.
    let status = unsafe { FltRegisterFilter(driver, &MARKER_REGISTRATION.0, &mut filter) };
    if status < 0 {
        return status;
    }
    MARKER_FILTER.store(filter, Ordering::SeqCst);
    if let Ok(h) = files::create("C:\\marker.txt", &OpenParams::read_write(2)) {
        files::close(h);
    }
    STATUS_SUCCESS
}

#[test]
fn differential_mode_catches_a_driver_that_changes_what_applications_see() {
    let scenario = r#"
[[process]]
name = "app"
image = 'C:\Tools\app.exe'

[[step]]
do = "create_file"
as = "app"
path = 'C:\d\a.txt'
text = "same either way"

[[step]]
do = "query"
as = "app"
path = 'C:\marker.txt'
class = "FileBasicInformation"
expect = { status = "STATUS_OBJECT_NAME_NOT_FOUND" }

[[step]]
do = "list"
as = "app"
path = 'C:\'
pattern = "*.txt"
expect = { failed = true }

[[step]]
do = "read"
as = "app"
path = 'C:\d\a.txt'
offset = 0
length = 4
expect = { data = "text:same" }
"#;
    // Run as written (the driver never loaded), every step holds.
    let (summary, out) = run_with("marker-plain", scenario, marker_driver, Mode::Normal);
    assert_eq!(summary.failed, 0, "{out}");
    let (summary, out) = run_with("marker", scenario, marker_driver, Mode::Differential);
    assert_eq!(
        summary,
        Summary {
            passed: 2,
            failed: 2
        },
        "{out}"
    );
    assert!(
        out.contains(
            "FAIL [2] query: differs (without driver vs with driver): status \
             STATUS_OBJECT_NAME_NOT_FOUND vs STATUS_SUCCESS"
        ),
        "{out}"
    );
    assert!(
        out.contains("with driver: expected STATUS_OBJECT_NAME_NOT_FOUND, got STATUS_SUCCESS"),
        "{out}"
    );
    assert!(
        out.contains("FAIL [3] list: differs") && out.contains("marker.txt"),
        "{out}"
    );
    assert!(out.contains("  ok   [4] read"), "{out}");
}

#[test]
fn differential_mode_skips_load_and_unload_without_the_driver() {
    let (summary, out) = run_with(
        "lifecycle",
        "[[step]]\ndo = \"unload_driver\"\n\n[[step]]\ndo = \"load_driver\"\n",
        marker_driver,
        Mode::Differential,
    );
    assert_eq!(
        summary,
        Summary {
            passed: 2,
            failed: 0
        },
        "{out}"
    );
}

#[test]
fn fields_of_the_visibility_additions_are_invalid_on_other_operations() {
    let (summary, out) = run(
        "misplaced",
        &format!(
            r#"{ONE_FILE}
[[step]]
do = "list"
as = "app"
path = 'C:\d'
buffer = 64

[[step]]
do = "state"
path = 'C:\d\a.txt'
thread_compat = "expose"

[[step]]
do = "query"
as = "app"
path = 'C:\d\a.txt'
class = "FileBasicInformation"
mode = "disguise"

[[step]]
do = "read"
as = "app"
path = 'C:\d\a.txt'
offset = 0
length = 5
options = ["open_reparse_point"]

[[step]]
do = "set_compat"
as = "app"
image = 'C:\Tools\app.exe'
mode = "expose"

[[step]]
do = "set_compat"
as = "app"

[[step]]
do = "query"
as = "app"
path = 'C:\d\a.txt'
class = "FileBasicInformation"
options = ["directory"]
"#
        ),
    );
    assert_eq!(
        summary,
        Summary {
            passed: 1,
            failed: 7
        },
        "{out}"
    );
    for line in [
        "FAIL [2] list: invalid step: `list` takes no buffer",
        "FAIL [3] state: invalid step: `state` takes no thread_compat",
        "FAIL [4] query: invalid step: `query` takes no mode",
        "FAIL [5] read: invalid step: `read` takes no options",
        "FAIL [6] set_compat: invalid step: `set_compat` takes no image",
        "FAIL [7] set_compat: invalid step: `set_compat` needs `mode`",
        "FAIL [8] query: invalid step: `query` takes option open_reparse_point, not \"directory\"",
    ] {
        assert!(out.contains(line), "{line}\n{out}");
    }
}

#[test]
fn a_short_file_all_buffer_overflows_and_what_fit_is_still_checked() {
    let (summary, out) = run(
        "short-buffer",
        &format!(
            r#"{ONE_FILE}
[[step]]
do = "query"
as = "app"
path = 'C:\d\a.txt'
class = "FileAllInformation"
buffer = 104
expect = {{ status = "STATUS_BUFFER_OVERFLOW", attributes_include = ["ARCHIVE"], attributes_exclude = ["REPARSE_POINT"], size = 5 }}

[[step]]
do = "query"
as = "app"
path = 'C:\d\a.txt'
class = "FileAllInformation"
buffer = 104
expect = {{ status = "STATUS_BUFFER_OVERFLOW", attributes_include = ["REPARSE_POINT"], size = 6 }}

[[step]]
do = "query"
as = "app"
path = 'C:\d\a.txt'
class = "FileAllInformation"
buffer = 104

[[step]]
do = "query"
as = "app"
path = 'C:\d\a.txt'
class = "FileAllInformation"
buffer = 103
expect = {{ status = "STATUS_INFO_LENGTH_MISMATCH" }}

[[step]]
do = "query"
as = "app"
path = 'C:\d\a.txt'
class = "FileAllInformation"
buffer = 103
expect = {{ status = "STATUS_INFO_LENGTH_MISMATCH", size = 5 }}

[[step]]
do = "query"
as = "app"
path = 'C:\d\a.txt'
class = "FileAllInformation"
expect = {{ attributes_include = ["ARCHIVE"], size = 5 }}
"#
        ),
    );
    assert_eq!(
        summary,
        Summary {
            passed: 4,
            failed: 3
        },
        "{out}"
    );
    assert!(out.contains("  ok   [2] query"), "{out}");
    assert!(
        out.contains(
            "FAIL [3] query: expected REPARSE_POINT set, attributes are ARCHIVE; expected size 6, got 5"
        ),
        "{out}"
    );
    assert!(
        out.contains("FAIL [4] query: expected STATUS_SUCCESS, got STATUS_BUFFER_OVERFLOW"),
        "{out}"
    );
    assert!(
        out.contains("FAIL [6] query: cannot check the answer: the operation failed"),
        "{out}"
    );
    assert!(out.contains("  ok   [7] query"), "{out}");
}

#[test]
fn image_rule_steps_say_what_they_lack_and_need_the_driver() {
    let (summary, out) = run(
        "image-rule",
        r#"
[[process]]
name = "app"
image = 'C:\Tools\app.exe'

[[step]]
do = "image_rule"
image = 'C:\Tools\app.exe'

[[step]]
do = "image_rule"
image = 'C:\Tools\app.exe'
visibility = "expose"
remove = true

[[step]]
do = "image_rule"
image = 'C:\Tools\app.exe'
visibility = "show"

[[step]]
do = "image_rule"
visibility = "expose"

# No driver, no port: FilterConnectCommunicationPort finds nothing.
[[step]]
do = "image_rule"
image = 'C:\Tools\app.exe'
visibility = "expose"
expect = { status = "STATUS_OBJECT_NAME_NOT_FOUND" }

[[step]]
do = "image_rule"
as = "app"
image = 'app.exe'
remove = true
expect = { status = "STATUS_OBJECT_NAME_NOT_FOUND" }
"#,
    );
    assert_eq!(
        summary,
        Summary {
            passed: 2,
            failed: 4
        },
        "{out}"
    );
    for line in [
        "FAIL [1] image_rule: invalid step: `image_rule` needs `visibility`, or `remove = true`",
        "FAIL [2] image_rule: invalid step: `remove = true` takes no `visibility`",
        "FAIL [3] image_rule: invalid step: visibility \"show\" is not expose or disguise",
        "FAIL [4] image_rule: invalid step: `image_rule` needs `image`",
        "  ok   [5] image_rule",
        "  ok   [6] image_rule",
    ] {
        assert!(out.contains(line), "{line}\n{out}");
    }
}

/// The line of step `label` in the runner's output.
fn line<'a>(out: &'a str, label: &str) -> &'a str {
    let tag = format!("[{label}]");
    out.lines()
        .find(|l| l.contains(&tag))
        .unwrap_or_else(|| panic!("no line for step {label}:\n{out}"))
}

#[test]
fn every_addition_of_the_format_is_parsed_and_runs() {
    let (summary, out) = run(
        "pending",
        r#"
[[process]]
name = "app"
image = 'C:\Tools\app.exe'

[[provider]]
name = "mirror"
image = 'C:\Program Files\Mirror\mirror.exe'
sync_root = 'C:\Cloud'
notify = ["delete", "rename", "open"]
in_sync_policy = ["track_file_last_write_time"]
files = [{ path = "photos", dir = true }, { path = "a.bin", text = "remote" }]

[[step]]
do = "update"
provider = "mirror"
path = 'C:\Cloud\a.bin'
if_unchanged = true

[[step]]
do = "set_in_sync"
as = "app"
path = 'C:\Cloud\a.bin'
in_sync = true

[[step]]
do = "register"
provider = "mirror"
flags = ["update"]

[[step]]
do = "link"
as = "app"
path = 'C:\Cloud\a.bin'
to = 'C:\Cloud\b.bin'

[[step]]
do = "remote_delete"
provider = "mirror"
path = "a.bin"

[[step]]
do = "rename"
as = "app"
path = 'C:\Cloud\a.bin'
to = 'C:\Cloud\c.bin'
replace = true

[[step]]
do = "create_placeholders"
provider = "mirror"
populate = false

[[step]]
do = "dehydrate"
as = "app"
path = 'C:\Cloud\a.bin'

[[step]]
do = "state"
path = 'C:\Cloud'
expect = { populated = true, registered = true }

[[step]]
do = "state"
path = 'C:\Cloud'
expect = { modified = "none" }

[[step]]
do = "provider_stats"
provider = "mirror"
expect = { populations = 0, deletes = 0, fetches = 0 }
"#,
    );
    // Only `remote_delete` and `provider_stats` pass: they need no driver (the
    // provider saw nothing).
    assert_eq!(summary.passed, 2, "{out}");
    // Issue 15's additions run now: nothing of the format is pending.
    assert!(scenario::pending::PENDING.is_empty());
    assert!(!out.contains("unsupported"), "{out}");
    // Issue 12's `update` and `modified`, and issue 13's `register`, run now (and fail
    // here for what they find: no driver is loaded).
    assert!(
        out.lines()
            .any(|l| l.contains("[3] register") && !l.contains("unsupported")),
        "`register` should run:\n{out}"
    );
    assert!(
        !out.lines().any(|l| l.contains("expectation `registered`")),
        "`registered` is checked now:\n{out}"
    );
    // Issue 13's `set_in_sync` and `dehydrate` with `as`, issue 14's `link` and issue
    // 15's `populate = false`, `populated` and `populations`, run too.
    for label in ["1", "2", "4", "5", "6", "7", "8", "9", "10", "11"] {
        assert!(
            out.lines()
                .any(|l| l.contains(&format!("[{label}]")) && !l.contains("unsupported")),
            "step {label} should run:\n{out}"
        );
    }
}

#[test]
fn pending_fields_at_their_defaults_ask_for_nothing_and_misplaced_ones_are_invalid() {
    let (summary, out) = run(
        "defaults",
        r#"
[[process]]
name = "app"
image = 'C:\Tools\app.exe'

[[provider]]
name = "mirror"
image = 'C:\Program Files\Mirror\mirror.exe'
sync_root = 'C:\Cloud'
elevated = true
hard_links = "default"
on_delete = "allow"
modifiers = []

[[step]]
do = "create_file"
as = "app"
path = 'C:\Data\f.txt'
text = "x"

[[step]]
do = "read"
as = "app"
path = 'C:\Data\f.txt'
offset = 0
length = 1
replace = true

[[step]]
do = "write"
as = "app"
path = 'C:\Data\f.txt'
offset = 0
text = "y"
in_sync = true
"#,
    );
    assert_eq!(
        summary,
        Summary {
            passed: 1,
            failed: 2
        },
        "{out}"
    );
    assert!(!out.contains("[machine]"), "{out}");
    assert!(line(&out, "2").contains("`read` takes no replace"), "{out}");
    assert!(
        line(&out, "3").contains("`write` takes no in_sync"),
        "{out}"
    );
}

#[test]
fn set_size_overwrite_and_seeded_writes_show_in_state_size() {
    let (summary, out) = run(
        "sizes",
        r#"
[[process]]
name = "app"
image = 'C:\Tools\app.exe'

[[step]]
do = "create_file"
as = "app"
path = 'C:\Data\f.bin'
size = 8192
seed = 1

[[step]]
do = "set_size"
as = "app"
path = 'C:\Data\f.bin'
size = 100

[[step]]
do = "state"
path = 'C:\Data\f.bin'
expect = { size = 100 }

[[step]]
do = "state"
path = 'C:\Data\f.bin'
expect = { size = 8192 }

[[step]]
do = "write"
as = "app"
path = 'C:\Data\f.bin'
offset = 4096
size = 10
seed = 1
expect = { bytes = 10 }

[[step]]
do = "read"
as = "app"
path = 'C:\Data\f.bin'
offset = 4096
length = 10
expect = { data = "seed:1" }

[[step]]
do = "read"
as = "app"
path = 'C:\Data\f.bin'
offset = 100
length = 3996
expect = { data = "zeros" }

[[step]]
do = "overwrite"
as = "app"
path = 'C:\Data\f.bin'
text = "new"

[[step]]
do = "state"
path = 'C:\Data\f.bin'
expect = { size = 3 }

[[step]]
do = "write"
as = "app"
path = 'C:\Data\f.bin'
offset = 0
size = 10

[[step]]
do = "write"
as = "app"
path = 'C:\Data\f.bin'
offset = 0
text = "a"
io = "paging"
"#,
    );
    assert_eq!(
        summary,
        Summary {
            passed: 8,
            failed: 3
        },
        "{out}"
    );
    assert!(
        line(&out, "4").contains("expected size 8192, NTFS holds end of file 100"),
        "{out}"
    );
    assert!(
        line(&out, "10").contains("with `size` needs `seed`"),
        "{out}"
    );
    assert!(
        line(&out, "11").contains("io = cached, noncached or mapped"),
        "{out}"
    );
}

#[test]
fn remote_write_changes_the_cloud_copy_only() {
    let (summary, out) = run(
        "remote-write",
        r#"
[[process]]
name = "app"
image = 'C:\Tools\app.exe'

[[provider]]
name = "mirror"
image = 'C:\Program Files\Mirror\mirror.exe'
sync_root = 'C:\Cloud'
files = [{ path = "a.txt", text = "old" }]

[[step]]
do = "create_file"
as = "app"
path = 'C:\Cloud\a.txt'
text = "new"

[[step]]
do = "read"
as = "app"
path = 'C:\Cloud\a.txt'
offset = 0
length = 3
expect = { data = "remote" }

[[step]]
do = "remote_write"
provider = "mirror"
path = 'C:\Cloud\a.txt'
text = "new"

[[step]]
do = "read"
as = "app"
path = 'C:\Cloud\a.txt'
offset = 0
length = 3
expect = { data = "remote" }

[[step]]
do = "remote_write"
provider = "mirror"
path = "sub/b.txt"
size = 10
seed = 5

[[step]]
do = "state"
path = 'C:\Cloud\sub\b.txt'
expect = { status = "STATUS_OBJECT_NAME_NOT_FOUND" }

[[step]]
do = "remote_write"
provider = "mirror"
path = 'C:\Elsewhere\c.txt'
text = "x"
"#,
    );
    assert_eq!(
        summary,
        Summary {
            passed: 5,
            failed: 2
        },
        "{out}"
    );
    assert!(
        line(&out, "2").contains("FAIL"),
        "the old cloud copy differs:\n{out}"
    );
    assert!(line(&out, "7").contains("is not under provider"), "{out}");
}

#[test]
fn reboot_ends_every_process_and_keeps_the_disk() {
    let (summary, out) = run(
        "reboot",
        r#"
[[process]]
name = "app"
image = 'C:\Tools\app.exe'

[[provider]]
name = "mirror"
image = 'C:\Program Files\Mirror\mirror.exe'
sync_root = 'C:\Cloud'

[[step]]
do = "create_file"
as = "app"
path = 'C:\Data\f.txt'
text = "kept"

[[step]]
do = "open"
as = "app"
path = 'C:\Data\f.txt'
handle = "h"
options = ["write"]

[[step]]
do = "write"
handle = "h"
offset = 4
text = " too"

[[step]]
do = "reboot"

# the handle went with its process
[[step]]
do = "close"
handle = "h"

# the provider's process too: a step as it is refused until `connect` starts a new one
[[step]]
do = "create_file"
as = "mirror"
path = 'C:\Cloud\x.txt'
text = "x"

[[step]]
do = "read"
as = "app"
path = 'C:\Data\f.txt'
offset = 0
length = 8
expect = { data = "text:kept too" }

[[step]]
do = "provider_stats"
provider = "mirror"
expect = { fetches = 0 }

[[step]]
do = "reboot"
as = "app"
"#,
    );
    assert_eq!(
        summary,
        Summary {
            passed: 6,
            failed: 3
        },
        "{out}"
    );
    assert!(line(&out, "4").contains("ok"), "{out}");
    assert!(line(&out, "5").contains("no handle named \"h\""), "{out}");
    assert!(line(&out, "6").contains("process is dead"), "{out}");
    assert!(line(&out, "9").contains("`reboot` takes no as"), "{out}");
}
