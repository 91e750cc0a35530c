//! A replica's bookkeeping of one row: the version of each of its cells,
//! of its creation and of its deletion, and which local writes are still
//! waiting for the server, as `_rowsync_rows.clocks` stores them (JSON).
//!
//! Recording a local write ([`Clocks::record_write`]) and reading the row's
//! visibility are pure; the client loads and saves these values around them.

use std::collections::{BTreeMap, HashMap};

use rowsync_proto::{ConflictStrategy, Table, Value, Version};
use serde::{Deserialize, Serialize};

use crate::capture::{changed_columns, OP_DELETE, OP_INSERT};
use crate::merge::RowState;

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
        crate::merge::visible(newest, self.deleted.as_ref())
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

    /// Records the versions of one local write (`op` and change `bits` as
    /// the capture triggers record them, `seq` its site sequence number);
    /// returns the columns it wrote (every column for a delete).
    pub fn record_write(&mut self, table: &Table, op: i64, bits: i64, version: Version, seq: i64) -> Vec<usize> {
        let clocks = self;
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
}

/// Milliseconds since the Unix epoch of a `julianday()` reading.
pub fn julian_to_millis(julian: f64) -> u64 {
    ((julian - 2_440_587.5) * 86_400_000.0).round().max(0.0) as u64
}

/// Changes to the number of rows rowsync believes each table holds (kept in
/// `_rowsync_tables.live`, compared with the table's own count to notice
/// deletes no trigger saw; see the client's `audit`).
#[derive(Debug, Default)]
pub struct LiveRows(HashMap<i64, i64>);

impl LiveRows {
    /// A row of table `table_id` went from visible or not to visible or not.
    pub fn moved(&mut self, table_id: i64, was: bool, is: bool) {
        if was != is {
            *self.0.entry(table_id).or_default() += if is { 1 } else { -1 };
        }
    }

    /// The non-zero changes, by table id.
    pub fn deltas(&self) -> impl Iterator<Item = (i64, i64)> + '_ {
        self.0.iter().map(|(&table, &delta)| (table, delta)).filter(|(_, delta)| *delta != 0)
    }
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
