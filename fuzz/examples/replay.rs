//! Replays `hub_session` inputs (corpus entries, crash artifacts) without libFuzzer and
//! prints the message sequence, the hub's answers and the time each step took:
//! `cargo run --release --manifest-path fuzz/Cargo.toml --example replay -- FILE...`.
//! A failed check panics with the same report as under the fuzzer.

use std::time::Instant;

use arbitrary::{Arbitrary, Unstructured};
use kuzu_sync_fuzz::hub::{Harness, Input};

fn main() {
    for path in std::env::args().skip(1) {
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let input = Input::arbitrary_take_rest(Unstructured::new(&bytes))
            .unwrap_or_else(|e| panic!("{path}: not a hub_session input: {e}"));
        println!("== {path}");
        let start = Instant::now();
        let mut h = Harness::new(&input.setup);
        if input.skip_hello < 224 {
            let m = h.hello(&input.hello);
            h.receive(m);
        }
        for line in &h.log {
            println!("  {line}");
        }
        for step in &input.steps {
            let t = Instant::now();
            let from = h.log.len();
            h.step(step);
            for line in &h.log[from..] {
                println!("  {line}");
            }
            println!("  ({:.3} s)", t.elapsed().as_secs_f64());
        }
        println!("== {:.3} s in all", start.elapsed().as_secs_f64());
    }
}
