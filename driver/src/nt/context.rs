//! The FltMgr contexts the filter registers, one pool tag per type.
//!
//! FltMgr allocates and frees context memory itself; the cleanup callback runs just before
//! the free and checks the signature, so a context of the wrong type reaching it shows up
//! in a debugger instead of corrupting pool.

use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FLT_CONTEXT_END, FLT_CONTEXT_REGISTRATION, FLT_INSTANCE_CONTEXT, FLT_STREAM_CONTEXT,
    FLT_STREAMHANDLE_CONTEXT, PFLT_CONTEXT,
};

use super::pool::tag;

/// Per-volume facts gathered at InstanceSetup.
#[repr(C)]
pub(crate) struct InstanceContext {
    pub(crate) signature: u32,
    /// Sector size for non-cached I/O on this volume (at least 512).
    pub(crate) sector_size: u32,
    /// `FileSystemAttributes` the volume reported.
    pub(crate) fs_attributes: u32,
}

/// Per-stream state: the placeholder's hydration state lives here once placeholders are
/// handled; until then the filter never allocates one.
#[repr(C)]
pub(crate) struct StreamContext {
    pub(crate) signature: u32,
}

/// Per-open state: the open's effective policy and disguise decision live here once they
/// are decided; until then the filter never allocates one.
#[repr(C)]
pub(crate) struct StreamHandleContext {
    pub(crate) signature: u32,
}

pub(crate) const TAG_INSTANCE_CONTEXT: u32 = tag(b"CFic");
pub(crate) const TAG_STREAM_CONTEXT: u32 = tag(b"CFsc");
pub(crate) const TAG_STREAMHANDLE_CONTEXT: u32 = tag(b"CFsh");

/// The registration table FltMgr reads at FltRegisterFilter.
pub(super) const CONTEXTS: [FLT_CONTEXT_REGISTRATION; 4] = [
    entry(
        FLT_INSTANCE_CONTEXT,
        core::mem::size_of::<InstanceContext>(),
        TAG_INSTANCE_CONTEXT,
    ),
    entry(
        FLT_STREAM_CONTEXT,
        core::mem::size_of::<StreamContext>(),
        TAG_STREAM_CONTEXT,
    ),
    entry(
        FLT_STREAMHANDLE_CONTEXT,
        core::mem::size_of::<StreamHandleContext>(),
        TAG_STREAMHANDLE_CONTEXT,
    ),
    FLT_CONTEXT_REGISTRATION {
        ContextType: FLT_CONTEXT_END as u16,
        Flags: 0,
        ContextCleanupCallback: None,
        Size: 0,
        PoolTag: 0,
        ContextAllocateCallback: None,
        ContextFreeCallback: None,
        Reserved1: core::ptr::null_mut(),
    },
];

const fn entry(context_type: u32, size: usize, pool_tag: u32) -> FLT_CONTEXT_REGISTRATION {
    FLT_CONTEXT_REGISTRATION {
        ContextType: context_type as u16,
        Flags: 0,
        ContextCleanupCallback: Some(cleanup),
        Size: size,
        PoolTag: pool_tag,
        ContextAllocateCallback: None,
        ContextFreeCallback: None,
        Reserved1: core::ptr::null_mut(),
    }
}

/// ContextCleanupCallback: none of the contexts owns memory of its own yet, so this only
/// clears the signature, so that a released context seen in a debugger does not look
/// alive.
unsafe extern "system" fn cleanup(context: PFLT_CONTEXT, _context_type: u16) {
    if context.is_null() {
        return;
    }
    // SAFETY: FltMgr passes a live context of one of our types, all `repr(C)` and starting
    // with a `u32` signature, pool-aligned, ours until this callback returns.
    unsafe { context.cast::<u32>().write(0) };
}
