//! The operations on ordinary files and on the disk's ground truth, each done as the
//! Win32 call an application would make: open with the access and options that call
//! uses, act through the model's NtXxx entry points, close.
//!
//! Owns: the handles `open` keeps, the open parameters of each operation, the bytes of
//! the reparse buffers `set_reparse` / `delete_reparse` send, and what each operation
//! observed. It never does a cloudflt behaviour: a `cloudflt` tag here is only a number
//! and a GUID in a buffer.

use std::collections::HashMap;
use std::mem::size_of;
use std::sync::{Arc, Mutex};

use cloudflt::admin::{ImageRules, Visibility};
use cloudflt::compat::{self, PlaceholderCompatibility, ThreadModeGuard};
use cloudflt_proto::{Placeholder, PlaceholderFlags};
use windows_sys::Wdk::Storage::FileSystem::{
    self as fs, FILE_BASIC_INFORMATION, FILE_CREATE, FILE_DELETE_ON_CLOSE, FILE_DIRECTORY_FILE,
    FILE_NO_INTERMEDIATE_BUFFERING, FILE_NON_DIRECTORY_FILE, FILE_OPEN, FILE_OPEN_IF,
    FILE_OPEN_REPARSE_POINT, FILE_OVERWRITE_IF, FILE_RENAME_INFORMATION,
    FILE_SYNCHRONOUS_IO_NONALERT, REPARSE_DATA_BUFFER, REPARSE_DATA_BUFFER_EX,
    REPARSE_DATA_EX_FLAG_GIVEN_TAG_OR_NONE,
};
use windows_sys::Win32::Foundation::{
    NTSTATUS, STATUS_NO_MORE_FILES, STATUS_NOT_FOUND, STATUS_OBJECT_NAME_NOT_FOUND, STATUS_SUCCESS,
};
use windows_sys::Win32::Storage::FileSystem::{
    DELETE, FILE_ATTRIBUTE_NORMAL, FILE_ATTRIBUTE_PINNED, FILE_ATTRIBUTE_UNPINNED,
    FILE_LIST_DIRECTORY, FILE_READ_ATTRIBUTES, FILE_WRITE_ATTRIBUTES,
    MAXIMUM_REPARSE_DATA_BUFFER_SIZE, REPARSE_GUID_DATA_BUFFER, SYNCHRONIZE,
};
use windows_sys::Win32::System::Ioctl::{
    FSCTL_DELETE_REPARSE_POINT, FSCTL_GET_REPARSE_POINT, FSCTL_SET_REPARSE_POINT,
    FSCTL_SET_REPARSE_POINT_EX,
};
use windows_sys::Win32::System::SystemServices::{
    IO_REPARSE_TAG_MOUNT_POINT, IO_REPARSE_TAG_SYMLINK,
};

use super::content;
use super::decode::{self, Entry, Info};
use super::expect::RemoteRoot;
use super::format::{Compat, Step, Tag};
use super::provider::{self, Provider, ProviderStats, UpdateStep};
use crate::model::files::{self, Handle, IoMode, OpenParams};
use crate::model::process::{self, SYSTEM_PID};

/// The GUID of every non-Microsoft reparse point a scenario sets with a tag other than
/// cloudflt's ({5ce7a410-0c1f-4a5e-8b7d-7465737474a6}, an arbitrary fixed value).
pub const TEST_GUID: [u8; 16] = [
    0x10, 0xa4, 0xe7, 0x5c, 0x1f, 0x0c, 0x5e, 0x4a, 0x8b, 0x7d, 0x74, 0x65, 0x73, 0x74, 0x74, 0xa6,
];

/// The data of every reparse point a scenario sets without a target (`to`).
const TEST_REPARSE_DATA: &[u8] = b"cloudflt scenario reparse data";

/// The directory buffer a listing pages with: what FindFirstFileEx and .NET's
/// enumerator pass (4 KiB), so long directories take several queries.
const LIST_BUFFER: usize = 4096;

/// FileDispositionInformation's input: DeleteFile = TRUE.
const DISPOSITION_DELETE: [u8; 1] = [1];

/// What the disk holds for a file, read below every filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GroundState {
    /// Its reparse tag, 0 when none.
    pub tag: u32,
    /// Allocated ranges, cut at end of file.
    pub allocated: Vec<(u64, u64)>,
    pub size: u64,
    /// Its attributes as NTFS reports them.
    pub attributes: u32,
    /// For a file carrying cloudflt's tag: its reparse blob decoded, or why it does not
    /// decode.
    pub blob: Option<Result<Blob, String>>,
    /// Whether the path is a registered sync root, as CfGetSyncRootInfoByPath tells it
    /// (asked only when a step expects it; with the driver unloaded nothing answers, so
    /// it is not one).
    pub registered: Option<bool>,
    /// Whether it is a directory whose listing is complete (asked only when a step
    /// expects it): a directory placeholder without NOT_POPULATED in its reparse data,
    /// or a registered sync root whose registration says so, as CfGetSyncRootInfoByPath
    /// tells it.
    pub populated: Option<bool>,
}

/// What a placeholder's reparse blob records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Blob {
    pub in_sync: bool,
    /// The PINNED flag (the pin state itself is the attribute; this is reported only).
    pub pinned: bool,
    /// Its file size.
    pub file_size: u64,
    /// Recorded ranges as `(offset, length)`, merged, cut at the end of file NTFS holds.
    pub ranges: Vec<(u64, u64)>,
    /// Ranges recorded as modified locally since last in sync, in the same form.
    pub modified: Vec<(u64, u64)>,
    /// A directory placeholder whose listing is complete (no NOT_POPULATED).
    pub populated_directory: bool,
}

impl GroundState {
    /// Whether the file carries cloudflt's tag.
    pub fn is_placeholder(&self) -> bool {
        self.tag == cloudflt_proto::reparse::TAG
    }
}

/// What an operation observably did. Two runs of a step agree when these are equal.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Observation {
    pub status: NTSTATUS,
    /// Bytes read, or the reparse buffer returned.
    pub data: Option<Vec<u8>>,
    /// Bytes written.
    pub written: Option<u64>,
    /// Directory entries, `.` and `..` included.
    pub entries: Option<Vec<Entry>>,
    /// What a query-information answer carried.
    pub info: Option<Info>,
    /// Boxed: the largest field, and most observations have none.
    pub state: Option<Box<GroundState>>,
    /// What a provider saw (`provider_stats`).
    pub stats: Option<ProviderStats>,
    /// The answer broke its class's layout rules (a directory or information buffer).
    pub malformed: Option<String>,
}

impl Observation {
    pub(crate) fn status(status: NTSTATUS) -> Self {
        Self {
            status,
            ..Self::default()
        }
    }
}

/// What the runner could make of a step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    Observed(Observation),
    /// The runner cannot carry the operation out (yet); the reason names what it needs.
    Unsupported(String),
    /// The step itself is wrong (unknown name, missing field).
    Invalid(String),
    /// Not run: differential mode's run without the driver skips load and unload.
    Skipped,
}

/// A handle `open` kept.
#[derive(Debug, Clone)]
pub(crate) struct Kept {
    handle: Handle,
    pid: u32,
    /// The DOS path it was opened by.
    pub path: String,
}

/// What a path operation acts on.
enum Target {
    Path(String),
    Kept(Kept),
}

/// Everything a step needs besides the machine itself: shared by the threads of a
/// `parallel`.
pub(crate) struct World {
    /// Process names → pids (providers' processes are the providers' own business);
    /// `reboot` starts them again under new pids.
    pub pids: Mutex<HashMap<String, u32>>,
    /// What starts each `[[process]]` (name, NT image, compatibility mode), and the
    /// administrator's image: what `reboot` starts again.
    pub boot: Vec<(String, String, i8)>,
    pub admin_image: Option<String>,
    pub handles: Mutex<HashMap<String, Kept>>,
    /// The providers' remote content.
    pub remote: Vec<Arc<RemoteRoot>>,
    /// The providers.
    pub providers: Vec<Provider>,
    /// Differential mode's run without the driver: provider operations are skipped.
    pub without_driver: bool,
    /// The runner's own elevated administrator process, which runs `image_rule` steps
    /// without `as` (started only for scenarios that have such steps).
    pub admin: Mutex<Option<u32>>,
}

fn params(access: u32, disposition: u32, options: u32) -> OpenParams {
    OpenParams {
        access,
        share: 0x7,
        disposition,
        options: options | FILE_SYNCHRONOUS_IO_NONALERT,
        attributes: FILE_ATTRIBUTE_NORMAL,
    }
}

/// GENERIC_READ | GENERIC_WRITE as the I/O manager maps them for files.
const READ_WRITE: u32 = 0x0012_019F;
/// GENERIC_READ as mapped.
const READ: u32 = 0x0012_0089;

/// A tag field's value: `"cloudflt"`, an integer, or a decimal / `0x` hexadecimal string.
pub(crate) fn tag_value(tag: &Tag) -> Result<u32, String> {
    match tag {
        Tag::Number(n) => u32::try_from(*n).map_err(|_| format!("tag {n} is not a 32-bit value")),
        Tag::Text(t) if t == "cloudflt" => Ok(cloudflt_proto::reparse::TAG),
        Tag::Text(t) => {
            let parsed = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
                Some(hex) => u32::from_str_radix(&hex.replace('_', ""), 16),
                None => t.replace('_', "").parse(),
            };
            parsed.map_err(|_| format!("tag {t:?} is neither \"cloudflt\" nor a number"))
        }
    }
}

fn is_microsoft(tag: u32) -> bool {
    tag & 0x8000_0000 != 0
}

fn guid_for(tag: u32) -> [u8; 16] {
    if tag == cloudflt_proto::reparse::TAG {
        cloudflt_proto::reparse::GUID
    } else {
        TEST_GUID
    }
}

fn put_u16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn utf16(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

/// The reparse data of a symbolic link or mount point to `to` (DOS path): substitute
/// name `\??\<to>`, print name `<to>`, as mklink writes them.
fn link_data(tag: u32, to: &str) -> Vec<u8> {
    let substitute = utf16(&format!("\\??\\{to}"));
    let print = utf16(to);
    let flags = if tag == IO_REPARSE_TAG_SYMLINK { 4 } else { 0 };
    let mut b = vec![0u8; 8 + flags];
    put_u16(&mut b, 0, 0);
    put_u16(&mut b, 2, substitute.len() as u16);
    // Mount points end each name with a NUL the lengths do not count.
    let terminator = usize::from(tag == IO_REPARSE_TAG_MOUNT_POINT) * 2;
    put_u16(&mut b, 4, (substitute.len() + terminator) as u16);
    put_u16(&mut b, 6, print.len() as u16);
    b.extend_from_slice(&substitute);
    b.extend(std::iter::repeat_n(0, terminator));
    b.extend_from_slice(&print);
    b.extend(std::iter::repeat_n(0, terminator));
    b
}

/// REPARSE_DATA_BUFFER (Microsoft tag) or REPARSE_GUID_DATA_BUFFER (any other tag)
/// holding `data`; `data` empty makes the header-only buffer of a delete.
fn reparse_buffer(tag: u32, data: &[u8]) -> Vec<u8> {
    let header = if is_microsoft(tag) {
        std::mem::offset_of!(REPARSE_DATA_BUFFER, Anonymous)
    } else {
        std::mem::offset_of!(REPARSE_GUID_DATA_BUFFER, GenericReparseBuffer)
    };
    let mut b = vec![0u8; header];
    put_u32(&mut b, 0, tag);
    put_u16(&mut b, 4, data.len() as u16);
    if !is_microsoft(tag) {
        let at = std::mem::offset_of!(REPARSE_GUID_DATA_BUFFER, ReparseGuid);
        b[at..at + 16].copy_from_slice(&guid_for(tag));
    }
    b.extend_from_slice(data);
    b
}

/// REPARSE_DATA_BUFFER_EX around `inner`: set only if the file has this tag (and GUID)
/// or none, the safe set FltTagFileEx callers make.
fn reparse_buffer_ex(tag: u32, inner: &[u8]) -> Vec<u8> {
    let header = std::mem::offset_of!(REPARSE_DATA_BUFFER_EX, Anonymous);
    let mut b = vec![0u8; header];
    put_u32(&mut b, 0, REPARSE_DATA_EX_FLAG_GIVEN_TAG_OR_NONE);
    put_u32(
        &mut b,
        std::mem::offset_of!(REPARSE_DATA_BUFFER_EX, ExistingReparseTag),
        tag,
    );
    if !is_microsoft(tag) {
        let at = std::mem::offset_of!(REPARSE_DATA_BUFFER_EX, ExistingReparseGuid);
        b[at..at + 16].copy_from_slice(&guid_for(tag));
    }
    b.extend_from_slice(inner);
    b
}

fn io_mode(step: &Step) -> Result<IoMode, String> {
    Ok(match step.io.as_deref().unwrap_or("cached") {
        "cached" => IoMode::Cached,
        "noncached" => IoMode::NonCached,
        "paging" => IoMode::Paging,
        "mapped" => IoMode::Mapped,
        other => {
            return Err(format!(
                "io {other:?} is not cached, noncached, paging or mapped"
            ));
        }
    })
}

fn need<'a, T>(value: &'a Option<T>, op: &str, field: &str) -> Result<&'a T, String> {
    value
        .as_ref()
        .ok_or_else(|| format!("`{op}` needs `{field}`"))
}

/// NT_ERROR: severity 3. Warnings (severity 2) still return data.
fn is_error(status: NTSTATUS) -> bool {
    (status as u32) >> 30 == 3
}

/// The largest information buffer a `query` step may ask for.
const MAX_QUERY_BUFFER: usize = 1 << 16;

/// Runs `f` as process `pid`, on a thread whose placeholder compatibility mode is the
/// step's `thread_compat` while `f` runs (as the process's own thread would set it with
/// the provider library's guard), restored afterwards.
fn as_process<R>(step: &Step, pid: u32, f: impl FnOnce() -> R) -> Result<R, String> {
    process::run_as(pid, || {
        let Some(mode) = step.thread_compat else {
            return Ok(f());
        };
        let guard = ThreadModeGuard::set(compat_mode(mode))
            .map_err(|e| format!("the thread cannot set its compatibility mode: {e}"))?;
        let r = f();
        drop(guard);
        Ok(r)
    })
}

/// The provider library's name for a scenario's compatibility mode.
pub(crate) fn compat_mode(mode: Compat) -> PlaceholderCompatibility {
    match mode {
        Compat::Default => PlaceholderCompatibility::ApplicationDefault,
        Compat::Disguise => PlaceholderCompatibility::Disguise,
        Compat::Expose => PlaceholderCompatibility::Expose,
        Compat::DisguiseFull => PlaceholderCompatibility::DisguiseFull,
    }
}

/// `Ok(status)` or `Err(status)` of a model call, as one status.
fn status_of<T>(r: &Result<T, NTSTATUS>) -> NTSTATUS {
    match r {
        Ok(_) => STATUS_SUCCESS,
        Err(s) => *s,
    }
}

impl World {
    /// The provider named `name`.
    pub(crate) fn provider(&self, name: &str) -> Option<&Provider> {
        self.providers.iter().find(|p| p.name() == name)
    }

    /// The pid of the process or provider `name` (a provider's current process, which
    /// must be running).
    pub(crate) fn pid_of(&self, name: &str) -> Result<u32, String> {
        if let Some(pid) = self.pid_of_process(name) {
            return Ok(pid);
        }
        match self.provider(name) {
            Some(p) => p.pid(),
            None => Err(format!("`as = {name:?}` names no process or provider")),
        }
    }

    /// The pid of the `[[process]]` named `name`.
    pub(crate) fn pid_of_process(&self, name: &str) -> Option<u32> {
        self.pids
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(name)
            .copied()
    }

    /// The pid a step runs as: its `as`, or for a kept handle the process that opened it.
    fn actor(&self, step: &Step) -> Result<Option<u32>, String> {
        match &step.actor {
            None => Ok(None),
            Some(name) => self.pid_of(name).map(Some),
        }
    }

    fn kept(&self, name: &str) -> Result<Kept, String> {
        self.handles
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(name)
            .cloned()
            .ok_or_else(|| format!("no handle named {name:?} is open"))
    }

    /// What a path-or-handle step acts on, and the process it acts as.
    fn target(&self, step: &Step) -> Result<(Target, u32), String> {
        let actor = self.actor(step)?;
        match (&step.path, &step.handle) {
            (Some(_), Some(_)) => Err(format!("`{}` takes `path` or `handle`, not both", step.op)),
            (None, None) => Err(format!("`{}` needs `path` or `handle`", step.op)),
            (Some(path), None) => {
                let pid = actor.ok_or_else(|| format!("`{}` needs `as`", step.op))?;
                Ok((Target::Path(path.clone()), pid))
            }
            (None, Some(name)) => {
                let kept = self.kept(name)?;
                match actor {
                    Some(pid) if pid != kept.pid => Err(format!(
                        "handle {name:?} belongs to another process than `as`"
                    )),
                    _ => Ok((Target::Kept(kept.clone()), kept.pid)),
                }
            }
        }
    }

    /// The DOS path a step's data came from (for `data = "remote"`).
    pub(crate) fn target_path(&self, step: &Step) -> Option<String> {
        match (&step.path, &step.handle) {
            (Some(path), _) => Some(path.clone()),
            (None, Some(name)) => self.kept(name).ok().map(|k| k.path),
            _ => None,
        }
    }

    /// Opens (or takes the kept handle), runs `act`, closes what it opened; the status of
    /// a failed open is the step's status.
    fn with_target(
        &self,
        target: &Target,
        params: &OpenParams,
        act: impl FnOnce(Handle) -> Observation,
    ) -> Observation {
        match target {
            Target::Kept(k) => act(k.handle),
            Target::Path(path) => match files::create(path, params) {
                Err(status) => Observation::status(status),
                Ok(h) => {
                    let seen = act(h);
                    files::close(h);
                    seen
                }
            },
        }
    }

    /// Runs one ordinary-file or ground-truth operation on the calling thread.
    pub(crate) fn perform_file_op(&self, step: &Step) -> Outcome {
        if step.op == "delete_reparse" && step.ex {
            return Outcome::Unsupported(
                "Windows has no FSCTL_DELETE_REPARSE_POINT_EX: winioctl.h defines only \
                 FSCTL_DELETE_REPARSE_POINT (FltUntagFile sends it too); drop `ex`"
                    .into(),
            );
        }
        let result = match step.op.as_str() {
            "create_file" => self.create_file(step),
            "open" => self.open(step),
            "close" => self.close(step),
            "read" => self.read(step),
            "write" => self.write(step),
            "set_size" => self.set_size(step),
            "overwrite" => self.overwrite(step),
            "list" => self.list(step),
            "query" => self.query(step),
            "get_reparse" => self.get_reparse(step),
            "set_reparse" | "delete_reparse" => self.set_or_delete_reparse(step),
            "rename" => self.rename(step),
            "link" => self.link(step),
            "delete" => self.delete(step),
            "pin" | "unpin" => self.pin(step),
            "set_compat" => self.set_compat(step),
            "state" => return self.state(step),
            other => Err(format!("`{other}` is not a file operation")),
        };
        match result {
            Ok(seen) => Outcome::Observed(seen),
            Err(why) => Outcome::Invalid(why),
        }
    }

    fn create_file(&self, step: &Step) -> Result<Observation, String> {
        let path = need(&step.path, "create_file", "path")?;
        let pid = self
            .actor(step)?
            .ok_or("`create_file` needs `as`".to_string())?;
        let data = match (&step.text, step.size, step.seed) {
            (Some(_), Some(_), _) => return Err("`create_file` takes `text` or `size`".into()),
            (Some(text), None, None) => text.as_bytes().to_vec(),
            (None, Some(size), Some(seed)) => content::seeded(seed, size),
            (None, Some(_), None) => return Err("`create_file` with `size` needs `seed`".into()),
            (None, None, None) => Vec::new(),
            (_, _, Some(_)) => return Err("`seed` goes with `size`".into()),
        };
        as_process(step, pid, || {
            if let Err(status) = make_parents(path) {
                return Observation::status(status);
            }
            // FILE_CREATE: a file that already exists is a collision the scenario sees.
            match files::create(
                path,
                &params(READ_WRITE, FILE_CREATE, FILE_NON_DIRECTORY_FILE),
            ) {
                Err(status) => Observation::status(status),
                Ok(h) => {
                    let written = if data.is_empty() {
                        Ok(0)
                    } else {
                        files::write(h, 0, &data, IoMode::Cached)
                    };
                    files::close(h);
                    Observation::status(status_of(&written))
                }
            }
        })
    }

    /// `image_rule`: an administrator sets or removes an image rule through a management
    /// connection of the provider library (`cloudflt::admin::ImageRules`), opened and
    /// closed by the step on a thread of the acting process. Removing a rule that is not
    /// there is STATUS_NOT_FOUND (the driver's answer, which the library reports as
    /// `false`). Like the provider operations it needs the driver's port, so the run
    /// without the driver of differential mode skips it.
    pub(crate) fn image_rule(&self, step: &Step) -> Outcome {
        if self.without_driver {
            return Outcome::Skipped;
        }
        match self.try_image_rule(step) {
            Ok(status) => Outcome::Observed(Observation::status(status)),
            Err(why) => Outcome::Invalid(why),
        }
    }

    /// `dehydrate` or `set_in_sync` with `as`: asked for by a process rather than the
    /// provider, through the provider library's `app` functions on a thread of that
    /// process (cfapi's CfDehydratePlaceholder / CfSetInSyncState from an application);
    /// the root's registration decides whether it may. `if_unchanged` compares with the
    /// counter the path's provider last saw, as the provider's own step does. Like the
    /// provider operations it needs the driver's port, so the run without the driver of
    /// differential mode skips it.
    pub(crate) fn perform_app_op(&self, step: &Step) -> Outcome {
        if self.without_driver {
            return Outcome::Skipped;
        }
        match self.try_app_op(step) {
            Ok(status) => Outcome::Observed(Observation::status(status)),
            Err(why) => Outcome::Invalid(why),
        }
    }

    fn try_app_op(&self, step: &Step) -> Result<NTSTATUS, String> {
        let name = need(&step.actor, &step.op, "as")?;
        let path = need(&step.path, &step.op, "path")?;
        if step.provider.is_some() {
            return Err(format!("`{}` takes `as` or `provider`, not both", step.op));
        }
        let pid = self.pid_of(name)?;
        // The provider whose root holds the path, for `if_unchanged`.
        let owner = self.providers.iter().find_map(|p| {
            p.relative(path)
                .ok()
                .filter(|_| path.contains(':'))
                .map(|rel| (p, rel))
        });
        let done = match step.op.as_str() {
            "dehydrate" => {
                let start = step.offset.unwrap_or(0);
                let end = step.length.map(|l| start.saturating_add(l));
                process::run_as(pid, || match end {
                    None => cloudflt::app::dehydrate(path, start..),
                    Some(end) => cloudflt::app::dehydrate(path, start..end),
                })
            }
            "set_in_sync" => {
                let in_sync = *need(&step.in_sync, "set_in_sync", "in_sync")?;
                let expected = match (step.if_unchanged.unwrap_or(false), &owner) {
                    (false, _) => None,
                    (true, Some((p, rel))) => Some(p.last_changes(rel)),
                    (true, None) => {
                        return Err(format!(
                            "`if_unchanged` compares with what the provider saw, and {path} \
                             is under no provider's sync root"
                        ));
                    }
                };
                process::run_as(pid, || {
                    cloudflt::app::set_in_sync(path, in_sync, expected).map(drop)
                })
            }
            other => return Err(format!("`{other}` takes no `as`")),
        };
        Ok(match done {
            Ok(()) => STATUS_SUCCESS,
            Err(e) => provider::status_of(&e),
        })
    }

    fn try_image_rule(&self, step: &Step) -> Result<NTSTATUS, String> {
        let image = need(&step.image, "image_rule", "image")?;
        let visibility = match (step.remove, step.visibility.as_deref()) {
            (true, None) => None,
            (true, Some(_)) => return Err("`remove = true` takes no `visibility`".into()),
            (false, Some("expose")) => Some(Visibility::Expose),
            (false, Some("disguise")) => Some(Visibility::Disguise),
            (false, Some(other)) => {
                return Err(format!("visibility {other:?} is not expose or disguise"));
            }
            (false, None) => {
                return Err("`image_rule` needs `visibility`, or `remove = true`".into());
            }
        };
        let pid = match &step.actor {
            Some(name) => self.pid_of(name)?,
            None => self
                .admin
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .ok_or("the runner's administrator process is not running")?,
        };
        let done = process::run_as(pid, || {
            let rules = ImageRules::connect()?;
            match visibility {
                Some(v) => rules.set(image, v).map(|()| STATUS_SUCCESS),
                None => rules.remove(image).map(|found| {
                    if found {
                        STATUS_SUCCESS
                    } else {
                        STATUS_NOT_FOUND
                    }
                }),
            }
        });
        Ok(done.unwrap_or_else(|e| provider::status_of(&e)))
    }

    /// `set_compat`: the process sets its own mode, on one of its threads, as a program
    /// calls RtlSetProcessPlaceholderCompatibilityMode (through the provider library).
    fn set_compat(&self, step: &Step) -> Result<Observation, String> {
        let pid = self
            .actor(step)?
            .ok_or("`set_compat` needs `as`".to_string())?;
        let mode = compat_mode(*need(&step.mode, "set_compat", "mode")?);
        let set = process::run_as(pid, || compat::set_process_mode(mode));
        Ok(Observation::status(
            set.map_or_else(|e| e.status(), |_| STATUS_SUCCESS),
        ))
    }

    fn open(&self, step: &Step) -> Result<Observation, String> {
        let path = need(&step.path, "open", "path")?;
        let name = need(&step.handle, "open", "handle")?;
        let pid = self.actor(step)?.ok_or("`open` needs `as`".to_string())?;
        let mut p = params(READ, FILE_OPEN, FILE_NON_DIRECTORY_FILE);
        for option in &step.options {
            match option.as_str() {
                "open_reparse_point" => p.options |= FILE_OPEN_REPARSE_POINT,
                // A directory, as FindFirstFile and GetFileInformationByHandle callers
                // open one: GENERIC_READ includes FILE_LIST_DIRECTORY.
                "directory" => {
                    p.options = (p.options & !FILE_NON_DIRECTORY_FILE) | FILE_DIRECTORY_FILE;
                }
                "delete_on_close" => {
                    p.options |= FILE_DELETE_ON_CLOSE;
                    p.access |= DELETE;
                }
                "write" => p.access |= READ_WRITE,
                other => {
                    return Err(format!(
                        "option {other:?} is not open_reparse_point, directory, \
                         delete_on_close or write"
                    ));
                }
            }
        }
        let mut handles = self
            .handles
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if handles.contains_key(name) {
            return Err(format!("a handle named {name:?} is already open"));
        }
        let opened = as_process(step, pid, || files::create(path, &p))?;
        if let Ok(handle) = opened {
            handles.insert(
                name.clone(),
                Kept {
                    handle,
                    pid,
                    path: path.clone(),
                },
            );
        }
        Ok(Observation::status(status_of(&opened)))
    }

    fn close(&self, step: &Step) -> Result<Observation, String> {
        let name = need(&step.handle, "close", "handle")?;
        let kept = self
            .handles
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(name)
            .ok_or_else(|| format!("no handle named {name:?} is open"))?;
        Ok(Observation::status(as_process(step, kept.pid, || {
            files::close(kept.handle)
        })?))
    }

    /// Closes every handle still kept, as the processes' exit would.
    pub(crate) fn close_all(&self) {
        let kept: Vec<Kept> = self
            .handles
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .drain()
            .map(|(_, k)| k)
            .collect();
        for k in kept {
            process::run_as(k.pid, || files::close(k.handle));
        }
    }

    fn read(&self, step: &Step) -> Result<Observation, String> {
        let (target, pid) = self.target(step)?;
        let offset = *need(&step.offset, "read", "offset")?;
        let length = *need(&step.length, "read", "length")?;
        let mode = io_mode(step)?;
        let options = if mode == IoMode::NonCached {
            FILE_NON_DIRECTORY_FILE | FILE_NO_INTERMEDIATE_BUFFERING
        } else {
            FILE_NON_DIRECTORY_FILE
        };
        let length = usize::try_from(length).map_err(|_| "length too large".to_string())?;
        as_process(step, pid, || {
            self.with_target(
                &target,
                &params(READ, FILE_OPEN, options),
                |h| match files::read(h, offset, length, mode) {
                    Ok(data) => Observation {
                        data: Some(data),
                        ..Observation::status(STATUS_SUCCESS)
                    },
                    Err(status) => Observation::status(status),
                },
            )
        })
    }

    fn write(&self, step: &Step) -> Result<Observation, String> {
        let (target, pid) = self.target(step)?;
        let offset = *need(&step.offset, "write", "offset")?;
        let data = content_of(step)?;
        let mode = match io_mode(step)? {
            m @ (IoMode::Cached | IoMode::NonCached | IoMode::Mapped) => m,
            IoMode::Paging => {
                return Err("`write` takes io = cached, noncached or mapped".into());
            }
        };
        let options = if mode == IoMode::NonCached {
            FILE_NON_DIRECTORY_FILE | FILE_NO_INTERMEDIATE_BUFFERING
        } else {
            FILE_NON_DIRECTORY_FILE
        };
        as_process(step, pid, || {
            self.with_target(&target, &params(READ_WRITE, FILE_OPEN, options), |h| {
                match files::write(h, offset, &data, mode) {
                    Ok(n) => Observation {
                        written: Some(n as u64),
                        ..Observation::status(STATUS_SUCCESS)
                    },
                    Err(status) => Observation::status(status),
                }
            })
        })
    }

    /// `set_size`: SetFileInformationByHandle(FileEndOfFileInfo) on a handle opened
    /// for writing (GENERIC_READ | GENERIC_WRITE), or on the kept handle.
    fn set_size(&self, step: &Step) -> Result<Observation, String> {
        let (target, pid) = self.target(step)?;
        let size = *need(&step.size, "set_size", "size")?;
        let size = i64::try_from(size).map_err(|_| "size too large".to_string())?;
        as_process(step, pid, || {
            self.with_target(
                &target,
                &params(READ_WRITE, FILE_OPEN, FILE_NON_DIRECTORY_FILE),
                |h| {
                    Observation::status(files::set_information(
                        h,
                        fs::FileEndOfFileInformation,
                        &size.to_le_bytes(),
                    ))
                },
            )
        })
    }

    /// `overwrite`: CreateFile(GENERIC_READ | GENERIC_WRITE, CREATE_ALWAYS, NORMAL),
    /// which the I/O manager sends as FILE_OVERWRITE_IF, then one cached write of the
    /// content at 0, then CloseHandle: how most editors save. The status is the first
    /// failure.
    fn overwrite(&self, step: &Step) -> Result<Observation, String> {
        let path = need(&step.path, "overwrite", "path")?;
        let pid = self
            .actor(step)?
            .ok_or("`overwrite` needs `as`".to_string())?;
        if step.hex.is_some() {
            return Err("`overwrite` takes `text` or `size` + `seed`".into());
        }
        let data = content_of(step)?;
        as_process(step, pid, || {
            match files::create(
                path,
                &params(READ_WRITE, FILE_OVERWRITE_IF, FILE_NON_DIRECTORY_FILE),
            ) {
                Err(status) => Observation::status(status),
                Ok(h) => {
                    let written = if data.is_empty() {
                        Ok(0)
                    } else {
                        files::write(h, 0, &data, IoMode::Cached)
                    };
                    files::close(h);
                    Observation {
                        written: written.as_ref().ok().map(|n| *n as u64),
                        ..Observation::status(status_of(&written))
                    }
                }
            }
        })
    }

    /// `remote_write`: the provider's cloud copy of `path` becomes the step's content
    /// (a new remote file if there was none). Nothing local changes.
    pub(crate) fn remote_write(&self, step: &Step) -> Outcome {
        let Some(provider) = step.provider.as_deref().and_then(|p| self.provider(p)) else {
            return Outcome::Invalid("`remote_write` needs `provider`".into());
        };
        let done = need(&step.path, "remote_write", "path").and_then(|path| {
            if step.hex.is_some() {
                return Err("`remote_write` takes `text` or `size` + `seed`".to_string());
            }
            let data = content_of(step)?;
            provider.remote_write(path, data)
        });
        match done {
            Ok(()) => Outcome::Observed(Observation::status(STATUS_SUCCESS)),
            Err(why) => Outcome::Invalid(why),
        }
    }

    /// `remote_delete`: the provider's cloud copy of `path` is removed. Nothing local
    /// changes.
    pub(crate) fn remote_delete(&self, step: &Step) -> Outcome {
        let Some(provider) = step.provider.as_deref().and_then(|p| self.provider(p)) else {
            return Outcome::Invalid("`remote_delete` needs `provider`".into());
        };
        match need(&step.path, "remote_delete", "path").and_then(|p| provider.remote_delete(p)) {
            Ok(()) => Outcome::Observed(Observation::status(STATUS_SUCCESS)),
            Err(why) => Outcome::Invalid(why),
        }
    }

    fn list(&self, step: &Step) -> Result<Observation, String> {
        let (target, pid) = self.target(step)?;
        let class = step
            .class
            .as_deref()
            .unwrap_or("FileIdBothDirectoryInformation");
        let layout = decode::dir_class(class).ok_or_else(|| {
            format!(
                "{class:?} is not a directory class (known: {})",
                decode::DIR_CLASSES.join(", ")
            )
        })?;
        let pattern = step.pattern.as_deref();
        let access = FILE_LIST_DIRECTORY | SYNCHRONIZE;
        let mut malformed = None;
        let seen = as_process(step, pid, || {
            self.with_target(
                &target,
                &params(access, FILE_OPEN, FILE_DIRECTORY_FILE),
                |h| {
                    let mut entries = Vec::new();
                    let mut first = true;
                    loop {
                        let (status, buffer) = files::query_directory(
                            h,
                            layout.class,
                            pattern,
                            first,
                            false,
                            LIST_BUFFER,
                        );
                        first = false;
                        if status == STATUS_NO_MORE_FILES && !entries.is_empty() {
                            break Observation {
                                entries: Some(entries),
                                ..Observation::status(STATUS_SUCCESS)
                            };
                        }
                        if status != STATUS_SUCCESS {
                            // STATUS_NO_SUCH_FILE (nothing matched), or an error.
                            break Observation::status(status);
                        }
                        match decode::dir_entries(&layout, &buffer) {
                            Ok(mut more) if !more.is_empty() => entries.append(&mut more),
                            Ok(_) => {
                                malformed = Some("an empty buffer with STATUS_SUCCESS".to_string());
                                break Observation::status(status);
                            }
                            Err(why) => {
                                malformed = Some(why);
                                break Observation::status(status);
                            }
                        }
                    }
                },
            )
        })?;
        Ok(Observation { malformed, ..seen })
    }

    fn query(&self, step: &Step) -> Result<Observation, String> {
        let (target, pid) = self.target(step)?;
        let class = need(&step.class, "query", "class")?;
        let layout = decode::info_class(class).ok_or_else(|| {
            format!("{class:?} is not a query-information class the runner knows")
        })?;
        let length = match step.buffer {
            None => layout.buffer,
            Some(n) => usize::try_from(n)
                .ok()
                .filter(|n| *n <= MAX_QUERY_BUFFER)
                .ok_or_else(|| format!("buffer {n} is larger than {MAX_QUERY_BUFFER}"))?,
        };
        let mut options = 0;
        if step.handle.is_some() && !step.options.is_empty() {
            return Err(
                "`options` apply to the open a `query` on a path makes, not to a handle".into(),
            );
        }
        for option in &step.options {
            match option.as_str() {
                // CreateFile with FILE_FLAG_OPEN_REPARSE_POINT, then
                // GetFileInformationByHandleEx: the link itself, not its target.
                "open_reparse_point" => options |= FILE_OPEN_REPARSE_POINT,
                other => {
                    return Err(format!(
                        "`query` takes option open_reparse_point, not {other:?}"
                    ));
                }
            }
        }
        let access = FILE_READ_ATTRIBUTES | SYNCHRONIZE;
        as_process(step, pid, || {
            self.with_target(&target, &params(access, FILE_OPEN, options), |h| {
                let (status, buffer) = files::query_information(h, layout.class, length);
                // An error returns nothing; a warning (STATUS_BUFFER_OVERFLOW) returns
                // the part that fit, which the caller reads as it is.
                if is_error(status) {
                    return Observation::status(status);
                }
                match decode::info(&layout, &buffer) {
                    Ok(info) => Observation {
                        info: Some(info),
                        ..Observation::status(status)
                    },
                    Err(why) => Observation {
                        malformed: Some(why),
                        ..Observation::status(status)
                    },
                }
            })
        })
    }

    fn get_reparse(&self, step: &Step) -> Result<Observation, String> {
        let (target, pid) = self.target(step)?;
        // As `fsutil reparsepoint query` opens: the reparse point itself.
        let p = params(
            FILE_READ_ATTRIBUTES | SYNCHRONIZE,
            FILE_OPEN,
            FILE_OPEN_REPARSE_POINT,
        );
        as_process(step, pid, || {
            self.with_target(&target, &p, |h| {
                let (status, buffer) = files::fs_control(
                    h,
                    FSCTL_GET_REPARSE_POINT,
                    &[],
                    MAXIMUM_REPARSE_DATA_BUFFER_SIZE as usize,
                );
                Observation {
                    data: (status >= 0).then_some(buffer),
                    ..Observation::status(status)
                }
            })
        })
    }

    fn set_or_delete_reparse(&self, step: &Step) -> Result<Observation, String> {
        let (target, pid) = self.target(step)?;
        let tag = tag_value(need(&step.tag, &step.op, "tag")?)?;
        let (code, input) = if step.op == "set_reparse" {
            let data = match &step.to {
                Some(to) if tag == IO_REPARSE_TAG_SYMLINK || tag == IO_REPARSE_TAG_MOUNT_POINT => {
                    link_data(tag, to)
                }
                Some(_) => {
                    return Err("`to` is the target of a symlink or mount point tag only".into());
                }
                None => TEST_REPARSE_DATA.to_vec(),
            };
            let inner = reparse_buffer(tag, &data);
            if step.ex {
                (FSCTL_SET_REPARSE_POINT_EX, reparse_buffer_ex(tag, &inner))
            } else {
                (FSCTL_SET_REPARSE_POINT, inner)
            }
        } else {
            (FSCTL_DELETE_REPARSE_POINT, reparse_buffer(tag, &[]))
        };
        // Setting and deleting need write access; the reparse point itself is opened.
        let p = params(READ_WRITE, FILE_OPEN, FILE_OPEN_REPARSE_POINT);
        as_process(step, pid, || {
            self.with_target(&target, &p, |h| {
                Observation::status(files::fs_control(h, code, &input, 0).0)
            })
        })
    }

    fn rename(&self, step: &Step) -> Result<Observation, String> {
        let (target, pid) = self.target(step)?;
        let to = need(&step.to, "rename", "to")?;
        // FILE_RENAME_INFORMATION with the NT form MoveFileEx passes (`\??\C:\…`).
        let name = utf16(&format!("\\??\\{to}"));
        let at_length = std::mem::offset_of!(FILE_RENAME_INFORMATION, FileNameLength);
        let at_name = std::mem::offset_of!(FILE_RENAME_INFORMATION, FileName);
        let mut input = vec![0u8; at_name];
        // ReplaceIfExists (MOVEFILE_REPLACE_EXISTING).
        input[0] = u8::from(step.replace == Some(true));
        put_u32(&mut input, at_length, name.len() as u32);
        input.extend_from_slice(&name);
        as_process(step, pid, || {
            // Explorer's delete is a rename into `X:\$Recycle.Bin\<sid>\`, which the shell
            // creates on the volume the first time the user recycles there.
            // (A failure shows as the rename's own: the path is not found.)
            if in_recycle_bin(to) {
                let _ = make_parents(to);
            }
            self.with_target(&target, &delete_params(), |h| {
                Observation::status(files::set_information(h, fs::FileRenameInformation, &input))
            })
        })
    }

    /// `link`, as CreateHardLink does it: the existing file opened for its attributes
    /// (its reparse point itself, not followed), then FileLinkInformation naming `to`
    /// in the NT form (`\??\C:\…`), never replacing.
    fn link(&self, step: &Step) -> Result<Observation, String> {
        let (target, pid) = self.target(step)?;
        let to = need(&step.to, "link", "to")?;
        let name = utf16(&format!("\\??\\{to}"));
        let at_length = std::mem::offset_of!(FILE_RENAME_INFORMATION, FileNameLength);
        let at_name = std::mem::offset_of!(FILE_RENAME_INFORMATION, FileName);
        // FILE_LINK_INFORMATION has FILE_RENAME_INFORMATION's layout.
        let mut input = vec![0u8; at_name];
        put_u32(&mut input, at_length, name.len() as u32);
        input.extend_from_slice(&name);
        let open = params(
            FILE_WRITE_ATTRIBUTES | SYNCHRONIZE,
            FILE_OPEN,
            FILE_OPEN_REPARSE_POINT,
        );
        as_process(step, pid, || {
            self.with_target(&target, &open, |h| {
                Observation::status(files::set_information(h, fs::FileLinkInformation, &input))
            })
        })
    }

    fn delete(&self, step: &Step) -> Result<Observation, String> {
        let (target, pid) = self.target(step)?;
        as_process(step, pid, || {
            self.with_target(&target, &delete_params(), |h| {
                Observation::status(files::set_information(
                    h,
                    fs::FileDispositionInformation,
                    &DISPOSITION_DELETE,
                ))
            })
        })
    }

    /// `pin` / `unpin`, as `attrib +P -U` / `attrib -P +U` (and CfSetPinState) do it:
    /// the pin state is FILE_ATTRIBUTE_PINNED / FILE_ATTRIBUTE_UNPINNED, set with
    /// FileBasicInformation (times left alone) after reading the current attributes.
    fn pin(&self, step: &Step) -> Result<Observation, String> {
        let (target, pid) = self.target(step)?;
        let (set, clear) = if step.op == "pin" {
            (FILE_ATTRIBUTE_PINNED, FILE_ATTRIBUTE_UNPINNED)
        } else {
            (FILE_ATTRIBUTE_UNPINNED, FILE_ATTRIBUTE_PINNED)
        };
        let access = FILE_READ_ATTRIBUTES | FILE_WRITE_ATTRIBUTES | SYNCHRONIZE;
        as_process(step, pid, || {
            self.with_target(&target, &params(access, FILE_OPEN, 0), |h| {
                let (status, buffer) = files::query_information(
                    h,
                    fs::FileBasicInformation,
                    size_of::<FILE_BASIC_INFORMATION>(),
                );
                if status < 0 {
                    return Observation::status(status);
                }
                let at = std::mem::offset_of!(FILE_BASIC_INFORMATION, FileAttributes);
                let Some(current) = buffer
                    .get(at..at + 4)
                    .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                else {
                    return Observation {
                        malformed: Some(format!(
                            "FileBasicInformation answer of {} bytes",
                            buffer.len()
                        )),
                        ..Observation::status(status)
                    };
                };
                // NORMAL means "no other attribute" and may not be combined.
                let attributes = (current | set) & !clear & !FILE_ATTRIBUTE_NORMAL;
                let mut input = vec![0u8; size_of::<FILE_BASIC_INFORMATION>()];
                put_u32(&mut input, at, attributes);
                Observation::status(files::set_information(h, fs::FileBasicInformation, &input))
            })
        })
    }

    fn state(&self, step: &Step) -> Outcome {
        let Some(path) = &step.path else {
            return Outcome::Invalid("`state` needs `path`".into());
        };
        let found = files::with_volume(path, |ntfs, rel| {
            let node = ntfs.node(ntfs.lookup(rel)?)?;
            let tag = node
                .reparse
                .as_deref()
                .and_then(|r| r.get(0..4))
                .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
            let allocated = cut(ntfs.allocated_ranges(node.id), node.size);
            let blob = (tag == cloudflt_proto::reparse::TAG)
                .then(|| blob(node.reparse.as_deref().unwrap_or_default(), node.size));
            Some(GroundState {
                tag,
                allocated,
                size: node.size,
                attributes: node.attributes,
                blob,
                registered: None,
                populated: None,
            })
        });
        let wants_registered = step.expect.as_ref().is_some_and(|e| e.registered.is_some());
        let wants_populated = step.expect.as_ref().is_some_and(|e| e.populated.is_some());
        let found = found.map(|state| {
            state.map(|mut state| {
                if wants_registered {
                    let admin = *self
                        .admin
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner);
                    // Asked by the runner's administrator process; none running (no
                    // driver loaded) means nothing answers.
                    state.registered = Some(
                        admin.is_some_and(|pid| process::run_as(pid, || is_registered_root(path))),
                    );
                }
                if wants_populated {
                    state.populated = Some(match &state.blob {
                        Some(Ok(blob)) => blob.populated_directory,
                        Some(Err(_)) => false,
                        None => {
                            let admin = *self
                                .admin
                                .lock()
                                .unwrap_or_else(std::sync::PoisonError::into_inner);
                            admin.is_some_and(|pid| process::run_as(pid, || root_populated(path)))
                        }
                    });
                }
                state
            })
        });
        Outcome::Observed(match found {
            Err(status) => Observation::status(status),
            Ok(None) => Observation::status(STATUS_OBJECT_NAME_NOT_FOUND),
            Ok(Some(state)) => Observation {
                state: Some(Box::new(state)),
                ..Observation::status(STATUS_SUCCESS)
            },
        })
    }

    /// Runs a provider operation (`connect`, `disconnect`, `kill`, `create_placeholders`,
    /// `convert`, `hydrate`, `dehydrate`, `update`, `set_in_sync`, `provider_stats`) on the
    /// calling thread.
    pub(crate) fn perform_provider_op(&self, step: &Step) -> Outcome {
        if self.without_driver {
            return Outcome::Skipped;
        }
        let Some(name) = &step.provider else {
            return Outcome::Invalid(format!("`{}` needs `provider`", step.op));
        };
        let Some(provider) = self.provider(name) else {
            return Outcome::Invalid(format!("`provider = {name:?}` names no provider"));
        };
        let path = || need(&step.path, &step.op, "path");
        let result = match step.op.as_str() {
            "connect" => Ok(provider.connect()),
            "register" => provider.register(&step.flags),
            "unregister" => Ok(provider.unregister()),
            "disconnect" => provider.disconnect(),
            "kill" => provider.kill(),
            "create_placeholders" => {
                provider.create_placeholders(step.paths.as_deref(), step.populate != Some(false))
            }
            "convert" => path().and_then(|p| provider.convert(p)),
            "hydrate" | "dehydrate" => path().and_then(|p| {
                provider.hydrate_or_dehydrate(step.op == "dehydrate", p, step.offset, step.length)
            }),
            "update" => path().and_then(|p| {
                let flag = |v: Option<bool>| v.unwrap_or(false);
                provider.update(
                    p,
                    UpdateStep {
                        dehydrate: flag(step.dehydrate),
                        mark_in_sync: flag(step.mark_in_sync),
                        clear_in_sync: flag(step.clear_in_sync),
                        if_unchanged: flag(step.if_unchanged),
                    },
                )
            }),
            "set_in_sync" => path().and_then(|p| {
                let in_sync = need(&step.in_sync, "set_in_sync", "in_sync")?;
                provider.set_in_sync(p, *in_sync, step.if_unchanged.unwrap_or(false))
            }),
            "provider_stats" => {
                return Outcome::Observed(Observation {
                    stats: Some(provider.stats()),
                    ..Observation::status(STATUS_SUCCESS)
                });
            }
            other => Err(format!("`{other}` is not a provider operation")),
        };
        match result {
            Ok(status) => Outcome::Observed(Observation::status(status)),
            Err(why) => Outcome::Invalid(why),
        }
    }
}

/// The content a `write`, `overwrite` or `remote_write` step carries: `text`, `hex`, or
/// `size` + `seed` (for `write`, the bytes a file created with that seed holds at the
/// step's offset, as `data = "seed:N"` reads them).
fn content_of(step: &Step) -> Result<Vec<u8>, String> {
    let op = &step.op;
    match (&step.text, &step.hex, step.size, step.seed) {
        (Some(text), None, None, None) => Ok(text.as_bytes().to_vec()),
        (None, Some(hex), None, None) => content::parse_hex(hex),
        (None, None, Some(size), Some(seed)) => {
            let offset = if op == "write" {
                step.offset.unwrap_or(0)
            } else {
                0
            };
            Ok(content::seeded_range(
                seed,
                offset.saturating_add(size),
                offset,
                size,
            ))
        }
        (None, None, Some(_), None) => Err(format!("`{op}` with `size` needs `seed`")),
        (None, None, None, Some(_)) => Err(format!("`{op}`: `seed` goes with `size`")),
        _ => Err(format!(
            "`{op}` needs one of `text`, `hex` or `size` + `seed`"
        )),
    }
}

/// Ranges cut at end of file, empty ones dropped, adjacent ones merged.
fn cut(ranges: impl IntoIterator<Item = (u64, u64)>, size: u64) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (start, length) in ranges {
        let end = start.saturating_add(length).min(size);
        if start >= end {
            continue;
        }
        match out.last_mut() {
            Some((s, l)) if *s + *l >= start => *l = (*s + *l).max(end) - *s,
            _ => out.push((start, end - start)),
        }
    }
    out
}

/// A placeholder's reparse point (the whole REPARSE_GUID_DATA_BUFFER NTFS holds),
/// decoded as the driver's own decoder reads it.
fn blob(reparse: &[u8], size: u64) -> Result<Blob, String> {
    let p = Placeholder::decode_reparse(reparse).map_err(|e| e.to_string())?;
    Ok(Blob {
        in_sync: p.flags.contains(PlaceholderFlags::IN_SYNC),
        pinned: p.flags.contains(PlaceholderFlags::PINNED),
        file_size: p.file_size,
        ranges: cut(p.ranges.iter().map(|r| (r.offset, r.length)), size),
        modified: cut(p.modified.iter().map(|r| (r.offset, r.length)), size),
        populated_directory: p.flags.contains(PlaceholderFlags::DIRECTORY)
            && !p.flags.contains(PlaceholderFlags::NOT_POPULATED),
    })
}

/// How MoveFileEx and DeleteFileW open: DELETE access, the name itself even if it is a
/// reparse point (a link is renamed or deleted, not its target), files or directories.
fn delete_params() -> OpenParams {
    params(
        DELETE | SYNCHRONIZE | FILE_READ_ATTRIBUTES,
        FILE_OPEN,
        FILE_OPEN_REPARSE_POINT,
    )
}

/// Whether `path` (`C:\…`) names something in a volume's recycle bin
/// (`C:\$Recycle.Bin\<sid>\…`).
fn in_recycle_bin(path: &str) -> bool {
    let mut parts = path.split('\\');
    parts.next();
    parts
        .next()
        .is_some_and(|p| p.eq_ignore_ascii_case("$Recycle.Bin"))
        && parts.next().is_some_and(|sid| !sid.is_empty())
        && parts.next().is_some()
}

/// Creates the missing directories above `path`, as `mkdir -p` would, each through the
/// I/O path as the calling process.
pub(crate) fn make_parents(path: &str) -> Result<(), NTSTATUS> {
    let Some((parent, _)) = path.trim_end_matches('\\').rsplit_once('\\') else {
        return Ok(());
    };
    make_directory(parent)
}

/// Creates `path` and every missing directory above it.
pub(crate) fn make_directory(path: &str) -> Result<(), NTSTATUS> {
    let mut at = String::new();
    for (i, part) in path.split('\\').enumerate() {
        if i > 0 {
            at.push('\\');
        }
        at.push_str(part);
        // The volume root (`C:`) exists.
        if i == 0 {
            continue;
        }
        let p = params(
            FILE_LIST_DIRECTORY | SYNCHRONIZE,
            FILE_OPEN_IF,
            FILE_DIRECTORY_FILE,
        );
        let h = files::create(&at, &p)?;
        files::close(h);
    }
    Ok(())
}

/// Runs `f` as the System process: what the machine does while it boots.
pub(crate) fn as_system<R>(f: impl FnOnce() -> R) -> R {
    process::run_as(SYSTEM_PID, f)
}

/// Whether `path` is itself a registered sync root marked populated
/// (DISABLE_ON_DEMAND_POPULATION_ON_ROOT in its registration), asked of the driver the
/// way CfGetSyncRootInfoByPath asks.
fn root_populated(path: &str) -> bool {
    let Ok(nt) = files::nt_path(path) else {
        return false;
    };
    match cloudflt::SyncRoot::info(&nt) {
        Ok(info) => {
            info.nt_root.eq_ignore_ascii_case(nt.trim_end_matches('\\'))
                && info.flags.contains(
                    cloudflt::registration::RootFlags::DISABLE_ON_DEMAND_POPULATION_ON_ROOT,
                )
        }
        Err(_) => false,
    }
}

/// Whether `path` is itself a registered sync root, asked of the driver the way
/// CfGetSyncRootInfoByPath asks.
fn is_registered_root(path: &str) -> bool {
    let Ok(nt) = files::nt_path(path) else {
        return false;
    };
    match cloudflt::SyncRoot::info(&nt) {
        Ok(info) => info.nt_root.eq_ignore_ascii_case(nt.trim_end_matches('\\')),
        Err(_) => false,
    }
}
