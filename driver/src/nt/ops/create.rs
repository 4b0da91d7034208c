//! CREATE: placeholders open as themselves (an open-reparse entry for cloudflt's tag, in
//! pool for the length of the create), and post-create attaches the stream context and
//! decides, once per open, how the opener sees placeholders (disguise).

use super::*;
use crate::nt::file::PoolBuf;
use core::sync::atomic::AtomicBool;

/// cloudflt's open-reparse entry: placeholders open as themselves for every caller, with
/// no STATUS_REPARSE; other tags are untouched (the entry names only cloudflt's tag and
/// GUID, and flags 0 mean "never reparse on it").
fn open_reparse_entry() -> OPEN_REPARSE_LIST_ENTRY {
    OPEN_REPARSE_LIST_ENTRY {
        OpenReparseListEntry: LIST_ENTRY {
            Flink: core::ptr::null_mut(),
            Blink: core::ptr::null_mut(),
        },
        ReparseTag: cloudflt_proto::reparse::TAG,
        Flags: 0,
        ReparseGuid: crate::nt::file::reparse_guid(),
        Size: core::mem::size_of::<OPEN_REPARSE_LIST_ENTRY>() as u16,
        RemainingLength: 0,
    }
}

/// What a create carries from its pre- to its post-operation, in pool: cloudflt's
/// open-reparse entry (first: its address is what FltMgr links), and for an overwrite or
/// supersede of a placeholder the reparse data it had, to make the new file a placeholder
/// again.
#[repr(C)]
struct CreateContext {
    entry: OPEN_REPARSE_LIST_ENTRY,
    overwritten: Option<(PoolBuf, usize)>,
}

/// CreateDisposition values that replace an existing file's data and attributes (NTFS
/// drops its reparse point with them).
const FILE_SUPERSEDE: u32 = 0;
const FILE_OVERWRITE: u32 = 4;
const FILE_OVERWRITE_IF: u32 = 5;
/// IO_STATUS_BLOCK.Information of a create that replaced a file.
const FILE_SUPERSEDED: usize = 0;
const FILE_OVERWRITTEN: usize = 3;

/// For a create that would overwrite or supersede a file in a connected sync root: the
/// file's reparse data if it is a placeholder (read through an open of its own, on the
/// reparse point, asking only to read attributes, so it meets no sharing conflict).
fn placeholder_about_to_be_replaced(
    data: *mut FLT_CALLBACK_DATA,
    objects: &FLT_RELATED_OBJECTS,
) -> Option<(PoolBuf, usize)> {
    // SAFETY: live callback data.
    let data_ref = unsafe { data.as_ref() }?;
    // SAFETY: its parameter block, valid during the operation.
    let iopb = unsafe { data_ref.Iopb.cast::<FLT_IO_PARAMETER_BLOCK>().as_ref() }?;
    // SAFETY: IRP_MJ_CREATE: the union holds the create parameters.
    let options = unsafe { iopb.Parameters.Create.Options };
    let disposition = options >> 24;
    if ![FILE_SUPERSEDE, FILE_OVERWRITE, FILE_OVERWRITE_IF].contains(&disposition) {
        return None;
    }
    let name = NameInfo::normalized(data).ok()?;
    providers::for_path(name.units())?;
    let file = OwnedFile::open(
        objects.Filter,
        objects.Instance,
        name.units(),
        FILE_READ_ATTRIBUTES,
        FILE_OPEN,
        Kind::File,
        0,
    )
    .ok()?;
    let (buffer, len) = file.reparse_point().ok()??;
    let placeholder =
        cloudflt_proto::Placeholder::decode_reparse(buffer.as_slice().get(..len)?).ok()?;
    (!placeholder
        .flags
        .contains(cloudflt_proto::PlaceholderFlags::DIRECTORY))
    .then_some((buffer, len))
}

/// FILE_OPEN_REPARSE_POINT, as a create option.
const FILE_OPEN_REPARSE_POINT_OPTION: u32 = 0x0020_0000;

/// FILE_OPEN_BY_FILE_ID: the create names a file id, not a path.
const FILE_OPEN_BY_FILE_ID: u32 = 0x2000;
/// KPROCESSOR_MODE KernelMode.
const KERNEL_MODE: i8 = 0;

/// Issue 15: an open (or create) of a name beneath a directory that is not populated
/// yet, in a root populated on demand, first has the provider populate the directories
/// on its way (`populate::ensure_path`), in the requestor's thread: `Some(status)` to
/// fail the create with (the population failed; no provider is connected:
/// STATUS_CLOUD_FILE_PROVIDER_NOT_RUNNING).
///
/// Not for kernel-mode creates (the driver's own opens, issued at the top of the stack,
/// and other components' — which run in system threads that must not wait on user
/// mode), opens by file id (no name to be beneath anything), the System process or a
/// provider (whose own operations never populate).
fn populate_beneath(
    data: *mut FLT_CALLBACK_DATA,
    objects: &FLT_RELATED_OBJECTS,
) -> Option<NTSTATUS> {
    if roots::none_registered() {
        return None;
    }
    // SAFETY: live callback data.
    let d = unsafe { data.as_ref() }?;
    if d.RequestorMode == KERNEL_MODE {
        return None;
    }
    // SAFETY: its parameter block, valid during the operation.
    let iopb = unsafe { d.Iopb.cast::<FLT_IO_PARAMETER_BLOCK>().as_ref() }?;
    // SAFETY: IRP_MJ_CREATE: the union holds the create parameters.
    let options = unsafe { iopb.Parameters.Create.Options };
    if options & FILE_OPEN_BY_FILE_ID != 0 {
        return None;
    }
    if !may_lie_in_a_root(iopb.TargetFileObject) {
        return None;
    }
    // SAFETY: live callback data.
    let pid = unsafe { FltGetRequestorProcessId(data) };
    if pid == crate::engine::visibility::SYSTEM_PID {
        return None;
    }
    let name = NameInfo::opened(data).ok()?;
    let units = name.units();
    // `dir\` names `dir` itself.
    let end = units
        .iter()
        .rposition(|u| *u != u16::from(b'\\'))
        .map_or(0, |i| i + 1);
    let target = units.get(..end)?;
    let population = roots::policies(target)?.population;
    if population != cloudflt_proto::PopulationPolicy::Full {
        return None;
    }
    let result = match providers::for_path(target) {
        // The root's own provider: its operations never populate. (The provider of
        // another root is an application here.)
        Some(provider) if provider.pid == pid as usize => return None,
        Some(provider) => crate::nt::populate::ensure_path(
            &provider,
            objects.Instance,
            target,
            crate::nt::populate::Asking { data, pid },
        ),
        None => {
            let cut = target.iter().rposition(|u| *u == u16::from(b'\\'))?;
            let parent = target.get(..cut)?;
            roots::root_of(parent)?;
            super::dir_control::unpopulated_without_provider(objects, parent)
        }
    };
    result.err()
}

/// Whether the file object of a create may name something in a registered root, by its
/// FileName alone (no name query): `roots::may_lie_in_a_root`. A name relative to
/// another open (RelatedFileObject) cannot be judged so: yes.
fn may_lie_in_a_root(file_object: *const windows_sys::Wdk::Foundation::FILE_OBJECT) -> bool {
    // SAFETY: the create's file object, valid during the create; its FileName and
    // RelatedFileObject are the I/O manager's for the length of the create.
    let Some(fo) = (unsafe { file_object.as_ref() }) else {
        return true;
    };
    if !fo.RelatedFileObject.is_null() || fo.FileName.Buffer.is_null() {
        return true;
    }
    // SAFETY: Length bytes at Buffer, per UNICODE_STRING.
    let name = unsafe {
        core::slice::from_raw_parts(fo.FileName.Buffer, usize::from(fo.FileName.Length) / 2)
    };
    roots::may_lie_in_a_root(name)
}

/// PreOperation of CREATE: adds cloudflt's open-reparse entry, so NTFS opens a
/// placeholder instead of returning STATUS_REPARSE.
///
/// FltAddOpenReparseEntry links the caller's entry itself into the create's ECP list; the
/// file system reads it, and sets OPEN_REPARSE_POINT_TAG_ENCOUNTERED in it, after this
/// frame is gone, and FltRemoveOpenReparseEntry takes the same pointer. So the entry lives
/// in pool for the length of the create: it is the completion context, and
/// [`post_create`], which FltMgr calls for every FLT_PREOP_SUCCESS_WITH_CALLBACK (when it
/// drains the instance too), removes and frees it.
///
/// # Safety
/// Called by FltMgr with valid callback data.
pub(crate) unsafe extern "system" fn pre_create(
    data: *mut FLT_CALLBACK_DATA,
    objects: *const FLT_RELATED_OBJECTS,
    completion_context: *mut *mut core::ffi::c_void,
) -> FLT_PREOP_CALLBACK_STATUS {
    // SAFETY: FltMgr passes valid related objects for the duration of the call.
    let Some(objects) = (unsafe { objects.as_ref() }) else {
        return FLT_PREOP_SUCCESS_WITH_CALLBACK;
    };
    if let Some(status) = populate_beneath(data, objects) {
        // SAFETY: FltMgr's live callback data, ours to complete in the pre-operation.
        if let Some(d) = unsafe { data.as_mut() } {
            return complete(d, status);
        }
    }
    let overwritten = placeholder_about_to_be_replaced(data, objects);
    let context = CreateContext {
        entry: open_reparse_entry(),
        overwritten,
    };
    let Some(entry) = PoolBox::try_new(context, TAG_OPEN_REPARSE) else {
        // No pool for the entry: the create goes down as if the driver had added none,
        // which is how it goes without the driver. An open that meets a placeholder then
        // stops at it with STATUS_REPARSE on cloudflt's tag, which the I/O manager has no
        // handler for, so the caller's open fails with STATUS_IO_REPARSE_TAG_NOT_HANDLED
        // (a retry can succeed once pool is back); opens that meet no placeholder are not
        // affected.
        return FLT_PREOP_SUCCESS_WITH_CALLBACK;
    };
    let entry = PoolBox::into_raw(entry);
    // SAFETY: a pre-create at PASSIVE_LEVEL; `entry` is a pool allocation that stays valid
    // until post_create (or the failure paths below) removes and frees it.
    let status = unsafe { FltAddOpenReparseEntry(objects.Filter, data, entry.as_ptr().cast()) };
    if !nt_success(status) {
        debug_print!("cloudflt: FltAddOpenReparseEntry failed with {status:#010x}");
        // SAFETY: from `into_raw` above with this tag; FltMgr did not link it.
        drop(unsafe { PoolBox::from_raw(entry, TAG_OPEN_REPARSE) });
        return FLT_PREOP_SUCCESS_WITH_CALLBACK;
    }
    // SAFETY: FltMgr's completion-context slot for this pre-operation (NULL-checked).
    match unsafe { completion_context.as_mut() } {
        Some(slot) => *slot = entry.as_ptr().cast(),
        // No slot would mean no way to reach the entry in post-create: unlinked and freed
        // now, the create goes on as if none had been added (see above).
        None => drop(release_open_reparse_entry(objects, data, entry).overwritten),
    }
    FLT_PREOP_SUCCESS_WITH_CALLBACK
}

/// What a create's open-reparse entry told once it was taken out.
struct Released {
    /// The reparse data of a placeholder the create overwrote.
    overwritten: Option<(PoolBuf, usize)>,
    /// The file system met cloudflt's tag on the way (OPEN_REPARSE_POINT_TAG_ENCOUNTERED).
    encountered: bool,
}

/// OPEN_REPARSE_LIST_ENTRY.Flags: the file system met the entry's tag.
const OPEN_REPARSE_POINT_TAG_ENCOUNTERED: u32 = 0x1;

/// Takes cloudflt's open-reparse entry out of its create and frees the create's
/// context; what it carried for an overwrite, and whether the tag was met, are returned.
fn release_open_reparse_entry(
    objects: &FLT_RELATED_OBJECTS,
    data: *const FLT_CALLBACK_DATA,
    entry: NonNull<CreateContext>,
) -> Released {
    // SAFETY: the entry pre_create added to this create for this filter (the context's
    // first field, `repr(C)`), at IRQL <= APC_LEVEL (pre- and post-create run at
    // PASSIVE_LEVEL, a draining post at <= APC_LEVEL).
    unsafe { FltRemoveOpenReparseEntry(objects.Filter, data, entry.as_ptr().cast()) };
    // SAFETY: from `PoolBox::into_raw` in pre_create with this tag; unlinked just now, so
    // nothing else can reach it.
    let mut context = unsafe { PoolBox::from_raw(entry, TAG_OPEN_REPARSE) };
    Released {
        overwritten: context.overwritten.take(),
        encountered: context.entry.Flags & OPEN_REPARSE_POINT_TAG_ENCOUNTERED != 0,
    }
}

/// PostOperation of CREATE: removes and frees the open-reparse entry pre_create added;
/// then a successful open of a file carrying cloudflt's tag gets the stream context its
/// reads need.
///
/// # Safety
/// Called by FltMgr with valid callback data.
pub(crate) unsafe extern "system" fn post_create(
    data: *mut FLT_CALLBACK_DATA,
    objects: *const FLT_RELATED_OBJECTS,
    completion_context: *const core::ffi::c_void,
    flags: u32,
) -> FLT_POSTOP_CALLBACK_STATUS {
    // SAFETY: FltMgr passes valid related objects for the call.
    let objects = unsafe { objects.as_ref() };
    // The entry goes on every path, draining included: FltMgr calls no other routine of
    // ours for this create, and the entry pins the filter (FltAddOpenReparseEntry
    // references it until the removal), so FltUnregisterFilter would wait on one left
    // linked. A draining post gets a copy of the callback data, which is what it passes
    // on. Without the related objects (FltMgr always passes them) the entry cannot be
    // unlinked, and a linked entry must not go back to pool, so it stays allocated.
    let entry = NonNull::new(completion_context.cast_mut().cast::<CreateContext>());
    let (overwritten, encountered) = match (entry, objects) {
        (Some(entry), Some(objects)) => {
            let released = release_open_reparse_entry(objects, data, entry);
            (released.overwritten, Some(released.encountered))
        }
        _ => (None, None),
    };
    if flags & FLTFL_POST_OPERATION_DRAINING != 0 {
        return FLT_POSTOP_FINISHED_PROCESSING;
    }
    let data_ptr = data;
    // SAFETY: FltMgr passes valid callback data for the call.
    let (Some(data), Some(objects)) = (unsafe { data.as_ref() }, objects) else {
        return FLT_POSTOP_FINISHED_PROCESSING;
    };
    // SAFETY: the status member of the completed operation.
    let status = unsafe { data.IoStatus.Anonymous.Status };
    if !nt_success(status) || status == STATUS_REPARSE || objects.FileObject.is_null() {
        return FLT_POSTOP_FINISHED_PROCESSING;
    }
    let fo = Fo {
        instance: objects.Instance,
        file_object: objects.FileObject,
    };
    if let Some((blob, len)) = &overwritten
        && matches!(
            data.IoStatus.Information,
            FILE_SUPERSEDED | FILE_OVERWRITTEN
        )
    {
        // NTFS dropped the reparse point with the old data: the file is made a
        // placeholder again, wholly local, modified, not in sync, with no fetch.
        if let Err(_status) = hydrate::overwritten(&fo, blob.as_slice().get(..*len).unwrap_or(&[]))
        {
            debug_print!("cloudflt: an overwritten placeholder stays ordinary: {_status:#010x}");
        }
    }
    // Whether the opened file can carry cloudflt's tag: the file system marks the entry
    // when it meets the tag, so an unmarked entry rules it out without a query — unless
    // the create opened the reparse point itself (FILE_OPEN_REPARSE_POINT), which a file
    // system may open without consulting the entry.
    // SAFETY: its parameter block, valid during the operation.
    let Some(iopb) = (unsafe { data.Iopb.cast::<FLT_IO_PARAMETER_BLOCK>().as_ref() }) else {
        return FLT_POSTOP_FINISHED_PROCESSING;
    };
    // SAFETY: IRP_MJ_CREATE: the union holds the create parameters.
    let options = unsafe { iopb.Parameters.Create.Options };
    let untagged = encountered == Some(false) && options & FILE_OPEN_REPARSE_POINT_OPTION == 0;
    // A failure leaves the file without context: its reads then find no placeholder
    // state and pass, which is what they did before the driver loaded.
    let stream = if untagged {
        // A stream that became a placeholder's while open keeps its context.
        stream::get(objects.Instance, objects.FileObject)
    } else {
        stream::attach(objects.Filter, fo).ok().flatten()
    };
    // Nothing of a root: an ordinary file or directory outside every registered root,
    // told by its name alone (no name query, no directory query). An open by file id
    // has no name to tell it by.
    if stream.is_none()
        && options & FILE_OPEN_BY_FILE_ID == 0
        && !may_lie_in_a_root(objects.FileObject)
    {
        return FLT_POSTOP_FINISHED_PROCESSING;
    }
    if stream.is_none() && !is_directory(&fo, options) {
        return FLT_POSTOP_FINISHED_PROCESSING;
    }
    if let Some(stream) = &stream
        && let Some(refused) = super::namespace::delete_on_close_refused(data, objects, stream)
    {
        // The provider refused the delete this open asks for: the open is undone with
        // its delete-on-close cleared, so nothing is deleted, and the create fails.
        let _ = fo.keep_on_close();
        // SAFETY: the instance and file object of this successful create, in its
        // post-operation at PASSIVE_LEVEL.
        unsafe {
            windows_sys::Wdk::Storage::FileSystem::Minifilters::FltCancelFileOpen(
                objects.Instance,
                objects.FileObject,
            )
        };
        // SAFETY: FltMgr's live callback data; its status is ours to set now.
        if let Some(d) = unsafe { data_ptr.as_mut() } {
            d.IoStatus.Anonymous.Status = refused;
            d.IoStatus.Information = 0;
        }
        return FLT_POSTOP_FINISHED_PROCESSING;
    }
    let counted = stream.is_some();
    if let Some(stream) = stream {
        stream::open_added(&stream);
    }
    let placeholder = counted;
    // The open's effective policy is fixed now (cfapi's rule): the provider's, as no
    // application policy exists yet. Its visibility too, in the requestor's context.
    let name = NameInfo::normalized(data).ok();
    let provider = name
        .as_ref()
        .and_then(|name| providers::for_path(name.units()));
    // The root's registered policies apply whether or not its provider is connected (a
    // FULL root stays FULL while its provider is away); a placeholder outside every
    // registered root has none.
    let registered = name.as_ref().and_then(|name| roots::policies(name.units()));
    // A directory of a root populated on demand that is not populated: its first listing
    // waits for the provider (issue 15), or fails while none is connected.
    let populate = !placeholder
        && registered.is_some_and(|r| r.population == cloudflt_proto::PopulationPolicy::Full)
        && name
            .as_ref()
            .is_some_and(|name| directory_unpopulated(&fo, name.units()));
    if !placeholder && provider.is_none() && !populate {
        // A directory outside every connected sync root: nothing to disguise in it.
        return FLT_POSTOP_FINISHED_PROCESSING;
    }
    let policy = registered
        .map(|r| r.hydration)
        .or_else(|| provider.as_ref().map(|p| p.hydration()));
    let in_sync = registered
        .map(|r| r.in_sync)
        .or_else(|| provider.as_ref().map(|p| p.in_sync()))
        .unwrap_or_default();
    let image = ImageName::of(data);
    let visibility = disguise::decide(data, image.units(), provider.as_ref().map(|p| p.pid));
    let notify_close = match (
        &provider,
        &name,
        &stream_of_placeholder(objects, placeholder),
    ) {
        (Some(provider), Some(name), Some(stream)) => {
            super::namespace::opened(data, provider, name.units(), stream, image.units())
        }
        _ => 0,
    };
    // SAFETY: live callback data.
    let pid = unsafe { FltGetRequestorProcessId(data_ptr) };
    let by_provider = provider.as_ref().is_some_and(|p| p.pid == pid as usize);
    drop(provider);
    let handle = crate::nt::context::StreamHandleContext {
        signature: 0,
        policy,
        in_sync,
        visibility,
        counted,
        notify_close,
        delete_on_close: AtomicBool::new(super::namespace::deletes_on_close(data)),
        populate: AtomicBool::new(populate),
        by_provider,
    };
    if stream::set_handle_context(objects.Filter, fo, handle).is_err() {
        debug_print!("cloudflt: no stream-handle context for an open");
    }
    FLT_POSTOP_FINISHED_PROCESSING
}

/// Whether the directory just opened as `fo` (normalized name `name`) is not populated:
/// the sync root by its registration, any other directory by its reparse data (read
/// only when it carries cloudflt's tag).
fn directory_unpopulated(fo: &Fo, name: &[u16]) -> bool {
    if let Some(populated) = roots::root_populated(name) {
        return !populated;
    }
    const FILE_ATTRIBUTE_REPARSE_POINT: u32 = 0x400;
    let ours = fo.attribute_tag().is_ok_and(|(attributes, tag)| {
        attributes & FILE_ATTRIBUTE_REPARSE_POINT != 0 && tag == cloudflt_proto::reparse::TAG
    });
    ours && fo
        .reparse_point()
        .ok()
        .flatten()
        .is_some_and(|(blob, len)| {
            crate::nt::populate::not_populated(blob.as_slice().get(..len).unwrap_or(&[]))
        })
}

/// The stream context of the placeholder file just opened (`None` for a directory or
/// an ordinary file).
fn stream_of_placeholder(objects: &FLT_RELATED_OBJECTS, placeholder: bool) -> Option<StreamRef> {
    if !placeholder {
        return None;
    }
    stream::get(objects.Instance, objects.FileObject)
}

/// Whether a successful create opened a directory: the opens that can list. A create
/// that said what it opens (FILE_DIRECTORY_FILE or FILE_NON_DIRECTORY_FILE in `options`)
/// only succeeds on that kind, so it is taken at its word; one that left both out is asked
/// of the file system.
fn is_directory(fo: &Fo, options: u32) -> bool {
    const FILE_DIRECTORY_FILE: u32 = 0x1;
    const FILE_NON_DIRECTORY_FILE: u32 = 0x40;
    if options & FILE_NON_DIRECTORY_FILE != 0 {
        return false;
    }
    if options & FILE_DIRECTORY_FILE != 0 {
        return true;
    }
    let mut directory = false;
    // SAFETY: the file object of a successful create, on `fo.instance`'s volume;
    // PASSIVE_LEVEL (post-create); a valid out pointer.
    let status = unsafe { FltIsDirectory(fo.file_object, fo.instance, &mut directory) };
    nt_success(status) && directory
}
