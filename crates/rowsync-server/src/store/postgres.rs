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
//!
//! # Rows new to the server
//! Most of a large push is rows the server has never held (a device's
//! offline inserts). Those go in with `COPY`, PostgreSQL's bulk path, which
//! costs about half of an `INSERT ... ON CONFLICT` of the same rows (for the
//! bench's rows, 2,000 states: 7 ms against 10; 2,000 rows of the table: 3
//! against 9). No conflict can meet a new state: whatever adds rows to
//! `rowsync_rows` holds the position lock. A new row of the synced table
//! can still meet one: written directly while the push ran (the race that
//! `store::direct` handles), or put there with the capture triggers off (a
//! restore). The copy then fails on the key; it runs in a savepoint, and
//! those rows are upserted instead, as every other row is (so are they
//! when the copy fails for another reason: `COPY` refuses tables under
//! row-level security, where `INSERT` works).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rowsync_core::ddl::{self, Dialect};
use rowsync_core::horizon::Horizon;
use rowsync_proto::{ColumnType, Hlc, Schema, SiteId, Table, Value};
use sqlx::postgres::{PgArguments, PgListener, PgPoolOptions};
use sqlx::query::Query;
use sqlx::{PgPool, Postgres};

use super::collect::{collect, read_horizon, META_HORIZON};
use super::plan::{row_values, IncomingRow, RowId, RowWrite, Stored};
use super::push::{push_retrying, DirectEntry, MarkRow, PushTransaction, SiteMark};
use super::{
    decode_stored, token_from_row, CheckedBatch, PoolSettings, PullPage, PullParams, Pushed, Revoke, Store, StoreError,
    TokenRow,
};
use crate::auth::TokenRecord;
use crate::commits::{Commits, POLL_EVERY};

const BOOKKEEPING: [&str; 12] = [
    "CREATE TABLE IF NOT EXISTS rowsync_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS rowsync_positions (id INTEGER PRIMARY KEY CHECK (id = 1), last BIGINT NOT NULL)",
    "INSERT INTO rowsync_positions (id, last) VALUES (1, 0) ON CONFLICT (id) DO NOTHING",
    "CREATE TABLE IF NOT EXISTS rowsync_rows (tbl TEXT NOT NULL, pk TEXT NOT NULL, pos BIGINT NOT NULL, \
     state TEXT NOT NULL, origin TEXT, size BIGINT, PRIMARY KEY (tbl, pk))",
    "CREATE UNIQUE INDEX IF NOT EXISTS rowsync_rows_pos ON rowsync_rows (pos)",
    "CREATE TABLE IF NOT EXISTS rowsync_sites (site TEXT PRIMARY KEY, hwm BIGINT NOT NULL)",
    // Added after databases were first made: states' sizes (NULL: measured
    // when pulled), the id of each site's last request applied.
    "ALTER TABLE rowsync_rows ADD COLUMN IF NOT EXISTS size BIGINT",
    "ALTER TABLE rowsync_sites ADD COLUMN IF NOT EXISTS batch BIGINT",
    // Added later still: the owner of each private row, the user of each site.
    "ALTER TABLE rowsync_rows ADD COLUMN IF NOT EXISTS owner TEXT",
    "ALTER TABLE rowsync_sites ADD COLUMN IF NOT EXISTS usr TEXT",
    "CREATE TABLE IF NOT EXISTS rowsync_tokens (id TEXT PRIMARY KEY, usr TEXT NOT NULL, hash TEXT NOT NULL, \
     created BIGINT NOT NULL, expires BIGINT, revoked BIGINT)",
    // Rows written directly (not through rowsync), noted by the capture
    // triggers (see `store::direct`).
    "CREATE TABLE IF NOT EXISTS rowsync_direct (id BIGSERIAL PRIMARY KEY, tbl TEXT NOT NULL, pk TEXT NOT NULL, \
     at BIGINT NOT NULL)",
];
const SELECT_DIRECT: &str = "SELECT id, tbl, pk, at FROM rowsync_direct ORDER BY id";
const ANY_DIRECT: &str = "SELECT EXISTS (SELECT 1 FROM rowsync_direct)";
const FORGET_DIRECT: &str = "DELETE FROM rowsync_direct WHERE id = ANY($1::int8[])";

/// The capture function and trigger of `table`: each write not made by
/// rowsync (whose transactions set `rowsync.applying`) notes the table and
/// the key (old and new, for an update) in `rowsync_direct` of `schema`
/// (named, since a writer's search path may differ).
fn capture_triggers(table: &Table, schema: &str) -> Vec<String> {
    let quote = |name: &str| Dialect::Postgres.quote(name);
    let key = |row: &str| {
        let parts: Vec<String> = table
            .primary_key
            .iter()
            .map(|&c| {
                let column = format!("{row}.{}", quote(&table.columns[c].name));
                match table.columns[c].ty {
                    ColumnType::Blob => format!("json_build_object('blob', encode({column}, 'hex'))"),
                    ColumnType::Boolean => format!("{column}::int"),
                    _ => column,
                }
            })
            .collect();
        format!("json_build_array({})::text", parts.join(", "))
    };
    let literal = table.name.replace('\'', "''");
    let inbox = format!("{}.rowsync_direct", quote(schema));
    let function = quote(&format!("rowsync_direct_{}", table.name));
    let now = "(extract(epoch from clock_timestamp()) * 1000)::bigint";
    let changed_key = table
        .primary_key
        .iter()
        .map(|&c| format!("NEW.{0} IS DISTINCT FROM OLD.{0}", quote(&table.columns[c].name)))
        .collect::<Vec<_>>()
        .join(" OR ");
    vec![
        format!(
            "CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $rowsync$ BEGIN \
             IF TG_OP <> 'INSERT' THEN INSERT INTO {inbox} (tbl, pk, at) VALUES ('{literal}', {old}, {now}); END IF; \
             IF TG_OP = 'INSERT' OR (TG_OP = 'UPDATE' AND ({changed_key})) THEN \
             INSERT INTO {inbox} (tbl, pk, at) VALUES ('{literal}', {new}, {now}); END IF; \
             RETURN NULL; END $rowsync$",
            old = key("OLD"),
            new = key("NEW")
        ),
        format!("DROP TRIGGER IF EXISTS rowsync_direct ON {}", quote(&table.name)),
        format!(
            "CREATE TRIGGER rowsync_direct AFTER INSERT OR UPDATE OR DELETE ON {} FOR EACH ROW \
             WHEN (current_setting('rowsync.applying', true) IS DISTINCT FROM 'on') EXECUTE FUNCTION {function}()",
            quote(&table.name)
        ),
    ]
}

/// Serializes concurrent installs from several servers starting at once.
const INSTALL_LOCK: &str = "SELECT pg_advisory_xact_lock(7152342)";
/// Rows whose state holds a delete, after a position (tombstone candidates).
const TOMBSTONES: &str = "SELECT pos, tbl, pk, state FROM rowsync_rows WHERE pos > $1 AND state LIKE '%\"deleted\"%' \
     ORDER BY pos LIMIT $2";
const FORGET_ROW: &str = "DELETE FROM rowsync_rows WHERE tbl = $1 AND pk = $2 AND pos = $3";
/// A value of `rowsync_meta` (see `store::META_*` for the keys).
const SELECT_META: &str = "SELECT value FROM rowsync_meta WHERE key = $1";
const SAVE_META: &str =
    "INSERT INTO rowsync_meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value";
const HAS_COLUMN: &str = "SELECT count(*) FROM information_schema.columns \
     WHERE table_schema = current_schema() AND table_name = $1 AND column_name = $2";
/// Also marks the transaction as rowsync's: the capture triggers skip it.
const LOCK_POSITION: &str =
    "SELECT last, set_config('rowsync.applying', 'on', true) FROM rowsync_positions WHERE id = 1 FOR UPDATE";
const CURRENT_POSITION: &str = "SELECT last FROM rowsync_positions WHERE id = 1";
/// The channel on which every push announces the position it commits (see
/// [`PostgresStore::follow_commits`]).
const COMMIT_CHANNEL: &str = "rowsync_commits";
const NOTIFY_COMMIT: &str = "SELECT pg_notify($1, $2)";
/// While the listening connection works, the position counter is still read
/// this often as pulls wait, in case a notification was missed.
const POLL_BESIDE_LISTEN: Duration = Duration::from_secs(1);
const UPDATE_POSITION: &str = "UPDATE rowsync_positions SET last = $1 WHERE id = 1";
const SELECT_MARK: &str = "SELECT hwm, batch, usr FROM rowsync_sites WHERE site = $1";
const UPSERT_HWM: &str = "INSERT INTO rowsync_sites (site, hwm, batch, usr) VALUES ($1, $2, $3, $4) \
     ON CONFLICT (site) DO UPDATE SET hwm = GREATEST(rowsync_sites.hwm, excluded.hwm), batch = excluded.batch, \
     usr = excluded.usr";
/// A pull page and, in the same snapshot, what lies beyond it (see
/// `store::PulledRow`); parameters: inline state size, cursor, span end,
/// user, site, rows.
const PULL: &str = "SELECT * FROM (SELECT 0::bigint AS kind, pos, coalesce(size, octet_length(state))::bigint AS size, \
     CASE WHEN coalesce(size, octet_length(state)) > $1 THEN NULL ELSE state END AS state FROM rowsync_rows \
     WHERE pos > $2 AND pos <= $3 AND (owner IS NULL OR owner = $4) AND (origin = $5) IS NOT TRUE \
     ORDER BY pos LIMIT $6) AS sent \
     UNION ALL SELECT 1, (SELECT pos FROM rowsync_rows \
     WHERE pos > $2 AND pos <= $3 AND (owner IS NULL OR owner = $4) ORDER BY pos DESC LIMIT 1), \
     CASE WHEN (SELECT pos FROM rowsync_rows WHERE pos > $3 AND (owner IS NULL OR owner = $4) ORDER BY pos LIMIT 1) IS NULL THEN 0 ELSE 1 END, NULL";
const PULL_ONE: &str = "SELECT state FROM rowsync_rows WHERE pos = $1";
const INSERT_TOKEN: &str = "INSERT INTO rowsync_tokens (id, usr, hash, created, expires) VALUES ($1, $2, $3, $4, $5)";
const SELECT_TOKEN: &str = "SELECT id, usr, hash, created, expires, revoked FROM rowsync_tokens WHERE id = $1";
const SELECT_TOKENS: &str = "SELECT id, usr, hash, created, expires, revoked FROM rowsync_tokens ORDER BY created, id";
const REVOKE_TOKEN: &str = "UPDATE rowsync_tokens SET revoked = $1 WHERE revoked IS NULL AND id = $2";
const REVOKE_USER: &str = "UPDATE rowsync_tokens SET revoked = $1 WHERE revoked IS NULL AND usr = $2";
const SELECT_UNOWNED: &str = "SELECT pk, state FROM rowsync_rows WHERE tbl = $1 AND owner IS NULL";
const SET_OWNERS: &str = "UPDATE rowsync_rows r SET owner = o.owner \
     FROM unnest($2::text[], $3::text[]) AS o(pk, owner) WHERE r.tbl = $1 AND r.pk = o.pk";

/// Whole-batch statements over arrays (`unnest`): one short statement per
/// step whatever the batch size, where a multi-row VALUES list of hundreds of
/// tuples costs PostgreSQL tens of milliseconds just to plan.
const SELECT_STATES: &str = "SELECT r.tbl, r.pk, r.state, r.owner FROM rowsync_rows r \
     JOIN unnest($1::text[], $2::text[]) AS k(tbl, pk) ON r.tbl = k.tbl AND r.pk = k.pk";
/// States of rows the server held nothing of (see "Rows new to the server").
const COPY_STATES: &str = "COPY rowsync_rows (tbl, pk, pos, state, origin, size, owner) FROM STDIN";
const UPSERT_STATES: &str = "INSERT INTO rowsync_rows (tbl, pk, pos, state, origin, size, owner) \
     SELECT * FROM unnest($1::text[], $2::text[], $3::int8[], $4::text[], $5::text[], $6::int8[], $7::text[]) \
     ON CONFLICT (tbl, pk) DO UPDATE SET pos = excluded.pos, state = excluded.state, origin = excluded.origin, \
     size = excluded.size, owner = excluded.owner";

fn array_type(ty: ColumnType) -> &'static str {
    match ty {
        ColumnType::Text => "text[]",
        ColumnType::Integer => "int8[]",
        ColumnType::Real => "float8[]",
        ColumnType::Blob => "bytea[]",
        ColumnType::Boolean => "bool[]",
    }
}

/// Upserts rows given one array parameter per column.
fn upsert_rows_unnest(table: &Table) -> String {
    let columns: Vec<String> = table.columns.iter().map(|c| format!("\"{}\"", c.name)).collect();
    let arrays: Vec<String> =
        table.columns.iter().enumerate().map(|(i, c)| format!("${}::{}", i + 1, array_type(c.ty))).collect();
    let key: Vec<String> = table.primary_key.iter().map(|&i| format!("\"{}\"", table.columns[i].name)).collect();
    let sets: Vec<String> = table
        .columns
        .iter()
        .enumerate()
        .filter(|(i, _)| !table.is_key_column(*i))
        .map(|(_, c)| format!("\"{0}\" = excluded.\"{0}\"", c.name))
        .collect();
    let conflict =
        if sets.is_empty() { "DO NOTHING".to_string() } else { format!("DO UPDATE SET {}", sets.join(", ")) };
    format!(
        "INSERT INTO \"{}\" ({}) SELECT * FROM unnest({}) ON CONFLICT ({}) {conflict}",
        table.name,
        columns.join(", "),
        arrays.join(", "),
        key.join(", ")
    )
}

/// Copies rows in, one field per column of the table.
fn copy_rows_in(table: &Table) -> String {
    let quote = |name: &str| Dialect::Postgres.quote(name);
    let columns: Vec<String> = table.columns.iter().map(|c| quote(&c.name)).collect();
    format!("COPY {} ({}) FROM STDIN", quote(&table.name), columns.join(", "))
}

/// Deletes rows given one array parameter per key column.
fn delete_rows_unnest(table: &Table) -> String {
    let key: Vec<String> = table.primary_key.iter().map(|&i| format!("\"{}\"", table.columns[i].name)).collect();
    let arrays: Vec<String> = table
        .primary_key
        .iter()
        .enumerate()
        .map(|(n, &i)| format!("${}::{}", n + 1, array_type(table.columns[i].ty)))
        .collect();
    format!(
        "DELETE FROM \"{}\" WHERE ({}) IN (SELECT * FROM unnest({}))",
        table.name,
        key.join(", "),
        arrays.join(", ")
    )
}

/// One column's values for a whole batch, typed for its array parameter.
enum ColumnArray {
    Integer(Vec<Option<i64>>),
    Real(Vec<Option<f64>>),
    Text(Vec<Option<String>>),
    Blob(Vec<Option<Vec<u8>>>),
    Boolean(Vec<Option<bool>>),
}

impl ColumnArray {
    fn new(ty: ColumnType, capacity: usize) -> ColumnArray {
        match ty {
            ColumnType::Integer => ColumnArray::Integer(Vec::with_capacity(capacity)),
            ColumnType::Real => ColumnArray::Real(Vec::with_capacity(capacity)),
            ColumnType::Text => ColumnArray::Text(Vec::with_capacity(capacity)),
            ColumnType::Blob => ColumnArray::Blob(Vec::with_capacity(capacity)),
            ColumnType::Boolean => ColumnArray::Boolean(Vec::with_capacity(capacity)),
        }
    }

    fn push(&mut self, value: &Value) {
        let ty = self.ty();
        match (self, Typed::of(ty, value)) {
            (ColumnArray::Integer(v), Some(Typed::Integer(i))) => v.push(Some(i)),
            (ColumnArray::Real(v), Some(Typed::Real(r))) => v.push(Some(r)),
            (ColumnArray::Text(v), Some(Typed::Text(t))) => v.push(Some(t.to_string())),
            (ColumnArray::Blob(v), Some(Typed::Blob(b))) => v.push(Some(b.to_vec())),
            (ColumnArray::Boolean(v), Some(Typed::Boolean(b))) => v.push(Some(b)),
            (ColumnArray::Integer(v), _) => v.push(None),
            (ColumnArray::Real(v), _) => v.push(None),
            (ColumnArray::Text(v), _) => v.push(None),
            (ColumnArray::Blob(v), _) => v.push(None),
            (ColumnArray::Boolean(v), _) => v.push(None),
        }
    }

    fn ty(&self) -> ColumnType {
        match self {
            ColumnArray::Integer(_) => ColumnType::Integer,
            ColumnArray::Real(_) => ColumnType::Real,
            ColumnArray::Text(_) => ColumnType::Text,
            ColumnArray::Blob(_) => ColumnType::Blob,
            ColumnArray::Boolean(_) => ColumnType::Boolean,
        }
    }

    /// Binds the one value of a one-element array as a scalar.
    fn bind_one<'q>(self, query: Query<'q, Postgres, PgArguments>) -> Query<'q, Postgres, PgArguments> {
        match self {
            ColumnArray::Integer(v) => query.bind(v[0]),
            ColumnArray::Real(v) => query.bind(v[0]),
            ColumnArray::Text(v) => query.bind(v[0].clone()),
            ColumnArray::Blob(v) => query.bind(v[0].clone()),
            ColumnArray::Boolean(v) => query.bind(v[0]),
        }
    }

    fn bind<'q>(self, query: Query<'q, Postgres, PgArguments>) -> Query<'q, Postgres, PgArguments> {
        match self {
            ColumnArray::Integer(v) => query.bind(v),
            ColumnArray::Real(v) => query.bind(v),
            ColumnArray::Text(v) => query.bind(v),
            ColumnArray::Blob(v) => query.bind(v),
            ColumnArray::Boolean(v) => query.bind(v),
        }
    }
}

/// A value as its column's PostgreSQL type takes it (`None`: NULL).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Typed<'a> {
    Integer(i64),
    Real(f64),
    Text(&'a str),
    Blob(&'a [u8]),
    Boolean(bool),
}

impl<'a> Typed<'a> {
    fn of(ty: ColumnType, value: &'a Value) -> Option<Typed<'a>> {
        Some(match (ty, value) {
            (ColumnType::Integer, Value::Integer(i)) => Typed::Integer(*i),
            (ColumnType::Real, Value::Real(r)) => Typed::Real(*r),
            (ColumnType::Real, Value::Integer(i)) => Typed::Real(*i as f64),
            (ColumnType::Text, Value::Text(t)) => Typed::Text(t),
            (ColumnType::Blob, Value::Blob(b)) => Typed::Blob(b),
            (ColumnType::Boolean, Value::Integer(i)) => Typed::Boolean(*i != 0),
            // Values were checked against the column types; anything else is NULL.
            _ => return None,
        })
    }
}

/// Rows in `COPY`'s text format: a line per row, fields apart by tabs,
/// `\N` for NULL, and backslash escapes for what would break a line apart.
struct CopyText {
    data: String,
    /// Whether the line being written has a field yet.
    started: bool,
}

impl CopyText {
    /// Room for `bytes` bytes of rows.
    fn with_capacity(bytes: usize) -> CopyText {
        CopyText { data: String::with_capacity(bytes), started: false }
    }

    fn separate(&mut self) {
        if self.started {
            self.data.push('\t');
        }
        self.started = true;
    }

    fn null(&mut self) {
        self.separate();
        self.data.push_str("\\N");
    }

    fn text(&mut self, text: &str) {
        self.separate();
        self.escaped(text);
    }

    fn escaped(&mut self, text: &str) {
        let mut rest = text;
        // Bytes, not chars: the four are ASCII, and a char-set search
        // decodes every character it passes (4% of the server's push).
        while let Some(at) = rest.bytes().position(|b| matches!(b, b'\\' | b'\t' | b'\n' | b'\r')) {
            self.data.push_str(&rest[..at]);
            self.data.push_str(match rest.as_bytes()[at] {
                b'\\' => "\\\\",
                b'\t' => "\\t",
                b'\n' => "\\n",
                _ => "\\r",
            });
            rest = &rest[at + 1..];
        }
        self.data.push_str(rest);
    }

    fn optional_text(&mut self, text: Option<&str>) {
        match text {
            Some(text) => self.text(text),
            None => self.null(),
        }
    }

    fn integer(&mut self, value: i64) {
        self.separate();
        let _ = write!(self.data, "{value}");
    }

    fn value(&mut self, ty: ColumnType, value: &Value) {
        let Some(typed) = Typed::of(ty, value) else { return self.null() };
        self.separate();
        match typed {
            Typed::Integer(i) => {
                let _ = write!(self.data, "{i}");
            }
            // The shortest digits that read back as the same double.
            Typed::Real(r) if r.is_finite() => {
                let _ = write!(self.data, "{r:e}");
            }
            Typed::Real(r) if r.is_nan() => self.data.push_str("NaN"),
            Typed::Real(r) => self.data.push_str(if r > 0.0 { "Infinity" } else { "-Infinity" }),
            Typed::Text(t) => self.escaped(t),
            // bytea's hex form, its backslash escaped.
            Typed::Blob(b) => {
                self.data.push_str("\\\\x");
                for byte in b {
                    let _ = write!(self.data, "{byte:02x}");
                }
            }
            Typed::Boolean(b) => self.data.push(if b { 't' } else { 'f' }),
        }
    }

    fn end_row(&mut self) {
        self.data.push('\n');
        self.started = false;
    }
}

/// A value of a row as PostgreSQL returns it, by its type.
fn pg_value(row: &sqlx::postgres::PgRow, index: usize) -> Result<Value, StoreError> {
    use sqlx::{Row, TypeInfo, ValueRef};
    let raw = row.try_get_raw(index)?;
    if raw.is_null() {
        return Ok(Value::Null);
    }
    Ok(match raw.type_info().name() {
        "INT8" => Value::Integer(row.try_get::<i64, _>(index)?),
        "INT4" => Value::Integer(row.try_get::<i32, _>(index)?.into()),
        "INT2" => Value::Integer(row.try_get::<i16, _>(index)?.into()),
        "FLOAT8" => Value::Real(row.try_get::<f64, _>(index)?),
        "FLOAT4" => Value::Real(row.try_get::<f32, _>(index)?.into()),
        "BOOL" => Value::Integer(row.try_get::<bool, _>(index)?.into()),
        "BYTEA" => Value::Blob(row.try_get::<Vec<u8>, _>(index)?),
        _ => Value::Text(row.try_get::<String, _>(index)?),
    })
}

/// A PostgreSQL store.
#[derive(Clone, Debug)]
pub struct PostgresStore {
    pool: PgPool,
    push_delay: Option<std::time::Duration>,
    /// Whether the commit listener's connection is up.
    listening: Arc<AtomicBool>,
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
        Ok(PostgresStore { pool, push_delay: None, listening: Arc::default() })
    }
}

impl PostgresStore {
    /// Listens for commits until the connection fails.
    async fn listen(&self, commits: &Commits) -> Result<(), StoreError> {
        let mut listener = PgListener::connect_with(&self.pool).await?;
        listener.listen(COMMIT_CHANNEL).await?;
        self.listening.store(true, Ordering::Relaxed);
        // Whatever committed before the listening began.
        commits.committed(self.last_position().await?);
        let outcome = loop {
            match listener.try_recv().await {
                Ok(Some(notification)) => {
                    if let Ok(position) = notification.payload().parse() {
                        commits.committed(position);
                    }
                }
                Ok(None) => break Ok(()),
                Err(error) => break Err(error.into()),
            }
        };
        self.listening.store(false, Ordering::Relaxed);
        outcome
    }
}

async fn create_bookkeeping(tx: &mut sqlx::Transaction<'static, Postgres>) -> Result<(), StoreError> {
    sqlx::query(INSTALL_LOCK).execute(&mut **tx).await?;
    for statement in BOOKKEEPING {
        sqlx::query(statement).execute(&mut **tx).await?;
    }
    Ok(())
}

impl Store for PostgresStore {
    async fn prepare(&self) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        create_bookkeeping(&mut tx).await?;
        Ok(tx.commit().await?)
    }

    async fn install(&self, schema: Option<&Schema>) -> Result<Schema, StoreError> {
        let mut tx = self.pool.begin().await?;
        create_bookkeeping(&mut tx).await?;
        let format: Option<String> =
            sqlx::query_scalar(SELECT_META).bind(super::META_FORMAT).fetch_optional(&mut *tx).await?;
        if super::check_format(format)? {
            sqlx::query(SAVE_META).bind(super::META_FORMAT).bind(super::FORMAT.to_string()).execute(&mut *tx).await?;
        }
        let stored: Option<String> =
            sqlx::query_scalar(SELECT_META).bind(super::META_SCHEMA).fetch_optional(&mut *tx).await?;
        let installing = super::reconcile_schema(schema, stored)?;
        for (column, statement) in installing.steps(Dialect::Postgres) {
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
        let namespace: String = sqlx::query_scalar("SELECT current_schema()").fetch_one(&mut *tx).await?;
        for table in &schema.tables {
            for statement in capture_triggers(table, &namespace) {
                sqlx::query(&statement).execute(&mut *tx).await?;
            }
        }
        tx.commit().await?;
        Ok(schema)
    }

    async fn push(&self, schema: &Schema, batch: &CheckedBatch) -> Result<Pushed, StoreError> {
        push_retrying(|| async { Ok(PostgresPush(self.pool.begin().await?)) }, schema, batch, self.push_delay).await
    }

    async fn drain_direct(&self, schema: &Schema, now_ms: u64) -> Result<Option<u64>, StoreError> {
        let any: bool = sqlx::query_scalar(ANY_DIRECT).fetch_one(&self.pool).await?;
        if !any {
            return Ok(None);
        }
        super::direct::drain_alone(PostgresPush(self.pool.begin().await?), schema, now_ms).await
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
        // Without statistics (a table just filled, before autovacuum has
        // analyzed it), PostgreSQL takes the page's few filtered rows for
        // fewer still, and reads the whole span to sort it: 26 ms a page
        // against 1 ms read in order along the position index. Sorting is
        // never what a page needs.
        let mut tx = self.pool.begin().await?;
        sqlx::query("SET LOCAL enable_sort = off").execute(&mut *tx).await?;
        let rows: Vec<super::PulledRow> = sqlx::query_as(PULL)
            .bind(super::INLINE_STATE)
            .bind(params.cursor)
            .bind(params.end)
            .bind(params.user)
            .bind(params.site)
            .bind(params.rows)
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
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
        sqlx::query(SET_OWNERS)
            .bind(table)
            .bind(owners.iter().map(|(key, _)| key.as_str()).collect::<Vec<_>>())
            .bind(owners.iter().map(|(_, owner)| owner.as_str()).collect::<Vec<_>>())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// PostgreSQL tells every listener of a push's position when it commits
    /// (LISTEN/NOTIFY): one connection per server process, whatever the
    /// number of waiting pulls. The counter is also read now and then while
    /// pulls wait, and often when the listening connection is down.
    async fn follow_commits(self: Arc<Self>, commits: Arc<Commits>) {
        let listen = async {
            loop {
                if let Err(error) = self.listen(&commits).await {
                    tracing::warn!(%error, "listening for commits; reading the position counter meanwhile");
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        };
        let every = || if self.listening.load(Ordering::Relaxed) { POLL_BESIDE_LISTEN } else { POLL_EVERY };
        tokio::join!(listen, super::poll_commits(&*self, &commits, every));
    }

    async fn schema_version(&self) -> Result<u64, StoreError> {
        super::recorded_version(
            sqlx::query_scalar(SELECT_META).bind(super::META_SCHEMA).fetch_optional(&self.pool).await?,
        )
    }

    async fn last_position(&self) -> Result<u64, StoreError> {
        let last: i64 = sqlx::query_scalar(CURRENT_POSITION).fetch_one(&self.pool).await?;
        Ok(last as u64)
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
        collect(schema, cutoff, candidates, || async { Ok(PostgresPush(self.pool.begin().await?)) }).await
    }
}

/// A push transaction on PostgreSQL: every step one statement over arrays
/// (or one `COPY`, for rows new to the server).
struct PostgresPush(sqlx::Transaction<'static, Postgres>);

impl PostgresPush {
    /// Runs `sql` with one array parameter per column of `columns`, filled
    /// from each row's values.
    async fn execute_arrays(
        &mut self,
        sql: &str,
        columns: impl Iterator<Item = ColumnType>,
        rows: impl Iterator<Item = Vec<Value>>,
    ) -> Result<(), StoreError> {
        let capacity = rows.size_hint().0;
        let mut arrays: Vec<ColumnArray> = columns.map(|ty| ColumnArray::new(ty, capacity)).collect();
        for row in rows {
            for (array, value) in arrays.iter_mut().zip(&row) {
                array.push(value);
            }
        }
        let mut query = sqlx::query(sql);
        for array in arrays {
            query = array.bind(query);
        }
        query.execute(&mut *self.0).await?;
        Ok(())
    }

    /// Runs `COPY ... FROM STDIN` (`sql`) with `rows`.
    async fn copy_in(&mut self, sql: &str, rows: CopyText) -> Result<(), sqlx::Error> {
        let mut copy = self.0.copy_in_raw(sql).await?;
        copy.send(rows.data.into_bytes()).await?;
        copy.finish().await?;
        Ok(())
    }

    /// Copies in rows of `table` the server held nothing of; false (and
    /// nothing written) when the copy failed, as it does when one of them
    /// meets a row already under its key.
    async fn copy_new_rows(&mut self, table: &Table, rows: &[&RowWrite]) -> Result<bool, StoreError> {
        let mut copy = CopyText::with_capacity(rows.iter().map(|w| w.state_json.len()).sum());
        for w in rows {
            for (index, column) in table.columns.iter().enumerate() {
                copy.value(column.ty, &w.state.value_at(table, &w.key, index));
            }
            copy.end_row();
        }
        sqlx::query(SAVEPOINT).execute(&mut *self.0).await?;
        match self.copy_in(&copy_rows_in(table), copy).await {
            Ok(()) => {
                sqlx::query(RELEASE_SAVEPOINT).execute(&mut *self.0).await?;
                Ok(true)
            }
            // A row already under a key, or a table COPY cannot write
            // (row-level security): the upsert's own error, if any, is the
            // one to report.
            Err(sqlx::Error::Database(e)) => {
                tracing::debug!(table = %table.name, "new rows are upserted, the copy failed: {e}");
                sqlx::query(ROLLBACK_TO_SAVEPOINT).execute(&mut *self.0).await?;
                sqlx::query(RELEASE_SAVEPOINT).execute(&mut *self.0).await?;
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// Around the copy of new rows of a synced table, which a row already
/// under one of their keys makes fail (see "Rows new to the server").
/// A copy cut short leaves its connection out of step (sqlx does not
/// recover it): the server runs pushes and drains to their end even when
/// the request that began one is dropped (`http::AppState::push`).
const SAVEPOINT: &str = "SAVEPOINT rowsync_new_rows";
const RELEASE_SAVEPOINT: &str = "RELEASE SAVEPOINT rowsync_new_rows";
const ROLLBACK_TO_SAVEPOINT: &str = "ROLLBACK TO SAVEPOINT rowsync_new_rows";

impl PushTransaction for PostgresPush {
    const SHARED_WRITERS: bool = true;

    async fn lock_position(&mut self) -> Result<i64, StoreError> {
        let (last, _): (i64, String) = sqlx::query_as(LOCK_POSITION).fetch_one(&mut *self.0).await?;
        Ok(last)
    }

    async fn direct_entries(&mut self) -> Result<Vec<DirectEntry>, StoreError> {
        Ok(sqlx::query_as(SELECT_DIRECT).fetch_all(&mut *self.0).await?)
    }

    async fn read_row(&mut self, table: &Table, key: &[Value]) -> Result<Option<Vec<Value>>, StoreError> {
        let sql = ddl::select_row(table, Dialect::Postgres);
        let mut query = sqlx::query(&sql);
        for (&c, value) in table.primary_key.iter().zip(key) {
            let mut one = ColumnArray::new(table.columns[c].ty, 1);
            one.push(value);
            query = one.bind_one(query);
        }
        let Some(row) = query.fetch_optional(&mut *self.0).await? else { return Ok(None) };
        (0..table.columns.len()).map(|i| pg_value(&row, i)).collect::<Result<Vec<_>, _>>().map(Some)
    }

    async fn forget_direct(&mut self, ids: &[i64]) -> Result<(), StoreError> {
        sqlx::query(FORGET_DIRECT).bind(ids).execute(&mut *self.0).await?;
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
        let tables: Vec<&str> = rows.iter().map(|r| schema.tables[r.id.0].name.as_str()).collect();
        let keys: Vec<&str> = rows.iter().map(|r| r.id.1.as_str()).collect();
        let found: Vec<(String, String, String, Option<String>)> =
            sqlx::query_as(SELECT_STATES).bind(tables).bind(keys).fetch_all(&mut *self.0).await?;
        let mut stored = HashMap::with_capacity(found.len());
        for (table, key, json, owner) in found {
            let (index, state) = decode_stored(schema, &table, &json)?;
            stored.insert((index, key), Stored { state, owner });
        }
        Ok(stored)
    }

    async fn save_states(&mut self, schema: &Schema, site: &SiteId, writes: &[RowWrite]) -> Result<(), StoreError> {
        let (fresh, held): (Vec<&RowWrite>, Vec<&RowWrite>) = writes.iter().partition(|w| w.fresh);
        if !fresh.is_empty() {
            let room = fresh.iter().map(|w| w.state_json.len() + w.id.1.len() + 64).sum();
            let mut copy = CopyText::with_capacity(room);
            for w in fresh {
                copy.text(&schema.tables[w.id.0].name);
                copy.text(&w.id.1);
                copy.integer(w.position);
                copy.text(&w.state_json);
                copy.optional_text(w.echo.then_some(site.as_str()));
                copy.integer(w.state_json.len() as i64);
                copy.optional_text(w.owner.as_deref());
                copy.end_row();
            }
            self.copy_in(COPY_STATES, copy).await?;
        }
        if held.is_empty() {
            return Ok(());
        }
        let writes = held;
        sqlx::query(UPSERT_STATES)
            .bind(writes.iter().map(|w| schema.tables[w.id.0].name.as_str()).collect::<Vec<_>>())
            .bind(writes.iter().map(|w| w.id.1.as_str()).collect::<Vec<_>>())
            .bind(writes.iter().map(|w| w.position).collect::<Vec<_>>())
            .bind(writes.iter().map(|w| w.state_json.as_str()).collect::<Vec<_>>())
            .bind(writes.iter().map(|w| w.echo.then_some(site.as_str())).collect::<Vec<_>>())
            .bind(writes.iter().map(|w| w.state_json.len() as i64).collect::<Vec<_>>())
            .bind(writes.iter().map(|w| w.owner.as_deref()).collect::<Vec<_>>())
            .execute(&mut *self.0)
            .await?;
        Ok(())
    }

    async fn upsert_rows(&mut self, schema: &Schema, table: &Table, rows: &[&RowWrite]) -> Result<(), StoreError> {
        let (fresh, mut held): (Vec<&RowWrite>, Vec<&RowWrite>) = rows.iter().partition(|w| w.fresh);
        if !fresh.is_empty() && !self.copy_new_rows(table, &fresh).await? {
            held.extend(fresh);
        }
        if held.is_empty() {
            return Ok(());
        }
        let columns = table.columns.iter().map(|c| c.ty);
        self.execute_arrays(&upsert_rows_unnest(table), columns, held.iter().map(|w| row_values(schema, w))).await
    }

    async fn delete_rows(&mut self, table: &Table, rows: &[&RowWrite]) -> Result<(), StoreError> {
        let columns = table.primary_key.iter().map(|&i| table.columns[i].ty);
        self.execute_arrays(&delete_rows_unnest(table), columns, rows.iter().map(|w| w.key.clone())).await
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

    async fn announce(&mut self, position: i64) -> Result<(), StoreError> {
        // Delivered to every listener when (and only if) the push commits.
        sqlx::query(NOTIFY_COMMIT).bind(COMMIT_CHANNEL).bind(position.to_string()).execute(&mut *self.0).await?;
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

    async fn commit(self) -> Result<(), StoreError> {
        Ok(self.0.commit().await?)
    }
}
