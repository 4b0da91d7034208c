//! DIRECTORY_CONTROL: listings are rewritten in place for disguised opens (through the
//! MDL's system mapping, never the caller's user address), each entry judged by its tag.

use super::*;

/// PreOperation of DIRECTORY_CONTROL: a query of a directory opened by a disguised caller
/// gets its post, synchronised (PASSIVE_LEVEL, issuing thread), with the buffer locked.
///
/// # Safety
/// Called by FltMgr with valid callback data.
pub(crate) unsafe extern "system" fn pre_directory_control(
    data: *mut FLT_CALLBACK_DATA,
    objects: *const FLT_RELATED_OBJECTS,
    _completion_context: *mut *mut core::ffi::c_void,
) -> FLT_PREOP_CALLBACK_STATUS {
    // SAFETY: FltMgr passes valid callback data for the call.
    let Some(d) = (unsafe { data.as_ref() }) else {
        return FLT_PREOP_SUCCESS_NO_CALLBACK;
    };
    // SAFETY: its parameter block, valid during the callback, laid out as fltKernel.h
    // declares it (nt::layout).
    let Some(iopb) = (unsafe { d.Iopb.cast::<FLT_IO_PARAMETER_BLOCK>().as_ref() }) else {
        return FLT_PREOP_SUCCESS_NO_CALLBACK;
    };
    if !is_irp(d) || u32::from(iopb.MinorFunction) != IRP_MN_QUERY_DIRECTORY {
        return FLT_PREOP_SUCCESS_NO_CALLBACK;
    }
    // SAFETY: DIRECTORY_CONTROL: the union holds the directory-control parameters.
    let control = unsafe { iopb.Parameters.DirectoryControl };
    // SAFETY: IRP_MN_QUERY_DIRECTORY (checked above): its member is the one in use.
    let pattern = unsafe { control.QueryDirectory }.FileName;
    if let Some(status) = populate_first(data, objects, pattern) {
        // SAFETY: FltMgr's live callback data, ours to complete in the pre-operation.
        if let Some(d) = unsafe { data.as_mut() } {
            return complete(d, status);
        }
    }
    if !disguised(objects) {
        return FLT_PREOP_SUCCESS_NO_CALLBACK;
    }
    // SAFETY: an IRP operation at PASSIVE_LEVEL.
    let status = unsafe { FltLockUserBuffer(data) };
    if !nt_success(status) {
        return FLT_PREOP_SUCCESS_NO_CALLBACK;
    }
    FLT_PREOP_SYNCHRONIZE
}

/// Issue 15: the first query of a directory open in a root populated on demand makes
/// sure the directory is populated, in the requestor's thread, before the file system
/// lists it: `Some(status)` to fail the query with (the population failed, timed out or
/// was cancelled; no provider is connected to fill it:
/// STATUS_CLOUD_FILE_PROVIDER_NOT_RUNNING). Providers' own listings and the System
/// process's never ask (nothing of the system waits on user mode): they see what is on
/// disk.
fn populate_first(
    data: *mut FLT_CALLBACK_DATA,
    objects: *const FLT_RELATED_OBJECTS,
    pattern: *mut windows_sys::Win32::Foundation::UNICODE_STRING,
) -> Option<NTSTATUS> {
    // SAFETY: FltMgr passes valid related objects for the call.
    let objects = unsafe { objects.as_ref() }?;
    let handle = stream::HandleRef::get(objects.Instance, objects.FileObject)?;
    if !handle.populate.load(core::sync::atomic::Ordering::Relaxed) {
        return None;
    }
    // A kernel-mode query (another driver's, possibly holding its own locks) does not
    // wait on user mode: it sees what is on disk.
    // SAFETY: live callback data.
    if unsafe { data.as_ref() }.is_none_or(|d| d.RequestorMode == 0) {
        return None;
    }
    // SAFETY: live callback data.
    let pid = unsafe { FltGetRequestorProcessId(data) };
    if pid == crate::engine::visibility::SYSTEM_PID {
        return None;
    }
    let name = NameInfo::normalized(data).ok()?;
    let result = match providers::for_path(name.units()) {
        // The root's own provider lists what is there.
        Some(provider) if provider.pid == pid as usize => return None,
        Some(provider) => {
            const STAR: [u16; 1] = [b'*' as u16];
            // SAFETY: the query's file name, if any, valid during the operation.
            let asked = unsafe { pattern.as_ref() }
                .filter(|p| !p.Buffer.is_null() && p.Length > 0)
                // SAFETY: Length bytes at Buffer, per UNICODE_STRING.
                .map(|p| unsafe {
                    core::slice::from_raw_parts(p.Buffer, usize::from(p.Length) / 2)
                });
            crate::nt::populate::ensure(
                &provider,
                objects.Instance,
                name.units(),
                asked.unwrap_or(&STAR),
                crate::nt::populate::Asking { data, pid },
            )
        }
        None => unpopulated_without_provider(objects, name.units()),
    };
    match result {
        Ok(()) => {
            handle
                .populate
                .store(false, core::sync::atomic::Ordering::Relaxed);
            None
        }
        Err(status) => Some(status),
    }
}

/// With no provider connected to its root: fails with
/// STATUS_CLOUD_FILE_PROVIDER_NOT_RUNNING if the directory `path` is not populated (its
/// listing would be incomplete), succeeds otherwise.
pub(super) fn unpopulated_without_provider(
    objects: &FLT_RELATED_OBJECTS,
    path: &[u16],
) -> Result<(), NTSTATUS> {
    let mut root = [0u16; syncroot::MAX_PATH];
    let Some(len) = roots::root_path(path, &mut root) else {
        return Ok(());
    };
    let root = root.get(..len).unwrap_or(&[]);
    match crate::nt::populate::state(objects.Filter, objects.Instance, root, path) {
        crate::nt::populate::State::Unpopulated { .. } => Err(roots::no_provider_status(path)),
        _ => Ok(()),
    }
}

/// PostOperation of DIRECTORY_CONTROL (synchronised): disguises the listing.
///
/// # Safety
/// Called by FltMgr with valid callback data.
pub(crate) unsafe extern "system" fn post_directory_control(
    data: *mut FLT_CALLBACK_DATA,
    objects: *const FLT_RELATED_OBJECTS,
    _completion_context: *const core::ffi::c_void,
    flags: u32,
) -> FLT_POSTOP_CALLBACK_STATUS {
    // SAFETY: FltMgr's callback data of this post-operation.
    let Some((d, iopb)) = (unsafe { completed(data, flags) }) else {
        return FLT_POSTOP_FINISHED_PROCESSING;
    };
    // SAFETY: the completed operation's status.
    if unsafe { d.IoStatus.Anonymous.Status } == STATUS_BUFFER_OVERFLOW {
        // A first entry cut short: see the module comment (known gap).
        return FLT_POSTOP_FINISHED_PROCESSING;
    }
    // SAFETY: DIRECTORY_CONTROL: the union holds the directory-control parameters.
    let control = unsafe { iopb.Parameters.DirectoryControl };
    // SAFETY: IRP_MN_QUERY_DIRECTORY (the only minor the pre-op synchronises).
    let q = unsafe { control.QueryDirectory };
    let Some(class) = u32::try_from(q.FileInformationClass)
        .ok()
        .and_then(DirectoryClass::from_raw)
    else {
        return FLT_POSTOP_FINISHED_PROCESSING;
    };
    if q.Length == 0 {
        return FLT_POSTOP_FINISHED_PROCESSING;
    }
    // SAFETY: the listing's MDL (FltLockUserBuffer in the pre-operation) or a kernel-mode
    // requestor's buffer, valid until the operation completes, which is after this
    // synchronised post-operation.
    let buffer = unsafe {
        crate::nt::buffer::system_buffer(
            d.RequestorMode,
            q.DirectoryBuffer,
            q.MdlAddress,
            q.Length as usize,
        )
    };
    let Some(buffer) = buffer else {
        // The listing cannot be reached safely, so it must not reach the caller either.
        d.IoStatus = IO_STATUS_BLOCK {
            Anonymous: IO_STATUS_BLOCK_0 {
                Status: STATUS_INSUFFICIENT_RESOURCES,
            },
            Information: 0,
        };
        // SAFETY: live callback data in its post-operation.
        unsafe { FltSetCallbackDataDirty(d) };
        return FLT_POSTOP_FINISHED_PROCESSING;
    };
    let returned = d.IoStatus.Information;
    // FileDirectory and FileIdGlobalTxDirectory carry no tag: each entry with
    // FILE_ATTRIBUTE_REPARSE_POINT is looked up by name, with the directory's name fetched
    // on the first such entry.
    let mut directory: Option<Result<NameInfo, NTSTATUS>> = None;
    let result = rewrite::disguise_directory_with(
        class,
        buffer,
        returned,
        HiddenAttributes::DEFAULT,
        |name| {
            let directory = directory.get_or_insert_with(|| NameInfo::normalized(data));
            directory
                .as_ref()
                .is_ok_and(|dir| child_is_ours(objects, dir.units(), name))
        },
    );
    if result.is_err() {
        fail_malformed(d, buffer, returned);
    }
    FLT_POSTOP_FINISHED_PROCESSING
}

/// Longest entry name NTFS allows, in UTF-16 units.
const MAX_COMPONENT: usize = 255;

/// Whether the entry `name` of directory `directory` (normalized, device form) carries
/// cloudflt's tag: the driver opens it as the reparse point itself and asks its tag.
///
/// An entry that cannot be opened (deleted or renamed since the listing, or a name longer
/// than NTFS allows) is not taken for a placeholder: other files are never touched, and
/// one that has gone is nobody's to see.
fn child_is_ours(
    objects: *const FLT_RELATED_OBJECTS,
    directory: &[u16],
    name: rewrite::Name<'_>,
) -> bool {
    // SAFETY: FltMgr passes valid related objects for the call.
    let Some(objects) = (unsafe { objects.as_ref() }) else {
        return false;
    };
    const DOT: u16 = b'.' as u16;
    let mut units = name.units();
    let (first, second, third) = (units.next(), units.next(), units.next());
    let (directory, name) = match (first, second, third) {
        // `.`: the directory being listed, already open.
        (Some(DOT), None, _) => {
            let listed = Fo {
                instance: objects.Instance,
                file_object: objects.FileObject,
            };
            return is_ours(listed.attribute_tag());
        }
        // `..`: its parent, by the directory's name without its last component.
        (Some(DOT), Some(DOT), None) => {
            let trimmed = directory
                .strip_suffix(&[u16::from(b'\\')])
                .unwrap_or(directory);
            let Some(cut) = trimmed.iter().rposition(|u| *u == u16::from(b'\\')) else {
                return false;
            };
            // `\Device\HarddiskVolumeN` alone names the volume, not its root directory:
            // the root keeps its separator.
            let separators = trimmed.iter().filter(|u| **u == u16::from(b'\\')).count();
            let end = if separators <= 3 { cut + 1 } else { cut };
            (trimmed.get(..end).unwrap_or(&[]), None)
        }
        _ => (directory, Some(name)),
    };
    let mut path = [0u16; syncroot::MAX_PATH + 1 + MAX_COMPONENT];
    let separator: &[u16] = if directory.last() == Some(&u16::from(b'\\')) {
        &[]
    } else {
        &[b'\\' as u16]
    };
    let (separator, name_units, name_len) = match name {
        Some(name) => (separator, Some(name.units()), name.len()),
        None => (&[][..], None, 0),
    };
    let mut len = 0;
    for (d, s) in path.iter_mut().zip(
        directory
            .iter()
            .copied()
            .chain(separator.iter().copied())
            .chain(name_units.into_iter().flatten()),
    ) {
        *d = s;
        len += 1;
    }
    let wanted = directory.len() + separator.len() + name_len;
    let Some(path) = path.get(..len).filter(|_| len == wanted) else {
        return false;
    };
    let Ok(child) = OwnedFile::open(
        objects.Filter,
        objects.Instance,
        path,
        FILE_READ_ATTRIBUTES,
        FILE_OPEN,
        Kind::Any,
        0,
    ) else {
        return false;
    };
    is_ours(child.attribute_tag())
}
