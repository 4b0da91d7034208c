//! The scenario runner (`cargo xtask scenario FILE...`): reads files in the format of
//! `shared/scenario-format.md`, builds the machine in the kernel model, runs each step with
//! the real driver and prints one line per step and a final `N passed, M failed`.
//!
//! Operations whose machinery is not built yet fail with `unsupported`, naming what they
//! need; they never pass silently. The runner acts only as Windows would: it never does a
//! cloudflt behaviour itself.

pub mod format;

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use windows_sys::Win32::Foundation::{
    NTSTATUS, STATUS_FLT_FILTER_NOT_FOUND, STATUS_IMAGE_ALREADY_LOADED, STATUS_SUCCESS,
};

use crate::model::{Machine, VolumeConfig};
use crate::ntstatus;
use format::{Expect, Scenario, Step};

pub use crate::model::DriverEntry;

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

/// What an operation produced.
enum Outcome {
    /// The NTSTATUS the operation returned.
    Status(NTSTATUS),
    /// The runner cannot carry the operation out yet.
    Unsupported(String),
    /// The step itself is wrong (unknown name, missing field).
    Invalid(String),
}

struct Run {
    machine: Machine,
    entry: DriverEntry,
    loaded: bool,
    scenario: Scenario,
}

/// Runs one scenario file, writing its lines to `out`.
pub fn run_file(path: &Path, entry: DriverEntry, out: &mut dyn Write) -> std::io::Result<Summary> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) => {
            writeln!(out, "FAIL {}: cannot read: {e}", path.display())?;
            return Ok(Summary {
                passed: 0,
                failed: 1,
            });
        }
    };
    let scenario: Scenario = match toml::from_str(&text) {
        Ok(s) => s,
        Err(e) => {
            let message = e.to_string().replace('\n', " ");
            writeln!(out, "FAIL {}: not a v1 scenario: {message}", path.display())?;
            return Ok(Summary {
                passed: 0,
                failed: 1,
            });
        }
    };
    writeln!(out, "scenario {}: {}", path.display(), scenario.description)?;
    let volumes = match volumes(&scenario) {
        Ok(v) => v,
        Err(message) => {
            writeln!(out, "FAIL [machine] {message}")?;
            return Ok(Summary {
                passed: 0,
                failed: 1,
            });
        }
    };
    let mut run = Run {
        machine: Machine::boot(&volumes),
        entry,
        loaded: false,
        scenario,
    };
    let steps = std::mem::take(&mut run.scenario.step);
    let mut summary = Summary::default();
    for (i, step) in steps.iter().enumerate() {
        summary += run.step(&format!("{}", i + 1), step, out)?;
    }
    summary += run.finish(out)?;
    Ok(summary)
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

impl Run {
    /// Runs one step (and, for `parallel`/`sequence`, its inner steps), printing a line
    /// for each.
    fn step(&mut self, label: &str, step: &Step, out: &mut dyn Write) -> std::io::Result<Summary> {
        if let Some(ms) = step.delay_ms {
            std::thread::sleep(Duration::from_millis(ms));
        }
        match step.op.as_str() {
            "sequence" | "parallel" => {
                // Concurrency needs operations that can block; until the file system and
                // provider machinery exist, inner steps run in order and a `parallel`
                // says so by failing as unsupported.
                let mut summary = Summary::default();
                if step.op == "parallel" {
                    summary += self.report(
                        label,
                        step,
                        Outcome::Unsupported("concurrent steps need the I/O model".into()),
                        out,
                    )?;
                }
                for (i, inner) in step.steps.iter().enumerate() {
                    summary += self.step(&format!("{label}.{}", i + 1), inner, out)?;
                }
                Ok(summary)
            }
            _ => {
                let outcome = self.perform(step);
                self.report(label, step, outcome, out)
            }
        }
    }

    fn perform(&mut self, step: &Step) -> Outcome {
        if let Some(actor) = &step.actor
            && !self.scenario.process.iter().any(|p| &p.name == actor)
            && !self.scenario.provider.iter().any(|p| &p.name == actor)
        {
            return Outcome::Invalid(format!("`as = {actor:?}` names no process or provider"));
        }
        if let Some(provider) = &step.provider
            && !self.scenario.provider.iter().any(|p| &p.name == provider)
        {
            return Outcome::Invalid(format!("`provider = {provider:?}` names no provider"));
        }
        match step.op.as_str() {
            "load_driver" => {
                if self.loaded {
                    // As `fltmc load` answers for a filter that is already running.
                    return Outcome::Status(STATUS_IMAGE_ALREADY_LOADED);
                }
                let status = self.machine.load_driver(self.entry);
                self.loaded = status >= 0;
                Outcome::Status(status)
            }
            "unload_driver" => {
                if !self.loaded {
                    return Outcome::Status(STATUS_FLT_FILTER_NOT_FOUND);
                }
                self.loaded = false;
                Outcome::Status(self.machine.unload_driver())
            }
            "wait" => match step.ms {
                Some(ms) => {
                    std::thread::sleep(Duration::from_millis(ms));
                    Outcome::Status(STATUS_SUCCESS)
                }
                None => Outcome::Invalid("`wait` needs `ms`".into()),
            },
            "connect"
            | "disconnect"
            | "kill"
            | "create_placeholders"
            | "convert"
            | "dehydrate"
            | "hydrate"
            | "provider_stats" => Outcome::Unsupported(format!(
                "`{}` needs sync providers (userlib over the model's port), not built yet",
                step.op
            )),
            "pin" | "unpin" | "create_file" | "open" | "close" | "read" | "write" | "list"
            | "query" | "get_reparse" | "set_reparse" | "delete_reparse" | "rename" | "delete"
            | "state" => Outcome::Unsupported(format!(
                "`{}` needs the model's NTFS volumes and I/O path, not built yet",
                step.op
            )),
            other => Outcome::Invalid(format!(
                "unknown operation `{other}` (format v1 has: {})",
                format::OPERATIONS.join(", ")
            )),
        }
    }

    /// Compares an outcome (and the verifier's findings) with the step's expectation and
    /// prints the step's line.
    fn report(
        &mut self,
        label: &str,
        step: &Step,
        outcome: Outcome,
        out: &mut dyn Write,
    ) -> std::io::Result<Summary> {
        let expect = step.expect.clone().unwrap_or_default();
        let mut problems = Vec::new();
        match outcome {
            Outcome::Unsupported(why) => problems.push(format!("unsupported: {why}")),
            Outcome::Invalid(why) => problems.push(format!("invalid step: {why}")),
            Outcome::Status(status) => {
                problems.extend(check_status(&expect, status));
                problems.extend(inapplicable(&expect, &step.op));
            }
        }
        let violations = self.machine.take_violations();
        problems.extend(violations.iter().map(|v| format!("verifier: {v}")));
        if problems.is_empty() {
            writeln!(out, "  ok   [{label}] {}", step.op)?;
            Ok(Summary {
                passed: 1,
                failed: 0,
            })
        } else {
            writeln!(out, "  FAIL [{label}] {}: {}", step.op, problems.join("; "))?;
            Ok(Summary {
                passed: 0,
                failed: 1,
            })
        }
    }

    /// Unloads a driver the scenario left loaded, so its leaks are still reported.
    fn finish(&mut self, out: &mut dyn Write) -> std::io::Result<Summary> {
        if !self.loaded {
            return Ok(Summary::default());
        }
        self.loaded = false;
        let status = self.machine.unload_driver();
        let violations = self.machine.take_violations();
        if status >= 0 && violations.is_empty() {
            return Ok(Summary::default());
        }
        let mut problems: Vec<String> = violations
            .iter()
            .map(|v| format!("verifier: {v}"))
            .collect();
        if status < 0 {
            problems.insert(
                0,
                format!("FilterUnload returned {}", ntstatus::name(status)),
            );
        }
        writeln!(
            out,
            "  FAIL [end] implicit unload_driver: {}",
            problems.join("; ")
        )?;
        Ok(Summary {
            passed: 0,
            failed: 1,
        })
    }
}

/// The status expectation: `status`, `failed = true`, or STATUS_SUCCESS by default.
fn check_status(expect: &Expect, status: NTSTATUS) -> Option<String> {
    match (&expect.status, expect.failed) {
        (Some(name), _) => match ntstatus::value(name) {
            None => Some(format!(
                "expected status {name} is not an NTSTATUS name the runner knows"
            )),
            Some(v) if v == status => None,
            Some(_) => Some(format!("expected {name}, got {}", ntstatus::name(status))),
        },
        (None, Some(true)) if status < 0 => None,
        (None, Some(true)) => Some(format!(
            "expected a failure, got {}",
            ntstatus::name(status)
        )),
        _ if status == STATUS_SUCCESS => None,
        _ => Some(format!(
            "expected STATUS_SUCCESS, got {}",
            ntstatus::name(status)
        )),
    }
}

/// Expectation fields the operation cannot produce: reported, never ignored.
fn inapplicable(expect: &Expect, op: &str) -> Option<String> {
    let set: Vec<&str> = [
        ("data", expect.data.is_some()),
        ("bytes", expect.bytes.is_some()),
        ("entries", expect.entries.is_some()),
        ("count", expect.count.is_some()),
        ("attributes_include", expect.attributes_include.is_some()),
        ("attributes_exclude", expect.attributes_exclude.is_some()),
        ("reparse_tag", expect.reparse_tag.is_some()),
        ("size", expect.size.is_some()),
        ("placeholder", expect.placeholder.is_some()),
        ("hydrated", expect.hydrated.is_some()),
        ("pinned", expect.pinned.is_some()),
        ("in_sync", expect.in_sync.is_some()),
        ("tag", expect.tag.is_some()),
        ("fetches", expect.fetches.is_some()),
        ("bytes_served", expect.bytes_served.is_some()),
        ("cancels", expect.cancels.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, present)| present.then_some(name))
    .collect();
    (!set.is_empty()).then(|| {
        format!(
            "`{op}` produces only a status; cannot check {}",
            set.join(", ")
        )
    })
}
