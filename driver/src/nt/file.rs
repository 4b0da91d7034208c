//! The driver's own file operations, through FltMgr below its instance: opening by NT
//! path or by file id, the reparse point, sizes, sparse ranges, attributes and
//! non-cached writes.
//!
//! Everything here runs at PASSIVE_LEVEL. I/O on an open file goes only to the filters
//! below cloudflt, so none of it re-enters cloudflt's own callbacks; of the creates, only
//! [`OwnedFile::open`]'s starts at the top of the stack (it says why).

use core::ptr::NonNull;

use windows_sys::Wdk::Foundation::{FILE_OBJECT, OBJECT_ATTRIBUTES};
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FLTFL_IO_OPERATION_DO_NOT_UPDATE_BYTE_OFFSET, FLTFL_IO_OPERATION_NON_CACHED, FltClose,
    FltCreateFileEx2, FltFsControlFile, FltGetVolumeFromInstance, FltGetVolumeName,
    FltObjectDereference, FltQueryInformationFile, FltReadFile, FltSetInformationFile, FltTagFile,
    FltUntagFile, FltWriteFile, FltWriteFileEx, PFLT_FILTER, PFLT_INSTANCE, PFLT_VOLUME,
};
use windows_sys::Wdk::Storage::FileSystem::{
    FILE_BASIC_INFORMATION, FILE_DIRECTORY_FILE, FILE_NON_DIRECTORY_FILE, FILE_OPEN_BY_FILE_ID,
    FILE_OPEN_REPARSE_POINT, FILE_SYNCHRONOUS_IO_NONALERT, FileBasicInformation,
    FileDispositionInformation, FileEndOfFileInformation,
};
use windows_sys::Wdk::System::SystemServices::{
    FILE_ATTRIBUTE_TAG_INFORMATION, FILE_END_OF_FILE_INFORMATION, IO_IGNORE_SHARE_ACCESS_CHECK,
    ObfDereferenceObject,
};
use windows_sys::Win32::Foundation::{
    HANDLE, NTSTATUS, OBJ_CASE_INSENSITIVE, OBJ_KERNEL_HANDLE, STATUS_BUFFER_TOO_SMALL,
    STATUS_CLOUD_FILE_INVALID_REQUEST, STATUS_INSUFFICIENT_RESOURCES, STATUS_INVALID_PARAMETER,
    STATUS_NOT_A_REPARSE_POINT, STATUS_REPARSE, UNICODE_STRING,
};
use windows_sys::Win32::System::IO::IO_STATUS_BLOCK;
use windows_sys::Win32::System::Ioctl::{
    FILE_ZERO_DATA_INFORMATION, FSCTL_GET_REPARSE_POINT, FSCTL_SET_SPARSE, FSCTL_SET_ZERO_DATA,
};

use cloudflt_proto::reparse;

use super::pool::{POOL_FLAG_NON_PAGED, tag};
use super::status::nt_success;
use windows_sys::Wdk::System::SystemServices::{ExAllocatePool2, ExFreePoolWithTag};

/// Copies as many bytes as both slices hold, as one memcpy. The two sub-slices are cut
/// to the same length first, so `copy_from_slice` has no length mismatch to panic on
/// (kernel code has no panic path); a byte loop here was two thirds of a debug build's
/// hydration time.
pub(crate) fn copy(dst: &mut [u8], src: &[u8]) {
    let n = dst.len().min(src.len());
    if let (Some(d), Some(s)) = (dst.get_mut(..n), src.get(..n)) {
        d.copy_from_slice(s);
    }
}

/// The alignment a non-cached I/O buffer needs here: 512 bytes, FILE_512_BYTE_ALIGNMENT,
/// the strictest `AlignmentRequirement` wdm.h defines for a device, so a buffer aligned to
/// it suits every disk under NTFS. (Pool buffers of a page or more are page aligned.)
pub(crate) const NONCACHED_BUFFER_ALIGNMENT: usize = 512;

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

impl Kind {
    /// The create option that asks for this kind (none for any).
    fn create_option(self) -> u32 {
        match self {
            Kind::File => FILE_NON_DIRECTORY_FILE,
            Kind::Directory => FILE_DIRECTORY_FILE,
            Kind::Any => 0,
        }
    }
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
    ///
    /// The create starts at the top of the volume's stack, so it passes cloudflt's own
    /// pre-create and gets its open-reparse entry: directory placeholders on the way
    /// open as directories instead of reparsing. (All later I/O on the file object goes
    /// below `instance`.)
    pub(crate) fn open(
        filter: PFLT_FILTER,
        instance: PFLT_INSTANCE,
        path: &[u16],
        access: u32,
        disposition: u32,
        kind: Kind,
        attributes: u32,
    ) -> Result<Self, NTSTATUS> {
        Self::open_named(
            filter,
            instance,
            core::ptr::null_mut(),
            path,
            access,
            disposition,
            kind,
            attributes,
        )
    }

    /// Opens (or creates, per `disposition`) `name`, one component, in the directory open
    /// as `directory` (its handle as the RootDirectory): the file system finds it from
    /// that open, wherever the directory is now — a rename of the directory or of a
    /// parent meanwhile cannot send it elsewhere. Issued at the top of the volume's stack,
    /// as [`OwnedFile::open`] is.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn open_in(
        filter: PFLT_FILTER,
        instance: PFLT_INSTANCE,
        directory: &OwnedFile,
        name: &[u16],
        access: u32,
        disposition: u32,
        kind: Kind,
        attributes: u32,
    ) -> Result<Self, NTSTATUS> {
        Self::open_named(
            filter,
            instance,
            directory.handle,
            name,
            access,
            disposition,
            kind,
            attributes,
        )
    }

    /// `name`, relative to the directory open as `root_directory` when that is not NULL,
    /// opened (or created) at the top of `instance`'s volume stack: what
    /// [`OwnedFile::open`] and [`OwnedFile::open_in`] share.
    #[allow(clippy::too_many_arguments)]
    fn open_named(
        filter: PFLT_FILTER,
        instance: PFLT_INSTANCE,
        root_directory: HANDLE,
        name: &[u16],
        access: u32,
        disposition: u32,
        kind: Kind,
        attributes: u32,
    ) -> Result<Self, NTSTATUS> {
        let bytes =
            u16::try_from(name.len().saturating_mul(2)).map_err(|_| STATUS_INVALID_PARAMETER)?;
        let unicode = UNICODE_STRING {
            Length: bytes,
            MaximumLength: bytes,
            // Only read by the call.
            Buffer: name.as_ptr().cast_mut(),
        };
        let object = OBJECT_ATTRIBUTES {
            Length: core::mem::size_of::<OBJECT_ATTRIBUTES>() as u32,
            RootDirectory: root_directory,
            ObjectName: &unicode,
            Attributes: OBJ_KERNEL_HANDLE | OBJ_CASE_INSENSITIVE,
            SecurityDescriptor: core::ptr::null(),
            SecurityQualityOfService: core::ptr::null(),
        };
        Self::create(
            filter,
            None,
            instance,
            &object,
            access,
            disposition,
            kind.create_option(),
            attributes,
        )
    }

    /// Opens, with `access`, the file whose NTFS file id (FileInternalInformation) is
    /// `file_id` on `instance`'s volume, and checks that it is that file.
    ///
    /// By id, the open reaches the file whatever its name is now: a rename between the
    /// moment a name was taken and the open cannot make it open another file. It starts
    /// below `instance`, so neither cloudflt nor any filter above it sees it (a filter
    /// above that read the file in its own create path would wait on the fetch this open
    /// serves), and FILE_OPEN_REPARSE_POINT opens the placeholder's own reparse point.
    ///
    /// The name is the volume's device name, a backslash and the 8-byte id, one of the
    /// forms ZwCreateFile documents for FILE_OPEN_BY_FILE_ID
    /// (`\device\HardDiskVolume1\<id>`); it needs no handle to the volume.
    pub(crate) fn open_by_id(
        filter: PFLT_FILTER,
        instance: PFLT_INSTANCE,
        file_id: u64,
        access: u32,
    ) -> Result<Self, NTSTATUS> {
        Self::open_kind_by_id(filter, instance, file_id, access, Kind::File)
    }

    /// As [`OwnedFile::open_by_id`], for a file of `kind` (a directory, for a population
    /// that follows its directory wherever it is renamed).
    pub(crate) fn open_kind_by_id(
        filter: PFLT_FILTER,
        instance: PFLT_INSTANCE,
        file_id: u64,
        access: u32,
        kind: Kind,
    ) -> Result<Self, NTSTATUS> {
        if file_id == 0 {
            // The stream's id was never learnt (FileInternalInformation failed when its
            // context was made): no file can be named by it.
            return Err(STATUS_CLOUD_FILE_INVALID_REQUEST);
        }
        let volume = Volume::of(instance)?;
        let (mut name, device_bytes) = volume.name(SEPARATOR_BYTES + ID_BYTES)?;
        let id_at = device_bytes
            .checked_add(SEPARATOR_BYTES)
            .ok_or(STATUS_INVALID_PARAMETER)?;
        let name_bytes = id_at
            .checked_add(ID_BYTES)
            .ok_or(STATUS_INVALID_PARAMETER)?;
        let buffer = name.as_mut_slice();
        let separator = buffer
            .get_mut(device_bytes..id_at)
            .ok_or(STATUS_INVALID_PARAMETER)?;
        copy(separator, &u16::from(b'\\').to_le_bytes());
        let id = buffer
            .get_mut(id_at..name_bytes)
            .ok_or(STATUS_INVALID_PARAMETER)?;
        copy(id, &file_id.to_le_bytes());
        let length = u16::try_from(name_bytes).map_err(|_| STATUS_INVALID_PARAMETER)?;
        let unicode = UNICODE_STRING {
            Length: length,
            MaximumLength: length,
            // Pool memory (16-byte aligned, so aligned for UTF-16); only read by the call.
            Buffer: name.as_slice().as_ptr().cast::<u16>().cast_mut(),
        };
        let object = OBJECT_ATTRIBUTES {
            Length: core::mem::size_of::<OBJECT_ATTRIBUTES>() as u32,
            RootDirectory: core::ptr::null_mut(),
            ObjectName: &unicode,
            // Case-insensitive for the device part; the id is not text and is not
            // compared as such.
            Attributes: OBJ_KERNEL_HANDLE | OBJ_CASE_INSENSITIVE,
            SecurityDescriptor: core::ptr::null(),
            SecurityQualityOfService: core::ptr::null(),
        };
        let file = Self::create(
            filter,
            Some(instance),
            instance,
            &object,
            access,
            1, // FILE_OPEN
            FILE_OPEN_BY_FILE_ID | kind.create_option(),
            0,
        )?;
        drop(volume);
        // NTFS should never answer another file: its file reference carries the MFT
        // record's sequence number (MFT_SEGMENT_REFERENCE in ntifs.h), so a record reused
        // since is a different id. The bytes this handle writes must not land in the
        // wrong file even if a file system did, so the open is checked, not trusted. A
        // stream whose id leads elsewhere cannot be filled: the request is refused
        // (STATUS_CLOUD_FILE_INVALID_REQUEST, "the cloud operation is invalid"), which
        // fails its waiting reads.
        if file.file_id()? != file_id {
            return Err(STATUS_CLOUD_FILE_INVALID_REQUEST);
        }
        Ok(file)
    }

    /// FltCreateFileEx2 below `below` (`None`: from the top of the volume's stack), on
    /// the reparse point itself, sharing with everyone and ignoring other openers' share
    /// access; the driver's I/O on the result goes below `instance`.
    #[allow(
        clippy::too_many_arguments,
        reason = "the FltCreateFileEx2 parameters the two opens choose"
    )]
    fn create(
        filter: PFLT_FILTER,
        below: Option<PFLT_INSTANCE>,
        instance: PFLT_INSTANCE,
        object: &OBJECT_ATTRIBUTES,
        access: u32,
        disposition: u32,
        options: u32,
        attributes: u32,
    ) -> Result<Self, NTSTATUS> {
        let mut handle: HANDLE = core::ptr::null_mut();
        let mut file_object: *mut FILE_OBJECT = core::ptr::null_mut();
        // SAFETY: IO_STATUS_BLOCK is plain data; zero is a valid pattern.
        let mut iosb: IO_STATUS_BLOCK = unsafe { core::mem::zeroed() };
        // SAFETY: all pointers outlive the call; PASSIVE_LEVEL (callers' contract);
        // OBJ_KERNEL_HANDLE (both callers) so the handle is not in the current process's
        // table.
        let status = unsafe {
            FltCreateFileEx2(
                filter,
                below.unwrap_or(0),
                &mut handle,
                &mut file_object,
                access | 0x0010_0000, // SYNCHRONIZE
                object,
                &mut iosb,
                core::ptr::null(),
                attributes,
                0x7, // FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE
                disposition,
                options | FILE_OPEN_REPARSE_POINT | FILE_SYNCHRONOUS_IO_NONALERT,
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

/// What an open by id appends to the volume's device name: a backslash, then the 8-byte
/// file id.
const SEPARATOR_BYTES: usize = 2;
const ID_BYTES: usize = 8;

/// A referenced volume (FltGetVolumeFromInstance), dereferenced on drop.
struct Volume(PFLT_VOLUME);

impl Volume {
    fn of(instance: PFLT_INSTANCE) -> Result<Self, NTSTATUS> {
        let mut volume: PFLT_VOLUME = 0;
        // SAFETY: a live instance (the caller's stream context keeps it); a valid out
        // pointer; PASSIVE_LEVEL.
        let status = unsafe { FltGetVolumeFromInstance(instance, &mut volume) };
        if nt_success(status) {
            Ok(Self(volume))
        } else {
            Err(status)
        }
    }

    /// The volume's device name (`\Device\HarddiskVolume1`) in a pool buffer with `extra`
    /// bytes to spare after it, and its length in bytes.
    fn name(&self, extra: usize) -> Result<(PoolBuf, usize), NTSTATUS> {
        let mut needed = 0u32;
        // SAFETY: the referenced volume; no buffer, a valid size pointer: the documented
        // way to learn the size.
        let status = unsafe { FltGetVolumeName(self.0, core::ptr::null_mut(), &mut needed) };
        if status != STATUS_BUFFER_TOO_SMALL {
            return Err(if nt_success(status) {
                STATUS_INVALID_PARAMETER
            } else {
                status
            });
        }
        let capacity = u16::try_from(needed).map_err(|_| STATUS_INVALID_PARAMETER)?;
        let mut buffer = PoolBuf::zeroed(usize::from(capacity).saturating_add(extra))
            .ok_or(STATUS_INSUFFICIENT_RESOURCES)?;
        let mut unicode = UNICODE_STRING {
            Length: 0,
            MaximumLength: capacity,
            // Pool memory, 16-byte aligned, at least `capacity` bytes.
            Buffer: buffer.as_mut_slice().as_mut_ptr().cast::<u16>(),
        };
        // SAFETY: the referenced volume; a UNICODE_STRING over our buffer of
        // MaximumLength bytes; PASSIVE_LEVEL.
        let status = unsafe { FltGetVolumeName(self.0, &mut unicode, core::ptr::null_mut()) };
        if !nt_success(status) {
            return Err(status);
        }
        Ok((buffer, usize::from(unicode.Length)))
    }
}

impl Drop for Volume {
    fn drop(&mut self) {
        // SAFETY: the reference FltGetVolumeFromInstance took, dropped once.
        unsafe { FltObjectDereference(self.0 as *mut core::ffi::c_void) };
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

    /// How many names (hard links) the file has (FileStandardInformation's
    /// NumberOfLinks).
    pub(crate) fn links(&self) -> Result<u32, NTSTATUS> {
        // SAFETY: plain data; zero is valid.
        let mut info: windows_sys::Wdk::Storage::FileSystem::FILE_STANDARD_INFORMATION =
            unsafe { core::mem::zeroed() };
        query(self.instance, self.file_object(), &mut info, 5)?;
        Ok(info.NumberOfLinks)
    }

    /// Whether the file is to be deleted when its last handle closes
    /// (FileStandardInformation's DeletePending).
    pub(crate) fn delete_pending(&self) -> Result<bool, NTSTATUS> {
        // SAFETY: plain data; zero is valid.
        let mut info: windows_sys::Wdk::Storage::FileSystem::FILE_STANDARD_INFORMATION =
            unsafe { core::mem::zeroed() };
        query(self.instance, self.file_object(), &mut info, 5)?;
        Ok(info.DeletePending)
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

    /// Clears the delete-on-close this open was created with (FileDispositionInformationEx
    /// with FILE_DISPOSITION_ON_CLOSE and no FILE_DISPOSITION_DELETE), leaving the file's
    /// own disposition alone.
    pub(crate) fn keep_on_close(&self) -> Result<(), NTSTATUS> {
        const FILE_DISPOSITION_ON_CLOSE: u32 = 0x8;
        const FILE_DISPOSITION_INFORMATION_EX: i32 = 64;
        set(
            self.instance,
            self.file_object(),
            &FILE_DISPOSITION_ON_CLOSE,
            FILE_DISPOSITION_INFORMATION_EX,
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

    /// Writes the file's dirty cached and mapped pages back (FltFlushBuffers), so that
    /// what the disk holds is what a reader through the cache sees.
    pub(crate) fn flush(&self) -> Result<(), NTSTATUS> {
        // SAFETY: a referenced file object of `instance`'s volume; PASSIVE_LEVEL.
        let status = unsafe {
            windows_sys::Wdk::Storage::FileSystem::Minifilters::FltFlushBuffers(
                self.instance,
                self.file_object(),
            )
        };
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

    /// Writes the first `length` bytes `pages` describes (a multiple of the sector size,
    /// starting [`NONCACHED_BUFFER_ALIGNMENT`]-aligned) at `offset`, non-cached, straight
    /// from those pages to disk: FltWriteFileEx with the MDL and no buffer.
    pub(crate) fn write_noncached_pages(
        &self,
        offset: u64,
        length: usize,
        pages: &super::user::LockedUserPages,
    ) -> Result<(), NTSTATUS> {
        let at = i64::try_from(offset).map_err(|_| STATUS_INVALID_PARAMETER)?;
        let length = u32::try_from(length).map_err(|_| STATUS_INVALID_PARAMETER)?;
        let mut written = 0u32;
        // SAFETY: the MDL's pages stay locked while `pages` lives, which outlasts this
        // synchronous call; `length` is within it (the caller's contract, which FltMgr and
        // the file system check against the MDL too); PASSIVE_LEVEL.
        let status = unsafe {
            FltWriteFileEx(
                self.instance,
                self.file_object(),
                &at,
                length,
                core::ptr::null(),
                FLTFL_IO_OPERATION_NON_CACHED | FLTFL_IO_OPERATION_DO_NOT_UPDATE_BYTE_OFFSET,
                &mut written,
                None,
                core::ptr::null(),
                core::ptr::null(),
                pages.mdl(),
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
