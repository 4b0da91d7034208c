//! The communication port `\CloudFltPort` that sync providers connect to.
//!
//! Owns the server port's creation and each provider connection: ConnectNotify admits a
//! provider only with a connection context that `proto` decodes, DisconnectNotify closes
//! its client port. The server port itself is closed by [`super::filter`] at teardown.

use core::ffi::c_void;
use core::ptr::NonNull;

use cloudflt_proto::ConnectionContext;
use cloudflt_proto::port::{MAX_CONNECTIONS, PORT_NAME_UTF16};
use windows_sys::Wdk::Foundation::OBJECT_ATTRIBUTES;
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FltBuildDefaultSecurityDescriptor, FltCloseClientPort, FltCreateCommunicationPort,
    FltFreeSecurityDescriptor, PFLT_FILTER, PFLT_PORT,
};
use windows_sys::Win32::Foundation::{
    NTSTATUS, OBJ_CASE_INSENSITIVE, OBJ_KERNEL_HANDLE, STATUS_INSUFFICIENT_RESOURCES,
    STATUS_INVALID_DEVICE_REQUEST, STATUS_INVALID_PARAMETER, STATUS_SUCCESS, UNICODE_STRING,
};
use windows_sys::Win32::Security::PSECURITY_DESCRIPTOR;

use super::filter::Driver;
use super::pool::{PoolBox, TAG_CONNECTION};
use super::status::{self, nt_success};

/// `FLT_PORT_ALL_ACCESS` from `fltKernel.h`: `FLT_PORT_CONNECT | STANDARD_RIGHTS_ALL`.
const FLT_PORT_ALL_ACCESS: u32 = 0x0001 | 0x001F_0000;

/// The port name, in static memory because the `UNICODE_STRING` points at it.
static PORT_NAME: [u16; PORT_NAME_UTF16.len()] = PORT_NAME_UTF16;

/// One connected provider.
pub(super) struct Connection {
    filter: PFLT_FILTER,
    client_port: PFLT_PORT,
}

/// Creates the server port, reachable by SYSTEM and Administrators only.
///
/// `driver` becomes the ServerPortCookie, so it must outlive the port.
pub(super) fn create(filter: PFLT_FILTER, driver: *const Driver) -> Result<PFLT_PORT, NTSTATUS> {
    let mut descriptor: PSECURITY_DESCRIPTOR = core::ptr::null_mut();
    // SAFETY: `descriptor` is a valid out pointer; PASSIVE_LEVEL (DriverEntry).
    let status = unsafe { FltBuildDefaultSecurityDescriptor(&mut descriptor, FLT_PORT_ALL_ACCESS) };
    if !nt_success(status) {
        return Err(status);
    }
    let byte_len = (PORT_NAME.len() * 2) as u16;
    let name = UNICODE_STRING {
        Length: byte_len,
        MaximumLength: byte_len,
        // FltCreateCommunicationPort only reads the name.
        Buffer: PORT_NAME.as_ptr().cast_mut(),
    };
    let attributes = OBJECT_ATTRIBUTES {
        Length: core::mem::size_of::<OBJECT_ATTRIBUTES>() as u32,
        RootDirectory: core::ptr::null_mut(),
        ObjectName: &name,
        // A kernel handle: the port must not show up in (or be closable from) whichever
        // process context DriverEntry happens to run in.
        Attributes: OBJ_KERNEL_HANDLE | OBJ_CASE_INSENSITIVE,
        SecurityDescriptor: descriptor.cast_const().cast(),
        SecurityQualityOfService: core::ptr::null(),
    };
    let mut port: PFLT_PORT = 0;
    // SAFETY: `filter` is registered; `attributes` and `name` outlive the call; the
    // callbacks have the exact FltMgr signatures; `driver` outlives the port (the caller
    // closes the port before freeing it).
    let status = unsafe {
        FltCreateCommunicationPort(
            filter,
            &mut port,
            &attributes,
            driver.cast(),
            Some(connect_notify),
            Some(disconnect_notify),
            Some(message_notify),
            MAX_CONNECTIONS,
        )
    };
    // SAFETY: built by FltBuildDefaultSecurityDescriptor above; the port keeps its own
    // copy of the security it was created with.
    unsafe { FltFreeSecurityDescriptor(descriptor) };
    if nt_success(status) {
        Ok(port)
    } else {
        Err(status)
    }
}

/// ConnectNotifyCallback: admits a provider whose connection context decodes.
///
/// The context is the kernel copy the I/O manager captured from the EA buffer of the
/// port open, so it is read directly.
///
/// # Safety
/// Called by FltMgr at PASSIVE_LEVEL with the cookie given at port creation and a
/// context of `size` bytes.
unsafe extern "system" fn connect_notify(
    client_port: PFLT_PORT,
    server_cookie: *const c_void,
    context: *const c_void,
    size: u32,
    connection_cookie: *mut *mut c_void,
) -> NTSTATUS {
    let bytes: &[u8] = if context.is_null() || size == 0 {
        &[]
    } else {
        // SAFETY: FltMgr passes `size` readable bytes of captured kernel memory, valid for
        // the duration of the callback.
        unsafe { core::slice::from_raw_parts(context.cast::<u8>(), size as usize) }
    };
    if let Err(error) = ConnectionContext::decode(bytes) {
        return status::connect_refusal(error);
    }
    // SAFETY: the server cookie is the driver state, alive while the server port is.
    let Some(driver) = (unsafe { server_cookie.cast::<Driver>().as_ref() }) else {
        return STATUS_INVALID_PARAMETER;
    };
    if connection_cookie.is_null() {
        return STATUS_INVALID_PARAMETER;
    }
    let connection = Connection {
        filter: driver.filter(),
        client_port,
    };
    let Some(connection) = PoolBox::try_new(connection, TAG_CONNECTION) else {
        return STATUS_INSUFFICIENT_RESOURCES;
    };
    // SAFETY: checked non-null above; FltMgr passes a writable cookie slot.
    unsafe { connection_cookie.write(PoolBox::into_raw(connection).as_ptr().cast()) };
    STATUS_SUCCESS
}

/// DisconnectNotifyCallback: closes the provider's client port and frees the connection.
///
/// # Safety
/// Called by FltMgr at PASSIVE_LEVEL, once per accepted connection, with the cookie
/// ConnectNotify returned.
unsafe extern "system" fn disconnect_notify(connection_cookie: *const c_void) {
    let Some(ptr) = NonNull::new(connection_cookie.cast_mut().cast::<Connection>()) else {
        return;
    };
    // SAFETY: the cookie is the `PoolBox::into_raw` of ConnectNotify, handed back once.
    let mut connection = unsafe { PoolBox::from_raw(ptr, TAG_CONNECTION) };
    let filter = connection.filter;
    // SAFETY: the client port of this connection, closed exactly once, here.
    unsafe { FltCloseClientPort(filter, &mut connection.client_port) };
}

/// MessageNotifyCallback: protocol version 1 defines no provider-to-driver message yet,
/// so every message is refused without touching the caller's buffers.
///
/// # Safety
/// Called by FltMgr at PASSIVE_LEVEL; `returned` is a valid out pointer or NULL.
unsafe extern "system" fn message_notify(
    _connection_cookie: *const c_void,
    _input: *const c_void,
    _input_len: u32,
    _output: *mut c_void,
    _output_len: u32,
    returned: *mut u32,
) -> NTSTATUS {
    if !returned.is_null() {
        // SAFETY: FltMgr passes a writable ULONG.
        unsafe { returned.write(0) };
    }
    STATUS_INVALID_DEVICE_REQUEST
}
