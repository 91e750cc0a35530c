//! A change the server refuses does not block every later change: it is set
//! aside with the reason, the rest syncs, status says so, and fixing the row
//! sends it again.

use rowsync_proto::Value;
use rowsync_testkit::{on_every_store, text, Device, TestServer};
use tempfile::TempDir;

#[test]
fn a_refused_change_is_set_aside_and_the_rest_syncs() {
    on_every_store(refused_change_on);
}

fn refused_change_on(store: &rowsync_testkit::TestStore) {
    let dir = TempDir::new().unwrap();
    let server =
        TestServer::start_on(store, dir.path(), "CREATE TABLE people (id TEXT PRIMARY KEY, name TEXT, age INTEGER);");
    let device = Device::init(dir.path(), "device", &server.url());
    // SQLite lets an app store text in an INTEGER column; the server refuses it.
    device.exec(
        "INSERT INTO people VALUES ('a', 'Ann', 30);
         INSERT INTO people VALUES ('b', 'Bob', 'thirty');
         INSERT INTO people VALUES ('c', 'Cy', 40);",
    );
    let report = device.sync().unwrap();
    assert_eq!(report.rejected, 1);
    assert!(
        report.rejections[0].contains("column age: expected INTEGER but got text thirty"),
        "{:?}",
        report.rejections
    );
    assert_eq!(server.rows("SELECT id FROM people ORDER BY id"), vec![vec![text("a")], vec![text("c")]]);
    let status = device.replica().status().unwrap();
    assert_eq!((status.pending_changes, status.rejected_changes), (0, 1));
    assert!(status.last_error.unwrap().contains("set aside"));

    device.exec("UPDATE people SET age = 30 WHERE id = 'b';");
    let report = device.sync().unwrap();
    assert_eq!(report.rejected, 0);
    assert_eq!(server.rows("SELECT age FROM people WHERE id = 'b'"), vec![vec![Value::Integer(30)]]);
    assert!(device.replica().status().unwrap().last_error.is_none());
}
