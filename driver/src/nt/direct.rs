//! Cached reads of a placeholder whose data is only partly on disk, served by the driver
//! from disk, non-cached, into the caller's buffer.
//!
//! Why: a cached read goes through the cache manager, whose page faults the memory
//! manager widens to a cluster of neighbouring pages (and which reads ahead). Under a
//! placeholder that is partly present those neighbours may be missing, and a paging read
//! of missing data must fail (it may not wait for a provider, and zeros are never
//! data): the application's read of present data would fail through its own widened
//! page-in. So while a placeholder is not whole, its cached reads never reach the cache:
//! the read is served here, exactly its own range (sector-aligned below the caller), and
//! the cache manager is never asked to page in a missing range. Non-cached reads reach
//! NTFS unchanged (NTFS reads exactly them); mapped views hydrate the whole file at
//! section synchronisation; once the file is whole, reads go through the cache again.
//!
//! The caller's buffer is locked (FltLockUserBuffer) in its own context before the read
//! pends, and written only through the MDL's system mapping (`buffer`).

use windows_sys::Wdk::Foundation::FILE_OBJECT;
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FLT_CALLBACK_DATA, FltLockUserBuffer, PFLT_INSTANCE,
};
use windows_sys::Win32::Foundation::{
    NTSTATUS, STATUS_CLOUD_FILE_INSUFFICIENT_RESOURCES, STATUS_END_OF_FILE,
    STATUS_INSUFFICIENT_RESOURCES, STATUS_INVALID_PARAMETER, STATUS_SUCCESS,
};

use super::buffer;
use super::file::{Fo, PoolBuf};
use super::layout::FLT_IO_PARAMETER_BLOCK;

/// FO_SYNCHRONOUS_IO (wdm.h): the file system keeps the file position of such a file
/// object; a read completed here must move it as NTFS would.
const FO_SYNCHRONOUS_IO: u32 = 0x2;

/// Locks the caller's buffer of read `data` for [`serve`], in the caller's context (the
/// pre-operation), so that it can be served later from any thread.
pub(crate) fn prepare(data: *mut FLT_CALLBACK_DATA) -> NTSTATUS {
    // SAFETY: an IRP read's live callback data, in its pre-operation at PASSIVE_LEVEL.
    unsafe { FltLockUserBuffer(data) }
}

/// Serves read `data` from disk: reads its range (clipped to `size`) non-cached through
/// `instance`, below the driver, into the caller's buffer. Returns the status and the bytes
/// returned, for the caller to complete the operation with. PASSIVE_LEVEL.
pub(crate) fn serve(
    data: *mut FLT_CALLBACK_DATA,
    instance: PFLT_INSTANCE,
    size: u64,
    sector: u32,
) -> (NTSTATUS, usize) {
    // SAFETY: the read's live callback data (not completed yet).
    let Some(d) = (unsafe { data.as_mut() }) else {
        return (STATUS_CLOUD_FILE_INSUFFICIENT_RESOURCES, 0);
    };
    // SAFETY: its parameter block, laid out as fltKernel.h declares it (nt::layout).
    let Some(iopb) = (unsafe { d.Iopb.cast::<FLT_IO_PARAMETER_BLOCK>().as_ref() }) else {
        return (STATUS_CLOUD_FILE_INSUFFICIENT_RESOURCES, 0);
    };
    // SAFETY: IRP_MJ_READ: the union holds the read parameters.
    let read = unsafe { iopb.Parameters.Read };
    let file_object = iopb.TargetFileObject;
    // The pre-read passes reads with a negative offset down (read_of); one here is not a
    // place in the file.
    let Ok(offset) = u64::try_from(read.ByteOffset) else {
        return (STATUS_INVALID_PARAMETER, 0);
    };
    if offset >= size {
        return (STATUS_END_OF_FILE, 0);
    }
    let wanted = u64::from(read.Length).min(size - offset);
    let Ok(wanted_len) = usize::try_from(wanted) else {
        return (STATUS_INSUFFICIENT_RESOURCES, 0);
    };
    let sector = u64::from(sector.max(512));
    let start = offset - offset % sector;
    // `offset + wanted` <= size; rounding it up can still pass u64::MAX for a size the
    // reparse data claims near it.
    let Some(end) = (offset + wanted).checked_next_multiple_of(sector) else {
        return (STATUS_INVALID_PARAMETER, 0);
    };
    let Some(mut bounce) = usize::try_from(end - start).ok().and_then(PoolBuf::zeroed) else {
        return (STATUS_INSUFFICIENT_RESOURCES, 0);
    };
    let fo = Fo {
        instance,
        file_object: file_object.cast(),
    };
    let got = match fo.read_noncached(start, &mut bounce) {
        Ok(got) => got,
        Err(status) => return (status, 0),
    };
    let skip = (offset - start) as usize;
    let n = wanted_len.min(got.saturating_sub(skip));
    // SAFETY: the MDL `prepare` locked (or a kernel-mode requestor's buffer), valid until
    // the operation completes, which the caller does after this returns.
    let target =
        unsafe { buffer::system_buffer(d.RequestorMode, read.ReadBuffer, read.MdlAddress, n) };
    let Some(target) = target else {
        return (STATUS_INSUFFICIENT_RESOURCES, 0);
    };
    if let Some(src) = bounce.as_slice().get(skip..skip + n) {
        super::file::copy(target, src);
    }
    advance(file_object, offset, n);
    (STATUS_SUCCESS, n)
}

/// Moves a synchronous file object's position past the bytes read, as the file system
/// does for the reads it completes.
fn advance(file_object: *mut FILE_OBJECT, offset: u64, n: usize) {
    // SAFETY: the read's target file object, referenced by the operation.
    let Some(fo) = (unsafe { file_object.as_mut() }) else {
        return;
    };
    if fo.Flags & FO_SYNCHRONOUS_IO != 0 {
        fo.CurrentByteOffset = i64::try_from(offset.saturating_add(n as u64)).unwrap_or(i64::MAX);
    }
}
