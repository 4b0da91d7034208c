//! The real driver's DriverEntry, InstanceSetup, port and unload, run through the model.

use cloudflt_proto::port::{MAX_CONNECTIONS, PORT_NAME};
use cloudflt_tests::model::files::{self, OpenParams};
use cloudflt_tests::model::{Caller, Machine, VolumeConfig};
use windows_sys::Win32::Foundation::{
    NTSTATUS, STATUS_CLOUD_FILE_ACCESS_DENIED, STATUS_CLOUD_FILE_ALREADY_CONNECTED,
    STATUS_FLT_INSTANCE_ALTITUDE_COLLISION, STATUS_INFO_LENGTH_MISMATCH,
    STATUS_INSUFFICIENT_RESOURCES, STATUS_INVALID_BUFFER_SIZE, STATUS_INVALID_PARAMETER,
    STATUS_NOT_SUPPORTED, STATUS_OBJECT_NAME_NOT_FOUND, STATUS_REVISION_MISMATCH, STATUS_SUCCESS,
};

/// IRP_MJ_CREATE, READ, DIRECTORY_CONTROL, QUERY_INFORMATION, FILE_SYSTEM_CONTROL,
/// NETWORK_QUERY_OPEN, QUERY_OPEN, ACQUIRE_FOR_SECTION_SYNCHRONIZATION, CLEANUP: the
/// operations the driver acts on. WRITE and SET_INFORMATION (minifilter checklist) come
/// with the write path; registered with nothing to do they only cost a callback per call.
const EXPECTED_MAJORS: [u8; 11] = [
    0x00, 0x03, 0x04, 0x06, 0x0c, 0x05, 0x0d, 0xf2, 0xf9, 0xff, 0x12,
];

fn load(machine: &Machine) -> NTSTATUS {
    machine.load_driver(cloudflt_driver::nt::driver_entry)
}

/// A valid context, with its header's protocol version then set to `version` (the encoder
/// only writes the version it speaks).
fn context(version: u16) -> Vec<u8> {
    context_for(version, r"\Device\HarddiskVolume1\Cloud")
}

fn context_for(version: u16, root: &str) -> Vec<u8> {
    use cloudflt_proto::{ConnectionContext, HydrationPolicy, PopulationPolicy, Utf16};
    let name: Vec<u16> = "provider".encode_utf16().collect();
    let root: Vec<u16> = root.encode_utf16().collect();
    let ctx = ConnectionContext {
        provider_name: Utf16::from_units(&name),
        provider_version: Utf16::EMPTY,
        sync_root: Utf16::from_units(&root),
        hydration: HydrationPolicy::Full,
        // This port-level provider answers fetches only: it asks for no population.
        population: PopulationPolicy::AlwaysFull,
        in_sync: cloudflt_proto::InSyncPolicy::NONE,
        timeout_ms: 0,
        provider_id: [0; 16],
        connect_flags: cloudflt_proto::connect::ConnectFlags::NONE,
        modifiers: cloudflt_proto::registration::HydrationModifiers::NONE,
        management: cloudflt_proto::registration::ManagementPolicy::DEFAULT,
        hard_links: cloudflt_proto::registration::HardLinkPolicy::NONE,
        notifications: cloudflt_proto::msg::NotifySet::NONE,
    };
    let mut out = vec![0; ctx.encoded_len()];
    ctx.encode(&mut out).unwrap();
    out[4..6].copy_from_slice(&version.to_le_bytes());
    out
}

#[test]
fn driver_entry_registers_version_0203_with_the_operation_table_and_contexts() {
    let mut machine = Machine::boot(&[VolumeConfig::ntfs(1)]);
    assert_eq!(load(&machine), STATUS_SUCCESS);
    let filter = machine.filter().expect("a registered filter");
    assert!(filter.started);
    assert_eq!(filter.registration.version, 0x0203);
    assert!(filter.registration.has_unload);
    let majors: Vec<u8> = filter
        .registration
        .operations
        .iter()
        .map(|o| o.major)
        .collect();
    assert_eq!(majors, EXPECTED_MAJORS);
    assert!(
        filter
            .registration
            .operations
            .iter()
            .all(|o| o.has_pre && o.flags == 0)
    );
    let types: Vec<u16> = filter
        .registration
        .contexts
        .iter()
        .map(|c| c.context_type)
        .collect();
    assert_eq!(
        types,
        [2, 8, 16],
        "instance, stream and stream-handle contexts"
    );
    assert_eq!(machine.unload_driver(), STATUS_SUCCESS);
    machine.assert_clean();
}

#[test]
fn instance_setup_attaches_to_local_ntfs_with_reparse_points_only() {
    let no_reparse = VolumeConfig {
        fs_attributes: 0x7,
        ..VolumeConfig::ntfs(4)
    };
    let big_sectors = VolumeConfig {
        sector_size: 4096,
        ..VolumeConfig::ntfs(5)
    };
    let mut machine = Machine::boot(&[
        VolumeConfig::ntfs(1),
        VolumeConfig::fat(2),
        VolumeConfig::network_ntfs("server\\share"),
        no_reparse,
        big_sectors,
    ]);
    assert_eq!(load(&machine), STATUS_SUCCESS);
    let filter = machine.filter().unwrap();
    assert_eq!(
        filter.attached,
        ["\\Device\\HarddiskVolume1", "\\Device\\HarddiskVolume5"]
    );
    // InstanceContext { signature 'CFic', sector_size, fs_attributes }
    let sectors: Vec<u32> = filter
        .instance_contexts
        .iter()
        .map(|c| {
            u32::from_le_bytes(
                c.as_ref().expect("instance context")[4..8]
                    .try_into()
                    .unwrap(),
            )
        })
        .collect();
    assert_eq!(sectors, [512, 4096]);
    assert_eq!(machine.unload_driver(), STATUS_SUCCESS);
    machine.assert_clean();
}

#[test]
fn the_port_admits_users_and_only_a_decodable_context() {
    let mut machine = Machine::boot(&[VolumeConfig::ntfs(1)]);
    // The roots exist, made at boot: writable by SYSTEM and Administrators only.
    for dir in [r"C:\Cloud", r"C:\Cloud2"] {
        let params = OpenParams {
            disposition: 2, // FILE_CREATE
            options: 0x21,  // FILE_DIRECTORY_FILE | FILE_SYNCHRONOUS_IO_NONALERT
            ..OpenParams::default()
        };
        files::close(files::create(dir, &params).expect("the root is created"));
    }
    assert_eq!(load(&machine), STATUS_SUCCESS);
    let ports = machine.ports();
    assert_eq!(ports.len(), 1);
    assert_eq!(ports[0].name, PORT_NAME);
    assert_eq!(
        ports[0].access, 0x001F_0001,
        "FLT_PORT_ALL_ACCESS for SYSTEM and Administrators"
    );
    assert_eq!(
        ports[0].authenticated, 0x0001,
        "FLT_PORT_CONNECT for Authenticated Users"
    );
    assert_eq!(ports[0].max_connections, MAX_CONNECTIONS as usize);

    let good = context(cloudflt_proto::PROTOCOL_VERSION);
    let user = machine.spawn_caller(Caller::StandardUser);
    let admin = machine.spawn_caller(Caller::Administrator);
    // A standard user reaches the driver, which refuses it a root it may not write.
    assert_eq!(
        machine.connect(PORT_NAME, &good, user),
        Err(STATUS_CLOUD_FILE_ACCESS_DENIED)
    );
    assert_eq!(
        machine.connect(PORT_NAME, &[], admin),
        Err(STATUS_INVALID_BUFFER_SIZE)
    );
    let mut bad_magic = good.clone();
    bad_magic[0] ^= 0xff;
    assert_eq!(
        machine.connect(PORT_NAME, &bad_magic, admin),
        Err(STATUS_INVALID_PARAMETER)
    );
    assert_eq!(
        machine.connect(PORT_NAME, &context(2), admin),
        Err(STATUS_REVISION_MISMATCH)
    );
    assert_eq!(
        machine.connect(PORT_NAME, &good[..good.len() - 1], admin),
        Err(STATUS_INFO_LENGTH_MISMATCH)
    );
    let mut flags = good.clone();
    flags[12] = 2;
    assert_eq!(
        machine.connect(PORT_NAME, &flags, admin),
        Err(STATUS_NOT_SUPPORTED)
    );
    assert_eq!(
        machine.ports()[0].connections,
        0,
        "refused connections leave nothing behind"
    );

    let first = machine.connect(PORT_NAME, &good, admin).unwrap();
    // One provider per root, and roots may not nest.
    assert_eq!(
        machine.connect(PORT_NAME, &good, admin),
        Err(STATUS_CLOUD_FILE_ALREADY_CONNECTED)
    );
    assert_eq!(
        machine.connect(
            PORT_NAME,
            &context_for(1, r"\Device\HarddiskVolume1\Cloud\Inner"),
            admin
        ),
        Err(STATUS_CLOUD_FILE_ALREADY_CONNECTED)
    );
    assert_eq!(
        machine.connect(
            PORT_NAME,
            &context_for(1, r"\Device\HarddiskVolume1"),
            admin
        ),
        Err(STATUS_CLOUD_FILE_ALREADY_CONNECTED)
    );
    let _second = machine
        .connect(
            PORT_NAME,
            &context_for(1, r"\Device\HarddiskVolume1\Cloud2"),
            admin,
        )
        .unwrap();
    assert_eq!(machine.ports()[0].connections, 2);
    let two = machine.pool_bytes(*b"CFcn");
    assert!(two > 0, "each connection is a tagged pool object");
    machine.disconnect(first);
    assert_eq!(machine.ports()[0].connections, 1);
    assert_eq!(
        machine.pool_bytes(*b"CFcn") * 2,
        two,
        "DisconnectNotify freed its connection"
    );

    // Unload with a provider still connected: the server port closes first, then
    // FltUnregisterFilter disconnects the provider; nothing leaks.
    assert_eq!(machine.unload_driver(), STATUS_SUCCESS);
    let ports = machine.ports();
    assert!(ports[0].closed);
    assert_eq!(ports[0].connections, 0);
    assert_eq!(
        machine.connect(PORT_NAME, &good, admin),
        Err(STATUS_OBJECT_NAME_NOT_FOUND)
    );
    assert!(machine.filter().is_none());
    machine.assert_clean();
}

#[test]
fn driver_entry_failures_undo_everything() {
    // Allocation 1 is the driver state; 2 is the next one DriverEntry makes (the port's
    // descriptor is a static now, so a later one).
    for (nth, expected) in [
        (1, STATUS_INSUFFICIENT_RESOURCES),
        (2, STATUS_INSUFFICIENT_RESOURCES),
    ] {
        let mut machine = Machine::boot(&[VolumeConfig::ntfs(1)]);
        machine.fail_allocation(nth);
        assert_eq!(load(&machine), expected, "allocation {nth} failing");
        assert!(
            machine.filter().is_none(),
            "allocation {nth}: the filter must be unregistered"
        );
        assert_eq!(
            machine.pool_bytes(*b"CFdr"),
            0,
            "allocation {nth}: driver state freed"
        );
        machine.assert_clean();
        drop(machine);
    }
    // FltMgr refusing the port, or refusing to start: DriverEntry returns that status and
    // the model's load checks that nothing (pool, filter, port) was left behind.
    for api in [
        "FltRegisterFilter",
        "FltCreateCommunicationPort",
        "FltStartFiltering",
    ] {
        let mut machine = Machine::boot(&[VolumeConfig::ntfs(1)]);
        machine.fail_next(api, STATUS_FLT_INSTANCE_ALTITUDE_COLLISION);
        assert_eq!(
            load(&machine),
            STATUS_FLT_INSTANCE_ALTITUDE_COLLISION,
            "{api} failing"
        );
        assert!(
            machine.filter().is_none(),
            "{api} failing: the filter must be unregistered"
        );
        machine.assert_clean();
        drop(machine);
    }
    // And the driver loads normally afterwards: nothing global was left set.
    let mut machine = Machine::boot(&[VolumeConfig::ntfs(1)]);
    assert_eq!(load(&machine), STATUS_SUCCESS);
    assert_eq!(machine.unload_driver(), STATUS_SUCCESS);
    machine.assert_clean();
}
