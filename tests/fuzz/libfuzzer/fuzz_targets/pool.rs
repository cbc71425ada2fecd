//! libFuzzer target: [`daxkv_fuzz::pool`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| daxkv_fuzz::pool(data));
