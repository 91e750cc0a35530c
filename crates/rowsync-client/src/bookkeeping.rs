//! The replica's bookkeeping tables (`_rowsync_meta`, `_rowsync_rows`,
//! `_rowsync_conflicts`, see `docs/internal-tables.md`): reading and writing
//! their values on a connection or transaction the caller holds. What the
//! values mean, and every decision made with them, lives elsewhere (in
//! `rowsync_core::clocks` for a row's versions); this module only stores.

use rowsync_core::change::{decode_conflict, encode_conflict};
use rowsync_core::clocks::{Clocks, LiveRows};
use rowsync_core::{CellConflict, Clock};
use rowsync_proto::{Conflict, Hlc, Table};
use rusqlite::types::{FromSql, Value as SqlValue};
use rusqlite::{params, Connection, OptionalExtension, ToSql};

use crate::error::ClientError;

/// Keys of `_rowsync_meta`.
pub(crate) mod key {
    /// The replica file format the file is in (see `replica::FORMAT`).
    pub const FORMAT: &str = "format";
    pub const SITE_ID: &str = "site_id";
    pub const SERVER_URL: &str = "server_url";
    pub const TOKEN: &str = "token";
    /// The certificates (PEM) trusted for the server's HTTPS instead of
    /// the system's roots.
    pub const CA_PEM: &str = "ca_pem";
    pub const SCHEMA: &str = "schema";
    pub const CURSOR: &str = "cursor";
    /// The download from the start under way, if any (see `rebuild`).
    pub const REBUILD: &str = "rebuild";
    /// The tombstone horizon's position when that download began.
    pub const DOWNLOAD_BEGAN: &str = "download_began";
    pub const CLOCK: &str = "clock";
    /// Site sequence number of an outbox entry = this offset + its id.
    pub const SEQ_OFFSET: &str = "seq_offset";
    pub const STAMPED_ID: &str = "stamped_id";
    /// The ids of this replica's push requests the server may have applied
    /// last (JSON array): its last acknowledged one and those sent since.
    pub const KNOWN_BATCHES: &str = "known_batches";
    /// The newest reading a re-stamped write must come after: received
    /// from the server, or held by it (this site's acknowledged writes, and
    /// writes re-stamped earlier); never one of this site's refused readings.
    pub const OBSERVED: &str = "observed_clock";
    pub const LAST_SYNC: &str = "last_sync";
    pub const LAST_ERROR: &str = "last_error";
    pub const LAST_ERROR_AT: &str = "last_error_at";
    pub const CLOCK_OFFSET_MS: &str = "clock_offset_ms";
}

pub(crate) fn meta_get<T: FromSql>(conn: &Connection, key: &str) -> Result<Option<T>, ClientError> {
    Ok(conn
        .prepare_cached("SELECT value FROM _rowsync_meta WHERE key = ?")?
        .query_row([key], |row| row.get(0))
        .optional()?)
}

pub(crate) fn meta_set(conn: &Connection, key: &str, value: impl ToSql) -> Result<(), ClientError> {
    conn.prepare_cached(
        "INSERT INTO _rowsync_meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )?
    .execute(params![key, value])?;
    Ok(())
}

/// This replica's requests the server may have applied last (`None` in a
/// file of an earlier version that has not pushed since).
pub(crate) fn known_batches(conn: &Connection) -> Result<Option<Vec<u64>>, ClientError> {
    meta_get::<String>(conn, key::KNOWN_BATCHES)?
        .map(|json| serde_json::from_str(&json).map_err(|e| ClientError::Corrupt(format!("known batches: {e}"))))
        .transpose()
}

pub(crate) fn set_known_batches(conn: &Connection, known: &[u64]) -> Result<(), ClientError> {
    meta_set(conn, key::KNOWN_BATCHES, serde_json::to_string(known).map_err(|e| ClientError::Corrupt(e.to_string()))?)
}

pub(crate) fn now_text(conn: &Connection) -> Result<String, ClientError> {
    Ok(conn.query_row("SELECT strftime('%Y-%m-%dT%H:%M:%fZ', 'now')", [], |row| row.get(0))?)
}

pub(crate) fn load_clocks(conn: &Connection, table_id: i64, key: &SqlValue) -> Result<Option<Clocks>, ClientError> {
    let json: Option<String> = conn
        .prepare_cached("SELECT clocks FROM _rowsync_rows WHERE tbl = ? AND pk = ?")?
        .query_row(params![table_id, key], |row| row.get(0))
        .optional()?;
    json.map(|j| read_clocks(&j)).transpose()
}

/// A row's clocks from their stored JSON.
pub(crate) fn read_clocks(json: &str) -> Result<Clocks, ClientError> {
    Clocks::from_json(json).map_err(|e| ClientError::Corrupt(format!("row clocks: {e}")))
}

pub(crate) fn save_clocks(
    conn: &Connection,
    table_id: i64,
    key: &SqlValue,
    clocks: &Clocks,
) -> Result<(), ClientError> {
    conn.prepare_cached(
        "INSERT INTO _rowsync_rows (tbl, pk, clocks) VALUES (?, ?, ?) ON CONFLICT (tbl, pk) DO UPDATE SET clocks = excluded.clocks",
    )?
    .execute(params![table_id, key, clocks.to_json()])?;
    Ok(())
}

pub(crate) fn load_clock(conn: &Connection) -> Result<Clock, ClientError> {
    Ok(Clock::new(Hlc(meta_get::<i64>(conn, key::CLOCK)?.unwrap_or(0) as u64)))
}

pub(crate) fn save_clock(conn: &Connection, clock: &Clock) -> Result<(), ClientError> {
    meta_set(conn, key::CLOCK, clock.last().0 as i64)
}

/// Adds the changes of `live` to `_rowsync_tables.live`.
pub(crate) fn save_live_rows(conn: &Connection, live: &LiveRows) -> Result<(), ClientError> {
    let mut update =
        conn.prepare_cached("UPDATE _rowsync_tables SET live = live + ? WHERE id = ? AND live IS NOT NULL")?;
    for (table_id, delta) in live.deltas() {
        update.execute(params![delta, table_id])?;
    }
    Ok(())
}

/// The stored open conflicts of one row.
pub(crate) fn load_conflicts(
    conn: &Connection,
    table_id: i64,
    key: &SqlValue,
    table: &Table,
) -> Result<Vec<CellConflict>, ClientError> {
    let mut statement = conn.prepare_cached("SELECT body FROM _rowsync_conflicts WHERE tbl = ? AND pk = ?")?;
    let bodies: Vec<String> =
        statement.query_map(params![table_id, key], |row| row.get(0))?.collect::<Result<_, _>>()?;
    bodies
        .iter()
        .map(|body| {
            let conflict: Conflict =
                serde_json::from_str(body).map_err(|e| ClientError::Corrupt(format!("stored conflict: {e}")))?;
            decode_conflict(table, conflict).map_err(|e| ClientError::Corrupt(format!("stored conflict: {e}")))
        })
        .collect()
}

/// Replaces the stored open conflicts of one row.
pub(crate) fn save_conflicts(
    conn: &Connection,
    table_id: i64,
    key: &SqlValue,
    table: &Table,
    conflicts: &[CellConflict],
) -> Result<(), ClientError> {
    conn.prepare_cached("DELETE FROM _rowsync_conflicts WHERE tbl = ? AND pk = ?")?.execute(params![table_id, key])?;
    let mut insert =
        conn.prepare_cached("INSERT INTO _rowsync_conflicts (id, tbl, pk, col, body) VALUES (?, ?, ?, ?, ?)")?;
    for conflict in conflicts {
        let wire = encode_conflict(table, conflict);
        let body = serde_json::to_string(&wire).map_err(|e| ClientError::Corrupt(e.to_string()))?;
        insert.execute(params![wire.id, table_id, key, wire.column, body])?;
    }
    Ok(())
}

/// Drops the conflicts on `columns` of one row (a local write settled them).
pub(crate) fn close_conflicts(
    conn: &Connection,
    table_id: i64,
    key: &SqlValue,
    table: &Table,
    columns: &[usize],
) -> Result<(), ClientError> {
    let mut delete = conn.prepare_cached("DELETE FROM _rowsync_conflicts WHERE tbl = ? AND pk = ? AND col = ?")?;
    for &index in columns {
        delete.execute(params![table_id, key, table.columns[index].name])?;
    }
    Ok(())
}
