//! Stream and stream-handle contexts (FltSet/Get/DeleteContext on file objects) and
//! FltGetInstanceContext.
//!
//! Owns nothing of its own: stream contexts hang off the stream in `files.rs`,
//! stream-handle contexts off the file object, instance contexts off the instance in
//! `fltmgr.rs`. Reference counting is the one in `fltmgr.rs`: FltMgr holds one reference
//! while a context is set, and each Get hands the caller one more.

use windows_sys::Wdk::Foundation::FILE_OBJECT;
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FLT_SET_CONTEXT_KEEP_IF_EXISTS, FLT_SET_CONTEXT_OPERATION, FLT_SET_CONTEXT_REPLACE_IF_EXISTS,
    FLT_STREAM_CONTEXT, FLT_STREAMHANDLE_CONTEXT, PFLT_CONTEXT, PFLT_INSTANCE,
};
use windows_sys::Win32::Foundation::{
    NTSTATUS, STATUS_FLT_CONTEXT_ALREADY_DEFINED, STATUS_INVALID_PARAMETER, STATUS_NOT_FOUND,
    STATUS_NOT_SUPPORTED, STATUS_SUCCESS,
};

use super::fltmgr::finish_release;
use super::irql::{self, APC_LEVEL};
use super::{Kernel, with_kernel};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Slot {
    Stream,
    Handle,
}

impl Slot {
    fn context_type(self) -> u32 {
        match self {
            Slot::Stream => FLT_STREAM_CONTEXT,
            Slot::Handle => FLT_STREAMHANDLE_CONTEXT,
        }
    }

    fn api(self, set: bool) -> &'static str {
        match (self, set) {
            (Slot::Stream, true) => "FltSetStreamContext",
            (Slot::Stream, false) => "FltGetStreamContext",
            (Slot::Handle, true) => "FltSetStreamHandleContext",
            (Slot::Handle, false) => "FltGetStreamHandleContext",
        }
    }
}

/// The context list of a slot of a file object, if the file object is open.
fn list(
    k: &mut Kernel,
    slot: Slot,
    fo: *const FILE_OBJECT,
) -> Option<&mut Vec<(PFLT_INSTANCE, usize)>> {
    let f = k.io.files.get_mut(&(fo as usize))?;
    match slot {
        Slot::Handle => Some(&mut f.handle_contexts),
        Slot::Stream => {
            let key = (f.volume, f.file?);
            k.io.streams.get_mut(&key).map(|s| &mut s.contexts)
        }
    }
}

fn set(
    slot: Slot,
    instance: PFLT_INSTANCE,
    fo: *const FILE_OBJECT,
    operation: FLT_SET_CONTEXT_OPERATION,
    new: PFLT_CONTEXT,
    old: *mut PFLT_CONTEXT,
) -> NTSTATUS {
    let api = slot.api(true);
    irql::check(api, APC_LEVEL);
    let replaced = with_kernel(|k| {
        let Some(ctx) = k.contexts.get(&(new as usize)) else {
            k.violation(api, format!("{new:p} is not a live context"));
            return Err(STATUS_INVALID_PARAMETER);
        };
        if u32::from(ctx.context_type) != slot.context_type() {
            let t = ctx.context_type;
            k.violation(api, format!("context of type {t:#x} set in the wrong slot"));
            return Err(STATUS_INVALID_PARAMETER);
        }
        if operation != FLT_SET_CONTEXT_KEEP_IF_EXISTS
            && operation != FLT_SET_CONTEXT_REPLACE_IF_EXISTS
        {
            k.violation(api, format!("invalid operation {operation}"));
            return Err(STATUS_INVALID_PARAMETER);
        }
        let Some(entries) = list(k, slot, fo) else {
            // A file object not yet opened (pre-create) or already closed has no stream.
            return Err(STATUS_NOT_SUPPORTED);
        };
        let existing = entries.iter().position(|(i, _)| *i == instance);
        match existing {
            Some(pos) if operation == FLT_SET_CONTEXT_KEEP_IF_EXISTS => {
                let current = entries[pos].1;
                if !old.is_null() {
                    if let Some(c) = k.contexts.get_mut(&current) {
                        c.refs += 1;
                    }
                    // SAFETY: non-null out pointer from the driver.
                    unsafe { old.write(current as PFLT_CONTEXT) };
                }
                Err(STATUS_FLT_CONTEXT_ALREADY_DEFINED)
            }
            Some(pos) => {
                let current = std::mem::replace(&mut entries[pos].1, new as usize);
                if let Some(c) = k.contexts.get_mut(&(new as usize)) {
                    c.refs += 1;
                }
                if old.is_null() {
                    Ok(k.release(api, current).map(|r| (current, r)))
                } else {
                    // The caller takes over FltMgr's reference to the old one.
                    // SAFETY: non-null out pointer from the driver.
                    unsafe { old.write(current as PFLT_CONTEXT) };
                    Ok(None)
                }
            }
            None => {
                entries.push((instance, new as usize));
                if let Some(c) = k.contexts.get_mut(&(new as usize)) {
                    c.refs += 1;
                }
                Ok(None)
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

fn get(
    slot: Slot,
    instance: PFLT_INSTANCE,
    fo: *const FILE_OBJECT,
    out: *mut PFLT_CONTEXT,
) -> NTSTATUS {
    let api = slot.api(false);
    irql::check(api, APC_LEVEL);
    if out.is_null() {
        with_kernel(|k| k.violation(api, "NULL context out pointer"));
        return STATUS_INVALID_PARAMETER;
    }
    with_kernel(|k| {
        let found =
            list(k, slot, fo).and_then(|l| l.iter().find(|(i, _)| *i == instance).map(|(_, c)| *c));
        let Some(ptr) = found else {
            return STATUS_NOT_FOUND;
        };
        if let Some(c) = k.contexts.get_mut(&ptr) {
            c.refs += 1;
        }
        // SAFETY: checked non-null above.
        unsafe { out.write(ptr as PFLT_CONTEXT) };
        STATUS_SUCCESS
    })
}

/// FltSetStreamContext.
///
/// # Safety
/// `old` must be NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn FltSetStreamContext(
    instance: PFLT_INSTANCE,
    fo: *const FILE_OBJECT,
    operation: FLT_SET_CONTEXT_OPERATION,
    new: PFLT_CONTEXT,
    old: *mut PFLT_CONTEXT,
) -> NTSTATUS {
    set(Slot::Stream, instance, fo, operation, new, old)
}

/// FltSetStreamHandleContext.
///
/// # Safety
/// `old` must be NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn FltSetStreamHandleContext(
    instance: PFLT_INSTANCE,
    fo: *const FILE_OBJECT,
    operation: FLT_SET_CONTEXT_OPERATION,
    new: PFLT_CONTEXT,
    old: *mut PFLT_CONTEXT,
) -> NTSTATUS {
    set(Slot::Handle, instance, fo, operation, new, old)
}

/// FltGetStreamContext.
///
/// # Safety
/// `out` must be writable.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn FltGetStreamContext(
    instance: PFLT_INSTANCE,
    fo: *const FILE_OBJECT,
    out: *mut PFLT_CONTEXT,
) -> NTSTATUS {
    get(Slot::Stream, instance, fo, out)
}

/// FltGetStreamHandleContext.
///
/// # Safety
/// `out` must be writable.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn FltGetStreamHandleContext(
    instance: PFLT_INSTANCE,
    fo: *const FILE_OBJECT,
    out: *mut PFLT_CONTEXT,
) -> NTSTATUS {
    get(Slot::Handle, instance, fo, out)
}

/// FltGetInstanceContext.
///
/// # Safety
/// `out` must be writable.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn FltGetInstanceContext(
    instance: PFLT_INSTANCE,
    out: *mut PFLT_CONTEXT,
) -> NTSTATUS {
    irql::check("FltGetInstanceContext", super::irql::DISPATCH_LEVEL);
    if out.is_null() {
        return STATUS_INVALID_PARAMETER;
    }
    with_kernel(|k| {
        let Some((filter, pos)) = k.filter_of_instance(instance) else {
            return STATUS_INVALID_PARAMETER;
        };
        let ctx = k
            .filters
            .get(&filter)
            .and_then(|f| f.instances.get(pos))
            .and_then(|i| i.context);
        let Some(ptr) = ctx else {
            return STATUS_NOT_FOUND;
        };
        if let Some(c) = k.contexts.get_mut(&ptr) {
            c.refs += 1;
        }
        // SAFETY: checked non-null above.
        unsafe { out.write(ptr as PFLT_CONTEXT) };
        STATUS_SUCCESS
    })
}

/// FltDeleteContext: detaches the context from whatever it is set on and drops FltMgr's
/// reference (the caller's own reference keeps it alive until FltReleaseContext).
#[unsafe(no_mangle)]
pub extern "system" fn FltDeleteContext(context: PFLT_CONTEXT) {
    irql::check("FltDeleteContext", APC_LEVEL);
    let ptr = context as usize;
    let released = with_kernel(|k| {
        if !k.contexts.contains_key(&ptr) {
            k.violation(
                "FltDeleteContext",
                format!("{context:p} is not a live context"),
            );
            return None;
        }
        let mut attached = false;
        for f in k.io.files.values_mut() {
            let before = f.handle_contexts.len();
            f.handle_contexts.retain(|(_, c)| *c != ptr);
            attached |= f.handle_contexts.len() != before;
        }
        for s in k.io.streams.values_mut() {
            let before = s.contexts.len();
            s.contexts.retain(|(_, c)| *c != ptr);
            attached |= s.contexts.len() != before;
        }
        for f in k.filters.values_mut() {
            for i in &mut f.instances {
                if i.context == Some(ptr) {
                    i.context = None;
                    attached = true;
                }
            }
        }
        if !attached {
            // Never set, or already deleted: nothing of FltMgr's to drop.
            return None;
        }
        k.release("FltDeleteContext", ptr).map(|r| (ptr, r))
    });
    if let Some((ptr, cleanup)) = released {
        finish_release(ptr, cleanup);
    }
}
