//! kuzu-sync: offline-first replication for KuzuDB. This crate is the facade most users
//! want: a replica directory (a Kuzu database beside a SQLite event log), the JSON-lines op
//! format, `COPY`-script loading, offline bundles, and the `kuzu-sync` command built on them.
//!
//! ```no_run
//! let mut r = kuzu_sync::init("/tmp/replica-a".as_ref(), "node_a").unwrap();
//! kuzu_sync::write_json_lines(&mut r, r#"{"op":"ddl","cypher":"CREATE NODE TABLE User(name STRING, PRIMARY KEY(name))"}
//! {"op":"add_node","table":"User","props":{"name":"Alice"}}"#).unwrap();
//! ```

pub mod adopt;
pub mod bundle;
pub mod load;
pub mod net;
pub mod ops;

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

pub use kuzu_sync_engine as engine;
pub use kuzu_sync_kuzu::{KuzuConfig, KuzuGraphStore};
pub use kuzu_sync_protocol as protocol;
pub use kuzu_sync_sqlite::SqliteEventStore;

use kuzu_sync_engine::{PeerId, Replica, ReplicaError, WallClock};

pub use ops::{parse_json_lines, write_json_lines};

/// A replica on real storage.
pub type KuzuReplica = Replica<SqliteEventStore, KuzuGraphStore>;

/// File names inside a replica directory.
pub const EVENT_LOG: &str = "events.sqlite";
pub const GRAPH_DB: &str = "graph.kuzu";

/// Errors of the facade.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error(transparent)]
    Replica(#[from] ReplicaError),
    #[error(transparent)]
    Engine(#[from] kuzu_sync_engine::EngineError),
    #[error(transparent)]
    Store(#[from] kuzu_sync_engine::StoreError),
    #[error(transparent)]
    Bundle(#[from] kuzu_sync_protocol::BundleError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0} is not a kuzu-sync replica (no {EVENT_LOG}); create it with `kuzu-sync init`")]
    NotAReplica(PathBuf),
    #[error("{0} is already a replica")]
    AlreadyExists(PathBuf),
    #[error("{0}")]
    Invalid(String),
}

impl Error {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        Error::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// The system clock, in milliseconds since the epoch.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl WallClock for SystemClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

/// Creates a new replica in `dir` (created if missing, must not already be a replica).
pub fn init(dir: &Path, peer_id: &str) -> Result<KuzuReplica, Error> {
    init_with(dir, peer_id, &KuzuConfig::default())
}

pub fn init_with(dir: &Path, peer_id: &str, config: &KuzuConfig) -> Result<KuzuReplica, Error> {
    let peer = PeerId::new(peer_id)?;
    if dir.join(EVENT_LOG).exists() {
        return Err(Error::AlreadyExists(dir.to_path_buf()));
    }
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let events = SqliteEventStore::open(&dir.join(EVENT_LOG))?;
    let graph = KuzuGraphStore::open(&dir.join(GRAPH_DB), config)?;
    Ok(Replica::create(events, graph, peer, Box::new(SystemClock))?)
}

/// Opens the replica in `dir`, bringing its graph up to date with its log.
pub fn open(dir: &Path) -> Result<KuzuReplica, Error> {
    open_with(dir, &KuzuConfig::default(), &mut |_, _| {})
}

pub fn open_with(
    dir: &Path,
    config: &KuzuConfig,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<KuzuReplica, Error> {
    let log = dir.join(EVENT_LOG);
    if !log.exists() {
        return Err(Error::NotAReplica(dir.to_path_buf()));
    }
    let events = SqliteEventStore::open(&log)?;
    let graph = KuzuGraphStore::open(&dir.join(GRAPH_DB), config)?;
    Ok(Replica::open_with_progress(
        events,
        graph,
        Box::new(SystemClock),
        progress,
    )?)
}
