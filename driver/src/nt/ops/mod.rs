//! The I/O callbacks, one module per operation, and the one table FltMgr registers:
//! [`OPERATIONS`], built from the rows of [`TABLE`] (major, pre, post).
//!
//! Each callback is thin: it reads the parameters out of FLT_CALLBACK_DATA (through
//! `nt::layout`), asks the engine or the module that owns the state (stream, hydrate,
//! disguise), and turns the answer into a status or a pend. No callback waits for a
//! provider in a system thread.

use crate::engine::policy::{self, Policy};
use crate::engine::ranges::Range;
use crate::engine::rewrite::{self, DirectoryClass, HiddenAttributes, QueryClass};
use crate::engine::{syncroot, tagguard};
use crate::nt::context::InstanceRef;
use crate::nt::disguise::*;
use crate::nt::file::{Fo, Kind, OwnedFile};
use crate::nt::layout::FLT_IO_PARAMETER_BLOCK;
use crate::nt::names::{CommandLine, ImageName, NameInfo};
use crate::nt::pool::{PoolBox, TAG_OPEN_REPARSE};
use crate::nt::status::nt_success;
use crate::nt::stream::{self, StreamRef};
use crate::nt::{direct, disguise, hydrate, providers, roots};
use cloudflt_proto::connect::ConnectFlags;
use core::ptr::NonNull;
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FLT_CALLBACK_DATA, FLT_POSTOP_CALLBACK_STATUS, FLT_POSTOP_DISALLOW_FSFILTER_IO,
    FLT_POSTOP_FINISHED_PROCESSING, FLT_PREOP_CALLBACK_STATUS, FLT_PREOP_COMPLETE,
    FLT_PREOP_DISALLOW_FASTIO, FLT_PREOP_PENDING, FLT_PREOP_SUCCESS_NO_CALLBACK,
    FLT_PREOP_SUCCESS_WITH_CALLBACK, FLT_PREOP_SYNCHRONIZE, FLT_RELATED_OBJECTS,
    FLTFL_CALLBACK_DATA_FAST_IO_OPERATION, FLTFL_CALLBACK_DATA_IRP_OPERATION,
    FLTFL_POST_OPERATION_DRAINING, FltAddOpenReparseEntry, FltGetRequestorProcessId,
    FltIsDirectory, FltLockUserBuffer, FltRemoveOpenReparseEntry, FltSetCallbackDataDirty,
};
use windows_sys::Wdk::Storage::FileSystem::{FILE_OPEN, OPEN_REPARSE_LIST_ENTRY};
use windows_sys::Wdk::System::SystemServices::{
    IRP_MN_QUERY_DIRECTORY, IRP_NOCACHE, IRP_PAGING_IO,
};
use windows_sys::Win32::Foundation::{
    NTSTATUS, STATUS_ACCESS_DENIED, STATUS_BUFFER_OVERFLOW,
    STATUS_CLOUD_FILE_INSUFFICIENT_RESOURCES, STATUS_CLOUD_FILE_METADATA_CORRUPT,
    STATUS_CLOUD_FILE_UNSUCCESSFUL, STATUS_INSUFFICIENT_RESOURCES, STATUS_NOT_A_REPARSE_POINT,
    STATUS_REPARSE,
};
use windows_sys::Win32::Storage::FileSystem::FILE_READ_ATTRIBUTES;
use windows_sys::Win32::System::IO::{IO_STATUS_BLOCK, IO_STATUS_BLOCK_0};
use windows_sys::Win32::System::Ioctl::FSCTL_GET_REPARSE_POINT;
use windows_sys::Win32::System::Kernel::LIST_ENTRY;

pub(super) mod cleanup;
pub(super) mod create;
pub(super) mod dir_control;
pub(super) mod fs_control;
pub(super) mod namespace;
pub(super) mod query;
pub(super) mod read;
pub(super) mod section;
pub(super) mod set_info;
pub(super) mod write;

fn complete(data: &mut FLT_CALLBACK_DATA, status: NTSTATUS) -> FLT_PREOP_CALLBACK_STATUS {
    complete_with(data, status, 0)
}

/// Completes the operation in its pre-operation with `status` and `information`.
fn complete_with(
    data: &mut FLT_CALLBACK_DATA,
    status: NTSTATUS,
    information: usize,
) -> FLT_PREOP_CALLBACK_STATUS {
    data.IoStatus = IO_STATUS_BLOCK {
        Anonymous: IO_STATUS_BLOCK_0 { Status: status },
        Information: information,
    };
    FLT_PREOP_COMPLETE
}

/// The operation, its objects and its placeholder's stream, for an operation on a
/// placeholder by anyone but a provider (whose own I/O is never intercepted); `None`
/// when it is to pass untouched.
///
/// # Safety
/// `data` and `objects` are what FltMgr passed the pre-operation, valid for the call.
unsafe fn placeholder_io<'a>(
    data: *mut FLT_CALLBACK_DATA,
    objects: *const FLT_RELATED_OBJECTS,
) -> Option<(
    &'a mut FLT_CALLBACK_DATA,
    &'a FLT_RELATED_OBJECTS,
    StreamRef,
)> {
    // SAFETY: the caller's contract.
    let data_ref = unsafe { data.as_mut() }?;
    // SAFETY: as above.
    let objects = unsafe { objects.as_ref() }?;
    let stream = stream::get(objects.Instance, objects.FileObject)?;
    // SAFETY: live callback data.
    let pid = unsafe { FltGetRequestorProcessId(data) };
    if providers::is_provider(pid as usize) && opened_by_provider(objects) {
        return None;
    }
    Some((data_ref, objects, stream))
}

/// Whether the open the operation goes through was made by the provider of the root its
/// file lies in (its handle context says so; an open the driver has no context for, made
/// before it loaded, keeps the rule it had: a provider's I/O passes).
fn opened_by_provider(objects: &FLT_RELATED_OBJECTS) -> bool {
    stream::HandleRef::get(objects.Instance, objects.FileObject).is_none_or(|h| h.by_provider)
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
