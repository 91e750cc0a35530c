//! Open conflicts of tables under the manual strategy, and resolving them.
//!
//! The server records a conflict inside the state of its row, so a replica
//! receives it with the row like any other part of it. The replica keeps the
//! open conflicts of its rows in `_rowsync_conflicts` (the wire form, as
//! JSON), rewritten whenever a pulled state of the row is applied.
//!
//! Resolving is an ordinary local write of the column in conflict, queued
//! even when it keeps the value the row already shows, and made with the
//! conflict in view: the server applies it over the version the conflict
//! hangs on, which closes the conflict on every replica as the write syncs.
//! Any other local write to that column settles it the same way.

use rowsync_core::capture::{OP_UPDATE, OVERFLOW_BIT};
use rowsync_core::change::check_value;
use rowsync_core::ddl::{update_columns, Dialect};
use rowsync_proto::{Conflict, ConflictStrategy, Table, Value, Version, Written};
use rusqlite::types::Value as SqlValue;
use rusqlite::{params, Connection, Transaction, TransactionBehavior};
use serde::Serialize;

use crate::error::ClientError;
use crate::replica::Replica;
use crate::stamp::{stamp_all, stamp_rest};
use crate::values::{key_values, to_sql};

/// An open conflict as this replica sees it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OpenConflict {
    /// The conflict's id; `resolve` accepts any unambiguous prefix of it.
    pub id: String,
    pub table: String,
    /// The row's primary key values.
    pub key: Vec<Value>,
    pub column: String,
    /// This replica's side: its own write when it made one of the two, else
    /// the value the row shows (the one the server kept).
    pub local: Written,
    /// The other side.
    pub remote: Written,
    /// The version the refused write was made over (`None`: it had seen no
    /// value).
    pub base: Option<Version>,
    /// The base's value, when the server still knew it.
    pub base_value: Option<Value>,
    /// Which side the row shows until the conflict is resolved.
    pub shown: Side,
}

/// One side of a conflict, from this replica's point of view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Local,
    Remote,
}

/// How to resolve a conflict.
#[derive(Clone, Debug, PartialEq)]
pub enum Resolution {
    /// Keep this replica's side.
    Keep(Side),
    /// Write these values (by column name); the column in conflict must be
    /// among them, other columns of the row may be too.
    Set(Vec<(String, Value)>),
}

impl Replica {
    /// The open conflicts of this replica, by table, row and column. Local
    /// writes are stamped first, so a conflict the app has settled by
    /// writing the column is no longer listed.
    pub fn conflicts(&self) -> Result<Vec<OpenConflict>, ClientError> {
        stamp_all(self)?;
        let mut statement =
            self.conn.prepare("SELECT tbl, pk, body FROM _rowsync_conflicts ORDER BY tbl, pk, col, id")?;
        let rows: Vec<(i64, SqlValue, String)> =
            statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?.collect::<Result<_, _>>()?;
        rows.into_iter().map(|(table_id, key, body)| self.open_conflict(table_id, &key, &body)).collect()
    }

    fn open_conflict(&self, table_id: i64, key: &SqlValue, body: &str) -> Result<OpenConflict, ClientError> {
        let index = *self
            .table_index
            .get(&table_id)
            .ok_or_else(|| ClientError::Corrupt(format!("a conflict names unknown table id {table_id}")))?;
        let table = &self.schema.tables[index];
        let conflict: Conflict =
            serde_json::from_str(body).map_err(|e| ClientError::Corrupt(format!("stored conflict: {e}")))?;
        let mine = conflict.other.version.site == self.site;
        let (local, remote, shown) = if mine {
            (conflict.other, conflict.kept, Side::Remote)
        } else {
            (conflict.kept, conflict.other, Side::Local)
        };
        Ok(OpenConflict {
            id: conflict.id,
            table: table.name.clone(),
            key: key_values(table, key)?,
            column: conflict.column,
            local,
            remote,
            base: conflict.base,
            base_value: conflict.base_value,
            shown,
        })
    }

    /// The open conflict `id` names (an unambiguous prefix of at least 4
    /// hex digits will do), as `resolve` would find it.
    pub fn find_conflict(&self, id: &str) -> Result<OpenConflict, ClientError> {
        stamp_all(self)?;
        Ok(self.lookup(&self.conn, id)?.2)
    }

    fn lookup(&self, conn: &Connection, id: &str) -> Result<(i64, SqlValue, OpenConflict), ClientError> {
        let bad = |message: String| ClientError::BadResolution(message);
        if id.len() < 4 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad(format!(
                "{id:?} is not a conflict id (at least 4 hex digits; `rowsync conflicts` lists them)"
            )));
        }
        let matches: Vec<(i64, SqlValue, String)> = conn
            .prepare("SELECT tbl, pk, body FROM _rowsync_conflicts WHERE id LIKE ? || '%'")?
            .query_map([id.to_ascii_lowercase()], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?
            .collect::<Result<_, _>>()?;
        match matches.as_slice() {
            [] => Err(bad(format!("no open conflict {id} in {} (`rowsync conflicts` lists them)", self.path))),
            [(table_id, stored_key, body)] => {
                Ok((*table_id, stored_key.clone(), self.open_conflict(*table_id, stored_key, body)?))
            }
            _ => Err(bad(format!("{id} names {} conflicts: give more of the id", matches.len()))),
        }
    }

    /// Resolves the open conflict `id` (or an unambiguous prefix of it) with
    /// an ordinary local write, which the next sync sends everywhere; the
    /// conflict closes here at once. Returns the conflict as it was.
    pub fn resolve(&self, id: &str, resolution: &Resolution) -> Result<OpenConflict, ClientError> {
        let bad = |message: String| ClientError::BadResolution(message);
        let tx = Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)?;
        // Writes made since the last stamping may have settled it already.
        stamp_rest(self, &tx)?;
        let (table_id, stored_key, conflict) = self.lookup(&tx, id)?;
        let index = self.table_index[&table_id];
        let table = &self.schema.tables[index];
        if table.conflict != ConflictStrategy::Manual {
            return Err(bad(format!("table {} is no longer under the manual strategy", table.name)));
        }
        let column = table.column_index(&conflict.column).ok_or_else(|| {
            ClientError::Corrupt(format!("conflict {} names unknown column {}", conflict.id, conflict.column))
        })?;
        let values: Vec<(usize, Value)> = match resolution {
            Resolution::Keep(Side::Local) => vec![(column, conflict.local.value.clone())],
            Resolution::Keep(Side::Remote) => vec![(column, conflict.remote.value.clone())],
            Resolution::Set(pairs) => checked_values(table, &conflict.column, pairs)?,
        };

        let columns: Vec<usize> = values.iter().map(|(i, _)| *i).collect();
        let sql = update_columns(table, Dialect::Sqlite, &columns);
        let mut params: Vec<SqlValue> = values.iter().map(|(_, v)| to_sql(v)).collect();
        params.extend(conflict.key.iter().map(to_sql));
        if tx.execute(&sql, rusqlite::params_from_iter(params))? == 0 {
            return Err(bad(format!("the row of conflict {} no longer exists here", conflict.id)));
        }
        // Queued even when the values did not change (keeping the shown side):
        // the server must learn that the conflict was seen and settled.
        let bits = values.iter().fold(0i64, |bits, (i, _)| bits | 1i64 << (*i).min(OVERFLOW_BIT));
        tx.execute(
            "INSERT INTO _rowsync_outbox (tbl, pk, op, at, cols) VALUES (?, ?, ?, julianday('now'), ?)",
            params![table_id, stored_key, OP_UPDATE, bits],
        )?;
        stamp_rest(self, &tx)?;
        tx.commit()?;
        Ok(conflict)
    }
}

/// The values of a `Set` resolution, checked against the table.
fn checked_values(
    table: &Table,
    in_conflict: &str,
    pairs: &[(String, Value)],
) -> Result<Vec<(usize, Value)>, ClientError> {
    let bad = |message: String| ClientError::BadResolution(message);
    let mut values: Vec<(usize, Value)> = Vec::new();
    for (name, value) in pairs {
        let index =
            table.column_index(name).ok_or_else(|| bad(format!("table {} has no column {name}", table.name)))?;
        if table.is_key_column(index) {
            return Err(bad(format!("{name} is part of the key of {} and cannot be set here", table.name)));
        }
        if values.iter().any(|(i, _)| *i == index) {
            return Err(bad(format!("column {name} is given twice")));
        }
        let value = check_value(table, index, value.clone()).map_err(|e| bad(e.to_string()))?;
        values.push((index, value));
    }
    if !pairs.iter().any(|(name, _)| name == in_conflict) {
        return Err(bad(format!("give a value for {in_conflict}, the column in conflict")));
    }
    Ok(values)
}
