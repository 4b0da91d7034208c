//! The scenario format, v1 (`shared/scenario-format.md`), as serde types.
//!
//! Unknown fields are errors, so a misspelt field is reported instead of silently
//! ignored; everything the format page names is accepted, whether or not the runner can
//! carry it out yet.

use serde::Deserialize;

/// One scenario file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// What the scenario shows.
    #[serde(default)]
    pub description: String,
    /// The machine's volumes and system root.
    #[serde(default)]
    pub machine: MachineSpec,
    /// Ordinary processes.
    #[serde(default)]
    pub process: Vec<ProcessSpec>,
    /// Sync providers.
    #[serde(default)]
    pub provider: Vec<ProviderSpec>,
    /// The steps, in order.
    #[serde(default)]
    pub step: Vec<Step>,
}

/// `[machine]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MachineSpec {
    /// Drive letters of NTFS volumes; C is `\Device\HarddiskVolume1`, D the next, ...
    #[serde(default = "default_volumes")]
    pub volumes: Vec<String>,
    /// The system root as a DOS path.
    #[serde(default = "default_system_root")]
    pub system_root: String,
}

impl Default for MachineSpec {
    fn default() -> Self {
        Self {
            volumes: default_volumes(),
            system_root: default_system_root(),
        }
    }
}

fn default_volumes() -> Vec<String> {
    vec!["C".into()]
}

fn default_system_root() -> String {
    "C:\\Windows".into()
}

/// Placeholder compatibility mode of a process or thread.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Compat {
    /// PHCM_APPLICATION_DEFAULT.
    #[default]
    Default,
    /// PHCM_DISGUISE_PLACEHOLDER.
    Disguise,
    /// PHCM_EXPOSE_PLACEHOLDERS.
    Expose,
    /// PHCM_DISGUISE_FULL_PLACEHOLDERS.
    DisguiseFull,
}

/// `[[process]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessSpec {
    /// The name steps use.
    pub name: String,
    /// Image path, DOS form.
    pub image: String,
    /// Compatibility mode.
    #[serde(default)]
    pub compat: Compat,
}

/// `[[provider]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSpec {
    /// The provider's (and its process's) name.
    pub name: String,
    /// Image path, DOS form.
    pub image: String,
    /// The sync root, created if missing.
    pub sync_root: String,
    /// partial | progressive | full | always_full.
    #[serde(default = "default_hydration")]
    pub hydration: String,
    /// full | always_full.
    #[serde(default = "default_population")]
    pub population: String,
    /// Provider request timeout for this sync root.
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// normal | delay:MS | fail:STATUS | crash_after:BYTES | hang.
    #[serde(default = "default_behaviour")]
    pub behaviour: String,
    /// The provider's remote content.
    #[serde(default)]
    pub files: Vec<RemoteFile>,
    /// Hydration policy modifiers (format additions; see `pending`).
    #[serde(default)]
    pub modifiers: Vec<String>,
    /// Extra in-sync triggers (format additions; see `pending`).
    #[serde(default)]
    pub in_sync_policy: Vec<String>,
    /// `default` | `allowed` (format additions; see `pending`).
    pub hard_links: Option<String>,
    /// Who else may manage placeholders (format additions; see `pending`).
    #[serde(default)]
    pub management: Vec<String>,
    /// Notifications the provider asks for (format additions; see `pending`).
    #[serde(default)]
    pub notify: Vec<String>,
    /// How delete notifications are answered (format additions; see `pending`).
    pub on_delete: Option<String>,
    /// How rename notifications are answered (format additions; see `pending`).
    pub on_rename: Option<String>,
    /// How dehydrate notifications are answered (format additions; see `pending`).
    pub on_dehydrate: Option<String>,
    /// How VALIDATE_DATA is answered (format additions; see `pending`).
    pub on_validate: Option<String>,
    /// Whether the provider runs elevated (format additions; see `pending`).
    pub elevated: Option<bool>,
}

fn default_hydration() -> String {
    "full".into()
}
fn default_population() -> String {
    "full".into()
}
fn default_timeout() -> u64 {
    60_000
}
fn default_behaviour() -> String {
    "normal".into()
}

/// One remote file of a provider.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteFile {
    /// Path relative to the sync root.
    pub path: String,
    /// Size, with `seed`.
    pub size: Option<u64>,
    /// Seed of the deterministic pseudo-random content.
    pub seed: Option<u64>,
    /// Literal content.
    pub text: Option<String>,
    /// An empty remote directory (format additions; see `pending`).
    pub dir: Option<bool>,
}

/// A tag: `"cloudflt"` or a number (in TOML, an integer or a string such as `"0x1234"`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Tag {
    /// An integer.
    Number(i64),
    /// `"cloudflt"` or a hexadecimal/decimal string.
    Text(String),
}

/// `hydrated` in a `state` expectation.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Hydrated {
    /// `"all"` or `"none"`.
    Word(String),
    /// `[offset, length]` ranges.
    Ranges(Vec<[u64; 2]>),
}

/// One expected directory entry of a `list` step.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntryExpect {
    /// File name.
    pub name: String,
    /// Attributes that must be set.
    #[serde(default)]
    pub attributes_include: Vec<String>,
    /// Attributes that must be clear.
    #[serde(default)]
    pub attributes_exclude: Vec<String>,
    /// EaSize field.
    pub ea_size: Option<Tag>,
    /// ReparsePointTag field.
    pub reparse_tag: Option<Tag>,
    /// EndOfFile field (format additions).
    pub size: Option<u64>,
}

/// `expect` of a step.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    /// NTSTATUS name.
    pub status: Option<String>,
    /// Any failure status.
    pub failed: Option<bool>,
    /// `"remote"`, `"zeros"`, `"text:..."`, `"hex:..."`.
    pub data: Option<String>,
    /// Number of bytes returned.
    pub bytes: Option<u64>,
    /// `list`: named entries.
    pub entries: Option<Vec<EntryExpect>>,
    /// `list`: entries other than `.` and `..`.
    pub count: Option<u64>,
    /// `query`: attributes set.
    pub attributes_include: Option<Vec<String>>,
    /// `query`: attributes clear.
    pub attributes_exclude: Option<Vec<String>>,
    /// `query`: reparse tag.
    pub reparse_tag: Option<Tag>,
    /// `query`: size.
    pub size: Option<u64>,
    /// `state`: is a placeholder.
    pub placeholder: Option<bool>,
    /// `state`: hydrated ranges.
    pub hydrated: Option<Hydrated>,
    /// `state`: pinned.
    pub pinned: Option<bool>,
    /// `state`: in sync.
    pub in_sync: Option<bool>,
    /// `state`: reparse tag on disk.
    pub tag: Option<Tag>,
    /// `provider_stats`: fetch requests received.
    pub fetches: Option<u64>,
    /// `provider_stats`: bytes served.
    pub bytes_served: Option<u64>,
    /// `provider_stats`: cancels received.
    pub cancels: Option<u64>,
    /// `state`: ranges modified locally since last in sync (format additions; see
    /// `pending`).
    pub modified: Option<Hydrated>,
    /// `state`: a directory placeholder's listing is complete (see `pending`).
    pub populated: Option<bool>,
    /// `state`: a registered sync root (see `pending`).
    pub registered: Option<bool>,
    /// `provider_stats`: FETCH_PLACEHOLDERS received (see `pending`).
    pub populations: Option<u64>,
    /// `provider_stats`: VALIDATE_DATA received (see `pending`).
    pub validations: Option<u64>,
    /// `provider_stats`: delete notifications (see `pending`).
    pub deletes: Option<u64>,
    /// `provider_stats`: rename notifications (see `pending`).
    pub renames: Option<u64>,
    /// `provider_stats`: dehydrate notifications (see `pending`).
    pub dehydrates: Option<u64>,
    /// `provider_stats`: open notifications (see `pending`).
    pub opens: Option<u64>,
    /// `provider_stats`: close notifications (see `pending`).
    pub closes: Option<u64>,
}

/// One step (`[[step]]`, or inline inside `parallel` / `sequence`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// The operation.
    #[serde(rename = "do")]
    pub op: String,
    /// Process or provider that performs it.
    #[serde(rename = "as")]
    pub actor: Option<String>,
    /// Target path (DOS form).
    pub path: Option<String>,
    /// Handle name kept by `open`.
    pub handle: Option<String>,
    /// Byte offset.
    pub offset: Option<u64>,
    /// Byte length.
    pub length: Option<u64>,
    /// `cached` | `noncached` | `paging` | `mapped`.
    pub io: Option<String>,
    /// Text content.
    pub text: Option<String>,
    /// Hex content.
    pub hex: Option<String>,
    /// Size of generated content.
    pub size: Option<u64>,
    /// Seed of generated content.
    pub seed: Option<u64>,
    /// `open` options.
    #[serde(default)]
    pub options: Vec<String>,
    /// FILE_INFORMATION_CLASS name.
    pub class: Option<String>,
    /// Directory query pattern.
    pub pattern: Option<String>,
    /// Reparse tag for set/delete.
    pub tag: Option<Tag>,
    /// The `_EX` FSCTL variant.
    #[serde(default)]
    pub ex: bool,
    /// Rename target.
    pub to: Option<String>,
    /// Provider name.
    pub provider: Option<String>,
    /// Remote paths for `create_placeholders`.
    pub paths: Option<Vec<String>>,
    /// Milliseconds for `wait`.
    pub ms: Option<u64>,
    /// The thread placeholder compatibility mode the operation runs with.
    pub thread_compat: Option<Compat>,
    /// `set_compat`: the process mode to set.
    pub mode: Option<Compat>,
    /// `image_rule`: the image (DOS path, directory or bare name).
    pub image: Option<String>,
    /// `image_rule`: `expose` | `disguise`.
    pub visibility: Option<String>,
    /// `image_rule`: remove the rule instead of setting it.
    #[serde(default)]
    pub remove: bool,
    /// `query`: the information buffer's length.
    pub buffer: Option<u64>,
    /// `register`: CfRegisterSyncRoot flags (see `pending`).
    #[serde(default)]
    pub flags: Vec<String>,
    /// `rename`: MOVEFILE_REPLACE_EXISTING (see `pending`).
    pub replace: Option<bool>,
    /// `create_placeholders`: mark what it creates populated (see `pending`).
    pub populate: Option<bool>,
    /// `update`: drop local data (see `pending`).
    pub dehydrate: Option<bool>,
    /// `update`: mark in sync (see `pending`).
    pub mark_in_sync: Option<bool>,
    /// `update`: clear in sync (see `pending`).
    pub clear_in_sync: Option<bool>,
    /// `update` / `set_in_sync`: only if unchanged (see `pending`).
    pub if_unchanged: Option<bool>,
    /// `set_in_sync`: the state to set (see `pending`).
    pub in_sync: Option<bool>,
    /// Inner steps of `parallel` / `sequence`.
    #[serde(default)]
    pub steps: Vec<Step>,
    /// Wait before running.
    pub delay_ms: Option<u64>,
    /// What must happen.
    pub expect: Option<Expect>,
}

/// Every operation of format v1 and its additions.
pub const OPERATIONS: [&str; 40] = [
    "load_driver",
    "unload_driver",
    "connect",
    "disconnect",
    "kill",
    "create_placeholders",
    "convert",
    "dehydrate",
    "hydrate",
    "pin",
    "unpin",
    "create_file",
    "open",
    "close",
    "read",
    "write",
    "list",
    "query",
    "get_reparse",
    "set_reparse",
    "delete_reparse",
    "rename",
    "delete",
    "state",
    "provider_stats",
    "parallel",
    "sequence",
    "wait",
    "set_compat",
    "image_rule",
    "register",
    "unregister",
    "reboot",
    "set_size",
    "overwrite",
    "link",
    "remote_write",
    "remote_delete",
    "update",
    "set_in_sync",
];
