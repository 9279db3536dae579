//! Apply to real Kuzu through the engine, against plain Kuzu doing the same work in the same
//! run. Run with `cargo bench --profile dev -p kuzu-sync-tests --bench apply`.
//!
//! - `bulk`: the LDBC SNB SF0.1 subset (shared/datasets/ldbc-sf01), replicated to a fresh
//!   replica (bundle import: log append + apply), against plain `COPY` of the same files.
//! - `incremental`: batches of 1,000 changes (500 property updates, 500 inserts) into a
//!   100k-node graph, through `Replica::write` (event log append with fsync + apply), against
//!   plain Kuzu doing the same changes in one transaction, two ways: `UNWIND … CREATE` for
//!   the inserts and single-row prepared `MATCH {pk} SET` for the updates (what KUZU-NOTES
//!   measured fastest), and the same inserts with the updates through a stage table and one
//!   join (fastest since 2026-11-29, and what our store now does from 200 updates).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use kuzu_sync::{KuzuConfig, KuzuReplica};
use kuzu_sync_engine::{Entity, Event, NodeRef, Op, Value, VersionVector};
use kuzu_sync_kuzu::kuzu::{Connection, Database, LogicalType, SystemConfig, Value as KValue};

fn ldbc() -> PathBuf {
    let p = Path::new(&std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"))
        .join("../../shared/datasets/ldbc-sf01");
    assert!(p.is_dir(), "LDBC subset expected at {}", p.display());
    p.canonicalize().unwrap()
}

fn config() -> KuzuConfig {
    KuzuConfig {
        buffer_pool_bytes: 1 << 30,
        ..KuzuConfig::default()
    }
}

fn plain_db(path: &Path) -> Database {
    Database::new(
        path,
        SystemConfig::default()
            .buffer_pool_size(1 << 30)
            .max_db_size(16 << 30)
            .max_num_threads(2),
    )
    .unwrap()
}

fn statements(file: &Path) -> Vec<String> {
    std::fs::read_to_string(file)
        .unwrap()
        .split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

fn bulk(c: &mut Criterion) {
    let ds = ldbc();
    let work = tempfile::tempdir().unwrap();
    // The source replica, loaded once through the engine; its events are what a new replica
    // receives.
    let events: Vec<Event> = {
        let a = work.path().join("source");
        let mut r = kuzu_sync::init_with(&a, "source", &config()).unwrap();
        let schema = std::fs::read_to_string(ds.join("schema.cypher")).unwrap();
        let mut s = r.engine().schema().clone();
        let ops = kuzu_sync::ops::schema_ops(&schema, &mut s).unwrap();
        r.write(ops.into_iter().map(Op::Schema).collect()).unwrap();
        kuzu_sync::load::load_script(&mut r, &ds.join("copy.cypher"), 50_000, &mut |_, _| {})
            .unwrap();
        r.events_since(&VersionVector::new()).unwrap()
    };
    let copy: Vec<String> = statements(&ds.join("copy.cypher"))
        .into_iter()
        .map(|s| s.replace("FROM \"", &format!("FROM \"{}/", ds.display())))
        .collect();
    let schema = statements(&ds.join("schema.cypher"));

    let mut g = c.benchmark_group("bulk_ldbc_sf01_subset");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(60));
    let mut n = 0;
    g.bench_function("plain_kuzu_copy", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                n += 1;
                let db = plain_db(&work.path().join(format!("plain{n}.kuzu")));
                let conn = Connection::new(&db).unwrap();
                for s in &schema {
                    conn.query(s).unwrap();
                }
                let t = Instant::now();
                for s in &copy {
                    conn.query(s).unwrap();
                }
                total += t.elapsed();
            }
            total
        })
    });
    g.bench_function("kuzu_sync_import_bundle", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                n += 1;
                let dir = work.path().join(format!("replica{n}"));
                let mut r: KuzuReplica = kuzu_sync::init_with(&dir, "receiver", &config()).unwrap();
                let ev = events.clone();
                let t = Instant::now();
                r.import(ev).unwrap();
                total += t.elapsed();
            }
            total
        })
    });
    g.finish();
}

const BASE_NODES: i64 = 100_000;

fn incremental(c: &mut Criterion) {
    let work = tempfile::tempdir().unwrap();
    let ddl = "CREATE NODE TABLE User(id INT64, name STRING, score INT64, PRIMARY KEY (id))";
    // Both graphs start with the same 100k users.
    let mut replica =
        kuzu_sync::init_with(&work.path().join("replica"), "bench", &config()).unwrap();
    kuzu_sync::write_json_lines(
        &mut replica,
        &format!("{{\"op\":\"ddl\",\"cypher\":\"{ddl}\"}}"),
    )
    .unwrap();
    let add = |id: i64| Op::AddNode {
        table: "User".into(),
        props: vec![
            ("id".into(), Value::Int64(id)),
            ("name".into(), Value::String(format!("user{id}"))),
            ("score".into(), Value::Int64(0)),
        ],
    };
    for chunk in (0..BASE_NODES).collect::<Vec<_>>().chunks(50_000) {
        replica
            .write(chunk.iter().map(|&i| add(i)).collect())
            .unwrap();
    }
    let plain = plain_db(&work.path().join("plain.kuzu"));
    let conn = Connection::new(&plain).unwrap();
    conn.query(ddl).unwrap();
    conn.query(&format!(
        "UNWIND range(0, {}) AS i CREATE (:User {{id: i, name: 'user' + CAST(i AS STRING), score: 0}})",
        BASE_NODES - 1
    ))
    .unwrap();

    let mut g = c.benchmark_group("incremental_1000_changes_into_100k");
    g.sample_size(20);
    let mut next_id = BASE_NODES;
    let mut round = 0i64;
    g.bench_function("plain_kuzu_best_statements", |b| {
        let mut update = conn
            .prepare("MATCH (u:User {id: $id}) SET u.score = $s")
            .unwrap();
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                round += 1;
                let rows: Vec<KValue> = (0..500)
                    .map(|i| {
                        KValue::Struct(vec![
                            ("id".into(), KValue::Int64(next_id + i)),
                            (
                                "name".into(),
                                KValue::String(format!("user{}", next_id + i)),
                            ),
                            ("score".into(), KValue::Int64(0)),
                        ])
                    })
                    .collect();
                next_id += 500;
                let t = Instant::now();
                conn.query("BEGIN TRANSACTION").unwrap();
                let mut insert = conn
                    .prepare(
                        "UNWIND $rows AS r CREATE (:User {id: r.id, name: r.name, score: r.score})",
                    )
                    .unwrap();
                conn.execute(
                    &mut insert,
                    vec![(
                        "rows",
                        KValue::List(
                            LogicalType::Struct {
                                fields: vec![
                                    ("id".into(), LogicalType::Int64),
                                    ("name".into(), LogicalType::String),
                                    ("score".into(), LogicalType::Int64),
                                ],
                            },
                            rows,
                        ),
                    )],
                )
                .unwrap();
                for i in 0..500 {
                    let id = (round * 997 + i * 191) % BASE_NODES;
                    conn.execute(
                        &mut update,
                        vec![("id", KValue::Int64(id)), ("s", KValue::Int64(round))],
                    )
                    .unwrap();
                }
                conn.query("COMMIT").unwrap();
                total += t.elapsed();
            }
            total
        })
    });
    // The same changes with the fastest plain statements found for updates (ARCHITECTURE.md,
    // "Bulk updates through a stage table"): the new scores into a stage table, one join.
    // Plain Kuzu knows only `score` changed, so it stages and sets that column alone.
    conn.query("CREATE NODE TABLE Stage(id INT64, score INT64, PRIMARY KEY (id))")
        .unwrap();
    let mut next_id = BASE_NODES * 5;
    g.bench_function("plain_kuzu_stage_join", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                round += 1;
                let rows: Vec<KValue> = (0..500)
                    .map(|i| {
                        KValue::Struct(vec![
                            ("id".into(), KValue::Int64(next_id + i)),
                            (
                                "name".into(),
                                KValue::String(format!("user{}", next_id + i)),
                            ),
                            ("score".into(), KValue::Int64(0)),
                        ])
                    })
                    .collect();
                next_id += 500;
                let updates: Vec<KValue> = (0..500)
                    .map(|i| {
                        KValue::Struct(vec![
                            (
                                "id".into(),
                                KValue::Int64((round * 997 + i * 191) % BASE_NODES),
                            ),
                            ("score".into(), KValue::Int64(round)),
                        ])
                    })
                    .collect();
                let t = Instant::now();
                conn.query("BEGIN TRANSACTION").unwrap();
                let mut insert = conn
                    .prepare(
                        "UNWIND $rows AS r CREATE (:User {id: r.id, name: r.name, score: r.score})",
                    )
                    .unwrap();
                conn.execute(
                    &mut insert,
                    vec![(
                        "rows",
                        KValue::List(
                            LogicalType::Struct {
                                fields: vec![
                                    ("id".into(), LogicalType::Int64),
                                    ("name".into(), LogicalType::String),
                                    ("score".into(), LogicalType::Int64),
                                ],
                            },
                            rows,
                        ),
                    )],
                )
                .unwrap();
                let mut stage = conn
                    .prepare("UNWIND $rows AS r CREATE (:Stage {id: r.id, score: r.score})")
                    .unwrap();
                conn.execute(
                    &mut stage,
                    vec![(
                        "rows",
                        KValue::List(
                            LogicalType::Struct {
                                fields: vec![
                                    ("id".into(), LogicalType::Int64),
                                    ("score".into(), LogicalType::Int64),
                                ],
                            },
                            updates,
                        ),
                    )],
                )
                .unwrap();
                conn.query("MATCH (u:User), (s:Stage) WHERE u.id = s.id SET u.score = s.score")
                    .unwrap();
                conn.query("MATCH (s:Stage) DELETE s").unwrap();
                conn.query("COMMIT").unwrap();
                total += t.elapsed();
            }
            total
        })
    });
    let mut next_id = BASE_NODES * 10;
    g.bench_function("kuzu_sync_write", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                round += 1;
                let mut ops: Vec<Op> = (0..500).map(|i| add(next_id + i)).collect();
                next_id += 500;
                for i in 0..500 {
                    let id = (round * 997 + i * 191) % BASE_NODES;
                    ops.push(Op::Update {
                        entity: Entity::Node(NodeRef {
                            table: "User".into(),
                            key: Value::Int64(id),
                        }),
                        prop: "score".into(),
                        value: Value::Int64(round),
                    });
                }
                let t = Instant::now();
                replica.write(ops).unwrap();
                total += t.elapsed();
            }
            total
        })
    });
    g.finish();
}

criterion_group!(benches, incremental, bulk);
criterion_main!(benches);
