//! Placeholders on disk and in memory: the stream context built from the reparse data,
//! and the management requests providers send (create, convert, revert, hydrate,
//! dehydrate, pin, info), all done by the driver below its own instance.
//!
//! The reparse data read back from disk is untrusted: it is decoded by `proto`, which
//! checks every length, and a blob that does not decode makes the file's reads fail with
//! STATUS_CLOUD_FILE_METADATA_CORRUPT rather than return zeros.

use cloudflt_proto::msg::{self, ConvertFlags, PinState};
use cloudflt_proto::registration::HydrationModifiers;
use cloudflt_proto::{Placeholder, PlaceholderFlags, RangeList, reparse};
use windows_sys::Wdk::Storage::FileSystem::FILE_BASIC_INFORMATION;
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FltGetVolumeFromName, FltGetVolumeInstanceFromName, FltObjectDereference, PFLT_FILTER,
    PFLT_INSTANCE, PFLT_VOLUME,
};
use windows_sys::Win32::Foundation::{
    NTSTATUS, STATUS_CLOUD_FILE_CONNECTED_PROVIDER_ONLY, STATUS_CLOUD_FILE_DEHYDRATION_DISALLOWED,
    STATUS_CLOUD_FILE_IN_USE, STATUS_CLOUD_FILE_INCOMPATIBLE_HARDLINKS,
    STATUS_CLOUD_FILE_INSUFFICIENT_RESOURCES, STATUS_CLOUD_FILE_INVALID_REQUEST,
    STATUS_CLOUD_FILE_METADATA_CORRUPT, STATUS_CLOUD_FILE_NOT_IN_SYNC,
    STATUS_CLOUD_FILE_NOT_UNDER_SYNC_ROOT, STATUS_CLOUD_FILE_PINNED, STATUS_INVALID_PARAMETER,
    STATUS_OBJECT_NAME_INVALID, UNICODE_STRING,
};

use super::context::StreamContext;
use super::file::{Kind, OwnedFile, PoolBuf};
use super::hydrate::{self, MISSING_DATA_ATTRIBUTES, Target};
use super::providers::ProviderRef;
use super::reparse::encode_blob;
use super::roots;
use super::status::{STATUS_CLOUD_FILE_NOT_A_CLOUD_FILE, nt_success};
use super::stream::{StreamRef, attach};
use crate::engine::policy::{Policy, UNIT};
use crate::engine::ranges::Range;

/// FILE_ATTRIBUTE_* bits the driver manages.
const ATTRIBUTE_DIRECTORY: u32 = 0x10;
const ATTRIBUTE_REPARSE: u32 = 0x400;
const ATTRIBUTE_PINNED: u32 = 0x0008_0000;
const ATTRIBUTE_UNPINNED: u32 = 0x0010_0000;
/// What a provider may set on a placeholder it creates.
const PROVIDER_ATTRIBUTES: u32 = 0x1 | 0x2 | 0x4 | 0x20 | 0x2000; // RO, HIDDEN, SYSTEM, ARCHIVE, NOT_CONTENT_INDEXED

/// A file under a provider's root, opened by the driver for a management request. Fields
/// drop in order: the file, then its path, then the instance reference it was opened on.
struct Managed {
    file: OwnedFile,
    path: PoolBuf,
    path_len: usize,
    _volume: VolumeInstance,
}

impl Managed {
    fn path(&self) -> &[u16] {
        let bytes = self.path.as_slice();
        // SAFETY: the buffer is pool memory (16-byte aligned) of an even length.
        let units =
            unsafe { core::slice::from_raw_parts(bytes.as_ptr().cast::<u16>(), bytes.len() / 2) };
        units.get(..self.path_len).unwrap_or(&[])
    }

    fn target<'a>(&'a self, stream: &'a StreamContext, provider: &ProviderRef) -> Target<'a> {
        Target {
            stream,
            name: self.path(),
            requestor_pid: u32::try_from(provider.pid).unwrap_or(0),
            requestor_image: &[],
            data: core::ptr::null(),
            file_object: 0,
        }
    }
}

/// The instance of this filter on the volume `path` (an NT path) is on, referenced.
pub(crate) struct VolumeInstance {
    volume: PFLT_VOLUME,
    pub(crate) instance: PFLT_INSTANCE,
}

impl VolumeInstance {
    pub(crate) fn of(filter: PFLT_FILTER, path: &[u16]) -> Result<Self, NTSTATUS> {
        // `\Device\Name\...`: the volume is the first two components.
        let mut separators = 0;
        let end = path
            .iter()
            .position(|u| {
                if *u == u16::from(b'\\') {
                    separators += 1;
                }
                separators == 3
            })
            .unwrap_or(path.len());
        let device = path.get(..end).ok_or(STATUS_INVALID_PARAMETER)?;
        let bytes = u16::try_from(device.len() * 2).map_err(|_| STATUS_INVALID_PARAMETER)?;
        let name = UNICODE_STRING {
            Length: bytes,
            MaximumLength: bytes,
            // Only read by the call.
            Buffer: device.as_ptr().cast_mut(),
        };
        let mut volume: PFLT_VOLUME = 0;
        // SAFETY: the registered filter; the name outlives the call; PASSIVE_LEVEL.
        let status = unsafe { FltGetVolumeFromName(filter, &name, &mut volume) };
        if !nt_success(status) {
            return Err(STATUS_CLOUD_FILE_INVALID_REQUEST);
        }
        let mut instance: PFLT_INSTANCE = 0;
        // SAFETY: the volume just referenced; NULL instance name; a valid out pointer.
        let status = unsafe {
            FltGetVolumeInstanceFromName(filter, volume, core::ptr::null(), &mut instance)
        };
        if !nt_success(status) {
            // SAFETY: the reference FltGetVolumeFromName gave, dropped once.
            unsafe { FltObjectDereference(volume as *mut core::ffi::c_void) };
            return Err(STATUS_CLOUD_FILE_INVALID_REQUEST);
        }
        Ok(Self { volume, instance })
    }
}

impl Drop for VolumeInstance {
    fn drop(&mut self) {
        // SAFETY: the instance reference `of` took, dropped once.
        unsafe { FltObjectDereference(self.instance as *mut core::ffi::c_void) };
        // SAFETY: the volume reference `of` took, dropped once.
        unsafe { FltObjectDereference(self.volume as *mut core::ffi::c_void) };
    }
}

const FILE_READ_ATTRIBUTES: u32 = 0x80;
const FILE_WRITE_ATTRIBUTES: u32 = 0x100;
const FILE_WRITE_DATA: u32 = 0x2;
const DELETE: u32 = 0x0001_0000;
const FILE_OPEN: u32 = 1;
const FILE_CREATE: u32 = 2;

/// Opens `relative` (a path under the provider's root) below cloudflt.
fn open_managed(
    provider: &ProviderRef,
    relative: cloudflt_proto::Utf16<'_>,
    access: u32,
    disposition: u32,
    kind: Kind,
    attributes: u32,
) -> Result<Managed, NTSTATUS> {
    let filter = crate::nt::driver::filter().ok_or(STATUS_CLOUD_FILE_INVALID_REQUEST)?;
    let root = provider.root();
    let relative_len = checked_relative(relative.units())?;
    let path_len = root.len().saturating_add(1).saturating_add(relative_len);
    let mut path = PoolBuf::zeroed(path_len * 2).ok_or(STATUS_CLOUD_FILE_INSUFFICIENT_RESOURCES)?;
    let units = root
        .iter()
        .copied()
        .chain(core::iter::once(u16::from(b'\\')))
        .chain(relative.units());
    for (chunk, unit) in path.as_mut_slice().chunks_exact_mut(2).zip(units) {
        super::file::copy(chunk, &unit.to_le_bytes());
    }
    let volume = VolumeInstance::of(filter, root)?;
    let bytes = path.as_slice();
    // SAFETY: pool memory, 16-byte aligned, `path_len` units long.
    let name = unsafe { core::slice::from_raw_parts(bytes.as_ptr().cast::<u16>(), path_len) };
    let file = OwnedFile::open(
        filter,
        volume.instance,
        name,
        access,
        disposition,
        kind,
        attributes,
    )?;
    Ok(Managed {
        file,
        path,
        path_len,
        _volume: volume,
    })
}

/// A full NT path a management client names, in pool memory.
struct PathBuffer {
    units: PoolBuf,
    len: usize,
}

impl PathBuffer {
    /// `path` copied, if it is absolute (`\Device\Volume\...`) with no empty, `.` or
    /// `..` component (which would let a path that looks under one root open a file
    /// elsewhere): STATUS_OBJECT_NAME_INVALID otherwise.
    fn of(path: cloudflt_proto::Utf16<'_>) -> Result<Self, NTSTATUS> {
        let mut units = path.units();
        if units.next() != Some(u16::from(b'\\')) {
            return Err(STATUS_OBJECT_NAME_INVALID);
        }
        let len = checked_relative(units)
            .map_err(|_| STATUS_OBJECT_NAME_INVALID)?
            .saturating_add(1);
        let mut buffer = PoolBuf::zeroed(len.saturating_mul(2))
            .ok_or(STATUS_CLOUD_FILE_INSUFFICIENT_RESOURCES)?;
        for (chunk, unit) in buffer.as_mut_slice().chunks_exact_mut(2).zip(path.units()) {
            super::file::copy(chunk, &unit.to_le_bytes());
        }
        Ok(Self { units: buffer, len })
    }

    /// A copy of a name FltMgr gave (a normalized name: absolute, no `.` or `..`).
    fn copy(units: &[u16]) -> Result<Self, NTSTATUS> {
        let mut buffer = PoolBuf::zeroed(units.len().saturating_mul(2))
            .ok_or(STATUS_CLOUD_FILE_INSUFFICIENT_RESOURCES)?;
        for (chunk, unit) in buffer.as_mut_slice().chunks_exact_mut(2).zip(units) {
            super::file::copy(chunk, &unit.to_le_bytes());
        }
        Ok(Self {
            units: buffer,
            len: units.len(),
        })
    }

    fn units(&self) -> &[u16] {
        let bytes = self.units.as_slice();
        // SAFETY: pool memory (16-byte aligned) of an even length, `len` units long.
        let units =
            unsafe { core::slice::from_raw_parts(bytes.as_ptr().cast::<u16>(), bytes.len() / 2) };
        units.get(..self.len).unwrap_or(&[])
    }

    /// Opens the file below the driver's instance (the caller's rights were checked
    /// before), as a provider's requests are.
    fn open(self, filter: PFLT_FILTER, access: u32, kind: Kind) -> Result<Managed, NTSTATUS> {
        let volume = VolumeInstance::of(filter, self.units())?;
        let file = OwnedFile::open(
            filter,
            volume.instance,
            self.units(),
            access,
            FILE_OPEN,
            kind,
            0,
        )?;
        Ok(Managed {
            file,
            path: self.units,
            path_len: self.len,
            _volume: volume,
        })
    }
}

/// A reply payload: the bytes to return (GET_INFO) or none.
pub(crate) type Payload = Option<(PoolBuf, usize)>;

fn pin_attributes(flags: PlaceholderFlags) -> u32 {
    if flags.contains(PlaceholderFlags::PINNED) {
        ATTRIBUTE_PINNED
    } else if flags.contains(PlaceholderFlags::UNPINNED) {
        ATTRIBUTE_UNPINNED
    } else {
        0
    }
}

/// CREATE_PLACEHOLDER: a new file (sparse, its size, the provider's times and attributes,
/// OFFLINE + RECALL_ON_DATA_ACCESS while empty) or directory, tagged with its blob. Under
/// ALWAYS_FULL the file is then hydrated before the request completes.
pub(crate) fn create(
    provider: &ProviderRef,
    m: &msg::CreatePlaceholder<'_>,
) -> Result<(), NTSTATUS> {
    let new = NewPlaceholder {
        file_size: m.file_size,
        basic: m.basic,
        flags: m.flags,
        identity: m.identity,
    };
    let managed = open_managed(
        provider,
        m.path,
        CREATE_ACCESS,
        FILE_CREATE,
        new.kind(),
        new.attributes(),
    )?;
    make(provider, &managed, &new)
}

/// What a new placeholder is made of (a CREATE_PLACEHOLDER's, or a population entry's).
pub(crate) struct NewPlaceholder<'a> {
    pub(crate) file_size: u64,
    pub(crate) basic: msg::BasicInfo,
    pub(crate) flags: PlaceholderFlags,
    pub(crate) identity: &'a [u8],
}

impl NewPlaceholder<'_> {
    fn kind(&self) -> Kind {
        if self.flags.contains(PlaceholderFlags::DIRECTORY) {
            Kind::Directory
        } else {
            Kind::File
        }
    }

    /// The attributes the provider may set.
    fn attributes(&self) -> u32 {
        self.basic.attributes & PROVIDER_ATTRIBUTES
    }
}

/// What a new placeholder is created with.
const CREATE_ACCESS: u32 = FILE_READ_ATTRIBUTES | FILE_WRITE_ATTRIBUTES | FILE_WRITE_DATA | DELETE;

/// A population's entry (issue 15): `name`, one component, created in the directory open
/// as `directory` (whose normalized name is `directory_name`) relative to that open, so
/// that it lands in that directory wherever it is now.
pub(crate) fn create_in(
    provider: &ProviderRef,
    directory: &OwnedFile,
    directory_name: &[u16],
    name: &[u16],
    new: &NewPlaceholder<'_>,
) -> Result<(), NTSTATUS> {
    let filter = crate::nt::driver::filter().ok_or(STATUS_CLOUD_FILE_INVALID_REQUEST)?;
    let volume = VolumeInstance::of(filter, provider.root())?;
    let file = OwnedFile::open_in(
        filter,
        volume.instance,
        directory,
        name,
        CREATE_ACCESS,
        FILE_CREATE,
        new.kind(),
        new.attributes(),
    )?;
    // Its full name, for the fetch an ALWAYS_FULL root makes at once.
    let path_len = directory_name
        .len()
        .saturating_add(1)
        .saturating_add(name.len());
    let mut path = PoolBuf::zeroed(path_len * 2).ok_or(STATUS_CLOUD_FILE_INSUFFICIENT_RESOURCES)?;
    let units = directory_name
        .iter()
        .copied()
        .chain(core::iter::once(u16::from(b'\\')))
        .chain(name.iter().copied());
    for (chunk, unit) in path.as_mut_slice().chunks_exact_mut(2).zip(units) {
        super::file::copy(chunk, &unit.to_le_bytes());
    }
    let managed = Managed {
        file,
        path,
        path_len,
        _volume: volume,
    };
    make(provider, &managed, new)
}

/// Makes the file just created as `managed` the placeholder `new` describes: sparse, its
/// size, the provider's times and attributes, OFFLINE + RECALL_ON_DATA_ACCESS while empty,
/// tagged with its blob; deleted again if any of it fails. Under ALWAYS_FULL the file is
/// then hydrated.
fn make(
    provider: &ProviderRef,
    managed: &Managed,
    new: &NewPlaceholder<'_>,
) -> Result<(), NTSTATUS> {
    let m = new;
    let directory = m.flags.contains(PlaceholderFlags::DIRECTORY);
    let always_full = provider.hydration() == Policy::AlwaysFull;
    let mut flags = m.flags;
    if always_full {
        flags = flags.union(PlaceholderFlags::ALWAYS_FULL);
    }
    let size = if directory { 0 } else { m.file_size };
    let attributes = new.attributes();
    let file = &managed.file;
    let made = (|| {
        if !directory {
            file.set_sparse()?;
            file.set_end_of_file(size)?;
        }
        let (blob, len) = encode_blob(flags, size, m.identity, RangeList::EMPTY)?;
        file.tag(blob.as_slice().get(..len).unwrap_or(&[]))?;
        let missing = if !directory && size > 0 {
            MISSING_DATA_ATTRIBUTES
        } else {
            0
        };
        let wanted = attributes
            | missing
            | pin_attributes(flags)
            | if directory { ATTRIBUTE_DIRECTORY } else { 0 };
        file.set_basic(&FILE_BASIC_INFORMATION {
            CreationTime: m.basic.creation_time.max(0),
            LastAccessTime: m.basic.last_access_time.max(0),
            LastWriteTime: m.basic.last_write_time.max(0),
            ChangeTime: m.basic.change_time.max(0),
            FileAttributes: if wanted == 0 { 0x80 } else { wanted },
        })
    })();
    if let Err(status) = made {
        // Nothing half-made stays behind.
        let _ = file.delete_on_close();
        return Err(status);
    }
    if always_full && !directory && size > 0 {
        hydrate_all(provider, managed, size)?;
    }
    Ok(())
}

/// Fetches all of a placeholder the driver has open.
fn hydrate_all(provider: &ProviderRef, managed: &Managed, size: u64) -> Result<(), NTSTATUS> {
    let filter = crate::nt::driver::filter().ok_or(STATUS_CLOUD_FILE_INVALID_REQUEST)?;
    let stream = attach(filter, *managed.file)?.ok_or(STATUS_CLOUD_FILE_NOT_A_CLOUD_FILE)?;
    let status = hydrate::ensure_range(
        &managed.target(&stream, provider),
        Range {
            start: 0,
            end: size,
        },
    );
    if nt_success(status) {
        Ok(())
    } else {
        Err(status)
    }
}

/// CONVERT: an ordinary file becomes a placeholder holding all its data (or none, with
/// DEHYDRATE).
pub(crate) fn convert(provider: &ProviderRef, m: &msg::Convert<'_>) -> Result<(), NTSTATUS> {
    let managed = open_managed(
        provider,
        m.path,
        FILE_READ_ATTRIBUTES | FILE_WRITE_ATTRIBUTES | FILE_WRITE_DATA,
        FILE_OPEN,
        Kind::File,
        0,
    )?;
    let file = &managed.file;
    let (attributes, tag) = file.attribute_tag()?;
    if attributes & ATTRIBUTE_REPARSE != 0 || tag != 0 {
        // Already a placeholder, or another reparse point (they cannot coexist).
        return Err(STATUS_CLOUD_FILE_INVALID_REQUEST);
    }
    let size = file.size()?;
    let always_full = provider.hydration() == Policy::AlwaysFull;
    let dehydrate = m.flags.contains(ConvertFlags::DEHYDRATE);
    if dehydrate && always_full {
        return Err(STATUS_CLOUD_FILE_DEHYDRATION_DISALLOWED);
    }
    // A file with other names becomes a placeholder only where the root allows hard
    // links, and never a dehydrated one: a name may lie outside every root (see
    // `drop_range`).
    if file.links()? > 1 {
        let allowed = roots::policies(managed.path()).is_some_and(|p| {
            p.hard_links
                .contains(cloudflt_proto::registration::HardLinkPolicy::ALLOWED)
        });
        if !allowed || dehydrate {
            return Err(STATUS_CLOUD_FILE_INCOMPATIBLE_HARDLINKS);
        }
    }
    let mut flags = PlaceholderFlags::EMPTY;
    if m.flags.contains(ConvertFlags::IN_SYNC) {
        flags = flags.union(PlaceholderFlags::IN_SYNC);
    }
    if always_full {
        flags = flags.union(PlaceholderFlags::ALWAYS_FULL);
    }
    file.set_sparse()?;
    let whole = [cloudflt_proto::ByteRange::new(0, size)];
    let ranges = if dehydrate || size == 0 {
        RangeList::EMPTY
    } else {
        RangeList::from_slice(&whole)
    };
    let (blob, len) = encode_blob(flags, size, m.identity, ranges)?;
    file.tag(blob.as_slice().get(..len).unwrap_or(&[]))?;
    if dehydrate && size > 0 {
        file.zero_range(0, size)?;
        file.change_attributes(0, MISSING_DATA_ATTRIBUTES)?;
    }
    // Opens that exist already see the placeholder from now on.
    if let Some(filter) = crate::nt::driver::filter() {
        drop(attach(filter, **file)?);
    }
    Ok(())
}

/// REVERT: a fully hydrated placeholder becomes an ordinary file.
pub(crate) fn revert(provider: &ProviderRef, m: &msg::Revert<'_>) -> Result<(), NTSTATUS> {
    let managed = open_managed(
        provider,
        m.path,
        FILE_READ_ATTRIBUTES | FILE_WRITE_ATTRIBUTES | FILE_WRITE_DATA,
        FILE_OPEN,
        Kind::File,
        0,
    )?;
    let filter = crate::nt::driver::filter().ok_or(STATUS_CLOUD_FILE_INVALID_REQUEST)?;
    let stream = attach(filter, *managed.file)?.ok_or(STATUS_CLOUD_FILE_NOT_A_CLOUD_FILE)?;
    revert_open(&managed.file, &stream)
}

/// A placeholder that left every sync root (a rename out, issue 14) becomes an ordinary
/// file: opened by its id below the driver, reverted as REVERT does (so only if all of
/// its data is present). PASSIVE_LEVEL.
pub(crate) fn revert_moved_out(stream: &StreamContext) -> Result<(), NTSTATUS> {
    let filter = crate::nt::driver::filter().ok_or(STATUS_CLOUD_FILE_INVALID_REQUEST)?;
    // Reverted already: another rename out of the same file got there first.
    if !hydrate::with_held(|held| stream.with_state(held, |s| s.is_placeholder())) {
        return Ok(());
    }
    let file = OwnedFile::open_by_id(
        filter,
        stream.instance,
        stream.file_id,
        FILE_READ_ATTRIBUTES | FILE_WRITE_ATTRIBUTES | FILE_WRITE_DATA,
    )?;
    revert_open(&file, stream)
}

/// Reverts the placeholder open as `file` with stream `stream`: refused while it is
/// being filled or edited (IN_USE), corrupt (METADATA_CORRUPT) or not all present
/// (INVALID_REQUEST: reverting would turn the missing data into zeros).
fn revert_open(file: &OwnedFile, stream: &StreamContext) -> Result<(), NTSTATUS> {
    if hydrate::busy(stream) {
        return Err(STATUS_CLOUD_FILE_IN_USE);
    }
    let (corrupt, full) = hydrate::with_held(|held| {
        stream.with_state(held, |s| {
            (
                s.is_corrupt(),
                s.present.contains(Range {
                    start: 0,
                    end: s.file_size,
                }),
            )
        })
    });
    if corrupt {
        return Err(STATUS_CLOUD_FILE_METADATA_CORRUPT);
    }
    if !full {
        // Reverting would turn the missing data into zeros.
        return Err(STATUS_CLOUD_FILE_INVALID_REQUEST);
    }
    match file.untag() {
        Ok(()) => {}
        // Another revert of the same file (two renames out at once) took the tag first:
        // the file is what this one would make it.
        Err(windows_sys::Win32::Foundation::STATUS_NOT_A_REPARSE_POINT) => {}
        Err(status) => return Err(status),
    }
    hydrate::with_held(|held| stream.with_state(held, |s| s.revert()));
    file.change_attributes(
        MISSING_DATA_ATTRIBUTES | ATTRIBUTE_PINNED | ATTRIBUTE_UNPINNED,
        0,
    )?;
    Ok(())
}

/// The range a HYDRATE / DEHYDRATE names (length 0 = to end of file), clipped to the file.
fn op_range(range: cloudflt_proto::ByteRange, size: u64) -> Range {
    let end = if range.length == 0 {
        size
    } else {
        range.offset.saturating_add(range.length).min(size)
    };
    Range {
        start: range.offset.min(size),
        end,
    }
}

/// Opens a placeholder and its stream context for a provider's range request.
fn open_placeholder(
    provider: &ProviderRef,
    path: cloudflt_proto::Utf16<'_>,
    access: u32,
) -> Result<(Managed, StreamRef), NTSTATUS> {
    let managed = open_managed(provider, path, access, FILE_OPEN, Kind::File, 0)?;
    let filter = crate::nt::driver::filter().ok_or(STATUS_CLOUD_FILE_INVALID_REQUEST)?;
    let stream = attach(filter, *managed.file)?.ok_or(STATUS_CLOUD_FILE_NOT_A_CLOUD_FILE)?;
    Ok((managed, stream))
}

/// HYDRATE: fetches a range now; returns once it is on disk, with the blob as it is
/// then (the provider learns the file's change counter).
pub(crate) fn hydrate(provider: &ProviderRef, m: &msg::Hydrate<'_>) -> Result<Payload, NTSTATUS> {
    let (managed, stream) = open_placeholder(provider, m.path, FILE_READ_ATTRIBUTES)?;
    let size = hydrate::with_held(|held| stream.with_state(held, |s| s.file_size));
    let range = op_range(m.range, size);
    let status = hydrate::ensure_range(&managed.target(&stream, provider), range);
    if nt_success(status) {
        blob_payload(&managed.file)
    } else {
        Err(status)
    }
}

/// What a dehydration opens its file with.
const DEHYDRATE_ACCESS: u32 = FILE_READ_ATTRIBUTES | FILE_WRITE_ATTRIBUTES | FILE_WRITE_DATA;

/// DEHYDRATE: drops the whole 4 KiB units of a range (the tail unit too when the range
/// reaches end of file), unless the file is pinned, always full, or being filled.
pub(crate) fn dehydrate(provider: &ProviderRef, m: &msg::Dehydrate<'_>) -> Result<(), NTSTATUS> {
    let (managed, stream) = open_placeholder(provider, m.path, DEHYDRATE_ACCESS)?;
    dehydrate_open(&managed, &stream, provider.hydration(), m.range, 0)
}

/// DEHYDRATE_BY_PATH: a dehydration asked for by a process other than the provider
/// (cfapi's CfDehydratePlaceholder from an application or the system), in that
/// process's context. Allowed only under a root registered with
/// AUTO_DEHYDRATION_ALLOWED ("without this flag, the platform is not allowed to call
/// CfDehydratePlaceholder directly"; STATUS_CLOUD_FILE_DEHYDRATION_DISALLOWED), on a file
/// the caller may see ([`security::may_see`]); then as the provider's own, which keeps
/// it to in-sync files with nothing modified ("on any in-sync cloud file placeholder"),
/// so it never drops a byte the cloud does not hold. No provider need be connected: the
/// platform dehydrates "without the help of sync providers".
///
/// [`security::may_see`]: super::security::may_see
pub(crate) fn dehydrate_by_path(
    filter: PFLT_FILTER,
    m: &msg::DehydrateByPath<'_>,
) -> Result<(), NTSTATUS> {
    dehydrate_for_user(filter, PathBuffer::of(m.path)?, m.range, 0, false)
}

/// A user's "Free up space": FILE_ATTRIBUTE_UNPINNED newly set on the placeholder file
/// `name` by a process other than a provider (post-operation of the SET_INFORMATION, in
/// that process's thread). cfapi: "without [AUTO_DEHYDRATION_ALLOWED] … the only
/// supported way to dehydrate a cloud file placeholder is to clear the file's pinned
/// attribute and set the file's unpinned attribute. At that point, the actual
/// dehydration will be performed asynchronously by the sync engine"; with it "the
/// platform [may] dehydrate in-sync cloud file placeholders without the help of sync
/// providers". So under AUTO_DEHYDRATION_ALLOWED the driver dehydrates the whole file
/// as a dehydration that process asked for ([`dehydrate_by_path`]: in sync and
/// unmodified only, put to the provider first when it asked for NOTIFY_DEHYDRATE).
/// Without the modifier it does so only with the provider's help: when the connected
/// provider asked for NOTIFY_DEHYDRATE, it is asked (a user's request, USER_MANUAL) and
/// its ACK_DEHYDRATE allowing it is its consent; otherwise the attribute is all that
/// changes and the sync engine acts on it as cfapi says.
/// What refuses the dehydration (not in sync, modified, vetoed, in use) leaves the file
/// whole and is returned for the caller to drop: the attribute change stands.
///
/// `idle_handle`: the caller's own handle is one of the file's opens and can neither
/// read nor write (`attrib +U` opens for its attributes only), so it is no reason to
/// refuse as another handle would be.
pub(crate) fn dehydrate_unpinned(
    filter: PFLT_FILTER,
    name: &[u16],
    idle_handle: bool,
) -> Result<(), NTSTATUS> {
    dehydrate_for_user(
        filter,
        PathBuffer::copy(name)?,
        cloudflt_proto::ByteRange {
            offset: 0,
            length: 0,
        },
        u32::from(idle_handle),
        true,
    )
}

/// The dehydration of [`dehydrate_by_path`], of the file at `path`, with `idle_opens`
/// opens besides the driver's own that cannot read or write. `by_consent`: without
/// AUTO_DEHYDRATION_ALLOWED it may still go on when the connected provider asked for
/// NOTIFY_DEHYDRATE (and then allows it), see [`dehydrate_unpinned`].
fn dehydrate_for_user(
    filter: PFLT_FILTER,
    path: PathBuffer,
    range: cloudflt_proto::ByteRange,
    idle_opens: u32,
    by_consent: bool,
) -> Result<(), NTSTATUS> {
    let policies = roots::policies(path.units()).ok_or(STATUS_CLOUD_FILE_NOT_UNDER_SYNC_ROOT)?;
    let automatic = policies
        .modifiers
        .contains(HydrationModifiers::AUTO_DEHYDRATION_ALLOWED);
    // SAFETY: no preconditions.
    let pid = unsafe { windows_sys::Wdk::System::SystemServices::PsGetCurrentProcessId() } as usize
        as u32;
    // Consent is the provider's answer: a request of the System process is never put to
    // it (`notify::ask`), so it cannot rest on one.
    let consent = by_consent
        && pid != crate::engine::visibility::SYSTEM_PID
        && super::providers::for_path(path.units())
            .is_some_and(|p| p.notifications.wants(msg::NotifyKind::Dehydrate));
    if !automatic && !consent {
        return Err(STATUS_CLOUD_FILE_DEHYDRATION_DISALLOWED);
    }
    super::security::may_see(filter, path.units())?;
    let managed = path.open(filter, DEHYDRATE_ACCESS, Kind::File)?;
    let stream = attach(filter, *managed.file)?.ok_or(STATUS_CLOUD_FILE_NOT_A_CLOUD_FILE)?;
    // The root's provider, if one is connected and asked, hears of it first and may
    // refuse (NOTIFY_DEHYDRATE, a user's request), and of the outcome after.
    let provider = super::providers::for_path(managed.path());
    let identity = hydrate::with_held(|held| {
        stream.with_state(held, |s| super::context::identity_buffer(s.identity()))
    })
    .map_err(|()| STATUS_CLOUD_FILE_INSUFFICIENT_RESOURCES)?;
    let image = super::names::ImageName::of_current();
    let command_line = provider
        .as_ref()
        .filter(|p| {
            p.connect_flags
                .contains(cloudflt_proto::connect::ConnectFlags::REQUIRE_PROCESS_INFO)
        })
        .map(|_| super::names::CommandLine::of_current(pid));
    let size = hydrate::with_held(|held| stream.with_state(held, |s| s.file_size));
    let subject = |kind, flags| super::notify::Subject {
        kind,
        flags,
        reason: msg::DehydrationReason::UserManual,
        file_id: stream.file_id,
        file_size: size,
        name: managed.path(),
        target: &[],
        identity: identity.as_ref().map_or(&[][..], PoolBuf::as_slice),
        requestor_pid: pid,
        requestor_image: image.units(),
        command_line: command_line.as_ref().map(super::names::CommandLine::units),
    };
    // What would refuse the dehydration anyway is said first: the provider is asked only
    // about one that can happen (cached writes are flushed and recorded before the check,
    // as the dehydration itself does).
    managed.file.flush()?;
    let (flags, modified, in_sync) = hydrate::with_held(|held| {
        stream.with_state(held, |s| {
            (
                s.flags,
                !s.modified.is_empty(),
                s.flags.contains(PlaceholderFlags::IN_SYNC),
            )
        })
    });
    if flags.contains(PlaceholderFlags::ALWAYS_FULL) || policies.hydration == Policy::AlwaysFull {
        return Err(STATUS_CLOUD_FILE_DEHYDRATION_DISALLOWED);
    }
    let (attributes, _) = managed.file.attribute_tag()?;
    if flags.contains(PlaceholderFlags::PINNED) || attributes & ATTRIBUTE_PINNED != 0 {
        return Err(STATUS_CLOUD_FILE_PINNED);
    }
    if modified || !in_sync {
        return Err(STATUS_CLOUD_FILE_NOT_IN_SYNC);
    }
    // Consent needs someone to give it: the provider that asked may have gone since.
    let asked = pid != crate::engine::visibility::SYSTEM_PID
        && provider
            .as_ref()
            .is_some_and(|p| p.notifications.wants(msg::NotifyKind::Dehydrate));
    if !automatic && !asked {
        return Err(STATUS_CLOUD_FILE_DEHYDRATION_DISALLOWED);
    }
    if let Some(provider) = &provider {
        super::notify::ask(
            provider,
            &subject(msg::NotifyKind::Dehydrate, 0),
            core::ptr::null(),
        )?;
    }
    let result = dehydrate_open(&managed, &stream, policies.hydration, range, idle_opens);
    if let Some(provider) = &provider {
        let flags = if result.is_ok() {
            msg::DehydrateCompletionFlags::DEHYDRATED.bits()
        } else {
            0
        };
        super::notify::tell(
            provider,
            &subject(msg::NotifyKind::DehydrateCompletion, flags),
        );
    }
    result
}

/// A dehydration of the placeholder open as `managed`, under a root whose hydration
/// policy is `hydration`.
fn dehydrate_open(
    managed: &Managed,
    stream: &StreamContext,
    hydration: Policy,
    range: cloudflt_proto::ByteRange,
    idle_opens: u32,
) -> Result<(), NTSTATUS> {
    // Pages changed through a view and not yet written are recorded as they are
    // written: first, so that the in-sync check sees them and the zeroing finds none.
    managed.file.flush()?;
    let (flags, size, corrupt) = hydrate::with_held(|held| {
        stream.with_state(held, |s| (s.flags, s.file_size, s.is_corrupt()))
    });
    if corrupt {
        return Err(STATUS_CLOUD_FILE_METADATA_CORRUPT);
    }
    if flags.contains(PlaceholderFlags::ALWAYS_FULL) || hydration == Policy::AlwaysFull {
        return Err(STATUS_CLOUD_FILE_DEHYDRATION_DISALLOWED);
    }
    let (attributes, _) = managed.file.attribute_tag()?;
    if flags.contains(PlaceholderFlags::PINNED) || attributes & ATTRIBUTE_PINNED != 0 {
        return Err(STATUS_CLOUD_FILE_PINNED);
    }
    drop_range(
        managed,
        stream,
        op_range(range, size),
        size,
        false,
        idle_opens,
    )
}

/// Drops the whole 4 KiB units of `range` of a `size`-byte placeholder (the tail unit
/// too when the range reaches end of file): forgotten first, then freed, atomically
/// against fetches, edits and other opens (`hydrate::begin_dehydration`).
fn drop_range(
    managed: &Managed,
    stream: &StreamContext,
    range: Range,
    size: u64,
    marking_in_sync: bool,
    idle_opens: u32,
) -> Result<(), NTSTATUS> {
    let start = range
        .start
        .checked_next_multiple_of(UNIT)
        .unwrap_or(u64::MAX);
    let end = if range.end >= size {
        size
    } else {
        range.end - range.end % UNIT
    };
    if start >= end {
        return if hydrate::busy(stream) {
            Err(STATUS_CLOUD_FILE_IN_USE)
        } else {
            Ok(())
        };
    }
    // A file with more than one name keeps its data: a name may lie outside every sync
    // root (hard-link policy ALLOWED hydrates the file before it gets one, `ops::namespace`),
    // and no path outside a root may reach missing data. Telling where every name lies
    // would take opening each parent by id; refusing is what keeps every byte reachable.
    if managed.file.links()? > 1 {
        return Err(STATUS_CLOUD_FILE_INCOMPATIBLE_HARDLINKS);
    }
    // Forget first, then free: a crash in between leaves data on disk that is not
    // recorded (fetched again), never a record of data that is gone. The check that
    // nothing else uses the stream and the forgetting are one step (`begin_dehydration`),
    // and no fetch starts until the zeroing is done.
    hydrate::begin_dehydration(
        stream,
        Range { start, end },
        1 + idle_opens,
        marking_in_sync,
    )?;
    let status = hydrate::persist(stream, &managed.file);
    let result = if nt_success(status) {
        managed.file.zero_range(start, end)
    } else {
        Err(status)
    };
    hydrate::end_dehydration(stream);
    result
}

/// SET_PIN: records the pin state (attribute and blob); PINNED also fetches the whole
/// file, as cfapi's pinned files are kept fully present.
pub(crate) fn set_pin(provider: &ProviderRef, m: &msg::SetPin<'_>) -> Result<(), NTSTATUS> {
    let (managed, stream) = open_placeholder(
        provider,
        m.path,
        FILE_READ_ATTRIBUTES | FILE_WRITE_ATTRIBUTES | FILE_WRITE_DATA,
    )?;
    let (add, clear) = match m.state {
        PinState::Pinned => (PlaceholderFlags::PINNED, PlaceholderFlags::UNPINNED),
        PinState::Unpinned => (PlaceholderFlags::UNPINNED, PlaceholderFlags::PINNED),
        _ => (
            PlaceholderFlags::EMPTY,
            PlaceholderFlags::PINNED.union(PlaceholderFlags::UNPINNED),
        ),
    };
    let size = hydrate::with_held(|held| {
        stream.with_state(held, |s| {
            let kept = PlaceholderFlags::from_bits(s.flags.bits() & !clear.bits() & !add.bits())
                .unwrap_or(PlaceholderFlags::EMPTY);
            s.flags = kept.union(add);
            s.file_size
        })
    });
    let status = hydrate::persist(&stream, &managed.file);
    if !nt_success(status) {
        return Err(status);
    }
    managed
        .file
        .change_attributes(ATTRIBUTE_PINNED | ATTRIBUTE_UNPINNED, pin_attributes(add))?;
    if m.state == PinState::Pinned && size > 0 {
        let status = hydrate::ensure_range(
            &managed.target(&stream, provider),
            Range {
                start: 0,
                end: size,
            },
        );
        if !nt_success(status) {
            return Err(status);
        }
    }
    Ok(())
}

/// GET_INFO: the blob as stored, or no payload for a file that is not a placeholder.
pub(crate) fn info(provider: &ProviderRef, m: &msg::GetInfo<'_>) -> Result<Payload, NTSTATUS> {
    let managed = open_managed(
        provider,
        m.path,
        FILE_READ_ATTRIBUTES,
        FILE_OPEN,
        Kind::Any,
        0,
    )?;
    blob_payload(&managed.file)
}

/// The blob `file` carries as stored, as a reply payload; none for a file that is not
/// a placeholder.
fn blob_payload(file: &OwnedFile) -> Result<Payload, NTSTATUS> {
    let Some((buffer, len)) = file.reparse_point()? else {
        return Ok(None);
    };
    let bytes = buffer.as_slice().get(..len).unwrap_or(&[]);
    match Placeholder::decode_reparse(bytes) {
        Ok(_) => {}
        Err(_) if reparse_tag(bytes) != Some(reparse::TAG) => return Ok(None),
        Err(_) => return Err(STATUS_CLOUD_FILE_METADATA_CORRUPT),
    }
    let header = cloudflt_proto::placeholder::REPARSE_HEADER_SIZE;
    let blob_len = len.saturating_sub(header);
    let mut out =
        PoolBuf::zeroed(blob_len.max(1)).ok_or(STATUS_CLOUD_FILE_INSUFFICIENT_RESOURCES)?;
    if let (Some(dst), Some(src)) = (
        out.as_mut_slice().get_mut(..blob_len),
        bytes.get(header..len),
    ) {
        super::file::copy(dst, src);
    }
    Ok(Some((out, blob_len)))
}

/// UPDATE (CfUpdatePlaceholder): the cloud copy's new size, times and attributes,
/// MARK_IN_SYNC / CLEAR_IN_SYNC, DEHYDRATE of ranges or all, and the "if unchanged"
/// precondition on the file's change counter. Nothing a user changed is ever dropped:
/// see `hydrate::check_provider_change`. The reply is the blob as it is afterwards.
pub(crate) fn update(provider: &ProviderRef, m: &msg::Update<'_>) -> Result<Payload, NTSTATUS> {
    use cloudflt_proto::msg::UpdateFlags;
    let population =
        UpdateFlags::DISABLE_ON_DEMAND_POPULATION.union(UpdateFlags::ENABLE_ON_DEMAND_POPULATION);
    if m.flags.bits() & population.bits() != 0 {
        return update_directory(provider, m);
    }
    // Copied first: a failure here changes nothing.
    let identity = if m.flags.contains(UpdateFlags::SET_IDENTITY) {
        Some(
            crate::nt::context::identity_buffer(m.identity)
                .map_err(|()| STATUS_CLOUD_FILE_INSUFFICIENT_RESOURCES)?,
        )
    } else {
        None
    };
    let (managed, stream) = open_placeholder(
        provider,
        m.path,
        FILE_READ_ATTRIBUTES | FILE_WRITE_ATTRIBUTES | FILE_WRITE_DATA,
    )?;
    // As for DEHYDRATE: what views changed is written, and recorded, first.
    managed.file.flush()?;
    let mark = m.flags.contains(UpdateFlags::MARK_IN_SYNC);
    let dehydrate = m.flags.contains(UpdateFlags::DEHYDRATE);
    let change = hydrate::ProviderChange {
        expected: m
            .flags
            .contains(UpdateFlags::IF_UNCHANGED)
            .then_some(m.expected_changes),
        mark_in_sync: mark,
        dehydrate,
        size: m.file_size,
    };
    let seen = hydrate::check_provider_change(&stream, &change)?;
    // A larger cloud copy leaves the new end missing: a file with more than one name
    // (one may lie outside every root, see `drop_range`) cannot take it.
    let old_size = hydrate::with_held(|held| stream.with_state(held, |s| s.file_size));
    if m.file_size > old_size && managed.file.links()? > 1 {
        return Err(STATUS_CLOUD_FILE_INCOMPATIBLE_HARDLINKS);
    }
    if dehydrate {
        let (flags, size) =
            hydrate::with_held(|held| stream.with_state(held, |s| (s.flags, s.file_size)));
        if flags.contains(PlaceholderFlags::ALWAYS_FULL)
            || provider.hydration() == Policy::AlwaysFull
        {
            return Err(STATUS_CLOUD_FILE_DEHYDRATION_DISALLOWED);
        }
        let (attributes, _) = managed.file.attribute_tag()?;
        if flags.contains(PlaceholderFlags::PINNED) || attributes & ATTRIBUTE_PINNED != 0 {
            return Err(STATUS_CLOUD_FILE_PINNED);
        }
        // Dropped before the size moves: nothing of the old data is left to mix with
        // the new cloud copy's.
        if m.dehydrate.is_empty() {
            drop_range(
                &managed,
                &stream,
                Range {
                    start: 0,
                    end: size,
                },
                size,
                mark,
                0,
            )?;
        } else {
            for r in m.dehydrate.iter() {
                drop_range(&managed, &stream, op_range(r, size), size, mark, 0)?;
            }
        }
    }
    let size = hydrate::with_held(|held| stream.with_state(held, |s| s.file_size));
    if m.file_size != size {
        hydrate::cloud_resize(&stream, &managed.file, m.file_size)?;
    }
    let in_sync = if mark {
        Some(true)
    } else if m.flags.contains(UpdateFlags::CLEAR_IN_SYNC) {
        Some(false)
    } else {
        None
    };
    hydrate::provider_mark(&stream, seen, in_sync, true)?;
    let basic = FILE_BASIC_INFORMATION {
        CreationTime: m.basic.creation_time,
        LastAccessTime: m.basic.last_access_time,
        LastWriteTime: m.basic.last_write_time,
        ChangeTime: m.basic.change_time,
        // Only what a provider may set; 0 leaves the attributes as they are.
        FileAttributes: m.basic.attributes & PROVIDER_ATTRIBUTES,
    };
    if basic.CreationTime | basic.LastAccessTime | basic.LastWriteTime | basic.ChangeTime != 0
        || basic.FileAttributes != 0
    {
        managed.file.set_basic(&basic)?;
    }
    if let Some(identity) = identity {
        // Fetches asked from now on carry the new identity; the record takes it below.
        let old = hydrate::with_held(|held| stream.with_state(held, |s| s.set_identity(identity)));
        drop(old);
    }
    let status = hydrate::persist(&stream, &managed.file);
    if !nt_success(status) {
        return Err(status);
    }
    blob_payload(&managed.file)
}

/// SET_IN_SYNC (CfSetInSyncState): marks a file or directory placeholder in sync (a
/// file's modified ranges are then the provider's) or not, if its change counter is
/// still the one the provider names (when it names one). The reply is the blob as it is
/// afterwards.
pub(crate) fn set_in_sync(
    provider: &ProviderRef,
    m: &msg::SetInSync<'_>,
) -> Result<Payload, NTSTATUS> {
    use cloudflt_proto::msg::SetInSyncFlags;
    let in_sync = m.flags.contains(SetInSyncFlags::IN_SYNC);
    let expected = m
        .flags
        .contains(SetInSyncFlags::IF_UNCHANGED)
        .then_some(m.expected_changes);
    let managed = open_managed(
        provider,
        m.path,
        SET_IN_SYNC_ACCESS,
        FILE_OPEN,
        Kind::Any,
        0,
    )?;
    let filter = crate::nt::driver::filter().ok_or(STATUS_CLOUD_FILE_INVALID_REQUEST)?;
    set_in_sync_open(filter, &managed, in_sync, expected, Marker::Provider)
}

/// What marking a placeholder in sync opens it with.
const SET_IN_SYNC_ACCESS: u32 = FILE_READ_ATTRIBUTES | FILE_WRITE_ATTRIBUTES;

/// Who marks a placeholder in sync.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Marker {
    /// The root's provider: marking in sync says the cloud holds what the disk does, so
    /// the modified ranges are forgotten.
    Provider,
    /// Another process, as the root's management policy allows: the state changes, the
    /// modified ranges stay (only the provider knows they were uploaded), so nothing a
    /// user changed can be dehydrated on another process's word.
    Other,
}

/// SET_IN_SYNC_BY_PATH: a process other than the provider marks a placeholder in sync or
/// not (cfapi's CfSetInSyncState from an application), in its own context. Allowed only
/// under a root whose management policy is UPDATE_UNRESTRICTED ("anyone may update
/// placeholders"; STATUS_CLOUD_FILE_CONNECTED_PROVIDER_ONLY otherwise), on a file or
/// directory the caller may see; marking in sync keeps the file's modified ranges
/// ([`Marker::Other`]).
pub(crate) fn set_in_sync_by_path(
    filter: PFLT_FILTER,
    m: &msg::SetInSyncByPath<'_>,
) -> Result<Payload, NTSTATUS> {
    use cloudflt_proto::msg::SetInSyncFlags;
    use cloudflt_proto::registration::ManagementPolicy;
    let path = PathBuffer::of(m.path)?;
    let policies = roots::policies(path.units()).ok_or(STATUS_CLOUD_FILE_NOT_UNDER_SYNC_ROOT)?;
    if !policies
        .management
        .contains(ManagementPolicy::UPDATE_UNRESTRICTED)
    {
        return Err(STATUS_CLOUD_FILE_CONNECTED_PROVIDER_ONLY);
    }
    super::security::may_see(filter, path.units())?;
    let managed = path.open(filter, SET_IN_SYNC_ACCESS, Kind::Any)?;
    let in_sync = m.flags.contains(SetInSyncFlags::IN_SYNC);
    let expected = m
        .flags
        .contains(SetInSyncFlags::IF_UNCHANGED)
        .then_some(m.expected_changes);
    set_in_sync_open(filter, &managed, in_sync, expected, Marker::Other)
}

/// Marks the placeholder open as `managed` in sync or not, for `marker`.
fn set_in_sync_open(
    filter: PFLT_FILTER,
    managed: &Managed,
    in_sync: bool,
    expected: Option<u64>,
    marker: Marker,
) -> Result<Payload, NTSTATUS> {
    if let Some(stream) = attach(filter, *managed.file)? {
        // What views changed is written, and recorded, before the counter is read: the
        // provider marks in sync what the disk then holds.
        managed.file.flush()?;
        let seen = hydrate::with_held(|held| stream.with_state(held, |s| s.changes));
        if expected.is_some_and(|e| e != seen) {
            return Err(STATUS_CLOUD_FILE_NOT_IN_SYNC);
        }
        hydrate::provider_mark(&stream, seen, Some(in_sync), marker == Marker::Provider)?;
        let status = hydrate::persist(&stream, &managed.file);
        if !nt_success(status) {
            return Err(status);
        }
        return blob_payload(&managed.file);
    }
    directory_mark(&managed.file, in_sync, expected)?;
    blob_payload(&managed.file)
}

/// UPDATE with DISABLE_ON_DEMAND_POPULATION or ENABLE_ON_DEMAND_POPULATION (issue 15):
/// a directory placeholder (or, with an empty path, the sync root) is marked populated or
/// not, and in sync or not with MARK_IN_SYNC / CLEAR_IN_SYNC; no other flag applies to a
/// directory (STATUS_CLOUD_FILE_INVALID_REQUEST). The reply is the directory's blob as it
/// is after (none for the root, which has no reparse data).
fn update_directory(provider: &ProviderRef, m: &msg::Update<'_>) -> Result<Payload, NTSTATUS> {
    use cloudflt_proto::msg::UpdateFlags;
    let allowed = UpdateFlags::DISABLE_ON_DEMAND_POPULATION
        .union(UpdateFlags::ENABLE_ON_DEMAND_POPULATION)
        .union(UpdateFlags::MARK_IN_SYNC)
        .union(UpdateFlags::CLEAR_IN_SYNC);
    if m.flags.bits() & !allowed.bits() != 0 {
        return Err(STATUS_CLOUD_FILE_INVALID_REQUEST);
    }
    let populated = m.flags.contains(UpdateFlags::DISABLE_ON_DEMAND_POPULATION);
    let in_sync = if m.flags.contains(UpdateFlags::MARK_IN_SYNC) {
        Some(true)
    } else if m.flags.contains(UpdateFlags::CLEAR_IN_SYNC) {
        Some(false)
    } else {
        None
    };
    if m.path.units().next().is_none() {
        // The root: its state is in its registration.
        if in_sync.is_some() {
            return Err(STATUS_CLOUD_FILE_INVALID_REQUEST);
        }
        super::roots::set_root_populated(provider.root(), populated)?;
        return Ok(None);
    }
    // A file is no directory to populate: the request is invalid for it.
    const STATUS_NOT_A_DIRECTORY: NTSTATUS = 0xC000_0103_u32 as NTSTATUS;
    let managed = open_managed(
        provider,
        m.path,
        FILE_READ_ATTRIBUTES | FILE_WRITE_ATTRIBUTES,
        FILE_OPEN,
        Kind::Directory,
        0,
    )
    .map_err(|status| {
        if status == STATUS_NOT_A_DIRECTORY {
            STATUS_CLOUD_FILE_INVALID_REQUEST
        } else {
            status
        }
    })?;
    super::populate::mark_open(&managed.file, populated)?;
    if let Some(in_sync) = in_sync {
        directory_mark(&managed.file, in_sync, None)?;
    }
    blob_payload(&managed.file)
}

/// Marks the directory placeholder open as `file` in sync or not, one change further
/// (a directory has no stream state: its reparse data is all there is). Refused with
/// STATUS_CLOUD_FILE_NOT_IN_SYNC when `expected` is given and the counter moved, and
/// with STATUS_CLOUD_FILE_NOT_A_CLOUD_FILE when the directory is not cloudflt's.
pub(crate) fn directory_mark(
    file: &crate::nt::file::Fo,
    in_sync: bool,
    expected: Option<u64>,
) -> Result<(), NTSTATUS> {
    let (buffer, len) = file
        .reparse_point()?
        .ok_or(STATUS_CLOUD_FILE_NOT_A_CLOUD_FILE)?;
    let old = Placeholder::decode_reparse(buffer.as_slice().get(..len).unwrap_or(&[]))
        .map_err(|_| STATUS_CLOUD_FILE_NOT_A_CLOUD_FILE)?;
    if expected.is_some_and(|e| e != old.changes) {
        return Err(STATUS_CLOUD_FILE_NOT_IN_SYNC);
    }
    let flags = if in_sync {
        old.flags.union(PlaceholderFlags::IN_SYNC)
    } else {
        old.flags.difference(PlaceholderFlags::IN_SYNC)
    };
    let (blob, blob_len) = super::reparse::encode(&Placeholder {
        flags,
        changes: old.changes.wrapping_add(1),
        ..old
    })?;
    file.tag(blob.as_slice().get(..blob_len).unwrap_or(&[]))
}

fn reparse_tag(bytes: &[u8]) -> Option<u32> {
    bytes
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_le_bytes)
}

/// Length of a relative path in units, or INVALID_REQUEST if it is empty, absolute, or
/// has an empty, `.` or `..` component.
fn checked_relative(relative: impl Iterator<Item = u16>) -> Result<usize, NTSTATUS> {
    let sep = u16::from(b'\\');
    let dot = u16::from(b'.');
    let mut len = 0usize;
    let mut component = 0usize;
    let mut dots = 0usize;
    let mut bad = false;
    for u in relative {
        len += 1;
        if u == sep {
            if component == 0 || component == dots && dots <= 2 {
                bad = true;
            }
            component = 0;
            dots = 0;
        } else {
            component += 1;
            if u == dot {
                dots += 1;
            }
            if u == 0 || u == u16::from(b'/') || u == u16::from(b':') {
                bad = true;
            }
        }
    }
    if len == 0 || component == 0 || (component == dots && dots <= 2) || bad {
        return Err(STATUS_CLOUD_FILE_INVALID_REQUEST);
    }
    Ok(len)
}
