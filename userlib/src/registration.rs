//! What a provider registers once for its sync root (cfapi's CfRegisterSyncRoot), as
//! opposed to what it says each time it connects ([`SyncRootConfig`](crate::SyncRootConfig)).
//!
//! A registration is kept by the driver (in its service key) until it is unregistered:
//! across provider restarts, driver reloads and reboots. [`SyncRoot::register`] records
//! one, [`SyncRoot::unregister`] removes it, [`SyncRoot::info`] reads the registration of
//! the root a path lies under (cfapi's CfGetSyncRootInfoByPath) and [`SyncRoot::list`]
//! names every registered root. [`SyncRoot::connect`](crate::SyncRoot::connect) registers
//! a root that is not registered yet from its [`SyncRootConfig`](crate::SyncRootConfig),
//! and otherwise serves it with the policies it was registered with.
//!
//! ```no_run
//! use cloudflt::registration::{RegisterFlags, SyncRootRegistration};
//! use cloudflt::{HydrationPolicy, SyncRoot};
//!
//! let registration = SyncRootRegistration::new(r"C:\Users\me\Cloud", "Mirror", "1.0")
//!     .hydration(HydrationPolicy::Full)
//!     .sync_root_identity(b"account-42".to_vec());
//! SyncRoot::register(&registration, RegisterFlags::NONE)?;
//! let info = SyncRoot::info(r"C:\Users\me\Cloud\photos\a.jpg")?;
//! assert_eq!(info.hydration, HydrationPolicy::Full);
//! # Ok::<(), cloudflt::Error>(())
//! ```

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use cloudflt_proto::PortContext;
use cloudflt_proto::connect::HEADER_SIZE;
use cloudflt_proto::msg::{
    GetSyncRootInfo, ListSyncRoots, REPLY_HEADER_SIZE, ROOT_INFO_CONNECTED, RegisterSyncRoot,
    Reply, SyncRootInfo as WireInfo, SyncRootList, UnregisterSyncRoot,
};
use cloudflt_proto::port::PORT_NAME;
use cloudflt_proto::registration::Registration;
pub use cloudflt_proto::registration::{
    HardLinkPolicy, HydrationModifiers, MAX_SYNC_ROOT_IDENTITY_LEN, ManagementPolicy,
    RegisterFlags, RootFlags,
};
use cloudflt_proto::{EncodeError, HydrationPolicy, InSyncPolicy, PopulationPolicy, Utf16};
use md5::{Digest, Md5};

use crate::{Error, SyncRoot, config, sys};

/// What [`SyncRoot::register`] records for a sync root: who serves it and its policies.
/// Built with [`SyncRootRegistration::new`] and the builder methods; the defaults are
/// PROGRESSIVE hydration without modifiers, FULL population, no in-sync tracking beyond
/// data, hard links refused, and only the provider managing placeholders.
///
/// ```
/// use cloudflt::registration::{HydrationModifiers, SyncRootRegistration};
/// let r = SyncRootRegistration::new(r"C:\Cloud", "Mirror", "2.1")
///     .modifiers(HydrationModifiers::VALIDATION_REQUIRED);
/// assert_eq!(r.provider_id_value(), cloudflt::registration::provider_id_from_name("Mirror"));
/// ```
#[derive(Debug, Clone)]
pub struct SyncRootRegistration {
    path: PathBuf,
    provider_name: String,
    provider_version: String,
    provider_id: Option<[u8; 16]>,
    sync_root_identity: Vec<u8>,
    root_file_identity: Vec<u8>,
    hydration: HydrationPolicy,
    modifiers: HydrationModifiers,
    population: PopulationPolicy,
    in_sync: InSyncPolicy,
    hard_links: HardLinkPolicy,
    management: ManagementPolicy,
}

impl SyncRootRegistration {
    /// A registration of the sync root at `path` (a DOS path or an NT path starting with
    /// `\Device\`) for `provider_name` at `provider_version` (each at most 255 UTF-16
    /// units; the name must not be empty).
    pub fn new(
        path: impl Into<PathBuf>,
        provider_name: impl Into<String>,
        provider_version: impl Into<String>,
    ) -> Self {
        Self {
            path: path.into(),
            provider_name: provider_name.into(),
            provider_version: provider_version.into(),
            provider_id: None,
            sync_root_identity: Vec::new(),
            root_file_identity: Vec::new(),
            hydration: HydrationPolicy::Progressive,
            modifiers: HydrationModifiers::NONE,
            population: PopulationPolicy::Full,
            in_sync: InSyncPolicy::NONE,
            hard_links: HardLinkPolicy::NONE,
            management: ManagementPolicy::DEFAULT,
        }
    }

    /// The provider's GUID (Windows byte order); without it, the one
    /// [`provider_id_from_name`] derives.
    #[must_use]
    pub fn provider_id(mut self, id: [u8; 16]) -> Self {
        self.provider_id = Some(id);
        self
    }

    /// The sync-root identity returned to the provider in every request (≤ 64 KiB).
    #[must_use]
    pub fn sync_root_identity(mut self, identity: Vec<u8>) -> Self {
        self.sync_root_identity = identity;
        self
    }

    /// The root directory's file identity, returned in requests about the root (≤ 4 KiB).
    #[must_use]
    pub fn root_file_identity(mut self, identity: Vec<u8>) -> Self {
        self.root_file_identity = identity;
        self
    }

    /// The hydration primary policy.
    #[must_use]
    pub fn hydration(mut self, policy: HydrationPolicy) -> Self {
        self.hydration = policy;
        self
    }

    /// The hydration modifiers (STREAMING_ALLOWED and VALIDATION_REQUIRED exclude each
    /// other: the driver refuses the pair).
    #[must_use]
    pub fn modifiers(mut self, modifiers: HydrationModifiers) -> Self {
        self.modifiers = modifiers;
        self
    }

    /// The population policy.
    #[must_use]
    pub fn population(mut self, policy: PopulationPolicy) -> Self {
        self.population = policy;
        self
    }

    /// The in-sync policy (see [`SyncRootConfig::in_sync`](crate::SyncRootConfig::in_sync)).
    #[must_use]
    pub fn in_sync(mut self, policy: InSyncPolicy) -> Self {
        self.in_sync = policy;
        self
    }

    /// The hard-link policy.
    #[must_use]
    pub fn hard_links(mut self, policy: HardLinkPolicy) -> Self {
        self.hard_links = policy;
        self
    }

    /// Who besides the provider may manage placeholders.
    #[must_use]
    pub fn management(mut self, policy: ManagementPolicy) -> Self {
        self.management = policy;
        self
    }

    /// The sync root path as given.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The provider id that will be registered.
    pub fn provider_id_value(&self) -> [u8; 16] {
        self.provider_id
            .unwrap_or_else(|| provider_id_from_name(&self.provider_name))
    }

    /// The encoded REGISTER message.
    fn message(&self, request_id: u64, flags: RegisterFlags) -> Result<Vec<u8>, Error> {
        let nt_root = config::nt_root(&self.path)?;
        let name: Vec<u16> = self.provider_name.encode_utf16().collect();
        let version: Vec<u16> = self.provider_version.encode_utf16().collect();
        let root: Vec<u16> = nt_root.encode_utf16().collect();
        let message = RegisterSyncRoot {
            request_id,
            flags,
            registration: Registration {
                provider_name: Utf16::from_units(&name),
                provider_version: Utf16::from_units(&version),
                provider_id: self.provider_id_value(),
                sync_root: Utf16::from_units(&root),
                sync_root_identity: &self.sync_root_identity,
                root_file_identity: &self.root_file_identity,
                hydration: self.hydration,
                modifiers: self.modifiers,
                population: self.population,
                in_sync: self.in_sync,
                hard_links: self.hard_links,
                management: self.management,
                flags: flags.root_flags(),
            },
        };
        encode(message.encoded_len(), |out| message.encode(out))
    }
}

/// A registered root's registration, as [`SyncRoot::info`] reads it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncRootInfo {
    /// The root in NT form (`\Device\HarddiskVolume1\Users\me\Cloud`).
    pub nt_root: String,
    /// The provider's name.
    pub provider_name: String,
    /// The provider's version.
    pub provider_version: String,
    /// The provider's GUID (Windows byte order).
    pub provider_id: [u8; 16],
    /// The sync-root identity.
    pub sync_root_identity: Vec<u8>,
    /// The root directory's file identity.
    pub root_file_identity: Vec<u8>,
    /// The hydration primary policy.
    pub hydration: HydrationPolicy,
    /// The hydration modifiers.
    pub modifiers: HydrationModifiers,
    /// The population policy.
    pub population: PopulationPolicy,
    /// The in-sync policy.
    pub in_sync: InSyncPolicy,
    /// The hard-link policy.
    pub hard_links: HardLinkPolicy,
    /// Who besides the provider may manage placeholders.
    pub management: ManagementPolicy,
    /// The root flags kept with the registration.
    pub flags: RootFlags,
    /// The process of the provider connected to it, if one is.
    pub provider_pid: Option<u32>,
}

impl SyncRoot {
    /// Registers a sync root (cfapi's CfRegisterSyncRoot). With [`RegisterFlags::UPDATE`]
    /// an existing registration is replaced (a connected provider applies the new
    /// policies to opens made from then on); without it a root registered already is
    /// refused ([`Error::Status`] with STATUS_OBJECT_NAME_COLLISION). The driver also
    /// refuses a root inside or around another one ([`Error::InvalidRequest`]), UPDATE of
    /// a root not registered ([`Error::NotACloudSyncRoot`]), a caller without write
    /// access to the root directory ([`Error::AccessDenied`]), and a registration
    /// breaking cfapi's rules (an empty or too long name, identities over their limits,
    /// STREAMING_ALLOWED with VALIDATION_REQUIRED: [`Error::InvalidArgument`] before
    /// anything is sent).
    pub fn register(
        registration: &SyncRootRegistration,
        flags: RegisterFlags,
    ) -> Result<(), Error> {
        let control = Control::connect()?;
        let message = registration.message(control.next_request_id(), flags)?;
        control.request(&message, 0).map(drop)
    }

    /// Unregisters the sync root at `path` (cfapi's CfUnregisterSyncRoot): a provider
    /// connected to it is cut off, its placeholders keep the data they hold and what is
    /// missing stays missing (reads of it fail with [`Error::NotUnderSyncRoot`]). A path
    /// that is not a registered root is [`Error::NotACloudSyncRoot`].
    pub fn unregister(path: impl AsRef<Path>) -> Result<(), Error> {
        let control = Control::connect()?;
        let nt: Vec<u16> = config::nt_root(path.as_ref())?.encode_utf16().collect();
        let message = UnregisterSyncRoot {
            request_id: control.next_request_id(),
            path: Utf16::from_units(&nt),
        };
        let bytes = encode(message.encoded_len(), |out| message.encode(out))?;
        control.request(&bytes, 0).map(drop)
    }

    /// The registration of the sync root `path` is or lies under (cfapi's
    /// CfGetSyncRootInfoByPath); [`Error::NotUnderSyncRoot`] when it is under none.
    pub fn info(path: impl AsRef<Path>) -> Result<SyncRootInfo, Error> {
        let control = Control::connect()?;
        let nt: Vec<u16> = config::nt_path(path.as_ref(), "path")?
            .encode_utf16()
            .collect();
        let message = GetSyncRootInfo {
            request_id: control.next_request_id(),
            path: Utf16::from_units(&nt),
        };
        let bytes = encode(message.encoded_len(), |out| message.encode(out))?;
        let payload = control.request(
            &bytes,
            WireInfo::FIXED + cloudflt_proto::registration::MAX_SIZE,
        )?;
        let info = WireInfo::decode(&payload)?;
        let r = info.registration;
        Ok(SyncRootInfo {
            nt_root: r.sync_root.chars_lossy().collect(),
            provider_name: r.provider_name.chars_lossy().collect(),
            provider_version: r.provider_version.chars_lossy().collect(),
            provider_id: r.provider_id,
            sync_root_identity: r.sync_root_identity.to_vec(),
            root_file_identity: r.root_file_identity.to_vec(),
            hydration: r.hydration,
            modifiers: r.modifiers,
            population: r.population,
            in_sync: r.in_sync,
            hard_links: r.hard_links,
            management: r.management,
            flags: r.flags,
            provider_pid: (info.flags & ROOT_INFO_CONNECTED != 0).then_some(info.provider_pid),
        })
    }

    /// The registered sync roots, in NT form.
    pub fn list() -> Result<Vec<String>, Error> {
        let control = Control::connect()?;
        let message = ListSyncRoots {
            request_id: control.next_request_id(),
        };
        let bytes = encode(message.encoded_len(), |out| message.encode(out))?;
        let payload = control.request(&bytes, 8 + 64 * (2 + 1024))?;
        let list = SyncRootList::decode(&payload)?;
        Ok(list.iter().map(|p| p.chars_lossy().collect()).collect())
    }
}

/// A management connection to the driver for one exchange of requests (registrations
/// and image rules share it; the driver decides per message what the caller may do).
#[derive(Debug)]
pub(crate) struct Control {
    port: sys::Handle,
    next_id: AtomicU64,
}

impl Control {
    /// Connects as a management client.
    pub(crate) fn connect() -> Result<Self, Error> {
        let mut context = [0u8; HEADER_SIZE];
        PortContext::Management.encode(&mut context)?;
        Ok(Self {
            port: sys::connect_port(PORT_NAME, &context)?,
            next_id: AtomicU64::new(1),
        })
    }

    pub(crate) fn next_request_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Sends an encoded management message and waits for the driver's [`Reply`]; its
    /// payload (at most `payload_capacity` bytes), or the failure it carries.
    pub(crate) fn request(
        &self,
        message: &[u8],
        payload_capacity: usize,
    ) -> Result<Vec<u8>, Error> {
        let mut out = vec![0u8; REPLY_HEADER_SIZE + payload_capacity];
        let returned = sys::send(&self.port, message, &mut out)?;
        let reply = Reply::decode(out.get(..returned).unwrap_or_default())?;
        if reply.status < 0 {
            return Err(Error::from_status(reply.status));
        }
        Ok(reply.payload.to_vec())
    }
}

/// A message encoded into a buffer of its length.
pub(crate) fn encode(
    len: usize,
    encode: impl FnOnce(&mut [u8]) -> Result<usize, EncodeError>,
) -> Result<Vec<u8>, Error> {
    let mut out = vec![0u8; len];
    let written = encode(&mut out)?;
    out.truncate(written);
    Ok(out)
}

/// The provider id cfapi's documentation promises when a registration names none: a GUID
/// made from the MD5 hash of the provider name.
///
/// The documentation does not say which bytes are hashed nor how the hash becomes a GUID.
/// Chosen here: the name's UTF-16LE bytes (how Windows holds the string), made a
/// name-based UUID as RFC 4122 does for MD5 (version 3 in the high nibble of byte 6, the
/// variant bits 10 in byte 8), returned in Windows' GUID byte order (Data1, Data2 and
/// Data3 little-endian). The same name always gives the same id; the id is only ever
/// compared, never parsed.
///
/// ```
/// let id = cloudflt::registration::provider_id_from_name("Mirror");
/// assert_eq!(id, cloudflt::registration::provider_id_from_name("Mirror"));
/// assert_ne!(id, cloudflt::registration::provider_id_from_name("mirror"));
/// ```
pub fn provider_id_from_name(name: &str) -> [u8; 16] {
    let mut hasher = Md5::new();
    for unit in name.encode_utf16() {
        hasher.update(unit.to_le_bytes());
    }
    let mut uuid: [u8; 16] = hasher.finalize().into();
    uuid[6] = (uuid[6] & 0x0f) | 0x30;
    uuid[8] = (uuid[8] & 0x3f) | 0x80;
    // RFC 4122 bytes are big-endian; a GUID stores its first three fields little-endian.
    let mut guid = uuid;
    guid[..4].reverse();
    guid[4..6].reverse();
    guid[6..8].reverse();
    guid
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_of_a_name_is_its_md5_as_a_version_3_guid() {
        // Computed independently (Python: hashlib.md5 of the UTF-16LE name, then
        // uuid.UUID(bytes=…) with the version and variant set, .bytes_le):
        // 05f695ea-1a75-39c5-add5-29df149821c5.
        assert_eq!(
            provider_id_from_name("Mirror"),
            [
                234, 149, 246, 5, 117, 26, 197, 57, 173, 213, 41, 223, 20, 152, 33, 197
            ]
        );
    }
}
