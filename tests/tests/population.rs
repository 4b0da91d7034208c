//! Population on demand with the real driver and a provider written with the real
//! library (issue 15): what the provider is asked, what its batches make, what each entry
//! reports, and the driver's memory while a large directory is populated.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cloudflt::{
    EntryError, Error, FetchRequest, PlaceholderSpec, Population, PopulationRequest, SyncProvider,
    SyncRoot, SyncRootConfig, Transfer,
};
use cloudflt_tests::model::files::{self, OpenParams};
use cloudflt_tests::model::process;
use cloudflt_tests::rig::{ROOT, Rig};
use windows_sys::Wdk::Storage::FileSystem::FILE_DIRECTORY_FILE;
use windows_sys::Win32::Foundation::{
    STATUS_CLOUD_FILE_UNSUCCESSFUL, STATUS_END_OF_FILE, STATUS_NO_MORE_FILES, STATUS_SUCCESS,
};

/// FileNamesInformation.
const FILE_NAMES_INFORMATION: i32 = 12;

/// A directory of `count` files named `f000000.txt`…, sent in batches of `batch`; the
/// requests it got and each batch's outcomes are kept.
struct Listing {
    count: usize,
    batch: usize,
    /// Extra entries sent first (a name that exists locally, one the driver refuses).
    extra: Vec<PlaceholderSpec>,
    stop_on_error: bool,
    asked: AtomicU64,
    requests: Mutex<Vec<PopulationRequest>>,
    outcomes: Mutex<Vec<Result<(), String>>>,
}

impl Listing {
    fn new(count: usize, batch: usize) -> Self {
        Self {
            count,
            batch,
            extra: Vec::new(),
            stop_on_error: false,
            asked: AtomicU64::new(0),
            requests: Mutex::new(Vec::new()),
            outcomes: Mutex::new(Vec::new()),
        }
    }
}

struct Serve(Arc<Listing>);

impl SyncProvider for Serve {
    fn fetch_data(&self, _request: FetchRequest, transfer: Transfer) {
        let _ = transfer.fail(Error::NetworkUnavailable);
    }

    fn fetch_placeholders(&self, request: PopulationRequest, mut population: Population) {
        let listing = &self.0;
        listing.asked.fetch_add(1, Ordering::SeqCst);
        listing.requests.lock().unwrap().push(request);
        population.disable_on_demand_population(true);
        population.stop_on_error(listing.stop_on_error);
        let total = (listing.extra.len() + listing.count) as u64;
        let mut outcomes = Vec::new();
        let record = |outcomes: &mut Vec<Result<(), String>>,
                      results: Vec<Result<(), EntryError>>| {
            outcomes.extend(results.into_iter().map(|r| r.map_err(|e| format!("{e:?}"))));
        };
        if !listing.extra.is_empty() {
            let results = population
                .send(&listing.extra, total)
                .expect("the driver takes the batch");
            let stopped = results.len() < listing.extra.len();
            record(&mut outcomes, results);
            if stopped {
                *listing.outcomes.lock().unwrap() = outcomes;
                drop(population);
                return;
            }
        }
        let mut at = 0;
        while at < listing.count {
            let end = (at + listing.batch).min(listing.count);
            let specs: Vec<PlaceholderSpec> = (at..end)
                .map(|i| {
                    PlaceholderSpec::file(format!("f{i:06}.txt"), i as u64)
                        .identity(format!("id-{i}").into_bytes())
                        .in_sync(true)
                })
                .collect();
            let results = population
                .send(&specs, total)
                .expect("the driver takes the batch");
            record(&mut outcomes, results);
            at = end;
        }
        if listing.count == 0 && listing.extra.is_empty() {
            population
                .send(&[], 0)
                .expect("an empty directory completes");
        }
        assert!(population.is_complete());
        *listing.outcomes.lock().unwrap() = outcomes;
    }
}

/// The outcomes of the provider's batches once it has recorded `n` of them (its callback
/// records them after its last batch was taken, which may be after the listing that
/// waited for the population returned).
fn outcomes(listing: &Listing, n: usize) -> Vec<Result<(), String>> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let outcomes = listing.outcomes.lock().unwrap().clone();
        if outcomes.len() >= n || std::time::Instant::now() > deadline {
            return outcomes;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn connect(rig: &Rig, listing: &Arc<Listing>) -> cloudflt::Connection {
    process::run_as(rig.provider, || {
        let config = SyncRootConfig::new(ROOT, "tree", "1").timeout(Duration::from_secs(30));
        SyncRoot::connect(config, Serve(listing.clone())).expect("connect")
    })
}

/// The names a full listing of `dir` returns (without `.` and `..`), as `app` sees them.
fn list(rig: &Rig, dir: &str) -> Result<Vec<String>, i32> {
    list_as(rig.app, dir)
}

/// The same, as the process `pid` sees them.
fn list_as(pid: u32, dir: &str) -> Result<Vec<String>, i32> {
    process::run_as(pid, || {
        let handle = files::create(
            dir,
            &OpenParams {
                options: FILE_DIRECTORY_FILE,
                ..OpenParams::default()
            },
        )?;
        let mut names = Vec::new();
        let mut restart = true;
        let outcome = loop {
            let (status, buffer) = files::query_directory(
                handle,
                FILE_NAMES_INFORMATION,
                None,
                restart,
                false,
                64 * 1024,
            );
            restart = false;
            if status == STATUS_NO_MORE_FILES {
                break Ok(());
            }
            if status != STATUS_SUCCESS {
                break Err(status);
            }
            // FILE_NAMES_INFORMATION: NextEntryOffset, FileIndex, FileNameLength, FileName.
            let mut at = 0usize;
            loop {
                let next = u32::from_le_bytes(buffer[at..at + 4].try_into().unwrap()) as usize;
                let len = u32::from_le_bytes(buffer[at + 8..at + 12].try_into().unwrap()) as usize;
                let units: Vec<u16> = buffer[at + 12..at + 12 + len]
                    .chunks_exact(2)
                    .map(|c| u16::from_le_bytes([c[0], c[1]]))
                    .collect();
                let name = String::from_utf16_lossy(&units);
                if name != "." && name != ".." {
                    names.push(name);
                }
                if next == 0 {
                    break;
                }
                at += next;
            }
        };
        files::close(handle);
        outcome.map(|()| names)
    })
}

#[test]
fn one_request_fills_the_root_in_batches_and_it_is_never_asked_again() {
    let rig = Rig::new();
    let listing = Arc::new(Listing::new(2_500, 1_000));
    let connection = connect(&rig, &listing);
    let names = list(&rig, ROOT).expect("the listing");
    assert_eq!(names.len(), 2_500);
    assert!(names.iter().any(|n| n == "f002499.txt"));
    assert_eq!(listing.asked.load(Ordering::SeqCst), 1);
    {
        let requests = listing.requests.lock().unwrap();
        let request = &requests[0];
        assert_eq!(request.path, "", "the root, relative to itself");
        assert_eq!(request.pattern, "*");
        assert!(request.process.image.ends_with("app.exe"), "{request:?}");
    }
    let first = outcomes(&listing, 2_500);
    assert_eq!(first.len(), 2_500);
    assert!(first.iter().all(Result::is_ok), "every entry was created");
    listing.outcomes.lock().unwrap().clear();
    // Complete: listed again, nothing is asked.
    assert_eq!(list(&rig, ROOT).expect("the listing").len(), 2_500);
    assert_eq!(listing.asked.load(Ordering::SeqCst), 1);
    // The provider's own listing never asks, even once the root is made not populated.
    process::run_as(rig.provider, || connection.set_populated("", false)).expect("enable");
    assert_eq!(
        list_as(rig.provider, ROOT).expect("the listing").len(),
        2_500
    );
    assert_eq!(listing.asked.load(Ordering::SeqCst), 1);
    // Anyone else's does.
    assert_eq!(list(&rig, ROOT).expect("the listing").len(), 2_500);
    assert_eq!(listing.asked.load(Ordering::SeqCst), 2);
    let existing = listing.outcomes.lock().unwrap();
    assert!(
        existing
            .iter()
            .all(|r| r.as_ref().is_err_and(|e| e == "Exists")),
        "a second population finds every name there and leaves it"
    );
    drop(existing);
    process::run_as(rig.provider, || connection.disconnect()).expect("disconnect");
    rig.unload();
}

#[test]
fn existing_names_are_reported_and_kept_and_stop_on_error_stops_the_batch() {
    let rig = Rig::new();
    // A local file the population must not replace.
    process::run_as(rig.app, || {
        let h = files::create(
            &format!(r"{ROOT}\mine.txt"),
            &OpenParams {
                disposition: 2,
                ..OpenParams::default()
            },
        )
        .expect("a local file");
        files::close(h);
    });
    let mut listing = Listing::new(3, 10);
    listing.extra = vec![
        PlaceholderSpec::file("mine.txt", 999).in_sync(true),
        // A name NTFS refuses: the entry fails, and STOP_ON_ERROR ends the batch there.
        PlaceholderSpec::file("bad<name>.txt", 1),
        PlaceholderSpec::file("after.txt", 1),
    ];
    listing.stop_on_error = true;
    let listing = Arc::new(listing);
    let connection = connect(&rig, &listing);
    // The provider gives up on the directory after the failed entry (it drops its
    // population): the listing fails, and what was made stays.
    assert_eq!(list(&rig, ROOT), Err(STATUS_CLOUD_FILE_UNSUCCESSFUL));
    let names = list_as(rig.provider, ROOT).expect("the provider's own listing");
    assert_eq!(names, ["mine.txt"], "nothing after the failure was created");
    let outcomes = outcomes(&listing, 2);
    assert_eq!(outcomes.len(), 2, "{outcomes:?}");
    assert_eq!(outcomes[0], Err("Exists".to_string()));
    assert!(outcomes[1].is_err(), "{outcomes:?}");
    // The local file is as it was: ordinary, empty.
    // (Read by the provider: an application's open beneath the root would ask again.)
    let data = process::run_as(rig.provider, || {
        let h = files::create(&format!(r"{ROOT}\mine.txt"), &OpenParams::default()).expect("open");
        let data = files::read(h, 0, 16, files::IoMode::Cached);
        files::close(h);
        data
    });
    assert_eq!(
        data,
        Err(STATUS_END_OF_FILE),
        "an empty local file, not a 999-byte placeholder"
    );
    // Not complete: the next listing asks again.
    let _ = list(&rig, ROOT);
    assert_eq!(listing.asked.load(Ordering::SeqCst), 2);
    process::run_as(rig.provider, || connection.disconnect()).expect("disconnect");
    rig.unload();
}

/// The driver's pool at its highest while a directory of `count` entries is populated,
/// above what was outstanding before.
fn population_peak(count: usize) -> usize {
    let rig = Rig::new();
    let listing = Arc::new(Listing::new(count, 1_000));
    let connection = connect(&rig, &listing);
    rig.machine.reset_pool_peak();
    let before = rig.machine.pool_live();
    // An open beneath the root populates it.
    let opened = process::run_as(rig.app, || {
        files::create(&format!(r"{ROOT}\f000001.txt"), &OpenParams::default()).map(files::close)
    });
    assert_eq!(opened, Ok(STATUS_SUCCESS));
    let peak = rig.machine.pool_peak() - before;
    assert_eq!(listing.asked.load(Ordering::SeqCst), 1);
    assert_eq!(outcomes(&listing, count).len(), count);
    process::run_as(rig.provider, || connection.disconnect()).expect("disconnect");
    rig.unload();
    peak
}

#[test]
fn a_directory_of_100000_entries_populates_within_the_memory_of_a_small_one() {
    let small = population_peak(1_000);
    let large = population_peak(100_000);
    println!(
        "driver pool peak while populating: {small} bytes for 1,000 entries, {large} for 100,000"
    );
    // Batches, not one buffer: the same batch size costs the same whatever the total.
    assert!(
        large <= small + 16 * 1024,
        "driver pool peak: {large} bytes for 100,000 entries, {small} for 1,000"
    );
    assert!(large < 1 << 20, "driver pool peak {large} bytes");
}
