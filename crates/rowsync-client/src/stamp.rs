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
//!
//! A push batch needs only its own rows' writes stamped (see the client's
//! `backlog`): a large backlog is stamped batch by batch, while the batch
//! before is on its way to the server, so stamping goes in id order up to
//! a given entry ([`stamp_through`]) as well as to the end.

use std::collections::hash_map::Entry;
use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use rowsync_core::capture::OP_SET_ASIDE;
use rowsync_core::clocks::{julian_to_millis, Clocks, LiveRows};
use rowsync_core::pace;
use rowsync_proto::{ConflictStrategy, Version};
use rusqlite::types::Value as SqlValue;
use rusqlite::{params, Connection, Transaction, TransactionBehavior};

use crate::bookkeeping::{
    close_conflicts, key, load_clock, meta_get, meta_set, read_clocks, save_clock, save_clocks, save_live_rows,
};
use crate::error::ClientError;
use crate::replica::Replica;
use crate::values::key_token;

/// Outbox entries stamped per transaction where no pace is kept (and the
/// first chunk's size where one is).
pub const STAMP_CHUNK: usize = 1_000;

/// The most outbox entries one paced chunk stamps.
const MOST_PER_CHUNK: u32 = 20_000;

/// Within a paced chunk, the clock is looked at after every this many
/// entries.
const STEP: usize = 250;

/// How much of a slice a paced chunk may spend stamping: the commit that
/// follows writes the pages it dirtied, about a quarter more.
const STAMPING_PART: Duration = Duration::from_millis(pace::SLICE_MS * 3 / 4);

/// Stamps what is pending, in bounded transactions, so that later
/// transactions only have a little left to do.
pub fn stamp_all(replica: &Replica) -> Result<(), ClientError> {
    while stamp_chunk(replica, STAMP_CHUNK, None, i64::MAX)?.1 {}
    Ok(())
}

/// [`stamp_all`] as sync does it, in the background: its transactions are
/// slices of about [`pace::SLICE_MS`], with the file left to the app
/// between them (see the client's `pace`). A chunk is sized from the pace
/// of the last, and also ends when its time is up: entries cost more or
/// less from one moment to the next (pages in the cache or not, the other
/// core busy or not), and a slice that runs a third over its time keeps
/// the app waiting for another retry. A caller that waits for the answer
/// (status, conflicts) stamps without pauses.
pub fn stamp_all_yielding(replica: &Replica) -> Result<(), ClientError> {
    stamp_yielding_through(replica, i64::MAX)
}

/// [`stamp_all_yielding`], up to outbox entry `through`.
pub(crate) fn stamp_yielding_through(replica: &Replica, through: i64) -> Result<(), ClientError> {
    let mut size = STAMP_CHUNK as u32;
    loop {
        let (chunk, took) = replica.pacer.slice(|| {
            let until = Instant::now() + STAMPING_PART;
            stamp_chunk(replica, size as usize, Some(until), through)
        });
        let (stamped, more) = chunk?;
        if !more {
            return Ok(());
        }
        size = pace::fit(size, stamped as u64, took.as_micros() as u64, MOST_PER_CHUNK);
    }
}

/// The newest outbox entry stamped, and the newest entry.
pub(crate) fn stamping_marks(conn: &Connection) -> Result<(i64, i64), ClientError> {
    let stamped: i64 = meta_get(conn, key::STAMPED_ID)?.unwrap_or(0);
    let newest: i64 = conn.query_row("SELECT coalesce(max(id), 0) FROM _rowsync_outbox", [], |r| r.get(0))?;
    Ok((stamped, newest))
}

/// About how many outbox entries are not stamped yet (ids past the
/// stamping mark; emptied entries among them count too).
pub(crate) fn unstamped(conn: &Connection) -> Result<i64, ClientError> {
    let (stamped, newest) = stamping_marks(conn)?;
    Ok((newest - stamped).max(0))
}

/// Stamps at most `limit` entries up to entry `through` in a transaction of
/// their own, stopping early once the clock passes `until`. Returns how many
/// it stamped and whether entries are left.
fn stamp_chunk(
    replica: &Replica,
    limit: usize,
    until: Option<Instant>,
    through: i64,
) -> Result<(usize, bool), ClientError> {
    let tx = Transaction::new_unchecked(&replica.conn, TransactionBehavior::Immediate)?;
    let step = if until.is_some() { STEP } else { limit };
    let mut stamped = 0;
    let more = loop {
        let asked = step.min(limit - stamped);
        let done = stamp_pending(replica, &tx, asked, through)?;
        stamped += done;
        if done < asked {
            break false;
        }
        if stamped == limit || until.is_some_and(|until| Instant::now() >= until) {
            break true;
        }
    };
    tx.commit()?;
    Ok((stamped, more))
}

/// Stamps every unstamped outbox entry on the caller's transaction.
pub(crate) fn stamp_rest(replica: &Replica, conn: &Connection) -> Result<(), ClientError> {
    stamp_through(replica, conn, i64::MAX)
}

/// Stamps every unstamped outbox entry up to entry `through` on the
/// caller's transaction.
pub(crate) fn stamp_through(replica: &Replica, conn: &Connection, through: i64) -> Result<(), ClientError> {
    while stamp_pending(replica, conn, STAMP_CHUNK, through)? > 0 {}
    Ok(())
}

/// Stamps at most `limit` unstamped outbox entries up to entry `through`,
/// oldest first, on the caller's transaction. Returns how many were
/// stamped.
fn stamp_pending(replica: &Replica, conn: &Connection, limit: usize, through: i64) -> Result<usize, ClientError> {
    let stamped_id: i64 = meta_get(conn, key::STAMPED_ID)?.unwrap_or(0);
    let offset: i64 = meta_get(conn, key::CLOCK_OFFSET_MS)?.unwrap_or(0);
    let seq_offset: i64 = meta_get(conn, key::SEQ_OFFSET)?.unwrap_or(0);
    let mut clock = load_clock(conn)?;
    // Each entry comes with its row's clocks as stored (read for the row's
    // first entry here; its later ones see the clocks as updated here).
    let mut select = conn.prepare_cached(
        "SELECT o.id, o.tbl, o.pk, o.op, o.at, o.cols, r.clocks FROM _rowsync_outbox o \
         LEFT JOIN _rowsync_rows r ON r.tbl = o.tbl AND r.pk = o.pk \
         WHERE o.id > ? AND o.id <= ? ORDER BY o.id LIMIT ?",
    )?;
    let mut entries = select.query(params![stamped_id, through, limit as i64])?;
    let (mut count, mut last_id) = (0, None);
    let mut touched: HashMap<(i64, String), Touched> = HashMap::new();
    while let Some(entry) = entries.next()? {
        let (id, table_id, op): (i64, i64, i64) = (entry.get(0)?, entry.get(1)?, entry.get(3)?);
        count += 1;
        last_id = Some(id);
        if op == OP_SET_ASIDE {
            continue;
        }
        let stored_key: SqlValue = entry.get(2)?;
        let table_index = *replica
            .table_index
            .get(&table_id)
            .ok_or_else(|| ClientError::Corrupt(format!("outbox entry {id} names unknown table id {table_id}")))?;
        let table = &replica.schema.tables[table_index];
        let hlc = clock.tick(julian_to_millis(entry.get(4)?).saturating_add_signed(offset));
        let Touched { clocks, written, .. } = match touched.entry(key_token(table_id, &stored_key)) {
            Entry::Occupied(entry) => entry.into_mut(),
            Entry::Vacant(vacant) => {
                let stored: Option<String> = entry.get(6)?;
                let clocks = stored.as_deref().map(read_clocks).transpose()?.unwrap_or_default();
                let was_visible = clocks.is_visible();
                vacant.insert(Touched { key: stored_key, clocks, written: BTreeSet::new(), was_visible })
            }
        };
        let version = Version { hlc, site: replica.site.clone() };
        let columns = clocks.record_write(table, op, entry.get(5)?, version, seq_offset + id);
        if table.conflict == ConflictStrategy::Manual {
            written.extend(columns);
        }
    }
    drop(entries);
    let Some(last_id) = last_id else { return Ok(0) };
    let mut live = LiveRows::default();
    for ((table_id, _), Touched { key: stored_key, clocks, written, was_visible }) in &touched {
        live.moved(*table_id, *was_visible, clocks.is_visible());
        save_clocks(conn, *table_id, stored_key, clocks)?;
        if !written.is_empty() {
            // The server closes them when the writes arrive.
            let table = &replica.schema.tables[replica.table_index[table_id]];
            let written: Vec<usize> = written.iter().copied().collect();
            close_conflicts(conn, *table_id, stored_key, table, &written)?;
        }
    }
    save_live_rows(conn, &live)?;
    save_clock(conn, &clock)?;
    meta_set(conn, key::STAMPED_ID, last_id)?;
    Ok(count)
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

#[cfg(test)]
mod tests {
    use crate::replica::test_replica;

    use super::*;

    /// A replica of a `notes` table whose app inserted `rows` notes, and the
    /// app's connection.
    fn replica_with_notes(dir: &tempfile::TempDir, rows: usize) -> (Replica, Connection) {
        let (replica, app) =
            test_replica(dir.path(), "CREATE TABLE notes (id TEXT PRIMARY KEY, body TEXT, n INTEGER);");
        app.execute(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) \
             INSERT INTO notes SELECT 'note-' || i, 'body', i FROM n",
            [rows as i64],
        )
        .unwrap();
        (replica, app)
    }

    /// A paced chunk ends when its time is up, whatever its size, and the
    /// entries it left are stamped by the next.
    #[test]
    fn a_chunk_whose_time_is_up_stops_and_the_next_goes_on() {
        let dir = tempfile::TempDir::new().unwrap();
        let (replica, app) = replica_with_notes(&dir, 2_000);
        let stamped = || -> i64 { meta_get(&replica.conn, key::STAMPED_ID).unwrap().unwrap_or(0) };
        let newest: i64 = app.query_row("SELECT max(id) FROM _rowsync_outbox", [], |r| r.get(0)).unwrap();

        assert_eq!(stamp_chunk(&replica, 2_000, Some(Instant::now()), i64::MAX).unwrap(), (STEP, true));
        assert!(stamped() < newest, "a chunk out of time stamped everything");
        assert_eq!(stamp_chunk(&replica, 2_000, None, i64::MAX).unwrap(), (2_000 - STEP, false));
        assert_eq!(stamped(), newest);
    }

    /// Stamping cut into steps, and into chunks whose time is up, gives every
    /// write the version stamping it in one go gives (conflicts are decided
    /// by versions alone): rows written in several steps' entries, deleted
    /// and written again, end with the same versions and the same count.
    #[test]
    fn stamping_in_steps_gives_the_versions_of_stamping_at_once() {
        let dir = tempfile::TempDir::new().unwrap();
        let (replica, app) = replica_with_notes(&dir, 700);
        app.execute_batch(
            "UPDATE notes SET body = 'again' WHERE n % 3 = 0; \
             DELETE FROM notes WHERE n % 7 = 0; \
             INSERT INTO notes SELECT 'note-' || n, 'back', n FROM notes WHERE n % 7 = 1 AND n > 7 \
               ON CONFLICT (id) DO UPDATE SET body = 'later'; \
             UPDATE notes SET n = n + 1000 WHERE n % 5 = 0;",
        )
        .unwrap();
        let copy = dir.path().join("copy.db");
        app.execute("VACUUM INTO ?", [copy.to_str().unwrap()]).unwrap();
        let at_once = Replica::open(&copy).unwrap();

        while stamp_chunk(&replica, 10_000, Some(Instant::now()), i64::MAX).unwrap().1 {}
        assert!(!stamp_chunk(&at_once, 10_000, None, i64::MAX).unwrap().1, "stamped in one go");

        let stamped = |conn: &Connection| -> Vec<(i64, String, String)> {
            let mut rows =
                conn.prepare("SELECT tbl, CAST(pk AS TEXT), clocks FROM _rowsync_rows ORDER BY 1, 2").unwrap();
            let mut rows: Vec<_> =
                rows.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap().map(Result::unwrap).collect();
            let meta = |key: &str| -> String {
                conn.query_row("SELECT CAST(value AS TEXT) FROM _rowsync_meta WHERE key = ?", [key], |r| r.get(0))
                    .unwrap()
            };
            let live: i64 = conn.query_row("SELECT live FROM _rowsync_tables", [], |r| r.get(0)).unwrap();
            rows.push((live, meta(key::CLOCK), meta(key::STAMPED_ID)));
            rows
        };
        assert!(stamped(&replica.conn).len() > 700);
        assert_eq!(stamped(&replica.conn), stamped(&at_once.conn));
    }
}
