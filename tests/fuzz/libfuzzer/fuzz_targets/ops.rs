//! libFuzzer target: [`daxkv_fuzz::ops`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| daxkv_fuzz::ops(data));
