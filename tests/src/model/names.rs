//! File name information: FltGetFileNameInformation(Unsafe), FltParseFileNameInformation,
//! FltReferenceFileNameInformation, FltReleaseFileNameInformation.
//!
//! Owns: every FLT_FILE_NAME_INFORMATION handed out, with its reference count. Each is
//! one FltMgr-owned pool block (structure, then the name), so a leak shows at unload with
//! the rest of the pool, and a release too many is a violation.
//!
//! Names are `\Device\HarddiskVolumeN\dir\file.ext`: normalized names take the case
//! NTFS stored for each existing component; opened names are what the caller opened.

use crate::model::fast::HashMap;

use cloudflt_driver::nt::layout::FLT_IO_PARAMETER_BLOCK;
use windows_sys::Wdk::Foundation::FILE_OBJECT;
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FLT_CALLBACK_DATA, FLT_FILE_NAME_INFORMATION, FLT_FILE_NAME_NORMALIZED, FLT_FILE_NAME_OPENED,
    PFLT_INSTANCE,
};
use windows_sys::Win32::Foundation::{
    NTSTATUS, STATUS_FLT_INVALID_NAME_REQUEST, STATUS_INSUFFICIENT_RESOURCES,
    STATUS_INVALID_PARAMETER, STATUS_NOT_SUPPORTED, STATUS_SUCCESS, UNICODE_STRING,
};

use super::io::{irp, major};
use super::irql::{self, APC_LEVEL};
use super::pool::Owner;
use super::with_kernel;

/// Pool tag FltMgr uses for name information.
const TAG: [u8; 4] = *b"FMfn";
/// The owner string pool leak reports show for these blocks.
pub(crate) const OWNER: &str = "file name information";

#[derive(Default)]
pub(crate) struct Names {
    /// Live name information blocks and their reference counts.
    pub(crate) refs: HashMap<usize, usize>,
}

const FLTFL_FILE_NAME_PARSED_FINAL_COMPONENT: u16 = 0x1;
const FLTFL_FILE_NAME_PARSED_EXTENSION: u16 = 0x2;
const FLTFL_FILE_NAME_PARSED_STREAM: u16 = 0x4;
const FLTFL_FILE_NAME_PARSED_PARENT_DIR: u16 = 0x8;

/// The name of an open file object, or of what a create names.
fn name_of(fo: *const FILE_OBJECT, format: u32) -> Option<String> {
    with_kernel(|k| {
        let f = k.io.files.get(&(fo as usize))?;
        let v = k.volumes.iter().find(|v| v.handle == f.volume)?;
        let device = v.config.device_name.clone();
        let by_id = f.options & super::files::FILE_OPEN_BY_FILE_ID != 0;
        let rel = match f.file {
            // An open file's name is the name it came through (one of several for a
            // file with hard links).
            Some(id) if format == FLT_FILE_NAME_NORMALIZED || by_id => f
                .open
                .and_then(|open| v.fs.path_of_open(open))
                .or_else(|| v.fs.path_of(id))?,
            // Opened by id, FileName holds the id, not a name: an open file has the name
            // the file system reports for it (above; NTFS answers FileNameInformation on
            // an open by id with the file's path, maharmstone/btrfs src/tests/create.cpp
            // "Check filename"). Before the file system opened it, FltMgr would have to
            // open the id itself; the model does not, and says so.
            None if by_id => {
                k.violation(
                    "FltGetFileNameInformation",
                    "the name of a create by file id before the file system opened it is not modelled",
                );
                return None;
            }
            _ => {
                // SAFETY: a live file object; FileName is the model's or a filter's.
                let name = unsafe { &(*fo).FileName };
                let opened = if name.Buffer.is_null() {
                    String::new()
                } else {
                    // SAFETY: Length bytes at Buffer.
                    let units = unsafe {
                        std::slice::from_raw_parts(name.Buffer, usize::from(name.Length) / 2)
                    };
                    String::from_utf16_lossy(units)
                };
                // Relative to a RootDirectory: FltMgr names it from that directory's name.
                // SAFETY: a live file object; RelatedFileObject is valid during its create.
                let related = unsafe { (*fo).RelatedFileObject } as usize;
                let opened = match (related != 0)
                    .then(|| k.io.files.get(&related)?.open)
                    .flatten()
                    .and_then(|open| v.fs.path_of_open(open))
                {
                    Some(base) => format!("{}\\{opened}", base.trim_end_matches('\\')),
                    None => opened,
                };
                if format != FLT_FILE_NAME_NORMALIZED {
                    opened
                } else if let Some(normalized) = v.fs.normalize(&opened) {
                    normalized
                } else {
                    // Not there yet (pre-create of a new file): normalize the parent.
                    let (parent, last) = opened.rsplit_once('\\')?;
                    let parent = if parent.is_empty() { "\\" } else { parent };
                    let p = v.fs.lookup(parent).and_then(|id| v.fs.path_of(id))?;
                    format!("{}\\{last}", p.trim_end_matches('\\'))
                }
            }
        };
        let rel = if rel.is_empty() {
            "\\".to_string()
        } else {
            rel
        };
        Some(format!("{device}{rel}"))
    })
}

fn allocate(name: &str, volume_chars: usize) -> Result<*mut FLT_FILE_NAME_INFORMATION, NTSTATUS> {
    let units: Vec<u16> = name.encode_utf16().collect();
    let header = std::mem::size_of::<FLT_FILE_NAME_INFORMATION>();
    let size = header + units.len() * 2;
    let block = with_kernel(|k| {
        k.pool
            .allocate(size, u32::from_le_bytes(TAG), Owner::FltMgr(OWNER))
    })
    .ok_or(STATUS_INSUFFICIENT_RESOURCES)?;
    // SAFETY: the block holds the header then the name.
    let text = unsafe { block.add(header) }.cast::<u16>();
    // SAFETY: as above; no overlap.
    unsafe { std::ptr::copy_nonoverlapping(units.as_ptr(), text, units.len()) };
    let whole = UNICODE_STRING {
        Length: (units.len() * 2) as u16,
        MaximumLength: (units.len() * 2) as u16,
        Buffer: text,
    };
    let volume = UNICODE_STRING {
        Length: (volume_chars * 2) as u16,
        MaximumLength: (volume_chars * 2) as u16,
        Buffer: text,
    };
    let info = FLT_FILE_NAME_INFORMATION {
        Size: header as u16,
        NamesParsed: 0,
        Format: 0,
        Name: whole,
        Volume: volume,
        ..Default::default()
    };
    let info_ptr = block.cast::<FLT_FILE_NAME_INFORMATION>();
    // SAFETY: the block is 16-byte aligned and large enough.
    unsafe { info_ptr.write(info) };
    with_kernel(|k| k.names.refs.insert(info_ptr as usize, 1));
    Ok(info_ptr)
}

fn get(
    api: &'static str,
    fo: *const FILE_OBJECT,
    options: u32,
    out: *mut *mut FLT_FILE_NAME_INFORMATION,
    paging: bool,
) -> NTSTATUS {
    irql::check(api, APC_LEVEL);
    if out.is_null() {
        return STATUS_INVALID_PARAMETER;
    }
    let format = options & 0xff;
    if format != FLT_FILE_NAME_NORMALIZED && format != FLT_FILE_NAME_OPENED {
        // Short names are not kept by the model's NTFS.
        return STATUS_NOT_SUPPORTED;
    }
    let method = options & 0xff00;
    // A name query from the paging path may deadlock on the file system's locks; FltMgr
    // refuses anything but a cache lookup there.
    if paging && method != 0x200 {
        return STATUS_FLT_INVALID_NAME_REQUEST;
    }
    let Some(name) = name_of(fo, format) else {
        return STATUS_INVALID_PARAMETER;
    };
    let volume_chars = name
        .match_indices('\\')
        .nth(2)
        .map_or(name.len(), |(i, _)| i);
    match allocate(&name, volume_chars) {
        Ok(info) => {
            // SAFETY: just allocated.
            unsafe { (*info).Format = format };
            // SAFETY: checked non-null above.
            unsafe { out.write(info) };
            STATUS_SUCCESS
        }
        Err(status) => status,
    }
}

/// FltGetFileNameInformation.
///
/// # Safety
/// `data` must be a live callback data; `out` writable.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn FltGetFileNameInformation(
    data: *const FLT_CALLBACK_DATA,
    options: u32,
    out: *mut *mut FLT_FILE_NAME_INFORMATION,
) -> NTSTATUS {
    let live = with_kernel(|k| k.io.ops.contains_key(&(data as usize)));
    if !live {
        with_kernel(|k| {
            k.violation(
                "FltGetFileNameInformation",
                format!("{data:p} is not the callback data of a live operation"),
            )
        });
        return STATUS_INVALID_PARAMETER;
    }
    // SAFETY: a live callback data (checked above).
    let iopb = unsafe { (*data).Iopb }.cast::<FLT_IO_PARAMETER_BLOCK>();
    // SAFETY: its Iopb lives in the same allocation.
    let iopb = unsafe { &*iopb };
    let paging = iopb.IrpFlags & irp::PAGING_IO != 0
        && (iopb.MajorFunction == major::READ || iopb.MajorFunction == major::WRITE);
    get(
        "FltGetFileNameInformation",
        iopb.TargetFileObject,
        options,
        out,
        paging,
    )
}

/// FltGetFileNameInformationUnsafe.
///
/// # Safety
/// `fo` must be a live file object; `out` writable.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn FltGetFileNameInformationUnsafe(
    fo: *const FILE_OBJECT,
    _instance: PFLT_INSTANCE,
    options: u32,
    out: *mut *mut FLT_FILE_NAME_INFORMATION,
) -> NTSTATUS {
    let live = with_kernel(|k| k.io.files.contains_key(&(fo as usize)));
    if !live {
        return STATUS_INVALID_PARAMETER;
    }
    get("FltGetFileNameInformationUnsafe", fo, options, out, false)
}

/// FltGetDestinationFileNameInformation: the name a rename or hard link of `fo` would
/// give it, from the FILE_RENAME_INFORMATION / FILE_LINK_INFORMATION target. The model
/// takes full targets (`\??\C:\…`, `C:\…`, `\Device\…`) as its NtSetInformationFile
/// does; a target relative to a RootDirectory handle is not modelled (a violation). The
/// normalized name takes the case NTFS stored for the existing parent components and
/// the last component as given; a parent that does not exist is
/// STATUS_OBJECT_PATH_NOT_FOUND, as FltMgr's normalization reports it.
///
/// # Safety
/// `fo` must be a live file object; `name` `length` bytes of UTF-16; `out` writable.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn FltGetDestinationFileNameInformation(
    _instance: PFLT_INSTANCE,
    fo: *const FILE_OBJECT,
    root_directory: windows_sys::Win32::Foundation::HANDLE,
    name: *const u16,
    length: u32,
    options: u32,
    out: *mut *mut FLT_FILE_NAME_INFORMATION,
) -> NTSTATUS {
    irql::check("FltGetDestinationFileNameInformation", APC_LEVEL);
    let live = with_kernel(|k| k.io.files.contains_key(&(fo as usize)));
    if !live || out.is_null() || (name.is_null() && length > 0) {
        return STATUS_INVALID_PARAMETER;
    }
    if !root_directory.is_null() {
        with_kernel(|k| {
            k.violation(
                "FltGetDestinationFileNameInformation",
                "a target relative to a RootDirectory handle is not modelled",
            )
        });
        return STATUS_NOT_SUPPORTED;
    }
    let format = options & 0xff;
    if format != FLT_FILE_NAME_NORMALIZED && format != FLT_FILE_NAME_OPENED {
        return STATUS_NOT_SUPPORTED;
    }
    // SAFETY: `length` bytes of UTF-16 at `name` (the caller's contract).
    let units = unsafe { std::slice::from_raw_parts(name, length as usize / 2) };
    let target = String::from_utf16_lossy(units);
    let Ok((volume, rel)) = super::files::resolve(&target) else {
        return windows_sys::Win32::Foundation::STATUS_OBJECT_NAME_INVALID;
    };
    let full = with_kernel(|k| {
        let v = k.volumes.iter().find(|v| v.handle == volume)?;
        let device = v.config.device_name.clone();
        let (parent, last) = rel.rsplit_once('\\')?;
        let parent = if parent.is_empty() { "\\" } else { parent };
        let parent = if format == FLT_FILE_NAME_NORMALIZED {
            v.fs.lookup(parent).and_then(|id| v.fs.path_of(id))?
        } else {
            parent.to_string()
        };
        let joined = if parent.ends_with('\\') {
            format!("{parent}{last}")
        } else {
            format!("{parent}\\{last}")
        };
        Some(format!("{device}{joined}"))
    });
    let Some(full) = full else {
        return windows_sys::Win32::Foundation::STATUS_OBJECT_PATH_NOT_FOUND;
    };
    let volume_chars = full
        .match_indices('\\')
        .nth(2)
        .map_or(full.len(), |(i, _)| i);
    match allocate(&full, volume_chars) {
        Ok(info) => {
            // SAFETY: just allocated.
            unsafe { (*info).Format = format };
            // SAFETY: checked non-null above.
            unsafe { out.write(info) };
            STATUS_SUCCESS
        }
        Err(status) => status,
    }
}

fn known(api: &'static str, info: *const FLT_FILE_NAME_INFORMATION) -> bool {
    with_kernel(|k| {
        if k.names.refs.contains_key(&(info as usize)) {
            true
        } else {
            k.violation(
                api,
                format!("{info:p} is not live file name information (released too often?)"),
            );
            false
        }
    })
}

/// FltReferenceFileNameInformation.
#[unsafe(no_mangle)]
pub extern "system" fn FltReferenceFileNameInformation(info: *const FLT_FILE_NAME_INFORMATION) {
    irql::check("FltReferenceFileNameInformation", APC_LEVEL);
    if known("FltReferenceFileNameInformation", info) {
        with_kernel(|k| {
            if let Some(r) = k.names.refs.get_mut(&(info as usize)) {
                *r += 1;
            }
        });
    }
}

/// FltReleaseFileNameInformation.
#[unsafe(no_mangle)]
pub extern "system" fn FltReleaseFileNameInformation(info: *const FLT_FILE_NAME_INFORMATION) {
    irql::check("FltReleaseFileNameInformation", APC_LEVEL);
    if !known("FltReleaseFileNameInformation", info) {
        return;
    }
    with_kernel(|k| {
        let addr = info as usize;
        let last = match k.names.refs.get_mut(&addr) {
            Some(r) => {
                *r -= 1;
                *r == 0
            }
            None => false,
        };
        if last {
            k.names.refs.remove(&addr);
            if let Err(message) = k.pool.free(addr as *mut u8, None, Owner::FltMgr(OWNER)) {
                k.violation("FltReleaseFileNameInformation", message);
            }
        }
    });
}

/// FltParseFileNameInformation: fills ParentDir, FinalComponent, Extension, Stream.
///
/// # Safety
/// `info` must be live name information.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn FltParseFileNameInformation(
    info: *mut FLT_FILE_NAME_INFORMATION,
) -> NTSTATUS {
    irql::check("FltParseFileNameInformation", APC_LEVEL);
    if !known("FltParseFileNameInformation", info) {
        return STATUS_INVALID_PARAMETER;
    }
    // SAFETY: live name information owned by the model; the driver holds a reference.
    let n = unsafe { &mut *info };
    let len = usize::from(n.Name.Length) / 2;
    // SAFETY: Name describes `len` units in the same block.
    let units = unsafe { std::slice::from_raw_parts(n.Name.Buffer, len) };
    let volume = usize::from(n.Volume.Length) / 2;
    let sub = |from: usize, to: usize| UNICODE_STRING {
        Length: ((to - from) * 2) as u16,
        MaximumLength: ((to - from) * 2) as u16,
        // SAFETY: `from` <= len, within the block.
        Buffer: unsafe { n.Name.Buffer.add(from) },
    };
    let last_slash = units
        .iter()
        .rposition(|&u| u == u16::from(b'\\'))
        .unwrap_or(volume);
    let final_start = (last_slash + 1).min(len);
    let stream_start = units[final_start..]
        .iter()
        .position(|&u| u == u16::from(b':'))
        .map_or(len, |p| final_start + p);
    let ext_start = units[final_start..stream_start]
        .iter()
        .rposition(|&u| u == u16::from(b'.'))
        .map_or(stream_start, |p| final_start + p + 1);
    n.ParentDir = sub(volume, final_start);
    n.FinalComponent = sub(final_start, len);
    n.Extension = sub(ext_start, stream_start);
    n.Stream = sub(stream_start, len);
    n.Share = sub(volume, volume);
    n.NamesParsed = FLTFL_FILE_NAME_PARSED_FINAL_COMPONENT
        | FLTFL_FILE_NAME_PARSED_EXTENSION
        | FLTFL_FILE_NAME_PARSED_STREAM
        | FLTFL_FILE_NAME_PARSED_PARENT_DIR;
    STATUS_SUCCESS
}
