//! Conversions between engine values and `kuzu` values, and how each column type travels
//! into a Cypher statement.

use kuzu::{LogicalType, Value as KValue};
use kuzu_sync_engine::{DataType, Value};

/// How a column's values are passed to Kuzu in a statement.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamEncoding {
    /// As a `kuzu::Value` of the column's own type.
    Native,
    /// As its Kuzu text form, turned back into the type by `CAST($x AS TYPE)` in the
    /// statement. Used where the `kuzu` crate's value conversion is lossy or missing:
    /// INTERVAL (the crate keeps only a `time::Duration`, losing the month/day split),
    /// DECIMAL (the crate derives the precision from the value, which must not differ from
    /// the column's), and UNION (the crate cannot pass union parameters).
    ViaString,
}

pub fn encoding(ty: &DataType) -> ParamEncoding {
    if needs_string(ty) {
        ParamEncoding::ViaString
    } else {
        ParamEncoding::Native
    }
}

fn needs_string(ty: &DataType) -> bool {
    match ty {
        DataType::Interval | DataType::Decimal { .. } | DataType::Union(_) => true,
        DataType::List(t) | DataType::Array(t, _) => needs_string(t),
        DataType::Struct(fields) => fields.iter().any(|(_, t)| needs_string(t)),
        DataType::Map(k, v) => needs_string(k) || needs_string(v),
        _ => false,
    }
}

/// The statement-side expression that turns parameter `expr` into a value of `ty`.
///
/// For a struct field of an `UNWIND` list (`r.c3`) a plain `CAST(r.c3 AS TYPE)` works. A bare
/// `$param` inside `CAST` gets its type inferred from the cast's target by Kuzu's binder
/// ("cannot change parameter expression data type from STRING"), so it goes through
/// `concat`, and since `concat` turns NULL into `''`, bare parameters are encoded by
/// [`to_bare_param`]: NULL as `''`, anything else as `'v'` + its text.
pub fn param_expr(expr: &str, ty: &DataType) -> String {
    match encoding(ty) {
        ParamEncoding::Native => expr.to_string(),
        ParamEncoding::ViaString if expr.starts_with('$') => format!(
            "CASE WHEN concat({expr}, '') = '' THEN NULL \
             ELSE CAST(substring(concat({expr}, ''), 2, 2147483647) AS {ty}) END"
        ),
        ParamEncoding::ViaString => format!("CAST({expr} AS {ty})"),
    }
}

/// The value of a bare `$param` for a column value (see [`param_expr`]).
pub fn to_bare_param(v: &Value, ty: &DataType) -> KValue {
    match encoding(ty) {
        ParamEncoding::Native => to_kuzu(v, ty),
        ParamEncoding::ViaString if v.is_null() => KValue::String(String::new()),
        ParamEncoding::ViaString => KValue::String(format!("v{}", literal_text(v))),
    }
}

/// The read-side expression for column expression `expr` of type `ty`.
pub fn read_expr(expr: &str, ty: &DataType) -> String {
    if contains_interval(ty) {
        format!("CAST({expr} AS STRING)")
    } else {
        expr.to_string()
    }
}

/// True if a UNION occurs anywhere in the type. Kuzu 0.11 evaluates `CAST(r.x AS UNION(…))`
/// over an `UNWIND` of a parameter list as the first row's value for every row, so union
/// columns are written row by row.
pub fn contains_union(ty: &DataType) -> bool {
    match ty {
        DataType::Union(_) => true,
        DataType::List(t) | DataType::Array(t, _) => contains_union(t),
        DataType::Struct(f) => f.iter().any(|(_, t)| contains_union(t)),
        DataType::Map(k, v) => contains_union(k) || contains_union(v),
        _ => false,
    }
}

fn contains_interval(ty: &DataType) -> bool {
    match ty {
        DataType::Interval => true,
        DataType::List(t) | DataType::Array(t, _) => contains_interval(t),
        DataType::Struct(f) | DataType::Union(f) => f.iter().any(|(_, t)| contains_interval(t)),
        DataType::Map(k, v) => contains_interval(k) || contains_interval(v),
        _ => false,
    }
}

/// The type of the parameter for a column: STRING when passed via string.
pub fn param_type(ty: &DataType) -> LogicalType {
    match encoding(ty) {
        ParamEncoding::Native => logical_type(ty),
        ParamEncoding::ViaString => LogicalType::String,
    }
}

pub fn logical_type(ty: &DataType) -> LogicalType {
    match ty {
        DataType::Bool => LogicalType::Bool,
        DataType::Int8 => LogicalType::Int8,
        DataType::Int16 => LogicalType::Int16,
        DataType::Int32 => LogicalType::Int32,
        DataType::Int64 => LogicalType::Int64,
        DataType::Int128 => LogicalType::Int128,
        DataType::UInt8 => LogicalType::UInt8,
        DataType::UInt16 => LogicalType::UInt16,
        DataType::UInt32 => LogicalType::UInt32,
        DataType::UInt64 => LogicalType::UInt64,
        DataType::Float => LogicalType::Float,
        DataType::Double => LogicalType::Double,
        DataType::Decimal { precision, scale } => LogicalType::Decimal {
            precision: u32::from(*precision),
            scale: u32::from(*scale),
        },
        DataType::String => LogicalType::String,
        DataType::Blob => LogicalType::Blob,
        DataType::Uuid => LogicalType::UUID,
        DataType::Date => LogicalType::Date,
        DataType::Timestamp => LogicalType::Timestamp,
        DataType::TimestampNs => LogicalType::TimestampNs,
        DataType::TimestampMs => LogicalType::TimestampMs,
        DataType::TimestampSec => LogicalType::TimestampSec,
        DataType::TimestampTz => LogicalType::TimestampTz,
        DataType::Interval => LogicalType::Interval,
        DataType::List(t) => LogicalType::List {
            child_type: Box::new(logical_type(t)),
        },
        DataType::Array(t, n) => LogicalType::Array {
            child_type: Box::new(logical_type(t)),
            num_elements: u64::from(*n),
        },
        DataType::Struct(f) => LogicalType::Struct {
            fields: f
                .iter()
                .map(|(n, t)| (n.clone(), logical_type(t)))
                .collect(),
        },
        DataType::Map(k, v) => LogicalType::Map {
            key_type: Box::new(logical_type(k)),
            value_type: Box::new(logical_type(v)),
        },
        DataType::Union(f) => LogicalType::Union {
            types: f
                .iter()
                .map(|(n, t)| (n.clone(), logical_type(t)))
                .collect(),
        },
    }
}

/// The parameter value for a column value.
pub fn to_param(v: &Value, ty: &DataType) -> KValue {
    match encoding(ty) {
        ParamEncoding::Native => to_kuzu(v, ty),
        ParamEncoding::ViaString => {
            if v.is_null() {
                KValue::Null(LogicalType::String)
            } else {
                KValue::String(literal_text(v))
            }
        }
    }
}

/// The text Kuzu's CAST from STRING accepts for a value: the portable statements' own
/// (`kuzu_sync_engine::cypher`), so both paths write values the same way.
pub use kuzu_sync_engine::cypher::literal_text;

fn ts(micros: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(micros) * 1_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

/// A `kuzu::Value` of exactly the column type (the C++ side trusts declared types).
pub fn to_kuzu(v: &Value, ty: &DataType) -> KValue {
    match (v, ty) {
        (Value::Null, _) => KValue::Null(logical_type(ty)),
        (Value::Bool(b), _) => KValue::Bool(*b),
        (Value::Int8(x), _) => KValue::Int8(*x),
        (Value::Int16(x), _) => KValue::Int16(*x),
        (Value::Int32(x), _) => KValue::Int32(*x),
        (Value::Int64(x), _) => KValue::Int64(*x),
        (Value::Int128(x), _) => KValue::Int128(*x),
        (Value::UInt8(x), _) => KValue::UInt8(*x),
        (Value::UInt16(x), _) => KValue::UInt16(*x),
        (Value::UInt32(x), _) => KValue::UInt32(*x),
        (Value::UInt64(x), _) => KValue::UInt64(*x),
        (Value::Float(x), _) => KValue::Float(*x),
        (Value::Double(x), _) => KValue::Double(*x),
        (Value::Decimal { mantissa, scale }, _) => KValue::Decimal(
            rust_decimal::Decimal::from_i128_with_scale(*mantissa, u32::from(*scale)),
        ),
        (Value::String(s), _) => KValue::String(s.clone()),
        (Value::Blob(b), _) => KValue::Blob(b.clone()),
        (Value::Uuid(u), _) => KValue::UUID(uuid::Uuid::from_u128(*u)),
        (Value::Date(d), _) => {
            KValue::Date(time::Date::from_julian_day(2_440_588 + *d).unwrap_or(time::Date::MIN))
        }
        (Value::Timestamp(t), _) => KValue::Timestamp(ts(*t)),
        (Value::TimestampTz(t), _) => KValue::TimestampTz(ts(*t)),
        (Value::TimestampMs(t), _) => KValue::TimestampMs(ts(t.saturating_mul(1_000))),
        (Value::TimestampSec(t), _) => KValue::TimestampSec(ts(t.saturating_mul(1_000_000))),
        (Value::TimestampNs(t), _) => KValue::TimestampNs(
            time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(*t))
                .unwrap_or(time::OffsetDateTime::UNIX_EPOCH),
        ),
        (
            Value::Interval {
                months,
                days,
                micros,
            },
            _,
        ) => KValue::Interval(
            time::Duration::days(i64::from(*months) * 30 + i64::from(*days))
                + time::Duration::microseconds(*micros),
        ),
        (Value::List(items), DataType::Array(t, _)) => KValue::Array(
            logical_type(t),
            items.iter().map(|i| to_kuzu(i, t)).collect(),
        ),
        (Value::List(items), DataType::List(t)) => KValue::List(
            logical_type(t),
            items.iter().map(|i| to_kuzu(i, t)).collect(),
        ),
        (Value::Struct(fields), DataType::Struct(types)) => KValue::Struct(
            fields
                .iter()
                .zip(types)
                .map(|((n, v), (_, t))| (n.clone(), to_kuzu(v, t)))
                .collect(),
        ),
        (Value::Map(entries), DataType::Map(kt, vt)) => KValue::Map(
            (logical_type(kt), logical_type(vt)),
            entries
                .iter()
                .map(|(k, v)| (to_kuzu(k, kt), to_kuzu(v, vt)))
                .collect(),
        ),
        (Value::Union { value, tag }, DataType::Union(members)) => {
            let t = members
                .iter()
                .find(|(n, _)| n == tag)
                .map(|(_, t)| t.clone())
                .unwrap_or(DataType::String);
            KValue::Union {
                types: members
                    .iter()
                    .map(|(n, t)| (n.clone(), logical_type(t)))
                    .collect(),
                value: Box::new(to_kuzu(value, &t)),
            }
        }
        // Shapes that do not match the type never reach here: values are validated
        // against their column type before they are applied.
        (_, ty) => KValue::Null(logical_type(ty)),
    }
}

fn days_since_epoch(d: time::Date) -> i32 {
    d.to_julian_day() - 2_440_588
}

fn micros_of(t: time::OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000) as i64
}

/// An engine value from a Kuzu value, typed by the column. Interval columns are read as
/// text (see [`read_expr`]) and parsed here.
pub fn from_kuzu(v: KValue, ty: &DataType) -> Result<Value, String> {
    if let KValue::String(s) = &v {
        if !matches!(ty, DataType::String) {
            return from_text(s, ty);
        }
    }
    Ok(match (v, ty) {
        (KValue::Null(_), _) => Value::Null,
        (KValue::List(_, items), DataType::List(t))
        | (KValue::Array(_, items), DataType::Array(t, _))
        | (KValue::List(_, items), DataType::Array(t, _)) => Value::List(
            items
                .into_iter()
                .map(|i| from_kuzu(i, t))
                .collect::<Result<_, _>>()?,
        ),
        (KValue::Struct(fields), DataType::Struct(types)) => Value::Struct(
            fields
                .into_iter()
                .zip(types)
                .map(|((n, v), (_, t))| from_kuzu(v, t).map(|v| (n, v)))
                .collect::<Result<_, _>>()?,
        ),
        (KValue::Map(_, entries), DataType::Map(kt, vt)) => Value::Map(
            entries
                .into_iter()
                .map(|(k, v)| Ok((from_kuzu(k, kt)?, from_kuzu(v, vt)?)))
                .collect::<Result<_, String>>()?,
        ),
        (KValue::Union { value, .. }, DataType::Union(members)) => {
            // The crate does not say which member is set; the first member whose type
            // the value has is it (members of distinct types are unambiguous).
            for (tag, t) in members {
                if let Ok(inner) = from_kuzu((*value).clone(), t) {
                    if !inner.is_null() && inner.conforms_to(t) {
                        return Ok(Value::Union {
                            tag: tag.clone(),
                            value: Box::new(inner),
                        });
                    }
                }
            }
            return Err(format!("union value {value} fits no member of {ty}"));
        }
        (other, _) => untyped(other)?,
    })
}

/// An engine value from a Kuzu value without a column type (query results).
pub fn untyped(v: KValue) -> Result<Value, String> {
    Ok(match v {
        KValue::Null(_) => Value::Null,
        KValue::Bool(b) => Value::Bool(b),
        KValue::Int8(x) => Value::Int8(x),
        KValue::Int16(x) => Value::Int16(x),
        KValue::Int32(x) => Value::Int32(x),
        KValue::Int64(x) => Value::Int64(x),
        KValue::Int128(x) => Value::Int128(x),
        KValue::UInt8(x) => Value::UInt8(x),
        KValue::UInt16(x) => Value::UInt16(x),
        KValue::UInt32(x) => Value::UInt32(x),
        KValue::UInt64(x) => Value::UInt64(x),
        KValue::Float(x) => Value::Float(x),
        KValue::Double(x) => Value::Double(x),
        KValue::Decimal(d) => Value::Decimal {
            mantissa: d.mantissa(),
            scale: d.scale() as u8,
        },
        KValue::String(s) => Value::String(s),
        KValue::Blob(b) => Value::Blob(b),
        KValue::UUID(u) => Value::Uuid(u.as_u128()),
        KValue::Date(d) => Value::Date(days_since_epoch(d)),
        KValue::Timestamp(t) => Value::Timestamp(micros_of(t)),
        KValue::TimestampTz(t) => Value::TimestampTz(micros_of(t)),
        KValue::TimestampMs(t) => Value::TimestampMs(micros_of(t).div_euclid(1_000)),
        KValue::TimestampSec(t) => Value::TimestampSec(micros_of(t).div_euclid(1_000_000)),
        KValue::TimestampNs(t) => Value::TimestampNs(t.unix_timestamp_nanos() as i64),
        KValue::Interval(d) => {
            let micros = d.whole_microseconds() as i64;
            Value::Interval {
                months: 0,
                days: (micros / 86_400_000_000) as i32,
                micros: micros % 86_400_000_000,
            }
        }
        KValue::List(_, items) | KValue::Array(_, items) => {
            Value::List(items.into_iter().map(untyped).collect::<Result<_, _>>()?)
        }
        KValue::Struct(fields) => Value::Struct(
            fields
                .into_iter()
                .map(|(n, v)| untyped(v).map(|v| (n, v)))
                .collect::<Result<_, _>>()?,
        ),
        KValue::Map(_, entries) => Value::Map(
            entries
                .into_iter()
                .map(|(k, v)| Ok((untyped(k)?, untyped(v)?)))
                .collect::<Result<_, String>>()?,
        ),
        KValue::Union { value, .. } => untyped(*value)?,
        KValue::Node(n) => Value::Struct(
            std::iter::once((
                "_label".to_string(),
                Value::String(n.get_label_name().clone()),
            ))
            .chain(
                n.get_properties()
                    .iter()
                    .map(|(k, v)| untyped(v.clone()).map(|v| (k.clone(), v)))
                    .collect::<Result<Vec<_>, _>>()?,
            )
            .collect(),
        ),
        KValue::Rel(r) => Value::Struct(
            std::iter::once((
                "_label".to_string(),
                Value::String(r.get_label_name().clone()),
            ))
            .chain(
                r.get_properties()
                    .iter()
                    .filter(|(k, _)| k != kuzu_sync_engine::schema::EDGE_KEY_COLUMN)
                    .map(|(k, v)| untyped(v.clone()).map(|v| (k.clone(), v)))
                    .collect::<Result<Vec<_>, _>>()?,
            )
            .collect(),
        ),
        KValue::InternalID(id) => Value::String(format!("{}:{}", id.table_id, id.offset)),
        KValue::RecursiveRel { .. } => Value::String("<path>".into()),
    })
}

/// Parses the text form of a value read through `CAST(x AS STRING)`.
fn from_text(s: &str, ty: &DataType) -> Result<Value, String> {
    use kuzu_sync_engine::text;
    match ty {
        DataType::Interval => {
            let (months, days, micros) = text::parse_interval(s)?;
            Ok(Value::Interval {
                months,
                days,
                micros,
            })
        }
        // A nested type with an interval inside, read as Kuzu's text form of the whole value.
        other => text::parse_value(s, other),
    }
}
