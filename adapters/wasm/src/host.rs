//! What the JS host asks of the core, in plain Rust (tested natively; `lib.rs` only binds
//! it to JS). Everything crosses the boundary as JSON text or bytes.
//!
//! The host keeps the log in the application's Kuzu database, beside the graph: a node
//! table `_ks_log(seq INT64, body STRING)`, each body a MessagePack event in base64 (Kuzu
//! strings are the one value type both JS hosts pass exactly). A change's [`HostPlan`] is
//! DDL (auto-committed, idempotent) and then one transaction: the log rows, the graph
//! statements and the watermark. So the log and the graph commit together, and opening
//! replays the log and applies nothing.

use base64::Engine as _;
use kuzu_sync_engine::change::GraphChange;
use kuzu_sync_engine::core::{Core, Staged};
use kuzu_sync_engine::cypher::{self, Param, Statement, META_TABLE, UNWIND_CHUNK};
use kuzu_sync_engine::json::parse_op_lines;
use kuzu_sync_engine::{Event, FixedClock, PeerId, VersionVector};
use kuzu_sync_protocol::{Bundle, BundleV1};
use serde::Serialize;
use serde_json::{json, Value as Json};

/// The node table that holds the log.
pub const LOG_TABLE: &str = "_ks_log";

/// The statements a host runs once when it opens a database (auto-committed, idempotent).
pub fn setup_statements() -> Vec<String> {
    vec![
        cypher::meta_table_ddl(),
        format!("CREATE NODE TABLE IF NOT EXISTS {LOG_TABLE}(seq INT64, body STRING, PRIMARY KEY (seq))"),
    ]
}

/// The query that reads the log in order: one string column, the body.
pub fn read_log_query() -> String {
    format!("MATCH (l:{LOG_TABLE}) RETURN l.body ORDER BY l.seq")
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

/// What the host runs for one staged change.
#[derive(Debug, Serialize)]
pub struct HostPlan {
    /// Run first, each on its own (Kuzu does not mix DDL and data in a transaction).
    pub ddl: Vec<String>,
    /// Then in one transaction: the log rows, the graph's statements, the watermark.
    pub data: Vec<Json>,
    /// The tables whose rows or definitions change.
    pub tables: Vec<String>,
}

/// The core as the JS host drives it.
#[derive(Debug)]
pub struct Host {
    core: Core,
    /// The next log position.
    seq: u64,
    staged: Option<Staged>,
}

impl Host {
    /// Opens from the logged bodies, in log order, with the stored offline mark and queue
    /// capacity.
    pub fn open(
        peer: &str,
        log: &[String],
        offline_mark: Option<u64>,
        queue_capacity: Option<usize>,
    ) -> Result<Host, HostError> {
        let peer = PeerId::new(peer)?;
        let mut events = Vec::with_capacity(log.len());
        for (i, body) in log.iter().enumerate() {
            events.push(
                decode_body(body)
                    .map_err(|e| HostError(format!("the log's entry {i} is corrupt: {}", e.0)))?,
            );
        }
        if let Some(e) = events.iter().find(|e| e.id.counter == 0) {
            return Err(HostError(format!(
                "the log holds an event with counter 0 ({:?})",
                e.id
            )));
        }
        let mut core = Core::replay(peer, None, events)?;
        core.set_offline_mark(offline_mark);
        if let Some(c) = queue_capacity {
            core.set_queue_capacity(c);
        }
        Ok(Host {
            core,
            seq: log.len() as u64,
            staged: None,
        })
    }

    pub fn core(&self) -> &Core {
        &self.core
    }

    /// Stages local ops, given as JSON lines in the format of `kuzu-sync write`.
    pub fn write(&mut self, op_lines: &str, now_ms: u64) -> Result<HostPlan, HostError> {
        self.refuse_if_staged()?;
        let ops = parse_op_lines(op_lines, self.core.engine().schema())?
            .into_iter()
            .map(|(_, op)| op)
            .collect();
        let staged = self
            .core
            .stage_write(ops, &FixedClock(now_ms), &mut |_, _| {})?;
        self.plan(staged)
    }

    /// Stages a bundle's events (the CLI's bundle format).
    pub fn import_bundle(&mut self, bytes: &[u8], now_ms: u64) -> Result<HostPlan, HostError> {
        self.refuse_if_staged()?;
        let bundle = kuzu_sync_protocol::decode(bytes)?;
        if let Some(snap) = bundle.snapshot() {
            if !self.core.version_vector().dominates(&snap.version_vector) {
                return Err(HostError(format!(
                    "this bundle starts from a snapshot of {} compacted events, which a \
                     JS replica cannot install yet; export it from the source with a \
                     version vector this replica already holds",
                    snap.event_count
                )));
            }
        }
        let staged = self
            .core
            .stage_import(bundle.into_events(), now_ms, &mut |_, _| {})?;
        self.plan(staged)
    }

    fn refuse_if_staged(&self) -> Result<(), HostError> {
        if self.staged.is_some() {
            return Err(HostError(
                "a change is already staged: confirm or abort it first".into(),
            ));
        }
        Ok(())
    }

    fn plan(&mut self, staged: Staged) -> Result<HostPlan, HostError> {
        let graph = cypher::plan(&staged.batch, self.core.engine().schema());
        let graph = match graph {
            Ok(g) => g,
            Err(e) => {
                self.core.mark_stale(e.to_string());
                return Err(e.into());
            }
        };
        let mut data = Vec::new();
        let mut seq = self.seq;
        for chunk in staged.events[..staged.applied].chunks(UNWIND_CHUNK) {
            let rows: Vec<Json> = chunk
                .iter()
                .map(|e| {
                    let row = json!({ "s": seq.to_string(), "b": encode_body(e) });
                    seq += 1;
                    row
                })
                .collect();
            data.push(json!({
                "cypher": format!(
                    "UNWIND $rows AS r CREATE (:{LOG_TABLE} {{seq: CAST(r.s AS INT64), body: r.b}})"
                ),
                "params": { "rows": rows },
            }));
        }
        data.extend(graph.data.iter().map(statement_json));
        let mut tables: Vec<String> = staged.batch.changes.iter().map(table_of).collect();
        tables.sort();
        tables.dedup();
        self.staged = Some(staged);
        Ok(HostPlan {
            ddl: graph.ddl,
            data,
            tables,
        })
    }

    /// The host committed the staged change: returns its outcome as JSON
    /// (`ids`, `applied`, `duplicates`, `conflicts`).
    pub fn confirm(&mut self) -> Result<Json, HostError> {
        let staged = self
            .staged
            .take()
            .ok_or_else(|| HostError("no change is staged".into()))?;
        self.seq += staged.applied as u64;
        let out = json!({
            "ids": staged.ids().iter().map(|id| format!("{}:{}", id.peer, id.counter)).collect::<Vec<_>>(),
            "applied": staged.applied,
            "duplicates": staged.duplicates,
            "conflicts": staged.conflicts().len(),
        });
        self.core.confirm(staged);
        Ok(out)
    }

    /// The host could not commit the staged change: the core is stale until the host opens
    /// it again from its log.
    pub fn abort(&mut self, reason: &str) {
        self.staged = None;
        self.core
            .mark_stale(format!("the host could not store a change: {reason}"));
    }

    /// A bundle of the logged events not in `since` (all of them if `None`), from the
    /// logged bodies the host read.
    pub fn export_bundle(
        &self,
        log: &[String],
        since: Option<&VersionVector>,
    ) -> Result<Vec<u8>, HostError> {
        let since = since.cloned().unwrap_or_default();
        let mut events = Vec::new();
        for (i, body) in log.iter().enumerate() {
            let e = decode_body(body)
                .map_err(|e| HostError(format!("the log's entry {i} is corrupt: {}", e.0)))?;
            if !since.contains(&e.id) {
                events.push(e);
            }
        }
        Ok(kuzu_sync_protocol::encode(&Bundle::V1(BundleV1 {
            source_peer: self.core.peer().to_string(),
            since,
            until: self.core.version_vector().clone(),
            events,
            snapshot: None,
        })))
    }

    pub fn status(&self) -> Json {
        let (nodes, edges) = self.core.engine().visible_counts();
        json!({
            "peerId": self.core.peer().to_string(),
            "versionVector": self.core.version_vector(),
            "storedEvents": self.seq,
            "schemaVersion": self.core.engine().schema().version,
            "nodes": nodes,
            "edges": edges,
            "conflicts": self.core.conflicts().len(),
            "offline": self.core.is_offline(),
            "stale": self.core.stale(),
        })
    }

    pub fn conflicts(&self) -> Json {
        serde_json::to_value(self.core.conflicts()).unwrap_or(Json::Null)
    }

    pub fn queue_status(&self) -> Json {
        json!({
            "offline": self.core.is_offline(),
            "queued": self.core.queued(),
            "capacity": self.core.queue_capacity(),
        })
    }

    /// Goes offline; returns the mark the host must store (`None`: already offline).
    pub fn go_offline(&mut self) -> Option<u64> {
        self.core.go_offline()
    }

    /// Goes online; the host clears the stored mark.
    pub fn go_online(&mut self) {
        self.core.set_offline_mark(None);
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

fn statement_json(s: &Statement) -> Json {
    let params: serde_json::Map<String, Json> = s
        .params
        .iter()
        .map(|(name, p)| {
            let v = match p {
                Param::Text(t) => Json::String(t.clone()),
                Param::Rows(rows) => Json::Array(
                    rows.iter()
                        .map(|r| {
                            Json::Object(
                                r.iter()
                                    .map(|(f, v)| (f.clone(), Json::String(v.clone())))
                                    .collect(),
                            )
                        })
                        .collect(),
                ),
            };
            (name.clone(), v)
        })
        .collect();
    json!({ "cypher": s.cypher, "params": params })
}

/// An event as the log stores it: MessagePack (the wire's encoding), in base64.
pub fn encode_body(e: &Event) -> String {
    let raw = rmp_serde::to_vec(e).expect("events always serialize");
    base64::engine::general_purpose::STANDARD.encode(raw)
}

pub fn decode_body(body: &str) -> Result<Event, HostError> {
    let raw = base64::engine::general_purpose::STANDARD.decode(body)?;
    Ok(rmp_serde::from_slice(&raw)?)
}
