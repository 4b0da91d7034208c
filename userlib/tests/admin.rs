//! `cloudflt::admin` against the real driver in the kernel model: an administrator's
//! management connection sets, lists, removes and clears image rules; the port keeps
//! everyone else out; each kind of connection sends only its own messages; the driver
//! refuses bad patterns with their own status; rules end with the driver; and a rule
//! changes what a matching program sees of a placeholder.
#![cfg(not(windows))]

use std::ffi::c_void;

use cloudflt::admin::{ImageRules, Visibility};
use cloudflt::compat::{self, PlaceholderCompatibility};
use cloudflt::{
    Error, FetchRequest, PlaceholderSpec, SyncProvider, SyncRoot, SyncRootConfig, Transfer,
};
use cloudflt_proto::msg::{GetInfo, RemoveImageRule, Reply, SetImageRule};
use cloudflt_proto::port::PORT_NAME;
use cloudflt_proto::rules::{MAX_RULES, RuleVisibility};
use cloudflt_proto::{
    ConnectionContext, HydrationPolicy, PopulationPolicy, PortContext, Utf16, connect,
};
use cloudflt_tests::model::files::{self, OpenParams};
use cloudflt_tests::model::fltlib::FilterSendMessage;
use cloudflt_tests::model::port::ClientId;
use cloudflt_tests::model::process;
use cloudflt_tests::model::{Machine, VolumeConfig};
use windows_sys::Win32::Foundation::{
    NTSTATUS, STATUS_ACCESS_DENIED, STATUS_CLOUD_FILE_INSUFFICIENT_RESOURCES,
    STATUS_CLOUD_FILE_INVALID_REQUEST, STATUS_CONNECTION_COUNT_LIMIT, STATUS_INVALID_PARAMETER,
    STATUS_NOT_FOUND, STATUS_OBJECT_NAME_INVALID, STATUS_SUCCESS,
};

const ADMIN_IMAGE: &str = r"\Device\HarddiskVolume1\Tools\rules.exe";
const APP_IMAGE: &str = r"\Device\HarddiskVolume1\Tools\app.exe";
const PROVIDER_IMAGE: &str = r"\Device\HarddiskVolume1\Sync\provider.exe";
const VOLUME: &str = r"\Device\HarddiskVolume1";
/// FILE_ATTRIBUTE_REPARSE_POINT.
const REPARSE_POINT: u32 = 0x400;

/// A machine with one NTFS volume (C:) and the cloudflt driver loaded.
fn boot() -> Machine {
    let machine = Machine::boot(&[VolumeConfig::ntfs(1)]);
    machine.set_symbolic_link(r"\SystemRoot", r"\Device\HarddiskVolume1\Windows");
    assert_eq!(load(&machine), STATUS_SUCCESS);
    machine
}

fn load(machine: &Machine) -> NTSTATUS {
    machine.load_driver(cloudflt_driver::nt::driver_entry)
}

/// An elevated administrator's process, where `ImageRules::connect` is admitted.
fn administrator(machine: &Machine) -> u32 {
    machine.spawn_process(ADMIN_IMAGE, 0, true)
}

fn management_context() -> Vec<u8> {
    let mut out = vec![0u8; connect::HEADER_SIZE];
    assert_eq!(
        PortContext::Management.encode(&mut out),
        Ok(connect::HEADER_SIZE)
    );
    out
}

fn provider_context(root: &str) -> Vec<u8> {
    let name: Vec<u16> = "p".encode_utf16().collect();
    let root: Vec<u16> = root.encode_utf16().collect();
    let context = ConnectionContext {
        provider_name: Utf16::from_units(&name),
        provider_version: Utf16::EMPTY,
        sync_root: Utf16::from_units(&root),
        hydration: HydrationPolicy::Full,
        population: PopulationPolicy::Full,
        in_sync: cloudflt_proto::InSyncPolicy::NONE,
        timeout_ms: 0,
        provider_id: [0; 16],
        connect_flags: cloudflt_proto::connect::ConnectFlags::NONE,
        modifiers: cloudflt_proto::registration::HydrationModifiers::NONE,
        management: cloudflt_proto::registration::ManagementPolicy::DEFAULT,
        hard_links: cloudflt_proto::registration::HardLinkPolicy::NONE,
        notifications: cloudflt_proto::msg::NotifySet::NONE,
    };
    let mut out = vec![0u8; context.encoded_len()];
    assert_eq!(context.encode(&mut out), Ok(out.len()));
    out
}

/// Sends `message` on a raw connection of process `pid`; the reply's status and payload.
fn send(pid: u32, client: ClientId, message: &[u8]) -> (NTSTATUS, Vec<u8>) {
    let mut out = vec![0u8; 64 * 1024];
    let mut returned = 0u32;
    // SAFETY: both buffers are valid for their lengths for the whole call; the handle
    // belongs to `pid`, whose thread this is.
    let hr = process::run_as(pid, || unsafe {
        FilterSendMessage(
            client.handle(),
            message.as_ptr().cast::<c_void>(),
            message.len() as u32,
            out.as_mut_ptr().cast::<c_void>(),
            out.len() as u32,
            &mut returned,
        )
    });
    assert!(hr >= 0, "FilterSendMessage failed: {hr:#x}");
    let reply = Reply::decode(&out[..returned as usize]).expect("the driver's reply decodes");
    (reply.status, reply.payload.to_vec())
}

fn set_rule(pattern: &str, visibility: RuleVisibility) -> Vec<u8> {
    let units: Vec<u16> = pattern.encode_utf16().collect();
    let message = SetImageRule {
        request_id: 9,
        visibility,
        pattern: Utf16::from_units(&units),
    };
    let mut out = vec![0u8; message.encoded_len()];
    assert_eq!(message.encode(&mut out), Ok(out.len()));
    out
}

fn remove_rule(pattern: &str) -> Vec<u8> {
    let units: Vec<u16> = pattern.encode_utf16().collect();
    let message = RemoveImageRule {
        request_id: 9,
        pattern: Utf16::from_units(&units),
    };
    let mut out = vec![0u8; message.encoded_len()];
    assert_eq!(message.encode(&mut out), Ok(out.len()));
    out
}

fn sorted(mut rules: Vec<(String, Visibility)>) -> Vec<(String, Visibility)> {
    rules.sort_by(|a, b| a.0.cmp(&b.0));
    rules
}

fn rule(pattern: &str, visibility: Visibility) -> (String, Visibility) {
    (pattern.to_owned(), visibility)
}

#[test]
fn an_administrator_sets_lists_replaces_removes_and_clears_rules() {
    let mut machine = boot();
    let admin = administrator(&machine);
    process::run_as(admin, || {
        let rules = ImageRules::connect().unwrap();
        assert!(
            rules.list().unwrap().is_empty(),
            "a new driver has no rules"
        );
        rules.set(r"C:\Tools\app.exe", Visibility::Expose).unwrap();
        rules.set(r"c:/Legacy/", Visibility::Disguise).unwrap();
        rules.set("backup.exe", Visibility::Disguise).unwrap();
        assert_eq!(
            sorted(rules.list().unwrap()),
            [
                rule(r"\Device\HarddiskVolume1\Legacy", Visibility::Disguise),
                rule(r"\Device\HarddiskVolume1\Tools\app.exe", Visibility::Expose),
                rule("backup.exe", Visibility::Disguise),
            ],
            "paths in the NT form the driver matches, names as given"
        );
        // The same image again (in any case) replaces its rule.
        rules.set("BACKUP.EXE", Visibility::Expose).unwrap();
        let now = rules.list().unwrap();
        assert_eq!(now.len(), 3);
        assert!(
            now.contains(&rule("backup.exe", Visibility::Expose)),
            "{now:?}"
        );

        assert!(rules.remove(r"C:\Legacy").unwrap());
        assert!(!rules.remove(r"C:\Legacy").unwrap(), "already gone");
        assert!(!rules.remove("never-set.exe").unwrap());
        assert_eq!(rules.list().unwrap().len(), 2);

        // A second management connection sees and changes the same table.
        let other = ImageRules::connect().unwrap();
        assert_eq!(other.list().unwrap().len(), 2);
        other.clear().unwrap();
        assert!(rules.list().unwrap().is_empty());
    });
    assert_eq!(machine.unload_driver(), STATUS_SUCCESS);
    machine.assert_clean();
}

#[test]
fn bad_images_are_refused_before_anything_is_sent() {
    let mut machine = boot();
    let admin = administrator(&machine);
    process::run_as(admin, || {
        let rules = ImageRules::connect().unwrap();
        let long = format!(r"C:\{}", "x".repeat(600));
        for bad in [
            "",
            r"..\x",
            r"Tools\app.exe",
            r"\\server\share\a.exe",
            "a?.exe",
            &long,
        ] {
            assert!(
                matches!(
                    rules.set(bad, Visibility::Expose),
                    Err(Error::InvalidArgument(_))
                ),
                "{bad:?}"
            );
            assert!(
                matches!(rules.remove(bad), Err(Error::InvalidArgument(_))),
                "{bad:?}"
            );
        }
        // A drive with no volume is the lookup's failure, not a rule.
        assert!(matches!(
            rules.set(r"Q:\app.exe", Visibility::Expose),
            Err(Error::Io {
                function: "QueryDosDeviceW",
                ..
            })
        ));
        assert!(rules.list().unwrap().is_empty());
    });
    assert_eq!(machine.unload_driver(), STATUS_SUCCESS);
    machine.assert_clean();
}

#[test]
fn only_an_elevated_process_can_manage_rules() {
    let mut machine = boot();
    let user = machine.spawn_process(APP_IMAGE, 0, false);
    let admin = administrator(&machine);
    // A standard user may connect (sync engines run as the signed-in user), but every
    // change to the rules, and the list, is refused: rules are an administrator's.
    process::run_as(user, || {
        let rules = ImageRules::connect().expect("a standard user connects");
        for refused in [
            rules.set("app.exe", Visibility::Expose).err(),
            rules.remove("app.exe").err(),
            rules.clear().err(),
            rules.list().err(),
        ] {
            assert!(
                matches!(refused, Some(Error::Status(STATUS_ACCESS_DENIED))),
                "{refused:?}"
            );
        }
    });
    // Nothing changed: the administrator sees no rule.
    process::run_as(admin, || {
        assert!(ImageRules::connect().unwrap().list().unwrap().is_empty());
    });
    assert_eq!(machine.unload_driver(), STATUS_SUCCESS);
    machine.assert_clean();
}

#[test]
fn the_driver_refuses_bad_patterns_and_a_full_table_with_their_status() {
    let mut machine = boot();
    let admin = administrator(&machine);
    let client = machine
        .connect(PORT_NAME, &management_context(), admin)
        .unwrap();
    for bad in [
        "",
        r"\",
        r"\Device\",
        r"\Device\\x.exe",
        r"\Device\..\x.exe",
        r"\Device\.\x.exe",
        ".",
        "..",
        r"dir\a.exe",
    ] {
        assert_eq!(
            send(admin, client, &set_rule(bad, RuleVisibility::Expose)).0,
            STATUS_OBJECT_NAME_INVALID,
            "{bad:?}"
        );
    }
    assert_eq!(
        send(admin, client, &remove_rule("a.exe")).0,
        STATUS_NOT_FOUND
    );
    for i in 0..MAX_RULES {
        let name = format!("tool{i}.exe");
        assert_eq!(
            send(admin, client, &set_rule(&name, RuleVisibility::Disguise)).0,
            STATUS_SUCCESS
        );
    }
    assert_eq!(
        send(
            admin,
            client,
            &set_rule("one-more.exe", RuleVisibility::Expose)
        )
        .0,
        STATUS_CLOUD_FILE_INSUFFICIENT_RESOURCES
    );
    // Replacing a rule needs no new slot.
    assert_eq!(
        send(
            admin,
            client,
            &set_rule("TOOL0.exe", RuleVisibility::Expose)
        )
        .0,
        STATUS_SUCCESS
    );
    // Through the library: the full table is its typed error.
    process::run_as(admin, || {
        let rules = ImageRules::connect().unwrap();
        assert!(matches!(
            rules.set("one-more.exe", Visibility::Expose),
            Err(Error::InsufficientResources)
        ));
        assert_eq!(rules.list().unwrap().len(), MAX_RULES);
    });
    machine.disconnect(client);
    assert_eq!(machine.unload_driver(), STATUS_SUCCESS);
    machine.assert_clean();
}

#[test]
fn each_kind_of_connection_sends_only_its_own_messages() {
    let mut machine = boot();
    let admin = administrator(&machine);
    let provider = machine.spawn_process(PROVIDER_IMAGE, 0, true);
    let root = format!(r"{VOLUME}\Cloud");
    // A sync root is a directory that exists: the driver checks its rights.
    process::run_as(provider, || {
        let params = OpenParams {
            disposition: 2, // FILE_CREATE
            options: 0x21,  // FILE_DIRECTORY_FILE | FILE_SYNCHRONOUS_IO_NONALERT
            ..OpenParams::default()
        };
        files::close(files::create(r"C:\Cloud", &params).expect("the root is created"));
        files::close(files::create(r"C:\Other", &params).expect("the root is created"));
    });
    let served = machine
        .connect(PORT_NAME, &provider_context(&root), provider)
        .unwrap();
    // A provider does not set rules.
    assert_eq!(
        send(provider, served, &set_rule("a.exe", RuleVisibility::Expose)).0,
        STATUS_CLOUD_FILE_INVALID_REQUEST
    );
    // A management client serves no sync root, so has no placeholder to ask about.
    let managing = machine
        .connect(PORT_NAME, &management_context(), admin)
        .unwrap();
    let path: Vec<u16> = "a.bin".encode_utf16().collect();
    let info = GetInfo {
        request_id: 3,
        path: Utf16::from_units(&path),
    };
    let mut bytes = vec![0u8; info.encoded_len()];
    assert_eq!(info.encode(&mut bytes), Ok(bytes.len()));
    assert_eq!(
        send(admin, managing, &bytes).0,
        STATUS_CLOUD_FILE_INVALID_REQUEST
    );
    // Nor did it take a sync root: another provider may still connect one.
    let other = machine
        .connect(
            PORT_NAME,
            &provider_context(&format!(r"{VOLUME}\Other")),
            provider,
        )
        .unwrap();
    process::run_as(admin, || {
        assert!(ImageRules::connect().unwrap().list().unwrap().is_empty());
    });
    // The management flag on a provider's context is refused: management has no body.
    let mut both = provider_context(&root);
    both[12] = 1;
    assert_eq!(
        machine.connect(PORT_NAME, &both, admin).err(),
        Some(STATUS_INVALID_PARAMETER)
    );
    for client in [served, managing, other] {
        machine.disconnect(client);
    }
    assert_eq!(machine.unload_driver(), STATUS_SUCCESS);
    machine.assert_clean();
}

#[test]
fn management_connections_are_few_and_their_slots_come_back() {
    let mut machine = boot();
    let admin = administrator(&machine);
    let context = management_context();
    let open: Vec<ClientId> = (0..4)
        .map(|_| machine.connect(PORT_NAME, &context, admin).unwrap())
        .collect();
    assert_eq!(
        machine.connect(PORT_NAME, &context, admin).err(),
        Some(STATUS_CONNECTION_COUNT_LIMIT)
    );
    machine.disconnect(open[1]);
    let again = machine.connect(PORT_NAME, &context, admin).unwrap();
    assert_eq!(
        send(admin, again, &set_rule("a.exe", RuleVisibility::Expose)).0,
        STATUS_SUCCESS
    );
    for client in [open[0], open[2], open[3], again] {
        machine.disconnect(client);
    }
    assert_eq!(machine.unload_driver(), STATUS_SUCCESS);
    machine.assert_clean();
}

#[test]
fn rules_end_with_the_driver() {
    let mut machine = boot();
    let admin = administrator(&machine);
    let rules = process::run_as(admin, || {
        let rules = ImageRules::connect().unwrap();
        rules.set("app.exe", Visibility::Expose).unwrap();
        rules
    });
    assert_eq!(machine.unload_driver(), STATUS_SUCCESS);
    process::run_as(admin, || {
        assert!(matches!(rules.list(), Err(Error::Disconnected)));
    });
    drop(rules);
    assert_eq!(load(&machine), STATUS_SUCCESS);
    process::run_as(admin, || {
        assert!(ImageRules::connect().unwrap().list().unwrap().is_empty());
    });
    assert_eq!(machine.unload_driver(), STATUS_SUCCESS);
    machine.assert_clean();
}

/// Serves nothing: the test only looks at placeholders, never reads them.
struct Idle;

impl SyncProvider for Idle {
    fn fetch_data(&self, _request: FetchRequest, transfer: Transfer) {
        drop(transfer);
    }
}

/// The attributes process `pid` sees on `path` (FileBasicInformation).
fn attributes_seen_by(pid: u32, path: &str) -> u32 {
    process::run_as(pid, || {
        let handle = files::create(path, &OpenParams::default()).expect("the file opens");
        // FileBasicInformation: four times, then the attributes.
        let (status, info) = files::query_information(handle, 4, 40);
        files::close(handle);
        assert_eq!(status, STATUS_SUCCESS);
        u32::from_le_bytes(info[32..36].try_into().unwrap())
    })
}

#[test]
fn a_rule_decides_what_a_matching_program_sees_unless_it_set_a_mode() {
    let mut machine = boot();
    let admin = administrator(&machine);
    let provider = machine.spawn_process(PROVIDER_IMAGE, 0, true);
    let app = machine.spawn_process(APP_IMAGE, 0, false);
    let placeholder = r"C:\Cloud\a.bin";
    let connection = process::run_as(provider, || {
        let params = OpenParams {
            disposition: 2, // FILE_CREATE
            options: 0x21,  // FILE_DIRECTORY_FILE | FILE_SYNCHRONOUS_IO_NONALERT
            ..OpenParams::default()
        };
        files::close(files::create(r"C:\Cloud", &params).expect("the root is created"));
        let connection = SyncRoot::connect(SyncRootConfig::new(r"C:\Cloud", "Idle", "1"), Idle)
            .expect("the provider connects");
        connection
            .create_placeholder(&PlaceholderSpec::file("a.bin", 8192))
            .expect("the placeholder is created");
        connection
    });
    let exposed = |pid| attributes_seen_by(pid, placeholder) & REPARSE_POINT != 0;
    assert!(!exposed(app), "an ordinary program sees an ordinary file");

    let rules = process::run_as(admin, || ImageRules::connect().unwrap());
    let as_admin = |f: &dyn Fn(&ImageRules)| process::run_as(admin, || f(&rules));
    as_admin(&|r| r.set(r"C:\Tools\app.exe", Visibility::Expose).unwrap());
    assert!(exposed(app), "the rule for its path exposes placeholders");
    assert!(!exposed(admin), "to that image only");

    // The program's own mode beats the rule.
    process::run_as(app, || {
        compat::set_process_mode(PlaceholderCompatibility::Disguise).unwrap();
    });
    assert!(!exposed(app));
    process::run_as(app, || {
        compat::set_process_mode(PlaceholderCompatibility::ApplicationDefault).unwrap();
    });

    // A directory rule covers every image under it; the exact path still wins.
    as_admin(&|r| r.set(r"C:\Tools", Visibility::Expose).unwrap());
    assert!(exposed(admin), "rules.exe is under C:\\Tools");
    as_admin(&|r| r.set("app.exe", Visibility::Disguise).unwrap());
    assert!(exposed(app), "the exact path beats the name");
    as_admin(&|r| assert!(r.remove(r"C:\Tools\app.exe").unwrap()));
    assert!(!exposed(app), "the name beats the directory");
    as_admin(&|r| r.clear().unwrap());
    assert!(
        !exposed(app) && !exposed(admin),
        "no rule: the default again"
    );

    drop(rules);
    process::run_as(provider, || connection.disconnect().unwrap());
    assert_eq!(machine.unload_driver(), STATUS_SUCCESS);
    machine.assert_clean();
}
