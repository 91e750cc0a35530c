//! Downloading everything again, and reconciling what the replica holds
//! with it.
//!
//! Two things send a replica back to the start of the server's log with
//! rows already in its file: a cursor the server no longer serves, because
//! deletes after it were forgotten behind the tombstone horizon (see
//! [`rowsync_core::horizon`]), and a new identity taken by a copied file
//! (see [`crate::recover`]). A full download brings every row the server
//! has, but says nothing of the rows it no longer has at all. So while it
//! runs, the keys it brings are noted in `_rowsync_seen`; when it reaches
//! the end, a row rowsync knows of that the download did not bring, and
//! that holds no write of this replica waiting to be pushed (or set aside
//! after a refusal), was deleted on the server: it is deleted here too.
//! Rows with writes waiting stay, and their push decides: the server
//! refuses those no newer than a forgotten delete may have been.
//!
//! Each page notes its keys in its own transaction, and the reconciling
//! happens in the last page's: a download killed part-way resumes where it
//! stopped, and none of it is half done.
//!
//! A new replica's first download is a download from the start too, with
//! nothing to reconcile. Both kinds say so to the server (`full`, with the
//! horizon the download began at): it then refuses them only for a delete
//! forgotten since they began, which may be of a row they brought already
//! (they begin again, reconciling), and their last page ends past the
//! horizon.

use rowsync_core::capture::OP_SET_ASIDE;
use rowsync_core::clocks::LiveRows;
use rowsync_proto::PullResponse;
use rusqlite::types::Value as SqlValue;
use rusqlite::{params, Connection, Transaction, TransactionBehavior};

use crate::bookkeeping::{key, meta_get, meta_set, read_clocks};
use crate::error::ClientError;
use crate::replica::Replica;
use crate::values::{key_values, to_sql};

/// What kind of download is under way (`rebuild` in `_rowsync_meta`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Download {
    /// Pulls of what changed since the cursor.
    Incremental,
    /// A first download from the start, nothing to reconcile.
    First,
    /// A download from the start, reconciled at its end with what the
    /// replica held.
    Reconciling,
}

impl Download {
    /// The download under way, for a replica whose cursor is `cursor`.
    pub(crate) fn of(conn: &Connection, cursor: u64) -> Result<Download, ClientError> {
        Ok(match meta_get::<i64>(conn, key::REBUILD)?.unwrap_or(0) {
            RECONCILING => Download::Reconciling,
            FIRST => Download::First,
            _ if cursor == 0 => Download::First,
            _ => Download::Incremental,
        })
    }

    /// Whether a page of `changes` row states needs every local write
    /// stamped before it is applied: one that brings nothing merges and
    /// observes nothing, except at the end of a reconciling download, which
    /// deletes what the server no longer has.
    pub(crate) fn needs_stamping(self, changes: usize) -> bool {
        changes > 0 || self == Download::Reconciling
    }

    /// What pulls say of the download (see [`rowsync_proto::PullRequest::full`]):
    /// for a download from the start, the horizon it began at.
    pub(crate) fn full(self, conn: &Connection) -> Result<Option<u64>, ClientError> {
        if self == Download::Incremental {
            return Ok(None);
        }
        Ok(Some(meta_get::<i64>(conn, key::DOWNLOAD_BEGAN)?.unwrap_or(0) as u64))
    }

    /// Records, in the transaction of a page that leaves `more` to pull,
    /// that this download goes on (or, at its end, that it is over).
    fn record(self, conn: &Connection, more: bool) -> Result<(), ClientError> {
        let mark = match (self, more) {
            (Download::Reconciling, true) => RECONCILING,
            (Download::First, true) => FIRST,
            _ => 0,
        };
        meta_set(conn, key::REBUILD, mark)
    }
}

const FIRST: i64 = 2;
const RECONCILING: i64 = 1;

/// Sends the replica back to the start of the server's log (in the
/// caller's transaction), to download everything again; what it holds is
/// reconciled with the download when it reaches the end.
pub(crate) fn start_over(conn: &Connection) -> Result<(), ClientError> {
    meta_set(conn, key::CURSOR, 0)?;
    conn.execute("DELETE FROM _rowsync_seen", [])?;
    let holds_rows: bool = conn.query_row("SELECT EXISTS (SELECT 1 FROM _rowsync_rows)", [], |row| row.get(0))?;
    meta_set(conn, key::REBUILD, if holds_rows { RECONCILING } else { FIRST })
}

/// In a page's transaction, once its rows are applied: at the end of a
/// reconciling download, deletes what the server no longer has (counted
/// in `live`); records whether the download goes on, and the horizon it
/// began at. Returns how many rows were deleted.
pub(crate) fn after_page(
    replica: &Replica,
    conn: &Connection,
    download: Download,
    page: &PullResponse,
    live: &mut LiveRows,
) -> Result<usize, ClientError> {
    let deleted = match download {
        Download::Reconciling if !page.more => reconcile(replica, conn, live)?,
        _ => 0,
    };
    if download != Download::Incremental {
        download.record(conn, page.more)?;
    }
    if let Some(began) = page.began {
        meta_set(conn, key::DOWNLOAD_BEGAN, began as i64)?;
    }
    Ok(deleted)
}

/// Notes that the download brought the row of table `table_id` under `key`.
pub(crate) fn note_seen(conn: &Connection, table_id: i64, key: &SqlValue) -> Result<(), ClientError> {
    conn.prepare_cached("INSERT OR IGNORE INTO _rowsync_seen (tbl, pk) VALUES (?, ?)")?
        .execute(params![table_id, key])?;
    Ok(())
}

/// At the end of a reconciling download: deletes the rows the server no
/// longer has (see the module's documentation), counting them in `live`.
/// Returns how many rows were deleted.
fn reconcile(replica: &Replica, conn: &Connection, live: &mut LiveRows) -> Result<usize, ClientError> {
    let gone: Vec<(i64, SqlValue, String)> = conn
        .prepare(
            "SELECT r.tbl, r.pk, r.clocks FROM _rowsync_rows r \
             WHERE NOT EXISTS (SELECT 1 FROM _rowsync_seen s WHERE s.tbl = r.tbl AND s.pk = r.pk) \
             AND NOT EXISTS (SELECT 1 FROM _rowsync_outbox o WHERE o.tbl = r.tbl AND o.pk = r.pk AND o.op != ?) \
             AND NOT EXISTS (SELECT 1 FROM _rowsync_rejected j WHERE j.tbl = r.tbl AND j.pk = r.pk)",
        )?
        .query_map([OP_SET_ASIDE], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?
        .collect::<Result<_, _>>()?;
    let mut deleted = 0;
    for (table_id, stored_key, json) in gone {
        let Some(&index) = replica.table_index.get(&table_id) else { continue };
        if read_clocks(&json)?.is_visible() {
            let key = key_values(&replica.schema.tables[index], &stored_key)?;
            let params: Vec<SqlValue> = key.iter().map(to_sql).collect();
            conn.prepare_cached(&replica.row_sql[index].delete)?.execute(rusqlite::params_from_iter(params))?;
            live.moved(table_id, true, false);
            deleted += 1;
        }
        conn.execute("DELETE FROM _rowsync_rows WHERE tbl = ? AND pk = ?", params![table_id, stored_key])?;
        conn.execute("DELETE FROM _rowsync_conflicts WHERE tbl = ? AND pk = ?", params![table_id, stored_key])?;
    }
    conn.execute("DELETE FROM _rowsync_seen", [])?;
    Ok(deleted)
}

impl Replica {
    /// Sends the replica back to the start of the server's log after the
    /// server refused its cursor (`cursor_expired`): it downloads
    /// everything again and reconciles what it holds with it.
    pub fn start_over(&self) -> Result<(), ClientError> {
        let tx = Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)?;
        start_over(&tx)?;
        tx.commit()?;
        Ok(())
    }
}
