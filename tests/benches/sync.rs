//! Live sync over loopback TCP into real Kuzu, against the naive way in the same run; and
//! what sync traffic costs on the wire. Run with
//! `cargo bench --profile dev -p kuzu-sync-tests --bench sync`.
//!
//! - `delta_sync_1000_of_100k_nodes/kuzu_sync_tcp`: a hub and a client replica (each Kuzu +
//!   SQLite) share a graph of 100,000 users; the hub changes 1,000 of them (a new score
//!   each, outside the timing) and the client syncs one-shot over loopback TCP: handshake
//!   from its stored sync point, version vectors, the 1,000 events, log append, apply to
//!   Kuzu, EOSE, acks, the new sync point.
//! - `delta_sync_1000_of_100k_nodes/naive_full_export_copy`: what replicating without a
//!   delta costs: the source exports its whole node table (100,000 users) to CSV
//!   (`COPY (MATCH …) TO`) and a fresh destination database `COPY`s it in.
//! - `offline_queue_10000_ops`: a replica that queued 10,000 writes offline reconnects:
//!   `sync_offline_changes` coalesces (nothing to coalesce here: 10,000 new nodes), sends
//!   them over loopback TCP, and the hub logs and applies them to its Kuzu database.
//! - Traffic (printed, not timed): compression ratio of the sync frames and wire bytes per
//!   op for 1,000 nodes + 5,000 edges, and for the LDBC SNB SF0.1 subset.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use kuzu_sync::protocol::frame::Encoder;
use kuzu_sync::protocol::net::{self, no_events, HubConfig, Shared};
use kuzu_sync::{KuzuConfig, KuzuReplica};
use kuzu_sync_engine::sync::{Message, SessionConfig};
use kuzu_sync_engine::{EdgeRef, Entity, Event, NodeRef, Op, Value, VersionVector};
use kuzu_sync_kuzu::kuzu::{Connection, Database, SystemConfig};

const DDL: &str =
    "CREATE NODE TABLE User(id INT64, name STRING, city STRING, score INT64, PRIMARY KEY (id))";
const NODES: i64 = 1000;
/// The graph both sides share in the delta sync.
const GRAPH: i64 = 100_000;

fn config() -> KuzuConfig {
    KuzuConfig {
        buffer_pool_bytes: 256 << 20,
        ..KuzuConfig::default()
    }
}

fn user(id: i64) -> Op {
    Op::AddNode {
        table: "User".into(),
        props: vec![
            ("id".into(), Value::Int64(id)),
            ("name".into(), Value::String(format!("user number {id}"))),
            (
                "city".into(),
                Value::String(["Oslo", "Rome", "Lima", "Pune"][id as usize % 4].into()),
            ),
            ("score".into(), Value::Int64(id * 7 % 1000)),
        ],
    }
}

fn schema_op(r: &mut KuzuReplica) {
    kuzu_sync::write_json_lines(r, &format!("{{\"op\":\"ddl\",\"cypher\":\"{DDL}\"}}")).unwrap();
}

fn plain_db(path: &Path) -> Database {
    Database::new(
        path,
        SystemConfig::default()
            .buffer_pool_size(256 << 20)
            .max_db_size(4 << 30)
            .max_num_threads(2),
    )
    .unwrap()
}

/// A change to 1,000 of the `GRAPH` users, the `round`th time: a new score each, 1,000
/// users further on each round.
fn changes(round: i64) -> Vec<Op> {
    (0..NODES)
        .map(|i| Op::Update {
            entity: Entity::Node(NodeRef {
                table: "User".into(),
                key: Value::Int64((round * NODES + i) % GRAPH),
            }),
            prop: "score".into(),
            value: Value::Int64(round * 10_000 + i),
        })
        .collect()
}

fn delta_sync(c: &mut Criterion) {
    let work = tempfile::tempdir().unwrap();
    // The hub and the client share a graph of 100,000 users, the client having synced it
    // once (outside the timing). Each timed sync moves the 1,000 users the hub changed
    // since the last one.
    let mut hub = kuzu_sync::init_with(&work.path().join("hub"), "hub", &config()).unwrap();
    schema_op(&mut hub);
    for chunk in (0..GRAPH).collect::<Vec<_>>().chunks(10_000) {
        hub.write(chunk.iter().copied().map(user).collect())
            .unwrap();
    }
    let shared = Shared::new(hub);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("tcp://{}", listener.local_addr().unwrap());
    let stop = Arc::new(AtomicBool::new(false));
    let server = {
        let (shared, stop) = (shared.clone(), stop.clone());
        std::thread::spawn(move || {
            net::serve(listener, shared, HubConfig::default(), stop, no_events()).unwrap()
        })
    };
    let client = Shared::new(
        kuzu_sync::init_with(&work.path().join("client"), "client", &config()).unwrap(),
    );
    let first = net::sync_once(&client, &url, SessionConfig::default(), no_events()).unwrap();
    assert_eq!(first.events_received, GRAPH as u64 + 1);

    // The naive way's source: a plain Kuzu database with the same 100,000 users.
    let src = plain_db(&work.path().join("plain-src.kuzu"));
    {
        let conn = Connection::new(&src).unwrap();
        conn.query(DDL).unwrap();
        conn.query(&format!(
            "UNWIND range(0, {}) AS i CREATE (:User {{id: i, name: 'user number ' + CAST(i AS STRING), \
             city: 'Oslo', score: i * 7 % 1000}})",
            GRAPH - 1
        ))
        .unwrap();
    }

    let mut g = c.benchmark_group("delta_sync_1000_of_100k_nodes");
    g.sample_size(20);
    g.measurement_time(Duration::from_secs(20));
    let mut round = 0;
    g.bench_function("kuzu_sync_tcp", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                round += 1;
                shared.lock().write(changes(round)).unwrap();
                let t = Instant::now();
                let report =
                    net::sync_once(&client, &url, SessionConfig::default(), no_events()).unwrap();
                total += t.elapsed();
                assert_eq!(report.events_received, NODES as u64);
            }
            total
        })
    });
    let mut n = 0;
    g.bench_function("naive_full_export_copy", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let src_conn = Connection::new(&src).unwrap();
            for _ in 0..iters {
                n += 1;
                let csv = work.path().join(format!("export{n}.csv"));
                let dst_path = work.path().join(format!("plain-dst{n}.kuzu"));
                let dst = plain_db(&dst_path);
                let dst_conn = Connection::new(&dst).unwrap();
                dst_conn.query(DDL).unwrap();
                let t = Instant::now();
                src_conn
                    .query(&format!(
                        "COPY (MATCH (u:User) RETURN u.id, u.name, u.city, u.score) TO '{}' (header=false)",
                        csv.display()
                    ))
                    .unwrap();
                dst_conn
                    .query(&format!("COPY User FROM '{}' (header=false)", csv.display()))
                    .unwrap();
                total += t.elapsed();
                drop(dst_conn);
                drop(dst);
                let _ = std::fs::remove_file(&csv);
                let _ = std::fs::remove_dir_all(&dst_path);
                let _ = std::fs::remove_file(&dst_path);
            }
            total
        })
    });
    g.finish();
    // Both sides hold the same users, the changes included.
    let probe = |r: &mut KuzuReplica| {
        let (_, rows) = r
            .graph()
            .query("MATCH (u:User) RETURN count(*), sum(u.score), max(u.score)")
            .unwrap();
        format!("{rows:?}")
    };
    let (at_hub, at_client) = (probe(&mut shared.lock()), probe(&mut client.lock()));
    assert_eq!(at_hub, at_client);
    println!("delta sync: {round} rounds; both sides: {at_client}");
    stop.store(true, Ordering::SeqCst);
    server.join().unwrap();
}

/// Raw (MessagePack) and wire bytes of sending `events` as sync frames.
fn traffic(events: &[Event]) -> (usize, usize) {
    let enc = Encoder {
        compress: true,
        ..Encoder::default()
    };
    let mut raw = 0;
    let mut wire = 0;
    for chunk in events.chunks(kuzu_sync_engine::sync::DEFAULT_BATCH) {
        let (frame, stats) = enc.encode(&Message::Events(chunk.to_vec())).unwrap();
        assert_eq!(stats.wire, frame.len());
        raw += stats.raw;
        wire += stats.wire;
    }
    (raw, wire)
}

fn report(name: &str, events: &[Event]) {
    let (raw, wire) = traffic(events);
    println!(
        "traffic {name}: {} events, {raw} bytes MessagePack, {wire} bytes on the wire, \
         compression {:.1} %, {:.1} wire bytes per op",
        events.len(),
        100.0 * (1.0 - wire as f64 / raw as f64),
        wire as f64 / events.len() as f64
    );
}

fn ldbc() -> PathBuf {
    let p = Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"))
        .join("../../shared/datasets/ldbc-sf01");
    assert!(p.is_dir(), "LDBC subset expected at {}", p.display());
    p.canonicalize().unwrap()
}

fn compression(c: &mut Criterion) {
    let work = tempfile::tempdir().unwrap();
    // 1,000 nodes and 5,000 edges.
    let mut r = kuzu_sync::init_with(&work.path().join("graph"), "a", &config()).unwrap();
    schema_op(&mut r);
    kuzu_sync::write_json_lines(
        &mut r,
        r#"{"op":"ddl","cypher":"CREATE REL TABLE Follows(FROM User TO User, since INT64)"}"#,
    )
    .unwrap();
    r.write((0..NODES).map(user).collect()).unwrap();
    let edge = |k: i64| {
        let node = |id: i64| NodeRef {
            table: "User".into(),
            key: Value::Int64(id),
        };
        Op::AddEdge {
            edge: EdgeRef {
                table: "Follows".into(),
                from: node(k % NODES),
                to: node((k * 7919 + 13) % NODES),
                key: String::new(),
            },
            props: vec![("since".into(), Value::Int64(2000 + k % 25))],
        }
    };
    r.write((0..5000).map(edge).collect()).unwrap();
    let graph = r.events_since(&VersionVector::new()).unwrap();
    report("1000 nodes + 5000 edges", &graph);
    drop(r);

    let ds = ldbc();
    let mut l = kuzu_sync::init_with(&work.path().join("ldbc"), "ldbc", &config()).unwrap();
    let schema = std::fs::read_to_string(ds.join("schema.cypher")).unwrap();
    let mut s = l.engine().schema().clone();
    let ops = kuzu_sync::ops::schema_ops(&schema, &mut s).unwrap();
    l.write(ops.into_iter().map(Op::Schema).collect()).unwrap();
    kuzu_sync::load::load_script(&mut l, &ds.join("copy.cypher"), 50_000, &mut |_, _| {}).unwrap();
    let ldbc_events = l.events_since(&VersionVector::new()).unwrap();
    report("LDBC SNB SF0.1 subset", &ldbc_events);
    drop(l);

    let mut g = c.benchmark_group("sync_frames");
    g.sample_size(10);
    g.bench_function("encode_1000_nodes_5000_edges_zstd", |b| {
        b.iter(|| traffic(&graph))
    });
    g.finish();
}

fn offline_queue(c: &mut Criterion) {
    let work = tempfile::tempdir().unwrap();
    let mut g = c.benchmark_group("offline_queue_10000_ops");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(40));
    let mut n = 0;
    g.bench_function("sync_offline_changes_tcp_into_kuzu_hub", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                n += 1;
                let mut hub =
                    kuzu_sync::init_with(&work.path().join(format!("hub{n}")), "hub", &config())
                        .unwrap();
                schema_op(&mut hub);
                let base = hub.events_since(&VersionVector::new()).unwrap();
                let shared = Shared::new(hub);
                let listener = TcpListener::bind("127.0.0.1:0").unwrap();
                let url = format!("tcp://{}", listener.local_addr().unwrap());
                let stop = Arc::new(AtomicBool::new(false));
                let server = {
                    let (shared, stop) = (shared.clone(), stop.clone());
                    std::thread::spawn(move || {
                        net::serve(listener, shared, HubConfig::default(), stop, no_events())
                            .unwrap()
                    })
                };
                let dir = work.path().join(format!("client{n}"));
                let mut r = kuzu_sync::init_with(&dir, &format!("c{n}"), &config()).unwrap();
                r.import(base).unwrap();
                r.go_offline().unwrap();
                r.write((0..10_000).map(user).collect()).unwrap();
                let client = Shared::new(r);
                let t = Instant::now();
                let report =
                    net::sync_offline_changes(&client, &url, SessionConfig::default(), no_events())
                        .unwrap();
                total += t.elapsed();
                assert_eq!(report.synced_operations, 10_000);
                stop.store(true, Ordering::SeqCst);
                server.join().unwrap();
            }
            total
        })
    });
    g.finish();
}

criterion_group!(benches, delta_sync, compression, offline_queue);
criterion_main!(benches);
