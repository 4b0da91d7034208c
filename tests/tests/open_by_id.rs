//! Opens by file id (FILE_OPEN_BY_FILE_ID) through FltCreateFileEx2, as a filter issues
//! them: the name forms the I/O manager takes, what NTFS answers, and where in the stack
//! the create starts. A probe filter counts the creates its pre-create sees; the volume
//! name helpers an open by id needs (FltGetVolumeFromInstance, FltGetVolumeName) are
//! checked here too.

use std::ffi::c_void;
use std::sync::atomic::{AtomicIsize, AtomicUsize, Ordering};

use cloudflt_driver::nt::layout::FLT_IO_PARAMETER_BLOCK;
use cloudflt_tests::model::files::{self, Handle, IoMode, OpenParams};
use cloudflt_tests::model::fltio::{
    FltClose, FltCreateFileEx2, FltQueryInformationFile, FltReadFile, ObfDereferenceObject,
};
use cloudflt_tests::model::fltmgr::{
    FltGetVolumeFromInstance, FltGetVolumeName, FltObjectDereference,
};
use cloudflt_tests::model::process::{self, PHCM_APPLICATION_DEFAULT};
use cloudflt_tests::model::{Machine, VolumeConfig};
use cloudflt_tests::probe::{self, Operations};
use windows_sys::Wdk::Foundation::{FILE_OBJECT, OBJECT_ATTRIBUTES};
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FLT_CALLBACK_DATA, FLT_OPERATION_REGISTRATION, FLT_PREOP_CALLBACK_STATUS,
    FLT_PREOP_SUCCESS_NO_CALLBACK, FLT_RELATED_OBJECTS, PFLT_INSTANCE, PFLT_VOLUME,
};
use windows_sys::Wdk::Storage::FileSystem::{
    FILE_DIRECTORY_FILE, FILE_NON_DIRECTORY_FILE, FILE_OPEN, FILE_OPEN_BY_FILE_ID,
    FILE_OPEN_REPARSE_POINT, FILE_SYNCHRONOUS_IO_NONALERT, FileRenameInformation,
};
use windows_sys::Win32::Foundation::{
    HANDLE, NTSTATUS, OBJ_KERNEL_HANDLE, STATUS_BUFFER_TOO_SMALL, STATUS_INVALID_HANDLE,
    STATUS_INVALID_PARAMETER, STATUS_SUCCESS, UNICODE_STRING,
};
use windows_sys::Win32::System::IO::IO_STATUS_BLOCK;

static INSTANCE: AtomicIsize = AtomicIsize::new(0);
/// Creates the probe's pre-create saw, and of those the ones by file id.
static CREATES: AtomicUsize = AtomicUsize::new(0);
static BY_ID_CREATES: AtomicUsize = AtomicUsize::new(0);

/// A non-Microsoft tag, in a REPARSE_GUID_DATA_BUFFER with a test GUID.
const TEST_TAG: u32 = 0x0000_1234;
const FSCTL_SET_REPARSE_POINT: u32 = 0x0009_00A4;
const FILE_INTERNAL_INFORMATION: i32 = 6;
const FILE_STANDARD_INFORMATION: i32 = 5;
const FILE_ATTRIBUTE_TAG_INFORMATION: i32 = 35;
/// FILE_READ_DATA | FILE_READ_ATTRIBUTES.
const READ: u32 = 0x1 | 0x80;

unsafe extern "system" fn setup(
    objects: *const FLT_RELATED_OBJECTS,
    _flags: u32,
    _device_type: u32,
    _filesystem: i32,
) -> NTSTATUS {
    // SAFETY: the related objects FltMgr passed.
    INSTANCE.store(unsafe { (*objects).Instance }, Ordering::SeqCst);
    STATUS_SUCCESS
}

unsafe extern "system" fn pre_create(
    data: *mut FLT_CALLBACK_DATA,
    _objects: *const FLT_RELATED_OBJECTS,
    _context: *mut *mut c_void,
) -> FLT_PREOP_CALLBACK_STATUS {
    CREATES.fetch_add(1, Ordering::SeqCst);
    // SAFETY: the callback data of a create, live for the callback.
    let iopb = unsafe { (*data).Iopb };
    // SAFETY: FltMgr's parameter block, laid out as FLT_IO_PARAMETER_BLOCK.
    let iopb = unsafe { &*iopb.cast::<FLT_IO_PARAMETER_BLOCK>() };
    // SAFETY: a create's parameters.
    if unsafe { iopb.Parameters.Create.Options } & FILE_OPEN_BY_FILE_ID != 0 {
        BY_ID_CREATES.fetch_add(1, Ordering::SeqCst);
    }
    FLT_PREOP_SUCCESS_NO_CALLBACK
}

static OPERATIONS: Operations<2> = Operations([
    FLT_OPERATION_REGISTRATION {
        MajorFunction: 0, // IRP_MJ_CREATE
        Flags: 0,
        PreOperation: Some(pre_create),
        PostOperation: None,
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

/// A machine with the probe filter attached to C: and an application process.
fn probe() -> (Machine, u32) {
    let machine = Machine::boot(&[VolumeConfig::ntfs(1)]);
    CREATES.store(0, Ordering::SeqCst);
    BY_ID_CREATES.store(0, Ordering::SeqCst);
    probe::start_with(&OPERATIONS.0, Some(setup));
    let app = machine.spawn_process(
        "\\Device\\HarddiskVolume1\\app.exe",
        PHCM_APPLICATION_DEFAULT,
        false,
    );
    (machine, app)
}

fn instance() -> PFLT_INSTANCE {
    INSTANCE.load(Ordering::SeqCst)
}

fn creates() -> (usize, usize) {
    (
        CREATES.load(Ordering::SeqCst),
        BY_ID_CREATES.load(Ordering::SeqCst),
    )
}

/// `prefix` followed by the id's 8 bytes, as the units of a UNICODE_STRING.
fn id_name(prefix: &str, id: u64) -> Vec<u16> {
    let mut units: Vec<u16> = prefix.encode_utf16().collect();
    units.extend(
        id.to_le_bytes()
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]])),
    );
    units
}

/// A kernel handle and referenced file object from FltCreateFileEx2.
struct Opened {
    handle: HANDLE,
    fo: *mut FILE_OBJECT,
}

impl Drop for Opened {
    fn drop(&mut self) {
        ObfDereferenceObject(self.fo.cast());
        FltClose(self.handle);
    }
}

/// FltCreateFileEx2 of `name` (relative to `root`, when not null) with `options`,
/// issued below `below` (0: from the top of the stack).
fn create(
    below: PFLT_INSTANCE,
    root: HANDLE,
    name: &[u16],
    access: u32,
    options: u32,
) -> Result<Opened, NTSTATUS> {
    let unicode = UNICODE_STRING {
        Length: (name.len() * 2) as u16,
        MaximumLength: (name.len() * 2) as u16,
        Buffer: name.as_ptr().cast_mut(),
    };
    let object = OBJECT_ATTRIBUTES {
        Length: std::mem::size_of::<OBJECT_ATTRIBUTES>() as u32,
        RootDirectory: root,
        ObjectName: &unicode,
        Attributes: OBJ_KERNEL_HANDLE,
        SecurityDescriptor: std::ptr::null(),
        SecurityQualityOfService: std::ptr::null(),
    };
    let mut handle: HANDLE = std::ptr::null_mut();
    let mut fo: *mut FILE_OBJECT = std::ptr::null_mut();
    // SAFETY: IO_STATUS_BLOCK is plain data; zero is valid.
    let mut iosb: IO_STATUS_BLOCK = unsafe { std::mem::zeroed() };
    // SAFETY: every pointer outlives the call.
    let status = unsafe {
        FltCreateFileEx2(
            probe::filter(),
            below,
            &mut handle,
            &mut fo,
            access | 0x0010_0000,
            &object,
            &mut iosb,
            std::ptr::null(),
            0,
            0x7,
            FILE_OPEN,
            options | FILE_SYNCHRONOUS_IO_NONALERT,
            std::ptr::null(),
            0,
            0,
            std::ptr::null(),
        )
    };
    if status == STATUS_SUCCESS {
        Ok(Opened { handle, fo })
    } else {
        assert!(handle.is_null(), "no handle when the create fails");
        Err(status)
    }
}

/// FltCreateFileEx2 by file id.
fn by_id(
    below: PFLT_INSTANCE,
    root: HANDLE,
    name: &[u16],
    options: u32,
) -> Result<Opened, NTSTATUS> {
    create(below, root, name, READ, options | FILE_OPEN_BY_FILE_ID)
}

/// FltQueryInformationFile of `class` into `len` bytes.
fn query(o: &Opened, class: i32, len: usize) -> Vec<u8> {
    let mut buffer = vec![0u8; len];
    let mut returned = 0u32;
    // SAFETY: the buffer holds `len` bytes; a live file object of the instance's volume.
    let status = unsafe {
        FltQueryInformationFile(
            instance(),
            o.fo,
            buffer.as_mut_ptr().cast(),
            len as u32,
            class,
            &mut returned,
        )
    };
    assert_eq!(status, STATUS_SUCCESS);
    buffer
}

fn file_id(o: &Opened) -> u64 {
    u64::from_le_bytes(
        query(o, FILE_INTERNAL_INFORMATION, 8)[..8]
            .try_into()
            .unwrap(),
    )
}

/// The file's contents read through the filter's own file object.
fn contents(o: &Opened) -> Vec<u8> {
    let size = query(o, FILE_STANDARD_INFORMATION, 24);
    let size = u64::from_le_bytes(size[8..16].try_into().unwrap()) as usize;
    let mut buffer = vec![0u8; size];
    let mut read = 0u32;
    // SAFETY: the buffer holds `size` bytes; offset 0; a synchronous read.
    let status = unsafe {
        FltReadFile(
            instance(),
            o.fo,
            &0,
            size as u32,
            buffer.as_mut_ptr().cast(),
            0,
            &mut read,
            None,
            std::ptr::null(),
        )
    };
    assert_eq!(status, STATUS_SUCCESS);
    buffer.truncate(read as usize);
    buffer
}

/// A file with `text` made by the application; returns its id.
fn make(app: u32, path: &str, text: &[u8]) -> u64 {
    process::run_as(app, || {
        let h = files::create(path, &OpenParams::read_write(2)).expect("create");
        files::write(h, 0, text, IoMode::Cached).expect("write");
        let id = app_file_id(h);
        files::close(h);
        id
    })
}

fn app_file_id(h: Handle) -> u64 {
    let (status, bytes) = files::query_information(h, FILE_INTERNAL_INFORMATION, 8);
    assert_eq!(status, STATUS_SUCCESS);
    u64::from_le_bytes(bytes[..8].try_into().unwrap())
}

/// MoveFileEx(`from`, `to`) by the application.
fn rename(app: u32, from: &str, to: &str) {
    process::run_as(app, || {
        let params = OpenParams {
            access: 0x0001_0000 | 0x0010_0000 | 0x80, // DELETE | SYNCHRONIZE | FILE_READ_ATTRIBUTES
            ..OpenParams::default()
        };
        let h = files::create(from, &params).expect("open for rename");
        let name: Vec<u8> = format!("\\??\\{to}")
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        // FILE_RENAME_INFORMATION (x64): ReplaceIfExists, RootDirectory at 8,
        // FileNameLength at 16, FileName at 20.
        let mut input = vec![0u8; 20];
        input[16..20].copy_from_slice(&(name.len() as u32).to_le_bytes());
        input.extend_from_slice(&name);
        assert_eq!(
            files::set_information(h, FileRenameInformation, &input),
            STATUS_SUCCESS
        );
        files::close(h);
    });
}

fn finish(mut machine: Machine) {
    machine.assert_clean();
    assert_eq!(probe::stop(), STATUS_SUCCESS);
    machine.assert_clean();
}

#[test]
fn by_id_the_open_reaches_the_file_after_a_rename_and_a_new_file_at_its_old_name() {
    let (machine, app) = probe();
    let id = make(app, "C:\\a.txt", b"first");
    rename(app, "C:\\a.txt", "C:\\b.txt");
    let other = make(app, "C:\\a.txt", b"second");
    assert_ne!(id, other);
    // Every documented name form: the device path, the DOS device path, and the bare id
    // relative to a handle to any file of the volume.
    for prefix in ["\\Device\\HarddiskVolume1\\", "\\??\\C:\\"] {
        let o = by_id(instance(), std::ptr::null_mut(), &id_name(prefix, id), 0)
            .unwrap_or_else(|s| panic!("{prefix}: {s:#x}"));
        assert_eq!(file_id(&o), id, "{prefix}");
        assert_eq!(contents(&o), b"first", "{prefix}");
    }
    let root_name: Vec<u16> = "\\Device\\HarddiskVolume1\\".encode_utf16().collect();
    let root = create(
        instance(),
        std::ptr::null_mut(),
        &root_name,
        0x80,
        FILE_DIRECTORY_FILE,
    )
    .expect("the volume's root directory");
    let o = by_id(
        instance(),
        root.handle,
        &id_name("", id),
        FILE_NON_DIRECTORY_FILE,
    )
    .expect("relative to the root directory's handle");
    assert_eq!(contents(&o), b"first");
    drop((o, root));
    let o = by_id(
        instance(),
        std::ptr::null_mut(),
        &id_name("\\??\\C:\\", other),
        0,
    )
    .expect("the new file has its own id");
    assert_eq!(contents(&o), b"second");
    drop(o);
    finish(machine);
}

#[test]
fn by_id_below_an_instance_no_filter_at_or_above_it_sees_the_create() {
    let (machine, app) = probe();
    let id = make(app, "C:\\a.txt", b"data");
    let name = id_name("\\Device\\HarddiskVolume1\\", id);
    let before = creates();
    let o = by_id(instance(), std::ptr::null_mut(), &name, 0).expect("below the probe");
    assert_eq!(
        creates(),
        before,
        "the probe's own instance does not see it"
    );
    drop(o);
    let o = by_id(0, std::ptr::null_mut(), &name, 0).expect("from the top");
    assert_eq!(
        creates(),
        (before.0 + 1, before.1 + 1),
        "from the top of the stack the probe sees a create by id"
    );
    drop(o);
    finish(machine);
}

#[test]
fn by_id_an_unknown_id_or_a_name_without_a_volume_is_invalid_parameter() {
    let (machine, app) = probe();
    let id = make(app, "C:\\gone.txt", b"x");
    process::run_as(app, || {
        let params = OpenParams {
            access: 0x0001_0000 | 0x0010_0000, // DELETE | SYNCHRONIZE
            ..OpenParams::default()
        };
        let h = files::create("C:\\gone.txt", &params).unwrap();
        assert_eq!(
            files::set_information(
                h,
                windows_sys::Wdk::Storage::FileSystem::FileDispositionInformation,
                &[1]
            ),
            STATUS_SUCCESS
        );
        files::close(h);
    });
    for unknown in [id, 0x0001_0000_0000_7777] {
        assert_eq!(
            by_id(
                instance(),
                std::ptr::null_mut(),
                &id_name("\\Device\\HarddiskVolume1\\", unknown),
                0
            )
            .err(),
            Some(STATUS_INVALID_PARAMETER),
            "{unknown:#x}"
        );
    }
    let live = make(app, "C:\\live.txt", b"y");
    assert_eq!(
        by_id(instance(), std::ptr::null_mut(), &id_name("", live), 0).err(),
        Some(STATUS_INVALID_PARAMETER),
        "a bare id needs a RootDirectory"
    );
    finish(machine);
}

#[test]
fn by_id_a_root_directory_handle_must_be_usable_where_the_call_runs() {
    let (machine, app) = probe();
    let id = make(app, "C:\\a.txt", b"data");
    let app_handle = process::run_as(app, || {
        files::create(
            "C:\\",
            &OpenParams {
                options: FILE_DIRECTORY_FILE,
                ..OpenParams::default()
            },
        )
        .expect("the application's handle to the root")
    });
    let root = app_handle.0 as HANDLE;
    // In the application's context its handle is good; elsewhere it names nothing.
    let o = process::run_as(app, || by_id(instance(), root, &id_name("", id), 0));
    assert_eq!(contents(&o.expect("in the application's context")), b"data");
    assert_eq!(
        by_id(instance(), root, &id_name("", id), 0).err(),
        Some(STATUS_INVALID_HANDLE)
    );
    process::run_as(app, || files::close(app_handle));
    finish(machine);
}

#[test]
fn by_id_a_reparse_point_opens_as_itself_only_with_open_reparse_point() {
    let (machine, app) = probe();
    let id = make(app, "C:\\tagged", b"");
    process::run_as(app, || {
        let h = files::create("C:\\tagged", &OpenParams::read_write(1)).unwrap();
        let mut buffer = TEST_TAG.to_le_bytes().to_vec();
        buffer.extend_from_slice(&4u16.to_le_bytes());
        buffer.extend_from_slice(&[0, 0]);
        buffer.extend_from_slice(b"test-guid-000001");
        buffer.extend_from_slice(b"data");
        let (status, _) = files::fs_control(h, FSCTL_SET_REPARSE_POINT, &buffer, 0);
        assert_eq!(status, STATUS_SUCCESS);
        files::close(h);
    });
    let name = id_name("\\Device\\HarddiskVolume1\\", id);
    assert!(
        by_id(instance(), std::ptr::null_mut(), &name, 0).is_err(),
        "without FILE_OPEN_REPARSE_POINT nothing opens: the tag reparses and nobody handles it"
    );
    let o = by_id(
        instance(),
        std::ptr::null_mut(),
        &name,
        FILE_OPEN_REPARSE_POINT,
    )
    .expect("the reparse point itself");
    let tag = query(&o, FILE_ATTRIBUTE_TAG_INFORMATION, 8);
    assert_eq!(u32::from_le_bytes(tag[4..8].try_into().unwrap()), TEST_TAG);
    drop(o);
    finish(machine);
}

#[test]
fn the_volume_of_an_instance_and_its_name() {
    let (mut machine, _app) = probe();
    let mut volume: PFLT_VOLUME = 0;
    // SAFETY: a live instance; a valid out pointer.
    let status = unsafe { FltGetVolumeFromInstance(instance(), &mut volume) };
    assert_eq!(status, STATUS_SUCCESS);
    let expected: Vec<u16> = "\\Device\\HarddiskVolume1".encode_utf16().collect();
    let mut needed = 0u32;
    // SAFETY: no buffer, a size pointer: the documented size query.
    let status = unsafe { FltGetVolumeName(volume, std::ptr::null_mut(), &mut needed) };
    assert_eq!(
        (status, needed as usize),
        (STATUS_BUFFER_TOO_SMALL, expected.len() * 2)
    );
    // SAFETY: neither: refused.
    let status = unsafe { FltGetVolumeName(volume, std::ptr::null_mut(), std::ptr::null_mut()) };
    assert_eq!(status, STATUS_INVALID_PARAMETER);
    let mut buffer = vec![0u16; expected.len()];
    let mut name = UNICODE_STRING {
        Length: 0,
        MaximumLength: (buffer.len() * 2 - 2) as u16,
        Buffer: buffer.as_mut_ptr(),
    };
    // SAFETY: a buffer of MaximumLength bytes.
    let status = unsafe { FltGetVolumeName(volume, &mut name, std::ptr::null_mut()) };
    assert_eq!(status, STATUS_BUFFER_TOO_SMALL, "one unit short");
    name.MaximumLength = (buffer.len() * 2) as u16;
    // SAFETY: as above, now large enough.
    let status = unsafe { FltGetVolumeName(volume, &mut name, std::ptr::null_mut()) };
    assert_eq!(status, STATUS_SUCCESS);
    assert_eq!(usize::from(name.Length), expected.len() * 2);
    assert_eq!(buffer, expected);
    FltObjectDereference(volume as *mut c_void);
    machine.assert_clean();
    // A reference kept past unregistration is a leak FltMgr reports.
    // SAFETY: as above.
    let status = unsafe { FltGetVolumeFromInstance(instance(), &mut volume) };
    assert_eq!(status, STATUS_SUCCESS);
    assert_eq!(probe::stop(), STATUS_SUCCESS);
    let violations = machine.take_violations();
    assert!(
        violations
            .iter()
            .any(|v| v.api == "FltUnregisterFilter" && v.message.contains("references leaked")),
        "{violations:?}"
    );
}
