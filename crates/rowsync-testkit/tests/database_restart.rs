//! The server's database goes away in the middle of a run and comes back:
//! requests fail with 503 and a clear error meanwhile, clients keep their
//! changes queued and retry, the server recovers by itself, and everything
//! ends converged. The database server is also killed with SIGKILL while
//! pushes are applied, as a crash does: every write the app committed is in
//! the database once afterwards. (The embedded SQLite store has no server
//! to lose; `rowsync-cli`'s `kills.rs` kills the process that holds it.)

use std::sync::Mutex;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rowsync_proto::Value;
use rowsync_testkit::{run_seeded, server_stores, Device, TestServer, TestStore, CONTACTS_SCHEMA};
use tempfile::TempDir;

const ALL: &str = "SELECT id, name, email, phone FROM contacts ORDER BY id";
/// The tests here take the run's database servers away: one at a time.
static DATABASES: Mutex<()> = Mutex::new(());

/// Syncs `device` until it succeeds: the server's connections to a
/// database that came back are made again as requests need them.
fn sync_until_done(store: &TestStore, device: &Device) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match device.sync() {
            Ok(_) => return,
            Err(e) if e.is_unreachable() && Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
            Err(e) => panic!("{}: {} did not recover: {e}", store.name(), device.name),
        }
    }
}

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
    for device in [&laptop, &phone, &laptop] {
        sync_until_done(store, device);
    }
    let expected = server.rows(ALL);
    assert_eq!(expected.len(), 3, "{}", store.name());
    assert_eq!(laptop.rows(ALL), expected);
    assert_eq!(phone.rows(ALL), expected);
    assert_eq!(server.rows("SELECT count(*) FROM contacts"), vec![vec![Value::Integer(3)]]);
}

#[test]
fn a_database_restart_mid_run_ends_converged() {
    let _alone = DATABASES.lock().unwrap_or_else(|e| e.into_inner());
    for store in server_stores() {
        restart_on(&store);
    }
}

const KILLS: usize = 20;
const BACKLOG: usize = 2_000;

/// The app commits `count` new contacts in one transaction.
fn app_writes(device: &Device, next: &mut usize, count: usize) {
    let mut app = device.plain();
    let tx = app.transaction().unwrap();
    for _ in 0..count {
        *next += 1;
        tx.execute("INSERT INTO contacts (id, name) VALUES (?, 'x')", [format!("c{next:06}")]).unwrap();
    }
    tx.commit().unwrap();
}

/// The database server of `store` killed with SIGKILL [`KILLS`] times,
/// each at a random moment of a push (drawn within the time one takes
/// alone), and started again.
fn kills_on(store: &TestStore, rng: &mut StdRng) {
    let dir = TempDir::new().unwrap();
    let server = TestServer::start_on(store, dir.path(), CONTACTS_SCHEMA);
    let laptop = Device::init(dir.path(), "laptop", &server.url());
    let mut next = 0;
    app_writes(&laptop, &mut next, BACKLOG);
    let started = Instant::now();
    laptop.sync().unwrap();
    let push = started.elapsed();
    let mut landed = 0;
    for _ in 0..KILLS {
        app_writes(&laptop, &mut next, BACKLOG);
        let pushing = Device { name: laptop.name.clone(), path: laptop.path.clone() };
        let sync = std::thread::spawn(move || pushing.sync().map(|_| ()));
        std::thread::sleep(Duration::from_millis(rng.gen_range(1..=(push.as_millis() as u64 * 9 / 10).max(2))));
        landed += !sync.is_finished() as usize;
        store.control("kill");
        store.control("start");
        if let Err(e) = sync.join().unwrap() {
            assert!(e.is_unreachable(), "{}: a push met the database's death with {e}", store.name());
        }
    }
    sync_until_done(store, &laptop);
    let phone = Device::init(dir.path(), "phone", &server.url());
    sync_until_done(store, &phone);
    eprintln!("{}: {landed}/{KILLS} kills of the database landed mid-push (a push alone: {push:?})", store.name());
    let expected = server.rows(ALL);
    assert_eq!(expected.len(), next, "{}: writes lost or doubled", store.name());
    assert_eq!(laptop.rows(ALL), expected, "{}", store.name());
    assert_eq!(phone.rows(ALL), expected, "{}", store.name());
    assert_eq!(laptop.pending(), 0, "{}", store.name());
    assert!(landed >= KILLS / 4, "{}: too few kills landed mid-push: {landed}/{KILLS}", store.name());
}

#[test]
fn a_database_server_killed_during_pushes_loses_nothing_and_doubles_nothing() {
    let _alone = DATABASES.lock().unwrap_or_else(|e| e.into_inner());
    run_seeded("database kills", 1, &[], 1, |seed| {
        let mut rng = StdRng::seed_from_u64(seed);
        for store in server_stores() {
            kills_on(&store, &mut rng);
        }
    });
}

/// A PostgreSQL database switched to read-only (as for maintenance, or a
/// standby promoted the wrong way round): pushes get 503 with a clear
/// error, the changes stay queued, and sync resumes once it takes writes.
#[test]
fn a_read_only_database_answers_503_and_nothing_is_lost() {
    let _alone = DATABASES.lock().unwrap_or_else(|e| e.into_inner());
    let store = server_stores().into_iter().find(|store| store.name() == "postgres").expect("the PostgreSQL store");
    let dir = TempDir::new().unwrap();
    let server = TestServer::start_on(&store, dir.path(), CONTACTS_SCHEMA);
    let laptop = Device::init(dir.path(), "laptop", &server.url());
    laptop.exec("INSERT INTO contacts VALUES ('a', 'Ada', NULL, '1');");
    // New sessions are read-only; the server's pooled ones are ended, and
    // come back read-only.
    let sessions = "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                    WHERE datname = current_database() AND pid <> pg_backend_pid()";
    server.exec(&format!(
        "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET default_transaction_read_only = on', current_database()); \
         END $$; {sessions}"
    ));
    let deadline = Instant::now() + Duration::from_secs(30);
    let refusal = loop {
        let error = laptop.sync().expect_err("a push into a read-only database succeeded");
        assert!(error.is_unreachable(), "{error}");
        if error.to_string().contains("read-only") || Instant::now() > deadline {
            break error.to_string();
        }
    };
    assert!(refusal.contains("the server's database is read-only"), "{refusal}");
    assert_eq!(laptop.pending(), 1, "the change stays queued");

    server.exec(&format!(
        "BEGIN READ WRITE; DO $$ BEGIN EXECUTE format('ALTER DATABASE %I RESET default_transaction_read_only', \
         current_database()); END $$; COMMIT; {sessions}"
    ));
    sync_until_done(&store, &laptop);
    assert_eq!(server.rows("SELECT count(*) FROM contacts"), vec![vec![Value::Integer(1)]]);
    assert_eq!(laptop.pending(), 0);
}
