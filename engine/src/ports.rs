//! The two ports through which the engine reaches storage, and their error type.
//!
//! Each port has an in-memory implementation in [`crate::memory`] and a real one in an
//! adapter crate (`kuzu-sync-sqlite`, `kuzu-sync-kuzu`); one conformance suite
//! (`kuzu-sync-tests`) runs against all of them.

use std::collections::BTreeMap;

use crate::change::ApplyBatch;
use crate::clock::{EventId, PeerId, VersionVector};
use crate::event::Event;
use crate::schema::Schema;
use crate::snapshot::Snapshot;
use crate::value::Value;

/// An error from a store. Backend errors keep their source.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("event {id} is already stored with different contents (equivocation)")]
    Equivocation { id: EventId },
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("{context}: {source}")]
    Backend {
        context: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl StoreError {
    pub fn backend(
        context: impl Into<String>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        StoreError::Backend {
            context: context.into(),
            source: source.into(),
        }
    }
}

/// The durable event log. `Send`, so that a replica can append on another thread while its
/// graph store works (see [`GraphStore::apply_when`]).
pub trait EventStore: Send {
    /// Stores the events that are not stored yet, atomically and durably, and returns how
    /// many were new. An event whose id is stored with a different digest is equivocation:
    /// the whole call fails and nothing is stored.
    fn append(&mut self, events: &[Event]) -> Result<usize, StoreError>;

    /// Calls `f` with every stored event that `since` does not contain, in the order they
    /// were stored (which is a causal order for the events of each peer).
    fn scan(
        &self,
        since: &VersionVector,
        f: &mut dyn FnMut(Event) -> Result<(), StoreError>,
    ) -> Result<(), StoreError>;

    /// One page of [`EventStore::scan`]: calls `f` with the stored events that `since` does
    /// not contain, in stored order, starting at position `from` (0 is the first) and
    /// stopping after `limit` calls. Returns the position to continue from, and whether
    /// the end of the log was reached.
    ///
    /// Positions only grow: an event stored after a page was read comes after it, so
    /// paging from the returned position misses nothing appended meanwhile. (Events
    /// removed by compaction are gone; events rewritten by `replace_suffix` come back at
    /// the end.) A session streams what its peer lacks this way, holding one page in
    /// memory rather than the whole log.
    fn scan_page(
        &self,
        since: &VersionVector,
        from: u64,
        limit: usize,
        f: &mut dyn FnMut(Event) -> Result<(), StoreError>,
    ) -> Result<(u64, bool), StoreError>;

    /// Number of stored events.
    fn count(&self) -> Result<u64, StoreError>;

    /// The snapshot the log was compacted into, if any.
    fn snapshot(&self) -> Result<Option<Snapshot>, StoreError>;

    /// In one atomic step: stores `snapshot` in place of any earlier one, deletes every
    /// stored event it covers, and sets the metadata entries given. Returns how many events
    /// were deleted. From then on, `append` skips events the snapshot covers (they count as
    /// stored; their contents can no longer be compared for equivocation).
    fn compact(&mut self, snapshot: &Snapshot, meta: &[(&str, &str)]) -> Result<u64, StoreError>;

    /// A small durable key/value area for replica metadata (peer id, settings).
    fn meta(&self, key: &str) -> Result<Option<String>, StoreError>;
    fn set_meta(&mut self, key: &str, value: &str) -> Result<(), StoreError>;

    /// In one atomic step: removes `peer`'s events with a counter above `after`, stores
    /// `events` (which must be `peer`'s, numbered from `after + 1`), and sets the metadata
    /// entries given. Only for rewriting a replica's own events that no other replica has
    /// seen (coalescing the offline queue); the new events come after every stored one in
    /// scan order. Refused, changing nothing, if the snapshot covers any event it would
    /// replace (`peer`'s entry in the snapshot's vector is above `after`).
    fn replace_suffix(
        &mut self,
        peer: &PeerId,
        after: u64,
        events: &[Event],
        meta: &[(&str, &str)],
    ) -> Result<(), StoreError>;
}

/// Every table's rows, as canonical values, sorted. Node rows follow the table's columns;
/// edge rows are `[from table, from key, to table, to key, edge key, properties…]`.
pub type GraphDump = BTreeMap<String, Vec<Vec<Value>>>;

/// The materialized graph.
pub trait GraphStore {
    /// The version vector of the events whose effects are stored.
    fn watermark(&mut self) -> Result<VersionVector, StoreError>;

    /// Applies the batch and records its watermark, atomically: after a crash either both
    /// are stored or neither. `schema` is the schema after the batch.
    fn apply(&mut self, batch: &ApplyBatch, schema: &Schema) -> Result<(), StoreError>;

    /// [`GraphStore::apply`], while the batch's events are still being appended to the log
    /// (see [`GraphStore::overlaps_append`]): the store must call `ready` before anything
    /// it does can be committed, and if `ready` fails, roll back and return its error.
    /// Nothing may reach the graph durably before its events are durable in the log.
    ///
    /// The default waits first, then applies.
    fn apply_when(
        &mut self,
        batch: &ApplyBatch,
        schema: &Schema,
        ready: &mut dyn FnMut() -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        ready()?;
        self.apply(batch, schema)
    }

    /// Whether [`GraphStore::apply_when`] does work before it calls `ready`, so that the
    /// replica gains by appending to the log on another thread meanwhile. False by default.
    fn overlaps_append(&self) -> bool {
        false
    }

    /// Every table of `schema`, canonical and sorted.
    fn dump(&mut self, schema: &Schema) -> Result<GraphDump, StoreError>;
}

/// Scans all events into a vector. Convenience for small logs and tests.
pub fn all_events(store: &dyn EventStore) -> Result<Vec<Event>, StoreError> {
    let mut out = Vec::new();
    store.scan(&VersionVector::new(), &mut |e| {
        out.push(e);
        Ok(())
    })?;
    Ok(out)
}
