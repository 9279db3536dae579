use super::*;
use crate::clock::{FixedClock, PeerId};
use crate::memory::MemoryGraphStore;
use crate::memory_log::MemoryEventStore;
use crate::replica::{Replica, ReplicaError, DEFAULT_QUEUE_CAPACITY};
use crate::schema::{Column, Multiplicity, NodeTableDef, Policy, RelTableDef, SchemaOp};
use crate::sim::{base_schema, random_op, Rng};
use crate::value::{DataType, Value};
use crate::{EdgeRef, Entity, NodeRef, Op};

type R = Replica<MemoryEventStore, MemoryGraphStore>;

fn replica(peer: &str, now: u64) -> R {
    Replica::create(
        MemoryEventStore::default(),
        MemoryGraphStore::new(),
        PeerId::new(peer).unwrap(),
        Box::new(FixedClock(now)),
    )
    .unwrap()
}

fn col(name: &str, ty: DataType) -> Column {
    Column {
        name: name.into(),
        ty,
        default: None,
    }
}

fn user(name: &str) -> NodeRef {
    NodeRef {
        table: "User".into(),
        key: Value::from(name),
    }
}

fn spec_schema() -> Vec<Op> {
    vec![
        Op::Schema(SchemaOp::CreateNodeTable(NodeTableDef {
            name: "User".into(),
            columns: vec![
                col("name", DataType::String),
                col("status", DataType::String),
                col("visits", DataType::Int64),
            ],
            primary_key: "name".into(),
        })),
        Op::Schema(SchemaOp::CreateRelTable(RelTableDef {
            name: "FOLLOWS".into(),
            connections: vec![("User".into(), "User".into())],
            columns: vec![],
            multiplicity: Multiplicity::ManyMany,
        })),
        Op::Schema(SchemaOp::SetPolicy {
            table: "User".into(),
            column: "visits".into(),
            policy: Policy::Counter,
        }),
        Op::AddNode {
            table: "User".into(),
            props: vec![("name".into(), Value::from("user_1"))],
        },
        Op::AddNode {
            table: "User".into(),
            props: vec![("name".into(), Value::from("user_2"))],
        },
    ]
}

fn set(name: &str, prop: &str, v: Value) -> Op {
    Op::Update {
        entity: Entity::Node(user(name)),
        prop: prop.into(),
        value: v,
    }
}

fn inc(name: &str, d: i64) -> Op {
    Op::Increment {
        entity: Entity::Node(user(name)),
        prop: "visits".into(),
        delta: Value::Int64(d),
    }
}

/// SPEC §4: three offline writes make a queue of 3, well under 1 MB, durable across a
/// reopen; going online empties it, and nothing coalesces (three different writes).
#[test]
fn spec_three_offline_ops() {
    let mut r = replica("node_a", 1_000);
    r.write(spec_schema()).unwrap();
    r.go_offline().unwrap();
    r.write(vec![Op::AddNode {
        table: "User".into(),
        props: vec![("name".into(), Value::from("Bob"))],
    }])
    .unwrap();
    r.write(vec![Op::AddEdge {
        edge: EdgeRef {
            table: "FOLLOWS".into(),
            from: user("user_1"),
            to: user("user_2"),
            key: String::new(),
        },
        props: vec![],
    }])
    .unwrap();
    r.write(vec![set("user_1", "status", Value::from("active"))])
        .unwrap();
    let q = r.queue_status().unwrap();
    assert!(q.offline);
    assert_eq!(q.size, 3);
    assert!(q.estimated_size_bytes < 1 << 20, "{q:?}");
    assert!(q.estimated_size_bytes > 0);
    assert_eq!(q.capacity, DEFAULT_QUEUE_CAPACITY);
    // Durable: reopen from the same stores.
    let (events, graph) = r.into_parts();
    let mut r = Replica::open(events, graph, Box::new(FixedClock(2_000))).unwrap();
    assert_eq!(r.queue_status().unwrap().size, 3);
    assert!(r.is_offline());
    let report = r.go_online().unwrap();
    assert_eq!(
        report,
        CoalesceReport {
            raw: 3,
            coalesced: 3
        }
    );
    assert!(!r.is_offline());
    assert_eq!(r.queue_status().unwrap().size, 0);
}

#[test]
fn a_full_queue_refuses_the_write_and_keeps_what_is_queued() {
    let mut r = replica("a", 1_000);
    r.write(spec_schema()).unwrap();
    r.go_offline().unwrap();
    // 10,000 ops fit (the SPEC's capacity), in a few writes.
    for chunk in 0..10 {
        r.write((0..1000).map(|i| inc("user_1", chunk * 1000 + i)).collect())
            .unwrap();
    }
    let before = r.offline_queue().unwrap();
    assert_eq!(before.len(), 10_000);
    let err = r.write(vec![inc("user_2", 1)]).unwrap_err();
    assert!(
        matches!(
            err,
            ReplicaError::QueueFull {
                capacity: 10_000,
                queued: 10_000,
                adding: 1
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("offline queue is full"), "{err}");
    assert_eq!(
        r.offline_queue().unwrap(),
        before,
        "nothing lost or reordered"
    );
    // A smaller capacity is durable too.
    r.set_queue_capacity(10_001).unwrap();
    r.write(vec![inc("user_2", 1)]).unwrap();
    let (events, graph) = r.into_parts();
    let mut r = Replica::open(events, graph, Box::new(FixedClock(2_000))).unwrap();
    assert!(r.write(vec![inc("user_2", 1)]).is_err());
    // Going online coalesces the 10,001 increments into two (one per user).
    let report = r.go_online().unwrap();
    assert_eq!(report.raw, 10_001);
    assert_eq!(report.coalesced, 2);
    let want: i64 = (0..10_000).sum();
    let dump = r.dump().unwrap();
    let users = &dump["User"];
    assert!(
        users.iter().any(|row| row.contains(&Value::Int64(want))),
        "{users:?}"
    );
}

#[test]
fn coalescing_drops_superseded_sets_and_sums_increments_across_unrelated_ops() {
    let mut r = replica("a", 1_000);
    r.write(spec_schema()).unwrap();
    r.go_offline().unwrap();
    r.write(vec![
        set("user_1", "status", Value::from("a")),
        inc("user_1", 2),
        set("user_2", "status", Value::from("x")),
        set("user_1", "status", Value::from("b")),
        inc("user_1", 3),
        inc("user_2", 10),
        set("user_1", "status", Value::from("c")),
    ])
    .unwrap();
    let before = r.dump().unwrap();
    let queue = r.offline_queue().unwrap();
    let ops: Vec<Op> = coalesce_ops(&queue).into_iter().map(|(o, _)| o).collect();
    assert_eq!(
        ops,
        vec![
            set("user_2", "status", Value::from("x")),
            inc("user_1", 5),
            inc("user_2", 10),
            set("user_1", "status", Value::from("c")),
        ]
    );
    let report = r.coalesce_offline_queue().unwrap();
    assert_eq!(
        report,
        CoalesceReport {
            raw: 7,
            coalesced: 4
        }
    );
    assert!(r.is_offline(), "coalescing alone stays offline");
    assert_eq!(r.dump().unwrap(), before, "no visible change");
    assert_eq!(r.engine().dump(), before);
    assert_eq!(r.queue_status().unwrap().size, 4);
    // The store holds the rewritten queue, and a reopen agrees.
    let (events, graph) = r.into_parts();
    let mut r = Replica::open(events, graph, Box::new(FixedClock(2_000))).unwrap();
    assert_eq!(r.dump().unwrap(), before);
    assert_eq!(r.queue_status().unwrap().size, 4);
    // Later writes are numbered after the rewritten queue and applied normally.
    r.write(vec![inc("user_1", 1)]).unwrap();
    assert_eq!(r.queue_status().unwrap().size, 5);
}

#[test]
fn barriers_keep_order_where_it_matters() {
    let mut r = replica("a", 1_000);
    r.write(spec_schema()).unwrap();
    r.go_offline().unwrap();
    r.write(vec![
        set("user_1", "status", Value::from("a")),
        Op::DeleteNode(user("user_1")),
        Op::AddNode {
            table: "User".into(),
            props: vec![("name".into(), Value::from("user_1"))],
        },
        set("user_1", "status", Value::from("b")),
        inc("user_2", 1),
        set("user_2", "visits", Value::Int64(100)),
        inc("user_2", 2),
    ])
    .unwrap();
    let queue = r.offline_queue().unwrap();
    // Nothing can go: the delete and re-add separate the sets, the set separates the
    // increments.
    assert_eq!(coalesce_ops(&queue).len(), 7);
}

/// Coalescing changes nothing visible, on the replica or anywhere else, whatever other
/// replicas write concurrently: random offline writes on A while B writes; the world in
/// which A coalesced equals the world in which it did not.
#[test]
fn coalesced_and_raw_worlds_converge_to_the_same_graph() {
    for seed in 0..300u64 {
        let setup = {
            let mut s = replica("setup", 500);
            s.write(base_schema().into_iter().map(Op::Schema).collect())
                .unwrap();
            s.events_since(&Default::default()).unwrap()
        };
        let world = |coalesce: bool, rng: &mut Rng| {
            let mut a = replica("a", 1_000 + seed);
            let mut b = replica("b", 1_005);
            a.import(setup.clone()).unwrap();
            b.import(setup.clone()).unwrap();
            a.go_offline().unwrap();
            for step in 0..80 {
                let op = random_op(rng, 2, false);
                let target = if step % 3 == 0 { &mut b } else { &mut a };
                let _ = target.write(vec![op]);
            }
            if coalesce {
                a.go_online().unwrap();
            }
            let to_b = a.events_since(b.version_vector()).unwrap();
            let to_a = b.events_since(a.version_vector()).unwrap();
            b.import(to_b).unwrap();
            a.import(to_a).unwrap();
            (a.dump().unwrap(), b.dump().unwrap())
        };
        let mut r1 = Rng::new(seed);
        let mut r2 = Rng::new(seed);
        let raw = world(false, &mut r1);
        let coalesced = world(true, &mut r2);
        assert_eq!(raw.0, raw.1, "seed {seed}: raw world diverged");
        assert_eq!(
            coalesced.0, coalesced.1,
            "seed {seed}: coalesced world diverged"
        );
        assert_eq!(
            coalesced.0, raw.0,
            "seed {seed}: coalescing changed the graph"
        );
    }
}
