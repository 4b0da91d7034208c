//! The administrator's image rules: which programs see cloudflt's placeholders as what
//! they are (exposed) and which see ordinary files (disguised), for programs that do not
//! say so themselves.
//!
//! A rule names a program by its image: a full path (`C:\Tools\app.exe`), a directory
//! (`C:\Tools`, every image under it at any depth), or a bare file name (`app.exe`, that
//! name anywhere). When several rules match, the most specific wins: the exact path, then
//! the file name, then the deepest directory. Names and paths compare case-insensitively.
//!
//! Rules rank below a program's own placeholder compatibility mode (see
//! [`compat`](crate::compat)): a program that set one is never overridden, and the
//! provider of a sync root always sees its placeholders. They rank above the defaults
//! (Windows' own images exposed, everything else disguised), so a rule can also disguise
//! placeholders from an image under `%SystemRoot%`. A rule counts when a file is opened:
//! handles already open keep what they saw.
//!
//! Rules are held by the driver in memory, at most
//! [`MAX_RULES`](cloudflt_proto::rules::MAX_RULES), until it unloads; a tool that wants
//! them back after a restart sets them again. Only SYSTEM and elevated Administrators
//! may list or change them ([`ImageRules::connect`]).
//!
//! ```no_run
//! use cloudflt::admin::{ImageRules, Visibility};
//!
//! let rules = ImageRules::connect()?;
//! // The backup tool copies placeholders as the reparse points they are.
//! rules.set(r"C:\Program Files\Backup\backup.exe", Visibility::Expose)?;
//! // Nothing under C:\Legacy copes with reparse points.
//! rules.set(r"C:\Legacy", Visibility::Disguise)?;
//! for (pattern, visibility) in rules.list()? {
//!     println!("{pattern}: {visibility:?}");
//! }
//! # Ok::<(), cloudflt::Error>(())
//! ```

use std::path::Path;

use cloudflt_proto::msg::{ClearImageRules, ListImageRules, RemoveImageRule, SetImageRule};
use cloudflt_proto::rules::{MAX_PATTERN_UNITS, MAX_RULE_LIST_LEN, RuleList, RuleVisibility};
use cloudflt_proto::{DecodeError, Field, Utf16};
use windows_sys::Win32::Foundation::STATUS_NOT_FOUND;

use crate::registration::{Control, encode};
use crate::{Error, config};

/// What the programs a rule matches see of placeholders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Visibility {
    /// Placeholders are reported as reparse points with cloudflt's tag and attributes.
    Expose,
    /// Placeholders look like ordinary files.
    Disguise,
}

impl Visibility {
    fn wire(self) -> RuleVisibility {
        match self {
            Visibility::Expose => RuleVisibility::Expose,
            Visibility::Disguise => RuleVisibility::Disguise,
        }
    }
}

/// A management connection to the driver, through which an administrator sets, removes
/// and lists image rules. Dropping it disconnects; the rules stay.
///
/// Every method checks its argument before anything is sent: an empty image, a relative
/// path (`..\x`, `Tools\app.exe`), a UNC path, a name with characters no file name has,
/// or a pattern longer than the driver keeps is an [`Error::InvalidArgument`].
#[derive(Debug)]
pub struct ImageRules {
    control: Control,
}

impl ImageRules {
    /// Connects to the driver as a management client. Any user may connect, but only
    /// SYSTEM and elevated Administrators may list or change rules: the driver answers
    /// anyone else's requests with [`Error::Status`] carrying STATUS_ACCESS_DENIED.
    pub fn connect() -> Result<Self, Error> {
        Ok(Self {
            control: Control::connect()?,
        })
    }

    /// Sets the rule for `image` — a path (`C:\Tools\app.exe`), a directory (`C:\Tools`)
    /// or a bare file name (`app.exe`) — replacing any rule for the same image. The driver
    /// refuses a pattern it cannot match ([`Error::Status`] with
    /// STATUS_OBJECT_NAME_INVALID) and a rule beyond its table
    /// ([`Error::InsufficientResources`]).
    pub fn set(&self, image: &str, visibility: Visibility) -> Result<(), Error> {
        let pattern = pattern(image)?;
        let message = SetImageRule {
            request_id: self.next_request_id(),
            visibility: visibility.wire(),
            pattern: Utf16::from_units(&pattern),
        };
        self.request(
            &encode(message.encoded_len(), |out| message.encode(out))?,
            0,
        )?;
        Ok(())
    }

    /// Removes the rule for `image`, given as it was set; whether there was one.
    pub fn remove(&self, image: &str) -> Result<bool, Error> {
        let pattern = pattern(image)?;
        let message = RemoveImageRule {
            request_id: self.next_request_id(),
            pattern: Utf16::from_units(&pattern),
        };
        let bytes = encode(message.encoded_len(), |out| message.encode(out))?;
        match self.request(&bytes, 0) {
            Ok(_) => Ok(true),
            Err(Error::Status(STATUS_NOT_FOUND)) => Ok(false),
            Err(other) => Err(other),
        }
    }

    /// Removes every rule.
    pub fn clear(&self) -> Result<(), Error> {
        let message = ClearImageRules {
            request_id: self.next_request_id(),
        };
        self.request(
            &encode(message.encoded_len(), |out| message.encode(out))?,
            0,
        )?;
        Ok(())
    }

    /// The rules the driver holds, in no particular order. Paths come back in the NT
    /// form the driver matches (`\Device\HarddiskVolume3\Tools\app.exe`); names as set.
    pub fn list(&self) -> Result<Vec<(String, Visibility)>, Error> {
        let message = ListImageRules {
            request_id: self.next_request_id(),
        };
        let bytes = encode(message.encoded_len(), |out| message.encode(out))?;
        let payload = self.request(&bytes, MAX_RULE_LIST_LEN)?;
        let list = RuleList::decode(&payload)?;
        list.iter()
            .map(|rule| {
                let visibility = match rule.visibility {
                    RuleVisibility::Expose => Visibility::Expose,
                    RuleVisibility::Disguise => Visibility::Disguise,
                    // A visibility of a newer protocol: this decoder yields no other.
                    _ => return Err(DecodeError::BadValue(Field::RuleVisibility).into()),
                };
                Ok((rule.pattern.chars_lossy().collect(), visibility))
            })
            .collect()
    }

    fn next_request_id(&self) -> u64 {
        self.control.next_request_id()
    }

    fn request(&self, message: &[u8], payload_capacity: usize) -> Result<Vec<u8>, Error> {
        self.control.request(message, payload_capacity)
    }
}

/// Characters no file name may hold (besides the separators, which make a path).
const NOT_IN_NAMES: &[char] = &['*', '?', '"', '<', '>', '|', ':'];

/// The pattern the driver matches for `image`: the NT form of a path (through
/// QueryDosDeviceW for a drive letter), or a bare file name as given.
fn pattern(image: &str) -> Result<Vec<u16>, Error> {
    let trimmed = image.trim();
    if trimmed.is_empty() {
        return Err(Error::InvalidArgument("empty image".into()));
    }
    let text = if trimmed.contains(['\\', '/']) || trimmed.contains(':') && is_drive(trimmed) {
        config::nt_path(Path::new(trimmed), "image")?
    } else {
        if trimmed == "." || trimmed == ".." {
            return Err(Error::InvalidArgument(format!(
                "{trimmed:?} is not a file name"
            )));
        }
        if trimmed.contains(NOT_IN_NAMES) || trimmed.chars().any(char::is_control) {
            return Err(Error::InvalidArgument(format!(
                "{trimmed:?} has a character no file name has"
            )));
        }
        trimmed.to_owned()
    };
    let units: Vec<u16> = text.encode_utf16().collect();
    if units.len() > MAX_PATTERN_UNITS {
        return Err(Error::InvalidArgument(format!(
            "image pattern of {} UTF-16 units is longer than the {MAX_PATTERN_UNITS} the \
             driver keeps",
            units.len()
        )));
    }
    Ok(units)
}

/// Whether `text` starts with a drive letter and its colon (`C:`, `C:\...`).
fn is_drive(text: &str) -> bool {
    let mut chars = text.chars();
    matches!((chars.next(), chars.next()), (Some(l), Some(':')) if l.is_ascii_alphabetic())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(image: &str) -> Result<String, Error> {
        pattern(image).map(|units| String::from_utf16_lossy(&units))
    }

    #[test]
    fn names_are_kept_and_nt_paths_normalised() {
        assert_eq!(text("app.exe").unwrap(), "app.exe");
        assert_eq!(text("  My App.exe ").unwrap(), "My App.exe");
        assert_eq!(
            text(r"\Device\HarddiskVolume2\Tools\").unwrap(),
            r"\Device\HarddiskVolume2\Tools"
        );
        assert_eq!(
            text(r"\\?\\Device\HarddiskVolume2/a//b.exe").unwrap(),
            r"\Device\HarddiskVolume2\a\b.exe"
        );
    }

    #[test]
    fn bad_images_are_refused_before_anything_is_sent() {
        let long = format!(r"\Device\HarddiskVolume1\{}", "a".repeat(MAX_PATTERN_UNITS));
        for bad in [
            "",
            "   ",
            ".",
            "..",
            r"..\x",
            r"Tools\app.exe",
            r"C:app.exe",
            r"\\server\share\app.exe",
            r"C:\Tools\..\app.exe",
            "a*.exe",
            "a?.exe",
            "app.exe:stream",
            "a\u{1}.exe",
            &long,
        ] {
            assert!(
                matches!(pattern(bad), Err(Error::InvalidArgument(_))),
                "{bad:?}"
            );
        }
    }
}
