//! Names as NTFS sees them: which names are legal, the upcase that makes them compare
//! case-insensitively (and orders directory indexes), and FsRtlIsNameInExpression's
//! wildcard match used by directory queries.

/// The longest name NTFS stores (UTF-16 code units).
pub(crate) const MAX_NAME: usize = 255;

/// DOS_STAR, DOS_QM and DOS_DOT as ntifs.h spells them in UTF-16.
const DOS_STAR: u16 = b'<' as u16;
const DOS_QM: u16 = b'>' as u16;
const DOS_DOT: u16 = b'"' as u16;
const STAR: u16 = b'*' as u16;
const QM: u16 = b'?' as u16;
const DOT: u16 = b'.' as u16;

/// NTFS's $UpCase: each UTF-16 unit maps to the simple upper case of its character when
/// that is again a single BMP unit. Surrogates and characters whose upper case is longer
/// stay as they are, because the table is one unit to one unit.
pub(crate) fn upcase_unit(u: u16) -> u16 {
    match char::from_u32(u32::from(u)) {
        Some(c) => {
            let mut up = c.to_uppercase();
            match (up.next(), up.next()) {
                (Some(single), None) if (single as u32) <= 0xFFFF => single as u32 as u16,
                _ => u,
            }
        }
        None => u,
    }
}

/// The key NTFS collates directory entries by: upcased UTF-16 compared unit by unit.
pub(crate) fn key(name: &str) -> Vec<u16> {
    name.encode_utf16().map(upcase_unit).collect()
}

/// Whether `name` may be stored as one path component. NTFS refuses the characters
/// Win32 and the object manager reserve (`\ / : * ? " < > |` and controls); `:` would
/// name a stream, which this model does not have.
pub(crate) fn valid_component(name: &str) -> bool {
    let units = name.encode_utf16().count();
    units > 0
        && units <= MAX_NAME
        && name != "."
        && name != ".."
        && !name.chars().any(|c| {
            (c as u32) < 0x20 || matches!(c, '\\' | '/' | ':' | '*' | '?' | '"' | '<' | '>' | '|')
        })
}

/// FsRtlIsNameInExpression(expression, name, IgnoreCase = TRUE): `*` and `?` as usual,
/// `<` (DOS_STAR) any run not containing the name's last period, `>` (DOS_QM) one
/// character but nothing at a period or the end, `"` (DOS_DOT) a period or the end.
/// Both sides are compared upcased, as NTFS does.
pub(crate) fn matches(expression: &[u16], name: &[u16]) -> bool {
    let expr: Vec<u16> = expression.iter().copied().map(upcase_unit).collect();
    let name: Vec<u16> = name.iter().copied().map(upcase_unit).collect();
    let last_dot = name.iter().rposition(|&c| c == DOT);
    // Every (expression index, name index) state is visited at most once: the match
    // is a walk over that grid, so it stays quadratic whatever the wildcards.
    let mut seen = vec![false; (expr.len() + 1) * (name.len() + 1)];
    let mut stack = vec![(0usize, 0usize)];
    while let Some((e, n)) = stack.pop() {
        let slot = e * (name.len() + 1) + n;
        if seen[slot] {
            continue;
        }
        seen[slot] = true;
        if e == expr.len() {
            if n == name.len() {
                return true;
            }
            continue;
        }
        let c = name.get(n).copied();
        match expr[e] {
            STAR => {
                stack.push((e + 1, n));
                if c.is_some() {
                    stack.push((e, n + 1));
                }
            }
            DOS_STAR => {
                stack.push((e + 1, n));
                // It may eat a period only if another one follows: the last period
                // of the name is what the rest of the expression has to match.
                if c.is_some() && last_dot != Some(n) {
                    stack.push((e, n + 1));
                }
            }
            QM => {
                if c.is_some() {
                    stack.push((e + 1, n + 1));
                }
            }
            DOS_QM => match c {
                None | Some(DOT) => stack.push((e + 1, n)),
                Some(_) => stack.push((e + 1, n + 1)),
            },
            DOS_DOT => match c {
                Some(DOT) => stack.push((e + 1, n + 1)),
                None => stack.push((e + 1, n)),
                Some(_) => {}
            },
            literal => {
                if c == Some(literal) {
                    stack.push((e + 1, n + 1));
                }
            }
        }
    }
    false
}

/// Whether the expression has a wildcard at all (NTFS then looks the name up instead
/// of scanning; the result is the same).
#[cfg(test)]
fn has_wildcards(expression: &[u16]) -> bool {
    expression
        .iter()
        .any(|c| matches!(*c, STAR | QM | DOS_STAR | DOS_QM | DOS_DOT))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(e: &str, n: &str) -> bool {
        let e: Vec<u16> = e.encode_utf16().collect();
        let n: Vec<u16> = n.encode_utf16().collect();
        matches(&e, &n)
    }

    #[test]
    fn star_and_question_mark() {
        assert!(m("*", "anything.txt"));
        assert!(m("*", ""));
        assert!(m("*.txt", "a.TXT"));
        assert!(!m("*.txt", "a.txt2"));
        assert!(m("a?c", "abc"));
        assert!(!m("a?c", "ac"));
        assert!(m("*.*", "a.b"));
        assert!(!m("*.*", "ab"), "FsRtlIsNameInExpression needs the period");
        assert!(m("ABC", "abc"));
    }

    #[test]
    fn dos_wildcards() {
        // `*.*` as the I/O manager rewrites it for DOS callers: `<.*` style.
        assert!(m("<\"*", "readme"));
        assert!(m("<\"*", "readme.txt"));
        assert!(m("<.txt", "a.b.txt"));
        assert!(!m("<", "a.b"), "DOS_STAR cannot eat the last period");
        assert!(m("<", "ab"));
        assert!(m("a>>>", "a"));
        assert!(m("a>>>", "abc"));
        assert!(!m("a>>", "abcd"));
        assert!(m("a>>.txt", "a.txt"));
        assert!(m("abc\"", "abc"));
        assert!(m("abc\"txt", "abc.txt"));
        assert!(!m("abc\"", "abcd"));
    }

    #[test]
    fn upcase_is_unit_to_unit() {
        assert_eq!(key("straße"), key("STRAßE"));
        assert_eq!(key("émile"), key("ÉMILE"));
        assert!(has_wildcards(&key("a<")));
        assert!(!has_wildcards(&key("abc")));
    }

    #[test]
    fn component_validity() {
        for bad in [
            "", ".", "..", "a:b", "a*", "a?", "a\"", "a<", "a>", "a|", "a/b", "\u{1}",
        ] {
            assert!(!valid_component(bad), "{bad:?}");
        }
        assert!(valid_component("trailing. "));
        assert!(valid_component(&"x".repeat(255)));
        assert!(!valid_component(&"x".repeat(256)));
    }
}
