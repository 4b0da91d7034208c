//! Criterion benches of the engine's pure code (issue 16): the directory-listing rewrite
//! in bytes per second, range-set operations, and the request table's decisions.
//! `cargo bench -p cloudflt-driver --bench engine`.

// The driver's rlib also holds its kernel-facing code: the kernel model defines the
// symbols it imports, as for the unit tests.
extern crate cloudflt_tests as _;

use std::hint::black_box;

use cloudflt_driver::engine::ranges::{Range, RangeSet};
use cloudflt_driver::engine::requests::{self, Request, Verdict};
use cloudflt_driver::engine::rewrite::{self, DirectoryClass, HiddenAttributes};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// cloudflt's reparse tag.
const TAG: u32 = cloudflt_proto::reparse::TAG;
const REPARSE_POINT: u32 = 0x400;
const ARCHIVE: u32 = 0x20;

/// FILE_ID_BOTH_DIR_INFORMATION (class 37, what Explorer lists with): NextEntryOffset 0,
/// FileAttributes 56, FileNameLength 60, EaSize 64 (the tag of a reparse point),
/// ShortNameLength 68, ShortName 70..94, FileId 96, FileName 104; each entry 8-byte
/// aligned.
fn id_both_listing(entries: usize, placeholders_every: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for i in 0..entries {
        let name: Vec<u16> = format!("file{i:06}.bin").encode_utf16().collect();
        let mut entry = vec![0u8; 104 + name.len() * 2];
        let placeholder = i % placeholders_every == 0;
        let attributes = if placeholder {
            ARCHIVE | REPARSE_POINT
        } else {
            ARCHIVE
        };
        entry[56..60].copy_from_slice(&attributes.to_le_bytes());
        entry[60..64].copy_from_slice(&((name.len() * 2) as u32).to_le_bytes());
        if placeholder {
            entry[64..68].copy_from_slice(&TAG.to_le_bytes());
        }
        for (k, unit) in name.iter().enumerate() {
            entry[104 + 2 * k..106 + 2 * k].copy_from_slice(&unit.to_le_bytes());
        }
        let padded = entry.len().div_ceil(8) * 8;
        entry.resize(padded, 0);
        if i + 1 < entries {
            entry[0..4].copy_from_slice(&(padded as u32).to_le_bytes());
        }
        out.extend_from_slice(&entry);
    }
    out
}

fn listing_rewrite(c: &mut Criterion) {
    let mut group = c.benchmark_group("directory rewrite");
    for (entries, every) in [(1_000, 1), (1_000, 10)] {
        let listing = id_both_listing(entries, every);
        // The listing is what NTFS would return: the rewrite must accept it.
        let mut check = listing.clone();
        let len = check.len();
        let done = rewrite::disguise_directory(
            DirectoryClass::IdBothDirectory,
            &mut check,
            len,
            HiddenAttributes::DEFAULT,
        )
        .expect("a well-formed listing");
        assert_eq!(done.disguised, entries.div_ceil(every));
        group.throughput(Throughput::Bytes(listing.len() as u64));
        group.bench_function(
            format!("{entries} entries, one placeholder in {every}"),
            |b| {
                let mut buffer = listing.clone();
                b.iter(|| {
                    buffer.copy_from_slice(&listing);
                    let len = buffer.len();
                    black_box(rewrite::disguise_directory(
                        DirectoryClass::IdBothDirectory,
                        black_box(&mut buffer),
                        len,
                        HiddenAttributes::DEFAULT,
                    ))
                })
            },
        );
    }
    group.finish();
}

/// The ranges a progressive hydration of 64 MiB records: 4 KiB units arriving out of
/// order, 16 apart, then the gaps filled.
fn range_sets(c: &mut Criterion) {
    const UNIT: u64 = 4096;
    let order: Vec<u64> = (0..16)
        .flat_map(|phase| (0..1024u64).map(move |i| i * 16 + phase))
        .collect();
    let mut group = c.benchmark_group("range set");
    group.throughput(Throughput::Elements(order.len() as u64));
    group.bench_function("insert 16,384 units out of order", |b| {
        b.iter(|| {
            let mut set: RangeSet<764> = RangeSet::new();
            for &u in &order {
                set.insert(Range {
                    start: u * UNIT,
                    end: (u + 1) * UNIT,
                });
            }
            black_box(set.len())
        })
    });
    let mut half: RangeSet<764> = RangeSet::new();
    for u in (0..16_384u64).step_by(32) {
        half.insert(Range {
            start: u * UNIT,
            end: (u + 16) * UNIT,
        });
    }
    group.throughput(Throughput::Elements(1));
    group.bench_function("contains / first_gap on 512 ranges", |b| {
        let mut at = 0u64;
        b.iter(|| {
            at = (at + 7919) % 16_384;
            let r = Range {
                start: at * UNIT,
                end: (at + 8) * UNIT,
            };
            black_box((half.contains(r), half.first_gap(r)))
        })
    });
    group.finish();
}

/// A waiter's verdict with many requests in flight (a hydration storm on one file).
fn request_table(c: &mut Criterion) {
    let in_flight: Vec<Request> = (0..256u64)
        .map(|i| Request {
            id: i + 1,
            stream: (i % 8) as usize,
            range: Range {
                start: i * 65_536,
                end: (i + 1) * 65_536,
            },
            owner: 1,
            deadline: i64::MAX,
        })
        .collect();
    let present: RangeSet<764> = RangeSet::new();
    let mut group = c.benchmark_group("request table");
    group.bench_function("verdict among 256 requests in flight", |b| {
        let mut at = 0u64;
        b.iter(|| {
            at = (at + 131) % 256;
            let need = Range {
                start: at * 65_536,
                end: at * 65_536 + 4096,
            };
            let verdict: Verdict<i32> = requests::verdict(
                need,
                &present,
                None,
                None,
                in_flight.iter(),
                (at % 8) as usize,
            );
            black_box(verdict)
        })
    });
    group.bench_function("unrequested among 256 requests in flight", |b| {
        b.iter(|| {
            black_box(requests::unrequested(
                in_flight.iter(),
                3,
                Range {
                    start: 0,
                    end: 256 * 65_536,
                },
            ))
        })
    });
    group.finish();
}

criterion_group!(benches, listing_rewrite, range_sets, request_table);
criterion_main!(benches);
