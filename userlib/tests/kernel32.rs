//! The kernel32 calls the library adds to the model beyond the port functions —
//! CreateThread and QueryDosDeviceW — checked against what Windows does, since the
//! library's behaviour on the host is only as right as they are.
#![cfg(not(windows))]

use std::ffi::c_void;
use std::sync::atomic::{AtomicU32, Ordering};

use cloudflt_tests::model::fltlib::{
    CloseHandle, CreateThread, GetLastError, INFINITE, QueryDosDeviceW, WaitForMultipleObjects,
    WaitForSingleObject,
};
use cloudflt_tests::model::process;
use cloudflt_tests::model::{Machine, VolumeConfig};
use windows_sys::Win32::Foundation::{
    ERROR_FILE_NOT_FOUND, ERROR_INSUFFICIENT_BUFFER, ERROR_INVALID_HANDLE, ERROR_NOT_SUPPORTED,
    WAIT_FAILED, WAIT_OBJECT_0, WAIT_TIMEOUT,
};

static SEEN_PID: AtomicU32 = AtomicU32::new(0);

unsafe extern "system" fn record_pid(parameter: *mut c_void) -> u32 {
    SEEN_PID.store(process::current_pid(), Ordering::SeqCst);
    parameter as usize as u32
}

unsafe extern "system" fn wait_for_event(parameter: *mut c_void) -> u32 {
    // The parameter is an event handle of the creating process.
    WaitForSingleObject(parameter, INFINITE)
}

fn query(name: Option<&str>, max: u32) -> (u32, Vec<u16>, u32) {
    let wide: Option<Vec<u16>> = name.map(|n| n.encode_utf16().chain([0]).collect());
    let mut buffer = vec![0xffffu16; max as usize];
    // SAFETY: a NUL-terminated name or NULL, and `max` writable units.
    let n = unsafe {
        QueryDosDeviceW(
            wide.as_ref().map_or(std::ptr::null(), |w| w.as_ptr()),
            buffer.as_mut_ptr(),
            max,
        )
    };
    buffer.truncate(n as usize);
    (n, buffer, GetLastError())
}

fn units(s: &str) -> Vec<u16> {
    s.encode_utf16().collect()
}

#[test]
fn query_dos_device_names_the_volumes_by_letter() {
    let _machine = Machine::boot(&[VolumeConfig::ntfs(1), VolumeConfig::ntfs(2)]);
    let (n, answer, _) = query(Some("C:"), 64);
    assert_eq!(
        answer,
        [units(r"\Device\HarddiskVolume1"), vec![0, 0]].concat()
    );
    assert_eq!(n as usize, answer.len(), "terminators are counted");
    let (_, answer, _) = query(Some("d:"), 64);
    assert_eq!(
        answer,
        [units(r"\Device\HarddiskVolume2"), vec![0, 0]].concat()
    );
    // Every letter in use.
    let (_, answer, _) = query(None, 64);
    assert_eq!(
        answer,
        [units("C:"), vec![0], units("D:"), vec![0, 0]].concat()
    );
    // Not mounted, not a device name, buffer too small.
    assert_eq!(query(Some("E:"), 64).2, ERROR_FILE_NOT_FOUND);
    assert_eq!(query(Some(r"C:\"), 64).2, ERROR_FILE_NOT_FOUND);
    let (n, _, error) = query(Some("C:"), 10);
    assert_eq!((n, error), (0, ERROR_INSUFFICIENT_BUFFER));
}

#[test]
fn a_created_thread_runs_in_its_creators_process_and_its_handle_signals_its_end() {
    let machine = Machine::boot(&[VolumeConfig::ntfs(1)]);
    let pid = machine.spawn_process(r"\Device\HarddiskVolume1\p.exe", 0, true);
    process::run_as(pid, || {
        let mut id = 0;
        // SAFETY: a start routine that takes no pointer; `id` is writable.
        let thread = unsafe {
            CreateThread(
                std::ptr::null(),
                0,
                Some(record_pid),
                7 as *const c_void,
                0,
                &mut id,
            )
        };
        assert!(!thread.is_null());
        assert_ne!(id, 0);
        assert_eq!(WaitForSingleObject(thread, 5_000), WAIT_OBJECT_0);
        assert_eq!(SEEN_PID.load(Ordering::SeqCst), pid);
        // A thread handle stays signaled, and works in multiple-object waits.
        let both = [thread, thread];
        // SAFETY: two valid handles.
        let all = unsafe { WaitForMultipleObjects(2, both.as_ptr(), 1, 0) };
        assert_eq!(all, WAIT_OBJECT_0);
        assert_ne!(CloseHandle(thread), 0);
        assert_eq!(WaitForSingleObject(thread, 0), WAIT_FAILED);
        assert_eq!(GetLastError(), ERROR_INVALID_HANDLE);

        // The new thread uses its process's handles: it waits on an event the creator
        // made, and is not done until that event is set.
        // SAFETY: no attributes, no name.
        let event = unsafe {
            cloudflt_tests::model::fltlib::CreateEventW(std::ptr::null(), 1, 0, std::ptr::null())
        };
        // SAFETY: the routine reads the parameter as a handle of this process.
        let waiter = unsafe {
            CreateThread(
                std::ptr::null(),
                0,
                Some(wait_for_event),
                event.cast_const(),
                0,
                std::ptr::null_mut(),
            )
        };
        assert_eq!(WaitForSingleObject(waiter, 20), WAIT_TIMEOUT);
        cloudflt_tests::model::fltlib::SetEvent(event);
        assert_eq!(WaitForSingleObject(waiter, 5_000), WAIT_OBJECT_0);
        CloseHandle(waiter);
        CloseHandle(event);

        // CREATE_SUSPENDED is not modelled.
        // SAFETY: as above; the thread is never started.
        let suspended = unsafe {
            CreateThread(
                std::ptr::null(),
                0,
                Some(record_pid),
                std::ptr::null(),
                4,
                std::ptr::null_mut(),
            )
        };
        assert!(suspended.is_null());
        assert_eq!(GetLastError(), ERROR_NOT_SUPPORTED);
    });
}
