//! Placeholder management: creating, converting, reverting, hydrating, dehydrating,
//! pinning, updating, marking in sync and inspecting placeholders — each one
//! FilterSendMessage round trip to the driver, which does the work itself (never a
//! user-mode FSCTL).
//!
//! The requests that change a placeholder's data or state and answer with its new state
//! ([`Connection::hydrate`], [`Connection::update`], [`Connection::set_in_sync`]) return a
//! [`PlaceholderInfo`] whose [`changes`](PlaceholderInfo::changes) is the file's change
//! counter at that moment. Passing it back as `if_unchanged` makes the next update or
//! in-sync change conditional: the driver refuses it with [`Error::NotInSync`], changing
//! nothing, if the file changed locally meanwhile (cfapi's
//! `CF_UPDATE_FLAG_VERIFY_IN_SYNC` and USN check, with one counter).
//!
//! Paths are relative to the connection's sync root, with `\` or `/` separators.

use std::ops::{Bound, Range, RangeBounds};
use std::time::{SystemTime, UNIX_EPOCH};

use cloudflt_proto::msg::{
    self, BasicInfo, Convert, ConvertFlags, CreatePlaceholder, Dehydrate, GetInfo, Hydrate, Revert,
    SetInSync, SetInSyncFlags, SetPin, Update, UpdateFlags,
};
use cloudflt_proto::placeholder::MAX_BLOB_SIZE;
use cloudflt_proto::{ByteRange, Placeholder, PlaceholderFlags, RangeList, Utf16};

use crate::config::relative_path;
use crate::{Connection, Error};

pub use cloudflt_proto::msg::PinState;

/// `FILE_ATTRIBUTE_DIRECTORY`.
const FILE_ATTRIBUTE_DIRECTORY: u32 = 0x10;
/// `FILE_ATTRIBUTE_NORMAL`: what a file with no other attribute reports.
const FILE_ATTRIBUTE_NORMAL: u32 = 0x80;
/// 100 ns intervals between 1601-01-01 (FILETIME's epoch) and 1970-01-01.
const FILETIME_UNIX_EPOCH: i64 = 116_444_736_000_000_000;

/// A file's four timestamps as FILETIME values (100 ns units since 1601-01-01 UTC); 0
/// leaves the choice to the driver (the time of creation).
///
/// ```
/// use std::time::{Duration, UNIX_EPOCH};
/// let times = cloudflt::FileTimes::all(UNIX_EPOCH + Duration::from_secs(1));
/// assert_eq!(times.last_write_time, 116_444_736_010_000_000);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FileTimes {
    /// When the file was created.
    pub creation_time: i64,
    /// When it was last read.
    pub last_access_time: i64,
    /// When its data was last written.
    pub last_write_time: i64,
    /// When its data or metadata last changed.
    pub change_time: i64,
}

impl FileTimes {
    /// All four set to `time`.
    ///
    /// ```
    /// let times = cloudflt::FileTimes::all(std::time::SystemTime::now());
    /// assert_eq!(times.creation_time, times.change_time);
    /// ```
    pub fn all(time: SystemTime) -> Self {
        let t = filetime(time);
        Self {
            creation_time: t,
            last_access_time: t,
            last_write_time: t,
            change_time: t,
        }
    }

    /// From a file's metadata where the platform has them (creation time is not
    /// available everywhere); the rest 0.
    ///
    /// ```no_run
    /// let meta = std::fs::metadata("server/file.txt")?;
    /// let times = cloudflt::FileTimes::from_metadata(&meta);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn from_metadata(meta: &std::fs::Metadata) -> Self {
        let modified = meta.modified().map(filetime).unwrap_or(0);
        Self {
            creation_time: meta.created().map(filetime).unwrap_or(modified),
            last_access_time: meta.accessed().map(filetime).unwrap_or(modified),
            last_write_time: modified,
            change_time: modified,
        }
    }

    pub(crate) fn basic(&self, attributes: u32) -> BasicInfo {
        BasicInfo {
            creation_time: self.creation_time,
            last_access_time: self.last_access_time,
            last_write_time: self.last_write_time,
            change_time: self.change_time,
            attributes,
        }
    }
}

/// A `SystemTime` as a FILETIME value (saturating; times before 1601 are 0).
fn filetime(time: SystemTime) -> i64 {
    let units = match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_nanos() / 100).unwrap_or(i64::MAX),
        Err(before) => -i64::try_from(before.duration().as_nanos() / 100).unwrap_or(i64::MAX),
    };
    FILETIME_UNIX_EPOCH.saturating_add(units).max(0)
}

/// A placeholder to create: path, size, times, attributes, identity and state.
///
/// ```
/// use cloudflt::PlaceholderSpec;
///
/// let spec = PlaceholderSpec::file(r"docs\report.pdf", 123_456)
///     .identity(b"server-id-42".to_vec())
///     .in_sync(true);
/// assert_eq!(spec.size, 123_456);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PlaceholderSpec {
    /// Where, relative to the sync root.
    pub path: String,
    /// The file's logical size (0 for a directory).
    pub size: u64,
    /// Timestamps.
    pub times: FileTimes,
    /// `FILE_ATTRIBUTE_*` bits; `FILE_ATTRIBUTE_DIRECTORY` makes a directory placeholder.
    pub attributes: u32,
    /// The provider's identity for the file, handed back in every fetch (≤ 4 KiB).
    pub identity: Vec<u8>,
    /// Whether the local placeholder matches the cloud copy.
    pub in_sync: bool,
    /// The pin state to start with.
    pub pin: PinState,
    /// For a directory: not populated yet, so that the driver asks the provider for its
    /// entries the first time it is listed or a name beneath it is opened
    /// ([`SyncProvider::fetch_placeholders`](crate::SyncProvider::fetch_placeholders));
    /// a directory created without it is complete as it is.
    pub populate_on_demand: bool,
}

impl PlaceholderSpec {
    /// A file placeholder of `size` bytes at `path`.
    ///
    /// ```
    /// let spec = cloudflt::PlaceholderSpec::file("a.txt", 10);
    /// assert!(!spec.is_directory());
    /// ```
    pub fn file(path: impl Into<String>, size: u64) -> Self {
        Self {
            path: path.into(),
            size,
            times: FileTimes::default(),
            attributes: FILE_ATTRIBUTE_NORMAL,
            identity: Vec::new(),
            in_sync: false,
            pin: PinState::Unspecified,
            populate_on_demand: false,
        }
    }

    /// A directory placeholder at `path`.
    ///
    /// ```
    /// let spec = cloudflt::PlaceholderSpec::directory("photos");
    /// assert!(spec.is_directory());
    /// ```
    pub fn directory(path: impl Into<String>) -> Self {
        Self {
            attributes: FILE_ATTRIBUTE_DIRECTORY,
            ..Self::file(path, 0)
        }
    }

    /// Sets the identity.
    ///
    /// ```
    /// let spec = cloudflt::PlaceholderSpec::file("a", 1).identity(vec![1, 2, 3]);
    /// assert_eq!(spec.identity, [1, 2, 3]);
    /// ```
    #[must_use]
    pub fn identity(mut self, identity: Vec<u8>) -> Self {
        self.identity = identity;
        self
    }

    /// Sets the timestamps.
    ///
    /// ```
    /// let times = cloudflt::FileTimes::all(std::time::SystemTime::now());
    /// let spec = cloudflt::PlaceholderSpec::file("a", 1).times(times);
    /// assert_eq!(spec.times, times);
    /// ```
    #[must_use]
    pub fn times(mut self, times: FileTimes) -> Self {
        self.times = times;
        self
    }

    /// Sets the attributes (the directory bit is kept as the constructor set it).
    ///
    /// ```
    /// let spec = cloudflt::PlaceholderSpec::file("a", 1).attributes(0x1); // READONLY
    /// assert_eq!(spec.attributes, 0x1);
    /// ```
    #[must_use]
    pub fn attributes(mut self, attributes: u32) -> Self {
        self.attributes =
            (attributes & !FILE_ATTRIBUTE_DIRECTORY) | (self.attributes & FILE_ATTRIBUTE_DIRECTORY);
        self
    }

    /// Marks the placeholder in sync (or not).
    ///
    /// ```
    /// assert!(cloudflt::PlaceholderSpec::file("a", 1).in_sync(true).in_sync);
    /// ```
    #[must_use]
    pub fn in_sync(mut self, in_sync: bool) -> Self {
        self.in_sync = in_sync;
        self
    }

    /// Sets the initial pin state.
    ///
    /// ```
    /// use cloudflt::{PinState, PlaceholderSpec};
    /// let spec = PlaceholderSpec::file("a", 1).pin(PinState::Pinned);
    /// assert_eq!(spec.pin, PinState::Pinned);
    /// ```
    #[must_use]
    pub fn pin(mut self, pin: PinState) -> Self {
        self.pin = pin;
        self
    }

    /// Whether this describes a directory.
    ///
    /// ```
    /// assert!(cloudflt::PlaceholderSpec::directory("d").is_directory());
    /// ```
    pub fn is_directory(&self) -> bool {
        self.attributes & FILE_ATTRIBUTE_DIRECTORY != 0
    }

    /// For a directory, whether it is populated on demand (see
    /// [`populate_on_demand`](Self::populate_on_demand)); ignored for a file.
    ///
    /// ```
    /// let spec = cloudflt::PlaceholderSpec::directory("photos").on_demand(true);
    /// assert!(spec.populate_on_demand);
    /// ```
    #[must_use]
    pub fn on_demand(mut self, on_demand: bool) -> Self {
        self.populate_on_demand = on_demand;
        self
    }

    pub(crate) fn flags(&self) -> PlaceholderFlags {
        let mut flags = PlaceholderFlags::EMPTY;
        if self.in_sync {
            flags = flags | PlaceholderFlags::IN_SYNC;
        }
        if self.is_directory() {
            flags = flags | PlaceholderFlags::DIRECTORY;
            if self.populate_on_demand {
                flags = flags | PlaceholderFlags::NOT_POPULATED;
            }
        }
        match self.pin {
            PinState::Pinned => flags | PlaceholderFlags::PINNED,
            PinState::Unpinned => flags | PlaceholderFlags::UNPINNED,
            _ => flags,
        }
    }
}

/// How [`Connection::convert`] treats the file it turns into a placeholder.
///
/// ```
/// let options = cloudflt::ConvertOptions { in_sync: true, dehydrate: true };
/// # let _ = options;
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ConvertOptions {
    /// Mark it in sync.
    pub in_sync: bool,
    /// Drop its local data once converted (the provider can fetch it back).
    pub dehydrate: bool,
}

/// Which local data [`Connection::update`] drops.
///
/// ```
/// use cloudflt::Dehydration;
/// let first_page = Dehydration::Ranges(vec![0..4096]);
/// assert_ne!(first_page, Dehydration::All);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Dehydration {
    /// Keep every byte on disk.
    #[default]
    None,
    /// Drop the whole file's data.
    All,
    /// Drop these ranges (in any order; overlapping ones are merged). The driver drops
    /// the whole 4 KiB units inside them, as [`Connection::dehydrate`] does.
    Ranges(Vec<Range<u64>>),
}

/// How [`Connection::update`] changes a placeholder: cfapi's CfUpdatePlaceholder, from the
/// cloud's current copy of the file.
///
/// ```
/// use cloudflt::{Dehydration, FileTimes, UpdateOptions};
///
/// // The cloud copy grew to 2 MiB: take its size, drop the stale local data, and mark
/// // it in sync — unless the file changed locally since the provider saw change 7.
/// let options = UpdateOptions::new(2 << 20)
///     .times(FileTimes::all(std::time::SystemTime::now()))
///     .dehydrate(Dehydration::All)
///     .mark_in_sync(true)
///     .if_unchanged(7);
/// assert_eq!(options.if_unchanged, Some(7));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct UpdateOptions {
    /// The cloud's size of the file: its new end of file.
    pub size: u64,
    /// New timestamps; a time left 0 keeps the file's own. Attributes are left as they
    /// are.
    pub times: FileTimes,
    /// Mark the placeholder in sync once updated.
    pub mark_in_sync: bool,
    /// Mark it not in sync. Exclusive with `mark_in_sync`.
    pub clear_in_sync: bool,
    /// Which local data to drop.
    pub dehydrate: Dehydration,
    /// Update only if the file's change counter ([`PlaceholderInfo::changes`]) is still
    /// this; otherwise nothing changes and the update fails with [`Error::NotInSync`].
    pub if_unchanged: Option<u64>,
    /// A new identity for the file (≤ 4 KiB); `None` keeps the current one.
    pub identity: Option<Vec<u8>>,
}

impl UpdateOptions {
    /// An update to `size` bytes that changes nothing else.
    ///
    /// ```
    /// let options = cloudflt::UpdateOptions::new(10);
    /// assert!(!options.mark_in_sync && options.identity.is_none());
    /// ```
    pub fn new(size: u64) -> Self {
        Self {
            size,
            times: FileTimes::default(),
            mark_in_sync: false,
            clear_in_sync: false,
            dehydrate: Dehydration::None,
            if_unchanged: None,
            identity: None,
        }
    }

    /// Sets the timestamps (0 keeps a time as it is).
    ///
    /// ```
    /// let times = cloudflt::FileTimes::all(std::time::SystemTime::now());
    /// assert_eq!(cloudflt::UpdateOptions::new(1).times(times).times, times);
    /// ```
    #[must_use]
    pub fn times(mut self, times: FileTimes) -> Self {
        self.times = times;
        self
    }

    /// Marks the placeholder in sync once updated (or not: then its state is kept,
    /// unless [`Self::clear_in_sync`] is set).
    ///
    /// ```
    /// assert!(cloudflt::UpdateOptions::new(1).mark_in_sync(true).mark_in_sync);
    /// ```
    #[must_use]
    pub fn mark_in_sync(mut self, mark: bool) -> Self {
        self.mark_in_sync = mark;
        self
    }

    /// Marks the placeholder not in sync once updated.
    ///
    /// ```
    /// assert!(cloudflt::UpdateOptions::new(1).clear_in_sync(true).clear_in_sync);
    /// ```
    #[must_use]
    pub fn clear_in_sync(mut self, clear: bool) -> Self {
        self.clear_in_sync = clear;
        self
    }

    /// Sets which local data to drop.
    ///
    /// ```
    /// use cloudflt::{Dehydration, UpdateOptions};
    /// let options = UpdateOptions::new(1).dehydrate(Dehydration::All);
    /// assert_eq!(options.dehydrate, Dehydration::All);
    /// ```
    #[must_use]
    pub fn dehydrate(mut self, dehydrate: Dehydration) -> Self {
        self.dehydrate = dehydrate;
        self
    }

    /// Makes the update conditional on the file's change counter still being `changes`.
    ///
    /// ```
    /// assert_eq!(cloudflt::UpdateOptions::new(1).if_unchanged(3).if_unchanged, Some(3));
    /// ```
    #[must_use]
    pub fn if_unchanged(mut self, changes: u64) -> Self {
        self.if_unchanged = Some(changes);
        self
    }

    /// Replaces the file's identity.
    ///
    /// ```
    /// let options = cloudflt::UpdateOptions::new(1).identity(b"v2".to_vec());
    /// assert_eq!(options.identity.as_deref(), Some(&b"v2"[..]));
    /// ```
    #[must_use]
    pub fn identity(mut self, identity: Vec<u8>) -> Self {
        self.identity = Some(identity);
        self
    }

    /// The protocol's flags and ranges to dehydrate (sorted and merged), or why the
    /// options cannot be sent.
    fn wire(&self) -> Result<(UpdateFlags, Vec<ByteRange>), Error> {
        if self.mark_in_sync && self.clear_in_sync {
            return Err(Error::InvalidArgument(
                "an update cannot both mark and clear the in-sync state".into(),
            ));
        }
        let mut flags = UpdateFlags::EMPTY;
        let set = |flags: UpdateFlags, on: bool, flag: UpdateFlags| {
            if on { flags.union(flag) } else { flags }
        };
        flags = set(flags, self.mark_in_sync, UpdateFlags::MARK_IN_SYNC);
        flags = set(flags, self.clear_in_sync, UpdateFlags::CLEAR_IN_SYNC);
        flags = set(
            flags,
            self.if_unchanged.is_some(),
            UpdateFlags::IF_UNCHANGED,
        );
        flags = set(flags, self.identity.is_some(), UpdateFlags::SET_IDENTITY);
        let ranges = match &self.dehydrate {
            Dehydration::None => Vec::new(),
            Dehydration::All => {
                flags = flags.union(UpdateFlags::DEHYDRATE);
                Vec::new()
            }
            Dehydration::Ranges(ranges) => {
                flags = flags.union(UpdateFlags::DEHYDRATE);
                merged(ranges)?
            }
        };
        Ok((flags, ranges))
    }
}

/// `ranges` sorted, overlapping and adjacent ones merged, as protocol ranges; an empty
/// range or an empty list is refused (an empty list on the wire means the whole file).
fn merged(ranges: &[Range<u64>]) -> Result<Vec<ByteRange>, Error> {
    if ranges.is_empty() {
        return Err(Error::InvalidArgument(
            "no range to dehydrate (Dehydration::All drops the whole file)".into(),
        ));
    }
    if ranges.iter().any(|r| r.start >= r.end) {
        return Err(Error::InvalidArgument("empty range".into()));
    }
    let mut sorted = ranges.to_vec();
    sorted.sort_by_key(|r| r.start);
    let mut out: Vec<Range<u64>> = Vec::with_capacity(sorted.len());
    for range in sorted {
        match out.last_mut() {
            Some(last) if range.start <= last.end => last.end = last.end.max(range.end),
            _ => out.push(range),
        }
    }
    Ok(out
        .into_iter()
        .map(|r| ByteRange::new(r.start, r.end - r.start))
        .collect())
}

/// What the driver knows about a placeholder, decoded from its reparse data.
///
/// ```no_run
/// # fn f(connection: cloudflt::Connection) -> Result<(), cloudflt::Error> {
/// let info = connection.info(r"docs\report.pdf")?;
/// println!(
///     "{} of {} bytes on disk, pinned: {}",
///     info.hydrated_bytes(), info.file_size, info.pin == cloudflt::PinState::Pinned
/// );
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PlaceholderInfo {
    /// The file's logical size.
    pub file_size: u64,
    /// The provider's identity for it.
    pub identity: Vec<u8>,
    /// The byte ranges present on disk, sorted and merged.
    pub ranges: Vec<Range<u64>>,
    /// The byte ranges changed locally since the file was last in sync (cfapi's
    /// CF_PLACEHOLDER_RANGE_INFO_MODIFIED), sorted and merged, each inside a range of
    /// [`Self::ranges`].
    pub modified: Vec<Range<u64>>,
    /// The file's local change counter: it moves whenever the file changes other than at
    /// the provider's request. Pass it back as `if_unchanged`
    /// ([`UpdateOptions::if_unchanged`], [`Connection::set_in_sync`]) to act only if
    /// nothing changed since this answer.
    pub changes: u64,
    /// Whether it is marked in sync.
    pub in_sync: bool,
    /// Its pin state.
    pub pin: PinState,
    /// Whether it must stay fully hydrated (ALWAYS_FULL).
    pub always_full: bool,
    /// Whether it is a directory.
    pub directory: bool,
}

impl PlaceholderInfo {
    /// Decodes the placeholder blob the driver returned.
    pub(crate) fn decode(blob: &[u8]) -> Result<Self, Error> {
        let placeholder = Placeholder::decode(blob)?;
        let flags = placeholder.flags;
        let pin = if flags.contains(PlaceholderFlags::PINNED) {
            PinState::Pinned
        } else if flags.contains(PlaceholderFlags::UNPINNED) {
            PinState::Unpinned
        } else {
            PinState::Unspecified
        };
        Ok(Self {
            file_size: placeholder.file_size,
            identity: placeholder.identity.to_vec(),
            ranges: std_ranges(placeholder.ranges),
            modified: std_ranges(placeholder.modified),
            changes: placeholder.changes,
            in_sync: flags.contains(PlaceholderFlags::IN_SYNC),
            pin,
            always_full: flags.contains(PlaceholderFlags::ALWAYS_FULL),
            directory: flags.contains(PlaceholderFlags::DIRECTORY),
        })
    }

    /// How many bytes are on disk.
    ///
    /// ```no_run
    /// # fn f(info: cloudflt::PlaceholderInfo) {
    /// assert!(info.hydrated_bytes() <= info.file_size);
    /// # }
    /// ```
    pub fn hydrated_bytes(&self) -> u64 {
        self.ranges.iter().map(|r| r.end - r.start).sum()
    }

    /// Whether every byte is on disk.
    ///
    /// ```no_run
    /// # fn f(info: cloudflt::PlaceholderInfo) {
    /// if info.is_fully_hydrated() { println!("available offline"); }
    /// # }
    /// ```
    pub fn is_fully_hydrated(&self) -> bool {
        self.hydrated_bytes() == self.file_size
    }
}

/// A range list of the protocol as `Range`s.
fn std_ranges(ranges: RangeList<'_>) -> Vec<Range<u64>> {
    ranges
        .iter()
        .map(|r| r.offset..r.offset.saturating_add(r.length))
        .collect()
}

/// A range argument as the protocol's (offset, length) with length 0 = to end of file.
pub(crate) fn op_range(range: impl RangeBounds<u64>) -> Result<ByteRange, Error> {
    let start = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => s.saturating_add(1),
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&e) => Some(e.saturating_add(1)),
        Bound::Excluded(&e) => Some(e),
        Bound::Unbounded => None,
    };
    match end {
        None => Ok(ByteRange::new(start, 0)),
        Some(end) if end > start => Ok(ByteRange::new(start, end - start)),
        Some(_) => Err(Error::InvalidArgument("empty range".into())),
    }
}

/// Encodes a provider message into a fresh buffer.
fn encode(message: &msg::ProviderMessage<'_>) -> Result<Vec<u8>, Error> {
    let mut bytes = vec![0u8; message.encoded_len()];
    let written = message.encode(&mut bytes)?;
    bytes.truncate(written);
    Ok(bytes)
}

impl Connection {
    /// Creates one placeholder.
    ///
    /// ```no_run
    /// # fn f(connection: cloudflt::Connection) -> Result<(), cloudflt::Error> {
    /// use cloudflt::PlaceholderSpec;
    /// connection.create_placeholder(&PlaceholderSpec::file("hello.txt", 5).identity(b"hello".to_vec()))?;
    /// # Ok(()) }
    /// ```
    pub fn create_placeholder(&self, spec: &PlaceholderSpec) -> Result<(), Error> {
        let path = relative_path(&spec.path, false)?;
        let message = CreatePlaceholder {
            request_id: self.next_request_id(),
            file_size: spec.size,
            basic: spec.times.basic(spec.attributes),
            flags: spec.flags(),
            path: Utf16::from_units(&path),
            identity: &spec.identity,
        };
        let bytes = encode(&msg::ProviderMessage::CreatePlaceholder(message))?;
        self.shared.request(&bytes, 0).map(drop)
    }

    /// Creates placeholders in order (parents before children); the outcome of each, so
    /// that one existing file does not stop the rest.
    ///
    /// ```no_run
    /// # fn f(connection: cloudflt::Connection) {
    /// use cloudflt::PlaceholderSpec;
    /// let specs = [PlaceholderSpec::directory("docs"), PlaceholderSpec::file(r"docs\a.txt", 3)];
    /// for (spec, result) in specs.iter().zip(connection.create_placeholders(&specs)) {
    ///     if let Err(e) = result {
    ///         eprintln!("{}: {e}", spec.path);
    ///     }
    /// }
    /// # }
    /// ```
    pub fn create_placeholders(&self, specs: &[PlaceholderSpec]) -> Vec<Result<(), Error>> {
        specs
            .iter()
            .map(|spec| self.create_placeholder(spec))
            .collect()
    }

    /// Turns an ordinary file under the sync root into a placeholder carrying `identity`.
    ///
    /// ```no_run
    /// # fn f(connection: cloudflt::Connection) -> Result<(), cloudflt::Error> {
    /// use cloudflt::ConvertOptions;
    /// connection.convert("big.iso", b"iso-1", ConvertOptions { in_sync: true, dehydrate: true })?;
    /// # Ok(()) }
    /// ```
    pub fn convert(
        &self,
        path: &str,
        identity: &[u8],
        options: ConvertOptions,
    ) -> Result<(), Error> {
        let path = relative_path(path, false)?;
        let mut flags = ConvertFlags::EMPTY;
        if options.in_sync {
            flags = flags.union(ConvertFlags::IN_SYNC);
        }
        if options.dehydrate {
            flags = flags.union(ConvertFlags::DEHYDRATE);
        }
        let message = Convert {
            request_id: self.next_request_id(),
            flags,
            path: Utf16::from_units(&path),
            identity,
        };
        let bytes = encode(&msg::ProviderMessage::Convert(message))?;
        self.shared.request(&bytes, 0).map(drop)
    }

    /// Turns a fully hydrated placeholder back into an ordinary file.
    ///
    /// ```no_run
    /// # fn f(connection: cloudflt::Connection) -> Result<(), cloudflt::Error> {
    /// connection.hydrate("keep.txt", ..)?;
    /// connection.revert("keep.txt")?;
    /// # Ok(()) }
    /// ```
    pub fn revert(&self, path: &str) -> Result<(), Error> {
        let path = relative_path(path, false)?;
        let message = Revert {
            request_id: self.next_request_id(),
            path: Utf16::from_units(&path),
        };
        let bytes = encode(&msg::ProviderMessage::Revert(message))?;
        self.shared.request(&bytes, 0).map(drop)
    }

    /// Has the driver fetch `range` of a placeholder now (`..` for all of it); returns once
    /// it is on disk, with the placeholder's state then (its change counter included).
    ///
    /// ```no_run
    /// # fn f(connection: cloudflt::Connection) -> Result<(), cloudflt::Error> {
    /// let info = connection.hydrate("video.mp4", 0..1 << 20)?; // the first MiB
    /// assert!(info.hydrated_bytes() >= 1 << 20);
    /// # Ok(()) }
    /// ```
    pub fn hydrate(
        &self,
        path: &str,
        range: impl RangeBounds<u64>,
    ) -> Result<PlaceholderInfo, Error> {
        let units = relative_path(path, false)?;
        let message = Hydrate {
            request_id: self.next_request_id(),
            path: Utf16::from_units(&units),
            range: op_range(range)?,
        };
        let bytes = encode(&msg::ProviderMessage::Hydrate(message))?;
        let blob = self.shared.request(&bytes, MAX_BLOB_SIZE)?;
        PlaceholderInfo::decode(&blob)
    }

    /// Drops `range` of a placeholder's local data (`..` for all of it). Pinned and
    /// ALWAYS_FULL placeholders refuse ([`Error::Pinned`], [`Error::DehydrationDisallowed`]).
    ///
    /// ```no_run
    /// # fn f(connection: cloudflt::Connection) -> Result<(), cloudflt::Error> {
    /// connection.dehydrate("video.mp4", ..)?;
    /// # Ok(()) }
    /// ```
    pub fn dehydrate(&self, path: &str, range: impl RangeBounds<u64>) -> Result<(), Error> {
        let path = relative_path(path, false)?;
        let message = Dehydrate {
            request_id: self.next_request_id(),
            path: Utf16::from_units(&path),
            range: op_range(range)?,
        };
        let bytes = encode(&msg::ProviderMessage::Dehydrate(message))?;
        self.shared.request(&bytes, 0).map(drop)
    }

    /// Sets a placeholder's pin state.
    ///
    /// ```no_run
    /// # fn f(connection: cloudflt::Connection) -> Result<(), cloudflt::Error> {
    /// connection.set_pin("offline.docx", cloudflt::PinState::Pinned)?;
    /// # Ok(()) }
    /// ```
    pub fn set_pin(&self, path: &str, state: PinState) -> Result<(), Error> {
        let path = relative_path(path, true)?;
        let message = SetPin {
            request_id: self.next_request_id(),
            path: Utf16::from_units(&path),
            state,
        };
        let bytes = encode(&msg::ProviderMessage::SetPin(message))?;
        self.shared.request(&bytes, 0).map(drop)
    }

    /// Updates a placeholder from the cloud's copy (cfapi's CfUpdatePlaceholder): its size
    /// and times, its in-sync state, its identity, and the local data to drop; returns its
    /// state afterwards. With [`UpdateOptions::if_unchanged`], a file that changed locally
    /// since that change counter is left alone and the update fails with
    /// [`Error::NotInSync`]; so does dropping data that was changed locally and not
    /// synced ([`PlaceholderInfo::modified`]). A file in use fails with [`Error::InUse`].
    ///
    /// ```no_run
    /// # fn f(connection: cloudflt::Connection) -> Result<(), cloudflt::Error> {
    /// use cloudflt::{Dehydration, Error, UpdateOptions};
    ///
    /// let seen = connection.info("report.pdf")?;
    /// let options = UpdateOptions::new(200_000)
    ///     .dehydrate(Dehydration::All)
    ///     .mark_in_sync(true)
    ///     .if_unchanged(seen.changes);
    /// match connection.update("report.pdf", &options) {
    ///     Ok(info) => println!("now change {}", info.changes),
    ///     Err(Error::NotInSync) => println!("changed locally: upload it first"),
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok(()) }
    /// ```
    pub fn update(&self, path: &str, options: &UpdateOptions) -> Result<PlaceholderInfo, Error> {
        let path = relative_path(path, true)?;
        let (flags, ranges) = options.wire()?;
        let message = Update {
            request_id: self.next_request_id(),
            path: Utf16::from_units(&path),
            flags,
            file_size: options.size,
            basic: options.times.basic(0),
            expected_changes: options.if_unchanged.unwrap_or(0),
            identity: options.identity.as_deref().unwrap_or_default(),
            dehydrate: RangeList::from_slice(&ranges),
        };
        let bytes = encode(&msg::ProviderMessage::Update(message))?;
        let blob = self.shared.request(&bytes, MAX_BLOB_SIZE)?;
        PlaceholderInfo::decode(&blob)
    }

    /// Marks a directory placeholder (or, with an empty path, the sync root itself)
    /// populated or not (cfapi's CfUpdatePlaceholder with
    /// CF_UPDATE_FLAG_DISABLE_ON_DEMAND_POPULATION / ENABLE_ON_DEMAND_POPULATION): a
    /// directory that is not populated is filled from
    /// [`SyncProvider::fetch_placeholders`](crate::SyncProvider::fetch_placeholders) the
    /// next time it is listed or a name beneath it is opened; a populated one never asks.
    ///
    /// ```no_run
    /// # fn f(connection: cloudflt::Connection) -> Result<(), cloudflt::Error> {
    /// // Everything under the root was created up front: never ask for it.
    /// connection.set_populated("", true)?;
    /// // The server's "photos" changed: ask again at the next listing.
    /// connection.set_populated("photos", false)?;
    /// # Ok(()) }
    /// ```
    pub fn set_populated(&self, path: &str, populated: bool) -> Result<(), Error> {
        let path = relative_path(path, true)?;
        let flags = if populated {
            UpdateFlags::DISABLE_ON_DEMAND_POPULATION
        } else {
            UpdateFlags::ENABLE_ON_DEMAND_POPULATION
        };
        let message = Update {
            request_id: self.next_request_id(),
            path: Utf16::from_units(&path),
            flags,
            file_size: 0,
            basic: BasicInfo::default(),
            expected_changes: 0,
            identity: &[],
            dehydrate: RangeList::EMPTY,
        };
        let bytes = encode(&msg::ProviderMessage::Update(message))?;
        self.shared.request(&bytes, MAX_BLOB_SIZE).map(drop)
    }

    /// Marks a placeholder in sync or not (cfapi's CfSetInSyncState); returns its state
    /// afterwards. With `if_unchanged`, a file whose change counter moved on since that
    /// value is left alone and the call fails with [`Error::NotInSync`].
    ///
    /// ```no_run
    /// # fn f(connection: cloudflt::Connection) -> Result<(), cloudflt::Error> {
    /// // Uploaded what change 12 held: in sync, unless it changed again meanwhile.
    /// let info = connection.set_in_sync("notes.txt", true, Some(12))?;
    /// assert!(info.in_sync);
    /// # Ok(()) }
    /// ```
    pub fn set_in_sync(
        &self,
        path: &str,
        in_sync: bool,
        if_unchanged: Option<u64>,
    ) -> Result<PlaceholderInfo, Error> {
        let path = relative_path(path, true)?;
        let mut flags = SetInSyncFlags::NOT_IN_SYNC;
        if in_sync {
            flags = flags.union(SetInSyncFlags::IN_SYNC);
        }
        if if_unchanged.is_some() {
            flags = flags.union(SetInSyncFlags::IF_UNCHANGED);
        }
        let message = SetInSync {
            request_id: self.next_request_id(),
            path: Utf16::from_units(&path),
            flags,
            expected_changes: if_unchanged.unwrap_or(0),
        };
        let bytes = encode(&msg::ProviderMessage::SetInSync(message))?;
        let blob = self.shared.request(&bytes, MAX_BLOB_SIZE)?;
        PlaceholderInfo::decode(&blob)
    }

    /// What the driver records for a placeholder; [`Error::NotACloudFile`] for an
    /// ordinary file.
    ///
    /// ```no_run
    /// # fn f(connection: cloudflt::Connection) -> Result<(), cloudflt::Error> {
    /// let info = connection.info("a.txt")?;
    /// println!("ranges on disk: {:?}", info.ranges);
    /// # Ok(()) }
    /// ```
    pub fn info(&self, path: &str) -> Result<PlaceholderInfo, Error> {
        let path = relative_path(path, true)?;
        let message = GetInfo {
            request_id: self.next_request_id(),
            path: Utf16::from_units(&path),
        };
        let bytes = encode(&msg::ProviderMessage::GetInfo(message))?;
        let blob = self.shared.request(&bytes, MAX_BLOB_SIZE)?;
        if blob.is_empty() {
            return Err(Error::NotACloudFile);
        }
        PlaceholderInfo::decode(&blob)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_map_to_offset_and_length_with_zero_meaning_to_the_end() {
        assert_eq!(op_range(..).unwrap(), ByteRange::new(0, 0));
        assert_eq!(op_range(4096..).unwrap(), ByteRange::new(4096, 0));
        assert_eq!(op_range(4096..8192).unwrap(), ByteRange::new(4096, 4096));
        assert_eq!(op_range(0..=9).unwrap(), ByteRange::new(0, 10));
        assert!(op_range(5..5).is_err());
    }

    #[test]
    fn spec_state_becomes_placeholder_flags() {
        let spec = PlaceholderSpec::directory("d")
            .in_sync(true)
            .pin(PinState::Pinned);
        let flags = spec.flags();
        assert!(flags.contains(PlaceholderFlags::DIRECTORY));
        assert!(flags.contains(PlaceholderFlags::IN_SYNC));
        assert!(flags.contains(PlaceholderFlags::PINNED));
        assert!(!flags.contains(PlaceholderFlags::UNPINNED));
    }

    #[test]
    fn info_decodes_the_blob_the_driver_stores() {
        let ranges = [ByteRange::new(0, 4096), ByteRange::new(8192, 100)];
        let modified = [ByteRange::new(8200, 8)];
        let placeholder = Placeholder {
            flags: PlaceholderFlags::IN_SYNC | PlaceholderFlags::UNPINNED,
            file_size: 8292,
            identity: b"id",
            ranges: RangeList::from_slice(&ranges),
            modified: RangeList::from_slice(&modified),
            changes: 12,
        };
        let mut blob = vec![0u8; placeholder.encoded_len()];
        placeholder.encode(&mut blob).unwrap();
        let info = PlaceholderInfo::decode(&blob).unwrap();
        assert_eq!(info.ranges, vec![0..4096, 8192..8292]);
        assert_eq!(info.modified, vec![8200..8208]);
        assert_eq!(info.changes, 12);
        assert_eq!(info.pin, PinState::Unpinned);
        assert!(info.in_sync && !info.is_fully_hydrated());
        assert_eq!(info.hydrated_bytes(), 4196);
    }

    #[test]
    fn update_options_become_flags_and_merged_ranges() {
        let (flags, ranges) = UpdateOptions::new(10)
            .mark_in_sync(true)
            .if_unchanged(0)
            .identity(Vec::new())
            .dehydrate(Dehydration::Ranges(vec![
                8192..9000,
                0..4096,
                4096..5000,
                100..200,
            ]))
            .wire()
            .unwrap();
        assert_eq!(flags.bits(), 1 | 4 | 8 | 16);
        assert_eq!(ranges, [ByteRange::new(0, 5000), ByteRange::new(8192, 808)]);
        let (flags, ranges) = UpdateOptions::new(10)
            .clear_in_sync(true)
            .dehydrate(Dehydration::All)
            .wire()
            .unwrap();
        assert_eq!((flags.bits(), ranges.len()), (2 | 4, 0));
        assert_eq!(UpdateOptions::new(10).wire().unwrap().0, UpdateFlags::EMPTY);
        for refused in [
            UpdateOptions::new(1).mark_in_sync(true).clear_in_sync(true),
            UpdateOptions::new(1).dehydrate(Dehydration::Ranges(Vec::new())),
            UpdateOptions::new(1).dehydrate(Dehydration::Ranges(std::iter::once(5..5).collect())),
        ] {
            assert!(
                matches!(refused.wire(), Err(Error::InvalidArgument(_))),
                "{refused:?}"
            );
        }
    }

    #[test]
    fn filetimes_count_from_1601() {
        assert_eq!(filetime(UNIX_EPOCH), FILETIME_UNIX_EPOCH);
    }
}
