//! Links the WASM core with a shadow stack of 128 KiB instead of rustc's 1 MiB: the stack
//! counts in the module's memory, which the SPEC bounds (32 MB).
//!
//! Recursion is bounded: types nest at most 16 levels (`schema::MAX_TYPE_DEPTH`),
//! MessagePack from peers 100 (`limits::MAX_NESTING`, checked before decoding), JSON op
//! lines 128 (serde_json's limit). Measured: writing, exporting and importing a value of
//! the deepest type (a list and a struct each 15 levels deep) runs in 64 KiB, and the
//! largest frame is ruzstd's default compressor (`kuzu_sync_protocol::encode`, exporting a
//! bundle), between 32 and 64 KiB: 32 KiB overflows there. 128 KiB keeps twice what
//! passed. The stack is placed first, so an overflow traps ("memory access out of
//! bounds") rather than overwriting data. With the data (~100 KiB) the module starts at
//! 4 pages of 64 KiB instead of 6 (a stack of 96 KiB would still take 4).

const STACK_BYTES: usize = 128 << 10;

fn main() {
    if std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("wasm32") {
        println!("cargo:rustc-link-arg-cdylib=-zstack-size={STACK_BYTES}");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
