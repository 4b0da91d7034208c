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
use crate::nt::context::InstanceContext;
use crate::nt::disguise::*;
use crate::nt::file::{Fo, Kind, OwnedFile};
use crate::nt::layout::{FLT_IO_PARAMETER_BLOCK, QueryDirectoryParameters};
use crate::nt::names::{ImageName, NameInfo};
use crate::nt::pool::{PoolBox, TAG_OPEN_REPARSE};
use crate::nt::status::nt_success;
use crate::nt::stream::{self, StreamRef};
use crate::nt::{disguise, hydrate, providers};
use core::ptr::NonNull;
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FLT_CALLBACK_DATA, FLT_POSTOP_CALLBACK_STATUS, FLT_POSTOP_DISALLOW_FSFILTER_IO,
    FLT_POSTOP_FINISHED_PROCESSING, FLT_PREOP_CALLBACK_STATUS, FLT_PREOP_COMPLETE,
    FLT_PREOP_DISALLOW_FASTIO, FLT_PREOP_PENDING, FLT_PREOP_SUCCESS_NO_CALLBACK,
    FLT_PREOP_SUCCESS_WITH_CALLBACK, FLT_PREOP_SYNCHRONIZE, FLT_RELATED_OBJECTS,
    FLTFL_CALLBACK_DATA_FAST_IO_OPERATION, FLTFL_CALLBACK_DATA_IRP_OPERATION,
    FLTFL_POST_OPERATION_DRAINING, FltAddOpenReparseEntry, FltGetInstanceContext,
    FltGetRequestorProcessId, FltIsDirectory, FltLockUserBuffer, FltRemoveOpenReparseEntry,
    FltSetCallbackDataDirty, PFLT_CONTEXT,
};
use windows_sys::Wdk::Storage::FileSystem::{FILE_OPEN, OPEN_REPARSE_LIST_ENTRY};
use windows_sys::Wdk::System::SystemServices::{
    IRP_MN_QUERY_DIRECTORY, IRP_PAGING_IO, MdlMappingNoExecute, MmCached,
    MmMapLockedPagesSpecifyCache, NormalPagePriority,
};
use windows_sys::Win32::Foundation::{
    NTSTATUS, STATUS_ACCESS_DENIED, STATUS_BUFFER_OVERFLOW,
    STATUS_CLOUD_FILE_INSUFFICIENT_RESOURCES, STATUS_CLOUD_FILE_METADATA_CORRUPT,
    STATUS_CLOUD_FILE_PROVIDER_NOT_RUNNING, STATUS_CLOUD_FILE_UNSUCCESSFUL,
    STATUS_INSUFFICIENT_RESOURCES, STATUS_NOT_A_REPARSE_POINT, STATUS_REPARSE,
};
use windows_sys::Win32::Storage::FileSystem::FILE_READ_ATTRIBUTES;
use windows_sys::Win32::System::IO::{IO_STATUS_BLOCK, IO_STATUS_BLOCK_0};
use windows_sys::Win32::System::Ioctl::FSCTL_GET_REPARSE_POINT;
use windows_sys::Win32::System::Kernel::LIST_ENTRY;

pub(super) mod cleanup;
pub(super) mod create;
pub(super) mod dir_control;
pub(super) mod fs_control;
pub(super) mod query;
pub(super) mod read;
pub(super) mod section;

fn complete(data: &mut FLT_CALLBACK_DATA, status: NTSTATUS) -> FLT_PREOP_CALLBACK_STATUS {
    data.IoStatus = IO_STATUS_BLOCK {
        Anonymous: IO_STATUS_BLOCK_0 { Status: status },
        Information: 0,
    };
    FLT_PREOP_COMPLETE
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
