//! Memory of a replica: the engine's in-memory state beside Kuzu, for a replica of 100,000
//! entities (50,000 nodes and 50,000 edges), against the SPEC's 32 MB. Each figure is
//! measured in a fresh child process (this binary, re-run with `KS_MEMORY_CHILD` set) in
//! two ways. The growth of its resident set (`VmRSS` in /proc/self/status) includes the
//! allocator's overhead, but memory the child freed while loading its input (and the
//! engine then reuses) hides from it. The growth of the live Rust heap (a counting global
//! allocator, `cap`) is exact about the engine's own allocations, without the allocator's
//! overhead. Both are printed, plus the time to open
//! (replay) the replica under criterion. Then the replica is compacted: the time to compact,
//! the snapshot's size, the engine's memory when read from the snapshot, and the time to
//! open from the snapshot. Run with
//! `cargo bench --profile dev -p kuzu-sync-tests --bench memory`.

use std::alloc::System;
use std::time::Duration;

use cap::Cap;

use criterion::{criterion_group, Criterion};
use kuzu_sync::KuzuConfig;
use kuzu_sync_engine::{EdgeRef, Engine, NodeRef, Op, PeerId, Value, VersionVector};

#[global_allocator]
static HEAP: Cap<System> = Cap::new(System, usize::MAX);

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kb| kb.parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .expect("VmRSS")
}

const NODES: i64 = 50_000;

fn ops() -> Vec<Op> {
    let node = |id: i64| NodeRef {
        table: "User".into(),
        key: Value::Int64(id),
    };
    let mut ops: Vec<Op> = (0..NODES)
        .map(|id| Op::AddNode {
            table: "User".into(),
            props: vec![
                ("id".into(), Value::Int64(id)),
                ("name".into(), Value::String(format!("user {id}"))),
                ("score".into(), Value::Int64(id % 1000)),
            ],
        })
        .collect();
    ops.extend((0..NODES).map(|k| Op::AddEdge {
        edge: EdgeRef {
            table: "Follows".into(),
            from: node(k),
            to: node((k * 7919 + 1) % NODES),
            key: String::new(),
        },
        props: vec![("since".into(), Value::Int64(2000 + k % 25))],
    }));
    ops
}

fn memory(c: &mut Criterion) {
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("replica");
    let events = {
        let mut r = kuzu_sync::init_with(&dir, "m", &KuzuConfig::default()).unwrap();
        kuzu_sync::write_json_lines(
            &mut r,
            r#"{"op":"ddl","cypher":"CREATE NODE TABLE User(id INT64, name STRING, score INT64, PRIMARY KEY (id))"}
{"op":"ddl","cypher":"CREATE REL TABLE Follows(FROM User TO User, since INT64)"}"#,
        )
        .unwrap();
        r.write(ops()).unwrap();
        r.events_since(&VersionVector::new()).unwrap()
    };
    let log_bytes: u64 = events.iter().map(|e| e.encode().len() as u64).sum();
    drop(events);
    // (resident set growth, live heap growth), in bytes.
    let measure = |mode: &str| -> (u64, u64) {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .env("KS_MEMORY_CHILD", mode)
            .env("KS_MEMORY_DIR", &dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = String::from_utf8_lossy(&out.stdout);
        let mut it = out.split_whitespace().map(|n| n.parse::<u64>().unwrap());
        (it.next().unwrap(), it.next().unwrap())
    };
    let (engine_bytes, engine_live) = measure("engine");
    let (replica_bytes, _) = measure("replica");
    let mb = |b: u64| b as f64 / (1024.0 * 1024.0);
    println!(
        "memory, 50,000 nodes + 50,000 edges: engine state {:.1} MiB resident ({:.1} million \
         bytes), {:.1} MiB live heap; whole replica opened (engine replayed from SQLite, Kuzu \
         beside it) {:.1} MiB resident; SPEC limit 32 MB",
        mb(engine_bytes),
        engine_bytes as f64 / 1e6,
        mb(engine_live),
        mb(replica_bytes)
    );
    let mut g = c.benchmark_group("open_replica_100k_entities");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(20));
    g.bench_function("open_and_replay", |b| {
        b.iter(|| drop(kuzu_sync::open(&dir).unwrap()))
    });
    {
        let mut r = kuzu_sync::open(&dir).unwrap();
        let start = std::time::Instant::now();
        let report = r.compact().unwrap();
        let elapsed = start.elapsed();
        drop(r);
        let log = kuzu_sync::SqliteEventStore::open(&dir.join(kuzu_sync::EVENT_LOG)).unwrap();
        let at_rest = log.snapshot_bytes_at_rest().unwrap().expect("compacted");
        println!(
            "compaction of 100,002 events: {:.0} ms; snapshot {:.1} MiB, {:.1} MiB compressed \
             at rest (the log's events were {:.1} MiB); {} events left in the log",
            elapsed.as_secs_f64() * 1000.0,
            mb(report.snapshot_bytes),
            mb(at_rest),
            mb(log_bytes),
            report.remaining_events
        );
    }
    let (snapshot_bytes, snapshot_live) = measure("snapshot");
    println!(
        "memory, the same state read from the snapshot: engine state {:.1} MiB resident, \
         {:.1} MiB live heap",
        mb(snapshot_bytes),
        mb(snapshot_live)
    );
    g.bench_function("open_from_snapshot", |b| {
        b.iter(|| drop(kuzu_sync::open(&dir).unwrap()))
    });
    g.finish();
}

/// Growth of the resident set and of the live heap since `before`.
fn grown_since(before: (u64, usize)) -> (u64, u64) {
    (
        rss_bytes().saturating_sub(before.0),
        HEAP.allocated().saturating_sub(before.1) as u64,
    )
}

/// In a child process: one measurement, printed as two numbers of bytes.
fn child(mode: &str) {
    let dir = std::path::PathBuf::from(std::env::var("KS_MEMORY_DIR").unwrap());
    let grown = match mode {
        "engine" => {
            let log = kuzu_sync::SqliteEventStore::open(&dir.join(kuzu_sync::EVENT_LOG)).unwrap();
            let events = kuzu_sync_engine::ports::all_events(&log).unwrap();
            let before = (rss_bytes(), HEAP.allocated());
            let mut engine = Engine::new(PeerId::new("x").unwrap());
            engine.set_tracking(false);
            for e in &events {
                engine.apply(e).unwrap();
            }
            let grown = grown_since(before);
            assert_eq!(engine.visible_counts(), (NODES as usize, NODES as usize));
            grown
        }
        "snapshot" => {
            use kuzu_sync_engine::EventStore;
            let log = kuzu_sync::SqliteEventStore::open(&dir.join(kuzu_sync::EVENT_LOG)).unwrap();
            let snap = log.snapshot().unwrap().expect("compacted");
            let before = (rss_bytes(), HEAP.allocated());
            let (engine, _) =
                Engine::from_snapshot_state(PeerId::new("x").unwrap(), &snap.state).unwrap();
            let grown = grown_since(before);
            assert_eq!(engine.visible_counts(), (NODES as usize, NODES as usize));
            grown
        }
        _ => {
            let before = (rss_bytes(), HEAP.allocated());
            let r = kuzu_sync::open(&dir).unwrap();
            let grown = grown_since(before);
            drop(r);
            grown
        }
    };
    println!("{} {}", grown.0, grown.1);
}

criterion_group!(benches, memory);

fn main() {
    if let Ok(mode) = std::env::var("KS_MEMORY_CHILD") {
        return child(&mode);
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
