//! The write side of the cache and memory managers: dirty pages, the lazy writer, the
//! mapped page writer, flushes, and the thread's top-level IRP that tells a filter
//! which of them a paging write comes from.
//!
//! Owns: which of a stream's cached pages are dirty (and whether through a mapped view),
//! the cache manager's valid data length per stream, the paging writes that carry dirty
//! pages to the file system, and IoGetTopLevelIrp / IoSetTopLevelIrp. Does not own: the
//! pages themselves and the read side (page-in clustering, read-ahead: `files.rs`).
//!
//! What is modelled, and from which documentation:
//! - A cached write (an IRP_MJ_WRITE without IRP_NOCACHE / IRP_PAGING_IO, which every
//!   filter sees first) is copied into the stream's pages by the file system
//!   (CcCopyWrite) and reaches the disk later. A page the write covers only in part, and
//!   that holds data on disk, is faulted in first with a paging read through the filters
//!   (the cache manager needs the rest of the page); a page wholly covered, or wholly past
//!   the old end of file, is not read. End of file moves at the cached write (NTFS
//!   extends the file before it copies), the data later.
//! - The lazy writer writes dirty pages back with paging writes (IRP_PAGING_IO |
//!   IRP_NOCACHE | IRP_SYNCHRONOUS_PAGING_IO: CcFlushCache writes through
//!   IoSynchronousPageWrite), one per run of contiguous dirty pages, at APC_LEVEL
//!   ("paging I/O writes may arrive at APC_LEVEL"), KernelMode, from a System-process
//!   thread whose top-level IRP is FSRTL_CACHE_TOP_LEVEL_IRP. When: Windows' lazy writer
//!   scans about once a second; the model, which keeps no such clock, writes a stream's
//!   dirty pages when its last open is cleaned up (CcUninitializeCacheMap hands a shared
//!   cache map with dirty data to the lazy writer, which flushes it before it is
//!   deleted), at FlushFileBuffers-like flushes ([`flush`]) and when the machine shuts
//!   down ([`lazy_write_all`]). After writing past the valid data length it knew, it
//!   sends the file system FileEndOfFileInformation with AdvanceOnly = TRUE, as
//!   CcSetValidData does (IRP_PAGING_IO, from the same thread), which filters see and
//!   which never changes end of file.
//! - A write through a mapped view faults the page in (a paging read, clustered as a
//!   fault is), changes it in memory and leaves it modified; when the view is unmapped
//!   and the file closed, the mapped page writer writes it back: IRP_PAGING_IO |
//!   IRP_NOCACHE (IoAsynchronousPageWrite, no SYNCHRONOUS_PAGING_IO), at APC_LEVEL, from
//!   a System-process thread whose top-level IRP is FSRTL_MOD_WRITE_TOP_LEVEL_IRP. A
//!   stream that also has a cache map is written by the lazy writer instead (its flush
//!   writes every modified page of the section, however it was modified).
//! - A non-cached read or write of a range with dirty pages flushes them first, and a
//!   non-cached write purges the cache after it, as NTFS does for coherency
//!   (CcFlushCache / CcPurgeCacheSection on its non-cached path); those paging writes
//!   run in the caller's thread, under the file system's own top-level IRP.
//! - A purge never drops a dirty page: only truncation (set end of file, overwrite,
//!   supersede, delete) discards data not yet written, as CcSetFileSizes and
//!   CcPurgeCacheSection do there.
//!
//! Model simplifications, and why: the writers run on a thread of their own that the
//! closing (or flushing) thread waits for, so that a test sees their writes before it
//! goes on; Windows would run them a moment later. A failed paging write drops its pages
//! (Windows reports a lost delayed write and discards them too).

use std::cell::Cell;
use std::ffi::c_void;

use windows_sys::Win32::Foundation::NTSTATUS;

use super::files;
use super::io::{self, Completion, irp, major};
use super::irql::APC_LEVEL;
use super::ntfs::FileId;
use super::process::{self, SYSTEM_PID};
use super::with_kernel;
use windows_sys::Wdk::Storage::FileSystem::Minifilters::PFLT_VOLUME;

/// `FSRTL_CACHE_TOP_LEVEL_IRP`: the lazy writer (and read-ahead) is the top level.
pub const FSRTL_CACHE_TOP_LEVEL_IRP: usize = 0x2;
/// `FSRTL_MOD_WRITE_TOP_LEVEL_IRP`: the mapped (modified) page writer is the top level
/// (ntifs.h: FSP 1, CACHE 2, MOD_WRITE 3, FAST_IO 4).
pub const FSRTL_MOD_WRITE_TOP_LEVEL_IRP: usize = 0x3;

thread_local! {
    /// The thread's top-level IRP (ETHREAD.TopLevelIrp): 0 for a request that enters the
    /// file system stack at the top, an FSRTL_* value for the cache and memory managers'
    /// threads, the file system's own request while it issues nested I/O.
    static TOP_LEVEL: Cell<usize> = const { Cell::new(0) };
}

/// IoGetTopLevelIrp.
#[unsafe(no_mangle)]
pub extern "system" fn IoGetTopLevelIrp() -> *mut c_void {
    TOP_LEVEL.with(Cell::get) as *mut c_void
}

/// IoSetTopLevelIrp.
#[unsafe(no_mangle)]
pub extern "system" fn IoSetTopLevelIrp(irp: *mut c_void) {
    TOP_LEVEL.with(|t| t.set(irp as usize));
}

/// Runs `f` with `top` as the thread's top-level IRP, then puts the old one back.
pub(crate) fn with_top_level<R>(top: usize, f: impl FnOnce() -> R) -> R {
    let old = TOP_LEVEL.with(|t| t.replace(top));
    let r = f();
    TOP_LEVEL.with(|t| t.set(old));
    r
}

/// The file system's entry: a request that arrives with no top-level IRP makes itself
/// the top level while the file system handles it (NTFS's NtfsIsTopLevelRequest), so
/// that the I/O it issues meanwhile is seen as nested.
pub(crate) fn as_file_system<R>(request: usize, f: impl FnOnce() -> R) -> R {
    if TOP_LEVEL.with(Cell::get) == 0 {
        with_top_level(request, f)
    } else {
        f()
    }
}

/// Who writes dirty pages back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Writer {
    /// The cache manager's lazy writer (a system thread).
    Lazy,
    /// The memory manager's mapped page writer (a system thread).
    MappedPages,
    /// The file system flushing in the caller's thread (FlushFileBuffers, coherency).
    InPlace,
}

/// The dirty pages of a stream in `first..last` (all with `None`), taken out of the
/// dirty set with their bytes, and whether any was dirtied through a mapped view.
fn take_dirty(volume: PFLT_VOLUME, file: FileId, range: Option<(u64, u64)>) -> Vec<(u64, Vec<u8>)> {
    with_kernel(|k| {
        let Some(s) = k.io.streams.get_mut(&(volume, file)) else {
            return Vec::new();
        };
        let pages: Vec<u64> = s
            .dirty
            .keys()
            .copied()
            .filter(|p| range.is_none_or(|(a, b)| *p >= a && *p < b))
            .collect();
        pages
            .into_iter()
            .filter_map(|p| {
                s.dirty.remove(&p);
                s.pages.get(&p).map(|bytes| (p, bytes.clone()))
            })
            .collect()
    })
}

/// Whether the stream has dirty pages in `first..last`.
pub(crate) fn has_dirty(volume: PFLT_VOLUME, file: FileId, first: u64, last: u64) -> bool {
    with_kernel(|k| {
        k.io.streams
            .get(&(volume, file))
            .is_some_and(|s| s.dirty.range(first..last).next().is_some())
    })
}

/// Writes the stream's dirty pages (those in pages `range`, or all) back through the
/// filters with `writer`'s paging writes, through file object `fo`.
pub(crate) fn flush_pages(
    fo: usize,
    volume: PFLT_VOLUME,
    file: FileId,
    range: Option<(u64, u64)>,
    writer: Writer,
) {
    let pages = take_dirty(volume, file, range);
    if pages.is_empty() {
        return;
    }
    let run = move || write_runs(fo, volume, file, &pages, writer);
    match writer {
        Writer::InPlace => run(),
        Writer::Lazy | Writer::MappedPages => {
            let top = if writer == Writer::Lazy {
                FSRTL_CACHE_TOP_LEVEL_IRP
            } else {
                FSRTL_MOD_WRITE_TOP_LEVEL_IRP
            };
            std::thread::scope(|scope| {
                let thread = scope.spawn(move || {
                    process::run_as(SYSTEM_PID, || with_top_level(top, run));
                });
                // A writer thread that panicked has reported through the verifier or
                // the test already; the closing thread goes on as Windows' would.
                let _ = thread.join();
            });
        }
    }
}

fn write_runs(
    fo: usize,
    volume: PFLT_VOLUME,
    file: FileId,
    pages: &[(u64, Vec<u8>)],
    writer: Writer,
) {
    let flags = match writer {
        Writer::MappedPages => irp::PAGING_IO | irp::NOCACHE,
        Writer::Lazy | Writer::InPlace => {
            irp::PAGING_IO | irp::NOCACHE | irp::SYNCHRONOUS_PAGING_IO
        }
    };
    let mut highest = 0;
    let mut i = 0;
    while i < pages.len() {
        let first = pages[i].0;
        let mut buffer = pages[i].1.clone();
        let mut j = i + 1;
        while j < pages.len() && pages[j].0 == first + (j - i) as u64 {
            buffer.extend_from_slice(&pages[j].1);
            j += 1;
        }
        let done = paging_write(fo, volume, first * files::PAGE, &mut buffer, flags);
        if done.status >= 0 {
            highest = highest.max(first * files::PAGE + buffer.len() as u64);
        }
        i = j;
    }
    if writer == Writer::Lazy {
        advance_valid_data(fo, volume, file, highest);
    }
}

/// One paging write, KernelMode, at APC_LEVEL, from the calling thread's process.
fn paging_write(
    fo: usize,
    volume: PFLT_VOLUME,
    offset: u64,
    buffer: &mut [u8],
    flags: u32,
) -> Completion {
    let mut req = files::request(major::WRITE, flags, fo, volume, None);
    req.requestor_mode = 0;
    req.irql = APC_LEVEL;
    req.params.Write.Length = buffer.len() as u32;
    req.params.Write.ByteOffset = offset as i64;
    req.params.Write.WriteBuffer = buffer.as_mut_ptr().cast();
    io::dispatch(&req, files::fs_write)
}

/// CcSetValidData after the lazy writer wrote up to `end`: FileEndOfFileInformation with
/// AdvanceOnly when that passes the valid data length the cache manager knew.
fn advance_valid_data(fo: usize, volume: PFLT_VOLUME, file: FileId, end: u64) {
    let Some(size) = files::size_of(volume, file) else {
        return;
    };
    let end = end.min(size);
    let advance = with_kernel(|k| {
        let s = k.io.streams.get_mut(&(volume, file))?;
        (end > s.valid_data).then(|| {
            s.valid_data = end;
        })
    });
    if advance.is_none() {
        return;
    }
    let mut input = (end as i64).to_le_bytes().to_vec();
    let mut req = files::request(
        major::SET_INFORMATION,
        irp::PAGING_IO | irp::SYNCHRONOUS_PAGING_IO,
        fo,
        volume,
        None,
    );
    req.requestor_mode = 0;
    req.params.SetFileInformation.Length = input.len() as u32;
    req.params.SetFileInformation.FileInformationClass =
        windows_sys::Wdk::Storage::FileSystem::FileEndOfFileInformation;
    req.params
        .SetFileInformation
        .Anonymous
        .Anonymous
        .AdvanceOnly = 1;
    req.params.SetFileInformation.InfoBuffer = input.as_mut_ptr().cast();
    io::dispatch(&req, files::fs_set_information);
}

/// Writes every dirty page of every stream back, as the lazy writer does when the
/// system shuts down (CcWaitForCurrentLazyWriterActivity at shutdown). Streams whose
/// file objects are all gone cannot be written and have no dirty pages.
pub fn lazy_write_all() {
    let dirty: Vec<(PFLT_VOLUME, FileId)> = with_kernel(|k| {
        k.io.streams
            .iter()
            .filter(|(_, s)| !s.dirty.is_empty())
            .map(|(key, _)| *key)
            .collect()
    });
    for (volume, file) in dirty {
        if let Some(fo) = files::any_file_object(volume, file) {
            flush_pages(fo, volume, file, None, Writer::Lazy);
        }
    }
}

/// Flushes a handle's file as FlushFileBuffers does, as far as data goes: its dirty
/// pages are written back by the file system in the caller's thread (CcFlushCache).
pub fn flush(handle: files::Handle) -> NTSTATUS {
    files::flush(handle)
}
