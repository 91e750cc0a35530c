//! What a replica file holds and where it stands: schema version, pending and refused
//! changes, open conflicts, cursor, last sync and last error (`rowsync
//! status`), and the version behind a cell.

use rowsync_core::capture::OP_SET_ASIDE;
use serde::Serialize;

use crate::bookkeeping::{key, load_clocks, meta_get};
use crate::error::ClientError;
use crate::replica::Replica;
use crate::stamp::stamp_all;
use crate::values::stored_key;

/// What `rowsync status` shows.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Status {
    pub path: String,
    pub site_id: String,
    pub server_url: String,
    /// The version of the server's schema this file holds (it takes on a
    /// newer one at its next sync).
    pub schema_version: u64,
    /// Local writes not yet acknowledged by the server.
    pub pending_changes: u64,
    /// Local changes the server refused, kept in `_rowsync_rejected`.
    pub rejected_changes: u64,
    /// Open conflicts of manual-strategy tables (`rowsync conflicts` lists them).
    pub open_conflicts: u64,
    pub cursor: u64,
    pub last_sync: Option<String>,
    pub last_error: Option<String>,
    pub last_error_at: Option<String>,
}

/// The counts `status` shows.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Counts {
    pub pending: u64,
    pub rejected: u64,
    pub conflicts: u64,
}

impl Replica {
    /// Pending changes, open conflicts, cursor, last sync and last error.
    /// Local writes are stamped first, so that open conflicts the app has
    /// settled by writing are not counted.
    pub fn status(&self) -> Result<Status, ClientError> {
        stamp_all(self)?;
        let counts = self.counts()?;
        Ok(Status {
            path: self.path.clone(),
            site_id: self.site.to_string(),
            server_url: self.server_url()?,
            schema_version: self.schema.version,
            pending_changes: counts.pending,
            rejected_changes: counts.rejected,
            open_conflicts: counts.conflicts,
            cursor: meta_get::<i64>(&self.conn, key::CURSOR)?.unwrap_or(0) as u64,
            last_sync: meta_get(&self.conn, key::LAST_SYNC)?,
            last_error: meta_get(&self.conn, key::LAST_ERROR)?,
            last_error_at: meta_get(&self.conn, key::LAST_ERROR_AT)?,
        })
    }

    /// Recorded writes not yet acknowledged, stamped or not.
    pub(crate) fn pending(&self) -> Result<u64, ClientError> {
        let sql = "SELECT count(*) FROM _rowsync_outbox WHERE op != ?";
        Ok(self.conn.query_row(sql, [OP_SET_ASIDE], |row| row.get::<_, i64>(0))? as u64)
    }

    /// Pending changes, refused changes and open conflicts.
    pub(crate) fn counts(&self) -> Result<Counts, ClientError> {
        let count = |table: &str| -> Result<u64, ClientError> {
            Ok(self.conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |row| row.get::<_, i64>(0))? as u64)
        };
        Ok(Counts {
            pending: self.pending()?,
            rejected: count("_rowsync_rejected")?,
            conflicts: count("_rowsync_conflicts")?,
        })
    }

    /// The version of the write that produced a cell's current value here,
    /// after stamping what is pending (`None` when the row is not visible).
    pub fn cell_version(
        &self,
        table: &str,
        key: &[rowsync_proto::Value],
        column: &str,
    ) -> Result<Option<rowsync_proto::Version>, ClientError> {
        let unknown = || ClientError::SchemaMismatch(format!("no column {table}.{column} in the schema"));
        let index = self.schema.table_index(table).ok_or_else(unknown)?;
        let column = self.schema.tables[index].column_index(column).ok_or_else(unknown)?;
        stamp_all(self)?;
        let stored = stored_key(&self.conn, key)?;
        let clocks = load_clocks(&self.conn, self.table_ids[index], &stored)?;
        Ok(clocks.and_then(|c| c.cells.get(column).cloned().flatten()))
    }
}
