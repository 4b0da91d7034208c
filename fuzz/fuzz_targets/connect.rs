//! The connection context a provider connects with.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cloudflt_proto::fuzz::fuzz_connect(data));
