//! The disguise rewriting of directory listings, file queries and
//! FSCTL_GET_REPARSE_POINT output, against an independent oracle.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| cloudflt_driver::engine::fuzz::fuzz_rewrite(data));
