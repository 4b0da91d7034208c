//! Placeholder management: creating, converting, reverting, hydrating, dehydrating,
//! pinning and inspecting placeholders — each one FilterSendMessage round trip to the
//! driver, which does the work itself (never a user-mode FSCTL).
//!
//! Paths are relative to the connection's sync root, with `\` or `/` separators.

use std::ops::{Bound, Range, RangeBounds};
use std::time::{SystemTime, UNIX_EPOCH};

use cloudflt_proto::msg::{
    self, BasicInfo, Convert, ConvertFlags, CreatePlaceholder, Dehydrate, GetInfo, Hydrate,
    MAX_REPLY_PAYLOAD, Revert, SetPin,
};
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

    fn basic(&self, attributes: u32) -> BasicInfo {
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

    fn flags(&self) -> PlaceholderFlags {
        let mut flags = PlaceholderFlags::EMPTY;
        if self.in_sync {
            flags = flags | PlaceholderFlags::IN_SYNC;
        }
        if self.is_directory() {
            flags = flags | PlaceholderFlags::DIRECTORY;
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
    /// the provider's request.
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
    fn decode(blob: &[u8]) -> Result<Self, Error> {
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
fn op_range(range: impl RangeBounds<u64>) -> Result<ByteRange, Error> {
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
    /// it is on disk.
    ///
    /// ```no_run
    /// # fn f(connection: cloudflt::Connection) -> Result<(), cloudflt::Error> {
    /// connection.hydrate("video.mp4", 0..1 << 20)?; // the first MiB
    /// # Ok(()) }
    /// ```
    pub fn hydrate(&self, path: &str, range: impl RangeBounds<u64>) -> Result<(), Error> {
        let path = relative_path(path, false)?;
        let message = Hydrate {
            request_id: self.next_request_id(),
            path: Utf16::from_units(&path),
            range: op_range(range)?,
        };
        let bytes = encode(&msg::ProviderMessage::Hydrate(message))?;
        self.shared.request(&bytes, 0).map(drop)
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
        let blob = self.shared.request(&bytes, MAX_REPLY_PAYLOAD)?;
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
    fn filetimes_count_from_1601() {
        assert_eq!(filetime(UNIX_EPOCH), FILETIME_UNIX_EPOCH);
    }
}
