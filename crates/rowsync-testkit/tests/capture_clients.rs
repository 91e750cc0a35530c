//! Capture works for every SQLite client, including libraries older than
//! ours: the sqlite3 shell and Python's sqlite3 module (3.40 on Debian 12)
//! write to a replica, and every write reaches the server.

use std::process::Command;

use rowsync_proto::Value;
use rowsync_testkit::{text, Device, TestServer};
use tempfile::TempDir;

const SCHEMA: &str = "
CREATE TABLE contacts (id TEXT PRIMARY KEY, name TEXT NOT NULL, email TEXT, phone TEXT);
CREATE TABLE memberships (contact_id TEXT NOT NULL, group_name TEXT NOT NULL, since INTEGER, PRIMARY KEY (contact_id, group_name));
";

fn run(program: &str, args: &[&str]) {
    let output = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} ({e}); install it: apt-get install sqlite3 python3"));
    assert!(output.status.success(), "{program} failed: {}", String::from_utf8_lossy(&output.stderr));
}

#[test]
fn writes_from_the_sqlite3_shell_and_python_are_captured() {
    let dir = TempDir::new().unwrap();
    let server = TestServer::start(dir.path(), SCHEMA);
    let device = Device::init(dir.path(), "device", &server.url());
    let other = Device::init(dir.path(), "other", &server.url());
    let path = device.path.to_str().unwrap();

    run(
        "sqlite3",
        &[
            path,
            "INSERT INTO contacts VALUES ('s1', 'Shell One', NULL, '1');
             INSERT INTO contacts VALUES ('s2', 'Shell Two', 'two@x', NULL);
             UPDATE contacts SET email = 'one@x' WHERE id = 's1';
             INSERT INTO memberships VALUES ('s1', 'family', 2020), ('s2', 'work', NULL);
             UPDATE memberships SET since = 2021 WHERE contact_id = 's1';",
        ],
    );
    let script = "
import sqlite3, sys
db = sqlite3.connect(sys.argv[1])
db.execute(\"INSERT INTO contacts VALUES ('p1', 'Python', 'py@x', '3')\")
db.execute(\"DELETE FROM contacts WHERE id = 's2'\")
db.execute(\"DELETE FROM memberships WHERE contact_id = 's2'\")
db.execute(\"UPDATE contacts SET id = 'p2' WHERE id = 'p1'\")
db.commit()
";
    run("python3", &["-c", script, path]);
    assert_eq!(
        device.pending(),
        11,
        "6 writes from the shell, 5 outbox entries from Python (a key change is a delete and an insert)"
    );

    device.sync().unwrap();
    other.sync().unwrap();
    let contacts = "SELECT id, name, email, phone FROM contacts ORDER BY id";
    let expected = vec![
        vec![text("p2"), text("Python"), text("py@x"), text("3")],
        vec![text("s1"), text("Shell One"), text("one@x"), text("1")],
    ];
    assert_eq!(server.rows(contacts), expected);
    assert_eq!(other.rows(contacts), expected);
    let memberships = "SELECT contact_id, group_name, since FROM memberships";
    assert_eq!(server.rows(memberships), vec![vec![text("s1"), text("family"), Value::Integer(2021)]]);
    assert_eq!(other.rows(memberships), server.rows(memberships));
}

/// JSON has no blobs: a blob in a composite key once made the capture
/// trigger fail the app's own INSERT ("JSON cannot hold BLOB values"). The
/// write now succeeds; the server refuses the key's type, so the change is
/// set aside with the reason and everything else syncs.
#[test]
fn a_blob_in_a_composite_key_never_fails_the_apps_write() {
    let dir = TempDir::new().unwrap();
    let server = TestServer::start(dir.path(), SCHEMA);
    let device = Device::init(dir.path(), "device", &server.url());
    let path = device.path.to_str().unwrap();
    run(
        "sqlite3",
        &[
            path,
            "INSERT INTO contacts VALUES ('s1', 'Shell One', NULL, '1');
             INSERT INTO memberships VALUES (x'00ff', 'family', 2020);
             INSERT INTO memberships VALUES ('s1', 'work', 2021);",
        ],
    );
    let report = device.sync().unwrap();
    assert_eq!(report.rejected, 1, "{report:?}");
    assert!(report.rejections[0].contains("contact_id"), "{:?}", report.rejections);
    assert_eq!(server.rows("SELECT contact_id, group_name FROM memberships"), vec![vec![text("s1"), text("work")]]);
    let status = device.replica().status().unwrap();
    assert_eq!((status.pending_changes, status.rejected_changes), (0, 1));
}
