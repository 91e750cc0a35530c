//! Building push batches from the outbox, and dropping what the server has
//! acknowledged.
//!
//! A batch holds the oldest stamped outbox entries. Entries for the same row
//! fold into one change carrying the row's current values, each with the
//! version of the local write that produced it (read in the same transaction
//! as the stamping, so a value and its version always belong together).
//! Entries leave the outbox only after the server has answered with an
//! acknowledgement that covers them.

use std::collections::{HashMap, HashSet};

use rowsync_core::capture::OP_SET_ASIDE;
use rowsync_core::change::encode_change;
use rowsync_proto::{ConflictStrategy, PushRequest, PushedChange, RowChange};
use rusqlite::types::Value as SqlValue;
use rusqlite::{params, Transaction, TransactionBehavior};

use crate::bookkeeping::{
    key, known_batches, load_clocks, meta_get, meta_set, now_text, save_clocks, set_known_batches,
};
use crate::error::ClientError;
use crate::replica::Replica;
use crate::stamp::stamp_rest;
use crate::values::{key_token, key_values};

/// How many ids of requests sent since the last acknowledged one a replica
/// remembers. Past that many failed attempts in a row, an attempt the server
/// applied may be forgotten, and the replica then takes itself for a copy:
/// it takes a new device id and sends its pending writes again (needless,
/// but nothing is lost).
const MAX_KNOWN_BATCHES: usize = 32;

/// A push batch and the outbox entries it covers.
#[derive(Debug, Clone)]
pub struct Batch {
    pub request: PushRequest,
    /// The newest outbox entry id the batch covers.
    pub last_id: i64,
    /// The stored table id and key of each change, in the same order.
    pub rows: Vec<(i64, SqlValue)>,
    /// The changes (indexes into `rows`) whose rows held writes a pulled
    /// delete displaced when the batch was read: the acknowledgement
    /// releases them, and no other row needs looking at.
    held: Vec<usize>,
}

/// The next batch of at most `max_entries` outbox entries after entry
/// `after` (`0`: from the oldest), or `None` when there are none. Rows are
/// added in the order of their oldest entry until the batch would pass
/// about `max_bytes` bytes as JSON (a batch always holds at least one row,
/// however large).
pub fn next_batch(
    replica: &Replica,
    after: i64,
    max_entries: usize,
    max_bytes: usize,
) -> Result<Option<Batch>, ClientError> {
    let tx = Transaction::new_unchecked(&replica.conn, TransactionBehavior::Immediate)?;
    stamp_rest(replica, &tx)?;
    let stamped_id: i64 = meta_get(&tx, key::STAMPED_ID)?.unwrap_or(0);
    let offset: i64 = meta_get(&tx, key::SEQ_OFFSET)?.unwrap_or(0);
    // Emptied entries (op 0) carry nothing; the acknowledgement removes
    // those below the batch's last entry.
    let entries: Vec<(i64, i64, SqlValue)> = tx
        .prepare_cached(
            "SELECT id, tbl, pk FROM _rowsync_outbox WHERE id > ? AND id <= ? AND op != ? ORDER BY id LIMIT ?",
        )?
        .query_map(params![after, stamped_id, OP_SET_ASIDE, max_entries as i64], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?
        .collect::<Result<_, _>>()?;

    // Entries come in id order: a row's change is built at its oldest entry
    // (with the row's current values), and carries the seq of its newest.
    let mut changes: Vec<PushedChange> = Vec::new();
    let mut rows: Vec<(i64, SqlValue)> = Vec::new();
    let mut held = Vec::new();
    let mut row_of: HashMap<(i64, String), usize> = HashMap::new();
    let mut bytes = 0usize;
    let mut last_id = None;
    for (id, table_id, stored_key) in &entries {
        let seq = (offset + id) as u64;
        let token = key_token(*table_id, stored_key);
        if let Some(&row) = row_of.get(&token) {
            changes[row].seq = seq;
        } else {
            let (change, holds) = read_change(replica, &tx, *table_id, stored_key)?;
            let size = change.wire_size();
            if !changes.is_empty() && bytes.saturating_add(size) > max_bytes {
                break;
            }
            bytes = bytes.saturating_add(size);
            if holds {
                held.push(changes.len());
            }
            row_of.insert(token, changes.len());
            changes.push(PushedChange { seq, row: change });
            rows.push((*table_id, stored_key.clone()));
        }
        last_id = Some(*id);
    }
    let Some(last_id) = last_id else {
        tx.commit()?;
        return Ok(None);
    };
    // Recorded before the request leaves: if the server applied it, its id
    // is one this replica knows (see `PushRequest::known`).
    let last_seq = (offset + last_id) as u64;
    // 53 bits: exact as a JSON number in every language, JavaScript included.
    let id: u64 = rand::random::<u64>() >> 11;
    let known = known_batches(&tx)?;
    let mut now_known = known.clone().unwrap_or_default();
    now_known.push(id);
    let skip = now_known.len().saturating_sub(MAX_KNOWN_BATCHES);
    set_known_batches(&tx, &now_known[skip..])?;
    tx.commit()?;
    Ok(Some(Batch {
        request: PushRequest { site: replica.site.clone(), last_seq, batch: Some(id), known, changes },
        last_id,
        rows,
        held,
    }))
}

impl Batch {
    /// Whether the two batches carry a change to the same row.
    pub fn shares_rows_with(&self, other: &Batch) -> bool {
        let mine: HashSet<(i64, String)> = self.rows.iter().map(|(table, key)| key_token(*table, key)).collect();
        other.rows.iter().any(|(table, key)| mine.contains(&key_token(*table, key)))
    }
}

/// The change to push for one row: its current values, each with the
/// version of the local write that produced it; and whether the row holds
/// writes displaced before they could be pushed.
fn read_change(
    replica: &Replica,
    tx: &Transaction,
    table_id: i64,
    stored_key: &SqlValue,
) -> Result<(RowChange, bool), ClientError> {
    let index = *replica
        .table_index
        .get(&table_id)
        .ok_or_else(|| ClientError::Corrupt(format!("outbox names unknown table id {table_id}")))?;
    let table = &replica.schema.tables[index];
    let key = key_values(table, stored_key)?;
    let clocks = load_clocks(tx, table_id, stored_key)?.unwrap_or_default();
    let mut state = clocks.to_state(table.columns.len());
    match replica.read_row(tx, index, &key)? {
        Some(values) => {
            // A row with no cell versions at all (rowsync believed it
            // deleted) is written whole. Otherwise a cell without a version
            // is a column added to the schema after the row's writes here:
            // never written here, it is not sent, so it leaves the server's
            // value alone.
            let fallback = clocks.cells.iter().all(Option::is_none).then(|| state.newest_write().cloned()).flatten();
            for (i, value) in values.into_iter().enumerate() {
                if table.is_key_column(i) {
                    continue;
                }
                let version = state.cells[i].as_ref().map(|(_, v)| v.clone()).or_else(|| fallback.clone());
                state.cells[i] = version.map(|v| (value, v));
            }
        }
        // Gone here: a pulled delete removed it while it had local writes
        // not pushed yet, and they go out with its last values (see apply).
        None => {
            state.cells.iter_mut().for_each(|c| *c = None);
            for (index, cell) in &clocks.held {
                state.cells[*index] = Some(cell.clone());
            }
        }
    }
    if table.conflict == ConflictStrategy::Manual {
        for (index, (value, version)) in &clocks.held {
            state.cells[*index] = Some((value.clone(), version.clone()));
        }
        state.bases = clocks.pending.iter().map(|(&index, pending)| (index, pending.base.clone())).collect();
    }
    Ok((encode_change(table, key, &state), !clocks.held.is_empty()))
}

/// Drops the entries of `batch` that the server acknowledged.
pub fn acknowledge(replica: &Replica, batch: &Batch, acked_seq: u64) -> Result<usize, ClientError> {
    let tx = Transaction::new_unchecked(&replica.conn, TransactionBehavior::Immediate)?;
    if acked_seq < batch.request.last_seq {
        return Err(ClientError::Protocol(format!(
            "the server acknowledged up to {acked_seq} of a batch ending at {}",
            batch.request.last_seq
        )));
    }
    // SQLite hands out max(id) + 1, so an outbox that emptied would start
    // again at 1: the batch's last entry stays, emptied (op 0), until the next
    // acknowledgement. Ids therefore never repeat, and an acknowledgement
    // that arrives late (another process synced the file meanwhile) can only
    // remove entries that existed, and were sent, when its batch was read.
    let deleted = tx
        .prepare_cached("DELETE FROM _rowsync_outbox WHERE id < ? AND op != ?")?
        .execute(params![batch.last_id, OP_SET_ASIDE])?;
    let marked = tx.prepare_cached("UPDATE _rowsync_outbox SET op = ? WHERE id = ? AND op != ?")?.execute(params![
        OP_SET_ASIDE,
        batch.last_id,
        OP_SET_ASIDE
    ])?;
    tx.prepare_cached("DELETE FROM _rowsync_outbox WHERE id < ?")?.execute([batch.last_id])?;
    if let Some(id) = batch.request.batch {
        // The ids of batches read since (one may have been read while this
        // one was on its way) stay known.
        let known = known_batches(&tx)?.unwrap_or_default();
        let since = known.iter().position(|&k| k == id).map_or(&[][..], |at| &known[at + 1..]);
        set_known_batches(&tx, &[&[id], since].concat())?;
    }
    settle_pending(replica, &tx, batch)?;
    release_held(replica, &tx, batch)?;
    // The server holds these readings now: should the clock run ahead and
    // its writes be re-stamped, the new readings must come after them even
    // once these rows have been written over here (see `correct_clock`).
    let sent = batch.request.changes.iter().flat_map(|c| c.row.versions()).filter(|v| v.site == batch.request.site);
    if let Some(newest) = sent.map(|v| v.hlc.0 as i64).max() {
        let observed: i64 = meta_get(&tx, key::OBSERVED)?.unwrap_or(0);
        meta_set(&tx, key::OBSERVED, observed.max(newest))?;
    }
    tx.commit()?;
    Ok(deleted + marked)
}

/// Manual tables: the writes the server acknowledged are no longer pending
/// (nor held). Writes newer than the batch's last entry stay pending even
/// when the batch carried their values: the server may have skipped the
/// change that carried them as a repeat.
fn settle_pending(replica: &Replica, conn: &rusqlite::Connection, batch: &Batch) -> Result<(), ClientError> {
    let acked = batch.request.last_seq as i64;
    for (table_id, stored_key) in &batch.rows {
        let Some(&index) = replica.table_index.get(table_id) else { continue };
        if replica.schema.tables[index].conflict != ConflictStrategy::Manual {
            continue;
        }
        let Some(mut clocks) = load_clocks(conn, *table_id, stored_key)? else { continue };
        let settled: Vec<usize> =
            clocks.pending.iter().filter(|(_, pending)| pending.seq <= acked).map(|(&column, _)| column).collect();
        if settled.is_empty() {
            continue;
        }
        for column in settled {
            clocks.pending.remove(&column);
            clocks.held.remove(&column);
        }
        save_clocks(conn, *table_id, stored_key, &clocks)?;
    }
    Ok(())
}

/// Rows deleted here by a pull while holding unpushed writes (other than
/// under the manual strategy, which settles its own): once acknowledged,
/// the held values are on the server and need not be kept.
fn release_held(replica: &Replica, conn: &rusqlite::Connection, batch: &Batch) -> Result<(), ClientError> {
    for (table_id, stored_key) in batch.held.iter().filter_map(|&change| batch.rows.get(change)) {
        let Some(&index) = replica.table_index.get(table_id) else { continue };
        if replica.schema.tables[index].conflict == ConflictStrategy::Manual {
            continue;
        }
        let Some(mut clocks) = load_clocks(conn, *table_id, stored_key)? else { continue };
        if !clocks.held.is_empty() && !clocks.is_visible() {
            clocks.held.clear();
            save_clocks(conn, *table_id, stored_key, &clocks)?;
        }
    }
    Ok(())
}

/// Moves the outbox entries behind a change the server refused into
/// `_rowsync_rejected`, with the reason, so that they stop blocking every
/// later batch. A later write to the row queues it again.
pub fn set_aside(replica: &Replica, batch: &Batch, change: usize, reason: &str) -> Result<usize, ClientError> {
    let Some((table_id, stored_key)) = batch.rows.get(change) else {
        return Err(ClientError::Protocol(format!(
            "the server refused change {change} of a batch of {}",
            batch.rows.len()
        )));
    };
    let tx = Transaction::new_unchecked(&replica.conn, TransactionBehavior::Immediate)?;
    let now = now_text(&tx)?;
    let offset: i64 = meta_get(&tx, key::SEQ_OFFSET)?.unwrap_or(0);
    tx.execute(
        "INSERT INTO _rowsync_rejected (tbl, pk, op, seq, reason, at) \
         SELECT tbl, pk, op, ? + id, ?, ? FROM _rowsync_outbox WHERE id <= ? AND tbl = ? AND pk = ? AND op != ?",
        params![offset, reason, now, batch.last_id, table_id, stored_key, OP_SET_ASIDE],
    )?;
    // Marked rather than deleted: deleting the newest entries would let
    // SQLite hand their ids out again, below the stamping mark and to
    // sequence numbers the server may have seen.
    let moved = tx.execute(
        "UPDATE _rowsync_outbox SET op = ? WHERE id <= ? AND tbl = ? AND pk = ? AND op != ?",
        params![OP_SET_ASIDE, batch.last_id, table_id, stored_key, OP_SET_ASIDE],
    )?;
    // A refused value no longer displaced by anything: not to be pushed again
    // unless the row is written again (then the row's value goes out).
    if let Some(mut clocks) = load_clocks(&tx, *table_id, stored_key)? {
        if !clocks.held.is_empty() {
            clocks.held.clear();
            save_clocks(&tx, *table_id, stored_key, &clocks)?;
        }
    }
    tx.commit()?;
    Ok(moved)
}
