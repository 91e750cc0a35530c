//! The app keeps writing while rowsync syncs, and random offline edits on
//! three devices converge whatever the sync order. The randomized test
//! runs fixed seeds; a failure prints its seed, replayed with ROWSYNC_SEED=<seed>.

use std::thread;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rowsync_proto::Value;
use rowsync_testkit::{on_every_store, run_seeded, Device, TestServer, TestStore, CONTACTS_SCHEMA};
use tempfile::TempDir;

const ALL: &str = "SELECT id, name, email, phone FROM contacts ORDER BY id";

#[test]
fn writes_made_while_syncing_are_all_captured_and_synced() {
    let dir = TempDir::new().unwrap();
    let server = TestServer::start(dir.path(), CONTACTS_SCHEMA);
    let device = Device::init(dir.path(), "busy", &server.url());
    let other = Device::init(dir.path(), "other", &server.url());
    let app_path = device.path.clone();
    let writer = thread::spawn(move || {
        let conn = rusqlite::Connection::open(app_path).unwrap();
        conn.busy_timeout(Duration::from_secs(10)).unwrap();
        for i in 0..1500 {
            conn.execute("INSERT INTO contacts VALUES (?, 'n', NULL, NULL)", [format!("c{i:05}")]).unwrap();
            if i % 3 == 0 {
                conn.execute("UPDATE contacts SET phone = ? WHERE id = ?", [format!("p{i}"), format!("c{:05}", i / 2)])
                    .unwrap();
            }
        }
    });
    while !writer.is_finished() {
        device.sync().unwrap();
    }
    writer.join().unwrap();
    device.sync().unwrap();
    other.sync().unwrap();
    assert_eq!(server.rows("SELECT count(*) FROM contacts"), vec![vec![Value::Integer(1500)]]);
    assert_eq!(device.rows(ALL), server.rows(ALL));
    assert_eq!(other.rows(ALL), server.rows(ALL));
    assert_eq!(device.pending(), 0);
}

/// The last value written to each column of each row, in real-time order:
/// what field-level last-writer-wins must produce for rows never deleted.
type Oracle = std::collections::BTreeMap<String, [Option<Value>; 3]>;

const COLUMNS: [&str; 3] = ["name", "email", "phone"];

fn read_row(device: &Device, key: &str) -> Option<Vec<Value>> {
    device.rows(&format!("SELECT name, email, phone FROM contacts WHERE id = '{key}'")).into_iter().next()
}

/// One random edit on one device. Keys k0..k3 are never deleted, so their
/// final cells can be checked against the oracle; k4 and k5 also see deletes.
fn random_edit(rng: &mut StdRng, device: &Device, oracle: &mut Oracle) {
    let n = rng.gen_range(0..6);
    let key = format!("k{n}");
    let value = format!("v{}", rng.gen_range(0..1000));
    let choice = rng.gen_range(0..10);
    let before = read_row(device, &key);
    let (sql, insert) = match choice {
        0..=3 => (format!("INSERT OR REPLACE INTO contacts VALUES ('{key}', 'name', '{value}', NULL)"), true),
        4..=5 => (format!("UPDATE contacts SET email = '{value}' WHERE id = '{key}'"), false),
        6..=7 => (format!("UPDATE contacts SET phone = '{value}', name = 'n{value}' WHERE id = '{key}'"), false),
        _ if n >= 4 => (format!("DELETE FROM contacts WHERE id = '{key}'"), false),
        _ => (format!("UPDATE contacts SET name = '{value}' WHERE id = '{key}'"), false),
    };
    device.exec(&sql);
    let after = read_row(device, &key);
    if n < 4 {
        if let Some(after) = after {
            let cells = oracle.entry(key).or_insert([None, None, None]);
            for (i, value) in after.into_iter().enumerate() {
                // An insert writes every column; an update only what changed.
                let changed = before.as_ref().is_none_or(|b| b[i] != value);
                if insert || changed {
                    cells[i] = Some(value);
                }
            }
        }
    }
    // Versions come from wall time: keep edits apart so that version order
    // is real-time order, which the oracle follows.
    thread::sleep(Duration::from_millis(2));
}

fn converge_with_seed(store: &TestStore, seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = TempDir::new().unwrap();
    let server = TestServer::start_on(store, dir.path(), CONTACTS_SCHEMA);
    let devices: Vec<Device> = (0..3).map(|i| Device::init(dir.path(), &format!("d{i}"), &server.url())).collect();
    let mut oracle = Oracle::new();
    for _round in 0..4 {
        for _ in 0..rng.gen_range(1..12) {
            let device = &devices[rng.gen_range(0..devices.len())];
            random_edit(&mut rng, device, &mut oracle);
        }
        for _ in 0..rng.gen_range(0..4) {
            devices[rng.gen_range(0..devices.len())].sync().unwrap();
        }
    }
    // Final rounds: everyone syncs twice (the second picks up what others pushed).
    for _ in 0..2 {
        for device in &devices {
            device.sync().unwrap();
        }
    }
    let expected = server.rows(ALL);
    for device in &devices {
        assert_eq!(device.rows(ALL), expected, "{} differs from the server", device.name);
    }
    for (key, cells) in &oracle {
        let row = read_row(&devices[0], key).unwrap_or_else(|| panic!("row {key} was never deleted but is gone"));
        for (i, cell) in cells.iter().enumerate() {
            if let Some(value) = cell {
                assert_eq!(&row[i], value, "row {key}, column {}: not the last write", COLUMNS[i]);
            }
        }
    }
}

#[test]
fn random_offline_edits_converge_in_any_sync_order() {
    on_every_store(|store| {
        run_seeded("random_offline_edits_converge_in_any_sync_order", 8, &[], 1, |seed| {
            converge_with_seed(store, seed)
        });
    });
}
