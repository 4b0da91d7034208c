//! The model's user-mode memory: VirtualAlloc / VirtualFree / VirtualProtect as a
//! provider's threads call them, MmSecureVirtualMemory and MmUnsecureVirtualMemory as a
//! driver does, MmCopyMemory on a source that went away, the exception guard
//! (`cloudflt_seh_copy`, `cloudflt_seh_call3`) and the MDLs MmProbeAndLockPages locks,
//! and the verifier checks around them made to fire by a tiny probe driver in this file
//! whose MessageNotify writes its reply in one of several (mostly wrong) ways.
//!
//! Nothing here depends on the cloudflt driver: `reply_buffer.rs` runs the real one.

use std::ffi::c_void;
use std::sync::atomic::{AtomicIsize, AtomicU8, AtomicUsize, Ordering};
use std::sync::mpsc;

use cloudflt_tests::model::fltlib::{FilterSendMessage, GetLastError, hresult_from_win32};
use cloudflt_tests::model::fltmgr::{FltRegisterFilter, FltStartFiltering, FltUnregisterFilter};
use cloudflt_tests::model::irql::{self, DISPATCH_LEVEL};
use cloudflt_tests::model::pool::{ExAllocatePool2, ExFreePoolWithTag};
use cloudflt_tests::model::port::{
    FltBuildDefaultSecurityDescriptor, FltCloseClientPort, FltCloseCommunicationPort,
    FltCreateCommunicationPort, FltFreeSecurityDescriptor, MmCopyMemory,
};
use cloudflt_tests::model::process;
use cloudflt_tests::model::seh::{
    IoAllocateMdl, IoFreeMdl, MmProbeAndLockPages, MmUnlockPages, cloudflt_seh_call3,
    cloudflt_seh_copy,
};
use cloudflt_tests::model::vm::{
    MidCall, MmSecureVirtualMemory, MmUnsecureVirtualMemory, PAGE_SIZE, VirtualAlloc, VirtualFree,
    VirtualProtect,
};
use cloudflt_tests::model::{ClientId, Machine, Violation, VolumeConfig};
use windows_sys::Wdk::Foundation::{DRIVER_OBJECT, OBJECT_ATTRIBUTES};
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{FLT_REGISTRATION, PFLT_PORT};
use windows_sys::Wdk::System::SystemServices::{
    MM_COPY_ADDRESS, MM_COPY_ADDRESS_0, MM_COPY_MEMORY_VIRTUAL,
};
use windows_sys::Win32::Foundation::{
    ERROR_INVALID_ADDRESS, ERROR_INVALID_PARAMETER, ERROR_INVALID_USER_BUFFER, HANDLE, NTSTATUS,
    STATUS_ACCESS_VIOLATION, STATUS_IN_PAGE_ERROR, STATUS_INVALID_USER_BUFFER, STATUS_SUCCESS,
    UNICODE_STRING,
};
use windows_sys::Win32::System::Memory::{
    MEM_COMMIT, MEM_DECOMMIT, MEM_RELEASE, MEM_RESERVE, PAGE_NOACCESS, PAGE_READONLY,
    PAGE_READWRITE,
};

const PORT: &str = "\\UserMemoryTest";

// The probe driver's globals, as a minifilter keeps them.
static FILTER: AtomicIsize = AtomicIsize::new(0);
static SERVER: AtomicIsize = AtomicIsize::new(0);
static CLIENT: AtomicIsize = AtomicIsize::new(0);
static MODE: AtomicU8 = AtomicU8::new(0);
/// The MDL the probe left locked (Mode::LeavesLocked).
static LEFT_MDL: AtomicUsize = AtomicUsize::new(0);

/// How the probe's MessageNotify writes "pong" into the output buffer, after copying its
/// input with MmCopyMemory.
#[derive(Clone, Copy)]
#[repr(u8)]
enum Mode {
    /// Straight into the user pointer, as cloudflt did before: no guard at all.
    Unguarded,
    /// Secured with MmSecureVirtualMemory(PAGE_READWRITE), written, unsecured; a range
    /// that cannot be secured is STATUS_INVALID_USER_BUFFER.
    Secured,
    /// Secured and written, never unsecured.
    LeavesSecured,
    /// Secured, written, unsecured twice.
    UnsecuresTwice,
    /// Locks the output's pages in an MDL under the guard, answers, and leaves them
    /// locked (and the MDL allocated).
    LeavesLocked,
}

unsafe extern "system" fn unload(_flags: u32) -> NTSTATUS {
    FltCloseCommunicationPort(SERVER.load(Ordering::SeqCst));
    FltUnregisterFilter(FILTER.load(Ordering::SeqCst));
    STATUS_SUCCESS
}

unsafe extern "system" fn connect_notify(
    client: PFLT_PORT,
    _server_cookie: *const c_void,
    _context: *const c_void,
    _size: u32,
    cookie: *mut *mut c_void,
) -> NTSTATUS {
    CLIENT.store(client, Ordering::SeqCst);
    // SAFETY: FltMgr's out variable.
    unsafe { cookie.write(client as *mut c_void) };
    STATUS_SUCCESS
}

unsafe extern "system" fn disconnect_notify(_cookie: *const c_void) {
    // SAFETY: the driver's own port variable.
    unsafe { FltCloseClientPort(FILTER.load(Ordering::SeqCst), CLIENT.as_ptr()) };
}

unsafe extern "system" fn message_notify(
    _cookie: *const c_void,
    input: *const c_void,
    input_len: u32,
    output: *mut c_void,
    output_len: u32,
    returned: *mut u32,
) -> NTSTATUS {
    let mut copy = vec![0u8; input_len as usize];
    let mut copied = 0;
    let source = MM_COPY_ADDRESS {
        Anonymous: MM_COPY_ADDRESS_0 {
            VirtualAddress: input.cast_mut(),
        },
    };
    // SAFETY: our own buffer of `input_len` bytes.
    let status = unsafe {
        MmCopyMemory(
            copy.as_mut_ptr().cast(),
            source,
            copy.len(),
            MM_COPY_MEMORY_VIRTUAL,
            &mut copied,
        )
    };
    if status != STATUS_SUCCESS || output_len < 4 {
        return STATUS_INVALID_USER_BUFFER;
    }
    let write = || {
        // SAFETY: the probe's point: the model keeps freed and protected pages mapped in
        // the host, so this store is memory-safe here even where Windows would fault.
        unsafe { std::ptr::copy_nonoverlapping(b"pong".as_ptr(), output.cast::<u8>(), 4) };
        // SAFETY: FltMgr's out variable.
        unsafe { returned.write(4) };
    };
    let mode = MODE.load(Ordering::SeqCst);
    if mode == Mode::LeavesLocked as u8 {
        let mdl = IoAllocateMdl(output, output_len, false, false, std::ptr::null_mut());
        // SAFETY: a fresh MDL of the caller's output buffer, in its process.
        let status = unsafe {
            cloudflt_seh_call3(
                MmProbeAndLockPages as *const c_void,
                mdl as usize,
                1,
                1, // IoWriteAccess
            )
        };
        assert_eq!(status, STATUS_SUCCESS);
        LEFT_MDL.store(mdl as usize, Ordering::SeqCst);
        write();
        return STATUS_SUCCESS;
    }
    if mode == Mode::Unguarded as u8 {
        write();
        return STATUS_SUCCESS;
    }
    let handle = MmSecureVirtualMemory(output, output_len as usize, PAGE_READWRITE);
    if handle.is_null() {
        return STATUS_INVALID_USER_BUFFER;
    }
    write();
    if mode == Mode::LeavesSecured as u8 {
        return STATUS_SUCCESS;
    }
    MmUnsecureVirtualMemory(handle);
    if mode == Mode::UnsecuresTwice as u8 {
        MmUnsecureVirtualMemory(handle);
    }
    STATUS_SUCCESS
}

/// Boots a machine with the probe driver registered, its port created, and one provider
/// process connected; returns the machine, the provider's pid and its connection.
fn boot(mode: Mode) -> (Machine, u32, ClientId) {
    let machine = Machine::boot(&[VolumeConfig::ntfs(1)]);
    MODE.store(mode as u8, Ordering::SeqCst);
    CLIENT.store(0, Ordering::SeqCst);
    // SAFETY: DRIVER_OBJECT is plain data for which all-zero is a valid value.
    let driver: &'static DRIVER_OBJECT = Box::leak(Box::new(unsafe { std::mem::zeroed() }));
    let registration = FLT_REGISTRATION {
        Size: std::mem::size_of::<FLT_REGISTRATION>() as u16,
        Version: 0x0203,
        FilterUnloadCallback: Some(unload),
        ..Default::default()
    };
    let mut filter = 0;
    // SAFETY: valid pointers for the call.
    let status = unsafe { FltRegisterFilter(driver, &registration, &mut filter) };
    assert_eq!(status, STATUS_SUCCESS);
    FILTER.store(filter, Ordering::SeqCst);
    let name: Vec<u16> = PORT.encode_utf16().collect();
    let us = UNICODE_STRING {
        Length: (name.len() * 2) as u16,
        MaximumLength: (name.len() * 2) as u16,
        Buffer: name.as_ptr().cast_mut(),
    };
    let mut sd = std::ptr::null_mut();
    // SAFETY: a valid out pointer.
    let status = unsafe { FltBuildDefaultSecurityDescriptor(&mut sd, 0x1F_0001) };
    assert_eq!(status, STATUS_SUCCESS);
    let oa = OBJECT_ATTRIBUTES {
        Length: std::mem::size_of::<OBJECT_ATTRIBUTES>() as u32,
        RootDirectory: std::ptr::null_mut(),
        ObjectName: &us,
        Attributes: 0x240, // OBJ_CASE_INSENSITIVE | OBJ_KERNEL_HANDLE
        SecurityDescriptor: sd.cast(),
        SecurityQualityOfService: std::ptr::null(),
    };
    let mut server = 0;
    // SAFETY: valid attributes and out pointer.
    let status = unsafe {
        FltCreateCommunicationPort(
            filter,
            &mut server,
            &oa,
            std::ptr::null(),
            Some(connect_notify),
            Some(disconnect_notify),
            Some(message_notify),
            1,
        )
    };
    assert_eq!(status, STATUS_SUCCESS);
    FltFreeSecurityDescriptor(sd);
    SERVER.store(server, Ordering::SeqCst);
    assert_eq!(FltStartFiltering(filter), STATUS_SUCCESS);
    let pid = machine.spawn_process("\\Device\\HarddiskVolume1\\provider.exe", 0, true);
    let client = machine.connect(PORT, b"", pid).unwrap();
    (machine, pid, client)
}

/// A committed read-write region of `pages` pages of the calling process.
fn alloc(pages: usize) -> usize {
    let p = VirtualAlloc(
        std::ptr::null(),
        pages * PAGE_SIZE,
        MEM_RESERVE | MEM_COMMIT,
        PAGE_READWRITE,
    );
    assert!(!p.is_null(), "VirtualAlloc failed: {}", GetLastError());
    p as usize
}

fn free(at: usize) -> Result<(), u32> {
    if VirtualFree(at as *mut c_void, 0, MEM_RELEASE) != 0 {
        Ok(())
    } else {
        Err(GetLastError())
    }
}

fn decommit(at: usize, len: usize) -> Result<(), u32> {
    if VirtualFree(at as *mut c_void, len, MEM_DECOMMIT) != 0 {
        Ok(())
    } else {
        Err(GetLastError())
    }
}

fn protect(at: usize, len: usize, protection: u32) -> Result<u32, u32> {
    let mut old = 0;
    // SAFETY: a valid out variable.
    if unsafe { VirtualProtect(at as *const c_void, len, protection, &mut old) } != 0 {
        Ok(old)
    } else {
        Err(GetLastError())
    }
}

fn secure(at: usize, len: usize, probe: u32) -> HANDLE {
    MmSecureVirtualMemory(at as *const c_void, len, probe)
}

/// FilterSendMessage("ping") from the provider with a reply buffer at `out`: the result
/// and the length reported.
fn send(pid: u32, client: ClientId, out: usize, len: u32) -> (i32, u32) {
    let input = *b"ping";
    let mut returned = 0;
    // SAFETY: valid buffers (the output's validity is what the tests play with; the
    // model's pages stay host memory) and out variable.
    let hr = process::run_as(pid, || unsafe {
        FilterSendMessage(
            client.handle(),
            input.as_ptr().cast(),
            4,
            out as *mut c_void,
            len,
            &mut returned,
        )
    });
    (hr, returned)
}

fn fired(violations: &[Violation], api: &str, needle: &str) -> bool {
    violations
        .iter()
        .any(|v| v.api == api && v.message.contains(needle))
}

#[test]
fn a_secured_range_cannot_be_freed_decommitted_or_protected_until_unsecured() {
    let mut machine = Machine::boot(&[VolumeConfig::ntfs(1)]);
    let pid = machine.spawn_process("\\Device\\HarddiskVolume1\\provider.exe", 0, true);
    process::run_as(pid, || {
        let p = alloc(2);
        let h = secure(p + 100, 200, PAGE_READWRITE);
        assert!(!h.is_null());
        // STATUS_INVALID_PAGE_PROTECTION, which VirtualFree / VirtualProtect report as
        // ERROR_INVALID_PARAMETER. A release is refused for a secure anywhere in it.
        assert_eq!(free(p), Err(ERROR_INVALID_PARAMETER));
        assert_eq!(decommit(p, PAGE_SIZE), Err(ERROR_INVALID_PARAMETER));
        assert_eq!(
            protect(p, PAGE_SIZE, PAGE_READONLY),
            Err(ERROR_INVALID_PARAMETER)
        );
        assert_eq!(
            protect(p + 150, 10, PAGE_NOACCESS),
            Err(ERROR_INVALID_PARAMETER)
        );
        // What the secure does not cover, or does not forbid, still works.
        assert_eq!(protect(p, PAGE_SIZE, PAGE_READWRITE), Ok(PAGE_READWRITE));
        assert_eq!(decommit(p + PAGE_SIZE, PAGE_SIZE), Ok(()));
        assert_eq!(machine.secured_ranges(pid), 1);
        MmUnsecureVirtualMemory(h);
        assert_eq!(machine.secured_ranges(pid), 0);
        assert_eq!(protect(p, PAGE_SIZE, PAGE_READONLY), Ok(PAGE_READWRITE));

        // A PAGE_READONLY secure forbids only PAGE_NOACCESS.
        let h = secure(p, 16, PAGE_READONLY);
        assert!(!h.is_null(), "a read-only page secures for reading");
        assert_eq!(protect(p, PAGE_SIZE, PAGE_READWRITE), Ok(PAGE_READONLY));
        assert_eq!(
            protect(p, PAGE_SIZE, PAGE_NOACCESS),
            Err(ERROR_INVALID_PARAMETER)
        );
        MmUnsecureVirtualMemory(h);
        assert_eq!(free(p), Ok(()));
        assert_eq!(free(p), Err(ERROR_INVALID_ADDRESS), "released once");
    });
    machine.assert_clean();
}

#[test]
fn secure_refuses_what_is_not_committed_and_accessible_in_this_process() {
    let mut machine = Machine::boot(&[VolumeConfig::ntfs(1)]);
    let pid = machine.spawn_process("\\Device\\HarddiskVolume1\\provider.exe", 0, true);
    let other = machine.spawn_process("\\Device\\HarddiskVolume1\\other.exe", 0, true);
    let theirs = process::run_as(other, || alloc(1));
    process::run_as(pid, || {
        let p = alloc(3);
        let q = alloc(1);
        assert_eq!(
            protect(p + PAGE_SIZE, PAGE_SIZE, PAGE_READONLY),
            Ok(PAGE_READWRITE)
        );
        assert_eq!(decommit(p + 2 * PAGE_SIZE, PAGE_SIZE), Ok(()));
        for (what, at, len, probe) in [
            (
                "a read-only page, for writing",
                p + PAGE_SIZE,
                8,
                PAGE_READWRITE,
            ),
            (
                "across into a read-only page",
                p + PAGE_SIZE - 8,
                16,
                PAGE_READWRITE,
            ),
            ("a decommitted page", p + 2 * PAGE_SIZE, 8, PAGE_READONLY),
            (
                "past the reservation's end",
                q + PAGE_SIZE - 8,
                16,
                PAGE_READONLY,
            ),
            ("another process's memory", theirs, 8, PAGE_READONLY),
            ("size 0", p, 0, PAGE_READWRITE),
            ("NULL", 0, 8, PAGE_READWRITE),
            (
                "a probe mode other than read or read-write",
                p,
                8,
                PAGE_NOACCESS,
            ),
        ] {
            assert!(secure(at, len, probe).is_null(), "{what}");
        }
        // Kernel memory is no user address.
        let pool = ExAllocatePool2(0x40, 64, u32::from_le_bytes(*b"Test"));
        assert!(secure(pool as usize, 8, PAGE_READWRITE).is_null(), "pool");
        ExFreePoolWithTag(pool, u32::from_le_bytes(*b"Test"));
        // Freed memory.
        assert_eq!(free(q), Ok(()));
        assert!(secure(q, 8, PAGE_READWRITE).is_null(), "a released region");
        // The process's own heap is committed and writable.
        let heap = [0u8; 64];
        let h = secure(heap.as_ptr() as usize, heap.len(), PAGE_READWRITE);
        assert!(!h.is_null(), "heap memory");
        MmUnsecureVirtualMemory(h);
        assert_eq!(free(p), Ok(()));
    });
    // A System thread has no user address space.
    assert!(secure(theirs, 8, PAGE_READONLY).is_null(), "System process");
    machine.assert_clean();
}

#[test]
fn secure_and_unsecure_misuse_is_caught() {
    let mut machine = Machine::boot(&[VolumeConfig::ntfs(1)]);
    let pid = machine.spawn_process("\\Device\\HarddiskVolume1\\provider.exe", 0, true);
    let other = machine.spawn_process("\\Device\\HarddiskVolume1\\other.exe", 0, true);
    let p = process::run_as(pid, || alloc(1));
    let h = process::run_as(pid, || secure(p, 8, PAGE_READWRITE)) as usize;
    process::run_as(other, || MmUnsecureVirtualMemory(h as HANDLE));
    let found = machine.take_violations();
    assert!(
        fired(
            &found,
            "MmUnsecureVirtualMemory",
            "context of the process that secured"
        ),
        "{found:?}"
    );
    assert_eq!(machine.secured_ranges(pid), 1, "still secured");
    process::run_as(pid, || {
        irql::at(DISPATCH_LEVEL, || MmUnsecureVirtualMemory(h as HANDLE));
        MmUnsecureVirtualMemory(h as HANDLE);
        let again = irql::at(DISPATCH_LEVEL, || secure(p, 8, PAGE_READWRITE));
        assert!(!again.is_null());
        MmUnsecureVirtualMemory(again);
    });
    let found = machine.take_violations();
    assert!(
        fired(&found, "MmUnsecureVirtualMemory", "documented maximum is 1"),
        "{found:?}"
    );
    assert!(
        fired(
            &found,
            "MmUnsecureVirtualMemory",
            "not a live secure handle"
        ),
        "{found:?}"
    );
    assert!(
        fired(&found, "MmSecureVirtualMemory", "documented maximum is 1"),
        "{found:?}"
    );
    // The process exits: what it had secured is unsecured with it.
    machine.kill_process(pid);
    assert_eq!(machine.secured_ranges(pid), 0);
    machine.assert_clean();
}

#[test]
fn mm_copy_memory_stops_at_the_first_unreadable_page() {
    let mut machine = Machine::boot(&[VolumeConfig::ntfs(1)]);
    let pid = machine.spawn_process("\\Device\\HarddiskVolume1\\provider.exe", 0, true);
    process::run_as(pid, || {
        let p = alloc(2);
        assert_eq!(decommit(p + PAGE_SIZE, PAGE_SIZE), Ok(()));
        let mut target = [0u8; 200];
        let mut copied = usize::MAX;
        let from = |at: usize| MM_COPY_ADDRESS {
            Anonymous: MM_COPY_ADDRESS_0 {
                VirtualAddress: at as *mut c_void,
            },
        };
        // SAFETY: our own target buffer.
        let status = unsafe {
            MmCopyMemory(
                target.as_mut_ptr().cast(),
                from(p + PAGE_SIZE - 96),
                200,
                MM_COPY_MEMORY_VIRTUAL,
                &mut copied,
            )
        };
        assert_eq!((status, copied), (STATUS_ACCESS_VIOLATION, 96));
        assert_eq!(protect(p, PAGE_SIZE, PAGE_READONLY), Ok(PAGE_READWRITE));
        // SAFETY: as above.
        let status = unsafe {
            MmCopyMemory(
                target.as_mut_ptr().cast(),
                from(p),
                200,
                MM_COPY_MEMORY_VIRTUAL,
                &mut copied,
            )
        };
        assert_eq!((status, copied), (STATUS_SUCCESS, 200), "read-only reads");
        assert_eq!(free(p), Ok(()));
        // SAFETY: as above.
        let status = unsafe {
            MmCopyMemory(
                target.as_mut_ptr().cast(),
                from(p),
                200,
                MM_COPY_MEMORY_VIRTUAL,
                &mut copied,
            )
        };
        assert_eq!((status, copied), (STATUS_ACCESS_VIOLATION, 0), "released");
    });
    machine.assert_clean();
}

#[test]
fn an_unguarded_reply_into_a_buffer_freed_mid_call_is_reported() {
    let (mut machine, pid, client) = boot(Mode::Unguarded);
    let out = process::run_as(pid, || alloc(1));
    machine.mid_call(pid, MidCall::AfterInputCopy, move || {
        assert_eq!(free(out), Ok(()));
    });
    let (hr, returned) = send(pid, client, out, 64);
    assert_eq!((hr, returned), (0, 4), "the probe believes it answered");
    assert_eq!(
        machine.mid_call_pending(),
        0,
        "the provider's free ran mid-call"
    );
    let found = machine.take_violations();
    assert!(
        fired(&found, "MessageNotify", "wrote 4 byte(s)")
            && fired(&found, "MessageNotify", "freed (VirtualFree MEM_RELEASE)"),
        "{found:?}"
    );
    machine.disconnect(client);
    assert_eq!(machine.unload_driver(), STATUS_SUCCESS);
    machine.assert_clean();
}

#[test]
fn an_unguarded_reply_into_a_buffer_made_read_only_or_decommitted_mid_call_is_reported() {
    let (mut machine, pid, client) = boot(Mode::Unguarded);
    let out = process::run_as(pid, || alloc(2));
    machine.mid_call(pid, MidCall::AfterInputCopy, move || {
        assert_eq!(protect(out, PAGE_SIZE, PAGE_READONLY), Ok(PAGE_READWRITE));
    });
    send(pid, client, out, 64);
    let found = machine.take_violations();
    assert!(
        fired(&found, "MessageNotify", "read-only (PAGE_READONLY)"),
        "{found:?}"
    );
    let second = out + PAGE_SIZE;
    machine.mid_call(pid, MidCall::AfterInputCopy, move || {
        assert_eq!(decommit(second, PAGE_SIZE), Ok(()));
    });
    send(pid, client, second, 64);
    let found = machine.take_violations();
    assert!(
        fired(&found, "MessageNotify", "decommitted (not committed)"),
        "{found:?}"
    );
    // Writes to a page that stays writable, before and after, are the driver's right.
    process::run_as(pid, || {
        assert_eq!(protect(out, PAGE_SIZE, PAGE_READWRITE), Ok(PAGE_READONLY));
    });
    assert_eq!(send(pid, client, out, 64), (0, 4));
    machine.disconnect(client);
    assert_eq!(machine.unload_driver(), STATUS_SUCCESS);
    machine.assert_clean();
}

#[test]
fn a_secured_reply_survives_a_racing_free_and_refuses_a_freed_buffer() {
    let (mut machine, pid, client) = boot(Mode::Secured);
    let out = process::run_as(pid, || alloc(1));
    // The provider's other thread tries to free the buffer while it is secured: it
    // fails, and the reply lands.
    let (tx, rx) = mpsc::channel();
    machine.mid_call(pid, MidCall::AfterSecure, move || {
        tx.send((free(out), protect(out, PAGE_SIZE, PAGE_NOACCESS)))
            .unwrap();
    });
    assert_eq!(send(pid, client, out, 64), (0, 4));
    assert_eq!(
        rx.recv().unwrap(),
        (Err(ERROR_INVALID_PARAMETER), Err(ERROR_INVALID_PARAMETER))
    );
    // SAFETY: the provider's own, still committed, buffer.
    let reply = unsafe { std::slice::from_raw_parts(out as *const u8, 4) };
    assert_eq!(reply, b"pong");
    assert_eq!(machine.secured_ranges(pid), 0, "unsecured before returning");
    // Freed before the secure: refused, nothing written, nothing to report.
    machine.mid_call(pid, MidCall::BeforeSecure, move || {
        assert_eq!(free(out), Ok(()));
    });
    assert_eq!(
        send(pid, client, out, 64),
        (hresult_from_win32(ERROR_INVALID_USER_BUFFER), 0)
    );
    machine.assert_clean();
    machine.disconnect(client);
    assert_eq!(machine.unload_driver(), STATUS_SUCCESS);
    machine.assert_clean();
}

#[test]
fn a_range_left_secured_or_unsecured_twice_is_reported() {
    let (mut machine, pid, client) = boot(Mode::LeavesSecured);
    let out = process::run_as(pid, || alloc(1));
    assert_eq!(send(pid, client, out, 64), (0, 4));
    let found = machine.take_violations();
    assert!(
        fired(&found, "MessageNotify", "1 user range(s) still secured"),
        "{found:?}"
    );
    assert_eq!(
        process::run_as(pid, || free(out)),
        Err(ERROR_INVALID_PARAMETER),
        "the leaked secure keeps the provider from freeing its own buffer"
    );
    MODE.store(Mode::UnsecuresTwice as u8, Ordering::SeqCst);
    let other = process::run_as(pid, || alloc(1));
    assert_eq!(send(pid, client, other, 64), (0, 4));
    let found = machine.take_violations();
    assert!(
        fired(
            &found,
            "MmUnsecureVirtualMemory",
            "not a live secure handle"
        ),
        "{found:?}"
    );
    machine.disconnect(client);
    assert_eq!(machine.unload_driver(), STATUS_SUCCESS);
    machine.kill_process(pid);
    machine.assert_clean();
}

/// The guard's way into MmProbeAndLockPages: `cloudflt_seh_call3` with its arguments.
fn guarded_lock(mdl: *mut windows_sys::Wdk::Foundation::MDL, operation: i32) -> NTSTATUS {
    // SAFETY: an MDL from IoAllocateMdl; the guard catches what the probe raises.
    unsafe {
        cloudflt_seh_call3(
            MmProbeAndLockPages as *const c_void,
            mdl as usize,
            1, // UserMode
            operation as usize,
        )
    }
}

#[test]
fn the_guarded_copy_stops_at_the_first_page_it_cannot_touch_and_returns_the_exception() {
    let mut machine = Machine::boot(&[VolumeConfig::ntfs(1)]);
    let pid = machine.spawn_process("\\Device\\HarddiskVolume1\\provider.exe", 0, true);
    process::run_as(pid, || {
        let p = alloc(3);
        // SAFETY: the first page is committed read-write memory of this process.
        unsafe { std::ptr::write_bytes(p as *mut u8, 0xAB, PAGE_SIZE) };
        assert_eq!(decommit(p + PAGE_SIZE, PAGE_SIZE), Ok(()));
        let mut target = [0u8; 200];
        // SAFETY: our own target of 200 bytes; the source is the model's user memory.
        let status = unsafe {
            cloudflt_seh_copy(target.as_mut_ptr(), (p + PAGE_SIZE - 96) as *const u8, 200)
        };
        assert_eq!(status, STATUS_ACCESS_VIOLATION, "the decommitted page");
        assert_eq!(&target[..96], &[0xAB; 96], "the readable bytes before it");
        assert_eq!(&target[96..], &[0u8; 104], "nothing after it");

        // A store into a read-only page is refused the same way, and nothing lands.
        assert_eq!(protect(p, PAGE_SIZE, PAGE_READONLY), Ok(PAGE_READWRITE));
        let reply = [0x5Au8; 64];
        // SAFETY: our own source; the destination is the model's user memory.
        let status = unsafe { cloudflt_seh_copy(p as *mut u8, reply.as_ptr(), 64) };
        assert_eq!(status, STATUS_ACCESS_VIOLATION);

        // A page the pager cannot bring in raises an in-page error instead.
        let last = p + 2 * PAGE_SIZE;
        machine.fail_page_in(pid, last);
        // SAFETY: as above.
        let status = unsafe { cloudflt_seh_copy(target.as_mut_ptr(), last as *const u8, 200) };
        assert_eq!(status, STATUS_IN_PAGE_ERROR);
        // SAFETY: as above, from memory that is fine.
        let status = unsafe { cloudflt_seh_copy(target.as_mut_ptr(), p as *const u8, 200) };
        assert_eq!(
            (status, target[199]),
            (STATUS_SUCCESS, 0xAB),
            "read-only reads"
        );
    });
    // No write reached a page that was not writable: nothing to report.
    machine.assert_clean();
}

#[test]
fn mm_probe_and_lock_pages_raises_on_a_bad_range_a_bug_check_without_the_guard() {
    let mut machine = Machine::boot(&[VolumeConfig::ntfs(1)]);
    let pid = machine.spawn_process("\\Device\\HarddiskVolume1\\provider.exe", 0, true);
    process::run_as(pid, || {
        let p = alloc(1);
        assert_eq!(free(p), Ok(()));
        let mdl = IoAllocateMdl(p as *const c_void, 100, false, false, std::ptr::null_mut());
        assert!(!mdl.is_null());
        // No guard on the stack: Windows stops with KMODE_EXCEPTION_NOT_HANDLED.
        // SAFETY: an MDL from IoAllocateMdl.
        unsafe { MmProbeAndLockPages(mdl, 1, 0) };
        // The guard catches the same raise, and nothing is locked.
        assert_eq!(guarded_lock(mdl, 0), STATUS_ACCESS_VIOLATION);
        // SAFETY: ours, not locked.
        unsafe { IoFreeMdl(mdl) };
    });
    let found = machine.take_violations();
    assert_eq!(found.len(), 1, "{found:?}");
    assert!(
        fired(&found, "MmProbeAndLockPages", "KMODE_EXCEPTION_NOT_HANDLED"),
        "{found:?}"
    );
    machine.assert_clean();
}

#[test]
fn locked_pages_keep_their_bytes_whatever_the_process_does_and_unlock_cleanly() {
    let mut machine = Machine::boot(&[VolumeConfig::ntfs(1)]);
    let pid = machine.spawn_process("\\Device\\HarddiskVolume1\\provider.exe", 0, true);
    process::run_as(pid, || {
        let p = alloc(2);
        // A kernel address probed for user mode is refused like a bad one.
        let kernel = ExAllocatePool2(0x40, 64, u32::from_le_bytes(*b"Test"));
        let mdl = IoAllocateMdl(kernel, 64, false, false, std::ptr::null_mut());
        assert_eq!(guarded_lock(mdl, 0), STATUS_ACCESS_VIOLATION);
        // SAFETY: ours, not locked; the pool block is ours.
        unsafe { IoFreeMdl(mdl) };
        ExFreePoolWithTag(kernel, u32::from_le_bytes(*b"Test"));
        // A read-only page locks for reading, not for writing.
        assert_eq!(protect(p, PAGE_SIZE, PAGE_READONLY), Ok(PAGE_READWRITE));
        let mdl = IoAllocateMdl(
            p as *const c_void,
            2 * PAGE_SIZE as u32,
            false,
            false,
            std::ptr::null_mut(),
        );
        assert_eq!(
            guarded_lock(mdl, 1),
            STATUS_ACCESS_VIOLATION,
            "IoWriteAccess"
        );
        assert_eq!(guarded_lock(mdl, 0), STATUS_SUCCESS, "IoReadAccess");
        // Locked: the process may free the range (only its mapping goes).
        assert_eq!(free(p), Ok(()));
        // SAFETY: locked above, unlocked and freed once.
        unsafe { MmUnlockPages(mdl) };
        // SAFETY: as above.
        unsafe { IoFreeMdl(mdl) };
    });
    assert_eq!(machine.live_mdls(), 0);
    machine.assert_clean();
}

#[test]
fn mdl_misuse_is_caught() {
    let (mut machine, pid, client) = boot(Mode::LeavesLocked);
    let out = process::run_as(pid, || alloc(1));
    assert_eq!(send(pid, client, out, 64), (0, 4));
    let found = machine.take_violations();
    assert!(
        fired(&found, "MessageNotify", "PROCESS_HAS_LOCKED_PAGES"),
        "{found:?}"
    );
    // Freed with its pages still locked.
    let mdl = LEFT_MDL.load(Ordering::SeqCst) as *mut windows_sys::Wdk::Foundation::MDL;
    // SAFETY: the probe's MDL.
    unsafe { IoFreeMdl(mdl) };
    let found = machine.take_violations();
    assert!(fired(&found, "IoFreeMdl", "still locked"), "{found:?}");
    // Unlocking what is not locked, freeing twice.
    process::run_as(pid, || {
        let mdl = IoAllocateMdl(out as *const c_void, 64, false, false, std::ptr::null_mut());
        // SAFETY: an MDL from IoAllocateMdl (the misuse is the point).
        unsafe { MmUnlockPages(mdl) };
        // SAFETY: as above.
        unsafe { IoFreeMdl(mdl) };
        // SAFETY: as above.
        unsafe { IoFreeMdl(mdl) };
        // And one never freed, found at unload.
        IoAllocateMdl(out as *const c_void, 64, false, false, std::ptr::null_mut());
    });
    let found = machine.take_violations();
    assert!(fired(&found, "MmUnlockPages", "not locked"), "{found:?}");
    assert!(fired(&found, "IoFreeMdl", "already freed"), "{found:?}");
    machine.disconnect(client);
    assert_eq!(machine.unload_driver(), STATUS_SUCCESS);
    let found = machine.take_violations();
    assert!(
        fired(&found, "DriverUnload", "MDL(s) never freed"),
        "{found:?}"
    );
    machine.assert_clean();
}
