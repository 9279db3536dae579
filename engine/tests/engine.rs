//! Integration tests of the engine on in-memory stores: randomized convergence.

use kuzu_sync_engine::sim::{run, MemoryBackend, Scenario};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// Replicas that end up with the same events hold identical graphs, whatever the order,
    /// duplication and partial exchanges on the way, and with crashes.
    #[test]
    fn replicas_converge(seed in any::<u64>(), replicas in 3usize..=5, steps in 5usize..60, keys in 2u64..6, schema in any::<bool>()) {
        let sc = Scenario { seed, replicas, steps, keys, schema_changes: schema, crash_percent: 5 };
        run(&mut MemoryBackend, &sc).unwrap();
    }
}

/// Failures found by the randomized test, kept as permanent regression cases.
#[test]
fn regressions() {
    {
        let (seed, replicas, steps, keys, schema) = (0u64, 3usize, 40usize, 3u64, true);
        let sc = Scenario {
            seed,
            replicas,
            steps,
            keys,
            schema_changes: schema,
            crash_percent: 5,
        };
        run(&mut MemoryBackend, &sc).unwrap();
    }
}

/// The in-memory graph store against the shared suite (the reference against itself checks
/// the suite's own consistency: idempotence, watermarks).
#[test]
fn memory_graph_store_conformance() {
    kuzu_sync_engine::conformance::graph_store_suite(
        &mut kuzu_sync_engine::memory::MemoryGraphStore::new,
    );
}

/// A received event that names an unknown column or carries a wrongly typed value is refused
/// with an error naming the event, and nothing of the import is applied (all or nothing),
/// even the valid events before it.
#[test]
fn an_invalid_received_event_rejects_the_whole_import() {
    use kuzu_sync_engine::memory::MemoryGraphStore;
    use kuzu_sync_engine::sim::base_schema;
    use kuzu_sync_engine::{
        Entity, FixedClock, MemoryEventStore, NodeRef, Op, PeerId, Replica, Value, VersionVector,
    };
    let mut a = Replica::create(
        MemoryEventStore::default(),
        MemoryGraphStore::new(),
        PeerId::new("a").unwrap(),
        Box::new(FixedClock(1_000)),
    )
    .unwrap();
    let mut ops: Vec<Op> = base_schema().into_iter().map(Op::Schema).collect();
    ops.push(Op::AddNode {
        table: "User".into(),
        props: vec![("id".into(), Value::Int64(1))],
    });
    ops.push(Op::Update {
        entity: Entity::Node(NodeRef {
            table: "User".into(),
            key: Value::Int64(1),
        }),
        prop: "name".into(),
        value: Value::from("ok"),
    });
    a.write(ops).unwrap();
    let good = a.events_since(&VersionVector::new()).unwrap();
    for (what, tamper) in [
        ("wrong type", Value::Int64(5)),
        ("unknown column", Value::from("x")),
    ] {
        let mut events = good.clone();
        let last = events.last_mut().unwrap();
        if let Op::Update { prop, value, .. } = &mut last.op {
            *value = tamper;
            if what == "unknown column" {
                *prop = "shoe_size".into();
            }
        }
        let bad_id = last.id.to_string();
        let mut b = Replica::create(
            MemoryEventStore::default(),
            MemoryGraphStore::new(),
            PeerId::new("b").unwrap(),
            Box::new(FixedClock(2_000)),
        )
        .unwrap();
        let err = b.import(events).unwrap_err().to_string();
        assert!(
            err.contains(&bad_id),
            "{what}: the error names the event: {err}"
        );
        assert!(
            b.version_vector().is_empty(),
            "{what}: nothing applied, not even the valid events before it"
        );
        assert_eq!(
            b.status().unwrap().stored_events,
            0,
            "{what}: nothing logged"
        );
        // The untampered events still import.
        b.import(good.clone()).unwrap();
        assert_eq!(b.dump().unwrap(), a.dump().unwrap());
    }
}
