//! Each conflict strategy's documented example (README, "Conflicts"), end to
//! end through the `rowsync` binary, on every store: `serve --config` with a
//! field table, a row table and a manual table, two replicas edited offline
//! with a plain SQLite connection, `sync` in turn, then `conflicts` and
//! `resolve` for the manual table.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{Server, ROWSYNC};
use rowsync_testkit::{on_every_store, TestStore};

const SCHEMA: &str = "
CREATE TABLE contacts (id TEXT PRIMARY KEY, name TEXT NOT NULL, email TEXT, phone TEXT);
CREATE TABLE invoices (id TEXT PRIMARY KEY, name TEXT NOT NULL, email TEXT, phone TEXT);
CREATE TABLE notes (id TEXT PRIMARY KEY, name TEXT NOT NULL, email TEXT, phone TEXT);
";
const SETTINGS: &str = "
[tables.contacts]
conflict = \"field\"

[tables.invoices]
conflict = \"row\"

[tables.notes]
conflict = \"manual\"
";

fn run(args: &[&str]) -> String {
    let output = Command::new(ROWSYNC).args(args).output().unwrap();
    assert!(output.status.success(), "rowsync {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

fn conflicts(local: &str) -> Vec<serde_json::Value> {
    serde_json::from_str(&run(&["conflicts", local, "--json"])).unwrap()
}

fn serve(dir: &Path, database: &str) -> (Server, String) {
    std::fs::write(dir.join("schema.sql"), SCHEMA).unwrap();
    std::fs::write(dir.join("rowsync.toml"), SETTINGS).unwrap();
    let port = common::free_port();
    let schema = dir.join("schema.sql");
    let settings = dir.join("rowsync.toml");
    let args = [
        "--database",
        database,
        "--schema",
        schema.to_str().unwrap(),
        "--config",
        settings.to_str().unwrap(),
        "--insecure-no-auth",
    ];
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
    for table in ["contacts", "invoices", "notes"] {
        laptop_db.execute(&format!("INSERT INTO {table} VALUES ('a', 'Ada', 'old@x', '111')"), []).unwrap();
    }
    run(&["sync", laptop]);
    run(&["sync", phone]);
    for table in ["contacts", "invoices", "notes"] {
        laptop_db.execute(&format!("UPDATE {table} SET phone = '999' WHERE id = 'a'"), []).unwrap();
    }
    std::thread::sleep(Duration::from_millis(20));
    for table in ["contacts", "invoices"] {
        phone_db.execute(&format!("UPDATE {table} SET email = 'new@x' WHERE id = 'a'"), []).unwrap();
    }
    phone_db.execute("UPDATE notes SET phone = '000' WHERE id = 'a'", []).unwrap();
    run(&["sync", laptop]);
    run(&["sync", phone]);
    run(&["sync", laptop]);
    let read = |db: &rusqlite::Connection, table: &str| -> (String, String) {
        db.query_row(&format!("SELECT email, phone FROM {table}"), [], |r| Ok((r.get(0)?, r.get(1)?))).unwrap()
    };
    for db in [&laptop_db, &phone_db] {
        assert_eq!(read(db, "contacts"), ("new@x".into(), "999".into()), "{}: field keeps both edits", store.name());
        assert_eq!(read(db, "invoices"), ("new@x".into(), "111".into()), "{}: row keeps the later row", store.name());
        assert_eq!(read(db, "notes"), ("old@x".into(), "999".into()), "{}: manual keeps the first", store.name());
    }

    // Manual: both replicas list the conflict; the phone keeps its own value.
    let on_phone = conflicts(phone);
    assert_eq!(on_phone.len(), 1, "{}", store.name());
    let conflict = &on_phone[0];
    assert_eq!(
        (&conflict["table"], &conflict["column"], &conflict["key"]),
        (&"notes".into(), &"phone".into(), &serde_json::json!(["a"]))
    );
    assert_eq!((&conflict["local"]["value"], &conflict["remote"]["value"]), (&"000".into(), &"999".into()));
    assert_eq!(conflict["shown"], "remote");
    assert!(conflict["base"]["time"].as_str().unwrap().ends_with("UTC"));
    assert_eq!(conflict["base"]["value"], "111");
    let id = conflict["id"].as_str().unwrap();
    assert_eq!(conflicts(laptop)[0]["id"], id, "the same conflict on both replicas");
    let listing = run(&["conflicts", laptop]);
    assert!(
        listing.contains(id) && listing.contains("\"999\"  by this device") && listing.contains("(shown)"),
        "{listing}"
    );

    run(&["resolve", phone, &id[..8], "--keep", "local"]);
    assert!(conflicts(phone).is_empty());
    run(&["sync", phone]);
    run(&["sync", laptop]);
    for db in [&laptop_db, &phone_db] {
        assert_eq!(read(db, "notes"), ("old@x".into(), "000".into()), "{}: the resolution synced", store.name());
    }
    assert!(conflicts(laptop).is_empty(), "{}: closed on the other replica too", store.name());
    assert!(run(&["conflicts", laptop]).contains("no open conflicts"));
}

#[test]
fn field_row_and_manual_strategies_through_the_cli_on_every_store() {
    on_every_store(strategies_on);
}
