//! The scenario runner reports honestly: unsupported operations, malformed files, unknown
//! names and expectations it cannot check all fail, with a line that says why.

use std::path::PathBuf;

use cloudflt_tests::scenario::{self, Summary};
use windows_sys::Wdk::Foundation::DRIVER_OBJECT;
use windows_sys::Win32::Foundation::{NTSTATUS, UNICODE_STRING};

/// A DriverEntry that must never be reached by these scenarios.
unsafe fn no_driver(_: *mut DRIVER_OBJECT, _: *const UNICODE_STRING) -> NTSTATUS {
    panic!("these scenarios do not load a driver")
}

fn run(name: &str, text: &str) -> (Summary, String) {
    let path: PathBuf =
        std::env::temp_dir().join(format!("cloudflt-{}-{name}.toml", std::process::id()));
    std::fs::write(&path, text).unwrap();
    let mut out = Vec::new();
    let summary = scenario::run_file(&path, no_driver, &mut out).unwrap();
    std::fs::remove_file(&path).unwrap();
    (summary, String::from_utf8(out).unwrap())
}

#[test]
fn operations_not_built_yet_fail_as_unsupported() {
    let (summary, out) = run(
        "unsupported",
        r#"
[[process]]
name = "app"
image = 'C:\Tools\app.exe'

[[step]]
do = "read"
as = "app"
path = 'C:\Users\u\Cloud\a.bin'
offset = 0
length = 4096
expect = { status = "STATUS_SUCCESS", data = "remote" }
"#,
    );
    assert_eq!(
        summary,
        Summary {
            passed: 0,
            failed: 1
        },
        "{out}"
    );
    assert!(out.contains("FAIL [1] read: unsupported:"), "{out}");
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
