//! Fuzz target bodies, shared by the cargo-fuzz targets under `fuzz/` and by the tests.
//!
//! Each body decodes arbitrary bytes, which must not panic, and, when they decode, checks
//! the strongest property a decoder of a canonical format has: encoding the decoded value
//! gives back exactly the bytes it was decoded from. That catches a decoder that accepts
//! something its encoder would never produce (an unchecked reserved field, a lost byte)
//! as well as encoder/decoder disagreements.
//!
//! Only built for tests and with the `fuzzing` feature: the asserts are the point here, and
//! they must never reach the kernel image.
#![allow(
    clippy::panic,
    clippy::indexing_slicing,
    reason = "a failed fuzz property must abort the run"
)]

use crate::connect::{ConnectionContext, PortContext};
use crate::msg::{
    Header, KernelMessage, ManagementMessage, ProviderMessage, Reply, TRANSFER_HEAD_LEN,
    TransferData, TransferHead,
};
use crate::placeholder::{self, Placeholder};
use crate::rules::{RuleList, RuleListEncoder};

/// Re-encodings larger than this are skipped; fuzz inputs are far smaller.
const SCRATCH: usize = 64 * 1024;

/// Checks that `encode` reproduces `expected` exactly, given the value's encoded length.
fn reencodes_to(
    expected: &[u8],
    len: usize,
    encode: impl FnOnce(&mut [u8]) -> Result<usize, crate::EncodeError>,
) {
    if len > SCRATCH {
        return;
    }
    let mut scratch = [0u8; SCRATCH];
    let written = encode(&mut scratch);
    assert_eq!(written, Ok(len), "a decoded value must re-encode");
    assert_eq!(
        &scratch[..len],
        expected,
        "re-encoding must be byte-identical"
    );
}

/// The placeholder blob decoder, bare and wrapped in a reparse buffer.
pub fn fuzz_placeholder(data: &[u8]) {
    placeholder_once(data);
    // A random blob almost never carries a matching CRC-32, which would leave the checks
    // behind the checksum unexplored; decode a copy with the checksum made right too.
    if (20..=placeholder::MAX_BLOB_SIZE).contains(&data.len()) {
        let mut sealed = [0u8; placeholder::MAX_BLOB_SIZE];
        let sealed = &mut sealed[..data.len()];
        sealed.copy_from_slice(data);
        let sum = crate::crc32::crc32(&sealed[20..]);
        sealed[16..20].copy_from_slice(&sum.to_le_bytes());
        placeholder_once(sealed);
    }
}

fn placeholder_once(data: &[u8]) {
    if let Ok(p) = Placeholder::decode(data) {
        placeholder_reencodes(data, &p, false);
    }
    if let Ok(p) = Placeholder::decode_reparse(data) {
        placeholder_reencodes(data, &p, true);
    }
    if let Ok(inner) = placeholder::unwrap_reparse(data) {
        reencodes_to(data, data.len(), |out| {
            placeholder::wrap_reparse(inner, out)
        });
    }
}

/// Encodes a value into the buffer given, returning the bytes written.
type Encoder<'a> = dyn Fn(&mut [u8]) -> Result<usize, crate::EncodeError> + 'a;

/// A placeholder decoded from `data` (a bare blob, or `wrapped` in its reparse buffer)
/// re-encodes: byte for byte when the blob is of the version the encoder writes; an
/// older version (read, never written) to a blob that decodes to the same value, so
/// writing an old blob back loses nothing it records.
fn placeholder_reencodes(data: &[u8], p: &Placeholder<'_>, wrapped: bool) {
    let blob = if wrapped {
        &data[placeholder::REPARSE_HEADER_SIZE..]
    } else {
        data
    };
    let (len, encode): (usize, &Encoder<'_>) = if wrapped {
        (p.reparse_len(), &|out| p.encode_reparse(out))
    } else {
        (p.encoded_len(), &|out| p.encode(out))
    };
    if crate::wire::u16_at(blob, 4) == Some(placeholder::VERSION) {
        assert_eq!(len, data.len());
        reencodes_to(data, len, encode);
        return;
    }
    assert_eq!(crate::wire::u16_at(blob, 4), Some(placeholder::VERSION_1));
    assert!(p.modified.is_empty() && p.changes == 0);
    // A version 1 blob may hold one range more than version 2 has room for.
    if p.ranges.len() > placeholder::MAX_RANGES || len > SCRATCH {
        return;
    }
    let mut scratch = [0u8; SCRATCH];
    assert_eq!(
        encode(&mut scratch),
        Ok(len),
        "a decoded value must re-encode"
    );
    let again = &scratch[..len];
    let decoded = if wrapped {
        Placeholder::decode_reparse(again)
    } else {
        Placeholder::decode(again)
    };
    assert_eq!(
        decoded,
        Ok(*p),
        "an older blob re-encodes to the same value"
    );
}

/// Every port message kind, through the header and the three direction dispatchers
/// (kernel, provider, management), of which at most one accepts a message.
pub fn fuzz_message(data: &[u8]) {
    let header = Header::decode(data);
    let kernel = KernelMessage::decode(data);
    let provider = ProviderMessage::decode(data);
    let management = ManagementMessage::decode(data);
    // The head-only decoder agrees with the whole one on every transfer.
    let head = TransferHead::decode(&data[..data.len().min(TRANSFER_HEAD_LEN)], data.len());
    match TransferData::decode(data) {
        Ok(t) => assert_eq!(
            head,
            Ok(TransferHead {
                request_id: t.request_id,
                offset: t.offset,
                flags: t.flags,
                data_len: t.data.len(),
            })
        ),
        Err(e) => assert_eq!(head.err(), Some(e), "the head decoder refuses alike"),
    }
    match header {
        Err(e) => {
            assert_eq!(kernel.err(), Some(e), "header errors come first");
            assert_eq!(provider.err(), Some(e), "header errors come first");
            assert_eq!(management.err(), Some(e), "header errors come first");
        }
        Ok(h) => {
            let message = &data[..h.length as usize];
            let from_kernel = h.kind.is_from_kernel();
            let from_management = h.kind.is_management();
            assert!(from_kernel || kernel.is_err());
            assert!(from_management || management.is_err());
            assert!((!from_kernel && !from_management) || provider.is_err());
            if let Ok(m) = kernel {
                assert_eq!((m.kind(), m.request_id()), (h.kind, h.request_id));
                reencodes_to(message, m.encoded_len(), |out| m.encode(out));
            }
            if let Ok(m) = provider {
                assert_eq!((m.kind(), m.request_id()), (h.kind, h.request_id));
                reencodes_to(message, m.encoded_len(), |out| m.encode(out));
            }
            if let Ok(m) = management {
                assert_eq!((m.kind(), m.request_id()), (h.kind, h.request_id));
                reencodes_to(message, m.encoded_len(), |out| m.encode(out));
            }
        }
    }
}

/// The connection context decoders, of either kind.
pub fn fuzz_connect(data: &[u8]) {
    let provider = ConnectionContext::decode(data);
    match PortContext::decode(data) {
        Ok(c) => {
            assert_eq!(c.encoded_len(), data.len());
            reencodes_to(data, data.len(), |out| c.encode(out));
            match c {
                PortContext::Provider(p) => assert_eq!(provider, Ok(p)),
                PortContext::Management => assert!(provider.is_err()),
            }
        }
        Err(e) => assert_eq!(provider, Err(e), "the same refusal either way"),
    }
}

/// The reply decoder, and the rule list a reply may carry.
pub fn fuzz_reply(data: &[u8]) {
    if let Ok(r) = Reply::decode(data) {
        let len = r.encoded_len();
        assert!(len <= data.len());
        reencodes_to(&data[..len], len, |out| r.encode(out));
        fuzz_rule_list(r.payload);
    }
    fuzz_rule_list(data);
}

/// The rule list decoder: a list that decodes re-encodes, rule by rule, to its bytes.
pub fn fuzz_rule_list(data: &[u8]) {
    if let Ok(list) = RuleList::decode(data) {
        assert_eq!(
            list.iter().count(),
            list.len(),
            "every checked rule is read"
        );
        reencodes_to(data, data.len(), |out| {
            let mut encoder = RuleListEncoder::new(out);
            for rule in list.iter() {
                encoder.push(rule.visibility, rule.pattern)?;
            }
            encoder.finish()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        // The fuzz bodies on random input, so their oracles run in every `cargo test`.
        #[test]
        fn fuzz_bodies_hold_on_random_bytes(data in proptest::collection::vec(any::<u8>(), 0..512)) {
            fuzz_placeholder(&data);
            fuzz_message(&data);
            fuzz_connect(&data);
            fuzz_reply(&data);
            fuzz_rule_list(&data);
        }
    }
}
