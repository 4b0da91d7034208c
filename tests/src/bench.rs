//! What the benchmarks share (`tests/benches/`): a timed full directory listing and a
//! median.

use std::time::{Duration, Instant};

use windows_sys::Wdk::Storage::FileSystem::FILE_DIRECTORY_FILE;
use windows_sys::Win32::Foundation::STATUS_SUCCESS;

use crate::model::files::{self, OpenParams};
use crate::model::process;

/// FileIdBothDirectoryInformation: what Explorer lists with.
const FILE_ID_BOTH_DIRECTORY_INFORMATION: i32 = 37;

/// One full listing of `dir` as process `pid` (open, FileIdBothDirectoryInformation
/// queries until the end, close): its entries, `.` and `..` included, and how long it
/// took.
pub fn timed_listing(pid: u32, dir: &str) -> (usize, Duration) {
    process::run_as(pid, || {
        let started = Instant::now();
        let handle = files::create(
            dir,
            &OpenParams {
                options: FILE_DIRECTORY_FILE,
                ..OpenParams::default()
            },
        )
        .expect("the directory opens");
        let mut entries = 0;
        let mut restart = true;
        loop {
            let (status, buffer) = files::query_directory(
                handle,
                FILE_ID_BOTH_DIRECTORY_INFORMATION,
                None,
                restart,
                false,
                64 * 1024,
            );
            restart = false;
            if status != STATUS_SUCCESS {
                break;
            }
            // Each entry starts with its NextEntryOffset; 0 on the last.
            let mut at = 0usize;
            while let Some(next) = buffer.get(at..at + 4) {
                entries += 1;
                let next = u32::from_le_bytes([next[0], next[1], next[2], next[3]]) as usize;
                if next == 0 {
                    break;
                }
                at += next;
            }
        }
        files::close(handle);
        (entries, started.elapsed())
    })
}

/// The median of `samples` (not empty).
pub fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}
