//! Many replicas pushing at once while others pull, through two server
//! instances on one database, on every store: every replica ends with
//! exactly the server's rows, nothing missing and nothing applied twice.
//! Run again with a delay inside every push transaction: a slow transaction
//! must never let a puller's cursor pass a change that commits later.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use rowsync_client::SyncOptions;
use rowsync_proto::Value;
use rowsync_testkit::{on_every_store, Device, TestServer, TestStore, CONTACTS_SCHEMA};
use tempfile::TempDir;

const PUSHERS: usize = 8;
const PULLERS: usize = 4;
const ROWS_PER_PUSHER: usize = 2_000;
const ALL: &str = "SELECT id, name, email, phone FROM contacts ORDER BY id";

fn many_writers(store: &TestStore, push_delay: Option<Duration>) {
    let started = std::time::Instant::now();
    let dir = TempDir::new().unwrap();
    let server = TestServer::start_with_delay(store, dir.path(), CONTACTS_SCHEMA, push_delay);
    let second = server.another_instance();
    let urls = [server.url(), second.url()];
    let options = SyncOptions { pull_limit: 300, push_limit: 250, ..SyncOptions::default() };

    let pushers: Vec<Device> =
        (0..PUSHERS).map(|i| Device::init(dir.path(), &format!("pusher{i}"), &urls[i % 2])).collect();
    let pullers: Vec<Device> =
        (0..PULLERS).map(|i| Device::init(dir.path(), &format!("puller{i}"), &urls[(i + 1) % 2])).collect();
    for (i, device) in pushers.iter().enumerate() {
        device.exec(&format!(
            "WITH RECURSIVE n(k) AS (SELECT 1 UNION ALL SELECT k + 1 FROM n WHERE k < {ROWS_PER_PUSHER})
             INSERT INTO contacts SELECT printf('p{i}-%05d', k), 'pusher {i}', NULL, k FROM n;"
        ));
    }

    let pushing_done = Arc::new(AtomicBool::new(false));
    thread::scope(|scope| {
        let puller_threads: Vec<_> = pullers
            .iter()
            .map(|device| {
                let done = pushing_done.clone();
                scope.spawn(move || {
                    while !done.load(Ordering::SeqCst) {
                        device.sync_with(options).unwrap();
                        thread::sleep(Duration::from_millis(20));
                    }
                })
            })
            .collect();
        let pusher_threads: Vec<_> = pushers
            .iter()
            .enumerate()
            .map(|(i, device)| {
                scope.spawn(move || {
                    // Pushers also edit a few shared rows, so batches conflict.
                    for round in 0..3 {
                        device.exec(&format!(
                            "INSERT OR REPLACE INTO contacts VALUES ('shared-{round}', 'from {i}', 'round {round}', NULL);"
                        ));
                        device.sync_with(options).unwrap();
                    }
                    while device.pending() > 0 {
                        device.sync_with(options).unwrap();
                    }
                })
            })
            .collect();
        for handle in pusher_threads {
            handle.join().unwrap();
        }
        pushing_done.store(true, Ordering::SeqCst);
        for handle in puller_threads {
            handle.join().unwrap();
        }
    });
    for device in pushers.iter().chain(&pullers) {
        device.sync_with(options).unwrap();
    }

    let expected = server.rows(ALL);
    assert_eq!(expected.len(), PUSHERS * ROWS_PER_PUSHER + 3, "{}: rows missing or duplicated", store.name());
    assert_eq!(
        server.rows("SELECT count(*) FROM rowsync_rows"),
        vec![vec![Value::Integer(expected.len() as i64)]],
        "{}: the change log holds one entry per row",
        store.name()
    );
    for device in pushers.iter().chain(&pullers) {
        assert!(device.rows(ALL) == expected, "{}: {} differs from the server", store.name(), device.name);
        assert_eq!(device.pending(), 0);
    }
    eprintln!("{} with push delay {push_delay:?}: {:?}", store.name(), started.elapsed());
}

#[test]
fn eight_pushers_and_four_pullers_through_two_servers_converge() {
    on_every_store(|store| many_writers(store, None));
}

#[test]
fn a_slow_push_transaction_never_lets_a_cursor_skip_a_change() {
    on_every_store(|store| many_writers(store, Some(Duration::from_millis(15))));
}
