//! The driver's reply to a provider message.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cloudflt_proto::fuzz::fuzz_reply(data));
