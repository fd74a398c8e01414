#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| leasehold_safety::fuzz::http_service(data));
