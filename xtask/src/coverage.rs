//! Import coverage: every function the built image imports (other than the CRT routines
//! the compiler emits) must have a definition in the kernel model, or the driver code that
//! calls it has never run anywhere.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use object::read::archive::ArchiveFile;
use object::{Object, ObjectSymbol};

/// Routines `core` needs from a C runtime; the kernel exports them and the model gets
/// them from the host's libc.
const CRT: [&str; 5] = ["memcpy", "memmove", "memset", "memcmp", "__chkstk"];

/// Routines no driver code calls: the exception dispatcher calls `__C_specific_handler`
/// for the frames of the image's SEH guards (`rt::seh`). The model has no exception
/// dispatcher; it defines the guards themselves (`cloudflt_seh_copy`,
/// `cloudflt_seh_call3`) with their contract instead.
const DISPATCHER: [&str; 1] = ["__C_specific_handler"];

/// Checks `image`'s imports against the model library's defined symbols.
pub(crate) fn check(root: &Path, image: &Path) -> Result<()> {
    let rlib = model_rlib(root)?;
    let defined = defined_symbols(&rlib)?;
    let data = std::fs::read(image)?;
    let pe = object::read::pe::PeFile64::parse(&*data)?;
    let imported: BTreeSet<String> = pe
        .imports()?
        .iter()
        .map(|i| String::from_utf8_lossy(i.name()).into_owned())
        .filter(|name| !CRT.contains(&name.as_str()) && !DISPATCHER.contains(&name.as_str()))
        .collect();
    let missing: Vec<&String> = imported
        .iter()
        .filter(|name| !defined.contains(*name))
        .collect();
    if !missing.is_empty() {
        bail!(
            "imported by {} but not defined by the kernel model: {missing:?}",
            image.display()
        );
    }
    println!(
        "  ok   all {} non-CRT imports of {} are defined by the kernel model",
        imported.len(),
        image.display()
    );
    Ok(())
}

/// Builds the model crate and returns its rlib, as cargo reports it.
fn model_rlib(root: &Path) -> Result<PathBuf> {
    let out = crate::cargo()
        .args([
            "build",
            "--quiet",
            "-p",
            "cloudflt-tests",
            "--lib",
            "--message-format=json",
        ])
        .current_dir(root)
        .output()
        .context("building the kernel model")?;
    if !out.status.success() {
        bail!(
            "building the kernel model failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(message) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if message["reason"] == "compiler-artifact" && message["target"]["name"] == "cloudflt_tests"
        {
            let rlib = message["filenames"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|f| f.as_str())
                .find(|f| f.ends_with(".rlib"));
            if let Some(rlib) = rlib {
                return Ok(PathBuf::from(rlib));
            }
        }
    }
    bail!("cargo reported no rlib for the kernel model")
}

/// Global symbols defined in any object file of an rlib.
fn defined_symbols(rlib: &Path) -> Result<BTreeSet<String>> {
    let data = std::fs::read(rlib)?;
    let archive = ArchiveFile::parse(&*data)?;
    let mut defined = BTreeSet::new();
    for member in archive.members() {
        let member = member?;
        let Ok(bytes) = member.data(&*data) else {
            continue;
        };
        // Non-object members (the rlib's metadata) are skipped.
        let Ok(file) = object::File::parse(bytes) else {
            continue;
        };
        for symbol in file.symbols() {
            if symbol.is_global()
                && symbol.is_definition()
                && let Ok(name) = symbol.name()
            {
                defined.insert(name.to_string());
            }
        }
    }
    Ok(defined)
}
