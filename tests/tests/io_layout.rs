//! FltMgr's parameter block as the model builds it: every parameter at its documented
//! 64-bit offset (fltKernel.h, POINTER_ALIGNMENT honoured), checked byte by byte in what a
//! probe filter's pre-operation receives. The offsets are written out as numbers, not
//! taken from `nt::layout`, so a model that went back to windows-sys's layout (which drops
//! POINTER_ALIGNMENT: Read.ByteOffset at +8, QueryFileInformation.InfoBuffer at +8,
//! QueryDirectory.DirectoryBuffer at +24, …) fails here, and a driver reading at those
//! offsets reads the wrong bytes in every scenario.

use std::sync::Mutex;

use cloudflt_tests::model::files::{self, IoMode, OpenParams};
use cloudflt_tests::model::process::{self, PHCM_APPLICATION_DEFAULT};
use cloudflt_tests::model::{Machine, VolumeConfig};
use cloudflt_tests::probe::{self, Operations};
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FLT_CALLBACK_DATA, FLT_OPERATION_REGISTRATION, FLT_PREOP_CALLBACK_STATUS,
    FLT_PREOP_SUCCESS_NO_CALLBACK, FLT_RELATED_OBJECTS,
};
use windows_sys::Win32::Foundation::STATUS_SUCCESS;

/// sizeof(FLT_IO_PARAMETER_BLOCK) on x64 and arm64.
const IOPB_SIZE: usize = 72;
/// FIELD_OFFSET(FLT_IO_PARAMETER_BLOCK, Parameters).
const PARAMETERS: usize = 24;

const IRP_MJ_CREATE: u8 = 0x00;
const IRP_MJ_READ: u8 = 0x03;
const IRP_MJ_WRITE: u8 = 0x04;
const IRP_MJ_QUERY_INFORMATION: u8 = 0x05;
const IRP_MJ_SET_INFORMATION: u8 = 0x06;
const IRP_MJ_DIRECTORY_CONTROL: u8 = 0x0c;
const IRP_MJ_FILE_SYSTEM_CONTROL: u8 = 0x0d;
const IRP_MJ_QUERY_OPEN: u8 = 0xf9;

const FILE_BASIC_INFORMATION: i32 = 4;
const FILE_STANDARD_INFORMATION: i32 = 5;
const FILE_FULL_DIRECTORY_INFORMATION: i32 = 2;
const FSCTL_GET_REPARSE_POINT: u32 = 0x0009_00A8;

/// The parameter blocks the probe's pre-operations saw, as bytes, in order.
static SEEN: Mutex<Vec<(u8, Vec<u8>)>> = Mutex::new(Vec::new());

unsafe extern "system" fn pre(
    data: *mut FLT_CALLBACK_DATA,
    _: *const FLT_RELATED_OBJECTS,
    _: *mut *mut std::ffi::c_void,
) -> FLT_PREOP_CALLBACK_STATUS {
    // SAFETY: the callback data FltMgr passed; its Iopb points at the parameter block.
    let iopb = unsafe { (*data).Iopb }.cast::<u8>();
    // SAFETY: the block is IOPB_SIZE bytes of plain data, all of them written by FltMgr.
    let bytes = unsafe { std::slice::from_raw_parts(iopb, IOPB_SIZE) }.to_vec();
    SEEN.lock().unwrap().push((bytes[4], bytes));
    FLT_PREOP_SUCCESS_NO_CALLBACK
}

const fn operation(major: u8) -> FLT_OPERATION_REGISTRATION {
    FLT_OPERATION_REGISTRATION {
        MajorFunction: major,
        Flags: 0,
        PreOperation: Some(pre),
        PostOperation: None,
        Reserved1: std::ptr::null_mut(),
    }
}

static OPERATIONS: Operations<9> = Operations([
    operation(IRP_MJ_CREATE),
    operation(IRP_MJ_READ),
    operation(IRP_MJ_WRITE),
    operation(IRP_MJ_QUERY_INFORMATION),
    operation(IRP_MJ_SET_INFORMATION),
    operation(IRP_MJ_DIRECTORY_CONTROL),
    operation(IRP_MJ_FILE_SYSTEM_CONTROL),
    operation(IRP_MJ_QUERY_OPEN),
    FLT_OPERATION_REGISTRATION {
        MajorFunction: 0x80, // IRP_MJ_OPERATION_END
        Flags: 0,
        PreOperation: None,
        PostOperation: None,
        Reserved1: std::ptr::null_mut(),
    },
]);

/// Boots a machine with the probe started; returns it and an application process.
fn probe() -> (Machine, u32) {
    let machine = Machine::boot(&[VolumeConfig::ntfs(1)]);
    SEEN.lock().unwrap().clear();
    probe::start(&OPERATIONS.0);
    let app = machine.spawn_process(
        "\\Device\\HarddiskVolume1\\app.exe",
        PHCM_APPLICATION_DEFAULT,
        false,
    );
    (machine, app)
}

/// The last parameter block the probe saw for `major`, from `Parameters` on.
fn parameters_of(major: u8) -> Vec<u8> {
    let seen = SEEN.lock().unwrap();
    let (_, bytes) = seen
        .iter()
        .rev()
        .find(|(m, _)| *m == major)
        .unwrap_or_else(|| panic!("the probe saw no operation of major {major:#x}"));
    bytes[PARAMETERS..].to_vec()
}

fn u16_at(p: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(p[at..at + 2].try_into().unwrap())
}
fn u32_at(p: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(p[at..at + 4].try_into().unwrap())
}
fn u64_at(p: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(p[at..at + 8].try_into().unwrap())
}

#[test]
fn every_parameter_sits_at_its_documented_offset() {
    let (mut machine, app) = probe();
    process::run_as(app, || {
        let create = OpenParams {
            share: 0x3,                  // FILE_SHARE_READ | FILE_SHARE_WRITE
            attributes: 0x20,            // FILE_ATTRIBUTE_ARCHIVE
            ..OpenParams::read_write(2)  // FILE_CREATE
        };
        let h = files::create("C:\\f.bin", &create).expect("create");
        let c = parameters_of(IRP_MJ_CREATE);
        assert_ne!(u64_at(&c, 0), 0, "SecurityContext at +0");
        assert_eq!(u32_at(&c, 8), (2 << 24) | create.options, "Options at +8");
        assert_eq!(
            u16_at(&c, 16),
            0x20,
            "FileAttributes at +16 (POINTER_ALIGNMENT)"
        );
        assert_eq!(u16_at(&c, 18), 0x3, "ShareAccess at +18");
        assert_eq!(u32_at(&c, 24), 0, "EaLength at +24 (POINTER_ALIGNMENT)");

        let data = vec![0x5a; 512];
        files::write(h, 0x2000, &data, IoMode::NonCached).expect("write");
        let w = parameters_of(IRP_MJ_WRITE);
        assert_eq!(u32_at(&w, 0), 512, "Length at +0");
        assert_eq!(
            u64_at(&w, 8),
            0,
            "Key at +8 (POINTER_ALIGNMENT) and its padding"
        );
        assert_eq!(u64_at(&w, 16), 0x2000, "ByteOffset at +16");
        assert_ne!(u64_at(&w, 24), 0, "WriteBuffer at +24");
        assert_eq!(u64_at(&w, 32), 0, "MdlAddress at +32");

        files::read(h, 0x2000, 512, IoMode::NonCached).expect("read");
        let r = parameters_of(IRP_MJ_READ);
        assert_eq!(u32_at(&r, 0), 512, "Length at +0");
        assert_eq!(
            u64_at(&r, 8),
            0,
            "Key at +8 (POINTER_ALIGNMENT) and its padding"
        );
        assert_eq!(u64_at(&r, 16), 0x2000, "ByteOffset at +16");
        assert_ne!(u64_at(&r, 24), 0, "ReadBuffer at +24");
        assert_eq!(u64_at(&r, 32), 0, "MdlAddress at +32");

        let (status, _) = files::query_information(h, FILE_STANDARD_INFORMATION, 24);
        assert_eq!(status, STATUS_SUCCESS);
        let q = parameters_of(IRP_MJ_QUERY_INFORMATION);
        assert_eq!(u64_at(&q, 0), 24, "Length at +0, then padding");
        assert_eq!(
            u32_at(&q, 8),
            FILE_STANDARD_INFORMATION as u32,
            "class at +8"
        );
        assert_ne!(u64_at(&q, 16), 0, "InfoBuffer at +16");

        let basic = [0u8; 40];
        assert_eq!(
            files::set_information(h, FILE_BASIC_INFORMATION, &basic),
            STATUS_SUCCESS
        );
        let s = parameters_of(IRP_MJ_SET_INFORMATION);
        assert_eq!(u64_at(&s, 0), 40, "Length at +0, then padding");
        assert_eq!(u32_at(&s, 8), FILE_BASIC_INFORMATION as u32, "class at +8");
        assert_eq!(u64_at(&s, 16), 0, "ParentOfTarget at +16");
        assert_ne!(u64_at(&s, 32), 0, "InfoBuffer at +32");

        files::fs_control(h, FSCTL_GET_REPARSE_POINT, &[], 1024);
        let f = parameters_of(IRP_MJ_FILE_SYSTEM_CONTROL);
        assert_eq!(
            u64_at(&f, 0),
            1024,
            "OutputBufferLength at +0, then padding"
        );
        assert_eq!(u64_at(&f, 8), 0, "InputBufferLength at +8, then padding");
        assert_eq!(
            u32_at(&f, 16),
            FSCTL_GET_REPARSE_POINT,
            "FsControlCode at +16"
        );
        assert_ne!(u64_at(&f, 24), 0, "SystemBuffer at +24");
        files::close(h);

        let root = OpenParams {
            access: 0x0010_0001, // FILE_LIST_DIRECTORY | SYNCHRONIZE
            options: 0x21,       // FILE_DIRECTORY_FILE | FILE_SYNCHRONOUS_IO_NONALERT
            ..OpenParams::default()
        };
        let d = files::create("C:\\", &root).expect("open the root");
        let (status, _) = files::query_directory(
            d,
            FILE_FULL_DIRECTORY_INFORMATION,
            Some("f*"),
            true,
            false,
            4096,
        );
        assert_eq!(status, STATUS_SUCCESS);
        let l = parameters_of(IRP_MJ_DIRECTORY_CONTROL);
        assert_eq!(u64_at(&l, 0), 4096, "Length at +0, then padding");
        assert_ne!(u64_at(&l, 8), 0, "FileName at +8");
        assert_eq!(
            u64_at(&l, 16),
            FILE_FULL_DIRECTORY_INFORMATION as u64,
            "FileInformationClass at +16, then padding"
        );
        assert_eq!(u64_at(&l, 24), 0, "FileIndex at +24 (POINTER_ALIGNMENT)");
        assert_ne!(u64_at(&l, 32), 0, "DirectoryBuffer at +32");
        assert_eq!(u64_at(&l, 40), 0, "MdlAddress at +40");
        files::close(d);

        files::query_by_name("C:\\f.bin", FILE_BASIC_INFORMATION, 40);
        let o = parameters_of(IRP_MJ_QUERY_OPEN);
        assert_ne!(u64_at(&o, 8), 0, "FileInformation at +8");
        assert_ne!(u64_at(&o, 16), 0, "Length (a pointer) at +16");
        assert_eq!(
            u32_at(&o, 24),
            FILE_BASIC_INFORMATION as u32,
            "class at +24"
        );
    });
    machine.assert_clean();
}
