//! Instance teardown as FltMgr does it: a manual detach (FltDetachVolume, `fltmc detach`)
//! and the unload's teardown of each instance.
//!
//! A probe filter shows the sequence: InstanceQueryTeardown for a manual detach only,
//! InstanceTeardownStart, the wait for the operations holding the instance (pended ones
//! included), InstanceTeardownComplete, the instance's contexts deleted, no operation
//! reaching the instance afterwards; and what the model reports where Windows would hang.
//! The real driver, with a provider that never answers, shows what an application sees
//! when the volume is detached under its pended reads.

use std::ffi::c_void;
use std::sync::atomic::{AtomicI32, AtomicIsize, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use cloudflt::{
    CancelFetch, CancelReason, FetchRequest, HydrationPolicy, PlaceholderSpec, SyncProvider,
    SyncRoot, SyncRootConfig, Transfer,
};
use cloudflt_tests::model::cbdq::{
    FltCbdqDisable, FltCbdqEnable, FltCbdqInitialize, FltCbdqInsertIo, FltCbdqRemoveNextIo,
};
use cloudflt_tests::model::contexts::FltSetStreamContext;
use cloudflt_tests::model::files::{self, Handle, IoMode, OpenParams};
use cloudflt_tests::model::fltmgr::{
    FltAllocateContext, FltGetVolumeInstanceFromName, FltObjectDereference, FltRegisterFilter,
    FltReleaseContext, FltSetInstanceContext, FltStartFiltering, FltUnregisterFilter,
};
use cloudflt_tests::model::io::FltCompletePendedPreOperation;
use cloudflt_tests::model::process::{self, PHCM_APPLICATION_DEFAULT, SYSTEM_PID};
use cloudflt_tests::model::teardown::FltDetachVolume;
use cloudflt_tests::model::workitem::{
    FltAllocateGenericWorkItem, FltFreeGenericWorkItem, FltQueueGenericWorkItem,
};
use cloudflt_tests::model::{Machine, Violation, VolumeConfig};
use windows_sys::Wdk::Foundation::{DRIVER_OBJECT, NonPagedPoolNx};
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FLT_CALLBACK_DATA, FLT_CALLBACK_DATA_QUEUE, FLT_CONTEXT_END, FLT_CONTEXT_REGISTRATION,
    FLT_INSTANCE_CONTEXT, FLT_OPERATION_REGISTRATION, FLT_POSTOP_CALLBACK_STATUS,
    FLT_POSTOP_FINISHED_PROCESSING, FLT_PREOP_CALLBACK_STATUS, FLT_PREOP_PENDING,
    FLT_PREOP_SUCCESS_NO_CALLBACK, FLT_PREOP_SUCCESS_WITH_CALLBACK, FLT_REGISTRATION,
    FLT_RELATED_OBJECTS, FLT_SET_CONTEXT_KEEP_IF_EXISTS, FLT_STREAM_CONTEXT,
    FLTFL_INSTANCE_TEARDOWN_MANDATORY_FILTER_UNLOAD, FLTFL_INSTANCE_TEARDOWN_MANUAL, PFLT_CONTEXT,
    PFLT_FILTER, PFLT_INSTANCE, PFLT_INSTANCE_QUERY_TEARDOWN_CALLBACK,
    PFLT_INSTANCE_TEARDOWN_CALLBACK, PFLT_VOLUME,
};
use windows_sys::Wdk::System::SystemServices::DelayedWorkQueue;
use windows_sys::Win32::Foundation::{
    NTSTATUS, STATUS_CLOUD_FILE_REQUEST_ABORTED, STATUS_FLT_CBDQ_DISABLED,
    STATUS_FLT_DELETING_OBJECT, STATUS_FLT_DO_NOT_DETACH, STATUS_FLT_INSTANCE_NOT_FOUND,
    STATUS_IO_REPARSE_TAG_NOT_HANDLED, STATUS_NOT_IMPLEMENTED, STATUS_SUCCESS, UNICODE_STRING,
};

const VOLUME: &str = r"\Device\HarddiskVolume1";

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn fired(violations: &[Violation], needle: &str) -> bool {
    violations.iter().any(|v| v.to_string().contains(needle))
}

/// Waits (polling, in the test) until `done`, for at most ten seconds.
fn wait_for(what: &str, done: impl Fn() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

// ---------------------------------------------------------------------------------------
// The probe filter
// ---------------------------------------------------------------------------------------

/// What the probe's pre-read does.
const PASS: u8 = 0;
/// Inserts the read in the instance's cancel-safe queue and pends it.
const QUEUE: u8 = 1;
/// Pends the read and has a thread of its own resume it 300 ms later.
const PEND_THEN_RESUME: u8 = 2;
/// Disables the queue, tries to insert (the answer goes to INSERT_STATUS), enables it.
const INSERT_WHILE_DISABLED: u8 = 3;

static READ_MODE: AtomicU8 = AtomicU8::new(PASS);
/// What InstanceQueryTeardown answers.
static QUERY_STATUS: AtomicI32 = AtomicI32::new(STATUS_SUCCESS);
static INSERT_STATUS: AtomicI32 = AtomicI32::new(0);
/// What FltGetVolumeInstanceFromName answered inside InstanceTeardownStart.
static REFERENCE_IN_START: AtomicI32 = AtomicI32::new(0);
static FILTER: AtomicIsize = AtomicIsize::new(0);
static PRE_CREATES: AtomicUsize = AtomicUsize::new(0);
static PRE_READS: AtomicUsize = AtomicUsize::new(0);
static INSTANCE_CLEANUPS: AtomicUsize = AtomicUsize::new(0);
static STREAM_CLEANUPS: AtomicUsize = AtomicUsize::new(0);
/// The callbacks and completions in the order they happened.
static EVENTS: Mutex<Vec<String>> = Mutex::new(Vec::new());
/// One cancel-safe queue per instance, by instance.
static QUEUES: Mutex<Vec<(PFLT_INSTANCE, Box<Queue>)>> = Mutex::new(Vec::new());
/// The callback data in the queues.
static QUEUED: Mutex<Vec<usize>> = Mutex::new(Vec::new());
/// The volume of each instance, by instance.
static VOLUMES: Mutex<Vec<(PFLT_INSTANCE, PFLT_VOLUME)>> = Mutex::new(Vec::new());

fn event(e: impl Into<String>) {
    lock(&EVENTS).push(e.into());
}

fn events() -> Vec<String> {
    lock(&EVENTS).clone()
}

#[repr(C)]
struct Queue {
    cbdq: FLT_CALLBACK_DATA_QUEUE,
}

// SAFETY: FltMgr's structure and the probe's callbacks; reached through the QUEUES mutex
// or by FltMgr under the probe's (empty) lock callbacks.
unsafe impl Send for Queue {}

/// The queue of `instance`.
fn queue_of(instance: PFLT_INSTANCE) -> *mut FLT_CALLBACK_DATA_QUEUE {
    let mut queues = lock(&QUEUES);
    let (_, queue) = queues
        .iter_mut()
        .find(|(i, _)| *i == instance)
        .expect("a queue for every instance");
    &mut queue.cbdq
}

/// Removes every operation from the queue of `instance` and resumes each with `status`.
fn complete_queued(instance: PFLT_INSTANCE, status: FLT_PREOP_CALLBACK_STATUS) {
    let cbdq = queue_of(instance);
    loop {
        // SAFETY: the instance's initialised queue, which lives in QUEUES until the test
        // ends.
        let cbd = unsafe { FltCbdqRemoveNextIo(cbdq, std::ptr::null()) };
        if cbd.is_null() {
            return;
        }
        FltCompletePendedPreOperation(cbd, status, std::ptr::null());
    }
}

unsafe extern "system" fn pre_create(
    _: *mut FLT_CALLBACK_DATA,
    _: *const FLT_RELATED_OBJECTS,
    _: *mut *mut c_void,
) -> FLT_PREOP_CALLBACK_STATUS {
    PRE_CREATES.fetch_add(1, Ordering::SeqCst);
    FLT_PREOP_SUCCESS_WITH_CALLBACK
}

/// Sets a stream context on every file opened: the teardown must delete it.
unsafe extern "system" fn post_create(
    data: *mut FLT_CALLBACK_DATA,
    objects: *const FLT_RELATED_OBJECTS,
    _: *const c_void,
    _: u32,
) -> FLT_POSTOP_CALLBACK_STATUS {
    // SAFETY: the related objects FltMgr passed for the call.
    let objects = unsafe { &*objects };
    // SAFETY: FltMgr's callback data for the call.
    let data = unsafe { &*data };
    // SAFETY: the status member of the completed create's IO_STATUS_BLOCK.
    let status = unsafe { data.IoStatus.Anonymous.Status };
    if status != STATUS_SUCCESS || objects.FileObject.is_null() {
        return FLT_POSTOP_FINISHED_PROCESSING;
    }
    let mut context: PFLT_CONTEXT = std::ptr::null_mut();
    // SAFETY: the probe's filter and a registered context type; a valid out pointer.
    let status = unsafe {
        FltAllocateContext(
            objects.Filter,
            FLT_STREAM_CONTEXT as u16,
            8,
            NonPagedPoolNx,
            &mut context,
        )
    };
    assert_eq!(status, STATUS_SUCCESS);
    // SAFETY: a live stream context and the file object of a successful create.
    let _ = unsafe {
        FltSetStreamContext(
            objects.Instance,
            objects.FileObject,
            FLT_SET_CONTEXT_KEEP_IF_EXISTS,
            context,
            std::ptr::null_mut(),
        )
    };
    FltReleaseContext(context);
    FLT_POSTOP_FINISHED_PROCESSING
}

unsafe extern "system" fn pre_read(
    data: *mut FLT_CALLBACK_DATA,
    objects: *const FLT_RELATED_OBJECTS,
    _: *mut *mut c_void,
) -> FLT_PREOP_CALLBACK_STATUS {
    PRE_READS.fetch_add(1, Ordering::SeqCst);
    // SAFETY: the related objects FltMgr passed.
    let instance = unsafe { (*objects).Instance };
    match READ_MODE.load(Ordering::SeqCst) {
        QUEUE => {
            // SAFETY: the instance's initialised queue and the live callback data.
            let status = unsafe {
                FltCbdqInsertIo(queue_of(instance), data, std::ptr::null(), std::ptr::null())
            };
            assert_eq!(status, STATUS_SUCCESS);
            FLT_PREOP_PENDING
        }
        PEND_THEN_RESUME => {
            let cbd = data as usize;
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(300));
                event("resumed");
                FltCompletePendedPreOperation(
                    cbd as *const FLT_CALLBACK_DATA,
                    FLT_PREOP_SUCCESS_NO_CALLBACK,
                    std::ptr::null(),
                );
            });
            FLT_PREOP_PENDING
        }
        INSERT_WHILE_DISABLED => {
            let queue = queue_of(instance);
            FltCbdqDisable(queue);
            // SAFETY: the initialised queue and the live callback data.
            let status =
                unsafe { FltCbdqInsertIo(queue, data, std::ptr::null(), std::ptr::null()) };
            INSERT_STATUS.store(status, Ordering::SeqCst);
            FltCbdqEnable(queue);
            FLT_PREOP_SUCCESS_NO_CALLBACK
        }
        _ => FLT_PREOP_SUCCESS_NO_CALLBACK,
    }
}

/// The post-read of a read resumed with FLT_PREOP_SUCCESS_WITH_CALLBACK: takes its time,
/// so that a teardown that did not wait for it would be seen going on without it.
unsafe extern "system" fn post_read(
    _: *mut FLT_CALLBACK_DATA,
    _: *const FLT_RELATED_OBJECTS,
    _: *const c_void,
    _: u32,
) -> FLT_POSTOP_CALLBACK_STATUS {
    std::thread::sleep(Duration::from_millis(100));
    event("post-read");
    FLT_POSTOP_FINISHED_PROCESSING
}

unsafe extern "system" fn setup(
    objects: *const FLT_RELATED_OBJECTS,
    _: u32,
    _: u32,
    _: i32,
) -> NTSTATUS {
    // SAFETY: the related objects of InstanceSetup.
    let objects = unsafe { &*objects };
    let instance = objects.Instance;
    lock(&VOLUMES).push((instance, objects.Volume));
    let mut queue = Box::new(Queue {
        cbdq: FLT_CALLBACK_DATA_QUEUE::default(),
    });
    // SAFETY: the queue lives in QUEUES until the test ends.
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
    lock(&QUEUES).push((instance, queue));
    let mut context: PFLT_CONTEXT = std::ptr::null_mut();
    // SAFETY: the probe's filter and a registered context type; a valid out pointer.
    let status = unsafe {
        FltAllocateContext(
            objects.Filter,
            FLT_INSTANCE_CONTEXT as u16,
            8,
            NonPagedPoolNx,
            &mut context,
        )
    };
    assert_eq!(status, STATUS_SUCCESS);
    // SAFETY: a live instance context for the instance being set up.
    let status = unsafe {
        FltSetInstanceContext(
            instance,
            FLT_SET_CONTEXT_KEEP_IF_EXISTS,
            context,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(status, STATUS_SUCCESS);
    FltReleaseContext(context);
    STATUS_SUCCESS
}

unsafe extern "system" fn query_teardown(_: *const FLT_RELATED_OBJECTS, _: u32) -> NTSTATUS {
    event("query");
    QUERY_STATUS.load(Ordering::SeqCst)
}

/// InstanceTeardownStart as the documentation asks: refuse new queued work, complete what
/// is queued (resumed with a post-operation, which FltMgr must then wait for too).
unsafe extern "system" fn teardown_start(objects: *const FLT_RELATED_OBJECTS, reason: u32) {
    // SAFETY: the related objects FltMgr passed.
    let objects = unsafe { &*objects };
    event(format!("start {reason:#x}"));
    let mut instance: PFLT_INSTANCE = 0;
    // SAFETY: the probe's filter and the instance's volume; a valid out pointer.
    let status = unsafe {
        FltGetVolumeInstanceFromName(
            objects.Filter,
            objects.Volume,
            std::ptr::null(),
            &mut instance,
        )
    };
    REFERENCE_IN_START.store(status, Ordering::SeqCst);
    if status == STATUS_SUCCESS {
        FltObjectDereference(instance as *mut c_void);
    }
    FltCbdqDisable(queue_of(objects.Instance));
    complete_queued(objects.Instance, FLT_PREOP_SUCCESS_WITH_CALLBACK);
}

unsafe extern "system" fn teardown_complete(_: *const FLT_RELATED_OBJECTS, reason: u32) {
    event(format!("complete {reason:#x}"));
}

unsafe extern "system" fn context_cleanup(_: PFLT_CONTEXT, context_type: u16) {
    match u32::from(context_type) {
        FLT_INSTANCE_CONTEXT => INSTANCE_CLEANUPS.fetch_add(1, Ordering::SeqCst),
        _ => STREAM_CLEANUPS.fetch_add(1, Ordering::SeqCst),
    };
}

unsafe extern "system" fn q_insert(
    _: *mut FLT_CALLBACK_DATA_QUEUE,
    cbd: *const FLT_CALLBACK_DATA,
    _: *const c_void,
) -> NTSTATUS {
    lock(&QUEUED).push(cbd as usize);
    STATUS_SUCCESS
}
unsafe extern "system" fn q_remove(_: *mut FLT_CALLBACK_DATA_QUEUE, cbd: *const FLT_CALLBACK_DATA) {
    lock(&QUEUED).retain(|c| *c != cbd as usize);
}
unsafe extern "system" fn q_peek(
    _: *const FLT_CALLBACK_DATA_QUEUE,
    _: *const FLT_CALLBACK_DATA,
    _: *const c_void,
) -> *mut FLT_CALLBACK_DATA {
    lock(&QUEUED)
        .first()
        .map_or(std::ptr::null_mut(), |c| *c as *mut FLT_CALLBACK_DATA)
}
unsafe extern "system" fn q_acquire(_: *mut FLT_CALLBACK_DATA_QUEUE, _: *mut u8) {}
unsafe extern "system" fn q_release(_: *mut FLT_CALLBACK_DATA_QUEUE, _: u8) {}
unsafe extern "system" fn q_complete_canceled(
    _: *mut FLT_CALLBACK_DATA_QUEUE,
    cbd: *mut FLT_CALLBACK_DATA,
) {
    FltCompletePendedPreOperation(cbd, FLT_PREOP_SUCCESS_NO_CALLBACK, std::ptr::null());
}

unsafe extern "system" fn unload(_: u32) -> NTSTATUS {
    FltUnregisterFilter(FILTER.load(Ordering::SeqCst));
    STATUS_SUCCESS
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

static OPERATIONS: Static<[FLT_OPERATION_REGISTRATION; 3]> = Static([
    operation(0, Some(pre_create), Some(post_create)),
    operation(3, Some(pre_read), Some(post_read)),
    operation(0x80, None, None),
]);

const fn context_type(context_type: u32) -> FLT_CONTEXT_REGISTRATION {
    FLT_CONTEXT_REGISTRATION {
        ContextType: context_type as u16,
        Flags: 0,
        ContextCleanupCallback: Some(context_cleanup),
        Size: 8,
        PoolTag: u32::from_le_bytes(*b"Tdpb"),
        ContextAllocateCallback: None,
        ContextFreeCallback: None,
        Reserved1: std::ptr::null_mut(),
    }
}

static CONTEXTS: Static<[FLT_CONTEXT_REGISTRATION; 3]> = Static([
    context_type(FLT_INSTANCE_CONTEXT),
    context_type(FLT_STREAM_CONTEXT),
    context_type(FLT_CONTEXT_END),
]);

/// Which teardown callbacks the probe registers.
#[derive(Clone, Copy)]
struct Callbacks {
    query: bool,
    start: bool,
    complete: bool,
}

const ALL: Callbacks = Callbacks {
    query: true,
    start: true,
    complete: true,
};

/// Boots a machine with `volumes`, the probe filter started with `callbacks`, an
/// application process, and a file of 8 KiB on the first volume, open for reading by the
/// application.
fn probe(volumes: &[VolumeConfig], callbacks: Callbacks) -> (Machine, u32, Handle) {
    let machine = Machine::boot(volumes);
    READ_MODE.store(PASS, Ordering::SeqCst);
    QUERY_STATUS.store(STATUS_SUCCESS, Ordering::SeqCst);
    for counter in [
        &PRE_CREATES,
        &PRE_READS,
        &INSTANCE_CLEANUPS,
        &STREAM_CLEANUPS,
    ] {
        counter.store(0, Ordering::SeqCst);
    }
    lock(&EVENTS).clear();
    lock(&QUEUED).clear();
    lock(&QUEUES).clear();
    lock(&VOLUMES).clear();
    let query: PFLT_INSTANCE_QUERY_TEARDOWN_CALLBACK = if callbacks.query {
        Some(query_teardown)
    } else {
        None
    };
    let start: PFLT_INSTANCE_TEARDOWN_CALLBACK = if callbacks.start {
        Some(teardown_start)
    } else {
        None
    };
    let complete: PFLT_INSTANCE_TEARDOWN_CALLBACK = if callbacks.complete {
        Some(teardown_complete)
    } else {
        None
    };
    let registration = FLT_REGISTRATION {
        Size: std::mem::size_of::<FLT_REGISTRATION>() as u16,
        Version: 0x0203,
        ContextRegistration: CONTEXTS.0.as_ptr(),
        OperationRegistration: OPERATIONS.0.as_ptr(),
        FilterUnloadCallback: Some(unload),
        InstanceSetupCallback: Some(setup),
        InstanceQueryTeardownCallback: query,
        InstanceTeardownStartCallback: start,
        InstanceTeardownCompleteCallback: complete,
        ..Default::default()
    };
    // SAFETY: DRIVER_OBJECT is plain data; zero is valid.
    let driver: &'static DRIVER_OBJECT = Box::leak(Box::new(unsafe { std::mem::zeroed() }));
    let mut filter: PFLT_FILTER = 0;
    // SAFETY: a registration that outlives the call, and its tables that outlive the test.
    let status = unsafe { FltRegisterFilter(driver, &registration, &mut filter) };
    assert_eq!(status, STATUS_SUCCESS);
    FILTER.store(filter, Ordering::SeqCst);
    assert_eq!(FltStartFiltering(filter), STATUS_SUCCESS);
    let app = machine.spawn_process(
        r"\Device\HarddiskVolume1\app.exe",
        PHCM_APPLICATION_DEFAULT,
        false,
    );
    let h = process::run_as(app, || {
        let h = files::create(r"C:\f.bin", &OpenParams::read_write(3)).unwrap();
        let data: Vec<u8> = (0..8192u32).map(|i| i as u8).collect();
        files::write(h, 0, &data, IoMode::NonCached).unwrap();
        h
    });
    (machine, app, h)
}

/// The probe's instance on the first volume.
fn first_instance() -> (PFLT_INSTANCE, PFLT_VOLUME) {
    lock(&VOLUMES)[0]
}

/// A non-cached read of 512 bytes on a thread of the application.
fn read_on_thread(app: u32, h: Handle) -> std::thread::JoinHandle<Result<Vec<u8>, NTSTATUS>> {
    std::thread::spawn(move || process::run_as(app, || files::read(h, 0, 512, IoMode::NonCached)))
}

#[test]
fn a_detach_asks_then_starts_waits_for_the_pended_read_and_its_post_then_completes() {
    let (mut machine, app, h) = probe(&[VolumeConfig::ntfs(1)], ALL);
    READ_MODE.store(QUEUE, Ordering::SeqCst);
    let reader = read_on_thread(app, h);
    wait_for("the read to pend", || machine.pended_operations() == 1);
    let creates = PRE_CREATES.load(Ordering::SeqCst);

    assert_eq!(machine.detach(VOLUME), STATUS_SUCCESS);
    // The read InstanceTeardownStart resumed had a post-read still to run: the teardown
    // waited for it before InstanceTeardownComplete.
    assert_eq!(
        events(),
        ["query", "start 0x1", "post-read", "complete 0x1"],
        "FLTFL_INSTANCE_TEARDOWN_MANUAL"
    );
    assert_eq!(reader.join().unwrap().map(|d| d.len()), Ok(512));
    // A rundown reference is refused once the teardown has begun.
    assert_eq!(
        REFERENCE_IN_START.load(Ordering::SeqCst),
        STATUS_FLT_DELETING_OBJECT
    );
    // Its instance context and the stream context of the file still open are gone.
    assert_eq!(INSTANCE_CLEANUPS.load(Ordering::SeqCst), 1);
    assert_eq!(STREAM_CLEANUPS.load(Ordering::SeqCst), 1);
    assert!(machine.filter().unwrap().attached.is_empty());

    // Nothing reaches the detached instance: opens and reads pass it by.
    let reads = PRE_READS.load(Ordering::SeqCst);
    let data = process::run_as(app, || {
        let h2 = files::create(r"C:\f.bin", &OpenParams::default()).unwrap();
        let data = files::read(h2, 0, 512, IoMode::NonCached);
        files::close(h2);
        data
    });
    assert_eq!(data.map(|d| d.len()), Ok(512), "not pended by the probe");
    assert_eq!(PRE_CREATES.load(Ordering::SeqCst), creates);
    assert_eq!(PRE_READS.load(Ordering::SeqCst), reads);
    assert_eq!(machine.detach(VOLUME), STATUS_FLT_INSTANCE_NOT_FOUND);

    process::run_as(app, || files::close(h));
    assert_eq!(machine.unload_driver(), STATUS_SUCCESS);
    // The unload found no instance left to tear down.
    assert_eq!(events().len(), 4);
    machine.assert_clean();
}

#[test]
fn without_query_teardown_or_with_a_refusal_the_instance_stays_attached() {
    let callbacks = Callbacks {
        query: false,
        ..ALL
    };
    let (mut machine, app, h) = probe(&[VolumeConfig::ntfs(1)], callbacks);
    assert_eq!(machine.detach(VOLUME), STATUS_FLT_DO_NOT_DETACH);
    let (_, volume) = first_instance();
    let filter = FILTER.load(Ordering::SeqCst);
    assert_eq!(
        FltDetachVolume(filter, volume, std::ptr::null()),
        STATUS_FLT_DO_NOT_DETACH
    );
    assert!(events().is_empty());
    assert_eq!(machine.filter().unwrap().attached, [VOLUME]);
    process::run_as(app, || files::close(h));
    assert_eq!(machine.unload_driver(), STATUS_SUCCESS);
    // Unloading does not ask.
    assert_eq!(events(), ["start 0x4", "complete 0x4"]);
    machine.assert_clean();
    drop(machine);

    let (mut machine, app, h) = probe(&[VolumeConfig::ntfs(1)], ALL);
    QUERY_STATUS.store(STATUS_FLT_DO_NOT_DETACH, Ordering::SeqCst);
    let (_, volume) = first_instance();
    let filter = FILTER.load(Ordering::SeqCst);
    assert_eq!(
        FltDetachVolume(filter, volume, std::ptr::null()),
        STATUS_FLT_DO_NOT_DETACH
    );
    assert_eq!(events(), ["query"]);
    assert_eq!(machine.filter().unwrap().attached, [VOLUME]);
    let reads = PRE_READS.load(Ordering::SeqCst);
    let data = process::run_as(app, || files::read(h, 0, 512, IoMode::NonCached));
    assert_eq!(data.map(|d| d.len()), Ok(512));
    assert_eq!(
        PRE_READS.load(Ordering::SeqCst),
        reads + 1,
        "still filtered"
    );
    // The model's instances have no names.
    let name: Vec<u16> = "probe".encode_utf16().collect();
    let name = UNICODE_STRING {
        Length: (name.len() * 2) as u16,
        MaximumLength: (name.len() * 2) as u16,
        Buffer: name.as_ptr().cast_mut(),
    };
    assert_eq!(
        FltDetachVolume(filter, volume, &name),
        STATUS_NOT_IMPLEMENTED
    );
    process::run_as(app, || files::close(h));
    assert_eq!(machine.unload_driver(), STATUS_SUCCESS);
    machine.assert_clean();
}

#[test]
fn unloading_tears_each_instance_down_in_turn_for_a_mandatory_unload() {
    let (mut machine, app, h) = probe(&[VolumeConfig::ntfs(1), VolumeConfig::ntfs(2)], ALL);
    process::run_as(app, || files::close(h));
    assert_eq!(machine.unload_driver(), STATUS_SUCCESS);
    let reason = format!("{FLTFL_INSTANCE_TEARDOWN_MANDATORY_FILTER_UNLOAD:#x}");
    let start = format!("start {reason}");
    let complete = format!("complete {reason}");
    assert_eq!(events(), [start.as_str(), &complete, &start, &complete]);
    assert_eq!(INSTANCE_CLEANUPS.load(Ordering::SeqCst), 2);
    machine.assert_clean();
}

#[test]
fn a_pre_operation_pended_outside_any_queue_is_waited_for() {
    let callbacks = Callbacks {
        start: false,
        ..ALL
    };
    let (mut machine, app, h) = probe(&[VolumeConfig::ntfs(1)], callbacks);
    READ_MODE.store(PEND_THEN_RESUME, Ordering::SeqCst);
    let reader = read_on_thread(app, h);
    wait_for("the read to pend", || machine.pended_operations() == 1);
    let (_, volume) = first_instance();
    let status = FltDetachVolume(FILTER.load(Ordering::SeqCst), volume, std::ptr::null());
    assert_eq!(status, STATUS_SUCCESS);
    let manual = format!("complete {FLTFL_INSTANCE_TEARDOWN_MANUAL:#x}");
    assert_eq!(events(), ["query", "resumed", manual.as_str()]);
    assert_eq!(reader.join().unwrap().map(|d| d.len()), Ok(512));
    process::run_as(app, || files::close(h));
    assert_eq!(machine.unload_driver(), STATUS_SUCCESS);
    machine.assert_clean();
}

#[test]
fn operations_left_pended_without_a_teardown_start_callback_are_reported_after_the_bound() {
    let callbacks = Callbacks {
        start: false,
        ..ALL
    };
    let (mut machine, app, h) = probe(&[VolumeConfig::ntfs(1)], callbacks);
    let limit = Duration::from_millis(300);
    machine.set_teardown_wait_limit(limit);
    READ_MODE.store(QUEUE, Ordering::SeqCst);
    let reader = read_on_thread(app, h);
    wait_for("the read to pend", || machine.pended_operations() == 1);
    let (instance, _) = first_instance();

    let started = Instant::now();
    assert_eq!(machine.detach(VOLUME), STATUS_SUCCESS);
    assert!(started.elapsed() >= limit, "returned before the bound");
    let v = machine.take_violations();
    assert!(
        fired(&v, "1 operation(s) still hold instance")
            && fired(&v, "(1 pended by the filter, 1 in a cancel-safe queue)")
            && fired(&v, "registered no InstanceTeardownStartCallback"),
        "{v:?}"
    );
    assert!(
        fired(
            &v,
            "still holds 1 operation(s) after InstanceTeardownCompleteCallback"
        ),
        "{v:?}"
    );
    // Windows would still be waiting; the model went on to InstanceTeardownComplete.
    assert_eq!(events().last().map(String::as_str), Some("complete 0x1"));

    // The operation is still the filter's to complete.
    complete_queued(instance, FLT_PREOP_SUCCESS_NO_CALLBACK);
    assert_eq!(reader.join().unwrap().map(|d| d.len()), Ok(512));
    process::run_as(app, || files::close(h));
    assert_eq!(machine.unload_driver(), STATUS_SUCCESS);
    machine.assert_clean();
}

#[test]
fn a_rundown_reference_on_the_instance_holds_its_teardown_until_it_is_dropped() {
    let (mut machine, app, h) = probe(&[VolumeConfig::ntfs(1)], ALL);
    let (instance, volume) = first_instance();
    let filter = FILTER.load(Ordering::SeqCst);
    let mut referenced: PFLT_INSTANCE = 0;
    // SAFETY: the probe's filter and volume; a valid out pointer.
    let status =
        unsafe { FltGetVolumeInstanceFromName(filter, volume, std::ptr::null(), &mut referenced) };
    assert_eq!((status, referenced), (STATUS_SUCCESS, instance));
    let dropper = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        event("dereferenced");
        FltObjectDereference(referenced as *mut c_void);
    });
    assert_eq!(machine.detach(VOLUME), STATUS_SUCCESS);
    // InstanceTeardownComplete does not wait for it; freeing the instance does.
    assert_eq!(
        events(),
        ["query", "start 0x1", "complete 0x1", "dereferenced"]
    );
    dropper.join().unwrap();

    let (mut machine, app, h) = {
        process::run_as(app, || files::close(h));
        assert_eq!(machine.unload_driver(), STATUS_SUCCESS);
        machine.assert_clean();
        drop(machine);
        probe(&[VolumeConfig::ntfs(1)], ALL)
    };
    machine.set_teardown_wait_limit(Duration::from_millis(200));
    let (_, volume) = first_instance();
    let filter = FILTER.load(Ordering::SeqCst);
    let mut leaked: PFLT_INSTANCE = 0;
    // SAFETY: as above.
    let status =
        unsafe { FltGetVolumeInstanceFromName(filter, volume, std::ptr::null(), &mut leaked) };
    assert_eq!(status, STATUS_SUCCESS);
    assert_eq!(machine.detach(VOLUME), STATUS_SUCCESS);
    let v = machine.take_violations();
    assert!(fired(&v, "1 rundown reference(s) on instance"), "{v:?}");
    FltObjectDereference(leaked as *mut c_void);
    process::run_as(app, || files::close(h));
    assert_eq!(machine.unload_driver(), STATUS_SUCCESS);
    machine.assert_clean();
}

unsafe extern "system" fn work(_: isize, _: *const c_void, _: *const c_void) {
    event("work ran");
}

#[test]
fn a_work_item_queued_on_the_instance_holds_its_freeing_until_its_routine_returns() {
    let (mut machine, app, h) = probe(&[VolumeConfig::ntfs(1)], ALL);
    let (instance, _) = first_instance();
    let object = instance as *const c_void;
    machine.hold_work_queues(true);
    let item = FltAllocateGenericWorkItem();
    let status =
        FltQueueGenericWorkItem(item, object, Some(work), DelayedWorkQueue, std::ptr::null());
    assert_eq!(status, STATUS_SUCCESS);
    std::thread::scope(|scope| {
        let machine = &machine;
        scope.spawn(move || {
            let object = instance as *const c_void;
            wait_for("InstanceTeardownComplete", || {
                events().iter().any(|e| e.starts_with("complete"))
            });
            // The instance is being torn down: no new work is queued on it.
            let late = FltAllocateGenericWorkItem();
            let status = FltQueueGenericWorkItem(
                late,
                object,
                Some(work),
                DelayedWorkQueue,
                std::ptr::null(),
            );
            assert_eq!(status, STATUS_FLT_DELETING_OBJECT);
            FltFreeGenericWorkItem(late);
            std::thread::sleep(Duration::from_millis(100));
            event("released");
            machine.hold_work_queues(false);
        });
        assert_eq!(machine.detach(VOLUME), STATUS_SUCCESS);
    });
    assert_eq!(
        events(),
        ["query", "start 0x1", "complete 0x1", "released", "work ran"]
    );
    FltFreeGenericWorkItem(item);
    process::run_as(app, || files::close(h));
    assert_eq!(machine.unload_driver(), STATUS_SUCCESS);
    machine.assert_clean();
}

#[test]
fn a_disabled_queue_refuses_inserts() {
    let (mut machine, app, h) = probe(&[VolumeConfig::ntfs(1)], ALL);
    READ_MODE.store(INSERT_WHILE_DISABLED, Ordering::SeqCst);
    let data = process::run_as(app, || files::read(h, 0, 512, IoMode::NonCached));
    assert_eq!(data.map(|d| d.len()), Ok(512));
    assert_eq!(
        INSERT_STATUS.load(Ordering::SeqCst),
        STATUS_FLT_CBDQ_DISABLED
    );
    process::run_as(app, || files::close(h));
    assert_eq!(machine.unload_driver(), STATUS_SUCCESS);
    machine.assert_clean();
}

// ---------------------------------------------------------------------------------------
// The real driver, with a provider that never answers
// ---------------------------------------------------------------------------------------

/// What the provider saw, and the transfers it keeps unanswered.
#[derive(Default)]
struct Seen {
    fetches: Vec<u64>,
    kept: Vec<Transfer>,
    cancels: Vec<(u64, CancelReason)>,
}

#[derive(Default)]
struct Stuck {
    seen: Mutex<Seen>,
    changed: Condvar,
}

impl Stuck {
    /// Waits until `done` holds of what the provider saw, for at most ten seconds.
    fn wait(&self, done: impl Fn(&Seen) -> bool) -> bool {
        let guard = lock(&self.seen);
        let (guard, _) = self
            .changed
            .wait_timeout_while(guard, Duration::from_secs(10), |s| !done(s))
            .unwrap_or_else(PoisonError::into_inner);
        done(&guard)
    }
}

/// A provider that keeps every fetch and never answers it.
struct Hang(Arc<Stuck>);

impl SyncProvider for Hang {
    fn fetch_data(&self, request: FetchRequest, transfer: Transfer) {
        let mut seen = lock(&self.0.seen);
        seen.fetches.push(request.request_id);
        seen.kept.push(transfer);
        self.0.changed.notify_all();
    }

    fn cancel_fetch(&self, cancel: CancelFetch) {
        lock(&self.0.seen)
            .cancels
            .push((cancel.request_id, cancel.reason));
        self.0.changed.notify_all();
    }
}

fn make_directory(path: &str) {
    let params = OpenParams {
        // FILE_LIST_DIRECTORY | SYNCHRONIZE, FILE_OPEN_IF, FILE_DIRECTORY_FILE and
        // FILE_SYNCHRONOUS_IO_NONALERT.
        access: 0x0010_0001,
        disposition: 3,
        options: 0x21,
        ..OpenParams::default()
    };
    let h = process::run_as(SYSTEM_PID, || files::create(path, &params)).unwrap();
    process::run_as(SYSTEM_PID, || files::close(h));
}

#[test]
fn detaching_the_volume_fails_the_reads_pended_on_a_provider_that_never_answers_at_once() {
    // Three cached readers of each of the first two wait pended in the driver's queue;
    // one reader maps the third, and waits inside the driver's
    // AcquireForSectionSynchronization callback (an operation that cannot pend).
    const FILES: [&str; 3] = ["a.bin", "b.bin", "c.bin"];
    const READERS_PER_FILE: usize = 3;
    let mut machine = Machine::boot(&[VolumeConfig::ntfs(1)]);
    make_directory(r"C:\Windows");
    machine.set_symbolic_link(r"\SystemRoot", r"\Device\HarddiskVolume1\Windows");
    make_directory(r"C:\Cloud");
    assert_eq!(
        machine.load_driver(cloudflt_driver::nt::driver_entry),
        STATUS_SUCCESS
    );
    let provider = machine.spawn_process(
        r"\Device\HarddiskVolume1\Program Files\Stuck\stuck.exe",
        PHCM_APPLICATION_DEFAULT,
        true,
    );
    let stuck = Arc::new(Stuck::default());
    // A minute before the driver gives up on the provider by itself.
    let config = SyncRootConfig::new(r"C:\Cloud", "stuck", "1.0")
        .hydration(HydrationPolicy::Full)
        .timeout(Duration::from_secs(60));
    let connection = process::run_as(provider, || SyncRoot::connect(config, Hang(stuck.clone())))
        .expect("the provider connects");
    let specs: Vec<PlaceholderSpec> = FILES
        .iter()
        .map(|f| {
            PlaceholderSpec::file(*f, 64 * 1024)
                .identity(f.as_bytes().to_vec())
                .in_sync(true)
        })
        .collect();
    let created = process::run_as(provider, || connection.create_placeholders(&specs));
    assert!(created.iter().all(Result::is_ok), "{created:?}");

    let app = machine.spawn_process(
        r"\Device\HarddiskVolume1\Tools\app.exe",
        PHCM_APPLICATION_DEFAULT,
        false,
    );
    let cached = FILES[..2]
        .iter()
        .flat_map(|f| (0..READERS_PER_FILE).map(move |i| (*f, i as u64 * 4096, IoMode::Cached)));
    let readers: Vec<_> = cached
        .chain([(FILES[2], 0, IoMode::Mapped)])
        .map(|(file, offset, mode)| {
            std::thread::spawn(move || {
                process::run_as(app, || {
                    let path = format!(r"C:\Cloud\{file}");
                    let read = files::create(&path, &OpenParams::default()).and_then(|h| {
                        let read = files::read(h, offset, 4096, mode);
                        files::close(h);
                        read
                    });
                    (read.map(|d| d.len()), Instant::now())
                })
            })
        })
        .collect();
    let pended = 2 * READERS_PER_FILE;
    wait_for("the cached reads to pend", || {
        machine.pended_operations() == pended
    });
    assert!(stuck.wait(|s| s.fetches.len() == FILES.len()));

    let detached = Instant::now();
    assert_eq!(machine.detach(VOLUME), STATUS_SUCCESS);
    let took = detached.elapsed();
    assert!(took < Duration::from_secs(2), "the detach took {took:?}");
    for reader in readers {
        let (read, done) = reader.join().unwrap();
        assert_eq!(read, Err(STATUS_CLOUD_FILE_REQUEST_ABORTED));
        let after = done.duration_since(detached);
        assert!(
            after < Duration::from_secs(2),
            "a read ended {after:?} after"
        );
    }
    // The provider is told that each fetch is no longer wanted.
    assert!(
        stuck.wait(|s| s.cancels.len() == FILES.len()),
        "cancels: {:?}",
        lock(&stuck.seen).cancels
    );
    {
        let seen = lock(&stuck.seen);
        let mut cancelled: Vec<u64> = seen.cancels.iter().map(|(id, _)| *id).collect();
        let mut fetched = seen.fetches.clone();
        cancelled.sort_unstable();
        fetched.sort_unstable();
        assert_eq!(cancelled, fetched);
        assert!(
            seen.cancels
                .iter()
                .all(|(_, reason)| *reason == CancelReason::IoAborted)
        );
    }
    assert!(machine.filter().unwrap().attached.is_empty());

    // The volume is no longer filtered: a placeholder is what NTFS makes of an unknown
    // tag, and nothing new is asked of the provider.
    let opened = process::run_as(app, || {
        files::create(r"C:\Cloud\a.bin", &OpenParams::default())
    });
    assert_eq!(opened.err(), Some(STATUS_IO_REPARSE_TAG_NOT_HANDLED));
    assert_eq!(lock(&stuck.seen).fetches.len(), FILES.len());

    // The provider leaves: its unanswered transfers are dropped (FETCH_FAILED for
    // requests the driver no longer knows) and it disconnects, in its process.
    let kept = std::mem::take(&mut lock(&stuck.seen).kept);
    process::run_as(provider, || {
        drop(kept);
        connection.disconnect()
    })
    .expect("the provider disconnects");
    assert_eq!(machine.unload_driver(), STATUS_SUCCESS);
    machine.assert_clean();
}
