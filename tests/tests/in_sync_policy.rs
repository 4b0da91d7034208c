//! The sync root's in-sync policy (cfapi's CF_INSYNC_POLICY), with the real driver and a
//! provider written with the real library: an application's change of an attribute or
//! time the policy tracks takes a file or directory placeholder out of sync and counts a
//! change, in the reparse data (what the provider reads back with `info`); a change the
//! policy does not track, or one that sets a value to what it already is, leaves it in
//! sync; PRESERVE_INSYNC_FOR_SYNC_ENGINE lets the provider's own process change them.
//! Data changes clear in-sync under every policy (the scenarios cover those).

use std::time::Duration;

use cloudflt::{
    Connection, FetchRequest, HydrationPolicy, InSyncPolicy, PlaceholderSpec, SyncProvider,
    SyncRoot, SyncRootConfig, Transfer,
};
use cloudflt_tests::model::files::{self, OpenParams};
use cloudflt_tests::model::process;
use cloudflt_tests::rig::{ROOT, Rig};
use windows_sys::Wdk::Storage::FileSystem::{FILE_DIRECTORY_FILE, FileBasicInformation};
use windows_sys::Win32::Foundation::{NTSTATUS, STATUS_SUCCESS};

const FILE_ATTRIBUTE_READONLY: u32 = 0x1;
const FILE_ATTRIBUTE_HIDDEN: u32 = 0x2;
const FILE_ATTRIBUTE_NORMAL: u32 = 0x80;
const FILE_ATTRIBUTE_DIRECTORY: u32 = 0x10;

/// Serves no data: these tests never read.
struct Idle;

impl SyncProvider for Idle {
    fn fetch_data(&self, _: FetchRequest, _: Transfer) {}
}

struct World {
    rig: Rig,
    provider: u32,
    app: u32,
    connection: Connection,
}

/// A machine with the driver, a provider connected with `policy`, and in-sync
/// placeholders `a.bin`, `b.bin` and directory `docs`.
fn world(policy: InSyncPolicy) -> World {
    let rig = Rig::new();
    let (provider, app) = (rig.provider, rig.app);
    let connection = process::run_as(provider, || {
        let config = SyncRootConfig::new(ROOT, "policy", "1")
            .hydration(HydrationPolicy::Partial)
            .in_sync(policy)
            .timeout(Duration::from_secs(30));
        let connection = SyncRoot::connect(config, Idle).expect("connect");
        let made = connection.create_placeholders(&[
            PlaceholderSpec::file("a.bin", 10_000)
                .identity(b"a".to_vec())
                .in_sync(true),
            PlaceholderSpec::file("b.bin", 10_000)
                .identity(b"b".to_vec())
                .in_sync(true),
            PlaceholderSpec::directory("docs")
                .identity(b"d".to_vec())
                .in_sync(true),
        ]);
        assert!(made.iter().all(Result::is_ok), "{made:?}");
        connection
    });
    World {
        rig,
        provider,
        app,
        connection,
    }
}

impl World {
    /// (in sync, change counter) as the provider reads them.
    fn state(&self, path: &str) -> (bool, u64) {
        let info = process::run_as(self.provider, || self.connection.info(path))
            .expect("the placeholder's info");
        (info.in_sync, info.changes)
    }

    /// SetFileInformationByHandle(FileBasicInfo) by `pid` on `path`: the four times
    /// (creation, last access, last write, change) and the attributes.
    fn set_basic(&self, pid: u32, path: &str, times: [i64; 4], attributes: u32) -> NTSTATUS {
        let directory = attributes & FILE_ATTRIBUTE_DIRECTORY != 0 || path.ends_with("docs");
        process::run_as(pid, || {
            let h = files::create(
                &format!("{ROOT}\\{path}"),
                &OpenParams {
                    access: 0x0010_0000 | 0x100 | 0x80, // SYNCHRONIZE | FILE_WRITE_ATTRIBUTES | FILE_READ_ATTRIBUTES
                    options: if directory { FILE_DIRECTORY_FILE } else { 0 },
                    ..OpenParams::default()
                },
            )
            .expect("open for attributes");
            let mut input = Vec::with_capacity(40);
            for t in times {
                input.extend_from_slice(&t.to_le_bytes());
            }
            input.extend_from_slice(&attributes.to_le_bytes());
            input.extend_from_slice(&0u32.to_le_bytes());
            let status = files::set_information(h, FileBasicInformation, &input);
            files::close(h);
            status
        })
    }

    /// The file's current basic information, read below every filter.
    fn basic(&self, path: &str) -> ([i64; 4], u32) {
        let node = files::with_volume(&format!("{ROOT}\\{path}"), |fs, rel| {
            fs.node(fs.lookup(rel)?)
        })
        .unwrap()
        .expect("the file");
        (node.times, node.attributes)
    }

    fn finish(self) {
        process::run_as(self.provider, || self.connection.disconnect()).expect("disconnect");
        self.rig.unload();
    }
}

#[test]
fn a_tracked_attribute_change_takes_a_file_out_of_sync_and_an_untracked_one_does_not() {
    let w = world(InSyncPolicy::TRACK_FILE_READONLY_ATTRIBUTE);
    let (in_sync, before) = w.state("a.bin");
    assert!(in_sync);
    // Hidden is not tracked: the file stays in sync, its counter unmoved.
    assert_eq!(
        w.set_basic(w.app, "a.bin", [0; 4], FILE_ATTRIBUTE_HIDDEN),
        STATUS_SUCCESS
    );
    assert_eq!(w.state("a.bin"), (true, before));
    // Hidden again, read-only unchanged (clear): nothing tracked moved.
    assert_eq!(
        w.set_basic(w.app, "a.bin", [0; 4], FILE_ATTRIBUTE_HIDDEN),
        STATUS_SUCCESS
    );
    assert_eq!(w.state("a.bin"), (true, before));
    // Read-only is: out of sync, one change further; the attribute is set.
    assert_eq!(
        w.set_basic(
            w.app,
            "a.bin",
            [0; 4],
            FILE_ATTRIBUTE_HIDDEN | FILE_ATTRIBUTE_READONLY
        ),
        STATUS_SUCCESS
    );
    let (in_sync, after) = w.state("a.bin");
    assert!(!in_sync, "read-only set by the user: not in sync");
    assert_ne!(after, before, "the change counter moved");
    assert_ne!(w.basic("a.bin").1 & FILE_ATTRIBUTE_READONLY, 0);
    // The other file, untouched, is still in sync.
    assert!(w.state("b.bin").0);
    // Clearing read-only is a change too (after the provider marks it in sync again).
    process::run_as(w.provider, || w.connection.set_in_sync("a.bin", true, None))
        .expect("in sync again");
    assert!(w.state("a.bin").0);
    assert_eq!(
        w.set_basic(w.app, "a.bin", [0; 4], FILE_ATTRIBUTE_NORMAL),
        STATUS_SUCCESS
    );
    assert!(!w.state("a.bin").0, "read-only cleared: not in sync");
    w.finish();
}

#[test]
fn without_a_policy_attributes_and_times_leave_a_file_in_sync() {
    let w = world(InSyncPolicy::NONE);
    let (_, before) = w.state("a.bin");
    let (times, _) = w.basic("a.bin");
    assert_eq!(
        w.set_basic(
            w.app,
            "a.bin",
            [times[0] + 1, 0, times[2] + 1, 0],
            FILE_ATTRIBUTE_READONLY | FILE_ATTRIBUTE_HIDDEN
        ),
        STATUS_SUCCESS
    );
    assert_eq!(w.state("a.bin"), (true, before));
    w.finish();
}

#[test]
fn a_new_last_write_time_is_tracked_the_same_one_is_not() {
    let w = world(InSyncPolicy::TRACK_FILE_LAST_WRITE_TIME);
    let (times, _) = w.basic("a.bin");
    let (_, before) = w.state("a.bin");
    // The time it already has, and a new creation time (not tracked): in sync still.
    assert_eq!(
        w.set_basic(w.app, "a.bin", [times[0] + 7, 0, times[2], 0], 0),
        STATUS_SUCCESS
    );
    assert_eq!(w.state("a.bin"), (true, before));
    // -1 (stop updating) is no change either.
    assert_eq!(
        w.set_basic(w.app, "a.bin", [0, 0, -1, 0], 0),
        STATUS_SUCCESS
    );
    assert_eq!(w.state("a.bin"), (true, before));
    assert_eq!(
        w.set_basic(w.app, "a.bin", [0, 0, times[2] + 10_000_000, 0], 0),
        STATUS_SUCCESS
    );
    assert!(!w.state("a.bin").0, "a new last-write time: not in sync");
    assert_eq!(w.basic("a.bin").0[2], times[2] + 10_000_000);
    w.finish();
}

#[test]
fn directory_bits_track_directory_placeholders_and_file_bits_do_not() {
    let w = world(
        InSyncPolicy::TRACK_FILE_HIDDEN_ATTRIBUTE
            .union(InSyncPolicy::TRACK_DIRECTORY_READONLY_ATTRIBUTE),
    );
    let (in_sync, before) = w.state("docs");
    assert!(in_sync);
    // Hidden is tracked for files only.
    assert_eq!(
        w.set_basic(
            w.app,
            "docs",
            [0; 4],
            FILE_ATTRIBUTE_DIRECTORY | FILE_ATTRIBUTE_HIDDEN
        ),
        STATUS_SUCCESS
    );
    assert_eq!(w.state("docs"), (true, before));
    assert_eq!(
        w.set_basic(
            w.app,
            "docs",
            [0; 4],
            FILE_ATTRIBUTE_DIRECTORY | FILE_ATTRIBUTE_HIDDEN | FILE_ATTRIBUTE_READONLY
        ),
        STATUS_SUCCESS
    );
    let (in_sync, after) = w.state("docs");
    assert!(!in_sync, "read-only set on the directory: not in sync");
    assert_ne!(after, before);
    w.finish();
}

#[test]
fn the_providers_own_changes_clear_in_sync_unless_it_asked_to_be_exempt() {
    let w = world(InSyncPolicy::TRACK_FILE_READONLY_ATTRIBUTE);
    assert_eq!(
        w.set_basic(w.provider, "a.bin", [0; 4], FILE_ATTRIBUTE_READONLY),
        STATUS_SUCCESS
    );
    assert!(!w.state("a.bin").0, "the sync engine's change, not exempt");
    w.finish();

    let w = world(
        InSyncPolicy::TRACK_FILE_READONLY_ATTRIBUTE
            .union(InSyncPolicy::PRESERVE_INSYNC_FOR_SYNC_ENGINE),
    );
    let (_, before) = w.state("a.bin");
    assert_eq!(
        w.set_basic(w.provider, "a.bin", [0; 4], FILE_ATTRIBUTE_READONLY),
        STATUS_SUCCESS
    );
    assert_eq!(w.state("a.bin"), (true, before), "exempt");
    // Another process's change still counts.
    assert_eq!(
        w.set_basic(w.app, "b.bin", [0; 4], FILE_ATTRIBUTE_READONLY),
        STATUS_SUCCESS
    );
    assert!(!w.state("b.bin").0);
    w.finish();
}

#[test]
fn a_directorys_last_write_time_is_tracked_by_its_own_bit() {
    // TRACK_DIRECTORY_LAST_WRITE_TIME is 0x200, not the file bit 0x100 shifted as the
    // attribute and creation-time bits are.
    let w = world(InSyncPolicy::TRACK_DIRECTORY_LAST_WRITE_TIME);
    let (times, _) = w.basic("docs");
    let (_, before) = w.state("a.bin");
    // The file bit is not set: a file's new last-write time leaves it in sync.
    assert_eq!(
        w.set_basic(w.app, "a.bin", [0, 0, times[2] + 10_000_000, 0], 0),
        STATUS_SUCCESS
    );
    assert_eq!(w.state("a.bin"), (true, before));
    assert_eq!(
        w.set_basic(w.app, "docs", [0, 0, times[2] + 10_000_000, 0], 0),
        STATUS_SUCCESS
    );
    assert!(
        !w.state("docs").0,
        "a directory's new last-write time: not in sync"
    );
    w.finish();
}
