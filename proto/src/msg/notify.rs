//! Notifications (issue 14): the driver tells a provider what users do to the namespace
//! of its sync root — deletes, renames, dehydrations, opens and closes — and, for the
//! blocking ones, waits for its verdict (cfapi's NOTIFY_* callbacks and their ACK_*
//! operations).
//!
//! One kernel → provider message, [`Notify`], carries every kind ([`NotifyKind`], whose
//! wire values are cfapi's CF_CALLBACK_TYPE values); the provider answers a blocking one
//! ([`NotifyKind::blocks`]) with [`AckNotify`]: STATUS_SUCCESS lets the operation
//! proceed, a failure status refuses it. A provider says at connect which kinds it wants
//! ([`NotifySet`], in the connection context); the driver sends no other.

use super::*;

/// What a [`Notify`] is about. The wire values are cfapi's CF_CALLBACK_TYPE values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
#[non_exhaustive]
pub enum NotifyKind {
    /// A placeholder (or a file of the root) was opened (NOTIFY_FILE_OPEN_COMPLETION).
    OpenCompletion = 5,
    /// Its last handle was closed (NOTIFY_FILE_CLOSE_COMPLETION); [`CloseFlags`].
    CloseCompletion = 6,
    /// It is about to lose its local data (NOTIFY_DEHYDRATE): blocks; [`DehydrateFlags`]
    /// and a [`DehydrationReason`].
    Dehydrate = 7,
    /// A dehydration ended (NOTIFY_DEHYDRATE_COMPLETION); [`DehydrateCompletionFlags`].
    DehydrateCompletion = 8,
    /// It is about to be deleted (NOTIFY_DELETE): blocks; [`DeleteFlags`].
    Delete = 9,
    /// It was deleted (NOTIFY_DELETE_COMPLETION).
    DeleteCompletion = 10,
    /// It is about to be renamed to [`Notify::target_path`] (NOTIFY_RENAME): blocks;
    /// [`RenameFlags`].
    Rename = 11,
    /// It was renamed from [`Notify::target_path`], which then holds the source path
    /// (NOTIFY_RENAME_COMPLETION).
    RenameCompletion = 12,
}

impl NotifyKind {
    /// Every kind, in wire order.
    pub const ALL: [NotifyKind; 8] = [
        NotifyKind::OpenCompletion,
        NotifyKind::CloseCompletion,
        NotifyKind::Dehydrate,
        NotifyKind::DehydrateCompletion,
        NotifyKind::Delete,
        NotifyKind::DeleteCompletion,
        NotifyKind::Rename,
        NotifyKind::RenameCompletion,
    ];

    /// The kind with wire value `v`, if there is one.
    pub const fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            5 => NotifyKind::OpenCompletion,
            6 => NotifyKind::CloseCompletion,
            7 => NotifyKind::Dehydrate,
            8 => NotifyKind::DehydrateCompletion,
            9 => NotifyKind::Delete,
            10 => NotifyKind::DeleteCompletion,
            11 => NotifyKind::Rename,
            12 => NotifyKind::RenameCompletion,
            _ => return None,
        })
    }

    /// Whether the operation waits for the provider's [`AckNotify`].
    pub const fn blocks(self) -> bool {
        matches!(
            self,
            NotifyKind::Dehydrate | NotifyKind::Delete | NotifyKind::Rename
        )
    }

    /// The bit of this kind in a [`NotifySet`].
    pub const fn bit(self) -> NotifySet {
        NotifySet::from_bits_retain(1 << (self as u8 - 5))
    }

    /// The flags this kind may carry (cfapi's CF_CALLBACK_*_FLAGS of its parameters).
    pub(super) const fn flags_allowed(self) -> u32 {
        match self {
            NotifyKind::OpenCompletion => OpenFlags::ALL.bits(),
            NotifyKind::CloseCompletion => CloseFlags::ALL.bits(),
            NotifyKind::Dehydrate => DehydrateFlags::ALL.bits(),
            NotifyKind::DehydrateCompletion => DehydrateCompletionFlags::ALL.bits(),
            NotifyKind::Delete => DeleteFlags::ALL.bits(),
            NotifyKind::Rename => RenameFlags::ALL.bits(),
            NotifyKind::DeleteCompletion | NotifyKind::RenameCompletion => 0,
        }
    }
}

flags! {
    /// The notifications a provider asks for at connect, one bit per [`NotifyKind`]
    /// (bit `kind - 5`).
    NotifySet(u32) {
        /// None: the default, cfapi's "not registered".
        NONE = 0,
        /// [`NotifyKind::OpenCompletion`].
        OPEN_COMPLETION = 0x01,
        /// [`NotifyKind::CloseCompletion`].
        CLOSE_COMPLETION = 0x02,
        /// [`NotifyKind::Dehydrate`].
        DEHYDRATE = 0x04,
        /// [`NotifyKind::DehydrateCompletion`].
        DEHYDRATE_COMPLETION = 0x08,
        /// [`NotifyKind::Delete`].
        DELETE = 0x10,
        /// [`NotifyKind::DeleteCompletion`].
        DELETE_COMPLETION = 0x20,
        /// [`NotifyKind::Rename`].
        RENAME = 0x40,
        /// [`NotifyKind::RenameCompletion`].
        RENAME_COMPLETION = 0x80,
    } all = 0xFF
}

impl NotifySet {
    /// The set with exactly `bits`, which the caller knows to be defined.
    const fn from_bits_retain(bits: u32) -> Self {
        match Self::from_bits(bits) {
            Some(set) => set,
            None => Self::NONE,
        }
    }

    /// Whether `kind` is in the set.
    pub const fn wants(self, kind: NotifyKind) -> bool {
        self.contains(kind.bit())
    }
}

flags! {
    /// CF_CALLBACK_DELETE_FLAGS.
    DeleteFlags(u32) {
        /// None.
        NONE = 0,
        /// A directory is deleted.
        IS_DIRECTORY = 1,
        /// The delete is being undone (the disposition cleared).
        IS_UNDELETE = 2,
    } all = 3
}

flags! {
    /// CF_CALLBACK_RENAME_FLAGS.
    RenameFlags(u32) {
        /// None.
        NONE = 0,
        /// A directory is renamed.
        IS_DIRECTORY = 1,
        /// The source is in the provider's sync root.
        SOURCE_IN_SCOPE = 2,
        /// The target is in the provider's sync root.
        TARGET_IN_SCOPE = 4,
    } all = 7
}

flags! {
    /// CF_CALLBACK_DEHYDRATE_FLAGS.
    DehydrateFlags(u32) {
        /// None.
        NONE = 0,
        /// Asked for by the system in the background, not on behalf of a user.
        BACKGROUND = 1,
    } all = 1
}

flags! {
    /// CF_CALLBACK_DEHYDRATE_COMPLETION_FLAGS.
    DehydrateCompletionFlags(u32) {
        /// None.
        NONE = 0,
        /// Asked for in the background.
        BACKGROUND = 1,
        /// The data was dropped (clear: the dehydration failed or was refused).
        DEHYDRATED = 2,
    } all = 3
}

flags! {
    /// CF_CALLBACK_OPEN_COMPLETION_FLAGS.
    OpenFlags(u32) {
        /// None.
        NONE = 0,
        /// The placeholder's reparse data could not be read.
        PLACEHOLDER_UNKNOWN = 1,
        /// The placeholder is of a kind the driver does not support.
        PLACEHOLDER_UNSUPPORTED = 2,
    } all = 3
}

flags! {
    /// CF_CALLBACK_CLOSE_COMPLETION_FLAGS.
    CloseFlags(u32) {
        /// None.
        NONE = 0,
        /// The file was deleted when its last handle closed.
        DELETED = 1,
    } all = 1
}

/// Why a dehydration is asked for: cfapi's CF_CALLBACK_DEHYDRATION_REASON.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
#[non_exhaustive]
pub enum DehydrationReason {
    /// Not a dehydration (every other kind).
    None = 0,
    /// A user asked (an UNPINNED attribute, a `dehydrate` by an application).
    UserManual = 1,
    /// The system is low on space.
    SystemLowSpace = 2,
    /// The file was not used for long.
    SystemInactivity = 3,
    /// An upgrade of the operating system.
    SystemOsUpgrade = 4,
}

impl DehydrationReason {
    /// The reason with wire value `v`, if there is one.
    pub const fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            0 => DehydrationReason::None,
            1 => DehydrationReason::UserManual,
            2 => DehydrationReason::SystemLowSpace,
            3 => DehydrationReason::SystemInactivity,
            4 => DehydrationReason::SystemOsUpgrade,
            _ => return None,
        })
    }
}

/// Size of a [`Notify`]'s fixed part.
const NOTIFY_FIXED: usize = 48;
/// Longest [`Notify`]: every variable part at its limit.
pub(super) const MAX_NOTIFY_LEN: usize = HEADER_SIZE
    + NOTIFY_FIXED
    + MAX_IMAGE_BYTES
    + MAX_PATH_BYTES
    + MAX_PATH_BYTES
    + MAX_IDENTITY_LEN
    + MAX_COMMAND_LINE_BYTES
    + MAX_SYNC_ROOT_IDENTITY_LEN;

/// Size of an [`AckNotify`]'s fixed part.
const ACK_NOTIFY_FIXED: usize = 8;

/// Kernel → provider: an operation on a file of the provider's sync root, before it
/// happens (a blocking kind: answer with [`AckNotify`]) or after (a completion).
///
/// Fixed part (48 bytes): kind `u8` ([`NotifyKind`]), request flags `u8`
/// ([`RequestFlags`]), dehydration reason `u8` ([`DehydrationReason`]), 1 reserved, flags
/// `u32` (the kind's flags), file id `u64`, file size `u64`, requestor pid `u32`, then the
/// byte lengths of the requestor image `u16`, the path `u16`, the target path `u16`, the
/// identity `u16` and the command line `u16`, 2 reserved, the sync-root identity length
/// `u32`, 4 reserved. Then the image, path, target path (UTF-16LE), identity, command line
/// (UTF-16LE) and sync-root identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Notify<'a> {
    /// Identifies the notification; a blocking one's [`AckNotify`] names it.
    pub request_id: u64,
    /// What happens.
    pub kind: NotifyKind,
    /// The kind's flags ([`DeleteFlags`], [`RenameFlags`], ...), as raw bits.
    pub flags: u32,
    /// Why, for [`NotifyKind::Dehydrate`] and its completion; [`DehydrationReason::None`]
    /// otherwise.
    pub reason: DehydrationReason,
    /// The NTFS file id.
    pub file_id: u64,
    /// The file's size (0 for a directory).
    pub file_size: u64,
    /// The process whose operation it is.
    pub requestor_pid: u32,
    /// That process's image path, at most [`MAX_IMAGE_BYTES`].
    pub requestor_image: Utf16<'a>,
    /// What the request carries besides (the provider's connect flags).
    pub request_flags: RequestFlags,
    /// The file's path relative to the sync root (its full NT path with
    /// [`RequestFlags::FULL_PATH`]), at most [`MAX_PATH_BYTES`].
    pub path: Utf16<'a>,
    /// For a rename, the target's full NT path (it may lie outside the root); for a
    /// rename completion, the source's. Empty otherwise. At most [`MAX_PATH_BYTES`].
    pub target_path: Utf16<'a>,
    /// The provider's file identity from the placeholder (empty for an ordinary file),
    /// at most [`MAX_IDENTITY_LEN`].
    pub identity: &'a [u8],
    /// With [`RequestFlags::PROCESS_INFO`], the requestor's command line, at most
    /// [`MAX_COMMAND_LINE_BYTES`].
    pub requestor_command_line: Utf16<'a>,
    /// The sync root's identity from its registration, at most
    /// [`MAX_SYNC_ROOT_IDENTITY_LEN`].
    pub sync_root_identity: &'a [u8],
}

impl<'a> Notify<'a> {
    fn body_len(&self) -> usize {
        NOTIFY_FIXED
            .saturating_add(self.requestor_image.byte_len())
            .saturating_add(self.path.byte_len())
            .saturating_add(self.target_path.byte_len())
            .saturating_add(self.identity.len())
            .saturating_add(self.requestor_command_line.byte_len())
            .saturating_add(self.sync_root_identity.len())
    }

    fn check(&self) -> Result<(), EncodeError> {
        if self.flags & !self.kind.flags_allowed() != 0 {
            return Err(EncodeError::BadFlags(self.flags));
        }
        let dehydration = matches!(
            self.kind,
            NotifyKind::Dehydrate | NotifyKind::DehydrateCompletion
        );
        if dehydration != (self.reason != DehydrationReason::None) {
            return Err(EncodeError::BadValue(Field::Reason));
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
        let target_len = str_len(&self.target_path, MAX_PATH_BYTES, Field::TargetPath)?;
        let identity_len = identity_len(self.identity)?;
        let command_line_len = str_len(
            &self.requestor_command_line,
            MAX_COMMAND_LINE_BYTES,
            Field::CommandLine,
        )?;
        if self.sync_root_identity.len() > MAX_SYNC_ROOT_IDENTITY_LEN {
            return Err(EncodeError::TooLarge(Field::SyncRootIdentity));
        }
        w.u8(self.kind as u8)?;
        w.u8(self.request_flags.bits())?;
        w.u8(self.reason as u8)?;
        w.zeros(1)?;
        w.u32(self.flags)?;
        w.u64(self.file_id)?;
        w.u64(self.file_size)?;
        w.u32(self.requestor_pid)?;
        w.u16(image_len)?;
        w.u16(path_len)?;
        w.u16(target_len)?;
        w.u16(identity_len)?;
        w.u16(command_line_len)?;
        w.zeros(2)?;
        w.u32(self.sync_root_identity.len() as u32)?;
        w.zeros(4)?;
        w.utf16(&self.requestor_image)?;
        w.utf16(&self.path)?;
        w.utf16(&self.target_path)?;
        w.put(self.identity)?;
        w.utf16(&self.requestor_command_line)?;
        w.put(self.sync_root_identity)
    }

    fn read_body(request_id: u64, r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        let kind = r.u8()?;
        let kind = NotifyKind::from_u8(kind).ok_or(DecodeError::BadValue(Field::NotifyKind))?;
        let bits = r.u8()?;
        let request_flags =
            RequestFlags::from_bits(bits).ok_or(DecodeError::BadFlags(u32::from(bits)))?;
        let reason =
            DehydrationReason::from_u8(r.u8()?).ok_or(DecodeError::BadValue(Field::Reason))?;
        r.reserved(1)?;
        let flags = r.u32()?;
        if flags & !kind.flags_allowed() != 0 {
            return Err(DecodeError::BadFlags(flags));
        }
        let dehydration = matches!(
            kind,
            NotifyKind::Dehydrate | NotifyKind::DehydrateCompletion
        );
        if dehydration != (reason != DehydrationReason::None) {
            return Err(DecodeError::BadValue(Field::Reason));
        }
        let file_id = r.u64()?;
        let file_size = r.u64()?;
        let requestor_pid = r.u32()?;
        let image_len = read_len(r, MAX_IMAGE_BYTES, Field::RequestorImage)?;
        let path_len = read_len(r, MAX_PATH_BYTES, Field::Path)?;
        let target_len = read_len(r, MAX_PATH_BYTES, Field::TargetPath)?;
        let identity_len = read_len(r, MAX_IDENTITY_LEN, Field::Identity)?;
        let command_line_len = read_len(r, MAX_COMMAND_LINE_BYTES, Field::CommandLine)?;
        r.reserved(2)?;
        let root_identity_len = r.u32()?;
        if root_identity_len as usize > MAX_SYNC_ROOT_IDENTITY_LEN {
            return Err(DecodeError::TooLarge(Field::SyncRootIdentity));
        }
        r.reserved(4)?;
        Ok(Self {
            request_id,
            kind,
            flags,
            reason,
            file_id,
            file_size,
            requestor_pid,
            request_flags,
            requestor_image: r.utf16(image_len, Field::RequestorImage)?,
            path: r.utf16(path_len, Field::Path)?,
            target_path: r.utf16(target_len, Field::TargetPath)?,
            identity: r.take(usize::from(identity_len))?,
            requestor_command_line: r.utf16(command_line_len, Field::CommandLine)?,
            sync_root_identity: r.take(root_identity_len as usize)?,
        })
    }
}
message!(Notify<'a>, Kind::Notify);

/// Provider → kernel: the verdict on a blocking [`Notify`] (cfapi's ACK_DELETE,
/// ACK_RENAME, ACK_DEHYDRATE). STATUS_SUCCESS lets the operation proceed; a failure
/// status refuses it, and the caller gets that status if it is one of the
/// STATUS_CLOUD_FILE_* family, STATUS_CLOUD_FILE_UNSUCCESSFUL otherwise.
///
/// Fixed part (8 bytes): status `i32`, 4 reserved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AckNotify {
    /// The notification answered.
    pub request_id: u64,
    /// STATUS_SUCCESS (or any success status) to allow, a failure status to refuse.
    pub status: i32,
}

impl AckNotify {
    fn body_len(&self) -> usize {
        ACK_NOTIFY_FIXED
    }

    fn check(&self) -> Result<(), EncodeError> {
        Ok(())
    }

    fn write_body(&self, w: &mut Writer<'_>) -> Result<(), EncodeError> {
        w.u32(self.status as u32)?;
        w.zeros(4)
    }

    fn read_body(request_id: u64, r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let status = r.u32()? as i32;
        r.reserved(4)?;
        Ok(Self { request_id, status })
    }
}
message!(AckNotify, Kind::AckNotify);

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;

    fn units(s: &str) -> std::vec::Vec<u16> {
        s.encode_utf16().collect()
    }

    fn rename<'a>(path: &'a [u16], target: &'a [u16]) -> Notify<'a> {
        Notify {
            request_id: 77,
            kind: NotifyKind::Rename,
            flags: RenameFlags::SOURCE_IN_SCOPE.bits(),
            reason: DehydrationReason::None,
            file_id: 5,
            file_size: 9000,
            requestor_pid: 42,
            requestor_image: Utf16::EMPTY,
            request_flags: RequestFlags::EMPTY,
            path: Utf16::from_units(path),
            target_path: Utf16::from_units(target),
            identity: b"id",
            requestor_command_line: Utf16::EMPTY,
            sync_root_identity: b"root",
        }
    }

    fn encoded(m: &Notify<'_>) -> std::vec::Vec<u8> {
        let mut out = std::vec![0u8; m.encoded_len()];
        assert_eq!(m.encode(&mut out), Ok(out.len()));
        out
    }

    #[test]
    fn a_rename_has_the_documented_layout_and_round_trips() {
        let path = units("a.txt");
        let target = units("\\Device\\V\\Out\\a.txt");
        let m = rename(&path, &target);
        let bytes = encoded(&m);
        assert_eq!(bytes.len(), 16 + 48 + 10 + 38 + 2 + 4);
        assert_eq!(&bytes[..2], &[4, 0], "kind NOTIFY");
        assert_eq!(
            &bytes[16..20],
            &[11, 0, 0, 0],
            "NOTIFY_RENAME, no request flags"
        );
        assert_eq!(&bytes[20..24], &2u32.to_le_bytes(), "SOURCE_IN_SCOPE");
        assert_eq!(&bytes[16 + 28..16 + 36], &[0, 0, 10, 0, 38, 0, 2, 0]);
        assert_eq!(&bytes[16 + 40..16 + 44], &4u32.to_le_bytes());
        assert_eq!(Notify::decode(&bytes), Ok(m));
        assert_eq!(
            KernelMessage::decode(&bytes),
            Ok(KernelMessage::Notify(m)),
            "a provider reads it with the other kernel messages"
        );
    }

    #[test]
    fn flags_and_reasons_must_fit_the_kind() {
        let path = units("a");
        let bad_flags = Notify {
            flags: 8,
            ..rename(&path, &[])
        };
        let mut out = [0u8; 256];
        assert_eq!(bad_flags.encode(&mut out), Err(EncodeError::BadFlags(8)));
        let reason_without_dehydration = Notify {
            reason: DehydrationReason::UserManual,
            ..rename(&path, &[])
        };
        assert_eq!(
            reason_without_dehydration.encode(&mut out),
            Err(EncodeError::BadValue(Field::Reason))
        );
        let dehydrate = Notify {
            kind: NotifyKind::Dehydrate,
            flags: DehydrateFlags::BACKGROUND.bits(),
            reason: DehydrationReason::SystemLowSpace,
            ..rename(&path, &[])
        };
        let good = encoded(&dehydrate);
        assert_eq!(Notify::decode(&good), Ok(dehydrate));
        assert_eq!(
            {
                let bad = good.clone();
                Notify::decode(&bad).map(|_| ())
            },
            Ok(())
        );
        let patched = |at: usize, byte: u8| {
            let mut bad = good.clone();
            bad[at] = byte;
            Notify::decode(&bad).map(|_| ())
        };
        assert_eq!(
            patched(16, 4),
            Err(DecodeError::BadValue(Field::NotifyKind))
        );
        assert_eq!(
            patched(16 + 2, 0),
            Err(DecodeError::BadValue(Field::Reason))
        );
        assert_eq!(
            patched(16 + 2, 5),
            Err(DecodeError::BadValue(Field::Reason))
        );
        assert_eq!(
            patched(16 + 3, 1),
            Err(DecodeError::BadValue(Field::Reserved))
        );
        assert_eq!(patched(16 + 4, 2), Err(DecodeError::BadFlags(2)));
        assert_eq!(
            patched(16 + 38, 1),
            Err(DecodeError::BadValue(Field::Reserved))
        );
        assert_eq!(
            patched(16 + 44, 1),
            Err(DecodeError::BadValue(Field::Reserved))
        );
    }

    #[test]
    fn every_kind_has_its_own_bit_and_only_three_block() {
        let mut all = NotifySet::NONE;
        for kind in NotifyKind::ALL {
            assert!(!all.intersects(kind.bit()), "{kind:?} shares a bit");
            all = all.union(kind.bit());
            assert_eq!(NotifyKind::from_u8(kind as u8), Some(kind));
        }
        assert_eq!(all, NotifySet::ALL);
        let blocking: std::vec::Vec<_> =
            NotifyKind::ALL.into_iter().filter(|k| k.blocks()).collect();
        assert_eq!(
            blocking,
            [
                NotifyKind::Dehydrate,
                NotifyKind::Delete,
                NotifyKind::Rename
            ]
        );
        assert!(NotifySet::DELETE.wants(NotifyKind::Delete));
        assert!(!NotifySet::DELETE.wants(NotifyKind::DeleteCompletion));
    }

    #[test]
    fn the_longest_notification_is_the_longest_kernel_message() {
        let long = std::vec![0x41u16; MAX_PATH_BYTES / 2];
        let image = std::vec![0x42u16; MAX_IMAGE_BYTES / 2];
        let command_line = std::vec![0x43u16; MAX_COMMAND_LINE_BYTES / 2];
        let identity = [1u8; MAX_IDENTITY_LEN];
        let root_identity = std::vec![2u8; MAX_SYNC_ROOT_IDENTITY_LEN];
        let biggest = Notify {
            requestor_image: Utf16::from_units(&image),
            request_flags: RequestFlags::ALL,
            identity: &identity,
            requestor_command_line: Utf16::from_units(&command_line),
            sync_root_identity: &root_identity,
            ..rename(&long, &long)
        };
        assert_eq!(biggest.encoded_len(), MAX_KERNEL_MESSAGE_LEN);
        let bytes = encoded(&biggest);
        assert_eq!(Notify::decode(&bytes), Ok(biggest));
        let too_long = std::vec![0x41u16; MAX_PATH_BYTES / 2 + 1];
        let mut out = std::vec![0u8; MAX_KERNEL_MESSAGE_LEN + 2];
        assert_eq!(
            rename(&long, &too_long).encode(&mut out),
            Err(EncodeError::TooLarge(Field::TargetPath))
        );
    }

    #[test]
    fn an_acknowledgement_round_trips_a_refusal() {
        let ack = AckNotify {
            request_id: 9,
            status: 0xC000_CF18_u32 as i32,
        };
        let mut out = [0u8; 24];
        assert_eq!(ack.encode(&mut out), Ok(24));
        assert_eq!(
            ProviderMessage::decode(&out),
            Ok(ProviderMessage::AckNotify(ack))
        );
        out[20] = 1;
        assert_eq!(
            AckNotify::decode(&out),
            Err(DecodeError::BadValue(Field::Reserved))
        );
    }
}
