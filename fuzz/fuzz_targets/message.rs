//! Every port message kind (kernel, provider and management), through the header and the
//! three direction dispatchers.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cloudflt_proto::fuzz::fuzz_message(data));
