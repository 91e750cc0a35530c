//! Preparing a pulled page before its write transaction, so that the
//! transaction itself is short.
//!
//! The app waits while sync holds the file's write lock, and a page's
//! transaction is sized to about a slice (see the `pace` module): the less
//! each row costs inside it, the more rows a slice moves. Most rows of a
//! page are rows the replica holds no versions for (a new replica's first
//! download is nothing else): the pulled state is then the row's whole
//! state, and what to write (the row's values, its versions as
//! `_rowsync_rows` stores them) is known before the transaction begins.
//! Those rows are decoded, merged and encoded here, without the lock, and
//! written into temporary tables (`temp._rowsync_stage_*`: a connection's
//! temporary database is its own, and writing it locks nothing the app
//! uses). The transaction then moves them into the synced table and
//! `_rowsync_rows` with one `INSERT ... SELECT` each, inside SQLite.
//!
//! Whether the replica holds versions for a row is settled inside the
//! transaction, after the writes made meanwhile are stamped: a staged row
//! that has some by then (the app wrote it, or another process stamped
//! it) is merged one by one like every row of a manual table (see
//! `apply`).

use rowsync_core::change::{decode_change, DecodedChange};
use rowsync_core::clocks::{Clocks, LiveRows};
use rowsync_core::ddl::upsert_select;
use rowsync_core::schema::column_default;
use rowsync_core::RowState;
use rowsync_proto::{ConflictStrategy, Hlc, PullResponse, Table, Value};
use rusqlite::types::{ToSqlOutput, Value as SqlValue, ValueRef};
use rusqlite::{params, Connection, Transaction, TransactionBehavior};

use crate::error::ClientError;
use crate::replica::Replica;
use crate::values::{bind, stored_key, to_sql};

/// A pulled page, decoded, with the rows that need no merging staged.
pub(crate) struct Staged {
    pub changes: Vec<DecodedChange>,
    /// The stored key of each change (as `_rowsync_rows` and the outbox
    /// name rows).
    pub keys: Vec<SqlValue>,
    /// The changes (indexes) to merge one by one with the replica's
    /// versions, in page order.
    pub general: Vec<usize>,
    /// Per schema table, the changes staged for it.
    staged: Vec<Vec<usize>>,
    /// Per change, whether its row is visible once staged.
    visible: Vec<bool>,
    /// The newest clock reading the page carries.
    pub newest: Option<Hlc>,
}

/// The statements that stage a synced table's rows and move them in.
/// Staging tables are named after the table's id and width, so that a
/// table that gained columns gets a new one.
pub(crate) struct StageSql {
    create: String,
    insert: String,
    /// The staged rows whose row the replica holds versions for.
    known: String,
    forget: String,
    rows: String,
    clocks: String,
    seen: String,
    clear: String,
}

impl StageSql {
    pub(crate) fn new(table: &Table, table_id: i64) -> StageSql {
        let width = table.columns.len();
        let name = format!("temp.\"_rowsync_stage_{table_id}_{width}\"");
        let values: Vec<String> = (0..width).map(|i| format!("c{i}")).collect();
        let marks = vec!["?"; width + 4].join(", ");
        StageSql {
            create: format!(
                "CREATE TEMP TABLE IF NOT EXISTS \"_rowsync_stage_{table_id}_{width}\" \
                 (n INTEGER PRIMARY KEY, pk, visible INTEGER NOT NULL, clocks TEXT NOT NULL, {})",
                values.join(", ")
            ),
            insert: format!("INSERT INTO {name} VALUES ({marks})"),
            known: format!(
                "SELECT n FROM {name} s WHERE EXISTS \
                 (SELECT 1 FROM main._rowsync_rows r WHERE r.tbl = {table_id} AND r.pk = s.pk)"
            ),
            forget: format!("DELETE FROM {name} WHERE n = ?"),
            rows: upsert_select(table, &format!("SELECT {} FROM {name} WHERE visible ORDER BY n", values.join(", "))),
            clocks: format!(
                "INSERT INTO main._rowsync_rows (tbl, pk, clocks) SELECT {table_id}, pk, clocks FROM {name} ORDER BY n"
            ),
            seen: format!("INSERT OR IGNORE INTO main._rowsync_seen (tbl, pk) SELECT {table_id}, pk FROM {name}"),
            clear: format!("DELETE FROM {name}"),
        }
    }
}

/// Decodes `page` and stages what needs no merging; takes no lock on the
/// replica file.
pub(crate) fn stage(replica: &Replica, page: &PullResponse) -> Result<Staged, ClientError> {
    let changes: Vec<DecodedChange> = page
        .changes
        .iter()
        .map(|change| {
            decode_change(&replica.schema, change)
                .map_err(|e| ClientError::Protocol(format!("pulled change does not fit the schema: {e}")))
        })
        .collect::<Result<_, _>>()?;
    let newest = changes.iter().flat_map(|c| c.state.versions()).map(|v| v.hlc).max();
    let conn = &replica.conn;
    // Only the temporary database is written: the file stays the app's.
    let tx = Transaction::new_unchecked(conn, TransactionBehavior::Deferred)?;
    let mut keys = Vec::with_capacity(changes.len());
    let mut general = Vec::new();
    let mut staged = vec![Vec::new(); replica.schema.tables.len()];
    let mut visible = vec![false; changes.len()];
    for (n, decoded) in changes.iter().enumerate() {
        keys.push(stored_key(&tx, &decoded.key)?);
        let table = &replica.schema.tables[decoded.table];
        let Some((state, clocks)) = whole_state(table, decoded) else {
            general.push(n);
            continue;
        };
        let sql = &replica.row_sql[decoded.table].stage;
        if staged[decoded.table].is_empty() {
            tx.execute(&sql.create, [])?;
            tx.execute(&sql.clear, [])?;
        }
        visible[n] = state.is_visible();
        let head = [
            ToSqlOutput::from(n as i64),
            ToSqlOutput::Borrowed(ValueRef::from(&keys[n])),
            ToSqlOutput::from(visible[n]),
            ToSqlOutput::from(clocks.as_str()),
        ];
        let values = head.into_iter().chain(row_values(table, &state, &decoded.key));
        tx.prepare_cached(&sql.insert)?.execute(rusqlite::params_from_iter(values))?;
        staged[decoded.table].push(n);
    }
    tx.commit()?;
    Ok(Staged { changes, keys, general, staged, visible, newest })
}

/// A row's state and stored versions after `decoded` is applied to a
/// replica that holds no versions for it (`None` where that is not for
/// staging: manual tables keep conflicts and writes aside per row, and a
/// change that changes nothing is left to the general way).
fn whole_state(table: &Table, decoded: &DecodedChange) -> Option<(RowState, String)> {
    if table.conflict == ConflictStrategy::Manual {
        return None;
    }
    let mut state = RowState::empty(table.columns.len());
    if !state.merge_from(&decoded.state).changed {
        return None;
    }
    let clocks = serde_json::to_string(&Clocks::from_state(&state).to_stored()).ok()?;
    Some((state, clocks))
}

/// The row's values in table column order, as [`RowState::row_values`]
/// gives them, bound where they are.
fn row_values<'a>(table: &'a Table, state: &'a RowState, key: &'a [Value]) -> impl Iterator<Item = ToSqlOutput<'a>> {
    (0..table.columns.len()).map(move |index| {
        if let Some(part) = table.primary_key.iter().position(|&column| column == index) {
            return bind(&key[part]);
        }
        match state.cells.get(index).and_then(Option::as_ref) {
            Some((value, _)) => bind(value),
            None => ToSqlOutput::Owned(to_sql(&column_default(&table.columns[index]))),
        }
    })
}

impl Staged {
    /// In the page's write transaction, once every local write is stamped:
    /// writes the staged rows the replica still holds no versions for (their
    /// values, their versions and, for a reconciling download, that they
    /// were seen), and hands the others to [`Staged::general`]. Returns how
    /// many rows it wrote.
    pub(crate) fn write(
        &mut self,
        replica: &Replica,
        conn: &Connection,
        reconciling: bool,
        live: &mut LiveRows,
    ) -> Result<usize, ClientError> {
        let mut written = 0;
        for (table, staged) in self.staged.iter().enumerate() {
            if staged.is_empty() {
                continue;
            }
            let sql = &replica.row_sql[table].stage;
            let known: Vec<i64> =
                conn.prepare_cached(&sql.known)?.query_map([], |row| row.get(0))?.collect::<Result<_, _>>()?;
            for &n in &known {
                conn.prepare_cached(&sql.forget)?.execute(params![n])?;
                self.general.push(n as usize);
            }
            conn.prepare_cached(&sql.rows)?.execute([])?;
            let visible = staged.iter().filter(|&&n| self.visible[n] && !known.contains(&(n as i64))).count();
            live.add(replica.table_ids[table], visible as i64);
            written += conn.prepare_cached(&sql.clocks)?.execute([])?;
            if reconciling {
                conn.prepare_cached(&sql.seen)?.execute([])?;
            }
        }
        self.general.sort_unstable();
        Ok(written)
    }
}

#[cfg(test)]
mod tests {
    use rowsync_core::schema::parse_schema;
    use rowsync_proto::{Cell, Hlc, RowChange, SiteId, Value, Version};

    use super::*;
    use crate::apply::apply_staged;

    fn page(id: &str, name: &str, email: &str) -> PullResponse {
        let version = Version { hlc: Hlc::from_millis(1_000), site: SiteId::from_bytes([3; 16]) };
        let cell = |column: &str, value: &str| Cell {
            column: column.into(),
            value: Value::Text(value.into()),
            version: None,
            base: None,
            memory: None,
        };
        let change = RowChange {
            table: "contacts".into(),
            key: vec![Value::Text(id.into())],
            alive: Some(version.clone()),
            version: Some(version),
            deleted: None,
            cells: vec![cell("name", name), cell("email", email)],
            conflicts: Vec::new(),
        };
        PullResponse { changes: vec![change], cursor: 7, more: false, schema_version: None, began: None }
    }

    /// A row the app writes after its page was staged, before the page's
    /// transaction, is merged with the pulled state, not written over:
    /// the app's newer write stays, and stays queued for the server.
    #[test]
    fn a_row_written_while_its_page_was_staged_keeps_the_apps_write() {
        let dir = tempfile::TempDir::new().unwrap();
        let path = dir.path().join("replica.db");
        let schema =
            parse_schema("CREATE TABLE contacts (id TEXT PRIMARY KEY, name TEXT NOT NULL, email TEXT);").unwrap();
        let replica = Replica::init(&path, "http://127.0.0.1:9", &schema, None).unwrap();
        let pulled = page("ann", "Ann (pulled)", "ann@pulled");
        let staged = stage(&replica, &pulled).unwrap();
        assert_eq!(staged.general, Vec::<usize>::new(), "a row the replica holds no versions for is staged");

        let app = Connection::open(&path).unwrap();
        app.execute("INSERT INTO contacts (id, name) VALUES ('ann', 'Ann (mine)')", []).unwrap();
        apply_staged(&replica, &pulled, staged).unwrap();

        let row: (String, Option<String>) = app
            .query_row("SELECT name, email FROM contacts WHERE id = 'ann'", [], |row| Ok((row.get(0)?, row.get(1)?)))
            .unwrap();
        assert_eq!(row, ("Ann (mine)".to_string(), None), "the app's insert is newer in every column");
        let status = replica.status().unwrap();
        assert_eq!((status.cursor, status.pending_changes), (7, 1), "the page is applied and the insert still queued");

        // A row nobody wrote here goes in whole, with the page's versions.
        let other = page("bob", "Bob", "bob@pulled");
        apply_staged(&replica, &other, stage(&replica, &other).unwrap()).unwrap();
        let row: (String, String) = app
            .query_row("SELECT name, email FROM contacts WHERE id = 'bob'", [], |row| Ok((row.get(0)?, row.get(1)?)))
            .unwrap();
        assert_eq!(row, ("Bob".to_string(), "bob@pulled".to_string()));
        assert_eq!(replica.status().unwrap().pending_changes, 1, "a pulled row is not queued");
    }
}
