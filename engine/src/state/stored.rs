//! [`Stored`]: a [`Value`] as the engine keeps it, in 24 bytes instead of 48.
//!
//! `Value` is 48 bytes because its 128-bit variants force 16-byte alignment, and most
//! properties hold an integer, a float, a timestamp or a short string. `Stored` keeps those
//! inline (strings of up to 22 bytes in place, longer ones in a `Box<str>`) and boxes every
//! other variant. It converts back to exactly the `Value` it was made from, and serializes
//! as that `Value`, so snapshots do not see the difference.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::value::Value;

const INLINE: usize = 22;

#[derive(Clone)]
pub(super) enum Stored {
    Null,
    Bool(bool),
    Int8(i8),
    Int16(i16),
    Int32(i32),
    Int64(i64),
    UInt8(u8),
    UInt16(u16),
    UInt32(u32),
    UInt64(u64),
    Float(f32),
    Double(f64),
    Date(i32),
    Timestamp(i64),
    TimestampNs(i64),
    TimestampMs(i64),
    TimestampSec(i64),
    TimestampTz(i64),
    /// A string of at most [`INLINE`] bytes, in place.
    Short {
        len: u8,
        bytes: [u8; INLINE],
    },
    String(Box<str>),
    /// Every other variant.
    Other(Box<Value>),
}

impl Stored {
    pub(super) fn new(v: &Value) -> Stored {
        match v {
            Value::Null => Stored::Null,
            Value::Bool(x) => Stored::Bool(*x),
            Value::Int8(x) => Stored::Int8(*x),
            Value::Int16(x) => Stored::Int16(*x),
            Value::Int32(x) => Stored::Int32(*x),
            Value::Int64(x) => Stored::Int64(*x),
            Value::UInt8(x) => Stored::UInt8(*x),
            Value::UInt16(x) => Stored::UInt16(*x),
            Value::UInt32(x) => Stored::UInt32(*x),
            Value::UInt64(x) => Stored::UInt64(*x),
            Value::Float(x) => Stored::Float(*x),
            Value::Double(x) => Stored::Double(*x),
            Value::Date(x) => Stored::Date(*x),
            Value::Timestamp(x) => Stored::Timestamp(*x),
            Value::TimestampNs(x) => Stored::TimestampNs(*x),
            Value::TimestampMs(x) => Stored::TimestampMs(*x),
            Value::TimestampSec(x) => Stored::TimestampSec(*x),
            Value::TimestampTz(x) => Stored::TimestampTz(*x),
            Value::String(s) if s.len() <= INLINE => {
                let mut bytes = [0; INLINE];
                bytes[..s.len()].copy_from_slice(s.as_bytes());
                Stored::Short {
                    len: s.len() as u8,
                    bytes,
                }
            }
            Value::String(s) => Stored::String(s.as_str().into()),
            other => Stored::Other(Box::new(other.clone())),
        }
    }

    /// The string, for the two string forms.
    fn as_str(&self) -> Option<&str> {
        match self {
            Stored::Short { len, bytes } => {
                Some(std::str::from_utf8(&bytes[..*len as usize]).expect("made from a str"))
            }
            Stored::String(s) => Some(s),
            _ => None,
        }
    }

    /// The value this was made from.
    pub(super) fn value(&self) -> Value {
        match self {
            Stored::Null => Value::Null,
            Stored::Bool(x) => Value::Bool(*x),
            Stored::Int8(x) => Value::Int8(*x),
            Stored::Int16(x) => Value::Int16(*x),
            Stored::Int32(x) => Value::Int32(*x),
            Stored::Int64(x) => Value::Int64(*x),
            Stored::UInt8(x) => Value::UInt8(*x),
            Stored::UInt16(x) => Value::UInt16(*x),
            Stored::UInt32(x) => Value::UInt32(*x),
            Stored::UInt64(x) => Value::UInt64(*x),
            Stored::Float(x) => Value::Float(*x),
            Stored::Double(x) => Value::Double(*x),
            Stored::Date(x) => Value::Date(*x),
            Stored::Timestamp(x) => Value::Timestamp(*x),
            Stored::TimestampNs(x) => Value::TimestampNs(*x),
            Stored::TimestampMs(x) => Value::TimestampMs(*x),
            Stored::TimestampSec(x) => Value::TimestampSec(*x),
            Stored::TimestampTz(x) => Value::TimestampTz(*x),
            Stored::Short { .. } | Stored::String(_) => {
                Value::String(self.as_str().expect("a string").to_string())
            }
            Stored::Other(v) => Value::clone(v),
        }
    }

    pub(super) fn is_null(&self) -> bool {
        matches!(self, Stored::Null)
    }

    /// [`Value::conforms_to`] of the value this was made from, without building it.
    pub(super) fn conforms_to(&self, ty: &crate::value::DataType) -> bool {
        match self {
            Stored::Short { .. } | Stored::String(_) => {
                matches!(ty, crate::value::DataType::String)
            }
            Stored::Other(v) => v.conforms_to(ty),
            // The remaining forms hold no heap data: the conversion is a copy.
            s => s.value().conforms_to(ty),
        }
    }

    /// Whether this holds `v` (by `Value`'s equality), without building a `Value` for the
    /// string and boxed forms.
    pub(super) fn is(&self, v: &Value) -> bool {
        match (self, v) {
            (Stored::Other(b), v) => **b == *v,
            (Stored::Short { .. } | Stored::String(_), Value::String(t)) => {
                self.as_str() == Some(t.as_str())
            }
            (Stored::Short { .. } | Stored::String(_), _) => false,
            // The remaining forms hold no heap data: the conversion is a copy.
            (s, v) => s.value() == *v,
        }
    }
}

impl PartialEq for Stored {
    fn eq(&self, other: &Self) -> bool {
        match other {
            Stored::Other(b) => self.is(b),
            _ => self.is(&other.value()),
        }
    }
}

impl std::fmt::Debug for Stored {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(&self.value(), f)
    }
}

impl Serialize for Stored {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.value().serialize(s)
    }
}

impl<'de> Deserialize<'de> for Stored {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Value::deserialize(d).map(|v| Stored::new(&v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn is_24_bytes() {
        assert_eq!(std::mem::size_of::<Stored>(), 24);
    }

    #[test]
    fn round_trips_every_form() {
        let values = [
            Value::Null,
            Value::Bool(true),
            Value::Int8(-3),
            Value::Int16(300),
            Value::Int32(-70_000),
            Value::Int64(1 << 40),
            Value::Int128(-(1 << 100)),
            Value::UInt8(200),
            Value::UInt16(60_000),
            Value::UInt32(4_000_000_000),
            Value::UInt64(u64::MAX),
            Value::Float(1.5),
            Value::Double(f64::NAN),
            Value::Decimal {
                mantissa: 12345,
                scale: 2,
            },
            Value::String(String::new()),
            Value::String("x".repeat(INLINE)),
            Value::String("é".repeat(12)),
            Value::Blob(vec![0, 1, 2]),
            Value::Uuid(7),
            Value::Date(19_000),
            Value::Timestamp(1),
            Value::TimestampNs(2),
            Value::TimestampMs(3),
            Value::TimestampSec(4),
            Value::TimestampTz(5),
            Value::List(vec![Value::Int64(1)]),
        ];
        for v in &values {
            let s = Stored::new(v);
            assert_eq!(s.value(), *v, "{v:?}");
            assert!(s.is(v), "{v:?}");
            let bytes = rmp_serde::to_vec(&s).unwrap();
            assert_eq!(bytes, rmp_serde::to_vec(v).unwrap(), "{v:?}");
            let back: Stored = rmp_serde::from_slice(&bytes).unwrap();
            assert_eq!(back.value(), *v, "{v:?}");
            for w in &values {
                assert_eq!(s.is(w), v == w, "{v:?} against {w:?}");
                assert_eq!(s == Stored::new(w), v == w, "{v:?} against {w:?}");
            }
        }
        assert!(matches!(
            Stored::new(&Value::String("y".repeat(INLINE + 1))),
            Stored::String(_)
        ));
    }
}
