//! Anti-entropy over the resolved state: every visible entity (node, edge) and the schema
//! as one Merkle entry each, from a canonical dump (ARCHITECTURE.md, "Merkle
//! anti-entropy"). Built from the engine's view for comparing replicas, or from the graph
//! store's rows for finding drift (writes made straight into Kuzu).

use serde::{Deserialize, Serialize};

use crate::event::{EdgeRef, Entity, NodeRef, Op};
use crate::merkle::{self, Digest, Entry, Key};
use crate::ports::GraphDump;
use crate::schema::{Schema, TableDef};
use crate::value::Value;

/// The table name of the schema's own entry.
pub const SCHEMA_ENTITY: &str = "(schema)";

/// One entity of a dump: its Merkle entry and what it is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntityRow {
    pub key: Key,
    pub digest: Digest,
    /// The table, or [`SCHEMA_ENTITY`].
    pub table: String,
    /// `User(Alice)`, `Follows(Adam->Karissa)`: for people.
    pub label: String,
    /// The dump row: a node's columns; an edge's from table, from key, to table, to key,
    /// edge key, then properties. Empty for the schema.
    pub row: Vec<Value>,
}

impl EntityRow {
    pub fn entry(&self) -> Entry {
        (self.key, self.digest)
    }
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    rmp_serde::to_vec(v).expect("values always serialize")
}

/// Every entity of `dump` (tables of `schema`), plus the schema itself if `with_schema`.
pub fn entities(dump: &GraphDump, schema: &Schema, with_schema: bool) -> Vec<EntityRow> {
    let mut out = Vec::new();
    for (table, rows) in dump {
        let Some(def) = schema.table(table) else {
            continue;
        };
        let lower = table.to_ascii_lowercase();
        for row in rows {
            let (identity, label): (Vec<Value>, String) = match def {
                TableDef::Node(t) => {
                    let k = t.key_index().and_then(|i| row.get(i)).cloned();
                    let k = k.unwrap_or(Value::Null);
                    let label = format!("{}({k})", t.name);
                    (vec![k], label)
                }
                TableDef::Rel(r) => {
                    let id: Vec<Value> = row.iter().take(5).cloned().collect();
                    let label = match &id[..] {
                        [_, f, _, t, Value::String(k)] if k.is_empty() => {
                            format!("{}({f}->{t})", r.name)
                        }
                        [_, f, _, t, k] => format!("{}({f}->{t} #{k})", r.name),
                        _ => r.name.clone(),
                    };
                    (id, label)
                }
            };
            out.push(EntityRow {
                key: merkle::key_hash(&encode(&(&lower, &identity))),
                digest: merkle::digest(&encode(row)),
                table: table.clone(),
                label,
                row: row.clone(),
            });
        }
    }
    if with_schema {
        let mut ddl: Vec<String> = schema.tables().map(crate::ddl::render_table_ddl).collect();
        ddl.sort();
        let policies = schema.policies();
        out.push(EntityRow {
            key: merkle::key_hash(SCHEMA_ENTITY.as_bytes()),
            digest: merkle::digest(&encode(&(ddl, format!("{policies:?}")))),
            table: SCHEMA_ENTITY.into(),
            label: "the schema".into(),
            row: Vec::new(),
        });
    }
    out
}

/// The Merkle index of some entities.
pub fn index(entities: &[EntityRow], bucket_bits: u32) -> merkle::MerkleIndex {
    merkle::MerkleIndex::build(entities.iter().map(EntityRow::entry).collect(), bucket_bits)
}

/// The ops that make this replica hold `upserts` (an add per row) and lack `deletes`,
/// and the labels of the rows that ops cannot express (the schema entity).
pub fn ops_for<'a>(
    upserts: impl IntoIterator<Item = &'a EntityRow>,
    deletes: impl IntoIterator<Item = &'a EntityRow>,
    schema: &Schema,
) -> (Vec<Op>, Vec<String>) {
    let mut ops = Vec::new();
    let mut skipped = Vec::new();
    let mut put = |op: Option<Op>, row: &EntityRow| match op {
        Some(op) => ops.push(op),
        None => skipped.push(row.label.clone()),
    };
    for row in upserts {
        put(upsert_op(row, schema), row);
    }
    for row in deletes {
        put(delete_op(row, schema), row);
    }
    (ops, skipped)
}

/// The op that makes an entity hold `row` (an add sets every property), or `None` for the
/// schema, which ops cannot copy.
pub fn upsert_op(e: &EntityRow, schema: &Schema) -> Option<Op> {
    match schema.table(&e.table)? {
        TableDef::Node(t) => Some(Op::AddNode {
            table: t.name.clone(),
            props: key_first(t, &e.row),
        }),
        TableDef::Rel(r) => {
            let edge = edge_ref(&r.name, &e.row)?;
            Some(Op::AddEdge {
                edge,
                props: r
                    .columns
                    .iter()
                    .map(|c| c.name.clone())
                    .zip(e.row.iter().skip(5).cloned())
                    .collect(),
            })
        }
    }
}

/// The op that deletes an entity, or `None` for the schema.
pub fn delete_op(e: &EntityRow, schema: &Schema) -> Option<Op> {
    match schema.table(&e.table)? {
        TableDef::Node(t) => Some(Op::DeleteNode(NodeRef {
            table: t.name.clone(),
            key: t.key_index().and_then(|i| e.row.get(i)).cloned()?,
        })),
        TableDef::Rel(r) => Some(Op::DeleteEdge(edge_ref(&r.name, &e.row)?)),
    }
}

/// Whether a row received from a peer contradicts its key or digest: its table and shape
/// are known here (same table, one value per column of a node table) and the key or
/// digest computed here from them differs from the one it carries. A row this replica
/// cannot check (a table it lacks, or another width after a concurrent `ADD COLUMN`) does
/// not contradict; such rows are shown, and a repair writes only what fits the schema.
pub fn row_contradicts(e: &EntityRow, schema: &Schema) -> bool {
    if e.table == SCHEMA_ENTITY {
        return !e.row.is_empty();
    }
    let checkable = match schema.table(&e.table) {
        None => false,
        Some(TableDef::Node(t)) => e.row.len() == t.columns.len(),
        Some(TableDef::Rel(_)) => e.row.len() >= 5,
    };
    if !checkable {
        return false;
    }
    let dump: GraphDump = [(e.table.clone(), vec![e.row.clone()])]
        .into_iter()
        .collect();
    !matches!(entities(&dump, schema, false).as_slice(), [mine] if mine.key == e.key && mine.digest == e.digest)
}

/// The entity a row belongs to.
pub fn entity_of(e: &EntityRow, schema: &Schema) -> Option<Entity> {
    match schema.table(&e.table)? {
        TableDef::Node(t) => Some(Entity::Node(NodeRef {
            table: t.name.clone(),
            key: t.key_index().and_then(|i| e.row.get(i)).cloned()?,
        })),
        TableDef::Rel(r) => Some(Entity::Edge(edge_ref(&r.name, &e.row)?)),
    }
}

/// A node's columns as props, primary key first (the order `AddNode` expects).
fn key_first(t: &crate::schema::NodeTableDef, row: &[Value]) -> Vec<(String, Value)> {
    let mut props: Vec<(String, Value)> = t
        .columns
        .iter()
        .map(|c| c.name.clone())
        .zip(row.iter().cloned())
        .collect();
    if let Some(i) = t.key_index().filter(|&i| i < props.len()) {
        let k = props.remove(i);
        props.insert(0, k);
    }
    props
}

fn edge_ref(table: &str, row: &[Value]) -> Option<EdgeRef> {
    match row {
        [Value::String(ft), f, Value::String(tt), t, Value::String(k), ..] => Some(EdgeRef {
            table: table.to_string(),
            from: NodeRef {
                table: ft.clone(),
                key: f.clone(),
            },
            to: NodeRef {
                table: tt.clone(),
                key: t.clone(),
            },
            key: k.clone(),
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
