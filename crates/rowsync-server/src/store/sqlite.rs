//! The embedded default store: one SQLite file.
//!
//! SQLite has a single writer, and a push takes the write lock up front
//! (`BEGIN IMMEDIATE`), so positions are handed out in commit order by
//! construction: no transaction can commit a lower position after a higher
//! one is visible.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use rowsync_core::change::{decode_change, encode_change};
use rowsync_core::ddl::{self, Dialect};
use rowsync_core::RowState;
use rowsync_proto::{PushResponse, RowChange, Schema, SiteId, Value};
use sqlx::query::Query;
use sqlx::sqlite::{SqliteArguments, SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqlitePool};

use super::{CheckedChange, PullPage, Store, StoreError};

const BOOKKEEPING: [&str; 6] = [
    "CREATE TABLE IF NOT EXISTS rowsync_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS rowsync_positions (id INTEGER PRIMARY KEY CHECK (id = 1), last INTEGER NOT NULL)",
    "INSERT OR IGNORE INTO rowsync_positions (id, last) VALUES (1, 0)",
    "CREATE TABLE IF NOT EXISTS rowsync_rows (tbl TEXT NOT NULL, pk TEXT NOT NULL, pos INTEGER NOT NULL, \
     state TEXT NOT NULL, PRIMARY KEY (tbl, pk))",
    "CREATE UNIQUE INDEX IF NOT EXISTS rowsync_rows_pos ON rowsync_rows (pos)",
    "CREATE TABLE IF NOT EXISTS rowsync_sites (site TEXT PRIMARY KEY, hwm INTEGER NOT NULL)",
];

const SELECT_SCHEMA: &str = "SELECT value FROM rowsync_meta WHERE key = 'schema'";
const INSERT_SCHEMA: &str = "INSERT INTO rowsync_meta (key, value) VALUES ('schema', ?)";
const SELECT_HWM: &str = "SELECT hwm FROM rowsync_sites WHERE site = ?";
const UPSERT_HWM: &str = "INSERT INTO rowsync_sites (site, hwm) VALUES (?, ?) \
     ON CONFLICT (site) DO UPDATE SET hwm = MAX(hwm, excluded.hwm)";
const SELECT_POSITION: &str = "SELECT last FROM rowsync_positions WHERE id = 1";
const UPDATE_POSITION: &str = "UPDATE rowsync_positions SET last = ? WHERE id = 1";
const SELECT_STATE: &str = "SELECT state FROM rowsync_rows WHERE tbl = ? AND pk = ?";
const UPSERT_STATE: &str = "INSERT INTO rowsync_rows (tbl, pk, pos, state) VALUES (?, ?, ?, ?) \
     ON CONFLICT (tbl, pk) DO UPDATE SET pos = excluded.pos, state = excluded.state";
const PULL: &str = "SELECT pos, state FROM rowsync_rows WHERE pos > ? ORDER BY pos LIMIT ?";

/// The embedded SQLite store.
#[derive(Clone, Debug)]
pub struct SqliteStore {
    pool: SqlitePool,
}

impl SqliteStore {
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
        Ok(SqliteStore { pool })
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

/// Decodes a state this store wrote itself.
pub(crate) fn decode_stored(schema: &Schema, json: &str) -> Result<RowState, StoreError> {
    let change: RowChange = serde_json::from_str(json)
        .map_err(|e| StoreError::Conflict(format!("unreadable row state in rowsync_rows: {e}")))?;
    decode_change(schema, &change)
        .map(|d| d.state)
        .map_err(|e| StoreError::Conflict(format!("row state in rowsync_rows no longer fits the schema: {e}")))
}

impl Store for SqliteStore {
    async fn install(&self, schema: Option<&Schema>) -> Result<Schema, StoreError> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        for statement in BOOKKEEPING {
            sqlx::query(statement).execute(&mut *tx).await?;
        }
        let stored: Option<String> = sqlx::query_scalar(SELECT_SCHEMA).fetch_optional(&mut *tx).await?;
        let stored: Option<Schema> = stored
            .map(|s| serde_json::from_str(&s))
            .transpose()
            .map_err(|e| StoreError::Conflict(format!("unreadable schema in rowsync_meta: {e}")))?;
        let schema = match (schema, stored) {
            (Some(given), Some(stored)) if *given == stored => stored,
            (Some(_), Some(_)) => {
                return Err(StoreError::Conflict(
                    "this database already serves a different schema; schema changes are not supported yet, \
                     so start with the schema it was created with (or a new database)"
                        .into(),
                ))
            }
            (None, Some(stored)) => stored,
            (None, None) => {
                return Err(StoreError::Conflict("this database has no schema yet: pass --schema FILE".into()));
            }
            (Some(given), None) => {
                for table in &given.tables {
                    let create = ddl::create_table(table, Dialect::Sqlite);
                    sqlx::query(&create).execute(&mut *tx).await?;
                }
                let json = serde_json::to_string(given).map_err(|e| StoreError::Database(e.to_string()))?;
                sqlx::query(INSERT_SCHEMA).bind(json).execute(&mut *tx).await?;
                given.clone()
            }
        };
        tx.commit().await?;
        Ok(schema)
    }

    async fn push(
        &self,
        schema: &Schema,
        site: &SiteId,
        last_seq: u64,
        changes: &[CheckedChange],
    ) -> Result<PushResponse, StoreError> {
        let upserts: Vec<String> = schema.tables.iter().map(|t| ddl::upsert_row(t, Dialect::Sqlite)).collect();
        let deletes: Vec<String> = schema.tables.iter().map(|t| ddl::delete_row(t, Dialect::Sqlite)).collect();

        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let hwm: Option<i64> = sqlx::query_scalar(SELECT_HWM).bind(site.as_str()).fetch_optional(&mut *tx).await?;
        let hwm = hwm.unwrap_or(0) as u64;
        let mut position: i64 = sqlx::query_scalar(SELECT_POSITION).fetch_one(&mut *tx).await?;
        let mut applied = 0;
        for checked in changes.iter().filter(|c| c.seq > hwm) {
            applied += 1;
            let change = &checked.change;
            let table = &schema.tables[change.table];
            let key_json = serde_json::to_string(&change.key).map_err(|e| StoreError::Database(e.to_string()))?;
            let stored: Option<String> =
                sqlx::query_scalar(SELECT_STATE).bind(&table.name).bind(&key_json).fetch_optional(&mut *tx).await?;
            let mut state = match stored {
                Some(json) => decode_stored(schema, &json)?,
                None => RowState::empty(table.columns.len()),
            };
            if !state.merge_from(&change.state).changed {
                continue;
            }
            position += 1;
            let state_json = serde_json::to_string(&encode_change(table, change.key.clone(), &state))
                .map_err(|e| StoreError::Database(e.to_string()))?;
            sqlx::query(UPSERT_STATE)
                .bind(&table.name)
                .bind(&key_json)
                .bind(position)
                .bind(state_json)
                .execute(&mut *tx)
                .await?;
            if state.is_visible() {
                let mut query = sqlx::query(&upserts[change.table]);
                let mut key = change.key.iter();
                for (index, cell) in state.cells.iter().enumerate() {
                    let value = if table.is_key_column(index) {
                        key.next().cloned().unwrap_or(Value::Null)
                    } else {
                        cell.as_ref().map(|(v, _)| v.clone()).unwrap_or(Value::Null)
                    };
                    query = bind_value(query, &value);
                }
                query.execute(&mut *tx).await?;
            } else {
                let mut query = sqlx::query(&deletes[change.table]);
                for value in &change.key {
                    query = bind_value(query, value);
                }
                query.execute(&mut *tx).await?;
            }
        }
        sqlx::query(UPDATE_POSITION).bind(position).execute(&mut *tx).await?;
        let acked = hwm.max(last_seq);
        sqlx::query(UPSERT_HWM).bind(site.as_str()).bind(acked as i64).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(PushResponse { acked_seq: acked, applied })
    }

    async fn pull(&self, cursor: u64, limit: u32) -> Result<PullPage, StoreError> {
        let rows: Vec<(i64, String)> =
            sqlx::query_as(PULL).bind(cursor as i64).bind(i64::from(limit) + 1).fetch_all(&self.pool).await?;
        let more = rows.len() > limit as usize;
        let mut page = PullPage { states: Vec::with_capacity(rows.len()), cursor, more };
        for (position, state) in rows.into_iter().take(limit as usize) {
            page.cursor = position as u64;
            page.states.push(state);
        }
        Ok(page)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}
