//! `cloudflt::compat` against the kernel model: the modes are per process and per thread,
//! so every check runs on threads of model processes (`process::run_as`, and threads the
//! model's CreateThread starts in the caller's process).
#![cfg(not(windows))]

use std::ffi::c_void;
use std::sync::Mutex;

use cloudflt::Error;
use cloudflt::compat::{self, PlaceholderCompatibility as Mode, ThreadModeGuard};
use cloudflt_tests::model::fltlib::{CloseHandle, CreateThread, INFINITE, WaitForSingleObject};
use cloudflt_tests::model::process::{self, SYSTEM_PID};
use cloudflt_tests::model::{Machine, VolumeConfig};
use windows_sys::Win32::Foundation::WAIT_OBJECT_0;

const IMAGE: &str = r"\Device\HarddiskVolume1\Apps\app.exe";

fn boot() -> (Machine, u32) {
    let machine = Machine::boot(&[VolumeConfig::ntfs(1)]);
    let pid = machine.spawn_process(IMAGE, 0, false);
    (machine, pid)
}

/// A mode or the text of the error reading it.
type Answer = Result<Mode, String>;

/// What a new thread of the calling process saw: its process's mode and its own.
static SEEN: Mutex<Option<(Answer, Answer)>> = Mutex::new(None);

unsafe extern "system" fn record_modes(_parameter: *mut c_void) -> u32 {
    let text = |r: Result<Mode, Error>| r.map_err(|e| e.to_string());
    *SEEN.lock().unwrap() = Some((text(compat::process_mode()), text(compat::thread_mode())));
    0
}

/// The modes a new thread of the calling process sees: (process, thread).
fn modes_on_a_new_thread() -> (Mode, Mode) {
    // SAFETY: a start routine that ignores its parameter.
    let thread = unsafe {
        CreateThread(
            std::ptr::null(),
            0,
            Some(record_modes),
            std::ptr::null(),
            0,
            std::ptr::null_mut(),
        )
    };
    assert!(!thread.is_null());
    assert_eq!(WaitForSingleObject(thread, INFINITE), WAIT_OBJECT_0);
    CloseHandle(thread);
    let (process, thread) = SEEN.lock().unwrap().take().expect("the thread ran");
    (process.unwrap(), thread.unwrap())
}

#[test]
fn a_process_mode_is_set_queried_and_the_previous_one_returned() {
    let (_machine, pid) = boot();
    process::run_as(pid, || {
        assert_eq!(compat::process_mode().unwrap(), Mode::ApplicationDefault);
        assert_eq!(
            compat::set_process_mode(Mode::Expose).unwrap(),
            Mode::ApplicationDefault
        );
        assert_eq!(compat::process_mode().unwrap(), Mode::Expose);
        assert_eq!(
            compat::set_process_mode(Mode::DisguiseFull).unwrap(),
            Mode::Expose
        );
        assert_eq!(compat::process_mode().unwrap(), Mode::DisguiseFull);
        // The thread's own mode is separate and untouched.
        assert_eq!(compat::thread_mode().unwrap(), Mode::ApplicationDefault);
    });
}

#[test]
fn a_process_started_with_a_mode_reports_it() {
    let machine = Machine::boot(&[VolumeConfig::ntfs(1)]);
    let pid = machine.spawn_process(IMAGE, Mode::Disguise.raw(), false);
    process::run_as(pid, || {
        assert_eq!(compat::process_mode().unwrap(), Mode::Disguise);
    });
}

#[test]
fn a_thread_mode_is_its_own_and_the_process_mode_is_shared_by_its_threads() {
    let (_machine, pid) = boot();
    process::run_as(pid, || {
        compat::set_process_mode(Mode::Expose).unwrap();
        assert_eq!(
            compat::set_thread_mode(Mode::Disguise).unwrap(),
            Mode::ApplicationDefault
        );
        assert_eq!(compat::thread_mode().unwrap(), Mode::Disguise);
        assert_eq!(
            compat::process_mode().unwrap(),
            Mode::Expose,
            "setting the thread's mode leaves the process's alone"
        );
        // Another thread of the process sees the process's mode, not this thread's.
        assert_eq!(
            modes_on_a_new_thread(),
            (Mode::Expose, Mode::ApplicationDefault)
        );
        assert_eq!(
            compat::set_thread_mode(Mode::ApplicationDefault).unwrap(),
            Mode::Disguise
        );
        // A change of the process's mode reaches threads that already exist too.
        compat::set_process_mode(Mode::Disguise).unwrap();
        assert_eq!(
            modes_on_a_new_thread(),
            (Mode::Disguise, Mode::ApplicationDefault)
        );
    });
}

#[test]
fn a_process_mode_does_not_reach_another_process() {
    let (machine, first) = boot();
    let second = machine.spawn_process(r"\Device\HarddiskVolume1\Apps\other.exe", 0, false);
    process::run_as(first, || {
        compat::set_process_mode(Mode::Expose).unwrap();
        compat::set_thread_mode(Mode::Disguise).unwrap();
    });
    process::run_as(second, || {
        assert_eq!(compat::process_mode().unwrap(), Mode::ApplicationDefault);
        assert_eq!(compat::thread_mode().unwrap(), Mode::ApplicationDefault);
    });
    process::run_as(first, || {
        assert_eq!(compat::process_mode().unwrap(), Mode::Expose);
    });
}

#[test]
fn a_guard_sets_the_thread_mode_for_its_scope_and_guards_nest() {
    let (_machine, pid) = boot();
    process::run_as(pid, || {
        compat::set_thread_mode(Mode::Expose).unwrap();
        {
            let outer = ThreadModeGuard::set(Mode::Disguise).unwrap();
            assert_eq!(outer.previous(), Mode::Expose);
            assert_eq!(compat::thread_mode().unwrap(), Mode::Disguise);
            {
                let inner = ThreadModeGuard::set(Mode::DisguiseFull).unwrap();
                assert_eq!(inner.previous(), Mode::Disguise);
                assert_eq!(compat::thread_mode().unwrap(), Mode::DisguiseFull);
            }
            assert_eq!(compat::thread_mode().unwrap(), Mode::Disguise);
        }
        assert_eq!(compat::thread_mode().unwrap(), Mode::Expose);
        // The guard never touched the process's mode.
        assert_eq!(compat::process_mode().unwrap(), Mode::ApplicationDefault);
    });
}

#[test]
fn a_thread_without_a_teb_or_peb_gets_typed_errors_not_panics() {
    let _machine = Machine::boot(&[VolumeConfig::ntfs(1)]);
    // A system thread: the model answers as ntdll does for a thread with no TEB/PEB.
    assert_eq!(process::current_pid(), SYSTEM_PID);
    let no_peb = |r: Result<Mode, Error>| matches!(r, Err(Error::CompatMode { code: -3, .. }));
    let no_teb = |r: Result<Mode, Error>| matches!(r, Err(Error::CompatMode { code: -2, .. }));
    assert!(no_peb(compat::process_mode()));
    assert!(no_peb(compat::set_process_mode(Mode::Expose)));
    assert!(no_teb(compat::thread_mode()));
    assert!(no_teb(compat::set_thread_mode(Mode::Expose)));
    match ThreadModeGuard::set(Mode::Expose) {
        Err(Error::CompatMode { function, code: -2 }) => {
            assert_eq!(function, "RtlSetThreadPlaceholderCompatibilityMode");
        }
        other => panic!("expected PHCM_ERROR_NO_TEB, got {other:?}"),
    }
}
