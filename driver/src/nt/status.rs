//! The one place where errors become NTSTATUS values.

use cloudflt_proto::ConnectError;
use windows_sys::Win32::Foundation::{
    NTSTATUS, STATUS_INFO_LENGTH_MISMATCH, STATUS_INVALID_BUFFER_SIZE, STATUS_INVALID_PARAMETER,
    STATUS_NOT_SUPPORTED, STATUS_REVISION_MISMATCH,
};

/// STATUS_CLOUD_FILE_NOT_A_CLOUD_FILE (0xC000CF07), missing from windows-sys.
pub const STATUS_CLOUD_FILE_NOT_A_CLOUD_FILE: NTSTATUS = 0xC000_CF07_u32 as NTSTATUS;
/// STATUS_CLOUD_FILE_NOT_A_CLOUD_SYNC_ROOT (0xC000CF1E), missing from windows-sys.
pub const STATUS_CLOUD_FILE_NOT_A_CLOUD_SYNC_ROOT: NTSTATUS = 0xC000_CF1E_u32 as NTSTATUS;

/// `NT_SUCCESS`: success and informational statuses (severity 0 or 1).
pub const fn nt_success(status: NTSTATUS) -> bool {
    status >= 0
}

/// The status ConnectNotify answers a refused connection context with.
///
/// `FilterConnectCommunicationPort` hands it to the provider as `HRESULT_FROM_NT`, so each
/// reason has its own status, except that a context too short and one too long share
/// STATUS_INVALID_BUFFER_SIZE: both are "the size is wrong".
pub fn connect_refusal(error: ConnectError) -> NTSTATUS {
    match error {
        ConnectError::TooShort | ConnectError::TooLarge => STATUS_INVALID_BUFFER_SIZE,
        ConnectError::BadMagic => STATUS_INVALID_PARAMETER,
        ConnectError::UnsupportedVersion(_) => STATUS_REVISION_MISMATCH,
        ConnectError::SizeMismatch => STATUS_INFO_LENGTH_MISMATCH,
        ConnectError::UnknownFlags(_) => STATUS_NOT_SUPPORTED,
        // A reason added to proto later and not yet mapped is still a bad parameter.
        _ => STATUS_INVALID_PARAMETER,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_is_an_error_status_of_its_own() {
        let all = [
            ConnectError::TooShort,
            ConnectError::BadMagic,
            ConnectError::UnsupportedVersion(9),
            ConnectError::SizeMismatch,
            ConnectError::UnknownFlags(2),
        ];
        let statuses = all.map(connect_refusal);
        assert_eq!(
            connect_refusal(ConnectError::TooLarge),
            connect_refusal(ConnectError::TooShort)
        );
        for (i, s) in statuses.iter().enumerate() {
            assert!(!nt_success(*s), "{:?} maps to a success code", all[i]);
            assert_eq!(
                statuses.iter().filter(|t| *t == s).count(),
                1,
                "{s:#x} reused"
            );
        }
    }

    #[test]
    fn success_and_warning_classes() {
        assert!(nt_success(0));
        assert!(nt_success(0x0000_0102)); // STATUS_TIMEOUT is a success code
        assert!(!nt_success(0x8000_0005_u32 as i32)); // STATUS_BUFFER_OVERFLOW is a warning
        assert!(!nt_success(0xC000_CF01_u32 as i32));
    }
}
