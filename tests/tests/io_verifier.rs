//! The I/O path's verifier checks, each made to fire by a probe filter that misbehaves
//! on purpose, and the legal outcomes (pend and resume from another thread, complete,
//! synchronize, cancel-safe queues, reissue) shown to work.

use std::ffi::c_void;
use std::sync::Mutex;
use std::sync::atomic::{AtomicIsize, AtomicU8, AtomicUsize, Ordering};
use std::time::Duration;

use cloudflt_driver::nt::layout::FLT_IO_PARAMETER_BLOCK;
use cloudflt_tests::model::cbdq::{FltCbdqInitialize, FltCbdqInsertIo, FltCbdqRemoveNextIo};
use cloudflt_tests::model::files::{self, Handle, IoMode, OpenParams};
use cloudflt_tests::model::fltio::{
    FltAllocateDeferredIoWorkItem, FltFreeDeferredIoWorkItem, FltQueueDeferredIoWorkItem,
};
use cloudflt_tests::model::fltmgr::{FltRegisterFilter, FltStartFiltering, FltUnregisterFilter};
use cloudflt_tests::model::io::{
    FltCompletePendedPreOperation, FltReissueSynchronousIo, FltSetCallbackDataDirty,
};
use cloudflt_tests::model::irql;
use cloudflt_tests::model::names::{FltGetFileNameInformation, FltReleaseFileNameInformation};
use cloudflt_tests::model::process::{self, PHCM_APPLICATION_DEFAULT};
use cloudflt_tests::model::{Machine, Violation, VolumeConfig};
use windows_sys::Wdk::Foundation::DRIVER_OBJECT;
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FLT_CALLBACK_DATA, FLT_CALLBACK_DATA_QUEUE, FLT_FILE_NAME_INFORMATION,
    FLT_OPERATION_REGISTRATION, FLT_POSTOP_CALLBACK_STATUS, FLT_POSTOP_FINISHED_PROCESSING,
    FLT_PREOP_CALLBACK_STATUS, FLT_PREOP_COMPLETE, FLT_PREOP_DISALLOW_FASTIO, FLT_PREOP_PENDING,
    FLT_PREOP_SUCCESS_NO_CALLBACK, FLT_PREOP_SUCCESS_WITH_CALLBACK, FLT_PREOP_SYNCHRONIZE,
    FLT_REGISTRATION, FLT_RELATED_OBJECTS, PFLT_FILTER,
};
use windows_sys::Win32::Foundation::{
    NTSTATUS, STATUS_ACCESS_DENIED, STATUS_CANCELLED, STATUS_IO_REPARSE_TAG_NOT_HANDLED,
    STATUS_REPARSE, STATUS_SUCCESS,
};
use windows_sys::Win32::System::IO::{IO_STATUS_BLOCK, IO_STATUS_BLOCK_0};

// What the probe does in its pre-read.
const PASS: u8 = 0;
const ILLEGAL_STATUS: u8 = 1;
const PEND_AND_RESUME: u8 = 2;
const COMPLETE_WITHOUT_PENDING: u8 = 3;
const EDIT_WITHOUT_DIRTY: u8 = 4;
const DISALLOW_FASTIO_ON_IRP: u8 = 5;
const COMPLETE_DENIED: u8 = 6;
const WITH_CALLBACK: u8 = 7;
const SYNCHRONIZE: u8 = 8;
const QUEUE: u8 = 9;
const CONTEXT_WITHOUT_POST: u8 = 10;
const DEFER: u8 = 11;

/// What FltQueueDeferredIoWorkItem answered for a paging read (DEFER mode).
static PAGING_DEFER_STATUS: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

// What the probe does in its pre-create / post-create.
const CREATE_PASS: u8 = 0;
const LEAK_NAME: u8 = 1;
const REISSUE_ON_REPARSE: u8 = 2;

static READ_MODE: AtomicU8 = AtomicU8::new(PASS);
static CREATE_MODE: AtomicU8 = AtomicU8::new(CREATE_PASS);
static FILTER: AtomicIsize = AtomicIsize::new(0);
static INSTANCE: AtomicIsize = AtomicIsize::new(0);
static POST_IRQL: AtomicU8 = AtomicU8::new(0xff);
static POST_CALLS: AtomicUsize = AtomicUsize::new(0);
static QUEUE_STATE: Mutex<Option<Box<Queue>>> = Mutex::new(None);
static QUEUED: Mutex<Vec<usize>> = Mutex::new(Vec::new());

/// The probe's cancel-safe queue: FltMgr's structure plus the probe's own list.
#[repr(C)]
struct Queue {
    cbdq: FLT_CALLBACK_DATA_QUEUE,
}

// SAFETY: the queue's pointers are FltMgr's and the probe's callbacks; all access to the
// queue goes through the QUEUE_STATE mutex or FltMgr's calls under the probe's lock.
unsafe impl Send for Queue {}

const IO_REPARSE_TAG_TEST: u32 = 0x0000_1234;
const FILE_OPEN_REPARSE_POINT: u32 = 0x0020_0000;

/// The parameter block of a callback data FltMgr passed to the probe.
///
/// # Safety
/// `data` must be a live callback data.
unsafe fn iopb<'a>(data: *const FLT_CALLBACK_DATA) -> &'a mut FLT_IO_PARAMETER_BLOCK {
    // SAFETY: per the contract.
    let iopb = unsafe { (*data).Iopb };
    // SAFETY: FltMgr's parameter block (laid out as fltKernel.h declares it), which a filter
    // may edit (then marks it dirty).
    unsafe { &mut *iopb.cast_mut().cast::<FLT_IO_PARAMETER_BLOCK>() }
}

fn status_of(data: *mut FLT_CALLBACK_DATA, status: NTSTATUS) {
    // SAFETY: the callback data FltMgr passed to the probe.
    unsafe {
        (*data).IoStatus = IO_STATUS_BLOCK {
            Anonymous: IO_STATUS_BLOCK_0 { Status: status },
            Information: 0,
        }
    };
}

unsafe extern "system" fn pre_read(
    data: *mut FLT_CALLBACK_DATA,
    _objects: *const FLT_RELATED_OBJECTS,
    context: *mut *mut c_void,
) -> FLT_PREOP_CALLBACK_STATUS {
    // Paging reads pass: the probe's tests are about the top-level read.
    // SAFETY: FltMgr's callback data and its Iopb.
    let paging = unsafe { iopb(data) }.IrpFlags & 0x2 != 0;
    if paging {
        if READ_MODE.load(Ordering::SeqCst) == DEFER {
            let item = FltAllocateDeferredIoWorkItem();
            // SAFETY: the live callback data of a paging read.
            let status = unsafe {
                FltQueueDeferredIoWorkItem(item, data, Some(deferred), 1, std::ptr::null())
            };
            PAGING_DEFER_STATUS.store(status, Ordering::SeqCst);
            FltFreeDeferredIoWorkItem(item);
        }
        return FLT_PREOP_SUCCESS_NO_CALLBACK;
    }
    match READ_MODE.load(Ordering::SeqCst) {
        ILLEGAL_STATUS => 42,
        PEND_AND_RESUME => {
            let cbd = data as usize;
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(20));
                FltCompletePendedPreOperation(
                    cbd as *const FLT_CALLBACK_DATA,
                    FLT_PREOP_SUCCESS_NO_CALLBACK,
                    std::ptr::null(),
                );
            });
            FLT_PREOP_PENDING
        }
        COMPLETE_WITHOUT_PENDING => {
            FltCompletePendedPreOperation(data, FLT_PREOP_SUCCESS_NO_CALLBACK, std::ptr::null());
            FLT_PREOP_SUCCESS_NO_CALLBACK
        }
        EDIT_WITHOUT_DIRTY => {
            // SAFETY: the live callback data FltMgr passed.
            let block = unsafe { iopb(data) };
            // Writing a union field is safe; only reading one is not.
            block.Parameters.Read.ByteOffset = 0;
            FLT_PREOP_SUCCESS_NO_CALLBACK
        }
        DISALLOW_FASTIO_ON_IRP => {
            // SAFETY: FltMgr's callback data.
            let irp = unsafe { (*data).Flags } & 0x1 != 0;
            if irp {
                FLT_PREOP_DISALLOW_FASTIO
            } else {
                FLT_PREOP_SUCCESS_NO_CALLBACK
            }
        }
        COMPLETE_DENIED => {
            status_of(data, STATUS_ACCESS_DENIED);
            FLT_PREOP_COMPLETE
        }
        WITH_CALLBACK => FLT_PREOP_SUCCESS_WITH_CALLBACK,
        SYNCHRONIZE => FLT_PREOP_SYNCHRONIZE,
        QUEUE => {
            let mut guard = QUEUE_STATE.lock().unwrap();
            let queue = guard.as_mut().expect("queue initialised");
            // SAFETY: an initialised queue, the live callback data.
            let status = unsafe {
                FltCbdqInsertIo(&mut queue.cbdq, data, std::ptr::null(), std::ptr::null())
            };
            assert_eq!(status, STATUS_SUCCESS);
            FLT_PREOP_PENDING
        }
        DEFER => {
            let item = FltAllocateDeferredIoWorkItem();
            // SAFETY: the live callback data of a non-paging read, pended below.
            let status = unsafe {
                FltQueueDeferredIoWorkItem(item, data, Some(deferred), 1, std::ptr::null())
            };
            assert_eq!(status, STATUS_SUCCESS);
            FLT_PREOP_PENDING
        }
        CONTEXT_WITHOUT_POST => {
            // SAFETY: FltMgr's out pointer.
            unsafe { *context = std::ptr::dangling_mut::<c_void>() };
            FLT_PREOP_SUCCESS_NO_CALLBACK
        }
        _ => FLT_PREOP_SUCCESS_NO_CALLBACK,
    }
}

/// The deferred routine: resumes the pended read on a worker thread, then frees its item.
unsafe extern "system" fn deferred(
    item: isize,
    data: *const FLT_CALLBACK_DATA,
    _context: *const c_void,
) {
    assert_eq!(irql::current(), irql::PASSIVE_LEVEL);
    FltCompletePendedPreOperation(data, FLT_PREOP_SUCCESS_NO_CALLBACK, std::ptr::null());
    // The model marks the item idle once the routine returns; free it after that.
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(20));
        FltFreeDeferredIoWorkItem(item);
    });
}

unsafe extern "system" fn post_read(
    _data: *mut FLT_CALLBACK_DATA,
    _objects: *const FLT_RELATED_OBJECTS,
    _context: *const c_void,
    _flags: u32,
) -> FLT_POSTOP_CALLBACK_STATUS {
    POST_IRQL.store(irql::current(), Ordering::SeqCst);
    POST_CALLS.fetch_add(1, Ordering::SeqCst);
    FLT_POSTOP_FINISHED_PROCESSING
}

unsafe extern "system" fn pre_write(
    _data: *mut FLT_CALLBACK_DATA,
    _objects: *const FLT_RELATED_OBJECTS,
    _context: *mut *mut c_void,
) -> FLT_PREOP_CALLBACK_STATUS {
    // Asks for a post-operation the probe never registered for writes.
    if READ_MODE.load(Ordering::SeqCst) == WITH_CALLBACK {
        FLT_PREOP_SUCCESS_WITH_CALLBACK
    } else {
        FLT_PREOP_SUCCESS_NO_CALLBACK
    }
}

unsafe extern "system" fn pre_create(
    data: *mut FLT_CALLBACK_DATA,
    _objects: *const FLT_RELATED_OBJECTS,
    _context: *mut *mut c_void,
) -> FLT_PREOP_CALLBACK_STATUS {
    match CREATE_MODE.load(Ordering::SeqCst) {
        LEAK_NAME => {
            let mut info: *mut FLT_FILE_NAME_INFORMATION = std::ptr::null_mut();
            // SAFETY: the live callback data and a valid out pointer.
            let status = unsafe { FltGetFileNameInformation(data, 0x101, &mut info) };
            assert_eq!(status, STATUS_SUCCESS);
            FLT_PREOP_SUCCESS_NO_CALLBACK
        }
        REISSUE_ON_REPARSE => FLT_PREOP_SYNCHRONIZE,
        _ => FLT_PREOP_SUCCESS_NO_CALLBACK,
    }
}

unsafe extern "system" fn post_create(
    data: *mut FLT_CALLBACK_DATA,
    objects: *const FLT_RELATED_OBJECTS,
    _context: *const c_void,
    _flags: u32,
) -> FLT_POSTOP_CALLBACK_STATUS {
    // SAFETY: FltMgr's callback data.
    let data_ref = unsafe { &mut *data };
    // SAFETY: the status member of the IO_STATUS_BLOCK union.
    let status = unsafe { data_ref.IoStatus.Anonymous.Status };
    // SAFETY: TagData is NULL or valid with STATUS_REPARSE.
    let tag = unsafe { data_ref.TagData.as_ref() }.map(|t| t.FileTag);
    if status == STATUS_REPARSE && tag == Some(IO_REPARSE_TAG_TEST) {
        // SAFETY: the live callback data FltMgr passed.
        let block = unsafe { iopb(data) };
        // SAFETY: the create member of a create's parameters.
        unsafe { block.Parameters.Create.Options |= FILE_OPEN_REPARSE_POINT };
        FltSetCallbackDataDirty(data);
        // SAFETY: the related objects FltMgr passed.
        let instance = unsafe { (*objects).Instance };
        FltReissueSynchronousIo(instance, data);
    }
    FLT_POSTOP_FINISHED_PROCESSING
}

unsafe extern "system" fn unload(_flags: u32) -> NTSTATUS {
    FltUnregisterFilter(FILTER.load(Ordering::SeqCst));
    STATUS_SUCCESS
}

unsafe extern "system" fn setup(
    objects: *const FLT_RELATED_OBJECTS,
    _: u32,
    _: u32,
    _: i32,
) -> NTSTATUS {
    // SAFETY: the related objects of InstanceSetup.
    let instance = unsafe { (*objects).Instance };
    INSTANCE.store(instance, Ordering::SeqCst);
    let mut queue = Box::new(Queue {
        cbdq: FLT_CALLBACK_DATA_QUEUE::default(),
    });
    // SAFETY: the queue lives in a static until the test ends.
    let status = unsafe {
        FltCbdqInitialize(
            instance,
            &mut queue.cbdq,
            Some(q_insert),
            Some(q_remove),
            Some(q_peek),
            Some(q_acquire),
            Some(q_release),
            Some(q_complete_canceled),
        )
    };
    assert_eq!(status, STATUS_SUCCESS);
    *QUEUE_STATE.lock().unwrap() = Some(queue);
    STATUS_SUCCESS
}

unsafe extern "system" fn q_insert(
    _: *mut FLT_CALLBACK_DATA_QUEUE,
    cbd: *const FLT_CALLBACK_DATA,
    _: *const c_void,
) -> NTSTATUS {
    QUEUED.lock().unwrap().push(cbd as usize);
    STATUS_SUCCESS
}
unsafe extern "system" fn q_remove(_: *mut FLT_CALLBACK_DATA_QUEUE, cbd: *const FLT_CALLBACK_DATA) {
    QUEUED.lock().unwrap().retain(|c| *c != cbd as usize);
}
unsafe extern "system" fn q_peek(
    _: *const FLT_CALLBACK_DATA_QUEUE,
    after: *const FLT_CALLBACK_DATA,
    _: *const c_void,
) -> *mut FLT_CALLBACK_DATA {
    let list = QUEUED.lock().unwrap();
    let next = if after.is_null() {
        list.first()
    } else {
        list.iter().skip_while(|c| **c != after as usize).nth(1)
    };
    next.map_or(std::ptr::null_mut(), |c| *c as *mut FLT_CALLBACK_DATA)
}
unsafe extern "system" fn q_acquire(_: *mut FLT_CALLBACK_DATA_QUEUE, _: *mut u8) {}
unsafe extern "system" fn q_release(_: *mut FLT_CALLBACK_DATA_QUEUE, _: u8) {}
unsafe extern "system" fn q_complete_canceled(
    _: *mut FLT_CALLBACK_DATA_QUEUE,
    cbd: *mut FLT_CALLBACK_DATA,
) {
    status_of(cbd, STATUS_CANCELLED);
    FltCompletePendedPreOperation(cbd, FLT_PREOP_COMPLETE, std::ptr::null());
}

struct Static<T>(T);
// SAFETY: immutable tables read by the model only.
unsafe impl<T> Sync for Static<T> {}

const fn operation(
    major: u8,
    pre: windows_sys::Wdk::Storage::FileSystem::Minifilters::PFLT_PRE_OPERATION_CALLBACK,
    post: windows_sys::Wdk::Storage::FileSystem::Minifilters::PFLT_POST_OPERATION_CALLBACK,
) -> FLT_OPERATION_REGISTRATION {
    FLT_OPERATION_REGISTRATION {
        MajorFunction: major,
        Flags: 0,
        PreOperation: pre,
        PostOperation: post,
        Reserved1: std::ptr::null_mut(),
    }
}

static OPERATIONS: Static<[FLT_OPERATION_REGISTRATION; 4]> = Static([
    operation(0, Some(pre_create), Some(post_create)),
    operation(3, Some(pre_read), Some(post_read)),
    operation(4, Some(pre_write), None),
    operation(0x80, None, None),
]);

/// Boots a machine with the probe filter started and an application process.
fn probe(read_mode: u8, create_mode: u8) -> (Machine, u32) {
    let machine = Machine::boot(&[VolumeConfig::ntfs(1)]);
    READ_MODE.store(read_mode, Ordering::SeqCst);
    CREATE_MODE.store(create_mode, Ordering::SeqCst);
    POST_IRQL.store(0xff, Ordering::SeqCst);
    POST_CALLS.store(0, Ordering::SeqCst);
    QUEUED.lock().unwrap().clear();
    let registration = FLT_REGISTRATION {
        Size: std::mem::size_of::<FLT_REGISTRATION>() as u16,
        Version: 0x0203,
        OperationRegistration: OPERATIONS.0.as_ptr(),
        FilterUnloadCallback: Some(unload),
        InstanceSetupCallback: Some(setup),
        ..Default::default()
    };
    // SAFETY: DRIVER_OBJECT is plain data; zero is valid.
    let driver: &'static DRIVER_OBJECT = Box::leak(Box::new(unsafe { std::mem::zeroed() }));
    let mut filter: PFLT_FILTER = 0;
    // SAFETY: a registration that outlives the call.
    let status = unsafe { FltRegisterFilter(driver, &registration, &mut filter) };
    assert_eq!(status, STATUS_SUCCESS);
    FILTER.store(filter, Ordering::SeqCst);
    assert_eq!(FltStartFiltering(filter), STATUS_SUCCESS);
    let app = machine.spawn_process(
        "\\Device\\HarddiskVolume1\\app.exe",
        PHCM_APPLICATION_DEFAULT,
        false,
    );
    (machine, app)
}

/// A file with 8 KiB of known bytes, opened for reading by the application.
fn file_with_data(app: u32) -> Handle {
    process::run_as(app, || {
        let h = files::create("C:\\f.bin", &OpenParams::read_write(3)).unwrap();
        let data: Vec<u8> = (0..8192u32).map(|i| i as u8).collect();
        // Writes pass through the probe untouched in every mode but WITH_CALLBACK.
        let mode = READ_MODE.swap(PASS, Ordering::SeqCst);
        files::write(h, 0, &data, IoMode::NonCached).unwrap();
        READ_MODE.store(mode, Ordering::SeqCst);
        h
    })
}

fn fired(violations: &[Violation], needle: &str) -> bool {
    violations.iter().any(|v| v.to_string().contains(needle))
}

#[test]
fn an_illegal_pre_operation_status_is_reported() {
    let (mut machine, app) = probe(ILLEGAL_STATUS, CREATE_PASS);
    let h = file_with_data(app);
    let _ = process::run_as(app, || files::read(h, 0, 512, IoMode::NonCached));
    let v = machine.take_violations();
    assert!(
        fired(&v, "returned 42, which is not an FLT_PREOP_CALLBACK_STATUS"),
        "{v:?}"
    );
}

#[test]
fn a_pended_read_resumed_from_another_thread_completes_with_the_data() {
    let (mut machine, app) = probe(PEND_AND_RESUME, CREATE_PASS);
    let h = file_with_data(app);
    let data = process::run_as(app, || files::read(h, 512, 512, IoMode::NonCached)).unwrap();
    assert_eq!(data, (512..1024u32).map(|i| i as u8).collect::<Vec<_>>());
    machine.assert_clean();
}

#[test]
fn completing_an_operation_that_was_not_pended_is_reported() {
    let (mut machine, app) = probe(COMPLETE_WITHOUT_PENDING, CREATE_PASS);
    let h = file_with_data(app);
    let _ = process::run_as(app, || files::read(h, 0, 512, IoMode::NonCached));
    let v = machine.take_violations();
    assert!(
        fired(
            &v,
            "completed an operation whose pre-operation then returned"
        ),
        "{v:?}"
    );
}

#[test]
fn completing_a_finished_operation_is_reported() {
    let (mut machine, _app) = probe(PASS, CREATE_PASS);
    let stale = Box::new(FLT_CALLBACK_DATA::default());
    FltCompletePendedPreOperation(&*stale, FLT_PREOP_COMPLETE, std::ptr::null());
    let v = machine.take_violations();
    assert!(
        fired(&v, "is not the callback data of a live operation"),
        "{v:?}"
    );
}

#[test]
fn changing_parameters_without_marking_them_dirty_is_reported() {
    let (mut machine, app) = probe(EDIT_WITHOUT_DIRTY, CREATE_PASS);
    let h = file_with_data(app);
    let _ = process::run_as(app, || files::read(h, 4096, 512, IoMode::NonCached));
    let v = machine.take_violations();
    assert!(fired(&v, "without FltSetCallbackDataDirty"), "{v:?}");
}

#[test]
fn disallowing_fast_io_on_an_irp_is_reported() {
    let (mut machine, app) = probe(DISALLOW_FASTIO_ON_IRP, CREATE_PASS);
    let h = file_with_data(app);
    let _ = process::run_as(app, || files::read(h, 0, 512, IoMode::NonCached));
    let v = machine.take_violations();
    assert!(
        fired(&v, "FLT_PREOP_DISALLOW_FASTIO for a Irp operation"),
        "{v:?}"
    );
}

#[test]
fn asking_for_a_post_operation_that_is_not_registered_is_reported() {
    let (mut machine, app) = probe(PASS, CREATE_PASS);
    let h = file_with_data(app);
    READ_MODE.store(WITH_CALLBACK, Ordering::SeqCst);
    let _ = process::run_as(app, || files::write(h, 0, b"x", IoMode::Cached));
    let v = machine.take_violations();
    assert!(fired(&v, "registered no post-operation"), "{v:?}");
}

#[test]
fn a_completion_context_without_a_post_operation_is_reported() {
    let (mut machine, app) = probe(CONTEXT_WITHOUT_POST, CREATE_PASS);
    let h = file_with_data(app);
    let _ = process::run_as(app, || files::read(h, 0, 512, IoMode::NonCached));
    let v = machine.take_violations();
    assert!(fired(&v, "set a completion context"), "{v:?}");
}

#[test]
fn a_filter_can_complete_an_operation_with_its_own_status() {
    let (mut machine, app) = probe(COMPLETE_DENIED, CREATE_PASS);
    let h = file_with_data(app);
    let r = process::run_as(app, || files::read(h, 0, 512, IoMode::NonCached));
    assert_eq!(r, Err(STATUS_ACCESS_DENIED));
    machine.assert_clean();
}

#[test]
fn post_operations_run_at_dispatch_unless_synchronized() {
    let (mut machine, app) = probe(WITH_CALLBACK, CREATE_PASS);
    let h = file_with_data(app);
    process::run_as(app, || files::read(h, 0, 512, IoMode::NonCached)).unwrap();
    assert_eq!(POST_IRQL.load(Ordering::SeqCst), irql::DISPATCH_LEVEL);
    READ_MODE.store(SYNCHRONIZE, Ordering::SeqCst);
    process::run_as(app, || files::read(h, 0, 512, IoMode::NonCached)).unwrap();
    assert_eq!(POST_IRQL.load(Ordering::SeqCst), irql::PASSIVE_LEVEL);
    assert_eq!(POST_CALLS.load(Ordering::SeqCst), 2);
    machine.assert_clean();
}

#[test]
fn a_queued_read_cancelled_by_cancel_io_completes_with_status_cancelled() {
    let (mut machine, app) = probe(QUEUE, CREATE_PASS);
    let h = file_with_data(app);
    let reader = std::thread::spawn(move || {
        process::run_as(app, || files::read(h, 0, 512, IoMode::NonCached))
    });
    while QUEUED.lock().unwrap().is_empty() {
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(files::cancel_io(h), 1);
    assert_eq!(reader.join().unwrap(), Err(STATUS_CANCELLED));
    assert!(QUEUED.lock().unwrap().is_empty());
    machine.assert_clean();
}

#[test]
fn a_queued_read_removed_by_the_filter_can_be_resumed() {
    let (mut machine, app) = probe(QUEUE, CREATE_PASS);
    let h = file_with_data(app);
    let reader = std::thread::spawn(move || {
        process::run_as(app, || files::read(h, 0, 512, IoMode::NonCached))
    });
    while QUEUED.lock().unwrap().is_empty() {
        std::thread::sleep(Duration::from_millis(1));
    }
    let cbd = {
        let mut guard = QUEUE_STATE.lock().unwrap();
        let queue = guard.as_mut().unwrap();
        // SAFETY: the initialised queue.
        unsafe { FltCbdqRemoveNextIo(&mut queue.cbdq, std::ptr::null()) }
    };
    assert!(!cbd.is_null());
    FltCompletePendedPreOperation(cbd, FLT_PREOP_SUCCESS_NO_CALLBACK, std::ptr::null());
    assert_eq!(reader.join().unwrap().map(|d| d.len()), Ok(512));
    machine.assert_clean();
}

#[test]
fn name_information_leaked_at_unload_is_reported() {
    let (mut machine, app) = probe(PASS, LEAK_NAME);
    let h = file_with_data(app);
    files::close(h);
    machine.unload_driver();
    let v = machine.take_violations();
    assert!(
        fired(&v, "file name information block(s) never released"),
        "{v:?}"
    );
}

#[test]
fn name_information_released_twice_is_reported() {
    let (mut machine, _app) = probe(PASS, CREATE_PASS);
    let fake = FLT_FILE_NAME_INFORMATION::default();
    FltReleaseFileNameInformation(&fake);
    let v = machine.take_violations();
    assert!(fired(&v, "is not live file name information"), "{v:?}");
}

#[test]
fn post_create_can_reissue_an_open_of_its_own_reparse_point() {
    // Without the probe's help an unknown tag does not open.
    let (mut machine, app) = probe(PASS, CREATE_PASS);
    let h = file_with_data(app);
    let mut buffer = Vec::new();
    buffer.extend_from_slice(&IO_REPARSE_TAG_TEST.to_le_bytes());
    buffer.extend_from_slice(&4u16.to_le_bytes());
    buffer.extend_from_slice(&0u16.to_le_bytes());
    buffer.extend_from_slice(&[0x11; 16]);
    buffer.extend_from_slice(b"data");
    let (status, _) = process::run_as(app, || files::fs_control(h, 0x0009_00A4, &buffer, 0));
    assert_eq!(status, STATUS_SUCCESS);
    files::close(h);
    let plain = process::run_as(app, || files::create("C:\\f.bin", &OpenParams::default()));
    assert_eq!(plain.err(), Some(STATUS_IO_REPARSE_TAG_NOT_HANDLED));

    CREATE_MODE.store(REISSUE_ON_REPARSE, Ordering::SeqCst);
    let opened = process::run_as(app, || files::create("C:\\f.bin", &OpenParams::default()));
    let h = opened.expect("the reissued open succeeds");
    let data = process::run_as(app, || files::read(h, 0, 4, IoMode::Cached)).unwrap();
    assert_eq!(data, [0, 1, 2, 3]);
    files::close(h);
    machine.assert_clean();
}

#[test]
fn a_deferred_work_item_resumes_a_pended_read_and_paging_io_is_never_posted() {
    let (mut machine, app) = probe(DEFER, CREATE_PASS);
    let h = file_with_data(app);
    let data = process::run_as(app, || files::read(h, 0, 512, IoMode::NonCached)).unwrap();
    assert_eq!(data.len(), 512);
    PAGING_DEFER_STATUS.store(0, Ordering::SeqCst);
    process::run_as(app, || files::read(h, 0, 100, IoMode::Paging)).unwrap();
    assert_eq!(
        PAGING_DEFER_STATUS.load(Ordering::SeqCst),
        windows_sys::Win32::Foundation::STATUS_FLT_NOT_SAFE_TO_POST_OPERATION
    );
    std::thread::sleep(Duration::from_millis(50));
    machine.assert_clean();
}

#[test]
fn filter_initiated_io_goes_below_the_filter_and_moves_the_file_position() {
    use cloudflt_tests::model::fltio::{
        FltClose, FltCreateFileEx2, FltReadFile, FltWriteFile, ObfDereferenceObject,
    };
    use windows_sys::Wdk::Foundation::{FILE_OBJECT, OBJECT_ATTRIBUTES};
    use windows_sys::Win32::Foundation::UNICODE_STRING;

    let (mut machine, app) = probe(WITH_CALLBACK, CREATE_PASS);
    files::close(file_with_data(app));
    let calls_before = POST_CALLS.load(Ordering::SeqCst);
    let name: Vec<u16> = "\\Device\\HarddiskVolume1\\f.bin".encode_utf16().collect();
    let us = UNICODE_STRING {
        Length: (name.len() * 2) as u16,
        MaximumLength: (name.len() * 2) as u16,
        Buffer: name.as_ptr().cast_mut(),
    };
    let oa = OBJECT_ATTRIBUTES {
        Length: std::mem::size_of::<OBJECT_ATTRIBUTES>() as u32,
        RootDirectory: std::ptr::null_mut(),
        ObjectName: &us,
        Attributes: 0x200, // OBJ_KERNEL_HANDLE
        SecurityDescriptor: std::ptr::null(),
        SecurityQualityOfService: std::ptr::null(),
    };
    let instance = INSTANCE.load(Ordering::SeqCst);
    let mut handle = std::ptr::null_mut();
    let mut fo: *mut FILE_OBJECT = std::ptr::null_mut();
    let mut iosb = IO_STATUS_BLOCK::default();
    // SAFETY: valid out pointers and attributes that outlive the call.
    let status = unsafe {
        FltCreateFileEx2(
            FILTER.load(Ordering::SeqCst),
            instance,
            &mut handle,
            &mut fo,
            0x0012_019F,
            &oa,
            &mut iosb,
            std::ptr::null(),
            0,
            7,
            1,
            0x20,
            std::ptr::null(),
            0,
            0,
            std::ptr::null(),
        )
    };
    assert_eq!(status, STATUS_SUCCESS);
    let page = [0x5au8; 512];
    let mut written = 0u32;
    let at = 512i64;
    // SAFETY: a referenced file object, a 512-byte buffer and valid out pointers.
    let status = unsafe {
        FltWriteFile(
            instance,
            fo,
            &at,
            512,
            page.as_ptr().cast(),
            1,
            &mut written,
            None,
            std::ptr::null(),
        )
    };
    assert_eq!((status, written), (STATUS_SUCCESS, 512));
    // No offset: the read continues at the file object's position, after the write.
    let mut back = [0u8; 512];
    let mut read = 0u32;
    // SAFETY: as above.
    let status = unsafe {
        FltReadFile(
            instance,
            fo,
            std::ptr::null(),
            512,
            back.as_mut_ptr().cast(),
            1,
            &mut read,
            None,
            std::ptr::null(),
        )
    };
    assert_eq!((status, read), (STATUS_SUCCESS, 512));
    let expected: Vec<u8> = (1024..1536u32).map(|i| i as u8).collect();
    assert_eq!(&back[..], &expected[..]);
    // The filter's own I/O never reaches its callbacks.
    assert_eq!(POST_CALLS.load(Ordering::SeqCst), calls_before);
    ObfDereferenceObject(fo.cast());
    assert_eq!(FltClose(handle), STATUS_SUCCESS);
    let data = process::run_as(app, || {
        let h = files::create("C:\\f.bin", &OpenParams::default())?;
        let r = files::read(h, 512, 512, IoMode::Cached);
        files::close(h);
        r
    });
    assert_eq!(data, Ok(page.to_vec()));
    machine.assert_clean();
}
