//! The I/O callbacks of the operation table.
//!
//! CREATE opens placeholders as themselves and attaches their stream context; READ and
//! ACQUIRE_FOR_SECTION_SYNCHRONIZATION hydrate what is missing (module `hydrate`);
//! FILE_SYSTEM_CONTROL guards cloudflt's reparse tag (engine::tagguard); the other
//! operations pass through until disguise is built.

use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FLT_CALLBACK_DATA, FLT_POSTOP_CALLBACK_STATUS, FLT_POSTOP_FINISHED_PROCESSING,
    FLT_PREOP_CALLBACK_STATUS, FLT_PREOP_COMPLETE, FLT_PREOP_SUCCESS_NO_CALLBACK,
    FLT_RELATED_OBJECTS, FLTFL_CALLBACK_DATA_IRP_OPERATION,
};
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FLT_FILE_NAME_INFORMATION, FLT_FILE_NAME_NORMALIZED, FLT_FILE_NAME_QUERY_DEFAULT,
    FLT_PREOP_DISALLOW_FASTIO, FLT_PREOP_PENDING, FLT_PREOP_SUCCESS_WITH_CALLBACK,
    FLT_PREOP_SYNCHRONIZE, FLTFL_CALLBACK_DATA_FAST_IO_OPERATION, FLTFL_POST_OPERATION_DRAINING,
    FltAddOpenReparseEntry, FltGetFileNameInformation, FltGetInstanceContext,
    FltGetRequestorProcess, FltGetRequestorProcessId, FltIsDirectory,
    FltReleaseFileNameInformation, FltRemoveOpenReparseEntry, PFLT_CONTEXT,
};
use windows_sys::Wdk::Storage::FileSystem::{OPEN_REPARSE_LIST_ENTRY, SeLocateProcessImageName};
use windows_sys::Wdk::System::SystemServices::{ExFreePool, IRP_PAGING_IO};
use windows_sys::Win32::Foundation::{
    NTSTATUS, STATUS_ACCESS_DENIED, STATUS_CLOUD_FILE_INSUFFICIENT_RESOURCES,
    STATUS_CLOUD_FILE_METADATA_CORRUPT, STATUS_CLOUD_FILE_PROVIDER_NOT_RUNNING,
    STATUS_CLOUD_FILE_UNSUCCESSFUL, STATUS_REPARSE, UNICODE_STRING,
};
use windows_sys::Win32::System::Kernel::LIST_ENTRY;

use core::ptr::NonNull;

use super::context::InstanceContext;
use super::file::Fo;
use super::layout::FLT_IO_PARAMETER_BLOCK;
use super::placeholder::{self, StreamRef};
use super::pool::{PoolBox, TAG_OPEN_REPARSE};
use super::status::nt_success;
use super::{disguise, hydrate, providers};
use crate::engine::policy::{self, Policy};
use crate::engine::ranges::Range;
use windows_sys::Win32::System::IO::{IO_STATUS_BLOCK, IO_STATUS_BLOCK_0};

use crate::engine::tagguard;

/// PreOperation for every registered operation: pass the I/O down unchanged.
///
/// # Safety
/// Called by FltMgr with valid callback data.
pub(super) unsafe extern "system" fn pre_pass_through(
    _data: *mut FLT_CALLBACK_DATA,
    _objects: *const FLT_RELATED_OBJECTS,
    _completion_context: *mut *mut core::ffi::c_void,
) -> FLT_PREOP_CALLBACK_STATUS {
    FLT_PREOP_SUCCESS_NO_CALLBACK
}

/// METHOD_BUFFERED: the only transfer method of the reparse-point FSCTLs.
const METHOD_BUFFERED: u32 = 0;
/// IRP_MN_USER_FS_REQUEST.
const IRP_MN_USER_FS_REQUEST: u8 = 0;

/// PreOperation of FILE_SYSTEM_CONTROL: refuses a user's FSCTL that would set, replace or
/// delete cloudflt's reparse point (the driver's own tagging goes below the filter).
///
/// # Safety
/// Called by FltMgr with valid callback data.
pub(super) unsafe extern "system" fn pre_fs_control(
    data: *mut FLT_CALLBACK_DATA,
    objects: *const FLT_RELATED_OBJECTS,
    _completion_context: *mut *mut core::ffi::c_void,
) -> FLT_PREOP_CALLBACK_STATUS {
    // SAFETY: FltMgr passes valid callback data for the duration of the call.
    let Some(data) = (unsafe { data.as_mut() }) else {
        return FLT_PREOP_SUCCESS_NO_CALLBACK;
    };
    if data.Flags & FLTFL_CALLBACK_DATA_IRP_OPERATION == 0 {
        return FLT_PREOP_SUCCESS_NO_CALLBACK;
    }
    // SAFETY: Iopb points at the operation's parameter block, valid during the callback,
    // laid out as fltKernel.h declares it (nt::layout).
    let Some(iopb) = (unsafe { data.Iopb.cast::<FLT_IO_PARAMETER_BLOCK>().as_ref() }) else {
        return FLT_PREOP_SUCCESS_NO_CALLBACK;
    };
    if iopb.MinorFunction != IRP_MN_USER_FS_REQUEST {
        return FLT_PREOP_SUCCESS_NO_CALLBACK;
    }
    // SAFETY: FILE_SYSTEM_CONTROL with IRP_MN_USER_FS_REQUEST: the union holds the FSCTL
    // parameters.
    let control = unsafe { iopb.Parameters.FileSystemControl };
    // SAFETY: the Common member overlays the first three fields of every method.
    let common = unsafe { control.Common };
    if common.FsControlCode & 3 != METHOD_BUFFERED {
        return FLT_PREOP_SUCCESS_NO_CALLBACK;
    }
    if disguise::wants_get_reparse_post(common.FsControlCode, objects) {
        return FLT_PREOP_SYNCHRONIZE;
    }
    // SAFETY: METHOD_BUFFERED: the Buffered member describes the system buffer.
    let buffered = unsafe { control.Buffered };
    let length = buffered.InputBufferLength as usize;
    let input: &[u8] = if buffered.SystemBuffer.is_null() || length == 0 {
        &[]
    } else {
        // SAFETY: the I/O manager's system buffer holds at least InputBufferLength bytes,
        // captured from the caller before the IRP was sent, so reading it is safe.
        unsafe { core::slice::from_raw_parts(buffered.SystemBuffer.cast::<u8>(), length) }
    };
    if !tagguard::touches_tag(common.FsControlCode, input, cloudflt_proto::reparse::TAG) {
        return FLT_PREOP_SUCCESS_NO_CALLBACK;
    }
    debug_print!(
        "cloudflt: refused FSCTL {:#x} on cloudflt's tag",
        common.FsControlCode
    );
    data.IoStatus = IO_STATUS_BLOCK {
        Anonymous: IO_STATUS_BLOCK_0 {
            Status: STATUS_ACCESS_DENIED,
        },
        Information: 0,
    };
    FLT_PREOP_COMPLETE
}

/// cloudflt's open-reparse entry: placeholders open as themselves for every caller, with
/// no STATUS_REPARSE; other tags are untouched (the entry names only cloudflt's tag and
/// GUID, and flags 0 mean "never reparse on it").
fn open_reparse_entry() -> OPEN_REPARSE_LIST_ENTRY {
    OPEN_REPARSE_LIST_ENTRY {
        OpenReparseListEntry: LIST_ENTRY {
            Flink: core::ptr::null_mut(),
            Blink: core::ptr::null_mut(),
        },
        ReparseTag: cloudflt_proto::reparse::TAG,
        Flags: 0,
        ReparseGuid: super::file::reparse_guid(),
        Size: core::mem::size_of::<OPEN_REPARSE_LIST_ENTRY>() as u16,
        RemainingLength: 0,
    }
}

/// PreOperation of CREATE: adds cloudflt's open-reparse entry, so NTFS opens a
/// placeholder instead of returning STATUS_REPARSE.
///
/// FltAddOpenReparseEntry links the caller's entry itself into the create's ECP list; the
/// file system reads it, and sets OPEN_REPARSE_POINT_TAG_ENCOUNTERED in it, after this
/// frame is gone, and FltRemoveOpenReparseEntry takes the same pointer. So the entry lives
/// in pool for the length of the create: it is the completion context, and
/// [`post_create`], which FltMgr calls for every FLT_PREOP_SUCCESS_WITH_CALLBACK (when it
/// drains the instance too), removes and frees it.
///
/// # Safety
/// Called by FltMgr with valid callback data.
pub(super) unsafe extern "system" fn pre_create(
    data: *mut FLT_CALLBACK_DATA,
    objects: *const FLT_RELATED_OBJECTS,
    completion_context: *mut *mut core::ffi::c_void,
) -> FLT_PREOP_CALLBACK_STATUS {
    // SAFETY: FltMgr passes valid related objects for the duration of the call.
    let Some(objects) = (unsafe { objects.as_ref() }) else {
        return FLT_PREOP_SUCCESS_WITH_CALLBACK;
    };
    let Some(entry) = PoolBox::try_new(open_reparse_entry(), TAG_OPEN_REPARSE) else {
        // No pool for the entry: the create goes down as if the driver had added none,
        // which is how it goes without the driver. An open that meets a placeholder then
        // stops at it with STATUS_REPARSE on cloudflt's tag, which the I/O manager has no
        // handler for, so the caller's open fails with STATUS_IO_REPARSE_TAG_NOT_HANDLED
        // (a retry can succeed once pool is back); opens that meet no placeholder are not
        // affected.
        return FLT_PREOP_SUCCESS_WITH_CALLBACK;
    };
    let entry = PoolBox::into_raw(entry);
    // SAFETY: a pre-create at PASSIVE_LEVEL; `entry` is a pool allocation that stays valid
    // until post_create (or the failure paths below) removes and frees it.
    let status = unsafe { FltAddOpenReparseEntry(objects.Filter, data, entry.as_ptr()) };
    if !nt_success(status) {
        debug_print!("cloudflt: FltAddOpenReparseEntry failed with {status:#010x}");
        // SAFETY: from `into_raw` above with this tag; FltMgr did not link it.
        drop(unsafe { PoolBox::from_raw(entry, TAG_OPEN_REPARSE) });
        return FLT_PREOP_SUCCESS_WITH_CALLBACK;
    }
    // SAFETY: FltMgr's completion-context slot for this pre-operation (NULL-checked).
    match unsafe { completion_context.as_mut() } {
        Some(slot) => *slot = entry.as_ptr().cast(),
        // No slot would mean no way to reach the entry in post-create: unlinked and freed
        // now, the create goes on as if none had been added (see above).
        None => release_open_reparse_entry(objects, data, entry),
    }
    FLT_PREOP_SUCCESS_WITH_CALLBACK
}

/// Takes cloudflt's open-reparse entry out of its create and frees it.
fn release_open_reparse_entry(
    objects: &FLT_RELATED_OBJECTS,
    data: *const FLT_CALLBACK_DATA,
    entry: NonNull<OPEN_REPARSE_LIST_ENTRY>,
) {
    // SAFETY: the entry pre_create added to this create for this filter, at IRQL <=
    // APC_LEVEL (pre- and post-create run at PASSIVE_LEVEL, a draining post at <=
    // APC_LEVEL).
    unsafe { FltRemoveOpenReparseEntry(objects.Filter, data, entry.as_ptr()) };
    // SAFETY: from `PoolBox::into_raw` in pre_create with this tag; unlinked just now, so
    // nothing else can reach it.
    drop(unsafe { PoolBox::from_raw(entry, TAG_OPEN_REPARSE) });
}

/// PostOperation of CREATE: removes and frees the open-reparse entry pre_create added;
/// then a successful open of a file carrying cloudflt's tag gets the stream context its
/// reads need.
///
/// # Safety
/// Called by FltMgr with valid callback data.
pub(super) unsafe extern "system" fn post_create(
    data: *mut FLT_CALLBACK_DATA,
    objects: *const FLT_RELATED_OBJECTS,
    completion_context: *const core::ffi::c_void,
    flags: u32,
) -> FLT_POSTOP_CALLBACK_STATUS {
    // SAFETY: FltMgr passes valid related objects for the call.
    let objects = unsafe { objects.as_ref() };
    // The entry goes on every path, draining included: FltMgr calls no other routine of
    // ours for this create, and the entry pins the filter (FltAddOpenReparseEntry
    // references it until the removal), so FltUnregisterFilter would wait on one left
    // linked. A draining post gets a copy of the callback data, which is what it passes
    // on. Without the related objects (FltMgr always passes them) the entry cannot be
    // unlinked, and a linked entry must not go back to pool, so it stays allocated.
    let entry = NonNull::new(
        completion_context
            .cast_mut()
            .cast::<OPEN_REPARSE_LIST_ENTRY>(),
    );
    if let (Some(entry), Some(objects)) = (entry, objects) {
        release_open_reparse_entry(objects, data, entry);
    }
    if flags & FLTFL_POST_OPERATION_DRAINING != 0 {
        return FLT_POSTOP_FINISHED_PROCESSING;
    }
    // SAFETY: FltMgr passes valid callback data for the call.
    let (Some(data), Some(objects)) = (unsafe { data.as_ref() }, objects) else {
        return FLT_POSTOP_FINISHED_PROCESSING;
    };
    // SAFETY: the status member of the completed operation.
    let status = unsafe { data.IoStatus.Anonymous.Status };
    if !nt_success(status) || status == STATUS_REPARSE || objects.FileObject.is_null() {
        return FLT_POSTOP_FINISHED_PROCESSING;
    }
    let fo = Fo {
        instance: objects.Instance,
        file_object: objects.FileObject,
    };
    // A failure leaves the file without context: its reads then find no placeholder
    // state and pass, which is what they did before the driver loaded.
    let stream = placeholder::attach(objects.Filter, fo).ok().flatten();
    if stream.is_none() && !is_directory(&fo) {
        return FLT_POSTOP_FINISHED_PROCESSING;
    }
    if let Some(stream) = stream {
        placeholder::open_added(&stream);
    }
    let placeholder = placeholder::get(objects.Instance, objects.FileObject).is_some();
    // The open's effective policy is fixed now (cfapi's rule): the provider's, as no
    // application policy exists yet. Its visibility too, in the requestor's context.
    let provider = NameInfo::normalized(data)
        .ok()
        .and_then(|name| providers::for_path(name.units()));
    if !placeholder && provider.is_none() {
        // A directory outside every connected sync root: nothing to disguise in it.
        return FLT_POSTOP_FINISHED_PROCESSING;
    }
    let policy = provider.as_ref().map(|p| p.hydration);
    let image = ImageName::of(data);
    let visibility = disguise::decide(data, image.units(), provider.as_ref().map(|p| p.pid));
    drop(provider);
    if placeholder::set_handle_context(objects.Filter, fo, policy, visibility).is_err() {
        debug_print!("cloudflt: no stream-handle context for an open");
    }
    FLT_POSTOP_FINISHED_PROCESSING
}

/// Whether a successful create opened a directory: the opens that can list. Asked of the
/// file system, not read from FILE_DIRECTORY_FILE, which a create may leave out.
fn is_directory(fo: &Fo) -> bool {
    let mut directory = false;
    // SAFETY: the file object of a successful create, on `fo.instance`'s volume;
    // PASSIVE_LEVEL (post-create); a valid out pointer.
    let status = unsafe { FltIsDirectory(fo.file_object, fo.instance, &mut directory) };
    nt_success(status) && directory
}

/// The read an operation asks for, as (offset, length).
fn read_of(data: &FLT_CALLBACK_DATA) -> Option<(u64, u64)> {
    // SAFETY: Iopb points at the operation's parameter block, valid during the operation,
    // laid out as fltKernel.h declares it (nt::layout).
    let iopb = unsafe { data.Iopb.cast::<FLT_IO_PARAMETER_BLOCK>().as_ref() }?;
    // SAFETY: IRP_MJ_READ: the union holds the read parameters.
    let read = unsafe { iopb.Parameters.Read };
    let offset = u64::try_from(read.ByteOffset).unwrap_or(0);
    Some((offset, u64::from(read.Length)))
}

fn complete(data: &mut FLT_CALLBACK_DATA, status: NTSTATUS) -> FLT_PREOP_CALLBACK_STATUS {
    data.IoStatus = IO_STATUS_BLOCK {
        Anonymous: IO_STATUS_BLOCK_0 { Status: status },
        Information: 0,
    };
    FLT_PREOP_COMPLETE
}

/// PreOperation of READ: a read of data a placeholder does not have yet pends until the
/// provider delivers it (per the provider's hydration policy); a paging read of missing
/// data fails at once (the faulting thread may hold locks a fetch would need); the
/// provider's own reads pass untouched.
///
/// # Safety
/// Called by FltMgr with valid callback data.
pub(super) unsafe extern "system" fn pre_read(
    data: *mut FLT_CALLBACK_DATA,
    objects: *const FLT_RELATED_OBJECTS,
    _completion_context: *mut *mut core::ffi::c_void,
) -> FLT_PREOP_CALLBACK_STATUS {
    // SAFETY: FltMgr passes valid callback data and related objects for the call.
    let (Some(data_ref), Some(objects)) = (unsafe { data.as_mut() }, unsafe { objects.as_ref() })
    else {
        return FLT_PREOP_SUCCESS_NO_CALLBACK;
    };
    let Some(stream) = placeholder::get(objects.Instance, objects.FileObject) else {
        return FLT_PREOP_SUCCESS_NO_CALLBACK;
    };
    // SAFETY: live callback data.
    let pid = unsafe { FltGetRequestorProcessId(data) };
    if providers::is_provider(pid as usize) {
        return FLT_PREOP_SUCCESS_NO_CALLBACK;
    }
    let Some((offset, length)) = read_of(data_ref) else {
        return FLT_PREOP_SUCCESS_NO_CALLBACK;
    };
    let whole = placeholder::handle_policy(objects.Instance, objects.FileObject)
        .is_some_and(|p| p >= Policy::Full);
    let (placeholder, corrupt, missing) = hydrate::with_held(|held| {
        stream.with_state(held, |s| {
            let file = Range {
                start: 0,
                end: s.file_size,
            };
            let read = Range::at(offset, length).clip(file);
            // FULL opens need the whole file before even a byte is read.
            let needed = if whole { file } else { read };
            (
                s.placeholder,
                s.corrupt,
                !read.is_empty() && !s.present.contains(needed),
            )
        })
    });
    if !placeholder {
        return FLT_PREOP_SUCCESS_NO_CALLBACK;
    }
    if corrupt {
        return complete(data_ref, STATUS_CLOUD_FILE_METADATA_CORRUPT);
    }
    if !missing {
        return FLT_PREOP_SUCCESS_NO_CALLBACK;
    }
    if data_ref.Flags & FLTFL_CALLBACK_DATA_FAST_IO_OPERATION != 0 {
        return FLT_PREOP_DISALLOW_FASTIO;
    }
    if data_ref.Flags & FLTFL_CALLBACK_DATA_IRP_OPERATION == 0 {
        return FLT_PREOP_SUCCESS_NO_CALLBACK;
    }
    // SAFETY: Iopb is valid during the operation (read_of succeeded).
    let irp_flags = unsafe { (*data_ref.Iopb.cast::<FLT_IO_PARAMETER_BLOCK>()).IrpFlags };
    if irp_flags & IRP_PAGING_IO != 0 {
        return complete(data_ref, PAGING_READ_OF_MISSING_DATA);
    }
    pend(data, objects, &stream, offset, length)
}

/// What a paging read of data not on disk fails with.
const PAGING_READ_OF_MISSING_DATA: NTSTATUS = STATUS_CLOUD_FILE_UNSUCCESSFUL;

/// Pends a read of missing data until its provider delivers it (hydrate::pend_read):
/// nothing in this thread or any other waits for the provider.
fn pend(
    data: *mut FLT_CALLBACK_DATA,
    objects: &FLT_RELATED_OBJECTS,
    stream: &StreamRef,
    offset: u64,
    length: u64,
) -> FLT_PREOP_CALLBACK_STATUS {
    // SAFETY: live callback data (the caller's).
    let data_ref = unsafe { &mut *data };
    let name = match NameInfo::normalized(data) {
        Ok(name) => name,
        Err(status) => return complete(data_ref, status),
    };
    let Some(provider) = providers::for_path(name.units()) else {
        return complete(data_ref, STATUS_CLOUD_FILE_PROVIDER_NOT_RUNNING);
    };
    let size = hydrate::with_held(|held| stream.with_state(held, |s| s.file_size));
    let Some(plan) = policy::plan(provider.hydration, Range::at(offset, length), size) else {
        return FLT_PREOP_SUCCESS_NO_CALLBACK;
    };
    // SAFETY: live callback data.
    let pid = unsafe { FltGetRequestorProcessId(data) };
    let image = ImageName::of(data);
    let Some(asker) = hydrate::Asker::new(pid, name.units(), image.units()) else {
        return complete(data_ref, STATUS_CLOUD_FILE_INSUFFICIENT_RESOURCES);
    };
    let mut instance: PFLT_CONTEXT = core::ptr::null_mut();
    // SAFETY: the operation's instance; a valid out pointer.
    let status = unsafe { FltGetInstanceContext(objects.Instance, &mut instance) };
    let Some(instance) =
        NonNull::new(instance.cast::<InstanceContext>()).filter(|_| nt_success(status))
    else {
        return complete(data_ref, STATUS_CLOUD_FILE_INSUFFICIENT_RESOURCES);
    };
    let target = hydrate::ReadTarget {
        data,
        instance,
        file_object: objects.FileObject as usize,
        plan,
    };
    match hydrate::pend_read(stream, &provider, target, asker) {
        hydrate::Pend::Pass => FLT_PREOP_SUCCESS_NO_CALLBACK,
        hydrate::Pend::Complete(status) => complete(data_ref, status),
        hydrate::Pend::Pended => FLT_PREOP_PENDING,
    }
}

/// Makes all of a `size`-byte placeholder present for operation `data` (a section about
/// to be created), waiting in the requesting thread.
fn fetch_whole(data: *const FLT_CALLBACK_DATA, stream: &StreamRef, size: u64) -> NTSTATUS {
    let name = match NameInfo::normalized(data) {
        Ok(name) => name,
        Err(status) => return status,
    };
    // SAFETY: live callback data.
    let pid = unsafe { FltGetRequestorProcessId(data) };
    let image = ImageName::of(data);
    let target = hydrate::Target {
        stream,
        name: name.units(),
        requestor_pid: pid,
        requestor_image: image.units(),
        data: core::ptr::null(),
        file_object: target_file_object(data),
    };
    hydrate::ensure_range(
        &target,
        Range {
            start: 0,
            end: size,
        },
    )
}

/// The file object an operation targets (0 if none).
fn target_file_object(data: *const FLT_CALLBACK_DATA) -> usize {
    // SAFETY: live callback data.
    let Some(data) = (unsafe { data.as_ref() }) else {
        return 0;
    };
    // SAFETY: its parameter block, valid during the operation.
    unsafe { data.Iopb.cast::<FLT_IO_PARAMETER_BLOCK>().as_ref() }
        .map_or(0, |i| i.TargetFileObject as usize)
}

/// A file name from FltGetFileNameInformation, released on drop.
pub(super) struct NameInfo(*mut FLT_FILE_NAME_INFORMATION);

impl NameInfo {
    /// The normalized name of the file `data` targets, or FltMgr's failure. PASSIVE_LEVEL
    /// (a pre-operation or a synchronised post-operation).
    pub(super) fn normalized(data: *const FLT_CALLBACK_DATA) -> Result<Self, NTSTATUS> {
        let mut name: *mut FLT_FILE_NAME_INFORMATION = core::ptr::null_mut();
        // SAFETY: live callback data at PASSIVE_LEVEL (the callers' contract); a valid out
        // pointer.
        let status = unsafe {
            FltGetFileNameInformation(
                data,
                FLT_FILE_NAME_NORMALIZED | FLT_FILE_NAME_QUERY_DEFAULT,
                &mut name,
            )
        };
        if !nt_success(status) {
            return Err(status);
        }
        Ok(Self(name))
    }

    pub(super) fn units(&self) -> &[u16] {
        // SAFETY: a referenced name information structure.
        let Some(info) = (unsafe { self.0.as_ref() }) else {
            return &[];
        };
        unicode_units(&info.Name)
    }
}

impl Drop for NameInfo {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: the reference FltGetFileNameInformation gave, released once.
            unsafe { FltReleaseFileNameInformation(self.0) };
        }
    }
}

fn unicode_units(s: &UNICODE_STRING) -> &[u16] {
    if s.Buffer.is_null() {
        return &[];
    }
    // SAFETY: Length bytes at Buffer, per UNICODE_STRING.
    unsafe { core::slice::from_raw_parts(s.Buffer, usize::from(s.Length) / 2) }
}

/// The requesting process's image path, for the provider; freed on drop.
pub(super) struct ImageName(*mut UNICODE_STRING);

impl ImageName {
    pub(super) fn of(data: *const FLT_CALLBACK_DATA) -> Self {
        // SAFETY: live callback data.
        let process = unsafe { FltGetRequestorProcess(data) };
        if process == 0 {
            return Self(core::ptr::null_mut());
        }
        let mut name: *mut UNICODE_STRING = core::ptr::null_mut();
        // SAFETY: a live process object; PASSIVE_LEVEL; a valid out pointer.
        let status = unsafe { SeLocateProcessImageName(process, &mut name) };
        if nt_success(status) {
            Self(name)
        } else {
            Self(core::ptr::null_mut())
        }
    }

    pub(super) fn units(&self) -> &[u16] {
        // SAFETY: the string SeLocateProcessImageName allocated.
        match unsafe { self.0.as_ref() } {
            Some(s) => unicode_units(s),
            None => &[],
        }
    }
}

impl Drop for ImageName {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: SeLocateProcessImageName's allocation; the caller frees it.
            unsafe { ExFreePool(self.0.cast()) };
        }
    }
}

/// PreOperation of ACQUIRE_FOR_SECTION_SYNCHRONIZATION: a placeholder about to be mapped
/// (or run) is hydrated whole first, since page faults on it must never wait for a
/// provider.
///
/// # Safety
/// Called by FltMgr with valid callback data.
pub(super) unsafe extern "system" fn pre_acquire_section(
    data: *mut FLT_CALLBACK_DATA,
    objects: *const FLT_RELATED_OBJECTS,
    _completion_context: *mut *mut core::ffi::c_void,
) -> FLT_PREOP_CALLBACK_STATUS {
    // SAFETY: FltMgr passes valid callback data and related objects for the call.
    let (Some(data_ref), Some(objects)) = (unsafe { data.as_mut() }, unsafe { objects.as_ref() })
    else {
        return FLT_PREOP_SUCCESS_NO_CALLBACK;
    };
    let Some(stream) = placeholder::get(objects.Instance, objects.FileObject) else {
        return FLT_PREOP_SUCCESS_NO_CALLBACK;
    };
    // SAFETY: live callback data.
    let pid = unsafe { FltGetRequestorProcessId(data) };
    if providers::is_provider(pid as usize) {
        return FLT_PREOP_SUCCESS_NO_CALLBACK;
    }
    let (placeholder, corrupt, size, full) = hydrate::with_held(|held| {
        stream.with_state(held, |s| {
            (
                s.placeholder,
                s.corrupt,
                s.file_size,
                s.present.contains(Range {
                    start: 0,
                    end: s.file_size,
                }),
            )
        })
    });
    if !placeholder || full {
        return FLT_PREOP_SUCCESS_NO_CALLBACK;
    }
    if corrupt {
        return complete(data_ref, STATUS_CLOUD_FILE_METADATA_CORRUPT);
    }
    let status = fetch_whole(data, &stream, size);
    if nt_success(status) {
        FLT_PREOP_SUCCESS_NO_CALLBACK
    } else {
        complete(data_ref, status)
    }
}

/// PreOperation of CLEANUP (the last handle of a file object closed): reads waiting
/// through it give up, and when no open of the stream is left waiting, PROGRESSIVE
/// background fills stop (cfapi: "until full or the last handle closes").
///
/// # Safety
/// Called by FltMgr with valid callback data.
pub(super) unsafe extern "system" fn pre_cleanup(
    _data: *mut FLT_CALLBACK_DATA,
    objects: *const FLT_RELATED_OBJECTS,
    _completion_context: *mut *mut core::ffi::c_void,
) -> FLT_PREOP_CALLBACK_STATUS {
    // SAFETY: FltMgr passes valid related objects for the duration of the call.
    let Some(objects) = (unsafe { objects.as_ref() }) else {
        return FLT_PREOP_SUCCESS_NO_CALLBACK;
    };
    let Some(stream) = placeholder::get(objects.Instance, objects.FileObject) else {
        return FLT_PREOP_SUCCESS_NO_CALLBACK;
    };
    let last = placeholder::close_open(&stream);
    hydrate::file_closed(&stream, objects.FileObject as usize, last);
    FLT_PREOP_SUCCESS_NO_CALLBACK
}
