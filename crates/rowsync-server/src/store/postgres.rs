//! PostgreSQL as the source of truth.
//!
//! # Commit order
//! A puller asks for "rows whose position is after my cursor", so positions
//! must become visible in the order they were handed out. A sequence does
//! not give that: a transaction can take position 10, commit after another
//! took 11 and committed, and a puller that saw 11 would skip 10 forever.
//! Here each push first locks the one row of `rowsync_positions`
//! (`SELECT ... FOR UPDATE`) and holds it until commit, so pushes hand out
//! positions and commit strictly one after another. The cost is that pushes
//! into one database are serialized; each push is a whole batch applied
//! with a handful of multi-row statements, so that serial section is short.
//! Pulls take no lock at all.

use std::collections::HashMap;

use rowsync_core::ddl::{self, Dialect};
use rowsync_core::RowState;
use rowsync_proto::{ColumnType, PushResponse, Schema, SiteId, Table, Value};
use sqlx::postgres::{PgArguments, PgPoolOptions};
use sqlx::query::Query;
use sqlx::{PgPool, Postgres};

use super::plan::{fold_batch, plan_writes, row_values, RowId, RowWrite};
use super::{decode_stored, CheckedChange, PoolSettings, PullPage, Store, StoreError};

const BOOKKEEPING: [&str; 6] = [
    "CREATE TABLE IF NOT EXISTS rowsync_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS rowsync_positions (id INTEGER PRIMARY KEY CHECK (id = 1), last BIGINT NOT NULL)",
    "INSERT INTO rowsync_positions (id, last) VALUES (1, 0) ON CONFLICT (id) DO NOTHING",
    "CREATE TABLE IF NOT EXISTS rowsync_rows (tbl TEXT NOT NULL, pk TEXT NOT NULL, pos BIGINT NOT NULL, \
     state TEXT NOT NULL, origin TEXT, PRIMARY KEY (tbl, pk))",
    "CREATE UNIQUE INDEX IF NOT EXISTS rowsync_rows_pos ON rowsync_rows (pos)",
    "CREATE TABLE IF NOT EXISTS rowsync_sites (site TEXT PRIMARY KEY, hwm BIGINT NOT NULL)",
];

/// Serializes concurrent installs from several servers starting at once.
const INSTALL_LOCK: &str = "SELECT pg_advisory_xact_lock(7152342)";
const SELECT_SCHEMA: &str = "SELECT value FROM rowsync_meta WHERE key = 'schema'";
const INSERT_SCHEMA: &str = "INSERT INTO rowsync_meta (key, value) VALUES ('schema', $1)";
const LOCK_POSITION: &str = "SELECT last FROM rowsync_positions WHERE id = 1 FOR UPDATE";
const UPDATE_POSITION: &str = "UPDATE rowsync_positions SET last = $1 WHERE id = 1";
const SELECT_HWM: &str = "SELECT hwm FROM rowsync_sites WHERE site = $1";
const UPSERT_HWM: &str = "INSERT INTO rowsync_sites (site, hwm) VALUES ($1, $2) \
     ON CONFLICT (site) DO UPDATE SET hwm = GREATEST(rowsync_sites.hwm, excluded.hwm)";
const PULL: &str = "SELECT pos, CASE WHEN origin = $1 THEN NULL ELSE state END FROM rowsync_rows \
     WHERE pos > $2 ORDER BY pos LIMIT $3";

fn numbered_tuples(rows: usize, width: usize) -> String {
    (0..rows)
        .map(|r| {
            let params: Vec<String> = (1..=width).map(|n| format!("${}", r * width + n)).collect();
            format!("({})", params.join(", "))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn select_states(rows: usize) -> String {
    format!("SELECT tbl, pk, state FROM rowsync_rows WHERE (tbl, pk) IN ({})", numbered_tuples(rows, 2))
}

fn upsert_states(rows: usize) -> String {
    format!(
        "INSERT INTO rowsync_rows (tbl, pk, pos, state, origin) VALUES {} \
         ON CONFLICT (tbl, pk) DO UPDATE SET pos = excluded.pos, state = excluded.state, origin = excluded.origin",
        numbered_tuples(rows, 5)
    )
}

/// Binds a value with the column's own type, NULLs included: PostgreSQL
/// wants every parameter typed like its column.
fn bind_typed<'q>(
    query: Query<'q, Postgres, PgArguments>,
    ty: ColumnType,
    value: &Value,
) -> Query<'q, Postgres, PgArguments> {
    match (ty, value) {
        (ColumnType::Integer, Value::Integer(i)) => query.bind(*i),
        (ColumnType::Boolean, Value::Integer(i)) => query.bind(*i != 0),
        (ColumnType::Real, Value::Real(r)) => query.bind(*r),
        (ColumnType::Real, Value::Integer(i)) => query.bind(*i as f64),
        (ColumnType::Text, Value::Text(s)) => query.bind(s.clone()),
        (ColumnType::Blob, Value::Blob(b)) => query.bind(b.clone()),
        (ColumnType::Integer, _) => query.bind(None::<i64>),
        (ColumnType::Boolean, _) => query.bind(None::<bool>),
        (ColumnType::Real, _) => query.bind(None::<f64>),
        (ColumnType::Text, _) => query.bind(None::<String>),
        (ColumnType::Blob, _) => query.bind(None::<Vec<u8>>),
    }
}

fn key_types(table: &Table) -> impl Iterator<Item = ColumnType> + '_ {
    table.primary_key.iter().map(|&i| table.columns[i].ty)
}

/// A PostgreSQL store.
#[derive(Clone, Debug)]
pub struct PostgresStore {
    pool: PgPool,
    push_delay: Option<std::time::Duration>,
}

impl PostgresStore {
    /// Fault injection for tests: sleep inside every push transaction,
    /// after its writes and before its commit.
    pub fn with_push_delay(mut self, delay: Option<std::time::Duration>) -> Self {
        self.push_delay = delay;
        self
    }

    pub async fn connect(url: &str, settings: &PoolSettings) -> Result<PostgresStore, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(settings.acquire_timeout)
            .connect_lazy(url)
            .map_err(|e| StoreError::Unavailable(format!("bad PostgreSQL URL: {e}")))?;
        Ok(PostgresStore { pool, push_delay: None })
    }
}

impl Store for PostgresStore {
    async fn install(&self, schema: Option<&Schema>) -> Result<Schema, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(INSTALL_LOCK).execute(&mut *tx).await?;
        for statement in BOOKKEEPING {
            sqlx::query(statement).execute(&mut *tx).await?;
        }
        let stored: Option<String> = sqlx::query_scalar(SELECT_SCHEMA).fetch_optional(&mut *tx).await?;
        let (schema, fresh) = super::reconcile_schema(schema, stored)?;
        if fresh {
            for table in &schema.tables {
                let create = ddl::create_table(table, Dialect::Postgres);
                sqlx::query(&create).execute(&mut *tx).await?;
            }
            let json = serde_json::to_string(&schema).map_err(|e| StoreError::Database(e.to_string()))?;
            sqlx::query(INSERT_SCHEMA).bind(json).execute(&mut *tx).await?;
        }
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
        let mut tx = self.pool.begin().await?;
        // Taken first and held to commit: see the module docs.
        let position: i64 = sqlx::query_scalar(LOCK_POSITION).fetch_one(&mut *tx).await?;
        let hwm: Option<i64> = sqlx::query_scalar(SELECT_HWM).bind(site.as_str()).fetch_optional(&mut *tx).await?;
        let hwm = hwm.unwrap_or(0) as u64;
        let (incoming, applied) = fold_batch(changes, hwm)?;

        let mut stored: HashMap<RowId, RowState> = HashMap::with_capacity(incoming.len());
        for chunk in incoming.chunks(ddl::rows_per_statement(2)) {
            let sql = select_states(chunk.len());
            let mut query = sqlx::query_as::<_, (String, String, String)>(&sql);
            for row in chunk {
                query = query.bind(schema.tables[row.id.0].name.clone()).bind(row.id.1.clone());
            }
            for (table, key, json) in query.fetch_all(&mut *tx).await? {
                let index = super::table_index(schema, &table)?;
                stored.insert((index, key), decode_stored(schema, &json)?);
            }
        }

        let writes = plan_writes(schema, incoming, &mut stored, position)?;
        for chunk in writes.chunks(ddl::rows_per_statement(5)) {
            let sql = upsert_states(chunk.len());
            let mut query = sqlx::query(&sql);
            for write in chunk {
                query = query
                    .bind(schema.tables[write.id.0].name.clone())
                    .bind(write.id.1.clone())
                    .bind(write.position)
                    .bind(write.state_json.clone())
                    .bind(write.echo.then(|| site.to_string()));
            }
            query.execute(&mut *tx).await?;
        }
        for (index, table) in schema.tables.iter().enumerate() {
            let (visible, deleted): (Vec<&RowWrite>, Vec<&RowWrite>) =
                writes.iter().filter(|w| w.id.0 == index).partition(|w| w.state.is_visible());
            for chunk in visible.chunks(ddl::rows_per_statement(table.columns.len())) {
                let sql = ddl::upsert_rows(table, Dialect::Postgres, chunk.len());
                let mut query = sqlx::query(&sql);
                for write in chunk {
                    for (column, value) in table.columns.iter().zip(row_values(schema, write)) {
                        query = bind_typed(query, column.ty, &value);
                    }
                }
                query.execute(&mut *tx).await?;
            }
            for chunk in deleted.chunks(ddl::rows_per_statement(table.primary_key.len())) {
                let sql = ddl::delete_rows(table, Dialect::Postgres, chunk.len());
                let mut query = sqlx::query(&sql);
                for write in chunk {
                    for (ty, value) in key_types(table).zip(&write.key) {
                        query = bind_typed(query, ty, value);
                    }
                }
                query.execute(&mut *tx).await?;
            }
        }
        let last_position = writes.last().map_or(position, |w| w.position);
        sqlx::query(UPDATE_POSITION).bind(last_position).execute(&mut *tx).await?;
        let acked = hwm.max(last_seq);
        sqlx::query(UPSERT_HWM).bind(site.as_str()).bind(acked as i64).execute(&mut *tx).await?;
        if let Some(delay) = self.push_delay {
            tokio::time::sleep(delay).await;
        }
        tx.commit().await?;
        Ok(PushResponse { acked_seq: acked, applied })
    }

    async fn pull(&self, cursor: u64, limit: u32, site: Option<&SiteId>) -> Result<PullPage, StoreError> {
        let rows: Vec<(i64, Option<String>)> = sqlx::query_as(PULL)
            .bind(site.map(|s| s.to_string()))
            .bind(cursor as i64)
            .bind(i64::from(limit) + 1)
            .fetch_all(&self.pool)
            .await?;
        Ok(super::page_from_rows(rows, cursor, limit))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}
