//! Test helpers: a real rowsync server on a loopback port over a real store
//! (a SQLite file in a temporary directory, or a fresh database on the
//! throwaway PostgreSQL and MariaDB servers that `scripts/test` starts), and
//! devices (replica files) written to through plain SQLite connections with
//! no rowsync code loaded, the way an application would.

mod app;
mod in_process;
mod proxy;
pub mod seeded;
mod stores;

pub use app::{AppWriter, Written};
pub use in_process::InProcessServer;
pub use proxy::{Fault, FaultyProxy};
pub use seeded::{run_seeded, Regression};
pub use stores::{exec_database, query_database, server_stores, test_stores, Session, TestStore};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use rowsync_client::{sync, ClientError, HttpTransport, Replica, SyncOptions, SyncReport, Transport};
use rowsync_core::parse_schema;
use rowsync_proto::{Schema, Value};
use rowsync_server::tokens::{manage_tokens, TokenAnswer, TokenCommand};
use rowsync_server::{Auth, BackgroundServer, DatabaseUrl, ServerConfig};
use rusqlite::Connection;

/// The contacts table of the mission, with text keys.
pub const CONTACTS_SCHEMA: &str = "CREATE TABLE contacts (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    email TEXT,
    phone TEXT
);";

/// A server on a loopback port, which can be stopped and started again on
/// the same port and database (to play "the server is down").
pub struct TestServer {
    pub database: DatabaseUrl,
    pub schema: Schema,
    pub store: TestStore,
    config: ServerConfig,
    addr: SocketAddr,
    running: Option<BackgroundServer>,
}

impl TestServer {
    /// Starts a server on a free port over a fresh SQLite store in `dir`.
    pub fn start(dir: &Path, schema_sql: &str) -> TestServer {
        TestServer::start_on(&TestStore::Sqlite, dir, schema_sql)
    }

    /// Starts a server on a free port over a fresh database of `store`.
    pub fn start_on(store: &TestStore, dir: &Path, schema_sql: &str) -> TestServer {
        TestServer::start_with_delay(store, dir, schema_sql, None)
    }

    /// Like [`TestServer::start_on`], with a sleep injected inside every push
    /// transaction (after its writes, before its commit).
    pub fn start_with_delay(
        store: &TestStore,
        dir: &Path,
        schema_sql: &str,
        push_delay: Option<std::time::Duration>,
    ) -> TestServer {
        TestServer::start_configured(store, dir, schema_sql, |config| config.push_delay = push_delay)
    }

    /// Starts a server whose settings `configure` adjusts (conflict
    /// strategies, clock bound, fault injection); restarts and other
    /// instances keep them.
    pub fn start_configured(
        store: &TestStore,
        dir: &Path,
        schema_sql: &str,
        configure: impl FnOnce(&mut ServerConfig),
    ) -> TestServer {
        let schema = parse_schema(schema_sql).expect("test schema parses");
        let database = store.fresh_database(dir);
        let mut config = ServerConfig::new(database.clone(), Some(schema.clone()));
        config.pool.acquire_timeout = std::time::Duration::from_secs(2);
        // Tokens are tested where they are the subject (`configure` turns
        // them on); elsewhere the loopback server asks for none.
        config.auth = Auth::Off;
        configure(&mut config);
        let mut server = TestServer {
            database,
            schema,
            store: store.clone(),
            config,
            addr: ([127, 0, 0, 1], 0).into(),
            running: None,
        };
        let running = server.instance(([127, 0, 0, 1], 0).into());
        server.addr = running.addr;
        server.running = Some(running);
        server
    }

    fn instance(&self, addr: SocketAddr) -> BackgroundServer {
        BackgroundServer::start(self.config.clone(), addr)
            .unwrap_or_else(|e| panic!("server on {} starts: {e}", self.store.name()))
    }

    /// Another server process on the same database (a second instance).
    pub fn another_instance(&self) -> BackgroundServer {
        self.instance(([127, 0, 0, 1], 0).into())
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops the server; clients now find nobody listening.
    pub fn stop(&mut self) {
        if let Some(server) = self.running.take() {
            server.stop();
        }
    }

    /// Starts the server again on the same port and database.
    pub fn restart(&mut self) {
        self.stop();
        self.running = Some(self.instance(self.addr));
    }

    /// Restarts the server on the same port and database with its settings
    /// adjusted by `configure` (a strategy changed between starts).
    pub fn reconfigure(&mut self, configure: impl FnOnce(&mut ServerConfig)) {
        self.stop();
        configure(&mut self.config);
        self.running = Some(self.instance(self.addr));
    }

    /// A new token for `user` (lifetime: for ever without one), made on the
    /// server's database as `rowsync token create` makes it.
    pub fn token(&self, user: &str, lifetime: Option<std::time::Duration>) -> String {
        let command = TokenCommand::Create { user, lifetime };
        match block_on(manage_tokens(&self.database, command, now_ms())) {
            Ok(TokenAnswer::Created(new)) => new.token,
            other => panic!("a token for {user}: {other:?}"),
        }
    }

    /// Revokes every token of `user`.
    pub fn revoke(&self, user: &str) {
        let command = TokenCommand::Revoke(rowsync_server::store::Revoke::User(user));
        block_on(manage_tokens(&self.database, command, now_ms())).expect("revoked");
    }

    /// Rows of the server's database, read directly (not through rowsync).
    pub fn rows(&self, sql: &str) -> Vec<Vec<Value>> {
        stores::query_database(&self.database, sql)
    }

    /// Runs `sql` (one or more statements) on the server's database
    /// directly, as another program would.
    pub fn exec(&self, sql: &str) {
        stores::exec_database(&self.database, sql)
    }

    /// A connection of its own to the server's database, kept open (see
    /// [`Session`]).
    pub fn session(&self) -> Session {
        Session::open(&self.database)
    }
}

/// One device: a replica file, written to like an application would.
pub struct Device {
    pub name: String,
    pub path: PathBuf,
}

impl Device {
    /// `rowsync init` of a new file in `dir` against `server_url`.
    pub fn init(dir: &Path, name: &str, server_url: &str) -> Device {
        Device::init_with_token(dir, name, server_url, None)
    }

    /// `rowsync init --token` of a new file in `dir` against `server_url`.
    pub fn init_with_token(dir: &Path, name: &str, server_url: &str, token: Option<&str>) -> Device {
        let path = dir.join(format!("{name}.db"));
        let transport = HttpTransport::new(server_url, token.map(str::to_string));
        let schema = transport.schema().expect("schema from server");
        Replica::init(&path, server_url, &schema, token).expect("init replica");
        Device { name: name.into(), path }
    }

    /// A plain SQLite connection: no rowsync functions, as any app has.
    pub fn plain(&self) -> Connection {
        let conn = Connection::open(&self.path).expect("open device");
        conn.busy_timeout(std::time::Duration::from_secs(10)).expect("busy timeout");
        conn
    }

    /// Runs SQL through a plain connection.
    pub fn exec(&self, sql: &str) {
        self.plain().execute_batch(sql).unwrap_or_else(|e| panic!("{}: {sql}: {e}", self.name));
    }

    pub fn replica(&self) -> Replica {
        Replica::open(&self.path).expect("open replica")
    }

    /// A full sync round against the server URL recorded at init.
    pub fn sync(&self) -> Result<SyncReport, ClientError> {
        self.sync_with(SyncOptions::default())
    }

    pub fn sync_with(&self, options: SyncOptions) -> Result<SyncReport, ClientError> {
        let mut replica = self.replica();
        let transport = HttpTransport::connect(&replica.server_access()?)?;
        sync(&mut replica, &transport, options)
    }

    pub fn rows(&self, sql: &str) -> Vec<Vec<Value>> {
        query_rows(&self.plain(), sql)
    }

    /// Local writes not yet acknowledged by the server.
    pub fn pending(&self) -> u64 {
        self.replica().status().expect("status").pending_changes
    }
}

/// What `PRAGMA integrity_check` says of the SQLite file at `path` ("ok"
/// when it is whole).
pub fn integrity_check(path: &Path) -> String {
    let conn = Connection::open(path).expect("open for integrity_check");
    conn.query_row("PRAGMA integrity_check", [], |row| row.get(0)).expect("integrity_check")
}

/// Runs `test` once per store of [`test_stores`], naming the store when it fails.
pub fn on_every_store(test: impl Fn(&TestStore)) {
    for store in test_stores() {
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| test(&store)));
        if let Err(panic) = outcome {
            eprintln!("failed on the {} store", store.name());
            std::panic::resume_unwind(panic);
        }
    }
}

/// Every row of a query, as wire values.
pub fn query_rows(conn: &Connection, sql: &str) -> Vec<Vec<Value>> {
    let mut statement = conn.prepare(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    let width = statement.column_count();
    let rows = statement
        .query_map([], |row| (0..width).map(|i| row.get_ref(i).map(rowsync_client::from_sql)).collect())
        .expect("query");
    rows.collect::<Result<_, _>>().expect("rows")
}

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime").block_on(future)
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Waits up to `limit` for `done`, polling; fails the test naming `what`.
pub fn eventually(limit: std::time::Duration, what: &str, mut done: impl FnMut() -> bool) {
    let started = std::time::Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "not within {limit:?}: {what}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Shorthand for a text value.
pub fn text(s: &str) -> Value {
    Value::Text(s.into())
}

/// A fresh random text key, as apps should use for synced rows.
pub fn new_key() -> String {
    rowsync_client::new_key()
}
