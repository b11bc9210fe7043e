//! The control API's HTTP request parser on arbitrary bytes.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| virtgate::api::fuzz_parse_request(data));
