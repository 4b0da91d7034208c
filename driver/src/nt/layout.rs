//! The operation parameter block FltMgr hands every callback, FLT_IO_PARAMETER_BLOCK and
//! its FLT_PARAMETERS union, defined by the project from the declarations in
//! `fltKernel.h`, because windows-sys gets them wrong.
//!
//! # Why not windows-sys
//!
//! `fltKernel.h` marks many members of FLT_PARAMETERS `POINTER_ALIGNMENT`, which is
//! `DECLSPEC_ALIGN(8)` on 64-bit targets (and nothing on 32-bit ones): such a member starts
//! on the next 8-byte boundary even when it is a 4-byte ULONG. windows-sys 0.61 drops the
//! attribute (microsoft/windows-rs#3525, microsoft/wdkmetadata#88, both open) and also
//! declares several arms `packed(4)`, a pragma no 64-bit target gets (see below).
//! Every arm with such a member is laid out wrong there: Read.ByteOffset at +8 instead of
//! +16, QueryFileInformation.InfoBuffer at +8 instead of +16, QueryDirectory's
//! DirectoryBuffer and MdlAddress at +24/+32 instead of +32/+40, and so on. The driver reads
//! every parameter through these definitions (casting `FLT_CALLBACK_DATA::Iopb`), and the
//! kernel model in `tests/` builds the block with them, so a read at a wrong offset fails
//! the scenarios instead of agreeing with an equally wrong model.
//!
//! # How the declarations become Rust
//!
//! A `POINTER_ALIGNMENT` member is preceded by an explicit, private `u32` padding field
//! where the previous member ends 4 bytes short of an 8-byte boundary. A wrapper type with
//! `align(8)` would not do: Rust rounds a type's size up to its alignment, so the member
//! itself would grow to 8 bytes and push the next one (Create.ShareAccess sits 2 bytes
//! after FileAttributes). Every arm is padded out to its C size, so no byte of the union is
//! implicit padding: copies of the parameter block carry every byte, and the model can
//! compare blocks byte for byte. Arms whose C declaration contains an aligned member are
//! `align(8)` like their C counterparts. Only x64 and arm64 are targets: the layout is
//! checked below for 64-bit pointers, and the module refuses to build for anything else.
//! The other members keep their natural alignment on both: `fltKernel.h` wraps the union
//! in `pshpack4.h` behind the same kind of architecture guard as `wdm.h` puts around
//! IO_STACK_LOCATION, and the public x64 and arm64 symbols of ntoskrnl show that
//! structure unpacked (its QueryDirectory.FileName 8 bytes after Length, not 4). The
//! header copies at hand are older than arm64 and name only `_AMD64_` and `_IA64_` in the
//! guard; windows-sys's `packed(4)` arms look like that branch taken for every target.
//!
//! The arms are the ones the driver or the model reads or writes, plus `Others`, the
//! arm that sizes the union (48 bytes on 64-bit targets). The C arms are anonymous
//! structures; here they have names of their own. Member names are the header's.
//!
//! # Sources
//!
//! `fltKernel.h` (WDK) as published, and Microsoft's reference pages "FLT_PARAMETERS for
//! IRP_MJ_…" (windows-driver-docs, `ifs/flt-parameters-for-irp-mj-*.md`), which repeat the
//! declarations. Where the two disagree the header wins: the NotifyDirectory page shows
//! `ULONG Spare1` without POINTER_ALIGNMENT, which would put its DirectoryBuffer at +24, but
//! the header marks both spares aligned and says why ("These spares ensure that the offset
//! of DirectoryBuffer is exactly the same as that for QueryDirectory", +32); the
//! AcquireForSectionSynchronization page marks PageProtection aligned, the header does not
//! (FsRtl passes it on from FS_FILTER_PARAMETERS, whose PageProtection is at +4). The
//! offsets of the IRP-based arms agree with the public x64 and arm64 symbols of
//! IO_STACK_LOCATION, whose Parameters union has the same aligned members (Read.ByteOffset
//! 16 bytes in, QueryDirectory.FileIndex 24, FileSystemControl's buffer 24).
//!
//! # The other structures the driver reads or the model builds
//!
//! Checked for `POINTER_ALIGNMENT` / `DECLSPEC_ALIGN` in their declarations (`fltKernel.h`,
//! `wdm.h`, `ntifs.h`): FLT_CALLBACK_DATA, FLT_RELATED_OBJECTS, FLT_REGISTRATION,
//! FLT_OPERATION_REGISTRATION, FLT_CONTEXT_REGISTRATION, FLT_FILE_NAME_INFORMATION,
//! FLT_CALLBACK_DATA_QUEUE / IO_CSQ, OPEN_REPARSE_LIST_ENTRY, IO_STATUS_BLOCK,
//! IO_SECURITY_CONTEXT, FILE_OBJECT, UNICODE_STRING, MDL, KSPIN_LOCK_QUEUE /
//! KLOCK_QUEUE_HANDLE, FILE_BASIC_INFORMATION, FILE_STANDARD_INFORMATION,
//! FILE_ATTRIBUTE_TAG_INFORMATION, FILE_END_OF_FILE_INFORMATION,
//! FILE_ZERO_DATA_INFORMATION, FILE_FS_ATTRIBUTE_INFORMATION. None carries either
//! attribute, nor a packing pragma on 64-bit targets, so windows-sys's definitions are
//! used for them; their documented 64-bit offsets and sizes are asserted at the bottom of
//! this module, so a windows-sys that changed them would not build. IRP and
//! DEVICE_OBJECT are `DECLSPEC_ALIGN(MEMORY_ALLOCATION_ALIGNMENT)`, but only pointers to
//! them pass through the driver and the model, which never lay one out. Only
//! FLT_PARAMETERS (and FLT_IO_PARAMETER_BLOCK, which embeds it) is affected.

#![forbid(unsafe_code)]
// The two documented structures keep their C names, and every member its header name, so
// that the code reads like the declaration and like the windows-sys types around it.
#![allow(non_camel_case_types, non_snake_case)]

use core::ffi::c_void;

use windows_sys::Wdk::Foundation::{
    DEVICE_OBJECT, FILE_OBJECT, IO_SECURITY_CONTEXT, IRP, MDL, VPB,
};
use windows_sys::Wdk::Storage::FileSystem::Minifilters::PFLT_INSTANCE;
use windows_sys::Wdk::Storage::FileSystem::{
    FILE_INFORMATION_CLASS, FILE_NETWORK_OPEN_INFORMATION, FS_FILTER_SECTION_SYNC_OUTPUT,
    FS_FILTER_SECTION_SYNC_TYPE,
};
use windows_sys::Wdk::System::SystemServices::DIRECTORY_NOTIFY_INFORMATION_CLASS;
use windows_sys::Win32::Foundation::{HANDLE, UNICODE_STRING};

const _: () = assert!(
    core::mem::size_of::<usize>() == 8,
    "the parameter layouts here are those of 64-bit targets (x64, arm64)"
);

/// FLT_IO_PARAMETER_BLOCK: what `FLT_CALLBACK_DATA::Iopb` points to.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FLT_IO_PARAMETER_BLOCK {
    /// The IRP's flags (`IRP_PAGING_IO`, `IRP_NOCACHE`, …).
    pub IrpFlags: u32,
    pub MajorFunction: u8,
    pub MinorFunction: u8,
    /// The `SL_*` flags of the stack location.
    pub OperationFlags: u8,
    pub Reserved: u8,
    pub TargetFileObject: *mut FILE_OBJECT,
    pub TargetInstance: PFLT_INSTANCE,
    pub Parameters: FLT_PARAMETERS,
}

/// FLT_PARAMETERS: the operation's parameters; which arm is valid depends on the major
/// (and minor) function.
#[repr(C)]
#[derive(Clone, Copy)]
pub union FLT_PARAMETERS {
    /// IRP_MJ_CREATE.
    pub Create: CreateParameters,
    /// IRP_MJ_READ.
    pub Read: ReadParameters,
    /// IRP_MJ_WRITE.
    pub Write: WriteParameters,
    /// IRP_MJ_QUERY_INFORMATION.
    pub QueryFileInformation: QueryFileInformationParameters,
    /// IRP_MJ_SET_INFORMATION.
    pub SetFileInformation: SetFileInformationParameters,
    /// IRP_MJ_DIRECTORY_CONTROL.
    pub DirectoryControl: DirectoryControlParameters,
    /// IRP_MJ_FILE_SYSTEM_CONTROL.
    pub FileSystemControl: FileSystemControlParameters,
    /// IRP_MJ_ACQUIRE_FOR_SECTION_SYNCHRONIZATION.
    pub AcquireForSectionSynchronization: AcquireForSectionSynchronizationParameters,
    /// IRP_MJ_QUERY_OPEN.
    pub QueryOpen: QueryOpenParameters,
    /// IRP_MJ_NETWORK_QUERY_OPEN.
    pub NetworkQueryOpen: NetworkQueryOpenParameters,
    /// Driver-specific operations; the largest arm, so the one that sizes the union.
    pub Others: OtherParameters,
}

impl Default for FLT_PARAMETERS {
    /// All zero, through the arm that covers every byte.
    fn default() -> Self {
        Self {
            Others: OtherParameters {
                Argument1: core::ptr::null_mut(),
                Argument2: core::ptr::null_mut(),
                Argument3: core::ptr::null_mut(),
                Argument4: core::ptr::null_mut(),
                Argument5: core::ptr::null_mut(),
                Argument6: 0,
            },
        }
    }
}

/// FLT_PARAMETERS.Create.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
pub struct CreateParameters {
    pub SecurityContext: *mut IO_SECURITY_CONTEXT,
    /// CreateOptions in the low 24 bits, CreateDisposition in the high 8.
    pub Options: u32,
    _pad0: u32,
    /// POINTER_ALIGNMENT.
    pub FileAttributes: u16,
    pub ShareAccess: u16,
    _pad1: u32,
    /// POINTER_ALIGNMENT.
    pub EaLength: u32,
    _pad2: u32,
    pub EaBuffer: *mut c_void,
    pub AllocationSize: i64,
}

/// FLT_PARAMETERS.Read.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
pub struct ReadParameters {
    pub Length: u32,
    _pad0: u32,
    /// POINTER_ALIGNMENT.
    pub Key: u32,
    _pad1: u32,
    pub ByteOffset: i64,
    pub ReadBuffer: *mut c_void,
    pub MdlAddress: *mut MDL,
}

/// FLT_PARAMETERS.Write.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
pub struct WriteParameters {
    pub Length: u32,
    _pad0: u32,
    /// POINTER_ALIGNMENT.
    pub Key: u32,
    _pad1: u32,
    pub ByteOffset: i64,
    pub WriteBuffer: *mut c_void,
    pub MdlAddress: *mut MDL,
}

/// FLT_PARAMETERS.QueryFileInformation.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
pub struct QueryFileInformationParameters {
    pub Length: u32,
    _pad0: u32,
    /// POINTER_ALIGNMENT.
    pub FileInformationClass: FILE_INFORMATION_CLASS,
    _pad1: u32,
    pub InfoBuffer: *mut c_void,
}

/// FLT_PARAMETERS.SetFileInformation.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
pub struct SetFileInformationParameters {
    pub Length: u32,
    _pad0: u32,
    /// POINTER_ALIGNMENT.
    pub FileInformationClass: FILE_INFORMATION_CLASS,
    _pad1: u32,
    pub ParentOfTarget: *mut FILE_OBJECT,
    /// The header's anonymous union: ReplaceIfExists/AdvanceOnly, ClusterCount or
    /// DeleteHandle, by information class.
    pub Anonymous: SetFileInformationUnion,
    pub InfoBuffer: *mut c_void,
}

/// The anonymous union inside FLT_PARAMETERS.SetFileInformation.
#[repr(C)]
#[derive(Clone, Copy)]
pub union SetFileInformationUnion {
    pub Anonymous: SetFileInformationFlags,
    pub ClusterCount: u32,
    pub DeleteHandle: HANDLE,
}

/// ReplaceIfExists and AdvanceOnly (BOOLEANs: any non-zero byte is TRUE, so they are
/// `u8` rather than `bool`, which may hold only 0 or 1).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct SetFileInformationFlags {
    pub ReplaceIfExists: u8,
    pub AdvanceOnly: u8,
}

/// FLT_PARAMETERS.DirectoryControl, by minor function.
#[repr(C)]
#[derive(Clone, Copy)]
pub union DirectoryControlParameters {
    /// IRP_MN_QUERY_DIRECTORY.
    pub QueryDirectory: QueryDirectoryParameters,
    /// IRP_MN_NOTIFY_CHANGE_DIRECTORY.
    pub NotifyDirectory: NotifyDirectoryParameters,
    /// IRP_MN_NOTIFY_CHANGE_DIRECTORY_EX.
    pub NotifyDirectoryEx: NotifyDirectoryExParameters,
}

/// FLT_PARAMETERS.DirectoryControl.QueryDirectory.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
pub struct QueryDirectoryParameters {
    pub Length: u32,
    _pad0: u32,
    pub FileName: *mut UNICODE_STRING,
    pub FileInformationClass: FILE_INFORMATION_CLASS,
    _pad1: u32,
    /// POINTER_ALIGNMENT.
    pub FileIndex: u32,
    _pad2: u32,
    pub DirectoryBuffer: *mut c_void,
    pub MdlAddress: *mut MDL,
}

/// FLT_PARAMETERS.DirectoryControl.NotifyDirectory.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
pub struct NotifyDirectoryParameters {
    pub Length: u32,
    _pad0: u32,
    /// POINTER_ALIGNMENT.
    pub CompletionFilter: u32,
    _pad1: u32,
    /// POINTER_ALIGNMENT; keeps DirectoryBuffer where QueryDirectory has it.
    pub Spare1: u32,
    _pad2: u32,
    /// POINTER_ALIGNMENT.
    pub Spare2: u32,
    _pad3: u32,
    pub DirectoryBuffer: *mut c_void,
    pub MdlAddress: *mut MDL,
}

/// FLT_PARAMETERS.DirectoryControl.NotifyDirectoryEx.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
pub struct NotifyDirectoryExParameters {
    pub Length: u32,
    _pad0: u32,
    /// POINTER_ALIGNMENT.
    pub CompletionFilter: u32,
    _pad1: u32,
    /// POINTER_ALIGNMENT.
    pub DirectoryNotifyInformationClass: DIRECTORY_NOTIFY_INFORMATION_CLASS,
    _pad2: u32,
    /// POINTER_ALIGNMENT.
    pub Spare2: u32,
    _pad3: u32,
    pub DirectoryBuffer: *mut c_void,
    pub MdlAddress: *mut MDL,
}

/// FLT_PARAMETERS.FileSystemControl, by minor function and transfer method.
#[repr(C)]
#[derive(Clone, Copy)]
pub union FileSystemControlParameters {
    /// IRP_MN_VERIFY_VOLUME.
    pub VerifyVolume: VerifyVolumeParameters,
    /// The members every method of IRP_MN_USER_FS_REQUEST / IRP_MN_KERNEL_CALL shares.
    pub Common: FsControlCommon,
    /// METHOD_NEITHER.
    pub Neither: FsControlNeither,
    /// METHOD_BUFFERED.
    pub Buffered: FsControlBuffered,
    /// METHOD_IN_DIRECT / METHOD_OUT_DIRECT.
    pub Direct: FsControlDirect,
}

/// FLT_PARAMETERS.FileSystemControl.VerifyVolume.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct VerifyVolumeParameters {
    pub Vpb: *mut VPB,
    pub DeviceObject: *mut DEVICE_OBJECT,
}

/// FLT_PARAMETERS.FileSystemControl.Common.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
pub struct FsControlCommon {
    pub OutputBufferLength: u32,
    _pad0: u32,
    /// POINTER_ALIGNMENT.
    pub InputBufferLength: u32,
    _pad1: u32,
    /// POINTER_ALIGNMENT.
    pub FsControlCode: u32,
    _pad2: u32,
}

/// FLT_PARAMETERS.FileSystemControl.Neither.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
pub struct FsControlNeither {
    pub OutputBufferLength: u32,
    _pad0: u32,
    /// POINTER_ALIGNMENT.
    pub InputBufferLength: u32,
    _pad1: u32,
    /// POINTER_ALIGNMENT.
    pub FsControlCode: u32,
    _pad2: u32,
    pub InputBuffer: *mut c_void,
    pub OutputBuffer: *mut c_void,
    pub OutputMdlAddress: *mut MDL,
}

/// FLT_PARAMETERS.FileSystemControl.Buffered.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
pub struct FsControlBuffered {
    pub OutputBufferLength: u32,
    _pad0: u32,
    /// POINTER_ALIGNMENT.
    pub InputBufferLength: u32,
    _pad1: u32,
    /// POINTER_ALIGNMENT.
    pub FsControlCode: u32,
    _pad2: u32,
    /// Input and output alike.
    pub SystemBuffer: *mut c_void,
}

/// FLT_PARAMETERS.FileSystemControl.Direct.
#[repr(C, align(8))]
#[derive(Clone, Copy)]
pub struct FsControlDirect {
    pub OutputBufferLength: u32,
    _pad0: u32,
    /// POINTER_ALIGNMENT.
    pub InputBufferLength: u32,
    _pad1: u32,
    /// POINTER_ALIGNMENT.
    pub FsControlCode: u32,
    _pad2: u32,
    pub InputSystemBuffer: *mut c_void,
    pub OutputBuffer: *mut c_void,
    pub OutputMdlAddress: *mut MDL,
}

/// FLT_PARAMETERS.AcquireForSectionSynchronization. No aligned member: windows-sys
/// agrees with this one.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct AcquireForSectionSynchronizationParameters {
    pub SyncType: FS_FILTER_SECTION_SYNC_TYPE,
    pub PageProtection: u32,
    pub OutputInformation: *mut FS_FILTER_SECTION_SYNC_OUTPUT,
    pub Flags: u32,
    pub AllocationAttributes: u32,
}

/// FLT_PARAMETERS.QueryOpen. No aligned member.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct QueryOpenParameters {
    pub Irp: *mut IRP,
    pub FileInformation: *mut c_void,
    /// In: the buffer's size; out: the bytes the file system returned.
    pub Length: *mut u32,
    pub FileInformationClass: FILE_INFORMATION_CLASS,
    _pad0: u32,
}

/// FLT_PARAMETERS.NetworkQueryOpen. No aligned member.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct NetworkQueryOpenParameters {
    pub Irp: *mut IRP,
    pub NetworkInformation: *mut FILE_NETWORK_OPEN_INFORMATION,
}

/// FLT_PARAMETERS.Others.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct OtherParameters {
    pub Argument1: *mut c_void,
    pub Argument2: *mut c_void,
    pub Argument3: *mut c_void,
    pub Argument4: *mut c_void,
    pub Argument5: *mut c_void,
    pub Argument6: i64,
}

/// Offsets and sizes of 64-bit `fltKernel.h`, checked when the crate builds (for the
/// Windows targets too); the host tests below state the same numbers one by one.
mod checks {
    use super::*;
    use core::mem::{align_of, offset_of, size_of};

    const _: () = {
        assert!(size_of::<FLT_PARAMETERS>() == 48);
        assert!(align_of::<FLT_PARAMETERS>() == 8);
        assert!(size_of::<OtherParameters>() == size_of::<FLT_PARAMETERS>());

        assert!(offset_of!(FLT_IO_PARAMETER_BLOCK, IrpFlags) == 0);
        assert!(offset_of!(FLT_IO_PARAMETER_BLOCK, MajorFunction) == 4);
        assert!(offset_of!(FLT_IO_PARAMETER_BLOCK, MinorFunction) == 5);
        assert!(offset_of!(FLT_IO_PARAMETER_BLOCK, OperationFlags) == 6);
        assert!(offset_of!(FLT_IO_PARAMETER_BLOCK, Reserved) == 7);
        assert!(offset_of!(FLT_IO_PARAMETER_BLOCK, TargetFileObject) == 8);
        assert!(offset_of!(FLT_IO_PARAMETER_BLOCK, TargetInstance) == 16);
        assert!(offset_of!(FLT_IO_PARAMETER_BLOCK, Parameters) == 24);
        assert!(size_of::<FLT_IO_PARAMETER_BLOCK>() == 72);

        assert!(offset_of!(CreateParameters, SecurityContext) == 0);
        assert!(offset_of!(CreateParameters, Options) == 8);
        assert!(offset_of!(CreateParameters, FileAttributes) == 16);
        assert!(offset_of!(CreateParameters, ShareAccess) == 18);
        assert!(offset_of!(CreateParameters, EaLength) == 24);
        assert!(offset_of!(CreateParameters, EaBuffer) == 32);
        assert!(offset_of!(CreateParameters, AllocationSize) == 40);
        assert!(size_of::<CreateParameters>() == 48);

        assert!(offset_of!(ReadParameters, Length) == 0);
        assert!(offset_of!(ReadParameters, Key) == 8);
        assert!(offset_of!(ReadParameters, ByteOffset) == 16);
        assert!(offset_of!(ReadParameters, ReadBuffer) == 24);
        assert!(offset_of!(ReadParameters, MdlAddress) == 32);
        assert!(size_of::<ReadParameters>() == 40);

        assert!(offset_of!(WriteParameters, Length) == 0);
        assert!(offset_of!(WriteParameters, Key) == 8);
        assert!(offset_of!(WriteParameters, ByteOffset) == 16);
        assert!(offset_of!(WriteParameters, WriteBuffer) == 24);
        assert!(offset_of!(WriteParameters, MdlAddress) == 32);
        assert!(size_of::<WriteParameters>() == 40);

        assert!(offset_of!(QueryFileInformationParameters, Length) == 0);
        assert!(offset_of!(QueryFileInformationParameters, FileInformationClass) == 8);
        assert!(offset_of!(QueryFileInformationParameters, InfoBuffer) == 16);
        assert!(size_of::<QueryFileInformationParameters>() == 24);

        assert!(offset_of!(SetFileInformationParameters, Length) == 0);
        assert!(offset_of!(SetFileInformationParameters, FileInformationClass) == 8);
        assert!(offset_of!(SetFileInformationParameters, ParentOfTarget) == 16);
        assert!(offset_of!(SetFileInformationParameters, Anonymous) == 24);
        assert!(offset_of!(SetFileInformationParameters, InfoBuffer) == 32);
        assert!(size_of::<SetFileInformationParameters>() == 40);
        assert!(size_of::<SetFileInformationUnion>() == 8);
        assert!(offset_of!(SetFileInformationFlags, AdvanceOnly) == 1);

        assert!(offset_of!(QueryDirectoryParameters, Length) == 0);
        assert!(offset_of!(QueryDirectoryParameters, FileName) == 8);
        assert!(offset_of!(QueryDirectoryParameters, FileInformationClass) == 16);
        assert!(offset_of!(QueryDirectoryParameters, FileIndex) == 24);
        assert!(offset_of!(QueryDirectoryParameters, DirectoryBuffer) == 32);
        assert!(offset_of!(QueryDirectoryParameters, MdlAddress) == 40);
        assert!(size_of::<QueryDirectoryParameters>() == 48);

        assert!(offset_of!(NotifyDirectoryParameters, Length) == 0);
        assert!(offset_of!(NotifyDirectoryParameters, CompletionFilter) == 8);
        assert!(offset_of!(NotifyDirectoryParameters, Spare1) == 16);
        assert!(offset_of!(NotifyDirectoryParameters, Spare2) == 24);
        assert!(offset_of!(NotifyDirectoryParameters, DirectoryBuffer) == 32);
        assert!(offset_of!(NotifyDirectoryParameters, MdlAddress) == 40);
        assert!(size_of::<NotifyDirectoryParameters>() == 48);

        assert!(offset_of!(NotifyDirectoryExParameters, Length) == 0);
        assert!(offset_of!(NotifyDirectoryExParameters, CompletionFilter) == 8);
        assert!(offset_of!(NotifyDirectoryExParameters, DirectoryNotifyInformationClass) == 16);
        assert!(offset_of!(NotifyDirectoryExParameters, Spare2) == 24);
        assert!(offset_of!(NotifyDirectoryExParameters, DirectoryBuffer) == 32);
        assert!(offset_of!(NotifyDirectoryExParameters, MdlAddress) == 40);
        assert!(size_of::<NotifyDirectoryExParameters>() == 48);

        assert!(offset_of!(VerifyVolumeParameters, Vpb) == 0);
        assert!(offset_of!(VerifyVolumeParameters, DeviceObject) == 8);
        assert!(size_of::<VerifyVolumeParameters>() == 16);

        assert!(offset_of!(FsControlCommon, OutputBufferLength) == 0);
        assert!(offset_of!(FsControlCommon, InputBufferLength) == 8);
        assert!(offset_of!(FsControlCommon, FsControlCode) == 16);
        assert!(size_of::<FsControlCommon>() == 24);

        assert!(offset_of!(FsControlNeither, OutputBufferLength) == 0);
        assert!(offset_of!(FsControlNeither, InputBufferLength) == 8);
        assert!(offset_of!(FsControlNeither, FsControlCode) == 16);
        assert!(offset_of!(FsControlNeither, InputBuffer) == 24);
        assert!(offset_of!(FsControlNeither, OutputBuffer) == 32);
        assert!(offset_of!(FsControlNeither, OutputMdlAddress) == 40);
        assert!(size_of::<FsControlNeither>() == 48);

        assert!(offset_of!(FsControlBuffered, OutputBufferLength) == 0);
        assert!(offset_of!(FsControlBuffered, InputBufferLength) == 8);
        assert!(offset_of!(FsControlBuffered, FsControlCode) == 16);
        assert!(offset_of!(FsControlBuffered, SystemBuffer) == 24);
        assert!(size_of::<FsControlBuffered>() == 32);

        assert!(offset_of!(FsControlDirect, OutputBufferLength) == 0);
        assert!(offset_of!(FsControlDirect, InputBufferLength) == 8);
        assert!(offset_of!(FsControlDirect, FsControlCode) == 16);
        assert!(offset_of!(FsControlDirect, InputSystemBuffer) == 24);
        assert!(offset_of!(FsControlDirect, OutputBuffer) == 32);
        assert!(offset_of!(FsControlDirect, OutputMdlAddress) == 40);
        assert!(size_of::<FsControlDirect>() == 48);

        assert!(offset_of!(AcquireForSectionSynchronizationParameters, SyncType) == 0);
        assert!(offset_of!(AcquireForSectionSynchronizationParameters, PageProtection) == 4);
        assert!(
            offset_of!(
                AcquireForSectionSynchronizationParameters,
                OutputInformation
            ) == 8
        );
        assert!(offset_of!(AcquireForSectionSynchronizationParameters, Flags) == 16);
        assert!(
            offset_of!(
                AcquireForSectionSynchronizationParameters,
                AllocationAttributes
            ) == 20
        );
        assert!(size_of::<AcquireForSectionSynchronizationParameters>() == 24);

        assert!(offset_of!(QueryOpenParameters, Irp) == 0);
        assert!(offset_of!(QueryOpenParameters, FileInformation) == 8);
        assert!(offset_of!(QueryOpenParameters, Length) == 16);
        assert!(offset_of!(QueryOpenParameters, FileInformationClass) == 24);
        assert!(size_of::<QueryOpenParameters>() == 32);

        assert!(offset_of!(NetworkQueryOpenParameters, Irp) == 0);
        assert!(offset_of!(NetworkQueryOpenParameters, NetworkInformation) == 8);
        assert!(size_of::<NetworkQueryOpenParameters>() == 16);

        assert!(offset_of!(OtherParameters, Argument5) == 32);
        assert!(offset_of!(OtherParameters, Argument6) == 40);
    };

    // The structures windows-sys declares correctly (see the module comment), at their
    // documented 64-bit offsets.
    mod sys {
        use core::mem::{offset_of, size_of};
        use windows_sys::Wdk::Foundation::{FILE_OBJECT, IO_SECURITY_CONTEXT, MDL};
        use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
            FLT_CALLBACK_DATA, FLT_CALLBACK_DATA_QUEUE, FLT_CONTEXT_REGISTRATION,
            FLT_FILE_NAME_INFORMATION, FLT_OPERATION_REGISTRATION, FLT_REGISTRATION,
            FLT_RELATED_OBJECTS,
        };
        use windows_sys::Wdk::Storage::FileSystem::{
            FILE_BASIC_INFORMATION, FILE_FS_ATTRIBUTE_INFORMATION, FILE_STANDARD_INFORMATION,
            OPEN_REPARSE_LIST_ENTRY,
        };
        use windows_sys::Wdk::System::SystemServices::{
            FILE_ATTRIBUTE_TAG_INFORMATION, FILE_END_OF_FILE_INFORMATION, KLOCK_QUEUE_HANDLE,
        };
        use windows_sys::Win32::Foundation::UNICODE_STRING;
        use windows_sys::Win32::System::IO::IO_STATUS_BLOCK;
        use windows_sys::Win32::System::Ioctl::FILE_ZERO_DATA_INFORMATION;

        const _: () = {
            assert!(offset_of!(FLT_CALLBACK_DATA, Flags) == 0);
            assert!(offset_of!(FLT_CALLBACK_DATA, Thread) == 8);
            assert!(offset_of!(FLT_CALLBACK_DATA, Iopb) == 16);
            assert!(offset_of!(FLT_CALLBACK_DATA, IoStatus) == 24);
            assert!(offset_of!(FLT_CALLBACK_DATA, TagData) == 40);
            assert!(offset_of!(FLT_CALLBACK_DATA, Anonymous) == 48);
            assert!(offset_of!(FLT_CALLBACK_DATA, RequestorMode) == 80);
            assert!(size_of::<FLT_CALLBACK_DATA>() == 88);

            assert!(offset_of!(FLT_RELATED_OBJECTS, Size) == 0);
            assert!(offset_of!(FLT_RELATED_OBJECTS, TransactionContext) == 2);
            assert!(offset_of!(FLT_RELATED_OBJECTS, Filter) == 8);
            assert!(offset_of!(FLT_RELATED_OBJECTS, Volume) == 16);
            assert!(offset_of!(FLT_RELATED_OBJECTS, Instance) == 24);
            assert!(offset_of!(FLT_RELATED_OBJECTS, FileObject) == 32);
            assert!(offset_of!(FLT_RELATED_OBJECTS, Transaction) == 40);
            assert!(size_of::<FLT_RELATED_OBJECTS>() == 48);

            assert!(offset_of!(FLT_REGISTRATION, ContextRegistration) == 8);
            assert!(offset_of!(FLT_REGISTRATION, OperationRegistration) == 16);
            assert!(offset_of!(FLT_REGISTRATION, SectionNotificationCallback) == 0x68);
            assert!(size_of::<FLT_REGISTRATION>() == 0x70);

            assert!(offset_of!(FLT_OPERATION_REGISTRATION, MajorFunction) == 0);
            assert!(offset_of!(FLT_OPERATION_REGISTRATION, Flags) == 4);
            assert!(offset_of!(FLT_OPERATION_REGISTRATION, PreOperation) == 8);
            assert!(offset_of!(FLT_OPERATION_REGISTRATION, PostOperation) == 16);
            assert!(offset_of!(FLT_OPERATION_REGISTRATION, Reserved1) == 24);
            assert!(size_of::<FLT_OPERATION_REGISTRATION>() == 32);

            assert!(offset_of!(FLT_CONTEXT_REGISTRATION, ContextType) == 0);
            assert!(offset_of!(FLT_CONTEXT_REGISTRATION, Flags) == 2);
            assert!(offset_of!(FLT_CONTEXT_REGISTRATION, ContextCleanupCallback) == 8);
            assert!(offset_of!(FLT_CONTEXT_REGISTRATION, Size) == 16);
            assert!(offset_of!(FLT_CONTEXT_REGISTRATION, PoolTag) == 24);
            assert!(offset_of!(FLT_CONTEXT_REGISTRATION, ContextAllocateCallback) == 32);
            assert!(offset_of!(FLT_CONTEXT_REGISTRATION, ContextFreeCallback) == 40);
            assert!(offset_of!(FLT_CONTEXT_REGISTRATION, Reserved1) == 48);
            assert!(size_of::<FLT_CONTEXT_REGISTRATION>() == 56);

            assert!(offset_of!(FLT_FILE_NAME_INFORMATION, Format) == 4);
            assert!(offset_of!(FLT_FILE_NAME_INFORMATION, Name) == 8);
            assert!(offset_of!(FLT_FILE_NAME_INFORMATION, ParentDir) == 104);
            assert!(size_of::<FLT_FILE_NAME_INFORMATION>() == 120);

            assert!(offset_of!(OPEN_REPARSE_LIST_ENTRY, OpenReparseListEntry) == 0);
            assert!(offset_of!(OPEN_REPARSE_LIST_ENTRY, ReparseTag) == 16);
            assert!(offset_of!(OPEN_REPARSE_LIST_ENTRY, Flags) == 20);
            assert!(offset_of!(OPEN_REPARSE_LIST_ENTRY, ReparseGuid) == 24);
            assert!(offset_of!(OPEN_REPARSE_LIST_ENTRY, Size) == 40);
            assert!(offset_of!(OPEN_REPARSE_LIST_ENTRY, RemainingLength) == 42);
            assert!(size_of::<OPEN_REPARSE_LIST_ENTRY>() == 48);

            assert!(offset_of!(FLT_CALLBACK_DATA_QUEUE, Flags) == 64);
            assert!(offset_of!(FLT_CALLBACK_DATA_QUEUE, Instance) == 72);
            assert!(offset_of!(FLT_CALLBACK_DATA_QUEUE, CompleteCanceledIo) == 120);
            assert!(size_of::<FLT_CALLBACK_DATA_QUEUE>() == 128);

            assert!(offset_of!(FILE_OBJECT, FsContext) == 0x18);
            assert!(offset_of!(FILE_OBJECT, FsContext2) == 0x20);
            assert!(offset_of!(FILE_OBJECT, Flags) == 0x50);
            assert!(offset_of!(FILE_OBJECT, FileName) == 0x58);
            assert!(offset_of!(FILE_OBJECT, CurrentByteOffset) == 0x68);
            assert!(size_of::<FILE_OBJECT>() == 0xd8);

            assert!(offset_of!(IO_SECURITY_CONTEXT, DesiredAccess) == 16);
            assert!(offset_of!(IO_SECURITY_CONTEXT, FullCreateOptions) == 20);
            assert!(size_of::<IO_SECURITY_CONTEXT>() == 24);

            assert!(offset_of!(IO_STATUS_BLOCK, Information) == 8);
            assert!(size_of::<IO_STATUS_BLOCK>() == 16);
            assert!(offset_of!(UNICODE_STRING, Buffer) == 8);
            assert!(size_of::<UNICODE_STRING>() == 16);

            assert!(offset_of!(MDL, MdlFlags) == 10);
            assert!(offset_of!(MDL, MappedSystemVa) == 24);
            assert!(offset_of!(MDL, ByteCount) == 40);
            assert!(size_of::<MDL>() == 48);

            assert!(offset_of!(KLOCK_QUEUE_HANDLE, OldIrql) == 16);
            assert!(size_of::<KLOCK_QUEUE_HANDLE>() == 24);

            assert!(offset_of!(FILE_BASIC_INFORMATION, FileAttributes) == 32);
            assert!(size_of::<FILE_BASIC_INFORMATION>() == 40);
            assert!(offset_of!(FILE_STANDARD_INFORMATION, NumberOfLinks) == 16);
            assert!(offset_of!(FILE_STANDARD_INFORMATION, Directory) == 21);
            assert!(size_of::<FILE_STANDARD_INFORMATION>() == 24);
            assert!(offset_of!(FILE_ATTRIBUTE_TAG_INFORMATION, ReparseTag) == 4);
            assert!(size_of::<FILE_ATTRIBUTE_TAG_INFORMATION>() == 8);
            assert!(size_of::<FILE_END_OF_FILE_INFORMATION>() == 8);
            assert!(offset_of!(FILE_ZERO_DATA_INFORMATION, BeyondFinalZero) == 8);
            assert!(size_of::<FILE_ZERO_DATA_INFORMATION>() == 16);
            assert!(offset_of!(FILE_FS_ATTRIBUTE_INFORMATION, FileSystemNameLength) == 8);
            assert!(offset_of!(FILE_FS_ATTRIBUTE_INFORMATION, FileSystemName) == 12);
            assert!(size_of::<FILE_FS_ATTRIBUTE_INFORMATION>() == 16);
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::{offset_of, size_of};
    use windows_sys::Wdk::Storage::FileSystem::Minifilters as sys;

    /// Offsets within FLT_IO_PARAMETER_BLOCK, as a debugger's `dt` shows them.
    fn at(arm_offset: usize) -> usize {
        offset_of!(FLT_IO_PARAMETER_BLOCK, Parameters) + arm_offset
    }

    #[test]
    fn the_parameter_block_is_72_bytes_with_parameters_at_24() {
        assert_eq!(size_of::<FLT_IO_PARAMETER_BLOCK>(), 0x48);
        assert_eq!(offset_of!(FLT_IO_PARAMETER_BLOCK, TargetFileObject), 0x08);
        assert_eq!(offset_of!(FLT_IO_PARAMETER_BLOCK, TargetInstance), 0x10);
        assert_eq!(offset_of!(FLT_IO_PARAMETER_BLOCK, Parameters), 0x18);
        assert_eq!(
            size_of::<FLT_PARAMETERS>(),
            48,
            "the size of the Others arm"
        );
    }

    #[test]
    fn read_and_write_put_key_at_8_and_byte_offset_at_16() {
        assert_eq!(offset_of!(ReadParameters, Key), 8);
        assert_eq!(offset_of!(ReadParameters, ByteOffset), 16);
        assert_eq!(offset_of!(ReadParameters, ReadBuffer), 24);
        assert_eq!(offset_of!(ReadParameters, MdlAddress), 32);
        assert_eq!(offset_of!(WriteParameters, ByteOffset), 16);
        assert_eq!(offset_of!(WriteParameters, WriteBuffer), 24);
        assert_eq!(at(offset_of!(ReadParameters, ByteOffset)), 0x28);
    }

    #[test]
    fn create_aligns_file_attributes_and_ea_length() {
        assert_eq!(offset_of!(CreateParameters, Options), 8);
        assert_eq!(offset_of!(CreateParameters, FileAttributes), 16);
        assert_eq!(offset_of!(CreateParameters, ShareAccess), 18);
        assert_eq!(offset_of!(CreateParameters, EaLength), 24);
        assert_eq!(offset_of!(CreateParameters, EaBuffer), 32);
        assert_eq!(offset_of!(CreateParameters, AllocationSize), 40);
    }

    #[test]
    fn information_classes_sit_at_8_and_buffers_at_16() {
        assert_eq!(
            offset_of!(QueryFileInformationParameters, FileInformationClass),
            8
        );
        assert_eq!(offset_of!(QueryFileInformationParameters, InfoBuffer), 16);
        assert_eq!(
            offset_of!(SetFileInformationParameters, FileInformationClass),
            8
        );
        assert_eq!(offset_of!(SetFileInformationParameters, ParentOfTarget), 16);
        assert_eq!(offset_of!(SetFileInformationParameters, Anonymous), 24);
        assert_eq!(offset_of!(SetFileInformationParameters, InfoBuffer), 32);
    }

    #[test]
    fn every_directory_control_minor_keeps_its_buffer_at_32_and_mdl_at_40() {
        assert_eq!(offset_of!(QueryDirectoryParameters, FileName), 8);
        assert_eq!(
            offset_of!(QueryDirectoryParameters, FileInformationClass),
            16
        );
        assert_eq!(offset_of!(QueryDirectoryParameters, FileIndex), 24);
        for (buffer, mdl) in [
            (
                offset_of!(QueryDirectoryParameters, DirectoryBuffer),
                offset_of!(QueryDirectoryParameters, MdlAddress),
            ),
            (
                offset_of!(NotifyDirectoryParameters, DirectoryBuffer),
                offset_of!(NotifyDirectoryParameters, MdlAddress),
            ),
            (
                offset_of!(NotifyDirectoryExParameters, DirectoryBuffer),
                offset_of!(NotifyDirectoryExParameters, MdlAddress),
            ),
        ] {
            assert_eq!((buffer, mdl), (32, 40));
        }
        assert_eq!(offset_of!(NotifyDirectoryParameters, CompletionFilter), 8);
        assert_eq!(
            offset_of!(NotifyDirectoryExParameters, DirectoryNotifyInformationClass),
            16
        );
    }

    #[test]
    fn fsctl_methods_share_their_first_three_members() {
        for (input, code) in [
            (
                offset_of!(FsControlCommon, InputBufferLength),
                offset_of!(FsControlCommon, FsControlCode),
            ),
            (
                offset_of!(FsControlNeither, InputBufferLength),
                offset_of!(FsControlNeither, FsControlCode),
            ),
            (
                offset_of!(FsControlBuffered, InputBufferLength),
                offset_of!(FsControlBuffered, FsControlCode),
            ),
            (
                offset_of!(FsControlDirect, InputBufferLength),
                offset_of!(FsControlDirect, FsControlCode),
            ),
        ] {
            assert_eq!((input, code), (8, 16));
        }
        assert_eq!(offset_of!(FsControlBuffered, SystemBuffer), 24);
        assert_eq!(offset_of!(FsControlNeither, InputBuffer), 24);
        assert_eq!(offset_of!(FsControlNeither, OutputBuffer), 32);
        assert_eq!(offset_of!(FsControlNeither, OutputMdlAddress), 40);
        assert_eq!(offset_of!(FsControlDirect, InputSystemBuffer), 24);
        assert_eq!(offset_of!(FsControlDirect, OutputMdlAddress), 40);
        assert_eq!(offset_of!(VerifyVolumeParameters, DeviceObject), 8);
    }

    #[test]
    fn the_unaligned_arms_keep_their_natural_layout() {
        assert_eq!(offset_of!(QueryOpenParameters, Length), 16);
        assert_eq!(offset_of!(QueryOpenParameters, FileInformationClass), 24);
        assert_eq!(
            offset_of!(NetworkQueryOpenParameters, NetworkInformation),
            8
        );
        assert_eq!(
            offset_of!(
                AcquireForSectionSynchronizationParameters,
                OutputInformation
            ),
            8
        );
        assert_eq!(
            offset_of!(
                AcquireForSectionSynchronizationParameters,
                AllocationAttributes
            ),
            20
        );
    }

    /// windows-sys 0.61 as it is (microsoft/windows-rs#3525): the reason for this module.
    /// When this fails, windows-sys has changed its layout: compare it with the numbers
    /// above before trusting it.
    #[test]
    fn windows_sys_still_drops_pointer_alignment() {
        assert_eq!(offset_of!(sys::FLT_PARAMETERS_3, ByteOffset), 8);
        assert_eq!(offset_of!(sys::FLT_PARAMETERS_5, InfoBuffer), 8);
        assert_eq!(offset_of!(sys::FLT_PARAMETERS_11_0, DirectoryBuffer), 24);
        assert_eq!(offset_of!(sys::FLT_PARAMETERS_12_3, SystemBuffer), 16);
    }
}
