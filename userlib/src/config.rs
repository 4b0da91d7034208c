//! What a provider says about itself when it connects: its sync root, name, version,
//! policies and timeout, and the path conversions between the DOS paths providers use
//! and the NT paths and root-relative paths the driver speaks.

use std::path::{Path, PathBuf};
use std::time::Duration;

use cloudflt_proto::connect::{ConnectFlags, DEFAULT_TIMEOUT_MS, MAX_NAME_UNITS, MAX_TIMEOUT_MS};
use cloudflt_proto::msg::NotifySet;
use cloudflt_proto::registration::{HardLinkPolicy, HydrationModifiers, ManagementPolicy};
use cloudflt_proto::{ConnectionContext, HydrationPolicy, InSyncPolicy, PopulationPolicy, Utf16};

use crate::{Error, sys};

/// How a provider connects a sync root: built with [`SyncRootConfig::new`], adjusted
/// with the builder methods, passed to [`SyncRoot::connect`](crate::SyncRoot::connect).
///
/// ```
/// use std::time::Duration;
/// use cloudflt::{HydrationPolicy, SyncRootConfig};
///
/// let config = SyncRootConfig::new(r"C:\Users\me\Cloud", "Mirror", "1.0")
///     .hydration(HydrationPolicy::Full)
///     .timeout(Duration::from_secs(30));
/// assert_eq!(config.hydration_policy(), HydrationPolicy::Full);
/// ```
#[derive(Debug, Clone)]
pub struct SyncRootConfig {
    path: PathBuf,
    provider_name: String,
    provider_version: String,
    hydration: HydrationPolicy,
    population: PopulationPolicy,
    in_sync: InSyncPolicy,
    timeout: Duration,
    provider_id: Option<[u8; 16]>,
    connect_flags: ConnectFlags,
    modifiers: HydrationModifiers,
    management: ManagementPolicy,
    hard_links: HardLinkPolicy,
}

impl SyncRootConfig {
    /// A sync root at `path` (a DOS path such as `C:\Users\me\Cloud`, or an NT path
    /// starting with `\Device\`) served by `provider_name` at `provider_version`, with
    /// PROGRESSIVE hydration, FULL population and the 60 s timeout cfapi uses.
    ///
    /// ```
    /// let config = cloudflt::SyncRootConfig::new(r"D:\Sync", "Example", "0.1");
    /// assert_eq!(config.timeout_value(), std::time::Duration::from_secs(60));
    /// ```
    pub fn new(
        path: impl Into<PathBuf>,
        provider_name: impl Into<String>,
        provider_version: impl Into<String>,
    ) -> Self {
        Self {
            path: path.into(),
            provider_name: provider_name.into(),
            provider_version: provider_version.into(),
            hydration: HydrationPolicy::Progressive,
            population: PopulationPolicy::Full,
            in_sync: InSyncPolicy::NONE,
            timeout: Duration::from_millis(DEFAULT_TIMEOUT_MS.into()),
            provider_id: None,
            connect_flags: ConnectFlags::NONE,
            modifiers: HydrationModifiers::NONE,
            management: ManagementPolicy::DEFAULT,
            hard_links: HardLinkPolicy::NONE,
        }
    }

    /// Sets the hydration policy: how much of a placeholder the driver fetches before a
    /// read completes. Applications may ask for more, never for less.
    ///
    /// ```
    /// use cloudflt::{HydrationPolicy, SyncRootConfig};
    /// let config = SyncRootConfig::new(r"C:\Cloud", "P", "1").hydration(HydrationPolicy::Partial);
    /// assert_eq!(config.hydration_policy(), HydrationPolicy::Partial);
    /// ```
    #[must_use]
    pub fn hydration(mut self, policy: HydrationPolicy) -> Self {
        self.hydration = policy;
        self
    }

    /// Sets the population policy.
    ///
    /// ```
    /// use cloudflt::{PopulationPolicy, SyncRootConfig};
    /// let config =
    ///     SyncRootConfig::new(r"C:\Cloud", "P", "1").population(PopulationPolicy::AlwaysFull);
    /// assert_eq!(config.population_policy(), PopulationPolicy::AlwaysFull);
    /// ```
    #[must_use]
    pub fn population(mut self, policy: PopulationPolicy) -> Self {
        self.population = policy;
        self
    }

    /// Sets the in-sync policy: which attribute and time changes, besides data and size
    /// changes (which always do), take a placeholder out of sync — cfapi's
    /// CF_INSYNC_POLICY. With [`InSyncPolicy::PRESERVE_INSYNC_FOR_SYNC_ENGINE`], the
    /// provider's own process changes attributes and times without clearing in-sync.
    ///
    /// ```
    /// use cloudflt::{InSyncPolicy, SyncRootConfig};
    /// let config = SyncRootConfig::new(r"C:\Cloud", "P", "1")
    ///     .in_sync(InSyncPolicy::TRACK_FILE_LAST_WRITE_TIME);
    /// assert_eq!(config.in_sync_policy(), InSyncPolicy::TRACK_FILE_LAST_WRITE_TIME);
    /// ```
    #[must_use]
    pub fn in_sync(mut self, policy: InSyncPolicy) -> Self {
        self.in_sync = policy;
        self
    }

    /// Sets how long the driver waits for the provider to answer a request before failing
    /// the waiting I/O with STATUS_CLOUD_FILE_REQUEST_TIMEOUT (at most one hour).
    ///
    /// ```
    /// use std::time::Duration;
    /// let config = cloudflt::SyncRootConfig::new(r"C:\Cloud", "P", "1")
    ///     .timeout(Duration::from_secs(5));
    /// assert_eq!(config.timeout_value(), Duration::from_secs(5));
    /// ```
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the provider's GUID (Windows byte order), recorded when connecting registers
    /// the root; without it, the one
    /// [`provider_id_from_name`](crate::registration::provider_id_from_name) derives.
    #[must_use]
    pub fn provider_id(mut self, id: [u8; 16]) -> Self {
        self.provider_id = Some(id);
        self
    }

    /// Sets the connect flags (cfapi's CF_CONNECT_FLAGS): process information or full
    /// paths in every request, or no implicit hydration by the provider's own process.
    ///
    /// ```
    /// use cloudflt::{ConnectFlags, SyncRootConfig};
    /// let config = SyncRootConfig::new(r"C:\Cloud", "P", "1")
    ///     .connect_flags(ConnectFlags::REQUIRE_PROCESS_INFO);
    /// assert!(config.connect_flags_value().contains(ConnectFlags::REQUIRE_PROCESS_INFO));
    /// ```
    #[must_use]
    pub fn connect_flags(mut self, flags: ConnectFlags) -> Self {
        self.connect_flags = flags;
        self
    }

    /// The connect flags.
    pub fn connect_flags_value(&self) -> ConnectFlags {
        self.connect_flags
    }

    /// The sync root path as given.
    ///
    /// ```
    /// let config = cloudflt::SyncRootConfig::new(r"C:\Cloud", "P", "1");
    /// assert_eq!(config.path(), std::path::Path::new(r"C:\Cloud"));
    /// ```
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The hydration policy.
    ///
    /// ```
    /// let config = cloudflt::SyncRootConfig::new(r"C:\Cloud", "P", "1");
    /// assert_eq!(config.hydration_policy(), cloudflt::HydrationPolicy::Progressive);
    /// ```
    pub fn hydration_policy(&self) -> HydrationPolicy {
        self.hydration
    }

    /// The population policy.
    ///
    /// ```
    /// let config = cloudflt::SyncRootConfig::new(r"C:\Cloud", "P", "1");
    /// assert_eq!(config.population_policy(), cloudflt::PopulationPolicy::Full);
    /// ```
    pub fn population_policy(&self) -> PopulationPolicy {
        self.population
    }

    /// The in-sync policy.
    ///
    /// ```
    /// let config = cloudflt::SyncRootConfig::new(r"C:\Cloud", "P", "1");
    /// assert_eq!(config.in_sync_policy(), cloudflt::InSyncPolicy::NONE);
    /// ```
    pub fn in_sync_policy(&self) -> InSyncPolicy {
        self.in_sync
    }

    /// The request timeout.
    ///
    /// ```
    /// let config = cloudflt::SyncRootConfig::new(r"C:\Cloud", "P", "1");
    /// assert_eq!(config.timeout_value().as_secs(), 60);
    /// ```
    pub fn timeout_value(&self) -> Duration {
        self.timeout
    }

    /// The registration connecting makes for a root not registered yet: this
    /// configuration's path, provider and policies, everything else at its default.
    ///
    /// ```
    /// use cloudflt::{HydrationPolicy, SyncRootConfig};
    /// let config = SyncRootConfig::new(r"C:\Cloud", "P", "1").hydration(HydrationPolicy::Full);
    /// assert_eq!(config.registration().path(), std::path::Path::new(r"C:\Cloud"));
    /// ```
    pub fn registration(&self) -> crate::registration::SyncRootRegistration {
        crate::registration::SyncRootRegistration::new(
            self.path.clone(),
            self.provider_name.clone(),
            self.provider_version.clone(),
        )
        .hydration(self.hydration)
        .population(self.population)
        .in_sync(self.in_sync)
        .modifiers(self.modifiers)
        .provider_id(
            self.provider_id
                .unwrap_or_else(|| crate::registration::provider_id_from_name(&self.provider_name)),
        )
    }

    /// Sets the hydration policy modifiers, recorded when connecting registers the root
    /// (a root registered with [`SyncRoot::register`](crate::SyncRoot::register) keeps
    /// its own). STREAMING_ALLOWED with VALIDATION_REQUIRED is refused at connect
    /// ([`Error::InvalidArgument`]).
    ///
    /// ```
    /// use cloudflt::SyncRootConfig;
    /// use cloudflt::registration::HydrationModifiers;
    /// let config = SyncRootConfig::new(r"C:\Cloud", "P", "1")
    ///     .modifiers(HydrationModifiers::VALIDATION_REQUIRED);
    /// assert_eq!(config.modifiers_value(), HydrationModifiers::VALIDATION_REQUIRED);
    /// ```
    pub fn modifiers(mut self, modifiers: HydrationModifiers) -> Self {
        self.modifiers = modifiers;
        self
    }

    /// The hydration policy modifiers.
    pub fn modifiers_value(&self) -> HydrationModifiers {
        self.modifiers
    }

    /// Sets who besides the provider may manage the root's placeholders, recorded when
    /// connecting registers the root (a root registered with
    /// [`SyncRoot::register`](crate::SyncRoot::register) keeps its own).
    ///
    /// ```
    /// use cloudflt::SyncRootConfig;
    /// use cloudflt::registration::ManagementPolicy;
    /// let config = SyncRootConfig::new(r"C:\Cloud", "P", "1")
    ///     .management(ManagementPolicy::UPDATE_UNRESTRICTED);
    /// assert_eq!(config.management_value(), ManagementPolicy::UPDATE_UNRESTRICTED);
    /// ```
    pub fn management(mut self, policy: ManagementPolicy) -> Self {
        self.management = policy;
        self
    }

    /// Who besides the provider may manage placeholders.
    pub fn management_value(&self) -> ManagementPolicy {
        self.management
    }

    /// Sets the hard-link policy, recorded when connecting registers the root.
    ///
    /// ```
    /// use cloudflt::SyncRootConfig;
    /// use cloudflt::registration::HardLinkPolicy;
    /// let config = SyncRootConfig::new(r"C:\Cloud", "P", "1").hard_links(HardLinkPolicy::ALLOWED);
    /// assert_eq!(config.hard_links_value(), HardLinkPolicy::ALLOWED);
    /// ```
    pub fn hard_links(mut self, policy: HardLinkPolicy) -> Self {
        self.hard_links = policy;
        self
    }

    /// The hard-link policy.
    pub fn hard_links_value(&self) -> HardLinkPolicy {
        self.hard_links
    }

    /// The connection context for this configuration with the sync root at `nt_root`,
    /// asking for `notifications`.
    pub(crate) fn context(
        &self,
        nt_root: &str,
        notifications: NotifySet,
    ) -> Result<Vec<u8>, Error> {
        let name: Vec<u16> = self.provider_name.encode_utf16().collect();
        let version: Vec<u16> = self.provider_version.encode_utf16().collect();
        let root: Vec<u16> = nt_root.encode_utf16().collect();
        if name.is_empty() || name.len() > MAX_NAME_UNITS {
            return Err(Error::InvalidArgument(format!(
                "provider name must be 1 to {MAX_NAME_UNITS} UTF-16 units"
            )));
        }
        if version.len() > MAX_NAME_UNITS {
            return Err(Error::InvalidArgument(format!(
                "provider version must be at most {MAX_NAME_UNITS} UTF-16 units"
            )));
        }
        let timeout_ms = u32::try_from(self.timeout.as_millis())
            .ok()
            .filter(|ms| (1..=MAX_TIMEOUT_MS).contains(ms))
            .ok_or_else(|| {
                Error::InvalidArgument(format!("timeout must be from 1 ms to {MAX_TIMEOUT_MS} ms"))
            })?;
        let context = ConnectionContext {
            provider_name: Utf16::from_units(&name),
            provider_version: Utf16::from_units(&version),
            sync_root: Utf16::from_units(&root),
            hydration: self.hydration,
            population: self.population,
            in_sync: self.in_sync,
            timeout_ms,
            provider_id: self
                .provider_id
                .unwrap_or_else(|| crate::registration::provider_id_from_name(&self.provider_name)),
            connect_flags: self.connect_flags,
            modifiers: self.modifiers,
            management: self.management,
            hard_links: self.hard_links,
            notifications,
        };
        if self.modifiers.contains(
            HydrationModifiers::STREAMING_ALLOWED.union(HydrationModifiers::VALIDATION_REQUIRED),
        ) {
            return Err(Error::InvalidArgument(
                "STREAMING_ALLOWED and VALIDATION_REQUIRED exclude each other".into(),
            ));
        }
        let mut out = vec![0u8; context.encoded_len()];
        let written = context.encode(&mut out)?;
        out.truncate(written);
        Ok(out)
    }
}

/// The NT form of a sync root path: `C:\Users\me\Cloud` becomes
/// `\Device\HarddiskVolume3\Users\me\Cloud` through QueryDosDeviceW; an NT path
/// (`\Device\...`) is kept. `\\?\C:\...` is accepted; UNC paths, relative paths and `.` or
/// `..` components are refused, since the driver matches roots by their exact text.
pub(crate) fn nt_root(path: &Path) -> Result<String, Error> {
    nt_path(path, "sync root")
}

/// The NT form of an absolute path, as [`nt_root`] describes; `what` names the path in
/// errors ("sync root", "image").
pub(crate) fn nt_path(path: &Path, what: &str) -> Result<String, Error> {
    let text = path
        .to_str()
        .ok_or_else(|| Error::InvalidArgument(format!("{what} path is not valid Unicode")))?
        .replace('/', "\\");
    let text = text.strip_prefix(r"\\?\").unwrap_or(&text);
    let not_absolute = || {
        Error::InvalidArgument(format!(
            "{what} {text:?} is not an absolute path on a drive letter"
        ))
    };
    // The device part: an NT volume name as given, or a drive letter to look up.
    let (volume, letter, rest) = if let Some(rest) = text.strip_prefix(r"\Device\") {
        let (volume, rest) = rest.split_once('\\').unwrap_or((rest, ""));
        (volume, None, rest)
    } else {
        let mut chars = text.chars();
        let (Some(letter), Some(':')) = (chars.next(), chars.next()) else {
            return Err(not_absolute());
        };
        let rest = chars.as_str();
        if !letter.is_ascii_alphabetic() || !(rest.is_empty() || rest.starts_with('\\')) {
            return Err(not_absolute());
        }
        ("", Some(letter), rest)
    };
    let mut tail = String::new();
    for component in rest.split('\\').filter(|c| !c.is_empty()) {
        if component == "." || component == ".." {
            return Err(Error::InvalidArgument(format!(
                "{what} {text:?} has a relative component"
            )));
        }
        tail.push('\\');
        tail.push_str(component);
    }
    // Only a well-formed path costs a system call.
    let device = match letter {
        Some(letter) => sys::query_dos_device(&format!("{letter}:"))?,
        None => format!(r"\Device\{volume}"),
    };
    Ok(device + &tail)
}

/// A path relative to the sync root as the driver wants it: `\`-separated, no leading
/// separator, no `.` or `..` components, not empty unless `allow_root`.
pub(crate) fn relative_path(path: &str, allow_root: bool) -> Result<Vec<u16>, Error> {
    let mut out = String::with_capacity(path.len());
    for component in path.split(['\\', '/']).filter(|c| !c.is_empty()) {
        if component == "." || component == ".." || component.contains(':') {
            return Err(Error::InvalidArgument(format!(
                "{path:?} is not a plain path relative to the sync root"
            )));
        }
        if !out.is_empty() {
            out.push('\\');
        }
        out.push_str(component);
    }
    if out.is_empty() && !allow_root {
        return Err(Error::InvalidArgument("empty path".into()));
    }
    Ok(out.encode_utf16().collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nt_paths_are_kept_and_normalised() {
        assert_eq!(
            nt_root(Path::new(r"\Device\HarddiskVolume2\Sync\")).unwrap(),
            r"\Device\HarddiskVolume2\Sync"
        );
        assert_eq!(
            nt_root(Path::new(r"\\?\\Device\HarddiskVolume2\a//b")).unwrap(),
            r"\Device\HarddiskVolume2\a\b"
        );
    }

    #[test]
    fn relative_and_unc_roots_are_refused_before_any_call() {
        for bad in [
            r"Cloud",
            r"C:Cloud",
            r"\\server\share",
            r"C:\a\..\b",
            "1:\\x",
        ] {
            assert!(
                matches!(nt_root(Path::new(bad)), Err(Error::InvalidArgument(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn relative_paths_use_backslashes_and_refuse_escapes() {
        let wire = relative_path("/docs/a.txt", false).unwrap();
        assert_eq!(String::from_utf16(&wire).unwrap(), r"docs\a.txt");
        assert!(relative_path(r"..\x", false).is_err());
        assert!(relative_path(r"C:\x", false).is_err());
        assert!(relative_path("", false).is_err());
        assert!(relative_path("", true).unwrap().is_empty());
    }

    #[test]
    fn a_timeout_beyond_the_protocol_limit_is_refused() {
        let config = SyncRootConfig::new(r"C:\Cloud", "P", "1").timeout(Duration::from_secs(7200));
        assert!(matches!(
            config.context(r"\Device\HarddiskVolume1\Cloud", NotifySet::NONE),
            Err(Error::InvalidArgument(_))
        ));
    }
}
