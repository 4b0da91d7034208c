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
//! compare case-insensitively (Unicode simple upper-case) and keep their case. A create
//! with FILE_OPEN_BY_FILE_ID names its file by file id instead (`Ntfs::open_by_id`).
//!
//! Split by concern: `pattern` (legal names, upcase, wildcard match), `reparse` (reparse
//! buffer formats and the checks that need only the input), `layout` (the byte
//! encodings, with their layout tests), `dir` (enumeration); this file holds the tree,
//! the opens and everything that changes them. Where documentation is silent the
//! comment says "inference".

mod dir;
mod layout;
mod pattern;
mod reparse;
pub mod usn;

use crate::model::fast::HashMap;
use std::cell::RefCell;
use std::collections::BTreeMap;

use windows_sys::Wdk::Storage::FileSystem::{
    self as fs, FILE_CREATE, FILE_DELETE_ON_CLOSE, FILE_DIRECTORY_FILE, FILE_DISPOSITION_DELETE,
    FILE_DISPOSITION_IGNORE_READONLY_ATTRIBUTE, FILE_DISPOSITION_ON_CLOSE,
    FILE_DISPOSITION_POSIX_SEMANTICS, FILE_NON_DIRECTORY_FILE, FILE_OPEN, FILE_OPEN_BY_FILE_ID,
    FILE_OPEN_IF, FILE_OPEN_REPARSE_POINT, FILE_OVERWRITE, FILE_OVERWRITE_IF, FILE_SUPERSEDE,
    OPEN_REPARSE_POINT_OVERRIDE_CREATE_OPTION, OPEN_REPARSE_POINT_REPARSE_IF_CHILD_EXISTS,
    OPEN_REPARSE_POINT_REPARSE_IF_CHILD_NOT_EXISTS,
    OPEN_REPARSE_POINT_REPARSE_IF_DIRECTORY_FINAL_COMPONENT,
    OPEN_REPARSE_POINT_REPARSE_IF_NON_DIRECTORY_FINAL_COMPONENT,
    OPEN_REPARSE_POINT_REPARSE_IF_NON_DIRECTORY_NON_FINAL_COMPONENT,
    REPARSE_DATA_EX_FLAG_GIVEN_TAG_OR_NONE,
};
use windows_sys::Wdk::System::SystemServices::FILE_ATTRIBUTE_VALID_KERNEL_SET_FLAGS;
use windows_sys::Win32::Foundation::{
    NTSTATUS, STATUS_ACCESS_DENIED, STATUS_BUFFER_OVERFLOW, STATUS_BUFFER_TOO_SMALL,
    STATUS_CANNOT_DELETE, STATUS_DELETE_PENDING, STATUS_DIRECTORY_IS_A_REPARSE_POINT,
    STATUS_DIRECTORY_NOT_EMPTY, STATUS_END_OF_FILE, STATUS_FILE_IS_A_DIRECTORY,
    STATUS_INFO_LENGTH_MISMATCH, STATUS_INVALID_DEVICE_REQUEST, STATUS_INVALID_INFO_CLASS,
    STATUS_INVALID_PARAMETER, STATUS_IO_REPARSE_TAG_MISMATCH, STATUS_NOT_A_DIRECTORY,
    STATUS_NOT_A_REPARSE_POINT, STATUS_NOT_IMPLEMENTED, STATUS_OBJECT_NAME_COLLISION,
    STATUS_OBJECT_NAME_INVALID, STATUS_OBJECT_NAME_NOT_FOUND, STATUS_OBJECT_PATH_NOT_FOUND,
    STATUS_REPARSE_ATTRIBUTE_CONFLICT, STATUS_SHARING_VIOLATION, STATUS_SUCCESS,
    STATUS_TOO_MANY_LINKS,
};
use windows_sys::Win32::Storage::FileSystem::{
    DELETE, FILE_APPEND_DATA, FILE_ATTRIBUTE_ARCHIVE, FILE_ATTRIBUTE_DIRECTORY,
    FILE_ATTRIBUTE_HIDDEN, FILE_ATTRIBUTE_NORMAL, FILE_ATTRIBUTE_READONLY,
    FILE_ATTRIBUTE_RECALL_ON_OPEN, FILE_ATTRIBUTE_REPARSE_POINT, FILE_ATTRIBUTE_SPARSE_FILE,
    FILE_ATTRIBUTE_SYSTEM, FILE_ATTRIBUTE_TEMPORARY, FILE_EXECUTE, FILE_READ_DATA,
    FILE_SHARE_DELETE, FILE_SHARE_READ, FILE_SHARE_WRITE, FILE_WRITE_DATA,
};
use windows_sys::Win32::System::Ioctl::{
    FSCTL_DELETE_REPARSE_POINT, FSCTL_GET_REPARSE_POINT, FSCTL_QUERY_ALLOCATED_RANGES,
    FSCTL_SET_REPARSE_POINT, FSCTL_SET_REPARSE_POINT_EX, FSCTL_SET_SPARSE, FSCTL_SET_ZERO_DATA,
};

use layout::Meta;
pub use layout::{
    FILE_ID_64_EXTD_BOTH_DIRECTORY_INFORMATION, FILE_ID_64_EXTD_DIRECTORY_INFORMATION,
    FILE_ID_ALL_EXTD_BOTH_DIRECTORY_INFORMATION, FILE_ID_ALL_EXTD_DIRECTORY_INFORMATION,
    FILE_STAT_BASIC_INFORMATION_CLASS,
};

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
    /// The open-reparse list FltMgr passes in the ECP (FltAddOpenReparseEntry): reparse
    /// points with these tags open (or are walked through) instead of STATUS_REPARSE,
    /// except where the entry's `OPEN_REPARSE_POINT_REPARSE_IF_*` flags say otherwise.
    pub open_reparse: &'a [OpenReparseEntry],
    /// Attributes for a file it creates (`FILE_ATTRIBUTE_*`).
    pub attributes: u32,
    /// Creation time for a file it creates (100 ns since 1601, UTC).
    pub now: i64,
    /// With FILE_OPEN_BY_FILE_ID in `options`: the bytes of the file name, which hold a
    /// binary file reference rather than text (`path` is then not read). Ignored
    /// otherwise.
    pub id_name: &'a [u8],
}

/// One OPEN_REPARSE_LIST_ENTRY.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenReparseEntry {
    /// The tag this entry opens.
    pub tag: u32,
    /// `OPEN_REPARSE_POINT_*` flags.
    pub flags: u32,
    /// For non-Microsoft tags, the GUID the reparse point must carry (None: any GUID,
    /// a model convenience; the real entry always carries one).
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
    /// Delete pending (FileDisposition set, or an open with delete-on-close that will
    /// set it at its cleanup).
    pub delete_pending: bool,
}

/// The part of a file's DACL the model keeps: who may write it (FILE_WRITE_DATA /
/// FILE_ADD_FILE, WRITE_DAC). Everyone may read. What the scenario format fixes: a file
/// that exists at boot or that an elevated process (or SYSTEM) created is writable by
/// SYSTEM and Administrators only; one a standard user created is writable by that user
/// too (the inherited CREATOR OWNER grant). There is one standard user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writers {
    /// SYSTEM and Administrators.
    Administrators,
    /// The standard user, SYSTEM and Administrators.
    StandardUser,
}

/// IoStatus.Information after a successful create (wdm.h; windows-sys has them only
/// under a feature this crate does not enable).
const FILE_SUPERSEDED: u32 = 0;
const FILE_OPENED: u32 = 1;
const FILE_CREATED: u32 = 2;
const FILE_OVERWRITTEN: u32 = 3;

/// NTFS's cluster size on the volumes the model mounts (the default for volumes up to
/// 16 TB): the unit of allocation, of sparse deallocation and of allocated ranges.
pub const CLUSTER: u64 = 4096;

/// The first MFT record a user file gets: 0..=15 are NTFS's metadata files and 16..=23
/// reserved, so the first user files land a little above.
const FIRST_USER_RECORD: u64 = 0x40;

/// Open ids start here, far from handles and file ids, so a mix-up fails loudly.
const FIRST_OPEN: OpenId = 0x0CCB_0000_0001;

/// The attribute bits a caller may store with FileBasicInformation or at create: the
/// kernel-mode set (a filter's FltSetInformationFile is kernel mode), plus
/// RECALL_ON_OPEN, which only kernel components set. DIRECTORY, SPARSE_FILE and
/// REPARSE_POINT follow from the file's state and NORMAL means "none".
const SETTABLE_ATTRIBUTES: u32 = (FILE_ATTRIBUTE_VALID_KERNEL_SET_FLAGS
    | FILE_ATTRIBUTE_RECALL_ON_OPEN)
    & !(FILE_ATTRIBUTE_NORMAL | FILE_ATTRIBUTE_DIRECTORY | FILE_ATTRIBUTE_SPARSE_FILE);

/// FileMaximumInformation in the 26100 WDK: classes at or past it are refused by the I/O
/// manager with STATUS_INVALID_INFO_CLASS before any file system sees them.
const FILE_MAXIMUM_INFORMATION: i32 = 84;

/// One file or directory (the FCB and its on-disk record).
#[derive(Debug)]
struct File {
    id: FileId,
    /// Its names, in the order they were made (the first is the one FileNameInformation
    /// of an open by id reports). A directory has one; a file has one per hard link;
    /// none once a POSIX-semantics delete removed the last while opens remain. The root
    /// has none (it is nobody's child).
    names: Vec<Link>,
    directory: bool,
    /// Stored attribute bits (SETTABLE_ATTRIBUTES only).
    attributes: u32,
    sparse: bool,
    times: [i64; 4],
    size: u64,
    /// Allocation asked for with FileAllocationInformation (non-sparse files).
    reserved: u64,
    /// Cluster index -> CLUSTER bytes. Only written clusters exist; on a non-sparse
    /// file the rest still counts as allocated and reads as zeros.
    clusters: BTreeMap<u64, Vec<u8>>,
    reparse: Option<Vec<u8>>,
    delete_pending: bool,
    /// The name a pending delete removes (the one the deleting open came through): with
    /// other names left the file stays, reachable through them.
    delete_link: Option<Link>,
    /// Upcased name -> child.
    children: BTreeMap<Vec<u16>, FileId>,
    /// The USN of the file's newest change-journal record (0: none yet), kept in its
    /// $STANDARD_INFORMATION; what FSCTL_READ_FILE_USN_DATA returns.
    usn: i64,
    /// `USN_REASON_*` accumulated since the file's last close record (see `usn`).
    reasons: u32,
    /// Who its DACL lets write it (see [`Writers`]).
    writers: Writers,
}

impl File {
    /// The directory of its first name (ROOT_ID for the root and for a file with no
    /// name left).
    fn parent(&self) -> FileId {
        self.names.first().map_or(ROOT_ID, |l| l.parent)
    }

    /// Its first name (empty for the root and for a file with no name left).
    fn first_name(&self) -> &str {
        self.names.first().map_or("", |l| l.name.as_str())
    }

    fn linked(&self) -> bool {
        !self.names.is_empty()
    }

    fn has_name(&self, link: &Link) -> bool {
        self.names.iter().any(|l| l.is(link))
    }
}

/// One name of a file: an entry of directory `parent` (NTFS's $FILE_NAME attribute and
/// its index entry).
#[derive(Debug, Clone)]
struct Link {
    parent: FileId,
    /// As created (case kept).
    name: String,
}

impl Link {
    fn key(&self) -> Vec<u16> {
        pattern::key(&self.name)
    }

    /// The same directory entry (names compare case-insensitively).
    fn is(&self, other: &Link) -> bool {
        self.parent == other.parent && self.key() == other.key()
    }
}

/// NTFS's limit on the names of one file (FileLinkInformation past it is
/// STATUS_TOO_MANY_LINKS).
const MAX_LINKS: usize = 1024;

/// One open (the CCB).
#[derive(Debug)]
struct Open {
    file: FileId,
    /// The name it came through (None for an open by id, and for the root): the name a
    /// rename moves, a delete removes and FltMgr reports for it.
    link: Option<Link>,
    access: u32,
    share: u32,
    delete_on_close: bool,
    /// Opened with FILE_OPEN_BY_FILE_ID: the open came through no name, so it can neither
    /// rename nor delete the file (see [`Ntfs::open_by_id`]).
    by_id: bool,
    /// Times this handle no longer updates by itself (set explicitly, or -1 given):
    /// creation, last access, last write, change.
    frozen: [bool; 4],
}

const WRITE_TIME: usize = 2;
const CHANGE_TIME: usize = 3;

/// One NTFS volume's contents.
///
/// What it does not model: named streams, short (8.3) names, extended
/// attributes, security descriptors and access checks (the I/O manager and FltMgr
/// check granted access; [`Ntfs::granted_access`] gives the dispatcher what to check
/// against), transactions, byte-range locks, oplocks, and of the USN change journal
/// everything but each file's current USN (see `usn`): the journal's records are
/// counted, not kept, so FSCTL_READ_USN_JOURNAL and FSCTL_QUERY_USN_JOURNAL are not
/// answered.
#[derive(Debug)]
pub struct Ntfs {
    files: BTreeMap<FileId, File>,
    opens: BTreeMap<OpenId, Open>,
    /// Directory enumeration state per open. Behind a RefCell because the query is
    /// `&self` in the dispatcher's interface, yet moves the CCB's cursor.
    cursors: RefCell<HashMap<OpenId, dir::Cursor>>,
    next_record: u64,
    next_open: OpenId,
    sector_size: u32,
    volume_serial: u64,
    /// The change journal's last USN (MS-FSA Volume.LastUsn): each record written adds
    /// its length, so USNs grow with every record on the volume.
    last_usn: i64,
    /// Reparse points set (FSCTL_SET_REPARSE_POINT(_EX) that succeeded): each a journaled
    /// metadata update on real NTFS, which the benchmarks count.
    reparse_writes: u64,
}

fn round_up(n: u64) -> u64 {
    n.div_ceil(CLUSTER) * CLUSTER
}

/// Splits a volume-relative path into its components. A trailing `\` is allowed (it
/// then must name a directory): the flag says whether there was one.
fn split_path(path: &str) -> Result<(Vec<&str>, bool), NTSTATUS> {
    let rest = path.strip_prefix('\\').ok_or(STATUS_OBJECT_NAME_INVALID)?;
    if rest.is_empty() {
        return Ok((Vec::new(), false));
    }
    let (rest, trailing) = match rest.strip_suffix('\\') {
        Some(r) => (r, true),
        None => (rest, false),
    };
    let parts: Vec<&str> = rest.split('\\').collect();
    if parts.iter().any(|p| !pattern::valid_component(p)) {
        return Err(STATUS_OBJECT_NAME_INVALID);
    }
    Ok((parts, trailing))
}

/// UTF-16 bytes of `path` after its first `n` components (the part left unparsed
/// when the `n`th component reparses).
fn remaining_after(path: &str, n: usize) -> usize {
    let mut seen = 0;
    for (i, c) in path.char_indices().skip(1) {
        if c == '\\' {
            seen += 1;
            if seen == n {
                return path[i..].encode_utf16().count() * 2;
            }
        }
    }
    0
}

impl Ntfs {
    /// An empty volume (root directory only) with this sector size.
    /// Reparse points set on the volume since it was formatted.
    pub fn reparse_writes(&self) -> u64 {
        self.reparse_writes
    }

    pub fn new(sector_size: u32, now: i64) -> Self {
        let root = File {
            id: ROOT_ID,
            names: Vec::new(),
            directory: true,
            // The root of a formatted NTFS volume is hidden and system.
            attributes: FILE_ATTRIBUTE_HIDDEN | FILE_ATTRIBUTE_SYSTEM,
            sparse: false,
            times: [now; 4],
            size: 0,
            reserved: 0,
            clusters: BTreeMap::new(),
            reparse: None,
            delete_pending: false,
            delete_link: None,
            children: BTreeMap::new(),
            usn: 0,
            reasons: 0,
            writers: Writers::Administrators,
        };
        Self {
            files: BTreeMap::from([(ROOT_ID, root)]),
            opens: BTreeMap::new(),
            cursors: RefCell::new(HashMap::default()),
            next_record: FIRST_USER_RECORD,
            next_open: FIRST_OPEN,
            sector_size,
            // Format stamps a serial from the clock; derive it from `now` so a run is
            // reproducible.
            volume_serial: (now as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            // A journal that has been running since setup: its USNs are far from zero,
            // so a USN of 0 (a file with no record) never looks like a real one.
            last_usn: usn::FIRST_USN,
            reparse_writes: 0,
        }
    }

    /// Bytes per sector, as given at mount.
    pub fn sector_size(&self) -> u32 {
        self.sector_size
    }

    /// The 64-bit volume serial number (FileIdInformation, FileStatBasicInformation;
    /// FILE_FS_VOLUME_INFORMATION reports its low 32 bits).
    pub fn volume_serial(&self) -> u64 {
        self.volume_serial
    }

    /// Access granted to an open (what the dispatcher checks an operation against).
    pub fn granted_access(&self, open: OpenId) -> Option<u32> {
        self.opens.get(&open).map(|o| o.access)
    }

    /// Opens still not cleaned up on `id`.
    pub fn open_count(&self, id: FileId) -> usize {
        self.opens.values().filter(|o| o.file == id).count()
    }

    fn file(&self, id: FileId) -> &File {
        &self.files[&id]
    }

    fn file_mut(&mut self, id: FileId) -> &mut File {
        self.files.get_mut(&id).expect("file of a live id")
    }

    fn meta(&self, f: &File) -> Meta {
        let mut attributes = f.attributes;
        if f.directory {
            attributes |= FILE_ATTRIBUTE_DIRECTORY;
        }
        if f.sparse {
            attributes |= FILE_ATTRIBUTE_SPARSE_FILE;
        }
        if f.reparse.is_some() {
            attributes |= FILE_ATTRIBUTE_REPARSE_POINT;
        }
        if attributes == 0 {
            attributes = FILE_ATTRIBUTE_NORMAL;
        }
        Meta {
            id: f.id,
            times: f.times,
            size: if f.directory { 0 } else { f.size },
            allocation: Self::allocation(f),
            attributes,
            tag: f.reparse.as_deref().map_or(0, reparse::tag_of),
            directory: f.directory,
            delete_pending: f.delete_pending,
            // A file a POSIX delete unlinked still counts the name it had (inference).
            links: f.names.len().max(1) as u32,
        }
    }

    fn allocation(f: &File) -> u64 {
        if f.directory {
            0
        } else if f.sparse {
            f.clusters.len() as u64 * CLUSTER
        } else {
            round_up(f.size).max(f.reserved)
        }
    }

    /// IRP_MJ_CREATE on the file system: parses `req.path` from the root, honours
    /// disposition and options (DIRECTORY_FILE / NON_DIRECTORY_FILE / OPEN_REPARSE_POINT /
    /// DELETE_ON_CLOSE), stops at reparse points with STATUS_REPARSE (the outcome's
    /// `Reparse`), creates files and directories. Each successful open counts as an open
    /// handle on the file until [`Ntfs::cleanup`].
    pub fn create(&mut self, req: &CreateRequest<'_>) -> Result<CreateOutcome, NTSTATUS> {
        self.create_noting_encounters(req, &mut Vec::new())
    }

    /// [`Ntfs::create`], noting in `encountered` the index in `req.open_reparse` of each
    /// entry a reparse point met on the path matched (its tag, and its GUID for a
    /// non-Microsoft tag), whether the open then went through the reparse point or
    /// stopped at it: the entries NTFS marks OPEN_REPARSE_POINT_TAG_ENCOUNTERED.
    pub fn create_noting_encounters(
        &mut self,
        req: &CreateRequest<'_>,
        encountered: &mut Vec<usize>,
    ) -> Result<CreateOutcome, NTSTATUS> {
        let want_dir = req.options & FILE_DIRECTORY_FILE != 0;
        let want_file = req.options & FILE_NON_DIRECTORY_FILE != 0;
        let disposition = req.disposition;
        // The I/O manager's parameter checks, kept here so a direct caller meets them.
        if disposition > FILE_OVERWRITE_IF
            || (want_dir && want_file)
            || (want_dir && ![FILE_CREATE, FILE_OPEN, FILE_OPEN_IF].contains(&disposition))
            || (req.options & FILE_DELETE_ON_CLOSE != 0 && req.desired_access & DELETE == 0)
        {
            return Err(STATUS_INVALID_PARAMETER);
        }
        if req.options & FILE_OPEN_BY_FILE_ID != 0 {
            return self.open_by_id(req, encountered);
        }
        let (parts, trailing) = split_path(req.path)?;
        let mut current = ROOT_ID;
        let mut link = None;
        for (i, part) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            let Some(&child) = self.file(current).children.get(&pattern::key(part)) else {
                if last {
                    return self.create_new(current, part, trailing, req);
                }
                return Err(STATUS_OBJECT_PATH_NOT_FOUND);
            };
            let c = self.file(child);
            if let Some(stored) = &c.reparse {
                let next_exists = parts.get(i + 1).is_some_and(|next| {
                    c.directory && c.children.contains_key(&pattern::key(next))
                });
                if reparses(stored, last, c.directory, next_exists, req, encountered) {
                    return Ok(CreateOutcome::Reparse {
                        tag: reparse::tag_of(stored),
                        buffer: stored.clone(),
                        remaining: remaining_after(req.path, i + 1),
                    });
                }
            }
            if !last && !c.directory {
                return Err(STATUS_OBJECT_PATH_NOT_FOUND);
            }
            let key = pattern::key(part);
            link = c
                .names
                .iter()
                .find(|l| l.parent == current && l.key() == key)
                .cloned();
            current = child;
        }
        self.open_existing(current, link, trailing, req)
    }

    fn open_existing(
        &mut self,
        id: FileId,
        link: Option<Link>,
        trailing: bool,
        req: &CreateRequest<'_>,
    ) -> Result<CreateOutcome, NTSTATUS> {
        let f = self.file(id);
        // A pending delete closes the name it removes; a file with other names stays
        // open through them (inference: NTFS keeps delete-pending on the link).
        let closed = match (&f.delete_link, &link) {
            (Some(pending), Some(through)) if f.names.len() > 1 => pending.is(through),
            _ => true,
        };
        if f.delete_pending && closed {
            return Err(STATUS_DELETE_PENDING);
        }
        if req.disposition == FILE_CREATE {
            return Err(STATUS_OBJECT_NAME_COLLISION);
        }
        if req.options & FILE_DIRECTORY_FILE != 0 && !f.directory {
            return Err(STATUS_NOT_A_DIRECTORY);
        }
        if req.options & FILE_NON_DIRECTORY_FILE != 0 && f.directory {
            return Err(STATUS_FILE_IS_A_DIRECTORY);
        }
        if trailing && !f.directory {
            return Err(STATUS_OBJECT_NAME_INVALID);
        }
        let replaces = matches!(
            req.disposition,
            FILE_SUPERSEDE | FILE_OVERWRITE | FILE_OVERWRITE_IF
        );
        if replaces {
            if f.directory {
                return Err(STATUS_OBJECT_NAME_COLLISION);
            }
            // CreateFile(CREATE_ALWAYS / TRUNCATE_EXISTING) on a hidden or system file
            // must repeat those attributes; a read-only file cannot be replaced.
            let kept = f.attributes & (FILE_ATTRIBUTE_HIDDEN | FILE_ATTRIBUTE_SYSTEM);
            if f.attributes & FILE_ATTRIBUTE_READONLY != 0 || req.attributes & kept != kept {
                return Err(STATUS_ACCESS_DENIED);
            }
        }
        if req.options & FILE_DELETE_ON_CLOSE != 0
            && (id == ROOT_ID || f.attributes & FILE_ATTRIBUTE_READONLY != 0)
        {
            return Err(STATUS_CANNOT_DELETE);
        }
        self.check_share(id, req.desired_access, req.share_access)?;
        let information = match req.disposition {
            FILE_SUPERSEDE => FILE_SUPERSEDED,
            FILE_OVERWRITE | FILE_OVERWRITE_IF => FILE_OVERWRITTEN,
            _ => FILE_OPENED,
        };
        if replaces {
            let f = self.file(id);
            let (had_data, had_reparse) = (f.size > 0, f.reparse.is_some());
            let new = (req.attributes & SETTABLE_ATTRIBUTES) | FILE_ATTRIBUTE_ARCHIVE;
            let attributes_change = new != f.attributes || f.sparse;
            let f = self.file_mut(id);
            f.size = 0;
            f.reserved = 0;
            f.clusters.clear();
            // The caller replaces the whole file it opened directly (it can only reach
            // a reparse point's data with FILE_OPEN_REPARSE_POINT or an open-reparse
            // entry): the reparse point goes with the old contents (inference; it
            // follows from the attribute rule below, which clears REPARSE_POINT).
            f.reparse = None;
            // CreateFile's documentation for CREATE_ALWAYS (FILE_OVERWRITE_IF) on an
            // existing file: it "clears the existing attributes, combines the specified
            // file attributes and flags with FILE_ATTRIBUTE_ARCHIVE". FILE_OVERWRITE
            // (TRUNCATE_EXISTING) and FILE_SUPERSEDE replace the same way: once the file
            // exists NTFS handles the three alike (inference). SPARSE_FILE goes with the
            // old stream, so OFFLINE, RECALL_ON_*, PINNED and the rest go unless asked.
            f.attributes = new;
            f.sparse = false;
            f.times[1] = req.now;
            f.times[WRITE_TIME] = req.now;
            f.times[CHANGE_TIME] = req.now;
            if had_data {
                self.post_usn(id, usn::DATA_TRUNCATION);
            }
            if had_reparse {
                self.post_usn(id, usn::REPARSE_POINT_CHANGE);
            }
            if attributes_change {
                self.post_usn(id, usn::BASIC_INFO_CHANGE);
            }
        }
        let open = self.add_open(id, link, req);
        Ok(CreateOutcome::Opened {
            open,
            id,
            information: information as usize,
        })
    }

    /// IRP_MJ_CREATE with FILE_OPEN_BY_FILE_ID: the file name is the file's reference
    /// number, little-endian, and the open reaches the file wherever it now is (renames
    /// do not matter: nothing is parsed).
    ///
    /// Name forms (ZwCreateFile, CreateOptions, FILE_OPEN_BY_FILE_ID): 8 bytes, or 16
    /// bytes that are "the same as an 8-byte number padded with zeros"; the I/O manager
    /// passes the part after the device name, so the documented `\??\C:\<id>` and
    /// `\Device\HarddiskVolume1\<id>` forms reach the file system with their backslash
    /// in front of the id, which is skipped here (inference from those documented forms).
    /// A 16-byte name that is not a padded reference is an object id: the model keeps no
    /// object ids (FSCTL_CREATE_OR_GET_OBJECT_ID is not modelled), so such an open fails
    /// with STATUS_NOT_IMPLEMENTED, which NTFS never answers here: a test that meets it
    /// has gone outside the model. Any other length is STATUS_INVALID_PARAMETER (as the
    /// CDFS sample's CdNormalizeFileNames answers one that is not a FILE_ID).
    ///
    /// What NTFS answers, from the btrfs driver's test suite, which runs the same checks
    /// on NTFS (maharmstone/btrfs, src/tests/create.cpp, `test_open_id`): an id no file
    /// has (one deleted) is STATUS_INVALID_PARAMETER, whatever the disposition; an
    /// existing one honours the disposition as a name would (FILE_CREATE is
    /// STATUS_OBJECT_NAME_COLLISION, OPEN_IF opens, OVERWRITE(_IF) and SUPERSEDE
    /// replace), DIRECTORY_FILE / NON_DIRECTORY_FILE are checked as usual, and a file
    /// whose name a POSIX delete removed is STATUS_DELETE_PENDING. Such an open cannot
    /// rename or delete the file (STATUS_INVALID_PARAMETER), and FILE_DELETE_ON_CLOSE on
    /// it deletes nothing: the suite shows both on a file with two links; the model
    /// applies them to every open by id, as NTFS has no link to remove for an open that
    /// came through none (inference).
    ///
    /// The file's reparse point is met as the last component of a path would be:
    /// FILE_OPEN_REPARSE_POINT (or a matching open-reparse entry) opens it, otherwise
    /// STATUS_REPARSE with nothing left of the name (inference: NTFS looks at the reparse
    /// point of the file it reached, whichever way it reached it).
    fn open_by_id(
        &mut self,
        req: &CreateRequest<'_>,
        encountered: &mut Vec<usize>,
    ) -> Result<CreateOutcome, NTSTATUS> {
        let name = match req.id_name {
            [b'\\', 0, rest @ ..] if rest.len() == 8 || rest.len() == 16 => rest,
            name => name,
        };
        let id = match *name {
            [a, b, c, d, e, f, g, h] => FileId::from_le_bytes([a, b, c, d, e, f, g, h]),
            [a, b, c, d, e, f, g, h, ref high @ ..] if high.len() == 8 => {
                if high.iter().any(|&x| x != 0) {
                    return Err(STATUS_NOT_IMPLEMENTED);
                }
                FileId::from_le_bytes([a, b, c, d, e, f, g, h])
            }
            _ => return Err(STATUS_INVALID_PARAMETER),
        };
        let Some(f) = self.files.get(&id) else {
            return Err(STATUS_INVALID_PARAMETER);
        };
        if let Some(stored) = &f.reparse
            && reparses(stored, true, f.directory, false, req, encountered)
        {
            return Ok(CreateOutcome::Reparse {
                tag: reparse::tag_of(stored),
                buffer: stored.clone(),
                remaining: 0,
            });
        }
        let outcome = self.open_existing(id, None, false, req)?;
        if let CreateOutcome::Opened { open, .. } = &outcome
            && let Some(o) = self.opens.get_mut(open)
        {
            o.by_id = true;
            o.delete_on_close = false;
        }
        Ok(outcome)
    }

    fn create_new(
        &mut self,
        parent: FileId,
        name: &str,
        trailing: bool,
        req: &CreateRequest<'_>,
    ) -> Result<CreateOutcome, NTSTATUS> {
        if matches!(req.disposition, FILE_OPEN | FILE_OVERWRITE) {
            return Err(STATUS_OBJECT_NAME_NOT_FOUND);
        }
        let directory = req.options & FILE_DIRECTORY_FILE != 0;
        if trailing && !directory {
            return Err(STATUS_OBJECT_NAME_INVALID);
        }
        self.may_add_child(parent)?;
        let mut attributes = req.attributes & SETTABLE_ATTRIBUTES;
        if !directory {
            attributes |= FILE_ATTRIBUTE_ARCHIVE;
        } else {
            attributes &= !FILE_ATTRIBUTE_TEMPORARY;
        }
        if req.options & FILE_DELETE_ON_CLOSE != 0 && attributes & FILE_ATTRIBUTE_READONLY != 0 {
            return Err(STATUS_CANNOT_DELETE);
        }
        let id = (1 << 48) | self.next_record;
        self.next_record += 1;
        self.files.insert(
            id,
            File {
                id,
                names: vec![Link {
                    parent,
                    name: name.to_owned(),
                }],
                directory,
                attributes,
                sparse: false,
                times: [req.now; 4],
                size: 0,
                reserved: 0,
                clusters: BTreeMap::new(),
                reparse: None,
                delete_pending: false,
                delete_link: None,
                children: BTreeMap::new(),
                usn: 0,
                reasons: 0,
                writers: Writers::Administrators,
            },
        );
        self.post_usn(id, usn::FILE_CREATE);
        let p = self.file_mut(parent);
        p.children.insert(pattern::key(name), id);
        p.times[WRITE_TIME] = req.now;
        p.times[CHANGE_TIME] = req.now;
        let link = Link {
            parent,
            name: name.to_owned(),
        };
        let open = self.add_open(id, Some(link), req);
        Ok(CreateOutcome::Opened {
            open,
            id,
            information: FILE_CREATED as usize,
        })
    }

    /// Whether a new name may appear in directory `parent`.
    fn may_add_child(&self, parent: FileId) -> Result<(), NTSTATUS> {
        let p = self.file(parent);
        if p.delete_pending {
            return Err(STATUS_DELETE_PENDING);
        }
        if p.reparse
            .as_deref()
            .is_some_and(|r| !reparse::is_directory_tag(reparse::tag_of(r)))
        {
            return Err(STATUS_DIRECTORY_IS_A_REPARSE_POINT);
        }
        Ok(())
    }

    fn add_open(&mut self, file: FileId, link: Option<Link>, req: &CreateRequest<'_>) -> OpenId {
        let id = self.next_open;
        self.next_open += 1;
        self.opens.insert(
            id,
            Open {
                file,
                link,
                access: req.desired_access,
                share: req.share_access,
                delete_on_close: req.options & FILE_DELETE_ON_CLOSE != 0,
                by_id: false,
                frozen: [false; 4],
            },
        );
        id
    }

    /// Posts a change for `id` (see `usn`): a record, and a new USN for the file, when
    /// `reason` adds to the reasons accumulated since its last close record.
    fn post_usn(&mut self, id: FileId, reason: u32) {
        let Some(f) = self.files.get(&id) else {
            return;
        };
        if reason & !f.reasons == 0 {
            return;
        }
        let length = usn::record_length(f.first_name().encode_utf16().count() * 2);
        self.last_usn += length;
        let last = self.last_usn;
        let f = self.file_mut(id);
        f.reasons |= reason;
        f.usn = last;
    }

    /// The close record, written when the file's last open is cleaned up with reasons
    /// accumulated (see `usn`).
    fn close_usn(&mut self, id: FileId) {
        let Some(f) = self.files.get(&id) else {
            return;
        };
        if f.reasons == 0 {
            return;
        }
        let length = usn::record_length(f.first_name().encode_utf16().count() * 2);
        self.last_usn += length;
        let last = self.last_usn;
        let f = self.file_mut(id);
        f.reasons = 0;
        f.usn = last;
    }

    /// The file's current USN (0 if the journal holds no record of it yet).
    pub fn usn(&self, id: FileId) -> Option<i64> {
        self.files.get(&id).map(|f| f.usn)
    }

    /// IoCheckShareAccess against the opens still on the file. Opens without read,
    /// write or delete access neither take nor check share access.
    fn check_share(&self, id: FileId, access: u32, share: u32) -> Result<(), NTSTATUS> {
        let read = access & (FILE_READ_DATA | FILE_EXECUTE) != 0;
        let write = access & (FILE_WRITE_DATA | FILE_APPEND_DATA) != 0;
        let delete = access & DELETE != 0;
        if !(read || write || delete) {
            return Ok(());
        }
        let (mut opens, mut readers, mut writers, mut deleters) = (0, 0, 0, 0);
        let (mut shared_read, mut shared_write, mut shared_delete) = (0, 0, 0);
        for o in self.opens.values().filter(|o| o.file == id) {
            let r = o.access & (FILE_READ_DATA | FILE_EXECUTE) != 0;
            let w = o.access & (FILE_WRITE_DATA | FILE_APPEND_DATA) != 0;
            let d = o.access & DELETE != 0;
            if !(r || w || d) {
                continue;
            }
            opens += 1;
            readers += usize::from(r);
            writers += usize::from(w);
            deleters += usize::from(d);
            shared_read += usize::from(o.share & FILE_SHARE_READ != 0);
            shared_write += usize::from(o.share & FILE_SHARE_WRITE != 0);
            shared_delete += usize::from(o.share & FILE_SHARE_DELETE != 0);
        }
        let conflict = (read && opens > shared_read)
            || (write && opens > shared_write)
            || (delete && opens > shared_delete)
            || (readers > 0 && share & FILE_SHARE_READ == 0)
            || (writers > 0 && share & FILE_SHARE_WRITE == 0)
            || (deleters > 0 && share & FILE_SHARE_DELETE == 0);
        if conflict {
            Err(STATUS_SHARING_VIOLATION)
        } else {
            Ok(())
        }
    }

    /// IRP_MJ_CLEANUP for one open: releases its share access; the last open of a
    /// delete-pending file deletes it.
    pub fn cleanup(&mut self, open: OpenId) {
        let Some(o) = self.opens.remove(&open) else {
            return;
        };
        self.cursors.borrow_mut().remove(&open);
        let id = o.file;
        if o.delete_on_close {
            let f = self.file_mut(id);
            // A directory that filled up since the open stays (NTFS re-checks here).
            if !f.directory || f.children.is_empty() {
                f.delete_pending = true;
                f.delete_link = o.link.clone();
            }
        }
        if self.open_count(id) == 0 {
            let f = self.file(id);
            if f.delete_pending && f.names.len() > 1 {
                // One name of several goes; the file stays under the others.
                if let Some(link) = f.delete_link.clone() {
                    self.unlink(id, &link);
                }
                let f = self.file_mut(id);
                f.delete_pending = false;
                f.delete_link = None;
                self.post_usn(id, usn::HARD_LINK_CHANGE);
                self.close_usn(id);
            } else if f.delete_pending {
                self.post_usn(id, usn::FILE_DELETE);
                self.remove(id);
            } else {
                self.close_usn(id);
            }
        }
    }

    /// Removes one name of `id` (its directory entry and its $FILE_NAME); the file
    /// itself stays, with its other names or with none.
    fn unlink(&mut self, id: FileId, link: &Link) {
        let f = self.file_mut(id);
        f.names.retain(|l| !l.is(link));
        if let Some(p) = self.files.get_mut(&link.parent) {
            p.children.remove(&link.key());
        }
    }

    /// A name that a replacing rename or link takes over: with other names left only
    /// this one goes, else the file.
    fn replace_name(&mut self, id: FileId, link: &Link) {
        if self.file(id).names.len() > 1 {
            self.unlink(id, link);
            self.post_usn(id, usn::HARD_LINK_CHANGE);
        } else {
            self.remove(id);
        }
    }

    fn remove(&mut self, id: FileId) {
        let Some(f) = self.files.remove(&id) else {
            return;
        };
        for link in &f.names {
            if let Some(p) = self.files.get_mut(&link.parent) {
                p.children.remove(&link.key());
            }
        }
    }

    fn open_of(&self, open: OpenId) -> Result<&Open, NTSTATUS> {
        self.opens.get(&open).ok_or(STATUS_INVALID_PARAMETER)
    }

    /// What [`Ntfs::read`] would return for file `id` (ground truth, no open needed).
    pub fn read_file(&self, id: FileId, offset: u64, length: usize) -> Result<Vec<u8>, NTSTATUS> {
        let f = self.files.get(&id).ok_or(STATUS_INVALID_PARAMETER)?;
        self.read_of(f, offset, length)
    }

    /// Reads `length` bytes at `offset`: STATUS_END_OF_FILE at or past end of file, short
    /// at the end; unallocated ranges read as zeros; a directory is
    /// STATUS_INVALID_DEVICE_REQUEST.
    pub fn read(&self, open: OpenId, offset: u64, length: usize) -> Result<Vec<u8>, NTSTATUS> {
        self.read_of(self.file(self.open_of(open)?.file), offset, length)
    }

    fn read_of(&self, f: &File, offset: u64, length: usize) -> Result<Vec<u8>, NTSTATUS> {
        if f.directory {
            return Err(STATUS_INVALID_DEVICE_REQUEST);
        }
        if length == 0 {
            return Ok(Vec::new());
        }
        if offset >= f.size {
            return Err(STATUS_END_OF_FILE);
        }
        let end = f.size.min(offset.saturating_add(length as u64));
        let mut out = vec![0; (end - offset) as usize];
        for (&index, data) in f.clusters.range(offset / CLUSTER..end.div_ceil(CLUSTER)) {
            let start = index * CLUSTER;
            let from = offset.max(start);
            let to = end.min(start + CLUSTER);
            out[(from - offset) as usize..(to - offset) as usize]
                .copy_from_slice(&data[(from - start) as usize..(to - start) as usize]);
        }
        Ok(out)
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
        let o = self.open_of(open)?;
        let (id, frozen) = (o.file, o.frozen);
        if self.file(id).directory {
            return Err(STATUS_INVALID_DEVICE_REQUEST);
        }
        if data.is_empty() {
            return Ok(0);
        }
        let end = offset
            .checked_add(data.len() as u64)
            .ok_or(STATUS_INVALID_PARAMETER)?;
        self.post_write(id, offset, end);
        self.store(id, offset, data);
        let f = self.file_mut(id);
        f.size = f.size.max(end);
        touch(f, &frozen, now);
        Ok(data.len())
    }

    /// The reasons a write of `offset..end` posts: DATA_OVERWRITE for what lies inside
    /// the current end of file, DATA_EXTEND for what lies past it.
    fn post_write(&mut self, id: FileId, offset: u64, end: u64) {
        let size = self.file(id).size;
        if offset < size {
            self.post_usn(id, usn::DATA_OVERWRITE);
        }
        if end > size {
            self.post_usn(id, usn::DATA_EXTEND);
        }
    }

    /// Puts `data` at `offset` in the file's clusters (allocating them), nothing else.
    fn store(&mut self, id: FileId, offset: u64, data: &[u8]) {
        let end = offset + data.len() as u64;
        let f = self.file_mut(id);
        let mut at = offset;
        while at < end {
            let index = at / CLUSTER;
            let start = index * CLUSTER;
            let to = end.min(start + CLUSTER);
            let cluster = f
                .clusters
                .entry(index)
                .or_insert_with(|| vec![0; CLUSTER as usize]);
            cluster[(at - start) as usize..(to - start) as usize]
                .copy_from_slice(&data[(at - offset) as usize..(to - offset) as usize]);
            at = to;
        }
    }

    /// A cached write of `offset..end` through `open`, as NTFS's cached-write path does
    /// it before the data reaches the disk: end of file moves out to `end` if it lies
    /// beyond (the new range reads as zeros until the data is written), the write's
    /// reasons are posted and last-write and change time move (unless the handle froze
    /// them). The bytes come later, with the lazy writer's paging write
    /// ([`Ntfs::paging_write`]).
    pub fn cached_write(
        &mut self,
        open: OpenId,
        offset: u64,
        end: u64,
        now: i64,
    ) -> Result<(), NTSTATUS> {
        let o = self.open_of(open)?;
        let (id, frozen) = (o.file, o.frozen);
        if self.file(id).directory {
            return Err(STATUS_INVALID_DEVICE_REQUEST);
        }
        if offset >= end {
            return Ok(());
        }
        self.post_write(id, offset, end);
        let f = self.file_mut(id);
        f.size = f.size.max(end);
        touch(f, &frozen, now);
        Ok(())
    }

    /// A paging write of `data` at `offset` to file `id`, as the lazy writer or the
    /// mapped page writer sends it: it reaches the file through its stream, whether or
    /// not an open is left (paging I/O may follow the last cleanup). It never moves end
    /// of file: what lies past it is dropped (NTFS trims paging writes at end of file).
    /// `mapped`: a page the mapped page writer writes back, whose change NTFS notes here
    /// (DATA_OVERWRITE, times, ARCHIVE; see `usn`); the lazy writer's data was noted at
    /// the cached write. With no open left, the change's close record follows at once.
    pub fn paging_write(
        &mut self,
        id: FileId,
        offset: u64,
        data: &[u8],
        mapped: bool,
        now: i64,
    ) -> Result<usize, NTSTATUS> {
        let Some(f) = self.files.get(&id) else {
            return Err(STATUS_INVALID_PARAMETER);
        };
        if f.directory {
            return Err(STATUS_INVALID_DEVICE_REQUEST);
        }
        let size = f.size;
        if offset < size {
            let keep = ((size - offset) as usize).min(data.len());
            self.store(id, offset, &data[..keep]);
            if mapped {
                self.post_usn(id, usn::DATA_OVERWRITE);
                touch(self.file_mut(id), &[false; 4], now);
                if self.open_count(id) == 0 {
                    self.close_usn(id);
                }
            }
        }
        Ok(data.len())
    }

    /// IRP_MJ_QUERY_INFORMATION: the status and the bytes NTFS writes into a buffer of
    /// `buffer_len` bytes (their length is IoStatus.Information).
    pub fn query_information(
        &self,
        open: OpenId,
        class: i32,
        buffer_len: usize,
    ) -> (NTSTATUS, Vec<u8>) {
        let Ok(o) = self.open_of(open) else {
            return (STATUS_INVALID_PARAMETER, Vec::new());
        };
        let f = self.file(o.file);
        let m = self.meta(f);
        let fixed = |len: usize, bytes: Vec<u8>| {
            if buffer_len < len {
                (STATUS_INFO_LENGTH_MISMATCH, Vec::new())
            } else {
                (STATUS_SUCCESS, bytes)
            }
        };
        let named = |min: usize, fixed: Vec<u8>, length_at: usize, name_at: usize| {
            if buffer_len < min {
                return (STATUS_INFO_LENGTH_MISMATCH, Vec::new());
            }
            let name = layout::utf16_bytes(&self.path_of(f.id).unwrap_or_default());
            let (bytes, cut) = layout::with_name(fixed, length_at, name_at, &name, buffer_len);
            let status = if cut {
                STATUS_BUFFER_OVERFLOW
            } else {
                STATUS_SUCCESS
            };
            (status, bytes)
        };
        match class {
            fs::FileBasicInformation => fixed(layout::BASIC_LEN, layout::basic_info(&m)),
            fs::FileStandardInformation => fixed(layout::STANDARD_LEN, layout::standard_info(&m)),
            fs::FileInternalInformation => fixed(8, m.id.to_le_bytes().to_vec()),
            // No extended attributes in the model.
            fs::FileEaInformation => fixed(4, vec![0; 4]),
            fs::FileAccessInformation => fixed(4, o.access.to_le_bytes().to_vec()),
            fs::FileNameInformation | fs::FileNormalizedNameInformation => {
                named(layout::NAME_LEN, vec![0; 4], 0, 4)
            }
            fs::FileAllInformation => named(
                layout::ALL_LEN,
                layout::all_info_fixed(&m, o.access),
                layout::ALL_NAME_INFO,
                layout::ALL_NAME_INFO + 4,
            ),
            fs::FileNetworkOpenInformation => {
                fixed(layout::NETWORK_OPEN_LEN, layout::network_open_info(&m))
            }
            fs::FileAttributeTagInformation => fixed(8, layout::attribute_tag_info(&m)),
            fs::FileIdInformation => fixed(layout::ID_LEN, layout::id_info(&m, self.volume_serial)),
            fs::FileStatInformation => fixed(layout::STAT_LEN, layout::stat_info(&m, o.access)),
            fs::FileStatLxInformation => {
                fixed(layout::STAT_LX_LEN, layout::stat_lx_info(&m, o.access))
            }
            FILE_STAT_BASIC_INFORMATION_CLASS => fixed(
                layout::STAT_BASIC_LEN,
                layout::stat_basic_info(&m, self.volume_serial),
            ),
            fs::FileStreamInformation => self.stream_information(f, &m, buffer_len),
            // 8.3 names are off: there is no alternate name to return.
            fs::FileAlternateNameInformation => {
                if buffer_len < layout::NAME_LEN {
                    (STATUS_INFO_LENGTH_MISMATCH, Vec::new())
                } else {
                    (STATUS_OBJECT_NAME_NOT_FOUND, Vec::new())
                }
            }
            c if !(1..FILE_MAXIMUM_INFORMATION).contains(&c) => {
                (STATUS_INVALID_INFO_CLASS, Vec::new())
            }
            // NTFS's query-information dispatch answers classes it does not handle with
            // STATUS_INVALID_PARAMETER (the I/O manager has already refused those it
            // does not know).
            _ => (STATUS_INVALID_PARAMETER, Vec::new()),
        }
    }

    /// FileStreamInformation: a file has its unnamed data stream `::$DATA`; a
    /// directory has none, so the answer is empty.
    fn stream_information(&self, f: &File, m: &Meta, buffer_len: usize) -> (NTSTATUS, Vec<u8>) {
        if buffer_len < layout::STREAM_LEN {
            return (STATUS_INFO_LENGTH_MISMATCH, Vec::new());
        }
        if f.directory {
            return (STATUS_SUCCESS, Vec::new());
        }
        let name = layout::utf16_bytes("::$DATA");
        let mut b = vec![0; layout::STREAM_NAME];
        layout::put_u32(&mut b, 4, name.len() as u32);
        layout::put_u64(&mut b, 8, m.size);
        layout::put_u64(&mut b, 16, m.allocation);
        b.extend_from_slice(&name);
        if b.len() > buffer_len {
            // NTFS returns only whole entries; the caller learns to grow the buffer.
            return (STATUS_BUFFER_OVERFLOW, Vec::new());
        }
        (STATUS_SUCCESS, b)
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
        if self.open_of(open).is_err() {
            return STATUS_INVALID_PARAMETER;
        }
        let result = match class {
            fs::FileBasicInformation => self.set_basic(open, input, now),
            fs::FileEndOfFileInformation => match layout::get_i64(input, 0) {
                None => Err(STATUS_INFO_LENGTH_MISMATCH),
                Some(v) => self.set_end_of_file(open, v, now),
            },
            fs::FileAllocationInformation => match layout::get_i64(input, 0) {
                None => Err(STATUS_INFO_LENGTH_MISMATCH),
                Some(v) => self.set_allocation(open, v, now),
            },
            fs::FileDispositionInformation => match input.first() {
                None => Err(STATUS_INFO_LENGTH_MISMATCH),
                Some(&d) => {
                    self.set_disposition(open, if d != 0 { FILE_DISPOSITION_DELETE } else { 0 })
                }
            },
            fs::FileDispositionInformationEx => match layout::get_u32(input, 0) {
                None => Err(STATUS_INFO_LENGTH_MISMATCH),
                Some(flags) => self.set_disposition(open, flags),
            },
            c if !(1..FILE_MAXIMUM_INFORMATION).contains(&c) => Err(STATUS_INVALID_INFO_CLASS),
            _ => Err(STATUS_INVALID_PARAMETER),
        };
        result.err().unwrap_or(STATUS_SUCCESS)
    }

    fn set_basic(&mut self, open: OpenId, input: &[u8], now: i64) -> Result<(), NTSTATUS> {
        if input.len() < layout::BASIC_LEN {
            return Err(STATUS_INFO_LENGTH_MISMATCH);
        }
        let mut times = [0i64; 4];
        for (i, t) in times.iter_mut().enumerate() {
            *t = layout::get_i64(input, 8 * i).unwrap_or(0);
            // 0: leave it; -1: leave it and stop this handle updating it; -2: resume
            // updates. Nothing else below zero is a time.
            if *t < -2 {
                return Err(STATUS_INVALID_PARAMETER);
            }
        }
        let attributes = layout::get_u32(input, 32).unwrap_or(0);
        let id = self.opens[&open].file;
        let directory = self.file(id).directory;
        if attributes & FILE_ATTRIBUTE_DIRECTORY != 0 && !directory
            || attributes & FILE_ATTRIBUTE_TEMPORARY != 0 && directory
        {
            return Err(STATUS_INVALID_PARAMETER);
        }
        let o = self.opens.get_mut(&open).expect("checked open");
        for (i, t) in times.iter().enumerate() {
            match *t {
                0 => {}
                -1 => o.frozen[i] = true,
                -2 => o.frozen[i] = false,
                // NTFS will not overwrite an explicitly set time from this handle.
                _ => o.frozen[i] = true,
            }
        }
        let frozen_change = o.frozen[CHANGE_TIME];
        let f = self.file_mut(id);
        let mut changed = false;
        for (i, t) in times.iter().enumerate() {
            if *t > 0 {
                f.times[i] = *t;
                changed = true;
            }
        }
        if attributes != 0 {
            f.attributes = attributes & SETTABLE_ATTRIBUTES;
            changed = true;
        }
        if changed && times[CHANGE_TIME] == 0 && !frozen_change {
            f.times[CHANGE_TIME] = now;
        }
        if changed {
            self.post_usn(id, usn::BASIC_INFO_CHANGE);
        }
        Ok(())
    }

    fn set_end_of_file(&mut self, open: OpenId, eof: i64, now: i64) -> Result<(), NTSTATUS> {
        let o = &self.opens[&open];
        let (id, frozen) = (o.file, o.frozen);
        if self.file(id).directory {
            return Err(STATUS_INVALID_PARAMETER);
        }
        let eof = u64::try_from(eof).map_err(|_| STATUS_INVALID_PARAMETER)?;
        let old = self.file(id).size;
        if eof < old {
            self.post_usn(id, usn::DATA_TRUNCATION);
        } else if eof > old {
            self.post_usn(id, usn::DATA_EXTEND);
        }
        let f = self.file_mut(id);
        truncate(f, eof);
        f.size = eof;
        touch(f, &frozen, now);
        Ok(())
    }

    fn set_allocation(&mut self, open: OpenId, size: i64, now: i64) -> Result<(), NTSTATUS> {
        let o = &self.opens[&open];
        let (id, frozen) = (o.file, o.frozen);
        if self.file(id).directory {
            return Err(STATUS_INVALID_PARAMETER);
        }
        let size = u64::try_from(size).map_err(|_| STATUS_INVALID_PARAMETER)?;
        let f = self.file_mut(id);
        f.reserved = round_up(size);
        if size < f.size {
            // Allocation below end of file takes end of file down with it.
            truncate(f, size);
            f.size = size;
            touch(f, &frozen, now);
            self.post_usn(id, usn::DATA_TRUNCATION);
        } else if f.sparse {
            // A sparse file allocates on write only.
            f.reserved = 0;
        }
        Ok(())
    }

    fn set_disposition(&mut self, open: OpenId, flags: u32) -> Result<(), NTSTATUS> {
        let id = self.opens[&open].file;
        let delete = flags & FILE_DISPOSITION_DELETE != 0;
        if delete && self.opens[&open].by_id {
            // Opened by id: no link to delete (see `open_by_id`).
            return Err(STATUS_INVALID_PARAMETER);
        }
        if delete {
            let f = self.file(id);
            if id == ROOT_ID {
                return Err(STATUS_CANNOT_DELETE);
            }
            if f.attributes & FILE_ATTRIBUTE_READONLY != 0
                && flags & FILE_DISPOSITION_IGNORE_READONLY_ATTRIBUTE == 0
            {
                return Err(STATUS_CANNOT_DELETE);
            }
            if f.directory && !f.children.is_empty() {
                return Err(STATUS_DIRECTORY_NOT_EMPTY);
            }
        }
        if flags & FILE_DISPOSITION_ON_CLOSE != 0 {
            // Only the handle's delete-on-close changes, not the file's state.
            self.opens
                .get_mut(&open)
                .expect("checked open")
                .delete_on_close = delete;
            return Ok(());
        }
        let posix = delete && flags & FILE_DISPOSITION_POSIX_SEMANTICS != 0;
        let link = self.opens[&open].link.clone();
        let f = self.file_mut(id);
        f.delete_pending = delete;
        f.delete_link = if delete { link.clone() } else { None };
        if posix
            && let Some(link) = link
            && f.has_name(&link)
        {
            // The name goes now; the file lives on until its last open is cleaned up,
            // or for good under the names it still has.
            self.unlink(id, &link);
            let f = self.file_mut(id);
            if f.linked() {
                f.delete_pending = false;
                f.delete_link = None;
                self.post_usn(id, usn::HARD_LINK_CHANGE);
            }
        }
        Ok(())
    }

    /// FileRenameInformation resolved by the I/O manager: moves `id` to `new_path`.
    pub fn rename(
        &mut self,
        open: OpenId,
        new_path: &str,
        replace_if_exists: bool,
        now: i64,
    ) -> NTSTATUS {
        match self.rename_inner(open, new_path, replace_if_exists, now) {
            Ok(()) => STATUS_SUCCESS,
            Err(status) => status,
        }
    }

    fn rename_inner(
        &mut self,
        open: OpenId,
        new_path: &str,
        replace: bool,
        now: i64,
    ) -> Result<(), NTSTATUS> {
        let o = self.open_of(open)?;
        let id = o.file;
        // Opened by id: no link to rename (see `open_by_id`); a name a POSIX delete
        // removed is gone.
        let old = match &o.link {
            Some(link) if !o.by_id && id != ROOT_ID && self.file(id).has_name(link) => link.clone(),
            _ => return Err(STATUS_INVALID_PARAMETER),
        };
        if self.file(id).delete_pending {
            return Err(STATUS_DELETE_PENDING);
        }
        let (parent, name) = self.new_name(new_path)?;
        let name = name.as_str();
        // A directory cannot move under itself.
        let mut up = parent;
        loop {
            if up == id {
                return Err(STATUS_INVALID_PARAMETER);
            }
            if up == ROOT_ID {
                break;
            }
            up = self.file(up).parent();
        }
        let f = self.file(id);
        if f.directory && self.has_open_below(id) {
            return Err(STATUS_ACCESS_DENIED);
        }
        let new = Link {
            parent,
            name: name.to_owned(),
        };
        let key = new.key();
        if let Some(&target) = self.file(parent).children.get(&key)
            && !(target == id && new.is(&old))
        {
            if target == id {
                // Onto another name of the same file (inference: refused, as no
                // documented NTFS answer says otherwise).
                return Err(STATUS_OBJECT_NAME_COLLISION);
            }
            self.may_replace(target, replace)?;
            if parent != old.parent {
                self.may_add_child(parent)?;
            }
            self.replace_name(target, &new);
        }
        if parent != old.parent {
            self.may_add_child(parent)?;
        }
        self.post_usn(id, usn::RENAME_OLD_NAME);
        self.file_mut(old.parent).children.remove(&old.key());
        self.file_mut(parent).children.insert(key, id);
        for p in [old.parent, parent] {
            let p = self.file_mut(p);
            p.times[WRITE_TIME] = now;
            p.times[CHANGE_TIME] = now;
        }
        // Every open through the old name now names the new one.
        for o in self.opens.values_mut() {
            if o.file == id && o.link.as_ref().is_some_and(|l| l.is(&old)) {
                o.link = Some(new.clone());
            }
        }
        let f = self.file_mut(id);
        for l in &mut f.names {
            if l.is(&old) {
                *l = new.clone();
            }
        }
        f.times[CHANGE_TIME] = now;
        if !f.directory {
            f.attributes |= FILE_ATTRIBUTE_ARCHIVE;
        }
        self.post_usn(id, usn::RENAME_NEW_NAME);
        Ok(())
    }

    /// The directory and last component of a rename's or link's new path: every
    /// directory on the way must exist.
    fn new_name(&self, new_path: &str) -> Result<(FileId, String), NTSTATUS> {
        let (parts, _) = split_path(new_path)?;
        let Some((name, dirs)) = parts.split_last() else {
            return Err(STATUS_OBJECT_NAME_INVALID);
        };
        let mut parent = ROOT_ID;
        for d in dirs {
            match self.file(parent).children.get(&pattern::key(d)) {
                Some(&c) if self.file(c).directory => parent = c,
                _ => return Err(STATUS_OBJECT_PATH_NOT_FOUND),
            }
        }
        Ok((parent, (*name).to_owned()))
    }

    /// Whether an existing `target` may give its name to a rename or link: only when
    /// the caller asked to replace, and never a directory, a read-only file or an open
    /// one.
    fn may_replace(&self, target: FileId, replace: bool) -> Result<(), NTSTATUS> {
        let t = self.file(target);
        if !replace {
            return Err(STATUS_OBJECT_NAME_COLLISION);
        }
        if t.directory || t.attributes & FILE_ATTRIBUTE_READONLY != 0 || self.open_count(target) > 0
        {
            return Err(STATUS_ACCESS_DENIED);
        }
        Ok(())
    }

    /// FileLinkInformation(Ex) resolved by the I/O manager: `new_path` becomes another
    /// name of the open's file (CreateHardLink). A directory cannot have one
    /// (STATUS_FILE_IS_A_DIRECTORY), a file being deleted cannot gain one
    /// (STATUS_DELETE_PENDING), NTFS stops at 1024 names (STATUS_TOO_MANY_LINKS), and an
    /// existing name is replaced only when asked, as a rename's.
    pub fn link(&mut self, open: OpenId, new_path: &str, replace: bool, now: i64) -> NTSTATUS {
        match self.link_inner(open, new_path, replace, now) {
            Ok(()) => STATUS_SUCCESS,
            Err(status) => status,
        }
    }

    fn link_inner(
        &mut self,
        open: OpenId,
        new_path: &str,
        replace: bool,
        now: i64,
    ) -> Result<(), NTSTATUS> {
        let id = self.open_of(open)?.file;
        let f = self.file(id);
        if f.directory {
            return Err(STATUS_FILE_IS_A_DIRECTORY);
        }
        if f.delete_pending || !f.linked() {
            return Err(STATUS_DELETE_PENDING);
        }
        if f.names.len() >= MAX_LINKS {
            return Err(STATUS_TOO_MANY_LINKS);
        }
        let (parent, name) = self.new_name(new_path)?;
        let new = Link { parent, name };
        if let Some(&target) = self.file(parent).children.get(&new.key()) {
            if target == id {
                return Err(STATUS_OBJECT_NAME_COLLISION);
            }
            self.may_replace(target, replace)?;
            self.may_add_child(parent)?;
            self.replace_name(target, &new);
        }
        self.may_add_child(parent)?;
        self.file_mut(parent).children.insert(new.key(), id);
        let p = self.file_mut(parent);
        p.times[WRITE_TIME] = now;
        p.times[CHANGE_TIME] = now;
        let f = self.file_mut(id);
        f.names.push(new);
        f.times[CHANGE_TIME] = now;
        self.post_usn(id, usn::HARD_LINK_CHANGE);
        Ok(())
    }

    /// The volume-relative path an open came through (its link), as FltMgr reports an
    /// opened file's name; `None` once that name is gone. An open by id reports the
    /// file's first name.
    pub fn path_of_open(&self, open: OpenId) -> Option<String> {
        let o = self.opens.get(&open)?;
        match &o.link {
            Some(link) if self.file(o.file).has_name(link) => {
                let dir = self.path_of(link.parent)?;
                Some(format!("{}\\{}", dir.trim_end_matches('\\'), link.name))
            }
            Some(_) => None,
            None => self.path_of(o.file),
        }
    }

    /// `path` with each component as the directory holds it (the case it was created
    /// with), without following reparse points: what a normalized name of a file
    /// opened by that path shows. `None` if it does not exist.
    pub fn normalize(&self, path: &str) -> Option<String> {
        let (parts, _) = split_path(path).ok()?;
        let mut at = ROOT_ID;
        let mut out = String::new();
        for p in parts {
            let key = pattern::key(p);
            let child = *self.file(at).children.get(&key)?;
            let link = self
                .file(child)
                .names
                .iter()
                .find(|l| l.parent == at && l.key() == key)?;
            out.push('\\');
            out.push_str(&link.name);
            at = child;
        }
        Some(if out.is_empty() { "\\".into() } else { out })
    }

    /// Every name of `id`, as volume-relative paths (first the first).
    pub fn names_of(&self, id: FileId) -> Vec<String> {
        let Some(f) = self.files.get(&id) else {
            return Vec::new();
        };
        f.names
            .iter()
            .filter_map(|l| {
                let dir = self.path_of(l.parent)?;
                Some(format!("{}\\{}", dir.trim_end_matches('\\'), l.name))
            })
            .collect()
    }

    fn has_open_below(&self, dir: FileId) -> bool {
        self.opens.values().any(|o| {
            let mut at = o.file;
            while at != ROOT_ID {
                at = self.file(at).parent();
                if at == dir {
                    return true;
                }
            }
            false
        })
    }

    /// IRP_MJ_FILE_SYSTEM_CONTROL: FSCTL_GET/SET/DELETE_REPARSE_POINT(_EX),
    /// FSCTL_SET_SPARSE, FSCTL_SET_ZERO_DATA, FSCTL_QUERY_ALLOCATED_RANGES,
    /// FSCTL_READ_FILE_USN_DATA; anything else
    /// STATUS_INVALID_DEVICE_REQUEST. Returns the status and output bytes.
    ///
    /// There is no FSCTL_DELETE_REPARSE_POINT_EX: neither windows-sys 0.61 nor the
    /// SDK's winioctl.h defines one (FltUntagFile sends FSCTL_DELETE_REPARSE_POINT), so
    /// such a code is just another unknown one.
    pub fn fsctl(
        &mut self,
        open: OpenId,
        code: u32,
        input: &[u8],
        output_len: usize,
        now: i64,
    ) -> (NTSTATUS, Vec<u8>) {
        let Ok(o) = self.open_of(open) else {
            return (STATUS_INVALID_PARAMETER, Vec::new());
        };
        let id = o.file;
        let done = |r: Result<(), NTSTATUS>| (r.err().unwrap_or(STATUS_SUCCESS), Vec::new());
        match code {
            FSCTL_GET_REPARSE_POINT => self.get_reparse(id, output_len),
            FSCTL_SET_REPARSE_POINT => {
                let set = self.set_reparse(id, input, output_len, None, now);
                self.reparse_writes += u64::from(set.is_ok());
                done(set)
            }
            FSCTL_SET_REPARSE_POINT_EX => {
                let ex = reparse::parse_set_ex(input);
                let set = ex.and_then(|ex| {
                    let expect = (ex.flags, ex.existing_tag, ex.existing_guid);
                    self.set_reparse(id, &ex.stored, output_len, Some(expect), now)
                });
                self.reparse_writes += u64::from(set.is_ok());
                done(set)
            }
            FSCTL_DELETE_REPARSE_POINT => done(self.delete_reparse(id, input, output_len, now)),
            FSCTL_SET_SPARSE => done(self.set_sparse(id, input, now)),
            FSCTL_SET_ZERO_DATA => done(self.zero_data(open, input, now)),
            FSCTL_QUERY_ALLOCATED_RANGES => self.query_ranges(id, input, output_len),
            usn::FSCTL_READ_FILE_USN_DATA => self.read_usn(id, input, output_len),
            _ => (STATUS_INVALID_DEVICE_REQUEST, Vec::new()),
        }
    }

    fn get_reparse(&self, id: FileId, output_len: usize) -> (NTSTATUS, Vec<u8>) {
        let Some(stored) = &self.file(id).reparse else {
            return (STATUS_NOT_A_REPARSE_POINT, Vec::new());
        };
        let header = if reparse::is_microsoft(reparse::tag_of(stored)) {
            reparse::HEADER
        } else {
            reparse::GUID_HEADER
        };
        if output_len < header {
            return (STATUS_BUFFER_TOO_SMALL, Vec::new());
        }
        if output_len < stored.len() {
            // The header still says how long the data is, so the caller can retry.
            return (STATUS_BUFFER_OVERFLOW, stored[..output_len].to_vec());
        }
        (STATUS_SUCCESS, stored.clone())
    }

    /// FSCTL_SET_REPARSE_POINT, or the _EX form when `expect` holds its Flags,
    /// ExistingReparseTag and ExistingReparseGuid.
    fn set_reparse(
        &mut self,
        id: FileId,
        input: &[u8],
        output_len: usize,
        expect: Option<(u32, u32, [u8; 16])>,
        now: i64,
    ) -> Result<(), NTSTATUS> {
        if output_len > 0 {
            return Err(STATUS_INVALID_PARAMETER);
        }
        let stored = reparse::parse_set(input)?;
        let tag = reparse::tag_of(&stored);
        let f = self.file(id);
        let current = f
            .reparse
            .as_deref()
            .map(|r| (reparse::tag_of(r), reparse::guid_of(r)));
        match expect {
            None => {
                // Plain SET replaces only a reparse point of the same tag (and GUID).
                if let Some((have, guid)) = current {
                    if have != tag {
                        return Err(STATUS_IO_REPARSE_TAG_MISMATCH);
                    }
                    if guid.is_some() && guid != reparse::guid_of(&stored) {
                        return Err(STATUS_REPARSE_ATTRIBUTE_CONFLICT);
                    }
                }
            }
            Some((flags, existing, existing_guid)) => {
                // _EX names what it expects to find; GIVEN_TAG_OR_NONE also accepts
                // a file with no reparse point at all.
                let ok = match current {
                    None => existing == 0 || flags & REPARSE_DATA_EX_FLAG_GIVEN_TAG_OR_NONE != 0,
                    Some((have, guid)) => {
                        existing == have && guid.is_none_or(|g| g == existing_guid)
                    }
                };
                if !ok {
                    return Err(STATUS_IO_REPARSE_TAG_MISMATCH);
                }
            }
        }
        if f.directory && !f.children.is_empty() && !reparse::is_directory_tag(tag) {
            return Err(STATUS_DIRECTORY_NOT_EMPTY);
        }
        let f = self.file_mut(id);
        f.reparse = Some(stored);
        f.times[CHANGE_TIME] = now;
        self.post_usn(id, usn::REPARSE_POINT_CHANGE);
        Ok(())
    }

    fn delete_reparse(
        &mut self,
        id: FileId,
        input: &[u8],
        output_len: usize,
        now: i64,
    ) -> Result<(), NTSTATUS> {
        if output_len > 0 {
            return Err(STATUS_INVALID_PARAMETER);
        }
        let (tag, guid) = reparse::parse_delete(input)?;
        let f = self.file(id);
        let Some(stored) = &f.reparse else {
            return Err(STATUS_NOT_A_REPARSE_POINT);
        };
        if reparse::tag_of(stored) != tag {
            return Err(STATUS_IO_REPARSE_TAG_MISMATCH);
        }
        if reparse::guid_of(stored) != guid {
            return Err(STATUS_REPARSE_ATTRIBUTE_CONFLICT);
        }
        let f = self.file_mut(id);
        f.reparse = None;
        f.times[CHANGE_TIME] = now;
        self.post_usn(id, usn::REPARSE_POINT_CHANGE);
        Ok(())
    }

    fn set_sparse(&mut self, id: FileId, input: &[u8], now: i64) -> Result<(), NTSTATUS> {
        if self.file(id).directory {
            return Err(STATUS_INVALID_PARAMETER);
        }
        // FILE_SET_SPARSE_BUFFER is optional: no buffer means "make it sparse".
        let sparse = input.first().is_none_or(|&b| b != 0);
        let f = self.file_mut(id);
        if f.sparse != sparse {
            // Clearing the flag allocates the holes, which the non-sparse accounting
            // (everything up to end of file) already reflects.
            f.sparse = sparse;
            f.times[CHANGE_TIME] = now;
            self.post_usn(id, usn::BASIC_INFO_CHANGE);
        }
        Ok(())
    }

    fn zero_data(&mut self, open: OpenId, input: &[u8], now: i64) -> Result<(), NTSTATUS> {
        let o = &self.opens[&open];
        let (id, frozen) = (o.file, o.frozen);
        let (Some(from), Some(to)) = (layout::get_i64(input, 0), layout::get_i64(input, 8)) else {
            return Err(STATUS_INVALID_PARAMETER);
        };
        if from < 0 || to < 0 || from > to || self.file(id).directory {
            return Err(STATUS_INVALID_PARAMETER);
        }
        let f = self.file_mut(id);
        let (from, to) = (from as u64, (to as u64).min(f.size));
        if from >= to {
            return Ok(());
        }
        let sparse = f.sparse;
        let indexes: Vec<u64> = f
            .clusters
            .range(from / CLUSTER..to.div_ceil(CLUSTER))
            .map(|(i, _)| *i)
            .collect();
        for index in indexes {
            let start = index * CLUSTER;
            let (a, b) = (from.max(start), to.min(start + CLUSTER));
            if sparse && a == start && b == start + CLUSTER {
                f.clusters.remove(&index);
            } else if let Some(c) = f.clusters.get_mut(&index) {
                c[(a - start) as usize..(b - start) as usize].fill(0);
            }
        }
        touch(f, &frozen, now);
        self.post_usn(id, usn::DATA_OVERWRITE);
        Ok(())
    }

    /// FSCTL_READ_FILE_USN_DATA (MS-FSA 2.1.5.10.27): the file's USN_RECORD_V2, or V3
    /// if the READ_FILE_USN_DATA input asks for it only; a buffer too small for the
    /// whole record is STATUS_BUFFER_TOO_SMALL (MS-FSCC 2.3.62). The name is the file's
    /// own (the root's is empty).
    fn read_usn(&self, id: FileId, input: &[u8], output_len: usize) -> (NTSTATUS, Vec<u8>) {
        let Some(major) = usn::version(input) else {
            return (STATUS_INVALID_PARAMETER, Vec::new());
        };
        let f = self.file(id);
        let name = layout::utf16_bytes(f.first_name());
        let record = usn::encode(
            &usn::Record {
                id: f.id,
                parent: f.parent(),
                usn: f.usn,
                attributes: self.meta(f).attributes,
                name: &name,
            },
            major,
        );
        if output_len < record.len() {
            return (STATUS_BUFFER_TOO_SMALL, Vec::new());
        }
        (STATUS_SUCCESS, record)
    }

    fn query_ranges(&self, id: FileId, input: &[u8], output_len: usize) -> (NTSTATUS, Vec<u8>) {
        let (Some(offset), Some(length)) = (layout::get_i64(input, 0), layout::get_i64(input, 8))
        else {
            return (STATUS_INVALID_PARAMETER, Vec::new());
        };
        if offset < 0 || length < 0 || offset.checked_add(length).is_none() {
            return (STATUS_INVALID_PARAMETER, Vec::new());
        }
        if output_len < 16 {
            return (STATUS_BUFFER_TOO_SMALL, Vec::new());
        }
        let f = self.file(id);
        if f.directory {
            return (STATUS_INVALID_PARAMETER, Vec::new());
        }
        let (from, to) = (offset as u64, ((offset + length) as u64).min(f.size));
        let ranges: Vec<(u64, u64)> = self
            .allocated_ranges(id)
            .into_iter()
            .filter_map(|(s, l)| {
                let (a, b) = (s.max(from), (s + l).min(to));
                (a < b).then_some((a, b - a))
            })
            .collect();
        let fit = output_len / 16;
        let mut out = Vec::new();
        for (s, l) in ranges.iter().take(fit) {
            out.extend_from_slice(&s.to_le_bytes());
            out.extend_from_slice(&l.to_le_bytes());
        }
        let status = if ranges.len() > fit {
            STATUS_BUFFER_OVERFLOW
        } else {
            STATUS_SUCCESS
        };
        (status, out)
    }

    /// The file at `path`, without following reparse points (ground truth).
    pub fn lookup(&self, path: &str) -> Option<FileId> {
        let (parts, _) = split_path(path).ok()?;
        let mut at = ROOT_ID;
        for p in parts {
            at = *self.file(at).children.get(&pattern::key(p))?;
        }
        Some(at)
    }

    /// Who may write the file (its DACL, see [`Writers`]).
    pub fn writers(&self, id: FileId) -> Option<Writers> {
        self.files.get(&id).map(|f| f.writers)
    }

    /// Sets who may write the file: the DACL a create gives a new file from its
    /// creator's token.
    pub fn set_writers(&mut self, id: FileId, writers: Writers) {
        if let Some(f) = self.files.get_mut(&id) {
            f.writers = writers;
        }
    }

    /// The file an open refers to.
    pub fn file_of(&self, open: OpenId) -> Option<FileId> {
        self.opens.get(&open).map(|o| o.file)
    }

    /// The node with this id.
    pub fn node(&self, id: FileId) -> Option<Node> {
        let f = self.files.get(&id)?;
        let m = self.meta(f);
        Some(Node {
            id,
            parent: f.parent(),
            name: f.first_name().to_owned(),
            directory: f.directory,
            attributes: m.attributes,
            times: f.times,
            size: m.size,
            allocation: m.allocation,
            reparse: f.reparse.clone(),
            delete_pending: f.delete_pending
                || self
                    .opens
                    .values()
                    .any(|o| o.file == id && o.delete_on_close),
        })
    }

    /// Allocated ranges of a file as `(offset, length)`, merged, cluster granular.
    pub fn allocated_ranges(&self, id: FileId) -> Vec<(u64, u64)> {
        let Some(f) = self.files.get(&id) else {
            return Vec::new();
        };
        if f.directory {
            return Vec::new();
        }
        if !f.sparse {
            let a = Self::allocation(f);
            return if a == 0 { Vec::new() } else { vec![(0, a)] };
        }
        let mut out: Vec<(u64, u64)> = Vec::new();
        for &i in f.clusters.keys() {
            match out.last_mut() {
                Some((s, l)) if *s + *l == i * CLUSTER => *l += CLUSTER,
                _ => out.push((i * CLUSTER, CLUSTER)),
            }
        }
        out
    }

    /// The volume-relative path of `id` (as FltGetFileNameInformation normalizes it).
    pub fn path_of(&self, id: FileId) -> Option<String> {
        let mut f = self.files.get(&id)?;
        if id == ROOT_ID {
            return Some("\\".into());
        }
        let mut parts = Vec::new();
        while f.id != ROOT_ID {
            let link = f.names.first()?;
            parts.push(link.name.as_str());
            f = self.files.get(&link.parent)?;
        }
        parts.reverse();
        Some(parts.iter().map(|p| format!("\\{p}")).collect())
    }
}

/// Data changed through a handle: last write and change time move unless that handle
/// froze them, and the file wants backing up again.
fn touch(f: &mut File, frozen: &[bool; 4], now: i64) {
    if !frozen[WRITE_TIME] {
        f.times[WRITE_TIME] = now;
    }
    if !frozen[CHANGE_TIME] {
        f.times[CHANGE_TIME] = now;
    }
    f.attributes |= FILE_ATTRIBUTE_ARCHIVE;
}

/// Drops what lies past `eof`, so that growing the file again reads zeros there.
fn truncate(f: &mut File, eof: u64) {
    let keep = eof.div_ceil(CLUSTER);
    f.clusters.retain(|&i, _| i < keep);
    let tail = (eof % CLUSTER) as usize;
    if tail != 0
        && let Some(c) = f.clusters.get_mut(&(eof / CLUSTER))
    {
        c[tail..].fill(0);
    }
}

/// Whether a reparse point met while parsing a path stops the open with STATUS_REPARSE.
///
/// Without an open-reparse entry for its tag it always does, except on the last
/// component opened with FILE_OPEN_REPARSE_POINT. With one (OPEN_REPARSE_LIST_ENTRY), the
/// entry's REPARSE_IF_* flags say where it still does; an entry without them opens the
/// reparse point wherever it is. FILE_OPEN_REPARSE_POINT still wins on the last
/// component unless the entry has OVERRIDE_CREATE_OPTION.
fn reparses(
    stored: &[u8],
    last: bool,
    directory: bool,
    next_exists: bool,
    req: &CreateRequest<'_>,
    encountered: &mut Vec<usize>,
) -> bool {
    let tag = reparse::tag_of(stored);
    let guid = reparse::guid_of(stored);
    let open_reparse_point = last && req.options & FILE_OPEN_REPARSE_POINT != 0;
    let index = req.open_reparse.iter().position(|e| {
        e.tag == tag && (reparse::is_microsoft(tag) || e.guid.is_none() || e.guid == guid)
    });
    let Some(entry) = index.and_then(|i| req.open_reparse.get(i)) else {
        return !open_reparse_point;
    };
    if let Some(i) = index.filter(|i| !encountered.contains(i)) {
        encountered.push(i);
    }
    let flag = |f: u32| entry.flags & f != 0;
    let by_entry = match (last, directory) {
        (false, true) => {
            if next_exists {
                flag(OPEN_REPARSE_POINT_REPARSE_IF_CHILD_EXISTS)
            } else {
                flag(OPEN_REPARSE_POINT_REPARSE_IF_CHILD_NOT_EXISTS)
            }
        }
        (false, false) => flag(OPEN_REPARSE_POINT_REPARSE_IF_NON_DIRECTORY_NON_FINAL_COMPONENT),
        (true, true) => flag(OPEN_REPARSE_POINT_REPARSE_IF_DIRECTORY_FINAL_COMPONENT),
        (true, false) => flag(OPEN_REPARSE_POINT_REPARSE_IF_NON_DIRECTORY_FINAL_COMPONENT),
    };
    if open_reparse_point && !flag(OPEN_REPARSE_POINT_OVERRIDE_CREATE_OPTION) {
        return false;
    }
    by_entry
}
