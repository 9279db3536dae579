//! kuzu-sync's cross-crate tests on real SQLite and Kuzu: conformance of the real stores,
//! and randomized convergence of replicas whose graphs are real Kuzu databases.

use kuzu_sync_engine::sim::{run, Scenario};
use kuzu_sync_kuzu::{KuzuConfig, KuzuGraphStore};
use kuzu_sync_sqlite::SqliteEventStore;
use kuzu_sync_tests::KuzuBackend;
use proptest::prelude::*;

/// The suite twice: with the default thresholds, and with low ones so that its batches take
/// the COPY paths (CSV files, COPY from a parameter list, the checkpointed commit).
#[test]
fn kuzu_graph_store_conformance() {
    let dir = tempfile::tempdir().unwrap();
    for (name, config) in [
        ("default", KuzuConfig::small()),
        (
            "copy",
            KuzuConfig {
                node_copy_threshold: 100,
                edge_copy_threshold: 100,
                ..KuzuConfig::small()
            },
        ),
    ] {
        let mut n = 0;
        kuzu_sync_engine::conformance::graph_store_suite(&mut || {
            n += 1;
            KuzuGraphStore::open(&dir.path().join(format!("{name}{n}.kuzu")), &config).unwrap()
        });
    }
}

#[test]
fn sqlite_event_store_conformance() {
    let dir = tempfile::tempdir().unwrap();
    let mut n = 0;
    kuzu_sync_engine::conformance::event_store_suite(&mut || {
        n += 1;
        SqliteEventStore::open(&dir.path().join(format!("e{n}.sqlite"))).unwrap()
    });
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 100, ..ProptestConfig::default() })]

    /// The convergence invariant with real Kuzu graphs: replicas that end with the same
    /// events hold identical Kuzu databases (and each equals its engine's view).
    #[test]
    fn kuzu_replicas_converge(seed in any::<u64>(), replicas in 3usize..=5, steps in 5usize..30, keys in 2u64..5, schema in any::<bool>()) {
        let dir = tempfile::tempdir().unwrap();
        let sc = Scenario { seed, replicas, steps, keys, schema_changes: schema, crash_percent: 5 };
        run(&mut KuzuBackend::new(dir.path()), &sc).unwrap();
    }
}
