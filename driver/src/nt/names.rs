//! Names FltMgr and the kernel give the driver: a file's normalized name (released on
//! drop) and a requesting process's image path (freed on drop).

use windows_sys::Wdk::Storage::FileSystem::Minifilters::FLT_CALLBACK_DATA;
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FLT_FILE_NAME_INFORMATION, FLT_FILE_NAME_NORMALIZED, FLT_FILE_NAME_QUERY_DEFAULT,
    FltGetFileNameInformation, FltGetRequestorProcess, FltReleaseFileNameInformation,
};
use windows_sys::Wdk::Storage::FileSystem::SeLocateProcessImageName;
use windows_sys::Wdk::System::SystemServices::ExFreePool;
use windows_sys::Win32::Foundation::{NTSTATUS, UNICODE_STRING};

use super::status::nt_success;

/// A file name from FltGetFileNameInformation, released on drop.
pub(crate) struct NameInfo(*mut FLT_FILE_NAME_INFORMATION);

impl NameInfo {
    /// The normalized name of the file `data` targets, or FltMgr's failure. PASSIVE_LEVEL
    /// (a pre-operation or a synchronised post-operation).
    pub(crate) fn normalized(data: *const FLT_CALLBACK_DATA) -> Result<Self, NTSTATUS> {
        let mut name: *mut FLT_FILE_NAME_INFORMATION = core::ptr::null_mut();
        // SAFETY: live callback data at PASSIVE_LEVEL (the callers' contract); a valid out
        // pointer.
        let status = unsafe {
            FltGetFileNameInformation(
                data,
                FLT_FILE_NAME_NORMALIZED | FLT_FILE_NAME_QUERY_DEFAULT,
                &mut name,
            )
        };
        if !nt_success(status) {
            return Err(status);
        }
        Ok(Self(name))
    }

    pub(crate) fn units(&self) -> &[u16] {
        // SAFETY: a referenced name information structure.
        let Some(info) = (unsafe { self.0.as_ref() }) else {
            return &[];
        };
        unicode_units(&info.Name)
    }
}

impl Drop for NameInfo {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: the reference FltGetFileNameInformation gave, released once.
            unsafe { FltReleaseFileNameInformation(self.0) };
        }
    }
}

fn unicode_units(s: &UNICODE_STRING) -> &[u16] {
    if s.Buffer.is_null() {
        return &[];
    }
    // SAFETY: Length bytes at Buffer, per UNICODE_STRING.
    unsafe { core::slice::from_raw_parts(s.Buffer, usize::from(s.Length) / 2) }
}

/// The requesting process's image path, for the provider; freed on drop.
pub(crate) struct ImageName(*mut UNICODE_STRING);

impl ImageName {
    pub(crate) fn of(data: *const FLT_CALLBACK_DATA) -> Self {
        // SAFETY: live callback data.
        let process = unsafe { FltGetRequestorProcess(data) };
        if process == 0 {
            return Self(core::ptr::null_mut());
        }
        let mut name: *mut UNICODE_STRING = core::ptr::null_mut();
        // SAFETY: a live process object; PASSIVE_LEVEL; a valid out pointer.
        let status = unsafe { SeLocateProcessImageName(process, &mut name) };
        if nt_success(status) {
            Self(name)
        } else {
            Self(core::ptr::null_mut())
        }
    }

    pub(crate) fn units(&self) -> &[u16] {
        // SAFETY: the string SeLocateProcessImageName allocated.
        match unsafe { self.0.as_ref() } {
            Some(s) => unicode_units(s),
            None => &[],
        }
    }
}

impl Drop for ImageName {
    fn drop(&mut self) {
        if !self.0.is_null() {
            // SAFETY: SeLocateProcessImageName's allocation; the caller frees it.
            unsafe { ExFreePool(self.0.cast()) };
        }
    }
}
