//! I/O a filter issues itself: FltCreateFileEx2, FltClose, FltReadFile, FltWriteFile,
//! FltQueryInformationFile, FltSetInformationFile, FltFsControlFile, FltTagFile(Ex),
//! FltUntagFile, object references on file objects, and the buffer helpers
//! (FltLockUserBuffer, FltDoCompletionProcessingWhenSafe).
//!
//! Filter-initiated I/O starts below the initiating instance, so the filter never sees
//! its own requests; paging I/O the cache manager issues on their behalf still starts at
//! the top of the stack, as on Windows.
//!
//! FltCreateFileEx2 takes a full NT or DOS-device path, or (FILE_OPEN_BY_FILE_ID) a file
//! id after a device name or relative to a RootDirectory handle; a path relative to a
//! RootDirectory is not modelled and is reported as such.
//!
//! Checks: kernel handles only (OBJ_KERNEL_HANDLE), each API's IRQL, a file object and
//! instance on the same volume, file object references balanced at unload.

use std::ffi::c_void;

use cloudflt_driver::nt::layout::FLT_IO_PARAMETER_BLOCK;
use windows_sys::Wdk::Foundation::{FILE_OBJECT, OBJECT_ATTRIBUTES};
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FLT_CALLBACK_DATA, FLT_POSTOP_CALLBACK_STATUS, FLT_POSTOP_FINISHED_PROCESSING,
    FLT_POSTOP_MORE_PROCESSING_REQUIRED, FLT_RELATED_OBJECTS, FLTFL_CALLBACK_DATA_IRP_OPERATION,
    FLTFL_IO_OPERATION_DO_NOT_UPDATE_BYTE_OFFSET, FLTFL_IO_OPERATION_NON_CACHED,
    FLTFL_IO_OPERATION_PAGING, PFLT_COMPLETED_ASYNC_IO_CALLBACK, PFLT_DEFERRED_IO_WORKITEM,
    PFLT_DEFERRED_IO_WORKITEM_ROUTINE, PFLT_FILTER, PFLT_INSTANCE, PFLT_POST_OPERATION_CALLBACK,
    PFLT_VOLUME,
};
use windows_sys::Wdk::System::SystemServices::IO_DRIVER_CREATE_CONTEXT;
use windows_sys::Win32::Foundation::{
    HANDLE, NTSTATUS, OBJ_KERNEL_HANDLE, STATUS_ACCESS_DENIED,
    STATUS_FLT_NOT_SAFE_TO_POST_OPERATION, STATUS_INVALID_HANDLE, STATUS_INVALID_PARAMETER,
    STATUS_NOT_SUPPORTED, STATUS_OBJECT_PATH_NOT_FOUND, STATUS_SUCCESS, UNICODE_STRING,
};
use windows_sys::Win32::System::IO::IO_STATUS_BLOCK;

use super::files::{self, OpenParams, Opened, irp_read};
use super::io::{self, irp};
use super::irql::{self, APC_LEVEL, DISPATCH_LEVEL, PASSIVE_LEVEL};
use super::process;
use super::with_kernel;
use windows_sys::Wdk::System::SystemServices::IO_FORCE_ACCESS_CHECK;

/// `FSCTL_SET_REPARSE_POINT`, `FSCTL_SET_REPARSE_POINT_EX`, `FSCTL_DELETE_REPARSE_POINT`.
const FSCTL_SET_REPARSE_POINT: u32 = 0x0009_00A4;
const FSCTL_SET_REPARSE_POINT_EX: u32 = 0x0009_040C;
const FSCTL_DELETE_REPARSE_POINT: u32 = 0x0009_00AC;
/// FILE_WRITE_DATA | FILE_WRITE_ATTRIBUTES: what tagging needs on the file object.
const TAG_ACCESS: u32 = 0x2 | 0x100;

fn instance_volume(api: &'static str, instance: PFLT_INSTANCE) -> Option<PFLT_VOLUME> {
    with_kernel(|k| {
        let found = k.filter_of_instance(instance).and_then(|(f, pos)| {
            let filter = k.filters.get(&f)?;
            if filter.is_unregistered() {
                return None;
            }
            filter.instances.get(pos).map(|i| i.volume)
        });
        if found.is_none() {
            k.violation(api, format!("{instance:#x} is not a live instance"));
        }
        found
    })
}

/// The model's record of a file object the filter passes in, on the instance's volume.
fn object_on(
    api: &'static str,
    instance: PFLT_INSTANCE,
    fo: *const FILE_OBJECT,
) -> Option<(usize, PFLT_VOLUME)> {
    let volume = instance_volume(api, instance)?;
    with_kernel(|k| match k.io.files.get(&(fo as usize)) {
        Some(f) if f.open.is_some() && f.volume == volume => Some((fo as usize, volume)),
        Some(f) if f.open.is_some() => {
            k.violation(api, "file object and instance are on different volumes");
            None
        }
        _ => {
            k.violation(api, format!("{fo:p} is not an open file object"));
            None
        }
    })
}

/// FltCreateFileEx2: opens a file below `instance` (or at the top of the stack when it
/// is NULL), returning a kernel handle and, if asked, a referenced file object.
///
/// # Safety
/// Pointers as documented for FltCreateFileEx2.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn FltCreateFileEx2(
    _filter: PFLT_FILTER,
    instance: PFLT_INSTANCE,
    handle: *mut HANDLE,
    file_object: *mut *mut FILE_OBJECT,
    access: u32,
    attributes: *const OBJECT_ATTRIBUTES,
    iosb: *mut IO_STATUS_BLOCK,
    _allocation: *const i64,
    file_attributes: u32,
    share: u32,
    disposition: u32,
    options: u32,
    _ea: *const c_void,
    _ea_length: u32,
    flags: u32,
    _driver_context: *const IO_DRIVER_CREATE_CONTEXT,
) -> NTSTATUS {
    irql::check("FltCreateFileEx2", PASSIVE_LEVEL);
    // SAFETY: the caller's OBJECT_ATTRIBUTES.
    let Some(oa) = (unsafe { attributes.as_ref() }) else {
        return STATUS_INVALID_PARAMETER;
    };
    if handle.is_null() || iosb.is_null() {
        return STATUS_INVALID_PARAMETER;
    }
    if oa.Attributes & OBJ_KERNEL_HANDLE == 0 {
        with_kernel(|k| {
            k.violation(
                "FltCreateFileEx2",
                "opened without OBJ_KERNEL_HANDLE: the handle lands in the current process's table, where user mode can use or close it",
            )
        });
    }
    // SAFETY: ObjectName is NULL or the caller's UNICODE_STRING.
    let Some(name) = (unsafe { oa.ObjectName.as_ref() }) else {
        return STATUS_INVALID_PARAMETER;
    };
    let target = if options & files::FILE_OPEN_BY_FILE_ID != 0 {
        by_id_target(oa.RootDirectory as isize, units(name))
    } else if !oa.RootDirectory.is_null() {
        relative_target(oa.RootDirectory as isize, units(name))
    } else {
        files::resolve(&unicode(name)).map(|(volume, rel)| Target {
            volume,
            name: rel.encode_utf16().collect(),
            related: None,
        })
    };
    let Target {
        volume,
        name: rel,
        related,
    } = match target {
        Ok(t) => t,
        Err(status) => return status,
    };
    if instance != 0 {
        let Some(v) = instance_volume("FltCreateFileEx2", instance) else {
            return STATUS_INVALID_PARAMETER;
        };
        if v != volume {
            // FltMgr sends it to the top of the right volume's stack instead; the model
            // asks filters to target their own volume.
            return STATUS_INVALID_PARAMETER;
        }
    }
    if flags & IO_FORCE_ACCESS_CHECK != 0
        && let Some(status) = forced_access_check(volume, &rel, access, disposition)
    {
        // SAFETY: checked non-null above.
        unsafe { iosb.write(io::status_block(status, 0)) };
        return status;
    }
    let params = OpenParams {
        access,
        share,
        disposition,
        options,
        attributes: file_attributes,
    };
    let below = (instance != 0).then_some(instance);
    let opened = files::open_on_volume(volume, &rel, &params, below, related, files::KERNEL_MODE);
    let (status, info) = match opened {
        Ok(Opened::File(fo)) => {
            let h = files::add_kernel_handle(fo);
            // SAFETY: checked non-null above.
            unsafe { handle.write(h as HANDLE) };
            if !file_object.is_null() {
                files::reference(fo);
                // SAFETY: the caller's out pointer.
                unsafe { file_object.write(fo as *mut FILE_OBJECT) };
            }
            (STATUS_SUCCESS, 1)
        }
        Ok(Opened::Reparse { tag, .. }) => {
            (windows_sys::Win32::Foundation::STATUS_REPARSE, tag as usize)
        }
        Err(status) => (status, 0),
    };
    // SAFETY: checked non-null above.
    unsafe { iosb.write(io::status_block(status, info)) };
    status
}

/// Where a create goes: the volume, the name its file object carries (what the I/O
/// manager leaves of the name once the device is found) and the RootDirectory's file
/// object.
struct Target {
    volume: PFLT_VOLUME,
    name: Vec<u16>,
    related: Option<usize>,
}

/// The volume and name of a create relative to the directory open as `root` (a kernel
/// handle, or one of the calling process): the name is what the file system receives,
/// relative to RelatedFileObject, which the file system resolves from that directory's
/// open — wherever the directory is now, as NTFS resolves it from its FCB, not from a
/// path. A name that starts with a backslash is not relative (STATUS_INVALID_PARAMETER,
/// as the object manager answers it).
fn relative_target(root: isize, name: &[u16]) -> Result<Target, NTSTATUS> {
    if name.first() == Some(&u16::from(b'\\')) {
        return Err(STATUS_INVALID_PARAMETER);
    }
    let pid = process::current_pid();
    let fo = with_kernel(|k| {
        k.io.handles
            .get(&root)
            .filter(|h| h.kernel || h.pid == pid)
            .map(|h| h.file_object)
    })
    .ok_or(STATUS_INVALID_HANDLE)?;
    let volume =
        with_kernel(|k| k.io.files.get(&fo).map(|f| f.volume)).ok_or(STATUS_INVALID_HANDLE)?;
    Ok(Target {
        volume,
        name: name.to_vec(),
        related: Some(fo),
    })
}

/// The volume and file-system name of an open by file id (ZwCreateFile,
/// FILE_OPEN_BY_FILE_ID): relative to `root` (a handle to any file or directory of the
/// volume, as OpenFileById's volume hint), the name is the binary id itself; without one,
/// the documented `\??\C:\<id>` or `\Device\HarddiskVolume1\<id>` form, whose device part
/// the object manager resolves (the rest, backslash included, reaches the file system).
/// An id with neither is STATUS_INVALID_PARAMETER, as NtCreateFile answers it (the
/// btrfs driver's test suite, run against NTFS: maharmstone/btrfs src/tests/create.cpp,
/// "Try opening by ID without RootDirectory value"). The id's bytes are never decoded
/// as text: they may hold any unit, a backslash included.
fn by_id_target(root: isize, name: &[u16]) -> Result<Target, NTSTATUS> {
    if root != 0 {
        // A kernel handle, or one of the process the call runs in (the table a kernel-mode
        // caller's handle is looked up in otherwise).
        let pid = process::current_pid();
        let fo = with_kernel(|k| {
            k.io.handles
                .get(&root)
                .filter(|h| h.kernel || h.pid == pid)
                .map(|h| h.file_object)
        });
        let Some(fo) = fo else {
            return Err(STATUS_INVALID_HANDLE);
        };
        let volume =
            with_kernel(|k| k.io.files.get(&fo).map(|f| f.volume)).ok_or(STATUS_INVALID_HANDLE)?;
        return Ok(Target {
            volume,
            name: name.to_vec(),
            related: Some(fo),
        });
    }
    let slash = u16::from(b'\\');
    let text = |s: &str| s.encode_utf16().collect::<Vec<u16>>();
    // The device part: `\??\X:` or `\Device\Name`, up to the backslash before the id.
    let device_end = if name.starts_with(&text("\\??\\")) {
        Some(6)
    } else if name.starts_with(&text("\\Device\\")) {
        name.iter()
            .skip(8)
            .position(|&u| u == slash)
            .map(|at| at + 8)
    } else {
        None
    };
    let Some(end) = device_end.filter(|&end| name.get(end) == Some(&slash)) else {
        return Err(STATUS_INVALID_PARAMETER);
    };
    let device = String::from_utf16(&name[..end]).map_err(|_| STATUS_OBJECT_PATH_NOT_FOUND)?;
    let (volume, _) = files::resolve(&device)?;
    Ok(Target {
        volume,
        name: name[end..].to_vec(),
        related: None,
    })
}

/// The units a UNICODE_STRING describes.
fn units(s: &UNICODE_STRING) -> &[u16] {
    if s.Buffer.is_null() {
        return &[];
    }
    // SAFETY: Length bytes at Buffer, per UNICODE_STRING.
    unsafe { std::slice::from_raw_parts(s.Buffer, usize::from(s.Length) / 2) }
}

fn unicode(s: &UNICODE_STRING) -> String {
    String::from_utf16_lossy(units(s))
}

/// FltClose.
#[unsafe(no_mangle)]
pub extern "system" fn FltClose(handle: HANDLE) -> NTSTATUS {
    irql::check("FltClose", PASSIVE_LEVEL);
    let kernel = files::is_kernel_handle(handle as isize);
    if kernel != Some(true) {
        with_kernel(|k| {
            k.violation(
                "FltClose",
                format!("{handle:p} is not a kernel handle from FltCreateFileEx2"),
            )
        });
        return STATUS_INVALID_HANDLE;
    }
    files::close(files::Handle(handle as isize))
}

/// ObfReferenceObject (file objects only in the model).
#[unsafe(no_mangle)]
pub extern "system" fn ObfReferenceObject(object: *const c_void) -> isize {
    irql::check("ObfReferenceObject", DISPATCH_LEVEL);
    files::reference(object as usize) as isize
}

/// ObfDereferenceObject.
#[unsafe(no_mangle)]
pub extern "system" fn ObfDereferenceObject(object: *const c_void) -> isize {
    irql::check("ObfDereferenceObject", DISPATCH_LEVEL);
    let known = with_kernel(|k| k.io.files.contains_key(&(object as usize)));
    if !known {
        with_kernel(|k| {
            k.violation(
                "ObfDereferenceObject",
                format!("{object:p} is not a referenced object (dereferenced too often?)"),
            )
        });
        return 0;
    }
    files::dereference_by_driver(object as usize);
    0
}

fn sync_only(api: &'static str, callback: PFLT_COMPLETED_ASYNC_IO_CALLBACK) -> bool {
    if callback.is_some() {
        with_kernel(|k| {
            k.violation(
                api,
                "asynchronous filter I/O is not modelled; pass no callback routine",
            )
        });
        return false;
    }
    true
}

/// The IRP flags FltMgr sets for FLTFL_IO_OPERATION_* flags.
fn irp_flags_of(flags: u32) -> u32 {
    let mut irp_flags = 0;
    if flags & FLTFL_IO_OPERATION_NON_CACHED != 0 {
        irp_flags |= irp::NOCACHE;
    }
    if flags & FLTFL_IO_OPERATION_PAGING != 0 {
        irp_flags |= irp::PAGING_IO | irp::NOCACHE;
    }
    irp_flags
}

/// FltReadFile (synchronous).
///
/// # Safety
/// `buffer` must hold `length` bytes; `offset` and `read` NULL or valid.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn FltReadFile(
    instance: PFLT_INSTANCE,
    fo: *const FILE_OBJECT,
    offset: *const i64,
    length: u32,
    buffer: *mut c_void,
    flags: u32,
    read: *mut u32,
    callback: PFLT_COMPLETED_ASYNC_IO_CALLBACK,
    _context: *const c_void,
) -> NTSTATUS {
    irql::check("FltReadFile", APC_LEVEL);
    // SAFETY: the caller's buffer of `length` bytes.
    let target = unsafe { std::slice::from_raw_parts_mut(buffer.cast::<u8>(), length as usize) };
    // SAFETY: `offset` and `read` are NULL or valid, per the contract.
    unsafe {
        filter_io(
            "FltReadFile",
            instance,
            fo,
            offset,
            flags,
            read,
            callback,
            |fo, volume, at| irp_read(fo, volume, at, target, irp_flags_of(flags), instance),
        )
    }
}

/// What FltReadFile and FltWriteFile share: synchronous only, the file object on the
/// instance's volume, the byte offset (explicit or the file object's), the returned
/// length, and the file object's position afterwards.
///
/// # Safety
/// `offset` and `transferred` must be NULL or valid.
#[allow(
    clippy::too_many_arguments,
    reason = "the FltReadFile/FltWriteFile parameters"
)]
unsafe fn filter_io(
    api: &'static str,
    instance: PFLT_INSTANCE,
    fo: *const FILE_OBJECT,
    offset: *const i64,
    flags: u32,
    transferred: *mut u32,
    callback: PFLT_COMPLETED_ASYNC_IO_CALLBACK,
    io: impl FnOnce(usize, PFLT_VOLUME, u64) -> io::Completion,
) -> NTSTATUS {
    if !sync_only(api, callback) {
        return STATUS_NOT_SUPPORTED;
    }
    let Some((fo, volume)) = object_on(api, instance, fo) else {
        return STATUS_INVALID_PARAMETER;
    };
    // SAFETY: NULL or the caller's offset.
    let at = unsafe { offset.as_ref() }
        .copied()
        .unwrap_or_else(|| files::position(fo));
    let done = io(fo, volume, at as u64);
    if !transferred.is_null() {
        // SAFETY: the caller's out pointer.
        unsafe { transferred.write(done.information as u32) };
    }
    if done.status >= 0 && flags & FLTFL_IO_OPERATION_DO_NOT_UPDATE_BYTE_OFFSET == 0 {
        files::set_position(fo, at + done.information as i64);
    }
    done.status
}

/// FltWriteFile (synchronous).
///
/// # Safety
/// `buffer` must hold `length` bytes; `offset` and `written` NULL or valid.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn FltWriteFile(
    instance: PFLT_INSTANCE,
    fo: *const FILE_OBJECT,
    offset: *const i64,
    length: u32,
    buffer: *const c_void,
    flags: u32,
    written: *mut u32,
    callback: PFLT_COMPLETED_ASYNC_IO_CALLBACK,
    _context: *const c_void,
) -> NTSTATUS {
    irql::check("FltWriteFile", PASSIVE_LEVEL);
    // SAFETY: the caller's buffer of `length` bytes.
    let mut data =
        unsafe { std::slice::from_raw_parts(buffer.cast::<u8>(), length as usize) }.to_vec();
    // SAFETY: `offset` and `written` are NULL or valid, per the contract.
    unsafe {
        filter_io(
            "FltWriteFile",
            instance,
            fo,
            offset,
            flags,
            written,
            callback,
            |fo, volume, at| {
                files::write_irp(
                    fo,
                    volume,
                    at,
                    &mut data,
                    irp_flags_of(flags),
                    Some(instance),
                )
            },
        )
    }
}

/// FltWriteFileEx (synchronous): FltWriteFile, or with `mdl` the bytes of a locked MDL
/// ([`super::seh`]) instead of a buffer. A non-cached write from an MDL must start its data
/// on a 512-byte boundary (FILE_512_BYTE_ALIGNMENT: the model's disks declare the
/// strictest AlignmentRequirement wdm.h defines) or it fails with
/// STATUS_INVALID_PARAMETER, as the I/O manager fails misaligned non-cached I/O.
///
/// # Safety
/// `buffer` must hold `length` bytes when `mdl` is NULL; `offset` and `written` NULL or
/// valid.
#[allow(clippy::too_many_arguments, reason = "the FltWriteFileEx parameters")]
#[unsafe(no_mangle)]
pub unsafe extern "system" fn FltWriteFileEx(
    instance: PFLT_INSTANCE,
    fo: *const FILE_OBJECT,
    offset: *const i64,
    length: u32,
    buffer: *const c_void,
    flags: u32,
    written: *mut u32,
    callback: PFLT_COMPLETED_ASYNC_IO_CALLBACK,
    context: *const c_void,
    _key: *const u32,
    mdl: *const windows_sys::Wdk::Foundation::MDL,
) -> NTSTATUS {
    irql::check("FltWriteFileEx", PASSIVE_LEVEL);
    if mdl.is_null() {
        // SAFETY: the caller's contract, FltWriteFile's.
        return unsafe {
            FltWriteFile(
                instance, fo, offset, length, buffer, flags, written, callback, context,
            )
        };
    }
    let bytes = with_kernel(|k| {
        let bytes = k.mdl_bytes(mdl, length as usize);
        if let Err(why) = &bytes {
            k.violation("FltWriteFileEx", why.clone());
        }
        bytes.ok().map(|b| (b, k.mdl_address(mdl).unwrap_or(0)))
    });
    let Some((mut data, at)) = bytes else {
        return STATUS_INVALID_PARAMETER;
    };
    if flags & FLTFL_IO_OPERATION_NON_CACHED != 0 && at % 512 != 0 {
        return STATUS_INVALID_PARAMETER;
    }
    // SAFETY: `offset` and `written` are NULL or valid, per the contract.
    unsafe {
        filter_io(
            "FltWriteFileEx",
            instance,
            fo,
            offset,
            flags,
            written,
            callback,
            |fo, volume, at| {
                files::write_irp(
                    fo,
                    volume,
                    at,
                    &mut data,
                    irp_flags_of(flags),
                    Some(instance),
                )
            },
        )
    }
}

/// FltQueryInformationFile.
///
/// # Safety
/// `info` must hold `length` bytes; `returned` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn FltQueryInformationFile(
    instance: PFLT_INSTANCE,
    fo: *const FILE_OBJECT,
    info: *mut c_void,
    length: u32,
    class: i32,
    returned: *mut u32,
) -> NTSTATUS {
    irql::check("FltQueryInformationFile", PASSIVE_LEVEL);
    let Some((fo, volume)) = object_on("FltQueryInformationFile", instance, fo) else {
        return STATUS_INVALID_PARAMETER;
    };
    let (status, bytes) =
        files::query_information_on(fo, volume, class, length as usize, Some(instance));
    // SAFETY: the caller's buffer holds `length` >= bytes.len() bytes.
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), info.cast::<u8>(), bytes.len()) };
    if !returned.is_null() {
        // SAFETY: the caller's out pointer.
        unsafe { returned.write(bytes.len() as u32) };
    }
    status
}

/// FltIsDirectory: whether an open file object is a directory, asked of the file system
/// below `instance` (FileStandardInformation's Directory byte).
///
/// # Safety
/// `directory` must be writable.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn FltIsDirectory(
    fo: *const FILE_OBJECT,
    instance: PFLT_INSTANCE,
    directory: *mut bool,
) -> NTSTATUS {
    irql::check("FltIsDirectory", APC_LEVEL);
    if directory.is_null() {
        return STATUS_INVALID_PARAMETER;
    }
    let Some((fo, volume)) = object_on("FltIsDirectory", instance, fo) else {
        return STATUS_INVALID_PARAMETER;
    };
    // FileStandardInformation: Directory is the byte at 21 of 24.
    let (status, bytes) = files::query_information_on(fo, volume, 5, 24, Some(instance));
    if status < 0 {
        return status;
    }
    let Some(&flag) = bytes.get(21) else {
        return STATUS_INVALID_PARAMETER;
    };
    // SAFETY: the caller's out pointer, checked non-null.
    unsafe { directory.write(flag != 0) };
    STATUS_SUCCESS
}

/// FltSetInformationFile.
///
/// # Safety
/// `info` must hold `length` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn FltSetInformationFile(
    instance: PFLT_INSTANCE,
    fo: *const FILE_OBJECT,
    info: *const c_void,
    length: u32,
    class: i32,
) -> NTSTATUS {
    irql::check("FltSetInformationFile", PASSIVE_LEVEL);
    let Some((fo, volume)) = object_on("FltSetInformationFile", instance, fo) else {
        return STATUS_INVALID_PARAMETER;
    };
    // SAFETY: the caller's buffer of `length` bytes.
    let input = unsafe { std::slice::from_raw_parts(info.cast::<u8>(), length as usize) };
    files::set_information_on(fo, volume, class, input, Some(instance))
}

/// FltFsControlFile (METHOD_BUFFERED codes).
///
/// # Safety
/// Buffers as their lengths say; `returned` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn FltFsControlFile(
    instance: PFLT_INSTANCE,
    fo: *const FILE_OBJECT,
    code: u32,
    input: *const c_void,
    input_length: u32,
    output: *mut c_void,
    output_length: u32,
    returned: *mut u32,
) -> NTSTATUS {
    irql::check("FltFsControlFile", PASSIVE_LEVEL);
    let Some((fo, volume)) = object_on("FltFsControlFile", instance, fo) else {
        return STATUS_INVALID_PARAMETER;
    };
    let input = if input.is_null() || input_length == 0 {
        &[][..]
    } else {
        // SAFETY: the caller's input of `input_length` bytes.
        unsafe { std::slice::from_raw_parts(input.cast::<u8>(), input_length as usize) }
    };
    let (status, bytes) = files::fs_control_on(
        fo,
        volume,
        code,
        input,
        output_length as usize,
        Some(instance),
        0,
    );
    if !output.is_null() && !bytes.is_empty() {
        // SAFETY: the caller's output of `output_length` >= bytes.len() bytes.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), output.cast::<u8>(), bytes.len()) };
    }
    if !returned.is_null() {
        // SAFETY: the caller's out pointer.
        unsafe { returned.write(bytes.len() as u32) };
    }
    status
}

fn guid_bytes(guid: *const windows_sys::core::GUID) -> Option<[u8; 16]> {
    // SAFETY: NULL or the caller's GUID.
    let g = unsafe { guid.as_ref() }?;
    let mut out = [0u8; 16];
    out[..4].copy_from_slice(&g.data1.to_le_bytes());
    out[4..6].copy_from_slice(&g.data2.to_le_bytes());
    out[6..8].copy_from_slice(&g.data3.to_le_bytes());
    out[8..].copy_from_slice(&g.data4);
    Some(out)
}

/// A reparse buffer for `tag`: REPARSE_GUID_DATA_BUFFER for non-Microsoft tags,
/// REPARSE_DATA_BUFFER (no GUID) for Microsoft ones.
fn reparse_buffer(tag: u32, guid: Option<[u8; 16]>, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(24 + data.len());
    out.extend_from_slice(&tag.to_le_bytes());
    out.extend_from_slice(&(data.len() as u16).to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes());
    if tag & 0x8000_0000 == 0 {
        out.extend_from_slice(&guid.unwrap_or_default());
    }
    out.extend_from_slice(data);
    out
}

fn tag_checks(
    api: &'static str,
    instance: PFLT_INSTANCE,
    fo: *const FILE_OBJECT,
) -> Option<(usize, PFLT_VOLUME)> {
    let (fo, volume) = object_on(api, instance, fo)?;
    let access = with_kernel(|k| k.io.files.get(&fo).map_or(0, |f| f.access));
    if access & TAG_ACCESS == 0 {
        return None;
    }
    Some((fo, volume))
}

/// FltTagFile: sets a reparse point through FSCTL_SET_REPARSE_POINT below the instance.
///
/// # Safety
/// `data` must hold `length` bytes; `guid` NULL or valid.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn FltTagFile(
    instance: PFLT_INSTANCE,
    fo: *const FILE_OBJECT,
    tag: u32,
    guid: *const windows_sys::core::GUID,
    data: *const c_void,
    length: u16,
) -> NTSTATUS {
    irql::check("FltTagFile", PASSIVE_LEVEL);
    let Some((fo, volume)) = tag_checks("FltTagFile", instance, fo) else {
        return STATUS_ACCESS_DENIED;
    };
    let guid = guid_bytes(guid);
    if tag & 0x8000_0000 == 0 && guid.is_none() {
        return STATUS_INVALID_PARAMETER;
    }
    let data = if data.is_null() || length == 0 {
        &[][..]
    } else {
        // SAFETY: the caller's `length` bytes.
        unsafe { std::slice::from_raw_parts(data.cast::<u8>(), usize::from(length)) }
    };
    let buffer = reparse_buffer(tag, guid, data);
    files::fs_control_on(
        fo,
        volume,
        FSCTL_SET_REPARSE_POINT,
        &buffer,
        0,
        Some(instance),
        0,
    )
    .0
}

/// FltTagFileEx: FSCTL_SET_REPARSE_POINT_EX with the expected existing tag.
///
/// # Safety
/// As FltTagFile; `existing_guid` NULL or valid.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn FltTagFileEx(
    instance: PFLT_INSTANCE,
    fo: *const FILE_OBJECT,
    tag: u32,
    guid: *const windows_sys::core::GUID,
    data: *const c_void,
    length: u16,
    existing_tag: u32,
    existing_guid: *const windows_sys::core::GUID,
    flags: u32,
) -> NTSTATUS {
    irql::check("FltTagFileEx", PASSIVE_LEVEL);
    let Some((fo, volume)) = tag_checks("FltTagFileEx", instance, fo) else {
        return STATUS_ACCESS_DENIED;
    };
    let guid = guid_bytes(guid);
    if tag & 0x8000_0000 == 0 && guid.is_none() {
        return STATUS_INVALID_PARAMETER;
    }
    let data = if data.is_null() || length == 0 {
        &[][..]
    } else {
        // SAFETY: the caller's `length` bytes.
        unsafe { std::slice::from_raw_parts(data.cast::<u8>(), usize::from(length)) }
    };
    // REPARSE_DATA_BUFFER_EX: Flags, ExistingReparseTag, ExistingReparseGuid, Reserved,
    // then the reparse buffer.
    let mut buffer = Vec::new();
    buffer.extend_from_slice(&flags.to_le_bytes());
    buffer.extend_from_slice(&existing_tag.to_le_bytes());
    buffer.extend_from_slice(&guid_bytes(existing_guid).unwrap_or_default());
    buffer.extend_from_slice(&0u64.to_le_bytes());
    buffer.extend_from_slice(&reparse_buffer(tag, guid, data));
    files::fs_control_on(
        fo,
        volume,
        FSCTL_SET_REPARSE_POINT_EX,
        &buffer,
        0,
        Some(instance),
        0,
    )
    .0
}

/// FltUntagFile: FSCTL_DELETE_REPARSE_POINT below the instance.
///
/// # Safety
/// `guid` NULL or valid.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn FltUntagFile(
    instance: PFLT_INSTANCE,
    fo: *const FILE_OBJECT,
    tag: u32,
    guid: *const windows_sys::core::GUID,
) -> NTSTATUS {
    irql::check("FltUntagFile", PASSIVE_LEVEL);
    let Some((fo, volume)) = tag_checks("FltUntagFile", instance, fo) else {
        return STATUS_ACCESS_DENIED;
    };
    let buffer = reparse_buffer(tag, guid_bytes(guid), &[]);
    files::fs_control_on(
        fo,
        volume,
        FSCTL_DELETE_REPARSE_POINT,
        &buffer,
        0,
        Some(instance),
        0,
    )
    .0
}

/// FltLockUserBuffer: the model's buffers are always system memory, so an MDL
/// describing them is all that is needed; it is freed with the operation.
#[unsafe(no_mangle)]
pub extern "system" fn FltLockUserBuffer(data: *const FLT_CALLBACK_DATA) -> NTSTATUS {
    irql::check("FltLockUserBuffer", APC_LEVEL);
    let known = with_kernel(|k| k.io.ops.contains_key(&(data as usize)));
    if !known {
        with_kernel(|k| {
            k.violation(
                "FltLockUserBuffer",
                format!("{data:p} is not the callback data of a live operation"),
            )
        });
        return STATUS_INVALID_PARAMETER;
    }
    // Validated above as a live callback data the dispatcher owns.
    let live = data as usize as *mut FLT_CALLBACK_DATA;
    // SAFETY: a live callback data.
    if unsafe { (*live).Flags } & FLTFL_CALLBACK_DATA_IRP_OPERATION == 0 {
        return STATUS_INVALID_PARAMETER;
    }
    // SAFETY: a live callback data.
    let iopb = unsafe { (*live).Iopb }
        .cast_mut()
        .cast::<FLT_IO_PARAMETER_BLOCK>();
    // SAFETY: its parameter block, owned by the dispatcher and live with the operation.
    let iopb = unsafe { &mut *iopb };
    // The buffer of the operation, and where its MDL goes: directory queries and reads are
    // modelled with an MDL. Answering success for another major would let a filter
    // believe its buffer locked when the model made no MDL.
    let (user, length, mdl_slot): (usize, u32, *mut *mut windows_sys::Wdk::Foundation::MDL) =
        match iopb.MajorFunction {
            io::major::DIRECTORY_CONTROL => {
                // SAFETY: DIRECTORY_CONTROL: the union holds the directory-control parameters.
                let control = unsafe { iopb.Parameters.DirectoryControl };
                // SAFETY: IRP_MN_QUERY_DIRECTORY's member.
                let q = unsafe { control.QueryDirectory };
                if !q.MdlAddress.is_null() || q.DirectoryBuffer.is_null() || q.Length == 0 {
                    return STATUS_SUCCESS;
                }
                (
                    q.DirectoryBuffer as usize,
                    q.Length,
                    // SAFETY: the parameter block is live and ours to fill.
                    unsafe {
                        std::ptr::addr_of_mut!(
                            iopb.Parameters.DirectoryControl.QueryDirectory.MdlAddress
                        )
                    },
                )
            }
            io::major::READ => {
                // SAFETY: READ: the union holds the read parameters.
                let r = unsafe { iopb.Parameters.Read };
                if !r.MdlAddress.is_null() || r.ReadBuffer.is_null() || r.Length == 0 {
                    return STATUS_SUCCESS;
                }
                (
                    r.ReadBuffer as usize,
                    r.Length,
                    // SAFETY: the parameter block is live and ours to fill.
                    unsafe { std::ptr::addr_of_mut!(iopb.Parameters.Read.MdlAddress) },
                )
            }
            major => {
                with_kernel(|k| {
                    k.violation(
                        "FltLockUserBuffer",
                        format!(
                            "major {major:#x}: the model builds MDLs for IRP_MJ_DIRECTORY_CONTROL and IRP_MJ_READ only"
                        ),
                    )
                });
                return STATUS_NOT_SUPPORTED;
            }
        };
    let mut mdl = Box::new(windows_sys::Wdk::Foundation::MDL {
        MdlFlags: MDL_PAGES_LOCKED,
        StartVa: (user & !0xFFF) as *mut c_void,
        ByteOffset: (user & 0xFFF) as u32,
        ByteCount: length,
        ..Default::default()
    });
    let mdl_ptr: *mut windows_sys::Wdk::Foundation::MDL = &mut *mdl;
    // SAFETY: the slot in the live parameter block chosen above.
    unsafe { *mdl_slot = mdl_ptr };
    with_kernel(|k| {
        if let Some(op) = k.io.ops.get_mut(&(data as usize)) {
            op.mdl = Some(io::LockedMdl {
                mdl,
                user,
                len: length as usize,
                mapping: None,
                fresh: true,
            });
        }
    });
    STATUS_SUCCESS
}

/// MDL_MAPPED_TO_SYSTEM_VA.
const MDL_MAPPED_TO_SYSTEM_VA: i16 = 0x0001;
/// MDL_PAGES_LOCKED.
const MDL_PAGES_LOCKED: i16 = 0x0002;

/// MmMapLockedPagesSpecifyCache, for the MDLs FltLockUserBuffer built: maps them into
/// "system space" (see `io::LockedMdl`). Only kernel-mode mappings of a locked MDL that is
/// not mapped yet.
///
/// # Safety
/// `mdl` must be an MDL the caller got from the I/O parameters.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn MmMapLockedPagesSpecifyCache(
    mdl: *mut windows_sys::Wdk::Foundation::MDL,
    access_mode: i8,
    _cache: i32,
    requested: *const c_void,
    _bugcheck_on_failure: u32,
    _priority: u32,
) -> *mut c_void {
    irql::check("MmMapLockedPagesSpecifyCache", DISPATCH_LEVEL);
    if access_mode != 0 || !requested.is_null() {
        with_kernel(|k| {
            k.violation(
                "MmMapLockedPagesSpecifyCache",
                "a user-mode mapping (or a requested address) of an I/O buffer from a filter",
            )
        });
        return std::ptr::null_mut();
    }
    with_kernel(|k| {
        let found =
            k.io.ops
                .values_mut()
                .filter_map(|o| o.mdl.as_mut())
                .find(|m| std::ptr::eq(&*m.mdl, mdl));
        let outcome = match found {
            None => Err(format!("{mdl:p} is not the MDL of a live operation")),
            Some(locked) if locked.mdl.MdlFlags & MDL_MAPPED_TO_SYSTEM_VA != 0 => Err(
                "the MDL is already mapped (use MappedSystemVa: MmGetSystemAddressForMdlSafe)"
                    .to_owned(),
            ),
            Some(locked) => {
                // SAFETY: the issuer's buffer the MDL describes, alive with the operation.
                let bytes =
                    unsafe { std::slice::from_raw_parts(locked.user as *const u8, locked.len) };
                let mut mapping: Box<[u8]> = bytes.into();
                let va = mapping.as_mut_ptr().cast::<c_void>();
                locked.mapping = Some(mapping);
                locked.mdl.MappedSystemVa = va;
                locked.mdl.MdlFlags |= MDL_MAPPED_TO_SYSTEM_VA;
                Ok(va)
            }
        };
        outcome.unwrap_or_else(|message| {
            k.violation("MmMapLockedPagesSpecifyCache", message);
            std::ptr::null_mut()
        })
    })
}

/// FltDoCompletionProcessingWhenSafe: runs `safe` now if the IRQL allows, else on a
/// worker thread at PASSIVE_LEVEL with the post-operation pended.
///
/// # Safety
/// As documented: called from a post-operation with its arguments.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn FltDoCompletionProcessingWhenSafe(
    data: *const FLT_CALLBACK_DATA,
    objects: *const FLT_RELATED_OBJECTS,
    context: *const c_void,
    flags: u32,
    safe: PFLT_POST_OPERATION_CALLBACK,
    ret: *mut FLT_POSTOP_CALLBACK_STATUS,
) -> bool {
    let Some(safe) = safe else { return false };
    let irp_op = with_kernel(|k| {
        k.io.ops
            .get(&(data as usize))
            .map(|o| o.kind == io::Kind::Irp)
    });
    if irp_op != Some(true) {
        return false;
    }
    // SAFETY: a live callback data (checked above).
    let iopb = unsafe { (*data).Iopb }.cast::<FLT_IO_PARAMETER_BLOCK>();
    // SAFETY: its Iopb lives in the same allocation.
    let paging = unsafe { (*iopb).IrpFlags } & irp::PAGING_IO != 0;
    if paging {
        return false;
    }
    if irql::current() <= APC_LEVEL {
        // SAFETY: the filter's safe callback with the arguments it was given.
        let status = unsafe { safe(data.cast_mut(), objects, context, flags) };
        if !ret.is_null() {
            // SAFETY: the caller's out pointer.
            unsafe { ret.write(status) };
        }
        return true;
    }
    // SAFETY: the related objects live in the dispatcher's frame, which waits for the
    // pended post-operation; copied for the worker.
    let o = unsafe { *objects };
    let (filter, volume, instance, file) = (o.Filter, o.Volume, o.Instance, o.FileObject as usize);
    let (data_addr, context_addr) = (data as usize, context as usize);
    if !ret.is_null() {
        // SAFETY: the caller's out pointer.
        unsafe { ret.write(FLT_POSTOP_MORE_PROCESSING_REQUIRED) };
    }
    // FltMgr pends the post-operation itself before it queues the work item: the worker
    // may complete it before the post-operation has even returned.
    with_kernel(|k| {
        if let Some(op) = k.io.ops.get_mut(&(data as usize)) {
            op.stage = io::Stage::PostPended;
            op.deferred_post = true;
        }
    });
    std::thread::spawn(move || {
        let objects = FLT_RELATED_OBJECTS {
            Size: std::mem::size_of::<FLT_RELATED_OBJECTS>() as u16,
            TransactionContext: 0,
            Filter: filter,
            Volume: volume,
            Instance: instance,
            FileObject: file as *const FILE_OBJECT,
            Transaction: std::ptr::null(),
        };
        irql::at(PASSIVE_LEVEL, || {
            // SAFETY: the callback data stays alive: its post-operation is pended until
            // FltCompletePendedPostOperation below.
            let status = unsafe {
                safe(
                    data_addr as *mut FLT_CALLBACK_DATA,
                    &objects,
                    context_addr as *const c_void,
                    flags,
                )
            };
            if status == FLT_POSTOP_FINISHED_PROCESSING {
                io::FltCompletePendedPostOperation(data_addr as *const FLT_CALLBACK_DATA);
            }
        })
    });
    true
}

/// FltFlushBuffers: the file's dirty pages written back, below `instance`, in the
/// calling thread (the file system's CcFlushCache).
#[unsafe(no_mangle)]
pub extern "system" fn FltFlushBuffers(
    instance: PFLT_INSTANCE,
    fo: *const FILE_OBJECT,
) -> NTSTATUS {
    irql::check("FltFlushBuffers", PASSIVE_LEVEL);
    files::flush_below(fo as usize, instance)
}

/// SeLocateProcessImageName: the image path in NT form, in pool the caller frees with
/// ExFreePool(WithTag).
///
/// # Safety
/// `out` must be writable.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn SeLocateProcessImageName(
    process: *mut c_void,
    out: *mut *mut UNICODE_STRING,
) -> NTSTATUS {
    irql::check("SeLocateProcessImageName", PASSIVE_LEVEL);
    if out.is_null() {
        return STATUS_INVALID_PARAMETER;
    }
    let image = with_kernel(|k| k.processes.by_eprocess(process).map(|p| p.image.clone()));
    let Some(image) = image else {
        with_kernel(|k| {
            k.violation(
                "SeLocateProcessImageName",
                format!("{process:p} is not a process object"),
            )
        });
        return STATUS_INVALID_PARAMETER;
    };
    let units: Vec<u16> = image.encode_utf16().collect();
    let header = std::mem::size_of::<UNICODE_STRING>();
    let size = header + units.len() * 2;
    // The kernel allocates it with tag 'SeIm'... the caller frees it with ExFreePool.
    let block = with_kernel(|k| {
        k.pool.allocate(
            size,
            u32::from_le_bytes(*b"SeIm"),
            super::pool::Owner::Driver,
        )
    });
    let Some(block) = block else {
        return windows_sys::Win32::Foundation::STATUS_INSUFFICIENT_RESOURCES;
    };
    // SAFETY: `block` holds `size` bytes: the header, then the name.
    let text = unsafe { block.add(header) }.cast::<u16>();
    // SAFETY: as above; no overlap.
    unsafe { std::ptr::copy_nonoverlapping(units.as_ptr(), text, units.len()) };
    let s = UNICODE_STRING {
        Length: (units.len() * 2) as u16,
        MaximumLength: (units.len() * 2) as u16,
        Buffer: text,
    };
    // SAFETY: the header fits at the start of the 16-byte aligned block.
    unsafe { block.cast::<UNICODE_STRING>().write(s) };
    // SAFETY: checked non-null above.
    unsafe { out.write(block.cast()) };
    let _ = process::current_pid();
    STATUS_SUCCESS
}

/// Pool tag of deferred I/O work items.
const DEFERRED_TAG: [u8; 4] = *b"FMdw";

/// FltAllocateDeferredIoWorkItem.
#[unsafe(no_mangle)]
pub extern "system" fn FltAllocateDeferredIoWorkItem() -> PFLT_DEFERRED_IO_WORKITEM {
    irql::check("FltAllocateDeferredIoWorkItem", DISPATCH_LEVEL);
    with_kernel(|k| {
        let Some(block) = k.pool.allocate(
            64,
            u32::from_le_bytes(DEFERRED_TAG),
            super::pool::Owner::FltMgr("deferred I/O work item"),
        ) else {
            return 0;
        };
        let item = block as isize;
        k.io.deferred.insert(item, false);
        item
    })
}

/// FltQueueDeferredIoWorkItem: runs `routine` later on a System worker thread at
/// PASSIVE_LEVEL for an operation the filter is about to pend. Refuses what may not be
/// posted: paging I/O (the faulting thread may hold locks the worker needs) and anything
/// but an IRP operation.
///
/// # Safety
/// `data` must be a live callback data.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn FltQueueDeferredIoWorkItem(
    item: PFLT_DEFERRED_IO_WORKITEM,
    data: *const FLT_CALLBACK_DATA,
    routine: PFLT_DEFERRED_IO_WORKITEM_ROUTINE,
    _queue: i32,
    context: *const c_void,
) -> NTSTATUS {
    irql::check("FltQueueDeferredIoWorkItem", DISPATCH_LEVEL);
    let Some(routine) = routine else {
        return STATUS_INVALID_PARAMETER;
    };
    let state = with_kernel(|k| {
        let queued = k.io.deferred.get(&item).copied();
        let op = k.io.ops.get(&(data as usize)).map(|o| o.kind);
        (queued, op)
    });
    match state {
        (None, _) => {
            with_kernel(|k| {
                k.violation(
                    "FltQueueDeferredIoWorkItem",
                    format!("{item:#x} is not an allocated deferred work item"),
                )
            });
            return STATUS_INVALID_PARAMETER;
        }
        (Some(true), _) => {
            with_kernel(|k| {
                k.violation(
                    "FltQueueDeferredIoWorkItem",
                    "work item queued again before its routine ran",
                )
            });
            return STATUS_INVALID_PARAMETER;
        }
        (Some(false), None) => {
            with_kernel(|k| {
                k.violation(
                    "FltQueueDeferredIoWorkItem",
                    format!("{data:p} is not the callback data of a live operation"),
                )
            });
            return STATUS_INVALID_PARAMETER;
        }
        (Some(false), Some(kind)) if kind != io::Kind::Irp => {
            return STATUS_FLT_NOT_SAFE_TO_POST_OPERATION;
        }
        _ => {}
    }
    // SAFETY: a live callback data (checked above).
    let iopb = unsafe { (*data).Iopb }.cast::<FLT_IO_PARAMETER_BLOCK>();
    // SAFETY: its Iopb lives in the same allocation.
    if unsafe { (*iopb).IrpFlags } & irp::PAGING_IO != 0 {
        return STATUS_FLT_NOT_SAFE_TO_POST_OPERATION;
    }
    with_kernel(|k| k.io.deferred.insert(item, true));
    let (data_addr, context_addr) = (data as usize, context as usize);
    std::thread::spawn(move || {
        // Started: from here on the routine may free its item (the usual pattern).
        with_kernel(|k| {
            if let Some(q) = k.io.deferred.get_mut(&item) {
                *q = false;
            }
        });
        irql::at(PASSIVE_LEVEL, || {
            // SAFETY: the filter's routine with the item, the pended operation's callback
            // data (alive until the filter completes it) and its context.
            unsafe {
                routine(
                    item,
                    data_addr as *const FLT_CALLBACK_DATA,
                    context_addr as *const c_void,
                )
            };
        });
    });
    STATUS_SUCCESS
}

/// FltFreeDeferredIoWorkItem.
#[unsafe(no_mangle)]
pub extern "system" fn FltFreeDeferredIoWorkItem(item: PFLT_DEFERRED_IO_WORKITEM) {
    irql::check("FltFreeDeferredIoWorkItem", DISPATCH_LEVEL);
    with_kernel(|k| match k.io.deferred.get(&item).copied() {
        None => k.violation(
            "FltFreeDeferredIoWorkItem",
            format!("{item:#x} is not an allocated deferred work item (freed twice?)"),
        ),
        Some(true) => k.violation(
            "FltFreeDeferredIoWorkItem",
            "freed a deferred work item whose routine has not run yet",
        ),
        Some(false) => {
            k.io.deferred.remove(&item);
            if let Err(message) = k.pool.free(
                item as *mut u8,
                None,
                super::pool::Owner::FltMgr("deferred I/O work item"),
            ) {
                k.violation("FltFreeDeferredIoWorkItem", message);
            }
        }
    });
}

/// IO_FORCE_ACCESS_CHECK: the open is checked against the file's DACL with the calling
/// thread's token, as for a user-mode caller (the I/O manager's access check). The model
/// keeps only who may write a file ([`Writers`](super::ntfs::Writers)); everyone may read.
/// `None` when the open may go on (the file system then reports a missing file as
/// usual), or the status it fails with.
///
/// Only opens of an existing file are modelled: a create that could make one is a
/// violation to report, not a guess.
fn forced_access_check(
    volume: PFLT_VOLUME,
    rel: &[u16],
    access: u32,
    disposition: u32,
) -> Option<NTSTATUS> {
    /// Rights the model's DACLs grant writers only: FILE_WRITE_DATA, FILE_APPEND_DATA,
    /// FILE_WRITE_EA, FILE_WRITE_ATTRIBUTES, DELETE, WRITE_DAC, WRITE_OWNER,
    /// GENERIC_ALL, GENERIC_WRITE.
    const WRITE_RIGHTS: u32 =
        0x2 | 0x4 | 0x10 | 0x100 | 0x1_0000 | 0x4_0000 | 0x8_0000 | 0x1000_0000 | 0x4000_0000;
    const FILE_OPEN: u32 = 1;
    with_kernel(|k| {
        if disposition != FILE_OPEN {
            k.violation(
                "FltCreateFileEx2",
                "IO_FORCE_ACCESS_CHECK with a disposition that may create: not modelled",
            );
            return Some(STATUS_NOT_SUPPORTED);
        }
        if access & WRITE_RIGHTS == 0 {
            return None;
        }
        let elevated = k
            .processes
            .get(super::process::current_pid())
            .is_some_and(|p| p.elevated);
        let path = String::from_utf16_lossy(rel);
        let writers = k
            .volumes
            .iter()
            .find(|v| v.handle == volume)
            .and_then(|v| v.fs.lookup(&path).and_then(|id| v.fs.writers(id)))?;
        let allowed = elevated || writers == super::ntfs::Writers::StandardUser;
        (!allowed).then_some(windows_sys::Win32::Foundation::STATUS_ACCESS_DENIED)
    })
}
