//! A replica file: opening, initializing and describing it.
//!
//! Metadata lives in tables named `_rowsync_*` (see `docs/internal-tables.md`);
//! scalar settings and progress (site id, server URL, cursor, clock, last
//! sync) live as rows of `_rowsync_meta`.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use rowsync_core::capture::{key_expression, TriggerForm, METADATA_SQL, MIGRATE_TABLES, OP_INSERT};
use rowsync_core::ddl::{
    add_column, create_table, delete_row, select_row, select_rows_by_key, sqlite_declared_type, upsert_row, Dialect,
};
use rowsync_core::Addition;
use rowsync_proto::{ConflictStrategy, Schema, SiteId};
use rusqlite::types::{ToSqlOutput, Value as SqlValue};
use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};

use crate::bookkeeping::{key, meta_get, meta_set, now_text};
use crate::error::ClientError;
use crate::pace::Pacer;
use crate::stage::StageSql;
use crate::stamp::stamp_rest;
use crate::transport::{trusted_roots, ServerAccess};
use crate::triggers::{drop_triggers, install_triggers, triggers_of, Triggers};

/// How long rowsync waits for the application's write lock before giving up.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// An initialized replica file.
pub struct Replica {
    pub(crate) conn: Connection,
    pub(crate) path: String,
    pub(crate) schema: Schema,
    /// `_rowsync_tables` id of each schema table, by schema index.
    pub(crate) table_ids: Vec<i64>,
    pub(crate) table_index: HashMap<i64, usize>,
    pub(crate) site: SiteId,
    /// Per schema table, the statements that read and write one row, built
    /// once here rather than for every row of a page or batch.
    pub(crate) row_sql: Vec<RowSql>,
    /// SQLite's `schema_version` of the file when the schema was checked
    /// last: it moves with every DDL statement, among them another process
    /// taking on a new schema (see [`Replica::refresh`]).
    loaded_at: i64,
    /// The schema as `_rowsync_meta` stored it when loaded.
    loaded_json: String,
    /// Keeps the app's gap between the slices of sync's long work.
    pub(crate) pacer: Pacer,
}

/// The statements on one row of a synced table (parameters as in `ddl`).
pub(crate) struct RowSql {
    pub select: String,
    /// Up to [`ROWS_PER_READ`] rows by key (see [`Replica::read_rows`]).
    pub select_many: String,
    pub upsert: String,
    pub delete: String,
    /// Staging pulled rows (see the `stage` module).
    pub stage: StageSql,
}

/// Rows read by key in one statement (see [`Replica::read_rows`]).
const ROWS_PER_READ: usize = 100;

/// The replica file format this version writes. Files of earlier formats
/// (0: made before formats were numbered) are brought up to it in place
/// when opened; a file of a later format is refused, untouched. Files of
/// every format are kept in `crates/rowsync-testkit/tests/data/` and opened
/// by the tests, so that a later version keeps reading them.
pub const FORMAT: i64 = 1;

/// The most page cache a replica connection keeps, in KiB.
const CACHE_KIB: i64 = 32 * 1024;

/// Prepared statements kept per connection.
const STATEMENT_CACHE: usize = 256;

fn open_connection(path: &Path) -> Result<Connection, ClientError> {
    let conn = Connection::open(path)?;
    // SQLite opens a file it cannot write read-only, and fails later on.
    if conn.is_readonly(rusqlite::DatabaseName::Main)? {
        return Err(ClientError::ReadOnly { path: path.display().to_string() });
    }
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // A sync round uses a few dozen distinct statements; rusqlite keeps 16
    // by default, and re-parsing the rest each time cost more than running them.
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    // Whichever connection commits once the WAL has passed its threshold
    // copies it into the file (a checkpoint, with an fsync) before its commit
    // returns. Sync writes the most, and checkpoints at a lower threshold
    // than the app's default (1,000 pages), so that the app's commits do not
    // pay for copying sync's pages.
    conn.pragma_update(None, "wal_autocheckpoint", 256)?;
    // Rows arrive in key order of nobody's choosing (UUIDs), so each write
    // lands on a leaf page of its own. With SQLite's default 2 MB of cache, a
    // large file's pages were read again for nearly every row, and slices
    // that took 25 ms on one page took 40 to 50 on the next (measured at
    // 1,000,000 rows by `rowsync bench sync`). The cache grows only as pages
    // are read, to at most this much.
    conn.pragma_update(None, "cache_size", -CACHE_KIB)?;
    // Pulled pages are staged in temporary tables (see `stage`): in memory.
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    Ok(conn)
}

impl Replica {
    /// Makes the SQLite file at `path` a replica of the server at
    /// `server_url` serving `schema`: creates missing tables, the metadata
    /// and the capture triggers, and queues rows already present as inserts.
    /// Running it again on a replica of the same schema changes nothing.
    pub fn init(path: &Path, server_url: &str, schema: &Schema, token: Option<&str>) -> Result<Replica, ClientError> {
        // A replica already: it takes on the schema as at a sync (a grown
        // one is added to the file; any other change is refused).
        match Replica::open(path) {
            Ok(mut replica) => replica.adopt_schema(schema)?,
            Err(ClientError::NotAReplica { .. }) => {}
            Err(error) => return Err(error),
        }
        let mut conn = open_connection(path)?;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute_batch(METADATA_SQL)?;
        migrate(&tx)?;
        for table in &schema.tables {
            check_or_create_table(&tx, table)?;
        }
        for table in &schema.tables {
            let known: Option<i64> = tx
                .query_row("SELECT id FROM _rowsync_tables WHERE name = ?", [&table.name], |row| row.get(0))
                .optional()?;
            if known.is_none() {
                register_table(&tx, table)?;
            }
        }
        if meta_get::<String>(&tx, key::SITE_ID)?.is_none() {
            let site = SiteId::from_bytes(rand::random());
            meta_set(&tx, key::SITE_ID, site.as_str())?;
            // Known from the start, so that even a copy made before the first
            // push is told apart (files of earlier versions learn it at theirs).
            meta_set(&tx, key::KNOWN_BATCHES, "[]")?;
        }
        meta_set(&tx, key::SERVER_URL, server_url)?;
        if let Some(token) = token {
            meta_set(&tx, key::TOKEN, token)?;
        }
        let schema_json = serde_json::to_string(schema).map_err(|e| ClientError::Corrupt(e.to_string()))?;
        meta_set(&tx, key::SCHEMA, schema_json)?;
        tx.commit()?;
        drop(conn);
        Replica::open(path)
    }

    /// Opens an initialized replica.
    pub fn open(path: &Path) -> Result<Replica, ClientError> {
        let display = path.display().to_string();
        if !path.exists() {
            return Err(ClientError::NotAReplica { path: display });
        }
        let conn = open_connection(path)?;
        let has_meta: bool = conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_rowsync_meta')",
            [],
            |row| row.get(0),
        )?;
        if !has_meta {
            return Err(ClientError::NotAReplica { path: display });
        }
        // A file of a newer format is left as it is: this version cannot
        // know what its tables mean.
        let format: i64 = meta_get(&conn, key::FORMAT)?.unwrap_or(0);
        if format > FORMAT {
            return Err(ClientError::FormatTooNew { path: display, format, known: FORMAT });
        }
        // Tables and columns added by later versions (a no-op when all exist).
        conn.execute_batch(METADATA_SQL)?;
        migrate(&conn)?;
        if format < FORMAT {
            meta_set(&conn, key::FORMAT, FORMAT)?;
        }
        let site: String = meta_get(&conn, key::SITE_ID)?.ok_or_else(|| ClientError::Corrupt("no site id".into()))?;
        let site = SiteId::try_from(site).map_err(ClientError::Corrupt)?;
        let mut replica = Replica {
            conn,
            path: display,
            schema: Schema::default(),
            table_ids: Vec::new(),
            table_index: HashMap::new(),
            site,
            row_sql: Vec::new(),
            loaded_at: 0,
            loaded_json: String::new(),
            pacer: Pacer::default(),
        };
        replica.load_schema()?;
        Ok(replica)
    }

    /// Reads the schema the file stores, and what depends on it.
    fn load_schema(&mut self) -> Result<(), ClientError> {
        let conn = &self.conn;
        let loaded_at: i64 = conn.query_row("PRAGMA schema_version", [], |row| row.get(0))?;
        let json: String =
            meta_get(conn, key::SCHEMA)?.ok_or_else(|| ClientError::NotAReplica { path: self.path.clone() })?;
        let schema: Schema =
            serde_json::from_str(&json).map_err(|e| ClientError::Corrupt(format!("stored schema: {e}")))?;
        let mut table_ids = Vec::with_capacity(schema.tables.len());
        let mut table_index = HashMap::new();
        for (index, table) in schema.tables.iter().enumerate() {
            let id: i64 = conn
                .query_row("SELECT id FROM _rowsync_tables WHERE name = ?", [&table.name], |row| row.get(0))
                .optional()?
                .ok_or_else(|| ClientError::Corrupt(format!("table {} is not registered", table.name)))?;
            table_ids.push(id);
            table_index.insert(id, index);
        }
        self.row_sql = schema
            .tables
            .iter()
            .zip(&table_ids)
            .map(|(t, &id)| RowSql {
                select: select_row(t, Dialect::Sqlite),
                select_many: select_rows_by_key(t, ROWS_PER_READ),
                upsert: upsert_row(t, Dialect::Sqlite),
                delete: delete_row(t, Dialect::Sqlite),
                stage: StageSql::new(t, id),
            })
            .collect();
        (self.schema, self.table_ids, self.table_index) = (schema, table_ids, table_index);
        (self.loaded_at, self.loaded_json) = (loaded_at, json);
        Ok(())
    }

    /// Loads the schema again when another process (a sync, the agent)
    /// took on a new one since it was loaded: writes are then versioned
    /// and rows read with every column the file now has. One read of the
    /// file's header when nothing changed.
    pub fn refresh(&mut self) -> Result<(), ClientError> {
        let now: i64 = self.conn.query_row("PRAGMA schema_version", [], |row| row.get(0))?;
        if now == self.loaded_at {
            return Ok(());
        }
        // Any DDL moves it (the app's own, the audit re-installing
        // triggers): the stored schema says whether there is anything to
        // load.
        if meta_get::<String>(&self.conn, key::SCHEMA)?.as_deref() == Some(self.loaded_json.as_str()) {
            self.loaded_at = now;
            return Ok(());
        }
        self.load_schema()
    }

    /// The rows of table `table` under `keys`, in their order (`None`: no
    /// such row), read [`ROWS_PER_READ`] at a time: one statement instead
    /// of one per row.
    pub(crate) fn read_rows(
        &self,
        conn: &Connection,
        table: usize,
        keys: &[&[rowsync_proto::Value]],
    ) -> Result<Vec<Option<Vec<rowsync_proto::Value>>>, ClientError> {
        let width = self.schema.tables[table].columns.len();
        let key_width = self.schema.tables[table].primary_key.len();
        let mut rows = vec![None; keys.len()];
        let mut statement = conn.prepare_cached(&self.row_sql[table].select_many)?;
        if let Some(key) = keys.iter().find(|key| key.len() != key_width) {
            return Err(ClientError::Corrupt(format!("a key of {} values for a key of {key_width}", key.len())));
        }
        for (chunk, listed) in keys.chunks(ROWS_PER_READ).enumerate() {
            let mut params = Vec::with_capacity(ROWS_PER_READ * (1 + key_width));
            for (n, key) in listed.iter().enumerate() {
                params.push(ToSqlOutput::Owned(SqlValue::Integer((chunk * ROWS_PER_READ + n) as i64)));
                params.extend(key.iter().map(crate::values::bind));
            }
            params.resize_with(ROWS_PER_READ * (1 + key_width), || ToSqlOutput::Owned(SqlValue::Null));
            let mut found = statement.query(rusqlite::params_from_iter(params))?;
            while let Some(row) = found.next()? {
                let place: usize = row.get::<_, i64>(0)?.try_into().unwrap_or(usize::MAX);
                let values =
                    (1..=width).map(|i| row.get_ref(i).map(crate::values::from_sql)).collect::<Result<_, _>>()?;
                if let Some(slot) = rows.get_mut(place) {
                    *slot = Some(values);
                }
            }
        }
        Ok(rows)
    }

    /// The current values of one row of schema table `table` (`None` when
    /// it does not exist here), read on `conn`.
    pub(crate) fn read_row(
        &self,
        conn: &Connection,
        table: usize,
        key: &[rowsync_proto::Value],
    ) -> Result<Option<Vec<rowsync_proto::Value>>, ClientError> {
        let width = self.schema.tables[table].columns.len();
        let params: Vec<rusqlite::types::Value> = key.iter().map(crate::values::to_sql).collect();
        Ok(conn
            .prepare_cached(&self.row_sql[table].select)?
            .query_row(rusqlite::params_from_iter(params), |row| {
                (0..width).map(|i| row.get_ref(i).map(crate::values::from_sql)).collect()
            })
            .optional()?)
    }

    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// Takes on the server's current schema: its conflict strategies, and
    /// the tables and columns it gained since (see
    /// [`rowsync_core::evolution`]), added to the file in one transaction
    /// with their capture triggers; rows already here are not fetched
    /// again. Any other change is refused, naming it. Called at the start
    /// of every sync, and when a pulled page says the server's schema is
    /// newer.
    pub fn adopt_schema(&mut self, server: &Schema) -> Result<(), ClientError> {
        self.refresh()?;
        if self.schema == *server {
            return Ok(());
        }
        let evolution = rowsync_core::evolve(&self.schema, server).map_err(|refused| {
            let changes: Vec<String> = refused.iter().map(ToString::to_string).collect();
            ClientError::SchemaMismatch(format!(
                "the server's schema changed in ways {} cannot follow: {}",
                self.path,
                changes.join("; ")
            ))
        })?;
        let tx = Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)?;
        if !evolution.additions.is_empty() {
            // Writes recorded under the old schema are versioned under it:
            // a write of a whole row (an insert, any write under the row
            // strategy) then claims only the columns it knew.
            stamp_rest(self, &tx)?;
        }
        // Tables that grow: schema index, table id, trigger form, and whether
        // their triggers still capture.
        let mut altered: Vec<(usize, i64, TriggerForm, bool)> = Vec::new();
        for addition in &evolution.additions {
            match *addition {
                Addition::Table { table } => {
                    let table = &server.tables[table];
                    check_or_create_table(&tx, table)?;
                    register_table(&tx, table)?;
                }
                Addition::Column { table: grown, column } => {
                    let table = &server.tables[grown];
                    let name = &table.columns[column].name;
                    if column_exists(&tx, &table.name, name)? {
                        return Err(ClientError::SchemaMismatch(format!(
                            "the server added column {}.{name}, but table {} of {} already has a column of that \
                             name: rename or drop the local one, then sync again",
                            table.name, table.name, self.path
                        )));
                    }
                    if !altered.iter().any(|&(index, ..)| index == grown) {
                        let old = self.schema.table_index(&table.name).expect("a table that grows was synced before");
                        let (id, form) = (self.table_ids[old], trigger_form(&tx, table)?);
                        // Triggers an app's table rebuild took away are
                        // left for the audit, which finds the writes that
                        // escaped them only when it sees them gone.
                        let capturing = triggers_of(&tx, &self.schema.tables[old], id, form)? != Triggers::Missing;
                        altered.push((grown, id, form, capturing));
                    }
                    tx.execute_batch(&add_column(table, column, Dialect::Sqlite))?;
                }
            }
        }
        // The update trigger names every column it watches.
        for &(index, id, form, capturing) in &altered {
            if capturing {
                drop_triggers(&tx, &server.tables[index])?;
                install_triggers(&tx, &server.tables[index], id, form)?;
            }
        }
        // A table leaving the manual strategy leaves its conflicts behind:
        // from now on its edits merge by version, and none can be resolved.
        for (old, id) in self.schema.tables.iter().zip(&self.table_ids) {
            let now = server.table(&old.name).map(|t| t.conflict);
            if old.conflict == ConflictStrategy::Manual && now != Some(ConflictStrategy::Manual) {
                tx.execute("DELETE FROM _rowsync_conflicts WHERE tbl = ?", [id])?;
                tx.execute("UPDATE _rowsync_rows SET clocks = json_remove(clocks, '$.p', '$.h') WHERE tbl = ?", [id])?;
            }
        }
        let json = serde_json::to_string(server).map_err(|e| ClientError::Corrupt(e.to_string()))?;
        meta_set(&tx, key::SCHEMA, json)?;
        tx.commit()?;
        self.load_schema()
    }

    pub fn site(&self) -> &SiteId {
        &self.site
    }

    pub fn server_url(&self) -> Result<String, ClientError> {
        meta_get(&self.conn, key::SERVER_URL)?.ok_or_else(|| ClientError::Corrupt("no server URL".into()))
    }

    pub fn token(&self) -> Result<Option<String>, ClientError> {
        meta_get(&self.conn, key::TOKEN)
    }

    /// The server's URL, the token and the trusted CA: what a transport to
    /// this replica's server needs.
    pub fn server_access(&self) -> Result<ServerAccess, ClientError> {
        Ok(ServerAccess { url: self.server_url()?, token: self.token()?, ca_pem: meta_get(&self.conn, key::CA_PEM)? })
    }

    /// Trusts the certificates of `pem` (checked first), and only them,
    /// for the server's HTTPS from now on.
    pub fn trust_ca(&self, pem: &str) -> Result<(), ClientError> {
        trusted_roots(pem)?;
        meta_set(&self.conn, key::CA_PEM, pem)
    }

    /// The replica's own connection, for applications that prefer one handle.
    /// Writes made through it are captured like any other.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// Shifts the wall clock this replica versions its writes by, in
    /// milliseconds. For simulations and tests of clock skew: a real device
    /// has the skew of its own clock.
    pub fn set_clock_offset(&self, offset_ms: i64) -> Result<(), ClientError> {
        meta_set(&self.conn, key::CLOCK_OFFSET_MS, offset_ms)
    }

    /// Records a failed sync so that `status` shows it.
    pub(crate) fn record_error(&self, error: &ClientError) -> Result<(), ClientError> {
        let now = now_text(&self.conn)?;
        meta_set(&self.conn, key::LAST_ERROR, error.to_string())?;
        meta_set(&self.conn, key::LAST_ERROR_AT, now)?;
        Ok(())
    }

    pub(crate) fn record_success(&self) -> Result<(), ClientError> {
        let now = now_text(&self.conn)?;
        meta_set(&self.conn, key::LAST_SYNC, now)?;
        self.conn.execute("DELETE FROM _rowsync_meta WHERE key IN (?, ?)", [key::LAST_ERROR, key::LAST_ERROR_AT])?;
        Ok(())
    }
}

/// Columns of the metadata tables added after files were first made.
fn migrate(conn: &Connection) -> Result<(), ClientError> {
    let has: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM pragma_table_info('_rowsync_tables') WHERE name = 'live')",
        [],
        |row| row.get(0),
    )?;
    if !has {
        conn.execute_batch(MIGRATE_TABLES)?;
    }
    Ok(())
}

/// Registers a synced table in `_rowsync_tables`, installs its capture
/// triggers, and queues the rows already in it as inserts.
fn register_table(conn: &Connection, table: &rowsync_proto::Table) -> Result<(), ClientError> {
    // Nothing stamped yet: stamping the rows queued below counts them.
    conn.execute("INSERT INTO _rowsync_tables (name, live) VALUES (?, 0)", [&table.name])?;
    let id = conn.last_insert_rowid();
    let form = trigger_form(conn, table)?;
    install_triggers(conn, table, id, form)?;
    // Rows that were there before rowsync are queued as inserts.
    let key = key_expression(table, &format!("\"{}\"", table.name), form);
    conn.execute(
        &format!(
            "INSERT INTO _rowsync_outbox (tbl, pk, op, at, cols) SELECT ?, {key}, {OP_INSERT}, julianday('now'), -1 FROM \"{}\"",
            table.name
        ),
        [id],
    )?;
    Ok(())
}

fn column_exists(conn: &Connection, table: &str, column: &str) -> Result<bool, ClientError> {
    Ok(conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM pragma_table_info(?) WHERE name = ? COLLATE NOCASE)",
        [table, column],
        |row| row.get(0),
    )?)
}

/// Creates a missing table, or checks that an existing one has exactly the
/// server's columns, types and key.
fn check_or_create_table(conn: &Connection, table: &rowsync_proto::Table) -> Result<(), ClientError> {
    let problems = match table_problems(conn, table)? {
        None => {
            conn.execute_batch(&create_table(table, Dialect::Sqlite))?;
            return Ok(());
        }
        Some(problems) => problems,
    };
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ClientError::SchemaMismatch(format!(
            "local table {} differs from the server: {}",
            table.name,
            problems.join("; ")
        )))
    }
}

/// The form of the capture triggers the local table needs: whether its
/// one-column key may hold NULL (SQLite allows it in a non-INTEGER PRIMARY
/// KEY column not declared NOT NULL; an INTEGER PRIMARY KEY is the rowid).
pub(crate) fn trigger_form(conn: &Connection, table: &rowsync_proto::Table) -> Result<TriggerForm, ClientError> {
    let nullable_key = match table.primary_key.as_slice() {
        [key] => conn
            .prepare_cached("SELECT \"notnull\", upper(type) FROM pragma_table_info(?) WHERE name = ?")?
            .query_row(params![table.name, table.columns[*key].name], |row| {
                Ok(!row.get::<_, bool>(0)? && row.get::<_, String>(1)? != "INTEGER")
            })
            .optional()?
            .unwrap_or(false),
        _ => false,
    };
    Ok(TriggerForm::Current { nullable_key })
}

/// How the local table differs from the synced one: its columns, their
/// types and its key (`None` when there is no such table).
pub(crate) fn table_problems(
    conn: &Connection,
    table: &rowsync_proto::Table,
) -> Result<Option<Vec<String>>, ClientError> {
    let mut statement = conn.prepare_cached("SELECT name, type, pk FROM pragma_table_info(?) ORDER BY cid")?;
    let local: Vec<(String, String, i64)> = statement
        .query_map([&table.name], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?
        .collect::<Result<_, _>>()?;
    if local.is_empty() {
        return Ok(None);
    }
    let mut problems = Vec::new();
    for column in &table.columns {
        match local.iter().find(|(name, _, _)| name.eq_ignore_ascii_case(&column.name)) {
            None => problems.push(format!("column {} is missing locally", column.name)),
            Some((_, declared, _)) => {
                if sqlite_declared_type(declared) != Some(column.ty) {
                    problems.push(format!(
                        "column {} is {} locally but {} on the server",
                        column.name,
                        if declared.is_empty() { "untyped" } else { declared },
                        column.ty.sql_name()
                    ));
                }
            }
        }
    }
    for (name, _, _) in &local {
        if table.column_index(name).is_none() && !table.columns.iter().any(|c| c.name.eq_ignore_ascii_case(name)) {
            problems.push(format!("column {name} exists locally but not on the server"));
        }
    }
    let mut local_key: Vec<(i64, &str)> =
        local.iter().filter(|(_, _, pk)| *pk > 0).map(|(name, _, pk)| (*pk, name.as_str())).collect();
    local_key.sort();
    let local_key: Vec<String> = local_key.into_iter().map(|(_, n)| n.to_string()).collect();
    let server_key: Vec<String> = table.primary_key.iter().map(|&i| table.columns[i].name.clone()).collect();
    if local_key != server_key {
        problems.push(format!(
            "primary key is ({}) locally but ({}) on the server",
            local_key.join(", "),
            server_key.join(", ")
        ));
    }
    Ok(Some(problems))
}

/// A replica of the tables `schema` declares, in `dir`, for tests; and an
/// app's connection to its file.
#[cfg(test)]
pub(crate) fn test_replica(dir: &std::path::Path, schema: &str) -> (Replica, Connection) {
    let path = dir.join("replica.db");
    let schema = rowsync_core::schema::parse_schema(schema).expect("a test schema");
    let replica = Replica::init(&path, "http://127.0.0.1:9", &schema, None).expect("a test replica");
    (replica, Connection::open(&path).expect("the app's connection"))
}

#[cfg(test)]
mod tests {
    use rowsync_proto::Value;

    use super::*;

    /// Rows read many to a statement are the rows read one by one: over
    /// several statements' worth, composite keys of text and integers,
    /// blob keys, keys of rows that are not there and keys with NULL, and
    /// a table named and shaped like the statement's own list of keys.
    #[test]
    fn rows_read_many_at_once_are_the_rows_read_one_by_one() {
        let dir = tempfile::TempDir::new().unwrap();
        let (replica, _) = test_replica(
            dir.path(),
            "CREATE TABLE m (a TEXT, b INTEGER, note TEXT, PRIMARY KEY (a, b)); \
             CREATE TABLE f (k BLOB PRIMARY KEY, note TEXT); \
             CREATE TABLE k (place INTEGER PRIMARY KEY, k0 INTEGER);",
        );
        replica
            .conn
            .execute_batch(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 250) \
                 INSERT INTO m SELECT 'k' || (i % 7), i, 'note ' || i FROM n; \
                 WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 250) \
                 INSERT INTO f SELECT unhex(printf('%04x', i)), 'note ' || i FROM n; \
                 WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 250) \
                 INSERT INTO k SELECT i, i * 2 FROM n;",
            )
            .unwrap();
        let composite = |i: i64| vec![Value::Text(format!("k{}", i % 7)), Value::Integer(i)];
        let blob = |i: i64| vec![Value::Blob(vec![(i >> 8) as u8, i as u8])];
        let integer = |i: i64| vec![Value::Integer(i)];
        for (table, key) in [(0, &composite as &dyn Fn(i64) -> Vec<Value>), (1, &blob), (2, &integer)] {
            let mut keys: Vec<Vec<Value>> = (1..=260).rev().map(key).collect();
            keys.push(vec![Value::Null; keys[0].len()]);
            let listed: Vec<&[Value]> = keys.iter().map(Vec::as_slice).collect();
            let at_once = replica.read_rows(&replica.conn, table, &listed).unwrap();
            let one_by_one: Vec<_> = keys.iter().map(|k| replica.read_row(&replica.conn, table, k).unwrap()).collect();
            assert_eq!(at_once.iter().filter(|row| row.is_some()).count(), 250);
            assert_eq!(at_once, one_by_one);
        }
    }
}
