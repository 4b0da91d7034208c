//! Volume attachment: InstanceSetup, InstanceQueryTeardown and InstanceTeardownStart.
//!
//! The rules are the engine's ([`crate::engine::volume`]); this module gathers the facts
//! FltMgr does not pass (file-system attributes, sector size) and records them in the
//! instance context.

use core::mem::MaybeUninit;

use windows_sys::Wdk::Foundation::NonPagedPoolNx;
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FLT_INSTANCE_CONTEXT, FLT_RELATED_OBJECTS, FLT_SET_CONTEXT_KEEP_IF_EXISTS,
    FLT_VOLUME_PROPERTIES, FltAllocateContext, FltGetVolumeProperties, FltQueryVolumeInformation,
    FltReleaseContext, FltSetInstanceContext, PFLT_CONTEXT, PFLT_FILTER, PFLT_INSTANCE,
    PFLT_VOLUME,
};
use windows_sys::Wdk::Storage::FileSystem::{
    FILE_FS_ATTRIBUTE_INFORMATION, FileFsAttributeInformation,
};
use windows_sys::Win32::Foundation::{
    NTSTATUS, STATUS_BUFFER_OVERFLOW, STATUS_FLT_CONTEXT_ALREADY_DEFINED, STATUS_FLT_DO_NOT_ATTACH,
    STATUS_SUCCESS,
};
use windows_sys::Win32::Storage::InstallableFileSystems::FLT_FILESYSTEM_TYPE;
use windows_sys::Win32::System::IO::IO_STATUS_BLOCK;

use super::context::{InstanceContext, InstanceRef, TAG_INSTANCE_CONTEXT};
use super::hydrate;
use super::queue::PendedQueue;
use super::status::nt_success;
use crate::engine::volume::{self, VolumeKind};

/// InstanceSetupCallback: attach to local NTFS volumes with reparse point support only.
///
/// # Safety
/// Called by FltMgr at PASSIVE_LEVEL with valid related objects.
pub(super) unsafe extern "system" fn instance_setup(
    objects: *const FLT_RELATED_OBJECTS,
    _flags: u32,
    device_type: u32,
    filesystem: FLT_FILESYSTEM_TYPE,
) -> NTSTATUS {
    if volume::check_kind(VolumeKind {
        device_type,
        filesystem,
    })
    .is_err()
    {
        return STATUS_FLT_DO_NOT_ATTACH;
    }
    // SAFETY: FltMgr passes related objects valid for the duration of the callback.
    let Some(objects) = (unsafe { objects.as_ref() }) else {
        return STATUS_FLT_DO_NOT_ATTACH;
    };
    let Some(fs_attributes) = query_fs_attributes(objects.Instance) else {
        return STATUS_FLT_DO_NOT_ATTACH;
    };
    if volume::check_attributes(fs_attributes).is_err() {
        return STATUS_FLT_DO_NOT_ATTACH;
    }
    let context = InstanceContext {
        signature: TAG_INSTANCE_CONTEXT,
        sector_size: volume::sector_size(query_sector_size(objects.Volume)),
        fs_attributes,
        queue: PendedQueue::new(),
    };
    set_instance_context(objects.Filter, objects.Instance, context)
}

/// InstanceQueryTeardownCallback: allow `fltmc detach`; nothing on a volume needs the
/// filter to stay once its own work is drained by teardown.
///
/// # Safety
/// Called by FltMgr at PASSIVE_LEVEL.
pub(super) unsafe extern "system" fn instance_query_teardown(
    _objects: *const FLT_RELATED_OBJECTS,
    _flags: u32,
) -> NTSTATUS {
    STATUS_SUCCESS
}

/// InstanceTeardownStartCallback (`fltmc detach`, volume dismount, unload): reads pended
/// on the volume must not wait for a provider, so the queue refuses new ones and every
/// fetch for a file of the volume fails now (STATUS_CLOUD_FILE_REQUEST_ABORTED), which
/// completes the operations waiting for it.
///
/// # Safety
/// Called by FltMgr at PASSIVE_LEVEL with valid related objects.
pub(super) unsafe extern "system" fn instance_teardown_start(
    objects: *const FLT_RELATED_OBJECTS,
    _reason: u32,
) {
    // SAFETY: FltMgr passes related objects valid for the duration of the callback.
    let Some(objects) = (unsafe { objects.as_ref() }) else {
        return;
    };
    if let Some(context) = InstanceRef::get(objects.Instance) {
        context.disable_queue();
    }
    hydrate::instance_gone(objects.Instance);
}

/// `FILE_FS_ATTRIBUTE_INFORMATION` followed by room for the file-system name ("NTFS").
#[repr(C)]
struct FsAttributeBuffer {
    info: FILE_FS_ATTRIBUTE_INFORMATION,
    name: [u16; 16],
}

/// The volume's `FileSystemAttributes`, or `None` if the query failed.
fn query_fs_attributes(instance: PFLT_INSTANCE) -> Option<u32> {
    let mut buffer = MaybeUninit::<FsAttributeBuffer>::zeroed();
    let mut iosb = MaybeUninit::<IO_STATUS_BLOCK>::zeroed();
    // SAFETY: `instance` is the instance being set up; the buffer is writable for its
    // full size, which is what we pass; PASSIVE_LEVEL as InstanceSetup runs.
    let status = unsafe {
        FltQueryVolumeInformation(
            instance,
            iosb.as_mut_ptr(),
            buffer.as_mut_ptr().cast(),
            core::mem::size_of::<FsAttributeBuffer>() as u32,
            FileFsAttributeInformation,
        )
    };
    // A longer name than fits still fills the fixed part (STATUS_BUFFER_OVERFLOW).
    if !nt_success(status) && status != STATUS_BUFFER_OVERFLOW {
        return None;
    }
    // SAFETY: the buffer was zero-initialised and FILE_FS_ATTRIBUTE_INFORMATION is plain
    // data, so every bit pattern is valid.
    let buffer = unsafe { buffer.assume_init() };
    Some(buffer.info.FileSystemAttributes)
}

/// `FLT_VOLUME_PROPERTIES` followed by room for its three names.
#[repr(C)]
struct VolumePropertiesBuffer {
    properties: FLT_VOLUME_PROPERTIES,
    names: [u16; 256],
}

/// The sector size FltMgr reports for the volume, or 0 if it could not be read.
fn query_sector_size(volume: PFLT_VOLUME) -> u16 {
    let mut buffer = MaybeUninit::<VolumePropertiesBuffer>::zeroed();
    let mut returned = 0u32;
    // SAFETY: `volume` is the volume being set up; the buffer is writable for the size
    // passed. PASSIVE_LEVEL (InstanceSetup).
    let status = unsafe {
        FltGetVolumeProperties(
            volume,
            buffer.as_mut_ptr().cast(),
            core::mem::size_of::<VolumePropertiesBuffer>() as u32,
            &mut returned,
        )
    };
    if !nt_success(status) && status != STATUS_BUFFER_OVERFLOW {
        return 0;
    }
    // SAFETY: zero-initialised plain data; any bit pattern is valid.
    let buffer = unsafe { buffer.assume_init() };
    buffer.properties.SectorSize
}

/// Allocates the instance context, fills it and attaches it to `instance`.
fn set_instance_context(
    filter: PFLT_FILTER,
    instance: PFLT_INSTANCE,
    value: InstanceContext,
) -> NTSTATUS {
    let mut context: PFLT_CONTEXT = core::ptr::null_mut();
    // SAFETY: `filter` is our registered filter; the size is that of the registered
    // instance context type. PASSIVE_LEVEL.
    let status = unsafe {
        FltAllocateContext(
            filter,
            FLT_INSTANCE_CONTEXT as u16,
            core::mem::size_of::<InstanceContext>(),
            NonPagedPoolNx,
            &mut context,
        )
    };
    if !nt_success(status) {
        return status;
    }
    // SAFETY: FltAllocateContext returned a pool block of the requested size, aligned
    // for any `repr(C)` type of pool alignment, not yet visible to anyone else.
    unsafe { context.cast::<InstanceContext>().write(value) };
    // SAFETY: written just above, where it stays until FltMgr frees it.
    let queue = &unsafe { &*context.cast::<InstanceContext>() }.queue;
    let status = queue.init(instance, Some(hydrate::read_cancelled));
    if !nt_success(status) {
        // SAFETY: the allocation reference; frees the context, never published.
        unsafe { FltReleaseContext(context) };
        return status;
    }
    // SAFETY: `context` is a live instance context we hold a reference to; FltMgr takes
    // its own reference when it attaches it.
    let status = unsafe {
        FltSetInstanceContext(
            instance,
            FLT_SET_CONTEXT_KEEP_IF_EXISTS,
            context,
            core::ptr::null_mut(),
        )
    };
    // SAFETY: drops the reference FltAllocateContext gave us, whether or not the set
    // succeeded: on success FltMgr holds its own, on failure this frees the context.
    unsafe { FltReleaseContext(context) };
    if status == STATUS_FLT_CONTEXT_ALREADY_DEFINED {
        // InstanceSetup runs once per instance; a context already there is ours.
        return STATUS_SUCCESS;
    }
    status
}
