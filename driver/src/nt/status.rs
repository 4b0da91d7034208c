//! The one place where errors become NTSTATUS values: the [`NtStatus`] type, and the table
//! from engine refusals, connection errors, provider answers and failed kernel calls to the
//! status an application or a provider sees.

use cloudflt_proto::ConnectError;
use windows_sys::Win32::Foundation::{
    NTSTATUS, STATUS_CLOUD_FILE_IN_USE, STATUS_CLOUD_FILE_INSUFFICIENT_RESOURCES,
    STATUS_CLOUD_FILE_PROVIDER_TERMINATED, STATUS_CLOUD_FILE_REQUEST_TIMEOUT,
    STATUS_CLOUD_FILE_UNSUCCESSFUL, STATUS_INFO_LENGTH_MISMATCH, STATUS_INSUFFICIENT_RESOURCES,
    STATUS_INVALID_BUFFER_SIZE, STATUS_INVALID_PARAMETER, STATUS_NOT_SUPPORTED,
    STATUS_PORT_DISCONNECTED, STATUS_REVISION_MISMATCH, STATUS_SUCCESS, STATUS_TIMEOUT,
};

use crate::engine::stream::Refused;

/// An NTSTATUS as it crosses the boundary between the driver and the kernel, FltMgr or a
/// provider. Severity is read only through [`NtStatus::is_success`] /
/// [`NtStatus::to_result`], so no caller compares raw values with `< 0` by hand.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(transparent)]
pub struct NtStatus(NTSTATUS);

impl NtStatus {
    pub const SUCCESS: Self = Self(STATUS_SUCCESS);

    /// The status a kernel routine returned.
    pub const fn from_raw(raw: NTSTATUS) -> Self {
        Self(raw)
    }

    /// The value handed back to the kernel.
    pub const fn raw(self) -> NTSTATUS {
        self.0
    }

    /// NT_SUCCESS: success and informational severities (STATUS_TIMEOUT is one).
    pub const fn is_success(self) -> bool {
        nt_success(self.0)
    }

    /// `Ok` for a success status, the status itself otherwise.
    pub const fn to_result(self) -> Result<(), Self> {
        if self.is_success() { Ok(()) } else { Err(self) }
    }

    /// A failure status a provider sent (FETCH_FAILED), as the application will see it:
    /// one of the STATUS_CLOUD_FILE_* family is kept; anything else, success codes
    /// included (a failure that claims success is still a failure), becomes
    /// STATUS_CLOUD_FILE_UNSUCCESSFUL.
    pub const fn from_provider(raw: NTSTATUS) -> Self {
        if (raw as u32) & 0xFFFF_FF00 == 0xC000_CF00 {
            Self(raw)
        } else {
            Self(STATUS_CLOUD_FILE_UNSUCCESSFUL)
        }
    }

    /// What a FltSendMessage that did not deliver a request means for the operation
    /// waiting on it.
    pub const fn from_send_failure(raw: NTSTATUS) -> Self {
        Self(match raw {
            STATUS_TIMEOUT => STATUS_CLOUD_FILE_REQUEST_TIMEOUT,
            STATUS_PORT_DISCONNECTED => STATUS_CLOUD_FILE_PROVIDER_TERMINATED,
            STATUS_INSUFFICIENT_RESOURCES => STATUS_CLOUD_FILE_INSUFFICIENT_RESOURCES,
            _ => STATUS_CLOUD_FILE_UNSUCCESSFUL,
        })
    }

    /// What a failed open of a placeholder's writer means for the operation waiting on it:
    /// always a cloud-file status, whatever the open said.
    pub const fn from_writer_failure(raw: NTSTATUS) -> Self {
        match raw {
            STATUS_INSUFFICIENT_RESOURCES => Self(STATUS_CLOUD_FILE_INSUFFICIENT_RESOURCES),
            other => Self::from_provider(other),
        }
    }
}

impl From<Refused> for NtStatus {
    /// A stream busy with a dehydration or with transfers is in use.
    fn from(_: Refused) -> Self {
        Self(STATUS_CLOUD_FILE_IN_USE)
    }
}

impl From<ConnectError> for NtStatus {
    fn from(error: ConnectError) -> Self {
        Self(connect_refusal(error))
    }
}

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
    fn provider_statuses_stay_in_the_cloud_family() {
        let timeout = STATUS_CLOUD_FILE_REQUEST_TIMEOUT;
        assert_eq!(NtStatus::from_provider(timeout).raw(), timeout);
        for outside in [
            0,
            0x0000_0102,
            0xC000_0022_u32 as i32,
            0xC000_CE01_u32 as i32,
        ] {
            assert_eq!(
                NtStatus::from_provider(outside).raw(),
                STATUS_CLOUD_FILE_UNSUCCESSFUL,
                "{outside:#x}"
            );
        }
        assert_eq!(
            NtStatus::from_writer_failure(STATUS_INSUFFICIENT_RESOURCES).raw(),
            STATUS_CLOUD_FILE_INSUFFICIENT_RESOURCES
        );
        assert_eq!(
            NtStatus::from_send_failure(STATUS_TIMEOUT).raw(),
            STATUS_CLOUD_FILE_REQUEST_TIMEOUT,
            "a send timeout is a success code that must still fail the read"
        );
        assert_eq!(
            NtStatus::from(Refused::Zeroing).raw(),
            STATUS_CLOUD_FILE_IN_USE
        );
        assert_eq!(NtStatus::from_raw(STATUS_TIMEOUT).to_result(), Ok(()));
        assert!(NtStatus::from_raw(timeout).to_result().is_err());
    }

    #[test]
    fn success_and_warning_classes() {
        assert!(nt_success(0));
        assert!(nt_success(0x0000_0102)); // STATUS_TIMEOUT is a success code
        assert!(!nt_success(0x8000_0005_u32 as i32)); // STATUS_BUFFER_OVERFLOW is a warning
        assert!(!nt_success(0xC000_CF01_u32 as i32));
    }
}
