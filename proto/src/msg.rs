//! Messages on the communication port, after Filter Manager's own header.
//!
//! Filter Manager puts a 16-byte FILTER_MESSAGE_HEADER in front of what the driver sends
//! and expects a 16-byte FILTER_REPLY_HEADER in front of a reply; neither is part of these
//! formats. Everything here starts at the byte after them.
//!
//! Traffic in each direction:
//! - kernel → provider, with FltSendMessage and no reply beyond Filter Manager's own:
//!   [`FetchData`], [`CancelFetch`], [`ValidateData`] (together [`KernelMessage`]);
//! - provider → kernel, as FilterSendMessage input: [`TransferData`], [`FetchFailed`],
//!   [`CreatePlaceholder`], [`Convert`], [`Revert`], [`Hydrate`], [`Dehydrate`],
//!   [`SetPin`], [`GetInfo`], [`Update`], [`SetInSync`], [`RetrieveData`], [`AckData`]
//!   (together [`ProviderMessage`]);
//!   the driver answers each in FilterSendMessage's output buffer with a [`Reply`];
//! - management client → kernel, on a management connection
//!   ([`PortContext::Management`](crate::PortContext::Management)) and only there:
//!   [`SetImageRule`], [`RemoveImageRule`], [`ClearImageRules`], [`ListImageRules`]
//!   (together [`ManagementMessage`]), answered with a [`Reply`] the same way. A provider
//!   connection cannot send them, nor a management connection a provider's.
//!
//! Every message starts with a 16-byte header (all fields little-endian):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 2 | kind ([`Kind`]) |
//! | 2 | 2 | version ([`PROTOCOL_VERSION`]) |
//! | 4 | 4 | length of the whole message, header included |
//! | 8 | 8 | request id |
//!
//! then a fixed part per kind, then that kind's variable parts in the order its type
//! documents. Their lengths sit in the fixed part, so every length is known and checked
//! before any variable byte is read. Reserved fields are written as zero and refused when
//! not zero, so a later version can use them.
//!
//! A buffer may extend past the declared length: FilterGetMessage does not report how many
//! bytes it filled, so a provider hands over its whole buffer and the header's length says
//! where the message ends. The bytes after it are ignored. Within the declared length,
//! every byte must belong to a field.

use crate::PROTOCOL_VERSION;
use crate::error::{DecodeError, EncodeError, Field};
use crate::placeholder::{
    ByteRange, MAX_BLOB_SIZE, MAX_IDENTITY_LEN, PlaceholderFlags, RANGE_SIZE, RangeList,
};
use crate::registration::{MAX_SYNC_ROOT_IDENTITY_LEN, RegisterFlags, Registration};
use crate::rules::{MAX_RULE_LIST_LEN, RuleVisibility, pattern_len, read_pattern_len};
use crate::utf16::Utf16;
use crate::wire::{Reader, Writer, len_u16};

/// Size of the common message header.
pub const HEADER_SIZE: usize = 16;

/// Longest path relative to the sync root, in bytes: 32,767 UTF-16 code units, the NT
/// path limit.
pub const MAX_PATH_BYTES: usize = 32_767 * 2;

/// Longest requestor image path, in bytes (1,024 UTF-16 code units): enough for any image
/// path a provider would show, and it keeps fetch messages small.
pub const MAX_IMAGE_BYTES: usize = 1024 * 2;

/// Highest fetch priority (cfapi's priority hint, 0–15).
pub const MAX_PRIORITY: u8 = 15;

/// Most data one [`TransferData`] may carry (1 MiB, a multiple of 4 KiB). The driver copies
/// each message out of user memory before parsing it, so this bounds that copy; larger
/// transfers are sent as several messages.
pub const MAX_TRANSFER_LEN: usize = 1024 * 1024;

/// Largest [`Reply`] payload: the bytes a [`RetrieveData`] reads back (at most
/// [`MAX_TRANSFER_LEN`]), a placeholder blob ([`GetInfo`], [`Hydrate`], [`Update`],
/// [`SetInSync`]) or the longest rule list ([`ListImageRules`]), whichever is larger.
/// A client sizes its reply buffer for the message it sends, not for this.
pub const MAX_REPLY_PAYLOAD: usize = max(MAX_TRANSFER_LEN, max(MAX_BLOB_SIZE, MAX_RULE_LIST_LEN));

const fn max(a: usize, b: usize) -> usize {
    if a > b { a } else { b }
}

/// Fixed part sizes, after the header.
const FETCH_FIXED: usize = 56;
const CANCEL_FIXED: usize = 24;
const TRANSFER_FIXED: usize = 16;
const FAILED_FIXED: usize = 8;
const RETRIEVE_FIXED: usize = 16;
const ACK_FIXED: usize = 24;
const CREATE_FIXED: usize = 56;
const CONVERT_FIXED: usize = 8;
const PATH_ONLY_FIXED: usize = 8;
const RANGE_OP_FIXED: usize = 24;
const SET_PIN_FIXED: usize = 8;
const UPDATE_FIXED: usize = 64;
const SET_IN_SYNC_FIXED: usize = 16;
const SET_RULE_FIXED: usize = 8;
const PATTERN_ONLY_FIXED: usize = 8;
const EMPTY_FIXED: usize = 8;
const REGISTER_FIXED: usize = 8;

/// Longest [`FetchData`] (and [`ValidateData`]): every variable part at its limit.
const MAX_FETCH_LEN: usize = HEADER_SIZE
    + FETCH_FIXED
    + MAX_IMAGE_BYTES
    + MAX_PATH_BYTES
    + MAX_IDENTITY_LEN
    + MAX_COMMAND_LINE_BYTES
    + MAX_SYNC_ROOT_IDENTITY_LEN
    + MAX_IDENTITY_LEN;

/// Longest message the driver sends: a [`FetchData`] or a [`Notify`] (which carries a
/// second path) with every variable part at its limit. A provider's FilterGetMessage
/// buffer needs this plus the 16-byte FILTER_MESSAGE_HEADER.
pub const MAX_KERNEL_MESSAGE_LEN: usize = if MAX_FETCH_LEN > notify::MAX_NOTIFY_LEN {
    MAX_FETCH_LEN
} else {
    notify::MAX_NOTIFY_LEN
};

/// Longest message a provider sends: a [`TransferData`] of [`MAX_TRANSFER_LEN`] bytes.
pub const MAX_PROVIDER_MESSAGE_LEN: usize = HEADER_SIZE + TRANSFER_FIXED + MAX_TRANSFER_LEN;

/// Most ranges one [`Update`] may ask to dehydrate: what fits in a message of
/// [`MAX_PROVIDER_MESSAGE_LEN`] beside the longest path and identity (61,181).
pub const MAX_UPDATE_RANGES: usize =
    (MAX_PROVIDER_MESSAGE_LEN - HEADER_SIZE - UPDATE_FIXED - MAX_PATH_BYTES - MAX_IDENTITY_LEN)
        / RANGE_SIZE;

// The range count travels as a u16.
const _: () = assert!(MAX_UPDATE_RANGES <= u16::MAX as usize);

/// Largest value a header's length field may hold.
const MAX_MESSAGE_LEN: usize = if MAX_KERNEL_MESSAGE_LEN > MAX_PROVIDER_MESSAGE_LEN {
    MAX_KERNEL_MESSAGE_LEN
} else {
    MAX_PROVIDER_MESSAGE_LEN
};

/// What a message is. Kernel → provider kinds are `0x00xx`, provider → kernel `0x01xx`,
/// management client → kernel `0x02xx`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u16)]
#[non_exhaustive]
pub enum Kind {
    /// [`FetchData`].
    FetchData = 0x0001,
    /// [`CancelFetch`].
    CancelFetch = 0x0002,
    /// [`ValidateData`].
    ValidateData = 0x0003,
    /// [`Notify`].
    Notify = 0x0004,
    /// [`FetchPlaceholders`].
    FetchPlaceholders = 0x0005,
    /// [`CancelFetchPlaceholders`].
    CancelFetchPlaceholders = 0x0006,
    /// [`TransferData`].
    TransferData = 0x0101,
    /// [`FetchFailed`].
    FetchFailed = 0x0102,
    /// [`CreatePlaceholder`].
    CreatePlaceholder = 0x0103,
    /// [`Convert`].
    Convert = 0x0104,
    /// [`Revert`].
    Revert = 0x0105,
    /// [`Hydrate`].
    Hydrate = 0x0106,
    /// [`Dehydrate`].
    Dehydrate = 0x0107,
    /// [`SetPin`].
    SetPin = 0x0108,
    /// [`GetInfo`].
    GetInfo = 0x0109,
    /// [`Update`].
    Update = 0x010A,
    /// [`SetInSync`].
    SetInSync = 0x010B,
    /// [`RetrieveData`].
    RetrieveData = 0x010C,
    /// [`AckData`].
    AckData = 0x010D,
    /// [`AckNotify`].
    AckNotify = 0x010E,
    /// [`TransferPlaceholders`].
    TransferPlaceholders = 0x010F,
    /// [`SetImageRule`].
    SetImageRule = 0x0201,
    /// [`RemoveImageRule`].
    RemoveImageRule = 0x0202,
    /// [`ClearImageRules`].
    ClearImageRules = 0x0203,
    /// [`ListImageRules`].
    ListImageRules = 0x0204,
    /// Control → kernel: register a sync root (or update its registration).
    RegisterSyncRoot = 0x0301,
    /// Control → kernel: unregister a sync root.
    UnregisterSyncRoot = 0x0302,
    /// Control → kernel: the registration of the root a path lies under.
    GetSyncRootInfo = 0x0303,
    /// Control → kernel: the registered sync roots.
    ListSyncRoots = 0x0304,
    /// [`DehydrateByPath`].
    DehydrateByPath = 0x0401,
    /// [`SetInSyncByPath`].
    SetInSyncByPath = 0x0402,
}

impl Kind {
    /// The kind with wire value `v`, if there is one.
    pub const fn from_u16(v: u16) -> Option<Self> {
        Some(match v {
            0x0001 => Kind::FetchData,
            0x0002 => Kind::CancelFetch,
            0x0003 => Kind::ValidateData,
            0x0004 => Kind::Notify,
            0x0005 => Kind::FetchPlaceholders,
            0x0006 => Kind::CancelFetchPlaceholders,
            0x0101 => Kind::TransferData,
            0x0102 => Kind::FetchFailed,
            0x0103 => Kind::CreatePlaceholder,
            0x0104 => Kind::Convert,
            0x0105 => Kind::Revert,
            0x0106 => Kind::Hydrate,
            0x0107 => Kind::Dehydrate,
            0x0108 => Kind::SetPin,
            0x0109 => Kind::GetInfo,
            0x010A => Kind::Update,
            0x010B => Kind::SetInSync,
            0x010C => Kind::RetrieveData,
            0x010D => Kind::AckData,
            0x010E => Kind::AckNotify,
            0x010F => Kind::TransferPlaceholders,
            0x0201 => Kind::SetImageRule,
            0x0202 => Kind::RemoveImageRule,
            0x0203 => Kind::ClearImageRules,
            0x0204 => Kind::ListImageRules,
            0x0301 => Kind::RegisterSyncRoot,
            0x0302 => Kind::UnregisterSyncRoot,
            0x0303 => Kind::GetSyncRootInfo,
            0x0304 => Kind::ListSyncRoots,
            0x0401 => Kind::DehydrateByPath,
            0x0402 => Kind::SetInSyncByPath,
            _ => return None,
        })
    }

    /// The wire value.
    pub const fn to_u16(self) -> u16 {
        self as u16
    }

    /// Whether the driver sends this kind (rather than a client).
    pub const fn is_from_kernel(self) -> bool {
        self.to_u16() < 0x0100
    }

    /// Whether this kind is a management message, which only a management connection
    /// may send: the image rules (administrators only), the sync-root registrations
    /// (any user, for roots the user may write) and the placeholder operations of
    /// processes other than the provider (as the root's policies allow).
    pub const fn is_management(self) -> bool {
        matches!(self.to_u16() >> 8, 0x02..=0x04)
    }

    /// Whether this kind is an image-rule message, which only an administrator's
    /// management connection may send.
    pub const fn is_image_rule(self) -> bool {
        self.to_u16() >> 8 == 0x02
    }
}

/// The common header of every message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Header {
    /// What follows.
    pub kind: Kind,
    /// The whole message's length, header included.
    pub length: u32,
    /// The request this message is or answers.
    pub request_id: u64,
}

impl Header {
    /// Decodes and checks the header at the start of `bytes`: a known kind, this protocol
    /// version, and a length that covers the header and lies within `bytes`.
    pub fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        Self::decode_within(bytes, bytes.len())
    }

    /// [`Self::decode`] for a header at the start of `bytes` whose message lies in a
    /// buffer of `available` bytes, of which `bytes` may hold only the first few.
    fn decode_within(bytes: &[u8], available: usize) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let kind = r.u16()?;
        let version = r.u16()?;
        let length = r.u32()?;
        let request_id = r.u64()?;
        if version != PROTOCOL_VERSION {
            return Err(DecodeError::BadVersion(version));
        }
        let kind = Kind::from_u16(kind).ok_or(DecodeError::UnknownKind(kind))?;
        let len = usize::try_from(length).map_err(|_| DecodeError::TooLarge(Field::Message))?;
        if len < HEADER_SIZE {
            return Err(DecodeError::LengthMismatch);
        }
        if len > MAX_MESSAGE_LEN {
            return Err(DecodeError::TooLarge(Field::Message));
        }
        if len > available {
            return Err(DecodeError::Truncated);
        }
        Ok(Self {
            kind,
            length,
            request_id,
        })
    }

    /// The header and the body it declares (the bytes after the header, up to `length`).
    fn split(bytes: &[u8]) -> Result<(Self, &[u8]), DecodeError> {
        let header = Self::decode(bytes)?;
        let len = usize::try_from(header.length).map_err(|_| DecodeError::Truncated)?;
        let body = bytes.get(HEADER_SIZE..len).ok_or(DecodeError::Truncated)?;
        Ok((header, body))
    }
}

/// Checks a string against its byte limit and returns its wire length.
fn str_len(s: &Utf16<'_>, max: usize, field: Field) -> Result<u16, EncodeError> {
    if s.byte_len() > max {
        return Err(EncodeError::TooLarge(field));
    }
    len_u16(s.byte_len(), field)
}

/// Checks an identity against [`MAX_IDENTITY_LEN`] and returns its wire length.
fn identity_len(identity: &[u8]) -> Result<u16, EncodeError> {
    if identity.len() > MAX_IDENTITY_LEN {
        return Err(EncodeError::TooLarge(Field::Identity));
    }
    len_u16(identity.len(), Field::Identity)
}

/// Reads a declared length and checks it against its limit before anything is read.
fn read_len(r: &mut Reader<'_>, max: usize, field: Field) -> Result<u16, DecodeError> {
    let len = r.u16()?;
    if usize::from(len) > max {
        return Err(DecodeError::TooLarge(field));
    }
    Ok(len)
}

/// Adds encode, decode and length functions around a message's body functions.
macro_rules! message {
    ($ty:ident $(<$lt:lifetime>)?, $kind:expr) => {
        impl<'a> $ty $(<$lt>)? {
            /// The kind in this message's header.
            pub const KIND: Kind = $kind;

            /// The encoded length, header included. Saturates for values too large to
            /// encode, which [`Self::encode`] refuses.
            pub fn encoded_len(&self) -> usize {
                HEADER_SIZE.saturating_add(self.body_len())
            }

            /// Encodes the message into the start of `out`, returning
            /// [`Self::encoded_len`]. Refuses any value its decoder would refuse.
            pub fn encode(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
                self.check()?;
                let len = self.encoded_len();
                let length =
                    u32::try_from(len).map_err(|_| EncodeError::TooLarge(Field::Message))?;
                let mut w = Writer::new(out, len)?;
                w.u16(Self::KIND.to_u16())?;
                w.u16(PROTOCOL_VERSION)?;
                w.u32(length)?;
                w.u64(self.request_id)?;
                self.write_body(&mut w)?;
                Ok(w.finish())
            }

            /// Decodes a message of this kind from the start of `bytes`, borrowing its
            /// variable parts. Bytes past the header's length are ignored.
            pub fn decode(bytes: &'a [u8]) -> Result<Self, DecodeError> {
                let (header, body) = Header::split(bytes)?;
                if header.kind != Self::KIND {
                    return Err(DecodeError::UnexpectedKind(header.kind.to_u16()));
                }
                let mut r = Reader::new(body);
                let message = Self::read_body(header.request_id, &mut r)?;
                r.finish()?;
                Ok(message)
            }
        }
    };
}

flags! {
    /// Flags of a [`FetchData`] (and [`ValidateData`]): what the provider's connect flags
    /// asked the request to carry.
    RequestFlags(u8) {
        /// No flag set.
        EMPTY = 0,
        /// `path` is the placeholder's full NT path (REQUIRE_FULL_FILE_PATH), not the path
        /// relative to the sync root.
        FULL_PATH = 1,
        /// The requestor's command line is carried (REQUIRE_PROCESS_INFO): the process's
        /// own, or `UNKNOWN` when the driver could not read it, as cfapi says.
        PROCESS_INFO = 2,
    } all = 3
}

/// Longest requestor command line, in bytes: 32,767 UTF-16 units, Windows' limit.
pub const MAX_COMMAND_LINE_BYTES: usize = 32_767 * 2;

/// Kernel → provider: bring a range of a placeholder's data.
///
/// Fixed part (56 bytes): file id `u64`, file size `u64`, required offset `u64`, required
/// length `u64`, priority `u8`, flags `u8` ([`RequestFlags`]), 2 reserved, requestor pid
/// `u32`, requestor image length `u16`, path length `u16`, identity length `u16`,
/// command line length `u16`, sync-root identity length `u32`, root file identity length
/// `u16`, 2 reserved. Then the requestor image (UTF-16LE), the path (UTF-16LE), the
/// identity, the command line (UTF-16LE), the sync-root identity, the root file identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FetchData<'a> {
    /// Identifies this fetch; transfers, failures and cancellations name it.
    pub request_id: u64,
    /// The NTFS file id of the placeholder.
    pub file_id: u64,
    /// The placeholder's file size.
    pub file_size: u64,
    /// The bytes the waiting I/O needs: non-empty and within the file size.
    pub required: ByteRange,
    /// Priority hint, 0 (lowest) to [`MAX_PRIORITY`].
    pub priority: u8,
    /// The process whose I/O caused the fetch.
    pub requestor_pid: u32,
    /// That process's image path, at most [`MAX_IMAGE_BYTES`] bytes (may be truncated
    /// by the driver to fit).
    pub requestor_image: Utf16<'a>,
    /// The placeholder's path relative to the sync root (its full NT path with
    /// [`RequestFlags::FULL_PATH`]), at most [`MAX_PATH_BYTES`].
    pub path: Utf16<'a>,
    /// The provider's file identity from the placeholder, at most [`MAX_IDENTITY_LEN`].
    pub identity: &'a [u8],
    /// What the request carries besides.
    pub flags: RequestFlags,
    /// With [`RequestFlags::PROCESS_INFO`], the requestor's command line, at most
    /// [`MAX_COMMAND_LINE_BYTES`]; empty otherwise.
    pub requestor_command_line: Utf16<'a>,
    /// The sync root's identity from its registration, at most
    /// [`MAX_SYNC_ROOT_IDENTITY_LEN`] (empty when it has none).
    pub sync_root_identity: &'a [u8],
    /// The root directory's file identity from the registration, when the request is
    /// about the root itself; at most [`MAX_IDENTITY_LEN`].
    pub root_file_identity: &'a [u8],
}

impl<'a> FetchData<'a> {
    fn body_len(&self) -> usize {
        FETCH_FIXED
            .saturating_add(self.requestor_image.byte_len())
            .saturating_add(self.path.byte_len())
            .saturating_add(self.identity.len())
            .saturating_add(self.requestor_command_line.byte_len())
            .saturating_add(self.sync_root_identity.len())
            .saturating_add(self.root_file_identity.len())
    }

    fn check(&self) -> Result<(), EncodeError> {
        if self.priority > MAX_PRIORITY {
            return Err(EncodeError::BadValue(Field::Priority));
        }
        if !required_range_valid(self.required, self.file_size) {
            return Err(EncodeError::BadRange);
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
        w.u64(self.file_size)?;
        w.u64(self.required.offset)?;
        w.u64(self.required.length)?;
        w.u8(self.priority)?;
        w.u8(self.flags.bits())?;
        w.zeros(2)?;
        w.u32(self.requestor_pid)?;
        w.u16(image_len)?;
        w.u16(path_len)?;
        w.u16(identity_len)?;
        w.u16(command_line_len)?;
        w.u32(self.sync_root_identity.len() as u32)?;
        w.u16(self.root_file_identity.len() as u16)?;
        w.zeros(2)?;
        w.utf16(&self.requestor_image)?;
        w.utf16(&self.path)?;
        w.put(self.identity)?;
        w.utf16(&self.requestor_command_line)?;
        w.put(self.sync_root_identity)?;
        w.put(self.root_file_identity)
    }

    fn read_body(request_id: u64, r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        let file_id = r.u64()?;
        let file_size = r.u64()?;
        let required = ByteRange::new(r.u64()?, r.u64()?);
        let priority = r.u8()?;
        let bits = r.u8()?;
        let flags = RequestFlags::from_bits(bits).ok_or(DecodeError::BadFlags(u32::from(bits)))?;
        r.reserved(2)?;
        let requestor_pid = r.u32()?;
        let image_len = read_len(r, MAX_IMAGE_BYTES, Field::RequestorImage)?;
        let path_len = read_len(r, MAX_PATH_BYTES, Field::Path)?;
        let identity_len = read_len(r, MAX_IDENTITY_LEN, Field::Identity)?;
        let command_line_len = read_len(r, MAX_COMMAND_LINE_BYTES, Field::CommandLine)?;
        let root_identity_len = r.u32()?;
        if root_identity_len as usize > MAX_SYNC_ROOT_IDENTITY_LEN {
            return Err(DecodeError::TooLarge(Field::SyncRootIdentity));
        }
        let root_file_identity_len = read_len(r, MAX_IDENTITY_LEN, Field::RootFileIdentity)?;
        r.reserved(2)?;
        if priority > MAX_PRIORITY {
            return Err(DecodeError::BadValue(Field::Priority));
        }
        if !required_range_valid(required, file_size) {
            return Err(DecodeError::BadRange);
        }
        Ok(Self {
            request_id,
            file_id,
            file_size,
            required,
            priority,
            requestor_pid,
            requestor_image: r.utf16(image_len, Field::RequestorImage)?,
            path: r.utf16(path_len, Field::Path)?,
            identity: r.take(usize::from(identity_len))?,
            flags,
            requestor_command_line: r.utf16(command_line_len, Field::CommandLine)?,
            sync_root_identity: r.take(root_identity_len as usize)?,
            root_file_identity: r.take(usize::from(root_file_identity_len))?,
        })
    }
}
message!(FetchData<'a>, Kind::FetchData);

/// A fetch asks for at least one byte and nothing past end of file.
fn required_range_valid(range: ByteRange, file_size: u64) -> bool {
    range.length > 0 && range.end().is_some_and(|end| end <= file_size)
}

/// Kernel → provider: the data of a fetch is on disk; read it back ([`RetrieveData`]) and
/// say whether it is right ([`AckData`]). Sent only for a sync root registered with
/// VALIDATION_REQUIRED, once the fetch's whole range has been transferred; the reads
/// waiting on the fetch complete only for the ranges the provider acknowledges.
///
/// The header's request id is the fetch's. The body is [`FetchData`]'s, with `range` in
/// place of `required`: the range to validate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValidateData<'a> {
    /// The fetch whose data this is.
    pub request_id: u64,
    /// The NTFS file id of the placeholder.
    pub file_id: u64,
    /// The placeholder's file size.
    pub file_size: u64,
    /// The bytes to validate: non-empty and within the file size.
    pub range: ByteRange,
    /// Priority hint, 0 (lowest) to [`MAX_PRIORITY`].
    pub priority: u8,
    /// The process whose I/O caused the fetch.
    pub requestor_pid: u32,
    /// Its image path (possibly empty).
    pub requestor_image: Utf16<'a>,
    /// The placeholder's path relative to the sync root.
    pub path: Utf16<'a>,
    /// The provider's file identity from the placeholder.
    pub identity: &'a [u8],
    /// As [`FetchData::flags`].
    pub flags: RequestFlags,
    /// As [`FetchData::requestor_command_line`].
    pub requestor_command_line: Utf16<'a>,
    /// As [`FetchData::sync_root_identity`].
    pub sync_root_identity: &'a [u8],
    /// As [`FetchData::root_file_identity`].
    pub root_file_identity: &'a [u8],
}

impl<'a> ValidateData<'a> {
    /// The fetch this validates, as the provider received it.
    pub fn as_fetch(&self) -> FetchData<'a> {
        FetchData {
            request_id: self.request_id,
            file_id: self.file_id,
            file_size: self.file_size,
            required: self.range,
            priority: self.priority,
            requestor_pid: self.requestor_pid,
            requestor_image: self.requestor_image,
            path: self.path,
            identity: self.identity,
            flags: self.flags,
            requestor_command_line: self.requestor_command_line,
            sync_root_identity: self.sync_root_identity,
            root_file_identity: self.root_file_identity,
        }
    }

    fn body_len(&self) -> usize {
        self.as_fetch().body_len()
    }

    fn check(&self) -> Result<(), EncodeError> {
        self.as_fetch().check()
    }

    fn write_body(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        self.as_fetch().write_body(w)
    }

    fn read_body(request_id: u64, r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        let f = FetchData::read_body(request_id, r)?;
        Ok(Self {
            request_id,
            file_id: f.file_id,
            file_size: f.file_size,
            range: f.required,
            priority: f.priority,
            requestor_pid: f.requestor_pid,
            requestor_image: f.requestor_image,
            path: f.path,
            identity: f.identity,
            flags: f.flags,
            requestor_command_line: f.requestor_command_line,
            sync_root_identity: f.sync_root_identity,
            root_file_identity: f.root_file_identity,
        })
    }
}
message!(ValidateData<'a>, Kind::ValidateData);

/// Provider → kernel: read back bytes of a fetch being validated, as they are on disk.
/// The reply's payload is the bytes (fewer only where the range passes end of file).
///
/// The header's request id is the fetch's. Fixed part (16 bytes): offset `u64`, length
/// `u64`; the range must lie within the one [`ValidateData`] named and be at most
/// [`MAX_TRANSFER_LEN`] long.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RetrieveData {
    /// The fetch being validated.
    pub request_id: u64,
    /// The bytes wanted.
    pub range: ByteRange,
}

impl RetrieveData {
    fn body_len(&self) -> usize {
        RETRIEVE_FIXED
    }

    fn check(&self) -> Result<(), EncodeError> {
        if !retrieve_range_valid(self.range) {
            return Err(EncodeError::BadRange);
        }
        Ok(())
    }

    fn write_body(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        w.u64(self.range.offset)?;
        w.u64(self.range.length)
    }

    fn read_body(request_id: u64, r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let range = ByteRange::new(r.u64()?, r.u64()?);
        if !retrieve_range_valid(range) {
            return Err(DecodeError::BadRange);
        }
        Ok(Self { request_id, range })
    }
}
message!(RetrieveData, Kind::RetrieveData);

/// A retrieval asks for at least one byte, at most one transfer's worth.
fn retrieve_range_valid(range: ByteRange) -> bool {
    range.length > 0 && range.length <= MAX_TRANSFER_LEN as u64 && range.end().is_some()
}

/// Provider → kernel: the verdict on (part of) a fetch being validated.
///
/// The header's request id is the fetch's. Fixed part (24 bytes): offset `u64`, length
/// `u64`, status `i32`, 4 reserved. A success status (zero) acknowledges the range: it is
/// recorded as present and the reads waiting for it complete. A failure refuses it: the
/// reads waiting on the fetch fail with STATUS_CLOUD_FILE_VALIDATION_FAILED and the range
/// stays missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AckData {
    /// The fetch being validated.
    pub request_id: u64,
    /// The range judged: non-empty.
    pub range: ByteRange,
    /// STATUS_SUCCESS to acknowledge, a failure (negative) to refuse.
    pub status: i32,
}

impl AckData {
    fn body_len(&self) -> usize {
        ACK_FIXED
    }

    fn check(&self) -> Result<(), EncodeError> {
        if self.range.length == 0 || self.range.end().is_none() {
            return Err(EncodeError::BadRange);
        }
        if self.status > 0 {
            return Err(EncodeError::BadValue(Field::Status));
        }
        Ok(())
    }

    fn write_body(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        w.u64(self.range.offset)?;
        w.u64(self.range.length)?;
        w.i32(self.status)?;
        w.zeros(4)
    }

    fn read_body(request_id: u64, r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let range = ByteRange::new(r.u64()?, r.u64()?);
        let status = r.i32()?;
        r.reserved(4)?;
        if range.length == 0 || range.end().is_none() {
            return Err(DecodeError::BadRange);
        }
        if status > 0 {
            return Err(DecodeError::BadValue(Field::Status));
        }
        Ok(Self {
            request_id,
            range,
            status,
        })
    }
}
message!(AckData, Kind::AckData);

/// Why the driver cancelled a fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
#[non_exhaustive]
pub enum CancelReason {
    /// Every waiting I/O went away: handle closed or thread terminated.
    IoAborted = 1,
    /// The provider did not answer within the sync root's timeout.
    IoTimeout = 2,
}

impl CancelReason {
    /// The reason with wire value `v`, if there is one.
    pub const fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(Self::IoAborted),
            2 => Some(Self::IoTimeout),
            _ => None,
        }
    }
}

/// Kernel → provider: stop working on (part of) a fetch.
///
/// The header's request id is the fetch's. Fixed part (24 bytes): offset `u64`, length
/// `u64`, reason `u32`, 4 reserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CancelFetch {
    /// The fetch being cancelled.
    pub request_id: u64,
    /// The part of it no longer needed (possibly all of it).
    pub range: ByteRange,
    /// Why.
    pub reason: CancelReason,
}

impl CancelFetch {
    fn body_len(&self) -> usize {
        CANCEL_FIXED
    }

    fn check(&self) -> Result<(), EncodeError> {
        if self.range.end().is_none() {
            return Err(EncodeError::BadRange);
        }
        Ok(())
    }

    fn write_body(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        w.u64(self.range.offset)?;
        w.u64(self.range.length)?;
        w.u32(self.reason as u32)?;
        w.zeros(4)
    }

    fn read_body(request_id: u64, r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let range = ByteRange::new(r.u64()?, r.u64()?);
        let reason =
            CancelReason::from_u32(r.u32()?).ok_or(DecodeError::BadValue(Field::Reason))?;
        r.reserved(4)?;
        if range.end().is_none() {
            return Err(DecodeError::BadRange);
        }
        Ok(Self {
            request_id,
            range,
            reason,
        })
    }
}
message!(CancelFetch, Kind::CancelFetch);

flags! {
    /// Flags of a [`TransferData`].
    TransferFlags(u32) {
        /// No flag set.
        EMPTY = 0,
        /// No more data follows for this fetch.
        LAST = 1,
    } all = 1
}

/// Provider → kernel: data for a fetch.
///
/// The header's request id is the fetch's. Fixed part (16 bytes): offset `u64`, flags
/// `u32` ([`TransferFlags`]), 4 reserved. The data is the rest of the message. Alignment
/// (cfapi's 4 KiB rule) depends on the file size, so the driver checks it, not this codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransferData<'a> {
    /// The fetch this data answers.
    pub request_id: u64,
    /// Where in the file the data goes.
    pub offset: u64,
    /// Flags.
    pub flags: TransferFlags,
    /// The data, at most [`MAX_TRANSFER_LEN`] bytes.
    pub data: &'a [u8],
}

impl<'a> TransferData<'a> {
    fn body_len(&self) -> usize {
        TRANSFER_FIXED.saturating_add(self.data.len())
    }

    fn check(&self) -> Result<(), EncodeError> {
        if self.data.len() > MAX_TRANSFER_LEN {
            return Err(EncodeError::TooLarge(Field::Data));
        }
        if TransferFlags::from_bits(self.flags.bits()).is_none() {
            return Err(EncodeError::BadFlags(self.flags.bits()));
        }
        if !transfer_range_valid(self.offset, self.data.len()) {
            return Err(EncodeError::BadRange);
        }
        Ok(())
    }

    fn write_body(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        w.u64(self.offset)?;
        w.u32(self.flags.bits())?;
        w.zeros(4)?;
        w.put(self.data)
    }

    fn read_body(request_id: u64, r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        let offset = r.u64()?;
        let bits = r.u32()?;
        r.reserved(4)?;
        let flags = TransferFlags::from_bits(bits).ok_or(DecodeError::BadFlags(bits))?;
        let data = r.take(r.rest().len())?;
        if data.len() > MAX_TRANSFER_LEN {
            return Err(DecodeError::TooLarge(Field::Data));
        }
        if !transfer_range_valid(offset, data.len()) {
            return Err(DecodeError::BadRange);
        }
        Ok(Self {
            request_id,
            offset,
            flags,
            data,
        })
    }

    /// The file range this transfer fills.
    pub fn range(&self) -> ByteRange {
        // `data.len()` is at most MAX_TRANSFER_LEN, which fits in u64.
        ByteRange::new(self.offset, self.data.len() as u64)
    }
}
message!(TransferData<'a>, Kind::TransferData);

/// Bytes of a [`TransferData`] before its data: the header and the fixed part. The data
/// starts at this offset of the message.
pub const TRANSFER_HEAD_LEN: usize = HEADER_SIZE + TRANSFER_FIXED;

/// A [`TransferData`] decoded from its first [`TRANSFER_HEAD_LEN`] bytes alone: every
/// field but the data, and the data's length.
///
/// For a reader that takes the data from where it lies rather than from a copy (the
/// driver locks the provider's pages and writes them to disk straight from there): it
/// accepts exactly the messages [`TransferData::decode`] accepts, given the head and the
/// length of the buffer the whole message is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransferHead {
    /// The fetch this data answers.
    pub request_id: u64,
    /// Where in the file the data goes.
    pub offset: u64,
    /// Flags.
    pub flags: TransferFlags,
    /// How many bytes of data follow the head, at most [`MAX_TRANSFER_LEN`].
    pub data_len: usize,
}

impl TransferHead {
    /// Decodes the head at the start of `head` (which needs only [`TRANSFER_HEAD_LEN`]
    /// bytes) of a message in a buffer of `available` bytes.
    pub fn decode(head: &[u8], available: usize) -> Result<Self, DecodeError> {
        let prefix = head
            .get(..TRANSFER_HEAD_LEN.min(head.len()))
            .unwrap_or(head);
        let header = Header::decode_within(prefix, available)?;
        if header.kind != Kind::TransferData {
            return Err(DecodeError::UnexpectedKind(header.kind.to_u16()));
        }
        let length = usize::try_from(header.length).map_err(|_| DecodeError::Truncated)?;
        let fixed = prefix.get(HEADER_SIZE..).ok_or(DecodeError::Truncated)?;
        // The fixed part must lie within the declared length, as the full decoder's
        // reader over the body would find.
        let body_len = length.saturating_sub(HEADER_SIZE);
        let mut r = Reader::new(fixed.get(..body_len.min(fixed.len())).unwrap_or(fixed));
        let offset = r.u64()?;
        let bits = r.u32()?;
        r.reserved(4)?;
        let flags = TransferFlags::from_bits(bits).ok_or(DecodeError::BadFlags(bits))?;
        let data_len = length.saturating_sub(TRANSFER_HEAD_LEN);
        if data_len > MAX_TRANSFER_LEN {
            return Err(DecodeError::TooLarge(Field::Data));
        }
        if !transfer_range_valid(offset, data_len) {
            return Err(DecodeError::BadRange);
        }
        Ok(Self {
            request_id: header.request_id,
            offset,
            flags,
            data_len,
        })
    }
}

/// The data's end must not overflow a file offset.
fn transfer_range_valid(offset: u64, len: usize) -> bool {
    u64::try_from(len)
        .ok()
        .and_then(|len| offset.checked_add(len))
        .is_some()
}

/// Provider → kernel: a fetch cannot be served.
///
/// The header's request id is the fetch's. Fixed part (8 bytes): status `i32`, 4 reserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FetchFailed {
    /// The fetch that failed.
    pub request_id: u64,
    /// Why, as an NTSTATUS that is not a success (negative). The driver turns statuses
    /// outside the cloud-file range into STATUS_CLOUD_FILE_UNSUCCESSFUL.
    pub status: i32,
}

impl FetchFailed {
    fn body_len(&self) -> usize {
        FAILED_FIXED
    }

    fn check(&self) -> Result<(), EncodeError> {
        if self.status >= 0 {
            return Err(EncodeError::BadValue(Field::Status));
        }
        Ok(())
    }

    fn write_body(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        w.i32(self.status)?;
        w.zeros(4)
    }

    fn read_body(request_id: u64, r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let status = r.i32()?;
        r.reserved(4)?;
        if status >= 0 {
            return Err(DecodeError::BadValue(Field::Status));
        }
        Ok(Self { request_id, status })
    }
}
message!(FetchFailed, Kind::FetchFailed);

/// Timestamps and attributes, as in FILE_BASIC_INFORMATION.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct BasicInfo {
    /// Creation time (100 ns units since 1601, UTC).
    pub creation_time: i64,
    /// Last access time.
    pub last_access_time: i64,
    /// Last write time.
    pub last_write_time: i64,
    /// Change time.
    pub change_time: i64,
    /// FILE_ATTRIBUTE_* bits; the driver decides which it honours.
    pub attributes: u32,
}

/// Provider → kernel: create a placeholder file or directory.
///
/// The request id is the provider's choice, echoed in the [`Reply`]. Fixed part (56 bytes):
/// file size `u64`, creation, last access, last write and change times (4 × `i64`),
/// attributes `u32`, flags `u32` ([`PlaceholderFlags`] bits), path length `u16`, identity
/// length `u16`, 4 reserved. Then the path (UTF-16LE), the identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CreatePlaceholder<'a> {
    /// Echoed in the reply.
    pub request_id: u64,
    /// The new placeholder's file size.
    pub file_size: u64,
    /// Its timestamps and attributes.
    pub basic: BasicInfo,
    /// Its initial state ([`PlaceholderFlags::DIRECTORY`] for a directory).
    pub flags: PlaceholderFlags,
    /// Where, relative to the sync root, at most [`MAX_PATH_BYTES`].
    pub path: Utf16<'a>,
    /// The provider's file identity, at most [`MAX_IDENTITY_LEN`].
    pub identity: &'a [u8],
}

impl<'a> CreatePlaceholder<'a> {
    fn body_len(&self) -> usize {
        CREATE_FIXED
            .saturating_add(self.path.byte_len())
            .saturating_add(self.identity.len())
    }

    fn check(&self) -> Result<(), EncodeError> {
        if PlaceholderFlags::from_bits(self.flags.bits()).is_none() {
            return Err(EncodeError::BadFlags(self.flags.bits().into()));
        }
        Ok(())
    }

    fn write_body(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        let path_len = str_len(&self.path, MAX_PATH_BYTES, Field::Path)?;
        let identity_len = identity_len(self.identity)?;
        w.u64(self.file_size)?;
        w.i64(self.basic.creation_time)?;
        w.i64(self.basic.last_access_time)?;
        w.i64(self.basic.last_write_time)?;
        w.i64(self.basic.change_time)?;
        w.u32(self.basic.attributes)?;
        w.u32(self.flags.bits().into())?;
        w.u16(path_len)?;
        w.u16(identity_len)?;
        w.zeros(4)?;
        w.utf16(&self.path)?;
        w.put(self.identity)
    }

    fn read_body(request_id: u64, r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        let file_size = r.u64()?;
        let basic = BasicInfo {
            creation_time: r.i64()?,
            last_access_time: r.i64()?,
            last_write_time: r.i64()?,
            change_time: r.i64()?,
            attributes: r.u32()?,
        };
        let bits = r.u32()?;
        let path_len = read_len(r, MAX_PATH_BYTES, Field::Path)?;
        let identity_len = read_len(r, MAX_IDENTITY_LEN, Field::Identity)?;
        r.reserved(4)?;
        let flags = u16::try_from(bits)
            .ok()
            .and_then(PlaceholderFlags::from_bits)
            .ok_or(DecodeError::BadFlags(bits))?;
        Ok(Self {
            request_id,
            file_size,
            basic,
            flags,
            path: r.utf16(path_len, Field::Path)?,
            identity: r.take(usize::from(identity_len))?,
        })
    }
}
message!(CreatePlaceholder<'a>, Kind::CreatePlaceholder);

flags! {
    /// Flags of a [`Convert`].
    ConvertFlags(u32) {
        /// No flag set.
        EMPTY = 0,
        /// Mark the placeholder in sync.
        IN_SYNC = 1,
        /// Drop the local data after converting, leaving a dehydrated placeholder.
        DEHYDRATE = 2,
    } all = 3
}

/// Provider → kernel: turn a full file into a placeholder.
///
/// Fixed part (8 bytes): flags `u32` ([`ConvertFlags`]), path length `u16`, identity length
/// `u16`. Then the path (UTF-16LE), the identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Convert<'a> {
    /// Echoed in the reply.
    pub request_id: u64,
    /// Options.
    pub flags: ConvertFlags,
    /// The file, relative to the sync root.
    pub path: Utf16<'a>,
    /// The provider's file identity to store.
    pub identity: &'a [u8],
}

impl<'a> Convert<'a> {
    fn body_len(&self) -> usize {
        CONVERT_FIXED
            .saturating_add(self.path.byte_len())
            .saturating_add(self.identity.len())
    }

    fn check(&self) -> Result<(), EncodeError> {
        if ConvertFlags::from_bits(self.flags.bits()).is_none() {
            return Err(EncodeError::BadFlags(self.flags.bits()));
        }
        Ok(())
    }

    fn write_body(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        let path_len = str_len(&self.path, MAX_PATH_BYTES, Field::Path)?;
        let identity_len = identity_len(self.identity)?;
        w.u32(self.flags.bits())?;
        w.u16(path_len)?;
        w.u16(identity_len)?;
        w.utf16(&self.path)?;
        w.put(self.identity)
    }

    fn read_body(request_id: u64, r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        let bits = r.u32()?;
        let path_len = read_len(r, MAX_PATH_BYTES, Field::Path)?;
        let identity_len = read_len(r, MAX_IDENTITY_LEN, Field::Identity)?;
        let flags = ConvertFlags::from_bits(bits).ok_or(DecodeError::BadFlags(bits))?;
        Ok(Self {
            request_id,
            flags,
            path: r.utf16(path_len, Field::Path)?,
            identity: r.take(usize::from(identity_len))?,
        })
    }
}
message!(Convert<'a>, Kind::Convert);

/// Declares a provider request that carries only a path.
///
/// Fixed part (8 bytes): path length `u16`, 6 reserved. Then the path (UTF-16LE).
macro_rules! path_only {
    ($(#[$doc:meta])* $ty:ident, $kind:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct $ty<'a> {
            /// Echoed in the reply.
            pub request_id: u64,
            /// The file or directory, relative to the sync root.
            pub path: Utf16<'a>,
        }

        impl<'a> $ty<'a> {
            fn body_len(&self) -> usize {
                PATH_ONLY_FIXED.saturating_add(self.path.byte_len())
            }

            fn check(&self) -> Result<(), EncodeError> {
                Ok(())
            }

            fn write_body(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
                w.u16(str_len(&self.path, MAX_PATH_BYTES, Field::Path)?)?;
                w.zeros(6)?;
                w.utf16(&self.path)
            }

            fn read_body(request_id: u64, r: &mut Reader<'a>) -> Result<Self, DecodeError> {
                let path_len = read_len(r, MAX_PATH_BYTES, Field::Path)?;
                r.reserved(6)?;
                Ok(Self {
                    request_id,
                    path: r.utf16(path_len, Field::Path)?,
                })
            }
        }
        message!($ty<'a>, $kind);
    };
}

path_only!(
    /// Provider → kernel: turn a placeholder back into an ordinary file (it must be fully
    /// hydrated, which the driver checks).
    ///
    /// Fixed part (8 bytes): path length `u16`, 6 reserved. Then the path (UTF-16LE).
    Revert,
    Kind::Revert
);

path_only!(
    /// Provider → kernel: report on a file. The [`Reply`] payload is the placeholder blob
    /// as stored (any version the driver reads: [`Placeholder::decode`] takes them all),
    /// or empty if the file is not a placeholder.
    ///
    /// [`Placeholder::decode`]: crate::Placeholder::decode
    ///
    /// Fixed part (8 bytes): path length `u16`, 6 reserved. Then the path (UTF-16LE).
    GetInfo,
    Kind::GetInfo
);

/// Declares a provider request that carries a path and a range.
///
/// Fixed part (24 bytes): offset `u64`, length `u64` (0 = to end of file), path length
/// `u16`, 6 reserved. Then the path (UTF-16LE).
macro_rules! range_op {
    ($(#[$doc:meta])* $ty:ident, $kind:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct $ty<'a> {
            /// Echoed in the reply.
            pub request_id: u64,
            /// The file, relative to the sync root.
            pub path: Utf16<'a>,
            /// The bytes concerned; a length of 0 means to end of file.
            pub range: ByteRange,
        }

        impl<'a> $ty<'a> {
            fn body_len(&self) -> usize {
                RANGE_OP_FIXED.saturating_add(self.path.byte_len())
            }

            fn check(&self) -> Result<(), EncodeError> {
                if self.range.end().is_none() {
                    return Err(EncodeError::BadRange);
                }
                Ok(())
            }

            fn write_body(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
                let path_len = str_len(&self.path, MAX_PATH_BYTES, Field::Path)?;
                w.u64(self.range.offset)?;
                w.u64(self.range.length)?;
                w.u16(path_len)?;
                w.zeros(6)?;
                w.utf16(&self.path)
            }

            fn read_body(request_id: u64, r: &mut Reader<'a>) -> Result<Self, DecodeError> {
                let range = ByteRange::new(r.u64()?, r.u64()?);
                let path_len = read_len(r, MAX_PATH_BYTES, Field::Path)?;
                r.reserved(6)?;
                if range.end().is_none() {
                    return Err(DecodeError::BadRange);
                }
                Ok(Self {
                    request_id,
                    path: r.utf16(path_len, Field::Path)?,
                    range,
                })
            }
        }
        message!($ty<'a>, $kind);
    };
}

range_op!(
    /// Provider → kernel: fetch a range of a placeholder now. The [`Reply`] payload, on
    /// success, is the placeholder blob as it is once the range is on disk, as for
    /// [`GetInfo`]: the provider learns the file's change counter from it.
    ///
    /// Fixed part (24 bytes): offset `u64`, length `u64` (0 = to end of file), path length
    /// `u16`, 6 reserved. Then the path (UTF-16LE).
    Hydrate,
    Kind::Hydrate
);

range_op!(
    /// Provider → kernel: drop a range of a placeholder's local data.
    ///
    /// Fixed part (24 bytes): offset `u64`, length `u64` (0 = to end of file), path length
    /// `u16`, 6 reserved. Then the path (UTF-16LE).
    Dehydrate,
    Kind::Dehydrate
);

/// A placeholder's pin state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
#[non_exhaustive]
pub enum PinState {
    /// Neither pinned nor unpinned.
    Unspecified = 0,
    /// Keep fully hydrated; dehydration fails.
    Pinned = 1,
    /// May be dehydrated.
    Unpinned = 2,
}

impl PinState {
    /// The state with wire value `v`, if there is one.
    pub const fn from_u32(v: u32) -> Option<Self> {
        match v {
            0 => Some(Self::Unspecified),
            1 => Some(Self::Pinned),
            2 => Some(Self::Unpinned),
            _ => None,
        }
    }
}

/// Provider → kernel: set a placeholder's pin state.
///
/// Fixed part (8 bytes): pin state `u32`, path length `u16`, 2 reserved. Then the path
/// (UTF-16LE).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetPin<'a> {
    /// Echoed in the reply.
    pub request_id: u64,
    /// The file or directory, relative to the sync root.
    pub path: Utf16<'a>,
    /// The new state.
    pub state: PinState,
}

impl<'a> SetPin<'a> {
    fn body_len(&self) -> usize {
        SET_PIN_FIXED.saturating_add(self.path.byte_len())
    }

    fn check(&self) -> Result<(), EncodeError> {
        Ok(())
    }

    fn write_body(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        let path_len = str_len(&self.path, MAX_PATH_BYTES, Field::Path)?;
        w.u32(self.state as u32)?;
        w.u16(path_len)?;
        w.zeros(2)?;
        w.utf16(&self.path)
    }

    fn read_body(request_id: u64, r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        let state = PinState::from_u32(r.u32()?).ok_or(DecodeError::BadValue(Field::PinState))?;
        let path_len = read_len(r, MAX_PATH_BYTES, Field::Path)?;
        r.reserved(2)?;
        Ok(Self {
            request_id,
            path: r.utf16(path_len, Field::Path)?,
            state,
        })
    }
}
message!(SetPin<'a>, Kind::SetPin);

/// Flags of an [`Update`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct UpdateFlags(u32);

impl UpdateFlags {
    /// No flag set.
    pub const EMPTY: Self = Self(0);
    /// Mark the placeholder in sync once updated.
    pub const MARK_IN_SYNC: Self = Self(1);
    /// Mark it not in sync. Exclusive with [`Self::MARK_IN_SYNC`].
    pub const CLEAR_IN_SYNC: Self = Self(2);
    /// Drop local data: the [`Update::dehydrate`] ranges, or the whole file when there
    /// are none.
    pub const DEHYDRATE: Self = Self(4);
    /// Fail, changing nothing, unless the file's change counter is still
    /// [`Update::expected_changes`].
    pub const IF_UNCHANGED: Self = Self(8);
    /// Replace the provider's file identity with [`Update::identity`].
    pub const SET_IDENTITY: Self = Self(16);
    /// A directory (or, with an empty path, the sync root): its listing is complete, do
    /// not populate it on demand any more (cfapi's CF_UPDATE_FLAG_DISABLE_ON_DEMAND_POPULATION).
    pub const DISABLE_ON_DEMAND_POPULATION: Self = Self(32);
    /// A directory (or the root): populate it on demand again, at the next listing or
    /// open beneath it (CF_UPDATE_FLAG_ENABLE_ON_DEMAND_POPULATION). Exclusive with
    /// [`Self::DISABLE_ON_DEMAND_POPULATION`].
    pub const ENABLE_ON_DEMAND_POPULATION: Self = Self(64);
    /// Every defined bit.
    pub const ALL: Self = Self(127);

    /// The flags for `bits`, or `None` if an undefined bit is set, or both
    /// [`Self::MARK_IN_SYNC`] and [`Self::CLEAR_IN_SYNC`] are, or both population flags.
    pub const fn from_bits(bits: u32) -> Option<Self> {
        let both = Self::MARK_IN_SYNC.0 | Self::CLEAR_IN_SYNC.0;
        let population = Self::DISABLE_ON_DEMAND_POPULATION.0 | Self::ENABLE_ON_DEMAND_POPULATION.0;
        if bits & !Self::ALL.0 != 0 || bits & both == both || bits & population == population {
            None
        } else {
            Some(Self(bits))
        }
    }

    /// The raw bits.
    pub const fn bits(self) -> u32 {
        self.0
    }

    /// Whether every bit of `other` is set in `self`.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// The bits of both. May produce the in-sync contradiction, which encoding refuses.
    #[must_use]
    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }
}

/// Whether ranges to dehydrate are usable: each non-empty, its end within `u64`, sorted
/// and not overlapping (adjacent ranges are allowed).
fn update_ranges_valid(ranges: impl Iterator<Item = ByteRange>) -> bool {
    let mut next_allowed = 0u64;
    for range in ranges {
        let Some(end) = range.end() else {
            return false;
        };
        if range.length == 0 || range.offset < next_allowed {
            return false;
        }
        next_allowed = end;
    }
    true
}

/// Provider → kernel: update a placeholder from the cloud's copy, as cfapi's
/// CfUpdatePlaceholder: its size, times and attributes, its in-sync state, its identity,
/// and which local data to drop. The [`Reply`] payload, on success, is the placeholder
/// blob as it is after the update, as for [`GetInfo`]: the provider learns the file's new
/// change counter from it. With [`UpdateFlags::IF_UNCHANGED`], a file whose change counter
/// is no longer [`Self::expected_changes`] is left as it was and the request fails (the
/// driver answers STATUS_CLOUD_FILE_NOT_IN_SYNC, as cfapi does).
///
/// Fixed part (64 bytes): file size `u64`, creation, last access, last write and change
/// times (4 × `i64`), attributes `u32`, flags `u32` ([`UpdateFlags`]), expected change
/// counter `u64`, path length `u16`, identity length `u16`, dehydrate range count `u16`,
/// 2 reserved. Then the ranges to dehydrate (count × 16 bytes: offset `u64`, length
/// `u64`), the path (UTF-16LE), the identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Update<'a> {
    /// Echoed in the reply.
    pub request_id: u64,
    /// The placeholder, relative to the sync root.
    pub path: Utf16<'a>,
    /// What to do.
    pub flags: UpdateFlags,
    /// The cloud's size of the file: its new end of file.
    pub file_size: u64,
    /// New timestamps and attributes; a time of 0 leaves that time as it is.
    pub basic: BasicInfo,
    /// The change counter the provider last saw; checked only with
    /// [`UpdateFlags::IF_UNCHANGED`].
    pub expected_changes: u64,
    /// The new identity, at most [`MAX_IDENTITY_LEN`] bytes; used with
    /// [`UpdateFlags::SET_IDENTITY`] and empty without it.
    pub identity: &'a [u8],
    /// With [`UpdateFlags::DEHYDRATE`], the ranges to drop (none: the whole file); empty
    /// without it. Each non-empty, sorted, not overlapping; at most
    /// [`MAX_UPDATE_RANGES`].
    pub dehydrate: RangeList<'a>,
}

impl<'a> Update<'a> {
    fn body_len(&self) -> usize {
        UPDATE_FIXED
            .saturating_add(self.dehydrate.len().saturating_mul(RANGE_SIZE))
            .saturating_add(self.path.byte_len())
            .saturating_add(self.identity.len())
    }

    fn check(&self) -> Result<(), EncodeError> {
        let bits = self.flags.bits();
        let flags = UpdateFlags::from_bits(bits).ok_or(EncodeError::BadFlags(bits))?;
        if (!self.identity.is_empty() && !flags.contains(UpdateFlags::SET_IDENTITY))
            || (!self.dehydrate.is_empty() && !flags.contains(UpdateFlags::DEHYDRATE))
        {
            return Err(EncodeError::BadFlags(bits));
        }
        if self.dehydrate.len() > MAX_UPDATE_RANGES {
            return Err(EncodeError::TooLarge(Field::Ranges));
        }
        if !update_ranges_valid(self.dehydrate.iter()) {
            return Err(EncodeError::BadRange);
        }
        Ok(())
    }

    fn write_body(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        let path_len = str_len(&self.path, MAX_PATH_BYTES, Field::Path)?;
        let identity_len = identity_len(self.identity)?;
        let range_count = len_u16(self.dehydrate.len(), Field::Ranges)?;
        w.u64(self.file_size)?;
        w.i64(self.basic.creation_time)?;
        w.i64(self.basic.last_access_time)?;
        w.i64(self.basic.last_write_time)?;
        w.i64(self.basic.change_time)?;
        w.u32(self.basic.attributes)?;
        w.u32(self.flags.bits())?;
        w.u64(self.expected_changes)?;
        w.u16(path_len)?;
        w.u16(identity_len)?;
        w.u16(range_count)?;
        w.zeros(2)?;
        for range in self.dehydrate.iter() {
            w.u64(range.offset)?;
            w.u64(range.length)?;
        }
        w.utf16(&self.path)?;
        w.put(self.identity)
    }

    fn read_body(request_id: u64, r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        let file_size = r.u64()?;
        let basic = BasicInfo {
            creation_time: r.i64()?,
            last_access_time: r.i64()?,
            last_write_time: r.i64()?,
            change_time: r.i64()?,
            attributes: r.u32()?,
        };
        let bits = r.u32()?;
        let expected_changes = r.u64()?;
        let path_len = read_len(r, MAX_PATH_BYTES, Field::Path)?;
        let identity_len = read_len(r, MAX_IDENTITY_LEN, Field::Identity)?;
        let range_count = read_len(r, MAX_UPDATE_RANGES, Field::Ranges)?;
        r.reserved(2)?;
        let flags = UpdateFlags::from_bits(bits).ok_or(DecodeError::BadFlags(bits))?;
        if (identity_len != 0 && !flags.contains(UpdateFlags::SET_IDENTITY))
            || (range_count != 0 && !flags.contains(UpdateFlags::DEHYDRATE))
        {
            return Err(DecodeError::BadFlags(bits));
        }
        let ranges = r.take(usize::from(range_count) * RANGE_SIZE)?;
        let dehydrate = RangeList::from_le_bytes(ranges).ok_or(DecodeError::Truncated)?;
        if !update_ranges_valid(dehydrate.iter()) {
            return Err(DecodeError::BadRange);
        }
        Ok(Self {
            request_id,
            path: r.utf16(path_len, Field::Path)?,
            flags,
            file_size,
            basic,
            expected_changes,
            identity: r.take(usize::from(identity_len))?,
            dehydrate,
        })
    }
}
message!(Update<'a>, Kind::Update);

flags! {
    /// Flags of a [`SetInSync`].
    SetInSyncFlags(u32) {
        /// Mark the placeholder not in sync.
        NOT_IN_SYNC = 0,
        /// Mark it in sync (without this bit: not in sync).
        IN_SYNC = 1,
        /// Fail, changing nothing, unless the file's change counter is still
        /// [`SetInSync::expected_changes`].
        IF_UNCHANGED = 2,
    } all = 3
}

/// Provider → kernel: mark a placeholder in sync or not, as cfapi's CfSetInSyncState.
/// The [`Reply`] payload, on success, is the placeholder blob as it is afterwards, as for
/// [`GetInfo`]. With [`SetInSyncFlags::IF_UNCHANGED`], a file whose change counter is no
/// longer [`Self::expected_changes`] is left as it was and the request fails
/// (STATUS_CLOUD_FILE_NOT_IN_SYNC).
///
/// Fixed part (16 bytes): flags `u32` ([`SetInSyncFlags`]), path length `u16`, 2 reserved,
/// expected change counter `u64`. Then the path (UTF-16LE).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetInSync<'a> {
    /// Echoed in the reply.
    pub request_id: u64,
    /// The file or directory, relative to the sync root.
    pub path: Utf16<'a>,
    /// The state to set, and whether to check the change counter.
    pub flags: SetInSyncFlags,
    /// The change counter the provider last saw; checked only with
    /// [`SetInSyncFlags::IF_UNCHANGED`].
    pub expected_changes: u64,
}

impl<'a> SetInSync<'a> {
    fn body_len(&self) -> usize {
        SET_IN_SYNC_FIXED.saturating_add(self.path.byte_len())
    }

    fn check(&self) -> Result<(), EncodeError> {
        if SetInSyncFlags::from_bits(self.flags.bits()).is_none() {
            return Err(EncodeError::BadFlags(self.flags.bits()));
        }
        Ok(())
    }

    fn write_body(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        let path_len = str_len(&self.path, MAX_PATH_BYTES, Field::Path)?;
        w.u32(self.flags.bits())?;
        w.u16(path_len)?;
        w.zeros(2)?;
        w.u64(self.expected_changes)?;
        w.utf16(&self.path)
    }

    fn read_body(request_id: u64, r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        let bits = r.u32()?;
        let path_len = read_len(r, MAX_PATH_BYTES, Field::Path)?;
        r.reserved(2)?;
        let expected_changes = r.u64()?;
        let flags = SetInSyncFlags::from_bits(bits).ok_or(DecodeError::BadFlags(bits))?;
        Ok(Self {
            request_id,
            path: r.utf16(path_len, Field::Path)?,
            flags,
            expected_changes,
        })
    }
}
message!(SetInSync<'a>, Kind::SetInSync);

/// Control → kernel: a process other than the sync root's provider drops a range of a
/// placeholder's local data (cfapi's CfDehydratePlaceholder called by an application or
/// the system). The driver allows it only under a root registered with
/// [`HydrationModifiers::AUTO_DEHYDRATION_ALLOWED`](crate::registration::HydrationModifiers)
/// (STATUS_CLOUD_FILE_DEHYDRATION_DISALLOWED otherwise), and, as for the provider's
/// [`Dehydrate`], only on an in-sync file with nothing modified.
///
/// The layout of [`Dehydrate`], with the file's full NT path instead of a root-relative
/// one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DehydrateByPath<'a> {
    /// Echoed in the reply.
    pub request_id: u64,
    /// The file's NT path (`\Device\HarddiskVolume3\Cloud\a.bin`).
    pub path: Utf16<'a>,
    /// The bytes to drop; a length of 0 means to end of file.
    pub range: ByteRange,
}

impl<'a> DehydrateByPath<'a> {
    fn as_provider_message(&self) -> Dehydrate<'a> {
        Dehydrate {
            request_id: self.request_id,
            path: self.path,
            range: self.range,
        }
    }

    fn body_len(&self) -> usize {
        self.as_provider_message().body_len()
    }

    fn check(&self) -> Result<(), EncodeError> {
        self.as_provider_message().check()
    }

    fn write_body(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        self.as_provider_message().write_body(w)
    }

    fn read_body(request_id: u64, r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        Dehydrate::read_body(request_id, r).map(|m| Self {
            request_id,
            path: m.path,
            range: m.range,
        })
    }
}
message!(DehydrateByPath<'a>, Kind::DehydrateByPath);

/// Control → kernel: a process other than the sync root's provider marks a placeholder
/// in sync or not (cfapi's CfSetInSyncState called by an application). The driver allows
/// it only under a root whose management policy is
/// [`ManagementPolicy::UPDATE_UNRESTRICTED`](crate::registration::ManagementPolicy)
/// (STATUS_CLOUD_FILE_CONNECTED_PROVIDER_ONLY otherwise). Marking in sync this way
/// never forgets the file's modified ranges: only the provider, which uploads them, may.
/// The [`Reply`] payload, on success, is the placeholder blob as it is afterwards.
///
/// The layout of [`SetInSync`], with the file's full NT path instead of a root-relative
/// one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetInSyncByPath<'a> {
    /// Echoed in the reply.
    pub request_id: u64,
    /// The file's or directory's NT path.
    pub path: Utf16<'a>,
    /// The state to set, and whether to check the change counter.
    pub flags: SetInSyncFlags,
    /// The change counter the caller last saw; checked only with
    /// [`SetInSyncFlags::IF_UNCHANGED`].
    pub expected_changes: u64,
}

impl<'a> SetInSyncByPath<'a> {
    fn as_provider_message(&self) -> SetInSync<'a> {
        SetInSync {
            request_id: self.request_id,
            path: self.path,
            flags: self.flags,
            expected_changes: self.expected_changes,
        }
    }

    fn body_len(&self) -> usize {
        self.as_provider_message().body_len()
    }

    fn check(&self) -> Result<(), EncodeError> {
        self.as_provider_message().check()
    }

    fn write_body(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        self.as_provider_message().write_body(w)
    }

    fn read_body(request_id: u64, r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        SetInSync::read_body(request_id, r).map(|m| Self {
            request_id,
            path: m.path,
            flags: m.flags,
            expected_changes: m.expected_changes,
        })
    }
}
message!(SetInSyncByPath<'a>, Kind::SetInSyncByPath);

/// Management → kernel: set the image rule for a pattern, replacing the rule for the same
/// pattern (compared case-insensitively) if there is one. The driver answers
/// STATUS_OBJECT_NAME_INVALID for a pattern that is not well formed and
/// STATUS_CLOUD_FILE_INSUFFICIENT_RESOURCES when it already holds
/// [`MAX_RULES`](crate::rules::MAX_RULES) other rules.
///
/// Fixed part (8 bytes): visibility `u32` ([`RuleVisibility`]), pattern length `u16`,
/// 2 reserved. Then the pattern (UTF-16LE, see [`rules`](crate::rules)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetImageRule<'a> {
    /// Echoed in the reply.
    pub request_id: u64,
    /// What matching images see.
    pub visibility: RuleVisibility,
    /// An NT path or a bare file name, at most
    /// [`MAX_PATTERN_BYTES`](crate::rules::MAX_PATTERN_BYTES).
    pub pattern: Utf16<'a>,
}

impl<'a> SetImageRule<'a> {
    fn body_len(&self) -> usize {
        SET_RULE_FIXED.saturating_add(self.pattern.byte_len())
    }

    fn check(&self) -> Result<(), EncodeError> {
        Ok(())
    }

    fn write_body(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        let len = pattern_len(&self.pattern)?;
        w.u32(self.visibility.to_u32())?;
        w.u16(len)?;
        w.zeros(2)?;
        w.utf16(&self.pattern)
    }

    fn read_body(request_id: u64, r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        let visibility = RuleVisibility::from_u32(r.u32()?)
            .ok_or(DecodeError::BadValue(Field::RuleVisibility))?;
        let len = read_pattern_len(r)?;
        r.reserved(2)?;
        Ok(Self {
            request_id,
            visibility,
            pattern: r.utf16(len, Field::Pattern)?,
        })
    }
}
message!(SetImageRule<'a>, Kind::SetImageRule);

/// Management → kernel: remove the image rule for a pattern (compared
/// case-insensitively). The driver answers STATUS_NOT_FOUND when there is none.
///
/// Fixed part (8 bytes): pattern length `u16`, 6 reserved. Then the pattern (UTF-16LE).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RemoveImageRule<'a> {
    /// Echoed in the reply.
    pub request_id: u64,
    /// The pattern as it was set.
    pub pattern: Utf16<'a>,
}

impl<'a> RemoveImageRule<'a> {
    fn body_len(&self) -> usize {
        PATTERN_ONLY_FIXED.saturating_add(self.pattern.byte_len())
    }

    fn check(&self) -> Result<(), EncodeError> {
        Ok(())
    }

    fn write_body(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        w.u16(pattern_len(&self.pattern)?)?;
        w.zeros(6)?;
        w.utf16(&self.pattern)
    }

    fn read_body(request_id: u64, r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        let len = read_pattern_len(r)?;
        r.reserved(6)?;
        Ok(Self {
            request_id,
            pattern: r.utf16(len, Field::Pattern)?,
        })
    }
}
message!(RemoveImageRule<'a>, Kind::RemoveImageRule);

/// Declares a management request with no parameters.
///
/// Fixed part (8 bytes): reserved.
macro_rules! no_parameters {
    ($(#[$doc:meta])* $ty:ident, $kind:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub struct $ty {
            /// Echoed in the reply.
            pub request_id: u64,
        }

        impl $ty {
            fn body_len(&self) -> usize {
                EMPTY_FIXED
            }

            fn check(&self) -> Result<(), EncodeError> {
                Ok(())
            }

            fn write_body(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
                w.zeros(EMPTY_FIXED)
            }

            fn read_body(request_id: u64, r: &mut Reader<'_>) -> Result<Self, DecodeError> {
                r.reserved(EMPTY_FIXED)?;
                Ok(Self { request_id })
            }
        }
        message!($ty, $kind);
    };
}

no_parameters!(
    /// Management → kernel: remove every image rule.
    ///
    /// Fixed part (8 bytes): reserved.
    ClearImageRules,
    Kind::ClearImageRules
);

no_parameters!(
    /// Management → kernel: report the image rules. The [`Reply`] payload is a rule list
    /// ([`RuleList`](crate::rules::RuleList)).
    ///
    /// Fixed part (8 bytes): reserved.
    ListImageRules,
    Kind::ListImageRules
);

/// Control → kernel: register a sync root, cfapi's CfRegisterSyncRoot. The reply has no
/// payload.
///
/// Fixed part (8 bytes): register flags `u32` ([`RegisterFlags`]), 4 reserved. Then the
/// registration record ([`Registration`], self-sized), which must end the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegisterSyncRoot<'a> {
    /// Echoed in the reply.
    pub request_id: u64,
    /// UPDATE and the root flags asked for.
    pub flags: RegisterFlags,
    /// What is registered.
    pub registration: Registration<'a>,
}

impl<'a> RegisterSyncRoot<'a> {
    fn body_len(&self) -> usize {
        REGISTER_FIXED.saturating_add(self.registration.encoded_len())
    }

    fn check(&self) -> Result<(), EncodeError> {
        Ok(())
    }

    fn write_body(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        w.u32(self.flags.bits())?;
        w.zeros(4)?;
        w.put_with(self.registration.encoded_len(), |out| {
            self.registration.encode(out)
        })
    }

    fn read_body(request_id: u64, r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        let flags = r.u32()?;
        let flags = RegisterFlags::from_bits(flags).ok_or(DecodeError::BadFlags(flags))?;
        r.reserved(4)?;
        let rest = r.rest();
        let registration = Registration::decode(rest)?;
        r.take(rest.len())?;
        Ok(Self {
            request_id,
            flags,
            registration,
        })
    }
}
message!(RegisterSyncRoot<'a>, Kind::RegisterSyncRoot);

/// Declares a control request that names one path.
///
/// Fixed part (8 bytes): path length in bytes `u16`, 6 reserved. Then the path
/// (UTF-16LE, NT form).
macro_rules! path_request {
    ($(#[$doc:meta])* $ty:ident, $kind:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct $ty<'a> {
            /// Echoed in the reply.
            pub request_id: u64,
            /// An NT path.
            pub path: Utf16<'a>,
        }

        impl<'a> $ty<'a> {
            fn body_len(&self) -> usize {
                PATH_ONLY_FIXED.saturating_add(self.path.byte_len())
            }

            fn check(&self) -> Result<(), EncodeError> {
                Ok(())
            }

            fn write_body(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
                w.u16(len_u16(self.path.byte_len(), Field::Path)?)?;
                w.zeros(6)?;
                w.utf16(&self.path)
            }

            fn read_body(request_id: u64, r: &mut Reader<'a>) -> Result<Self, DecodeError> {
                let len = r.u16()?;
                r.reserved(6)?;
                Ok(Self {
                    request_id,
                    path: r.utf16(len, Field::Path)?,
                })
            }
        }
        message!($ty<'a>, $kind);
    };
}

path_request!(
    /// Control → kernel: unregister the sync root at `path`, cfapi's
    /// CfUnregisterSyncRoot. A provider connected to it is disconnected from it first.
    UnregisterSyncRoot,
    Kind::UnregisterSyncRoot
);

path_request!(
    /// Control → kernel: the registration of the sync root `path` is or lies under, cfapi's
    /// CfGetSyncRootInfoByPath. The [`Reply`] payload is a [`SyncRootInfo`].
    GetSyncRootInfo,
    Kind::GetSyncRootInfo
);

no_parameters!(
    /// Control → kernel: the registered sync roots. The [`Reply`] payload is a
    /// [`SyncRootList`].
    ///
    /// Fixed part (8 bytes): reserved.
    ListSyncRoots,
    Kind::ListSyncRoots
);

/// [`SyncRootInfo`] flag: a provider is connected to the root.
pub const ROOT_INFO_CONNECTED: u32 = 1;

/// The payload of a [`GetSyncRootInfo`] reply: 8 bytes — flags `u32`
/// ([`ROOT_INFO_CONNECTED`]), the connected provider's process id `u32` (0 when none) —
/// then the root's registration record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncRootInfo<'a> {
    /// [`ROOT_INFO_CONNECTED`] or 0.
    pub flags: u32,
    /// The connected provider's process, 0 when none.
    pub provider_pid: u32,
    /// The registration.
    pub registration: Registration<'a>,
}

impl<'a> SyncRootInfo<'a> {
    /// Size of the part before the record.
    pub const FIXED: usize = 8;

    /// Decodes a reply payload.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let flags = r.u32()?;
        if flags & !ROOT_INFO_CONNECTED != 0 {
            return Err(DecodeError::BadFlags(flags));
        }
        let provider_pid = r.u32()?;
        let registration = Registration::decode(r.rest())?;
        Ok(Self {
            flags,
            provider_pid,
            registration,
        })
    }

    /// The payload's length.
    pub fn encoded_len(&self) -> usize {
        Self::FIXED.saturating_add(self.registration.encoded_len())
    }

    /// Encodes the payload into `out`, returning [`Self::encoded_len`].
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
        let len = self.encoded_len();
        let mut w = Writer::new(out, len)?;
        w.u32(self.flags)?;
        w.u32(self.provider_pid)?;
        w.put_with(self.registration.encoded_len(), |o| {
            self.registration.encode(o)
        })?;
        Ok(w.finish())
    }
}

/// The payload of a [`ListSyncRoots`] reply: a count `u32`, 4 reserved, then per root its
/// path length in bytes `u16` and the path (UTF-16LE, NT form).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SyncRootList<'a> {
    count: u32,
    entries: &'a [u8],
}

impl<'a> SyncRootList<'a> {
    /// Decodes a reply payload, checking every entry.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let count = r.u32()?;
        r.reserved(4)?;
        let entries = r.rest();
        let mut check = Reader::new(entries);
        for _ in 0..count {
            let len = check.u16()?;
            check.utf16(len, Field::SyncRootPath)?;
        }
        check.finish()?;
        Ok(Self { count, entries })
    }

    /// The roots' paths.
    pub fn iter(&self) -> impl Iterator<Item = Utf16<'a>> + 'a {
        let mut r = Reader::new(self.entries);
        (0..self.count).map_while(move |_| {
            let len = r.u16().ok()?;
            r.utf16(len, Field::SyncRootPath).ok()
        })
    }

    /// Writes a list of `paths` into `out`, returning the length written; `None` when it
    /// does not fit.
    pub fn encode<'p>(paths: impl Iterator<Item = &'p [u16]>, out: &mut [u8]) -> Option<usize> {
        let mut w = Writer::whole(out);
        w.zeros(8).ok()?;
        let mut count = 0u32;
        for path in paths {
            let bytes = u16::try_from(path.len().checked_mul(2)?).ok()?;
            w.u16(bytes).ok()?;
            for unit in path {
                w.u16(*unit).ok()?;
            }
            count = count.checked_add(1)?;
        }
        w.patch_u32(0, count).ok()?;
        Some(w.finish())
    }
}

/// Declares a message enum that dispatches on the header's kind.
mod population;
pub use population::{
    CancelFetchPlaceholders, FetchPlaceholders, MAX_BATCH_ENTRIES, MAX_ENTRY_NAME_BYTES,
    MAX_PATTERN_BYTES, PlaceholderEntries, PlaceholderEntry, PopulationFlags,
    TRANSFER_PLACEHOLDERS_FIXED, TransferPlaceholders, TransferPlaceholdersResult,
};
mod notify;
pub use notify::{
    AckNotify, CloseFlags, DehydrateCompletionFlags, DehydrateFlags, DehydrationReason,
    DeleteFlags, Notify, NotifyKind, NotifySet, OpenFlags, RenameFlags,
};

macro_rules! dispatch {
    ($(#[$doc:meta])* $name:ident { $($variant:ident($ty:ty)),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        #[non_exhaustive]
        pub enum $name<'a> {
            $(
                #[doc = concat!("A [`", stringify!($variant), "`].")]
                $variant($ty),
            )*
        }

        impl<'a> $name<'a> {
            /// Decodes whichever message of this direction `bytes` holds. Bytes past the
            /// header's length are ignored.
            pub fn decode(bytes: &'a [u8]) -> Result<Self, DecodeError> {
                let header = Header::decode(bytes)?;
                match header.kind {
                    $(Kind::$variant => <$ty>::decode(bytes).map(Self::$variant),)*
                    other => Err(DecodeError::UnexpectedKind(other.to_u16())),
                }
            }

            /// The encoded length, header included.
            pub fn encoded_len(&self) -> usize {
                match self {
                    $(Self::$variant(m) => m.encoded_len(),)*
                }
            }

            /// Encodes the message into the start of `out`, returning its length.
            pub fn encode(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
                match self {
                    $(Self::$variant(m) => m.encode(out),)*
                }
            }

            /// The request id in the header.
            pub fn request_id(&self) -> u64 {
                match self {
                    $(Self::$variant(m) => m.request_id,)*
                }
            }

            /// The kind in the header.
            pub fn kind(&self) -> Kind {
                match self {
                    $(Self::$variant(_) => Kind::$variant,)*
                }
            }
        }
    };
}

dispatch!(
    /// A message the driver sends to a provider.
    KernelMessage {
        FetchData(FetchData<'a>),
        CancelFetch(CancelFetch),
        ValidateData(ValidateData<'a>),
        Notify(Notify<'a>),
        FetchPlaceholders(FetchPlaceholders<'a>),
        CancelFetchPlaceholders(CancelFetchPlaceholders),
    }
);

dispatch!(
    /// A message a provider sends to the driver.
    ProviderMessage {
        TransferData(TransferData<'a>),
        FetchFailed(FetchFailed),
        CreatePlaceholder(CreatePlaceholder<'a>),
        Convert(Convert<'a>),
        Revert(Revert<'a>),
        Hydrate(Hydrate<'a>),
        Dehydrate(Dehydrate<'a>),
        SetPin(SetPin<'a>),
        GetInfo(GetInfo<'a>),
        Update(Update<'a>),
        SetInSync(SetInSync<'a>),
        RetrieveData(RetrieveData),
        AckData(AckData),
        AckNotify(AckNotify),
        TransferPlaceholders(TransferPlaceholders<'a>),
    }
);

dispatch!(
    /// A message a management client sends to the driver.
    ManagementMessage {
        SetImageRule(SetImageRule<'a>),
        RemoveImageRule(RemoveImageRule<'a>),
        ClearImageRules(ClearImageRules),
        ListImageRules(ListImageRules),
        RegisterSyncRoot(RegisterSyncRoot<'a>),
        UnregisterSyncRoot(UnregisterSyncRoot<'a>),
        GetSyncRootInfo(GetSyncRootInfo<'a>),
        ListSyncRoots(ListSyncRoots),
        DehydrateByPath(DehydrateByPath<'a>),
        SetInSyncByPath(SetInSyncByPath<'a>),
    }
);

/// Size of the [`Reply`] header.
pub const REPLY_HEADER_SIZE: usize = 24;

/// Kernel → provider: the answer to a provider message, in FilterSendMessage's output
/// buffer.
///
/// Layout (all little-endian): version `u16` ([`PROTOCOL_VERSION`]), 2 reserved, status
/// `i32` (NTSTATUS), request id `u64`, payload length `u32`, 4 reserved, then the payload.
/// Bytes after the payload are ignored, as for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply<'a> {
    /// The outcome: STATUS_SUCCESS or why the request failed.
    pub status: i32,
    /// The request id of the message answered.
    pub request_id: u64,
    /// Kind-specific data, at most [`MAX_REPLY_PAYLOAD`] bytes: the placeholder blob for
    /// [`GetInfo`], and for [`Hydrate`], [`Update`] and [`SetInSync`] that succeeded; the
    /// rule list for [`ListImageRules`]; empty otherwise.
    pub payload: &'a [u8],
}

impl<'a> Reply<'a> {
    /// The encoded length. Saturates for payloads too large to encode.
    pub fn encoded_len(&self) -> usize {
        REPLY_HEADER_SIZE.saturating_add(self.payload.len())
    }

    /// Encodes the reply into the start of `out`, returning [`Self::encoded_len`].
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
        if self.payload.len() > MAX_REPLY_PAYLOAD {
            return Err(EncodeError::TooLarge(Field::Payload));
        }
        let payload_len =
            u32::try_from(self.payload.len()).map_err(|_| EncodeError::TooLarge(Field::Payload))?;
        let mut w = Writer::new(out, self.encoded_len())?;
        w.u16(PROTOCOL_VERSION)?;
        w.zeros(2)?;
        w.i32(self.status)?;
        w.u64(self.request_id)?;
        w.u32(payload_len)?;
        w.zeros(4)?;
        w.put(self.payload)?;
        Ok(w.finish())
    }

    /// Decodes a reply from the start of `bytes`, borrowing its payload.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let version = r.u16()?;
        if version != PROTOCOL_VERSION {
            return Err(DecodeError::BadVersion(version));
        }
        r.reserved(2)?;
        let status = r.i32()?;
        let request_id = r.u64()?;
        let payload_len = r.u32()?;
        r.reserved(4)?;
        let payload_len =
            usize::try_from(payload_len).map_err(|_| DecodeError::TooLarge(Field::Payload))?;
        if payload_len > MAX_REPLY_PAYLOAD {
            return Err(DecodeError::TooLarge(Field::Payload));
        }
        Ok(Self {
            status,
            request_id,
            payload: r.take(payload_len)?,
        })
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use proptest::prelude::*;
    use std::vec::Vec;

    fn units(s: &str) -> Vec<u16> {
        s.encode_utf16().collect()
    }

    /// Everything any message needs, owned, so a strategy can generate it.
    #[derive(Debug, Clone)]
    struct Parts {
        which: usize,
        request_id: u64,
        a: u64,
        b: u64,
        c: u64,
        small: u32,
        status: i32,
        times: [i64; 4],
        path: Vec<u16>,
        image: Vec<u16>,
        identity: Vec<u8>,
        data: Vec<u8>,
        ranges: Vec<ByteRange>,
    }

    /// Either direction, to round-trip both through one property.
    #[derive(Debug, PartialEq)]
    enum Any<'a> {
        Kernel(KernelMessage<'a>),
        Provider(ProviderMessage<'a>),
        Management(ManagementMessage<'a>),
    }

    const KINDS: usize = 28;

    /// One of `options`, chosen by `n`.
    fn pick<T: Copy>(options: &[T], n: u32) -> T {
        options[n as usize % options.len()]
    }

    fn build(p: &Parts) -> Any<'_> {
        let path = Utf16::from_units(&p.path);
        let size = p.a.max(1);
        let offset = p.b % size;
        let required = ByteRange::new(offset, 1 + p.c % (size - offset));
        let range = ByteRange::new(p.b, p.c.min(u64::MAX - p.b));
        let flags = crate::placeholder::flags_from_bits(p.small);
        match p.which % KINDS {
            0 => Any::Kernel(KernelMessage::FetchData(FetchData {
                request_id: p.request_id,
                file_id: p.c,
                file_size: size,
                required,
                priority: (p.small % 16) as u8,
                requestor_pid: p.small,
                requestor_image: Utf16::from_units(&p.image),
                path,
                identity: &p.identity,
                flags: RequestFlags::from_bits((p.small % 4) as u8).unwrap_or(RequestFlags::EMPTY),
                requestor_command_line: Utf16::from_units(&p.image),
                sync_root_identity: &p.data,
                root_file_identity: &p.identity,
            })),
            1 => Any::Kernel(KernelMessage::CancelFetch(CancelFetch {
                request_id: p.request_id,
                range,
                reason: pick(&[CancelReason::IoAborted, CancelReason::IoTimeout], p.small),
            })),
            2 => Any::Provider(ProviderMessage::TransferData(TransferData {
                request_id: p.request_id,
                offset: p.b.min(u64::MAX - p.data.len() as u64),
                flags: pick(&[TransferFlags::EMPTY, TransferFlags::LAST], p.small),
                data: &p.data,
            })),
            3 => Any::Provider(ProviderMessage::FetchFailed(FetchFailed {
                request_id: p.request_id,
                status: p.status | i32::MIN,
            })),
            4 => Any::Provider(ProviderMessage::CreatePlaceholder(CreatePlaceholder {
                request_id: p.request_id,
                file_size: p.a,
                basic: BasicInfo {
                    creation_time: p.times[0],
                    last_access_time: p.times[1],
                    last_write_time: p.times[2],
                    change_time: p.times[3],
                    attributes: p.small,
                },
                flags,
                path,
                identity: &p.identity,
            })),
            5 => Any::Provider(ProviderMessage::Convert(Convert {
                request_id: p.request_id,
                flags: pick(
                    &[
                        ConvertFlags::EMPTY,
                        ConvertFlags::IN_SYNC,
                        ConvertFlags::DEHYDRATE,
                        ConvertFlags::ALL,
                    ],
                    p.small,
                ),
                path,
                identity: &p.identity,
            })),
            6 => Any::Provider(ProviderMessage::Revert(Revert {
                request_id: p.request_id,
                path,
            })),
            7 => Any::Provider(ProviderMessage::Hydrate(Hydrate {
                request_id: p.request_id,
                path,
                range,
            })),
            8 => Any::Provider(ProviderMessage::Dehydrate(Dehydrate {
                request_id: p.request_id,
                path,
                range,
            })),
            9 => Any::Provider(ProviderMessage::SetPin(SetPin {
                request_id: p.request_id,
                path,
                state: pick(
                    &[PinState::Unspecified, PinState::Pinned, PinState::Unpinned],
                    p.small,
                ),
            })),
            10 => Any::Provider(ProviderMessage::GetInfo(GetInfo {
                request_id: p.request_id,
                path,
            })),
            11 => Any::Management(ManagementMessage::SetImageRule(SetImageRule {
                request_id: p.request_id,
                visibility: pick(&[RuleVisibility::Expose, RuleVisibility::Disguise], p.small),
                pattern: Utf16::from_units(&p.image[..p.image.len().min(512)]),
            })),
            12 => Any::Management(ManagementMessage::RemoveImageRule(RemoveImageRule {
                request_id: p.request_id,
                pattern: Utf16::from_units(&p.image[..p.image.len().min(512)]),
            })),
            13 => Any::Management(ManagementMessage::ClearImageRules(ClearImageRules {
                request_id: p.request_id,
            })),
            14 => Any::Management(ManagementMessage::ListImageRules(ListImageRules {
                request_id: p.request_id,
            })),
            15 => {
                let flags = pick(
                    &[
                        UpdateFlags::EMPTY,
                        UpdateFlags::MARK_IN_SYNC,
                        UpdateFlags::CLEAR_IN_SYNC.union(UpdateFlags::DEHYDRATE),
                        UpdateFlags::IF_UNCHANGED.union(UpdateFlags::SET_IDENTITY),
                        UpdateFlags::MARK_IN_SYNC
                            .union(UpdateFlags::DEHYDRATE)
                            .union(UpdateFlags::IF_UNCHANGED)
                            .union(UpdateFlags::SET_IDENTITY),
                    ],
                    p.small,
                );
                Any::Provider(ProviderMessage::Update(Update {
                    request_id: p.request_id,
                    path,
                    flags,
                    file_size: p.a,
                    basic: BasicInfo {
                        creation_time: p.times[0],
                        last_access_time: p.times[1],
                        last_write_time: p.times[2],
                        change_time: p.times[3],
                        attributes: p.small,
                    },
                    expected_changes: p.c,
                    identity: if flags.contains(UpdateFlags::SET_IDENTITY) {
                        &p.identity
                    } else {
                        &[]
                    },
                    dehydrate: if flags.contains(UpdateFlags::DEHYDRATE) {
                        RangeList::from_slice(&p.ranges)
                    } else {
                        RangeList::EMPTY
                    },
                }))
            }
            17 => Any::Kernel(KernelMessage::ValidateData(ValidateData {
                request_id: p.request_id,
                file_id: p.c,
                file_size: size,
                range: required,
                priority: (p.small % 16) as u8,
                requestor_pid: p.small,
                requestor_image: Utf16::from_units(&p.image),
                path,
                identity: &p.identity,
                flags: RequestFlags::from_bits((p.small % 4) as u8).unwrap_or(RequestFlags::EMPTY),
                requestor_command_line: Utf16::from_units(&p.path),
                sync_root_identity: &p.data,
                root_file_identity: &[],
            })),
            18 => Any::Provider(ProviderMessage::RetrieveData(RetrieveData {
                request_id: p.request_id,
                range: ByteRange::new(
                    p.b.min(u64::MAX - MAX_TRANSFER_LEN as u64),
                    1 + p.c % MAX_TRANSFER_LEN as u64,
                ),
            })),
            19 => Any::Provider(ProviderMessage::AckData(AckData {
                request_id: p.request_id,
                range: ByteRange::new(p.b / 2, 1 + p.c / 2),
                status: if p.small.is_multiple_of(2) {
                    0
                } else {
                    p.status | i32::MIN
                },
            })),
            20 => Any::Management(ManagementMessage::DehydrateByPath(DehydrateByPath {
                request_id: p.request_id,
                path,
                range,
            })),
            22 => {
                let kind = pick(&NotifyKind::ALL, p.small);
                let flags = p.small >> 8 & kind.flags_allowed();
                let reason = if matches!(
                    kind,
                    NotifyKind::Dehydrate | NotifyKind::DehydrateCompletion
                ) {
                    pick(
                        &[
                            DehydrationReason::UserManual,
                            DehydrationReason::SystemLowSpace,
                            DehydrationReason::SystemInactivity,
                            DehydrationReason::SystemOsUpgrade,
                        ],
                        p.small >> 16,
                    )
                } else {
                    DehydrationReason::None
                };
                Any::Kernel(KernelMessage::Notify(Notify {
                    request_id: p.request_id,
                    kind,
                    flags,
                    reason,
                    file_id: p.a,
                    file_size: p.b,
                    requestor_pid: p.small,
                    requestor_image: Utf16::from_units(&p.image),
                    request_flags: RequestFlags::from_bits((p.small >> 24) as u8 & 3)
                        .unwrap_or(RequestFlags::EMPTY),
                    path,
                    target_path: Utf16::from_units(&p.image),
                    identity: &p.identity,
                    requestor_command_line: Utf16::from_units(&p.path),
                    sync_root_identity: &p.data,
                }))
            }
            23 => Any::Provider(ProviderMessage::AckNotify(AckNotify {
                request_id: p.request_id,
                status: p.status,
            })),
            25 => Any::Kernel(KernelMessage::FetchPlaceholders(FetchPlaceholders {
                request_id: p.request_id,
                file_id: p.a,
                priority: (p.small % 16) as u8,
                flags: pick(&[RequestFlags::EMPTY, RequestFlags::FULL_PATH], p.small),
                requestor_pid: p.small,
                requestor_image: Utf16::from_units(&p.image),
                path,
                pattern: Utf16::from_units(&p.image[..p.image.len().min(255)]),
                identity: &p.identity,
                requestor_command_line: Utf16::from_units(&[]),
                sync_root_identity: &p.data,
                root_file_identity: &p.identity,
            })),
            26 => Any::Kernel(KernelMessage::CancelFetchPlaceholders(
                CancelFetchPlaceholders {
                    request_id: p.request_id,
                    reason: pick(&[CancelReason::IoAborted, CancelReason::IoTimeout], p.small),
                },
            )),
            27 => Any::Provider(ProviderMessage::TransferPlaceholders(
                TransferPlaceholders {
                    request_id: p.request_id,
                    status: p.status,
                    flags: pick(
                        &[
                            PopulationFlags::EMPTY,
                            PopulationFlags::STOP_ON_ERROR,
                            PopulationFlags::ALL,
                        ],
                        p.small,
                    ),
                    total: p.c,
                    entries: PlaceholderEntries::from_slice(&[]),
                },
            )),
            21 => Any::Management(ManagementMessage::SetInSyncByPath(SetInSyncByPath {
                request_id: p.request_id,
                path,
                flags: pick(&[SetInSyncFlags::IN_SYNC, SetInSyncFlags::ALL], p.small),
                expected_changes: p.c,
            })),
            _ => Any::Provider(ProviderMessage::SetInSync(SetInSync {
                request_id: p.request_id,
                path,
                flags: pick(
                    &[
                        SetInSyncFlags::NOT_IN_SYNC,
                        SetInSyncFlags::IN_SYNC,
                        SetInSyncFlags::IF_UNCHANGED,
                        SetInSyncFlags::ALL,
                    ],
                    p.small,
                ),
                expected_changes: p.c,
            })),
        }
    }

    fn encode(m: &Any<'_>) -> Vec<u8> {
        let (len, result) = match m {
            Any::Kernel(k) => {
                let mut out = std::vec![0u8; k.encoded_len()];
                let r = k.encode(&mut out);
                (out.len(), r.map(|n| (n, out)))
            }
            Any::Provider(p) => {
                let mut out = std::vec![0u8; p.encoded_len()];
                let r = p.encode(&mut out);
                (out.len(), r.map(|n| (n, out)))
            }
            Any::Management(m) => {
                let mut out = std::vec![0u8; m.encoded_len()];
                let r = m.encode(&mut out);
                (out.len(), r.map(|n| (n, out)))
            }
        };
        assert_eq!(result.as_ref().map(|(n, _)| *n), Ok(len));
        result.map(|(_, out)| out).unwrap_or_default()
    }

    fn decode(bytes: &[u8]) -> Result<Any<'_>, DecodeError> {
        let header = Header::decode(bytes)?;
        if header.kind.is_from_kernel() {
            KernelMessage::decode(bytes).map(Any::Kernel)
        } else if header.kind.is_management() {
            ManagementMessage::decode(bytes).map(Any::Management)
        } else {
            ProviderMessage::decode(bytes).map(Any::Provider)
        }
    }

    fn arb_parts() -> impl Strategy<Value = Parts> {
        (
            (
                0..KINDS,
                any::<u64>(),
                any::<u64>(),
                any::<u64>(),
                any::<u64>(),
            ),
            (any::<u32>(), any::<i32>(), any::<[i64; 4]>()),
            proptest::collection::vec(any::<u16>(), 0..300),
            proptest::collection::vec(any::<u16>(), 0..=MAX_IMAGE_BYTES / 2),
            proptest::collection::vec(any::<u8>(), 0..=MAX_IDENTITY_LEN),
            proptest::collection::vec(any::<u8>(), 0..5000),
            proptest::collection::vec((0u64..1 << 40, 1u64..1 << 40), 0..20),
        )
            .prop_map(
                |(
                    (which, request_id, a, b, c),
                    (small, status, times),
                    path,
                    image,
                    identity,
                    data,
                    steps,
                )| {
                    // Sorted, non-overlapping ranges; a gap of 0 makes them adjacent.
                    let mut at = 0u64;
                    let ranges = steps
                        .into_iter()
                        .map(|(gap, length)| {
                            let range = ByteRange::new(at + gap, length);
                            at += gap + length;
                            range
                        })
                        .collect();
                    Parts {
                        which,
                        request_id,
                        a,
                        b,
                        c,
                        small,
                        status,
                        times,
                        path,
                        image,
                        identity,
                        data,
                        ranges,
                    }
                },
            )
    }

    fn fetch<'a>(path: &'a [u16], identity: &'a [u8]) -> FetchData<'a> {
        FetchData {
            request_id: 0x1122_3344_5566_7788,
            file_id: 9,
            file_size: 10_000,
            required: ByteRange::new(4096, 4096),
            priority: 7,
            requestor_pid: 1234,
            requestor_image: Utf16::EMPTY,
            path: Utf16::from_units(path),
            identity,
            flags: RequestFlags::EMPTY,
            requestor_command_line: Utf16::from_units(&[]),
            sync_root_identity: &[],
            root_file_identity: &[],
        }
    }

    #[test]
    fn the_header_and_a_fetch_have_the_documented_layout() {
        let path = units("a\\b.txt");
        let m = fetch(&path, b"ident");
        let mut out = [0u8; 200];
        let n = m.encoded_len();
        assert_eq!(m.encode(&mut out), Ok(n));
        assert_eq!(n, 16 + 56 + 14 + 5);
        assert_eq!(&out[..4], &[1, 0, 1, 0], "kind FETCH_DATA, version 1");
        assert_eq!(&out[4..8], &(n as u32).to_le_bytes());
        assert_eq!(&out[8..16], &0x1122_3344_5566_7788u64.to_le_bytes());
        assert_eq!(&out[16 + 16..16 + 24], &4096u64.to_le_bytes());
        assert_eq!(out[16 + 32], 7);
        assert_eq!(&out[16 + 40..16 + 48], &[0, 0, 14, 0, 5, 0, 0, 0]);
        assert_eq!(
            &out[16 + 48..16 + 56],
            &[0; 8],
            "no command line or root identities"
        );
        assert_eq!(&out[72..74], &[b'a', 0]);
        assert_eq!(&out[n - 5..n], b"ident");
        let decoded = FetchData::decode(&out[..n]);
        assert_eq!(decoded, Ok(m));
        assert!(decoded.is_ok_and(|d| d.path.eq_str("a\\b.txt")));
    }

    #[test]
    fn bytes_past_the_declared_length_are_ignored() {
        let path = units("f");
        let m = fetch(&path, b"");
        let mut out = [0xAAu8; 300];
        let n = m.encoded_len();
        assert_eq!(m.encode(&mut out), Ok(n));
        assert_eq!(FetchData::decode(&out), Ok(m));
        assert_eq!(
            FetchData::decode(&out[..n - 1]),
            Err(DecodeError::Truncated)
        );
    }

    #[test]
    fn refuses_each_malformation_with_its_own_error() {
        let path = units("dir\\file");
        let good = {
            let m = fetch(&path, b"id");
            let mut out = std::vec![0u8; m.encoded_len()];
            assert_eq!(m.encode(&mut out), Ok(out.len()));
            out
        };
        let patched = |offset: usize, bytes: &[u8]| {
            let mut bad = good.clone();
            bad[offset..offset + bytes.len()].copy_from_slice(bytes);
            KernelMessage::decode(&bad).map(|_| ())
        };
        assert_eq!(patched(0, &[9, 9]), Err(DecodeError::UnknownKind(0x0909)));
        assert_eq!(patched(2, &[2, 0]), Err(DecodeError::BadVersion(2)));
        assert_eq!(patched(4, &[15, 0, 0, 0]), Err(DecodeError::LengthMismatch));
        assert_eq!(
            patched(4, &[0, 0, 0, 1]),
            Err(DecodeError::TooLarge(Field::Message))
        );
        assert_eq!(patched(4, &[0, 1, 0, 0]), Err(DecodeError::Truncated));
        assert_eq!(
            patched(16 + 32, &[16]),
            Err(DecodeError::BadValue(Field::Priority))
        );
        assert_eq!(patched(16 + 33, &[0x80]), Err(DecodeError::BadFlags(0x80)));
        assert_eq!(
            patched(16 + 34, &[1]),
            Err(DecodeError::BadValue(Field::Reserved))
        );
        assert_eq!(
            patched(16 + 54, &[0, 1]),
            Err(DecodeError::BadValue(Field::Reserved))
        );
        assert_eq!(
            patched(16 + 48, &[1, 0, 1, 0]),
            Err(DecodeError::TooLarge(Field::SyncRootIdentity))
        );
        assert_eq!(
            patched(16 + 52, &[1, 16]),
            Err(DecodeError::TooLarge(Field::RootFileIdentity))
        );
        assert_eq!(
            patched(16 + 24, &[0; 8]),
            Err(DecodeError::BadRange),
            "empty fetch"
        );
        assert_eq!(
            patched(16 + 16, &9000u64.to_le_bytes()),
            Err(DecodeError::BadRange),
            "fetch past end of file"
        );
        assert_eq!(
            patched(16 + 40, &[2, 8]),
            Err(DecodeError::TooLarge(Field::RequestorImage))
        );
        assert_eq!(
            patched(16 + 42, &[15, 0]),
            Err(DecodeError::BadString(Field::Path))
        );
        assert_eq!(patched(16 + 42, &[14, 0]), Err(DecodeError::LengthMismatch));
        assert_eq!(patched(16 + 42, &[18, 0]), Err(DecodeError::Truncated));
        assert_eq!(
            patched(16 + 44, &[1, 16]),
            Err(DecodeError::TooLarge(Field::Identity))
        );
        assert_eq!(
            ProviderMessage::decode(&good),
            Err(DecodeError::UnexpectedKind(Kind::FetchData.to_u16()))
        );
        assert_eq!(
            CancelFetch::decode(&good),
            Err(DecodeError::UnexpectedKind(Kind::FetchData.to_u16()))
        );
    }

    #[test]
    fn a_transfer_head_decodes_without_its_data() {
        let data = std::vec![7u8; 8192];
        let m = TransferData {
            request_id: 9,
            offset: 4096,
            flags: TransferFlags::LAST,
            data: &data,
        };
        let n = m.encoded_len();
        let mut out = std::vec![0u8; n + 100];
        assert_eq!(m.encode(&mut out), Ok(n));
        let head = TransferHead {
            request_id: 9,
            offset: 4096,
            flags: TransferFlags::LAST,
            data_len: 8192,
        };
        // The head alone, in the message's own buffer or a longer one.
        assert_eq!(TransferHead::decode(&out[..TRANSFER_HEAD_LEN], n), Ok(head));
        assert_eq!(
            TransferHead::decode(&out[..TRANSFER_HEAD_LEN], n + 100),
            Ok(head)
        );
        // A buffer shorter than the declared length, another kind, a short head.
        assert_eq!(
            TransferHead::decode(&out[..TRANSFER_HEAD_LEN], n - 1),
            Err(DecodeError::Truncated)
        );
        assert_eq!(
            TransferHead::decode(&out[..20], n),
            Err(DecodeError::Truncated)
        );
        let failed = FetchFailed {
            request_id: 1,
            status: -1,
        };
        let k = failed.encoded_len();
        assert_eq!(failed.encode(&mut out), Ok(k));
        assert_eq!(
            TransferHead::decode(&out[..k], k),
            Err(DecodeError::UnexpectedKind(Kind::FetchFailed.to_u16()))
        );
    }

    #[test]
    fn provider_messages_refuse_undefined_values() {
        let path = units("p");
        let mut out = [0u8; 128];
        let m = SetPin {
            request_id: 1,
            path: Utf16::from_units(&path),
            state: PinState::Pinned,
        };
        let n = m.encoded_len();
        assert_eq!(m.encode(&mut out), Ok(n));
        out[16] = 3;
        assert_eq!(
            SetPin::decode(&out[..n]),
            Err(DecodeError::BadValue(Field::PinState))
        );

        let m = TransferData {
            request_id: 1,
            offset: 0,
            flags: TransferFlags::LAST,
            data: b"data",
        };
        let n = m.encoded_len();
        assert_eq!(m.encode(&mut out), Ok(n));
        out[24] = 3;
        assert_eq!(
            TransferData::decode(&out[..n]),
            Err(DecodeError::BadFlags(3))
        );
        out[24] = 1;
        out[16..24].copy_from_slice(&(u64::MAX - 2).to_le_bytes());
        assert_eq!(TransferData::decode(&out[..n]), Err(DecodeError::BadRange));

        let failed = FetchFailed {
            request_id: 1,
            status: 0,
        };
        assert_eq!(
            failed.encode(&mut out),
            Err(EncodeError::BadValue(Field::Status))
        );
        let m = FetchFailed {
            status: 0xC000_CF12_u32 as i32,
            ..failed
        };
        let n = m.encoded_len();
        assert_eq!(m.encode(&mut out), Ok(n));
        out[16..20].copy_from_slice(&0x103i32.to_le_bytes());
        assert_eq!(
            FetchFailed::decode(&out[..n]),
            Err(DecodeError::BadValue(Field::Status))
        );

        let m = CreatePlaceholder {
            request_id: 1,
            file_size: 0,
            basic: BasicInfo::default(),
            flags: PlaceholderFlags::DIRECTORY,
            path: Utf16::from_units(&path),
            identity: b"",
        };
        let n = m.encoded_len();
        assert_eq!(m.encode(&mut out), Ok(n));
        out[16 + 44..16 + 48].copy_from_slice(&0x1_0000u32.to_le_bytes());
        assert_eq!(
            CreatePlaceholder::decode(&out[..n]),
            Err(DecodeError::BadFlags(0x1_0000))
        );

        let m = Convert {
            request_id: 1,
            flags: ConvertFlags::DEHYDRATE,
            path: Utf16::from_units(&path),
            identity: b"x",
        };
        let n = m.encoded_len();
        assert_eq!(m.encode(&mut out), Ok(n));
        out[16] = 4;
        assert_eq!(Convert::decode(&out[..n]), Err(DecodeError::BadFlags(4)));

        let m = CancelFetch {
            request_id: 1,
            range: ByteRange::new(0, 1),
            reason: CancelReason::IoTimeout,
        };
        let n = m.encoded_len();
        assert_eq!(m.encode(&mut out), Ok(n));
        out[32] = 3;
        assert_eq!(
            CancelFetch::decode(&out[..n]),
            Err(DecodeError::BadValue(Field::Reason))
        );
    }

    fn update<'a>(path: &'a [u16], ranges: &'a [ByteRange]) -> Update<'a> {
        Update {
            request_id: 0x55,
            path: Utf16::from_units(path),
            flags: UpdateFlags::MARK_IN_SYNC
                .union(UpdateFlags::DEHYDRATE)
                .union(UpdateFlags::IF_UNCHANGED)
                .union(UpdateFlags::SET_IDENTITY),
            file_size: 20_000,
            basic: BasicInfo {
                creation_time: 1,
                last_access_time: 2,
                last_write_time: 3,
                change_time: 4,
                attributes: 0x80,
            },
            expected_changes: 9,
            identity: b"new-id",
            dehydrate: RangeList::from_slice(ranges),
        }
    }

    #[test]
    fn an_update_has_the_documented_layout() {
        let path = units("d\\f");
        let ranges = [ByteRange::new(0, 4096), ByteRange::new(4096, 100)];
        let m = update(&path, &ranges);
        let mut out = [0u8; 200];
        let n = m.encoded_len();
        assert_eq!(m.encode(&mut out), Ok(n));
        assert_eq!(n, 16 + 64 + 32 + 6 + 6);
        assert_eq!(&out[..4], &[0x0A, 1, 1, 0], "kind 0x010A, version 1");
        let body = &out[16..n];
        assert_eq!(&body[..8], &20_000u64.to_le_bytes());
        assert_eq!(&body[8..16], &1i64.to_le_bytes());
        assert_eq!(&body[32..40], &4i64.to_le_bytes());
        assert_eq!(&body[40..44], &0x80u32.to_le_bytes());
        assert_eq!(&body[44..48], &29u32.to_le_bytes());
        assert_eq!(&body[48..56], &9u64.to_le_bytes());
        assert_eq!(&body[56..64], &[6, 0, 6, 0, 2, 0, 0, 0]);
        assert_eq!(&body[64 + 16..64 + 24], &4096u64.to_le_bytes());
        assert_eq!(&body[64 + 24..64 + 32], &100u64.to_le_bytes());
        assert_eq!(&body[96..98], &[b'd', 0]);
        assert_eq!(&body[102..108], b"new-id");
        assert_eq!(
            ProviderMessage::decode(&out[..n]),
            Ok(ProviderMessage::Update(m))
        );
        // With no range, DEHYDRATE means the whole file.
        let whole = Update {
            dehydrate: RangeList::EMPTY,
            ..m
        };
        let n = whole.encoded_len();
        assert_eq!(whole.encode(&mut out), Ok(n));
        assert_eq!(&out[16 + 60..16 + 62], &[0, 0]);
        assert!(
            Update::decode(&out[..n])
                .is_ok_and(|u| u.dehydrate.is_empty() && u.flags.contains(UpdateFlags::DEHYDRATE))
        );
    }

    #[test]
    fn an_update_refuses_contradictions_and_bad_ranges() {
        let path = units("f");
        let ranges = [ByteRange::new(0, 4096), ByteRange::new(8192, 100)];
        let good = {
            let m = update(&path, &ranges);
            let mut out = std::vec![0u8; m.encoded_len()];
            assert_eq!(m.encode(&mut out), Ok(out.len()));
            out
        };
        let patched = |offset: usize, bytes: &[u8]| {
            let mut bad = good.clone();
            bad[offset..offset + bytes.len()].copy_from_slice(bytes);
            ProviderMessage::decode(&bad).map(|_| ())
        };
        let flags = 16 + 44;
        assert_eq!(
            patched(flags, &[3]),
            Err(DecodeError::BadFlags(3)),
            "MARK and CLEAR"
        );
        assert_eq!(patched(flags, &[32]), Err(DecodeError::BadFlags(32)));
        assert_eq!(
            patched(flags, &[1 | 4 | 8]),
            Err(DecodeError::BadFlags(13)),
            "an identity without SET_IDENTITY"
        );
        assert_eq!(
            patched(flags, &[1 | 8 | 16]),
            Err(DecodeError::BadFlags(25)),
            "ranges without DEHYDRATE"
        );
        assert_eq!(
            patched(16 + 62, &[1]),
            Err(DecodeError::BadValue(Field::Reserved))
        );
        assert_eq!(
            patched(16 + 60, &[0xff, 0xff]),
            Err(DecodeError::TooLarge(Field::Ranges))
        );
        let second = 16 + 64 + 16;
        assert_eq!(
            patched(second, &100u64.to_le_bytes()),
            Err(DecodeError::BadRange),
            "overlapping"
        );
        assert_eq!(
            patched(second, &4096u64.to_le_bytes()),
            Ok(()),
            "adjacent ranges are fine"
        );
        assert_eq!(
            patched(second + 8, &0u64.to_le_bytes()),
            Err(DecodeError::BadRange),
            "empty"
        );
        assert_eq!(
            patched(second + 8, &u64::MAX.to_le_bytes()),
            Err(DecodeError::BadRange),
            "overflowing"
        );

        let mut out = [0u8; 300];
        let both = Update {
            flags: UpdateFlags::MARK_IN_SYNC.union(UpdateFlags::CLEAR_IN_SYNC),
            identity: b"",
            dehydrate: RangeList::EMPTY,
            ..update(&path, &ranges)
        };
        assert_eq!(both.encode(&mut out), Err(EncodeError::BadFlags(3)));
        let stray_identity = Update {
            flags: UpdateFlags::DEHYDRATE,
            ..update(&path, &ranges)
        };
        assert_eq!(
            stray_identity.encode(&mut out),
            Err(EncodeError::BadFlags(4))
        );
        let unsorted = [ByteRange::new(8192, 1), ByteRange::new(0, 1)];
        assert_eq!(
            update(&path, &unsorted).encode(&mut out),
            Err(EncodeError::BadRange)
        );
        let too_many = std::vec![ByteRange::new(0, 1); MAX_UPDATE_RANGES + 1];
        assert_eq!(
            update(&path, &too_many).encode(&mut out),
            Err(EncodeError::TooLarge(Field::Ranges))
        );
        assert_eq!(
            Update {
                identity: &[0; MAX_IDENTITY_LEN + 1],
                ..update(&path, &ranges)
            }
            .encode(&mut std::vec![0u8; 8192]),
            Err(EncodeError::TooLarge(Field::Identity))
        );
    }

    #[test]
    fn the_largest_update_fits_a_provider_message() {
        let path = std::vec![0x41u16; MAX_PATH_BYTES / 2];
        let identity = [3u8; MAX_IDENTITY_LEN];
        let ranges: Vec<ByteRange> = (0..MAX_UPDATE_RANGES as u64)
            .map(|i| ByteRange::new(i * 2, 1))
            .collect();
        let m = Update {
            identity: &identity,
            ..update(&path, &ranges)
        };
        let n = m.encoded_len();
        assert!(n <= MAX_PROVIDER_MESSAGE_LEN && n + RANGE_SIZE > MAX_PROVIDER_MESSAGE_LEN);
        let mut out = std::vec![0u8; n];
        assert_eq!(m.encode(&mut out), Ok(n));
        assert_eq!(Update::decode(&out), Ok(m));
    }

    #[test]
    fn set_in_sync_has_the_documented_layout_and_refuses_undefined_flags() {
        let path = units("dir");
        let m = SetInSync {
            request_id: 3,
            path: Utf16::from_units(&path),
            flags: SetInSyncFlags::IN_SYNC.union(SetInSyncFlags::IF_UNCHANGED),
            expected_changes: 0x0102_0304,
        };
        let mut out = [0u8; 64];
        let n = m.encoded_len();
        assert_eq!(m.encode(&mut out), Ok(n));
        assert_eq!(n, 16 + 16 + 6);
        assert_eq!(&out[..2], &[0x0B, 1], "kind 0x010B");
        assert_eq!(&out[16..24], &[3, 0, 0, 0, 6, 0, 0, 0]);
        assert_eq!(&out[24..32], &0x0102_0304u64.to_le_bytes());
        assert_eq!(&out[32..34], &[b'd', 0]);
        assert_eq!(
            ProviderMessage::decode(&out[..n]),
            Ok(ProviderMessage::SetInSync(m))
        );
        let mut bad = out;
        bad[16] = 4;
        assert_eq!(SetInSync::decode(&bad[..n]), Err(DecodeError::BadFlags(4)));
        let mut bad = out;
        bad[22] = 1;
        assert_eq!(
            SetInSync::decode(&bad[..n]),
            Err(DecodeError::BadValue(Field::Reserved))
        );
        assert_eq!(
            SetInSync {
                flags: SetInSyncFlags(4),
                ..m
            }
            .encode(&mut out),
            Err(EncodeError::BadFlags(4))
        );
        // A management connection does not take them.
        assert_eq!(
            ManagementMessage::decode(&out[..n]),
            Err(DecodeError::UnexpectedKind(0x010B))
        );
        assert!(!Kind::Update.is_management() && !Kind::SetInSync.is_from_kernel());
    }

    #[test]
    fn limits_are_enforced_on_both_sides() {
        let long_path = std::vec![0x41u16; MAX_PATH_BYTES / 2 + 1];
        let max_path = &long_path[..MAX_PATH_BYTES / 2];
        let mut out = std::vec![0u8; MAX_KERNEL_MESSAGE_LEN + 64];
        let image = [0x42u16; MAX_IMAGE_BYTES / 2];
        let identity = [1u8; MAX_IDENTITY_LEN];
        let command_line = std::vec![0x43u16; MAX_COMMAND_LINE_BYTES / 2];
        let root_identity = std::vec![2u8; MAX_SYNC_ROOT_IDENTITY_LEN];
        let biggest = FetchData {
            requestor_image: Utf16::from_units(&image),
            flags: RequestFlags::FULL_PATH.union(RequestFlags::PROCESS_INFO),
            requestor_command_line: Utf16::from_units(&command_line),
            sync_root_identity: &root_identity,
            root_file_identity: &identity,
            ..fetch(max_path, &identity)
        };
        assert_eq!(biggest.encoded_len(), MAX_FETCH_LEN);
        const { assert!(MAX_FETCH_LEN <= MAX_KERNEL_MESSAGE_LEN) };
        let n = biggest.encoded_len();
        assert_eq!(biggest.encode(&mut out), Ok(n));
        assert_eq!(FetchData::decode(&out[..n]), Ok(biggest));
        assert_eq!(
            fetch(&long_path, b"").encode(&mut out),
            Err(EncodeError::TooLarge(Field::Path))
        );
        assert_eq!(
            fetch(&path_of("x"), &[0; MAX_IDENTITY_LEN + 1]).encode(&mut out),
            Err(EncodeError::TooLarge(Field::Identity))
        );
        assert_eq!(
            FetchData {
                priority: 16,
                ..fetch(&path_of("x"), b"")
            }
            .encode(&mut out),
            Err(EncodeError::BadValue(Field::Priority))
        );

        let data = std::vec![0u8; MAX_TRANSFER_LEN + 1];
        let mut out = std::vec![0u8; MAX_PROVIDER_MESSAGE_LEN + 1];
        let t = TransferData {
            request_id: 1,
            offset: 0,
            flags: TransferFlags::EMPTY,
            data: &data[..MAX_TRANSFER_LEN],
        };
        assert_eq!(t.encode(&mut out), Ok(MAX_PROVIDER_MESSAGE_LEN));
        assert_eq!(
            TransferData::decode(&out[..MAX_PROVIDER_MESSAGE_LEN]),
            Ok(t)
        );
        let t = TransferData { data: &data, ..t };
        assert_eq!(t.encode(&mut out), Err(EncodeError::TooLarge(Field::Data)));
        // A hand-made oversized transfer is refused by the header's length check.
        out[4..8].copy_from_slice(&((MAX_PROVIDER_MESSAGE_LEN + 1) as u32).to_le_bytes());
        assert_eq!(
            TransferData::decode(&out),
            Err(DecodeError::TooLarge(Field::Message))
        );
    }

    #[test]
    fn management_messages_have_the_documented_layout() {
        let pattern = units("app.exe");
        let set = SetImageRule {
            request_id: 5,
            visibility: RuleVisibility::Disguise,
            pattern: Utf16::from_units(&pattern),
        };
        let mut out = [0u8; 64];
        let n = set.encoded_len();
        assert_eq!(set.encode(&mut out), Ok(n));
        assert_eq!(n, 16 + 8 + 14);
        assert_eq!(&out[..4], &[1, 2, 1, 0], "kind 0x0201, version 1");
        assert_eq!(&out[16..24], &[2, 0, 0, 0, 14, 0, 0, 0]);
        assert_eq!(&out[24..26], &[b'a', 0]);
        assert_eq!(
            ManagementMessage::decode(&out[..n]),
            Ok(ManagementMessage::SetImageRule(set))
        );

        let remove = RemoveImageRule {
            request_id: 6,
            pattern: Utf16::from_units(&pattern),
        };
        let n = remove.encoded_len();
        assert_eq!(remove.encode(&mut out), Ok(n));
        assert_eq!(&out[..2], &[2, 2]);
        assert_eq!(&out[16..24], &[14, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(RemoveImageRule::decode(&out[..n]), Ok(remove));

        let no_parameters = [
            ManagementMessage::ClearImageRules(ClearImageRules { request_id: 7 }),
            ManagementMessage::ListImageRules(ListImageRules { request_id: 7 }),
        ];
        for message in no_parameters {
            assert_eq!(message.encode(&mut out), Ok(24));
            assert_eq!(&out[..2], &message.kind().to_u16().to_le_bytes());
            assert_eq!(&out[16..24], &[0; 8]);
            assert_eq!(ManagementMessage::decode(&out[..24]), Ok(message));
        }
        assert!(Kind::ListImageRules.is_management());
        assert!(!Kind::GetInfo.is_management() && !Kind::FetchData.is_management());
    }

    #[test]
    fn management_messages_refuse_malformations_and_the_wrong_connection() {
        let pattern = units("\\Device\\x");
        let set = SetImageRule {
            request_id: 1,
            visibility: RuleVisibility::Expose,
            pattern: Utf16::from_units(&pattern),
        };
        let mut good = std::vec![0u8; set.encoded_len()];
        assert_eq!(set.encode(&mut good), Ok(good.len()));
        let patched = |offset: usize, bytes: &[u8]| {
            let mut bad = good.clone();
            bad[offset..offset + bytes.len()].copy_from_slice(bytes);
            ManagementMessage::decode(&bad).map(|_| ())
        };
        assert_eq!(
            patched(16, &[0]),
            Err(DecodeError::BadValue(Field::RuleVisibility))
        );
        assert_eq!(
            patched(16, &[3]),
            Err(DecodeError::BadValue(Field::RuleVisibility))
        );
        assert_eq!(
            patched(20, &[2, 8]),
            Err(DecodeError::TooLarge(Field::Pattern))
        );
        assert_eq!(
            patched(20, &[3, 0]),
            Err(DecodeError::BadString(Field::Pattern))
        );
        assert_eq!(patched(20, &[2, 0]), Err(DecodeError::LengthMismatch));
        assert_eq!(
            patched(22, &[1]),
            Err(DecodeError::BadValue(Field::Reserved))
        );
        // Neither direction's dispatcher takes the other's kinds.
        assert_eq!(
            ProviderMessage::decode(&good),
            Err(DecodeError::UnexpectedKind(0x0201))
        );
        let info = GetInfo {
            request_id: 1,
            path: Utf16::from_units(&pattern),
        };
        let mut other = std::vec![0u8; info.encoded_len()];
        assert_eq!(info.encode(&mut other), Ok(other.len()));
        assert_eq!(
            ManagementMessage::decode(&other),
            Err(DecodeError::UnexpectedKind(0x0109))
        );
        let mut clear = [0u8; 24];
        assert_eq!(ClearImageRules { request_id: 1 }.encode(&mut clear), Ok(24));
        clear[23] = 1;
        assert_eq!(
            ClearImageRules::decode(&clear),
            Err(DecodeError::BadValue(Field::Reserved))
        );

        let long = std::vec![0x41u16; crate::rules::MAX_PATTERN_UNITS + 1];
        let mut out = std::vec![0u8; 4096];
        assert_eq!(
            SetImageRule {
                pattern: Utf16::from_units(&long),
                ..set
            }
            .encode(&mut out),
            Err(EncodeError::TooLarge(Field::Pattern))
        );
        assert_eq!(
            RemoveImageRule {
                request_id: 1,
                pattern: Utf16::from_units(&long),
            }
            .encode(&mut out),
            Err(EncodeError::TooLarge(Field::Pattern))
        );
    }

    #[test]
    fn validation_messages_refuse_what_the_driver_could_not_act_on() {
        let mut out = [0u8; 64];
        let retrieve = RetrieveData {
            request_id: 3,
            range: ByteRange::new(4096, MAX_TRANSFER_LEN as u64),
        };
        let n = HEADER_SIZE + RETRIEVE_FIXED;
        assert_eq!(retrieve.encode(&mut out), Ok(n));
        assert_eq!(
            ProviderMessage::decode(&out[..n]),
            Ok(ProviderMessage::RetrieveData(retrieve))
        );
        // More than one transfer's worth, nothing, or past the end of any file.
        for range in [
            ByteRange::new(0, MAX_TRANSFER_LEN as u64 + 1),
            ByteRange::new(0, 0),
            ByteRange::new(u64::MAX, 2),
        ] {
            assert_eq!(
                RetrieveData { range, ..retrieve }.encode(&mut out),
                Err(EncodeError::BadRange)
            );
        }
        let ack = AckData {
            request_id: 3,
            range: ByteRange::new(0, 4096),
            status: 0,
        };
        let n = HEADER_SIZE + ACK_FIXED;
        assert_eq!(ack.encode(&mut out), Ok(n));
        assert_eq!(AckData::decode(&out[..n]), Ok(ack));
        // A positive status is neither an acknowledgement nor a refusal.
        let mut bad = out;
        bad[32..36].copy_from_slice(&1i32.to_le_bytes());
        assert_eq!(
            AckData::decode(&bad[..n]),
            Err(DecodeError::BadValue(Field::Status))
        );
        let mut bad = out;
        bad[36] = 1;
        assert_eq!(
            AckData::decode(&bad[..n]),
            Err(DecodeError::BadValue(Field::Reserved))
        );
        assert_eq!(
            AckData {
                range: ByteRange::new(5, 0),
                ..ack
            }
            .encode(&mut out),
            Err(EncodeError::BadRange)
        );
        assert!(!Kind::ValidateData.is_management() && Kind::ValidateData.is_from_kernel());
        assert!(!Kind::AckData.is_from_kernel() && !Kind::RetrieveData.is_management());
    }

    #[test]
    fn the_longest_rule_list_fits_in_a_reply() {
        let list = std::vec![0u8; MAX_RULE_LIST_LEN];
        let reply = Reply {
            status: 0,
            request_id: 1,
            payload: &list,
        };
        let mut out = std::vec![0u8; reply.encoded_len()];
        assert_eq!(reply.encode(&mut out), Ok(out.len()));
        const { assert!(MAX_REPLY_PAYLOAD >= MAX_BLOB_SIZE) };
    }

    fn path_of(s: &str) -> Vec<u16> {
        units(s)
    }

    #[test]
    fn replies_round_trip_and_refuse_malformations() {
        let blob = [5u8; 40];
        let reply = Reply {
            status: 0,
            request_id: 77,
            payload: &blob,
        };
        let mut out = [0u8; 100];
        let n = reply.encoded_len();
        assert_eq!(reply.encode(&mut out), Ok(n));
        assert_eq!(n, REPLY_HEADER_SIZE + 40);
        assert_eq!(&out[..2], &[1, 0]);
        assert_eq!(&out[16..20], &40u32.to_le_bytes());
        assert_eq!(Reply::decode(&out[..n]), Ok(reply));
        assert_eq!(Reply::decode(&out), Ok(reply), "trailing bytes ignored");
        assert_eq!(Reply::decode(&out[..n - 1]), Err(DecodeError::Truncated));
        let mut bad = out;
        bad[0] = 2;
        assert_eq!(Reply::decode(&bad), Err(DecodeError::BadVersion(2)));
        let mut bad = out;
        bad[20] = 1;
        assert_eq!(
            Reply::decode(&bad),
            Err(DecodeError::BadValue(Field::Reserved))
        );
        let mut bad = out;
        bad[16..20].copy_from_slice(&(MAX_REPLY_PAYLOAD as u32 + 1).to_le_bytes());
        assert_eq!(
            Reply::decode(&bad),
            Err(DecodeError::TooLarge(Field::Payload))
        );
        let big = std::vec![0u8; MAX_REPLY_PAYLOAD + 1];
        assert_eq!(
            Reply {
                payload: &big,
                ..reply
            }
            .encode(&mut std::vec![0u8; 20_000]),
            Err(EncodeError::TooLarge(Field::Payload))
        );
        assert_eq!(
            reply.encode(&mut out[..30]),
            Err(EncodeError::BufferTooSmall { needed: n })
        );
    }

    proptest! {
        #[test]
        fn every_message_kind_round_trips(parts in arb_parts()) {
            let message = build(&parts);
            let bytes = encode(&message);
            prop_assert_eq!(decode(&bytes), Ok(message));
        }

        #[test]
        fn truncated_messages_are_refused(parts in arb_parts(), cut in any::<prop::sample::Index>()) {
            let bytes = encode(&build(&parts));
            let cut = cut.index(bytes.len());
            prop_assert!(KernelMessage::decode(&bytes[..cut]).is_err());
            prop_assert!(ProviderMessage::decode(&bytes[..cut]).is_err());
            prop_assert!(ManagementMessage::decode(&bytes[..cut]).is_err());
        }

        #[test]
        fn corrupted_messages_never_panic(
            parts in arb_parts(),
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            let mut bytes = encode(&build(&parts));
            let i = at.index(bytes.len());
            bytes[i] = byte;
            crate::fuzz::fuzz_message(&bytes);
        }

        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Header::decode(&bytes);
            let _ = KernelMessage::decode(&bytes);
            let _ = ProviderMessage::decode(&bytes);
            let _ = ManagementMessage::decode(&bytes);
            let _ = Reply::decode(&bytes);
        }

        #[test]
        fn replies_round_trip_and_truncation_is_refused(
            status in any::<i32>(),
            request_id in any::<u64>(),
            payload in proptest::collection::vec(any::<u8>(), 0..2000),
            cut in any::<prop::sample::Index>(),
        ) {
            let reply = Reply { status, request_id, payload: &payload };
            let mut out = std::vec![0u8; reply.encoded_len()];
            prop_assert_eq!(reply.encode(&mut out), Ok(out.len()));
            prop_assert_eq!(Reply::decode(&out), Ok(reply));
            prop_assert!(Reply::decode(&out[..cut.index(out.len())]).is_err());
        }
    }
}

#[cfg(test)]
mod sync_root_tests {
    extern crate std;

    use super::*;
    use crate::connect::{HydrationPolicy, InSyncPolicy, PopulationPolicy};
    use crate::registration::{HardLinkPolicy, HydrationModifiers, ManagementPolicy, RootFlags};
    use std::vec;

    const ROOT: &[u16] = &[b'\\' as u16, b'D' as u16, b'\\' as u16, b'C' as u16];
    const NAME: &[u16] = &[b'm' as u16];

    fn registration() -> Registration<'static> {
        Registration {
            provider_name: Utf16::from_units(NAME),
            provider_version: Utf16::EMPTY,
            provider_id: [7; 16],
            sync_root: Utf16::from_units(ROOT),
            sync_root_identity: b"account",
            root_file_identity: b"root",
            hydration: HydrationPolicy::Full,
            modifiers: HydrationModifiers::VALIDATION_REQUIRED,
            population: PopulationPolicy::AlwaysFull,
            in_sync: InSyncPolicy::NONE,
            hard_links: HardLinkPolicy::ALLOWED,
            management: ManagementPolicy::DEFAULT,
            flags: RootFlags::MARK_IN_SYNC_ON_ROOT,
        }
    }

    #[test]
    fn a_register_request_round_trips_and_is_a_management_message() {
        let m = RegisterSyncRoot {
            request_id: 9,
            flags: RegisterFlags::UPDATE,
            registration: registration(),
        };
        let mut out = vec![0u8; m.encoded_len()];
        assert_eq!(m.encode(&mut out), Ok(out.len()));
        assert_eq!(
            ManagementMessage::decode(&out),
            Ok(ManagementMessage::RegisterSyncRoot(m))
        );
        assert!(Kind::RegisterSyncRoot.is_management());
        assert!(!Kind::RegisterSyncRoot.is_image_rule());
        assert!(Kind::SetImageRule.is_image_rule());
        // A byte past the record is refused, not ignored.
        let mut longer = out.clone();
        longer.push(0);
        let total = u32::try_from(longer.len()).unwrap_or(0);
        longer[4..8].copy_from_slice(&total.to_le_bytes());
        assert!(RegisterSyncRoot::decode(&longer).is_err());
    }

    #[test]
    fn info_and_list_payloads_round_trip() {
        let info = SyncRootInfo {
            flags: ROOT_INFO_CONNECTED,
            provider_pid: 1234,
            registration: registration(),
        };
        let mut out = vec![0u8; info.encoded_len()];
        assert_eq!(info.encode(&mut out), Ok(out.len()));
        assert_eq!(SyncRootInfo::decode(&out), Ok(info));
        let mut list = vec![0u8; 64];
        let other: &[u16] = &[b'\\' as u16, b'E' as u16];
        let len = SyncRootList::encode([ROOT, other].into_iter(), &mut list).unwrap_or(0);
        let decoded = SyncRootList::decode(&list[..len]);
        let paths: vec::Vec<vec::Vec<u16>> = decoded
            .map(|l| l.iter().map(|p| p.units().collect()).collect())
            .unwrap_or_default();
        assert_eq!(paths, vec![ROOT.to_vec(), other.to_vec()]);
        // Too small a buffer is a refusal, never a truncated list.
        assert_eq!(
            SyncRootList::encode([ROOT].into_iter(), &mut [0u8; 10]),
            None
        );
    }
}
