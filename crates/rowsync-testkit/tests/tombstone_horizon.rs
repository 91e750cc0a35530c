//! Deletes are forgotten behind the tombstone horizon, and nothing is lost
//! or brought back by mistake: a replica offline for longer than the
//! retention downloads everything again, drops the rows the server no
//! longer has, keeps and sends its own pending writes, and is told of an
//! edit that may be older than a forgotten delete instead of reviving its row.

use std::time::Duration;

use rowsync_proto::Value;
use rowsync_testkit::{eventually, integrity_check, on_every_store, text, Device, TestServer, TestStore};
use tempfile::TempDir;

const SCHEMA: &str = "CREATE TABLE contacts (id TEXT PRIMARY KEY, name TEXT, phone TEXT);";

#[test]
fn a_replica_offline_past_the_horizon_comes_back_converges_and_loses_nothing() {
    on_every_store(offline_past_the_horizon);
}

fn offline_past_the_horizon(store: &TestStore) {
    let dir = TempDir::new().unwrap();
    let server = TestServer::start_configured(store, dir.path(), SCHEMA, |config| {
        config.tombstone_retention = Some(Duration::from_millis(800));
    });
    let laptop = Device::init(dir.path(), "laptop", &server.url());
    let phone = Device::init(dir.path(), "phone", &server.url());
    laptop.exec(
        "INSERT INTO contacts VALUES ('r1', 'Ada', '1'), ('r2', 'Bob', '2'), ('r3', 'Cy', '3'),
                                     ('r4', 'Di', '4'), ('r5', 'Ed', '5');",
    );
    laptop.sync().unwrap();
    phone.sync().unwrap();

    // The phone goes offline. An edit made before the laptop's deletes...
    phone.exec("UPDATE contacts SET phone = '2-old' WHERE id = 'r2';");
    std::thread::sleep(Duration::from_millis(10));
    laptop.exec("DELETE FROM contacts WHERE id IN ('r1', 'r2', 'r3');");
    laptop.sync().unwrap();
    std::thread::sleep(Duration::from_millis(10));
    // ... and writes made after them: an edit of a deleted row, a delete, a new row.
    phone.exec(
        "UPDATE contacts SET phone = '3-new' WHERE id = 'r3';
         DELETE FROM contacts WHERE id = 'r4';
         INSERT INTO contacts VALUES ('r6', 'Flo', '6');",
    );

    // The server forgets the three deletes: it keeps one row per live row.
    eventually(Duration::from_secs(20), "the server forgets the deletes", || {
        server.rows("SELECT count(*) FROM rowsync_rows") == vec![vec![Value::Integer(2)]]
    });

    let report = phone.sync().unwrap();
    assert!(report.notes.iter().any(|n| n.contains("downloads everything again")), "{:?}", report.notes);
    assert_eq!(report.rejected, 1, "the edit older than the forgotten delete: {:?}", report.rejections);
    assert!(report.rejections[0].contains("tombstone retention"), "{:?}", report.rejections);

    let expected = vec![
        vec![text("r3"), text("Cy"), text("3-new")],
        vec![text("r5"), text("Ed"), text("5")],
        vec![text("r6"), text("Flo"), text("6")],
    ];
    assert_eq!(server.rows("SELECT id, name, phone FROM contacts ORDER BY id"), expected, "on {}", store.name());
    // The phone dropped r1 (deleted on the server, nothing pending here) and
    // keeps r2, whose refused edit status reports.
    let mut on_phone = expected.clone();
    on_phone.insert(0, vec![text("r2"), text("Bob"), text("2-old")]);
    assert_eq!(phone.rows("SELECT id, name, phone FROM contacts ORDER BY id"), on_phone);
    let status = phone.replica().status().unwrap();
    assert_eq!((status.pending_changes, status.rejected_changes), (0, 1));
    assert!(status.last_error.unwrap().contains("tombstone retention"));

    laptop.sync().unwrap();
    assert_eq!(laptop.rows("SELECT id, name, phone FROM contacts ORDER BY id"), expected);
    let tablet = Device::init(dir.path(), "tablet", &server.url());
    tablet.sync().unwrap();
    assert_eq!(tablet.rows("SELECT id, name, phone FROM contacts ORDER BY id"), expected);

    // A later sync is an ordinary one, and the phone's file is whole.
    let again = phone.sync().unwrap();
    assert!(again.notes.is_empty(), "{:?}", again.notes);
    assert_eq!(integrity_check(&phone.path), "ok");
    let leftovers = phone.rows("SELECT count(*) FROM _rowsync_seen");
    assert_eq!(leftovers, vec![vec![Value::Integer(0)]], "the download's notes are cleared");
}

#[test]
fn a_copied_replica_that_pulls_everything_again_drops_rows_whose_deletes_were_forgotten() {
    let dir = TempDir::new().unwrap();
    let server = TestServer::start_configured(&TestStore::Sqlite, dir.path(), SCHEMA, |config| {
        config.tombstone_retention = Some(Duration::from_millis(500));
    });
    let laptop = Device::init(dir.path(), "laptop", &server.url());
    laptop.exec("INSERT INTO contacts VALUES ('a', 'Ada', '1'), ('b', 'Bob', '2');");
    laptop.sync().unwrap();
    // A backup of the laptop's file, restored after the delete was forgotten.
    let backup = dir.path().join("backup.db");
    laptop.plain().execute("VACUUM INTO ?", [backup.to_str().unwrap()]).unwrap();
    laptop.exec("DELETE FROM contacts WHERE id = 'a'; INSERT INTO contacts VALUES ('c', 'Cy', '3');");
    laptop.sync().unwrap();
    eventually(Duration::from_secs(20), "the server forgets the delete", || {
        server.rows("SELECT count(*) FROM rowsync_rows") == vec![vec![Value::Integer(2)]]
    });
    std::fs::copy(&backup, &laptop.path).unwrap();
    laptop.exec("INSERT INTO contacts VALUES ('d', 'Di', '4');");
    let report = laptop.sync().unwrap();
    assert!(report.notes.iter().any(|n| n.contains("took the new device id")), "{:?}", report.notes);
    let expected = vec![vec![text("b")], vec![text("c")], vec![text("d")]];
    assert_eq!(laptop.rows("SELECT id FROM contacts ORDER BY id"), expected, "a is gone, d was sent");
    assert_eq!(server.rows("SELECT id FROM contacts ORDER BY id"), expected);
}

/// Runs `between` once, after the first page of a download reached the
/// replica and before it asks for the next one.
struct PausedDownload<F: Fn()> {
    inner: rowsync_client::HttpTransport,
    between: F,
    paused: std::cell::Cell<bool>,
}

impl<F: Fn()> rowsync_client::Transport for PausedDownload<F> {
    fn schema(&self) -> Result<rowsync_proto::Schema, rowsync_client::ClientError> {
        self.inner.schema()
    }

    fn push(
        &self,
        request: &rowsync_proto::PushRequest,
    ) -> Result<rowsync_proto::PushResponse, rowsync_client::ClientError> {
        self.inner.push(request)
    }

    fn pull(
        &self,
        request: &rowsync_proto::PullRequest,
    ) -> Result<rowsync_proto::PullResponse, rowsync_client::ClientError> {
        let page = self.inner.pull(request)?;
        if !page.changes.is_empty() && !self.paused.replace(true) {
            (self.between)();
        }
        Ok(page)
    }
}

/// A row a download brought on an early page, deleted and forgotten before
/// the download passed its delete: the download begins again, and the row
/// does not stay behind.
#[test]
fn a_delete_forgotten_during_a_download_does_not_leave_its_row_behind() {
    let dir = TempDir::new().unwrap();
    let server = TestServer::start_configured(&TestStore::Sqlite, dir.path(), SCHEMA, |config| {
        config.tombstone_retention = Some(Duration::from_millis(1));
    });
    let laptop = Device::init(dir.path(), "laptop", &server.url());
    laptop.exec(
        "INSERT INTO contacts VALUES ('a', 'Ada', '1'), ('b', 'Bob', '2'), ('c', 'Cy', '3'),
                                     ('d', 'Di', '4'), ('e', 'Ed', '5');",
    );
    laptop.sync().unwrap();
    let phone = Device::init(dir.path(), "phone", &server.url());
    let mut replica = phone.replica();
    let transport = PausedDownload {
        inner: rowsync_client::HttpTransport::connect(&replica.server_access().unwrap()).unwrap(),
        between: || {
            laptop.exec("DELETE FROM contacts WHERE id = 'a';");
            laptop.sync().unwrap();
            eventually(Duration::from_secs(20), "the server forgets the delete", || {
                server.rows("SELECT count(*) FROM rowsync_rows") == vec![vec![Value::Integer(4)]]
            });
        },
        paused: std::cell::Cell::new(false),
    };
    let options = rowsync_client::SyncOptions { pull_limit: 1, ..Default::default() };
    let report = rowsync_client::sync(&mut replica, &transport, options).unwrap();
    assert!(report.notes.iter().any(|n| n.contains("downloads everything again")), "{:?}", report.notes);
    let expected: Vec<Vec<Value>> = ["b", "c", "d", "e"].iter().map(|id| vec![text(id)]).collect();
    assert_eq!(server.rows("SELECT id FROM contacts ORDER BY id"), expected);
    assert_eq!(phone.rows("SELECT id FROM contacts ORDER BY id"), expected, "row a was pulled, then forgotten");
    assert!(phone.sync().unwrap().notes.is_empty(), "a later sync is an ordinary one");
}
