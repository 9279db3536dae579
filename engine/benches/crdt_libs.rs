//! The engine against the CRDT libraries a user would pick instead, Loro and Automerge, on
//! the same op streams, in one process and one criterion group (`crdt_libs`). Run with
//! `CARGO_TARGET_DIR=/tmp/target-h2 CARGO_INCREMENTAL=0 cargo bench --profile dev -p kuzu-sync-engine --bench crdt_libs`.
//!
//! Ours appears twice: `kuzu_sync_engine` is the pure engine (events prepared and applied,
//! then the graph batch taken), `kuzu_sync_replica` is a whole in-memory replica
//! (`Replica` over a `PackedEventStore` log and a `MemoryGraphStore` graph), which also logs
//! every event and materializes the graph a second time, as Kuzu would hold it.
//!
//! - `ldbc_rows/*`: the 183,448 rows of the LDBC SNB SF0.1 subset
//!   (shared/datasets/ldbc-sf01, read in place, never copied) applied as one stream by one
//!   writer. Ours: one `AddNode`/`AddEdge` op per row on the dataset's schema (created
//!   before the timing). Loro and Automerge: one map per table, one map per entity in it
//!   keyed by the row's key (an edge's key is `from->to`, `#n` for a repeated pair, as the
//!   CLI's `load` keys them), the row's properties written into it, one commit at the end.
//! - `merge_into_a/*`, `merge_into_b/*`: 10,000 entities written by a third peer and
//!   shared; peers a and b then each set the same two properties of every entity offline
//!   (20,000 writes each, every one a conflict). Timed: merging the other side's changes,
//!   given as the bytes that would arrive (ours: the MessagePack of the events, decoded in
//!   the timing; Loro: `export(updates)`; Automerge: `save_after`). Outside the timing the
//!   two merged states are asserted equal for every library, and to differ from both
//!   unmerged ones; the heap each merged side holds is counted with this binary's global
//!   allocator (`cap`).
//! - Wire bytes (printed, not timed): our sync frames of the same events (MessagePack of
//!   `sync::Message::Events` in chunks of `sync::DEFAULT_BATCH`, zstd level 3 from 512
//!   bytes, a 5-byte header: protocol/src/frame.rs's encoder, restated here because the
//!   protocol crate depends on this one) against Loro's `export` and Automerge's
//!   `save_incremental`/`save_after`, each also zstd-compressed for comparison.

use std::alloc::System;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use automerge::transaction::Transactable;
use automerge::{ActorId, AutoCommit, ObjType, ReadDoc, ScalarValue, ROOT};
use cap::Cap;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use kuzu_sync_engine::memory::MemoryGraphStore;
use kuzu_sync_engine::sync::{Message, DEFAULT_BATCH};
use kuzu_sync_engine::{
    ddl, text, Column, EdgeRef, Engine, Entity, Event, FixedClock, NodeRef, Op, PackedEventStore,
    PeerId, Replica, SchemaOp, TableDef, Value,
};
use loro::{ExportMode, LoroDoc, LoroMap, LoroValue};

#[global_allocator]
static HEAP: Cap<System> = Cap::new(System, usize::MAX);

/// Wall clock of every scenario.
const T0: u64 = 1_700_000_000_000;
/// Entities of the concurrent workload.
const SHARED: i64 = 10_000;

type Mem = Replica<PackedEventStore, MemoryGraphStore>;

fn peer(name: &str) -> PeerId {
    PeerId::new(name).expect("valid peer id")
}

// ---------------------------------------------------------------------------------------------
// The op streams
// ---------------------------------------------------------------------------------------------

/// One row as map writes: the entity's table, its key as text, its properties.
#[derive(Clone, Debug)]
struct Row {
    table: String,
    key: String,
    props: Vec<(String, Value)>,
}

/// A stream both ways: the engine's ops and the same writes as map rows.
struct Stream {
    schema: Vec<SchemaOp>,
    ops: Vec<Op>,
    rows: Vec<Row>,
}

impl Stream {
    fn property_writes(&self) -> usize {
        self.rows.iter().map(|r| r.props.len()).sum()
    }
}

fn ldbc_dir() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/datasets/ldbc-sf01");
    assert!(p.is_dir(), "LDBC subset expected at {}", p.display());
    p
}

/// A CSV field as a value of `ty` (an empty field is NULL, as Kuzu's COPY reads it).
fn field(s: &str, ty: &kuzu_sync_engine::DataType, at: &str) -> Value {
    if s.is_empty() {
        return Value::Null;
    }
    text::parse_value(s, ty).unwrap_or_else(|e| panic!("{at}: {s:?}: {e}"))
}

/// The LDBC subset: schema.cypher's tables, and copy.cypher's files read as rows.
fn ldbc() -> Stream {
    let dir = ldbc_dir();
    let read = |name: &str| {
        std::fs::read_to_string(dir.join(name))
            .unwrap_or_else(|e| panic!("{}: {e}", dir.join(name).display()))
    };
    let schema: Vec<SchemaOp> = ddl::parse_ddl(&read("schema.cypher"))
        .expect("the LDBC schema parses")
        .into_iter()
        .map(|d| d.op)
        .collect();
    let tables: HashMap<String, TableDef> = schema
        .iter()
        .map(|op| match op {
            SchemaOp::CreateNodeTable(n) => (n.name.clone(), TableDef::Node(n.clone())),
            SchemaOp::CreateRelTable(r) => (r.name.clone(), TableDef::Rel(r.clone())),
            other => panic!("unexpected schema op {other:?}"),
        })
        .collect();
    let key_type = |table: &str| match &tables[table] {
        TableDef::Node(n) => n.key_column().expect("a key column").ty.clone(),
        TableDef::Rel(_) => panic!("{table} is not a node table"),
    };
    let (mut ops, mut rows) = (Vec::new(), Vec::new());
    let mut seen: HashMap<(String, String), usize> = HashMap::new();
    for line in read("copy.cypher")
        .lines()
        .filter(|l| l.starts_with("COPY "))
    {
        let table = line.split_whitespace().nth(1).expect("COPY table");
        let file = line.split('"').nth(1).expect("COPY … FROM \"file\"");
        let csv = read(file);
        for (i, record) in csv.lines().skip(1).enumerate() {
            let at = format!("{file} row {}", i + 1);
            let fields: Vec<&str> = record.split('|').collect();
            let named = |cols: &[Column], fields: &[&str]| -> Vec<(String, Value)> {
                assert_eq!(cols.len(), fields.len(), "{at}: {record:?}");
                cols.iter()
                    .zip(fields)
                    .map(|(c, s)| (c.name.clone(), field(s, &c.ty, &at)))
                    .collect()
            };
            match &tables[table] {
                TableDef::Node(n) => {
                    let props = named(&n.columns, &fields);
                    let key_at = n.columns.iter().position(|c| c.name == n.primary_key);
                    rows.push(Row {
                        table: n.name.clone(),
                        key: fields[key_at.expect("key column")].to_string(),
                        props: props.clone(),
                    });
                    ops.push(Op::AddNode {
                        table: n.name.clone(),
                        props,
                    });
                }
                TableDef::Rel(r) => {
                    let (f, t) = &r.connections[0];
                    let props = named(&r.columns, &fields[2..]);
                    let pair = format!("{}->{}", fields[0], fields[1]);
                    let n = seen.entry((r.name.clone(), pair.clone())).or_insert(0);
                    *n += 1;
                    let key = if *n == 1 {
                        String::new()
                    } else {
                        format!("#{n}")
                    };
                    rows.push(Row {
                        table: r.name.clone(),
                        key: format!("{pair}{key}"),
                        props: props.clone(),
                    });
                    ops.push(Op::AddEdge {
                        edge: EdgeRef {
                            table: r.name.clone(),
                            from: NodeRef {
                                table: f.clone(),
                                key: field(fields[0], &key_type(f), &at),
                            },
                            to: NodeRef {
                                table: t.clone(),
                                key: field(fields[1], &key_type(t), &at),
                            },
                            key,
                        },
                        props,
                    });
                }
            }
        }
    }
    Stream { schema, ops, rows }
}

/// The concurrent workload's shared part: `SHARED` items with a name and a score.
fn items() -> Stream {
    let schema = ddl::parse_ddl(
        "CREATE NODE TABLE Item(id INT64, name STRING, score INT64, PRIMARY KEY (id))",
    )
    .expect("parses")
    .into_iter()
    .map(|d| d.op)
    .collect();
    let rows: Vec<Row> = (0..SHARED)
        .map(|id| Row {
            table: "Item".into(),
            key: id.to_string(),
            props: vec![
                ("id".into(), Value::Int64(id)),
                ("name".into(), Value::String(format!("item {id}"))),
                ("score".into(), Value::Int64(id % 100)),
            ],
        })
        .collect();
    let ops = rows
        .iter()
        .map(|r| Op::AddNode {
            table: r.table.clone(),
            props: r.props.clone(),
        })
        .collect();
    Stream { schema, ops, rows }
}

/// One side's offline writes: both properties of every item, as `(key, prop, value)`. Side b
/// goes through the items in reverse order, so under every library's last-writer-wins (each
/// orders concurrent writes by a logical clock first) a's writes win on half the items and
/// b's on the other half: the merge changes both sides.
fn side_writes(side: &str) -> Vec<(i64, &'static str, Value)> {
    let mut out = Vec::with_capacity(2 * SHARED as usize);
    for i in 0..SHARED {
        let id = if side == "a" { i } else { SHARED - 1 - i };
        let factor = if side == "a" { 3 } else { 7 };
        out.push((id, "name", Value::String(format!("{side} renamed {id}"))));
        out.push((id, "score", Value::Int64(id * factor)));
    }
    out
}

fn item_update(id: i64, prop: &str, value: Value) -> Op {
    Op::Update {
        entity: Entity::Node(NodeRef {
            table: "Item".into(),
            key: Value::Int64(id),
        }),
        prop: prop.into(),
        value,
    }
}

// ---------------------------------------------------------------------------------------------
// Ours
// ---------------------------------------------------------------------------------------------

/// Prepares and applies `ops` on `engine` as local writes; returns the events.
fn write_all(engine: &mut Engine, ops: Vec<Op>, now: &mut u64) -> Vec<Event> {
    let mut out = Vec::with_capacity(ops.len());
    for op in ops {
        *now += 1;
        let e = engine.prepare(op, *now).expect("a valid op");
        engine.apply(&e).expect("a prepared event applies");
        out.push(e);
    }
    out
}

/// A fresh engine of `me` that holds `history`, replayed silently (as on open).
fn replay(me: &PeerId, history: &[&[Event]]) -> Engine {
    let mut engine = Engine::new(me.clone());
    engine.set_tracking(false);
    for e in history.iter().flat_map(|part| part.iter()) {
        engine.apply(e).expect("replayed event applies");
    }
    engine.set_tracking(true);
    engine
}

fn replica(me: &str) -> Mem {
    Replica::create(
        PackedEventStore::new(),
        MemoryGraphStore::new(),
        peer(me),
        Box::new(FixedClock(T0)),
    )
    .expect("an empty replica")
}

/// The sync frames that carry `events`: (MessagePack bytes, bytes on the wire).
fn frames(events: &[Event]) -> (usize, usize) {
    let (mut raw, mut wire) = (0, 0);
    for chunk in events.chunks(DEFAULT_BATCH) {
        let body = rmp_serde::to_vec(&Message::Events(chunk.to_vec())).expect("serializes");
        let z = zstd::bulk::compress(&body, 3).expect("zstd");
        raw += body.len();
        wire += 5 + if body.len() >= 512 && z.len() < body.len() {
            z.len()
        } else {
            body.len()
        };
    }
    (raw, wire)
}

/// `events` as the bodies of the sync messages that carry them (before compression).
fn encode_events(events: &[Event]) -> Vec<Vec<u8>> {
    events
        .chunks(DEFAULT_BATCH)
        .map(|chunk| rmp_serde::to_vec(&Message::Events(chunk.to_vec())).expect("serializes"))
        .collect()
}

fn decode_events(messages: &[Vec<u8>]) -> Vec<Event> {
    let mut out = Vec::new();
    for bytes in messages {
        match rmp_serde::from_slice(bytes).expect("decodes") {
            Message::Events(events) => out.extend(events),
            other => panic!("not events: {other:?}"),
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Loro and Automerge
// ---------------------------------------------------------------------------------------------

fn loro_value(v: &Value) -> LoroValue {
    match v {
        Value::Null => LoroValue::Null,
        Value::Int64(i) => LoroValue::I64(*i),
        Value::Int32(i) => LoroValue::I64(*i as i64),
        Value::String(s) => LoroValue::from(s.as_str()),
        other => panic!("no Loro value for {other:?} in these workloads"),
    }
}

fn am_value(v: &Value) -> ScalarValue {
    match v {
        Value::Null => ScalarValue::Null,
        Value::Int64(i) => ScalarValue::Int(*i),
        Value::Int32(i) => ScalarValue::Int(*i as i64),
        Value::String(s) => ScalarValue::Str(s.as_str().into()),
        other => panic!("no Automerge value for {other:?} in these workloads"),
    }
}

/// Rows with their values already in each library's type, so the timings hold only the
/// libraries' own work.
struct LibRows {
    loro: Vec<LibRow<LoroValue>>,
    am: Vec<LibRow<ScalarValue>>,
}

/// (table, key, properties) in one library's value type.
type LibRow<V> = (String, String, Vec<(String, V)>);

fn lib_rows(rows: &[Row]) -> LibRows {
    LibRows {
        loro: rows
            .iter()
            .map(|r| {
                let props = r.props.iter().map(|(k, v)| (k.clone(), loro_value(v)));
                (r.table.clone(), r.key.clone(), props.collect())
            })
            .collect(),
        am: rows
            .iter()
            .map(|r| {
                let props = r.props.iter().map(|(k, v)| (k.clone(), am_value(v)));
                (r.table.clone(), r.key.clone(), props.collect())
            })
            .collect(),
    }
}

/// Writes the rows into `doc`: a map per table, a map per entity, its properties.
fn loro_write(doc: &LoroDoc, rows: &LibRows) {
    let mut tables: HashMap<&str, LoroMap> = HashMap::new();
    for (table, key, props) in &rows.loro {
        let t = tables
            .entry(table.as_str())
            .or_insert_with(|| doc.get_map(table.as_str()));
        let m = t.insert_container(key, LoroMap::new()).expect("insert");
        for (k, v) in props {
            m.insert(k, v.clone()).expect("insert");
        }
    }
    doc.commit();
}

fn am_write(doc: &mut AutoCommit, rows: &LibRows) {
    let mut tables: HashMap<&str, automerge::ObjId> = HashMap::new();
    for (table, key, props) in &rows.am {
        let t = match tables.get(table.as_str()) {
            Some(t) => t.clone(),
            None => {
                let t = doc
                    .put_object(ROOT, table.as_str(), ObjType::Map)
                    .expect("put");
                tables.insert(table, t.clone());
                t
            }
        };
        let m = doc.put_object(&t, key.as_str(), ObjType::Map).expect("put");
        for (k, v) in props {
            doc.put(&m, k.as_str(), v.clone()).expect("put");
        }
    }
    doc.commit();
}

fn loro_doc(id: u64) -> LoroDoc {
    let doc = LoroDoc::new();
    doc.set_peer_id(id).expect("peer id");
    doc
}

fn am_doc(id: u8) -> AutoCommit {
    AutoCommit::new().with_actor(ActorId::from(vec![id; 16]))
}

/// Entity counts held by a Loro or Automerge document: (tables, entities).
fn loro_counts(doc: &LoroDoc) -> (usize, usize) {
    match doc.get_deep_value() {
        LoroValue::Map(tables) => (
            tables.len(),
            tables
                .values()
                .map(|t| match t {
                    LoroValue::Map(m) => m.len(),
                    _ => 0,
                })
                .sum(),
        ),
        other => panic!("root is {other:?}"),
    }
}

fn am_counts(doc: &AutoCommit) -> (usize, usize) {
    let tables: Vec<String> = doc.keys(ROOT).collect();
    let entities = tables
        .iter()
        .map(|t| {
            let (_, id) = doc.get(ROOT, t.as_str()).expect("get").expect("table");
            doc.length(&id)
        })
        .sum();
    (tables.len(), entities)
}

fn zstd_len(bytes: &[u8]) -> usize {
    zstd::bulk::compress(bytes, 3).expect("zstd").len()
}

/// The live heap `build`'s result holds: allocations it made and did not free.
fn heap_of<T>(build: impl FnOnce() -> T) -> (T, usize) {
    let before = HEAP.allocated();
    let out = build();
    (out, HEAP.allocated().saturating_sub(before))
}

fn mib(bytes: usize) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

/// CPU time of this thread so far (utime + stime from /proc, in 10 ms ticks). Unlike wall
/// time it leaves out what other processes take on a busy machine, so it compares runs
/// made under different loads. Zero where /proc is not there.
fn thread_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    // Fields after the command name: state is field 3, utime 14, stime 15.
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Duration::from_millis((tick(11) + tick(12)) * 10)
}

/// Mean (CPU, wall) time of `run` over `passes` passes, each on a fresh `setup()` (not
/// timed); the output is dropped outside the timing.
fn cpu_mean<I, O>(
    passes: u32,
    mut setup: impl FnMut() -> I,
    mut run: impl FnMut(I) -> O,
) -> (Duration, Duration) {
    let (mut cpu, mut wall) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..passes {
        let input = setup();
        let (c, w) = (thread_cpu(), Instant::now());
        let out = run(input);
        wall += w.elapsed();
        cpu += thread_cpu().saturating_sub(c);
        drop(out);
    }
    (cpu / passes, wall / passes)
}

fn print_cpu(what: &str, passes: u32, rows: &[(&str, (Duration, Duration))]) {
    let loro = rows
        .iter()
        .find(|(who, _)| *who == "loro")
        .map(|(_, (c, _))| c.as_secs_f64());
    let cells: Vec<String> = rows
        .iter()
        .map(|(who, (cpu, wall))| {
            let ratio = loro.map_or(String::new(), |l| {
                format!(", {:.2}x Loro's", cpu.as_secs_f64() / l)
            });
            format!("{who} {cpu:.1?} CPU ({wall:.1?} wall{ratio})")
        })
        .collect();
    eprintln!(
        "cpu time {what} (this thread, mean of {passes} passes): {}",
        cells.join("; ")
    );
}

/// Where the engine's time goes on a stream, measured once outside criterion: prepare and
/// apply per op kind, the same apply with change tracking off, `take_batch`, and dropping
/// the batch.
fn breakdown(me: &PeerId, schema_events: &[Event], ops: &[Op]) {
    let mut e = replay(me, &[schema_events]);
    let mut now = T0 + 1_000;
    let mut prepare = Duration::ZERO;
    let mut apply: HashMap<&str, (usize, Duration)> = HashMap::new();
    let mut events = Vec::with_capacity(ops.len());
    let total = Instant::now();
    for op in ops.iter().cloned() {
        now += 1;
        let kind = op.kind();
        let t = Instant::now();
        let ev = e.prepare(op, now).expect("a valid row");
        prepare += t.elapsed();
        let t = Instant::now();
        e.apply(&ev).expect("applies");
        let slot = apply.entry(kind).or_default();
        slot.0 += 1;
        slot.1 += t.elapsed();
        events.push(ev);
    }
    let t = Instant::now();
    let batch = e.take_batch();
    let take = t.elapsed();
    let t = Instant::now();
    drop(batch);
    let drop_batch = t.elapsed();
    let total = total.elapsed();
    let mut silent = replay(me, &[schema_events]);
    silent.set_tracking(false);
    let t = Instant::now();
    for ev in &events {
        silent.apply(ev).expect("applies");
    }
    let untracked = t.elapsed();
    let mut kinds: Vec<_> = apply.into_iter().collect();
    kinds.sort();
    let per_kind = kinds
        .iter()
        .map(|(k, (n, d))| {
            format!(
                "{k} {n} in {d:.2?} ({:.2} µs each)",
                d.as_secs_f64() * 1e6 / *n as f64
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    eprintln!(
        "engine breakdown (one pass, {} ops, {total:.2?} in all): prepare {prepare:.2?}; \
         apply {per_kind}; the same applies with tracking off {untracked:.2?}; \
         take_batch {take:.2?}; dropping the batch {drop_batch:.2?}",
        ops.len()
    );
}

/// Where the engine's merge time goes, measured once outside criterion: decoding the
/// remote side's messages, applying its events (conflicts resolved), `take_batch` (graph
/// changes and conflict records), dropping them.
fn merge_breakdown(me: &PeerId, history: &[&[Event]], remote: &[Vec<u8>]) {
    let mut e = replay(me, history);
    let t = Instant::now();
    let events = decode_events(remote);
    let decode = t.elapsed();
    let t = Instant::now();
    for ev in &events {
        e.apply(ev).expect("applies");
    }
    let apply = t.elapsed();
    let t = Instant::now();
    let (batch, conflicts) = e.take_batch();
    let take = t.elapsed();
    let (changes, records) = (batch.changes.len(), conflicts.len());
    let t = Instant::now();
    drop((batch, conflicts));
    let drop_batch = t.elapsed();
    eprintln!(
        "engine merge breakdown (one pass, {} events): decode {decode:.2?}; apply {apply:.2?}; \
         take_batch {take:.2?} ({changes} graph changes, {records} conflict records); \
         dropping them {drop_batch:.2?}",
        events.len()
    );
}

// ---------------------------------------------------------------------------------------------
// The benchmarks
// ---------------------------------------------------------------------------------------------

fn crdt_libs(c: &mut Criterion) {
    let t = Instant::now();
    let data = ldbc();
    let rows = lib_rows(&data.rows);
    let n = data.ops.len();
    let writes = data.property_writes();
    eprintln!(
        "LDBC SNB SF0.1 subset: {n} rows ({writes} property writes), read in {:.2?}",
        t.elapsed()
    );

    // The reference results, outside the timings: every library holds every entity.
    let a = peer("a");
    let mut engine = Engine::new(a.clone());
    let mut now = T0;
    let schema_events = write_all(
        &mut engine,
        data.schema.iter().cloned().map(Op::Schema).collect(),
        &mut now,
    );
    let (engine_ldbc, engine_heap) = heap_of(|| {
        let mut e = replay(&a, &[&schema_events]);
        let mut now = T0 + 1_000;
        let events = write_all(&mut e, data.ops.clone(), &mut now);
        drop(e.take_batch());
        (e, events)
    });
    let (engine, row_events) = engine_ldbc;
    let (nodes, edges) = engine.visible_counts();
    assert_eq!(nodes + edges, n, "the engine holds every row");
    drop(engine);
    let (loro, loro_heap) = heap_of(|| {
        let doc = loro_doc(1);
        loro_write(&doc, &rows);
        doc
    });
    assert_eq!(loro_counts(&loro).1, n, "Loro holds every row");
    let (mut am, am_heap) = heap_of(|| {
        let mut doc = am_doc(1);
        am_write(&mut doc, &rows);
        doc
    });
    assert_eq!(am_counts(&am).1, n, "Automerge holds every row");
    let (raw, wire) = frames(&row_events);
    let loro_bytes = loro.export(ExportMode::all_updates()).expect("export");
    let am_bytes = am.save_incremental();
    let am_doc_bytes = am.save();
    eprintln!(
        "ldbc heap after the stream: engine {} (state only, no log), Loro {}, Automerge {}",
        mib(engine_heap),
        mib(loro_heap),
        mib(am_heap)
    );
    for (who, bytes, zstd) in [
        ("kuzu-sync frames (MessagePack)", raw, wire),
        (
            "Loro export(all_updates)",
            loro_bytes.len(),
            zstd_len(&loro_bytes),
        ),
        (
            "Automerge save_incremental",
            am_bytes.len(),
            zstd_len(&am_bytes),
        ),
        (
            "Automerge save (whole doc)",
            am_doc_bytes.len(),
            zstd_len(&am_doc_bytes),
        ),
    ] {
        eprintln!(
            "wire ldbc {who}: {bytes} bytes ({:.2} per row); zstd-3: {zstd} bytes ({:.2} per row)",
            bytes as f64 / n as f64,
            zstd as f64 / n as f64
        );
    }
    drop((loro, am, row_events));
    breakdown(&a, &schema_events, &data.ops);
    let passes = 3;
    let engine_pass = |tracked: bool| {
        cpu_mean(
            passes,
            || {
                let mut e = replay(&a, &[&schema_events]);
                e.set_tracking(tracked);
                (e, data.ops.clone())
            },
            |(mut engine, ops)| {
                let mut now = T0 + 1_000;
                for op in ops {
                    now += 1;
                    let e = engine.prepare(op, now).expect("a valid row");
                    engine.apply(&e).expect("applies");
                }
                let batch = tracked.then(|| engine.take_batch());
                (engine, batch)
            },
        )
    };
    let tracked = engine_pass(true);
    let untracked = engine_pass(false);
    let lo = cpu_mean(
        passes,
        || loro_doc(1),
        |doc| {
            loro_write(&doc, &rows);
            doc
        },
    );
    print_cpu(
        "ldbc_rows",
        passes,
        &[
            ("kuzu_sync_engine", tracked),
            ("kuzu_sync_engine_untracked", untracked),
            ("loro", lo),
        ],
    );

    let mut group = c.benchmark_group("crdt_libs");
    group.sample_size(10);
    group.warm_up_time(std::time::Duration::from_secs(1));
    group.throughput(Throughput::Elements(n as u64));
    group.bench_function("ldbc_rows/kuzu_sync_engine", |bench| {
        bench.iter_batched(
            || (replay(&a, &[&schema_events]), data.ops.clone()),
            |(mut engine, ops)| {
                let mut now = T0 + 1_000;
                for op in ops {
                    now += 1;
                    let e = engine.prepare(op, now).expect("a valid row");
                    engine.apply(&e).expect("applies");
                }
                let batch = engine.take_batch();
                (engine, batch)
            },
            BatchSize::PerIteration,
        )
    });
    // The same without change tracking (as on open): the engine's CRDT state alone, no
    // graph batch, which is the closest to what the libraries do.
    group.bench_function("ldbc_rows/kuzu_sync_engine_untracked", |bench| {
        bench.iter_batched(
            || {
                let mut engine = replay(&a, &[&schema_events]);
                engine.set_tracking(false);
                (engine, data.ops.clone())
            },
            |(mut engine, ops)| {
                let mut now = T0 + 1_000;
                for op in ops {
                    now += 1;
                    let e = engine.prepare(op, now).expect("a valid row");
                    engine.apply(&e).expect("applies");
                }
                engine
            },
            BatchSize::PerIteration,
        )
    });
    group.bench_function("ldbc_rows/kuzu_sync_replica", |bench| {
        bench.iter_batched(
            || {
                let mut r = replica("a");
                r.write(data.schema.iter().cloned().map(Op::Schema).collect())
                    .expect("schema");
                (r, data.ops.clone())
            },
            |(mut r, ops)| {
                r.write(ops).expect("rows");
                r
            },
            BatchSize::PerIteration,
        )
    });
    group.bench_function("ldbc_rows/loro", |bench| {
        bench.iter_batched(
            || loro_doc(1),
            |doc| {
                loro_write(&doc, &rows);
                doc
            },
            BatchSize::PerIteration,
        )
    });
    group.bench_function("ldbc_rows/automerge", |bench| {
        bench.iter_batched(
            || am_doc(1),
            |mut doc| {
                am_write(&mut doc, &rows);
                doc
            },
            BatchSize::PerIteration,
        )
    });
    drop(rows);
    drop(data);

    concurrent(&mut group);
    group.finish();
}

/// Two peers over a shared base: each writes the same properties offline, then each merges
/// the other's changes.
fn concurrent(group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    let base = items();
    let base_rows = lib_rows(&base.rows);
    let writes = |side: &str| side_writes(side);
    let (wa, wb) = (writes("a"), writes("b"));
    let ops_of = |w: &[(i64, &str, Value)]| -> Vec<Op> {
        w.iter()
            .map(|(id, p, v)| item_update(*id, p, v.clone()))
            .collect()
    };
    let ups = wa.len();

    // Ours: the base by a third peer, then each side's writes, as events.
    let origin = peer("origin");
    let (pa, pb) = (peer("a"), peer("b"));
    let mut o = Engine::new(origin.clone());
    let mut now = T0;
    let mut base_events = write_all(
        &mut o,
        base.schema.iter().cloned().map(Op::Schema).collect(),
        &mut now,
    );
    base_events.extend(write_all(&mut o, base.ops.clone(), &mut now));
    let base_vv = o.version_vector().clone();
    // Each side is a replica that imported the base and wrote its ops (one atomic write);
    // its events are the changes it sends. Rebuilding a side gives the same events (a fixed
    // clock), so the engine rows replay exactly these.
    let replica_side = |me: &str, own: &[(i64, &str, Value)]| {
        let mut r = replica(me);
        r.import(base_events.clone()).expect("base");
        r.write(ops_of(own)).expect("own writes");
        r
    };
    let side_events = |me: &str, own: &[(i64, &str, Value)]| {
        let events = replica_side(me, own)
            .events_since(&base_vv)
            .expect("events");
        assert_eq!(events.len(), own.len());
        events
    };
    let (ea, eb) = (side_events("a", &wa), side_events("b", &wb));
    let (bytes_a, bytes_b) = (encode_events(&ea), encode_events(&eb));

    // Loro: the base by peer 0, exported as updates; each side imports it and writes.
    let lo = loro_doc(0);
    loro_write(&lo, &base_rows);
    let loro_base = lo.export(ExportMode::all_updates()).expect("export");
    let loro_base_vv = lo.oplog_vv();
    let loro_side = |id: u64, w: &[(i64, &str, Value)]| {
        let doc = loro_doc(id);
        doc.import(&loro_base).expect("import");
        let items = doc.get_map("Item");
        for (key, p, v) in w {
            let m = match items.get(&key.to_string()) {
                Some(loro::ValueOrContainer::Container(loro::Container::Map(m))) => m,
                other => panic!("item {key}: {other:?}"),
            };
            m.insert(p, loro_value(v)).expect("insert");
        }
        doc.commit();
        doc
    };
    let loro_changes = |doc: &LoroDoc| {
        doc.export(ExportMode::updates(&loro_base_vv))
            .expect("export")
    };

    // Automerge: likewise, with the base saved by actor 0.
    let mut ao = am_doc(0);
    am_write(&mut ao, &base_rows);
    let am_base = ao.save();
    let am_base_heads = ao.get_heads();
    let am_side = |id: u8, w: &[(i64, &str, Value)]| {
        let mut doc = am_doc(id);
        doc.load_incremental(&am_base).expect("load");
        let (_, items) = doc.get(ROOT, "Item").expect("get").expect("Item");
        let ids: Vec<automerge::ObjId> = (0..SHARED)
            .map(|k| {
                doc.get(&items, k.to_string().as_str())
                    .expect("get")
                    .expect("item")
                    .1
            })
            .collect();
        for (key, p, v) in w {
            doc.put(&ids[*key as usize], *p, am_value(v)).expect("put");
        }
        doc.commit();
        doc
    };

    // Outside the timings: each side merged both ways agrees, and differs from both unmerged
    // sides; the heap each merged side holds.
    let (ours_a, heap_ours_a) = heap_of(|| {
        let mut e = replay(&pa, &[&base_events, &ea]);
        for ev in decode_events(&bytes_b) {
            e.apply(&ev).expect("applies");
        }
        let (_, conflicts) = e.take_batch();
        eprintln!(
            "concurrent: b's changes at a make {} conflicts",
            conflicts.len()
        );
        e
    });
    let (ours_b, heap_ours_b) = heap_of(|| {
        let mut e = replay(&pb, &[&base_events, &eb]);
        for ev in decode_events(&bytes_a) {
            e.apply(&ev).expect("applies");
        }
        drop(e.take_batch());
        e
    });
    let unmerged_a = replay(&pa, &[&base_events, &ea]).dump();
    let unmerged_b = replay(&pb, &[&base_events, &eb]).dump();
    let merged = ours_a.dump();
    assert!(merged == ours_b.dump(), "ours: the two sides converge");
    assert!(merged != unmerged_a, "ours: the merge changed a");
    assert!(merged != unmerged_b, "ours: the merge changed b");
    drop((ours_a, ours_b));
    let (mut rep_a, heap_rep_a) = heap_of(|| {
        let mut r = replica_side("a", &wa);
        r.import(decode_events(&bytes_b)).expect("merge");
        r
    });
    let mut rep_b = replica_side("b", &wb);
    rep_b.import(decode_events(&bytes_a)).expect("merge");
    let rep_merged = rep_a.dump().expect("dump");
    assert!(
        rep_merged == rep_b.dump().expect("dump"),
        "ours (replica): the two sides converge"
    );
    assert!(
        rep_merged == merged,
        "ours: the replica and the engine agree"
    );
    drop((rep_a, rep_b));

    let (la, lb) = (loro_side(1, &wa), loro_side(2, &wb));
    let (loro_a_changes, loro_b_changes) = (loro_changes(&la), loro_changes(&lb));
    let (unmerged_a, unmerged_b) = (la.get_deep_value(), lb.get_deep_value());
    drop((la, lb));
    let (la, heap_loro_a) = heap_of(|| {
        let doc = loro_side(1, &wa);
        doc.import(&loro_b_changes).expect("import");
        doc
    });
    let (lb, heap_loro_b) = heap_of(|| {
        let doc = loro_side(2, &wb);
        doc.import(&loro_a_changes).expect("import");
        doc
    });
    let merged = la.get_deep_value();
    assert!(
        merged == lb.get_deep_value(),
        "Loro: the two sides converge"
    );
    assert!(merged != unmerged_a, "Loro: the merge changed a");
    assert!(merged != unmerged_b, "Loro: the merge changed b");
    drop((la, lb, merged, unmerged_a, unmerged_b));

    let (mut aa, mut ab) = (am_side(1, &wa), am_side(2, &wb));
    let am_a_changes = aa.save_after(&am_base_heads);
    let am_b_changes = ab.save_after(&am_base_heads);
    let unmerged_a = aa.hydrate(ROOT, None).expect("hydrate");
    let unmerged_b = ab.hydrate(ROOT, None).expect("hydrate");
    drop((aa, ab));
    let (aa, heap_am_a) = heap_of(|| {
        let mut doc = am_side(1, &wa);
        doc.load_incremental(&am_b_changes).expect("merge");
        doc
    });
    let (ab, heap_am_b) = heap_of(|| {
        let mut doc = am_side(2, &wb);
        doc.load_incremental(&am_a_changes).expect("merge");
        doc
    });
    let merged = aa.hydrate(ROOT, None).expect("hydrate");
    assert!(
        merged == ab.hydrate(ROOT, None).expect("hydrate"),
        "Automerge: the two sides converge"
    );
    assert!(merged != unmerged_a, "Automerge: the merge changed a");
    assert!(merged != unmerged_b, "Automerge: the merge changed b");
    drop((aa, ab, merged, unmerged_a, unmerged_b));

    eprintln!(
        "concurrent: {SHARED} items, {ups} offline writes per side; heap of a merged side \
         (a / b): engine {} / {} (state only, no log), replica {} (log, engine, in-memory graph), \
         Loro {} / {}, Automerge {} / {}",
        mib(heap_ours_a),
        mib(heap_ours_b),
        mib(heap_rep_a),
        mib(heap_loro_a),
        mib(heap_loro_b),
        mib(heap_am_a),
        mib(heap_am_b)
    );
    let (raw, wire) = frames(&ea);
    for (who, bytes, zstd) in [
        ("kuzu-sync frames (MessagePack)", raw, wire),
        (
            "Loro export(updates)",
            loro_a_changes.len(),
            zstd_len(&loro_a_changes),
        ),
        (
            "Automerge save_after",
            am_a_changes.len(),
            zstd_len(&am_a_changes),
        ),
    ] {
        eprintln!(
            "wire concurrent (a's changes) {who}: {bytes} bytes ({:.2} per write); zstd-3: {zstd} bytes ({:.2} per write)",
            bytes as f64 / ups as f64,
            zstd as f64 / ups as f64
        );
    }

    merge_breakdown(&pa, &[&base_events, &ea], &bytes_b);
    let passes = 10;
    for (side, me, own, own_w, remote, loro_remote, loro_id) in [
        ("a", &pa, &ea, &wa, &bytes_b, &loro_b_changes, 1),
        ("b", &pb, &eb, &wb, &bytes_a, &loro_a_changes, 2),
    ] {
        let engine = cpu_mean(
            passes,
            || replay(me, &[&base_events, own]),
            |mut engine| {
                for e in decode_events(remote) {
                    engine.apply(&e).expect("applies");
                }
                let batch = engine.take_batch();
                (engine, batch)
            },
        );
        let lo = cpu_mean(
            passes,
            || loro_side(loro_id, own_w),
            |doc| {
                doc.import(loro_remote).expect("import");
                doc
            },
        );
        print_cpu(
            &format!("merge_into_{side}"),
            passes,
            &[("kuzu_sync_engine", engine), ("loro", lo)],
        );
    }
    // The timings: merging the other side's changes, from their bytes.
    group.throughput(Throughput::Elements(ups as u64));
    for (side, me, own, own_w, remote, loro_remote, am_remote, loro_id) in [
        (
            "a",
            &pa,
            &ea,
            &wa,
            &bytes_b,
            &loro_b_changes,
            &am_b_changes,
            1,
        ),
        (
            "b",
            &pb,
            &eb,
            &wb,
            &bytes_a,
            &loro_a_changes,
            &am_a_changes,
            2,
        ),
    ] {
        group.bench_function(format!("merge_into_{side}/kuzu_sync_engine"), |bench| {
            bench.iter_batched(
                || replay(me, &[&base_events, own]),
                |mut engine| {
                    for e in decode_events(remote) {
                        engine.apply(&e).expect("applies");
                    }
                    let batch = engine.take_batch();
                    (engine, batch)
                },
                BatchSize::PerIteration,
            )
        });
        group.bench_function(format!("merge_into_{side}/kuzu_sync_replica"), |bench| {
            bench.iter_batched(
                || replica_side(side, own_w),
                |mut r| {
                    r.import(decode_events(remote)).expect("merge");
                    r
                },
                BatchSize::PerIteration,
            )
        });
        group.bench_function(format!("merge_into_{side}/loro"), |bench| {
            bench.iter_batched(
                || loro_side(loro_id, own_w),
                |doc| {
                    doc.import(loro_remote).expect("import");
                    doc
                },
                BatchSize::PerIteration,
            )
        });
        group.bench_function(format!("merge_into_{side}/automerge"), |bench| {
            bench.iter_batched(
                || am_side(loro_id as u8, own_w),
                |mut doc| {
                    doc.load_incremental(am_remote).expect("merge");
                    doc
                },
                BatchSize::PerIteration,
            )
        });
    }
}

criterion_group!(benches, crdt_libs);
criterion_main!(benches);
