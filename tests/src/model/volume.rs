//! Mounted volumes as FltMgr and the file system describe them at attach time.

use super::ntfs::Ntfs;
use windows_sys::Win32::Storage::InstallableFileSystems::{
    FLT_FILESYSTEM_TYPE, FLT_FSTYPE_FAT, FLT_FSTYPE_NTFS,
};
use windows_sys::Win32::System::Ioctl::{
    FILE_DEVICE_DISK_FILE_SYSTEM, FILE_DEVICE_NETWORK_FILE_SYSTEM,
};

/// What a volume is.
#[derive(Debug, Clone)]
pub struct VolumeConfig {
    /// NT device name, e.g. `\Device\HarddiskVolume1`.
    pub device_name: String,
    /// `VolumeDeviceType` FltMgr reports.
    pub device_type: u32,
    /// `VolumeFilesystemType` FltMgr reports.
    pub filesystem: FLT_FILESYSTEM_TYPE,
    /// File system name in FILE_FS_ATTRIBUTE_INFORMATION.
    pub filesystem_name: String,
    /// `FileSystemAttributes`.
    pub fs_attributes: u32,
    /// Bytes per sector.
    pub sector_size: u16,
}

/// The attributes NTFS reports on Windows 10/11 (fsutil fsinfo volumeinfo): case
/// sensitive search and preserved names, Unicode, persistent ACLs, compression, quotas,
/// sparse files, reparse points, object ids, encryption, named streams, transactions,
/// hard links, extended attributes, open by file id, USN journal, cleanup result info.
pub const NTFS_ATTRIBUTES: u32 = 0x03E7_02FF;

impl VolumeConfig {
    /// A local NTFS volume numbered `n` (`\Device\HarddiskVolumeN`).
    pub fn ntfs(n: u32) -> Self {
        Self {
            device_name: format!("\\Device\\HarddiskVolume{n}"),
            device_type: FILE_DEVICE_DISK_FILE_SYSTEM,
            filesystem: FLT_FSTYPE_NTFS,
            filesystem_name: "NTFS".into(),
            fs_attributes: NTFS_ATTRIBUTES,
            sector_size: 512,
        }
    }

    /// A FAT volume (no reparse points).
    pub fn fat(n: u32) -> Self {
        Self {
            filesystem: FLT_FSTYPE_FAT,
            filesystem_name: "FAT32".into(),
            // case preserved, Unicode on disk
            fs_attributes: 0x0000_0006,
            ..Self::ntfs(n)
        }
    }

    /// An SMB share mounted through the redirector, reporting NTFS from the server.
    pub fn network_ntfs(share: &str) -> Self {
        Self {
            device_name: format!("\\Device\\Mup\\{share}"),
            device_type: FILE_DEVICE_NETWORK_FILE_SYSTEM,
            ..Self::ntfs(0)
        }
    }
}

pub(crate) struct Volume {
    pub(crate) handle: isize,
    pub(crate) config: VolumeConfig,
    /// What is on it: every volume is modelled with NTFS's on-disk behaviour; FAT and
    /// network volumes only matter for attach decisions.
    pub(crate) fs: Ntfs,
}

impl Volume {
    pub(crate) fn new(handle: isize, config: VolumeConfig, now: i64) -> Self {
        let fs = Ntfs::new(u32::from(config.sector_size), now);
        Self { handle, config, fs }
    }
}
