//! The server's database goes away in the middle of a run and comes back:
//! requests fail with 503 and a clear error meanwhile, clients keep their
//! changes queued and retry, the server recovers by itself, and everything
//! ends converged. (The embedded SQLite store has no server to lose.)

use std::time::{Duration, Instant};

use rowsync_proto::Value;
use rowsync_testkit::{server_stores, Device, TestServer, TestStore, CONTACTS_SCHEMA};
use tempfile::TempDir;

const ALL: &str = "SELECT id, name, email, phone FROM contacts ORDER BY id";

fn restart_on(store: &TestStore) {
    let dir = TempDir::new().unwrap();
    let server = TestServer::start_on(store, dir.path(), CONTACTS_SCHEMA);
    let laptop = Device::init(dir.path(), "laptop", &server.url());
    let phone = Device::init(dir.path(), "phone", &server.url());
    laptop.exec("INSERT INTO contacts VALUES ('a', 'Ada', NULL, '1');");
    laptop.sync().unwrap();

    store.control("stop");
    laptop.exec("INSERT INTO contacts VALUES ('b', 'Bo', NULL, '2');");
    phone.exec("INSERT INTO contacts VALUES ('c', 'Cy', NULL, '3');");
    let err = laptop.sync().unwrap_err();
    assert!(err.is_unreachable(), "{}: {err}", store.name());
    assert!(err.to_string().contains("database cannot be reached"), "{}: {err}", store.name());
    assert_eq!(laptop.pending(), 1, "the change stays queued");
    let health = ureq::get(&format!("{}/health", server.url())).call();
    assert!(matches!(health, Err(ureq::Error::Status(503, _))), "{}: /health must say 503", store.name());

    store.control("start");
    // The same server process recovers by itself; clients just retry.
    let deadline = Instant::now() + Duration::from_secs(60);
    for device in [&laptop, &phone, &laptop] {
        loop {
            match device.sync() {
                Ok(_) => break,
                Err(e) if e.is_unreachable() && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(200))
                }
                Err(e) => panic!("{}: {} did not recover: {e}", store.name(), device.name),
            }
        }
    }
    let expected = server.rows(ALL);
    assert_eq!(expected.len(), 3, "{}", store.name());
    assert_eq!(laptop.rows(ALL), expected);
    assert_eq!(phone.rows(ALL), expected);
    assert_eq!(server.rows("SELECT count(*) FROM contacts"), vec![vec![Value::Integer(3)]]);
}

#[test]
fn a_database_restart_mid_run_ends_converged() {
    for store in server_stores() {
        restart_on(&store);
    }
}
