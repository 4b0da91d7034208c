//! `cargo xtask fuzz`: runs every cargo-fuzz target under `fuzz/` for a bounded time.
//!
//! cargo-fuzz needs a nightly toolchain (`-Zsanitizer=address`, SanitizerCoverage), so on
//! a fresh machine this installs what is missing first: the nightly toolchain with the
//! minimal profile, then cargo-fuzz from crates.io. Measured on a 2-core machine: about
//! 40 s to install cargo-fuzz, 45 s to build the targets, then the run time per target.
//!
//! Each target starts from seeds written here (one valid encoding of every format, from
//! proto's own encoders; for `rewrite`, listings of every class holding cloudflt's tag)
//! so the fuzzer begins past the magic numbers, versions and the placeholder checksum
//! instead of spending its budget finding them. The corpus and any crash artifacts are
//! kept under `target/fuzz/`; a crash fails the run and names its file.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};
use cloudflt_proto::msg::{
    BasicInfo, CancelFetch, CancelReason, Convert, ConvertFlags, CreatePlaceholder, Dehydrate,
    FetchData, FetchFailed, GetInfo, Hydrate, PinState, Reply, Revert, SetInSync, SetInSyncFlags,
    SetPin, TransferData, TransferFlags, Update, UpdateFlags,
};
use cloudflt_proto::{
    ByteRange, ConnectionContext, HydrationPolicy, Placeholder, PlaceholderFlags, PopulationPolicy,
    RangeList, Utf16,
};

/// The cargo-fuzz targets (fuzz/Cargo.toml's `[[bin]]`s).
pub(crate) const TARGETS: [&str; 5] = ["placeholder", "message", "connect", "reply", "rewrite"];

/// Default time per target in `cargo xtask test`.
pub(crate) const DEFAULT_SECONDS: u64 = 20;

/// Installs what is missing, builds every target once, then runs each for `seconds`.
pub(crate) fn run(root: &Path, seconds: u64, targets: &[String]) -> Result<()> {
    ensure_nightly()?;
    ensure_cargo_fuzz()?;
    let work = root.join("target/fuzz");
    let fuzz_dir = root.join("fuzz");
    crate::run(
        &fuzz_dir,
        nightly_cargo(&work).args(["fuzz", "build", "-O"]),
    )?;
    let targets: Vec<&str> = if targets.is_empty() {
        TARGETS.to_vec()
    } else {
        targets.iter().map(String::as_str).collect()
    };
    for target in targets {
        if !TARGETS.contains(&target) {
            bail!("no fuzz target `{target}`; targets: {}", TARGETS.join(", "));
        }
        let corpus = work.join("corpus").join(target);
        write_seeds(&corpus, target)?;
        let artifacts = work.join("artifacts").join(target);
        std::fs::create_dir_all(&artifacts)
            .with_context(|| format!("creating {}", artifacts.display()))?;
        println!("fuzzing {target} for {seconds} s");
        crate::run(
            &fuzz_dir,
            nightly_cargo(&work)
                .args(["fuzz", "run", "-O", target])
                .arg(&corpus)
                .arg("--")
                .arg(format!("-max_total_time={seconds}"))
                // The trailing separator makes libFuzzer treat it as a directory.
                .arg(format!("-artifact_prefix={}/", artifacts.display()))
                .arg("-print_final_stats=1"),
        )
        .with_context(|| {
            format!(
                "fuzz target `{target}` failed; reproducer in {}",
                artifacts.display()
            )
        })?;
    }
    Ok(())
}

/// `cargo +nightly` through rustup's proxy. The environment `cargo xtask` runs in names
/// the stable toolchain's cargo and rustc; they must not leak into the nightly build.
fn nightly_cargo(target_dir: &Path) -> Command {
    let mut cmd = Command::new("cargo");
    cmd.arg("+nightly")
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO")
        .env_remove("RUSTC")
        .env_remove("RUSTDOC")
        .env("CARGO_TARGET_DIR", target_dir.join("build"));
    cmd
}

fn succeeds(cmd: &mut Command) -> bool {
    cmd.output().map(|o| o.status.success()).unwrap_or(false)
}

fn ensure_nightly() -> Result<()> {
    if succeeds(Command::new("rustup").args(["run", "nightly", "rustc", "--version"])) {
        return Ok(());
    }
    eprintln!("xtask: installing the nightly toolchain (minimal profile) for cargo-fuzz");
    crate::run(
        Path::new("."),
        Command::new("rustup").args(["toolchain", "install", "nightly", "--profile", "minimal"]),
    )
}

fn ensure_cargo_fuzz() -> Result<()> {
    if succeeds(Command::new("cargo").args(["+nightly", "fuzz", "--version"])) {
        return Ok(());
    }
    eprintln!("xtask: installing cargo-fuzz");
    crate::run(
        Path::new("."),
        Command::new("cargo")
            .args(["install", "cargo-fuzz", "--locked"])
            .env_remove("CARGO_TARGET_DIR"),
    )
}

/// Writes one valid encoding of every format `target` decodes into `corpus`.
fn write_seeds(corpus: &Path, target: &str) -> Result<()> {
    std::fs::create_dir_all(corpus).with_context(|| format!("creating {}", corpus.display()))?;
    for (i, seed) in seeds(target)?.iter().enumerate() {
        let path: PathBuf = corpus.join(format!("seed-{i}"));
        std::fs::write(&path, seed).with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn encoded(
    len: usize,
    encode: impl FnOnce(&mut [u8]) -> Result<usize, cloudflt_proto::EncodeError>,
) -> Result<Vec<u8>> {
    let mut out = vec![0u8; len];
    let n = encode(&mut out).map_err(|e| anyhow::anyhow!("encoding a seed: {e}"))?;
    out.truncate(n);
    Ok(out)
}

fn seeds(target: &str) -> Result<Vec<Vec<u8>>> {
    let path: Vec<u16> = "dir\\file.txt".encode_utf16().collect();
    let path = Utf16::from_units(&path);
    let image: Vec<u16> = "C:\\Windows\\notepad.exe".encode_utf16().collect();
    let ranges = [ByteRange::new(0, 4096), ByteRange::new(8192, 4096)];
    let modified = [ByteRange::new(8192, 10)];
    let placeholder = Placeholder {
        flags: PlaceholderFlags::IN_SYNC | PlaceholderFlags::PINNED,
        file_size: 20_000,
        identity: b"identity",
        ranges: RangeList::from_slice(&ranges),
        modified: RangeList::from_slice(&modified),
        changes: 3,
    };
    Ok(match target {
        "placeholder" => vec![
            encoded(placeholder.encoded_len(), |o| placeholder.encode(o))?,
            encoded(placeholder.reparse_len(), |o| placeholder.encode_reparse(o))?,
        ],
        "connect" => {
            let name: Vec<u16> = "cloudmirror".encode_utf16().collect();
            let root: Vec<u16> = "\\Device\\HarddiskVolume1\\Cloud".encode_utf16().collect();
            let ctx = ConnectionContext {
                provider_name: Utf16::from_units(&name),
                provider_version: Utf16::from_units(&name[..5]),
                sync_root: Utf16::from_units(&root),
                hydration: HydrationPolicy::Progressive,
                population: PopulationPolicy::Full,
                in_sync: cloudflt_proto::InSyncPolicy::NONE,
                timeout_ms: 1000,
                provider_id: [0; 16],
                connect_flags: cloudflt_proto::connect::ConnectFlags::NONE,
                modifiers: cloudflt_proto::registration::HydrationModifiers::NONE,
                management: cloudflt_proto::registration::ManagementPolicy::DEFAULT,
                hard_links: cloudflt_proto::registration::HardLinkPolicy::NONE,
                notifications: cloudflt_proto::msg::NotifySet::NONE,
            };
            vec![encoded(ctx.encoded_len(), |o| ctx.encode(o))?]
        }
        "reply" => {
            let blob = encoded(placeholder.encoded_len(), |o| placeholder.encode(o))?;
            let reply = Reply {
                status: 0,
                request_id: 7,
                payload: &blob,
            };
            vec![encoded(reply.encoded_len(), |o| reply.encode(o))?]
        }
        "message" => {
            let range = ByteRange::new(4096, 8192);
            vec![
                {
                    let m = FetchData {
                        request_id: 1,
                        file_id: 2,
                        file_size: 20_000,
                        required: range,
                        priority: 3,
                        requestor_pid: 4,
                        requestor_image: Utf16::from_units(&image),
                        path,
                        identity: b"identity",
                        flags: cloudflt_proto::msg::RequestFlags::EMPTY,
                        requestor_command_line: Utf16::from_units(&[]),
                        sync_root_identity: &[],
                        root_file_identity: &[],
                    };
                    encoded(m.encoded_len(), |o| m.encode(o))?
                },
                {
                    let m = CancelFetch {
                        request_id: 1,
                        range,
                        reason: CancelReason::IoAborted,
                    };
                    encoded(m.encoded_len(), |o| m.encode(o))?
                },
                {
                    let m = TransferData {
                        request_id: 1,
                        offset: 4096,
                        flags: TransferFlags::LAST,
                        data: &[0x5a; 64],
                    };
                    encoded(m.encoded_len(), |o| m.encode(o))?
                },
                {
                    let m = FetchFailed {
                        request_id: 1,
                        status: 0xC000_CF12_u32 as i32,
                    };
                    encoded(m.encoded_len(), |o| m.encode(o))?
                },
                {
                    let m = CreatePlaceholder {
                        request_id: 5,
                        file_size: 20_000,
                        basic: BasicInfo {
                            attributes: 0x20,
                            ..BasicInfo::default()
                        },
                        flags: PlaceholderFlags::IN_SYNC,
                        path,
                        identity: b"identity",
                    };
                    encoded(m.encoded_len(), |o| m.encode(o))?
                },
                {
                    let m = Convert {
                        request_id: 6,
                        flags: ConvertFlags::IN_SYNC.union(ConvertFlags::DEHYDRATE),
                        path,
                        identity: b"identity",
                    };
                    encoded(m.encoded_len(), |o| m.encode(o))?
                },
                {
                    let m = Revert {
                        request_id: 7,
                        path,
                    };
                    encoded(m.encoded_len(), |o| m.encode(o))?
                },
                {
                    let m = Hydrate {
                        request_id: 8,
                        path,
                        range,
                    };
                    encoded(m.encoded_len(), |o| m.encode(o))?
                },
                {
                    let m = Dehydrate {
                        request_id: 9,
                        path,
                        range: ByteRange::new(0, 0),
                    };
                    encoded(m.encoded_len(), |o| m.encode(o))?
                },
                {
                    let m = SetPin {
                        request_id: 10,
                        path,
                        state: PinState::Pinned,
                    };
                    encoded(m.encoded_len(), |o| m.encode(o))?
                },
                {
                    let m = GetInfo {
                        request_id: 11,
                        path,
                    };
                    encoded(m.encoded_len(), |o| m.encode(o))?
                },
                {
                    let m = Update {
                        request_id: 12,
                        path,
                        flags: UpdateFlags::MARK_IN_SYNC
                            .union(UpdateFlags::DEHYDRATE)
                            .union(UpdateFlags::IF_UNCHANGED)
                            .union(UpdateFlags::SET_IDENTITY),
                        file_size: 20_000,
                        basic: BasicInfo {
                            last_write_time: 1,
                            ..BasicInfo::default()
                        },
                        expected_changes: 3,
                        identity: b"identity",
                        dehydrate: RangeList::from_slice(&ranges),
                    };
                    encoded(m.encoded_len(), |o| m.encode(o))?
                },
                {
                    let m = SetInSync {
                        request_id: 13,
                        path,
                        flags: SetInSyncFlags::IN_SYNC.union(SetInSyncFlags::IF_UNCHANGED),
                        expected_changes: 3,
                    };
                    encoded(m.encoded_len(), |o| m.encode(o))?
                },
            ]
        }
        "rewrite" => rewrite_seeds(),
        other => bail!("no seeds for fuzz target `{other}`"),
    })
}

/// Seeds for `rewrite` (input format: `cloudflt_driver::engine::fuzz::fuzz_rewrite`): a
/// class selector, a flags byte, a 16-bit length, then the body. Flag 0x80 asks the
/// target to build a well-formed listing from 4-byte entry specs (name length, attribute
/// choice, tag choices, name seed), so every class starts from listings that mix
/// cloudflt's tag, a symbolic link's and plain files; 0x20 corrupts one byte of it, 0x40
/// uses the 16-bit length as the returned length; bit 2 is `is_placeholder`.
fn rewrite_seeds() -> Vec<Vec<u8>> {
    // 13 directory classes, 7 query classes, FSCTL_GET_REPARSE_POINT output.
    const SELECTORS: u8 = 21;
    let specs: [[u8; 4]; 5] = [
        // cloudflt's tag in EaSize and ReparsePointTag.
        [7, 1, 0, 0],
        // A symbolic link's tag.
        [4, 0, 0b0101, 1],
        // A plain file.
        [9, 4, 0b1010, 2],
        // Cloudflt's tag with a gap after the entry.
        [3, 0b0100_0010, 0, 3],
        [0, 3, 0, 4],
    ];
    let body: Vec<u8> = specs.iter().flatten().copied().collect();
    let mut seeds = Vec::new();
    for selector in 0..SELECTORS {
        for flags in [0x80u8, 0x84, 0xA0, 0xC0] {
            let mut seed = vec![selector, flags, 0x40, 0x00];
            seed.extend_from_slice(&body);
            seeds.push(seed);
        }
    }
    // A raw FSCTL_GET_REPARSE_POINT output carrying cloudflt's tag and GUID.
    let mut reparse = vec![SELECTORS - 1, 0x00, 0x18, 0x00];
    reparse.extend_from_slice(&cloudflt_proto::reparse::TAG.to_le_bytes());
    reparse.extend_from_slice(&[0; 4]);
    reparse.extend_from_slice(&cloudflt_proto::reparse::GUID);
    seeds.push(reparse);
    seeds
}
