//! The Cypher that applies an [`ApplyBatch`] to Kuzu, as plain statements with text
//! parameters: what a host without the native adapter's fast paths runs (the JS hosts on
//! `kuzu` and `kuzu-wasm`; ARCHITECTURE.md, "JavaScript and WASM").
//!
//! Every parameter is a string, never null: a value travels as `'v'` followed by its Kuzu
//! text form, NULL as the empty string, and the statement turns it back with
//! `CASE WHEN p = '' THEN NULL ELSE CAST(substring(p, 2, …) AS TYPE) END` (through
//! `concat` for a bare `$p`, whose type Kuzu's binder would otherwise infer from the cast).
//! So the statements hold up against the value traps of both JS hosts that JS-NOTES
//! measured (integers above 2^53, a list parameter typed by its first element, `Date` as
//! DATE or TIMESTAMP, null fields), and the native `kuzu` crate runs them too (the
//! conformance suite does, in `adapters/kuzu`).
//!
//! Values of nested types (LIST, ARRAY, STRUCT, MAP, UNION) are not parameters: Kuzu's text
//! form cannot carry them exactly (`CAST` from text keeps the quotes of nested strings and
//! splits unquoted ones at commas), so they are written into the statement as Cypher
//! expressions ([`literal`]: list and struct literals, `map(…)`, `union_value(…)`, each
//! scalar a quoted string under `CAST`), row by row. One loss remains: Kuzu 0.11 reads
//! TIMESTAMP_NS from text to the microsecond, and offers no exact way in from Cypher, so
//! nanoseconds below the microsecond are dropped on this path.
//!
//! The plan: [`Plan::ddl`] runs first, each statement auto-committed (Kuzu does not mix DDL
//! and data in a transaction; every one is idempotent), then [`Plan::data`] in one
//! transaction, ending with the watermark, so rows and watermark commit together.

use std::sync::Arc;

use crate::change::{ApplyBatch, GraphChange};
use crate::ddl::{quote_ident as ident, quote_string, render_add_column, render_table_ddl};
use crate::error::EngineError;
use crate::event::EdgeRef;
use crate::schema::{NodeTableDef, RelTableDef, Schema, EDGE_KEY_COLUMN};
use crate::value::{DataType, Value};

/// The node table that holds the watermark (`k = 'watermark'`, `v` its JSON).
pub const META_TABLE: &str = "_ks_meta";
/// Rows per `UNWIND` statement.
pub const UNWIND_CHUNK: usize = 10_000;

/// One statement and its parameters. Its text `C` is a `String`, or an `Arc<str>` shared
/// by the statements that repeat it ([`plan_shared`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Statement<C = String> {
    pub cypher: C,
    pub params: Vec<(String, Param)>,
}

/// A parameter: a string in the encoding above, or a list of rows of such strings (an
/// `UNWIND $rows`: every row has the same fields, in the same order; never empty).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Param {
    Text(String),
    Rows(Vec<Vec<(String, String)>>),
}

/// What applies one batch: DDL first, then the data and the watermark in one transaction.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan<C = String> {
    pub ddl: Vec<String>,
    pub data: Vec<Statement<C>>,
}

/// The statement that creates the watermark's table, if it is not there.
pub fn meta_table_ddl() -> String {
    format!("CREATE NODE TABLE IF NOT EXISTS {META_TABLE}(k STRING, v STRING, PRIMARY KEY (k))")
}

/// The query that reads the watermark back (one row, one string column, or no row).
pub fn read_watermark() -> String {
    format!("MATCH (m:{META_TABLE}) WHERE m.k = 'watermark' RETURN m.v")
}

/// A value as a parameter: `'v'` + its Kuzu text form, or `''` for NULL.
pub fn encode(v: &Value) -> String {
    if v.is_null() {
        String::new()
    } else {
        format!("v{}", literal_text(v))
    }
}

/// The text Kuzu's `CAST` from STRING accepts for a value (its CSV literal syntax).
pub fn literal_text(v: &Value) -> String {
    match v {
        // Kuzu's interval parser does not read every form it prints ("… 00:00:01.5"), but
        // it reads explicit units, as in its CSV files.
        Value::Interval {
            months,
            days,
            micros,
        } => format!("{months} months {days} days {micros} us"),
        Value::Union { value, .. } => literal_text(value),
        Value::List(items) => {
            let inner: Vec<String> = items.iter().map(nested_literal).collect();
            format!("[{}]", inner.join(","))
        }
        Value::Struct(fields) => {
            let inner: Vec<String> = fields
                .iter()
                .map(|(n, v)| format!("{n}: {}", nested_literal(v)))
                .collect();
            format!("{{{}}}", inner.join(", "))
        }
        Value::Map(entries) => {
            let inner: Vec<String> = entries
                .iter()
                .map(|(k, v)| format!("{}={}", nested_literal(k), nested_literal(v)))
                .collect();
            format!("{{{}}}", inner.join(", "))
        }
        other => other.to_string(),
    }
}

fn nested_literal(v: &Value) -> String {
    match v {
        Value::Null => "NULL".into(),
        Value::String(s) => format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'")),
        other => literal_text(other),
    }
}

/// The expression that decodes parameter `expr` (a bare `$p` or a row field `r.c0`).
pub fn decode(expr: &str, ty: &DataType) -> String {
    let text = if expr.starts_with('$') {
        format!("concat({expr}, '')")
    } else {
        expr.to_string()
    };
    if *ty == DataType::String {
        return format!(
            "CASE WHEN {text} = '' THEN NULL ELSE substring({text}, 2, 2147483647) END"
        );
    }
    format!(
        "CASE WHEN {text} = '' THEN NULL ELSE CAST(substring({text}, 2, 2147483647) AS {ty}) END"
    )
}

/// True for the types whose values are written as [`literal`]s rather than parameters.
pub fn is_nested(ty: &DataType) -> bool {
    matches!(
        ty,
        DataType::List(_)
            | DataType::Array(..)
            | DataType::Struct(_)
            | DataType::Map(..)
            | DataType::Union(_)
    )
}

/// A Cypher expression of value `v` of type `ty`, exact for every type but TIMESTAMP_NS
/// (see the module docs): nested values as list and struct literals, `map(…)` and
/// `union_value(…)`, strings quoted, other scalars as their quoted text under `CAST`.
pub fn literal(v: &Value, ty: &DataType) -> String {
    match (v, ty) {
        (Value::Null, _) => format!("CAST(NULL AS {ty})"),
        (Value::String(s), _) => quote_string(s),
        (Value::List(items), DataType::List(t) | DataType::Array(t, _)) => {
            let inner: Vec<String> = items.iter().map(|i| literal(i, t)).collect();
            format!("CAST([{}] AS {ty})", inner.join(", "))
        }
        (Value::Struct(fields), DataType::Struct(types)) => {
            let inner: Vec<String> = fields
                .iter()
                .map(|(n, v)| {
                    let t = types
                        .iter()
                        .find(|(name, _)| name == n)
                        .map_or(&DataType::String, |(_, t)| t);
                    format!("{}: {}", ident(n), literal(v, t))
                })
                .collect();
            format!("CAST({{{}}} AS {ty})", inner.join(", "))
        }
        (Value::Map(entries), DataType::Map(k, val)) => {
            let keys: Vec<String> = entries.iter().map(|(x, _)| literal(x, k)).collect();
            let values: Vec<String> = entries.iter().map(|(_, x)| literal(x, val)).collect();
            format!(
                "CAST(map(CAST([{}] AS {k}[]), CAST([{}] AS {val}[])) AS {ty})",
                keys.join(", "),
                values.join(", ")
            )
        }
        (Value::Union { tag, value }, DataType::Union(fields)) => {
            let t = fields
                .iter()
                .find(|(name, _)| name == tag)
                .map_or(&DataType::String, |(_, t)| t);
            format!(
                "CAST(union_value({} := {}) AS {ty})",
                ident(tag),
                literal(value, t)
            )
        }
        (other, _) => format!("CAST({} AS {ty})", quote_string(&literal_text(other))),
    }
}

/// The expression for column value `v` in a single-row statement: a literal for a nested
/// type, else parameter `name` (pushed onto `params`), decoded.
fn value_expr(name: &str, v: &Value, ty: &DataType, params: &mut Vec<(String, Param)>) -> String {
    if is_nested(ty) {
        literal(v, ty)
    } else {
        params.push(text(name, encode(v)));
        decode(&format!("${name}"), ty)
    }
}

/// An edge key as stored in `_ks_eid`: prefixed, so that the default (empty) key is not an
/// empty string (Kuzu's CSV reader, on the native COPY path, reads one as NULL).
pub fn stored_key(key: &str) -> String {
    format!("={key}")
}

fn text(name: &str, v: String) -> (String, Param) {
    (name.to_string(), Param::Text(v))
}

fn pk_type(t: &NodeTableDef) -> &DataType {
    &t.key_column().expect("validated primary key").ty
}

/// `MATCH (n:T {pk: …$k})`, anchored on the primary-key index.
fn match_node(t: &NodeTableDef) -> String {
    format!(
        "MATCH (n:{} {{{}: {}}})",
        ident(&t.name),
        ident(&t.primary_key),
        decode("$k", pk_type(t))
    )
}

/// `MATCH (a:F {pk: …$f})-[e:R {_ks_eid: $k}]->(b:T {pk: …$t})`.
fn match_edge(rel: &RelTableDef, from: &NodeTableDef, to: &NodeTableDef) -> String {
    format!(
        "MATCH (a:{} {{{}: {}}})-[e:{} {{{}: $k}}]->(b:{} {{{}: {}}})",
        ident(&from.name),
        ident(&from.primary_key),
        decode("$f", pk_type(from)),
        ident(&rel.name),
        EDGE_KEY_COLUMN,
        ident(&to.name),
        ident(&to.primary_key),
        decode("$t", pk_type(to))
    )
}

/// `$k`, `$f`, `$t`, with room for `columns` more.
fn edge_params(e: &EdgeRef, columns: usize) -> Vec<(String, Param)> {
    let mut params = Vec::with_capacity(3 + columns);
    params.extend([
        text("k", stored_key(&e.key)),
        text("f", encode(&e.from.key)),
        text("t", encode(&e.to.key)),
    ]);
    params
}

type Tables<'s> = (&'s RelTableDef, &'s NodeTableDef, &'s NodeTableDef);

fn edge_tables<'s>(schema: &'s Schema, e: &EdgeRef) -> Result<Tables<'s>, EngineError> {
    Ok((
        schema.rel_table(&e.table)?,
        schema.node_table(&e.from.table)?,
        schema.node_table(&e.to.table)?,
    ))
}

/// The statements that apply `batch` to a Kuzu database whose tables follow `schema` (the
/// schema after the batch). An error names a table the schema lacks: the engine never
/// emits such a batch.
pub fn plan(batch: &ApplyBatch, schema: &Schema) -> Result<Plan, EngineError> {
    plan_with(batch, schema)
}

/// [`plan`], each text held once where statements repeat it (the new edges of one
/// relationship table without nested columns: about 400 bytes each), for a host that
/// holds a whole plan in a bounded memory (the WASM core).
pub fn plan_shared(batch: &ApplyBatch, schema: &Schema) -> Result<Plan<Arc<str>>, EngineError> {
    plan_with(batch, schema)
}

fn plan_with<C: From<String> + Clone>(
    batch: &ApplyBatch,
    schema: &Schema,
) -> Result<Plan<C>, EngineError> {
    let mut out = Plan {
        ddl: vec![meta_table_ddl()],
        data: Vec::new(),
    };
    for change in &batch.changes {
        match change {
            GraphChange::CreateTable(def) => {
                out.ddl
                    .push(render_table_ddl(def).replacen("TABLE", "TABLE IF NOT EXISTS", 1))
            }
            GraphChange::AddColumns { table, columns } => {
                for c in columns {
                    out.ddl.push(render_add_column(table, c).replacen(
                        " ADD ",
                        " ADD IF NOT EXISTS ",
                        1,
                    ));
                }
            }
            GraphChange::DropTable(t) => out.ddl.push(format!("DROP TABLE IF EXISTS {}", ident(t))),
            _ => {}
        }
    }
    // Deletes first (the engine orders them first), then node upserts, new nodes in bulk,
    // then edges, which may reference new nodes.
    let mut new_nodes: Vec<(&NodeTableDef, Vec<&[Value]>)> = Vec::new();
    let mut new_edges: Vec<(&EdgeRef, &[Value])> = Vec::new();
    for change in &batch.changes {
        match change {
            GraphChange::DeleteEdge(e) => {
                let (rel, from, to) = edge_tables(schema, e)?;
                out.data.push(Statement {
                    cypher: format!("{} DELETE e", match_edge(rel, from, to)).into(),
                    params: edge_params(e, 0),
                });
            }
            GraphChange::DeleteNode(n) => {
                let t = schema.node_table(&n.table)?;
                out.data.push(Statement {
                    cypher: format!("{} DETACH DELETE n", match_node(t)).into(),
                    params: vec![text("k", encode(&n.key))],
                });
            }
            GraphChange::UpsertNode {
                node,
                values,
                is_new,
                ..
            } => {
                let t = schema.node_table(&node.table)?;
                if *is_new && !batch.may_exist {
                    match new_nodes.iter_mut().find(|(d, _)| d.name == t.name) {
                        Some((_, rows)) => rows.push(values),
                        None => new_nodes.push((t, vec![values])),
                    }
                } else if let Some(s) = write_node(t, &node.key, values, batch.may_exist) {
                    out.data.push(s);
                }
            }
            GraphChange::UpsertEdge {
                edge,
                values,
                is_new: true,
            } => {
                if batch.may_exist {
                    let (rel, from, to) = edge_tables(schema, edge)?;
                    out.data.push(Statement {
                        cypher: format!("{} DELETE e", match_edge(rel, from, to)).into(),
                        params: edge_params(edge, 0),
                    });
                }
                new_edges.push((edge, values));
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
                let mut params = edge_params(edge, rel.columns.len());
                let sets: Vec<String> = rel
                    .columns
                    .iter()
                    .enumerate()
                    .map(|(i, c)| {
                        let e = value_expr(&format!("c{i}"), &values[i], &c.ty, &mut params);
                        format!("e.{} = {e}", ident(&c.name))
                    })
                    .collect();
                out.data.push(Statement {
                    cypher: format!("{} SET {}", match_edge(rel, from, to), sets.join(", ")).into(),
                    params,
                });
            }
            _ => {}
        }
    }
    for (t, rows) in new_nodes {
        insert_nodes(&mut out.data, t, &rows);
    }
    // The text of the last new edge, while the next ones repeat it: same tables, and no
    // nested column (whose values are written into the text).
    let mut last: Option<(Tables<'_>, C)> = None;
    for (edge, values) in new_edges {
        let tables = edge_tables(schema, edge)?;
        let (rel, from, to) = tables;
        let mut params = edge_params(edge, rel.columns.len());
        let mut props = vec![format!("{EDGE_KEY_COLUMN}: $k")];
        for (i, c) in rel.columns.iter().enumerate() {
            let e = value_expr(&format!("c{i}"), &values[i], &c.ty, &mut params);
            props.push(format!("{}: {e}", ident(&c.name)));
        }
        let repeated = match &last {
            Some(((r, f, t), text))
                if std::ptr::eq(*r, rel) && std::ptr::eq(*f, from) && std::ptr::eq(*t, to) =>
            {
                Some(text.clone())
            }
            _ => None,
        };
        let cypher = match repeated {
            Some(text) => text,
            None => {
                let text = C::from(format!(
                    "MATCH (a:{} {{{}: {}}}), (b:{} {{{}: {}}}) CREATE (a)-[:{} {{{}}}]->(b)",
                    ident(&from.name),
                    ident(&from.primary_key),
                    decode("$f", pk_type(from)),
                    ident(&to.name),
                    ident(&to.primary_key),
                    decode("$t", pk_type(to)),
                    ident(&rel.name),
                    props.join(", ")
                ));
                let nested = rel.columns.iter().any(|c| is_nested(&c.ty));
                last = (!nested).then(|| (tables, text.clone()));
                text
            }
        };
        out.data.push(Statement { cypher, params });
    }
    out.data.push(Statement {
        cypher: format!("MERGE (m:{META_TABLE} {{k: 'watermark'}}) SET m.v = $v").into(),
        params: vec![text(
            "v",
            serde_json::to_string(&batch.watermark).expect("vectors serialize"),
        )],
    });
    Ok(out)
}

/// `MATCH (n:T {pk}) SET …` for an existing node, or with `merge` the idempotent
/// `MERGE (n:T {pk}) SET …`. None when there is nothing to set on an existing node.
fn write_node<C: From<String>>(
    t: &NodeTableDef,
    key: &Value,
    values: &[Value],
    merge: bool,
) -> Option<Statement<C>> {
    let mut sets = Vec::new();
    let mut params = vec![text("k", encode(key))];
    for (i, c) in t.columns.iter().enumerate() {
        if c.name == t.primary_key {
            continue;
        }
        let e = value_expr(&format!("c{i}"), &values[i], &c.ty, &mut params);
        sets.push(format!("n.{} = {e}", ident(&c.name)));
    }
    let head = if merge {
        match_node(t).replacen("MATCH", "MERGE", 1)
    } else if sets.is_empty() {
        return None;
    } else {
        match_node(t)
    };
    let cypher = if sets.is_empty() {
        head
    } else {
        format!("{head} SET {}", sets.join(", "))
    };
    Some(Statement {
        cypher: cypher.into(),
        params,
    })
}

/// New nodes: `UNWIND $rows AS r CREATE (n:T {…})` in chunks; nested columns (see
/// [`literal`]) then set row by row.
fn insert_nodes<C: From<String> + Clone>(
    out: &mut Vec<Statement<C>>,
    t: &NodeTableDef,
    rows: &[&[Value]],
) {
    let bulk: Vec<usize> = (0..t.columns.len())
        .filter(|&i| !is_nested(&t.columns[i].ty))
        .collect();
    let props: Vec<String> = bulk
        .iter()
        .map(|&i| {
            let c = &t.columns[i];
            format!("{}: {}", ident(&c.name), decode(&format!("r.c{i}"), &c.ty))
        })
        .collect();
    let cypher = C::from(format!(
        "UNWIND $rows AS r CREATE (n:{} {{{}}})",
        ident(&t.name),
        props.join(", ")
    ));
    for chunk in rows.chunks(UNWIND_CHUNK) {
        let list = chunk
            .iter()
            .map(|row| {
                bulk.iter()
                    .map(|&i| (format!("c{i}"), encode(&row[i])))
                    .collect()
            })
            .collect();
        out.push(Statement {
            cypher: cypher.clone(),
            params: vec![("rows".into(), Param::Rows(list))],
        });
    }
    let pk = t.key_index().expect("validated primary key");
    for (i, c) in t.columns.iter().enumerate() {
        if !is_nested(&c.ty) {
            continue;
        }
        for row in rows.iter().filter(|row| !row[i].is_null()) {
            out.push(Statement {
                cypher: format!(
                    "{} SET n.{} = {}",
                    match_node(t),
                    ident(&c.name),
                    literal(&row[i], &c.ty)
                )
                .into(),
                params: vec![text("k", encode(&row[pk]))],
            });
        }
    }
}

#[cfg(test)]
mod tests;
