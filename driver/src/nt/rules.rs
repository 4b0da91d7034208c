//! The administrator's image rules: one table, [`ImageRules`] of the engine under a spin
//! lock, that the disguise decision reads ([`with_rules`]) and management connections
//! change ([`set`], [`remove`], [`clear`], [`list`]).
//!
//! Rules live in memory until the driver unloads: nothing is persisted (a service that
//! wants them back after a restart sets them again when it starts). The port clears the
//! table when it is created, so each load of the driver starts with none, also where the
//! image's statics outlive an unload (the kernel model, which links the driver into the
//! test process).
//!
//! The table is static: it takes no pool, so setting a rule cannot fail for memory, and
//! it has no teardown.

use cloudflt_proto::Utf16;
use cloudflt_proto::rules::{MAX_PATTERN_UNITS, MAX_RULES, RuleListEncoder, RuleVisibility};
use windows_sys::Win32::Foundation::{
    NTSTATUS, STATUS_CLOUD_FILE_INSUFFICIENT_RESOURCES, STATUS_NOT_FOUND,
    STATUS_OBJECT_NAME_INVALID,
};

use super::sync::SpinLock;
use crate::engine::visibility::{ImageRules, MAX_RULE, RuleError, Visibility};

// A pattern the port accepts always fits the engine's rule.
const _: () = assert!(MAX_PATTERN_UNITS == MAX_RULE);

/// The driver's rule table: [`MAX_RULES`] rules.
pub(crate) type Rules = ImageRules<MAX_RULES>;

static RULES: SpinLock<Rules> = SpinLock::new(ImageRules::new());

/// Runs `f` on the rules, with their lock held: `f` runs at DISPATCH_LEVEL, so it only
/// looks (an [`ImageRules::lookup`]) and returns. Callable at IRQL <= DISPATCH_LEVEL.
pub(super) fn with_rules<R>(f: impl FnOnce(&Rules) -> R) -> R {
    RULES.with(|rules| f(rules))
}

/// The status a management client's refused rule gets.
fn refusal(error: RuleError) -> NTSTATUS {
    match error {
        RuleError::InvalidPattern => STATUS_OBJECT_NAME_INVALID,
        RuleError::Full => STATUS_CLOUD_FILE_INSUFFICIENT_RESOURCES,
    }
}

/// A pattern from a message, copied out of the message buffer into units.
struct Pattern {
    units: [u16; MAX_RULE],
    len: usize,
}

impl Pattern {
    /// The pattern's units; STATUS_OBJECT_NAME_INVALID if longer than a rule holds (the
    /// proto decoder bounds it already, so this only guards a mismatch of the limits).
    fn new(pattern: Utf16<'_>) -> Result<Self, NTSTATUS> {
        let mut units = [0u16; MAX_RULE];
        let mut len = 0;
        for unit in pattern.units() {
            let slot = units.get_mut(len).ok_or(STATUS_OBJECT_NAME_INVALID)?;
            *slot = unit;
            len += 1;
        }
        Ok(Self { units, len })
    }

    fn as_slice(&self) -> &[u16] {
        self.units.get(..self.len).unwrap_or(&[])
    }
}

/// What a rule's wire visibility means to the engine.
fn visibility(wire: RuleVisibility) -> Result<Visibility, NTSTATUS> {
    match wire {
        RuleVisibility::Expose => Ok(Visibility::Expose),
        RuleVisibility::Disguise => Ok(Visibility::Disguise),
        // A value a newer proto defines and this driver does not act on.
        _ => Err(STATUS_OBJECT_NAME_INVALID),
    }
}

/// Sets the rule for `pattern`, replacing one for the same pattern. A pattern that is not
/// well formed is STATUS_OBJECT_NAME_INVALID; a full table is
/// STATUS_CLOUD_FILE_INSUFFICIENT_RESOURCES.
pub(super) fn set(pattern: Utf16<'_>, wire: RuleVisibility) -> Result<(), NTSTATUS> {
    let pattern = Pattern::new(pattern)?;
    let visibility = visibility(wire)?;
    RULES
        .with(|rules| rules.set(pattern.as_slice(), visibility))
        .map_err(refusal)
}

/// Removes the rule for `pattern`; STATUS_NOT_FOUND if there is none.
pub(super) fn remove(pattern: Utf16<'_>) -> Result<(), NTSTATUS> {
    // A pattern too long to be set was never set.
    let pattern = Pattern::new(pattern).map_err(|_| STATUS_NOT_FOUND)?;
    if RULES.with(|rules| rules.remove(pattern.as_slice())) {
        Ok(())
    } else {
        Err(STATUS_NOT_FOUND)
    }
}

/// Removes every rule.
pub(super) fn clear() {
    RULES.with(|rules| rules.clear());
}

/// Encodes every rule into `out` as a proto rule list; its length. `out` of
/// [`MAX_RULE_LIST_LEN`](cloudflt_proto::rules::MAX_RULE_LIST_LEN) bytes always suffices.
pub(super) fn list(out: &mut [u8]) -> Result<usize, NTSTATUS> {
    RULES.with(|rules| {
        let mut encoder = RuleListEncoder::new(out);
        for rule in rules.iter() {
            let wire = match rule.visibility {
                Visibility::Expose => RuleVisibility::Expose,
                Visibility::Disguise => RuleVisibility::Disguise,
            };
            encoder
                .push(wire, Utf16::from_units(rule.pattern()))
                .map_err(|_| STATUS_CLOUD_FILE_INSUFFICIENT_RESOURCES)?;
        }
        encoder
            .finish()
            .map_err(|_| STATUS_CLOUD_FILE_INSUFFICIENT_RESOURCES)
    })
}
