//! Exceptions in kernel mode, and the MDLs that lock user pages.
//!
//! Owns: the driver's two exception-guarded primitives, which the image implements in
//! assembly with SEH unwind data (`driver::rt::seh`) and the model defines here with the
//! same contract — `cloudflt_seh_copy` and `cloudflt_seh_call3`; which thread is inside a
//! guard and the exception raised there; IoAllocateMdl, MmProbeAndLockPages,
//! MmUnlockPages and IoFreeMdl, and the MDLs they hand out and lock; the verifier's
//! checks on them.
//!
//! How an exception is modelled: nothing unwinds. A kernel routine that raises on
//! Windows (MmProbeAndLockPages on a range it cannot lock) records the exception for the
//! guard of the calling thread and returns at once, having done nothing, which is what
//! the code after the raise looks like from the guard's side; the guard then returns the
//! code. With no guard on the thread the raise is reported as the bug check Windows makes
//! of an unhandled kernel-mode exception (KMODE_EXCEPTION_NOT_HANDLED). The guarded copy
//! never touches a bad page: it checks each page of both sides against the model of user
//! memory ([`vm`]) first and copies only the accessible prefix.
//!
//! What an MDL holds: MmProbeAndLockPages takes the pages' bytes as they are when it
//! locks them, and reads from the MDL (FltWriteFileEx) see those bytes, whatever the
//! process does with the addresses after — freeing or protecting them only drops the
//! mapping on Windows, the locked physical pages stay. (Simplification: on Windows a
//! store the process makes into a locked page that it still maps is seen through the MDL
//! too; the model keeps the bytes of the moment of locking. A provider that rewrites its
//! buffer while it is being written gets either on Windows, so no test may depend on it.)
//!
//! Does not own: user memory itself ([`vm`]), nor the I/O that reads an MDL
//! (`fltio::FltWriteFileEx`).

use crate::model::fast::HashMap;
use std::cell::Cell;
use std::ffi::c_void;
use std::thread::ThreadId;

use windows_sys::Wdk::Foundation::{IRP, MDL};
use windows_sys::Win32::Foundation::{
    NTSTATUS, STATUS_ACCESS_VIOLATION, STATUS_NOT_IMPLEMENTED, STATUS_SUCCESS,
};

use super::irql::{self, APC_LEVEL, DISPATCH_LEVEL};
use super::process;
use super::vm::{self, MidCall};
use super::{Kernel, Machine, with_kernel};

/// MDL_PAGES_LOCKED (wdm.h).
pub(crate) const MDL_PAGES_LOCKED: i16 = 0x0002;

/// `KernelMode` / `UserMode` (wdm.h MODE).
const USER_MODE: i8 = 1;
/// `IoReadAccess` (wdm.h LOCK_OPERATION).
const IO_READ_ACCESS: i32 = 0;

/// One MDL IoAllocateMdl gave out.
struct ModelMdl {
    /// Where the MDL lives; the driver holds a pointer to it.
    mdl: Box<MDL>,
    va: usize,
    len: usize,
    /// The process whose addresses `va` are (the caller's at IoAllocateMdl).
    pid: u32,
    /// The thread that allocated it, and the model's call mark then.
    thread: ThreadId,
    /// The locked pages' bytes, while MmProbeAndLockPages has them locked.
    locked: Option<Box<[u8]>>,
}

// SAFETY: the MDL's pointers are addresses the model compares and never dereferences
// through the MDL itself; the MDL is only touched under the kernel lock.
unsafe impl Send for ModelMdl {}

/// The live MDLs, by address.
#[derive(Default)]
pub(crate) struct Mdls {
    live: HashMap<usize, ModelMdl>,
}

impl Kernel {
    /// Reports MDLs still allocated when the driver unloads.
    pub(crate) fn check_mdls_at_unload(&mut self, api: &'static str) {
        let mut list: Vec<String> = self
            .mdls
            .live
            .values()
            .map(|m| {
                format!(
                    "{:#x} ({} bytes of process {}{})",
                    m.va,
                    m.len,
                    m.pid,
                    if m.locked.is_some() {
                        ", pages still locked"
                    } else {
                        ""
                    }
                )
            })
            .collect();
        if !list.is_empty() {
            list.sort();
            self.violation(
                api,
                format!(
                    "{} MDL(s) never freed (IoFreeMdl): {}",
                    list.len(),
                    list.join(", ")
                ),
            );
        }
    }

    /// The first `length` bytes of the locked MDL at `mdl`, for an I/O that reads it, or
    /// why it cannot be read.
    pub(crate) fn mdl_bytes(&self, mdl: *const MDL, length: usize) -> Result<Vec<u8>, String> {
        let m = self
            .mdls
            .live
            .get(&(mdl as usize))
            .ok_or_else(|| format!("{mdl:p} is not an MDL IoAllocateMdl gave out"))?;
        let bytes = m.locked.as_ref().ok_or_else(|| {
            "the MDL's pages are not locked (MmProbeAndLockPages): the I/O would read pages \
             that may be paged out or freed under it"
                .to_owned()
        })?;
        bytes
            .get(..length)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| format!("{length} bytes asked of an MDL of {}", m.len))
    }

    /// The virtual address the MDL's data starts at.
    pub(crate) fn mdl_address(&self, mdl: *const MDL) -> Option<usize> {
        self.mdls.live.get(&(mdl as usize)).map(|m| m.va)
    }
}

thread_local! {
    /// How many guards the thread is inside.
    static GUARDS: Cell<u32> = const { Cell::new(0) };
    /// The exception raised inside the innermost guard, for it to return.
    static RAISED: Cell<Option<NTSTATUS>> = const { Cell::new(None) };
}

/// Raises `code` from `api`: caught by the thread's guard, or a bug check.
fn raise(api: &'static str, code: NTSTATUS, why: String) {
    if GUARDS.with(Cell::get) > 0 {
        RAISED.with(|r| {
            if r.get().is_none() {
                r.set(Some(code));
            }
        });
        return;
    }
    with_kernel(|k| {
        k.violation(
            api,
            format!(
                "raised {code:#010x} ({why}) with no exception handler on the stack: on \
                 Windows an unhandled kernel-mode exception, a bug check \
                 (KMODE_EXCEPTION_NOT_HANDLED). Call it inside __try/__except \
                 (cloudflt_seh_call3)"
            ),
        )
    });
}

/// The image's `cloudflt_seh_copy`: copies `len` bytes from `src` to `dst` and returns
/// STATUS_SUCCESS, or copies the bytes before the first page either side cannot be
/// touched (read for the source, written for the destination, in the calling thread's
/// process) and returns the exception touching it raises. Mid-call actions: a copy out
/// of pool (the reply) runs [`MidCall::BeforeUserWrite`] first, any other (a read of the
/// request) runs [`MidCall::AfterInputCopy`] after.
///
/// # Safety
/// Kernel-side memory passed to it is valid for `len` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn cloudflt_seh_copy(
    dst: *mut u8,
    src: *const u8,
    len: usize,
) -> NTSTATUS {
    irql::check("cloudflt_seh_copy", APC_LEVEL);
    let to_user = with_kernel(|k| k.pool.block_holding(src as usize, len.max(1)).is_some());
    if to_user {
        vm::reach(MidCall::BeforeUserWrite);
    }
    let pid = process::current_pid();
    let (n, fault) = with_kernel(|k| {
        let (readable, read_fault) = vm::accessible(&k.vm, pid, src as usize, len, false);
        let (writable, write_fault) = vm::accessible(&k.vm, pid, dst as usize, len, true);
        if readable <= writable {
            (readable, read_fault)
        } else {
            (writable, write_fault)
        }
    });
    if n > 0 {
        // SAFETY: the first `n` bytes of both sides are accessible memory of this process
        // (or the caller's kernel memory, by contract).
        unsafe { std::ptr::copy(src, dst, n) };
    }
    if !to_user {
        vm::reach(MidCall::AfterInputCopy);
    }
    fault.unwrap_or(STATUS_SUCCESS)
}

/// The image's `cloudflt_seh_call3`: calls `f(a, b, c)` inside a guard and returns
/// STATUS_SUCCESS, or the code of the exception it raised. The model guards the kernel
/// routines that raise and that it knows the signature of: MmProbeAndLockPages.
///
/// # Safety
/// `f` and its arguments as the routine requires.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn cloudflt_seh_call3(
    f: *const c_void,
    a: usize,
    b: usize,
    c: usize,
) -> NTSTATUS {
    let probe: unsafe extern "system" fn(*mut MDL, i8, i32) = MmProbeAndLockPages;
    if f != probe as *const c_void {
        with_kernel(|k| {
            k.violation(
                "cloudflt_seh_call3",
                format!("the model guards MmProbeAndLockPages only; {f:p} is another routine"),
            )
        });
        return STATUS_NOT_IMPLEMENTED;
    }
    GUARDS.with(|g| g.set(g.get() + 1));
    let outer = RAISED.with(Cell::take);
    // SAFETY: the caller's arguments for MmProbeAndLockPages, narrowed back to its types.
    unsafe { MmProbeAndLockPages(a as *mut MDL, b as u8 as i8, c as u32 as i32) };
    let raised = RAISED.with(|r| r.replace(outer));
    GUARDS.with(|g| g.set(g.get() - 1));
    raised.unwrap_or(STATUS_SUCCESS)
}

/// IoAllocateMdl, for a buffer of the calling process, with no IRP: an unlocked MDL
/// describing `[va, va + length)`. NULL when an injected failure
/// (`Machine::fail_next("IoAllocateMdl", _)`) fires.
#[unsafe(no_mangle)]
pub extern "system" fn IoAllocateMdl(
    va: *const c_void,
    length: u32,
    secondary: bool,
    charge_quota: bool,
    irp: *mut IRP,
) -> *mut MDL {
    irql::check("IoAllocateMdl", DISPATCH_LEVEL);
    assert!(
        !secondary && !charge_quota && irp.is_null(),
        "IoAllocateMdl: only a stand-alone MDL (no IRP, no quota) is modelled"
    );
    let pid = process::current_pid();
    with_kernel(|k| {
        if k.injected("IoAllocateMdl").is_some() || length == 0 {
            return std::ptr::null_mut();
        }
        let addr = va as usize;
        let mut mdl = Box::new(MDL {
            StartVa: (addr & !(vm::PAGE_SIZE - 1)) as *mut c_void,
            ByteOffset: (addr & (vm::PAGE_SIZE - 1)) as u32,
            ByteCount: length,
            ..Default::default()
        });
        let ptr: *mut MDL = &mut *mdl;
        k.mdls.live.insert(
            ptr as usize,
            ModelMdl {
                mdl,
                va: addr,
                len: length as usize,
                pid,
                thread: std::thread::current().id(),
                locked: None,
            },
        );
        ptr
    })
}

/// MmProbeAndLockPages: locks the pages an MDL describes, or raises. For UserMode the
/// range must lie in user space (kernel memory raises STATUS_ACCESS_VIOLATION, as the
/// probe does); every page must be accessible for the operation (IoReadAccess: readable;
/// otherwise writable) and its contents available, or it raises the exception touching
/// it would (STATUS_ACCESS_VIOLATION, STATUS_IN_PAGE_ERROR) with nothing locked. Mid-call
/// actions: [`MidCall::BeforeProbe`] on entry, [`MidCall::AfterLock`] once locked.
///
/// # Safety
/// `mdl` is an MDL the caller got from IoAllocateMdl.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn MmProbeAndLockPages(mdl: *mut MDL, mode: i8, operation: i32) {
    irql::check("MmProbeAndLockPages", APC_LEVEL);
    vm::reach(MidCall::BeforeProbe);
    let pid = process::current_pid();
    let outcome = with_kernel(|k| {
        let Some(m) = k.mdls.live.get(&(mdl as usize)) else {
            k.violation(
                "MmProbeAndLockPages",
                format!("{mdl:p} is not an MDL IoAllocateMdl gave out"),
            );
            return Err(None);
        };
        if m.locked.is_some() {
            k.violation("MmProbeAndLockPages", "the MDL's pages are already locked");
            return Err(None);
        }
        let (va, len) = (m.va, m.len);
        if m.pid != pid {
            k.violation(
                "MmProbeAndLockPages",
                format!(
                    "an MDL for process {}'s addresses probed in process {pid}: user \
                     addresses mean something only in their own process",
                    m.pid
                ),
            );
            return Err(None);
        }
        if mode == USER_MODE && k.pool.block_holding(va, 1).is_some() {
            return Err(Some((
                STATUS_ACCESS_VIOLATION,
                "a kernel address".to_owned(),
            )));
        }
        let (ok, fault) = vm::accessible(&k.vm, pid, va, len, operation != IO_READ_ACCESS);
        if let Some(code) = fault {
            return Err(Some((
                code,
                format!("byte {ok} of {len} at {va:#x} cannot be locked"),
            )));
        }
        let mut bytes = vec![0u8; len].into_boxed_slice();
        // SAFETY: every page of the range is accessible memory of this process.
        unsafe { std::ptr::copy_nonoverlapping(va as *const u8, bytes.as_mut_ptr(), len) };
        if let Some(m) = k.mdls.live.get_mut(&(mdl as usize)) {
            m.locked = Some(bytes);
            m.mdl.MdlFlags |= MDL_PAGES_LOCKED;
        }
        Ok(())
    });
    match outcome {
        Ok(()) => vm::reach(MidCall::AfterLock),
        Err(Some((code, why))) => raise("MmProbeAndLockPages", code, why),
        Err(None) => {}
    }
}

/// MmUnlockPages: unlocks an MDL MmProbeAndLockPages locked.
///
/// # Safety
/// `mdl` is a locked MDL.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn MmUnlockPages(mdl: *mut MDL) {
    irql::check("MmUnlockPages", DISPATCH_LEVEL);
    with_kernel(|k| match k.mdls.live.get_mut(&(mdl as usize)) {
        Some(m) if m.locked.is_some() => {
            m.locked = None;
            m.mdl.MdlFlags &= !MDL_PAGES_LOCKED;
        }
        Some(_) => k.violation("MmUnlockPages", "the MDL's pages are not locked"),
        None => k.violation(
            "MmUnlockPages",
            format!("{mdl:p} is not an MDL IoAllocateMdl gave out"),
        ),
    });
}

/// IoFreeMdl: frees an MDL IoAllocateMdl gave out; its pages must be unlocked first.
///
/// # Safety
/// `mdl` came from IoAllocateMdl.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn IoFreeMdl(mdl: *mut MDL) {
    irql::check("IoFreeMdl", DISPATCH_LEVEL);
    with_kernel(|k| match k.mdls.live.remove(&(mdl as usize)) {
        Some(m) if m.locked.is_some() => {
            k.violation(
                "IoFreeMdl",
                format!(
                    "the MDL of {} bytes at {:#x} is freed with its pages still locked \
                     (MmUnlockPages first): they stay locked for good",
                    m.len, m.va
                ),
            );
        }
        Some(_) => {}
        None => k.violation(
            "IoFreeMdl",
            format!("{mdl:p} is not an MDL IoAllocateMdl gave out (or is already freed)"),
        ),
    });
}

/// The end of a MessageNotify call on this thread: MDLs it allocated and left with pages
/// of the caller's process locked are reported (when that process exits, Windows stops
/// with PROCESS_HAS_LOCKED_PAGES).
pub(crate) fn end_message(pid: u32) {
    let thread = std::thread::current().id();
    with_kernel(|k| {
        let left = k
            .mdls
            .live
            .values()
            .filter(|m| m.thread == thread && m.pid == pid && m.locked.is_some())
            .count();
        if left > 0 {
            k.violation(
                "MessageNotify",
                format!(
                    "returned with {left} MDL(s) of process {pid}'s memory still locked: \
                     if the process exits so, a bug check (PROCESS_HAS_LOCKED_PAGES)"
                ),
            );
        }
    });
}

impl Machine {
    /// MDLs the driver has allocated and not freed.
    pub fn live_mdls(&self) -> usize {
        with_kernel(|k| k.mdls.live.len())
    }
}
