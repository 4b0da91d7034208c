//! The administrator's image rules as the management messages carry them: what a rule
//! says ([`RuleVisibility`]), the limits, and the rule list that answers
//! [`ListImageRules`](crate::msg::ListImageRules).
//!
//! A rule's pattern is UTF-16: either an absolute NT path (starting with `\`), matching
//! that image or, when it names a directory, every image under it; or a bare file name
//! (no `\`), matching an image of that name anywhere. Which patterns are well formed
//! (normal form, no `.` or `..` components) is the driver's decision, answered with a
//! status; this format only bounds their length.
//!
//! The rule list (a [`Reply`](crate::msg::Reply) payload), little-endian:
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | rule count, ≤ [`MAX_RULES`] |
//! | 4 | 4 | reserved, zero |
//! | 8 | … | the rules, back to back |
//!
//! Each rule: visibility `u32` ([`RuleVisibility`]), pattern length in bytes `u16`
//! (≤ [`MAX_PATTERN_BYTES`]), 2 reserved, then the pattern (UTF-16LE). The last rule
//! ends the list exactly.

use crate::error::{DecodeError, EncodeError, Field};
use crate::utf16::Utf16;
use crate::wire::{Reader, Writer, len_u16};

/// How many image rules the driver holds at most.
pub const MAX_RULES: usize = 32;

/// Longest rule pattern, in UTF-16 code units.
pub const MAX_PATTERN_UNITS: usize = 512;

/// Longest rule pattern, in bytes.
pub const MAX_PATTERN_BYTES: usize = MAX_PATTERN_UNITS * 2;

/// Size of the rule list's fixed part.
const LIST_FIXED: usize = 8;

/// Size of one rule's fixed part in the list.
const ENTRY_FIXED: usize = 8;

/// Longest rule list: [`MAX_RULES`] rules with patterns at their limit.
pub const MAX_RULE_LIST_LEN: usize = LIST_FIXED + MAX_RULES * (ENTRY_FIXED + MAX_PATTERN_BYTES);

/// What images matching a rule see of cloudflt's placeholders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
#[non_exhaustive]
pub enum RuleVisibility {
    /// Placeholders are reported as reparse points with cloudflt's tag.
    Expose = 1,
    /// Placeholders look like ordinary files.
    Disguise = 2,
}

impl RuleVisibility {
    /// The visibility with wire value `v`, if there is one (0 is not).
    pub const fn from_u32(v: u32) -> Option<Self> {
        match v {
            1 => Some(Self::Expose),
            2 => Some(Self::Disguise),
            _ => None,
        }
    }

    /// The wire value.
    pub const fn to_u32(self) -> u32 {
        self as u32
    }
}

/// Checks a pattern against [`MAX_PATTERN_BYTES`]; its wire length.
pub(crate) fn pattern_len(pattern: &Utf16<'_>) -> Result<u16, EncodeError> {
    if pattern.byte_len() > MAX_PATTERN_BYTES {
        return Err(EncodeError::TooLarge(Field::Pattern));
    }
    len_u16(pattern.byte_len(), Field::Pattern)
}

/// Reads a pattern length and checks it against [`MAX_PATTERN_BYTES`].
pub(crate) fn read_pattern_len(r: &mut Reader<'_>) -> Result<u16, DecodeError> {
    let len = r.u16()?;
    if usize::from(len) > MAX_PATTERN_BYTES {
        return Err(DecodeError::TooLarge(Field::Pattern));
    }
    Ok(len)
}

/// One rule of a [`RuleList`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleEntry<'a> {
    /// What matching images see.
    pub visibility: RuleVisibility,
    /// The pattern as the driver holds it.
    pub pattern: Utf16<'a>,
}

impl<'a> RuleEntry<'a> {
    fn read(r: &mut Reader<'a>) -> Result<Self, DecodeError> {
        let visibility = RuleVisibility::from_u32(r.u32()?)
            .ok_or(DecodeError::BadValue(Field::RuleVisibility))?;
        let len = read_pattern_len(r)?;
        r.reserved(2)?;
        Ok(Self {
            visibility,
            pattern: r.utf16(len, Field::Pattern)?,
        })
    }
}

/// A decoded rule list, borrowing its bytes; every rule in it was checked by
/// [`RuleList::decode`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleList<'a> {
    count: usize,
    /// The rules, after the fixed part.
    rules: &'a [u8],
}

impl<'a> RuleList<'a> {
    /// Decodes a rule list: the count within [`MAX_RULES`], every rule well formed, and
    /// nothing after the last.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, DecodeError> {
        let mut r = Reader::new(bytes);
        let count = usize::try_from(r.u32()?).map_err(|_| DecodeError::TooLarge(Field::Rules))?;
        r.reserved(4)?;
        if count > MAX_RULES {
            return Err(DecodeError::TooLarge(Field::Rules));
        }
        let rules = r.rest();
        for _ in 0..count {
            RuleEntry::read(&mut r)?;
        }
        r.finish()?;
        Ok(Self { count, rules })
    }

    /// How many rules it holds.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether it holds no rule.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The rules, in the driver's order.
    pub fn iter(&self) -> impl Iterator<Item = RuleEntry<'a>> + 'a {
        let mut r = Reader::new(self.rules);
        // `decode` read each of the `count` rules successfully, so none fails here.
        (0..self.count).map_while(move |_| RuleEntry::read(&mut r).ok())
    }
}

/// Writes a rule list into a caller's buffer one rule at a time, without allocating
/// (the driver encodes its table under a spin lock).
///
/// ```
/// use cloudflt_proto::Utf16;
/// use cloudflt_proto::rules::{RuleList, RuleListEncoder, RuleVisibility};
///
/// let name: Vec<u16> = "app.exe".encode_utf16().collect();
/// let mut out = [0u8; 64];
/// let mut list = RuleListEncoder::new(&mut out);
/// list.push(RuleVisibility::Expose, Utf16::from_units(&name))?;
/// let len = list.finish()?;
/// let decoded = RuleList::decode(&out[..len])?;
/// assert!(decoded.iter().all(|rule| rule.pattern.eq_str("app.exe")));
/// assert_eq!(decoded.len(), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct RuleListEncoder<'a> {
    w: Writer<'a>,
    count: u32,
}

impl<'a> RuleListEncoder<'a> {
    /// An empty list at the start of `out`. A buffer of [`MAX_RULE_LIST_LEN`] bytes holds
    /// any list.
    pub fn new(out: &'a mut [u8]) -> Self {
        Self {
            w: Writer::whole(out),
            count: 0,
        }
    }

    /// Appends a rule; refuses more than [`MAX_RULES`] rules, a pattern over
    /// [`MAX_PATTERN_BYTES`], and a buffer too small.
    pub fn push(
        &mut self,
        visibility: RuleVisibility,
        pattern: Utf16<'_>,
    ) -> Result<(), EncodeError> {
        if self.count as usize >= MAX_RULES {
            return Err(EncodeError::TooLarge(Field::Rules));
        }
        let len = pattern_len(&pattern)?;
        if self.count == 0 {
            self.w.zeros(LIST_FIXED)?;
        }
        self.w.u32(visibility.to_u32())?;
        self.w.u16(len)?;
        self.w.zeros(2)?;
        self.w.utf16(&pattern)?;
        self.count += 1;
        Ok(())
    }

    /// Writes the count; the list's length.
    pub fn finish(mut self) -> Result<usize, EncodeError> {
        if self.count == 0 {
            self.w.zeros(LIST_FIXED)?;
        }
        self.w.patch_u32(0, self.count)?;
        Ok(self.w.finish())
    }
}

#[cfg(test)]
mod tests {
    extern crate std;

    use super::*;
    use proptest::prelude::*;
    use std::vec::Vec;

    fn units(s: &str) -> Vec<u16> {
        s.encode_utf16().collect()
    }

    fn encode(rules: &[(RuleVisibility, Vec<u16>)]) -> Result<Vec<u8>, EncodeError> {
        let mut out = std::vec![0u8; MAX_RULE_LIST_LEN + 64];
        let mut list = RuleListEncoder::new(&mut out);
        for (visibility, pattern) in rules {
            list.push(*visibility, Utf16::from_units(pattern))?;
        }
        let len = list.finish()?;
        out.truncate(len);
        Ok(out)
    }

    fn owned(list: &RuleList<'_>) -> Vec<(RuleVisibility, Vec<u16>)> {
        list.iter()
            .map(|e| (e.visibility, e.pattern.units().collect()))
            .collect()
    }

    #[test]
    fn a_list_has_the_documented_layout() {
        let rules = [
            (RuleVisibility::Expose, units("a.exe")),
            (RuleVisibility::Disguise, units("\\D\\x")),
        ];
        let bytes = encode(&rules).unwrap_or_default();
        assert_eq!(bytes.len(), 8 + (8 + 10) + (8 + 8));
        assert_eq!(&bytes[..8], &[2, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(&bytes[8..16], &[1, 0, 0, 0, 10, 0, 0, 0]);
        assert_eq!(&bytes[16..18], &[b'a', 0]);
        assert_eq!(&bytes[26..34], &[2, 0, 0, 0, 8, 0, 0, 0]);
        let list = RuleList::decode(&bytes);
        assert_eq!(list.map(|l| owned(&l)), Ok(rules.to_vec()));
        assert_eq!(RuleList::decode(&bytes).map(|l| l.len()), Ok(2));
    }

    #[test]
    fn an_empty_list_is_its_fixed_part() {
        let bytes = encode(&[]).unwrap_or_default();
        assert_eq!(bytes, [0u8; 8]);
        assert!(RuleList::decode(&bytes).is_ok_and(|l| l.is_empty()));
        let mut out = [0u8; 7];
        assert!(RuleListEncoder::new(&mut out).finish().is_err());
    }

    #[test]
    fn each_malformation_is_refused_with_its_own_error() {
        let good = encode(&[(RuleVisibility::Expose, units("ab"))]).unwrap_or_default();
        let patched = |offset: usize, bytes: &[u8]| {
            let mut bad = good.clone();
            bad[offset..offset + bytes.len()].copy_from_slice(bytes);
            RuleList::decode(&bad).map(|_| ())
        };
        assert_eq!(patched(0, &[2]), Err(DecodeError::Truncated));
        assert_eq!(patched(0, &[0]), Err(DecodeError::LengthMismatch));
        assert_eq!(patched(0, &[33]), Err(DecodeError::TooLarge(Field::Rules)));
        assert_eq!(
            patched(4, &[1]),
            Err(DecodeError::BadValue(Field::Reserved))
        );
        assert_eq!(
            patched(8, &[0]),
            Err(DecodeError::BadValue(Field::RuleVisibility))
        );
        assert_eq!(
            patched(8, &[3]),
            Err(DecodeError::BadValue(Field::RuleVisibility))
        );
        assert_eq!(
            patched(12, &[1, 8]),
            Err(DecodeError::TooLarge(Field::Pattern))
        );
        assert_eq!(
            patched(12, &[3, 0]),
            Err(DecodeError::BadString(Field::Pattern))
        );
        assert_eq!(patched(12, &[2, 0]), Err(DecodeError::LengthMismatch));
        assert_eq!(patched(12, &[6, 0]), Err(DecodeError::Truncated));
        assert_eq!(
            patched(14, &[0, 1]),
            Err(DecodeError::BadValue(Field::Reserved))
        );
        let mut trailing = good.clone();
        trailing.push(0);
        assert_eq!(
            RuleList::decode(&trailing),
            Err(DecodeError::LengthMismatch)
        );
    }

    #[test]
    fn the_encoder_refuses_what_the_decoder_would() {
        let long = std::vec![0x41u16; MAX_PATTERN_UNITS + 1];
        assert_eq!(
            encode(&[(RuleVisibility::Expose, long)]),
            Err(EncodeError::TooLarge(Field::Pattern))
        );
        let many: Vec<_> = (0..=MAX_RULES)
            .map(|_| (RuleVisibility::Disguise, units("x")))
            .collect();
        assert_eq!(encode(&many), Err(EncodeError::TooLarge(Field::Rules)));
        let mut small = [0u8; 12];
        let mut list = RuleListEncoder::new(&mut small);
        assert!(
            list.push(RuleVisibility::Expose, Utf16::from_units(&units("x")))
                .is_err()
        );
    }

    #[test]
    fn the_longest_list_fits_its_bound() {
        let pattern = std::vec![0x41u16; MAX_PATTERN_UNITS];
        let all: Vec<_> = (0..MAX_RULES)
            .map(|_| (RuleVisibility::Expose, pattern.clone()))
            .collect();
        let bytes = encode(&all).unwrap_or_default();
        assert_eq!(bytes.len(), MAX_RULE_LIST_LEN);
        assert_eq!(RuleList::decode(&bytes).map(|l| l.len()), Ok(MAX_RULES));
    }

    fn arb_rules() -> impl Strategy<Value = Vec<(RuleVisibility, Vec<u16>)>> {
        proptest::collection::vec(
            (
                prop_oneof![Just(RuleVisibility::Expose), Just(RuleVisibility::Disguise)],
                proptest::collection::vec(any::<u16>(), 0..=40),
            ),
            0..=MAX_RULES,
        )
    }

    proptest! {
        #[test]
        fn any_list_round_trips_and_truncation_is_refused(
            rules in arb_rules(),
            cut in any::<prop::sample::Index>(),
        ) {
            let bytes = encode(&rules).unwrap_or_default();
            let list = RuleList::decode(&bytes);
            prop_assert_eq!(list.map(|l| owned(&l)), Ok(rules));
            prop_assert!(RuleList::decode(&bytes[..cut.index(bytes.len())]).is_err());
        }

        #[test]
        fn corrupted_lists_never_panic(
            rules in arb_rules(),
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            let mut bytes = encode(&rules).unwrap_or_default();
            let i = at.index(bytes.len());
            bytes[i] = byte;
            crate::fuzz::fuzz_rule_list(&bytes);
        }
    }
}
