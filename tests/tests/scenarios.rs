//! `cargo xtask scenario FILE...` runs here: the scenario runner with the real driver.
//! With no files, runs every scenario under `tests/scenarios/`.

use std::path::PathBuf;
use std::process::ExitCode;

use cloudflt_tests::scenario::{self, Summary};

fn main() -> ExitCode {
    let mut files: Vec<PathBuf> = std::env::args_os()
        .skip(1)
        .map(PathBuf::from)
        .filter(|p| !p.as_os_str().to_string_lossy().starts_with("--"))
        .collect();
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
        match scenario::run_file(file, cloudflt_driver::nt::driver_entry, &mut stdout) {
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
