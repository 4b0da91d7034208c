//! Processes and threads: who is running, which image, which placeholder compatibility
//! mode, and who asked for each I/O.
//!
//! Owns: the process table (pid, image path in NT form, process compatibility mode,
//! whether it runs elevated, whether it is alive), the calling thread's identity
//! (thread-local: which process it belongs to, its own compatibility mode), and the
//! kernel entry points that read them.
//!
//! A model thread belongs to the System process (pid 4) until [`run_as`] puts it in a
//! user process, the way a system worker thread and an application thread differ.

use std::cell::Cell;
use std::ffi::c_void;

use windows_sys::Win32::Foundation::HANDLE;

use super::with_kernel;

/// pid of the System process: kernel worker threads and DriverEntry run in it.
pub const SYSTEM_PID: u32 = 4;

/// `PHCM_APPLICATION_DEFAULT`.
pub const PHCM_APPLICATION_DEFAULT: i8 = 0;
/// `PHCM_DISGUISE_PLACEHOLDER`.
pub const PHCM_DISGUISE_PLACEHOLDER: i8 = 1;
/// `PHCM_EXPOSE_PLACEHOLDERS`.
pub const PHCM_EXPOSE_PLACEHOLDERS: i8 = 2;
/// `PHCM_DISGUISE_FULL_PLACEHOLDERS` (newer headers).
pub const PHCM_DISGUISE_FULL_PLACEHOLDERS: i8 = 3;
/// `PHCM_ERROR_INVALID_PARAMETER`.
pub const PHCM_ERROR_INVALID_PARAMETER: i8 = -1;
/// `PHCM_ERROR_NO_TEB`.
pub const PHCM_ERROR_NO_TEB: i8 = -2;
/// `PHCM_ERROR_NO_PEB`.
pub const PHCM_ERROR_NO_PEB: i8 = -3;

/// Where process objects start: far from anything real, distinct from handles.
const EPROCESS_BASE: usize = 0x7e58_0000_0000;

/// One process.
#[derive(Debug, Clone)]
pub struct Process {
    /// Process id.
    pub pid: u32,
    /// Image path in NT device form (`\Device\HarddiskVolume1\Tools\app.exe`).
    pub image: String,
    /// Process-wide placeholder compatibility mode (`PHCM_*`).
    pub compat: i8,
    /// Whether its token is elevated (in the port descriptor's DACL).
    pub elevated: bool,
    /// False once it has exited or been killed.
    pub alive: bool,
    /// Its command line, as its PEB holds it (the image, quoted).
    pub command_line: String,
}

impl Process {
    /// The EPROCESS pointer the model hands out for this process.
    pub fn eprocess(&self) -> *mut c_void {
        (EPROCESS_BASE + self.pid as usize * 0x1000) as *mut c_void
    }

    /// Its primary token object (an address of its own, next to the EPROCESS).
    pub fn token(&self) -> *mut c_void {
        (EPROCESS_BASE + self.pid as usize * 0x1000 + 0x800) as *mut c_void
    }
}

pub(crate) struct Processes {
    pub(crate) table: Vec<Process>,
    next_pid: u32,
    /// References PsReferencePrimaryToken handed out and not yet released, per pid.
    pub(crate) token_refs: crate::model::fast::HashMap<u32, usize>,
}

impl Default for Processes {
    fn default() -> Self {
        Self {
            table: vec![Process {
                pid: SYSTEM_PID,
                image: String::new(),
                compat: PHCM_APPLICATION_DEFAULT,
                elevated: true,
                alive: true,
                // The System process has no PEB: nothing to read.
                command_line: String::new(),
            }],
            next_pid: 1000,
            token_refs: crate::model::fast::HashMap::default(),
        }
    }
}

impl Processes {
    pub(crate) fn spawn(&mut self, image: String, compat: i8, elevated: bool) -> u32 {
        self.next_pid += 4;
        let pid = self.next_pid;
        self.table.push(Process {
            pid,
            command_line: format!("\"{image}\""),
            image,
            compat,
            elevated,
            alive: true,
        });
        pid
    }

    pub(crate) fn get(&self, pid: u32) -> Option<&Process> {
        self.table.iter().find(|p| p.pid == pid)
    }

    pub(crate) fn get_mut(&mut self, pid: u32) -> Option<&mut Process> {
        self.table.iter_mut().find(|p| p.pid == pid)
    }

    pub(crate) fn by_eprocess(&self, eprocess: *mut c_void) -> Option<&Process> {
        self.table.iter().find(|p| p.eprocess() == eprocess)
    }
}

thread_local! {
    static CURRENT_PID: Cell<u32> = const { Cell::new(SYSTEM_PID) };
    static THREAD_COMPAT: Cell<i8> = const { Cell::new(PHCM_APPLICATION_DEFAULT) };
}

/// The pid of the process the calling thread belongs to.
pub fn current_pid() -> u32 {
    CURRENT_PID.with(Cell::get)
}

/// The calling thread's own placeholder compatibility mode.
pub fn thread_compat() -> i8 {
    THREAD_COMPAT.with(Cell::get)
}

/// Sets the calling thread's placeholder compatibility mode; returns the old one.
pub fn set_thread_compat(mode: i8) -> i8 {
    THREAD_COMPAT.with(|c| c.replace(mode))
}

/// Runs `f` on this thread as a thread of process `pid` with a fresh thread
/// compatibility mode, then returns the thread to where it was.
pub fn run_as<R>(pid: u32, f: impl FnOnce() -> R) -> R {
    let old = CURRENT_PID.with(|c| c.replace(pid));
    let old_mode = set_thread_compat(PHCM_APPLICATION_DEFAULT);
    let r = f();
    CURRENT_PID.with(|c| c.set(old));
    set_thread_compat(old_mode);
    r
}

/// The EPROCESS of the calling thread's process.
pub(crate) fn current_eprocess() -> *mut c_void {
    with_kernel(|k| {
        k.processes
            .get(current_pid())
            .map_or(std::ptr::null_mut(), Process::eprocess)
    })
}

/// PsGetCurrentProcessId.
#[unsafe(no_mangle)]
pub extern "system" fn PsGetCurrentProcessId() -> HANDLE {
    current_pid() as usize as HANDLE
}

/// IoGetCurrentProcess.
#[unsafe(no_mangle)]
pub extern "system" fn IoGetCurrentProcess() -> *mut c_void {
    current_eprocess()
}

/// PsReferencePrimaryToken: the process's primary token, referenced (release it with
/// PsDereferencePrimaryToken).
#[unsafe(no_mangle)]
pub extern "system" fn PsReferencePrimaryToken(process: *mut c_void) -> *mut c_void {
    with_kernel(|k| {
        let Some((pid, token)) = k.processes.by_eprocess(process).map(|p| (p.pid, p.token()))
        else {
            k.violation(
                "PsReferencePrimaryToken",
                format!("{process:p} is not a process object"),
            );
            return std::ptr::null_mut();
        };
        *k.processes.token_refs.entry(pid).or_default() += 1;
        token
    })
}

/// PsDereferencePrimaryToken.
#[unsafe(no_mangle)]
pub extern "system" fn PsDereferencePrimaryToken(token: *const c_void) {
    with_kernel(|k| {
        let pid = k
            .processes
            .table
            .iter()
            .find(|p| p.token().cast_const() == token)
            .map(|p| p.pid);
        let held = pid.and_then(|pid| k.processes.token_refs.get_mut(&pid).filter(|n| **n > 0));
        match held {
            Some(n) => *n -= 1,
            None => k.violation(
                "PsDereferencePrimaryToken",
                format!("{token:p} is not a token referenced by PsReferencePrimaryToken, or is released twice"),
            ),
        }
    });
}

/// SeTokenIsAdmin: whether the token holds the Administrators group enabled — an
/// elevated administrator's (or SYSTEM's); a standard user's, or a filtered token under
/// UAC, does not.
#[unsafe(no_mangle)]
pub extern "system" fn SeTokenIsAdmin(token: *const c_void) -> bool {
    with_kernel(|k| {
        let held = k
            .processes
            .table
            .iter()
            .find(|p| p.token().cast_const() == token)
            .map(|p| {
                (
                    p.elevated,
                    k.processes.token_refs.get(&p.pid).copied().unwrap_or(0),
                )
            });
        match held {
            Some((elevated, refs)) if refs > 0 => elevated,
            _ => {
                k.violation(
                    "SeTokenIsAdmin",
                    format!("{token:p} is not a referenced token"),
                );
                false
            }
        }
    })
}

/// PsGetProcessId.
#[unsafe(no_mangle)]
pub extern "system" fn PsGetProcessId(process: *mut c_void) -> HANDLE {
    with_kernel(|k| match k.processes.by_eprocess(process) {
        Some(p) => p.pid as usize as HANDLE,
        None => {
            k.violation(
                "PsGetProcessId",
                format!("{process:p} is not a process object"),
            );
            std::ptr::null_mut()
        }
    })
}

/// RtlQueryProcessPlaceholderCompatibilityMode: the calling process's mode.
#[unsafe(no_mangle)]
pub extern "system" fn RtlQueryProcessPlaceholderCompatibilityMode() -> i8 {
    let pid = current_pid();
    if pid == SYSTEM_PID {
        // System threads have no PEB.
        return PHCM_ERROR_NO_PEB;
    }
    with_kernel(|k| k.processes.get(pid).map_or(PHCM_ERROR_NO_PEB, |p| p.compat))
}

/// ProcessCommandLineInformation.
const PROCESS_COMMAND_LINE_INFORMATION: i32 = 60;

/// ZwQueryInformationProcess, for what drivers ask of it here: the current process's
/// command line (ProcessCommandLineInformation, Windows 8.1 and later) through the
/// current-process pseudo handle. The answer is a UNICODE_STRING followed by the text
/// it points to; a buffer too small gets STATUS_INFO_LENGTH_MISMATCH and the size
/// needed. Any other handle or class is refused as Windows refuses what it does not
/// know (the model has no process handles).
///
/// # Safety
/// `info` points to `length` writable bytes; `returned` is writable or null.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn ZwQueryInformationProcess(
    process: windows_sys::Win32::Foundation::HANDLE,
    class: i32,
    info: *mut c_void,
    length: u32,
    returned: *mut u32,
) -> windows_sys::Win32::Foundation::NTSTATUS {
    use windows_sys::Win32::Foundation::{
        STATUS_INFO_LENGTH_MISMATCH, STATUS_INVALID_HANDLE, STATUS_INVALID_INFO_CLASS,
        STATUS_SUCCESS, UNICODE_STRING,
    };
    super::irql::check("ZwQueryInformationProcess", super::irql::PASSIVE_LEVEL);
    if process as isize != -1 {
        return STATUS_INVALID_HANDLE;
    }
    if class != PROCESS_COMMAND_LINE_INFORMATION {
        return STATUS_INVALID_INFO_CLASS;
    }
    let pid = current_pid();
    let text: Vec<u16> = with_kernel(|k| {
        k.processes
            .get(pid)
            .map(|p| p.command_line.encode_utf16().collect())
            .unwrap_or_default()
    });
    let header = std::mem::size_of::<UNICODE_STRING>();
    let needed = header + text.len() * 2;
    if !returned.is_null() {
        // SAFETY: the caller's contract.
        unsafe { returned.write(needed as u32) };
    }
    if (length as usize) < needed {
        return STATUS_INFO_LENGTH_MISMATCH;
    }
    let at = info.cast::<u8>();
    // SAFETY: `header` < `needed` <= `length` bytes at `info` (the caller's contract).
    let text_at = unsafe { at.add(header) };
    // SAFETY: the text fits after the header within `needed` bytes; distinct buffers.
    unsafe { std::ptr::copy_nonoverlapping(text.as_ptr().cast::<u8>(), text_at, text.len() * 2) };
    let bytes = (text.len() * 2) as u16;
    // SAFETY: the header's bytes at the start of the caller's buffer.
    unsafe {
        at.cast::<UNICODE_STRING>().write_unaligned(UNICODE_STRING {
            Length: bytes,
            MaximumLength: bytes,
            Buffer: text_at.cast(),
        })
    };
    STATUS_SUCCESS
}

/// RtlQueryThreadPlaceholderCompatibilityMode: the calling thread's mode.
#[unsafe(no_mangle)]
pub extern "system" fn RtlQueryThreadPlaceholderCompatibilityMode() -> i8 {
    if current_pid() == SYSTEM_PID {
        return PHCM_ERROR_NO_TEB;
    }
    thread_compat()
}

/// RtlSetProcessPlaceholderCompatibilityMode: sets the calling process's mode, returns
/// the previous one.
#[unsafe(no_mangle)]
pub extern "system" fn RtlSetProcessPlaceholderCompatibilityMode(mode: i8) -> i8 {
    if !(PHCM_APPLICATION_DEFAULT..=PHCM_DISGUISE_FULL_PLACEHOLDERS).contains(&mode) {
        return PHCM_ERROR_INVALID_PARAMETER;
    }
    let pid = current_pid();
    if pid == SYSTEM_PID {
        return PHCM_ERROR_NO_PEB;
    }
    with_kernel(|k| match k.processes.get_mut(pid) {
        Some(p) => std::mem::replace(&mut p.compat, mode),
        None => PHCM_ERROR_NO_PEB,
    })
}

/// RtlSetThreadPlaceholderCompatibilityMode: sets the calling thread's mode, returns the
/// previous one.
#[unsafe(no_mangle)]
pub extern "system" fn RtlSetThreadPlaceholderCompatibilityMode(mode: i8) -> i8 {
    if !(PHCM_APPLICATION_DEFAULT..=PHCM_DISGUISE_FULL_PLACEHOLDERS).contains(&mode) {
        return PHCM_ERROR_INVALID_PARAMETER;
    }
    if current_pid() == SYSTEM_PID {
        return PHCM_ERROR_NO_TEB;
    }
    set_thread_compat(mode)
}

impl super::Machine {
    /// Starts a process running `image_nt` (NT device form) with process compatibility
    /// mode `compat`; `elevated` decides whether the port's default descriptor admits
    /// it. Returns its pid.
    pub fn spawn_process(&self, image_nt: &str, compat: i8, elevated: bool) -> u32 {
        with_kernel(|k| k.processes.spawn(image_nt.to_owned(), compat, elevated))
    }

    /// Kills process `pid` (fault injection, and process exit): its threads waiting in
    /// FltSendMessage return STATUS_THREAD_IS_TERMINATING, the file I/O it has in flight
    /// is cancelled, every port or event handle it holds is closed, so its ports
    /// disconnect and their pending FilterGetMessage calls fail, and its address space
    /// goes (ranges it had secured are unsecured).
    pub fn kill_process(&self, pid: u32) {
        let known = with_kernel(|k| match k.processes.get_mut(pid) {
            Some(p) if pid != SYSTEM_PID => {
                p.alive = false;
                true
            }
            _ => false,
        });
        assert!(known, "kill_process({pid}): no such user process");
        super::port::process_terminated(pid);
        super::files::cancel_process_io(pid);
        super::fltlib::close_process_handles(pid);
        super::vm::process_exit(pid);
    }
}
