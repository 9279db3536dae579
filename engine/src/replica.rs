//! A replica: an [`Engine`] driven against an [`EventStore`] and a [`GraphStore`].
//!
//! The order of every write is: validate and apply in memory → append to the event log
//! (durable) → apply the resulting batch to the graph store together with its watermark.
//! On open, events inside the graph's watermark are replayed silently, and the rest are
//! applied again, so a crash at any point loses nothing and applies nothing twice.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap};

use serde::Serialize;

use crate::antientropy::{self, EntityRow};
use crate::change::ApplyBatch;
use crate::change::GraphChange;
use crate::clock::{EventId, PeerId, VersionVector, WallClock};
use crate::conflict::Conflict;
pub use crate::core::{Core, Progress, Staged, DEFAULT_QUEUE_CAPACITY};
use crate::error::EngineError;
use crate::event::Entity;
use crate::event::{Event, Op};
use crate::ports::{EventStore, GraphDump, GraphStore, StoreError};
pub use crate::queue::CoalesceReport;
use crate::state::Engine;

/// Events applied per graph-store transaction when catching up or importing.
pub const DEFAULT_APPLY_CHUNK: usize = 20_000;

const PEER_ID_KEY: &str = "peer_id";
/// The replica's own counter when it went offline ("" when online).
const OFFLINE_MARK_KEY: &str = "offline_mark";
const QUEUE_CAPACITY_KEY: &str = "offline_queue_capacity";
/// "1" between a rewrite of the queue in the log and the move of the graph's watermark.
const REWRITE_PENDING_KEY: &str = "offline_queue_rewritten";
/// "1" between storing an installed snapshot and rebuilding the graph from it.
pub const GRAPH_REBUILD_KEY: &str = "graph_rebuild";
/// The received events held for the rest of their transactions (see [`Core::held`]): hex
/// of a MessagePack list of encoded events.
const HELD_KEY: &str = "held_events";
/// What each known peer holds, as far as this replica knows: JSON `{peer: vector}`.
const KNOWN_PEERS_KEY: &str = "known_peers";

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
    /// A write that a declared constraint refuses (not the owner of a guarded key, the
    /// bound would break, or a coordinated transaction holds the key).
    #[error("refused by a constraint: {0}")]
    Constraint(String),
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
    #[error(
        "a snapshot at {snapshot} cannot be installed here: this replica's log is compacted \
         up to {floor}, which the snapshot does not cover (repair with `diff --repair`)"
    )]
    SnapshotBehind { snapshot: String, floor: String },
    #[error(
        "the offline queue is full: {queued} ops queued, capacity {capacity}; this write of \
         {adding} ops was refused (sync, or raise the capacity)"
    )]
    QueueFull {
        capacity: usize,
        queued: usize,
        adding: usize,
    },
    #[error("{peer:?} is not a known peer of this replica (known: {known:?})")]
    UnknownPeer { peer: String, known: Vec<String> },
    /// An earlier failure left the in-memory state ahead of the stores, and rebuilding it
    /// from them failed: nothing more is done until a rebuild succeeds (each call tries).
    #[error(
        "this replica could not be rebuilt from its stores after an earlier failure, and \
         refuses work until it can be: {reason}"
    )]
    Unrecovered { reason: String },
}

/// Rows the graph store holds that the engine's resolved state does not: writes made
/// straight into the database, bypassing the engine.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Drift {
    /// In the graph, not in the engine's state (rows the engine would not show).
    pub extra: Vec<EntityRow>,
    /// In the engine's state, not in the graph (deleted behind its back).
    pub missing: Vec<EntityRow>,
    /// In both, with other values: (engine's row, graph's row).
    pub different: Vec<(EntityRow, EntityRow)>,
    /// Merkle tree hashes compared to find them.
    pub comparisons: u64,
}

impl Drift {
    pub fn is_empty(&self) -> bool {
        self.extra.is_empty() && self.missing.is_empty() && self.different.is_empty()
    }
}

/// The offline queue, as `status` reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct QueueStatus {
    pub offline: bool,
    /// Ops written since going offline, not yet sent.
    pub size: usize,
    /// Their encoded size.
    pub estimated_size_bytes: u64,
    pub capacity: usize,
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
    /// The vector of the snapshot the log is compacted into (empty: never compacted).
    pub compacted_floor: VersionVector,
    /// How many events the snapshot stands for.
    pub compacted_events: u64,
    /// Received events waiting for the rest of their transactions (not applied yet).
    pub held_events: usize,
    /// Imports that applied incomplete transactions because too many events were held.
    pub released_incomplete: u64,
}

/// What a compaction did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct CompactReport {
    /// The snapshot's vector after compaction.
    pub floor: VersionVector,
    /// Events removed from the log by this compaction.
    pub removed_events: u64,
    /// Events left in the log.
    pub remaining_events: u64,
    /// Events the snapshot stands for, in all.
    pub snapshot_events: u64,
    /// The snapshot's size, uncompressed (a SQLite log stores it zstd-compressed).
    pub snapshot_bytes: u64,
    /// The peers whose acknowledgements set the floor.
    pub known_peers: Vec<String>,
}

/// What installing a snapshot did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct InstallReport {
    /// Events the snapshot stands for.
    pub snapshot_events: u64,
    /// This replica's own log events it did not cover, applied on top.
    pub kept_events: u64,
    /// Log events it covered, removed.
    pub removed_events: u64,
}

/// What an import did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ImportOutcome {
    pub received: usize,
    pub applied: usize,
    pub duplicates: usize,
    pub conflicts: usize,
    /// Received events held, after this import, for the rest of their transactions.
    pub held: usize,
}

/// One replica. See the module docs for the write protocol.
pub struct Replica<E: EventStore, G: GraphStore> {
    /// The engine, its conflicts, the offline mark and whether the state is stale: what
    /// the JS host drives too.
    core: Core,
    events: E,
    graph: G,
    clock: Box<dyn WallClock + Send>,
    apply_chunk: usize,
    recovering: bool,
    /// The stored snapshot's vector, checksum and event count (empty, zero, zero if none).
    floor: VersionVector,
    floor_sum: [u8; 16],
    floor_count: u64,
    /// What each known peer holds (see `note_remote`), whether that changed since it was
    /// stored, and when it was stored.
    known: BTreeMap<String, VersionVector>,
    known_dirty: bool,
    known_saved_ms: u64,
    /// The Merkle entities of the state at a version vector, and the indexes built over
    /// them, shared by every session that asks (see [`Replica::merkle`]).
    merkle_cache: Option<MerkleCache>,
    /// The stored snapshot, read once and shared by every session that sends it (see
    /// [`Replica::shared_snapshot_for`]); valid while its vector is the floor.
    snapshot_cache: std::sync::Mutex<Option<std::sync::Arc<crate::snapshot::Snapshot>>>,
    /// Running checksums of the logged events, per peer, so that a sync point is checked
    /// without reading the log (see [`Replica::checksum_within`]). Built on first use,
    /// kept up to date by appends, dropped when the log is rewritten or recovered.
    checksums: std::sync::Mutex<Option<ChecksumIndex>>,
}

/// For each peer, `prefix[i]` is the XOR of the digests (first 16 bytes) of its logged
/// events `floor + 1 ..= floor + i + 1`: the log above the floor holds each peer's events
/// without a gap, so the checksum of the events inside any vector is one lookup per peer.
#[derive(Debug, Default)]
struct ChecksumIndex {
    floor: VersionVector,
    prefix: HashMap<PeerId, Vec<[u8; 16]>>,
}

impl ChecksumIndex {
    /// Adds an event; false if it does not come right after the peer's last one (then the
    /// index cannot be trusted), true if added or already in.
    fn push(&mut self, e: &Event) -> bool {
        let base = self.floor.get(&e.id.peer);
        let list = self.prefix.entry(e.id.peer.clone()).or_default();
        let next = base + list.len() as u64 + 1;
        if e.id.counter < next {
            return true;
        }
        if e.id.counter > next {
            return false;
        }
        let mut sum = list.last().copied().unwrap_or([0; 16]);
        crate::snapshot::Snapshot::fold(&mut sum, &e.digest());
        list.push(sum);
        true
    }
}

/// Entities and Merkle indexes of one state.
#[derive(Debug)]
struct MerkleCache {
    version: VersionVector,
    rows: std::sync::Arc<Vec<EntityRow>>,
    /// By bucket bits; a handful at most.
    indexes: Vec<(u32, std::sync::Arc<crate::merkle::MerkleIndex>)>,
}

/// Indexes kept per state: a summary's bucket bits depend on the asker's claimed count
/// within a narrow range, so few differ.
const MERKLE_INDEXES_KEPT: usize = 4;

impl<E: EventStore, G: GraphStore> std::fmt::Debug for Replica<E, G> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica")
            .field("peer", self.core.engine.peer())
            .field("version_vector", self.core.engine.version_vector())
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
            core: Core::new(peer),
            events,
            graph,
            clock,
            apply_chunk: DEFAULT_APPLY_CHUNK,
            recovering: false,
            floor: VersionVector::new(),
            floor_sum: [0; 16],
            floor_count: 0,
            known: BTreeMap::new(),
            known_dirty: false,
            known_saved_ms: 0,
            merkle_cache: None,
            snapshot_cache: std::sync::Mutex::new(None),
            checksums: std::sync::Mutex::new(None),
        };
        if let Some(text) = replica.events.meta(KNOWN_PEERS_KEY)? {
            replica.known = serde_json::from_str(&text)
                .map_err(|e| StoreError::Corrupt(format!("{KNOWN_PEERS_KEY}: {e}")))?;
        }
        replica.core.offline_mark = replica
            .events
            .meta(OFFLINE_MARK_KEY)?
            .filter(|s| !s.is_empty())
            .map(|s| s.parse::<u64>())
            .transpose()
            .map_err(|e| StoreError::Corrupt(format!("{OFFLINE_MARK_KEY}: {e}")))?;
        if let Some(c) = replica.events.meta(QUEUE_CAPACITY_KEY)? {
            replica.core.queue_capacity = c
                .parse()
                .map_err(|e| StoreError::Corrupt(format!("{QUEUE_CAPACITY_KEY}: {e}")))?;
        }
        replica.recover(progress)?;
        Ok(replica)
    }

    /// Sets how many events go into one graph-store transaction when catching up.
    /// Lowers the bound on held events (tests).
    #[cfg(test)]
    pub(crate) fn set_held_limit(&mut self, n: usize) {
        self.core.held_limit = n;
    }

    pub fn set_apply_chunk(&mut self, n: usize) {
        self.apply_chunk = n.max(1);
    }

    /// Rebuilds the engine from the log and re-applies whatever the graph store lacks.
    fn recover(&mut self, progress: Progress) -> Result<(), ReplicaError> {
        self.recover_log(progress)?;
        let held = match self.events.meta(HELD_KEY)? {
            None => Vec::new(),
            Some(text) => decode_held(&text)?,
        };
        self.core.restore_held(held);
        Ok(())
    }

    fn recover_log(&mut self, progress: Progress) -> Result<(), ReplicaError> {
        self.forget_checksums();
        let mut watermark = self.graph.watermark()?;
        self.core.conflicts.clear();
        let peer = self.core.engine.peer().clone();
        match self.events.snapshot()? {
            Some(snap) => {
                let (engine, conflicts) = snap.engine(peer)?;
                self.core.engine = engine;
                self.core.conflicts = conflicts;
                self.floor = snap.version_vector;
                self.floor_sum = snap.checksum;
                self.floor_count = snap.event_count;
            }
            None => self.core.engine = Engine::new(peer),
        }
        // An installed snapshot whose graph rebuild did not finish, or a graph store that
        // lacks what the snapshot holds (a new, empty database): the graph's rows are not
        // a state of this history. Replay everything, then rebuild it whole.
        let rebuild = self.events.meta(GRAPH_REBUILD_KEY)?.as_deref() == Some("1")
            || !watermark.dominates(&self.floor);
        if rebuild {
            watermark = VersionVector::new();
        }
        let total = self.events.count()?;
        let mut all = Vec::with_capacity(total as usize);
        self.events.scan(&VersionVector::new(), &mut |e| {
            all.push(e);
            Ok(())
        })?;
        let (inside, outside): (Vec<Event>, Vec<Event>) = all
            .into_iter()
            .partition(|e| rebuild || watermark.contains(&e.id));
        // Replay what the graph already holds without producing changes.
        self.core.engine.set_tracking(false);
        let mut done = 0u64;
        let order = causal_order(inside, self.core.engine.version_vector())?;
        for e in &order {
            self.core.engine.apply(e)?;
            done += 1;
            if done % 10_000 == 0 {
                progress(done, total);
            }
        }
        self.core.engine.set_tracking(true);
        let (_, conflicts) = self.core.engine.take_batch();
        self.core.conflicts.extend(conflicts);
        if rebuild {
            self.rebuild_graph()?;
            if self.events.meta(REWRITE_PENDING_KEY)?.as_deref() == Some("1") {
                // The rebuilt graph matches the log, rewritten queue included.
                self.events.set_meta(REWRITE_PENDING_KEY, "0")?;
            }
            progress(total, total);
            return Ok(());
        }
        let rewritten = self.events.meta(REWRITE_PENDING_KEY)?.as_deref() == Some("1");
        if rewritten {
            // The offline queue was rewritten in the log (fewer, equivalent events) but the
            // graph's watermark may still name the raw ones: its rows are the same, so move
            // the watermark back to the log, never beyond it.
            let vv = self.core.engine.version_vector().clone();
            if watermark != vv && watermark.dominates(&vv) {
                self.graph.apply(
                    &ApplyBatch {
                        changes: Vec::new(),
                        watermark: vv,
                        may_exist: false,
                    },
                    self.core.engine.schema(),
                )?;
            }
            self.events.set_meta(REWRITE_PENDING_KEY, "0")?;
        } else if self.core.engine.version_vector() != &watermark && !watermark.is_empty() {
            return Err(StoreError::Corrupt(format!(
                "the graph's apply watermark {:?} names events the log does not hold \
                 (the log holds {:?})",
                watermark,
                self.core.engine.version_vector()
            ))
            .into());
        }
        // Apply the rest, in chunks, each chunk one graph transaction. The graph may hold
        // some of these rows already (a store that commits in two steps, see
        // `ApplyBatch::may_exist`), so inserts must be idempotent here.
        let order = causal_order(outside, self.core.engine.version_vector())?;
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
                self.core.engine.apply(e)?;
            }
            applied += chunk.len();
            self.flush()?;
            progress(applied as u64, ordered.len() as u64);
        }
        Ok(applied)
    }

    /// Sends the engine's pending changes to the graph store.
    fn flush(&mut self) -> Result<(), ReplicaError> {
        let (batch, conflicts) = self.core.engine.take_batch();
        self.core.conflicts.extend(conflicts);
        self.apply_batch(&batch)
    }

    fn apply_batch(&mut self, batch: &ApplyBatch) -> Result<(), ReplicaError> {
        let batch = self.as_recovering(batch);
        self.graph.apply(&batch, self.core.engine.schema())?;
        Ok(())
    }

    /// `batch`, marked `may_exist` while recovering (every batch applied then may find its
    /// rows stored already).
    fn as_recovering<'b>(&self, batch: &'b ApplyBatch) -> std::borrow::Cow<'b, ApplyBatch> {
        if self.recovering {
            let mut b = batch.clone();
            b.may_exist = true;
            std::borrow::Cow::Owned(b)
        } else {
            std::borrow::Cow::Borrowed(batch)
        }
    }

    /// Appends the staged events to the log on another thread while the graph store does
    /// its work, which it commits only once the append is durable (see
    /// [`GraphStore::apply_when`]). `logged` is called once the append is durable, as in
    /// the sequential order. A failed append is the error returned, whatever the graph did
    /// (it rolled back); a failed apply after a good append is the sequential case.
    fn append_beside_apply(
        &mut self,
        staged: &Staged,
        logged: &mut dyn FnMut(),
    ) -> Result<(), ReplicaError> {
        let batch = self.as_recovering(&staged.batch);
        let batch = &*batch;
        let schema = self.core.engine.schema();
        let (events, graph) = (&mut self.events, &mut self.graph);
        let (appended, applied) = beside(
            || events.append(&staged.events),
            |ready| graph.apply_when(batch, schema, ready),
            logged,
        );
        appended?;
        self.note_appended(&staged.events);
        Ok(applied?)
    }

    /// Discards the half-applied in-memory state and rebuilds it from the stores, which are
    /// the truth. A failed rebuild is remembered: the replica refuses work until one
    /// succeeds.
    fn rebuild_from_stores(&mut self) {
        let _ = self.core.engine.take_batch();
        self.recovering = false;
        match self.recover(&mut |_, _| {}) {
            Ok(()) => self.core.stale = None,
            Err(e) => self.core.stale = Some(e.to_string()),
        }
    }

    /// If an earlier rebuild failed, tries again; until one succeeds, every call that would
    /// change the replica fails with [`ReplicaError::Unrecovered`]. Otherwise the next
    /// successful apply would commit a watermark covering a batch the graph never got.
    pub fn ensure_recovered(&mut self) -> Result<(), ReplicaError> {
        if self.core.stale.is_none() {
            return Ok(());
        }
        self.rebuild_from_stores();
        match &self.core.stale {
            None => Ok(()),
            Some(reason) => Err(ReplicaError::Unrecovered {
                reason: reason.clone(),
            }),
        }
    }

    /// Marks the in-memory state as untrustworthy (say, a panic happened while it was being
    /// changed): the next call that changes the replica first rebuilds it from the stores.
    pub fn mark_unrecovered(&mut self, reason: impl Into<String>) {
        self.core.stale = Some(reason.into());
    }

    /// Whether the replica is waiting for a successful rebuild (see [`ReplicaError::Unrecovered`]).
    pub fn is_unrecovered(&self) -> bool {
        self.core.stale.is_some()
    }

    /// Validates and applies local ops as one atomic write: either every op becomes an event
    /// (durably logged, applied to the graph) or none does.
    pub fn write(&mut self, ops: Vec<Op>) -> Result<Vec<EventId>, ReplicaError> {
        self.write_with_progress(ops, &mut |_, _| {})
    }

    // ------------------------------------------------------------------ offline queue

    /// Goes offline: from now on, own writes are counted in the offline queue (durably).
    pub fn go_offline(&mut self) -> Result<(), ReplicaError> {
        self.ensure_recovered()?;
        if self.core.offline_mark.is_none() {
            let mark = self.own_counter();
            self.events.set_meta(OFFLINE_MARK_KEY, &mark.to_string())?;
            self.core.offline_mark = Some(mark);
        }
        Ok(())
    }

    pub fn is_offline(&self) -> bool {
        self.core.offline_mark.is_some()
    }

    /// Sets (durably) how many ops the offline queue holds at most.
    pub fn set_queue_capacity(&mut self, capacity: usize) -> Result<(), ReplicaError> {
        self.events
            .set_meta(QUEUE_CAPACITY_KEY, &capacity.to_string())?;
        self.core.queue_capacity = capacity;
        Ok(())
    }

    fn own_counter(&self) -> u64 {
        self.core
            .engine
            .version_vector()
            .get(self.core.engine.peer())
    }

    /// The queued events: own events after the offline mark, in order.
    pub fn offline_queue(&self) -> Result<Vec<Event>, ReplicaError> {
        let Some(mark) = self.core.offline_mark else {
            return Ok(Vec::new());
        };
        let mut since = self.core.engine.version_vector().clone();
        since.set(self.core.engine.peer().clone(), mark);
        self.events_since(&since)
    }

    pub fn queue_status(&self) -> Result<QueueStatus, ReplicaError> {
        let queue = self.offline_queue()?;
        Ok(QueueStatus {
            offline: self.is_offline(),
            size: queue.len(),
            estimated_size_bytes: queue.iter().map(|e| e.encode().len() as u64).sum(),
            capacity: self.core.queue_capacity,
        })
    }

    /// Rewrites the offline queue into fewer, equivalent events (see [`crate::queue`]).
    /// The replica stays offline.
    pub fn coalesce_offline_queue(&mut self) -> Result<CoalesceReport, ReplicaError> {
        let Some(mark) = self.core.offline_mark else {
            return Ok(CoalesceReport::default());
        };
        self.rewrite_queue(mark, &[])
    }

    /// Goes online: coalesces the queue and clears the offline mark, in one step. What was
    /// queued is now ordinary history, sent by the next sync.
    pub fn go_online(&mut self) -> Result<CoalesceReport, ReplicaError> {
        let Some(mark) = self.core.offline_mark else {
            return Ok(CoalesceReport::default());
        };
        let report = self.rewrite_queue(mark, &[(OFFLINE_MARK_KEY, "")])?;
        self.core.offline_mark = None;
        Ok(report)
    }

    /// Goes online without coalescing the queue: the log is left as it is (for hosts that
    /// keep their own copy of the log and cannot rewrite it yet, as the JS host).
    pub fn go_online_keeping_queue(&mut self) -> Result<(), ReplicaError> {
        if self.core.offline_mark.is_some() {
            self.events.set_meta(OFFLINE_MARK_KEY, "")?;
            self.core.offline_mark = None;
        }
        Ok(())
    }

    fn rewrite_queue(
        &mut self,
        mark: u64,
        meta: &[(&str, &str)],
    ) -> Result<CoalesceReport, ReplicaError> {
        self.ensure_recovered()?;
        // Own events inside the snapshot (one installed from elsewhere may cover part of
        // the queue) are history that others hold: only what follows can be rewritten.
        let mark = mark.max(self.floor.get(self.peer()));
        let queue = self.offline_queue()?;
        let coalesced = crate::queue::coalesce(&queue, mark);
        let report = CoalesceReport {
            raw: queue.len(),
            coalesced: coalesced.len(),
        };
        if coalesced.len() == queue.len() {
            for (k, v) in meta {
                self.events.set_meta(k, v)?;
            }
            return Ok(report);
        }
        let mut all_meta = vec![(REWRITE_PENDING_KEY, "1")];
        all_meta.extend_from_slice(meta);
        let peer = self.core.engine.peer().clone();
        self.forget_checksums();
        self.events
            .replace_suffix(&peer, mark, &coalesced, &all_meta)?;
        // Rebuild the engine from the rewritten log; the graph's rows do not change, its
        // watermark moves back to the log (see `recover`).
        self.rebuild_from_stores();
        self.ensure_recovered()?;
        Ok(report)
    }

    pub fn write_with_progress(
        &mut self,
        ops: Vec<Op>,
        progress: Progress,
    ) -> Result<Vec<EventId>, ReplicaError> {
        self.ensure_recovered()?;
        self.check_constraints(&ops, &[])?;
        self.write_unchecked(ops, progress, &mut || {})
    }

    /// Checks a local write outside any transaction against the declared constraints: every
    /// guarded key it touches is owned here and kept within bounds, with `prepared` (the
    /// ops of transactions prepared here) applied too. Returns the locks it takes.
    pub fn check_constraints(
        &self,
        ops: &[Op],
        prepared: &[&[Op]],
    ) -> Result<Vec<crate::tx::Lock>, ReplicaError> {
        if self.core.engine.schema().constraints().next().is_none() {
            return Ok(Vec::new());
        }
        let data: Vec<Op> = ops
            .iter()
            .filter(|o| !matches!(o, Op::Schema(_) | Op::Seal | Op::Tx { .. }))
            .cloned()
            .collect();
        if data.is_empty() {
            return Ok(Vec::new());
        }
        let rules = crate::tx::EngineRules {
            engine: &self.core.engine,
            me: self.core.engine.peer().as_str(),
        };
        rules
            .check_local(&data, prepared)
            .map_err(ReplicaError::Constraint)
    }

    /// Commits this replica's part of a coordinated transaction: its commit marker and the
    /// events its ops become, in one log append and one graph batch. The constraints were
    /// checked when it prepared, and its locks kept them since: not checked again.
    pub fn commit_tx(
        &mut self,
        tx: &crate::tx::TxId,
        participants: &[String],
        ops: Vec<Op>,
    ) -> Result<Vec<EventId>, ReplicaError> {
        self.commit_tx_then(tx, participants, ops, &mut || {})
    }

    /// [`Replica::commit_tx`], calling `logged` once the marker and the ops are durable in
    /// the event log and before the graph applies them: from there on the commit stands
    /// (recovery finds the marker), so a participant may acknowledge it there. The rest
    /// runs before this returns, so nothing that goes through the replica sees the gap.
    pub fn commit_tx_then(
        &mut self,
        tx: &crate::tx::TxId,
        participants: &[String],
        ops: Vec<Op>,
        logged: &mut dyn FnMut(),
    ) -> Result<Vec<EventId>, ReplicaError> {
        self.ensure_recovered()?;
        let marker = Op::Tx {
            tx: tx.clone(),
            participants: participants.to_vec(),
            ops: u32::try_from(ops.len()).unwrap_or(u32::MAX),
        };
        let mut all = Vec::with_capacity(ops.len() + 1);
        all.push(marker);
        all.extend(ops);
        let ids = self.write_unchecked(all, &mut |_, _| {}, logged)?;
        // Other participants' parts received before this one was in are held (atomic
        // visibility); with it in, they may be complete: they are released now rather
        // than at the next import. If that fails, the commit stands (its marker is in
        // the log: the participant's recovery finds it) and the error is returned.
        if !self.core.held().is_empty() {
            self.import(Vec::new())?;
        }
        Ok(ids)
    }

    /// Received events held for the rest of their transactions (atomic visibility).
    pub fn held(&self) -> &[Event] {
        self.core.held()
    }

    /// What this replica has received durably: its version vector, plus the events it
    /// holds (stored before the import that held them returned; each peer's held events
    /// follow its applied ones without a gap). A session acknowledges this, so a peer
    /// that sent half a transaction knows it arrived and does not wait or send it again.
    pub fn received_vector(&self) -> VersionVector {
        let mut vv = self.version_vector().clone();
        for e in self.core.held() {
            vv.observe(&e.id);
        }
        vv
    }

    fn write_unchecked(
        &mut self,
        ops: Vec<Op>,
        progress: Progress,
        logged: &mut dyn FnMut(),
    ) -> Result<Vec<EventId>, ReplicaError> {
        let staged = self.staged(|core, clock| core.stage_write(ops, clock, progress))?;
        let ids = staged.ids();
        self.store_staged(staged, logged)?;
        let total = ids.len() as u64 * 2;
        progress(total, total);
        Ok(ids)
    }

    /// Stages a change on the core; if that failed after changing the in-memory state,
    /// rebuilds it from the stores.
    fn staged(
        &mut self,
        f: impl FnOnce(&mut Core, &dyn WallClock) -> Result<Staged, ReplicaError>,
    ) -> Result<Staged, ReplicaError> {
        match f(&mut self.core, &*self.clock) {
            Ok(staged) => Ok(staged),
            Err(e) => {
                if self.core.stale.is_some() {
                    self.rebuild_from_stores();
                }
                Err(e)
            }
        }
    }

    /// Stores a staged change: the log first (a crash from there on is recovered on open),
    /// then the graph, then the core takes it as done; `logged` is called in between. On
    /// failure the replica is rebuilt from the stores.
    fn store_staged(
        &mut self,
        staged: Staged,
        logged: &mut dyn FnMut(),
    ) -> Result<(), ReplicaError> {
        let stored = if self.graph.overlaps_append() {
            self.append_beside_apply(&staged, logged)
        } else {
            self.events
                .append(&staged.events)
                .map_err(ReplicaError::from)
                .and_then(|_| {
                    self.note_appended(&staged.events);
                    logged();
                    self.apply_batch(&staged.batch)
                })
        };
        match stored {
            Ok(()) => {
                self.core.confirm(staged);
                Ok(())
            }
            Err(e) => {
                self.rebuild_from_stores();
                Err(e)
            }
        }
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
        self.ensure_recovered()?;
        let now = self.clock.now_ms();
        let staged = self.staged(|core, _| core.stage_import(events, now, &mut *progress))?;
        let outcome = ImportOutcome {
            received,
            applied: staged.applied,
            duplicates: staged.duplicates,
            conflicts: staged.conflicts().len(),
            held: self.core.held().len(),
        };
        // Held events are stored before the events: a crash in between keeps them, and
        // those applied by then are dropped when they are read back.
        if let Some(held) = &staged.held {
            if let Err(e) = self.events.set_meta(HELD_KEY, &encode_held(held)) {
                self.rebuild_from_stores();
                return Err(e.into());
            }
        }
        self.store_staged(staged, &mut || {})?;
        let total = outcome.applied as u64 * 2;
        progress(total, total);
        Ok(outcome)
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

    /// One page of [`Replica::events_since`], from log position `from`, at most `limit`
    /// events: the events, the position to go on from, and whether the log's end was
    /// reached (see [`EventStore::scan_page`]).
    pub fn events_page(
        &self,
        since: &VersionVector,
        from: u64,
        limit: usize,
    ) -> Result<(Vec<Event>, u64, bool), ReplicaError> {
        let mut out = Vec::new();
        let (next, done) = self.events.scan_page(since, from, limit, &mut |e| {
            out.push(e);
            Ok(())
        })?;
        Ok((out, next, done))
    }

    pub fn status(&mut self) -> Result<ReplicaStatus, ReplicaError> {
        let (nodes, edges) = self.core.engine.visible_counts();
        Ok(ReplicaStatus {
            peer_id: self.core.engine.peer().to_string(),
            version_vector: self.core.engine.version_vector().clone(),
            stored_events: self.events.count()?,
            applied_events: self.core.engine.version_vector().total(),
            schema_version: self.core.engine.schema().version,
            apply_watermark: self.graph.watermark()?,
            nodes,
            edges,
            conflicts: self.core.conflicts.len(),
            compacted_floor: self.floor.clone(),
            compacted_events: self.floor_count,
            held_events: self.core.held().len(),
            released_incomplete: self.core.released_incomplete(),
        })
    }

    // ------------------------------------------------------------ compaction

    /// The vector of the snapshot the log is compacted into (empty if none).
    pub fn floor(&self) -> &VersionVector {
        &self.floor
    }

    /// What each known peer holds, as far as this replica knows.
    pub fn known_peers(&self) -> Result<BTreeMap<String, VersionVector>, ReplicaError> {
        Ok(self.known.clone())
    }

    /// Records that `peer` holds at least `vv`: its vector at a handshake, or an
    /// acknowledgement. Compaction never removes what a known peer may still need.
    ///
    /// A new peer is stored at once; later progress at most once a second (and by
    /// [`Replica::save_known_peers`]). Losing the latest progress in a crash is safe: the
    /// floor is then lower than it could be, never higher.
    ///
    /// At most [`crate::limits::MAX_KNOWN_PEERS`] peers are known: past that a new peer is
    /// not recorded (and this returns `Ok(false)`), so compaction does not wait for it.
    pub fn note_remote(&mut self, peer: &str, vv: &VersionVector) -> Result<bool, ReplicaError> {
        if peer == self.peer().as_str() {
            return Ok(false);
        }
        let new = !self.known.contains_key(peer);
        if new && self.known.len() >= crate::limits::MAX_KNOWN_PEERS {
            return Ok(false);
        }
        let entry = self.known.entry(peer.to_string()).or_default();
        if !new && entry.dominates(vv) {
            return Ok(true);
        }
        entry.merge(vv);
        self.known_dirty = true;
        let now = self.clock.now_ms();
        if new || now.saturating_sub(self.known_saved_ms) >= 1_000 {
            self.save_known_peers()?;
        }
        Ok(true)
    }

    /// Stores what is known of the peers, if anything changed since the last time.
    pub fn save_known_peers(&mut self) -> Result<(), ReplicaError> {
        if self.known_dirty {
            let text = serde_json::to_string(&self.known).expect("vectors serialize");
            self.events.set_meta(KNOWN_PEERS_KEY, &text)?;
            self.known_dirty = false;
            self.known_saved_ms = self.clock.now_ms();
        }
        Ok(())
    }

    /// Forgets every peer in `peers`, or none: an id that is not a known peer is refused
    /// with [`ReplicaError::UnknownPeer`] before anything changes.
    pub fn forget_peers(&mut self, peers: &[&str]) -> Result<(), ReplicaError> {
        if let Some(p) = peers.iter().find(|p| !self.known.contains_key(**p)) {
            return Err(ReplicaError::UnknownPeer {
                peer: p.to_string(),
                known: self.known.keys().cloned().collect(),
            });
        }
        for p in peers {
            self.known.remove(*p);
        }
        self.known_dirty = true;
        self.save_known_peers()
    }

    /// Stops waiting for `peer`: compaction no longer keeps events for it. Returns whether
    /// it was known.
    pub fn forget_peer(&mut self, peer: &str) -> Result<bool, ReplicaError> {
        let was = self.known.remove(peer).is_some();
        self.known_dirty = true;
        self.save_known_peers()?;
        Ok(was)
    }

    /// The events every known peer holds (and this replica too): what `compact` may fold
    /// into the snapshot. While offline, the queue stays out of it.
    pub fn compaction_floor(&self) -> Result<VersionVector, ReplicaError> {
        let mut floor = self.core.engine.version_vector().clone();
        for vv in self.known.values() {
            floor = floor.meet(vv);
        }
        if let Some(mark) = self.core.offline_mark {
            let own = floor.get(self.peer()).min(mark);
            floor.set(self.peer().clone(), own);
        }
        Ok(floor)
    }

    /// Compacts the log up to [`Replica::compaction_floor`].
    pub fn compact(&mut self) -> Result<CompactReport, ReplicaError> {
        self.compact_with_progress(&mut |_, _| {})
    }

    pub fn compact_with_progress(
        &mut self,
        progress: Progress,
    ) -> Result<CompactReport, ReplicaError> {
        self.save_known_peers()?;
        let floor = self.compaction_floor()?;
        self.compact_to_with_progress(&floor, progress)
    }

    /// Folds the events inside `floor` (joined with the current snapshot, and limited to
    /// what is applied here) into a new snapshot, and removes them from the log, in one
    /// atomic step. The visible graph does not change.
    pub fn compact_to(&mut self, floor: &VersionVector) -> Result<CompactReport, ReplicaError> {
        self.compact_to_with_progress(floor, &mut |_, _| {})
    }

    pub fn compact_to_with_progress(
        &mut self,
        floor: &VersionVector,
        progress: Progress,
    ) -> Result<CompactReport, ReplicaError> {
        self.ensure_recovered()?;
        let mut target = floor.meet(self.core.engine.version_vector());
        if let Some(mark) = self.core.offline_mark {
            // The offline queue stays in the log: coalescing rewrites it there.
            let own = target.get(self.peer()).min(mark);
            target.set(self.peer().clone(), own);
        }
        target.merge(&self.floor);
        let known_peers = self.known_peers()?.into_keys().collect();
        if self.floor.dominates(&target) {
            return Ok(CompactReport {
                floor: self.floor.clone(),
                removed_events: 0,
                remaining_events: self.events.count()?,
                snapshot_events: self.floor_count,
                snapshot_bytes: self.events.snapshot()?.map_or(0, |s| s.state.len() as u64),
                known_peers,
            });
        }
        // Replay the stored snapshot and the covered events into a second engine.
        let peer = self.peer().clone();
        let (mut engine, mut conflicts) = match self.events.snapshot()? {
            Some(snap) => snap.engine(peer)?,
            None => {
                let mut e = Engine::new(peer);
                e.set_tracking(false);
                (e, Vec::new())
            }
        };
        let mut covered = Vec::new();
        self.events.scan(&self.floor, &mut |e| {
            if target.contains(&e.id) {
                covered.push(e);
            }
            Ok(())
        })?;
        let mut checksum = self.floor_sum;
        let mut count = self.floor_count;
        for e in &covered {
            crate::snapshot::Snapshot::fold(&mut checksum, &e.digest());
            count += 1;
        }
        let total = covered.len() as u64;
        for (i, e) in causal_order(covered, engine.version_vector())?
            .iter()
            .enumerate()
        {
            engine.apply(e)?;
            if i % 10_000 == 9_999 {
                progress(i as u64 + 1, total);
            }
        }
        progress(total, total);
        let (_, found) = engine.take_batch();
        conflicts.extend(found);
        if engine.version_vector() != &target {
            return Err(StoreError::Corrupt(format!(
                "compacting up to {target:?}, the log held only {:?}",
                engine.version_vector()
            ))
            .into());
        }
        let snapshot = crate::snapshot::Snapshot {
            version_vector: target,
            event_count: count,
            checksum,
            state: engine.snapshot_state(&conflicts),
        };
        let removed = self.events.compact(&snapshot, &[])?;
        let snapshot_bytes = snapshot.state.len() as u64;
        self.floor = snapshot.version_vector;
        self.floor_sum = checksum;
        self.floor_count = count;
        Ok(CompactReport {
            floor: self.floor.clone(),
            removed_events: removed,
            remaining_events: self.events.count()?,
            snapshot_events: count,
            snapshot_bytes,
            known_peers,
        })
    }

    /// A snapshot to bootstrap a replica whose own log is compacted up to `remote_floor`:
    /// the stored one if it covers that floor, else one of this replica's whole state.
    pub fn snapshot_for(
        &self,
        remote_floor: &VersionVector,
    ) -> Result<crate::snapshot::Snapshot, ReplicaError> {
        if let Some(snap) = self.events.snapshot()? {
            if snap.version_vector.dominates(remote_floor) {
                return Ok(snap);
            }
        }
        let vv = self.core.engine.version_vector().clone();
        let (checksum, event_count) = self
            .checksum_within(&vv)?
            .expect("the replica's own vector dominates its floor");
        Ok(crate::snapshot::Snapshot {
            version_vector: vv,
            event_count,
            checksum,
            state: self.core.engine.snapshot_state(&self.core.conflicts),
        })
    }

    /// [`Replica::snapshot_for`], shared: the stored snapshot is read from the event store
    /// once and every session that sends it holds the same bytes (many clients behind the
    /// floor used to cost a copy of the state each, twice).
    pub fn shared_snapshot_for(
        &self,
        remote_floor: &VersionVector,
    ) -> Result<std::sync::Arc<crate::snapshot::Snapshot>, ReplicaError> {
        // The cache holds no invariant a panic could break: a poisoned lock is still usable.
        let mut cache = self
            .snapshot_cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(snap) = cache.as_ref() {
            if snap.version_vector == self.floor && snap.version_vector.dominates(remote_floor) {
                return Ok(snap.clone());
            }
        }
        let snap = std::sync::Arc::new(self.snapshot_for(remote_floor)?);
        if snap.version_vector == self.floor {
            *cache = Some(snap.clone());
        }
        Ok(snap)
    }

    /// Replaces this replica's state with `snap` plus this replica's own logged events that
    /// it does not cover, and rebuilds the graph store from the result. The log keeps only
    /// the uncovered events. A crash part-way is finished on the next open.
    pub fn install_snapshot(
        &mut self,
        snap: &crate::snapshot::Snapshot,
    ) -> Result<InstallReport, ReplicaError> {
        self.ensure_recovered()?;
        if !snap.version_vector.dominates(&self.floor) {
            return Err(ReplicaError::SnapshotBehind {
                snapshot: format!("{:?}", snap.version_vector),
                floor: format!("{:?}", self.floor),
            });
        }
        let (mut engine, mut conflicts) = snap.engine(self.peer().clone())?;
        // A snapshot comes from a peer: bounded like the events it stands for.
        let total = snap
            .version_vector
            .iter()
            .try_fold(0u64, |sum, (_, c)| sum.checked_add(c))
            .filter(|&t| t <= crate::limits::MAX_EVENT_COUNT);
        if total != Some(snap.event_count) {
            return Err(EngineError::InvalidSnapshot(format!(
                "it claims {} events for a vector of {:?} events (at most {})",
                snap.event_count,
                total,
                crate::limits::MAX_EVENT_COUNT
            ))
            .into());
        }
        let now = self.clock.now_ms();
        if engine.hlc().wall_ms > now.saturating_add(crate::limits::MAX_CLOCK_AHEAD_MS) {
            return Err(EngineError::InvalidSnapshot(format!(
                "its hybrid timestamp {} ms is more than a day ahead of this replica's clock \
                 ({now} ms)",
                engine.hlc().wall_ms
            ))
            .into());
        }
        let kept = self.events_since(&snap.version_vector)?;
        let kept_events = kept.len() as u64;
        for e in causal_order(kept, engine.version_vector())? {
            engine.apply(&e)?;
        }
        let (_, found) = engine.take_batch();
        conflicts.extend(found);
        let removed = self.events.compact(snap, &[(GRAPH_REBUILD_KEY, "1")])?;
        self.floor = snap.version_vector.clone();
        self.floor_sum = snap.checksum;
        self.floor_count = snap.event_count;
        self.core.engine = engine;
        self.core.conflicts = conflicts;
        let held = std::mem::take(&mut self.core.held);
        self.core.restore_held(held);
        // The log now holds the snapshot and the rebuild flag: a failed rebuild is
        // remembered, so nothing is applied onto the stale graph before a rebuild succeeds.
        if let Err(e) = self.rebuild_graph() {
            self.core.stale = Some(e.to_string());
            return Err(e);
        }
        Ok(InstallReport {
            snapshot_events: snap.event_count,
            kept_events,
            removed_events: removed,
        })
    }

    /// Drops and recreates every table of the graph store from the engine's state, then
    /// clears the rebuild flag.
    fn rebuild_graph(&mut self) -> Result<(), ReplicaError> {
        self.core.engine.rebuild_all();
        let (batch, found) = self.core.engine.take_batch();
        self.core.conflicts.extend(found);
        self.core.engine.set_tracking(true);
        self.graph.apply(&batch, self.core.engine.schema())?;
        self.events.set_meta(GRAPH_REBUILD_KEY, "0")?;
        Ok(())
    }

    /// Every conflict detected since the replica was opened, replay included.
    pub fn conflicts(&self) -> &[Conflict] {
        &self.core.conflicts
    }

    pub fn engine(&self) -> &Engine {
        &self.core.engine
    }

    pub fn peer(&self) -> &PeerId {
        self.core.engine.peer()
    }

    /// This state's entities as Merkle rows and an index over them with `bits` bucket bits
    /// (bits chosen by `bits_for`, given the row count), computed once per state and
    /// shared: many sessions asking about an unchanged state cost one dump and one index.
    pub fn merkle(
        &mut self,
        bits_for: impl FnOnce(usize) -> u32,
    ) -> (
        std::sync::Arc<Vec<EntityRow>>,
        std::sync::Arc<crate::merkle::MerkleIndex>,
    ) {
        let current = self.core.engine.version_vector();
        if self
            .merkle_cache
            .as_ref()
            .is_none_or(|c| &c.version != current)
        {
            let rows =
                antientropy::entities(&self.core.engine.dump(), self.core.engine.schema(), true);
            self.merkle_cache = Some(MerkleCache {
                version: current.clone(),
                rows: std::sync::Arc::new(rows),
                indexes: Vec::new(),
            });
        }
        let cache = self.merkle_cache.as_mut().expect("just filled");
        let bits = bits_for(cache.rows.len());
        if let Some((_, index)) = cache.indexes.iter().find(|(b, _)| *b == bits) {
            return (cache.rows.clone(), index.clone());
        }
        let index = std::sync::Arc::new(antientropy::index(&cache.rows, bits));
        if cache.indexes.len() >= MERKLE_INDEXES_KEPT {
            cache.indexes.remove(0);
        }
        cache.indexes.push((bits, index.clone()));
        (cache.rows.clone(), index)
    }

    pub fn version_vector(&self) -> &VersionVector {
        self.core.engine.version_vector()
    }

    pub fn graph(&mut self) -> &mut G {
        &mut self.graph
    }

    pub fn event_store(&self) -> &E {
        &self.events
    }

    // ------------------------------------------------------------------ sync points

    /// The XOR of the digests (truncated to 128 bits) of the logged events inside `vv`,
    /// and how many they are.
    /// None if `vv` does not contain the whole snapshot (some of its events are gone).
    pub fn checksum_within(
        &self,
        vv: &VersionVector,
    ) -> Result<Option<([u8; 16], u64)>, ReplicaError> {
        if !vv.dominates(&self.floor) {
            return Ok(None);
        }
        // The index holds no invariant a panic could break: a poisoned lock is usable.
        let mut guard = self
            .checksums
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if guard.as_ref().is_none_or(|i| i.floor != self.floor) {
            let mut index = ChecksumIndex {
                floor: self.floor.clone(),
                prefix: HashMap::new(),
            };
            let mut whole = true;
            self.events.scan(&self.floor, &mut |e| {
                whole &= index.push(&e);
                Ok(())
            })?;
            *guard = whole.then_some(index);
        }
        let Some(index) = guard.as_ref() else {
            // A log with a gap in some peer's events (never written by this code): read it.
            drop(guard);
            return self.checksum_within_by_scan(vv).map(Some);
        };
        let mut sum = self.floor_sum;
        let mut n = self.floor_count;
        for (peer, c) in vv.iter() {
            let base = self.floor.get(peer);
            let Some(list) = index.prefix.get(peer) else {
                continue;
            };
            let k = (c.saturating_sub(base) as usize).min(list.len());
            if k > 0 {
                for (s, x) in sum.iter_mut().zip(&list[k - 1]) {
                    *s ^= x;
                }
                n += k as u64;
            }
        }
        Ok(Some((sum, n)))
    }

    /// Keeps the checksum index up to date with events just appended to the log.
    fn note_appended(&self, events: &[Event]) {
        let mut guard = self
            .checksums
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if let Some(index) = guard.as_mut() {
            if index.floor != self.floor || !events.iter().all(|e| index.push(e)) {
                *guard = None;
            }
        }
    }

    /// Drops the checksum index (the log was rewritten): the next use rebuilds it.
    fn forget_checksums(&self) {
        *self
            .checksums
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = None;
    }

    /// [`Replica::checksum_within`] by reading the log (for a `vv` that dominates the floor).
    fn checksum_within_by_scan(&self, vv: &VersionVector) -> Result<([u8; 16], u64), ReplicaError> {
        let mut sum = self.floor_sum;
        let mut n = self.floor_count;
        self.events.scan(&self.floor, &mut |e| {
            if vv.contains(&e.id) {
                crate::snapshot::Snapshot::fold(&mut sum, &e.digest());
                n += 1;
            }
            Ok(())
        })?;
        Ok((sum, n))
    }

    /// The sync point of the events inside `common` (what both sides of a sync hold).
    /// None if the events inside `common` are partly compacted away here.
    pub fn sync_point(
        &self,
        common: &VersionVector,
    ) -> Result<Option<crate::sync::SyncPoint>, ReplicaError> {
        let Some((sum, n)) = self.checksum_within(common)? else {
            return Ok(None);
        };
        Ok(Some(crate::sync::SyncPoint {
            timestamp_ms: self.clock.now_ms(),
            event_count: n,
            version_vector: common.clone(),
            checksum: hex::encode(sum),
        }))
    }

    /// True if this replica holds exactly the events the sync point names.
    pub fn verify_sync_point(&self, sp: &crate::sync::SyncPoint) -> Result<bool, ReplicaError> {
        if !self
            .core
            .engine
            .version_vector()
            .dominates(&sp.version_vector)
        {
            return Ok(false);
        }
        let Some((sum, n)) = self.checksum_within(&sp.version_vector)? else {
            return Ok(false);
        };
        Ok(n == sp.event_count && hex::encode(sum) == sp.checksum)
    }

    /// The sync point recorded for `remote` (a URL), if any.
    pub fn stored_sync_point(
        &self,
        remote: &str,
    ) -> Result<Option<crate::sync::SyncPoint>, ReplicaError> {
        let Some(text) = self.events.meta(&format!("sync_point:{remote}"))? else {
            return Ok(None);
        };
        Ok(serde_json::from_str(&text).ok())
    }

    /// Forgets the sync point of `remote`: the next sync assumes nothing.
    pub fn clear_sync_point(&mut self, remote: &str) -> Result<(), ReplicaError> {
        self.events.set_meta(&format!("sync_point:{remote}"), "")?;
        Ok(())
    }

    pub fn store_sync_point(
        &mut self,
        remote: &str,
        sp: &crate::sync::SyncPoint,
    ) -> Result<(), ReplicaError> {
        let text = serde_json::to_string(sp).expect("sync points serialize");
        self.events
            .set_meta(&format!("sync_point:{remote}"), &text)?;
        Ok(())
    }

    // ------------------------------------------------------------------ drift

    /// Compares the graph store's rows with the engine's resolved state, by Merkle tree.
    pub fn drift(&mut self) -> Result<Drift, ReplicaError> {
        self.ensure_recovered()?;
        use std::collections::HashMap;
        let schema = self.core.engine.schema().clone();
        let mine = antientropy::entities(&self.core.engine.dump(), &schema, false);
        let stored = antientropy::entities(&self.graph.dump(&schema)?, &schema, false);
        let bits = crate::merkle::suggested_bucket_bits(mine.len().max(stored.len()));
        let (a, b) = (
            antientropy::index(&mine, bits),
            antientropy::index(&stored, bits),
        );
        let report = crate::merkle::diff(&a, &mut crate::merkle::IndexRemote::new(&b))
            .map_err(|e| StoreError::Corrupt(format!("comparing with the graph: {e}")))?;
        let by_key = |rows: &[EntityRow]| -> HashMap<_, EntityRow> {
            rows.iter().map(|r| (r.key, r.clone())).collect()
        };
        let (mine, stored) = (by_key(&mine), by_key(&stored));
        let take = |keys: &[[u8; 16]], from: &HashMap<_, EntityRow>| -> Vec<EntityRow> {
            keys.iter().filter_map(|k| from.get(k).cloned()).collect()
        };
        Ok(Drift {
            extra: take(&report.missing_here, &stored),
            missing: take(&report.missing_there, &mine),
            different: report
                .different
                .iter()
                .filter_map(|k| Some((mine.get(k)?.clone(), stored.get(k)?.clone())))
                .collect(),
            comparisons: report.comparisons,
        })
    }

    /// Makes drift part of the history: writes the ops that give the engine the graph's
    /// rows (adds for extra and different rows, deletes for missing ones). Returns the
    /// events written; they replicate like any write.
    pub fn capture_drift(&mut self, drift: &Drift) -> Result<Vec<EventId>, ReplicaError> {
        self.ensure_recovered()?;
        let (ops, _) = antientropy::ops_for(
            drift
                .extra
                .iter()
                .chain(drift.different.iter().map(|(_, g)| g)),
            &drift.missing,
            self.core.engine.schema(),
        );
        // The graph already holds the extra rows the engine now adds: insert idempotently.
        self.recovering = true;
        let written = self.write(ops);
        self.recovering = false;
        written
    }

    /// Undoes drift: writes the engine's rows back into the graph store (and removes rows
    /// the engine does not have), leaving the history as it is.
    pub fn revert_drift(&mut self, drift: &Drift) -> Result<usize, ReplicaError> {
        self.ensure_recovered()?;
        let schema = self.core.engine.schema().clone();
        let mut changes = Vec::new();
        for row in &drift.extra {
            match antientropy::entity_of(row, &schema) {
                Some(Entity::Node(n)) => changes.push(GraphChange::DeleteNode(n)),
                Some(Entity::Edge(e)) => changes.push(GraphChange::DeleteEdge(e)),
                None => {}
            }
        }
        for row in drift
            .missing
            .iter()
            .chain(drift.different.iter().map(|(m, _)| m))
        {
            match antientropy::entity_of(row, &schema) {
                Some(Entity::Node(node)) => changes.push(GraphChange::UpsertNode {
                    node,
                    values: row.row.clone(),
                    is_new: false,
                    changed: Vec::new(),
                }),
                Some(Entity::Edge(edge)) => changes.push(GraphChange::UpsertEdge {
                    edge,
                    values: row.row.iter().skip(5).cloned().collect(),
                    is_new: false,
                }),
                None => {}
            }
        }
        let n = changes.len();
        self.graph.apply(
            &ApplyBatch {
                changes,
                watermark: self.core.engine.version_vector().clone(),
                may_exist: true,
            },
            &schema,
        )?;
        Ok(n)
    }

    /// The stored graph, canonical.
    pub fn dump(&mut self) -> Result<GraphDump, ReplicaError> {
        Ok(self.graph.dump(self.core.engine.schema())?)
    }

    /// Hands back the stores.
    pub fn into_parts(self) -> (E, G) {
        (self.events, self.graph)
    }
}

/// Whether a graph store whose apply watermark is `watermark` lags behind the event log
/// (its snapshot included), or awaits the rebuild of an installed snapshot: then opening
/// the replica brings it up to date. For read-only callers that look before opening.
pub fn graph_is_behind(
    events: &dyn EventStore,
    watermark: &VersionVector,
) -> Result<bool, StoreError> {
    if events.meta(GRAPH_REBUILD_KEY)?.as_deref() == Some("1") {
        return Ok(true);
    }
    let snapshot = events.snapshot()?;
    let stored = snapshot.as_ref().map_or(0, |s| s.event_count) + events.count()?;
    let floor_covered = snapshot.is_none_or(|s| watermark.dominates(&s.version_vector));
    Ok(watermark.total() < stored || !floor_covered)
}

fn encode_held(events: &[Event]) -> String {
    let list: Vec<serde_bytes::ByteBuf> = events
        .iter()
        .map(|e| serde_bytes::ByteBuf::from(e.encode()))
        .collect();
    hex::encode(rmp_serde::to_vec(&list).expect("byte strings serialize"))
}

fn decode_held(text: &str) -> Result<Vec<Event>, ReplicaError> {
    let corrupt = |what: String| StoreError::Corrupt(format!("the held events: {what}"));
    let bytes = hex::decode(text).map_err(|e| corrupt(e.to_string()))?;
    let list: Vec<serde_bytes::ByteBuf> =
        rmp_serde::from_slice(&bytes).map_err(|e| corrupt(e.to_string()))?;
    list.iter()
        .map(|b| Event::decode(b).map_err(|e| corrupt(e.to_string()).into()))
        .collect()
}

/// Orders events so that each comes after its causal past (given what is already applied).
/// Events that can never become ready are reported as missing history.
///
/// The output is the input wherever the input is already a causal order (see
/// [`reorder`]). Most inputs are: a log replayed on open or compaction, and a bundle or a
/// sync batch, are read from a log in the order its events were applied. So one pass
/// checks that first, keeping each event its causal past is met by what came before and
/// skipping what is applied or repeated; the first event that is not ready hands the whole
/// input (what passed, that event and the rest, in order) to [`reorder`], which gives the
/// same result for it as for the original input (the skipped events are ones it skips
/// too). The pass does a version-vector lookup per event and dependency; [`reorder`]'s
/// maps and heap cost 3-4 µs an event at 1M events (README, "Cost curves").
pub fn causal_order(
    events: Vec<Event>,
    applied: &VersionVector,
) -> Result<Vec<Event>, ReplicaError> {
    let mut have = applied.clone();
    let mut out = Vec::with_capacity(events.len());
    let mut rest = events.into_iter();
    while let Some(e) = rest.next() {
        if have.contains(&e.id) {
            continue;
        }
        let (p, c) = (&e.id.peer, e.id.counter);
        let ready = c == have.get(p) + 1
            && e.deps
                .iter()
                .all(|(q, dep)| have.get(q) >= dep || (q == p && dep < c));
        if !ready {
            out.push(e);
            out.extend(rest);
            return reorder(out, applied);
        }
        have.observe(&e.id);
        out.push(e);
    }
    Ok(out)
}

/// [`causal_order`] for an input that is not already a causal order: Kahn's algorithm,
/// ready events taken by their position in the input.
fn reorder(events: Vec<Event>, applied: &VersionVector) -> Result<Vec<Event>, ReplicaError> {
    let mut have = applied.clone();
    // Per peer, the events by counter; duplicates collapse. Each keeps its position in the
    // input (its first), and ready events go out by position: the output is the input
    // wherever the input is already a causal order. A replica's log is in the order its
    // events were applied, so replaying it (recovery) applies them in that same order.
    // Any other causal order is valid for the CRDT, but an event a hostile peer sent with
    // too small a causal past (say, an edge between nodes it does not list) applies only
    // where its nodes came first: taking peers in name order made such an event fail on
    // replay, and the replica could never be rebuilt (found by the hub_session fuzzer).
    let mut by_peer: BTreeMap<PeerId, BTreeMap<u64, (usize, Event)>> = BTreeMap::new();
    for (i, e) in events.into_iter().enumerate() {
        if have.contains(&e.id) {
            continue;
        }
        by_peer
            .entry(e.id.peer.clone())
            .or_default()
            .entry(e.id.counter)
            .or_insert((i, e));
    }
    let total: usize = by_peer.values().map(|m| m.len()).sum();
    let mut out = Vec::with_capacity(total);
    // Kahn's algorithm: each event waits for the event ids it needs (its predecessor on
    // its own peer, and the last event of each dependency not yet here); observing an
    // event wakes those waiting for it. Linear in the events and their dependencies, where
    // taking peers in turns was quadratic in adversarial batches (each peer's one event
    // depending on the next peer's).
    let mut needs: HashMap<EventId, usize> = HashMap::with_capacity(total);
    let mut waiting: HashMap<(PeerId, u64), Vec<EventId>> = HashMap::new();
    let mut ready: BinaryHeap<Reverse<(usize, EventId)>> = BinaryHeap::new();
    let mut position: HashMap<EventId, usize> = HashMap::with_capacity(total);
    for list in by_peer.values() {
        for (i, e) in list.values() {
            position.insert(e.id.clone(), *i);
            let (p, c) = (&e.id.peer, e.id.counter);
            let mut n = 0;
            let mut wait_for = |peer: &PeerId, counter: u64, n: &mut usize| {
                waiting
                    .entry((peer.clone(), counter))
                    .or_default()
                    .push(e.id.clone());
                *n += 1;
            };
            if c > have.get(p) + 1 {
                wait_for(p, c - 1, &mut n);
            }
            for (q, dep) in e.deps.iter() {
                // A dependency on an earlier event of its own peer comes with the
                // predecessor; one on a later or the same event can never be met.
                if have.get(q) >= dep || (q == p && dep < c) {
                    continue;
                }
                wait_for(q, dep, &mut n);
            }
            if n == 0 {
                ready.push(Reverse((*i, e.id.clone())));
            } else {
                needs.insert(e.id.clone(), n);
            }
        }
    }
    while let Some(Reverse((_, id))) = ready.pop() {
        let list = by_peer.get_mut(&id.peer).expect("a waiting event's peer");
        let (_, e) = list.remove(&id.counter).expect("a ready event is pending");
        if list.is_empty() {
            by_peer.remove(&id.peer);
        }
        have.observe(&e.id);
        out.push(e);
        for w in waiting
            .remove(&(id.peer.clone(), id.counter))
            .unwrap_or_default()
        {
            let n = needs.get_mut(&w).expect("a waiting event counts its needs");
            *n -= 1;
            if *n == 0 {
                needs.remove(&w);
                ready.push(Reverse((position[&w], w)));
            }
        }
    }
    if let Some((_, list)) = by_peer.iter().next() {
        let (_, first) = list.values().next().expect("non-empty");
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

#[cfg(test)]
mod tests;

/// Runs `append` on another thread while `apply` runs on this one, and returns both
/// results. `apply` gets a `ready` to call before it commits anything: `ready` waits for
/// the append, calls `logged` if it succeeded, and fails if it did not. If `apply` never
/// called `ready`, the append is still waited for (and `logged` called) before this
/// returns. Without threads (WASM), the append runs first.
fn beside(
    append: impl FnOnce() -> Result<usize, StoreError> + Send,
    apply: impl FnOnce(&mut dyn FnMut() -> Result<(), StoreError>) -> Result<(), StoreError>,
    logged: &mut dyn FnMut(),
) -> (Result<usize, StoreError>, Result<(), StoreError>) {
    let failed = || StoreError::Corrupt("the log append failed: the batch was rolled back".into());
    #[cfg(not(target_arch = "wasm32"))]
    {
        std::thread::scope(|s| {
            let mut pending = Some(s.spawn(append));
            let mut appended: Option<Result<usize, StoreError>> = None;
            let mut wait =
                |pending: &mut Option<
                    std::thread::ScopedJoinHandle<'_, Result<usize, StoreError>>,
                >,
                 appended: &mut Option<Result<usize, StoreError>>| {
                    if let Some(handle) = pending.take() {
                        let result = handle
                            .join()
                            .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
                        if result.is_ok() {
                            logged();
                        }
                        *appended = Some(result);
                    }
                };
            let applied = apply(&mut || {
                wait(&mut pending, &mut appended);
                match &appended {
                    Some(Ok(_)) => Ok(()),
                    _ => Err(failed()),
                }
            });
            wait(&mut pending, &mut appended);
            (appended.expect("the append was waited for"), applied)
        })
    }
    #[cfg(target_arch = "wasm32")]
    {
        let appended = append();
        if appended.is_ok() {
            logged();
        }
        let ok = appended.is_ok();
        let applied = apply(&mut || if ok { Ok(()) } else { Err(failed()) });
        (appended, applied)
    }
}
