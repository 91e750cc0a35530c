//! Checking a wire [`RowChange`] against the schema, and converting between
//! the wire form and a [`RowState`].
//!
//! Every table and column name that arrives from the network passes through
//! [`decode_change`] before any SQL is built from it; after this point code
//! works with column indexes into the schema, never with payload strings.

use std::collections::HashMap;

use rowsync_proto::{
    Cell, CellMemory as WireMemory, ColumnType, Conflict, ConflictStrategy, ErrorCode, RowChange, Schema, Table, Value,
    Version, Written,
};
use sha2::{Digest, Sha256};

use crate::merge::{CellConflict, CellMemory, RowState};

/// Why a change was refused. Each maps to a stable wire [`ErrorCode`].
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ChangeError {
    #[error("unknown table {0:?}")]
    UnknownTable(String),
    #[error("table {table}: unknown column {column:?}")]
    UnknownColumn { table: String, column: String },
    #[error("table {table}: {message}")]
    InvalidKey { table: String, message: String },
    #[error("table {table}, column {column}: {message}")]
    InvalidValue { table: String, column: String, message: String },
}

impl ChangeError {
    pub fn code(&self) -> ErrorCode {
        match self {
            ChangeError::UnknownTable(_) => ErrorCode::UnknownTable,
            ChangeError::UnknownColumn { .. } => ErrorCode::UnknownColumn,
            ChangeError::InvalidKey { .. } => ErrorCode::InvalidKey,
            ChangeError::InvalidValue { .. } => ErrorCode::InvalidValue,
        }
    }
}

/// The longest text (in characters) or blob (in bytes) a key column may
/// hold: MySQL indexes keys of at most 255 characters, and every store must
/// accept what any store accepts.
pub const MAX_KEY_PART: usize = 255;

/// The longest key, in characters of its JSON form (how the server's
/// bookkeeping stores it; MySQL indexes at most 750 characters of it).
pub const MAX_KEY_JSON: usize = 750;

/// A change that passed every check.
#[derive(Clone, Debug, PartialEq)]
pub struct DecodedChange {
    /// Index of the table in the schema.
    pub table: usize,
    /// Key values, in primary key order, each of its column's type.
    pub key: Vec<Value>,
    /// The key as canonical JSON text (how the server's bookkeeping names a
    /// row), computed once here where its length is checked.
    pub key_json: String,
    pub state: RowState,
}

/// Checks `change` against `schema` and turns it into a row state.
///
/// A change that carries any cell, or that describes a visible row, must
/// carry every NOT NULL column without a DEFAULT, so that a row can always
/// be written whole; a column it lacks takes its default in a new row and
/// keeps its value in an existing one.
pub fn decode_change(schema: &Schema, mut change: RowChange) -> Result<DecodedChange, ChangeError> {
    let Some(table_index) = schema.table_index(&change.table) else {
        return Err(ChangeError::UnknownTable(change.table));
    };
    let table = &schema.tables[table_index];
    if change.key.len() != table.primary_key.len() {
        return Err(ChangeError::InvalidKey {
            table: table.name.clone(),
            message: format!(
                "key has {} values, the primary key has {} columns",
                change.key.len(),
                table.primary_key.len()
            ),
        });
    }
    let mut key = Vec::with_capacity(change.key.len());
    for (value, &index) in std::mem::take(&mut change.key).into_iter().zip(&table.primary_key) {
        let value = check_value(table, index, value)?;
        if value == Value::Null {
            return Err(ChangeError::InvalidKey {
                table: table.name.clone(),
                message: format!("key column {} is null", table.columns[index].name),
            });
        }
        let too_long = match &value {
            Value::Text(t) => t.chars().count() > MAX_KEY_PART,
            Value::Blob(b) => b.len() > MAX_KEY_PART,
            _ => false,
        };
        if too_long {
            return Err(ChangeError::InvalidKey {
                table: table.name.clone(),
                message: format!(
                    "key column {} is longer than {MAX_KEY_PART} characters (bytes for a blob), the most every store can index",
                    table.columns[index].name
                ),
            });
        }
        key.push(value);
    }

    let key_json = serde_json::to_string(&key).unwrap_or_default();
    if key_json.is_empty() || key_json.chars().count() > MAX_KEY_JSON {
        return Err(ChangeError::InvalidKey {
            table: table.name.clone(),
            message: format!("the key is too long: its JSON form must fit in {MAX_KEY_JSON} characters"),
        });
    }
    let state = decode_state(table, change)?;
    Ok(DecodedChange { table: table_index, key, key_json, state })
}

/// Checks the state part of `change` (everything but its table and key)
/// against `table` and turns it into a row state.
pub fn decode_state(table: &Table, change: RowChange) -> Result<RowState, ChangeError> {
    let mut state = RowState::empty(table.columns.len());
    let has_cells = !change.cells.is_empty();
    state.alive = change.alive;
    state.deleted = change.deleted;
    for cell in change.cells {
        let index = table
            .column_index(&cell.column)
            .ok_or_else(|| ChangeError::UnknownColumn { table: table.name.clone(), column: cell.column.clone() })?;
        if table.is_key_column(index) {
            return Err(ChangeError::InvalidValue {
                table: table.name.clone(),
                column: cell.column,
                message: "a key column travels in `key`, not as a cell".into(),
            });
        }
        if state.cells[index].is_some() {
            return Err(ChangeError::InvalidValue {
                table: table.name.clone(),
                column: cell.column,
                message: "column appears twice".into(),
            });
        }
        let Some(version) = cell.version.or_else(|| change.version.clone()) else {
            return Err(ChangeError::InvalidValue {
                table: table.name.clone(),
                column: cell.column,
                message: "has no version: give the cell one, or the change a default `version`".into(),
            });
        };
        state.cells[index] = Some((check_value(table, index, cell.value)?, version));
        if let (Some(base), ConflictStrategy::Manual) = (cell.base, table.conflict) {
            state.bases.insert(index, base);
        }
        if let Some(memory) = cell.memory {
            let previous = match memory.previous {
                Some(p) => Some((check_value(table, index, p.value)?, p.version)),
                None => None,
            };
            state.memory.insert(index, CellMemory { previous, aliases: memory.aliases, writers: memory.writers });
        }
    }
    for conflict in change.conflicts {
        state.conflicts.push(decode_conflict(table, conflict)?);
    }
    state.conflicts.sort_by(|a, b| a.id.cmp(&b.id));
    // A column that is nullable or has a default may be missing: its writer
    // did not know it (it was added to the schema later), and the row keeps
    // what it holds there, or takes the default.
    if has_cells || state.is_visible() {
        let required = |i: usize| {
            let column = &table.columns[i];
            !table.is_key_column(i) && column.not_null && column.default.is_none()
        };
        if let Some(missing) = (0..table.columns.len()).find(|&i| required(i) && state.cells[i].is_none()) {
            return Err(ChangeError::InvalidValue {
                table: table.name.clone(),
                column: table.columns[missing].name.clone(),
                message: "missing: a change carries every NOT NULL column without a DEFAULT".into(),
            });
        }
    }
    // Under the row strategy a change counts as its whole row as of its
    // newest write, whoever sent it.
    if table.conflict == ConflictStrategy::Row {
        state = state.as_whole_row();
    }
    Ok(state)
}

/// The wire form of a row state. The most common cell version becomes the
/// change's default `version`, and only cells that differ carry their own.
pub fn encode_change(table: &Table, key: Vec<Value>, state: &RowState) -> RowChange {
    let mut counts: HashMap<&Version, usize> = HashMap::new();
    for (_, version) in state.cells.iter().flatten() {
        *counts.entry(version).or_default() += 1;
    }
    // The most common version; on a tie, the first in column order.
    let most = counts.values().copied().max().unwrap_or(0);
    let default = state.cells.iter().flatten().map(|(_, v)| v).find(|v| counts[v] == most).cloned();
    let cells = state
        .cells
        .iter()
        .enumerate()
        .filter_map(|(index, cell)| {
            cell.as_ref().map(|(value, version)| Cell {
                column: table.columns[index].name.clone(),
                value: value.clone(),
                version: (Some(version) != default.as_ref()).then(|| version.clone()),
                base: state.bases.get(&index).cloned(),
                memory: state.memory.get(&index).filter(|m| !m.is_empty()).map(|m| WireMemory {
                    previous: m
                        .previous
                        .as_ref()
                        .map(|(value, version)| Written { value: value.clone(), version: version.clone() }),
                    aliases: m.aliases.clone(),
                    writers: m.writers.clone(),
                }),
            })
        })
        .collect();
    let conflicts = state.conflicts.iter().map(|c| encode_conflict(table, c)).collect();
    RowChange {
        table: table.name.clone(),
        key,
        alive: state.alive.clone(),
        version: default,
        deleted: state.deleted.clone(),
        cells,
        conflicts,
    }
}

/// Checks a wire conflict against its table.
pub fn decode_conflict(table: &Table, conflict: Conflict) -> Result<CellConflict, ChangeError> {
    let Some(index) = table.column_index(&conflict.column).filter(|&i| !table.is_key_column(i)) else {
        return Err(ChangeError::UnknownColumn { table: table.name.clone(), column: conflict.column });
    };
    Ok(CellConflict {
        id: conflict.id,
        column: index,
        at: conflict.at,
        base: conflict.base,
        base_value: conflict.base_value.map(|v| check_value(table, index, v)).transpose()?,
        kept: (check_value(table, index, conflict.kept.value)?, conflict.kept.version),
        other: (check_value(table, index, conflict.other.value)?, conflict.other.version),
    })
}

/// The wire form of a conflict.
pub fn encode_conflict(table: &Table, conflict: &CellConflict) -> Conflict {
    let written = |(value, version): &(Value, Version)| Written { value: value.clone(), version: version.clone() };
    Conflict {
        id: conflict.id.clone(),
        column: table.columns[conflict.column].name.clone(),
        at: conflict.at.clone(),
        base: conflict.base.clone(),
        base_value: conflict.base_value.clone(),
        kept: written(&conflict.kept),
        other: written(&conflict.other),
    }
}

/// The id of the conflict recorded when `other`, a write to `column` of the
/// row `key_json` of `table`, was not applied: 12 hex digits of a SHA-256,
/// the same wherever it is computed.
pub fn conflict_id(table: &str, key_json: &str, column: &str, other: &Version) -> String {
    let mut hash = Sha256::new();
    for part in [table, key_json, column, other.site.as_str(), &other.hlc.0.to_string()] {
        hash.update(part.as_bytes());
        hash.update([0]);
    }
    hash.finalize().iter().take(6).map(|b| format!("{b:02x}")).collect()
}

/// Checks one value against its column, converting where the conversion is
/// exact (an integer into a REAL column).
pub fn check_value(table: &Table, index: usize, value: Value) -> Result<Value, ChangeError> {
    let column = &table.columns[index];
    let refuse =
        |message: String| ChangeError::InvalidValue { table: table.name.clone(), column: column.name.clone(), message };
    let ok = match (column.ty, value) {
        (_, Value::Null) if column.not_null => return Err(refuse("is NOT NULL but the value is null".into())),
        (_, Value::Null) => Value::Null,
        (ColumnType::Text, Value::Text(t)) if t.contains('\0') => {
            return Err(refuse("text may not contain NUL characters (PostgreSQL cannot store them)".into()));
        }
        (ColumnType::Integer, value @ Value::Integer(_))
        | (ColumnType::Real, value @ Value::Real(_))
        | (ColumnType::Text, value @ Value::Text(_))
        | (ColumnType::Blob, value @ Value::Blob(_)) => value,
        (ColumnType::Real, Value::Integer(i)) if (i as f64) as i64 == i => Value::Real(i as f64),
        (ColumnType::Boolean, Value::Integer(i @ (0 | 1))) => Value::Integer(i),
        (ty, other) => {
            return Err(refuse(format!("expected {} but got {} {}", ty.sql_name(), other.kind(), short(&other))));
        }
    };
    Ok(ok)
}

fn short(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 40 {
        format!("{}…", text.chars().take(40).collect::<String>())
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use rowsync_proto::{Hlc, SiteId, Version};

    use super::*;
    use crate::parse_schema;

    fn schema() -> Schema {
        parse_schema("CREATE TABLE c (id TEXT PRIMARY KEY, name TEXT NOT NULL, age INTEGER, score REAL, ok BOOLEAN);")
            .unwrap()
    }

    fn version() -> Version {
        Version { hlc: Hlc(1), site: SiteId::from_bytes([1; 16]) }
    }

    fn change(cells: &[(&str, Value)]) -> RowChange {
        RowChange {
            table: "c".into(),
            key: vec![Value::Text("k".into())],
            alive: Some(version()),
            version: None,
            deleted: None,
            conflicts: Vec::new(),
            cells: cells
                .iter()
                .map(|(c, v)| Cell {
                    column: (*c).into(),
                    value: v.clone(),
                    version: Some(version()),
                    base: None,
                    memory: None,
                })
                .collect(),
        }
    }

    fn full(name: Value, age: Value) -> RowChange {
        change(&[("name", name), ("age", age), ("score", Value::Integer(3)), ("ok", Value::Integer(1))])
    }

    #[test]
    fn accepts_a_full_row_and_round_trips_it() {
        let schema = schema();
        let wire = full(Value::Text("Ann".into()), Value::Null);
        let decoded = decode_change(&schema, wire.clone()).unwrap();
        assert_eq!(decoded.state.cells[3].as_ref().unwrap().0, Value::Real(3.0));
        let back = encode_change(&schema.tables[0], decoded.key.clone(), &decoded.state);
        assert_eq!(decode_change(&schema, back.clone()).unwrap(), decoded);
    }

    #[test]
    fn refuses_what_the_schema_does_not_allow() {
        let schema = schema();
        let mut unknown_table = full(Value::Text("a".into()), Value::Null);
        unknown_table.table = "nope".into();
        assert_eq!(decode_change(&schema, unknown_table.clone()).unwrap_err().code(), ErrorCode::UnknownTable);
        let mut unknown_column = full(Value::Text("a".into()), Value::Null);
        unknown_column.cells[0].column = "x\"; DROP TABLE c; --".into();
        assert_eq!(decode_change(&schema, unknown_column.clone()).unwrap_err().code(), ErrorCode::UnknownColumn);
        let wrong_type = full(Value::Text("a".into()), Value::Text("old".into()));
        let err = decode_change(&schema, wrong_type.clone()).unwrap_err();
        assert_eq!(err.to_string(), "table c, column age: expected INTEGER but got text old");
        let null_name = full(Value::Null, Value::Null);
        assert_eq!(decode_change(&schema, null_name.clone()).unwrap_err().code(), ErrorCode::InvalidValue);
        // A nullable column may be missing (its writer did not know it); a
        // NOT NULL one without a default may not.
        let partial = change(&[("name", Value::Text("a".into()))]);
        let state = decode_change(&schema, partial.clone()).unwrap().state;
        assert_eq!(state.cells[2], None, "age: no write known");
        assert_eq!(state.row_values(&schema.tables[0], &[Value::Text("k".into())])[2], Value::Null);
        let nameless = change(&[("age", Value::Integer(3))]);
        assert!(decode_change(&schema, nameless.clone()).unwrap_err().to_string().contains("column name: missing"));
        let mut bad_key = full(Value::Text("a".into()), Value::Null);
        bad_key.key.push(Value::Integer(1));
        assert_eq!(decode_change(&schema, bad_key.clone()).unwrap_err().code(), ErrorCode::InvalidKey);
        let mut long_key = full(Value::Text("a".into()), Value::Null);
        long_key.key = vec![Value::Text("é".repeat(256))];
        assert!(decode_change(&schema, long_key.clone()).unwrap_err().to_string().contains("longer than 255"));
        long_key.key = vec![Value::Text("é".repeat(255))];
        assert!(decode_change(&schema, long_key.clone()).is_ok());
    }
}
