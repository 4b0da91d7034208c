//! `cargo xtask package`: the driver package for each architecture.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use crate::sign::TestCertificate;

/// The architectures a package is built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Arch {
    X64,
    Arm64,
}

impl Arch {
    pub(crate) const ALL: [Arch; 2] = [Arch::X64, Arch::Arm64];

    pub(crate) fn triple(self) -> &'static str {
        match self {
            Arch::X64 => "x86_64-pc-windows-msvc",
            Arch::Arm64 => "aarch64-pc-windows-msvc",
        }
    }

    /// The directory name, as INF decorations and Windows call it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Arch::X64 => "x64",
            Arch::Arm64 => "arm64",
        }
    }
}

pub(crate) fn packaged_image(root: &Path, arch: Arch) -> PathBuf {
    root.join("target/package")
        .join(arch.name())
        .join("cloudflt.sys")
}

/// Builds, signs and lays out both packages; returns the signed images.
pub(crate) fn package(root: &Path) -> Result<Vec<PathBuf>> {
    ensure_targets(root)?;
    let cert = TestCertificate::ensure(root)?;
    let mut images = Vec::new();
    for arch in Arch::ALL {
        let unsigned = build(root, arch)?;
        let dir = root.join("target/package").join(arch.name());
        std::fs::create_dir_all(&dir)?;
        let image = dir.join("cloudflt.sys");
        cert.sign(&unsigned, &image)?;
        std::fs::copy(root.join("inf/cloudflt.inf"), dir.join("cloudflt.inf"))
            .context("copying the INF")?;
        std::fs::copy(&cert.root_cer, dir.join("cloudflt-test-root.cer"))?;
        println!(
            "package: {}",
            dir.strip_prefix(root).unwrap_or(&dir).display()
        );
        for entry in std::fs::read_dir(&dir)? {
            let entry = entry?;
            println!(
                "  {:<24} {:>8} bytes",
                entry.file_name().to_string_lossy(),
                entry.metadata()?.len()
            );
        }
        images.push(image);
    }
    Ok(images)
}

/// rust-toolchain.toml names both targets; rustup installs them on first use of the
/// toolchain, but not when the toolchain was already installed without them.
pub(crate) fn ensure_targets(root: &Path) -> Result<()> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .current_dir(root)
        .output();
    let installed = match installed {
        Ok(out) => String::from_utf8_lossy(&out.stdout).into_owned(),
        // No rustup: the toolchain must already have the targets.
        Err(_) => return Ok(()),
    };
    let missing: Vec<&str> = Arch::ALL
        .iter()
        .map(|a| a.triple())
        .filter(|t| !installed.lines().any(|l| l.trim() == *t))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    crate::run(
        root,
        Command::new("rustup")
            .args(["target", "add"])
            .args(&missing),
    )
}

/// `cargo rustc --crate-type cdylib`: the driver crate is an rlib for the host model and
/// becomes the image only here.
fn build(root: &Path, arch: Arch) -> Result<PathBuf> {
    crate::run(
        root,
        crate::cargo().args([
            "rustc",
            "--quiet",
            "-p",
            "cloudflt-driver",
            "--release",
            "--target",
            arch.triple(),
            "--crate-type",
            "cdylib",
        ]),
    )?;
    Ok(root
        .join("target")
        .join(arch.triple())
        .join("release/cloudflt_driver.dll"))
}
