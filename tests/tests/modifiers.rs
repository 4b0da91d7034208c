//! The hydration policy modifiers, with the real driver and a provider written with the
//! real library: what NTFS holds while and after they act, which the scenarios cannot
//! see (a placeholder's `state` is its record).
//!
//! - STREAMING_ALLOWED: the bytes a read was served are on disk only while the file is
//!   open; after the last close NTFS holds none of them, nothing was recorded, and the
//!   next open fetches again.
//! - VALIDATION_REQUIRED: the provider reads back exactly what NTFS holds (not what it
//!   sent), the read completes only once it acknowledged, and what it refused is
//!   neither recorded nor served.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cloudflt::registration::HydrationModifiers;
use cloudflt::{
    Error, FetchRequest, HydrationPolicy, PlaceholderSpec, SyncProvider, SyncRoot, SyncRootConfig,
    Transfer, Validation, ValidationRequest,
};
use cloudflt_tests::model::files::{self, IoMode, OpenParams};
use cloudflt_tests::model::process;
use cloudflt_tests::rig::{ROOT, Rig};
use windows_sys::Win32::Foundation::STATUS_CLOUD_FILE_VALIDATION_FAILED;

const SIZE: u64 = 4 * 4096;

fn byte(at: u64) -> u8 {
    (at % 251) as u8
}

/// Serves the file's bytes; validates by comparing what it reads back with them, or
/// refuses everything when `refuse` is set.
struct Remote {
    fetches: AtomicU64,
    validations: AtomicU64,
    refuse: bool,
    /// What every validation read back.
    read_back: Mutex<Vec<Vec<u8>>>,
}

impl Remote {
    fn new(refuse: bool) -> Arc<Self> {
        Arc::new(Self {
            fetches: AtomicU64::new(0),
            validations: AtomicU64::new(0),
            refuse,
            read_back: Mutex::new(Vec::new()),
        })
    }
}

struct Serve(Arc<Remote>);

impl SyncProvider for Serve {
    fn fetch_data(&self, request: FetchRequest, mut transfer: Transfer) {
        self.0.fetches.fetch_add(1, Ordering::SeqCst);
        let start = request.required.start / 4096 * 4096;
        let end = (request.required.end.div_ceil(4096) * 4096).min(SIZE);
        let data: Vec<u8> = (start..end).map(byte).collect();
        transfer
            .write(start, &data)
            .expect("the driver takes the data");
    }

    fn validate_data(&self, request: ValidationRequest, validation: Validation) {
        self.0.validations.fetch_add(1, Ordering::SeqCst);
        let range = request.range.clone();
        let bytes = validation.read(range.clone()).expect("the data reads back");
        let right = bytes.len() as u64 == range.end - range.start
            && bytes
                .iter()
                .zip(range.clone())
                .all(|(b, at)| *b == byte(at));
        self.0.read_back.lock().unwrap().push(bytes);
        if right && !self.0.refuse {
            validation.acknowledge(range).expect("acknowledged");
        } else {
            validation
                .refuse(range, Error::ValidationFailed)
                .expect("refused");
        }
    }
}

fn connect(rig: &Rig, modifiers: HydrationModifiers, remote: &Arc<Remote>) -> cloudflt::Connection {
    let connection = process::run_as(rig.provider, || {
        let config = SyncRootConfig::new(ROOT, "modifiers", "1")
            .hydration(HydrationPolicy::Partial)
            .modifiers(modifiers)
            .timeout(Duration::from_secs(30));
        SyncRoot::connect(config, Serve(remote.clone())).expect("connect")
    });
    process::run_as(rig.provider, || {
        let made =
            connection.create_placeholders(&[PlaceholderSpec::file("a.bin", SIZE).in_sync(true)]);
        assert!(made.iter().all(Result::is_ok), "{made:?}");
    });
    connection
}

/// The allocated ranges NTFS holds for `C:\Cloud\a.bin`.
fn allocated() -> Vec<(u64, u64)> {
    files::with_volume("C:\\Cloud\\a.bin", |ntfs, rel| {
        let id = ntfs.lookup(rel)?;
        Some(ntfs.allocated_ranges(id))
    })
    .expect("the volume")
    .expect("the file exists")
}

#[test]
fn streamed_data_is_served_and_gone_from_the_disk_after_the_last_close() {
    let rig = Rig::new();
    let remote = Remote::new(false);
    let connection = connect(&rig, HydrationModifiers::STREAMING_ALLOWED, &remote);
    assert!(allocated().is_empty(), "a new placeholder holds nothing");
    let h = process::run_as(rig.app, || {
        files::create("C:\\Cloud\\a.bin", &OpenParams::default()).expect("open")
    });
    let data = process::run_as(rig.app, || {
        files::read(h, 4096, 4096, IoMode::NonCached).expect("read")
    });
    assert_eq!(data, (4096..8192).map(byte).collect::<Vec<_>>());
    // Served again from what is on disk while the file is open: no second fetch.
    let again = process::run_as(rig.app, || {
        files::read(h, 4096, 100, IoMode::Cached).expect("read")
    });
    assert_eq!(again, (4096..4196).map(byte).collect::<Vec<_>>());
    assert_eq!(remote.fetches.load(Ordering::SeqCst), 1);
    let info = process::run_as(rig.provider, || connection.info("a.bin")).expect("info");
    // On disk but not recorded: the provider's view of the placeholder is its record.
    assert!(info.ranges.is_empty(), "recorded: {:?}", info.ranges);
    process::run_as(rig.app, || files::close(h));
    assert!(
        allocated().is_empty(),
        "streamed data left on disk: {:?}",
        allocated()
    );
    let info = process::run_as(rig.provider, || connection.info("a.bin")).expect("info");
    assert!(info.ranges.is_empty(), "recorded: {:?}", info.ranges);
    // The next open fetches again.
    let data = process::run_as(rig.app, || {
        let h = files::create("C:\\Cloud\\a.bin", &OpenParams::default()).expect("open");
        let d = files::read(h, 4096, 4096, IoMode::NonCached).expect("read");
        files::close(h);
        d
    });
    assert_eq!(data, (4096..8192).map(byte).collect::<Vec<_>>());
    assert_eq!(remote.fetches.load(Ordering::SeqCst), 2);
    process::run_as(rig.provider, || connection.disconnect()).expect("disconnect");
    rig.unload();
}

#[test]
fn validation_reads_back_what_ntfs_holds_and_only_acknowledged_data_is_recorded() {
    let rig = Rig::new();
    let remote = Remote::new(false);
    let connection = connect(&rig, HydrationModifiers::VALIDATION_REQUIRED, &remote);
    let data = process::run_as(rig.app, || {
        let h = files::create("C:\\Cloud\\a.bin", &OpenParams::default()).expect("open");
        let d = files::read(h, 8192, 4096, IoMode::NonCached).expect("read");
        files::close(h);
        d
    });
    assert_eq!(data, (8192..12288).map(byte).collect::<Vec<_>>());
    assert_eq!(remote.validations.load(Ordering::SeqCst), 1);
    assert_eq!(
        remote.read_back.lock().unwrap().as_slice(),
        &[(8192..12288).map(byte).collect::<Vec<_>>()]
    );
    let info = process::run_as(rig.provider, || connection.info("a.bin")).expect("info");
    assert_eq!(info.ranges, vec![8192..12288]);
    process::run_as(rig.provider, || connection.disconnect()).expect("disconnect");
    rig.unload();
}

#[test]
fn refused_data_fails_the_read_and_is_fetched_again_by_the_next() {
    let rig = Rig::new();
    let remote = Remote::new(true);
    let connection = connect(&rig, HydrationModifiers::VALIDATION_REQUIRED, &remote);
    let read = || {
        process::run_as(rig.app, || {
            let h = files::create("C:\\Cloud\\a.bin", &OpenParams::default()).expect("open");
            let d = files::read(h, 0, 4096, IoMode::NonCached);
            files::close(h);
            d
        })
    };
    assert_eq!(read(), Err(STATUS_CLOUD_FILE_VALIDATION_FAILED));
    let info = process::run_as(rig.provider, || connection.info("a.bin")).expect("info");
    assert!(
        info.ranges.is_empty(),
        "refused data recorded: {:?}",
        info.ranges
    );
    assert_eq!(read(), Err(STATUS_CLOUD_FILE_VALIDATION_FAILED));
    assert_eq!(remote.fetches.load(Ordering::SeqCst), 2, "asked again");
    assert_eq!(remote.validations.load(Ordering::SeqCst), 2);
    process::run_as(rig.provider, || connection.disconnect()).expect("disconnect");
    rig.unload();
}
