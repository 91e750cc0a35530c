//! Checking, before each sync, that capture saw every write.
//!
//! Capture lives in triggers on the app's own tables, and the app runs any
//! SQL it likes on its file. Two common things escape the triggers:
//! - **A table rebuild** (`CREATE TABLE t_new …; INSERT INTO t_new SELECT …;
//!   DROP TABLE t; ALTER TABLE t_new RENAME TO t`) drops the triggers with
//!   the old table: every later write to `t` goes unrecorded.
//! - **`INSERT OR REPLACE`** that collides on a UNIQUE index of the app's
//!   deletes the other row without firing the delete trigger (SQLite fires
//!   delete triggers for REPLACE only under `recursive_triggers`, which
//!   rowsync cannot set on the app's connection).
//!
//! So capture is checked rather than trusted. Each sync first compares every
//! synced table's triggers with rowsync's (the SQL text SQLite keeps) and its
//! columns with the schema, and the table's row count with the number of
//! rows rowsync believes it holds (`_rowsync_tables.live`, kept by stamping
//! and applying). That belief is whole only once every write is stamped;
//! a large backlog is stamped as it is pushed, so the counts are then
//! compared when the push has caught up, and what that finds is pushed in
//! the same sync. All of that is looked at in a read snapshot first: only
//! what needs repairing takes the write lock, so the app does not wait
//! while a large table is counted. Then:
//! - columns that no longer match stop the sync with what differs;
//! - missing or altered triggers are installed again, and since writes made
//!   meanwhile went unrecorded, every row is compared with what rowsync
//!   knows: rows it does not know are queued as inserts, rows it knows that
//!   are gone as deletes; and (they leave no local trace) updates are found
//!   by comparing each cell with the server's copy wherever both hold the
//!   same version ([`audit_against_server`], resumed after a crash);
//! - a count that differs (a REPLACE) gets the same row comparison, which
//!   queues the deletes no trigger saw.
//!
//! Found writes are queued as ordinary outbox entries, stamped now, and
//! reported in the sync's notes.

use std::collections::HashSet;

use rowsync_core::capture::{key_expression, TriggerForm, OP_DELETE, OP_INSERT, OP_UPDATE, OVERFLOW_BIT};
use rowsync_core::change::decode_change;
use rowsync_proto::{PullRequest, SiteId, Table};
use rusqlite::types::Value as SqlValue;
use rusqlite::{params, Connection, Transaction, TransactionBehavior};

use crate::bookkeeping::{load_clocks, read_clocks};
use crate::error::ClientError;
use crate::replica::{table_problems, trigger_form, Replica};
use crate::stamp::{stamp_all_yielding, stamp_rest, stamping_marks};
use crate::transport::Transport;
use crate::triggers::{drop_triggers, install_triggers, triggers_of, Triggers};
use crate::values::{key_token, stored_key};

/// Whether [`check_capture`] compares each table's row count with the rows
/// rowsync believes it holds: the belief is complete only once every write
/// is stamped, which a large backlog is only as it is pushed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RowCounts {
    /// Stamp what is left and compare.
    Compare,
    /// Leave the counts for a later check (the columns and triggers are
    /// checked all the same).
    Later,
}

/// Checks capture on every synced table, repairs what can be repaired here,
/// and returns what it found, for the user to read.
pub(crate) fn check_capture(replica: &Replica, counts: RowCounts) -> Result<Vec<String>, ClientError> {
    // Most of the time nothing needs repairing, and a read snapshot shows
    // it without the write lock: counting a table of a million rows takes
    // tens of milliseconds, which the app would spend waiting. The app may
    // write between the stamping before this and that snapshot; what it
    // wrote is stamped, and looked at once more.
    if counts == RowCounts::Compare {
        for first in [true, false] {
            match seen_in_a_snapshot(replica)? {
                Seen::Sound => return Ok(Vec::new()),
                Seen::Unstamped if first => stamp_all_yielding(replica)?,
                Seen::Unstamped | Seen::ToRepair => break,
            }
        }
    }
    let tx = Transaction::new_unchecked(&replica.conn, TransactionBehavior::Immediate)?;
    // Every recorded write gets its version first, so that rowsync's view
    // of which rows exist is complete (where the counts are compared, or a
    // table's rows must be compared; stamped once).
    let mut all_stamped = false;
    let mut stamp_all_once = |tx: &Transaction| -> Result<(), ClientError> {
        if !all_stamped {
            stamp_rest(replica, tx)?;
            all_stamped = true;
        }
        Ok(())
    };
    if counts == RowCounts::Compare {
        stamp_all_once(&tx)?;
    }
    let mut notes = Vec::new();
    for (index, table) in replica.schema.tables.iter().enumerate() {
        let table_id = replica.table_ids[index];
        let TableCapture { problems, form, triggers } = look_at(&tx, table, table_id)?;
        if !problems.is_empty() {
            let triggers = if triggers == Triggers::Missing {
                " Its capture triggers are gone too (was it rebuilt?)."
            } else {
                ""
            };
            return Err(ClientError::SchemaMismatch(format!(
                "table {} of {} no longer matches the synced schema: {}.{triggers} Nothing was synced. Give the \
                 table back the server's columns, then sync again: rowsync re-installs its capture and finds the \
                 writes made meanwhile",
                table.name,
                replica.path,
                problems.join("; ")
            )));
        }
        if triggers != Triggers::Intact {
            drop_triggers(&tx, table)?;
            install_triggers(&tx, table, table_id, form)?;
        }
        if triggers == Triggers::Missing {
            stamp_all_once(&tx)?;
            tx.execute("UPDATE _rowsync_tables SET audit = 1 WHERE id = ?", [table_id])?;
            let (inserts, deletes) = compare_rows(replica, &tx, index)?;
            notes.push(format!(
                "the capture triggers of table {} were missing or altered (was the table rebuilt?): installed \
                 again; {inserts} insert(s) and {deletes} delete(s) made meanwhile were found and queued, and \
                 updates are looked for by comparing with the server",
                table.name
            ));
            continue;
        }
        if counts == RowCounts::Later {
            continue;
        }
        if !counts_agree(&tx, table, table_id)? {
            let (inserts, deletes) = compare_rows(replica, &tx, index)?;
            if inserts + deletes > 0 {
                notes.push(format!(
                    "{deletes} row(s) of table {} were deleted and {inserts} inserted without the capture \
                     triggers seeing it (INSERT OR REPLACE over a UNIQUE index of the app?): queued now",
                    table.name
                ));
            }
        }
    }
    tx.commit()?;
    Ok(notes)
}

/// What a read snapshot of the file shows of capture.
enum Seen {
    /// Every write stamped; every table with the schema's columns, rowsync's
    /// triggers, and the rows rowsync believes it holds.
    Sound,
    /// Writes not stamped yet: the counts cannot be compared.
    Unstamped,
    /// Something for [`check_capture`] to repair, or to report.
    ToRepair,
}

/// Looks at capture in one read snapshot, without the write lock.
fn seen_in_a_snapshot(replica: &Replica) -> Result<Seen, ClientError> {
    let tx = Transaction::new_unchecked(&replica.conn, TransactionBehavior::Deferred)?;
    let (stamped, newest) = stamping_marks(&tx)?;
    if stamped < newest {
        return Ok(Seen::Unstamped);
    }
    for (index, table) in replica.schema.tables.iter().enumerate() {
        let table_id = replica.table_ids[index];
        if !look_at(&tx, table, table_id)?.intact() || !counts_agree(&tx, table, table_id)? {
            return Ok(Seen::ToRepair);
        }
    }
    Ok(Seen::Sound)
}

/// What a synced table shows of its capture, as both the read snapshot and
/// the repair look at it (so that what the one calls sound, the other
/// leaves alone).
struct TableCapture {
    /// How the table differs from the schema (its being gone is one way).
    problems: Vec<String>,
    form: TriggerForm,
    triggers: Triggers,
}

impl TableCapture {
    fn intact(&self) -> bool {
        self.problems.is_empty() && self.triggers == Triggers::Intact
    }
}

fn look_at(conn: &Connection, table: &Table, table_id: i64) -> Result<TableCapture, ClientError> {
    let problems = table_problems(conn, table)?.unwrap_or_else(|| vec!["the table is missing".into()]);
    let form = trigger_form(conn, table)?;
    let triggers = triggers_of(conn, table, table_id, form)?;
    Ok(TableCapture { problems, form, triggers })
}

/// Whether `table` holds as many rows as rowsync believes it does.
fn counts_agree(conn: &Connection, table: &Table, table_id: i64) -> Result<bool, ClientError> {
    let believed: Option<i64> =
        conn.query_row("SELECT live FROM _rowsync_tables WHERE id = ?", [table_id], |row| row.get(0))?;
    Ok(believed == Some(count_rows(conn, table)?))
}

/// The rows `table` holds.
fn count_rows(conn: &Connection, table: &Table) -> Result<i64, ClientError> {
    Ok(conn.query_row(&format!("SELECT count(*) FROM \"{}\"", table.name), [], |row| row.get(0))?)
}

/// Compares the rows of schema table `index` with the rows rowsync believes
/// exist, queues an insert for each row it did not know and a delete for
/// each row that is gone, and counts the table afresh. Returns (inserts,
/// deletes) queued.
fn compare_rows(replica: &Replica, conn: &Connection, index: usize) -> Result<(usize, usize), ClientError> {
    let table = &replica.schema.tables[index];
    let table_id = replica.table_ids[index];
    let mut believed: Vec<SqlValue> = Vec::new();
    {
        let mut rows = conn.prepare_cached("SELECT pk, clocks FROM _rowsync_rows WHERE tbl = ?")?;
        let mut rows = rows.query([table_id])?;
        while let Some(row) = rows.next()? {
            let json: String = row.get(1)?;
            let clocks = read_clocks(&json)?;
            if clocks.is_visible() {
                believed.push(row.get(0)?);
            }
        }
    }
    let key = key_expression(table, &format!("\"{}\"", table.name), trigger_form(conn, table)?);
    let present: Vec<SqlValue> = conn
        .prepare(&format!("SELECT {key} FROM \"{}\"", table.name))?
        .query_map([], |row| row.get(0))?
        .collect::<Result<_, _>>()?;
    let known: HashSet<(i64, String)> = believed.iter().map(|k| key_token(table_id, k)).collect();
    let here: HashSet<(i64, String)> = present.iter().map(|k| key_token(table_id, k)).collect();
    let mut queue = conn
        .prepare_cached("INSERT INTO _rowsync_outbox (tbl, pk, op, at, cols) VALUES (?, ?, ?, julianday('now'), ?)")?;
    let mut deletes = 0;
    for gone in believed.iter().filter(|k| !here.contains(&key_token(table_id, k))) {
        queue.execute(params![table_id, gone, OP_DELETE, 0])?;
        deletes += 1;
    }
    let mut inserts = 0;
    for new in present.iter().filter(|k| !known.contains(&key_token(table_id, k))) {
        queue.execute(params![table_id, new, OP_INSERT, -1])?;
        inserts += 1;
    }
    // Stamping the queued entries moves the count by as many as they change;
    // start it from the count that will then be right.
    stamp_rest(replica, conn)?;
    conn.execute("UPDATE _rowsync_tables SET live = ? WHERE id = ?", params![count_rows(conn, table)?, table_id])?;
    Ok((inserts, deletes))
}

/// Tables whose triggers were missing: finds the updates made while they
/// were, by comparing every cell with the server's copy of the row wherever
/// the server holds the very version rowsync last knew for it (a differing
/// value there can only be a write no trigger saw), and queues them. Runs
/// to the end before anything is pushed; a sync interrupted here does it
/// again. Returns what it found.
pub(crate) fn audit_against_server(
    replica: &Replica,
    transport: &dyn Transport,
    limit: u32,
) -> Result<Vec<String>, ClientError> {
    let audited: Vec<usize> = {
        let mut statement = replica.conn.prepare("SELECT id FROM _rowsync_tables WHERE audit = 1")?;
        let ids: Vec<i64> = statement.query_map([], |row| row.get(0))?.collect::<Result<_, _>>()?;
        ids.iter().filter_map(|id| replica.table_index.get(id).copied()).collect()
    };
    if audited.is_empty() {
        return Ok(Vec::new());
    }
    // Each page's transaction stamps what is left: a large backlog first,
    // in paced chunks.
    stamp_all_yielding(replica)?;
    let mut updates = vec![0usize; replica.schema.tables.len()];
    // A site that is nobody's origin: no state is left out as an echo.
    let everything = SiteId::server();
    let mut cursor = 0;
    loop {
        // A download from the start that is never sent back: it compares
        // the rows there are, and a delete it misses changes nothing here.
        let full = Some(u64::MAX);
        let request = PullRequest { site: everything.clone(), cursor, limit, known: None, full };
        let mut page = transport.pull(&request)?;
        let tx = Transaction::new_unchecked(&replica.conn, TransactionBehavior::Immediate)?;
        stamp_rest(replica, &tx)?;
        for change in std::mem::take(&mut page.changes) {
            let decoded = decode_change(&replica.schema, change)
                .map_err(|e| ClientError::Protocol(format!("pulled change does not fit the schema: {e}")))?;
            if !audited.contains(&decoded.table) {
                continue;
            }
            let table_id = replica.table_ids[decoded.table];
            let local_key = stored_key(&tx, &decoded.key)?;
            let Some(clocks) = load_clocks(&tx, table_id, &local_key)? else { continue };
            let Some(row) = replica.read_row(&tx, decoded.table, &decoded.key)? else { continue };
            let mut bits = 0i64;
            for (column, cell) in decoded.state.cells.iter().enumerate() {
                let Some((value, version)) = cell else { continue };
                if clocks.cells.get(column).and_then(Option::as_ref) == Some(version) && !row[column].same_as(value) {
                    bits |= 1i64 << column.min(OVERFLOW_BIT);
                }
            }
            if bits != 0 && clocks.is_visible() {
                tx.execute(
                    "INSERT INTO _rowsync_outbox (tbl, pk, op, at, cols) VALUES (?, ?, ?, julianday('now'), ?)",
                    params![table_id, local_key, OP_UPDATE, bits],
                )?;
                updates[decoded.table] += 1;
            }
        }
        stamp_rest(replica, &tx)?;
        if !page.more {
            for &index in &audited {
                tx.execute("UPDATE _rowsync_tables SET audit = 0 WHERE id = ?", [replica.table_ids[index]])?;
            }
        }
        tx.commit()?;
        if !page.more {
            break;
        }
        cursor = page.cursor;
    }
    Ok(audited
        .iter()
        .map(|&index| {
            format!(
                "table {}: {} row(s) updated while its capture triggers were missing were found by comparing \
                 with the server, and queued",
                replica.schema.tables[index].name, updates[index]
            )
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::replica::test_replica;
    use crate::stamp::stamp_all;

    /// Capture that saw every write is checked in a read snapshot: the
    /// check goes through while the app holds the write lock. A delete no
    /// trigger saw is still found, and queued under the lock.
    #[test]
    fn counts_that_agree_are_compared_without_the_write_lock() {
        let dir = tempfile::TempDir::new().unwrap();
        let (replica, app) = test_replica(dir.path(), "CREATE TABLE notes (id TEXT PRIMARY KEY, body TEXT);");
        app.execute_batch(
            "CREATE UNIQUE INDEX app_bodies ON notes (body); INSERT INTO notes VALUES ('a', 'x'), ('b', 'y')",
        )
        .unwrap();
        stamp_all(&replica).unwrap();
        // Waiting for the lock would fail at once.
        replica.conn.busy_timeout(Duration::ZERO).unwrap();

        app.execute_batch("BEGIN IMMEDIATE; INSERT INTO notes VALUES ('c', 'z')").unwrap();
        assert_eq!(check_capture(&replica, RowCounts::Compare).unwrap(), Vec::<String>::new());
        app.execute_batch("ROLLBACK").unwrap();

        // Note 'a' goes without its delete trigger firing; 'd' is written
        // after the stamping, so the check stamps it first.
        app.execute("INSERT OR REPLACE INTO notes VALUES ('d', 'x')", []).unwrap();
        let notes = check_capture(&replica, RowCounts::Compare).unwrap();
        assert_eq!(notes.len(), 1, "{notes:?}");
        assert!(notes[0].starts_with("1 row(s) of table notes were deleted"), "{notes:?}");
        let queued: i64 = app
            .query_row("SELECT count(*) FROM _rowsync_outbox WHERE pk = 'a' AND op = ?", [OP_DELETE], |r| r.get(0))
            .unwrap();
        assert_eq!(queued, 1);
        assert_eq!(check_capture(&replica, RowCounts::Compare).unwrap(), Vec::<String>::new(), "repaired");
    }
}
