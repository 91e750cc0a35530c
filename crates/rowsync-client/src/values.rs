//! Conversions between SQLite values and wire values, and the way keys are
//! stored in the outbox (the value itself for a one-column key, or a marker
//! for NULL; SQLite's `json_array` text for a composite key).

use rowsync_core::capture::NULL_KEY;
use rowsync_proto::{Table, Value};
use rusqlite::types::{ToSqlOutput, Value as SqlValue, ValueRef};
use rusqlite::Connection;

use crate::error::ClientError;

/// A SQLite value as a wire value.
pub fn from_sql(value: ValueRef<'_>) -> Value {
    match value {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Integer(i),
        ValueRef::Real(r) => Value::Real(r),
        ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Value::Blob(b.to_vec()),
    }
}

/// A wire value as a SQLite value.
pub fn to_sql(value: &Value) -> SqlValue {
    match value {
        Value::Null => SqlValue::Null,
        Value::Integer(i) => SqlValue::Integer(*i),
        Value::Real(r) => SqlValue::Real(*r),
        Value::Text(t) => SqlValue::Text(t.clone()),
        Value::Blob(b) => SqlValue::Blob(b.clone()),
    }
}

/// A wire value bound as it is, without a copy.
pub fn bind(value: &Value) -> ToSqlOutput<'_> {
    ToSqlOutput::Borrowed(match value {
        Value::Null => ValueRef::Null,
        Value::Integer(i) => ValueRef::Integer(*i),
        Value::Real(r) => ValueRef::Real(*r),
        Value::Text(t) => ValueRef::Text(t.as_bytes()),
        Value::Blob(b) => ValueRef::Blob(b),
    })
}

/// A stored outbox key back into key values.
pub fn key_values(table: &Table, stored: &SqlValue) -> Result<Vec<Value>, ClientError> {
    if table.primary_key.len() == 1 {
        return Ok(vec![match stored {
            SqlValue::Text(text) if text == NULL_KEY => Value::Null,
            stored => from_sql(ValueRef::from(stored)),
        }]);
    }
    let SqlValue::Text(json) = stored else {
        return Err(ClientError::Corrupt(format!("composite key of {} is not JSON text", table.name)));
    };
    let parts: Vec<serde_json::Value> =
        serde_json::from_str(json).map_err(|e| ClientError::Corrupt(format!("composite key {json}: {e}")))?;
    parts
        .into_iter()
        .map(|part| match part {
            serde_json::Value::Null => Ok(Value::Null),
            serde_json::Value::String(s) => Ok(Value::Text(s)),
            serde_json::Value::Object(object) => match object.get("blob").and_then(|hex| hex.as_str()).map(from_hex) {
                Some(Some(bytes)) if object.len() == 1 => Ok(Value::Blob(bytes)),
                _ => Err(ClientError::Corrupt(format!("composite key part {}", serde_json::Value::Object(object)))),
            },
            serde_json::Value::Number(n) => n
                .as_i64()
                .map(Value::Integer)
                .or_else(|| n.as_f64().map(Value::Real))
                .ok_or_else(|| ClientError::Corrupt(format!("composite key part {n}"))),
            other => Err(ClientError::Corrupt(format!("composite key part {other}"))),
        })
        .collect()
}

fn from_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok()).collect()
}

/// Key values into the outbox's stored form, computed by SQLite itself with
/// the triggers' own expression, so that it is byte for byte what they write.
pub fn stored_key(conn: &Connection, key: &[Value]) -> Result<SqlValue, ClientError> {
    match key {
        [Value::Null] => return Ok(SqlValue::Text(NULL_KEY.into())),
        [single] => return Ok(to_sql(single)),
        _ => {}
    }
    let parts: Vec<String> = (1..=key.len()).map(|i| format!("?{i}")).collect();
    let mut statement = conn.prepare_cached(&format!("SELECT {}", rowsync_core::capture::composite_key(&parts)))?;
    let params: Vec<SqlValue> = key.iter().map(to_sql).collect();
    Ok(statement.query_row(rusqlite::params_from_iter(params), |row| row.get(0))?)
}

/// A hashable form of a stored key, for grouping in memory.
pub fn key_token(table_id: i64, stored: &SqlValue) -> (i64, String) {
    let text = match stored {
        SqlValue::Null => "n".to_string(),
        SqlValue::Integer(i) => format!("i{i}"),
        SqlValue::Real(r) => format!("r{}", r.to_bits()),
        SqlValue::Text(t) => format!("t{t}"),
        SqlValue::Blob(b) => format!("b{}", b.iter().map(|x| format!("{x:02x}")).collect::<String>()),
    };
    (table_id, text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn composite_keys_round_trip_through_their_stored_form_blobs_included() {
        let conn = Connection::open_in_memory().unwrap();
        let schema = rowsync_core::parse_schema("CREATE TABLE m (a TEXT, b INTEGER, PRIMARY KEY (a, b));").unwrap();
        let table = &schema.tables[0];
        for key in [
            vec![Value::Text("x\"y".into()), Value::Integer(-7)],
            vec![Value::Blob(vec![0, 0xff, 0x10]), Value::Integer(1)],
            vec![Value::Text("{\"blob\":\"00\"}".into()), Value::Real(1.5)],
        ] {
            let stored = stored_key(&conn, &key).unwrap();
            assert_eq!(key_values(table, &stored).unwrap(), key, "stored as {stored:?}");
        }
    }
}
