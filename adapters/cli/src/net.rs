//! Live sync for the command and the library: the relay's graph-less store, auth token
//! files, and lifecycle events as JSON lines.

use std::path::Path;

use kuzu_sync_engine::auth::Credentials;
use kuzu_sync_engine::ports::{GraphDump, GraphStore, StoreError};
use kuzu_sync_engine::sync::Lifecycle;
use kuzu_sync_engine::{ApplyBatch, PeerId, Replica, Schema, VersionVector};
use kuzu_sync_sqlite::SqliteEventStore;

use crate::{Error, SystemClock, EVENT_LOG};

/// The graph store of a relay hub: it keeps no graph. A relay stores and forwards events
/// (and validates them, with the engine's in-memory state); its watermark lives in memory,
/// so opening a relay replays its log into the engine.
#[derive(Debug, Default)]
pub struct NoGraph {
    watermark: VersionVector,
}

impl GraphStore for NoGraph {
    fn watermark(&mut self) -> Result<VersionVector, StoreError> {
        Ok(self.watermark.clone())
    }

    fn apply(&mut self, batch: &ApplyBatch, _schema: &Schema) -> Result<(), StoreError> {
        self.watermark = batch.watermark.clone();
        Ok(())
    }

    fn dump(&mut self, _schema: &Schema) -> Result<GraphDump, StoreError> {
        Err(StoreError::Backend {
            context: "relay".into(),
            source: "a relay keeps no graph: query a full replica instead".into(),
        })
    }
}

/// A relay: the event log alone.
pub type RelayReplica = Replica<SqliteEventStore, NoGraph>;

/// Opens the relay in `dir`, creating it (with `peer_id`) if it does not exist.
pub fn open_relay(dir: &Path, peer_id: Option<&str>) -> Result<RelayReplica, Error> {
    let log = dir.join(EVENT_LOG);
    if log.exists() {
        let events = SqliteEventStore::open(&log)?;
        let r = Replica::open(events, NoGraph::default(), Box::new(SystemClock))?;
        if let Some(p) = peer_id {
            if p != r.peer().as_str() {
                return Err(Error::Invalid(format!(
                    "{} is relay {:?}, not {p:?}",
                    dir.display(),
                    r.peer().as_str()
                )));
            }
        }
        return Ok(r);
    }
    let Some(peer_id) = peer_id else {
        return Err(Error::Invalid(format!(
            "{} is not a relay yet: give --peer-id to create it",
            dir.display()
        )));
    };
    let peer = PeerId::new(peer_id)?;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let events = SqliteEventStore::open(&log)?;
    Ok(Replica::create(
        events,
        NoGraph::default(),
        peer,
        Box::new(SystemClock),
    )?)
}

/// Reads an auth token file: its content with surrounding whitespace trimmed.
pub fn read_token(path: &Path) -> Result<String, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let token = text.trim();
    if token.is_empty() {
        return Err(Error::Invalid(format!(
            "auth token file {} is empty",
            path.display()
        )));
    }
    Ok(token.to_string())
}

/// Reads a credentials file (see [`kuzu_sync_engine::auth::Credentials`]); an error names
/// the file and the entry at fault.
pub fn read_credentials(path: &Path) -> Result<Credentials, Error> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    Credentials::from_json(&text)
        .map_err(|e| Error::Invalid(format!("credentials file {}: {e}", path.display())))
}

/// A lifecycle event as one JSON object, with the connection it happened on.
pub fn lifecycle_json(remote: &str, event: &Lifecycle) -> serde_json::Value {
    let mut v = serde_json::to_value(event).unwrap_or_default();
    if let serde_json::Value::Object(m) = &mut v {
        m.insert("remote".into(), remote.into());
    }
    v
}
