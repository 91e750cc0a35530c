//! One SQL value and its exact JSON form.
//!
//! JSON has a single number type, so the encoding is chosen to round-trip
//! exactly:
//! - `null` is NULL;
//! - a JSON integer is an `Integer` (the full i64 range);
//! - a JSON number with a fraction or exponent is a `Real` (shortest
//!   round-trip form, so every finite f64, `-0.0` included, comes back bitwise);
//! - a string is `Text`;
//! - `{"real": "inf" | "-inf"}` is a non-finite `Real` (SQLite stores no NaN);
//! - `{"blob": "<base64>"}` is a `Blob`.

use std::fmt;

use base64::Engine as _;
use serde::de::{self, MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// A SQL value as SQLite, PostgreSQL and MySQL all understand it.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Integer(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

impl Value {
    /// Same value, bit for bit (unlike `==`, `-0.0` differs from `0.0`).
    pub fn same_as(&self, other: &Value) -> bool {
        match (self, other) {
            (Value::Real(a), Value::Real(b)) => a.to_bits() == b.to_bits(),
            _ => self == other,
        }
    }

    /// About how many bytes the value takes in its JSON form: an estimate
    /// for bounding batches by size, not an exact count.
    pub fn wire_size(&self) -> usize {
        match self {
            Value::Null => 4,
            Value::Integer(_) | Value::Real(_) => 24,
            // Quotes, and some room for escapes.
            Value::Text(t) => t.len() + 2 + t.len() / 16,
            Value::Blob(b) => b.len().div_ceil(3) * 4 + 12,
        }
    }

    /// A short name of the value's kind, for error messages.
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Integer(_) => "integer",
            Value::Real(_) => "real",
            Value::Text(_) => "text",
            Value::Blob(_) => "blob",
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("NULL"),
            Value::Integer(i) => write!(f, "{i}"),
            Value::Real(r) => write!(f, "{r:?}"),
            Value::Text(s) => write!(f, "{s}"),
            Value::Blob(b) => write!(f, "x'{}'", b.iter().map(|b| format!("{b:02x}")).collect::<String>()),
        }
    }
}

impl Serialize for Value {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Value::Null => s.serialize_unit(),
            Value::Integer(i) => s.serialize_i64(*i),
            Value::Real(r) if r.is_finite() => s.serialize_f64(*r),
            Value::Real(r) => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("real", if *r > 0.0 { "inf" } else { "-inf" })?;
                m.end()
            }
            Value::Text(t) => s.serialize_str(t),
            Value::Blob(b) => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry("blob", &B64.encode(b))?;
                m.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValueVisitor)
    }
}

struct ValueVisitor;

impl<'de> Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("null, an integer, a number, a string, {\"blob\": base64} or {\"real\": \"inf\"|\"-inf\"}")
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Integer(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        i64::try_from(v)
            .map(Value::Integer)
            .map_err(|_| E::custom(format!("integer {v} is out of the 64-bit signed range")))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Real(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Text(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::Text(v))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let Some(key) = map.next_key::<String>()? else {
            return Err(de::Error::custom("an empty object is not a value"));
        };
        let value = match key.as_str() {
            "blob" => {
                let text: String = map.next_value()?;
                Value::Blob(
                    B64.decode(text.as_bytes()).map_err(|e| de::Error::custom(format!("bad base64 in blob: {e}")))?,
                )
            }
            "real" => match map.next_value::<String>()?.as_str() {
                "inf" => Value::Real(f64::INFINITY),
                "-inf" => Value::Real(f64::NEG_INFINITY),
                other => return Err(de::Error::custom(format!("unknown special real {other:?}"))),
            },
            other => return Err(de::Error::custom(format!("unknown value tag {other:?}"))),
        };
        if map.next_key::<String>()?.is_some() {
            return Err(de::Error::custom("a tagged value has exactly one key"));
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(v: &Value) -> Value {
        let text = serde_json::to_string(v).unwrap();
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    #[test]
    fn values_round_trip_exactly() {
        let cases = [
            Value::Null,
            Value::Integer(i64::MIN),
            Value::Integer(i64::MAX),
            Value::Integer(0),
            Value::Real(-0.0),
            Value::Real(0.0),
            Value::Real(1.0),
            Value::Real(f64::MIN_POSITIVE / 4.0),
            Value::Real(f64::MAX),
            Value::Real(1e300),
            Value::Real(0.1 + 0.2),
            Value::Real(f64::INFINITY),
            Value::Real(f64::NEG_INFINITY),
            Value::Text(String::new()),
            Value::Text("Zoë 😀 \u{0}".into()),
            Value::Blob(vec![0, 1, 0, 255]),
            Value::Blob(vec![]),
        ];
        for v in &cases {
            assert!(round_trip(v).same_as(v), "{v:?} did not round-trip");
        }
    }

    #[test]
    fn integers_and_reals_stay_distinct() {
        assert_eq!(serde_json::to_string(&Value::Real(2.0)).unwrap(), "2.0");
        assert_eq!(round_trip(&Value::Integer(2)), Value::Integer(2));
    }

    #[test]
    fn out_of_range_integer_is_refused() {
        assert!(serde_json::from_str::<Value>("9223372036854775808").is_err());
        assert!(serde_json::from_str::<Value>("{\"blob\": \"!!\"}").is_err());
        assert!(serde_json::from_str::<Value>("{\"what\": 1}").is_err());
        assert!(serde_json::from_str::<Value>("[1]").is_err());
    }
}
