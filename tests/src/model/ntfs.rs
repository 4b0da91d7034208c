//! NTFS as the file system below every filter: one `Ntfs` per mounted volume.
//!
//! Owns: the directory tree, each file's data (sparse: only written clusters are
//! allocated), sizes, attributes, timestamps, file ids, reparse points, delete-pending
//! state, and the byte-exact x64 encodings of what NTFS returns for query-information,
//! directory enumeration and the reparse-point FSCTLs.
//!
//! Pure Rust with no FFI and no knowledge of filters: the FltMgr dispatcher in
//! `io.rs` calls it with parameters it took from the callback data and copies the
//! bytes it returns into the caller's buffer. It never implements a cloudflt behaviour:
//! a file with cloudflt's reparse point is, to NTFS, a file with a reparse point.
//!
//! Paths are volume-relative NT paths: `\` is the root, `\dir\file.txt` a file. Names
//! compare case-insensitively (Unicode simple upper-case) and keep their case.

use windows_sys::Win32::Foundation::NTSTATUS;

/// An NTFS file reference number (the 64-bit file id of FileInternalInformation).
pub type FileId = u64;

/// One open of a file (the file system's CCB): what IRP_MJ_CREATE made and
/// IRP_MJ_CLEANUP ends. Per-open state (granted access, share access, delete on close,
/// directory cursor) hangs off it.
pub type OpenId = u64;

/// The file id of the root directory (NTFS's MFT record 5, sequence 5).
pub const ROOT_ID: FileId = 0x0005_0000_0000_0005;

/// What IRP_MJ_CREATE asks of the file system.
#[derive(Debug, Clone, Copy)]
pub struct CreateRequest<'a> {
    /// Volume-relative path.
    pub path: &'a str,
    /// `FILE_SUPERSEDE` ..= `FILE_OVERWRITE_IF`.
    pub disposition: u32,
    /// `FILE_*` create options (low 24 bits of Parameters.Create.Options).
    pub options: u32,
    /// Desired access mask (generic rights already mapped to file rights).
    pub desired_access: u32,
    /// `FILE_SHARE_*`.
    pub share_access: u32,
    /// The open-reparse list FltMgr passes in the ECP (FltAddOpenReparseEntry): final
    /// reparse points with these tags open directly instead of STATUS_REPARSE.
    pub open_reparse: &'a [OpenReparseEntry],
    /// Attributes for a file it creates (`FILE_ATTRIBUTE_*`).
    pub attributes: u32,
    /// Creation time for a file it creates (100 ns since 1601, UTC).
    pub now: i64,
}

/// One OPEN_REPARSE_LIST_ENTRY.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenReparseEntry {
    /// The tag this entry opens.
    pub tag: u32,
    /// `OPEN_REPARSE_POINT_*` flags.
    pub flags: u32,
    /// For non-Microsoft tags, the GUID the reparse point must carry.
    pub guid: Option<[u8; 16]>,
}

/// What a create did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CreateOutcome {
    /// The file is open: `information` is FILE_OPENED / FILE_CREATED / FILE_OVERWRITTEN /
    /// FILE_SUPERSEDED, as IoStatus.Information.
    Opened {
        /// The new open.
        open: OpenId,
        /// The opened file.
        id: FileId,
        /// IoStatus.Information.
        information: usize,
    },
    /// STATUS_REPARSE: the path reached a reparse point and the caller did not ask for
    /// FILE_OPEN_REPARSE_POINT (on the last component). IoStatus.Information is the tag;
    /// `buffer` is the reparse data as stored (what FltMgr puts in TagData).
    Reparse {
        /// The reparse tag.
        tag: u32,
        /// The stored REPARSE_DATA_BUFFER / REPARSE_GUID_DATA_BUFFER bytes.
        buffer: Vec<u8>,
        /// Bytes of the path (UTF-16 bytes) not yet parsed after the reparse point.
        remaining: usize,
    },
}

/// Where a directory enumeration stands on one handle (the CCB's cursor).
#[derive(Debug, Clone, Default)]
pub struct DirCursor {
    /// The pattern fixed by the first query on the handle (None until then).
    pub pattern: Option<String>,
    /// Upper-cased name of the last entry returned (`.` and `..` included).
    pub last: Option<String>,
    /// Whether the enumeration has returned its last entry.
    pub done: bool,
}

/// One file or directory, as the ground truth the `state` step reads.
#[derive(Debug, Clone)]
pub struct Node {
    /// File id.
    pub id: FileId,
    /// Parent directory id (the root is its own parent).
    pub parent: FileId,
    /// Name as created (empty for the root).
    pub name: String,
    /// Whether it is a directory.
    pub directory: bool,
    /// `FILE_ATTRIBUTE_*` as NTFS reports them (DIRECTORY, REPARSE_POINT, SPARSE_FILE
    /// derived from state; ARCHIVE, READONLY, HIDDEN, SYSTEM, OFFLINE, PINNED, UNPINNED,
    /// RECALL_ON_OPEN, RECALL_ON_DATA_ACCESS, NOT_CONTENT_INDEXED as set).
    pub attributes: u32,
    /// Creation, last access, last write, change time (100 ns since 1601).
    pub times: [i64; 4],
    /// End of file.
    pub size: u64,
    /// Allocated bytes (clusters that hold data, 4 KiB each).
    pub allocation: u64,
    /// The reparse point as stored, if any.
    pub reparse: Option<Vec<u8>>,
    /// Delete pending (FileDisposition or delete-on-close seen).
    pub delete_pending: bool,
}

/// One NTFS volume's contents.
#[derive(Debug)]
pub struct Ntfs {
    _todo: (),
}

impl Ntfs {
    /// An empty volume (root directory only) with this sector size.
    pub fn new(sector_size: u32, now: i64) -> Self {
        let _ = (sector_size, now);
        unimplemented!("ntfs model")
    }

    /// IRP_MJ_CREATE on the file system: parses `req.path` from the root, honours
    /// disposition and options (DIRECTORY_FILE / NON_DIRECTORY_FILE / OPEN_REPARSE_POINT /
    /// DELETE_ON_CLOSE), stops at reparse points with STATUS_REPARSE (the outcome's
    /// `Reparse`), creates files and directories. Each successful open counts as an open
    /// handle on the file until [`Ntfs::cleanup`].
    pub fn create(&mut self, req: &CreateRequest<'_>) -> Result<CreateOutcome, NTSTATUS> {
        let _ = req;
        unimplemented!()
    }

    /// IRP_MJ_CLEANUP for one open: releases its share access; the last open of a
    /// delete-pending file deletes it.
    pub fn cleanup(&mut self, open: OpenId) {
        let _ = open;
        unimplemented!()
    }

    /// Reads `length` bytes at `offset`: STATUS_END_OF_FILE at or past end of file, short
    /// at the end; unallocated ranges read as zeros; a directory is
    /// STATUS_INVALID_DEVICE_REQUEST.
    pub fn read(&self, open: OpenId, offset: u64, length: usize) -> Result<Vec<u8>, NTSTATUS> {
        let _ = (open, offset, length);
        unimplemented!()
    }

    /// Writes `data` at `offset`, extending end of file, allocating the clusters it
    /// touches, updating last-write and change time and setting ARCHIVE.
    /// Returns bytes written.
    pub fn write(
        &mut self,
        open: OpenId,
        offset: u64,
        data: &[u8],
        now: i64,
    ) -> Result<usize, NTSTATUS> {
        let _ = (open, offset, data, now);
        unimplemented!()
    }

    /// IRP_MJ_QUERY_INFORMATION: the status and the bytes NTFS writes into a buffer of
    /// `buffer_len` bytes (their length is IoStatus.Information).
    pub fn query_information(
        &self,
        open: OpenId,
        class: i32,
        buffer_len: usize,
    ) -> (NTSTATUS, Vec<u8>) {
        let _ = (open, class, buffer_len);
        unimplemented!()
    }

    /// IRP_MJ_SET_INFORMATION for FileBasic, FileEndOfFile, FileAllocation,
    /// FileDisposition(Ex): the input buffer as the caller passed it.
    pub fn set_information(
        &mut self,
        open: OpenId,
        class: i32,
        input: &[u8],
        now: i64,
    ) -> NTSTATUS {
        let _ = (open, class, input, now);
        unimplemented!()
    }

    /// FileRenameInformation resolved by the I/O manager: moves `id` to `new_path`.
    pub fn rename(
        &mut self,
        open: OpenId,
        new_path: &str,
        replace_if_exists: bool,
        now: i64,
    ) -> NTSTATUS {
        let _ = (open, new_path, replace_if_exists, now);
        unimplemented!()
    }

    /// IRP_MJ_DIRECTORY_CONTROL / IRP_MN_QUERY_DIRECTORY on directory `dir`.
    pub fn query_directory(
        &self,
        open: OpenId,
        class: i32,
        pattern: Option<&str>,
        restart: bool,
        single: bool,
        buffer_len: usize,
    ) -> (NTSTATUS, Vec<u8>) {
        let _ = (open, class, pattern, restart, single, buffer_len);
        unimplemented!()
    }

    /// IRP_MJ_FILE_SYSTEM_CONTROL: FSCTL_GET/SET/DELETE_REPARSE_POINT(_EX),
    /// FSCTL_SET_SPARSE, FSCTL_SET_ZERO_DATA, FSCTL_QUERY_ALLOCATED_RANGES; anything else
    /// STATUS_INVALID_DEVICE_REQUEST. Returns the status and output bytes.
    pub fn fsctl(
        &mut self,
        open: OpenId,
        code: u32,
        input: &[u8],
        output_len: usize,
        now: i64,
    ) -> (NTSTATUS, Vec<u8>) {
        let _ = (open, code, input, output_len, now);
        unimplemented!()
    }

    /// The file at `path`, without following reparse points (ground truth).
    pub fn lookup(&self, path: &str) -> Option<FileId> {
        let _ = path;
        unimplemented!()
    }

    /// The file an open refers to.
    pub fn file_of(&self, open: OpenId) -> Option<FileId> {
        let _ = open;
        unimplemented!()
    }

    /// The node with this id.
    pub fn node(&self, id: FileId) -> Option<Node> {
        let _ = id;
        unimplemented!()
    }

    /// Allocated ranges of a file as `(offset, length)`, merged, cluster granular.
    pub fn allocated_ranges(&self, id: FileId) -> Vec<(u64, u64)> {
        let _ = id;
        unimplemented!()
    }

    /// The volume-relative path of `id` (as FltGetFileNameInformation normalizes it).
    pub fn path_of(&self, id: FileId) -> Option<String> {
        let _ = id;
        unimplemented!()
    }
}
