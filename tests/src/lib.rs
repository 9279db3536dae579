//! Shared helpers for kuzu-sync's cross-crate tests and benchmarks: a simulator backend on
//! real SQLite + Kuzu, and canonical dumps of plain Kuzu databases for fidelity checks.

use std::path::{Path, PathBuf};

use kuzu_sync_engine::sim::SimBackend;
use kuzu_sync_kuzu::{KuzuConfig, KuzuGraphStore};
use kuzu_sync_sqlite::SqliteEventStore;

/// The simulator's replicas on real SQLite and Kuzu files in a temporary directory.
/// A crash drops both stores (closing the files) and opens them again.
#[derive(Debug)]
pub struct KuzuBackend {
    pub dir: PathBuf,
}

impl KuzuBackend {
    pub fn new(dir: &Path) -> Self {
        KuzuBackend {
            dir: dir.to_path_buf(),
        }
    }

    fn paths(&self, index: usize) -> (PathBuf, PathBuf) {
        let d = self.dir.join(format!("r{index}"));
        std::fs::create_dir_all(&d).expect("create replica dir");
        (d.join("events.sqlite"), d.join("graph.kuzu"))
    }
}

impl SimBackend for KuzuBackend {
    type Events = SqliteEventStore;
    type Graph = KuzuGraphStore;

    fn create(&mut self, index: usize) -> (Self::Events, Self::Graph) {
        let (ev, gr) = self.paths(index);
        (
            SqliteEventStore::open(&ev).expect("open event log"),
            KuzuGraphStore::open(&gr, &KuzuConfig::small()).expect("open kuzu"),
        )
    }

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
}
