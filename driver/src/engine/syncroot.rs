//! The sync roots connected providers registered, and which root a path falls under.
//!
//! Paths are NT paths in UTF-16 (`\Device\HarddiskVolume1\Users\u\Cloud`), compared the
//! way NTFS compares names: case-insensitively, component by component. Roots may not
//! nest: a root inside another (or equal to it) is refused, since two providers would
//! then answer for the same files.

/// Longest root path kept, in UTF-16 units (a root deeper than this is refused).
pub const MAX_PATH: usize = 512;

/// A registered root.
#[derive(Debug, Clone, Copy)]
pub struct Root {
    path: [u16; MAX_PATH],
    len: usize,
    /// The connection (driver-side cookie) that owns it.
    pub owner: usize,
}

impl Root {
    /// The root's path.
    pub fn path(&self) -> &[u16] {
        self.path.get(..self.len).unwrap_or(&[])
    }
}

/// Why a root was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootError {
    /// Empty, not absolute, ending in a separator, or too long.
    InvalidPath,
    /// Inside, equal to, or containing an existing root.
    Overlaps,
    /// This connection already has a root.
    AlreadyConnected,
    /// The table is full.
    Full,
}

/// The table of roots, `N` at most.
#[derive(Debug)]
pub struct Roots<const N: usize> {
    roots: [Option<Root>; N],
}

impl<const N: usize> Default for Roots<N> {
    fn default() -> Self {
        Self::new()
    }
}

const SEPARATOR: u16 = b'\\' as u16;

/// One UTF-16 unit folded to upper case, for the scripts whose case pairs are a fixed
/// offset apart: ASCII, Latin-1, Latin Extended-A, Greek and Cyrillic. NTFS compares
/// with its volume's upcase table, which agrees with this on those ranges; characters
/// outside them compare exactly (a root differing from a path only in the case of such a
/// character is then not recognised, which refuses rather than misattributes).
///
/// Written out instead of `char::to_uppercase`, whose table lookups bring panic paths
/// into the kernel image.
pub fn fold(unit: u16) -> u16 {
    match unit {
        0x61..=0x7A => unit - 0x20,
        0xE0..=0xFE if unit != 0xF7 => unit - 0x20,
        0xFF => 0x178,
        // Latin Extended-A: upper case at even code points, lower case one above.
        0x100..=0x12F | 0x132..=0x137 | 0x14A..=0x177 if !unit.is_multiple_of(2) => unit - 1,
        0x139..=0x148 | 0x179..=0x17E if unit.is_multiple_of(2) => unit - 1,
        0x3B1..=0x3CB if unit != 0x3C2 => unit - 0x20,
        0x430..=0x44F => unit - 0x20,
        0x450..=0x45F => unit - 0x50,
        _ => unit,
    }
}

fn same(a: &[u16], b: &[u16]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| fold(*x) == fold(*y))
}

/// If `path` is `root` or lies under it: the rest of `path` after the root and its
/// separator (empty for the root itself).
pub fn under<'p>(root: &[u16], path: &'p [u16]) -> Option<&'p [u16]> {
    let head = path.get(..root.len())?;
    if !same(head, root) {
        return None;
    }
    match path.get(root.len()) {
        None => Some(&[]),
        Some(&SEPARATOR) => path.get(root.len() + 1..),
        Some(_) => None,
    }
}

/// Whether `path` can be a root: absolute, no empty component, no trailing separator,
/// at most [`MAX_PATH`] units.
pub fn is_valid(path: &[u16]) -> bool {
    !path.is_empty()
        && path.len() <= MAX_PATH
        && path.first() == Some(&SEPARATOR)
        && path.last() != Some(&SEPARATOR)
        && !path.windows(2).any(|w| w == [SEPARATOR, SEPARATOR])
}

impl<const N: usize> Roots<N> {
    /// No roots.
    pub const fn new() -> Self {
        Self { roots: [None; N] }
    }

    /// Registers `path` for connection `owner`.
    pub fn add(&mut self, path: &[u16], owner: usize) -> Result<(), RootError> {
        if !is_valid(path) {
            return Err(RootError::InvalidPath);
        }
        for r in self.roots.iter().flatten() {
            if r.owner == owner {
                return Err(RootError::AlreadyConnected);
            }
            if under(r.path(), path).is_some() || under(path, r.path()).is_some() {
                return Err(RootError::Overlaps);
            }
        }
        let slot = self
            .roots
            .iter_mut()
            .find(|r| r.is_none())
            .ok_or(RootError::Full)?;
        let mut stored = [0u16; MAX_PATH];
        for (d, s) in stored.iter_mut().zip(path) {
            *d = *s;
        }
        *slot = Some(Root {
            path: stored,
            len: path.len(),
            owner,
        });
        Ok(())
    }

    /// Forgets the root of `owner` (its provider disconnected); true if it had one.
    pub fn remove(&mut self, owner: usize) -> bool {
        let mut found = false;
        for slot in &mut self.roots {
            if slot.is_some_and(|r| r.owner == owner) {
                *slot = None;
                found = true;
            }
        }
        found
    }

    /// The root `path` lies under, with the path relative to it.
    pub fn find<'p>(&self, path: &'p [u16]) -> Option<(&Root, &'p [u16])> {
        self.roots
            .iter()
            .flatten()
            .find_map(|r| under(r.path(), path).map(|rest| (r, rest)))
    }

    /// The root `owner` registered.
    pub fn of(&self, owner: usize) -> Option<&Root> {
        self.roots.iter().flatten().find(|r| r.owner == owner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fold_agrees_with_unicode_upper_case_where_it_folds() {
        for unit in 0u16..0x500 {
            let Some(c) = char::from_u32(u32::from(unit)) else {
                continue;
            };
            let mut upper = c.to_uppercase();
            let (Some(u), None) = (upper.next(), upper.next()) else {
                continue;
            };
            let folded = fold(unit);
            if folded != unit {
                assert_eq!(u32::from(folded), u as u32, "{unit:#x}");
            }
        }
        assert_eq!(fold(u16::from(b'a')), u16::from(b'A'));
        assert_eq!(fold(0xE9), 0xC9, "é");
        assert_eq!(fold(0x3C9), 0x3A9, "ω");
        assert_eq!(fold(0x44F), 0x42F, "я");
    }
    use std::vec::Vec;

    fn w(s: &str) -> Vec<u16> {
        s.encode_utf16().collect()
    }

    #[test]
    fn paths_under_a_root_match_case_insensitively_on_component_boundaries() {
        let root = w("\\Device\\HarddiskVolume1\\Users\\u\\Cloud");
        assert_eq!(
            under(
                &root,
                &w("\\device\\harddiskvolume1\\users\\U\\CLOUD\\a.bin")
            ),
            Some(&w("a.bin")[..])
        );
        assert_eq!(under(&root, &root), Some(&[][..]));
        assert_eq!(
            under(&root, &w("\\Device\\HarddiskVolume1\\Users\\u\\Cloudy\\a")),
            None
        );
        assert_eq!(under(&root, &w("\\Device\\HarddiskVolume1\\Users")), None);
        assert_eq!(under(&w("\\X\\ÄB"), &w("\\x\\äb\\c")), Some(&w("c")[..]));
    }

    #[test]
    fn overlapping_roots_and_second_roots_are_refused() {
        let mut roots = Roots::<4>::new();
        assert_eq!(roots.add(&w("\\Device\\HarddiskVolume1\\A\\B"), 1), Ok(()));
        assert_eq!(
            roots.add(&w("\\Device\\HarddiskVolume1\\A"), 2),
            Err(RootError::Overlaps)
        );
        assert_eq!(
            roots.add(&w("\\Device\\HarddiskVolume1\\a\\b\\c"), 2),
            Err(RootError::Overlaps)
        );
        assert_eq!(
            roots.add(&w("\\Device\\HarddiskVolume1\\A\\B"), 2),
            Err(RootError::Overlaps)
        );
        assert_eq!(
            roots.add(&w("\\Device\\HarddiskVolume1\\C"), 1),
            Err(RootError::AlreadyConnected)
        );
        assert_eq!(roots.add(&w("\\Device\\HarddiskVolume1\\A\\BC"), 2), Ok(()));
        assert_eq!(roots.add(&w("relative"), 3), Err(RootError::InvalidPath));
        assert_eq!(
            roots.add(&w("\\trailing\\"), 3),
            Err(RootError::InvalidPath)
        );
        let path = w("\\Device\\HarddiskVolume1\\A\\BC\\x");
        let found = roots.find(&path).map(|(root, rest)| (root.owner, rest));
        assert_eq!(found, Some((2, &w("x")[..])));
        assert!(roots.remove(1));
        assert!(
            roots
                .find(&w("\\Device\\HarddiskVolume1\\A\\B\\x"))
                .is_none()
        );
        assert_eq!(
            roots.add(&w("\\Device\\HarddiskVolume1\\A"), 3),
            Err(RootError::Overlaps)
        );
    }

    #[test]
    fn the_table_has_a_limit() {
        let mut roots = Roots::<1>::new();
        assert_eq!(roots.add(&w("\\A"), 1), Ok(()));
        assert_eq!(roots.add(&w("\\B"), 2), Err(RootError::Full));
    }
}
