//! Filter communication ports, kernel side (FltCreateCommunicationPort and friends) and
//! user side (what `FilterConnectCommunicationPort` does).
//!
//! Owns: server ports by name, client ports, and the security descriptors
//! FltBuildDefaultSecurityDescriptor hands out. Checks: a port must be created with a
//! security descriptor and OBJ_KERNEL_HANDLE, descriptors are freed, every connection's
//! client port is closed in DisconnectNotify, and (in fltmgr) server ports are closed
//! before FltUnregisterFilter.

use std::ffi::c_void;

use windows_sys::Wdk::Foundation::OBJECT_ATTRIBUTES;
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    PFLT_CONNECT_NOTIFY, PFLT_DISCONNECT_NOTIFY, PFLT_FILTER, PFLT_MESSAGE_NOTIFY, PFLT_PORT,
};
use windows_sys::Win32::Foundation::{
    NTSTATUS, OBJ_KERNEL_HANDLE, STATUS_ACCESS_DENIED, STATUS_CONNECTION_COUNT_LIMIT,
    STATUS_INSUFFICIENT_RESOURCES, STATUS_INVALID_PARAMETER, STATUS_OBJECT_NAME_COLLISION,
    STATUS_OBJECT_NAME_NOT_FOUND, STATUS_SUCCESS,
};
use windows_sys::Win32::Security::PSECURITY_DESCRIPTOR;

use super::irql::{self, PASSIVE_LEVEL};
use super::pool::Owner;
use super::{Machine, with_kernel};

/// `FLT_PORT_CONNECT`.
const FLT_PORT_CONNECT: u32 = 0x0001;
/// Largest connection context FilterConnectCommunicationPort accepts (`wSizeOfContext`
/// is a WORD, and it travels in an EA value after a header).
const MAX_CONTEXT: usize = u16::MAX as usize - 0x40;
/// Bytes of a security descriptor handed out (SYSTEM + Administrators DACL).
const SD_BYTES: usize = 64;

pub(crate) struct ServerPort {
    pub(crate) filter: PFLT_FILTER,
    pub(crate) name: String,
    pub(crate) closed: bool,
    cookie: usize,
    connect: PFLT_CONNECT_NOTIFY,
    disconnect: PFLT_DISCONNECT_NOTIFY,
    // Kept for message traffic, which later work models.
    _message: PFLT_MESSAGE_NOTIFY,
    max_connections: usize,
    /// Access the descriptor grants (FLT_PORT_ALL_ACCESS to SYSTEM and Administrators).
    access: u32,
}

pub(crate) struct ClientPort {
    server: PFLT_PORT,
    /// ConnectNotify's ConnectionPortCookie.
    cookie: usize,
    /// Set once the driver closes it with FltCloseClientPort.
    closed: bool,
    /// Set once DisconnectNotify has run.
    disconnected: bool,
}

/// Who opens the port from user mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// LocalSystem or an elevated administrator: in the default descriptor's DACL.
    Administrator,
    /// A standard user: not in the DACL.
    StandardUser,
}

/// A user-mode connection, as the handle FilterConnectCommunicationPort returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientId(PFLT_PORT);

/// FltBuildDefaultSecurityDescriptor.
///
/// # Safety
/// `out` must be writable.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn FltBuildDefaultSecurityDescriptor(
    out: *mut PSECURITY_DESCRIPTOR,
    access: u32,
) -> NTSTATUS {
    irql::check("FltBuildDefaultSecurityDescriptor", PASSIVE_LEVEL);
    if out.is_null() {
        return STATUS_INVALID_PARAMETER;
    }
    with_kernel(|k| {
        // FltMgr allocates it from paged pool with its own tag ('FMsd').
        let Some(ptr) = k.pool.allocate(
            SD_BYTES,
            u32::from_le_bytes(*b"FMsd"),
            Owner::FltMgr("security descriptor"),
        ) else {
            return STATUS_INSUFFICIENT_RESOURCES;
        };
        k.security_descriptors.insert(ptr as usize, access);
        // SAFETY: checked non-null above.
        unsafe { out.write(ptr.cast()) };
        STATUS_SUCCESS
    })
}

/// FltFreeSecurityDescriptor.
#[unsafe(no_mangle)]
pub extern "system" fn FltFreeSecurityDescriptor(sd: PSECURITY_DESCRIPTOR) {
    irql::check("FltFreeSecurityDescriptor", PASSIVE_LEVEL);
    with_kernel(|k| {
        if k.security_descriptors.remove(&(sd as usize)).is_none() {
            k.violation(
                "FltFreeSecurityDescriptor",
                format!(
                    "{sd:p} was not built by FltBuildDefaultSecurityDescriptor or is freed twice"
                ),
            );
            return;
        }
        if let Err(message) = k
            .pool
            .free(sd.cast(), None, Owner::FltMgr("security descriptor"))
        {
            k.violation("FltFreeSecurityDescriptor", message);
        }
    });
}

/// FltCreateCommunicationPort.
///
/// # Safety
/// `attributes` must be a valid OBJECT_ATTRIBUTES with a valid name.
#[unsafe(no_mangle)]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "system" fn FltCreateCommunicationPort(
    filter: PFLT_FILTER,
    server_port: *mut PFLT_PORT,
    attributes: *const OBJECT_ATTRIBUTES,
    cookie: *const c_void,
    connect: PFLT_CONNECT_NOTIFY,
    disconnect: PFLT_DISCONNECT_NOTIFY,
    message: PFLT_MESSAGE_NOTIFY,
    max_connections: i32,
) -> NTSTATUS {
    irql::check("FltCreateCommunicationPort", PASSIVE_LEVEL);
    // SAFETY: the caller's OBJECT_ATTRIBUTES.
    let Some(oa) = (unsafe { attributes.as_ref() }) else {
        return STATUS_INVALID_PARAMETER;
    };
    // SAFETY: the name the caller points at, read within its Length.
    let name = unsafe { unicode(oa.ObjectName) };
    with_kernel(|k| {
        let Some(name) = name else {
            k.violation(
                "FltCreateCommunicationPort",
                "ObjectName is not a valid UNICODE_STRING",
            );
            return STATUS_INVALID_PARAMETER;
        };
        if oa.Length as usize != std::mem::size_of::<OBJECT_ATTRIBUTES>()
            || server_port.is_null()
            || max_connections <= 0
            || connect.is_none()
        {
            return STATUS_INVALID_PARAMETER;
        }
        if !k.live_filter("FltCreateCommunicationPort", filter) {
            return STATUS_INVALID_PARAMETER;
        }
        if let Some(status) = k.injected("FltCreateCommunicationPort") {
            return status;
        }
        if oa.Attributes & OBJ_KERNEL_HANDLE == 0 {
            k.violation("FltCreateCommunicationPort", "port handle created without OBJ_KERNEL_HANDLE: it lands in the current process's handle table");
        }
        let access = match k
            .security_descriptors
            .get(&(oa.SecurityDescriptor as usize))
        {
            Some(access) => *access,
            None => {
                k.violation("FltCreateCommunicationPort", "no security descriptor from FltBuildDefaultSecurityDescriptor: the port would be open to everyone");
                0
            }
        };
        if k.server_ports
            .values()
            .any(|p| !p.closed && p.name.eq_ignore_ascii_case(&name))
        {
            return STATUS_OBJECT_NAME_COLLISION;
        }
        let handle = k.handle();
        k.server_ports.insert(
            handle,
            ServerPort {
                filter,
                name,
                closed: false,
                cookie: cookie as usize,
                connect,
                disconnect,
                _message: message,
                max_connections: max_connections as usize,
                access,
            },
        );
        // SAFETY: checked non-null above.
        unsafe { server_port.write(handle) };
        STATUS_SUCCESS
    })
}

/// # Safety
/// `s` is NULL or a UNICODE_STRING whose buffer holds `Length` bytes.
unsafe fn unicode(s: *const windows_sys::Win32::Foundation::UNICODE_STRING) -> Option<String> {
    // SAFETY: per the contract.
    let s = unsafe { s.as_ref() }?;
    if s.Length % 2 != 0 || s.Length > s.MaximumLength || (s.Length > 0 && s.Buffer.is_null()) {
        return None;
    }
    if s.Length == 0 {
        return Some(String::new());
    }
    // SAFETY: `Length` bytes at `Buffer`, per the contract.
    let units = unsafe { std::slice::from_raw_parts(s.Buffer, usize::from(s.Length) / 2) };
    String::from_utf16(units).ok()
}

/// FltCloseCommunicationPort: no new connections; existing ones stay.
#[unsafe(no_mangle)]
pub extern "system" fn FltCloseCommunicationPort(port: PFLT_PORT) {
    irql::check("FltCloseCommunicationPort", PASSIVE_LEVEL);
    with_kernel(|k| match k.server_ports.get_mut(&port) {
        Some(p) if !p.closed => p.closed = true,
        _ => k.violation(
            "FltCloseCommunicationPort",
            format!("{port:#x} is not an open server port"),
        ),
    });
}

/// FltCloseClientPort.
///
/// # Safety
/// `port` must be writable.
#[unsafe(no_mangle)]
pub unsafe extern "system" fn FltCloseClientPort(_filter: PFLT_FILTER, port: *mut PFLT_PORT) {
    irql::check("FltCloseClientPort", PASSIVE_LEVEL);
    if port.is_null() {
        return;
    }
    // SAFETY: the driver's port slot.
    let handle = unsafe { port.read() };
    if handle == 0 {
        // Documented: closing an already-closed (NULL) client port does nothing.
        return;
    }
    with_kernel(|k| match k.client_ports.get_mut(&handle) {
        Some(c) if !c.closed => c.closed = true,
        _ => k.violation(
            "FltCloseClientPort",
            format!("{handle:#x} is not an open client port"),
        ),
    });
    // SAFETY: as above; FltCloseClientPort sets the caller's handle to NULL.
    unsafe { port.write(0) };
}

/// Runs DisconnectNotify for one connection and checks the driver closed its port.
fn disconnect(client: PFLT_PORT) {
    let plan = with_kernel(|k| {
        let c = k.client_ports.get_mut(&client)?;
        if c.disconnected {
            return None;
        }
        c.disconnected = true;
        let (cookie, server) = (c.cookie, c.server);
        let callback = k.server_ports.get(&server).and_then(|s| s.disconnect);
        Some((callback, cookie))
    });
    let Some((callback, cookie)) = plan else {
        return;
    };
    if let Some(callback) = callback {
        // SAFETY: the driver's DisconnectNotify with the cookie its ConnectNotify gave.
        unsafe { callback(cookie as *const c_void) };
    }
    with_kernel(|k| {
        if let Some(c) = k.client_ports.remove(&client)
            && !c.closed
        {
            k.violation(
                "DisconnectNotify",
                "returned without FltCloseClientPort: the connection leaks",
            );
        }
    });
}

/// FltUnregisterFilter's part: every client of the filter's ports is disconnected.
pub(crate) fn disconnect_all(filter: PFLT_FILTER) {
    let clients: Vec<PFLT_PORT> = with_kernel(|k| {
        k.client_ports
            .iter()
            .filter(|(_, c)| {
                k.server_ports
                    .get(&c.server)
                    .is_some_and(|s| s.filter == filter)
            })
            .map(|(h, _)| *h)
            .collect()
    });
    for client in clients {
        disconnect(client);
    }
}

/// A server port as a test sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortView {
    /// Object name.
    pub name: String,
    /// Whether FltCloseCommunicationPort was called.
    pub closed: bool,
    /// MaxConnections.
    pub max_connections: usize,
    /// Access the default descriptor grants; 0 if created without one.
    pub access: u32,
    /// Open client connections.
    pub connections: usize,
}

impl Machine {
    /// Every server port ever created, in no particular order.
    pub fn ports(&self) -> Vec<PortView> {
        with_kernel(|k| {
            k.server_ports
                .iter()
                .map(|(h, p)| PortView {
                    name: p.name.clone(),
                    closed: p.closed,
                    max_connections: p.max_connections,
                    access: p.access,
                    connections: k.client_ports.values().filter(|c| c.server == *h).count(),
                })
                .collect()
        })
    }

    /// `FilterConnectCommunicationPort(name, 0, context, ...)` from a process running as
    /// `caller`: the NTSTATUS the driver (or FltMgr) answered, or the connection.
    pub fn connect(
        &self,
        name: &str,
        context: &[u8],
        caller: Caller,
    ) -> Result<ClientId, NTSTATUS> {
        if context.len() > MAX_CONTEXT {
            return Err(STATUS_INVALID_PARAMETER);
        }
        let plan = with_kernel(|k| {
            let (server, port) = k
                .server_ports
                .iter()
                .find(|(_, p)| !p.closed && p.name.eq_ignore_ascii_case(name))?;
            let server = *server;
            let granted = caller == Caller::Administrator && port.access & FLT_PORT_CONNECT != 0;
            let open = k
                .client_ports
                .values()
                .filter(|c| c.server == server)
                .count();
            Some((
                server,
                port.cookie,
                port.connect,
                granted,
                open >= port.max_connections,
            ))
        });
        let Some((server, cookie, connect, granted, full)) = plan else {
            return Err(STATUS_OBJECT_NAME_NOT_FOUND);
        };
        if !granted {
            return Err(STATUS_ACCESS_DENIED);
        }
        if full {
            return Err(STATUS_CONNECTION_COUNT_LIMIT);
        }
        let client = with_kernel(|k| {
            let h = k.handle();
            k.client_ports.insert(
                h,
                ClientPort {
                    server,
                    cookie: 0,
                    closed: false,
                    disconnected: false,
                },
            );
            h
        });
        // The I/O manager captures the EA buffer: the driver sees a kernel copy.
        let captured: Vec<u8> = context.to_vec();
        let mut connection_cookie: *mut c_void = std::ptr::null_mut();
        let status = match connect {
            // SAFETY: the driver's ConnectNotify with a captured context valid for the call.
            Some(connect) => unsafe {
                connect(
                    client,
                    cookie as *const c_void,
                    if captured.is_empty() {
                        std::ptr::null()
                    } else {
                        captured.as_ptr().cast()
                    },
                    captured.len() as u32,
                    &mut connection_cookie,
                )
            },
            None => STATUS_SUCCESS,
        };
        with_kernel(|k| {
            if status < 0 {
                k.client_ports.remove(&client);
                return Err(status);
            }
            if status != STATUS_SUCCESS {
                k.violation(
                    "ConnectNotify",
                    format!("returned success code {status:#x} other than STATUS_SUCCESS"),
                );
            }
            if let Some(c) = k.client_ports.get_mut(&client) {
                c.cookie = connection_cookie as usize;
            }
            Ok(ClientId(client))
        })
    }

    /// Closes the user-mode handle: FltMgr calls DisconnectNotify.
    pub fn disconnect(&self, client: ClientId) {
        disconnect(client.0);
    }
}
