//! Notifications with the real driver and a provider written with the real library: what
//! each one carries, and the completions that follow the real outcome (the scenarios
//! count only the blocking kinds).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cloudflt::notify::{
    Ack, DehydrateCompletion, DehydrateNotification, DehydrationReason, DeleteCompletion,
    DeleteNotification, NotifySet, RenameCompletion, RenameNotification,
};
use cloudflt::registration::HydrationModifiers;
use cloudflt::{
    FetchRequest, HydrationPolicy, PlaceholderSpec, SyncProvider, SyncRoot, SyncRootConfig,
    Transfer,
};
use cloudflt_tests::model::files::{self, IoMode, OpenParams};
use cloudflt_tests::model::process;
use cloudflt_tests::rig::{ROOT, Rig};
use windows_sys::Wdk::Storage::FileSystem::FILE_OPEN_REPARSE_POINT;
use windows_sys::Win32::Foundation::{STATUS_CLOUD_FILE_IN_USE, STATUS_SUCCESS};

const SIZE: u64 = 8192;

/// Serves zeros; records every notification as a line; refuses renames to names
/// starting with `locked`.
#[derive(Default)]
struct Seen(Mutex<Vec<String>>);

struct Listen(Arc<Seen>);

impl Listen {
    fn log(&self, line: String) {
        self.0.0.lock().unwrap().push(line);
    }
}

impl SyncProvider for Listen {
    fn fetch_data(&self, request: FetchRequest, mut transfer: Transfer) {
        let start = request.required.start / 4096 * 4096;
        let end = (request.required.end.div_ceil(4096) * 4096).min(request.file_size);
        let data = vec![0x5Au8; (end - start) as usize];
        transfer
            .write(start, &data)
            .expect("the driver takes the data");
    }

    fn notifications(&self) -> NotifySet {
        NotifySet::DELETE
            .union(NotifySet::DELETE_COMPLETION)
            .union(NotifySet::RENAME)
            .union(NotifySet::RENAME_COMPLETION)
            .union(NotifySet::DEHYDRATE)
            .union(NotifySet::DEHYDRATE_COMPLETION)
    }

    fn notify_delete(&self, delete: DeleteNotification, ack: Ack) {
        self.log(format!(
            "delete {} dir={} undelete={} size={} identity={:?}",
            delete.file.path,
            delete.is_directory,
            delete.is_undelete,
            delete.file.file_size,
            String::from_utf8_lossy(&delete.file.identity)
        ));
        ack.allow().expect("allowed");
    }

    fn delete_completed(&self, completion: DeleteCompletion) {
        self.log(format!("deleted {}", completion.file.path));
    }

    fn notify_rename(&self, rename: RenameNotification, ack: Ack) {
        self.log(format!(
            "rename {} -> {} source_in={} target_in={}",
            rename.file.path, rename.target_path, rename.source_in_scope, rename.target_in_scope
        ));
        let refuse = rename
            .target_path
            .rsplit('\\')
            .next()
            .is_some_and(|n| n.starts_with("locked"));
        if refuse {
            ack.refuse(cloudflt::Error::InUse).expect("refused");
        } else {
            ack.allow().expect("allowed");
        }
    }

    fn rename_completed(&self, completion: RenameCompletion) {
        self.log(format!(
            "renamed {} from {}",
            completion.file.path, completion.source_path
        ));
    }

    fn notify_dehydrate(&self, dehydrate: DehydrateNotification, ack: Ack) {
        self.log(format!(
            "dehydrate {} reason={:?} background={}",
            dehydrate.file.path, dehydrate.reason, dehydrate.background
        ));
        ack.allow().expect("allowed");
    }

    fn dehydrate_completed(&self, completion: DehydrateCompletion) {
        self.log(format!(
            "dehydrated {} done={}",
            completion.file.path, completion.dehydrated
        ));
    }
}

fn rename_input(to: &str) -> Vec<u8> {
    let name: Vec<u8> = format!("\\??\\{to}")
        .encode_utf16()
        .flat_map(u16::to_le_bytes)
        .collect();
    let mut input = vec![0u8; 20];
    input[16..20].copy_from_slice(&(name.len() as u32).to_le_bytes());
    input.extend_from_slice(&name);
    input
}

fn reparse_open() -> OpenParams {
    OpenParams {
        access: 0x0001_0000 | 0x0010_0000 | 0x80, // DELETE | SYNCHRONIZE | FILE_READ_ATTRIBUTES
        options: FILE_OPEN_REPARSE_POINT,
        ..OpenParams::default()
    }
}

/// Renames `from` to `to` as the application: the status.
fn rename(rig: &Rig, from: &str, to: &str) -> i32 {
    rename_with(rig, from, to, false)
}

/// Renames `from` to `to` as the application, replacing what is there if `replace`.
fn rename_with(rig: &Rig, from: &str, to: &str, replace: bool) -> i32 {
    let mut input = rename_input(to);
    input[0] = u8::from(replace);
    process::run_as(rig.app, || {
        let h = files::create(from, &reparse_open()).expect("open");
        let status = files::set_information(h, 10, &input);
        files::close(h);
        status
    })
}

#[test]
fn renames_and_dehydrations_are_asked_about_then_completed() {
    let rig = Rig::new();
    let seen = Arc::new(Seen::default());
    let connection = process::run_as(rig.provider, || {
        let config = SyncRootConfig::new(ROOT, "listen", "1")
            .hydration(HydrationPolicy::Full)
            .modifiers(HydrationModifiers::AUTO_DEHYDRATION_ALLOWED)
            .timeout(Duration::from_secs(30));
        SyncRoot::connect(config, Listen(seen.clone())).expect("connect")
    });
    process::run_as(rig.provider, || {
        let made = connection.create_placeholders(&[
            PlaceholderSpec::file("a.bin", SIZE)
                .in_sync(true)
                .identity(b"id-a".to_vec()),
            PlaceholderSpec::file("b.bin", SIZE).in_sync(true),
            PlaceholderSpec::file("d.bin", SIZE)
                .in_sync(true)
                .identity(b"id-d".to_vec()),
        ]);
        assert!(made.iter().all(Result::is_ok), "{made:?}");
    });
    // The lines once `n` are in: completions are delivered on the library's worker
    // threads, after the operation that caused them has returned.
    let lines = |n: usize| {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while seen.0.lock().unwrap().len() < n && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        std::mem::take(&mut *seen.0.lock().unwrap())
    };

    // Within the root: asked, then completed with the former name.
    assert_eq!(
        rename(&rig, "C:\\Cloud\\a.bin", "C:\\Cloud\\c.bin"),
        STATUS_SUCCESS
    );
    assert_eq!(
        lines(2),
        [
            "rename a.bin -> \\Device\\HarddiskVolume1\\Cloud\\c.bin source_in=true target_in=true",
            "renamed c.bin from \\Device\\HarddiskVolume1\\Cloud\\a.bin",
        ]
    );
    // Refused: no completion, the file keeps its name.
    assert_eq!(
        rename(&rig, "C:\\Cloud\\c.bin", "C:\\Cloud\\locked.bin"),
        STATUS_CLOUD_FILE_IN_USE
    );
    assert_eq!(
        lines(1),
        [
            "rename c.bin -> \\Device\\HarddiskVolume1\\Cloud\\locked.bin source_in=true target_in=true"
        ]
    );
    assert!(
        process::run_as(rig.app, || files::create(
            "C:\\Cloud\\c.bin",
            &reparse_open()
        ))
        .map(files::close)
        .is_ok()
    );

    // A dehydration by the application: asked (a user's request), then completed.
    process::run_as(rig.app, || {
        let h = files::create("C:\\Cloud\\b.bin", &OpenParams::default()).expect("open");
        files::read(h, 0, SIZE as usize, IoMode::Cached).expect("read");
        files::close(h);
    });
    process::run_as(rig.app, || cloudflt::app::dehydrate("C:\\Cloud\\b.bin", ..))
        .expect("dehydrated");
    assert_eq!(
        lines(2),
        [
            format!(
                "dehydrate b.bin reason={:?} background=false",
                DehydrationReason::UserManual
            ),
            "dehydrated b.bin done=true".to_string(),
        ]
    );

    // A delete carries the placeholder's size and identity.
    let status = process::run_as(rig.app, || {
        let h = files::create("C:\\Cloud\\c.bin", &reparse_open()).expect("open");
        let status = files::set_information(h, 13, &[1]);
        files::close(h);
        status
    });
    assert_eq!(status, STATUS_SUCCESS);
    assert_eq!(
        lines(2),
        [
            "delete c.bin dir=false undelete=false size=8192 identity=\"id-a\"",
            "deleted c.bin",
        ]
    );

    // A rename that replaces a placeholder deletes it: asked about both, told of both.
    assert_eq!(
        rename_with(&rig, "C:\\Cloud\\b.bin", "C:\\Cloud\\d.bin", true),
        STATUS_SUCCESS
    );
    let mut seen = lines(4);
    assert_eq!(
        seen[..2],
        [
            "rename b.bin -> \\Device\\HarddiskVolume1\\Cloud\\d.bin source_in=true target_in=true",
            "delete d.bin dir=false undelete=false size=8192 identity=\"id-d\"",
        ]
    );
    // The two completions come from the library's workers, in either order.
    seen[2..].sort();
    assert_eq!(
        seen[2..],
        [
            "deleted d.bin",
            "renamed d.bin from \\Device\\HarddiskVolume1\\Cloud\\b.bin",
        ]
    );
    process::run_as(rig.provider, || connection.disconnect()).expect("disconnect");
    rig.unload();
}

#[test]
fn directory_and_posix_deletes_are_completed_when_the_name_goes() {
    let rig = Rig::new();
    let seen = Arc::new(Seen::default());
    let connection = process::run_as(rig.provider, || {
        let config = SyncRootConfig::new(ROOT, "listen", "1").timeout(Duration::from_secs(30));
        SyncRoot::connect(config, Listen(seen.clone())).expect("connect")
    });
    process::run_as(rig.provider, || {
        let made = connection.create_placeholders(&[
            PlaceholderSpec::directory("dir"),
            PlaceholderSpec::file("p.bin", SIZE).in_sync(true),
            PlaceholderSpec::file("q.bin", SIZE).in_sync(true),
        ]);
        assert!(made.iter().all(Result::is_ok), "{made:?}");
    });
    let lines = |n: usize| {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while seen.0.lock().unwrap().len() < n && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        // Anything late shows up too.
        std::thread::sleep(Duration::from_millis(50));
        std::mem::take(&mut *seen.0.lock().unwrap())
    };
    let dir_open = OpenParams {
        options: FILE_OPEN_REPARSE_POINT | 0x1, // FILE_DIRECTORY_FILE
        ..reparse_open()
    };

    // A directory placeholder: asked; told only once its last handle is gone.
    let second = process::run_as(rig.app, || {
        let first = files::create("C:\\Cloud\\dir", &dir_open).expect("open");
        let second = files::create("C:\\Cloud\\dir", &dir_open).expect("open");
        assert_eq!(files::set_information(first, 13, &[1]), STATUS_SUCCESS);
        files::close(first);
        second
    });
    assert_eq!(
        lines(1),
        ["delete dir dir=true undelete=false size=0 identity=\"\""]
    );
    process::run_as(rig.app, || files::close(second));
    assert_eq!(lines(1), ["deleted dir"]);

    // POSIX semantics: the name goes at once, and so does the completion, while the
    // deleting handle is still open.
    let flags: u32 = 0x1 | 0x2; // FILE_DISPOSITION_DELETE | FILE_DISPOSITION_POSIX_SEMANTICS
    let h = process::run_as(rig.app, || {
        let h = files::create("C:\\Cloud\\p.bin", &reparse_open()).expect("open");
        assert_eq!(
            files::set_information(h, 64, &flags.to_le_bytes()),
            STATUS_SUCCESS
        );
        h
    });
    assert_eq!(
        lines(2),
        [
            "delete p.bin dir=false undelete=false size=8192 identity=\"\"",
            "deleted p.bin",
        ]
    );
    process::run_as(rig.app, || files::close(h));
    assert!(lines(0).is_empty(), "told twice");

    // Delete-on-close: asked at the open, told when its cleanup deletes the file.
    let doc = OpenParams {
        options: FILE_OPEN_REPARSE_POINT | 0x1000, // FILE_DELETE_ON_CLOSE
        ..reparse_open()
    };
    let h = process::run_as(rig.app, || {
        files::create("C:\\Cloud\\q.bin", &doc).expect("open")
    });
    assert_eq!(
        lines(1),
        ["delete q.bin dir=false undelete=false size=8192 identity=\"\""]
    );
    process::run_as(rig.app, || files::close(h));
    assert_eq!(lines(1), ["deleted q.bin"]);
    process::run_as(rig.provider, || connection.disconnect()).expect("disconnect");
    rig.unload();
}

/// Answers deletes late: after `pings` valid requests on its connection, 100 ms apart
/// (each restarts the clock, cfapi's rule), or after the same silence without them.
struct Late {
    connection: Arc<Mutex<Option<cloudflt::Connection>>>,
    pings: usize,
}

impl SyncProvider for Late {
    fn fetch_data(&self, _request: FetchRequest, transfer: Transfer) {
        let _ = transfer.fail(cloudflt::Error::NetworkUnavailable);
    }

    fn notifications(&self) -> NotifySet {
        NotifySet::DELETE
    }

    fn notify_delete(&self, _delete: DeleteNotification, ack: Ack) {
        for _ in 0..6 {
            std::thread::sleep(Duration::from_millis(100));
            if self.pings > 0
                && let Some(connection) = self.connection.lock().unwrap().as_ref()
            {
                let _ = connection.info("b.bin");
            }
        }
        let _ = ack.allow();
    }
}

/// Deletes `C:\Cloud\a.bin` with a provider whose timeout is 300 ms and that answers
/// after 600 ms, pinging its connection meanwhile or not: the delete's status.
fn late_delete(pings: usize) -> i32 {
    let rig = Rig::new();
    let slot = Arc::new(Mutex::new(None));
    let connection = process::run_as(rig.provider, || {
        let config = SyncRootConfig::new(ROOT, "late", "1").timeout(Duration::from_millis(300));
        SyncRoot::connect(
            config,
            Late {
                connection: slot.clone(),
                pings,
            },
        )
        .expect("connect")
    });
    process::run_as(rig.provider, || {
        let made = connection.create_placeholders(&[
            PlaceholderSpec::file("a.bin", SIZE).in_sync(true),
            PlaceholderSpec::file("b.bin", SIZE).in_sync(true),
        ]);
        assert!(made.iter().all(Result::is_ok), "{made:?}");
    });
    *slot.lock().unwrap() = Some(connection);
    let status = process::run_as(rig.app, || {
        let h = files::create("C:\\Cloud\\a.bin", &reparse_open()).expect("open");
        let status = files::set_information(h, 13, &[1]);
        files::close(h);
        status
    });
    let connection = slot.lock().unwrap().take().expect("still there");
    process::run_as(rig.provider, || connection.disconnect()).expect("disconnect");
    rig.unload();
    status
}

#[test]
fn any_valid_message_of_the_provider_restarts_a_notification_clock() {
    assert_eq!(
        late_delete(0),
        windows_sys::Win32::Foundation::STATUS_CLOUD_FILE_REQUEST_TIMEOUT,
        "600 ms of silence is past the 300 ms timeout"
    );
    assert_eq!(
        late_delete(6),
        STATUS_SUCCESS,
        "a request every 100 ms keeps it alive"
    );
}
