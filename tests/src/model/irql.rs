//! IRQL per thread, and the check each API makes against its documented maximum.

use std::cell::Cell;

/// PASSIVE_LEVEL.
pub const PASSIVE_LEVEL: u8 = 0;
/// APC_LEVEL.
pub const APC_LEVEL: u8 = 1;
/// DISPATCH_LEVEL.
pub const DISPATCH_LEVEL: u8 = 2;

/// A level's name as wdm.h spells it.
pub(crate) fn name(level: u8) -> String {
    match level {
        PASSIVE_LEVEL => "PASSIVE_LEVEL".to_owned(),
        APC_LEVEL => "APC_LEVEL".to_owned(),
        DISPATCH_LEVEL => "DISPATCH_LEVEL".to_owned(),
        other => format!("IRQL {other}"),
    }
}

thread_local! {
    static IRQL: Cell<u8> = const { Cell::new(PASSIVE_LEVEL) };
}

/// The current thread's IRQL.
pub fn current() -> u8 {
    IRQL.with(Cell::get)
}

/// Runs `f` at `level` on this thread, as code holding a spin lock or running a DPC would.
pub fn at<R>(level: u8, f: impl FnOnce() -> R) -> R {
    let old = IRQL.with(|c| c.replace(level));
    let r = f();
    IRQL.with(|c| c.set(old));
    r
}

/// Records a violation if `api` is called above `max`.
pub(crate) fn check(api: &'static str, max: u8) {
    let now = current();
    if now > max {
        super::with_kernel(|k| {
            k.violation(
                api,
                format!("called at IRQL {now}, documented maximum is {max}"),
            )
        });
    }
}

/// Sets this thread's IRQL and returns the old one, for the APIs that raise or lower it
/// outside any scope (spin lock acquire and release).
pub(crate) fn set(level: u8) -> u8 {
    IRQL.with(|c| c.replace(level))
}
