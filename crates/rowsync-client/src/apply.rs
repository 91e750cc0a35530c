//! Applying a pulled page: merge each incoming row state with the local one,
//! write the result, and move the cursor, all in one transaction. The
//! engine sizes pages so that one takes about a slice to apply, and the
//! driver leaves the file to the app between them (see the `pace` module).
//!
//! Local writes not yet stamped are stamped first (same transaction; the
//! driver stamps a large backlog in paced chunks before), so the merge sees
//! every pending local edit with its version: a pulled change for a row with
//! local edits is merged cell by cell, never written over them, and the
//! outbox entries survive to be pushed. A page that brings nothing leaves
//! them as they are.
//!
//! No pulled change echoes into the outbox. Where the synced tables carry
//! no triggers but rowsync's, triggers are off on rowsync's connection
//! while it writes the page (SQLite's `SQLITE_DBCONFIG_ENABLE_TRIGGER`,
//! which holds for this connection only: the app's writes are captured as
//! ever), and the rows go in without the capture's cost. Where the app has
//! triggers of its own on them, they must see the pulled rows, so all
//! triggers fire; the outbox entries the capture triggers make then (every
//! id above the outbox's newest before the page, since no one else can
//! write inside this transaction) are deleted before commit.

use std::collections::HashSet;

use rowsync_core::change::DecodedChange;
use rowsync_core::clocks::{Clocks, LiveRows};
use rowsync_core::ddl::{update_columns, Dialect};
use rowsync_core::RowState;
use rowsync_proto::{ConflictStrategy, PullResponse, Value};
use rusqlite::config::DbConfig;
use rusqlite::types::Value as SqlValue;
use rusqlite::{Connection, Transaction, TransactionBehavior};

use crate::bookkeeping::{
    key, load_clock, load_clocks, load_conflicts, meta_get, meta_set, save_clock, save_clocks, save_conflicts,
    save_live_rows,
};
use crate::error::ClientError;
use crate::outbox::unpushed_rows;
use crate::rebuild::{after_page, note_seen, Download};
use crate::replica::Replica;
use crate::stage::{stage, Staged};
use crate::stamp::stamp_rest;
use crate::triggers::apps_own_triggers;
use crate::values::{key_token, to_sql};

/// Applies one page and stores its cursor. Returns how many rows changed locally.
pub fn apply_page(replica: &Replica, mut page: PullResponse) -> Result<usize, ClientError> {
    let staged = stage(replica, std::mem::take(&mut page.changes))?;
    apply_staged(replica, &page, staged)
}

/// Applies a page [`stage`]d before, in one write transaction (the slice
/// the app waits for), and stores its cursor. Returns how many rows
/// changed locally.
pub(crate) fn apply_staged(replica: &Replica, page: &PullResponse, mut staged: Staged) -> Result<usize, ClientError> {
    let tx = Transaction::new_unchecked(&replica.conn, TransactionBehavior::Immediate)?;
    // Triggers are back on when the page is done, however it ends.
    let capture_off = CaptureOff::when_alone(replica)?;
    let cursor: i64 = meta_get(&tx, key::CURSOR)?.unwrap_or(0);
    let download = Download::of(&tx, cursor as u64)?;
    // A page that brings nothing (the usual answer while the push of a
    // backlog runs): the writes still to be stamped wait for their batches.
    if download.needs_stamping(staged.changes.len()) {
        stamp_rest(replica, &tx)?;
    }
    let newest_before: i64 = tx.query_row("SELECT coalesce(max(id), 0) FROM _rowsync_outbox", [], |row| row.get(0))?;
    let mut clock = load_clock(&tx)?;
    let mut observed: i64 = meta_get(&tx, key::OBSERVED)?.unwrap_or(0);
    if let Some(newest) = staged.newest {
        clock.observe(newest);
        observed = observed.max(newest.0 as i64);
    }
    let mut live = LiveRows::default();
    let reconciling = download == Download::Reconciling;
    // Rows written since the page was staged are merged one by one too.
    staged.take_written_since(replica, &tx)?;
    if capture_off.is_none() {
        staged.take_held(replica, &tx)?;
    }
    let mut rows = Merging { replica, conn: &tx, download, newest_before, unpushed: None };
    let (mut changed_rows, mut from) = (0, 0);
    for &n in &staged.general {
        changed_rows += staged.write(replica, &tx, (from, n), reconciling, &mut live)?;
        changed_rows += rows.merge(&staged.changes[n], &staged.keys[n], &mut live)? as usize;
        from = n + 1;
    }
    changed_rows += staged.write(replica, &tx, (from, staged.changes.len()), reconciling, &mut live)?;
    changed_rows += after_page(replica, &tx, download, page, &mut live)?;
    save_live_rows(&tx, &live)?;
    save_clock(&tx, &clock)?;
    meta_set(&tx, key::OBSERVED, observed)?;
    meta_set(&tx, key::CURSOR, page.cursor as i64)?;
    tx.execute("DELETE FROM _rowsync_outbox WHERE id > ?", [newest_before])?;
    tx.commit()?;
    drop(capture_off);
    staged.clear(replica);
    Ok(changed_rows)
}

/// Pulled rows merged one by one with the versions the replica holds for
/// them, inside a page's transaction.
struct Merging<'a> {
    replica: &'a Replica,
    conn: &'a Connection,
    download: Download,
    /// The outbox's newest entry before the page.
    newest_before: i64,
    /// The rows with local writes not pushed yet, read when first needed.
    unpushed: Option<HashSet<(i64, String)>>,
}

impl Merging<'_> {
    /// Merges one pulled row state, stored under `local_key`, into the
    /// row, counting it in `live`. Returns whether the row changed.
    fn merge(
        &mut self,
        decoded: &DecodedChange,
        local_key: &SqlValue,
        live: &mut LiveRows,
    ) -> Result<bool, ClientError> {
        let (replica, tx) = (self.replica, self.conn);
        let table = &replica.schema.tables[decoded.table];
        let table_id = replica.table_ids[decoded.table];
        if self.download == Download::Reconciling {
            note_seen(tx, table_id, local_key)?;
        }
        let mut clocks = load_clocks(tx, table_id, local_key)?.unwrap_or_default();
        let mut state = clocks.to_state(table.columns.len());
        // A row an earlier page deleted while it had local writes not yet
        // pushed: they are held in its clocks, and part of its state.
        let held_while_deleted = !clocks.is_visible() && !clocks.held.is_empty();
        if held_while_deleted {
            for (&index, cell) in &clocks.held {
                state.cells[index] = Some(cell.clone());
            }
            clocks.held.clear();
        }
        let manual = table.conflict == ConflictStrategy::Manual;
        if manual {
            state.conflicts = load_conflicts(tx, table_id, local_key, table)?;
        }
        let was_visible = state.is_visible();
        let outcome = state.merge_from(&decoded.state);
        if !outcome.changed {
            return Ok(false);
        }
        if manual {
            hold_displaced(replica, tx, decoded.table, &decoded.key, &mut clocks, &outcome.taken)?;
        }
        let key_params: Vec<SqlValue> = decoded.key.iter().map(to_sql).collect();
        live.moved(table_id, was_visible, state.is_visible());
        // Local writes not pushed yet still go out when a pulled delete
        // removes their row (so that a later revival shows them, whatever the
        // order the two reached the server in): the row is held whole.
        let deleted_here = was_visible && !state.is_visible();
        if deleted_here && self.unpushed.is_none() {
            self.unpushed = Some(unpushed_rows(tx, self.newest_before)?);
        }
        let unpushed_here = self.unpushed.as_ref().is_some_and(|rows| rows.contains(&key_token(table_id, local_key)));
        let mut hold = Vec::new();
        if (deleted_here && unpushed_here) || (held_while_deleted && !state.is_visible()) {
            if deleted_here {
                local_values(replica, tx, decoded.table, &decoded.key, &mut state, &outcome.taken)?;
            }
            hold = state.cells.iter().enumerate().filter_map(|(i, c)| Some((i, c.clone()?))).collect();
        }
        match (was_visible, state.is_visible()) {
            (true, true) if !outcome.taken.is_empty() => {
                let sql = update_columns(table, Dialect::Sqlite, &outcome.taken);
                let mut params: Vec<SqlValue> = outcome
                    .taken
                    .iter()
                    .map(|&i| state.cells[i].as_ref().map(|(v, _)| to_sql(v)).unwrap_or(SqlValue::Null))
                    .collect();
                params.extend(key_params);
                tx.prepare_cached(&sql)?.execute(rusqlite::params_from_iter(params))?;
            }
            (false, true) => {
                let params: Vec<SqlValue> = state.row_values(table, &decoded.key).iter().map(to_sql).collect();
                tx.prepare_cached(&replica.row_sql[decoded.table].upsert)?
                    .execute(rusqlite::params_from_iter(params))?;
            }
            (true, false) => {
                tx.prepare_cached(&replica.row_sql[decoded.table].delete)?
                    .execute(rusqlite::params_from_iter(key_params))?;
            }
            _ => {}
        }
        let mut new_clocks = Clocks::from_state(&state);
        if manual && (state.is_visible() || !hold.is_empty()) {
            new_clocks.pending = clocks.pending;
            new_clocks.held = clocks.held;
        }
        new_clocks.held.extend(hold);
        save_clocks(tx, table_id, local_key, &new_clocks)?;
        if manual {
            let open = if state.is_visible() { state.conflicts.as_slice() } else { &[] };
            save_conflicts(tx, table_id, local_key, table, open)?;
        }
        Ok(true)
    }
}

/// Triggers off on rowsync's connection for as long as it lives (see the
/// module's documentation), and back on when dropped.
struct CaptureOff<'a> {
    conn: &'a Connection,
}

impl<'a> CaptureOff<'a> {
    /// Turns triggers off on the replica's connection when the synced
    /// tables carry no triggers but rowsync's capture triggers; `None`
    /// (triggers stay on) otherwise. Called inside the write transaction,
    /// so no trigger can appear before it ends.
    fn when_alone(replica: &'a Replica) -> Result<Option<CaptureOff<'a>>, ClientError> {
        if apps_own_triggers(&replica.conn, &replica.schema.tables)? {
            return Ok(None);
        }
        replica.conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_TRIGGER, false)?;
        Ok(Some(CaptureOff { conn: &replica.conn }))
    }
}

impl Drop for CaptureOff<'_> {
    fn drop(&mut self) {
        if let Err(error) = self.conn.set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_TRIGGER, true) {
            // Without triggers, this connection's writes would escape
            // capture; the audit before the next sync would find them.
            tracing::error!(%error, "turning triggers back on after applying a pulled page");
        }
    }
}

/// Puts the row's local values into the cells of `state` it did not take
/// from the pulled state (merging looks at versions only, and those cells
/// hold placeholders).
fn local_values(
    replica: &Replica,
    conn: &rusqlite::Connection,
    table_index: usize,
    key: &[Value],
    state: &mut RowState,
    taken: &[usize],
) -> Result<(), ClientError> {
    let Some(row) = replica.read_row(conn, table_index, key)? else { return Ok(()) };
    let table = &replica.schema.tables[table_index];
    let fallback = state.alive.clone();
    for (index, value) in row.into_iter().enumerate() {
        if table.is_key_column(index) || taken.contains(&index) {
            continue;
        }
        let version = state.cells[index].take().map(|(_, version)| version).or_else(|| fallback.clone());
        state.cells[index] = version.map(|version| (value, version));
    }
    Ok(())
}

/// Manual tables: a local write not yet pushed must reach the server even
/// when a newer pulled value takes its place in the row, or the server could
/// not record the conflict. Such writes are held in the row's clocks and
/// pushed in place of the row's value (see `rowsync_core::clocks::Clocks::held`).
fn hold_displaced(
    replica: &Replica,
    conn: &rusqlite::Connection,
    table_index: usize,
    key: &[Value],
    clocks: &mut Clocks,
    taken: &[usize],
) -> Result<(), ClientError> {
    let displaced: Vec<usize> =
        taken.iter().copied().filter(|i| clocks.pending.contains_key(i) && !clocks.held.contains_key(i)).collect();
    if displaced.is_empty() {
        return Ok(());
    }
    let Some(row) = replica.read_row(conn, table_index, key)? else { return Ok(()) };
    for index in displaced {
        if let Some(version) = clocks.cells.get(index).cloned().flatten() {
            clocks.held.insert(index, (row[index].clone(), version));
        }
    }
    Ok(())
}
