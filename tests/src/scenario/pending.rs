//! What of the format's additions ("the whole placeholder lifecycle") the runner does
//! not carry out yet, and which issue brings it: one table, so that whoever lands an
//! issue removes its rows (and the runner then must carry them out).
//!
//! Everything listed here is parsed (a misspelling is still an error) and fails with
//! `unsupported: … (issue N)`: a step whose operation or field is listed does not run;
//! a listed expectation field fails its step (the operation runs, its other fields are
//! checked); a listed `[[provider]]` field fails the machine line of the scenario (the
//! steps still run, each reported as usual). A field whose value is the format's
//! default (`modifiers = []`, `hard_links = "default"`, `on_delete = "allow"`,
//! `elevated = true`, `populate = true`, `replace = false`, …) asks for nothing the
//! runner does not do, and is accepted.

use super::format::{Expect, ProviderSpec, Step};

/// (what, issue). `do:X` an operation; `step.F` a step field; `expect.F` an expectation
/// field; `provider.F` a `[[provider]]` field; `files.dir` a directory entry in a
/// provider's `files`.
pub const PENDING: &[(&str, u32)] = &[];

fn issue(what: &str) -> Option<u32> {
    PENDING.iter().find(|(w, _)| *w == what).map(|(_, n)| *n)
}

fn say(what: &str, n: u32) -> String {
    format!("{what} (issue {n})")
}

/// Why the step cannot run yet: its operation, or one of its fields, is pending.
pub(crate) fn step(step: &Step) -> Option<String> {
    if let Some(n) = issue(&format!("do:{}", step.op)) {
        return Some(say(&format!("`{}`", step.op), n));
    }
    let fields = [
        (
            "step.replace",
            step.replace == Some(true),
            "`replace = true`",
        ),
        (
            "step.populate",
            step.populate == Some(false),
            "`populate = false`",
        ),
    ];
    fields
        .iter()
        .find(|(_, set, _)| *set)
        .and_then(|(key, _, what)| issue(key).map(|n| say(what, n)))
}

/// The expectation fields of a step that are pending.
pub(crate) fn expectations(expect: &Expect) -> Vec<String> {
    let fields = [
        ("modified", expect.modified.is_some()),
        ("registered", expect.registered.is_some()),
        ("populated", expect.populated.is_some()),
        ("populations", expect.populations.is_some()),
        ("validations", expect.validations.is_some()),
        ("deletes", expect.deletes.is_some()),
        ("renames", expect.renames.is_some()),
        ("dehydrates", expect.dehydrates.is_some()),
        ("opens", expect.opens.is_some()),
        ("closes", expect.closes.is_some()),
    ];
    fields
        .iter()
        .filter(|(_, set)| *set)
        .filter_map(|(name, _)| {
            issue(&format!("expect.{name}")).map(|n| say(&format!("expectation `{name}`"), n))
        })
        .collect()
}

/// The `[[provider]]` fields (and remote directory entries) that are pending, with a
/// value other than the format's default.
pub(crate) fn provider(p: &ProviderSpec) -> Vec<String> {
    let is = |v: &Option<String>, default: &str| v.as_deref().is_some_and(|v| v != default);
    let fields = [
        ("elevated", p.elevated == Some(false)),
        ("management", !p.management.is_empty()),
        ("hard_links", is(&p.hard_links, "default")),
        ("modifiers", !p.modifiers.is_empty()),
        ("on_validate", is(&p.on_validate, "allow")),
        ("notify", !p.notify.is_empty()),
        ("on_delete", is(&p.on_delete, "allow")),
        ("on_rename", is(&p.on_rename, "allow")),
        ("on_dehydrate", is(&p.on_dehydrate, "allow")),
    ];
    let mut out: Vec<String> = fields
        .iter()
        .filter(|(_, set)| *set)
        .filter_map(|(name, _)| {
            issue(&format!("provider.{name}"))
                .map(|n| say(&format!("provider {:?}: field `{name}`", p.name), n))
        })
        .collect();
    for name in &p.notify {
        if let Some(n) = issue(&format!("notify.{name}")) {
            out.push(say(
                &format!("provider {:?}: notification {name:?}", p.name),
                n,
            ));
        }
    }
    if p.files.iter().any(|f| f.dir == Some(true))
        && let Some(n) = issue("files.dir")
    {
        out.push(say(
            &format!("provider {:?}: directory entries in `files`", p.name),
            n,
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_row_is_reachable_and_names_an_open_issue() {
        for (what, n) in PENDING {
            assert!((12..=15).contains(n), "{what}: issue {n}");
            let (kind, _) = what.split_once(['.', ':']).expect("kind prefix");
            assert!(
                ["do", "step", "expect", "provider", "files", "notify"].contains(&kind),
                "{what}"
            );
        }
        let mut seen = std::collections::HashSet::new();
        assert!(
            PENDING.iter().all(|(w, _)| seen.insert(*w)),
            "duplicate rows"
        );
    }
}
