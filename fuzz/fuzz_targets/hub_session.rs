//! A hub's server session fed a fuzzed, structured message sequence: see
//! `kuzu_sync_fuzz::hub` for the input types (this crate's own `Arbitrary` mirrors of the
//! engine's messages) and the checks. `cargo fuzz fmt hub_session <file>` prints an input.
#![no_main]

use kuzu_sync_fuzz::hub::{Harness, Input};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: Input| {
    Harness::run(&input);
});
