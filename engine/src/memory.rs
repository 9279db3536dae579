//! An in-memory [`GraphStore`]: applies [`GraphChange`]s to plain maps. For fast tests, and
//! as the reference the Kuzu store is checked against in the conformance suite.

use std::collections::BTreeMap;

use crate::change::{ApplyBatch, GraphChange};
use crate::clock::VersionVector;
use crate::event::{EdgeRef, NodeRef};
use crate::ports::{GraphDump, GraphStore, StoreError};
use crate::schema::{Schema, TableDef};
use crate::value::Value;

#[derive(Clone, Debug, Default)]
struct Table {
    def: Option<TableDef>,
    nodes: BTreeMap<Value, Vec<Value>>,
    /// Keyed by the edge with lower-cased table names.
    edges: BTreeMap<EdgeRef, (EdgeRef, Vec<Value>)>,
}

/// The graph as plain maps. `apply` is atomic: a failing batch leaves it unchanged.
#[derive(Clone, Debug, Default)]
pub struct MemoryGraphStore {
    tables: BTreeMap<String, Table>,
    watermark: VersionVector,
    /// Number of batches applied (for tests).
    pub batches: usize,
    /// When set, the next `apply` fails (for tests of error paths).
    pub fail_next_apply: bool,
}

fn lower(s: &str) -> String {
    s.to_ascii_lowercase()
}

fn norm(e: &EdgeRef) -> EdgeRef {
    EdgeRef {
        table: lower(&e.table),
        from: NodeRef {
            table: lower(&e.from.table),
            key: e.from.key.clone(),
        },
        to: NodeRef {
            table: lower(&e.to.table),
            key: e.to.key.clone(),
        },
        key: e.key.clone(),
    }
}

impl MemoryGraphStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn table_mut(&mut self, name: &str) -> Result<&mut Table, StoreError> {
        self.tables
            .get_mut(&lower(name))
            .ok_or_else(|| StoreError::Corrupt(format!("table {name} does not exist")))
    }

    fn apply_change(&mut self, change: &GraphChange) -> Result<(), StoreError> {
        match change {
            GraphChange::CreateTable(def) => {
                self.tables.entry(lower(def.name())).or_default().def = Some(def.clone());
            }
            GraphChange::AddColumns { table, columns } => {
                let t = self.table_mut(table)?;
                // Idempotent, like Kuzu's `ADD IF NOT EXISTS`: skip columns already there.
                let columns: Vec<_> = columns
                    .iter()
                    .filter(|c| t.def.as_ref().is_none_or(|d| d.column(&c.name).is_none()))
                    .cloned()
                    .collect();
                let fill: Vec<Value> = columns
                    .iter()
                    .map(|c| c.default.clone().unwrap_or(Value::Null))
                    .collect();
                for row in t.nodes.values_mut() {
                    row.extend(fill.iter().cloned());
                }
                for (_, row) in t.edges.values_mut() {
                    row.extend(fill.iter().cloned());
                }
                if let Some(def) = &mut t.def {
                    match def {
                        TableDef::Node(n) => n.columns.extend(columns.iter().cloned()),
                        TableDef::Rel(r) => r.columns.extend(columns.iter().cloned()),
                    }
                }
            }
            GraphChange::DropTable(name) => {
                self.tables.remove(&lower(name));
            }
            GraphChange::UpsertNode { node, values, .. } => {
                let t = self.table_mut(&node.table)?;
                t.nodes.insert(node.key.clone(), values.clone());
            }
            GraphChange::DeleteNode(node) => {
                let t = self.table_mut(&node.table)?;
                t.nodes.remove(&node.key);
                let n = NodeRef {
                    table: lower(&node.table),
                    key: node.key.clone(),
                };
                for t in self.tables.values_mut() {
                    t.edges.retain(|k, _| k.from != n && k.to != n);
                }
            }
            GraphChange::UpsertEdge { edge, values, .. } => {
                for end in [&edge.from, &edge.to] {
                    let t = self.table_mut(&end.table)?;
                    if !t.nodes.contains_key(&end.key) {
                        return Err(StoreError::Corrupt(format!(
                            "edge {edge} names missing node {end}"
                        )));
                    }
                }
                let t = self.table_mut(&edge.table)?;
                t.edges.insert(norm(edge), (edge.clone(), values.clone()));
            }
            GraphChange::DeleteEdge(edge) => {
                let t = self.table_mut(&edge.table)?;
                t.edges.remove(&norm(edge));
            }
        }
        Ok(())
    }
}

impl GraphStore for MemoryGraphStore {
    fn watermark(&mut self) -> Result<VersionVector, StoreError> {
        Ok(self.watermark.clone())
    }

    fn apply(&mut self, batch: &ApplyBatch, _schema: &Schema) -> Result<(), StoreError> {
        if self.fail_next_apply {
            self.fail_next_apply = false;
            return Err(StoreError::Corrupt("injected failure".into()));
        }
        let mut next = self.clone();
        for c in &batch.changes {
            next.apply_change(c)?;
        }
        next.watermark = batch.watermark.clone();
        next.batches += 1;
        *self = next;
        Ok(())
    }

    fn dump(&mut self, schema: &Schema) -> Result<GraphDump, StoreError> {
        let mut out = GraphDump::new();
        for def in schema.tables() {
            let mut rows = Vec::new();
            if let Some(t) = self.tables.get(&lower(def.name())) {
                match def {
                    TableDef::Node(_) => rows.extend(t.nodes.values().cloned()),
                    TableDef::Rel(_) => {
                        for (e, props) in t.edges.values() {
                            let mut row = vec![
                                Value::String(display(schema, &e.from.table)),
                                e.from.key.clone(),
                                Value::String(display(schema, &e.to.table)),
                                e.to.key.clone(),
                                Value::String(e.key.clone()),
                            ];
                            row.extend(props.iter().cloned());
                            rows.push(row);
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

fn display(schema: &Schema, table: &str) -> String {
    schema
        .table(table)
        .map(|t| t.name().to_string())
        .unwrap_or_else(|| table.to_string())
}
