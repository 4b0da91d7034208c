//! The errors every decoder and encoder in this crate returns.
//!
//! Decoders read untrusted bytes (user-mode messages, reparse data read back from disk), so
//! a [`DecodeError`] names what was wrong precisely enough for a log line and for the
//! driver to pick an NTSTATUS, without echoing attacker-chosen bulk data. Encoders refuse
//! values that their own decoder would reject, so whatever encodes also decodes.

use core::fmt;

/// A field of some format, named by errors about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Field {
    /// The provider's opaque file identity.
    Identity,
    /// A path relative to the sync root.
    Path,
    /// The image path of the process whose I/O caused a fetch.
    RequestorImage,
    /// The provider's name in a connection context.
    ProviderName,
    /// The provider's version string in a connection context.
    ProviderVersion,
    /// The sync root path in a connection context.
    SyncRootPath,
    /// The data bytes of a transfer.
    Data,
    /// The payload of a reply.
    Payload,
    /// The hydrated-range list of a placeholder.
    Ranges,
    /// A fetch priority (0–15).
    Priority,
    /// A cancellation's or a dehydration's reason.
    Reason,
    /// A pin state.
    PinState,
    /// A hydration policy.
    HydrationPolicy,
    /// A population policy.
    PopulationPolicy,
    /// A provider timeout.
    Timeout,
    /// An NTSTATUS.
    Status,
    /// A reserved field, which must be zero so that a later version may use it.
    Reserved,
    /// A whole message or blob.
    Message,
    /// An image rule's pattern.
    Pattern,
    /// An image rule's visibility.
    RuleVisibility,
    /// A list of image rules.
    Rules,
    /// A sync root's identity in a registration.
    SyncRootIdentity,
    /// The hydration policy modifiers of a registration.
    HydrationModifiers,
    /// The hard-link policy of a registration.
    HardLinkPolicy,
    /// The placeholder-management policy of a registration.
    ManagementPolicy,
    /// The in-sync policy of a registration.
    InSyncPolicy,
    /// The requesting process's command line.
    CommandLine,
    /// The sync root directory's file identity.
    RootFileIdentity,
    /// A notification's kind.
    NotifyKind,
    /// A rename's target (or a rename completion's source) path.
    TargetPath,
    /// The notifications a provider asks for.
    Notifications,
    /// The entries of a population batch.
    Entries,
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Field::Identity => "file identity",
            Field::Path => "path",
            Field::RequestorImage => "requestor image path",
            Field::ProviderName => "provider name",
            Field::ProviderVersion => "provider version",
            Field::SyncRootPath => "sync root path",
            Field::Data => "transfer data",
            Field::Payload => "reply payload",
            Field::Ranges => "hydrated ranges",
            Field::Priority => "priority",
            Field::Reason => "cancel or dehydration reason",
            Field::PinState => "pin state",
            Field::HydrationPolicy => "hydration policy",
            Field::PopulationPolicy => "population policy",
            Field::Timeout => "timeout",
            Field::Status => "status",
            Field::Reserved => "reserved field",
            Field::Message => "message",
            Field::Pattern => "image rule pattern",
            Field::RuleVisibility => "image rule visibility",
            Field::Rules => "image rule list",
            Field::SyncRootIdentity => "sync root identity",
            Field::HydrationModifiers => "hydration policy modifiers",
            Field::HardLinkPolicy => "hard-link policy",
            Field::ManagementPolicy => "placeholder management policy",
            Field::InSyncPolicy => "in-sync policy",
            Field::CommandLine => "requestor command line",
            Field::RootFileIdentity => "root file identity",
            Field::NotifyKind => "notification kind",
            Field::TargetPath => "rename target path",
            Field::Notifications => "notifications",
            Field::Entries => "placeholder entries",
        })
    }
}

/// Why bytes did not decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DecodeError {
    /// The bytes end before a field or a declared length does.
    Truncated,
    /// The magic number is not this format's.
    BadMagic,
    /// A format version this build does not read.
    BadVersion(u16),
    /// A declared length disagrees with the bytes present or with the other lengths.
    LengthMismatch,
    /// A field is longer than its limit allows.
    TooLarge(Field),
    /// A byte range is empty where it may not be, overflows, lies beyond the file size, or
    /// is out of order, overlapping or adjacent in a list that must be merged.
    BadRange,
    /// Flag bits that are undefined or contradict each other (the raw flags value).
    BadFlags(u32),
    /// A UTF-16LE string with an odd byte length.
    BadString(Field),
    /// A message kind this build does not know.
    UnknownKind(u16),
    /// A known message kind, but not the one the caller asked to decode.
    UnexpectedKind(u16),
    /// The stored checksum does not match the bytes.
    BadChecksum,
    /// A reparse buffer that carries another reparse tag.
    BadTag(u32),
    /// A reparse buffer that carries another GUID.
    BadGuid,
    /// A field holds a value outside its defined set or range.
    BadValue(Field),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Truncated => f.write_str("truncated"),
            DecodeError::BadMagic => f.write_str("bad magic"),
            DecodeError::BadVersion(v) => write!(f, "unsupported version {v}"),
            DecodeError::LengthMismatch => f.write_str("declared length does not match"),
            DecodeError::TooLarge(field) => write!(f, "{field} too large"),
            DecodeError::BadRange => f.write_str("invalid byte range"),
            DecodeError::BadFlags(bits) => write!(f, "invalid flags {bits:#x}"),
            DecodeError::BadString(field) => write!(f, "{field} has an odd UTF-16 byte length"),
            DecodeError::UnknownKind(kind) => write!(f, "unknown message kind {kind:#06x}"),
            DecodeError::UnexpectedKind(kind) => {
                write!(f, "message kind {kind:#06x} where another was expected")
            }
            DecodeError::BadChecksum => f.write_str("checksum mismatch"),
            DecodeError::BadTag(tag) => write!(f, "reparse tag {tag:#010x} is not cloudflt's"),
            DecodeError::BadGuid => f.write_str("reparse GUID is not cloudflt's"),
            DecodeError::BadValue(field) => write!(f, "invalid {field}"),
        }
    }
}

impl core::error::Error for DecodeError {}

/// Why a value could not be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EncodeError {
    /// The output buffer is shorter than the encoding, which needs `needed` bytes.
    BufferTooSmall {
        /// The encoded length.
        needed: usize,
    },
    /// A field is longer than its limit allows.
    TooLarge(Field),
    /// A byte range the decoder would refuse (see [`DecodeError::BadRange`]).
    BadRange,
    /// Flags the decoder would refuse (the raw flags value).
    BadFlags(u32),
    /// A field holds a value outside its defined set or range.
    BadValue(Field),
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::BufferTooSmall { needed } => {
                write!(f, "output buffer too small: {needed} bytes needed")
            }
            EncodeError::TooLarge(field) => write!(f, "{field} too large"),
            EncodeError::BadRange => f.write_str("invalid byte range"),
            EncodeError::BadFlags(bits) => write!(f, "invalid flags {bits:#x}"),
            EncodeError::BadValue(field) => write!(f, "invalid {field}"),
        }
    }
}

impl core::error::Error for EncodeError {}
