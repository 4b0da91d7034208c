//! The communication port `\CloudFltPort` that sync providers and management clients
//! connect to.
//!
//! Owns the server port's creation and each connection: ConnectNotify admits a client
//! only with a connection context that `proto` decodes, DisconnectNotify closes its client
//! port. The server port itself is closed by [`super::filter`] at teardown.
//!
//! Two kinds of connection, both only for SYSTEM and Administrators (the port's
//! security):
//! - a *provider* serves a sync root (registered in [`super::providers`]); its connection
//!   cookie is its pool object, and it may send only provider messages;
//! - a *management* client serves nothing and is sent nothing; it may send only the
//!   image-rule messages ([`super::rules`]). Its cookie is the address of one of the
//!   static [`MANAGERS`] slots, which is how the callbacks tell the two apart.
//!
//! A message of the other kind's, or one that does not decode, is answered with
//! STATUS_CLOUD_FILE_INVALID_REQUEST (request id 0) in the [`Reply`]: the documented
//! "this request is not valid here" of the cloud-file family, which cfapi-style clients
//! already map to a message.

use core::ffi::c_void;
use core::ptr::NonNull;

use cloudflt_proto::PortContext;
use cloudflt_proto::msg::{self, Header, ManagementMessage, ProviderMessage, Reply};
use cloudflt_proto::port::{MAX_CONNECTIONS, PORT_NAME_UTF16};
use cloudflt_proto::rules::MAX_RULE_LIST_LEN;
use windows_sys::Wdk::Foundation::OBJECT_ATTRIBUTES;
use windows_sys::Wdk::Storage::FileSystem::Minifilters::{
    FltCloseClientPort, FltCreateCommunicationPort, PFLT_FILTER, PFLT_PORT,
};
use windows_sys::Win32::Foundation::{
    NTSTATUS, OBJ_CASE_INSENSITIVE, OBJ_KERNEL_HANDLE, STATUS_ACCESS_DENIED,
    STATUS_CONNECTION_COUNT_LIMIT, STATUS_INSUFFICIENT_RESOURCES, STATUS_INVALID_PARAMETER,
    STATUS_SUCCESS, UNICODE_STRING,
};

use cloudflt_proto::msg::{Kind, TRANSFER_HEAD_LEN, TransferHead};
use windows_sys::Wdk::System::SystemServices::PsGetCurrentProcessId;
use windows_sys::Win32::Foundation::{
    STATUS_BUFFER_TOO_SMALL, STATUS_CLOUD_FILE_ALREADY_CONNECTED,
    STATUS_CLOUD_FILE_INVALID_REQUEST, STATUS_CLOUD_FILE_PROVIDER_TERMINATED,
    STATUS_INVALID_USER_BUFFER,
};

use super::driver::Driver;
use super::file::PoolBuf;
use super::pool::{PoolBox, TAG_CONNECTION};
use super::providers::{self, Provider, ProviderRef};
use super::status::{self, nt_success};
use super::sync::SpinLock;
use super::user::{SecuredOutput, UserData};
use super::{hydrate, notify, placeholder, roots, rules, security, seh};

/// The port name, in static memory because the `UNICODE_STRING` points at it.
static PORT_NAME: [u16; PORT_NAME_UTF16.len()] = PORT_NAME_UTF16;

/// How many management connections may be open at once; one more is refused with
/// STATUS_CONNECTION_COUNT_LIMIT. (Rules are set rarely, by an administrator's tool.)
const MAX_MANAGERS: usize = 4;

/// A management connection's slot: the filter, the connection's client port and whether
/// its process is an administrator's while it is connected, `None` while the slot is
/// free.
struct ManagerSlot(SpinLock<Option<(PFLT_FILTER, PFLT_PORT, bool)>>);

/// The management connections. Static, so that a slot's address is a connection cookie
/// that no pool object (a provider's cookie) can equal.
static MANAGERS: [ManagerSlot; MAX_MANAGERS] =
    [const { ManagerSlot(SpinLock::new(None)) }; MAX_MANAGERS];

/// The management slot a connection cookie is, or `None` for a provider's cookie.
fn manager(connection_cookie: *const c_void) -> Option<&'static ManagerSlot> {
    MANAGERS
        .iter()
        .find(|slot| core::ptr::eq(*slot, connection_cookie.cast()))
}

/// Creates the server port: SYSTEM and Administrators have every right, Authenticated
/// Users may connect ([`security::PORT_DESCRIPTOR`]).
///
/// `driver` becomes the ServerPortCookie, so it must outlive the port. The image rules
/// start empty with each port: they belong to this load of the driver.
pub(super) fn create(filter: PFLT_FILTER, driver: *const Driver) -> Result<PFLT_PORT, NTSTATUS> {
    rules::clear();
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
        // The port keeps its own copy of the security it is created with.
        SecurityDescriptor: security::PORT_DESCRIPTOR.0.as_ptr().cast(),
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
    if nt_success(status) {
        Ok(port)
    } else {
        Err(status)
    }
}

/// ConnectNotifyCallback: admits a provider whose connection context decodes and whose
/// sync root overlaps no other provider's, or a management client while a
/// [`MANAGERS`] slot is free.
///
/// The context is the kernel copy the I/O manager captured from the EA buffer of the
/// port open, so it is read directly. The callback runs in the provider's process, which
/// is how the driver learns which process's I/O to leave alone.
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
    let context = match PortContext::decode(bytes) {
        Ok(context) => context,
        Err(error) => return status::NtStatus::from(error).raw(),
    };
    // SAFETY: the server cookie is the driver state, alive while the server port is.
    let Some(driver) = (unsafe { server_cookie.cast::<Driver>().as_ref() }) else {
        return STATUS_INVALID_PARAMETER;
    };
    if connection_cookie.is_null() {
        return STATUS_INVALID_PARAMETER;
    }
    let context = match context {
        PortContext::Provider(context) => context,
        PortContext::Management => {
            let admin = security::caller_is_admin();
            let Some(slot) = MANAGERS.iter().find(|slot| {
                slot.0.with(|held| {
                    let free = held.is_none();
                    if free {
                        *held = Some((driver.filter(), client_port, admin));
                    }
                    free
                })
            }) else {
                return STATUS_CONNECTION_COUNT_LIMIT;
            };
            let cookie: *const ManagerSlot = slot;
            // SAFETY: checked non-null above; FltMgr passes a writable cookie slot.
            unsafe { connection_cookie.write(cookie.cast_mut().cast()) };
            return STATUS_SUCCESS;
        }
    };
    // The root's registration decides its policies; a root not registered yet is
    // registered from the context first (connecting without registering keeps working).
    let filter = driver.filter();
    let policies = match roots::for_connect(&context, |root| security::may_write_root(filter, root))
    {
        Ok(policies) => policies,
        // Another root inside or around this one: as before registrations existed, a
        // connect that would give files two providers is "already connected".
        Err(STATUS_CLOUD_FILE_INVALID_REQUEST) => return STATUS_CLOUD_FILE_ALREADY_CONNECTED,
        Err(status) => return status,
    };
    // SAFETY: no preconditions; the current process is the connecting provider.
    let pid = unsafe { PsGetCurrentProcessId() } as usize;
    let record = with_path(&context.sync_root, |root| Ok(roots::record_of(root)))
        .ok()
        .flatten();
    let provider = Provider::new(
        driver.filter(),
        client_port,
        pid,
        &context,
        &policies,
        record,
    );
    let Some(provider) = PoolBox::try_new(provider, TAG_CONNECTION) else {
        return STATUS_INSUFFICIENT_RESOURCES;
    };
    let raw = PoolBox::into_raw(provider);
    if let Err(status) = providers::register(raw) {
        // SAFETY: `raw` was never published; FltMgr closes the client port of a refused
        // connection itself.
        drop(unsafe { PoolBox::from_raw(raw, TAG_CONNECTION) });
        return status;
    }
    // SAFETY: checked non-null above; FltMgr passes a writable cookie slot.
    unsafe { connection_cookie.write(raw.as_ptr().cast()) };
    STATUS_SUCCESS
}

/// DisconnectNotifyCallback: the provider is gone (it disconnected, or its process died):
/// no new request can reach it, every request it had fails with
/// STATUS_CLOUD_FILE_PROVIDER_TERMINATED, and once the last thread talking to it is done
/// its client port is closed and it is freed.
///
/// # Safety
/// Called by FltMgr at PASSIVE_LEVEL, once per accepted connection, with the cookie
/// ConnectNotify returned.
unsafe extern "system" fn disconnect_notify(connection_cookie: *const c_void) {
    if let Some(slot) = manager(connection_cookie) {
        // Taken under the lock, closed after it: FltCloseClientPort needs PASSIVE_LEVEL.
        if let Some((filter, mut client_port, _)) = slot.0.with(Option::take) {
            // SAFETY: this connection's client port, closed exactly once (the take above
            // emptied the slot).
            unsafe { FltCloseClientPort(filter, &mut client_port) };
        }
        return;
    }
    let Some(ptr) = NonNull::new(connection_cookie.cast_mut().cast::<Provider>()) else {
        return;
    };
    providers::unregister(ptr, || {
        hydrate::provider_gone(ptr.as_ptr() as usize);
        notify::provider_gone(ptr.as_ptr() as usize);
        super::populate::provider_gone(ptr.as_ptr() as usize);
    });
    // SAFETY: the cookie is the `PoolBox::into_raw` of ConnectNotify, handed back once,
    // and no reference to it is left.
    let mut provider = unsafe { PoolBox::from_raw(ptr, TAG_CONNECTION) };
    let filter = provider.filter;
    // SAFETY: the client port of this connection, closed exactly once, here.
    unsafe { FltCloseClientPort(filter, &mut provider.client_port) };
}

/// Largest provider message: a transfer of 1 MiB plus its header. A transfer's data is
/// never copied; any other message is, whole, which this bounds.
const MAX_PROVIDER_MESSAGE: usize = msg::HEADER_SIZE + 64 + msg::MAX_TRANSFER_LEN;

/// MessageNotifyCallback: a provider's request. The provider's buffers are touched only
/// under the exception guard ([`seh`]): the input's head (and the whole of any message
/// but a transfer) is copied into kernel memory before it is parsed, a transfer's data
/// is locked in place and written to disk from there ([`UserData`]); the answer is a
/// [`Reply`] in the output buffer, which is secured ([`SecuredOutput`]) before the
/// request is carried out and written with a guarded copy.
///
/// Securing comes first so that a request is carried out only if its answer can be
/// delivered: a provider whose reply buffer is already freed, decommitted or read-only
/// (another of its threads can do that at any moment) gets STATUS_INVALID_USER_BUFFER
/// and nothing was done, and once the range is secured its other threads can no longer
/// free it or take away write access (their VirtualFree / VirtualProtect fails) until
/// the reply is written and the range unsecured. Whatever else faults on a provider's
/// buffer (its input freed mid-transfer, a page that cannot be paged in) ends the call
/// with a status ([`seh::user_buffer_status`]) and the driver goes on.
///
/// # Safety
/// Called by FltMgr at PASSIVE_LEVEL in the provider's process, with the cookie
/// ConnectNotify returned and the provider's buffers (checked by FltMgr with
/// ProbeForRead to lie in user space); `returned` is a valid out pointer or NULL.
unsafe extern "system" fn message_notify(
    connection_cookie: *const c_void,
    input: *const c_void,
    input_len: u32,
    output: *mut c_void,
    output_len: u32,
    returned: *mut u32,
) -> NTSTATUS {
    if !returned.is_null() {
        // SAFETY: FltMgr passes a writable ULONG.
        unsafe { returned.write(0) };
    }
    let length = input_len as usize;
    let Some(input) = NonNull::new(input.cast_mut().cast::<u8>()) else {
        return STATUS_INVALID_PARAMETER;
    };
    if !(msg::HEADER_SIZE..=MAX_PROVIDER_MESSAGE).contains(&length) {
        return STATUS_INVALID_PARAMETER;
    }
    // The head: enough to tell a transfer, whose data stays where it is, from the rest.
    let mut head = [0u8; TRANSFER_HEAD_LEN];
    let head = head
        .get_mut(..length.min(TRANSFER_HEAD_LEN))
        .unwrap_or(&mut []);
    // SAFETY: the input buffer of `length` >= `head.len()` bytes in this process (the
    // callback's contract), read under the guard.
    if let Err(code) = unsafe { seh::copy_from_user(head, input.as_ptr()) } {
        return seh::user_buffer_status(code);
    }
    let kind = match head {
        [low, high, ..] => Kind::from_u16(u16::from_le_bytes([*low, *high])),
        _ => None,
    };
    let transfer = kind == Some(Kind::TransferData) && manager(connection_cookie).is_none();
    // Any other message is copied whole, as it is parsed and kept.
    let copy = if transfer {
        None
    } else {
        let Some(mut copy) = PoolBuf::zeroed(length) else {
            return STATUS_INSUFFICIENT_RESOURCES;
        };
        // SAFETY: as for the head: `length` bytes of the input buffer, under the guard.
        if let Err(code) = unsafe { seh::copy_from_user(copy.as_mut_slice(), input.as_ptr()) } {
            return seh::user_buffer_status(code);
        }
        Some(copy)
    };
    // Every reply has at least its header: a buffer that cannot hold one could never
    // carry the answer, so nothing is carried out for it.
    if output.is_null() || (output_len as usize) < msg::REPLY_HEADER_SIZE {
        return STATUS_BUFFER_TOO_SMALL;
    }
    // The range no longer committed and writable (freed, decommitted, protected) is the
    // provider's buffer gone bad: STATUS_INVALID_USER_BUFFER, "the supplied user buffer
    // is not valid for the requested operation", as for an unreadable input above.
    // SAFETY: PASSIVE_LEVEL, in the provider's process (this callback's contract).
    let Some(mut out) = (unsafe { SecuredOutput::secure(output, output_len as usize) }) else {
        return STATUS_INVALID_USER_BUFFER;
    };
    let (request_id, status, payload) = match &copy {
        Some(copy) if let Some(slot) = manager(connection_cookie) => {
            let held = slot
                .0
                .with(|held| held.map(|(filter, _, admin)| (filter, admin)));
            match held {
                Some((filter, admin)) => manage(copy.as_slice(), filter, admin),
                None => (0, STATUS_CLOUD_FILE_INVALID_REQUEST, None),
            }
        }
        Some(copy) => {
            let Some(cookie) = NonNull::new(connection_cookie.cast_mut().cast::<Provider>()) else {
                return STATUS_INVALID_PARAMETER;
            };
            serve(cookie, copy.as_slice())
        }
        None => {
            let Some(cookie) = NonNull::new(connection_cookie.cast_mut().cast::<Provider>()) else {
                return STATUS_INVALID_PARAMETER;
            };
            match TransferHead::decode(head, length) {
                Ok(transfer) => {
                    // The data follows the head: TransferHead::decode checked that the
                    // message's declared length, head and data, lies within `length`.
                    let at = input.as_ptr().wrapping_add(TRANSFER_HEAD_LEN);
                    let Some(at) = NonNull::new(at) else {
                        return STATUS_INVALID_PARAMETER;
                    };
                    // SAFETY: `data_len` bytes at `at` are inside the input buffer (above),
                    // used during this call on this thread only.
                    let data = unsafe { UserData::new(at, transfer.data_len) };
                    serve_transfer(cookie, &transfer, &data)
                }
                Err(_) => (0, STATUS_CLOUD_FILE_INVALID_REQUEST, None),
            }
        }
    };
    let body = payload
        .as_ref()
        .and_then(|(buffer, len)| buffer.as_slice().get(..*len))
        .unwrap_or(&[]);
    let reply = Reply {
        status,
        request_id,
        payload: body,
    };
    let Some(mut encoded) = PoolBuf::zeroed(reply.encoded_len()) else {
        return STATUS_INSUFFICIENT_RESOURCES;
    };
    let Ok(len) = reply.encode(encoded.as_mut_slice()) else {
        return STATUS_INSUFFICIENT_RESOURCES;
    };
    let Some(encoded) = encoded.as_slice().get(..len) else {
        return STATUS_INSUFFICIENT_RESOURCES;
    };
    match out.write(encoded) {
        Ok(true) => {}
        // A payload (GetInfo's blob, the rule list) longer than the buffer's room.
        Ok(false) => return STATUS_BUFFER_TOO_SMALL,
        // The request was carried out, but its answer could not be delivered (a page of
        // the secured range could not be paged in): the provider learns only that.
        Err(code) => return seh::user_buffer_status(code),
    }
    // Unsecured here, in the provider's context, before FltMgr completes the request.
    drop(out);
    if !returned.is_null() {
        // SAFETY: FltMgr passes a writable ULONG.
        unsafe { returned.write(len as u32) };
    }
    STATUS_SUCCESS
}

/// A transfer on a provider connection, its data still in the provider's buffer: the
/// reply's request id and status.
fn serve_transfer(
    cookie: NonNull<Provider>,
    transfer: &TransferHead,
    data: &UserData,
) -> (u64, NTSTATUS, placeholder::Payload) {
    let id = transfer.request_id;
    match providers::by_cookie(cookie) {
        Some(provider) => {
            let status = hydrate::transfer(&provider, transfer, data);
            if nt_success(status) {
                // A transfer taken is a valid message: the clocks of the provider's
                // notifications restart too.
                let due = super::timer::now().saturating_add(provider.timeout);
                notify::restart(provider.key(), due);
                super::populate::restart(provider.key(), due);
            }
            (id, status, None)
        }
        None => (id, STATUS_CLOUD_FILE_PROVIDER_TERMINATED, None),
    }
}

/// A message on a provider connection: the reply's request id, status and payload.
fn serve(cookie: NonNull<Provider>, bytes: &[u8]) -> (u64, NTSTATUS, placeholder::Payload) {
    match ProviderMessage::decode(bytes) {
        Ok(message) => {
            let id = message.request_id();
            match providers::by_cookie(cookie) {
                Some(provider) => {
                    let (status, payload) = dispatch(&provider, &message);
                    (id, status, payload)
                }
                None => (id, STATUS_CLOUD_FILE_PROVIDER_TERMINATED, None),
            }
        }
        // Management messages included: a provider does not set image rules.
        Err(_) => (0, STATUS_CLOUD_FILE_INVALID_REQUEST, None),
    }
}

/// A message on a management connection: the reply's request id, status and payload.
/// Provider messages are refused like undecodable ones: a management client serves no
/// sync root.
///
/// Image rules are an administrator's (`admin`: the connection's process token, taken at
/// connect); anyone else's are refused with STATUS_ACCESS_DENIED. Sync-root registrations
/// are anyone's, for roots the caller may write ([`security::may_write_root`], in the
/// caller's context).
fn manage(bytes: &[u8], filter: PFLT_FILTER, admin: bool) -> (u64, NTSTATUS, placeholder::Payload) {
    let message = match ManagementMessage::decode(bytes) {
        Ok(message) => message,
        // A registration that breaks CF_SYNC_REGISTRATION's rules (a name too long, an
        // identity over its limit, STREAMING_ALLOWED with VALIDATION_REQUIRED): cfapi's
        // E_INVALIDARG. Anything else that does not decode is an invalid request.
        Err(_) => {
            let header = Header::decode(bytes).ok();
            let status = if header.is_some_and(|h| h.kind == Kind::RegisterSyncRoot) {
                STATUS_INVALID_PARAMETER
            } else {
                STATUS_CLOUD_FILE_INVALID_REQUEST
            };
            return (header.map_or(0, |h| h.request_id), status, None);
        }
    };
    if message.kind().is_image_rule() && !admin {
        return (message.request_id(), STATUS_ACCESS_DENIED, None);
    }
    let may_write = |root: &[u16]| security::may_write_root(filter, root);
    let done = |r: Result<(), NTSTATUS>| (r.err().unwrap_or(STATUS_SUCCESS), None);
    let (status, payload) = match message {
        ManagementMessage::SetImageRule(m) => done(rules::set(m.pattern, m.visibility)),
        ManagementMessage::RemoveImageRule(m) => done(rules::remove(m.pattern)),
        ManagementMessage::ClearImageRules(_) => {
            rules::clear();
            (STATUS_SUCCESS, None)
        }
        ManagementMessage::RegisterSyncRoot(m) => done(roots::register(&m, may_write)),
        ManagementMessage::UnregisterSyncRoot(m) => done(with_path(&m.path, |path| {
            roots::unregister(path, may_write)
        })),
        ManagementMessage::GetSyncRootInfo(m) => {
            match with_path(&m.path, |path| roots::info(path).map(Some)) {
                Ok(payload) => (STATUS_SUCCESS, payload),
                Err(status) => (status, None),
            }
        }
        // Placeholder operations of processes other than the provider: the root's
        // policies say whether they may, checked in the caller's context.
        ManagementMessage::DehydrateByPath(m) => done(placeholder::dehydrate_by_path(filter, &m)),
        ManagementMessage::SetInSyncByPath(m) => {
            match placeholder::set_in_sync_by_path(filter, &m) {
                Ok(payload) => (STATUS_SUCCESS, payload),
                Err(status) => (status, None),
            }
        }
        ManagementMessage::ListSyncRoots(_) => match roots::list() {
            Ok(payload) => (STATUS_SUCCESS, Some(payload)),
            Err(status) => (status, None),
        },
        ManagementMessage::ListImageRules(_) => match PoolBuf::zeroed(MAX_RULE_LIST_LEN) {
            Some(mut list) => match rules::list(list.as_mut_slice()) {
                Ok(len) => (STATUS_SUCCESS, Some((list, len))),
                Err(status) => (status, None),
            },
            None => (STATUS_INSUFFICIENT_RESOURCES, None),
        },
        _ => (STATUS_CLOUD_FILE_INVALID_REQUEST, None),
    };
    (message.request_id(), status, payload)
}

/// Runs `f` on `path` (a message's UTF-16 path) copied into an array: a path longer than
/// any root is no root (STATUS_CLOUD_FILE_NOT_UNDER_SYNC_ROOT).
fn with_path<R>(
    path: &cloudflt_proto::Utf16<'_>,
    f: impl FnOnce(&[u16]) -> Result<R, NTSTATUS>,
) -> Result<R, NTSTATUS> {
    let mut units = [0u16; crate::engine::syncroot::MAX_PATH];
    let mut len = 0;
    for unit in path.units() {
        let slot = units
            .get_mut(len)
            .ok_or(windows_sys::Win32::Foundation::STATUS_CLOUD_FILE_NOT_UNDER_SYNC_ROOT)?;
        *slot = unit;
        len += 1;
    }
    f(units.get(..len).unwrap_or(&[]))
}

/// Carries out one provider message: its status and reply payload.
fn dispatch(
    provider: &ProviderRef,
    message: &ProviderMessage<'_>,
) -> (NTSTATUS, placeholder::Payload) {
    let done = |r: Result<(), NTSTATUS>| (r.err().unwrap_or(STATUS_SUCCESS), None);
    // Any valid message of the provider restarts the clocks of its notifications, as
    // cfapi's rule has it (fetches restart theirs where they are served).
    let due = super::timer::now().saturating_add(provider.timeout);
    notify::restart(provider.key(), due);
    super::populate::restart(provider.key(), due);
    match message {
        // Transfers are served from the provider's buffer (`serve_transfer`); one seen
        // here is a message whose head changed between the two copies of it.
        ProviderMessage::TransferData(_) => (STATUS_CLOUD_FILE_INVALID_REQUEST, None),
        ProviderMessage::FetchFailed(m) => (hydrate::failed(provider, m), None),
        ProviderMessage::CreatePlaceholder(m) => done(placeholder::create(provider, m)),
        ProviderMessage::Convert(m) => done(placeholder::convert(provider, m)),
        ProviderMessage::Revert(m) => done(placeholder::revert(provider, m)),
        ProviderMessage::Hydrate(m) => match placeholder::hydrate(provider, m) {
            Ok(payload) => (STATUS_SUCCESS, payload),
            Err(status) => (status, None),
        },
        ProviderMessage::Dehydrate(m) => done(placeholder::dehydrate(provider, m)),
        ProviderMessage::SetPin(m) => done(placeholder::set_pin(provider, m)),
        ProviderMessage::GetInfo(m) => match placeholder::info(provider, m) {
            Ok(payload) => (STATUS_SUCCESS, payload),
            Err(status) => (status, None),
        },
        ProviderMessage::Update(m) => match placeholder::update(provider, m) {
            Ok(payload) => (STATUS_SUCCESS, payload),
            Err(status) => (status, None),
        },
        ProviderMessage::SetInSync(m) => match placeholder::set_in_sync(provider, m) {
            Ok(payload) => (STATUS_SUCCESS, payload),
            Err(status) => (status, None),
        },
        ProviderMessage::RetrieveData(m) => match hydrate::retrieve(provider, m) {
            Ok(payload) => (STATUS_SUCCESS, payload),
            Err(status) => (status, None),
        },
        ProviderMessage::AckData(m) => (hydrate::acknowledge(provider, m), None),
        ProviderMessage::AckNotify(m) => (notify::acknowledge(provider, m), None),
        ProviderMessage::TransferPlaceholders(m) => match super::populate::transfer(provider, m) {
            Ok(payload) => (STATUS_SUCCESS, payload),
            Err(status) => (status, None),
        },
        _ => (STATUS_CLOUD_FILE_INVALID_REQUEST, None),
    }
}
