//! JSON forms of values and ops: the op lines the CLI's `write` command reads and the JSON
//! output it prints.
//!
//! Values convert by column type ([`value_from_json`]) and back ([`value_to_json`]). Numbers
//! are JSON numbers, except INT128 and UINT64 values beyond ±2^53 and DECIMALs, which are
//! strings so that no JSON reader rounds them; temporal values, UUIDs and blobs are strings in
//! Kuzu's text form ([`crate::text`]); non-finite floats are the strings `NaN`, `inf`, `-inf`.
//!
//! An op is one JSON object per line:
//!
//! ```text
//! {"op":"add_node","table":"User","props":{"name":"Alice","age":30}}
//! {"op":"add_edge","table":"Follows","from":"Adam","to":"Karissa","props":{"since":2020}}
//! {"op":"update","table":"User","key":"Adam","prop":"age","value":31}
//! {"op":"update","table":"Follows","from":"Adam","to":"Karissa","prop":"since","value":2021}
//! {"op":"increment","table":"Product","key":"p1","prop":"stock","delta":-5}
//! {"op":"delete_node","table":"User","key":"Adam"}
//! {"op":"delete_edge","table":"Follows","from":"Adam","to":"Karissa"}
//! {"op":"set_policy","table":"Product","prop":"stock","policy":"counter"}
//! {"op":"set_constraint","table":"Product","prop":"stock","min":0,"owner":{"column":"site"}}
//! {"op":"set_constraint","table":"User","prop":"name","unique":true,"owner":{"peer":"hub"}}
//! {"op":"set_constraint","table":"Manages","single":true,"owner":{"peer":"hub"}}
//! {"op":"set_constraint","table":"User","prop":"name","none":true}
//! ```
//!
//! Constraints (ARCHITECTURE.md, "Transactions on replicas") are checked when a
//! coordinated transaction prepares; `"none":true` lifts one. A transaction's commit
//! marker prints as `{"op":"tx","tx":"coord/1/7","participants":["a","b"],"ops":2}` and
//! cannot be written.
//!
//! Edge forms also take `"key"` (the edge key that tells multi-edges apart, default `""`) and
//! `"from_table"`/`"to_table"` (needed only when the rel table has several FROM/TO pairs).
//! Schema-creating ops print as `{"op":"ddl","cypher":"CREATE …"}`; [`op_from_json`] leaves
//! those to the DDL parser ([`crate::ddl::parse_ddl`]).

use serde_json::{Map, Value as J};

use crate::ddl;
use crate::error::EngineError;
use crate::event::{EdgeRef, Entity, NodeRef, Op};
use crate::schema::{
    Check, Column, Constraint, NodeTableDef, Owner, Policy, RelTableDef, Schema, SchemaOp, TableDef,
};
use crate::text;
use crate::value::{DataType, Value};

/// Integers up to this magnitude are exact in every JSON reader (IEEE doubles).
const MAX_SAFE_INT: u128 = 1 << 53;

// ---------------------------------------------------------------------------------------------
// Values
// ---------------------------------------------------------------------------------------------

/// Converts a JSON value to a value of column type `ty`. JSON `null` is NULL for every type.
///
/// Integers must be JSON numbers that fit the type exactly (INT128 and UINT64 also take
/// decimal strings); FLOAT and DOUBLE take numbers (and `"NaN"`, `"inf"`, `"-inf"`); DECIMAL
/// takes a number or a string, rescaled to the column's scale; STRING needs a JSON string;
/// BLOB takes a string whose `\xHH` escapes are decoded; UUID, DATE, TIMESTAMP* and INTERVAL
/// take strings in Kuzu's text forms. LIST and ARRAY take arrays; STRUCT an object with the
/// struct's fields (missing ones are NULL); MAP an array of `[key, value]` pairs, or an object
/// when the key type is STRING; UNION an object with exactly one key, the member's tag.
pub fn value_from_json(j: &J, ty: &DataType) -> Result<Value, String> {
    if j.is_null() {
        return Ok(Value::Null);
    }
    let want = |what: &str| format!("expected {what} for {ty}, got {}", short(j));
    let string = |what: &str| j.as_str().ok_or_else(|| want(what));
    Ok(match ty {
        DataType::Bool => Value::Bool(j.as_bool().ok_or_else(|| want("true or false"))?),
        DataType::Int8 => Value::Int8(int_from_json(j, ty, false)?),
        DataType::Int16 => Value::Int16(int_from_json(j, ty, false)?),
        DataType::Int32 => Value::Int32(int_from_json(j, ty, false)?),
        DataType::Int64 => Value::Int64(int_from_json(j, ty, false)?),
        DataType::Int128 => Value::Int128(int_from_json(j, ty, true)?),
        DataType::UInt8 => Value::UInt8(int_from_json(j, ty, false)?),
        DataType::UInt16 => Value::UInt16(int_from_json(j, ty, false)?),
        DataType::UInt32 => Value::UInt32(int_from_json(j, ty, false)?),
        DataType::UInt64 => Value::UInt64(int_from_json(j, ty, true)?),
        DataType::Float => {
            let x = float_from_json(j, ty)?;
            let f = x as f32;
            if x.is_finite() && !f.is_finite() {
                return Err(format!("{} is out of range for FLOAT", short(j)));
            }
            Value::Float(f)
        }
        DataType::Double => Value::Double(float_from_json(j, ty)?),
        DataType::Decimal { precision, scale } => {
            let t = match j {
                J::Number(n) => n.to_string(),
                J::String(s) => s.clone(),
                _ => return Err(want("a number or a decimal string")),
            };
            Value::Decimal {
                mantissa: text::parse_decimal(&t, *precision, *scale)?,
                scale: *scale,
            }
        }
        DataType::String => Value::String(string("a JSON string")?.to_string()),
        DataType::Blob => Value::Blob(text::parse_blob(string("a string")?)?),
        DataType::Uuid => Value::Uuid(text::parse_uuid(string("a UUID string")?)?),
        DataType::Date => Value::Date(text::parse_date(string("a date string")?)?),
        DataType::Timestamp => {
            Value::Timestamp(text::parse_timestamp_micros(string("a timestamp string")?)?)
        }
        DataType::TimestampTz => {
            Value::TimestampTz(text::parse_timestamp_micros(string("a timestamp string")?)?)
        }
        DataType::TimestampNs => {
            Value::TimestampNs(text::parse_timestamp_nanos(string("a timestamp string")?)?)
        }
        DataType::TimestampMs => {
            Value::TimestampMs(text::parse_timestamp_millis(string("a timestamp string")?)?)
        }
        DataType::TimestampSec => {
            Value::TimestampSec(text::parse_timestamp_secs(string("a timestamp string")?)?)
        }
        DataType::Interval => {
            let (months, days, micros) = text::parse_interval(string("an interval string")?)?;
            Value::Interval {
                months,
                days,
                micros,
            }
        }
        DataType::List(inner) => {
            let items = j.as_array().ok_or_else(|| want("an array"))?;
            Value::List(list_from_json(items, inner)?)
        }
        DataType::Array(inner, n) => {
            let items = j.as_array().ok_or_else(|| want("an array"))?;
            if items.len() != *n as usize {
                return Err(format!(
                    "{} has {} elements, {ty} needs {n}",
                    short(j),
                    items.len()
                ));
            }
            Value::List(list_from_json(items, inner)?)
        }
        DataType::Struct(fields) => {
            let obj = j.as_object().ok_or_else(|| want("an object"))?;
            for key in obj.keys() {
                if !fields.iter().any(|(f, _)| f.eq_ignore_ascii_case(key)) {
                    return Err(format!("{ty} has no field {key:?} (in {})", short(j)));
                }
            }
            let mut out = Vec::with_capacity(fields.len());
            for (name, fty) in fields {
                let found = obj.get(name).or_else(|| {
                    obj.iter()
                        .find(|(k, _)| k.eq_ignore_ascii_case(name))
                        .map(|(_, v)| v)
                });
                let v = match found {
                    Some(fj) => {
                        value_from_json(fj, fty).map_err(|e| format!("field {name}: {e}"))?
                    }
                    None => Value::Null,
                };
                out.push((name.clone(), v));
            }
            Value::Struct(out)
        }
        DataType::Map(kt, vt) => {
            let mut entries = Vec::new();
            match j {
                J::Array(pairs) => {
                    for p in pairs {
                        let (k, v) = match p.as_array().map(Vec::as_slice) {
                            Some([k, v]) => (k, v),
                            _ => {
                                return Err(format!(
                                    "map entry {} is not a [key, value] pair",
                                    short(p)
                                ))
                            }
                        };
                        entries.push(map_entry(k, v, kt, vt)?);
                    }
                }
                J::Object(obj) if **kt == DataType::String => {
                    for (k, v) in obj {
                        entries.push(map_entry(&J::String(k.clone()), v, kt, vt)?);
                    }
                }
                _ => {
                    return Err(want(if **kt == DataType::String {
                        "an array of [key, value] pairs or an object"
                    } else {
                        "an array of [key, value] pairs"
                    }))
                }
            }
            Value::Map(entries)
        }
        DataType::Union(members) => {
            let obj = j
                .as_object()
                .filter(|o| o.len() == 1)
                .ok_or_else(|| want("an object with exactly one key, the member tag"))?;
            let (tag, inner) = obj.iter().next().expect("one entry");
            let (name, mty) = members
                .iter()
                .find(|(m, _)| m == tag)
                .or_else(|| members.iter().find(|(m, _)| m.eq_ignore_ascii_case(tag)))
                .ok_or_else(|| format!("{ty} has no member {tag:?}"))?;
            Value::Union {
                tag: name.clone(),
                value: Box::new(
                    value_from_json(inner, mty).map_err(|e| format!("member {name}: {e}"))?,
                ),
            }
        }
    })
}

fn list_from_json(items: &[J], inner: &DataType) -> Result<Vec<Value>, String> {
    items
        .iter()
        .enumerate()
        .map(|(i, item)| value_from_json(item, inner).map_err(|e| format!("element {i}: {e}")))
        .collect()
}

fn map_entry(k: &J, v: &J, kt: &DataType, vt: &DataType) -> Result<(Value, Value), String> {
    let key = value_from_json(k, kt).map_err(|e| format!("map key: {e}"))?;
    if key.is_null() {
        return Err("map keys cannot be null".into());
    }
    let value =
        value_from_json(v, vt).map_err(|e| format!("value of map key {}: {e}", short(k)))?;
    Ok((key, value))
}

fn int_from_json<T: TryFrom<i128>>(j: &J, ty: &DataType, allow_string: bool) -> Result<T, String> {
    let wide: i128 = match j {
        J::Number(n) => {
            if let Some(i) = n.as_i64() {
                i128::from(i)
            } else if let Some(u) = n.as_u64() {
                i128::from(u)
            } else {
                let f = n.as_f64().unwrap_or(f64::NAN);
                if f.fract() != 0.0 {
                    return Err(format!("{n} has a fraction; {ty} needs an integer"));
                }
                if !f.is_finite() || f.abs() >= 1.7e38 {
                    return Err(format!("{n} is out of range for {ty}"));
                }
                f as i128
            }
        }
        J::String(s) if allow_string => s
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not an integer; {ty} needs one"))?,
        _ => {
            let what = if allow_string {
                "an integer or a decimal string"
            } else {
                "an integer"
            };
            return Err(format!("expected {what} for {ty}, got {}", short(j)));
        }
    };
    T::try_from(wide).map_err(|_| format!("{} is out of range for {ty}", short(j)))
}

fn float_from_json(j: &J, ty: &DataType) -> Result<f64, String> {
    match j {
        J::Number(n) => n.as_f64().ok_or_else(|| format!("{n} is not a valid {ty}")),
        J::String(s) => match s.to_ascii_lowercase().as_str() {
            "nan" => Ok(f64::NAN),
            "inf" | "+inf" | "infinity" | "+infinity" => Ok(f64::INFINITY),
            "-inf" | "-infinity" => Ok(f64::NEG_INFINITY),
            _ => Err(format!(
                "expected a number for {ty}, got the string {s:?} (only \"NaN\", \"inf\" and \
                 \"-inf\" may be strings)"
            )),
        },
        _ => Err(format!("expected a number for {ty}, got {}", short(j))),
    }
}

/// The JSON form of a value; [`value_from_json`] with the value's type reads it back.
pub fn value_to_json(v: &Value) -> J {
    let text = |v: &Value| J::String(text::render(v));
    match v {
        Value::Null => J::Null,
        Value::Bool(b) => J::Bool(*b),
        Value::Int8(x) => J::from(*x),
        Value::Int16(x) => J::from(*x),
        Value::Int32(x) => J::from(*x),
        Value::Int64(x) => J::from(*x),
        Value::UInt8(x) => J::from(*x),
        Value::UInt16(x) => J::from(*x),
        Value::UInt32(x) => J::from(*x),
        Value::Int128(x) => match i64::try_from(*x) {
            Ok(i) if x.unsigned_abs() <= MAX_SAFE_INT => J::from(i),
            _ => text(v),
        },
        Value::UInt64(x) if u128::from(*x) <= MAX_SAFE_INT => J::from(*x),
        Value::UInt64(_) => text(v),
        Value::Float(x) if x.is_finite() => {
            // The shortest decimal that reads back as this f32, rather than its exact (long)
            // binary expansion as an f64.
            let short: f64 = x.to_string().parse().unwrap_or(f64::from(*x));
            J::from(if short as f32 == *x {
                short
            } else {
                f64::from(*x)
            })
        }
        Value::Double(x) if x.is_finite() => J::from(*x),
        Value::Float(_) | Value::Double(_) => text(v),
        Value::String(s) => J::String(s.clone()),
        Value::Decimal { .. }
        | Value::Blob(_)
        | Value::Uuid(_)
        | Value::Date(_)
        | Value::Timestamp(_)
        | Value::TimestampNs(_)
        | Value::TimestampMs(_)
        | Value::TimestampSec(_)
        | Value::TimestampTz(_)
        | Value::Interval { .. } => text(v),
        Value::List(items) => J::Array(items.iter().map(value_to_json).collect()),
        Value::Struct(fields) => J::Object(
            fields
                .iter()
                .map(|(k, v)| (k.clone(), value_to_json(v)))
                .collect(),
        ),
        Value::Map(entries) => J::Array(
            entries
                .iter()
                .map(|(k, v)| J::Array(vec![value_to_json(k), value_to_json(v)]))
                .collect(),
        ),
        Value::Union { tag, value } => {
            let mut m = Map::new();
            m.insert(tag.clone(), value_to_json(value));
            J::Object(m)
        }
    }
}

/// A JSON value's text, shortened for error messages.
fn short(j: &J) -> String {
    let s = j.to_string();
    if s.chars().count() > 80 {
        let mut t: String = s.chars().take(77).collect();
        t.push_str("...");
        t
    } else {
        s
    }
}

// ---------------------------------------------------------------------------------------------
// Ops
// ---------------------------------------------------------------------------------------------

const EDGE_FIELDS: [&str; 7] = ["op", "table", "from", "to", "key", "from_table", "to_table"];

/// Parses one op line. Table and column names resolve case-insensitively and are stored with
/// the schema's spelling; property values are typed by their columns, node keys by the primary
/// key column, edge endpoints by the endpoint tables' primary keys. `add_node` properties come
/// out in column order.
pub fn op_from_json(line: &str, schema: &Schema) -> Result<Op, EngineError> {
    let j: J = serde_json::from_str(line).map_err(|e| EngineError::Parse {
        what: "op".into(),
        reason: e.to_string(),
    })?;
    let J::Object(obj) = j else {
        return Err(EngineError::Parse {
            what: "op".into(),
            reason: format!("expected a JSON object, got {}", short(&j)),
        });
    };
    let r = Reader {
        obj: &obj,
        schema,
        table_hint: obj
            .get("table")
            .and_then(J::as_str)
            .unwrap_or_default()
            .to_string(),
    };
    let kind = match obj.get("op") {
        Some(J::String(s)) => s.as_str(),
        Some(other) => {
            return Err(r.invalid(format!("\"op\" must be a string, got {}", short(other))))
        }
        None => return Err(r.invalid("missing the \"op\" field".into())),
    };
    match kind {
        "add_node" => r.add_node(),
        "add_edge" => r.add_edge(),
        "update" => r.update(false),
        "increment" => r.update(true),
        "delete_node" => r.delete_node(),
        "delete_edge" => r.delete_edge(),
        "set_policy" => r.set_policy(),
        "set_constraint" => r.set_constraint(),
        "tx" => Err(r.invalid(
            "\"tx\" ops are commit markers, written by a coordinated transaction's commit, not by a write".into(),
        )),
        "seal" => {
            r.check_fields(&["op"], "seal")?;
            Ok(Op::Seal)
        }
        "ddl" => Err(r.invalid(
            "\"ddl\" ops carry Cypher DDL: parse their \"cypher\" with ddl::parse_ddl".into(),
        )),
        other => Err(r.invalid(format!(
            "unknown op {other:?} (expected add_node, add_edge, update, increment, \
             delete_node, delete_edge, set_policy or seal)"
        ))),
    }
}

/// The JSON line form of an op; [`op_from_json`] reads it back to the same op (schema ops
/// other than `set_policy` print as `{"op":"ddl","cypher":…}`, which it leaves to the DDL
/// parser).
pub fn op_to_json(op: &Op) -> J {
    let mut m = Map::new();
    let mut put = |k: &str, v: J| {
        m.insert(k.to_string(), v);
    };
    match op {
        Op::AddNode { table, props } => {
            put("op", "add_node".into());
            put("table", table.as_str().into());
            put("props", props_to_json(props));
        }
        Op::AddEdge { edge, props } => {
            put("op", "add_edge".into());
            edge_to_json(&mut put, edge);
            put("props", props_to_json(props));
        }
        Op::Update {
            entity,
            prop,
            value,
        } => {
            put("op", "update".into());
            entity_to_json(&mut put, entity);
            put("prop", prop.as_str().into());
            put("value", value_to_json(value));
        }
        Op::Increment {
            entity,
            prop,
            delta,
        } => {
            put("op", "increment".into());
            entity_to_json(&mut put, entity);
            put("prop", prop.as_str().into());
            put("delta", value_to_json(delta));
        }
        Op::DeleteNode(n) => {
            put("op", "delete_node".into());
            put("table", n.table.as_str().into());
            put("key", value_to_json(&n.key));
        }
        Op::DeleteEdge(e) => {
            put("op", "delete_edge".into());
            edge_to_json(&mut put, e);
        }
        Op::Seal => put("op", "seal".into()),
        Op::Tx {
            tx,
            participants,
            ops,
        } => {
            put("op", "tx".into());
            put("tx", tx.to_string().into());
            put(
                "participants",
                J::Array(participants.iter().map(|p| J::from(p.as_str())).collect()),
            );
            put("ops", (*ops).into());
        }
        Op::Schema(SchemaOp::SetConstraint {
            table,
            column,
            constraint,
        }) => {
            put("op", "set_constraint".into());
            put("table", table.as_str().into());
            if !column.is_empty() {
                put("prop", column.as_str().into());
            }
            match constraint {
                None => put("none", true.into()),
                Some(c) => {
                    match c.check {
                        Check::Min(b) => put("min", b.into()),
                        Check::Unique => put("unique", true.into()),
                        Check::Single => put("single", true.into()),
                    }
                    let mut o = Map::new();
                    match &c.owner {
                        Owner::Peer(p) => o.insert("peer".into(), p.as_str().into()),
                        Owner::Column(col) => o.insert("column".into(), col.as_str().into()),
                    };
                    put("owner", J::Object(o));
                }
            }
        }
        Op::Schema(SchemaOp::SetPolicy {
            table,
            column,
            policy,
        }) => {
            put("op", "set_policy".into());
            put("table", table.as_str().into());
            put("prop", column.as_str().into());
            put("policy", policy_name(*policy).into());
        }
        Op::Schema(s) => {
            put("op", "ddl".into());
            put(
                "cypher",
                ddl::render_schema_op(s).unwrap_or_default().into(),
            );
        }
    }
    J::Object(m)
}

fn policy_name(p: Policy) -> &'static str {
    match p {
        Policy::Lww => "lww",
        Policy::Counter => "counter",
        Policy::OnlineWins => "online_wins",
    }
}

fn props_to_json(props: &[(String, Value)]) -> J {
    J::Object(
        props
            .iter()
            .map(|(k, v)| (k.clone(), value_to_json(v)))
            .collect(),
    )
}

fn edge_to_json(put: &mut impl FnMut(&str, J), e: &EdgeRef) {
    put("table", e.table.as_str().into());
    put("from", value_to_json(&e.from.key));
    put("to", value_to_json(&e.to.key));
    put("from_table", e.from.table.as_str().into());
    put("to_table", e.to.table.as_str().into());
    if !e.key.is_empty() {
        put("key", e.key.as_str().into());
    }
}

fn entity_to_json(put: &mut impl FnMut(&str, J), entity: &Entity) {
    match entity {
        Entity::Node(n) => {
            put("table", n.table.as_str().into());
            put("key", value_to_json(&n.key));
        }
        Entity::Edge(e) => edge_to_json(put, e),
    }
}

/// Reads the fields of one op object.
struct Reader<'a> {
    obj: &'a Map<String, J>,
    schema: &'a Schema,
    /// The "table" field as written, for errors raised before the table resolves.
    table_hint: String,
}

impl<'a> Reader<'a> {
    fn invalid(&self, reason: String) -> EngineError {
        EngineError::InvalidOp {
            table: self.table_hint.clone(),
            reason,
        }
    }

    fn check_fields(&self, allowed: &[&str], what: &str) -> Result<(), EngineError> {
        match self.obj.keys().find(|k| !allowed.contains(&k.as_str())) {
            Some(k) => Err(self.invalid(format!(
                "unknown field {k:?} for {what} (allowed: {})",
                allowed.join(", ")
            ))),
            None => Ok(()),
        }
    }

    fn field(&self, name: &str) -> Result<&'a J, EngineError> {
        self.obj
            .get(name)
            .ok_or_else(|| self.invalid(format!("missing the \"{name}\" field")))
    }

    fn opt_str(&self, name: &str) -> Result<Option<&'a str>, EngineError> {
        match self.obj.get(name) {
            None => Ok(None),
            Some(J::String(s)) => Ok(Some(s)),
            Some(other) => {
                Err(self.invalid(format!("\"{name}\" must be a string, got {}", short(other))))
            }
        }
    }

    fn str_field(&self, name: &str) -> Result<&'a str, EngineError> {
        self.opt_str(name)?
            .ok_or_else(|| self.invalid(format!("missing the \"{name}\" field")))
    }

    fn table(&self) -> Result<&'a TableDef, EngineError> {
        let name = self.str_field("table")?;
        self.schema
            .table(name)
            .ok_or_else(|| EngineError::UnknownTable(name.to_string()))
    }

    fn node_table(&self, name: &str) -> Result<&'a NodeTableDef, EngineError> {
        self.schema.node_table(name)
    }

    fn column(&self, def: &'a TableDef, name: &str) -> Result<&'a Column, EngineError> {
        def.column(name).ok_or_else(|| EngineError::UnknownColumn {
            table: def.name().to_string(),
            column: name.to_string(),
        })
    }

    fn typed(&self, table: &str, column: &Column, j: &J) -> Result<Value, EngineError> {
        value_from_json(j, &column.ty).map_err(|e| EngineError::TypeMismatch {
            table: table.to_string(),
            column: column.name.clone(),
            expected: column.ty.to_string(),
            value: format!("{} ({e})", short(j)),
        })
    }

    /// A node's primary-key value from field `field`, typed by the key column; not null.
    fn key(&self, node: &NodeTableDef, field: &str) -> Result<Value, EngineError> {
        let j = self.field(field)?;
        if j.is_null() {
            return Err(self.invalid(format!(
                "\"{field}\" is the primary key of {} and cannot be null",
                node.name
            )));
        }
        let pk = node
            .key_column()
            .ok_or_else(|| self.invalid(format!("table {} has no key column", node.name)))?;
        self.typed(&node.name, pk, j)
    }

    fn props(&self, def: &'a TableDef, j: &J) -> Result<Vec<(String, Value)>, EngineError> {
        let obj = j.as_object().ok_or_else(|| {
            self.invalid(format!("\"props\" must be an object, got {}", short(j)))
        })?;
        let mut out: Vec<(usize, String, Value)> = Vec::with_capacity(obj.len());
        for (k, v) in obj {
            let col = self.column(def, k)?;
            let idx = def.column_index(&col.name).unwrap_or(usize::MAX);
            if out.iter().any(|(i, _, _)| *i == idx) {
                return Err(self.invalid(format!("property {} is given twice", col.name)));
            }
            out.push((idx, col.name.clone(), self.typed(def.name(), col, v)?));
        }
        out.sort_by_key(|(i, _, _)| *i);
        Ok(out.into_iter().map(|(_, k, v)| (k, v)).collect())
    }

    fn edge(&self, rel: &RelTableDef) -> Result<EdgeRef, EngineError> {
        let from_table = self.opt_str("from_table")?;
        let to_table = self.opt_str("to_table")?;
        let matches =
            |want: Option<&str>, have: &str| want.is_none_or(|w| w.eq_ignore_ascii_case(have));
        let candidates: Vec<&(String, String)> = rel
            .connections
            .iter()
            .filter(|(f, t)| matches(from_table, f) && matches(to_table, t))
            .collect();
        let (f, t) = match candidates.as_slice() {
            [one] => *one,
            [] => {
                return Err(EngineError::InvalidOp {
                    table: rel.name.clone(),
                    reason: format!(
                        "no FROM {} TO {} pair in this rel table (it has {})",
                        from_table.unwrap_or("*"),
                        to_table.unwrap_or("*"),
                        describe_connections(rel)
                    ),
                })
            }
            _ => {
                return Err(EngineError::InvalidOp {
                    table: rel.name.clone(),
                    reason: format!(
                        "the rel table has several FROM/TO pairs ({}); give \"from_table\" and \
                         \"to_table\"",
                        describe_connections(rel)
                    ),
                })
            }
        };
        let from_def = self.node_table(f)?;
        let to_def = self.node_table(t)?;
        let key = self.opt_str("key")?.unwrap_or_default().to_string();
        Ok(EdgeRef {
            table: rel.name.clone(),
            from: NodeRef {
                table: from_def.name.clone(),
                key: self.key(from_def, "from")?,
            },
            to: NodeRef {
                table: to_def.name.clone(),
                key: self.key(to_def, "to")?,
            },
            key,
        })
    }

    fn add_node(&self) -> Result<Op, EngineError> {
        let def = self.table()?;
        let node = self.node_table(def.name())?;
        self.check_fields(&["op", "table", "props"], "add_node")?;
        let props = self.props(def, self.field("props")?)?;
        if !props
            .iter()
            .any(|(k, v)| *k == node.primary_key && !v.is_null())
        {
            return Err(EngineError::InvalidOp {
                table: node.name.clone(),
                reason: format!(
                    "add_node needs the primary key {} in \"props\"",
                    node.primary_key
                ),
            });
        }
        Ok(Op::AddNode {
            table: node.name.clone(),
            props,
        })
    }

    fn add_edge(&self) -> Result<Op, EngineError> {
        let def = self.table()?;
        let rel = self.schema.rel_table(def.name())?;
        let mut allowed = EDGE_FIELDS.to_vec();
        allowed.push("props");
        self.check_fields(&allowed, "add_edge")?;
        let edge = self.edge(rel)?;
        let props = match self.obj.get("props") {
            Some(j) => self.props(def, j)?,
            None => Vec::new(),
        };
        Ok(Op::AddEdge { edge, props })
    }

    fn entity(&self, def: &'a TableDef, extra: &[&str], what: &str) -> Result<Entity, EngineError> {
        match def {
            TableDef::Node(node) => {
                let mut allowed = vec!["op", "table", "key"];
                allowed.extend_from_slice(extra);
                self.check_fields(&allowed, &format!("{what} of a node"))?;
                Ok(Entity::Node(NodeRef {
                    table: node.name.clone(),
                    key: self.key(node, "key")?,
                }))
            }
            TableDef::Rel(rel) => {
                let mut allowed = EDGE_FIELDS.to_vec();
                allowed.extend_from_slice(extra);
                self.check_fields(&allowed, &format!("{what} of an edge"))?;
                Ok(Entity::Edge(self.edge(rel)?))
            }
        }
    }

    fn update(&self, increment: bool) -> Result<Op, EngineError> {
        let def = self.table()?;
        let (what, value_field) = if increment {
            ("increment", "delta")
        } else {
            ("update", "value")
        };
        let entity = self.entity(def, &["prop", value_field], what)?;
        let col = self.column(def, self.str_field("prop")?)?;
        if let TableDef::Node(n) = def {
            if n.primary_key == col.name {
                return Err(EngineError::InvalidOp {
                    table: n.name.clone(),
                    reason: format!(
                        "{} is the primary key and cannot be changed; delete the node and add \
                         it again",
                        col.name
                    ),
                });
            }
        }
        if increment && !col.ty.is_numeric() {
            return Err(EngineError::InvalidOp {
                table: def.name().to_string(),
                reason: format!(
                    "increment needs a numeric column; {} is {}",
                    col.name, col.ty
                ),
            });
        }
        let j = self.field(value_field)?;
        let value = self.typed(def.name(), col, j)?;
        if !increment {
            return Ok(Op::Update {
                entity,
                prop: col.name.clone(),
                value,
            });
        }
        if value.is_null() {
            return Err(EngineError::InvalidOp {
                table: def.name().to_string(),
                reason: format!("the \"delta\" for {} cannot be null", col.name),
            });
        }
        Ok(Op::Increment {
            entity,
            prop: col.name.clone(),
            delta: value,
        })
    }

    fn delete_node(&self) -> Result<Op, EngineError> {
        let def = self.table()?;
        let node = self.node_table(def.name())?;
        self.check_fields(&["op", "table", "key"], "delete_node")?;
        Ok(Op::DeleteNode(NodeRef {
            table: node.name.clone(),
            key: self.key(node, "key")?,
        }))
    }

    fn delete_edge(&self) -> Result<Op, EngineError> {
        let def = self.table()?;
        let rel = self.schema.rel_table(def.name())?;
        self.check_fields(&EDGE_FIELDS, "delete_edge")?;
        Ok(Op::DeleteEdge(self.edge(rel)?))
    }

    fn set_constraint(&self) -> Result<Op, EngineError> {
        let def = self.table()?;
        self.check_fields(
            &[
                "op", "table", "prop", "min", "unique", "single", "none", "owner",
            ],
            "set_constraint",
        )?;
        let column = match self.opt_str("prop")? {
            Some(p) => self.column(def, p)?.name.clone(),
            None => String::new(),
        };
        let kinds: Vec<&str> = ["min", "unique", "single", "none"]
            .into_iter()
            .filter(|k| self.obj.contains_key(*k))
            .collect();
        if kinds.len() != 1 {
            return Err(self.invalid(format!(
                "set_constraint takes exactly one of \"min\", \"unique\", \"single\", \"none\" (got {})",
                if kinds.is_empty() { "none of them".to_string() } else { kinds.join(", ") }
            )));
        }
        let flag = |k: &str| match self.obj.get(k) {
            Some(J::Bool(true)) => Ok(()),
            Some(other) => Err(self.invalid(format!("\"{k}\" must be true, got {}", short(other)))),
            None => Ok(()),
        };
        let check = match kinds[0] {
            "min" => match self.obj.get("min").and_then(J::as_i64) {
                Some(b) => Some(Check::Min(b)),
                None => {
                    return Err(self.invalid(format!(
                        "\"min\" must be an integer, got {}",
                        short(&self.obj["min"])
                    )))
                }
            },
            "unique" => flag("unique").map(|_| Some(Check::Unique))?,
            "single" => flag("single").map(|_| Some(Check::Single))?,
            _ => flag("none").map(|_| None)?,
        };
        let constraint = match check {
            None => {
                if self.obj.contains_key("owner") {
                    return Err(
                        self.invalid("\"none\" lifts a constraint: it takes no owner".into())
                    );
                }
                None
            }
            Some(check) => {
                let owner = match self.obj.get("owner") {
                    Some(J::Object(o)) if o.len() == 1 => match o.iter().next() {
                        Some((k, J::String(v))) if k == "peer" => Owner::Peer(v.clone()),
                        Some((k, J::String(v))) if k == "column" => {
                            Owner::Column(self.column(def, v)?.name.clone())
                        }
                        _ => None.ok_or_else(|| {
                            self.invalid(format!(
                                "\"owner\" must be {{\"peer\": ID}} or {{\"column\": NAME}}, got {}",
                                short(&self.obj["owner"])
                            ))
                        })?,
                    },
                    Some(other) => {
                        return Err(self.invalid(format!(
                            "\"owner\" must be {{\"peer\": ID}} or {{\"column\": NAME}}, got {}",
                            short(other)
                        )))
                    }
                    None => {
                        return Err(self.invalid(
                            "a constraint needs an \"owner\": {\"peer\": ID} or {\"column\": NAME}"
                                .into(),
                        ))
                    }
                };
                Some(Constraint { check, owner })
            }
        };
        let op = SchemaOp::SetConstraint {
            table: def.name().to_string(),
            column,
            constraint,
        };
        self.schema.validate(&op)?;
        Ok(Op::Schema(op))
    }

    fn set_policy(&self) -> Result<Op, EngineError> {
        let def = self.table()?;
        self.check_fields(&["op", "table", "prop", "policy"], "set_policy")?;
        let col = self.column(def, self.str_field("prop")?)?;
        let policy = match self.str_field("policy")?.to_ascii_lowercase().as_str() {
            "lww" => Policy::Lww,
            "counter" => Policy::Counter,
            "online_wins" => Policy::OnlineWins,
            other => {
                return Err(EngineError::InvalidOp {
                    table: def.name().to_string(),
                    reason: format!(
                    "unknown policy {other:?} (expected \"lww\", \"counter\" or \"online_wins\")"
                ),
                })
            }
        };
        Ok(Op::Schema(SchemaOp::SetPolicy {
            table: def.name().to_string(),
            column: col.name.clone(),
            policy,
        }))
    }
}

fn describe_connections(rel: &RelTableDef) -> String {
    rel.connections
        .iter()
        .map(|(f, t)| format!("FROM {f} TO {t}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Parses JSON op lines (the `kuzu-sync write` format) against `schema`, which evolves with
/// the lines' own schema changes: a `{"op":"ddl","cypher":"…"}` line makes its tables usable
/// by the lines after it. Blank lines and lines starting with `#` or `//` are skipped. Every
/// op comes with its 1-based line number; an error names the line.
pub fn parse_op_lines(text: &str, schema: &Schema) -> Result<Vec<(usize, Op)>, EngineError> {
    let mut schema = schema.clone();
    let mut ops = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with("//") {
            continue;
        }
        let at = |source: EngineError| EngineError::AtLine {
            line: i + 1,
            source: Box::new(source),
        };
        let json: serde_json::Value = serde_json::from_str(line).map_err(|e| {
            at(EngineError::Parse {
                what: "op".into(),
                reason: format!("malformed JSON: {e}"),
            })
        })?;
        if json.get("op").and_then(|v| v.as_str()) == Some("ddl") {
            let cypher = json.get("cypher").and_then(|v| v.as_str()).ok_or_else(|| {
                at(EngineError::Parse {
                    what: "ddl op".into(),
                    reason: "it needs a \"cypher\" string".into(),
                })
            })?;
            for op in schema_ops(cypher, &mut schema).map_err(at)? {
                ops.push((i + 1, Op::Schema(op)));
            }
            continue;
        }
        let op = op_from_json(line, &schema).map_err(at)?;
        if let Op::Schema(s) = &op {
            schema.validate(s).map_err(at)?;
            apply_provisionally(&mut schema, s);
        }
        ops.push((i + 1, op));
    }
    Ok(ops)
}

/// Parses a DDL script against `schema` (which it updates), skipping `IF NOT EXISTS`
/// statements for tables or columns that exist. Errors name the statement.
pub fn schema_ops(cypher: &str, schema: &mut Schema) -> Result<Vec<SchemaOp>, EngineError> {
    let mut out = Vec::new();
    for parsed in crate::ddl::parse_ddl(cypher)? {
        let exists = match &parsed.op {
            SchemaOp::CreateNodeTable(t) => schema.table(&t.name).is_some(),
            SchemaOp::CreateRelTable(t) => schema.table(&t.name).is_some(),
            SchemaOp::AddColumn { table, column } => schema
                .table(table)
                .is_some_and(|t| t.column(&column.name).is_some()),
            SchemaOp::SetPolicy { .. } | SchemaOp::SetConstraint { .. } => false,
        };
        if exists && parsed.if_not_exists {
            continue;
        }
        schema
            .validate(&parsed.op)
            .map_err(|e| EngineError::Parse {
                what: parsed.text.trim().to_string(),
                reason: e.to_string(),
            })?;
        apply_provisionally(schema, &parsed.op);
        out.push(parsed.op);
    }
    Ok(out)
}

/// Applies a schema op to a scratch copy of the schema so later lines can use it. The stamp
/// sorts after every real one; the copy is thrown away.
fn apply_provisionally(schema: &mut Schema, op: &SchemaOp) {
    let n = schema.version;
    let stamp = crate::clock::Stamp {
        hlc: crate::clock::Hlc {
            wall_ms: u64::MAX,
            logical: n as u32,
        },
        peer: crate::clock::PeerId::new("provisional").expect("valid peer id"),
        counter: n,
    };
    schema.apply(op, &stamp);
}

#[cfg(test)]
mod tests;
