//! Compiles `csrc/float.c`, INCRBYFLOAT's long double arithmetic (see
//! `src/float.rs`).

fn main() {
    println!("cargo:rerun-if-changed=csrc/float.c");
    cc::Build::new().file("csrc/float.c").warnings(true).extra_warnings(true).compile("daxkv_float");
}
