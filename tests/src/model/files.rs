//! The I/O manager's side of files: handles, file objects, streams and their caches, and
//! the file system requests that reach NTFS once every filter has had its say.
//!
//! Owns: the handle table (user and kernel handles to file objects), every FILE_OBJECT
//! the model created (its memory, references, which NTFS open it is), streams (the
//! file objects sharing one file, FltMgr's stream contexts, the cache manager's pages),
//! and the user-mode entry points tests and scenarios call ([`create`], [`read`], …):
//! each runs in the calling thread's process (see `process::run_as`), as an NtXxx call
//! would.
//!
//! Cached reads behave like the cache manager: pages not yet cached are paged in by
//! paging reads that go through every filter again, at APC_LEVEL. Non-cached I/O must be
//! sector aligned.

use crate::model::fast::HashMap;
use std::collections::BTreeMap;
use std::ffi::c_void;

use cloudflt_driver::nt::layout::{
    AcquireForSectionSynchronizationParameters, FLT_PARAMETERS, NetworkQueryOpenParameters,
};
use windows_sys::Wdk::Foundation::{FILE_OBJECT, IO_SECURITY_CONTEXT};
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{PFLT_INSTANCE, PFLT_VOLUME};
use windows_sys::Wdk::Storage::FileSystem::SyncTypeCreateSection;
use windows_sys::Win32::Foundation::{
    NTSTATUS, STATUS_ACCESS_DENIED, STATUS_ACCESS_VIOLATION, STATUS_END_OF_FILE,
    STATUS_INVALID_DEVICE_REQUEST, STATUS_INVALID_HANDLE, STATUS_INVALID_PARAMETER,
    STATUS_IO_REPARSE_TAG_NOT_HANDLED, STATUS_OBJECT_NAME_INVALID, STATUS_OBJECT_PATH_NOT_FOUND,
    STATUS_REPARSE, STATUS_SUCCESS, UNICODE_STRING,
};

use super::cache::{self, Writer};
use super::io::{self, Cbd, Completion, FsCall, Kind, OpState, Request, irp, major};
use super::irql::{APC_LEVEL, PASSIVE_LEVEL};
use super::ntfs::{CreateOutcome, CreateRequest, FileId, OpenId};
use super::process;
use super::with_kernel;

/// Page size of the cache manager and the memory manager.
pub const PAGE: u64 = 4096;

/// `FO_SYNCHRONOUS_IO`, `FO_NO_INTERMEDIATE_BUFFERING`, `FO_CLEANUP_COMPLETE`,
/// `FO_HANDLE_CREATED`.
const FO_SYNCHRONOUS_IO: u32 = 0x2;
const FO_NO_INTERMEDIATE_BUFFERING: u32 = 0x8;
const FO_CLEANUP_COMPLETE: u32 = 0x4000;
const FO_HANDLE_CREATED: u32 = 0x0004_0000;
/// `FILE_OPEN_BY_FILE_ID`: the create's file name is a binary file id.
pub(crate) const FILE_OPEN_BY_FILE_ID: u32 = 0x2000;
/// `FILE_SYNCHRONOUS_IO_ALERT | FILE_SYNCHRONOUS_IO_NONALERT`.
const FILE_SYNCHRONOUS_IO: u32 = 0x30;
const FILE_NO_INTERMEDIATE_BUFFERING: u32 = 0x8;
/// FILE_READ_DATA, FILE_WRITE_DATA, FILE_APPEND_DATA, FILE_LIST_DIRECTORY.
const FILE_READ_DATA: u32 = 0x1;
const FILE_WRITE_DATA: u32 = 0x2;
const FILE_APPEND_DATA: u32 = 0x4;
/// `DELETE`.
const DELETE: u32 = 0x0001_0000;
/// FsContext values (the file system's SCB) the model hands out start here.
const SCB_BASE: usize = 0x7e5b_0000_0000;
/// `IO_REPARSE_TAG_MOUNT_POINT`, `IO_REPARSE_TAG_SYMLINK`.
const TAG_MOUNT_POINT: u32 = 0xA000_0003;
const TAG_SYMLINK: u32 = 0xA000_000C;
/// How many reparses the I/O manager follows before it gives up (IO_MAX_REPARSE).
const MAX_REPARSE: usize = 63;

/// IoStatus.Information of a create that replaced the file's data (wdm.h).
const FILE_SUPERSEDED: usize = 0;
const FILE_OVERWRITTEN: usize = 3;

/// A handle as NtCreateFile returns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Handle(pub isize);

/// NtCreateFile's parameters.
#[derive(Debug, Clone, Copy)]
pub struct OpenParams {
    /// Desired access (file-specific rights; generic rights already mapped).
    pub access: u32,
    /// `FILE_SHARE_*`.
    pub share: u32,
    /// `FILE_OPEN`, `FILE_CREATE`, ….
    pub disposition: u32,
    /// Create options.
    pub options: u32,
    /// Attributes of a new file.
    pub attributes: u32,
}

impl Default for OpenParams {
    /// What CreateFileW(GENERIC_READ, share all, OPEN_EXISTING) sends.
    fn default() -> Self {
        Self {
            access: 0x0012_0089,
            share: 0x7,
            disposition: 1,
            options: 0x20 | 0x40,
            attributes: 0x80,
        }
    }
}

impl OpenParams {
    /// GENERIC_READ | GENERIC_WRITE, share all, `disposition`.
    pub fn read_write(disposition: u32) -> Self {
        Self {
            access: 0x0012_019F,
            disposition,
            ..Self::default()
        }
    }
}

/// How a read reaches the file system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoMode {
    /// Through the cache manager (fast I/O first once the file is cached).
    Cached,
    /// Non-cached: sector aligned, straight to the file system.
    NonCached,
    /// A paging read, as a page fault issues it.
    Paging,
    /// A mapped view: section creation (AcquireForSectionSynchronization), then page-in.
    Mapped,
}

pub(crate) struct FileObj {
    pub(crate) volume: PFLT_VOLUME,
    /// Backing store of FILE_OBJECT.FileName, which points into it.
    _name: Box<[u16]>,
    pub(crate) open: Option<OpenId>,
    pub(crate) file: Option<FileId>,
    /// Object references: the create IRP's, one per handle, ObReferenceObject's.
    pub(crate) refs: usize,
    pub(crate) handles: usize,
    pub(crate) access: u32,
    pub(crate) options: u32,
    /// Opened by a filter (FltCreateFileEx2) on this instance.
    pub(crate) instance: Option<PFLT_INSTANCE>,
    /// FltMgr's stream-handle contexts on this file object.
    pub(crate) handle_contexts: Vec<(PFLT_INSTANCE, usize)>,
    /// The cache manager has been set up for it (after its first cached read).
    cache_map: bool,
    /// Where the last cached read through it ended: a read starting there is sequential,
    /// and the cache manager reads ahead of it.
    last_read_end: Option<u64>,
    /// References the driver took (FltCreateFileEx2's file object, ObReferenceObject).
    pub(crate) driver_refs: usize,
}

pub(crate) struct Stream {
    pub(crate) scb: usize,
    pub(crate) file_objects: usize,
    /// FltMgr's stream contexts on this stream.
    pub(crate) contexts: Vec<(PFLT_INSTANCE, usize)>,
    /// The cache manager's pages of this stream (shared with mapped views: one data
    /// section per stream).
    pub(crate) pages: BTreeMap<u64, Vec<u8>>,
    /// Pages changed in memory and not yet written back; `true` if changed through a
    /// mapped view (`cache.rs`).
    pub(crate) dirty: BTreeMap<u64, bool>,
    /// A cache map was set up on the stream (a cached read or write through one of its
    /// file objects): its dirty pages are the lazy writer's.
    pub(crate) cached: bool,
    /// The cache manager's valid data length: how far it knows the disk holds the
    /// file's data (CcSetValidData advances it after the lazy writer wrote past it).
    pub(crate) valid_data: u64,
}

pub(crate) struct HandleEntry {
    pub(crate) file_object: usize,
    pub(crate) pid: u32,
    pub(crate) kernel: bool,
}

#[derive(Default)]
pub(crate) struct Io {
    pub(crate) ops: HashMap<usize, OpState>,
    pub(crate) files: HashMap<usize, FileObj>,
    pub(crate) handles: HashMap<isize, HandleEntry>,
    pub(crate) streams: HashMap<(PFLT_VOLUME, FileId), Stream>,
    /// FLT_TAG_DATA_BUFFERs handed out with STATUS_REPARSE, by callback data.
    pub(crate) tag_data: HashMap<usize, Vec<u64>>,
    /// Deferred I/O work items (FltAllocateDeferredIoWorkItem), and whether each is queued.
    pub(crate) deferred: HashMap<isize, bool>,
    /// What the file system answered a create that reparsed, by file object.
    pub(crate) reparse_result: HashMap<usize, (u32, Vec<u8>, usize)>,
    next_scb: usize,
}

// ---------------------------------------------------------------------------------------
// Paths
// ---------------------------------------------------------------------------------------

/// A path split into the volume it names and the path on that volume.
pub(crate) fn resolve(path: &str) -> Result<(PFLT_VOLUME, String), NTSTATUS> {
    let (device, rest) = if let Some(rest) = path.strip_prefix("\\Device\\") {
        let end = rest.find('\\').unwrap_or(rest.len());
        (
            format!("\\Device\\{}", &rest[..end]),
            rest[end..].to_string(),
        )
    } else {
        let dos = path.strip_prefix("\\??\\").unwrap_or(path);
        let mut chars = dos.chars();
        let (Some(letter), Some(':')) = (chars.next(), chars.next()) else {
            return Err(STATUS_OBJECT_PATH_NOT_FOUND);
        };
        let letter = letter.to_ascii_uppercase();
        if !letter.is_ascii_uppercase() || letter < 'C' {
            return Err(STATUS_OBJECT_PATH_NOT_FOUND);
        }
        let n = letter as u32 - 'C' as u32 + 1;
        (format!("\\Device\\HarddiskVolume{n}"), dos[2..].to_string())
    };
    let rest = if rest.is_empty() {
        "\\".to_string()
    } else {
        rest
    };
    if !rest.starts_with('\\') {
        return Err(STATUS_OBJECT_NAME_INVALID);
    }
    with_kernel(|k| {
        k.volumes
            .iter()
            .find(|v| v.config.device_name.eq_ignore_ascii_case(&device))
            .map(|v| (v.handle, rest.clone()))
            .ok_or(STATUS_OBJECT_PATH_NOT_FOUND)
    })
}

/// The NT form of a DOS path (`C:\x` → `\Device\HarddiskVolume1\x`).
pub fn nt_path(path: &str) -> Result<String, NTSTATUS> {
    let (volume, rest) = resolve(path)?;
    with_kernel(|k| {
        k.volumes
            .iter()
            .find(|v| v.handle == volume)
            .map(|v| format!("{}{}", v.config.device_name, rest))
            .ok_or(STATUS_OBJECT_PATH_NOT_FOUND)
    })
}

// ---------------------------------------------------------------------------------------
// File objects
// ---------------------------------------------------------------------------------------

/// A new file object for a create of `name` (the units FILE_OBJECT.FileName holds: a path,
/// or the binary id of an open by file id).
fn new_file_object(volume: PFLT_VOLUME, name: &[u16], access: u32, options: u32) -> usize {
    let name: Box<[u16]> = name.into();
    let mut fo: Box<FILE_OBJECT> = Box::default();
    fo.Type = 5; // IO_TYPE_FILE
    fo.Size = std::mem::size_of::<FILE_OBJECT>() as i16;
    fo.FileName = UNICODE_STRING {
        Length: (name.len() * 2) as u16,
        MaximumLength: (name.len() * 2) as u16,
        Buffer: name.as_ptr().cast_mut(),
    };
    fo.ReadAccess = access & FILE_READ_DATA != 0;
    fo.WriteAccess = access & (FILE_WRITE_DATA | FILE_APPEND_DATA) != 0;
    fo.DeleteAccess = access & DELETE != 0;
    if options & FILE_SYNCHRONOUS_IO != 0 {
        fo.Flags |= FO_SYNCHRONOUS_IO;
    }
    if options & FILE_NO_INTERMEDIATE_BUFFERING != 0 {
        fo.Flags |= FO_NO_INTERMEDIATE_BUFFERING;
    }
    let addr = Box::into_raw(fo) as usize;
    with_kernel(|k| {
        k.io.files.insert(
            addr,
            FileObj {
                volume,
                _name: name,
                open: None,
                file: None,
                refs: 1,
                handles: 0,
                access,
                options,
                instance: None,
                handle_contexts: Vec::new(),
                cache_map: false,
                last_read_end: None,
                driver_refs: 0,
            },
        );
    });
    addr
}

fn fo_ptr(addr: usize) -> *mut FILE_OBJECT {
    addr as *mut FILE_OBJECT
}

/// Drops one reference; the last sends IRP_MJ_CLOSE and frees the file object.
pub(crate) fn dereference(addr: usize) {
    let last = with_kernel(|k| match k.io.files.get_mut(&addr) {
        Some(f) => {
            f.refs -= 1;
            f.refs == 0
        }
        None => false,
    });
    if last {
        close_file_object(addr);
    }
}

fn close_file_object(addr: usize) {
    let info = with_kernel(|k| {
        k.io.files
            .get(&addr)
            .map(|f| (f.volume, f.open, f.instance))
    });
    let Some((volume, open, instance)) = info else {
        return;
    };
    if open.is_some() {
        let req = simple_request(major::CLOSE, 0, addr, volume, instance);
        io::dispatch(&req, fs_noop);
    }
    // FltMgr frees the stream-handle contexts with the file object, and the stream's
    // contexts with its last file object.
    let released = with_kernel(|k| {
        let Some(f) = k.io.files.remove(&addr) else {
            return Vec::new();
        };
        let mut drop: Vec<usize> = f.handle_contexts.iter().map(|(_, c)| *c).collect();
        if let Some(file) = f.file
            && let Some(s) = k.io.streams.get_mut(&(volume, file))
        {
            s.file_objects -= 1;
            if s.file_objects == 0
                && let Some(s) = k.io.streams.remove(&(volume, file))
            {
                drop.extend(s.contexts.iter().map(|(_, c)| *c));
            }
        }
        drop.into_iter()
            .filter_map(|c| k.release("FltMgr (close)", c).map(|r| (c, r)))
            .collect()
    });
    for (ptr, cleanup) in released {
        super::fltmgr::finish_release(ptr, cleanup);
    }
    // SAFETY: allocated by Box::into_raw in new_file_object and removed from the table
    // above, so this is the only release.
    drop(unsafe { Box::from_raw(fo_ptr(addr)) });
}

/// A request as the I/O manager (or the cache and memory managers) issue it, from the
/// calling thread's process: [`simple_request`] for `cache.rs`.
pub(crate) fn request(
    major: u8,
    irp_flags: u32,
    fo: usize,
    volume: PFLT_VOLUME,
    instance: Option<PFLT_INSTANCE>,
) -> Request {
    simple_request(major, irp_flags, fo, volume, instance)
}

fn simple_request(
    major: u8,
    irp_flags: u32,
    fo: usize,
    volume: PFLT_VOLUME,
    instance: Option<PFLT_INSTANCE>,
) -> Request {
    Request {
        major,
        minor: 0,
        irp_flags,
        operation_flags: 0,
        kind: Kind::Irp,
        params: FLT_PARAMETERS::default(),
        file_object: fo_ptr(fo),
        volume,
        requestor: process::current_pid(),
        requestor_mode: if instance.is_some() { 0 } else { 1 },
        below: instance,
        irql: PASSIVE_LEVEL,
    }
}

fn fs_noop(_: &mut Cbd, _: &FsCall) -> (NTSTATUS, usize) {
    (STATUS_SUCCESS, 0)
}

// ---------------------------------------------------------------------------------------
// Create
// ---------------------------------------------------------------------------------------

/// Opens or creates `path` as the calling thread's process (NtCreateFile, UserMode).
/// RequestorMode values.
pub(crate) const KERNEL_MODE: i8 = 0;
pub(crate) const USER_MODE: i8 = 1;

pub fn create(path: &str, params: &OpenParams) -> Result<Handle, NTSTATUS> {
    let mut path = path.to_string();
    for _ in 0..MAX_REPARSE {
        let (volume, rel) = resolve(&path)?;
        let units: Vec<u16> = rel.encode_utf16().collect();
        match open_on_volume(volume, &units, params, None, None, USER_MODE)? {
            Opened::File(fo) => {
                let pid = process::current_pid();
                return Ok(Handle(add_handle(fo, pid, false)));
            }
            Opened::Reparse {
                tag,
                buffer,
                remaining,
            } => {
                path = follow(tag, &buffer, &rel, remaining)?;
            }
        }
    }
    Err(windows_sys::Win32::Foundation::STATUS_REPARSE_POINT_NOT_RESOLVED)
}

pub(crate) enum Opened {
    File(usize),
    Reparse {
        tag: u32,
        buffer: Vec<u8>,
        remaining: usize,
    },
}

/// IRP_MJ_CREATE through the filters (those below `instance` when a filter issues it) of
/// `name` on `volume`; on success a file object with the create's reference.
/// `related` is the file object of the OBJECT_ATTRIBUTES.RootDirectory handle, which the
/// file object names in RelatedFileObject while the create is processed (the only time
/// that field is valid). `mode` is the create's RequestorMode: an application's
/// NtCreateFile is UserMode; FltCreateFile(Ex2) is KernelMode wherever in the stack it
/// starts (its documentation: the create is issued as a kernel-mode request, access
/// checks only with IO_FORCE_ACCESS_CHECK).
pub(crate) fn open_on_volume(
    volume: PFLT_VOLUME,
    name: &[u16],
    params: &OpenParams,
    instance: Option<PFLT_INSTANCE>,
    related: Option<usize>,
    mode: i8,
) -> Result<Opened, NTSTATUS> {
    let fo = new_file_object(volume, name, params.access, params.options);
    with_kernel(|k| {
        if let Some(f) = k.io.files.get_mut(&fo) {
            f.instance = instance;
        }
    });
    if let Some(related) = related {
        // SAFETY: a live file object owned by the model, not yet shared.
        unsafe { (*fo_ptr(fo)).RelatedFileObject = fo_ptr(related) };
    }
    let mut security = IO_SECURITY_CONTEXT {
        SecurityQos: std::ptr::null_mut(),
        AccessState: std::ptr::null_mut(),
        DesiredAccess: params.access,
        FullCreateOptions: params.options,
    };
    let mut req = simple_request(major::CREATE, irp::SYNCHRONOUS_API, fo, volume, instance);
    req.requestor_mode = mode;
    // The parameters start zeroed (simple_request); writing a union member is safe.
    req.params.Create.SecurityContext = &mut security;
    req.params.Create.Options = (params.disposition << 24) | (params.options & 0x00FF_FFFF);
    req.params.Create.FileAttributes = params.attributes as u16;
    req.params.Create.ShareAccess = params.share as u16;
    let done = io::dispatch(&req, fs_create);
    // SAFETY: the file object is still the model's (closed only below).
    unsafe { (*fo_ptr(fo)).RelatedFileObject = std::ptr::null_mut() };
    let reparse = with_kernel(|k| k.io.reparse_result.remove(&fo));
    if done.status == STATUS_SUCCESS || (done.status >= 0 && done.status != STATUS_REPARSE) {
        let opened = with_kernel(|k| k.io.files.get(&fo).is_some_and(|f| f.open.is_some()));
        if opened {
            return Ok(Opened::File(fo));
        }
    }
    // A create that failed never reaches IRP_MJ_CLOSE: the I/O manager frees the file
    // object, FltMgr the contexts set on it.
    discard_failed(fo);
    if done.status == STATUS_REPARSE {
        let (tag, buffer, remaining) = reparse.unwrap_or((done.information as u32, Vec::new(), 0));
        return Ok(Opened::Reparse {
            tag,
            buffer,
            remaining,
        });
    }
    Err(if done.status >= 0 {
        STATUS_INVALID_PARAMETER
    } else {
        done.status
    })
}

/// FltCancelFileOpen: a filter's post-create undoes a create the file system completed
/// — the file system sees the open's cleanup now (so a delete-on-close the filter left
/// set deletes the file, as on Windows), and the I/O manager then frees the file object
/// when the filter fails the create. Outside a post-create of that file object it is a
/// violation.
#[unsafe(no_mangle)]
pub extern "system" fn FltCancelFileOpen(
    _instance: windows_sys::Wdk::Storage::FileSystem::Minifilters::PFLT_INSTANCE,
    fo: *const windows_sys::Wdk::Foundation::FILE_OBJECT,
) {
    super::irql::check("FltCancelFileOpen", super::irql::PASSIVE_LEVEL);
    let open = with_kernel(|k| {
        k.io.files
            .get_mut(&(fo as usize))
            .and_then(|f| f.open.take().map(|o| (o, f.volume)))
    });
    let Some((open, volume)) = open else {
        with_kernel(|k| {
            k.violation(
                "FltCancelFileOpen",
                format!("{fo:p} is not a file object the file system opened"),
            )
        });
        return;
    };
    with_kernel(|k| {
        if let Some(v) = k.volumes.iter_mut().find(|v| v.handle == volume) {
            v.fs.cleanup(open);
        }
    });
}

fn discard_failed(fo: usize) {
    let open = with_kernel(|k| {
        k.io.files
            .get(&fo)
            .and_then(|f| f.open.map(|o| (o, f.volume)))
    });
    if let Some((open, volume)) = open {
        // A filter failed a create the file system completed (FltCancelFileOpen's
        // effect): the file system sees cleanup for it.
        with_kernel(|k| {
            if let Some(v) = k.volumes.iter_mut().find(|v| v.handle == volume) {
                v.fs.cleanup(open);
            }
        });
    }
    with_kernel(|k| {
        if let Some(f) = k.io.files.get_mut(&fo) {
            f.open = None;
            f.refs = 1;
        }
    });
    close_file_object(fo);
}

/// The path a name-surrogate reparse point leads to, or the error the I/O manager gives
/// for a tag nobody handled.
fn follow(tag: u32, buffer: &[u8], rel: &str, remaining: usize) -> Result<String, NTSTATUS> {
    if tag != TAG_SYMLINK && tag != TAG_MOUNT_POINT {
        return Err(STATUS_IO_REPARSE_TAG_NOT_HANDLED);
    }
    // REPARSE_DATA_BUFFER: tag, length, reserved, then SubstituteNameOffset/Length,
    // PrintNameOffset/Length, (Flags for symlinks), PathBuffer.
    let word = |at: usize| -> Option<usize> {
        buffer
            .get(at..at + 2)
            .map(|b| usize::from(u16::from_le_bytes([b[0], b[1]])))
    };
    let header = 8;
    let (offset, length) = (word(header), word(header + 2));
    let path_buffer = header + if tag == TAG_SYMLINK { 12 } else { 8 };
    let (Some(offset), Some(length)) = (offset, length) else {
        return Err(windows_sys::Win32::Foundation::STATUS_IO_REPARSE_DATA_INVALID);
    };
    let Some(bytes) = buffer.get(path_buffer + offset..path_buffer + offset + length) else {
        return Err(windows_sys::Win32::Foundation::STATUS_IO_REPARSE_DATA_INVALID);
    };
    let units: Vec<u16> = bytes
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    let target = String::from_utf16_lossy(&units);
    let chars = rel.encode_utf16().count();
    let rest_units = remaining / 2;
    let rest: String = if rest_units <= chars {
        let all: Vec<u16> = rel.encode_utf16().collect();
        String::from_utf16_lossy(&all[chars - rest_units..])
    } else {
        String::new()
    };
    let relative = tag == TAG_SYMLINK
        && buffer
            .get(16..20)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            == Some(1);
    if relative {
        // SYMLINK_FLAG_RELATIVE: relative to the link's directory.
        let consumed: Vec<u16> = rel.encode_utf16().take(chars - rest_units).collect();
        let link = String::from_utf16_lossy(&consumed);
        let parent = link.rsplit_once('\\').map_or("", |(p, _)| p);
        return Err(if target.is_empty() {
            STATUS_IO_REPARSE_TAG_NOT_HANDLED
        } else {
            return Ok(format!("{parent}\\{target}{rest}"));
        });
    }
    Ok(format!("{}{rest}", target.trim_end_matches('\\')))
}

/// A kernel handle (FltCreateFileEx2) to a file object.
pub(crate) fn add_kernel_handle(fo: usize) -> isize {
    add_handle(fo, process::SYSTEM_PID, true)
}

/// Whether `handle` is a kernel handle (None: no such handle).
pub(crate) fn is_kernel_handle(handle: isize) -> Option<bool> {
    with_kernel(|k| k.io.handles.get(&handle).map(|e| e.kernel))
}

/// A reference the driver takes on a file object; returns the new count.
pub(crate) fn reference(fo: usize) -> usize {
    with_kernel(|k| match k.io.files.get_mut(&fo) {
        Some(f) => {
            f.refs += 1;
            f.driver_refs += 1;
            f.refs
        }
        None => {
            k.violation(
                "ObfReferenceObject",
                format!("{fo:#x} is not a live file object"),
            );
            0
        }
    })
}

/// The driver drops a reference it took.
pub(crate) fn dereference_by_driver(fo: usize) {
    let ok = with_kernel(|k| match k.io.files.get_mut(&fo) {
        Some(f) if f.driver_refs > 0 => {
            f.driver_refs -= 1;
            true
        }
        _ => {
            k.violation(
                "ObfDereferenceObject",
                format!(
                    "file object {fo:#x} dereferenced more often than the driver referenced it"
                ),
            );
            false
        }
    });
    if ok {
        dereference(fo);
    }
}

/// The file object's current byte offset.
pub(crate) fn position(fo: usize) -> i64 {
    // SAFETY: the caller checked that `fo` is a live file object.
    unsafe { (*fo_ptr(fo)).CurrentByteOffset }
}

pub(crate) fn set_position(fo: usize, at: i64) {
    // SAFETY: the caller checked that `fo` is a live file object.
    unsafe { (*fo_ptr(fo)).CurrentByteOffset = at };
}

/// A read a filter issues below `instance`: non-cached and paging reads go straight to
/// the file system; cached ones through the cache (whose paging I/O starts at the top).
pub(crate) fn irp_read(
    fo: usize,
    volume: PFLT_VOLUME,
    offset: u64,
    buffer: &mut [u8],
    irp_flags: u32,
    instance: PFLT_INSTANCE,
) -> Completion {
    let irql = if irp_flags & irp::PAGING_IO != 0 {
        APC_LEVEL
    } else {
        super::irql::current()
    };
    read_irp(fo, volume, offset, buffer, irp_flags, irql, Some(instance))
}

fn add_handle(fo: usize, pid: u32, kernel: bool) -> isize {
    with_kernel(|k| {
        let h = k.handle();
        k.io.handles.insert(
            h,
            HandleEntry {
                file_object: fo,
                pid,
                kernel,
            },
        );
        if let Some(f) = k.io.files.get_mut(&fo) {
            f.handles += 1;
        }
        // SAFETY: a live file object owned by the model.
        unsafe { (*fo_ptr(fo)).Flags |= FO_HANDLE_CREATED };
        h
    })
}

/// IoStatus.Information of a create that made a new file (FILE_CREATED).
const FILE_CREATED_INFO: usize = 2;

fn fs_create(cbd: &mut Cbd, op: &FsCall) -> (NTSTATUS, usize) {
    let fo = cbd.iopb.TargetFileObject as usize;
    // SAFETY: the parameters of a create, set by the issuer (or a filter, dirty).
    let create = unsafe { cbd.iopb.Parameters.Create };
    // SAFETY: the file object lives until the create completes.
    let name = unsafe { &(*cbd.iopb.TargetFileObject).FileName };
    let units: &[u16] = if name.Buffer.is_null() {
        &[]
    } else {
        // SAFETY: FileName describes Length bytes at Buffer (the model's or a filter's).
        unsafe { std::slice::from_raw_parts(name.Buffer, usize::from(name.Length) / 2) }
    };
    let by_id = create.Options & FILE_OPEN_BY_FILE_ID != 0;
    // A name relative to RelatedFileObject (a RootDirectory handle) is resolved from that
    // directory's open, wherever the directory is now.
    // SAFETY: the file object lives until the create completes.
    let related = unsafe { (*cbd.iopb.TargetFileObject).RelatedFileObject } as usize;
    let path = if !by_id && related != 0 {
        let base = with_kernel(|k| {
            let open = k.io.files.get(&related)?.open?;
            let volume = k.io.files.get(&fo)?.volume;
            k.volumes
                .iter()
                .find(|v| v.handle == volume)?
                .fs
                .path_of_open(open)
        });
        match base {
            Some(base) => format!(
                "{}\\{}",
                base.trim_end_matches('\\'),
                String::from_utf16_lossy(units)
            ),
            None => return (STATUS_INVALID_PARAMETER, 0),
        }
    } else {
        String::from_utf16_lossy(units)
    };
    // Opened by file id, the name's bytes are the id: the file system reads them as such.
    let id_name: Vec<u8> = if by_id {
        units.iter().flat_map(|u| u.to_le_bytes()).collect()
    } else {
        Vec::new()
    };
    // SAFETY: the issuer's security context lives across the create.
    let access = unsafe { create.SecurityContext.as_ref() }.map_or(0, |s| s.DesiredAccess);
    let now = super::now();
    let request = CreateRequest {
        path: &path,
        disposition: create.Options >> 24,
        options: create.Options & 0x00FF_FFFF,
        desired_access: access,
        share_access: u32::from(create.ShareAccess),
        open_reparse: &op.open_reparse,
        attributes: u32::from(create.FileAttributes),
        now,
        id_name: &id_name,
    };
    with_kernel(|k| {
        let Some(volume) = k.io.files.get(&fo).map(|f| f.volume) else {
            return (STATUS_INVALID_PARAMETER, 0);
        };
        let Some(v) = k.volumes.iter_mut().find(|v| v.handle == volume) else {
            return (STATUS_INVALID_PARAMETER, 0);
        };
        let mut encountered = Vec::new();
        let outcome = v.fs.create_noting_encounters(&request, &mut encountered);
        for ptr in encountered.iter().filter_map(|&i| op.entries.get(i)) {
            io::mark_encountered(k, *ptr);
        }
        match outcome {
            Ok(CreateOutcome::Opened {
                open,
                id,
                information,
            }) => {
                if information == FILE_CREATED_INFO {
                    // A new file's DACL comes from its creator's token.
                    let elevated = k
                        .processes
                        .get(super::process::current_pid())
                        .is_none_or(|p| p.elevated);
                    let writers = if elevated {
                        super::ntfs::Writers::Administrators
                    } else {
                        super::ntfs::Writers::StandardUser
                    };
                    if let Some(v) = k.volumes.iter_mut().find(|v| v.handle == volume) {
                        v.fs.set_writers(id, writers);
                    }
                }
                // A reissued create may succeed after an earlier attempt opened nothing;
                // never two opens on one file object.
                let size = k
                    .volumes
                    .iter()
                    .find(|v| v.handle == volume)
                    .and_then(|v| v.fs.node(id))
                    .map_or(0, |n| n.size);
                let scb = {
                    let next = &mut k.io.next_scb;
                    let stream = k.io.streams.entry((volume, id)).or_insert_with(|| {
                        *next += 1;
                        Stream {
                            scb: SCB_BASE + *next * 0x100,
                            file_objects: 0,
                            contexts: Vec::new(),
                            pages: BTreeMap::new(),
                            dirty: BTreeMap::new(),
                            cached: false,
                            valid_data: size,
                        }
                    });
                    if information == FILE_OVERWRITTEN || information == FILE_SUPERSEDED {
                        // The old data is gone: so are its pages, written back or not
                        // (CcPurgeCacheSection of the whole stream).
                        stream.pages.clear();
                        stream.dirty.clear();
                        stream.valid_data = 0;
                    }
                    stream.file_objects += 1;
                    stream.scb
                };
                if let Some(f) = k.io.files.get_mut(&fo) {
                    f.open = Some(open);
                    f.file = Some(id);
                    f.options = request.options;
                }
                // SAFETY: a live file object owned by the model.
                unsafe {
                    (*cbd.iopb.TargetFileObject).FsContext = scb as *mut c_void;
                }
                // SAFETY: as above.
                unsafe {
                    (*cbd.iopb.TargetFileObject).FsContext2 = open as usize as *mut c_void;
                }
                (STATUS_SUCCESS, information)
            }
            Ok(CreateOutcome::Reparse {
                tag,
                buffer,
                remaining,
            }) => {
                k.io.reparse_result
                    .insert(fo, (tag, buffer.clone(), remaining));
                // FLT_TAG_DATA_BUFFER: the stored buffer with UnparsedNameLength in the
                // reserved word, 8-byte aligned storage owned by FltMgr until completion.
                let mut words = vec![0u64; buffer.len().div_ceil(8).max(2)];
                // SAFETY: `words` holds at least buffer.len() bytes.
                let bytes = unsafe {
                    std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), words.len() * 8)
                };
                bytes[..buffer.len()].copy_from_slice(&buffer);
                bytes[6..8].copy_from_slice(&(remaining as u16).to_le_bytes());
                cbd.data.TagData = words.as_mut_ptr().cast();
                k.io.tag_data
                    .insert(std::ptr::from_ref(cbd) as usize, words);
                (STATUS_REPARSE, tag as usize)
            }
            Err(status) => (status, 0),
        }
    })
}

// ---------------------------------------------------------------------------------------
// Close
// ---------------------------------------------------------------------------------------

/// NtClose: the last handle sends IRP_MJ_CLEANUP; the last reference IRP_MJ_CLOSE.
pub fn close(handle: Handle) -> NTSTATUS {
    let entry = with_kernel(|k| k.io.handles.remove(&handle.0));
    let Some(entry) = entry else {
        return STATUS_INVALID_HANDLE;
    };
    let last = with_kernel(|k| match k.io.files.get_mut(&entry.file_object) {
        Some(f) => {
            f.handles -= 1;
            f.handles == 0
        }
        None => false,
    });
    if last {
        cleanup(entry.file_object);
    }
    dereference(entry.file_object);
    STATUS_SUCCESS
}

fn cleanup(fo: usize) {
    let info = with_kernel(|k| k.io.files.get(&fo).map(|f| (f.volume, f.instance)));
    let Some((volume, instance)) = info else {
        return;
    };
    let req = simple_request(major::CLEANUP, 0, fo, volume, instance);
    io::dispatch(&req, fs_cleanup);
    // SAFETY: a live file object owned by the model.
    unsafe { (*fo_ptr(fo)).Flags |= FO_CLEANUP_COMPLETE };
    write_back_after_last_cleanup(fo);
}

/// After the last cleanup of a file, its dirty pages go to disk: the lazy writer's if
/// the stream has a cache map, else the mapped page writer's (`cache.rs`).
fn write_back_after_last_cleanup(fo: usize) {
    let found = with_kernel(|k| {
        let f = k.io.files.get(&fo)?;
        let (volume, file) = (f.volume, f.file?);
        let v = k.volumes.iter().find(|v| v.handle == volume)?;
        if v.fs.node(file).is_some() && v.fs.open_count(file) > 0 {
            return None;
        }
        let s = k.io.streams.get(&(volume, file))?;
        (!s.dirty.is_empty()).then_some((volume, file, s.cached))
    });
    if let Some((volume, file, cached)) = found {
        let writer = if cached {
            Writer::Lazy
        } else {
            Writer::MappedPages
        };
        cache::flush_pages(fo, volume, file, None, writer);
    }
}

fn fs_cleanup(cbd: &mut Cbd, _: &FsCall) -> (NTSTATUS, usize) {
    let fo = cbd.iopb.TargetFileObject as usize;
    with_kernel(|k| {
        let Some(f) = k.io.files.get(&fo) else {
            return (STATUS_INVALID_PARAMETER, 0);
        };
        let (volume, open, file) = (f.volume, f.open, f.file);
        if let (Some(open), Some(v)) = (open, k.volumes.iter_mut().find(|v| v.handle == volume)) {
            v.fs.cleanup(open);
            // A file deleted at cleanup takes its cached pages with it, written or not.
            if let Some(file) = file
                && v.fs.node(file).is_none()
                && let Some(s) = k.io.streams.get_mut(&(volume, file))
            {
                s.pages.clear();
                s.dirty.clear();
            }
        }
        (STATUS_SUCCESS, 0)
    })
}

// ---------------------------------------------------------------------------------------
// Read and write
// ---------------------------------------------------------------------------------------

fn handle_object(handle: Handle) -> Result<(usize, PFLT_VOLUME), NTSTATUS> {
    with_kernel(|k| {
        let entry = k.io.handles.get(&handle.0).ok_or(STATUS_INVALID_HANDLE)?;
        let f =
            k.io.files
                .get(&entry.file_object)
                .ok_or(STATUS_INVALID_HANDLE)?;
        Ok((entry.file_object, f.volume))
    })
}

/// NtReadFile at `offset`.
pub fn read(handle: Handle, offset: u64, length: usize, mode: IoMode) -> Result<Vec<u8>, NTSTATUS> {
    let (fo, volume) = handle_object(handle)?;
    let access = with_kernel(|k| k.io.files.get(&fo).map_or(0, |f| f.access));
    if access & FILE_READ_DATA == 0 {
        return Err(STATUS_ACCESS_DENIED);
    }
    match mode {
        IoMode::Cached => cached_read(fo, volume, offset, length, None),
        IoMode::NonCached => {
            let mut buffer = vec![0u8; length];
            let done = read_irp(
                fo,
                volume,
                offset,
                &mut buffer,
                irp::NOCACHE,
                PASSIVE_LEVEL,
                None,
            );
            finish_read(done, buffer)
        }
        IoMode::Paging => page_in(fo, volume, offset, length),
        IoMode::Mapped => {
            let status = acquire_for_section(fo, volume);
            if status < 0 {
                return Err(status);
            }
            page_in(fo, volume, offset, length)
        }
    }
}

fn finish_read(done: Completion, mut buffer: Vec<u8>) -> Result<Vec<u8>, NTSTATUS> {
    if done.status < 0 {
        return Err(done.status);
    }
    buffer.truncate(done.information);
    Ok(buffer)
}

/// One IRP_MJ_READ through the filters.
pub(crate) fn read_irp(
    fo: usize,
    volume: PFLT_VOLUME,
    offset: u64,
    buffer: &mut [u8],
    irp_flags: u32,
    irql: u8,
    instance: Option<PFLT_INSTANCE>,
) -> Completion {
    let mut req = simple_request(major::READ, irp_flags, fo, volume, instance);
    req.irql = irql;
    req.params.Read.Length = buffer.len() as u32;
    req.params.Read.ByteOffset = offset as i64;
    req.params.Read.ReadBuffer = buffer.as_mut_ptr().cast();
    io::dispatch(&req, fs_read)
}

/// A page-aligned paging read of the pages covering the range, as a fault issues them;
/// returns the range's bytes.
fn page_in(
    fo: usize,
    volume: PFLT_VOLUME,
    offset: u64,
    length: usize,
) -> Result<Vec<u8>, NTSTATUS> {
    let size = file_size(fo).ok_or(STATUS_INVALID_PARAMETER)?;
    if offset >= size {
        return Err(STATUS_END_OF_FILE);
    }
    let end = (offset + length as u64).min(size);
    let first = offset / PAGE * PAGE;
    let last = end.div_ceil(PAGE) * PAGE;
    let file = with_kernel(|k| k.io.files.get(&fo).and_then(|f| f.file));
    if let Some(file) = file
        && cache::has_dirty(volume, file, first / PAGE, last / PAGE)
    {
        // A changed page is resident: the view shows it, and only the other pages
        // fault in.
        fill_cache(fo, volume, file, offset, (end - offset) as usize)?;
        return with_kernel(|k| {
            let s =
                k.io.streams
                    .get(&(volume, file))
                    .ok_or(STATUS_INVALID_PARAMETER)?;
            let mut out = Vec::with_capacity((end - offset) as usize);
            let mut at = offset;
            while at < end {
                let page = s.pages.get(&(at / PAGE)).ok_or(STATUS_INVALID_PARAMETER)?;
                let from = (at % PAGE) as usize;
                let take = (PAGE - at % PAGE).min(end - at) as usize;
                out.extend_from_slice(&page[from..from + take]);
                at += take as u64;
            }
            Ok(out)
        });
    }
    let mut buffer = vec![0u8; (last - first) as usize];
    let done = read_irp(
        fo,
        volume,
        first,
        &mut buffer,
        irp::PAGING_IO | irp::NOCACHE | irp::SYNCHRONOUS_PAGING_IO,
        APC_LEVEL,
        None,
    );
    if done.status < 0 {
        return Err(done.status);
    }
    let from = (offset - first) as usize;
    Ok(buffer[from..from + (end - offset) as usize].to_vec())
}

fn file_size(fo: usize) -> Option<u64> {
    with_kernel(|k| {
        let f = k.io.files.get(&fo)?;
        let v = k.volumes.iter().find(|v| v.handle == f.volume)?;
        v.fs.node(f.file?).map(|n| n.size)
    })
}

/// A cached read: fast I/O first if the cache is set up, else the IRP; the file system
/// pages in what the cache lacks with paging reads through the filters.
fn cached_read(
    fo: usize,
    volume: PFLT_VOLUME,
    offset: u64,
    length: usize,
    instance: Option<PFLT_INSTANCE>,
) -> Result<Vec<u8>, NTSTATUS> {
    let mut buffer = vec![0u8; length];
    let fast = with_kernel(|k| k.io.files.get(&fo).is_some_and(|f| f.cache_map));
    if fast && instance.is_none() {
        let mut req = simple_request(major::READ, 0, fo, volume, None);
        req.kind = Kind::FastIo;
        req.params.Read.Length = length as u32;
        req.params.Read.ByteOffset = offset as i64;
        req.params.Read.ReadBuffer = buffer.as_mut_ptr().cast();
        let done = io::dispatch(&req, fs_fast_read);
        // FastIoRead answers only when everything is cached; otherwise (or when a filter
        // refused fast I/O) the I/O manager builds an IRP.
        if !done.refused && done.status != FAST_IO_FAILED {
            // CcFastCopyRead schedules read-ahead as CcCopyRead does.
            let file = with_kernel(|k| k.io.files.get(&fo).and_then(|f| f.file));
            if let Some(file) = file
                && done.status >= 0
            {
                read_ahead(fo, volume, file, offset, done.information);
            }
            return finish_read(done, buffer);
        }
    }
    let done = read_irp(fo, volume, offset, &mut buffer, 0, PASSIVE_LEVEL, instance);
    finish_read(done, buffer)
}

/// What fs_fast_read answers when FastIoRead returns FALSE.
const FAST_IO_FAILED: NTSTATUS = 0x7e57_fa57;

fn fs_fast_read(cbd: &mut Cbd, _: &FsCall) -> (NTSTATUS, usize) {
    // SAFETY: the read parameters of this operation.
    let read = unsafe { cbd.iopb.Parameters.Read };
    let fo = cbd.iopb.TargetFileObject as usize;
    let offset = read.ByteOffset as u64;
    let length = read.Length as usize;
    let cached = with_kernel(|k| {
        let f = k.io.files.get(&fo)?;
        let file = f.file?;
        let size = k
            .volumes
            .iter()
            .find(|v| v.handle == f.volume)?
            .fs
            .node(file)?
            .size;
        let s = k.io.streams.get(&(f.volume, file))?;
        if offset >= size {
            return Some(Err(STATUS_END_OF_FILE));
        }
        let end = (offset + length as u64).min(size);
        let mut out = Vec::with_capacity((end - offset) as usize);
        let mut at = offset;
        while at < end {
            let page = s.pages.get(&(at / PAGE))?;
            let from = (at % PAGE) as usize;
            let take = ((PAGE - at % PAGE).min(end - at)) as usize;
            out.extend_from_slice(page.get(from..from + take)?);
            at += take as u64;
        }
        Some(Ok(out))
    });
    match cached {
        None => (FAST_IO_FAILED, 0),
        Some(result) => deliver(read.ReadBuffer, result),
    }
}

/// Copies what the file system read into the operation's read buffer.
fn deliver(buffer: *mut c_void, result: Result<Vec<u8>, NTSTATUS>) -> (NTSTATUS, usize) {
    match result {
        Err(status) => (status, 0),
        Ok(bytes) => {
            // SAFETY: the read buffer holds Length >= bytes.len() bytes (the issuer's
            // buffer or a filter's replacement of the same length): the file system never
            // returns more than Length.
            unsafe {
                std::ptr::copy_nonoverlapping(bytes.as_ptr(), buffer.cast::<u8>(), bytes.len())
            };
            (STATUS_SUCCESS, bytes.len())
        }
    }
}

fn sector_size(volume: PFLT_VOLUME) -> u64 {
    with_kernel(|k| {
        k.volumes
            .iter()
            .find(|v| v.handle == volume)
            .map_or(512, |v| u64::from(v.config.sector_size))
    })
}

fn fs_read(cbd: &mut Cbd, _: &FsCall) -> (NTSTATUS, usize) {
    // SAFETY: the read parameters of this operation.
    let read = unsafe { cbd.iopb.Parameters.Read };
    let fo = cbd.iopb.TargetFileObject as usize;
    let flags = cbd.iopb.IrpFlags;
    let offset = read.ByteOffset as u64;
    let length = read.Length as usize;
    let Some((volume, open, file)) = with_kernel(|k| {
        k.io.files
            .get(&fo)
            .and_then(|f| Some((f.volume, f.open?, f.file?)))
    }) else {
        return (STATUS_INVALID_PARAMETER, 0);
    };
    let sector = sector_size(volume);
    let noncached = flags & (irp::NOCACHE | irp::PAGING_IO) != 0;
    if noncached && (!offset.is_multiple_of(sector) || !(length as u64).is_multiple_of(sector)) {
        return (STATUS_INVALID_PARAMETER, 0);
    }
    if !noncached {
        // Cached: copy from the cache, paging in what it lacks. The copy faults in again a
        // page that another thread's write or purge dropped after it was paged in, as
        // CcCopyRead does: a cached read never ends for want of a resident page.
        loop {
            if let Err(status) = fill_cache(fo, volume, file, offset, length) {
                return (status, 0);
            }
            with_kernel(|k| {
                if let Some(f) = k.io.files.get_mut(&fo) {
                    f.cache_map = true;
                }
            });
            let done = fs_fast_read(
                cbd,
                &FsCall {
                    open_reparse: Vec::new(),
                    entries: Vec::new(),
                },
            );
            if done.0 != FAST_IO_FAILED {
                if done.0 >= 0 {
                    read_ahead(fo, volume, file, offset, done.1);
                }
                return done;
            }
        }
    }
    if flags & irp::PAGING_IO == 0 {
        // A non-cached read sees what the cache holds dirty: NTFS flushes it first.
        let (first, last) = (offset / PAGE, (offset + length as u64).div_ceil(PAGE));
        if cache::has_dirty(volume, file, first, last) {
            cache::flush_pages(fo, volume, file, Some((first, last)), Writer::InPlace);
        }
    }
    let bytes = with_kernel(|k| {
        let v = k.volumes.iter().find(|v| v.handle == volume)?;
        Some(v.fs.read(open, offset, length))
    });
    match bytes {
        None => (STATUS_INVALID_PARAMETER, 0),
        Some(result) => deliver(read.ReadBuffer, result),
    }
}

/// Pages the range into the stream's cache with paging reads through the filters.
fn fill_cache(
    fo: usize,
    volume: PFLT_VOLUME,
    file: FileId,
    offset: u64,
    length: usize,
) -> Result<(), NTSTATUS> {
    let size = with_kernel(|k| {
        k.volumes
            .iter()
            .find(|v| v.handle == volume)
            .and_then(|v| v.fs.node(file))
            .map(|n| n.size)
    })
    .ok_or(STATUS_INVALID_PARAMETER)?;
    if offset >= size {
        return Err(STATUS_END_OF_FILE);
    }
    let end = (offset + length as u64).min(size);
    let pages = size.div_ceil(PAGE);
    let resident = |page: u64| {
        with_kernel(|k| {
            k.io.streams
                .get(&(volume, file))
                .is_some_and(|s| s.pages.contains_key(&page))
        })
    };
    for page in offset / PAGE..end.div_ceil(PAGE) {
        if resident(page) {
            continue;
        }
        // The fault is widened to the run of non-resident pages around it within its
        // aligned cluster, as the memory manager clusters a mapped-file fault.
        let window = page - page % CLUSTER_PAGES;
        let window_end = (window + CLUSTER_PAGES).min(pages);
        let mut first = page;
        while first > window && !resident(first - 1) {
            first -= 1;
        }
        let mut last = page + 1;
        while last < window_end && !resident(last) {
            last += 1;
        }
        page_in_run(fo, volume, file, first, last)?;
    }
    Ok(())
}

/// Pages a page-fault cluster of a mapped (cached) data file reads: the faulting page and
/// up to seven more. The figure is the memory manager's read cluster for data pages
/// (the Windows Research Kernel's MmReadClusterSize of 7 beyond the faulting page; Windows
/// Internals describes the same clustering of data-page faults), and the cache manager's
/// views are mapped-file sections, so CcCopyRead's faults are clustered alike. Modelled:
/// a cached read's faults read the run of non-resident pages around each faulting page
/// within its aligned 8-page (32 KiB) cluster, clipped at end of file. The cache
/// manager's read-ahead on top of it is `read_ahead`.
const CLUSTER_PAGES: u64 = 8;

/// The cache manager's read-ahead granularity: 64 KiB, the default of
/// CcSetReadAheadGranularity (ntifs.h, READ_AHEAD_GRANULARITY).
const READ_AHEAD: u64 = 64 * 1024;

/// The cache manager's read-ahead after a cached read of `n` bytes at `offset`: when the
/// read continues the previous one through the same file object (sequential access), the
/// next granule past its end is paged in, as CcScheduleReadAhead does from a worker thread
/// (here in the reader's thread: the filters see the same paging reads). Its failures are
/// nobody's: a page that could not be read is simply not cached.
fn read_ahead(fo: usize, volume: PFLT_VOLUME, file: FileId, offset: u64, n: usize) {
    let end = offset + n as u64;
    let sequential = with_kernel(|k| {
        let f = k.io.files.get_mut(&fo)?;
        let previous = f.last_read_end.replace(end);
        Some(previous == Some(offset))
    })
    .unwrap_or(false);
    if !sequential || n == 0 {
        return;
    }
    let size = with_kernel(|k| {
        k.volumes
            .iter()
            .find(|v| v.handle == volume)
            .and_then(|v| v.fs.node(file))
            .map(|n| n.size)
    })
    .unwrap_or(0);
    let from = end.div_ceil(PAGE);
    let to = (end + READ_AHEAD).min(size).div_ceil(PAGE);
    let resident = |page: u64| {
        with_kernel(|k| {
            k.io.streams
                .get(&(volume, file))
                .is_some_and(|s| s.pages.contains_key(&page))
        })
    };
    let mut page = from;
    while page < to {
        if resident(page) {
            page += 1;
            continue;
        }
        let mut last = page + 1;
        while last < to && !resident(last) {
            last += 1;
        }
        let _ = page_in_run(fo, volume, file, page, last);
        page = last;
    }
}

/// One paging read of pages `first..last` into the stream's cache.
fn page_in_run(
    fo: usize,
    volume: PFLT_VOLUME,
    file: FileId,
    first: u64,
    last: u64,
) -> Result<(), NTSTATUS> {
    let mut buffer = vec![0u8; ((last - first) * PAGE) as usize];
    let done = read_irp(
        fo,
        volume,
        first * PAGE,
        &mut buffer,
        irp::PAGING_IO | irp::NOCACHE | irp::SYNCHRONOUS_PAGING_IO,
        APC_LEVEL,
        None,
    );
    if done.status < 0 {
        return Err(done.status);
    }
    with_kernel(|k| {
        if let Some(s) = k.io.streams.get_mut(&(volume, file)) {
            for (i, chunk) in buffer.chunks(PAGE as usize).enumerate() {
                s.pages.insert(first + i as u64, chunk.to_vec());
            }
        }
    });
    Ok(())
}

/// Drops the cached pages of a stream after the file system changed its data, as the
/// file system's purge does; later cached reads page in again through the filters. A
/// dirty page holds data the disk does not have yet and stays (see `cache.rs`).
pub(crate) fn purge_cache(volume: PFLT_VOLUME, file: FileId) {
    with_kernel(|k| {
        if let Some(s) = k.io.streams.get_mut(&(volume, file)) {
            let dirty = &s.dirty;
            s.pages.retain(|p, _| dirty.contains_key(p));
        }
    });
}

/// CcSetFileSizes after end of file came down to `eof`: the pages past it go, written
/// back or not, and the page holding it reads zeros past it.
fn truncate_cache(volume: PFLT_VOLUME, file: FileId, eof: u64) {
    with_kernel(|k| {
        if let Some(s) = k.io.streams.get_mut(&(volume, file)) {
            let keep = eof.div_ceil(PAGE);
            s.pages.retain(|p, _| *p < keep);
            s.dirty.retain(|p, _| *p < keep);
            if !eof.is_multiple_of(PAGE)
                && let Some(page) = s.pages.get_mut(&(eof / PAGE))
            {
                page[(eof % PAGE) as usize..].fill(0);
            }
            s.valid_data = s.valid_data.min(eof);
        }
    });
}

/// NtWriteFile at `offset`.
pub fn write(handle: Handle, offset: u64, data: &[u8], mode: IoMode) -> Result<usize, NTSTATUS> {
    let (fo, volume) = handle_object(handle)?;
    let access = with_kernel(|k| k.io.files.get(&fo).map_or(0, |f| f.access));
    if access & (FILE_WRITE_DATA | FILE_APPEND_DATA) == 0 {
        return Err(STATUS_ACCESS_DENIED);
    }
    let flags = match mode {
        IoMode::Cached => 0,
        IoMode::NonCached => irp::NOCACHE,
        IoMode::Mapped => return mapped_write(fo, volume, offset, data),
        IoMode::Paging => return Err(STATUS_INVALID_PARAMETER),
    };
    let mut buffer = data.to_vec();
    let done = write_irp(fo, volume, offset, &mut buffer, flags, None);
    if done.status < 0 {
        return Err(done.status);
    }
    Ok(done.information)
}

/// A write through a mapped view: section creation for read/write
/// (AcquireForSectionSynchronization), the pages faulted in (paging reads, clustered as
/// a fault is), changed in memory and left modified for the mapped page writer (see
/// `cache.rs`), which writes them back once the file is closed. A view covers the file
/// as it is: bytes past end of file in its last page are never written to the file, and
/// a write past that page is an access violation.
fn mapped_write(
    fo: usize,
    volume: PFLT_VOLUME,
    offset: u64,
    data: &[u8],
) -> Result<usize, NTSTATUS> {
    let file = with_kernel(|k| k.io.files.get(&fo).and_then(|f| f.file))
        .ok_or(STATUS_INVALID_PARAMETER)?;
    let status = acquire_for_section_as(fo, volume, PAGE_READWRITE);
    if status < 0 {
        return Err(status);
    }
    if data.is_empty() {
        return Ok(0);
    }
    let size = size_of(volume, file).ok_or(STATUS_INVALID_PARAMETER)?;
    let end = offset
        .checked_add(data.len() as u64)
        .ok_or(STATUS_INVALID_PARAMETER)?;
    if end > size.div_ceil(PAGE) * PAGE {
        return Err(STATUS_ACCESS_VIOLATION);
    }
    fill_cache(fo, volume, file, offset, data.len())?;
    with_kernel(|k| {
        let s =
            k.io.streams
                .get_mut(&(volume, file))
                .ok_or(STATUS_INVALID_PARAMETER)?;
        copy_into_pages(s, offset, data, true);
        Ok(data.len())
    })
}

/// Copies `data` into the stream's pages at `offset` (a missing page starts as zeros)
/// and marks them dirty (`mapped`: through a view).
fn copy_into_pages(s: &mut Stream, offset: u64, data: &[u8], mapped: bool) {
    let end = offset + data.len() as u64;
    let mut at = offset;
    while at < end {
        let page = at / PAGE;
        let start = page * PAGE;
        let to = end.min(start + PAGE);
        let bytes = s
            .pages
            .entry(page)
            .or_insert_with(|| vec![0; PAGE as usize]);
        bytes[(at - start) as usize..(to - start) as usize]
            .copy_from_slice(&data[(at - offset) as usize..(to - offset) as usize]);
        let was = s.dirty.get(&page).copied().unwrap_or(false);
        s.dirty.insert(page, was || mapped);
        at = to;
    }
}

/// End of file of `file` on `volume`, as NTFS holds it.
pub(crate) fn size_of(volume: PFLT_VOLUME, file: FileId) -> Option<u64> {
    with_kernel(|k| {
        let v = k.volumes.iter().find(|v| v.handle == volume)?;
        v.fs.node(file).map(|n| n.size)
    })
}

/// A live file object of the stream (the lazy writer writes through the one the cache
/// manager keeps referenced).
pub(crate) fn any_file_object(volume: PFLT_VOLUME, file: FileId) -> Option<usize> {
    with_kernel(|k| {
        k.io.files
            .iter()
            .filter(|(_, f)| f.volume == volume && f.file == Some(file))
            .map(|(addr, _)| *addr)
            .min()
    })
}

/// FlushFileBuffers: IRP_MJ_FLUSH_BUFFERS through the filters; the file system writes
/// the file's dirty pages back in the caller's thread (CcFlushCache).
pub fn flush(handle: Handle) -> NTSTATUS {
    let Ok((fo, volume)) = handle_object(handle) else {
        return STATUS_INVALID_HANDLE;
    };
    let req = simple_request(major::FLUSH_BUFFERS, irp::SYNCHRONOUS_API, fo, volume, None);
    io::dispatch(&req, fs_flush).status
}

/// FltFlushBuffers: IRP_MJ_FLUSH_BUFFERS from a filter, below `instance`.
pub(crate) fn flush_below(fo: usize, instance: PFLT_INSTANCE) -> NTSTATUS {
    let Some(volume) = with_kernel(|k| k.io.files.get(&fo).map(|f| f.volume)) else {
        return STATUS_INVALID_PARAMETER;
    };
    let req = simple_request(
        major::FLUSH_BUFFERS,
        irp::SYNCHRONOUS_API,
        fo,
        volume,
        Some(instance),
    );
    io::dispatch(&req, fs_flush).status
}

fn fs_flush(cbd: &mut Cbd, _: &FsCall) -> (NTSTATUS, usize) {
    let fo = cbd.iopb.TargetFileObject as usize;
    let Some((volume, file)) =
        with_kernel(|k| k.io.files.get(&fo).and_then(|f| Some((f.volume, f.file?))))
    else {
        return (STATUS_INVALID_PARAMETER, 0);
    };
    cache::flush_pages(fo, volume, file, None, Writer::InPlace);
    (STATUS_SUCCESS, 0)
}

pub(crate) fn write_irp(
    fo: usize,
    volume: PFLT_VOLUME,
    offset: u64,
    buffer: &mut [u8],
    irp_flags: u32,
    instance: Option<PFLT_INSTANCE>,
) -> Completion {
    let mut req = simple_request(major::WRITE, irp_flags, fo, volume, instance);
    req.params.Write.Length = buffer.len() as u32;
    req.params.Write.ByteOffset = offset as i64;
    req.params.Write.WriteBuffer = buffer.as_mut_ptr().cast();
    io::dispatch(&req, fs_write)
}

pub(crate) fn fs_write(cbd: &mut Cbd, _: &FsCall) -> (NTSTATUS, usize) {
    // SAFETY: the write parameters of this operation.
    let write = unsafe { cbd.iopb.Parameters.Write };
    let fo = cbd.iopb.TargetFileObject as usize;
    let flags = cbd.iopb.IrpFlags;
    let offset = write.ByteOffset as u64;
    let length = write.Length as usize;
    let Some((volume, open, file)) = with_kernel(|k| {
        k.io.files
            .get(&fo)
            .and_then(|f| Some((f.volume, f.open, f.file?)))
    }) else {
        return (STATUS_INVALID_PARAMETER, 0);
    };
    let sector = sector_size(volume);
    let noncached = flags & (irp::NOCACHE | irp::PAGING_IO) != 0;
    if noncached && (!offset.is_multiple_of(sector) || !(length as u64).is_multiple_of(sector)) {
        return (STATUS_INVALID_PARAMETER, 0);
    }
    let data = if length == 0 {
        Vec::new()
    } else {
        // SAFETY: WriteBuffer holds Length bytes (the issuer's or a filter's).
        unsafe { std::slice::from_raw_parts(write.WriteBuffer.cast::<u8>(), length) }.to_vec()
    };
    let now = super::now();
    if flags & irp::PAGING_IO != 0 {
        // The cache or memory manager writing pages back: through the stream, even
        // after the last cleanup; the mapped page writer's change is noted here.
        let mapped = cache::IoGetTopLevelIrp() as usize == cache::FSRTL_MOD_WRITE_TOP_LEVEL_IRP;
        let result = with_kernel(|k| {
            let v = k.volumes.iter_mut().find(|v| v.handle == volume)?;
            Some(v.fs.paging_write(file, offset, &data, mapped, now))
        });
        return match result {
            None => (STATUS_INVALID_PARAMETER, 0),
            Some(Ok(n)) => (STATUS_SUCCESS, n),
            Some(Err(status)) => (status, 0),
        };
    }
    let Some(open) = open else {
        return (STATUS_INVALID_PARAMETER, 0);
    };
    if !noncached {
        return cached_write(fo, volume, open, file, offset, &data, now);
    }
    // Non-cached: what the cache holds dirty over the range goes first, then the data,
    // then the cache's stale copy (NTFS's flush and purge on its non-cached path).
    let (first, last) = (offset / PAGE, (offset + length as u64).div_ceil(PAGE));
    if cache::has_dirty(volume, file, first, last) {
        cache::flush_pages(fo, volume, file, Some((first, last)), Writer::InPlace);
    }
    let result = with_kernel(|k| {
        let v = k.volumes.iter_mut().find(|v| v.handle == volume)?;
        let r = v.fs.write(open, offset, &data, now);
        if r.is_ok()
            && let Some(s) = k.io.streams.get_mut(&(volume, file))
        {
            s.valid_data = s.valid_data.max(offset + length as u64);
        }
        Some(r)
    });
    purge_cache(volume, file);
    match result {
        None => (STATUS_INVALID_PARAMETER, 0),
        Some(Ok(n)) => (STATUS_SUCCESS, n),
        Some(Err(status)) => (status, 0),
    }
}

/// A cached write as NTFS and the cache manager do it (see `cache.rs`): the pages the
/// write covers only in part that hold data on disk are paged in first; NTFS moves end
/// of file and notes the change; the bytes are copied into the cache, dirty.
fn cached_write(
    fo: usize,
    volume: PFLT_VOLUME,
    open: OpenId,
    file: FileId,
    offset: u64,
    data: &[u8],
    now: i64,
) -> (NTSTATUS, usize) {
    if data.is_empty() {
        return (STATUS_SUCCESS, 0);
    }
    let Some(end) = offset.checked_add(data.len() as u64) else {
        return (STATUS_INVALID_PARAMETER, 0);
    };
    let Some(size) = size_of(volume, file) else {
        return (STATUS_INVALID_PARAMETER, 0);
    };
    let resident = |page: u64| {
        with_kernel(|k| {
            k.io.streams
                .get(&(volume, file))
                .is_some_and(|s| s.pages.contains_key(&page))
        })
    };
    let needs_read = |page: u64| {
        let (start, stop) = (page * PAGE, ((page + 1) * PAGE).min(size));
        start < size && !(offset <= start && end >= stop) && !resident(page)
    };
    let mut page = offset / PAGE;
    let last = end.div_ceil(PAGE);
    while page < last {
        if !needs_read(page) {
            page += 1;
            continue;
        }
        let mut stop = page + 1;
        while stop < last && needs_read(stop) {
            stop += 1;
        }
        if let Err(status) = page_in_run(fo, volume, file, page, stop) {
            return (status, 0);
        }
        page = stop;
    }
    let noted = with_kernel(|k| {
        let v = k.volumes.iter_mut().find(|v| v.handle == volume)?;
        Some(v.fs.cached_write(open, offset, end, now))
    });
    match noted {
        None => return (STATUS_INVALID_PARAMETER, 0),
        Some(Err(status)) => return (status, 0),
        Some(Ok(())) => {}
    }
    // The copy lands only in pages that hold the file's data: a partly written page
    // another thread's purge dropped since it was paged in is paged in again (CcCopyWrite
    // copies into a mapped view, faulting each page in under its lock; a page is never
    // made up of zeros the file does not hold).
    loop {
        let copied = with_kernel(|k| {
            if let Some(f) = k.io.files.get_mut(&fo) {
                f.cache_map = true;
            }
            let Some(s) = k.io.streams.get_mut(&(volume, file)) else {
                return true;
            };
            let dropped = (offset / PAGE..end.div_ceil(PAGE)).any(|page| {
                let (start, stop) = (page * PAGE, ((page + 1) * PAGE).min(size));
                start < size && !(offset <= start && end >= stop) && !s.pages.contains_key(&page)
            });
            if dropped {
                return false;
            }
            s.cached = true;
            copy_into_pages(s, offset, data, false);
            true
        });
        if copied {
            break;
        }
        let mut page = offset / PAGE;
        while page < last {
            if !needs_read(page) {
                page += 1;
                continue;
            }
            if let Err(status) = page_in_run(fo, volume, file, page, page + 1) {
                return (status, 0);
            }
            page += 1;
        }
    }
    (STATUS_SUCCESS, data.len())
}

/// Section creation for a mapped view: the FS-filter callback
/// AcquireForSectionSynchronization, which a filter may fail.
fn acquire_for_section(fo: usize, volume: PFLT_VOLUME) -> NTSTATUS {
    acquire_for_section_as(fo, volume, PAGE_READONLY)
}

/// `PAGE_READONLY`, `PAGE_READWRITE`.
const PAGE_READONLY: u32 = 0x02;
const PAGE_READWRITE: u32 = 0x04;

fn acquire_for_section_as(fo: usize, volume: PFLT_VOLUME, protection: u32) -> NTSTATUS {
    let mut req = simple_request(
        major::ACQUIRE_FOR_SECTION_SYNCHRONIZATION,
        0,
        fo,
        volume,
        None,
    );
    req.kind = Kind::FsFilter;
    req.params.AcquireForSectionSynchronization = AcquireForSectionSynchronizationParameters {
        SyncType: SyncTypeCreateSection,
        PageProtection: protection,
        OutputInformation: std::ptr::null_mut(),
        Flags: 0,
        AllocationAttributes: 0x0800_0000, // SEC_COMMIT
    };
    io::dispatch(&req, fs_noop).status
}

// ---------------------------------------------------------------------------------------
// Information, directories, FSCTLs
// ---------------------------------------------------------------------------------------

/// NtQueryInformationFile with a buffer of `length` bytes.
pub fn query_information(handle: Handle, class: i32, length: usize) -> (NTSTATUS, Vec<u8>) {
    let Ok((fo, volume)) = handle_object(handle) else {
        return (STATUS_INVALID_HANDLE, Vec::new());
    };
    // NtQueryInformationFile tries the file system's FastIoQueryBasicInfo /
    // FastIoQueryStandardInfo first for these two classes (NTFS has both), with a buffer
    // of at least the structure's size; a filter that refuses fast I/O
    // (FLT_PREOP_DISALLOW_FASTIO) sends it down as an IRP instead.
    let fast_size = match class {
        FILE_BASIC_INFORMATION_CLASS => Some(40),
        FILE_STANDARD_INFORMATION_CLASS => Some(24),
        _ => None,
    };
    if let Some(size) = fast_size
        && length >= size
    {
        let mut buffer = vec![0u8; length];
        let mut req = simple_request(major::QUERY_INFORMATION, 0, fo, volume, None);
        req.kind = Kind::FastIo;
        req.params.QueryFileInformation.Length = size as u32;
        req.params.QueryFileInformation.FileInformationClass = class;
        req.params.QueryFileInformation.InfoBuffer = buffer.as_mut_ptr().cast();
        let done = io::dispatch(&req, fs_query_information);
        if !done.refused {
            buffer.truncate(done.information.min(length));
            return (done.status, buffer);
        }
    }
    query_information_on(fo, volume, class, length, None)
}

/// FileBasicInformation and FileStandardInformation: the classes with fast-I/O entries.
const FILE_BASIC_INFORMATION_CLASS: i32 = 4;
const FILE_STANDARD_INFORMATION_CLASS: i32 = 5;

pub(crate) fn query_information_on(
    fo: usize,
    volume: PFLT_VOLUME,
    class: i32,
    length: usize,
    instance: Option<PFLT_INSTANCE>,
) -> (NTSTATUS, Vec<u8>) {
    let mut buffer = vec![0u8; length];
    let mut req = simple_request(
        major::QUERY_INFORMATION,
        irp::SYNCHRONOUS_API,
        fo,
        volume,
        instance,
    );
    req.params.QueryFileInformation.Length = length as u32;
    req.params.QueryFileInformation.FileInformationClass = class;
    req.params.QueryFileInformation.InfoBuffer = buffer.as_mut_ptr().cast();
    let done = io::dispatch(&req, fs_query_information);
    buffer.truncate(done.information.min(length));
    (done.status, buffer)
}

/// FilePositionInformation: the I/O manager answers from the file object.
const FILE_POSITION_INFORMATION: i32 = 14;

fn fs_query_information(cbd: &mut Cbd, _: &FsCall) -> (NTSTATUS, usize) {
    // SAFETY: the query parameters of this operation.
    let q = unsafe { cbd.iopb.Parameters.QueryFileInformation };
    let fo = cbd.iopb.TargetFileObject as usize;
    let bytes = if q.FileInformationClass == FILE_POSITION_INFORMATION {
        if q.Length < 8 {
            return (
                windows_sys::Win32::Foundation::STATUS_INFO_LENGTH_MISMATCH,
                0,
            );
        }
        // SAFETY: a live file object.
        let position = unsafe { (*cbd.iopb.TargetFileObject).CurrentByteOffset };
        (STATUS_SUCCESS, position.to_le_bytes().to_vec())
    } else {
        let r = with_kernel(|k| {
            let f = k.io.files.get(&fo)?;
            let open = f.open?;
            let v = k.volumes.iter().find(|v| v.handle == f.volume)?;
            Some(v.fs.query_information(open, q.FileInformationClass, q.Length as usize))
        });
        r.unwrap_or((STATUS_INVALID_PARAMETER, Vec::new()))
    };
    let n = bytes.1.len().min(q.Length as usize);
    // SAFETY: InfoBuffer holds Length >= n bytes.
    unsafe { std::ptr::copy_nonoverlapping(bytes.1.as_ptr(), q.InfoBuffer.cast::<u8>(), n) };
    (bytes.0, n)
}

/// NtSetInformationFile.
pub fn set_information(handle: Handle, class: i32, input: &[u8]) -> NTSTATUS {
    let Ok((fo, volume)) = handle_object(handle) else {
        return STATUS_INVALID_HANDLE;
    };
    set_information_on(fo, volume, class, input, None)
}

pub(crate) fn set_information_on(
    fo: usize,
    volume: PFLT_VOLUME,
    class: i32,
    input: &[u8],
    instance: Option<PFLT_INSTANCE>,
) -> NTSTATUS {
    // A rename or link names its target, which the I/O manager (IopOpenLinkOrRenameTarget,
    // and FltMgr for a filter's FltSetInformationFile) opens before any filter sees the
    // request: a target on another volume fails there with STATUS_NOT_SAME_DEVICE, and
    // no filter ever sees it (fs_set_information keeps the check for direct callers).
    if matches!(
        class,
        FILE_RENAME_INFORMATION
            | FILE_RENAME_INFORMATION_EX
            | FILE_LINK_INFORMATION
            | FILE_LINK_INFORMATION_EX
    ) && let Ok((target, _, _)) = rename_target(input, class)
        && target != volume
    {
        return windows_sys::Win32::Foundation::STATUS_NOT_SAME_DEVICE;
    }
    let mut buffer = input.to_vec();
    let mut req = simple_request(
        major::SET_INFORMATION,
        irp::SYNCHRONOUS_API,
        fo,
        volume,
        instance,
    );
    req.params.SetFileInformation.Length = buffer.len() as u32;
    req.params.SetFileInformation.FileInformationClass = class;
    req.params.SetFileInformation.InfoBuffer = buffer.as_mut_ptr().cast();
    io::dispatch(&req, fs_set_information).status
}

/// FileAllocationInformation, FileEndOfFileInformation.
const FILE_ALLOCATION_INFORMATION: i32 = 19;
const FILE_END_OF_FILE_INFORMATION: i32 = 20;

/// FileRenameInformation, FileRenameInformationEx.
const FILE_RENAME_INFORMATION: i32 = 10;
const FILE_RENAME_INFORMATION_EX: i32 = 65;
/// FileLinkInformation, FileLinkInformationEx: the same layout as the rename classes
/// (FILE_LINK_INFORMATION(_EX)), FILE_LINK_REPLACE_IF_EXISTS being bit 0 of Flags.
const FILE_LINK_INFORMATION: i32 = 11;
const FILE_LINK_INFORMATION_EX: i32 = 72;

pub(crate) fn fs_set_information(cbd: &mut Cbd, _: &FsCall) -> (NTSTATUS, usize) {
    // SAFETY: the set parameters of this operation.
    let s = unsafe { cbd.iopb.Parameters.SetFileInformation };
    let fo = cbd.iopb.TargetFileObject as usize;
    // SAFETY: FileEndOfFileInformation: the union holds ReplaceIfExists/AdvanceOnly.
    let advance_only = unsafe { s.Anonymous.Anonymous.AdvanceOnly } != 0;
    if s.FileInformationClass == FILE_END_OF_FILE_INFORMATION && advance_only {
        // The cache manager's CcSetValidData: NTFS moves its valid data length (which
        // the model does not keep: reads past it return the zeros the disk holds) and
        // never end of file.
        return (STATUS_SUCCESS, 0);
    }
    let input = if s.Length == 0 || s.InfoBuffer.is_null() {
        Vec::new()
    } else {
        // SAFETY: InfoBuffer holds Length bytes.
        unsafe { std::slice::from_raw_parts(s.InfoBuffer.cast::<u8>(), s.Length as usize) }.to_vec()
    };
    let now = super::now();
    let class = s.FileInformationClass;
    let names = matches!(
        class,
        FILE_RENAME_INFORMATION
            | FILE_RENAME_INFORMATION_EX
            | FILE_LINK_INFORMATION
            | FILE_LINK_INFORMATION_EX
    );
    let rename = if names {
        match rename_target(&input, class) {
            Ok(t) => Some(t),
            Err(status) => return (status, 0),
        }
    } else {
        None
    };
    let link = matches!(class, FILE_LINK_INFORMATION | FILE_LINK_INFORMATION_EX);
    let result = with_kernel(|k| {
        let f = k.io.files.get(&fo)?;
        let (volume, open, file) = (f.volume, f.open?, f.file);
        let v = k.volumes.iter_mut().find(|v| v.handle == volume)?;
        let status = match &rename {
            // The I/O manager's check: a name on another volume cannot be given.
            Some((target, _, _)) if *target != volume => {
                windows_sys::Win32::Foundation::STATUS_NOT_SAME_DEVICE
            }
            Some((_, path, replace)) if link => v.fs.link(open, path, *replace, now),
            Some((_, path, replace)) => v.fs.rename(open, path, *replace, now),
            None => {
                v.fs.set_information(open, s.FileInformationClass, &input, now)
            }
        };
        Some((status, volume, file))
    });
    match result {
        Some((status, volume, Some(file))) => {
            if status >= 0
                && (s.FileInformationClass == FILE_END_OF_FILE_INFORMATION
                    || s.FileInformationClass == FILE_ALLOCATION_INFORMATION)
                && let Some(size) = size_of(volume, file)
            {
                truncate_cache(volume, file, size);
            }
            purge_cache(volume, file);
            (status, 0)
        }
        Some((status, _, None)) => (status, 0),
        None => (STATUS_INVALID_PARAMETER, 0),
    }
}

/// FILE_RENAME_INFORMATION: ReplaceIfExists (or Flags), RootDirectory, FileNameLength,
/// FileName. The model takes a full path (`\??\C:\…`, `C:\…`) on the same volume.
fn rename_target(input: &[u8], class: i32) -> Result<(PFLT_VOLUME, String, bool), NTSTATUS> {
    if input.len() < 20 {
        return Err(windows_sys::Win32::Foundation::STATUS_INFO_LENGTH_MISMATCH);
    }
    let replace = if class == FILE_RENAME_INFORMATION_EX || class == FILE_LINK_INFORMATION_EX {
        u32::from_le_bytes([input[0], input[1], input[2], input[3]]) & 1 != 0
    } else {
        input[0] != 0
    };
    let len = u32::from_le_bytes([input[16], input[17], input[18], input[19]]) as usize;
    let name = input.get(20..20 + len).ok_or(STATUS_INVALID_PARAMETER)?;
    let units: Vec<u16> = name
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    let path = String::from_utf16_lossy(&units);
    let (volume, rel) = resolve(&path).map_err(|_| STATUS_OBJECT_NAME_INVALID)?;
    Ok((volume, rel, replace))
}

/// NtQueryDirectoryFile.
pub fn query_directory(
    handle: Handle,
    class: i32,
    pattern: Option<&str>,
    restart: bool,
    single: bool,
    length: usize,
) -> (NTSTATUS, Vec<u8>) {
    let Ok((fo, volume)) = handle_object(handle) else {
        return (STATUS_INVALID_HANDLE, Vec::new());
    };
    let mut buffer = vec![0u8; length];
    let units: Vec<u16> = pattern.unwrap_or("").encode_utf16().collect();
    let mut name = UNICODE_STRING {
        Length: (units.len() * 2) as u16,
        MaximumLength: (units.len() * 2) as u16,
        Buffer: units.as_ptr().cast_mut(),
    };
    let mut req = simple_request(
        major::DIRECTORY_CONTROL,
        irp::SYNCHRONOUS_API,
        fo,
        volume,
        None,
    );
    req.minor = 1; // IRP_MN_QUERY_DIRECTORY
    req.operation_flags = u8::from(restart) | (u8::from(single) << 1);
    req.params.DirectoryControl.QueryDirectory.Length = length as u32;
    if pattern.is_some() {
        req.params.DirectoryControl.QueryDirectory.FileName = &mut name;
    }
    req.params
        .DirectoryControl
        .QueryDirectory
        .FileInformationClass = class;
    req.params.DirectoryControl.QueryDirectory.DirectoryBuffer = buffer.as_mut_ptr().cast();
    let done = io::dispatch(&req, fs_query_directory);
    buffer.truncate(done.information.min(length));
    (done.status, buffer)
}

fn fs_query_directory(cbd: &mut Cbd, _: &FsCall) -> (NTSTATUS, usize) {
    // SAFETY: the directory-control parameters of this operation.
    let q = unsafe { cbd.iopb.Parameters.DirectoryControl };
    // SAFETY: the query-directory member of it, for IRP_MN_QUERY_DIRECTORY.
    let q = unsafe { q.QueryDirectory };
    let fo = cbd.iopb.TargetFileObject as usize;
    // SAFETY: FileName is NULL or a UNICODE_STRING the issuer (or a filter) keeps alive.
    let pattern = unsafe { q.FileName.as_ref() }.map(|n| {
        if n.Buffer.is_null() {
            String::new()
        } else {
            // SAFETY: Length bytes at Buffer.
            let units = unsafe { std::slice::from_raw_parts(n.Buffer, usize::from(n.Length) / 2) };
            String::from_utf16_lossy(units)
        }
    });
    let flags = cbd.iopb.OperationFlags;
    let result = with_kernel(|k| {
        let f = k.io.files.get(&fo)?;
        let open = f.open?;
        let v = k.volumes.iter_mut().find(|v| v.handle == f.volume)?;
        Some(v.fs.query_directory(
            open,
            q.FileInformationClass,
            pattern.as_deref().filter(|p| !p.is_empty()),
            flags & 1 != 0,
            flags & 2 != 0,
            q.Length as usize,
        ))
    });
    let (status, bytes) = result.unwrap_or((STATUS_INVALID_PARAMETER, Vec::new()));
    let n = bytes.len().min(q.Length as usize);
    // SAFETY: DirectoryBuffer holds Length >= n bytes.
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), q.DirectoryBuffer.cast::<u8>(), n) };
    (status, n)
}

/// NtFsControlFile with a METHOD_BUFFERED code.
pub fn fs_control(handle: Handle, code: u32, input: &[u8], output: usize) -> (NTSTATUS, Vec<u8>) {
    let Ok((fo, volume)) = handle_object(handle) else {
        return (STATUS_INVALID_HANDLE, Vec::new());
    };
    // The I/O manager checks the access the control code demands against the handle.
    let required = (code >> 14) & 3;
    let access = with_kernel(|k| k.io.files.get(&fo).map_or(0, |f| f.access));
    if (required & 1 != 0 && access & FILE_READ_DATA == 0)
        || (required & 2 != 0 && access & FILE_WRITE_DATA == 0)
    {
        return (STATUS_ACCESS_DENIED, Vec::new());
    }
    // MS-FSA: setting or deleting a reparse point needs FILE_WRITE_DATA or
    // FILE_WRITE_ATTRIBUTES on the handle (the codes themselves say FILE_ANY_ACCESS).
    const REPARSE_WRITES: [u32; 3] = [0x0009_00A4, 0x0009_040C, 0x0009_00AC];
    if REPARSE_WRITES.contains(&code) && access & (FILE_WRITE_DATA | 0x100) == 0 {
        return (STATUS_ACCESS_DENIED, Vec::new());
    }
    fs_control_on(fo, volume, code, input, output, None, 1)
}

pub(crate) fn fs_control_on(
    fo: usize,
    volume: PFLT_VOLUME,
    code: u32,
    input: &[u8],
    output: usize,
    instance: Option<PFLT_INSTANCE>,
    requestor_mode: i8,
) -> (NTSTATUS, Vec<u8>) {
    if code == FSCTL_READ_FILE_USN_DATA {
        return fs_control_neither(fo, volume, code, input, output, instance, requestor_mode);
    }
    if code & 3 != 0 {
        // Only METHOD_BUFFERED codes are modelled, and FSCTL_READ_FILE_USN_DATA.
        return (STATUS_INVALID_DEVICE_REQUEST, Vec::new());
    }
    if code == FSCTL_SET_ZERO_DATA
        && let Some(file) = with_kernel(|k| k.io.files.get(&fo).and_then(|f| f.file))
    {
        // NTFS flushes (and then purges) the cached range before it zeroes the disk.
        cache::flush_pages(fo, volume, file, None, Writer::InPlace);
    }
    let mut system = vec![0u8; input.len().max(output)];
    system[..input.len()].copy_from_slice(input);
    let mut req = simple_request(
        major::FILE_SYSTEM_CONTROL,
        irp::SYNCHRONOUS_API,
        fo,
        volume,
        instance,
    );
    req.requestor_mode = requestor_mode;
    req.minor = 0; // IRP_MN_USER_FS_REQUEST
    req.params.FileSystemControl.Buffered.OutputBufferLength = output as u32;
    req.params.FileSystemControl.Buffered.InputBufferLength = input.len() as u32;
    req.params.FileSystemControl.Buffered.FsControlCode = code;
    req.params.FileSystemControl.Buffered.SystemBuffer = system.as_mut_ptr().cast();
    let done = io::dispatch(&req, fs_fs_control);
    system.truncate(done.information.min(output));
    (done.status, system)
}

/// `FSCTL_READ_FILE_USN_DATA` (METHOD_NEITHER), `FSCTL_SET_ZERO_DATA`.
const FSCTL_READ_FILE_USN_DATA: u32 = super::ntfs::usn::FSCTL_READ_FILE_USN_DATA;
const FSCTL_SET_ZERO_DATA: u32 = 0x0009_80C8;

/// A METHOD_NEITHER FSCTL: the file system gets the caller's buffers themselves
/// (Parameters.FileSystemControl.Neither).
fn fs_control_neither(
    fo: usize,
    volume: PFLT_VOLUME,
    code: u32,
    input: &[u8],
    output: usize,
    instance: Option<PFLT_INSTANCE>,
    requestor_mode: i8,
) -> (NTSTATUS, Vec<u8>) {
    let mut input = input.to_vec();
    let mut out = vec![0u8; output];
    let mut req = simple_request(
        major::FILE_SYSTEM_CONTROL,
        irp::SYNCHRONOUS_API,
        fo,
        volume,
        instance,
    );
    req.requestor_mode = requestor_mode;
    req.minor = 0; // IRP_MN_USER_FS_REQUEST
    req.params.FileSystemControl.Neither.OutputBufferLength = output as u32;
    req.params.FileSystemControl.Neither.InputBufferLength = input.len() as u32;
    req.params.FileSystemControl.Neither.FsControlCode = code;
    req.params.FileSystemControl.Neither.InputBuffer = input.as_mut_ptr().cast();
    req.params.FileSystemControl.Neither.OutputBuffer = out.as_mut_ptr().cast();
    let done = io::dispatch(&req, fs_fs_control);
    out.truncate(done.information.min(output));
    (done.status, out)
}

fn fs_fs_control(cbd: &mut Cbd, _: &FsCall) -> (NTSTATUS, usize) {
    // SAFETY: the FSCTL parameters of this operation.
    let control = unsafe { cbd.iopb.Parameters.FileSystemControl };
    // SAFETY: FsControlCode lies at the same offset in every method's member.
    let code = unsafe { control.Buffered.FsControlCode };
    if code == FSCTL_READ_FILE_USN_DATA {
        return fs_read_usn(cbd);
    }
    // SAFETY: the FSCTL parameters of this operation.
    let c = unsafe { cbd.iopb.Parameters.FileSystemControl };
    // SAFETY: the METHOD_BUFFERED member, the only method the model issues.
    let c = unsafe { c.Buffered };
    let fo = cbd.iopb.TargetFileObject as usize;
    let input = if c.InputBufferLength == 0 || c.SystemBuffer.is_null() {
        Vec::new()
    } else {
        // SAFETY: SystemBuffer holds max(input, output) bytes.
        unsafe {
            std::slice::from_raw_parts(c.SystemBuffer.cast::<u8>(), c.InputBufferLength as usize)
        }
        .to_vec()
    };
    let now = super::now();
    let result = with_kernel(|k| {
        let f = k.io.files.get(&fo)?;
        let (volume, open, file) = (f.volume, f.open?, f.file);
        let v = k.volumes.iter_mut().find(|v| v.handle == volume)?;
        Some((
            v.fs.fsctl(
                open,
                c.FsControlCode,
                &input,
                c.OutputBufferLength as usize,
                now,
            ),
            volume,
            file,
        ))
    });
    let Some(((status, bytes), volume, file)) = result else {
        return (STATUS_INVALID_PARAMETER, 0);
    };
    if let Some(file) = file {
        purge_cache(volume, file);
    }
    let n = bytes.len().min(c.OutputBufferLength as usize);
    if n > 0 {
        // SAFETY: SystemBuffer holds at least OutputBufferLength >= n bytes.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), c.SystemBuffer.cast::<u8>(), n) };
    }
    (status, n)
}

/// FSCTL_READ_FILE_USN_DATA through Parameters.FileSystemControl.Neither.
fn fs_read_usn(cbd: &mut Cbd) -> (NTSTATUS, usize) {
    // SAFETY: the FSCTL parameters of this operation.
    let control = unsafe { cbd.iopb.Parameters.FileSystemControl };
    // SAFETY: a METHOD_NEITHER FSCTL: the union holds the Neither parameters.
    let c = unsafe { control.Neither };
    let fo = cbd.iopb.TargetFileObject as usize;
    let input = if c.InputBufferLength == 0 || c.InputBuffer.is_null() {
        Vec::new()
    } else {
        // SAFETY: InputBuffer holds InputBufferLength bytes (the issuer's).
        unsafe {
            std::slice::from_raw_parts(c.InputBuffer.cast::<u8>(), c.InputBufferLength as usize)
        }
        .to_vec()
    };
    let now = super::now();
    let result = with_kernel(|k| {
        let f = k.io.files.get(&fo)?;
        let (volume, open) = (f.volume, f.open?);
        let v = k.volumes.iter_mut().find(|v| v.handle == volume)?;
        Some(v.fs.fsctl(
            open,
            FSCTL_READ_FILE_USN_DATA,
            &input,
            c.OutputBufferLength as usize,
            now,
        ))
    });
    let Some((status, bytes)) = result else {
        return (STATUS_INVALID_PARAMETER, 0);
    };
    let n = bytes.len().min(c.OutputBufferLength as usize);
    if n > 0 && !c.OutputBuffer.is_null() {
        // SAFETY: OutputBuffer holds OutputBufferLength >= n bytes (the issuer's).
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), c.OutputBuffer.cast::<u8>(), n) };
    }
    (status, n)
}

// ---------------------------------------------------------------------------------------
// What tests and scenarios read
// ---------------------------------------------------------------------------------------

/// The NTFS ground truth of a volume, read below every filter.
pub fn with_volume<R>(
    path: &str,
    f: impl FnOnce(&super::ntfs::Ntfs, &str) -> R,
) -> Result<R, NTSTATUS> {
    let (volume, rel) = resolve(path)?;
    with_kernel(|k| {
        let v = k
            .volumes
            .iter()
            .find(|v| v.handle == volume)
            .ok_or(STATUS_OBJECT_PATH_NOT_FOUND)?;
        Ok(f(&v.fs, &rel))
    })
}

/// A file a driver opened itself (FltCreateFileEx2) and still holds a handle to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelOpen {
    /// The file it is open on.
    pub file: Option<FileId>,
    /// That file's volume-relative path now (after any rename); `None` once it has none.
    pub path: Option<String>,
    /// The instance the create started below (`None`: the top of the stack, where every
    /// filter of the volume saw it).
    pub below: Option<PFLT_INSTANCE>,
    /// The create options the file system received (`FILE_OPEN_BY_FILE_ID`, …).
    pub options: u32,
    /// The access the create asked for.
    pub access: u32,
}

/// The files drivers hold open through kernel handles (FltCreateFileEx2), for tests to
/// see how a driver opened what it writes.
pub fn kernel_opens() -> Vec<KernelOpen> {
    with_kernel(|k| {
        k.io.handles
            .values()
            .filter(|e| e.kernel)
            .filter_map(|e| k.io.files.get(&e.file_object))
            .map(|f| KernelOpen {
                file: f.file,
                path: f.file.and_then(|id| {
                    k.volumes
                        .iter()
                        .find(|v| v.handle == f.volume)
                        .and_then(|v| v.fs.path_of(id))
                }),
                below: f.instance,
                options: f.options,
                access: f.access,
            })
            .collect()
    })
}

/// Handles open in process `pid`.
pub fn handles_of(pid: u32) -> Vec<Handle> {
    with_kernel(|k| {
        k.io.handles
            .iter()
            .filter(|(_, e)| e.pid == pid && !e.kernel)
            .map(|(h, _)| Handle(*h))
            .collect()
    })
}

// ---------------------------------------------------------------------------------------
// Query by name and cancellation
// ---------------------------------------------------------------------------------------

/// NtQueryInformationByName (what GetFileAttributesEx and friends use): FltMgr's
/// IRP_MJ_QUERY_OPEN first; if a filter refuses it (FLT_PREOP_DISALLOW_FSFILTER_IO) or
/// the file system cannot answer without a full open (a reparse point), the I/O manager
/// opens, queries and closes.
pub fn query_by_name(path: &str, class: i32, length: usize) -> (NTSTATUS, Vec<u8>) {
    query_open_kind(path, class, length, major::QUERY_OPEN)
}

/// IRP_MJ_NETWORK_QUERY_OPEN, as the SMB server asks for FileNetworkOpenInformation.
pub fn network_query_open(path: &str) -> (NTSTATUS, Vec<u8>) {
    query_open_kind(
        path,
        FILE_NETWORK_OPEN_INFORMATION,
        56,
        major::NETWORK_QUERY_OPEN,
    )
}

/// FileNetworkOpenInformation.
const FILE_NETWORK_OPEN_INFORMATION: i32 = 34;
/// What the file system answers when it cannot serve a query-open without a full open.
const QUERY_OPEN_FALLBACK: NTSTATUS = 0x7e57_0f0f;

fn query_open_kind(path: &str, class: i32, length: usize, op: u8) -> (NTSTATUS, Vec<u8>) {
    let (volume, rel) = match resolve(path) {
        Ok(v) => v,
        Err(status) => return (status, Vec::new()),
    };
    let units: Vec<u16> = rel.encode_utf16().collect();
    let fo = new_file_object(volume, &units, 0x0010_0080, 0x20);
    let mut buffer = vec![0u8; length];
    let mut returned = length as u32;
    let mut req = simple_request(op, 0, fo, volume, None);
    req.kind = Kind::FastIo;
    if op == major::QUERY_OPEN {
        req.params.QueryOpen.FileInformation = buffer.as_mut_ptr().cast();
        req.params.QueryOpen.Length = &mut returned;
        req.params.QueryOpen.FileInformationClass = class;
    } else {
        req.params.NetworkQueryOpen = NetworkQueryOpenParameters {
            Irp: std::ptr::null_mut(),
            NetworkInformation: buffer.as_mut_ptr().cast(),
        };
    }
    let done = io::dispatch(&req, fs_query_open);
    // The temporary file object never reached the file system as an open.
    with_kernel(|k| {
        if let Some(f) = k.io.files.get_mut(&fo) {
            f.refs = 1;
        }
    });
    close_file_object(fo);
    if !done.refused && done.status != QUERY_OPEN_FALLBACK {
        let n = if op == major::QUERY_OPEN {
            returned as usize
        } else {
            length
        };
        buffer.truncate(n.min(length));
        return (done.status, buffer);
    }
    // The slow path: a full open (through every filter), a query, a close.
    let params = OpenParams {
        access: 0x0010_0080, // FILE_READ_ATTRIBUTES | SYNCHRONIZE
        ..OpenParams::default()
    };
    match create(path, &params) {
        Ok(h) => {
            let r = query_information(h, class, length);
            close(h);
            r
        }
        Err(status) => (status, Vec::new()),
    }
}

fn fs_query_open(cbd: &mut Cbd, _: &FsCall) -> (NTSTATUS, usize) {
    let fo = cbd.iopb.TargetFileObject as usize;
    let major = cbd.iopb.MajorFunction;
    let (class, out, len_ptr, cap) = if major == major::QUERY_OPEN {
        // SAFETY: the query-open parameters of this operation.
        let q = unsafe { cbd.iopb.Parameters.QueryOpen };
        // SAFETY: Length points at the issuer's length.
        let cap = unsafe { *q.Length } as usize;
        (
            q.FileInformationClass,
            q.FileInformation.cast::<u8>(),
            q.Length,
            cap,
        )
    } else {
        // SAFETY: the network-query-open parameters of this operation.
        let q = unsafe { cbd.iopb.Parameters.NetworkQueryOpen };
        (
            FILE_NETWORK_OPEN_INFORMATION,
            q.NetworkInformation.cast::<u8>(),
            std::ptr::null_mut(),
            56,
        )
    };
    // SAFETY: the temporary file object's name.
    let name = unsafe { &(*cbd.iopb.TargetFileObject).FileName };
    // SAFETY: Length bytes at Buffer.
    let units = unsafe { std::slice::from_raw_parts(name.Buffer, usize::from(name.Length) / 2) };
    let path = String::from_utf16_lossy(units);
    let now = super::now();
    let answer = with_kernel(|k| {
        let volume = k.io.files.get(&fo)?.volume;
        let v = k.volumes.iter_mut().find(|v| v.handle == volume)?;
        let request = CreateRequest {
            path: &path,
            disposition: 1,
            options: 0,
            desired_access: 0x0010_0080,
            share_access: 7,
            open_reparse: &[],
            attributes: 0,
            now,
            id_name: &[],
        };
        Some(match v.fs.create(&request) {
            Ok(CreateOutcome::Opened { open, .. }) => {
                let r = v.fs.query_information(open, class, cap);
                v.fs.cleanup(open);
                Ok(r)
            }
            Ok(CreateOutcome::Reparse { .. }) => Err(QUERY_OPEN_FALLBACK),
            Err(status) => Err(status),
        })
    });
    match answer {
        Some(Ok((status, bytes))) => {
            let n = bytes.len().min(cap);
            // SAFETY: the issuer's buffer holds `cap` >= n bytes.
            unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), out, n) };
            if !len_ptr.is_null() {
                // SAFETY: the issuer's length.
                unsafe { *len_ptr = n as u32 };
            }
            (status, n)
        }
        Some(Err(status)) => (status, 0),
        None => (STATUS_INVALID_PARAMETER, 0),
    }
}

/// CancelIoEx on a handle: cancels every operation in flight on its file object.
pub fn cancel_io(handle: Handle) -> usize {
    let Ok((fo, _)) = handle_object(handle) else {
        return 0;
    };
    let ops = io::live_ops(|_, cbd| cbd.iopb.TargetFileObject as usize == fo);
    ops.into_iter().filter(|op| io::cancel(*op)).count()
}

/// Thread or process termination: cancels every operation that process has in flight.
pub fn cancel_process_io(pid: u32) -> usize {
    let ops = io::live_ops(|op, _| op.requestor == pid);
    ops.into_iter().filter(|op| io::cancel(*op)).count()
}
