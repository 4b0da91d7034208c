//! Paging I/O as the memory and cache managers issue it: a cached read's page fault is
//! widened to the run of non-resident pages around it within its aligned 8-page cluster,
//! and sequential cached reads are followed by a read-ahead of the next 64 KiB. A probe
//! filter records every paging read it sees, so a filter that assumes a cached read pages
//! in exactly its own range would see these tests fail.

use std::sync::Mutex;

use cloudflt_driver::nt::layout::FLT_IO_PARAMETER_BLOCK;
use cloudflt_tests::model::files::{self, IoMode, OpenParams};
use cloudflt_tests::model::process::{self, PHCM_APPLICATION_DEFAULT};
use cloudflt_tests::model::{Machine, VolumeConfig};
use cloudflt_tests::probe::{self, END, Operations, op};
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FLT_CALLBACK_DATA, FLT_PREOP_CALLBACK_STATUS, FLT_PREOP_SUCCESS_NO_CALLBACK,
    FLT_RELATED_OBJECTS,
};

/// Paging reads seen, as (offset, length).
static PAGING: Mutex<Vec<(u64, u32)>> = Mutex::new(Vec::new());

/// IRP_PAGING_IO (wdm.h).
const IRP_PAGING_IO: u32 = 0x2;

unsafe extern "system" fn pre_read(
    data: *mut FLT_CALLBACK_DATA,
    _: *const FLT_RELATED_OBJECTS,
    _: *mut *mut std::ffi::c_void,
) -> FLT_PREOP_CALLBACK_STATUS {
    // SAFETY: the callback data FltMgr passed.
    let iopb = unsafe { (*data).Iopb }.cast::<FLT_IO_PARAMETER_BLOCK>();
    // SAFETY: its parameter block, live for the call.
    let iopb = unsafe { &*iopb };
    if iopb.IrpFlags & IRP_PAGING_IO != 0 {
        // SAFETY: IRP_MJ_READ: the union holds the read parameters.
        let read = unsafe { iopb.Parameters.Read };
        PAGING
            .lock()
            .expect("paging log")
            .push((read.ByteOffset as u64, read.Length));
    }
    FLT_PREOP_SUCCESS_NO_CALLBACK
}

static OPERATIONS: Operations<2> = Operations([op(3 /* IRP_MJ_READ */, Some(pre_read), None), END]);

/// A machine with the probe loaded and a 256 KiB file written; `reads` (offset, length)
/// then run as cached reads through one handle. The paging reads the probe saw.
fn paging_reads_for(reads: &[(u64, usize)]) -> Vec<(u64, u32)> {
    let machine = Machine::boot(&[VolumeConfig::ntfs(1)]);
    let app = machine.spawn_process(
        "\\Device\\HarddiskVolume1\\app.exe",
        PHCM_APPLICATION_DEFAULT,
        false,
    );
    process::run_as(app, || {
        let f = files::create("C:\\f.bin", &OpenParams::read_write(2)).expect("create f.bin");
        files::write(f, 0, &vec![7u8; 256 * 1024], IoMode::NonCached).expect("write");
        files::close(f);
    });
    probe::start(&OPERATIONS.0);
    PAGING.lock().expect("paging log").clear();
    process::run_as(app, || {
        let f = files::create("C:\\f.bin", &OpenParams::read_write(1)).expect("open f.bin");
        for &(offset, length) in reads {
            let data = files::read(f, offset, length, IoMode::Cached).expect("cached read");
            assert_eq!(data, vec![7u8; length]);
        }
        files::close(f);
    });
    let seen = PAGING.lock().expect("paging log").clone();
    drop(machine);
    seen
}

#[test]
fn a_page_fault_reads_its_whole_cluster() {
    // One byte of page 3: pages 0-7 (32 KiB) come in with one paging read.
    assert_eq!(paging_reads_for(&[(12288 + 5, 1)]), vec![(0, 32768)]);
}

#[test]
fn a_cluster_stops_at_pages_already_resident() {
    // Page 9 brings its whole cluster, pages 8-15; page 11 is then resident and its read
    // (not sequential to the first) pages nothing in.
    assert_eq!(
        paging_reads_for(&[(9 * 4096, 10), (11 * 4096, 10)]),
        vec![(32768, 32768)]
    );
}

#[test]
fn sequential_reads_are_followed_by_read_ahead() {
    // Two reads in a row: the second continues the first, so the next 64 KiB past it is
    // read ahead (its own cluster was resident already).
    let seen = paging_reads_for(&[(0, 4096), (4096, 4096)]);
    assert_eq!(seen, vec![(0, 32768), (32768, 40960)]);
}
