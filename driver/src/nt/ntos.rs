//! Kernel exports that windows-sys attributes to `ntdll.dll` (its metadata follows the
//! user-mode SDK). Importing them through windows-sys would make the image import ntdll,
//! which a driver cannot, and a second `raw-dylib` declaration against ntoskrnl.exe
//! collides with windows-sys's; so they are looked up once per call with
//! MmGetSystemRoutineAddress, the documented way to reach an ntoskrnl export by name.

use windows_sys::Wdk::Foundation::OBJECT_ATTRIBUTES;
use windows_sys::Wdk::System::SystemServices::MmGetSystemRoutineAddress;
use windows_sys::Win32::Foundation::{HANDLE, NTSTATUS, STATUS_NOT_IMPLEMENTED, UNICODE_STRING};

/// The address of the ntoskrnl export `name` (ASCII), or NULL. PASSIVE_LEVEL.
fn routine(name: &[u8]) -> *mut core::ffi::c_void {
    let mut units = [0u16; 48];
    for (d, s) in units.iter_mut().zip(name) {
        *d = u16::from(*s);
    }
    let len = name.len().min(units.len());
    let bytes = (len * 2) as u16;
    let string = UNICODE_STRING {
        Length: bytes,
        MaximumLength: bytes,
        // Only read by the call.
        Buffer: units.as_mut_ptr(),
    };
    // SAFETY: a valid UNICODE_STRING for the duration of the call; PASSIVE_LEVEL.
    unsafe { MmGetSystemRoutineAddress(&string) }
}

type Close = unsafe extern "system" fn(HANDLE) -> NTSTATUS;
type OpenLink = unsafe extern "system" fn(*mut HANDLE, u32, *const OBJECT_ATTRIBUTES) -> NTSTATUS;
type QueryLink = unsafe extern "system" fn(HANDLE, *mut UNICODE_STRING, *mut u32) -> NTSTATUS;
type QueryMode = unsafe extern "system" fn() -> i8;

/// ZwClose.
///
/// # Safety
/// As ZwClose: `handle` is a kernel handle the caller owns.
#[allow(non_snake_case, reason = "the kernel routine's name")]
pub(crate) unsafe fn ZwClose(handle: HANDLE) -> NTSTATUS {
    let f = routine(b"ZwClose");
    if f.is_null() {
        return STATUS_NOT_IMPLEMENTED;
    }
    // SAFETY: ntoskrnl's ZwClose has this signature.
    let f: Close = unsafe { core::mem::transmute::<*mut core::ffi::c_void, Close>(f) };
    // SAFETY: the caller's contract.
    unsafe { f(handle) }
}

/// ZwOpenSymbolicLinkObject.
///
/// # Safety
/// As ZwOpenSymbolicLinkObject.
#[allow(non_snake_case, reason = "the kernel routine's name")]
pub(crate) unsafe fn ZwOpenSymbolicLinkObject(
    handle: *mut HANDLE,
    access: u32,
    attributes: *const OBJECT_ATTRIBUTES,
) -> NTSTATUS {
    let f = routine(b"ZwOpenSymbolicLinkObject");
    if f.is_null() {
        return STATUS_NOT_IMPLEMENTED;
    }
    // SAFETY: ntoskrnl's ZwOpenSymbolicLinkObject has this signature.
    let f: OpenLink = unsafe { core::mem::transmute::<*mut core::ffi::c_void, OpenLink>(f) };
    // SAFETY: the caller's contract.
    unsafe { f(handle, access, attributes) }
}

/// ZwQuerySymbolicLinkObject.
///
/// # Safety
/// As ZwQuerySymbolicLinkObject.
#[allow(non_snake_case, reason = "the kernel routine's name")]
pub(crate) unsafe fn ZwQuerySymbolicLinkObject(
    handle: HANDLE,
    target: *mut UNICODE_STRING,
    returned: *mut u32,
) -> NTSTATUS {
    let f = routine(b"ZwQuerySymbolicLinkObject");
    if f.is_null() {
        return STATUS_NOT_IMPLEMENTED;
    }
    // SAFETY: ntoskrnl's ZwQuerySymbolicLinkObject has this signature.
    let f: QueryLink = unsafe { core::mem::transmute::<*mut core::ffi::c_void, QueryLink>(f) };
    // SAFETY: the caller's contract.
    unsafe { f(handle, target, returned) }
}

type QueryProcess =
    unsafe extern "system" fn(HANDLE, i32, *mut core::ffi::c_void, u32, *mut u32) -> NTSTATUS;

/// ZwQueryInformationProcess.
///
/// # Safety
/// As ZwQueryInformationProcess: `info` points to `length` writable bytes; PASSIVE_LEVEL.
#[allow(non_snake_case, reason = "the kernel routine's name")]
pub(crate) unsafe fn ZwQueryInformationProcess(
    process: HANDLE,
    class: i32,
    info: *mut core::ffi::c_void,
    length: u32,
    returned: *mut u32,
) -> NTSTATUS {
    let f = routine(b"ZwQueryInformationProcess");
    if f.is_null() {
        return STATUS_NOT_IMPLEMENTED;
    }
    // SAFETY: ntoskrnl's ZwQueryInformationProcess has this signature.
    let f: QueryProcess =
        unsafe { core::mem::transmute::<*mut core::ffi::c_void, QueryProcess>(f) };
    // SAFETY: the caller's contract.
    unsafe { f(process, class, info, length, returned) }
}

fn query_mode(name: &[u8]) -> i8 {
    let f = routine(name);
    if f.is_null() {
        // Before Windows 10 1803 there are no modes: every process is APPLICATION_DEFAULT.
        return 0;
    }
    // SAFETY: both mode queries take nothing and return a CHAR.
    let f: QueryMode = unsafe { core::mem::transmute::<*mut core::ffi::c_void, QueryMode>(f) };
    // SAFETY: no preconditions; reads the current process's or thread's mode.
    unsafe { f() }
}

/// RtlQueryProcessPlaceholderCompatibilityMode.
///
/// # Safety
/// None beyond running in the process asked about.
#[allow(non_snake_case, reason = "the kernel routine's name")]
pub(crate) unsafe fn RtlQueryProcessPlaceholderCompatibilityMode() -> i8 {
    query_mode(b"RtlQueryProcessPlaceholderCompatibilityMode")
}

/// RtlQueryThreadPlaceholderCompatibilityMode.
///
/// # Safety
/// None beyond running in the thread asked about.
#[allow(non_snake_case, reason = "the kernel routine's name")]
pub(crate) unsafe fn RtlQueryThreadPlaceholderCompatibilityMode() -> i8 {
    query_mode(b"RtlQueryThreadPlaceholderCompatibilityMode")
}

type CreateKey = unsafe extern "system" fn(
    *mut HANDLE,
    u32,
    *const OBJECT_ATTRIBUTES,
    u32,
    *const UNICODE_STRING,
    u32,
    *mut u32,
) -> NTSTATUS;
type SetValueKey = unsafe extern "system" fn(
    HANDLE,
    *const UNICODE_STRING,
    u32,
    u32,
    *const core::ffi::c_void,
    u32,
) -> NTSTATUS;
type DeleteValueKey = unsafe extern "system" fn(HANDLE, *const UNICODE_STRING) -> NTSTATUS;
type EnumerateValueKey =
    unsafe extern "system" fn(HANDLE, u32, i32, *mut core::ffi::c_void, u32, *mut u32) -> NTSTATUS;
type FlushKey = unsafe extern "system" fn(HANDLE) -> NTSTATUS;

/// Looks `name` up and casts it to `F`, or answers STATUS_NOT_IMPLEMENTED.
macro_rules! call {
    ($name:literal as $ty:ty, ($($arg:expr),*)) => {{
        let f = routine($name);
        if f.is_null() {
            return STATUS_NOT_IMPLEMENTED;
        }
        // SAFETY: the ntoskrnl export of this name has this signature (wdm.h).
        let f: $ty = unsafe { core::mem::transmute::<*mut core::ffi::c_void, $ty>(f) };
        // SAFETY: the caller's contract, which is the routine's.
        unsafe { f($($arg),*) }
    }};
}

/// ZwCreateKey (opens the key if it exists).
///
/// # Safety
/// As ZwCreateKey; PASSIVE_LEVEL.
#[allow(non_snake_case, reason = "the kernel routine's name")]
pub(crate) unsafe fn ZwCreateKey(
    handle: *mut HANDLE,
    access: u32,
    attributes: *const OBJECT_ATTRIBUTES,
    disposition: *mut u32,
) -> NTSTATUS {
    call!(
        b"ZwCreateKey" as CreateKey,
        (
            handle,
            access,
            attributes,
            0,
            core::ptr::null(),
            0, // REG_OPTION_NON_VOLATILE
            disposition
        )
    )
}

/// ZwSetValueKey.
///
/// # Safety
/// As ZwSetValueKey; PASSIVE_LEVEL.
#[allow(non_snake_case, reason = "the kernel routine's name")]
pub(crate) unsafe fn ZwSetValueKey(
    key: HANDLE,
    name: *const UNICODE_STRING,
    kind: u32,
    data: *const core::ffi::c_void,
    size: u32,
) -> NTSTATUS {
    call!(
        b"ZwSetValueKey" as SetValueKey,
        (key, name, 0, kind, data, size)
    )
}

/// ZwDeleteValueKey.
///
/// # Safety
/// As ZwDeleteValueKey; PASSIVE_LEVEL.
#[allow(non_snake_case, reason = "the kernel routine's name")]
pub(crate) unsafe fn ZwDeleteValueKey(key: HANDLE, name: *const UNICODE_STRING) -> NTSTATUS {
    call!(b"ZwDeleteValueKey" as DeleteValueKey, (key, name))
}

/// ZwEnumerateValueKey.
///
/// # Safety
/// As ZwEnumerateValueKey; PASSIVE_LEVEL.
#[allow(non_snake_case, reason = "the kernel routine's name")]
pub(crate) unsafe fn ZwEnumerateValueKey(
    key: HANDLE,
    index: u32,
    class: i32,
    buffer: *mut core::ffi::c_void,
    length: u32,
    result: *mut u32,
) -> NTSTATUS {
    call!(
        b"ZwEnumerateValueKey" as EnumerateValueKey,
        (key, index, class, buffer, length, result)
    )
}

/// ZwFlushKey.
///
/// # Safety
/// As ZwFlushKey; PASSIVE_LEVEL.
#[allow(non_snake_case, reason = "the kernel routine's name")]
pub(crate) unsafe fn ZwFlushKey(key: HANDLE) -> NTSTATUS {
    call!(b"ZwFlushKey" as FlushKey, (key))
}
