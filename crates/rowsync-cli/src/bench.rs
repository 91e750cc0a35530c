//! `rowsync bench`: the performance figures, measured side by side in one
//! run (absolute times on a shared machine are noise; ratios are not).
//!
//! - `capture`: the same writes through Python's sqlite3 module (how an app
//!   sees it) against a plain table and a captured one; see bench/capture.py.
//! - `sync`: a backlog pushed by one replica and pulled by another through a
//!   real server on a loopback port, beside a plain batched insert of the
//!   same rows into a SQLite file.

use std::process::Command;
use std::time::Instant;

use anyhow::{bail, Context};
use rowsync_client::{sync, HttpTransport, Replica, SyncOptions};
use rowsync_core::ddl::{create_table, Dialect};
use rowsync_core::parse_schema;
use rowsync_server::{BackgroundServer, DatabaseUrl, ServerConfig};
use rusqlite::Connection;

const SCHEMA: &str = "CREATE TABLE items (id TEXT PRIMARY KEY, name TEXT, qty INTEGER, price REAL);";
const CAPTURE_SCRIPT: &str = include_str!("../../../bench/capture.py");

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

/// A plain batched insert of the same rows into a scratch table of the
/// server's database: 500-row INSERT statements in one transaction.
async fn plain_server_insert(database: &DatabaseUrl, rows: usize) -> anyhow::Result<f64> {
    sqlx::any::install_default_drivers();
    let (url, dialect) = match database {
        DatabaseUrl::Sqlite(path) => (format!("sqlite://{}?mode=rwc", path.display()), Dialect::Sqlite),
        DatabaseUrl::Postgres(url) => (url.clone(), Dialect::Postgres),
        DatabaseUrl::Mysql(url) => (url.clone(), Dialect::Mysql),
    };
    let pool = sqlx::AnyPool::connect(&url).await.context("connect to the bench database")?;
    let mut table = parse_schema(SCHEMA)?.tables.remove(0);
    table.name = "bench_plain_items".into();
    sqlx::query(&format!("DROP TABLE IF EXISTS {}", table.name)).execute(&pool).await?;
    sqlx::query(&create_table(&table, dialect)).execute(&pool).await?;
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
        let sql = format!("INSERT INTO {} (id, name, qty, price) VALUES {}", table.name, tuples.join(", "));
        let mut query = sqlx::query(&sql);
        for i in first..first + count {
            query = query.bind(format!("k{i:07}")).bind(format!("item {i}")).bind(i as i64).bind(i as f64 * 0.5);
        }
        query.execute(&mut *tx).await?;
    }
    tx.commit().await?;
    let secs = started.elapsed().as_secs_f64();
    sqlx::query(&format!("DROP TABLE {}", table.name)).execute(&pool).await?;
    Ok(secs)
}

pub fn sync_backlog(rows: usize, database: Option<&str>) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let schema = parse_schema(SCHEMA)?;
    let database = match database {
        Some(url) => DatabaseUrl::parse(url).map_err(|e| anyhow::anyhow!("--database: {e}"))?,
        None => DatabaseUrl::Sqlite(dir.path().join("server.db")),
    };

    let plain = Connection::open(dir.path().join("plain.db"))?;
    plain.pragma_update(None, "journal_mode", "WAL")?;
    plain.pragma_update(None, "synchronous", "NORMAL")?;
    plain.execute_batch(&create_table(&schema.tables[0], Dialect::Sqlite))?;
    let started = Instant::now();
    insert_rows(&plain, rows)?;
    let plain_local_secs = started.elapsed().as_secs_f64();
    let runtime = tokio::runtime::Runtime::new()?;
    let plain_server_secs = runtime.block_on(plain_server_insert(&database, rows))?;

    let config = ServerConfig::new(database.clone(), Some(schema.clone()));
    let server = BackgroundServer::start(config, "127.0.0.1:0".parse()?)
        .with_context(|| format!("start a server on {} (it needs an empty database)", database.redacted()))?;
    let url = server.url();
    let mut sender = Replica::init(&dir.path().join("sender.db"), &url, &schema, None)?;
    let mut receiver = Replica::init(&dir.path().join("receiver.db"), &url, &schema, None)?;
    insert_rows(sender.connection(), rows)?;
    let transport = HttpTransport::new(&url, None);
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
    println!("  plain batched insert into the server database   {:>9.0} rows/s", rows as f64 / plain_server_secs);
    println!(
        "  push: rowsync sync on the writing device         {:>9.0} changes/s  {:.2}x the plain server insert",
        rows as f64 / push_secs,
        plain_server_secs / push_secs
    );
    println!("  plain bulk insert into a local SQLite file       {:>9.0} rows/s", rows as f64 / plain_local_secs);
    println!(
        "  pull: rowsync sync on a new device               {:>9.0} changes/s  {:.2}x the plain local insert",
        rows as f64 / pull_secs,
        plain_local_secs / pull_secs
    );
    println!("  peak resident memory of this process (server and both replicas): {:.0} MB", peak_rss_mb());
    Ok(())
}
