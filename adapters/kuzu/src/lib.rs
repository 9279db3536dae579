//! The KuzuDB implementation of the graph store port: applies the engine's batches to a real
//! Kuzu database, one Kuzu transaction per batch, with the apply watermark stored in the same
//! transaction. The only crate of the workspace that depends on `kuzu`.
//!
//! Statement shapes are chosen per kind of change (see ARCHITECTURE.md, "Apply to Kuzu"):
//! new nodes go through `UNWIND $rows CREATE` (a bulk path), many new edges through
//! `COPY … FROM (UNWIND …)`, and updates and deletes through single-row statements anchored
//! on primary keys, since Kuzu plans `UNWIND … MATCH` as a full scan.

pub mod convert;
pub mod csv;
pub mod portable;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use kuzu::{Connection, Database, LogicalType, PreparedStatement, SystemConfig, Value as KValue};
use kuzu_sync_engine::cypher::stored_key;
use kuzu_sync_engine::ddl::{render_add_column, render_table_ddl};
use kuzu_sync_engine::schema::EDGE_KEY_COLUMN;
use kuzu_sync_engine::{
    ApplyBatch, Column, DataType, EdgeRef, GraphChange, GraphDump, GraphStore, NodeRef,
    NodeTableDef, RelTableDef, Schema, StoreError, TableDef, Value, VersionVector,
};

pub use kuzu;

use convert::{
    contains_union, from_kuzu, param_expr, param_type, read_expr, to_bare_param, to_param,
};

/// Name of the hidden node table that holds replica metadata (the apply watermark).
pub const META_TABLE: &str = "_ks_meta";

/// Below this many new edges in a batch, single-row statements; from it on, `COPY`. A batch
/// that uses COPY also pays a `CHECKPOINT` (see `apply`), so the threshold is high enough for
/// the checkpoint to pay off.
pub const EDGE_COPY_THRESHOLD: usize = 1_000;
/// From this many new nodes of one table in a batch, `COPY` from a CSV file instead of
/// `UNWIND … CREATE` (which needs no checkpoint).
pub const NODE_COPY_THRESHOLD: usize = 20_000;
/// A `CHECKPOINT` after this many committed batches without one. Kuzu 0.11.3 keeps what
/// each small transaction commits in its buffer pool until a checkpoint, and checkpoints on
/// its own only once the WAL reaches 16 MB: a replica writing one node per batch filled its
/// 256 MiB pool after about 31,000 batches ("The buffer pool is full and no memory could be
/// freed!"), long before that.
pub const CHECKPOINT_EVERY: u32 = 1_000;
/// From this many updates of existing nodes of one table in a batch, one join through the
/// table's stage table instead of a statement per node (see
/// `KuzuGraphStore::update_nodes_joined`). The join scans the whole table, so a small batch
/// into a large table is cheaper row by row.
pub const UPDATE_JOIN_THRESHOLD: usize = 200;
/// Prefix of the stage tables of bulk updates (one per node table, created on first use).
pub const STAGE_PREFIX: &str = "_ks_stage_";
/// Rows per `UNWIND $rows CREATE` statement.
const UNWIND_CHUNK: usize = 10_000;

/// Database settings. Kuzu's defaults (80 % of RAM for the buffer pool, 8 TB of address
/// space) are far too much for a replica, and for tests that open many databases.
#[derive(Clone, Debug)]
pub struct KuzuConfig {
    pub buffer_pool_bytes: u64,
    pub max_db_bytes: u64,
    pub threads: u64,
    pub read_only: bool,
    /// See [`NODE_COPY_THRESHOLD`].
    pub node_copy_threshold: usize,
    /// See [`EDGE_COPY_THRESHOLD`].
    pub edge_copy_threshold: usize,
    /// See [`UPDATE_JOIN_THRESHOLD`].
    pub update_join_threshold: usize,
}

impl Default for KuzuConfig {
    fn default() -> Self {
        KuzuConfig {
            buffer_pool_bytes: 256 << 20,
            max_db_bytes: 64 << 30,
            threads: 2,
            read_only: false,
            node_copy_threshold: NODE_COPY_THRESHOLD,
            edge_copy_threshold: EDGE_COPY_THRESHOLD,
            update_join_threshold: UPDATE_JOIN_THRESHOLD,
        }
    }
}

impl KuzuConfig {
    /// Small settings for tests.
    pub fn small() -> Self {
        KuzuConfig {
            buffer_pool_bytes: 64 << 20,
            max_db_bytes: 4 << 30,
            threads: 1,
            read_only: false,
            node_copy_threshold: NODE_COPY_THRESHOLD,
            edge_copy_threshold: EDGE_COPY_THRESHOLD,
            update_join_threshold: UPDATE_JOIN_THRESHOLD,
        }
    }
}

fn kerr(context: impl Into<String>, e: kuzu::Error) -> StoreError {
    StoreError::backend(context, e.to_string())
}

/// A Kuzu database used as the graph store of a replica.
pub struct KuzuGraphStore {
    db: Database,
    path: PathBuf,
    node_copy_threshold: usize,
    edge_copy_threshold: usize,
    update_join_threshold: usize,
    /// The stage tables this process created, with their DDL (see `staged_tables`).
    stages: RefCell<BTreeMap<String, String>>,
    /// Batches committed since the last `CHECKPOINT` (see [`CHECKPOINT_EVERY`]).
    /// (A `Cell`: `apply`'s connection borrows the store.)
    since_checkpoint: std::cell::Cell<u32>,
    /// `COPY … FROM` a CSV file statements run since the store was opened.
    csv_copies: std::cell::Cell<u64>,
}

impl std::fmt::Debug for KuzuGraphStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KuzuGraphStore")
            .field("path", &self.path)
            .finish()
    }
}

/// Quotes an identifier for Cypher.
pub fn ident(name: &str) -> String {
    format!("`{}`", name.replace('`', "``"))
}

impl KuzuGraphStore {
    /// Opens (or creates) the database file at `path`.
    pub fn open(path: &Path, config: &KuzuConfig) -> Result<Self, StoreError> {
        if !config.read_only && !path.exists() {
            // A leftover WAL next to a fresh database file crashes Kuzu (kuzudb/kuzu#5777).
            for ext in ["wal", "shadow", "tmp"] {
                let side = sidecar(path, ext);
                if side.exists() {
                    std::fs::remove_file(&side).map_err(|e| {
                        StoreError::backend(format!("removing stale {}", side.display()), e)
                    })?;
                }
            }
        }
        let sys = SystemConfig::default()
            .buffer_pool_size(config.buffer_pool_bytes)
            .max_db_size(config.max_db_bytes)
            .max_num_threads(config.threads)
            .read_only(config.read_only);
        let db = Database::new(path, sys)
            .map_err(|e| kerr(format!("opening Kuzu database {}", path.display()), e))?;
        let store = KuzuGraphStore {
            db,
            path: path.to_path_buf(),
            node_copy_threshold: config.node_copy_threshold.max(1),
            edge_copy_threshold: config.edge_copy_threshold.max(1),
            update_join_threshold: config.update_join_threshold.max(1),
            stages: RefCell::new(BTreeMap::new()),
            since_checkpoint: std::cell::Cell::new(0),
            csv_copies: std::cell::Cell::new(0),
        };
        if !config.read_only {
            let conn = store.conn()?;
            run(
                &conn,
                &format!(
                    "CREATE NODE TABLE IF NOT EXISTS {META_TABLE}(k STRING, v STRING, PRIMARY KEY (k))"
                ),
            )?;
        }
        Ok(store)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many `COPY … FROM` a CSV file statements this store has run since it was opened
    /// (which write path a batch took, for tests and diagnostics).
    pub fn csv_copies(&self) -> u64 {
        self.csv_copies.get()
    }

    pub fn database(&self) -> &Database {
        &self.db
    }

    pub fn conn(&self) -> Result<Connection<'_>, StoreError> {
        Connection::new(&self.db).map_err(|e| kerr("connecting to Kuzu", e))
    }

    /// Runs a read-only query and returns column names and rows.
    pub fn query(&self, cypher: &str) -> Result<(Vec<String>, Vec<Vec<KValue>>), StoreError> {
        let conn = self.conn()?;
        let result = conn
            .query(cypher)
            .map_err(|e| kerr(format!("query {cypher}"), e))?;
        let names = result.get_column_names();
        Ok((names, result.collect()))
    }

    fn apply_ddl(&self, conn: &Connection, change: &GraphChange) -> Result<(), StoreError> {
        match change {
            GraphChange::CreateTable(def) => {
                let ddl = render_table_ddl(def);
                let ddl = ddl.replacen("TABLE", "TABLE IF NOT EXISTS", 1);
                run(conn, &ddl)
            }
            GraphChange::AddColumns { table, columns } => {
                for c in columns {
                    let stmt =
                        render_add_column(table, c).replacen(" ADD ", " ADD IF NOT EXISTS ", 1);
                    run(conn, &stmt)?;
                }
                Ok(())
            }
            GraphChange::DropTable(t) => run(conn, &format!("DROP TABLE IF EXISTS {}", ident(t))),
            _ => Ok(()),
        }
    }

    /// Applies the row changes; returns true if a COPY statement was used.
    fn apply_data(
        &self,
        conn: &Connection,
        batch: &ApplyBatch,
        schema: &Schema,
        staged: &BTreeSet<String>,
    ) -> Result<bool, StoreError> {
        let mut new_nodes: BTreeMap<String, Vec<&[Value]>> = BTreeMap::new();
        // Staged updates by table and by the columns they change.
        let mut updates: BTreeMap<(&str, &[bool]), Vec<&[Value]>> = BTreeMap::new();
        let mut new_edges: BTreeMap<EdgeGroup, Vec<(&EdgeRef, &[Value])>> = BTreeMap::new();
        let mut stmts = StatementCache::default();
        // Deletes first (the engine orders them first), then node upserts, then edges.
        for change in &batch.changes {
            match change {
                GraphChange::DeleteEdge(e) => {
                    let (rel, from, to) = edge_tables(schema, e)?;
                    let q = format!("{} DELETE e", match_edge(rel, from, to));
                    let pk_f = pk_type(from);
                    let pk_t = pk_type(to);
                    stmts.execute(
                        conn,
                        &q,
                        vec![
                            ("k", KValue::String(stored_key(&e.key))),
                            ("f", to_bare_param(&e.from.key, pk_f)),
                            ("t", to_bare_param(&e.to.key, pk_t)),
                        ],
                    )?;
                }
                GraphChange::DeleteNode(n) => {
                    let t = corrupt(schema.node_table(&n.table))?;
                    let q = format!("{} DETACH DELETE n", match_node(t));
                    stmts.execute(conn, &q, vec![("k", to_bare_param(&n.key, pk_type(t)))])?;
                }
                GraphChange::UpsertNode { node, values, .. } if batch.may_exist => {
                    let t = corrupt(schema.node_table(&node.table))?;
                    self.write_node(conn, &mut stmts, t, node, values, true)?;
                }
                GraphChange::UpsertNode {
                    node,
                    values,
                    is_new: true,
                    ..
                } => new_nodes
                    .entry(node.table.clone())
                    .or_default()
                    .push(values),
                GraphChange::UpsertNode {
                    node,
                    values,
                    is_new: false,
                    changed,
                } if staged.contains(&node.table) => updates
                    .entry((node.table.as_str(), changed.as_slice()))
                    .or_default()
                    .push(values),
                GraphChange::UpsertNode {
                    node,
                    values,
                    is_new: false,
                    ..
                } => {
                    let t = corrupt(schema.node_table(&node.table))?;
                    self.write_node(conn, &mut stmts, t, node, values, false)?;
                }
                GraphChange::UpsertEdge {
                    edge,
                    values,
                    is_new: true,
                } => {
                    let (rel, from, to) = edge_tables(schema, edge)?;
                    if batch.may_exist {
                        let q = format!("{} DELETE e", match_edge(rel, from, to));
                        stmts.execute(
                            conn,
                            &q,
                            vec![
                                ("k", KValue::String(stored_key(&edge.key))),
                                ("f", to_bare_param(&edge.from.key, pk_type(from))),
                                ("t", to_bare_param(&edge.to.key, pk_type(to))),
                            ],
                        )?;
                    }
                    new_edges
                        .entry((rel.name.clone(), from.name.clone(), to.name.clone()))
                        .or_default()
                        .push((edge, values));
                }
                GraphChange::UpsertEdge {
                    edge,
                    values,
                    is_new: false,
                } => {
                    let (rel, from, to) = edge_tables(schema, edge)?;
                    if rel.columns.is_empty() {
                        continue;
                    }
                    let sets: Vec<String> = rel
                        .columns
                        .iter()
                        .enumerate()
                        .map(|(i, c)| {
                            format!(
                                "e.{} = {}",
                                ident(&c.name),
                                param_expr(&format!("$c{i}"), &c.ty)
                            )
                        })
                        .collect();
                    let q = format!("{} SET {}", match_edge(rel, from, to), sets.join(", "));
                    let names: Vec<String> =
                        (0..rel.columns.len()).map(|i| format!("c{i}")).collect();
                    let mut params = vec![
                        ("k", KValue::String(stored_key(&edge.key))),
                        ("f", to_bare_param(&edge.from.key, pk_type(from))),
                        ("t", to_bare_param(&edge.to.key, pk_type(to))),
                    ];
                    for (i, c) in rel.columns.iter().enumerate() {
                        params.push((names[i].as_str(), to_bare_param(&values[i], &c.ty)));
                    }
                    stmts.execute(conn, &q, params)?;
                }
                _ => {}
            }
        }
        for ((table, changed), rows) in &updates {
            let t = corrupt(schema.node_table(table))?;
            self.update_nodes_joined(conn, &mut stmts, t, changed, rows)?;
        }
        // New nodes before new edges, which may reference them. A batch that copies
        // anything pays a checkpoint (see `apply`); then the nodes of a table go by COPY
        // from the edge threshold up, which costs less than `UNWIND … CREATE` there.
        let edges_copy = new_edges.iter().any(|((rel, ..), edges)| {
            schema
                .rel_table(rel)
                .is_ok_and(|r| self.edges_by_copy(r, edges.len()))
        });
        let mut nodes_copy = false;
        for (table, rows) in &new_nodes {
            let t = corrupt(schema.node_table(table))?;
            nodes_copy |= nodes_by_copy(t, rows, self.node_copy_threshold);
        }
        let node_threshold = if edges_copy || nodes_copy {
            self.node_copy_threshold.min(self.edge_copy_threshold)
        } else {
            self.node_copy_threshold
        };
        let mut copied = false;
        for (table, rows) in &new_nodes {
            let t = corrupt(schema.node_table(table))?;
            copied |= self.insert_nodes(conn, &mut stmts, t, rows, node_threshold)?;
        }
        for ((rel, from, to), edges) in &new_edges {
            let rel = corrupt(schema.rel_table(rel))?;
            let from = corrupt(schema.node_table(from))?;
            let to = corrupt(schema.node_table(to))?;
            copied |= self.insert_edges(conn, &mut stmts, rel, from, to, edges)?;
        }
        Ok(copied)
    }

    /// `MATCH (n:T {pk}) SET …` for an existing node, or with `merge` the idempotent
    /// `MERGE (n:T {pk}) SET …`, harmless if the node is there already.
    fn write_node(
        &self,
        conn: &Connection,
        stmts: &mut StatementCache,
        t: &NodeTableDef,
        node: &NodeRef,
        values: &[Value],
        merge: bool,
    ) -> Result<(), StoreError> {
        let names: Vec<String> = (0..t.columns.len()).map(|i| format!("c{i}")).collect();
        let mut sets = Vec::new();
        let mut params = vec![("k", to_bare_param(&node.key, pk_type(t)))];
        for (i, c) in t.columns.iter().enumerate() {
            if c.name == t.primary_key {
                continue;
            }
            sets.push(format!(
                "n.{} = {}",
                ident(&c.name),
                param_expr(&format!("${}", names[i]), &c.ty)
            ));
            params.push((names[i].as_str(), to_bare_param(&values[i], &c.ty)));
        }
        let head = if merge {
            match_node(t).replacen("MATCH", "MERGE", 1)
        } else if sets.is_empty() {
            return Ok(());
        } else {
            match_node(t)
        };
        let q = if sets.is_empty() {
            head
        } else {
            format!("{head} SET {}", sets.join(", "))
        };
        stmts.execute(conn, &q, params)
    }

    /// New nodes: `UNWIND $rows AS r CREATE (n:T {…})`, Kuzu's fastest path short of COPY.
    /// Union columns are then set row by row (see [`convert::contains_union`]).
    fn insert_nodes(
        &self,
        conn: &Connection,
        stmts: &mut StatementCache,
        t: &NodeTableDef,
        rows: &[&[Value]],
        copy_threshold: usize,
    ) -> Result<bool, StoreError> {
        if nodes_by_copy(t, rows, copy_threshold) {
            self.copy_nodes_csv(conn, t, rows)?;
            return Ok(true);
        }
        unwind_create(conn, t, rows)?;
        let pk = t.key_index().expect("validated primary key");
        for (i, c) in t.columns.iter().enumerate() {
            if !contains_union(&c.ty) {
                continue;
            }
            let q = format!(
                "{} SET n.{} = {}",
                match_node(t),
                ident(&c.name),
                param_expr("$v", &c.ty)
            );
            for row in rows.iter().filter(|row| !row[i].is_null()) {
                stmts.execute(
                    conn,
                    &q,
                    vec![
                        ("k", to_bare_param(&row[pk], pk_type(t))),
                        ("v", to_bare_param(&row[i], &c.ty)),
                    ],
                )?;
            }
        }
        Ok(false)
    }

    /// Updates of existing nodes of `t`, in bulk: the key and the columns `changed` names
    /// (every column when it is empty) go into `t`'s stage table by `UNWIND … CREATE`, one
    /// `MATCH (n:T), (s:stage) WHERE n.pk = s.pk SET …` copies those columns over (Kuzu plans
    /// it as a hash join), and the stage is emptied, all inside the batch's transaction.
    /// Kuzu plans `UNWIND $rows … MATCH (n:T {pk: r.pk})` as a cross product (1,000 rows into
    /// 100,000 nodes: 10^8 comparisons, 0.2-0.5 s) and a single-row prepared `SET` costs
    /// 0.2-0.4 ms; this path took 26-46 ms for the same 1,000 rows (ARCHITECTURE.md, "Bulk
    /// updates through a stage table").
    fn update_nodes_joined(
        &self,
        conn: &Connection,
        stmts: &mut StatementCache,
        t: &NodeTableDef,
        changed: &[bool],
        rows: &[&[Value]],
    ) -> Result<(), StoreError> {
        let key = t.key_index().expect("validated primary key");
        // A mask that does not cover every column is no mask: write them all.
        let all = changed.len() != t.columns.len();
        let written: Vec<usize> = (0..t.columns.len())
            .filter(|&i| i != key && (all || changed[i]))
            .collect();
        let joined: Vec<usize> = written
            .iter()
            .copied()
            .filter(|&i| !contains_union(&t.columns[i].ty))
            .collect();
        if !joined.is_empty() {
            // The stage's rows: the key and the joined columns, in the table's order.
            let mut stage = stage_def(t);
            let kept: Vec<usize> = (0..t.columns.len())
                .filter(|i| *i == key || joined.contains(i))
                .collect();
            stage.columns = kept.iter().map(|&i| stage.columns[i].clone()).collect();
            let projected: Vec<Vec<Value>> = rows
                .iter()
                .map(|row| kept.iter().map(|&i| row[i].clone()).collect())
                .collect();
            let projected: Vec<&[Value]> = projected.iter().map(Vec::as_slice).collect();
            unwind_create(conn, &stage, &projected)?;
            let pk = ident(&t.primary_key);
            let sets: Vec<String> = joined
                .iter()
                .map(|&i| format!("n.{0} = s.{0}", ident(&t.columns[i].name)))
                .collect();
            run(
                conn,
                &format!(
                    "MATCH (n:{}), (s:{}) WHERE n.{pk} = s.{pk} SET {}",
                    ident(&t.name),
                    ident(&stage.name),
                    sets.join(", ")
                ),
            )?;
            run(conn, &format!("MATCH (s:{}) DELETE s", ident(&stage.name)))?;
        }
        // Union columns cannot go through `UNWIND`'s parameter list: set row by row.
        for &i in written.iter().filter(|&&i| !joined.contains(&i)) {
            let c = &t.columns[i];
            let q = format!(
                "{} SET n.{} = {}",
                match_node(t),
                ident(&c.name),
                param_expr("$v", &c.ty)
            );
            for row in rows {
                stmts.execute(
                    conn,
                    &q,
                    vec![
                        ("k", to_bare_param(&row[key], pk_type(t))),
                        ("v", to_bare_param(&row[i], &c.ty)),
                    ],
                )?;
            }
        }
        Ok(())
    }

    /// The tables whose existing nodes `batch` updates through their stage tables (see
    /// [`Self::update_nodes_joined`]): at least `update_join_threshold` of them, and a
    /// column besides the key. Creates each one's
    /// stage table (DDL, so before the batch's transaction) unless this process already
    /// did for the same columns; a stage left by an earlier schema is dropped first.
    fn staged_tables(
        &self,
        conn: &Connection,
        batch: &ApplyBatch,
        schema: &Schema,
    ) -> Result<BTreeSet<String>, StoreError> {
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        if !batch.may_exist {
            for c in &batch.changes {
                if let GraphChange::UpsertNode {
                    node,
                    is_new: false,
                    ..
                } = c
                {
                    *counts.entry(node.table.as_str()).or_default() += 1;
                }
            }
        }
        let mut out = BTreeSet::new();
        for (table, n) in counts {
            let t = corrupt(schema.node_table(table))?;
            if n < self.update_join_threshold || t.columns.len() < 2 {
                continue;
            }
            let stage = stage_def(t);
            // A table that has the stage's name must not be dropped: that table's updates
            // go row by row. (The engine refuses `_ks_` table names, so only a schema
            // built around it can hold one; kept as a second line.)
            if schema.table(&stage.name).is_some()
                || schema.table(&stage.name.to_ascii_lowercase()).is_some()
            {
                continue;
            }
            let ddl = render_table_ddl(&TableDef::Node(stage.clone()));
            if self.stages.borrow().get(&stage.name) != Some(&ddl) {
                run(
                    conn,
                    &format!("DROP TABLE IF EXISTS {}", ident(&stage.name)),
                )?;
                run(conn, &ddl)?;
                self.stages.borrow_mut().insert(stage.name, ddl);
            }
            out.insert(t.name.clone());
        }
        Ok(out)
    }

    fn insert_edges(
        &self,
        conn: &Connection,
        stmts: &mut StatementCache,
        rel: &RelTableDef,
        from: &NodeTableDef,
        to: &NodeTableDef,
        edges: &[(&EdgeRef, &[Value])],
    ) -> Result<bool, StoreError> {
        let pk_f = pk_type(from);
        let pk_t = pk_type(to);
        if !self.edges_by_copy(rel, edges.len()) {
            let mut props = vec![format!("{}: $k", EDGE_KEY_COLUMN)];
            props.extend(rel.columns.iter().enumerate().map(|(i, c)| {
                format!(
                    "{}: {}",
                    ident(&c.name),
                    param_expr(&format!("$c{i}"), &c.ty)
                )
            }));
            let q = format!(
                "MATCH (a:{} {{{}: {}}}), (b:{} {{{}: {}}}) CREATE (a)-[:{} {{{}}}]->(b)",
                ident(&from.name),
                ident(&from.primary_key),
                param_expr("$f", pk_f),
                ident(&to.name),
                ident(&to.primary_key),
                param_expr("$t", pk_t),
                ident(&rel.name),
                props.join(", ")
            );
            let names: Vec<String> = (0..rel.columns.len()).map(|i| format!("c{i}")).collect();
            for (e, values) in edges {
                let mut params = vec![
                    ("k", KValue::String(stored_key(&e.key))),
                    ("f", to_bare_param(&e.from.key, pk_f)),
                    ("t", to_bare_param(&e.to.key, pk_t)),
                ];
                for (i, c) in rel.columns.iter().enumerate() {
                    params.push((names[i].as_str(), to_bare_param(&values[i], &c.ty)));
                }
                stmts.execute(conn, &q, params)?;
            }
            return Ok(false);
        }
        if std::iter::once(pk_f)
            .chain(std::iter::once(pk_t))
            .chain(rel.columns.iter().map(|c| &c.ty))
            .all(csv::csv_safe)
            && edges.iter().all(|(e, values)| {
                csv::csv_values_safe([&e.from.key, &e.to.key].into_iter().chain(values.iter()))
            })
        {
            self.copy_edges_csv(conn, rel, from, to, edges)?;
            return Ok(true);
        }
        // Many new edges of other types: COPY from a subquery over the parameter list, its
        // columns in Kuzu's own order.
        let order = kuzu_columns(conn, &rel.name)?;
        let mut fields = vec![
            ("f".to_string(), param_type(pk_f)),
            ("t".to_string(), param_type(pk_t)),
            ("k".to_string(), LogicalType::String),
        ];
        fields.extend(
            rel.columns
                .iter()
                .enumerate()
                .map(|(i, c)| (format!("c{i}"), param_type(&c.ty))),
        );
        let mut ret = vec![param_expr("r.f", pk_f), param_expr("r.t", pk_t)];
        for name in &order {
            if name == EDGE_KEY_COLUMN {
                ret.push("r.k".to_string());
            } else {
                let i = column_position(&rel.columns, name, &rel.name)?;
                ret.push(param_expr(&format!("r.c{i}"), &rel.columns[i].ty));
            }
        }
        let opts = if rel.connections.len() > 1 {
            format!(" (from='{}', to='{}')", from.name, to.name)
        } else {
            String::new()
        };
        let q = format!(
            "COPY {} FROM (UNWIND $rows AS r RETURN {}){}",
            ident(&rel.name),
            ret.join(", "),
            opts
        );
        for chunk in edges.chunks(UNWIND_CHUNK) {
            let list: Vec<KValue> = chunk
                .iter()
                .map(|(e, values)| {
                    let mut f = vec![
                        ("f".to_string(), to_param(&e.from.key, pk_f)),
                        ("t".to_string(), to_param(&e.to.key, pk_t)),
                        ("k".to_string(), KValue::String(stored_key(&e.key))),
                    ];
                    f.extend(
                        rel.columns
                            .iter()
                            .enumerate()
                            .map(|(i, c)| (format!("c{i}"), to_param(&values[i], &c.ty))),
                    );
                    KValue::Struct(f)
                })
                .collect();
            let mut stmt = conn
                .prepare(&q)
                .map_err(|e| kerr(format!("preparing {q}"), e))?;
            conn.execute(
                &mut stmt,
                vec![(
                    "rows",
                    KValue::List(
                        LogicalType::Struct {
                            fields: fields.clone(),
                        },
                        list,
                    ),
                )],
            )
            .map_err(|e| {
                kerr(
                    format!("copying {} edges into {}", chunk.len(), rel.name),
                    e,
                )
            })?;
        }
        Ok(true)
    }

    /// Whether `n` new edges of `rel` go by a COPY (from a CSV file or from a parameter
    /// list): from the edge threshold up, unless a column holds a union, which only the
    /// single-row path can write.
    fn edges_by_copy(&self, rel: &RelTableDef, n: usize) -> bool {
        n >= self.edge_copy_threshold && !rel.columns.iter().any(|c| contains_union(&c.ty))
    }

    fn copy_nodes_csv(
        &self,
        conn: &Connection,
        t: &NodeTableDef,
        rows: &[&[Value]],
    ) -> Result<(), StoreError> {
        let order: Vec<usize> = kuzu_columns(conn, &t.name)?
            .iter()
            .map(|name| column_position(&t.columns, name, &t.name))
            .collect::<Result<_, _>>()?;
        let mut file = csv::CsvFile::new(self.dir());
        for row in rows {
            file.row(order.iter().map(|&i| &row[i]));
        }
        self.copy_file(conn, &t.name, "", &file)
    }

    fn copy_edges_csv(
        &self,
        conn: &Connection,
        rel: &RelTableDef,
        from: &NodeTableDef,
        to: &NodeTableDef,
        edges: &[(&EdgeRef, &[Value])],
    ) -> Result<(), StoreError> {
        // None stands for the edge key.
        let order: Vec<Option<usize>> = kuzu_columns(conn, &rel.name)?
            .iter()
            .map(|name| {
                if name == EDGE_KEY_COLUMN {
                    Ok(None)
                } else {
                    column_position(&rel.columns, name, &rel.name).map(Some)
                }
            })
            .collect::<Result<_, _>>()?;
        let mut file = csv::CsvFile::new(self.dir());
        for (e, values) in edges {
            let key = Value::String(stored_key(&e.key));
            let fields =
                [&e.from.key, &e.to.key]
                    .into_iter()
                    .chain(order.iter().map(|o| match o {
                        None => &key,
                        Some(i) => &values[*i],
                    }));
            file.row(fields);
        }
        let opts = if rel.connections.len() > 1 {
            format!("from='{}', to='{}'", from.name, to.name)
        } else {
            String::new()
        };
        self.copy_file(conn, &rel.name, &opts, &file)
    }

    fn copy_file(
        &self,
        conn: &Connection,
        table: &str,
        extra_opts: &str,
        file: &csv::CsvFile,
    ) -> Result<(), StoreError> {
        let (path, mut opts) = file
            .finish()
            .map_err(|e| StoreError::backend(format!("writing a COPY file for {table}"), e))?;
        if !extra_opts.is_empty() {
            opts = format!("{}, {extra_opts})", &opts[..opts.len() - 1]);
        }
        let path = path
            .display()
            .to_string()
            .replace('\\', "\\\\")
            .replace('\'', "\\'");
        run(conn, &format!("COPY {} FROM '{path}' {opts}", ident(table)))?;
        self.csv_copies.set(self.csv_copies.get() + 1);
        Ok(())
    }

    /// The folder of the database file, where COPY files are written.
    fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }

    fn read_watermark(&self, conn: &Connection) -> Result<VersionVector, StoreError> {
        let q = format!("MATCH (m:{META_TABLE}) WHERE m.k = 'watermark' RETURN m.v");
        let rows: Vec<Vec<KValue>> = conn
            .query(&q)
            .map_err(|e| kerr("reading the apply watermark", e))?
            .collect();
        match rows.first().and_then(|r| r.first()) {
            Some(KValue::String(s)) => serde_json::from_str(s).map_err(|e| {
                StoreError::Corrupt(format!("apply watermark {s:?} in {META_TABLE}: {e}"))
            }),
            _ => Ok(VersionVector::new()),
        }
    }
}

fn sidecar(path: &Path, ext: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".");
    s.push(ext);
    PathBuf::from(s)
}

/// The property names of a Kuzu table in Kuzu's own order, which COPY follows. It can differ
/// from the engine's resolved order (columns added concurrently arrive in different orders).
fn kuzu_columns(conn: &Connection, table: &str) -> Result<Vec<String>, StoreError> {
    let q = format!(
        "CALL table_info('{}') RETURN name",
        table.replace('\'', "\\'")
    );
    Ok(query_rows(conn, &q)?
        .into_iter()
        .filter_map(|r| match r.into_iter().next() {
            Some(KValue::String(s)) => Some(s),
            _ => None,
        })
        .collect())
}

fn column_position(columns: &[Column], name: &str, table: &str) -> Result<usize, StoreError> {
    columns
        .iter()
        .position(|c| c.name.eq_ignore_ascii_case(name))
        .ok_or_else(|| {
            StoreError::Corrupt(format!(
                "Kuzu table {table} has a column {name} that the replicated schema lacks"
            ))
        })
}

/// `MATCH (n:T {pk: $k})`, anchored on the primary-key index.
fn match_node(t: &NodeTableDef) -> String {
    format!(
        "MATCH (n:{} {{{}: {}}})",
        ident(&t.name),
        ident(&t.primary_key),
        param_expr("$k", pk_type(t))
    )
}

/// `MATCH (a:F {pk: $f})-[e:R {_ks_eid: $k}]->(b:T {pk: $t})`: an edge has no key of its own
/// in Kuzu, so it is addressed through both endpoints' primary keys and its edge key.
fn match_edge(rel: &RelTableDef, from: &NodeTableDef, to: &NodeTableDef) -> String {
    format!(
        "MATCH (a:{} {{{}: {}}})-[e:{} {{{}: $k}}]->(b:{} {{{}: {}}})",
        ident(&from.name),
        ident(&from.primary_key),
        param_expr("$f", pk_type(from)),
        ident(&rel.name),
        EDGE_KEY_COLUMN,
        ident(&to.name),
        ident(&to.primary_key),
        param_expr("$t", pk_type(to))
    )
}

fn run(conn: &Connection, q: &str) -> Result<(), StoreError> {
    conn.query(q).map_err(|e| kerr(format!("running {q}"), e))?;
    Ok(())
}

/// The stage table of node table `t` for bulk updates: `_ks_stage_` and `t`'s name, the
/// same columns without defaults, the same key. Empty outside a batch's transaction.
fn stage_def(t: &NodeTableDef) -> NodeTableDef {
    NodeTableDef {
        name: format!("{STAGE_PREFIX}{}", t.name),
        columns: t
            .columns
            .iter()
            .map(|c| Column {
                default: None,
                ..c.clone()
            })
            .collect(),
        primary_key: t.primary_key.clone(),
    }
}

/// `UNWIND $rows AS r CREATE (n:T {…})` in chunks of [`UNWIND_CHUNK`], for every column but
/// those holding a union (Kuzu cannot take one as a parameter; see
/// [`convert::contains_union`]).
fn unwind_create(conn: &Connection, t: &NodeTableDef, rows: &[&[Value]]) -> Result<(), StoreError> {
    let bulk: Vec<usize> = (0..t.columns.len())
        .filter(|&i| !contains_union(&t.columns[i].ty))
        .collect();
    let fields: Vec<(String, LogicalType)> = bulk
        .iter()
        .map(|&i| (format!("c{i}"), param_type(&t.columns[i].ty)))
        .collect();
    let props: Vec<String> = bulk
        .iter()
        .map(|&i| {
            let c = &t.columns[i];
            format!(
                "{}: {}",
                ident(&c.name),
                param_expr(&format!("r.c{i}"), &c.ty)
            )
        })
        .collect();
    let q = format!(
        "UNWIND $rows AS r CREATE (n:{} {{{}}})",
        ident(&t.name),
        props.join(", ")
    );
    for chunk in rows.chunks(UNWIND_CHUNK) {
        let list: Vec<KValue> = chunk
            .iter()
            .map(|row| {
                KValue::Struct(
                    bulk.iter()
                        .map(|&i| (format!("c{i}"), to_param(&row[i], &t.columns[i].ty)))
                        .collect(),
                )
            })
            .collect();
        let mut stmt = conn
            .prepare(&q)
            .map_err(|e| kerr(format!("preparing {q}"), e))?;
        conn.execute(
            &mut stmt,
            vec![(
                "rows",
                KValue::List(
                    LogicalType::Struct {
                        fields: fields.clone(),
                    },
                    list,
                ),
            )],
        )
        .map_err(|e| {
            kerr(
                format!("inserting {} nodes into {}", chunk.len(), t.name),
                e,
            )
        })?;
    }
    Ok(())
}

/// Whether new nodes of `t` go by COPY from a CSV file: at least `threshold` of them, of
/// types (and values) the CSV path carries exactly.
fn nodes_by_copy(t: &NodeTableDef, rows: &[&[Value]], threshold: usize) -> bool {
    rows.len() >= threshold
        && t.columns.iter().all(|c| csv::csv_safe(&c.ty))
        && rows.iter().all(|r| csv::csv_values_safe(r.iter()))
}

fn pk_type(t: &NodeTableDef) -> &DataType {
    &t.key_column().expect("validated primary key").ty
}

fn edge_tables<'s>(
    schema: &'s Schema,
    e: &EdgeRef,
) -> Result<(&'s RelTableDef, &'s NodeTableDef, &'s NodeTableDef), StoreError> {
    Ok((
        corrupt(schema.rel_table(&e.table))?,
        corrupt(schema.node_table(&e.from.table))?,
        corrupt(schema.node_table(&e.to.table))?,
    ))
}

/// (rel table, FROM table, TO table): new edges are inserted per group.
type EdgeGroup = (String, String, String);

/// A table to dump: name, columns, and for a rel table the FROM and TO primary keys.
pub type DumpTable = (String, Vec<String>, Option<(String, String)>);

/// A change that names a table the schema lacks: the engine never emits one.
fn corrupt<T>(r: Result<T, kuzu_sync_engine::EngineError>) -> Result<T, StoreError> {
    r.map_err(|e| StoreError::Corrupt(e.to_string()))
}

/// Prepared statements by text, for the single-row paths. (Kuzu replans on every execute,
/// so this saves parsing only; it also keeps the code short.)
#[derive(Default)]
struct StatementCache {
    stmts: BTreeMap<String, PreparedStatement>,
}

impl StatementCache {
    fn execute(
        &mut self,
        conn: &Connection,
        q: &str,
        params: Vec<(&str, KValue)>,
    ) -> Result<(), StoreError> {
        if !self.stmts.contains_key(q) {
            let stmt = conn
                .prepare(q)
                .map_err(|e| kerr(format!("preparing {q}"), e))?;
            self.stmts.insert(q.to_string(), stmt);
        }
        let stmt = self.stmts.get_mut(q).expect("inserted");
        conn.execute(stmt, params)
            .map_err(|e| kerr(format!("executing {q}"), e))?;
        Ok(())
    }
}

impl GraphStore for KuzuGraphStore {
    fn watermark(&mut self) -> Result<VersionVector, StoreError> {
        let conn = self.conn()?;
        self.read_watermark(&conn)
    }

    fn apply(&mut self, batch: &ApplyBatch, schema: &Schema) -> Result<(), StoreError> {
        self.apply_when(batch, schema, &mut || Ok(()))
    }

    fn apply_when(
        &mut self,
        batch: &ApplyBatch,
        schema: &Schema,
        ready: &mut dyn FnMut() -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        let conn = self.conn()?;
        // DDL runs in its own auto-committed statements (idempotent: IF [NOT] EXISTS), since
        // Kuzu does not mix DDL and data changes in one transaction: so after `ready`.
        let mut ready = Some(ready);
        if batch.changes.iter().any(GraphChange::is_schema) {
            ready.take().map_or(Ok(()), |r| r())?;
        }
        for c in &batch.changes {
            self.apply_ddl(&conn, c)?;
        }
        // The stage tables are the store's own, empty between batches: creating one before
        // the log is durable changes nothing a user sees.
        let staged = self.staged_tables(&conn, batch, schema)?;
        run(&conn, "BEGIN TRANSACTION")?;
        let copied = match self
            .apply_data(&conn, batch, schema, &staged)
            .and_then(|copied| ready.take().map_or(Ok(()), |r| r()).map(|()| copied))
        {
            Ok(copied) => copied,
            Err(e) => {
                let _ = conn.query("ROLLBACK");
                return Err(e);
            }
        };
        if copied {
            // Rows written by COPY survived a SIGKILL after COMMIT only once checkpointed
            // (found by the crash test), so such a batch commits its data, checkpoints, and
            // only then records the watermark. A crash in between leaves rows without their
            // watermark; recovery re-applies them with `may_exist`, which is idempotent.
            run(&conn, "COMMIT")?;
            run(&conn, "CHECKPOINT")?;
            self.since_checkpoint.set(0);
            run(&conn, "BEGIN TRANSACTION")?;
        }
        let wm = serde_json::to_string(&batch.watermark).expect("serializable");
        let q = format!("MERGE (m:{META_TABLE} {{k: 'watermark'}}) SET m.v = $v");
        let written = conn
            .prepare(&q)
            .map_err(|e| kerr("preparing the watermark update", e))
            .and_then(|mut stmt| {
                conn.execute(&mut stmt, vec![("v", KValue::String(wm))])
                    .map_err(|e| kerr("writing the apply watermark", e))
            });
        if let Err(e) = written {
            let _ = conn.query("ROLLBACK");
            return Err(e);
        }
        match conn.query("COMMIT") {
            Ok(_) => {}
            Err(e) => {
                // An error after a commit may still mean committed (KUZU-NOTES: a checkpoint
                // timeout). The watermark tells.
                if self.read_watermark(&self.conn()?).ok().as_ref() != Some(&batch.watermark) {
                    return Err(kerr("committing the batch", e));
                }
            }
        }
        let since = self.since_checkpoint.get() + 1;
        self.since_checkpoint.set(since);
        // The batch is committed whatever happens here; a checkpoint that fails (say, a
        // reader holds a transaction open) is tried again at the next batch.
        if since >= CHECKPOINT_EVERY && conn.query("CHECKPOINT").is_ok() {
            self.since_checkpoint.set(0);
        }
        Ok(())
    }

    fn overlaps_append(&self) -> bool {
        true
    }

    fn dump(&mut self, schema: &Schema) -> Result<GraphDump, StoreError> {
        let conn = self.conn()?;
        let mut out = GraphDump::new();
        for def in schema.tables() {
            let mut rows = Vec::new();
            match def {
                TableDef::Node(t) => {
                    let cols: Vec<String> = t
                        .columns
                        .iter()
                        .map(|c| read_expr(&format!("n.{}", ident(&c.name)), &c.ty))
                        .collect();
                    let q = format!("MATCH (n:{}) RETURN {}", ident(&t.name), cols.join(", "));
                    for row in query_rows(&conn, &q)? {
                        rows.push(typed_row(row, &t.columns, &q)?);
                    }
                }
                TableDef::Rel(r) => {
                    for (f, to) in &r.connections {
                        // A pair whose ends are not node tables (competing creates of one
                        // name with different kinds) was never created in Kuzu.
                        let (Ok(ft), Ok(tt)) = (schema.node_table(f), schema.node_table(to)) else {
                            continue;
                        };
                        let mut cols = vec![
                            read_expr(&format!("a.{}", ident(&ft.primary_key)), pk_type(ft)),
                            read_expr(&format!("b.{}", ident(&tt.primary_key)), pk_type(tt)),
                            format!("e.{EDGE_KEY_COLUMN}"),
                        ];
                        cols.extend(
                            r.columns
                                .iter()
                                .map(|c| read_expr(&format!("e.{}", ident(&c.name)), &c.ty)),
                        );
                        let q = format!(
                            "MATCH (a:{})-[e:{}]->(b:{}) RETURN {}",
                            ident(&ft.name),
                            ident(&r.name),
                            ident(&tt.name),
                            cols.join(", ")
                        );
                        let mut types = vec![
                            Column {
                                name: "from".into(),
                                ty: pk_type(ft).clone(),
                                default: None,
                            },
                            Column {
                                name: "to".into(),
                                ty: pk_type(tt).clone(),
                                default: None,
                            },
                            Column {
                                name: "key".into(),
                                ty: DataType::String,
                                default: None,
                            },
                        ];
                        types.extend(r.columns.iter().cloned());
                        for row in query_rows(&conn, &q)? {
                            let mut v = typed_row(row, &types, &q)?.into_iter().enumerate().map(
                                |(i, v)| match v {
                                    Value::String(s) if i == 2 => {
                                        Value::String(s.strip_prefix('=').unwrap_or(&s).to_string())
                                    }
                                    other => other,
                                },
                            );
                            let mut full = vec![
                                Value::String(ft.name.clone()),
                                v.next().unwrap_or(Value::Null),
                                Value::String(tt.name.clone()),
                                v.next().unwrap_or(Value::Null),
                            ];
                            full.extend(v);
                            rows.push(full);
                        }
                    }
                }
            }
            rows.sort();
            out.insert(def.name().to_string(), rows);
        }
        Ok(out)
    }
}

fn query_rows(conn: &Connection, q: &str) -> Result<Vec<Vec<KValue>>, StoreError> {
    Ok(conn
        .query(q)
        .map_err(|e| kerr(format!("query {q}"), e))?
        .collect())
}

fn typed_row(row: Vec<KValue>, columns: &[Column], q: &str) -> Result<Vec<Value>, StoreError> {
    row.into_iter()
        .zip(columns)
        .map(|(v, c)| {
            from_kuzu(v, &c.ty)
                .map_err(|e| StoreError::Corrupt(format!("reading {} ({q}): {e}", c.name)))
        })
        .collect()
}

/// A canonical text dump of chosen tables of any Kuzu database (see [`text_dump`]).
pub type TextDump = std::collections::BTreeMap<String, Vec<Vec<String>>>;

/// Every row of every table of a Kuzu database, each value as Kuzu's own text
/// (`CAST(x AS STRING)`), rows sorted: a dump that compares a replica with a database made
/// by plain Kuzu, whatever the types. Rel rows are `[from key, to key, properties…]`
/// (the hidden edge key is left out). `tables` gives (table, columns, Some((from pk, to pk)) for rel tables).
pub fn text_dump(db: &kuzu::Database, tables: &[DumpTable]) -> TextDump {
    use kuzu::{Connection, Value};
    let conn = Connection::new(db).expect("connect");
    let mut out = std::collections::BTreeMap::new();
    for (table, columns, rel) in tables {
        let q = match rel {
            None => {
                let cols: Vec<String> = columns
                    .iter()
                    .map(|c| format!("CAST(n.`{c}` AS STRING)"))
                    .collect();
                format!("MATCH (n:`{table}`) RETURN {}", cols.join(", "))
            }
            Some((fpk, tpk)) => {
                let mut cols = vec![
                    format!("CAST(a.`{fpk}` AS STRING)"),
                    format!("CAST(b.`{tpk}` AS STRING)"),
                ];
                cols.extend(columns.iter().map(|c| format!("CAST(e.`{c}` AS STRING)")));
                format!("MATCH (a)-[e:`{table}`]->(b) RETURN {}", cols.join(", "))
            }
        };
        let mut rows: Vec<Vec<String>> = conn
            .query(&q)
            .unwrap_or_else(|e| panic!("{q}: {e}"))
            .map(|row| {
                row.into_iter()
                    .map(|v| match v {
                        Value::String(s) => s,
                        Value::Null(_) => "<null>".to_string(),
                        other => other.to_string(),
                    })
                    .collect()
            })
            .collect();
        rows.sort();
        out.insert(table.clone(), rows);
    }
    out
}

#[cfg(test)]
mod tests;
