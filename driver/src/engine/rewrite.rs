//! In-place disguise of the buffers the file system returns: directory listings, file
//! queries and FSCTL_GET_REPARSE_POINT, for an open whose
//! [`Visibility`](super::visibility::Visibility) is `Disguise`.
//!
//! These buffers come straight from the file system and go straight back to the
//! application, so every function here is a pure function over `&mut [u8]` bounded by
//! the length the file system returned (`IoStatus.Information`), with no indexing that
//! could panic and no read or write outside that length.
//!
//! # What a disguised caller sees
//!
//! A cloudflt placeholder's entry gets FILE_ATTRIBUTE_REPARSE_POINT and the other
//! [`HiddenAttributes`] cleared, its tag field zeroed (EaSize in the classes where EaSize
//! carries the reparse tag, ReparsePointTag in the Extd and stat classes), and
//! FILE_ATTRIBUTE_NORMAL set if no attribute is left, which is how NTFS reports a file
//! without attributes. Entries with another tag (symbolic links, junctions, other
//! filters' reparse points) and entries without one are never touched.
//!
//! # Which entries are cloudflt's
//!
//! - Classes with a tag field decide by it: in the EaSize classes the entry is ours when
//!   it has FILE_ATTRIBUTE_REPARSE_POINT (otherwise EaSize is a genuine EA size, which
//!   could equal the tag by chance) and EaSize is [`TAG`]; in the Extd and stat classes
//!   when ReparsePointTag / ReparseTag is [`TAG`]. The tag is authoritative: it is what
//!   the caller would see.
//! - Directory classes without one (FileDirectoryInformation,
//!   FileIdGlobalTxDirectoryInformation) cannot tell a placeholder from a symbolic link.
//!   [`disguise_directory`] leaves them as they are; [`disguise_directory_with`] asks a
//!   closure for each entry that has FILE_ATTRIBUTE_REPARSE_POINT, by name, so the `nt`
//!   layer can decide (for instance from what it knows of the directory's children).
//!   FileNamesInformation carries no attributes at all and is only validated.
//! - Single-file classes without a tag (FileBasic, FileNetworkOpen, FileAll) use the
//!   `is_placeholder` flag the `nt` layer knows from the stream context, and only when
//!   the entry has FILE_ATTRIBUTE_REPARSE_POINT.
//!
//! # Malformed buffers
//!
//! Directory buffers are validated in full before the first byte changes: every entry
//! 8-byte aligned (each NextEntryOffset a multiple of 8), its fixed part and its name
//! (an even FileNameLength) inside the returned length, every NextEntryOffset past the
//! entry's own name and pointing inside the returned length. Offsets strictly advance,
//! so a walk ends. A buffer that fails is left exactly as it was and reported as
//! [`Malformed`]; the `nt` layer decides what to do with the I/O (a disguise that cannot
//! be applied should not be silently skipped: failing the request is the safe answer).
//!
//! Rewriting is idempotent: a rewritten entry no longer carries the tag, so a second
//! pass finds nothing to change.

pub use cloudflt_proto::reparse::TAG;

/// `FILE_ATTRIBUTE_SPARSE_FILE`.
pub const FILE_ATTRIBUTE_SPARSE_FILE: u32 = 0x0000_0200;
/// `FILE_ATTRIBUTE_REPARSE_POINT`.
pub const FILE_ATTRIBUTE_REPARSE_POINT: u32 = 0x0000_0400;
/// `FILE_ATTRIBUTE_OFFLINE`.
pub const FILE_ATTRIBUTE_OFFLINE: u32 = 0x0000_1000;
/// `FILE_ATTRIBUTE_NORMAL`: what NTFS reports for a file with no other attribute.
pub const FILE_ATTRIBUTE_NORMAL: u32 = 0x0000_0080;
/// `FILE_ATTRIBUTE_RECALL_ON_OPEN`.
pub const FILE_ATTRIBUTE_RECALL_ON_OPEN: u32 = 0x0004_0000;
/// `FILE_ATTRIBUTE_RECALL_ON_DATA_ACCESS`.
pub const FILE_ATTRIBUTE_RECALL_ON_DATA_ACCESS: u32 = 0x0040_0000;

/// The attribute bits a disguised caller does not see on a cloudflt placeholder.
/// FILE_ATTRIBUTE_REPARSE_POINT is always among them.
///
/// # The decision: REPARSE_POINT, SPARSE_FILE and OFFLINE hidden; RECALL_* visible
///
/// - REPARSE_POINT is the point of disguise: programs that take every reparse point for
///   a symbolic link fail on it.
/// - SPARSE_FILE and OFFLINE are hidden because the placeholder-compatibility contract
///   says so: with placeholders disguised, "the presence of a reparse point, the sparse
///   bit, and the offline bit" are hidden so the file looks normal (ntifs.h,
///   RtlSetProcessPlaceholderCompatibilityMode). Hiding SPARSE_FILE is also the safe
///   side for data: a copy or backup tool that sees it may ask for the allocated ranges
///   and copy only those, which on a partly hydrated placeholder silently turns the
///   missing data into zeros; without it the tool reads every byte, which hydrates.
///   Legacy tools skip or mark OFFLINE files as if the data were gone.
/// - RECALL_ON_DATA_ACCESS and RECALL_ON_OPEN stay visible. They exist so that programs
///   that understand them (indexers, antivirus, backup, Explorer) can avoid hydrating
///   whole sync roots by accident, the most common cloud-files complaint; programs that
///   predate them ignore unknown bits, and no program mistakes them for a link. Hiding
///   them would buy no compatibility and cost unwanted downloads.
///
/// The set is a parameter so the `nt` layer can change it (per sync root or from the
/// registry) without touching the walks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HiddenAttributes(u32);

impl HiddenAttributes {
    /// REPARSE_POINT, SPARSE_FILE and OFFLINE: the decision above.
    pub const DEFAULT: Self =
        Self(FILE_ATTRIBUTE_REPARSE_POINT | FILE_ATTRIBUTE_SPARSE_FILE | FILE_ATTRIBUTE_OFFLINE);

    /// Only FILE_ATTRIBUTE_REPARSE_POINT.
    pub const REPARSE_POINT_ONLY: Self = Self(FILE_ATTRIBUTE_REPARSE_POINT);

    /// `bits` plus FILE_ATTRIBUTE_REPARSE_POINT, which is always hidden. DIRECTORY
    /// (0x10) is never hidden: a directory placeholder must stay a directory.
    pub const fn new(bits: u32) -> Self {
        Self((bits | FILE_ATTRIBUTE_REPARSE_POINT) & !0x10)
    }

    /// The bits hidden.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// A placeholder's attributes as a disguised caller sees them.
    pub const fn apply(self, attributes: u32) -> u32 {
        let left = attributes & !self.0;
        if left == 0 {
            FILE_ATTRIBUTE_NORMAL
        } else {
            left
        }
    }
}

impl Default for HiddenAttributes {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Why a buffer was left untouched. `at` is the byte offset of the offending entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Malformed {
    /// The returned length is larger than the buffer.
    LengthBeyondBuffer {
        /// Returned length.
        returned: usize,
        /// Buffer length.
        buffer: usize,
    },
    /// An entry's fixed part runs past the returned length.
    TruncatedEntry {
        /// Offset of the entry.
        at: usize,
    },
    /// An odd FileNameLength, or a name running past the returned length.
    NameOutOfBounds {
        /// Offset of the entry.
        at: usize,
    },
    /// A NextEntryOffset that is not a multiple of 8.
    Misaligned {
        /// Offset of the entry.
        at: usize,
    },
    /// A NextEntryOffset that points into the entry's own fixed part or name.
    Overlapping {
        /// Offset of the entry.
        at: usize,
    },
    /// A NextEntryOffset that points at or past the returned length.
    NextBeyondEnd {
        /// Offset of the entry.
        at: usize,
    },
    /// A single-entry class returned fewer bytes than the fields to check need.
    Short {
        /// Bytes needed.
        needed: usize,
        /// Bytes returned.
        returned: usize,
    },
}

/// What a successful rewrite did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rewritten {
    /// Entries in the buffer (1 for a single-file class).
    pub entries: usize,
    /// Entries disguised.
    pub disguised: usize,
}

fn read_u32(buf: &[u8], at: usize) -> Option<u32> {
    let bytes = buf.get(at..at.checked_add(4)?)?;
    <[u8; 4]>::try_from(bytes).ok().map(u32::from_le_bytes)
}

fn write_u32(buf: &mut [u8], at: usize, value: u32) {
    if let Some(bytes) = at.checked_add(4).and_then(|end| buf.get_mut(at..end)) {
        bytes.copy_from_slice(&value.to_le_bytes());
    }
}

fn to_usize(v: u32) -> usize {
    usize::try_from(v).unwrap_or(usize::MAX)
}

/// Where an entry keeps the reparse tag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TagField {
    /// Nowhere.
    None,
    /// In EaSize, when the entry is a reparse point.
    EaSize(usize),
    /// In ReparsePointTag; EaSize next to it is a genuine EA size.
    Extd {
        /// Offset of EaSize.
        ea_size: usize,
        /// Offset of ReparsePointTag.
        tag: usize,
    },
}

/// The offsets in a directory entry that the walk reads or writes.
#[derive(Debug, Clone, Copy)]
struct DirLayout {
    /// Offset of FileName: the fixed part every entry has.
    fixed: usize,
    /// Offset of FileNameLength.
    name_length: usize,
    /// Offset of FileAttributes, if the class has it.
    attributes: Option<usize>,
    tag: TagField,
}

/// Offsets shared by every `FILE_*_DIR_INFORMATION` with attributes: NextEntryOffset,
/// FileIndex, four times, EndOfFile, AllocationSize, then these.
const DIR_ATTRIBUTES: usize = 56;
const DIR_NAME_LENGTH: usize = 60;
const DIR_EA_SIZE: usize = 64;
const DIR_REPARSE_TAG: usize = 68;

/// The directory information classes a disguised caller can enumerate with
/// (`FILE_INFORMATION_CLASS` of IRP_MJ_DIRECTORY_CONTROL / IRP_MN_QUERY_DIRECTORY).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirectoryClass {
    /// FileDirectoryInformation (1): attributes, no tag.
    Directory,
    /// FileFullDirectoryInformation (2): attributes, EaSize.
    FullDirectory,
    /// FileBothDirectoryInformation (3): attributes, EaSize.
    BothDirectory,
    /// FileNamesInformation (12): names only.
    Names,
    /// FileIdBothDirectoryInformation (37): attributes, EaSize.
    IdBothDirectory,
    /// FileIdFullDirectoryInformation (38): attributes, EaSize.
    IdFullDirectory,
    /// FileIdGlobalTxDirectoryInformation (50): attributes, no tag.
    IdGlobalTxDirectory,
    /// FileIdExtdDirectoryInformation (60): attributes, ReparsePointTag.
    IdExtdDirectory,
    /// FileIdExtdBothDirectoryInformation (63): attributes, ReparsePointTag.
    IdExtdBothDirectory,
    /// FileId64ExtdDirectoryInformation (78): attributes, ReparsePointTag.
    Id64ExtdDirectory,
    /// FileId64ExtdBothDirectoryInformation (79): attributes, ReparsePointTag.
    Id64ExtdBothDirectory,
    /// FileIdAllExtdDirectoryInformation (80): attributes, ReparsePointTag.
    IdAllExtdDirectory,
    /// FileIdAllExtdBothDirectoryInformation (81): attributes, ReparsePointTag.
    IdAllExtdBothDirectory,
}

impl DirectoryClass {
    /// Every class, in class-number order.
    pub const ALL: [Self; 13] = [
        Self::Directory,
        Self::FullDirectory,
        Self::BothDirectory,
        Self::Names,
        Self::IdBothDirectory,
        Self::IdFullDirectory,
        Self::IdGlobalTxDirectory,
        Self::IdExtdDirectory,
        Self::IdExtdBothDirectory,
        Self::Id64ExtdDirectory,
        Self::Id64ExtdBothDirectory,
        Self::IdAllExtdDirectory,
        Self::IdAllExtdBothDirectory,
    ];

    /// The class for a `FILE_INFORMATION_CLASS` value; `None` for classes that are not
    /// directory listings with entries to disguise (FileObjectIdInformation,
    /// FileReparsePointInformation and FileQuotaInformation enumerate NTFS metadata
    /// files with fixed records and are passed through).
    pub const fn from_raw(class: u32) -> Option<Self> {
        Some(match class {
            1 => Self::Directory,
            2 => Self::FullDirectory,
            3 => Self::BothDirectory,
            12 => Self::Names,
            37 => Self::IdBothDirectory,
            38 => Self::IdFullDirectory,
            50 => Self::IdGlobalTxDirectory,
            60 => Self::IdExtdDirectory,
            63 => Self::IdExtdBothDirectory,
            78 => Self::Id64ExtdDirectory,
            79 => Self::Id64ExtdBothDirectory,
            80 => Self::IdAllExtdDirectory,
            81 => Self::IdAllExtdBothDirectory,
            _ => return None,
        })
    }

    /// The `FILE_INFORMATION_CLASS` value.
    pub const fn raw(self) -> u32 {
        match self {
            Self::Directory => 1,
            Self::FullDirectory => 2,
            Self::BothDirectory => 3,
            Self::Names => 12,
            Self::IdBothDirectory => 37,
            Self::IdFullDirectory => 38,
            Self::IdGlobalTxDirectory => 50,
            Self::IdExtdDirectory => 60,
            Self::IdExtdBothDirectory => 63,
            Self::Id64ExtdDirectory => 78,
            Self::Id64ExtdBothDirectory => 79,
            Self::IdAllExtdDirectory => 80,
            Self::IdAllExtdBothDirectory => 81,
        }
    }

    /// Size of an entry's fixed part: the offset of FileName.
    pub const fn name_offset(self) -> usize {
        self.layout().fixed
    }

    /// Whether the class carries the reparse tag, so entries are recognised without
    /// help from the `nt` layer.
    pub const fn has_tag(self) -> bool {
        !matches!(self.layout().tag, TagField::None)
    }

    const fn layout(self) -> DirLayout {
        const fn ea(fixed: usize) -> DirLayout {
            DirLayout {
                fixed,
                name_length: DIR_NAME_LENGTH,
                attributes: Some(DIR_ATTRIBUTES),
                tag: TagField::EaSize(DIR_EA_SIZE),
            }
        }
        const fn extd(fixed: usize) -> DirLayout {
            DirLayout {
                fixed,
                name_length: DIR_NAME_LENGTH,
                attributes: Some(DIR_ATTRIBUTES),
                tag: TagField::Extd {
                    ea_size: DIR_EA_SIZE,
                    tag: DIR_REPARSE_TAG,
                },
            }
        }
        const fn untagged(fixed: usize) -> DirLayout {
            DirLayout {
                fixed,
                name_length: DIR_NAME_LENGTH,
                attributes: Some(DIR_ATTRIBUTES),
                tag: TagField::None,
            }
        }
        match self {
            Self::Directory => untagged(64),
            // EaSize, FileName.
            Self::FullDirectory => ea(68),
            // EaSize, ShortNameLength (CCHAR), ShortName[12] at 70, FileName at 94.
            Self::BothDirectory => ea(94),
            // NextEntryOffset, FileIndex, FileNameLength, FileName.
            Self::Names => DirLayout {
                fixed: 12,
                name_length: 8,
                attributes: None,
                tag: TagField::None,
            },
            // ... ShortName to 94, pad, FileId (LARGE_INTEGER) at 96, FileName at 104.
            Self::IdBothDirectory => ea(104),
            // EaSize, pad, FileId at 72, FileName at 80.
            Self::IdFullDirectory => ea(80),
            // FileId at 64, LockingTransactionId (GUID) at 72, TxInfoFlags at 88.
            Self::IdGlobalTxDirectory => untagged(92),
            // FileId (FILE_ID_128) at 72.
            Self::IdExtdDirectory => extd(88),
            // FileId128 at 72, ShortNameLength at 88, ShortName at 90.
            Self::IdExtdBothDirectory => extd(114),
            // FileId (LARGE_INTEGER) at 72.
            Self::Id64ExtdDirectory => extd(80),
            // FileId at 72, ShortNameLength at 80, ShortName at 82.
            Self::Id64ExtdBothDirectory => extd(106),
            // FileId at 72, FileId128 at 80.
            Self::IdAllExtdDirectory => extd(96),
            // FileId at 72, FileId128 at 80, ShortNameLength at 96, ShortName at 98.
            Self::IdAllExtdBothDirectory => extd(122),
        }
    }
}

/// An entry's FileName, as UTF-16LE bytes inside the buffer (not necessarily aligned for
/// `u16`, hence bytes).
#[derive(Debug, Clone, Copy)]
pub struct Name<'a>(pub(crate) &'a [u8]);

impl<'a> Name<'a> {
    /// The raw UTF-16LE bytes (an even count).
    pub fn bytes(&self) -> &'a [u8] {
        self.0
    }

    /// Length in UTF-16 units.
    pub fn len(&self) -> usize {
        self.0.len() / 2
    }

    /// Whether the name is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The UTF-16 units.
    pub fn units(&self) -> impl Iterator<Item = u16> + 'a {
        self.0
            .chunks_exact(2)
            .map(|pair| <[u8; 2]>::try_from(pair).map_or(0, u16::from_le_bytes))
    }
}

/// One validated entry.
#[derive(Debug, Clone, Copy)]
struct Entry {
    at: usize,
    name_end: usize,
    next: Option<usize>,
}

/// Validates the entry at `at` of `data` (the returned bytes only).
fn entry_at(layout: &DirLayout, data: &[u8], at: usize) -> Result<Entry, Malformed> {
    let fixed_end = at
        .checked_add(layout.fixed)
        .filter(|end| *end <= data.len())
        .ok_or(Malformed::TruncatedEntry { at })?;
    let field = |offset: usize| {
        at.checked_add(offset)
            .and_then(|pos| read_u32(data, pos))
            .ok_or(Malformed::TruncatedEntry { at })
    };
    let name_len = to_usize(field(layout.name_length)?);
    let name_end = fixed_end
        .checked_add(name_len)
        .filter(|end| name_len.is_multiple_of(2) && *end <= data.len())
        .ok_or(Malformed::NameOutOfBounds { at })?;
    let next = match to_usize(field(0)?) {
        0 => None,
        offset if !offset.is_multiple_of(8) => return Err(Malformed::Misaligned { at }),
        offset if offset < layout.fixed.saturating_add(name_len) => {
            return Err(Malformed::Overlapping { at });
        }
        offset => Some(
            at.checked_add(offset)
                .filter(|next| *next < data.len())
                .ok_or(Malformed::NextBeyondEnd { at })?,
        ),
    };
    Ok(Entry { at, name_end, next })
}

/// Walks every entry of `data`, validating each; the number of entries.
fn validate(layout: &DirLayout, data: &[u8]) -> Result<usize, Malformed> {
    let mut count = 0;
    let mut at = 0;
    loop {
        let entry = entry_at(layout, data, at)?;
        count += 1;
        match entry.next {
            Some(next) => at = next,
            None => return Ok(count),
        }
    }
}

/// Whether the entry at `at` is a cloudflt placeholder, judged by its tag field, or by
/// `untagged` where the class has none.
fn is_ours_entry(
    layout: &DirLayout,
    data: &[u8],
    entry: &Entry,
    untagged: &mut impl FnMut(Name<'_>) -> bool,
) -> bool {
    let at = entry.at;
    let read = |offset: usize| at.checked_add(offset).and_then(|pos| read_u32(data, pos));
    let Some(attributes) = layout.attributes.and_then(read) else {
        return false;
    };
    let reparse = attributes & FILE_ATTRIBUTE_REPARSE_POINT != 0;
    match layout.tag {
        TagField::EaSize(ea) => reparse && read(ea) == Some(TAG),
        TagField::Extd { tag, .. } => read(tag) == Some(TAG),
        TagField::None => {
            reparse
                && at
                    .checked_add(layout.fixed)
                    .and_then(|start| data.get(start..entry.name_end))
                    .is_some_and(|name| untagged(Name(name)))
        }
    }
}

/// Disguises one entry already known to be ours.
fn disguise_entry(layout: &DirLayout, data: &mut [u8], at: usize, hidden: HiddenAttributes) {
    let Some(attr_at) = layout.attributes.and_then(|a| at.checked_add(a)) else {
        return;
    };
    let Some(attributes) = read_u32(data, attr_at) else {
        return;
    };
    match layout.tag {
        TagField::EaSize(ea) => {
            if let Some(pos) = at.checked_add(ea) {
                write_u32(data, pos, 0);
            }
        }
        TagField::Extd { ea_size, tag } => {
            // Reparse points and EAs cannot coexist on NTFS, so on a reparse point an
            // EaSize equal to the tag is the tag mirrored, not an EA size.
            if let Some(pos) = at.checked_add(ea_size)
                && attributes & FILE_ATTRIBUTE_REPARSE_POINT != 0
                && read_u32(data, pos) == Some(TAG)
            {
                write_u32(data, pos, 0);
            }
            if let Some(pos) = at.checked_add(tag) {
                write_u32(data, pos, 0);
            }
        }
        TagField::None => {}
    }
    write_u32(data, attr_at, hidden.apply(attributes));
}

/// Disguises cloudflt's placeholders in a directory listing of `class`: `buffer` as the
/// file system filled it, `returned` the byte count it reported. Entries of classes
/// without a tag field are left as they are (see [`disguise_directory_with`]).
///
/// Validates the whole listing first; a malformed one is left exactly as it was.
pub fn disguise_directory(
    class: DirectoryClass,
    buffer: &mut [u8],
    returned: usize,
    hidden: HiddenAttributes,
) -> Result<Rewritten, Malformed> {
    disguise_directory_with(class, buffer, returned, hidden, |_| false)
}

/// As [`disguise_directory`], and for classes without a tag field asks `is_ours` about
/// each entry that has FILE_ATTRIBUTE_REPARSE_POINT, by name. `is_ours` is never called
/// for classes with a tag field, nor for a malformed buffer.
pub fn disguise_directory_with(
    class: DirectoryClass,
    buffer: &mut [u8],
    returned: usize,
    hidden: HiddenAttributes,
    mut is_ours: impl FnMut(Name<'_>) -> bool,
) -> Result<Rewritten, Malformed> {
    let buffer_len = buffer.len();
    let data = buffer
        .get_mut(..returned)
        .ok_or(Malformed::LengthBeyondBuffer {
            returned,
            buffer: buffer_len,
        })?;
    if data.is_empty() {
        return Ok(Rewritten::default());
    }
    let layout = class.layout();
    let entries = validate(&layout, data)?;
    let mut disguised = 0;
    if layout.attributes.is_some() {
        // Cannot fail after `validate`: disguising writes only attribute, EaSize and tag
        // fields, never a NextEntryOffset or FileNameLength, and entries do not overlap.
        let mut at = 0;
        loop {
            let entry = entry_at(&layout, data, at)?;
            if is_ours_entry(&layout, data, &entry, &mut is_ours) {
                disguise_entry(&layout, data, at, hidden);
                disguised += 1;
            }
            match entry.next {
                Some(next) => at = next,
                None => break,
            }
        }
    }
    Ok(Rewritten { entries, disguised })
}

/// The single-file information classes that report attributes (IRP_MJ_QUERY_INFORMATION,
/// and the same structures from IRP_MJ_QUERY_OPEN and NETWORK_QUERY_OPEN).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryClass {
    /// FileBasicInformation (4): FileAttributes at 32, no tag.
    Basic,
    /// FileAllInformation (18): BasicInformation first, no tag. Often partial
    /// (STATUS_BUFFER_OVERFLOW, the name cut short); only the returned bytes are touched.
    All,
    /// FileNetworkOpenInformation (34): FileAttributes at 48, no tag.
    NetworkOpen,
    /// FileAttributeTagInformation (35): FileAttributes at 0, ReparseTag at 4.
    AttributeTag,
    /// FileStatInformation (68): FileAttributes at 56, ReparseTag at 60.
    Stat,
    /// FileStatLxInformation (70): as FileStatInformation, then the Lx fields.
    StatLx,
    /// FileStatBasicInformation (77): as FileStatInformation, then device and volume
    /// fields.
    StatBasic,
}

/// Offsets of a single-file class's fields.
#[derive(Debug, Clone, Copy)]
struct QueryLayout {
    attributes: usize,
    tag: Option<usize>,
}

impl QueryClass {
    /// Every class, in class-number order.
    pub const ALL: [Self; 7] = [
        Self::Basic,
        Self::All,
        Self::NetworkOpen,
        Self::AttributeTag,
        Self::Stat,
        Self::StatLx,
        Self::StatBasic,
    ];

    /// The class for a `FILE_INFORMATION_CLASS` value; `None` for classes that report no
    /// attributes.
    pub const fn from_raw(class: u32) -> Option<Self> {
        Some(match class {
            4 => Self::Basic,
            18 => Self::All,
            34 => Self::NetworkOpen,
            35 => Self::AttributeTag,
            68 => Self::Stat,
            70 => Self::StatLx,
            77 => Self::StatBasic,
            _ => return None,
        })
    }

    /// The `FILE_INFORMATION_CLASS` value.
    pub const fn raw(self) -> u32 {
        match self {
            Self::Basic => 4,
            Self::All => 18,
            Self::NetworkOpen => 34,
            Self::AttributeTag => 35,
            Self::Stat => 68,
            Self::StatLx => 70,
            Self::StatBasic => 77,
        }
    }

    /// Whether the class carries the reparse tag (then `is_placeholder` is not needed).
    pub const fn has_tag(self) -> bool {
        self.layout().tag.is_some()
    }

    /// Bytes the file system must have returned for the class to be checked: up to the
    /// end of the attributes, and of the tag where there is one.
    pub const fn needed(self) -> usize {
        let l = self.layout();
        match l.tag {
            Some(tag) => tag + 4,
            None => l.attributes + 4,
        }
    }

    const fn layout(self) -> QueryLayout {
        match self {
            Self::Basic | Self::All => QueryLayout {
                attributes: 32,
                tag: None,
            },
            Self::NetworkOpen => QueryLayout {
                attributes: 48,
                tag: None,
            },
            Self::AttributeTag => QueryLayout {
                attributes: 0,
                tag: Some(4),
            },
            Self::Stat | Self::StatLx | Self::StatBasic => QueryLayout {
                attributes: 56,
                tag: Some(60),
            },
        }
    }
}

/// Disguises a single-file query result of `class`: `buffer` as the file system filled
/// it, `returned` the byte count it reported (for FileAll with STATUS_BUFFER_OVERFLOW,
/// the partial count). Classes with a tag field decide by it; the others disguise when
/// `is_placeholder` (the stream context says the file is cloudflt's) and the file
/// reports FILE_ATTRIBUTE_REPARSE_POINT. `Ok(true)` when it changed the buffer.
pub fn disguise_query(
    class: QueryClass,
    buffer: &mut [u8],
    returned: usize,
    is_placeholder: bool,
    hidden: HiddenAttributes,
) -> Result<bool, Malformed> {
    let buffer_len = buffer.len();
    let data = buffer
        .get_mut(..returned)
        .ok_or(Malformed::LengthBeyondBuffer {
            returned,
            buffer: buffer_len,
        })?;
    let needed = class.needed();
    let short = Malformed::Short { needed, returned };
    if data.len() < needed {
        return Err(short);
    }
    let layout = class.layout();
    let attributes = read_u32(data, layout.attributes).ok_or(short)?;
    let ours = match layout.tag {
        Some(tag) => read_u32(data, tag).ok_or(short)? == TAG,
        None => is_placeholder && attributes & FILE_ATTRIBUTE_REPARSE_POINT != 0,
    };
    if !ours {
        return Ok(false);
    }
    if let Some(tag) = layout.tag {
        write_u32(data, tag, 0);
    }
    write_u32(data, layout.attributes, hidden.apply(attributes));
    Ok(true)
}

/// Whether a single-file query result of `class` may show a reparse point: its attributes
/// have FILE_ATTRIBUTE_REPARSE_POINT, or too little was returned to read them (then the
/// caller must assume it does).
pub fn may_show_reparse_point(class: QueryClass, buffer: &[u8], returned: usize) -> bool {
    buffer
        .get(..returned)
        .and_then(|data| read_u32(data, class.layout().attributes))
        .is_none_or(|attributes| attributes & FILE_ATTRIBUTE_REPARSE_POINT != 0)
}

/// Whether the output of FSCTL_GET_REPARSE_POINT (a REPARSE_GUID_DATA_BUFFER, possibly cut
/// short with STATUS_BUFFER_OVERFLOW) is cloudflt's reparse point: its ReparseTag is
/// [`TAG`]. For a disguised caller the `nt` layer then answers
/// STATUS_NOT_A_REPARSE_POINT, after [`scrub_reparse_point`].
pub fn is_own_reparse_point(output: &[u8], returned: usize) -> bool {
    output.get(..returned).and_then(|data| read_u32(data, 0)) == Some(TAG)
}

/// If the output of FSCTL_GET_REPARSE_POINT is cloudflt's reparse point, zeroes the
/// returned bytes (the file system already copied the placeholder's reparse data into
/// the caller's buffer) and returns true; otherwise leaves it and returns false.
pub fn scrub_reparse_point(output: &mut [u8], returned: usize) -> bool {
    if !is_own_reparse_point(output, returned) {
        return false;
    }
    if let Some(data) = output.get_mut(..returned) {
        data.fill(0);
    }
    true
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_query_result_may_show_a_reparse_point_when_its_attributes_say_so_or_are_missing() {
        use super::{QueryClass, may_show_reparse_point};
        let mut basic = [0u8; 40];
        assert!(!may_show_reparse_point(QueryClass::Basic, &basic, 40));
        basic[32..36].copy_from_slice(&0x0400u32.to_le_bytes());
        assert!(may_show_reparse_point(QueryClass::Basic, &basic, 40));
        // Cut short before the attributes, or beyond the buffer: assume it may.
        assert!(may_show_reparse_point(QueryClass::Basic, &[0u8; 40], 20));
        assert!(may_show_reparse_point(QueryClass::Basic, &[0u8; 40], 41));
        let mut network = [0u8; 56];
        network[48..52].copy_from_slice(&0x0020u32.to_le_bytes());
        assert!(!may_show_reparse_point(
            QueryClass::NetworkOpen,
            &network,
            56
        ));
    }

    use super::*;
    use crate::engine::fuzz::{
        EntrySpec, SYMLINK, build_listing, check_directory, check_query, check_reparse_point,
        dir_fields, fuzz_rewrite, query_fields,
    };
    use proptest::prelude::*;
    use std::vec;
    use std::vec::Vec;

    const ARCHIVE: u32 = 0x20;
    const DIRECTORY: u32 = 0x10;

    fn name(s: &str) -> Vec<u16> {
        s.encode_utf16().collect()
    }

    fn entry(attributes: u32, ea_size: u32, reparse_tag: u32, n: &str) -> EntrySpec {
        EntrySpec {
            attributes,
            ea_size,
            reparse_tag,
            name: name(n),
            gap: 0,
        }
    }

    fn u32_at(buf: &[u8], at: usize) -> u32 {
        u32::from_le_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
    }

    /// Offsets of the entries of a well-formed listing.
    fn offsets(buf: &[u8]) -> Vec<usize> {
        let mut at = 0;
        let mut out = vec![0];
        loop {
            let next = u32_at(buf, at) as usize;
            if next == 0 {
                return out;
            }
            at += next;
            out.push(at);
        }
    }

    #[test]
    fn directory_layouts_match_the_structure_definitions() {
        for class in DirectoryClass::ALL {
            let f = dir_fields(class);
            let l = class.layout();
            assert_eq!(class.name_offset(), f.name, "{class:?} FileName");
            assert_eq!(l.name_length, f.name_length, "{class:?} FileNameLength");
            assert_eq!(l.attributes, f.attributes, "{class:?} FileAttributes");
            match l.tag {
                TagField::None => assert_eq!(f.reparse_tag, None, "{class:?}"),
                TagField::EaSize(ea) => {
                    assert_eq!(Some(ea), f.ea_size, "{class:?} EaSize");
                    assert_eq!(f.reparse_tag, None, "{class:?}");
                }
                TagField::Extd { ea_size, tag } => {
                    assert_eq!(Some(ea_size), f.ea_size, "{class:?} EaSize");
                    assert_eq!(Some(tag), f.reparse_tag, "{class:?} ReparsePointTag");
                }
            }
            assert_eq!(DirectoryClass::from_raw(class.raw()), Some(class));
        }
        // The untagged ones with attributes have no EaSize either.
        for class in [
            DirectoryClass::Directory,
            DirectoryClass::IdGlobalTxDirectory,
        ] {
            assert_eq!(dir_fields(class).ea_size, None);
            assert!(!class.has_tag());
        }
    }

    #[test]
    fn query_layouts_match_the_structure_definitions() {
        for class in QueryClass::ALL {
            let f = query_fields(class);
            let l = class.layout();
            assert_eq!(l.attributes, f.attributes, "{class:?} FileAttributes");
            assert_eq!(l.tag, f.tag, "{class:?} ReparseTag");
            assert!(class.needed() <= f.size, "{class:?}");
            assert_eq!(QueryClass::from_raw(class.raw()), Some(class));
        }
        assert_eq!(query_fields(QueryClass::StatBasic).size, 104);
    }

    #[test]
    fn class_numbers_are_the_documented_ones() {
        let dirs: Vec<u32> = DirectoryClass::ALL.iter().map(|c| c.raw()).collect();
        assert_eq!(dirs, [1, 2, 3, 12, 37, 38, 50, 60, 63, 78, 79, 80, 81]);
        let queries: Vec<u32> = QueryClass::ALL.iter().map(|c| c.raw()).collect();
        assert_eq!(queries, [4, 18, 34, 35, 68, 70, 77]);
        for raw in 0..200 {
            if let Some(c) = DirectoryClass::from_raw(raw) {
                assert_eq!(c.raw(), raw);
            }
            if let Some(c) = QueryClass::from_raw(raw) {
                assert_eq!(c.raw(), raw);
            }
        }
        assert_eq!(
            DirectoryClass::from_raw(33),
            None,
            "FileReparsePointInformation"
        );
        assert_eq!(
            DirectoryClass::from_raw(29),
            None,
            "FileObjectIdInformation"
        );
    }

    #[test]
    fn only_cloudflt_entries_change_in_an_ea_size_class() {
        let class = DirectoryClass::IdBothDirectory;
        let original = build_listing(
            class,
            &[
                entry(
                    FILE_ATTRIBUTE_REPARSE_POINT | FILE_ATTRIBUTE_SPARSE_FILE | ARCHIVE,
                    TAG,
                    0,
                    "placeholder.txt",
                ),
                entry(FILE_ATTRIBUTE_REPARSE_POINT, SYMLINK, 0, "link"),
                entry(ARCHIVE, 0, 0, "plain.txt"),
                entry(ARCHIVE, TAG, 0, "has-eas-of-that-size"),
                entry(
                    FILE_ATTRIBUTE_REPARSE_POINT | DIRECTORY,
                    TAG,
                    0,
                    "placeholder-dir",
                ),
            ],
        );
        let mut buf = original.clone();
        let len = buf.len();
        assert_eq!(
            disguise_directory(class, &mut buf, len, HiddenAttributes::DEFAULT),
            Ok(Rewritten {
                entries: 5,
                disguised: 2
            })
        );
        let at = offsets(&original);
        let mut want = original.clone();
        want[at[0] + 56..at[0] + 60].copy_from_slice(&ARCHIVE.to_le_bytes());
        want[at[0] + 64..at[0] + 68].copy_from_slice(&0u32.to_le_bytes());
        want[at[4] + 56..at[4] + 60].copy_from_slice(&DIRECTORY.to_le_bytes());
        want[at[4] + 64..at[4] + 68].copy_from_slice(&0u32.to_le_bytes());
        assert_eq!(buf, want);
    }

    #[test]
    fn extd_classes_clear_the_tag_and_a_mirrored_ea_size() {
        for class in [
            DirectoryClass::IdExtdDirectory,
            DirectoryClass::IdExtdBothDirectory,
            DirectoryClass::Id64ExtdDirectory,
            DirectoryClass::Id64ExtdBothDirectory,
            DirectoryClass::IdAllExtdDirectory,
            DirectoryClass::IdAllExtdBothDirectory,
        ] {
            let original = build_listing(
                class,
                &[
                    entry(FILE_ATTRIBUTE_REPARSE_POINT, 0, TAG, "a"),
                    entry(FILE_ATTRIBUTE_REPARSE_POINT, TAG, TAG, "mirrored"),
                    entry(FILE_ATTRIBUTE_REPARSE_POINT, 0, SYMLINK, "link"),
                    entry(ARCHIVE, TAG, 0, "eas"),
                ],
            );
            let mut buf = original.clone();
            let len = buf.len();
            assert_eq!(
                disguise_directory(class, &mut buf, len, HiddenAttributes::DEFAULT)
                    .map(|r| r.disguised),
                Ok(2),
                "{class:?}"
            );
            let at = offsets(&buf);
            for (i, (attributes, ea, tag)) in [
                (FILE_ATTRIBUTE_NORMAL, 0, 0),
                (FILE_ATTRIBUTE_NORMAL, 0, 0),
                (FILE_ATTRIBUTE_REPARSE_POINT, 0, SYMLINK),
                (ARCHIVE, TAG, 0),
            ]
            .into_iter()
            .enumerate()
            {
                assert_eq!(u32_at(&buf, at[i] + 56), attributes, "{class:?} entry {i}");
                assert_eq!(u32_at(&buf, at[i] + 64), ea, "{class:?} entry {i}");
                assert_eq!(u32_at(&buf, at[i] + 68), tag, "{class:?} entry {i}");
            }
        }
    }

    #[test]
    fn untagged_classes_ask_the_nt_layer_by_name() {
        for class in [
            DirectoryClass::Directory,
            DirectoryClass::IdGlobalTxDirectory,
        ] {
            let original = build_listing(
                class,
                &[
                    entry(FILE_ATTRIBUTE_REPARSE_POINT | ARCHIVE, 0, 0, "ours"),
                    entry(FILE_ATTRIBUTE_REPARSE_POINT, 0, 0, "link"),
                    entry(ARCHIVE, 0, 0, "ours"),
                ],
            );
            let len = original.len();
            let mut untouched = original.clone();
            assert_eq!(
                disguise_directory(class, &mut untouched, len, HiddenAttributes::DEFAULT),
                Ok(Rewritten {
                    entries: 3,
                    disguised: 0
                })
            );
            assert_eq!(untouched, original, "no tag, no closure: left alone");

            let mut asked = Vec::new();
            let mut buf = original.clone();
            let done =
                disguise_directory_with(class, &mut buf, len, HiddenAttributes::DEFAULT, |n| {
                    let s: Vec<u16> = n.units().collect();
                    assert_eq!(n.len(), s.len());
                    assert_eq!(n.bytes().len(), 2 * s.len());
                    asked.push(std::string::String::from_utf16_lossy(&s));
                    s == name("ours")
                });
            assert_eq!(done.map(|r| r.disguised), Ok(1));
            assert_eq!(
                asked,
                ["ours", "link"],
                "only reparse points are asked about"
            );
            let at = offsets(&buf);
            assert_eq!(u32_at(&buf, at[0] + 56), ARCHIVE);
            assert_eq!(u32_at(&buf, at[1] + 56), FILE_ATTRIBUTE_REPARSE_POINT);
            assert_eq!(u32_at(&buf, at[2] + 56), ARCHIVE);
        }
    }

    #[test]
    fn names_listings_are_only_validated() {
        let original = build_listing(
            DirectoryClass::Names,
            &[entry(0, 0, 0, "a"), entry(0, 0, 0, "bcd")],
        );
        let mut buf = original.clone();
        let len = buf.len();
        let mut asked = 0;
        let done = disguise_directory_with(
            DirectoryClass::Names,
            &mut buf,
            len,
            HiddenAttributes::DEFAULT,
            |_| {
                asked += 1;
                true
            },
        );
        assert_eq!(asked, 0, "FileNames has no attributes to ask about");
        assert_eq!(
            done,
            Ok(Rewritten {
                entries: 2,
                disguised: 0
            })
        );
        assert_eq!(buf, original);
        buf[8] = 3; // odd FileNameLength
        assert_eq!(
            disguise_directory(
                DirectoryClass::Names,
                &mut buf,
                len,
                HiddenAttributes::DEFAULT
            ),
            Err(Malformed::NameOutOfBounds { at: 0 })
        );
    }

    #[test]
    fn the_hidden_set_is_a_parameter() {
        let class = DirectoryClass::FullDirectory;
        let all = FILE_ATTRIBUTE_REPARSE_POINT
            | FILE_ATTRIBUTE_SPARSE_FILE
            | FILE_ATTRIBUTE_OFFLINE
            | FILE_ATTRIBUTE_RECALL_ON_DATA_ACCESS
            | FILE_ATTRIBUTE_RECALL_ON_OPEN
            | ARCHIVE;
        let original = build_listing(class, &[entry(all, TAG, 0, "p")]);
        let len = original.len();
        for (hidden, left) in [
            (
                HiddenAttributes::DEFAULT,
                FILE_ATTRIBUTE_RECALL_ON_DATA_ACCESS | FILE_ATTRIBUTE_RECALL_ON_OPEN | ARCHIVE,
            ),
            (
                HiddenAttributes::REPARSE_POINT_ONLY,
                all & !FILE_ATTRIBUTE_REPARSE_POINT,
            ),
            (
                HiddenAttributes::new(FILE_ATTRIBUTE_RECALL_ON_DATA_ACCESS | DIRECTORY),
                all & !FILE_ATTRIBUTE_REPARSE_POINT & !FILE_ATTRIBUTE_RECALL_ON_DATA_ACCESS,
            ),
        ] {
            let mut buf = original.clone();
            assert_eq!(
                disguise_directory(class, &mut buf, len, hidden).map(|r| r.disguised),
                Ok(1)
            );
            assert_eq!(u32_at(&buf, 56), left, "{hidden:?}");
            assert_eq!(u32_at(&buf, 64), 0);
        }
        assert_eq!(
            HiddenAttributes::new(0),
            HiddenAttributes::REPARSE_POINT_ONLY
        );
        assert_eq!(HiddenAttributes::default(), HiddenAttributes::DEFAULT);
        assert_eq!(
            HiddenAttributes::new(DIRECTORY).bits() & DIRECTORY,
            0,
            "a directory stays a directory"
        );
    }

    /// A valid two-entry FileFullDirectoryInformation listing with entry 0 ours.
    fn two_entries() -> Vec<u8> {
        build_listing(
            DirectoryClass::FullDirectory,
            &[
                entry(FILE_ATTRIBUTE_REPARSE_POINT, TAG, 0, "abc"),
                entry(FILE_ATTRIBUTE_REPARSE_POINT, TAG, 0, "de"),
            ],
        )
    }

    #[test]
    fn each_malformation_is_reported_and_leaves_the_buffer_alone() {
        let class = DirectoryClass::FullDirectory;
        let good = two_entries();
        // Entry 0: 68 + 6 bytes, next at 80; entry 1: 68 + 4 bytes.
        assert_eq!(good.len(), 80 + 72);
        let set = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut b = good.clone();
            f(&mut b);
            b
        };
        let cases: Vec<(Vec<u8>, usize, Malformed)> = vec![
            (
                good.clone(),
                good.len() + 1,
                Malformed::LengthBeyondBuffer {
                    returned: good.len() + 1,
                    buffer: good.len(),
                },
            ),
            (good.clone(), 60, Malformed::TruncatedEntry { at: 0 }),
            (good.clone(), 80 + 67, Malformed::TruncatedEntry { at: 80 }),
            (good.clone(), 80 + 70, Malformed::NameOutOfBounds { at: 80 }),
            (
                set(&|b| b[60..64].copy_from_slice(&5u32.to_le_bytes())),
                good.len(),
                Malformed::NameOutOfBounds { at: 0 },
            ),
            (
                set(&|b| b[80 + 60..80 + 64].copy_from_slice(&u32::MAX.to_le_bytes())),
                good.len(),
                Malformed::NameOutOfBounds { at: 80 },
            ),
            (
                set(&|b| b[0..4].copy_from_slice(&84u32.to_le_bytes())),
                good.len(),
                Malformed::Misaligned { at: 0 },
            ),
            (
                set(&|b| b[0..4].copy_from_slice(&72u32.to_le_bytes())),
                good.len(),
                Malformed::Overlapping { at: 0 },
            ),
            (
                set(&|b| b[0..4].copy_from_slice(&160u32.to_le_bytes())),
                good.len(),
                Malformed::NextBeyondEnd { at: 0 },
            ),
            (good.clone(), 80, Malformed::NextBeyondEnd { at: 0 }),
            (
                set(&|b| b[80..84].copy_from_slice(&u32::MAX.to_le_bytes())),
                good.len(),
                Malformed::Misaligned { at: 80 },
            ),
            (
                set(&|b| b[80..84].copy_from_slice(&0xFFFF_FFF8u32.to_le_bytes())),
                good.len(),
                Malformed::NextBeyondEnd { at: 80 },
            ),
        ];
        for (i, (original, returned, error)) in cases.into_iter().enumerate() {
            let mut buf = original.clone();
            assert_eq!(
                disguise_directory(class, &mut buf, returned, HiddenAttributes::DEFAULT),
                Err(error),
                "case {i}"
            );
            assert_eq!(
                buf, original,
                "case {i}: entry 0 was valid and ours, yet untouched"
            );
        }
    }

    #[test]
    fn nothing_returned_is_nothing_to_do() {
        let mut buf = two_entries();
        let original = buf.clone();
        assert_eq!(
            disguise_directory(
                DirectoryClass::FullDirectory,
                &mut buf,
                0,
                HiddenAttributes::DEFAULT
            ),
            Ok(Rewritten::default())
        );
        assert_eq!(buf, original);
    }

    #[test]
    fn only_the_returned_length_is_read_and_written() {
        // The bytes after `returned` hold what looks like a second entry of ours; the
        // first entry ends the listing within `returned`.
        let mut buf = two_entries();
        buf[0..4].copy_from_slice(&0u32.to_le_bytes());
        let original = buf.clone();
        assert_eq!(
            disguise_directory(
                DirectoryClass::FullDirectory,
                &mut buf,
                74,
                HiddenAttributes::DEFAULT
            )
            .map(|r| r.entries),
            Ok(1)
        );
        assert_eq!(buf[74..], original[74..]);
    }

    fn query_buffer(class: QueryClass, attributes: u32, tag: u32) -> Vec<u8> {
        let f = query_fields(class);
        let mut buf = vec![0xEE; f.size];
        buf[f.attributes..f.attributes + 4].copy_from_slice(&attributes.to_le_bytes());
        if let Some(t) = f.tag {
            buf[t..t + 4].copy_from_slice(&tag.to_le_bytes());
        }
        buf
    }

    #[test]
    fn queries_with_a_tag_decide_by_it() {
        for class in [
            QueryClass::AttributeTag,
            QueryClass::Stat,
            QueryClass::StatLx,
            QueryClass::StatBasic,
        ] {
            let f = query_fields(class);
            let t = f.tag.unwrap_or(0);
            let original = query_buffer(class, FILE_ATTRIBUTE_REPARSE_POINT | ARCHIVE, TAG);
            let len = original.len();
            for is_placeholder in [false, true] {
                let mut buf = original.clone();
                assert_eq!(
                    disguise_query(
                        class,
                        &mut buf,
                        len,
                        is_placeholder,
                        HiddenAttributes::DEFAULT
                    ),
                    Ok(true),
                    "{class:?}"
                );
                let mut want = original.clone();
                want[f.attributes..f.attributes + 4].copy_from_slice(&ARCHIVE.to_le_bytes());
                want[t..t + 4].copy_from_slice(&0u32.to_le_bytes());
                assert_eq!(buf, want, "{class:?}");
            }
            let symlink = query_buffer(class, FILE_ATTRIBUTE_REPARSE_POINT, SYMLINK);
            let mut buf = symlink.clone();
            assert_eq!(
                disguise_query(class, &mut buf, len, true, HiddenAttributes::DEFAULT),
                Ok(false),
                "{class:?}: another tag, whatever the stream context says"
            );
            assert_eq!(buf, symlink);
        }
    }

    #[test]
    fn queries_without_a_tag_use_the_stream_context() {
        for class in [QueryClass::Basic, QueryClass::NetworkOpen, QueryClass::All] {
            let f = query_fields(class);
            let original = query_buffer(
                class,
                FILE_ATTRIBUTE_REPARSE_POINT | FILE_ATTRIBUTE_OFFLINE,
                0,
            );
            let len = original.len();
            let mut buf = original.clone();
            assert_eq!(
                disguise_query(class, &mut buf, len, false, HiddenAttributes::DEFAULT),
                Ok(false)
            );
            assert_eq!(buf, original);
            assert_eq!(
                disguise_query(class, &mut buf, len, true, HiddenAttributes::DEFAULT),
                Ok(true)
            );
            let mut want = original.clone();
            want[f.attributes..f.attributes + 4]
                .copy_from_slice(&FILE_ATTRIBUTE_NORMAL.to_le_bytes());
            assert_eq!(buf, want, "{class:?}");
            // A placeholder that has lost its reparse point is not touched.
            let plain = query_buffer(class, FILE_ATTRIBUTE_SPARSE_FILE, 0);
            let mut buf = plain.clone();
            assert_eq!(
                disguise_query(class, &mut buf, len, true, HiddenAttributes::DEFAULT),
                Ok(false)
            );
            assert_eq!(buf, plain);
        }
    }

    #[test]
    fn a_partial_file_all_is_rewritten_within_what_was_returned() {
        let class = QueryClass::All;
        let original = query_buffer(class, FILE_ATTRIBUTE_REPARSE_POINT | ARCHIVE, 0);
        // STATUS_BUFFER_OVERFLOW: the fixed part and part of the name.
        for returned in [36, 40, 100] {
            let mut buf = original.clone();
            assert_eq!(
                disguise_query(class, &mut buf, returned, true, HiddenAttributes::DEFAULT),
                Ok(true)
            );
            assert_eq!(u32_at(&buf, 32), ARCHIVE);
            assert_eq!(buf[36..], original[36..]);
        }
        let mut buf = original.clone();
        assert_eq!(
            disguise_query(class, &mut buf, 35, true, HiddenAttributes::DEFAULT),
            Err(Malformed::Short {
                needed: 36,
                returned: 35
            })
        );
        assert_eq!(
            disguise_query(class, &mut buf, 1000, true, HiddenAttributes::DEFAULT),
            Err(Malformed::LengthBeyondBuffer {
                returned: 1000,
                buffer: original.len()
            })
        );
        assert_eq!(buf, original);
    }

    #[test]
    fn get_reparse_point_output_is_recognised_by_tag() {
        let mut out = vec![0u8; 40];
        out[0..4].copy_from_slice(&TAG.to_le_bytes());
        out[4..6].copy_from_slice(&16u16.to_le_bytes());
        out[8..24].copy_from_slice(&cloudflt_proto::reparse::GUID);
        out[24..40].fill(0x5A);
        assert!(is_own_reparse_point(&out, 40));
        assert!(
            is_own_reparse_point(&out, 8),
            "cut short: the header is enough"
        );
        assert!(!is_own_reparse_point(&out, 3));
        assert!(!is_own_reparse_point(&out, 41));
        let mut scrubbed = out.clone();
        assert!(scrub_reparse_point(&mut scrubbed, 24));
        assert!(scrubbed[..24].iter().all(|b| *b == 0));
        assert_eq!(scrubbed[24..], out[24..]);
        let mut symlink = out.clone();
        symlink[0..4].copy_from_slice(&SYMLINK.to_le_bytes());
        let before = symlink.clone();
        assert!(!scrub_reparse_point(&mut symlink, 40));
        assert_eq!(symlink, before);
        for returned in 0..48 {
            check_reparse_point(&out, returned);
        }
    }

    fn any_directory_class() -> impl Strategy<Value = DirectoryClass> {
        proptest::sample::select(DirectoryClass::ALL.to_vec())
    }

    fn any_query_class() -> impl Strategy<Value = QueryClass> {
        proptest::sample::select(QueryClass::ALL.to_vec())
    }

    fn any_hidden() -> impl Strategy<Value = HiddenAttributes> {
        prop_oneof![
            Just(HiddenAttributes::DEFAULT),
            Just(HiddenAttributes::REPARSE_POINT_ONLY),
            any::<u32>().prop_map(HiddenAttributes::new),
        ]
    }

    fn any_tag() -> impl Strategy<Value = u32> {
        prop_oneof![Just(TAG), Just(SYMLINK), Just(0u32), any::<u32>()]
    }

    fn any_entry() -> impl Strategy<Value = EntrySpec> {
        (
            prop_oneof![
                any::<u32>(),
                any::<u32>().prop_map(|a| a | FILE_ATTRIBUTE_REPARSE_POINT),
                Just(FILE_ATTRIBUTE_REPARSE_POINT),
            ],
            any_tag(),
            any_tag(),
            proptest::collection::vec(any::<u16>(), 0..40),
            0usize..3,
        )
            .prop_map(|(attributes, ea_size, reparse_tag, name, gap)| EntrySpec {
                attributes,
                ea_size,
                reparse_tag,
                name,
                gap: gap * 8,
            })
    }

    /// Whether the oracle-independent rules say `e` is cloudflt's in `class`.
    fn is_ours(class: DirectoryClass, e: &EntrySpec) -> bool {
        let f = dir_fields(class);
        let reparse = e.attributes & FILE_ATTRIBUTE_REPARSE_POINT != 0;
        match (f.attributes, f.ea_size, f.reparse_tag) {
            (None, _, _) => false,
            (Some(_), _, Some(_)) => e.reparse_tag == TAG,
            (Some(_), Some(_), None) => reparse && e.ea_size == TAG,
            (Some(_), None, None) => false,
        }
    }

    proptest! {
        #[test]
        fn only_cloudflt_entries_change_and_only_their_attributes_and_tag(
            class in any_directory_class(),
            entries in proptest::collection::vec(any_entry(), 1..12),
            hidden in any_hidden(),
        ) {
            let original = build_listing(class, &entries);
            let f = dir_fields(class);
            let mut buf = original.clone();
            let len = buf.len();
            let done = disguise_directory(class, &mut buf, len, hidden);
            let ours = entries.iter().filter(|e| is_ours(class, e)).count();
            prop_assert_eq!(done, Ok(Rewritten { entries: entries.len(), disguised: ours }));
            let at = offsets(&original);
            let mut expected = original.clone();
            for (e, &start) in entries.iter().zip(&at) {
                if !is_ours(class, e) {
                    continue;
                }
                let attr = f.attributes.unwrap_or(0);
                let left = e.attributes & !hidden.bits();
                let left = if left == 0 { FILE_ATTRIBUTE_NORMAL } else { left };
                expected[start + attr..start + attr + 4].copy_from_slice(&left.to_le_bytes());
                prop_assert_eq!(left & FILE_ATTRIBUTE_REPARSE_POINT, 0);
                if let Some(t) = f.reparse_tag {
                    expected[start + t..start + t + 4].copy_from_slice(&[0; 4]);
                }
                if let Some(ea) = f.ea_size {
                    let mirrored = f.reparse_tag.is_none()
                        || (e.attributes & FILE_ATTRIBUTE_REPARSE_POINT != 0 && e.ea_size == TAG);
                    if mirrored {
                        expected[start + ea..start + ea + 4].copy_from_slice(&[0; 4]);
                    }
                }
            }
            prop_assert_eq!(&buf, &expected);
            // Twice is once.
            let mut again = buf.clone();
            prop_assert_eq!(
                disguise_directory(class, &mut again, len, hidden).map(|r| r.disguised),
                Ok(0)
            );
            prop_assert_eq!(again, buf);
            check_directory(class, &original, len, hidden);
        }

        #[test]
        fn corrupted_listings_never_panic_and_are_untouched_if_rejected(
            class in any_directory_class(),
            entries in proptest::collection::vec(any_entry(), 1..6),
            hidden in any_hidden(),
            at in any::<usize>(),
            value in any::<u8>(),
            cut in any::<usize>(),
        ) {
            let mut buf = build_listing(class, &entries);
            let i = at % buf.len();
            buf[i] = value;
            let returned = cut % (buf.len() + 2);
            check_directory(class, &buf, returned, hidden);
        }

        #[test]
        fn arbitrary_bytes_never_panic_and_are_untouched_if_rejected(
            class in any_directory_class(),
            bytes in proptest::collection::vec(any::<u8>(), 0..600),
            hidden in any_hidden(),
            cut in any::<usize>(),
        ) {
            let returned = cut % (bytes.len() + 2);
            check_directory(class, &bytes, returned, hidden);
            check_directory(class, &bytes, bytes.len(), hidden);
        }

        #[test]
        fn queries_agree_with_the_oracle(
            class in any_query_class(),
            attributes in any::<u32>(),
            tag in any_tag(),
            is_placeholder in any::<bool>(),
            hidden in any_hidden(),
            cut in any::<usize>(),
        ) {
            let buf = query_buffer(class, attributes, tag);
            let returned = cut % (buf.len() + 2);
            check_query(class, &buf, returned, is_placeholder, hidden);
            check_query(class, &buf, buf.len(), is_placeholder, hidden);
        }

        #[test]
        fn arbitrary_fuzz_inputs_hold(data in proptest::collection::vec(any::<u8>(), 0..700)) {
            fuzz_rewrite(&data);
        }
    }

    #[test]
    fn structured_fuzz_inputs_hold_for_every_class() {
        for selector in 0..=(DirectoryClass::ALL.len() + QueryClass::ALL.len()) as u8 {
            for flags in [0x80u8, 0x81, 0x82, 0x84, 0xA0, 0xC0, 0x00] {
                let mut input = vec![selector, flags, 0x30, 0x00];
                for k in 0..40u8 {
                    input.extend_from_slice(&[k, k.wrapping_mul(7), k.wrapping_mul(13), k]);
                }
                fuzz_rewrite(&input);
            }
        }
    }
}
