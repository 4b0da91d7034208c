//! The provider library for cloudflt.
//!
//! A sync provider connects to `cloudflt.sys` over the Filter Manager communication port
//! named [`PORT_NAME`] and announces itself with a [`connection_context`].
#![deny(missing_docs)]

pub use cloudflt_proto::PROTOCOL_VERSION;
pub use cloudflt_proto::port::PORT_NAME;

use cloudflt_proto::ConnectionContext;

/// Why a connection context could not be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ContextError {
    /// The body would make the context larger than the driver accepts.
    #[error("connection context of {0} bytes exceeds the {max} byte limit", max = cloudflt_proto::connect::MAX_SIZE)]
    TooLarge(usize),
}

/// Builds the connection context to pass to `FilterConnectCommunicationPort`.
///
/// ```
/// let bytes = cloudflt::connection_context(b"").unwrap();
/// assert_eq!(&bytes[..4], b"CFLT");
/// ```
pub fn connection_context(body: &[u8]) -> Result<Vec<u8>, ContextError> {
    let len = ConnectionContext::encoded_len(body.len());
    let mut out = vec![0u8; len];
    let ctx = ConnectionContext {
        version: PROTOCOL_VERSION,
        body,
    };
    ctx.encode(&mut out)
        .map_err(|_| ContextError::TooLarge(len))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_driver_decoder_accepts_what_the_library_builds() {
        let bytes = connection_context(b"root").unwrap();
        let decoded = ConnectionContext::decode(&bytes).unwrap();
        assert_eq!(decoded.body, b"root");
    }

    #[test]
    fn oversized_contexts_are_a_typed_error() {
        let body = vec![0u8; cloudflt_proto::connect::MAX_SIZE];
        assert!(matches!(
            connection_context(&body),
            Err(ContextError::TooLarge(_))
        ));
    }
}
