//! Facts about the Filter Manager communication port that both sides must agree on.

/// The port's name in the object manager namespace.
///
/// User mode passes it to `FilterConnectCommunicationPort`; the driver creates it with
/// `FltCreateCommunicationPort`.
pub const PORT_NAME: &str = "\\CloudFltPort";

/// How many providers may be connected at once. Each provider serves its own sync root.
pub const MAX_CONNECTIONS: i32 = 64;

/// Size of `FILTER_MESSAGE_HEADER` (ReplyLength `u32`, padding, MessageId `u64`), which
/// Filter Manager puts in front of every message the driver sends.
pub const FILTER_MESSAGE_HEADER_SIZE: usize = 16;

/// Size of `FILTER_REPLY_HEADER` (Status `i32`, padding, MessageId `u64`), which the
/// provider puts in front of every reply.
pub const FILTER_REPLY_HEADER_SIZE: usize = 16;

/// The port name as the UTF-16 code units the kernel's `UNICODE_STRING` needs.
pub const PORT_NAME_UTF16: [u16; PORT_NAME.len()] = ascii_utf16(PORT_NAME);

/// Widens an ASCII string to UTF-16 at compile time.
#[expect(
    clippy::indexing_slicing,
    reason = "evaluated only in const context, where an out-of-range index fails the build"
)]
const fn ascii_utf16<const N: usize>(s: &str) -> [u16; N] {
    let bytes = s.as_bytes();
    let mut out = [0u16; N];
    let mut i = 0;
    while i < N {
        // Only called on ASCII constants; a non-ASCII byte stops the build.
        assert!(bytes[i].is_ascii());
        out[i] = bytes[i] as u16;
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_name_widens_exactly() {
        let wide: [u16; 13] = PORT_NAME_UTF16;
        let back: [u8; 13] = wide.map(|c| c as u8);
        assert_eq!(&back, PORT_NAME.as_bytes());
    }
}
