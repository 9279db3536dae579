//! The JSON-lines op format of `kuzu-sync write` (documented in the README), with schema
//! changes in the same input: a `{"op":"ddl","cypher":"…"}` line makes its tables usable by
//! the lines after it. Every line is parsed and checked before anything is written, and
//! the whole input is written as one atomic write.

use kuzu_sync_engine::ddl::parse_ddl;
use kuzu_sync_engine::json::op_from_json;
use kuzu_sync_engine::{EventId, Hlc, Op, ReplicaError, Schema, SchemaOp, Stamp};

use crate::{Error, KuzuReplica};

/// Parses JSON lines against `schema`, which evolves with the DDL lines in the input.
/// Blank lines and lines starting with `#` or `//` are skipped. Errors name the line.
pub fn parse_json_lines(text: &str, schema: &Schema) -> Result<Vec<Op>, Error> {
    Ok(parse_with_lines(text, schema)?
        .into_iter()
        .map(|(_, op)| op)
        .collect())
}

/// Like [`parse_json_lines`], with each op's 1-based line number.
fn parse_with_lines(text: &str, schema: &Schema) -> Result<Vec<(usize, Op)>, Error> {
    let mut schema = schema.clone();
    let mut ops = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with("//") {
            continue;
        }
        let err = |message: String| Error::Line {
            line: i + 1,
            message,
        };
        let json: serde_json::Value =
            serde_json::from_str(line).map_err(|e| err(format!("malformed JSON: {e}")))?;
        if json.get("op").and_then(|v| v.as_str()) == Some("ddl") {
            let cypher = json
                .get("cypher")
                .and_then(|v| v.as_str())
                .ok_or_else(|| err("a ddl op needs a \"cypher\" string".into()))?;
            for op in schema_ops(cypher, &mut schema).map_err(|e| err(e.to_string()))? {
                ops.push((i + 1, Op::Schema(op)));
            }
            continue;
        }
        let op = op_from_json(line, &schema).map_err(|e| err(e.to_string()))?;
        if let Op::Schema(s) = &op {
            schema.validate(s).map_err(|e| err(e.to_string()))?;
            apply_provisionally(&mut schema, s);
        }
        ops.push((i + 1, op));
    }
    Ok(ops)
}

/// Parses a DDL script against `schema` (which it updates), skipping `IF NOT EXISTS`
/// statements for tables or columns that exist. Errors name the statement.
pub fn schema_ops(cypher: &str, schema: &mut Schema) -> Result<Vec<SchemaOp>, Error> {
    let mut out = Vec::new();
    for parsed in parse_ddl(cypher)? {
        let exists = match &parsed.op {
            SchemaOp::CreateNodeTable(t) => schema.table(&t.name).is_some(),
            SchemaOp::CreateRelTable(t) => schema.table(&t.name).is_some(),
            SchemaOp::AddColumn { table, column } => schema
                .table(table)
                .is_some_and(|t| t.column(&column.name).is_some()),
            SchemaOp::SetPolicy { .. } => false,
        };
        if exists && parsed.if_not_exists {
            continue;
        }
        schema
            .validate(&parsed.op)
            .map_err(|e| Error::Invalid(format!("{}: {e}", parsed.text.trim())))?;
        apply_provisionally(schema, &parsed.op);
        out.push(parsed.op);
    }
    Ok(out)
}

/// Applies a schema op to a scratch copy of the schema, so later lines can use it. The
/// stamp sorts after every real one; the copy is thrown away.
fn apply_provisionally(schema: &mut Schema, op: &SchemaOp) {
    let n = schema.version;
    let stamp = Stamp {
        hlc: Hlc {
            wall_ms: u64::MAX,
            logical: n as u32,
        },
        peer: kuzu_sync_engine::PeerId::new("provisional").expect("valid peer id"),
        counter: n,
    };
    schema.apply(op, &stamp);
}

/// Parses and writes JSON lines as one atomic write.
/// A refused op's error names its line.
pub fn write_json_lines(replica: &mut KuzuReplica, text: &str) -> Result<Vec<EventId>, Error> {
    let numbered = parse_with_lines(text, replica.engine().schema())?;
    let lines: Vec<usize> = numbered.iter().map(|(l, _)| *l).collect();
    let ops = numbered.into_iter().map(|(_, op)| op).collect();
    replica.write(ops).map_err(|e| match e {
        ReplicaError::Op { index, source } => Error::Line {
            line: lines[index],
            message: source.to_string(),
        },
        other => other.into(),
    })
}
