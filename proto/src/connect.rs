//! The connection context a provider passes to `FilterConnectCommunicationPort`.
//!
//! Filter Manager hands these bytes to the driver's ConnectNotify callback. The driver
//! accepts a connection only if they decode; anything else is refused with the status that
//! [`ConnectError`] names, so a provider built against a different protocol learns why.
//!
//! Layout, version 1 (all fields little-endian):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic, `b"CFLT"` |
//! | 4 | 2 | protocol version ([`PROTOCOL_VERSION`](crate::PROTOCOL_VERSION)) |
//! | 6 | 2 | header size, 16 for version 1 |
//! | 8 | 4 | total size of the context, header included |
//! | 12 | 4 | flags: bit 0 [`FLAG_MANAGEMENT`]; every other bit must be zero |
//!
//! Two kinds of client connect, told apart by [`FLAG_MANAGEMENT`] ([`PortContext`]):
//!
//! - a *provider* (flag clear) serves a sync root; the body below says which and how;
//! - a *management* client (flag set) has no body: the context is the header alone, 16
//!   bytes. It serves no sync root and receives no requests; it may only send the
//!   management messages of [`msg`](crate::msg) (the administrator's image rules). The
//!   port admits SYSTEM and Administrators only, so both kinds are privileged.
//!
//! The provider body after the header, version 1:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 16 | 2 | provider name length in bytes, ≤ [`MAX_NAME_UNITS`] UTF-16 units |
//! | 18 | 2 | provider version length in bytes, ≤ [`MAX_NAME_UNITS`] units |
//! | 20 | 2 | sync root path length in bytes |
//! | 22 | 1 | hydration policy ([`HydrationPolicy`]) |
//! | 23 | 1 | population policy ([`PopulationPolicy`]) |
//! | 24 | 4 | in-sync policy ([`InSyncPolicy`], cfapi's CF_INSYNC_POLICY values); bits outside [`InSyncPolicy::ALL`] are refused |
//! | 28 | 4 | provider timeout in milliseconds; 0 = [`DEFAULT_TIMEOUT_MS`], ≤ [`MAX_TIMEOUT_MS`] |
//! | 32 | 16 | provider id (a GUID in Windows byte order), used when the connect registers the root |
//! | 48 | 4 | connect flags ([`ConnectFlags`], cfapi's CF_CONNECT_FLAGS values) |
//! | 52 | 2 | hydration policy modifiers ([`HydrationModifiers`]), used when the connect registers the root; STREAMING_ALLOWED with VALIDATION_REQUIRED is refused |
//! | 54 | 1 | placeholder management policy ([`ManagementPolicy`]), used when the connect registers the root |
//! | 55 | 1 | hard-link policy ([`HardLinkPolicy`]), used when the connect registers the root |
//! | 56 | 4 | notifications the provider asks for ([`NotifySet`]); bits outside [`NotifySet::ALL`] are refused |
//! | 60 | 4 | reserved, zero |
//! | 64 | … | provider name, provider version, sync root path (UTF-16LE, in that order) |
//!
//! The sync root path is in NT form (`\Device\HarddiskVolume1\Users\u\Cloud`); its length
//! is bounded only by [`MAX_SIZE`]. The body must fill the context exactly.

use crate::error::{DecodeError, EncodeError, Field};
use crate::msg::NotifySet;
use crate::registration::{HardLinkPolicy, HydrationModifiers, ManagementPolicy};
use crate::utf16::Utf16;

/// cfapi refuses STREAMING_ALLOWED together with VALIDATION_REQUIRED.
fn modifiers_valid(m: HydrationModifiers) -> bool {
    !m.contains(
        HydrationModifiers::STREAMING_ALLOWED.union(HydrationModifiers::VALIDATION_REQUIRED),
    )
}
use crate::wire::{self, Reader, Writer, len_u16};

/// The four bytes every connection context starts with.
pub const MAGIC: [u8; 4] = *b"CFLT";

/// Size of the version-1 header.
pub const HEADER_SIZE: usize = 16;

/// Size of the version-1 body's fixed part, after the header.
pub const BODY_FIXED_SIZE: usize = 48;

/// Largest connection context the driver accepts. Filter Manager caps the context at
/// 64 KiB (a USHORT EA value length); staying below keeps the kernel copy small.
pub const MAX_SIZE: usize = 32 * 1024;

/// Longest provider name or version, in UTF-16 code units (cfapi's limit).
pub const MAX_NAME_UNITS: usize = 255;

/// The provider timeout used when the context says 0 (cfapi's 60 s).
pub const DEFAULT_TIMEOUT_MS: u32 = 60_000;

/// Longest provider timeout a context may ask for (one hour).
pub const MAX_TIMEOUT_MS: u32 = 3_600_000;

/// Header flag: a management connection (no body, no sync root), see [`PortContext`].
pub const FLAG_MANAGEMENT: u32 = 1;

/// Every header flag this version defines.
const KNOWN_FLAGS: u32 = FLAG_MANAGEMENT;

/// How a sync root's placeholders are hydrated. Ordered from least to most eager, so the
/// effective policy of an open is the `max` of the application's and the provider's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
#[non_exhaustive]
pub enum HydrationPolicy {
    /// Only the 4 KiB-aligned ranges that are read.
    Partial = 0,
    /// A read completes when its range is present; the rest keeps coming.
    Progressive = 1,
    /// The whole file before the first read completes.
    Full = 2,
    /// Placeholders are created full and dehydration is refused.
    AlwaysFull = 3,
}

impl HydrationPolicy {
    /// The policy with wire value `v`, if there is one.
    pub const fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Self::Partial),
            1 => Some(Self::Progressive),
            2 => Some(Self::Full),
            3 => Some(Self::AlwaysFull),
            _ => None,
        }
    }
}

/// How a sync root's directories are populated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
#[non_exhaustive]
pub enum PopulationPolicy {
    /// The provider creates placeholders for a directory's children.
    Full = 0,
    /// Every placeholder is always present.
    AlwaysFull = 1,
}

impl PopulationPolicy {
    /// The policy with wire value `v`, if there is one.
    pub const fn from_u8(v: u8) -> Option<Self> {
        match v {
            0 => Some(Self::Full),
            1 => Some(Self::AlwaysFull),
            _ => None,
        }
    }
}

flags! {
    /// Which changes besides data and size clear a placeholder's in-sync state: cfapi's
    /// CF_INSYNC_POLICY, with the same values. Data and size changes always clear it.
    ///
    /// Bits 10 to 23 are cfapi's reserved tracking bits (its TRACK_*_ALL values set them);
    /// they are accepted and track nothing.
    InSyncPolicy(u32) {
        /// Only data and size changes clear in-sync.
        NONE = 0,
        /// A file's creation time changes.
        TRACK_FILE_CREATION_TIME = 0x1,
        /// A file's read-only attribute is set or cleared.
        TRACK_FILE_READONLY_ATTRIBUTE = 0x2,
        /// A file's hidden attribute is set or cleared.
        TRACK_FILE_HIDDEN_ATTRIBUTE = 0x4,
        /// A file's system attribute is set or cleared.
        TRACK_FILE_SYSTEM_ATTRIBUTE = 0x8,
        /// A directory's creation time changes.
        TRACK_DIRECTORY_CREATION_TIME = 0x10,
        /// A directory's read-only attribute is set or cleared.
        TRACK_DIRECTORY_READONLY_ATTRIBUTE = 0x20,
        /// A directory's hidden attribute is set or cleared.
        TRACK_DIRECTORY_HIDDEN_ATTRIBUTE = 0x40,
        /// A directory's system attribute is set or cleared.
        TRACK_DIRECTORY_SYSTEM_ATTRIBUTE = 0x80,
        /// A file's last-write time is set.
        TRACK_FILE_LAST_WRITE_TIME = 0x100,
        /// A directory's last-write time is set.
        TRACK_DIRECTORY_LAST_WRITE_TIME = 0x200,
        /// cfapi's TRACK_FILE_ALL.
        TRACK_FILE_ALL = 0x0055_550f,
        /// cfapi's TRACK_DIRECTORY_ALL.
        TRACK_DIRECTORY_ALL = 0x00aa_aaf0,
        /// cfapi's TRACK_ALL.
        TRACK_ALL = 0x00ff_ffff,
        /// Changes made by the provider's own process never clear in-sync.
        PRESERVE_INSYNC_FOR_SYNC_ENGINE = 0x8000_0000,
    } all = 0x80ff_ffff
}

flags! {
    /// cfapi's CF_CONNECT_FLAGS: what a provider asks of its connection.
    ConnectFlags(u32) {
        /// No flag.
        NONE = 0,
        /// Every request carries the requesting process's image path and command line.
        REQUIRE_PROCESS_INFO = 0x2,
        /// Every request carries the file's full path (with its volume), not only the
        /// root-relative one.
        REQUIRE_FULL_FILE_PATH = 0x4,
        /// The provider's own process never hydrates implicitly: its reads of missing
        /// data fail instead of asking itself.
        BLOCK_SELF_IMPLICIT_HYDRATION = 0x8,
    } all = 0xe
}

/// A connection context: who the provider is and which sync root it serves, how.
///
/// Decoding borrows the strings from the context bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionContext<'a> {
    /// The provider's display name, at most [`MAX_NAME_UNITS`] code units.
    pub provider_name: Utf16<'a>,
    /// The provider's version string, at most [`MAX_NAME_UNITS`] code units.
    pub provider_version: Utf16<'a>,
    /// The sync root directory in NT form; it must start with `\`.
    pub sync_root: Utf16<'a>,
    /// The provider's hydration policy.
    pub hydration: HydrationPolicy,
    /// The provider's population policy.
    pub population: PopulationPolicy,
    /// Which attribute and time changes clear in-sync, besides data changes.
    pub in_sync: InSyncPolicy,
    /// How long the driver waits for the provider, in milliseconds; 0 means
    /// [`DEFAULT_TIMEOUT_MS`]. At most [`MAX_TIMEOUT_MS`].
    pub timeout_ms: u32,
    /// The provider's GUID, recorded if this connect registers the root (userlib
    /// derives it from the name when none is given; all zero means none).
    pub provider_id: [u8; 16],
    /// What the provider asks of this connection.
    pub connect_flags: ConnectFlags,
    /// The hydration policy modifiers, recorded if this connect registers the root.
    pub modifiers: HydrationModifiers,
    /// Who besides the provider may manage placeholders, recorded if this connect
    /// registers the root.
    pub management: ManagementPolicy,
    /// The hard-link policy, recorded if this connect registers the root.
    pub hard_links: HardLinkPolicy,
    /// The notifications the provider asks for on this connection.
    pub notifications: NotifySet,
}

/// Why a connection context was refused.
///
/// Each variant maps to one NTSTATUS in the driver (`nt::status`), which
/// `FilterConnectCommunicationPort` returns to the provider as an HRESULT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectError {
    /// No context, or fewer bytes than a header.
    TooShort,
    /// More than [`MAX_SIZE`] bytes.
    TooLarge,
    /// The first four bytes are not [`MAGIC`]: not a cloudflt provider.
    BadMagic,
    /// A protocol version this driver does not speak.
    UnsupportedVersion(u16),
    /// The header's size field or total-size field disagrees with the bytes received.
    SizeMismatch,
    /// A flag bit this version does not define is set.
    UnknownFlags(u32),
    /// The header is good but the body is not, for the reason given (a management
    /// context with a body is [`DecodeError::LengthMismatch`]).
    BadBody(DecodeError),
    /// A management context where a provider's was required
    /// ([`ConnectionContext::decode`]; [`PortContext::decode`] accepts both).
    NotAProvider,
}

impl core::fmt::Display for ConnectError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ConnectError::TooShort => f.write_str("connection context too short"),
            ConnectError::TooLarge => f.write_str("connection context too large"),
            ConnectError::BadMagic => f.write_str("not a cloudflt connection context"),
            ConnectError::UnsupportedVersion(v) => write!(f, "unsupported protocol version {v}"),
            ConnectError::SizeMismatch => f.write_str("connection context size mismatch"),
            ConnectError::UnknownFlags(bits) => write!(f, "unknown context flags {bits:#x}"),
            ConnectError::BadBody(e) => write!(f, "bad connection context body: {e}"),
            ConnectError::NotAProvider => f.write_str("a management context, not a provider's"),
        }
    }
}

impl core::error::Error for ConnectError {}

/// What a client connects with: a provider's context or a management connection's.
///
/// ```
/// use cloudflt_proto::connect::{HEADER_SIZE, PortContext};
///
/// let mut out = [0u8; HEADER_SIZE];
/// assert_eq!(PortContext::Management.encode(&mut out), Ok(HEADER_SIZE));
/// assert_eq!(PortContext::decode(&out), Ok(PortContext::Management));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PortContext<'a> {
    /// A sync provider ([`FLAG_MANAGEMENT`] clear).
    Provider(ConnectionContext<'a>),
    /// A management client ([`FLAG_MANAGEMENT`] set, no body).
    Management,
}

impl<'a> PortContext<'a> {
    /// Decodes a connection context as received by ConnectNotify, of either kind.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, ConnectError> {
        let (flags, body) = decode_header(bytes)?;
        if flags & FLAG_MANAGEMENT == 0 {
            return ConnectionContext::decode_body(body)
                .map(Self::Provider)
                .map_err(ConnectError::BadBody);
        }
        if !body.is_empty() {
            return Err(ConnectError::BadBody(DecodeError::LengthMismatch));
        }
        Ok(Self::Management)
    }

    /// The encoded length.
    pub fn encoded_len(&self) -> usize {
        match self {
            Self::Provider(context) => context.encoded_len(),
            Self::Management => HEADER_SIZE,
        }
    }

    /// Encodes the context into `out` with [`PROTOCOL_VERSION`](crate::PROTOCOL_VERSION),
    /// returning [`Self::encoded_len`].
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
        match self {
            Self::Provider(context) => context.encode(out),
            Self::Management => {
                let mut w = Writer::new(out, HEADER_SIZE)?;
                write_header(&mut w, HEADER_SIZE as u32, FLAG_MANAGEMENT)?;
                Ok(w.finish())
            }
        }
    }
}

/// Checks the header (magic, version, sizes, flags) and splits off the body: the flags
/// and the bytes after the header.
fn decode_header(bytes: &[u8]) -> Result<(u32, &[u8]), ConnectError> {
    if bytes.len() > MAX_SIZE {
        return Err(ConnectError::TooLarge);
    }
    let magic: [u8; 4] = wire::array(bytes, 0).ok_or(ConnectError::TooShort)?;
    if magic != MAGIC {
        return Err(ConnectError::BadMagic);
    }
    let version = wire::u16_at(bytes, 4).ok_or(ConnectError::TooShort)?;
    let header_size = wire::u16_at(bytes, 6).ok_or(ConnectError::TooShort)?;
    let total_size = wire::u32_at(bytes, 8).ok_or(ConnectError::TooShort)?;
    let flags = wire::u32_at(bytes, 12).ok_or(ConnectError::TooShort)?;
    if version != crate::PROTOCOL_VERSION {
        return Err(ConnectError::UnsupportedVersion(version));
    }
    if usize::from(header_size) != HEADER_SIZE
        || usize::try_from(total_size).ok() != Some(bytes.len())
    {
        return Err(ConnectError::SizeMismatch);
    }
    if flags & !KNOWN_FLAGS != 0 {
        return Err(ConnectError::UnknownFlags(flags));
    }
    let body = bytes.get(HEADER_SIZE..).ok_or(ConnectError::TooShort)?;
    Ok((flags, body))
}

/// Writes the version-1 header of a context of `total` bytes.
fn write_header(w: &mut Writer<'_>, total: u32, flags: u32) -> Result<(), EncodeError> {
    w.put(&MAGIC)?;
    w.u16(crate::PROTOCOL_VERSION)?;
    w.u16(HEADER_SIZE as u16)?;
    w.u32(total)?;
    w.u32(flags)
}

impl<'a> ConnectionContext<'a> {
    /// Decodes a provider's connection context as received by ConnectNotify; a management
    /// context is [`ConnectError::NotAProvider`].
    pub fn decode(bytes: &'a [u8]) -> Result<Self, ConnectError> {
        match PortContext::decode(bytes)? {
            PortContext::Provider(context) => Ok(context),
            PortContext::Management => Err(ConnectError::NotAProvider),
        }
    }

    fn decode_body(body: &'a [u8]) -> Result<Self, DecodeError> {
        const MAX_NAME_BYTES: usize = MAX_NAME_UNITS * 2;
        let mut r = Reader::new(body);
        let name_len = r.u16()?;
        let version_len = r.u16()?;
        let root_len = r.u16()?;
        let hydration = r.u8()?;
        let population = r.u8()?;
        let in_sync = r.u32()?;
        let timeout_ms = r.u32()?;
        let provider_id: [u8; 16] = r.array()?;
        let connect_flags = r.u32()?;
        let connect_flags =
            ConnectFlags::from_bits(connect_flags).ok_or(DecodeError::BadFlags(connect_flags))?;
        let modifiers = HydrationModifiers::from_bits(r.u16()?)
            .filter(|m| modifiers_valid(*m))
            .ok_or(DecodeError::BadValue(Field::HydrationModifiers))?;
        let management = ManagementPolicy::from_bits(u32::from(r.u8()?))
            .ok_or(DecodeError::BadValue(Field::ManagementPolicy))?;
        let hard_links = HardLinkPolicy::from_bits(u32::from(r.u8()?))
            .ok_or(DecodeError::BadValue(Field::HardLinkPolicy))?;
        let notifications = r.u32()?;
        let notifications = NotifySet::from_bits(notifications)
            .ok_or(DecodeError::BadValue(Field::Notifications))?;
        r.reserved(4)?;
        if usize::from(name_len) > MAX_NAME_BYTES {
            return Err(DecodeError::TooLarge(Field::ProviderName));
        }
        if usize::from(version_len) > MAX_NAME_BYTES {
            return Err(DecodeError::TooLarge(Field::ProviderVersion));
        }
        let hydration = HydrationPolicy::from_u8(hydration)
            .ok_or(DecodeError::BadValue(Field::HydrationPolicy))?;
        let population = PopulationPolicy::from_u8(population)
            .ok_or(DecodeError::BadValue(Field::PopulationPolicy))?;
        let in_sync = InSyncPolicy::from_bits(in_sync).ok_or(DecodeError::BadFlags(in_sync))?;
        if timeout_ms > MAX_TIMEOUT_MS {
            return Err(DecodeError::BadValue(Field::Timeout));
        }
        let provider_name = r.utf16(name_len, Field::ProviderName)?;
        let provider_version = r.utf16(version_len, Field::ProviderVersion)?;
        let sync_root = r.utf16(root_len, Field::SyncRootPath)?;
        r.finish()?;
        if !root_valid(&sync_root) {
            return Err(DecodeError::BadValue(Field::SyncRootPath));
        }
        Ok(Self {
            provider_name,
            provider_version,
            sync_root,
            hydration,
            population,
            in_sync,
            timeout_ms,
            provider_id,
            connect_flags,
            modifiers,
            management,
            hard_links,
            notifications,
        })
    }

    /// The encoded length of this context. Saturates for strings too long to encode.
    pub fn encoded_len(&self) -> usize {
        (HEADER_SIZE + BODY_FIXED_SIZE)
            .saturating_add(self.provider_name.byte_len())
            .saturating_add(self.provider_version.byte_len())
            .saturating_add(self.sync_root.byte_len())
    }

    /// The provider timeout to apply, with 0 read as [`DEFAULT_TIMEOUT_MS`].
    pub fn effective_timeout_ms(&self) -> u32 {
        if self.timeout_ms == 0 {
            DEFAULT_TIMEOUT_MS
        } else {
            self.timeout_ms
        }
    }

    /// Encodes this context into `out` with [`PROTOCOL_VERSION`](crate::PROTOCOL_VERSION),
    /// returning [`Self::encoded_len`]. Refuses anything [`Self::decode`] would refuse.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
        if self.provider_name.len() > MAX_NAME_UNITS {
            return Err(EncodeError::TooLarge(Field::ProviderName));
        }
        if self.provider_version.len() > MAX_NAME_UNITS {
            return Err(EncodeError::TooLarge(Field::ProviderVersion));
        }
        if self.timeout_ms > MAX_TIMEOUT_MS {
            return Err(EncodeError::BadValue(Field::Timeout));
        }
        if !root_valid(&self.sync_root) {
            return Err(EncodeError::BadValue(Field::SyncRootPath));
        }
        let len = self.encoded_len();
        if len > MAX_SIZE {
            return Err(EncodeError::TooLarge(Field::Message));
        }
        let total = u32::try_from(len).map_err(|_| EncodeError::TooLarge(Field::Message))?;
        let mut w = Writer::new(out, len)?;
        write_header(&mut w, total, 0)?;
        w.u16(len_u16(self.provider_name.byte_len(), Field::ProviderName)?)?;
        w.u16(len_u16(
            self.provider_version.byte_len(),
            Field::ProviderVersion,
        )?)?;
        w.u16(len_u16(self.sync_root.byte_len(), Field::SyncRootPath)?)?;
        w.u8(self.hydration as u8)?;
        w.u8(self.population as u8)?;
        w.u32(self.in_sync.bits())?;
        w.u32(self.timeout_ms)?;
        w.put(&self.provider_id)?;
        w.u32(self.connect_flags.bits())?;
        if !modifiers_valid(self.modifiers) {
            return Err(EncodeError::BadValue(Field::HydrationModifiers));
        }
        w.u16(self.modifiers.bits())?;
        // Both fit a byte: every defined bit is below 0x8.
        let management = u8::try_from(self.management.bits())
            .map_err(|_| EncodeError::BadValue(Field::ManagementPolicy))?;
        let hard_links = u8::try_from(self.hard_links.bits())
            .map_err(|_| EncodeError::BadValue(Field::HardLinkPolicy))?;
        w.u8(management)?;
        w.u8(hard_links)?;
        w.u32(self.notifications.bits())?;
        w.zeros(4)?;
        w.utf16(&self.provider_name)?;
        w.utf16(&self.provider_version)?;
        w.utf16(&self.sync_root)?;
        Ok(w.finish())
    }
}

/// A sync root in NT form starts with a backslash (`\Device\...`, `\??\C:\...`): a
/// DOS path here is a provider bug, refused before the driver tries to match it.
fn root_valid(root: &Utf16<'_>) -> bool {
    root.first() == Some(u16::from(b'\\'))
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use proptest::prelude::*;
    use std::vec::Vec;

    const ROOT: &[u16] = &[
        b'\\' as u16,
        b'D' as u16,
        b'\\' as u16,
        b'C' as u16,
        b'l' as u16,
        b'o' as u16,
    ];
    const NAME: &[u16] = &[b'm' as u16, b'i' as u16, b'r' as u16];
    const VERSION: &[u16] = &[b'1' as u16];

    fn sample() -> ConnectionContext<'static> {
        ConnectionContext {
            provider_name: Utf16::from_units(NAME),
            provider_version: Utf16::from_units(VERSION),
            sync_root: Utf16::from_units(ROOT),
            hydration: HydrationPolicy::Progressive,
            population: PopulationPolicy::Full,
            in_sync: InSyncPolicy::TRACK_FILE_READONLY_ATTRIBUTE,
            timeout_ms: 0,
            provider_id: [0; 16],
            connect_flags: ConnectFlags::NONE,
            modifiers: HydrationModifiers::NONE,
            management: ManagementPolicy::DEFAULT,
            hard_links: HardLinkPolicy::NONE,
            notifications: NotifySet::NONE,
        }
    }

    fn encoded(ctx: &ConnectionContext<'_>) -> Vec<u8> {
        let mut out = std::vec![0u8; ctx.encoded_len()];
        assert_eq!(ctx.encode(&mut out), Ok(out.len()));
        out
    }

    #[test]
    fn round_trips_with_the_documented_layout() {
        let bytes = encoded(&sample());
        assert_eq!(bytes.len(), 64 + 2 * (3 + 1 + 6));
        assert_eq!(&bytes[..4], b"CFLT");
        assert_eq!(&bytes[16..22], &[6, 0, 2, 0, 12, 0]);
        assert_eq!(bytes[22], 1, "PROGRESSIVE");
        assert_eq!(&bytes[64..66], &[b'm', 0]);
        let decoded = ConnectionContext::decode(&bytes);
        assert_eq!(decoded, Ok(sample()));
        assert_eq!(
            decoded.map(|d| (d.sync_root.eq_str("\\D\\Clo"), d.effective_timeout_ms())),
            Ok((true, DEFAULT_TIMEOUT_MS))
        );
        let policies = ConnectionContext {
            modifiers: HydrationModifiers::AUTO_DEHYDRATION_ALLOWED,
            management: ManagementPolicy::UPDATE_UNRESTRICTED
                .union(ManagementPolicy::CREATE_UNRESTRICTED),
            hard_links: HardLinkPolicy::ALLOWED,
            ..sample()
        };
        let bytes = encoded(&policies);
        assert_eq!(
            &bytes[52..56],
            &[4, 0, 5, 1],
            "modifiers, management, hard links"
        );
        assert_eq!(ConnectionContext::decode(&bytes), Ok(policies));
        let notified = ConnectionContext {
            notifications: NotifySet::DELETE.union(NotifySet::RENAME_COMPLETION),
            ..sample()
        };
        let bytes = encoded(&notified);
        assert_eq!(&bytes[56..64], &[0x90, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(ConnectionContext::decode(&bytes), Ok(notified));
    }

    #[test]
    fn refuses_each_header_malformation_with_its_own_error() {
        let good = encoded(&sample());
        assert_eq!(ConnectionContext::decode(&[]), Err(ConnectError::TooShort));
        assert_eq!(
            ConnectionContext::decode(&good[..15]),
            Err(ConnectError::TooShort)
        );

        let mut bad = good.clone();
        bad[0] = b'X';
        assert_eq!(ConnectionContext::decode(&bad), Err(ConnectError::BadMagic));

        let mut bad = good.clone();
        bad[4..6].copy_from_slice(&7u16.to_le_bytes());
        assert_eq!(
            ConnectionContext::decode(&bad),
            Err(ConnectError::UnsupportedVersion(7))
        );

        let mut bad = good.clone();
        bad[8..12].copy_from_slice(&17u32.to_le_bytes());
        assert_eq!(
            ConnectionContext::decode(&bad),
            Err(ConnectError::SizeMismatch)
        );

        let mut bad = good.clone();
        bad[6..8].copy_from_slice(&20u16.to_le_bytes());
        assert_eq!(
            ConnectionContext::decode(&bad),
            Err(ConnectError::SizeMismatch)
        );

        let mut bad = good.clone();
        bad[12] = 2;
        assert_eq!(
            ConnectionContext::decode(&bad),
            Err(ConnectError::UnknownFlags(2))
        );
        bad[15] = 0x80;
        assert_eq!(
            PortContext::decode(&bad),
            Err(ConnectError::UnknownFlags(0x8000_0002))
        );

        let huge = std::vec![0u8; MAX_SIZE + 1];
        assert_eq!(
            ConnectionContext::decode(&huge),
            Err(ConnectError::TooLarge)
        );
    }

    #[test]
    fn refuses_each_body_malformation_with_its_own_error() {
        let good = encoded(&sample());
        let body = |offset: usize, bytes: &[u8]| {
            let mut bad = good.clone();
            bad[offset..offset + bytes.len()].copy_from_slice(bytes);
            ConnectionContext::decode(&bad).map(|_| ())
        };
        let err = |e| Err(ConnectError::BadBody(e));
        assert_eq!(
            body(22, &[4]),
            err(DecodeError::BadValue(Field::HydrationPolicy))
        );
        assert_eq!(
            body(23, &[2]),
            err(DecodeError::BadValue(Field::PopulationPolicy))
        );
        assert_eq!(
            body(24, &0x0100_0000u32.to_le_bytes()),
            err(DecodeError::BadFlags(0x0100_0000))
        );
        assert_eq!(
            body(24, &InSyncPolicy::TRACK_ALL.bits().to_le_bytes()),
            Ok(())
        );
        assert_eq!(
            body(28, &(MAX_TIMEOUT_MS + 1).to_le_bytes()),
            err(DecodeError::BadValue(Field::Timeout))
        );
        assert_eq!(
            body(16, &[7, 0]),
            err(DecodeError::BadString(Field::ProviderName))
        );
        assert_eq!(body(16, &[8, 0]), err(DecodeError::Truncated));
        assert_eq!(body(16, &[4, 0]), err(DecodeError::LengthMismatch));
        assert_eq!(
            body(16, &[0, 2]),
            err(DecodeError::TooLarge(Field::ProviderName))
        );
        assert_eq!(
            body(18, &[0, 2]),
            err(DecodeError::TooLarge(Field::ProviderVersion))
        );
        assert_eq!(
            body(72, &[b'C', 0]),
            err(DecodeError::BadValue(Field::SyncRootPath)),
            "a DOS path is not an NT path"
        );
        assert_eq!(
            body(48, &1u32.to_le_bytes()),
            err(DecodeError::BadFlags(1)),
            "bit 0 is no connect flag"
        );
        assert_eq!(
            body(54, &[8]),
            err(DecodeError::BadValue(Field::ManagementPolicy))
        );
        assert_eq!(
            body(55, &[2]),
            err(DecodeError::BadValue(Field::HardLinkPolicy))
        );
        assert_eq!(
            body(56, &0x100u32.to_le_bytes()),
            err(DecodeError::BadValue(Field::Notifications))
        );
        assert_eq!(body(60, &[1]), err(DecodeError::BadValue(Field::Reserved)));
    }

    #[test]
    fn encoding_refuses_what_decoding_would() {
        let mut out = [0u8; 1024];
        let long = [u16::from(b'a'); MAX_NAME_UNITS + 1];
        let ctx = ConnectionContext {
            provider_name: Utf16::from_units(&long),
            ..sample()
        };
        assert_eq!(
            ctx.encode(&mut out),
            Err(EncodeError::TooLarge(Field::ProviderName))
        );
        let ctx = ConnectionContext {
            timeout_ms: MAX_TIMEOUT_MS + 1,
            provider_id: [0; 16],
            connect_flags: ConnectFlags::NONE,
            modifiers: HydrationModifiers::NONE,
            management: ManagementPolicy::DEFAULT,
            hard_links: HardLinkPolicy::NONE,
            notifications: NotifySet::NONE,
            ..sample()
        };
        assert_eq!(
            ctx.encode(&mut out),
            Err(EncodeError::BadValue(Field::Timeout))
        );
        let ctx = ConnectionContext {
            sync_root: Utf16::EMPTY,
            ..sample()
        };
        assert_eq!(
            ctx.encode(&mut out),
            Err(EncodeError::BadValue(Field::SyncRootPath))
        );
        let root: Vec<u16> = core::iter::once(u16::from(b'\\'))
            .chain(core::iter::repeat_n(u16::from(b'x'), MAX_SIZE / 2))
            .collect();
        let ctx = ConnectionContext {
            sync_root: Utf16::from_units(&root),
            ..sample()
        };
        assert_eq!(
            ctx.encode(&mut std::vec![0u8; MAX_SIZE * 2]),
            Err(EncodeError::TooLarge(Field::Message))
        );
        assert_eq!(
            sample().encode(&mut out[..10]),
            Err(EncodeError::BufferTooSmall {
                needed: sample().encoded_len()
            })
        );
    }

    #[test]
    fn a_management_context_is_the_header_alone_with_its_flag() {
        let mut out = [0xAAu8; 32];
        assert_eq!(PortContext::Management.encoded_len(), HEADER_SIZE);
        assert_eq!(PortContext::Management.encode(&mut out), Ok(HEADER_SIZE));
        let bytes = &out[..HEADER_SIZE];
        assert_eq!(&bytes[..4], b"CFLT");
        assert_eq!(&bytes[4..8], &[1, 0, 16, 0], "version 1, header 16");
        assert_eq!(&bytes[8..12], &16u32.to_le_bytes(), "total = header");
        assert_eq!(&bytes[12..16], &FLAG_MANAGEMENT.to_le_bytes());
        assert_eq!(PortContext::decode(bytes), Ok(PortContext::Management));
        assert_eq!(
            ConnectionContext::decode(bytes),
            Err(ConnectError::NotAProvider)
        );
        assert_eq!(
            PortContext::Management.encode(&mut out[..15]),
            Err(EncodeError::BufferTooSmall {
                needed: HEADER_SIZE
            })
        );
    }

    #[test]
    fn a_management_context_with_a_body_or_a_provider_without_one_is_refused() {
        // The management flag on a provider's context: the body is not allowed.
        let mut bad = encoded(&sample());
        bad[12] = 1;
        assert_eq!(
            PortContext::decode(&bad),
            Err(ConnectError::BadBody(DecodeError::LengthMismatch))
        );
        // A management header that claims more bytes, with them present.
        let mut long = [0u8; HEADER_SIZE + 4];
        assert_eq!(PortContext::Management.encode(&mut long), Ok(HEADER_SIZE));
        long[8..12].copy_from_slice(&20u32.to_le_bytes());
        assert_eq!(
            PortContext::decode(&long),
            Err(ConnectError::BadBody(DecodeError::LengthMismatch))
        );
        // The header alone without the flag is a provider context with no body.
        let mut bare = [0u8; HEADER_SIZE];
        assert_eq!(PortContext::Management.encode(&mut bare), Ok(HEADER_SIZE));
        bare[12] = 0;
        assert_eq!(
            PortContext::decode(&bare),
            Err(ConnectError::BadBody(DecodeError::Truncated))
        );
    }

    #[test]
    fn a_provider_context_decodes_the_same_through_both_entry_points() {
        let bytes = encoded(&sample());
        assert_eq!(
            PortContext::decode(&bytes),
            Ok(PortContext::Provider(sample()))
        );
        let mut out = std::vec![0u8; bytes.len()];
        assert_eq!(
            PortContext::Provider(sample()).encode(&mut out),
            Ok(bytes.len())
        );
        assert_eq!(out, bytes);
    }

    #[test]
    fn hydration_policies_order_by_eagerness() {
        assert!(HydrationPolicy::Partial < HydrationPolicy::Progressive);
        assert!(HydrationPolicy::Progressive < HydrationPolicy::Full);
        assert!(HydrationPolicy::Full < HydrationPolicy::AlwaysFull);
    }

    fn units(max: usize) -> impl Strategy<Value = Vec<u16>> {
        proptest::collection::vec(any::<u16>(), 0..=max)
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = ConnectionContext::decode(&bytes);
        }

        #[test]
        fn any_valid_context_round_trips(
            name in units(MAX_NAME_UNITS),
            version in units(MAX_NAME_UNITS),
            root in units(600),
            hydration in (0u8..4).prop_filter_map("a policy", HydrationPolicy::from_u8),
            population in (0u8..2).prop_filter_map("a policy", PopulationPolicy::from_u8),
            in_sync in any::<u32>().prop_filter_map("a policy", InSyncPolicy::from_bits),
            timeout_ms in 0..=MAX_TIMEOUT_MS,
        ) {
            let root: Vec<u16> = core::iter::once(u16::from(b'\\')).chain(root).collect();
            let ctx = ConnectionContext {
                provider_name: Utf16::from_units(&name),
                provider_version: Utf16::from_units(&version),
                sync_root: Utf16::from_units(&root),
                hydration,
                population,
                in_sync,
                timeout_ms,
                provider_id: [0; 16],
                connect_flags: ConnectFlags::NONE,
            modifiers: HydrationModifiers::NONE,
            management: ManagementPolicy::DEFAULT,
            hard_links: HardLinkPolicy::NONE,
            notifications: NotifySet::NONE,
            };
            let bytes = encoded(&ctx);
            prop_assert_eq!(ConnectionContext::decode(&bytes), Ok(ctx));
        }

        #[test]
        fn truncation_and_corruption_never_panic_and_truncation_is_refused(
            root in units(40),
            cut in any::<prop::sample::Index>(),
            flip in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            let root: Vec<u16> = core::iter::once(u16::from(b'\\')).chain(root).collect();
            let bytes = encoded(&ConnectionContext { sync_root: Utf16::from_units(&root), ..sample() });
            prop_assert!(ConnectionContext::decode(&bytes[..cut.index(bytes.len())]).is_err());
            let mut corrupt = bytes.clone();
            corrupt[flip.index(bytes.len())] = byte;
            crate::fuzz::fuzz_connect(&corrupt);
        }
    }
}
