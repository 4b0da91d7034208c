//! `cargo xtask`: build, sign, check and test cloudflt with plain cargo on any host.
//!
//! - `package`: cross-builds `cloudflt.sys` for x64 and arm64 with rust-lld, signs it with
//!   this checkout's test certificate and lays out `target/package/{x64,arm64}/`.
//! - `check-image FILE...`: the PE checks a loadable, test-signed driver must pass.
//! - `emulate FILE`: runs the x64 image under speakeasy (CPU emulation).
//! - `fuzz [TARGET...]`: runs the cargo-fuzz targets under `fuzz/` for a bounded time.
//! - `test`: everything, in the order CI needs it.
//!
//! Tools this needs beyond cargo (osslsigncode, openssl, a Python venv with speakeasy, a
//! nightly toolchain with cargo-fuzz) are installed on first use: Debian packages through
//! apt, Python packages into a venv under `target/`, nightly through rustup, cargo-fuzz
//! through `cargo install`.

mod coverage;
mod fuzz;
mod image;
mod package;
mod sign;
mod tools;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "cloudflt build, package and test tasks")]
struct Cli {
    #[command(subcommand)]
    command: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Build and test-sign cloudflt.sys for x64 and arm64 into target/package/.
    Package,
    /// Check built images as a kernel loader and a reviewer would.
    CheckImage {
        /// Images to check; the architecture is read from each.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Check that every import of built images has a definition in the kernel model.
    Coverage {
        /// Images; default both packaged images.
        files: Vec<PathBuf>,
    },
    /// Run an x64 image under CPU emulation (speakeasy).
    Emulate {
        /// The image; default target/package/x64/cloudflt.sys.
        file: Option<PathBuf>,
    },
    /// Run scenario files (shared/scenario-format.md) against the kernel model with the
    /// real driver; with none, every file under tests/scenarios/.
    Scenario {
        /// Run each file twice, without and with the driver, and fail every step whose
        /// observable result differs.
        #[arg(long)]
        differential: bool,
        /// Scenario files.
        files: Vec<PathBuf>,
    },
    /// Run the cargo-fuzz targets (fuzz/), each for a bounded time; installs nightly and
    /// cargo-fuzz if missing.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = fuzz::DEFAULT_SECONDS)]
        seconds: u64,
        /// Targets to run; default all.
        targets: Vec<String>,
    },
    /// Run every check: format, clippy, unit and model tests, scenarios, package, image
    /// checks, emulation, fuzzing, and a smoke run of the benchmarks.
    Test,
    /// Measure every figure of the performance table (release build, kernel model, real
    /// driver and library): one line per figure with its comparison and target, then
    /// `N targets met, M missed`.
    Bench {
        /// Smoke sizes (what CI runs): the figures are not the table's.
        #[arg(long)]
        quick: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Task::Package => package::package(&root()).map(|_| ()),
        Task::CheckImage { files } => check_images(&root(), &files),
        Task::Emulate { file } => {
            let root = root();
            let file = file.unwrap_or_else(|| package::packaged_image(&root, package::Arch::X64));
            emulate(&root, &file)
        }
        Task::Coverage { files } => {
            let root = root();
            let files = if files.is_empty() {
                package::Arch::ALL
                    .map(|a| package::packaged_image(&root, a))
                    .to_vec()
            } else {
                files
            };
            files.iter().try_for_each(|f| coverage::check(&root, f))
        }
        Task::Scenario {
            differential,
            files,
        } => scenarios(&root(), &files, differential),
        Task::Fuzz { seconds, targets } => fuzz::run(&root(), seconds, &targets),
        Task::Test => test(&root()),
        Task::Bench { quick } => bench(&root(), quick),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root (xtask lives one level below it).
fn root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(Path::to_path_buf).unwrap_or(manifest)
}

/// Runs a command in the workspace, failing with its command line if it fails.
pub(crate) fn run(root: &Path, cmd: &mut Command) -> Result<()> {
    let line = format!("{cmd:?}");
    let status = cmd
        .current_dir(root)
        .status()
        .with_context(|| format!("could not start {line}"))?;
    if !status.success() {
        bail!("{line} failed ({status})");
    }
    Ok(())
}

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
}

fn check_images(root: &Path, files: &[PathBuf]) -> Result<()> {
    let root_cert = sign::TestCertificate::ensure(root)?;
    let mut failed = 0;
    for file in files {
        let report = image::check(file, &root_cert)?;
        report.print(file);
        failed += report.failures();
    }
    if failed > 0 {
        bail!("{failed} image check(s) failed");
    }
    Ok(())
}

fn emulate(root: &Path, file: &Path) -> Result<()> {
    let python = tools::emulation_python(root)?;
    let harness = root.join("tests/emulation/harness.py");
    run(root, Command::new(python).arg(harness).arg(file))
}

/// The figures bench (tests/benches/figures.rs), built in release.
fn bench(root: &Path, quick: bool) -> Result<()> {
    let flag: &[&str] = if quick { &["--quick"] } else { &[] };
    run(
        root,
        cargo()
            .args([
                "bench",
                "--quiet",
                "-p",
                "cloudflt-tests",
                "--bench",
                "figures",
                "--",
            ])
            .args(flag),
    )
}

/// The runner is a test target of the model crate (it links the driver); cargo runs it
/// from the crate's directory, so the files are passed as absolute paths.
fn scenarios(root: &Path, files: &[PathBuf], differential: bool) -> Result<()> {
    let cwd = std::env::current_dir()?;
    let files: Vec<PathBuf> = files.iter().map(|f| cwd.join(f)).collect();
    let flag: &[&str] = if differential {
        &["--differential"]
    } else {
        &[]
    };
    run(
        root,
        cargo()
            .args([
                "test",
                "--quiet",
                "-p",
                "cloudflt-tests",
                "--test",
                "scenarios",
                "--",
            ])
            .args(flag)
            .args(&files),
    )
    .map_err(|_| anyhow::anyhow!("a scenario step failed"))
}

fn test(root: &Path) -> Result<()> {
    let started = Instant::now();
    let group = |name: &str, f: &mut dyn FnMut() -> Result<()>| -> Result<()> {
        println!("\n== {name}");
        let t = Instant::now();
        f().with_context(|| format!("group `{name}`"))?;
        println!("== {name}: ok ({:.1}s)", t.elapsed().as_secs_f64());
        Ok(())
    };
    group("rustfmt", &mut || {
        run(root, cargo().args(["fmt", "--all", "--check"]))
    })?;
    group("clippy (host)", &mut || {
        run(
            root,
            cargo().args([
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ]),
        )
    })?;
    // rustup does not add a toolchain file's targets to a toolchain already installed.
    package::ensure_targets(root)?;
    for arch in package::Arch::ALL {
        group(&format!("clippy ({})", arch.triple()), &mut || {
            run(
                root,
                cargo().args([
                    "clippy",
                    "-p",
                    "cloudflt-driver",
                    "-p",
                    "cloudflt-proto",
                    "-p",
                    "cloudflt",
                    "--target",
                    arch.triple(),
                    "--",
                    "-D",
                    "warnings",
                ]),
            )
        })?;
    }
    group("unit and model tests", &mut || {
        run(root, cargo().args(["test", "--workspace"]))
    })?;
    group("scenarios", &mut || {
        scenarios(root, &[], false)?;
        // Ordinary files must look the same with the driver loaded as without it.
        scenarios(
            root,
            &[
                root.join("tests/scenarios/ordinary_files.toml"),
                root.join("tests/scenarios/ordinary_writes.toml"),
            ],
            true,
        )
    })?;
    let mut images = Vec::new();
    group("package", &mut || {
        images = package::package(root)?;
        Ok(())
    })?;
    group("image checks", &mut || {
        check_images(root, &images)?;
        image::tamper_self_test(&images[0], &sign::TestCertificate::ensure(root)?)
    })?;
    group("import coverage", &mut || {
        images
            .iter()
            .try_for_each(|image| coverage::check(root, image))
    })?;
    group("emulation", &mut || {
        emulate(root, &package::packaged_image(root, package::Arch::X64))
    })?;
    group("fuzz", &mut || fuzz::run(root, fuzz::DEFAULT_SECONDS, &[]))?;
    // A smoke run of the benchmarks: they build and every figure is measured (a missed
    // target does not fail it; the figures are `cargo xtask bench`'s).
    group("bench (quick)", &mut || bench(root, true))?;
    println!(
        "\nall groups passed in {:.0}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
