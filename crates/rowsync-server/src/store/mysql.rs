//! MySQL and MariaDB as the source of truth.
//!
//! # Commit order
//! As with PostgreSQL (see that module), each push locks the one row of
//! `rowsync_positions` first (`SELECT ... FOR UPDATE`) and holds it until
//! commit, so positions become visible in the order they were handed out
//! and no puller's cursor passes a change that commits later. Pushes are
//! serialized; pulls take no lock. Sessions run at READ COMMITTED so that a
//! push, once it holds the lock, reads what the previous push committed.
//!
//! # Types
//! Tables use `utf8mb4` (emoji included). Key columns of type TEXT are
//! `VARCHAR(255)` with a binary collation, so keys compare exactly (case and
//! trailing spaces count, as in SQLite and PostgreSQL); text keys are at most
//! 255 characters here. MySQL flags binary-collated columns as binary, so
//! rowsync reads its own such columns back as bytes.

use std::collections::HashMap;

use rowsync_core::ddl::{self, Dialect};
use rowsync_core::horizon::Horizon;
use rowsync_proto::{ColumnType, Hlc, Schema, SiteId, Table, Value};
use sqlx::mysql::{MySqlArguments, MySqlPoolOptions};
use sqlx::query::Query;
use sqlx::{Executor, MySql, MySqlPool};

use super::collect::{collect, read_horizon, META_HORIZON};
use super::plan::{row_values, IncomingRow, RowId, RowWrite, Stored};
use super::push::{push_retrying, DirectEntry, MarkRow, PushTransaction, SiteMark};
use super::{
    decode_stored, token_from_row, CheckedBatch, PoolSettings, PullPage, PullParams, Pushed, Revoke, Store, StoreError,
    TokenRow,
};
use crate::auth::TokenRecord;

const CHARSET: &str = "DEFAULT CHARSET=utf8mb4";
const EXACT: &str = "CHARACTER SET utf8mb4 COLLATE utf8mb4_bin";
/// Token ids, hashes and user names are ASCII (checked before they are
/// stored); this collation compares them exactly and reads back as text.
const ASCII: &str = "CHARACTER SET ascii COLLATE ascii_general_ci";

fn bookkeeping() -> [String; 7] {
    [
        format!("CREATE TABLE IF NOT EXISTS rowsync_meta (`key` VARCHAR(64) PRIMARY KEY, value LONGTEXT NOT NULL) {CHARSET}"),
        "CREATE TABLE IF NOT EXISTS rowsync_positions (id INT PRIMARY KEY, last BIGINT NOT NULL)".to_string(),
        "INSERT IGNORE INTO rowsync_positions (id, last) VALUES (1, 0)".to_string(),
        format!(
            "CREATE TABLE IF NOT EXISTS rowsync_rows (tbl VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL, pk VARCHAR(750) {EXACT} NOT NULL, \
             pos BIGINT NOT NULL, state LONGTEXT NOT NULL, origin CHAR(32) {EXACT}, size BIGINT, PRIMARY KEY (tbl, pk), \
             UNIQUE KEY rowsync_rows_pos (pos)) {CHARSET}"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS rowsync_sites (site CHAR(32) {EXACT} PRIMARY KEY, hwm BIGINT NOT NULL, batch BIGINT) {CHARSET}"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS rowsync_tokens (id CHAR(16) {ASCII} PRIMARY KEY, usr VARCHAR(64) {ASCII} NOT NULL, \
             hash CHAR(64) {ASCII} NOT NULL, created BIGINT NOT NULL, expires BIGINT, revoked BIGINT) {CHARSET}"
        ),
        // Rows written directly (not through rowsync), noted by the capture
        // triggers (see `store::direct`).
        format!(
            "CREATE TABLE IF NOT EXISTS rowsync_direct (id BIGINT AUTO_INCREMENT PRIMARY KEY, \
             tbl VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL, pk TEXT {EXACT} NOT NULL, \
             at BIGINT NOT NULL) {CHARSET}"
        ),
    ]
}

/// Marks every connection of rowsync's pool: the capture triggers skip
/// writes of sessions that set it.
const MARK_APPLYING: &str = "SET @rowsync_applying = 1";
// Read as text (binary-collated columns come back as bytes otherwise).
const SELECT_DIRECT: &str =
    "SELECT id, CAST(tbl AS CHAR), CAST(pk AS CHAR CHARACTER SET utf8mb4), at FROM rowsync_direct ORDER BY id";
const ANY_DIRECT: &str = "SELECT count(*) FROM (SELECT 1 FROM rowsync_direct LIMIT 1) AS noted";
const HAS_TRIGGER: &str =
    "SELECT count(*) FROM information_schema.triggers WHERE trigger_schema = DATABASE() AND trigger_name = ?";

/// The capture triggers of `table` (name, statement): each write by a
/// session that is not rowsync's notes the table and the key (old and new,
/// for an update) in `rowsync_direct`.
fn capture_triggers(table: &Table) -> Vec<(String, String)> {
    let quote = |name: &str| Dialect::Mysql.quote(name);
    let key = |row: &str| {
        let parts: Vec<String> = table
            .primary_key
            .iter()
            .map(|&c| {
                let column = format!("{row}.{}", quote(&table.columns[c].name));
                match table.columns[c].ty {
                    ColumnType::Blob => format!("JSON_OBJECT('blob', HEX({column}))"),
                    _ => column,
                }
            })
            .collect();
        format!("JSON_ARRAY({})", parts.join(", "))
    };
    let literal = table.name.replace('\'', "''");
    let now = "CAST(UNIX_TIMESTAMP(NOW(3)) * 1000 AS SIGNED)";
    let note =
        |row: &str| format!("INSERT INTO rowsync_direct (tbl, pk, at) VALUES ('{literal}', {}, {now});", key(row));
    let changed_key = table
        .primary_key
        .iter()
        .map(|&c| format!("NOT (NEW.{0} <=> OLD.{0})", quote(&table.columns[c].name)))
        .collect::<Vec<_>>()
        .join(" OR ");
    // Trigger names have at most 64 characters: a long table name is
    // shortened and made unique by a hash of it.
    let base = if table.name.len() <= 48 {
        table.name.clone()
    } else {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(table.name.as_bytes());
        format!("{}_{}", &table.name[..32], digest.iter().take(4).map(|b| format!("{b:02x}")).collect::<String>())
    };
    let on = |event: &str, short: &str, body: String| {
        let name = format!("rowsync_{short}_{base}");
        let sql = format!(
            "CREATE TRIGGER {} AFTER {event} ON {} FOR EACH ROW BEGIN IF @rowsync_applying IS NULL THEN {body} END IF; END",
            quote(&name),
            quote(&table.name)
        );
        (name, sql)
    };
    vec![
        on("INSERT", "i", note("NEW")),
        on("UPDATE", "u", format!("{} IF {changed_key} THEN {} END IF;", note("OLD"), note("NEW"))),
        on("DELETE", "d", note("OLD")),
    ]
}

const INSTALL_LOCK: &str = "SELECT GET_LOCK('rowsync_install', 60)";
const INSTALL_UNLOCK: &str = "SELECT RELEASE_LOCK('rowsync_install')";
/// Rows whose state holds a delete, after a position (tombstone candidates).
const TOMBSTONES: &str = "SELECT pos, tbl, pk, state FROM rowsync_rows WHERE pos > ? AND state LIKE '%\"deleted\"%' \
     ORDER BY pos LIMIT ?";
const FORGET_ROW: &str = "DELETE FROM rowsync_rows WHERE tbl = ? AND pk = ? AND pos = ?";
/// A value of `rowsync_meta` (see `store::META_*` for the keys).
const SELECT_META: &str = "SELECT value FROM rowsync_meta WHERE `key` = ?";
const SAVE_META: &str =
    "INSERT INTO rowsync_meta (`key`, value) VALUES (?, ?) ON DUPLICATE KEY UPDATE value = VALUES(value)";
const LOCK_POSITION: &str = "SELECT last FROM rowsync_positions WHERE id = 1 FOR UPDATE";
const CURRENT_POSITION: &str = "SELECT last FROM rowsync_positions WHERE id = 1";
const UPDATE_POSITION: &str = "UPDATE rowsync_positions SET last = ? WHERE id = 1";
const SELECT_MARK: &str = "SELECT hwm, batch, usr FROM rowsync_sites WHERE site = ?";
const UPSERT_HWM: &str = "INSERT INTO rowsync_sites (site, hwm, batch, usr) VALUES (?, ?, ?, ?) \
     ON DUPLICATE KEY UPDATE hwm = GREATEST(hwm, VALUES(hwm)), batch = VALUES(batch), usr = VALUES(usr)";
/// Columns added to the bookkeeping after databases were first made:
/// states' sizes (NULL: measured when pulled), the id of each site's last
/// request applied, the owner of each private row and the user of each
/// site. MySQL has no `ADD COLUMN IF NOT EXISTS`.
const ADDED_COLUMNS: [(&str, &str, &str); 4] = [
    ("rowsync_rows", "size", "BIGINT"),
    ("rowsync_sites", "batch", "BIGINT"),
    ("rowsync_rows", "owner", "VARCHAR(64) CHARACTER SET ascii COLLATE ascii_general_ci"),
    ("rowsync_sites", "usr", "VARCHAR(64) CHARACTER SET ascii COLLATE ascii_general_ci"),
];
const HAS_COLUMN: &str = "SELECT count(*) FROM information_schema.columns \
     WHERE table_schema = DATABASE() AND table_name = ? AND column_name = ?";
/// A pull page and, in the same snapshot, what lies beyond it (see
/// `store::PulledRow`); parameters: inline state size, cursor, span end,
/// user, site, rows; cursor, span end, user; span end, user.
// The page's rows are a parenthesized query of the union, not a derived
// table: MariaDB copied a derived table's rows into a temporary table on
// disk (its states are LONGTEXT), a sixth of the query's time.
const PULL: &str = "(SELECT CAST(0 AS SIGNED) AS kind, pos, coalesce(size, length(state)) AS size, \
     CASE WHEN coalesce(size, length(state)) > ? THEN NULL ELSE state END AS state FROM rowsync_rows \
     WHERE pos > ? AND pos <= ? AND (owner IS NULL OR owner = ?) AND (origin = ?) IS NOT TRUE ORDER BY pos LIMIT ?) \
     UNION ALL (SELECT 1, (SELECT pos FROM rowsync_rows \
     WHERE pos > ? AND pos <= ? AND (owner IS NULL OR owner = ?) ORDER BY pos DESC LIMIT 1), \
     CASE WHEN (SELECT pos FROM rowsync_rows WHERE pos > ? AND (owner IS NULL OR owner = ?) ORDER BY pos LIMIT 1) IS NULL THEN 0 ELSE 1 END, NULL)";
const PULL_ONE: &str = "SELECT state FROM rowsync_rows WHERE pos = ?";
const INSERT_TOKEN: &str = "INSERT INTO rowsync_tokens (id, usr, hash, created, expires) VALUES (?, ?, ?, ?, ?)";
const SELECT_TOKEN: &str = "SELECT id, usr, hash, created, expires, revoked FROM rowsync_tokens WHERE id = ?";
const SELECT_TOKENS: &str = "SELECT id, usr, hash, created, expires, revoked FROM rowsync_tokens ORDER BY created, id";
const REVOKE_TOKEN: &str = "UPDATE rowsync_tokens SET revoked = ? WHERE revoked IS NULL AND id = ?";
const REVOKE_USER: &str = "UPDATE rowsync_tokens SET revoked = ? WHERE revoked IS NULL AND usr = ?";
const SELECT_UNOWNED: &str = "SELECT pk, state FROM rowsync_rows WHERE tbl = ? AND owner IS NULL";
const SET_OWNER: &str = "UPDATE rowsync_rows SET owner = ? WHERE tbl = ? AND pk = ?";

fn select_states(rows: usize) -> String {
    let pairs = vec!["(?, ?)"; rows].join(", ");
    format!("SELECT tbl, pk, state, owner FROM rowsync_rows WHERE (tbl, pk) IN ({pairs})")
}

fn upsert_states(rows: usize) -> String {
    let tuples = vec!["(?, ?, ?, ?, ?, ?, ?)"; rows].join(", ");
    format!(
        "INSERT INTO rowsync_rows (tbl, pk, pos, state, origin, size, owner) VALUES {tuples} \
         ON DUPLICATE KEY UPDATE pos = VALUES(pos), state = VALUES(state), origin = VALUES(origin), size = VALUES(size), \
         owner = VALUES(owner)"
    )
}

fn bind_typed<'q>(
    query: Query<'q, MySql, MySqlArguments>,
    ty: ColumnType,
    value: &Value,
) -> Query<'q, MySql, MySqlArguments> {
    match (ty, value) {
        (ColumnType::Boolean, Value::Integer(i)) => query.bind(*i != 0),
        (ColumnType::Real, Value::Integer(i)) => query.bind(*i as f64),
        (_, Value::Integer(i)) => query.bind(*i),
        (_, Value::Real(r)) => query.bind(*r),
        (_, Value::Text(s)) => query.bind(s.clone()),
        (_, Value::Blob(b)) => query.bind(b.clone()),
        (_, Value::Null) => query.bind(None::<i64>),
    }
}

/// A value of a row read back as its column's type (text of an exactly
/// compared column comes back as bytes: see the module docs).
fn mysql_value(row: &sqlx::mysql::MySqlRow, index: usize, ty: ColumnType) -> Result<Value, StoreError> {
    use sqlx::{Row, ValueRef};
    if row.try_get_raw(index)?.is_null() {
        return Ok(Value::Null);
    }
    Ok(match ty {
        ColumnType::Integer | ColumnType::Boolean => Value::Integer(row.try_get::<i64, _>(index)?),
        ColumnType::Real => Value::Real(row.try_get::<f64, _>(index)?),
        ColumnType::Blob => Value::Blob(row.try_get::<Vec<u8>, _>(index)?),
        ColumnType::Text => Value::Text(match row.try_get::<String, _>(index) {
            Ok(text) => text,
            Err(_) => utf8(row.try_get::<Vec<u8>, _>(index)?)?,
        }),
    })
}

fn utf8(bytes: Vec<u8>) -> Result<String, StoreError> {
    String::from_utf8(bytes)
        .map_err(|e| StoreError::Conflict(format!("rowsync_rows holds a key that is not UTF-8: {e}")))
}

fn key_types(table: &Table) -> impl Iterator<Item = ColumnType> + '_ {
    table.primary_key.iter().map(|&i| table.columns[i].ty)
}

/// A MySQL or MariaDB store.
#[derive(Clone, Debug)]
pub struct MysqlStore {
    pool: MySqlPool,
    push_delay: Option<std::time::Duration>,
}

impl MysqlStore {
    /// Fault injection for tests: sleep inside every push transaction,
    /// after its writes and before its commit.
    pub fn with_push_delay(mut self, delay: Option<std::time::Duration>) -> Self {
        self.push_delay = delay;
        self
    }

    pub async fn connect(url: &str, settings: &PoolSettings) -> Result<MysqlStore, StoreError> {
        let pool = MySqlPoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(settings.acquire_timeout)
            .after_connect(|conn, _meta| {
                Box::pin(async move {
                    conn.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED").await?;
                    conn.execute(MARK_APPLYING).await?;
                    Ok(())
                })
            })
            .connect_lazy(url)
            .map_err(|e| StoreError::Unavailable(format!("bad MySQL URL: {e}")))?;
        Ok(MysqlStore { pool, push_delay: None })
    }
}

async fn create_bookkeeping(conn: &mut sqlx::MySqlConnection) -> Result<(), StoreError> {
    for statement in bookkeeping() {
        sqlx::query(&statement).execute(&mut *conn).await?;
    }
    for (table, column, ty) in ADDED_COLUMNS {
        let has: i64 = sqlx::query_scalar(HAS_COLUMN).bind(table).bind(column).fetch_one(&mut *conn).await?;
        if has == 0 {
            sqlx::query(&format!("ALTER TABLE {table} ADD COLUMN {column} {ty}")).execute(&mut *conn).await?;
        }
    }
    Ok(())
}

impl Store for MysqlStore {
    async fn prepare(&self) -> Result<(), StoreError> {
        let mut conn = self.pool.acquire().await?;
        sqlx::query(INSTALL_LOCK).execute(&mut *conn).await?;
        let result = create_bookkeeping(&mut conn).await;
        sqlx::query(INSTALL_UNLOCK).execute(&mut *conn).await?;
        result
    }

    async fn install(&self, schema: Option<&Schema>) -> Result<Schema, StoreError> {
        // DDL commits implicitly in MySQL, so a named lock (not a
        // transaction) keeps servers starting together from racing.
        let mut conn = self.pool.acquire().await?;
        sqlx::query(INSTALL_LOCK).execute(&mut *conn).await?;
        let result = async {
            create_bookkeeping(&mut conn).await?;
            let format: Option<String> =
                sqlx::query_scalar(SELECT_META).bind(super::META_FORMAT).fetch_optional(&mut *conn).await?;
            if super::check_format(format)? {
                sqlx::query(SAVE_META)
                    .bind(super::META_FORMAT)
                    .bind(super::FORMAT.to_string())
                    .execute(&mut *conn)
                    .await?;
            }
            let stored: Option<String> =
                sqlx::query_scalar(SELECT_META).bind(super::META_SCHEMA).fetch_optional(&mut *conn).await?;
            let installing = super::reconcile_schema(schema, stored)?;
            // Each ALTER commits by itself here: a start that stops midway
            // leaves columns the next start finds there.
            for (column, statement) in installing.steps(Dialect::Mysql) {
                if let Some(column) = column {
                    let has: i64 =
                        sqlx::query_scalar(HAS_COLUMN).bind(column.0).bind(column.1).fetch_one(&mut *conn).await?;
                    if has > 0 {
                        installing.kept(column);
                        continue;
                    }
                }
                sqlx::query(&statement).execute(&mut *conn).await?;
            }
            if let Some(json) = installing.record()? {
                sqlx::query(SAVE_META).bind(super::META_SCHEMA).bind(json).execute(&mut *conn).await?;
            }
            installing.log();
            let schema = installing.schema;
            for table in &schema.tables {
                for (name, create) in capture_triggers(table) {
                    let has: i64 = sqlx::query_scalar(HAS_TRIGGER).bind(&name).fetch_one(&mut *conn).await?;
                    if has == 0 {
                        // Not preparable: sent as text.
                        conn.execute(create.as_str()).await?;
                    }
                }
            }
            Ok::<_, StoreError>(schema)
        }
        .await;
        sqlx::query(INSTALL_UNLOCK).execute(&mut *conn).await?;
        result
    }

    async fn push(&self, schema: &Schema, batch: &CheckedBatch) -> Result<Pushed, StoreError> {
        push_retrying(|| async { Ok(MysqlPush(self.pool.begin().await?)) }, schema, batch, self.push_delay).await
    }

    async fn drain_direct(&self, schema: &Schema, now_ms: u64) -> Result<Option<u64>, StoreError> {
        let any: i64 = sqlx::query_scalar(ANY_DIRECT).fetch_one(&self.pool).await?;
        if any == 0 {
            return Ok(None);
        }
        super::direct::drain_alone(MysqlPush(self.pool.begin().await?), schema, now_ms).await
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
        let rows: Vec<(Vec<u8>, String)> = sqlx::query_as(SELECT_UNOWNED).bind(table).fetch_all(&self.pool).await?;
        rows.into_iter().map(|(key, state)| Ok((utf8(key)?, state))).collect()
    }

    async fn set_owners(&self, table: &str, owners: &[(String, String)]) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
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
            // Binary collations: the table and key come back as bytes.
            let rows: Vec<(i64, Vec<u8>, Vec<u8>, String)> =
                sqlx::query_as(TOMBSTONES).bind(after).bind(i64::from(limit)).fetch_all(&self.pool).await?;
            rows.into_iter().map(|(pos, table, key, state)| Ok((pos, utf8(table)?, utf8(key)?, state))).collect()
        };
        collect(schema, cutoff, candidates, || async { Ok(MysqlPush(self.pool.begin().await?)) }).await
    }
}

/// A push transaction on MySQL/MariaDB: multi-row statements, chunked to
/// the parameter limit, values bound as their column's type.
struct MysqlPush(sqlx::Transaction<'static, MySql>);

impl PushTransaction for MysqlPush {
    const SHARED_WRITERS: bool = true;

    async fn lock_position(&mut self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(LOCK_POSITION).fetch_one(&mut *self.0).await?)
    }

    async fn direct_entries(&mut self) -> Result<Vec<DirectEntry>, StoreError> {
        Ok(sqlx::query_as(SELECT_DIRECT).fetch_all(&mut *self.0).await?)
    }

    async fn read_row(&mut self, table: &Table, key: &[Value]) -> Result<Option<Vec<Value>>, StoreError> {
        let sql = ddl::select_row(table, Dialect::Mysql);
        let mut query = sqlx::query(&sql);
        for (&c, value) in table.primary_key.iter().zip(key) {
            query = bind_typed(query, table.columns[c].ty, value);
        }
        let Some(row) = query.fetch_optional(&mut *self.0).await? else { return Ok(None) };
        table
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| mysql_value(&row, i, c.ty))
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
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
            let mut query = sqlx::query_as::<_, (Vec<u8>, Vec<u8>, String, Option<String>)>(&sql);
            for row in chunk {
                query = query.bind(schema.tables[row.id.0].name.as_str()).bind(row.id.1.as_str());
            }
            for (table, key, json, owner) in query.fetch_all(&mut *self.0).await? {
                let (table, key) = (utf8(table)?, utf8(key)?);
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
                    .bind(schema.tables[write.id.0].name.as_str())
                    .bind(write.id.1.as_str())
                    .bind(write.position)
                    .bind(write.state_json.as_str())
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
            let sql = ddl::upsert_rows(table, Dialect::Mysql, chunk.len());
            let mut query = sqlx::query(&sql);
            for write in chunk {
                for (column, value) in table.columns.iter().zip(row_values(schema, write)) {
                    query = bind_typed(query, column.ty, &value);
                }
            }
            query.execute(&mut *self.0).await?;
        }
        Ok(())
    }

    async fn delete_rows(&mut self, table: &Table, rows: &[&RowWrite]) -> Result<(), StoreError> {
        for chunk in rows.chunks(ddl::rows_per_statement(table.primary_key.len())) {
            let sql = ddl::delete_rows(table, Dialect::Mysql, chunk.len());
            let mut query = sqlx::query(&sql);
            for write in chunk {
                for (ty, value) in key_types(table).zip(&write.key) {
                    query = bind_typed(query, ty, value);
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

    async fn commit(self) -> Result<(), StoreError> {
        Ok(self.0.commit().await?)
    }
}
