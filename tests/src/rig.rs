//! The setting most end-to-end tests start from: a machine with one NTFS volume, the
//! real driver loaded, a provider process and an application process, and an empty
//! sync-root folder `C:\Cloud` made by the provider.

use windows_sys::Wdk::Storage::FileSystem::FILE_DIRECTORY_FILE;
use windows_sys::Win32::Foundation::STATUS_SUCCESS;

use crate::model::files::{self, OpenParams};
use crate::model::process::{self, PHCM_APPLICATION_DEFAULT};
use crate::model::{Machine, VolumeConfig};

/// The sync-root folder every rig makes.
pub const ROOT: &str = "C:\\Cloud";

/// A machine with the driver loaded and the two processes.
pub struct Rig {
    pub machine: Machine,
    /// The provider's process (elevated).
    pub provider: u32,
    /// An application's process (a standard user's).
    pub app: u32,
}

impl Rig {
    /// Boots the machine, loads the driver, starts the processes and makes [`ROOT`].
    pub fn new() -> Self {
        let machine = Machine::boot(&[VolumeConfig::ntfs(1)]);
        assert_eq!(
            machine.load_driver(cloudflt_driver::nt::driver_entry),
            STATUS_SUCCESS
        );
        let provider = machine.spawn_process(
            "\\Device\\HarddiskVolume1\\Sync\\provider.exe",
            PHCM_APPLICATION_DEFAULT,
            true,
        );
        let app = machine.spawn_process(
            "\\Device\\HarddiskVolume1\\Apps\\app.exe",
            PHCM_APPLICATION_DEFAULT,
            false,
        );
        process::run_as(provider, || {
            let root = files::create(
                ROOT,
                &OpenParams {
                    disposition: 2, // FILE_CREATE
                    options: FILE_DIRECTORY_FILE,
                    ..OpenParams::default()
                },
            )
            .expect("the sync root");
            files::close(root);
        });
        Self {
            machine,
            provider,
            app,
        }
    }

    /// Checks the machine is clean, unloads the driver (its leaks fail the test) and
    /// checks again.
    pub fn unload(mut self) {
        self.machine.assert_clean();
        assert_eq!(self.machine.unload_driver(), STATUS_SUCCESS);
        self.machine.assert_clean();
    }
}

impl Default for Rig {
    fn default() -> Self {
        Self::new()
    }
}
