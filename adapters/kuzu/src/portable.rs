//! A Kuzu graph store that applies batches through the portable statements of
//! [`kuzu_sync_engine::cypher`] (every value a string, turned back by `CAST`), as the JS
//! hosts do, instead of this crate's fast paths. Its purpose is to test those statements on
//! real Kuzu: the graph-store conformance suite runs through it (`tests/tests/it.rs`).

use std::path::Path;

use kuzu::{Connection, LogicalType, Value as KValue};
use kuzu_sync_engine::cypher::{self, Param, Plan};
use kuzu_sync_engine::{ApplyBatch, GraphDump, GraphStore, Schema, StoreError, VersionVector};

use crate::{kerr, run, KuzuConfig, KuzuGraphStore};

/// See the module docs. Reads (watermark, dump) are [`KuzuGraphStore`]'s.
#[derive(Debug)]
pub struct PortableGraphStore {
    inner: KuzuGraphStore,
}

impl PortableGraphStore {
    pub fn open(path: &Path, config: &KuzuConfig) -> Result<Self, StoreError> {
        Ok(PortableGraphStore {
            inner: KuzuGraphStore::open(path, config)?,
        })
    }
}

fn param(p: &Param) -> KValue {
    match p {
        Param::Text(s) => KValue::String(s.clone()),
        Param::Rows(rows) => {
            let fields: Vec<(String, LogicalType)> = rows
                .first()
                .map(|r| {
                    r.iter()
                        .map(|(n, _)| (n.clone(), LogicalType::String))
                        .collect()
                })
                .unwrap_or_default();
            KValue::List(
                LogicalType::Struct { fields },
                rows.iter()
                    .map(|r| {
                        KValue::Struct(
                            r.iter()
                                .map(|(n, v)| (n.clone(), KValue::String(v.clone())))
                                .collect(),
                        )
                    })
                    .collect(),
            )
        }
    }
}

/// Runs a plan: its DDL auto-committed, then its data in one transaction (rolled back on
/// an error).
pub fn run_plan(conn: &Connection, plan: &Plan) -> Result<(), StoreError> {
    for ddl in &plan.ddl {
        run(conn, ddl)?;
    }
    run(conn, "BEGIN TRANSACTION")?;
    for s in &plan.data {
        let done = conn
            .prepare(&s.cypher)
            .map_err(|e| kerr(format!("preparing {}", s.cypher), e))
            .and_then(|mut stmt| {
                let params: Vec<(&str, KValue)> = s
                    .params
                    .iter()
                    .map(|(n, p)| (n.as_str(), param(p)))
                    .collect();
                conn.execute(&mut stmt, params)
                    .map_err(|e| kerr(format!("executing {}", s.cypher), e))
            });
        if let Err(e) = done {
            let _ = conn.query("ROLLBACK");
            return Err(e);
        }
    }
    run(conn, "COMMIT")
}

impl GraphStore for PortableGraphStore {
    fn watermark(&mut self) -> Result<VersionVector, StoreError> {
        self.inner.watermark()
    }

    fn apply(&mut self, batch: &ApplyBatch, schema: &Schema) -> Result<(), StoreError> {
        let plan = cypher::plan(batch, schema).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let conn = self.inner.conn()?;
        run_plan(&conn, &plan)
    }

    fn dump(&mut self, schema: &Schema) -> Result<GraphDump, StoreError> {
        self.inner.dump(schema)
    }
}
