//! Building push batches from the outbox, and dropping what the server has
//! acknowledged.
//!
//! A batch holds the oldest outbox entries. Entries for the same row fold
//! into one change carrying the row's current values, each with the version
//! of the local write that produced it: every write to the batch's rows,
//! later ones included, is stamped first (see the client's `backlog`), and
//! values and versions are then read in one snapshot, which is read again
//! if the app wrote one of the rows in between. So a value and its version
//! always belong together.
//! Entries leave the outbox only after the server has answered with an
//! acknowledgement that covers them.

use std::collections::hash_map::Entry as MapEntry;
use std::collections::{HashMap, HashSet};

use rowsync_core::capture::OP_SET_ASIDE;
use rowsync_core::change::encode_change;
use rowsync_core::clocks::Clocks;
use rowsync_proto::{ConflictStrategy, PushRequest, PushedChange, RowChange, Table, Value};
use rusqlite::types::{Value as SqlValue, ValueRef};
use rusqlite::{params, Connection, Transaction, TransactionBehavior};

use crate::backlog::Backlog;
use crate::bookkeeping::{
    key, known_batches, load_clocks, meta_get, meta_set, now_text, read_clocks, save_clocks, set_known_batches,
};
use crate::error::ClientError;
use crate::replica::Replica;
use crate::stamp::{stamp_through, stamp_yielding_through};
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
    /// Whether a row of the batch is gone from its table while rowsync
    /// believes it there and holds nothing of it: a delete no trigger saw
    /// (see the client's `audit`), not yet found.
    escaped: bool,
}

/// The next batch of at most `max_entries` outbox entries after entry
/// `after` (`0`: from the oldest), or `None` when there are none. Rows are
/// added in the order of their oldest entry until the batch would pass
/// about `max_bytes` bytes as JSON (a batch always holds at least one row,
/// however large). Stamps what the batch needs first.
pub fn next_batch(
    replica: &Replica,
    after: i64,
    max_entries: usize,
    max_bytes: usize,
) -> Result<Option<Batch>, ClientError> {
    read_batch(replica, &mut Backlog::default(), after, max_entries, max_bytes)
}

/// [`next_batch`] as a push reads one batch after another: `backlog`
/// carries what it learnt of the unstamped entries from one batch to the
/// next. The writes the batch needs are stamped in one slice of the
/// replica's pace (where its rows were written again far later in the
/// backlog, the entries up to there are stamped first, in slices of their
/// own); the batch is then read without taking the write lock, in the gap
/// the app gets after the slice. If the app wrote one of its rows in
/// between, stamping and reading are done again, the second time in one
/// transaction.
pub(crate) fn read_batch(
    replica: &Replica,
    backlog: &mut Backlog,
    after: i64,
    max_entries: usize,
    max_bytes: usize,
) -> Result<Option<Batch>, ClientError> {
    let mut read_now = None;
    loop {
        // The backlog is scanned without the write lock (the first scan of a
        // large one takes long); the slice then takes in only what the app
        // wrote meanwhile.
        let reading = Transaction::new_unchecked(&replica.conn, TransactionBehavior::Deferred)?;
        backlog.refresh(&reading, after)?;
        drop(reading);
        let stamping = replica.pacer.slice(|| stamp_for_batch(replica, backlog, after, max_entries, read_now)).0?;
        match stamping {
            Stamping::Nothing => return Ok(None),
            Stamping::StampFirst { through } => stamp_yielding_through(replica, through)?,
            Stamping::Read(batch) => return Ok(Some(batch)),
            Stamping::Stamped(id) => {
                let tx = Transaction::new_unchecked(&replica.conn, TransactionBehavior::Deferred)?;
                match build_batch(replica, &tx, backlog, (after, max_entries, max_bytes), id)? {
                    Some(batch) => return Ok(Some(batch)),
                    None => read_now = Some(max_bytes),
                }
            }
        }
    }
}

/// What stamping for a batch came to.
enum Stamping {
    /// No entries after the batch's start.
    Nothing,
    /// The batch's rows were written again up to entry `through`, further
    /// than a batch's transaction should stamp.
    StampFirst { through: i64 },
    /// Stamped; the batch's request id, and the ids known before it.
    Stamped(BatchId),
    /// Stamped and read in the same transaction.
    Read(Batch),
}

/// A batch's request id, and the ids of requests sent before it since the
/// last acknowledged one (see `PushRequest::known`).
struct BatchId {
    id: u64,
    known: Option<Vec<u64>>,
}

/// Stamps every write to the rows of the batch after entry `after`, later
/// ones included, and records the batch's request id; with `read_now` (the
/// batch's bytes), reads the batch too.
fn stamp_for_batch(
    replica: &Replica,
    backlog: &mut Backlog,
    after: i64,
    max_entries: usize,
    read_now: Option<usize>,
) -> Result<Stamping, ClientError> {
    let tx = Transaction::new_unchecked(&replica.conn, TransactionBehavior::Immediate)?;
    let entries = entries_after(&tx, after, max_entries)?;
    let Some(&(through, ..)) = entries.last() else { return Ok(Stamping::Nothing) };
    let rows = entries.iter().map(|(_, table_id, stored_key)| (*table_id, ValueRef::from(stored_key)));
    let needed = backlog.must_stamp_through(&tx, through, rows)?;
    let stamped: i64 = meta_get(&tx, key::STAMPED_ID)?.unwrap_or(0);
    if needed.saturating_sub(stamped) > 2 * max_entries as i64 {
        return Ok(Stamping::StampFirst { through: needed });
    }
    stamp_through(replica, &tx, needed)?;
    // Recorded before the request leaves: if the server applied it, its id
    // is one this replica knows (see `PushRequest::known`).
    // 53 bits: exact as a JSON number in every language, JavaScript included.
    let id: u64 = rand::random::<u64>() >> 11;
    let known = known_batches(&tx)?;
    let mut now_known = known.clone().unwrap_or_default();
    now_known.push(id);
    let skip = now_known.len().saturating_sub(MAX_KNOWN_BATCHES);
    set_known_batches(&tx, &now_known[skip..])?;
    let id = BatchId { id, known };
    let stamping = match read_now {
        None => Stamping::Stamped(id),
        Some(max_bytes) => match build_batch(replica, &tx, backlog, (after, max_entries, max_bytes), id)? {
            Some(batch) => Stamping::Read(batch),
            None => return Err(ClientError::Corrupt("a row just stamped reads as unstamped".into())),
        },
    };
    tx.commit()?;
    Ok(stamping)
}

/// The outbox entries (id, table id, stored key) after entry `after`, at
/// most `limit` of them, oldest first. Emptied entries (op 0) carry nothing
/// and are left out; the acknowledgement removes those below the batch's
/// last entry.
fn entries_after(conn: &Connection, after: i64, limit: usize) -> Result<Vec<(i64, i64, SqlValue)>, ClientError> {
    Ok(conn
        .prepare_cached("SELECT id, tbl, pk FROM _rowsync_outbox WHERE id > ? AND op != ? ORDER BY id LIMIT ?")?
        .query_map(params![after, OP_SET_ASIDE, limit as i64], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?)
}

/// Reads the batch of at most `max_entries` stamped entries after entry
/// `after`, and about `max_bytes` bytes, on `conn`; `None` if a write to
/// one of its rows is not stamped (the app wrote it since).
fn build_batch(
    replica: &Replica,
    conn: &Connection,
    backlog: &mut Backlog,
    (after, max_entries, max_bytes): (i64, usize, usize),
    BatchId { id, known }: BatchId,
) -> Result<Option<Batch>, ClientError> {
    let stamped: i64 = meta_get(conn, key::STAMPED_ID)?.unwrap_or(0);
    let offset: i64 = meta_get(conn, key::SEQ_OFFSET)?.unwrap_or(0);
    // Each entry comes with its row's clocks.
    let entries: Vec<(i64, i64, SqlValue, Option<String>)> = conn
        .prepare_cached(
            "SELECT o.id, o.tbl, o.pk, r.clocks FROM _rowsync_outbox o \
             LEFT JOIN _rowsync_rows r ON r.tbl = o.tbl AND r.pk = o.pk \
             WHERE o.id > ? AND o.id <= ? AND o.op != ? ORDER BY o.id LIMIT ?",
        )?
        .query_map(params![after, stamped, OP_SET_ASIDE, max_entries as i64], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })?
        .collect::<Result<_, _>>()?;
    let Some(&(through, ..)) = entries.last() else { return Ok(None) };
    let rows = entries.iter().map(|(_, table_id, stored_key, _)| (*table_id, ValueRef::from(stored_key)));
    if !backlog.still_stamped(conn, through, rows)? {
        return Ok(None);
    }

    // Entries come in id order: a row's change is built at its oldest entry
    // (with the row's current values), and carries the seq of its newest.
    // The rows are read first, many to a statement.
    let mut row_of: HashMap<(i64, String), usize> = HashMap::new();
    let mut listed: Vec<(usize, Vec<Value>)> = Vec::new();
    let mut entry_rows = Vec::with_capacity(entries.len());
    for (id, table_id, stored_key, _) in &entries {
        let row = match row_of.entry(key_token(*table_id, stored_key)) {
            MapEntry::Occupied(row) => *row.get(),
            MapEntry::Vacant(row) => {
                let index = *replica.table_index.get(table_id).ok_or_else(|| {
                    ClientError::Corrupt(format!("outbox entry {id} names unknown table id {table_id}"))
                })?;
                listed.push((index, key_values(&replica.schema.tables[index], stored_key)?));
                *row.insert(listed.len() - 1)
            }
        };
        entry_rows.push(row);
    }
    let mut values = read_listed(replica, conn, &listed)?;

    let mut changes: Vec<PushedChange> = Vec::new();
    let mut rows: Vec<(i64, SqlValue)> = Vec::new();
    let mut held = Vec::new();
    let mut change_of: Vec<Option<usize>> = vec![None; listed.len()];
    let mut escaped = false;
    let mut bytes = 0usize;
    let mut last_id = None;
    for ((id, table_id, stored_key, clocks), row) in entries.iter().zip(entry_rows) {
        let seq = (offset + id) as u64;
        if let Some(change) = change_of[row] {
            changes[change].seq = seq;
        } else {
            let clocks = clocks.as_deref().map(read_clocks).transpose()?.unwrap_or_default();
            let (index, key) = (listed[row].0, std::mem::take(&mut listed[row].1));
            let row_values = values[row].take();
            escaped |= row_values.is_none() && clocks.is_visible() && clocks.held.is_empty();
            let (change, holds) = row_change(&replica.schema.tables[index], key, clocks, row_values);
            let size = change.wire_size();
            if !changes.is_empty() && bytes.saturating_add(size) > max_bytes {
                break;
            }
            bytes = bytes.saturating_add(size);
            if holds {
                held.push(changes.len());
            }
            change_of[row] = Some(changes.len());
            changes.push(PushedChange { seq, row: change });
            rows.push((*table_id, stored_key.clone()));
        }
        last_id = Some(*id);
    }
    let Some(last_id) = last_id else { return Ok(None) };
    let last_seq = (offset + last_id) as u64;
    Ok(Some(Batch {
        request: PushRequest { site: replica.site.clone(), last_seq, batch: Some(id), known, changes },
        last_id,
        rows,
        held,
        escaped,
    }))
}

impl Batch {
    /// Whether a row of the batch was deleted without the capture triggers
    /// seeing it (an `INSERT OR REPLACE` over a UNIQUE index of the app's,
    /// made after the capture check): the check is to be made again, and
    /// the batch read again, before it is sent.
    pub(crate) fn holds_an_unseen_delete(&self) -> bool {
        self.escaped
    }

    /// Whether the two batches carry a change to the same row.
    pub fn shares_rows_with(&self, other: &Batch) -> bool {
        let mine: HashSet<(i64, String)> = self.rows.iter().map(|(table, key)| key_token(*table, key)).collect();
        other.rows.iter().any(|(table, key)| mine.contains(&key_token(*table, key)))
    }
}

/// The current values of the `listed` rows (schema table index and key),
/// in their order (`None`: gone from the table), read table by table.
fn read_listed(
    replica: &Replica,
    conn: &Connection,
    listed: &[(usize, Vec<Value>)],
) -> Result<Vec<Option<Vec<Value>>>, ClientError> {
    let mut places: Vec<Vec<usize>> = vec![Vec::new(); replica.schema.tables.len()];
    for (place, (table, _)) in listed.iter().enumerate() {
        places[*table].push(place);
    }
    let mut values = vec![None; listed.len()];
    for (table, places) in places.into_iter().enumerate().filter(|(_, places)| !places.is_empty()) {
        let keys: Vec<&[Value]> = places.iter().map(|&n| listed[n].1.as_slice()).collect();
        for (place, row) in places.into_iter().zip(replica.read_rows(conn, table, &keys)?) {
            values[place] = row;
        }
    }
    Ok(values)
}

/// The change to push for one row of `table` under `key`, from its clocks
/// and its current values (`None`: gone from the table): each value with
/// the version of the local write that produced it; and whether the row
/// holds writes displaced before they could be pushed.
fn row_change(table: &Table, key: Vec<Value>, clocks: Clocks, row: Option<Vec<Value>>) -> (RowChange, bool) {
    let mut state = clocks.to_state(table.columns.len());
    match row {
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
        // (Gone otherwise, by a delete no trigger saw, the batch is not
        // sent: see `Batch::holds_an_unseen_delete`.)
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
    (encode_change(table, key, &state), !clocks.held.is_empty())
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

/// The rows with outbox entries not yet acknowledged (at or below `newest`).
pub(crate) fn unpushed_rows(conn: &rusqlite::Connection, newest: i64) -> Result<HashSet<(i64, String)>, ClientError> {
    let mut statement = conn.prepare("SELECT DISTINCT tbl, pk FROM _rowsync_outbox WHERE op != ? AND id <= ?")?;
    let rows = statement.query_map(params![OP_SET_ASIDE, newest], |row| Ok((row.get(0)?, row.get(1)?)))?;
    rows.map(|row| row.map(|(table_id, key): (i64, SqlValue)| key_token(table_id, &key)).map_err(ClientError::from))
        .collect()
}

#[cfg(test)]
mod tests {
    use crate::replica::test_replica;
    use tempfile::TempDir;

    use super::*;
    use crate::stamp::stamp_all;

    /// A replica of a `notes` table, and the app's connection to it.
    fn replica_of_notes(dir: &TempDir) -> (Replica, Connection) {
        test_replica(dir.path(), "CREATE TABLE notes (id TEXT PRIMARY KEY, body TEXT, n INTEGER);")
    }

    /// A copy of the file as the app sees it now, opened as a replica.
    fn copy_of(dir: &TempDir, app: &Connection, name: &str) -> Replica {
        let copy = dir.path().join(name);
        app.execute("VACUUM INTO ?", [copy.to_str().unwrap()]).unwrap();
        Replica::open(&copy).unwrap()
    }

    /// What a batch carries, request ids aside (they are random).
    fn carried(batch: &Batch) -> (i64, u64, String) {
        (batch.last_id, batch.request.last_seq, serde_json::to_string(&batch.request.changes).unwrap())
    }

    /// Every batch after another, from the oldest entry.
    fn all_batches(replica: &Replica, backlog: &mut Backlog, limit: usize) -> Vec<(i64, u64, String)> {
        let (mut after, mut batches) = (0, Vec::new());
        while let Some(batch) = read_batch(replica, backlog, after, limit, usize::MAX).unwrap() {
            after = batch.last_id;
            batches.push(carried(&batch));
        }
        batches
    }

    /// Stamping batch by batch as they are read (rows written again just
    /// after their batch, and far later) gives the batches stamping the
    /// whole backlog first gives: every value goes out with the version of
    /// the write that made it.
    #[test]
    fn batches_stamped_as_they_are_read_carry_what_stamping_everything_first_gives() {
        let dir = TempDir::new().unwrap();
        let (replica, app) = replica_of_notes(&dir);
        app.execute_batch(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1500) \
             INSERT INTO notes SELECT 'note-' || i, 'body', i FROM n; \
             UPDATE notes SET body = 'later' WHERE n % 100 = 1; \
             DELETE FROM notes WHERE n % 250 = 0; \
             INSERT INTO notes SELECT 'note-' || (n + 1), 'back', n + 1 FROM notes WHERE n % 250 = 249; \
             UPDATE notes SET n = n + 10000 WHERE n < 30;",
        )
        .unwrap();
        let at_once = copy_of(&dir, &app, "copy.db");
        stamp_all(&at_once).unwrap();

        let expected = all_batches(&at_once, &mut Backlog::default(), 100);
        assert!(expected.len() >= 15, "{} batches", expected.len());
        assert_eq!(all_batches(&replica, &mut Backlog::default(), 100), expected);
    }

    /// A row the app writes after its batch was stamped, before it was
    /// read, is not read with a version older than its value: the batch is
    /// stamped and read again, and carries the new write.
    #[test]
    fn a_row_written_between_stamping_and_reading_is_stamped_again() {
        let dir = TempDir::new().unwrap();
        let (replica, app) = replica_of_notes(&dir);
        app.execute_batch(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 10) \
             INSERT INTO notes SELECT 'note-' || i, 'body', i FROM n;",
        )
        .unwrap();
        let mut backlog = Backlog::default();
        let Stamping::Stamped(id) = stamp_for_batch(&replica, &mut backlog, 0, 100, None).unwrap() else {
            panic!("expected the batch's writes stamped")
        };
        app.execute("UPDATE notes SET body = 'meanwhile' WHERE id = 'note-3'", []).unwrap();
        let tx = Transaction::new_unchecked(&replica.conn, TransactionBehavior::Deferred).unwrap();
        assert!(build_batch(&replica, &tx, &mut backlog, (0, 100, usize::MAX), id).unwrap().is_none());
        drop(tx);

        let at_once = copy_of(&dir, &app, "copy.db");
        stamp_all(&at_once).unwrap();
        let batch = read_batch(&replica, &mut backlog, 0, 100, usize::MAX).unwrap().unwrap();
        let expected = next_batch(&at_once, 0, 100, usize::MAX).unwrap().unwrap();
        assert_eq!(carried(&batch), carried(&expected));
        assert!(carried(&batch).2.contains("meanwhile"));
    }
}
