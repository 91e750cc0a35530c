//! Replicas syncing through a network that breaks requests on purpose (a
//! proxy between them and the server, see `rowsync_testkit::FaultyProxy`):
//! connections cut in the middle of a request or of its answer, requests
//! delayed or sent twice, bodies cut short, 502 and 503 answers. Every
//! sync either succeeds or fails with an error that says the server could
//! not be reached or refused the request, and background agents retry by
//! themselves; nothing is lost or applied twice, and no replica takes
//! itself for a copy of another.

use std::time::Duration;

use rowsync_client::{Agent, AgentOptions, Backoff, ClientError, SyncOptions};
use rowsync_proto::{SiteId, Value};
use rowsync_testkit::{eventually, run_seeded, text, Device, FaultyProxy, TestServer, CONTACTS_SCHEMA};
use tempfile::TempDir;

const ALL: &str = "SELECT id, name, email, phone FROM contacts ORDER BY id";

/// A server, the proxy in front of it with faults on, and two devices
/// that reach the server through it.
struct Network {
    _dir: TempDir,
    server: TestServer,
    proxy: FaultyProxy,
    laptop: Device,
    phone: Device,
}

impl Network {
    fn start(seed: u64) -> Network {
        let dir = TempDir::new().unwrap();
        let server = TestServer::start(dir.path(), CONTACTS_SCHEMA);
        let proxy = FaultyProxy::start(&server.url(), seed);
        let laptop = Device::init(dir.path(), "laptop", &proxy.url());
        let phone = Device::init(dir.path(), "phone", &proxy.url());
        proxy.faults(true);
        Network { _dir: dir, server, proxy, laptop, phone }
    }
}

/// The two devices' ids (a replica that took itself for a copy has a new one).
fn sites(laptop: &Device, phone: &Device) -> [SiteId; 2] {
    [laptop.replica().site().clone(), phone.replica().site().clone()]
}

/// Syncs `device` until a round succeeds with nothing left to push; every
/// failure must be one a network can cause.
fn sync_through(device: &Device, options: SyncOptions, notes: &mut Vec<String>) -> usize {
    for attempt in 1..=200 {
        match device.sync_with(options) {
            Ok(report) => {
                notes.extend(report.notes);
                if device.pending() == 0 {
                    return attempt;
                }
            }
            Err(ClientError::Unreachable { .. } | ClientError::Protocol(_) | ClientError::Refused { .. }) => {}
            Err(other) => panic!("{}: a broken network gave {other:?}", device.name),
        }
    }
    panic!("{}: 200 syncs through the proxy did not get its writes across", device.name);
}

#[test]
fn writes_cross_a_hostile_network_once_each_and_replicas_converge() {
    run_seeded("hostile_network", 3, &[], 1, |seed| {
        let Network { _dir, server, proxy, laptop, phone } = Network::start(seed);
        let ids = sites(&laptop, &phone);
        // Batches of 40 over a backlog of 300: the next batch is read while
        // one is on its way, and answers get lost between them.
        let options = SyncOptions { push_limit: 40, pull_limit: 70, ..SyncOptions::default() };
        let mut notes = Vec::new();
        laptop.exec(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300)
             INSERT INTO contacts SELECT printf('l%03d', i), 'laptop ' || i, NULL, NULL FROM n;",
        );
        phone.exec(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 100)
             INSERT INTO contacts SELECT printf('p%03d', i), 'phone ' || i, NULL, NULL FROM n;",
        );
        let mut attempts = sync_through(&laptop, options, &mut notes);
        attempts += sync_through(&phone, options, &mut notes);
        // Each edits and deletes the other's rows, having seen them.
        phone.exec("UPDATE contacts SET phone = '555' WHERE id BETWEEN 'l100' AND 'l199'; DELETE FROM contacts WHERE id < 'l010';");
        attempts += sync_through(&phone, options, &mut notes);
        attempts += sync_through(&laptop, options, &mut notes);
        laptop.exec(
            "UPDATE contacts SET email = 'x@example.com' WHERE id LIKE 'l1%'; DELETE FROM contacts WHERE id = 'p001';",
        );
        attempts += sync_through(&laptop, options, &mut notes);
        attempts += sync_through(&phone, options, &mut notes);

        proxy.faults(false);
        for device in [&laptop, &phone, &laptop] {
            device.sync_with(options).unwrap();
        }
        let injected = proxy.injected();
        eprintln!("seed {seed}: {attempts} syncs, faults met: {injected:?}");
        assert!(notes.is_empty(), "a replica took itself for a copy: {notes:?}");
        assert_eq!(sites(&laptop, &phone), ids, "a replica took itself for a copy and took a new device id");
        assert!(injected.len() >= 5, "too few kinds of fault were met to mean anything: {injected:?}");
        let expected = server.rows(ALL);
        assert_eq!(expected.len(), 300 + 100 - 9 - 1, "rows lost or brought back");
        for device in [&laptop, &phone] {
            assert_eq!(device.rows(ALL), expected, "{} differs from the server", device.name);
            assert_eq!(device.pending(), 0);
        }
        assert_eq!(
            server.rows("SELECT count(*) FROM contacts WHERE phone = '555' AND email = 'x@example.com'"),
            vec![vec![Value::Integer(100)]],
            "both devices' edits of the same rows survive"
        );
        assert_eq!(server.rows("SELECT name FROM contacts WHERE id = 'p002'"), vec![vec![text("phone 2")]]);
    });
}

/// The background agents of two devices, syncing by themselves through the
/// same network while the app writes: they retry through every fault and
/// bring both devices to the same rows, with nothing lost.
#[test]
fn background_agents_keep_devices_in_step_through_a_hostile_network() {
    run_seeded("hostile_network_agents", 2, &[], 1, |seed| {
        let Network { _dir, server, proxy, laptop, phone } = Network::start(seed);
        let ids = sites(&laptop, &phone);
        let options = AgentOptions { backoff: Backoff { first_ms: 20, max_ms: 200 }, ..AgentOptions::default() };
        let agents = [Agent::start(&laptop.path, options).unwrap(), Agent::start(&phone.path, options).unwrap()];
        for round in 0..10 {
            laptop.exec(&format!(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 20)
                 INSERT INTO contacts SELECT printf('l%02d-%02d', {round}, i), 'laptop', NULL, NULL FROM n;"
            ));
            phone.exec(&format!("INSERT INTO contacts VALUES ('p{round:02}', 'phone', NULL, NULL);"));
            std::thread::sleep(Duration::from_millis(30));
        }
        let count = |device: &Device| device.rows("SELECT count(*) FROM contacts")[0][0].clone();
        eventually(Duration::from_secs(60), "both devices hold every write", || {
            count(&laptop) == Value::Integer(210) && count(&phone) == Value::Integer(210)
        });
        phone.exec("UPDATE contacts SET phone = '555' WHERE id LIKE 'l00-%';");
        eventually(Duration::from_secs(60), "the phone's edits on the laptop", || {
            laptop.rows("SELECT count(*) FROM contacts WHERE phone = '555'")[0][0] == Value::Integer(20)
        });
        proxy.faults(false);
        eventually(Duration::from_secs(30), "nothing pending", || laptop.pending() == 0 && phone.pending() == 0);
        let faults = proxy.injected();
        for agent in agents {
            agent.stop().unwrap();
        }
        eprintln!("seed {seed}: faults met by the agents: {faults:?}");
        let expected = server.rows(ALL);
        assert_eq!(expected.len(), 210);
        for device in [&laptop, &phone] {
            assert_eq!(device.rows(ALL), expected, "{} differs from the server", device.name);
        }
        assert_eq!(sites(&laptop, &phone), ids, "a replica took itself for a copy and took a new device id");
        assert!(faults.len() >= 5, "too few kinds of fault were met to mean anything: {faults:?}");
    });
}
