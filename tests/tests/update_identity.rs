//! UPDATE with a new identity (CfUpdatePlaceholder's FileIdentity), with the real driver
//! and a provider written with the real library: the reply, `info`, the reparse data
//! after the driver is unloaded and loaded again, and every fetch asked afterwards carry
//! the new identity; an update whose precondition fails leaves the old one.

use std::sync::Mutex;
use std::sync::mpsc::{self, Sender};
use std::time::Duration;

use cloudflt::{
    Error, FetchRequest, HydrationPolicy, PlaceholderSpec, SyncProvider, SyncRoot, SyncRootConfig,
    Transfer, UpdateOptions,
};
use cloudflt_tests::model::files::{self, IoMode, OpenParams};
use cloudflt_tests::model::process;
use cloudflt_tests::rig::{ROOT, Rig};
use windows_sys::Win32::Foundation::STATUS_SUCCESS;
const SIZE: u64 = 3 * 4096;

/// Serves every fetch with a byte derived from the identity it carries, and reports the
/// identity to the test.
struct ByIdentity(Mutex<Sender<Vec<u8>>>);

impl SyncProvider for ByIdentity {
    fn fetch_data(&self, request: FetchRequest, mut transfer: Transfer) {
        let _ = self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(request.identity.clone());
        let start = request.required.start / 4096 * 4096;
        let end = request.required.end.div_ceil(4096) * 4096;
        let fill = request.identity.last().copied().unwrap_or(0);
        let data = vec![fill; (end.min(SIZE) - start) as usize];
        transfer
            .write(start, &data)
            .expect("the driver takes the data");
    }
}

fn read_page(app: u32, page: u64) -> Vec<u8> {
    process::run_as(app, || {
        let h = files::create("C:\\Cloud\\a.bin", &OpenParams::default()).expect("open");
        let data = files::read(h, page * 4096, 4096, IoMode::NonCached).expect("read");
        files::close(h);
        data
    })
}

#[test]
fn a_new_identity_reaches_the_record_and_every_later_fetch() {
    let mut rig = Rig::new();
    let (provider, app) = (rig.provider, rig.app);
    let (send, identities) = mpsc::channel();
    let connect = |send: Sender<Vec<u8>>| {
        process::run_as(provider, || {
            let config = SyncRootConfig::new(ROOT, "ids", "1")
                .hydration(HydrationPolicy::Partial)
                .timeout(Duration::from_secs(30));
            SyncRoot::connect(config, ByIdentity(Mutex::new(send))).expect("connect")
        })
    };
    let connection = connect(send.clone());
    process::run_as(provider, || {
        let made = connection.create_placeholders(&[PlaceholderSpec::file("a.bin", SIZE)
            .identity(b"v1".to_vec())
            .in_sync(true)]);
        assert!(made.iter().all(Result::is_ok), "{made:?}");
    });
    assert_eq!(read_page(app, 0), vec![b'1'; 4096]);
    assert_eq!(
        identities.recv_timeout(Duration::from_secs(20)).unwrap(),
        b"v1"
    );

    let info = process::run_as(provider, || connection.info("a.bin")).expect("info");
    // A stale precondition: nothing changes, the identity included.
    let mut stale = UpdateOptions::new(SIZE);
    stale.if_unchanged = Some(info.changes.wrapping_add(5));
    stale.identity = Some(b"never".to_vec());
    assert!(matches!(
        process::run_as(provider, || connection.update("a.bin", &stale)),
        Err(Error::NotInSync)
    ));
    assert_eq!(
        process::run_as(provider, || connection.info("a.bin"))
            .expect("info")
            .identity,
        b"v1"
    );

    let mut update = UpdateOptions::new(SIZE);
    update.identity = Some(b"v2".to_vec());
    let after = process::run_as(provider, || connection.update("a.bin", &update)).expect("update");
    assert_eq!(after.identity, b"v2", "the reply carries the new identity");
    assert_eq!(read_page(app, 1), vec![b'2'; 4096], "fetched with it");
    assert_eq!(
        identities.recv_timeout(Duration::from_secs(20)).unwrap(),
        b"v2"
    );

    // The record on disk has it: after a reload, fetches still carry it.
    process::run_as(provider, || connection.disconnect()).expect("disconnect");
    rig.machine.assert_clean();
    assert_eq!(rig.machine.unload_driver(), STATUS_SUCCESS);
    assert_eq!(
        rig.machine.load_driver(cloudflt_driver::nt::driver_entry),
        STATUS_SUCCESS
    );
    let connection = connect(send);
    assert_eq!(
        process::run_as(provider, || connection.info("a.bin"))
            .expect("info")
            .identity,
        b"v2"
    );
    assert_eq!(read_page(app, 2), vec![b'2'; 4096]);
    assert_eq!(
        identities.recv_timeout(Duration::from_secs(20)).unwrap(),
        b"v2"
    );
    assert_eq!(read_page(app, 0), vec![b'1'; 4096], "present data is kept");
    process::run_as(provider, || connection.disconnect()).expect("disconnect");
    rig.unload();
}
