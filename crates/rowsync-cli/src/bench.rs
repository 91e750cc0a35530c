//! `rowsync bench`: the performance figures, measured side by side in one
//! run (absolute times on a shared machine are noise; ratios are not).
//!
//! - `capture`: the same writes through Python's sqlite3 module (how an app
//!   sees it) against a plain table and a captured one; see bench/capture.py.
//! - `sync`: a backlog pushed by one replica and pulled by another through a
//!   real server on a loopback port, beside a plain batched insert of the
//!   same rows into the server's database and plain bulk inserts into a
//!   local SQLite file (Python's sqlite3, as an app writes, and Rust's);
//!   see bench/plain_insert.py.
//! - `latency`: two devices under their background agents on one server;
//!   from a commit on one until the row is readable on the other, and the
//!   CPU the idle agents use.
//! - `direct`: writes made directly in the server's database, on a plain
//!   table and on a synced (captured) one, side by side; then a new replica
//!   syncing what they wrote.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rowsync_client::{sync, Agent, AgentOptions, HttpTransport, Replica, State, SyncOptions};
use rowsync_core::ddl::{create_table, Dialect};
use rowsync_core::parse_schema;
use rowsync_proto::Schema;
use rowsync_server::{BackgroundServer, DatabaseUrl, ServerConfig};
use rusqlite::Connection;

const SCHEMA: &str = "CREATE TABLE items (id TEXT PRIMARY KEY, name TEXT, qty INTEGER, price REAL);";
const CAPTURE_SCRIPT: &str = include_str!("../../../bench/capture.py");
const PLAIN_INSERT_SCRIPT: &str = include_str!("../../../bench/plain_insert.py");

/// Seconds Python's sqlite3 takes to bulk insert the bench's `rows` into a
/// new local file (WAL, synchronous=NORMAL): how an app writes, and the
/// reference of the pull target.
fn python_insert_secs(dir: &std::path::Path, rows: usize) -> anyhow::Result<f64> {
    let script = dir.join("plain_insert.py");
    std::fs::write(&script, PLAIN_INSERT_SCRIPT)?;
    let output = Command::new("python3")
        .arg(&script)
        .arg(dir.join("python-plain.db"))
        .arg(rows.to_string())
        .output()
        .context("cannot run python3 (apt-get install python3)")?;
    if !output.status.success() {
        bail!("bench/plain_insert.py failed: {}", String::from_utf8_lossy(&output.stderr).trim());
    }
    String::from_utf8_lossy(&output.stdout).trim().parse().context("bench/plain_insert.py output")
}

pub fn capture(rows: usize, rounds: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
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
    println!(
        "capture overhead, Python sqlite3 {} (WAL, synchronous=NORMAL), median of {rounds} rounds",
        report["sqlite_version"].as_str().unwrap_or("?")
    );
    println!("  {:<36} {:>8} {:>14} {:>14} {:>7}", "scenario", "rows", "plain rows/s", "captured rows/s", "ratio");
    for result in report["results"].as_array().into_iter().flatten() {
        println!(
            "  {:<36} {:>8} {:>14.0} {:>14.0} {:>6.2}x",
            result["scenario"].as_str().unwrap_or("?"),
            result["rows"],
            result["plain_rows_per_s"].as_f64().unwrap_or(0.0),
            result["captured_rows_per_s"].as_f64().unwrap_or(0.0),
            result["ratio"].as_f64().unwrap_or(0.0),
        );
    }
    Ok(())
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

/// A plain batched insert of the same rows into a scratch table of the
/// server's database: 500-row INSERT statements in one transaction.
async fn plain_server_insert(database: &DatabaseUrl, rows: usize) -> anyhow::Result<f64> {
    let (pool, dialect) = other_program(database).await?;
    let table = plain_table(&pool, dialect).await?;
    let secs = batched_insert(&pool, dialect, &table, rows).await?;
    sqlx::query(&format!("DROP TABLE {table}")).execute(&pool).await?;
    Ok(secs)
}

/// Writes made directly in the server's database: the same statements on
/// a plain table and on the synced (captured) one, each scenario side by
/// side; then a new replica syncing what they left.
pub fn direct(rows: usize, database: Option<&str>) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let schema = parse_schema(SCHEMA)?;
    let database = bench_database(database, dir.path())?;
    let (server, token) = bench_server(&database, &schema)?;
    let runtime = tokio::runtime::Runtime::new()?;
    let singles = rows.min(1_000);
    println!(
        "direct writes into the server database {} ({rows} rows), plain table against synced",
        database.redacted()
    );
    let report = |what: &str, count: usize, plain: f64, captured: f64| {
        println!(
            "  {what:<34} plain {:>9.0} rows/s  captured {:>9.0} rows/s  {:.2}x",
            count as f64 / plain,
            count as f64 / captured,
            plain / captured
        );
    };
    runtime.block_on(async {
        let (pool, dialect) = other_program(&database).await?;
        let plain = plain_table(&pool, dialect).await?;
        let bulk =
            (batched_insert(&pool, dialect, &plain, rows).await?, batched_insert(&pool, dialect, "items", rows).await?);
        report("bulk insert, one transaction", rows, bulk.0, bulk.1);
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
        report("single-row updates, each committed", singles, single[0], single[1]);
        let mut whole = [0.0; 2];
        for (n, table) in [&plain, "items"].into_iter().enumerate() {
            let started = Instant::now();
            sqlx::query(&format!("UPDATE {table} SET price = price * 2")).execute(&pool).await?;
            whole[n] = started.elapsed().as_secs_f64();
        }
        report("one UPDATE of every row", rows, whole[0], whole[1]);
        sqlx::query(&format!("DROP TABLE {plain}")).execute(&pool).await?;
        anyhow::Ok(())
    })?;
    let mut replica = Replica::init(&dir.path().join("replica.db"), &server.url(), &schema, Some(&token))?;
    let started = Instant::now();
    let pulled = sync(&mut replica, &HttpTransport::new(&server.url(), Some(token)), SyncOptions::default())?;
    let secs = started.elapsed().as_secs_f64();
    if pulled.pulled != rows as u64 {
        bail!("expected the {rows} rows written directly on a new replica, it pulled {}", pulled.pulled);
    }
    println!("  a new replica syncing them (the server publishes, then serves)  {:>9.0} rows/s", rows as f64 / secs);
    Ok(())
}

/// The server database named by `--database`, or a new SQLite file in `dir`.
fn bench_database(url: Option<&str>, dir: &std::path::Path) -> anyhow::Result<DatabaseUrl> {
    match url {
        Some(url) => DatabaseUrl::parse(url).map_err(|e| anyhow::anyhow!("--database: {e}")),
        None => Ok(DatabaseUrl::Sqlite(dir.join("server.db"))),
    }
}

pub fn sync_backlog(rows: usize, database: Option<&str>) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let schema = parse_schema(SCHEMA)?;
    let database = bench_database(database, dir.path())?;

    let plain = Connection::open(dir.path().join("plain.db"))?;
    plain.pragma_update(None, "journal_mode", "WAL")?;
    plain.pragma_update(None, "synchronous", "NORMAL")?;
    plain.execute_batch(&create_table(&schema.tables[0], Dialect::Sqlite))?;
    let started = Instant::now();
    insert_rows(&plain, rows)?;
    let plain_local_secs = started.elapsed().as_secs_f64();
    let python_local_secs = python_insert_secs(dir.path(), rows)?;
    let runtime = tokio::runtime::Runtime::new()?;
    let plain_server_secs = runtime.block_on(plain_server_insert(&database, rows))?;

    let (server, token) = bench_server(&database, &schema)?;
    let url = server.url();
    let mut sender = Replica::init(&dir.path().join("sender.db"), &url, &schema, Some(&token))?;
    let mut receiver = Replica::init(&dir.path().join("receiver.db"), &url, &schema, Some(&token))?;
    insert_rows(sender.connection(), rows)?;
    let transport = HttpTransport::new(&url, Some(token));
    let options = SyncOptions::default();

    let started = Instant::now();
    let pushed = sync(&mut sender, &transport, options)?;
    let push_secs = started.elapsed().as_secs_f64();
    let started = Instant::now();
    let pulled = sync(&mut receiver, &transport, options)?;
    let pull_secs = started.elapsed().as_secs_f64();
    if pushed.acknowledged != rows as u64 || pulled.pulled != rows as u64 {
        bail!("expected {rows} changes each way, pushed {} and pulled {}", pushed.acknowledged, pulled.pulled);
    }
    println!(
        "sync of a {rows}-change backlog through a server on {} (one process, loopback HTTP)",
        database.redacted()
    );
    let line =
        |label: &str, rate: f64, unit: &str, versus: String| println!("  {label:<56} {rate:>9.0} {unit}{versus}");
    line("plain batched insert into the server database", rows as f64 / plain_server_secs, "rows/s", String::new());
    line(
        "push: rowsync sync on the writing device",
        rows as f64 / push_secs,
        "changes/s",
        format!("  {:.2}x the plain server insert", plain_server_secs / push_secs),
    );
    line(
        "plain bulk insert into a local file, Python sqlite3",
        rows as f64 / python_local_secs,
        "rows/s",
        String::new(),
    );
    line("plain bulk insert into a local file, Rust rusqlite", rows as f64 / plain_local_secs, "rows/s", String::new());
    line(
        "pull: rowsync sync on a new device",
        rows as f64 / pull_secs,
        "changes/s",
        format!(
            "  {:.2}x the Python insert, {:.2}x the Rust one",
            python_local_secs / pull_secs,
            plain_local_secs / pull_secs
        ),
    );
    println!("  peak resident memory of this process (server and both replicas): {:.0} MB", peak_rss_mb());
    Ok(())
}

/// A server as deployed (tokens checked on every request), on a loopback
/// port, and a token for it. Only the rate limit is off: it is a policy
/// against abuse, and the figures are of sync itself.
fn bench_server(database: &DatabaseUrl, schema: &Schema) -> anyhow::Result<(BackgroundServer, String)> {
    let mut config = ServerConfig::new(database.clone(), Some(schema.clone()));
    config.limits.requests_per_second = None;
    let token = crate::tokens::issue(database, "bench")?;
    let server = BackgroundServer::start(config, "127.0.0.1:0".parse()?)
        .with_context(|| format!("start a server on {} (it needs an empty database)", database.redacted()))?;
    Ok((server, token))
}

/// Write-to-readable latency between two devices kept in sync by their
/// background agents, on one server; then the CPU the idle agents use.
pub fn latency(writes: usize, database: Option<&str>) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let schema = parse_schema(SCHEMA)?;
    let database = bench_database(database, dir.path())?;
    let (server, token) = bench_server(&database, &schema)?;
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
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1000.0;

    wait_until(Duration::from_secs(30), "both agents idle", idle)?;
    let window = Duration::from_secs(5);
    let before = agent_cpu();
    std::thread::sleep(window);
    let cpu = agent_cpu() - before;
    for agent in agents {
        agent.stop()?;
    }
    println!(
        "latency from a commit on device A to readable on device B, both under watch, server on {} (loopback)",
        database.redacted()
    );
    println!("  writes {writes}, one every 20-50 ms");
    println!("  median {:>7.1} ms   (target <= 20 ms)", at(0.5));
    println!("  p99    {:>7.1} ms   (target <= 100 ms)", at(0.99));
    println!("  max    {:>7.1} ms", at(1.0));
    println!(
        "  idle CPU of the two agents' threads over {} s: {:.2}% of one core ({:.1} ms)",
        window.as_secs(),
        cpu.as_secs_f64() / window.as_secs_f64() * 100.0,
        cpu.as_secs_f64() * 1000.0
    );
    Ok(())
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
