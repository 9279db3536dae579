//! Property values and their types, mirroring Kuzu's logical types exactly so that every
//! Kuzu value survives replication unchanged.
//!
//! Values have a total order and a hash (floats by their bits), so they can be keys and so
//! that every replica orders them the same way.

use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};

use serde::{Deserialize, Serialize};

/// A Kuzu column type. `SERIAL` is deliberately absent: serial keys are assigned locally and
/// differ across replicas, so they cannot be replicated (see ARCHITECTURE.md).
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum DataType {
    Bool,
    Int8,
    Int16,
    Int32,
    Int64,
    Int128,
    UInt8,
    UInt16,
    UInt32,
    UInt64,
    Float,
    Double,
    Decimal {
        precision: u8,
        scale: u8,
    },
    String,
    Blob,
    Uuid,
    Date,
    Timestamp,
    TimestampNs,
    TimestampMs,
    TimestampSec,
    TimestampTz,
    Interval,
    /// Variable-length list, `T[]`.
    List(Box<DataType>),
    /// Fixed-length array, `T[n]`.
    Array(Box<DataType>, u32),
    Struct(Vec<(String, DataType)>),
    Map(Box<DataType>, Box<DataType>),
    Union(Vec<(String, DataType)>),
}

impl DataType {
    pub fn is_numeric(&self) -> bool {
        matches!(
            self,
            DataType::Int8
                | DataType::Int16
                | DataType::Int32
                | DataType::Int64
                | DataType::Int128
                | DataType::UInt8
                | DataType::UInt16
                | DataType::UInt32
                | DataType::UInt64
                | DataType::Float
                | DataType::Double
        )
    }

    pub fn is_integer(&self) -> bool {
        self.is_numeric() && !matches!(self, DataType::Float | DataType::Double)
    }

    /// Types usable as a primary key in Kuzu.
    pub fn is_valid_primary_key(&self) -> bool {
        matches!(
            self,
            DataType::Int8
                | DataType::Int16
                | DataType::Int32
                | DataType::Int64
                | DataType::Int128
                | DataType::UInt8
                | DataType::UInt16
                | DataType::UInt32
                | DataType::UInt64
                | DataType::Float
                | DataType::Double
                | DataType::String
                | DataType::Blob
                | DataType::Uuid
                | DataType::Date
                | DataType::Timestamp
                | DataType::TimestampNs
                | DataType::TimestampMs
                | DataType::TimestampSec
                | DataType::TimestampTz
                | DataType::Interval
                | DataType::Decimal { .. }
        )
    }
}

impl fmt::Display for DataType {
    /// Kuzu's own spelling, usable in DDL.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataType::Bool => f.write_str("BOOL"),
            DataType::Int8 => f.write_str("INT8"),
            DataType::Int16 => f.write_str("INT16"),
            DataType::Int32 => f.write_str("INT32"),
            DataType::Int64 => f.write_str("INT64"),
            DataType::Int128 => f.write_str("INT128"),
            DataType::UInt8 => f.write_str("UINT8"),
            DataType::UInt16 => f.write_str("UINT16"),
            DataType::UInt32 => f.write_str("UINT32"),
            DataType::UInt64 => f.write_str("UINT64"),
            DataType::Float => f.write_str("FLOAT"),
            DataType::Double => f.write_str("DOUBLE"),
            DataType::Decimal { precision, scale } => write!(f, "DECIMAL({precision}, {scale})"),
            DataType::String => f.write_str("STRING"),
            DataType::Blob => f.write_str("BLOB"),
            DataType::Uuid => f.write_str("UUID"),
            DataType::Date => f.write_str("DATE"),
            DataType::Timestamp => f.write_str("TIMESTAMP"),
            DataType::TimestampNs => f.write_str("TIMESTAMP_NS"),
            DataType::TimestampMs => f.write_str("TIMESTAMP_MS"),
            DataType::TimestampSec => f.write_str("TIMESTAMP_SEC"),
            DataType::TimestampTz => f.write_str("TIMESTAMP_TZ"),
            DataType::Interval => f.write_str("INTERVAL"),
            DataType::List(t) => write!(f, "{t}[]"),
            DataType::Array(t, n) => write!(f, "{t}[{n}]"),
            DataType::Struct(fields) => {
                f.write_str("STRUCT(")?;
                for (i, (n, t)) in fields.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{n} {t}")?;
                }
                f.write_str(")")
            }
            DataType::Map(k, v) => write!(f, "MAP({k}, {v})"),
            DataType::Union(fields) => {
                f.write_str("UNION(")?;
                for (i, (n, t)) in fields.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{n} {t}")?;
                }
                f.write_str(")")
            }
        }
    }
}

/// A property value. Temporal values use Kuzu's own storage units so that conversion is exact.
#[derive(Clone, Serialize, Deserialize)]
pub enum Value {
    Null,
    Bool(bool),
    Int8(i8),
    Int16(i16),
    Int32(i32),
    Int64(i64),
    Int128(i128),
    UInt8(u8),
    UInt16(u16),
    UInt32(u32),
    UInt64(u64),
    Float(f32),
    Double(f64),
    /// `mantissa × 10^-scale`.
    Decimal {
        mantissa: i128,
        scale: u8,
    },
    String(String),
    Blob(#[serde(with = "serde_bytes_compat")] Vec<u8>),
    Uuid(u128),
    /// Days since 1970-01-01.
    Date(i32),
    /// Microseconds since the epoch.
    Timestamp(i64),
    /// Nanoseconds since the epoch.
    TimestampNs(i64),
    /// Milliseconds since the epoch.
    TimestampMs(i64),
    /// Seconds since the epoch.
    TimestampSec(i64),
    /// Microseconds since the epoch, UTC.
    TimestampTz(i64),
    Interval {
        months: i32,
        days: i32,
        micros: i64,
    },
    /// Elements of a LIST or an ARRAY.
    List(Vec<Value>),
    Struct(Vec<(String, Value)>),
    Map(Vec<(Value, Value)>),
    Union {
        tag: String,
        value: Box<Value>,
    },
}

/// Serializes blobs as byte strings in binary formats (MessagePack) instead of arrays of ints.
mod serde_bytes_compat {
    use serde::{Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<Vec<u8>, A::Error> {
                let mut out = Vec::new();
                while let Some(b) = a.next_element::<u8>()? {
                    out.push(b);
                }
                Ok(out)
            }
        }
        d.deserialize_byte_buf(V)
    }
}

impl Value {
    fn rank(&self) -> u8 {
        match self {
            Value::Null => 0,
            Value::Bool(_) => 1,
            Value::Int8(_) => 2,
            Value::Int16(_) => 3,
            Value::Int32(_) => 4,
            Value::Int64(_) => 5,
            Value::Int128(_) => 6,
            Value::UInt8(_) => 7,
            Value::UInt16(_) => 8,
            Value::UInt32(_) => 9,
            Value::UInt64(_) => 10,
            Value::Float(_) => 11,
            Value::Double(_) => 12,
            Value::Decimal { .. } => 13,
            Value::String(_) => 14,
            Value::Blob(_) => 15,
            Value::Uuid(_) => 16,
            Value::Date(_) => 17,
            Value::Timestamp(_) => 18,
            Value::TimestampNs(_) => 19,
            Value::TimestampMs(_) => 20,
            Value::TimestampSec(_) => 21,
            Value::TimestampTz(_) => 22,
            Value::Interval { .. } => 23,
            Value::List(_) => 24,
            Value::Struct(_) => 25,
            Value::Map(_) => 26,
            Value::Union { .. } => 27,
        }
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// True if the value can be stored in a column of type `ty`. NULL conforms to every type.
    pub fn conforms_to(&self, ty: &DataType) -> bool {
        match (self, ty) {
            (Value::Null, _) => true,
            (Value::Bool(_), DataType::Bool)
            | (Value::Int8(_), DataType::Int8)
            | (Value::Int16(_), DataType::Int16)
            | (Value::Int32(_), DataType::Int32)
            | (Value::Int64(_), DataType::Int64)
            | (Value::Int128(_), DataType::Int128)
            | (Value::UInt8(_), DataType::UInt8)
            | (Value::UInt16(_), DataType::UInt16)
            | (Value::UInt32(_), DataType::UInt32)
            | (Value::UInt64(_), DataType::UInt64)
            | (Value::Float(_), DataType::Float)
            | (Value::Double(_), DataType::Double)
            | (Value::String(_), DataType::String)
            | (Value::Blob(_), DataType::Blob)
            | (Value::Uuid(_), DataType::Uuid)
            | (Value::Date(_), DataType::Date)
            | (Value::Timestamp(_), DataType::Timestamp)
            | (Value::TimestampNs(_), DataType::TimestampNs)
            | (Value::TimestampMs(_), DataType::TimestampMs)
            | (Value::TimestampSec(_), DataType::TimestampSec)
            | (Value::TimestampTz(_), DataType::TimestampTz) => true,
            // Kuzu 0.11 cannot parse an interval with a negative part back from text, which
            // is how intervals reach it exactly; such a value would stall apply everywhere.
            (
                Value::Interval {
                    months,
                    days,
                    micros,
                },
                DataType::Interval,
            ) => *months >= 0 && *days >= 0 && *micros >= 0,
            (
                Value::Decimal { mantissa, scale },
                DataType::Decimal {
                    precision,
                    scale: s,
                },
            ) => scale == s && decimal_digits(*mantissa) <= u32::from(*precision),
            (Value::List(items), DataType::List(t)) => items.iter().all(|v| v.conforms_to(t)),
            (Value::List(items), DataType::Array(t, n)) => {
                items.len() == *n as usize && items.iter().all(|v| v.conforms_to(t))
            }
            (Value::Struct(fields), DataType::Struct(types)) => {
                fields.len() == types.len()
                    && fields
                        .iter()
                        .zip(types)
                        .all(|((fname, v), (tname, t))| fname == tname && v.conforms_to(t))
            }
            (Value::Map(entries), DataType::Map(kt, vt)) => entries
                .iter()
                .all(|(k, v)| !k.is_null() && k.conforms_to(kt) && v.conforms_to(vt)),
            (Value::Union { tag, value }, DataType::Union(members)) => members
                .iter()
                .any(|(name, t)| name == tag && value.conforms_to(t)),
            _ => false,
        }
    }

    /// The sum of two numeric values of the same type, saturating; `None` if not numeric or
    /// of different types.
    pub fn checked_add(&self, other: &Value) -> Option<Value> {
        Some(match (self, other) {
            (Value::Int8(a), Value::Int8(b)) => Value::Int8(a.saturating_add(*b)),
            (Value::Int16(a), Value::Int16(b)) => Value::Int16(a.saturating_add(*b)),
            (Value::Int32(a), Value::Int32(b)) => Value::Int32(a.saturating_add(*b)),
            (Value::Int64(a), Value::Int64(b)) => Value::Int64(a.saturating_add(*b)),
            (Value::Int128(a), Value::Int128(b)) => Value::Int128(a.saturating_add(*b)),
            (Value::UInt8(a), Value::UInt8(b)) => Value::UInt8(a.saturating_add(*b)),
            (Value::UInt16(a), Value::UInt16(b)) => Value::UInt16(a.saturating_add(*b)),
            (Value::UInt32(a), Value::UInt32(b)) => Value::UInt32(a.saturating_add(*b)),
            (Value::UInt64(a), Value::UInt64(b)) => Value::UInt64(a.saturating_add(*b)),
            (Value::Float(a), Value::Float(b)) => Value::Float(a + b),
            (Value::Double(a), Value::Double(b)) => Value::Double(a + b),
            _ => return None,
        })
    }
}

fn decimal_digits(m: i128) -> u32 {
    let mut m = m.unsigned_abs();
    let mut d = 1;
    while m >= 10 {
        m /= 10;
        d += 1;
    }
    d
}

impl Ord for Value {
    fn cmp(&self, other: &Self) -> Ordering {
        use Value::*;
        match (self, other) {
            (Null, Null) => Ordering::Equal,
            (Bool(a), Bool(b)) => a.cmp(b),
            (Int8(a), Int8(b)) => a.cmp(b),
            (Int16(a), Int16(b)) => a.cmp(b),
            (Int32(a), Int32(b)) => a.cmp(b),
            (Int64(a), Int64(b)) => a.cmp(b),
            (Int128(a), Int128(b)) => a.cmp(b),
            (UInt8(a), UInt8(b)) => a.cmp(b),
            (UInt16(a), UInt16(b)) => a.cmp(b),
            (UInt32(a), UInt32(b)) => a.cmp(b),
            (UInt64(a), UInt64(b)) => a.cmp(b),
            (Float(a), Float(b)) => a.total_cmp(b),
            (Double(a), Double(b)) => a.total_cmp(b),
            (
                Decimal {
                    mantissa: a,
                    scale: sa,
                },
                Decimal {
                    mantissa: b,
                    scale: sb,
                },
            ) => (sa, a).cmp(&(sb, b)),
            (String(a), String(b)) => a.cmp(b),
            (Blob(a), Blob(b)) => a.cmp(b),
            (Uuid(a), Uuid(b)) => a.cmp(b),
            (Date(a), Date(b)) => a.cmp(b),
            (Timestamp(a), Timestamp(b))
            | (TimestampNs(a), TimestampNs(b))
            | (TimestampMs(a), TimestampMs(b))
            | (TimestampSec(a), TimestampSec(b))
            | (TimestampTz(a), TimestampTz(b)) => a.cmp(b),
            (
                Interval {
                    months: am,
                    days: ad,
                    micros: au,
                },
                Interval {
                    months: bm,
                    days: bd,
                    micros: bu,
                },
            ) => (am, ad, au).cmp(&(bm, bd, bu)),
            (List(a), List(b)) => a.cmp(b),
            (Struct(a), Struct(b)) => a.cmp(b),
            (Map(a), Map(b)) => a.cmp(b),
            (Union { tag: ta, value: va }, Union { tag: tb, value: vb }) => (ta, va).cmp(&(tb, vb)),
            _ => self.rank().cmp(&other.rank()),
        }
    }
}

impl PartialOrd for Value {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Value {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Value {}

impl Hash for Value {
    fn hash<H: Hasher>(&self, state: &mut H) {
        use Value::*;
        self.rank().hash(state);
        match self {
            Null => {}
            Bool(v) => v.hash(state),
            Int8(v) => v.hash(state),
            Int16(v) => v.hash(state),
            Int32(v) => v.hash(state),
            Int64(v) => v.hash(state),
            Int128(v) => v.hash(state),
            UInt8(v) => v.hash(state),
            UInt16(v) => v.hash(state),
            UInt32(v) => v.hash(state),
            UInt64(v) => v.hash(state),
            Float(v) => v.to_bits().hash(state),
            Double(v) => v.to_bits().hash(state),
            Decimal { mantissa, scale } => (mantissa, scale).hash(state),
            String(v) => v.hash(state),
            Blob(v) => v.hash(state),
            Uuid(v) => v.hash(state),
            Date(v) => v.hash(state),
            Timestamp(v) | TimestampNs(v) | TimestampMs(v) | TimestampSec(v) | TimestampTz(v) => {
                v.hash(state)
            }
            Interval {
                months,
                days,
                micros,
            } => (months, days, micros).hash(state),
            List(v) => v.hash(state),
            Struct(v) => v.hash(state),
            Map(v) => v.hash(state),
            Union { tag, value } => (tag, value).hash(state),
        }
    }
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", crate::text::render(self))
    }
}

impl fmt::Display for Value {
    /// Kuzu's text form of the value (what `CAST(x AS STRING)` prints).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::text::render(self))
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::String(s.to_string())
    }
}

impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::String(s)
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int64(v)
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Double(v)
    }
}

#[cfg(test)]
mod tests;
