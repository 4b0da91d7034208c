//! Who may do what (issue 13): the port admits every authenticated user, and the driver
//! decides per connection and per request.
//!
//! - The port's descriptor grants FLT_PORT_ALL_ACCESS to SYSTEM and Administrators and
//!   FLT_PORT_CONNECT to Authenticated Users, so sync engines run as the signed-in user.
//! - Registering, updating, unregistering and connecting a sync root need write access
//!   to the root directory (FILE_WRITE_DATA or WRITE_DAC, cfapi's rule), checked by
//!   opening it with IO_FORCE_ACCESS_CHECK in the caller's context (ConnectNotify and
//!   MessageNotify run in the calling thread), so the I/O manager applies the
//!   directory's DACL to the caller's token; refused with
//!   STATUS_CLOUD_FILE_ACCESS_DENIED.
//! - Image rules stay administrator-only: whether a management connection's process
//!   token is an administrator's is taken once, at connect (SeTokenIsAdmin on its
//!   primary token: an impersonating thread cannot lend a connection rights its process
//!   lacks, and the answer cannot change under a connection already made).

use windows_sys::Wdk::Foundation::OBJECT_ATTRIBUTES;
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{FltClose, FltCreateFileEx2, PFLT_FILTER};
use windows_sys::Wdk::Storage::FileSystem::{
    FILE_DIRECTORY_FILE, FILE_OPEN, FILE_OPEN_REPARSE_POINT, FILE_SYNCHRONOUS_IO_NONALERT,
    PsDereferencePrimaryToken, PsReferencePrimaryToken, SeTokenIsAdmin,
};
use windows_sys::Wdk::System::SystemServices::{IO_FORCE_ACCESS_CHECK, IoGetCurrentProcess};
use windows_sys::Win32::Foundation::{
    HANDLE, NTSTATUS, OBJ_CASE_INSENSITIVE, OBJ_KERNEL_HANDLE, STATUS_ACCESS_DENIED,
    STATUS_CLOUD_FILE_ACCESS_DENIED, STATUS_INVALID_PARAMETER, UNICODE_STRING,
};
use windows_sys::Win32::System::IO::IO_STATUS_BLOCK;

use super::status::nt_success;

/// `FLT_PORT_CONNECT`.
const FLT_PORT_CONNECT: u32 = 0x0001;
/// `FLT_PORT_ALL_ACCESS`: `FLT_PORT_CONNECT | STANDARD_RIGHTS_ALL`.
const FLT_PORT_ALL_ACCESS: u32 = FLT_PORT_CONNECT | 0x001F_0000;

/// Bytes of the port's descriptor.
const PORT_SD_LEN: usize = 20 + 8 + 20 + 24 + 20;

/// A self-relative SECURITY_DESCRIPTOR, aligned as the object manager reads it.
#[repr(C, align(4))]
pub(crate) struct PortDescriptor(pub(crate) [u8; PORT_SD_LEN]);

/// The port's descriptor: revision 1, SE_DACL_PRESENT | SE_SELF_RELATIVE, no owner or
/// group (the object manager takes the creator's defaults), a DACL of three
/// ACCESS_ALLOWED ACEs: SYSTEM (S-1-5-18) and Administrators (S-1-5-32-544)
/// FLT_PORT_ALL_ACCESS, Authenticated Users (S-1-5-11) FLT_PORT_CONNECT. Built at compile
/// time: nothing to allocate or free.
pub(crate) static PORT_DESCRIPTOR: PortDescriptor = PortDescriptor(port_descriptor());

const fn port_descriptor() -> [u8; PORT_SD_LEN] {
    const SYSTEM: [u8; 12] = [1, 1, 0, 0, 0, 0, 0, 5, 18, 0, 0, 0];
    const ADMINISTRATORS: [u8; 16] = [1, 2, 0, 0, 0, 0, 0, 5, 32, 0, 0, 0, 0x20, 2, 0, 0];
    const AUTHENTICATED_USERS: [u8; 12] = [1, 1, 0, 0, 0, 0, 0, 5, 11, 0, 0, 0];
    let mut sd = [0u8; PORT_SD_LEN];
    // SECURITY_DESCRIPTOR_RELATIVE: Revision, Sbz1, Control, Owner, Group, Sacl, Dacl.
    sd[0] = 1;
    let control: u16 = 0x8004;
    sd[2] = control.to_le_bytes()[0];
    sd[3] = control.to_le_bytes()[1];
    sd[16] = 20;
    // ACL: AclRevision 2, Sbz1, AclSize, AceCount 3, Sbz2.
    let acl_size = (PORT_SD_LEN - 20) as u16;
    sd[20] = 2;
    sd[22] = acl_size.to_le_bytes()[0];
    sd[23] = acl_size.to_le_bytes()[1];
    sd[24] = 3;
    let mut at = 28;
    at = ace(&mut sd, at, FLT_PORT_ALL_ACCESS, &SYSTEM);
    at = ace(&mut sd, at, FLT_PORT_ALL_ACCESS, &ADMINISTRATORS);
    let _ = ace(&mut sd, at, FLT_PORT_CONNECT, &AUTHENTICATED_USERS);
    sd
}

/// Writes an ACCESS_ALLOWED_ACE at `at`; returns the offset after it.
#[expect(
    clippy::indexing_slicing,
    reason = "const-evaluated into a static: an out-of-range index fails the build"
)]
const fn ace(sd: &mut [u8; PORT_SD_LEN], at: usize, mask: u32, sid: &[u8]) -> usize {
    let size = 8 + sid.len();
    sd[at] = 0; // ACCESS_ALLOWED_ACE_TYPE
    sd[at + 1] = 0;
    sd[at + 2] = (size as u16).to_le_bytes()[0];
    sd[at + 3] = (size as u16).to_le_bytes()[1];
    let m = mask.to_le_bytes();
    let mut i = 0;
    while i < 4 {
        sd[at + 4 + i] = m[i];
        i += 1;
    }
    let mut j = 0;
    while j < sid.len() {
        sd[at + 8 + j] = sid[j];
        j += 1;
    }
    at + size
}

/// Whether the calling process's primary token is an administrator's (SYSTEM or an
/// elevated administrator). PASSIVE_LEVEL, in the caller's context.
pub(crate) fn caller_is_admin() -> bool {
    // SAFETY: no preconditions; the current process.
    let process = unsafe { IoGetCurrentProcess() };
    // SAFETY: the current process, alive while its thread runs this.
    let token = unsafe { PsReferencePrimaryToken(process) };
    if token.is_null() {
        return false;
    }
    // SAFETY: a referenced token.
    let admin = unsafe { SeTokenIsAdmin(token) };
    // SAFETY: the reference taken above, released once.
    unsafe { PsDereferencePrimaryToken(token) };
    admin
}

/// FILE_WRITE_DATA (FILE_ADD_FILE on a directory).
const FILE_WRITE_DATA: u32 = 0x0002;
/// WRITE_DAC.
const WRITE_DAC: u32 = 0x0004_0000;

/// Whether the caller (this thread's token) may write the directory `root` (an NT path):
/// WRITE_DATA or WRITE_DAC, as cfapi asks of a sync root's registrant. Runs in the
/// caller's context at PASSIVE_LEVEL; the open starts at the top of the volume's stack.
pub(crate) fn may_write_root(filter: PFLT_FILTER, root: &[u16]) -> Result<(), NTSTATUS> {
    let directory = FILE_DIRECTORY_FILE;
    match open_checked(filter, root, FILE_WRITE_DATA, directory) {
        Err(STATUS_ACCESS_DENIED) => match open_checked(filter, root, WRITE_DAC, directory) {
            Err(STATUS_ACCESS_DENIED) => Err(STATUS_CLOUD_FILE_ACCESS_DENIED),
            other => other,
        },
        other => other,
    }
}

/// FILE_READ_ATTRIBUTES.
const FILE_READ_ATTRIBUTES: u32 = 0x0080;

/// Whether the caller (this thread's token) may open the file or directory `path` (an NT
/// path) to read its attributes: what a process other than the provider must be able to
/// do to a placeholder before the driver acts on it for that process, as the root's
/// policies allow (AUTO_DEHYDRATION_ALLOWED, UPDATE_UNRESTRICTED). The policy is the
/// provider's consent; this keeps a caller from acting on what it cannot even see.
/// Opened as a reparse point: the check touches no data. STATUS_CLOUD_FILE_ACCESS_DENIED
/// when refused; the open's own failure (a missing file) otherwise.
pub(crate) fn may_see(filter: PFLT_FILTER, path: &[u16]) -> Result<(), NTSTATUS> {
    match open_checked(filter, path, FILE_READ_ATTRIBUTES, FILE_OPEN_REPARSE_POINT) {
        Err(STATUS_ACCESS_DENIED) => Err(STATUS_CLOUD_FILE_ACCESS_DENIED),
        other => other,
    }
}

/// Opens and closes `path` with `access` and the create `options`, checked as for a
/// user-mode caller (IO_FORCE_ACCESS_CHECK).
fn open_checked(
    filter: PFLT_FILTER,
    path: &[u16],
    access: u32,
    options: u32,
) -> Result<(), NTSTATUS> {
    let bytes =
        u16::try_from(path.len().saturating_mul(2)).map_err(|_| STATUS_INVALID_PARAMETER)?;
    let name = UNICODE_STRING {
        Length: bytes,
        MaximumLength: bytes,
        // Only read by the call.
        Buffer: path.as_ptr().cast_mut(),
    };
    let object = OBJECT_ATTRIBUTES {
        Length: core::mem::size_of::<OBJECT_ATTRIBUTES>() as u32,
        RootDirectory: core::ptr::null_mut(),
        ObjectName: &name,
        Attributes: OBJ_KERNEL_HANDLE | OBJ_CASE_INSENSITIVE,
        SecurityDescriptor: core::ptr::null(),
        SecurityQualityOfService: core::ptr::null(),
    };
    let mut handle: HANDLE = core::ptr::null_mut();
    // SAFETY: IO_STATUS_BLOCK is plain data; zero is a valid pattern.
    let mut iosb: IO_STATUS_BLOCK = unsafe { core::mem::zeroed() };
    // SAFETY: pointers outlive the call; PASSIVE_LEVEL (callers' contract); a kernel
    // handle, closed below; no file object asked for.
    let status = unsafe {
        FltCreateFileEx2(
            filter,
            0,
            &mut handle,
            core::ptr::null_mut(),
            access | 0x0010_0000, // SYNCHRONIZE
            &object,
            &mut iosb,
            core::ptr::null(),
            0,
            0x7, // FILE_SHARE_READ | FILE_SHARE_WRITE | FILE_SHARE_DELETE
            FILE_OPEN,
            options | FILE_SYNCHRONOUS_IO_NONALERT,
            core::ptr::null(),
            0,
            IO_FORCE_ACCESS_CHECK,
            core::ptr::null(),
        )
    };
    if !nt_success(status) {
        return Err(status);
    }
    // SAFETY: the handle just opened, closed once.
    unsafe { FltClose(handle) };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_port_descriptor_is_self_relative_with_three_allowed_aces() {
        let sd = &PORT_DESCRIPTOR.0;
        assert_eq!(
            &sd[..4],
            &[1, 0, 0x04, 0x80],
            "revision 1, DACL present, self-relative"
        );
        assert_eq!(u32::from_le_bytes([sd[16], sd[17], sd[18], sd[19]]), 20);
        assert_eq!(
            u16::from_le_bytes([sd[22], sd[23]]) as usize,
            PORT_SD_LEN - 20
        );
        assert_eq!(sd[24], 3, "three ACEs");
        // The last ACE: Authenticated Users may connect, nothing more.
        let last = PORT_SD_LEN - 20;
        assert_eq!(&sd[last..last + 4], &[0, 0, 20, 0]);
        assert_eq!(
            u32::from_le_bytes([sd[last + 4], sd[last + 5], sd[last + 6], sd[last + 7]]),
            1
        );
        assert_eq!(&sd[last + 8..], &[1, 1, 0, 0, 0, 0, 0, 5, 11, 0, 0, 0]);
    }
}
