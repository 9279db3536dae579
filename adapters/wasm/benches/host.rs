//! The JS host's engine, natively: the same op stream as `js/bench/engine.mjs` runs in
//! WASM (100,000 entities: 50,000 nodes and 50,000 edges, in writes of 1,000 ops, each
//! plan confirmed and discarded), so the two numbers compare the engine in WASM with the
//! engine native on the same work. Also prints the live heap after one run (a counting
//! allocator), the native counterpart of the WASM module's memory.
//! `cargo bench --profile dev -p kuzu-sync-wasm --bench host`

use std::alloc::System;
use std::time::Duration;

use cap::Cap;
use criterion::{criterion_group, criterion_main, Criterion};
use kuzu_sync_wasm::host::{Host, Stored};

#[global_allocator]
static HEAP: Cap<System> = Cap::new(System, usize::MAX);

const NODES: usize = 50_000;
const BATCH: usize = 1_000;

/// The op stream as JSON-line writes: the same lines as `js/bench/engine.mjs`.
fn writes() -> Vec<String> {
    let mut out = vec![[
        r#"{"op":"ddl","cypher":"CREATE NODE TABLE Person(id INT64, name STRING, age INT64, PRIMARY KEY(id))"}"#,
        r#"{"op":"ddl","cypher":"CREATE REL TABLE Knows(FROM Person TO Person, since INT64)"}"#,
    ]
    .join("\n")];
    let mut lines = Vec::new();
    for i in 0..NODES {
        lines.push(format!(
            r#"{{"op":"add_node","table":"Person","props":{{"id":{i},"name":"person {i}","age":{}}}}}"#,
            i % 90
        ));
        if lines.len() == BATCH {
            out.push(std::mem::take(&mut lines).join("\n"));
        }
    }
    for i in 0..NODES {
        lines.push(format!(
            r#"{{"op":"add_edge","table":"Knows","from":{i},"to":{},"props":{{"since":{}}}}}"#,
            (i * 7 + 1) % NODES,
            2000 + i % 20
        ));
        if lines.len() == BATCH {
            out.push(std::mem::take(&mut lines).join("\n"));
        }
    }
    if !lines.is_empty() {
        out.push(lines.join("\n"));
    }
    out
}

fn run(stream: &[String]) -> Host {
    let mut h = Host::open("bench", &[], Stored::default()).unwrap();
    for lines in stream {
        h.write(lines, 1_700_000_000_000).unwrap();
        h.confirm().unwrap();
    }
    h
}

fn host(c: &mut Criterion) {
    let stream = writes();
    let before = HEAP.allocated();
    let mut h = run(&stream);
    let status = h.status().unwrap();
    assert_eq!(status["nodes"], NODES);
    assert_eq!(status["edges"], NODES);
    println!(
        "live heap after {} entities: {:.1} MiB (the engine, its conflicts and the in-memory \
         copy of the log)",
        2 * NODES,
        (HEAP.allocated() - before) as f64 / f64::from(1 << 20)
    );
    drop(h);
    let mut g = c.benchmark_group("js_host_native");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    g.bench_function("write 100k entities in writes of 1,000", |b| {
        b.iter(|| run(&stream))
    });
    g.finish();
}

criterion_group!(benches, host);
criterion_main!(benches);
