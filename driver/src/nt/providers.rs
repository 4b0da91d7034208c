//! The connected providers: one per sync root, found by path or by process.
//!
//! ConnectNotify registers a provider's root here (roots may not overlap, and one root has
//! one provider); DisconnectNotify unregisters it. A thread that talks to a provider holds
//! a [`ProviderRef`], so DisconnectNotify can wait for the last one before it closes the
//! client port: FltSendMessage on a closed client port is a use-after-free.

use core::ptr::NonNull;
use core::sync::atomic::{AtomicUsize, Ordering};

use cloudflt_proto::InSyncPolicy;
use cloudflt_proto::connect::ConnectFlags;
use cloudflt_proto::msg::NotifySet;
use cloudflt_proto::port::MAX_CONNECTIONS;
use cloudflt_proto::registration::{HydrationModifiers, Registration};
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{PFLT_FILTER, PFLT_PORT};
use windows_sys::Wdk::System::SystemServices::{Executive, KeWaitForSingleObject, KernelMode};
use windows_sys::Win32::Foundation::{
    NTSTATUS, STATUS_CLOUD_FILE_ALREADY_CONNECTED, STATUS_CLOUD_FILE_INSUFFICIENT_RESOURCES,
};

use super::file::PoolBuf;
use super::status;
use super::sync::{Event, SpinLock};
use crate::engine::policy::Policy;
use crate::engine::syncroot::{self, MAX_PATH, RootError};

/// One connected provider.
pub(crate) struct Provider {
    pub(crate) filter: PFLT_FILTER,
    /// Closed only by [`unregister`], after every [`ProviderRef`] is gone.
    pub(crate) client_port: PFLT_PORT,
    /// The provider's process: its own I/O is never intercepted.
    pub(crate) pid: usize,
    root: [u16; MAX_PATH],
    root_len: usize,
    /// The root's hydration policy ([`Policy`] as its wire value), from its registration;
    /// an UPDATE of the registration replaces it ([`refresh`]).
    hydration: core::sync::atomic::AtomicU8,
    /// Which attribute and time changes take its placeholders out of sync (bits of
    /// [`InSyncPolicy`]), likewise.
    in_sync: core::sync::atomic::AtomicU32,
    /// The root's hydration policy modifiers (bits of [`HydrationModifiers`]), likewise.
    modifiers: core::sync::atomic::AtomicU32,
    /// What the provider asked of its connection (REQUIRE_PROCESS_INFO,
    /// REQUIRE_FULL_FILE_PATH, BLOCK_SELF_IMPLICIT_HYDRATION).
    pub(crate) connect_flags: ConnectFlags,
    /// The notifications it asked for at connect ([`crate::nt::notify`]).
    pub(crate) notifications: NotifySet,
    /// A copy of its root's registration record, for the identities every request
    /// quotes; replaced by an UPDATE of the registration ([`refresh`]). A leaf lock:
    /// nothing is taken under it.
    record: SpinLock<Record>,
    /// Provider request timeout, 100 ns units.
    pub(crate) timeout: i64,
    /// Set once DisconnectNotify has begun: no new request may be sent to it.
    gone: core::sync::atomic::AtomicBool,
    /// References: the table's own, plus one per [`ProviderRef`].
    refs: AtomicUsize,
    /// Signalled when `refs` drops to zero.
    drained: Event,
    /// Set (under the table lock) when its root was unregistered under it ([`detach`]).
    detached: core::sync::atomic::AtomicBool,
    /// Signalled when [`detach`] has finished with it: DisconnectNotify waits for that
    /// before it frees the object.
    retired: Event,
}

impl Provider {
    /// A provider not yet registered; `root` must be at most [`MAX_PATH`] units (longer
    /// roots are refused by [`register`]).
    pub(crate) fn new(
        filter: PFLT_FILTER,
        client_port: PFLT_PORT,
        pid: usize,
        context: &cloudflt_proto::ConnectionContext<'_>,
        policies: &super::roots::Policies,
        record: Option<(PoolBuf, usize)>,
    ) -> Self {
        let root = context.sync_root.units();
        let connect_flags = context.connect_flags;
        let timeout_ms = context.effective_timeout_ms();
        let mut stored = [0u16; MAX_PATH];
        let mut len = 0;
        for unit in root {
            match stored.get_mut(len) {
                Some(slot) => *slot = unit,
                // One past the capacity marks the root as too long.
                None => {
                    len = MAX_PATH + 1;
                    break;
                }
            }
            len += 1;
        }
        Self {
            filter,
            client_port,
            pid,
            root: stored,
            root_len: len,
            hydration: core::sync::atomic::AtomicU8::new(policies.hydration as u8),
            in_sync: core::sync::atomic::AtomicU32::new(policies.in_sync.bits()),
            modifiers: core::sync::atomic::AtomicU32::new(u32::from(policies.modifiers.bits())),
            connect_flags,
            notifications: context.notifications,
            record: SpinLock::new(Record(record)),
            timeout: i64::from(timeout_ms).saturating_mul(10_000),
            gone: core::sync::atomic::AtomicBool::new(false),
            refs: AtomicUsize::new(1),
            drained: Event::uninit(),
            detached: core::sync::atomic::AtomicBool::new(false),
            retired: Event::uninit(),
        }
    }

    /// The root's hydration policy now.
    pub(crate) fn hydration(&self) -> Policy {
        Policy::from_wire(self.hydration.load(Ordering::Acquire)).unwrap_or(Policy::Progressive)
    }

    /// The root's in-sync policy now.
    pub(crate) fn in_sync(&self) -> InSyncPolicy {
        InSyncPolicy::from_bits(self.in_sync.load(Ordering::Acquire)).unwrap_or_default()
    }

    /// Runs `f` with the root's sync-root identity and root file identity as its
    /// registration has them now (empty when it has none or the copy is missing).
    pub(crate) fn with_identities<R>(&self, f: impl FnOnce(&[u8], &[u8]) -> R) -> R {
        self.record.with(|record| {
            let registration = record
                .0
                .as_ref()
                .and_then(|(buffer, len)| buffer.as_slice().get(..*len))
                .and_then(|bytes| Registration::decode(bytes).ok());
            match registration {
                Some(r) => f(r.sync_root_identity, r.root_file_identity),
                None => f(&[], &[]),
            }
        })
    }

    /// The root's hydration policy modifiers now.
    pub(crate) fn modifiers(&self) -> HydrationModifiers {
        u16::try_from(self.modifiers.load(Ordering::Acquire))
            .ok()
            .and_then(HydrationModifiers::from_bits)
            .unwrap_or(HydrationModifiers::NONE)
    }

    /// Whether DisconnectNotify has begun for it.
    pub(crate) fn is_gone(&self) -> bool {
        self.gone.load(Ordering::Acquire)
    }

    /// The sync root, in NT form.
    pub(crate) fn root(&self) -> &[u16] {
        self.root.get(..self.root_len).unwrap_or(&[])
    }
}

/// A registration record in pool and its length.
struct Record(Option<(PoolBuf, usize)>);

// SAFETY: a pool buffer, usable from any thread; reached only under its lock.
unsafe impl Send for Record {}

type Slots = [Option<NonNull<Provider>>; MAX_CONNECTIONS as usize];

/// The table. Slots hold pool objects owned by the table between [`register`] and
/// [`unregister`].
struct Table(Slots);

// SAFETY: the pointers are pool objects usable from any thread; the table is only reached
// under its lock.
unsafe impl Send for Table {}

static TABLE: SpinLock<Table> = SpinLock::new(Table([None; MAX_CONNECTIONS as usize]));

/// A counted reference to a registered provider: while it lives, the client port stays
/// open and the provider object allocated.
pub(crate) struct ProviderRef(NonNull<Provider>);

impl ProviderRef {
    /// FltSendMessage without a reply, waiting at most `within` (100 ns units) for the
    /// provider to take `message`. PASSIVE_LEVEL.
    pub(crate) fn send_within(&self, message: &[u8], within: i64) -> NTSTATUS {
        let timeout = -within.max(1);
        let Ok(length) = u32::try_from(message.len()) else {
            return windows_sys::Win32::Foundation::STATUS_CLOUD_FILE_INVALID_REQUEST;
        };
        // SAFETY: the reference keeps the client port open; the buffer outlives the call;
        // PASSIVE_LEVEL; a negative (relative) timeout.
        unsafe {
            windows_sys::Wdk::Storage::FileSystem::Minifilters::FltSendMessage(
                self.filter,
                &self.client_port,
                message.as_ptr().cast(),
                length,
                core::ptr::null_mut(),
                core::ptr::null_mut(),
                &timeout,
            )
        }
    }

    /// Takes a reference; called with the table lock held, so the provider is registered.
    fn take(ptr: NonNull<Provider>) -> Self {
        // SAFETY: a registered provider is alive while the table holds it.
        unsafe { ptr.as_ref() }.refs.fetch_add(1, Ordering::AcqRel);
        Self(ptr)
    }

    /// The provider's identity as an engine owner key.
    pub(crate) fn key(&self) -> usize {
        self.0.as_ptr() as usize
    }
}

impl core::ops::Deref for ProviderRef {
    type Target = Provider;
    fn deref(&self) -> &Provider {
        // SAFETY: this reference keeps the provider allocated.
        unsafe { self.0.as_ref() }
    }
}

impl Drop for ProviderRef {
    fn drop(&mut self) {
        let provider = &**self;
        if provider.refs.fetch_sub(1, Ordering::AcqRel) == 1 {
            provider.drained.set();
        }
    }
}

/// Why a root was refused, as the status the provider's connect fails with.
fn refusal(error: RootError) -> NTSTATUS {
    match error {
        RootError::AlreadyConnected | RootError::Overlaps => STATUS_CLOUD_FILE_ALREADY_CONNECTED,
        RootError::InvalidPath => status::STATUS_CLOUD_FILE_NOT_A_CLOUD_SYNC_ROOT,
        RootError::Full => STATUS_CLOUD_FILE_INSUFFICIENT_RESOURCES,
    }
}

/// Registers `provider` (a pool object, initialised, `refs` = 1) unless its root is
/// invalid or overlaps a registered one: equal roots and nested roots are both refused
/// with STATUS_CLOUD_FILE_ALREADY_CONNECTED, since files in them would have two providers.
pub(crate) fn register(provider: NonNull<Provider>) -> Result<(), NTSTATUS> {
    // SAFETY: the caller's live pool object, not yet shared.
    let p = unsafe { provider.as_ref() };
    p.drained.init();
    p.retired.init();
    let root = p.root();
    if p.root_len > MAX_PATH || !syncroot::is_valid(root) {
        return Err(refusal(RootError::InvalidPath));
    }
    TABLE.with(|table| {
        for other in table.0.iter().flatten() {
            // SAFETY: registered providers are alive while in the table.
            let other_root = unsafe { other.as_ref() }.root();
            if syncroot::under(other_root, root).is_some()
                || syncroot::under(root, other_root).is_some()
            {
                return Err(refusal(RootError::Overlaps));
            }
        }
        let slot = table
            .0
            .iter_mut()
            .find(|s| s.is_none())
            .ok_or(refusal(RootError::Full))?;
        *slot = Some(provider);
        Ok(())
    })
}

/// Removes `provider` from the table, so no new reference can be taken, runs `gone`
/// (which fails its outstanding requests, so the threads waiting on them let go), and
/// waits for the references still out. The caller then closes its port and frees it.
///
/// Must be called at PASSIVE_LEVEL by the one owner of the table's reference.
pub(crate) fn unregister(provider: NonNull<Provider>, gone: impl FnOnce()) {
    let removed = TABLE.with(
        |table| match table.0.iter_mut().find(|s| **s == Some(provider)) {
            Some(slot) => {
                *slot = None;
                true
            }
            None => false,
        },
    );
    if removed {
        retire(provider, gone);
        return;
    }
    // SAFETY: the caller's object, freed only after this returns.
    let p = unsafe { provider.as_ref() };
    if p.detached.load(Ordering::Acquire) {
        // Its root was unregistered and `detach` took it out: wait until it is done.
        // SAFETY: an initialised event in a live object; PASSIVE_LEVEL; `detach` waits
        // only for the provider's own requests, which have its timeout.
        unsafe {
            KeWaitForSingleObject(
                p.retired.object(),
                Executive,
                KernelMode as i8,
                false,
                core::ptr::null(),
            )
        };
    }
}

/// The rest of [`unregister`] for a provider just taken out of the table: marks it gone,
/// runs `gone`, drops the table's reference and waits for the others.
fn retire(provider: NonNull<Provider>, gone: impl FnOnce()) {
    // SAFETY: still allocated (the caller frees it after this returns).
    unsafe { provider.as_ref() }
        .gone
        .store(true, Ordering::Release);
    gone();
    // The table's reference goes; whoever drops the last one signals `drained`.
    drop(ProviderRef(provider));
    // SAFETY: the provider stays allocated until this function's caller frees it.
    let p = unsafe { provider.as_ref() };
    if p.refs.load(Ordering::Acquire) != 0 {
        // SAFETY: an initialised event in a live object; PASSIVE_LEVEL; no timeout: each
        // holder only sends one message, which has the provider's timeout.
        unsafe {
            KeWaitForSingleObject(
                p.drained.object(),
                Executive,
                KernelMode as i8,
                false,
                core::ptr::null(),
            )
        };
    }
}

/// The provider whose root `path` (an NT path) lies under, with the path relative to it.
pub(crate) fn for_path(path: &[u16]) -> Option<ProviderRef> {
    TABLE.with(|table| {
        table.0.iter().flatten().find_map(|p| {
            // SAFETY: registered providers are alive while in the table.
            let provider = unsafe { p.as_ref() };
            syncroot::under(provider.root(), path).map(|_| ProviderRef::take(*p))
        })
    })
}

/// Whether process `pid` is a connected provider (whose I/O passes untouched).
pub(crate) fn is_provider(pid: usize) -> bool {
    TABLE.with(|table| {
        table.0.iter().flatten().any(|p| {
            // SAFETY: registered providers are alive while in the table.
            unsafe { p.as_ref() }.pid == pid
        })
    })
}

/// The registered provider object behind a connection cookie, referenced; `None` once it
/// is unregistered.
pub(crate) fn by_cookie(provider: NonNull<Provider>) -> Option<ProviderRef> {
    TABLE.with(|table| {
        table
            .0
            .iter()
            .flatten()
            .find(|p| **p == provider)
            .map(|p| ProviderRef::take(*p))
    })
}

/// An UPDATE of the registration of the root at `root`: its connected provider (if any)
/// applies the new policies from now on (opens already made keep theirs, as cfapi fixes
/// an open's policy at create).
pub(crate) fn refresh(
    root: &[u16],
    policies: &super::roots::Policies,
    mut record: Option<(PoolBuf, usize)>,
) {
    let old = TABLE.with(|table| {
        let mut old = None;
        for p in table.0.iter().flatten() {
            // SAFETY: registered providers are alive while in the table.
            let provider = unsafe { p.as_ref() };
            if syncroot::under(provider.root(), root).is_some_and(<[u16]>::is_empty) {
                provider
                    .hydration
                    .store(policies.hydration as u8, Ordering::Release);
                provider
                    .in_sync
                    .store(policies.in_sync.bits(), Ordering::Release);
                provider
                    .modifiers
                    .store(u32::from(policies.modifiers.bits()), Ordering::Release);
                if let Some(new) = record.take() {
                    old = provider.record.with(|r| r.0.replace(new));
                }
            }
        }
        old
    });
    // Freed with no lock held.
    drop(old);
    drop(record);
}

/// Whether `pid` is a provider that asked for BLOCK_SELF_IMPLICIT_HYDRATION.
pub(crate) fn blocks_self_hydration(pid: usize) -> bool {
    TABLE.with(|table| {
        table.0.iter().flatten().any(|p| {
            // SAFETY: registered providers are alive while in the table.
            let p = unsafe { p.as_ref() };
            p.pid == pid
                && p.connect_flags
                    .contains(ConnectFlags::BLOCK_SELF_IMPLICIT_HYDRATION)
        })
    })
}

/// The process of the provider connected to the root at `root`.
pub(crate) fn pid_of_root(root: &[u16]) -> Option<usize> {
    TABLE.with(|table| {
        table.0.iter().flatten().find_map(|p| {
            // SAFETY: registered providers are alive while in the table.
            let provider = unsafe { p.as_ref() };
            syncroot::under(provider.root(), root)
                .is_some_and(<[u16]>::is_empty)
                .then_some(provider.pid)
        })
    })
}

/// The root at `root` was unregistered: its provider, if one is connected, is cut off as
/// if it had disconnected (its outstanding requests fail, no new one reaches it, its
/// messages are refused), but its connection stays until it closes it, when
/// DisconnectNotify frees it. PASSIVE_LEVEL.
pub(crate) fn detach(root: &[u16]) {
    // Found and taken out under one hold of the lock: the provider cannot disconnect
    // (and its memory be reused) in between.
    let found = TABLE.with(|table| {
        let slot = table.0.iter_mut().find(|s| {
            s.is_some_and(|p| {
                // SAFETY: registered providers are alive while in the table.
                let provider = unsafe { p.as_ref() };
                syncroot::under(provider.root(), root).is_some_and(<[u16]>::is_empty)
            })
        })?;
        let taken = slot.take()?;
        // SAFETY: alive: DisconnectNotify cannot free it before it sees this flag.
        unsafe { taken.as_ref() }
            .detached
            .store(true, Ordering::Release);
        Some(taken)
    });
    if let Some(provider) = found {
        retire(provider, || {
            super::hydrate::provider_gone(provider.as_ptr() as usize);
            super::notify::provider_gone(provider.as_ptr() as usize);
            super::populate::provider_gone(provider.as_ptr() as usize);
        });
        // SAFETY: DisconnectNotify frees it only after this signal.
        unsafe { provider.as_ref() }.retired.set();
    }
}
