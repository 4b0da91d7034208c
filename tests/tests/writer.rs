//! The driver's writer, the handle through which a provider's bytes reach a placeholder,
//! with the real driver and a provider written with the real library: the writer is
//! opened by the placeholder's file id, below cloudflt's instance, so a rename racing a
//! fetch cannot send the bytes into whatever file took the old name.
//!
//! The provider holds each fetch until the test releases it, so the race is staged step
//! by step instead of timed: the read comes in, the file is renamed and a new file made
//! at its old name while the fetch is held, and PROGRESSIVE's background round, whose
//! writer is opened after the rename with the name the read came in with, is where a
//! writer opened by name would land in the new file.

use std::sync::Mutex;
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::Duration;

use cloudflt::{
    FetchRequest, HydrationPolicy, PlaceholderSpec, SyncProvider, SyncRoot, SyncRootConfig,
    Transfer,
};
use cloudflt_tests::model::files::{self, IoMode, KernelOpen, OpenParams};
use cloudflt_tests::model::process;
use cloudflt_tests::rig::{ROOT, Rig};
use windows_sys::Wdk::Storage::FileSystem::{
    FILE_OPEN_BY_FILE_ID, FILE_OPEN_REPARSE_POINT, FileRenameInformation,
};
use windows_sys::Win32::Foundation::STATUS_SUCCESS;
/// Three pages and a tail: the read's page first, the rest in the background round.
const SIZE: usize = 3 * 4096 + 100;
/// How long a step waits for the driver before the test fails (nothing is timed).
const PATIENCE: Duration = Duration::from_secs(20);

/// The remote content.
fn remote() -> Vec<u8> {
    (0..SIZE).map(|i| (i * 7 + 3) as u8).collect()
}

/// Hands every fetch to the test.
struct Gate(Mutex<Sender<(FetchRequest, Transfer)>>);

impl SyncProvider for Gate {
    fn fetch_data(&self, request: FetchRequest, transfer: Transfer) {
        let _ = self
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send((request, transfer));
    }
}

/// Answers a held fetch with the remote bytes of its required range (widened to whole
/// pages, as cfapi requires), from the provider's process.
fn serve(provider: u32, request: &FetchRequest, mut transfer: Transfer) {
    let data = remote();
    let start = request.required.start / 4096 * 4096;
    let end = (request.required.end.div_ceil(4096) * 4096).min(SIZE as u64);
    process::run_as(provider, || {
        transfer
            .write(start, &data[start as usize..end as usize])
            .expect("the driver takes the transfer");
        drop(transfer);
    });
}

/// The writer: the driver's open, by file id, with write access, of the placeholder.
fn writers() -> Vec<KernelOpen> {
    files::kernel_opens()
        .into_iter()
        .filter(|o| o.access & 0x2 != 0) // FILE_WRITE_DATA
        .collect()
}

fn next_fetch(fetches: &Receiver<(FetchRequest, Transfer)>) -> (FetchRequest, Transfer) {
    fetches
        .recv_timeout(PATIENCE)
        .expect("the driver asks the provider")
}

/// MoveFileEx(`from`, `to`) by the application.
fn rename(app: u32, from: &str, to: &str) {
    process::run_as(app, || {
        let params = OpenParams {
            access: 0x0001_0000 | 0x0010_0000 | 0x80, // DELETE | SYNCHRONIZE | FILE_READ_ATTRIBUTES
            ..OpenParams::default()
        };
        let h = files::create(from, &params).expect("open for rename");
        let name: Vec<u8> = format!("\\??\\{to}")
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        // FILE_RENAME_INFORMATION (x64): ReplaceIfExists, RootDirectory at 8,
        // FileNameLength at 16, FileName at 20.
        let mut input = vec![0u8; 20];
        input[16..20].copy_from_slice(&(name.len() as u32).to_le_bytes());
        input.extend_from_slice(&name);
        assert_eq!(
            files::set_information(h, FileRenameInformation, &input),
            STATUS_SUCCESS
        );
        files::close(h);
    });
}

fn read_all(app: u32, path: &str) -> Vec<u8> {
    process::run_as(app, || {
        let h = files::create(path, &OpenParams::default()).expect("open");
        let data = files::read(h, 0, SIZE + 100, IoMode::Cached).expect("read");
        files::close(h);
        data
    })
}

#[test]
fn a_rename_racing_a_fetch_cannot_send_the_providers_bytes_into_another_file() {
    let rig = Rig::new();
    let (provider, app) = (rig.provider, rig.app);
    let (send, fetches) = mpsc::channel();
    let connection = process::run_as(provider, || {
        let config = SyncRootConfig::new(ROOT, "gate", "1")
            .hydration(HydrationPolicy::Progressive)
            .timeout(Duration::from_secs(120));
        let connection = SyncRoot::connect(config, Gate(Mutex::new(send))).expect("connect");
        let made = connection.create_placeholders(&[PlaceholderSpec::file("a.bin", SIZE as u64)
            .identity(b"a.bin".to_vec())
            .in_sync(true)]);
        assert!(made.iter().all(Result::is_ok), "{made:?}");
        connection
    });
    let id = files::with_volume("C:\\Cloud\\a.bin", |fs, rel| fs.lookup(rel))
        .unwrap()
        .expect("the placeholder");

    // The application opens the placeholder and reads its first page: the read waits.
    let h = process::run_as(app, || {
        files::create("C:\\Cloud\\a.bin", &OpenParams::default()).expect("open")
    });
    let reader = std::thread::spawn(move || {
        process::run_as(app, || files::read(h, 0, 4096, IoMode::Cached))
    });
    let (first, transfer) = next_fetch(&fetches);
    assert_eq!((first.file_id, first.required.clone()), (id, 0..4096));
    let open = writers();
    assert_eq!(open.len(), 1, "one writer: {open:?}");
    assert_eq!(open[0].file, Some(id));
    assert_eq!(open[0].path.as_deref(), Some("\\Cloud\\a.bin"));
    assert_ne!(open[0].options & FILE_OPEN_BY_FILE_ID, 0, "opened by id");
    assert_ne!(
        open[0].options & FILE_OPEN_REPARSE_POINT,
        0,
        "on the reparse point"
    );
    assert!(
        open[0].below.is_some(),
        "issued below cloudflt's instance: no filter at or above it sees the create"
    );

    // While the fetch is held, the file moves and a new one takes its name.
    rename(app, "C:\\Cloud\\a.bin", "C:\\Cloud\\moved.bin");
    let other = process::run_as(app, || {
        let h = files::create("C:\\Cloud\\a.bin", &OpenParams::read_write(2)).expect("new file");
        files::write(h, 0, b"local", IoMode::Cached).expect("write");
        files::close(h);
        files::with_volume("C:\\Cloud\\a.bin", |fs, rel| fs.lookup(rel))
            .unwrap()
            .unwrap()
    });
    assert_ne!(other, id);

    serve(provider, &first, transfer);
    let data = reader.join().unwrap().expect("the read completes");
    assert_eq!(data, remote()[..4096]);

    // PROGRESSIVE fetches the rest in a round of its own: its writer is opened now, after
    // the rename, and must be the placeholder's, not the new file at the old name.
    let (rest, transfer) = next_fetch(&fetches);
    assert_eq!(
        (rest.file_id, rest.required.clone()),
        (id, 4096..SIZE as u64)
    );
    let open = writers();
    assert_eq!(open.len(), 1, "one writer: {open:?}");
    assert_eq!(
        open[0].file,
        Some(id),
        "the placeholder, not file {other:#x}"
    );
    assert_eq!(open[0].path.as_deref(), Some("\\Cloud\\moved.bin"));
    assert_ne!(open[0].options & FILE_OPEN_BY_FILE_ID, 0);
    assert!(open[0].below.is_some());
    serve(provider, &rest, transfer);

    assert_eq!(read_all(app, "C:\\Cloud\\moved.bin"), remote());
    assert_eq!(read_all(app, "C:\\Cloud\\a.bin"), b"local");
    let new_file = files::with_volume("C:\\Cloud\\a.bin", |fs, rel| fs.node(fs.lookup(rel)?))
        .unwrap()
        .unwrap();
    assert!(
        new_file.reparse.is_none() && new_file.size == 5,
        "the new file is untouched: {new_file:?}"
    );

    process::run_as(app, || files::close(h));
    process::run_as(provider, || connection.disconnect()).expect("disconnect");
    assert!(
        fetches.try_recv().is_err(),
        "no fetch beyond the two rounds"
    );
    rig.unload();
}
