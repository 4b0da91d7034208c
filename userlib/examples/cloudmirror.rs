//! cloudmirror: mirrors a "server" folder into a client sync root.
//!
//! ```text
//! cloudmirror <server folder> <client sync root> [partial|progressive|full|always-full]
//! ```
//!
//! It connects the client folder as a sync root, creates a placeholder for every file and
//! directory under the server folder (size, timestamps, attributes; the identity is the
//! path relative to the server folder), then serves hydration by reading the requested
//! range from the server's copy. Ctrl-C (or Ctrl-Break) disconnects cleanly: the message
//! loop stops, the port closes, and the driver fails whatever was still waiting with
//! STATUS_CLOUD_FILE_PROVIDER_NOT_RUNNING instead of leaving it hanging.
//!
//! Unlike a demo, it does not trust what comes back: a placeholder's identity is read
//! from disk, so one that does not name a file inside the server folder is refused; a
//! server file that vanished, or whose size no longer matches the placeholder (so serving
//! it would mix two versions), fails the fetch with a cloud-file status the application
//! understands; cancelled fetches stop between pieces.
//!
//! It needs Windows with the cloudflt driver loaded. Elsewhere it builds (the library's
//! Windows calls link against the kernel model) but refuses to run.

// Where fltlib.dll is missing, the kernel model defines the symbols so that this builds.
#[cfg(not(windows))]
extern crate cloudflt_tests as _;

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cloudflt::{
    CancelFetch, Error, FetchRequest, FileTimes, HydrationPolicy, PlaceholderSpec, SyncProvider,
    SyncRoot, SyncRootConfig, TRANSFER_ALIGNMENT, Transfer,
};

/// Largest piece read from the server and sent at once: a multiple of 4 KiB, so every
/// piece but the file's last is aligned.
const PIECE: u64 = 1 << 20;

/// Set by the console control handler.
static STOP: AtomicBool = AtomicBool::new(false);

/// Serves fetches from the server folder.
struct Mirror {
    server: PathBuf,
    /// Fetches the driver cancelled, so their work can stop early.
    cancelled: Mutex<HashSet<u64>>,
}

impl Mirror {
    /// The server file an identity names, or `None` if the identity does not name a path
    /// inside the server folder (it comes from disk and may have been tampered with).
    fn server_path(&self, identity: &[u8]) -> Option<PathBuf> {
        let relative = std::str::from_utf8(identity).ok()?;
        let mut path = self.server.clone();
        for component in relative.split('\\') {
            if component.is_empty()
                || component == "."
                || component == ".."
                || component.contains(['/', ':'])
            {
                return None;
            }
            path.push(component);
        }
        Some(path)
    }

    fn is_cancelled(&self, request_id: u64) -> bool {
        self.cancelled
            .lock()
            .map(|set| set.contains(&request_id))
            .unwrap_or(false)
    }

    /// Serves one fetch: the required range widened to 4 KiB boundaries (and clipped to
    /// end of file), read from the server and sent in pieces.
    fn serve(&self, request: &FetchRequest, transfer: &mut Transfer) -> Result<(), Error> {
        let path = self
            .server_path(&request.identity)
            .ok_or(Error::MetadataCorrupt)?;
        let mut file = File::open(&path).map_err(|e| io_error(&path, &e))?;
        let len = file.metadata().map_err(|e| io_error(&path, &e))?.len();
        if len != request.file_size {
            // The server copy changed since the placeholder was made: serving it would
            // splice two versions together.
            eprintln!(
                "{}: server size {len} differs from placeholder size {}",
                request.path, request.file_size
            );
            return Err(Error::NotInSync);
        }
        let start = request.required.start / TRANSFER_ALIGNMENT * TRANSFER_ALIGNMENT;
        let end = request
            .required
            .end
            .div_ceil(TRANSFER_ALIGNMENT)
            .saturating_mul(TRANSFER_ALIGNMENT)
            .min(request.file_size);
        file.seek(SeekFrom::Start(start))
            .map_err(|e| io_error(&path, &e))?;
        let mut buffer = vec![0u8; PIECE as usize];
        let mut at = start;
        while at < end {
            if self.is_cancelled(request.request_id) {
                return Err(Error::RequestCanceled);
            }
            let piece = &mut buffer[..(end - at).min(PIECE) as usize];
            file.read_exact(piece).map_err(|e| {
                if e.kind() == io::ErrorKind::UnexpectedEof {
                    // Shrunk while being read.
                    Error::NotInSync
                } else {
                    io_error(&path, &e)
                }
            })?;
            transfer.write(at, piece)?;
            at += piece.len() as u64;
        }
        Ok(())
    }
}

/// The cloud-file status an I/O error on the server side becomes.
fn io_error(path: &Path, error: &io::Error) -> Error {
    eprintln!("{}: {error}", path.display());
    match error.kind() {
        io::ErrorKind::PermissionDenied => Error::AccessDenied,
        io::ErrorKind::OutOfMemory => Error::InsufficientResources,
        // A vanished file, and everything else: the fetch simply did not work.
        _ => Error::Unsuccessful,
    }
}

impl SyncProvider for Mirror {
    fn fetch_data(&self, request: FetchRequest, mut transfer: Transfer) {
        println!(
            "fetch {}: {} bytes {:?} of {} for {} (pid {})",
            request.request_id,
            request.required.end - request.required.start,
            request.required,
            request.path,
            request.process.image,
            request.process.pid,
        );
        match self.serve(&request, &mut transfer) {
            Ok(()) => {}
            // Already refused by the driver or by the alignment check: nothing to add.
            Err(e @ (Error::Disconnected | Error::RequestCanceled)) => {
                eprintln!("fetch {}: {e}", request.request_id);
            }
            Err(e) => {
                eprintln!("fetch {} failed: {e}", request.request_id);
                if let Err(send) = transfer.fail(e) {
                    eprintln!(
                        "fetch {}: could not report the failure: {send}",
                        request.request_id
                    );
                }
                return;
            }
        }
        if let Ok(mut set) = self.cancelled.lock() {
            set.remove(&request.request_id);
        }
    }

    fn cancel_fetch(&self, cancel: CancelFetch) {
        println!(
            "fetch {} cancelled ({:?})",
            cancel.request_id, cancel.reason
        );
        if let Ok(mut set) = self.cancelled.lock() {
            set.insert(cancel.request_id);
        }
    }
}

/// Every file and directory under `dir`, parents before children, as placeholder specs
/// whose identity is the `\`-separated path relative to the server folder.
fn walk(dir: &Path, relative: &str, specs: &mut Vec<PlaceholderSpec>) -> io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name();
        let Some(name) = name.to_str() else {
            eprintln!(
                "skipping {}: name is not valid Unicode",
                entry.path().display()
            );
            continue;
        };
        let path = if relative.is_empty() {
            name.to_owned()
        } else {
            format!("{relative}\\{name}")
        };
        if path.len() > 4096 {
            eprintln!("skipping {path}: identity would exceed 4 KiB");
            continue;
        }
        let meta = entry.metadata()?;
        let times = FileTimes::from_metadata(&meta);
        let identity = path.clone().into_bytes();
        if meta.is_dir() {
            specs.push(
                PlaceholderSpec::directory(path.clone())
                    .identity(identity)
                    .times(times)
                    .in_sync(true),
            );
            walk(&entry.path(), &path, specs)?;
        } else if meta.is_file() {
            specs.push(
                PlaceholderSpec::file(path, meta.len())
                    .identity(identity)
                    .times(times)
                    .in_sync(true),
            );
        }
    }
    Ok(())
}

fn hydration(arg: Option<&str>) -> Option<HydrationPolicy> {
    Some(match arg {
        None | Some("progressive") => HydrationPolicy::Progressive,
        Some("partial") => HydrationPolicy::Partial,
        Some("full") => HydrationPolicy::Full,
        Some("always-full") => HydrationPolicy::AlwaysFull,
        Some(_) => return None,
    })
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(server), Some(client), Some(policy)) = (
        args.get(1),
        args.get(2),
        hydration(args.get(3).map(String::as_str)),
    ) else {
        eprintln!(
            "usage: cloudmirror <server folder> <client sync root> \
             [partial|progressive|full|always-full]"
        );
        return ExitCode::from(2);
    };
    if !cfg!(windows) {
        eprintln!("cloudmirror needs Windows with the cloudflt driver loaded");
        return ExitCode::from(2);
    }
    match run(Path::new(server), Path::new(client), policy) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cloudmirror: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(
    server: &Path,
    client: &Path,
    policy: HydrationPolicy,
) -> Result<(), Box<dyn std::error::Error>> {
    let server = std::fs::canonicalize(server)?;
    std::fs::create_dir_all(client)?;
    let mut specs = Vec::new();
    walk(&server, "", &mut specs)?;

    let config =
        SyncRootConfig::new(client, "cloudmirror", env!("CARGO_PKG_VERSION")).hydration(policy);
    let provider = Mirror {
        server: server.clone(),
        cancelled: Mutex::new(HashSet::new()),
    };
    let connection = SyncRoot::connect(config, provider)?;
    let ctrl_c = install_ctrl_c();
    println!(
        "serving {} as {} ({})",
        server.display(),
        connection.nt_root(),
        if ctrl_c {
            "Ctrl-C to stop"
        } else {
            "kill to stop"
        }
    );

    let mut created = 0;
    for (spec, result) in specs.iter().zip(connection.create_placeholders(&specs)) {
        match result {
            Ok(()) => created += 1,
            // Left from an earlier run, or a local file in the way: keep what is there.
            Err(e) => eprintln!("{}: not created: {e}", spec.path),
        }
    }
    println!("{created} of {} placeholders created", specs.len());
    // The whole tree was created up front: the root is complete, and no listing of it
    // needs to ask (its directories were created complete too).
    connection.set_populated("", true)?;

    while !STOP.load(Ordering::SeqCst) {
        if connection.wait_closed(Duration::from_millis(250)) {
            connection.disconnect()?;
            return Err("the driver closed the connection (unloaded?)".into());
        }
    }
    println!("disconnecting");
    connection.disconnect()?;
    Ok(())
}

/// Ctrl-C and Ctrl-Break set [`STOP`] instead of killing the process, so that the main
/// thread disconnects cleanly. Whether the handler is installed.
#[cfg(windows)]
fn install_ctrl_c() -> bool {
    use windows_sys::Win32::System::Console::{
        CTRL_BREAK_EVENT, CTRL_C_EVENT, SetConsoleCtrlHandler,
    };

    unsafe extern "system" fn handler(ctrl_type: u32) -> windows_sys::core::BOOL {
        if ctrl_type == CTRL_C_EVENT || ctrl_type == CTRL_BREAK_EVENT {
            STOP.store(true, Ordering::SeqCst);
            return 1;
        }
        // Close, logoff, shutdown: the default handling ends the process, and Windows
        // closes the port handle, which the driver sees as a disconnect.
        0
    }

    // SAFETY: `handler` has the PHANDLER_ROUTINE signature and lives as long as the
    // process.
    unsafe { SetConsoleCtrlHandler(Some(handler), 1) != 0 }
}

/// No console control events here.
#[cfg(not(windows))]
fn install_ctrl_c() -> bool {
    false
}
