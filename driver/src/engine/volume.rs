//! Which volumes the filter attaches to.
//!
//! Placeholders are NTFS reparse points, so the filter attaches only to local NTFS
//! volumes that support reparse points. Network redirectors are refused even when they
//! report NTFS underneath: their reparse points are resolved on the server.

use windows_sys::Win32::Storage::InstallableFileSystems::{FLT_FILESYSTEM_TYPE, FLT_FSTYPE_NTFS};
use windows_sys::Win32::System::Ioctl::FILE_DEVICE_NETWORK_FILE_SYSTEM;
use windows_sys::Win32::System::SystemServices::FILE_SUPPORTS_REPARSE_POINTS;

/// The facts InstanceSetup knows before it asks the file system anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VolumeKind {
    /// `VolumeDeviceType` as FltMgr passes it (a `FILE_DEVICE_*` value).
    pub device_type: u32,
    /// `VolumeFilesystemType` as FltMgr passes it (a `FLT_FSTYPE_*` value).
    pub filesystem: FLT_FILESYSTEM_TYPE,
}

/// Why the filter does not attach to a volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// A network file system: reparse points live on the server.
    Network,
    /// Not NTFS.
    NotNtfs,
    /// NTFS that reports no reparse point support.
    NoReparsePoints,
}

/// First step of InstanceSetup: decides from the device and file-system type alone.
///
/// `Ok` means the volume may be attached once its attributes pass [`check_attributes`].
pub fn check_kind(kind: VolumeKind) -> Result<(), Refusal> {
    if kind.device_type == FILE_DEVICE_NETWORK_FILE_SYSTEM {
        return Err(Refusal::Network);
    }
    if kind.filesystem != FLT_FSTYPE_NTFS {
        return Err(Refusal::NotNtfs);
    }
    Ok(())
}

/// Second step of InstanceSetup: decides from `FileSystemAttributes`.
pub fn check_attributes(fs_attributes: u32) -> Result<(), Refusal> {
    if fs_attributes & FILE_SUPPORTS_REPARSE_POINTS == 0 {
        return Err(Refusal::NoReparsePoints);
    }
    Ok(())
}

/// Smallest sector size the filter plans non-cached I/O with. FltGetVolumeProperties may
/// report 0 for some virtual disks; NTFS never uses less than 512.
pub const MIN_SECTOR_SIZE: u32 = 512;

/// The sector size to record in the instance context.
pub fn sector_size(reported: u16) -> u32 {
    u32::from(reported).max(MIN_SECTOR_SIZE)
}

#[cfg(test)]
mod tests {
    use super::*;

    use windows_sys::Win32::Storage::InstallableFileSystems::{FLT_FSTYPE_FAT, FLT_FSTYPE_REFS};
    use windows_sys::Win32::System::Ioctl::FILE_DEVICE_DISK_FILE_SYSTEM as DISK_FS;

    #[test]
    fn local_ntfs_passes_the_first_step() {
        let kind = VolumeKind {
            device_type: DISK_FS,
            filesystem: FLT_FSTYPE_NTFS,
        };
        assert_eq!(check_kind(kind), Ok(()));
    }

    #[test]
    fn other_file_systems_are_refused() {
        for fs in [FLT_FSTYPE_FAT, FLT_FSTYPE_REFS, 0] {
            let kind = VolumeKind {
                device_type: DISK_FS,
                filesystem: fs,
            };
            assert_eq!(check_kind(kind), Err(Refusal::NotNtfs));
        }
    }

    #[test]
    fn network_volumes_are_refused_even_if_ntfs() {
        let kind = VolumeKind {
            device_type: FILE_DEVICE_NETWORK_FILE_SYSTEM,
            filesystem: FLT_FSTYPE_NTFS,
        };
        assert_eq!(check_kind(kind), Err(Refusal::Network));
    }

    #[test]
    fn reparse_point_support_is_required() {
        // FILE_CASE_SENSITIVE_SEARCH | FILE_CASE_PRESERVED_NAMES | FILE_UNICODE_ON_DISK
        let plain = 0x1 | 0x2 | 0x4;
        assert_eq!(check_attributes(plain), Err(Refusal::NoReparsePoints));
        assert_eq!(
            check_attributes(plain | FILE_SUPPORTS_REPARSE_POINTS),
            Ok(())
        );
    }

    #[test]
    fn sector_size_has_a_floor() {
        assert_eq!(sector_size(0), 512);
        assert_eq!(sector_size(4096), 4096);
    }
}
