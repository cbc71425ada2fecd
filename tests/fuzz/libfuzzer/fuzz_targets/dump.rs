//! libFuzzer target: [`daxkv_fuzz::dump`].
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| daxkv_fuzz::dump(data));
