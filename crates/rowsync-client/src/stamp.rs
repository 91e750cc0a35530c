//! Stamping: giving recorded writes their versions.
//!
//! The capture triggers record only the wall time of a write. Stamping walks
//! the new outbox entries in the order they were written, gives each one a
//! hybrid clock reading from that time (the clock's send rule), and records
//! the new versions of the touched columns in `_rowsync_rows`. (An entry's
//! site sequence number needs no writing: it is its id plus a fixed offset,
//! and ids never repeat, see `outbox::acknowledge`.)
//!
//! Stamping always runs before a pulled page is applied, in the same
//! transaction, so a write made before a remote change was received is
//! versioned before the clock observes that change: a stale local edit can
//! never outrank a newer remote one just because it was pushed later.

use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use rowsync_core::capture::{changed_columns, OP_DELETE, OP_INSERT, OP_SET_ASIDE};
use rowsync_core::{Clock, RowState};
use rowsync_proto::{ConflictStrategy, Hlc, Table, Value, Version};
use rusqlite::types::Value as SqlValue;
use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::error::ClientError;
use crate::replica::{key, meta_get, meta_set, Replica};
use crate::values::key_token;

/// The versions of one row as `_rowsync_rows.clocks` stores them.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Clocks {
    #[serde(rename = "a", default, skip_serializing_if = "Option::is_none")]
    pub alive: Option<Version>,
    #[serde(rename = "d", default, skip_serializing_if = "Option::is_none")]
    pub deleted: Option<Version>,
    /// Indexed like the table's columns.
    #[serde(rename = "c", default)]
    pub cells: Vec<Option<Version>>,
    /// Manual tables only: the columns written here and not yet
    /// acknowledged by the server, each with the version it was written over
    /// (what the server compares to tell an edit from a concurrent one).
    #[serde(rename = "p", default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pending: BTreeMap<usize, Pending>,
    /// Local writes displaced before they could be pushed, pushed in their
    /// place. Manual tables: pending writes a newer pulled value displaced
    /// from the row, so that the server can record the conflict. Any table:
    /// the whole row, when a pulled delete removed it while it had writes
    /// not pushed yet (so those writes still reach the server).
    #[serde(rename = "h", default, skip_serializing_if = "BTreeMap::is_empty")]
    pub held: BTreeMap<usize, (Value, Version)>,
}

/// A local write of a manual table's column not yet acknowledged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pending {
    /// The version of the cell the first such write was made over.
    #[serde(rename = "b")]
    pub base: Option<Version>,
    /// The site sequence number of the newest such write: once the server
    /// acknowledges it, the column is no longer pending. (A batch may carry
    /// a value written after its last entry, read at push time; that does
    /// not settle it.)
    #[serde(rename = "s")]
    pub seq: i64,
}

impl Clocks {
    /// A row state with these versions and placeholder values; merging only
    /// looks at versions.
    pub fn to_state(&self, width: usize) -> RowState {
        let mut cells: Vec<Option<(Value, Version)>> =
            self.cells.iter().map(|c| c.as_ref().map(|v| (Value::Null, v.clone()))).collect();
        cells.resize(width, None);
        RowState { alive: self.alive.clone(), deleted: self.deleted.clone(), cells, ..RowState::default() }
    }

    /// Whether the row these versions describe exists (the rule of
    /// `RowState::is_visible`, without building a state).
    pub fn is_visible(&self) -> bool {
        let newest = self.cells.iter().flatten().chain(self.alive.as_ref()).max();
        rowsync_core::merge::visible(newest, self.deleted.as_ref())
    }

    /// The versions of a state. A replica forgets the cell versions of a row
    /// it cannot see: it holds no values for them, and the server sends the
    /// whole row again if the row ever comes back.
    pub fn from_state(state: &RowState) -> Clocks {
        let visible = state.is_visible();
        Clocks {
            alive: state.alive.clone(),
            deleted: state.deleted.clone(),
            cells: if visible {
                state.cells.iter().map(|c| c.as_ref().map(|(_, v)| v.clone())).collect()
            } else {
                Vec::new()
            },
            ..Clocks::default()
        }
    }
}

pub(crate) fn load_clocks(conn: &Connection, table_id: i64, key: &SqlValue) -> Result<Option<Clocks>, ClientError> {
    let json: Option<String> = conn
        .prepare_cached("SELECT clocks FROM _rowsync_rows WHERE tbl = ? AND pk = ?")?
        .query_row(params![table_id, key], |row| row.get(0))
        .optional()?;
    json.map(|j| serde_json::from_str(&j).map_err(|e| ClientError::Corrupt(format!("row clocks: {e}")))).transpose()
}

pub(crate) fn save_clocks(
    conn: &Connection,
    table_id: i64,
    key: &SqlValue,
    clocks: &Clocks,
) -> Result<(), ClientError> {
    let json = serde_json::to_string(clocks).map_err(|e| ClientError::Corrupt(e.to_string()))?;
    conn.prepare_cached(
        "INSERT INTO _rowsync_rows (tbl, pk, clocks) VALUES (?, ?, ?) ON CONFLICT (tbl, pk) DO UPDATE SET clocks = excluded.clocks",
    )?
    .execute(params![table_id, key, json])?;
    Ok(())
}

pub(crate) fn load_clock(conn: &Connection) -> Result<Clock, ClientError> {
    Ok(Clock::new(Hlc(meta_get::<i64>(conn, key::CLOCK)?.unwrap_or(0) as u64)))
}

pub(crate) fn save_clock(conn: &Connection, clock: &Clock) -> Result<(), ClientError> {
    meta_set(conn, key::CLOCK, clock.last().0 as i64)
}

/// Milliseconds since the Unix epoch of a `julianday()` reading.
pub(crate) fn julian_to_millis(julian: f64) -> u64 {
    ((julian - 2_440_587.5) * 86_400_000.0).round().max(0.0) as u64
}

/// Outbox entries stamped per transaction.
pub const STAMP_CHUNK: usize = 10_000;

/// Stamps every unstamped outbox entry on the caller's transaction.
pub(crate) fn stamp_rest(replica: &Replica, conn: &Connection) -> Result<(), ClientError> {
    while stamp_pending(replica, conn, STAMP_CHUNK)? > 0 {}
    Ok(())
}

/// Stamps at most `limit` unstamped outbox entries, oldest first, on the
/// caller's transaction. Returns how many were stamped.
pub fn stamp_pending(replica: &Replica, conn: &Connection, limit: usize) -> Result<usize, ClientError> {
    let stamped_id: i64 = meta_get(conn, key::STAMPED_ID)?.unwrap_or(0);
    let offset: i64 = meta_get(conn, key::CLOCK_OFFSET_MS)?.unwrap_or(0);
    let seq_offset: i64 = meta_get(conn, key::SEQ_OFFSET)?.unwrap_or(0);
    let mut clock = load_clock(conn)?;
    let mut select =
        conn.prepare_cached("SELECT id, tbl, pk, op, at, cols FROM _rowsync_outbox WHERE id > ? ORDER BY id LIMIT ?")?;
    let entries: Vec<(i64, i64, SqlValue, i64, f64, i64)> = select
        .query_map(params![stamped_id, limit as i64], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?))
        })?
        .collect::<Result<_, _>>()?;
    let Some(last_id) = entries.last().map(|e| e.0) else { return Ok(0) };

    let mut touched: HashMap<(i64, String), Touched> = HashMap::new();
    for (id, table_id, stored_key, op, at, bits) in entries.iter().filter(|e| e.3 != OP_SET_ASIDE) {
        let table_index = *replica
            .table_index
            .get(table_id)
            .ok_or_else(|| ClientError::Corrupt(format!("outbox entry {id} names unknown table id {table_id}")))?;
        let table = &replica.schema.tables[table_index];
        let hlc = clock.tick(julian_to_millis(*at).saturating_add_signed(offset));
        let Touched { clocks, written, .. } = match touched.entry(key_token(*table_id, stored_key)) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(entry) => {
                let clocks = load_clocks(conn, *table_id, stored_key)?.unwrap_or_default();
                let was_visible = clocks.is_visible();
                entry.insert(Touched { key: stored_key.clone(), clocks, written: BTreeSet::new(), was_visible })
            }
        };
        let version = Version { hlc, site: replica.site.clone() };
        let columns = stamp_one(table, clocks, *op, *bits, version, seq_offset + id);
        if table.conflict == ConflictStrategy::Manual {
            written.extend(columns);
        }
    }
    let mut live = LiveRows::default();
    for ((table_id, _), Touched { key: stored_key, clocks, written, was_visible }) in &touched {
        live.moved(*table_id, *was_visible, clocks.is_visible());
        save_clocks(conn, *table_id, stored_key, clocks)?;
        if !written.is_empty() {
            // The server closes them when the writes arrive.
            let table = &replica.schema.tables[replica.table_index[table_id]];
            let written: Vec<usize> = written.iter().copied().collect();
            crate::conflicts::close(conn, *table_id, stored_key, table, &written)?;
        }
    }
    live.save(conn)?;
    save_clock(conn, &clock)?;
    meta_set(conn, key::STAMPED_ID, last_id)?;
    Ok(entries.len())
}

/// Changes to the number of rows rowsync believes each table holds (kept in
/// `_rowsync_tables.live`, compared with the table's own count to notice
/// deletes no trigger saw; see `audit`).
#[derive(Debug, Default)]
pub(crate) struct LiveRows(HashMap<i64, i64>);

impl LiveRows {
    /// A row of table `table_id` went from visible or not to visible or not.
    pub fn moved(&mut self, table_id: i64, was: bool, is: bool) {
        if was != is {
            *self.0.entry(table_id).or_default() += if is { 1 } else { -1 };
        }
    }

    pub fn save(self, conn: &Connection) -> Result<(), ClientError> {
        let mut update =
            conn.prepare_cached("UPDATE _rowsync_tables SET live = live + ? WHERE id = ? AND live IS NOT NULL")?;
        for (table_id, delta) in self.0.into_iter().filter(|(_, delta)| *delta != 0) {
            update.execute(params![delta, table_id])?;
        }
        Ok(())
    }
}

/// A row touched by the entries being stamped.
struct Touched {
    key: SqlValue,
    clocks: Clocks,
    /// Manual tables: the columns written, whose open conflicts the writes
    /// settle here.
    written: BTreeSet<usize>,
    /// Whether the row was visible before these entries.
    was_visible: bool,
}

/// Records the versions of one write; returns the columns it wrote (every
/// column for a delete).
fn stamp_one(table: &Table, clocks: &mut Clocks, op: i64, bits: i64, version: Version, seq: i64) -> Vec<usize> {
    let width = table.columns.len();
    let was_visible = clocks.is_visible();
    if op == OP_DELETE {
        clocks.deleted = Some(version);
        clocks.cells.clear();
        clocks.pending.clear();
        clocks.held.clear();
        return (0..width).collect();
    }
    clocks.cells.resize(width, None);
    if !was_visible && table.conflict != ConflictStrategy::Manual {
        // Writes held when a pull deleted the row: this write replaces the
        // whole row.
        clocks.held.clear();
    }
    // An update of a row rowsync has no versions for (or that it believed
    // deleted) is treated as writing the whole row.
    // Under the row strategy every write writes the whole row.
    let whole_row = op == OP_INSERT || !was_visible || table.conflict == ConflictStrategy::Row;
    let columns = if whole_row { changed_columns(table, OP_INSERT, -1) } else { changed_columns(table, op, bits) };
    if op == OP_INSERT || !was_visible {
        clocks.alive = Some(version.clone());
    }
    let manual = table.conflict == ConflictStrategy::Manual;
    for &index in &columns {
        let over = clocks.cells[index].replace(version.clone());
        if manual {
            // The first write since the last push holds the base; a write over
            // a pulled value that displaced a held one is made with the pulled
            // value in view, and replaces the held write.
            if clocks.held.remove(&index).is_some() {
                clocks.pending.insert(index, Pending { base: over, seq });
            } else {
                clocks.pending.entry(index).or_insert(Pending { base: over, seq }).seq = seq;
            }
        }
    }
    columns
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn julian_days_convert_to_unix_millis() {
        assert_eq!(julian_to_millis(2_440_587.5), 0);
        assert_eq!(julian_to_millis(2_440_588.5), 86_400_000);
    }
}
