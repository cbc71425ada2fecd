//! libFuzzer target: [`daxkv_fuzz::requests`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| daxkv_fuzz::requests(data));
