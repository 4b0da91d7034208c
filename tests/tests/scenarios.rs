//! `cargo xtask scenario [--differential] FILE...` runs here: the scenario runner with the
//! real driver. With no files, runs every scenario under `tests/scenarios/`.
//! `--differential` runs each file without and with the driver and fails every step whose
//! observable result differs.

use std::path::PathBuf;
use std::process::ExitCode;

use cloudflt_tests::scenario::{self, Mode, Summary};

fn main() -> ExitCode {
    let mut mode = Mode::Normal;
    let mut files: Vec<PathBuf> = Vec::new();
    for arg in std::env::args_os().skip(1) {
        let text = arg.to_string_lossy();
        if text == "--differential" {
            mode = Mode::Differential;
        } else if !text.starts_with("--") {
            // Other `--` flags are the test harness's (cargo test passes some); ignored.
            files.push(PathBuf::from(arg));
        }
    }
    if files.is_empty() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("scenarios");
        files = std::fs::read_dir(&dir)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "toml"))
                    .collect()
            })
            .unwrap_or_default();
        files.sort();
    }
    let mut total = Summary::default();
    let mut stdout = std::io::stdout();
    for file in &files {
        match scenario::run_file_as(file, cloudflt_driver::nt::driver_entry, mode, &mut stdout) {
            Ok(summary) => total += summary,
            Err(e) => {
                eprintln!("scenario: cannot write the report: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    println!("{} passed, {} failed", total.passed, total.failed);
    if total.failed == 0 && total.passed > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
