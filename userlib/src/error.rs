//! The library's one error type, and the single place where NTSTATUS, Win32 error and
//! HRESULT values from the driver, fltlib and kernel32 become typed errors and back.
//!
//! The driver answers with the documented `STATUS_CLOUD_FILE_*` values, so an [`Error`]
//! variant exists for each of them and [`Error::status`] gives the exact NTSTATUS back
//! (what [`Transfer::fail`](crate::Transfer::fail) sends to the driver, and what an
//! application sees). The same status can reach user mode in three shapes: as the
//! status of a reply, as `HRESULT_FROM_NT(status)`, or — after fltlib ran it through
//! `RtlNtStatusToDosError` — as `HRESULT_FROM_WIN32(ERROR_CLOUD_FILE_*)`;
//! [`Error::from_hresult`] undoes all three.

use cloudflt_proto::{DecodeError, EncodeError};
use windows_sys::Win32::Foundation as F;

/// `FACILITY_NT_BIT`: set in an HRESULT that carries an NTSTATUS unchanged.
const FACILITY_NT_BIT: u32 = 0x1000_0000;
/// The facility/severity prefix of `HRESULT_FROM_WIN32`.
const WIN32_PREFIX: u32 = 0x8007_0000;

macro_rules! cloud_errors {
    (
        $(
            $(#[$doc:meta])*
            $variant:ident = $status:ident / $win32:ident, $message:literal;
        )*
        ---
        $($rest:tt)*
    ) => {
        /// Everything that can go wrong in a provider's dealings with the driver.
        ///
        /// Grouped by cause: the driver's own answers (one variant per documented
        /// `STATUS_CLOUD_FILE_*` value, plus [`Error::Status`] for any other failure
        /// status), failures of the port or of the Windows calls around it, and misuse of
        /// this API that the library refuses before anything is sent.
        ///
        /// ```
        /// use cloudflt::Error;
        ///
        /// let e = Error::from_status(0xC000_CF01_u32 as i32);
        /// assert!(matches!(e, Error::ProviderNotRunning));
        /// assert_eq!(e.status(), 0xC000_CF01_u32 as i32);
        /// ```
        #[derive(Debug, thiserror::Error)]
        #[non_exhaustive]
        pub enum Error {
            $(
                $(#[$doc])*
                #[error($message)]
                $variant,
            )*
            $($rest)*
        }

        impl Error {
            /// The typed error for a failure NTSTATUS (a `STATUS_CLOUD_FILE_*` value becomes
            /// its own variant, any other value [`Error::Status`]).
            ///
            /// ```
            /// use cloudflt::Error;
            ///
            /// assert!(matches!(Error::from_status(0xC000_CF1F_u32 as i32), Error::RequestTimeout));
            /// assert!(matches!(Error::from_status(0xC000_0022_u32 as i32), Error::Status(_)));
            /// ```
            pub fn from_status(status: i32) -> Self {
                $(
                    if status == F::$status {
                        return Error::$variant;
                    }
                )*
                Error::Status(status)
            }

            /// The `STATUS_CLOUD_FILE_*` status a Win32 `ERROR_CLOUD_FILE_*` code stands for.
            fn status_of_win32(code: u32) -> Option<i32> {
                $(
                    if code == F::$win32 {
                        return Some(F::$status);
                    }
                )*
                None
            }

            /// The variant's own NTSTATUS, for the cloud-file variants.
            fn cloud_status(&self) -> Option<i32> {
                match self {
                    $(Error::$variant => Some(F::$status),)*
                    _ => None,
                }
            }
        }
    };
}

cloud_errors! {
    /// The sync root's registration data is corrupt.
    SyncRootMetadataCorrupt = STATUS_CLOUD_FILE_SYNC_ROOT_METADATA_CORRUPT
        / ERROR_CLOUD_FILE_SYNC_ROOT_METADATA_CORRUPT,
        "the sync root metadata is corrupt";
    /// No provider is connected for the sync root.
    ProviderNotRunning = STATUS_CLOUD_FILE_PROVIDER_NOT_RUNNING
        / ERROR_CLOUD_FILE_PROVIDER_NOT_RUNNING,
        "the cloud file provider is not running";
    /// The placeholder's reparse data is corrupt.
    MetadataCorrupt = STATUS_CLOUD_FILE_METADATA_CORRUPT / ERROR_CLOUD_FILE_METADATA_CORRUPT,
        "the cloud file metadata is corrupt";
    /// The placeholder's data would not fit in its reparse point (identity too long, too
    /// many ranges).
    MetadataTooLarge = STATUS_CLOUD_FILE_METADATA_TOO_LARGE
        / ERROR_CLOUD_FILE_METADATA_TOO_LARGE,
        "the cloud file metadata is too large";
    /// The placeholder's data has a version this driver does not read.
    PropertyVersionNotSupported = STATUS_CLOUD_FILE_PROPERTY_VERSION_NOT_SUPPORTED
        / ERROR_CLOUD_FILE_PROPERTY_VERSION_NOT_SUPPORTED,
        "the cloud file property version is not supported";
    /// The file is not a placeholder.
    NotACloudFile = STATUS_NOT_A_CLOUD_FILE / ERROR_NOT_A_CLOUD_FILE,
        "the file is not a cloud file";
    /// The file is not in sync with the cloud: it changed locally since the change
    /// counter a conditional request (`if_unchanged`) named, or an update would drop data
    /// changed locally and not synced yet.
    NotInSync = STATUS_CLOUD_FILE_NOT_IN_SYNC / ERROR_CLOUD_FILE_NOT_IN_SYNC,
        "the cloud file is not in sync";
    /// A provider is already connected for this sync root (or one overlapping it).
    AlreadyConnected = STATUS_CLOUD_FILE_ALREADY_CONNECTED
        / ERROR_CLOUD_FILE_ALREADY_CONNECTED,
        "a provider is already connected to this sync root";
    /// The operation is not supported here.
    NotSupported = STATUS_CLOUD_FILE_NOT_SUPPORTED / ERROR_CLOUD_FILE_NOT_SUPPORTED,
        "the cloud operation is not supported";
    /// The driver refused the request as malformed (a misaligned transfer, a range outside
    /// the file, an unknown request id).
    InvalidRequest = STATUS_CLOUD_FILE_INVALID_REQUEST / ERROR_CLOUD_FILE_INVALID_REQUEST,
        "the cloud operation is invalid";
    /// The volume is read-only.
    ReadOnlyVolume = STATUS_CLOUD_FILE_READ_ONLY_VOLUME / ERROR_CLOUD_FILE_READ_ONLY_VOLUME,
        "the cloud operation is not supported on a read-only volume";
    /// Only the connected provider may do this.
    ConnectedProviderOnly = STATUS_CLOUD_FILE_CONNECTED_PROVIDER_ONLY
        / ERROR_CLOUD_FILE_CONNECTED_PROVIDER_ONLY,
        "only the connected provider may do this";
    /// The provider could not validate the data.
    ValidationFailed = STATUS_CLOUD_FILE_VALIDATION_FAILED
        / ERROR_CLOUD_FILE_VALIDATION_FAILED,
        "the cloud file data failed validation";
    /// The provider could not authenticate to its service.
    AuthenticationFailed = STATUS_CLOUD_FILE_AUTHENTICATION_FAILED
        / ERROR_CLOUD_FILE_AUTHENTICATION_FAILED,
        "the cloud provider failed to authenticate";
    /// The provider or the driver ran out of resources.
    InsufficientResources = STATUS_CLOUD_FILE_INSUFFICIENT_RESOURCES
        / ERROR_CLOUD_FILE_INSUFFICIENT_RESOURCES,
        "the cloud provider has insufficient resources";
    /// The provider's service cannot be reached.
    NetworkUnavailable = STATUS_CLOUD_FILE_NETWORK_UNAVAILABLE
        / ERROR_CLOUD_FILE_NETWORK_UNAVAILABLE,
        "the network is unavailable";
    /// The provider failed without saying why; also what any failure status outside the
    /// cloud-file range becomes when sent as a fetch failure.
    Unsuccessful = STATUS_CLOUD_FILE_UNSUCCESSFUL / ERROR_CLOUD_FILE_UNSUCCESSFUL,
        "the cloud operation was unsuccessful";
    /// The path is not inside the connection's sync root.
    NotUnderSyncRoot = STATUS_CLOUD_FILE_NOT_UNDER_SYNC_ROOT
        / ERROR_CLOUD_FILE_NOT_UNDER_SYNC_ROOT,
        "the file is not under the sync root";
    /// The file is in use and cannot be changed now.
    InUse = STATUS_CLOUD_FILE_IN_USE / ERROR_CLOUD_FILE_IN_USE,
        "the cloud file is in use";
    /// The file is pinned, so it may not be dehydrated.
    Pinned = STATUS_CLOUD_FILE_PINNED / ERROR_CLOUD_FILE_PINNED,
        "the cloud file is pinned";
    /// The request was aborted.
    RequestAborted = STATUS_CLOUD_FILE_REQUEST_ABORTED / ERROR_CLOUD_FILE_REQUEST_ABORTED,
        "the cloud operation was aborted";
    /// The placeholder's properties are corrupt.
    PropertyCorrupt = STATUS_CLOUD_FILE_PROPERTY_CORRUPT / ERROR_CLOUD_FILE_PROPERTY_CORRUPT,
        "the cloud file property is corrupt";
    /// Access to the cloud file is denied.
    AccessDenied = STATUS_CLOUD_FILE_ACCESS_DENIED / ERROR_CLOUD_FILE_ACCESS_DENIED,
        "access to the cloud file is denied";
    /// Hard links are not allowed here.
    IncompatibleHardlinks = STATUS_CLOUD_FILE_INCOMPATIBLE_HARDLINKS
        / ERROR_CLOUD_FILE_INCOMPATIBLE_HARDLINKS,
        "the cloud operation cannot be performed on a file with incompatible hardlinks";
    /// Another operation holds the placeholder's properties.
    PropertyLockConflict = STATUS_CLOUD_FILE_PROPERTY_LOCK_CONFLICT
        / ERROR_CLOUD_FILE_PROPERTY_LOCK_CONFLICT,
        "the cloud file property lock is held by another operation";
    /// The request was cancelled (the application closed its handle, the range is no
    /// longer needed).
    RequestCanceled = STATUS_CLOUD_FILE_REQUEST_CANCELED / ERROR_CLOUD_FILE_REQUEST_CANCELED,
        "the cloud operation was canceled";
    /// The provider went away while the request was outstanding.
    ProviderTerminated = STATUS_CLOUD_FILE_PROVIDER_TERMINATED
        / ERROR_CLOUD_FILE_PROVIDER_TERMINATED,
        "the cloud file provider exited unexpectedly";
    /// The directory is not a sync root.
    NotACloudSyncRoot = STATUS_NOT_A_CLOUD_SYNC_ROOT / ERROR_NOT_A_CLOUD_SYNC_ROOT,
        "the directory is not a cloud sync root";
    /// The request is no longer outstanding: its deadline passed before the answer came.
    RequestTimeout = STATUS_CLOUD_FILE_REQUEST_TIMEOUT / ERROR_CLOUD_FILE_REQUEST_TIMEOUT,
        "the cloud operation was not completed before the time-out period expired";
    /// The placeholder may not be dehydrated (ALWAYS_FULL policy).
    DehydrationDisallowed = STATUS_CLOUD_FILE_DEHYDRATION_DISALLOWED
        / ERROR_CLOUD_FILE_DEHYDRATION_DISALLOWED,
        "dehydration of the cloud file is disallowed";
    ---
    /// The driver failed the request with a status outside the cloud-file family.
    #[error("the driver failed the request with NTSTATUS {0:#010x}")]
    Status(i32),

    /// A fltlib call on the communication port failed with this HRESULT (the driver
    /// is not loaded, access is denied, ...).
    #[error("{function} failed with HRESULT {hresult:#010x}")]
    Port {
        /// The fltlib function.
        function: &'static str,
        /// What it returned.
        hresult: i32,
    },

    /// The connection is closed: [`Connection::disconnect`](crate::Connection::disconnect)
    /// ran, or the driver ended the connection (unloaded, or it refused the provider).
    #[error("the connection to the driver is closed")]
    Disconnected,

    /// A kernel32 call the library depends on failed.
    #[error("{function} failed with Win32 error {code}")]
    Io {
        /// The kernel32 function.
        function: &'static str,
        /// Its `GetLastError` value.
        code: u32,
    },

    /// One of ntdll's `Rtl*PlaceholderCompatibilityMode` functions failed: it returned a
    /// negative `PHCM_ERROR_*` value (-1 `PHCM_ERROR_INVALID_PARAMETER`, -2
    /// `PHCM_ERROR_NO_TEB`, -3 `PHCM_ERROR_NO_PEB`), or a mode newer than this library.
    #[error("{function} returned {code} ({})", phcm_meaning(*code))]
    CompatMode {
        /// The ntdll function.
        function: &'static str,
        /// What it returned.
        code: i8,
    },

    /// A transfer broke cfapi's alignment rule and was not sent: the offset must be a
    /// multiple of 4 KiB, and the length too unless the data ends at the end of the file.
    #[error(
        "transfer of {length} bytes at offset {offset} breaks the 4 KiB alignment rule \
         (file size {file_size})"
    )]
    Alignment {
        /// Where the data was to go.
        offset: u64,
        /// How many bytes.
        length: u64,
        /// The file's size, which only an unaligned final piece may end at.
        file_size: u64,
    },

    /// A transfer reaches beyond the end of the file, or is empty.
    #[error("transfer of {length} bytes at offset {offset} is outside a file of {file_size} bytes")]
    OutOfRange {
        /// Where the data was to go.
        offset: u64,
        /// How many bytes.
        length: u64,
        /// The file's size.
        file_size: u64,
    },

    /// An argument cannot be expressed in the protocol (a name or identity too long, a
    /// path that is not absolute or not under a drive letter, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// A request could not be encoded (a field beyond its limit).
    #[error("request could not be encoded: {0}")]
    Encode(#[from] EncodeError),

    /// The driver's answer did not decode: a driver built for another protocol version, or
    /// a bug.
    #[error("the driver's answer did not decode: {0}")]
    Decode(#[from] DecodeError),
}

/// What a raw `Rtl*PlaceholderCompatibilityMode` answer that is not a known mode means.
fn phcm_meaning(code: i8) -> &'static str {
    match code {
        -1 => "PHCM_ERROR_INVALID_PARAMETER",
        -2 => "PHCM_ERROR_NO_TEB",
        -3 => "PHCM_ERROR_NO_PEB",
        c if c < 0 => "an unknown PHCM_ERROR_* value",
        _ => "a mode this library does not know",
    }
}

impl Error {
    /// The NTSTATUS this error stands for: the driver's own status for the cloud-file
    /// variants and [`Error::Status`]; the status inside a port HRESULT when it carries one;
    /// `STATUS_CLOUD_FILE_INVALID_REQUEST` for transfers the library refused before
    /// sending (misaligned or out of range, as the driver would); `STATUS_INVALID_PARAMETER`
    /// (cfapi's E_INVALIDARG) for arguments it refused before sending, as the driver
    /// refuses a registration or a connection context that breaks the same rules; `STATUS_CLOUD_FILE_PROVIDER_NOT_RUNNING`
    /// once disconnected; `STATUS_CLOUD_FILE_UNSUCCESSFUL` otherwise.
    ///
    /// ```
    /// use cloudflt::Error;
    ///
    /// let misaligned = Error::Alignment { offset: 100, length: 10, file_size: 1 << 20 };
    /// assert_eq!(misaligned.status(), 0xC000_CF0B_u32 as i32); // INVALID_REQUEST
    /// ```
    pub fn status(&self) -> i32 {
        if let Some(status) = self.cloud_status() {
            return status;
        }
        match self {
            Error::Status(status) => *status,
            Error::Port { hresult, .. } => match Error::from_hresult("", *hresult) {
                Error::Port { .. } => F::STATUS_CLOUD_FILE_UNSUCCESSFUL,
                carried => carried.status(),
            },
            Error::Disconnected => F::STATUS_CLOUD_FILE_PROVIDER_NOT_RUNNING,
            Error::Alignment { .. } | Error::OutOfRange { .. } => {
                F::STATUS_CLOUD_FILE_INVALID_REQUEST
            }
            // cfapi answers arguments that break its rules (CF_SYNC_REGISTRATION's
            // lengths, STREAMING_ALLOWED with VALIDATION_REQUIRED) with E_INVALIDARG.
            Error::InvalidArgument(_) | Error::Encode(_) => F::STATUS_INVALID_PARAMETER,
            _ => F::STATUS_CLOUD_FILE_UNSUCCESSFUL,
        }
    }

    /// The typed error for an HRESULT a fltlib `function` returned: a status the driver
    /// chose (as `HRESULT_FROM_NT`, or translated to an `ERROR_CLOUD_FILE_*` code) becomes
    /// its variant; a port that is gone (`ERROR_INVALID_HANDLE`) is
    /// [`Error::Disconnected`]; anything else stays an [`Error::Port`].
    ///
    /// ```
    /// use cloudflt::Error;
    ///
    /// // HRESULT_FROM_WIN32(ERROR_CLOUD_FILE_ALREADY_CONNECTED)
    /// let e = Error::from_hresult("FilterConnectCommunicationPort", 0x8007_017A_u32 as i32);
    /// assert!(matches!(e, Error::AlreadyConnected));
    /// ```
    pub fn from_hresult(function: &'static str, hresult: i32) -> Self {
        let raw = hresult as u32;
        if raw & FACILITY_NT_BIT != 0 {
            return Error::from_status((raw & !FACILITY_NT_BIT) as i32);
        }
        if raw & 0xffff_0000 == WIN32_PREFIX {
            let code = raw & 0xffff;
            if code == F::ERROR_INVALID_HANDLE {
                return Error::Disconnected;
            }
            if let Some(status) = Error::status_of_win32(code) {
                return Error::from_status(status);
            }
        }
        Error::Port { function, hresult }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cloud_status_round_trips_through_its_variant() {
        for code in 0xC000_CF00_u32..=0xC000_CF21 {
            let status = code as i32;
            let error = Error::from_status(status);
            assert_eq!(error.status(), status, "{error}");
        }
    }

    #[test]
    fn the_three_shapes_of_a_driver_status_give_the_same_variant() {
        let status = F::STATUS_CLOUD_FILE_NOT_UNDER_SYNC_ROOT;
        let from_nt = (status as u32 | FACILITY_NT_BIT) as i32;
        let from_win32 = (WIN32_PREFIX | F::ERROR_CLOUD_FILE_NOT_UNDER_SYNC_ROOT) as i32;
        for error in [
            Error::from_status(status),
            Error::from_hresult("f", from_nt),
            Error::from_hresult("f", from_win32),
        ] {
            assert!(matches!(error, Error::NotUnderSyncRoot), "{error}");
        }
    }

    #[test]
    fn a_gone_port_is_disconnected_and_other_hresults_stay_port_errors() {
        let invalid_handle = (WIN32_PREFIX | F::ERROR_INVALID_HANDLE) as i32;
        assert!(matches!(
            Error::from_hresult("f", invalid_handle),
            Error::Disconnected
        ));
        let denied = Error::from_hresult("f", F::E_ACCESSDENIED);
        assert!(matches!(denied, Error::Port { .. }));
        assert_eq!(denied.status(), F::STATUS_CLOUD_FILE_UNSUCCESSFUL);
    }
}
