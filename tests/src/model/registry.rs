//! The configuration registry, as much of it as a driver's own service key needs:
//! ZwCreateKey, ZwOpenKey, ZwSetValueKey, ZwQueryValueKey, ZwEnumerateValueKey,
//! ZwDeleteValueKey, ZwFlushKey and ZwClose on their handles.
//!
//! The registry belongs to the machine, not to a boot of the driver: it survives driver
//! unload and load and the runner's `reboot`, as the SYSTEM hive does on disk. The machine
//! boots with the keys the INF makes (`…\Services\cloudflt` and its `Parameters`).
//!
//! As Windows has it (ZwCreateKey, ZwQueryValueKey, KEY_VALUE_*_INFORMATION pages):
//! names are case-insensitive and kept in the case they were created with; ZwCreateKey
//! creates one key, never its missing parents (STATUS_OBJECT_NAME_NOT_FOUND), and says
//! whether it created or opened it; a relative name needs a key handle as its
//! RootDirectory; a query whose buffer is shorter than the fixed part answers
//! STATUS_BUFFER_TOO_SMALL, one that holds the fixed part but not the rest
//! STATUS_BUFFER_OVERFLOW with the fixed part filled, both with the length needed; an
//! index past the last value is STATUS_NO_MORE_ENTRIES. Checked as Driver Verifier
//! would: a handle a driver opens must be a kernel handle (OBJ_KERNEL_HANDLE), every
//! call is at PASSIVE_LEVEL, and a handle still open when the driver unloads is a leak.

use crate::model::fast::HashMap;
use std::collections::BTreeMap;

use windows_sys::Wdk::Foundation::OBJECT_ATTRIBUTES;
use windows_sys::Win32::Foundation::{
    HANDLE, NTSTATUS, STATUS_BUFFER_OVERFLOW, STATUS_BUFFER_TOO_SMALL, STATUS_INVALID_HANDLE,
    STATUS_INVALID_PARAMETER, STATUS_NO_MORE_ENTRIES, STATUS_OBJECT_NAME_NOT_FOUND, STATUS_SUCCESS,
    UNICODE_STRING,
};

use super::irql::{self, PASSIVE_LEVEL};
use super::{Kernel, with_kernel};

/// OBJ_KERNEL_HANDLE.
const OBJ_KERNEL_HANDLE: u32 = 0x200;
/// REG_CREATED_NEW_KEY, REG_OPENED_EXISTING_KEY.
pub const REG_CREATED_NEW_KEY: u32 = 1;
pub const REG_OPENED_EXISTING_KEY: u32 = 2;
/// KEY_VALUE_INFORMATION_CLASS values.
pub const KEY_VALUE_BASIC_INFORMATION: i32 = 0;
pub const KEY_VALUE_FULL_INFORMATION: i32 = 1;
pub const KEY_VALUE_PARTIAL_INFORMATION: i32 = 2;

/// The service key the machine boots with (the INF's AddService).
pub const SERVICE_KEY: &str = "\\Registry\\Machine\\System\\CurrentControlSet\\Services\\cloudflt";

#[derive(Debug, Clone)]
struct Value {
    name: String,
    kind: u32,
    data: Vec<u8>,
}

#[derive(Debug, Clone, Default)]
struct Key {
    values: Vec<Value>,
}

/// The keys and the handles open on them.
#[derive(Debug)]
pub(crate) struct Registry {
    /// Key path, upper case → key.
    keys: BTreeMap<String, Key>,
    /// Open handle → key path (upper case).
    open: HashMap<isize, String>,
}

impl Default for Registry {
    fn default() -> Self {
        let mut keys = BTreeMap::new();
        let mut path = String::new();
        for part in SERVICE_KEY.split('\\').skip(1).chain(["Parameters"]) {
            path.push('\\');
            path.push_str(part);
            keys.insert(path.to_uppercase(), Key::default());
        }
        Self {
            keys,
            open: HashMap::default(),
        }
    }
}

impl Registry {
    /// Handles still open (checked when the driver unloads).
    pub(crate) fn open_handles(&self) -> usize {
        self.open.len()
    }
}

impl super::Machine {
    /// The value `name` of the key at `path` (an absolute `\Registry\…` path), if any:
    /// what a test reads to see what a driver stored.
    pub fn registry_value(&self, path: &str, name: &str) -> Option<(u32, Vec<u8>)> {
        with_kernel(|k| {
            let key = k.registry.keys.get(&path.to_uppercase())?;
            key.values
                .iter()
                .find(|v| v.name.eq_ignore_ascii_case(name))
                .map(|v| (v.kind, v.data.clone()))
        })
    }

    /// The names of the values of the key at `path`.
    pub fn registry_values(&self, path: &str) -> Vec<String> {
        with_kernel(|k| {
            k.registry
                .keys
                .get(&path.to_uppercase())
                .map(|key| key.values.iter().map(|v| v.name.clone()).collect())
                .unwrap_or_default()
        })
    }
}

/// The text of a UNICODE_STRING.
///
/// # Safety
/// `s` null or a valid UNICODE_STRING.
unsafe fn text(s: *const UNICODE_STRING) -> Option<String> {
    // SAFETY: the caller's contract.
    let s = unsafe { s.as_ref() }?;
    if s.Buffer.is_null() {
        return (s.Length == 0).then(String::new);
    }
    // SAFETY: Length bytes at Buffer.
    let units = unsafe { std::slice::from_raw_parts(s.Buffer, usize::from(s.Length) / 2) };
    Some(String::from_utf16_lossy(units))
}

/// The key path (upper case) OBJECT_ATTRIBUTES names, checked as the object manager
/// does; `Err` with the status otherwise.
///
/// # Safety
/// `attributes` null or a valid OBJECT_ATTRIBUTES.
unsafe fn key_path(
    k: &mut Kernel,
    api: &'static str,
    attributes: *const OBJECT_ATTRIBUTES,
) -> Result<String, NTSTATUS> {
    // SAFETY: the caller's contract.
    let oa = unsafe { attributes.as_ref() }.ok_or(STATUS_INVALID_PARAMETER)?;
    if oa.Attributes & OBJ_KERNEL_HANDLE == 0 {
        k.violation(
            api,
            "a driver's registry handle without OBJ_KERNEL_HANDLE (it would land in the current process's handle table)".to_owned(),
        );
    }
    // SAFETY: the caller's name.
    let name = unsafe { text(oa.ObjectName) }.ok_or(STATUS_INVALID_PARAMETER)?;
    let full = if oa.RootDirectory.is_null() {
        if !name.starts_with('\\') {
            return Err(STATUS_OBJECT_NAME_NOT_FOUND);
        }
        name
    } else {
        let root = k
            .registry
            .open
            .get(&(oa.RootDirectory as isize))
            .ok_or(STATUS_INVALID_HANDLE)?;
        if name.starts_with('\\') {
            return Err(STATUS_OBJECT_NAME_NOT_FOUND);
        }
        format!("{root}\\{name}")
    };
    let trimmed = full.trim_end_matches('\\');
    if trimmed.split('\\').skip(1).any(str::is_empty) {
        return Err(STATUS_OBJECT_NAME_NOT_FOUND);
    }
    Ok(trimmed.to_uppercase())
}

fn checked_out<T>(p: *mut T) -> Result<*mut T, NTSTATUS> {
    if p.is_null() {
        Err(STATUS_INVALID_PARAMETER)
    } else {
        Ok(p)
    }
}

/// ZwCreateKey.
///
/// # Safety
/// `handle` writable; `attributes` a valid OBJECT_ATTRIBUTES; `disposition` null or
/// writable.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn ZwCreateKey(
    handle: *mut HANDLE,
    _access: u32,
    attributes: *const OBJECT_ATTRIBUTES,
    _title_index: u32,
    _class: *const UNICODE_STRING,
    _options: u32,
    disposition: *mut u32,
) -> NTSTATUS {
    irql::check("ZwCreateKey", PASSIVE_LEVEL);
    let Ok(handle) = checked_out(handle) else {
        return STATUS_INVALID_PARAMETER;
    };
    with_kernel(|k| {
        // SAFETY: the caller's OBJECT_ATTRIBUTES.
        let path = match unsafe { key_path(k, "ZwCreateKey", attributes) } {
            Ok(p) => p,
            Err(status) => return status,
        };
        let created = if k.registry.keys.contains_key(&path) {
            REG_OPENED_EXISTING_KEY
        } else {
            let parent = path.rsplit_once('\\').map_or("", |(p, _)| p);
            if !k.registry.keys.contains_key(parent) {
                return STATUS_OBJECT_NAME_NOT_FOUND;
            }
            k.registry.keys.insert(path.clone(), Key::default());
            REG_CREATED_NEW_KEY
        };
        let h = k.handle();
        k.registry.open.insert(h, path);
        // SAFETY: checked non-null; the caller's out pointers.
        unsafe { handle.write(h as HANDLE) };
        if !disposition.is_null() {
            // SAFETY: as above.
            unsafe { disposition.write(created) };
        }
        STATUS_SUCCESS
    })
}

/// ZwOpenKey.
///
/// # Safety
/// `handle` writable; `attributes` a valid OBJECT_ATTRIBUTES.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn ZwOpenKey(
    handle: *mut HANDLE,
    _access: u32,
    attributes: *const OBJECT_ATTRIBUTES,
) -> NTSTATUS {
    irql::check("ZwOpenKey", PASSIVE_LEVEL);
    let Ok(handle) = checked_out(handle) else {
        return STATUS_INVALID_PARAMETER;
    };
    with_kernel(|k| {
        // SAFETY: the caller's OBJECT_ATTRIBUTES.
        let path = match unsafe { key_path(k, "ZwOpenKey", attributes) } {
            Ok(p) => p,
            Err(status) => return status,
        };
        if !k.registry.keys.contains_key(&path) {
            return STATUS_OBJECT_NAME_NOT_FOUND;
        }
        let h = k.handle();
        k.registry.open.insert(h, path);
        // SAFETY: checked non-null; the caller's out pointer.
        unsafe { handle.write(h as HANDLE) };
        STATUS_SUCCESS
    })
}

/// The key behind an open handle.
fn key_of(k: &mut Kernel, handle: HANDLE) -> Option<&mut Key> {
    let path = k.registry.open.get(&(handle as isize))?.clone();
    k.registry.keys.get_mut(&path)
}

/// ZwSetValueKey.
///
/// # Safety
/// `name` a valid UNICODE_STRING; `data` readable for `size` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn ZwSetValueKey(
    handle: HANDLE,
    name: *const UNICODE_STRING,
    _title_index: u32,
    kind: u32,
    data: *const std::ffi::c_void,
    size: u32,
) -> NTSTATUS {
    irql::check("ZwSetValueKey", PASSIVE_LEVEL);
    // SAFETY: the caller's name.
    let Some(name) = (unsafe { text(name) }) else {
        return STATUS_INVALID_PARAMETER;
    };
    if data.is_null() && size > 0 {
        return STATUS_INVALID_PARAMETER;
    }
    let bytes = if size == 0 {
        Vec::new()
    } else {
        // SAFETY: `size` readable bytes at `data` (the caller's contract).
        unsafe { std::slice::from_raw_parts(data.cast::<u8>(), size as usize) }.to_vec()
    };
    with_kernel(|k| {
        let Some(key) = key_of(k, handle) else {
            return STATUS_INVALID_HANDLE;
        };
        match key
            .values
            .iter_mut()
            .find(|v| v.name.eq_ignore_ascii_case(&name))
        {
            Some(v) => {
                v.kind = kind;
                v.data = bytes;
            }
            None => key.values.push(Value {
                name,
                kind,
                data: bytes,
            }),
        }
        STATUS_SUCCESS
    })
}

/// ZwDeleteValueKey.
///
/// # Safety
/// `name` a valid UNICODE_STRING.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn ZwDeleteValueKey(
    handle: HANDLE,
    name: *const UNICODE_STRING,
) -> NTSTATUS {
    irql::check("ZwDeleteValueKey", PASSIVE_LEVEL);
    // SAFETY: the caller's name.
    let Some(name) = (unsafe { text(name) }) else {
        return STATUS_INVALID_PARAMETER;
    };
    with_kernel(|k| {
        let Some(key) = key_of(k, handle) else {
            return STATUS_INVALID_HANDLE;
        };
        let before = key.values.len();
        key.values.retain(|v| !v.name.eq_ignore_ascii_case(&name));
        if key.values.len() == before {
            STATUS_OBJECT_NAME_NOT_FOUND
        } else {
            STATUS_SUCCESS
        }
    })
}

/// ZwFlushKey: the model's registry is always on its disk.
#[unsafe(no_mangle)]
pub extern "system" fn ZwFlushKey(handle: HANDLE) -> NTSTATUS {
    irql::check("ZwFlushKey", PASSIVE_LEVEL);
    with_kernel(|k| {
        if k.registry.open.contains_key(&(handle as isize)) {
            STATUS_SUCCESS
        } else {
            STATUS_INVALID_HANDLE
        }
    })
}

/// A value's KEY_VALUE_*_INFORMATION, as `class` lays it out: (fixed part, whole).
fn layout(v: &Value, class: i32) -> Option<(usize, Vec<u8>)> {
    let name: Vec<u8> = v.name.encode_utf16().flat_map(u16::to_le_bytes).collect();
    let mut out = Vec::new();
    let fixed = match class {
        KEY_VALUE_BASIC_INFORMATION => {
            // TitleIndex, Type, NameLength, Name[]
            out.extend_from_slice(&0u32.to_le_bytes());
            out.extend_from_slice(&v.kind.to_le_bytes());
            out.extend_from_slice(&(name.len() as u32).to_le_bytes());
            out.extend_from_slice(&name);
            12
        }
        KEY_VALUE_PARTIAL_INFORMATION => {
            // TitleIndex, Type, DataLength, Data[]
            out.extend_from_slice(&0u32.to_le_bytes());
            out.extend_from_slice(&v.kind.to_le_bytes());
            out.extend_from_slice(&(v.data.len() as u32).to_le_bytes());
            out.extend_from_slice(&v.data);
            12
        }
        KEY_VALUE_FULL_INFORMATION => {
            // TitleIndex, Type, DataOffset, DataLength, NameLength, Name[], (aligned) Data[]
            let data_offset = (20 + name.len()).next_multiple_of(8);
            out.extend_from_slice(&0u32.to_le_bytes());
            out.extend_from_slice(&v.kind.to_le_bytes());
            out.extend_from_slice(&(data_offset as u32).to_le_bytes());
            out.extend_from_slice(&(v.data.len() as u32).to_le_bytes());
            out.extend_from_slice(&(name.len() as u32).to_le_bytes());
            out.extend_from_slice(&name);
            out.resize(data_offset, 0);
            out.extend_from_slice(&v.data);
            20
        }
        _ => return None,
    };
    Some((fixed, out))
}

/// Copies `info` into the caller's buffer as ZwQueryValueKey does.
///
/// # Safety
/// `buffer` writable for `length` bytes; `result` null or writable.
unsafe fn answer(
    fixed: usize,
    info: &[u8],
    buffer: *mut std::ffi::c_void,
    length: u32,
    result: *mut u32,
) -> NTSTATUS {
    if !result.is_null() {
        // SAFETY: the caller's out pointer.
        unsafe { result.write(info.len() as u32) };
    }
    let length = length as usize;
    if length < fixed {
        return STATUS_BUFFER_TOO_SMALL;
    }
    if buffer.is_null() {
        return STATUS_INVALID_PARAMETER;
    }
    let n = info.len().min(length);
    // SAFETY: `length` >= n writable bytes at `buffer`.
    unsafe { std::ptr::copy_nonoverlapping(info.as_ptr(), buffer.cast::<u8>(), n) };
    if n < info.len() {
        STATUS_BUFFER_OVERFLOW
    } else {
        STATUS_SUCCESS
    }
}

/// ZwQueryValueKey.
///
/// # Safety
/// `name` a valid UNICODE_STRING; `buffer` writable for `length` bytes; `result` null or
/// writable.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn ZwQueryValueKey(
    handle: HANDLE,
    name: *const UNICODE_STRING,
    class: i32,
    buffer: *mut std::ffi::c_void,
    length: u32,
    result: *mut u32,
) -> NTSTATUS {
    irql::check("ZwQueryValueKey", PASSIVE_LEVEL);
    // SAFETY: the caller's name.
    let Some(name) = (unsafe { text(name) }) else {
        return STATUS_INVALID_PARAMETER;
    };
    let found = with_kernel(|k| {
        let key = key_of(k, handle).ok_or(STATUS_INVALID_HANDLE)?;
        let v = key
            .values
            .iter()
            .find(|v| v.name.eq_ignore_ascii_case(&name))
            .ok_or(STATUS_OBJECT_NAME_NOT_FOUND)?;
        layout(v, class).ok_or(STATUS_INVALID_PARAMETER)
    });
    match found {
        // SAFETY: the caller's buffer and out pointer.
        Ok((fixed, info)) => unsafe { answer(fixed, &info, buffer, length, result) },
        Err(status) => status,
    }
}

/// ZwEnumerateValueKey.
///
/// # Safety
/// `buffer` writable for `length` bytes; `result` null or writable.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn ZwEnumerateValueKey(
    handle: HANDLE,
    index: u32,
    class: i32,
    buffer: *mut std::ffi::c_void,
    length: u32,
    result: *mut u32,
) -> NTSTATUS {
    irql::check("ZwEnumerateValueKey", PASSIVE_LEVEL);
    let found = with_kernel(|k| {
        let key = key_of(k, handle).ok_or(STATUS_INVALID_HANDLE)?;
        let v = key
            .values
            .get(index as usize)
            .ok_or(STATUS_NO_MORE_ENTRIES)?;
        layout(v, class).ok_or(STATUS_INVALID_PARAMETER)
    });
    match found {
        // SAFETY: the caller's buffer and out pointer.
        Ok((fixed, info)) => unsafe { answer(fixed, &info, buffer, length, result) },
        Err(status) => status,
    }
}

/// ZwClose's part for registry handles: `true` if `handle` was one (now closed).
pub(crate) fn close(k: &mut Kernel, handle: HANDLE) -> bool {
    k.registry.open.remove(&(handle as isize)).is_some()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::symlink::ZwClose;
    use crate::model::{Machine, VolumeConfig};

    /// A UNICODE_STRING over its own units.
    struct Name(Vec<u16>);

    impl Name {
        fn new(text: &str) -> Self {
            Self(text.encode_utf16().collect())
        }

        fn unicode(&self) -> UNICODE_STRING {
            UNICODE_STRING {
                Length: (self.0.len() * 2) as u16,
                MaximumLength: (self.0.len() * 2) as u16,
                Buffer: self.0.as_ptr().cast_mut(),
            }
        }
    }

    fn attributes(name: &UNICODE_STRING, root: HANDLE) -> OBJECT_ATTRIBUTES {
        OBJECT_ATTRIBUTES {
            Length: std::mem::size_of::<OBJECT_ATTRIBUTES>() as u32,
            RootDirectory: root,
            ObjectName: name,
            Attributes: OBJ_KERNEL_HANDLE | 0x40, // OBJ_CASE_INSENSITIVE
            SecurityDescriptor: std::ptr::null(),
            SecurityQualityOfService: std::ptr::null(),
        }
    }

    fn open(path: &str, root: HANDLE) -> Result<HANDLE, NTSTATUS> {
        let name = Name::new(path);
        let unicode = name.unicode();
        let mut h: HANDLE = std::ptr::null_mut();
        // SAFETY: valid arguments living across the call.
        let status = unsafe { ZwOpenKey(&mut h, 0, &attributes(&unicode, root)) };
        if status == STATUS_SUCCESS {
            Ok(h)
        } else {
            Err(status)
        }
    }

    fn create(path: &str, root: HANDLE) -> Result<(HANDLE, u32), NTSTATUS> {
        let name = Name::new(path);
        let unicode = name.unicode();
        let mut h: HANDLE = std::ptr::null_mut();
        let mut disposition = 0;
        // SAFETY: valid arguments living across the call.
        let status = unsafe {
            ZwCreateKey(
                &mut h,
                0,
                &attributes(&unicode, root),
                0,
                std::ptr::null(),
                0,
                &mut disposition,
            )
        };
        if status == STATUS_SUCCESS {
            Ok((h, disposition))
        } else {
            Err(status)
        }
    }

    fn set(h: HANDLE, value: &str, data: &[u8]) -> NTSTATUS {
        let name = Name::new(value);
        // SAFETY: valid arguments living across the call.
        unsafe {
            ZwSetValueKey(
                h,
                &name.unicode(),
                0,
                3,
                data.as_ptr().cast(),
                data.len() as u32,
            )
        }
    }

    fn delete(h: HANDLE, value: &str) -> NTSTATUS {
        let name = Name::new(value);
        // SAFETY: valid arguments living across the call.
        unsafe { ZwDeleteValueKey(h, &name.unicode()) }
    }

    fn query(h: HANDLE, value: &str, length: usize) -> (NTSTATUS, u32, Vec<u8>) {
        let name = Name::new(value);
        let mut buffer = vec![0u8; length.max(1)];
        let mut needed = 0;
        // SAFETY: `length` writable bytes; valid arguments living across the call.
        let status = unsafe {
            ZwQueryValueKey(
                h,
                &name.unicode(),
                KEY_VALUE_PARTIAL_INFORMATION,
                buffer.as_mut_ptr().cast(),
                length as u32,
                &mut needed,
            )
        };
        (status, needed, buffer)
    }

    fn enumerate(h: HANDLE, index: u32) -> NTSTATUS {
        let mut buffer = [0u8; 64];
        let mut needed = 0;
        // SAFETY: 64 writable bytes; valid out pointer.
        unsafe {
            ZwEnumerateValueKey(
                h,
                index,
                KEY_VALUE_FULL_INFORMATION,
                buffer.as_mut_ptr().cast(),
                64,
                &mut needed,
            )
        }
    }

    #[test]
    fn keys_and_values_behave_as_the_registry_does() {
        let mut machine = Machine::boot(&[VolumeConfig::ntfs(1)]);
        let params = open(&format!("{SERVICE_KEY}\\parameters"), std::ptr::null_mut())
            .expect("the INF's Parameters key");
        // A key under a missing parent is not created; a relative name needs a root.
        assert_eq!(
            create("Missing\\Roots", params),
            Err(STATUS_OBJECT_NAME_NOT_FOUND)
        );
        assert_eq!(
            create("SyncRoots", std::ptr::null_mut()),
            Err(STATUS_OBJECT_NAME_NOT_FOUND)
        );
        let (h, disposition) = create("SyncRoots", params).expect("created");
        assert_eq!(disposition, REG_CREATED_NEW_KEY);
        let data = [1u8, 2, 3, 4, 5];
        assert_eq!(set(h, "Root1", &data), STATUS_SUCCESS);
        // Too short for the fixed part, then for the data, then enough.
        assert_eq!(query(h, "root1", 8).0, STATUS_BUFFER_TOO_SMALL);
        assert_eq!(query(h, "root1", 8).1, 17);
        let (status, _, partial) = query(h, "ROOT1", 14);
        assert_eq!(status, STATUS_BUFFER_OVERFLOW);
        assert_eq!(&partial[8..12], &5u32.to_le_bytes());
        let (status, _, whole) = query(h, "Root1", 64);
        assert_eq!(status, STATUS_SUCCESS);
        assert_eq!(&whole[12..17], &data);
        assert_eq!(query(h, "Root2", 64).0, STATUS_OBJECT_NAME_NOT_FOUND);
        assert_eq!(enumerate(h, 0), STATUS_SUCCESS);
        assert_eq!(enumerate(h, 1), STATUS_NO_MORE_ENTRIES);
        assert_eq!(delete(h, "Root1"), STATUS_SUCCESS);
        assert_eq!(delete(h, "Root1"), STATUS_OBJECT_NAME_NOT_FOUND);
        assert_eq!(set(h, "Root1", &data), STATUS_SUCCESS);
        let (again, disposition) = create("syncroots", params).expect("opened");
        assert_eq!(disposition, REG_OPENED_EXISTING_KEY);
        for handle in [h, again, params] {
            assert_eq!(ZwClose(handle), STATUS_SUCCESS);
        }
        // The machine keeps it, in the case it was written.
        assert_eq!(
            machine.registry_values(&format!("{SERVICE_KEY}\\Parameters\\SyncRoots")),
            ["Root1"]
        );
        assert_eq!(
            machine
                .registry_value(&format!("{SERVICE_KEY}\\Parameters\\syncroots"), "root1")
                .map(|(kind, data)| (kind, data.len())),
            Some((3, 5))
        );
        machine.assert_clean();
    }
}
