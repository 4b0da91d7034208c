//! Directory listings reach filters through the caller's user-mode buffer (METHOD_NEITHER).
//! A post-operation that edits one must lock it (FltLockUserBuffer) and write through the
//! MDL's system mapping: the model delivers only those writes to the caller and reports a
//! write through the user-mode address, which kernel code cannot guard.

use std::sync::atomic::{AtomicU8, Ordering};

use cloudflt_driver::nt::layout::FLT_IO_PARAMETER_BLOCK;
use cloudflt_tests::model::files::{self, OpenParams};
use cloudflt_tests::model::fltio::{FltLockUserBuffer, MmMapLockedPagesSpecifyCache};
use cloudflt_tests::model::process::{self, PHCM_APPLICATION_DEFAULT};
use cloudflt_tests::model::{Machine, VolumeConfig};
use cloudflt_tests::probe::{self, Operations};
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FLT_CALLBACK_DATA, FLT_OPERATION_REGISTRATION, FLT_POSTOP_CALLBACK_STATUS,
    FLT_POSTOP_FINISHED_PROCESSING, FLT_PREOP_CALLBACK_STATUS, FLT_PREOP_SUCCESS_NO_CALLBACK,
    FLT_PREOP_SYNCHRONIZE, FLT_RELATED_OBJECTS,
};
use windows_sys::Win32::Foundation::{STATUS_NOT_SUPPORTED, STATUS_SUCCESS};

/// The post-operation writes FileIndex through the caller's user-mode address.
const THROUGH_USER_ADDRESS: u8 = 0;
/// It maps the MDL and writes FileIndex through the system address.
const THROUGH_MDL: u8 = 1;
/// It maps the MDL twice.
const MAP_TWICE: u8 = 2;

static MODE: AtomicU8 = AtomicU8::new(THROUGH_MDL);

/// What the probe writes at FileIndex (offset 4) of the first entry.
const MARK: u32 = 0xC10D_F17E;
/// FileDirectoryInformation.
const FILE_DIRECTORY_INFORMATION: i32 = 1;

unsafe extern "system" fn pre_directory(
    data: *mut FLT_CALLBACK_DATA,
    _: *const FLT_RELATED_OBJECTS,
    _: *mut *mut std::ffi::c_void,
) -> FLT_PREOP_CALLBACK_STATUS {
    assert_eq!(FltLockUserBuffer(data), STATUS_SUCCESS);
    FLT_PREOP_SYNCHRONIZE
}

unsafe extern "system" fn post_directory(
    data: *mut FLT_CALLBACK_DATA,
    _: *const FLT_RELATED_OBJECTS,
    _: *const std::ffi::c_void,
    _: u32,
) -> FLT_POSTOP_CALLBACK_STATUS {
    // SAFETY: the callback data FltMgr passed.
    let iopb = unsafe { (*data).Iopb }.cast::<FLT_IO_PARAMETER_BLOCK>();
    // SAFETY: its parameter block.
    let parameters = unsafe { (*iopb).Parameters };
    // SAFETY: IRP_MJ_DIRECTORY_CONTROL: the union holds the directory-control parameters.
    let control = unsafe { parameters.DirectoryControl };
    // SAFETY: IRP_MN_QUERY_DIRECTORY's member.
    let q = unsafe { control.QueryDirectory };
    let target = match MODE.load(Ordering::SeqCst) {
        THROUGH_USER_ADDRESS => q.DirectoryBuffer,
        mode => {
            // SAFETY: the MDL FltLockUserBuffer built for this operation.
            let va = unsafe {
                MmMapLockedPagesSpecifyCache(q.MdlAddress, 0, 1, std::ptr::null(), 0, 16)
            };
            if mode == MAP_TWICE {
                // SAFETY: as above.
                unsafe {
                    MmMapLockedPagesSpecifyCache(q.MdlAddress, 0, 1, std::ptr::null(), 0, 16)
                };
            }
            va
        }
    };
    assert!(!target.is_null());
    // SAFETY: FileIndex of the first entry, inside the Length-byte buffer.
    let file_index = unsafe { target.cast::<u8>().add(4) }.cast::<u32>();
    // SAFETY: as above.
    unsafe { file_index.write_unaligned(MARK) };
    FLT_POSTOP_FINISHED_PROCESSING
}

/// What FltLockUserBuffer answered a query-information pre-operation.
static QUERY_LOCK_STATUS: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

unsafe extern "system" fn pre_query_information(
    data: *mut FLT_CALLBACK_DATA,
    _: *const FLT_RELATED_OBJECTS,
    _: *mut *mut std::ffi::c_void,
) -> FLT_PREOP_CALLBACK_STATUS {
    QUERY_LOCK_STATUS.store(FltLockUserBuffer(data), Ordering::SeqCst);
    FLT_PREOP_SUCCESS_NO_CALLBACK
}

static OPERATIONS: Operations<3> = Operations([
    FLT_OPERATION_REGISTRATION {
        MajorFunction: 5, // IRP_MJ_QUERY_INFORMATION
        Flags: 0,
        PreOperation: Some(pre_query_information),
        PostOperation: None,
        Reserved1: std::ptr::null_mut(),
    },
    FLT_OPERATION_REGISTRATION {
        MajorFunction: 12, // IRP_MJ_DIRECTORY_CONTROL
        Flags: 0,
        PreOperation: Some(pre_directory),
        PostOperation: Some(post_directory),
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

/// Lists `C:\d` (one file) as an application with the probe in `mode`; the first entry's
/// FileIndex as the caller sees it.
fn list_with(mode: u8) -> (Machine, u32) {
    let machine = Machine::boot(&[VolumeConfig::ntfs(1)]);
    MODE.store(mode, Ordering::SeqCst);
    probe::start(&OPERATIONS.0);
    let app = machine.spawn_process(
        "\\Device\\HarddiskVolume1\\app.exe",
        PHCM_APPLICATION_DEFAULT,
        false,
    );
    let index = process::run_as(app, || {
        let dir = OpenParams {
            access: 0x0010_0001, // FILE_LIST_DIRECTORY | SYNCHRONIZE
            disposition: 2,      // FILE_CREATE
            options: 0x21,       // FILE_DIRECTORY_FILE | FILE_SYNCHRONOUS_IO_NONALERT
            ..OpenParams::default()
        };
        let d = files::create("C:\\d", &dir).expect("create C:\\d");
        let f = files::create("C:\\d\\f.txt", &OpenParams::read_write(2)).expect("create f.txt");
        files::close(f);
        let (status, buffer) =
            files::query_directory(d, FILE_DIRECTORY_INFORMATION, None, true, true, 4096);
        files::close(d);
        assert_eq!(status, STATUS_SUCCESS);
        u32::from_le_bytes(buffer[4..8].try_into().expect("4 bytes"))
    });
    (machine, index)
}

#[test]
fn writes_through_the_mapped_mdl_reach_the_caller() {
    let (mut machine, index) = list_with(THROUGH_MDL);
    assert_eq!(index, MARK);
    machine.assert_clean();
}

#[test]
fn a_write_through_the_user_address_in_a_post_operation_is_reported() {
    let (mut machine, _) = list_with(THROUGH_USER_ADDRESS);
    let v = machine.take_violations();
    assert!(
        v.iter()
            .any(|v| v.to_string().contains("through its user-mode address")),
        "{v:?}"
    );
}

#[test]
fn mapping_an_mdl_twice_is_reported() {
    let (mut machine, index) = list_with(MAP_TWICE);
    assert_eq!(index, MARK);
    let v = machine.take_violations();
    assert!(
        v.iter().any(|v| v.to_string().contains("already mapped")),
        "{v:?}"
    );
}

#[test]
fn locking_a_buffer_the_model_builds_no_mdl_for_is_refused_and_reported() {
    let (mut machine, _) = list_with(THROUGH_MDL);
    let app = machine.spawn_process(
        "\\Device\\HarddiskVolume1\\app2.exe",
        PHCM_APPLICATION_DEFAULT,
        false,
    );
    process::run_as(app, || {
        let f = files::create("C:\\d\\f.txt", &OpenParams::read_write(1)).expect("open f.txt");
        // FileAttributeTagInformation: no fast-I/O form, so the query is an IRP.
        let _ = files::query_information(f, 35, 8);
        files::close(f);
    });
    assert_eq!(
        QUERY_LOCK_STATUS.load(Ordering::SeqCst),
        STATUS_NOT_SUPPORTED
    );
    let v = machine.take_violations();
    assert!(
        v.iter()
            .any(|v| v.to_string().contains("the model builds MDLs for")),
        "{v:?}"
    );
}
