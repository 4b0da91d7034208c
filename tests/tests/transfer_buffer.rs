//! The real driver and a provider whose TRANSFER_DATA input buffer goes bad mid-call:
//! another thread of the provider frees or write-protects it, or a page of it cannot be
//! paged back in, while the driver is reading it (the model runs that thread at a chosen
//! point of the call).
//!
//! The driver reads a transfer's head with a guarded copy and locks its data in place
//! (IoAllocateMdl, MmProbeAndLockPages under the exception guard) to write it to disk
//! from the provider's pages. A buffer that goes bad before it is locked must refuse the
//! transfer with a status — no bug check, no MDL left behind, the waiting read still
//! waiting — so that the provider can send the data again; once locked, the pages are
//! the driver's until the write is done, whatever the provider does to the addresses.
//! The reader must never see a byte other than the provider's.

use std::ffi::c_void;
use std::thread;

use cloudflt_proto::msg::{
    BasicInfo, CreatePlaceholder, KernelMessage, Reply, TRANSFER_HEAD_LEN, TransferData,
    TransferFlags,
};
use cloudflt_proto::placeholder::PlaceholderFlags;
use cloudflt_proto::port::PORT_NAME;
use cloudflt_proto::{ConnectionContext, HydrationPolicy, PopulationPolicy, Utf16};
use cloudflt_tests::model::files::{self, IoMode, OpenParams};
use cloudflt_tests::model::fltlib::{FilterGetMessage, FilterSendMessage, GetLastError};
use cloudflt_tests::model::process;
use cloudflt_tests::model::vm::{MidCall, PAGE_SIZE, VirtualAlloc, VirtualFree, VirtualProtect};
use cloudflt_tests::model::{ClientId, Machine, VolumeConfig};
use windows_sys::Win32::Foundation::{
    NTSTATUS, STATUS_DATATYPE_MISALIGNMENT_ERROR, STATUS_IN_PAGE_ERROR, STATUS_INVALID_USER_BUFFER,
    STATUS_SUCCESS,
};
use windows_sys::Win32::System::Memory::{
    MEM_COMMIT, MEM_DECOMMIT, MEM_RELEASE, MEM_RESERVE, PAGE_NOACCESS, PAGE_READWRITE,
};
use windows_sys::core::HRESULT;

const VOLUME: &str = r"\Device\HarddiskVolume1";
const PROVIDER_IMAGE: &str = r"\Device\HarddiskVolume1\Sync\provider.exe";
const APP_IMAGE: &str = r"\Device\HarddiskVolume1\Apps\reader.exe";
const FILE: &str = r"C:\Cloud\a.bin";

/// One whole 4 KiB unit (written from the locked pages) and a partial last one (904
/// bytes, through the driver's one-unit buffer).
const SIZE: usize = 5000;

/// The file's bytes, as the provider holds them.
fn content() -> Vec<u8> {
    (0..SIZE).map(|i| (i * 7 % 251) as u8 + 1).collect()
}

struct Setup {
    machine: Machine,
    provider: u32,
    app: u32,
    client: ClientId,
}

fn provider_context() -> Vec<u8> {
    let name: Vec<u16> = "p".encode_utf16().collect();
    let root: Vec<u16> = format!(r"{VOLUME}\Cloud").encode_utf16().collect();
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

/// Committed read-write pages of the calling process.
fn pages(count: usize) -> usize {
    let p = VirtualAlloc(
        std::ptr::null(),
        count * PAGE_SIZE,
        MEM_RESERVE | MEM_COMMIT,
        PAGE_READWRITE,
    );
    assert!(!p.is_null(), "VirtualAlloc: {}", GetLastError());
    p as usize
}

/// FilterSendMessage from `pid` with `input_len` bytes at `input` and a one-page reply
/// buffer of its own: the result and the reply's status (a refused transfer is answered,
/// so FilterSendMessage succeeds and the reply carries the refusal).
fn send_raw(pid: u32, client: ClientId, input: usize, input_len: usize) -> (HRESULT, NTSTATUS) {
    process::run_as(pid, || {
        let out = pages(1);
        let mut returned = 0u32;
        // SAFETY: both buffers are the model's pages of this process.
        let hr = unsafe {
            FilterSendMessage(
                client.handle(),
                input as *const c_void,
                input_len as u32,
                out as *mut c_void,
                PAGE_SIZE as u32,
                &mut returned,
            )
        };
        let status = if hr == 0 {
            // SAFETY: the reply the driver wrote into the page.
            let bytes = unsafe { std::slice::from_raw_parts(out as *const u8, returned as usize) };
            Reply::decode(bytes).expect("the reply decodes").status
        } else {
            assert_eq!(returned, 0, "no reply length with a failure");
            -1
        };
        assert!(VirtualFree(out as *mut c_void, 0, MEM_RELEASE) != 0);
        (hr, status)
    })
}

/// Boots, connects a provider and makes `FILE` a placeholder of `SIZE` bytes.
fn setup() -> Setup {
    let machine = Machine::boot(&[VolumeConfig::ntfs(1)]);
    machine.set_symbolic_link(r"\SystemRoot", r"\Device\HarddiskVolume1\Windows");
    assert_eq!(
        machine.load_driver(cloudflt_driver::nt::driver_entry),
        STATUS_SUCCESS
    );
    let provider = machine.spawn_process(PROVIDER_IMAGE, 0, true);
    let app = machine.spawn_process(APP_IMAGE, 0, false);
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
        .connect(PORT_NAME, &provider_context(), provider)
        .expect("the provider connects");
    let units: Vec<u16> = "a.bin".encode_utf16().collect();
    let create = CreatePlaceholder {
        request_id: 1,
        file_size: SIZE as u64,
        basic: BasicInfo::default(),
        flags: PlaceholderFlags::EMPTY,
        path: Utf16::from_units(&units),
        identity: b"id",
    };
    let mut message = vec![0u8; create.encoded_len()];
    assert_eq!(create.encode(&mut message), Ok(message.len()));
    let input = message.as_ptr() as usize;
    assert_eq!(send_raw(provider, client, input, message.len()), (0, 0));
    Setup {
        machine,
        provider,
        app,
        client,
    }
}

/// Starts a read of the whole file by the application; it waits for the provider.
fn start_read(app: u32) -> thread::JoinHandle<Result<Vec<u8>, NTSTATUS>> {
    thread::spawn(move || {
        process::run_as(app, || {
            let h = files::create(FILE, &OpenParams::default())?;
            let data = files::read(h, 0, SIZE, IoMode::Cached);
            files::close(h);
            data
        })
    })
}

/// The provider takes the FETCH_DATA the read caused: its request id.
fn take_fetch(provider: u32, client: ClientId) -> u64 {
    process::run_as(provider, || {
        let mut buffer = vec![0u8; 64 * 1024];
        // SAFETY: a buffer of that size; a blocking call.
        let hr = unsafe {
            FilterGetMessage(
                client.handle(),
                buffer.as_mut_ptr().cast(),
                buffer.len() as u32,
                std::ptr::null_mut(),
            )
        };
        assert_eq!(hr, 0);
        match KernelMessage::decode(&buffer[16..]) {
            Ok(KernelMessage::FetchData(fetch)) => {
                assert_eq!(fetch.file_size, SIZE as u64);
                fetch.request_id
            }
            other => panic!("expected a fetch, got {other:?}"),
        }
    })
}

/// A TRANSFER_DATA of the whole file laid out in three fresh pages of the provider's, its
/// data starting on the second page (`data_shift` bytes later): the message's address
/// and length. Page 0 holds the head, page 1 the whole unit, page 2 the partial one.
fn transfer_in_pages(provider: u32, request_id: u64, data_shift: usize) -> (usize, usize) {
    let data = content();
    let message = TransferData {
        request_id,
        offset: 0,
        flags: TransferFlags::LAST,
        data: &data,
    };
    let len = message.encoded_len();
    let base = process::run_as(provider, || pages(3));
    let at = base + PAGE_SIZE - TRANSFER_HEAD_LEN + data_shift;
    // SAFETY: `at..at + len` lies within the three committed pages.
    let out = unsafe { std::slice::from_raw_parts_mut(at as *mut u8, len) };
    assert_eq!(message.encode(out), Ok(len));
    (at, len)
}

/// The first page of the region holding `at`.
fn region_base(at: usize) -> usize {
    (at + TRANSFER_HEAD_LEN) / PAGE_SIZE * PAGE_SIZE - PAGE_SIZE
}

fn protect(at: usize, len: usize, protection: u32) -> bool {
    let mut old = 0;
    // SAFETY: the model's kernel32; `old` is a valid out variable.
    unsafe { VirtualProtect(at as *const c_void, len, protection, &mut old) != 0 }
}

#[test]
fn a_transfer_buffer_freed_or_protected_before_it_is_locked_is_refused_and_the_read_waits_for_the_resend()
 {
    let mut s = setup();
    let reader = start_read(s.app);
    let id = take_fetch(s.provider, s.client);

    // Each way the data's pages go bad before MmProbeAndLockPages has them, and where.
    type Spoil = fn(usize) -> bool;
    let spoils: [(&str, MidCall, Spoil); 5] = [
        ("released before the lock", MidCall::BeforeProbe, |base| {
            VirtualFree(base as *mut c_void, 0, MEM_RELEASE) != 0
        }),
        (
            "decommitted before the lock",
            MidCall::BeforeProbe,
            |base| VirtualFree((base + PAGE_SIZE) as *mut c_void, PAGE_SIZE, MEM_DECOMMIT) != 0,
        ),
        (
            "made no-access before the lock",
            MidCall::BeforeProbe,
            |base| protect(base + PAGE_SIZE, PAGE_SIZE, PAGE_NOACCESS),
        ),
        // The head was read; the partial last unit is not yet.
        (
            "released after the head was read",
            MidCall::AfterInputCopy,
            |base| VirtualFree(base as *mut c_void, 0, MEM_RELEASE) != 0,
        ),
        (
            "its last page no-access after the head was read",
            MidCall::AfterInputCopy,
            |base| protect(base + 2 * PAGE_SIZE, PAGE_SIZE, PAGE_NOACCESS),
        ),
    ];
    for (what, at, spoil) in spoils {
        let (input, len) = transfer_in_pages(s.provider, id, 0);
        let base = region_base(input);
        s.machine.mid_call(s.provider, at, move || {
            assert!(spoil(base), "the provider's own call succeeds");
        });
        assert_eq!(
            send_raw(s.provider, s.client, input, len),
            (0, STATUS_INVALID_USER_BUFFER),
            "a transfer whose buffer was {what}"
        );
        assert_eq!(s.machine.mid_call_pending(), 0, "{what}: the action ran");
        assert_eq!(s.machine.live_mdls(), 0, "{what}: no MDL left behind");
        s.machine.assert_clean();
        assert!(!reader.is_finished(), "{what}: the read still waits");
    }

    // A page the pager cannot read back: the lock raises STATUS_IN_PAGE_ERROR.
    let (input, len) = transfer_in_pages(s.provider, id, 0);
    s.machine
        .fail_page_in(s.provider, region_base(input) + PAGE_SIZE);
    assert_eq!(
        send_raw(s.provider, s.client, input, len),
        (0, STATUS_IN_PAGE_ERROR)
    );
    assert_eq!(s.machine.live_mdls(), 0);
    s.machine.assert_clean();
    assert!(!reader.is_finished(), "the read still waits");

    // The provider sends the data again from a good buffer: the read gets exactly it.
    let (input, len) = transfer_in_pages(s.provider, id, 0);
    assert_eq!(
        send_raw(s.provider, s.client, input, len),
        (0, STATUS_SUCCESS)
    );
    assert_eq!(reader.join().expect("the reader"), Ok(content()));
    assert_eq!(s.machine.live_mdls(), 0);

    s.machine.disconnect(s.client);
    assert_eq!(s.machine.unload_driver(), STATUS_SUCCESS);
    s.machine.assert_clean();
}

#[test]
fn once_locked_the_data_is_written_whatever_the_provider_does_to_its_buffer() {
    let mut s = setup();
    let reader = start_read(s.app);
    let id = take_fetch(s.provider, s.client);

    // Released as soon as the pages are locked, before the driver writes them: the MDL
    // still describes the provider's bytes.
    let (input, len) = transfer_in_pages(s.provider, id, 0);
    let base = region_base(input);
    s.machine.mid_call(s.provider, MidCall::AfterLock, move || {
        assert!(VirtualFree(base as *mut c_void, 0, MEM_RELEASE) != 0);
    });
    assert_eq!(
        send_raw(s.provider, s.client, input, len),
        (0, STATUS_SUCCESS)
    );
    assert_eq!(s.machine.mid_call_pending(), 0);
    assert_eq!(reader.join().expect("the reader"), Ok(content()));
    assert_eq!(
        s.machine.live_mdls(),
        0,
        "unlocked and freed after the write"
    );

    // The file is whole: a second reader is served from disk, the same bytes.
    assert_eq!(start_read(s.app).join().expect("the reader"), Ok(content()));

    s.machine.disconnect(s.client);
    assert_eq!(s.machine.unload_driver(), STATUS_SUCCESS);
    s.machine.assert_clean();
}

#[test]
fn data_not_aligned_for_a_non_cached_write_is_refused_and_an_aligned_resend_works() {
    let mut s = setup();
    let reader = start_read(s.app);
    let id = take_fetch(s.provider, s.client);

    // The data 8 bytes past a page boundary: a disk cannot take it by DMA as it lies.
    let (input, len) = transfer_in_pages(s.provider, id, 8);
    assert_eq!(
        send_raw(s.provider, s.client, input, len),
        (0, STATUS_DATATYPE_MISALIGNMENT_ERROR)
    );
    assert_eq!(s.machine.live_mdls(), 0);
    assert!(!reader.is_finished(), "the read still waits");

    let (input, len) = transfer_in_pages(s.provider, id, 0);
    assert_eq!(
        send_raw(s.provider, s.client, input, len),
        (0, STATUS_SUCCESS)
    );
    assert_eq!(reader.join().expect("the reader"), Ok(content()));

    s.machine.disconnect(s.client);
    assert_eq!(s.machine.unload_driver(), STATUS_SUCCESS);
    s.machine.assert_clean();
}
