//! What the JS host asks of the engine, in plain Rust (tested natively; `lib.rs` only binds
//! it to JS). Everything crosses the boundary as JSON text or bytes.
//!
//! The host keeps the log in the application's Kuzu database, beside the graph: a node
//! table `_ks_log(seq INT64, body STRING)`, each body a MessagePack event in base64 (Kuzu
//! strings are the one value type both JS hosts pass exactly). Inside, the engine runs the
//! same [`Replica`] as native replicas, over two in-memory stores: a copy of that log, kept
//! encoded ([`PackedEventStore`]), and a graph store that records what it is asked to apply
//! ([`Recorder`]). After each change (a write, an import, a message of a sync session) the
//! host takes what the stores received as a [`HostPlan`]: DDL (auto-committed, idempotent)
//! and one transaction holding the new log rows, the graph statements and the watermark.
//! It commits it and confirms; if it cannot, it drops this core and opens a new one from
//! the log in Kuzu. So the log and the graph commit together, and opening replays the log
//! and applies nothing.
//!
//! A snapshot (from a bundle or a hub whose log is compacted) is kept beside the log, in
//! `_ks_snapshot`, as the CLI's bundle format in base64 parts. Installing one rewrites the
//! log and rebuilds every table, which takes DDL, which Kuzu cannot run inside the
//! transaction: so, as on native replicas, the plan first commits the snapshot, the
//! rewritten log and a "graph rebuild" mark (`before`), then the DDL, then the rows with
//! the mark cleared. A host that finds the mark when it opens rebuilds the graph first
//! ([`Host::recovery_plan`]).

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use base64::display::Base64Display;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use kuzu_sync_engine::change::GraphChange;
use kuzu_sync_engine::cypher::{self, Param, Statement, META_TABLE, UNWIND_CHUNK};
use kuzu_sync_engine::json::parse_op_lines;
use kuzu_sync_engine::packed_log::BlockCodec;
use kuzu_sync_engine::replica::GRAPH_REBUILD_KEY;
use kuzu_sync_engine::sync::{Lifecycle, Output, Session, SessionConfig, CAP_SNAPSHOT, CAP_ZSTD};
use kuzu_sync_engine::{
    ApplyBatch, Event, EventStore, GraphDump, GraphStore, PackedEventStore, PeerId, Replica,
    Schema, Snapshot, StoreError, VersionVector, WallClock,
};
use kuzu_sync_protocol::frame::{Encoder, FrameDecoder, DEFAULT_MAX_FRAME, HANDSHAKE_MAX_FRAME};
use kuzu_sync_protocol::{Bundle, BundleV1};
use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;
use serde_json::{json, Value as Json};

/// The node table that holds the log.
pub const LOG_TABLE: &str = "_ks_log";

/// The node table that holds the snapshot the log is compacted into, if any.
pub const SNAPSHOT_TABLE: &str = "_ks_snapshot";

/// Base64 characters per `_ks_snapshot` row.
const SNAPSHOT_PART: usize = 128 << 10;

/// The statements a host runs once when it opens a database (auto-committed, idempotent).
pub fn setup_statements() -> Vec<String> {
    vec![
        cypher::meta_table_ddl(),
        format!(
            "CREATE NODE TABLE IF NOT EXISTS {LOG_TABLE}(seq INT64, body STRING, PRIMARY KEY (seq))"
        ),
        format!(
            "CREATE NODE TABLE IF NOT EXISTS {SNAPSHOT_TABLE}(part INT64, body STRING, PRIMARY KEY (part))"
        ),
    ]
}

/// The query that reads the stored snapshot's parts in order (no row: none).
pub fn read_snapshot_query() -> String {
    format!("MATCH (s:{SNAPSHOT_TABLE}) RETURN s.body ORDER BY s.part")
}

/// Log rows a host reads per page when it opens (see [`Loader`]).
pub const LOG_PAGE: u64 = 2_000;

/// The query that reads the log's extent: one row, the number of rows and the highest
/// `seq` (null when empty), both as strings.
pub fn log_extent_query() -> String {
    format!("MATCH (l:{LOG_TABLE}) RETURN CAST(count(*) AS STRING), CAST(max(l.seq) AS STRING)")
}

/// The query that reads the log's rows with `from <= seq < to`, in order: one string
/// column, the body.
pub fn read_log_page_query(from: u64, to: u64) -> String {
    format!(
        "MATCH (l:{LOG_TABLE}) WHERE l.seq >= {from} AND l.seq < {to} RETURN l.body ORDER BY l.seq"
    )
}

/// The query that reads a meta value (`$k`): one string column, or no row.
pub fn read_meta_query() -> String {
    format!("MATCH (m:{META_TABLE}) WHERE m.k = $k RETURN m.v")
}

/// The statement that sets a meta value (`$k`, `$v`).
pub fn write_meta_statement() -> String {
    format!("MERGE (m:{META_TABLE} {{k: $k}}) SET m.v = $v")
}

/// An error as the host throws it: the native engine's message.
#[derive(Debug)]
pub struct HostError(pub String);

impl<E: std::fmt::Display> From<E> for HostError {
    fn from(e: E) -> Self {
        HostError(e.to_string())
    }
}

/// What the host runs for one change.
#[derive(Debug, Default, Serialize)]
pub struct HostPlan {
    /// Run first, in a transaction of their own, when the log is rewritten (a snapshot was
    /// installed): the new log and snapshot, and the graph-rebuild mark.
    pub before: Vec<PlanStatement>,
    /// Then each on its own (Kuzu does not mix DDL and data in a transaction).
    pub ddl: Vec<String>,
    /// Then in one transaction: the log rows, the graph's statements, the watermark.
    pub data: Vec<PlanStatement>,
    /// The tables whose rows or definitions change.
    pub tables: Vec<String>,
    /// What the change did: `{ids, applied}` for a write, `{applied, duplicates,
    /// conflicts}` for an import.
    pub outcome: Json,
}

/// One statement of a plan, serialized as `{"cypher": …, "params": {…}}` straight from its
/// rows: held as a `serde_json::Value` tree, the plan of a write of 1,000 edges took about
/// 2 MB of WASM memory at its peak (a map per row), three times its text.
#[derive(Debug)]
pub enum PlanStatement {
    /// A statement of the graph's, or one of the host's own (meta, snapshot parts). Its
    /// text is shared with the statements that repeat it (`cypher::plan_shared`: 1,000
    /// new edges held 1,000 copies of one 400-byte text, 0.5 MB at a write's peak).
    Cypher(Statement<Arc<str>>),
    /// Appends log rows `{s, b}`: the events' encodings, numbered from `first_seq`, each
    /// row's `s` its number and `b` its encoding in base64 (encoded as it is serialized).
    Log {
        first_seq: u64,
        bodies: Vec<Box<[u8]>>,
    },
}

impl Serialize for PlanStatement {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut statement = serializer.serialize_map(Some(2))?;
        match self {
            PlanStatement::Cypher(s) => {
                statement.serialize_entry("cypher", &*s.cypher)?;
                statement.serialize_entry("params", &Params(&s.params))?;
            }
            PlanStatement::Log { first_seq, bodies } => {
                statement.serialize_entry("cypher", &log_cypher())?;
                statement.serialize_entry(
                    "params",
                    &LogParams {
                        first_seq: *first_seq,
                        bodies,
                    },
                )?;
            }
        }
        statement.end()
    }
}

/// A statement's parameters, as a JSON object.
struct Params<'a>(&'a [(String, Param)]);

impl Serialize for Params<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(name, p)| (name, ParamJson(p))))
    }
}

/// A parameter: a string, or an array of rows, each an object of strings.
struct ParamJson<'a>(&'a Param);

impl Serialize for ParamJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            Param::Text(t) => serializer.serialize_str(t),
            Param::Rows(rows) => serializer.collect_seq(rows.iter().map(|row| RowJson(row))),
        }
    }
}

struct RowJson<'a>(&'a [(String, String)]);

impl Serialize for RowJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(field, v)| (field, v)))
    }
}

/// The parameters of a log statement: `{"rows": [{"b": body, "s": seq}, …]}`.
struct LogParams<'a> {
    first_seq: u64,
    bodies: &'a [Box<[u8]>],
}

impl Serialize for LogParams<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut params = serializer.serialize_map(Some(1))?;
        params.serialize_entry("rows", &LogRows(self))?;
        params.end()
    }
}

struct LogRows<'a>(&'a LogParams<'a>);

impl Serialize for LogRows<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(
            self.0
                .bodies
                .iter()
                .zip(self.0.first_seq..)
                .map(|(body, seq)| LogRow { seq, body }),
        )
    }
}

struct LogRow<'a> {
    seq: u64,
    body: &'a [u8],
}

impl Serialize for LogRow<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut row = serializer.serialize_map(Some(2))?;
        row.serialize_entry("b", &Text(Base64Display::new(self.body, &STANDARD)))?;
        row.serialize_entry("s", &Text(self.seq))?;
        row.end()
    }
}

/// A value serialized as a string, its `Display` written straight into the JSON text.
struct Text<T>(T);

impl<T: std::fmt::Display> Serialize for Text<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(&self.0)
    }
}

/// A graph store that keeps what it is asked to apply, for the host to run.
#[derive(Debug, Default)]
pub struct Recorder {
    watermark: VersionVector,
    batches: Vec<(ApplyBatch, Schema)>,
}

impl GraphStore for Recorder {
    fn watermark(&mut self) -> Result<VersionVector, StoreError> {
        Ok(self.watermark.clone())
    }

    fn apply(&mut self, batch: &ApplyBatch, schema: &Schema) -> Result<(), StoreError> {
        self.watermark = batch.watermark.clone();
        if !batch.changes.is_empty() || self.batches.is_empty() {
            self.batches.push((batch.clone(), schema.clone()));
        }
        Ok(())
    }

    fn dump(&mut self, _schema: &Schema) -> Result<GraphDump, StoreError> {
        Err(StoreError::Corrupt(
            "the JS host's rows are read from its own Kuzu connection".into(),
        ))
    }
}

/// The wall clock the host sets before each call (`Date.now()` in JS).
#[derive(Debug, Clone, Default)]
struct HostClock(Arc<AtomicU64>);

impl WallClock for HostClock {
    fn now_ms(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

const PEER_ID_KEY: &str = "peer_id";
const OFFLINE_MARK_KEY: &str = "offline_mark";
const QUEUE_CAPACITY_KEY: &str = "offline_queue_capacity";

/// A live sync session with a hub: the session state machine and the frame codec; the
/// host owns the socket.
#[derive(Debug)]
struct Sync {
    session: Session,
    decoder: FrameDecoder,
    encoder: Encoder,
}

/// What one step of a sync session asks of the host, in this order: commit `plan` (if
/// not empty) and confirm, send `frames`, report `events`, then close if `close`.
#[derive(Debug, Default, Serialize)]
pub struct SyncStep {
    pub plan: HostPlan,
    #[serde(skip)]
    pub frames: Vec<Vec<u8>>,
    pub events: Vec<Lifecycle>,
    pub close: bool,
    /// The session has exchanged everything both sides held at the handshake.
    pub synced: bool,
    /// More received messages wait: call `sync_receive` again with no bytes.
    pub more: bool,
}

/// What a plan brings to the host's durable stores once committed.
#[derive(Debug)]
struct Staged {
    /// The log's length.
    events: u64,
    /// The in-memory log's position after its last event.
    position: u64,
    /// The stored snapshot's vector.
    floor: VersionVector,
}

/// The engine as the JS host drives it.
pub struct Host {
    replica: HostReplica,
    clock: HostClock,
    /// Events in the host's durable log (`_ks_log` rows, numbered from 0).
    committed: u64,
    /// The in-memory log's position after the last event of the durable one. Positions
    /// only grow: after a snapshot install they no longer count events.
    committed_position: u64,
    /// The vector of the snapshot in the host's durable store (empty: none).
    floor: VersionVector,
    /// The host's durable graph-rebuild mark is set: the next plan rebuilds the graph and
    /// clears it.
    rebuilding: bool,
    /// A plan handed to the host and not yet confirmed.
    staged: Option<Staged>,
    /// Why this core must not be used any more (a plan the host could not commit).
    dead: Option<String>,
    sync: Option<Sync>,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("peer", self.replica.peer())
            .field("committed", &self.committed)
            .finish()
    }
}

/// Opens a [`Host`] from its durable log given in pages, so that the whole log is never
/// held decoded (or as base64) at once: `new`, `push` each page in log order, `finish`.
#[derive(Debug)]
pub struct Loader {
    peer: PeerId,
    store: PackedEventStore<ZstdBlocks>,
    stored: Stored,
    /// The log's rows pushed so far.
    rows: u64,
    /// The events stored and the snapshot's vector: the graph's watermark.
    vv: VersionVector,
    floor: VersionVector,
}

impl Loader {
    /// Starts from the stored snapshot and marks (see [`Stored`]).
    pub fn new(peer: &str, mut stored: Stored) -> Result<Loader, HostError> {
        let peer = PeerId::new(peer)?;
        let mut store = PackedEventStore::with_codec(ZstdBlocks);
        let mut floor = VersionVector::new();
        if let Some(text) = stored.snapshot.take().filter(|t| !t.is_empty()) {
            let snap = decode_snapshot(&text)
                .map_err(|e| HostError(format!("the stored snapshot is corrupt: {}", e.0)))?;
            floor = snap.version_vector.clone();
            store.compact(&snap, &[])?;
        }
        Ok(Loader {
            peer,
            store,
            stored,
            rows: 0,
            vv: floor.clone(),
            floor,
        })
    }

    /// The next logged bodies, in log order.
    pub fn push(&mut self, bodies: &[String]) -> Result<(), HostError> {
        let mut events = Vec::with_capacity(bodies.len());
        for body in bodies {
            let e = decode_body(body).map_err(|e| {
                HostError(format!("the log's entry {} is corrupt: {}", self.rows, e.0))
            })?;
            self.vv.observe(&e.id);
            events.push(e);
            self.rows += 1;
        }
        self.store.append(&events)?;
        Ok(())
    }

    /// The host, over everything pushed.
    pub fn finish(self) -> Result<Host, HostError> {
        let Loader {
            peer,
            mut store,
            stored,
            rows,
            vv,
            floor,
        } = self;
        store.set_meta(PEER_ID_KEY, peer.as_str())?;
        if let Some(m) = stored.offline_mark {
            store.set_meta(OFFLINE_MARK_KEY, &m.to_string())?;
        }
        if let Some(c) = stored.queue_capacity {
            store.set_meta(QUEUE_CAPACITY_KEY, &c.to_string())?;
        }
        if stored.rebuilding {
            // The graph's rows are not a state of this history: the replica rebuilds it.
            store.set_meta(GRAPH_REBUILD_KEY, "1")?;
        }
        let clock = HostClock::default();
        // The graph holds what the log holds: opening replays and applies nothing.
        let graph = Recorder {
            watermark: vv,
            batches: Vec::new(),
        };
        let mut replica = Replica::open(store, graph, Box::new(clock.clone()))?;
        if replica.peer() != &peer {
            return Err(HostError(format!(
                "this log belongs to peer \"{}\", not \"{peer}\"",
                replica.peer()
            )));
        }
        if !stored.rebuilding {
            replica.graph().batches.clear();
        }
        let committed = replica.event_store().count()?;
        if committed != rows {
            // Rows would be numbered over existing ones: refuse rather than corrupt.
            return Err(HostError(format!(
                "the log holds {rows} entries, of which {committed} are distinct events its \
                 snapshot does not cover"
            )));
        }
        Ok(Host {
            replica,
            clock,
            committed,
            // A new in-memory log numbers its events from 0.
            committed_position: committed,
            floor,
            rebuilding: stored.rebuilding,
            staged: None,
            dead: None,
            sync: None,
        })
    }
}

impl Host {
    /// Opens from the logged bodies, in log order, the stored snapshot (its parts joined)
    /// and graph-rebuild mark, and the stored offline mark and queue capacity. If the mark
    /// is set, [`Host::recovery_plan`] must be committed before anything else. (A host
    /// with a long log gives it in pages, through a [`Loader`].)
    pub fn open(peer: &str, log: &[String], stored: Stored) -> Result<Host, HostError> {
        let mut loader = Loader::new(peer, stored)?;
        loader.push(log)?;
        loader.finish()
    }

    /// After [`Host::open`] found the graph-rebuild mark: the plan that rebuilds the graph
    /// and clears the mark (empty otherwise). Commit and confirm it before anything else.
    pub fn recovery_plan(&mut self) -> Result<HostPlan, HostError> {
        if !self.rebuilding || self.staged.is_some() {
            return Ok(HostPlan::default());
        }
        self.take_plan(Ok::<(), String>(()))
    }

    /// Whether this core refuses all work (a plan was aborted): open a new one.
    pub fn is_dead(&self) -> bool {
        self.dead.is_some()
    }

    pub fn replica(&self) -> &HostReplica {
        &self.replica
    }

    fn ready(&mut self, now_ms: u64) -> Result<(), HostError> {
        if let Some(reason) = &self.dead {
            return Err(HostError(format!(
                "this replica must be reopened from its log: {reason}"
            )));
        }
        if self.staged.is_some() {
            return Err(HostError(
                "a change is already staged: confirm or abort it first".into(),
            ));
        }
        self.clock.0.store(now_ms, Ordering::Relaxed);
        Ok(())
    }

    /// Writes local ops, given as JSON lines in the format of `kuzu-sync write`.
    pub fn write(&mut self, op_lines: &str, now_ms: u64) -> Result<HostPlan, HostError> {
        self.ready(now_ms)?;
        let ops = parse_op_lines(op_lines, self.replica.engine().schema())?
            .into_iter()
            .map(|(_, op)| op)
            .collect();
        let done = self.replica.write(ops);
        let ids: Vec<String> = done
            .as_ref()
            .map(|ids| {
                ids.iter()
                    .map(|id| format!("{}:{}", id.peer, id.counter))
                    .collect()
            })
            .unwrap_or_default();
        let mut plan = self.take_plan(done.map(|_| ()))?;
        plan.outcome = json!({ "applied": ids.len(), "ids": ids });
        Ok(plan)
    }

    /// Imports a bundle's events (the CLI's bundle format).
    pub fn import_bundle(&mut self, bytes: &[u8], now_ms: u64) -> Result<HostPlan, HostError> {
        self.ready(now_ms)?;
        let bundle = kuzu_sync_protocol::decode(bytes)?;
        // Its snapshot first, if it holds events this replica lacks (as the CLI does).
        let mut snapshot_events = 0;
        if let Some(snap) = bundle.snapshot() {
            if !self
                .replica
                .version_vector()
                .dominates(&snap.version_vector)
            {
                if let Err(e) = self.replica.install_snapshot(snap) {
                    return Err(self.take_plan(Err(e)).unwrap_err());
                }
                snapshot_events = snap.event_count;
            }
        }
        let done = self.replica.import(bundle.into_events());
        let outcome = match &done {
            Ok(o) => json!({
                "applied": o.applied,
                "duplicates": o.duplicates,
                "conflicts": o.conflicts,
                "snapshotEvents": snapshot_events,
            }),
            Err(_) => Json::Null,
        };
        let mut plan = self.take_plan(done.map(|_| ()))?;
        plan.outcome = outcome;
        Ok(plan)
    }

    /// What the stores received since the last confirmed plan, as a plan. On an error the
    /// replica has rebuilt itself from its in-memory stores; if those had already taken
    /// part of the change, this core is dropped (the host reopens from its log).
    fn take_plan<E: std::fmt::Display>(
        &mut self,
        done: Result<(), E>,
    ) -> Result<HostPlan, HostError> {
        if let Err(e) = done {
            self.replica.graph().batches.clear();
            if self.stores_changed()? {
                self.abort(&e.to_string());
            }
            return Err(HostError(e.to_string()));
        }
        self.pending_plan().inspect_err(|e| self.abort(&e.0))
    }

    /// Whether the in-memory log differs from the host's durable one.
    fn stores_changed(&mut self) -> Result<bool, HostError> {
        log_changed(&mut self.replica, self.committed, &self.floor)
    }

    fn stored_floor(&mut self) -> Result<VersionVector, HostError> {
        stored_floor(&mut self.replica)
    }

    fn pending_plan(&mut self) -> Result<HostPlan, HostError> {
        let floor = self.stored_floor()?;
        // A snapshot was installed: the log is rewritten whole, beside the snapshot.
        let rewrite = floor != self.floor;
        let (from, position) = if rewrite {
            (0, 0)
        } else {
            (self.committed, self.committed_position)
        };
        // The new events' encodings, logged as they are stored.
        let mut new_bodies = Vec::new();
        let next_position = self.replica.event_store().scan_encoded(position, |e| {
            new_bodies.push(Box::<[u8]>::from(e));
        })?;
        let batches = std::mem::take(&mut self.replica.graph().batches);
        let mut plan = HostPlan::default();
        let graph_changes = batches.iter().any(|(b, _)| !b.changes.is_empty());
        if !rewrite && new_bodies.is_empty() && !graph_changes && !self.rebuilding {
            return Ok(plan);
        }
        self.staged = Some(Staged {
            events: from + new_bodies.len() as u64,
            position: next_position,
            floor: floor.clone(),
        });
        let log_rows = log_statements(from, new_bodies);
        if rewrite {
            let snap = self
                .replica
                .event_store()
                .snapshot()?
                .expect("a changed floor is a stored snapshot");
            plan.before
                .push(plain(format!("MATCH (l:{LOG_TABLE}) DELETE l")));
            plan.before.extend(log_rows);
            plan.before
                .push(plain(format!("MATCH (s:{SNAPSHOT_TABLE}) DELETE s")));
            plan.before
                .extend(snapshot_statements(self.replica.peer(), &snap));
            if graph_changes {
                plan.before.push(meta_statement(GRAPH_REBUILD_KEY, "1"));
                self.rebuilding = true;
            }
        } else {
            plan.data.extend(log_rows);
        }
        for (batch, schema) in &batches {
            let graph = cypher::plan_shared(batch, schema)?;
            plan.ddl.extend(graph.ddl);
            plan.data
                .extend(graph.data.into_iter().map(PlanStatement::Cypher));
            plan.tables.extend(batch.changes.iter().map(table_of));
        }
        if self.rebuilding {
            plan.data.push(meta_statement(GRAPH_REBUILD_KEY, "0"));
        }
        plan.tables.sort();
        plan.tables.dedup();
        Ok(plan)
    }

    /// The host committed the plan it was given.
    pub fn confirm(&mut self) -> Result<(), HostError> {
        let end = self
            .staged
            .take()
            .ok_or_else(|| HostError("no change is staged".into()))?;
        self.committed = end.events;
        self.committed_position = end.position;
        self.floor = end.floor;
        self.rebuilding = false;
        Ok(())
    }

    /// The host could not commit a plan: this core holds events its log lacks, so it
    /// refuses all work; the host opens a new one from its log.
    pub fn abort(&mut self, reason: &str) {
        self.staged = None;
        self.sync = None;
        self.dead = Some(format!("the host could not store a change: {reason}"));
    }

    /// A bundle of the events not in `since` (all of them if `None`), starting from the
    /// stored snapshot if `since` lacks events it stands for (as the CLI's `export`).
    pub fn export_bundle(&self, since: Option<&VersionVector>) -> Result<Vec<u8>, HostError> {
        let since = since.cloned().unwrap_or_default();
        let snapshot = if since.dominates(self.replica.floor()) {
            None
        } else {
            Some(self.replica.snapshot_for(&VersionVector::new())?)
        };
        let mut after = since.clone();
        if let Some(s) = &snapshot {
            after.merge(&s.version_vector);
        }
        let events = self.replica.events_since(&after)?;
        Ok(kuzu_sync_protocol::encode(&Bundle::V1(BundleV1 {
            source_peer: self.replica.peer().to_string(),
            since,
            until: self.replica.version_vector().clone(),
            events,
            snapshot,
        })))
    }

    pub fn status(&mut self) -> Result<Json, HostError> {
        let s = self.replica.status()?;
        Ok(json!({
            "peerId": s.peer_id,
            "versionVector": s.version_vector,
            "storedEvents": s.stored_events,
            "schemaVersion": s.schema_version,
            "nodes": s.nodes,
            "edges": s.edges,
            "conflicts": s.conflicts,
            "heldEvents": s.held_events,
            "offline": self.replica.is_offline(),
        }))
    }

    pub fn conflicts(&self) -> Json {
        serde_json::to_value(self.replica.conflicts()).unwrap_or(Json::Null)
    }

    pub fn queue_status(&self) -> Result<Json, HostError> {
        let q = self.replica.queue_status()?;
        Ok(json!({
            "offline": q.offline,
            "queued": q.size,
            "estimatedSizeBytes": q.estimated_size_bytes,
            "capacity": q.capacity,
        }))
    }

    /// Goes offline; returns the mark the host must store (`None`: already offline).
    pub fn go_offline(&mut self) -> Result<Option<u64>, HostError> {
        if self.replica.is_offline() {
            return Ok(None);
        }
        self.replica.go_offline()?;
        let mark = self.replica.event_store().meta(OFFLINE_MARK_KEY)?;
        Ok(mark.and_then(|m| m.parse().ok()))
    }

    /// Goes online (the queue is not coalesced on JS replicas); the host clears the mark.
    pub fn go_online(&mut self) -> Result<(), HostError> {
        Ok(self.replica.go_online_keeping_queue()?)
    }

    // ------------------------------------------------------------------ live sync

    /// Starts a client session (a new connection): the frames to send first.
    pub fn sync_start(
        &mut self,
        token: Option<String>,
        now_ms: u64,
    ) -> Result<SyncStep, HostError> {
        self.ready(now_ms)?;
        let config = SessionConfig {
            auth_token: token,
            capabilities: vec![CAP_ZSTD.to_string(), CAP_SNAPSHOT.to_string()],
            ..SessionConfig::default()
        };
        let mut session = Session::client(config);
        let outs = session.start(&self.replica);
        self.sync = Some(Sync {
            session,
            decoder: FrameDecoder::new(HANDSHAKE_MAX_FRAME),
            encoder: Encoder::default(),
        });
        self.step(outs)
    }

    /// Bytes received on the connection (may be empty, to continue after `more`): handles
    /// complete messages until one changes the replica (its plan must be committed before
    /// anything else happens) or none is left.
    pub fn sync_receive(&mut self, bytes: &[u8], now_ms: u64) -> Result<SyncStep, HostError> {
        self.ready(now_ms)?;
        let Some(sync) = self.sync.as_mut() else {
            return Err(HostError("no sync session is running".into()));
        };
        sync.decoder.push(bytes);
        let mut outs = Vec::new();
        let mut more = false;
        loop {
            if sync.session.is_established() {
                sync.decoder.set_max_frame(DEFAULT_MAX_FRAME);
            }
            let msg = match sync.decoder.next_message() {
                Ok(Some(m)) => m,
                Ok(None) => break,
                Err(e) => {
                    outs.extend(sync.session.protocol_error(e.to_string()));
                    break;
                }
            };
            outs.extend(sync.session.receive(msg, &mut self.replica));
            if sync.session.is_closed() {
                break;
            }
            if log_changed(&mut self.replica, self.committed, &self.floor)?
                || !self.replica.graph().batches.is_empty()
            {
                more = true;
                break;
            }
        }
        let mut step = self.step(outs)?;
        step.more = more && !step.close;
        Ok(step)
    }

    /// After local writes: the frames that stream them to the hub.
    pub fn sync_local_changed(&mut self, now_ms: u64) -> Result<SyncStep, HostError> {
        self.ready(now_ms)?;
        let outs = match self.sync.as_mut() {
            Some(s) => s.session.local_changed(&self.replica),
            None => Vec::new(),
        };
        self.step(outs)
    }

    /// The connection ended: drops the session.
    pub fn sync_end(&mut self) {
        self.sync = None;
    }

    fn step(&mut self, outs: Vec<Output>) -> Result<SyncStep, HostError> {
        let mut step = SyncStep {
            plan: self.take_plan(Ok::<(), String>(()))?,
            ..SyncStep::default()
        };
        let Some(sync) = self.sync.as_mut() else {
            return Ok(step);
        };
        let mut queue = outs;
        while !queue.is_empty() {
            let mut next = Vec::new();
            for out in queue {
                match out {
                    Output::Send(msg) => {
                        sync.encoder.compress = sync.session.compression();
                        match sync.encoder.encode(&msg) {
                            Ok((frame, _)) => step.frames.push(frame),
                            Err(e) => next.extend(sync.session.protocol_error(e.to_string())),
                        }
                    }
                    Output::Event(ev) => step.events.push(ev),
                    Output::Close => step.close = true,
                    Output::Pong(_) => {}
                    // JS replicas take no part in transactions (yet).
                    Output::Tx { .. } => next.extend(
                        sync.session
                            .protocol_error("this replica takes no part in transactions".into()),
                    ),
                }
            }
            queue = next;
        }
        step.close |= sync.session.is_closed();
        step.synced = sync.session.is_synced();
        if step.close {
            self.sync = None;
        }
        Ok(step)
    }
}

fn table_of(c: &GraphChange) -> String {
    match c {
        GraphChange::CreateTable(t) => t.name().to_string(),
        GraphChange::AddColumns { table, .. } | GraphChange::DropTable(table) => table.clone(),
        GraphChange::UpsertNode { node, .. } | GraphChange::DeleteNode(node) => node.table.clone(),
        GraphChange::UpsertEdge { edge, .. } | GraphChange::DeleteEdge(edge) => edge.table.clone(),
    }
}

pub type HostReplica = Replica<PackedEventStore<ZstdBlocks>, Recorder>;

/// The in-memory log's sealed blocks, compressed with zstd (the pure-Rust one in WASM):
/// MessagePack events of one schema repeat their table and property names. See
/// [`crate::blocks`].
#[derive(Debug, Default, Clone, Copy)]
pub struct ZstdBlocks;

impl BlockCodec for ZstdBlocks {
    fn pack(&self, raw: &[u8]) -> Vec<u8> {
        crate::blocks::pack(raw)
    }

    fn unpack<'a>(&self, packed: &'a [u8], raw_len: usize) -> Result<Cow<'a, [u8]>, String> {
        crate::blocks::unpack(packed, raw_len)
    }
}

/// Whether the replica's in-memory log differs from a durable one of `committed` events
/// and a snapshot at `floor`.
fn log_changed(
    replica: &mut HostReplica,
    committed: u64,
    floor: &VersionVector,
) -> Result<bool, HostError> {
    Ok(replica.event_store().count()? != committed || &stored_floor(replica)? != floor)
}

/// The vector of the snapshot in the replica's in-memory log (empty: none).
fn stored_floor(replica: &mut HostReplica) -> Result<VersionVector, HostError> {
    Ok(replica.event_store().floor())
}

/// A statement without parameters, as a plan holds it.
fn plain(cypher: String) -> PlanStatement {
    PlanStatement::Cypher(Statement {
        cypher: cypher.into(),
        params: Vec::new(),
    })
}

fn text_param(name: &str, value: &str) -> (String, Param) {
    (name.to_string(), Param::Text(value.to_string()))
}

fn meta_statement(key: &str, value: &str) -> PlanStatement {
    PlanStatement::Cypher(Statement {
        cypher: write_meta_statement().into(),
        params: vec![text_param("k", key), text_param("v", value)],
    })
}

/// The statement that appends the rows `$rows` (`{s, b}`) to the log.
fn log_cypher() -> String {
    format!("UNWIND $rows AS r CREATE (:{LOG_TABLE} {{seq: CAST(r.s AS INT64), body: r.b}})")
}

/// The statements that append events (their encodings) to the log, numbered from `seq`.
fn log_statements(mut seq: u64, mut bodies: Vec<Box<[u8]>>) -> Vec<PlanStatement> {
    let mut statements = Vec::new();
    while !bodies.is_empty() {
        let rest = bodies.split_off(bodies.len().min(UNWIND_CHUNK));
        let first_seq = seq;
        seq += bodies.len() as u64;
        statements.push(PlanStatement::Log { first_seq, bodies });
        bodies = rest;
    }
    statements
}

/// The statements that store `snap`: as a bundle (checked and compressed like a file the
/// CLI writes), in base64 parts.
fn snapshot_statements(peer: &PeerId, snap: &Snapshot) -> Vec<PlanStatement> {
    let bytes = kuzu_sync_protocol::encode(&Bundle::V1(BundleV1 {
        source_peer: peer.to_string(),
        since: VersionVector::new(),
        until: snap.version_vector.clone(),
        events: Vec::new(),
        snapshot: Some(snap.clone()),
    }));
    let text = STANDARD.encode(bytes);
    text.as_bytes()
        .chunks(SNAPSHOT_PART)
        .enumerate()
        .map(|(i, part)| {
            PlanStatement::Cypher(Statement {
                cypher: format!("CREATE (:{SNAPSHOT_TABLE} {{part: CAST($p AS INT64), body: $b}})")
                    .into(),
                params: vec![
                    text_param("p", &i.to_string()),
                    text_param("b", std::str::from_utf8(part).expect("base64 is ASCII")),
                ],
            })
        })
        .collect()
}

/// The stored snapshot, from its parts joined.
fn decode_snapshot(text: &str) -> Result<Snapshot, HostError> {
    let raw = STANDARD.decode(text)?;
    let bundle = kuzu_sync_protocol::decode(&raw)?;
    bundle
        .snapshot()
        .cloned()
        .ok_or_else(|| HostError("it holds no snapshot".into()))
}

/// What the host read from its durable store besides the log.
#[derive(Debug, Default, Clone)]
pub struct Stored {
    /// The `_ks_snapshot` parts, joined (empty or `None`: no snapshot).
    pub snapshot: Option<String>,
    /// The graph-rebuild mark is set.
    pub rebuilding: bool,
    pub offline_mark: Option<u64>,
    pub queue_capacity: Option<usize>,
}

/// An event as the log stores it: MessagePack (the wire's encoding), in base64.
pub fn encode_body(e: &Event) -> String {
    STANDARD.encode(e.encode())
}

pub fn decode_body(body: &str) -> Result<Event, HostError> {
    let raw = STANDARD.decode(body)?;
    Ok(Event::decode(&raw)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SCHEMA: &str = r#"{"op":"ddl","cypher":"CREATE NODE TABLE User(name STRING, age INT64, PRIMARY KEY(name))"}"#;

    /// A plan as the JS side reads it.
    fn json(plan: &HostPlan) -> Json {
        serde_json::from_str(&serde_json::to_string(plan).unwrap()).unwrap()
    }

    /// The log bodies a plan appends, in order.
    fn logged(plan: &HostPlan) -> Vec<String> {
        statements(&json(plan)["data"], LOG_TABLE)
            .into_iter()
            .flat_map(|s| s["params"]["rows"].as_array().unwrap().clone())
            .map(|r| r["b"].as_str().unwrap().to_string())
            .collect()
    }

    #[test]
    fn a_write_plans_log_rows_graph_statements_and_watermark_in_order() {
        let mut h = Host::open("a", &[], Stored::default()).unwrap();
        let plan = h
            .write(
                &format!(
                    "{SCHEMA}\n{}",
                    r#"{"op":"add_node","table":"User","props":{"name":"x","age":3}}"#
                ),
                1_000,
            )
            .unwrap();
        assert!(
            plan.ddl.iter().any(|d| d.contains("`User`")),
            "{:?}",
            plan.ddl
        );
        assert_eq!(logged(&plan).len(), 2);
        let data = json(&plan)["data"].clone();
        let last = data.as_array().unwrap().last().unwrap()["cypher"]
            .as_str()
            .unwrap();
        assert!(last.contains(META_TABLE), "the watermark goes last: {last}");
        assert_eq!(plan.tables, vec!["User".to_string()]);
        assert_eq!(plan.outcome["ids"], json!(["a:1", "a:2"]));
        // Until confirmed, nothing else.
        assert!(h
            .write(SCHEMA, 1_000)
            .unwrap_err()
            .0
            .contains("already staged"));
        h.confirm().unwrap();
        // Reopened from the logged bodies: the same state, and counters go on.
        let mut again = Host::open("a", &logged(&plan), Stored::default()).unwrap();
        assert_eq!(
            again.replica().version_vector(),
            h.replica().version_vector()
        );
        let next = again
            .write(
                r#"{"op":"update","table":"User","key":"x","prop":"age","value":4}"#,
                2_000,
            )
            .unwrap();
        assert_eq!(next.outcome["ids"], json!(["a:3"]));
        assert_eq!(logged(&next).len(), 1);
    }

    #[test]
    fn a_refused_write_plans_nothing_and_an_aborted_plan_kills_the_core() {
        let mut h = Host::open("a", &[], Stored::default()).unwrap();
        let plan = h.write(SCHEMA, 1_000).unwrap();
        h.confirm().unwrap();
        let bad = h
            .write(r#"{"op":"add_node","table":"Nope","props":{}}"#, 1_000)
            .unwrap_err();
        assert!(bad.0.contains("unknown table \"Nope\""), "{}", bad.0);
        assert!(!h.is_dead());
        let staged = h
            .write(
                r#"{"op":"add_node","table":"User","props":{"name":"y"}}"#,
                1_000,
            )
            .unwrap();
        assert_eq!(logged(&staged).len(), 1);
        h.abort("disk full");
        assert!(h.is_dead());
        assert!(h.write(SCHEMA, 1_000).unwrap_err().0.contains("reopened"));
        // The log holds the schema only.
        let h = Host::open("a", &logged(&plan), Stored::default()).unwrap();
        assert_eq!(h.replica().version_vector().total(), 1);
    }

    /// The statements of `part` (an array of them, as JSON) whose Cypher contains `what`.
    fn statements<'a>(part: &'a Json, what: &str) -> Vec<&'a Json> {
        part.as_array()
            .unwrap()
            .iter()
            .filter(|s| s["cypher"].as_str().unwrap().contains(what))
            .collect()
    }

    /// What a host reads back after committing `plan` onto an empty database.
    fn stored_after(plan: &HostPlan) -> (Vec<String>, Stored) {
        let plan = json(plan);
        let log = statements(&plan["before"], "CREATE (:_ks_log")
            .into_iter()
            .chain(statements(&plan["data"], "CREATE (:_ks_log"))
            .flat_map(|s| s["params"]["rows"].as_array().unwrap().clone())
            .map(|r| r["b"].as_str().unwrap().to_string())
            .collect();
        let snapshot: String = statements(&plan["before"], "CREATE (:_ks_snapshot")
            .iter()
            .map(|s| s["params"]["b"].as_str().unwrap())
            .collect();
        (
            log,
            Stored {
                snapshot: Some(snapshot),
                ..Stored::default()
            },
        )
    }

    type NativeReplica =
        Replica<kuzu_sync_engine::MemoryEventStore, kuzu_sync_engine::memory::MemoryGraphStore>;

    /// A native replica "src" on in-memory stores.
    fn native_source() -> NativeReplica {
        let mut log = kuzu_sync_engine::MemoryEventStore::new();
        log.set_meta("peer_id", "src").unwrap();
        Replica::open(
            log,
            kuzu_sync_engine::memory::MemoryGraphStore::new(),
            Box::new(kuzu_sync_engine::FixedClock(1_000)),
        )
        .unwrap()
    }

    /// `src`'s bundle from its stored snapshot and the events after it (as `export`).
    fn snapshot_bundle(src: &NativeReplica) -> Vec<u8> {
        let snap = src.snapshot_for(&VersionVector::new()).unwrap();
        kuzu_sync_protocol::encode(&Bundle::V1(BundleV1 {
            source_peer: "src".into(),
            since: VersionVector::new(),
            until: src.version_vector().clone(),
            events: src.events_since(&snap.version_vector).unwrap(),
            snapshot: Some(snap),
        }))
    }

    #[test]
    fn a_bundle_from_a_snapshot_is_installed_and_survives_a_reopen_and_an_interrupted_rebuild() {
        // A native replica with 3 events compacted into a snapshot and 1 after it.
        let mut src = native_source();
        let ops = |lines: &str| {
            parse_op_lines(lines, &Schema::default())
                .unwrap()
                .into_iter()
                .map(|(_, op)| op)
                .collect::<Vec<_>>()
        };
        src.write(ops(SCHEMA)).unwrap();
        let user = |n: &str| {
            format!(r#"{{"op":"add_node","table":"User","props":{{"name":"{n}","age":1}}}}"#)
        };
        let schema = src.engine().schema().clone();
        for n in ["x", "y"] {
            src.write(
                parse_op_lines(&user(n), &schema)
                    .unwrap()
                    .into_iter()
                    .map(|(_, op)| op)
                    .collect(),
            )
            .unwrap();
        }
        src.compact_to(&src.version_vector().clone()).unwrap();
        src.write(
            parse_op_lines(&user("z"), &schema)
                .unwrap()
                .into_iter()
                .map(|(_, op)| op)
                .collect(),
        )
        .unwrap();
        let bundle = snapshot_bundle(&src);

        // A JS replica with one event of its own installs it.
        let mut h = Host::open("a", &[], Stored::default()).unwrap();
        let own = h.write(SCHEMA, 1_000).unwrap();
        h.confirm().unwrap();
        let plan = h.import_bundle(&bundle, 2_000).unwrap();
        assert_eq!(plan.outcome["snapshotEvents"], json!(3));
        assert_eq!(plan.outcome["applied"], json!(1));
        let j = json(&plan);
        // First the rewritten log (the own event and the one after the snapshot), the
        // snapshot and the mark; then the tables rebuilt; then the rows and the mark cleared.
        assert_eq!(statements(&j["before"], "DELETE l").len(), 1);
        assert_eq!(statements(&j["before"], "DELETE s").len(), 1);
        assert!(!statements(&j["before"], "CREATE (:_ks_snapshot").is_empty());
        let (log, stored) = stored_after(&plan);
        assert_eq!(log.len(), 2, "the own event and z");
        let marks: Vec<_> = statements(&j["before"], META_TABLE)
            .into_iter()
            .chain(statements(&j["data"], "MERGE (m:"))
            .filter(|s| s["params"]["k"] == json!(GRAPH_REBUILD_KEY))
            .map(|s| s["params"]["v"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(marks, ["1", "0"]);
        assert!(
            plan.ddl.iter().any(|d| d.starts_with("DROP TABLE")),
            "{:?}",
            plan.ddl
        );
        assert!(
            plan.ddl.iter().any(|d| d.contains("CREATE NODE TABLE")),
            "{:?}",
            plan.ddl
        );
        h.confirm().unwrap();
        let vv = h.replica().version_vector().clone();
        assert_eq!(vv.total(), 5);
        assert_eq!(h.status().unwrap()["nodes"], json!(3));
        // Own writes go on after the rewritten log, numbered after it.
        let next = json(&h.write(&user("w"), 3_000).unwrap());
        let seqs: Vec<_> = statements(&next["data"], "CREATE (:_ks_log")
            .iter()
            .flat_map(|s| s["params"]["rows"].as_array().unwrap().clone())
            .map(|r| r["s"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(seqs, ["2"]);
        h.confirm().unwrap();
        assert!(own.before.is_empty());

        // Reopened from what was stored: the same state, nothing to apply.
        let mut again = Host::open("a", &log, stored.clone()).unwrap();
        assert_eq!(again.replica().version_vector(), &vv);
        assert!(again.recovery_plan().unwrap().data.is_empty());
        // Reopened with the mark still set (the rebuild did not commit): the rebuild
        // comes first, every row of the state, then the mark cleared.
        let interrupted = Stored {
            rebuilding: true,
            ..stored.clone()
        };
        let mut rebuilt = Host::open("a", &log, interrupted).unwrap();
        let recovery = rebuilt.recovery_plan().unwrap();
        assert!(recovery.ddl.iter().any(|d| d.starts_with("DROP TABLE")));
        assert_eq!(
            statements(&json(&recovery)["data"], "MERGE (m:")
                .last()
                .unwrap()["params"],
            json!({"k": GRAPH_REBUILD_KEY, "v": "0"})
        );
        assert!(rebuilt
            .write(SCHEMA, 4_000)
            .unwrap_err()
            .0
            .contains("staged"));
        rebuilt.confirm().unwrap();
        assert!(rebuilt.recovery_plan().unwrap().data.is_empty());
        // And it exports a bundle a fresh replica can start from.
        let out = again.export_bundle(None).unwrap();
        let mut fresh = Host::open("b", &[], Stored::default()).unwrap();
        let p = fresh.import_bundle(&out, 5_000).unwrap();
        assert_eq!(p.outcome["snapshotEvents"], json!(3));
        fresh.confirm().unwrap();
        assert_eq!(fresh.replica().version_vector(), &vv);
        // A corrupt stored snapshot is named.
        let bad = Stored {
            snapshot: Some("AAAA".into()),
            ..Stored::default()
        };
        let err = Host::open("a", &log, bad).unwrap_err();
        assert!(err.0.contains("stored snapshot is corrupt"), "{}", err.0);
    }

    #[test]
    fn after_a_snapshot_covers_own_events_new_ones_are_logged_once_and_numbered_on() {
        // The JS replica's own 3 events go to a native replica, which compacts them into
        // a snapshot and writes one more.
        let user = |n: &str| {
            format!(r#"{{"op":"add_node","table":"User","props":{{"name":"{n}","age":1}}}}"#)
        };
        let mut h = Host::open("a", &[], Stored::default()).unwrap();
        h.write(&format!("{SCHEMA}\n{}\n{}", user("x"), user("y")), 1_000)
            .unwrap();
        h.confirm().unwrap();
        let mine = kuzu_sync_protocol::decode(&h.export_bundle(None).unwrap()).unwrap();
        let mut src = native_source();
        src.import(mine.into_events()).unwrap();
        let schema = src.engine().schema().clone();
        for n in ["q", "z"] {
            let ops = parse_op_lines(&user(n), &schema).unwrap();
            src.write(ops.into_iter().map(|(_, op)| op).collect())
                .unwrap();
            if n == "q" {
                // The snapshot holds q, which a lacks, so a installs it.
                src.compact_to(&src.version_vector().clone()).unwrap();
            }
        }
        let bundle = snapshot_bundle(&src);
        let plan = h.import_bundle(&bundle, 2_000).unwrap();
        assert_eq!(plan.outcome["snapshotEvents"], json!(4));
        h.confirm().unwrap();
        let (log, _) = stored_after(&plan);
        assert_eq!(
            log.len(),
            1,
            "the snapshot covers a's own 3 events; z stays"
        );
        // The next write is logged once, numbered after the rewritten log.
        let next = json(&h.write(&user("w"), 3_000).unwrap());
        let seqs: Vec<_> = statements(&next["data"], "CREATE (:_ks_log")
            .iter()
            .flat_map(|s| s["params"]["rows"].as_array().unwrap().clone())
            .map(|r| r["s"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(seqs, ["1"]);
        h.confirm().unwrap();
        assert_eq!(h.replica().version_vector().total(), 6);
    }

    #[test]
    fn a_corrupt_log_entry_is_named() {
        let err = Host::open("a", &["not base64!".into()], Stored::default()).unwrap_err();
        assert!(err.0.contains("entry 0"), "{}", err.0);
    }

    #[test]
    fn a_log_loaded_in_pages_opens_the_same_core_and_names_a_bad_row_by_its_place() {
        let mut h = Host::open("a", &[], Stored::default()).unwrap();
        let mut lines = vec![SCHEMA.to_string()];
        lines.extend((0..25).map(|i| {
            format!(r#"{{"op":"add_node","table":"User","props":{{"name":"u{i}","age":{i}}}}}"#)
        }));
        let plan = h.write(&lines.join("\n"), 1_000).unwrap();
        h.confirm().unwrap();
        let log = logged(&plan);
        assert_eq!(log.len(), 26);
        let mut loader = Loader::new("a", Stored::default()).unwrap();
        for page in log.chunks(7) {
            loader.push(page).unwrap();
        }
        let paged = loader.finish().unwrap();
        assert_eq!(
            paged.replica().version_vector(),
            h.replica().version_vector()
        );
        assert_eq!(paged.replica().engine().dump(), h.replica().engine().dump());
        assert_eq!(paged.replica().engine().visible_counts(), (25, 0));
        assert_eq!(paged.replica().event_store().count().unwrap(), 26);
        // A corrupt body in the third page is named by its row in the whole log.
        let mut bad = log.clone();
        bad[15] = "AAAA".into();
        let mut loader = Loader::new("a", Stored::default()).unwrap();
        let err = bad
            .chunks(7)
            .try_for_each(|page| loader.push(page))
            .unwrap_err();
        assert!(err.0.contains("entry 15"), "{}", err.0);
        // The same event twice is refused: its rows would be numbered over each other.
        let mut twice = log.clone();
        twice.push(log[3].clone());
        let err = Host::open("a", &twice, Stored::default()).unwrap_err();
        assert!(err.0.contains("27 entries, of which 26"), "{}", err.0);
    }
}
