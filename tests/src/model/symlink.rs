//! Symbolic link objects of the object namespace: ZwOpenSymbolicLinkObject,
//! ZwQuerySymbolicLinkObject and ZwClose, for the links a driver resolves (`\SystemRoot`).
//!
//! The machine boots with `\SystemRoot` naming `\Device\HarddiskVolume1\Windows`; the
//! scenario runner points it at the scenario's system root.

use crate::model::fast::HashMap;

use windows_sys::Wdk::Foundation::OBJECT_ATTRIBUTES;
use windows_sys::Win32::Foundation::{
    HANDLE, NTSTATUS, STATUS_BUFFER_TOO_SMALL, STATUS_INVALID_HANDLE, STATUS_INVALID_PARAMETER,
    STATUS_OBJECT_NAME_NOT_FOUND, STATUS_SUCCESS, UNICODE_STRING,
};

use super::irql::{self, PASSIVE_LEVEL};
use super::with_kernel;

/// The links and the handles open on them.
#[derive(Debug)]
pub(crate) struct Links {
    /// Link name (case-insensitive, stored upper case) → target.
    targets: HashMap<String, String>,
    /// Open handle → link name.
    open: HashMap<isize, String>,
}

impl Default for Links {
    fn default() -> Self {
        let mut targets = HashMap::default();
        targets.insert(
            "\\SYSTEMROOT".to_owned(),
            "\\Device\\HarddiskVolume1\\Windows".to_owned(),
        );
        Self {
            targets,
            open: HashMap::default(),
        }
    }
}

impl super::Machine {
    /// Creates or replaces the symbolic link `name` (an object-namespace path such as
    /// `\SystemRoot`) naming `target`.
    pub fn set_symbolic_link(&self, name: &str, target: &str) {
        with_kernel(|k| {
            k.symlinks
                .targets
                .insert(name.to_uppercase(), target.to_owned())
        });
    }
}

/// ZwOpenSymbolicLinkObject.
///
/// # Safety
/// `handle` writable; `attributes` a valid OBJECT_ATTRIBUTES.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn ZwOpenSymbolicLinkObject(
    handle: *mut HANDLE,
    _access: u32,
    attributes: *const OBJECT_ATTRIBUTES,
) -> NTSTATUS {
    irql::check("ZwOpenSymbolicLinkObject", PASSIVE_LEVEL);
    // SAFETY: the caller's OBJECT_ATTRIBUTES.
    let Some(oa) = (unsafe { attributes.as_ref() }) else {
        return STATUS_INVALID_PARAMETER;
    };
    // SAFETY: the caller's name.
    let Some(name) = (unsafe { oa.ObjectName.as_ref() }) else {
        return STATUS_INVALID_PARAMETER;
    };
    if handle.is_null() || name.Buffer.is_null() || !oa.RootDirectory.is_null() {
        return STATUS_INVALID_PARAMETER;
    }
    // SAFETY: Length bytes at Buffer.
    let units = unsafe { std::slice::from_raw_parts(name.Buffer, usize::from(name.Length) / 2) };
    let name = String::from_utf16_lossy(units).to_uppercase();
    with_kernel(|k| {
        if !k.symlinks.targets.contains_key(&name) {
            return STATUS_OBJECT_NAME_NOT_FOUND;
        }
        let h = k.handle();
        k.symlinks.open.insert(h, name);
        // SAFETY: checked non-null; the caller's out pointer.
        unsafe { handle.write(h as HANDLE) };
        STATUS_SUCCESS
    })
}

/// ZwQuerySymbolicLinkObject: the target into `target`'s buffer (MaximumLength bytes).
///
/// # Safety
/// `target` a valid UNICODE_STRING with a writable buffer; `returned` null or writable.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn ZwQuerySymbolicLinkObject(
    handle: HANDLE,
    target: *mut UNICODE_STRING,
    returned: *mut u32,
) -> NTSTATUS {
    irql::check("ZwQuerySymbolicLinkObject", PASSIVE_LEVEL);
    let link = with_kernel(|k| {
        let name = k.symlinks.open.get(&(handle as isize))?;
        k.symlinks.targets.get(name).cloned()
    });
    let Some(link) = link else {
        return STATUS_INVALID_HANDLE;
    };
    // SAFETY: the caller's string.
    let Some(out) = (unsafe { target.as_mut() }) else {
        return STATUS_INVALID_PARAMETER;
    };
    let units: Vec<u16> = link.encode_utf16().collect();
    let bytes = units.len() * 2;
    if !returned.is_null() {
        // SAFETY: the caller's out pointer.
        unsafe { returned.write(bytes as u32) };
    }
    if bytes > usize::from(out.MaximumLength) || out.Buffer.is_null() {
        return STATUS_BUFFER_TOO_SMALL;
    }
    // SAFETY: the caller's buffer holds MaximumLength >= bytes bytes.
    unsafe { std::ptr::copy_nonoverlapping(units.as_ptr(), out.Buffer, units.len()) };
    out.Length = bytes as u16;
    STATUS_SUCCESS
}

/// ZwClose, for the handles of this module and of registry keys (`registry.rs`).
#[unsafe(no_mangle)]
pub extern "system" fn ZwClose(handle: HANDLE) -> NTSTATUS {
    let known = with_kernel(|k| {
        k.symlinks.open.remove(&(handle as isize)).is_some() || super::registry::close(k, handle)
    });
    if known {
        STATUS_SUCCESS
    } else {
        with_kernel(|k| k.violation("ZwClose", format!("{handle:p} is not an open handle")));
        STATUS_INVALID_HANDLE
    }
}

/// MmGetSystemRoutineAddress: the model's kernel exports a driver looks up by name (those
/// windows-sys attributes to ntdll.dll); NULL for any other name, as for a routine the
/// running kernel lacks.
///
/// # Safety
/// `name` points to a UNICODE_STRING.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn MmGetSystemRoutineAddress(
    name: *const windows_sys::Win32::Foundation::UNICODE_STRING,
) -> *mut std::ffi::c_void {
    super::irql::check("MmGetSystemRoutineAddress", super::irql::PASSIVE_LEVEL);
    // SAFETY: the caller's UNICODE_STRING.
    let Some(name) = (unsafe { name.as_ref() }) else {
        return std::ptr::null_mut();
    };
    if name.Buffer.is_null() {
        return std::ptr::null_mut();
    }
    // SAFETY: Length bytes at Buffer.
    let units = unsafe { std::slice::from_raw_parts(name.Buffer, usize::from(name.Length) / 2) };
    match String::from_utf16_lossy(units).as_str() {
        "ZwClose" => ZwClose as *mut std::ffi::c_void,
        "ZwOpenSymbolicLinkObject" => ZwOpenSymbolicLinkObject as *mut std::ffi::c_void,
        "ZwQuerySymbolicLinkObject" => ZwQuerySymbolicLinkObject as *mut std::ffi::c_void,
        "ZwCreateKey" => super::registry::ZwCreateKey as *mut std::ffi::c_void,
        "ZwOpenKey" => super::registry::ZwOpenKey as *mut std::ffi::c_void,
        "ZwSetValueKey" => super::registry::ZwSetValueKey as *mut std::ffi::c_void,
        "ZwQueryValueKey" => super::registry::ZwQueryValueKey as *mut std::ffi::c_void,
        "ZwEnumerateValueKey" => super::registry::ZwEnumerateValueKey as *mut std::ffi::c_void,
        "ZwDeleteValueKey" => super::registry::ZwDeleteValueKey as *mut std::ffi::c_void,
        "ZwFlushKey" => super::registry::ZwFlushKey as *mut std::ffi::c_void,
        "RtlQueryProcessPlaceholderCompatibilityMode" => {
            super::process::RtlQueryProcessPlaceholderCompatibilityMode as *mut std::ffi::c_void
        }
        "ZwQueryInformationProcess" => {
            super::process::ZwQueryInformationProcess as *mut std::ffi::c_void
        }
        "RtlQueryThreadPlaceholderCompatibilityMode" => {
            super::process::RtlQueryThreadPlaceholderCompatibilityMode as *mut std::ffi::c_void
        }
        _ => std::ptr::null_mut(),
    }
}
