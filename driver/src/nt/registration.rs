//! The FLT_REGISTRATION FltMgr reads at FltRegisterFilter: version, contexts, operations
//! and the filter-wide callbacks.

use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FLT_OPERATION_REGISTRATION, FLT_REGISTRATION, FLT_REGISTRATION_VERSION_0203,
    IRP_MJ_ACQUIRE_FOR_SECTION_SYNCHRONIZATION, IRP_MJ_NETWORK_QUERY_OPEN, IRP_MJ_OPERATION_END,
    IRP_MJ_QUERY_OPEN, PFLT_POST_OPERATION_CALLBACK, PFLT_PRE_OPERATION_CALLBACK,
};
use windows_sys::Wdk::System::SystemServices::{
    IRP_MJ_CLEANUP, IRP_MJ_CREATE, IRP_MJ_DIRECTORY_CONTROL, IRP_MJ_FILE_SYSTEM_CONTROL,
    IRP_MJ_QUERY_INFORMATION, IRP_MJ_READ, IRP_MJ_SET_INFORMATION, IRP_MJ_WRITE,
};

use super::{context, disguise, filter, instance, ops};

/// FLT_REGISTRATION holds raw pointers, which are not `Sync`; this one points only at
/// other immutable statics.
#[repr(transparent)]
pub(super) struct Registration(pub(super) FLT_REGISTRATION);

// SAFETY: the registration and everything it points to are immutable statics, read by
// FltMgr only.
unsafe impl Sync for Registration {}

#[repr(transparent)]
struct Operations([FLT_OPERATION_REGISTRATION; OPERATION_COUNT + 1]);

// SAFETY: as for `Registration`: immutable, and holds only function pointers.
unsafe impl Sync for Operations {}

#[repr(transparent)]
struct Contexts([windows_sys::Wdk::Storage::FileSystem::Minifilters::FLT_CONTEXT_REGISTRATION; 4]);

// SAFETY: as for `Registration`.
unsafe impl Sync for Contexts {}

/// The operations a placeholder filter must see (minifilter checklist). Major function
/// codes above 0x7f are FltMgr's pseudo-operations, stored as the low byte.
pub(crate) const OPERATION_MAJORS: [u8; OPERATION_COUNT] = [
    IRP_MJ_CREATE as u8,
    IRP_MJ_READ as u8,
    IRP_MJ_WRITE as u8,
    IRP_MJ_DIRECTORY_CONTROL as u8,
    IRP_MJ_QUERY_INFORMATION as u8,
    IRP_MJ_SET_INFORMATION as u8,
    IRP_MJ_FILE_SYSTEM_CONTROL as u8,
    IRP_MJ_NETWORK_QUERY_OPEN as u8,
    IRP_MJ_QUERY_OPEN as u8,
    IRP_MJ_ACQUIRE_FOR_SECTION_SYNCHRONIZATION as u8,
    IRP_MJ_CLEANUP as u8,
];
const OPERATION_COUNT: usize = 11;

static OPERATIONS: Operations = Operations(operations());

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
            Some(ops::post_create)
        } else if major == IRP_MJ_DIRECTORY_CONTROL as u8 {
            Some(disguise::post_directory_control)
        } else if major == IRP_MJ_QUERY_INFORMATION as u8 {
            Some(disguise::post_query_information)
        } else if major == IRP_MJ_FILE_SYSTEM_CONTROL as u8 {
            Some(disguise::post_fs_control)
        } else if major == IRP_MJ_QUERY_OPEN as u8 {
            Some(disguise::post_query_open)
        } else {
            None
        };
        let pre: PFLT_PRE_OPERATION_CALLBACK = if major == IRP_MJ_CREATE as u8 {
            Some(ops::pre_create)
        } else if major == IRP_MJ_READ as u8 {
            Some(ops::pre_read)
        } else if major == IRP_MJ_ACQUIRE_FOR_SECTION_SYNCHRONIZATION as u8 {
            Some(ops::pre_acquire_section)
        } else if major == IRP_MJ_FILE_SYSTEM_CONTROL as u8 {
            Some(ops::pre_fs_control)
        } else if major == IRP_MJ_CLEANUP as u8 {
            Some(ops::pre_cleanup)
        } else if major == IRP_MJ_DIRECTORY_CONTROL as u8 {
            Some(disguise::pre_directory_control)
        } else if major == IRP_MJ_QUERY_INFORMATION as u8 {
            Some(disguise::pre_query_information)
        } else if major == IRP_MJ_QUERY_OPEN as u8 {
            Some(disguise::pre_query_open)
        } else if major == IRP_MJ_NETWORK_QUERY_OPEN as u8 {
            Some(disguise::pre_network_query_open)
        } else {
            Some(ops::pre_pass_through)
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

static CONTEXTS: Contexts = Contexts(context::CONTEXTS);

/// What DriverEntry passes to FltRegisterFilter.
pub(super) static REGISTRATION: Registration = Registration(FLT_REGISTRATION {
    Size: core::mem::size_of::<FLT_REGISTRATION>() as u16,
    Version: FLT_REGISTRATION_VERSION_0203 as u16,
    Flags: 0,
    ContextRegistration: CONTEXTS.0.as_ptr(),
    OperationRegistration: OPERATIONS.0.as_ptr(),
    FilterUnloadCallback: Some(filter::filter_unload),
    InstanceSetupCallback: Some(instance::instance_setup),
    InstanceQueryTeardownCallback: Some(instance::instance_query_teardown),
    InstanceTeardownStartCallback: Some(instance::instance_teardown_start),
    InstanceTeardownCompleteCallback: None,
    GenerateFileNameCallback: None,
    NormalizeNameComponentCallback: None,
    NormalizeContextCleanupCallback: None,
    TransactionNotificationCallback: None,
    NormalizeNameComponentExCallback: None,
    SectionNotificationCallback: None,
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_is_version_0203_with_its_exact_size() {
        let r = &REGISTRATION.0;
        assert_eq!(r.Version, 0x0203);
        // x64 layout of FLT_REGISTRATION with SectionNotificationCallback (fltKernel.h).
        #[cfg(target_pointer_width = "64")]
        assert_eq!(r.Size, 0x70);
    }

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
