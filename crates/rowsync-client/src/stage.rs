//! Preparing a pulled page before its write transaction, so that the
//! transaction itself is short.
//!
//! The app waits while sync holds the file's write lock, and a page's
//! transaction is sized to about a slice (see the `pace` module): the less
//! each row costs inside it, the more rows a slice moves. For most rows of
//! a page, what to write is known before the transaction begins:
//!
//! - Rows the replica holds no versions for (a new replica's first download
//!   is nothing else): the pulled state is the row's whole state (merging
//!   it into nothing would give it back unchanged:
//!   `RowState::merges_into_nothing_unchanged`).
//! - Rows it holds (an incremental pull is mostly these): the merge can be
//!   worked out from the stored versions alone (`Clocks::landing`), which
//!   tells which columns take the pulled values; the row keeps its own
//!   values in the others (read in the same statement that writes it). The
//!   row is updated in place, deleted, or left alone.
//!
//! Those rows are decoded, merged and their versions encoded here, without
//! the lock, and written into temporary tables (`temp._rowsync_stage_*`: a
//! connection's temporary database is its own, and writing it locks nothing
//! the app uses). The transaction then moves them into the synced table and
//! `_rowsync_rows` with a few `INSERT ... SELECT`s (and a `DELETE`), inside
//! SQLite, and the tables are emptied after it.
//!
//! The rows that must be merged one by one, as `apply` does (a row a
//! pulled delete removes while it has writes not pushed yet, which are
//! held; every row of a manual table; a row that comes twice in a page; and,
//! where the app has triggers of its own on the table, every row the
//! replica holds, so that those triggers see plain updates), are merged in
//! page order with the staged rows around them: an app's UNIQUE index may
//! depend on that order. Within a run of staged rows, deletes go first (a
//! row that leaves only frees values), then the rows the replica held, in
//! page order, then the new rows (which only take values).
//!
//! Which rows the replica holds versions for, and those versions, are read
//! when staging (a read, which does not keep the app waiting). Inside the
//! transaction, once the writes made meanwhile are stamped, only the rows
//! of those writes are looked for among the staged ones: a staged row the
//! app wrote in between is merged one by one like the others. Between
//! staging and the transaction nothing but stamping gives a row versions or
//! changes them (a replica's pages are applied one at a time, by the sync
//! that holds its lock), and stamping goes in outbox order: the rows that
//! may have gained versions are those of the outbox entries past the
//! stamping mark staging saw. (Were a page applied in between without the
//! lock, through `apply_page` or a driver of one's own, a row new to the
//! replica that it gave versions would fail the `_rowsync_rows` insert of
//! the transaction, which then changes nothing, and the page would be
//! staged again; a row the replica held would not be caught, so a driver
//! of one's own must apply pages one at a time, as the sync's lock does.)

use std::borrow::Cow;
use std::collections::HashSet;

use rowsync_core::change::{decode_change, DecodedChange};
use rowsync_core::clocks::{Clocks, Landing, LiveRows};
use rowsync_core::ddl::{upsert_select, Dialect};
use rowsync_core::RowState;
use rowsync_proto::{ConflictStrategy, Hlc, RowChange, Table, Value};
use rusqlite::types::{ToSqlOutput, Value as SqlValue, ValueRef};
use rusqlite::{params, CachedStatement, Connection, Transaction, TransactionBehavior};

use crate::bookkeeping::read_clocks;
use crate::error::ClientError;
use crate::outbox::unpushed_rows;
use crate::replica::Replica;
use crate::stamp::stamping_marks;
use crate::values::{bind, key_token, stored_key, to_sql};

/// A pulled page, decoded, with the rows that need no merging staged.
pub(crate) struct Staged {
    pub changes: Vec<DecodedChange>,
    /// The stored key of each change (as `_rowsync_rows` and the outbox
    /// name rows).
    pub keys: Vec<SqlValue>,
    /// The changes (indexes) to merge one by one with the replica's
    /// versions, in page order.
    pub general: Vec<usize>,
    /// Per change, the schema table whose staging table holds it, if any.
    staged_in: Vec<Option<usize>>,
    /// Per change, how many rows it makes appear in its table once
    /// written (-1 for a row it deletes).
    moves: Vec<i64>,
    /// Per change, whether the replica held versions for its row (see
    /// [`Staged::land_held`]).
    held: Vec<bool>,
    /// The schema tables whose staging tables this page filled.
    tables: Vec<usize>,
    /// The newest clock reading the page carries.
    pub newest: Option<Hlc>,
    /// The stamping mark (the newest outbox entry stamped) as staging saw
    /// it: the versions of every entry up to it were looked up then.
    stamped: i64,
}

/// The statements that stage a synced table's rows and move them in.
/// Staging tables are named after the table's id and width, so that a
/// table that gained columns gets a new one.
pub(crate) struct StageSql {
    create: String,
    insert: String,
    /// The staged rows whose row the replica holds versions for, with
    /// those versions.
    known: String,
    /// Recording where a row the replica holds lands (see
    /// [`Staged::land_held`]).
    land: String,
    /// The staged rows the replica holds versions for.
    held: String,
    /// The staged rows written here after outbox entry `?1`.
    written_since: String,
    forget: String,
    /// Moving the staged rows of positions `?1` to `?2` (excluded) in:
    /// the rows they delete, the rows the replica held and those new to
    /// it, the versions of rows new to the replica and of rows it held.
    delete: String,
    rows_held: String,
    rows: String,
    clocks: String,
    reclock: String,
    seen: String,
    clear: String,
}

impl StageSql {
    pub(crate) fn new(table: &Table, table_id: i64) -> StageSql {
        let width = table.columns.len();
        let name = format!("temp.\"_rowsync_stage_{table_id}_{width}\"");
        let values: Vec<String> = (0..width).map(|i| format!("c{i}")).collect();
        let marks = vec!["?"; width + 7].join(", ");
        let range = "n >= ?1 AND n < ?2";
        let quote = |name: &str| Dialect::Sqlite.quote(name);
        let key_columns: Vec<String> = table.primary_key.iter().map(|&i| quote(&table.columns[i].name)).collect();
        let staged_key: Vec<String> = table.primary_key.iter().map(|&i| format!("c{i}")).collect();
        // A held row's values: the pulled one in a column the merge took,
        // the row's own in the others (a row that comes back takes them all).
        let held_values: Vec<String> = (0..width)
            .map(|i| match table.is_key_column(i) {
                true => format!("s.c{i}"),
                false => format!(
                    "iif(NOT s.was_visible OR substr(s.taken, {}, 1) = '1', s.c{i}, d.{})",
                    i + 1,
                    quote(&table.columns[i].name)
                ),
            })
            .collect();
        let on_key: Vec<String> =
            table.primary_key.iter().map(|&i| format!("d.{} = s.c{i}", quote(&table.columns[i].name))).collect();
        StageSql {
            create: format!(
                "CREATE TEMP TABLE IF NOT EXISTS \"_rowsync_stage_{table_id}_{width}\" \
                 (n INTEGER PRIMARY KEY, pk, held INTEGER NOT NULL, was_visible INTEGER NOT NULL, \
                 visible INTEGER NOT NULL, clocks TEXT, taken TEXT, {})",
                values.join(", ")
            ),
            insert: format!("INSERT INTO {name} VALUES ({marks})"),
            // The staged rows drive the lookup (CROSS JOIN keeps that
            // order), with one cursor on `_rowsync_rows` for them all.
            known: format!(
                "SELECT s.n, r.clocks FROM {name} s CROSS JOIN main._rowsync_rows r \
                 WHERE r.tbl = {table_id} AND r.pk = s.pk"
            ),
            land: format!(
                "UPDATE {name} SET held = 1, was_visible = ?2, visible = ?3, clocks = ?4, taken = ?5 WHERE n = ?1"
            ),
            held: format!("SELECT n FROM {name} WHERE held"),
            written_since: format!(
                "SELECT n FROM {name} WHERE pk IN \
                 (SELECT pk FROM main._rowsync_outbox WHERE id > ?1 AND tbl = {table_id})"
            ),
            forget: format!("DELETE FROM {name} WHERE n = ?"),
            delete: format!(
                "DELETE FROM main.{} WHERE ({}) IN (SELECT {} FROM {name} \
                 WHERE held AND was_visible AND NOT visible AND clocks IS NOT NULL AND {range})",
                quote(&table.name),
                key_columns.join(", "),
                staged_key.join(", ")
            ),
            // A held row the table no longer has (deleted where no trigger
            // saw it, which the capture check finds) stays deleted, as an
            // `UPDATE` would leave it.
            rows_held: upsert_select(
                table,
                &format!(
                    "SELECT {} FROM {name} AS s LEFT JOIN main.{} AS d ON {} \
                     WHERE s.held AND s.visible AND s.clocks IS NOT NULL AND s.n >= ?1 AND s.n < ?2 \
                     AND (NOT s.was_visible OR d.{} IS NOT NULL) ORDER BY s.n",
                    held_values.join(", "),
                    quote(&table.name),
                    on_key.join(" AND "),
                    key_columns[0]
                ),
            ),
            rows: upsert_select(
                table,
                &format!("SELECT {} FROM {name} WHERE NOT held AND visible AND {range} ORDER BY n", values.join(", ")),
            ),
            // Rows new to the replica are inserted: were one given versions
            // since staging (see the module's documentation), the insert
            // fails and the page changes nothing.
            clocks: format!(
                "INSERT INTO main._rowsync_rows (tbl, pk, clocks) \
                 SELECT {table_id}, pk, clocks FROM {name} WHERE NOT held AND {range} ORDER BY n"
            ),
            reclock: format!(
                "INSERT INTO main._rowsync_rows (tbl, pk, clocks) \
                 SELECT {table_id}, pk, clocks FROM {name} WHERE held AND clocks IS NOT NULL AND {range} \
                 ON CONFLICT (tbl, pk) DO UPDATE SET clocks = excluded.clocks"
            ),
            seen: format!(
                "INSERT OR IGNORE INTO main._rowsync_seen (tbl, pk) \
                 SELECT {table_id}, pk FROM {name} WHERE n >= ?1 AND n < ?2"
            ),
            clear: format!("DELETE FROM {name}"),
        }
    }
}

/// Decodes `page` and stages what needs no merging with values in view;
/// takes no lock on the replica file. Rows the replica holds versions for
/// are staged where those versions say how they merge
/// ([`Staged::land_held`]); the others of them, and a row that comes again
/// in the same page, are left to be merged one by one. Decoding takes the
/// changes' values over rather than copy them.
pub(crate) fn stage(replica: &Replica, changes: Vec<RowChange>) -> Result<Staged, ClientError> {
    let changes: Vec<DecodedChange> = changes
        .into_iter()
        .map(|change| {
            decode_change(&replica.schema, change)
                .map_err(|e| ClientError::Protocol(format!("pulled change does not fit the schema: {e}")))
        })
        .collect::<Result<_, _>>()?;
    let newest = changes.iter().flat_map(|c| c.state.versions()).map(|v| v.hlc).max();
    let conn = &replica.conn;
    // Only the temporary database is written: the file stays the app's.
    let tx = Transaction::new_unchecked(conn, TransactionBehavior::Deferred)?;
    let mut staged = Staged {
        keys: Vec::with_capacity(changes.len()),
        general: Vec::new(),
        staged_in: vec![None; changes.len()],
        moves: vec![0; changes.len()],
        held: vec![false; changes.len()],
        tables: Vec::new(),
        newest,
        changes: Vec::new(),
        stamped: 0,
    };
    let mut seen = HashSet::new();
    // The insert of the table the last row went to (a page's rows are
    // mostly of one table): looked up in the statement cache once per run.
    let mut inserting: Option<(usize, CachedStatement)> = None;
    for (n, decoded) in changes.iter().enumerate() {
        let key = stored_key(&tx, &decoded.key)?;
        let table = &replica.schema.tables[decoded.table];
        let again = !seen.insert(key_token(decoded.table as i64, &key));
        staged.keys.push(key);
        let Some(clocks) = whole_state(table, decoded).filter(|_| !again) else {
            staged.general.push(n);
            continue;
        };
        let sql = &replica.row_sql[decoded.table].stage;
        if !staged.tables.contains(&decoded.table) {
            tx.execute(&sql.create, [])?;
            tx.execute(&sql.clear, [])?;
            staged.tables.push(decoded.table);
        }
        let state = &decoded.state;
        let visible = state.is_visible();
        staged.moves[n] = visible as i64;
        let head = [
            ToSqlOutput::from(n as i64),
            ToSqlOutput::Borrowed(ValueRef::from(&staged.keys[n])),
            ToSqlOutput::from(false),
            ToSqlOutput::from(false),
            ToSqlOutput::from(visible),
            ToSqlOutput::from(clocks.as_str()),
            ToSqlOutput::from(rusqlite::types::Null),
        ];
        let values = head.into_iter().chain(row_values(table, state, &decoded.key));
        let insert = match &mut inserting {
            Some((of, insert)) if *of == decoded.table => insert,
            _ => &mut inserting.insert((decoded.table, tx.prepare_cached(&sql.insert)?)).1,
        };
        insert.execute(rusqlite::params_from_iter(values))?;
        staged.staged_in[n] = Some(decoded.table);
    }
    drop(inserting);
    staged.changes = changes;
    // The rows the replica holds versions for are found here, without the
    // lock (a read of the file, one snapshot with the mark); the
    // transaction looks for those written since.
    staged.stamped = stamping_marks(&tx)?.0;
    staged.land_held(replica, &tx)?;
    tx.commit()?;
    Ok(staged)
}

/// The stored versions of `decoded`'s row once it is applied to a replica
/// that holds no versions for it, where the pulled state is then the row's
/// whole state, as it came (`None` where that is not for staging: manual
/// tables keep conflicts and writes aside per row, and a change that
/// changes nothing, or that the merge would rework, is left to the
/// general way).
fn whole_state(table: &Table, decoded: &DecodedChange) -> Option<String> {
    if table.conflict == ConflictStrategy::Manual || !decoded.state.merges_into_nothing_unchanged(table.columns.len()) {
        return None;
    }
    Some(Clocks::from_state(&decoded.state).to_json())
}

/// The row's values in table column order ([`RowState::row_values`]),
/// bound where they are.
fn row_values<'a>(table: &'a Table, state: &'a RowState, key: &'a [Value]) -> impl Iterator<Item = ToSqlOutput<'a>> {
    (0..table.columns.len()).map(move |index| match state.value_at(table, key, index) {
        Cow::Borrowed(value) => bind(value),
        Cow::Owned(value) => ToSqlOutput::Owned(to_sql(&value)),
    })
}

impl Staged {
    /// While staging, in the snapshot the stamping mark was read in: finds
    /// the staged rows the replica holds versions for, and works out where
    /// each lands ([`Clocks::landing`]). Such a row stays staged, with its
    /// merged versions and the columns that take the pulled values, and is
    /// written in bulk: updated in place, deleted, or left alone when the
    /// merge changes nothing. The others (those `landing` leaves to a
    /// merge with more in view, and a row a pulled delete removes while it
    /// has writes not pushed yet, which must be held) are handed to
    /// [`Staged::general`].
    fn land_held(&mut self, replica: &Replica, conn: &Connection) -> Result<(), ClientError> {
        let mut unpushed: Option<HashSet<(i64, String)>> = None;
        for table_index in self.tables.clone() {
            let table = &replica.schema.tables[table_index];
            let sql = &replica.row_sql[table_index].stage;
            let known: Vec<(i64, String)> = conn
                .prepare_cached(&sql.known)?
                .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
                .collect::<Result<_, _>>()?;
            for (n, stored) in known {
                let landing = read_clocks(&stored)?.landing(table, &self.changes[n as usize].state);
                let (was_visible, visible, clocks, taken) = match landing {
                    Some(Landing::Unchanged) => (false, false, None, Vec::new()),
                    Some(Landing::Whole { clocks, taken, was_visible, visible }) => {
                        (was_visible, visible, Some(clocks), taken)
                    }
                    None => {
                        self.merge_one_by_one(replica, conn, table_index, n)?;
                        continue;
                    }
                };
                if was_visible && !visible {
                    let unpushed = match &mut unpushed {
                        Some(rows) => rows,
                        None => unpushed.insert(unpushed_rows(conn, i64::MAX)?),
                    };
                    if unpushed.contains(&key_token(replica.table_ids[table_index], &self.keys[n as usize])) {
                        self.merge_one_by_one(replica, conn, table_index, n)?;
                        continue;
                    }
                }
                let clocks = clocks.map(|clocks| clocks.to_json());
                let taken: String =
                    (0..table.columns.len()).map(|i| if taken.contains(&i) { '1' } else { '0' }).collect();
                conn.prepare_cached(&sql.land)?.execute(params![n, was_visible, visible, clocks, taken])?;
                self.held[n as usize] = true;
                self.moves[n as usize] = visible as i64 - was_visible as i64;
            }
        }
        self.general.sort_unstable();
        Ok(())
    }

    /// Takes staged change `n` (of schema table `table`) out of its staging
    /// table and hands it to [`Staged::general`].
    fn merge_one_by_one(
        &mut self,
        replica: &Replica,
        conn: &Connection,
        table: usize,
        n: i64,
    ) -> Result<(), ClientError> {
        conn.prepare_cached(&replica.row_sql[table].stage.forget)?.execute(params![n])?;
        self.staged_in[n as usize] = None;
        self.general.push(n as usize);
        Ok(())
    }

    /// In the page's write transaction, where the app has triggers of its
    /// own on synced tables: hands the staged rows the replica held to
    /// [`Staged::general`], so that the app's triggers see each as the
    /// update (of the columns that changed) or the delete it is, not as an
    /// upsert of every column.
    pub(crate) fn take_held(&mut self, replica: &Replica, conn: &Connection) -> Result<(), ClientError> {
        if self.held.contains(&true) {
            self.take(replica, conn, |sql| &sql.held, &[])?;
        }
        Ok(())
    }

    /// In the page's write transaction, once every local write is stamped:
    /// hands the staged rows of the writes past the stamping mark staging
    /// saw (made since, or made before but not stamped then) to
    /// [`Staged::general`], to be merged with their versions. Where more
    /// entries than the page has rows are past the mark, each staged row is
    /// looked up in `_rowsync_rows` instead, as when staging.
    pub(crate) fn take_written_since(&mut self, replica: &Replica, conn: &Connection) -> Result<(), ClientError> {
        let (_, newest) = stamping_marks(conn)?;
        if newest <= self.stamped {
            return Ok(());
        }
        if newest - self.stamped > self.changes.len() as i64 {
            return self.take(replica, conn, |sql| &sql.known, &[]);
        }
        let stamped = self.stamped;
        self.take(replica, conn, |sql| &sql.written_since, &[stamped])
    }

    /// Hands the staged rows that `query` (one of [`StageSql`]'s, with
    /// `params`) finds to [`Staged::general`].
    fn take(
        &mut self,
        replica: &Replica,
        conn: &Connection,
        query: impl Fn(&StageSql) -> &String,
        params: &[i64],
    ) -> Result<(), ClientError> {
        for table in self.tables.clone() {
            let sql = &replica.row_sql[table].stage;
            let found: Vec<i64> = conn
                .prepare_cached(query(sql))?
                .query_map(rusqlite::params_from_iter(params), |row| row.get(0))?
                .collect::<Result<_, _>>()?;
            for n in found {
                self.merge_one_by_one(replica, conn, table, n)?;
            }
        }
        self.general.sort_unstable();
        Ok(())
    }

    /// In the page's write transaction: writes the staged rows among the
    /// changes `from..to` (their values, their versions and, for a
    /// reconciling download, that they were seen), counting the rows that
    /// appear in `live`. Returns how many rows it wrote. Called between
    /// the rows merged one by one, so that the page is written in its
    /// order (an app's UNIQUE index may depend on it).
    pub(crate) fn write(
        &self,
        replica: &Replica,
        conn: &Connection,
        (from, to): (usize, usize),
        reconciling: bool,
        live: &mut LiveRows,
    ) -> Result<usize, ClientError> {
        let mut written = 0;
        for &table in &self.tables {
            let mut rows = (from..to).filter(|&n| self.staged_in[n] == Some(table)).peekable();
            if rows.peek().is_none() {
                continue;
            }
            let (mut moved, mut held) = (0, false);
            for n in rows {
                moved += self.moves[n];
                held |= self.held[n];
            }
            let sql = &replica.row_sql[table].stage;
            let range = params![from as i64, to as i64];
            // An app's UNIQUE index may need an order: deletes first (a row
            // that leaves only frees values), then the rows the replica held
            // (in page order: one may give up a value another takes), then
            // the new rows (which only take values).
            if held {
                conn.prepare_cached(&sql.delete)?.execute(range)?;
                conn.prepare_cached(&sql.rows_held)?.execute(range)?;
            }
            conn.prepare_cached(&sql.rows)?.execute(range)?;
            live.add(replica.table_ids[table], moved);
            written += conn.prepare_cached(&sql.clocks)?.execute(range)?;
            if held {
                written += conn.prepare_cached(&sql.reclock)?.execute(range)?;
            }
            if reconciling {
                conn.prepare_cached(&sql.seen)?.execute(range)?;
            }
        }
        Ok(written)
    }

    /// Empties the staging tables once the page is written (they hold its
    /// values, and would otherwise until the next page).
    pub(crate) fn clear(&self, replica: &Replica) {
        for &table in &self.tables {
            if let Err(error) =
                replica.conn.prepare_cached(&replica.row_sql[table].stage.clear).and_then(|mut s| s.execute([]))
            {
                tracing::warn!(%error, "emptying a staging table after a pulled page");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::replica::test_replica;
    use rowsync_proto::{Cell, Hlc, PullResponse, SiteId, Value, Version};

    use super::*;
    use crate::apply::{apply_page, apply_staged};

    /// A contact as a device wrote it whole at `ms`.
    fn contact(id: &str, name: &str, email: &str, ms: u64) -> RowChange {
        let version = Version { hlc: Hlc::from_millis(ms), site: SiteId::from_bytes([3; 16]) };
        let cell = |column: &str, value: &str| Cell {
            column: column.into(),
            value: Value::Text(value.into()),
            version: None,
            base: None,
            memory: None,
        };
        RowChange {
            table: "contacts".into(),
            key: vec![Value::Text(id.into())],
            alive: Some(version.clone()),
            version: Some(version),
            deleted: None,
            cells: vec![cell("name", name), cell("email", email)],
            conflicts: Vec::new(),
        }
    }

    fn page(changes: Vec<RowChange>, cursor: u64) -> PullResponse {
        PullResponse { changes, cursor, more: false, schema_version: None, began: None }
    }

    fn replica(dir: &tempfile::TempDir) -> (Replica, Connection) {
        test_replica(dir.path(), "CREATE TABLE contacts (id TEXT PRIMARY KEY, name TEXT NOT NULL, email TEXT);")
    }

    /// A replica whose app keeps emails unique with an index of its own,
    /// holding the contacts of a first page.
    fn with_unique_emails(dir: &tempfile::TempDir, first: Vec<RowChange>) -> (Replica, Connection) {
        let (replica, app) = replica(dir);
        app.execute("CREATE UNIQUE INDEX contacts_email ON contacts (email)", []).unwrap();
        apply_page(&replica, page(first, 1)).unwrap();
        (replica, app)
    }

    fn contacts(app: &Connection) -> Vec<(String, String, Option<String>)> {
        let mut statement = app.prepare("SELECT id, name, email FROM contacts ORDER BY id").unwrap();
        statement
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    fn row(id: &str, name: &str, email: Option<&str>) -> (String, String, Option<String>) {
        (id.into(), name.into(), email.map(Into::into))
    }

    /// Applies `pulled` as page 7, staged once the app inserted the contacts
    /// `before` (not stamped yet) and applied once it inserted `between`,
    /// each an `(id, name)`.
    fn apply_around_app_writes(
        replica: &Replica,
        app: &Connection,
        before: &[(&str, &str)],
        pulled: Vec<RowChange>,
        between: &[(&str, &str)],
    ) {
        let insert = |rows: &[(&str, &str)]| {
            for &(id, name) in rows {
                app.execute("INSERT INTO contacts (id, name) VALUES (?, ?)", [id, name]).unwrap();
            }
        };
        insert(before);
        let mut pulled = page(pulled, 7);
        let staged = stage(replica, std::mem::take(&mut pulled.changes)).unwrap();
        assert_eq!(staged.general, Vec::<usize>::new(), "a row the replica holds no versions for is staged");
        insert(between);
        apply_staged(replica, &pulled, staged).unwrap();
    }

    /// A row the app writes after its page was staged, before the page's
    /// transaction, is merged with the pulled state, not written over:
    /// the app's newer write stays, and stays queued for the server.
    #[test]
    fn a_row_written_while_its_page_was_staged_keeps_the_apps_write() {
        let dir = tempfile::TempDir::new().unwrap();
        let (replica, app) = replica(&dir);
        let pulled = vec![contact("ann", "Ann (pulled)", "ann@pulled", 1_000)];
        apply_around_app_writes(&replica, &app, &[], pulled, &[("ann", "Ann (mine)")]);

        assert_eq!(contacts(&app), vec![row("ann", "Ann (mine)", None)], "the app's insert is newer in every column");
        let status = replica.status().unwrap();
        assert_eq!((status.cursor, status.pending_changes), (7, 1), "the page is applied and the insert still queued");

        // A row nobody wrote here goes in whole, with the page's versions.
        apply_page(&replica, page(vec![contact("bob", "Bob", "bob@pulled", 1_000)], 8)).unwrap();
        assert_eq!(contacts(&app)[1], row("bob", "Bob", Some("bob@pulled")));
        assert_eq!(replica.status().unwrap().pending_changes, 1, "a pulled row is not queued");
    }

    /// So is one the app writes among more rows than the page holds (the
    /// transaction then looks each staged row up rather than each write).
    #[test]
    fn a_row_written_among_many_while_its_page_was_staged_keeps_the_apps_write() {
        let dir = tempfile::TempDir::new().unwrap();
        let (replica, app) = replica(&dir);
        let pulled = vec![contact("ann", "Ann (pulled)", "ann@pulled", 1_000)];
        apply_around_app_writes(&replica, &app, &[], pulled, &[("bea", "mine"), ("ann", "mine"), ("cal", "mine")]);

        let ann = row("ann", "mine", None);
        assert_eq!(contacts(&app), vec![ann, row("bea", "mine", None), row("cal", "mine", None)]);
        assert_eq!(replica.status().unwrap().pending_changes, 3, "the app's inserts are still queued");
    }

    /// And one the app wrote before the page was staged, not stamped yet
    /// then (staging finds no versions for it): the transaction looks at
    /// the writes past the stamping mark, not only at those made since.
    #[test]
    fn a_row_written_before_its_page_was_staged_and_not_yet_stamped_keeps_the_apps_write() {
        let dir = tempfile::TempDir::new().unwrap();
        let (replica, app) = replica(&dir);
        let pulled = vec![
            contact("ann", "Ann (pulled)", "ann@pulled", 1_000),
            contact("dan", "Dan", "dan@pulled", 1_000),
            contact("eve", "Eve", "eve@pulled", 1_000),
        ];
        apply_around_app_writes(&replica, &app, &[("ann", "Ann (mine)")], pulled, &[("bea", "Bea (mine)")]);

        let [dan, eve] = [row("dan", "Dan", Some("dan@pulled")), row("eve", "Eve", Some("eve@pulled"))];
        assert_eq!(contacts(&app), vec![row("ann", "Ann (mine)", None), row("bea", "Bea (mine)", None), dan, eve]);
        assert_eq!(replica.status().unwrap().pending_changes, 2, "the app's inserts are still queued");
    }

    /// Rows merged one by one and staged rows are written in page order: an
    /// email that moves from one contact to a new one, under the app's own
    /// UNIQUE index, leaves the first before it reaches the second. The
    /// first is merged one by one (the app renamed it just before, and the
    /// rename was not stamped yet when the page was staged).
    #[test]
    fn a_page_is_written_in_its_order() {
        let dir = tempfile::TempDir::new().unwrap();
        let (replica, app) = with_unique_emails(&dir, vec![contact("ann", "Ann", "shared@example.com", 1_000)]);
        app.execute("UPDATE contacts SET name = 'Ann (mine)' WHERE id = 'ann'", []).unwrap();

        let moved =
            vec![contact("ann", "Ann", "ann@example.com", 2_000), contact("bob", "Bob", "shared@example.com", 2_000)];
        apply_page(&replica, page(moved, 2)).unwrap();
        assert_eq!(
            contacts(&app),
            vec![row("ann", "Ann (mine)", Some("ann@example.com")), row("bob", "Bob", Some("shared@example.com"))]
        );
    }

    /// So are the rows the replica holds when they are staged: the same
    /// move, and a contact deleted whose email a new one takes.
    #[test]
    fn staged_rows_the_replica_holds_are_written_in_page_order() {
        let dir = tempfile::TempDir::new().unwrap();
        let first =
            vec![contact("ann", "Ann", "shared@example.com", 1_000), contact("cy", "Cy", "cy@example.com", 1_000)];
        let (replica, app) = with_unique_emails(&dir, first);

        let mut moved = page(
            vec![
                contact("ann", "Ann", "ann@example.com", 2_000),
                contact("bob", "Bob", "shared@example.com", 2_000),
                deleted("cy", 2_000),
                contact("dee", "Dee", "cy@example.com", 2_000),
            ],
            2,
        );
        let staged = stage(&replica, std::mem::take(&mut moved.changes)).unwrap();
        assert_eq!(staged.general, Vec::<usize>::new(), "rows the pulled states decide are staged");
        apply_staged(&replica, &moved, staged).unwrap();
        assert_eq!(
            contacts(&app),
            vec![
                row("ann", "Ann", Some("ann@example.com")),
                row("bob", "Bob", Some("shared@example.com")),
                row("dee", "Dee", Some("cy@example.com"))
            ]
        );
    }

    /// A row the app deleted where no trigger saw it (`INSERT OR REPLACE`
    /// over its own UNIQUE index) is not brought back by a pulled update
    /// of it, so that the capture check still finds the delete; the newer
    /// name the app wrote on another held row stays too, beside the
    /// pulled email.
    #[test]
    fn a_pulled_update_leaves_a_row_deleted_behind_captures_back_deleted() {
        let dir = tempfile::TempDir::new().unwrap();
        let first = vec![contact("ann", "Ann", "ann@example.com", 1_000), contact("cy", "Cy", "cy@example.com", 1_000)];
        let (replica, app) = with_unique_emails(&dir, first);
        app.execute("INSERT OR REPLACE INTO contacts (id, name, email) VALUES ('bob', 'Bob', 'ann@example.com')", [])
            .unwrap();
        app.execute("UPDATE contacts SET name = 'Cy (mine)' WHERE id = 'cy'", []).unwrap();
        crate::stamp::stamp_all(&replica).unwrap();

        let mut updated = page(
            vec![contact("ann", "Ann B", "ann.b@example.com", 2_000), contact("cy", "Cy", "cy.b@example.com", 2_000)],
            2,
        );
        let staged = stage(&replica, std::mem::take(&mut updated.changes)).unwrap();
        assert_eq!(staged.general, Vec::<usize>::new(), "both rows are written in bulk");
        apply_staged(&replica, &updated, staged).unwrap();
        assert_eq!(
            contacts(&app),
            vec![row("bob", "Bob", Some("ann@example.com")), row("cy", "Cy (mine)", Some("cy.b@example.com"))]
        );
    }

    /// A row that comes twice in one page is staged once and merged the
    /// second time: the newer state wins, whichever comes first.
    #[test]
    fn a_row_twice_in_a_page_ends_with_its_newer_state() {
        let dir = tempfile::TempDir::new().unwrap();
        let (replica, app) = replica(&dir);
        let twice = page(
            vec![
                contact("cy", "Cy (older)", "cy@example.com", 1_000),
                contact("cy", "Cy (newer)", "cy@example.com", 2_000),
                contact("dee", "Dee (newer)", "dee@example.com", 2_000),
                contact("dee", "Dee (older)", "dee@example.com", 1_000),
            ],
            3,
        );
        apply_page(&replica, twice).unwrap();
        assert_eq!(
            contacts(&app),
            vec![row("cy", "Cy (newer)", Some("cy@example.com")), row("dee", "Dee (newer)", Some("dee@example.com"))]
        );
    }

    /// A contact deleted at `ms`, as the server sends a tombstone.
    fn deleted(id: &str, ms: u64) -> RowChange {
        let version = Version { hlc: Hlc::from_millis(ms), site: SiteId::from_bytes([3; 16]) };
        RowChange {
            table: "contacts".into(),
            key: vec![Value::Text(id.into())],
            alive: None,
            version: None,
            deleted: Some(version),
            cells: Vec::new(),
            conflicts: Vec::new(),
        }
    }

    /// The number of rows rowsync believes the table holds (checked before
    /// each sync against the table's count, to notice deletes no trigger
    /// saw) stays true when staged rows, rows merged one by one and
    /// tombstones mix in a page.
    #[test]
    fn a_mixed_page_keeps_the_count_of_live_rows_true() {
        let dir = tempfile::TempDir::new().unwrap();
        let (replica, app) = replica(&dir);
        let believed = || -> i64 { app.query_row("SELECT live FROM _rowsync_tables", [], |r| r.get(0)).unwrap() };
        let count = || -> i64 { app.query_row("SELECT count(*) FROM contacts", [], |r| r.get(0)).unwrap() };
        apply_page(&replica, page(vec![contact("ann", "Ann", "a@x", 1_000), contact("bob", "Bob", "b@x", 1_000)], 1))
            .unwrap();
        assert_eq!((believed(), count()), (2, 2));

        let mixed = page(
            vec![
                contact("cy", "Cy", "c@x", 2_000),     // new: staged, visible
                deleted("ann", 2_000),                 // held, deleted: staged
                deleted("ghost", 2_000),               // never seen, deleted: staged, not visible
                contact("bob", "Bob B", "b@x", 2_000), // held, changed: staged
                contact("dee", "Dee", "d@x", 2_000),   // new
                contact("dee", "Dee", "d@x", 1_500),   // twice: merged one by one, older
                deleted("cy", 3_000),                  // staged above, deleted again in the page
            ],
            2,
        );
        apply_page(&replica, mixed).unwrap();
        assert_eq!(count(), 2, "bob and dee remain");
        assert_eq!(believed(), count(), "the believed count drifted from the table's");
    }
}
