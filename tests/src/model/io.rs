//! FltMgr's I/O path: callback data built the way FltMgr builds it, pre- and
//! post-operation dispatch with every outcome a filter may return, pending and resuming,
//! reissue, dirty parameters, cancellation, and the request the file system finally sees.
//!
//! Owns: every live FLT_CALLBACK_DATA (keyed by its address) and what the model knows
//! about it beyond the structure (requestor, stage, pend/resume slot, cancel state), and
//! the rundown protection it holds on the instances it is in (FltMgr takes it before it
//! calls an instance's pre-operation, an instance being torn down refuses it, and the
//! operation then passes that instance by; `teardown.rs` waits for it).
//! Does not own: file objects and the file system work itself (`files.rs`).
//!
//! Checks what FltMgr and Driver Verifier check: legal callback return values for the
//! kind of operation, completion contexts only with a post-operation, PENDING only for
//! IRP operations and resumed exactly once, parameters changed only with
//! FltSetCallbackDataDirty, STATUS_PENDING never used as a completion status, reissue
//! only from a post-operation of a synchronized IRP operation, open-reparse entries that
//! stay allocated while linked into their create and are removed before it completes.

use std::ffi::c_void;
use std::sync::{Arc, Condvar, Mutex, PoisonError};

use cloudflt_driver::nt::layout::{FLT_IO_PARAMETER_BLOCK, FLT_PARAMETERS};
use windows_sys::Wdk::Foundation::FILE_OBJECT;
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FLT_CALLBACK_DATA, FLT_POSTOP_DISALLOW_FSFILTER_IO, FLT_POSTOP_FINISHED_PROCESSING,
    FLT_POSTOP_MORE_PROCESSING_REQUIRED, FLT_PREOP_CALLBACK_STATUS, FLT_PREOP_COMPLETE,
    FLT_PREOP_DISALLOW_FASTIO, FLT_PREOP_DISALLOW_FSFILTER_IO, FLT_PREOP_PENDING,
    FLT_PREOP_SUCCESS_NO_CALLBACK, FLT_PREOP_SUCCESS_WITH_CALLBACK, FLT_PREOP_SYNCHRONIZE,
    FLT_RELATED_OBJECTS, FLTFL_CALLBACK_DATA_DIRTY, FLTFL_CALLBACK_DATA_FAST_IO_OPERATION,
    FLTFL_CALLBACK_DATA_FS_FILTER_OPERATION, FLTFL_CALLBACK_DATA_GENERATED_IO,
    FLTFL_CALLBACK_DATA_IRP_OPERATION, FLTFL_CALLBACK_DATA_POST_OPERATION,
    FLTFL_CALLBACK_DATA_REISSUED_IO, FLTFL_OPERATION_REGISTRATION_SKIP_CACHED_IO,
    FLTFL_OPERATION_REGISTRATION_SKIP_NON_CACHED_NON_PAGING_IO,
    FLTFL_OPERATION_REGISTRATION_SKIP_PAGING_IO, IRP_MJ_QUERY_OPEN,
    PFLT_COMPLETE_CANCELED_CALLBACK, PFLT_FILTER, PFLT_INSTANCE, PFLT_POST_OPERATION_CALLBACK,
    PFLT_PRE_OPERATION_CALLBACK, PFLT_VOLUME,
};
use windows_sys::Wdk::Storage::FileSystem::{
    OPEN_REPARSE_LIST_ENTRY, OPEN_REPARSE_POINT_TAG_ENCOUNTERED,
};
use windows_sys::Win32::Foundation::{
    HANDLE, NTSTATUS, STATUS_CANCELLED, STATUS_INVALID_PARAMETER, STATUS_PENDING, STATUS_SUCCESS,
};
use windows_sys::Win32::System::IO::{IO_STATUS_BLOCK, IO_STATUS_BLOCK_0};

use super::irql::{self, APC_LEVEL, DISPATCH_LEVEL, PASSIVE_LEVEL};
use super::ntfs::OpenReparseEntry;
use super::pool::Owner;
use super::process;
use super::sync::Key;
use super::{Kernel, Machine, with_kernel};

/// `IRP_MJ_READ` etc. as the byte FltMgr puts in MajorFunction.
pub(crate) mod major {
    pub(crate) const CREATE: u8 = 0;
    pub(crate) const CLOSE: u8 = 2;
    pub(crate) const READ: u8 = 3;
    pub(crate) const WRITE: u8 = 4;
    pub(crate) const FLUSH_BUFFERS: u8 = 9;
    pub(crate) const QUERY_INFORMATION: u8 = 5;
    pub(crate) const SET_INFORMATION: u8 = 6;
    pub(crate) const DIRECTORY_CONTROL: u8 = 12;
    pub(crate) const FILE_SYSTEM_CONTROL: u8 = 13;
    pub(crate) const CLEANUP: u8 = 18;
    pub(crate) const QUERY_OPEN: u8 = super::IRP_MJ_QUERY_OPEN as u8;
    pub(crate) const NETWORK_QUERY_OPEN: u8 = 0xF2;
    pub(crate) const ACQUIRE_FOR_SECTION_SYNCHRONIZATION: u8 = 0xFF;
}

/// `IRP_NOCACHE`, `IRP_PAGING_IO`, `IRP_SYNCHRONOUS_API`, `IRP_SYNCHRONOUS_PAGING_IO`.
pub(crate) mod irp {
    pub(crate) const NOCACHE: u32 = 0x1;
    pub(crate) const PAGING_IO: u32 = 0x2;
    pub(crate) const SYNCHRONOUS_API: u32 = 0x4;
    pub(crate) const SYNCHRONOUS_PAGING_IO: u32 = 0x40;
}

/// How the operation reaches FltMgr.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// An IRP.
    Irp,
    /// A fast I/O call (may be refused with DISALLOW_FASTIO, then comes again as an IRP).
    FastIo,
    /// A file-system filter callback (AcquireForSectionSynchronization and friends).
    FsFilter,
}

/// One operation as the issuer describes it.
pub(crate) struct Request {
    pub(crate) major: u8,
    pub(crate) minor: u8,
    pub(crate) irp_flags: u32,
    /// SL_* flags (Iopb->OperationFlags).
    pub(crate) operation_flags: u8,
    pub(crate) kind: Kind,
    pub(crate) params: FLT_PARAMETERS,
    pub(crate) file_object: *mut FILE_OBJECT,
    pub(crate) volume: PFLT_VOLUME,
    /// The process on whose behalf the I/O is done.
    pub(crate) requestor: u32,
    /// UserMode (1) or KernelMode (0).
    pub(crate) requestor_mode: i8,
    /// Filter-generated I/O: only instances below this one see it.
    pub(crate) below: Option<PFLT_INSTANCE>,
    /// The IRQL the operation arrives at.
    pub(crate) irql: u8,
}

/// How it ended.
#[derive(Debug, Clone)]
pub(crate) struct Completion {
    pub(crate) status: NTSTATUS,
    pub(crate) information: usize,
    /// A fast I/O or FS-filter operation a filter sent down the slow path
    /// (DISALLOW_FASTIO, DISALLOW_FSFILTER_IO).
    pub(crate) refused: bool,
}

/// The callback data and what hangs off it, in one allocation FltMgr would make. The
/// parameter block has the layout of 64-bit `fltKernel.h` (the driver's `nt::layout`), not
/// windows-sys's, which drops POINTER_ALIGNMENT: a filter reading a parameter at the wrong
/// offset reads the wrong bytes here, as it would on Windows.
#[repr(C)]
pub(crate) struct Cbd {
    pub(crate) data: FLT_CALLBACK_DATA,
    pub(crate) iopb: FLT_IO_PARAMETER_BLOCK,
}

/// Where a live operation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stage {
    Pre,
    PrePended,
    /// FltCompletePendedPreOperation has run; the pre-operation is over.
    Resumed,
    FileSystem,
    Post {
        synchronized: bool,
    },
    PostPended,
}

/// The pend/resume handshake between the issuing thread and whoever completes it.
#[derive(Default)]
pub(crate) struct Resume {
    slot: Mutex<Option<(i32, usize)>>,
    ready: Condvar,
}

impl Resume {
    fn wait(&self) -> (i32, usize) {
        let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(v) = slot.take() {
                return v;
            }
            slot = self
                .ready
                .wait(slot)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    pub(crate) fn complete(&self, status: i32, context: usize) {
        *self.slot.lock().unwrap_or_else(PoisonError::into_inner) = Some((status, context));
        self.ready.notify_all();
    }
}

/// What the model keeps about a live callback data.
pub(crate) struct OpState {
    pub(crate) requestor: u32,
    pub(crate) kind: Kind,
    pub(crate) stage: Stage,
    pub(crate) instance: PFLT_INSTANCE,
    pub(crate) resume: Arc<Resume>,
    pub(crate) cancelled: bool,
    pub(crate) cancel_routine: PFLT_COMPLETE_CANCELED_CALLBACK,
    /// FltCbdq this operation sits in, if any (cbdq.rs).
    pub(crate) queued_in: Option<usize>,
    /// OPEN_REPARSE_LIST entries added with FltAddOpenReparseEntry and not removed yet, in
    /// list order.
    pub(crate) open_reparse: Vec<LinkedEntry>,
    /// The head of the ECP's OPEN_REPARSE_LIST (a LIST_ENTRY: Flink, Blink), allocated by
    /// FltMgr with the first entry.
    pub(crate) open_reparse_head: Option<Box<[usize; 2]>>,
    /// Set by FltReissueSynchronousIo: the file system is to be called again.
    pub(crate) reissue: bool,
    /// Set by FltDoCompletionProcessingWhenSafe when it queued the safe callback: FltMgr
    /// itself marks the post-operation pended before its worker can run, so the worker's
    /// FltCompletePendedPostOperation may come before the post-operation has returned.
    pub(crate) deferred_post: bool,
    /// Who answers when FltMgr lets the operation through (again, on reissue).
    pub(crate) fs: FileSystem,
    /// The MDL FltLockUserBuffer built for the caller's buffer (fltio.rs).
    pub(crate) mdl: Option<LockedMdl>,
    /// The instances whose rundown protection the operation holds: from the moment
    /// FltMgr calls an instance's pre-operation until the operation no longer needs it
    /// (the pre-operation returned, pended or not, with no post-operation owed; or the
    /// post-operation returned, pended or not). Instance teardown waits for these
    /// (teardown.rs).
    pub(crate) held: Vec<PFLT_INSTANCE>,
}

/// An MDL FltMgr made for a METHOD_NEITHER buffer: its pages locked, and mapped into
/// system space on request. The system mapping is a distinct buffer standing for the
/// same physical pages: the operation's bytes are copied into it when it is mapped and
/// back to the caller's address when the operation completes, so only what is written
/// through the mapping reaches the caller (a write through the user address in a
/// post-operation is reported: kernel code cannot guard it).
pub(crate) struct LockedMdl {
    pub(crate) mdl: Box<windows_sys::Wdk::Foundation::MDL>,
    /// The caller's buffer.
    pub(crate) user: usize,
    pub(crate) len: usize,
    /// The system mapping, once MmMapLockedPagesSpecifyCache made it.
    pub(crate) mapping: Option<Box<[u8]>>,
    /// Set by FltLockUserBuffer, cleared by the dispatcher: the parameter change is
    /// FltMgr's, not the filter's.
    pub(crate) fresh: bool,
}

// SAFETY: the MDL's pointers describe the operation's own buffer; the model only touches
// them under its kernel lock or from the issuing thread.
unsafe impl Send for LockedMdl {}

/// An OPEN_REPARSE_LIST_ENTRY FltAddOpenReparseEntry linked into a create.
///
/// FltMgr links the caller's own memory into the ECP's list (it copies nothing), the file
/// system reads it and writes OPEN_REPARSE_POINT_TAG_ENCOUNTERED into it, and
/// FltRemoveOpenReparseEntry takes the same pointer. So the model keeps the pointer and
/// touches the memory only where the caller vouches for it: during the add, and later
/// only if it is still a live pool allocation of the driver (a block from
/// ExAllocatePool2, or a context from FltAllocateContext). An entry that is not one when
/// the file system reads or writes it (a stack local of the pre-operation, freed pool) is
/// reported and left alone, as is pool freed while an entry in it is linked.
#[derive(Clone, Copy)]
pub(crate) struct LinkedEntry {
    /// The caller's entry.
    pub(crate) ptr: usize,
    /// The filter that added it (FltMgr references it for the entry's lifetime).
    pub(crate) filter: PFLT_FILTER,
    /// Its tag as added, for FltAddOpenReparseEntry's duplicate check.
    pub(crate) tag: u32,
}

/// sizeof(OPEN_REPARSE_LIST_ENTRY): what the file system reads of each entry.
const ENTRY_SIZE: usize = std::mem::size_of::<OPEN_REPARSE_LIST_ENTRY>();

/// Whether the entry at `ptr` lies in a live pool allocation of the driver.
fn entry_is_live(k: &Kernel, ptr: usize) -> bool {
    k.pool
        .block_holding(ptr, ENTRY_SIZE)
        .is_some_and(|b| matches!(b.owner, Owner::Driver | Owner::FltMgr("context")))
}

fn dead_entry(k: &mut Kernel, ptr: usize, when: &str) {
    k.violation(
        "FltAddOpenReparseEntry",
        format!(
            "the OPEN_REPARSE_LIST_ENTRY at {ptr:#x} linked into this create is not a live pool allocation of the driver when the file system {when} (a stack local of the pre-operation, or freed memory): it must stay allocated until FltRemoveOpenReparseEntry takes it out"
        ),
    );
}

/// The entries linked into a create, as the file system reads them from the callers'
/// memory: (entry, pointer) pairs, dead entries reported and skipped.
fn read_entries(k: &mut Kernel, addr: usize) -> (Vec<OpenReparseEntry>, Vec<usize>) {
    let linked: Vec<usize> =
        k.io.ops
            .get(&addr)
            .map(|o| o.open_reparse.iter().map(|l| l.ptr).collect())
            .unwrap_or_default();
    let mut entries = Vec::new();
    let mut pointers = Vec::new();
    for ptr in linked {
        if !entry_is_live(k, ptr) {
            dead_entry(k, ptr, "reads it");
            continue;
        }
        // SAFETY: ENTRY_SIZE bytes inside a live pool block (checked above), plain data.
        let e = unsafe { std::ptr::read_unaligned(ptr as *const OPEN_REPARSE_LIST_ENTRY) };
        entries.push(OpenReparseEntry {
            tag: e.ReparseTag,
            flags: e.Flags,
            guid: (e.ReparseTag & 0x8000_0000 == 0).then_some(guid_bytes(&e.ReparseGuid)),
        });
        pointers.push(ptr);
    }
    (entries, pointers)
}

/// A GUID in its on-disk byte order, as reparse data carries it.
fn guid_bytes(guid: &windows_sys::core::GUID) -> [u8; 16] {
    let mut g = [0u8; 16];
    g[..4].copy_from_slice(&guid.data1.to_le_bytes());
    g[4..6].copy_from_slice(&guid.data2.to_le_bytes());
    g[6..8].copy_from_slice(&guid.data3.to_le_bytes());
    g[8..].copy_from_slice(&guid.data4);
    g
}

/// What NTFS does when a reparse point on the path matched the entry at `ptr`: sets
/// OPEN_REPARSE_POINT_TAG_ENCOUNTERED in the caller's entry.
pub(crate) fn mark_encountered(k: &mut Kernel, ptr: usize) {
    if !entry_is_live(k, ptr) {
        dead_entry(k, ptr, "writes OPEN_REPARSE_POINT_TAG_ENCOUNTERED into it");
        return;
    }
    let flags = (ptr + std::mem::offset_of!(OPEN_REPARSE_LIST_ENTRY, Flags)) as *mut u32;
    // SAFETY: the entry's Flags, inside a live pool block (checked above).
    let value = unsafe { flags.read_unaligned() };
    // SAFETY: as above.
    unsafe { flags.write_unaligned(value | OPEN_REPARSE_POINT_TAG_ENCOUNTERED) };
}

/// Rewrites the links of the create's open-reparse list as FltMgr keeps them (head, then
/// the entries in order, then back to the head): in the head, and in each entry whose
/// memory is known good, which is `added` (the caller's, during FltAddOpenReparseEntry)
/// and entries still in live pool.
fn relink(k: &mut Kernel, addr: usize, added: Option<usize>) {
    let Some(op) = k.io.ops.get_mut(&addr) else {
        return;
    };
    let pointers: Vec<usize> = op.open_reparse.iter().map(|l| l.ptr).collect();
    let head = op.open_reparse_head.get_or_insert_with(|| Box::new([0; 2]));
    let head_addr = head.as_ptr() as usize;
    head[0] = pointers.first().copied().unwrap_or(head_addr);
    head[1] = pointers.last().copied().unwrap_or(head_addr);
    for (i, &ptr) in pointers.iter().enumerate() {
        if Some(ptr) != added && !entry_is_live(k, ptr) {
            continue;
        }
        let next = pointers.get(i + 1).copied().unwrap_or(head_addr);
        let prev = if i == 0 { head_addr } else { pointers[i - 1] };
        // SAFETY: the entry's LIST_ENTRY (Flink, Blink) at its start, in memory the
        // caller vouches for during the add or in a live pool block.
        unsafe { (ptr as *mut [usize; 2]).write_unaligned([next, prev]) };
    }
}

/// Reports `api` freeing the pool block at `ptr` while an open-reparse entry in it is
/// still linked into a live create: the file system may still read it.
pub(crate) fn report_linked_entry_freed(k: &mut Kernel, api: &'static str, ptr: usize) {
    let Some(block) = k.pool.block(ptr) else {
        return;
    };
    let end = ptr + block.size;
    let linked =
        k.io.ops
            .values()
            .flat_map(|o| o.open_reparse.iter())
            .map(|l| l.ptr)
            .find(|p| (ptr..end).contains(p));
    if let Some(entry) = linked {
        k.violation(
            api,
            format!(
                "freed the pool block at {ptr:#x} while the OPEN_REPARSE_LIST_ENTRY at {entry:#x} in it is still linked into a create: FltRemoveOpenReparseEntry must take it out first"
            ),
        );
    }
}

/// One filter instance an operation passes through.
#[derive(Clone, Copy)]
struct Hook {
    filter: PFLT_FILTER,
    instance: PFLT_INSTANCE,
    pre: PFLT_PRE_OPERATION_CALLBACK,
    post: PFLT_POST_OPERATION_CALLBACK,
    flags: u32,
}

/// The file system below every filter: what the model does once FltMgr lets an
/// operation through.
pub(crate) type FileSystem = fn(&mut Cbd, &FsCall) -> (NTSTATUS, usize);

/// What the file system learns about the operation besides the callback data: the ECPs
/// FltMgr attached.
pub(crate) struct FsCall {
    /// The open-reparse entries, as read from the callers' memory.
    pub(crate) open_reparse: Vec<OpenReparseEntry>,
    /// Where each of them lives, for [`mark_encountered`].
    pub(crate) entries: Vec<usize>,
}

/// Sends `req` through every filter instance on its volume, then to `fs`, then back up
/// through the post-operations, and returns how it completed.
pub(crate) fn dispatch(req: &Request, fs: FileSystem) -> Completion {
    let hooks = with_kernel(|k| hooks(k, req));
    let mut flags = match req.kind {
        Kind::Irp => FLTFL_CALLBACK_DATA_IRP_OPERATION,
        Kind::FastIo => FLTFL_CALLBACK_DATA_FAST_IO_OPERATION,
        Kind::FsFilter => FLTFL_CALLBACK_DATA_FS_FILTER_OPERATION,
    };
    if req.below.is_some() {
        flags |= FLTFL_CALLBACK_DATA_GENERATED_IO;
    }
    // SAFETY: both structures are plain data for which all-zero is valid.
    let mut cbd: Box<Cbd> = Box::new(unsafe { std::mem::zeroed() });
    cbd.iopb = FLT_IO_PARAMETER_BLOCK {
        IrpFlags: req.irp_flags,
        MajorFunction: req.major,
        MinorFunction: req.minor,
        OperationFlags: req.operation_flags,
        Reserved: 0,
        TargetFileObject: req.file_object,
        TargetInstance: 0,
        Parameters: req.params,
    };
    cbd.data.Flags = flags;
    cbd.data.Thread = thread_object();
    cbd.data.Iopb = std::ptr::from_ref(&cbd.iopb).cast();
    cbd.data.RequestorMode = req.requestor_mode;
    cbd.data.IoStatus = status_block(STATUS_SUCCESS, 0);
    let addr = std::ptr::from_ref::<Cbd>(&cbd) as usize;
    with_kernel(|k| {
        k.io.ops.insert(
            addr,
            OpState {
                requestor: req.requestor,
                kind: req.kind,
                stage: Stage::Pre,
                instance: 0,
                resume: Arc::new(Resume::default()),
                cancelled: false,
                cancel_routine: None,
                queued_in: None,
                open_reparse: Vec::new(),
                open_reparse_head: None,
                reissue: false,
                deferred_post: false,
                fs,
                mdl: None,
                held: Vec::new(),
            },
        )
    });

    let mut posts: Vec<(Hook, usize, bool)> = Vec::new();
    let mut completed = false;
    let mut refused = false;
    for hook in &hooks {
        if skipped(hook.flags, req) {
            continue;
        }
        // An instance whose teardown began after the hooks were gathered refuses its
        // rundown protection: the operation passes it by.
        if !enter(addr, hook.instance) {
            continue;
        }
        let Some(pre) = hook.pre else {
            if hook.post.is_some() {
                posts.push((*hook, 0, false));
            } else {
                release(addr, hook.instance);
            }
            continue;
        };
        cbd.iopb.TargetInstance = hook.instance;
        let before = iopb_bytes(&cbd.iopb);
        let objects = related(hook, req.volume, cbd.iopb.TargetFileObject);
        let mut context: *mut c_void = std::ptr::null_mut();
        // SAFETY: the filter's pre-operation with callback data and related objects that
        // live across the call, at the IRQL the operation arrives at.
        let mut status = irql::at(req.irql, || unsafe {
            pre(&mut cbd.data, &objects, &mut context)
        });
        let resumed_early = with_kernel(|k| {
            k.io.ops
                .get(&addr)
                .is_some_and(|o| o.stage == Stage::Resumed)
        });
        if resumed_early && status != FLT_PREOP_PENDING {
            violation(
                "FltCompletePendedPreOperation",
                format!(
                    "completed an operation whose pre-operation then returned {}",
                    preop_name(status)
                ),
            );
        }
        if status == FLT_PREOP_PENDING {
            if req.kind != Kind::Irp {
                violation(
                    "PreOperation",
                    format!(
                        "returned FLT_PREOP_PENDING for a {:?} operation (major {:#x}); only IRP operations may pend",
                        req.kind, req.major
                    ),
                );
                status = FLT_PREOP_SUCCESS_NO_CALLBACK;
            } else {
                let resume = with_kernel(|k| match k.io.ops.get_mut(&addr) {
                    Some(op) => {
                        if op.stage != Stage::Resumed {
                            op.stage = Stage::PrePended;
                        }
                        op.resume.clone()
                    }
                    None => Arc::new(Resume::default()),
                });
                let (final_status, final_context) = resume.wait();
                set_stage(addr, Stage::Pre, hook.instance);
                status = final_status;
                context = final_context as *mut c_void;
            }
        }
        let dirty = cbd.data.Flags & FLTFL_CALLBACK_DATA_DIRTY != 0;
        if !dirty && iopb_bytes(&without_fresh_mdl(addr, &cbd.iopb)) != before {
            violation(
                "PreOperation",
                format!(
                    "changed the I/O parameters of major {:#x} without FltSetCallbackDataDirty",
                    req.major
                ),
            );
        }
        cbd.data.Flags &= !FLTFL_CALLBACK_DATA_DIRTY;
        // The pre-operation is over: unless the instance is owed a post-operation, the
        // operation no longer needs it.
        let owes_post = matches!(
            status,
            FLT_PREOP_SUCCESS_WITH_CALLBACK | FLT_PREOP_SYNCHRONIZE
        ) && hook.post.is_some();
        if !owes_post {
            release(addr, hook.instance);
        }
        match status {
            FLT_PREOP_SUCCESS_WITH_CALLBACK | FLT_PREOP_SYNCHRONIZE => {
                let synchronize = status == FLT_PREOP_SYNCHRONIZE;
                if synchronize && req.kind != Kind::Irp {
                    violation(
                        "PreOperation",
                        format!(
                            "returned FLT_PREOP_SYNCHRONIZE for a {:?} operation",
                            req.kind
                        ),
                    );
                }
                if hook.post.is_none() {
                    violation(
                        "PreOperation",
                        format!(
                            "returned {} for major {:#x} but registered no post-operation",
                            preop_name(status),
                            req.major
                        ),
                    );
                } else {
                    posts.push((*hook, context as usize, synchronize));
                }
            }
            FLT_PREOP_SUCCESS_NO_CALLBACK => no_context(context, status),
            FLT_PREOP_COMPLETE => {
                no_context(context, status);
                // SAFETY: reading the status field of the IO_STATUS_BLOCK union.
                let final_status = unsafe { cbd.data.IoStatus.Anonymous.Status };
                if final_status == STATUS_PENDING {
                    violation(
                        "PreOperation",
                        "completed an operation with STATUS_PENDING as its final status",
                    );
                }
                completed = true;
                break;
            }
            FLT_PREOP_DISALLOW_FASTIO => {
                no_context(context, status);
                if req.kind != Kind::FastIo {
                    violation(
                        "PreOperation",
                        format!(
                            "returned FLT_PREOP_DISALLOW_FASTIO for a {:?} operation",
                            req.kind
                        ),
                    );
                } else {
                    refused = true;
                    break;
                }
            }
            FLT_PREOP_DISALLOW_FSFILTER_IO => {
                no_context(context, status);
                if req.major != major::QUERY_OPEN {
                    violation(
                        "PreOperation",
                        format!(
                            "returned FLT_PREOP_DISALLOW_FSFILTER_IO for major {:#x}; only IRP_MJ_QUERY_OPEN may",
                            req.major
                        ),
                    );
                } else {
                    refused = true;
                    break;
                }
            }
            other => violation(
                "PreOperation",
                format!(
                    "returned {other}, which is not an FLT_PREOP_CALLBACK_STATUS (major {:#x})",
                    req.major
                ),
            ),
        }
    }

    if refused {
        finish(addr);
        return Completion {
            status: STATUS_SUCCESS,
            information: 0,
            refused: true,
        };
    }
    if !completed {
        call_file_system(&mut cbd, addr, fs);
    }

    cbd.data.Flags |= FLTFL_CALLBACK_DATA_POST_OPERATION;
    for (hook, context, synchronized) in posts.into_iter().rev() {
        let Some(post) = hook.post else { continue };
        cbd.iopb.TargetInstance = hook.instance;
        set_stage(addr, Stage::Post { synchronized }, hook.instance);
        let objects = related(&hook, req.volume, cbd.iopb.TargetFileObject);
        // Post-create and synchronized operations complete in the issuing thread at its
        // IRQL; any other IRP completion may run in a DPC, so a filter that needs
        // PASSIVE_LEVEL must use FltDoCompletionProcessingWhenSafe, as on Windows.
        let level = if synchronized || req.major == major::CREATE || req.kind != Kind::Irp {
            req.irql
        } else {
            DISPATCH_LEVEL
        };
        let before = iopb_bytes(&cbd.iopb);
        let user_before = user_buffer(addr);
        // SAFETY: the filter's post-operation with the callback data and related objects
        // of its pre-operation, at completion IRQL.
        let status = irql::at(level, || unsafe {
            post(&mut cbd.data, &objects, context as *const c_void, 0)
        });
        if user_before.is_some() && user_buffer(addr) != user_before {
            violation(
                "PostOperation",
                "wrote the caller's buffer through its user-mode address; kernel code cannot guard that access (the process may free the pages): write through the MDL's system address (MmGetSystemAddressForMdlSafe)",
            );
        }
        if with_kernel(|k| k.io.ops.get(&addr).is_some_and(|o| o.reissue)) {
            // FltReissueSynchronousIo ran from inside the post-operation.
            set_reissue(addr, false);
        }
        match status {
            FLT_POSTOP_FINISHED_PROCESSING => {}
            FLT_POSTOP_MORE_PROCESSING_REQUIRED => {
                // Pended already by FltDoCompletionProcessingWhenSafe (and maybe even
                // completed by its worker): only waited for here.
                let deferred = with_kernel(|k| {
                    k.io.ops.get_mut(&addr).and_then(|op| {
                        std::mem::take(&mut op.deferred_post).then(|| op.resume.clone())
                    })
                });
                let resume = match deferred {
                    Some(resume) => resume,
                    None => set_stage(addr, Stage::PostPended, hook.instance),
                };
                resume.wait();
            }
            FLT_POSTOP_DISALLOW_FSFILTER_IO if req.major == major::QUERY_OPEN => {
                refused = true;
            }
            other => violation(
                "PostOperation",
                format!(
                    "returned {other}, which is not a legal FLT_POSTOP_CALLBACK_STATUS for major {:#x}",
                    req.major
                ),
            ),
        }
        if cbd.data.Flags & FLTFL_CALLBACK_DATA_DIRTY == 0 && iopb_bytes(&cbd.iopb) != before {
            violation(
                "PostOperation",
                "changed the I/O parameters without FltSetCallbackDataDirty",
            );
        }
        cbd.data.Flags &= !FLTFL_CALLBACK_DATA_DIRTY;
        release(addr, hook.instance);
    }
    finish(addr);
    // SAFETY: reading the status field of the IO_STATUS_BLOCK union.
    let status = unsafe { cbd.data.IoStatus.Anonymous.Status };
    Completion {
        status,
        information: cbd.data.IoStatus.Information,
        refused,
    }
}

fn call_file_system(cbd: &mut Cbd, addr: usize, fs: FileSystem) {
    set_stage(addr, Stage::FileSystem, 0);
    let call = with_kernel(|k| {
        k.io.ops.contains_key(&addr).then(|| {
            let (open_reparse, entries) = read_entries(k, addr);
            FsCall {
                open_reparse,
                entries,
            }
        })
    });
    let Some(call) = call else { return };
    let (status, information) = super::cache::as_file_system(addr, || fs(cbd, &call));
    cbd.data.IoStatus = status_block(status, information);
}

/// What FltCancellableWaitFor* ask: was this operation cancelled?
pub(crate) fn cancel_probe(k: &super::Kernel, data: *const FLT_CALLBACK_DATA) -> bool {
    k.io.ops.get(&(data as usize)).is_some_and(|o| o.cancelled)
}

fn finish(addr: usize) {
    let mdl = with_kernel(|k| {
        k.io.tag_data.remove(&addr);
        let op = k.io.ops.remove(&addr)?;
        for &instance in &op.held {
            k.wake(Key::Instance(instance));
        }
        if op.queued_in.is_some() {
            k.violation(
                "FltCompletePendedPreOperation",
                "an operation completed while still inserted in a cancel-safe queue",
            );
        }
        if !op.open_reparse.is_empty() {
            k.violation(
                "FltAddOpenReparseEntry",
                format!(
                    "{} open-reparse entr{} still linked when the create completed: each must be taken out with FltRemoveOpenReparseEntry (FltMgr holds a reference on the filter until then)",
                    op.open_reparse.len(),
                    if op.open_reparse.len() == 1 { "y" } else { "ies" }
                ),
            );
        }
        op.mdl
    });
    // The I/O manager unmaps and frees the MDL; the pages were the caller's all along.
    if let Some(LockedMdl {
        user,
        len,
        mapping: Some(mapping),
        ..
    }) = mdl
    {
        // SAFETY: the issuer's buffer of `len` bytes, alive until its call returns.
        unsafe {
            std::ptr::copy_nonoverlapping(
                mapping.as_ptr(),
                user as *mut u8,
                len.min(mapping.len()),
            );
        }
    }
}

/// The parameter block with the MdlAddress FltLockUserBuffer set in this pre-operation
/// taken out again, for the dirty-parameter check.
fn without_fresh_mdl(addr: usize, iopb: &FLT_IO_PARAMETER_BLOCK) -> FLT_IO_PARAMETER_BLOCK {
    let fresh = with_kernel(
        |k| match k.io.ops.get_mut(&addr).and_then(|o| o.mdl.as_mut()) {
            Some(m) if m.fresh => {
                m.fresh = false;
                true
            }
            _ => false,
        },
    );
    let mut copy = *iopb;
    if fresh && copy.MajorFunction == major::DIRECTORY_CONTROL {
        copy.Parameters.DirectoryControl.QueryDirectory.MdlAddress = std::ptr::null_mut();
    }
    if fresh && copy.MajorFunction == major::READ {
        copy.Parameters.Read.MdlAddress = std::ptr::null_mut();
    }
    copy
}

/// A copy of the caller's locked buffer, if FltLockUserBuffer locked one.
fn user_buffer(addr: usize) -> Option<Vec<u8>> {
    let (user, len) = with_kernel(|k| {
        k.io.ops
            .get(&addr)
            .and_then(|o| o.mdl.as_ref())
            .map(|m| (m.user, m.len))
    })?;
    // SAFETY: the issuer's buffer of `len` bytes, alive until its call returns.
    Some(unsafe { std::slice::from_raw_parts(user as *const u8, len) }.to_vec())
}

fn hooks(k: &mut super::Kernel, req: &Request) -> Vec<Hook> {
    let mut out = Vec::new();
    for (handle, filter) in &k.filters {
        if filter.is_unregistered() {
            continue;
        }
        // An instance being torn down gets no new operations (teardown.rs).
        let Some(instance) = filter
            .instances
            .iter()
            .find(|i| i.volume == req.volume && !i.tearing_down)
        else {
            continue;
        };
        // Generated I/O starts below the instance that issued it; one filter per
        // machine means nothing of ours sees it.
        if req.below.is_some() {
            continue;
        }
        if let Some(op) = filter.info.operations.iter().find(|o| o.major == req.major) {
            out.push(Hook {
                filter: *handle,
                instance: instance.handle,
                pre: op.pre,
                post: op.post,
                flags: op.flags,
            });
        }
    }
    out
}

/// Whether the registration's skip flags keep this operation from the filter.
fn skipped(flags: u32, req: &Request) -> bool {
    if req.major != major::READ && req.major != major::WRITE {
        return false;
    }
    let paging = req.irp_flags & irp::PAGING_IO != 0;
    let noncached = req.irp_flags & irp::NOCACHE != 0;
    let skip = if paging {
        FLTFL_OPERATION_REGISTRATION_SKIP_PAGING_IO
    } else if noncached {
        FLTFL_OPERATION_REGISTRATION_SKIP_NON_CACHED_NON_PAGING_IO
    } else {
        FLTFL_OPERATION_REGISTRATION_SKIP_CACHED_IO
    };
    flags & skip != 0
}

fn related(hook: &Hook, volume: PFLT_VOLUME, file: *mut FILE_OBJECT) -> FLT_RELATED_OBJECTS {
    FLT_RELATED_OBJECTS {
        Size: std::mem::size_of::<FLT_RELATED_OBJECTS>() as u16,
        TransactionContext: 0,
        Filter: hook.filter,
        Volume: volume,
        Instance: hook.instance,
        FileObject: file,
        Transaction: std::ptr::null(),
    }
}

/// The bytes of a parameter block as a filter may change them: TargetInstance (bytes 8..16,
/// which FltMgr sets per filter, not a parameter) zeroed. A copy on the stack: it is taken
/// around every callback.
fn iopb_bytes(
    iopb: &FLT_IO_PARAMETER_BLOCK,
) -> [u8; std::mem::size_of::<FLT_IO_PARAMETER_BLOCK>()] {
    let mut out = [0u8; std::mem::size_of::<FLT_IO_PARAMETER_BLOCK>()];
    // SAFETY: reading the bytes of a live, initialised plain-data structure. Padding is
    // zero from the zeroed allocation and never written by the model.
    let bytes =
        unsafe { std::slice::from_raw_parts(std::ptr::from_ref(iopb).cast::<u8>(), out.len()) };
    out.copy_from_slice(bytes);
    out[8..16].fill(0);
    out
}

fn set_stage(addr: usize, stage: Stage, instance: PFLT_INSTANCE) -> Arc<Resume> {
    with_kernel(|k| match k.io.ops.get_mut(&addr) {
        Some(op) => {
            op.stage = stage;
            if instance != 0 {
                op.instance = instance;
            }
            op.resume.clone()
        }
        None => Arc::new(Resume::default()),
    })
}

/// Takes the rundown protection of `instance` for the operation at `addr`, as FltMgr does
/// before it calls the instance's pre-operation: refused (false) once the instance's
/// teardown has begun. The operation is then in the instance's pre-operation.
fn enter(addr: usize, instance: PFLT_INSTANCE) -> bool {
    with_kernel(|k| {
        if !k.instance_accepts_operations(instance) {
            return false;
        }
        let Some(op) = k.io.ops.get_mut(&addr) else {
            return false;
        };
        op.stage = Stage::Pre;
        op.instance = instance;
        op.held.push(instance);
        true
    })
}

/// The operation at `addr` no longer needs `instance`: its teardown may go on.
fn release(addr: usize, instance: PFLT_INSTANCE) {
    with_kernel(|k| {
        if let Some(op) = k.io.ops.get_mut(&addr)
            && let Some(at) = op.held.iter().position(|i| *i == instance)
        {
            op.held.swap_remove(at);
        }
        k.wake(Key::Instance(instance));
    });
}

/// How many operations hold the rundown protection of `instance`: in its callbacks,
/// pended by it (in a cancel-safe queue or not), or owing it a post-operation.
pub(crate) fn holding(k: &Kernel, instance: PFLT_INSTANCE) -> usize {
    k.io.ops
        .values()
        .filter(|o| o.held.contains(&instance))
        .count()
}

impl Machine {
    /// How many operations a filter holds pended now: its pre-operation returned
    /// FLT_PREOP_PENDING, or its post-operation FLT_POSTOP_MORE_PROCESSING_REQUIRED, and
    /// it has not completed them yet.
    pub fn pended_operations(&self) -> usize {
        with_kernel(|k| {
            k.io.ops
                .values()
                .filter(|o| matches!(o.stage, Stage::PrePended | Stage::PostPended))
                .count()
        })
    }
}

fn set_reissue(addr: usize, value: bool) {
    with_kernel(|k| {
        if let Some(op) = k.io.ops.get_mut(&addr) {
            op.reissue = value;
        }
    });
}

fn no_context(context: *mut c_void, status: FLT_PREOP_CALLBACK_STATUS) {
    if !context.is_null() {
        violation(
            "PreOperation",
            format!(
                "set a completion context but returned {}, which calls no post-operation",
                preop_name(status)
            ),
        );
    }
}

fn preop_name(status: FLT_PREOP_CALLBACK_STATUS) -> &'static str {
    match status {
        FLT_PREOP_SUCCESS_WITH_CALLBACK => "FLT_PREOP_SUCCESS_WITH_CALLBACK",
        FLT_PREOP_SUCCESS_NO_CALLBACK => "FLT_PREOP_SUCCESS_NO_CALLBACK",
        FLT_PREOP_PENDING => "FLT_PREOP_PENDING",
        FLT_PREOP_DISALLOW_FASTIO => "FLT_PREOP_DISALLOW_FASTIO",
        FLT_PREOP_COMPLETE => "FLT_PREOP_COMPLETE",
        FLT_PREOP_SYNCHRONIZE => "FLT_PREOP_SYNCHRONIZE",
        FLT_PREOP_DISALLOW_FSFILTER_IO => "FLT_PREOP_DISALLOW_FSFILTER_IO",
        _ => "an unknown status",
    }
}

fn violation(api: &'static str, message: impl Into<String>) {
    let message = message.into();
    with_kernel(|k| k.violation(api, message));
}

pub(crate) fn status_block(status: NTSTATUS, information: usize) -> IO_STATUS_BLOCK {
    IO_STATUS_BLOCK {
        Anonymous: IO_STATUS_BLOCK_0 { Status: status },
        Information: information,
    }
}

/// ETHREAD pointers the model hands out: one per OS thread, never dereferenced.
fn thread_object() -> isize {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    std::thread::current().id().hash(&mut h);
    (0x7e5a_0000_0000usize | (h.finish() as usize & 0xffff_fff0)) as isize
}

/// The major function of a live operation (validated by the caller).
fn major_of(addr: usize) -> u8 {
    let cbd = addr as *const Cbd;
    // SAFETY: a live callback data is the first field of its Cbd, owned by a dispatcher
    // frame that waits for it; its Iopb is the `iopb` field beside it.
    unsafe { (*cbd).iopb.MajorFunction }
}

/// The live operation a callback data pointer names, or a violation.
fn live(api: &'static str, data: *const FLT_CALLBACK_DATA) -> Option<usize> {
    let addr = data as usize;
    with_kernel(|k| {
        if k.io.ops.contains_key(&addr) {
            Some(addr)
        } else {
            k.violation(
                api,
                format!("{data:p} is not the callback data of a live operation"),
            );
            None
        }
    })
}

// ---------------------------------------------------------------------------------------
// Exports
// ---------------------------------------------------------------------------------------

/// FltCompletePendedPreOperation: resumes an operation whose pre-operation returned
/// FLT_PREOP_PENDING, from any thread.
#[unsafe(no_mangle)]
pub extern "system" fn FltCompletePendedPreOperation(
    data: *const FLT_CALLBACK_DATA,
    status: FLT_PREOP_CALLBACK_STATUS,
    context: *const c_void,
) {
    irql::check("FltCompletePendedPreOperation", DISPATCH_LEVEL);
    let Some(addr) = live("FltCompletePendedPreOperation", data) else {
        return;
    };
    let resume = with_kernel(|k| {
        let (stage, queued, kind) = {
            let op = k.io.ops.get(&addr)?;
            (op.stage, op.queued_in, op.kind)
        };
        // A filter may complete from another thread before its pre-operation has
        // returned FLT_PREOP_PENDING; FltMgr then finds the result when it does.
        let early = stage == Stage::Pre && kind == Kind::Irp;
        if stage != Stage::PrePended && !early {
            k.violation(
                "FltCompletePendedPreOperation",
                "completed an operation that was not pended (or completed it twice)",
            );
            return None;
        }
        if queued.is_some() {
            k.violation(
                "FltCompletePendedPreOperation",
                "completed an operation still inserted in a cancel-safe queue",
            );
        }
        if ![
            FLT_PREOP_SUCCESS_WITH_CALLBACK,
            FLT_PREOP_SUCCESS_NO_CALLBACK,
            FLT_PREOP_COMPLETE,
            FLT_PREOP_SYNCHRONIZE,
        ]
        .contains(&status)
        {
            k.violation(
                "FltCompletePendedPreOperation",
                format!(
                    "{} is not a legal status to resume with",
                    preop_name(status)
                ),
            );
            return None;
        }
        let op = k.io.ops.get_mut(&addr)?;
        // Resumed once: a second call finds the stage moved on.
        op.stage = Stage::Resumed;
        Some(op.resume.clone())
    });
    if let Some(resume) = resume {
        resume.complete(status, context as usize);
    }
}

/// FltCompletePendedPostOperation.
#[unsafe(no_mangle)]
pub extern "system" fn FltCompletePendedPostOperation(data: *const FLT_CALLBACK_DATA) {
    irql::check("FltCompletePendedPostOperation", DISPATCH_LEVEL);
    let Some(addr) = live("FltCompletePendedPostOperation", data) else {
        return;
    };
    let resume = with_kernel(|k| {
        let op = k.io.ops.get_mut(&addr)?;
        if op.stage != Stage::PostPended {
            k.violation(
                "FltCompletePendedPostOperation",
                "completed a post-operation that did not return FLT_POSTOP_MORE_PROCESSING_REQUIRED",
            );
            return None;
        }
        op.stage = Stage::Post {
            synchronized: false,
        };
        Some(op.resume.clone())
    });
    if let Some(resume) = resume {
        resume.complete(FLT_POSTOP_FINISHED_PROCESSING, 0);
    }
}

/// FltSetCallbackDataDirty.
#[unsafe(no_mangle)]
pub extern "system" fn FltSetCallbackDataDirty(data: *mut FLT_CALLBACK_DATA) {
    irql::check("FltSetCallbackDataDirty", DISPATCH_LEVEL);
    let Some(addr) = live("FltSetCallbackDataDirty", data) else {
        return;
    };
    let data = addr as *mut FLT_CALLBACK_DATA;
    // SAFETY: validated as a live callback data owned by the dispatcher, which is blocked
    // in the filter's callback that called us.
    unsafe { (*data).Flags |= FLTFL_CALLBACK_DATA_DIRTY };
}

/// FltIsOperationSynchronous.
#[unsafe(no_mangle)]
pub extern "system" fn FltIsOperationSynchronous(data: *const FLT_CALLBACK_DATA) -> bool {
    irql::check("FltIsOperationSynchronous", DISPATCH_LEVEL);
    // Every operation the model issues waits for its completion.
    live("FltIsOperationSynchronous", data).is_some()
}

/// FltIsIoCanceled.
#[unsafe(no_mangle)]
pub extern "system" fn FltIsIoCanceled(data: *const FLT_CALLBACK_DATA) -> bool {
    irql::check("FltIsIoCanceled", DISPATCH_LEVEL);
    let addr = data as usize;
    with_kernel(|k| k.io.ops.get(&addr).is_some_and(|o| o.cancelled))
}

/// FltSetCancelCompletion: the routine FltMgr calls if the pended operation is
/// cancelled.
#[unsafe(no_mangle)]
pub extern "system" fn FltSetCancelCompletion(
    data: *const FLT_CALLBACK_DATA,
    routine: PFLT_COMPLETE_CANCELED_CALLBACK,
) -> NTSTATUS {
    irql::check("FltSetCancelCompletion", DISPATCH_LEVEL);
    let Some(addr) = live("FltSetCancelCompletion", data) else {
        return STATUS_INVALID_PARAMETER;
    };
    with_kernel(|k| {
        let Some(op) = k.io.ops.get_mut(&addr) else {
            return STATUS_INVALID_PARAMETER;
        };
        if op.kind != Kind::Irp {
            return STATUS_INVALID_PARAMETER;
        }
        if op.cancelled {
            return STATUS_CANCELLED;
        }
        op.cancel_routine = routine;
        STATUS_SUCCESS
    })
}

/// FltClearCancelCompletion.
#[unsafe(no_mangle)]
pub extern "system" fn FltClearCancelCompletion(data: *const FLT_CALLBACK_DATA) -> NTSTATUS {
    irql::check("FltClearCancelCompletion", DISPATCH_LEVEL);
    let Some(addr) = live("FltClearCancelCompletion", data) else {
        return STATUS_INVALID_PARAMETER;
    };
    with_kernel(|k| {
        let Some(op) = k.io.ops.get_mut(&addr) else {
            return STATUS_INVALID_PARAMETER;
        };
        if op.cancel_routine.take().is_none() || op.cancelled {
            // The routine already ran (or is about to): the filter must let it finish.
            return STATUS_CANCELLED;
        }
        STATUS_SUCCESS
    })
}

/// FltGetRequestorProcess: the EPROCESS that issued the I/O.
#[unsafe(no_mangle)]
pub extern "system" fn FltGetRequestorProcess(data: *const FLT_CALLBACK_DATA) -> *mut c_void {
    irql::check("FltGetRequestorProcess", DISPATCH_LEVEL);
    let addr = data as usize;
    with_kernel(|k| {
        let Some(op) = k.io.ops.get(&addr) else {
            k.violation(
                "FltGetRequestorProcess",
                format!("{data:p} is not the callback data of a live operation"),
            );
            return std::ptr::null_mut();
        };
        k.processes
            .get(op.requestor)
            .map_or(std::ptr::null_mut(), process::Process::eprocess)
    })
}

/// FltGetRequestorProcessId.
#[unsafe(no_mangle)]
pub extern "system" fn FltGetRequestorProcessId(data: *const FLT_CALLBACK_DATA) -> u32 {
    irql::check("FltGetRequestorProcessId", DISPATCH_LEVEL);
    let addr = data as usize;
    with_kernel(|k| k.io.ops.get(&addr).map_or(0, |o| o.requestor))
}

/// FltGetRequestorProcessIdEx.
#[unsafe(no_mangle)]
pub extern "system" fn FltGetRequestorProcessIdEx(data: *const FLT_CALLBACK_DATA) -> HANDLE {
    FltGetRequestorProcessId(data) as usize as HANDLE
}

/// FltAddOpenReparseEntry: only in pre-create, at PASSIVE_LEVEL.
///
/// # Safety
/// `entry` must point to an OPEN_REPARSE_LIST_ENTRY.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn FltAddOpenReparseEntry(
    filter: PFLT_FILTER,
    data: *const FLT_CALLBACK_DATA,
    entry: *const OPEN_REPARSE_LIST_ENTRY,
) -> NTSTATUS {
    irql::check("FltAddOpenReparseEntry", PASSIVE_LEVEL);
    let Some(addr) = live("FltAddOpenReparseEntry", data) else {
        return STATUS_INVALID_PARAMETER;
    };
    // SAFETY: the caller passes a valid entry for the duration of the call (FltMgr links
    // this memory itself; see LinkedEntry for what the model checks afterwards).
    let Some(entry) = (unsafe { entry.as_ref() }) else {
        return STATUS_INVALID_PARAMETER;
    };
    let major = major_of(addr);
    with_kernel(|k| {
        let Some(op) = k.io.ops.get_mut(&addr) else {
            return STATUS_INVALID_PARAMETER;
        };
        if major != major::CREATE || op.stage != Stage::Pre {
            k.violation(
                "FltAddOpenReparseEntry",
                "called outside a pre-create callback",
            );
            return STATUS_INVALID_PARAMETER;
        }
        if usize::from(entry.Size) < std::mem::size_of::<OPEN_REPARSE_LIST_ENTRY>() {
            return STATUS_INVALID_PARAMETER;
        }
        if op.open_reparse.iter().any(|e| e.tag == entry.ReparseTag) {
            return windows_sys::Win32::Foundation::STATUS_OBJECT_NAME_COLLISION;
        }
        let ptr = std::ptr::from_ref(entry) as usize;
        op.open_reparse.push(LinkedEntry {
            ptr,
            filter,
            tag: entry.ReparseTag,
        });
        relink(k, addr, Some(ptr));
        STATUS_SUCCESS
    })
}

/// FltRemoveOpenReparseEntry: takes an entry FltAddOpenReparseEntry added back out of the
/// create, at IRQL <= APC_LEVEL. "OpenReparseEntry must be an entry added by
/// FltAddOpenReparseEntry. All other entries are not valid": anything else, or an entry
/// removed twice, is reported.
#[unsafe(no_mangle)]
pub extern "system" fn FltRemoveOpenReparseEntry(
    filter: PFLT_FILTER,
    data: *const FLT_CALLBACK_DATA,
    entry: *const OPEN_REPARSE_LIST_ENTRY,
) {
    irql::check("FltRemoveOpenReparseEntry", APC_LEVEL);
    let Some(addr) = live("FltRemoveOpenReparseEntry", data) else {
        return;
    };
    with_kernel(|k| {
        let Some(op) = k.io.ops.get_mut(&addr) else {
            return;
        };
        let Some(at) = op.open_reparse.iter().position(|l| l.ptr == entry as usize) else {
            k.violation(
                "FltRemoveOpenReparseEntry",
                format!(
                    "{entry:p} is not an entry FltAddOpenReparseEntry added to this create (or it was removed already)"
                ),
            );
            return;
        };
        let linked = op.open_reparse.remove(at);
        if linked.filter != filter {
            k.violation(
                "FltRemoveOpenReparseEntry",
                "removed an entry another filter added",
            );
        }
        relink(k, addr, None);
    });
}

/// FltReissueSynchronousIo: sends the operation to the file system again, from a
/// post-operation of a synchronized IRP (or a pre-operation of one), at PASSIVE_LEVEL.
#[unsafe(no_mangle)]
pub extern "system" fn FltReissueSynchronousIo(
    instance: PFLT_INSTANCE,
    data: *const FLT_CALLBACK_DATA,
) {
    irql::check("FltReissueSynchronousIo", PASSIVE_LEVEL);
    let Some(addr) = live("FltReissueSynchronousIo", data) else {
        return;
    };
    let ok = with_kernel(|k| {
        let Some(op) = k.io.ops.get_mut(&addr) else {
            return false;
        };
        let legal = op.kind == Kind::Irp
            && op.instance == instance
            && matches!(op.stage, Stage::Post { synchronized: true } | Stage::Pre);
        let legal =
            legal || (major_of(addr) == major::CREATE && matches!(op.stage, Stage::Post { .. }));
        if !legal {
            k.violation(
                "FltReissueSynchronousIo",
                "called outside a synchronized post-operation of an IRP operation of this instance",
            );
            return false;
        }
        op.reissue = true;
        true
    });
    if !ok {
        return;
    }
    let Some(fs) = with_kernel(|k| k.io.ops.get(&addr).map(|o| o.fs)) else {
        return;
    };
    let cbd = data.cast_mut().cast::<Cbd>();
    // SAFETY: a live callback data is the first field of its Cbd, owned by the
    // dispatcher, which is blocked in the filter's callback that called us.
    let cbd = unsafe { &mut *cbd };
    cbd.data.Flags |= FLTFL_CALLBACK_DATA_REISSUED_IO;
    let stage = with_kernel(|k| k.io.ops.get(&addr).map(|o| o.stage));
    call_file_system(cbd, addr, fs);
    if let Some(stage) = stage {
        set_stage(addr, stage, 0);
    }
}

/// FltCancelIo: cancels an operation a filter pended.
#[unsafe(no_mangle)]
pub extern "system" fn FltCancelIo(data: *const FLT_CALLBACK_DATA) -> bool {
    irql::check("FltCancelIo", DISPATCH_LEVEL);
    cancel(data as usize)
}

/// Cancels a live operation as IoCancelIrp does: marks it and calls the filter's cancel
/// routine (FltSetCancelCompletion or a cbdq's) if one is set. True if a routine ran.
pub(crate) fn cancel(addr: usize) -> bool {
    let plan = with_kernel(|k| {
        let op = k.io.ops.get_mut(&addr)?;
        op.cancelled = true;
        let routine = op.cancel_routine.take();
        let queue = op.queued_in;
        Some((routine, queue))
    });
    let Some((routine, queue)) = plan else {
        return false;
    };
    // A filter blocked in FltCancellableWaitForSingleObject for this operation wakes up.
    super::sync::wake_cancelled(addr);
    if let Some(queue) = queue {
        return super::cbdq::cancel_queued(queue, addr);
    }
    match routine {
        Some(routine) => {
            // SAFETY: the filter's cancel routine for this live callback data.
            irql::at(DISPATCH_LEVEL, || unsafe {
                routine(addr as *const FLT_CALLBACK_DATA)
            });
            true
        }
        None => false,
    }
}

/// Every live operation, for cancellation by file object or thread.
pub(crate) fn live_ops(filter: impl Fn(&OpState, &Cbd) -> bool) -> Vec<usize> {
    with_kernel(|k| {
        k.io.ops
            .iter()
            .filter(|(addr, op)| {
                // SAFETY: live callback data are owned by their dispatcher frames,
                // which wait for them; reading the Iopb is race-free for our fields.
                let cbd = unsafe { &*(**addr as *const Cbd) };
                filter(op, cbd)
            })
            .map(|(a, _)| *a)
            .collect()
    })
}
