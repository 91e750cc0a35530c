//! Invariant 7 (crash safety): applying a pulled page and advancing the
//! cursor is one transaction. A page that fails part-way leaves the replica
//! exactly as it was: no row of it written, the cursor where it was.

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
    let page = PullResponse { changes: vec![contact("a", "Applied first"), broken], cursor: 42, more: false };
    assert!(apply_page(&replica, &page).is_err());

    assert_eq!(device.rows("SELECT id FROM contacts"), vec![vec![text("mine")]], "no row of the page was written");
    let status = replica.status().unwrap();
    assert_eq!(status.cursor, 0, "the cursor did not move");
    assert_eq!(status.pending_changes, 1, "the local write is still queued");

    let good = PullResponse { changes: vec![contact("a", "Applied first")], cursor: 42, more: false };
    apply_page(&replica, &good).unwrap();
    assert_eq!(replica.status().unwrap().cursor, 42);
    assert_eq!(device.rows("SELECT name FROM contacts WHERE id = 'a'"), vec![vec![text("Applied first")]]);
}
