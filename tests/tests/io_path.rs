//! Ordinary file I/O through FltMgr, the cache and NTFS, with and without the real
//! driver: the same workload must give the same observable results either way
//! (differential check), and the driver must break no kernel rule doing it.

use cloudflt_tests::model::files::{self, Handle, IoMode, OpenParams};
use cloudflt_tests::model::process::{self, PHCM_APPLICATION_DEFAULT};
use cloudflt_tests::model::{Machine, VolumeConfig};
use windows_sys::Win32::Foundation::{
    STATUS_END_OF_FILE, STATUS_INVALID_PARAMETER, STATUS_NO_MORE_FILES, STATUS_NOT_A_REPARSE_POINT,
    STATUS_OBJECT_NAME_NOT_FOUND, STATUS_SUCCESS,
};

const FILE_CREATE: u32 = 2;
const FILE_OPEN_IF: u32 = 3;
const FILE_DIRECTORY_FILE: u32 = 0x1;
/// FileBasicInformation, FileStandardInformation, FileIdBothDirectoryInformation,
/// FileAttributeTagInformation.
const FILE_BASIC: i32 = 4;
const FILE_STANDARD: i32 = 5;
const FILE_ID_BOTH_DIRECTORY: i32 = 37;
const FILE_ATTRIBUTE_TAG: i32 = 35;
const FSCTL_SET_REPARSE_POINT: u32 = 0x0009_00A4;
const FSCTL_GET_REPARSE_POINT: u32 = 0x0009_00A8;

fn open(path: &str, params: &OpenParams) -> Result<Handle, i32> {
    files::create(path, params)
}

/// Everything an application could observe from a mixed workload on ordinary files.
fn workload() -> Vec<String> {
    let mut seen = Vec::new();
    let mut note = |what: &str, value: String| seen.push(format!("{what}: {value}"));

    let dir = open(
        "C:\\data",
        &OpenParams {
            options: FILE_DIRECTORY_FILE | 0x20,
            ..OpenParams::read_write(FILE_CREATE)
        },
    );
    note("mkdir", format!("{:?}", dir.map(|_| ())));
    if let Ok(d) = dir {
        files::close(d);
    }
    let h = open("C:\\data\\a.txt", &OpenParams::read_write(FILE_OPEN_IF)).expect("create a.txt");
    let payload: Vec<u8> = (0..10_000u32).map(|i| (i * 7 % 251) as u8).collect();
    note(
        "write",
        format!("{:?}", files::write(h, 0, &payload, IoMode::Cached)),
    );
    for mode in [
        IoMode::Cached,
        IoMode::Cached,
        IoMode::NonCached,
        IoMode::Paging,
        IoMode::Mapped,
    ] {
        let (offset, len) = if mode == IoMode::NonCached {
            (4096, 8192)
        } else {
            (100, 5000)
        };
        let r = files::read(h, offset, len, mode);
        note(
            &format!("read {mode:?}"),
            format!(
                "{:?}",
                r.map(|b| (
                    b.len(),
                    b == payload[offset as usize..(offset as usize + len).min(payload.len())]
                ))
            ),
        );
    }
    note(
        "read unaligned noncached",
        format!("{:?}", files::read(h, 1, 512, IoMode::NonCached)),
    );
    note(
        "read past end",
        format!("{:?}", files::read(h, 20_000, 10, IoMode::Cached)),
    );
    let (status, std_info) = files::query_information(h, FILE_STANDARD, 24);
    note(
        "standard",
        format!("{status:#x} {:?}", &std_info.get(8..16)),
    );
    let (status, basic) = files::query_information(h, FILE_BASIC, 40);
    note(
        "basic attributes",
        format!("{status:#x} {:?}", basic.get(32..36)),
    );
    let (status, tag) = files::query_information(h, FILE_ATTRIBUTE_TAG, 8);
    note("attribute tag", format!("{status:#x} {tag:?}"));
    let (status, out) = files::fs_control(h, FSCTL_GET_REPARSE_POINT, &[], 1024);
    note("get reparse", format!("{status:#x} {}", out.len()));
    files::close(h);

    let d = open(
        "C:\\data",
        &OpenParams {
            options: FILE_DIRECTORY_FILE | 0x20,
            ..OpenParams::default()
        },
    )
    .expect("open dir");
    let (status, entries) =
        files::query_directory(d, FILE_ID_BOTH_DIRECTORY, None, true, false, 4096);
    note("list", format!("{status:#x} {}", entries.len()));
    let (status, _) = files::query_directory(d, FILE_ID_BOTH_DIRECTORY, None, false, false, 4096);
    note("list again", format!("{status:#x}"));
    files::close(d);
    note(
        "missing",
        format!(
            "{:?}",
            open("C:\\data\\nope", &OpenParams::default()).map(|_| ())
        ),
    );
    seen
}

fn as_app(machine: &Machine) -> u32 {
    machine.spawn_process(
        "\\Device\\HarddiskVolume1\\Tools\\app.exe",
        PHCM_APPLICATION_DEFAULT,
        false,
    )
}

#[test]
fn ordinary_files_behave_the_same_with_and_without_the_driver() {
    let without = {
        let mut machine = Machine::boot(&[VolumeConfig::ntfs(1)]);
        let app = as_app(&machine);
        let seen = process::run_as(app, workload);
        machine.assert_clean();
        seen
    };
    let with = {
        let mut machine = Machine::boot(&[VolumeConfig::ntfs(1)]);
        assert_eq!(
            machine.load_driver(cloudflt_driver::nt::driver_entry),
            STATUS_SUCCESS
        );
        let app = as_app(&machine);
        let seen = process::run_as(app, workload);
        assert_eq!(machine.unload_driver(), STATUS_SUCCESS);
        machine.assert_clean();
        seen
    };
    assert_eq!(without, with);
    // And the workload itself saw real NTFS behaviour, not an empty model.
    let text = without.join("\n");
    assert!(text.contains("read Cached: Ok((5000, true))"), "{text}");
    // 8 KiB asked at 4 KiB of a 10 000-byte file: the file system stops at end of file.
    assert!(text.contains("read NonCached: Ok((5904, true))"), "{text}");
    assert!(
        text.contains(&format!(
            "read unaligned noncached: Err({STATUS_INVALID_PARAMETER})"
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!("read past end: Err({STATUS_END_OF_FILE})")),
        "{text}"
    );
    assert!(
        text.contains(&format!("get reparse: {:#x}", STATUS_NOT_A_REPARSE_POINT)),
        "{text}"
    );
    assert!(
        text.contains(&format!("list again: {:#x}", STATUS_NO_MORE_FILES)),
        "{text}"
    );
    assert!(
        text.contains(&format!("missing: Err({STATUS_OBJECT_NAME_NOT_FOUND})")),
        "{text}"
    );
    let _ = FSCTL_SET_REPARSE_POINT;
}
