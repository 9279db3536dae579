//! Criterion benchmarks of the pure engine (no Kuzu, no SQLite): applying local and concurrent
//! remote events, resolving one conflict, building a batch, against a plain `BTreeMap` baseline
//! measured in the same run; checking a sync point against a long log. Run with
//! `CARGO_TARGET_DIR=/tmp/target-bench cargo bench -p kuzu-sync-engine --profile dev --bench engine -- --warm-up-time 1 --measurement-time 3`.
//!
//! The workload is the simulator's random op mix (`sim::random_op`, no schema changes) on
//! `sim::base_schema()`: node adds, name updates, counter increments, edge adds (all three
//! multiplicities), edge and node deletes. Ops a replica's state refuses (an update of a node it
//! does not hold, say) are skipped while generating, so every benchmark event is valid.
//! `Engine` is not `Clone`, so setups rebuild the engine by a silent replay (tracking off, as on
//! open); the timed part always runs with tracking on, as for a live write or import.

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use kuzu_sync_engine::sim::{base_schema, random_op, Rng};
use kuzu_sync_engine::{Engine, Entity, Event, NodeRef, Op, PeerId, Value};

/// Events per throughput benchmark.
const N: usize = 10_000;
/// Wall clock at the start of every scenario.
const T0: u64 = 1_700_000_000_000;
/// User keys for the single-writer workload: enough that most ops find a live node.
const LOCAL_KEYS: u64 = 1_000;
/// User keys for the two-writer workload: small, so the writers keep hitting the same nodes.
const SHARED_KEYS: u64 = 100;

fn peer(name: &str) -> PeerId {
    PeerId::new(name).expect("valid peer id")
}

/// The events that create `sim::base_schema()`, written by `writer`.
fn schema_events(writer: &PeerId) -> Vec<Event> {
    let mut engine = Engine::new(writer.clone());
    let mut out = Vec::new();
    for (i, op) in base_schema().into_iter().enumerate() {
        let event = engine
            .prepare(Op::Schema(op), T0 + i as u64)
            .expect("valid schema op");
        engine.apply(&event).expect("schema event applies");
        out.push(event);
    }
    out
}

/// A fresh engine of `me` that holds `history`, replayed silently (as on open).
fn replay(me: &PeerId, history: &[&[Event]]) -> Engine {
    let mut engine = Engine::new(me.clone());
    engine.set_tracking(false);
    for event in history.iter().flat_map(|part| part.iter()) {
        engine.apply(event).expect("replayed event applies");
    }
    engine.set_tracking(true);
    engine
}

/// Writes `n` random ops on `engine`, each prepared and applied in turn like a local write,
/// skipping those its state refuses. Returns the events.
fn write_random(engine: &mut Engine, seed: u64, keys: u64, n: usize) -> Vec<Event> {
    let mut rng = Rng::new(seed);
    let mut now = T0 + 1_000;
    let mut out = Vec::with_capacity(n);
    engine.set_tracking(false);
    while out.len() < n {
        now += rng.below(3);
        if let Ok(event) = engine.prepare(random_op(&mut rng, keys, false), now) {
            engine.apply(&event).expect("a prepared event applies");
            out.push(event);
        }
    }
    engine.set_tracking(true);
    out
}

/// "add_node 1805, update 2370, …": the op mix of a workload.
fn op_mix(events: &[Event]) -> String {
    let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
    for e in events {
        *counts.entry(e.op.kind()).or_default() += 1;
    }
    counts
        .iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One writer: the schema and `N` local events on top of it.
struct LocalWorkload {
    a: PeerId,
    schema: Vec<Event>,
    events: Vec<Event>,
}

fn local_workload() -> LocalWorkload {
    let a = peer("a");
    let schema = schema_events(&a);
    let mut writer = replay(&a, &[&schema]);
    let events = write_random(&mut writer, 1, LOCAL_KEYS, N);
    eprintln!("local workload: {}", op_mix(&events));
    LocalWorkload { a, schema, events }
}

/// Two writers that share the schema, then write `N` events each without exchanging.
struct ConcurrentWorkload {
    a: PeerId,
    schema: Vec<Event>,
    from_a: Vec<Event>,
    from_b: Vec<Event>,
}

fn concurrent_workload() -> ConcurrentWorkload {
    let (a, b) = (peer("a"), peer("b"));
    let schema = schema_events(&a);
    let from_a = write_random(&mut replay(&a, &[&schema]), 2, SHARED_KEYS, N);
    let from_b = write_random(&mut replay(&b, &[&schema]), 3, SHARED_KEYS, N);

    // Outside the timings: what the import does, and that both orders converge.
    let mut at_a = replay(&a, &[&schema, &from_a]);
    for e in &from_b {
        at_a.apply(e).expect("remote event applies");
    }
    let (batch, conflicts) = at_a.take_batch();
    let at_b = replay(&b, &[&schema, &from_b, &from_a]);
    assert_eq!(at_a.dump(), at_b.dump(), "the two replicas must converge");
    eprintln!(
        "concurrent workload: b's events at a give {} changes and {} conflicts; b wrote {}",
        batch.changes.len(),
        conflicts.len(),
        op_mix(&from_b)
    );
    ConcurrentWorkload {
        a,
        schema,
        from_a,
        from_b,
    }
}

fn resolve(c: &mut Criterion) {
    let local = local_workload();
    let shared = concurrent_workload();
    let mut group = c.benchmark_group("resolve");
    group.sample_size(10);
    group.throughput(Throughput::Elements(N as u64));

    group.bench_function("apply_local", |bench| {
        bench.iter_batched(
            || replay(&local.a, &[&local.schema]),
            |mut engine| {
                for e in &local.events {
                    engine.apply(e).expect("applies");
                }
                engine
            },
            BatchSize::LargeInput,
        )
    });

    group.bench_function("apply_remote_concurrent", |bench| {
        bench.iter_batched(
            || replay(&shared.a, &[&shared.schema, &shared.from_a]),
            |mut engine| {
                for e in &shared.from_b {
                    engine.apply(e).expect("applies");
                }
                engine
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

/// One conflict between `a` and `b`: both hold `User(1)`, then each writes `op(writer)` to it
/// without seeing the other's write.
struct OneConflict {
    a: PeerId,
    shared: Vec<Event>,
    first: Event,
    second: Event,
}

fn one_conflict(op: impl Fn(&str) -> Op) -> OneConflict {
    let (a, b) = (peer("a"), peer("b"));
    let mut shared = schema_events(&a);
    let mut at_a = replay(&a, &[&shared]);
    let add = at_a
        .prepare(
            Op::AddNode {
                table: "User".into(),
                props: vec![
                    ("id".into(), Value::Int64(1)),
                    ("name".into(), Value::String("ann".into())),
                ],
            },
            T0 + 100,
        )
        .expect("valid add");
    at_a.apply(&add).expect("applies");
    shared.push(add);
    let at_b = replay(&b, &[&shared]);
    let first = at_a.prepare(op("a"), T0 + 200).expect("valid op");
    let second = at_b.prepare(op("b"), T0 + 200).expect("valid op");

    // Outside the timings: the second event does make exactly one conflict.
    let mut engine = replay(&a, &[&shared, std::slice::from_ref(&first)]);
    engine.apply(&second).expect("applies");
    let (_, conflicts) = engine.take_batch();
    assert_eq!(
        conflicts.len(),
        1,
        "expected one conflict, got {conflicts:?}"
    );
    OneConflict {
        a,
        shared,
        first,
        second,
    }
}

fn user_1() -> Entity {
    Entity::Node(NodeRef {
        table: "User".into(),
        key: Value::Int64(1),
    })
}

fn conflict(c: &mut Criterion) {
    let lww = one_conflict(|writer| Op::Update {
        entity: user_1(),
        prop: "name".into(),
        value: Value::String(format!("set by {writer}")),
    });
    let counter = one_conflict(|writer| Op::Increment {
        entity: user_1(),
        prop: "stock".into(),
        delta: Value::Int64(if writer == "a" { -5 } else { -3 }),
    });
    let mut group = c.benchmark_group("conflict");
    group.sample_size(20);
    group.throughput(Throughput::Elements(1));

    for (name, case) in [("lww", &lww), ("counter", &counter)] {
        group.bench_function(BenchmarkId::new("per_conflict", name), |bench| {
            bench.iter_batched(
                || replay(&case.a, &[&case.shared, std::slice::from_ref(&case.first)]),
                |mut engine| {
                    engine.apply(&case.second).expect("applies");
                    engine
                },
                BatchSize::SmallInput,
            )
        });
    }
    // The same, up to the graph changes and the conflict record a store would receive.
    group.bench_function(
        BenchmarkId::new("per_conflict", "lww_with_take_batch"),
        |bench| {
            bench.iter_batched(
                || replay(&lww.a, &[&lww.shared, std::slice::from_ref(&lww.first)]),
                |mut engine| {
                    engine.apply(&lww.second).expect("applies");
                    let batch = engine.take_batch();
                    (engine, batch)
                },
                BatchSize::SmallInput,
            )
        },
    );

    let local = local_workload();
    group.sample_size(10);
    group.throughput(Throughput::Elements(N as u64));
    group.bench_function("take_batch", |bench| {
        bench.iter_batched(
            || {
                let mut engine = replay(&local.a, &[&local.schema]);
                for e in &local.events {
                    engine.apply(e).expect("applies");
                }
                engine
            },
            |mut engine| {
                let batch = engine.take_batch();
                (engine, batch)
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

/// The floor: `N` writes into a plain ordered map keyed like the engine's entities.
fn baseline(c: &mut Criterion) {
    let mut rng = Rng::new(4);
    let tables = ["user", "city", "follows"];
    let pairs: Vec<((String, i64), Value)> = (0..N)
        .map(|_| {
            let key = (
                tables[rng.below(3) as usize].to_string(),
                rng.below(LOCAL_KEYS) as i64,
            );
            (key, Value::Int64(rng.below(100) as i64))
        })
        .collect();
    let mut group = c.benchmark_group("baseline");
    group.sample_size(10);
    group.throughput(Throughput::Elements(N as u64));
    group.bench_function("btreemap_insert", |bench| {
        bench.iter_batched(
            || pairs.clone(),
            |pairs| {
                let mut map: BTreeMap<(String, i64), Value> = BTreeMap::new();
                for (k, v) in pairs {
                    map.insert(k, black_box(v));
                }
                map
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

/// Checking a client's sync point on a replica with a long log (100,000 events of four
/// peers, in-memory stores): the first check reads the log once to build the running
/// checksums (what every check cost before), later ones look up one entry per peer.
fn sync_point(c: &mut Criterion) {
    use kuzu_sync_engine::memory::MemoryGraphStore;
    use kuzu_sync_engine::{FixedClock, MemoryEventStore, Replica};

    const EVENTS: usize = 100_000;
    let peers = ["a", "b", "c", "d"].map(peer);
    let schema = schema_events(&peer("admin"));
    let mut engines: Vec<Engine> = peers.iter().map(|p| replay(p, &[&schema])).collect();
    let mut log: Vec<Event> = schema.clone();
    for _ in 0..(EVENTS / 1_000) {
        for (i, e) in engines.iter_mut().enumerate() {
            let evs = write_random(e, log.len() as u64 + i as u64, LOCAL_KEYS, 250);
            log.extend(evs);
        }
    }
    let mut r = Replica::create(
        MemoryEventStore::default(),
        MemoryGraphStore::new(),
        peer("hub"),
        Box::new(FixedClock(T0)),
    )
    .unwrap();
    r.import(log).unwrap();
    let sp = r
        .sync_point(&r.version_vector().clone())
        .unwrap()
        .expect("not compacted");
    let stores = r.into_parts();
    let open =
        || Replica::open(stores.0.clone(), stores.1.clone(), Box::new(FixedClock(T0))).unwrap();
    let mut group = c.benchmark_group("sync_point");
    group.sample_size(10);
    group.bench_function("first_check_reads_the_log", |bench| {
        bench.iter_batched(
            open,
            |r| assert!(r.verify_sync_point(black_box(&sp)).unwrap()),
            BatchSize::LargeInput,
        )
    });
    let warm = open();
    assert!(warm.verify_sync_point(&sp).unwrap());
    group.bench_function("later_check", |bench| {
        bench.iter(|| assert!(warm.verify_sync_point(black_box(&sp)).unwrap()))
    });
    group.finish();
}

criterion_group!(benches, resolve, conflict, baseline, sync_point);
criterion_main!(benches);
