//! The registered sync roots: what CfRegisterSyncRoot records once and the driver keeps
//! whether or not a provider is connected, across provider death, driver reload and
//! reboot (issue 13).
//!
//! The store is the driver's own service key: one REG_BINARY value per root under
//! `<service key>\Parameters\SyncRoots`, named by the root's NT path (value names are
//! case-insensitive, as the paths are), holding the root's registration record
//! ([`Registration`]) as the REGISTER request carried it. Chosen over reparse data on the
//! root directory because a record holds up to 64 KiB of sync-root identity and 4 KiB of
//! root file identity, far more than the 16 KiB a reparse point holds, and because the
//! registry is read at DriverEntry before any volume is attached; it is also where
//! Windows keeps its own sync-root registrations (SyncRootManager). A value is written
//! and flushed before the root is published, so a registration the provider was told
//! succeeded survives a crash; a value that does not decode at load is left in place
//! (never deleted: it may be a newer driver's) and its root is not registered.
//!
//! In memory the roots are a bounded table ([`MAX_ROOTS`]) of pool objects read under a
//! spin lock; registering, updating and unregistering are serialised by one [`Gate`]
//! (they wait on registry I/O, which a spin lock cannot be held across).

use core::ptr::NonNull;

use cloudflt_proto::connect::ConnectionContext;
use cloudflt_proto::msg::{ROOT_INFO_CONNECTED, RegisterSyncRoot, SyncRootInfo, SyncRootList};
use cloudflt_proto::registration::{
    HardLinkPolicy, HydrationModifiers, ManagementPolicy, RegisterFlags, Registration, RootFlags,
};
use cloudflt_proto::{InSyncPolicy, PopulationPolicy};
use windows_sys::Wdk::Foundation::OBJECT_ATTRIBUTES;
use windows_sys::Win32::Foundation::{
    HANDLE, NTSTATUS, OBJ_CASE_INSENSITIVE, OBJ_KERNEL_HANDLE, STATUS_BUFFER_OVERFLOW,
    STATUS_BUFFER_TOO_SMALL, STATUS_CLOUD_FILE_INSUFFICIENT_RESOURCES,
    STATUS_CLOUD_FILE_INVALID_REQUEST, STATUS_CLOUD_FILE_NOT_UNDER_SYNC_ROOT,
    STATUS_CLOUD_FILE_PROVIDER_NOT_RUNNING, STATUS_INSUFFICIENT_RESOURCES,
    STATUS_INVALID_PARAMETER, STATUS_NO_MORE_ENTRIES, STATUS_OBJECT_NAME_COLLISION, UNICODE_STRING,
};

use super::file::PoolBuf;
use super::ntos;
use super::pool::{PoolBox, TAG_ROOT};
use super::providers;
use super::status::{self, nt_success};
use super::sync::{Gate, SpinLock};
use crate::engine::policy::Policy;
use crate::engine::syncroot::{self, MAX_PATH};

/// How many sync roots may be registered at once (one more is refused with
/// STATUS_CLOUD_FILE_INSUFFICIENT_RESOURCES).
pub(crate) const MAX_ROOTS: usize = 64;

/// What the driver applies from a root's registration; lookups copy it out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Policies {
    pub(crate) hydration: Policy,
    pub(crate) modifiers: HydrationModifiers,
    pub(crate) population: PopulationPolicy,
    pub(crate) in_sync: InSyncPolicy,
    pub(crate) hard_links: HardLinkPolicy,
    pub(crate) management: ManagementPolicy,
    pub(crate) flags: RootFlags,
}

impl Policies {
    fn of(registration: &Registration<'_>) -> Option<Self> {
        Some(Self {
            hydration: Policy::from_wire(registration.hydration as u8)?,
            modifiers: registration.modifiers,
            population: registration.population,
            in_sync: registration.in_sync,
            hard_links: registration.hard_links,
            management: registration.management,
            flags: registration.flags,
        })
    }
}

/// One registered root: its path, its policies and its record as stored.
struct Root {
    path: [u16; MAX_PATH],
    len: usize,
    policies: Policies,
    record: PoolBuf,
    record_len: usize,
}

impl Root {
    fn path(&self) -> &[u16] {
        self.path.get(..self.len).unwrap_or(&[])
    }

    fn record(&self) -> &[u8] {
        self.record.as_slice().get(..self.record_len).unwrap_or(&[])
    }

    /// A root for `registration`, whose record is copied; `None` when the path is not a
    /// valid root, a policy is unknown to the engine, or pool is exhausted.
    fn new(registration: &Registration<'_>) -> Result<PoolBox<Root>, NTSTATUS> {
        let mut path = [0u16; MAX_PATH];
        let mut len = 0;
        for unit in registration.sync_root.units() {
            let slot = path.get_mut(len).ok_or(STATUS_INVALID_PARAMETER)?;
            *slot = unit;
            len += 1;
        }
        let valid = path.get(..len).is_some_and(syncroot::is_valid);
        if !valid {
            return Err(STATUS_INVALID_PARAMETER);
        }
        let policies = Policies::of(registration).ok_or(STATUS_INVALID_PARAMETER)?;
        let record_len = registration.encoded_len();
        let mut record = PoolBuf::zeroed(record_len).ok_or(STATUS_INSUFFICIENT_RESOURCES)?;
        registration
            .encode(record.as_mut_slice())
            .map_err(|_| STATUS_INVALID_PARAMETER)?;
        PoolBox::try_new(
            Root {
                path,
                len,
                policies,
                record,
                record_len,
            },
            TAG_ROOT,
        )
        .ok_or(STATUS_INSUFFICIENT_RESOURCES)
    }
}

type Slots = [Option<NonNull<Root>>; MAX_ROOTS];

/// The table: slots hold pool objects it owns.
struct Table(Slots);

// SAFETY: the pointers are pool objects usable from any thread, reached under the lock.
unsafe impl Send for Table {}

static TABLE: SpinLock<Table> = SpinLock::new(Table([None; MAX_ROOTS]));

/// Serialises register, update and unregister (the check, the registry write and the
/// publication are one step for other writers).
static GATE: Gate = Gate::uninit();

/// Longest service key path kept, in UTF-16 units.
const KEY_UNITS: usize = 400;
/// The store's key below the service key.
const STORE_SUFFIX: &str = "\\Parameters\\SyncRoots";

/// `<service key>\Parameters\SyncRoots`, set at DriverEntry.
static KEY: SpinLock<([u16; KEY_UNITS], usize)> = SpinLock::new(([0; KEY_UNITS], 0));

/// REG_BINARY.
const REG_BINARY: u32 = 3;
/// KEY_VALUE_PARTIAL_INFORMATION: TitleIndex, Type, DataLength, then the data.
const KEY_VALUE_PARTIAL_INFORMATION: i32 = 2;
const PARTIAL_FIXED: usize = 12;
/// KEY_READ | KEY_WRITE.
const KEY_READ_WRITE: u32 = 0x0002_0019 | 0x0002_0006;

/// Loads the registered roots from the store: called by DriverEntry, at PASSIVE_LEVEL,
/// before the port exists. `registry_path` is DriverEntry's. A store that cannot be
/// opened leaves no root registered (each registration will then fail to persist and be
/// refused, rather than exist only until the next reboot).
pub(crate) fn start(registry_path: &[u16]) {
    GATE.init();
    KEY.with(|(units, len)| {
        *len = 0;
        let suffix = STORE_SUFFIX.encode_utf16();
        for (slot, unit) in units
            .iter_mut()
            .zip(registry_path.iter().copied().chain(suffix))
        {
            *slot = unit;
            *len += 1;
        }
        if *len != registry_path.len() + STORE_SUFFIX.len() {
            *len = 0;
        }
    });
    let Ok(key) = Key::open() else {
        debug_print!("cloudflt: the sync-root store cannot be opened");
        return;
    };
    let mut index = 0u32;
    loop {
        match key.value(index) {
            Ok(Some((buffer, len))) => {
                let record = buffer.as_slice().get(PARTIAL_FIXED..len).unwrap_or(&[]);
                if let Err(_status) = load_one(record) {
                    debug_print!("cloudflt: sync-root record {index} not loaded: {_status:#010x}");
                }
            }
            Ok(None) => break,
            Err(_status) => {
                debug_print!("cloudflt: sync-root store read failed: {_status:#010x}");
                break;
            }
        }
        index = index.saturating_add(1);
    }
}

fn load_one(record: &[u8]) -> Result<(), NTSTATUS> {
    let registration = Registration::decode(record).map_err(|_| STATUS_INVALID_PARAMETER)?;
    let root = Root::new(&registration)?;
    let raw = PoolBox::into_raw(root);
    let placed = TABLE.with(|table| {
        // SAFETY: `raw` is the live object just made.
        let path = unsafe { raw.as_ref() }.path();
        if overlapping(table, path).is_some() {
            return false;
        }
        match table.0.iter_mut().find(|s| s.is_none()) {
            Some(slot) => {
                *slot = Some(raw);
                true
            }
            None => false,
        }
    });
    if !placed {
        // SAFETY: not published.
        drop(unsafe { PoolBox::from_raw(raw, TAG_ROOT) });
        return Err(STATUS_CLOUD_FILE_INSUFFICIENT_RESOURCES);
    }
    Ok(())
}

/// Frees the table: called by teardown once the port is closed and the filter
/// unregistered (no lookup can run).
pub(crate) fn stop() {
    let mut taken: Slots = [None; MAX_ROOTS];
    TABLE.with(|table| core::mem::swap(&mut table.0, &mut taken));
    for raw in taken.into_iter().flatten() {
        // SAFETY: owned by the table, which no longer holds it.
        drop(unsafe { PoolBox::from_raw(raw, TAG_ROOT) });
    }
}

/// The registered root equal to, inside or enclosing `path`.
fn overlapping(table: &Table, path: &[u16]) -> Option<NonNull<Root>> {
    table.0.iter().flatten().copied().find(|r| {
        // SAFETY: registered roots are alive while in the table.
        let other = unsafe { r.as_ref() }.path();
        syncroot::under(other, path).is_some() || syncroot::under(path, other).is_some()
    })
}

/// The registered root `path` is or lies under.
fn containing(table: &Table, path: &[u16]) -> Option<NonNull<Root>> {
    table.0.iter().flatten().copied().find(|r| {
        // SAFETY: registered roots are alive while in the table.
        syncroot::under(unsafe { r.as_ref() }.path(), path).is_some()
    })
}

/// The registered root whose path is `path`.
fn exact(table: &Table, path: &[u16]) -> Option<NonNull<Root>> {
    table.0.iter().flatten().copied().find(|r| {
        // SAFETY: registered roots are alive while in the table.
        syncroot::under(unsafe { r.as_ref() }.path(), path).is_some_and(<[u16]>::is_empty)
    })
}

/// Which registered root `path` is or lies under, as a key that tells roots apart (no
/// two registered roots share one while both are registered); `None` outside every
/// root.
pub(crate) fn root_of(path: &[u16]) -> Option<usize> {
    TABLE.with(|table| containing(table, path).map(|r| r.as_ptr() as usize))
}

/// The path of the registered root `path` is or lies under, copied into `out`: its
/// length in units, `None` outside every root.
pub(crate) fn root_path(path: &[u16], out: &mut [u16; MAX_PATH]) -> Option<usize> {
    TABLE.with(|table| {
        // SAFETY: registered roots are alive while in the table (the lock is held).
        let root = unsafe { containing(table, path)?.as_ref() }.path();
        for (slot, unit) in out.iter_mut().zip(root) {
            *slot = *unit;
        }
        Some(root.len().min(MAX_PATH))
    })
}

/// Whether a create whose file object names `volume_relative` (its FileName, the path
/// after the volume's device name, with no RelatedFileObject) may lie in a registered
/// root: the cheap test that spares every other create a name query (issue 16's off-root
/// path). Conservative: only the part of each root after its device name is compared
/// (a root of another volume with the same path answers yes, and the accurate test that
/// follows says no), and a name with a `~` (maybe an 8.3 short name of a root's
/// component) or a stream suffix on a component answers yes.
pub(crate) fn may_lie_in_a_root(volume_relative: &[u16]) -> bool {
    const TILDE: u16 = b'~' as u16;
    const COLON: u16 = b':' as u16;
    if volume_relative.iter().any(|u| *u == TILDE || *u == COLON) {
        return true;
    }
    let name = volume_relative
        .strip_suffix(&[u16::from(b'\\')])
        .unwrap_or(volume_relative);
    TABLE.with(|table| {
        table.0.iter().flatten().any(|r| {
            // SAFETY: registered roots are alive while in the table (the lock is held).
            let path = unsafe { r.as_ref() }.path();
            // `\Device\Name` is the device part: the root's rest starts at the third
            // separator.
            let rest = path
                .iter()
                .enumerate()
                .filter(|(_, u)| **u == u16::from(b'\\'))
                .nth(2)
                .and_then(|(at, _)| path.get(at..))
                .unwrap_or(&[]);
            !rest.is_empty() && syncroot::under(rest, name).is_some()
        })
    })
}

/// Whether no sync root is registered at all (nothing any rename could move).
pub(crate) fn none_registered() -> bool {
    TABLE.with(|table| table.0.iter().all(Option::is_none))
}

/// Whether `path` is a registered root or encloses one (a directory whose rename would
/// move a root).
pub(crate) fn any_at_or_below(path: &[u16]) -> bool {
    TABLE.with(|table| {
        table.0.iter().flatten().any(|r| {
            // SAFETY: registered roots are alive while in the table (the lock is held).
            syncroot::under(path, unsafe { r.as_ref() }.path()).is_some()
        })
    })
}

/// The policies of the registered root `path` is or lies under.
pub(crate) fn policies(path: &[u16]) -> Option<Policies> {
    TABLE.with(|table| {
        // SAFETY: registered roots are alive while in the table (the lock is held).
        containing(table, path).map(|r| unsafe { r.as_ref() }.policies)
    })
}

/// What an access to data of the placeholder at `path` fails with when no provider
/// serves it: STATUS_CLOUD_FILE_PROVIDER_NOT_RUNNING under a registered root, and
/// STATUS_CLOUD_FILE_NOT_UNDER_SYNC_ROOT outside every one (an unregistered root's
/// placeholders: nobody will ever serve them, which "not running" would hide).
pub(crate) fn no_provider_status(path: &[u16]) -> NTSTATUS {
    if policies(path).is_some() {
        STATUS_CLOUD_FILE_PROVIDER_NOT_RUNNING
    } else {
        STATUS_CLOUD_FILE_NOT_UNDER_SYNC_ROOT
    }
}

/// REGISTER: records `message`'s registration, persisted before it takes effect.
///
/// `may_write` is the caller's rights check on the root directory (run inside the gate,
/// so a root cannot change hands between the check and the write).
///
/// Refusals: a path that is not a valid root or a policy the driver does not know
/// (STATUS_INVALID_PARAMETER, as cfapi's ERROR_INVALID_PARAMETER; the record's own rules
/// were checked when it was decoded); the same root registered without UPDATE
/// (STATUS_OBJECT_NAME_COLLISION, ERROR_ALREADY_EXISTS); UPDATE of a root not registered
/// (STATUS_CLOUD_FILE_NOT_A_CLOUD_SYNC_ROOT); a root inside or enclosing another
/// (STATUS_CLOUD_FILE_INVALID_REQUEST: cfapi documents no status for it and a nested
/// root is a request the platform never serves); a full table
/// (STATUS_CLOUD_FILE_INSUFFICIENT_RESOURCES).
pub(crate) fn register(
    message: &RegisterSyncRoot<'_>,
    may_write: impl FnOnce(&[u16]) -> Result<(), NTSTATUS>,
) -> Result<(), NTSTATUS> {
    let mut registration = message.registration;
    registration.flags = message.flags.root_flags();
    let update = message.flags.contains(RegisterFlags::UPDATE);
    let _gate = GATE.enter();
    // An UPDATE keeps the root's population state (issue 15): a root populated since it
    // was registered stays so, as a provider re-registers each time it starts and its
    // root must not be asked for again; only an UPDATE of a placeholder
    // (ENABLE_ON_DEMAND_POPULATION) makes it populate again.
    let populated = RootFlags::DISABLE_ON_DEMAND_POPULATION_ON_ROOT;
    let mut root = Root::new(&registration)?;
    if update
        && !registration.flags.contains(populated)
        && TABLE.with(|table| {
            exact(table, root.path())
                // SAFETY: registered roots are alive while in the table.
                .is_some_and(|r| unsafe { r.as_ref() }.policies.flags.contains(populated))
        })
    {
        registration.flags = registration.flags.union(populated);
        root = Root::new(&registration)?;
    }
    let existing = TABLE.with(|table| {
        let path = root.path();
        match (exact(table, path), overlapping(table, path)) {
            (Some(r), _) if update => Ok(Some(r)),
            (Some(_), _) => Err(STATUS_OBJECT_NAME_COLLISION),
            (None, Some(_)) => Err(STATUS_CLOUD_FILE_INVALID_REQUEST),
            (None, None) if update => Err(status::STATUS_CLOUD_FILE_NOT_A_CLOUD_SYNC_ROOT),
            (None, None) if table.0.iter().all(Option::is_some) => {
                Err(STATUS_CLOUD_FILE_INSUFFICIENT_RESOURCES)
            }
            (None, None) => Ok(None),
        }
    })?;
    may_write(root.path())?;
    Key::open()?.store(root.path(), root.record())?;
    publish(root, existing);
    Ok(())
}

/// Puts `root` in the table, in place of `existing` if given (an UPDATE, whose connected
/// provider takes the new policies); called inside the gate, after the checks.
fn publish(root: PoolBox<Root>, existing: Option<NonNull<Root>>) {
    let policies = root.policies;
    let raw = PoolBox::into_raw(root);
    let replaced = TABLE.with(|table| {
        let slot = match existing {
            Some(old) => table.0.iter_mut().find(|s| **s == Some(old)),
            None => table.0.iter_mut().find(|s| s.is_none()),
        };
        // The gate keeps every other writer out, so the slot checked is still there.
        slot.map(|slot| slot.replace(raw))
    });
    match replaced {
        Some(old) => {
            if let Some(old) = old {
                // SAFETY: taken out of the table; nobody else frees it.
                drop(unsafe { PoolBox::from_raw(old, TAG_ROOT) });
            }
            // SAFETY: `raw` is published and alive (only the gate holder removes it).
            let root = unsafe { raw.as_ref() };
            providers::refresh(root.path(), &policies, copy_record(root));
        }
        // Unreachable under the gate; never leak.
        // SAFETY: not published.
        None => drop(unsafe { PoolBox::from_raw(raw, TAG_ROOT) }),
    }
}

/// A provider's connect to `context`'s root: the registered root's policies, or — to keep
/// connecting without registering working — the root registered first from the
/// context. `may_write` as for [`register`].
pub(crate) fn for_connect(
    context: &ConnectionContext<'_>,
    may_write: impl FnOnce(&[u16]) -> Result<(), NTSTATUS>,
) -> Result<Policies, NTSTATUS> {
    let registration = Registration {
        provider_name: context.provider_name,
        provider_version: context.provider_version,
        provider_id: context.provider_id,
        sync_root: context.sync_root,
        sync_root_identity: &[],
        root_file_identity: &[],
        hydration: context.hydration,
        modifiers: context.modifiers,
        population: context.population,
        in_sync: context.in_sync,
        hard_links: context.hard_links,
        management: context.management,
        flags: RootFlags::NONE,
    };
    let root = Root::new(&registration)?;
    let _gate = GATE.enter();
    let found = TABLE.with(|table| {
        let path = root.path();
        match (exact(table, path), overlapping(table, path)) {
            // SAFETY: alive while in the table (the lock is held).
            (Some(r), _) => Ok(Some(unsafe { r.as_ref() }.policies)),
            (None, Some(_)) => Err(STATUS_CLOUD_FILE_INVALID_REQUEST),
            (None, None) if table.0.iter().all(Option::is_some) => {
                Err(STATUS_CLOUD_FILE_INSUFFICIENT_RESOURCES)
            }
            (None, None) => Ok(None),
        }
    })?;
    may_write(root.path())?;
    if let Some(policies) = found {
        return Ok(policies);
    }
    let policies = root.policies;
    Key::open()?.store(root.path(), root.record())?;
    publish(root, None);
    Ok(policies)
}

/// A copy of `root`'s record in pool; `None` when pool is exhausted.
fn copy_record(root: &Root) -> Option<(PoolBuf, usize)> {
    let record = root.record();
    let mut copy = PoolBuf::zeroed(record.len().max(1))?;
    crate::nt::file::copy(copy.as_mut_slice().get_mut(..record.len())?, record);
    Some((copy, record.len()))
}

/// A copy of the registration record of the root at exactly `path`, for its provider.
pub(crate) fn record_of(path: &[u16]) -> Option<(PoolBuf, usize)> {
    TABLE.with(|table| {
        // SAFETY: alive while in the table (the lock is held).
        exact(table, path).and_then(|r| copy_record(unsafe { r.as_ref() }))
    })
}

/// Whether the registered root at exactly `path` is populated: its record carries
/// DISABLE_ON_DEMAND_POPULATION_ON_ROOT (registered so, or marked since by
/// [`set_root_populated`]). `None` when `path` is no registered root.
pub(crate) fn root_populated(path: &[u16]) -> Option<bool> {
    TABLE.with(|table| {
        exact(table, path).map(|r| {
            // SAFETY: alive while in the table (the lock is held).
            unsafe { r.as_ref() }
                .policies
                .flags
                .contains(RootFlags::DISABLE_ON_DEMAND_POPULATION_ON_ROOT)
        })
    })
}

/// Records whether the registered root at exactly `path` is populated (issue 15): its
/// record's DISABLE_ON_DEMAND_POPULATION_ON_ROOT is set or cleared, stored and
/// published as a REGISTER with UPDATE is, so the root's state survives reload and
/// reboot like the rest of its registration. The root's directory has no reparse data
/// of its own (see the module comment), so this is where its population state lives.
///
/// Called with a provider reference held (a provider's UPDATE or its last population
/// batch), which UNREGISTER waits to drain while it holds the gate: so the gate is waited
/// for a bounded time, and a registration busy that long refuses with
/// STATUS_CLOUD_FILE_IN_USE (nothing changed).
pub(crate) fn set_root_populated(path: &[u16], populated: bool) -> Result<(), NTSTATUS> {
    const GATE_WAIT: i64 = 10_000_000;
    let _gate = GATE
        .enter_within(GATE_WAIT)
        .ok_or(windows_sys::Win32::Foundation::STATUS_CLOUD_FILE_IN_USE)?;
    let (existing, (record, len)) = TABLE
        .with(|table| {
            let found = exact(table, path)?;
            // SAFETY: alive while in the table (the lock is held).
            Some((found, copy_record(unsafe { found.as_ref() })?))
        })
        .ok_or(status::STATUS_CLOUD_FILE_NOT_A_CLOUD_SYNC_ROOT)?;
    let mut registration = Registration::decode(record.as_slice().get(..len).unwrap_or(&[]))
        .map_err(|_| STATUS_CLOUD_FILE_INVALID_REQUEST)?;
    let flag = RootFlags::DISABLE_ON_DEMAND_POPULATION_ON_ROOT;
    if registration.flags.contains(flag) == populated {
        return Ok(());
    }
    registration.flags = if populated {
        registration.flags.union(flag)
    } else {
        RootFlags::from_bits(registration.flags.bits() & !flag.bits()).unwrap_or(RootFlags::NONE)
    };
    let root = Root::new(&registration)?;
    Key::open()?.store(root.path(), root.record())?;
    publish(root, Some(existing));
    Ok(())
}

/// UNREGISTER: the root at exactly `path` stops being one. Its value is deleted from the
/// store first; a provider connected to it is then cut off (its requests fail with
/// STATUS_CLOUD_FILE_PROVIDER_TERMINATED, its later messages are refused the same way)
/// though its port stays open until it closes it. Placeholders are left as they are.
pub(crate) fn unregister(
    path: &[u16],
    may_write: impl FnOnce(&[u16]) -> Result<(), NTSTATUS>,
) -> Result<(), NTSTATUS> {
    let _gate = GATE.enter();
    let Some(found) = TABLE.with(|table| exact(table, path)) else {
        return Err(status::STATUS_CLOUD_FILE_NOT_A_CLOUD_SYNC_ROOT);
    };
    // SAFETY: alive while in the table; only the gate holder (this thread) removes it.
    let root_path = unsafe { found.as_ref() }.path();
    may_write(root_path)?;
    Key::open()?.remove(root_path)?;
    providers::detach(root_path);
    TABLE.with(|table| {
        if let Some(slot) = table.0.iter_mut().find(|s| **s == Some(found)) {
            *slot = None;
        }
    });
    // SAFETY: taken out of the table; lookups copy what they need under the lock.
    drop(unsafe { PoolBox::from_raw(found, TAG_ROOT) });
    Ok(())
}

/// GET_SYNC_ROOT_INFO: the registration of the root `path` is or lies under, with whether
/// a provider serves it, as a [`SyncRootInfo`] payload.
pub(crate) fn info(path: &[u16]) -> Result<(PoolBuf, usize), NTSTATUS> {
    // Copied in two steps: the length under the lock, then the bytes into a buffer
    // allocated outside it (no allocation at DISPATCH_LEVEL of a size a caller chose).
    let len = TABLE.with(|table| {
        // SAFETY: alive while in the table (the lock is held).
        containing(table, path).map(|r| unsafe { r.as_ref() }.record_len)
    });
    let len = len.ok_or(STATUS_CLOUD_FILE_NOT_UNDER_SYNC_ROOT)?;
    let mut out =
        PoolBuf::zeroed(SyncRootInfo::FIXED + len).ok_or(STATUS_INSUFFICIENT_RESOURCES)?;
    let mut root_path = [0u16; MAX_PATH];
    let copied = TABLE.with(|table| {
        let r = containing(table, path)?;
        // SAFETY: alive while in the table (the lock is held).
        let root = unsafe { r.as_ref() };
        let record = root.record();
        let dst = out.as_mut_slice().get_mut(SyncRootInfo::FIXED..)?;
        if record.len() != dst.len() {
            return None;
        }
        dst.copy_from_slice(record);
        root_path.get_mut(..root.len)?.copy_from_slice(root.path());
        Some(root.len)
    });
    // Changed between the two steps (an UPDATE or unregister): answered as it is now.
    let root_len = copied.ok_or(STATUS_CLOUD_FILE_NOT_UNDER_SYNC_ROOT)?;
    let pid = providers::pid_of_root(root_path.get(..root_len).unwrap_or(&[]));
    let flags = if pid.is_some() {
        ROOT_INFO_CONNECTED
    } else {
        0
    };
    let head = out.as_mut_slice();
    if let Some(dst) = head.get_mut(0..4) {
        dst.copy_from_slice(&flags.to_le_bytes());
    }
    if let Some(dst) = head.get_mut(4..8) {
        dst.copy_from_slice(&(pid.unwrap_or(0) as u32).to_le_bytes());
    }
    let total = SyncRootInfo::FIXED + len;
    Ok((out, total))
}

/// LIST_SYNC_ROOTS: the registered roots' paths, as a [`SyncRootList`] payload.
pub(crate) fn list() -> Result<(PoolBuf, usize), NTSTATUS> {
    let capacity = 8 + MAX_ROOTS * (2 + 2 * MAX_PATH);
    let mut out = PoolBuf::zeroed(capacity).ok_or(STATUS_INSUFFICIENT_RESOURCES)?;
    let len = TABLE.with(|table| {
        let paths = table.0.iter().flatten().map(|r| {
            // SAFETY: alive while in the table (the lock is held).
            unsafe { r.as_ref() }.path()
        });
        SyncRootList::encode(paths, out.as_mut_slice())
    });
    let len = len.ok_or(STATUS_INSUFFICIENT_RESOURCES)?;
    Ok((out, len))
}

/// An open handle on the store's key, closed on drop.
struct Key(HANDLE);

impl Key {
    /// Opens (creating it the first time) `<service key>\Parameters\SyncRoots`.
    fn open() -> Result<Self, NTSTATUS> {
        let (units, len) = KEY.with(|k| *k);
        if len == 0 {
            return Err(STATUS_INVALID_PARAMETER);
        }
        let path = units.get(..len).unwrap_or(&[]);
        let name = unicode(path)?;
        let attributes = OBJECT_ATTRIBUTES {
            Length: core::mem::size_of::<OBJECT_ATTRIBUTES>() as u32,
            RootDirectory: core::ptr::null_mut(),
            ObjectName: &name,
            Attributes: OBJ_KERNEL_HANDLE | OBJ_CASE_INSENSITIVE,
            SecurityDescriptor: core::ptr::null(),
            SecurityQualityOfService: core::ptr::null(),
        };
        let mut handle: HANDLE = core::ptr::null_mut();
        let mut disposition = 0u32;
        // SAFETY: valid pointers for the call; PASSIVE_LEVEL (every caller's); a kernel
        // handle, closed by Drop.
        let status = unsafe {
            ntos::ZwCreateKey(&mut handle, KEY_READ_WRITE, &attributes, &mut disposition)
        };
        if nt_success(status) {
            Ok(Self(handle))
        } else {
            Err(status)
        }
    }

    /// Writes the record of the root at `path` and flushes the key.
    fn store(&self, path: &[u16], record: &[u8]) -> Result<(), NTSTATUS> {
        let name = unicode(path)?;
        let size = u32::try_from(record.len()).map_err(|_| STATUS_INVALID_PARAMETER)?;
        // SAFETY: an open key; `name` and `record` outlive the call.
        let status =
            unsafe { ntos::ZwSetValueKey(self.0, &name, REG_BINARY, record.as_ptr().cast(), size) };
        if !nt_success(status) {
            return Err(status);
        }
        // SAFETY: an open key.
        let status = unsafe { ntos::ZwFlushKey(self.0) };
        if nt_success(status) {
            Ok(())
        } else {
            Err(status)
        }
    }

    /// Deletes the record of the root at `path` and flushes the key. A record already
    /// gone is not an error.
    fn remove(&self, path: &[u16]) -> Result<(), NTSTATUS> {
        let name = unicode(path)?;
        // SAFETY: an open key; `name` outlives the call.
        let status = unsafe { ntos::ZwDeleteValueKey(self.0, &name) };
        if !nt_success(status)
            && status != windows_sys::Win32::Foundation::STATUS_OBJECT_NAME_NOT_FOUND
        {
            return Err(status);
        }
        // SAFETY: an open key.
        let status = unsafe { ntos::ZwFlushKey(self.0) };
        if nt_success(status) {
            Ok(())
        } else {
            Err(status)
        }
    }

    /// The `index`th value as KEY_VALUE_PARTIAL_INFORMATION (buffer, length), `None`
    /// past the last.
    fn value(&self, index: u32) -> Result<Option<(PoolBuf, usize)>, NTSTATUS> {
        let mut needed = 0u32;
        // SAFETY: an open key; a zero-length query only reports the length.
        let status = unsafe {
            ntos::ZwEnumerateValueKey(
                self.0,
                index,
                KEY_VALUE_PARTIAL_INFORMATION,
                core::ptr::null_mut(),
                0,
                &mut needed,
            )
        };
        if status == STATUS_NO_MORE_ENTRIES {
            return Ok(None);
        }
        if status != STATUS_BUFFER_TOO_SMALL && status != STATUS_BUFFER_OVERFLOW {
            return Err(status);
        }
        let len = needed as usize;
        let mut buffer =
            PoolBuf::zeroed(len.max(PARTIAL_FIXED)).ok_or(STATUS_INSUFFICIENT_RESOURCES)?;
        let mut returned = 0u32;
        // SAFETY: an open key; `buffer` holds `len` writable bytes.
        let status = unsafe {
            ntos::ZwEnumerateValueKey(
                self.0,
                index,
                KEY_VALUE_PARTIAL_INFORMATION,
                buffer.as_mut_slice().as_mut_ptr().cast(),
                needed,
                &mut returned,
            )
        };
        if !nt_success(status) {
            return Err(status);
        }
        Ok(Some((buffer, (returned as usize).min(len))))
    }
}

impl Drop for Key {
    fn drop(&mut self) {
        // SAFETY: the kernel handle `open` returned, closed once.
        unsafe { ntos::ZwClose(self.0) };
    }
}

/// A UNICODE_STRING over `units` (which must outlive its use).
fn unicode(units: &[u16]) -> Result<UNICODE_STRING, NTSTATUS> {
    let bytes = u16::try_from(units.len() * 2).map_err(|_| STATUS_INVALID_PARAMETER)?;
    Ok(UNICODE_STRING {
        Length: bytes,
        MaximumLength: bytes,
        // Only read by the calls.
        Buffer: units.as_ptr().cast_mut(),
    })
}
