//! Filter Manager: registration, starting, instances, contexts and unregistration.
//!
//! Owns: the filter objects, the registration as FltMgr validated it, the instances
//! InstanceSetup accepted, and every context with its reference count. Checks what
//! FltMgr and Driver Verifier check: registration layout and version, legal callback
//! return values, context types and double releases, and at unregister the order rule
//! (server ports closed first) and context leaks. How an instance is torn down (for a
//! detach, and for each instance at unregister) is `teardown.rs`'s.

use std::ffi::c_void;

use windows_sys::Wdk::Foundation::{
    DRIVER_OBJECT, NonPagedPool, NonPagedPoolNx, POOL_TYPE, PagedPool,
};
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FLT_CONTEXT_END, FLT_CONTEXT_REGISTRATION, FLT_INSTANCE_CONTEXT, FLT_OPERATION_REGISTRATION,
    FLT_REGISTRATION, FLT_REGISTRATION_VERSION_0203, FLT_RELATED_OBJECTS,
    FLT_SET_CONTEXT_KEEP_IF_EXISTS, FLT_SET_CONTEXT_OPERATION, FLT_SET_CONTEXT_REPLACE_IF_EXISTS,
    FLT_STREAM_CONTEXT, FLT_STREAMHANDLE_CONTEXT, FLT_VOLUME_PROPERTIES,
    FLTFL_FILTER_UNLOAD_MANDATORY, FLTFL_INSTANCE_SETUP_AUTOMATIC_ATTACHMENT,
    FLTFL_INSTANCE_TEARDOWN_FILTER_UNLOAD, FLTFL_INSTANCE_TEARDOWN_MANDATORY_FILTER_UNLOAD,
    IRP_MJ_OPERATION_END, PFLT_CONTEXT, PFLT_CONTEXT_CLEANUP_CALLBACK, PFLT_FILTER,
    PFLT_FILTER_UNLOAD_CALLBACK, PFLT_INSTANCE, PFLT_INSTANCE_QUERY_TEARDOWN_CALLBACK,
    PFLT_INSTANCE_SETUP_CALLBACK, PFLT_INSTANCE_TEARDOWN_CALLBACK, PFLT_POST_OPERATION_CALLBACK,
    PFLT_PRE_OPERATION_CALLBACK, PFLT_VOLUME,
};
use windows_sys::Wdk::Storage::FileSystem::{FS_INFORMATION_CLASS, FileFsAttributeInformation};
use windows_sys::Win32::Foundation::{
    NTSTATUS, STATUS_BUFFER_OVERFLOW, STATUS_BUFFER_TOO_SMALL,
    STATUS_FLT_CONTEXT_ALLOCATION_NOT_FOUND, STATUS_FLT_CONTEXT_ALREADY_DEFINED,
    STATUS_FLT_DO_NOT_ATTACH, STATUS_FLT_INVALID_CONTEXT_REGISTRATION, STATUS_INFO_LENGTH_MISMATCH,
    STATUS_INSUFFICIENT_RESOURCES, STATUS_INVALID_PARAMETER, STATUS_NOT_IMPLEMENTED,
    STATUS_SUCCESS, UNICODE_STRING,
};
use windows_sys::Win32::System::IO::IO_STATUS_BLOCK;

use super::irql::{self, APC_LEVEL, DISPATCH_LEVEL, PASSIVE_LEVEL};
use super::pool::{Owner, tag_name};
use super::{Kernel, Machine, with_kernel};

/// The most operation entries FltMgr would accept before an END marker (there are
/// IRP_MJ_MAXIMUM_FUNCTION + 1 IRPs plus about 25 pseudo-operations).
const MAX_OPERATIONS: usize = 64;
/// Context types a registration may name.
const CONTEXT_TYPES: [u32; 3] = [
    FLT_INSTANCE_CONTEXT,
    FLT_STREAM_CONTEXT,
    FLT_STREAMHANDLE_CONTEXT,
];

/// One registered context type.
#[derive(Debug, Clone, Copy)]
pub struct ContextType {
    /// `FLT_*_CONTEXT`.
    pub context_type: u16,
    /// Fixed size the driver registered.
    pub size: usize,
    /// Pool tag FltMgr allocates it with.
    pub pool_tag: u32,
    cleanup: PFLT_CONTEXT_CLEANUP_CALLBACK,
}

/// One registered operation.
#[derive(Debug, Clone, Copy)]
pub struct Operation {
    /// IRP major function, or the low byte of a FltMgr pseudo-operation.
    pub major: u8,
    /// `FLTFL_OPERATION_REGISTRATION_*`.
    pub flags: u32,
    /// Whether a pre-operation callback is registered.
    pub has_pre: bool,
    /// Whether a post-operation callback is registered.
    pub has_post: bool,
    pub(crate) pre: PFLT_PRE_OPERATION_CALLBACK,
    pub(crate) post: PFLT_POST_OPERATION_CALLBACK,
}

/// What FltRegisterFilter accepted, for tests to inspect.
#[derive(Debug, Clone)]
pub struct RegistrationInfo {
    /// `FLT_REGISTRATION.Version`.
    pub version: u16,
    /// Context types in registration order.
    pub contexts: Vec<ContextType>,
    /// Operations in registration order.
    pub operations: Vec<Operation>,
    /// Whether FilterUnloadCallback is set.
    pub has_unload: bool,
}

pub(crate) struct Filter {
    pub(crate) info: RegistrationInfo,
    unload: PFLT_FILTER_UNLOAD_CALLBACK,
    instance_setup: PFLT_INSTANCE_SETUP_CALLBACK,
    pub(crate) query_teardown: PFLT_INSTANCE_QUERY_TEARDOWN_CALLBACK,
    pub(crate) teardown_start: PFLT_INSTANCE_TEARDOWN_CALLBACK,
    pub(crate) teardown_complete: PFLT_INSTANCE_TEARDOWN_CALLBACK,
    started: bool,
    unregistered: bool,
    /// The flags of the FilterUnloadCallback running now, if one is: FltUnregisterFilter
    /// called from it tears the instances down for that unload (teardown.rs).
    pub(crate) unloading: Option<u32>,
    pub(crate) instances: Vec<Instance>,
}

pub(crate) struct Instance {
    pub(crate) handle: PFLT_INSTANCE,
    pub(crate) volume: PFLT_VOLUME,
    pub(crate) context: Option<usize>,
    /// Its teardown has begun (teardown.rs): no new operation, no new rundown reference.
    pub(crate) tearing_down: bool,
}

pub(crate) struct Context {
    pub(crate) filter: PFLT_FILTER,
    pub(crate) context_type: u16,
    pub(crate) size: usize,
    pub(crate) refs: usize,
    cleanup: PFLT_CONTEXT_CLEANUP_CALLBACK,
}

impl Filter {
    pub(crate) fn is_unregistered(&self) -> bool {
        self.unregistered
    }
}

impl Kernel {
    /// Whether `filter` is registered and not yet unregistered; records a violation for a
    /// handle used after FltUnregisterFilter (on Windows, a freed filter object).
    pub(crate) fn live_filter(&mut self, api: &'static str, filter: PFLT_FILTER) -> bool {
        match self.filters.get(&filter) {
            Some(f) if !f.unregistered => true,
            Some(_) => {
                self.violation(
                    api,
                    format!("filter {filter:#x} used after FltUnregisterFilter"),
                );
                false
            }
            None => {
                self.violation(api, format!("{filter:#x} is not a filter handle"));
                false
            }
        }
    }

    /// Whether `instance` is attached and not being torn down: FltMgr grants operations
    /// its rundown protection (io.rs).
    pub(crate) fn instance_accepts_operations(&self, instance: PFLT_INSTANCE) -> bool {
        self.filters
            .values()
            .flat_map(|f| f.instances.iter())
            .any(|i| i.handle == instance && !i.tearing_down)
    }

    /// The configuration of the volume with this handle.
    pub(crate) fn volume_config(&self, volume: PFLT_VOLUME) -> Option<super::VolumeConfig> {
        self.volumes
            .iter()
            .find(|v| v.handle == volume)
            .map(|v| v.config.clone())
    }

    pub(crate) fn filter_of_instance(
        &self,
        instance: PFLT_INSTANCE,
    ) -> Option<(PFLT_FILTER, usize)> {
        self.filters.iter().find_map(|(h, f)| {
            f.instances
                .iter()
                .position(|i| i.handle == instance)
                .map(|p| (*h, p))
        })
    }

    /// Drops one reference; returns the cleanup to run (lock released) when it was the
    /// last.
    pub(crate) fn release(
        &mut self,
        api: &'static str,
        ptr: usize,
    ) -> Option<(PFLT_CONTEXT_CLEANUP_CALLBACK, u16)> {
        let Some(ctx) = self.contexts.get_mut(&ptr) else {
            self.violation(
                api,
                format!("{ptr:#x} is not a live context (released twice?)"),
            );
            return None;
        };
        ctx.refs -= 1;
        if ctx.refs > 0 {
            return None;
        }
        let ctx = self.contexts.remove(&ptr)?;
        // Still the filter's until finish_release has freed it.
        self.contexts_freeing += 1;
        Some((ctx.cleanup, ctx.context_type))
    }
}

/// Runs a context's cleanup callback (lock released), then frees its memory.
pub(crate) fn finish_release(ptr: usize, cleanup: (PFLT_CONTEXT_CLEANUP_CALLBACK, u16)) {
    if let Some(callback) = cleanup.0 {
        // SAFETY: the driver's cleanup callback for a context of this type, called once
        // as its last reference goes, as FltMgr does.
        unsafe { callback(ptr as PFLT_CONTEXT, cleanup.1) };
    }
    with_kernel(|k| {
        super::io::report_linked_entry_freed(k, "FltReleaseContext", ptr);
        match k.pool.free(ptr as *mut u8, None, Owner::FltMgr("context")) {
            // The context's memory is the driver's to fill: a timer or DPC in it must be
            // cancelled before its last reference goes.
            Ok(block) => k.check_freed_timers("FltReleaseContext", ptr, block.size),
            Err(message) => k.violation("FltReleaseContext", message),
        }
        k.contexts_freeing = k.contexts_freeing.saturating_sub(1);
    });
}

// ---------------------------------------------------------------------------------------
// Registration and lifetime
// ---------------------------------------------------------------------------------------

/// FltRegisterFilter.
///
/// # Safety
/// `registration` must be readable as the driver claims.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn FltRegisterFilter(
    driver: *const DRIVER_OBJECT,
    registration: *const FLT_REGISTRATION,
    ret_filter: *mut PFLT_FILTER,
) -> NTSTATUS {
    irql::check("FltRegisterFilter", PASSIVE_LEVEL);
    // SAFETY: the caller passes a registration it owns (a static in the driver).
    let Some(reg) = (unsafe { registration.as_ref() }) else {
        return STATUS_INVALID_PARAMETER;
    };
    if driver.is_null() || ret_filter.is_null() {
        return STATUS_INVALID_PARAMETER;
    }
    // FltMgr accepts registration versions 0x0200 to 0x0203, each with its own size:
    // 0x0201 added TransactionNotificationCallback, 0x0202
    // NormalizeNameComponentExCallback, 0x0203 SectionNotificationCallback.
    let pointer = std::mem::size_of::<usize>();
    let full = std::mem::size_of::<FLT_REGISTRATION>();
    let expected_size = match u32::from(reg.Version) {
        v @ 0x0200..=FLT_REGISTRATION_VERSION_0203 => {
            Some(full - (FLT_REGISTRATION_VERSION_0203 - v) as usize * pointer)
        }
        _ => None,
    };
    if expected_size != Some(usize::from(reg.Size)) {
        with_kernel(|k| {
            k.violation(
                "FltRegisterFilter",
                format!(
                    "registration version {:#x} with size {} is not one FltMgr knows (0x0200-0x0203 with their sizes)",
                    reg.Version, reg.Size
                ),
            )
        });
        return STATUS_INVALID_PARAMETER;
    }
    // SAFETY: the tables are terminated arrays in the driver's image.
    let contexts = match unsafe { read_contexts(reg.ContextRegistration) } {
        Ok(c) => c,
        Err(message) => {
            with_kernel(|k| k.violation("FltRegisterFilter", message));
            return STATUS_FLT_INVALID_CONTEXT_REGISTRATION;
        }
    };
    // SAFETY: as above.
    let operations = match unsafe { read_operations(reg.OperationRegistration) } {
        Ok(o) => o,
        Err(message) => {
            with_kernel(|k| k.violation("FltRegisterFilter", message));
            return STATUS_INVALID_PARAMETER;
        }
    };
    if let Some(status) = with_kernel(|k| k.injected("FltRegisterFilter")) {
        return status;
    }
    let info = RegistrationInfo {
        version: reg.Version,
        contexts,
        operations,
        has_unload: reg.FilterUnloadCallback.is_some(),
    };
    with_kernel(|k| {
        if k.filters.values().any(|f| !f.unregistered) {
            return STATUS_INVALID_PARAMETER;
        }
        let handle = k.handle();
        k.filters.insert(
            handle,
            Filter {
                info,
                unload: reg.FilterUnloadCallback,
                instance_setup: reg.InstanceSetupCallback,
                query_teardown: reg.InstanceQueryTeardownCallback,
                teardown_start: reg.InstanceTeardownStartCallback,
                teardown_complete: reg.InstanceTeardownCompleteCallback,
                started: false,
                unregistered: false,
                unloading: None,
                instances: Vec::new(),
            },
        );
        // SAFETY: checked non-null above; the driver passes a writable handle slot.
        unsafe { ret_filter.write(handle) };
        STATUS_SUCCESS
    })
}

/// # Safety
/// `table` is NULL or an array terminated by FLT_CONTEXT_END.
unsafe fn read_contexts(
    table: *const FLT_CONTEXT_REGISTRATION,
) -> Result<Vec<ContextType>, String> {
    let mut out = Vec::new();
    if table.is_null() {
        return Ok(out);
    }
    for i in 0..CONTEXT_TYPES.len() * 4 + 1 {
        // SAFETY: within the terminated array (we stop at the END entry).
        let entry = unsafe { table.add(i) };
        // SAFETY: as above; the entry is initialised static data of the driver.
        let entry = unsafe { &*entry };
        if u32::from(entry.ContextType) == FLT_CONTEXT_END {
            return Ok(out);
        }
        if !CONTEXT_TYPES.contains(&u32::from(entry.ContextType)) {
            return Err(format!(
                "context registration {i} has unknown type {:#x}",
                entry.ContextType
            ));
        }
        if entry.Size == 0 || entry.PoolTag == 0 {
            return Err(format!(
                "context registration {i} has size {} tag {:#x}",
                entry.Size, entry.PoolTag
            ));
        }
        out.push(ContextType {
            context_type: entry.ContextType,
            size: entry.Size,
            pool_tag: entry.PoolTag,
            cleanup: entry.ContextCleanupCallback,
        });
    }
    Err("context registration is not terminated by FLT_CONTEXT_END".into())
}

/// # Safety
/// `table` is NULL or an array terminated by IRP_MJ_OPERATION_END.
unsafe fn read_operations(
    table: *const FLT_OPERATION_REGISTRATION,
) -> Result<Vec<Operation>, String> {
    let mut out: Vec<Operation> = Vec::new();
    if table.is_null() {
        return Ok(out);
    }
    for i in 0..=MAX_OPERATIONS {
        // SAFETY: within the terminated array (we stop at the END entry).
        let entry = unsafe { table.add(i) };
        // SAFETY: as above; the entry is initialised static data of the driver.
        let entry = unsafe { &*entry };
        if entry.MajorFunction == IRP_MJ_OPERATION_END as u8 {
            return Ok(out);
        }
        let major = entry.MajorFunction;
        // IRP majors 0..=0x1b, then FltMgr's pseudo-operations (negative UCHAR values).
        if major > 0x1b && major < 0xe0 {
            return Err(format!(
                "operation {i} has invalid major function {major:#x}"
            ));
        }
        if out.iter().any(|o| o.major == major) {
            return Err(format!(
                "operation {i}: major function {major:#x} registered twice"
            ));
        }
        out.push(Operation {
            major,
            flags: entry.Flags,
            has_pre: entry.PreOperation.is_some(),
            has_post: entry.PostOperation.is_some(),
            pre: entry.PreOperation,
            post: entry.PostOperation,
        });
    }
    Err("operation registration is not terminated by IRP_MJ_OPERATION_END".into())
}

/// FltStartFiltering: attaches to every mounted volume through InstanceSetup.
#[unsafe(no_mangle)]
pub extern "system" fn FltStartFiltering(filter: PFLT_FILTER) -> NTSTATUS {
    irql::check("FltStartFiltering", PASSIVE_LEVEL);
    let plan = with_kernel(|k| {
        if let Some(status) = k.injected("FltStartFiltering") {
            return Err(status);
        }
        if !k.live_filter("FltStartFiltering", filter) {
            return Err(STATUS_INVALID_PARAMETER);
        }
        let volumes: Vec<_> = k
            .volumes
            .iter()
            .map(|v| (v.handle, v.config.device_type, v.config.filesystem))
            .collect();
        let Some(f) = k.filters.get_mut(&filter) else {
            return Err(STATUS_INVALID_PARAMETER);
        };
        if f.started {
            return Err(STATUS_INVALID_PARAMETER);
        }
        f.started = true;
        Ok((f.instance_setup, volumes))
    });
    let (setup, volumes) = match plan {
        Ok(plan) => plan,
        Err(status) => return status,
    };
    for (volume, device_type, filesystem) in volumes {
        attach(filter, setup, volume, device_type, filesystem);
    }
    STATUS_SUCCESS
}

fn attach(
    filter: PFLT_FILTER,
    setup: PFLT_INSTANCE_SETUP_CALLBACK,
    volume: PFLT_VOLUME,
    device_type: u32,
    filesystem: i32,
) {
    let instance = with_kernel(|k| {
        let handle = k.handle();
        if let Some(f) = k.filters.get_mut(&filter) {
            f.instances.push(Instance {
                handle,
                volume,
                context: None,
                tearing_down: false,
            });
        }
        handle
    });
    let status = match setup {
        None => STATUS_SUCCESS,
        Some(setup) => {
            let objects = related(filter, volume, instance);
            // SAFETY: the driver's InstanceSetup with related objects valid for the call.
            unsafe {
                setup(
                    &objects,
                    FLTFL_INSTANCE_SETUP_AUTOMATIC_ATTACHMENT,
                    device_type,
                    filesystem,
                )
            }
        }
    };
    if status == STATUS_SUCCESS {
        return;
    }
    if status != STATUS_FLT_DO_NOT_ATTACH && status >= 0 {
        with_kernel(|k| {
            k.violation(
                "InstanceSetup",
                format!("returned success code {status:#x} other than STATUS_SUCCESS"),
            )
        });
    }
    // Refused: FltMgr tears the half-made instance down, with any context it got.
    let context = with_kernel(|k| {
        let f = k.filters.get_mut(&filter)?;
        let pos = f.instances.iter().position(|i| i.handle == instance)?;
        let inst = f.instances.remove(pos);
        inst.context
            .and_then(|c| k.release("InstanceSetup", c).map(|r| (c, r)))
    });
    if let Some((ptr, cleanup)) = context {
        finish_release(ptr, cleanup);
    }
}

pub(crate) fn related(
    filter: PFLT_FILTER,
    volume: PFLT_VOLUME,
    instance: PFLT_INSTANCE,
) -> FLT_RELATED_OBJECTS {
    FLT_RELATED_OBJECTS {
        Size: std::mem::size_of::<FLT_RELATED_OBJECTS>() as u16,
        TransactionContext: 0,
        Filter: filter,
        Volume: volume,
        Instance: instance,
        FileObject: std::ptr::null(),
        Transaction: std::ptr::null(),
    }
}

/// FltUnregisterFilter: disconnects every client, tears down every instance (each as
/// `teardown.rs` does, for the unload's reason) and checks that nothing of the filter is
/// left.
#[unsafe(no_mangle)]
pub extern "system" fn FltUnregisterFilter(filter: PFLT_FILTER) {
    irql::check("FltUnregisterFilter", PASSIVE_LEVEL);
    let open_server_ports = with_kernel(|k| {
        if !k.live_filter("FltUnregisterFilter", filter) {
            return None;
        }
        Some(
            k.server_ports
                .values()
                .filter(|p| p.filter == filter && !p.closed)
                .count(),
        )
    });
    let Some(open_server_ports) = open_server_ports else {
        return;
    };
    if open_server_ports > 0 {
        // On Windows this call would wait forever for the port's reference to drop.
        with_kernel(|k| {
            k.violation(
                "FltUnregisterFilter",
                format!("{open_server_ports} server port(s) still open: unload hangs until FltCloseCommunicationPort"),
            )
        });
    }
    super::port::disconnect_all(filter);
    // FltMgr holds rundown protection on the filter across each MessageNotify and
    // DisconnectNotify: unregistering waits for the callbacks still running on other
    // threads — providers' messages, a killed provider's disconnect — (a minute at most in
    // the model, then it is reported as the hang it would be).
    let started = std::time::Instant::now();
    loop {
        let running: usize = with_kernel(|k| {
            k.server_ports
                .values()
                .filter(|p| p.filter == filter)
                .map(|p| p.calls_in_flight)
                .sum()
        });
        if running == 0 {
            break;
        }
        if started.elapsed() > std::time::Duration::from_secs(60) {
            with_kernel(|k| {
                k.violation(
                    "FltUnregisterFilter",
                    format!(
                        "{running} MessageNotify / DisconnectNotify call(s) never returned: \
                         unload hangs"
                    ),
                )
            });
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    // Each instance is torn down as a detach would be, for the unload's reason: its
    // teardown callbacks, the wait for the operations that hold it, its contexts
    // (teardown.rs). An instance a detach is tearing down already is waited for.
    let (instances, reason) = with_kernel(|k| {
        let Some(f) = k.filters.get(&filter) else {
            return (Vec::new(), 0);
        };
        // FLT_INSTANCE_TEARDOWN_FLAGS: a mandatory unload (FLTFL_FILTER_UNLOAD_MANDATORY)
        // says so; otherwise, and for a FltUnregisterFilter outside FilterUnload (a
        // DriverEntry failing after it registered), the filter is being unloaded.
        let reason = if f
            .unloading
            .is_some_and(|flags| flags & FLTFL_FILTER_UNLOAD_MANDATORY != 0)
        {
            FLTFL_INSTANCE_TEARDOWN_MANDATORY_FILTER_UNLOAD
        } else {
            FLTFL_INSTANCE_TEARDOWN_FILTER_UNLOAD
        };
        let instances: Vec<PFLT_INSTANCE> = f.instances.iter().map(|i| i.handle).collect();
        (instances, reason)
    });
    for instance in instances {
        if !super::teardown::teardown("FltUnregisterFilter", filter, instance, reason) {
            super::teardown::wait_removed(filter, instance);
        }
    }
    // FltMgr waits for the filter's queued work items and reports the unfreed ones.
    super::workitem::unregister(filter);
    // FltUnregisterFilter returns only when the references on the filter's objects are
    // gone (contexts hold one until they are freed, their cleanup callback run): a
    // callback finishing on another thread gets a moment to drop what it holds, a
    // context whose last reference another thread just dropped (a handle closed as the
    // unload began) is freed first; what is still held after that has leaked.
    let settle = std::time::Instant::now();
    while settle.elapsed() < std::time::Duration::from_secs(2)
        && with_kernel(|k| {
            k.contexts_freeing > 0 || k.contexts.values().any(|c| c.filter == filter)
        })
    {
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    with_kernel(|k| {
        let objects: Vec<String> = k
            .object_refs
            .iter()
            .filter(|(_, (f, n))| *f == filter && *n > 0)
            .map(|(o, (_, n))| format!("{o:#x} ({n} reference(s))"))
            .collect();
        if !objects.is_empty() {
            k.violation(
                "FltUnregisterFilter",
                format!(
                    "volume/instance references leaked (no FltObjectDereference): {}",
                    objects.join(", ")
                ),
            );
        }
        let leaked: Vec<String> = k
            .contexts
            .iter()
            .filter(|(_, c)| c.filter == filter)
            .map(|(p, c)| {
                format!(
                    "{p:#x} (type {:#x}, {} reference(s))",
                    c.context_type, c.refs
                )
            })
            .collect();
        if !leaked.is_empty() {
            k.violation(
                "FltUnregisterFilter",
                format!("contexts leaked: {}", leaked.join(", ")),
            );
        }
        if let Some(f) = k.filters.get_mut(&filter) {
            f.unregistered = true;
        }
    });
}

// ---------------------------------------------------------------------------------------
// Contexts
// ---------------------------------------------------------------------------------------

/// FltAllocateContext.
///
/// # Safety
/// `ret` must be writable.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn FltAllocateContext(
    filter: PFLT_FILTER,
    context_type: u16,
    size: usize,
    pool_type: POOL_TYPE,
    ret: *mut PFLT_CONTEXT,
) -> NTSTATUS {
    let paged = pool_type == PagedPool;
    irql::check(
        "FltAllocateContext",
        if paged { APC_LEVEL } else { DISPATCH_LEVEL },
    );
    with_kernel(|k| {
        if ![NonPagedPool, NonPagedPoolNx, PagedPool].contains(&pool_type) || ret.is_null() {
            k.violation(
                "FltAllocateContext",
                format!("invalid pool type {pool_type} or NULL out pointer"),
            );
            return STATUS_INVALID_PARAMETER;
        }
        if !k.live_filter("FltAllocateContext", filter) {
            return STATUS_INVALID_PARAMETER;
        }
        let Some(f) = k.filters.get(&filter) else {
            return STATUS_INVALID_PARAMETER;
        };
        let Some(reg) = f
            .info
            .contexts
            .iter()
            .find(|c| c.context_type == context_type)
            .copied()
        else {
            return STATUS_FLT_CONTEXT_ALLOCATION_NOT_FOUND;
        };
        if size > reg.size {
            return STATUS_FLT_CONTEXT_ALLOCATION_NOT_FOUND;
        }
        let Some(ptr) = k
            .pool
            .allocate(size, reg.pool_tag, Owner::FltMgr("context"))
        else {
            return STATUS_INSUFFICIENT_RESOURCES;
        };
        k.contexts.insert(
            ptr as usize,
            Context {
                filter,
                context_type,
                size,
                refs: 1,
                cleanup: reg.cleanup,
            },
        );
        // SAFETY: checked non-null above.
        unsafe { ret.write(ptr.cast()) };
        STATUS_SUCCESS
    })
}

/// FltSetInstanceContext.
///
/// # Safety
/// `old` must be NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn FltSetInstanceContext(
    instance: PFLT_INSTANCE,
    operation: FLT_SET_CONTEXT_OPERATION,
    new: PFLT_CONTEXT,
    old: *mut PFLT_CONTEXT,
) -> NTSTATUS {
    irql::check("FltSetInstanceContext", APC_LEVEL);
    let replaced = with_kernel(|k| {
        let Some(ctx) = k.contexts.get(&(new as usize)) else {
            k.violation(
                "FltSetInstanceContext",
                format!("{new:p} is not a live context"),
            );
            return Err(STATUS_INVALID_PARAMETER);
        };
        if u32::from(ctx.context_type) != FLT_INSTANCE_CONTEXT {
            k.violation(
                "FltSetInstanceContext",
                format!(
                    "context of type {:#x} set as instance context",
                    ctx.context_type
                ),
            );
            return Err(STATUS_INVALID_PARAMETER);
        }
        let Some((filter, pos)) = k.filter_of_instance(instance) else {
            return Err(STATUS_INVALID_PARAMETER);
        };
        let existing = k
            .filters
            .get(&filter)
            .and_then(|f| f.instances.get(pos))
            .and_then(|i| i.context);
        match (existing, operation) {
            (Some(existing), FLT_SET_CONTEXT_KEEP_IF_EXISTS) => {
                if !old.is_null() {
                    if let Some(c) = k.contexts.get_mut(&existing) {
                        c.refs += 1;
                    }
                    // SAFETY: non-null out pointer from the driver.
                    unsafe { old.write(existing as PFLT_CONTEXT) };
                }
                Err(STATUS_FLT_CONTEXT_ALREADY_DEFINED)
            }
            (existing, FLT_SET_CONTEXT_KEEP_IF_EXISTS | FLT_SET_CONTEXT_REPLACE_IF_EXISTS) => {
                if let Some(c) = k.contexts.get_mut(&(new as usize)) {
                    c.refs += 1;
                }
                if let Some(i) = k
                    .filters
                    .get_mut(&filter)
                    .and_then(|f| f.instances.get_mut(pos))
                {
                    i.context = Some(new as usize);
                }
                match existing {
                    Some(e) if !old.is_null() => {
                        // The caller now owns FltMgr's reference to the old context.
                        // SAFETY: non-null out pointer from the driver.
                        unsafe { old.write(e as PFLT_CONTEXT) };
                        Ok(None)
                    }
                    Some(e) => Ok(k.release("FltSetInstanceContext", e).map(|r| (e, r))),
                    None => Ok(None),
                }
            }
            _ => {
                k.violation(
                    "FltSetInstanceContext",
                    format!("invalid operation {operation}"),
                );
                Err(STATUS_INVALID_PARAMETER)
            }
        }
    });
    match replaced {
        Ok(Some((ptr, cleanup))) => {
            finish_release(ptr, cleanup);
            STATUS_SUCCESS
        }
        Ok(None) => STATUS_SUCCESS,
        Err(status) => status,
    }
}

/// FltReleaseContext.
#[unsafe(no_mangle)]
pub extern "system" fn FltReleaseContext(context: PFLT_CONTEXT) {
    irql::check("FltReleaseContext", DISPATCH_LEVEL);
    let ptr = context as usize;
    if let Some(cleanup) = with_kernel(|k| k.release("FltReleaseContext", ptr)) {
        finish_release(ptr, cleanup);
    }
}

/// FltReferenceContext: one more reference on a live context.
#[unsafe(no_mangle)]
pub extern "system" fn FltReferenceContext(context: PFLT_CONTEXT) {
    irql::check("FltReferenceContext", DISPATCH_LEVEL);
    let ptr = context as usize;
    with_kernel(|k| match k.contexts.get_mut(&ptr) {
        Some(c) if c.refs > 0 => c.refs += 1,
        _ => k.violation(
            "FltReferenceContext",
            format!("{ptr:#x} is not a live context (freed, or never allocated)"),
        ),
    });
}

// ---------------------------------------------------------------------------------------
// Volume queries
// ---------------------------------------------------------------------------------------

/// FltQueryVolumeInformation. Models the classes the driver uses; others answer
/// STATUS_NOT_IMPLEMENTED so a new use shows up as a test failure, not a wrong answer.
///
/// # Safety
/// `buffer` must be writable for `length` bytes and `iosb` writable.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn FltQueryVolumeInformation(
    instance: PFLT_INSTANCE,
    iosb: *mut IO_STATUS_BLOCK,
    buffer: *mut c_void,
    length: u32,
    class: FS_INFORMATION_CLASS,
) -> NTSTATUS {
    irql::check("FltQueryVolumeInformation", PASSIVE_LEVEL);
    let config = with_kernel(|k| {
        let (filter, pos) = k.filter_of_instance(instance)?;
        let volume = k.filters.get(&filter)?.instances.get(pos)?.volume;
        k.volume_config(volume)
    });
    let Some(config) = config else {
        return STATUS_INVALID_PARAMETER;
    };
    if class != FileFsAttributeInformation {
        return STATUS_NOT_IMPLEMENTED;
    }
    // FILE_FS_ATTRIBUTE_INFORMATION: Attributes u32, MaxComponentNameLength i32,
    // FileSystemNameLength u32, FileSystemName [u16].
    const FIXED: usize = 12;
    let name: Vec<u8> = config
        .filesystem_name
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect();
    let length = length as usize;
    if length < FIXED {
        return STATUS_INFO_LENGTH_MISMATCH;
    }
    let mut bytes = Vec::with_capacity(FIXED + name.len());
    bytes.extend_from_slice(&config.fs_attributes.to_le_bytes());
    bytes.extend_from_slice(&255i32.to_le_bytes());
    bytes.extend_from_slice(&(name.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&name);
    let written = bytes.len().min(length);
    // SAFETY: the caller's buffer holds `length` >= `written` bytes.
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), buffer.cast::<u8>(), written) };
    let status = if written < bytes.len() {
        STATUS_BUFFER_OVERFLOW
    } else {
        STATUS_SUCCESS
    };
    if !iosb.is_null() {
        let value = IO_STATUS_BLOCK {
            Anonymous: windows_sys::Win32::System::IO::IO_STATUS_BLOCK_0 { Status: status },
            Information: written,
        };
        // SAFETY: writable IO_STATUS_BLOCK from the caller.
        unsafe { iosb.write(value) };
    }
    status
}

/// FltGetVolumeProperties: the fixed part, then the three names as far as they fit.
///
/// # Safety
/// `properties` must be writable for `length` bytes.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn FltGetVolumeProperties(
    volume: PFLT_VOLUME,
    properties: *mut FLT_VOLUME_PROPERTIES,
    length: u32,
    returned: *mut u32,
) -> NTSTATUS {
    irql::check("FltGetVolumeProperties", APC_LEVEL);
    let config = with_kernel(|k| k.volume_config(volume));
    let Some(config) = config else {
        return STATUS_INVALID_PARAMETER;
    };
    let fixed = std::mem::size_of::<FLT_VOLUME_PROPERTIES>();
    let names: [Vec<u16>; 3] = [
        "\\FileSystem\\Ntfs".encode_utf16().collect(),
        "\\Ntfs".encode_utf16().collect(),
        config.device_name.encode_utf16().collect(),
    ];
    let needed = fixed + names.iter().map(|n| n.len() * 2).sum::<usize>();
    if !returned.is_null() {
        // SAFETY: writable ULONG from the caller.
        unsafe { returned.write(needed as u32) };
    }
    let length = length as usize;
    if length < fixed {
        return STATUS_BUFFER_TOO_SMALL;
    }
    let fits = length >= needed;
    let base = properties.cast::<u8>();
    let mut offset = fixed;
    let mut strings = [UNICODE_STRING {
        Length: 0,
        MaximumLength: 0,
        Buffer: std::ptr::null_mut(),
    }; 3];
    if fits {
        for (s, name) in strings.iter_mut().zip(&names) {
            // SAFETY: `offset + name` stays within `needed` <= `length` bytes.
            let dst = unsafe { base.add(offset) }.cast::<u16>();
            // SAFETY: as above; source and destination do not overlap.
            unsafe { std::ptr::copy_nonoverlapping(name.as_ptr(), dst, name.len()) };
            *s = UNICODE_STRING {
                Length: (name.len() * 2) as u16,
                MaximumLength: (name.len() * 2) as u16,
                Buffer: dst,
            };
            offset += name.len() * 2;
        }
    }
    let [driver_name, device_name, real_name] = strings;
    let value = FLT_VOLUME_PROPERTIES {
        DeviceType: config.device_type,
        DeviceCharacteristics: 0,
        DeviceObjectFlags: 0,
        AlignmentRequirement: 1,
        SectorSize: config.sector_size,
        Flags: 0,
        FileSystemDriverName: driver_name,
        FileSystemDeviceName: device_name,
        RealDeviceName: real_name,
    };
    // SAFETY: `length` >= the fixed size; the driver's buffer is suitably aligned.
    unsafe { properties.write_unaligned(value) };
    if fits {
        STATUS_SUCCESS
    } else {
        STATUS_BUFFER_OVERFLOW
    }
}

// ---------------------------------------------------------------------------------------
// What tests drive
// ---------------------------------------------------------------------------------------

/// A view of the loaded filter for assertions.
#[derive(Debug, Clone)]
pub struct FilterView {
    /// The registration as FltMgr read it.
    pub registration: RegistrationInfo,
    /// Device names of the volumes an instance is attached to.
    pub attached: Vec<String>,
    /// Instance context bytes per attached volume, in attach order.
    pub instance_contexts: Vec<Option<Vec<u8>>>,
    /// Whether FltStartFiltering was called.
    pub started: bool,
}

impl Machine {
    /// The registered (not yet unregistered) filter, if any.
    pub fn filter(&self) -> Option<FilterView> {
        with_kernel(|k| {
            let f = k.filters.values().find(|f| !f.unregistered)?;
            let attached = f
                .instances
                .iter()
                .filter_map(|i| k.volume_config(i.volume).map(|c| c.device_name))
                .collect();
            let instance_contexts = f
                .instances
                .iter()
                .map(|i| {
                    i.context.and_then(|p| {
                        k.contexts.get(&p).map(|c| {
                            // SAFETY: a live context of `size` bytes owned by the model.
                            unsafe { std::slice::from_raw_parts(p as *const u8, c.size) }.to_vec()
                        })
                    })
                })
                .collect();
            Some(FilterView {
                registration: f.info.clone(),
                attached,
                instance_contexts,
                started: f.started,
            })
        })
    }

    /// Unloads the driver as `fltmc unload` does: calls FilterUnload, then checks that it
    /// unregistered and left no pool, security descriptor or port behind.
    pub fn unload_driver(&mut self) -> NTSTATUS {
        irql::check("FilterUnload", PASSIVE_LEVEL);
        let unload = with_kernel(|k| {
            k.filters
                .iter()
                .find(|(_, f)| !f.unregistered)
                .map(|(h, f)| (*h, f.unload))
        });
        let Some((filter, unload)) = unload else {
            return STATUS_INVALID_PARAMETER;
        };
        let Some(unload) = unload else {
            // No unload callback: FltMgr refuses to unload the filter.
            return windows_sys::Win32::Foundation::STATUS_FLT_DO_NOT_DETACH;
        };
        let set_unloading = |flags: Option<u32>| {
            with_kernel(|k| {
                if let Some(f) = k.filters.get_mut(&filter) {
                    f.unloading = flags;
                }
            })
        };
        set_unloading(Some(FLTFL_FILTER_UNLOAD_MANDATORY));
        // SAFETY: the driver's FilterUnloadCallback, called once at PASSIVE_LEVEL.
        let status = unsafe { unload(FLTFL_FILTER_UNLOAD_MANDATORY) };
        set_unloading(None);
        with_kernel(|k| {
            if status >= 0 && k.filters.get(&filter).is_some_and(|f| !f.unregistered) {
                k.violation(
                    "FilterUnload",
                    "returned success without calling FltUnregisterFilter",
                );
            }
            let (names, leaked): (Vec<_>, Vec<_>) = k
                .pool
                .outstanding()
                .into_iter()
                .partition(|b| b.owner == Owner::FltMgr(super::names::OWNER));
            if !names.is_empty() {
                k.violation(
                    "DriverUnload",
                    format!(
                        "{} file name information block(s) never released (FltReleaseFileNameInformation)",
                        names.len()
                    ),
                );
            }
            k.check_mdls_at_unload("DriverUnload");
            let handles = k.io.handles.values().filter(|h| h.kernel).count();
            if handles > 0 {
                k.violation(
                    "DriverUnload",
                    format!("{handles} kernel file handle(s) never closed (FltClose)"),
                );
            }
            let keys = k.registry.open_handles();
            if keys > 0 {
                k.violation(
                    "DriverUnload",
                    format!("{keys} registry key handle(s) never closed (ZwClose)"),
                );
            }
            let referenced = k.io.files.values().filter(|f| f.driver_refs > 0).count();
            if referenced > 0 {
                k.violation(
                    "DriverUnload",
                    format!(
                        "{referenced} file object(s) still referenced by the driver (ObDereferenceObject)"
                    ),
                );
            }
            if !leaked.is_empty() {
                let list: Vec<String> = leaked
                    .iter()
                    .map(|b| format!("{} ({} bytes)", tag_name(b.tag), b.size))
                    .collect();
                k.violation("DriverUnload", format!("pool leaked: {}", list.join(", ")));
            }
            k.check_timers_at_unload("DriverUnload");
            if !k.security_descriptors.is_empty() {
                k.violation(
                    "DriverUnload",
                    format!(
                        "{} security descriptor(s) never freed",
                        k.security_descriptors.len()
                    ),
                );
            }
        });
        status
    }
}

// ---------------------------------------------------------------------------------------
// Volumes and instances by name
// ---------------------------------------------------------------------------------------

fn add_object_ref(k: &mut Kernel, object: isize, filter: PFLT_FILTER) {
    k.object_refs.entry(object).or_insert((filter, 0)).1 += 1;
}

/// FltGetVolumeFromName: the volume whose device name is `name` (`\Device\HarddiskVolumeN`),
/// referenced for the caller.
///
/// # Safety
/// `name` points to a UNICODE_STRING; `ret` is writable.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn FltGetVolumeFromName(
    filter: PFLT_FILTER,
    name: *const windows_sys::Win32::Foundation::UNICODE_STRING,
    ret: *mut PFLT_VOLUME,
) -> NTSTATUS {
    irql::check("FltGetVolumeFromName", PASSIVE_LEVEL);
    // SAFETY: the caller's UNICODE_STRING.
    let Some(name) = (unsafe { name.as_ref() }) else {
        return STATUS_INVALID_PARAMETER;
    };
    if ret.is_null() || name.Buffer.is_null() {
        return STATUS_INVALID_PARAMETER;
    }
    // SAFETY: Length bytes at Buffer, per UNICODE_STRING.
    let units = unsafe { std::slice::from_raw_parts(name.Buffer, usize::from(name.Length) / 2) };
    let wanted = String::from_utf16_lossy(units);
    with_kernel(|k| {
        if !k.live_filter("FltGetVolumeFromName", filter) {
            return STATUS_INVALID_PARAMETER;
        }
        let Some(volume) = k
            .volumes
            .iter()
            .find(|v| v.config.device_name.eq_ignore_ascii_case(&wanted))
            .map(|v| v.handle)
        else {
            return windows_sys::Win32::Foundation::STATUS_FLT_VOLUME_NOT_FOUND;
        };
        add_object_ref(k, volume, filter);
        // SAFETY: checked non-null above.
        unsafe { ret.write(volume) };
        STATUS_SUCCESS
    })
}

/// FltGetVolumeInstanceFromName with a NULL instance name: the filter's instance on
/// `volume`, referenced for the caller.
///
/// # Safety
/// `instance_name` is NULL or a UNICODE_STRING; `ret` is writable.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn FltGetVolumeInstanceFromName(
    filter: PFLT_FILTER,
    volume: PFLT_VOLUME,
    instance_name: *const windows_sys::Win32::Foundation::UNICODE_STRING,
    ret: *mut PFLT_INSTANCE,
) -> NTSTATUS {
    irql::check("FltGetVolumeInstanceFromName", PASSIVE_LEVEL);
    if ret.is_null() {
        return STATUS_INVALID_PARAMETER;
    }
    if !instance_name.is_null() {
        // The model's filters have one instance per volume, named after nothing.
        return STATUS_NOT_IMPLEMENTED;
    }
    with_kernel(|k| {
        if !k.live_filter("FltGetVolumeInstanceFromName", filter) {
            return STATUS_INVALID_PARAMETER;
        }
        let Some((instance, tearing_down)) = k
            .filters
            .get(&filter)
            .and_then(|f| f.instances.iter().find(|i| i.volume == volume))
            .map(|i| (i.handle, i.tearing_down))
        else {
            return windows_sys::Win32::Foundation::STATUS_FLT_INSTANCE_NOT_FOUND;
        };
        if tearing_down {
            // The reference is a rundown reference, which an instance being torn down
            // refuses (FltObjectReference).
            return windows_sys::Win32::Foundation::STATUS_FLT_DELETING_OBJECT;
        }
        add_object_ref(k, instance, filter);
        // SAFETY: checked non-null above.
        unsafe { ret.write(instance) };
        STATUS_SUCCESS
    })
}

/// FltGetVolumeFromInstance: the volume `instance` is attached to, referenced for the
/// caller (FltObjectDereference releases it).
///
/// # Safety
/// `ret` is writable.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn FltGetVolumeFromInstance(
    instance: PFLT_INSTANCE,
    ret: *mut PFLT_VOLUME,
) -> NTSTATUS {
    irql::check("FltGetVolumeFromInstance", APC_LEVEL);
    if ret.is_null() {
        return STATUS_INVALID_PARAMETER;
    }
    with_kernel(|k| {
        let found = k.filter_of_instance(instance).and_then(|(f, pos)| {
            let filter = k.filters.get(&f)?;
            if filter.is_unregistered() {
                return None;
            }
            filter.instances.get(pos).map(|i| (f, i.volume))
        });
        let Some((filter, volume)) = found else {
            k.violation(
                "FltGetVolumeFromInstance",
                format!("{instance:#x} is not a live instance"),
            );
            return STATUS_INVALID_PARAMETER;
        };
        add_object_ref(k, volume, filter);
        // SAFETY: checked non-null above.
        unsafe { ret.write(volume) };
        STATUS_SUCCESS
    })
}

/// FltGetVolumeName: the volume's device name (`\Device\HarddiskVolumeN`) into the
/// caller's buffer, or the bytes it needs (STATUS_BUFFER_TOO_SMALL) when the buffer is
/// too small or not given; STATUS_INVALID_PARAMETER when neither is given.
///
/// # Safety
/// `name` is NULL or a UNICODE_STRING whose Buffer holds MaximumLength bytes; `needed`
/// is NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn FltGetVolumeName(
    volume: PFLT_VOLUME,
    name: *mut UNICODE_STRING,
    needed: *mut u32,
) -> NTSTATUS {
    irql::check("FltGetVolumeName", APC_LEVEL);
    if name.is_null() && needed.is_null() {
        return STATUS_INVALID_PARAMETER;
    }
    let Some(device) = with_kernel(|k| k.volume_config(volume).map(|c| c.device_name)) else {
        with_kernel(|k| k.violation("FltGetVolumeName", format!("{volume:#x} is not a volume")));
        return STATUS_INVALID_PARAMETER;
    };
    let units: Vec<u16> = device.encode_utf16().collect();
    let bytes = units.len() * 2;
    if !needed.is_null() {
        // SAFETY: the caller's out pointer.
        unsafe { needed.write(bytes as u32) };
    }
    // SAFETY: NULL or the caller's UNICODE_STRING.
    let Some(name) = (unsafe { name.as_mut() }) else {
        return STATUS_BUFFER_TOO_SMALL;
    };
    if usize::from(name.MaximumLength) < bytes || name.Buffer.is_null() {
        return STATUS_BUFFER_TOO_SMALL;
    }
    // SAFETY: the caller's buffer holds MaximumLength >= `bytes` bytes.
    unsafe { std::ptr::copy_nonoverlapping(units.as_ptr(), name.Buffer, units.len()) };
    name.Length = bytes as u16;
    STATUS_SUCCESS
}

/// FltObjectDereference: drops a reference FltGetVolumeFromName,
/// FltGetVolumeInstanceFromName or FltGetVolumeFromInstance gave out.
#[unsafe(no_mangle)]
pub extern "system" fn FltObjectDereference(object: *mut c_void) {
    irql::check("FltObjectDereference", APC_LEVEL);
    with_kernel(|k| {
        match k.object_refs.get_mut(&(object as isize)) {
        Some((_, n)) if *n > 0 => {
            *n -= 1;
            // An instance's teardown waits for its rundown references.
            k.wake(super::sync::Key::Instance(object as isize));
        }
        _ => k.violation(
            "FltObjectDereference",
            format!(
                "{object:p} holds no reference from FltGetVolume(Instance)FromName or FltGetVolumeFromInstance"
            ),
        ),
    }
    });
}
