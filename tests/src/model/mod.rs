//! The machine: one kernel state behind one lock, and the verifier's record of what the
//! driver did wrong.
//!
//! Owns: the global kernel state every exported API works on, handle allocation, and the
//! process-wide machine lock (the driver keeps a global, so one machine runs at a time).
//! Does not own: any cloudflt behaviour. With the driver unloaded the model is plain
//! Windows.
//!
//! Callbacks into the driver are always made with the kernel lock released, since the
//! driver calls back into the model from inside them.

pub mod cache;
pub mod cbdq;
pub mod contexts;
pub mod fast;
pub mod files;
pub mod fltio;
pub mod fltlib;
pub mod fltmgr;
pub mod io;
pub mod irql;
pub mod names;
pub mod ntfs;
pub mod pool;
pub mod port;
pub mod process;
pub mod registry;
pub mod seh;
pub mod symlink;
pub mod sync;
pub mod teardown;
pub mod timer;
pub mod vm;
pub mod volume;
pub mod waits;
pub mod workitem;

use fast::HashMap;
use std::fmt;
use std::sync::{Mutex, MutexGuard, PoisonError};

pub use port::{Caller, ClientId};

use windows_sys::Wdk::Foundation::DRIVER_OBJECT;
use windows_sys::Win32::Foundation::{NTSTATUS, UNICODE_STRING};

/// A driver's DriverEntry. Handed in by the caller, so the model calls no driver code (it
/// takes only the parameter block's definition from the driver crate, `nt::layout`).
pub type DriverEntry = unsafe fn(*mut DRIVER_OBJECT, *const UNICODE_STRING) -> NTSTATUS;
pub use volume::VolumeConfig;

/// A kernel rule the driver broke, as Driver Verifier would report it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The API or phase where it was detected.
    pub api: &'static str,
    /// What rule was broken.
    pub message: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.api, self.message)
    }
}

/// Handles the model gives out start here, far from any real kernel handle or pointer,
/// so one that leaks into a real call fails loudly.
const HANDLE_BASE: isize = 0x7e57_0000_0000;

/// The whole kernel state.
pub(crate) struct Kernel {
    pub(crate) pool: pool::Pool,
    pub(crate) filters: HashMap<isize, fltmgr::Filter>,
    pub(crate) contexts: HashMap<usize, fltmgr::Context>,
    /// Contexts whose last reference is gone but whose cleanup callback and free have
    /// not finished (`fltmgr::finish_release`): FltUnregisterFilter waits for them too.
    pub(crate) contexts_freeing: usize,
    pub(crate) security_descriptors: HashMap<usize, u32>,
    pub(crate) server_ports: HashMap<isize, port::ServerPort>,
    pub(crate) client_ports: HashMap<isize, port::ClientPort>,
    pub(crate) user_handles: HashMap<isize, fltlib::UserHandle>,
    pub(crate) volumes: Vec<volume::Volume>,
    pub(crate) processes: process::Processes,
    pub(crate) io: files::Io,
    pub(crate) cbdq: cbdq::Queues,
    pub(crate) names: names::Names,
    pub(crate) violations: Vec<Violation>,
    pub(crate) sync: sync::SyncState,
    pub(crate) work: workitem::WorkItems,
    pub(crate) timers: timer::Timers,
    /// User-mode memory: VirtualAlloc's regions and MmSecureVirtualMemory's entries.
    pub(crate) vm: vm::Vm,
    /// MDLs IoAllocateMdl gave out, locked or not.
    pub(crate) mdls: seh::Mdls,
    /// References FltGetVolumeFromName / FltGetVolumeInstanceFromName gave out and
    /// FltObjectDereference has not dropped yet: object → (filter, count).
    pub(crate) object_refs: HashMap<isize, (isize, usize)>,
    /// Symbolic link objects of the object namespace, and their open handles.
    pub(crate) symlinks: symlink::Links,
    pub(crate) registry: registry::Registry,
    /// How long an instance teardown waits for what Windows would wait for forever
    /// before it reports the hang (teardown.rs).
    pub(crate) teardown_limit: std::time::Duration,
    /// Injected failures: the next call of the API returns the status.
    inject: HashMap<&'static str, NTSTATUS>,
    next_handle: isize,
}

impl Kernel {
    fn new() -> Self {
        Self {
            pool: pool::Pool::default(),
            filters: HashMap::default(),
            contexts: HashMap::default(),
            contexts_freeing: 0,
            security_descriptors: HashMap::default(),
            server_ports: HashMap::default(),
            client_ports: HashMap::default(),
            user_handles: HashMap::default(),
            volumes: Vec::new(),
            processes: process::Processes::default(),
            io: files::Io::default(),
            cbdq: cbdq::Queues::default(),
            names: names::Names::default(),
            violations: Vec::new(),
            sync: sync::SyncState::default(),
            work: workitem::WorkItems::default(),
            timers: timer::Timers::default(),
            vm: vm::Vm::default(),
            mdls: seh::Mdls::default(),
            object_refs: HashMap::default(),
            symlinks: symlink::Links::default(),
            registry: registry::Registry::default(),
            teardown_limit: teardown::DEFAULT_WAIT_LIMIT,
            inject: HashMap::default(),
            next_handle: HANDLE_BASE,
        }
    }

    pub(crate) fn handle(&mut self) -> isize {
        self.next_handle += 0x10;
        self.next_handle
    }

    /// The failure injected for the next call of `api`, consumed.
    pub(crate) fn injected(&mut self, api: &'static str) -> Option<NTSTATUS> {
        self.inject.remove(api)
    }

    pub(crate) fn violation(&mut self, api: &'static str, message: impl Into<String>) {
        let v = Violation {
            api,
            message: message.into(),
        };
        eprintln!("VERIFIER: {v}");
        self.violations.push(v);
    }
}

/// The model's system time (100 ns since 1601, UTC), as KeQuerySystemTimePrecise reports
/// it: the booted machine's one clock, which `Machine::advance_clock` moves too. Call it
/// with the kernel lock released.
pub fn now() -> i64 {
    with_kernel(|k| k.system_time())
}

impl Kernel {
    /// [`now`] for code that already holds the kernel lock.
    pub(crate) fn system_time(&self) -> i64 {
        i64::try_from(self.sync.clock.system_time()).unwrap_or(i64::MAX)
    }
}

static KERNEL: Mutex<Option<Kernel>> = Mutex::new(None);
static MACHINE: Mutex<()> = Mutex::new(());

/// Runs `f` on the kernel state. Panics if no [`Machine`] is booted: an API called with no
/// machine is a test bug, not a driver bug.
pub(crate) fn with_kernel<R>(f: impl FnOnce(&mut Kernel) -> R) -> R {
    let mut guard = KERNEL.lock().unwrap_or_else(PoisonError::into_inner);
    let kernel = guard
        .as_mut()
        .expect("kernel API called with no model Machine booted");
    f(kernel)
}

/// A booted model machine. Holding it serialises tests that use the kernel, since the
/// driver keeps process-wide state. Dropping it with violations nobody took fails the
/// test.
pub struct Machine {
    _exclusive: MutexGuard<'static, ()>,
}

impl Machine {
    /// Boots a machine with these volumes mounted.
    pub fn boot(volumes: &[VolumeConfig]) -> Self {
        let exclusive = MACHINE.lock().unwrap_or_else(PoisonError::into_inner);
        let mut kernel = Kernel::new();
        // Cancellable waits ask the I/O model whether their operation was cancelled.
        kernel.sync.set_cancel_probe(io::cancel_probe);
        for config in volumes {
            let handle = kernel.handle();
            let now = kernel.system_time();
            kernel
                .volumes
                .push(volume::Volume::new(handle, config.clone(), now));
        }
        *KERNEL.lock().unwrap_or_else(PoisonError::into_inner) = Some(kernel);
        Self {
            _exclusive: exclusive,
        }
    }

    /// Every violation recorded since the last call.
    pub fn take_violations(&mut self) -> Vec<Violation> {
        with_kernel(|k| std::mem::take(&mut k.violations))
    }

    /// Asserts that the driver broke no rule.
    pub fn assert_clean(&mut self) {
        let found = self.take_violations();
        assert!(found.is_empty(), "verifier violations:\n{}", list(&found));
    }

    /// Injects a failure: the next call of `api` (FltRegisterFilter,
    /// FltCreateCommunicationPort or FltStartFiltering) returns `status`.
    pub fn fail_next(&self, api: &'static str, status: NTSTATUS) {
        with_kernel(|k| {
            k.inject.insert(api, status);
        });
    }

    /// Injects a pool allocation failure: the `n`th allocation from now (1-based) fails.
    pub fn fail_allocation(&self, n: usize) {
        with_kernel(|k| k.pool.fail_nth(n));
    }

    /// Loads a driver as the I/O manager does: calls its DriverEntry once, at
    /// PASSIVE_LEVEL, with a driver object and registry path that outlive it.
    pub fn load_driver(&self, entry: DriverEntry) -> NTSTATUS {
        // SAFETY: DRIVER_OBJECT is plain data for which all-zero is a valid value; the I/O
        // manager's object outlives the driver, so it is leaked.
        let object: DRIVER_OBJECT = unsafe { std::mem::zeroed() };
        let object: &'static mut DRIVER_OBJECT = Box::leak(Box::new(object));
        let path: &'static [u16] =
            "\\Registry\\Machine\\System\\CurrentControlSet\\Services\\cloudflt"
                .encode_utf16()
                .collect::<Vec<_>>()
                .leak();
        let bytes = (path.len() * 2) as u16;
        let registry = UNICODE_STRING {
            Length: bytes,
            MaximumLength: bytes,
            Buffer: path.as_ptr().cast_mut(),
        };
        irql::check("DriverEntry", irql::PASSIVE_LEVEL);
        // SAFETY: as documented for DriverEntry; `registry` lives across the call.
        let status = unsafe { entry(object, &registry) };
        if status < 0 {
            // The I/O manager unloads an image whose DriverEntry failed without calling
            // any unload routine: whatever it left behind is leaked for good.
            with_kernel(|k| {
                let pool: Vec<String> = k
                    .pool
                    .outstanding()
                    .iter()
                    .map(|b| format!("{} ({} bytes)", pool::tag_name(b.tag), b.size))
                    .collect();
                if !pool.is_empty() {
                    k.violation(
                        "DriverEntry",
                        format!(
                            "failed with {status:#x} but left pool behind: {}",
                            pool.join(", ")
                        ),
                    );
                }
                if k.filters.values().any(|f| !f.is_unregistered()) {
                    k.violation(
                        "DriverEntry",
                        format!("failed with {status:#x} but left its filter registered"),
                    );
                }
                k.check_timers_at_unload("DriverEntry");
                let ports = k.server_ports.values().filter(|p| !p.closed).count();
                if ports > 0 {
                    k.violation(
                        "DriverEntry",
                        format!("failed with {status:#x} but left {ports} server port(s) open"),
                    );
                }
            });
        }
        status
    }

    /// Pool bytes outstanding (every tag, the driver's and FltMgr's on its behalf).
    pub fn pool_live(&self) -> usize {
        with_kernel(|k| k.pool.live())
    }

    /// The most pool bytes outstanding at once since [`Machine::reset_pool_peak`].
    pub fn pool_peak(&self) -> usize {
        with_kernel(|k| k.pool.peak())
    }

    /// Starts measuring [`Machine::pool_peak`] from what is outstanding now.
    pub fn reset_pool_peak(&self) {
        with_kernel(|k| k.pool.reset_peak());
    }

    /// Reparse points set on every volume since boot (each a journaled metadata update
    /// on real NTFS).
    pub fn reparse_writes(&self) -> u64 {
        with_kernel(|k| k.volumes.iter().map(|v| v.fs.reparse_writes()).sum())
    }

    /// Pool bytes outstanding under `tag`.
    pub fn pool_bytes(&self, tag: [u8; 4]) -> usize {
        with_kernel(|k| k.pool.bytes_with_tag(u32::from_le_bytes(tag)))
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        let kernel = KERNEL.lock().unwrap_or_else(PoisonError::into_inner).take();
        let found = kernel.map_or_else(Vec::new, |mut k| {
            // A thread still blocked in this machine's kernel finds it gone when it wakes
            // (model threads leave; a driver thread's wait reports the test bug).
            k.sync.waits.wake_all();
            std::mem::take(&mut k.violations)
        });
        if !found.is_empty() && !std::thread::panicking() {
            panic!("unchecked verifier violations:\n{}", list(&found));
        }
    }
}

fn list(violations: &[Violation]) -> String {
    violations.iter().map(|v| format!("  - {v}\n")).collect()
}
