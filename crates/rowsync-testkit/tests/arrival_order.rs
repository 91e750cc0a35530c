//! Invariant 5: the result depends only on the versions involved, never on
//! the order in which changes reach the server.

use std::time::Duration;

use rowsync_proto::Value;
use rowsync_testkit::{on_every_store, text, Device, TestServer, TestStore, CONTACTS_SCHEMA};
use tempfile::TempDir;

const ROW: &str = "SELECT id, name, email, phone FROM contacts WHERE id = 'k'";

/// C edits one column, B deletes the row later, A edits another column
/// later still (having seen neither). Returns the row everyone ends with
/// when C's edit reaches the server before B's delete, or after it.
fn edit_delete_revive(store: &TestStore, edit_first: bool) -> Vec<Vec<Value>> {
    let dir = TempDir::new().unwrap();
    let server = TestServer::start_on(store, dir.path(), CONTACTS_SCHEMA);
    let [a, b, c] = ["a", "b", "c"].map(|name| Device::init(dir.path(), name, &server.url()));
    a.exec("INSERT INTO contacts VALUES ('k', 'Kim', 'kim@x', '111');");
    for device in [&a, &b, &c] {
        device.sync().unwrap();
    }
    let pause = || std::thread::sleep(Duration::from_millis(15));
    c.exec("UPDATE contacts SET email = 'kim@c' WHERE id = 'k';");
    pause();
    b.exec("DELETE FROM contacts WHERE id = 'k';");
    pause();
    a.exec("UPDATE contacts SET phone = '333' WHERE id = 'k';");
    if edit_first {
        c.sync().unwrap();
        b.sync().unwrap();
    } else {
        b.sync().unwrap();
        c.sync().unwrap(); // pulls the delete before it pushes its edit
                           // The edit it held through the delete is on the server now: no
                           // longer held.
        let holding = "SELECT count(*) FROM _rowsync_rows WHERE json_extract(clocks, '$.h') IS NOT NULL";
        assert_eq!(c.rows(holding), vec![vec![Value::Integer(0)]], "held writes released once acknowledged");
    }
    a.sync().unwrap();
    for device in [&a, &b, &c, &a, &b, &c] {
        device.sync().unwrap();
    }
    let row = server.rows(ROW);
    for device in [&a, &b, &c] {
        assert_eq!(device.rows(ROW), row, "{} differs from the server", device.name);
        assert_eq!(device.pending(), 0);
    }
    row
}

/// Regression: a replica dropped its own unsent edit when a pulled delete
/// removed the row, so C's email survived A's revival only when C happened
/// to push before B.
#[test]
fn an_edit_a_delete_and_a_revival_end_the_same_in_either_order() {
    on_every_store(|store| {
        let expected = vec![vec![text("k"), text("Kim"), text("kim@c"), text("333")]];
        assert_eq!(edit_delete_revive(store, true), expected, "edit first, on {}", store.name());
        assert_eq!(edit_delete_revive(store, false), expected, "delete first, on {}", store.name());
    });
}
