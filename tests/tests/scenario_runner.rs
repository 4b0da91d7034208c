//! The scenario runner reports honestly: unsupported operations, malformed files, unknown
//! names and expectations it cannot check all fail, with a line that says why.

use std::path::PathBuf;
use std::sync::atomic::{AtomicIsize, Ordering};

use cloudflt_tests::model::files::{self, OpenParams};
use cloudflt_tests::scenario::{self, Mode, Summary};
use windows_sys::Wdk::Foundation::DRIVER_OBJECT;
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FLT_REGISTRATION, FLT_REGISTRATION_VERSION, FltRegisterFilter, FltUnregisterFilter, PFLT_FILTER,
};
use windows_sys::Win32::Foundation::{NTSTATUS, STATUS_SUCCESS, UNICODE_STRING};

/// A DriverEntry that must never be reached by these scenarios.
unsafe fn no_driver(_: *mut DRIVER_OBJECT, _: *const UNICODE_STRING) -> NTSTATUS {
    panic!("these scenarios do not load a driver")
}

fn run(name: &str, text: &str) -> (Summary, String) {
    run_with(name, text, no_driver, Mode::Normal)
}

fn run_with(name: &str, text: &str, entry: scenario::DriverEntry, mode: Mode) -> (Summary, String) {
    let path: PathBuf =
        std::env::temp_dir().join(format!("cloudflt-{}-{name}.toml", std::process::id()));
    std::fs::write(&path, text).unwrap();
    let mut out = Vec::new();
    let summary = scenario::run_file_as(&path, entry, mode, &mut out).unwrap();
    std::fs::remove_file(&path).unwrap();
    (summary, String::from_utf8(out).unwrap())
}

#[test]
fn provider_operations_fail_as_unsupported() {
    let (summary, out) = run(
        "unsupported",
        r#"
[[provider]]
name = "mirror"
image = 'C:\Program Files\Mirror\mirror.exe'
sync_root = 'C:\Users\u\Cloud'
files = [{ path = "a.bin", size = 100, seed = 1 }]

[[step]]
do = "connect"
provider = "mirror"

[[step]]
do = "pin"
as = "mirror"
path = 'C:\Users\u\Cloud\a.bin'

[[step]]
do = "provider_stats"
provider = "mirror"
expect = { fetches = 0 }
"#,
    );
    assert_eq!(
        summary,
        Summary {
            passed: 0,
            failed: 3
        },
        "{out}"
    );
    for (n, op) in [(1, "connect"), (2, "pin"), (3, "provider_stats")] {
        assert!(
            out.contains(&format!(
                "FAIL [{n}] {op}: unsupported: `{op}` needs the provider library (issue 4)"
            )),
            "{out}"
        );
    }
}

#[test]
fn a_misspelt_field_is_an_error_not_ignored() {
    let (summary, out) = run("typo", "[[step]]\ndo = \"wait\"\nmillis = 5\n");
    assert_eq!(summary.failed, 1);
    assert!(
        out.contains("not a v1 scenario") && out.contains("millis"),
        "{out}"
    );
}

#[test]
fn unknown_operations_processes_and_statuses_are_reported() {
    let (summary, out) = run(
        "unknown",
        r#"
[[step]]
do = "teleport"

[[step]]
do = "wait"
ms = 1
as = "nobody"

[[step]]
do = "wait"
ms = 1
expect = { status = "STATUS_NO_SUCH_THING" }
"#,
    );
    assert_eq!(
        summary,
        Summary {
            passed: 0,
            failed: 3
        },
        "{out}"
    );
    assert!(out.contains("unknown operation `teleport`"), "{out}");
    assert!(out.contains("names no process or provider"), "{out}");
    assert!(
        out.contains("STATUS_NO_SUCH_THING is not an NTSTATUS name"),
        "{out}"
    );
}

#[test]
fn expectations_an_operation_cannot_produce_fail() {
    let (summary, out) = run(
        "inapplicable",
        "[[step]]\ndo = \"wait\"\nms = 1\nexpect = { fetches = 1 }\n",
    );
    assert_eq!(summary.failed, 1, "{out}");
    assert!(out.contains("cannot check fetches"), "{out}");
}

#[test]
fn a_wrong_status_expectation_fails_and_a_right_one_passes() {
    let (summary, out) = run(
        "status",
        "[[step]]\ndo = \"wait\"\nms = 1\nexpect = { failed = true }\n\n[[step]]\ndo = \"wait\"\nms = 1\n",
    );
    assert_eq!(
        summary,
        Summary {
            passed: 1,
            failed: 1
        },
        "{out}"
    );
    assert!(
        out.contains("expected a failure, got STATUS_SUCCESS"),
        "{out}"
    );
}

/// A scenario with one ordinary file, for the tests below.
const ONE_FILE: &str = r#"
[[process]]
name = "app"
image = 'C:\Tools\app.exe'

[[step]]
do = "create_file"
as = "app"
path = 'C:\d\a.txt'
text = "hello"
"#;

#[test]
fn wrong_expectations_fail_with_a_line_that_says_what_differed() {
    let text = format!(
        "{ONE_FILE}{}",
        r#"
[[step]]
do = "read"
as = "app"
path = 'C:\d\a.txt'
offset = 0
length = 10
expect = { data = "text:goodbye" }

[[step]]
do = "query"
as = "app"
path = 'C:\d\a.txt'
class = "FileStandardInformation"
expect = { size = 4 }

[[step]]
do = "query"
as = "app"
path = 'C:\d\a.txt'
class = "FileBasicInformation"
expect = { size = 5 }

[[step]]
do = "list"
as = "app"
path = 'C:\d'
expect = { count = 2, entries = [{ name = "a.txt", attributes_include = ["REPARSE_POINT"] }] }

[[step]]
do = "list"
as = "app"
path = 'C:\d'
class = "FileDirectoryInformation"
expect = { entries = [{ name = "a.txt", ea_size = 0 }] }

[[step]]
do = "state"
path = 'C:\d\a.txt'
expect = { placeholder = true, hydrated = "none" }

[[step]]
do = "read"
as = "app"
path = 'C:\d\a.txt'
offset = 0
length = 10
expect = { data = "text:hello", bytes = 5 }
"#
    );
    let (summary, out) = run("wrong", &text);
    assert_eq!(
        summary,
        Summary {
            passed: 2,
            failed: 6
        },
        "{out}"
    );
    assert!(out.contains("  ok   [1] create_file"), "{out}");
    assert!(
        out.contains("FAIL [2] read: expected data text:goodbye: 7 bytes"),
        "{out}"
    );
    assert!(
        out.contains("FAIL [3] query: expected size 4, got 5"),
        "{out}"
    );
    assert!(
        out.contains("FAIL [4] query: FileBasicInformation carries no end of file"),
        "{out}"
    );
    assert!(
        out.contains("expected 2 entries, got 1")
            && out.contains("entry \"a.txt\": expected REPARSE_POINT set"),
        "{out}"
    );
    assert!(
        out.contains("FAIL [6] list: entry \"a.txt\": FileDirectoryInformation has no EaSize"),
        "{out}"
    );
    assert!(
        out.contains("expected placeholder = true") && out.contains("expected hydrated none"),
        "{out}"
    );
    assert!(out.contains("  ok   [8] read"), "{out}");
}

#[test]
fn the_machine_has_its_system_root_sync_roots_and_remote_content() {
    let (summary, out) = run(
        "machine",
        r#"
[[process]]
name = "app"
image = 'C:\Tools\app.exe'

[[provider]]
name = "mirror"
image = 'C:\Program Files\Mirror\mirror.exe'
sync_root = 'C:\Users\u\Cloud'
files = [{ path = "docs/a.bin", size = 10000, seed = 3 }, { path = "b.txt", text = "remote b" }]

[[step]]
do = "list"
as = "app"
path = 'C:\'
expect = { entries = [{ name = "Windows", attributes_include = ["DIRECTORY"] }, { name = "Users" }] }

[[step]]
do = "create_file"
as = "mirror"
path = 'C:\Users\u\Cloud\docs\a.bin'
size = 10000
seed = 3

[[step]]
do = "read"
as = "app"
path = 'C:\Users\u\Cloud\docs\a.bin'
offset = 4000
length = 8000
expect = { data = "remote", bytes = 6000 }

[[step]]
do = "create_file"
as = "mirror"
path = 'C:\Users\u\Cloud\b.txt'
text = "remote c"

[[step]]
do = "read"
as = "app"
path = 'C:\Users\u\Cloud\b.txt'
offset = 0
length = 100
expect = { data = "remote" }
"#,
    );
    assert_eq!(
        summary,
        Summary {
            passed: 4,
            failed: 1
        },
        "{out}"
    );
    assert!(
        out.contains("FAIL [5] read: expected data remote: 8 bytes 72656d6f74652062"),
        "{out}"
    );
}

#[test]
fn parallel_steps_each_report_and_handles_are_per_scenario() {
    let text = format!(
        "{ONE_FILE}{}",
        r#"
[[step]]
do = "open"
as = "app"
path = 'C:\d\a.txt'
handle = "h"

[[step]]
do = "parallel"
steps = [
  { do = "read", handle = "h", offset = 0, length = 5, expect = { data = "text:hello" } },
  { do = "read", as = "app", path = 'C:\d\a.txt', offset = 0, length = 5, io = "mapped", expect = { data = "text:hellO" } },
  { do = "sequence", steps = [
    { do = "wait", ms = 1 },
    { do = "query", as = "app", path = 'C:\d\a.txt', class = "FileStatInformation", expect = { size = 5, reparse_tag = 0 } },
  ] },
]

[[step]]
do = "close"
handle = "h"

[[step]]
do = "close"
handle = "h"
"#
    );
    let (summary, out) = run("parallel", &text);
    assert_eq!(
        summary,
        Summary {
            passed: 6,
            failed: 2
        },
        "{out}"
    );
    assert!(out.contains("  ok   [3.1] read"), "{out}");
    assert!(
        out.contains("FAIL [3.2] read: expected data text:hellO"),
        "{out}"
    );
    assert!(out.contains("  ok   [3.3.2] query"), "{out}");
    assert!(
        out.contains("FAIL [5] close: invalid step: no handle named \"h\" is open"),
        "{out}"
    );
}

#[test]
fn windows_has_no_delete_reparse_ex_and_in_sync_needs_the_placeholder_format() {
    let text = format!(
        "{ONE_FILE}{}",
        r#"
[[step]]
do = "delete_reparse"
as = "app"
path = 'C:\d\a.txt'
tag = 0x1234
ex = true

[[step]]
do = "state"
path = 'C:\d\a.txt'
expect = { in_sync = true }
"#
    );
    let (summary, out) = run("no-ex", &text);
    assert_eq!(summary.failed, 2, "{out}");
    assert!(
        out.contains(
            "FAIL [2] delete_reparse: unsupported: Windows has no FSCTL_DELETE_REPARSE_POINT_EX"
        ),
        "{out}"
    );
    assert!(
        out.contains("FAIL [3] state: unsupported: `in_sync` needs the placeholder format"),
        "{out}"
    );
}

/// The filter handle of [`marker_driver`], for its unload.
static MARKER_FILTER: AtomicIsize = AtomicIsize::new(0);

/// FLT_REGISTRATION holds raw pointers; this one points at nothing but a function.
struct Registration(FLT_REGISTRATION);
// SAFETY: immutable, read by the model's FltRegisterFilter only.
unsafe impl Sync for Registration {}

static MARKER_REGISTRATION: Registration = Registration(FLT_REGISTRATION {
    Size: std::mem::size_of::<FLT_REGISTRATION>() as u16,
    Version: FLT_REGISTRATION_VERSION as u16,
    Flags: 0,
    ContextRegistration: std::ptr::null(),
    OperationRegistration: std::ptr::null(),
    FilterUnloadCallback: Some(marker_unload),
    InstanceSetupCallback: None,
    InstanceQueryTeardownCallback: None,
    InstanceTeardownStartCallback: None,
    InstanceTeardownCompleteCallback: None,
    GenerateFileNameCallback: None,
    NormalizeNameComponentCallback: None,
    NormalizeContextCleanupCallback: None,
    TransactionNotificationCallback: None,
    NormalizeNameComponentExCallback: None,
    SectionNotificationCallback: None,
});

unsafe extern "system" fn marker_unload(_flags: u32) -> NTSTATUS {
    // SAFETY: the filter registered by marker_driver, unregistered once.
    unsafe { FltUnregisterFilter(MARKER_FILTER.load(Ordering::SeqCst)) };
    STATUS_SUCCESS
}

/// A driver whose loading changes what applications see: its DriverEntry leaves a file
/// on C:, as a badly behaved filter might.
unsafe fn marker_driver(driver: *mut DRIVER_OBJECT, _: *const UNICODE_STRING) -> NTSTATUS {
    let mut filter: PFLT_FILTER = 0;
    // SAFETY: a static registration and a live driver object.
    let status = unsafe { FltRegisterFilter(driver, &MARKER_REGISTRATION.0, &mut filter) };
    if status < 0 {
        return status;
    }
    MARKER_FILTER.store(filter, Ordering::SeqCst);
    if let Ok(h) = files::create("C:\\marker.txt", &OpenParams::read_write(2)) {
        files::close(h);
    }
    STATUS_SUCCESS
}

#[test]
fn differential_mode_catches_a_driver_that_changes_what_applications_see() {
    let scenario = r#"
[[process]]
name = "app"
image = 'C:\Tools\app.exe'

[[step]]
do = "create_file"
as = "app"
path = 'C:\d\a.txt'
text = "same either way"

[[step]]
do = "query"
as = "app"
path = 'C:\marker.txt'
class = "FileBasicInformation"
expect = { status = "STATUS_OBJECT_NAME_NOT_FOUND" }

[[step]]
do = "list"
as = "app"
path = 'C:\'
pattern = "*.txt"
expect = { failed = true }

[[step]]
do = "read"
as = "app"
path = 'C:\d\a.txt'
offset = 0
length = 4
expect = { data = "text:same" }
"#;
    // Run as written (the driver never loaded), every step holds.
    let (summary, out) = run_with("marker-plain", scenario, marker_driver, Mode::Normal);
    assert_eq!(summary.failed, 0, "{out}");
    let (summary, out) = run_with("marker", scenario, marker_driver, Mode::Differential);
    assert_eq!(
        summary,
        Summary {
            passed: 2,
            failed: 2
        },
        "{out}"
    );
    assert!(
        out.contains(
            "FAIL [2] query: differs (without driver vs with driver): status \
             STATUS_OBJECT_NAME_NOT_FOUND vs STATUS_SUCCESS"
        ),
        "{out}"
    );
    assert!(
        out.contains("with driver: expected STATUS_OBJECT_NAME_NOT_FOUND, got STATUS_SUCCESS"),
        "{out}"
    );
    assert!(
        out.contains("FAIL [3] list: differs") && out.contains("marker.txt"),
        "{out}"
    );
    assert!(out.contains("  ok   [4] read"), "{out}");
}

#[test]
fn differential_mode_skips_load_and_unload_without_the_driver() {
    let (summary, out) = run_with(
        "lifecycle",
        "[[step]]\ndo = \"unload_driver\"\n\n[[step]]\ndo = \"load_driver\"\n",
        marker_driver,
        Mode::Differential,
    );
    assert_eq!(
        summary,
        Summary {
            passed: 2,
            failed: 0
        },
        "{out}"
    );
}
