//! `rowsync bench`: the performance figures, each measured side by side
//! with its reference in one run (absolute times on a shared machine are
//! noise; ratios are not), gathered in one [`Report`].
//!
//! - `capture`: the same writes through Python's sqlite3 module (how an app
//!   sees it) against a plain table and a captured one, and, without
//!   targets, against triggers that do nothing and triggers logging one
//!   rowid per write; see bench/capture.py.
//! - `sync`: a backlog pushed by one replica and pulled by a new one through
//!   a real server on a loopback port, beside the database's own fastest
//!   way in for the same rows (PostgreSQL's COPY; elsewhere a plain batched
//!   insert), the naive way to sync them (one `POST /sync` request per
//!   change, each answer awaited), and plain bulk inserts into a local
//!   SQLite file (Python's sqlite3, as an app writes, and Rust's); then
//!   every row updated on the first replica and pulled by the second, which
//!   holds them all (an incremental pull); an app
//!   keeps committing to each replica file while it pushes or pulls, and the
//!   longest of its commits is the figure for how long sync keeps an app
//!   waiting. See bench/plain_insert.py.
//! - `latency`: two devices under their background agents on one server;
//!   from a commit on one until the row is readable on the other, and the
//!   CPU the idle agents use.
//! - `direct`: writes made directly in the server's database, on a plain
//!   table and on a synced (captured) one, side by side; then a new replica
//!   syncing what they wrote.
//!
//! Every run gets a server database of its own: a new SQLite file, or a new
//! database made on the server a `--database` URL names and dropped after
//! the run, so that runs of several sizes never see each other's rows and
//! the named database itself is never written.

mod report;

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rowsync_client::{sync, Agent, AgentOptions, HttpTransport, Replica, State, SyncOptions};
use rowsync_core::ddl::{create_table, Dialect};
use rowsync_core::parse_schema;
use rowsync_proto::Schema;
use rowsync_server::{BackgroundServer, DatabaseUrl, ServerConfig};
use rusqlite::Connection;

pub use report::{Figure, Machine, Report, Target};

const SCHEMA: &str = "CREATE TABLE items (id TEXT PRIMARY KEY, name TEXT, qty INTEGER, price REAL);";
const CAPTURE_SCRIPT: &str = include_str!("../../../../bench/capture.py");
const PLAIN_INSERT_SCRIPT: &str = include_str!("../../../../bench/plain_insert.py");

/// Which measurements a run makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Which {
    All,
    Capture { rounds: usize },
    Sync,
    Latency { writes: usize },
    Direct,
}

/// What `rowsync bench` was asked for.
pub struct Options {
    pub which: Which,
    /// Rows per scenario; each size is a run of its own.
    pub rows: Vec<usize>,
    /// Server databases to measure on (none: the embedded SQLite store).
    pub databases: Vec<String>,
    pub json: bool,
    /// The command line, for the report.
    pub command: String,
}

/// Runs the measurements and prints the report; fails when a measurement
/// cannot be made (a missed target is a figure, not a failure).
pub fn run(options: Options) -> anyhow::Result<()> {
    if options.rows.contains(&0) {
        bail!("--rows must be at least 1");
    }
    let stores = options
        .databases
        .iter()
        .map(|url| DatabaseUrl::parse(url).map_err(|e| anyhow::anyhow!("--database: {e}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let stores = if stores.is_empty() { vec![None] } else { stores.into_iter().map(Some).collect() };
    let dir = tempfile::tempdir()?;
    let mut figures = Vec::new();
    let capture = match options.which {
        Which::All => Some(3),
        Which::Capture { rounds } => Some(rounds),
        _ => None,
    };
    if let Some(rounds) = capture {
        for &rows in &options.rows {
            eprintln!("capture: {rows} rows, {rounds} rounds");
            figures.extend(self::capture(dir.path(), rows, rounds)?);
        }
    }
    // Each part against each store and size, each run on a database of its own.
    type Part = fn(&std::path::Path, &DatabaseUrl, usize) -> anyhow::Result<Vec<Figure>>;
    let sync: (&str, Part, Vec<usize>) = ("sync, rows:", sync_backlog, options.rows.clone());
    let latency = |writes| ("latency, writes:", self::latency as Part, vec![writes]);
    let direct: (&str, Part, Vec<usize>) = ("direct, rows:", direct, options.rows.clone());
    let parts = match options.which {
        Which::All => vec![sync, latency(200), direct],
        Which::Capture { .. } => vec![],
        Which::Sync => vec![sync],
        Which::Latency { writes } => vec![latency(writes)],
        Which::Direct => vec![direct],
    };
    let mut runs = 0;
    for store in &stores {
        for (name, part, sizes) in &parts {
            for &size in sizes {
                runs += 1;
                let database = Scratch::make(store.as_ref(), dir.path(), runs)?;
                let url = database.url();
                eprintln!("{name} {size} on {}", url.kind());
                let measured = part(dir.path(), &url, size);
                // Dropped even when the run failed.
                database.drop_it()?;
                figures.extend(measured?);
            }
        }
    }
    let report =
        Report { rowsync: env!("CARGO_PKG_VERSION"), command: options.command, machine: Machine::this_one(), figures };
    if options.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.table());
    }
    Ok(())
}

/// A server database for one run, made for it and dropped after it.
enum Scratch {
    File(std::path::PathBuf),
    /// A database `url` made through the server URL `on`.
    Made {
        on: DatabaseUrl,
        name: String,
        url: DatabaseUrl,
    },
}

impl Scratch {
    fn make(named: Option<&DatabaseUrl>, dir: &std::path::Path, run: usize) -> anyhow::Result<Scratch> {
        let name = format!("rowsync_bench_{}_{run}", std::process::id());
        let on = match named {
            None => return Ok(Scratch::File(dir.join(format!("{name}.db")))),
            // Beside the file named, so that it is measured on that disk.
            Some(DatabaseUrl::Sqlite(path)) => {
                let beside = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new("."));
                return Ok(Scratch::File(beside.join(format!("{name}.db"))));
            }
            Some(server) => server.clone(),
        };
        let url = on.on_same_server(&name).context("a database server URL")?;
        tokio::runtime::Runtime::new()?.block_on(async {
            let (pool, _) = other_program(&on).await?;
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&pool)
                .await
                .with_context(|| format!("make the scratch database {name} on {}", on.redacted()))?;
            anyhow::Ok(())
        })?;
        Ok(Scratch::Made { on, name, url })
    }

    fn url(&self) -> DatabaseUrl {
        match self {
            Scratch::File(path) => DatabaseUrl::Sqlite(path.clone()),
            Scratch::Made { url, .. } => url.clone(),
        }
    }

    fn drop_it(self) -> anyhow::Result<()> {
        match self {
            Scratch::File(path) => {
                for suffix in ["", "-wal", "-shm"] {
                    let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
                }
            }
            Scratch::Made { on, name, .. } => {
                let force = if matches!(on, DatabaseUrl::Postgres(_)) { " WITH (FORCE)" } else { "" };
                tokio::runtime::Runtime::new()?.block_on(async {
                    let (pool, _) = other_program(&on).await?;
                    sqlx::query(&format!("DROP DATABASE {name}{force}")).execute(&pool).await?;
                    anyhow::Ok(())
                })?;
            }
        }
        Ok(())
    }
}

/// Seconds Python's sqlite3 takes to bulk insert the bench's `rows` into a
/// new local file (WAL, synchronous=NORMAL): how an app writes, and the
/// reference of the pull target.
fn python_insert_secs(dir: &std::path::Path, rows: usize) -> anyhow::Result<f64> {
    let script = dir.join("plain_insert.py");
    std::fs::write(&script, PLAIN_INSERT_SCRIPT)?;
    let file = dir.join("python-plain.db");
    let _ = std::fs::remove_file(&file);
    let output = Command::new("python3")
        .arg(&script)
        .arg(&file)
        .arg(rows.to_string())
        .output()
        .context("cannot run python3 (apt-get install python3)")?;
    if !output.status.success() {
        bail!("bench/plain_insert.py failed: {}", String::from_utf8_lossy(&output.stderr).trim());
    }
    String::from_utf8_lossy(&output.stdout).trim().parse().context("bench/plain_insert.py output")
}

/// The capture scenarios, and the target of each (by the label
/// bench/capture.py gives it).
const CAPTURE_TARGETS: [(&str, f64); 4] = [
    ("bulk insert (one transaction)", 0.7),
    ("single-row commits", 0.8),
    ("per-row updates (one transaction)", 0.6),
    ("one INSERT...SELECT", 0.5),
];

const CAPTURED: &str = "captured_rows_per_s";

/// The tables bench/capture.py writes to besides the plain one, by its
/// field: the captured table, and two floors for any capture by triggers
/// (triggers that do nothing; triggers that log about the least a change
/// log can, one rowid per write), shown without targets.
const CAPTURE_KINDS: [(&str, &str); 3] = [
    (CAPTURED, "captured"),
    ("empty_trigger_rows_per_s", "a trigger that does nothing"),
    ("rowid_log_rows_per_s", "a trigger logging one rowid per write"),
];

fn capture(dir: &std::path::Path, rows: usize, rounds: usize) -> anyhow::Result<Vec<Figure>> {
    let dir = tempfile::tempdir_in(dir)?;
    let schema = parse_schema(SCHEMA)?;
    let plain = dir.path().join("plain-template.db");
    Connection::open(&plain)?.execute_batch(&create_table(&schema.tables[0], Dialect::Sqlite))?;
    let captured = dir.path().join("captured-template.db");
    Replica::init(&captured, "http://127.0.0.1:9", &schema, None)?;
    let script = dir.path().join("capture.py");
    std::fs::write(&script, CAPTURE_SCRIPT)?;
    let output = Command::new("python3")
        .arg(&script)
        .args([&plain, &captured, &dir.path().to_path_buf()])
        .args([rows.to_string(), rounds.to_string()])
        .output()
        .context("cannot run python3 (apt-get install python3)")?;
    if !output.status.success() {
        bail!("bench/capture.py failed: {}", String::from_utf8_lossy(&output.stderr).trim());
    }
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).context("bench/capture.py output")?;
    let mut figures = Vec::new();
    for result in report["results"].as_array().into_iter().flatten() {
        let scenario = result["scenario"].as_str().unwrap_or("?");
        let number = |field: &str| result[field].as_f64().context("bench/capture.py output lacks a figure");
        let rows = result["rows"].as_u64().unwrap_or(0) as usize;
        let plain = number("plain_rows_per_s")?;
        for (kind, what) in CAPTURE_KINDS {
            let mut figure =
                Figure::new("capture", "local", rows, &format!("{scenario}, {what}"), number(kind)?, "rows/s").against(
                    "the same, plain",
                    plain,
                    "rows/s",
                );
            if kind == CAPTURED {
                if let Some((_, bound)) = CAPTURE_TARGETS.iter().find(|(label, _)| *label == scenario) {
                    figure = figure.target(Target::RatioAtLeast(*bound));
                }
            }
            figures.push(figure);
        }
    }
    Ok(figures)
}
fn insert_rows(conn: &Connection, rows: usize) -> anyhow::Result<()> {
    conn.execute_batch("BEGIN")?;
    {
        let mut insert = conn.prepare("INSERT INTO items (id, name, qty, price) VALUES (?, ?, ?, ?)")?;
        for i in 0..rows {
            insert.execute(rusqlite::params![format!("k{i:07}"), format!("item {i}"), i as i64, i as f64 * 0.5])?;
        }
    }
    conn.execute_batch("COMMIT")?;
    Ok(())
}

fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).map(str::to_owned))
        .and_then(|l| l.split_whitespace().nth(1).and_then(|kb| kb.parse::<f64>().ok()))
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

/// A connection pool on the bench database, as another program would
/// open it, and its dialect.
async fn other_program(database: &DatabaseUrl) -> anyhow::Result<(sqlx::AnyPool, Dialect)> {
    sqlx::any::install_default_drivers();
    let (url, dialect) = match database {
        DatabaseUrl::Sqlite(path) => (format!("sqlite://{}?mode=rwc", path.display()), Dialect::Sqlite),
        DatabaseUrl::Postgres(url) => (url.clone(), Dialect::Postgres),
        DatabaseUrl::Mysql(url) => (url.clone(), Dialect::Mysql),
    };
    let pool = sqlx::AnyPool::connect(&url).await.context("connect to the bench database")?;
    Ok((pool, dialect))
}

/// Inserts rows `k0000000`… into `table` in one transaction, 500 rows per
/// INSERT statement; returns the seconds it took.
async fn batched_insert(pool: &sqlx::AnyPool, dialect: Dialect, table: &str, rows: usize) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut tx = pool.begin().await?;
    let chunk = 500;
    for first in (0..rows).step_by(chunk) {
        let count = chunk.min(rows - first);
        let tuples: Vec<String> = (0..count)
            .map(|r| {
                let p: Vec<String> = (1..=4).map(|n| rowsync_core::ddl::placeholder(dialect, r * 4 + n)).collect();
                format!("({})", p.join(", "))
            })
            .collect();
        let sql = format!("INSERT INTO {table} (id, name, qty, price) VALUES {}", tuples.join(", "));
        let mut query = sqlx::query(&sql);
        for i in first..first + count {
            query = query.bind(format!("k{i:07}")).bind(format!("item {i}")).bind(i as i64).bind(i as f64 * 0.5);
        }
        query.execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(started.elapsed().as_secs_f64())
}

/// A scratch copy of the bench table (not synced) in the server's database.
async fn plain_table(pool: &sqlx::AnyPool, dialect: Dialect) -> anyhow::Result<String> {
    let mut table = parse_schema(SCHEMA)?.tables.remove(0);
    table.name = "bench_plain_items".into();
    sqlx::query(&format!("DROP TABLE IF EXISTS {}", table.name)).execute(pool).await?;
    sqlx::query(&create_table(&table, dialect)).execute(pool).await?;
    Ok(table.name)
}

/// The database's own fastest way in for the same rows, into a scratch
/// table of the server's database: PostgreSQL's COPY, and elsewhere 500-row
/// INSERT statements in one transaction. Its name and the seconds it took.
async fn plain_server_insert(database: &DatabaseUrl, rows: usize) -> anyhow::Result<(&'static str, f64)> {
    let (pool, dialect) = other_program(database).await?;
    let table = plain_table(&pool, dialect).await?;
    let done = match database {
        DatabaseUrl::Postgres(url) => ("COPY into the server database", copy_rows(url, &table, rows).await?),
        _ => ("plain batched insert, server", batched_insert(&pool, dialect, &table, rows).await?),
    };
    sqlx::query(&format!("DROP TABLE {table}")).execute(&pool).await?;
    Ok(done)
}

/// Loads rows `k0000000`… into `table` with PostgreSQL's COPY (text
/// format, one stream); returns the seconds it took.
async fn copy_rows(url: &str, table: &str, rows: usize) -> anyhow::Result<f64> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url).await.context("connect to the bench database")?;
    let started = Instant::now();
    let mut copy = conn.copy_in_raw(&format!("COPY {table} (id, name, qty, price) FROM STDIN")).await?;
    let mut chunk = String::new();
    for i in 0..rows {
        chunk.push_str(&format!("k{i:07}\titem {i}\t{i}\t{}\n", i as f64 * 0.5));
        if chunk.len() > 1 << 20 || i + 1 == rows {
            copy.send(std::mem::take(&mut chunk).into_bytes()).await?;
        }
    }
    copy.finish().await?;
    Ok(started.elapsed().as_secs_f64())
}

/// How many changes the naive way sends: enough for a steady rate, few
/// enough not to dominate the run.
const NAIVE_CHANGES: usize = 2_000;

/// The naive way to sync: one change per HTTP request, each answer awaited
/// before the next is sent (the tutorial protocol's `POST /sync`), for
/// `count` new rows; changes per second.
fn one_request_per_change(url: &str, token: &str, count: usize) -> anyhow::Result<f64> {
    let agent = ureq::AgentBuilder::new().build();
    let started = Instant::now();
    for i in 0..count {
        let change = serde_json::json!({
            "table": "items",
            "record_id": format!("naive{i:07}"),
            "operation": "INSERT",
            "timestamp": humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string(),
            "data": {"id": format!("naive{i:07}"), "name": format!("item {i}"), "qty": i, "price": i as f64 * 0.5},
        });
        agent
            .post(&format!("{url}/sync"))
            .set("Authorization", &format!("Bearer {token}"))
            .send_json(change)
            .with_context(|| format!("change {i} of the naive sync"))?;
    }
    Ok(count as f64 / started.elapsed().as_secs_f64())
}

/// Writes made directly in the server's database: the same statements on
/// a plain table and on the synced (captured) one, each scenario side by
/// side; then a new replica syncing what they left.
fn direct(dir: &std::path::Path, database: &DatabaseUrl, rows: usize) -> anyhow::Result<Vec<Figure>> {
    let dir = tempfile::tempdir_in(dir)?;
    let schema = parse_schema(SCHEMA)?;
    let (server, token) = bench_server(database, &schema)?;
    let store = database.kind();
    let runtime = tokio::runtime::Runtime::new()?;
    let singles = rows.min(1_000);
    let figure = |what: &str, count: usize, plain: f64, captured: f64| {
        Figure::new("direct", store, count, &format!("{what}, synced table"), count as f64 / captured, "rows/s")
            .against("the same, plain table", count as f64 / plain, "rows/s")
    };
    let mut figures = Vec::new();
    runtime.block_on(async {
        let (pool, dialect) = other_program(database).await?;
        let plain = plain_table(&pool, dialect).await?;
        let bulk =
            (batched_insert(&pool, dialect, &plain, rows).await?, batched_insert(&pool, dialect, "items", rows).await?);
        figures.push(figure("bulk insert, one transaction", rows, bulk.0, bulk.1));
        let mut single = [0.0; 2];
        for (n, table) in [&plain, "items"].into_iter().enumerate() {
            let started = Instant::now();
            for i in 0..singles {
                let sql = format!(
                    "UPDATE {table} SET qty = qty + 1 WHERE id = {}",
                    rowsync_core::ddl::placeholder(dialect, 1)
                );
                sqlx::query(&sql).bind(format!("k{i:07}")).execute(&pool).await?;
            }
            single[n] = started.elapsed().as_secs_f64();
        }
        figures.push(figure("single-row updates, each committed", singles, single[0], single[1]));
        let mut whole = [0.0; 2];
        for (n, table) in [&plain, "items"].into_iter().enumerate() {
            let started = Instant::now();
            sqlx::query(&format!("UPDATE {table} SET price = price * 2")).execute(&pool).await?;
            whole[n] = started.elapsed().as_secs_f64();
        }
        figures.push(figure("one UPDATE of every row", rows, whole[0], whole[1]));
        sqlx::query(&format!("DROP TABLE {plain}")).execute(&pool).await?;
        pool.close().await;
        anyhow::Ok(())
    })?;
    let mut replica = Replica::init(&dir.path().join("replica.db"), &server.url(), &schema, Some(&token))?;
    let started = Instant::now();
    let pulled = sync(&mut replica, &HttpTransport::new(&server.url(), Some(token)), SyncOptions::default())?;
    let secs = started.elapsed().as_secs_f64();
    if pulled.pulled != rows as u64 {
        bail!("expected the {rows} rows written directly on a new replica, it pulled {}", pulled.pulled);
    }
    figures.push(Figure::new(
        "direct",
        store,
        rows,
        "a new replica syncing them (published, then served)",
        rows as f64 / secs,
        "rows/s",
    ));
    server.stop();
    Ok(figures)
}

/// How long an app writing to a replica file waited, at most, while sync
/// ran: for a whole commit, and for the write lock alone (what sync's own
/// write transactions make it wait; the rest is the app's write and the
/// disk under it).
struct AppWaits {
    commit: Duration,
    lock: Duration,
}

/// The longest an app waited for one of its commits to the replica file
/// while `work` ran: it commits a row to a table of its own every few
/// milliseconds, as an app writing during sync would, taking the write
/// lock first (`BEGIN IMMEDIATE`) so that the wait for it is timed apart.
/// It writes as the capture figures' app does (WAL, `synchronous=NORMAL`):
/// with SQLite's default (`FULL`), each commit also waits for an fsync of
/// the WAL, which with the server's database writing on the same disk took
/// up to 89 ms at 1,000,000 rows, however short sync's transactions were.
fn longest_app_commit<T>(file: &std::path::Path, work: impl FnOnce() -> T) -> anyhow::Result<(T, AppWaits)> {
    let app = Connection::open(file)?;
    app.busy_timeout(Duration::from_secs(30))?;
    app.pragma_update(None, "synchronous", "NORMAL")?;
    app.execute_batch("CREATE TABLE IF NOT EXISTS bench_app_notes (n INTEGER)")?;
    let done = &AtomicBool::new(false);
    std::thread::scope(|scope| {
        let writer = scope.spawn(move || {
            let mut longest = AppWaits { commit: Duration::ZERO, lock: Duration::ZERO };
            let mut n = 0i64;
            while !done.load(Ordering::Relaxed) {
                let started = Instant::now();
                app.execute_batch("BEGIN IMMEDIATE")?;
                longest.lock = longest.lock.max(started.elapsed());
                app.execute("INSERT INTO bench_app_notes (n) VALUES (?)", [n])?;
                app.execute_batch("COMMIT")?;
                longest.commit = longest.commit.max(started.elapsed());
                n += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
            anyhow::Ok(longest)
        });
        let result = work();
        done.store(true, Ordering::Relaxed);
        let longest = writer.join().map_err(|_| anyhow::anyhow!("the app's writer panicked"))??;
        Ok((result, longest))
    })
}

fn sync_backlog(dir: &std::path::Path, database: &DatabaseUrl, rows: usize) -> anyhow::Result<Vec<Figure>> {
    let dir = tempfile::tempdir_in(dir)?;
    let schema = parse_schema(SCHEMA)?;
    let store = database.kind();

    let plain = Connection::open(dir.path().join("plain.db"))?;
    plain.pragma_update(None, "journal_mode", "WAL")?;
    plain.pragma_update(None, "synchronous", "NORMAL")?;
    plain.execute_batch(&create_table(&schema.tables[0], Dialect::Sqlite))?;
    let started = Instant::now();
    insert_rows(&plain, rows)?;
    let rust_local = rows as f64 / started.elapsed().as_secs_f64();
    let python_local = rows as f64 / python_insert_secs(dir.path(), rows)?;
    let runtime = tokio::runtime::Runtime::new()?;
    let (plain_server_name, plain_server_secs) = runtime.block_on(plain_server_insert(database, rows))?;
    let plain_server = rows as f64 / plain_server_secs;

    let (server, token) = bench_server(database, &schema)?;
    let url = server.url();
    let sender_file = dir.path().join("sender.db");
    let mut sender = Replica::init(&sender_file, &url, &schema, Some(&token))?;
    let receiver_file = dir.path().join("receiver.db");
    let mut receiver = Replica::init(&receiver_file, &url, &schema, Some(&token))?;
    insert_rows(sender.connection(), rows)?;
    let transport = HttpTransport::new(&url, Some(token.clone()));
    let options = SyncOptions::default();

    // A sync with the app committing to the replica's file meanwhile: what
    // it did, how long the app waited, and its changes per second.
    let timed_sync = |replica: &mut Replica, file: &std::path::Path| -> anyhow::Result<_> {
        let started = Instant::now();
        let (report, waits) = longest_app_commit(file, || sync(replica, &transport, options))?;
        Ok((report?, waits, rows as f64 / started.elapsed().as_secs_f64()))
    };
    let (pushed, push_waits, push) = timed_sync(&mut sender, &sender_file)?;
    let (pulled, pull_waits, pull) = timed_sync(&mut receiver, &receiver_file)?;
    if pushed.acknowledged != rows as u64 || pulled.pulled != rows as u64 {
        bail!("expected {rows} changes each way, pushed {} and pulled {}", pushed.acknowledged, pulled.pulled);
    }
    // Then every row changes on the sending device, and the receiving one,
    // which holds them all, pulls the changes.
    sender.connection().execute("UPDATE items SET qty = qty + 1, name = name || ' again'", [])?;
    let pushed = sync(&mut sender, &transport, options)?;
    let (pulled, incremental_waits, incremental) = timed_sync(&mut receiver, &receiver_file)?;
    if pushed.acknowledged != rows as u64 || pulled.pulled != rows as u64 {
        bail!("expected {rows} updates each way, pushed {} and pulled {}", pushed.acknowledged, pulled.pulled);
    }
    let naive = one_request_per_change(&url, &token, rows.min(NAIVE_CHANGES))?;
    server.stop();
    let figure = |name: &str, value: f64, unit: &'static str| Figure::new("sync", store, rows, name, value, unit);
    Ok(vec![
        figure("push (sync on the writing device)", push, "changes/s")
            .against(plain_server_name, plain_server, "rows/s")
            .target(Target::RatioAtLeast(0.3)),
        figure("push (sync on the writing device)", push, "changes/s")
            .against("one request per change, each awaited", naive, "changes/s")
            .target(Target::RatioAtLeast(50.0)),
        figure("longest app commit during that push", ms(push_waits.commit), "ms").target(Target::AtMost(50.0)),
        figure("longest app wait for the write lock during that push", ms(push_waits.lock), "ms")
            .target(Target::AtMost(50.0)),
        figure("pull (sync on a new device)", pull, "changes/s")
            .against("plain insert, Python sqlite3", python_local, "rows/s")
            .target(Target::RatioAtLeast(0.5)),
        figure("pull (sync on a new device)", pull, "changes/s").against(
            "plain insert, Rust rusqlite",
            rust_local,
            "rows/s",
        ),
        figure("longest app commit during that pull", ms(pull_waits.commit), "ms").target(Target::AtMost(50.0)),
        figure("longest app wait for the write lock during that pull", ms(pull_waits.lock), "ms")
            .target(Target::AtMost(50.0)),
        figure("pull of updates to rows the device holds", incremental, "changes/s")
            .against("plain insert, Python sqlite3", python_local, "rows/s")
            .target(Target::RatioAtLeast(0.5)),
        figure("longest app wait for the write lock during the pull of updates", ms(incremental_waits.lock), "ms")
            .target(Target::AtMost(50.0)),
        figure("peak memory so far, server and replicas", peak_rss_mb(), "MB").target(Target::AtMost(200.0)),
    ])
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// A server as deployed (tokens checked on every request), on a loopback
/// port, and a token for it. Only the rate limit is off: it is a policy
/// against abuse, and the figures are of sync itself.
fn bench_server(database: &DatabaseUrl, schema: &Schema) -> anyhow::Result<(BackgroundServer, String)> {
    let mut config = ServerConfig::new(database.clone(), Some(schema.clone()));
    config.limits.requests_per_second = None;
    let token = crate::tokens::issue(database, "bench")?;
    let server = BackgroundServer::start(config, "127.0.0.1:0".parse()?)
        .with_context(|| format!("start a server on {}", database.redacted()))?;
    Ok((server, token))
}

/// Write-to-readable latency between two devices kept in sync by their
/// background agents, on one server; then the CPU the idle agents use.
fn latency(dir: &std::path::Path, database: &DatabaseUrl, writes: usize) -> anyhow::Result<Vec<Figure>> {
    let dir = tempfile::tempdir_in(dir)?;
    let schema = parse_schema(SCHEMA)?;
    let store = database.kind();
    let (server, token) = bench_server(database, &schema)?;
    let (a, b) = (dir.path().join("a.db"), dir.path().join("b.db"));
    Replica::init(&a, &server.url(), &schema, Some(&token))?;
    Replica::init(&b, &server.url(), &schema, Some(&token))?;
    let agents = [Agent::start(&a, AgentOptions::default())?, Agent::start(&b, AgentOptions::default())?];
    let idle = || agents.iter().all(|agent| agent.status().state == State::Idle);
    wait_until(Duration::from_secs(30), "both agents in sync", idle)?;

    // The app's own connections: a writer on A, a reader on B.
    let writer = Connection::open(&a)?;
    writer.busy_timeout(Duration::from_secs(5))?;
    let reader = Connection::open(&b)?;
    reader.busy_timeout(Duration::from_secs(5))?;
    let mut found = reader.prepare("SELECT count(*) FROM items WHERE id = ?")?;
    let mut latencies = Vec::with_capacity(writes);
    for i in 0..writes {
        let id = format!("lat{i:06}");
        let started = Instant::now();
        writer.execute("INSERT INTO items (id, name, qty, price) VALUES (?, 'x', 1, 1.0)", [&id])?;
        loop {
            if found.query_row([&id], |r| r.get::<_, i64>(0))? == 1 {
                break;
            }
            if started.elapsed() > Duration::from_secs(30) {
                bail!("write {i} did not arrive within 30 s");
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        latencies.push(started.elapsed());
        // Writes apart, as a person makes them.
        std::thread::sleep(Duration::from_millis(20 + (i as u64 * 7) % 30));
    }
    latencies.sort();
    let at = |q: f64| ms(latencies[((latencies.len() - 1) as f64 * q).round() as usize]);

    wait_until(Duration::from_secs(30), "both agents idle", idle)?;
    let window = Duration::from_secs(5);
    let before = agent_cpu();
    std::thread::sleep(window);
    let cpu = agent_cpu() - before;
    for agent in agents {
        agent.stop()?;
    }
    drop(found);
    drop((reader, writer));
    server.stop();
    let figure = |name: &str, value: f64, unit: &'static str| Figure::new("latency", store, writes, name, value, unit);
    Ok(vec![
        figure("commit on A to readable on B, median", at(0.5), "ms").target(Target::AtMost(20.0)),
        figure("commit on A to readable on B, p99", at(0.99), "ms").target(Target::AtMost(100.0)),
        figure("commit on A to readable on B, max", at(1.0), "ms"),
        figure("CPU of the two idle agents, share of one core", cpu.as_secs_f64() / window.as_secs_f64() * 100.0, "%"),
    ])
}

fn wait_until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) -> anyhow::Result<()> {
    let started = Instant::now();
    while !done() {
        if started.elapsed() > limit {
            bail!("not within {} s: {what}", limit.as_secs());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// CPU time used so far by this process's agent threads (named `rowsync-*`
/// by the client library), from /proc.
fn agent_cpu() -> Duration {
    let ticks_per_s = 100.0; // USER_HZ on Linux
    let mut ticks = 0u64;
    for task in std::fs::read_dir("/proc/self/task").into_iter().flatten().flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if !comm.starts_with("rowsync-") {
            continue;
        }
        let stat = std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
        // Fields after the command name (which ends with ')'): utime is the 12th, stime the 13th.
        let fields: Vec<&str> =
            stat.rsplit_once(')').map(|(_, rest)| rest.split_whitespace().collect()).unwrap_or_default();
        ticks += fields.get(11).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
        ticks += fields.get(12).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    }
    Duration::from_secs_f64(ticks as f64 / ticks_per_s)
}
