//! Names FltMgr and the kernel give the driver: a file's normalized name (released on
//! drop) and a requesting process's image path (freed on drop).

use windows_sys::Wdk::Foundation::FILE_OBJECT;
use windows_sys::Wdk::Storage::FileSystem::Minifilters::FLT_CALLBACK_DATA;
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FLT_FILE_NAME_INFORMATION, FLT_FILE_NAME_NORMALIZED, FLT_FILE_NAME_OPENED,
    FLT_FILE_NAME_QUERY_DEFAULT, FltGetDestinationFileNameInformation, FltGetFileNameInformation,
    FltGetFileNameInformationUnsafe, FltGetRequestorProcess, FltReleaseFileNameInformation,
    PFLT_INSTANCE,
};
use windows_sys::Wdk::Storage::FileSystem::SeLocateProcessImageName;
use windows_sys::Wdk::System::SystemServices::ExFreePool;
use windows_sys::Win32::Foundation::{HANDLE, NTSTATUS, UNICODE_STRING};

use super::status::nt_success;

/// A file name from FltGetFileNameInformation, released on drop.
pub(crate) struct NameInfo(*mut FLT_FILE_NAME_INFORMATION);

impl NameInfo {
    /// The normalized name of the file `data` targets, or FltMgr's failure. PASSIVE_LEVEL
    /// (a pre-operation or a synchronised post-operation).
    pub(crate) fn normalized(data: *const FLT_CALLBACK_DATA) -> Result<Self, NTSTATUS> {
        Self::get(data, FLT_FILE_NAME_NORMALIZED)
    }

    /// The name the file `data` targets was opened by (FLT_FILE_NAME_OPENED: no
    /// normalization, so it can be had in a pre-create whatever exists yet; short names
    /// are left as they were given). PASSIVE_LEVEL.
    pub(crate) fn opened(data: *const FLT_CALLBACK_DATA) -> Result<Self, NTSTATUS> {
        Self::get(data, FLT_FILE_NAME_OPENED)
    }

    /// The normalized name of a file the driver opened itself (`fo` on `instance`),
    /// outside any operation on it. PASSIVE_LEVEL.
    pub(crate) fn of_file(fo: &super::file::Fo) -> Result<Self, NTSTATUS> {
        let mut name: *mut FLT_FILE_NAME_INFORMATION = core::ptr::null_mut();
        // SAFETY: a referenced file object of an open the driver holds, on `instance`'s
        // volume; PASSIVE_LEVEL; a valid out pointer.
        let status = unsafe {
            FltGetFileNameInformationUnsafe(
                fo.file_object,
                fo.instance,
                FLT_FILE_NAME_NORMALIZED | FLT_FILE_NAME_QUERY_DEFAULT,
                &mut name,
            )
        };
        if !nt_success(status) {
            return Err(status);
        }
        Ok(Self(name))
    }

    fn get(data: *const FLT_CALLBACK_DATA, format: u32) -> Result<Self, NTSTATUS> {
        let mut name: *mut FLT_FILE_NAME_INFORMATION = core::ptr::null_mut();
        // SAFETY: live callback data at PASSIVE_LEVEL (the callers' contract); a valid out
        // pointer.
        let status = unsafe {
            FltGetFileNameInformation(data, format | FLT_FILE_NAME_QUERY_DEFAULT, &mut name)
        };
        if !nt_success(status) {
            return Err(status);
        }
        Ok(Self(name))
    }

    /// The normalized name a rename (or hard link) of `file_object` to `target` (a
    /// FILE_RENAME_INFORMATION's RootDirectory, FileName and FileNameLength) would give
    /// it, or FltMgr's failure. PASSIVE_LEVEL, in the pre-operation.
    pub(crate) fn destination(
        instance: PFLT_INSTANCE,
        file_object: *const FILE_OBJECT,
        root_directory: HANDLE,
        target: *const u16,
        target_bytes: u32,
    ) -> Result<Self, NTSTATUS> {
        let mut name: *mut FLT_FILE_NAME_INFORMATION = core::ptr::null_mut();
        // SAFETY: the live instance and file object of the operation; the caller's name
        // buffer of `target_bytes` bytes (checked by the caller against the request's
        // length); PASSIVE_LEVEL; a valid out pointer.
        let status = unsafe {
            FltGetDestinationFileNameInformation(
                instance,
                file_object,
                root_directory,
                target,
                target_bytes,
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
        Self::of_process(unsafe { FltGetRequestorProcess(data) })
    }

    /// The image path of the process whose thread this is (a management request's
    /// caller, in its MessageNotify). PASSIVE_LEVEL.
    pub(crate) fn of_current() -> Self {
        // SAFETY: no preconditions; the current process, alive while its thread runs.
        Self::of_process(unsafe { windows_sys::Wdk::System::SystemServices::IoGetCurrentProcess() })
    }

    /// The image path of `process` (0: none), empty when it cannot be read.
    fn of_process(process: windows_sys::Wdk::Foundation::PEPROCESS) -> Self {
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

/// ProcessCommandLineInformation: a UNICODE_STRING followed by the text it points to.
const PROCESS_COMMAND_LINE_INFORMATION: i32 = 60;

/// The most of a command line read for a provider (its wire limit).
const MAX_COMMAND_LINE: usize = cloudflt_proto::msg::MAX_COMMAND_LINE_BYTES;

/// A requesting process's command line (REQUIRE_PROCESS_INFO), in pool; freed on drop.
pub(crate) struct CommandLine(Option<(super::file::PoolBuf, usize)>);

impl CommandLine {
    /// The command line of the current process, if it is `pid` (the requesting
    /// process's thread is the one in the pre-operation); empty when it cannot be read
    /// (another process's thread, no pool, a routine the kernel lacks). PASSIVE_LEVEL.
    pub(crate) fn of_current(pid: u32) -> Self {
        // SAFETY: no preconditions.
        let current = unsafe { windows_sys::Wdk::System::SystemServices::PsGetCurrentProcessId() };
        if current as usize != pid as usize {
            return Self(None);
        }
        let header = core::mem::size_of::<UNICODE_STRING>();
        let Some(mut buffer) = super::file::PoolBuf::zeroed(header + MAX_COMMAND_LINE) else {
            return Self(None);
        };
        let mut returned = 0u32;
        let length = u32::try_from(buffer.as_slice().len()).unwrap_or(u32::MAX);
        // SAFETY: our pool buffer of `length` bytes; PASSIVE_LEVEL (the callers'); the
        // current-process pseudo handle.
        let status = unsafe {
            super::ntos::ZwQueryInformationProcess(
                -1isize as windows_sys::Win32::Foundation::HANDLE,
                PROCESS_COMMAND_LINE_INFORMATION,
                buffer.as_mut_slice().as_mut_ptr().cast(),
                length,
                &mut returned,
            )
        };
        if !nt_success(status) {
            return Self(None);
        }
        // The string's text follows its header in the same buffer; only that is taken,
        // by offset, never by the pointer the header holds.
        let bytes = buffer.as_slice();
        let len = match bytes {
            [low, high, ..] => usize::from(u16::from_le_bytes([*low, *high])),
            _ => 0,
        };
        let start = header;
        let end = start.saturating_add(len).min(bytes.len());
        let units = (end - start) / 2;
        // Move the text to the start so that `units()` can read it as u16.
        buffer
            .as_mut_slice()
            .copy_within(start..start + units * 2, 0);
        Self(Some((buffer, units)))
    }

    /// The command line's UTF-16 units (empty when unread).
    pub(crate) fn units(&self) -> &[u16] {
        match &self.0 {
            Some((buffer, units)) => {
                let bytes = buffer.as_slice();
                // SAFETY: pool memory is 16-byte aligned and holds `units` UTF-16 units
                // at its start (moved there above), within the buffer.
                unsafe {
                    core::slice::from_raw_parts(
                        bytes.as_ptr().cast::<u16>(),
                        (*units).min(bytes.len() / 2),
                    )
                }
            }
            None => &[],
        }
    }
}
