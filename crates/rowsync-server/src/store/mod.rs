//! The store: where the server's source of truth lives.
//!
//! One trait, one adapter per database. Type mapping and SQL dialect live in
//! the adapters and nowhere else. Every adapter keeps the same bookkeeping,
//! in tables whose names begin with `rowsync_`:
//! - `rowsync_meta`: the installed schema (with its version, counting the
//!   restarts that added tables or columns) and the position counter;
//! - `rowsync_rows`: per synced row, its full merged state (values and
//!   versions, tombstones included), the state's size in bytes, and the
//!   position of its latest change;
//! - `rowsync_sites`: per replica, the high-water mark of applied site sequences.
//!
//! A pull returns the rows whose position lies after the cursor, in position
//! order: at most `limit` rows with the size of each state, and the states
//! themselves unless they are large, looking through at most [`PULL_SPAN`]
//! positions; the page is then cut to its byte budget ([`page_extent`]) and
//! the large states it keeps are read one by one. So
//! memory stays bounded however large rows are, and small rows still come
//! in one query. A row changed again moves to a new position, so the change log
//! compacts itself: a puller never receives a row's superseded states.

mod collect;
mod direct;
mod mysql;
pub mod plan;
mod postgres;
mod push;
mod sqlite;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rowsync_core::change::decode_state;
use rowsync_core::ddl::{self, Dialect};
use rowsync_core::horizon::Horizon;
use rowsync_core::{Addition, ChangeError, DecodedChange, RowState};
use rowsync_proto::{Hlc, PushResponse, RowChange, Schema, SiteId};

use crate::auth::TokenRecord;
use crate::commits::{Commits, POLL_EVERY};
pub use plan::Collision;
pub use push::SiteMark;

pub use mysql::MysqlStore;
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

/// Why a store operation failed, grouped by what the caller should do.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached; the request may be retried later.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The database holds something rowsync did not expect.
    #[error("{0}")]
    Conflict(String),
    /// Any other database failure.
    #[error("database error: {0}")]
    Database(String),
    /// A request from a copy of a replica: the last request the server
    /// applied for the site is none this copy knows of. Nothing was applied.
    #[error("another copy of this replica (same device id) pushed to the server since this one last did")]
    SiteReused,
    /// A change of a push batch (its index given) writes a private row of
    /// another user. Nothing was applied.
    #[error("change {change}: this row belongs to another user")]
    NotOwner { change: usize },
    /// A change of a push batch (its index given) revives a row the server
    /// forgot behind the tombstone horizon, with writes no newer than its
    /// delete may have been (see [`rowsync_core::horizon`]). Nothing was
    /// applied.
    #[error("change {change}: this row was deleted, and its delete forgotten, after these writes may have been made")]
    Forgotten { change: usize },
    /// The device id was first used by another user. Nothing was applied.
    #[error("this device id is registered to another user")]
    ForeignSite,
    /// A write made directly in the database committed on a row this push
    /// writes, after the push had read it: the push is rolled back (and
    /// tried again) rather than overwrite it.
    #[error("a direct write to the database raced this push")]
    DirectRace,
    /// The database holds tables or columns this server process does not
    /// know: another process, started with a grown schema, added them. This
    /// one must be restarted; nothing was applied.
    #[error(
        "this server process serves an older schema than its database: a `rowsync serve` started since added \
         tables or columns; restart this process with the new schema file"
    )]
    SchemaBehind,
    /// The database cannot take writes: its disk is full, or it is
    /// read-only. Nothing was applied; the request may be retried once an
    /// operator has made room or made it writable.
    #[error("the database cannot take writes ({0:?}): {1}")]
    CannotWrite(CannotWrite, String),
}

/// Why a database takes no writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CannotWrite {
    DiskFull,
    ReadOnly,
}

/// Whether a database error says the database takes no writes: SQLite's
/// SQLITE_FULL and SQLITE_READONLY (with their extended codes), PostgreSQL's
/// disk_full and read_only_sql_transaction, MySQL's disk and table full and
/// read-only errors.
fn cannot_write(db: &dyn sqlx::error::DatabaseError) -> Option<CannotWrite> {
    if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
        let code = db.code().and_then(|code| code.parse::<u32>().ok()).map(|code| code & 0xff);
        return match code {
            Some(13) => Some(CannotWrite::DiskFull),
            Some(8) => Some(CannotWrite::ReadOnly),
            _ => None,
        };
    }
    if let Some(mysql) = db.try_downcast_ref::<sqlx::mysql::MySqlDatabaseError>() {
        return match mysql.number() {
            1021 | 1114 => Some(CannotWrite::DiskFull),
            1290 | 1836 => Some(CannotWrite::ReadOnly),
            _ => None,
        };
    }
    match db.code().as_deref() {
        Some("53100") => Some(CannotWrite::DiskFull),
        Some("25006") => Some(CannotWrite::ReadOnly),
        _ => None,
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> StoreError {
        if let sqlx::Error::Database(db) = &err {
            if let Some(why) = cannot_write(db.as_ref()) {
                return StoreError::CannotWrite(why, err.to_string());
            }
        }
        let unavailable = match &err {
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed => true,
            sqlx::Error::Database(db) => db.code().is_some_and(|code| {
                // PostgreSQL: connection exceptions (08...), shutdown (57P01-03).
                // MySQL/MariaDB: server gone, shutting down, too many connections.
                code.starts_with("08")
                    || code.starts_with("57P")
                    || matches!(code.as_ref(), "HY000" | "1040" | "1053" | "2006" | "2013")
                        && db.message().to_ascii_lowercase().contains("shutdown")
            }),
            _ => false,
        };
        if unavailable {
            StoreError::Unavailable(err.to_string())
        } else {
            StoreError::Database(err.to_string())
        }
    }
}

/// Connection pool settings of the PostgreSQL and MySQL stores.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolSettings {
    pub max_connections: u32,
    /// How long a request waits for a connection before answering 503.
    pub acquire_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings { max_connections: 10, acquire_timeout: Duration::from_secs(5) }
    }
}

/// What a database must do at start to serve its schema.
#[derive(Debug)]
pub(crate) struct Installing {
    /// The schema it serves from now on, with its version.
    pub schema: Schema,
    /// Tables and columns to create (every table of a new database).
    pub additions: Vec<Addition>,
    /// The database had no schema yet.
    fresh: bool,
}

/// One statement of an install, with the column it adds (`(table,
/// column)`): a column already there is kept instead.
pub(crate) type InstallStep<'a> = (Option<(&'a str, &'a str)>, String);

impl Installing {
    /// The statements creating what is added, in the dialect of the store.
    /// Tables are created only when missing; a column the table has
    /// already (an admin added it first, or a start stopped between adding
    /// it and recording the schema) is for the store to skip with
    /// [`Installing::kept`].
    pub fn steps(&self, dialect: Dialect) -> Vec<InstallStep<'_>> {
        let tables = &self.schema.tables;
        self.additions
            .iter()
            .map(|addition| match *addition {
                Addition::Table { table } => (None, ddl::create_table(&tables[table], dialect)),
                Addition::Column { table, column } => {
                    let (name, added) = (tables[table].name.as_str(), tables[table].columns[column].name.as_str());
                    (Some((name, added)), ddl::add_column(&tables[table], column, dialect))
                }
            })
            .collect()
    }

    /// Says that a column the schema adds was in the table already.
    pub fn kept(&self, (table, column): (&str, &str)) {
        tracing::warn!(
            "column {table}.{column} was in the database already: kept as it is; values it holds reach \
             replicas as their rows are next written"
        );
    }

    /// The schema as `rowsync_meta` records it, when it must be recorded
    /// (it is new, or grew).
    pub fn record(&self) -> Result<Option<String>, StoreError> {
        if self.additions.is_empty() {
            return Ok(None);
        }
        serde_json::to_string(&self.schema).map(Some).map_err(|e| StoreError::Database(e.to_string()))
    }

    /// Says in the log what grew.
    pub fn log(&self) {
        if self.fresh || self.additions.is_empty() {
            return;
        }
        let tables = &self.schema.tables;
        let added: Vec<String> = self
            .additions
            .iter()
            .map(|addition| match *addition {
                Addition::Table { table } => format!("table {}", tables[table].name),
                Addition::Column { table, column } => {
                    format!("column {}.{}", tables[table].name, tables[table].columns[column].name)
                }
            })
            .collect();
        tracing::info!(version = self.schema.version, "the schema grew: {} added", added.join(", "));
    }
}

/// What a database must do to serve the schema from `--schema` (if any),
/// given the one it recorded earlier (if any): create everything (a new
/// database), add what the file adds (see [`rowsync_core::evolution`]), or
/// nothing. Changes that are not additive are refused, each named with the
/// supported way to get there.
pub(crate) fn reconcile_schema(given: Option<&Schema>, stored: Option<String>) -> Result<Installing, StoreError> {
    match (given, recorded(stored)?) {
        // Conflict strategies come from the server's settings at every start.
        (Some(given), Some(stored)) => match rowsync_core::evolve(&stored, given) {
            Ok(evolution) => Ok(Installing { schema: evolution.schema, additions: evolution.additions, fresh: false }),
            Err(refused) => Err(StoreError::Conflict(format!(
                "the schema file changes what this database serves in ways rowsync cannot carry out: {}",
                refused.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
            ))),
        },
        (None, Some(stored)) => Ok(Installing {
            schema: Schema { version: stored.version.max(1), ..stored },
            additions: Vec::new(),
            fresh: false,
        }),
        (None, None) => Err(StoreError::Conflict("this database has no schema yet: pass --schema FILE".into())),
        (Some(given), None) => Ok(Installing {
            additions: (0..given.tables.len()).map(|table| Addition::Table { table }).collect(),
            schema: Schema { version: 1, ..given.clone() },
            fresh: true,
        }),
    }
}

/// Keys of `rowsync_meta`: the installed schema, and the database format.
pub(crate) const META_SCHEMA: &str = "schema";
pub(crate) const META_FORMAT: &str = "format";

/// The server database format this version writes (`format` in
/// `rowsync_meta`). A database without one was made before formats were
/// numbered and is brought up to date; one of a later format is refused.
pub const FORMAT: u32 = 1;

/// Whether a database whose `rowsync_meta` records `stored` as its format
/// can be served by this version: `Ok(true)` when this version's format is
/// to be recorded (it is older, or none), an error when it is newer.
pub(crate) fn check_format(stored: Option<String>) -> Result<bool, StoreError> {
    let format: u32 = match stored {
        None => 0,
        Some(text) => text
            .trim()
            .parse()
            .map_err(|_| StoreError::Conflict(format!("unreadable database format in rowsync_meta: {text:?}")))?,
    };
    if format > FORMAT {
        return Err(StoreError::Conflict(format!(
            "this database was written by a newer rowsync (database format {format}; this rowsync serves formats up \
             to {FORMAT}): upgrade rowsync to serve it"
        )));
    }
    Ok(format < FORMAT)
}

/// The schema `rowsync_meta` records, if any.
fn recorded(stored: Option<String>) -> Result<Option<Schema>, StoreError> {
    stored
        .map(|s| serde_json::from_str(&s))
        .transpose()
        .map_err(|e| StoreError::Conflict(format!("unreadable schema in rowsync_meta: {e}")))
}

/// The version of a schema as `rowsync_meta` records it.
pub(crate) fn recorded_version(stored: Option<String>) -> Result<u64, StoreError> {
    Ok(recorded(stored)?.map_or(0, |schema| schema.version.max(1)))
}

/// Decodes a state a store wrote itself for a row of table `name`, returning
/// the table's index too. Its key was checked when it was first stored.
pub(crate) fn decode_stored(schema: &Schema, name: &str, json: &str) -> Result<(usize, RowState), StoreError> {
    let change: RowChange = serde_json::from_str(json)
        .map_err(|e| StoreError::Conflict(format!("unreadable row state in rowsync_rows: {e}")))?;
    decode_stored_change(schema, name, change)
}

/// [`decode_stored`] of a state already read from its JSON.
pub(crate) fn decode_stored_change(
    schema: &Schema,
    name: &str,
    change: RowChange,
) -> Result<(usize, RowState), StoreError> {
    // A store only writes names its schema had: one this process does not
    // know was added by a process started with a grown schema since.
    let index = schema.table_index(name).ok_or(StoreError::SchemaBehind)?;
    let state = decode_state(&schema.tables[index], change).map_err(|e| match e {
        ChangeError::UnknownColumn { .. } => StoreError::SchemaBehind,
        other => StoreError::Conflict(format!("row state in rowsync_rows no longer fits the schema: {other}")),
    })?;
    Ok((index, state))
}

/// States larger than this (in bytes) are not read with the rest of a pull
/// page but one by one, once the page is known to include them: a page of
/// `limit` rows then holds at most `limit` times this much in memory before
/// it is cut to its byte budget.
pub(crate) const INLINE_STATE: i64 = 16 * 1024;

/// How many positions past the cursor one pull page looks through at most.
/// Rows a page leaves out (the asking device's own writes) cost it only a
/// look inside the database, not a row sent back: a device that has just
/// pushed a backlog skips past its own writes in a few requests, and no
/// request looks through more than this.
pub(crate) const PULL_SPAN: i64 = 100_000;

/// What a pull query found beyond the rows it may send, in the same
/// snapshot: the last position within the span that the caller may see
/// (its own writes included), and whether it may see any position past the
/// span.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Span {
    pub end: i64,
    pub last_seen: Option<i64>,
    pub more: bool,
}

/// How far a pull page reaches: given the `(position, size in bytes)` of
/// the rows it may send (fetched with one row more than `limit`, to learn
/// whether more follow) and what lies beyond them in the `span`, the last
/// position of the page and whether more follow. A page holds at most
/// `limit` rows and, beyond its first row, at most `max_bytes` bytes of
/// states: one huge row is a page alone. When every row fits, the page
/// reaches the last position of the span the caller may see: positions
/// become visible in the order they were handed out, so none below it can
/// appear later. With nothing to see in the span but something past it,
/// the page reaches the span's end.
pub(crate) fn page_extent(sizes: &[(i64, i64)], span: Span, limit: u32, max_bytes: usize) -> Option<(i64, bool)> {
    let mut bytes = 0usize;
    let mut taken = 0usize;
    for &(_, size) in sizes.iter().take(limit as usize) {
        bytes = bytes.saturating_add(size.max(0) as usize);
        if taken > 0 && bytes > max_bytes {
            break;
        }
        taken += 1;
    }
    if taken < sizes.len() {
        return Some((sizes[taken.checked_sub(1)?].0, true));
    }
    let last_sent = sizes.last().map(|&(pos, _)| pos);
    match (last_sent.max(span.last_seen), span.more) {
        (Some(last), more) => Some((last, more)),
        (None, true) => Some((span.end, true)),
        (None, false) => None,
    }
}

/// One row of a pull query: `(0, position, size, state)` for a row the page
/// may send, its state left out when larger than [`INLINE_STATE`]; and one
/// `(1, last position seen in the span, 1 if more lie past it, None)`.
pub(crate) type PulledRow = (i64, Option<i64>, i64, Option<String>);

/// The parameters of a pull query, for the stores to bind.
pub(crate) struct PullParams<'a> {
    pub cursor: i64,
    /// The last position of the span ([`PULL_SPAN`]).
    pub end: i64,
    /// One more than the page's limit.
    pub rows: i64,
    pub site: Option<&'a str>,
    pub user: Option<&'a str>,
}

impl PullParams<'_> {
    pub(crate) fn new<'a>(cursor: u64, limit: u32, site: Option<&'a SiteId>, user: Option<&'a str>) -> PullParams<'a> {
        let cursor = cursor.min(i64::MAX as u64) as i64;
        PullParams {
            cursor,
            end: cursor.saturating_add(PULL_SPAN),
            rows: i64::from(limit) + 1,
            site: site.map(SiteId::as_str),
            user,
        }
    }
}

/// Cuts the rows of a pull query to a page, fetching the large states it
/// includes with `large`, by position. A large state whose row moved on
/// meanwhile (it changed again) is left out: it comes later, at its new
/// position.
pub(crate) async fn page_from_rows<F, Fut>(
    rows: Vec<PulledRow>,
    params: &PullParams<'_>,
    limit: u32,
    max_bytes: usize,
    mut large: F,
) -> Result<PullPage, StoreError>
where
    F: FnMut(i64) -> Fut,
    Fut: Future<Output = Result<Option<String>, StoreError>>,
{
    let mut span = Span { end: params.end, last_seen: None, more: false };
    let mut sent = Vec::with_capacity(rows.len());
    for (kind, pos, size, state) in rows {
        match (kind, pos) {
            (0, Some(pos)) => sent.push((pos, size, state)),
            (_, last_seen) => span = Span { end: params.end, last_seen, more: size > 0 },
        }
    }
    // A union's order is not promised: the rows are put in position order.
    sent.sort_unstable_by_key(|(pos, _, _)| *pos);
    let sizes: Vec<(i64, i64)> = sent.iter().map(|(pos, size, _)| (*pos, *size)).collect();
    let cursor = params.cursor as u64;
    let Some((last, more)) = page_extent(&sizes, span, limit, max_bytes) else {
        return Ok(PullPage { cursor, ..PullPage::default() });
    };
    let (mut states, mut positions) = (Vec::new(), Vec::new());
    for (pos, size, state) in sent.into_iter().take_while(|(pos, _, _)| *pos <= last) {
        let state = match state {
            Some(state) => Some(state),
            None if size > INLINE_STATE => large(pos).await?,
            None => None,
        };
        if let Some(state) = state {
            states.push(state);
            positions.push(pos as u64);
        }
    }
    Ok(PullPage { states, positions, cursor: last as u64, more })
}

/// A page of changes as raw JSON row states, ready to be sent as they are.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PullPage {
    pub states: Vec<String>,
    /// The position of each state, in the same order.
    pub positions: Vec<u64>,
    pub cursor: u64,
    pub more: bool,
}

/// What a push did: the answer for the client, and the last position now
/// handed out (to wake long-polling pulls).
#[derive(Debug, Clone, PartialEq)]
pub struct Pushed {
    pub response: PushResponse,
    pub position: u64,
    /// Inserts that met another row under their key (see [`Collision`]).
    pub collisions: Vec<Collision>,
}

/// Reads the position counter every `every` while pulls wait, and tells
/// `commits` (see [`Store::follow_commits`]).
pub(crate) async fn poll_commits<S: Store>(store: &S, commits: &Commits, every: impl Fn() -> Duration) {
    loop {
        commits.someone_waits().await;
        match store.last_position().await {
            Ok(position) => commits.committed(position),
            Err(error) => tracing::debug!(%error, "reading the position counter"),
        }
        tokio::time::sleep(every()).await;
    }
}

/// A row of `rowsync_tokens`: id, user, hash, created, expires, revoked.
pub(crate) type TokenRow = (String, String, String, i64, Option<i64>, Option<i64>);

pub(crate) fn token_from_row((id, user, hash, created, expires, revoked): TokenRow) -> TokenRecord {
    TokenRecord {
        id,
        user,
        hash,
        created_ms: created as u64,
        expires_ms: expires.map(|ms| ms as u64),
        revoked_ms: revoked.map(|ms| ms as u64),
    }
}

/// Which tokens to revoke.
#[derive(Clone, Copy, Debug)]
pub enum Revoke<'a> {
    Id(&'a str),
    /// Every token of a user.
    User(&'a str),
}

/// A change of a push batch, already checked against the schema.
#[derive(Debug, Clone)]
pub struct CheckedChange {
    pub seq: u64,
    pub change: DecodedChange,
    /// The change is a whole row as its writer holds it, without saying
    /// which columns it wrote (the tutorial protocol's `/sync`): columns
    /// equal to the stored row keep their stored versions, so that a
    /// column the writer did not touch does not outrank another's edit.
    pub whole_row: bool,
}

/// Whether a request comes from another copy of the replica than the one
/// whose request the server applied last for the site (see
/// [`rowsync_proto::PushRequest::known`]).
pub(crate) fn from_another_copy(last: Option<u64>, this: Option<u64>, known: Option<&[u64]>) -> bool {
    match (last, known) {
        (Some(last), Some(known)) => this != Some(last) && !known.contains(&last),
        _ => false,
    }
}

/// A push batch whose changes were checked against the schema.
#[derive(Debug, Clone)]
pub struct CheckedBatch {
    pub site: SiteId,
    /// The token's user (`None` when the server runs without tokens).
    pub user: Option<String>,
    pub last_seq: u64,
    /// See [`rowsync_proto::PushRequest::batch`].
    pub batch: Option<u64>,
    /// See [`rowsync_proto::PushRequest::known`].
    pub known: Option<Vec<u64>>,
    pub changes: Vec<CheckedChange>,
    /// The server's clock when the batch arrived (direct writes drained
    /// with it are versioned by it).
    pub now_ms: u64,
}

/// The operations every server database supports.
pub trait Store: Send + Sync + 'static {
    /// Creates the bookkeeping tables when missing, and nothing else:
    /// enough to manage tokens before any schema is installed.
    fn prepare(&self) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Creates the bookkeeping and the schema's tables when missing, and
    /// returns the schema the database serves: `schema` when given (it must
    /// match one installed earlier), otherwise the one installed earlier.
    fn install(&self, schema: Option<&Schema>) -> impl Future<Output = Result<Schema, StoreError>> + Send;

    /// Applies one push batch in one transaction, skipping changes at or below
    /// the site's high-water mark and recording the new mark in the same
    /// transaction; refuses the batch ([`StoreError::SiteReused`]) when it
    /// comes from another copy of the replica than the one that last pushed.
    fn push(&self, schema: &Schema, batch: &CheckedBatch) -> impl Future<Output = Result<Pushed, StoreError>> + Send;

    /// The row states changed after `cursor`, oldest first, at most `limit`
    /// rows and, beyond the first, `max_bytes` bytes of states (see
    /// [`page_extent`]), within [`PULL_SPAN`] positions. With `site`, states
    /// that are exactly what that site pushed are left out (it has them
    /// already) and do not count toward `limit`; the cursor still moves past
    /// them. Private rows are left out unless `user` owns them, and the
    /// cursor stops at the last row the page holds, the last position of
    /// the span the caller may see, or the span's end: it tells nothing of
    /// other users' rows. A page can be empty with `more` true.
    fn pull(
        &self,
        cursor: u64,
        limit: u32,
        max_bytes: usize,
        site: Option<&SiteId>,
        user: Option<&str>,
    ) -> impl Future<Output = Result<PullPage, StoreError>> + Send;

    /// What the server keeps of a site, if it has pushed.
    fn site(&self, site: &SiteId) -> impl Future<Output = Result<Option<SiteMark>, StoreError>> + Send;

    /// Stores a new token.
    fn save_token(&self, token: &TokenRecord) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The token with this id, revoked and expired ones included.
    fn find_token(&self, id: &str) -> impl Future<Output = Result<Option<TokenRecord>, StoreError>> + Send;

    /// Every token, oldest first.
    fn list_tokens(&self) -> impl Future<Output = Result<Vec<TokenRecord>, StoreError>> + Send;

    /// Revokes tokens not yet revoked; returns how many.
    fn revoke_tokens(&self, which: Revoke<'_>, now_ms: u64) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// The rows of `table` with no owner recorded, as (key, state): rows
    /// written while the table was shared, before it became private.
    fn unowned_rows(&self, table: &str) -> impl Future<Output = Result<Vec<(String, String)>, StoreError>> + Send;

    /// Records the owners of rows of `table`, given as (key, owner).
    fn set_owners(
        &self,
        table: &str,
        owners: &[(String, String)],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The last position handed out (committed: it is written by the push
    /// that took it, in its transaction).
    fn last_position(&self) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Turns writes made directly in the database since the last drain into
    /// row states with positions (see `store::direct`); returns the last
    /// position handed out when there were any. Stores without capture
    /// have none.
    fn drain_direct(
        &self,
        _schema: &Schema,
        _now_ms: u64,
    ) -> impl Future<Output = Result<Option<u64>, StoreError>> + Send {
        async { Ok(None) }
    }

    /// Tells `commits` of the positions other server processes on the same
    /// database commit, for as long as the server runs. By default one
    /// cheap read of the position counter every [`POLL_EVERY`], only while
    /// pulls wait.
    fn follow_commits(self: Arc<Self>, commits: Arc<Commits>) -> impl Future<Output = ()> + Send
    where
        Self: Sized,
    {
        async move { poll_commits(&*self, &commits, || POLL_EVERY).await }
    }

    /// The version of the schema recorded in the database (0 when none
    /// is): newer than the one a process serves when a process started
    /// since added tables or columns.
    fn schema_version(&self) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Whether the database answers.
    fn ping(&self) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// What the server remembers of the tombstones it collected (see
    /// [`rowsync_core::horizon`]).
    fn horizon(&self) -> impl Future<Output = Result<Horizon, StoreError>> + Send;

    /// Forgets the tombstones whose versions all read before `cutoff` (see
    /// `store::collect`); returns how many rows it forgot.
    fn collect_tombstones(&self, schema: &Schema, cutoff: Hlc) -> impl Future<Output = Result<u64, StoreError>> + Send;
}

#[cfg(test)]
mod tests {
    use super::{page_extent, Span};

    #[test]
    fn pages_are_bounded_by_rows_and_by_bytes_and_a_huge_row_goes_alone() {
        let span = Span { end: 100, last_seen: Some(6), more: false };
        let small: Vec<(i64, i64)> = (1..=6).map(|p| (p, 10)).collect();
        assert_eq!(page_extent(&small, span, 5, 1_000), Some((5, true)), "five rows, one more follows");
        assert_eq!(page_extent(&small[..5], Span { last_seen: Some(5), ..span }, 5, 1_000), Some((5, false)));
        assert_eq!(page_extent(&small, span, 5, 25), Some((2, true)), "two rows fit in 25 bytes");
        let huge = [(7, 5_000_000), (8, 10)];
        assert_eq!(page_extent(&huge, span, 1_000, 4_096), Some((7, true)), "a row over the budget goes alone");
        assert_eq!(page_extent(&[], Span { last_seen: None, ..span }, 1_000, 4_096), None);
    }

    #[test]
    fn a_page_reaches_past_the_rows_it_leaves_out() {
        // Rows 1-3 to send, the caller's own writes up to 90 after them.
        let sent = [(1, 10), (2, 10), (3, 10)];
        let span = Span { end: 100, last_seen: Some(90), more: false };
        assert_eq!(page_extent(&sent, span, 5, 1_000), Some((90, false)));
        assert_eq!(page_extent(&sent, Span { more: true, ..span }, 5, 1_000), Some((90, true)));
        // Nothing but its own writes.
        assert_eq!(page_extent(&[], span, 5, 1_000), Some((90, false)));
        // A page cut short stops at its last row, whatever lies beyond.
        assert_eq!(page_extent(&sent, span, 2, 1_000), Some((2, true)));
        assert_eq!(page_extent(&sent, span, 5, 15), Some((1, true)));
        // Nothing it may see in the span, something past it.
        let beyond = Span { end: 100, last_seen: None, more: true };
        assert_eq!(page_extent(&[], beyond, 5, 1_000), Some((100, true)));
    }
}
