//! A replica: an [`Engine`] driven against an [`EventStore`] and a [`GraphStore`].
//!
//! The order of every write is: validate and apply in memory → append to the event log
//! (durable) → apply the resulting batch to the graph store together with its watermark.
//! On open, events inside the graph's watermark are replayed silently, and the rest are
//! applied again, so a crash at any point loses nothing and applies nothing twice.

use std::collections::{BTreeMap, VecDeque};

use serde::Serialize;

use crate::change::ApplyBatch;
use crate::clock::{EventId, PeerId, VersionVector, WallClock};
use crate::conflict::Conflict;
use crate::error::EngineError;
use crate::event::{Event, Op};
use crate::ports::{EventStore, GraphDump, GraphStore, StoreError};
use crate::state::Engine;

/// Events applied per graph-store transaction when catching up or importing.
pub const DEFAULT_APPLY_CHUNK: usize = 20_000;

const PEER_ID_KEY: &str = "peer_id";

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReplicaError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// A local op was refused: `index` is its position in the write (0-based).
    #[error("op {}: {source}", index + 1)]
    Op {
        index: usize,
        #[source]
        source: EngineError,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("this replica belongs to peer {stored}, not {given}")]
    PeerMismatch { stored: String, given: String },
    #[error("the event log has no peer id: initialise the replica with a peer id first")]
    NoPeerId,
    #[error(
        "{count} events cannot be applied because their causal past is missing here \
         (first: {first}, which needs {needs}); export the bundle with --since set to this \
         replica's version vector"
    )]
    MissingHistory {
        count: usize,
        first: EventId,
        needs: String,
    },
}

/// What `status` reports.
#[derive(Clone, Debug, Serialize)]
pub struct ReplicaStatus {
    pub peer_id: String,
    pub version_vector: VersionVector,
    pub stored_events: u64,
    pub applied_events: u64,
    pub schema_version: u64,
    pub apply_watermark: VersionVector,
    pub nodes: usize,
    pub edges: usize,
    pub conflicts: usize,
}

/// What an import did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ImportOutcome {
    pub received: usize,
    pub applied: usize,
    pub duplicates: usize,
    pub conflicts: usize,
}

/// Progress of long work: (done, total).
pub type Progress<'a> = &'a mut dyn FnMut(u64, u64);

/// One replica. See the module docs for the write protocol.
pub struct Replica<E: EventStore, G: GraphStore> {
    engine: Engine,
    events: E,
    graph: G,
    clock: Box<dyn WallClock + Send>,
    conflicts: Vec<Conflict>,
    apply_chunk: usize,
    recovering: bool,
}

impl<E: EventStore, G: GraphStore> std::fmt::Debug for Replica<E, G> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("peer", self.engine.peer())
            .field("version_vector", self.engine.version_vector())
            .finish()
    }
}

impl<E: EventStore, G: GraphStore> Replica<E, G> {
    /// Creates a new replica over empty stores, recording `peer` as its id.
    pub fn create(
        mut events: E,
        graph: G,
        peer: PeerId,
        clock: Box<dyn WallClock + Send>,
    ) -> Result<Self, ReplicaError> {
        match events.meta(PEER_ID_KEY)? {
            Some(stored) if stored != peer.as_str() => {
                return Err(ReplicaError::PeerMismatch {
                    stored,
                    given: peer.to_string(),
                })
            }
            Some(_) => {}
            None => events.set_meta(PEER_ID_KEY, peer.as_str())?,
        }
        Self::open(events, graph, clock)
    }

    /// Opens an existing replica: replays the log and brings the graph store up to date.
    pub fn open(
        events: E,
        graph: G,
        clock: Box<dyn WallClock + Send>,
    ) -> Result<Self, ReplicaError> {
        Self::open_with_progress(events, graph, clock, &mut |_, _| {})
    }

    pub fn open_with_progress(
        events: E,
        graph: G,
        clock: Box<dyn WallClock + Send>,
        progress: Progress,
    ) -> Result<Self, ReplicaError> {
        let peer = events.meta(PEER_ID_KEY)?.ok_or(ReplicaError::NoPeerId)?;
        let peer = PeerId::new(peer)?;
        let mut replica = Replica {
            engine: Engine::new(peer),
            events,
            graph,
            clock,
            conflicts: Vec::new(),
            apply_chunk: DEFAULT_APPLY_CHUNK,
            recovering: false,
        };
        replica.recover(progress)?;
        Ok(replica)
    }

    /// Sets how many events go into one graph-store transaction when catching up.
    pub fn set_apply_chunk(&mut self, n: usize) {
        self.apply_chunk = n.max(1);
    }

    /// Rebuilds the engine from the log and re-applies whatever the graph store lacks.
    fn recover(&mut self, progress: Progress) -> Result<(), ReplicaError> {
        let watermark = self.graph.watermark()?;
        self.engine = Engine::new(self.engine.peer().clone());
        self.conflicts.clear();
        let total = self.events.count()?;
        let mut all = Vec::with_capacity(total as usize);
        self.events.scan(&VersionVector::new(), &mut |e| {
            all.push(e);
            Ok(())
        })?;
        let (inside, outside): (Vec<Event>, Vec<Event>) =
            all.into_iter().partition(|e| watermark.contains(&e.id));
        // Replay what the graph already holds without producing changes.
        self.engine.set_tracking(false);
        let mut done = 0u64;
        let order = causal_order(inside, self.engine.version_vector())?;
        for e in &order {
            self.engine.apply(e)?;
            done += 1;
            if done % 10_000 == 0 {
                progress(done, total);
            }
        }
        self.engine.set_tracking(true);
        let (_, conflicts) = self.engine.take_batch();
        self.conflicts.extend(conflicts);
        if self.engine.version_vector() != &watermark && !watermark.is_empty() {
            return Err(StoreError::Corrupt(format!(
                "the graph's apply watermark {:?} names events the log does not hold \
                 (the log holds {:?})",
                watermark,
                self.engine.version_vector()
            ))
            .into());
        }
        // Apply the rest, in chunks, each chunk one graph transaction. The graph may hold
        // some of these rows already (a store that commits in two steps, see
        // `ApplyBatch::may_exist`), so inserts must be idempotent here.
        let order = causal_order(outside, self.engine.version_vector())?;
        self.recovering = true;
        let applied = self.apply_in_chunks(&order, &mut |n, _| progress(done + n, total));
        self.recovering = false;
        applied?;
        progress(total, total);
        Ok(())
    }

    fn apply_in_chunks(
        &mut self,
        ordered: &[Event],
        progress: Progress,
    ) -> Result<usize, ReplicaError> {
        let mut applied = 0;
        for chunk in ordered.chunks(self.apply_chunk) {
            for e in chunk {
                self.engine.apply(e)?;
            }
            applied += chunk.len();
            self.flush()?;
            progress(applied as u64, ordered.len() as u64);
        }
        Ok(applied)
    }

    /// Sends the engine's pending changes to the graph store.
    fn flush(&mut self) -> Result<(), ReplicaError> {
        let (batch, conflicts) = self.engine.take_batch();
        self.conflicts.extend(conflicts);
        self.apply_batch(&batch)
    }

    fn apply_batch(&mut self, batch: &ApplyBatch) -> Result<(), ReplicaError> {
        if self.recovering {
            let mut b = batch.clone();
            b.may_exist = true;
            self.graph.apply(&b, self.engine.schema())?;
        } else {
            self.graph.apply(batch, self.engine.schema())?;
        }
        Ok(())
    }

    /// Runs `f`; if it fails, rebuilds the in-memory state from the stores, so that a failed
    /// write or import leaves the replica exactly as it was.
    fn or_recover<T>(
        &mut self,
        f: impl FnOnce(&mut Self) -> Result<T, ReplicaError>,
    ) -> Result<T, ReplicaError> {
        match f(self) {
            Ok(v) => Ok(v),
            Err(e) => {
                // Discard the half-applied in-memory state; the stores are the truth.
                let _ = self.engine.take_batch();
                self.recover(&mut |_, _| {})?;
                Err(e)
            }
        }
    }

    /// Validates and applies local ops as one atomic write: either every op becomes an event
    /// (durably logged, applied to the graph) or none does.
    pub fn write(&mut self, ops: Vec<Op>) -> Result<Vec<EventId>, ReplicaError> {
        self.write_with_progress(ops, &mut |_, _| {})
    }

    pub fn write_with_progress(
        &mut self,
        ops: Vec<Op>,
        progress: Progress,
    ) -> Result<Vec<EventId>, ReplicaError> {
        self.or_recover(|r| {
            let total = ops.len() as u64;
            let mut events = Vec::with_capacity(ops.len());
            for (i, op) in ops.into_iter().enumerate() {
                let e = r
                    .engine
                    .prepare(op, r.clock.now_ms())
                    .map_err(|source| ReplicaError::Op { index: i, source })?;
                r.engine.apply(&e)?;
                events.push(e);
                if i % 10_000 == 9_999 {
                    progress(i as u64 + 1, total * 2);
                }
            }
            r.events.append(&events)?;
            // The log holds everything now: a crash from here on is recovered on open.
            r.flush()?;
            progress(total * 2, total * 2);
            Ok(events.into_iter().map(|e| e.id).collect())
        })
    }

    /// Applies events received from another replica (a bundle, a sync message). Events
    /// already held are skipped; the rest must connect to this replica's history. All or
    /// nothing: an invalid event rejects the whole import, naming the event.
    pub fn import(&mut self, events: Vec<Event>) -> Result<ImportOutcome, ReplicaError> {
        self.import_with_progress(events, &mut |_, _| {})
    }

    pub fn import_with_progress(
        &mut self,
        events: Vec<Event>,
        progress: Progress,
    ) -> Result<ImportOutcome, ReplicaError> {
        let received = events.len();
        let conflicts_before = self.conflicts.len();
        self.or_recover(|r| {
            // The store checks every received event, duplicates included, for equivocation.
            let (fresh, dups): (Vec<Event>, Vec<Event>) = events
                .into_iter()
                .partition(|e| !r.engine.is_applied(&e.id));
            let order = causal_order(fresh, r.engine.version_vector())?;
            // `apply` checks each event once its causal past is applied (schema checks
            // need the tables its author had). Progress: applying in memory is the first
            // half of the work, storing and writing the graph the second.
            let total = order.len() as u64 * 2;
            for (i, e) in order.iter().enumerate() {
                r.engine.apply(e)?;
                if i % 10_000 == 9_999 {
                    progress(i as u64 + 1, total);
                }
            }
            let mut to_store = order.clone();
            to_store.extend(dups.iter().cloned());
            r.events.append(&to_store)?;
            let (batch, conflicts) = r.engine.take_batch();
            r.conflicts.extend(conflicts);
            r.apply_batch(&batch)?;
            progress(total, total);
            Ok(ImportOutcome {
                received,
                applied: order.len(),
                duplicates: dups.len(),
                conflicts: r.conflicts.len() - conflicts_before,
            })
        })
    }

    /// The events this replica holds that `since` does not contain, in causal order.
    pub fn events_since(&self, since: &VersionVector) -> Result<Vec<Event>, ReplicaError> {
        let mut out = Vec::new();
        self.events.scan(since, &mut |e| {
            out.push(e);
            Ok(())
        })?;
        Ok(out)
    }

    pub fn status(&mut self) -> Result<ReplicaStatus, ReplicaError> {
        let (nodes, edges) = self.engine.visible_counts();
        Ok(ReplicaStatus {
            peer_id: self.engine.peer().to_string(),
            version_vector: self.engine.version_vector().clone(),
            stored_events: self.events.count()?,
            applied_events: self.engine.version_vector().total(),
            schema_version: self.engine.schema().version,
            apply_watermark: self.graph.watermark()?,
            nodes,
            edges,
            conflicts: self.conflicts.len(),
        })
    }

    /// Every conflict detected since the replica was opened, replay included.
    pub fn conflicts(&self) -> &[Conflict] {
        &self.conflicts
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn peer(&self) -> &PeerId {
        self.engine.peer()
    }

    pub fn version_vector(&self) -> &VersionVector {
        self.engine.version_vector()
    }

    pub fn graph(&mut self) -> &mut G {
        &mut self.graph
    }

    pub fn event_store(&self) -> &E {
        &self.events
    }

    /// The stored graph, canonical.
    pub fn dump(&mut self) -> Result<GraphDump, ReplicaError> {
        Ok(self.graph.dump(self.engine.schema())?)
    }

    /// Hands back the stores.
    pub fn into_parts(self) -> (E, G) {
        (self.events, self.graph)
    }
}

/// Orders events so that each comes after its causal past (given what is already applied).
/// Events that can never become ready are reported as missing history.
pub fn causal_order(
    events: Vec<Event>,
    applied: &VersionVector,
) -> Result<Vec<Event>, ReplicaError> {
    let mut have = applied.clone();
    // Per peer, the events by counter; duplicates collapse.
    let mut by_peer: BTreeMap<PeerId, BTreeMap<u64, Event>> = BTreeMap::new();
    for e in events {
        if have.contains(&e.id) {
            continue;
        }
        by_peer
            .entry(e.id.peer.clone())
            .or_default()
            .insert(e.id.counter, e);
    }
    let total: usize = by_peer.values().map(|m| m.len()).sum();
    let mut out = Vec::with_capacity(total);
    let mut queue: VecDeque<PeerId> = by_peer.keys().cloned().collect();
    let mut stalled = 0;
    while let Some(p) = queue.pop_front() {
        let Some(list) = by_peer.get_mut(&p) else {
            continue;
        };
        let mut progressed = false;
        while let Some((&c, e)) = list.iter().next() {
            if c == have.get(&p) + 1 && have.dominates(&e.deps) {
                let e = list.remove(&c).expect("present");
                have.observe(&e.id);
                out.push(e);
                progressed = true;
            } else {
                break;
            }
        }
        if list.is_empty() {
            by_peer.remove(&p);
            stalled = 0;
        } else {
            queue.push_back(p);
            if progressed {
                stalled = 0;
            } else {
                stalled += 1;
                if stalled > queue.len() {
                    break;
                }
            }
        }
    }
    if let Some((_, list)) = by_peer.iter().next() {
        let first = list.values().next().expect("non-empty");
        let missing: Vec<String> = first
            .deps
            .iter()
            .filter(|(p, c)| have.get(p) < *c)
            .map(|(p, c)| format!("{p} up to {c}"))
            .chain(
                (first.id.counter > have.get(&first.id.peer) + 1)
                    .then(|| format!("{} up to {}", first.id.peer, first.id.counter - 1)),
            )
            .collect();
        return Err(ReplicaError::MissingHistory {
            count: by_peer.values().map(|m| m.len()).sum(),
            first: first.id.clone(),
            needs: missing.join(", "),
        });
    }
    Ok(out)
}
