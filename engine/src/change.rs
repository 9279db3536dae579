//! What the engine asks a graph store to do: batches of row-level changes, each batch with
//! the version vector of the events it completes (the apply watermark).

use crate::clock::VersionVector;
use crate::event::{EdgeRef, NodeRef};
use crate::schema::{Column, TableDef};
use crate::value::Value;

/// One change to the stored graph. Row changes carry absolute values, never deltas, so
/// applying a change twice leaves the same graph: apply is idempotent.
#[derive(Clone, Debug, PartialEq)]
pub enum GraphChange {
    CreateTable(TableDef),
    AddColumns {
        table: String,
        columns: Vec<Column>,
    },
    /// Drop the table with all its rows (rel tables are dropped before their node tables).
    DropTable(String),
    /// Insert or replace a node. `values` follow the table's columns in schema order.
    /// `is_new` is true when the engine knows the node is not stored yet, so the store may
    /// use a bulk insert path.
    UpsertNode {
        node: NodeRef,
        values: Vec<Value>,
        is_new: bool,
        /// For a node already stored (`is_new` false): by column, whether its value in
        /// `values` differs from the row the graph held before this batch. Empty when not
        /// known; the store then writes every column. A store may always write every
        /// column (the values are absolute): this only lets it skip the unchanged ones.
        changed: Vec<bool>,
    },
    /// Delete a node and every edge attached to it.
    DeleteNode(NodeRef),
    /// Insert or replace an edge. `values` follow the rel table's property columns.
    UpsertEdge {
        edge: EdgeRef,
        values: Vec<Value>,
        is_new: bool,
    },
    DeleteEdge(EdgeRef),
}

/// A set of changes to apply atomically, together with the new watermark.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ApplyBatch {
    pub changes: Vec<GraphChange>,
    /// All events up to this vector are reflected in the graph once the batch commits.
    pub watermark: VersionVector,
    /// Set during recovery: rows the batch inserts (`is_new`) may already be stored, because
    /// a store that commits a batch in more than one step may have crashed in between. The
    /// store must then insert them idempotently.
    pub may_exist: bool,
}

impl GraphChange {
    /// A change to the tables themselves (create, add columns, drop), not to rows. A store
    /// may have to run these outside the batch's transaction (Kuzu does not mix DDL and
    /// data in one).
    pub fn is_schema(&self) -> bool {
        matches!(
            self,
            GraphChange::CreateTable(_)
                | GraphChange::AddColumns { .. }
                | GraphChange::DropTable(_)
        )
    }
}

impl ApplyBatch {
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Kuzu's store runs schema changes outside the batch's transaction, so only after the
    /// log append is durable: a row change counted as one would only wait longer, but a
    /// schema change not counted would reach Kuzu before the log.
    #[test]
    fn schema_changes_are_told_from_row_changes() {
        let node = NodeRef {
            table: "T".into(),
            key: Value::Int64(1),
        };
        let schema = [
            GraphChange::CreateTable(TableDef::Node(crate::schema::NodeTableDef {
                name: "T".into(),
                columns: vec![],
                primary_key: "id".into(),
            })),
            GraphChange::AddColumns {
                table: "T".into(),
                columns: vec![],
            },
            GraphChange::DropTable("T".into()),
        ];
        let rows = [
            GraphChange::UpsertNode {
                node: node.clone(),
                values: vec![Value::Int64(1)],
                is_new: true,
                changed: vec![],
            },
            GraphChange::DeleteNode(node),
        ];
        assert!(schema.iter().all(GraphChange::is_schema));
        assert!(!rows.iter().any(GraphChange::is_schema));
    }
}
