//! Tools beyond cargo, installed on first use so a fresh machine needs nothing by hand.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The speakeasy release the emulation harness was written against.
const SPEAKEASY: &str = "speakeasy-emulator==1.5.11";
/// unicorn 1.0.2, which speakeasy pins, imports `distutils` and `pkg_resources`; venvs of
/// Python 3.12 and later have neither unless setuptools (which still ships both) is there.
const SETUPTOOLS: &str = "setuptools<81";

/// Whether `program` can be started at all (its exit status for `--version` does not
/// matter: `openssl` has no such flag).
fn found(program: &str) -> bool {
    Command::new(program).arg("--version").output().is_ok()
}

/// Makes sure a Debian-packaged program exists, installing its package with apt if not.
pub(crate) fn ensure_program(program: &str, package: &str) -> Result<()> {
    if found(program) {
        return Ok(());
    }
    apt_install(package)?;
    if !found(program) {
        bail!("{program} is still missing after installing the Debian package {package}");
    }
    Ok(())
}

fn apt_install(package: &str) -> Result<()> {
    eprintln!("xtask: installing {package} with apt-get");
    let root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0"))
        .unwrap_or(false);
    let sudo = |args: &[&str]| {
        let mut c = if root {
            Command::new(args[0])
        } else {
            Command::new("sudo")
        };
        if root {
            c.args(&args[1..]);
        } else {
            c.args(args);
        }
        c.env("DEBIAN_FRONTEND", "noninteractive");
        c
    };
    let install = |c: &mut Command| c.status().map(|s| s.success()).unwrap_or(false);
    if install(&mut sudo(&["apt-get", "install", "-y", "-q", package])) {
        return Ok(());
    }
    // A fresh machine may have no package lists yet.
    if install(&mut sudo(&["apt-get", "update", "-q"]))
        && install(&mut sudo(&["apt-get", "install", "-y", "-q", package]))
    {
        return Ok(());
    }
    bail!("could not install the Debian package {package} (apt-get install {package} as root)")
}

/// The venv's Python with speakeasy installed, made under `target/emulation-venv`.
pub(crate) fn emulation_python(root: &Path) -> Result<PathBuf> {
    let venv = root.join("target/emulation-venv");
    let python = venv.join("bin/python");
    let stamp = venv.join(".speakeasy-installed");
    let wanted = format!("{SPEAKEASY} {SETUPTOOLS}");
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == wanted) && python.exists() {
        return Ok(python);
    }
    let python3 = if found("python3") {
        "python3"
    } else {
        "python"
    };
    let made = Command::new(python3)
        .args(["-m", "venv", "--clear"])
        .arg(&venv)
        .status()
        .is_ok_and(|s| s.success());
    if !made {
        // Debian's Python splits venv into its own package.
        apt_install("python3-venv")?;
        crate::run(
            root,
            Command::new(python3)
                .args(["-m", "venv", "--clear"])
                .arg(&venv),
        )?;
    }
    crate::run(
        root,
        Command::new(&python).args(["-m", "pip", "install", "--quiet", SPEAKEASY]),
    )
    .context("installing speakeasy from PyPI")?;
    std::fs::write(&stamp, wanted)?;
    Ok(python)
}
