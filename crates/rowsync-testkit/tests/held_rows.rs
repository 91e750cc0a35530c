//! Pulled rows a replica already holds are written in bulk when the pulled
//! state alone decides them (the client's `stage` module), and merged one by
//! one otherwise. Both ways must leave the file alike: the same rows, the
//! same versions, the same count of live rows, the same writes queued.
//!
//! The way round is forced with the app's own trigger: where a synced table
//! has one, the rows the replica holds are all merged one by one, so that
//! the trigger sees each update as the app would. Each page is applied to
//! the replica and to a copy of its file taken just before, with such a
//! trigger, and the two files are compared.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rowsync_client::apply::apply_page;
use rowsync_client::stamp::stamp_all;
use rowsync_client::Replica;
use rowsync_proto::{Cell, ConflictStrategy, Hlc, PullResponse, RowChange, SiteId, Value, Version};
use rowsync_testkit::run_seeded;
use rusqlite::Connection;
use tempfile::TempDir;

/// One table per strategy, alike otherwise.
const TABLES: [(&str, ConflictStrategy); 3] =
    [("field", ConflictStrategy::Field), ("row", ConflictStrategy::Row), ("manual", ConflictStrategy::Manual)];
const COLUMNS: [&str; 3] = ["name", "email", "phone"];
const IDS: [&str; 6] = ["ann", "bob", "cy", "dee", "eve", "fay"];

fn schema() -> rowsync_proto::Schema {
    let sql: String = TABLES
        .iter()
        .map(|(name, _)| format!("CREATE TABLE {name} (id TEXT PRIMARY KEY, name TEXT, email TEXT, phone TEXT);"))
        .collect();
    let mut schema = rowsync_core::schema::parse_schema(&sql).unwrap();
    for (table, (_, strategy)) in schema.tables.iter_mut().zip(TABLES) {
        table.conflict = strategy;
    }
    schema
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// A version of the server's writer, `offset_ms` from `base`.
fn at(base: u64, offset_ms: i64) -> Version {
    Version { hlc: Hlc::from_millis(base.saturating_add_signed(offset_ms)), site: SiteId::from_bytes([9; 16]) }
}

/// A row as the server sends it: what its writers made of it, every cell
/// with its own version (and a value that follows from it, as writes
/// guarantee), or a tombstone.
fn pulled_row(rng: &mut StdRng, table: &str, id: &str, base: u64) -> RowChange {
    // Versions from before the app's writes here to well after them.
    let state = rng.gen_range(0..4);
    let mut version = || at(base, rng.gen_range(-30_000..30_000));
    let (alive, deleted) = (version(), version());
    let cells = if state == 0 {
        Vec::new()
    } else {
        COLUMNS
            .iter()
            .map(|&column| {
                let written = version().max(alive.clone());
                Cell {
                    column: column.into(),
                    value: Value::Text(format!("{column} of {id} at {}", written.hlc.0)),
                    version: Some(written),
                    base: None,
                    memory: None,
                }
            })
            .collect()
    };
    RowChange {
        table: table.into(),
        key: vec![Value::Text(id.into())],
        alive: (state != 0).then_some(alive),
        version: None,
        // A tombstone, a row deleted and written again, or one never deleted.
        deleted: (state <= 1).then_some(deleted),
        cells,
        conflicts: Vec::new(),
    }
}

/// What the app does between pulls: a few inserts, updates and deletes,
/// and now and then an `INSERT OR REPLACE` that takes another row's email
/// under the app's own UNIQUE index, deleting that row where no trigger
/// sees it.
fn app_writes(rng: &mut StdRng, app: &Connection) {
    for _ in 0..rng.gen_range(0..4) {
        let (table, _) = TABLES[rng.gen_range(0..TABLES.len())];
        let id = IDS[rng.gen_range(0..IDS.len())];
        let column = COLUMNS[rng.gen_range(0..COLUMNS.len())];
        let sql = match rng.gen_range(0..4) {
            0 => format!("INSERT OR IGNORE INTO {table} (id, {column}) VALUES (?1, 'app wrote ' || ?1)"),
            1 => format!("UPDATE {table} SET {column} = 'app changed ' || ?1 WHERE id = ?1"),
            2 => format!("DELETE FROM {table} WHERE id = ?1"),
            _ => format!(
                "INSERT OR REPLACE INTO {table} (id, email) \
                 VALUES (?1, (SELECT email FROM {table} WHERE id != ?1 AND email IS NOT NULL LIMIT 1))"
            ),
        };
        app.execute(&sql, [id]).unwrap();
    }
}

/// Everything the two ways must agree on.
fn file_state(path: &Path) -> Vec<String> {
    let conn = Connection::open(path).unwrap();
    let mut lines = Vec::new();
    let mut read = |sql: &str| {
        let mut statement = conn.prepare(sql).unwrap();
        let width = statement.column_count();
        let rows = statement
            .query_map([], |row| {
                let values: Vec<String> =
                    (0..width).map(|i| format!("{:?}", row.get::<_, rusqlite::types::Value>(i).unwrap())).collect();
                Ok(format!("{sql}: {}", values.join(" | ")))
            })
            .unwrap();
        lines.extend(rows.map(Result::unwrap));
    };
    for (table, _) in TABLES {
        read(&format!("SELECT * FROM {table} ORDER BY id"));
    }
    read("SELECT tbl, pk, clocks FROM _rowsync_rows ORDER BY tbl, pk");
    read("SELECT * FROM _rowsync_tables ORDER BY 1");
    read("SELECT id, tbl, pk, op FROM _rowsync_outbox ORDER BY id");
    read("SELECT * FROM _rowsync_conflicts ORDER BY 1, 2, 3");
    lines
}

fn held_rows_with_seed(seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = TempDir::new().unwrap();
    let path = dir.path().join("replica.db");
    let replica = Replica::init(&path, "http://127.0.0.1:9", &schema(), None).unwrap();
    let app = Connection::open(&path).unwrap();
    for (table, _) in TABLES {
        app.execute_batch(&format!("CREATE UNIQUE INDEX {table}_email ON {table} (email);")).unwrap();
    }
    let base = now_ms();
    let mut pages_that_changed = 0;
    for cursor in 1..=16u64 {
        app_writes(&mut rng, &app);
        // Stamped before the copy, so that both files hold the same versions.
        stamp_all(&replica).unwrap();
        let copy = dir.path().join(format!("copy-{cursor}.db"));
        app.execute("VACUUM INTO ?1", [copy.to_str().unwrap()]).unwrap();
        let one_by_one = Replica::open(&copy).unwrap();
        let copy_app = Connection::open(&copy).unwrap();
        for (table, _) in TABLES {
            copy_app
                .execute_batch(&format!("CREATE TRIGGER app_{table} AFTER UPDATE ON {table} BEGIN SELECT 1; END;"))
                .unwrap();
        }

        let changes: Vec<RowChange> = (0..rng.gen_range(1..10))
            .map(|_| {
                let (table, _) = TABLES[rng.gen_range(0..TABLES.len())];
                let id = IDS[rng.gen_range(0..IDS.len())];
                pulled_row(&mut rng, table, id, base)
            })
            .collect();
        let page = PullResponse { changes, cursor, more: false, schema_version: None, began: None };
        // A page can fail on the app's UNIQUE index (a pulled row coming
        // back with an email another row took meanwhile): then both ways.
        let changed = apply_page(&replica, page.clone()).map_err(|e| e.to_string());
        let changed_there = apply_page(&one_by_one, page.clone()).map_err(|e| e.to_string());
        for (table, _) in TABLES {
            copy_app.execute_batch(&format!("DROP TRIGGER app_{table};")).unwrap();
        }
        let (bulk, general) = (file_state(&path), file_state(&copy));
        if bulk != general {
            let differ: Vec<_> = bulk.iter().zip(&general).filter(|(a, b)| a != b).collect();
            panic!("seed {seed}, page {cursor}: written in bulk and merged one by one differ: {differ:#?}\n{page:#?}");
        }
        assert_eq!(changed, changed_there, "seed {seed}, page {cursor}: rows changed");
        pages_that_changed += usize::from(changed.is_ok_and(|changed| changed > 0));
    }
    assert!(pages_that_changed > 4, "seed {seed}: too few pages changed anything");
}

/// Seeded runs of pages (rows new to the replica, updates of rows it holds,
/// deletes, rows deleted and written again, some older and some newer than
/// the app's own writes) on field, row and manual tables: every page leaves
/// the file as merging each row one by one would.
#[test]
fn held_rows_written_in_bulk_end_as_when_merged_one_by_one() {
    run_seeded("held_rows_written_in_bulk_end_as_when_merged_one_by_one", 24, &[], 2, held_rows_with_seed);
}
