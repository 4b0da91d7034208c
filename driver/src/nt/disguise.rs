//! Disguise: placeholders look like ordinary files to opens whose visibility (decided at
//! create, see [`decide`], cached in the stream-handle context) is `Disguise`.
//!
//! Post-operations rewrite what the file system returned, in place, with the engine's pure
//! functions (engine::rewrite), bounded by `IoStatus.Information`:
//! DIRECTORY_CONTROL / IRP_MN_QUERY_DIRECTORY, QUERY_INFORMATION (the attribute classes),
//! FSCTL_GET_REPARSE_POINT (answered STATUS_NOT_A_REPARSE_POINT). QUERY_OPEN and
//! NETWORK_QUERY_OPEN are refused for disguised callers so that the I/O manager falls back
//! to a full open, whose create decides and whose query is rewritten.
//!
//! Each pre-operation returns FLT_PREOP_SYNCHRONIZE when it wants its post: the post then
//! runs in the issuing thread at PASSIVE_LEVEL, never at DISPATCH_LEVEL in a completion.
//!
//! # Known gaps
//!
//! - A directory query whose buffer holds less than its first entry's name is answered
//!   STATUS_BUFFER_OVERFLOW with that entry cut short; its attributes are left as they are
//!   (the caller must ask again with a larger buffer to get the entry at all).
//! - FileDirectory and FileIdGlobalTxDirectory entries are checked by opening them by
//!   name: an entry of a directory whose NT path is longer than `syncroot::MAX_PATH` units
//!   is not checked, and keeps its attributes.
//!
//! # Malformed buffers
//!
//! A directory or query buffer the engine cannot validate is never returned as it is to a
//! disguised caller (it might show the reparse point it failed to find): the returned bytes
//! are zeroed and the request fails with STATUS_UNEXPECTED_IO_ERROR. The file system
//! produced it, so this only happens with a file system or filter below us that is broken.

use super::ntos::{
    RtlQueryProcessPlaceholderCompatibilityMode, RtlQueryThreadPlaceholderCompatibilityMode,
    ZwClose, ZwOpenSymbolicLinkObject, ZwQuerySymbolicLinkObject,
};
use windows_sys::Wdk::Storage::FileSystem::FILE_OPEN;
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FLT_CALLBACK_DATA, FLT_POSTOP_CALLBACK_STATUS, FLT_POSTOP_DISALLOW_FSFILTER_IO,
    FLT_POSTOP_FINISHED_PROCESSING, FLT_PREOP_CALLBACK_STATUS, FLT_PREOP_DISALLOW_FASTIO,
    FLT_PREOP_SUCCESS_NO_CALLBACK, FLT_PREOP_SUCCESS_WITH_CALLBACK, FLT_PREOP_SYNCHRONIZE,
    FLT_RELATED_OBJECTS, FLTFL_CALLBACK_DATA_FAST_IO_OPERATION, FLTFL_CALLBACK_DATA_IRP_OPERATION,
    FLTFL_POST_OPERATION_DRAINING, FltGetRequestorProcessId, FltGetStreamHandleContext,
    FltLockUserBuffer, FltReleaseContext, FltSetCallbackDataDirty, PFLT_CONTEXT,
};
use windows_sys::Wdk::System::SystemServices::{
    IRP_MN_QUERY_DIRECTORY, MdlMappingNoExecute, MmCached, MmMapLockedPagesSpecifyCache,
    NormalPagePriority,
};
use windows_sys::Win32::Foundation::{
    HANDLE, NTSTATUS, OBJ_CASE_INSENSITIVE, OBJ_KERNEL_HANDLE, STATUS_BUFFER_OVERFLOW,
    STATUS_INSUFFICIENT_RESOURCES, STATUS_NOT_A_REPARSE_POINT, STATUS_UNEXPECTED_IO_ERROR,
    UNICODE_STRING,
};
use windows_sys::Win32::Storage::FileSystem::FILE_READ_ATTRIBUTES;
use windows_sys::Win32::System::IO::{IO_STATUS_BLOCK, IO_STATUS_BLOCK_0};
use windows_sys::Win32::System::Ioctl::FSCTL_GET_REPARSE_POINT;

use core::ptr::NonNull;

use super::context::StreamHandleContext;
use super::file::{Fo, Kind, OwnedFile};
use super::layout::{FLT_IO_PARAMETER_BLOCK, QueryDirectoryParameters};
use super::ops::NameInfo;
use super::placeholder;
use super::providers;
use super::status::nt_success;
use super::sync::SpinLock;
use crate::engine::rewrite::{
    self, DirectoryClass, FILE_ATTRIBUTE_REPARSE_POINT, HiddenAttributes, QueryClass, TAG,
};
use crate::engine::syncroot;
use crate::engine::visibility::{self, Requestor, Visibility};

/// Longest `\SystemRoot` target kept, in UTF-16 units.
const SYSTEM_ROOT_MAX: usize = 260;

/// `\SystemRoot` in NT device form, resolved through its symbolic link (and, when the
/// target starts with another link such as `\Device\BootDevice`, through that one too).
#[derive(Clone, Copy)]
struct SystemRoot {
    units: [u16; SYSTEM_ROOT_MAX],
    len: usize,
}

impl SystemRoot {
    fn as_slice(&self) -> &[u16] {
        self.units.get(..self.len).unwrap_or(&[])
    }

    fn resolve() -> Self {
        let mut root = Self {
            units: [0; SYSTEM_ROOT_MAX],
            len: 0,
        };
        let name: [u16; 11] = [
            b'\\' as u16,
            b'S' as u16,
            b'y' as u16,
            b's' as u16,
            b't' as u16,
            b'e' as u16,
            b'm' as u16,
            b'R' as u16,
            b'o' as u16,
            b'o' as u16,
            b't' as u16,
        ];
        root.len = read_link(&name, &mut root.units).unwrap_or(0);
        // `\Device\BootDevice\Windows`: the device part may be a link of its own.
        let target = root.as_slice();
        let second = target
            .iter()
            .enumerate()
            .filter(|(_, u)| **u == u16::from(b'\\'))
            .nth(2)
            .map(|(i, _)| i);
        if let Some((device, rest)) = second.and_then(|split| target.split_at_checked(split)) {
            let mut resolved = [0u16; SYSTEM_ROOT_MAX];
            if let Some(n) = read_link(device, &mut resolved)
                && let Some(total) = n.checked_add(rest.len())
                && total <= SYSTEM_ROOT_MAX
            {
                let mut joined = [0u16; SYSTEM_ROOT_MAX];
                for (d, s) in joined
                    .iter_mut()
                    .zip(resolved.iter().take(n).chain(rest.iter()))
                {
                    *d = *s;
                }
                root.units = joined;
                root.len = total;
            }
        }
        root
    }
}

/// `\SystemRoot` as resolved by the first decision of this load (the link cannot change
/// while Windows runs); `None` until then, and again after [`forget_system_root`].
static SYSTEM_ROOT: SpinLock<Option<SystemRoot>> = SpinLock::new(None);

/// The resolved `\SystemRoot`: cached, or resolved now (PASSIVE_LEVEL) and cached when
/// the resolution found it. A failed resolution is retried by the next decision.
fn system_root() -> SystemRoot {
    if let Some(root) = SYSTEM_ROOT.with(|cached| *cached) {
        return root;
    }
    let root = SystemRoot::resolve();
    if root.len != 0 {
        SYSTEM_ROOT.with(|cached| *cached = Some(root));
    }
    root
}

/// Drops the cached `\SystemRoot`: DriverEntry calls it, so that each load resolves it again.
pub(super) fn forget_system_root() {
    SYSTEM_ROOT.with(|cached| *cached = None);
}

/// The target of symbolic link `name`, into `out`; its length in units.
fn read_link(name: &[u16], out: &mut [u16; SYSTEM_ROOT_MAX]) -> Option<usize> {
    let bytes = u16::try_from(name.len().checked_mul(2)?).ok()?;
    let name = UNICODE_STRING {
        Length: bytes,
        MaximumLength: bytes,
        Buffer: name.as_ptr().cast_mut(),
    };
    let attributes = windows_sys::Wdk::Foundation::OBJECT_ATTRIBUTES {
        Length: core::mem::size_of::<windows_sys::Wdk::Foundation::OBJECT_ATTRIBUTES>() as u32,
        RootDirectory: core::ptr::null_mut(),
        ObjectName: &name,
        Attributes: OBJ_CASE_INSENSITIVE | OBJ_KERNEL_HANDLE,
        SecurityDescriptor: core::ptr::null(),
        SecurityQualityOfService: core::ptr::null(),
    };
    let mut handle: HANDLE = core::ptr::null_mut();
    // GENERIC_READ.
    // SAFETY: PASSIVE_LEVEL; valid attributes and out pointer.
    let status = unsafe { ZwOpenSymbolicLinkObject(&mut handle, 0x8000_0000, &attributes) };
    if !nt_success(status) {
        return None;
    }
    let mut target = UNICODE_STRING {
        Length: 0,
        MaximumLength: (SYSTEM_ROOT_MAX * 2) as u16,
        Buffer: out.as_mut_ptr(),
    };
    let mut returned = 0u32;
    // SAFETY: the handle just opened; `target` describes `out`.
    let status = unsafe { ZwQuerySymbolicLinkObject(handle, &mut target, &mut returned) };
    // SAFETY: the handle just opened, closed once.
    unsafe { ZwClose(handle) };
    if !nt_success(status) {
        return None;
    }
    Some(usize::from(target.Length) / 2)
}

/// The visibility for the requestor of `data`, asked in its context (a pre-operation or a
/// synchronous post-create). `provider` is the pid of the connected provider of the
/// file's sync root, if known.
pub(super) fn decide(
    data: *const FLT_CALLBACK_DATA,
    image: &[u16],
    provider: Option<usize>,
) -> Visibility {
    // SAFETY: live callback data.
    let pid = unsafe { FltGetRequestorProcessId(data) };
    if provider.is_some_and(|p| p == pid as usize) || providers::is_provider(pid as usize) {
        return Visibility::Expose;
    }
    // SAFETY: no preconditions; the calling thread's process (the requestor's, as the
    // callers run in its context).
    let process_mode = unsafe { RtlQueryProcessPlaceholderCompatibilityMode() };
    // SAFETY: as above, the calling thread.
    let thread_mode = unsafe { RtlQueryThreadPlaceholderCompatibilityMode() };
    let who = Requestor {
        pid,
        image: (!image.is_empty()).then_some(image),
        process_mode,
        thread_mode,
    };
    let root = system_root();
    super::rules::with_rules(|rules| visibility::decide(&who, None, root.as_slice(), rules))
}

/// The visibility recorded for an open; `None` when it has no stream-handle context
/// (neither placeholder nor directory, or opened before the driver loaded).
fn visibility_of(objects: &FLT_RELATED_OBJECTS) -> Option<Visibility> {
    let mut context: PFLT_CONTEXT = core::ptr::null_mut();
    // SAFETY: a live file object; a valid out pointer.
    let status =
        unsafe { FltGetStreamHandleContext(objects.Instance, objects.FileObject, &mut context) };
    if !nt_success(status) || context.is_null() {
        return None;
    }
    // SAFETY: our stream-handle context, referenced by the get.
    let v = unsafe { (*context.cast::<StreamHandleContext>()).visibility };
    // SAFETY: the reference the get took, dropped once.
    unsafe { FltReleaseContext(context) };
    Some(v)
}

fn disguised(objects: *const FLT_RELATED_OBJECTS) -> bool {
    // SAFETY: FltMgr passes valid related objects for the call.
    let Some(objects) = (unsafe { objects.as_ref() }) else {
        return false;
    };
    !objects.FileObject.is_null() && visibility_of(objects) == Some(Visibility::Disguise)
}

fn is_irp(data: &FLT_CALLBACK_DATA) -> bool {
    data.Flags & FLTFL_CALLBACK_DATA_IRP_OPERATION != 0
}

/// The callback data of a post-operation worth looking at, with a copy of its parameter
/// block: not draining, and completed with success or STATUS_BUFFER_OVERFLOW (a partial
/// answer, which still shows what it holds).
///
/// # Safety
/// `data` must be the callback data FltMgr passed to the post-operation, and the returned
/// reference used only within it.
unsafe fn completed<'a>(
    data: *mut FLT_CALLBACK_DATA,
    flags: u32,
) -> Option<(&'a mut FLT_CALLBACK_DATA, FLT_IO_PARAMETER_BLOCK)> {
    if flags & FLTFL_POST_OPERATION_DRAINING != 0 {
        return None;
    }
    // SAFETY: the caller's contract: live callback data, referenced only in the callback.
    let d = unsafe { data.as_mut() }?;
    // SAFETY: the completed operation's status.
    let status = unsafe { d.IoStatus.Anonymous.Status };
    if !nt_success(status) && status != STATUS_BUFFER_OVERFLOW {
        return None;
    }
    // SAFETY: its parameter block, valid during the callback, laid out as fltKernel.h
    // declares it (nt::layout).
    let iopb = *unsafe { d.Iopb.cast::<FLT_IO_PARAMETER_BLOCK>().as_ref() }?;
    Some((d, iopb))
}

/// Fails the completed operation after zeroing what the file system returned.
fn fail_malformed(data: &mut FLT_CALLBACK_DATA, buffer: &mut [u8], returned: usize) {
    let end = returned.min(buffer.len());
    if let Some(b) = buffer.get_mut(..end) {
        b.fill(0);
    }
    debug_print!("cloudflt: malformed buffer from below; request failed");
    data.IoStatus = IO_STATUS_BLOCK {
        Anonymous: IO_STATUS_BLOCK_0 {
            Status: STATUS_UNEXPECTED_IO_ERROR,
        },
        Information: 0,
    };
    // SAFETY: live callback data in its post-operation.
    unsafe { FltSetCallbackDataDirty(data) };
}

/// PreOperation of DIRECTORY_CONTROL: a query of a directory opened by a disguised caller
/// gets its post, synchronised (PASSIVE_LEVEL, issuing thread), with the buffer locked.
///
/// # Safety
/// Called by FltMgr with valid callback data.
pub(super) unsafe extern "system" fn pre_directory_control(
    data: *mut FLT_CALLBACK_DATA,
    objects: *const FLT_RELATED_OBJECTS,
    _completion_context: *mut *mut core::ffi::c_void,
) -> FLT_PREOP_CALLBACK_STATUS {
    // SAFETY: FltMgr passes valid callback data for the call.
    let Some(d) = (unsafe { data.as_ref() }) else {
        return FLT_PREOP_SUCCESS_NO_CALLBACK;
    };
    // SAFETY: its parameter block, valid during the callback, laid out as fltKernel.h
    // declares it (nt::layout).
    let Some(iopb) = (unsafe { d.Iopb.cast::<FLT_IO_PARAMETER_BLOCK>().as_ref() }) else {
        return FLT_PREOP_SUCCESS_NO_CALLBACK;
    };
    if !is_irp(d) || u32::from(iopb.MinorFunction) != IRP_MN_QUERY_DIRECTORY {
        return FLT_PREOP_SUCCESS_NO_CALLBACK;
    }
    if !disguised(objects) {
        return FLT_PREOP_SUCCESS_NO_CALLBACK;
    }
    // SAFETY: an IRP operation at PASSIVE_LEVEL.
    let status = unsafe { FltLockUserBuffer(data) };
    if !nt_success(status) {
        return FLT_PREOP_SUCCESS_NO_CALLBACK;
    }
    FLT_PREOP_SYNCHRONIZE
}

/// PostOperation of DIRECTORY_CONTROL (synchronised): disguises the listing.
///
/// # Safety
/// Called by FltMgr with valid callback data.
pub(super) unsafe extern "system" fn post_directory_control(
    data: *mut FLT_CALLBACK_DATA,
    objects: *const FLT_RELATED_OBJECTS,
    _completion_context: *const core::ffi::c_void,
    flags: u32,
) -> FLT_POSTOP_CALLBACK_STATUS {
    // SAFETY: FltMgr's callback data of this post-operation.
    let Some((d, iopb)) = (unsafe { completed(data, flags) }) else {
        return FLT_POSTOP_FINISHED_PROCESSING;
    };
    // SAFETY: the completed operation's status.
    if unsafe { d.IoStatus.Anonymous.Status } == STATUS_BUFFER_OVERFLOW {
        // A first entry cut short: see the module comment (known gap).
        return FLT_POSTOP_FINISHED_PROCESSING;
    }
    // SAFETY: DIRECTORY_CONTROL: the union holds the directory-control parameters.
    let control = unsafe { iopb.Parameters.DirectoryControl };
    // SAFETY: IRP_MN_QUERY_DIRECTORY (the only minor the pre-op synchronises).
    let q = unsafe { control.QueryDirectory };
    let Some(class) = u32::try_from(q.FileInformationClass)
        .ok()
        .and_then(DirectoryClass::from_raw)
    else {
        return FLT_POSTOP_FINISHED_PROCESSING;
    };
    if q.Length == 0 {
        return FLT_POSTOP_FINISHED_PROCESSING;
    }
    let Some(buffer) = listing_buffer(d.RequestorMode, &q) else {
        // The listing cannot be reached safely, so it must not reach the caller either.
        d.IoStatus = IO_STATUS_BLOCK {
            Anonymous: IO_STATUS_BLOCK_0 {
                Status: STATUS_INSUFFICIENT_RESOURCES,
            },
            Information: 0,
        };
        // SAFETY: live callback data in its post-operation.
        unsafe { FltSetCallbackDataDirty(d) };
        return FLT_POSTOP_FINISHED_PROCESSING;
    };
    let returned = d.IoStatus.Information;
    // FileDirectory and FileIdGlobalTxDirectory carry no tag: each entry with
    // FILE_ATTRIBUTE_REPARSE_POINT is looked up by name, with the directory's name fetched
    // on the first such entry.
    let mut directory: Option<Result<NameInfo, NTSTATUS>> = None;
    let result = rewrite::disguise_directory_with(
        class,
        buffer,
        returned,
        HiddenAttributes::DEFAULT,
        |name| {
            let directory = directory.get_or_insert_with(|| NameInfo::normalized(data));
            directory
                .as_ref()
                .is_ok_and(|dir| child_is_ours(objects, dir.units(), name))
        },
    );
    if result.is_err() {
        fail_malformed(d, buffer, returned);
    }
    FLT_POSTOP_FINISHED_PROCESSING
}

/// MDL_MAPPED_TO_SYSTEM_VA (wdm.h).
const MDL_MAPPED_TO_SYSTEM_VA: i16 = 0x0001;
/// MDL_SOURCE_IS_NONPAGED_POOL (wdm.h).
const MDL_SOURCE_IS_NONPAGED_POOL: i16 = 0x0004;
/// KernelMode.
const KERNEL_MODE: i8 = 0;

/// The listing's buffer, through a system address: the MDL the pre-operation's
/// FltLockUserBuffer made, mapped as MmGetSystemAddressForMdlSafe does. The caller's
/// user-mode address is never touched: another thread of its process could free those
/// pages at any moment, and Rust has no exception guard for the fault. A kernel-mode
/// caller's buffer without an MDL is a system address already. `None` when neither exists
/// or the mapping fails.
fn listing_buffer(requestor_mode: i8, q: &QueryDirectoryParameters) -> Option<&'static mut [u8]> {
    let length = q.Length as usize;
    let address = match NonNull::new(q.MdlAddress) {
        Some(mdl) => {
            // SAFETY: the MDL FltLockUserBuffer built, alive until the operation completes.
            let (flags, mapped, count) = unsafe {
                let m = mdl.as_ref();
                (m.MdlFlags, m.MappedSystemVa, m.ByteCount)
            };
            if (count as usize) < length {
                return None;
            }
            if flags & (MDL_MAPPED_TO_SYSTEM_VA | MDL_SOURCE_IS_NONPAGED_POOL) != 0 {
                mapped
            } else {
                // SAFETY: a locked MDL (FltLockUserBuffer); a kernel-mode mapping owned by
                // the MDL, released by the I/O manager when it frees it; IRQL <= APC_LEVEL.
                unsafe {
                    MmMapLockedPagesSpecifyCache(
                        mdl.as_ptr(),
                        KERNEL_MODE,
                        MmCached,
                        core::ptr::null(),
                        0,
                        NormalPagePriority as u32 | MdlMappingNoExecute,
                    )
                }
            }
        }
        None if requestor_mode == KERNEL_MODE => q.DirectoryBuffer,
        None => return None,
    };
    if address.is_null() {
        return None;
    }
    // SAFETY: `length` bytes at a system address (checked against the MDL's byte count),
    // valid until the operation completes, which is after this synchronised post-operation.
    Some(unsafe { core::slice::from_raw_parts_mut(address.cast::<u8>(), length) })
}

/// Longest entry name NTFS allows, in UTF-16 units.
const MAX_COMPONENT: usize = 255;

/// Whether the entry `name` of directory `directory` (normalized, device form) carries
/// cloudflt's tag: the driver opens it as the reparse point itself and asks its tag.
///
/// An entry that cannot be opened (deleted or renamed since the listing, or a name longer
/// than NTFS allows) is not taken for a placeholder: other files are never touched, and
/// one that has gone is nobody's to see.
fn child_is_ours(
    objects: *const FLT_RELATED_OBJECTS,
    directory: &[u16],
    name: rewrite::Name<'_>,
) -> bool {
    // SAFETY: FltMgr passes valid related objects for the call.
    let Some(objects) = (unsafe { objects.as_ref() }) else {
        return false;
    };
    const DOT: u16 = b'.' as u16;
    let mut units = name.units();
    let (first, second, third) = (units.next(), units.next(), units.next());
    let (directory, name) = match (first, second, third) {
        // `.`: the directory being listed, already open.
        (Some(DOT), None, _) => {
            let listed = Fo {
                instance: objects.Instance,
                file_object: objects.FileObject,
            };
            return is_ours(listed.attribute_tag());
        }
        // `..`: its parent, by the directory's name without its last component.
        (Some(DOT), Some(DOT), None) => {
            let trimmed = directory
                .strip_suffix(&[u16::from(b'\\')])
                .unwrap_or(directory);
            let Some(cut) = trimmed.iter().rposition(|u| *u == u16::from(b'\\')) else {
                return false;
            };
            // `\Device\HarddiskVolumeN` alone names the volume, not its root directory:
            // the root keeps its separator.
            let separators = trimmed.iter().filter(|u| **u == u16::from(b'\\')).count();
            let end = if separators <= 3 { cut + 1 } else { cut };
            (trimmed.get(..end).unwrap_or(&[]), None)
        }
        _ => (directory, Some(name)),
    };
    let mut path = [0u16; syncroot::MAX_PATH + 1 + MAX_COMPONENT];
    let separator: &[u16] = if directory.last() == Some(&u16::from(b'\\')) {
        &[]
    } else {
        &[b'\\' as u16]
    };
    let (separator, name_units, name_len) = match name {
        Some(name) => (separator, Some(name.units()), name.len()),
        None => (&[][..], None, 0),
    };
    let mut len = 0;
    for (d, s) in path.iter_mut().zip(
        directory
            .iter()
            .copied()
            .chain(separator.iter().copied())
            .chain(name_units.into_iter().flatten()),
    ) {
        *d = s;
        len += 1;
    }
    let wanted = directory.len() + separator.len() + name_len;
    let Some(path) = path.get(..len).filter(|_| len == wanted) else {
        return false;
    };
    let Ok(child) = OwnedFile::open(
        objects.Filter,
        objects.Instance,
        path,
        FILE_READ_ATTRIBUTES,
        FILE_OPEN,
        Kind::Any,
        0,
    ) else {
        return false;
    };
    is_ours(child.attribute_tag())
}

/// Whether FileAttributeTagInformation's answer is cloudflt's reparse point.
fn is_ours(answer: Result<(u32, u32), NTSTATUS>) -> bool {
    answer
        .is_ok_and(|(attributes, tag)| attributes & FILE_ATTRIBUTE_REPARSE_POINT != 0 && tag == TAG)
}

/// PreOperation of QUERY_INFORMATION: a disguised open's attribute query gets its post.
///
/// # Safety
/// Called by FltMgr with valid callback data.
pub(super) unsafe extern "system" fn pre_query_information(
    data: *mut FLT_CALLBACK_DATA,
    objects: *const FLT_RELATED_OBJECTS,
    _completion_context: *mut *mut core::ffi::c_void,
) -> FLT_PREOP_CALLBACK_STATUS {
    // SAFETY: FltMgr passes valid callback data for the call.
    let Some(d) = (unsafe { data.as_ref() }) else {
        return FLT_PREOP_SUCCESS_NO_CALLBACK;
    };
    // SAFETY: its parameter block, valid during the callback, laid out as fltKernel.h
    // declares it (nt::layout).
    let Some(iopb) = (unsafe { d.Iopb.cast::<FLT_IO_PARAMETER_BLOCK>().as_ref() }) else {
        return FLT_PREOP_SUCCESS_NO_CALLBACK;
    };
    // SAFETY: QUERY_INFORMATION: the union holds its parameters.
    let q = unsafe { iopb.Parameters.QueryFileInformation };
    let wanted = u32::try_from(q.FileInformationClass)
        .ok()
        .and_then(QueryClass::from_raw)
        .is_some();
    if !is_irp(d) || !wanted || !disguised(objects) {
        return FLT_PREOP_SUCCESS_NO_CALLBACK;
    }
    FLT_PREOP_SYNCHRONIZE
}

/// PostOperation of QUERY_INFORMATION (synchronised): disguises the attributes.
///
/// # Safety
/// Called by FltMgr with valid callback data.
pub(super) unsafe extern "system" fn post_query_information(
    data: *mut FLT_CALLBACK_DATA,
    objects: *const FLT_RELATED_OBJECTS,
    _completion_context: *const core::ffi::c_void,
    flags: u32,
) -> FLT_POSTOP_CALLBACK_STATUS {
    // SAFETY: FltMgr's callback data of this post-operation.
    let Some((d, iopb)) = (unsafe { completed(data, flags) }) else {
        return FLT_POSTOP_FINISHED_PROCESSING;
    };
    // SAFETY: FltMgr passes valid related objects for the call.
    let Some(objects) = (unsafe { objects.as_ref() }) else {
        return FLT_POSTOP_FINISHED_PROCESSING;
    };
    // SAFETY: QUERY_INFORMATION: the union holds its parameters.
    let q = unsafe { iopb.Parameters.QueryFileInformation };
    let Some(class) = u32::try_from(q.FileInformationClass)
        .ok()
        .and_then(QueryClass::from_raw)
    else {
        return FLT_POSTOP_FINISHED_PROCESSING;
    };
    if q.InfoBuffer.is_null() || q.Length == 0 {
        return FLT_POSTOP_FINISHED_PROCESSING;
    }
    // SAFETY: the system buffer of Length bytes the I/O manager gave the file system.
    let buffer =
        unsafe { core::slice::from_raw_parts_mut(q.InfoBuffer.cast::<u8>(), q.Length as usize) };
    let returned = d.IoStatus.Information;
    // A file placeholder has its stream context; a directory placeholder has none, so
    // its tag is asked (the file may also have been reverted since it was opened).
    let is_placeholder = placeholder::get(objects.Instance, objects.FileObject).is_some()
        || (!class.has_tag()
            && is_ours(
                Fo {
                    instance: objects.Instance,
                    file_object: objects.FileObject,
                }
                .attribute_tag(),
            ));
    if rewrite::disguise_query(
        class,
        buffer,
        returned,
        is_placeholder,
        HiddenAttributes::DEFAULT,
    )
    .is_err()
    {
        fail_malformed(d, buffer, returned);
    }
    FLT_POSTOP_FINISHED_PROCESSING
}

/// Whether a FILE_SYSTEM_CONTROL is FSCTL_GET_REPARSE_POINT by a disguised open: then
/// `pre_fs_control` synchronises it for [`post_fs_control`].
pub(super) fn wants_get_reparse_post(code: u32, objects: *const FLT_RELATED_OBJECTS) -> bool {
    code == FSCTL_GET_REPARSE_POINT && disguised(objects)
}

/// PostOperation of FILE_SYSTEM_CONTROL (only FSCTL_GET_REPARSE_POINT of disguised opens,
/// synchronised): cloudflt's reparse point is scrubbed and answered
/// STATUS_NOT_A_REPARSE_POINT; other tags pass as they are.
///
/// # Safety
/// Called by FltMgr with valid callback data.
pub(super) unsafe extern "system" fn post_fs_control(
    data: *mut FLT_CALLBACK_DATA,
    _objects: *const FLT_RELATED_OBJECTS,
    _completion_context: *const core::ffi::c_void,
    flags: u32,
) -> FLT_POSTOP_CALLBACK_STATUS {
    // SAFETY: FltMgr's callback data of this post-operation.
    let Some((d, iopb)) = (unsafe { completed(data, flags) }) else {
        return FLT_POSTOP_FINISHED_PROCESSING;
    };
    // SAFETY: FILE_SYSTEM_CONTROL: the union holds the FSCTL parameters.
    let control = unsafe { iopb.Parameters.FileSystemControl };
    // SAFETY: the Common member overlays the first fields of every method.
    let common = unsafe { control.Common };
    if common.FsControlCode != FSCTL_GET_REPARSE_POINT {
        return FLT_POSTOP_FINISHED_PROCESSING;
    }
    // SAFETY: METHOD_BUFFERED: the Buffered member describes the system buffer.
    let buffered = unsafe { control.Buffered };
    if buffered.SystemBuffer.is_null() || buffered.OutputBufferLength == 0 {
        return FLT_POSTOP_FINISHED_PROCESSING;
    }
    // SAFETY: the system buffer holds OutputBufferLength bytes of output.
    let output = unsafe {
        core::slice::from_raw_parts_mut(
            buffered.SystemBuffer.cast::<u8>(),
            buffered.OutputBufferLength as usize,
        )
    };
    if rewrite::scrub_reparse_point(output, d.IoStatus.Information) {
        d.IoStatus = IO_STATUS_BLOCK {
            Anonymous: IO_STATUS_BLOCK_0 {
                Status: STATUS_NOT_A_REPARSE_POINT,
            },
            Information: 0,
        };
        // SAFETY: live callback data in its post-operation.
        unsafe { FltSetCallbackDataDirty(d) };
    }
    FLT_POSTOP_FINISHED_PROCESSING
}

/// Whether the requestor of a query-open (no file object yet, no sync root known) would
/// be disguised: decided without the provider rule beyond "is it any provider".
fn requestor_disguised(data: *const FLT_CALLBACK_DATA) -> bool {
    let image = super::ops::ImageName::of(data);
    decide(data, image.units(), None) == Visibility::Disguise
}

/// PreOperation of QUERY_OPEN: every query-open gets its post, which looks at what the
/// file system answered. Deciding here would cost every GetFileAttributesEx on the volume
/// an image-name lookup; the post needs one only for files that show a reparse point.
///
/// # Safety
/// Called by FltMgr with valid callback data.
pub(super) unsafe extern "system" fn pre_query_open(
    _data: *mut FLT_CALLBACK_DATA,
    _objects: *const FLT_RELATED_OBJECTS,
    _completion_context: *mut *mut core::ffi::c_void,
) -> FLT_PREOP_CALLBACK_STATUS {
    FLT_PREOP_SUCCESS_WITH_CALLBACK
}

/// PostOperation of QUERY_OPEN (in the issuing thread, at PASSIVE_LEVEL): an answer that
/// shows a reparse point, for a disguised caller, is refused with
/// FLT_POSTOP_DISALLOW_FSFILTER_IO, so that the I/O manager opens, queries (rewritten by
/// [`post_query_information`], which knows whether the reparse point is cloudflt's) and
/// closes. Answers without one, classes without attributes and exposed callers pass.
///
/// # Safety
/// Called by FltMgr with valid callback data.
pub(super) unsafe extern "system" fn post_query_open(
    data: *mut FLT_CALLBACK_DATA,
    _objects: *const FLT_RELATED_OBJECTS,
    _completion_context: *const core::ffi::c_void,
    flags: u32,
) -> FLT_POSTOP_CALLBACK_STATUS {
    // SAFETY: FltMgr's callback data of this post-operation.
    let Some((_, iopb)) = (unsafe { completed(data, flags) }) else {
        return FLT_POSTOP_FINISHED_PROCESSING;
    };
    // SAFETY: IRP_MJ_QUERY_OPEN: the union holds its parameters.
    let q = unsafe { iopb.Parameters.QueryOpen };
    let Some(class) = u32::try_from(q.FileInformationClass)
        .ok()
        .and_then(QueryClass::from_raw)
    else {
        return FLT_POSTOP_FINISHED_PROCESSING;
    };
    // SAFETY: Length points at the returned length the file system set (NULL-checked).
    let Some(length) = (unsafe { q.Length.as_ref() }).map(|l| *l as usize) else {
        return FLT_POSTOP_FINISHED_PROCESSING;
    };
    let shows_reparse_point = if q.FileInformation.is_null() || length == 0 {
        true
    } else {
        // SAFETY: the I/O manager's system buffer, holding `length` returned bytes.
        let answer = unsafe { core::slice::from_raw_parts(q.FileInformation.cast::<u8>(), length) };
        rewrite::may_show_reparse_point(class, answer, length)
    };
    if shows_reparse_point && requestor_disguised(data) {
        FLT_POSTOP_DISALLOW_FSFILTER_IO
    } else {
        FLT_POSTOP_FINISHED_PROCESSING
    }
}

/// PreOperation of NETWORK_QUERY_OPEN: the fast-I/O form is refused for disguised callers
/// (the IRP form follows as a full open and query).
///
/// # Safety
/// Called by FltMgr with valid callback data.
pub(super) unsafe extern "system" fn pre_network_query_open(
    data: *mut FLT_CALLBACK_DATA,
    _objects: *const FLT_RELATED_OBJECTS,
    _completion_context: *mut *mut core::ffi::c_void,
) -> FLT_PREOP_CALLBACK_STATUS {
    // SAFETY: FltMgr passes valid callback data for the call.
    let Some(d) = (unsafe { data.as_ref() }) else {
        return FLT_PREOP_SUCCESS_NO_CALLBACK;
    };
    if d.Flags & FLTFL_CALLBACK_DATA_FAST_IO_OPERATION != 0 && requestor_disguised(data) {
        FLT_PREOP_DISALLOW_FASTIO
    } else {
        FLT_PREOP_SUCCESS_NO_CALLBACK
    }
}
