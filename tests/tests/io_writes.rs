//! Writes as a minifilter sees them (`tests/src/model/cache.rs`): a cached write first
//! as the application's own IRP, its data later as the lazy writer's paging write
//! (FSRTL_CACHE_TOP_LEVEL_IRP, a System thread, APC_LEVEL) followed by CcSetValidData's
//! AdvanceOnly; a write through a mapped view only as the mapped page writer's paging
//! write (FSRTL_MOD_WRITE_TOP_LEVEL_IRP) once the file is closed; partly written pages
//! paged in first; dirty pages flushed before a non-cached read. A probe filter records
//! every write, paging read and set-information it sees in its pre-operation callback.

use std::sync::Mutex;

use cloudflt_driver::nt::layout::FLT_IO_PARAMETER_BLOCK;
use cloudflt_tests::model::cache::{
    FSRTL_CACHE_TOP_LEVEL_IRP, FSRTL_MOD_WRITE_TOP_LEVEL_IRP, IoGetTopLevelIrp,
};
use cloudflt_tests::model::files::{self, Handle, IoMode, OpenParams};
use cloudflt_tests::model::io::FltGetRequestorProcessId;
use cloudflt_tests::model::irql;
use cloudflt_tests::model::process::{self, PHCM_APPLICATION_DEFAULT, SYSTEM_PID};
use cloudflt_tests::model::{Machine, VolumeConfig};
use cloudflt_tests::probe::{self, END, Operations, op};
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FLT_CALLBACK_DATA, FLT_PREOP_CALLBACK_STATUS, FLT_PREOP_SUCCESS_NO_CALLBACK,
    FLT_RELATED_OBJECTS,
};

/// IRP_NOCACHE, IRP_PAGING_IO, IRP_SYNCHRONOUS_PAGING_IO (wdm.h).
const IRP_NOCACHE: u32 = 0x1;
const IRP_PAGING_IO: u32 = 0x2;
const IRP_SYNCHRONOUS_PAGING_IO: u32 = 0x40;
const IRP_MJ_READ: u8 = 3;
const IRP_MJ_WRITE: u8 = 4;
const IRP_MJ_SET_INFORMATION: u8 = 6;
const FILE_END_OF_FILE_INFORMATION: i32 = 20;

/// One operation the probe saw.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Seen {
    major: u8,
    irp_flags: u32,
    offset: u64,
    length: u32,
    top_level: usize,
    requestor: u32,
    kernel_mode: bool,
    irql: u8,
    /// Set-information: AdvanceOnly.
    advance_only: bool,
}

static SEEN: Mutex<Vec<Seen>> = Mutex::new(Vec::new());

unsafe extern "system" fn pre(
    data: *mut FLT_CALLBACK_DATA,
    _: *const FLT_RELATED_OBJECTS,
    _: *mut *mut std::ffi::c_void,
) -> FLT_PREOP_CALLBACK_STATUS {
    // SAFETY: the callback data FltMgr passed, live for the call.
    let data_ref = unsafe { &*data };
    let mode = data_ref.RequestorMode;
    // SAFETY: its parameter block, live for the call.
    let iopb = unsafe { &*data_ref.Iopb.cast::<FLT_IO_PARAMETER_BLOCK>() };
    let major = iopb.MajorFunction;
    let (offset, length, advance_only) = match major {
        IRP_MJ_WRITE => {
            // SAFETY: IRP_MJ_WRITE: the union holds the write parameters.
            let w = unsafe { iopb.Parameters.Write };
            (w.ByteOffset as u64, w.Length, false)
        }
        IRP_MJ_READ => {
            // SAFETY: IRP_MJ_READ: the read parameters.
            let r = unsafe { iopb.Parameters.Read };
            (r.ByteOffset as u64, r.Length, false)
        }
        _ => {
            // SAFETY: IRP_MJ_SET_INFORMATION: the set parameters.
            let s = unsafe { iopb.Parameters.SetFileInformation };
            if s.FileInformationClass != FILE_END_OF_FILE_INFORMATION {
                return FLT_PREOP_SUCCESS_NO_CALLBACK;
            }
            // SAFETY: FileEndOfFileInformation's buffer holds its 8-byte EndOfFile.
            let eof = unsafe { s.InfoBuffer.cast::<i64>().read_unaligned() };
            // SAFETY: for this class the union holds ReplaceIfExists/AdvanceOnly.
            let advance_only = unsafe { s.Anonymous.Anonymous.AdvanceOnly } != 0;
            (eof as u64, 0, advance_only)
        }
    };
    if major == IRP_MJ_READ && iopb.IrpFlags & IRP_PAGING_IO == 0 {
        return FLT_PREOP_SUCCESS_NO_CALLBACK;
    }
    SEEN.lock().expect("probe log").push(Seen {
        major,
        irp_flags: iopb.IrpFlags,
        offset,
        length,
        top_level: IoGetTopLevelIrp() as usize,
        requestor: FltGetRequestorProcessId(data),
        kernel_mode: mode == 0,
        irql: irql::current(),
        advance_only,
    });
    FLT_PREOP_SUCCESS_NO_CALLBACK
}

static OPERATIONS: Operations<4> = Operations([
    op(IRP_MJ_READ, Some(pre), None),
    op(IRP_MJ_WRITE, Some(pre), None),
    op(IRP_MJ_SET_INFORMATION, Some(pre), None),
    END,
]);

fn take() -> Vec<Seen> {
    std::mem::take(&mut *SEEN.lock().expect("probe log"))
}

/// A machine with `f.bin` (16 KiB of 7s, written non-cached before the probe starts),
/// the probe loaded, and the app's pid.
fn machine() -> (Machine, u32) {
    let machine = Machine::boot(&[VolumeConfig::ntfs(1)]);
    let app = machine.spawn_process(
        "\\Device\\HarddiskVolume1\\app.exe",
        PHCM_APPLICATION_DEFAULT,
        false,
    );
    process::run_as(app, || {
        let f = files::create("C:\\f.bin", &OpenParams::read_write(2)).expect("create f.bin");
        files::write(f, 0, &[7u8; 16384], IoMode::NonCached).expect("write");
        files::close(f);
    });
    probe::start(&OPERATIONS.0);
    take();
    (machine, app)
}

fn on_disk(path: &str, offset: u64, length: usize) -> Vec<u8> {
    files::with_volume(path, |ntfs, rel| {
        let id = ntfs.lookup(rel)?;
        let data = ntfs.read_file(id, offset, length).ok()?;
        Some(data)
    })
    .expect("volume")
    .expect("file")
}

fn open(app: u32) -> Handle {
    process::run_as(app, || {
        files::create("C:\\f.bin", &OpenParams::read_write(1))
    })
    .expect("open f.bin")
}

#[test]
fn a_mapped_write_reaches_the_filter_only_as_the_mapped_page_writers_paging_write() {
    let (machine, app) = machine();
    let h = open(app);
    process::run_as(app, || files::write(h, 4096 + 10, b"abc", IoMode::Mapped))
        .expect("mapped write");
    let faulted = take();
    assert!(
        faulted.iter().all(|s| s.major == IRP_MJ_READ),
        "only the fault's paging read while the view is mapped: {faulted:?}"
    );
    assert!(
        faulted
            .iter()
            .any(|s| s.offset <= 4096 && s.offset + u64::from(s.length) >= 8192),
        "the page was faulted in: {faulted:?}"
    );
    assert_eq!(
        on_disk("C:\\f.bin", 4096 + 10, 3),
        vec![7; 3],
        "not on disk yet"
    );
    process::run_as(app, || files::close(h));
    let written = take();
    assert_eq!(
        written,
        vec![Seen {
            major: IRP_MJ_WRITE,
            irp_flags: IRP_PAGING_IO | IRP_NOCACHE,
            offset: 4096,
            length: 4096,
            top_level: FSRTL_MOD_WRITE_TOP_LEVEL_IRP,
            requestor: SYSTEM_PID,
            kernel_mode: true,
            irql: irql::APC_LEVEL,
            advance_only: false,
        }]
    );
    assert_eq!(on_disk("C:\\f.bin", 4096 + 10, 3), b"abc");
    drop(machine);
}

#[test]
fn a_cached_write_is_seen_first_and_the_lazy_writer_writes_its_pages_at_close() {
    let (machine, app) = machine();
    let h = open(app);
    // Bytes 100..200 of page 0 (which holds data: paged in first) and the first 5000
    // bytes past the end of file (pages 4 and 5, which hold none: not read).
    process::run_as(app, || {
        files::write(h, 100, &[1u8; 100], IoMode::Cached).expect("write 1");
        files::write(h, 16384, &[2u8; 5000], IoMode::Cached).expect("write 2");
    });
    let seen = take();
    let writes: Vec<&Seen> = seen.iter().filter(|s| s.major == IRP_MJ_WRITE).collect();
    assert_eq!(writes.len(), 2, "{seen:?}");
    for (w, (offset, length)) in writes.iter().zip([(100, 100), (16384, 5000)]) {
        assert_eq!((w.offset, w.length), (offset, length));
        assert_eq!(
            w.irp_flags & (IRP_PAGING_IO | IRP_NOCACHE),
            0,
            "cached: {w:?}"
        );
        assert_eq!(
            (w.top_level, w.requestor),
            (0, app),
            "the application's own: {w:?}"
        );
    }
    let reads: Vec<(u64, u32)> = seen
        .iter()
        .filter(|s| s.major == IRP_MJ_READ)
        .map(|s| (s.offset, s.length))
        .collect();
    assert_eq!(
        reads,
        vec![(0, 4096)],
        "only the partly written page with data is read"
    );
    assert_eq!(
        on_disk("C:\\f.bin", 100, 100),
        vec![7; 100],
        "not written yet"
    );
    assert_eq!(
        files::with_volume("C:\\f.bin", |n, rel| n.node(n.lookup(rel)?))
            .unwrap()
            .unwrap()
            .size,
        21384,
        "end of file moved at the cached write"
    );
    process::run_as(app, || files::close(h));
    let lazy = take();
    let expect = |offset: u64, length: u32| Seen {
        major: IRP_MJ_WRITE,
        irp_flags: IRP_PAGING_IO | IRP_NOCACHE | IRP_SYNCHRONOUS_PAGING_IO,
        offset,
        length,
        top_level: FSRTL_CACHE_TOP_LEVEL_IRP,
        requestor: SYSTEM_PID,
        kernel_mode: true,
        irql: irql::APC_LEVEL,
        advance_only: false,
    };
    assert_eq!(
        lazy,
        vec![
            expect(0, 4096),
            expect(16384, 8192),
            Seen {
                major: IRP_MJ_SET_INFORMATION,
                irp_flags: IRP_PAGING_IO | IRP_SYNCHRONOUS_PAGING_IO,
                offset: 21384,
                length: 0,
                top_level: FSRTL_CACHE_TOP_LEVEL_IRP,
                requestor: SYSTEM_PID,
                kernel_mode: true,
                irql: irql::PASSIVE_LEVEL,
                advance_only: true,
            },
        ]
    );
    assert_eq!(on_disk("C:\\f.bin", 100, 100), vec![1; 100]);
    assert_eq!(on_disk("C:\\f.bin", 16384, 5000), vec![2; 5000]);
    drop(machine);
}

#[test]
fn a_non_cached_read_flushes_dirty_pages_first_and_truncation_discards_them() {
    let (machine, app) = machine();
    let h = open(app);
    process::run_as(app, || {
        files::write(h, 8192, &[3u8; 4096], IoMode::Cached).expect("write");
        files::write(h, 12288, &[4u8; 4096], IoMode::Cached).expect("write");
    });
    take();
    let read = process::run_as(app, || files::read(h, 8192, 512, IoMode::NonCached)).expect("read");
    assert_eq!(read, vec![3; 512]);
    let seen = take();
    let paging: Vec<&Seen> = seen
        .iter()
        .filter(|s| s.irp_flags & IRP_PAGING_IO != 0)
        .collect();
    assert_eq!(paging.len(), 1, "{seen:?}");
    assert_eq!((paging[0].offset, paging[0].length), (8192, 4096));
    assert_ne!(
        paging[0].top_level, 0,
        "nested in the file system's own request"
    );
    assert_eq!(paging[0].requestor, app, "in the reader's thread");
    // Truncation drops page 3's dirty bytes: nothing is written back at close.
    let eof = 12288i64.to_le_bytes();
    assert_eq!(
        process::run_as(app, || files::set_information(
            h,
            FILE_END_OF_FILE_INFORMATION,
            &eof
        )),
        0
    );
    take();
    process::run_as(app, || files::close(h));
    assert!(
        take().iter().all(|s| s.major != IRP_MJ_WRITE),
        "no write back of discarded pages"
    );
    drop(machine);
}

#[test]
fn flush_writes_back_in_the_callers_thread() {
    let (machine, app) = machine();
    let h = open(app);
    process::run_as(app, || files::write(h, 0, b"flushed", IoMode::Cached)).expect("write");
    take();
    assert_eq!(process::run_as(app, || files::flush(h)), 0);
    let seen = take();
    let writes: Vec<&Seen> = seen.iter().filter(|s| s.major == IRP_MJ_WRITE).collect();
    assert_eq!(writes.len(), 1, "{seen:?}");
    assert_eq!(writes[0].requestor, app);
    assert_eq!(on_disk("C:\\f.bin", 0, 7), b"flushed");
    process::run_as(app, || files::close(h));
    assert!(
        take().iter().all(|s| s.major != IRP_MJ_WRITE),
        "nothing left dirty"
    );
    drop(machine);
}
