//! The JSON-lines op format of `kuzu-sync write` (documented in the README). Parsing lives
//! in the engine ([`kuzu_sync_engine::json::parse_op_lines`]); this writes the parsed ops as
//! one atomic write and names the line of a refused op.

use kuzu_sync_engine::json::parse_op_lines;
use kuzu_sync_engine::{EngineError, EventId, Op, ReplicaError, Schema};

pub use kuzu_sync_engine::json::schema_ops;

use crate::{Error, KuzuReplica};

/// Parses JSON lines against `schema` (see [`parse_op_lines`]).
pub fn parse_json_lines(text: &str, schema: &Schema) -> Result<Vec<Op>, Error> {
    Ok(parse_op_lines(text, schema)?
        .into_iter()
        .map(|(_, op)| op)
        .collect())
}

/// Parses and writes JSON lines as one atomic write: one bad line and nothing is written.
pub fn write_json_lines(replica: &mut KuzuReplica, text: &str) -> Result<Vec<EventId>, Error> {
    let numbered = parse_op_lines(text, replica.engine().schema())?;
    let lines: Vec<usize> = numbered.iter().map(|(l, _)| *l).collect();
    let ops = numbered.into_iter().map(|(_, op)| op).collect();
    replica.write(ops).map_err(|e| match e {
        ReplicaError::Op { index, source } => EngineError::AtLine {
            line: lines[index],
            source: Box::new(source),
        }
        .into(),
        other => other.into(),
    })
}
