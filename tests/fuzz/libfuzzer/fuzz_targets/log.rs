//! libFuzzer target: [`daxkv_fuzz::log`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| daxkv_fuzz::log(data));
