//! Only the driver sets or removes cloudflt's reparse point: a user's FSCTL carrying the
//! tag is refused with the driver loaded, while NTFS alone (driver unloaded) accepts it,
//! and other tags are never touched.

use cloudflt_proto::reparse::{GUID, TAG};
use cloudflt_tests::model::files::{self, OpenParams};
use cloudflt_tests::model::process::{self, PHCM_APPLICATION_DEFAULT};
use cloudflt_tests::model::{Machine, VolumeConfig};
use windows_sys::Win32::Foundation::{
    STATUS_ACCESS_DENIED, STATUS_IO_REPARSE_TAG_MISMATCH, STATUS_SUCCESS,
};

const FSCTL_SET_REPARSE_POINT: u32 = 0x0009_00A4;
const FSCTL_SET_REPARSE_POINT_EX: u32 = 0x0009_040C;
const FSCTL_DELETE_REPARSE_POINT: u32 = 0x0009_00AC;
const OTHER_TAG: u32 = 0x0000_1234;

fn guid_buffer(tag: u32, guid: [u8; 16], data: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&tag.to_le_bytes());
    b.extend_from_slice(&(data.len() as u16).to_le_bytes());
    b.extend_from_slice(&0u16.to_le_bytes());
    b.extend_from_slice(&guid);
    b.extend_from_slice(data);
    b
}

fn ex(existing: u32, existing_guid: [u8; 16], inner: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&0u32.to_le_bytes());
    b.extend_from_slice(&existing.to_le_bytes());
    b.extend_from_slice(&existing_guid);
    b.extend_from_slice(&0u64.to_le_bytes());
    b.extend_from_slice(inner);
    b
}

/// Every tamper attempt on a fresh file; returns the statuses.
fn attempts() -> Vec<i32> {
    let h = files::create("C:\\victim.bin", &OpenParams::read_write(3)).expect("create");
    let ours = guid_buffer(TAG, GUID, b"forged placeholder data");
    let theirs = guid_buffer(OTHER_TAG, [0x11; 16], b"x");
    let statuses = vec![
        files::fs_control(h, FSCTL_SET_REPARSE_POINT, &ours, 0).0,
        files::fs_control(h, FSCTL_SET_REPARSE_POINT_EX, &ex(0, [0; 16], &ours), 0).0,
        files::fs_control(
            h,
            FSCTL_DELETE_REPARSE_POINT,
            &guid_buffer(TAG, GUID, &[]),
            0,
        )
        .0,
        // Another tag is not cloudflt's business.
        files::fs_control(h, FSCTL_SET_REPARSE_POINT, &theirs, 0).0,
        files::fs_control(
            h,
            FSCTL_DELETE_REPARSE_POINT,
            &guid_buffer(OTHER_TAG, [0x11; 16], &[]),
            0,
        )
        .0,
    ];
    files::close(h);
    statuses
}

#[test]
fn a_users_fsctl_with_cloudflts_tag_is_denied_and_other_tags_pass() {
    let mut machine = Machine::boot(&[VolumeConfig::ntfs(1)]);
    assert_eq!(
        machine.load_driver(cloudflt_driver::nt::driver_entry),
        STATUS_SUCCESS
    );
    let app = machine.spawn_process(
        "\\Device\\HarddiskVolume1\\app.exe",
        PHCM_APPLICATION_DEFAULT,
        true,
    );
    let statuses = process::run_as(app, attempts);
    assert_eq!(
        statuses,
        [
            STATUS_ACCESS_DENIED,
            STATUS_ACCESS_DENIED,
            STATUS_ACCESS_DENIED,
            STATUS_SUCCESS,
            STATUS_SUCCESS
        ]
    );
    assert_eq!(machine.unload_driver(), STATUS_SUCCESS);
    machine.assert_clean();
}

#[test]
fn without_the_driver_ntfs_accepts_the_tag_like_any_other() {
    let mut machine = Machine::boot(&[VolumeConfig::ntfs(1)]);
    let app = machine.spawn_process(
        "\\Device\\HarddiskVolume1\\app.exe",
        PHCM_APPLICATION_DEFAULT,
        true,
    );
    let statuses = process::run_as(app, attempts);
    // Set succeeds; the EX set then finds a reparse point where it expected none (it
    // names no existing tag), which NTFS refuses as a tag mismatch; delete removes it;
    // the other tag comes and goes.
    assert_eq!(
        statuses,
        [
            STATUS_SUCCESS,
            STATUS_IO_REPARSE_TAG_MISMATCH,
            STATUS_SUCCESS,
            STATUS_SUCCESS,
            STATUS_SUCCESS
        ]
    );
    machine.assert_clean();
}
