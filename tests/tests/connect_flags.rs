//! What a provider's connect flags and its root's registration put into every request,
//! with the real driver and a provider written with the real library:
//! REQUIRE_FULL_FILE_PATH (the full NT path instead of the root-relative one),
//! REQUIRE_PROCESS_INFO (the requesting process's command line), the sync-root identity
//! of the registration (in every request, flags or not), and
//! BLOCK_SELF_IMPLICIT_HYDRATION (the provider's own read of missing data is refused
//! instead of reading what NTFS holds).

use std::sync::Mutex;
use std::sync::mpsc::{self, Sender};
use std::time::Duration;

use cloudflt::registration::{RegisterFlags, SyncRootRegistration};
use cloudflt::{
    ConnectFlags, FetchRequest, HydrationPolicy, PlaceholderSpec, SyncProvider, SyncRoot,
    SyncRootConfig, Transfer,
};
use cloudflt_tests::model::files::{self, IoMode, OpenParams};
use cloudflt_tests::model::process;
use cloudflt_tests::rig::{ROOT, Rig};
use windows_sys::Win32::Foundation::STATUS_CLOUD_FILE_ACCESS_DENIED;

const SIZE: u64 = 2 * 4096;

/// Serves 0x5A everywhere and hands each request to the test.
struct Recorder(Mutex<Sender<FetchRequest>>);

impl SyncProvider for Recorder {
    fn fetch_data(&self, request: FetchRequest, mut transfer: Transfer) {
        let start = request.required.start / 4096 * 4096;
        let end = (request.required.end.div_ceil(4096) * 4096).min(SIZE);
        let _ = self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(request);
        transfer
            .write(start, &vec![0x5A; (end - start) as usize])
            .expect("the driver takes the data");
    }
}

/// Registers the root with a sync-root identity, connects with `flags`, makes `a.bin`.
fn serve(rig: &Rig, flags: ConnectFlags) -> (cloudflt::Connection, mpsc::Receiver<FetchRequest>) {
    let (send, requests) = mpsc::channel();
    let connection = process::run_as(rig.provider, || {
        let registration = SyncRootRegistration::new(ROOT, "flags", "1")
            .hydration(HydrationPolicy::Partial)
            .sync_root_identity(b"account-42".to_vec());
        SyncRoot::register(&registration, RegisterFlags::NONE).expect("register");
        let config = SyncRootConfig::new(ROOT, "flags", "1")
            .hydration(HydrationPolicy::Partial)
            .connect_flags(flags)
            .timeout(Duration::from_secs(30));
        SyncRoot::connect(config, Recorder(Mutex::new(send))).expect("connect")
    });
    process::run_as(rig.provider, || {
        let made =
            connection.create_placeholders(&[PlaceholderSpec::file("a.bin", SIZE).in_sync(true)]);
        assert!(made.iter().all(Result::is_ok), "{made:?}");
    });
    (connection, requests)
}

fn read(pid: u32, offset: u64) -> Result<Vec<u8>, i32> {
    process::run_as(pid, || {
        let h = files::create("C:\\Cloud\\a.bin", &OpenParams::default()).expect("open");
        let data = files::read(h, offset, 4096, IoMode::NonCached);
        files::close(h);
        data
    })
}

#[test]
fn requests_carry_the_full_path_the_command_line_and_the_root_identity_when_asked() {
    let rig = Rig::new();
    let flags = ConnectFlags::REQUIRE_PROCESS_INFO.union(ConnectFlags::REQUIRE_FULL_FILE_PATH);
    let (connection, requests) = serve(&rig, flags);
    assert_eq!(read(rig.app, 0), Ok(vec![0x5A; 4096]));
    let request = requests
        .recv_timeout(Duration::from_secs(20))
        .expect("a fetch");
    assert!(request.path_is_full);
    assert_eq!(request.path, r"\Device\HarddiskVolume1\Cloud\a.bin");
    assert_eq!(
        request.process.command_line.as_deref(),
        Some(r#""\Device\HarddiskVolume1\Apps\app.exe""#),
        "the requesting process's own command line"
    );
    assert_eq!(request.sync_root_identity, b"account-42");
    assert!(request.root_file_identity.is_empty(), "a file's fetch");
    process::run_as(rig.provider, || connection.disconnect()).expect("disconnect");
    rig.unload();
}

#[test]
fn without_flags_the_path_is_relative_and_no_command_line_is_read() {
    let rig = Rig::new();
    let (connection, requests) = serve(&rig, ConnectFlags::NONE);
    assert_eq!(read(rig.app, 4096), Ok(vec![0x5A; 4096]));
    let request = requests
        .recv_timeout(Duration::from_secs(20))
        .expect("a fetch");
    assert!(!request.path_is_full);
    assert_eq!(request.path, "a.bin");
    assert_eq!(request.process.command_line, None);
    assert_eq!(
        request.sync_root_identity, b"account-42",
        "in every request"
    );
    process::run_as(rig.provider, || connection.disconnect()).expect("disconnect");
    rig.unload();
}

#[test]
fn a_provider_that_blocks_its_own_implicit_hydration_is_refused_missing_data() {
    let rig = Rig::new();
    let (connection, requests) = serve(&rig, ConnectFlags::BLOCK_SELF_IMPLICIT_HYDRATION);
    // Its own read of data not present: refused, no fetch, not NTFS's zeros.
    assert_eq!(read(rig.provider, 0), Err(STATUS_CLOUD_FILE_ACCESS_DENIED));
    assert!(requests.try_recv().is_err(), "nothing was fetched");
    // Once an application hydrated it, the provider reads it.
    assert_eq!(read(rig.app, 0), Ok(vec![0x5A; 4096]));
    assert_eq!(read(rig.provider, 0), Ok(vec![0x5A; 4096]));
    process::run_as(rig.provider, || connection.disconnect()).expect("disconnect");
    rig.unload();
}
