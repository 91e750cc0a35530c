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
use rowsync_core::RowState;
use rowsync_proto::{Schema, SiteId, Table, Value};
use sqlx::query::Query;
use sqlx::sqlite::{SqliteArguments, SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqlitePool};

use super::plan::{row_values, IncomingRow, RowId, RowWrite};
use super::push::{push_batch, PushTransaction, SiteMark};
use super::{decode_stored, CheckedBatch, PullPage, Pushed, Store, StoreError};

const BOOKKEEPING: [&str; 6] = [
    "CREATE TABLE IF NOT EXISTS rowsync_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS rowsync_positions (id INTEGER PRIMARY KEY CHECK (id = 1), last INTEGER NOT NULL)",
    "INSERT OR IGNORE INTO rowsync_positions (id, last) VALUES (1, 0)",
    "CREATE TABLE IF NOT EXISTS rowsync_rows (tbl TEXT NOT NULL, pk TEXT NOT NULL, pos INTEGER NOT NULL, \
     state TEXT NOT NULL, origin TEXT, size INTEGER, PRIMARY KEY (tbl, pk))",
    "CREATE UNIQUE INDEX IF NOT EXISTS rowsync_rows_pos ON rowsync_rows (pos)",
    "CREATE TABLE IF NOT EXISTS rowsync_sites (site TEXT PRIMARY KEY, hwm INTEGER NOT NULL, batch INTEGER)",
];

const SELECT_SCHEMA: &str = "SELECT value FROM rowsync_meta WHERE key = 'schema'";
const INSERT_SCHEMA: &str = "INSERT INTO rowsync_meta (key, value) VALUES ('schema', ?)";
const SELECT_MARK: &str = "SELECT hwm, batch FROM rowsync_sites WHERE site = ?";
const UPSERT_HWM: &str = "INSERT INTO rowsync_sites (site, hwm, batch) VALUES (?, ?, ?) \
     ON CONFLICT (site) DO UPDATE SET hwm = MAX(hwm, excluded.hwm), batch = excluded.batch";
const SELECT_POSITION: &str = "SELECT last FROM rowsync_positions WHERE id = 1";
const UPDATE_POSITION: &str = "UPDATE rowsync_positions SET last = ? WHERE id = 1";
/// Columns added to the bookkeeping after databases were first made:
/// states' sizes (NULL: measured when pulled) and the id of each site's last
/// request applied.
const ADDED_COLUMNS: [(&str, &str, &str); 2] =
    [("rowsync_rows", "size", "INTEGER"), ("rowsync_sites", "batch", "INTEGER")];
const HAS_COLUMN: &str = "SELECT count(*) FROM pragma_table_info(?) WHERE name = ?";
/// A pull page (see the module docs of `store`): position, size and, unless
/// it is an echo or large, the state of at most `limit` rows.
const PULL: &str = "SELECT pos, CASE WHEN origin = ? THEN 0 ELSE coalesce(size, length(state)) END, \
     CASE WHEN origin = ? OR coalesce(size, length(state)) > ? THEN NULL ELSE state END \
     FROM rowsync_rows WHERE pos > ? ORDER BY pos LIMIT ?";
const PULL_ONE: &str = "SELECT state FROM rowsync_rows WHERE pos = ?";

/// Reads the stored states of `rows` rows: parameters are (table, key) pairs.
fn select_states(rows: usize) -> String {
    let pairs = vec!["(?, ?)"; rows].join(", ");
    format!("SELECT tbl, pk, state FROM rowsync_rows WHERE (tbl, pk) IN ({pairs})")
}

/// Writes the states of `rows` rows: parameters are (table, key, position,
/// state, origin, size).
fn upsert_states(rows: usize) -> String {
    let tuples = vec!["(?, ?, ?, ?, ?, ?)"; rows].join(", ");
    format!(
        "INSERT INTO rowsync_rows (tbl, pk, pos, state, origin, size) VALUES {tuples} \
         ON CONFLICT (tbl, pk) DO UPDATE SET pos = excluded.pos, state = excluded.state, origin = excluded.origin, \
         size = excluded.size"
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

    /// Opens (creating when missing) the SQLite file at `path`.
    pub async fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        let options = SqliteConnectOptions::from_str("sqlite://")
            .map_err(StoreError::from)?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(30));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(options)
            .await
            .map_err(|e| StoreError::Unavailable(format!("cannot open SQLite store {}: {e}", path.display())))?;
        Ok(SqliteStore { pool, push_delay: None })
    }
}

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

impl Store for SqliteStore {
    async fn install(&self, schema: Option<&Schema>) -> Result<Schema, StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        for statement in BOOKKEEPING {
            sqlx::query(statement).execute(&mut *tx).await?;
        }
        for (table, column, ty) in ADDED_COLUMNS {
            let has: i64 = sqlx::query_scalar(HAS_COLUMN).bind(table).bind(column).fetch_one(&mut *tx).await?;
            if has == 0 {
                sqlx::query(&format!("ALTER TABLE {table} ADD COLUMN {column} {ty}")).execute(&mut *tx).await?;
            }
        }
        let stored: Option<String> = sqlx::query_scalar(SELECT_SCHEMA).fetch_optional(&mut *tx).await?;
        let (schema, fresh) = super::reconcile_schema(schema, stored)?;
        if fresh {
            for table in &schema.tables {
                let create = ddl::create_table(table, Dialect::Sqlite);
                sqlx::query(&create).execute(&mut *tx).await?;
            }
            let json = serde_json::to_string(&schema).map_err(|e| StoreError::Database(e.to_string()))?;
            sqlx::query(INSERT_SCHEMA).bind(json).execute(&mut *tx).await?;
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
    ) -> Result<PullPage, StoreError> {
        let site = site.map(SiteId::as_str);
        let rows: Vec<super::PulledRow> = sqlx::query_as(PULL)
            .bind(site)
            .bind(site)
            .bind(super::INLINE_STATE)
            .bind(cursor as i64)
            .bind(i64::from(limit) + 1)
            .fetch_all(&self.pool)
            .await?;
        super::page_from_rows(rows, cursor, limit, max_bytes, |pos| async move {
            Ok(sqlx::query_scalar(PULL_ONE).bind(pos).fetch_optional(&self.pool).await?)
        })
        .await
    }

    async fn last_batch(&self, site: &SiteId) -> Result<Option<u64>, StoreError> {
        let row: Option<(i64, Option<i64>)> =
            sqlx::query_as(SELECT_MARK).bind(site.as_str()).fetch_optional(&self.pool).await?;
        Ok(row.and_then(|(_, batch)| batch).map(|b| b as u64))
    }

    async fn last_position(&self) -> Result<u64, StoreError> {
        let last: i64 = sqlx::query_scalar(SELECT_POSITION).fetch_one(&self.pool).await?;
        Ok(last as u64)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

/// A push transaction on the SQLite store: multi-row statements, chunked to
/// SQLite's parameter limit.
struct SqlitePush(sqlx::Transaction<'static, Sqlite>);

impl PushTransaction for SqlitePush {
    async fn lock_position(&mut self) -> Result<i64, StoreError> {
        // BEGIN IMMEDIATE already holds the database's write lock.
        Ok(sqlx::query_scalar(SELECT_POSITION).fetch_one(&mut *self.0).await?)
    }

    async fn site_mark(&mut self, site: &SiteId) -> Result<SiteMark, StoreError> {
        let row: Option<(i64, Option<i64>)> =
            sqlx::query_as(SELECT_MARK).bind(site.as_str()).fetch_optional(&mut *self.0).await?;
        Ok(row.map_or(SiteMark::default(), |(hwm, batch)| SiteMark { hwm: hwm as u64, batch: batch.map(|b| b as u64) }))
    }

    async fn load_states(
        &mut self,
        schema: &Schema,
        rows: &[IncomingRow],
    ) -> Result<HashMap<RowId, RowState>, StoreError> {
        let mut stored = HashMap::with_capacity(rows.len());
        for chunk in rows.chunks(ddl::rows_per_statement(2)) {
            let sql = select_states(chunk.len());
            let mut query = sqlx::query_as::<_, (String, String, String)>(&sql);
            for row in chunk {
                query = query.bind(&schema.tables[row.id.0].name).bind(&row.id.1);
            }
            for (table, key, json) in query.fetch_all(&mut *self.0).await? {
                let (index, state) = decode_stored(schema, &table, &json)?;
                stored.insert((index, key), state);
            }
        }
        Ok(stored)
    }

    async fn save_states(&mut self, schema: &Schema, site: &SiteId, writes: &[RowWrite]) -> Result<(), StoreError> {
        for chunk in writes.chunks(ddl::rows_per_statement(6)) {
            let sql = upsert_states(chunk.len());
            let mut query = sqlx::query(&sql);
            for write in chunk {
                query = query
                    .bind(&schema.tables[write.id.0].name)
                    .bind(&write.id.1)
                    .bind(write.position)
                    .bind(&write.state_json)
                    .bind(write.echo.then_some(site.as_str()))
                    .bind(write.state_json.len() as i64);
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

    async fn record(&mut self, last_position: i64, site: &SiteId, mark: SiteMark) -> Result<(), StoreError> {
        sqlx::query(UPDATE_POSITION).bind(last_position).execute(&mut *self.0).await?;
        sqlx::query(UPSERT_HWM)
            .bind(site.as_str())
            .bind(mark.hwm as i64)
            .bind(mark.batch.map(|b| b as i64))
            .execute(&mut *self.0)
            .await?;
        Ok(())
    }

    async fn commit(self) -> Result<(), StoreError> {
        Ok(self.0.commit().await?)
    }
}
