//! Each conflict strategy's documented example (README, "Conflicts"), end to
//! end through the `rowsync` binary, on every store: `serve --config` with a
//! field table and a row table, two replicas edited offline with a plain
//! SQLite connection, `sync` in turn.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{Server, ROWSYNC};
use rowsync_testkit::{on_every_store, TestStore};

const SCHEMA: &str = "
CREATE TABLE contacts (id TEXT PRIMARY KEY, name TEXT NOT NULL, email TEXT, phone TEXT);
CREATE TABLE invoices (id TEXT PRIMARY KEY, name TEXT NOT NULL, email TEXT, phone TEXT);
";
const SETTINGS: &str = "
[tables.contacts]
conflict = \"field\"

[tables.invoices]
conflict = \"row\"
";

fn run(args: &[&str]) {
    let output = Command::new(ROWSYNC).args(args).output().unwrap();
    assert!(output.status.success(), "rowsync {args:?}: {}", String::from_utf8_lossy(&output.stderr));
}

fn serve(dir: &Path, database: &str) -> (Server, String) {
    std::fs::write(dir.join("schema.sql"), SCHEMA).unwrap();
    std::fs::write(dir.join("rowsync.toml"), SETTINGS).unwrap();
    let port = common::free_port();
    let schema = dir.join("schema.sql");
    let settings = dir.join("rowsync.toml");
    let args = ["--database", database, "--schema", schema.to_str().unwrap(), "--config", settings.to_str().unwrap()];
    (common::serve(&args, port), format!("http://127.0.0.1:{port}"))
}

fn strategies_on(store: &TestStore) {
    let dir = tempfile::tempdir().unwrap();
    let database = store.fresh_database(dir.path()).to_url();
    let (_server, url) = serve(dir.path(), &database);
    let laptop = dir.path().join("laptop.db");
    let phone = dir.path().join("phone.db");
    let (laptop, phone) = (laptop.to_str().unwrap(), phone.to_str().unwrap());
    run(&["init", laptop, "--server", &url]);
    run(&["init", phone, "--server", &url]);
    let laptop_db = rusqlite::Connection::open(laptop).unwrap();
    let phone_db = rusqlite::Connection::open(phone).unwrap();
    for table in ["contacts", "invoices"] {
        laptop_db.execute(&format!("INSERT INTO {table} VALUES ('a', 'Ada', 'old@x', '111')"), []).unwrap();
    }
    run(&["sync", laptop]);
    run(&["sync", phone]);
    for table in ["contacts", "invoices"] {
        laptop_db.execute(&format!("UPDATE {table} SET phone = '999' WHERE id = 'a'"), []).unwrap();
    }
    std::thread::sleep(Duration::from_millis(20));
    for table in ["contacts", "invoices"] {
        phone_db.execute(&format!("UPDATE {table} SET email = 'new@x' WHERE id = 'a'"), []).unwrap();
    }
    run(&["sync", laptop]);
    run(&["sync", phone]);
    run(&["sync", laptop]);
    let read = |db: &rusqlite::Connection, table: &str| -> (String, String) {
        db.query_row(&format!("SELECT email, phone FROM {table}"), [], |r| Ok((r.get(0)?, r.get(1)?))).unwrap()
    };
    for db in [&laptop_db, &phone_db] {
        assert_eq!(read(db, "contacts"), ("new@x".into(), "999".into()), "{}: field keeps both edits", store.name());
        assert_eq!(read(db, "invoices"), ("new@x".into(), "111".into()), "{}: row keeps the later row", store.name());
    }
}

#[test]
fn field_and_row_strategies_through_the_cli_on_every_store() {
    on_every_store(strategies_on);
}
