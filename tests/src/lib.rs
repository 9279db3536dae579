//! Shared helpers for kuzu-sync's cross-crate tests and benchmarks: a simulator backend on
//! real SQLite + Kuzu, and canonical dumps of plain Kuzu databases for fidelity checks.

use std::path::{Path, PathBuf};

use kuzu_sync_engine::sim::{FailingGraph, GraphProbe, SimBackend};
use kuzu_sync_kuzu::{KuzuConfig, KuzuGraphStore};
use kuzu_sync_sqlite::SqliteEventStore;

/// The simulator's replicas on real SQLite and Kuzu files in a temporary directory.
/// A crash drops both stores (closing the files) and opens them again. Each Kuzu store is
/// wrapped in a [`FailingGraph`], so the simulator can make its applies fail (before Kuzu
/// sees the batch, or after Kuzu committed it), and counts the batches at or above the COPY
/// thresholds as bulk.
#[derive(Debug)]
pub struct KuzuBackend {
    pub dir: PathBuf,
    pub config: KuzuConfig,
}

impl KuzuBackend {
    /// With [`KuzuConfig::small`]: the default COPY thresholds, which the simulator's small
    /// batches never reach.
    pub fn new(dir: &Path) -> Self {
        Self::with_config(dir, KuzuConfig::small())
    }

    pub fn with_config(dir: &Path, config: KuzuConfig) -> Self {
        KuzuBackend {
            dir: dir.to_path_buf(),
            config,
        }
    }

    /// With both COPY thresholds at `threshold` new rows (of one node table, of one rel
    /// table), so that the simulator's batches take the COPY paths (CSV files, COPY from a
    /// parameter list, the checkpointed two-step commit), and the bulk update's threshold
    /// at `threshold` updated nodes of one table (its stage table and join).
    pub fn with_copy_threshold(dir: &Path, threshold: usize) -> Self {
        Self::with_config(
            dir,
            KuzuConfig {
                node_copy_threshold: threshold,
                edge_copy_threshold: threshold,
                update_join_threshold: threshold,
                ..KuzuConfig::small()
            },
        )
    }

    fn paths(&self, index: usize) -> (PathBuf, PathBuf) {
        let d = self.dir.join(format!("r{index}"));
        std::fs::create_dir_all(&d).expect("create replica dir");
        (d.join("events.sqlite"), d.join("graph.kuzu"))
    }
}

impl SimBackend for KuzuBackend {
    type Events = SqliteEventStore;
    type Graph = FailingGraph<KuzuGraphStore>;

    fn create(&mut self, index: usize) -> (Self::Events, Self::Graph) {
        let (ev, gr) = self.paths(index);
        let graph = KuzuGraphStore::open(&gr, &self.config).expect("open kuzu");
        (
            SqliteEventStore::open(&ev).expect("open event log"),
            // The store treats a threshold of 0 as 1.
            FailingGraph::with_bulk_thresholds(
                graph,
                self.config.node_copy_threshold.max(1),
                self.config.edge_copy_threshold.max(1),
            ),
        )
    }

    /// Failures still pending die with the process.
    fn reopen(
        &mut self,
        index: usize,
        events: Self::Events,
        graph: Self::Graph,
    ) -> (Self::Events, Self::Graph) {
        drop(events);
        drop(graph);
        self.create(index)
    }

    fn probe<'g>(&self, graph: &'g mut Self::Graph) -> Option<&'g mut GraphProbe> {
        Some(&mut graph.probe)
    }
}
