//! Invariant 7 (crash safety): applying a pulled page and advancing the
//! cursor is one transaction, and so is applying a pushed batch and
//! recording its acknowledgement. A page or batch that fails part-way
//! leaves everything exactly as it was.

use rowsync_client::apply::apply_page;
use rowsync_proto::{Cell, Hlc, PullResponse, RowChange, SiteId, Value, Version};
use rowsync_testkit::{text, Device, TestServer, CONTACTS_SCHEMA};
use tempfile::TempDir;

fn contact(id: &str, name: &str) -> RowChange {
    let version = Version { hlc: Hlc::from_millis(1_000), site: SiteId::from_bytes([3; 16]) };
    let cell =
        |column: &str, value: Value| Cell { column: column.into(), value, version: None, base: None, memory: None };
    RowChange {
        table: "contacts".into(),
        key: vec![text(id)],
        alive: Some(version.clone()),
        version: Some(version),
        deleted: None,
        cells: vec![cell("name", text(name)), cell("email", Value::Null), cell("phone", Value::Null)],
        conflicts: Vec::new(),
    }
}

#[test]
fn a_page_that_fails_part_way_changes_nothing() {
    let dir = TempDir::new().unwrap();
    let server = TestServer::start(dir.path(), CONTACTS_SCHEMA);
    let device = Device::init(dir.path(), "device", &server.url());
    device.exec("INSERT INTO contacts VALUES ('mine', 'Mine', NULL, NULL);");
    let replica = device.replica();

    let mut broken = contact("b", "Broken");
    broken.cells[0].column = "no_such_column".into();
    let page = PullResponse {
        changes: vec![contact("a", "Applied first"), broken],
        cursor: 42,
        more: false,
        schema_version: None,
        began: None,
    };
    assert!(apply_page(&replica, page).is_err());

    assert_eq!(device.rows("SELECT id FROM contacts"), vec![vec![text("mine")]], "no row of the page was written");
    let status = replica.status().unwrap();
    assert_eq!(status.cursor, 0, "the cursor did not move");
    assert_eq!(status.pending_changes, 1, "the local write is still queued");

    let good = PullResponse {
        changes: vec![contact("a", "Applied first")],
        cursor: 42,
        more: false,
        schema_version: None,
        began: None,
    };
    apply_page(&replica, good).unwrap();
    assert_eq!(replica.status().unwrap().cursor, 42);
    assert_eq!(device.rows("SELECT name FROM contacts WHERE id = 'a'"), vec![vec![text("Applied first")]]);
}

/// The server's side: a batch whose last write fails must leave no row, no
/// state and no high-water mark behind, or the retry would be skipped as a
/// repeat and its writes lost.
#[test]
fn a_push_that_fails_part_way_records_nothing_and_its_retry_applies() {
    let dir = TempDir::new().unwrap();
    let server = TestServer::start(dir.path(), CONTACTS_SCHEMA);
    let rowsync_server::DatabaseUrl::Sqlite(path) = &server.database else { panic!("a SQLite store") };
    let database = rusqlite::Connection::open(path).unwrap();
    database
        .execute_batch(
            "CREATE TRIGGER boom BEFORE INSERT ON contacts WHEN NEW.id = 'boom' \
             BEGIN SELECT RAISE(ABORT, 'boom'); END;",
        )
        .unwrap();
    let device = Device::init(dir.path(), "device", &server.url());
    device.exec(
        "INSERT INTO contacts VALUES ('a', 'Ann', NULL, NULL); INSERT INTO contacts VALUES ('boom', 'B', NULL, NULL);",
    );
    assert!(device.sync().is_err(), "the server's database refused the batch");
    for table in ["contacts", "rowsync_rows", "rowsync_sites"] {
        assert!(server.rows(&format!("SELECT 1 FROM {table}")).is_empty(), "{table} kept part of a failed push");
    }
    assert_eq!(device.pending(), 2, "nothing acknowledged");

    database.execute_batch("DROP TRIGGER boom;").unwrap();
    device.sync().unwrap();
    assert_eq!(server.rows("SELECT id FROM contacts ORDER BY id"), vec![vec![text("a")], vec![text("boom")]]);
    assert_eq!(device.pending(), 0);
}

/// Invariant 8 on the client: names in a pulled page are checked against
/// the schema before any SQL is built, even names SQLite itself would
/// accept (a table's hidden `rowid`, rowsync's own tables).
#[test]
fn pulled_names_outside_the_schema_are_refused_before_any_sql() {
    let dir = TempDir::new().unwrap();
    let server = TestServer::start(dir.path(), CONTACTS_SCHEMA);
    let device = Device::init(dir.path(), "device", &server.url());
    let replica = device.replica();
    let mut hidden_column = contact("a", "Ann");
    hidden_column.cells[1].column = "rowid".into();
    let mut own_table = contact("a", "Ann");
    own_table.table = "_rowsync_meta".into();
    for change in [hidden_column, own_table] {
        let page = PullResponse { changes: vec![change], cursor: 7, more: false, schema_version: None, began: None };
        match apply_page(&replica, page) {
            Err(rowsync_client::ClientError::Protocol(message)) => {
                assert!(message.contains("does not fit the schema"), "{message}")
            }
            other => panic!("expected a protocol error, got {other:?}"),
        }
    }
    assert_eq!(replica.status().unwrap().cursor, 0);
    assert!(device.rows("SELECT id FROM contacts").is_empty());
}
