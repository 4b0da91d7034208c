//! Population (issue 15): a directory placeholder that is not populated yet is filled
//! from its provider the first time someone lists it or opens a name under it (cfapi's
//! population policy FULL).
//!
//! The driver asks with [`FetchPlaceholders`] (cfapi's FETCH_PLACEHOLDERS: "to satisfy a
//! directory query or an attempt to open a file underneath the directory"), carrying the
//! pattern the query asked for; the provider answers with one or more
//! [`TransferPlaceholders`] batches (CfExecute TRANSFER_PLACEHOLDERS: the total count,
//! the entries, [`PopulationFlags`]); each batch's reply carries
//! [`TransferPlaceholdersResult`]: how many entries were processed and each entry's
//! status, so that a name that already exists locally is reported, never overwritten. A
//! batch with a failure status ends the population with it. The driver gives up on a
//! population with [`CancelFetchPlaceholders`] (timeout, or nobody waiting any more).

use super::*;

flags! {
    /// Flags of a [`TransferPlaceholders`] batch (cfapi's
    /// CF_OPERATION_TRANSFER_PLACEHOLDERS_FLAGS).
    PopulationFlags(u32) {
        /// No flag set.
        EMPTY = 0,
        /// Stop at the first entry that fails; the rest of the batch is not processed
        /// (STOP_ON_ERROR).
        STOP_ON_ERROR = 1,
        /// The directory is complete: do not ask for it again
        /// (DISABLE_ON_DEMAND_POPULATION), honoured only once every entry of the
        /// directory arrived and was created.
        DISABLE_ON_DEMAND_POPULATION = 2,
    } all = 3
}

/// Fixed part of a [`FetchPlaceholders`].
const FETCH_PLACEHOLDERS_FIXED: usize = 32;

/// Kernel → provider: fill the directory placeholder at `path`.
///
/// Fixed part (32 bytes): directory file id `u64`, priority `u8`, flags `u8`
/// ([`RequestFlags`]), 2 reserved, requestor pid `u32`, requestor image length `u16`,
/// path length `u16`, pattern length `u16`, identity length `u16`, command line length
/// `u16`, root file identity length `u16`, sync-root identity length `u32`. Then the
/// requestor image, the path, the pattern (UTF-16LE each), the identity, the command
/// line (UTF-16LE), the sync-root identity, the root file identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchPlaceholders<'a> {
    /// Identifies this population; transfers and the cancellation name it.
    pub request_id: u64,
    /// The NTFS file id of the directory.
    pub file_id: u64,
    /// Priority hint, 0 (lowest) to [`MAX_PRIORITY`].
    pub priority: u8,
    /// What the request carries besides.
    pub flags: RequestFlags,
    /// The process whose listing or open caused the population.
    pub requestor_pid: u32,
    /// That process's image path, at most [`MAX_IMAGE_BYTES`].
    pub requestor_image: Utf16<'a>,
    /// The directory's path relative to the sync root (empty for the root itself; its
    /// full NT path with [`RequestFlags::FULL_PATH`]), at most [`MAX_PATH_BYTES`].
    pub path: Utf16<'a>,
    /// The pattern the query asked for (`*` for an open beneath the directory), at most
    /// [`MAX_PATTERN_BYTES`]. A hint: the provider transfers the whole directory.
    pub pattern: Utf16<'a>,
    /// The provider's identity of the directory, at most [`MAX_IDENTITY_LEN`].
    pub identity: &'a [u8],
    /// With [`RequestFlags::PROCESS_INFO`], the requestor's command line, at most
    /// [`MAX_COMMAND_LINE_BYTES`]; empty otherwise.
    pub requestor_command_line: Utf16<'a>,
    /// The sync root's identity, at most [`MAX_SYNC_ROOT_IDENTITY_LEN`].
    pub sync_root_identity: &'a [u8],
    /// The root directory's file identity, when the directory is the root itself; at
    /// most [`MAX_IDENTITY_LEN`].
    pub root_file_identity: &'a [u8],
}

/// Longest pattern a [`FetchPlaceholders`] carries, in bytes (a directory query's file
/// name: one component).
pub const MAX_PATTERN_BYTES: usize = 255 * 2;

/// The longest [`FetchPlaceholders`] fits the providers' receive buffers.
const _: () = assert!(
    HEADER_SIZE
        + FETCH_PLACEHOLDERS_FIXED
        + MAX_IMAGE_BYTES
        + MAX_PATH_BYTES
        + MAX_PATTERN_BYTES
        + MAX_IDENTITY_LEN
        + MAX_COMMAND_LINE_BYTES
        + MAX_SYNC_ROOT_IDENTITY_LEN
        + MAX_IDENTITY_LEN
        <= MAX_KERNEL_MESSAGE_LEN
);

impl<'a> FetchPlaceholders<'a> {
    fn body_len(&self) -> usize {
        FETCH_PLACEHOLDERS_FIXED
            .saturating_add(self.requestor_image.byte_len())
            .saturating_add(self.path.byte_len())
            .saturating_add(self.pattern.byte_len())
            .saturating_add(self.identity.len())
            .saturating_add(self.requestor_command_line.byte_len())
            .saturating_add(self.sync_root_identity.len())
            .saturating_add(self.root_file_identity.len())
    }

    fn check(&self) -> Result<(), EncodeError> {
        if self.priority > MAX_PRIORITY {
            return Err(EncodeError::BadValue(Field::Priority));
        }
        Ok(())
    }

    fn write_body(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        let image_len = str_len(
            &self.requestor_image,
            MAX_IMAGE_BYTES,
            Field::RequestorImage,
        )?;
        let path_len = str_len(&self.path, MAX_PATH_BYTES, Field::Path)?;
        let pattern_len = str_len(&self.pattern, MAX_PATTERN_BYTES, Field::Pattern)?;
        let identity_len = identity_len(self.identity)?;
        let command_line_len = str_len(
            &self.requestor_command_line,
            MAX_COMMAND_LINE_BYTES,
            Field::CommandLine,
        )?;
        if self.sync_root_identity.len() > MAX_SYNC_ROOT_IDENTITY_LEN {
            return Err(EncodeError::TooLarge(Field::SyncRootIdentity));
        }
        if self.root_file_identity.len() > MAX_IDENTITY_LEN {
            return Err(EncodeError::TooLarge(Field::RootFileIdentity));
        }
        w.u64(self.file_id)?;
        w.u8(self.priority)?;
        w.u8(self.flags.bits())?;
        w.zeros(2)?;
        w.u32(self.requestor_pid)?;
        w.u16(image_len)?;
        w.u16(path_len)?;
        w.u16(pattern_len)?;
        w.u16(identity_len)?;
        w.u16(command_line_len)?;
        w.u16(self.root_file_identity.len() as u16)?;
        w.u32(self.sync_root_identity.len() as u32)?;
        w.utf16(&self.requestor_image)?;
        w.utf16(&self.path)?;
        w.utf16(&self.pattern)?;
        w.put(self.identity)?;
        w.utf16(&self.requestor_command_line)?;
        w.put(self.sync_root_identity)?;
        w.put(self.root_file_identity)
    }

    fn read_body(request_id: u64, r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        let file_id = r.u64()?;
        let priority = r.u8()?;
        let bits = r.u8()?;
        let flags = RequestFlags::from_bits(bits).ok_or(DecodeError::BadFlags(u32::from(bits)))?;
        r.reserved(2)?;
        let requestor_pid = r.u32()?;
        let image_len = read_len(r, MAX_IMAGE_BYTES, Field::RequestorImage)?;
        let path_len = read_len(r, MAX_PATH_BYTES, Field::Path)?;
        let pattern_len = read_len(r, MAX_PATTERN_BYTES, Field::Pattern)?;
        let identity_len = read_len(r, MAX_IDENTITY_LEN, Field::Identity)?;
        let command_line_len = read_len(r, MAX_COMMAND_LINE_BYTES, Field::CommandLine)?;
        let root_file_identity_len = read_len(r, MAX_IDENTITY_LEN, Field::RootFileIdentity)?;
        let root_identity_len = r.u32()?;
        if root_identity_len as usize > MAX_SYNC_ROOT_IDENTITY_LEN {
            return Err(DecodeError::TooLarge(Field::SyncRootIdentity));
        }
        if priority > MAX_PRIORITY {
            return Err(DecodeError::BadValue(Field::Priority));
        }
        Ok(Self {
            request_id,
            file_id,
            priority,
            flags,
            requestor_pid,
            requestor_image: r.utf16(image_len, Field::RequestorImage)?,
            path: r.utf16(path_len, Field::Path)?,
            pattern: r.utf16(pattern_len, Field::Pattern)?,
            identity: r.take(usize::from(identity_len))?,
            requestor_command_line: r.utf16(command_line_len, Field::CommandLine)?,
            sync_root_identity: r.take(root_identity_len as usize)?,
            root_file_identity: r.take(usize::from(root_file_identity_len))?,
        })
    }
}
message!(FetchPlaceholders<'a>, Kind::FetchPlaceholders);

/// Kernel → provider: the population named by the header's request id is over for the
/// driver (its waiters timed out or went away); the provider's later batches for it are
/// refused.
///
/// Fixed part (8 bytes): reason `u32` ([`CancelReason`]), 4 reserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CancelFetchPlaceholders {
    /// The population being cancelled.
    pub request_id: u64,
    /// Why.
    pub reason: CancelReason,
}

impl CancelFetchPlaceholders {
    fn body_len(&self) -> usize {
        8
    }

    fn check(&self) -> Result<(), EncodeError> {
        Ok(())
    }

    fn write_body(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        w.u32(self.reason as u32)?;
        w.zeros(4)
    }

    fn read_body(request_id: u64, r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let reason =
            CancelReason::from_u32(r.u32()?).ok_or(DecodeError::BadValue(Field::Reason))?;
        r.reserved(4)?;
        Ok(Self { request_id, reason })
    }
}
message!(CancelFetchPlaceholders, Kind::CancelFetchPlaceholders);

/// Longest name of an entry, in bytes: NTFS's 255 UTF-16 units per component.
pub const MAX_ENTRY_NAME_BYTES: usize = 255 * 2;

/// Most entries one [`TransferPlaceholders`] batch carries (the message's size bounds
/// it too): the driver's memory for a batch is bounded by it, whatever the directory's
/// size.
pub const MAX_BATCH_ENTRIES: usize = 1024;

/// Fixed part of a [`PlaceholderEntry`] on the wire.
const ENTRY_FIXED: usize = 56;

/// The placeholder flags an entry may carry: what a new placeholder starts with.
const ENTRY_FLAGS: PlaceholderFlags = PlaceholderFlags::IN_SYNC
    .union(PlaceholderFlags::PINNED)
    .union(PlaceholderFlags::UNPINNED)
    .union(PlaceholderFlags::ALWAYS_FULL)
    .union(PlaceholderFlags::DIRECTORY)
    .union(PlaceholderFlags::NOT_POPULATED);

/// One entry of a [`TransferPlaceholders`] batch: a file or directory placeholder to
/// create in the directory being populated.
///
/// Wire form (56 bytes fixed): file size `u64`, creation, last access, last write and
/// change times (4 × `i64`), attributes `u32`, flags `u16` ([`PlaceholderFlags`]), name
/// length `u16`, identity length `u16`, 6 reserved; then the name (UTF-16LE), the
/// identity, and zeros to the next multiple of 8 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlaceholderEntry<'a> {
    /// Its size (0 for a directory).
    pub file_size: u64,
    /// Its timestamps and attributes.
    pub basic: BasicInfo,
    /// Its initial state: [`PlaceholderFlags::DIRECTORY`] for a directory (then
    /// [`PlaceholderFlags::NOT_POPULATED`] if it is to be populated on demand in turn),
    /// [`PlaceholderFlags::IN_SYNC`], a pin state, [`PlaceholderFlags::ALWAYS_FULL`].
    pub flags: PlaceholderFlags,
    /// Its name in the directory: one component, not empty, no `\`, neither `.` nor `..`,
    /// at most [`MAX_ENTRY_NAME_BYTES`].
    pub name: Utf16<'a>,
    /// The provider's file identity, at most [`MAX_IDENTITY_LEN`].
    pub identity: &'a [u8],
}

impl<'a> PlaceholderEntry<'a> {
    /// The bytes this entry takes in a batch (what a sender splits batches by, to stay
    /// within [`MAX_PROVIDER_MESSAGE_LEN`]).
    pub fn encoded_len(&self) -> usize {
        self.wire_len()
    }

    fn wire_len(&self) -> usize {
        ENTRY_FIXED
            .saturating_add(self.name.byte_len())
            .saturating_add(self.identity.len())
            .saturating_add(7)
            / 8
            * 8
    }

    fn write(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        if !entry_flags_valid(self.flags) {
            return Err(EncodeError::BadFlags(self.flags.bits().into()));
        }
        if !entry_name_valid(&self.name) {
            return Err(EncodeError::BadValue(Field::Path));
        }
        let name_len = str_len(&self.name, MAX_ENTRY_NAME_BYTES, Field::Path)?;
        let identity_len = identity_len(self.identity)?;
        w.u64(self.file_size)?;
        w.i64(self.basic.creation_time)?;
        w.i64(self.basic.last_access_time)?;
        w.i64(self.basic.last_write_time)?;
        w.i64(self.basic.change_time)?;
        w.u32(self.basic.attributes)?;
        w.u16(self.flags.bits())?;
        w.u16(name_len)?;
        w.u16(identity_len)?;
        w.zeros(6)?;
        w.utf16(&self.name)?;
        w.put(self.identity)?;
        let used = ENTRY_FIXED + self.name.byte_len() + self.identity.len();
        w.zeros(self.wire_len() - used)
    }

    fn read(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        let file_size = r.u64()?;
        let basic = BasicInfo {
            creation_time: r.i64()?,
            last_access_time: r.i64()?,
            last_write_time: r.i64()?,
            change_time: r.i64()?,
            attributes: r.u32()?,
        };
        let bits = r.u16()?;
        let flags = PlaceholderFlags::from_bits(bits)
            .filter(|f| entry_flags_valid(*f))
            .ok_or(DecodeError::BadFlags(u32::from(bits)))?;
        let name_len = read_len(r, MAX_ENTRY_NAME_BYTES, Field::Path)?;
        let identity_len = read_len(r, MAX_IDENTITY_LEN, Field::Identity)?;
        r.reserved(6)?;
        let name = r.utf16(name_len, Field::Path)?;
        if !entry_name_valid(&name) {
            return Err(DecodeError::BadValue(Field::Path));
        }
        let identity = r.take(usize::from(identity_len))?;
        let entry = Self {
            file_size,
            basic,
            flags,
            name,
            identity,
        };
        let used = ENTRY_FIXED + name.byte_len() + identity.len();
        r.reserved(entry.wire_len() - used)?;
        Ok(entry)
    }
}

/// Flags a new placeholder may start with: no undefined bit, one pin state at most,
/// NOT_POPULATED only on a directory.
fn entry_flags_valid(flags: PlaceholderFlags) -> bool {
    PlaceholderFlags::from_bits(flags.bits()).is_some()
        && flags.difference(ENTRY_FLAGS) == PlaceholderFlags::EMPTY
        && (!flags.contains(PlaceholderFlags::NOT_POPULATED)
            || flags.contains(PlaceholderFlags::DIRECTORY))
}

/// One path component: not empty, no `\` (nor NUL), not `.` or `..`.
fn entry_name_valid(name: &Utf16<'_>) -> bool {
    let dot = u16::from(b'.');
    let mut len = 0usize;
    let mut dots = 0usize;
    for unit in name.units() {
        if unit == u16::from(b'\\') || unit == 0 {
            return false;
        }
        len += 1;
        if unit == dot {
            dots += 1;
        }
    }
    len > 0 && !(dots == len && len <= 2)
}

/// The entries of a [`TransferPlaceholders`] batch: a slice to encode, or the decoded
/// bytes (validated whole when the message was decoded).
#[derive(Clone, Copy)]
pub struct PlaceholderEntries<'a>(EntriesRepr<'a>);

#[derive(Clone, Copy)]
enum EntriesRepr<'a> {
    List(&'a [PlaceholderEntry<'a>]),
    // INVARIANT: `count` entries, each valid, exactly filling `bytes`.
    Wire { bytes: &'a [u8], count: usize },
}

impl<'a> PlaceholderEntries<'a> {
    /// The entries of `list`, to encode.
    pub const fn from_slice(list: &'a [PlaceholderEntry<'a>]) -> Self {
        Self(EntriesRepr::List(list))
    }

    /// How many entries there are.
    pub const fn len(&self) -> usize {
        match self.0 {
            EntriesRepr::List(list) => list.len(),
            EntriesRepr::Wire { count, .. } => count,
        }
    }

    /// Whether there is none (a batch that only ends the population, or reports its
    /// failure).
    pub const fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The entries in order.
    pub fn iter(&self) -> impl Iterator<Item = PlaceholderEntry<'a>> + 'a {
        let (list, wire) = match self.0 {
            EntriesRepr::List(list) => (list, None),
            EntriesRepr::Wire { bytes, count } => (&[][..], Some((Reader::new(bytes), count))),
        };
        list.iter()
            .copied()
            .chain(wire.into_iter().flat_map(|(mut r, count)| {
                (0..count).map_while(move |_| PlaceholderEntry::read(&mut r).ok())
            }))
    }

    fn wire_len(&self) -> usize {
        match self.0 {
            EntriesRepr::List(list) => list
                .iter()
                .fold(0usize, |n, e| n.saturating_add(e.wire_len())),
            EntriesRepr::Wire { bytes, .. } => bytes.len(),
        }
    }
}

impl PartialEq for PlaceholderEntries<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl Eq for PlaceholderEntries<'_> {}

impl core::fmt::Debug for PlaceholderEntries<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// Fixed part of a [`TransferPlaceholders`]: what a batch costs besides its entries.
pub const TRANSFER_PLACEHOLDERS_FIXED: usize = 24;

/// Provider → kernel: a batch of the population named by the header's request id.
///
/// Fixed part (24 bytes): completion status `i32` (NTSTATUS: a failure ends the
/// population with it, and the batch then carries no entry), flags `u32`
/// ([`PopulationFlags`]), total count `u64` (how many entries the directory has in all,
/// this batch's included; the population is complete once that many were processed),
/// entry count `u32`, entries length `u32` (bytes). Then the entries
/// ([`PlaceholderEntry`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransferPlaceholders<'a> {
    /// The population (the [`FetchPlaceholders`] request id).
    pub request_id: u64,
    /// STATUS_SUCCESS, or why the provider cannot populate the directory.
    pub status: i32,
    /// [`PopulationFlags`].
    pub flags: PopulationFlags,
    /// Entries of the directory in all.
    pub total: u64,
    /// This batch's entries, at most [`MAX_BATCH_ENTRIES`].
    pub entries: PlaceholderEntries<'a>,
}

impl<'a> TransferPlaceholders<'a> {
    fn body_len(&self) -> usize {
        TRANSFER_PLACEHOLDERS_FIXED.saturating_add(self.entries.wire_len())
    }

    fn check(&self) -> Result<(), EncodeError> {
        if self.entries.len() > MAX_BATCH_ENTRIES {
            return Err(EncodeError::TooLarge(Field::Entries));
        }
        if self.status < 0 && !self.entries.is_empty() {
            return Err(EncodeError::BadValue(Field::Status));
        }
        if self.body_len() > MAX_PROVIDER_MESSAGE_LEN - HEADER_SIZE {
            return Err(EncodeError::TooLarge(Field::Message));
        }
        Ok(())
    }

    fn write_body(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        let bytes = u32::try_from(self.entries.wire_len())
            .map_err(|_| EncodeError::TooLarge(Field::Entries))?;
        w.i32(self.status)?;
        w.u32(self.flags.bits())?;
        w.u64(self.total)?;
        w.u32(self.entries.len() as u32)?;
        w.u32(bytes)?;
        for entry in self.entries.iter() {
            entry.write(w)?;
        }
        Ok(())
    }

    fn read_body(request_id: u64, r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        let status = r.i32()?;
        let bits = r.u32()?;
        let flags = PopulationFlags::from_bits(bits).ok_or(DecodeError::BadFlags(bits))?;
        let total = r.u64()?;
        let count = r.u32()? as usize;
        let bytes_len = r.u32()? as usize;
        if count > MAX_BATCH_ENTRIES {
            return Err(DecodeError::TooLarge(Field::Entries));
        }
        if status < 0 && count != 0 {
            return Err(DecodeError::BadValue(Field::Status));
        }
        let bytes = r.take(bytes_len)?;
        // Every entry is checked now, so that iterating never meets a bad one.
        let mut entries = Reader::new(bytes);
        for _ in 0..count {
            PlaceholderEntry::read(&mut entries)?;
        }
        entries.finish()?;
        Ok(Self {
            request_id,
            status,
            flags,
            total,
            entries: PlaceholderEntries(EntriesRepr::Wire { bytes, count }),
        })
    }
}
message!(TransferPlaceholders<'a>, Kind::TransferPlaceholders);

/// The payload of the [`Reply`] to a [`TransferPlaceholders`]: how many of the batch's
/// entries were processed (all of them, unless STOP_ON_ERROR stopped at a failure), and
/// each processed entry's status in order — STATUS_SUCCESS when it was created,
/// STATUS_OBJECT_NAME_COLLISION when the name exists locally (left as it is), or why it
/// could not be.
///
/// Layout: processed `u32`, 4 reserved, then `processed` statuses (`i32` each).
pub struct TransferPlaceholdersResult;

impl TransferPlaceholdersResult {
    /// The payload's length for `processed` entries.
    pub const fn encoded_len(processed: usize) -> usize {
        8 + processed * 4
    }

    /// Writes the payload for `statuses` into the start of `out`, returning its length.
    pub fn encode(statuses: &[i32], out: &mut [u8]) -> Result<usize, EncodeError> {
        if statuses.len() > MAX_BATCH_ENTRIES {
            return Err(EncodeError::TooLarge(Field::Entries));
        }
        let mut w = Writer::new(out, Self::encoded_len(statuses.len()))?;
        w.u32(statuses.len() as u32)?;
        w.zeros(4)?;
        for &status in statuses {
            w.i32(status)?;
        }
        Ok(w.finish())
    }

    /// The statuses of `payload`, in order.
    pub fn decode(payload: &[u8]) -> Result<impl Iterator<Item = i32> + '_, DecodeError> {
        let mut r = Reader::new(payload);
        let processed = r.u32()? as usize;
        r.reserved(4)?;
        if processed > MAX_BATCH_ENTRIES {
            return Err(DecodeError::TooLarge(Field::Entries));
        }
        let statuses = r.take(processed * 4)?;
        r.finish()?;
        Ok(statuses
            .chunks_exact(4)
            .filter_map(|c| c.try_into().ok().map(i32::from_le_bytes)))
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use std::string::String;
    use std::vec;
    use std::vec::Vec;

    fn units(s: &str) -> Vec<u16> {
        s.encode_utf16().collect()
    }

    fn entry<'a>(
        name: &'a [u16],
        identity: &'a [u8],
        flags: PlaceholderFlags,
    ) -> PlaceholderEntry<'a> {
        PlaceholderEntry {
            file_size: if flags.contains(PlaceholderFlags::DIRECTORY) {
                0
            } else {
                12_345
            },
            basic: BasicInfo {
                creation_time: 1,
                last_access_time: 2,
                last_write_time: 3,
                change_time: 4,
                attributes: 0x20,
            },
            flags,
            name: Utf16::from_units(name),
            identity,
        }
    }

    #[test]
    fn a_batch_round_trips_with_its_entries_padded_to_eight_bytes() {
        let (a, b) = (units("a.txt"), units("photos"));
        let list = [
            entry(&a, b"id-a", PlaceholderFlags::IN_SYNC),
            entry(
                &b,
                b"",
                PlaceholderFlags::DIRECTORY.union(PlaceholderFlags::NOT_POPULATED),
            ),
        ];
        let batch = TransferPlaceholders {
            request_id: 7,
            status: 0,
            flags: PopulationFlags::DISABLE_ON_DEMAND_POPULATION,
            total: 2,
            entries: PlaceholderEntries::from_slice(&list),
        };
        let mut out = vec![0u8; batch.encoded_len()];
        // 56 + 10 + 4 = 70 → 72; 56 + 12 = 68 → 72.
        assert_eq!(batch.encode(&mut out), Ok(HEADER_SIZE + 24 + 72 + 72));
        assert_eq!(out.len(), HEADER_SIZE + 24 + 72 + 72);
        let back = TransferPlaceholders::decode(&out);
        assert_eq!(back, Ok(batch));
        let names: Vec<String> = back
            .iter()
            .flat_map(|b| b.entries.iter())
            .map(|e| e.name.chars_lossy().collect())
            .collect();
        assert_eq!(names, ["a.txt", "photos"]);
    }

    /// A batch of `list`, the whole directory, with `status`.
    fn one_batch<'a>(list: &'a [PlaceholderEntry<'a>], status: i32) -> TransferPlaceholders<'a> {
        TransferPlaceholders {
            request_id: 1,
            status,
            flags: PopulationFlags::EMPTY,
            total: list.len() as u64,
            entries: PlaceholderEntries::from_slice(list),
        }
    }

    #[test]
    fn bad_entries_are_refused_both_ways() {
        let base = units("ok");
        for bad in ["", ".", "..", "a\\b"] {
            let name = units(bad);
            let list = [entry(&name, b"", PlaceholderFlags::EMPTY)];
            let batch = one_batch(&list, 0);
            let mut out = vec![0u8; batch.encoded_len()];
            assert_eq!(
                batch.encode(&mut out),
                Err(EncodeError::BadValue(Field::Path)),
                "{bad:?}"
            );
        }
        // NOT_POPULATED on a file, both pins.
        for flags in [
            PlaceholderFlags::NOT_POPULATED,
            PlaceholderFlags::PINNED.union(PlaceholderFlags::UNPINNED),
        ] {
            let list = [entry(&base, b"", flags)];
            let batch = one_batch(&list, 0);
            let mut out = vec![0u8; batch.encoded_len()];
            assert!(matches!(
                batch.encode(&mut out),
                Err(EncodeError::BadFlags(_))
            ));
        }
        // A failure carries no entry.
        let list = [entry(&base, b"", PlaceholderFlags::EMPTY)];
        let batch = one_batch(&list, -1);
        let mut out = vec![0u8; batch.encoded_len()];
        assert_eq!(
            batch.encode(&mut out),
            Err(EncodeError::BadValue(Field::Status))
        );
        // A declared count the bytes do not hold.
        let ok = one_batch(&list, 0);
        let mut out = vec![0u8; ok.encoded_len()];
        assert_eq!(ok.encode(&mut out), Ok(out.len()));
        out[HEADER_SIZE + 16..HEADER_SIZE + 20].copy_from_slice(&2u32.to_le_bytes());
        assert!(TransferPlaceholders::decode(&out).is_err());
    }

    #[test]
    fn fetch_and_cancel_round_trip() {
        let (image, path, pattern) = (units("C:\\app.exe"), units("photos\\2024"), units("*.jpg"));
        let fetch = FetchPlaceholders {
            request_id: 9,
            file_id: 0x55,
            priority: 3,
            flags: RequestFlags::EMPTY,
            requestor_pid: 1234,
            requestor_image: Utf16::from_units(&image),
            path: Utf16::from_units(&path),
            pattern: Utf16::from_units(&pattern),
            identity: b"dir-id",
            requestor_command_line: Utf16::from_units(&[]),
            sync_root_identity: b"root",
            root_file_identity: b"",
        };
        let mut out = vec![0u8; fetch.encoded_len()];
        assert_eq!(fetch.encode(&mut out), Ok(out.len()));
        assert_eq!(FetchPlaceholders::decode(&out), Ok(fetch));
        assert_eq!(
            KernelMessage::decode(&out).map(|m| m.kind()),
            Ok(Kind::FetchPlaceholders)
        );
        let cancel = CancelFetchPlaceholders {
            request_id: 9,
            reason: CancelReason::IoTimeout,
        };
        let mut out = vec![0u8; cancel.encoded_len()];
        assert_eq!(cancel.encode(&mut out), Ok(out.len()));
        assert_eq!(CancelFetchPlaceholders::decode(&out), Ok(cancel));
    }

    #[test]
    fn the_result_lists_each_processed_entry() {
        let statuses = [0, STATUS_OBJECT_NAME_COLLISION_RAW, 0];
        let mut out = vec![0u8; TransferPlaceholdersResult::encoded_len(3)];
        assert_eq!(
            TransferPlaceholdersResult::encode(&statuses, &mut out),
            Ok(out.len())
        );
        let back: Result<Vec<i32>, _> =
            TransferPlaceholdersResult::decode(&out).map(Iterator::collect);
        assert_eq!(back, Ok(statuses.to_vec()));
        assert!(TransferPlaceholdersResult::decode(&out[..10]).is_err());
    }

    /// STATUS_OBJECT_NAME_COLLISION.
    const STATUS_OBJECT_NAME_COLLISION_RAW: i32 = 0xC000_0035_u32 as i32;
}
