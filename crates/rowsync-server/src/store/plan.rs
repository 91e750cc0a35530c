//! The pure part of applying a push, shared by every store: fold the batch
//! per row, merge with what is stored, and decide what to write. Stores only
//! load the stored states and carry out the writes, in as few statements as
//! their dialect allows.

use std::collections::HashMap;

use rowsync_core::change::{conflict_id, encode_change};
use rowsync_core::horizon::{forgotten, Horizon};
use rowsync_core::schema::column_default;
use rowsync_core::RowState;
use rowsync_proto::{ConflictStrategy, Hlc, Schema, SiteId, Table, Value, Version};

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
    /// See [`CheckedChange::whole_row`].
    pub whole_row: bool,
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
                let whole_row = checked.whole_row;
                rows.push(IncomingRow { id, key: change.key.clone(), state, first, whole_row });
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
    /// Whether the server held nothing of the row before (no state, not
    /// even a delete): a store may then insert it without looking for a
    /// row under its key (PostgreSQL copies such rows in, see
    /// `store::postgres`).
    pub fresh: bool,
}

/// An insert that met another row under its key: a visible row with other
/// values, or a newer delete that hides it. Two writers that number rows
/// themselves (AUTOINCREMENT) meet like this; the merge keeps one outcome
/// by the table's rule, and this record is how the other is not lost
/// silently (the server logs and counts it).
#[derive(Debug, Clone, PartialEq)]
pub struct Collision {
    pub table: String,
    pub key_json: String,
    /// The row the server held (`None`: deleted by a newer delete).
    pub held: Option<Vec<Value>>,
    /// The row the insert brought.
    pub sent: Vec<Value>,
    /// The row kept (`None`: deleted).
    pub kept: Option<Vec<Value>>,
}

/// What a push writes, and the inserts that met another row.
#[derive(Debug, Default)]
pub struct Planned {
    pub writes: Vec<RowWrite>,
    pub collisions: Vec<Collision>,
}

/// Merges each incoming row into its stored state and returns the rows that
/// changed, with positions after `last_position` in batch order. `user` is
/// the pushing token's: a private row held (or once held) by another user
/// refuses the whole batch, and the owner column of every private row it
/// writes holds `user`, whatever was sent. A row the server forgot behind
/// `horizon`, revived by writes no newer than its delete may have been,
/// refuses the batch too (see [`rowsync_core::horizon`]).
pub fn plan_writes(
    schema: &Schema,
    incoming: Vec<IncomingRow>,
    stored: &mut HashMap<RowId, Stored>,
    last_position: i64,
    user: Option<&str>,
    horizon: &Horizon,
) -> Result<Planned, StoreError> {
    let mut position = last_position;
    let mut planned = Planned::default();
    for mut row in incoming {
        let table = &schema.tables[row.id.0];
        let owner_column = table.owner.filter(|_| user.is_some());
        let stored_row = stored.remove(&row.id);
        if owner_column.is_some() && stored_row.as_ref().is_some_and(|s| s.owner.as_deref() != user) {
            return Err(StoreError::NotOwner { change: row.first });
        }
        if stored_row.is_none() && forgotten(horizon, &row.state) {
            return Err(StoreError::Forgotten { change: row.first });
        }
        let fresh = stored_row.is_none();
        let held = stored_row.as_ref().map(|s| &s.state);
        let collision = held.filter(|held| meets_another_row(table, &row.state, held)).map(|held| Collision {
            table: table.name.clone(),
            key_json: row.id.1.clone(),
            held: held.is_visible().then(|| held.row_values(table, &row.key)),
            sent: row.state.row_values(table, &row.key),
            kept: None,
        });
        if let Some(held) = held.filter(|held| row.whole_row && held.is_visible()) {
            keep_unchanged_columns(table, &mut row.state, held);
        }
        let mut state = stored_row.map_or_else(|| RowState::empty(table.columns.len()), |s| s.state);
        let outcome = match table.conflict {
            ConflictStrategy::Manual => state.merge_manual(&row.state, |column, other| {
                conflict_id(&table.name, &row.id.1, &table.columns[column].name, other)
            }),
            _ => state.merge_from(&row.state),
        };
        if let Some(mut collision) = collision {
            collision.kept = state.is_visible().then(|| state.row_values(table, &row.key));
            planned.collisions.push(collision);
        }
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
        planned.writes.push(RowWrite { id: row.id, key: row.key, state, state_json, position, echo, owner, fresh });
    }
    Ok(planned)
}

/// Whether `incoming` inserts a row over another one under its key: `held`
/// is visible with other values (key and owner columns aside), or `held`
/// was deleted after this insert was made. A repeat of the insert that made
/// `held`, or a device inserting again over its own row (a REPLACE), is
/// not one.
fn meets_another_row(table: &Table, incoming: &RowState, held: &RowState) -> bool {
    let Some(alive) = &incoming.alive else { return false };
    if held.alive.as_ref().is_some_and(|held| held.site == alive.site) {
        return false;
    }
    if !held.is_visible() {
        return held.deleted.as_ref().is_some_and(|deleted| deleted > alive);
    }
    (0..table.columns.len()).filter(|c| !table.primary_key.contains(c) && Some(*c) != table.owner).any(|c| {
        match (&incoming.cells[c], &held.cells[c]) {
            (Some((sent, _)), Some((had, _))) => sent != had,
            (Some((sent, _)), None) => *sent != Value::Null,
            (None, _) => false,
        }
    })
}

/// Drops the cells of a whole-row change that equal the visible stored
/// row's, so those columns keep their stored versions and only the columns
/// the writer changed take its version. A column the stored row holds no
/// write of (added to the schema after the row was written) holds its
/// default. Under the row strategy the row is one unit and is left whole.
fn keep_unchanged_columns(table: &Table, incoming: &mut RowState, held: &RowState) {
    if table.conflict == ConflictStrategy::Row {
        return;
    }
    for (index, (cell, stored)) in incoming.cells.iter_mut().zip(&held.cells).enumerate() {
        let unchanged = match (cell.as_ref(), stored) {
            (Some((sent, _)), Some((had, _))) => sent == had,
            (Some((sent, _)), None) => *sent == column_default(&table.columns[index]),
            (None, _) => false,
        };
        if unchanged {
            *cell = None;
        }
    }
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
        CheckedChange { seq, change: decode_change(&schema, wire).unwrap(), whole_row: false }
    }

    #[test]
    fn folds_repeats_of_a_row_and_skips_what_the_mark_covers() {
        let changes = [change(1, "old", 1), change(2, "mid", 2), change(3, "new", 3)];
        let (rows, applied) = fold_batch(&changes, 1);
        assert_eq!(applied, 2);
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].state.cells[1].as_ref().unwrap().0, Value::Text("new".into()));
    }

    /// A change of `t` from `site` (a byte) at `ms`: an insert, or an
    /// update of the whole row.
    fn whole(site: u8, ms: u64, insert: bool, name: &str, phone: &str) -> CheckedChange {
        let schema = parse_schema("CREATE TABLE t (id TEXT PRIMARY KEY, name TEXT, phone TEXT);").unwrap();
        let version = Version { hlc: Hlc::from_millis(ms), site: SiteId::from_bytes([site; 16]) };
        let cell = |column: &str, value: &str| Cell {
            column: column.into(),
            value: Value::Text(value.into()),
            version: None,
            base: None,
            memory: None,
        };
        let wire = RowChange {
            table: "t".into(),
            key: vec![Value::Text("k".into())],
            alive: insert.then(|| version.clone()),
            version: Some(version),
            deleted: None,
            cells: vec![cell("name", name), cell("phone", phone)],
            conflicts: Vec::new(),
        };
        CheckedChange { seq: 1, change: decode_change(&schema, wire).unwrap(), whole_row: true }
    }

    /// Plans `change` over `held` (a previous plan's outcome).
    fn plan_over(held: Option<&RowState>, change: CheckedChange) -> (Planned, RowState) {
        let schema = parse_schema("CREATE TABLE t (id TEXT PRIMARY KEY, name TEXT, phone TEXT);").unwrap();
        let (rows, _) = fold_batch(&[change], 0);
        let mut stored = HashMap::new();
        if let Some(held) = held {
            stored.insert(rows[0].id.clone(), Stored { state: held.clone(), owner: None });
        }
        let planned = plan_writes(&schema, rows, &mut stored, 0, None, &Horizon::default()).unwrap();
        let state = planned.writes.first().map_or_else(|| held.unwrap().clone(), |w| w.state.clone());
        (planned, state)
    }

    #[test]
    fn a_whole_row_change_writes_only_the_columns_that_differ() {
        let (_, held) = plan_over(None, whole(1, 10, true, "Ada", "1"));
        // Site 2 changed the phone at 20, site 3 (stale phone) the name at 15.
        let (_, held) = plan_over(Some(&held), whole(2, 20, false, "Ada", "2"));
        let (planned, row) = plan_over(Some(&held), whole(3, 15, false, "Ada L", "1"));
        assert_eq!(planned.writes.len(), 1);
        let values: Vec<&Value> = row.cells.iter().flatten().map(|(v, _)| v).collect();
        assert_eq!(values, [&Value::Text("Ada L".into()), &Value::Text("2".into())], "both edits kept");
        // The same change again (an answer lost) writes nothing.
        let (again, _) = plan_over(Some(&row), whole(3, 15, false, "Ada L", "1"));
        assert!(again.writes.is_empty());
    }

    #[test]
    fn an_insert_over_another_writers_row_is_a_collision_and_a_repeat_is_not() {
        let (first, held) = plan_over(None, whole(1, 10, true, "Anne", "1"));
        assert!(first.collisions.is_empty());
        assert!(first.writes[0].fresh, "the server held nothing of the row");
        let (planned, kept) = plan_over(Some(&held), whole(2, 20, true, "Ben", "1"));
        assert!(!planned.writes[0].fresh, "the server held the row");
        assert_eq!(planned.collisions.len(), 1);
        let collision = &planned.collisions[0];
        assert_eq!(collision.held.as_ref().unwrap()[1], Value::Text("Anne".into()));
        assert_eq!(collision.sent[1], Value::Text("Ben".into()));
        assert_eq!(collision.kept.as_ref().unwrap()[1], Value::Text("Ben".into()), "the later insert wins");
        // An older insert loses, and is still reported.
        let (older, _) = plan_over(Some(&kept), whole(3, 5, true, "Cy", "1"));
        assert_eq!(older.collisions.len(), 1);
        assert!(older.writes.is_empty());
        assert_eq!(older.collisions[0].kept.as_ref().unwrap()[1], Value::Text("Ben".into()));
        // A repeat, or the same device inserting again over its own row, is not.
        assert!(plan_over(Some(&kept), whole(2, 20, true, "Ben", "1")).0.collisions.is_empty());
        assert!(plan_over(Some(&kept), whole(2, 30, true, "Benjamin", "1")).0.collisions.is_empty());
    }

    #[test]
    fn unchanged_rows_get_no_position() {
        let schema = parse_schema("CREATE TABLE t (id TEXT PRIMARY KEY, name TEXT);").unwrap();
        let (rows, _) = fold_batch(&[change(1, "a", 5)], 0);
        let mut stored = HashMap::new();
        stored.insert(rows[0].id.clone(), Stored { state: rows[0].state.clone(), owner: None });
        assert!(plan_writes(&schema, rows.clone(), &mut stored, 10, None, &Horizon::default())
            .unwrap()
            .writes
            .is_empty());
        let writes = plan_writes(&schema, rows, &mut HashMap::new(), 10, None, &Horizon::default()).unwrap().writes;
        assert_eq!(writes[0].position, 11);
    }
}
