//! The driver's own file operations, through FltMgr below its instance: opening by NT
//! path, the reparse point, sizes, sparse ranges, attributes and non-cached writes.
//!
//! Everything here runs at PASSIVE_LEVEL and sends I/O only to the filters below
//! cloudflt, so none of it re-enters cloudflt's own callbacks.

use core::ptr::NonNull;

use windows_sys::Wdk::Foundation::{FILE_OBJECT, OBJECT_ATTRIBUTES};
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FLTFL_IO_OPERATION_DO_NOT_UPDATE_BYTE_OFFSET, FLTFL_IO_OPERATION_NON_CACHED, FltClose,
    FltCreateFileEx2, FltFsControlFile, FltQueryInformationFile, FltReadFile,
    FltSetInformationFile, FltTagFile, FltUntagFile, FltWriteFile, PFLT_FILTER, PFLT_INSTANCE,
};
use windows_sys::Wdk::Storage::FileSystem::{
    FILE_BASIC_INFORMATION, FILE_DIRECTORY_FILE, FILE_NON_DIRECTORY_FILE, FILE_OPEN_REPARSE_POINT,
    FILE_SYNCHRONOUS_IO_NONALERT, FileBasicInformation, FileDispositionInformation,
    FileEndOfFileInformation,
};
use windows_sys::Wdk::System::SystemServices::{
    FILE_ATTRIBUTE_TAG_INFORMATION, FILE_END_OF_FILE_INFORMATION, IO_IGNORE_SHARE_ACCESS_CHECK,
    ObfDereferenceObject,
};
use windows_sys::Win32::Foundation::{
    HANDLE, NTSTATUS, OBJ_CASE_INSENSITIVE, OBJ_KERNEL_HANDLE, STATUS_CLOUD_FILE_INVALID_REQUEST,
    STATUS_INSUFFICIENT_RESOURCES, STATUS_INVALID_PARAMETER, STATUS_NOT_A_REPARSE_POINT,
    STATUS_REPARSE, UNICODE_STRING,
};
use windows_sys::Win32::System::IO::IO_STATUS_BLOCK;
use windows_sys::Win32::System::Ioctl::{
    FILE_ZERO_DATA_INFORMATION, FSCTL_GET_REPARSE_POINT, FSCTL_SET_SPARSE, FSCTL_SET_ZERO_DATA,
};

use cloudflt_proto::reparse;

use super::pool::{POOL_FLAG_NON_PAGED, tag};
use super::status::nt_success;
use windows_sys::Wdk::System::SystemServices::{ExAllocatePool2, ExFreePoolWithTag};

/// Copies as many bytes as both slices hold. `copy_from_slice` would panic on a length
/// mismatch, and kernel code has no panic path.
pub(crate) fn copy(dst: &mut [u8], src: &[u8]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d = *s;
    }
}

/// Pool tag of the driver's I/O buffers.
const TAG_BUFFER: u32 = tag(b"CFbf");

/// FILE_ATTRIBUTE_TAG_INFORMATION's class number.
const FILE_ATTRIBUTE_TAG_INFORMATION_CLASS: i32 = 35;

/// A byte buffer in non-paged pool. Allocations of a page or more are page aligned, which
/// satisfies every device's alignment for non-cached I/O.
pub(crate) struct PoolBuf {
    ptr: NonNull<u8>,
    len: usize,
}

impl PoolBuf {
    /// `len` zeroed bytes (ExAllocatePool2 zeroes), or `None` when pool is exhausted.
    pub(crate) fn zeroed(len: usize) -> Option<Self> {
        if len == 0 {
            return None;
        }
        // SAFETY: a non-paged allocation of a non-zero size; checked for NULL.
        let raw = unsafe { ExAllocatePool2(POOL_FLAG_NON_PAGED, len, TAG_BUFFER) };
        NonNull::new(raw.cast::<u8>()).map(|ptr| Self { ptr, len })
    }

    pub(crate) fn as_slice(&self) -> &[u8] {
        // SAFETY: `len` initialised (zeroed) bytes owned by this buffer.
        unsafe { core::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as above, and `&mut self` makes the access exclusive.
        unsafe { core::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl Drop for PoolBuf {
    fn drop(&mut self) {
        // SAFETY: allocated by `zeroed` with TAG_BUFFER, freed once.
        unsafe { ExFreePoolWithTag(self.ptr.as_ptr().cast(), TAG_BUFFER) };
    }
}

/// What to open.
#[derive(Clone, Copy)]
pub(crate) enum Kind {
    File,
    Directory,
    Any,
}

/// A file the driver opened below its instance: a kernel handle and a referenced file
/// object, both closed on drop (at PASSIVE_LEVEL).
pub(crate) struct OwnedFile {
    handle: HANDLE,
    fo: Fo,
}

/// A file object (someone's, or the driver's own) and the instance below which the
/// driver's I/O on it goes.
#[derive(Clone, Copy)]
pub(crate) struct Fo {
    pub(crate) instance: PFLT_INSTANCE,
    pub(crate) file_object: *const FILE_OBJECT,
}

impl core::ops::Deref for OwnedFile {
    type Target = Fo;
    fn deref(&self) -> &Fo {
        &self.fo
    }
}

// SAFETY: a kernel handle and a referenced object are usable from any thread.
unsafe impl Send for OwnedFile {}

impl OwnedFile {
    /// Opens (or creates, per `disposition`) `path` on `instance`'s volume, on the
    /// reparse point itself, ignoring other openers' sharing (the driver must be able to
    /// fill a file an application opened without write sharing).
    pub(crate) fn open(
        filter: PFLT_FILTER,
        instance: PFLT_INSTANCE,
        path: &[u16],
        access: u32,
        disposition: u32,
        kind: Kind,
        attributes: u32,
    ) -> Result<Self, NTSTATUS> {
        let bytes =
            u16::try_from(path.len().saturating_mul(2)).map_err(|_| STATUS_INVALID_PARAMETER)?;
        let name = UNICODE_STRING {
            Length: bytes,
            MaximumLength: bytes,
            // Only read by the call.
            Buffer: path.as_ptr().cast_mut(),
        };
        let object = OBJECT_ATTRIBUTES {
            Length: core::mem::size_of::<OBJECT_ATTRIBUTES>() as u32,
            RootDirectory: core::ptr::null_mut(),
            ObjectName: &name,
            Attributes: OBJ_KERNEL_HANDLE | OBJ_CASE_INSENSITIVE,
            SecurityDescriptor: core::ptr::null(),
            SecurityQualityOfService: core::ptr::null(),
        };
        let kind_option = match kind {
            Kind::File => FILE_NON_DIRECTORY_FILE,
            Kind::Directory => FILE_DIRECTORY_FILE,
            Kind::Any => 0,
        };
        let mut handle: HANDLE = core::ptr::null_mut();
        let mut file_object: *mut FILE_OBJECT = core::ptr::null_mut();
        // SAFETY: IO_STATUS_BLOCK is plain data; zero is a valid pattern.
        let mut iosb: IO_STATUS_BLOCK = unsafe { core::mem::zeroed() };
        // The create starts at the top of the volume's stack, so it passes cloudflt's own
        // pre-create and gets its open-reparse entry: directory placeholders on the way
        // open as directories instead of reparsing. (All later I/O on the file object
        // goes below `instance`.)
        // SAFETY: all pointers outlive the call; PASSIVE_LEVEL (callers' contract);
        // OBJ_KERNEL_HANDLE so the handle is not in the current process's table.
        let status = unsafe {
            FltCreateFileEx2(
                filter,
                0,
                &mut handle,
                &mut file_object,
                access | 0x0010_0000, // SYNCHRONIZE
                &object,
                &mut iosb,
                core::ptr::null(),
                attributes,
                0x7, // FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE
                disposition,
                kind_option | FILE_OPEN_REPARSE_POINT | FILE_SYNCHRONOUS_IO_NONALERT,
                core::ptr::null(),
                0,
                IO_IGNORE_SHARE_ACCESS_CHECK,
                core::ptr::null(),
            )
        };
        if !nt_success(status) {
            return Err(status);
        }
        if status == STATUS_REPARSE {
            // FILE_OPEN_REPARSE_POINT applies to the last component only: an intermediate
            // reparse point (a link inside the root) is not followed by the driver.
            return Err(STATUS_CLOUD_FILE_INVALID_REQUEST);
        }
        match NonNull::new(file_object) {
            Some(file_object) => Ok(Self {
                handle,
                fo: Fo {
                    instance,
                    file_object: file_object.as_ptr(),
                },
            }),
            None => {
                // SAFETY: the handle just opened, closed once.
                unsafe { FltClose(handle) };
                Err(STATUS_INSUFFICIENT_RESOURCES)
            }
        }
    }
}

impl Fo {
    /// Reads `buffer.len()` bytes at `offset` (both sector aligned) non-cached, below
    /// `instance`, without moving the file object's position; the bytes read (fewer at end
    /// of file).
    pub(crate) fn read_noncached(
        &self,
        offset: u64,
        buffer: &mut PoolBuf,
    ) -> Result<usize, NTSTATUS> {
        let at = i64::try_from(offset).map_err(|_| STATUS_INVALID_PARAMETER)?;
        let length = u32::try_from(buffer.len).map_err(|_| STATUS_INVALID_PARAMETER)?;
        let mut read = 0u32;
        // SAFETY: the buffer is ours and outlives the synchronous call; PASSIVE_LEVEL (the
        // callers'); the file object is live for the operation that asks.
        let status = unsafe {
            FltReadFile(
                self.instance,
                self.file_object(),
                &at,
                length,
                buffer.ptr.as_ptr().cast(),
                FLTFL_IO_OPERATION_NON_CACHED | FLTFL_IO_OPERATION_DO_NOT_UPDATE_BYTE_OFFSET,
                &mut read,
                None,
                core::ptr::null(),
            )
        };
        if !nt_success(status) {
            return Err(status);
        }
        Ok(read as usize)
    }

    fn file_object(&self) -> *const FILE_OBJECT {
        self.file_object
    }

    /// FileAttributeTagInformation: (attributes, reparse tag).
    pub(crate) fn attribute_tag(&self) -> Result<(u32, u32), NTSTATUS> {
        let mut info = FILE_ATTRIBUTE_TAG_INFORMATION {
            FileAttributes: 0,
            ReparseTag: 0,
        };
        query(
            self.instance,
            self.file_object(),
            &mut info,
            FILE_ATTRIBUTE_TAG_INFORMATION_CLASS,
        )?;
        Ok((info.FileAttributes, info.ReparseTag))
    }

    /// NTFS's file id (FileInternalInformation).
    pub(crate) fn file_id(&self) -> Result<u64, NTSTATUS> {
        let mut id = 0i64;
        query(self.instance, self.file_object(), &mut id, 6)?;
        Ok(id as u64)
    }

    /// End of file (FileStandardInformation).
    pub(crate) fn size(&self) -> Result<u64, NTSTATUS> {
        // SAFETY: plain data; zero is valid.
        let mut info: windows_sys::Wdk::Storage::FileSystem::FILE_STANDARD_INFORMATION =
            unsafe { core::mem::zeroed() };
        query(self.instance, self.file_object(), &mut info, 5)?;
        u64::try_from(info.EndOfFile).map_err(|_| STATUS_INVALID_PARAMETER)
    }

    /// The file's attributes (FileBasicInformation).
    pub(crate) fn basic(&self) -> Result<FILE_BASIC_INFORMATION, NTSTATUS> {
        // SAFETY: plain data; zero is valid.
        let mut info: FILE_BASIC_INFORMATION = unsafe { core::mem::zeroed() };
        query(
            self.instance,
            self.file_object(),
            &mut info,
            FileBasicInformation,
        )?;
        Ok(info)
    }

    /// Sets FileBasicInformation (times of 0 are left alone, -1 stops this handle updating
    /// them; attributes of 0 are left alone).
    pub(crate) fn set_basic(&self, info: &FILE_BASIC_INFORMATION) -> Result<(), NTSTATUS> {
        set(
            self.instance,
            self.file_object(),
            info,
            FileBasicInformation,
        )
    }

    /// Keeps this handle's writes from changing the file's timestamps: hydration is not a
    /// modification.
    pub(crate) fn freeze_times(&self) -> Result<(), NTSTATUS> {
        self.set_basic(&FILE_BASIC_INFORMATION {
            CreationTime: 0,
            LastAccessTime: -1,
            LastWriteTime: -1,
            ChangeTime: -1,
            FileAttributes: 0,
        })
    }

    /// Replaces the attribute bits in `clear` with those in `add`.
    pub(crate) fn change_attributes(&self, clear: u32, add: u32) -> Result<(), NTSTATUS> {
        let current = self.basic()?.FileAttributes;
        let wanted = (current & !clear) | add;
        if wanted == current {
            return Ok(());
        }
        // FILE_ATTRIBUTE_NORMAL stands for "none" (0 would mean "leave alone").
        let attributes = if wanted == 0 { 0x80 } else { wanted };
        self.set_basic(&FILE_BASIC_INFORMATION {
            CreationTime: 0,
            LastAccessTime: 0,
            LastWriteTime: 0,
            ChangeTime: 0,
            FileAttributes: attributes,
        })
    }

    pub(crate) fn set_end_of_file(&self, size: u64) -> Result<(), NTSTATUS> {
        let info = FILE_END_OF_FILE_INFORMATION {
            EndOfFile: i64::try_from(size).map_err(|_| STATUS_INVALID_PARAMETER)?,
        };
        set(
            self.instance,
            self.file_object(),
            &info,
            FileEndOfFileInformation,
        )
    }

    /// Marks the file for deletion when this handle closes (undoing a half-made
    /// placeholder).
    pub(crate) fn delete_on_close(&self) -> Result<(), NTSTATUS> {
        let delete: u8 = 1;
        set(
            self.instance,
            self.file_object(),
            &delete,
            FileDispositionInformation,
        )
    }

    pub(crate) fn set_sparse(&self) -> Result<(), NTSTATUS> {
        let set_sparse: u8 = 1;
        self.fs_control(
            FSCTL_SET_SPARSE,
            core::slice::from_ref(&set_sparse),
            &mut [],
        )
        .map(drop)
    }

    /// Deallocates `[start, end)` of a sparse file (reads return zeros there).
    pub(crate) fn zero_range(&self, start: u64, end: u64) -> Result<(), NTSTATUS> {
        let info = FILE_ZERO_DATA_INFORMATION {
            FileOffset: i64::try_from(start).map_err(|_| STATUS_INVALID_PARAMETER)?,
            BeyondFinalZero: i64::try_from(end).map_err(|_| STATUS_INVALID_PARAMETER)?,
        };
        // SAFETY: FILE_ZERO_DATA_INFORMATION is plain data of this size.
        let bytes = unsafe {
            core::slice::from_raw_parts(
                (&info as *const FILE_ZERO_DATA_INFORMATION).cast::<u8>(),
                core::mem::size_of::<FILE_ZERO_DATA_INFORMATION>(),
            )
        };
        self.fs_control(FSCTL_SET_ZERO_DATA, bytes, &mut [])
            .map(drop)
    }

    /// The reparse buffer, or `Ok(None)` if the file has none.
    pub(crate) fn reparse_point(&self) -> Result<Option<(PoolBuf, usize)>, NTSTATUS> {
        let mut buffer = PoolBuf::zeroed(cloudflt_proto::placeholder::MAX_REPARSE_SIZE)
            .ok_or(STATUS_INSUFFICIENT_RESOURCES)?;
        match self.fs_control(FSCTL_GET_REPARSE_POINT, &[], buffer.as_mut_slice()) {
            Ok(len) => Ok(Some((buffer, len))),
            Err(STATUS_NOT_A_REPARSE_POINT) => Ok(None),
            Err(status) => Err(status),
        }
    }

    /// Sets (or replaces) cloudflt's reparse point with `blob` as its data.
    pub(crate) fn tag(&self, blob: &[u8]) -> Result<(), NTSTATUS> {
        let guid = reparse_guid();
        let length = u16::try_from(blob.len()).map_err(|_| STATUS_INVALID_PARAMETER)?;
        // SAFETY: the file object was opened with write access by `open`; the GUID and
        // data outlive the call; PASSIVE_LEVEL.
        let status = unsafe {
            FltTagFile(
                self.instance,
                self.file_object(),
                reparse::TAG,
                &guid,
                blob.as_ptr().cast(),
                length,
            )
        };
        if nt_success(status) {
            Ok(())
        } else {
            Err(status)
        }
    }

    /// Removes cloudflt's reparse point.
    pub(crate) fn untag(&self) -> Result<(), NTSTATUS> {
        let guid = reparse_guid();
        // SAFETY: as for `tag`.
        let status =
            unsafe { FltUntagFile(self.instance, self.file_object(), reparse::TAG, &guid) };
        if nt_success(status) {
            Ok(())
        } else {
            Err(status)
        }
    }

    /// Writes `buffer` (sector-aligned length, page-aligned memory) at `offset`,
    /// non-cached, straight to disk.
    pub(crate) fn write_noncached(&self, offset: u64, buffer: &PoolBuf) -> Result<(), NTSTATUS> {
        let at = i64::try_from(offset).map_err(|_| STATUS_INVALID_PARAMETER)?;
        let length = u32::try_from(buffer.len).map_err(|_| STATUS_INVALID_PARAMETER)?;
        let mut written = 0u32;
        // SAFETY: the buffer is ours and outlives the synchronous call; PASSIVE_LEVEL.
        let status = unsafe {
            FltWriteFile(
                self.instance,
                self.file_object(),
                &at,
                length,
                buffer.ptr.as_ptr().cast(),
                FLTFL_IO_OPERATION_NON_CACHED | FLTFL_IO_OPERATION_DO_NOT_UPDATE_BYTE_OFFSET,
                &mut written,
                None,
                core::ptr::null(),
            )
        };
        if !nt_success(status) {
            return Err(status);
        }
        if written != length {
            return Err(windows_sys::Win32::Foundation::STATUS_DISK_FULL);
        }
        Ok(())
    }

    fn fs_control(&self, code: u32, input: &[u8], output: &mut [u8]) -> Result<usize, NTSTATUS> {
        let mut returned = 0u32;
        let in_len = u32::try_from(input.len()).map_err(|_| STATUS_INVALID_PARAMETER)?;
        let out_len = u32::try_from(output.len()).map_err(|_| STATUS_INVALID_PARAMETER)?;
        // SAFETY: both buffers outlive the synchronous call; PASSIVE_LEVEL.
        let status = unsafe {
            FltFsControlFile(
                self.instance,
                self.file_object(),
                code,
                if input.is_empty() {
                    core::ptr::null()
                } else {
                    input.as_ptr().cast()
                },
                in_len,
                if output.is_empty() {
                    core::ptr::null_mut()
                } else {
                    output.as_mut_ptr().cast()
                },
                out_len,
                &mut returned,
            )
        };
        if nt_success(status) {
            Ok(returned as usize)
        } else {
            Err(status)
        }
    }
}

impl Drop for OwnedFile {
    fn drop(&mut self) {
        // SAFETY: the reference FltCreateFileEx2 gave, dropped once.
        unsafe { ObfDereferenceObject(self.fo.file_object.cast()) };
        // SAFETY: the kernel handle FltCreateFileEx2 gave, closed once.
        unsafe { FltClose(self.handle) };
    }
}

/// cloudflt's GUID: `reparse::GUID` holds it in its on-disk (little-endian fields) form.
pub(crate) fn reparse_guid() -> windows_sys::core::GUID {
    let g = reparse::GUID;
    let [
        a0,
        a1,
        a2,
        a3,
        b0,
        b1,
        c0,
        c1,
        d0,
        d1,
        d2,
        d3,
        d4,
        d5,
        d6,
        d7,
    ] = g;
    windows_sys::core::GUID {
        data1: u32::from_le_bytes([a0, a1, a2, a3]),
        data2: u16::from_le_bytes([b0, b1]),
        data3: u16::from_le_bytes([c0, c1]),
        data4: [d0, d1, d2, d3, d4, d5, d6, d7],
    }
}

/// FltQueryInformationFile into a fixed-size structure.
pub(crate) fn query<T>(
    instance: PFLT_INSTANCE,
    file_object: *const FILE_OBJECT,
    info: &mut T,
    class: i32,
) -> Result<(), NTSTATUS> {
    let mut returned = 0u32;
    // SAFETY: `info` is writable for its size; PASSIVE_LEVEL; a live file object.
    let status = unsafe {
        FltQueryInformationFile(
            instance,
            file_object,
            (info as *mut T).cast(),
            core::mem::size_of::<T>() as u32,
            class,
            &mut returned,
        )
    };
    if nt_success(status) {
        Ok(())
    } else {
        Err(status)
    }
}

fn set<T>(
    instance: PFLT_INSTANCE,
    file_object: *const FILE_OBJECT,
    info: &T,
    class: i32,
) -> Result<(), NTSTATUS> {
    // SAFETY: `info` is readable for its size; PASSIVE_LEVEL; a live file object.
    let status = unsafe {
        FltSetInformationFile(
            instance,
            file_object,
            (info as *const T).cast(),
            core::mem::size_of::<T>() as u32,
            class,
        )
    };
    if nt_success(status) {
        Ok(())
    } else {
        Err(status)
    }
}
