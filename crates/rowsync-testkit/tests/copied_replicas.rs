//! A replica file restored from a backup, or copied to a second device,
//! carries the original's device id and sequence numbers. The server's
//! high-water mark gives it away; the copy takes a new device id and sends
//! its pending writes again, so none of them is taken for a repeat and
//! acknowledged away.

use rowsync_proto::Value;
use rowsync_testkit::{on_every_store, text, Device, TestServer, TestStore, CONTACTS_SCHEMA};
use tempfile::TempDir;

const ALL: &str = "SELECT id, name, email, phone FROM contacts ORDER BY id";

/// A consistent copy of a replica file, as a backup tool or a phone
/// migration would make it.
fn copy_of(device: &Device, name: &str) -> Device {
    let path = device.path.with_file_name(format!("{name}.db"));
    device.plain().execute("VACUUM INTO ?", [path.to_str().unwrap()]).unwrap();
    Device { name: name.into(), path }
}

fn ids(rows: Vec<Vec<Value>>) -> Vec<Value> {
    rows.into_iter().map(|row| row[0].clone()).collect()
}

fn restored_from_backup_on(store: &TestStore) {
    let dir = TempDir::new().unwrap();
    let server = TestServer::start_on(store, dir.path(), CONTACTS_SCHEMA);
    let phone = Device::init(dir.path(), "phone", &server.url());
    phone.exec("INSERT INTO contacts (id, name) VALUES ('r1', 'before the backup');");
    phone.sync().unwrap();
    let backup = copy_of(&phone, "backup");
    phone.exec("INSERT INTO contacts (id, name) VALUES ('r2', 'after'), ('r3', 'after');");
    phone.sync().unwrap();

    // The phone is lost; the backup is restored and used.
    backup.exec("INSERT INTO contacts (id, name) VALUES ('r4', 'restored'), ('r5', 'restored');");
    let old_site = backup.replica().site().clone();
    let report = backup.sync().unwrap();
    assert!(report.notes.iter().any(|n| n.contains("copy")), "{report:?}");
    assert_ne!(backup.replica().site(), &old_site, "a new device id");
    assert_eq!(backup.pending(), 0);
    assert_eq!(ids(server.rows(ALL)), ["r1", "r2", "r3", "r4", "r5"].map(text), "{}", store.name());
    assert_eq!(backup.rows(ALL), server.rows(ALL));
}

#[test]
fn a_replica_restored_from_a_backup_loses_none_of_its_new_writes() {
    on_every_store(restored_from_backup_on);
}

#[test]
fn a_replica_copied_to_a_second_device_keeps_the_writes_of_both() {
    for copy_first in [false, true] {
        let dir = TempDir::new().unwrap();
        let server = TestServer::start(dir.path(), CONTACTS_SCHEMA);
        let laptop = Device::init(dir.path(), "laptop", &server.url());
        laptop.exec("INSERT INTO contacts VALUES ('shared', 'Ada', 'a@x', '111');");
        laptop.sync().unwrap();
        laptop.exec("INSERT INTO contacts (id, name) VALUES ('unsent', 'written before the copy');");
        let desktop = copy_of(&laptop, "desktop");

        // Both go on writing, to new rows and to different fields of one row.
        laptop.exec("INSERT INTO contacts (id, name) VALUES ('l1', 'laptop'); UPDATE contacts SET email = 'laptop@x' WHERE id = 'shared';");
        desktop.exec("INSERT INTO contacts (id, name) VALUES ('d1', 'desktop'), ('d2', 'desktop'); UPDATE contacts SET phone = '222' WHERE id = 'shared';");
        let (first, second) = if copy_first { (&desktop, &laptop) } else { (&laptop, &desktop) };
        first.sync().unwrap();
        let report = second.sync().unwrap();
        assert!(report.notes.iter().any(|n| n.contains("new device id")), "{report:?}");
        first.sync().unwrap();
        second.sync().unwrap();

        assert_ne!(laptop.replica().site(), desktop.replica().site());
        assert_eq!(ids(server.rows(ALL)), ["d1", "d2", "l1", "shared", "unsent"].map(text));
        assert_eq!(
            server.rows("SELECT email, phone FROM contacts WHERE id = 'shared'"),
            vec![vec![text("laptop@x"), text("222")]],
            "both devices' field edits are kept"
        );
        assert_eq!(laptop.rows(ALL), server.rows(ALL));
        assert_eq!(desktop.rows(ALL), server.rows(ALL));
        assert_eq!((laptop.pending(), desktop.pending()), (0, 0));
    }
}
