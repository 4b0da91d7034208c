//! The scenario runner (`cargo xtask scenario [--differential] FILE...`): reads files in
//! the format of `shared/scenario-format.md`, builds the machine in the kernel model, runs
//! each step with the real driver and prints one line per step and a final
//! `N passed, M failed`.
//!
//! Owns: building the machine a scenario describes (volumes, the system root, processes,
//! providers' processes, sync-root directories and remote content), running steps in
//! order or on threads (`parallel`), reporting, and differential mode. The operations on
//! files live in `ops`, the providers (written with the real provider library) in
//! `provider`, the decoders of returned buffers in `decode`, the expectation checks in
//! `expect`, the seeded content in `content`.
//!
//! What the runner does, where the format page leaves it open:
//! - Booting creates the system root directory (`C:\Windows`): Windows installing itself.
//!   `[[process]]` entries become processes running their image (NT form) with their
//!   compatibility mode; each `[[provider]]` a process of its name running elevated, and
//!   its sync root is created if missing. A provider's remote files are its content:
//!   `text`, or `size` bytes generated from `seed` by splitmix64 (see `content`).
//! - Providers are the `cloudflt` library in the provider's process: `connect` is
//!   `SyncRoot::connect` with the provider's sync root, policies and timeout (name = the
//!   provider's name, version "1.0"); after `kill` (or a `crash_after` crash) it first
//!   starts a new process of the same image, elevated, and `as = "<provider>"` then means
//!   that process (a step as a dead provider is invalid). `disconnect` is
//!   `Connection::disconnect` of every connection the process holds; `kill` kills the
//!   process as the model's `Machine::kill_process` does (its handles close, its port
//!   disconnects) and nothing of the dead process sends anything afterwards.
//!   `create_placeholders` (`paths` are remote paths, or DOS paths under the sync root)
//!   creates directory placeholders for the parents first (an existing one is fine), then
//!   in-sync file placeholders of the remote size (and directory placeholders for the
//!   remote directories named); the identity of every placeholder is its root-relative
//!   path. With the default `populate = true` it then marks the root populated
//!   (`Connection::set_populated("", true)`; `paths = []` does only that), and every
//!   directory it made is complete; with `populate = false` every directory it makes,
//!   parents included, is not populated, and the root's state is left as it is (a root
//!   registered without `disable_on_demand_population_on_root` starts not populated). `convert` is `Connection::convert` in sync, data kept, same
//!   identity. `hydrate` / `dehydrate` take `offset` and `length` as the range (no
//!   `length`: to the end of file; neither: the whole file). Provider steps on a provider
//!   that is not connected are invalid. How fetches are answered, and what
//!   `provider_stats` counts (over every process of the provider), is in `provider`.
//! - `pin` / `unpin` (`as` a process or a provider, `path` or `handle`) set the pin state
//!   the way `attrib +P -U` / `attrib -P +U` and CfSetPinState do: FILE_ATTRIBUTE_PINNED
//!   or FILE_ATTRIBUTE_UNPINNED with FileBasicInformation (the other cleared), as that
//!   process, never through `Connection::set_pin`.
//! - Each operation opens as the Win32 call would: `read` with GENERIC_READ (non-cached
//!   reads with FILE_NO_INTERMEDIATE_BUFFERING), `write` and `create_file` (FILE_CREATE:
//!   an existing file is STATUS_OBJECT_NAME_COLLISION) with GENERIC_READ|GENERIC_WRITE,
//!   `list` with FILE_LIST_DIRECTORY and pages through 4 KiB buffers until
//!   STATUS_NO_MORE_FILES, `query` with FILE_READ_ATTRIBUTES, `pin` / `unpin` with
//!   FILE_READ_ATTRIBUTES|FILE_WRITE_ATTRIBUTES, `get_reparse`, `set_reparse`,
//!   `delete_reparse`, `rename` (`\??\` + `to`) and `delete` (FileDispositionInformation)
//!   on the reparse point itself (FILE_OPEN_REPARSE_POINT), as fsutil, MoveFileEx and
//!   DeleteFileW do. A step on a path needs `as`; a step on a kept `handle` runs as the
//!   process that opened it.
//! - `set_reparse` puts a Microsoft tag in a REPARSE_DATA_BUFFER, any other in a
//!   REPARSE_GUID_DATA_BUFFER with `ops::TEST_GUID` (cloudflt's own GUID for the
//!   `"cloudflt"` tag); the data is a fixed test string, or for IO_REPARSE_TAG_SYMLINK /
//!   MOUNT_POINT with `to` a link to `to`. `ex = true` sends REPARSE_DATA_BUFFER_EX with
//!   REPARSE_DATA_EX_FLAG_GIVEN_TAG_OR_NONE and the same tag as ExistingReparseTag.
//!   Windows has no FSCTL_DELETE_REPARSE_POINT_EX, so `delete_reparse` with `ex` is
//!   unsupported, saying so.
//! - `state` reads NTFS below every filter. `placeholder` is "carries cloudflt's tag";
//!   for such a file the reparse blob is decoded with `cloudflt_proto`'s decoder, and
//!   `hydrated` is the ranges it records (merged, cut at end of file), `in_sync` its
//!   IN_SYNC flag. A blob that does not decode fails the step (unless the expectation is
//!   only `tag`), and so does, always, a blob recording a range NTFS does not hold
//!   allocated: data is never reported present that is not on disk. For any other file
//!   `hydrated` is its allocated clusters cut at end of file and `in_sync` is false.
//!   `pinned` is FILE_ATTRIBUTE_PINNED on disk for every file (the blob's PINNED flag is
//!   only shown in a mismatch report).
//! - Additions to the format: `data = "seed:N"` (the bytes `create_file` writes for
//!   `seed = N`, at the step's offset), `bytes` on `write` (bytes written), `data` /
//!   `bytes` / `reparse_tag` on `get_reparse` (the buffer returned), `to` on
//!   `set_reparse` for links, `io = "noncached"` on `write`, `handle` on `pin` /
//!   `unpin`; one inner step of a `parallel` may load or unload the driver (it runs on
//!   the scenario's own thread, the others on threads of their own), so that unloading
//!   with requests pending can be written.
//! - Additions for placeholder visibility: `compat = "disguise_full"` in `[[process]]`
//!   (PHCM_DISGUISE_FULL_PLACEHOLDERS). `thread_compat = "default" | "disguise" |
//!   "expose" | "disguise_full"` on a step that runs as a process (`create_file`,
//!   `open`, `close`, `read`, `write`, `list`, `query`, `get_reparse`, `set_reparse`,
//!   `delete_reparse`, `rename`, `delete`, `pin`, `unpin`; with `as`, or on a kept
//!   `handle` as the process that opened it): the operation runs on a thread of that
//!   process whose own compatibility mode is set to that value first, with the provider
//!   library's `cloudflt::compat::ThreadModeGuard` (RtlSetThreadPlaceholderCompatibilityMode),
//!   and put back afterwards. `do = "set_compat"`, `as`, `mode` (the same four values):
//!   the process sets its own mode on one of its threads with
//!   `cloudflt::compat::set_process_mode` (RtlSetProcessPlaceholderCompatibilityMode);
//!   its status is that call's. `options = ["directory"]` on `open` opens a directory
//!   (FILE_DIRECTORY_FILE, GENERIC_READ), so that `list` and `query` can be done on a
//!   kept directory handle. `options = ["open_reparse_point"]` on `query` (on a path)
//!   opens with FILE_OPEN_REPARSE_POINT, as CreateFile with FILE_FLAG_OPEN_REPARSE_POINT
//!   before GetFileInformationByHandleEx: a link or another filter's reparse point is
//!   queried itself. `buffer = N` on `query` is the information buffer's length (default:
//!   the class's structure, plus room for a 260-character name where the class ends in
//!   one); an answer with a warning status (STATUS_BUFFER_OVERFLOW: FileAllInformation
//!   whose name did not fit) is decoded and checked as far as it was returned, an error
//!   returns nothing to check. A field of these additions on an operation it does not
//!   belong to (`thread_compat` on `state`, `buffer` on `list`, `options` on `read`, …)
//!   makes the step invalid rather than being ignored.
//! - `do = "image_rule"`, `image` (a DOS path `C:\Tools\app.exe`, a directory `C:\Tools`,
//!   or a bare file name `app.exe`), `visibility = "expose" | "disguise"`, or
//!   `remove = true` instead of `visibility`: an administrator sets or removes the rule
//!   for that image with the provider library's `cloudflt::admin::ImageRules` (connect,
//!   `set` or `remove`, disconnect), on a thread of the acting process. Without `as` the
//!   acting process is the runner's own: an elevated administrator running
//!   `<system_root>\System32\cloudfltadm.exe`, started after every other process and
//!   only when a step needs it. With `as` it is that process or provider, with its own
//!   token (`[[process]]` entries run as standard users, whom the port refuses). The
//!   status is the library's (a refused connection is mapped back from its Win32 error
//!   as `connect` is); removing a rule that is not there is STATUS_NOT_FOUND. Like the
//!   provider operations it needs the driver's port: differential mode's run without
//!   the driver skips it.
//! - The page's lifecycle additions: `set_size` opens as `write` does and sets
//!   FileEndOfFileInformation; `overwrite` is CreateFile(CREATE_ALWAYS), i.e.
//!   FILE_OVERWRITE_IF with GENERIC_READ|GENERIC_WRITE and FILE_ATTRIBUTE_NORMAL, one
//!   cached write, close; `remote_write` changes the provider's remote content only;
//!   `write` with `size` + `seed` writes the bytes a file of that seed holds at the
//!   step's offset; `reboot` is `Host::reboot`. Populations are answered from the remote
//!   listing of the directory asked for (see `provider`); `state.populated` is read from
//!   the directory's reparse data, and for a registered root from its registration as
//!   CfGetSyncRootInfoByPath returns it (asked by the runner's administrator). Nothing is
//!   pending; `pending` holds the table where an addition not yet built would be.
//! - At the end, handles still open are closed (the processes exit), providers disconnect
//!   and drop what they kept, every provider callback has returned (or the step `exit`
//!   fails after 60 s), then a driver left loaded is unloaded so its leaks are reported.
//!
//! Differential mode runs each scenario twice on fresh machines: without the driver
//! (`load_driver` / `unload_driver` steps and the provider operations — `connect`,
//! `disconnect`, `kill`, `create_placeholders`, `convert`, `hydrate`, `dehydrate`,
//! `provider_stats`, which need the driver's port — skipped) and with it loaded before
//! the first step. A step fails if either run fails its expectation or if what it
//! observed (status, data, entries, attributes, state) differs between the runs; both are
//! printed. It is meant for scenarios of ordinary files, which the driver must leave as
//! NTFS alone would.
//!
//! The runner acts only as Windows would: it never does a cloudflt behaviour itself.

pub mod format;
pub mod pending;

mod content;
mod decode;
mod expect;
mod ops;
mod provider;

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use windows_sys::Win32::Foundation::{
    STATUS_FLT_FILTER_NOT_FOUND, STATUS_IMAGE_ALREADY_LOADED, STATUS_SUCCESS,
};

use crate::model::files;
use crate::model::process::{
    PHCM_APPLICATION_DEFAULT, PHCM_DISGUISE_FULL_PLACEHOLDERS, PHCM_DISGUISE_PLACEHOLDER,
    PHCM_EXPOSE_PLACEHOLDERS,
};
use crate::model::{Machine, VolumeConfig};
use crate::ntstatus;
use expect::RemoteRoot;
use format::{Compat, Scenario, Step};
use ops::{Observation, Outcome, World};
use provider::Provider;

pub use crate::model::DriverEntry;
/// The bytes a remote file or `create_file` with `size` and `seed` holds.
pub use content::seeded;

/// Steps passed and failed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Steps whose expectation held.
    pub passed: usize,
    /// Steps whose expectation did not hold, were unsupported, or could not be read.
    pub failed: usize,
}

impl std::ops::AddAssign for Summary {
    fn add_assign(&mut self, other: Self) {
        self.passed += other.passed;
        self.failed += other.failed;
    }
}

const FAILED_ONCE: Summary = Summary {
    passed: 0,
    failed: 1,
};

/// The image of the runner's administrator process (under the system root's System32),
/// which sets image rules for `image_rule` steps without `as`.
const ADMIN_IMAGE: &str = "cloudfltadm.exe";

/// How to run a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Once, as written.
    Normal,
    /// Twice, without and with the driver, comparing what every step observed.
    Differential,
}

/// What one step did, and what was wrong with it.
struct Record {
    label: String,
    op: String,
    outcome: Outcome,
    problems: Vec<String>,
}

impl Record {
    fn new(label: &str, op: &str, outcome: Outcome, problems: Vec<String>) -> Self {
        Self {
            label: label.into(),
            op: op.into(),
            outcome,
            problems,
        }
    }
}

/// Runs one scenario file, writing its lines to `out`.
pub fn run_file(path: &Path, entry: DriverEntry, out: &mut dyn Write) -> std::io::Result<Summary> {
    run_file_as(path, entry, Mode::Normal, out)
}

/// Runs one scenario file in `mode`, writing its lines to `out`.
pub fn run_file_as(
    path: &Path,
    entry: DriverEntry,
    mode: Mode,
    out: &mut dyn Write,
) -> std::io::Result<Summary> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => {
            writeln!(out, "FAIL {}: cannot read: {e}", path.display())?;
            return Ok(FAILED_ONCE);
        }
    };
    let parse = || toml::from_str::<Scenario>(&text);
    let scenario = match parse() {
        Ok(s) => s,
        Err(e) => {
            let message = e.to_string().replace('\n', " ");
            writeln!(out, "FAIL {}: not a v1 scenario: {message}", path.display())?;
            return Ok(FAILED_ONCE);
        }
    };
    let suffix = if mode == Mode::Differential {
        " (differential: without and with the driver)"
    } else {
        ""
    };
    writeln!(
        out,
        "scenario {}: {}{suffix}",
        path.display(),
        scenario.description
    )?;
    match mode {
        Mode::Normal => {
            let mut summary = Summary::default();
            let mut print = |r: &Record| -> std::io::Result<()> {
                summary += report(out, r)?;
                Ok(())
            };
            if let Err(message) = run_once(scenario, entry, Pass::AsWritten, &mut print)? {
                writeln!(out, "  FAIL [machine] {message}")?;
                summary += FAILED_ONCE;
            }
            Ok(summary)
        }
        Mode::Differential => {
            let mut plain = Vec::new();
            let mut filtered = Vec::new();
            for (pass, records) in [
                (Pass::WithoutDriver, &mut plain),
                (Pass::WithDriver, &mut filtered),
            ] {
                let scenario = parse().map_err(std::io::Error::other)?;
                let mut keep = |r: &Record| -> std::io::Result<()> {
                    records.push(Record::new(
                        &r.label,
                        &r.op,
                        r.outcome.clone(),
                        r.problems.clone(),
                    ));
                    Ok(())
                };
                if let Err(message) = run_once(scenario, entry, pass, &mut keep)? {
                    writeln!(out, "  FAIL [machine] {message}")?;
                    return Ok(FAILED_ONCE);
                }
            }
            let mut summary = Summary::default();
            for r in merge(plain, filtered) {
                summary += report(out, &r)?;
            }
            Ok(summary)
        }
    }
}

/// Which run of a scenario this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pass {
    /// As written.
    AsWritten,
    /// Differential mode, never loading the driver.
    WithoutDriver,
    /// Differential mode, the driver loaded before the first step.
    WithDriver,
}

/// Builds the machine and runs every step, handing each record to `emit` as it is made.
/// The inner Err is a machine the runner cannot build.
fn run_once(
    mut scenario: Scenario,
    entry: DriverEntry,
    pass: Pass,
    emit: &mut dyn FnMut(&Record) -> std::io::Result<()>,
) -> std::io::Result<Result<(), String>> {
    let steps = std::mem::take(&mut scenario.step);
    let volumes = match volumes(&scenario) {
        Ok(v) => v,
        Err(message) => return Ok(Err(message)),
    };
    let mut machine = Machine::boot(&volumes);
    let world = match build(&machine, &scenario, &steps, pass) {
        Ok(world) => world,
        Err(message) => {
            // Whatever the model noticed while booting belongs to the failed machine.
            machine.take_violations();
            return Ok(Err(message));
        }
    };
    // `[[provider]]` fields the runner cannot carry out yet fail the machine's line; the
    // steps still run and report as usual.
    for p in &scenario.provider {
        for why in pending::provider(p) {
            emit(&Record::new(
                "machine",
                "provider",
                Outcome::Unsupported(why.clone()),
                vec![format!("unsupported: {why}")],
            ))?;
        }
    }
    let mut run = Run {
        world,
        host: Host {
            machine,
            entry,
            loaded: false,
            pass,
        },
    };
    if pass == Pass::WithDriver {
        let outcome = run.host.load();
        let mut problems: Vec<String> = match &outcome {
            Outcome::Observed(seen) if seen.status < 0 => vec![format!(
                "DriverEntry returned {}",
                ntstatus::name(seen.status)
            )],
            _ => Vec::new(),
        };
        problems.extend(
            run.host
                .machine
                .take_violations()
                .iter()
                .map(|v| format!("verifier: {v}")),
        );
        if !problems.is_empty() {
            emit(&Record::new("start", "load_driver", outcome, problems))?;
        }
    }
    for (i, step) in steps.iter().enumerate() {
        for record in run.host.step(&run.world, &format!("{}", i + 1), step) {
            emit(&record)?;
        }
    }
    if let Some(record) = run.finish() {
        emit(&record)?;
    }
    Ok(Ok(()))
}

/// `C` is `\Device\HarddiskVolume1`, `D` the second, and so on.
fn volumes(scenario: &Scenario) -> Result<Vec<VolumeConfig>, String> {
    scenario
        .machine
        .volumes
        .iter()
        .map(|letter| match letter.as_bytes() {
            [c] if c.is_ascii_alphabetic() && c.to_ascii_uppercase() >= b'C' => Ok(
                VolumeConfig::ntfs(u32::from(c.to_ascii_uppercase() - b'C') + 1),
            ),
            _ => Err(format!(
                "volume {letter:?} is not a drive letter from C to Z"
            )),
        })
        .collect()
}

/// Whether a step, or one inside it, needs the runner's administrator: an `image_rule`
/// without `as`, or a `state` that asks whether a path is a registered sync root or a
/// populated one.
fn needs_admin(step: &Step) -> bool {
    (step.op == "image_rule" && step.actor.is_none())
        || step
            .expect
            .as_ref()
            .is_some_and(|e| e.registered.is_some() || e.populated.is_some())
        || step.steps.iter().any(needs_admin)
}

/// The booted machine's processes, directories and remote content; the runner's
/// administrator process when `steps` need it.
fn build(
    machine: &Machine,
    scenario: &Scenario,
    steps: &[Step],
    pass: Pass,
) -> Result<World, String> {
    let root = &scenario.machine.system_root;
    ops::as_system(|| ops::make_directory(root)).map_err(|s| {
        format!(
            "cannot create the system root {root}: {}",
            ntstatus::name(s)
        )
    })?;
    let root_nt = files::nt_path(root)
        .map_err(|s| format!("system root {root} is on no volume ({})", ntstatus::name(s)))?;
    machine.set_symbolic_link("\\SystemRoot", &root_nt);
    let mut pids = HashMap::new();
    let mut boot = Vec::new();
    let mut remote = Vec::new();
    let image = |image: &str, who: &str| {
        files::nt_path(image).map_err(|s| {
            format!(
                "{who}: image {image} is on no volume of the machine ({})",
                ntstatus::name(s)
            )
        })
    };
    for p in &scenario.process {
        let compat = match p.compat {
            Compat::Default => PHCM_APPLICATION_DEFAULT,
            Compat::Disguise => PHCM_DISGUISE_PLACEHOLDER,
            Compat::Expose => PHCM_EXPOSE_PLACEHOLDERS,
            Compat::DisguiseFull => PHCM_DISGUISE_FULL_PLACEHOLDERS,
        };
        let nt = image(&p.image, &p.name)?;
        // Ordinary processes run with a standard user token.
        let pid = machine.spawn_process(&nt, compat, false);
        if pids.insert(p.name.clone(), pid).is_some() {
            return Err(format!("two processes are named {:?}", p.name));
        }
        boot.push((p.name.clone(), nt, compat));
    }
    let mut providers = Vec::new();
    for p in &scenario.provider {
        let nt = image(&p.image, &p.name)?;
        if pids.contains_key(&p.name) || providers.iter().any(|q: &Provider| q.name() == p.name) {
            return Err(format!(
                "a process or provider is already named {:?}",
                p.name
            ));
        }
        // A sync provider runs elevated unless `elevated = false`: then as the standard
        // user the `[[process]]` entries run as.
        let pid = machine.spawn_process(&nt, PHCM_APPLICATION_DEFAULT, p.elevated != Some(false));
        crate::model::process::run_as(pid, || ops::make_directory(&p.sync_root)).map_err(|s| {
            format!(
                "{}: cannot create the sync root {}: {}",
                p.name,
                p.sync_root,
                ntstatus::name(s)
            )
        })?;
        let mut files = Vec::new();
        let mut dirs = Vec::new();
        for f in &p.files {
            if f.dir == Some(true) {
                if f.text.is_some() || f.size.is_some() || f.seed.is_some() {
                    return Err(format!(
                        "{}: remote directory {:?} takes no `text`, `size` or `seed`",
                        p.name, f.path
                    ));
                }
                dirs.push(f.path.replace('/', "\\").trim_matches('\\').to_string());
                continue;
            }
            let bytes = match (&f.text, f.size, f.seed) {
                (Some(text), None, None) => text.as_bytes().to_vec(),
                (None, Some(size), Some(seed)) => content::seeded(seed, size),
                _ => {
                    return Err(format!(
                        "{}: remote file {:?} needs `text`, or `size` and `seed`",
                        p.name, f.path
                    ));
                }
            };
            files.push((
                f.path.replace('/', "\\").trim_matches('\\').to_string(),
                bytes,
            ));
        }
        let root = Arc::new(RemoteRoot::new(p.sync_root.clone(), files, dirs));
        providers.push(Provider::new(p, nt, pid, root.clone())?);
        remote.push(root);
    }
    // Started last, so that the scenario's own processes keep the pids they would have
    // without it.
    let admin_image = if steps.iter().any(needs_admin) {
        let path = format!("{}\\System32\\{ADMIN_IMAGE}", root.trim_end_matches('\\'));
        Some(image(&path, "the administrator")?)
    } else {
        None
    };
    let admin = admin_image
        .as_ref()
        .map(|image| machine.spawn_process(image, PHCM_APPLICATION_DEFAULT, true));
    Ok(World {
        pids: Mutex::new(pids),
        boot,
        admin_image,
        handles: Mutex::new(HashMap::new()),
        remote,
        providers,
        without_driver: pass == Pass::WithoutDriver,
        admin: Mutex::new(admin),
    })
}

struct Run {
    world: World,
    host: Host,
}

/// The machine and the driver's load state: what only the thread running the scenario
/// may touch (loading and unloading need the machine itself).
struct Host {
    machine: Machine,
    entry: DriverEntry,
    loaded: bool,
    pass: Pass,
}

/// Whether a step loads or unloads the driver (or reboots), itself or inside it.
fn needs_machine(step: &Step) -> bool {
    matches!(step.op.as_str(), "load_driver" | "unload_driver" | "reboot")
        || step.steps.iter().any(needs_machine)
}

impl Host {
    /// Runs one step (and, for `parallel` / `sequence`, its inner steps): a record for
    /// each operation.
    fn step(&mut self, world: &World, label: &str, step: &Step) -> Vec<Record> {
        if let Some(ms) = step.delay_ms {
            std::thread::sleep(Duration::from_millis(ms));
        }
        match step.op.as_str() {
            "sequence" => step
                .steps
                .iter()
                .enumerate()
                .flat_map(|(i, inner)| self.step(world, &format!("{label}.{}", i + 1), inner))
                .collect(),
            "parallel" => {
                let mut records = self.parallel(world, label, step);
                // Rule breaks during concurrent steps belong to no single one of them.
                let violations: Vec<String> = self
                    .machine
                    .take_violations()
                    .iter()
                    .map(|v| format!("verifier: {v}"))
                    .collect();
                if !violations.is_empty() {
                    records.push(Record::new(
                        label,
                        "parallel",
                        Outcome::Observed(Observation::default()),
                        violations,
                    ));
                }
                records
            }
            "reboot" => {
                let outcome = match misplaced(step).or_else(|| no_fields(step)) {
                    Some(why) => Outcome::Invalid(why),
                    None => self.reboot(world),
                };
                let problems = self.problems_of(world, step, &outcome);
                vec![Record::new(label, &step.op, outcome, problems)]
            }
            "load_driver" | "unload_driver" => {
                let outcome = if self.pass == Pass::WithoutDriver {
                    Outcome::Skipped
                } else if step.op == "load_driver" {
                    self.load()
                } else {
                    self.unload()
                };
                let problems = self.problems_of(world, step, &outcome);
                vec![Record::new(label, &step.op, outcome, problems)]
            }
            _ => {
                let outcome = world.perform(step);
                let problems = self.problems_of(world, step, &outcome);
                vec![Record::new(label, &step.op, outcome, problems)]
            }
        }
    }

    /// Runs a `parallel`'s inner steps concurrently: each on its own thread, except the
    /// one that loads or unloads the driver (at most one may), which runs on this thread
    /// since it needs the machine. Their records in step order.
    fn parallel(&mut self, world: &World, label: &str, step: &Step) -> Vec<Record> {
        let on_host: Vec<usize> = (0..step.steps.len())
            .filter(|i| needs_machine(&step.steps[*i]))
            .collect();
        if on_host.len() > 1 {
            let why = "at most one inner step of a `parallel` may load or unload the driver";
            return vec![Record::new(
                label,
                "parallel",
                Outcome::Invalid(why.into()),
                vec![format!("invalid step: {why}")],
            )];
        }
        std::thread::scope(|scope| {
            let threads: Vec<_> = step
                .steps
                .iter()
                .enumerate()
                .map(|(i, inner)| {
                    let label = format!("{label}.{}", i + 1);
                    (!on_host.contains(&i))
                        .then(|| scope.spawn(move || world.on_thread(&label, inner)))
                })
                .collect();
            let mut host_records = on_host
                .first()
                .map(|i| self.step(world, &format!("{label}.{}", i + 1), &step.steps[*i]));
            threads
                .into_iter()
                .zip(&step.steps)
                .enumerate()
                .flat_map(|(i, (t, inner))| match t {
                    None => host_records.take().unwrap_or_default(),
                    Some(t) => t.join().unwrap_or_else(|_| {
                        vec![Record::new(
                            &format!("{label}.{}", i + 1),
                            &inner.op,
                            Outcome::Invalid("the step's thread panicked".into()),
                            vec!["the step's thread panicked".into()],
                        )]
                    }),
                })
                .collect()
        })
    }

    fn load(&mut self) -> Outcome {
        if self.loaded {
            // As `fltmc load` answers for a filter that is already running.
            return Outcome::Observed(Observation {
                status: STATUS_IMAGE_ALREADY_LOADED,
                ..Observation::default()
            });
        }
        let status = self.machine.load_driver(self.entry);
        self.loaded = status >= 0;
        Outcome::Observed(Observation {
            status,
            ..Observation::default()
        })
    }

    fn unload(&mut self) -> Outcome {
        let status = if self.loaded {
            self.loaded = false;
            self.machine.unload_driver()
        } else {
            STATUS_FLT_FILTER_NOT_FOUND
        };
        Outcome::Observed(Observation {
            status,
            ..Observation::default()
        })
    }

    /// `reboot`: every process ends (the scenario's handles close as they exit,
    /// providers' processes die as at `kill`), the driver is unloaded if loaded (its
    /// leaks are the step's verifier findings), the lazy writer writes back what is
    /// still dirty (shutdown), the driver is loaded again if it was, and the
    /// `[[process]]` entries (and the runner's administrator) start again with new pids.
    /// The disks keep their contents; providers' statistics and remote content stay;
    /// each provider must `connect` again, from a new process.
    ///
    /// The model keeps one kernel across it (no fresh kernel state is built): after every
    /// process has ended and the driver unloaded nothing of a boot is left in it that a
    /// scenario can observe, except the disks, which are meant to stay.
    fn reboot(&mut self, world: &World) -> Outcome {
        world.close_all();
        for p in &world.providers {
            p.end_process();
        }
        let pids: Vec<u32> = world
            .pids
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .copied()
            .chain(
                *world
                    .admin
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
            )
            .collect();
        for pid in pids {
            let alive =
                crate::model::with_kernel(|k| k.processes.get(pid).is_some_and(|p| p.alive));
            if alive {
                self.machine.kill_process(pid);
            }
        }
        let was_loaded = self.loaded;
        let mut status = STATUS_SUCCESS;
        if was_loaded {
            self.loaded = false;
            status = self.machine.unload_driver();
        }
        crate::model::cache::lazy_write_all();
        if was_loaded && status >= 0 {
            status = self.machine.load_driver(self.entry);
            self.loaded = status >= 0;
        }
        let mut pids = world
            .pids
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (name, image, compat) in &world.boot {
            pids.insert(
                name.clone(),
                self.machine.spawn_process(image, *compat, false),
            );
        }
        if let Some(image) = &world.admin_image {
            *world
                .admin
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(
                self.machine
                    .spawn_process(image, PHCM_APPLICATION_DEFAULT, true),
            );
        }
        Outcome::Observed(Observation::status(status))
    }

    /// The step's problems, and the verifier's findings since the last step.
    fn problems_of(&mut self, world: &World, step: &Step, outcome: &Outcome) -> Vec<String> {
        let mut problems = world.problems(step, outcome);
        problems.extend(
            self.machine
                .take_violations()
                .iter()
                .map(|v| format!("verifier: {v}")),
        );
        problems
    }
}

impl Run {
    /// Closes the handles the scenario left open and lets the providers exit (the
    /// processes end), then unloads a driver the scenario left loaded, so its leaks are
    /// still reported.
    fn finish(&mut self) -> Option<Record> {
        self.world.close_all();
        let mut problems: Vec<String> = self
            .world
            .providers
            .iter()
            .flat_map(Provider::exit)
            .collect();
        let host = &mut self.host;
        if host.loaded {
            host.loaded = false;
            let status = host.machine.unload_driver();
            if status < 0 {
                problems.push(format!(
                    "implicit unload_driver: FilterUnload returned {}",
                    ntstatus::name(status)
                ));
            }
        }
        problems.extend(
            host.machine
                .take_violations()
                .iter()
                .map(|v| format!("verifier: {v}")),
        );
        (!problems.is_empty()).then(|| {
            Record::new(
                "end",
                "exit",
                Outcome::Observed(Observation::default()),
                problems,
            )
        })
    }
}

impl World {
    /// Runs a `parallel`'s inner steps on threads other than the scenario's: each on its
    /// own thread; their records in step order.
    fn parallel(&self, label: &str, step: &Step) -> Vec<Record> {
        std::thread::scope(|scope| {
            let threads: Vec<_> = step
                .steps
                .iter()
                .enumerate()
                .map(|(i, inner)| {
                    let label = format!("{label}.{}", i + 1);
                    scope.spawn(move || self.on_thread(&label, inner))
                })
                .collect();
            threads
                .into_iter()
                .zip(&step.steps)
                .enumerate()
                .flat_map(|(i, (t, inner))| {
                    t.join().unwrap_or_else(|_| {
                        vec![Record::new(
                            &format!("{label}.{}", i + 1),
                            &inner.op,
                            Outcome::Invalid("the step's thread panicked".into()),
                            vec!["the step's thread panicked".into()],
                        )]
                    })
                })
                .collect()
        })
    }

    /// One step on a thread of a `parallel`.
    fn on_thread(&self, label: &str, step: &Step) -> Vec<Record> {
        if let Some(ms) = step.delay_ms {
            std::thread::sleep(Duration::from_millis(ms));
        }
        match step.op.as_str() {
            "sequence" => step
                .steps
                .iter()
                .enumerate()
                .flat_map(|(i, inner)| self.on_thread(&format!("{label}.{}", i + 1), inner))
                .collect(),
            "parallel" => self.parallel(label, step),
            _ => {
                let outcome =
                    if matches!(step.op.as_str(), "load_driver" | "unload_driver" | "reboot") {
                        Outcome::Invalid(format!(
                            "`{}` cannot run on a `parallel`'s thread: only one inner step of \
                         the outermost `parallel` around it may load or unload",
                            step.op
                        ))
                    } else {
                        self.perform(step)
                    };
                let problems = self.problems(step, &outcome);
                vec![Record::new(label, &step.op, outcome, problems)]
            }
        }
    }

    /// Runs a step that needs no machine-wide action.
    fn perform(&self, step: &Step) -> Outcome {
        if let Some(actor) = &step.actor
            && self.pid_of_process(actor).is_none()
            && self.provider(actor).is_none()
        {
            return Outcome::Invalid(format!("`as = {actor:?}` names no process or provider"));
        }
        if let Some(provider) = &step.provider
            && self.provider(provider).is_none()
        {
            return Outcome::Invalid(format!("`provider = {provider:?}` names no provider"));
        }
        if let Some(why) = misplaced(step) {
            return Outcome::Invalid(why);
        }
        if let Some(why) = pending::step(step) {
            return Outcome::Unsupported(why);
        }
        match step.op.as_str() {
            "dehydrate" | "set_in_sync" if step.actor.is_some() => self.perform_app_op(step),
            "wait" => match step.ms {
                Some(ms) => {
                    std::thread::sleep(Duration::from_millis(ms));
                    Outcome::Observed(Observation::default())
                }
                None => Outcome::Invalid("`wait` needs `ms`".into()),
            },
            "connect"
            | "register"
            | "unregister"
            | "disconnect"
            | "kill"
            | "create_placeholders"
            | "convert"
            | "dehydrate"
            | "hydrate"
            | "update"
            | "set_in_sync"
            | "provider_stats" => self.perform_provider_op(step),
            "create_file" | "open" | "close" | "read" | "write" | "list" | "query"
            | "get_reparse" | "set_reparse" | "delete_reparse" | "rename" | "link" | "delete"
            | "pin" | "unpin" | "state" | "set_compat" => self.perform_file_op(step),
            "image_rule" => self.image_rule(step),
            "set_size" | "overwrite" => self.perform_file_op(step),
            "remote_write" => self.remote_write(step),
            "remote_delete" => self.remote_delete(step),
            other => Outcome::Invalid(format!(
                "unknown operation `{other}` (format v1 has: {})",
                format::OPERATIONS.join(", ")
            )),
        }
    }

    /// What is wrong with a step's outcome.
    fn problems(&self, step: &Step, outcome: &Outcome) -> Vec<String> {
        match outcome {
            Outcome::Unsupported(why) => vec![format!("unsupported: {why}")],
            Outcome::Invalid(why) => vec![format!("invalid step: {why}")],
            Outcome::Skipped => Vec::new(),
            Outcome::Observed(seen) => {
                let target = self.target_path(step);
                let mut problems = expect::check(step, seen, target.as_deref(), &self.remote);
                if let Some(expect) = &step.expect {
                    problems.extend(
                        pending::expectations(expect)
                            .into_iter()
                            .map(|why| format!("unsupported: {why}")),
                    );
                }
                problems
            }
        }
    }
}

/// The runner's additions that belong to one operation only: on any other, a field that
/// would be silently ignored is an invalid step instead.
fn misplaced(step: &Step) -> Option<String> {
    const ON_A_THREAD: [&str; 14] = [
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
        "pin",
        "unpin",
    ];
    let op = step.op.as_str();
    let fields = [
        (
            "thread_compat",
            step.thread_compat.is_some(),
            ON_A_THREAD.contains(&op),
        ),
        ("buffer", step.buffer.is_some(), op == "query"),
        (
            "options",
            !step.options.is_empty(),
            matches!(op, "open" | "query"),
        ),
        ("mode", step.mode.is_some(), op == "set_compat"),
        ("image", step.image.is_some(), op == "image_rule"),
        ("visibility", step.visibility.is_some(), op == "image_rule"),
        ("remove", step.remove, op == "image_rule"),
        ("flags", !step.flags.is_empty(), op == "register"),
        ("replace", step.replace.is_some(), op == "rename"),
        (
            "populate",
            step.populate.is_some(),
            op == "create_placeholders",
        ),
        ("dehydrate", step.dehydrate.is_some(), op == "update"),
        ("mark_in_sync", step.mark_in_sync.is_some(), op == "update"),
        (
            "clear_in_sync",
            step.clear_in_sync.is_some(),
            op == "update",
        ),
        (
            "if_unchanged",
            step.if_unchanged.is_some(),
            matches!(op, "update" | "set_in_sync"),
        ),
        ("in_sync", step.in_sync.is_some(), op == "set_in_sync"),
    ];
    let wrong: Vec<&str> = fields
        .iter()
        .filter(|(_, set, fits)| *set && !fits)
        .map(|(name, _, _)| *name)
        .collect();
    (!wrong.is_empty()).then(|| format!("`{op}` takes no {}", wrong.join(", ")))
}

/// `reboot` takes no fields but `expect` and `delay_ms`.
fn no_fields(step: &Step) -> Option<String> {
    let set = [
        ("as", step.actor.is_some()),
        ("path", step.path.is_some()),
        ("handle", step.handle.is_some()),
        ("provider", step.provider.is_some()),
        ("steps", !step.steps.is_empty()),
    ];
    let wrong: Vec<&str> = set.iter().filter(|(_, s)| *s).map(|(n, _)| *n).collect();
    (!wrong.is_empty()).then(|| format!("`{}` takes no {}", step.op, wrong.join(", ")))
}

/// Pairs the records of the two differential runs by label: a step fails if either run
/// failed it, or if the runs observed different things.
fn merge(plain: Vec<Record>, filtered: Vec<Record>) -> Vec<Record> {
    let mut plain: Vec<Option<Record>> = plain.into_iter().map(Some).collect();
    let mut merged = Vec::new();
    for f in filtered {
        let found = plain
            .iter_mut()
            .find(|p| {
                p.as_ref()
                    .is_some_and(|p| p.label == f.label && p.op == f.op)
            })
            .and_then(Option::take);
        let Some(p) = found else {
            merged.push(tagged(f, "with driver"));
            continue;
        };
        if p.outcome == Outcome::Skipped {
            // Load and unload run only with the driver: nothing to compare.
            merged.push(f);
            continue;
        }
        let mut problems = if p.problems == f.problems {
            f.problems.clone()
        } else {
            let mut both: Vec<String> = p
                .problems
                .iter()
                .map(|x| format!("without driver: {x}"))
                .collect();
            both.extend(f.problems.iter().map(|x| format!("with driver: {x}")));
            both
        };
        if let (Outcome::Observed(a), Outcome::Observed(b)) = (&p.outcome, &f.outcome)
            && let Some(diff) = expect::difference(a, b)
        {
            problems.insert(
                0,
                format!("differs (without driver vs with driver): {diff}"),
            );
        }
        merged.push(Record { problems, ..f });
    }
    merged.extend(
        plain
            .into_iter()
            .flatten()
            .map(|p| tagged(p, "without driver")),
    );
    merged
}

fn tagged(mut r: Record, run: &str) -> Record {
    r.problems = r.problems.iter().map(|x| format!("{run}: {x}")).collect();
    r
}

/// Prints a record's line; returns its count.
fn report(out: &mut dyn Write, r: &Record) -> std::io::Result<Summary> {
    if r.problems.is_empty() {
        writeln!(out, "  ok   [{}] {}", r.label, r.op)?;
        Ok(Summary {
            passed: 1,
            failed: 0,
        })
    } else {
        writeln!(
            out,
            "  FAIL [{}] {}: {}",
            r.label,
            r.op,
            r.problems.join("; ")
        )?;
        Ok(FAILED_ONCE)
    }
}

#[cfg(test)]
mod tests {
    //! The `state` step's strictness, on files crafted below every filter with the
    //! model's own file API (no driver loaded).

    use super::*;
    use crate::model::files::{IoMode, OpenParams};
    use cloudflt_proto::{ByteRange, Placeholder, PlaceholderFlags, RangeList};
    use windows_sys::Wdk::Storage::FileSystem::{
        FILE_CREATE, FILE_NON_DIRECTORY_FILE, FILE_OPEN_REPARSE_POINT,
        FILE_SYNCHRONOUS_IO_NONALERT, FileEndOfFileInformation,
    };
    use windows_sys::Win32::System::Ioctl::{FSCTL_SET_REPARSE_POINT, FSCTL_SET_SPARSE};

    const MACHINE: &str = r#"
[[provider]]
name = "mirror"
image = 'C:\Mirror\mirror.exe'
sync_root = 'C:\Cloud'
"#;

    /// A sparse 16 KiB file with its first 4 KiB written, carrying `reparse` (a whole
    /// REPARSE_GUID_DATA_BUFFER).
    fn craft(path: &str, reparse: &[u8]) {
        let params = OpenParams {
            access: 0x0012_019F,
            share: 0x7,
            disposition: FILE_CREATE,
            options: FILE_NON_DIRECTORY_FILE
                | FILE_OPEN_REPARSE_POINT
                | FILE_SYNCHRONOUS_IO_NONALERT,
            attributes: 0x80,
        };
        let h = files::create(path, &params).unwrap();
        assert_eq!(files::fs_control(h, FSCTL_SET_SPARSE, &[], 0).0, 0);
        assert_eq!(
            files::set_information(h, FileEndOfFileInformation, &16384i64.to_le_bytes()),
            0
        );
        files::write(h, 0, &[7u8; 4096], IoMode::NonCached).unwrap();
        assert_eq!(
            files::fs_control(h, FSCTL_SET_REPARSE_POINT, reparse, 0).0,
            0
        );
        files::close(h);
    }

    fn placeholder(ranges: &[ByteRange]) -> Vec<u8> {
        modified_placeholder(ranges, &[])
    }

    fn modified_placeholder(ranges: &[ByteRange], modified: &[ByteRange]) -> Vec<u8> {
        let p = Placeholder {
            flags: PlaceholderFlags::IN_SYNC,
            file_size: 16384,
            identity: b"p.bin",
            ranges: RangeList::from_slice(ranges),
            modified: RangeList::from_slice(modified),
            changes: 3,
        };
        let mut out = vec![0u8; p.reparse_len()];
        p.encode_reparse(&mut out).unwrap();
        out
    }

    /// Runs `steps` (TOML) on a machine where `setup` crafted the disk; each step's
    /// problems.
    fn problems(setup: impl FnOnce(), steps: &str) -> Vec<Vec<String>> {
        let mut scenario: Scenario = toml::from_str(&format!("{MACHINE}{steps}")).unwrap();
        let steps = std::mem::take(&mut scenario.step);
        let mut machine = Machine::boot(&volumes(&scenario).unwrap());
        let world = build(&machine, &scenario, &steps, Pass::AsWritten).unwrap();
        ops::as_system(setup);
        let found = steps
            .iter()
            .map(|step| world.problems(step, &world.perform(step)))
            .collect();
        machine.assert_clean();
        found
    }

    #[test]
    fn a_placeholder_reads_as_its_blob_records() {
        let found = problems(
            || craft(r"C:\Cloud\p.bin", &placeholder(&[ByteRange::new(0, 4096)])),
            r#"
[[step]]
do = "state"
path = 'C:\Cloud\p.bin'
expect = { placeholder = true, in_sync = true, hydrated = [[0, 4096]], pinned = false, tag = "cloudflt" }

[[step]]
do = "state"
path = 'C:\Cloud\p.bin'
expect = { hydrated = "none", in_sync = false }
"#,
        );
        assert_eq!(found[0], Vec::<String>::new());
        assert_eq!(
            found[1],
            [
                "expected in_sync = false, got true",
                "expected hydrated none, the placeholder records [(0, 4096)] of 16384 bytes"
            ]
        );
    }

    #[test]
    fn a_blob_claiming_data_ntfs_does_not_hold_fails_the_state_step() {
        let found = problems(
            || {
                craft(
                    r"C:\Cloud\p.bin",
                    &placeholder(&[ByteRange::new(0, 4096), ByteRange::new(8192, 4096)]),
                );
            },
            r#"
[[step]]
do = "state"
path = 'C:\Cloud\p.bin'
expect = { placeholder = true }
"#,
        );
        assert_eq!(
            found[0],
            [
                "the placeholder records [(8192, 4096)] as hydrated, but NTFS holds only \
              [(0, 4096)] allocated"
            ]
        );
    }

    #[test]
    fn a_blob_that_does_not_decode_is_reported_unless_only_the_tag_is_asked() {
        let mut bad = placeholder(&[ByteRange::new(0, 4096)]);
        // A flipped byte in the identity: the checksum no longer matches.
        let last = bad.len() - 20;
        bad[last] ^= 0xff;
        let found = problems(
            || craft(r"C:\Cloud\p.bin", &bad),
            r#"
[[step]]
do = "state"
path = 'C:\Cloud\p.bin'
expect = { tag = "cloudflt" }

[[step]]
do = "state"
path = 'C:\Cloud\p.bin'
expect = { placeholder = true, hydrated = [[0, 4096]] }
"#,
        );
        assert_eq!(found[0], Vec::<String>::new());
        assert_eq!(found[1].len(), 1, "{:?}", found[1]);
        assert!(
            found[1][0].starts_with("the placeholder's reparse data does not decode: "),
            "{:?}",
            found[1]
        );
    }

    #[test]
    fn modified_ranges_read_from_the_blob_and_compare_as_hydrated_ones_do() {
        let found = problems(
            || {
                craft(
                    r"C:\Cloud\p.bin",
                    &modified_placeholder(
                        &[ByteRange::new(0, 4096)],
                        &[ByteRange::new(10, 5), ByteRange::new(100, 1)],
                    ),
                );
                craft(r"C:\Cloud\q.bin", &placeholder(&[ByteRange::new(0, 4096)]));
            },
            r#"
[[step]]
do = "state"
path = 'C:\Cloud\p.bin'
expect = { modified = [[10, 5], [100, 1]], hydrated = [[0, 4096]] }

[[step]]
do = "state"
path = 'C:\Cloud\p.bin'
expect = { modified = "none" }

[[step]]
do = "state"
path = 'C:\Cloud\q.bin'
expect = { modified = "none" }

[[step]]
do = "state"
path = 'C:\Cloud\q.bin'
expect = { modified = "some" }
"#,
        );
        assert_eq!(found[0], Vec::<String>::new());
        assert_eq!(
            found[1],
            ["expected modified none, the placeholder records [(10, 5), (100, 1)] of 16384 bytes"]
        );
        assert_eq!(found[2], Vec::<String>::new());
        assert_eq!(
            found[3],
            ["modified \"some\" is not \"all\", \"none\" or ranges"]
        );
    }

    #[test]
    fn set_in_sync_as_a_process_runs_and_misplaced_update_fields_are_invalid() {
        let found = problems(
            || {},
            r#"
[[step]]
do = "set_in_sync"
as = "mirror"
path = 'C:\Cloud\p.bin'
in_sync = true

[[step]]
do = "state"
path = 'C:\Cloud\p.bin'
mark_in_sync = true

[[step]]
do = "set_in_sync"
provider = "mirror"
path = 'C:\Cloud\p.bin'
dehydrate = true
"#,
        );
        // It runs (no driver is loaded here, so its port is not there to take it).
        assert_eq!(
            found[0],
            ["expected STATUS_SUCCESS, got STATUS_OBJECT_NAME_NOT_FOUND"]
        );
        assert_eq!(found[1], ["invalid step: `state` takes no mark_in_sync"]);
        assert_eq!(found[2], ["invalid step: `set_in_sync` takes no dehydrate"]);
    }
}
