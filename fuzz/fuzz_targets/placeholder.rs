//! The placeholder blob, bare and in its REPARSE_GUID_DATA_BUFFER.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cloudflt_proto::fuzz::fuzz_placeholder(data));
