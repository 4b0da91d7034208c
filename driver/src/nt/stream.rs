//! The stream of a placeholder: its stream context (attached from the reparse data the
//! first time the file is opened), the per-open stream-handle context, and the count of
//! opens. Everything reaches a placeholder's state through here.

use core::ptr::NonNull;

use cloudflt_proto::{Placeholder, PlaceholderFlags, reparse};
use windows_sys::Wdk::Foundation::FILE_OBJECT;
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FLT_SET_CONTEXT_KEEP_IF_EXISTS, FLT_SET_CONTEXT_REPLACE_IF_EXISTS, FLT_STREAM_CONTEXT,
    FLT_STREAMHANDLE_CONTEXT, FltAllocateContext, FltGetStreamContext, FltGetStreamHandleContext,
    FltReleaseContext, FltSetStreamContext, FltSetStreamHandleContext, PFLT_CONTEXT, PFLT_FILTER,
    PFLT_INSTANCE,
};
use windows_sys::Win32::Foundation::{
    NTSTATUS, STATUS_CLOUD_FILE_INSUFFICIENT_RESOURCES, STATUS_FLT_CONTEXT_ALREADY_DEFINED,
};

use super::context::{
    StreamContext, StreamHandleContext, StreamState, TAG_STREAMHANDLE_CONTEXT, new_present,
};
use super::file::Fo;
use super::hydrate::{self};
use super::status::nt_success;
use crate::engine::policy::Policy;
use crate::engine::ranges::Range;
use crate::engine::stream::Kind;

/// FILE_ATTRIBUTE_* bits the driver manages.
const ATTRIBUTE_DIRECTORY: u32 = 0x10;

/// A referenced stream context, released on drop.
pub(crate) struct StreamRef(NonNull<StreamContext>);

// SAFETY: a referenced context may be used and released from any thread.
unsafe impl Send for StreamRef {}

impl core::ops::Deref for StreamRef {
    type Target = StreamContext;
    fn deref(&self) -> &StreamContext {
        // SAFETY: the reference keeps the context alive.
        unsafe { self.0.as_ref() }
    }
}

impl Drop for StreamRef {
    fn drop(&mut self) {
        // SAFETY: the reference this value owns, dropped once.
        unsafe { FltReleaseContext(self.0.as_ptr().cast()) };
    }
}

/// The stream context of a file object, if one is attached.
pub(crate) fn get(instance: PFLT_INSTANCE, file_object: *const FILE_OBJECT) -> Option<StreamRef> {
    let mut context: PFLT_CONTEXT = core::ptr::null_mut();
    // SAFETY: a live file object of this instance's volume; a valid out pointer.
    let status = unsafe { FltGetStreamContext(instance, file_object, &mut context) };
    if !nt_success(status) {
        return None;
    }
    NonNull::new(context.cast::<StreamContext>()).map(StreamRef)
}

/// The stream context of a file carrying cloudflt's reparse point, attached from its
/// reparse data if this is the first time; `Ok(None)` for any other file.
pub(crate) fn attach(filter: PFLT_FILTER, fo: Fo) -> Result<Option<StreamRef>, NTSTATUS> {
    if let Some(existing) = get(fo.instance, fo.file_object) {
        return Ok(Some(existing));
    }
    let (attributes, tag) = fo.attribute_tag()?;
    if tag != reparse::TAG || attributes & ATTRIBUTE_DIRECTORY != 0 {
        return Ok(None);
    }
    let file_id = fo.file_id().unwrap_or(0);
    let reparse_point = fo.reparse_point()?;
    let decoded = reparse_point.as_ref().map(|(buffer, len)| {
        Placeholder::decode_reparse(buffer.as_slice().get(..*len).unwrap_or(&[]))
    });
    let (state, identity) = match decoded {
        Some(Ok(p)) => (state_from(Some(&p)), p.identity),
        // The tag is ours but the data is not: reads must fail, not return zeros.
        Some(Err(_)) | None => (state_from(None), &[][..]),
    };
    let state = state.ok_or(STATUS_CLOUD_FILE_INSUFFICIENT_RESOURCES)?;
    // Built before the context is allocated, so that no context ever exists
    // uninitialised (its cleanup callback drops what it owns).
    let value = StreamContext::new(fo.instance, file_id, identity, state)
        .ok_or(STATUS_CLOUD_FILE_INSUFFICIENT_RESOURCES)?;
    let mut context: PFLT_CONTEXT = core::ptr::null_mut();
    // SAFETY: the registered filter; a valid out pointer; non-paged pool.
    let status = unsafe {
        FltAllocateContext(
            filter,
            FLT_STREAM_CONTEXT as u16,
            core::mem::size_of::<StreamContext>(),
            windows_sys::Wdk::Foundation::NonPagedPoolNx,
            &mut context,
        )
    };
    if !nt_success(status) {
        return Err(status);
    }
    // SAFETY: FltAllocateContext returned a block of the requested size, pool aligned,
    // not yet shared.
    unsafe { context.cast::<StreamContext>().write(value) };
    // SAFETY: written just above, at the address it keeps for its life.
    unsafe { &*context.cast::<StreamContext>() }.turn.init();
    let mut old: PFLT_CONTEXT = core::ptr::null_mut();
    // SAFETY: a live file object; our initialised context.
    let status = unsafe {
        FltSetStreamContext(
            fo.instance,
            fo.file_object,
            FLT_SET_CONTEXT_KEEP_IF_EXISTS,
            context,
            &mut old,
        )
    };
    // Our allocation reference goes either way: the stream keeps its own if the set
    // succeeded.
    let ours = NonNull::new(context.cast::<StreamContext>()).map(StreamRef);
    if status == STATUS_FLT_CONTEXT_ALREADY_DEFINED {
        drop(ours);
        return Ok(NonNull::new(old.cast::<StreamContext>()).map(StreamRef));
    }
    if !nt_success(status) {
        drop(ours);
        return Err(status);
    }
    Ok(ours)
}

/// Counts an open of the stream (post-create).
pub(crate) fn open_added(stream: &StreamContext) {
    hydrate::with_held(|held| stream.with_state(held, |s| s.opens = s.opens.saturating_add(1)));
}

/// Counts an open's cleanup, if its create counted it; true if it was the stream's last.
///
/// An open the count never included (opened before the file became a placeholder)
/// leaves it alone: taking the count low would let a dehydration go on while a handle
/// still reads the file.
pub(crate) fn close_open(stream: &StreamContext, handle: Option<&HandleRef>) -> bool {
    if !handle.is_some_and(|h| h.counted) {
        return false;
    }
    hydrate::with_held(|held| {
        stream.with_state(held, |s| {
            s.opens = s.opens.saturating_sub(1);
            s.opens == 0
        })
    })
}

/// Records what post-create decided about an open in its stream-handle context
/// (`handle`, whose `signature` is set here). `handle.counted`: the open was counted in
/// its stream's opens ([`open_added`]).
///
/// A counted open whose context cannot be set stays counted: its stream then looks
/// in use until it is torn down (dehydration refused), which loses nothing; the other
/// way a dehydration could zero data under a reader.
pub(crate) fn set_handle_context(
    filter: PFLT_FILTER,
    fo: Fo,
    handle: StreamHandleContext,
) -> Result<(), NTSTATUS> {
    let mut context: PFLT_CONTEXT = core::ptr::null_mut();
    // SAFETY: the registered filter; a valid out pointer; non-paged pool.
    let status = unsafe {
        FltAllocateContext(
            filter,
            FLT_STREAMHANDLE_CONTEXT as u16,
            core::mem::size_of::<StreamHandleContext>(),
            windows_sys::Wdk::Foundation::NonPagedPoolNx,
            &mut context,
        )
    };
    if !nt_success(status) {
        return Err(status);
    }
    // SAFETY: a fresh block of the context's size, pool aligned, not yet shared.
    unsafe {
        context
            .cast::<StreamHandleContext>()
            .write(StreamHandleContext {
                signature: TAG_STREAMHANDLE_CONTEXT,
                ..handle
            })
    };
    // SAFETY: a live file object; our initialised context.
    let status = unsafe {
        FltSetStreamHandleContext(
            fo.instance,
            fo.file_object,
            FLT_SET_CONTEXT_REPLACE_IF_EXISTS,
            context,
            core::ptr::null_mut(),
        )
    };
    // SAFETY: the allocation reference, dropped once; the open holds its own.
    unsafe { FltReleaseContext(context) };
    if nt_success(status) {
        Ok(())
    } else {
        Err(status)
    }
}

/// A referenced stream-handle context (what was decided for one open at its create),
/// released on drop.
///
/// # Invariants
/// The pointer is a live stream-handle context of this filter, referenced by this value.
pub(crate) struct HandleRef(NonNull<StreamHandleContext>);

impl HandleRef {
    /// The context of the open `file_object`; `None` when it has none (neither a
    /// placeholder nor a directory of a sync root, or opened before the driver loaded).
    pub(crate) fn get(instance: PFLT_INSTANCE, file_object: *const FILE_OBJECT) -> Option<Self> {
        let mut context: PFLT_CONTEXT = core::ptr::null_mut();
        // SAFETY: a live file object; a valid out pointer.
        let status = unsafe { FltGetStreamHandleContext(instance, file_object, &mut context) };
        if !nt_success(status) {
            return None;
        }
        // INVARIANT: FltGetStreamHandleContext returned it referenced.
        NonNull::new(context.cast::<StreamHandleContext>()).map(Self)
    }
}

impl core::ops::Deref for HandleRef {
    type Target = StreamHandleContext;
    fn deref(&self) -> &StreamHandleContext {
        // SAFETY: referenced while this value lives (type invariant); never written after
        // it was set.
        unsafe { self.0.as_ref() }
    }
}

impl Drop for HandleRef {
    fn drop(&mut self) {
        // SAFETY: the reference this value holds, released once.
        unsafe { FltReleaseContext(self.0.as_ptr().cast()) };
    }
}

/// The effective policy recorded for an open, if any.
pub(crate) fn handle_policy(
    instance: PFLT_INSTANCE,
    file_object: *const FILE_OBJECT,
) -> Option<Policy> {
    HandleRef::get(instance, file_object).and_then(|h| h.policy)
}

/// The in-memory state for a decoded placeholder, or for reparse data with cloudflt's tag
/// that does not decode (`None`: corrupt); `None` when pool is exhausted.
fn state_from(p: Option<&Placeholder<'_>>) -> Option<StreamState> {
    let mut present = new_present()?;
    for r in p.iter().flat_map(|p| p.ranges.iter()) {
        present.insert(Range::at(r.offset, r.length));
    }
    let kind = if p.is_some() {
        Kind::Placeholder
    } else {
        Kind::Corrupt
    };
    let mut modified = new_present()?;
    for r in p.iter().flat_map(|p| p.modified.iter()) {
        modified.insert(Range::at(r.offset, r.length));
    }
    Some(StreamState::new(
        kind,
        p.map_or(PlaceholderFlags::EMPTY, |p| p.flags),
        p.map_or(0, |p| p.file_size),
        present,
        modified,
        p.map_or(0, |p| p.changes),
    ))
}
