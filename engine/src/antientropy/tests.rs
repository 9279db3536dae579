use super::*;
use crate::clock::{FixedClock, PeerId};
use crate::memory::MemoryGraphStore;
use crate::memory_log::MemoryEventStore;
use crate::merkle::{diff, suggested_bucket_bits, IndexRemote};
use crate::replica::Replica;
use crate::schema::{Column, NodeTableDef, SchemaOp};
use crate::value::DataType;

type R = Replica<MemoryEventStore, MemoryGraphStore>;

fn replica(peer: &str) -> R {
    let mut r = Replica::create(
        MemoryEventStore::default(),
        MemoryGraphStore::new(),
        PeerId::new(peer).unwrap(),
        Box::new(FixedClock(1_000)),
    )
    .unwrap();
    r.write(vec![Op::Schema(SchemaOp::CreateNodeTable(NodeTableDef {
        name: "User".into(),
        columns: vec![
            Column {
                name: "id".into(),
                ty: DataType::Int64,
                default: None,
            },
            Column {
                name: "name".into(),
                ty: DataType::String,
                default: None,
            },
        ],
        primary_key: "id".into(),
    }))])
    .unwrap();
    r
}

fn add(id: i64) -> Op {
    Op::AddNode {
        table: "User".into(),
        props: vec![
            ("id".into(), Value::Int64(id)),
            ("name".into(), Value::String(format!("user {id}"))),
        ],
    }
}

fn ents(r: &R) -> Vec<EntityRow> {
    entities(&r.engine().dump(), r.engine().schema(), true)
}

/// SPEC §5 on two replicas with unrelated histories: A wrote 10,000 users, B wrote 9,990
/// of the same users itself. The Merkle diff finds the 10 B lacks in fewer than 100
/// comparisons; copying exactly those 10 rows (as ops written by B) makes the roots equal.
#[test]
fn spec_ten_thousand_against_nine_thousand_nine_hundred_ninety() {
    let mut a = replica("a");
    let mut b = replica("b");
    a.write((0..10_000).map(add).collect()).unwrap();
    let gone: Vec<i64> = (0..10).map(|i| i * 997 + 13).collect();
    b.write((0..10_000).filter(|i| !gone.contains(i)).map(add).collect())
        .unwrap();
    let (ea, eb) = (ents(&a), ents(&b));
    let bits = suggested_bucket_bits(ea.len().max(eb.len()));
    let (ia, ib) = (index(&ea, bits), index(&eb, bits));
    assert_ne!(ia.root(), ib.root());
    let mut remote = IndexRemote::new(&ia);
    let report = diff(&ib, &mut remote).unwrap();
    assert_eq!(report.missing_here.len(), 10, "{report:?}");
    assert!(report.missing_there.is_empty() && report.different.is_empty());
    assert!(
        report.comparisons < 100,
        "{} comparisons",
        report.comparisons
    );
    // Transfer exactly those 10 rows and apply them on B.
    let rows: Vec<&EntityRow> = ea
        .iter()
        .filter(|e| report.missing_here.contains(&e.key))
        .collect();
    assert_eq!(rows.len(), 10);
    let mut ids: Vec<i64> = rows
        .iter()
        .map(|e| match &e.row[0] {
            Value::Int64(i) => *i,
            other => panic!("{other:?}"),
        })
        .collect();
    ids.sort();
    assert_eq!(ids, gone);
    let wire: usize = rows.iter().map(|e| encode(&e.row).len() + 32).sum();
    assert!(
        report.bytes as usize + wire < 10_000,
        "{} bytes of diff + {wire} bytes of rows",
        report.bytes
    );
    let schema = b.engine().schema().clone();
    b.write(
        rows.iter()
            .map(|e| upsert_op(e, &schema).unwrap())
            .collect(),
    )
    .unwrap();
    assert_eq!(index(&ents(&b), bits).root(), ia.root());
}

#[test]
fn converged_replicas_have_equal_roots_and_changes_show_as_different() {
    let mut a = replica("a");
    a.write((0..50).map(add).collect()).unwrap();
    let mut b = replica("b");
    b.import(a.events_since(&Default::default()).unwrap())
        .unwrap();
    let bits = 3;
    assert_eq!(index(&ents(&a), bits).root(), index(&ents(&b), bits).root());
    b.write(vec![Op::Update {
        entity: Entity::Node(NodeRef {
            table: "User".into(),
            key: Value::Int64(7),
        }),
        prop: "name".into(),
        value: Value::from("changed"),
    }])
    .unwrap();
    let (ea, eb) = (ents(&a), ents(&b));
    let report = diff(&index(&ea, bits), &mut IndexRemote::new(&index(&eb, bits))).unwrap();
    assert_eq!(report.different.len(), 1);
    let changed = eb.iter().find(|e| e.key == report.different[0]).unwrap();
    assert_eq!(changed.label, "User(7)");
    assert_eq!(changed.row[1], Value::from("changed"));
    // A schema change shows as the schema entity.
    b.write(vec![Op::Schema(SchemaOp::AddColumn {
        table: "User".into(),
        column: Column {
            name: "extra".into(),
            ty: DataType::Int64,
            default: None,
        },
    })])
    .unwrap();
    let eb = ents(&b);
    let report = diff(&index(&ea, bits), &mut IndexRemote::new(&index(&eb, bits))).unwrap();
    assert!(eb
        .iter()
        .filter(|e| report.different.contains(&e.key))
        .any(|e| e.table == SCHEMA_ENTITY));
}

fn tamper(r: &mut R) {
    use crate::change::{ApplyBatch, GraphChange};
    use crate::ports::GraphStore;
    let schema = r.engine().schema().clone();
    let wm = r.version_vector().clone();
    let node = |id: i64| NodeRef {
        table: "User".into(),
        key: Value::Int64(id),
    };
    r.graph()
        .apply(
            &ApplyBatch {
                changes: vec![
                    // A row written straight into the database…
                    GraphChange::UpsertNode {
                        node: node(500),
                        values: vec![Value::Int64(500), Value::from("intruder")],
                        is_new: true,
                        changed: Vec::new(),
                    },
                    // …one changed…
                    GraphChange::UpsertNode {
                        node: node(3),
                        values: vec![Value::Int64(3), Value::from("edited")],
                        is_new: false,
                        changed: Vec::new(),
                    },
                    // …and one deleted.
                    GraphChange::DeleteNode(node(4)),
                ],
                watermark: wm,
                may_exist: true,
            },
            &schema,
        )
        .unwrap();
}

/// Drift: writes made straight into the graph store are found by comparing its rows with
/// the engine's state; by policy they are reverted (the graph gets the engine's rows back)
/// or captured (they become events, and replicate).
#[test]
fn drift_is_found_then_reverted_or_captured() {
    let mut a = replica("a");
    a.write((0..10).map(add).collect()).unwrap();
    assert!(a.drift().unwrap().is_empty());
    tamper(&mut a);
    let d = a.drift().unwrap();
    assert_eq!(d.extra.len(), 1, "{d:?}");
    assert_eq!(d.extra[0].label, "User(500)");
    assert_eq!(d.missing.len(), 1);
    assert_eq!(d.missing[0].label, "User(4)");
    assert_eq!(d.different.len(), 1);
    assert_eq!(d.different[0].1.row[1], Value::from("edited"));
    // Revert: the graph matches the engine again; the history did not change.
    let events = a.version_vector().total();
    assert_eq!(a.revert_drift(&d).unwrap(), 3);
    assert!(a.drift().unwrap().is_empty());
    assert_eq!(a.dump().unwrap(), a.engine().dump());
    assert_eq!(a.version_vector().total(), events);
    // Capture: the drift becomes history and reaches other replicas.
    tamper(&mut a);
    let tampered = a.dump().unwrap();
    let d = a.drift().unwrap();
    let ids = a.capture_drift(&d).unwrap();
    assert_eq!(ids.len(), 3);
    assert!(a.drift().unwrap().is_empty());
    assert_eq!(
        a.engine().dump(),
        tampered,
        "the engine now shows what the graph had"
    );
    let mut b = replica("b");
    b.import(a.events_since(b.version_vector()).unwrap())
        .unwrap();
    assert_eq!(b.dump().unwrap(), tampered);
}

/// A remote's row must match its key and digest where this replica can check them, and
/// a row too short for its table never panics a repair.
#[test]
fn remote_rows_are_checked_against_their_key_and_digest() {
    let mut r = replica("a");
    r.write(vec![add(1), add(2)]).unwrap();
    let schema = r.engine().schema().clone();
    let rows = ents(&r);
    assert!(rows.iter().all(|row| !row_contradicts(row, &schema)));
    let node = rows.iter().find(|row| row.table == "User").unwrap().clone();
    let mut forged = node.clone();
    *forged.row.last_mut().unwrap() = Value::String("forged".into());
    assert!(row_contradicts(&forged, &schema));
    let mut short = node.clone();
    short.row.clear();
    assert!(
        !row_contradicts(&short, &schema),
        "unverifiable, not contradicting"
    );
    // A repair from it writes nothing that panics.
    let _ = ops_for([&short], [], &schema);
    assert!(row_contradicts(
        &EntityRow {
            row: vec![Value::Null],
            ..rows
                .iter()
                .find(|r| r.table == SCHEMA_ENTITY)
                .unwrap()
                .clone()
        },
        &schema
    ));
}
