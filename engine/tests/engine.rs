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
