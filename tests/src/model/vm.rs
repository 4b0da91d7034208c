//! User-mode virtual memory: the pages a process gets from VirtualAlloc and what they are
//! at each moment — committed with a protection, decommitted, or released — and the
//! kernel's rules for touching them from a driver.
//!
//! Owns: the regions VirtualAlloc reserved (one per reservation, as a VAD is on Windows)
//! and the state of each of their pages; VirtualAlloc, VirtualFree and VirtualProtect
//! (kernel32, as a provider's other thread calls them); MmSecureVirtualMemory and
//! MmUnsecureVirtualMemory and the secure entries they create and remove; whether
//! MmCopyMemory may read a source; the test's *mid-call actions*
//! (a provider thread that frees or protects its buffer at a chosen point of a
//! MessageNotify call, [`MidCall`]); and the verifier's check that kernel code wrote no
//! user page that was not writable at the time.
//!
//! Does not own: the process heap and stacks. Memory the model did not hand out (a
//! test's `Vec`, an array on its stack, userlib's buffers) is the calling process's own
//! committed read-write memory for as long as the call lasts; it cannot change state
//! under the driver, so a test that needs a buffer to go away mid-call allocates it with
//! VirtualAlloc.
//!
//! How a bad write is caught: the model's pages stay real host memory after they are
//! freed or protected (a stray store must not corrupt the test process), so a driver's
//! store does not fault as it would on Windows. Instead each page that stops being
//! writable is snapshotted, and after every MessageNotify call the pages of the caller's
//! process are compared with their snapshots (as the I/O model checks a post-operation's
//! writes to a caller's buffer): a difference is a kernel-mode write into freed,
//! decommitted, read-only or no-access user memory — on Windows an access violation no
//! handler catches, a bug check. Changing a page back to writable (VirtualProtect,
//! recommitting) checks it first.
//!
//! Simplifications, each stricter than or equal to Windows for a driver: pages are 4 KiB
//! (x64 and arm64 Windows); the protections modelled are PAGE_NOACCESS, PAGE_READONLY and
//! PAGE_READWRITE (any other value is a test bug and panics); an address VirtualAlloc
//! gave another process, or a released one, is unmapped in the caller's process; a range
//! secured by a MessageNotify call must be unsecured before that call returns (Windows
//! keeps it secured until the process exits, and the driver has no process context to
//! unsecure it in later), so one left secured is reported.

use crate::model::fast::HashMap;
use std::alloc::Layout;
use std::cell::Cell;
use std::ffi::c_void;
use std::thread::ThreadId;

use windows_sys::Win32::Foundation::{
    self as F, HANDLE, STATUS_FREE_VM_NOT_AT_BASE, STATUS_INVALID_PAGE_PROTECTION,
    STATUS_INVALID_PARAMETER, STATUS_MEMORY_NOT_ALLOCATED, STATUS_NOT_COMMITTED,
};
use windows_sys::Win32::System::Memory::{
    MEM_COMMIT, MEM_DECOMMIT, MEM_RELEASE, MEM_RESERVE, PAGE_NOACCESS, PAGE_READONLY,
    PAGE_READWRITE,
};
use windows_sys::core::BOOL;

use super::fltlib::{SetLastError, win32_from_nt};
use super::irql::{self, APC_LEVEL};
use super::process::{self, SYSTEM_PID};
use super::{Kernel, Machine, with_kernel};

/// The page size of x64 and arm64 Windows.
pub const PAGE_SIZE: usize = 0x1000;

/// Secure handles the model gives out start here: far from any real pointer or other
/// model handle, so one that leaks into a real call fails loudly.
const SECURE_BASE: usize = 0x7e5a_0000_0000;

/// Where in a MessageNotify call a test's mid-call action runs ([`Machine::mid_call`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MidCall {
    /// When the driver's first read of the request's input returns (a guarded copy, or
    /// MmCopyMemory): the window between reading the request and touching the reply
    /// buffer.
    AfterInputCopy,
    /// On entry to the driver's MmProbeAndLockPages, before the range is examined.
    BeforeProbe,
    /// When the driver's MmProbeAndLockPages has locked a range, before it returns: the
    /// pages are the MDL's now, whatever the process does with the addresses.
    AfterLock,
    /// On entry to the driver's guarded copy into user memory (the reply), before the
    /// range is examined.
    BeforeUserWrite,
    /// On entry to the driver's MmSecureVirtualMemory, before the range is examined.
    BeforeSecure,
    /// When the driver's MmSecureVirtualMemory has secured a range, before it returns:
    /// the action's VirtualFree / VirtualProtect of that range must now fail.
    AfterSecure,
}

/// A page's state, as VirtualQuery would report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Page {
    /// Released with its whole reservation (VirtualFree MEM_RELEASE), or its process
    /// has exited: the address is no longer mapped.
    Free,
    /// Reserved, not committed (MEM_RESERVE, or MEM_DECOMMIT).
    Reserved,
    /// Committed with this `PAGE_*` protection.
    Committed(u32),
}

impl Page {
    fn readable(self) -> bool {
        matches!(self, Page::Committed(PAGE_READONLY | PAGE_READWRITE))
    }

    fn writable(self) -> bool {
        self == Page::Committed(PAGE_READWRITE)
    }

    fn describe(self) -> &'static str {
        match self {
            Page::Free => "freed (VirtualFree MEM_RELEASE)",
            Page::Reserved => "decommitted (not committed)",
            Page::Committed(PAGE_READONLY) => "read-only (PAGE_READONLY)",
            Page::Committed(PAGE_NOACCESS) => "no-access (PAGE_NOACCESS)",
            Page::Committed(_) => "writable",
        }
    }
}

/// One VirtualAlloc reservation of one process.
struct Region {
    pid: u32,
    /// Page aligned; the host memory behind it stays allocated until the machine goes.
    base: usize,
    len: usize,
    pages: Vec<Page>,
    /// The bytes of each page that is not writable, as they were when it stopped being
    /// writable (or were last checked): page index -> bytes.
    guards: HashMap<usize, Vec<u8>>,
    /// Pages whose contents the pager cannot read back ([`Machine::fail_page_in`]):
    /// touching them raises STATUS_IN_PAGE_ERROR until they are decommitted or released.
    bad_backing: crate::model::fast::HashSet<usize>,
}

impl Region {
    fn layout(len: usize) -> Layout {
        Layout::from_size_align(len, PAGE_SIZE).expect("a page-aligned layout of a region")
    }

    fn contains(&self, addr: usize) -> bool {
        addr >= self.base && addr - self.base < self.len
    }

    fn released(&self) -> bool {
        self.pages.iter().all(|p| *p == Page::Free)
    }

    fn page_bytes(&self, index: usize) -> Vec<u8> {
        let mut bytes = vec![0u8; PAGE_SIZE];
        // SAFETY: the page lies inside this region's live host allocation.
        unsafe {
            std::ptr::copy_nonoverlapping(
                (self.base + index * PAGE_SIZE) as *const u8,
                bytes.as_mut_ptr(),
                PAGE_SIZE,
            )
        };
        bytes
    }

    /// Moves page `index` to `new`: snapshotting it when it stops being writable,
    /// checking it (a message per write found) when it becomes writable again.
    fn set(&mut self, index: usize, new: Page, found: &mut Vec<String>) {
        let old = self.pages[index];
        if !matches!(new, Page::Committed(_)) {
            // A page decommitted or released has no contents left to page in.
            self.bad_backing.remove(&index);
        }
        if old.writable() && !new.writable() {
            let bytes = self.page_bytes(index);
            self.guards.entry(index).or_insert(bytes);
        } else if !old.writable() && new.writable() {
            self.check_page(index, found);
            self.guards.remove(&index);
        }
        self.pages[index] = new;
    }

    /// Compares page `index` with its snapshot; a difference is reported once.
    fn check_page(&mut self, index: usize, found: &mut Vec<String>) {
        let now = self.page_bytes(index);
        let Some(before) = self.guards.get_mut(&index) else {
            return;
        };
        let changed: Vec<usize> = (0..PAGE_SIZE).filter(|&i| before[i] != now[i]).collect();
        if let (Some(first), Some(last)) = (changed.first(), changed.last()) {
            let at = self.base + index * PAGE_SIZE;
            found.push(format!(
                "kernel code wrote {} byte(s) between {:#x} and {:#x} of process {}'s user \
                 memory while that page was {}: on Windows that store raises an access \
                 violation in kernel mode that no handler catches, a bug check. Secure the \
                 range first (MmSecureVirtualMemory with PAGE_READWRITE) and write only while \
                 it is secured",
                changed.len(),
                at + first,
                at + last,
                self.pid,
                self.pages[index].describe(),
            ));
            *before = now;
        }
    }

    fn check(&mut self, found: &mut Vec<String>) {
        let mut pages: Vec<usize> = self.guards.keys().copied().collect();
        pages.sort_unstable();
        for index in pages {
            self.check_page(index, found);
        }
    }

    /// The page indices `[first, end)` that `[addr, addr + len)` touches.
    fn span(&self, addr: usize, len: usize) -> (usize, usize) {
        let first = (addr - self.base) / PAGE_SIZE;
        let end = (addr - self.base + len).div_ceil(PAGE_SIZE);
        (first, end.min(self.pages.len()))
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: allocated in VirtualAlloc with this very layout, freed once, here.
        unsafe { std::alloc::dealloc(self.base as *mut u8, Region::layout(self.len)) };
    }
}

/// A live MmSecureVirtualMemory entry.
#[derive(Debug, Clone)]
struct Secure {
    handle: usize,
    pid: u32,
    base: usize,
    len: usize,
    /// PAGE_READWRITE or PAGE_READONLY.
    probe: u32,
    /// The thread that secured it and the model's sequence number then: a MessageNotify
    /// call owns the entries its own thread made after the call began.
    thread: ThreadId,
    seq: u64,
}

impl Secure {
    fn overlaps(&self, addr: usize, len: usize) -> bool {
        addr < self.base + self.len && self.base < addr + len
    }

    /// Whether pages may get `protect` while this entry holds them (the MmSecureVirtualMemory
    /// table: PAGE_READWRITE forbids PAGE_READONLY and PAGE_NOACCESS, PAGE_READONLY
    /// forbids PAGE_NOACCESS).
    fn allows(&self, protect: u32) -> bool {
        match self.probe {
            PAGE_READWRITE => protect == PAGE_READWRITE,
            _ => protect != PAGE_NOACCESS,
        }
    }
}

/// A test's action, armed for one point of one process's next MessageNotify.
struct Action {
    pid: u32,
    at: MidCall,
    run: Box<dyn FnOnce() + Send>,
}

/// The user address spaces of every process, as far as the model tracks them.
#[derive(Default)]
pub(crate) struct Vm {
    regions: Vec<Region>,
    secures: Vec<Secure>,
    next_secure: usize,
    seq: u64,
    actions: Vec<Action>,
}

/// What an address is in process `pid`.
enum Lookup {
    /// Memory the model did not hand out: the process's own heap or stack.
    Untracked,
    /// A page of a region (region index, page index).
    Page(usize, usize),
    /// Not mapped in this process: released, or another process's.
    Unmapped,
}

impl Vm {
    fn lookup(&self, pid: u32, addr: usize) -> Lookup {
        match self.regions.iter().position(|r| r.contains(addr)) {
            None => Lookup::Untracked,
            Some(r) if self.regions[r].pid != pid => Lookup::Unmapped,
            Some(r) => {
                let page = (addr - self.regions[r].base) / PAGE_SIZE;
                if self.regions[r].pages[page] == Page::Free {
                    Lookup::Unmapped
                } else {
                    Lookup::Page(r, page)
                }
            }
        }
    }

    /// The live (not released) region of `pid` holding `addr`.
    fn region_of(&self, pid: u32, addr: usize) -> Option<usize> {
        self.regions
            .iter()
            .position(|r| r.pid == pid && r.contains(addr) && !r.released())
    }

    /// The secure entry that forbids giving `[addr, addr + len)` of `pid` the new state:
    /// `None` for a release or decommit, `Some(protect)` for a protection change.
    fn blocking(&self, pid: u32, addr: usize, len: usize, protect: Option<u32>) -> bool {
        self.secures
            .iter()
            .any(|s| s.pid == pid && s.overlaps(addr, len) && protect.is_none_or(|p| !s.allows(p)))
    }

    fn check_process(&mut self, pid: u32) -> Vec<String> {
        let mut found = Vec::new();
        for region in self.regions.iter_mut().filter(|r| r.pid == pid) {
            region.check(&mut found);
        }
        found
    }
}

/// How many bytes from `addr` are readable, up to `len`, for kernel code running in the
/// calling thread's process: MmCopyMemory copies that many and fails after them.
pub(crate) fn readable_prefix(addr: usize, len: usize) -> usize {
    let pid = process::current_pid();
    with_kernel(|k| {
        let mut at = addr;
        let end = addr.saturating_add(len);
        while at < end {
            let next_page = (at / PAGE_SIZE + 1) * PAGE_SIZE;
            let readable = match k.vm.lookup(pid, at) {
                Lookup::Untracked => true,
                Lookup::Page(r, p) => k.vm.regions[r].pages[p].readable(),
                Lookup::Unmapped => false,
            };
            if !readable {
                return at - addr;
            }
            at = next_page.min(end);
        }
        len
    })
}

/// How many bytes from `addr` kernel code running in process `pid` may touch for reading
/// (or, with `write`, writing), up to `len`, and the exception touching the next one
/// raises: STATUS_ACCESS_VIOLATION for a page that is not mapped or not accessible so,
/// STATUS_IN_PAGE_ERROR for one the pager cannot bring in. Memory the model did not hand
/// out (heap, stacks, pool) is always accessible.
pub(crate) fn accessible(
    vm: &Vm,
    pid: u32,
    addr: usize,
    len: usize,
    write: bool,
) -> (usize, Option<i32>) {
    let mut at = addr;
    let end = addr.saturating_add(len);
    while at < end {
        let next_page = (at / PAGE_SIZE + 1) * PAGE_SIZE;
        let fault = match vm.lookup(pid, at) {
            Lookup::Untracked => None,
            Lookup::Unmapped => Some(F::STATUS_ACCESS_VIOLATION),
            Lookup::Page(r, p) => {
                let page = vm.regions[r].pages[p];
                if !(if write {
                    page.writable()
                } else {
                    page.readable()
                }) {
                    Some(F::STATUS_ACCESS_VIOLATION)
                } else if vm.regions[r].bad_backing.contains(&p) {
                    Some(F::STATUS_IN_PAGE_ERROR)
                } else {
                    None
                }
            }
        };
        if fault.is_some() {
            return (at - addr, fault);
        }
        at = next_page.min(end);
    }
    (len, None)
}

thread_local! {
    /// The process of the MessageNotify call this thread is in, if any.
    static IN_MESSAGE: Cell<Option<u32>> = const { Cell::new(None) };
}

/// Marks the start of a MessageNotify call on this thread (in the caller's process);
/// returns the mark [`end_message`] needs.
pub(crate) fn begin_message() -> u64 {
    IN_MESSAGE.with(|c| c.set(Some(process::current_pid())));
    with_kernel(|k| k.vm.seq)
}

/// The end of a MessageNotify call: reports every write into a page of the caller's that
/// was not writable, and every range this call secured and left secured.
pub(crate) fn end_message(mark: u64) {
    IN_MESSAGE.with(|c| c.set(None));
    let pid = process::current_pid();
    super::seh::end_message(pid);
    let thread = std::thread::current().id();
    with_kernel(|k| {
        for message in k.vm.check_process(pid) {
            k.violation("MessageNotify", message);
        }
        let left: Vec<String> =
            k.vm.secures
                .iter()
                .filter(|s| s.thread == thread && s.seq >= mark)
                .map(|s| format!("{:#x} ({} bytes at {:#x})", s.handle, s.len, s.base))
                .collect();
        if !left.is_empty() {
            k.violation(
                "MessageNotify",
                format!(
                    "returned with {} user range(s) still secured: {}. MmUnsecureVirtualMemory \
                     must run in the context of the process that secured the range; past the \
                     callback the driver has none, and the range can be neither freed nor \
                     protected until the process exits",
                    left.len(),
                    left.join(", ")
                ),
            );
        }
    });
}

/// Runs the action armed for `at` in the MessageNotify call this thread is in, if any:
/// on a thread of its own in the caller's process (another thread of the provider), to
/// completion, with the kernel lock released.
pub(crate) fn reach(at: MidCall) {
    let Some(pid) = IN_MESSAGE.with(Cell::get) else {
        return;
    };
    let action = with_kernel(|k| {
        let i =
            k.vm.actions
                .iter()
                .position(|a| a.pid == pid && a.at == at)?;
        Some(k.vm.actions.remove(i))
    });
    let Some(action) = action else { return };
    let run = action.run;
    let outcome = std::thread::spawn(move || process::run_as(pid, run)).join();
    if outcome.is_err() {
        // A test bug, surfaced where the test looks: the machine's record.
        with_kernel(|k| {
            k.violation(
                "(test) mid-call action",
                format!("the action armed for {at:?} in process {pid} panicked"),
            )
        });
    }
}

/// The calling process, for the user-mode entry points (VirtualAlloc and friends): a test
/// bug if the thread belongs to no user process.
fn user_pid(api: &str) -> u32 {
    let pid = process::current_pid();
    assert!(
        pid != SYSTEM_PID,
        "{api} called from a thread of no user process (wrap it in process::run_as)"
    );
    pid
}

fn modelled(api: &str, protect: u32) -> u32 {
    assert!(
        matches!(protect, PAGE_NOACCESS | PAGE_READONLY | PAGE_READWRITE),
        "{api}: protection {protect:#x} is not modelled (PAGE_NOACCESS, PAGE_READONLY, \
         PAGE_READWRITE are)"
    );
    protect
}

/// Sets the thread's last error from `status` and returns the failure of a BOOL API.
fn fail(status: i32) -> BOOL {
    SetLastError(win32_from_nt(status));
    0
}

/// Pushes the writes found while changing pages as violations: the write happened
/// before the change, in kernel code.
fn report(k: &mut Kernel, found: Vec<String>) {
    for message in found {
        k.violation("user memory", message);
    }
}

/// VirtualAlloc: reserves (MEM_RESERVE, at an address the model picks) and commits
/// (MEM_COMMIT) zero-filled pages, or commits the reserved pages of an existing
/// reservation of the caller's (MEM_COMMIT at an address in it; a recommitted page reads
/// as zeros). Pages already committed keep their protection (a simplification: changing
/// it is VirtualProtect's job, and the tests use that).
#[unsafe(no_mangle)]
pub extern "system" fn VirtualAlloc(
    address: *const c_void,
    size: usize,
    allocation: u32,
    protect: u32,
) -> *mut c_void {
    let pid = user_pid("VirtualAlloc");
    let protect = modelled("VirtualAlloc", protect);
    if size == 0 || allocation & !(MEM_COMMIT | MEM_RESERVE) != 0 || allocation == 0 {
        SetLastError(F::ERROR_INVALID_PARAMETER);
        return std::ptr::null_mut();
    }
    if address.is_null() {
        let len = size.div_ceil(PAGE_SIZE) * PAGE_SIZE;
        // SAFETY: a non-zero size and a power-of-two alignment.
        let base = unsafe { std::alloc::alloc_zeroed(Region::layout(len)) };
        assert!(
            !base.is_null(),
            "host out of memory for VirtualAlloc({len})"
        );
        let page = if allocation & MEM_COMMIT != 0 {
            Page::Committed(protect)
        } else {
            Page::Reserved
        };
        let pages = vec![page; len / PAGE_SIZE];
        let mut region = Region {
            pid,
            base: base as usize,
            len,
            pages,
            guards: HashMap::default(),
            bad_backing: Default::default(),
        };
        if !page.writable() {
            region.guards = (0..len / PAGE_SIZE)
                .map(|i| (i, vec![0u8; PAGE_SIZE]))
                .collect();
        }
        with_kernel(|k| k.vm.regions.push(region));
        SetLastError(F::ERROR_SUCCESS);
        return base.cast();
    }
    if allocation & MEM_COMMIT == 0 || allocation & MEM_RESERVE != 0 {
        // Reserving at a chosen address is not modelled: tests let the model choose.
        panic!("VirtualAlloc: MEM_RESERVE at a given address is not modelled");
    }
    let addr = address as usize;
    with_kernel(|k| {
        let Some(r) = k.vm.region_of(pid, addr) else {
            SetLastError(F::ERROR_INVALID_ADDRESS);
            return std::ptr::null_mut();
        };
        let region = &mut k.vm.regions[r];
        if size > region.len - (addr - region.base) {
            SetLastError(F::ERROR_INVALID_ADDRESS);
            return std::ptr::null_mut();
        }
        let (first, end) = region.span(addr, size);
        let mut found = Vec::new();
        for i in first..end {
            if region.pages[i] != Page::Reserved {
                continue;
            }
            // Newly committed memory reads as zeros: whatever was written there while it
            // was decommitted is checked first.
            region.check_page(i, &mut found);
            // SAFETY: the page lies inside the region's live host allocation.
            unsafe {
                std::ptr::write_bytes((region.base + i * PAGE_SIZE) as *mut u8, 0, PAGE_SIZE)
            };
            if let Some(guard) = region.guards.get_mut(&i) {
                guard.fill(0);
            }
            region.set(i, Page::Committed(protect), &mut found);
        }
        let at = region.base + first * PAGE_SIZE;
        report(k, found);
        SetLastError(F::ERROR_SUCCESS);
        at as *mut c_void
    })
}

/// VirtualFree: MEM_RELEASE frees a whole reservation (the address VirtualAlloc returned,
/// size 0); MEM_DECOMMIT decommits pages (size 0 at the base: all of them). Either fails
/// with ERROR_INVALID_PARAMETER (STATUS_INVALID_PAGE_PROTECTION) while a secured range
/// is in the way: for a release, anywhere in the reservation.
#[unsafe(no_mangle)]
pub extern "system" fn VirtualFree(address: *mut c_void, size: usize, free_type: u32) -> BOOL {
    let pid = user_pid("VirtualFree");
    let addr = address as usize;
    with_kernel(|k| {
        let Some(r) = k.vm.region_of(pid, addr) else {
            return fail(STATUS_MEMORY_NOT_ALLOCATED);
        };
        let (base, len) = (k.vm.regions[r].base, k.vm.regions[r].len);
        let (from, count) = match free_type {
            MEM_RELEASE if size != 0 => return fail(STATUS_INVALID_PARAMETER),
            MEM_RELEASE if addr != base => return fail(STATUS_FREE_VM_NOT_AT_BASE),
            MEM_RELEASE => (base, len),
            MEM_DECOMMIT if size == 0 && addr != base => return fail(STATUS_FREE_VM_NOT_AT_BASE),
            MEM_DECOMMIT if size == 0 => (base, len),
            MEM_DECOMMIT if size > len - (addr - base) => return fail(STATUS_MEMORY_NOT_ALLOCATED),
            MEM_DECOMMIT => (addr, size),
            _ => return fail(STATUS_INVALID_PARAMETER),
        };
        if k.vm.blocking(pid, from, count, None) {
            return fail(STATUS_INVALID_PAGE_PROTECTION);
        }
        let new = if free_type == MEM_RELEASE {
            Page::Free
        } else {
            Page::Reserved
        };
        let region = &mut k.vm.regions[r];
        let (first, end) = region.span(from, count);
        let mut found = Vec::new();
        for i in first..end {
            region.set(i, new, &mut found);
        }
        report(k, found);
        SetLastError(F::ERROR_SUCCESS);
        1
    })
}

/// VirtualProtect: changes the protection of committed pages of one reservation; the old
/// protection (of the first page) goes to `*old`. Fails with ERROR_INVALID_PARAMETER
/// (STATUS_INVALID_PAGE_PROTECTION) when a secured range forbids the new protection.
///
/// # Safety
/// `old` is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn VirtualProtect(
    address: *const c_void,
    size: usize,
    protect: u32,
    old: *mut u32,
) -> BOOL {
    let pid = user_pid("VirtualProtect");
    let protect = modelled("VirtualProtect", protect);
    if old.is_null() {
        return fail(STATUS_INVALID_PARAMETER);
    }
    let addr = address as usize;
    with_kernel(|k| {
        let Some(r) = k.vm.region_of(pid, addr) else {
            return fail(STATUS_MEMORY_NOT_ALLOCATED);
        };
        let region = &k.vm.regions[r];
        if size == 0 || size > region.len - (addr - region.base) {
            return fail(STATUS_INVALID_PARAMETER);
        }
        let (first, end) = region.span(addr, size);
        if region.pages[first..end]
            .iter()
            .any(|p| !matches!(p, Page::Committed(_)))
        {
            return fail(STATUS_NOT_COMMITTED);
        }
        let Page::Committed(previous) = region.pages[first] else {
            return fail(STATUS_NOT_COMMITTED);
        };
        let (from, to) = (
            region.base + first * PAGE_SIZE,
            region.base + end * PAGE_SIZE,
        );
        if k.vm.blocking(pid, from, to - from, Some(protect)) {
            return fail(STATUS_INVALID_PAGE_PROTECTION);
        }
        let region = &mut k.vm.regions[r];
        let mut found = Vec::new();
        for i in first..end {
            region.set(i, Page::Committed(protect), &mut found);
        }
        report(k, found);
        // SAFETY: checked non-NULL; the caller's variable.
        unsafe { old.write(previous) };
        SetLastError(F::ERROR_SUCCESS);
        1
    })
}

/// MmSecureVirtualMemory: secures `[address, address + size)` of the current process so
/// that it can be neither freed nor decommitted, nor given a protection below
/// `probe` (PAGE_READWRITE or PAGE_READONLY), until MmUnsecureVirtualMemory. NULL if it
/// cannot: not a user address of this process (kernel memory, a thread of the System
/// process, released or another process's memory), not within one reservation, a page
/// not committed or not accessible as `probe` asks, or an invalid parameter.
#[unsafe(no_mangle)]
pub extern "system" fn MmSecureVirtualMemory(
    address: *const c_void,
    size: usize,
    probe: u32,
) -> HANDLE {
    irql::check("MmSecureVirtualMemory", APC_LEVEL);
    reach(MidCall::BeforeSecure);
    let pid = process::current_pid();
    let addr = address as usize;
    let handle = with_kernel(|k| {
        if pid == SYSTEM_PID
            || address.is_null()
            || size == 0
            || addr.checked_add(size).is_none()
            || !matches!(probe, PAGE_READWRITE | PAGE_READONLY)
            || k.pool.block_holding(addr, 1).is_some()
        {
            return None;
        }
        let ok = match k.vm.lookup(pid, addr) {
            Lookup::Unmapped => false,
            Lookup::Untracked => {
                // The process's own heap or stack, unless the range runs into a region.
                !k.vm
                    .regions
                    .iter()
                    .any(|r| addr < r.base + r.len && r.base < addr + size)
            }
            Lookup::Page(r, _) => {
                let region = &k.vm.regions[r];
                let (first, end) = region.span(addr, size);
                addr - region.base + size <= region.len
                    && region.pages[first..end].iter().all(|p| {
                        if probe == PAGE_READWRITE {
                            p.writable()
                        } else {
                            p.readable()
                        }
                    })
            }
        };
        if !ok {
            return None;
        }
        k.vm.next_secure += 1;
        let handle = SECURE_BASE + k.vm.next_secure * 0x10;
        k.vm.seq += 1;
        let seq = k.vm.seq;
        k.vm.secures.push(Secure {
            handle,
            pid,
            base: addr,
            len: size,
            probe,
            thread: std::thread::current().id(),
            seq,
        });
        Some(handle)
    });
    match handle {
        Some(handle) => {
            reach(MidCall::AfterSecure);
            handle as HANDLE
        }
        None => std::ptr::null_mut(),
    }
}

/// MmUnsecureVirtualMemory: ends a secure, in the context of the process that made it.
#[unsafe(no_mangle)]
pub extern "system" fn MmUnsecureVirtualMemory(handle: HANDLE) {
    irql::check("MmUnsecureVirtualMemory", APC_LEVEL);
    let pid = process::current_pid();
    with_kernel(|k| {
        let Some(i) =
            k.vm.secures
                .iter()
                .position(|s| s.handle == handle as usize)
        else {
            k.violation(
                "MmUnsecureVirtualMemory",
                format!(
                    "{handle:p} is not a live secure handle (never returned by \
                     MmSecureVirtualMemory, or already unsecured)"
                ),
            );
            return;
        };
        let owner = k.vm.secures[i].pid;
        if owner != pid {
            k.violation(
                "MmUnsecureVirtualMemory",
                format!(
                    "called in process {pid} for a range secured in process {owner}: it must be \
                     called in the context of the process that secured the memory"
                ),
            );
            return;
        }
        k.vm.secures.remove(i);
    });
}

/// A process exited: its secures end (the memory is unsecured automatically when the
/// process terminates), its pending actions are dropped and its address space goes.
pub(crate) fn process_exit(pid: u32) {
    with_kernel(|k| {
        k.vm.secures.retain(|s| s.pid != pid);
        k.vm.actions.retain(|a| a.pid != pid);
        let mut found = Vec::new();
        for region in k.vm.regions.iter_mut().filter(|r| r.pid == pid) {
            for i in 0..region.pages.len() {
                region.set(i, Page::Free, &mut found);
            }
        }
        report(k, found);
    });
}

impl Machine {
    /// Arms `action` to run once, as another thread of process `pid`, when the next
    /// MessageNotify call made by a thread of `pid` reaches `at`; that call waits for it
    /// to finish. This is the deterministic form of a provider thread racing its own
    /// FilterSendMessage (freeing or protecting the reply buffer with VirtualFree or
    /// VirtualProtect, say). An action that panics is recorded as a violation.
    pub fn mid_call(&self, pid: u32, at: MidCall, action: impl FnOnce() + Send + 'static) {
        with_kernel(|k| {
            k.vm.actions.push(Action {
                pid,
                at,
                run: Box::new(action),
            })
        });
    }

    /// Makes the page of process `pid` holding `addr` (a committed page VirtualAlloc
    /// gave it) one whose contents the pager cannot read back — a bad block in the paging
    /// file: the next kernel access to it raises STATUS_IN_PAGE_ERROR, as does every one
    /// after until the page is decommitted or released. Securing the range does not help
    /// (MmSecureVirtualMemory: "it does not protect against other types of exceptions");
    /// only an exception guard does.
    pub fn fail_page_in(&self, pid: u32, addr: usize) {
        with_kernel(|k| {
            let r =
                k.vm.region_of(pid, addr)
                    .expect("fail_page_in: not an address VirtualAlloc gave this process");
            let region = &mut k.vm.regions[r];
            let page = (addr - region.base) / PAGE_SIZE;
            assert!(
                matches!(region.pages[page], Page::Committed(_)),
                "fail_page_in: the page is not committed"
            );
            region.bad_backing.insert(page);
        });
    }

    /// Armed mid-call actions that have not run yet.
    pub fn mid_call_pending(&self) -> usize {
        with_kernel(|k| k.vm.actions.len())
    }

    /// Ranges of process `pid` secured with MmSecureVirtualMemory and not yet unsecured.
    pub fn secured_ranges(&self, pid: u32) -> usize {
        with_kernel(|k| k.vm.secures.iter().filter(|s| s.pid == pid).count())
    }
}
