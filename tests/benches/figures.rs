//! `cargo xtask bench` (issue 16): every figure of the performance table, measured on the
//! kernel model with the real driver and the real library, each against the comparison it
//! is judged by, measured in the same run. One line per figure — its median, the
//! comparison, the ratio, the target and whether it is met — then `N targets met, M
//! missed`.
//!
//! `cargo bench -p cloudflt-tests --bench figures [-- --quick] [NAME...]`: `--quick` shrinks
//! every size and count for a smoke run (what CI does; its figures are not the table's);
//! names (`hydration`, `off-root`, …) run only those figures.
//!
//! Times are medians of several rounds unless a figure says otherwise; every ratio is of
//! two figures of this run, never of a stored number.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cloudflt::{
    FetchRequest, HydrationPolicy, PlaceholderSpec, SyncProvider, SyncRoot, SyncRootConfig,
    TRANSFER_ALIGNMENT, Transfer,
};
use cloudflt_driver::nt::driver_entry;
use cloudflt_tests::bench::{median, timed_listing as list};
use cloudflt_tests::model::files::{self, IoMode, OpenParams};
use cloudflt_tests::model::process::{
    self, PHCM_APPLICATION_DEFAULT, PHCM_DISGUISE_PLACEHOLDER, PHCM_EXPOSE_PLACEHOLDERS,
};
use cloudflt_tests::model::{Machine, VolumeConfig};
use cloudflt_tests::rig::{ROOT, Rig};
use windows_sys::Wdk::Storage::FileSystem::FILE_DIRECTORY_FILE;
use windows_sys::Win32::Foundation::STATUS_SUCCESS;

const MIB: u64 = 1 << 20;
const FILE_CREATE: u32 = 2;

/// How a figure is judged.
#[derive(Clone, Copy)]
enum Target {
    /// The ratio must be at most this.
    AtMost(f64),
    /// The ratio must be at least this.
    AtLeast(f64),
    /// The figure itself (not a ratio) must be at most this, in its own unit.
    ValueAtMost(f64),
    /// Measured and shown; the table sets no target.
    None,
}

/// A figure: measures (quick or full sizes) and adds its lines to the report.
type Figure = fn(bool, &mut Vec<Line>);

/// One line of the report.
struct Line {
    name: String,
    value: String,
    comparison: String,
    ratio: Option<f64>,
    /// The figure itself in the unit `ValueAtMost` is written in.
    raw: f64,
    target: Target,
}

impl Line {
    fn met(&self) -> Option<bool> {
        match self.target {
            Target::AtMost(t) => self.ratio.map(|r| r <= t),
            Target::AtLeast(t) => self.ratio.map(|r| r >= t),
            Target::ValueAtMost(t) => Some(self.raw <= t),
            Target::None => None,
        }
    }

    fn print(&self) {
        let ratio = self.ratio.map_or("-".to_string(), |r| format!("{r:.3}x"));
        let target = match self.target {
            Target::AtMost(t) => format!("ratio <= {t}"),
            Target::AtLeast(t) => format!("ratio >= {t}"),
            Target::ValueAtMost(t) => format!("<= {t}"),
            Target::None => "none".to_string(),
        };
        let verdict = match self.met() {
            Some(true) => "met",
            Some(false) => "missed",
            None => "-",
        };
        println!(
            "{:<58} {:>16}  vs {:<44} {:>9}  target {:<14} {verdict}",
            self.name, self.value, self.comparison, ratio, target
        );
    }
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// Serves every fetch with the bytes of a deterministic pattern (byte `i` of a file is
/// `i % 251`), generated per piece, so files of any size need no buffer of that size.
struct Pattern;

/// The pattern's bytes for `range`.
fn pattern(range: std::ops::Range<u64>) -> Vec<u8> {
    range.map(|i| (i % 251) as u8).collect()
}

impl SyncProvider for Pattern {
    fn fetch_data(&self, request: FetchRequest, mut transfer: Transfer) {
        let start = request.required.start / TRANSFER_ALIGNMENT * TRANSFER_ALIGNMENT;
        let end = (request.required.end.div_ceil(TRANSFER_ALIGNMENT) * TRANSFER_ALIGNMENT)
            .min(request.file_size);
        let mut at = start;
        while at < end {
            let piece = (end - at).min(4 * MIB);
            if transfer.write(at, &pattern(at..at + piece)).is_err() {
                return;
            }
            at += piece;
        }
    }
}

/// Serves every fetch from one buffer held in memory (the hydration figure: what the
/// provider costs is a memcpy, as for a provider reading a cache).
struct Buffer(Arc<Vec<u8>>);

impl SyncProvider for Buffer {
    fn fetch_data(&self, request: FetchRequest, mut transfer: Transfer) {
        let start = request.required.start / TRANSFER_ALIGNMENT * TRANSFER_ALIGNMENT;
        let end = (request.required.end.div_ceil(TRANSFER_ALIGNMENT) * TRANSFER_ALIGNMENT)
            .min(request.file_size);
        let _ = transfer.write(start, &self.0[start as usize..end as usize]);
    }
}

fn connect(
    rig: &Rig,
    policy: HydrationPolicy,
    provider: impl SyncProvider + Send + Sync + 'static,
) -> cloudflt::Connection {
    process::run_as(rig.provider, || {
        let config = SyncRootConfig::new(ROOT, "bench", "1")
            .hydration(policy)
            .timeout(Duration::from_secs(300));
        let connection = SyncRoot::connect(config, provider).expect("connect");
        connection
            .set_populated("", true)
            .expect("the root is complete");
        connection
    })
}

fn create(connection: &cloudflt::Connection, rig: &Rig, specs: &[PlaceholderSpec]) {
    process::run_as(rig.provider, || {
        let made = connection.create_placeholders(specs);
        assert!(made.iter().all(Result::is_ok), "placeholders made");
    });
}

fn disconnect(rig: Rig, connection: cloudflt::Connection) {
    process::run_as(rig.provider, || connection.disconnect()).expect("disconnect");
    rig.unload();
}

/// Reads `length` bytes at `offset` of `path` as `pid` (open, read cached, close).
fn read_as(pid: u32, path: &str, offset: u64, length: usize) -> Vec<u8> {
    process::run_as(pid, || {
        let h = files::create(path, &OpenParams::default()).expect("open");
        let data = files::read(h, offset, length, IoMode::Cached).expect("read");
        files::close(h);
        data
    })
}

/// FULL hydration through driver, port, library and model disk against the two-copy
/// memcpy ceiling of this machine, and the reparse rewrites it made.
fn hydration(quick: bool, report: &mut Vec<Line>) {
    let size = if quick { 16 * MIB } else { 256 * MIB };
    let data: Arc<Vec<u8>> = Arc::new(pattern(0..size));
    // The ceiling: two copies of every byte (provider buffer → kernel → disk) at memcpy
    // speed, measured now.
    let mut copies = Vec::new();
    let mut target = vec![0u8; size as usize];
    for _ in 0..5 {
        let started = Instant::now();
        target.copy_from_slice(&data);
        std::hint::black_box(&target);
        copies.push(started.elapsed());
    }
    drop(target);
    let memcpy = median(copies);
    let ceiling = size as f64 / (2.0 * memcpy.as_secs_f64());
    let mut times = Vec::new();
    let mut rewrites = 0;
    let rounds = if quick { 1 } else { 3 };
    for _ in 0..rounds {
        let rig = Rig::new();
        let connection = connect(&rig, HydrationPolicy::Full, Buffer(data.clone()));
        create(
            &connection,
            &rig,
            &[PlaceholderSpec::file("big.bin", size).in_sync(true)],
        );
        let before = rig.machine.reparse_writes();
        let started = Instant::now();
        let first = read_as(rig.app, &format!(r"{ROOT}\big.bin"), 0, 4096);
        times.push(started.elapsed());
        rewrites = rig.machine.reparse_writes() - before;
        assert_eq!(first, data[..4096], "the first page is the remote's");
        let last = read_as(rig.app, &format!(r"{ROOT}\big.bin"), size - 4096, 4096);
        assert_eq!(last, data[(size - 4096) as usize..], "the last page too");
        disconnect(rig, connection);
    }
    let t = median(times);
    let rate = size as f64 / t.as_secs_f64();
    report.push(Line {
        name: format!(
            "FULL hydration of {} MiB (driver+port+library+disk)",
            size / MIB
        ),
        value: format!("{:.0} MiB/s", rate / MIB as f64),
        comparison: format!("memcpy/2 ceiling {:.0} MiB/s", ceiling / MIB as f64),
        ratio: Some(rate / ceiling),
        raw: rate,
        target: Target::AtLeast(0.5),
    });
    let per_gib = rewrites as f64 * (1024.0 * MIB as f64) / size as f64;
    report.push(Line {
        name: format!(
            "reparse-data rewrites hydrating one {} MiB file",
            size / MIB
        ),
        value: format!("{rewrites}"),
        comparison: format!("{per_gib:.0} per hydrated GiB"),
        ratio: None,
        raw: rewrites as f64,
        target: Target::ValueAtMost(8.0),
    });
}

/// The first 4 KiB of a PROGRESSIVE placeholder: small file against a large one.
fn first_page(quick: bool, report: &mut Vec<Line>) {
    let large = if quick { 64 * MIB } else { 1024 * MIB };
    let mut times = [Vec::new(), Vec::new()];
    for round in 0..3 {
        for (i, size) in [MIB, large].into_iter().enumerate() {
            let rig = Rig::new();
            let connection = connect(&rig, HydrationPolicy::Progressive, Pattern);
            create(
                &connection,
                &rig,
                &[PlaceholderSpec::file("p.bin", size).in_sync(true)],
            );
            let started = Instant::now();
            let first = read_as(rig.app, &format!(r"{ROOT}\p.bin"), 0, 4096);
            let t = started.elapsed();
            assert_eq!(first, pattern(0..4096));
            if round > 0 {
                times[i].push(t);
            }
            // The rest goes on in the background; the provider goes away with it.
            disconnect(rig, connection);
        }
    }
    let [small, big] = times.map(median);
    report.push(Line {
        name: format!("PROGRESSIVE: first 4 KiB of a {} MiB file", large / MIB),
        value: ms(big),
        comparison: format!("of a 1 MiB file {}", ms(small)),
        ratio: Some(big.as_secs_f64() / small.as_secs_f64()),
        raw: 0.0,
        target: Target::None,
    });
}

/// A machine with one NTFS volume, an application and ordinary files under `C:\Data`,
/// the driver loaded or not (loaded: a sync root elsewhere, its provider connected).
fn off_root_machine(
    driver: bool,
    files_count: usize,
) -> (Machine, u32, Option<(u32, cloudflt::Connection)>) {
    let machine = Machine::boot(&[VolumeConfig::ntfs(1)]);
    let mut provider = None;
    if driver {
        assert_eq!(machine.load_driver(driver_entry), STATUS_SUCCESS);
    }
    let app = machine.spawn_process(
        "\\Device\\HarddiskVolume1\\Apps\\app.exe",
        PHCM_APPLICATION_DEFAULT,
        false,
    );
    if driver {
        let pid = machine.spawn_process(
            "\\Device\\HarddiskVolume1\\Sync\\provider.exe",
            PHCM_APPLICATION_DEFAULT,
            true,
        );
        let connection = process::run_as(pid, || {
            let root = files::create(
                ROOT,
                &OpenParams {
                    disposition: FILE_CREATE,
                    options: FILE_DIRECTORY_FILE,
                    ..OpenParams::default()
                },
            )
            .expect("the sync root");
            files::close(root);
            SyncRoot::connect(SyncRootConfig::new(ROOT, "bench", "1"), Pattern).expect("connect")
        });
        provider = Some((pid, connection));
    }
    process::run_as(app, || {
        let dir = files::create(
            r"C:\Data",
            &OpenParams {
                disposition: FILE_CREATE,
                options: FILE_DIRECTORY_FILE,
                ..OpenParams::default()
            },
        )
        .expect("C:\\Data");
        files::close(dir);
        for i in 0..files_count {
            let h = files::create(
                &format!(r"C:\Data\f{i}.bin"),
                &OpenParams {
                    disposition: FILE_CREATE,
                    access: 0x0012_0089 | 0x0012_0116,
                    ..OpenParams::default()
                },
            )
            .expect("a data file");
            files::write(h, 0, &[7u8; 4096], IoMode::Cached).expect("write");
            files::close(h);
        }
    });
    (machine, app, provider)
}

fn end_off_root(mut machine: Machine, provider: Option<(u32, cloudflt::Connection)>) {
    if let Some((pid, connection)) = provider {
        process::run_as(pid, || connection.disconnect()).expect("disconnect");
        assert_eq!(machine.unload_driver(), STATUS_SUCCESS);
    }
    drop(machine);
}

/// Open + read + close, and reads on an open handle, of ordinary files outside every
/// sync root: the driver loaded against the same run without it.
fn off_root(quick: bool, report: &mut Vec<Line>) {
    let files_count = 64;
    let opens = if quick { 200 } else { 5_000 };
    let reads = if quick { 2_000 } else { 50_000 };
    let rounds = if quick { 3 } else { 11 };
    let mut open_times = [Vec::new(), Vec::new()];
    let mut read_times = [Vec::new(), Vec::new()];
    for _ in 0..rounds {
        for (i, driver) in [false, true].into_iter().enumerate() {
            let (machine, app, provider) = off_root_machine(driver, files_count);
            process::run_as(app, || {
                let started = Instant::now();
                for n in 0..opens {
                    let h = files::create(
                        &format!(r"C:\Data\f{}.bin", n % files_count),
                        &OpenParams::default(),
                    )
                    .expect("open");
                    let data = files::read(h, 0, 4096, IoMode::Cached).expect("read");
                    std::hint::black_box(data);
                    files::close(h);
                }
                open_times[i].push(started.elapsed());
                let h = files::create(r"C:\Data\f0.bin", &OpenParams::default()).expect("open");
                let started = Instant::now();
                for _ in 0..reads {
                    let data = files::read(h, 0, 4096, IoMode::Cached).expect("read");
                    std::hint::black_box(data);
                }
                read_times[i].push(started.elapsed());
                files::close(h);
            });
            end_off_root(machine, provider);
        }
    }
    // Rounds are paired (without, then with the driver, one after the other), and the
    // ratio is the median of the pairs' ratios: the host's noise between rounds (they
    // vary by up to 2x either way) weighs on both sides of a pair alike.
    let paired = |times: &[Vec<Duration>; 2]| {
        let mut ratios: Vec<f64> = times[0]
            .iter()
            .zip(&times[1])
            .map(|(without, with)| with.as_secs_f64() / without.as_secs_f64())
            .collect();
        ratios.sort_by(f64::total_cmp);
        ratios[ratios.len() / 2]
    };
    let open_ratio = paired(&open_times);
    let read_ratio = paired(&read_times);
    let [without, with] = open_times.map(median);
    report.push(Line {
        name: format!("off-root open+read+close, {opens} times"),
        value: ms(with),
        comparison: format!("without the driver {}", ms(without)),
        ratio: Some(open_ratio),
        raw: 0.0,
        target: Target::AtMost(1.05),
    });
    let [without, with] = read_times.map(median);
    report.push(Line {
        name: format!("off-root 4 KiB reads on an open handle, {reads} times"),
        value: ms(with),
        comparison: format!("without the driver {}", ms(without)),
        ratio: Some(read_ratio),
        raw: 0.0,
        target: Target::AtMost(1.02),
    });
}

/// Readers of one FULL placeholder: one alone against 64 at once (one fetch either way).
fn concurrent_readers(quick: bool, report: &mut Vec<Line>) {
    let size = if quick { 2 * MIB } else { 8 * MIB };
    let readers = 64;
    let rounds = if quick { 2 } else { 5 };
    let mut times = [Vec::new(), Vec::new()];
    for _ in 0..rounds {
        for (i, count) in [1usize, readers].into_iter().enumerate() {
            let rig = Rig::new();
            let connection = connect(&rig, HydrationPolicy::Full, Pattern);
            create(
                &connection,
                &rig,
                &[PlaceholderSpec::file("shared.bin", size).in_sync(true)],
            );
            let app = rig.app;
            let path = format!(r"{ROOT}\shared.bin");
            let started = Instant::now();
            let threads: Vec<_> = (0..count)
                .map(|_| {
                    let path = path.clone();
                    std::thread::spawn(move || read_as(app, &path, size - 4096, 4096))
                })
                .collect();
            for t in threads {
                assert_eq!(t.join().expect("a reader"), pattern(size - 4096..size));
            }
            times[i].push(started.elapsed());
            disconnect(rig, connection);
        }
    }
    let [one, many] = times.map(median);
    report.push(Line {
        name: format!(
            "{readers} concurrent readers of one {} MiB placeholder",
            size / MIB
        ),
        value: ms(many),
        comparison: format!("one reader {}", ms(one)),
        ratio: Some(many.as_secs_f64() / one.as_secs_f64()),
        raw: 0.0,
        target: Target::AtMost(1.5),
    });
}

/// A hydration storm: one reader per placeholder, all at once, every read checked,
/// against the same files read one after the other.
fn storm(quick: bool, report: &mut Vec<Line>) {
    let count = if quick { 100 } else { 1_000 };
    let size = 64 * 1024;
    let mut times = [Duration::ZERO; 2];
    for (i, concurrent) in [false, true].into_iter().enumerate() {
        let rig = Rig::new();
        let connection = connect(&rig, HydrationPolicy::Full, Pattern);
        let specs: Vec<PlaceholderSpec> = (0..count)
            .map(|n| PlaceholderSpec::file(format!("s{n}.bin"), size).in_sync(true))
            .collect();
        create(&connection, &rig, &specs);
        let app = rig.app;
        let started = Instant::now();
        if concurrent {
            let threads: Vec<_> = (0..count)
                .map(|n| {
                    std::thread::spawn(move || {
                        read_as(app, &format!(r"{ROOT}\s{n}.bin"), size - 4096, 4096)
                    })
                })
                .collect();
            for t in threads {
                assert_eq!(t.join().expect("a reader"), pattern(size - 4096..size));
            }
        } else {
            for n in 0..count {
                let data = read_as(app, &format!(r"{ROOT}\s{n}.bin"), size - 4096, 4096);
                assert_eq!(data, pattern(size - 4096..size));
            }
        }
        times[i] = started.elapsed();
        disconnect(rig, connection);
    }
    let [one_by_one, at_once] = times;
    report.push(Line {
        name: format!("hydration storm: {count} readers of {count} placeholders at once"),
        value: ms(at_once),
        comparison: format!("one after another {}", ms(one_by_one)),
        ratio: Some(at_once.as_secs_f64() / one_by_one.as_secs_f64()),
        raw: 0.0,
        target: Target::None,
    });
}

/// Placeholder creation rate, against ordinary files created by an application.
fn creation(quick: bool, report: &mut Vec<Line>) {
    let count = if quick { 2_000 } else { 40_000 };
    let rig = Rig::new();
    let connection = connect(&rig, HydrationPolicy::Full, Pattern);
    let specs: Vec<PlaceholderSpec> = (0..count)
        .map(|n| PlaceholderSpec::file(format!("c{n}.bin"), 4096).in_sync(true))
        .collect();
    let started = Instant::now();
    create(&connection, &rig, &specs);
    let placeholders = started.elapsed();
    let started = Instant::now();
    process::run_as(rig.app, || {
        let dir = files::create(
            r"C:\Plain",
            &OpenParams {
                disposition: FILE_CREATE,
                options: FILE_DIRECTORY_FILE,
                ..OpenParams::default()
            },
        )
        .expect("C:\\Plain");
        files::close(dir);
        for n in 0..count {
            let h = files::create(
                &format!(r"C:\Plain\c{n}.bin"),
                &OpenParams {
                    disposition: FILE_CREATE,
                    ..OpenParams::default()
                },
            )
            .expect("an ordinary file");
            files::close(h);
        }
    });
    let ordinary = started.elapsed();
    disconnect(rig, connection);
    let per = placeholders.as_secs_f64() * 1e6 / count as f64;
    report.push(Line {
        name: format!("create_placeholders, {count} files: µs per placeholder"),
        value: format!("{per:.1} µs"),
        comparison: format!(
            "ordinary create+close {:.1} µs",
            ordinary.as_secs_f64() * 1e6 / count as f64
        ),
        ratio: Some(placeholders.as_secs_f64() / ordinary.as_secs_f64()),
        raw: per,
        target: Target::ValueAtMost(5.0),
    });
}

/// A listing of placeholders by a disguised process against an exposed one.
fn listing(quick: bool, report: &mut Vec<Line>) {
    let count = if quick { 2_000 } else { 10_000 };
    let rounds = if quick { 5 } else { 15 };
    let rig = Rig::new();
    let connection = connect(&rig, HydrationPolicy::Full, Pattern);
    let specs: Vec<PlaceholderSpec> = (0..count)
        .map(|n| PlaceholderSpec::file(format!("l{n:05}.bin"), 4096).in_sync(true))
        .collect();
    create(&connection, &rig, &specs);
    let disguised = rig.machine.spawn_process(
        "\\Device\\HarddiskVolume1\\Apps\\old.exe",
        PHCM_DISGUISE_PLACEHOLDER,
        false,
    );
    let exposed = rig.machine.spawn_process(
        "\\Device\\HarddiskVolume1\\Apps\\new.exe",
        PHCM_EXPOSE_PLACEHOLDERS,
        false,
    );
    let mut times = [Vec::new(), Vec::new()];
    for _ in 0..rounds {
        for (i, pid) in [exposed, disguised].into_iter().enumerate() {
            let (n, t) = list(pid, ROOT);
            assert_eq!(n, count + 2);
            times[i].push(t);
        }
    }
    disconnect(rig, connection);
    let [exposed, disguised] = times.map(median);
    report.push(Line {
        name: format!("disguised listing of {count} placeholders"),
        value: ms(disguised),
        comparison: format!("exposed listing {}", ms(exposed)),
        ratio: Some(disguised.as_secs_f64() / exposed.as_secs_f64()),
        raw: 0.0,
        target: Target::AtMost(1.05),
    });
}

/// Driver pool per open placeholder stream: many placeholders opened and kept open.
fn memory(quick: bool, report: &mut Vec<Line>) {
    let count = if quick { 200 } else { 2_000 };
    let rig = Rig::new();
    let connection = connect(&rig, HydrationPolicy::Full, Pattern);
    let specs: Vec<PlaceholderSpec> = (0..count)
        .map(|n| PlaceholderSpec::file(format!("m{n}.bin"), 4096).in_sync(true))
        .collect();
    create(&connection, &rig, &specs);
    let before = rig.machine.pool_live();
    let handles = process::run_as(rig.app, || {
        (0..count)
            .map(|n| {
                files::create(&format!(r"{ROOT}\m{n}.bin"), &OpenParams::default()).expect("open")
            })
            .collect::<Vec<_>>()
    });
    let per = (rig.machine.pool_live() - before) as f64 / count as f64;
    process::run_as(rig.app, || {
        for h in handles {
            files::close(h);
        }
    });
    disconnect(rig, connection);
    report.push(Line {
        name: format!("driver pool per open placeholder stream ({count} open)"),
        value: format!("{per:.0} bytes"),
        comparison: "-".to_string(),
        ratio: None,
        raw: per,
        target: Target::None,
    });
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    // Names given (`off-root storm`): only those figures.
    let only: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();
    println!(
        "cloudflt figures ({}): real driver and library on the kernel model, this machine",
        if quick {
            "--quick: smoke sizes"
        } else {
            "full sizes"
        }
    );
    let mut report = Vec::new();
    let figures: [(&str, Figure); 8] = [
        ("hydration", hydration),
        ("first-page", first_page),
        ("off-root", off_root),
        ("readers", concurrent_readers),
        ("storm", storm),
        ("creation", creation),
        ("listing", listing),
        ("memory", memory),
    ];
    for (name, figure) in figures {
        if !only.is_empty() && !only.iter().any(|o| o.as_str() == name) {
            continue;
        }
        let started = Instant::now();
        let at = report.len();
        figure(quick, &mut report);
        for line in &report[at..] {
            line.print();
        }
        eprintln!("({name}: {:.1}s)", started.elapsed().as_secs_f64());
    }
    let met = report.iter().filter(|l| l.met() == Some(true)).count();
    let missed = report.iter().filter(|l| l.met() == Some(false)).count();
    println!("{met} targets met, {missed} missed");
}
