#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| leasehold_server::fuzz::http_service(data));
