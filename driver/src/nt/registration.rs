//! The operation and context tables FLT_REGISTRATION points at: each operation's (major,
//! pre, post) row, built from the `ops` modules.

use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FLT_OPERATION_REGISTRATION, IRP_MJ_ACQUIRE_FOR_SECTION_SYNCHRONIZATION,
    IRP_MJ_NETWORK_QUERY_OPEN, IRP_MJ_OPERATION_END, IRP_MJ_QUERY_OPEN,
    PFLT_POST_OPERATION_CALLBACK, PFLT_PRE_OPERATION_CALLBACK,
};
use windows_sys::Wdk::System::SystemServices::{
    IRP_MJ_CLEANUP, IRP_MJ_CREATE, IRP_MJ_DIRECTORY_CONTROL, IRP_MJ_FILE_SYSTEM_CONTROL,
    IRP_MJ_QUERY_INFORMATION, IRP_MJ_READ, IRP_MJ_SET_INFORMATION, IRP_MJ_WRITE,
};

use super::{context, ops};

#[repr(transparent)]
pub(super) struct Operations(pub(super) [FLT_OPERATION_REGISTRATION; OPERATION_COUNT + 1]);

// SAFETY: as for `Registration`: immutable, and holds only function pointers.
unsafe impl Sync for Operations {}

#[repr(transparent)]
pub(super) struct Contexts(
    pub(super) [windows_sys::Wdk::Storage::FileSystem::Minifilters::FLT_CONTEXT_REGISTRATION; 4],
);

// SAFETY: as for `Registration`.
unsafe impl Sync for Contexts {}

/// The operations a placeholder filter must see (minifilter checklist). Major function
/// codes above 0x7f are FltMgr's pseudo-operations, stored as the low byte.
pub(crate) const OPERATION_MAJORS: [u8; OPERATION_COUNT] = [
    IRP_MJ_CREATE as u8,
    IRP_MJ_READ as u8,
    IRP_MJ_WRITE as u8,
    IRP_MJ_SET_INFORMATION as u8,
    IRP_MJ_DIRECTORY_CONTROL as u8,
    IRP_MJ_QUERY_INFORMATION as u8,
    IRP_MJ_FILE_SYSTEM_CONTROL as u8,
    IRP_MJ_NETWORK_QUERY_OPEN as u8,
    IRP_MJ_QUERY_OPEN as u8,
    IRP_MJ_ACQUIRE_FOR_SECTION_SYNCHRONIZATION as u8,
    IRP_MJ_CLEANUP as u8,
];
const OPERATION_COUNT: usize = 11;

pub(super) static OPERATIONS: Operations = Operations(operations());

#[expect(
    clippy::indexing_slicing,
    reason = "const-evaluated into a static: an out-of-range index fails the build"
)]
const fn operations() -> [FLT_OPERATION_REGISTRATION; OPERATION_COUNT + 1] {
    let end = FLT_OPERATION_REGISTRATION {
        MajorFunction: IRP_MJ_OPERATION_END as u8,
        Flags: 0,
        PreOperation: None,
        PostOperation: None,
        Reserved1: core::ptr::null_mut(),
    };
    let mut table = [end; OPERATION_COUNT + 1];
    let mut i = 0;
    while i < OPERATION_COUNT {
        let major = OPERATION_MAJORS[i];
        let post: PFLT_POST_OPERATION_CALLBACK = if major == IRP_MJ_CREATE as u8 {
            Some(ops::create::post_create)
        } else if major == IRP_MJ_DIRECTORY_CONTROL as u8 {
            Some(ops::dir_control::post_directory_control)
        } else if major == IRP_MJ_QUERY_INFORMATION as u8 {
            Some(ops::query::post_query_information)
        } else if major == IRP_MJ_FILE_SYSTEM_CONTROL as u8 {
            Some(ops::fs_control::post_fs_control)
        } else if major == IRP_MJ_QUERY_OPEN as u8 {
            Some(ops::query::post_query_open)
        } else if major == IRP_MJ_WRITE as u8 {
            Some(ops::write::post_write)
        } else if major == IRP_MJ_SET_INFORMATION as u8 {
            Some(ops::set_info::post_set_information)
        } else if major == IRP_MJ_CLEANUP as u8 {
            Some(ops::cleanup::post_cleanup)
        } else {
            None
        };
        let pre: PFLT_PRE_OPERATION_CALLBACK = if major == IRP_MJ_CREATE as u8 {
            Some(ops::create::pre_create)
        } else if major == IRP_MJ_READ as u8 {
            Some(ops::read::pre_read)
        } else if major == IRP_MJ_WRITE as u8 {
            Some(ops::write::pre_write)
        } else if major == IRP_MJ_SET_INFORMATION as u8 {
            Some(ops::set_info::pre_set_information)
        } else if major == IRP_MJ_ACQUIRE_FOR_SECTION_SYNCHRONIZATION as u8 {
            Some(ops::section::pre_acquire_section)
        } else if major == IRP_MJ_FILE_SYSTEM_CONTROL as u8 {
            Some(ops::fs_control::pre_fs_control)
        } else if major == IRP_MJ_CLEANUP as u8 {
            Some(ops::cleanup::pre_cleanup)
        } else if major == IRP_MJ_DIRECTORY_CONTROL as u8 {
            Some(ops::dir_control::pre_directory_control)
        } else if major == IRP_MJ_QUERY_INFORMATION as u8 {
            Some(ops::query::pre_query_information)
        } else if major == IRP_MJ_QUERY_OPEN as u8 {
            Some(ops::query::pre_query_open)
        } else if major == IRP_MJ_NETWORK_QUERY_OPEN as u8 {
            Some(ops::query::pre_network_query_open)
        } else {
            None
        };
        table[i] = FLT_OPERATION_REGISTRATION {
            MajorFunction: major,
            // No skip flags: paging reads of placeholders must be seen (and failed when
            // data is missing), and so must non-cached I/O.
            Flags: 0,
            PreOperation: pre,
            PostOperation: post,
            Reserved1: core::ptr::null_mut(),
        };
        i += 1;
    }
    table
}

pub(super) static CONTEXTS: Contexts = Contexts(context::CONTEXTS);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operation_table_is_terminated_and_complete() {
        let table = &OPERATIONS.0;
        assert_eq!(
            table[OPERATION_COUNT].MajorFunction,
            IRP_MJ_OPERATION_END as u8
        );
        for (entry, major) in table.iter().zip(OPERATION_MAJORS) {
            assert_eq!(entry.MajorFunction, major);
            assert!(entry.PreOperation.is_some());
        }
        let mut seen = OPERATION_MAJORS.to_vec();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(
            seen.len(),
            OPERATION_COUNT,
            "an operation is registered twice"
        );
    }
}
