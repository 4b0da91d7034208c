//! Each verifier check of the model, made to fire by a deliberately broken "driver".
//!
//! The real driver's tests prove the model raises nothing on correct code; these prove it
//! is not lenient.

use std::ffi::c_void;
use std::sync::atomic::{AtomicIsize, AtomicU8, Ordering};

use cloudflt_tests::model::fltmgr::{
    FltAllocateContext, FltRegisterFilter, FltReleaseContext, FltStartFiltering,
    FltUnregisterFilter,
};
use cloudflt_tests::model::irql::{self, DISPATCH_LEVEL};
use cloudflt_tests::model::pool::{ExAllocatePool2, ExFreePoolWithTag};
use cloudflt_tests::model::port::{
    FltBuildDefaultSecurityDescriptor, FltCloseCommunicationPort, FltCreateCommunicationPort,
    FltFreeSecurityDescriptor,
};
use cloudflt_tests::model::{Machine, Violation, VolumeConfig};
use windows_sys::Wdk::Foundation::{DRIVER_OBJECT, NonPagedPoolNx, OBJECT_ATTRIBUTES};
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FLT_CONTEXT_END, FLT_CONTEXT_REGISTRATION, FLT_INSTANCE_CONTEXT, FLT_REGISTRATION,
    FLT_RELATED_OBJECTS, PFLT_CONTEXT, PFLT_FILTER, PFLT_PORT,
};
use windows_sys::Win32::Foundation::{
    NTSTATUS, STATUS_INSUFFICIENT_RESOURCES, STATUS_INVALID_PARAMETER, STATUS_SUCCESS,
    UNICODE_STRING,
};

const NORMAL: u8 = 0;
const LEAVE_PORT_OPEN: u8 = 1;
const LEAK_POOL: u8 = 2;
const BAD_SETUP_STATUS: u8 = 3;

static MODE: AtomicU8 = AtomicU8::new(NORMAL);
static FILTER: AtomicIsize = AtomicIsize::new(0);
static PORT: AtomicIsize = AtomicIsize::new(0);
const TAG: u32 = u32::from_le_bytes(*b"Test");

unsafe extern "system" fn unload(_flags: u32) -> NTSTATUS {
    let filter = FILTER.load(Ordering::SeqCst);
    let port = PORT.load(Ordering::SeqCst);
    match MODE.load(Ordering::SeqCst) {
        LEAVE_PORT_OPEN => FltUnregisterFilter(filter),
        LEAK_POOL => {
            let _ = ExAllocatePool2(0x40, 32, TAG);
            if port != 0 {
                FltCloseCommunicationPort(port);
            }
            FltUnregisterFilter(filter);
        }
        _ => {
            if port != 0 {
                FltCloseCommunicationPort(port);
            }
            FltUnregisterFilter(filter);
        }
    }
    STATUS_SUCCESS
}

unsafe extern "system" fn setup(_: *const FLT_RELATED_OBJECTS, _: u32, _: u32, _: i32) -> NTSTATUS {
    if MODE.load(Ordering::SeqCst) == BAD_SETUP_STATUS {
        0x0000_0001 // STATUS_WAIT_1: a success code InstanceSetup may not return
    } else {
        STATUS_SUCCESS
    }
}

struct Static<T>(T);
// SAFETY: immutable tables read by the model only.
unsafe impl<T> Sync for Static<T> {}

static CONTEXTS: Static<[FLT_CONTEXT_REGISTRATION; 2]> = Static([
    FLT_CONTEXT_REGISTRATION {
        ContextType: FLT_INSTANCE_CONTEXT as u16,
        Flags: 0,
        ContextCleanupCallback: None,
        Size: 16,
        PoolTag: TAG,
        ContextAllocateCallback: None,
        ContextFreeCallback: None,
        Reserved1: std::ptr::null_mut(),
    },
    FLT_CONTEXT_REGISTRATION {
        ContextType: FLT_CONTEXT_END as u16,
        Flags: 0,
        ContextCleanupCallback: None,
        Size: 0,
        PoolTag: 0,
        ContextAllocateCallback: None,
        ContextFreeCallback: None,
        Reserved1: std::ptr::null_mut(),
    },
]);

fn registration(version: u16) -> FLT_REGISTRATION {
    FLT_REGISTRATION {
        Size: std::mem::size_of::<FLT_REGISTRATION>() as u16,
        Version: version,
        ContextRegistration: CONTEXTS.0.as_ptr(),
        FilterUnloadCallback: Some(unload),
        InstanceSetupCallback: Some(setup),
        ..Default::default()
    }
}

/// The I/O manager's driver object, which FltRegisterFilter only needs to be non-NULL.
fn driver_object() -> &'static DRIVER_OBJECT {
    // SAFETY: DRIVER_OBJECT is plain data for which all-zero is a valid value.
    let object: DRIVER_OBJECT = unsafe { std::mem::zeroed() };
    Box::leak(Box::new(object))
}

/// Boots a machine and registers + starts the broken driver in `mode`.
fn broken(mode: u8) -> Machine {
    let machine = Machine::boot(&[VolumeConfig::ntfs(1)]);
    MODE.store(mode, Ordering::SeqCst);
    PORT.store(0, Ordering::SeqCst);
    let driver = driver_object();
    let mut filter: PFLT_FILTER = 0;
    // SAFETY: a registration that outlives the call (FltMgr copies what it needs).
    let status = unsafe { FltRegisterFilter(driver, &registration(0x0203), &mut filter) };
    assert_eq!(status, STATUS_SUCCESS);
    FILTER.store(filter, Ordering::SeqCst);
    assert_eq!(FltStartFiltering(filter), STATUS_SUCCESS);
    machine
}

fn create_port(attributes: u32, with_descriptor: bool) -> PFLT_PORT {
    let name: Vec<u16> = "\\TestPort".encode_utf16().collect();
    let us = UNICODE_STRING {
        Length: 18,
        MaximumLength: 18,
        Buffer: name.as_ptr().cast_mut(),
    };
    let mut sd = std::ptr::null_mut();
    if with_descriptor {
        // SAFETY: valid out pointer.
        let status = unsafe { FltBuildDefaultSecurityDescriptor(&mut sd, 0x1F_0001) };
        assert_eq!(status, STATUS_SUCCESS);
    }
    let oa = OBJECT_ATTRIBUTES {
        Length: std::mem::size_of::<OBJECT_ATTRIBUTES>() as u32,
        RootDirectory: std::ptr::null_mut(),
        ObjectName: &us,
        Attributes: attributes,
        SecurityDescriptor: sd.cast(),
        SecurityQualityOfService: std::ptr::null(),
    };
    unsafe extern "system" fn connect(
        _: PFLT_PORT,
        _: *const c_void,
        _: *const c_void,
        _: u32,
        _: *mut *mut c_void,
    ) -> NTSTATUS {
        STATUS_SUCCESS
    }
    let mut port = 0;
    // SAFETY: valid attributes and out pointer.
    let status = unsafe {
        FltCreateCommunicationPort(
            FILTER.load(Ordering::SeqCst),
            &mut port,
            &oa,
            std::ptr::null(),
            Some(connect),
            None,
            None,
            1,
        )
    };
    assert_eq!(status, STATUS_SUCCESS);
    if with_descriptor {
        FltFreeSecurityDescriptor(sd);
    }
    PORT.store(port, Ordering::SeqCst);
    port
}

/// A fresh instance context of the broken driver, with one reference.
fn allocate_instance_context() -> PFLT_CONTEXT {
    let mut ctx: PFLT_CONTEXT = std::ptr::null_mut();
    let filter = FILTER.load(Ordering::SeqCst);
    // SAFETY: a valid out pointer.
    let status = unsafe {
        FltAllocateContext(
            filter,
            FLT_INSTANCE_CONTEXT as u16,
            16,
            NonPagedPoolNx,
            &mut ctx,
        )
    };
    assert_eq!(status, STATUS_SUCCESS);
    ctx
}

fn fired(violations: &[Violation], api: &str, needle: &str) -> bool {
    violations
        .iter()
        .any(|v| v.api == api && v.message.contains(needle))
}

#[test]
fn a_correct_driver_raises_nothing() {
    let mut machine = broken(NORMAL);
    create_port(0x240, true);
    assert_eq!(machine.unload_driver(), STATUS_SUCCESS);
    machine.assert_clean();
}

#[test]
fn unregistering_with_the_server_port_open_is_caught() {
    let mut machine = broken(LEAVE_PORT_OPEN);
    create_port(0x240, true);
    machine.unload_driver();
    let v = machine.take_violations();
    assert!(
        fired(&v, "FltUnregisterFilter", "server port(s) still open"),
        "{v:?}"
    );
}

#[test]
fn pool_leaked_at_unload_is_reported_by_tag() {
    let mut machine = broken(LEAK_POOL);
    machine.unload_driver();
    let v = machine.take_violations();
    assert!(
        fired(&v, "DriverUnload", "pool leaked: Test (32 bytes)"),
        "{v:?}"
    );
}

#[test]
fn freeing_with_the_wrong_tag_or_twice_is_caught() {
    let mut machine = broken(NORMAL);
    let p = ExAllocatePool2(0x40, 8, TAG);
    ExFreePoolWithTag(p, u32::from_le_bytes(*b"Othr"));
    ExFreePoolWithTag(p, TAG);
    ExFreePoolWithTag(p, TAG);
    let v = machine.take_violations();
    assert!(
        fired(
            &v,
            "ExFreePoolWithTag",
            "freed with tag Othr but allocated with tag Test"
        ),
        "{v:?}"
    );
    assert!(fired(&v, "ExFreePoolWithTag", "double free"), "{v:?}");
    machine.unload_driver();
}

#[test]
fn an_api_called_above_its_irql_is_caught() {
    let mut machine = broken(NORMAL);
    // Paged pool may not be allocated at DISPATCH_LEVEL.
    let p = irql::at(DISPATCH_LEVEL, || ExAllocatePool2(0x100, 8, TAG));
    let v = machine.take_violations();
    assert!(
        fired(
            &v,
            "ExAllocatePool2",
            "called at IRQL 2, documented maximum is 1"
        ),
        "{v:?}"
    );
    ExFreePoolWithTag(p, TAG);
    machine.unload_driver();
    machine.assert_clean();
}

#[test]
fn a_context_released_twice_is_caught() {
    let mut machine = broken(NORMAL);
    let ctx = allocate_instance_context();
    FltReleaseContext(ctx);
    FltReleaseContext(ctx);
    let v = machine.take_violations();
    assert!(fired(&v, "FltReleaseContext", "released twice"), "{v:?}");
    machine.unload_driver();
}

#[test]
fn a_leaked_context_is_reported_at_unregister() {
    let mut machine = broken(NORMAL);
    // Allocated and never released: FltUnregisterFilter must report it.
    let _leaked = allocate_instance_context();
    machine.unload_driver();
    let v = machine.take_violations();
    assert!(fired(&v, "FltUnregisterFilter", "contexts leaked"), "{v:?}");
    assert!(
        fired(&v, "DriverUnload", "pool leaked: Test (16 bytes)"),
        "{v:?}"
    );
}

#[test]
fn a_port_without_kernel_handle_or_descriptor_is_caught() {
    let mut machine = broken(NORMAL);
    create_port(0x40, false);
    let v = machine.take_violations();
    assert!(
        fired(
            &v,
            "FltCreateCommunicationPort",
            "without OBJ_KERNEL_HANDLE"
        ),
        "{v:?}"
    );
    assert!(
        fired(&v, "FltCreateCommunicationPort", "open to everyone"),
        "{v:?}"
    );
    machine.unload_driver();
}

#[test]
fn an_illegal_instance_setup_status_is_caught() {
    let mut machine = broken(BAD_SETUP_STATUS);
    let v = machine.take_violations();
    assert!(fired(&v, "InstanceSetup", "success code 0x1"), "{v:?}");
    machine.unload_driver();
}

#[test]
fn freeing_fltmgr_memory_or_using_an_unregistered_filter_is_caught() {
    let mut machine = broken(NORMAL);
    let ctx = allocate_instance_context();
    ExFreePoolWithTag(ctx, TAG);
    let v = machine.take_violations();
    assert!(fired(&v, "ExFreePoolWithTag", "owned by FltMgr"), "{v:?}");
    FltReleaseContext(ctx);
    machine.unload_driver();
    machine.assert_clean();
    assert_eq!(
        FltStartFiltering(FILTER.load(Ordering::SeqCst)),
        STATUS_INVALID_PARAMETER
    );
    let v = machine.take_violations();
    assert!(
        fired(&v, "FltStartFiltering", "used after FltUnregisterFilter"),
        "{v:?}"
    );
}

#[test]
fn a_driver_entry_that_fails_and_leaks_is_caught() {
    unsafe fn leaky_entry(_: *mut DRIVER_OBJECT, _: *const UNICODE_STRING) -> NTSTATUS {
        let _ = ExAllocatePool2(0x40, 24, TAG);
        STATUS_INSUFFICIENT_RESOURCES
    }
    let mut machine = Machine::boot(&[]);
    assert_eq!(
        machine.load_driver(leaky_entry),
        STATUS_INSUFFICIENT_RESOURCES
    );
    let v = machine.take_violations();
    assert!(
        fired(&v, "DriverEntry", "left pool behind: Test (24 bytes)"),
        "{v:?}"
    );
}

#[test]
fn a_registration_of_the_wrong_version_is_refused() {
    let mut machine = Machine::boot(&[]);
    let mut filter = 0;
    // SAFETY: valid pointers.
    let status = unsafe { FltRegisterFilter(driver_object(), &registration(0x0300), &mut filter) };
    assert!(status < 0);
    let v = machine.take_violations();
    assert!(
        fired(&v, "FltRegisterFilter", "is not one FltMgr knows"),
        "{v:?}"
    );
}
