//! Every port message kind, through the header and both direction dispatchers.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cloudflt_proto::fuzz::fuzz_message(data));
