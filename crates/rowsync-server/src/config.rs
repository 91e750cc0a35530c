//! Validated server settings, and [`run`], which serves until told to stop.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum_server::accept::NoDelayAcceptor;
use axum_server::tls_rustls::{RustlsAcceptor, RustlsConfig};
use rowsync_proto::{ColumnType, ConflictStrategy, Hlc, Schema, Value};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::auth::check_user;
use crate::commits::{Commits, POLL_EVERY};
use crate::http::{app, AppState, Auth, Limits, WallClock, DEFAULT_MAX_CLOCK_AHEAD};
use crate::store::{decode_stored, MysqlStore, PoolSettings, PostgresStore, SqliteStore, Store, StoreError};
use crate::tls::Tls;

/// Where the server's source of truth lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DatabaseUrl {
    Sqlite(PathBuf),
    Postgres(String),
    Mysql(String),
}

impl DatabaseUrl {
    /// Accepts `sqlite://PATH` (or a bare path), `postgres://…` (or
    /// `postgresql://…`) and `mysql://…` (or `mariadb://…`).
    pub fn parse(url: &str) -> Result<DatabaseUrl, String> {
        if let Some(path) = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")) {
            if path.is_empty() {
                return Err("sqlite:// needs a file path, as in sqlite://server.db".into());
            }
            return Ok(DatabaseUrl::Sqlite(PathBuf::from(path)));
        }
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return Ok(DatabaseUrl::Postgres(url.to_string()));
        }
        if url.starts_with("mysql://") {
            return Ok(DatabaseUrl::Mysql(url.to_string()));
        }
        if let Some(rest) = url.strip_prefix("mariadb://") {
            return Ok(DatabaseUrl::Mysql(format!("mysql://{rest}")));
        }
        if url.contains("://") {
            return Err(format!("unknown database URL {url:?}: use sqlite://PATH, postgres://… or mysql://…"));
        }
        Ok(DatabaseUrl::Sqlite(PathBuf::from(url)))
    }

    /// The URL as given (passwords included), for connecting.
    pub fn to_url(&self) -> String {
        match self {
            DatabaseUrl::Sqlite(path) => format!("sqlite://{}", path.display()),
            DatabaseUrl::Postgres(url) | DatabaseUrl::Mysql(url) => url.clone(),
        }
    }

    /// The URL without its password, for messages and logs.
    pub fn redacted(&self) -> String {
        match self {
            DatabaseUrl::Sqlite(path) => format!("sqlite://{}", path.display()),
            DatabaseUrl::Postgres(url) | DatabaseUrl::Mysql(url) => redact(url),
        }
    }

    /// The kind of database: `sqlite`, `postgres` or `mysql`.
    pub fn kind(&self) -> &'static str {
        match self {
            DatabaseUrl::Sqlite(_) => "sqlite",
            DatabaseUrl::Postgres(_) => "postgres",
            DatabaseUrl::Mysql(_) => "mysql",
        }
    }

    /// Database `name` on the same server, through the same credentials
    /// and options (`None` for SQLite, which has no server).
    pub fn on_same_server(&self, name: &str) -> Option<DatabaseUrl> {
        let sibling = |url: &str| {
            let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
            let (base, query) = rest.split_once('?').map_or((rest, None), |(base, query)| (base, Some(query)));
            let server = base.split_once('/').map_or(base, |(server, _)| server);
            format!("{scheme}://{server}/{name}{}", query.map(|q| format!("?{q}")).unwrap_or_default())
        };
        match self {
            DatabaseUrl::Sqlite(_) => None,
            DatabaseUrl::Postgres(url) => Some(DatabaseUrl::Postgres(sibling(url))),
            DatabaseUrl::Mysql(url) => Some(DatabaseUrl::Mysql(sibling(url))),
        }
    }
}

fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    match rest.split_once('@') {
        Some((credentials, host)) => {
            let user = credentials.split(':').next().unwrap_or("");
            format!("{scheme}://{user}@{host}")
        }
        None => url.to_string(),
    }
}

#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub database: DatabaseUrl,
    /// The schema from `--schema`; `None` serves the one stored earlier.
    pub schema: Option<Schema>,
    /// Whether requests must show a token (they must, by default).
    pub auth: Auth,
    pub limits: Limits,
    pub pool: PoolSettings,
    /// Fault injection for tests: a sleep inside every push transaction.
    pub push_delay: Option<Duration>,
    /// Conflict strategy per table; tables not named use field-level
    /// last-writer-wins.
    pub conflicts: BTreeMap<String, ConflictStrategy>,
    /// The private tables, each with its owner column.
    pub owners: BTreeMap<String, String>,
    /// How far ahead of the server's clock a version may be (see
    /// [`DEFAULT_MAX_CLOCK_AHEAD`]).
    pub max_clock_ahead: Duration,
    /// The clock versions are checked against (the system's by default).
    pub clock: WallClock,
    /// Serve HTTPS with this certificate; plain HTTP when `None`.
    pub tls: Option<Tls>,
    /// How long deletes are kept after their last write; older ones are
    /// forgotten (see [`rowsync_core::horizon`]). `None` keeps them forever.
    pub tombstone_retention: Option<Duration>,
}

/// How long deletes are kept by default: a replica offline for longer
/// downloads everything again when it comes back.
pub const DEFAULT_TOMBSTONE_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

impl ServerConfig {
    pub fn new(database: DatabaseUrl, schema: Option<Schema>) -> ServerConfig {
        ServerConfig {
            database,
            schema,
            auth: Auth::default(),
            limits: Limits::default(),
            pool: PoolSettings::default(),
            push_delay: None,
            conflicts: BTreeMap::new(),
            owners: BTreeMap::new(),
            max_clock_ahead: DEFAULT_MAX_CLOCK_AHEAD,
            clock: WallClock::default(),
            tls: None,
            tombstone_retention: Some(DEFAULT_TOMBSTONE_RETENTION),
        }
    }
}

/// A server ready to serve: its router, and the commits its long-polling
/// pulls wait on (closed when the server shuts down, so that they answer at
/// once rather than hold the shutdown up).
pub struct App {
    pub router: Router,
    commits: Arc<Commits>,
    tls: Option<Tls>,
}

/// Opens the store, installs the schema, starts following commits, and
/// returns the server ready to serve.
pub async fn build(config: &ServerConfig) -> Result<App, StoreError> {
    match &config.database {
        DatabaseUrl::Sqlite(path) => {
            router_for(SqliteStore::open(path).await?.with_push_delay(config.push_delay), config).await
        }
        DatabaseUrl::Postgres(url) => {
            let store = PostgresStore::connect(url, &config.pool).await?.with_push_delay(config.push_delay);
            router_for(store, config).await
        }
        DatabaseUrl::Mysql(url) => {
            let store = MysqlStore::connect(url, &config.pool).await?.with_push_delay(config.push_delay);
            router_for(store, config).await
        }
    }
}

async fn router_for<S: Store>(store: S, config: &ServerConfig) -> Result<App, StoreError> {
    let mut schema = store.install(config.schema.as_ref()).await?;
    apply_settings(&mut schema, config).map_err(StoreError::Conflict)?;
    claim_unowned_rows(&store, &schema).await?;
    let mut state = AppState::new(store, schema);
    state.max_clock_ahead = config.max_clock_ahead;
    state.clock = config.clock.clone();
    state.auth = config.auth;
    state.limits = config.limits.clone();
    state.commits.committed(state.store.last_position().await?);
    let commits = state.commits.clone();
    tokio::spawn(state.store.clone().follow_commits(commits.clone()));
    tokio::spawn(drain_while_pulls_wait(
        state.store.clone(),
        state.schema.clone(),
        state.clock.clone(),
        commits.clone(),
    ));
    if let Some(retention) = config.tombstone_retention {
        tokio::spawn(collect_tombstones(state.store.clone(), state.schema.clone(), state.clock.clone(), retention));
    }
    Ok(App { router: app(state), commits, tls: config.tls.clone() })
}

/// Forgets the tombstones older than `retention`, once every quarter of it
/// (at most hourly, at least every 100 ms), for as long as the server runs.
async fn collect_tombstones<S: Store>(store: Arc<S>, schema: Arc<Schema>, clock: WallClock, retention: Duration) {
    let every = (retention / 4).clamp(Duration::from_millis(100), Duration::from_secs(3600));
    loop {
        tokio::time::sleep(every).await;
        let cutoff = Hlc::from_millis(clock.now_ms().saturating_sub(retention.as_millis() as u64));
        match store.collect_tombstones(&schema, cutoff).await {
            Ok(0) => {}
            Ok(rows) => tracing::info!(rows, "forgot deletes older than the tombstone retention"),
            Err(error) => tracing::warn!(%error, "collecting tombstones"),
        }
    }
}

/// Writes made directly in the database wake waiting pulls: while any pull
/// waits, they are drained every [`POLL_EVERY`] (one cheap read when there
/// are none).
async fn drain_while_pulls_wait<S: Store>(store: Arc<S>, schema: Arc<Schema>, clock: WallClock, commits: Arc<Commits>) {
    loop {
        commits.someone_waits().await;
        match store.drain_direct(&schema, clock.now_ms()).await {
            Ok(Some(position)) => commits.committed(position),
            Ok(None) => {}
            Err(error) => tracing::debug!(%error, "draining direct writes"),
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// Gives the schema's tables their conflict strategies and owners from the
/// settings, and checks that the settings fit the schema.
fn apply_settings(schema: &mut Schema, config: &ServerConfig) -> Result<(), String> {
    let named = config.conflicts.keys().chain(config.owners.keys());
    if let Some(unknown) = named.into_iter().find(|name| schema.table(name).is_none()) {
        return Err(format!("the settings name table {unknown}, which the schema does not have"));
    }
    if config.auth == Auth::Off {
        if let Some(table) = config.owners.keys().next() {
            return Err(format!(
                "table {table} is private (it has an owner column), and private tables need tokens: \
                 run the server without --insecure-no-auth"
            ));
        }
    }
    for table in &mut schema.tables {
        table.conflict = config.conflicts.get(&table.name).copied().unwrap_or_default();
        table.owner = match config.owners.get(&table.name) {
            None => None,
            Some(column) => {
                let index = table.column_index(column).ok_or_else(|| {
                    format!("the owner column of table {} is {column}, which the table does not have", table.name)
                })?;
                if table.is_key_column(index) || table.columns[index].ty != ColumnType::Text {
                    return Err(format!(
                        "the owner column of table {} must be a TEXT column outside the primary key; {column} is not",
                        table.name
                    ));
                }
                Some(index)
            }
        };
    }
    Ok(())
}

/// Records an owner for the rows of private tables written while they were
/// shared: the user their owner column names, or nobody (the empty name,
/// which no token has) when it names no valid user.
async fn claim_unowned_rows<S: Store>(store: &S, schema: &Schema) -> Result<(), StoreError> {
    for table in &schema.tables {
        let Some(column) = table.owner else { continue };
        let rows = store.unowned_rows(&table.name).await?;
        if rows.is_empty() {
            continue;
        }
        let mut owners = Vec::with_capacity(rows.len());
        for (key, json) in rows {
            let (_, state) = decode_stored(schema, &table.name, &json)?;
            let owner = match &state.cells[column] {
                Some((Value::Text(user), _)) if check_user(user).is_ok() => user.clone(),
                _ => String::new(),
            };
            owners.push((key, owner));
        }
        let nobody = owners.iter().filter(|(_, owner)| owner.is_empty()).count();
        tracing::warn!(
            table = %table.name,
            rows = owners.len(),
            without_valid_owner = nobody,
            "the table became private: its rows now belong to the user their owner column names \
             (rows naming no valid user belong to nobody)"
        );
        store.set_owners(&table.name, &owners).await?;
    }
    Ok(())
}

/// Whether the server may run without tokens on `listen`: only when it
/// listens on a loopback address, which no other machine reaches.
pub fn check_insecure_listen(listen: SocketAddr) -> Result<(), String> {
    if listen.ip().is_loopback() {
        Ok(())
    } else {
        Err(format!(
            "--insecure-no-auth lets anyone read and write everything, so it is refused on {listen}, which other \
             machines can reach; listen on 127.0.0.1 (or ::1), or make tokens with `rowsync token create`"
        ))
    }
}

/// Opens the store, installs the schema, and serves on `listener` until
/// `shutdown` completes.
pub async fn run(
    config: ServerConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StoreError> {
    let app = build(&config).await?;
    serve_router(app, listener, shutdown).await
}

/// Serves `app` on `listener` (HTTPS when it has a certificate) until
/// `shutdown` completes; pulls waiting for a commit then answer at once.
pub async fn serve_router(
    app: App,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StoreError> {
    let App { router, commits, tls } = app;
    let failed = |e: std::io::Error| StoreError::Unavailable(format!("serving HTTP failed: {e}"));
    let Some(tls) = tls else {
        let shutdown = async move {
            shutdown.await;
            commits.close();
        };
        return axum::serve(listener, router).with_graceful_shutdown(shutdown).await.map_err(failed);
    };
    let handle = axum_server::Handle::new();
    let stopper = handle.clone();
    tokio::spawn(async move {
        shutdown.await;
        commits.close();
        stopper.graceful_shutdown(None);
    });
    let acceptor = RustlsAcceptor::new(RustlsConfig::from_config(tls.config)).acceptor(NoDelayAcceptor::new());
    axum_server::from_tcp(listener.into_std().map_err(failed)?)
        .map_err(failed)?
        .acceptor(acceptor)
        .handle(handle)
        .serve(router.into_make_service())
        .await
        .map_err(failed)
}

/// A server running on its own thread and runtime, for callers that are not
/// async themselves (the demo, tests). Dropping it stops the server.
pub struct BackgroundServer {
    pub addr: SocketAddr,
    https: bool,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl BackgroundServer {
    /// Starts a server listening on `listen` (port 0 picks a free port) and
    /// returns once it is ready to answer.
    pub fn start(config: ServerConfig, listen: SocketAddr) -> Result<BackgroundServer, StoreError> {
        let listener = std::net::TcpListener::bind(listen)
            .map_err(|e| StoreError::Unavailable(format!("cannot listen on {listen}: {e}")))?;
        let addr = listener.local_addr().map_err(|e| StoreError::Unavailable(e.to_string()))?;
        listener.set_nonblocking(true).map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let https = config.tls.is_some();
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<(), StoreError>>();
        let thread = std::thread::Builder::new()
            .name(format!("rowsync-server-{}", addr.port()))
            .spawn(move || {
                let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
                    Ok(runtime) => runtime,
                    Err(e) => {
                        let _ = ready_tx.send(Err(StoreError::Unavailable(format!("cannot start a runtime: {e}"))));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let prepared = async {
                        let listener =
                            TcpListener::from_std(listener).map_err(|e| StoreError::Unavailable(e.to_string()))?;
                        Ok::<_, StoreError>((build(&config).await?, listener))
                    }
                    .await;
                    let (app, listener) = match prepared {
                        Ok(ready) => ready,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    let _ = ready_tx.send(Ok(()));
                    let shutdown = async {
                        let _ = stop_rx.await;
                    };
                    if let Err(e) = serve_router(app, listener, shutdown).await {
                        tracing::error!(error = %e, "server stopped");
                    }
                });
            })
            .map_err(|e| StoreError::Unavailable(format!("cannot start the server thread: {e}")))?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(BackgroundServer { addr, https, stop: Some(stop_tx), thread: Some(thread) }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => Err(StoreError::Unavailable("the server thread ended before it was ready".into())),
        }
    }

    /// The base URL clients use.
    pub fn url(&self) -> String {
        format!("{}://{}", if self.https { "https" } else { "http" }, self.addr)
    }

    /// Stops accepting requests and waits for the server to finish.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for BackgroundServer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn another_database_on_the_same_server_keeps_credentials_and_options() {
        let pg = DatabaseUrl::Postgres("postgres://u:p@db:5432/app?sslmode=require".into());
        assert_eq!(
            pg.on_same_server("scratch"),
            Some(DatabaseUrl::Postgres("postgres://u:p@db:5432/scratch?sslmode=require".into()))
        );
        let bare = DatabaseUrl::Mysql("mysql://root@127.0.0.1:3306".into());
        assert_eq!(bare.on_same_server("x"), Some(DatabaseUrl::Mysql("mysql://root@127.0.0.1:3306/x".into())));
        assert_eq!(DatabaseUrl::Sqlite("a.db".into()).on_same_server("x"), None);
        assert_eq!((pg.kind(), bare.kind()), ("postgres", "mysql"));
    }

    fn settings(auth: Auth, owners: &[(&str, &str)]) -> Result<Schema, String> {
        let mut schema = rowsync_core::parse_schema(
            "CREATE TABLE contacts (id TEXT PRIMARY KEY, owner TEXT, age INTEGER); CREATE TABLE tags (id TEXT PRIMARY KEY);",
        )
        .unwrap();
        let mut config = ServerConfig::new(DatabaseUrl::Sqlite("unused.db".into()), None);
        config.auth = auth;
        config.owners = owners.iter().map(|(t, c)| (t.to_string(), c.to_string())).collect();
        apply_settings(&mut schema, &config).map(|()| schema)
    }

    #[test]
    fn an_owner_column_must_be_a_text_column_outside_the_key_of_a_known_table() {
        let schema = settings(Auth::Tokens, &[("contacts", "owner")]).unwrap();
        assert_eq!((schema.tables[0].owner, schema.tables[1].owner), (Some(1), None));
        for (owners, needle) in [
            (&[("contacts", "nobody")][..], "which the table does not have"),
            (&[("contacts", "age")][..], "must be a TEXT column outside the primary key"),
            (&[("contacts", "id")][..], "must be a TEXT column outside the primary key"),
            (&[("nope", "owner")][..], "table nope"),
        ] {
            let error = settings(Auth::Tokens, owners).unwrap_err();
            assert!(error.contains(needle), "{owners:?}: {error}");
        }
        let error = settings(Auth::Off, &[("contacts", "owner")]).unwrap_err();
        assert!(error.contains("private tables need tokens"), "{error}");
    }

    #[test]
    fn no_tokens_only_on_loopback() {
        assert!(check_insecure_listen("127.0.0.1:7878".parse().unwrap()).is_ok());
        assert!(check_insecure_listen("[::1]:7878".parse().unwrap()).is_ok());
        assert!(check_insecure_listen("0.0.0.0:7878".parse().unwrap()).is_err());
    }
}
