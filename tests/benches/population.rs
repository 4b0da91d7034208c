//! What a listing of a populated directory costs against a listing of an ordinary
//! directory of the same size, both with the driver loaded (issue 15, point 4), and how
//! long populating it took. The real driver and library on the kernel model; every figure
//! measured in this run.
//!
//! `cargo bench -p cloudflt-tests --bench population [-- ENTRIES ROUNDS]` (defaults 10,000
//! entries, 15 rounds). Prints one line per figure (median of the rounds) and the ratio,
//! with the target (≤ 1.05×) met or missed.

use std::time::Duration;

use cloudflt::{
    Error, FetchRequest, PlaceholderSpec, Population, PopulationRequest, SyncProvider, SyncRoot,
    SyncRootConfig, Transfer,
};
use cloudflt_tests::bench::{median, timed_listing as list};
use cloudflt_tests::model::files::{self, OpenParams};
use cloudflt_tests::model::process;
use cloudflt_tests::rig::{ROOT, Rig};
use windows_sys::Wdk::Storage::FileSystem::FILE_DIRECTORY_FILE;

/// The listing target: a populated directory costs at most this much more.
const TARGET: f64 = 1.05;

/// Serves a directory of `count` files in batches of 1,000.
struct Tree(usize);

impl SyncProvider for Tree {
    fn fetch_data(&self, _request: FetchRequest, transfer: Transfer) {
        let _ = transfer.fail(Error::NetworkUnavailable);
    }

    fn fetch_placeholders(&self, _request: PopulationRequest, mut population: Population) {
        population.disable_on_demand_population(true);
        let total = self.0 as u64;
        let mut at = 0;
        while at < self.0 {
            let end = (at + 1_000).min(self.0);
            let specs: Vec<PlaceholderSpec> = (at..end)
                .map(|i| PlaceholderSpec::file(format!("f{i:06}.txt"), 4096).in_sync(true))
                .collect();
            if population.send(&specs, total).is_err() {
                return;
            }
            at = end;
        }
    }
}

fn directory() -> OpenParams {
    OpenParams {
        options: FILE_DIRECTORY_FILE,
        ..OpenParams::default()
    }
}

fn main() {
    // `cargo bench` passes `--bench`; numbers are ours.
    let numbers: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let count = numbers.first().copied().unwrap_or(10_000);
    let rounds = numbers.get(1).copied().unwrap_or(15).max(1);

    let rig = Rig::new();
    let connection = process::run_as(rig.provider, || {
        SyncRoot::connect(
            SyncRootConfig::new(ROOT, "bench", "1").timeout(Duration::from_secs(120)),
            Tree(count),
        )
        .expect("connect")
    });
    // The first listing populates the root.
    let (populated_entries, populating) = list(rig.app, ROOT);
    let expected = count + 2; // `.` and `..`
    assert_eq!(populated_entries, expected, "the populated listing");
    // Ordinary directories of the same size: one outside every root, one in the root
    // (where the driver looks at every listing as it does at the populated one's).
    let outside = r"C:\Plain";
    let inside = format!(r"{ROOT}\Plain");
    for dir in [outside, inside.as_str()] {
        process::run_as(rig.app, || {
            let made = files::create(
                dir,
                &OpenParams {
                    disposition: 2,
                    ..directory()
                },
            )
            .expect("an ordinary directory");
            files::close(made);
            for i in 0..count {
                let file = files::create(
                    &format!(r"{dir}\f{i:06}.txt"),
                    &OpenParams {
                        disposition: 2,
                        ..OpenParams::default()
                    },
                )
                .expect("an ordinary file");
                files::close(file);
            }
        });
    }
    let mut outside_times = Vec::new();
    let mut inside_times = Vec::new();
    let mut populated = Vec::new();
    // The root now also holds `Plain`.
    let expected_root = expected + 1;
    for _ in 0..rounds {
        let (n, t) = list(rig.app, outside);
        assert_eq!(n, expected, "the ordinary listing");
        outside_times.push(t);
        let (n, t) = list(rig.app, &inside);
        assert_eq!(n, expected, "the ordinary listing in the root");
        inside_times.push(t);
        let (n, t) = list(rig.app, ROOT);
        assert_eq!(n, expected_root, "the populated listing");
        populated.push(t);
    }
    let outside_median = median(outside_times);
    let ordinary = median(inside_times);
    let populated = median(populated);
    let ratio = populated.as_secs_f64() / ordinary.as_secs_f64();
    println!(
        "population of {count} entries (first listing, provider included): {:.1} ms, {:.1} µs per entry",
        populating.as_secs_f64() * 1e3,
        populating.as_secs_f64() * 1e6 / count as f64
    );
    println!(
        "listing {count} entries, ordinary directory outside every root: {:.2} ms (median of {rounds})",
        outside_median.as_secs_f64() * 1e3
    );
    println!(
        "listing {count} entries, ordinary directory in the root: {:.2} ms (median of {rounds})",
        ordinary.as_secs_f64() * 1e3
    );
    println!(
        "listing {count} entries, populated directory: {:.2} ms (median of {rounds})",
        populated.as_secs_f64() * 1e3
    );
    println!(
        "populated / ordinary in the root: {ratio:.3}x, target <= {TARGET}x: {}",
        if ratio <= TARGET { "met" } else { "missed" }
    );
    println!(
        "populated / ordinary outside every root: {:.3}x (the driver's listing work in a root, disguise included)",
        populated.as_secs_f64() / outside_median.as_secs_f64()
    );
    process::run_as(rig.provider, || connection.disconnect()).expect("disconnect");
    rig.unload();
}
