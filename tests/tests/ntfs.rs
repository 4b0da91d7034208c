//! The NTFS model as a caller sees it: statuses, IoStatus.Information and the bytes it
//! returns, checked against documented NTFS behaviour.

use cloudflt_tests::model::ntfs::{
    CLUSTER, CreateOutcome, CreateRequest, FILE_ID_ALL_EXTD_BOTH_DIRECTORY_INFORMATION,
    FILE_STAT_BASIC_INFORMATION_CLASS, FileId, Ntfs, OpenId, OpenReparseEntry, ROOT_ID,
};
use windows_sys::Wdk::Storage::FileSystem::{
    self as fs, FILE_CREATE, FILE_DELETE_ON_CLOSE, FILE_DIRECTORY_FILE, FILE_DISPOSITION_DELETE,
    FILE_DISPOSITION_ON_CLOSE, FILE_DISPOSITION_POSIX_SEMANTICS, FILE_NON_DIRECTORY_FILE,
    FILE_OPEN, FILE_OPEN_BY_FILE_ID, FILE_OPEN_IF, FILE_OPEN_REPARSE_POINT, FILE_OVERWRITE,
    FILE_OVERWRITE_IF, FILE_SUPERSEDE, OPEN_REPARSE_POINT_REPARSE_IF_CHILD_NOT_EXISTS,
    OPEN_REPARSE_POINT_REPARSE_IF_DIRECTORY_FINAL_COMPONENT,
    REPARSE_DATA_EX_FLAG_GIVEN_TAG_OR_NONE,
};
use windows_sys::Win32::Foundation::*;
use windows_sys::Win32::Storage::FileSystem::{
    DELETE, FILE_ATTRIBUTE_ARCHIVE, FILE_ATTRIBUTE_DIRECTORY, FILE_ATTRIBUTE_HIDDEN,
    FILE_ATTRIBUTE_NORMAL, FILE_ATTRIBUTE_READONLY, FILE_ATTRIBUTE_REPARSE_POINT,
    FILE_ATTRIBUTE_SPARSE_FILE, FILE_READ_ATTRIBUTES, FILE_READ_DATA, FILE_SHARE_DELETE,
    FILE_SHARE_READ, FILE_SHARE_WRITE, FILE_WRITE_DATA,
};
use windows_sys::Win32::System::Ioctl::{
    FSCTL_DELETE_REPARSE_POINT, FSCTL_GET_REPARSE_POINT, FSCTL_QUERY_ALLOCATED_RANGES,
    FSCTL_SET_REPARSE_POINT, FSCTL_SET_REPARSE_POINT_EX, FSCTL_SET_SPARSE, FSCTL_SET_ZERO_DATA,
};

const T0: i64 = 133_000_000_000_000_000;
const T1: i64 = T0 + 10_000_000;
const ALL_SHARE: u32 = FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE;
const RW: u32 = FILE_READ_DATA | FILE_WRITE_DATA;
/// A third-party tag with the D bit, like cloudflt's.
const TAG_D: u32 = 0x1000_0123;
/// A third-party tag without it.
const TAG: u32 = 0x0000_0123;
const GUID: [u8; 16] = *b"cloudflt-guid-01";
const SYMLINK: u32 = 0xA000_000C;

fn vol() -> Ntfs {
    Ntfs::new(512, T0)
}

struct Req {
    path: &'static str,
    disposition: u32,
    options: u32,
    access: u32,
    share: u32,
    attributes: u32,
    open_reparse: Vec<OpenReparseEntry>,
}

fn req(path: &'static str, disposition: u32, options: u32) -> Req {
    Req {
        path,
        disposition,
        options,
        access: RW | DELETE,
        share: ALL_SHARE,
        attributes: 0,
        open_reparse: Vec::new(),
    }
}

fn create(n: &mut Ntfs, r: &Req) -> Result<CreateOutcome, NTSTATUS> {
    n.create(&CreateRequest {
        path: r.path,
        disposition: r.disposition,
        options: r.options,
        desired_access: r.access,
        share_access: r.share,
        open_reparse: &r.open_reparse,
        attributes: r.attributes,
        now: T0,
        id_name: &[],
    })
}

/// IRP_MJ_CREATE with FILE_OPEN_BY_FILE_ID and `name` as the file name's bytes.
fn by_id(
    n: &mut Ntfs,
    name: &[u8],
    disposition: u32,
    options: u32,
) -> Result<CreateOutcome, NTSTATUS> {
    n.create(&CreateRequest {
        path: "",
        disposition,
        options: options | FILE_OPEN_BY_FILE_ID,
        desired_access: RW | DELETE,
        share_access: ALL_SHARE,
        open_reparse: &[],
        attributes: 0,
        now: T0,
        id_name: name,
    })
}

fn opened(o: Result<CreateOutcome, NTSTATUS>) -> (OpenId, FileId, usize) {
    match o {
        Ok(CreateOutcome::Opened {
            open,
            id,
            information,
        }) => (open, id, information),
        other => panic!("expected an open, got {other:?}"),
    }
}

fn mkfile(n: &mut Ntfs, path: &'static str) -> (OpenId, FileId) {
    let (o, id, _) = opened(create(n, &req(path, FILE_CREATE, FILE_NON_DIRECTORY_FILE)));
    (o, id)
}

fn mkdir(n: &mut Ntfs, path: &'static str) -> (OpenId, FileId) {
    let (o, id, _) = opened(create(n, &req(path, FILE_CREATE, FILE_DIRECTORY_FILE)));
    (o, id)
}

fn err(o: Result<CreateOutcome, NTSTATUS>) -> NTSTATUS {
    o.expect_err("expected a failure")
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}
fn utf16(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

/// REPARSE_GUID_DATA_BUFFER with `data`.
fn guid_buffer(tag: u32, guid: [u8; 16], data: &[u8]) -> Vec<u8> {
    let mut b = tag.to_le_bytes().to_vec();
    b.extend_from_slice(&(data.len() as u16).to_le_bytes());
    b.extend_from_slice(&[0, 0]);
    b.extend_from_slice(&guid);
    b.extend_from_slice(data);
    b
}

/// REPARSE_DATA_BUFFER with `data`.
fn ms_buffer(tag: u32, data: &[u8]) -> Vec<u8> {
    let mut b = tag.to_le_bytes().to_vec();
    b.extend_from_slice(&(data.len() as u16).to_le_bytes());
    b.extend_from_slice(&[0, 0]);
    b.extend_from_slice(data);
    b
}

fn set_reparse(n: &mut Ntfs, open: OpenId, buffer: &[u8]) -> NTSTATUS {
    n.fsctl(open, FSCTL_SET_REPARSE_POINT, buffer, 0, T1).0
}

// ---- names and paths ----

#[test]
fn names_are_case_insensitive_and_case_preserving() {
    let mut n = vol();
    let (_, id) = mkfile(&mut n, "\\ReadMe.TXT");
    assert_eq!(n.lookup("\\readme.txt"), Some(id));
    assert_eq!(n.node(id).unwrap().name, "ReadMe.TXT");
    let (_, again, info) = opened(create(&mut n, &req("\\README.txt", FILE_OPEN, 0)));
    assert_eq!((again, info), (id, FILE_OPENED_INFO));
    assert_eq!(
        err(create(&mut n, &req("\\readme.TXT", FILE_CREATE, 0))),
        STATUS_OBJECT_NAME_COLLISION
    );
    assert_eq!(n.path_of(id).as_deref(), Some("\\ReadMe.TXT"));
}

const FILE_SUPERSEDED_INFO: usize = 0;
const FILE_OPENED_INFO: usize = 1;
const FILE_CREATED_INFO: usize = 2;
const FILE_OVERWRITTEN_INFO: usize = 3;

#[test]
fn invalid_names_and_missing_paths() {
    let mut n = vol();
    for bad in [
        "\\a*b", "\\a?b", "\\a:b", "\\a<b", "\\a>b", "\\a|b", "\\a\"b", "\\a/b", "\\a\\\\b",
        "noslash", "\\.", "\\a\\..",
    ] {
        assert_eq!(
            err(create(&mut n, &req(bad, FILE_OPEN_IF, 0))),
            STATUS_OBJECT_NAME_INVALID,
            "{bad}"
        );
    }
    assert_eq!(
        err(create(&mut n, &req("\\missing\\file", FILE_OPEN_IF, 0))),
        STATUS_OBJECT_PATH_NOT_FOUND
    );
    assert_eq!(
        err(create(&mut n, &req("\\missing", FILE_OPEN, 0))),
        STATUS_OBJECT_NAME_NOT_FOUND
    );
    mkfile(&mut n, "\\file");
    assert_eq!(
        err(create(&mut n, &req("\\file\\child", FILE_OPEN_IF, 0))),
        STATUS_OBJECT_PATH_NOT_FOUND
    );
    assert_eq!(
        err(create(&mut n, &req("\\file\\", FILE_OPEN, 0))),
        STATUS_OBJECT_NAME_INVALID,
        "a trailing backslash names a directory"
    );
    mkdir(&mut n, "\\dir");
    opened(create(&mut n, &req("\\dir\\", FILE_OPEN, 0)));
}

#[test]
fn every_disposition() {
    let mut n = vol();
    let cases = [
        (FILE_OPEN, Err(STATUS_OBJECT_NAME_NOT_FOUND)),
        (FILE_OVERWRITE, Err(STATUS_OBJECT_NAME_NOT_FOUND)),
        (FILE_CREATE, Ok(FILE_CREATED_INFO)),
        (FILE_CREATE, Err(STATUS_OBJECT_NAME_COLLISION)),
        (FILE_OPEN, Ok(FILE_OPENED_INFO)),
        (FILE_OPEN_IF, Ok(FILE_OPENED_INFO)),
        (FILE_OVERWRITE, Ok(FILE_OVERWRITTEN_INFO)),
        (FILE_OVERWRITE_IF, Ok(FILE_OVERWRITTEN_INFO)),
        (FILE_SUPERSEDE, Ok(FILE_SUPERSEDED_INFO)),
    ];
    for (d, want) in cases {
        let got = create(&mut n, &req("\\f", d, 0)).map(|o| opened(Ok(o)).2);
        assert_eq!(got, want, "disposition {d}");
    }
    for (path, d) in [
        ("\\g", FILE_OPEN_IF),
        ("\\h", FILE_OVERWRITE_IF),
        ("\\i", FILE_SUPERSEDE),
    ] {
        assert_eq!(
            opened(create(&mut n, &req(path, d, 0))).2,
            FILE_CREATED_INFO
        );
    }
}

#[test]
fn overwrite_truncates_and_keeps_the_file_id() {
    let mut n = vol();
    let (o, id) = mkfile(&mut n, "\\f");
    n.write(o, 0, b"hello", T1).unwrap();
    let (_, again, _) = opened(create(&mut n, &req("\\f", FILE_OVERWRITE, 0)));
    assert_eq!(again, id);
    assert_eq!(n.node(id).unwrap().size, 0);
}

#[test]
fn overwriting_hidden_needs_hidden_and_read_only_refuses() {
    let mut n = vol();
    let mut r = req("\\h", FILE_CREATE, 0);
    r.attributes = FILE_ATTRIBUTE_HIDDEN;
    opened(create(&mut n, &r));
    assert_eq!(
        err(create(&mut n, &req("\\h", FILE_OVERWRITE_IF, 0))),
        STATUS_ACCESS_DENIED
    );
    let mut r = req("\\h", FILE_OVERWRITE_IF, 0);
    r.attributes = FILE_ATTRIBUTE_HIDDEN;
    opened(create(&mut n, &r));
    let mut r = req("\\ro", FILE_CREATE, 0);
    r.attributes = FILE_ATTRIBUTE_READONLY;
    opened(create(&mut n, &r));
    assert_eq!(
        err(create(&mut n, &req("\\ro", FILE_OVERWRITE, 0))),
        STATUS_ACCESS_DENIED
    );
}

#[test]
fn directory_options() {
    let mut n = vol();
    mkdir(&mut n, "\\d");
    mkfile(&mut n, "\\f");
    assert_eq!(
        err(create(&mut n, &req("\\f", FILE_OPEN, FILE_DIRECTORY_FILE))),
        STATUS_NOT_A_DIRECTORY
    );
    assert_eq!(
        err(create(
            &mut n,
            &req("\\d", FILE_OPEN, FILE_NON_DIRECTORY_FILE)
        )),
        STATUS_FILE_IS_A_DIRECTORY
    );
    assert_eq!(
        err(create(
            &mut n,
            &req("\\", FILE_OPEN, FILE_NON_DIRECTORY_FILE)
        )),
        STATUS_FILE_IS_A_DIRECTORY
    );
    assert_eq!(
        err(create(
            &mut n,
            &req(
                "\\x",
                FILE_CREATE,
                FILE_DIRECTORY_FILE | FILE_NON_DIRECTORY_FILE
            )
        )),
        STATUS_INVALID_PARAMETER
    );
    let (_, root, _) = opened(create(&mut n, &req("\\", FILE_OPEN, FILE_DIRECTORY_FILE)));
    assert_eq!(root, ROOT_ID);
}

// ---- share access and delete ----

#[test]
fn share_access_follows_io_check_share_access() {
    let mut n = vol();
    let (first, _) = mkfile(&mut n, "\\f");
    let _ = first;
    let mut r = req("\\f", FILE_OPEN, 0);
    r.access = FILE_READ_DATA;
    r.share = FILE_SHARE_READ;
    // The creating open writes and shares everything; a reader that will not share
    // write access conflicts with it.
    assert_eq!(err(create(&mut n, &r)), STATUS_SHARING_VIOLATION);
    n.cleanup(first);
    let (reader, _, _) = opened(create(&mut n, &r));
    let mut w = req("\\f", FILE_OPEN, 0);
    w.access = FILE_WRITE_DATA;
    assert_eq!(err(create(&mut n, &w)), STATUS_SHARING_VIOLATION);
    let mut attrs = req("\\f", FILE_OPEN, 0);
    attrs.access = FILE_READ_ATTRIBUTES;
    attrs.share = 0;
    opened(create(&mut n, &attrs));
    n.cleanup(reader);
    opened(create(&mut n, &w));
}

#[test]
fn delete_on_close_deletes_at_last_cleanup() {
    let mut n = vol();
    let (o, id) = mkfile(&mut n, "\\f");
    let (doc, _, _) = opened(create(&mut n, &req("\\f", FILE_OPEN, FILE_DELETE_ON_CLOSE)));
    assert!(n.node(id).unwrap().delete_pending);
    n.cleanup(doc);
    assert_eq!(
        err(create(&mut n, &req("\\f", FILE_OPEN, 0))),
        STATUS_DELETE_PENDING
    );
    assert!(n.lookup("\\f").is_some());
    n.cleanup(o);
    assert!(n.lookup("\\f").is_none());
    assert!(n.node(id).is_none());
}

#[test]
fn delete_on_close_needs_delete_access_and_a_writable_file() {
    let mut n = vol();
    let mut r = req("\\f", FILE_CREATE, FILE_DELETE_ON_CLOSE);
    r.access = RW;
    assert_eq!(err(create(&mut n, &r)), STATUS_INVALID_PARAMETER);
    let mut r = req("\\ro", FILE_CREATE, 0);
    r.attributes = FILE_ATTRIBUTE_READONLY;
    opened(create(&mut n, &r));
    assert_eq!(
        err(create(
            &mut n,
            &req("\\ro", FILE_OPEN, FILE_DELETE_ON_CLOSE)
        )),
        STATUS_CANNOT_DELETE
    );
}

#[test]
fn disposition_rules() {
    let mut n = vol();
    let (d, _) = mkdir(&mut n, "\\d");
    let (f, fid) = mkfile(&mut n, "\\d\\f");
    assert_eq!(
        n.set_information(d, fs::FileDispositionInformation, &[1], T1),
        STATUS_DIRECTORY_NOT_EMPTY
    );
    assert_eq!(
        n.set_information(f, fs::FileDispositionInformation, &[], T1),
        STATUS_INFO_LENGTH_MISMATCH
    );
    assert_eq!(
        n.set_information(f, fs::FileDispositionInformation, &[1], T1),
        STATUS_SUCCESS
    );
    assert!(n.node(fid).unwrap().delete_pending);
    assert_eq!(
        n.set_information(f, fs::FileDispositionInformation, &[0], T1),
        STATUS_SUCCESS
    );
    assert!(!n.node(fid).unwrap().delete_pending);
    // Read-only: refused, unless the Ex form says to ignore it.
    let mut basic = vec![0u8; 40];
    basic[32..36].copy_from_slice(&FILE_ATTRIBUTE_READONLY.to_le_bytes());
    assert_eq!(
        n.set_information(f, fs::FileBasicInformation, &basic, T1),
        STATUS_SUCCESS
    );
    assert_eq!(
        n.set_information(f, fs::FileDispositionInformation, &[1], T1),
        STATUS_CANNOT_DELETE
    );
    let flags = 1u32 | 0x10; // DELETE | IGNORE_READONLY_ATTRIBUTE
    assert_eq!(
        n.set_information(
            f,
            fs::FileDispositionInformationEx,
            &flags.to_le_bytes(),
            T1
        ),
        STATUS_SUCCESS
    );
    n.cleanup(f);
    assert!(n.lookup("\\d\\f").is_none());
    assert_eq!(
        n.set_information(d, fs::FileDispositionInformation, &[1], T1),
        STATUS_SUCCESS
    );
    n.cleanup(d);
    assert!(n.lookup("\\d").is_none());
}

#[test]
fn posix_delete_removes_the_name_at_once() {
    let mut n = vol();
    let (f, id) = mkfile(&mut n, "\\f");
    let flags = 1u32 | 2; // DELETE | POSIX_SEMANTICS
    assert_eq!(
        n.set_information(
            f,
            fs::FileDispositionInformationEx,
            &flags.to_le_bytes(),
            T1
        ),
        STATUS_SUCCESS
    );
    assert!(n.lookup("\\f").is_none());
    assert!(n.node(id).is_some(), "the open still holds the file");
    mkfile(&mut n, "\\f");
    n.cleanup(f);
    assert!(n.node(id).is_none());
}

// ---- data ----

#[test]
fn reads_writes_and_end_of_file() {
    let mut n = vol();
    let (o, id) = mkfile(&mut n, "\\f");
    assert_eq!(n.read(o, 0, 10), Err(STATUS_END_OF_FILE));
    assert_eq!(n.write(o, 5, b"abc", T1), Ok(3));
    assert_eq!(n.read(o, 0, 100).unwrap(), b"\0\0\0\0\0abc");
    assert_eq!(n.read(o, 6, 100).unwrap(), b"bc");
    assert_eq!(n.read(o, 8, 1), Err(STATUS_END_OF_FILE));
    let node = n.node(id).unwrap();
    assert_eq!((node.size, node.allocation), (8, CLUSTER));
    assert_eq!(node.times[2], T1);
    assert_eq!(node.times[3], T1);
    assert_ne!(node.attributes & FILE_ATTRIBUTE_ARCHIVE, 0);
    let (d, _) = mkdir(&mut n, "\\d");
    assert_eq!(n.read(d, 0, 1), Err(STATUS_INVALID_DEVICE_REQUEST));
    assert_eq!(n.write(d, 0, b"x", T1), Err(STATUS_INVALID_DEVICE_REQUEST));
}

#[test]
fn end_of_file_and_allocation_information() {
    let mut n = vol();
    let (o, id) = mkfile(&mut n, "\\f");
    n.write(o, 0, &[7u8; 100], T1).unwrap();
    assert_eq!(
        n.set_information(o, fs::FileEndOfFileInformation, &10i64.to_le_bytes(), T1),
        STATUS_SUCCESS
    );
    assert_eq!(
        n.set_information(o, fs::FileEndOfFileInformation, &20i64.to_le_bytes(), T1),
        STATUS_SUCCESS
    );
    let data = n.read(o, 0, 100).unwrap();
    assert_eq!(&data[..10], &[7u8; 10]);
    assert_eq!(&data[10..], &[0u8; 10], "shrunk bytes do not come back");
    assert_eq!(
        n.set_information(o, fs::FileEndOfFileInformation, &(-1i64).to_le_bytes(), T1),
        STATUS_INVALID_PARAMETER
    );
    assert_eq!(
        n.set_information(o, fs::FileEndOfFileInformation, &[0; 4], T1),
        STATUS_INFO_LENGTH_MISMATCH
    );
    assert_eq!(
        n.set_information(
            o,
            fs::FileAllocationInformation,
            &(3 * CLUSTER as i64).to_le_bytes(),
            T1
        ),
        STATUS_SUCCESS
    );
    assert_eq!(n.node(id).unwrap().allocation, 3 * CLUSTER);
    assert_eq!(
        n.set_information(o, fs::FileAllocationInformation, &5i64.to_le_bytes(), T1),
        STATUS_SUCCESS
    );
    assert_eq!(
        n.node(id).unwrap().size,
        5,
        "allocation below EOF truncates"
    );
}

#[test]
fn basic_information_timestamps() {
    let mut n = vol();
    let (o, id) = mkfile(&mut n, "\\f");
    let mut basic = vec![0u8; 40];
    basic[16..24].copy_from_slice(&(-1i64).to_le_bytes()); // freeze last write
    assert_eq!(
        n.set_information(o, fs::FileBasicInformation, &basic, T1),
        STATUS_SUCCESS
    );
    n.write(o, 0, b"x", T1).unwrap();
    let node = n.node(id).unwrap();
    assert_eq!(
        node.times[2], T0,
        "-1 stops this handle updating last write"
    );
    assert_eq!(node.times[3], T1);
    basic[16..24].copy_from_slice(&(-2i64).to_le_bytes());
    n.set_information(o, fs::FileBasicInformation, &basic, T1);
    n.write(o, 0, b"x", T1 + 1).unwrap();
    assert_eq!(n.node(id).unwrap().times[2], T1 + 1);
    let mut basic = vec![0u8; 40];
    basic[0..8].copy_from_slice(&42i64.to_le_bytes());
    n.set_information(o, fs::FileBasicInformation, &basic, T1 + 2);
    assert_eq!(n.node(id).unwrap().times[0], 42);
    assert_eq!(n.node(id).unwrap().times[3], T1 + 2, "change time follows");
    basic[0..8].copy_from_slice(&(-3i64).to_le_bytes());
    assert_eq!(
        n.set_information(o, fs::FileBasicInformation, &basic, T1),
        STATUS_INVALID_PARAMETER
    );
    assert_eq!(
        n.set_information(o, fs::FileBasicInformation, &basic[..39], T1),
        STATUS_INFO_LENGTH_MISMATCH
    );
}

#[test]
fn sparse_files_allocate_only_written_clusters() {
    let mut n = vol();
    let (o, id) = mkfile(&mut n, "\\s");
    assert_eq!(n.fsctl(o, FSCTL_SET_SPARSE, &[], 0, T1).0, STATUS_SUCCESS);
    n.write(o, 10 * CLUSTER + 5, b"abc", T1).unwrap();
    n.write(o, 11 * CLUSTER, b"d", T1).unwrap();
    n.write(o, 0, b"z", T1).unwrap();
    let node = n.node(id).unwrap();
    assert_ne!(node.attributes & FILE_ATTRIBUTE_SPARSE_FILE, 0);
    assert_eq!(node.allocation, 3 * CLUSTER);
    assert_eq!(
        n.allocated_ranges(id),
        vec![(0, CLUSTER), (10 * CLUSTER, 2 * CLUSTER)]
    );
    assert_eq!(n.read(o, 5 * CLUSTER, 4).unwrap(), vec![0; 4]);
    // Zeroing a whole cluster deallocates it, a partial one is zeroed in place.
    let mut z = (10 * CLUSTER as i64).to_le_bytes().to_vec();
    z.extend_from_slice(&(11 * CLUSTER as i64).to_le_bytes());
    assert_eq!(n.fsctl(o, FSCTL_SET_ZERO_DATA, &z, 0, T1).0, STATUS_SUCCESS);
    assert_eq!(
        n.allocated_ranges(id),
        vec![(0, CLUSTER), (11 * CLUSTER, CLUSTER)]
    );
    assert_eq!(n.read(o, 10 * CLUSTER + 5, 3).unwrap(), vec![0; 3]);
    // FSCTL_QUERY_ALLOCATED_RANGES over the whole file, then with room for one.
    let mut q = 0i64.to_le_bytes().to_vec();
    q.extend_from_slice(&i64::MAX.to_le_bytes());
    let (status, out) = n.fsctl(o, FSCTL_QUERY_ALLOCATED_RANGES, &q, 64, T1);
    assert_eq!(status, STATUS_SUCCESS);
    assert_eq!(out.len(), 32);
    assert_eq!((u64_at(&out, 0), u64_at(&out, 8)), (0, CLUSTER));
    assert_eq!((u64_at(&out, 16), u64_at(&out, 24)), (11 * CLUSTER, 1));
    let (status, out) = n.fsctl(o, FSCTL_QUERY_ALLOCATED_RANGES, &q, 16, T1);
    assert_eq!((status, out.len()), (STATUS_BUFFER_OVERFLOW, 16));
    assert_eq!(
        n.fsctl(o, FSCTL_QUERY_ALLOCATED_RANGES, &q, 8, T1).0,
        STATUS_BUFFER_TOO_SMALL
    );
    assert_eq!(
        n.fsctl(o, FSCTL_QUERY_ALLOCATED_RANGES, &q[..8], 64, T1).0,
        STATUS_INVALID_PARAMETER
    );
    assert_eq!(
        n.fsctl(o, 0x0009_0000, &[], 0, T1).0,
        STATUS_INVALID_DEVICE_REQUEST
    );
}

#[test]
fn non_sparse_files_count_as_allocated_to_the_cluster() {
    let mut n = vol();
    let (o, id) = mkfile(&mut n, "\\f");
    n.write(o, 3 * CLUSTER, b"x", T1).unwrap();
    assert_eq!(n.allocated_ranges(id), vec![(0, 4 * CLUSTER)]);
    let mut z = 0i64.to_le_bytes().to_vec();
    z.extend_from_slice(&(4 * CLUSTER as i64).to_le_bytes());
    n.fsctl(o, FSCTL_SET_ZERO_DATA, &z, 0, T1);
    assert_eq!(n.allocated_ranges(id), vec![(0, 4 * CLUSTER)]);
    assert_eq!(n.read(o, 3 * CLUSTER, 1).unwrap(), vec![0]);
}

#[test]
fn file_ids_are_unique_and_stable() {
    let mut n = vol();
    let (_, a) = mkfile(&mut n, "\\a");
    let (o, b) = mkfile(&mut n, "\\b");
    assert_ne!(a, b);
    assert_eq!(n.rename(o, "\\c", false, T1), STATUS_SUCCESS);
    assert_eq!(n.lookup("\\c"), Some(b));
    let (status, out) = n.query_information(o, fs::FileInternalInformation, 8);
    assert_eq!((status, u64_at(&out, 0)), (STATUS_SUCCESS, b));
}

// ---- opens by file id ----

#[test]
fn an_open_by_id_reaches_the_file_wherever_it_was_renamed() {
    let mut n = vol();
    mkdir(&mut n, "\\d");
    let (o, id) = mkfile(&mut n, "\\d\\a");
    n.write(o, 0, b"first", T0).unwrap();
    assert_eq!(n.rename(o, "\\b", false, T1), STATUS_SUCCESS);
    n.cleanup(o);
    let (_, other) = mkfile(&mut n, "\\d\\a");
    assert_ne!(other, id);
    let (h, got, info) = opened(by_id(&mut n, &id.to_le_bytes(), FILE_OPEN, 0));
    assert_eq!((got, info), (id, FILE_OPENED_INFO));
    assert_eq!(n.read(h, 0, 100).unwrap(), b"first");
    assert_eq!(n.path_of(got).as_deref(), Some("\\b"));
    // The 16-byte form: the same number padded with zeros; and either after the
    // backslash a device name leaves in front of it.
    let mut wide = id.to_le_bytes().to_vec();
    wide.extend_from_slice(&[0; 8]);
    let slash = |b: &[u8]| [&[b'\\', 0][..], b].concat();
    for name in [wide.clone(), slash(&id.to_le_bytes()), slash(&wide)] {
        let (_, got, _) = opened(by_id(&mut n, &name, FILE_OPEN, 0));
        assert_eq!(got, id, "{name:?}");
    }
    // Directories by id, with the usual DIRECTORY_FILE / NON_DIRECTORY_FILE checks.
    let dir = n.lookup("\\d").unwrap();
    opened(by_id(
        &mut n,
        &dir.to_le_bytes(),
        FILE_OPEN,
        FILE_DIRECTORY_FILE,
    ));
    assert_eq!(
        err(by_id(
            &mut n,
            &dir.to_le_bytes(),
            FILE_OPEN,
            FILE_NON_DIRECTORY_FILE
        )),
        STATUS_FILE_IS_A_DIRECTORY
    );
    assert_eq!(
        err(by_id(
            &mut n,
            &id.to_le_bytes(),
            FILE_OPEN,
            FILE_DIRECTORY_FILE
        )),
        STATUS_NOT_A_DIRECTORY
    );
}

#[test]
fn an_open_by_id_honours_the_disposition_of_an_existing_file() {
    let mut n = vol();
    let (o, id) = mkfile(&mut n, "\\f");
    n.write(o, 0, b"data", T0).unwrap();
    n.cleanup(o);
    let id = id.to_le_bytes();
    assert_eq!(
        err(by_id(&mut n, &id, FILE_CREATE, 0)),
        STATUS_OBJECT_NAME_COLLISION
    );
    for (disposition, info) in [
        (FILE_OPEN_IF, FILE_OPENED_INFO),
        (FILE_OVERWRITE, FILE_OVERWRITTEN_INFO),
        (FILE_OVERWRITE_IF, FILE_OVERWRITTEN_INFO),
        (FILE_SUPERSEDE, FILE_SUPERSEDED_INFO),
    ] {
        let (h, _, got) = opened(by_id(&mut n, &id, disposition, 0));
        assert_eq!(got, info, "disposition {disposition}");
        n.cleanup(h);
    }
}

#[test]
fn an_unknown_id_is_invalid_parameter_whatever_the_disposition() {
    let mut n = vol();
    let (o, gone) = mkfile(&mut n, "\\gone");
    assert_eq!(
        n.set_information(o, fs::FileDispositionInformation, &[1], T1),
        STATUS_SUCCESS
    );
    n.cleanup(o);
    assert_eq!(n.lookup("\\gone"), None);
    for disposition in [
        FILE_SUPERSEDE,
        FILE_OPEN,
        FILE_CREATE,
        FILE_OPEN_IF,
        FILE_OVERWRITE,
        FILE_OVERWRITE_IF,
    ] {
        for id in [gone, 0x0001_0000_0000_7777] {
            assert_eq!(
                err(by_id(&mut n, &id.to_le_bytes(), disposition, 0)),
                STATUS_INVALID_PARAMETER,
                "{id:#x}, disposition {disposition}"
            );
        }
    }
    // Neither 8 nor 16 bytes (with or without the backslash) is no id at all.
    for name in [&b""[..], &[1, 2, 3, 4], &[0; 12], &[b'\\', 0, 5, 0, 0, 0]] {
        assert_eq!(
            err(by_id(&mut n, name, FILE_OPEN, 0)),
            STATUS_INVALID_PARAMETER,
            "{name:?}"
        );
    }
    // 16 bytes that are not a padded reference: an object id, which the model keeps none
    // of (and says so).
    let mut object_id = [7u8; 16];
    object_id[..8].copy_from_slice(&ROOT_ID.to_le_bytes());
    assert_eq!(
        err(by_id(&mut n, &object_id, FILE_OPEN, 0)),
        STATUS_NOT_IMPLEMENTED
    );
}

#[test]
fn a_file_whose_name_a_posix_delete_removed_is_delete_pending_by_id() {
    let mut n = vol();
    let (o, id) = mkfile(&mut n, "\\p");
    let (d, _, _) = opened(create(&mut n, &req("\\p", FILE_OPEN, 0)));
    assert_eq!(
        n.set_information(
            d,
            fs::FileDispositionInformationEx,
            &(FILE_DISPOSITION_DELETE | FILE_DISPOSITION_POSIX_SEMANTICS).to_le_bytes(),
            T1
        ),
        STATUS_SUCCESS
    );
    n.cleanup(d);
    assert_eq!(
        err(by_id(&mut n, &id.to_le_bytes(), FILE_OPEN, 0)),
        STATUS_DELETE_PENDING
    );
    n.cleanup(o);
}

#[test]
fn an_open_by_id_cannot_rename_or_delete_and_its_delete_on_close_deletes_nothing() {
    let mut n = vol();
    let (o, id) = mkfile(&mut n, "\\f");
    n.cleanup(o);
    let (h, _, _) = opened(by_id(&mut n, &id.to_le_bytes(), FILE_OPEN, 0));
    assert_eq!(n.rename(h, "\\g", false, T1), STATUS_INVALID_PARAMETER);
    assert_eq!(
        n.set_information(h, fs::FileDispositionInformation, &[1], T1),
        STATUS_INVALID_PARAMETER
    );
    assert_eq!(
        n.set_information(
            h,
            fs::FileDispositionInformationEx,
            &(FILE_DISPOSITION_DELETE | FILE_DISPOSITION_ON_CLOSE).to_le_bytes(),
            T1
        ),
        STATUS_INVALID_PARAMETER
    );
    n.cleanup(h);
    let (h, _, _) = opened(by_id(
        &mut n,
        &id.to_le_bytes(),
        FILE_OPEN,
        FILE_DELETE_ON_CLOSE,
    ));
    n.cleanup(h);
    assert_eq!(n.lookup("\\f"), Some(id), "still there");
    // Through its name, the same file renames and deletes as ever.
    let (o, _, _) = opened(create(&mut n, &req("\\f", FILE_OPEN, 0)));
    assert_eq!(n.rename(o, "\\g", false, T1), STATUS_SUCCESS);
}

#[test]
fn by_id_a_reparse_point_reparses_unless_opened_as_itself() {
    let mut n = vol();
    let (o, id) = mkfile(&mut n, "\\tagged");
    let stored = guid_buffer(TAG_D, GUID, b"data");
    assert_eq!(set_reparse(&mut n, o, &stored), STATUS_SUCCESS);
    n.cleanup(o);
    match by_id(&mut n, &id.to_le_bytes(), FILE_OPEN, 0) {
        Ok(CreateOutcome::Reparse {
            tag,
            buffer,
            remaining,
        }) => {
            assert_eq!((tag, remaining), (TAG_D, 0), "nothing of the name is left");
            assert_eq!(buffer, stored);
        }
        other => panic!("expected STATUS_REPARSE, got {other:?}"),
    }
    let (_, got, _) = opened(by_id(
        &mut n,
        &id.to_le_bytes(),
        FILE_OPEN,
        FILE_OPEN_REPARSE_POINT,
    ));
    assert_eq!(got, id);
    // An open-reparse entry for the tag opens it too, as on the last component of a path.
    let entry = [OpenReparseEntry {
        tag: TAG_D,
        flags: 0,
        guid: Some(GUID),
    }];
    let got = n.create(&CreateRequest {
        path: "",
        disposition: FILE_OPEN,
        options: FILE_OPEN_BY_FILE_ID,
        desired_access: RW,
        share_access: ALL_SHARE,
        open_reparse: &entry,
        attributes: 0,
        now: T0,
        id_name: &id.to_le_bytes(),
    });
    assert_eq!(opened(got).1, id);
}

#[test]
fn rename_rules() {
    let mut n = vol();
    let (a, aid) = mkfile(&mut n, "\\a");
    let (b, _) = mkfile(&mut n, "\\b");
    assert_eq!(n.rename(a, "\\b", false, T1), STATUS_OBJECT_NAME_COLLISION);
    assert_eq!(
        n.rename(a, "\\b", true, T1),
        STATUS_ACCESS_DENIED,
        "b is open"
    );
    n.cleanup(b);
    assert_eq!(n.rename(a, "\\b", true, T1), STATUS_SUCCESS);
    assert_eq!(n.lookup("\\b"), Some(aid));
    assert_eq!(n.rename(a, "\\B", false, T1), STATUS_SUCCESS, "case change");
    assert_eq!(n.node(aid).unwrap().name, "B");
    assert_eq!(
        n.rename(a, "\\nodir\\x", false, T1),
        STATUS_OBJECT_PATH_NOT_FOUND
    );
    let (d, _) = mkdir(&mut n, "\\d");
    assert_eq!(
        n.rename(d, "\\d\\inner", false, T1),
        STATUS_INVALID_PARAMETER
    );
    let (inside, _) = mkfile(&mut n, "\\d\\inside");
    assert_eq!(
        n.rename(d, "\\e", false, T1),
        STATUS_ACCESS_DENIED,
        "an open below"
    );
    n.cleanup(inside);
    assert_eq!(n.rename(d, "\\e", false, T1), STATUS_SUCCESS);
    assert!(n.lookup("\\e\\inside").is_some());
}

// ---- reparse points ----

#[test]
fn set_get_delete_reparse_point() {
    let mut n = vol();
    let (o, id) = mkfile(&mut n, "\\p");
    let buffer = guid_buffer(TAG, GUID, b"payload");
    assert_eq!(set_reparse(&mut n, o, &buffer), STATUS_SUCCESS);
    let node = n.node(id).unwrap();
    assert_ne!(node.attributes & FILE_ATTRIBUTE_REPARSE_POINT, 0);
    assert_eq!(node.reparse.as_deref(), Some(&buffer[..]));
    assert_eq!(
        n.fsctl(o, FSCTL_GET_REPARSE_POINT, &[], 100, T1),
        (STATUS_SUCCESS, buffer.clone())
    );
    assert_eq!(
        n.fsctl(o, FSCTL_GET_REPARSE_POINT, &[], 23, T1).0,
        STATUS_BUFFER_TOO_SMALL
    );
    let (status, partial) = n.fsctl(o, FSCTL_GET_REPARSE_POINT, &[], 26, T1);
    assert_eq!(status, STATUS_BUFFER_OVERFLOW);
    assert_eq!(partial, buffer[..26].to_vec());
    // Replacing needs the same tag, and for a third-party tag the same GUID.
    assert_eq!(
        set_reparse(&mut n, o, &guid_buffer(TAG_D, GUID, b"x")),
        STATUS_IO_REPARSE_TAG_MISMATCH
    );
    assert_eq!(
        set_reparse(&mut n, o, &guid_buffer(TAG, *b"another-guid-001", b"x")),
        STATUS_REPARSE_ATTRIBUTE_CONFLICT
    );
    assert_eq!(
        set_reparse(&mut n, o, &guid_buffer(TAG, GUID, b"v2")),
        STATUS_SUCCESS
    );
    // Delete: header only, same tag and GUID.
    let del = |tag, guid| guid_buffer(tag, guid, b"");
    assert_eq!(
        n.fsctl(
            o,
            FSCTL_DELETE_REPARSE_POINT,
            &guid_buffer(TAG, GUID, b"v2"),
            0,
            T1
        )
        .0,
        STATUS_IO_REPARSE_DATA_INVALID
    );
    assert_eq!(
        n.fsctl(o, FSCTL_DELETE_REPARSE_POINT, &del(TAG_D, GUID), 0, T1)
            .0,
        STATUS_IO_REPARSE_TAG_MISMATCH
    );
    assert_eq!(
        n.fsctl(o, FSCTL_DELETE_REPARSE_POINT, &del(TAG, [0; 16]), 0, T1)
            .0,
        STATUS_REPARSE_ATTRIBUTE_CONFLICT
    );
    assert_eq!(
        n.fsctl(o, FSCTL_DELETE_REPARSE_POINT, &del(TAG, GUID), 0, T1)
            .0,
        STATUS_SUCCESS
    );
    assert_eq!(
        n.node(id).unwrap().attributes & FILE_ATTRIBUTE_REPARSE_POINT,
        0
    );
    assert_eq!(
        n.fsctl(o, FSCTL_GET_REPARSE_POINT, &[], 100, T1).0,
        STATUS_NOT_A_REPARSE_POINT
    );
    assert_eq!(
        n.fsctl(o, FSCTL_DELETE_REPARSE_POINT, &del(TAG, GUID), 0, T1)
            .0,
        STATUS_NOT_A_REPARSE_POINT
    );
}

#[test]
fn reparse_buffer_validation() {
    let mut n = vol();
    let (o, _) = mkfile(&mut n, "\\p");
    assert_eq!(
        set_reparse(&mut n, o, &[0; 7]),
        STATUS_IO_REPARSE_DATA_INVALID
    );
    assert_eq!(
        set_reparse(&mut n, o, &guid_buffer(0, GUID, b"")),
        STATUS_IO_REPARSE_TAG_INVALID
    );
    assert_eq!(
        set_reparse(&mut n, o, &guid_buffer(1, GUID, b"")),
        STATUS_IO_REPARSE_TAG_INVALID
    );
    assert_eq!(
        set_reparse(&mut n, o, &guid_buffer(0x0001_0123, GUID, b"")),
        STATUS_IO_REPARSE_TAG_INVALID
    );
    // A third-party tag without a GUID does not add up.
    assert_eq!(
        set_reparse(&mut n, o, &ms_buffer(TAG, b"abc")),
        STATUS_IO_REPARSE_DATA_INVALID
    );
    let mut wrong = guid_buffer(TAG, GUID, b"abc");
    wrong[4] = 4;
    assert_eq!(
        set_reparse(&mut n, o, &wrong),
        STATUS_IO_REPARSE_DATA_INVALID
    );
    let big = guid_buffer(TAG, GUID, &vec![1; 16 * 1024 - 24 + 1]);
    assert_eq!(set_reparse(&mut n, o, &big), STATUS_IO_REPARSE_DATA_INVALID);
    let max = guid_buffer(TAG, GUID, &vec![1; 16 * 1024 - 24]);
    assert_eq!(set_reparse(&mut n, o, &max), STATUS_SUCCESS);
    assert_eq!(
        n.fsctl(o, FSCTL_SET_REPARSE_POINT, &max, 4, T1).0,
        STATUS_INVALID_PARAMETER
    );
    // A Microsoft tag takes a plain REPARSE_DATA_BUFFER.
    let (s, sid) = mkfile(&mut n, "\\link");
    assert_eq!(
        set_reparse(&mut n, s, &ms_buffer(SYMLINK, b"target")),
        STATUS_SUCCESS
    );
    let (status, out) = n.fsctl(s, FSCTL_GET_REPARSE_POINT, &[], 8, T1);
    assert_eq!((status, out.len()), (STATUS_BUFFER_OVERFLOW, 8));
    assert_eq!(n.node(sid).unwrap().reparse.unwrap().len(), 14);
}

fn ex(flags: u32, existing: u32, guid: [u8; 16], inner: &[u8]) -> Vec<u8> {
    let mut b = flags.to_le_bytes().to_vec();
    b.extend_from_slice(&existing.to_le_bytes());
    b.extend_from_slice(&guid);
    b.extend_from_slice(&[0; 8]);
    b.extend_from_slice(inner);
    b
}

#[test]
fn set_reparse_point_ex() {
    let mut n = vol();
    let (o, id) = mkfile(&mut n, "\\p");
    let inner = guid_buffer(TAG_D, GUID, b"one");
    let set = |n: &mut Ntfs, b: &[u8]| n.fsctl(o, FSCTL_SET_REPARSE_POINT_EX, b, 0, T1).0;
    assert_eq!(
        set(&mut n, &ex(0, TAG_D, GUID, &inner)),
        STATUS_IO_REPARSE_TAG_MISMATCH,
        "no tag yet"
    );
    assert_eq!(
        set(
            &mut n,
            &ex(REPARSE_DATA_EX_FLAG_GIVEN_TAG_OR_NONE, TAG_D, GUID, &inner)
        ),
        STATUS_SUCCESS
    );
    assert_eq!(
        set(
            &mut n,
            &ex(REPARSE_DATA_EX_FLAG_GIVEN_TAG_OR_NONE, TAG, GUID, &inner)
        ),
        STATUS_IO_REPARSE_TAG_MISMATCH
    );
    assert_eq!(
        set(&mut n, &ex(0, 0, [0; 16], &inner)),
        STATUS_IO_REPARSE_TAG_MISMATCH,
        "it has one now"
    );
    assert_eq!(
        set(&mut n, &ex(0, TAG_D, *b"another-guid-001", &inner)),
        STATUS_IO_REPARSE_TAG_MISMATCH
    );
    // _EX may change the tag when it names the one there.
    let other = guid_buffer(TAG, GUID, b"two");
    assert_eq!(set(&mut n, &ex(0, TAG_D, GUID, &other)), STATUS_SUCCESS);
    assert_eq!(n.node(id).unwrap().reparse, Some(other));
    assert_eq!(
        set(&mut n, &ex(0, TAG, GUID, &[0; 4])),
        STATUS_IO_REPARSE_DATA_INVALID
    );
}

#[test]
fn directories_and_the_d_bit() {
    let mut n = vol();
    let (d, _) = mkdir(&mut n, "\\d");
    mkfile(&mut n, "\\d\\child");
    assert_eq!(
        set_reparse(&mut n, d, &guid_buffer(TAG, GUID, b"")),
        STATUS_DIRECTORY_NOT_EMPTY
    );
    assert_eq!(
        set_reparse(&mut n, d, &guid_buffer(TAG_D, GUID, b"")),
        STATUS_SUCCESS
    );
    let (e, _) = mkdir(&mut n, "\\e");
    assert_eq!(
        set_reparse(&mut n, e, &guid_buffer(TAG, GUID, b"")),
        STATUS_SUCCESS
    );
    // Reaching into e needs an open-reparse entry; even then no child may be added.
    let mut r = req("\\e\\new", FILE_CREATE, 0);
    r.open_reparse = vec![OpenReparseEntry {
        tag: TAG,
        flags: 0,
        guid: Some(GUID),
    }];
    assert_eq!(err(create(&mut n, &r)), STATUS_DIRECTORY_IS_A_REPARSE_POINT);
    let mut r = req("\\d\\new", FILE_CREATE, 0);
    r.open_reparse = vec![OpenReparseEntry {
        tag: TAG_D,
        flags: 0,
        guid: Some(GUID),
    }];
    opened(create(&mut n, &r));
}

#[test]
fn opens_reparse_at_reparse_points() {
    let mut n = vol();
    let (d, _) = mkdir(&mut n, "\\d");
    let stored = guid_buffer(TAG_D, GUID, b"dir");
    set_reparse(&mut n, d, &stored);
    let (f, fid) = mkfile(&mut n, "\\file");
    set_reparse(&mut n, f, &guid_buffer(TAG, GUID, b"file"));
    // Final component: STATUS_REPARSE unless FILE_OPEN_REPARSE_POINT.
    match create(&mut n, &req("\\file", FILE_OPEN, 0)) {
        Ok(CreateOutcome::Reparse { tag, remaining, .. }) => assert_eq!((tag, remaining), (TAG, 0)),
        other => panic!("{other:?}"),
    }
    let (_, id, _) = opened(create(
        &mut n,
        &req("\\file", FILE_OPEN, FILE_OPEN_REPARSE_POINT),
    ));
    assert_eq!(id, fid);
    // Intermediate component: always, with the unparsed rest counted in UTF-16 bytes.
    let r = req("\\d\\sub\\x.txt", FILE_OPEN, FILE_OPEN_REPARSE_POINT);
    assert_eq!(
        create(&mut n, &r),
        Ok(CreateOutcome::Reparse {
            tag: TAG_D,
            buffer: stored.clone(),
            remaining: utf16("\\sub\\x.txt").len()
        })
    );
    // An open-reparse entry with no flags opens the tag wherever it is met.
    let entry = |flags| {
        vec![OpenReparseEntry {
            tag: TAG_D,
            flags,
            guid: Some(GUID),
        }]
    };
    let mut r = req("\\d", FILE_OPEN, 0);
    r.open_reparse = entry(0);
    opened(create(&mut n, &r));
    let mut r = req("\\d\\missing", FILE_OPEN, 0);
    r.open_reparse = entry(0);
    assert_eq!(err(create(&mut n, &r)), STATUS_OBJECT_NAME_NOT_FOUND);
    // ... and its flags say where it still reparses.
    let mut r = req("\\d\\missing", FILE_OPEN, 0);
    r.open_reparse = entry(OPEN_REPARSE_POINT_REPARSE_IF_CHILD_NOT_EXISTS);
    assert!(matches!(
        create(&mut n, &r),
        Ok(CreateOutcome::Reparse { .. })
    ));
    let mut r = req("\\d", FILE_OPEN, 0);
    r.open_reparse = entry(OPEN_REPARSE_POINT_REPARSE_IF_DIRECTORY_FINAL_COMPONENT);
    assert!(matches!(
        create(&mut n, &r),
        Ok(CreateOutcome::Reparse { .. })
    ));
    // An entry for another GUID does not match.
    let mut r = req("\\d", FILE_OPEN, 0);
    r.open_reparse = vec![OpenReparseEntry {
        tag: TAG_D,
        flags: 0,
        guid: Some([9; 16]),
    }];
    assert!(matches!(
        create(&mut n, &r),
        Ok(CreateOutcome::Reparse { .. })
    ));
}

// ---- query information ----

#[test]
fn query_information_classes() {
    let mut n = vol();
    let (o, id) = mkfile(&mut n, "\\dir name");
    n.write(o, 0, &[1; 5000], T1).unwrap();
    let (s, b) = n.query_information(o, fs::FileBasicInformation, 40);
    assert_eq!((s, b.len()), (STATUS_SUCCESS, 40));
    assert_eq!(u32_at(&b, 32), FILE_ATTRIBUTE_ARCHIVE);
    assert_eq!(
        n.query_information(o, fs::FileBasicInformation, 39).0,
        STATUS_INFO_LENGTH_MISMATCH
    );
    let (_, b) = n.query_information(o, fs::FileStandardInformation, 24);
    assert_eq!(
        (u64_at(&b, 0), u64_at(&b, 8), u32_at(&b, 16), b[20], b[21]),
        (2 * CLUSTER, 5000, 1, 0, 0)
    );
    let (_, b) = n.query_information(o, fs::FileNetworkOpenInformation, 56);
    assert_eq!((u64_at(&b, 32), u64_at(&b, 40)), (2 * CLUSTER, 5000));
    let (_, b) = n.query_information(o, fs::FileAttributeTagInformation, 8);
    assert_eq!((u32_at(&b, 0), u32_at(&b, 4)), (FILE_ATTRIBUTE_ARCHIVE, 0));
    let (_, b) = n.query_information(o, fs::FileIdInformation, 24);
    assert_eq!(
        (u64_at(&b, 0), u64_at(&b, 8), u64_at(&b, 16)),
        (n.volume_serial(), id, 0)
    );
    let (_, b) = n.query_information(o, fs::FileStatInformation, 72);
    assert_eq!(
        (u64_at(&b, 0), u32_at(&b, 64), u32_at(&b, 68)),
        (id, 1, RW | DELETE)
    );
    let (s, b) = n.query_information(o, fs::FileStatLxInformation, 96);
    assert_eq!((s, b.len()), (STATUS_SUCCESS, 96));
    let (s, b) = n.query_information(o, FILE_STAT_BASIC_INFORMATION_CLASS, 104);
    assert_eq!(
        (s, u64_at(&b, 80), u64_at(&b, 88)),
        (STATUS_SUCCESS, n.volume_serial(), id)
    );
    let (_, b) = n.query_information(o, fs::FileEaInformation, 4);
    assert_eq!(b, vec![0; 4]);
    let (s, b) = n.query_information(o, fs::FileStreamInformation, 100);
    assert_eq!(s, STATUS_SUCCESS);
    assert_eq!((u32_at(&b, 0), u32_at(&b, 4), u64_at(&b, 8)), (0, 14, 5000));
    assert_eq!(&b[24..], &utf16("::$DATA")[..]);
    assert_eq!(
        n.query_information(o, 1000, 100).0,
        STATUS_INVALID_INFO_CLASS
    );
    assert_eq!(
        n.query_information(o, fs::FilePipeInformation, 100).0,
        STATUS_INVALID_PARAMETER
    );
}

#[test]
fn name_and_all_information_cut_the_name() {
    let mut n = vol();
    mkdir(&mut n, "\\dir");
    let (o, _) = mkfile(&mut n, "\\dir\\file.txt");
    let name = utf16("\\dir\\file.txt");
    let (s, b) = n.query_information(o, fs::FileNameInformation, 100);
    assert_eq!(
        (s, u32_at(&b, 0) as usize, &b[4..]),
        (STATUS_SUCCESS, name.len(), &name[..])
    );
    let (s, b) = n.query_information(o, fs::FileNameInformation, 10);
    assert_eq!(
        (s, u32_at(&b, 0) as usize, &b[4..]),
        (STATUS_BUFFER_OVERFLOW, name.len(), &name[..6])
    );
    assert_eq!(
        n.query_information(o, fs::FileNameInformation, 7).0,
        STATUS_INFO_LENGTH_MISMATCH
    );
    let (s, b) = n.query_information(o, fs::FileAllInformation, 200);
    assert_eq!(s, STATUS_SUCCESS);
    assert_eq!(b.len(), 100 + name.len());
    assert_eq!(u32_at(&b, 96) as usize, name.len());
    let (s, b) = n.query_information(o, fs::FileAllInformation, 104);
    assert_eq!((s, b.len()), (STATUS_BUFFER_OVERFLOW, 104));
    assert_eq!(&b[100..], &name[..4]);
    assert_eq!(
        n.query_information(o, fs::FileAllInformation, 103).0,
        STATUS_INFO_LENGTH_MISMATCH
    );
    let (root, _, _) = opened(create(&mut n, &req("\\", FILE_OPEN, 0)));
    let (_, b) = n.query_information(root, fs::FileNameInformation, 100);
    assert_eq!(&b[4..], &utf16("\\")[..]);
    let (_, b) = n.query_information(root, fs::FileBasicInformation, 40);
    assert_ne!(u32_at(&b, 32) & FILE_ATTRIBUTE_DIRECTORY, 0);
}

// ---- directory enumeration ----

/// (name, EaSize-or-tag field, attributes) of each entry, following NextEntryOffset.
fn entries(buf: &[u8], name_len_at: usize, name_at: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut at = 0;
    loop {
        assert_eq!(at % 8, 0, "entries are 8-byte aligned");
        let len = u32_at(buf, at + name_len_at) as usize;
        let units: Vec<u16> = buf[at + name_at..at + name_at + len]
            .chunks(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        out.push(String::from_utf16(&units).unwrap());
        let next = u32_at(buf, at) as usize;
        if next == 0 {
            assert_eq!(
                buf.len(),
                at + name_at + len,
                "Information ends at the last entry"
            );
            return out;
        }
        at += next;
    }
}

fn populated() -> (Ntfs, OpenId) {
    let mut n = vol();
    mkdir(&mut n, "\\d");
    for p in ["\\d\\b.txt", "\\d\\A.txt", "\\d\\c.dat", "\\d\\_x"] {
        let (o, _) = mkfile(&mut n, p);
        n.cleanup(o);
    }
    let (o, _, _) = opened(create(&mut n, &req("\\d", FILE_OPEN, FILE_DIRECTORY_FILE)));
    (n, o)
}

#[test]
fn enumeration_order_dots_and_restart() {
    let (n, o) = populated();
    let (s, b) = n.query_directory(o, fs::FileDirectoryInformation, None, false, false, 4096);
    assert_eq!(s, STATUS_SUCCESS);
    // Upcased collation: '_' (0x5F) sorts after letters.
    assert_eq!(
        entries(&b, 60, 64),
        [".", "..", "A.txt", "b.txt", "c.dat", "_x"]
    );
    assert_eq!(
        n.query_directory(o, fs::FileDirectoryInformation, None, false, false, 4096)
            .0,
        STATUS_NO_MORE_FILES
    );
    let (s, b) = n.query_directory(o, fs::FileNamesInformation, None, true, true, 4096);
    assert_eq!(
        (s, entries(&b, 8, 12)),
        (STATUS_SUCCESS, vec![".".to_string()])
    );
    let (_, b) = n.query_directory(o, fs::FileNamesInformation, None, false, true, 4096);
    assert_eq!(entries(&b, 8, 12), [".."]);
}

#[test]
fn root_has_no_dots() {
    let mut n = vol();
    mkfile(&mut n, "\\f");
    let (root, _, _) = opened(create(&mut n, &req("\\", FILE_OPEN, 0)));
    let (_, b) = n.query_directory(root, fs::FileNamesInformation, None, false, false, 4096);
    assert_eq!(entries(&b, 8, 12), ["f"]);
}

#[test]
fn pattern_is_fixed_by_the_first_query() {
    let (n, o) = populated();
    let (s, b) = n.query_directory(
        o,
        fs::FileNamesInformation,
        Some("*.TXT"),
        false,
        false,
        4096,
    );
    assert_eq!(
        (s, entries(&b, 8, 12)),
        (STATUS_SUCCESS, vec!["A.txt".to_string(), "b.txt".into()])
    );
    let (_, b) = n.query_directory(o, fs::FileNamesInformation, Some("*"), true, false, 4096);
    assert_eq!(
        entries(&b, 8, 12),
        ["A.txt", "b.txt"],
        "the new pattern is ignored"
    );
    let (n2, o2) = populated();
    let (s, _) = n2.query_directory(
        o2,
        fs::FileNamesInformation,
        Some("zz*"),
        false,
        false,
        4096,
    );
    assert_eq!(s, STATUS_NO_SUCH_FILE);
    assert_eq!(
        n2.query_directory(o2, fs::FileNamesInformation, None, false, false, 4096)
            .0,
        STATUS_NO_MORE_FILES
    );
    let (n3, o3) = populated();
    let (_, b) = n3.query_directory(
        o3,
        fs::FileNamesInformation,
        Some("<.dat"),
        false,
        false,
        4096,
    );
    assert_eq!(entries(&b, 8, 12), ["c.dat"]);
}

#[test]
fn small_buffers() {
    let (n, o) = populated();
    assert_eq!(
        n.query_directory(o, fs::FileBothDirectoryInformation, None, false, false, 93)
            .0,
        STATUS_INFO_LENGTH_MISMATCH
    );
    // Room for "." (94 + 2) and the fixed part of ".." only: one entry comes back.
    let (s, b) = n.query_directory(
        o,
        fs::FileBothDirectoryInformation,
        None,
        false,
        false,
        96 + 94,
    );
    assert_eq!(
        (s, entries(&b, 60, 94)),
        (STATUS_SUCCESS, vec![".".to_string()])
    );
    // The next entry is still there; then a first entry too long is cut.
    let (s, b) = n.query_directory(o, fs::FileBothDirectoryInformation, None, false, false, 97);
    assert_eq!(s, STATUS_BUFFER_OVERFLOW);
    assert_eq!((b.len(), u32_at(&b, 60)), (97, 4));
    let (_, b) = n.query_directory(o, fs::FileNamesInformation, None, false, true, 100);
    assert_eq!(entries(&b, 8, 12), ["A.txt"], "the cut entry was consumed");
    assert_eq!(
        n.query_directory(o, 99, None, false, false, 4096).0,
        STATUS_INVALID_INFO_CLASS
    );
    let mut m = vol();
    let (f, _) = mkfile(&mut m, "\\f");
    assert_eq!(
        m.query_directory(f, fs::FileNamesInformation, None, false, false, 4096)
            .0,
        STATUS_INVALID_PARAMETER
    );
}

#[test]
fn reparse_tag_in_ea_size_and_reparse_point_tag() {
    let mut n = vol();
    mkdir(&mut n, "\\d");
    let (p, pid) = mkfile(&mut n, "\\d\\p");
    set_reparse(&mut n, p, &guid_buffer(TAG_D, GUID, b"x"));
    n.write(p, 0, b"abc", T1).unwrap();
    let (o, _, _) = opened(create(&mut n, &req("\\d", FILE_OPEN, 0)));
    let (_, b) = n.query_directory(
        o,
        fs::FileIdExtdBothDirectoryInformation,
        Some("p"),
        false,
        false,
        4096,
    );
    assert_eq!(entries(&b, 60, 114), ["p"]);
    assert_eq!(
        u32_at(&b, 56),
        FILE_ATTRIBUTE_ARCHIVE | FILE_ATTRIBUTE_REPARSE_POINT
    );
    assert_eq!((u32_at(&b, 64), u32_at(&b, 68)), (TAG_D, TAG_D));
    assert_eq!((u64_at(&b, 72), u64_at(&b, 80)), (pid, 0));
    assert_eq!((u64_at(&b, 40), u64_at(&b, 48)), (3, CLUSTER));
    let (o2, _, _) = opened(create(&mut n, &req("\\d", FILE_OPEN, 0)));
    let (_, b) = n.query_directory(
        o2,
        FILE_ID_ALL_EXTD_BOTH_DIRECTORY_INFORMATION,
        Some("p"),
        false,
        false,
        4096,
    );
    assert_eq!(entries(&b, 60, 122), ["p"]);
    assert_eq!(
        (
            u32_at(&b, 64),
            u32_at(&b, 68),
            u64_at(&b, 72),
            u64_at(&b, 80)
        ),
        (TAG_D, TAG_D, pid, pid)
    );
    let (o3, _, _) = opened(create(&mut n, &req("\\d", FILE_OPEN, 0)));
    let (_, b) = n.query_directory(
        o3,
        fs::FileFullDirectoryInformation,
        None,
        false,
        false,
        4096,
    );
    assert_eq!(entries(&b, 60, 68), [".", "..", "p"]);
    // ".": the directory itself, attributes DIRECTORY; "..": the root.
    assert_eq!(u32_at(&b, 56), FILE_ATTRIBUTE_DIRECTORY);
}

#[test]
fn every_directory_class_enumerates() {
    let classes = [
        (fs::FileDirectoryInformation, 64),
        (fs::FileFullDirectoryInformation, 68),
        (fs::FileBothDirectoryInformation, 94),
        (fs::FileIdBothDirectoryInformation, 104),
        (fs::FileIdFullDirectoryInformation, 80),
        (fs::FileIdGlobalTxDirectoryInformation, 92),
        (fs::FileIdExtdDirectoryInformation, 88),
        (fs::FileIdExtdBothDirectoryInformation, 114),
        (78, 80),
        (79, 106),
        (80, 96),
        (81, 122),
    ];
    for (class, name_at) in classes {
        let (n, o) = populated();
        let (s, b) = n.query_directory(o, class, None, false, false, 4096);
        assert_eq!(s, STATUS_SUCCESS, "class {class}");
        assert_eq!(
            entries(&b, 60, name_at),
            [".", "..", "A.txt", "b.txt", "c.dat", "_x"],
            "class {class}"
        );
    }
}

#[test]
fn attributes_report_normal_when_none() {
    let mut n = vol();
    let (o, id) = mkfile(&mut n, "\\f");
    let mut basic = vec![0u8; 40];
    basic[32..36].copy_from_slice(&FILE_ATTRIBUTE_NORMAL.to_le_bytes());
    assert_eq!(
        n.set_information(o, fs::FileBasicInformation, &basic, T1),
        STATUS_SUCCESS
    );
    assert_eq!(n.node(id).unwrap().attributes, FILE_ATTRIBUTE_NORMAL);
}

/// FileStandardInformation's NumberOfLinks (offset 16).
fn links_of(n: &Ntfs, open: OpenId) -> u32 {
    let (status, b) = n.query_information(open, fs::FileStandardInformation, 24);
    assert_eq!(status, STATUS_SUCCESS);
    u32_at(&b, 16)
}

/// The names a listing of `dir` shows (without `.` and `..`).
fn listed(n: &mut Ntfs, dir: &'static str) -> Vec<String> {
    let (d, _, _) = opened(create(n, &req(dir, FILE_OPEN, FILE_DIRECTORY_FILE)));
    let (status, b) = n.query_directory(d, fs::FileNamesInformation, None, true, false, 4096);
    n.cleanup(d);
    assert_eq!(status, STATUS_SUCCESS);
    let mut names = Vec::new();
    let mut at = 0;
    loop {
        let len = u32_at(&b, at + 8) as usize;
        let units: Vec<u16> = b[at + 12..at + 12 + len]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        let name = String::from_utf16_lossy(&units);
        if name != "." && name != ".." {
            names.push(name);
        }
        let next = u32_at(&b, at) as usize;
        if next == 0 {
            break;
        }
        at += next;
    }
    names
}

#[test]
fn a_hard_link_is_a_second_name_of_the_same_file() {
    let mut n = vol();
    mkdir(&mut n, "\\d");
    let (o, id) = mkfile(&mut n, "\\d\\a");
    assert_eq!(n.write(o, 0, b"both names", T0), Ok(10));
    assert_eq!(n.link(o, "\\d\\Second", false, T1), STATUS_SUCCESS);
    assert_eq!(n.lookup("\\d\\second"), Some(id));
    assert_eq!(links_of(&n, o), 2);
    assert_eq!(listed(&mut n, "\\d"), ["a", "Second"]);
    assert_eq!(n.names_of(id), ["\\d\\a", "\\d\\Second"]);
    let (b, bid, _) = opened(create(&mut n, &req("\\d\\SECOND", FILE_OPEN, 0)));
    assert_eq!(bid, id);
    assert_eq!(n.read(b, 0, 10).unwrap(), b"both names");
    // An open reports the name it came through, as the directory holds it.
    assert_eq!(n.path_of_open(b).as_deref(), Some("\\d\\Second"));
    assert_eq!(n.path_of_open(o).as_deref(), Some("\\d\\a"));
    assert_eq!(n.normalize("\\D\\SECOND").as_deref(), Some("\\d\\Second"));
    n.cleanup(o);
    n.cleanup(b);
}

#[test]
fn deleting_one_name_keeps_the_file_under_the_others() {
    let mut n = vol();
    let (o, id) = mkfile(&mut n, "\\a");
    assert_eq!(n.link(o, "\\b", false, T1), STATUS_SUCCESS);
    n.cleanup(o);
    let (a, _, _) = opened(create(&mut n, &req("\\a", FILE_OPEN, 0)));
    assert_eq!(
        n.set_information(a, fs::FileDispositionInformation, &[1], T1),
        STATUS_SUCCESS
    );
    // The other name still opens while the delete of this one is pending.
    let (b, _, _) = opened(create(&mut n, &req("\\b", FILE_OPEN, 0)));
    assert_eq!(
        err(create(&mut n, &req("\\a", FILE_OPEN, 0))),
        STATUS_DELETE_PENDING
    );
    n.cleanup(a);
    n.cleanup(b);
    assert_eq!(n.lookup("\\a"), None);
    assert_eq!(n.lookup("\\b"), Some(id));
    assert!(!n.node(id).unwrap().delete_pending);
    // The last name takes the file with it.
    let (b, _, _) = opened(create(&mut n, &req("\\b", FILE_OPEN, FILE_DELETE_ON_CLOSE)));
    assert_eq!(links_of(&n, b), 1);
    n.cleanup(b);
    assert!(n.node(id).is_none());
}

#[test]
fn a_posix_delete_of_one_name_removes_it_at_once() {
    let mut n = vol();
    let (o, id) = mkfile(&mut n, "\\a");
    assert_eq!(n.link(o, "\\b", false, T1), STATUS_SUCCESS);
    let flags = FILE_DISPOSITION_DELETE | FILE_DISPOSITION_POSIX_SEMANTICS;
    assert_eq!(
        n.set_information(
            o,
            fs::FileDispositionInformationEx,
            &flags.to_le_bytes(),
            T1
        ),
        STATUS_SUCCESS
    );
    assert_eq!(n.lookup("\\a"), None);
    assert_eq!(n.lookup("\\b"), Some(id));
    assert!(!n.node(id).unwrap().delete_pending);
    // The open lost its name: it can no longer rename.
    assert_eq!(n.rename(o, "\\c", false, T1), STATUS_INVALID_PARAMETER);
    n.cleanup(o);
    assert_eq!(n.lookup("\\b"), Some(id));
}

#[test]
fn link_rules() {
    let mut n = vol();
    let (d, _) = mkdir(&mut n, "\\d");
    assert_eq!(n.link(d, "\\e", false, T1), STATUS_FILE_IS_A_DIRECTORY);
    let (o, id) = mkfile(&mut n, "\\a");
    let (x, xid) = mkfile(&mut n, "\\x");
    assert_eq!(
        n.link(o, "\\missing\\b", false, T1),
        STATUS_OBJECT_PATH_NOT_FOUND
    );
    assert_eq!(n.link(o, "\\x", false, T1), STATUS_OBJECT_NAME_COLLISION);
    assert_eq!(n.link(o, "\\A", true, T1), STATUS_OBJECT_NAME_COLLISION);
    // Replacing an open file is refused; once closed it goes.
    assert_eq!(n.link(o, "\\x", true, T1), STATUS_ACCESS_DENIED);
    n.cleanup(x);
    assert_eq!(n.link(o, "\\x", true, T1), STATUS_SUCCESS);
    assert!(n.node(xid).is_none());
    assert_eq!(n.lookup("\\x"), Some(id));
    // Renaming one name moves that name only.
    let (b, _, _) = opened(create(&mut n, &req("\\x", FILE_OPEN, 0)));
    assert_eq!(n.rename(b, "\\d\\moved", false, T1), STATUS_SUCCESS);
    assert_eq!(n.lookup("\\x"), None);
    assert_eq!(n.lookup("\\a"), Some(id));
    assert_eq!(n.lookup("\\d\\moved"), Some(id));
    assert_eq!(n.path_of_open(b).as_deref(), Some("\\d\\moved"));
    // A file being deleted gains no name.
    assert_eq!(
        n.set_information(o, fs::FileDispositionInformation, &[1], T1),
        STATUS_SUCCESS
    );
    assert_eq!(n.link(b, "\\c", false, T1), STATUS_DELETE_PENDING);
    n.cleanup(b);
    n.cleanup(d);
    n.cleanup(o);
    assert_eq!(n.lookup("\\a"), None);
    assert_eq!(n.lookup("\\d\\moved"), Some(id));
}
