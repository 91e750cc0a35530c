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

/// A backlog of several batches: each is sent as soon as the one before is
/// answered, before that one is acknowledged. The change refused is set
/// aside from the batch it came in, not the one acknowledged meanwhile,
/// and every other row arrives.
#[test]
fn a_change_refused_in_a_batch_sent_ahead_is_the_one_set_aside() {
    let dir = TempDir::new().unwrap();
    let server = TestServer::start(dir.path(), "CREATE TABLE people (id TEXT PRIMARY KEY, name TEXT, age INTEGER);");
    let device = Device::init(dir.path(), "device", &server.url());
    device.exec(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 350)
         INSERT INTO people SELECT printf('p%03d', i), 'person ' || i, CASE i WHEN 250 THEN 'old' ELSE i END FROM n;",
    );
    let options = rowsync_client::SyncOptions { push_limit: 100, ..Default::default() };
    let watching = SentAhead {
        inner: rowsync_client::HttpTransport::new(&server.url(), None),
        replica: device.path.clone(),
        count: 0.into(),
    };
    let report = rowsync_client::sync(&mut device.replica(), &watching, options).unwrap();
    assert_eq!(report.rejected, 1, "{:?}", report.rejections);
    assert!(report.rejections[0].contains("got text old"), "{:?}", report.rejections);
    assert!(report.push_batches >= 4, "{report:?}");
    assert!(watching.count.get() >= 2, "batches sent ahead: {}", watching.count.get());
    let ids = |rows: Vec<Vec<Value>>| rows.into_iter().map(|row| row[0].clone()).collect::<Vec<_>>();
    let all: Vec<Value> = (1..=350).filter(|&i| i != 250).map(|i| text(&format!("p{i:03}"))).collect();
    assert_eq!(ids(server.rows("SELECT id FROM people ORDER BY id")), all);
    assert_eq!(device.replica().status().unwrap().pending_changes, 0);
    device.exec("UPDATE people SET age = 250 WHERE id = 'p250';");
    assert_eq!(device.sync_with(options).unwrap().rejected, 0);
    assert_eq!(server.rows("SELECT count(*) FROM people"), vec![vec![Value::Integer(350)]]);
}

/// Counts the pushes sent while entries older than theirs are still in
/// the outbox: batches sent before the one before them was acknowledged.
struct SentAhead {
    inner: rowsync_client::HttpTransport,
    replica: std::path::PathBuf,
    count: std::cell::Cell<u32>,
}

impl rowsync_client::Transport for SentAhead {
    fn schema(&self) -> Result<rowsync_proto::Schema, rowsync_client::ClientError> {
        self.inner.schema()
    }

    fn push(
        &self,
        request: &rowsync_proto::PushRequest,
    ) -> Result<rowsync_proto::PushResponse, rowsync_client::ClientError> {
        self.inner.push(request)
    }

    fn send_push(&self, request: &rowsync_proto::PushRequest) -> rowsync_client::PushInFlight<'_> {
        let first = request.changes.iter().map(|c| c.seq).min().unwrap_or(0) as i64;
        let older: i64 = rusqlite::Connection::open(&self.replica)
            .unwrap()
            .query_row(
                "SELECT count(*) FROM _rowsync_outbox WHERE op != 0 AND id + coalesce((SELECT CAST(value AS INTEGER) \
                 FROM _rowsync_meta WHERE key = 'seq_offset'), 0) < ?",
                [first],
                |row| row.get(0),
            )
            .unwrap();
        if older > 0 {
            self.count.set(self.count.get() + 1);
        }
        self.inner.send_push(request)
    }

    fn pull(
        &self,
        request: &rowsync_proto::PullRequest,
    ) -> Result<rowsync_proto::PullResponse, rowsync_client::ClientError> {
        self.inner.pull(request)
    }
}

/// Answers the first push, then loses every other one.
struct SecondPushLost {
    inner: rowsync_client::HttpTransport,
    pushes: std::cell::Cell<u32>,
}

impl rowsync_client::Transport for SecondPushLost {
    fn schema(&self) -> Result<rowsync_proto::Schema, rowsync_client::ClientError> {
        self.inner.schema()
    }

    fn push(
        &self,
        request: &rowsync_proto::PushRequest,
    ) -> Result<rowsync_proto::PushResponse, rowsync_client::ClientError> {
        self.pushes.set(self.pushes.get() + 1);
        if self.pushes.get() > 1 {
            return Err(rowsync_client::ClientError::Unreachable { url: "test".into(), detail: "lost".into() });
        }
        self.inner.push(request)
    }

    fn pull(
        &self,
        request: &rowsync_proto::PullRequest,
    ) -> Result<rowsync_proto::PullResponse, rowsync_client::ClientError> {
        self.inner.pull(request)
    }
}

/// Setting aside the newest outbox entry must not let its id be handed out
/// again: the next write would go unstamped (pushed with an old version, so
/// ignored) or reuse a sequence number, and never arrive.
#[test]
fn a_write_after_the_newest_entry_was_set_aside_still_arrives() {
    let dir = TempDir::new().unwrap();
    let server = TestServer::start(dir.path(), "CREATE TABLE people (id TEXT PRIMARY KEY, name TEXT, age INTEGER);");
    let device = Device::init(dir.path(), "device", &server.url());
    device.exec("INSERT INTO people VALUES ('a', 'Ann', 30); INSERT INTO people VALUES ('z', 'Zed', 40);");
    device.sync().unwrap();
    // The refused write is the newest entry; the push after setting it aside is lost.
    device.exec("UPDATE people SET age = 41 WHERE id = 'z'; UPDATE people SET age = 'old' WHERE id = 'a';");
    let flaky = SecondPushLost { inner: rowsync_client::HttpTransport::new(&server.url(), None), pushes: 0.into() };
    let outcome = rowsync_client::sync(&mut device.replica(), &flaky, rowsync_client::SyncOptions::default());
    assert!(outcome.unwrap_err().is_unreachable());
    device.exec("UPDATE people SET name = 'Zed Z.' WHERE id = 'z';");
    device.sync().unwrap();
    assert_eq!(
        server.rows("SELECT id, name FROM people ORDER BY id"),
        vec![vec![text("a"), text("Ann")], vec![text("z"), text("Zed Z.")]]
    );
    assert_eq!(device.replica().status().unwrap().pending_changes, 0);
}
