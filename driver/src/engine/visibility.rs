//! Who sees cloudflt's placeholders as what they are (exposed) and who sees ordinary files
//! (disguised).
//!
//! The `nt` layer gathers the facts at create time, in the requestor's context — the only
//! place the thread's and process's placeholder compatibility modes can be read — asks
//! [`decide`] once, and caches the answer in the stream-handle context. Every later
//! directory or query buffer of that open is rewritten (see [`super::rewrite`]) or not
//! according to that cached answer.
//!
//! # Precedence
//!
//! The first rule with an opinion wins:
//!
//! 1. The connected provider of the file's sync root: [`Visibility::Expose`]. The provider
//!    manages its placeholders and the driver never intercepts its I/O anyway, so a
//!    compatibility mode it set has nothing to act on.
//! 2. The caller's own placeholder compatibility mode, the thread's when the thread set
//!    one, else the process's ([`effective_mode`]): EXPOSE exposes; DISGUISE and
//!    DISGUISE_FULL disguise, also for images under `\SystemRoot\`. A program that says
//!    what it can handle knows better than any default.
//! 3. An administrator's image rule ([`ImageRules`]), the most specific match: for programs
//!    that say nothing, the way Windows keeps per-application compatibility defaults.
//! 4. Windows itself: an image under `\SystemRoot\` ([`image_under_system_root`]) or the
//!    System process ([`is_system_process`]) is exposed, as cldflt does for images under
//!    %SystemRoot%.
//! 5. Everyone else: [`Visibility::Disguise`]. Many programs take any reparse point for a
//!    symbolic link and fail; an ordinary file never surprises them.

use super::syncroot::{self, MAX_PATH};

/// What an open sees of cloudflt's placeholders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Visibility {
    /// The reparse point, its tag and the attributes that go with it are reported as
    /// the file system has them.
    Expose,
    /// Placeholders look like ordinary files (see [`super::rewrite`]).
    Disguise,
}

/// `PHCM_APPLICATION_DEFAULT`: no preference.
pub const PHCM_APPLICATION_DEFAULT: i8 = 0;
/// `PHCM_DISGUISE_PLACEHOLDER`.
pub const PHCM_DISGUISE_PLACEHOLDER: i8 = 1;
/// `PHCM_EXPOSE_PLACEHOLDERS`.
pub const PHCM_EXPOSE_PLACEHOLDERS: i8 = 2;
/// `PHCM_DISGUISE_FULL_PLACEHOLDERS` (newer ntifs.h; PHCM_MAX became 3 with it).
pub const PHCM_DISGUISE_FULL_PLACEHOLDERS: i8 = 3;

/// A placeholder compatibility mode as RtlQuery{Process,Thread}PlaceholderCompatibilityMode
/// report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompatMode {
    /// `PHCM_APPLICATION_DEFAULT`: the caller expressed no preference.
    ApplicationDefault,
    /// `PHCM_DISGUISE_PLACEHOLDER`: the caller wants ordinary files.
    Disguise,
    /// `PHCM_EXPOSE_PLACEHOLDERS`: the caller handles placeholders.
    Expose,
    /// `PHCM_DISGUISE_FULL_PLACEHOLDERS`. The SDK documents the value but not its meaning.
    /// Both readings of the name ("disguise completely", "disguise fully hydrated
    /// placeholders") mean the caller asked not to be shown reparse points, so it is
    /// treated as [`CompatMode::Disguise`]: hiding one from a program that asked for less
    /// hiding costs it nothing it relied on, while showing one to a program that asked
    /// for more can break it.
    DisguiseFull,
}

impl CompatMode {
    /// The mode a raw `PHCM_*` value names; `None` for the negative `PHCM_ERROR_*`
    /// answers (no TEB, no PEB: a system thread) and values no header defines.
    pub const fn from_raw(raw: i8) -> Option<Self> {
        match raw {
            PHCM_APPLICATION_DEFAULT => Some(Self::ApplicationDefault),
            PHCM_DISGUISE_PLACEHOLDER => Some(Self::Disguise),
            PHCM_EXPOSE_PLACEHOLDERS => Some(Self::Expose),
            PHCM_DISGUISE_FULL_PLACEHOLDERS => Some(Self::DisguiseFull),
            _ => None,
        }
    }

    /// The raw `PHCM_*` value.
    pub const fn raw(self) -> i8 {
        match self {
            Self::ApplicationDefault => PHCM_APPLICATION_DEFAULT,
            Self::Disguise => PHCM_DISGUISE_PLACEHOLDER,
            Self::Expose => PHCM_EXPOSE_PLACEHOLDERS,
            Self::DisguiseFull => PHCM_DISGUISE_FULL_PLACEHOLDERS,
        }
    }

    /// What the mode asks for; `None` when it leaves the choice to the defaults.
    pub const fn visibility(self) -> Option<Visibility> {
        match self {
            Self::ApplicationDefault => None,
            Self::Expose => Some(Visibility::Expose),
            Self::Disguise | Self::DisguiseFull => Some(Visibility::Disguise),
        }
    }
}

/// The mode in force for a thread: the thread's own when it set one (anything but
/// APPLICATION_DEFAULT or an error), otherwise its process's. Errors and unknown values
/// count as APPLICATION_DEFAULT.
pub fn effective_mode(process: i8, thread: i8) -> CompatMode {
    match CompatMode::from_raw(thread) {
        Some(CompatMode::ApplicationDefault) | None => {
            CompatMode::from_raw(process).unwrap_or(CompatMode::ApplicationDefault)
        }
        Some(set) => set,
    }
}

/// Whether the requestor is the connected provider of the file's sync root (`provider`
/// is `None` while no provider is connected).
pub fn is_provider(requestor_pid: u32, provider: Option<u32>) -> bool {
    provider == Some(requestor_pid)
}

/// pid of the System process: kernel threads and system worker threads run in it.
pub const SYSTEM_PID: u32 = 4;

/// Whether the requestor is the System process. Its I/O comes from kernel components
/// (drivers, the cache manager, system worker threads), whose images live under
/// `\SystemRoot\` but which have no image path to check.
pub fn is_system_process(requestor_pid: u32) -> bool {
    requestor_pid == SYSTEM_PID
}

const SEPARATOR: u16 = b'\\' as u16;
const DOT: u16 = b'.' as u16;

/// Whether `path` is an absolute NT path in normal form: starts with a separator, no
/// empty, `.` or `..` component, no trailing separator.
fn normalized(path: &[u16]) -> bool {
    let Some(rest) = path.strip_prefix(&[SEPARATOR]) else {
        return false;
    };
    rest.split(|u| *u == SEPARATOR)
        .all(|c| !c.is_empty() && c != [DOT] && c != [DOT, DOT])
}

/// Whether `image` lies under `system_root`: both NT paths in device form as the `nt`
/// layer resolved them (`\Device\HarddiskVolume3\Windows\System32\svchost.exe` under
/// `\Device\HarddiskVolume3\Windows`, with the `\SystemRoot` symbolic link followed),
/// compared case-insensitively, component by component.
///
/// A path that is not in normal form never matches: `\...\Windows\..\Users\x.exe` must not
/// pass for a Windows image. One trailing separator on `system_root` is accepted. The
/// root itself is a directory, not an image under it.
pub fn image_under_system_root(image: &[u16], system_root: &[u16]) -> bool {
    let root = system_root
        .strip_suffix(&[SEPARATOR])
        .unwrap_or(system_root);
    if !normalized(root) || !normalized(image) {
        return false;
    }
    syncroot::under(root, image).is_some_and(|rest| !rest.is_empty())
}

/// Longest image rule pattern, in UTF-16 units.
pub const MAX_RULE: usize = MAX_PATH;

/// What an image rule matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleKind {
    /// A pattern starting with `\`: an absolute NT path, matching the image itself or,
    /// when it names a directory, every image under it.
    Path,
    /// A pattern without `\`: a file name, matching an image of that name anywhere.
    Name,
}

/// One administrator rule: images matching `pattern` get `visibility`.
#[derive(Debug, Clone, Copy)]
pub struct ImageRule {
    pattern: [u16; MAX_RULE],
    len: usize,
    kind: RuleKind,
    /// What matching images see.
    pub visibility: Visibility,
}

impl ImageRule {
    /// The pattern as it was set.
    pub fn pattern(&self) -> &[u16] {
        self.pattern.get(..self.len).unwrap_or(&[])
    }

    /// Whether it is a path or a name rule.
    pub fn kind(&self) -> RuleKind {
        self.kind
    }

    /// How specifically the rule matches `image`, higher wins: the exact path, then a
    /// file name, then the longest directory. `None` if it does not match.
    fn specificity(&self, image: &[u16]) -> Option<(u8, usize)> {
        match self.kind {
            RuleKind::Path => syncroot::under(self.pattern(), image).map(|rest| {
                if rest.is_empty() {
                    (2, self.len)
                } else {
                    (0, self.len)
                }
            }),
            RuleKind::Name => {
                let name = image.rsplit(|u| *u == SEPARATOR).next().unwrap_or(image);
                // `under` with equal lengths is a case-insensitive comparison.
                (name.len() == self.len && syncroot::under(self.pattern(), name).is_some())
                    .then_some((1, 0))
            }
        }
    }
}

/// Why a rule was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleError {
    /// Empty, too long, a path not in normal form (relative components, empty
    /// components, trailing separator), or a name that is `.` or `..`.
    InvalidPattern,
    /// The table is full.
    Full,
}

/// The administrator's image rules, `N` at most. The `nt` layer fills it from the
/// registry or a port message and holds it under its lock; lookups are pure.
#[derive(Debug)]
pub struct ImageRules<const N: usize> {
    rules: [Option<ImageRule>; N],
}

impl<const N: usize> Default for ImageRules<N> {
    fn default() -> Self {
        Self::new()
    }
}

fn same_pattern(a: &[u16], b: &[u16]) -> bool {
    a.len() == b.len() && (a.is_empty() || syncroot::under(a, b).is_some())
}

impl<const N: usize> ImageRules<N> {
    /// No rules.
    pub const fn new() -> Self {
        Self { rules: [None; N] }
    }

    /// Sets the rule for `pattern` (a path starting with `\`, or a bare file name),
    /// replacing an existing rule for the same pattern (compared case-insensitively).
    pub fn set(&mut self, pattern: &[u16], visibility: Visibility) -> Result<(), RuleError> {
        let kind = if pattern.first() == Some(&SEPARATOR) {
            RuleKind::Path
        } else {
            RuleKind::Name
        };
        let valid = !pattern.is_empty()
            && pattern.len() <= MAX_RULE
            && match kind {
                RuleKind::Path => normalized(pattern),
                RuleKind::Name => {
                    !pattern.contains(&SEPARATOR) && pattern != [DOT] && pattern != [DOT, DOT]
                }
            };
        if !valid {
            return Err(RuleError::InvalidPattern);
        }
        if let Some(existing) = self
            .rules
            .iter_mut()
            .flatten()
            .find(|r| same_pattern(r.pattern(), pattern))
        {
            existing.visibility = visibility;
            return Ok(());
        }
        let slot = self
            .rules
            .iter_mut()
            .find(|r| r.is_none())
            .ok_or(RuleError::Full)?;
        let mut stored = [0u16; MAX_RULE];
        for (d, s) in stored.iter_mut().zip(pattern) {
            *d = *s;
        }
        *slot = Some(ImageRule {
            pattern: stored,
            len: pattern.len(),
            kind,
            visibility,
        });
        Ok(())
    }

    /// Removes the rule for `pattern`; true if there was one.
    pub fn remove(&mut self, pattern: &[u16]) -> bool {
        let mut found = false;
        for slot in &mut self.rules {
            if slot.is_some_and(|r| same_pattern(r.pattern(), pattern)) {
                *slot = None;
                found = true;
            }
        }
        found
    }

    /// Removes every rule.
    pub fn clear(&mut self) {
        self.rules = [None; N];
    }

    /// The rules set, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &ImageRule> {
        self.rules.iter().flatten()
    }

    /// What the most specific rule matching `image` (an NT path in normal form) says:
    /// a rule for the exact path, else one for its file name, else the one for its
    /// deepest directory. `None` when no rule matches or `image` is not in normal form.
    pub fn lookup(&self, image: &[u16]) -> Option<Visibility> {
        if !normalized(image) {
            return None;
        }
        self.iter()
            .filter_map(|r| r.specificity(image).map(|s| (s, r.visibility)))
            .max_by_key(|(s, _)| *s)
            .map(|(_, v)| v)
    }
}

/// The facts about the requestor of an open, gathered by the `nt` layer in its context.
#[derive(Debug, Clone, Copy)]
pub struct Requestor<'a> {
    /// Process id (FltGetRequestorProcessId).
    pub pid: u32,
    /// Image path in normalized NT device form (SeLocateProcessImageName, `\SystemRoot`
    /// and volume names resolved); `None` when unknown.
    pub image: Option<&'a [u16]>,
    /// RtlQueryProcessPlaceholderCompatibilityMode (negative: no PEB).
    pub process_mode: i8,
    /// RtlQueryThreadPlaceholderCompatibilityMode (negative: no TEB).
    pub thread_mode: i8,
}

/// Why [`decide`] answered as it did, in precedence order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The connected provider of the sync root.
    Provider,
    /// The thread's or process's compatibility mode asked for this visibility.
    Mode(Visibility),
    /// An administrator's image rule.
    Rule(Visibility),
    /// An image under `\SystemRoot\`, or the System process.
    Windows,
    /// Nothing exposes it.
    Default,
}

impl Reason {
    /// The visibility this reason leads to.
    pub const fn visibility(self) -> Visibility {
        match self {
            Self::Provider | Self::Windows => Visibility::Expose,
            Self::Mode(v) | Self::Rule(v) => v,
            Self::Default => Visibility::Disguise,
        }
    }
}

/// The rule that decides for `who` (see the module's precedence list). `provider` is the
/// pid of the provider connected to the file's sync root, `system_root` the resolved
/// `\SystemRoot` in NT device form.
pub fn explain<const N: usize>(
    who: &Requestor<'_>,
    provider: Option<u32>,
    system_root: &[u16],
    rules: &ImageRules<N>,
) -> Reason {
    if is_provider(who.pid, provider) {
        return Reason::Provider;
    }
    if let Some(v) = effective_mode(who.process_mode, who.thread_mode).visibility() {
        return Reason::Mode(v);
    }
    if let Some(v) = who.image.and_then(|image| rules.lookup(image)) {
        return Reason::Rule(v);
    }
    if is_system_process(who.pid)
        || who
            .image
            .is_some_and(|image| image_under_system_root(image, system_root))
    {
        return Reason::Windows;
    }
    Reason::Default
}

/// Whether `who` sees cloudflt's placeholders exposed or disguised; see [`explain`].
pub fn decide<const N: usize>(
    who: &Requestor<'_>,
    provider: Option<u32>,
    system_root: &[u16],
    rules: &ImageRules<N>,
) -> Visibility {
    explain(who, provider, system_root, rules).visibility()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    fn w(s: &str) -> Vec<u16> {
        s.encode_utf16().collect()
    }

    const ROOT: &str = "\\Device\\HarddiskVolume3\\Windows";

    #[test]
    fn the_provider_is_recognised_by_pid() {
        assert!(is_provider(1200, Some(1200)));
        assert!(!is_provider(1200, Some(1300)));
        assert!(!is_provider(1200, None), "no provider connected");
    }

    #[test]
    fn thread_mode_overrides_process_mode_only_when_set() {
        use CompatMode::*;
        assert_eq!(effective_mode(0, 0), ApplicationDefault);
        assert_eq!(effective_mode(2, 0), Expose);
        assert_eq!(effective_mode(2, 1), Disguise);
        assert_eq!(effective_mode(1, 2), Expose);
        assert_eq!(effective_mode(0, 3), DisguiseFull);
        assert_eq!(effective_mode(2, -2), Expose, "no TEB: the process decides");
        assert_eq!(effective_mode(-3, -2), ApplicationDefault, "system thread");
        assert_eq!(effective_mode(9, 0), ApplicationDefault, "unknown value");
    }

    #[test]
    fn modes_round_trip_and_say_what_they_ask_for() {
        for raw in i8::MIN..=i8::MAX {
            if let Some(m) = CompatMode::from_raw(raw) {
                assert_eq!(m.raw(), raw);
            } else {
                assert!(!(0..=3).contains(&raw));
            }
        }
        assert_eq!(CompatMode::ApplicationDefault.visibility(), None);
        assert_eq!(CompatMode::Expose.visibility(), Some(Visibility::Expose));
        assert_eq!(
            CompatMode::Disguise.visibility(),
            Some(Visibility::Disguise)
        );
        assert_eq!(
            CompatMode::DisguiseFull.visibility(),
            Some(Visibility::Disguise)
        );
    }

    #[test]
    fn images_under_system_root_match_case_insensitively_by_component() {
        let root = w(ROOT);
        let yes = [
            "\\Device\\HarddiskVolume3\\Windows\\System32\\svchost.exe",
            "\\DEVICE\\harddiskvolume3\\WINDOWS\\explorer.exe",
        ];
        for image in yes {
            assert!(image_under_system_root(&w(image), &root), "{image}");
        }
        let no = [
            "\\Device\\HarddiskVolume3\\WindowsApps\\app.exe",
            "\\Device\\HarddiskVolume3\\Windows",
            "\\Device\\HarddiskVolume4\\Windows\\System32\\svchost.exe",
            "\\Device\\HarddiskVolume3\\Windows\\..\\Users\\evil.exe",
            "\\Device\\HarddiskVolume3\\Windows\\.\\x.exe",
            "\\Device\\HarddiskVolume3\\Windows\\\\x.exe",
            "Device\\HarddiskVolume3\\Windows\\x.exe",
            "\\Device\\HarddiskVolume3\\Users\\u\\Windows\\x.exe",
            "",
        ];
        for image in no {
            assert!(!image_under_system_root(&w(image), &root), "{image}");
        }
    }

    #[test]
    fn the_system_root_may_end_in_a_separator_but_must_be_absolute_and_non_empty() {
        let image = w("\\Device\\HarddiskVolume3\\Windows\\notepad.exe");
        assert!(image_under_system_root(
            &image,
            &w(&std::format!("{ROOT}\\"))
        ));
        assert!(!image_under_system_root(&image, &[]));
        assert!(!image_under_system_root(&image, &w("\\")));
        assert!(!image_under_system_root(
            &image,
            &w("Device\\HarddiskVolume3\\Windows")
        ));
    }

    #[test]
    fn the_most_specific_rule_wins() {
        let mut rules = ImageRules::<8>::new();
        assert_eq!(
            rules.set(&w("\\Device\\HarddiskVolume1\\Tools"), Visibility::Expose),
            Ok(())
        );
        assert_eq!(
            rules.set(
                &w("\\Device\\HarddiskVolume1\\Tools\\Old"),
                Visibility::Disguise
            ),
            Ok(())
        );
        assert_eq!(rules.set(&w("backup.exe"), Visibility::Disguise), Ok(()));
        assert_eq!(
            rules.set(
                &w("\\Device\\HarddiskVolume1\\Tools\\backup.exe"),
                Visibility::Expose
            ),
            Ok(())
        );
        let at = |p: &str| rules.lookup(&w(p));
        assert_eq!(
            at("\\Device\\HarddiskVolume1\\Tools\\a.exe"),
            Some(Visibility::Expose)
        );
        assert_eq!(
            at("\\Device\\HarddiskVolume1\\tools\\old\\a.exe"),
            Some(Visibility::Disguise),
            "the deeper directory"
        );
        assert_eq!(
            at("\\Device\\HarddiskVolume1\\Tools\\Old\\BACKUP.EXE"),
            Some(Visibility::Disguise),
            "a name beats a directory"
        );
        assert_eq!(
            at("\\Device\\HarddiskVolume1\\Tools\\backup.exe"),
            Some(Visibility::Expose),
            "the exact path beats a name"
        );
        assert_eq!(
            at("\\Device\\HarddiskVolume2\\x\\backup.exe"),
            Some(Visibility::Disguise)
        );
        assert_eq!(at("\\Device\\HarddiskVolume1\\Toolsmith\\a.exe"), None);
        assert_eq!(at("\\Device\\HarddiskVolume2\\x\\backup.exe.bak"), None);
        assert_eq!(
            at("\\Device\\HarddiskVolume1\\Tools\\..\\a.exe"),
            None,
            "not normal form"
        );
    }

    #[test]
    fn rules_are_replaced_removed_and_bounded() {
        let mut rules = ImageRules::<2>::new();
        assert_eq!(rules.set(&w("a.exe"), Visibility::Expose), Ok(()));
        assert_eq!(rules.set(&w("A.EXE"), Visibility::Disguise), Ok(()));
        assert_eq!(rules.iter().count(), 1, "same pattern, replaced");
        assert_eq!(
            rules.lookup(&w("\\Device\\HarddiskVolume1\\a.exe")),
            Some(Visibility::Disguise)
        );
        assert_eq!(rules.set(&w("b.exe"), Visibility::Expose), Ok(()));
        assert_eq!(
            rules.set(&w("c.exe"), Visibility::Expose),
            Err(RuleError::Full)
        );
        assert!(rules.remove(&w("a.Exe")));
        assert!(!rules.remove(&w("a.exe")));
        assert_eq!(rules.set(&w("c.exe"), Visibility::Expose), Ok(()));
        let kinds: Vec<RuleKind> = rules.iter().map(ImageRule::kind).collect();
        assert_eq!(kinds, [RuleKind::Name, RuleKind::Name]);
        rules.clear();
        assert_eq!(rules.iter().count(), 0);
    }

    #[test]
    fn malformed_patterns_are_refused() {
        let mut rules = ImageRules::<4>::new();
        let too_long: Vec<u16> = core::iter::once(u16::from(b'\\'))
            .chain(core::iter::repeat_n(u16::from(b'a'), MAX_RULE))
            .collect();
        for bad in [
            w(""),
            w("\\"),
            w("\\Device\\"),
            w("\\Device\\\\x"),
            w("\\Device\\..\\x"),
            w("."),
            w(".."),
            w("dir\\a.exe"),
            too_long,
        ] {
            assert_eq!(
                rules.set(&bad, Visibility::Expose),
                Err(RuleError::InvalidPattern),
                "{:?}",
                std::string::String::from_utf16_lossy(&bad)
            );
        }
        assert_eq!(rules.iter().count(), 0);
        let pattern = w("\\Device\\HarddiskVolume1\\Tools");
        assert_eq!(rules.set(&pattern, Visibility::Expose), Ok(()));
        assert_eq!(
            rules.iter().map(ImageRule::pattern).next(),
            Some(pattern.as_slice())
        );
    }

    struct World {
        root: Vec<u16>,
        rules: ImageRules<4>,
    }

    impl World {
        fn new() -> Self {
            Self {
                root: w(ROOT),
                rules: ImageRules::new(),
            }
        }

        fn explain(&self, pid: u32, image: &str, process: i8, thread: i8) -> Reason {
            let image = w(image);
            let who = Requestor {
                pid,
                image: (!image.is_empty()).then_some(image.as_slice()),
                process_mode: process,
                thread_mode: thread,
            };
            let reason = explain(&who, Some(1000), &self.root, &self.rules);
            assert_eq!(
                decide(&who, Some(1000), &self.root, &self.rules),
                reason.visibility()
            );
            reason
        }
    }

    const APP: &str = "\\Device\\HarddiskVolume3\\Program Files\\App\\app.exe";
    const WIN: &str = "\\Device\\HarddiskVolume3\\Windows\\System32\\cmd.exe";

    #[test]
    fn ordinary_processes_are_disguised_and_windows_exposed() {
        let world = World::new();
        assert_eq!(world.explain(2000, APP, 0, 0), Reason::Default);
        assert_eq!(world.explain(2000, "", 0, 0), Reason::Default, "no image");
        assert_eq!(world.explain(2000, WIN, 0, 0), Reason::Windows);
        assert_eq!(
            world.explain(SYSTEM_PID, "", -3, -2),
            Reason::Windows,
            "the System process"
        );
        assert_eq!(Reason::Default.visibility(), Visibility::Disguise);
        assert_eq!(Reason::Windows.visibility(), Visibility::Expose);
    }

    #[test]
    fn the_provider_sees_placeholders_whatever_it_set() {
        let world = World::new();
        assert_eq!(world.explain(1000, APP, 1, 1), Reason::Provider);
        assert_eq!(Reason::Provider.visibility(), Visibility::Expose);
    }

    #[test]
    fn an_explicit_mode_beats_rules_and_the_system_root() {
        let mut world = World::new();
        assert_eq!(world.rules.set(&w("app.exe"), Visibility::Disguise), Ok(()));
        let expose = Reason::Mode(Visibility::Expose);
        let disguise = Reason::Mode(Visibility::Disguise);
        assert_eq!(world.explain(2000, APP, 2, 0), expose, "process EXPOSE");
        assert_eq!(world.explain(2000, APP, 0, 2), expose, "thread EXPOSE");
        assert_eq!(
            world.explain(2000, APP, 1, 2),
            expose,
            "thread over process"
        );
        assert_eq!(
            world.explain(2000, WIN, 1, 0),
            disguise,
            "DISGUISE in Windows"
        );
        assert_eq!(world.explain(2000, WIN, 0, 3), disguise, "DISGUISE_FULL");
        assert_eq!(
            world.explain(2000, WIN, 2, 1),
            disguise,
            "thread over process"
        );
    }

    #[test]
    fn rules_beat_the_defaults_both_ways() {
        let mut world = World::new();
        assert_eq!(world.rules.set(&w("app.exe"), Visibility::Expose), Ok(()));
        assert_eq!(world.rules.set(&w("cmd.exe"), Visibility::Disguise), Ok(()));
        assert_eq!(
            world.explain(2000, APP, 0, 0),
            Reason::Rule(Visibility::Expose)
        );
        assert_eq!(
            world.explain(2000, WIN, 0, 0),
            Reason::Rule(Visibility::Disguise)
        );
    }
}
