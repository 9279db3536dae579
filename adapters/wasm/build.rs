//! Links the WASM core with a shadow stack of 192 KiB instead of rustc's 1 MiB: the stack
//! counts in the module's memory, which the SPEC bounds (32 MB).
//!
//! Recursion is bounded: types nest at most 16 levels (`schema::MAX_TYPE_DEPTH`),
//! MessagePack from peers 100 (`limits::MAX_NESTING`, checked before decoding), JSON op
//! lines 128 (serde_json's limit). Measured with a stress script (a node whose props are a
//! list and a struct each 15 levels deep, written, exported, imported into a second core;
//! deeper DDL and JSON refused): it runs in 96 KiB and overflows in 64 KiB, in the FSE
//! tables of a sealed log block's compression (`crate::blocks`, inside the write). 192 KiB
//! keeps twice what passed. The stack is placed first, so an overflow traps ("memory
//! access out of bounds") rather than overwriting data. With the data (~100 KiB) the
//! module starts at 5 pages of 64 KiB (6 with 256 KiB; 128 KiB would take 4 but is less
//! than twice what passed).

const STACK_BYTES: usize = 192 << 10;

fn main() {
    if std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("wasm32") {
        println!("cargo:rustc-link-arg-cdylib=-zstack-size={STACK_BYTES}");
    }
    println!("cargo:rerun-if-changed=build.rs");
}
