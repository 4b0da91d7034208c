//! The PE checks a test-signed minifilter image must pass to load, read from the file with
//! the `object` crate rather than trusted from the build.

use std::path::Path;

use anyhow::{Context, Result};
use object::pe::{
    IMAGE_DIRECTORY_ENTRY_BASERELOC, IMAGE_DIRECTORY_ENTRY_SECURITY, IMAGE_DIRECTORY_ENTRY_TLS,
    IMAGE_DLLCHARACTERISTICS_DYNAMIC_BASE, IMAGE_DLLCHARACTERISTICS_FORCE_INTEGRITY,
    IMAGE_DLLCHARACTERISTICS_NX_COMPAT, IMAGE_FILE_MACHINE_AMD64, IMAGE_FILE_MACHINE_ARM64,
    IMAGE_FILE_RELOCS_STRIPPED, IMAGE_SCN_MEM_EXECUTE, IMAGE_SCN_MEM_WRITE, IMAGE_SUBSYSTEM_NATIVE,
};
use object::read::pe::{ImageNtHeaders, ImageOptionalHeader, PeFile64};
use object::{LittleEndian as LE, Object, ObjectSection};

use crate::sign::TestCertificate;

/// Modules a kernel driver may import from; anything else (ntdll.dll above all) does not
/// resolve in kernel mode and the image fails to load.
const KERNEL_MODULES: [&str; 3] = ["ntoskrnl.exe", "hal.dll", "fltmgr.sys"];

/// FltMgr routines the minifilter's lifetime depends on. (The port's security
/// descriptor is a static the driver builds, not FltBuildDefaultSecurityDescriptor's: it
/// also admits Authenticated Users.)
const REQUIRED_FLTMGR: [&str; 5] = [
    "FltRegisterFilter",
    "FltStartFiltering",
    "FltUnregisterFilter",
    "FltCreateCommunicationPort",
    "FltCloseCommunicationPort",
];

/// The outcome of each check of one image.
pub(crate) struct Report {
    checks: Vec<(&'static str, Result<String, String>)>,
}

impl Report {
    pub(crate) fn failures(&self) -> usize {
        self.checks.iter().filter(|(_, r)| r.is_err()).count()
    }

    pub(crate) fn print(&self, file: &Path) {
        println!("image {}", file.display());
        for (name, result) in &self.checks {
            match result {
                Ok(detail) => println!("  ok   {name}: {detail}"),
                Err(why) => println!("  FAIL {name}: {why}"),
            }
        }
    }
}

pub(crate) fn check(path: &Path, cert: &TestCertificate) -> Result<Report> {
    let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let pe = PeFile64::parse(&*data)
        .with_context(|| format!("{} is not a PE32+ image", path.display()))?;
    let nt = pe.nt_headers();
    let file_header = nt.file_header();
    let optional = nt.optional_header();
    let mut checks: Vec<(&'static str, Result<String, String>)> = Vec::new();
    let mut push = |name, ok: bool, detail: String| {
        checks.push((name, if ok { Ok(detail) } else { Err(detail) }))
    };

    let machine = file_header.machine.get(LE);
    push(
        "machine",
        machine == IMAGE_FILE_MACHINE_AMD64 || machine == IMAGE_FILE_MACHINE_ARM64,
        match machine {
            IMAGE_FILE_MACHINE_AMD64 => "AMD64".into(),
            IMAGE_FILE_MACHINE_ARM64 => "ARM64".into(),
            m => format!("{m:#x} is neither AMD64 nor ARM64"),
        },
    );
    let subsystem = optional.subsystem();
    push(
        "subsystem",
        subsystem == IMAGE_SUBSYSTEM_NATIVE,
        format!("{subsystem} (NATIVE is {IMAGE_SUBSYSTEM_NATIVE})"),
    );

    let exports = pe
        .exports()
        .map_err(|e| anyhow::anyhow!("export table: {e}"))?;
    let names: Vec<String> = exports
        .iter()
        .map(|e| String::from_utf8_lossy(e.name()).into_owned())
        .collect();
    push("exports", names == ["DriverEntry"], format!("{names:?}"));
    let entry = optional.address_of_entry_point();
    let driver_entry = exports
        .iter()
        .find(|e| e.name() == b"DriverEntry")
        .map(|e| e.address() - pe.relative_address_base());
    push(
        "entry point",
        driver_entry == Some(u64::from(entry)),
        format!(
            "AddressOfEntryPoint {entry:#x}, DriverEntry at {}",
            hex(driver_entry)
        ),
    );

    let imports = pe
        .imports()
        .map_err(|e| anyhow::anyhow!("import table: {e}"))?;
    let mut modules: Vec<String> = imports
        .iter()
        .map(|i| String::from_utf8_lossy(i.library()).to_ascii_lowercase())
        .collect();
    modules.sort();
    modules.dedup();
    let foreign: Vec<&String> = modules
        .iter()
        .filter(|m| !KERNEL_MODULES.contains(&m.as_str()))
        .collect();
    push(
        "import modules",
        foreign.is_empty(),
        if foreign.is_empty() {
            modules.join(", ")
        } else {
            format!("not kernel modules: {foreign:?}")
        },
    );
    let fltmgr: Vec<String> = imports
        .iter()
        .filter(|i| i.library().eq_ignore_ascii_case(b"fltmgr.sys"))
        .map(|i| String::from_utf8_lossy(i.name()).into_owned())
        .collect();
    let missing: Vec<&str> = REQUIRED_FLTMGR
        .iter()
        .copied()
        .filter(|r| !fltmgr.iter().any(|f| f == r))
        .collect();
    push(
        "FltMgr imports",
        missing.is_empty(),
        if missing.is_empty() {
            format!("{} routines", fltmgr.len())
        } else {
            format!("missing {missing:?}")
        },
    );

    let directory_size = |id| pe.data_directory(id).map_or(0, |d| d.size.get(LE));
    push(
        "no TLS",
        directory_size(IMAGE_DIRECTORY_ENTRY_TLS) == 0,
        "no TLS directory (the kernel does not run TLS callbacks)".into(),
    );
    let relocs = directory_size(IMAGE_DIRECTORY_ENTRY_BASERELOC);
    let stripped = file_header.characteristics.get(LE) & IMAGE_FILE_RELOCS_STRIPPED != 0;
    push(
        "relocations",
        relocs > 0 && !stripped,
        format!("{relocs} bytes of base relocations, RELOCS_STRIPPED {stripped}"),
    );

    let dll = optional.dll_characteristics();
    let wanted = [
        (IMAGE_DLLCHARACTERISTICS_NX_COMPAT, "NX_COMPAT"),
        (IMAGE_DLLCHARACTERISTICS_DYNAMIC_BASE, "DYNAMIC_BASE"),
        (IMAGE_DLLCHARACTERISTICS_FORCE_INTEGRITY, "FORCE_INTEGRITY"),
    ];
    let lacking: Vec<&str> = wanted
        .iter()
        .filter(|(bit, _)| dll & bit == 0)
        .map(|(_, n)| *n)
        .collect();
    push(
        "DllCharacteristics",
        lacking.is_empty(),
        if lacking.is_empty() {
            format!("{dll:#06x}: NX_COMPAT, DYNAMIC_BASE, FORCE_INTEGRITY")
        } else {
            format!("{dll:#06x} lacks {lacking:?}")
        },
    );

    let stored = optional.check_sum();
    let computed = pe_checksum(&data, pe.dos_header().nt_headers_offset() as usize);
    push(
        "checksum",
        stored != 0 && Some(stored) == computed,
        format!("stored {stored:#x}, computed {}", hex(computed)),
    );

    let wx: Vec<String> = pe
        .sections()
        .filter(|s| {
            let flags = match s.flags() {
                object::SectionFlags::Coff { characteristics } => characteristics,
                _ => 0,
            };
            flags & IMAGE_SCN_MEM_WRITE != 0 && flags & IMAGE_SCN_MEM_EXECUTE != 0
        })
        .map(|s| s.name().unwrap_or("?").to_string())
        .collect();
    push(
        "no W+X section",
        wx.is_empty(),
        if wx.is_empty() {
            format!("{} sections", pe.sections().count())
        } else {
            format!("writable and executable: {wx:?}")
        },
    );

    let guards = seh_guards(&pe, machine);
    push(
        "SEH guards",
        guards.as_ref().is_ok_and(|g| g.len() >= 2),
        match &guards {
            Ok(g) => format!(
                "{} function(s) with a C scope table {{begin, end, 1, target}} inside them: {}",
                g.len(),
                g.join(", ")
            ),
            Err(why) => why.clone(),
        },
    );

    let security = directory_size(IMAGE_DIRECTORY_ENTRY_SECURITY);
    let signature = if security == 0 {
        Err("no certificate table: the image is unsigned".to_string())
    } else {
        cert.verify(path)
            .map(|_| "Authenticode (SHA-256) chains to the cloudflt test root".to_string())
            .map_err(|e| e.to_string())
    };
    checks.push(("signature", signature));
    Ok(Report { checks })
}

fn hex<T: std::fmt::LowerHex>(value: Option<T>) -> String {
    value.map_or_else(|| "none".to_string(), |v| format!("{v:#x}"))
}

/// Proves the checks are not vacuous: a copy of a good image with one byte of code
/// changed must fail the checksum and the signature.
pub(crate) fn tamper_self_test(image: &Path, cert: &TestCertificate) -> Result<()> {
    let mut data = std::fs::read(image)?;
    let pe = PeFile64::parse(&*data)?;
    let text = pe
        .sections()
        .find(|s| s.name() == Ok(".text"))
        .context("no .text section")?;
    let (offset, _) = text.file_range().context(".text has no file data")?;
    let at = usize::try_from(offset)? + 16;
    data[at] ^= 0x5a;
    let copy = image.with_extension("tampered.sys");
    std::fs::write(&copy, &data)?;
    let report = check(&copy, cert);
    std::fs::remove_file(&copy)?;
    let report = report?;
    let failed: Vec<&str> = report
        .checks
        .iter()
        .filter(|(_, r)| r.is_err())
        .map(|(n, _)| *n)
        .collect();
    anyhow::ensure!(
        failed == ["checksum", "signature"],
        "a tampered image failed {failed:?}, expected checksum and signature"
    );
    println!("  ok   a copy with one code byte changed fails exactly: {failed:?}");
    foreign_import_self_test(image, cert)
}

/// A copy whose import of ntoskrnl.exe is renamed to ntdll.dll (the classic mistake of a
/// driver that links user-mode Rtl/Zw stubs) must fail the import-module check.
fn foreign_import_self_test(image: &Path, cert: &TestCertificate) -> Result<()> {
    let mut data = std::fs::read(image)?;
    let from = b"ntoskrnl.exe";
    let at = data
        .windows(from.len())
        .position(|w| w.eq_ignore_ascii_case(from))
        .context("the image names no ntoskrnl.exe import")?;
    data[at..at + from.len()].copy_from_slice(b"ntdll.dll\0\0\0");
    let copy = image.with_extension("foreign.sys");
    std::fs::write(&copy, &data)?;
    let report = check(&copy, cert);
    std::fs::remove_file(&copy)?;
    let report = report?;
    let modules = report
        .checks
        .iter()
        .find(|(n, _)| *n == "import modules")
        .map(|(_, r)| r.clone());
    match modules {
        Some(Err(why)) if why.contains("ntdll.dll") => {
            println!("  ok   a copy importing from ntdll.dll fails the import-module check: {why}");
            Ok(())
        }
        other => {
            anyhow::bail!("an image importing ntdll.dll passed the import-module check: {other:?}")
        }
    }
}

/// The PE checksum (as `CheckSumMappedFile` computes it): 16-bit one's-complement style
/// sum of the file with the checksum field taken as zero, plus the file length.
fn pe_checksum(data: &[u8], nt_offset: usize) -> Option<u32> {
    // Signature (4) + IMAGE_FILE_HEADER (20) + offset of CheckSum in the optional header.
    let field = nt_offset + 4 + 20 + 64;
    if field + 4 > data.len() {
        return None;
    }
    let mut sum: u64 = 0;
    for (i, chunk) in data.chunks(2).enumerate() {
        let at = i * 2;
        if at >= field && at < field + 4 {
            continue;
        }
        let word = u16::from_le_bytes([chunk[0], *chunk.get(1).unwrap_or(&0)]);
        sum += u64::from(word);
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum = (sum & 0xffff) + (sum >> 16);
    u32::try_from(sum + data.len() as u64).ok()
}

/// The functions whose unwind data names an exception handler and carries a C scope
/// table as `__C_specific_handler` reads it (`rt::seh`'s guarded copy and call): each
/// described as `start: [begin, end) -> target`, checked to have one record whose try
/// range and jump target lie inside the function and whose filter is 1
/// (EXCEPTION_EXECUTE_HANDLER). Read from `.pdata` / `.xdata`, x64 and arm64 layouts.
fn seh_guards(pe: &PeFile64<'_>, machine: u16) -> Result<Vec<String>, String> {
    let read = |rva: u32, len: usize| -> Option<&[u8]> {
        pe.sections().find_map(|s| {
            let (start, size) = s
                .address()
                .checked_sub(pe.relative_address_base())?
                .try_into()
                .ok()
                .zip(Some(s.size()))?;
            let start: u32 = start;
            let off = rva.checked_sub(start)? as u64;
            if off + len as u64 > size {
                return None;
            }
            s.data().ok()?.get(off as usize..off as usize + len)
        })
    };
    let u32_at = |rva: u32| read(rva, 4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
    let pdata = pe
        .sections()
        .find(|s| s.name() == Ok(".pdata"))
        .ok_or("no .pdata section")?;
    let data = pdata.data().map_err(|e| e.to_string())?;
    let x64 = machine == IMAGE_FILE_MACHINE_AMD64;
    let entry = if x64 { 12 } else { 8 };
    let mut found = Vec::new();
    for e in data.chunks_exact(entry) {
        let word = |i: usize| u32::from_le_bytes([e[i], e[i + 1], e[i + 2], e[i + 3]]);
        let start = word(0);
        // The handler data (scope table) and the function's end, per architecture.
        let (end, table) = if x64 {
            let (end, info) = (word(4), word(8));
            let Some(head) = read(info, 4) else { continue };
            // UNW_FLAG_EHANDLER; codes are two bytes each, padded to an even count.
            if head[0] >> 3 & 1 == 0 {
                continue;
            }
            let codes = (u32::from(head[2]) + 1) & !1;
            (end, info + 4 + codes * 2 + 4)
        } else {
            let info = word(4);
            if info & 3 != 0 {
                continue; // packed unwind data: no handler
            }
            let Some(h) = u32_at(info) else { continue };
            if h >> 20 & 1 == 0 {
                continue; // no exception data
            }
            let length = (h & 0x3_ffff) * 4;
            let (mut epilogues, mut words) = (h >> 22 & 0x1f, h >> 27 & 0x1f);
            let mut at = info + 4;
            if epilogues == 0 && words == 0 {
                let Some(x) = u32_at(at) else { continue };
                epilogues = x & 0xffff;
                words = x >> 16 & 0xff;
                at += 4;
            }
            if h >> 21 & 1 == 0 {
                at += 4 * epilogues;
            }
            (start + length, at + 4 * words + 4)
        };
        let Some(count) = u32_at(table) else { continue };
        let record: Vec<u32> = (0..4).filter_map(|i| u32_at(table + 4 + 4 * i)).collect();
        if let [begin, stop, filter, target] = record[..] {
            let inside = |rva: u32| (start..end).contains(&rva);
            if count != 1
                || filter != 1
                || !inside(begin)
                || !inside(target)
                || begin >= stop
                || stop > end
            {
                return Err(format!(
                    "function at {start:#x}: scope table {count} x {record:x?} does not guard a range inside it"
                ));
            }
            found.push(format!(
                "{start:#x}: [{begin:#x}, {stop:#x}) -> {target:#x}"
            ));
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_ignores_its_own_field_and_adds_the_length() {
        // A fake image: nt headers at 0x40, checksum field at 0x40+88 = 0x98.
        let mut data = vec![0u8; 0x100];
        data[0] = 1;
        data[2] = 2;
        let base = pe_checksum(&data, 0x40).unwrap();
        assert_eq!(base, 3 + 0x100);
        data[0x98..0x9c].copy_from_slice(&0xdead_beef_u32.to_le_bytes());
        assert_eq!(
            pe_checksum(&data, 0x40),
            Some(base),
            "the stored checksum does not count"
        );
        data[0x10] = 0xff;
        assert_ne!(pe_checksum(&data, 0x40), Some(base));
    }

    #[test]
    fn checksum_folds_carries() {
        let data = vec![0xffu8; 0x200];
        let sum = pe_checksum(&data, 0x40).unwrap();
        assert!(sum <= 0xffff + 0x200);
    }
}
