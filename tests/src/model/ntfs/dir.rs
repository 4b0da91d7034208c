//! Directory enumeration (IRP_MN_QUERY_DIRECTORY) as NTFS answers it, following
//! MS-FSA 2.1.5.6.3: the pattern is fixed by the first query on a handle, `.` and `..`
//! come first (not in the root), then the index in collation order (upcased UTF-16);
//! entries are 8-byte aligned and chained by NextEntryOffset; a first entry too long for
//! the buffer comes back cut, with STATUS_BUFFER_OVERFLOW; an entry that does not fit
//! after others waits for the next query.

use windows_sys::Win32::Foundation::{
    NTSTATUS, STATUS_BUFFER_OVERFLOW, STATUS_INFO_LENGTH_MISMATCH, STATUS_INVALID_INFO_CLASS,
    STATUS_INVALID_PARAMETER, STATUS_NO_MORE_FILES, STATUS_NO_SUCH_FILE, STATUS_SUCCESS,
};

use super::layout::{self, put_u32};
use super::{FileId, Ntfs, OpenId, ROOT_ID, pattern};

/// The CCB's enumeration state.
#[derive(Debug, Clone, Default)]
pub(crate) struct Cursor {
    /// Upcased pattern, fixed by the first query.
    pattern: Option<Vec<u16>>,
    position: Position,
}

/// Where the next query resumes: the collation key of the last entry passed, so that
/// names added or removed in between are seen or skipped as NTFS's index walk would.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
enum Position {
    #[default]
    Start,
    AfterDot,
    AfterDotDot,
    After(Vec<u16>),
}

impl Ntfs {
    /// IRP_MJ_DIRECTORY_CONTROL / IRP_MN_QUERY_DIRECTORY on directory `dir`.
    pub fn query_directory(
        &self,
        open: OpenId,
        class: i32,
        pattern: Option<&str>,
        restart: bool,
        single: bool,
        buffer_len: usize,
    ) -> (NTSTATUS, Vec<u8>) {
        let Some(layout) = layout::dir_class(class) else {
            return (STATUS_INVALID_INFO_CLASS, Vec::new());
        };
        if buffer_len < layout.name {
            return (STATUS_INFO_LENGTH_MISMATCH, Vec::new());
        }
        let Some(dir) = self.file_of(open) else {
            return (STATUS_INVALID_PARAMETER, Vec::new());
        };
        if !self.file(dir).directory {
            return (STATUS_INVALID_PARAMETER, Vec::new());
        }
        let mut cursors = self.cursors.borrow_mut();
        let cursor = cursors.entry(open).or_default();
        let first = cursor.pattern.is_none();
        if first {
            // An empty pattern means `*`. Later patterns, even with a restart, are
            // ignored: NTFS keeps the one the handle started with.
            let p = pattern.filter(|p| !p.is_empty()).unwrap_or("*");
            cursor.pattern = Some(p.encode_utf16().collect());
        }
        if restart {
            cursor.position = Position::Start;
        }
        let expr = cursor.pattern.clone().unwrap_or_default();

        let mut out: Vec<u8> = Vec::new();
        let mut last_start: Option<usize> = None;
        let mut status = STATUS_SUCCESS;
        while let Some((position, name, id)) = self.next_after(dir, &cursor.position) {
            let units: Vec<u16> = name.encode_utf16().collect();
            if !pattern::matches(&expr, &units) {
                cursor.position = position;
                continue;
            }
            let m = self.meta(self.file(id));
            let name_bytes = layout::utf16_bytes(&name);
            let entry = layout::dir_entry(&layout, &m, &name_bytes);
            match last_start {
                None => {
                    cursor.position = position;
                    if entry.len() > buffer_len {
                        // The first entry is returned cut, FileNameLength still whole.
                        out.extend_from_slice(&entry[..buffer_len]);
                        status = STATUS_BUFFER_OVERFLOW;
                        break;
                    }
                    out = entry;
                    last_start = Some(0);
                }
                Some(prev) => {
                    let at = out.len().next_multiple_of(8);
                    if at + entry.len() > buffer_len {
                        break;
                    }
                    cursor.position = position;
                    put_u32(&mut out, prev, (at - prev) as u32);
                    out.resize(at, 0);
                    out.extend_from_slice(&entry);
                    last_start = Some(at);
                }
            }
            if single {
                break;
            }
        }
        if out.is_empty() {
            let status = if first {
                STATUS_NO_SUCH_FILE
            } else {
                STATUS_NO_MORE_FILES
            };
            return (status, out);
        }
        (status, out)
    }

    /// The entry after `position` in `dir`: its position, name as shown, and the file
    /// whose information it carries (`.` the directory, `..` its parent).
    fn next_after(&self, dir: FileId, position: &Position) -> Option<(Position, String, FileId)> {
        let d = self.file(dir);
        let dots = dir != ROOT_ID;
        let from = match position {
            Position::Start if dots => return Some((Position::AfterDot, ".".into(), dir)),
            Position::AfterDot => return Some((Position::AfterDotDot, "..".into(), d.parent())),
            Position::Start | Position::AfterDotDot => None,
            Position::After(key) => Some(key),
        };
        let mut rest = match from {
            None => d.children.range::<Vec<u16>, _>(..),
            Some(key) => d
                .children
                .range::<Vec<u16>, _>((std::ops::Bound::Excluded(key), std::ops::Bound::Unbounded)),
        };
        let (key, &id) = rest.next()?;
        // The name of this entry: a file with hard links has one per entry.
        let name = self
            .file(id)
            .names
            .iter()
            .find(|l| l.parent == dir && l.key() == *key)?
            .name
            .clone();
        Some((Position::After(key.clone()), name, id))
    }
}
