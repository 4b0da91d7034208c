//! A sync root's registration: what CfRegisterSyncRoot records once and the driver keeps
//! across provider restarts, driver reloads and reboots (issue 13), in one record that
//! both the REGISTER request and the driver's store carry.
//!
//! The record holds the provider's name, version and id, the sync root (NT form), the
//! optional sync-root identity (at most [`MAX_SYNC_ROOT_IDENTITY_LEN`], 64 KiB) and root
//! file identity (at most [`MAX_IDENTITY_LEN`], 4 KiB), and the five policies: hydration
//! (primary and modifiers), population, in-sync, hard links and placeholder management,
//! plus the root flags that outlive the request (DISABLE_ON_DEMAND_POPULATION_ON_ROOT,
//! MARK_IN_SYNC_ON_ROOT). The identity limits are cfapi's (CF_SYNC_REGISTRATION); 64 KiB
//! is more than reparse data holds (16 KiB), which is why the record cannot live on the
//! root directory alone.
//!
//! Layout, version 1 (little-endian):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `b"CFRG"` |
//! | 4 | 2 | version, 1 |
//! | 6 | 2 | fixed size, [`FIXED_SIZE`] |
//! | 8 | 4 | total size |
//! | 12 | 4 | root flags ([`RootFlags`]) |
//! | 16 | 16 | provider id (a GUID in its Windows byte order) |
//! | 32 | 1 | hydration primary ([`HydrationPolicy`]) |
//! | 33 | 1 | population primary ([`PopulationPolicy`]) |
//! | 34 | 2 | hydration modifiers ([`HydrationModifiers`]) |
//! | 36 | 4 | in-sync policy ([`InSyncPolicy`]) |
//! | 40 | 4 | hard-link policy ([`HardLinkPolicy`]) |
//! | 44 | 4 | placeholder management ([`ManagementPolicy`]) |
//! | 48 | 2 | provider name length in bytes |
//! | 50 | 2 | provider version length in bytes |
//! | 52 | 2 | sync root path length in bytes |
//! | 54 | 2 | root file identity length |
//! | 56 | 4 | sync-root identity length |
//! | 60 | 4 | reserved, zero |
//! | 64 | … | name, version, root path (UTF-16LE), root file identity, sync-root identity |
//!
//! Refused, each with its own error: a name missing or longer than 255 units, a version
//! longer than 255 units, identities over their limits, an undefined policy value or
//! flag, STREAMING_ALLOWED together with VALIDATION_REQUIRED (cfapi refuses the pair: a
//! streamed read is never persisted, so it cannot be validated), a root path not in NT
//! form.

use crate::connect::{HydrationPolicy, InSyncPolicy, MAX_NAME_UNITS, PopulationPolicy};
use crate::error::{DecodeError, EncodeError, Field};
use crate::placeholder::MAX_IDENTITY_LEN;
use crate::utf16::Utf16;
use crate::wire::{Reader, Writer, len_u16};

/// The four bytes a registration record starts with.
pub const MAGIC: [u8; 4] = *b"CFRG";

/// The record version this build writes and reads.
pub const VERSION: u16 = 1;

/// Size of the fixed part.
pub const FIXED_SIZE: usize = 64;

/// Largest sync-root identity (cfapi: 64 KiB).
pub const MAX_SYNC_ROOT_IDENTITY_LEN: usize = 64 * 1024;

/// Largest record: the fixed part, two names, a root path of at most 32,767 units and
/// both identities.
pub const MAX_SIZE: usize = FIXED_SIZE
    + 2 * MAX_NAME_UNITS * 2
    + 32_767 * 2
    + MAX_IDENTITY_LEN
    + MAX_SYNC_ROOT_IDENTITY_LEN;

flags! {
    /// cfapi's CF_HYDRATION_POLICY_MODIFIER values.
    HydrationModifiers(u16) {
        /// No modifier.
        NONE = 0,
        /// Data is persisted, then validated by the provider before a read completes.
        VALIDATION_REQUIRED = 0x1,
        /// Transfers may complete reads without being persisted.
        STREAMING_ALLOWED = 0x2,
        /// The system may dehydrate placeholders (low space, inactivity).
        AUTO_DEHYDRATION_ALLOWED = 0x4,
        /// A hydration interrupted may restart from the beginning.
        ALLOW_FULL_RESTART_HYDRATION = 0x8,
    } all = 0xF
}

flags! {
    /// cfapi's CF_HARDLINK_POLICY values.
    HardLinkPolicy(u32) {
        /// Hard links to placeholders are refused.
        NONE = 0,
        /// Hard links are allowed inside the sync root.
        ALLOWED = 0x1,
    } all = 0x1
}

flags! {
    /// cfapi's CF_PLACEHOLDER_MANAGEMENT_POLICY values: who besides the provider may
    /// manage placeholders.
    ManagementPolicy(u32) {
        /// Only the provider.
        DEFAULT = 0,
        /// Anyone may create placeholders.
        CREATE_UNRESTRICTED = 0x1,
        /// Anyone may convert files to placeholders.
        CONVERT_TO_UNRESTRICTED = 0x2,
        /// Anyone may update placeholders.
        UPDATE_UNRESTRICTED = 0x4,
    } all = 0x7
}

flags! {
    /// The register flags that describe the root, kept in the record (cfapi's
    /// CF_REGISTER_FLAG values; UPDATE is a request flag, see [`RegisterFlags`]).
    RootFlags(u32) {
        /// No flag.
        NONE = 0,
        /// The root directory is never populated on demand.
        DISABLE_ON_DEMAND_POPULATION_ON_ROOT = 0x2,
        /// The root directory is marked in sync.
        MARK_IN_SYNC_ON_ROOT = 0x4,
    } all = 0x6
}

flags! {
    /// The flags of a REGISTER request (cfapi's CF_REGISTER_FLAG values).
    RegisterFlags(u32) {
        /// No flag.
        NONE = 0,
        /// Update an existing registration (without it, registering a root again is
        /// refused).
        UPDATE = 0x1,
        /// See [`RootFlags::DISABLE_ON_DEMAND_POPULATION_ON_ROOT`].
        DISABLE_ON_DEMAND_POPULATION_ON_ROOT = 0x2,
        /// See [`RootFlags::MARK_IN_SYNC_ON_ROOT`].
        MARK_IN_SYNC_ON_ROOT = 0x4,
    } all = 0x7
}

impl RegisterFlags {
    /// The part the record keeps.
    pub const fn root_flags(self) -> RootFlags {
        RootFlags(self.0 & RootFlags::ALL.0)
    }
}

/// A GUID in its Windows byte order (Data1..3 little-endian, Data4 as is).
pub type ProviderId = [u8; 16];

/// One sync root's registration.
///
/// Decoding borrows the strings and identities from the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Registration<'a> {
    /// The provider's display name: 1 to 255 UTF-16 units.
    pub provider_name: Utf16<'a>,
    /// The provider's version string: at most 255 units.
    pub provider_version: Utf16<'a>,
    /// The provider's GUID (userlib derives one from the name when none is given).
    pub provider_id: ProviderId,
    /// The sync root directory in NT form (`\Device\HarddiskVolume1\Users\u\Cloud`).
    pub sync_root: Utf16<'a>,
    /// Returned to the provider in every request (at most 64 KiB).
    pub sync_root_identity: &'a [u8],
    /// The root directory's own file identity (at most 4 KiB), returned in requests
    /// about the root.
    pub root_file_identity: &'a [u8],
    /// The hydration primary policy.
    pub hydration: HydrationPolicy,
    /// The hydration modifiers.
    pub modifiers: HydrationModifiers,
    /// The population primary policy.
    pub population: PopulationPolicy,
    /// Which attribute and time changes clear in-sync.
    pub in_sync: InSyncPolicy,
    /// Whether hard links to placeholders are allowed.
    pub hard_links: HardLinkPolicy,
    /// Who else may manage placeholders.
    pub management: ManagementPolicy,
    /// The register flags kept with the root.
    pub flags: RootFlags,
}

impl<'a> Registration<'a> {
    /// The first rule the record breaks, as the decoder would report it.
    fn check(&self) -> Result<(), (DecodeError, EncodeError)> {
        let too_large = |f| (DecodeError::TooLarge(f), EncodeError::TooLarge(f));
        let bad = |f| (DecodeError::BadValue(f), EncodeError::BadValue(f));
        if self.provider_name.is_empty() {
            return Err(bad(Field::ProviderName));
        }
        if self.provider_name.len() > MAX_NAME_UNITS {
            return Err(too_large(Field::ProviderName));
        }
        if self.provider_version.len() > MAX_NAME_UNITS {
            return Err(too_large(Field::ProviderVersion));
        }
        if self.sync_root.first() != Some(u16::from(b'\\')) {
            return Err(bad(Field::SyncRootPath));
        }
        if self.sync_root_identity.len() > MAX_SYNC_ROOT_IDENTITY_LEN {
            return Err(too_large(Field::SyncRootIdentity));
        }
        if self.root_file_identity.len() > MAX_IDENTITY_LEN {
            return Err(too_large(Field::Identity));
        }
        if self.modifiers.contains(
            HydrationModifiers::STREAMING_ALLOWED.union(HydrationModifiers::VALIDATION_REQUIRED),
        ) {
            return Err(bad(Field::HydrationModifiers));
        }
        Ok(())
    }

    /// The encoded length. Saturates for fields too long to encode.
    pub fn encoded_len(&self) -> usize {
        FIXED_SIZE
            .saturating_add(self.provider_name.byte_len())
            .saturating_add(self.provider_version.byte_len())
            .saturating_add(self.sync_root.byte_len())
            .saturating_add(self.root_file_identity.len())
            .saturating_add(self.sync_root_identity.len())
    }

    /// Encodes the record into `out`, returning [`Self::encoded_len`]. Refuses anything
    /// [`Self::decode`] would refuse.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
        self.check().map_err(|(_, e)| e)?;
        let len = self.encoded_len();
        if len > MAX_SIZE {
            return Err(EncodeError::TooLarge(Field::Message));
        }
        let total = u32::try_from(len).map_err(|_| EncodeError::TooLarge(Field::Message))?;
        let identity_len = u32::try_from(self.sync_root_identity.len())
            .map_err(|_| EncodeError::TooLarge(Field::SyncRootIdentity))?;
        let mut w = Writer::new(out, len)?;
        w.put(&MAGIC)?;
        w.u16(VERSION)?;
        w.u16(FIXED_SIZE as u16)?;
        w.u32(total)?;
        w.u32(self.flags.bits())?;
        w.put(&self.provider_id)?;
        w.u8(self.hydration as u8)?;
        w.u8(self.population as u8)?;
        w.u16(self.modifiers.bits())?;
        w.u32(self.in_sync.bits())?;
        w.u32(self.hard_links.bits())?;
        w.u32(self.management.bits())?;
        w.u16(len_u16(self.provider_name.byte_len(), Field::ProviderName)?)?;
        w.u16(len_u16(
            self.provider_version.byte_len(),
            Field::ProviderVersion,
        )?)?;
        w.u16(len_u16(self.sync_root.byte_len(), Field::SyncRootPath)?)?;
        w.u16(len_u16(self.root_file_identity.len(), Field::Identity)?)?;
        w.u32(identity_len)?;
        w.u32(0)?;
        w.utf16(&self.provider_name)?;
        w.utf16(&self.provider_version)?;
        w.utf16(&self.sync_root)?;
        w.put(self.root_file_identity)?;
        w.put(self.sync_root_identity)?;
        Ok(w.finish())
    }

    /// Decodes a record (untrusted: a provider's request or the driver's store).
    pub fn decode(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        if bytes.len() > MAX_SIZE {
            return Err(DecodeError::TooLarge(Field::Message));
        }
        let mut r = Reader::new(bytes);
        if r.array::<4>()? != MAGIC {
            return Err(DecodeError::BadMagic);
        }
        let version = r.u16()?;
        if version != VERSION {
            return Err(DecodeError::BadVersion(version));
        }
        let fixed = r.u16()?;
        let total = r.u32()?;
        if usize::from(fixed) != FIXED_SIZE || usize::try_from(total).ok() != Some(bytes.len()) {
            return Err(DecodeError::LengthMismatch);
        }
        let flags = r.u32()?;
        let flags = RootFlags::from_bits(flags).ok_or(DecodeError::BadFlags(flags))?;
        let provider_id: ProviderId = r.array()?;
        let hydration = HydrationPolicy::from_u8(r.u8()?)
            .ok_or(DecodeError::BadValue(Field::HydrationPolicy))?;
        let population = PopulationPolicy::from_u8(r.u8()?)
            .ok_or(DecodeError::BadValue(Field::PopulationPolicy))?;
        let modifiers = HydrationModifiers::from_bits(r.u16()?)
            .ok_or(DecodeError::BadValue(Field::HydrationModifiers))?;
        let in_sync =
            InSyncPolicy::from_bits(r.u32()?).ok_or(DecodeError::BadValue(Field::InSyncPolicy))?;
        let hard_links = HardLinkPolicy::from_bits(r.u32()?)
            .ok_or(DecodeError::BadValue(Field::HardLinkPolicy))?;
        let management = ManagementPolicy::from_bits(r.u32()?)
            .ok_or(DecodeError::BadValue(Field::ManagementPolicy))?;
        let name_len = r.u16()?;
        let version_len = r.u16()?;
        let root_len = r.u16()?;
        let file_identity_len = r.u16()?;
        let identity_len = r.u32()?;
        r.reserved(4)?;
        if usize::from(name_len) > MAX_NAME_UNITS * 2 {
            return Err(DecodeError::TooLarge(Field::ProviderName));
        }
        if usize::from(version_len) > MAX_NAME_UNITS * 2 {
            return Err(DecodeError::TooLarge(Field::ProviderVersion));
        }
        if usize::from(file_identity_len) > MAX_IDENTITY_LEN {
            return Err(DecodeError::TooLarge(Field::Identity));
        }
        let identity_len = usize::try_from(identity_len)
            .ok()
            .filter(|n| *n <= MAX_SYNC_ROOT_IDENTITY_LEN)
            .ok_or(DecodeError::TooLarge(Field::SyncRootIdentity))?;
        let provider_name = r.utf16(name_len, Field::ProviderName)?;
        let provider_version = r.utf16(version_len, Field::ProviderVersion)?;
        let sync_root = r.utf16(root_len, Field::SyncRootPath)?;
        let root_file_identity = r.take(usize::from(file_identity_len))?;
        let sync_root_identity = r.take(identity_len)?;
        r.finish()?;
        let record = Self {
            provider_name,
            provider_version,
            provider_id,
            sync_root,
            sync_root_identity,
            root_file_identity,
            hydration,
            modifiers,
            population,
            in_sync,
            hard_links,
            management,
            flags,
        };
        record.check().map_err(|(d, _)| d)?;
        Ok(record)
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use proptest::prelude::*;
    use std::vec;
    use std::vec::Vec;

    const ROOT: &[u16] = &[b'\\' as u16, b'D' as u16, b'\\' as u16, b'C' as u16];
    const NAME: &[u16] = &[b'm' as u16, b'i' as u16, b'r' as u16];

    fn sample() -> Registration<'static> {
        Registration {
            provider_name: Utf16::from_units(NAME),
            provider_version: Utf16::from_units(&[b'1' as u16]),
            provider_id: [7; 16],
            sync_root: Utf16::from_units(ROOT),
            sync_root_identity: b"root-identity",
            root_file_identity: b"file",
            hydration: HydrationPolicy::Full,
            modifiers: HydrationModifiers::VALIDATION_REQUIRED,
            population: PopulationPolicy::Full,
            in_sync: InSyncPolicy::TRACK_FILE_LAST_WRITE_TIME,
            hard_links: HardLinkPolicy::ALLOWED,
            management: ManagementPolicy::CREATE_UNRESTRICTED,
            flags: RootFlags::MARK_IN_SYNC_ON_ROOT,
        }
    }

    fn encoded(r: &Registration<'_>) -> Vec<u8> {
        let mut out = vec![0u8; r.encoded_len()];
        assert_eq!(r.encode(&mut out), Ok(out.len()));
        out
    }

    #[test]
    fn a_record_round_trips_with_every_field() {
        let r = sample();
        let bytes = encoded(&r);
        assert_eq!(Registration::decode(&bytes), Ok(r));
    }

    #[test]
    fn refuses_what_cfapi_refuses() {
        let mut out = vec![0u8; 200_000];
        let long: Vec<u16> = vec![b'a' as u16; MAX_NAME_UNITS + 1];
        let big_identity = vec![0u8; MAX_SYNC_ROOT_IDENTITY_LEN + 1];
        let big_file_identity = vec![0u8; MAX_IDENTITY_LEN + 1];
        let cases: [(Registration<'_>, EncodeError); 7] = [
            (
                Registration {
                    provider_name: Utf16::from_units(&[]),
                    ..sample()
                },
                EncodeError::BadValue(Field::ProviderName),
            ),
            (
                Registration {
                    provider_name: Utf16::from_units(&long),
                    ..sample()
                },
                EncodeError::TooLarge(Field::ProviderName),
            ),
            (
                Registration {
                    provider_version: Utf16::from_units(&long),
                    ..sample()
                },
                EncodeError::TooLarge(Field::ProviderVersion),
            ),
            (
                Registration {
                    sync_root_identity: &big_identity,
                    ..sample()
                },
                EncodeError::TooLarge(Field::SyncRootIdentity),
            ),
            (
                Registration {
                    root_file_identity: &big_file_identity,
                    ..sample()
                },
                EncodeError::TooLarge(Field::Identity),
            ),
            (
                Registration {
                    modifiers: HydrationModifiers::STREAMING_ALLOWED
                        .union(HydrationModifiers::VALIDATION_REQUIRED),
                    ..sample()
                },
                EncodeError::BadValue(Field::HydrationModifiers),
            ),
            (
                Registration {
                    sync_root: Utf16::from_units(NAME),
                    ..sample()
                },
                EncodeError::BadValue(Field::SyncRootPath),
            ),
        ];
        for (record, error) in cases {
            assert_eq!(record.encode(&mut out), Err(error), "{record:?}");
        }
        // The largest identities cfapi allows are accepted.
        let identity = vec![1u8; MAX_SYNC_ROOT_IDENTITY_LEN];
        let file_identity = vec![2u8; MAX_IDENTITY_LEN];
        let r = Registration {
            sync_root_identity: &identity,
            root_file_identity: &file_identity,
            ..sample()
        };
        assert_eq!(Registration::decode(&encoded(&r)), Ok(r));
    }

    #[test]
    fn decoding_refuses_each_malformation() {
        let good = encoded(&sample());
        let patched = |offset: usize, bytes: &[u8]| {
            let mut bad = good.clone();
            bad[offset..offset + bytes.len()].copy_from_slice(bytes);
            Registration::decode(&bad).map(|_| ())
        };
        assert_eq!(patched(0, b"XXXX"), Err(DecodeError::BadMagic));
        assert_eq!(patched(4, &[2, 0]), Err(DecodeError::BadVersion(2)));
        assert_eq!(patched(8, &[1, 0, 0, 0]), Err(DecodeError::LengthMismatch));
        assert_eq!(patched(12, &[1, 0, 0, 0]), Err(DecodeError::BadFlags(1)));
        assert_eq!(
            patched(32, &[9]),
            Err(DecodeError::BadValue(Field::HydrationPolicy))
        );
        assert_eq!(
            patched(34, &[3, 0]),
            Err(DecodeError::BadValue(Field::HydrationModifiers))
        );
        assert_eq!(
            patched(40, &[2, 0, 0, 0]),
            Err(DecodeError::BadValue(Field::HardLinkPolicy))
        );
        assert_eq!(
            patched(44, &[8, 0, 0, 0]),
            Err(DecodeError::BadValue(Field::ManagementPolicy))
        );
        assert_eq!(
            patched(60, &[1, 0, 0, 0]),
            Err(DecodeError::BadValue(Field::Reserved))
        );
        assert_eq!(
            Registration::decode(&good[..good.len() - 1]),
            Err(DecodeError::LengthMismatch)
        );
    }

    #[test]
    fn register_flags_keep_only_the_roots_part() {
        let flags = RegisterFlags::UPDATE.union(RegisterFlags::MARK_IN_SYNC_ON_ROOT);
        assert_eq!(flags.root_flags(), RootFlags::MARK_IN_SYNC_ON_ROOT);
        assert_eq!(RegisterFlags::from_bits(8), None);
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Registration::decode(&bytes);
        }

        #[test]
        fn any_valid_record_round_trips(
            name in proptest::collection::vec(1u16..0xD000, 1..=MAX_NAME_UNITS),
            version in proptest::collection::vec(1u16..0xD000, 0..=MAX_NAME_UNITS),
            identity in proptest::collection::vec(any::<u8>(), 0..2048),
            file_identity in proptest::collection::vec(any::<u8>(), 0..=MAX_IDENTITY_LEN),
            id in any::<[u8; 16]>(),
            hydration in (0u8..4).prop_filter_map("a policy", HydrationPolicy::from_u8),
            population in (0u8..2).prop_filter_map("a policy", PopulationPolicy::from_u8),
            modifiers in (0u16..16)
                .prop_filter_map("a legal set", HydrationModifiers::from_bits)
                .prop_filter("not streaming with validation", |m| (m.bits() & 3) != 3),
            in_sync in any::<u32>().prop_filter_map("a policy", InSyncPolicy::from_bits),
            hard_links in (0u32..2).prop_filter_map("a policy", HardLinkPolicy::from_bits),
            management in (0u32..8).prop_filter_map("a policy", ManagementPolicy::from_bits),
            flags in (0u32..8).prop_filter_map("flags", RootFlags::from_bits),
        ) {
            let r = Registration {
                provider_name: Utf16::from_units(&name),
                provider_version: Utf16::from_units(&version),
                provider_id: id,
                sync_root: Utf16::from_units(ROOT),
                sync_root_identity: &identity,
                root_file_identity: &file_identity,
                hydration,
                modifiers,
                population,
                in_sync,
                hard_links,
                management,
                flags,
            };
            let bytes = encoded(&r);
            prop_assert_eq!(Registration::decode(&bytes), Ok(r));
        }
    }
}
