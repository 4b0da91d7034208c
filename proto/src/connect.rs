//! The connection context a provider passes to `FilterConnectCommunicationPort`.
//!
//! Filter Manager hands these bytes to the driver's ConnectNotify callback. The driver
//! accepts a connection only if they decode; anything else is refused with the status that
//! [`ConnectError`] names, so a provider built against a different protocol learns why.
//!
//! Layout, version 1 (all fields little-endian):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic, `b"CFLT"` |
//! | 4 | 2 | protocol version ([`PROTOCOL_VERSION`](crate::PROTOCOL_VERSION)) |
//! | 6 | 2 | header size, 16 for version 1 |
//! | 8 | 4 | total size of the context, header included |
//! | 12 | 4 | flags, none defined: must be zero |
//!
//! Bytes after the header are the version's body, which the driver reads with the
//! decoder of that version.

use crate::wire;

/// The four bytes every connection context starts with.
pub const MAGIC: [u8; 4] = *b"CFLT";

/// Size of the version-1 header.
pub const HEADER_SIZE: usize = 16;

/// Largest connection context the driver accepts. Filter Manager caps the context at
/// 64 KiB (a USHORT EA value length); staying below keeps the kernel copy small.
pub const MAX_SIZE: usize = 32 * 1024;

/// A decoded connection context, borrowing the bytes it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionContext<'a> {
    /// The protocol version the provider speaks.
    pub version: u16,
    /// The bytes after the header, up to the declared total size.
    pub body: &'a [u8],
}

/// Why a connection context was refused.
///
/// Each variant maps to one NTSTATUS in the driver (`nt::status`), which
/// `FilterConnectCommunicationPort` returns to the provider as an HRESULT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnectError {
    /// No context, or fewer bytes than a header.
    TooShort,
    /// More than [`MAX_SIZE`] bytes.
    TooLarge,
    /// The first four bytes are not [`MAGIC`]: not a cloudflt provider.
    BadMagic,
    /// A protocol version this driver does not speak.
    UnsupportedVersion(u16),
    /// The header's size field or total-size field disagrees with the bytes received.
    SizeMismatch,
    /// A flag bit this version does not define is set.
    UnknownFlags(u32),
}

impl<'a> ConnectionContext<'a> {
    /// Decodes a connection context as received by ConnectNotify.
    pub fn decode(bytes: &'a [u8]) -> Result<Self, ConnectError> {
        if bytes.len() > MAX_SIZE {
            return Err(ConnectError::TooLarge);
        }
        let magic: [u8; 4] = wire::array(bytes, 0).ok_or(ConnectError::TooShort)?;
        if magic != MAGIC {
            return Err(ConnectError::BadMagic);
        }
        let version = wire::u16_at(bytes, 4).ok_or(ConnectError::TooShort)?;
        let header_size = wire::u16_at(bytes, 6).ok_or(ConnectError::TooShort)?;
        let total_size = wire::u32_at(bytes, 8).ok_or(ConnectError::TooShort)?;
        let flags = wire::u32_at(bytes, 12).ok_or(ConnectError::TooShort)?;
        if version != crate::PROTOCOL_VERSION {
            return Err(ConnectError::UnsupportedVersion(version));
        }
        if usize::from(header_size) != HEADER_SIZE
            || usize::try_from(total_size).ok() != Some(bytes.len())
        {
            return Err(ConnectError::SizeMismatch);
        }
        if flags != 0 {
            return Err(ConnectError::UnknownFlags(flags));
        }
        let body = bytes.get(HEADER_SIZE..).ok_or(ConnectError::TooShort)?;
        Ok(Self { version, body })
    }

    /// The encoded length of a context carrying `body_len` body bytes.
    pub const fn encoded_len(body_len: usize) -> usize {
        HEADER_SIZE + body_len
    }

    /// Encodes this context into `out`, returning the number of bytes written.
    ///
    /// Fails with [`ConnectError::TooShort`] if `out` cannot hold it and with
    /// [`ConnectError::TooLarge`] if the result would exceed [`MAX_SIZE`].
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, ConnectError> {
        let len = Self::encoded_len(self.body.len());
        if len > MAX_SIZE {
            return Err(ConnectError::TooLarge);
        }
        let total = u32::try_from(len).map_err(|_| ConnectError::TooLarge)?;
        let version = self.version.to_le_bytes();
        let header_size = (HEADER_SIZE as u16).to_le_bytes();
        let total = total.to_le_bytes();
        let flags = 0u32.to_le_bytes();
        let fields = MAGIC
            .iter()
            .chain(&version)
            .chain(&header_size)
            .chain(&total)
            .chain(&flags)
            .chain(self.body);
        let out = out.get_mut(..len).ok_or(ConnectError::TooShort)?;
        for (dst, src) in out.iter_mut().zip(fields) {
            *dst = *src;
        }
        Ok(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn encoded(body: &[u8]) -> std::vec::Vec<u8> {
        let ctx = ConnectionContext {
            version: crate::PROTOCOL_VERSION,
            body,
        };
        let mut out = std::vec![0u8; ConnectionContext::encoded_len(body.len())];
        let written = ctx.encode(&mut out);
        assert_eq!(written, Ok(out.len()));
        out
    }

    extern crate std;

    #[test]
    fn round_trips() {
        let bytes = encoded(b"sync root");
        let decoded = ConnectionContext::decode(&bytes).map(|c| (c.version, c.body));
        assert_eq!(decoded, Ok((crate::PROTOCOL_VERSION, &b"sync root"[..])));
    }

    #[test]
    fn refuses_each_malformation_with_its_own_error() {
        let good = encoded(b"");
        assert_eq!(ConnectionContext::decode(&[]), Err(ConnectError::TooShort));
        assert_eq!(
            ConnectionContext::decode(&good[..15]),
            Err(ConnectError::TooShort)
        );

        let mut bad = good.clone();
        bad[0] = b'X';
        assert_eq!(ConnectionContext::decode(&bad), Err(ConnectError::BadMagic));

        let mut bad = good.clone();
        bad[4..6].copy_from_slice(&7u16.to_le_bytes());
        assert_eq!(
            ConnectionContext::decode(&bad),
            Err(ConnectError::UnsupportedVersion(7))
        );

        let mut bad = good.clone();
        bad[8..12].copy_from_slice(&17u32.to_le_bytes());
        assert_eq!(
            ConnectionContext::decode(&bad),
            Err(ConnectError::SizeMismatch)
        );

        let mut bad = good.clone();
        bad[6..8].copy_from_slice(&20u16.to_le_bytes());
        assert_eq!(
            ConnectionContext::decode(&bad),
            Err(ConnectError::SizeMismatch)
        );

        let mut bad = good.clone();
        bad[12] = 1;
        assert_eq!(
            ConnectionContext::decode(&bad),
            Err(ConnectError::UnknownFlags(1))
        );

        let huge = std::vec![0u8; MAX_SIZE + 1];
        assert_eq!(
            ConnectionContext::decode(&huge),
            Err(ConnectError::TooLarge)
        );
    }

    proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = ConnectionContext::decode(&bytes);
        }

        #[test]
        fn any_body_round_trips(body in proptest::collection::vec(any::<u8>(), 0..1024)) {
            let bytes = encoded(&body);
            let decoded = ConnectionContext::decode(&bytes).map(|c| c.body);
            prop_assert_eq!(decoded, Ok(&body[..]));
        }

        #[test]
        fn truncation_is_always_refused(body in proptest::collection::vec(any::<u8>(), 0..64), cut in 0usize..80) {
            let bytes = encoded(&body);
            prop_assume!(cut < bytes.len());
            prop_assert!(ConnectionContext::decode(&bytes[..cut]).is_err());
        }
    }
}
