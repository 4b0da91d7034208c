//! The real driver's MessageNotify and a reply buffer that goes bad mid-call: another
//! thread of the provider frees, decommits or write-protects it while the driver is
//! serving the request (the model runs that thread at a chosen point of the call).
//!
//! On Windows an unguarded kernel-mode store into such a buffer is a bug check; the
//! driver must secure the buffer before it writes, refuse one it cannot secure with
//! STATUS_INVALID_USER_BUFFER, carry out nothing for a request it cannot answer, write
//! the reply only under the exception guard (a secured page can still fail to page in),
//! and go on serving. The model reports any write into user memory that was not
//! writable. (The request's input going bad: `transfer_buffer.rs`.)

use std::ffi::c_void;
use std::sync::mpsc;

use cloudflt::admin::{ImageRules, Visibility};
use cloudflt_proto::msg::{BasicInfo, CreatePlaceholder, REPLY_HEADER_SIZE, Reply, SetImageRule};
use cloudflt_proto::placeholder::PlaceholderFlags;
use cloudflt_proto::port::PORT_NAME;
use cloudflt_proto::rules::RuleVisibility;
use cloudflt_proto::{
    ConnectionContext, HydrationPolicy, PopulationPolicy, PortContext, Utf16, connect,
};
use cloudflt_tests::model::files::{self, OpenParams};
use cloudflt_tests::model::fltlib::{FilterSendMessage, GetLastError, hresult_from_win32};
use cloudflt_tests::model::process;
use cloudflt_tests::model::vm::{MidCall, PAGE_SIZE, VirtualAlloc, VirtualFree, VirtualProtect};
use cloudflt_tests::model::{ClientId, Machine, VolumeConfig};
use windows_sys::Win32::Foundation::{
    ERROR_INSUFFICIENT_BUFFER, ERROR_INVALID_PARAMETER, ERROR_INVALID_USER_BUFFER, ERROR_SWAPERROR,
    STATUS_OBJECT_NAME_NOT_FOUND, STATUS_SUCCESS,
};
use windows_sys::Win32::System::Memory::{
    MEM_COMMIT, MEM_DECOMMIT, MEM_RELEASE, MEM_RESERVE, PAGE_NOACCESS, PAGE_READONLY,
    PAGE_READWRITE,
};
use windows_sys::core::HRESULT;

const VOLUME: &str = r"\Device\HarddiskVolume1";
const ADMIN_IMAGE: &str = r"\Device\HarddiskVolume1\Tools\rules.exe";
const PROVIDER_IMAGE: &str = r"\Device\HarddiskVolume1\Sync\provider.exe";

/// What FilterSendMessage returns for the driver's STATUS_INVALID_USER_BUFFER.
const INVALID_USER_BUFFER: HRESULT = hresult_from_win32(ERROR_INVALID_USER_BUFFER);

/// What a provider's other thread does to the reply buffer mid-call.
#[derive(Debug, Clone, Copy)]
enum Spoil {
    Free,
    Decommit,
    ReadOnly,
    NoAccess,
}

impl Spoil {
    const ALL: [Spoil; 4] = [
        Spoil::Free,
        Spoil::Decommit,
        Spoil::ReadOnly,
        Spoil::NoAccess,
    ];

    /// Does it to the page at `at` (in the calling provider thread); true if it took.
    fn apply(self, at: usize) -> bool {
        let protect = |protection| {
            let mut old = 0;
            // SAFETY: the model's kernel32; `old` is a valid out variable.
            unsafe { VirtualProtect(at as *const c_void, PAGE_SIZE, protection, &mut old) != 0 }
        };
        match self {
            Spoil::Free => VirtualFree(at as *mut c_void, 0, MEM_RELEASE) != 0,
            Spoil::Decommit => VirtualFree(at as *mut c_void, PAGE_SIZE, MEM_DECOMMIT) != 0,
            Spoil::ReadOnly => protect(PAGE_READONLY),
            Spoil::NoAccess => protect(PAGE_NOACCESS),
        }
    }
}

fn boot() -> Machine {
    let machine = Machine::boot(&[VolumeConfig::ntfs(1)]);
    machine.set_symbolic_link(r"\SystemRoot", r"\Device\HarddiskVolume1\Windows");
    assert_eq!(
        machine.load_driver(cloudflt_driver::nt::driver_entry),
        STATUS_SUCCESS
    );
    machine
}

/// A fresh committed read-write page of the calling process: the reply buffer.
fn page() -> usize {
    let p = VirtualAlloc(
        std::ptr::null(),
        PAGE_SIZE,
        MEM_RESERVE | MEM_COMMIT,
        PAGE_READWRITE,
    );
    assert!(!p.is_null(), "VirtualAlloc: {}", GetLastError());
    p as usize
}

/// FilterSendMessage(`message`) from process `pid` with `len` bytes at `out` for the
/// reply: the result and the length reported.
fn send(pid: u32, client: ClientId, message: &[u8], out: usize, len: usize) -> (HRESULT, u32) {
    let mut returned = 0u32;
    // SAFETY: the input is valid for the call; the output is a buffer of the model's
    // (whose pages stay host memory whatever the provider does to them).
    let hr = process::run_as(pid, || unsafe {
        FilterSendMessage(
            client.handle(),
            message.as_ptr().cast(),
            message.len() as u32,
            out as *mut c_void,
            len as u32,
            &mut returned,
        )
    });
    (hr, returned)
}

/// The reply at `out`, `len` bytes long: its status and request id.
fn reply_at(out: usize, len: u32) -> (i32, u64) {
    // SAFETY: a committed page of the provider's holding the reply the driver wrote.
    let bytes = unsafe { std::slice::from_raw_parts(out as *const u8, len as usize) };
    let reply = Reply::decode(bytes).expect("the driver's reply decodes");
    (reply.status, reply.request_id)
}

fn management_context() -> Vec<u8> {
    let mut out = vec![0u8; connect::HEADER_SIZE];
    assert_eq!(
        PortContext::Management.encode(&mut out),
        Ok(connect::HEADER_SIZE)
    );
    out
}

fn provider_context(root: &str) -> Vec<u8> {
    let name: Vec<u16> = "p".encode_utf16().collect();
    let root: Vec<u16> = root.encode_utf16().collect();
    let context = ConnectionContext {
        provider_name: Utf16::from_units(&name),
        provider_version: Utf16::EMPTY,
        sync_root: Utf16::from_units(&root),
        hydration: HydrationPolicy::Full,
        // This port-level provider answers fetches only: it asks for no population.
        population: PopulationPolicy::AlwaysFull,
        in_sync: cloudflt_proto::InSyncPolicy::NONE,
        timeout_ms: 0,
        provider_id: [0; 16],
        connect_flags: cloudflt_proto::connect::ConnectFlags::NONE,
        modifiers: cloudflt_proto::registration::HydrationModifiers::NONE,
        management: cloudflt_proto::registration::ManagementPolicy::DEFAULT,
        hard_links: cloudflt_proto::registration::HardLinkPolicy::NONE,
        notifications: cloudflt_proto::msg::NotifySet::NONE,
    };
    let mut out = vec![0u8; context.encoded_len()];
    assert_eq!(context.encode(&mut out), Ok(out.len()));
    out
}

fn set_rule(request_id: u64, pattern: &str) -> Vec<u8> {
    let units: Vec<u16> = pattern.encode_utf16().collect();
    let message = SetImageRule {
        request_id,
        visibility: RuleVisibility::Expose,
        pattern: Utf16::from_units(&units),
    };
    let mut out = vec![0u8; message.encoded_len()];
    assert_eq!(message.encode(&mut out), Ok(out.len()));
    out
}

fn create_placeholder(request_id: u64, path: &str) -> Vec<u8> {
    let units: Vec<u16> = path.encode_utf16().collect();
    let message = CreatePlaceholder {
        request_id,
        file_size: 5000,
        basic: BasicInfo::default(),
        flags: PlaceholderFlags::EMPTY,
        path: Utf16::from_units(&units),
        identity: b"id",
    };
    let mut out = vec![0u8; message.encoded_len()];
    assert_eq!(message.encode(&mut out), Ok(out.len()));
    out
}

/// The image rules, as a fresh management connection of `admin` lists them.
fn rules(admin: u32) -> Vec<String> {
    process::run_as(admin, || {
        let mut names: Vec<String> = ImageRules::connect()
            .unwrap()
            .list()
            .unwrap()
            .into_iter()
            .map(|(pattern, visibility)| {
                assert_eq!(visibility, Visibility::Expose);
                pattern
            })
            .collect();
        names.sort();
        names
    })
}

#[test]
fn a_reply_buffer_spoiled_mid_call_fails_the_request_undone_and_the_driver_serves_on() {
    let mut machine = boot();
    let admin = machine.spawn_process(ADMIN_IMAGE, 0, true);
    let client = machine
        .connect(PORT_NAME, &management_context(), admin)
        .unwrap();
    for (i, spoil) in Spoil::ALL.into_iter().enumerate() {
        let out = process::run_as(admin, page);
        let (tx, rx) = mpsc::channel();
        machine.mid_call(admin, MidCall::AfterInputCopy, move || {
            tx.send(spoil.apply(out)).unwrap();
        });
        let pattern = format!("spoiled{i}.exe");
        assert_eq!(
            send(admin, client, &set_rule(7, &pattern), out, PAGE_SIZE),
            (INVALID_USER_BUFFER, 0),
            "{spoil:?}: the provider gets the driver's STATUS_INVALID_USER_BUFFER"
        );
        assert!(rx.recv().unwrap(), "{spoil:?} took effect mid-call");
        assert!(
            !rules(admin).contains(&pattern),
            "{spoil:?}: a request whose answer cannot be delivered is not carried out"
        );
        machine.assert_clean();

        // The driver serves the next message, into a good buffer.
        let good = process::run_as(admin, page);
        let (hr, returned) = send(admin, client, &set_rule(8, &pattern), good, PAGE_SIZE);
        assert_eq!((hr, returned as usize), (0, REPLY_HEADER_SIZE), "{spoil:?}");
        assert_eq!(reply_at(good, returned), (STATUS_SUCCESS, 8));
        assert!(rules(admin).contains(&pattern), "{spoil:?}");
        assert_eq!(machine.secured_ranges(admin), 0, "unsecured after the call");
    }
    machine.disconnect(client);
    assert_eq!(machine.unload_driver(), STATUS_SUCCESS);
    machine.assert_clean();
}

#[test]
fn a_provider_whose_reply_buffer_is_freed_mid_call_creates_nothing_and_can_retry() {
    let mut machine = boot();
    let provider = machine.spawn_process(PROVIDER_IMAGE, 0, true);
    process::run_as(provider, || {
        let root = files::create(
            r"C:\Cloud",
            &OpenParams {
                options: 0x1 | 0x20,         // FILE_DIRECTORY_FILE | FILE_SYNCHRONOUS_IO_NONALERT
                ..OpenParams::read_write(2)  // FILE_CREATE
            },
        )
        .expect("the sync root directory");
        files::close(root);
    });
    let client = machine
        .connect(
            PORT_NAME,
            &provider_context(&format!(r"{VOLUME}\Cloud")),
            provider,
        )
        .unwrap();
    let exists = || {
        process::run_as(provider, || {
            match files::create(r"C:\Cloud\a.bin", &OpenParams::default()) {
                Ok(h) => {
                    files::close(h);
                    true
                }
                Err(status) => {
                    assert_eq!(status, STATUS_OBJECT_NAME_NOT_FOUND);
                    false
                }
            }
        })
    };

    let out = process::run_as(provider, page);
    machine.mid_call(provider, MidCall::AfterInputCopy, move || {
        assert!(Spoil::Free.apply(out));
    });
    let message = create_placeholder(1, "a.bin");
    assert_eq!(
        send(provider, client, &message, out, PAGE_SIZE),
        (INVALID_USER_BUFFER, 0)
    );
    assert_eq!(machine.mid_call_pending(), 0);
    assert!(!exists(), "no placeholder without a reply");
    machine.assert_clean();

    let out = process::run_as(provider, page);
    let (hr, returned) = send(
        provider,
        client,
        &create_placeholder(2, "a.bin"),
        out,
        PAGE_SIZE,
    );
    assert_eq!(hr, 0);
    assert_eq!(reply_at(out, returned), (STATUS_SUCCESS, 2));
    assert!(exists(), "the retry created it");

    machine.disconnect(client);
    assert_eq!(machine.unload_driver(), STATUS_SUCCESS);
    machine.assert_clean();
}

#[test]
fn while_the_driver_holds_the_reply_buffer_the_provider_cannot_free_or_protect_it() {
    let mut machine = boot();
    let admin = machine.spawn_process(ADMIN_IMAGE, 0, true);
    let client = machine
        .connect(PORT_NAME, &management_context(), admin)
        .unwrap();
    let out = process::run_as(admin, page);
    let (tx, rx) = mpsc::channel();
    machine.mid_call(admin, MidCall::AfterSecure, move || {
        let results: Vec<(bool, u32)> = Spoil::ALL
            .into_iter()
            .map(|spoil| (spoil.apply(out), GetLastError()))
            .collect();
        tx.send(results).unwrap();
    });
    let (hr, returned) = send(admin, client, &set_rule(3, "held.exe"), out, PAGE_SIZE);
    assert_eq!(hr, 0);
    assert_eq!(reply_at(out, returned), (STATUS_SUCCESS, 3));
    assert_eq!(
        rx.recv().unwrap(),
        vec![(false, ERROR_INVALID_PARAMETER); 4],
        "VirtualFree and VirtualProtect fail while the range is secured"
    );
    assert_eq!(rules(admin), ["held.exe"]);
    assert_eq!(machine.secured_ranges(admin), 0);
    // Once the call is over the buffer is the provider's again.
    assert!(process::run_as(admin, || Spoil::Free.apply(out)));
    machine.disconnect(client);
    assert_eq!(machine.unload_driver(), STATUS_SUCCESS);
    machine.assert_clean();
}

#[test]
fn a_reply_buffer_too_small_for_any_reply_is_refused_before_the_work() {
    let mut machine = boot();
    let admin = machine.spawn_process(ADMIN_IMAGE, 0, true);
    let client = machine
        .connect(PORT_NAME, &management_context(), admin)
        .unwrap();
    let out = process::run_as(admin, page);
    assert_eq!(
        send(
            admin,
            client,
            &set_rule(4, "small.exe"),
            out,
            REPLY_HEADER_SIZE - 1
        ),
        (hresult_from_win32(ERROR_INSUFFICIENT_BUFFER), 0)
    );
    assert_eq!(
        send(admin, client, &set_rule(4, "small.exe"), 0, 0),
        (hresult_from_win32(ERROR_INSUFFICIENT_BUFFER), 0)
    );
    assert!(rules(admin).is_empty());
    machine.disconnect(client);
    assert_eq!(machine.unload_driver(), STATUS_SUCCESS);
    machine.assert_clean();
}

#[test]
fn a_secured_reply_page_that_cannot_be_paged_in_is_caught_by_the_guard_and_the_driver_serves_on() {
    // The gap securing leaves: the range stays committed and writable, but a page of it
    // cannot be read back from the paging file. The store into it raises an in-page error
    // that only the exception guard catches.
    let mut machine = boot();
    let admin = machine.spawn_process(ADMIN_IMAGE, 0, true);
    let client = machine
        .connect(PORT_NAME, &management_context(), admin)
        .unwrap();
    let out = process::run_as(admin, page);
    machine.fail_page_in(admin, out);
    assert_eq!(
        send(admin, client, &set_rule(5, "inpage.exe"), out, PAGE_SIZE),
        (hresult_from_win32(ERROR_SWAPERROR), 0),
        "the provider learns of the in-page error (STATUS_IN_PAGE_ERROR)"
    );
    // Securing came first and held, so the request was carried out; only its answer
    // was lost, and the provider sees the rule when it asks.
    assert_eq!(rules(admin), ["inpage.exe"]);
    assert_eq!(machine.secured_ranges(admin), 0, "unsecured all the same");
    machine.assert_clean();

    // The driver goes on serving, into a good buffer.
    let good = process::run_as(admin, page);
    let (hr, returned) = send(admin, client, &set_rule(6, "next.exe"), good, PAGE_SIZE);
    assert_eq!(hr, 0);
    assert_eq!(reply_at(good, returned), (STATUS_SUCCESS, 6));
    machine.disconnect(client);
    assert_eq!(machine.unload_driver(), STATUS_SUCCESS);
    machine.assert_clean();
}

#[test]
fn a_reply_buffer_freed_right_before_the_guarded_write_cannot_be_and_the_reply_arrives() {
    // The last moment a provider's other thread can try: the driver is about to copy
    // the reply. The range is secured, so the free fails and the reply is delivered.
    let mut machine = boot();
    let admin = machine.spawn_process(ADMIN_IMAGE, 0, true);
    let client = machine
        .connect(PORT_NAME, &management_context(), admin)
        .unwrap();
    let out = process::run_as(admin, page);
    let (tx, rx) = mpsc::channel();
    machine.mid_call(admin, MidCall::BeforeUserWrite, move || {
        tx.send(Spoil::ALL.map(|spoil| spoil.apply(out))).unwrap();
    });
    let (hr, returned) = send(admin, client, &set_rule(9, "late.exe"), out, PAGE_SIZE);
    assert_eq!(hr, 0);
    assert_eq!(reply_at(out, returned), (STATUS_SUCCESS, 9));
    assert_eq!(rx.recv().unwrap(), [false; 4], "every spoiling call failed");
    assert_eq!(rules(admin), ["late.exe"]);
    machine.disconnect(client);
    assert_eq!(machine.unload_driver(), STATUS_SUCCESS);
    machine.assert_clean();
}

/// A registration breaking CF_SYNC_REGISTRATION's rules is refused with cfapi's
/// E_INVALIDARG (STATUS_INVALID_PARAMETER) even when a client other than userlib, which
/// refuses it before sending, hands it over; any other message that does not decode is
/// an invalid request. Both replies name the request.
#[test]
fn a_hand_made_registration_breaking_the_rules_is_an_invalid_parameter() {
    use cloudflt_proto::msg::RegisterSyncRoot;
    use cloudflt_proto::registration::{
        HardLinkPolicy, HydrationModifiers, ManagementPolicy, RegisterFlags, Registration,
        RootFlags,
    };
    let mut machine = boot();
    let admin = machine.spawn_process(ADMIN_IMAGE, 0, true);
    let client = machine
        .connect(PORT_NAME, &management_context(), admin)
        .unwrap();
    let out = process::run_as(admin, page);
    let name: Vec<u16> = "P".encode_utf16().collect();
    let root: Vec<u16> = r"\Device\HarddiskVolume1\Cloud".encode_utf16().collect();
    let message = RegisterSyncRoot {
        request_id: 41,
        flags: RegisterFlags::NONE,
        registration: Registration {
            provider_name: Utf16::from_units(&name),
            provider_version: Utf16::EMPTY,
            provider_id: [1; 16],
            sync_root: Utf16::from_units(&root),
            sync_root_identity: &[],
            root_file_identity: &[],
            hydration: HydrationPolicy::Full,
            modifiers: HydrationModifiers::VALIDATION_REQUIRED,
            // This port-level provider answers fetches only: it asks for no population.
            population: PopulationPolicy::AlwaysFull,
            in_sync: cloudflt_proto::InSyncPolicy::NONE,
            hard_links: HardLinkPolicy::NONE,
            management: ManagementPolicy::DEFAULT,
            flags: RootFlags::NONE,
        },
    };
    let mut bytes = vec![0u8; message.encoded_len()];
    assert_eq!(message.encode(&mut bytes), Ok(bytes.len()));
    // The record follows the header (16) and the flags and reserved field (8); its
    // modifiers are at 34: STREAMING_ALLOWED joins VALIDATION_REQUIRED.
    assert_eq!(&bytes[16 + 8 + 34..16 + 8 + 36], &[1, 0]);
    bytes[16 + 8 + 34] = 3;
    let (hr, returned) = send(admin, client, &bytes, out, PAGE_SIZE);
    assert_eq!(hr, 0);
    assert_eq!(
        reply_at(out, returned),
        (windows_sys::Win32::Foundation::STATUS_INVALID_PARAMETER, 41)
    );

    // An image rule with a reserved byte set: an invalid request.
    let mut rule = set_rule(42, "x.exe");
    rule[16 + 6] = 1;
    let (hr, returned) = send(admin, client, &rule, out, PAGE_SIZE);
    assert_eq!(hr, 0);
    assert_eq!(
        reply_at(out, returned),
        (
            windows_sys::Win32::Foundation::STATUS_CLOUD_FILE_INVALID_REQUEST,
            42
        )
    );
    machine.disconnect(client);
    assert_eq!(machine.unload_driver(), STATUS_SUCCESS);
    machine.assert_clean();
}
