//! Comparing what a step observed with its `expect`, field by field; and comparing two
//! observations of the same step (differential mode).
//!
//! A field the operation cannot produce, or the information class does not carry, is a
//! failure that says so: an expectation is never skipped.

use std::sync::{Arc, RwLock};

use windows_sys::Win32::Foundation::{NTSTATUS, STATUS_SUCCESS};
use windows_sys::Win32::Storage::FileSystem as attr;

use super::content;
use super::decode::{self, Entry};
use super::format::{EntryExpect, Expect, Hydrated, Step, Tag};
use super::ops::{Observation, tag_value};
use crate::ntstatus;

/// A provider's remote content, by sync root. `remote_write` changes it while the
/// provider serves it.
pub(crate) struct RemoteRoot {
    /// The sync root, DOS form.
    pub sync_root: String,
    /// Paths relative to the sync root (`\`-separated) and their bytes.
    files: RwLock<Vec<(String, Arc<[u8]>)>>,
    /// Remote directories named as such (`dir = true`); the parents of every file and
    /// directory are remote directories too.
    dirs: Vec<String>,
}

/// One entry of a remote directory: its name, and its size (`None` for a directory).
pub(crate) type RemoteEntry = (String, Option<u64>);

impl RemoteRoot {
    pub(crate) fn new(sync_root: String, files: Vec<(String, Vec<u8>)>, dirs: Vec<String>) -> Self {
        Self {
            sync_root,
            files: RwLock::new(files.into_iter().map(|(p, b)| (p, b.into())).collect()),
            dirs,
        }
    }

    /// The remote directories named as such.
    pub(crate) fn dirs(&self) -> Vec<String> {
        self.dirs.clone()
    }

    /// Whether `rel` is a remote directory (named, or a parent of a remote entry).
    pub(crate) fn is_dir(&self, rel: &str) -> bool {
        let under = |p: &str| {
            p.len() > rel.len()
                && p.is_char_boundary(rel.len())
                && p[..rel.len()].eq_ignore_ascii_case(rel)
                && p[rel.len()..].starts_with('\\')
        };
        rel.is_empty()
            || self
                .dirs
                .iter()
                .any(|d| d.eq_ignore_ascii_case(rel) || under(d))
            || self.files().iter().any(|(p, _)| under(p))
    }

    /// The entries of the remote directory `rel` (empty: the root), in name order:
    /// files with their sizes, and subdirectories (named ones, and the parents of deeper
    /// entries), each once.
    pub(crate) fn listing(&self, rel: &str) -> Vec<RemoteEntry> {
        let prefix = if rel.is_empty() {
            String::new()
        } else {
            format!("{rel}\\")
        };
        let child = |p: &str| -> Option<String> {
            let rest = p
                .get(..prefix.len())
                .filter(|head| head.eq_ignore_ascii_case(&prefix))
                .and_then(|_| p.get(prefix.len()..))?;
            (!rest.is_empty()).then(|| rest.to_string())
        };
        let mut entries: Vec<RemoteEntry> = Vec::new();
        let mut add = |name: String, size: Option<u64>| {
            if !entries.iter().any(|(n, _)| n.eq_ignore_ascii_case(&name)) {
                entries.push((name, size));
            }
        };
        for (path, bytes) in self.files() {
            if let Some(rest) = child(&path) {
                match rest.split_once('\\') {
                    Some((dir, _)) => add(dir.to_string(), None),
                    None => add(rest, Some(bytes.len() as u64)),
                }
            }
        }
        for dir in &self.dirs {
            if let Some(rest) = child(dir) {
                let name = rest.split_once('\\').map_or(rest.as_str(), |(d, _)| d);
                add(name.to_string(), None);
            }
        }
        entries.sort_by_key(|(n, _)| n.to_lowercase());
        entries
    }

    /// Every remote file, in order.
    pub(crate) fn files(&self) -> Vec<(String, Arc<[u8]>)> {
        self.files
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// The remote file at `rel` (compared case-insensitively).
    pub(crate) fn get(&self, rel: &str) -> Option<(String, Arc<[u8]>)> {
        self.files
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .find(|(p, _)| p.eq_ignore_ascii_case(rel))
            .cloned()
    }

    /// The cloud copy of `rel` is removed; false if there was none.
    pub(crate) fn remove(&self, rel: &str) -> bool {
        let mut files = self
            .files
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let before = files.len();
        files.retain(|(p, _)| !p.eq_ignore_ascii_case(rel));
        files.len() != before
    }

    /// The cloud copy of `rel` becomes `bytes` (a new remote file if there was none).
    pub(crate) fn put(&self, rel: &str, bytes: Vec<u8>) {
        let mut files = self
            .files
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match files.iter_mut().find(|(p, _)| p.eq_ignore_ascii_case(rel)) {
            Some(file) => file.1 = bytes.into(),
            None => files.push((rel.to_string(), bytes.into())),
        }
    }
}

/// The expectation fields each operation can produce, beyond `status` / `failed`.
fn applicable(op: &str) -> &'static [&'static str] {
    match op {
        "read" => &["data", "bytes"],
        "write" => &["bytes"],
        // The reparse buffer as returned; its tag is the buffer's first field.
        "get_reparse" => &["data", "bytes", "reparse_tag"],
        "list" => &["entries", "count"],
        "query" => &[
            "attributes_include",
            "attributes_exclude",
            "reparse_tag",
            "size",
        ],
        "state" => &[
            "placeholder",
            "hydrated",
            "pinned",
            "in_sync",
            "tag",
            "size",
            "modified",
            "populated",
            "registered",
        ],
        "provider_stats" => &[
            "fetches",
            "bytes_served",
            "cancels",
            "populations",
            "validations",
            "deletes",
            "renames",
            "dehydrates",
            "opens",
            "closes",
        ],
        "overwrite" => &["bytes"],
        _ => &[],
    }
}

fn present(expect: &Expect) -> Vec<&'static str> {
    [
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
        ("modified", expect.modified.is_some()),
        ("populated", expect.populated.is_some()),
        ("registered", expect.registered.is_some()),
        ("populations", expect.populations.is_some()),
        ("validations", expect.validations.is_some()),
        ("deletes", expect.deletes.is_some()),
        ("renames", expect.renames.is_some()),
        ("dehydrates", expect.dehydrates.is_some()),
        ("opens", expect.opens.is_some()),
        ("closes", expect.closes.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, set)| set.then_some(name))
    .collect()
}

/// Expectation fields the operation cannot produce: reported, never ignored.
pub(crate) fn inapplicable(expect: &Expect, op: &str) -> Option<String> {
    let can = applicable(op);
    let wrong: Vec<&str> = present(expect)
        .into_iter()
        .filter(|f| !can.contains(f))
        .collect();
    (!wrong.is_empty()).then(|| {
        if can.is_empty() {
            format!(
                "`{op}` produces only a status; cannot check {}",
                wrong.join(", ")
            )
        } else {
            format!("`{op}` cannot check {}", wrong.join(", "))
        }
    })
}

/// The status expectation: `status`, `failed = true`, or STATUS_SUCCESS by default.
/// `status = "any"` (format additions) checks no status.
pub(crate) fn check_status(expect: &Expect, status: NTSTATUS) -> Option<String> {
    match (&expect.status, expect.failed) {
        (Some(name), _) if name == ANY_STATUS => None,
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

/// `status = "any"`: the step's status is not checked (format additions).
pub(crate) const ANY_STATUS: &str = "any";

/// Attribute names without the FILE_ATTRIBUTE_ prefix.
const ATTRIBUTES: [(&str, u32); 22] = [
    ("READONLY", attr::FILE_ATTRIBUTE_READONLY),
    ("HIDDEN", attr::FILE_ATTRIBUTE_HIDDEN),
    ("SYSTEM", attr::FILE_ATTRIBUTE_SYSTEM),
    ("DIRECTORY", attr::FILE_ATTRIBUTE_DIRECTORY),
    ("ARCHIVE", attr::FILE_ATTRIBUTE_ARCHIVE),
    ("DEVICE", attr::FILE_ATTRIBUTE_DEVICE),
    ("NORMAL", attr::FILE_ATTRIBUTE_NORMAL),
    ("TEMPORARY", attr::FILE_ATTRIBUTE_TEMPORARY),
    ("SPARSE_FILE", attr::FILE_ATTRIBUTE_SPARSE_FILE),
    ("REPARSE_POINT", attr::FILE_ATTRIBUTE_REPARSE_POINT),
    ("COMPRESSED", attr::FILE_ATTRIBUTE_COMPRESSED),
    ("OFFLINE", attr::FILE_ATTRIBUTE_OFFLINE),
    (
        "NOT_CONTENT_INDEXED",
        attr::FILE_ATTRIBUTE_NOT_CONTENT_INDEXED,
    ),
    ("ENCRYPTED", attr::FILE_ATTRIBUTE_ENCRYPTED),
    ("INTEGRITY_STREAM", attr::FILE_ATTRIBUTE_INTEGRITY_STREAM),
    ("VIRTUAL", attr::FILE_ATTRIBUTE_VIRTUAL),
    ("NO_SCRUB_DATA", attr::FILE_ATTRIBUTE_NO_SCRUB_DATA),
    ("RECALL_ON_OPEN", attr::FILE_ATTRIBUTE_RECALL_ON_OPEN),
    ("PINNED", attr::FILE_ATTRIBUTE_PINNED),
    ("UNPINNED", attr::FILE_ATTRIBUTE_UNPINNED),
    (
        "RECALL_ON_DATA_ACCESS",
        attr::FILE_ATTRIBUTE_RECALL_ON_DATA_ACCESS,
    ),
    // winnt.h; not in windows-sys 0.61.
    ("STRICTLY_SEQUENTIAL", 0x2000_0000),
];

fn attribute(name: &str) -> Result<u32, String> {
    ATTRIBUTES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, v)| *v)
        .ok_or_else(|| format!("{name:?} is not a FILE_ATTRIBUTE_ name (without the prefix)"))
}

/// `attributes` as names, for reports.
pub(crate) fn attribute_names(attributes: u32) -> String {
    let names: Vec<&str> = ATTRIBUTES
        .iter()
        .filter(|(_, v)| attributes & v != 0)
        .map(|(n, _)| *n)
        .collect();
    if names.is_empty() {
        format!("{attributes:#x}")
    } else {
        names.join("|")
    }
}

fn check_attributes(
    what: &str,
    attributes: u32,
    include: &[String],
    exclude: &[String],
    problems: &mut Vec<String>,
) {
    for name in include {
        match attribute(name) {
            Err(e) => problems.push(e),
            Ok(v) if attributes & v == 0 => problems.push(format!(
                "{what}expected {name} set, attributes are {}",
                attribute_names(attributes)
            )),
            Ok(_) => {}
        }
    }
    for name in exclude {
        match attribute(name) {
            Err(e) => problems.push(e),
            Ok(v) if attributes & v != 0 => problems.push(format!(
                "{what}expected {name} clear, attributes are {}",
                attribute_names(attributes)
            )),
            Ok(_) => {}
        }
    }
}

fn check_tag(what: &str, expected: &Tag, got: Option<u32>, problems: &mut Vec<String>) {
    match (tag_value(expected), got) {
        (Err(e), _) => problems.push(e),
        (Ok(_), None) => problems.push(format!("{what}is not carried by this answer")),
        (Ok(want), Some(got)) if want != got => {
            problems.push(format!("{what}expected {want:#010x}, got {got:#010x}"));
        }
        _ => {}
    }
}

/// The provider content that `data = "remote"` means for `path` at this range.
fn remote_range(
    remote: &[Arc<RemoteRoot>],
    path: &str,
    offset: u64,
    length: u64,
) -> Result<Vec<u8>, String> {
    let lower = path.to_lowercase();
    for root in remote {
        let prefix = format!("{}\\", root.sync_root.trim_end_matches('\\').to_lowercase());
        if let Some(rel) = lower.strip_prefix(&prefix) {
            let file = root
                .get(rel)
                .ok_or_else(|| format!("the provider has no remote file {rel:?}"))?;
            let start = offset.min(file.1.len() as u64) as usize;
            let end = offset.saturating_add(length).min(file.1.len() as u64) as usize;
            return Ok(file.1[start..end].to_vec());
        }
    }
    Err(format!("{path} is under no provider's sync root"))
}

fn check_data(
    expected: &str,
    got: &[u8],
    step: &Step,
    target: Option<&str>,
    remote: &[Arc<RemoteRoot>],
) -> Option<String> {
    let want = if expected == "remote" {
        let Some(path) = target else {
            return Some("`data = \"remote\"` needs the step's path".into());
        };
        remote_range(
            remote,
            path,
            step.offset.unwrap_or(0),
            step.length.unwrap_or(0),
        )
    } else if expected == "zeros" {
        return got
            .iter()
            .position(|b| *b != 0)
            .map(|i| format!("expected zeros, byte {i} is {:02x}", got[i]));
    } else if let Some(text) = expected.strip_prefix("text:") {
        Ok(text.as_bytes().to_vec())
    } else if let Some(hex) = expected.strip_prefix("hex:") {
        content::parse_hex(hex)
    } else if let Some(seed) = expected.strip_prefix("seed:") {
        // The content create_file writes for `size` + `seed`, at the step's range.
        seed.parse::<u64>()
            .map_err(|_| format!("{expected:?}: seed is not a number"))
            .map(|seed| {
                let offset = step.offset.unwrap_or(0);
                content::seeded_range(seed, u64::MAX, offset, got.len() as u64)
            })
    } else {
        Err(format!(
            "data {expected:?} is not remote, zeros, text:…, hex:… or seed:N"
        ))
    };
    match want {
        Err(e) => Some(e),
        Ok(want) if want != got => Some(format!(
            "expected data {expected:.40}: {}; got {}: {}",
            content::describe(&want),
            content::describe(got),
            content::first_difference(&want, got)
        )),
        Ok(_) => None,
    }
}

fn check_entry(
    layout_name: &str,
    want: &EntryExpect,
    entries: &[Entry],
    problems: &mut Vec<String>,
) {
    let Some(e) = entries
        .iter()
        .find(|e| e.name.eq_ignore_ascii_case(&want.name))
    else {
        let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        problems.push(format!(
            "expected an entry {:?}, entries are {names:?}",
            want.name
        ));
        return;
    };
    let what = format!("entry {:?}: ", want.name);
    if !want.attributes_include.is_empty() || !want.attributes_exclude.is_empty() {
        match e.attributes {
            None => problems.push(format!("{what}{layout_name} carries no attributes")),
            Some(a) => check_attributes(
                &what,
                a,
                &want.attributes_include,
                &want.attributes_exclude,
                problems,
            ),
        }
    }
    if let Some(tag) = &want.ea_size {
        match e.ea_size {
            None => problems.push(format!("{what}{layout_name} has no EaSize")),
            got => check_tag(&format!("{what}EaSize "), tag, got, problems),
        }
    }
    if let Some(tag) = &want.reparse_tag {
        match e.reparse_tag {
            None => problems.push(format!("{what}{layout_name} has no ReparsePointTag")),
            got => check_tag(&format!("{what}ReparsePointTag "), tag, got, problems),
        }
    }
    if let Some(size) = want.size {
        match e.size {
            None => problems.push(format!("{what}{layout_name} has no EndOfFile")),
            Some(got) if got != size => {
                problems.push(format!("{what}expected size {size}, got {got}"));
            }
            _ => {}
        }
    }
}

/// Everything wrong with an observation of `step`, given its expectation.
pub(crate) fn check(
    step: &Step,
    seen: &Observation,
    target: Option<&str>,
    remote: &[Arc<RemoteRoot>],
) -> Vec<String> {
    let expect = step.expect.clone().unwrap_or_default();
    let mut problems: Vec<String> = Vec::new();
    problems.extend(check_status(&expect, seen.status));
    problems.extend(inapplicable(&expect, &step.op));
    if let Some(why) = &seen.malformed {
        problems.push(format!("malformed answer: {why}"));
    }
    let failed = seen.status < 0;
    if failed && expect.status.as_deref() == Some(ANY_STATUS) {
        // "any": the other expectations are checked only if the operation succeeded.
        return problems;
    }
    let unanswered = |field: &str| format!("cannot check {field}: the operation failed");
    if let Some(want) = &expect.data {
        match &seen.data {
            Some(got) => problems.extend(check_data(want, got, step, target, remote)),
            None if failed => problems.push(unanswered("data")),
            None => {}
        }
    }
    if let Some(want) = expect.bytes {
        let got = seen.data.as_ref().map(|d| d.len() as u64).or(seen.written);
        match got {
            Some(got) if got != want => {
                problems.push(format!("expected {want} bytes, got {got}"));
            }
            None if failed => problems.push(unanswered("bytes")),
            _ => {}
        }
    }
    let class = step
        .class
        .as_deref()
        .unwrap_or("FileIdBothDirectoryInformation");
    if let Some(entries) = &seen.entries {
        if let Some(count) = expect.count {
            let got = entries
                .iter()
                .filter(|e| e.name != "." && e.name != "..")
                .count() as u64;
            if got != count {
                let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
                problems.push(format!("expected {count} entries, got {got}: {names:?}"));
            }
        }
        for want in expect.entries.iter().flatten() {
            check_entry(class, want, entries, &mut problems);
        }
    } else if step.op == "list" && (expect.count.is_some() || expect.entries.is_some()) {
        problems.push(unanswered("entries"));
    }
    if step.op == "query" {
        check_query(&expect, seen, class, &mut problems);
    }
    if step.op == "get_reparse"
        && let Some(tag) = &expect.reparse_tag
    {
        let got = seen
            .data
            .as_ref()
            .and_then(|d| d.get(0..4))
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        check_tag("reparse tag ", tag, got, &mut problems);
    }
    if step.op == "state" {
        check_state(&expect, seen, &mut problems);
    }
    if step.op == "provider_stats" {
        check_stats(&expect, seen, &mut problems);
    }
    problems
}

fn check_query(expect: &Expect, seen: &Observation, class: &str, problems: &mut Vec<String>) {
    let wants = expect.attributes_include.is_some()
        || expect.attributes_exclude.is_some()
        || expect.reparse_tag.is_some()
        || expect.size.is_some();
    if !wants {
        return;
    }
    let Some(layout) = decode::info_class(class) else {
        return;
    };
    let (has_attributes, has_tag, has_size) = decode::info_fields(&layout);
    let Some(info) = seen.info else {
        problems.push("cannot check the answer: the operation failed".into());
        return;
    };
    if expect.attributes_include.is_some() || expect.attributes_exclude.is_some() {
        match info.attributes {
            Some(a) if has_attributes => check_attributes(
                "",
                a,
                expect.attributes_include.as_deref().unwrap_or_default(),
                expect.attributes_exclude.as_deref().unwrap_or_default(),
                problems,
            ),
            _ => problems.push(format!("{class} carries no attributes")),
        }
    }
    if let Some(tag) = &expect.reparse_tag {
        if has_tag {
            check_tag("reparse tag ", tag, info.reparse_tag, problems);
        } else {
            problems.push(format!("{class} carries no reparse tag"));
        }
    }
    if let Some(want) = expect.size {
        match info.size {
            Some(got) if has_size && got != want => {
                problems.push(format!("expected size {want}, got {got}"));
            }
            Some(_) if has_size => {}
            _ => problems.push(format!("{class} carries no end of file")),
        }
    }
}

/// Whether the merged, sorted list `held` contains all of `range`.
fn holds(held: &[(u64, u64)], (start, length): (u64, u64)) -> bool {
    held.iter()
        .any(|(s, l)| *s <= start && s + l >= start + length)
}

/// The parts of `(start, length)` outside every range of `others` (sorted, disjoint).
fn outside((start, length): (u64, u64), others: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let end = start + length;
    let mut parts = Vec::new();
    let mut at = start;
    for &(s, l) in others {
        let e = s + l;
        if e <= at || s >= end {
            continue;
        }
        if s > at {
            parts.push((at, s - at));
        }
        at = at.max(e);
    }
    if at < end {
        parts.push((at, end - at));
    }
    parts
}

fn check_state(expect: &Expect, seen: &Observation, problems: &mut Vec<String>) {
    let Some(state) = &seen.state else {
        if expect.placeholder.is_some()
            || expect.hydrated.is_some()
            || expect.pinned.is_some()
            || expect.in_sync.is_some()
            || expect.tag.is_some()
            || expect.size.is_some()
            || expect.modified.is_some()
            || expect.populated.is_some()
        {
            problems.push("cannot check the state: no such file on disk".into());
        }
        return;
    };
    if let Some(want) = expect.populated {
        let is = state.populated.unwrap_or(false);
        if want != is {
            problems.push(format!("expected populated = {want}, got {is}"));
        }
    }
    if let Some(want) = expect.registered {
        let is = state.registered.unwrap_or(false);
        if want != is {
            problems.push(format!(
                "expected registered = {want}, the driver says it is{} a registered sync root",
                if is { "" } else { " not" }
            ));
        }
    }
    // End of file as NTFS holds it (format additions): the disk's, never the blob's.
    if let Some(size) = expect.size
        && size != state.size
    {
        problems.push(format!(
            "expected size {size}, NTFS holds end of file {}",
            state.size
        ));
    }
    // A placeholder's state is its blob: one that does not decode is reported whenever
    // the step asks about more than the raw tag.
    let blob = match &state.blob {
        None => None,
        Some(Ok(blob)) => Some(blob),
        Some(Err(why)) => {
            let only_tag = expect.placeholder.is_none()
                && expect.hydrated.is_none()
                && expect.modified.is_none()
                && expect.pinned.is_none()
                && expect.in_sync.is_none()
                && (expect.tag.is_some() || expect.size.is_some());
            if !only_tag {
                problems.push(format!(
                    "the placeholder's reparse data does not decode: {why}"
                ));
            }
            None
        }
    };
    // Never report data as present that is not on disk. The parts recorded as modified
    // are the user's own (written, or the zeros a longer end of file added, which NTFS
    // keeps sparse), so only the provider's data must be allocated.
    if let Some(blob) = blob {
        let missing: Vec<(u64, u64)> = blob
            .ranges
            .iter()
            .flat_map(|r| outside(*r, &blob.modified))
            .filter(|r| !holds(&state.allocated, *r))
            .collect();
        if !missing.is_empty() {
            problems.push(format!(
                "the placeholder records {missing:?} as hydrated, but NTFS holds only \
                 {:?} allocated",
                state.allocated
            ));
        }
    }
    if let Some(want) = expect.placeholder {
        let got = state.is_placeholder();
        if got != want {
            problems.push(format!(
                "expected placeholder = {want}, the file's tag is {:#010x}",
                state.tag
            ));
        }
    }
    if let Some(tag) = &expect.tag {
        check_tag("tag ", tag, Some(state.tag), problems);
    }
    if let Some(want) = expect.pinned {
        let got = state.attributes & attr::FILE_ATTRIBUTE_PINNED != 0;
        if want != got {
            problems.push(format!(
                "expected pinned = {want}, attributes are {}{}",
                attribute_names(state.attributes),
                blob.map_or(String::new(), |b| format!(
                    " (the placeholder's PINNED flag is {})",
                    b.pinned
                ))
            ));
        }
    }
    if let Some(want) = expect.in_sync {
        // Only a placeholder has an in-sync state; an ordinary file is not in sync.
        let got = blob.is_some_and(|b| b.in_sync);
        if want != got && !(state.is_placeholder() && blob.is_none()) {
            problems.push(format!(
                "expected in_sync = {want}, got {got}{}",
                if state.is_placeholder() {
                    ""
                } else {
                    " (not a placeholder)"
                }
            ));
        }
    }
    if let Some(want) = &expect.hydrated {
        // A placeholder holds what its blob records; an ordinary file what NTFS has
        // allocated.
        let (hydrated, source) = match (&state.blob, blob) {
            (Some(_), None) => return,
            (_, Some(blob)) => (&blob.ranges, "the placeholder records"),
            (None, None) => (&state.allocated, "NTFS has allocated"),
        };
        check_ranges("hydrated", want, hydrated, source, state.size, problems);
    }
    if let Some(want) = &expect.modified {
        // Only a placeholder records local changes.
        match (&state.blob, blob) {
            (Some(_), None) => {}
            (_, Some(blob)) => check_ranges(
                "modified",
                want,
                &blob.modified,
                "the placeholder records",
                state.size,
                problems,
            ),
            (None, None) => problems.push(format!(
                "cannot check modified: not a placeholder (tag {:#010x})",
                state.tag
            )),
        }
    }
}

/// Compares ranges an expectation names (`"all"`, `"none"` or `[offset, length]` pairs,
/// merged as the runner merges what it reads) with the merged ranges `got` of a file of
/// `size` bytes, which `source` holds.
fn check_ranges(
    field: &str,
    want: &Hydrated,
    got: &[(u64, u64)],
    source: &str,
    size: u64,
    problems: &mut Vec<String>,
) {
    let ok = match want {
        Hydrated::Word(w) if w == "all" => size == 0 || got == [(0, size)],
        Hydrated::Word(w) if w == "none" => got.is_empty(),
        Hydrated::Word(w) => {
            problems.push(format!("{field} {w:?} is not \"all\", \"none\" or ranges"));
            true
        }
        Hydrated::Ranges(ranges) => ranges.iter().map(|[o, l]| (*o, *l)).collect::<Vec<_>>() == got,
    };
    if !ok {
        problems.push(format!(
            "expected {field} {}, {source} {got:?} of {size} bytes",
            match want {
                Hydrated::Word(w) => w.clone(),
                Hydrated::Ranges(r) => format!("{r:?}"),
            },
        ));
    }
}

fn check_stats(expect: &Expect, seen: &Observation, problems: &mut Vec<String>) {
    let Some(stats) = &seen.stats else {
        return;
    };
    for (field, want, got) in [
        ("fetches", expect.fetches, stats.fetches),
        ("bytes_served", expect.bytes_served, stats.bytes_served),
        ("cancels", expect.cancels, stats.cancels),
        ("validations", expect.validations, stats.validations),
        ("deletes", expect.deletes, stats.deletes),
        ("renames", expect.renames, stats.renames),
        ("dehydrates", expect.dehydrates, stats.dehydrates),
        ("opens", expect.opens, stats.opens),
        ("closes", expect.closes, stats.closes),
        ("populations", expect.populations, stats.populations),
    ] {
        if let Some(want) = want
            && want != got
        {
            problems.push(format!("expected {field} = {want}, got {got}"));
        }
    }
}

/// How two observations of one step differ, or None when they agree.
pub(crate) fn difference(plain: &Observation, filtered: &Observation) -> Option<String> {
    if plain == filtered {
        return None;
    }
    let mut parts = Vec::new();
    if plain.status != filtered.status {
        parts.push(format!(
            "status {} vs {}",
            ntstatus::name(plain.status),
            ntstatus::name(filtered.status)
        ));
    }
    if plain.data != filtered.data {
        let show = |d: &Option<Vec<u8>>| d.as_deref().map_or("none".into(), content::describe);
        let mut line = format!("data {} vs {}", show(&plain.data), show(&filtered.data));
        if let (Some(a), Some(b)) = (&plain.data, &filtered.data) {
            line.push_str(&format!(" ({})", content::first_difference(a, b)));
        }
        parts.push(line);
    }
    if plain.written != filtered.written {
        parts.push(format!(
            "written {:?} vs {:?}",
            plain.written, filtered.written
        ));
    }
    if plain.entries != filtered.entries {
        parts.push(format!(
            "entries {} vs {}",
            show_entries(plain.entries.as_deref()),
            show_entries(filtered.entries.as_deref())
        ));
    }
    if plain.info != filtered.info {
        parts.push(format!("answer {:?} vs {:?}", plain.info, filtered.info));
    }
    if plain.state != filtered.state {
        parts.push(format!("state {:?} vs {:?}", plain.state, filtered.state));
    }
    if plain.stats != filtered.stats {
        parts.push(format!("stats {:?} vs {:?}", plain.stats, filtered.stats));
    }
    if plain.malformed != filtered.malformed {
        parts.push(format!(
            "malformed {:?} vs {:?}",
            plain.malformed, filtered.malformed
        ));
    }
    Some(parts.join(", "))
}

fn show_entries(entries: Option<&[Entry]>) -> String {
    let Some(entries) = entries else {
        return "none".into();
    };
    let shown: Vec<String> = entries
        .iter()
        .map(|e| {
            let mut s = e.name.clone();
            if let Some(a) = e.attributes {
                s.push_str(&format!(" {}", attribute_names(a)));
            }
            if let Some(ea) = e.ea_size {
                s.push_str(&format!(" ea={ea:#x}"));
            }
            if let Some(t) = e.reparse_tag {
                s.push_str(&format!(" tag={t:#x}"));
            }
            s
        })
        .collect();
    format!("[{}]", shown.join("; "))
}
