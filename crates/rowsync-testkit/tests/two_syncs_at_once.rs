//! Two syncs of one replica file at once (a background agent and a manual
//! `rowsync sync`, two shells): one sync at a time per file, and an
//! acknowledgement never removes an outbox entry its batch did not send.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rowsync_client::outbox::{acknowledge, next_batch};
use rowsync_client::{ClientError, HttpTransport, SyncOptions, Transport};
use rowsync_testkit::{text, Device, TestServer, CONTACTS_SCHEMA};
use tempfile::TempDir;

/// Regression: the outbox emptied, SQLite handed ids out again from 1, and a
/// late acknowledgement of an earlier batch ("up to id 3") deleted new
/// writes that had never been sent.
#[test]
fn a_late_acknowledgement_removes_only_what_its_batch_sent() {
    let dir = TempDir::new().unwrap();
    let server = TestServer::start(dir.path(), CONTACTS_SCHEMA);
    let device = Device::init(dir.path(), "a", &server.url());
    device.exec("INSERT INTO contacts (id, name) VALUES ('1', 'one'), ('2', 'two'), ('3', 'three');");

    // One process reads a batch and sends it; its answer is slow to come back.
    let slow = device.replica();
    let batch = next_batch(&slow, 0, 100, usize::MAX).unwrap().unwrap();
    let answer = HttpTransport::new(&server.url(), None).push(&batch.request).unwrap();
    // Meanwhile another process syncs the file, and the app writes again.
    device.sync().unwrap();
    device.exec("INSERT INTO contacts (id, name) VALUES ('4', 'four'), ('5', 'five');");
    // The late acknowledgement arrives.
    acknowledge(&slow, &batch, answer.acked_seq).unwrap();

    assert_eq!(device.pending(), 2, "the new writes are still queued");
    device.sync().unwrap();
    let ids: Vec<_> = server.rows("SELECT id FROM contacts ORDER BY id").into_iter().map(|r| r[0].clone()).collect();
    assert_eq!(ids, ["1", "2", "3", "4", "5"].map(text));
}

/// As found from the command line: an app inserting one row per commit
/// while two syncs of the same file run in a loop.
#[test]
fn an_app_writing_while_two_syncs_loop_loses_nothing() {
    let dir = TempDir::new().unwrap();
    let server = TestServer::start(dir.path(), CONTACTS_SCHEMA);
    let device = Device::init(dir.path(), "a", &server.url());
    let writing = AtomicBool::new(true);
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                while writing.load(Ordering::Relaxed) {
                    device.sync().unwrap();
                }
            });
        }
        let app = device.plain();
        for i in 0..1000 {
            app.execute("INSERT INTO contacts (id, name) VALUES (?, 'x')", [format!("row{i:04}")]).unwrap();
            if i % 10 == 0 {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        writing.store(false, Ordering::Relaxed);
    });
    device.sync().unwrap();
    assert_eq!(device.pending(), 0);
    assert_eq!(server.rows("SELECT count(*) FROM contacts"), vec![vec![rowsync_proto::Value::Integer(1000)]]);
}

#[test]
fn a_second_sync_waits_for_the_first_and_a_killed_holder_blocks_nobody() {
    let dir = TempDir::new().unwrap();
    let server = TestServer::start(dir.path(), CONTACTS_SCHEMA);
    let device = Device::init(dir.path(), "a", &server.url());
    device.exec("INSERT INTO contacts (id, name) VALUES ('1', 'one');");
    let lock = rowsync_client::lock::lock_path(&device.path);
    // Another process holds the lock (flock(2), as rowsync takes it on Unix).
    let hold = "import fcntl, sys, time\nf = open(sys.argv[1], 'a')\nfcntl.flock(f, fcntl.LOCK_EX)\nprint('held', flush=True)\ntime.sleep(60)";
    let mut holder = Command::new("python3")
        .args(["-c", hold])
        .arg(&lock)
        .stdout(Stdio::piped())
        .spawn()
        .expect("run python3 to hold the lock from another process");
    // Only once it says so (python3 may take a while to start on a busy machine).
    let mut said = String::new();
    BufReader::new(holder.stdout.take().unwrap()).read_line(&mut said).unwrap();
    assert_eq!(said.trim(), "held");
    let options = SyncOptions { lock_wait: Duration::from_millis(200), ..SyncOptions::default() };
    let busy = device.sync_with(options).unwrap_err();
    assert!(matches!(busy, ClientError::Busy { .. }), "{busy}");
    assert_eq!(device.pending(), 1, "nothing was done");
    // SIGKILL: the OS releases the lock of a dead process.
    holder.kill().unwrap();
    holder.wait().unwrap();
    device.sync_with(options).unwrap();
    assert_eq!(device.pending(), 0);
}
