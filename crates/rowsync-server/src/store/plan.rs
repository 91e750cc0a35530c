//! The pure part of applying a push, shared by every store: fold the batch
//! per row, merge with what is stored, and decide what to write. Stores only
//! load the stored states and carry out the writes, in as few statements as
//! their dialect allows.

use std::collections::HashMap;

use rowsync_core::change::{conflict_id, encode_change};
use rowsync_core::RowState;
use rowsync_proto::{ConflictStrategy, Hlc, Schema, SiteId, Value, Version};

use super::{CheckedChange, StoreError};

/// A row identity: table index and the key as canonical JSON text (the form
/// `rowsync_rows.pk` stores).
pub type RowId = (usize, String);

/// One row of a batch, its incoming changes already merged together.
#[derive(Debug, Clone)]
pub struct IncomingRow {
    pub id: RowId,
    pub key: Vec<Value>,
    pub state: RowState,
    /// The index in the batch of the first change to this row.
    pub first: usize,
}

/// What the server holds of a row: its merged state, and its owner when
/// its table is private.
#[derive(Debug, Clone)]
pub struct Stored {
    pub state: RowState,
    pub owner: Option<String>,
}

/// Folds the changes above the site's high-water mark per row, in the order
/// rows first appear. Returns the rows and how many changes were not repeats.
pub fn fold_batch(changes: &[CheckedChange], hwm: u64) -> (Vec<IncomingRow>, u64) {
    let mut rows: Vec<IncomingRow> = Vec::new();
    let mut index: HashMap<RowId, usize> = HashMap::new();
    let mut applied = 0;
    for (first, checked) in changes.iter().enumerate().filter(|(_, c)| c.seq > hwm) {
        applied += 1;
        let change = &checked.change;
        let id = (change.table, change.key_json.clone());
        // Conflicts are the server's to record; a replica cannot push one.
        let mut state = change.state.clone();
        state.conflicts.clear();
        match index.get(&id) {
            Some(&i) => {
                rows[i].state.merge_from(&state);
            }
            None => {
                index.insert(id.clone(), rows.len());
                rows.push(IncomingRow { id, key: change.key.clone(), state, first });
            }
        }
    }
    (rows, applied)
}

/// A row to write: its merged state, the state's JSON, and its new position.
#[derive(Debug, Clone)]
pub struct RowWrite {
    pub id: RowId,
    pub key: Vec<Value>,
    pub state: RowState,
    pub state_json: String,
    pub position: i64,
    /// True when the merged state is exactly what the pushing site sent, so
    /// that site need not pull it back.
    pub echo: bool,
    /// The row's owner, in a private table.
    pub owner: Option<String>,
}

/// Merges each incoming row into its stored state and returns the rows that
/// changed, with positions after `last_position` in batch order. `user` is
/// the pushing token's: a private row held (or once held) by another user
/// refuses the whole batch, and the owner column of every private row it
/// writes holds `user`, whatever was sent.
pub fn plan_writes(
    schema: &Schema,
    incoming: Vec<IncomingRow>,
    stored: &mut HashMap<RowId, Stored>,
    last_position: i64,
    user: Option<&str>,
) -> Result<Vec<RowWrite>, StoreError> {
    let mut position = last_position;
    let mut writes = Vec::new();
    for row in incoming {
        let table = &schema.tables[row.id.0];
        let owner_column = table.owner.filter(|_| user.is_some());
        let stored_row = stored.remove(&row.id);
        if owner_column.is_some() && stored_row.as_ref().is_some_and(|s| s.owner.as_deref() != user) {
            return Err(StoreError::NotOwner { change: row.first });
        }
        let mut state = stored_row.map_or_else(|| RowState::empty(table.columns.len()), |s| s.state);
        let outcome = match table.conflict {
            ConflictStrategy::Manual => state.merge_manual(&row.state, |column, other| {
                conflict_id(&table.name, &row.id.1, &table.columns[column].name, other)
            }),
            _ => state.merge_from(&row.state),
        };
        if !outcome.changed {
            continue;
        }
        if table.conflict != ConflictStrategy::Manual {
            // Left over from a time the table was under the manual strategy.
            state.conflicts.clear();
        }
        if let (Some(column), Some(user)) = (owner_column, user) {
            claim(&mut state, column, user);
        }
        let echo = state.same_data(&row.state);
        position += 1;
        let state_json = serde_json::to_string(&encode_change(table, row.key.clone(), &state))
            .map_err(|e| StoreError::Database(e.to_string()))?;
        let owner = owner_column.and(user).map(str::to_string);
        writes.push(RowWrite { id: row.id, key: row.key, state, state_json, position, echo, owner });
    }
    Ok(writes)
}

/// Makes the owner cell of a private row hold `user`. A value the writer
/// sent instead is overwritten with a version just above it, written by the
/// server: the writer then pulls the correction, and any later write of its
/// own comes after it.
fn claim(state: &mut RowState, column: usize, user: &str) {
    let owner = Value::Text(user.to_string());
    if !state.is_visible() || state.cells[column].as_ref().is_some_and(|(value, _)| *value == owner) {
        return;
    }
    let below = state.cells[column].as_ref().map(|(_, v)| v).or(state.alive.as_ref()).map_or(0, |v| v.hlc.0);
    state.cells[column] = Some((owner, Version { hlc: Hlc(below + 1), site: SiteId::server() }));
}

/// The values of a visible row in table column order.
pub fn row_values(schema: &Schema, write: &RowWrite) -> Vec<Value> {
    write.state.row_values(&schema.tables[write.id.0], &write.key)
}

#[cfg(test)]
mod tests {
    use rowsync_core::change::decode_change;
    use rowsync_core::parse_schema;
    use rowsync_proto::{Cell, Hlc, RowChange, SiteId, Version};

    use super::*;

    fn change(seq: u64, name: &str, ms: u64) -> CheckedChange {
        let schema = parse_schema("CREATE TABLE t (id TEXT PRIMARY KEY, name TEXT);").unwrap();
        let version = Version { hlc: Hlc::from_millis(ms), site: SiteId::from_bytes([1; 16]) };
        let wire = RowChange {
            table: "t".into(),
            key: vec![Value::Text("k".into())],
            alive: Some(version.clone()),
            version: Some(version),
            deleted: None,
            cells: vec![Cell {
                column: "name".into(),
                value: Value::Text(name.into()),
                version: None,
                base: None,
                memory: None,
            }],
            conflicts: Vec::new(),
        };
        CheckedChange { seq, change: decode_change(&schema, &wire).unwrap() }
    }

    #[test]
    fn folds_repeats_of_a_row_and_skips_what_the_mark_covers() {
        let changes = [change(1, "old", 1), change(2, "mid", 2), change(3, "new", 3)];
        let (rows, applied) = fold_batch(&changes, 1);
        assert_eq!(applied, 2);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].state.cells[1].as_ref().unwrap().0, Value::Text("new".into()));
    }

    #[test]
    fn unchanged_rows_get_no_position() {
        let schema = parse_schema("CREATE TABLE t (id TEXT PRIMARY KEY, name TEXT);").unwrap();
        let (rows, _) = fold_batch(&[change(1, "a", 5)], 0);
        let mut stored = HashMap::new();
        stored.insert(rows[0].id.clone(), Stored { state: rows[0].state.clone(), owner: None });
        assert!(plan_writes(&schema, rows.clone(), &mut stored, 10, None).unwrap().is_empty());
        let writes = plan_writes(&schema, rows, &mut HashMap::new(), 10, None).unwrap();
        assert_eq!(writes[0].position, 11);
    }
}
