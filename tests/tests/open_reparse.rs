//! Open-reparse entries (FltAddOpenReparseEntry): FltMgr links the caller's own entry into
//! the create's ECP list, the file system reads it and sets
//! OPEN_REPARSE_POINT_TAG_ENCOUNTERED in it when a reparse point on the path matches it,
//! and FltRemoveOpenReparseEntry takes the same pointer back. Each check of the model is
//! made to fire by a probe filter that gets the lifetime wrong on purpose; a probe that
//! gets it right sees the flag; the real driver passes.

use std::ffi::c_void;
use std::sync::atomic::{AtomicU8, AtomicU32, AtomicUsize, Ordering};

use cloudflt_tests::model::files::{self, OpenParams};
use cloudflt_tests::model::io::{FltAddOpenReparseEntry, FltRemoveOpenReparseEntry};
use cloudflt_tests::model::pool::{ExAllocatePool2, ExFreePoolWithTag};
use cloudflt_tests::model::process::{self, PHCM_APPLICATION_DEFAULT};
use cloudflt_tests::model::{Machine, Violation, VolumeConfig};
use cloudflt_tests::probe::{self, Operations};
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FLT_CALLBACK_DATA, FLT_OPERATION_REGISTRATION, FLT_POSTOP_CALLBACK_STATUS,
    FLT_POSTOP_FINISHED_PROCESSING, FLT_PREOP_CALLBACK_STATUS, FLT_PREOP_SUCCESS_NO_CALLBACK,
    FLT_PREOP_SUCCESS_WITH_CALLBACK, FLT_RELATED_OBJECTS,
};
use windows_sys::Wdk::Storage::FileSystem::{
    OPEN_REPARSE_LIST_ENTRY, OPEN_REPARSE_POINT_TAG_ENCOUNTERED,
};
use windows_sys::Win32::Foundation::{NTSTATUS, STATUS_IO_REPARSE_TAG_NOT_HANDLED, STATUS_SUCCESS};
use windows_sys::Win32::System::Kernel::LIST_ENTRY;
use windows_sys::core::GUID;

/// What the probe does with its entry.
const NONE: u8 = 0;
/// Adds a local of its pre-create and returns.
const STACK_LOCAL: u8 = 1;
/// Adds a pool entry and frees it before returning.
const FREED_IN_PRE: u8 = 2;
/// Adds a pool entry; post-create frees it without removing it.
const FREED_LINKED_IN_POST: u8 = 3;
/// Adds a pool entry; post-create neither removes nor frees it (the test frees it after).
const NEVER_REMOVED: u8 = 4;
/// Adds a pool entry; post-create removes another pointer first, then does it right.
const REMOVES_OTHER: u8 = 5;
/// Adds a pool entry; post-create records its Flags, removes it, frees it.
const RIGHT: u8 = 6;

static MODE: AtomicU8 = AtomicU8::new(NONE);
/// Flags of the entry as post-create found it (RIGHT).
static SEEN_FLAGS: AtomicU32 = AtomicU32::new(u32::MAX);
/// The entry NEVER_REMOVED left behind.
static LEFT_OVER: AtomicUsize = AtomicUsize::new(0);

/// A non-Microsoft tag of the probe's, with its GUID.
const TEST_TAG: u32 = 0x0000_1234;
const TEST_GUID: GUID = GUID::from_u128(0x6b1d_9b2c_5e4f_4a11_8c3d_2e1f_0a9b_8c7d);
const POOL_TAG: u32 = u32::from_le_bytes(*b"Test");
const FSCTL_SET_REPARSE_POINT: u32 = 0x0009_00A4;

fn entry() -> OPEN_REPARSE_LIST_ENTRY {
    OPEN_REPARSE_LIST_ENTRY {
        OpenReparseListEntry: LIST_ENTRY {
            Flink: std::ptr::null_mut(),
            Blink: std::ptr::null_mut(),
        },
        ReparseTag: TEST_TAG,
        Flags: 0,
        ReparseGuid: TEST_GUID,
        Size: std::mem::size_of::<OPEN_REPARSE_LIST_ENTRY>() as u16,
        RemainingLength: 0,
    }
}

/// A pool entry, as a driver allocates it.
fn pool_entry() -> *mut OPEN_REPARSE_LIST_ENTRY {
    let size = std::mem::size_of::<OPEN_REPARSE_LIST_ENTRY>();
    let p = ExAllocatePool2(0x40, size, POOL_TAG).cast::<OPEN_REPARSE_LIST_ENTRY>();
    assert!(!p.is_null());
    // SAFETY: a fresh allocation of the entry's size, 16-byte aligned.
    unsafe { p.write(entry()) };
    p
}

unsafe extern "system" fn pre_create(
    data: *mut FLT_CALLBACK_DATA,
    objects: *const FLT_RELATED_OBJECTS,
    context: *mut *mut c_void,
) -> FLT_PREOP_CALLBACK_STATUS {
    // SAFETY: the related objects FltMgr passed.
    let filter = unsafe { (*objects).Filter };
    match MODE.load(Ordering::SeqCst) {
        STACK_LOCAL => {
            let local = entry();
            // SAFETY: live callback data of a pre-create; the entry is valid for the call
            // (and only for it: that is the bug).
            let status = unsafe { FltAddOpenReparseEntry(filter, data, &local) };
            assert_eq!(status, STATUS_SUCCESS);
            FLT_PREOP_SUCCESS_NO_CALLBACK
        }
        FREED_IN_PRE => {
            let p = pool_entry();
            // SAFETY: as above, with a pool entry.
            let status = unsafe { FltAddOpenReparseEntry(filter, data, p) };
            assert_eq!(status, STATUS_SUCCESS);
            ExFreePoolWithTag(p.cast(), POOL_TAG);
            FLT_PREOP_SUCCESS_NO_CALLBACK
        }
        FREED_LINKED_IN_POST | NEVER_REMOVED | REMOVES_OTHER | RIGHT => {
            let p = pool_entry();
            // SAFETY: as above, with a pool entry.
            let status = unsafe { FltAddOpenReparseEntry(filter, data, p) };
            assert_eq!(status, STATUS_SUCCESS);
            // SAFETY: FltMgr's completion-context slot.
            unsafe { *context = p.cast() };
            FLT_PREOP_SUCCESS_WITH_CALLBACK
        }
        _ => FLT_PREOP_SUCCESS_NO_CALLBACK,
    }
}

unsafe extern "system" fn post_create(
    data: *mut FLT_CALLBACK_DATA,
    objects: *const FLT_RELATED_OBJECTS,
    context: *const c_void,
    _flags: u32,
) -> FLT_POSTOP_CALLBACK_STATUS {
    // SAFETY: the related objects FltMgr passed.
    let filter = unsafe { (*objects).Filter };
    let p = context.cast_mut().cast::<OPEN_REPARSE_LIST_ENTRY>();
    match MODE.load(Ordering::SeqCst) {
        FREED_LINKED_IN_POST => ExFreePoolWithTag(p.cast(), POOL_TAG),
        NEVER_REMOVED => LEFT_OVER.store(p as usize, Ordering::SeqCst),
        REMOVES_OTHER => {
            let other = entry();
            FltRemoveOpenReparseEntry(filter, data, &other);
            FltRemoveOpenReparseEntry(filter, data, p);
            ExFreePoolWithTag(p.cast(), POOL_TAG);
        }
        RIGHT => {
            // SAFETY: the probe's own live pool entry.
            SEEN_FLAGS.store(unsafe { (*p).Flags }, Ordering::SeqCst);
            FltRemoveOpenReparseEntry(filter, data, p);
            ExFreePoolWithTag(p.cast(), POOL_TAG);
        }
        _ => {}
    }
    FLT_POSTOP_FINISHED_PROCESSING
}

static OPERATIONS: Operations<2> = Operations([
    FLT_OPERATION_REGISTRATION {
        MajorFunction: 0, // IRP_MJ_CREATE
        Flags: 0,
        PreOperation: Some(pre_create),
        PostOperation: Some(post_create),
        Reserved1: std::ptr::null_mut(),
    },
    FLT_OPERATION_REGISTRATION {
        MajorFunction: 0x80, // IRP_MJ_OPERATION_END
        Flags: 0,
        PreOperation: None,
        PostOperation: None,
        Reserved1: std::ptr::null_mut(),
    },
]);

/// A REPARSE_GUID_DATA_BUFFER with `tag` and `guid`.
fn guid_buffer(tag: u32, guid: [u8; 16], data: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&tag.to_le_bytes());
    b.extend_from_slice(&(data.len() as u16).to_le_bytes());
    b.extend_from_slice(&0u16.to_le_bytes());
    b.extend_from_slice(&guid);
    b.extend_from_slice(data);
    b
}

fn guid_bytes(g: &GUID) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..4].copy_from_slice(&g.data1.to_le_bytes());
    b[4..6].copy_from_slice(&g.data2.to_le_bytes());
    b[6..8].copy_from_slice(&g.data3.to_le_bytes());
    b[8..].copy_from_slice(&g.data4);
    b
}

/// A file carrying `tag` (with `guid`), made before any filter is loaded.
fn reparse_point(app: u32, path: &str, tag: u32, guid: [u8; 16]) {
    process::run_as(app, || {
        let h = files::create(path, &OpenParams::read_write(2)).expect("create");
        let (status, _) = files::fs_control(
            h,
            FSCTL_SET_REPARSE_POINT,
            &guid_buffer(tag, guid, b"data"),
            0,
        );
        assert_eq!(status, STATUS_SUCCESS);
        files::close(h);
    });
}

/// Boots a machine with `C:\tagged` (the probe's tag) and `C:\plain`, then starts the
/// probe in `mode`.
fn probe(mode: u8) -> (Machine, u32) {
    let machine = Machine::boot(&[VolumeConfig::ntfs(1)]);
    MODE.store(NONE, Ordering::SeqCst);
    SEEN_FLAGS.store(u32::MAX, Ordering::SeqCst);
    let app = machine.spawn_process(
        "\\Device\\HarddiskVolume1\\app.exe",
        PHCM_APPLICATION_DEFAULT,
        false,
    );
    reparse_point(app, "C:\\tagged", TEST_TAG, guid_bytes(&TEST_GUID));
    process::run_as(app, || {
        let h = files::create("C:\\plain", &OpenParams::read_write(2)).expect("create");
        files::close(h);
    });
    probe::start(&OPERATIONS.0);
    MODE.store(mode, Ordering::SeqCst);
    (machine, app)
}

fn open(app: u32, path: &str) -> Result<files::Handle, NTSTATUS> {
    process::run_as(app, || files::create(path, &OpenParams::default()))
}

fn fired(violations: &[Violation], api: &str, needle: &str) -> bool {
    violations
        .iter()
        .any(|v| v.api == api && v.message.contains(needle))
}

#[test]
fn an_entry_on_the_pre_operations_stack_is_reported_when_the_file_system_reads_it() {
    let (mut machine, app) = probe(STACK_LOCAL);
    let _ = open(app, "C:\\plain");
    let v = machine.take_violations();
    assert!(
        fired(
            &v,
            "FltAddOpenReparseEntry",
            "is not a live pool allocation of the driver when the file system reads it"
        ),
        "{v:?}"
    );
}

#[test]
fn an_entry_freed_while_linked_is_reported() {
    let (mut machine, app) = probe(FREED_IN_PRE);
    let _ = open(app, "C:\\plain");
    let v = machine.take_violations();
    assert!(
        fired(&v, "ExFreePoolWithTag", "still linked into a create"),
        "{v:?}"
    );
    // The freed block is then what the file system finds.
    assert!(
        fired(&v, "FltAddOpenReparseEntry", "not a live pool allocation"),
        "{v:?}"
    );
}

#[test]
fn freeing_an_entry_in_post_create_without_removing_it_is_reported() {
    let (mut machine, app) = probe(FREED_LINKED_IN_POST);
    let h = open(app, "C:\\tagged").expect("the entry's tag opens");
    files::close(h);
    let v = machine.take_violations();
    assert!(
        fired(
            &v,
            "ExFreePoolWithTag",
            "FltRemoveOpenReparseEntry must take it out first"
        ),
        "{v:?}"
    );
}

#[test]
fn an_entry_never_removed_is_reported_when_the_create_completes() {
    let (mut machine, app) = probe(NEVER_REMOVED);
    let h = open(app, "C:\\plain").expect("open");
    files::close(h);
    let v = machine.take_violations();
    assert!(
        fired(
            &v,
            "FltAddOpenReparseEntry",
            "1 open-reparse entry still linked when the create completed"
        ),
        "{v:?}"
    );
    // Freed once its create is over: no longer linked, so nothing more to report.
    ExFreePoolWithTag(LEFT_OVER.load(Ordering::SeqCst) as *mut c_void, POOL_TAG);
    machine.assert_clean();
}

#[test]
fn removing_an_entry_that_was_not_added_is_reported() {
    let (mut machine, app) = probe(REMOVES_OTHER);
    let h = open(app, "C:\\plain").expect("open");
    files::close(h);
    let v = machine.take_violations();
    assert_eq!(v.len(), 1, "{v:?}");
    assert!(
        fired(
            &v,
            "FltRemoveOpenReparseEntry",
            "is not an entry FltAddOpenReparseEntry added to this create"
        ),
        "{v:?}"
    );
}

#[test]
fn the_file_system_marks_the_entry_its_reparse_point_matched() {
    let (mut machine, app) = probe(RIGHT);
    let h = open(app, "C:\\tagged").expect("the entry's tag opens as itself");
    files::close(h);
    assert_eq!(
        SEEN_FLAGS.load(Ordering::SeqCst) & OPEN_REPARSE_POINT_TAG_ENCOUNTERED,
        OPEN_REPARSE_POINT_TAG_ENCOUNTERED
    );
    let h = open(app, "C:\\plain").expect("open");
    files::close(h);
    assert_eq!(
        SEEN_FLAGS.load(Ordering::SeqCst),
        0,
        "no reparse point met, no flag"
    );
    machine.assert_clean();
    assert_eq!(machine.pool_bytes(*b"Test"), 0);
}

#[test]
fn the_driver_keeps_its_entry_in_pool_until_post_create_removes_and_frees_it() {
    use cloudflt_proto::reparse::{GUID, TAG};
    let mut machine = Machine::boot(&[VolumeConfig::ntfs(1)]);
    let app = machine.spawn_process(
        "\\Device\\HarddiskVolume1\\app.exe",
        PHCM_APPLICATION_DEFAULT,
        false,
    );
    // NTFS alone accepts cloudflt's tag from anyone (tag_guard.rs).
    reparse_point(app, "C:\\placeholder", TAG, GUID);
    assert_eq!(
        open(app, "C:\\placeholder").err(),
        Some(STATUS_IO_REPARSE_TAG_NOT_HANDLED),
        "without the driver nobody handles the tag"
    );
    assert_eq!(
        machine.load_driver(cloudflt_driver::nt::driver_entry),
        STATUS_SUCCESS
    );
    let h = open(app, "C:\\placeholder").expect("the entry makes NTFS open it as itself");
    assert_eq!(
        machine.pool_bytes(*b"CFor"),
        0,
        "post-create removed and freed the entry"
    );
    files::close(h);
    let h = open(app, "C:\\placeholder").expect("and again");
    files::close(h);
    machine.assert_clean();
    assert_eq!(machine.unload_driver(), STATUS_SUCCESS);
    machine.assert_clean();
}

#[test]
fn without_pool_for_its_entry_the_driver_lets_the_create_go_down_without_one() {
    use cloudflt_proto::reparse::{GUID, TAG};
    let mut machine = Machine::boot(&[VolumeConfig::ntfs(1)]);
    let app = machine.spawn_process(
        "\\Device\\HarddiskVolume1\\app.exe",
        PHCM_APPLICATION_DEFAULT,
        false,
    );
    reparse_point(app, "C:\\placeholder", TAG, GUID);
    assert_eq!(
        machine.load_driver(cloudflt_driver::nt::driver_entry),
        STATUS_SUCCESS
    );
    // The entry is the create's first allocation: without it NTFS stops at the tag, as
    // it does without the driver, and nothing is leaked.
    machine.fail_allocation(1);
    assert_eq!(
        open(app, "C:\\placeholder").err(),
        Some(STATUS_IO_REPARSE_TAG_NOT_HANDLED)
    );
    assert_eq!(machine.pool_bytes(*b"CFor"), 0);
    let h = open(app, "C:\\placeholder").expect("with pool back, it opens");
    files::close(h);
    machine.assert_clean();
    assert_eq!(machine.unload_driver(), STATUS_SUCCESS);
    machine.assert_clean();
}
