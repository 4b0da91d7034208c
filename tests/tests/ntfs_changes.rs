//! How NTFS changes a file's data and what it records about the change: end of file and
//! allocation (truncation discards, extension reads zeros, sparse files allocate
//! nothing), overwrite and supersede of a file carrying a reparse point, and the file's
//! USN (FSCTL_READ_FILE_USN_DATA), which advances on every change as the change journal
//! writes its records (`tests/src/model/ntfs/usn.rs`).

use cloudflt_tests::model::ntfs::usn::{FSCTL_READ_FILE_USN_DATA, V2_HEADER, V3_HEADER};
use cloudflt_tests::model::ntfs::{CreateOutcome, CreateRequest, FileId, Ntfs, OpenId};
use windows_sys::Wdk::Storage::FileSystem::{
    self as fs, FILE_CREATE, FILE_NON_DIRECTORY_FILE, FILE_OPEN, FILE_OPEN_REPARSE_POINT,
    FILE_OVERWRITE, FILE_OVERWRITE_IF, FILE_SUPERSEDE,
};
use windows_sys::Win32::Foundation::{
    NTSTATUS, STATUS_BUFFER_TOO_SMALL, STATUS_INVALID_PARAMETER, STATUS_SUCCESS,
};
use windows_sys::Win32::Storage::FileSystem::{
    DELETE, FILE_ATTRIBUTE_ARCHIVE, FILE_ATTRIBUTE_HIDDEN, FILE_ATTRIBUTE_OFFLINE,
    FILE_ATTRIBUTE_PINNED, FILE_ATTRIBUTE_RECALL_ON_DATA_ACCESS, FILE_ATTRIBUTE_REPARSE_POINT,
    FILE_ATTRIBUTE_SPARSE_FILE, FILE_READ_DATA, FILE_WRITE_DATA,
};
use windows_sys::Win32::System::Ioctl::{FSCTL_SET_REPARSE_POINT, FSCTL_SET_SPARSE};

const T0: i64 = 133_000_000_000_000_000;
const T1: i64 = T0 + 10_000_000;
/// A third-party tag (cloudflt's shape: the D bit set).
const TAG: u32 = 0x1000_0123;
const GUID: [u8; 16] = *b"cloudflt-guid-01";

fn open(
    n: &mut Ntfs,
    path: &str,
    disposition: u32,
    options: u32,
    attributes: u32,
) -> (OpenId, FileId, usize) {
    match n.create(&CreateRequest {
        path,
        disposition,
        options: options | FILE_NON_DIRECTORY_FILE,
        desired_access: FILE_READ_DATA | FILE_WRITE_DATA | DELETE,
        share_access: 7,
        open_reparse: &[],
        attributes,
        now: T1,
        id_name: &[],
    }) {
        Ok(CreateOutcome::Opened {
            open,
            id,
            information,
        }) => (open, id, information),
        other => panic!("expected an open of {path}, got {other:?}"),
    }
}

fn eof(n: &mut Ntfs, o: OpenId, size: i64) -> NTSTATUS {
    n.set_information(o, fs::FileEndOfFileInformation, &size.to_le_bytes(), T1)
}

fn usn(n: &mut Ntfs, o: OpenId) -> i64 {
    let (status, record) = n.fsctl(o, FSCTL_READ_FILE_USN_DATA, &[], 512, T1);
    assert_eq!(status, STATUS_SUCCESS);
    i64::from_le_bytes(record[24..32].try_into().unwrap())
}

fn guid_buffer(data: &[u8]) -> Vec<u8> {
    let mut b = TAG.to_le_bytes().to_vec();
    b.extend_from_slice(&(data.len() as u16).to_le_bytes());
    b.extend_from_slice(&[0, 0]);
    b.extend_from_slice(&GUID);
    b.extend_from_slice(data);
    b
}

// ---- end of file and allocation ----

#[test]
fn truncation_discards_data_and_extension_reads_zeros() {
    let mut n = Ntfs::new(512, T0);
    let (o, id, _) = open(&mut n, "\\f", FILE_CREATE, 0, 0);
    n.write(o, 0, &[0xAB; 10_000], T0).unwrap();
    assert_eq!(eof(&mut n, o, 5000), STATUS_SUCCESS);
    assert_eq!(n.node(id).unwrap().size, 5000);
    assert_eq!(eof(&mut n, o, 12_000), STATUS_SUCCESS);
    let data = n.read(o, 0, 12_000).unwrap();
    assert_eq!(&data[..5000], &[0xAB; 5000][..]);
    assert!(
        data[5000..].iter().all(|&b| b == 0),
        "the discarded bytes came back"
    );
    // Allocation below end of file takes end of file down with it; above, it only
    // reserves clusters.
    assert_eq!(
        n.set_information(o, fs::FileAllocationInformation, &100i64.to_le_bytes(), T1),
        STATUS_SUCCESS
    );
    assert_eq!(n.node(id).unwrap().size, 100);
    assert_eq!(
        n.set_information(
            o,
            fs::FileAllocationInformation,
            &65536i64.to_le_bytes(),
            T1
        ),
        STATUS_SUCCESS
    );
    let node = n.node(id).unwrap();
    assert_eq!((node.size, node.allocation), (100, 65536));
    assert_eq!(eof(&mut n, o, -1), STATUS_INVALID_PARAMETER);
}

#[test]
fn a_sparse_file_grows_without_allocating() {
    let mut n = Ntfs::new(512, T0);
    let (o, id, _) = open(&mut n, "\\s", FILE_CREATE, 0, 0);
    assert_eq!(n.fsctl(o, FSCTL_SET_SPARSE, &[], 0, T1).0, STATUS_SUCCESS);
    n.write(o, 8192, &[1; 4096], T0).unwrap();
    assert_eq!(eof(&mut n, o, 1 << 20), STATUS_SUCCESS);
    let node = n.node(id).unwrap();
    assert_eq!((node.size, node.allocation), (1 << 20, 4096));
    assert_eq!(n.allocated_ranges(id), vec![(8192, 4096)]);
    // Truncating inside the written cluster keeps only what lies below the new end.
    assert_eq!(eof(&mut n, o, 8192 + 100), STATUS_SUCCESS);
    assert_eq!(eof(&mut n, o, 16384), STATUS_SUCCESS);
    let data = n.read(o, 8192, 4096).unwrap();
    assert_eq!(&data[..100], &[1; 100][..]);
    assert!(data[100..].iter().all(|&b| b == 0));
}

// ---- overwrite and supersede ----

/// A 20 KiB sparse file with a third-party reparse point, OFFLINE, RECALL_ON_DATA_ACCESS,
/// PINNED and HIDDEN: what a placeholder looks like to NTFS.
fn placeholder_like(n: &mut Ntfs, path: &str) -> FileId {
    let (o, id, _) = open(n, path, FILE_CREATE, FILE_OPEN_REPARSE_POINT, 0);
    assert_eq!(n.fsctl(o, FSCTL_SET_SPARSE, &[], 0, T1).0, STATUS_SUCCESS);
    n.write(o, 0, &[9; 4096], T0).unwrap();
    assert_eq!(eof(n, o, 20_480), STATUS_SUCCESS);
    let mut basic = vec![0u8; 40];
    let attributes = FILE_ATTRIBUTE_OFFLINE
        | FILE_ATTRIBUTE_RECALL_ON_DATA_ACCESS
        | FILE_ATTRIBUTE_PINNED
        | FILE_ATTRIBUTE_HIDDEN;
    basic[32..36].copy_from_slice(&attributes.to_le_bytes());
    assert_eq!(
        n.set_information(o, fs::FileBasicInformation, &basic, T1),
        STATUS_SUCCESS
    );
    assert_eq!(
        n.fsctl(o, FSCTL_SET_REPARSE_POINT, &guid_buffer(b"blob"), 0, T1)
            .0,
        STATUS_SUCCESS
    );
    n.cleanup(o);
    id
}

#[test]
fn overwriting_a_reparse_point_file_takes_its_reparse_point_data_and_attributes() {
    for disposition in [FILE_OVERWRITE, FILE_OVERWRITE_IF, FILE_SUPERSEDE] {
        let mut n = Ntfs::new(512, T0);
        let id = placeholder_like(&mut n, "\\p");
        // A hidden file is replaced only by a caller that repeats HIDDEN (CreateFile).
        let (o, same, _) = open(
            &mut n,
            "\\p",
            disposition,
            FILE_OPEN_REPARSE_POINT,
            FILE_ATTRIBUTE_HIDDEN,
        );
        assert_eq!(same, id, "disposition {disposition}: the same file");
        let node = n.node(id).unwrap();
        assert_eq!(node.size, 0, "disposition {disposition}");
        assert_eq!(node.reparse, None, "disposition {disposition}");
        // CREATE_ALWAYS "clears the existing attributes, combines the specified file
        // attributes and flags with FILE_ATTRIBUTE_ARCHIVE".
        assert_eq!(
            node.attributes,
            FILE_ATTRIBUTE_HIDDEN | FILE_ATTRIBUTE_ARCHIVE,
            "disposition {disposition}: no REPARSE_POINT, SPARSE_FILE, OFFLINE, RECALL, PINNED"
        );
        assert_eq!(
            node.attributes & (FILE_ATTRIBUTE_REPARSE_POINT | FILE_ATTRIBUTE_SPARSE_FILE),
            0
        );
        assert!(n.allocated_ranges(id).is_empty());
        n.cleanup(o);
    }
}

#[test]
fn without_open_reparse_point_the_overwrite_stops_at_the_reparse_point() {
    let mut n = Ntfs::new(512, T0);
    let id = placeholder_like(&mut n, "\\p");
    let outcome = n.create(&CreateRequest {
        path: "\\p",
        disposition: FILE_OVERWRITE_IF,
        options: FILE_NON_DIRECTORY_FILE,
        desired_access: FILE_READ_DATA | FILE_WRITE_DATA,
        share_access: 7,
        open_reparse: &[],
        attributes: FILE_ATTRIBUTE_HIDDEN,
        now: T1,
        id_name: &[],
    });
    assert!(matches!(
        outcome,
        Ok(CreateOutcome::Reparse { tag: TAG, .. })
    ));
    let node = n.node(id).unwrap();
    assert_eq!(node.size, 20_480, "nothing was replaced");
    assert!(node.reparse.is_some());
}

// ---- the USN ----

#[test]
fn the_usn_advances_on_the_first_change_of_each_kind_and_at_the_last_close() {
    let mut n = Ntfs::new(512, T0);
    let (o, _, _) = open(&mut n, "\\f", FILE_CREATE, 0, 0);
    let created = usn(&mut n, o);
    assert!(created > 0, "creation writes a record");
    n.write(o, 0, b"first", T1).unwrap();
    let extended = usn(&mut n, o);
    assert!(extended > created, "DATA_EXTEND is a new reason");
    n.write(o, 5, b"-more", T1).unwrap();
    assert_eq!(usn(&mut n, o), extended, "DATA_EXTEND again: no new record");
    n.write(o, 0, b"again", T1).unwrap();
    let overwrote = usn(&mut n, o);
    assert!(overwrote > extended, "DATA_OVERWRITE is a new reason");
    n.write(o, 2, b"AIN", T1).unwrap();
    assert_eq!(usn(&mut n, o), overwrote, "a second overwrite adds nothing");
    let extended = overwrote;
    n.cleanup(o);
    let (o, _, _) = open(&mut n, "\\f", FILE_OPEN, 0, 0);
    let closed = usn(&mut n, o);
    assert!(closed > extended, "the last close writes the close record");
    // An open that changes nothing writes no record.
    n.cleanup(o);
    let (o, _, _) = open(&mut n, "\\f", FILE_OPEN, 0, 0);
    assert_eq!(usn(&mut n, o), closed);
    assert_eq!(n.read(o, 0, 5).unwrap(), b"agAIN");
    assert_eq!(usn(&mut n, o), closed, "reading is no change");
    // Each kind of change after a close is a new record.
    n.write(o, 0, b"x", T1).unwrap();
    let overwritten = usn(&mut n, o);
    assert!(overwritten > closed);
    assert_eq!(eof(&mut n, o, 2), STATUS_SUCCESS);
    let truncated = usn(&mut n, o);
    assert!(truncated > overwritten);
    assert_eq!(
        n.fsctl(o, FSCTL_SET_REPARSE_POINT, &guid_buffer(b"r"), 0, T1)
            .0,
        STATUS_SUCCESS
    );
    let reparse = usn(&mut n, o);
    assert!(reparse > truncated);
    assert_eq!(n.rename(o, "\\g", false, T1), STATUS_SUCCESS);
    let renamed = usn(&mut n, o);
    assert!(renamed > reparse);
    n.cleanup(o);
    assert!(n.usn(n.lookup("\\g").unwrap()).unwrap() > renamed);
}

#[test]
fn usns_grow_across_the_volume_and_other_files_do_not_move_this_one() {
    let mut n = Ntfs::new(512, T0);
    let (a, a_id, _) = open(&mut n, "\\a", FILE_CREATE, 0, 0);
    let (b, b_id, _) = open(&mut n, "\\b", FILE_CREATE, 0, 0);
    let before = n.usn(a_id).unwrap();
    n.write(b, 0, b"other", T1).unwrap();
    n.cleanup(b);
    assert_eq!(n.usn(a_id).unwrap(), before);
    assert!(n.usn(b_id).unwrap() > before);
    n.cleanup(a);
}

#[test]
fn read_file_usn_data_answers_v2_or_v3_and_checks_its_buffer() {
    let mut n = Ntfs::new(512, T0);
    let (o, id, _) = open(&mut n, "\\name.txt", FILE_CREATE, 0, 0);
    let name: Vec<u8> = "name.txt"
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect();
    let (status, v2) = n.fsctl(o, FSCTL_READ_FILE_USN_DATA, &[], 512, T1);
    assert_eq!(status, STATUS_SUCCESS);
    let length = (V2_HEADER + name.len()).div_ceil(8) * 8;
    assert_eq!(v2.len(), length);
    assert_eq!(
        u32::from_le_bytes(v2[0..4].try_into().unwrap()) as usize,
        length
    );
    assert_eq!(u16::from_le_bytes(v2[4..6].try_into().unwrap()), 2);
    assert_eq!(u64::from_le_bytes(v2[8..16].try_into().unwrap()), id);
    assert_eq!(
        i64::from_le_bytes(v2[24..32].try_into().unwrap()),
        n.usn(id).unwrap()
    );
    assert_eq!(&v2[60..60 + name.len()], &name[..]);
    let (status, v3) = n.fsctl(o, FSCTL_READ_FILE_USN_DATA, &[3, 0, 3, 0], 512, T1);
    assert_eq!(status, STATUS_SUCCESS);
    assert_eq!(u16::from_le_bytes(v3[4..6].try_into().unwrap()), 3);
    assert_eq!(&v3[V3_HEADER..V3_HEADER + name.len()], &name[..]);
    assert_eq!(
        n.fsctl(o, FSCTL_READ_FILE_USN_DATA, &[3, 0, 2, 0], 512, T1)
            .0,
        STATUS_INVALID_PARAMETER
    );
    assert_eq!(
        n.fsctl(o, FSCTL_READ_FILE_USN_DATA, &[], length - 1, T1).0,
        STATUS_BUFFER_TOO_SMALL
    );
    n.cleanup(o);
}
