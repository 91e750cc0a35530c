//! Rows and requests larger than the limits: a body over the server's limit
//! gets its 413 (not a broken connection), and huge rows neither stall the
//! queue behind them nor blow up memory.

use std::cell::Cell;

use rowsync_client::{sync, ClientError, HttpTransport, SyncOptions, Transport};
use rowsync_proto::{PullRequest, PullResponse, PushRequest, PushResponse, SiteId, Value};
use rowsync_server::http::PAGE_BYTES;
use rowsync_testkit::{on_every_store, text, Device, TestServer, TestStore, CONTACTS_SCHEMA};
use tempfile::TempDir;

#[test]
fn a_body_over_the_limit_gets_a_413_even_from_a_client_that_sends_it_whole() {
    let dir = TempDir::new().unwrap();
    let server = TestServer::start_configured(&TestStore::Sqlite, dir.path(), CONTACTS_SCHEMA, |config| {
        config.limits.body_bytes = 64 * 1024;
    });
    // ureq writes the whole body before reading the answer, as most clients do.
    let body = vec![b' '; 16 * 1024 * 1024];
    let answer =
        ureq::post(&format!("{}/v1/push", server.url())).set("Content-Type", "application/json").send_bytes(&body);
    match answer {
        Err(ureq::Error::Status(413, response)) => {
            let text = response.into_string().unwrap();
            assert!(text.contains("\"code\":\"body_too_large\""), "{text}");
        }
        Err(other) => panic!("expected a 413, got {other}"),
        Ok(response) => panic!("expected a 413, got {}", response.status()),
    }
    // The server still answers.
    assert_eq!(ureq::get(&format!("{}/health", server.url())).call().unwrap().status(), 200);
}

/// A 100 MB body against the default limits, over a real socket: 413, and
/// the server (and its memory) stays fine for the next request.
#[test]
fn a_100_mb_body_gets_a_413_under_the_default_limits() {
    let dir = TempDir::new().unwrap();
    let server = TestServer::start_on(&TestStore::Sqlite, dir.path(), CONTACTS_SCHEMA);
    let body = vec![b'['; 100 * 1000 * 1000];
    let answer =
        ureq::post(&format!("{}/v1/push", server.url())).set("Content-Type", "application/json").send_bytes(&body);
    match answer {
        Err(ureq::Error::Status(413, response)) => {
            let text = response.into_string().unwrap();
            assert!(text.contains("larger than the 33554432 bytes"), "{text}");
        }
        Err(other) => panic!("expected a 413, got {other}"),
        Ok(response) => panic!("expected a 413, got {}", response.status()),
    }
    let device = Device::init(dir.path(), "device", &server.url());
    device.plain().execute("INSERT INTO contacts (id, name) VALUES ('c1', 'Ada')", []).unwrap();
    assert_eq!(device.sync().unwrap().pushed, 1, "the server still takes pushes");
}

/// Counts the bytes of every push it passes on.
struct Measured {
    inner: HttpTransport,
    largest: Cell<usize>,
}

impl Transport for Measured {
    fn schema(&self) -> Result<rowsync_proto::Schema, ClientError> {
        self.inner.schema()
    }

    fn push(&self, request: &PushRequest) -> Result<PushResponse, ClientError> {
        self.largest.set(self.largest.get().max(serde_json::to_vec(request).unwrap().len()));
        self.inner.push(request)
    }

    fn pull(&self, request: &PullRequest) -> Result<PullResponse, ClientError> {
        self.inner.pull(request)
    }
}

const FILES: &str = "CREATE TABLE files (id TEXT PRIMARY KEY, name TEXT NOT NULL, body BLOB);";

/// Regression: 2,000 rows of 20 KB made one 53 MB push, over the server's
/// limit, and the queue never moved. Batches are bounded by bytes too.
#[test]
fn a_backlog_of_large_rows_goes_out_in_batches_bounded_by_bytes() {
    on_every_store(|store| {
        let dir = TempDir::new().unwrap();
        let server = TestServer::start_on(store, dir.path(), FILES);
        let device = Device::init(dir.path(), "device", &server.url());
        let app = device.plain();
        app.execute_batch("BEGIN").unwrap();
        for i in 0..2_000 {
            let body: Vec<u8> = (0..20_000).map(|b| (b * 7 + i) as u8).collect();
            app.execute("INSERT INTO files VALUES (?, 'f', ?)", rusqlite::params![format!("{i:04}"), body]).unwrap();
        }
        app.execute_batch("COMMIT").unwrap();
        let transport = Measured { inner: HttpTransport::new(&server.url(), None), largest: Cell::new(0) };
        let options = SyncOptions::default();
        let report = sync(&mut device.replica(), &transport, options).unwrap();
        assert_eq!((report.pushed, report.rejected), (2_000, 0));
        assert!(report.push_batches >= 10, "{} batches", report.push_batches);
        let largest = transport.largest.get();
        assert!(largest <= options.push_bytes + 64 * 1024, "a push of {largest} bytes");
        assert_eq!(server.rows("SELECT count(*) FROM files"), vec![vec![Value::Integer(2_000)]]);
        assert_eq!(device.pending(), 0);
    });
}

/// Regression: one value larger than the server's limit blocked the whole
/// queue behind it, reported as "cannot reach the server". It is set aside
/// with its reason; everything else syncs.
#[test]
fn a_row_larger_than_the_server_accepts_is_set_aside_and_the_rest_syncs() {
    let dir = TempDir::new().unwrap();
    let server = TestServer::start_configured(&TestStore::Sqlite, dir.path(), FILES, |config| {
        config.limits.body_bytes = 1024 * 1024;
    });
    let device = Device::init(dir.path(), "device", &server.url());
    let app = device.plain();
    app.execute("INSERT INTO files VALUES ('a', 'before', NULL)", []).unwrap();
    app.execute("INSERT INTO files VALUES ('huge', 'too big', ?)", [vec![1u8; 3 * 1024 * 1024]]).unwrap();
    app.execute("INSERT INTO files VALUES ('z', 'after', NULL)", []).unwrap();
    let report = device.sync().unwrap();
    assert_eq!(report.rejected, 1, "{report:?}");
    assert!(report.rejections[0].contains("more than the server accepts"), "{:?}", report.rejections);
    assert_eq!(server.rows("SELECT id FROM files ORDER BY id"), vec![vec![text("a")], vec![text("z")]]);
    let status = device.replica().status().unwrap();
    assert_eq!((status.pending_changes, status.rejected_changes), (0, 1));
    assert!(status.last_error.unwrap().contains("set aside"));
}

/// Regression: a page of 60 rows of 5 MB held them all in memory on both
/// sides. A page carries at most `PAGE_BYTES` of states beyond its first
/// row; the client pages through.
#[test]
fn pull_pages_are_bounded_by_bytes() {
    on_every_store(|store| {
        let dir = TempDir::new().unwrap();
        let server = TestServer::start_on(store, dir.path(), FILES);
        let writer = Device::init(dir.path(), "writer", &server.url());
        let app = writer.plain();
        let big = vec![9u8; 1024 * 1024];
        for i in 0..12 {
            app.execute("INSERT INTO files VALUES (?, 'big', ?)", rusqlite::params![format!("{i:02}"), big]).unwrap();
        }
        writer.sync().unwrap();

        let plain = HttpTransport::new(&server.url(), None);
        let stranger = SiteId::from_bytes([3; 16]);
        let mut cursor = 0;
        let mut pages = 0;
        let mut rows = 0;
        loop {
            let page = plain
                .pull(&PullRequest { site: stranger.clone(), cursor, limit: 1_000, known: None, full: None })
                .unwrap();
            let bytes: usize = page.changes.iter().map(|c| serde_json::to_vec(c).unwrap().len()).sum();
            let first = page.changes.first().map_or(0, |c| serde_json::to_vec(c).unwrap().len());
            assert!(bytes - first <= PAGE_BYTES, "a page of {} rows and {bytes} bytes", page.changes.len());
            rows += page.changes.len();
            pages += 1;
            cursor = page.cursor;
            if !page.more {
                break;
            }
        }
        assert_eq!(rows, 12);
        assert!(pages >= 4, "12 rows of 1.3 MB as JSON fit in {pages} pages");

        let reader = Device::init(dir.path(), "reader", &server.url());
        reader.sync().unwrap();
        assert_eq!(
            reader.rows("SELECT count(*), sum(length(body)) FROM files"),
            vec![vec![Value::Integer(12), Value::Integer(12 * 1024 * 1024)]]
        );
    });
}
