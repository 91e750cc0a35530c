//! The embedded default store: one SQLite file.
//!
//! SQLite has a single writer, and a push takes the write lock up front
//! (`BEGIN IMMEDIATE`), so positions are handed out in commit order by
//! construction: no transaction can commit a lower position after a higher
//! one is visible.

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use rowsync_core::ddl::{self, Dialect};
use rowsync_core::horizon::Horizon;
use rowsync_proto::{Hlc, Schema, SiteId, Table, Value};
use sqlx::query::Query;
use sqlx::sqlite::{SqliteArguments, SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqlitePool};

use super::collect::{collect, read_horizon, META_HORIZON};
use super::plan::{row_values, IncomingRow, RowId, RowWrite, Stored};
use super::push::{push_batch, DirectEntry, MarkRow, PushTransaction, SiteMark};
use super::{
    decode_stored, token_from_row, CheckedBatch, PullPage, PullParams, Pushed, Revoke, Store, StoreError, TokenRow,
};
use crate::auth::TokenRecord;

const BOOKKEEPING: [&str; 9] = [
    "CREATE TABLE IF NOT EXISTS rowsync_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS rowsync_positions (id INTEGER PRIMARY KEY CHECK (id = 1), last INTEGER NOT NULL)",
    "INSERT OR IGNORE INTO rowsync_positions (id, last) VALUES (1, 0)",
    "CREATE TABLE IF NOT EXISTS rowsync_rows (tbl TEXT NOT NULL, pk TEXT NOT NULL, pos INTEGER NOT NULL, \
     state TEXT NOT NULL, origin TEXT, size INTEGER, PRIMARY KEY (tbl, pk))",
    "CREATE UNIQUE INDEX IF NOT EXISTS rowsync_rows_pos ON rowsync_rows (pos)",
    "CREATE TABLE IF NOT EXISTS rowsync_sites (site TEXT PRIMARY KEY, hwm INTEGER NOT NULL, batch INTEGER)",
    "CREATE TABLE IF NOT EXISTS rowsync_tokens (id TEXT PRIMARY KEY, usr TEXT NOT NULL, hash TEXT NOT NULL, \
     created INTEGER NOT NULL, expires INTEGER, revoked INTEGER)",
    // Rows written directly (not through rowsync), noted by the capture
    // triggers; and the marker that makes the triggers skip rowsync's own
    // writes (held only inside a push transaction, never committed).
    "CREATE TABLE IF NOT EXISTS rowsync_direct (id INTEGER PRIMARY KEY, tbl TEXT NOT NULL, pk TEXT NOT NULL, \
     at INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS rowsync_applying (id INTEGER PRIMARY KEY)",
];
const MARK_APPLYING: &str = "INSERT INTO rowsync_applying (id) VALUES (1)";
const UNMARK_APPLYING: &str = "DELETE FROM rowsync_applying";
const ANY_DIRECT: &str = "SELECT EXISTS (SELECT 1 FROM rowsync_direct)";
const SELECT_DIRECT: &str = "SELECT id, tbl, pk, at FROM rowsync_direct ORDER BY id";
/// The writer's clock in Unix milliseconds, in any SQLite version a writer
/// may run (the trigger runs in the writer's).
const NOW_MS: &str = "CAST((julianday('now') - 2440587.5) * 86400000.0 AS INTEGER)";

/// The capture triggers of `table`: each write not made by rowsync notes
/// the table and the key (old and new, for an update) in `rowsync_direct`.
fn capture_triggers(table: &Table) -> Vec<String> {
    let quote = |name: &str| Dialect::Sqlite.quote(name);
    let key = |row: &str| {
        let parts: Vec<String> = table
            .primary_key
            .iter()
            .map(|&c| {
                let column = format!("{row}.{}", quote(&table.columns[c].name));
                format!("CASE WHEN typeof({column}) = 'blob' THEN json_object('blob', hex({column})) ELSE {column} END")
            })
            .collect();
        format!("json_array({})", parts.join(", "))
    };
    let literal = table.name.replace('\'', "''");
    let name = |what: &str| quote(&format!("rowsync_direct_{}_{what}", table.name));
    let on = |what: &str| {
        format!(
            "CREATE TRIGGER IF NOT EXISTS {} AFTER {what} ON {} WHEN NOT EXISTS (SELECT 1 FROM rowsync_applying) BEGIN ",
            name(&what.to_lowercase()),
            quote(&table.name)
        )
    };
    vec![
        format!(
            "{}INSERT INTO rowsync_direct (tbl, pk, at) VALUES ('{literal}', {}, {NOW_MS}); END",
            on("INSERT"),
            key("NEW")
        ),
        format!(
            "{}INSERT INTO rowsync_direct (tbl, pk, at) VALUES ('{literal}', {old}, {NOW_MS}); \
             INSERT INTO rowsync_direct (tbl, pk, at) SELECT '{literal}', {new}, {NOW_MS} WHERE {new} IS NOT {old}; END",
            on("UPDATE"),
            old = key("OLD"),
            new = key("NEW")
        ),
        format!(
            "{}INSERT INTO rowsync_direct (tbl, pk, at) VALUES ('{literal}', {}, {NOW_MS}); END",
            on("DELETE"),
            key("OLD")
        ),
    ]
}

/// Rows whose state holds a delete, after a position (tombstone candidates).
const TOMBSTONES: &str = "SELECT pos, tbl, pk, state FROM rowsync_rows WHERE pos > ? AND state LIKE '%\"deleted\"%' \
     ORDER BY pos LIMIT ?";
const FORGET_ROW: &str = "DELETE FROM rowsync_rows WHERE tbl = ? AND pk = ? AND pos = ?";
/// A value of `rowsync_meta` (see `store::META_*` for the keys).
const SELECT_META: &str = "SELECT value FROM rowsync_meta WHERE key = ?";
const SAVE_META: &str =
    "INSERT INTO rowsync_meta (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value";
const SELECT_MARK: &str = "SELECT hwm, batch, usr FROM rowsync_sites WHERE site = ?";
const UPSERT_HWM: &str = "INSERT INTO rowsync_sites (site, hwm, batch, usr) VALUES (?, ?, ?, ?) \
     ON CONFLICT (site) DO UPDATE SET hwm = MAX(hwm, excluded.hwm), batch = excluded.batch, usr = excluded.usr";
const SELECT_POSITION: &str = "SELECT last FROM rowsync_positions WHERE id = 1";
const UPDATE_POSITION: &str = "UPDATE rowsync_positions SET last = ? WHERE id = 1";
/// Columns added to the bookkeeping after databases were first made:
/// states' sizes (NULL: measured when pulled), the id of each site's last
/// request applied, the owner of each private row, the user of each site.
const ADDED_COLUMNS: [(&str, &str, &str); 4] = [
    ("rowsync_rows", "size", "INTEGER"),
    ("rowsync_sites", "batch", "INTEGER"),
    ("rowsync_rows", "owner", "TEXT"),
    ("rowsync_sites", "usr", "TEXT"),
];
const HAS_COLUMN: &str = "SELECT count(*) FROM pragma_table_info(?) WHERE name = ?";
/// A pull page and, in the same snapshot, what lies beyond it (see
/// `store::PulledRow`); parameters: inline state size, cursor, span end,
/// user, site, rows; cursor, span end, user; span end, user.
const PULL: &str = "SELECT * FROM (SELECT 0, pos, coalesce(size, length(state)), \
     CASE WHEN coalesce(size, length(state)) > ? THEN NULL ELSE state END FROM rowsync_rows \
     WHERE pos > ? AND pos <= ? AND (owner IS NULL OR owner = ?) AND (origin = ?) IS NOT TRUE ORDER BY pos LIMIT ?) \
     UNION ALL SELECT 1, (SELECT pos FROM rowsync_rows \
     WHERE pos > ? AND pos <= ? AND (owner IS NULL OR owner = ?) ORDER BY pos DESC LIMIT 1), \
     CASE WHEN (SELECT pos FROM rowsync_rows WHERE pos > ? AND (owner IS NULL OR owner = ?) ORDER BY pos LIMIT 1) IS NULL THEN 0 ELSE 1 END, NULL";
const PULL_ONE: &str = "SELECT state FROM rowsync_rows WHERE pos = ?";
const INSERT_TOKEN: &str = "INSERT INTO rowsync_tokens (id, usr, hash, created, expires) VALUES (?, ?, ?, ?, ?)";
const SELECT_TOKEN: &str = "SELECT id, usr, hash, created, expires, revoked FROM rowsync_tokens WHERE id = ?";
const SELECT_TOKENS: &str = "SELECT id, usr, hash, created, expires, revoked FROM rowsync_tokens ORDER BY created, id";
const REVOKE_TOKEN: &str = "UPDATE rowsync_tokens SET revoked = ? WHERE revoked IS NULL AND id = ?";
const REVOKE_USER: &str = "UPDATE rowsync_tokens SET revoked = ? WHERE revoked IS NULL AND usr = ?";
const SELECT_UNOWNED: &str = "SELECT pk, state FROM rowsync_rows WHERE tbl = ? AND owner IS NULL";
const SET_OWNER: &str = "UPDATE rowsync_rows SET owner = ? WHERE tbl = ? AND pk = ?";

/// Reads the stored states and owners of `rows` rows: parameters are
/// (table, key) pairs.
fn select_states(rows: usize) -> String {
    let pairs = vec!["(?, ?)"; rows].join(", ");
    format!("SELECT tbl, pk, state, owner FROM rowsync_rows WHERE (tbl, pk) IN ({pairs})")
}

/// Writes the states of `rows` rows: parameters are (table, key, position,
/// state, origin, size, owner).
fn upsert_states(rows: usize) -> String {
    let tuples = vec!["(?, ?, ?, ?, ?, ?, ?)"; rows].join(", ");
    format!(
        "INSERT INTO rowsync_rows (tbl, pk, pos, state, origin, size, owner) VALUES {tuples} \
         ON CONFLICT (tbl, pk) DO UPDATE SET pos = excluded.pos, state = excluded.state, origin = excluded.origin, \
         size = excluded.size, owner = excluded.owner"
    )
}

/// The embedded SQLite store.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
    push_delay: Option<std::time::Duration>,
}

impl SqliteStore {
    /// Fault injection for tests: sleep inside every push transaction,
    /// after its writes and before its commit.
    pub fn with_push_delay(mut self, delay: Option<std::time::Duration>) -> Self {
        self.push_delay = delay;
        self
    }

    /// Opens (creating when missing) the SQLite file at `path`. A
    /// connection whose transaction SQLite ended by itself is closed rather
    /// than used again (see [`still_sound`]).
    pub async fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let options = SqliteConnectOptions::from_str("sqlite://")
            .map_err(StoreError::from)?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(30))
            // sqlx hands rows over from its worker thread through a channel
            // of this many: with its default of 50, a pull page of 5,000
            // rows went back and forth between the two threads a hundred
            // times.
            .row_buffer_size(ROW_BUFFER);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .after_release(|conn, _| Box::pin(async move { still_sound(conn).await }))
            .connect_with(options)
            .await
            .map_err(|e| StoreError::Unavailable(format!("cannot open SQLite store {}: {e}", path.display())))?;
        Ok(SqliteStore { pool, push_delay: None })
    }
}

/// How many rows a query's reader may run ahead of the task taking them.
/// A client's usual pull page (5,000 rows) then crosses in two hand-overs;
/// the rows are all collected anyway, so the buffer costs no memory of its
/// own.
const ROW_BUFFER: usize = 4_096;

fn bind_value<'q>(
    query: Query<'q, Sqlite, SqliteArguments<'q>>,
    value: &Value,
) -> Query<'q, Sqlite, SqliteArguments<'q>> {
    match value {
        Value::Null => query.bind(None::<i64>),
        Value::Integer(i) => query.bind(*i),
        Value::Real(r) => query.bind(*r),
        Value::Text(s) => query.bind(s.clone()),
        Value::Blob(b) => query.bind(b.clone()),
    }
}

async fn create_bookkeeping(tx: &mut sqlx::Transaction<'static, Sqlite>) -> Result<(), StoreError> {
    for statement in BOOKKEEPING {
        sqlx::query(statement).execute(&mut **tx).await?;
    }
    for (table, column, ty) in ADDED_COLUMNS {
        let has: i64 = sqlx::query_scalar(HAS_COLUMN).bind(table).bind(column).fetch_one(&mut **tx).await?;
        if has == 0 {
            sqlx::query(&format!("ALTER TABLE {table} ADD COLUMN {column} {ty}")).execute(&mut **tx).await?;
        }
    }
    Ok(())
}

impl Store for SqliteStore {
    async fn prepare(&self) -> Result<(), StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        create_bookkeeping(&mut tx).await?;
        Ok(tx.commit().await?)
    }

    async fn install(&self, schema: Option<&Schema>) -> Result<Schema, StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        create_bookkeeping(&mut tx).await?;
        let format: Option<String> =
            sqlx::query_scalar(SELECT_META).bind(super::META_FORMAT).fetch_optional(&mut *tx).await?;
        if super::check_format(format)? {
            sqlx::query(SAVE_META).bind(super::META_FORMAT).bind(super::FORMAT.to_string()).execute(&mut *tx).await?;
        }
        let stored: Option<String> =
            sqlx::query_scalar(SELECT_META).bind(super::META_SCHEMA).fetch_optional(&mut *tx).await?;
        let installing = super::reconcile_schema(schema, stored)?;
        for (column, statement) in installing.steps(Dialect::Sqlite) {
            if let Some(column) = column {
                let has: i64 = sqlx::query_scalar(HAS_COLUMN).bind(column.0).bind(column.1).fetch_one(&mut *tx).await?;
                if has > 0 {
                    installing.kept(column);
                    continue;
                }
            }
            sqlx::query(&statement).execute(&mut *tx).await?;
        }
        if let Some(json) = installing.record()? {
            sqlx::query(SAVE_META).bind(super::META_SCHEMA).bind(json).execute(&mut *tx).await?;
        }
        installing.log();
        let schema = installing.schema;
        for table in &schema.tables {
            for trigger in capture_triggers(table) {
                sqlx::query(&trigger).execute(&mut *tx).await?;
            }
        }
        tx.commit().await?;
        Ok(schema)
    }

    async fn push(&self, schema: &Schema, batch: &CheckedBatch) -> Result<Pushed, StoreError> {
        // The write lock up front: positions follow commit order (module docs).
        let tx = SqlitePush(self.pool.begin_with("BEGIN IMMEDIATE").await?);
        push_batch(tx, schema, batch, self.push_delay).await
    }

    async fn pull(
        &self,
        cursor: u64,
        limit: u32,
        max_bytes: usize,
        site: Option<&SiteId>,
        user: Option<&str>,
    ) -> Result<PullPage, StoreError> {
        let params = PullParams::new(cursor, limit, site, user);
        let rows: Vec<super::PulledRow> = sqlx::query_as(PULL)
            .bind(super::INLINE_STATE)
            .bind(params.cursor)
            .bind(params.end)
            .bind(params.user)
            .bind(params.site)
            .bind(params.rows)
            .bind(params.cursor)
            .bind(params.end)
            .bind(params.user)
            .bind(params.end)
            .bind(params.user)
            .fetch_all(&self.pool)
            .await?;
        super::page_from_rows(rows, &params, limit, max_bytes, |pos| async move {
            Ok(sqlx::query_scalar(PULL_ONE).bind(pos).fetch_optional(&self.pool).await?)
        })
        .await
    }

    async fn site(&self, site: &SiteId) -> Result<Option<SiteMark>, StoreError> {
        let row: Option<MarkRow> = sqlx::query_as(SELECT_MARK).bind(site.as_str()).fetch_optional(&self.pool).await?;
        Ok(row.map(SiteMark::from_row))
    }

    async fn save_token(&self, token: &TokenRecord) -> Result<(), StoreError> {
        sqlx::query(INSERT_TOKEN)
            .bind(&token.id)
            .bind(&token.user)
            .bind(&token.hash)
            .bind(token.created_ms as i64)
            .bind(token.expires_ms.map(|ms| ms as i64))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn find_token(&self, id: &str) -> Result<Option<TokenRecord>, StoreError> {
        let row: Option<TokenRow> = sqlx::query_as(SELECT_TOKEN).bind(id).fetch_optional(&self.pool).await?;
        Ok(row.map(token_from_row))
    }

    async fn list_tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        let rows: Vec<TokenRow> = sqlx::query_as(SELECT_TOKENS).fetch_all(&self.pool).await?;
        Ok(rows.into_iter().map(token_from_row).collect())
    }

    async fn revoke_tokens(&self, which: Revoke<'_>, now_ms: u64) -> Result<u64, StoreError> {
        let (sql, value) = match which {
            Revoke::Id(id) => (REVOKE_TOKEN, id),
            Revoke::User(user) => (REVOKE_USER, user),
        };
        Ok(sqlx::query(sql).bind(now_ms as i64).bind(value).execute(&self.pool).await?.rows_affected())
    }

    async fn unowned_rows(&self, table: &str) -> Result<Vec<(String, String)>, StoreError> {
        Ok(sqlx::query_as(SELECT_UNOWNED).bind(table).fetch_all(&self.pool).await?)
    }

    async fn set_owners(&self, table: &str, owners: &[(String, String)]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        for (key, owner) in owners {
            sqlx::query(SET_OWNER).bind(owner).bind(table).bind(key).execute(&mut *tx).await?;
        }
        Ok(tx.commit().await?)
    }

    async fn schema_version(&self) -> Result<u64, StoreError> {
        super::recorded_version(
            sqlx::query_scalar(SELECT_META).bind(super::META_SCHEMA).fetch_optional(&self.pool).await?,
        )
    }

    async fn last_position(&self) -> Result<u64, StoreError> {
        let last: i64 = sqlx::query_scalar(SELECT_POSITION).fetch_one(&self.pool).await?;
        Ok(last as u64)
    }

    async fn drain_direct(&self, schema: &Schema, now_ms: u64) -> Result<Option<u64>, StoreError> {
        let any: bool = sqlx::query_scalar(ANY_DIRECT).fetch_one(&self.pool).await?;
        if !any {
            return Ok(None);
        }
        super::direct::drain_alone(SqlitePush(self.pool.begin_with("BEGIN IMMEDIATE").await?), schema, now_ms).await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn horizon(&self) -> Result<Horizon, StoreError> {
        let stored: Option<String> =
            sqlx::query_scalar(SELECT_META).bind(META_HORIZON).fetch_optional(&self.pool).await?;
        read_horizon(stored)
    }

    async fn collect_tombstones(&self, schema: &Schema, cutoff: Hlc) -> Result<u64, StoreError> {
        let candidates = |after: i64, limit: u32| async move {
            Ok(sqlx::query_as(TOMBSTONES).bind(after).bind(i64::from(limit)).fetch_all(&self.pool).await?)
        };
        collect(schema, cutoff, candidates, || async { Ok(SqlitePush(self.pool.begin_with("BEGIN IMMEDIATE").await?)) })
            .await
    }
}

/// A push transaction on the SQLite store: multi-row statements, chunked to
/// SQLite's parameter limit.
struct SqlitePush(sqlx::Transaction<'static, Sqlite>);

impl PushTransaction for SqlitePush {
    async fn lock_position(&mut self) -> Result<i64, StoreError> {
        // BEGIN IMMEDIATE already holds the database's write lock. The
        // marker keeps the capture triggers off rowsync's own writes.
        sqlx::query(MARK_APPLYING).execute(&mut *self.0).await?;
        Ok(sqlx::query_scalar(SELECT_POSITION).fetch_one(&mut *self.0).await?)
    }

    async fn direct_entries(&mut self) -> Result<Vec<DirectEntry>, StoreError> {
        Ok(sqlx::query_as(SELECT_DIRECT).fetch_all(&mut *self.0).await?)
    }

    async fn read_row(&mut self, table: &Table, key: &[Value]) -> Result<Option<Vec<Value>>, StoreError> {
        let sql = ddl::select_row(table, Dialect::Sqlite);
        let mut query = sqlx::query(&sql);
        for value in key {
            query = bind_value(query, value);
        }
        let Some(row) = query.fetch_optional(&mut *self.0).await? else { return Ok(None) };
        (0..table.columns.len()).map(|i| sqlite_value(&row, i)).collect::<Result<Vec<_>, _>>().map(Some)
    }

    async fn forget_direct(&mut self, ids: &[i64]) -> Result<(), StoreError> {
        for chunk in ids.chunks(ddl::rows_per_statement(1)) {
            let sql = format!("DELETE FROM rowsync_direct WHERE id IN ({})", vec!["?"; chunk.len()].join(", "));
            let mut query = sqlx::query(&sql);
            for id in chunk {
                query = query.bind(id);
            }
            query.execute(&mut *self.0).await?;
        }
        Ok(())
    }

    async fn site_mark(&mut self, site: &SiteId) -> Result<SiteMark, StoreError> {
        let row: Option<MarkRow> = sqlx::query_as(SELECT_MARK).bind(site.as_str()).fetch_optional(&mut *self.0).await?;
        Ok(row.map(SiteMark::from_row).unwrap_or_default())
    }

    async fn load_states(
        &mut self,
        schema: &Schema,
        rows: &[IncomingRow],
    ) -> Result<HashMap<RowId, Stored>, StoreError> {
        let mut stored = HashMap::with_capacity(rows.len());
        for chunk in rows.chunks(ddl::rows_per_statement(2)) {
            let sql = select_states(chunk.len());
            let mut query = sqlx::query_as::<_, (String, String, String, Option<String>)>(&sql);
            for row in chunk {
                query = query.bind(&schema.tables[row.id.0].name).bind(&row.id.1);
            }
            for (table, key, json, owner) in query.fetch_all(&mut *self.0).await? {
                let (index, state) = decode_stored(schema, &table, &json)?;
                stored.insert((index, key), Stored { state, owner });
            }
        }
        Ok(stored)
    }

    async fn save_states(&mut self, schema: &Schema, site: &SiteId, writes: &[RowWrite]) -> Result<(), StoreError> {
        for chunk in writes.chunks(ddl::rows_per_statement(7)) {
            let sql = upsert_states(chunk.len());
            let mut query = sqlx::query(&sql);
            for write in chunk {
                query = query
                    .bind(&schema.tables[write.id.0].name)
                    .bind(&write.id.1)
                    .bind(write.position)
                    .bind(&write.state_json)
                    .bind(write.echo.then_some(site.as_str()))
                    .bind(write.state_json.len() as i64)
                    .bind(write.owner.as_deref());
            }
            query.execute(&mut *self.0).await?;
        }
        Ok(())
    }

    async fn upsert_rows(&mut self, schema: &Schema, table: &Table, rows: &[&RowWrite]) -> Result<(), StoreError> {
        for chunk in rows.chunks(ddl::rows_per_statement(table.columns.len())) {
            let sql = ddl::upsert_rows(table, Dialect::Sqlite, chunk.len());
            let mut query = sqlx::query(&sql);
            for write in chunk {
                for value in row_values(schema, write) {
                    query = bind_value(query, &value);
                }
            }
            query.execute(&mut *self.0).await?;
        }
        Ok(())
    }

    async fn delete_rows(&mut self, table: &Table, rows: &[&RowWrite]) -> Result<(), StoreError> {
        for chunk in rows.chunks(ddl::rows_per_statement(table.primary_key.len())) {
            let sql = ddl::delete_rows(table, Dialect::Sqlite, chunk.len());
            let mut query = sqlx::query(&sql);
            for write in chunk {
                for value in &write.key {
                    query = bind_value(query, value);
                }
            }
            query.execute(&mut *self.0).await?;
        }
        Ok(())
    }

    async fn set_position(&mut self, last_position: i64) -> Result<(), StoreError> {
        sqlx::query(UPDATE_POSITION).bind(last_position).execute(&mut *self.0).await?;
        Ok(())
    }

    async fn record(&mut self, last_position: i64, site: &SiteId, mark: SiteMark) -> Result<(), StoreError> {
        sqlx::query(UPDATE_POSITION).bind(last_position).execute(&mut *self.0).await?;
        sqlx::query(UPSERT_HWM)
            .bind(site.as_str())
            .bind(mark.hwm as i64)
            .bind(mark.batch.map(|b| b as i64))
            .bind(mark.user.as_deref())
            .execute(&mut *self.0)
            .await?;
        Ok(())
    }

    async fn meta(&mut self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(sqlx::query_scalar(SELECT_META).bind(key).fetch_optional(&mut *self.0).await?)
    }

    async fn set_meta(&mut self, key: &str, value: &str) -> Result<(), StoreError> {
        sqlx::query(SAVE_META).bind(key).bind(value).execute(&mut *self.0).await?;
        Ok(())
    }

    async fn forget_row(&mut self, table: &str, key: &str, position: i64) -> Result<bool, StoreError> {
        let done = sqlx::query(FORGET_ROW).bind(table).bind(key).bind(position).execute(&mut *self.0).await?;
        Ok(done.rows_affected() > 0)
    }

    async fn commit(mut self) -> Result<(), StoreError> {
        sqlx::query(UNMARK_APPLYING).execute(&mut *self.0).await?;
        Ok(self.0.commit().await?)
    }
}

/// A value of a row as SQLite holds it (by its storage class).
fn sqlite_value(row: &sqlx::sqlite::SqliteRow, index: usize) -> Result<Value, StoreError> {
    use sqlx::{Row, TypeInfo, ValueRef};
    let raw = row.try_get_raw(index)?;
    if raw.is_null() {
        return Ok(Value::Null);
    }
    Ok(match raw.type_info().name() {
        "INTEGER" => Value::Integer(row.try_get(index)?),
        "REAL" => Value::Real(row.try_get(index)?),
        "BLOB" => Value::Blob(row.try_get(index)?),
        _ => Value::Text(row.try_get(index)?),
    })
}

/// Whether a connection given back to the pool can serve again. SQLite
/// rolls a transaction back by itself on some errors (a full disk, an I/O
/// error); sqlx's ROLLBACK then fails ("no transaction is active") and the
/// connection stays counted as inside a transaction, so that every later
/// BEGIN on it fails: the store would refuse every write until restarted.
/// Such a connection is closed instead (a new one is opened when needed).
async fn still_sound(conn: &mut sqlx::SqliteConnection) -> Result<bool, sqlx::Error> {
    use sqlx::TransactionManager;
    type Manager = <Sqlite as sqlx::Database>::TransactionManager;
    if Manager::get_transaction_depth(conn) == 0 {
        return Ok(true);
    }
    // A transaction dropped without COMMIT has its ROLLBACK queued: once a
    // statement after it has run, the count says whether it took.
    sqlx::query("SELECT 1").execute(&mut *conn).await?;
    Ok(Manager::get_transaction_depth(conn) == 0)
}
