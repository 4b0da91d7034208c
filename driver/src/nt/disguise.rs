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
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FLT_CALLBACK_DATA, FLT_RELATED_OBJECTS, FLTFL_CALLBACK_DATA_IRP_OPERATION,
    FLTFL_POST_OPERATION_DRAINING, FltGetRequestorProcessId, FltSetCallbackDataDirty,
};
use windows_sys::Win32::Foundation::{
    HANDLE, NTSTATUS, OBJ_CASE_INSENSITIVE, OBJ_KERNEL_HANDLE, STATUS_BUFFER_OVERFLOW,
    STATUS_UNEXPECTED_IO_ERROR, UNICODE_STRING,
};
use windows_sys::Win32::System::IO::{IO_STATUS_BLOCK, IO_STATUS_BLOCK_0};

use super::layout::FLT_IO_PARAMETER_BLOCK;
use super::providers;
use super::status::nt_success;
use super::sync::SpinLock;
use crate::engine::rewrite::{FILE_ATTRIBUTE_REPARSE_POINT, TAG};
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
pub(super) fn visibility_of(objects: &FLT_RELATED_OBJECTS) -> Option<Visibility> {
    super::stream::HandleRef::get(objects.Instance, objects.FileObject).map(|h| h.visibility)
}

pub(super) fn disguised(objects: *const FLT_RELATED_OBJECTS) -> bool {
    // SAFETY: FltMgr passes valid related objects for the call.
    let Some(objects) = (unsafe { objects.as_ref() }) else {
        return false;
    };
    !objects.FileObject.is_null() && visibility_of(objects) == Some(Visibility::Disguise)
}

pub(super) fn is_irp(data: &FLT_CALLBACK_DATA) -> bool {
    data.Flags & FLTFL_CALLBACK_DATA_IRP_OPERATION != 0
}

/// The callback data of a post-operation worth looking at, with a copy of its parameter
/// block: not draining, and completed with success or STATUS_BUFFER_OVERFLOW (a partial
/// answer, which still shows what it holds).
///
/// # Safety
/// `data` must be the callback data FltMgr passed to the post-operation, and the returned
/// reference used only within it.
pub(super) unsafe fn completed<'a>(
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
pub(super) fn fail_malformed(data: &mut FLT_CALLBACK_DATA, buffer: &mut [u8], returned: usize) {
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

/// Whether the requestor of a query-open (no file object yet, no sync root known) would
/// be disguised: decided without the provider rule beyond "is it any provider".
pub(super) fn requestor_disguised(data: *const FLT_CALLBACK_DATA) -> bool {
    let image = super::names::ImageName::of(data);
    decide(data, image.units(), None) == Visibility::Disguise
}

/// Whether FileAttributeTagInformation's answer is cloudflt's reparse point.
pub(super) fn is_ours(answer: Result<(u32, u32), NTSTATUS>) -> bool {
    answer
        .is_ok_and(|(attributes, tag)| attributes & FILE_ATTRIBUTE_REPARSE_POINT != 0 && tag == TAG)
}
