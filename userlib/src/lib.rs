//! The provider library for cloudflt.
//!
//! A sync provider connects to `cloudflt.sys` over the Filter Manager communication port
//! named [`PORT_NAME`] and announces itself with a [`connection_context`].
#![deny(missing_docs)]

pub use cloudflt_proto::PROTOCOL_VERSION;
pub use cloudflt_proto::port::PORT_NAME;
pub use cloudflt_proto::{ConnectionContext, HydrationPolicy, PopulationPolicy, Utf16};

/// Why a connection context could not be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ContextError {
    /// The body would make the context larger than the driver accepts.
    #[error("connection context of {0} bytes exceeds the {max} byte limit", max = cloudflt_proto::connect::MAX_SIZE)]
    TooLarge(usize),
    /// A field the driver would refuse (name too long, timeout out of range, sync root not
    /// in NT form).
    #[error("invalid connection context: {0}")]
    Invalid(cloudflt_proto::EncodeError),
}

/// Builds the connection context to pass to `FilterConnectCommunicationPort`.
///
/// ```
/// use cloudflt::{ConnectionContext, HydrationPolicy, PopulationPolicy, Utf16};
/// let root: Vec<u16> = r"\Device\HarddiskVolume1\Cloud".encode_utf16().collect();
/// let name: Vec<u16> = "example".encode_utf16().collect();
/// let bytes = cloudflt::connection_context(&ConnectionContext {
///     provider_name: Utf16::from_units(&name),
///     provider_version: Utf16::from_units(&[]),
///     sync_root: Utf16::from_units(&root),
///     hydration: HydrationPolicy::Full,
///     population: PopulationPolicy::Full,
///     timeout_ms: 0,
/// })
/// .unwrap();
/// assert_eq!(&bytes[..4], b"CFLT");
/// ```
pub fn connection_context(context: &ConnectionContext<'_>) -> Result<Vec<u8>, ContextError> {
    let len = context.encoded_len();
    if len > cloudflt_proto::connect::MAX_SIZE {
        return Err(ContextError::TooLarge(len));
    }
    let mut out = vec![0u8; len];
    context.encode(&mut out).map_err(ContextError::Invalid)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(root: &[u16]) -> ConnectionContext<'_> {
        ConnectionContext {
            provider_name: Utf16::EMPTY,
            provider_version: Utf16::EMPTY,
            sync_root: Utf16::from_units(root),
            hydration: HydrationPolicy::Progressive,
            population: PopulationPolicy::Full,
            timeout_ms: 5_000,
        }
    }

    #[test]
    fn the_driver_decoder_accepts_what_the_library_builds() {
        let root: Vec<u16> = r"\Device\V\root".encode_utf16().collect();
        let bytes = connection_context(&context(&root)).unwrap();
        let decoded = ConnectionContext::decode(&bytes).unwrap();
        assert_eq!(decoded, context(&root));
    }

    #[test]
    fn oversized_and_invalid_contexts_are_typed_errors() {
        let root = vec![u16::from(b'\\'); cloudflt_proto::connect::MAX_SIZE];
        assert!(matches!(
            connection_context(&context(&root)),
            Err(ContextError::TooLarge(_))
        ));
        assert!(matches!(
            connection_context(&context(&[u16::from(b'C')])),
            Err(ContextError::Invalid(_))
        ));
    }
}
