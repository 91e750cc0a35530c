//! Additive schema changes travel: the server, restarted with a schema file
//! that adds a table and columns, adds them to its database and serves a
//! new schema version; replicas take it on at their next sync without
//! fetching their rows again, and keep the writes they made offline under
//! the old schema. A replica still on the old schema pushes beside one on
//! the new, leaving the columns it does not know alone.

use rowsync_client::{Driver, HttpTransport, Transport};
use rowsync_core::engine::{Done, Event, Step};
use rowsync_core::parse_schema;
use rowsync_proto::{ConflictStrategy, Value};
use rowsync_testkit::{on_every_store, text, Device, TestServer, TestStore};

const V1: &str = "CREATE TABLE contacts (id TEXT PRIMARY KEY, name TEXT NOT NULL, email TEXT);";

/// V1 with a nullable column, a NOT NULL column with a default, and a table.
const V2: &str = "CREATE TABLE contacts (id TEXT PRIMARY KEY, name TEXT NOT NULL, email TEXT, phone TEXT, \
                  stars INTEGER NOT NULL DEFAULT 0);
                  CREATE TABLE notes (id TEXT PRIMARY KEY, contact TEXT, body TEXT NOT NULL);";

fn contacts(device: &Device) -> Vec<Vec<Value>> {
    device.rows("SELECT id, name, email, phone, stars FROM contacts ORDER BY id")
}

fn grow(server: &mut TestServer, sql: &str) {
    let schema = parse_schema(sql).unwrap();
    server.reconfigure(|config| config.schema = Some(schema));
}

#[test]
fn a_table_and_columns_added_reach_replicas_that_keep_their_offline_writes() {
    on_every_store(added_on);
}

fn added_on(store: &TestStore) {
    let dir = tempfile::tempdir().unwrap();
    let mut server = TestServer::start_on(store, dir.path(), V1);
    let laptop = Device::init(dir.path(), "laptop", &server.url());
    let phone = Device::init(dir.path(), "phone", &server.url());
    let mut rows = String::from("INSERT INTO contacts (id, name) VALUES ('c1', 'Ada'), ('c2', 'Grace')");
    for i in 0..50 {
        rows.push_str(&format!(", ('x{i:02}', 'Extra {i}')"));
    }
    laptop.exec(&rows);
    laptop.sync().unwrap();
    phone.sync().unwrap();
    assert_eq!(phone.replica().status().unwrap().schema_version, 1);

    // Offline on the phone, under the old schema.
    phone.exec("UPDATE contacts SET name = 'Ada L.' WHERE id = 'c1'; INSERT INTO contacts (id, name) VALUES ('c3', 'Linus'); DELETE FROM contacts WHERE id = 'c2'");

    grow(&mut server, V2);
    assert_eq!(
        server.rows("SELECT id, phone, stars FROM contacts WHERE id = 'c1'"),
        vec![vec![text("c1"), Value::Null, Value::Integer(0)]],
        "the server's database has the new columns"
    );
    assert_eq!(server.rows("SELECT count(*) FROM notes"), vec![vec![Value::Integer(0)]]);

    laptop.sync().unwrap();
    assert_eq!(laptop.replica().status().unwrap().schema_version, 2);
    laptop.exec(
        "UPDATE contacts SET phone = '555-0100', stars = 5 WHERE id = 'c1';
         UPDATE contacts SET phone = '555-0199' WHERE id = 'x00';
         INSERT INTO notes (id, contact, body) VALUES ('n1', 'c1', 'met at the conference')",
    );
    laptop.sync().unwrap();
    // Still offline, after the laptop's edit: a column the phone's schema
    // lacks is not part of its write.
    phone.exec("UPDATE contacts SET name = 'Extra zero' WHERE id = 'x00'");

    let report = phone.sync().unwrap();
    assert_eq!(phone.replica().status().unwrap().schema_version, 2);
    assert!(report.pulled <= 4, "the phone fetched only what changed, not its 52 rows again: {report:?}");
    laptop.sync().unwrap();
    let expected_c1 = vec![text("c1"), text("Ada L."), Value::Null, text("555-0100"), Value::Integer(5)];
    for device in [&laptop, &phone] {
        let rows = contacts(device);
        assert_eq!(rows[0], expected_c1, "{}: both edits of c1 kept", device.name);
        assert_eq!(rows[1], vec![text("c3"), text("Linus"), Value::Null, Value::Null, Value::Integer(0)]);
        assert!(rows.iter().all(|r| r[0] != text("c2")), "{}: the offline delete went through", device.name);
        assert_eq!(rows.len(), 52, "{}", device.name);
        assert_eq!(rows[2], vec![text("x00"), text("Extra zero"), Value::Null, text("555-0199"), Value::Integer(0)]);
        assert_eq!(
            device.rows("SELECT id, contact, body FROM notes"),
            vec![vec![text("n1"), text("c1"), text("met at the conference")]]
        );
        assert_eq!(device.pending(), 0);
    }
    assert_eq!(
        server.rows("SELECT id, name, email, phone, stars FROM contacts WHERE id = 'c1'"),
        vec![expected_c1.clone()]
    );

    // The new table and columns are captured like the old ones.
    phone
        .exec("UPDATE contacts SET stars = 4 WHERE id = 'c3'; UPDATE notes SET body = 'met in Zurich' WHERE id = 'n1'");
    phone.sync().unwrap();
    laptop.sync().unwrap();
    assert_eq!(laptop.rows("SELECT stars FROM contacts WHERE id = 'c3'"), vec![vec![Value::Integer(4)]]);
    assert_eq!(laptop.rows("SELECT body FROM notes"), vec![vec![text("met in Zurich")]]);

    // A row the phone holds from before the new schema has no version of
    // the new columns: the phone's edit of another column, pushed before it
    // pulled a concurrent edit of one of them, leaves that edit alone.
    laptop.exec("UPDATE contacts SET phone = '555-0111' WHERE id = 'x01'");
    laptop.sync().unwrap();
    phone.exec("UPDATE contacts SET name = 'Extra one' WHERE id = 'x01'");
    step(&phone, Step::Stamp);
    step(&phone, Step::Push { limit: 100, bytes: 1 << 20 });
    assert_eq!(
        server.rows("SELECT name, phone FROM contacts WHERE id = 'x01'"),
        vec![vec![text("Extra one"), text("555-0111")]]
    );

    // Restarting with the same file changes nothing: still version 2.
    server.restart();
    laptop.sync().unwrap();
    assert_eq!(laptop.replica().status().unwrap().schema_version, 2);
}

/// Runs one engine step on `device` without the rest of a sync round (no
/// schema fetched first), as a replica on an older rowsync, or an agent
/// that has not met the new schema yet, would.
fn step(device: &Device, step: Step) -> Done {
    let mut replica = device.replica();
    let transport = HttpTransport::connect(&replica.server_access().unwrap()).unwrap();
    let event = Driver::new(&mut replica, &transport as &dyn Transport, 1000).run(&step);
    match event {
        Event::Done(done) => done,
        other => panic!("{}: {step:?} failed: {other:?}", device.name),
    }
}

/// A row-strategy table under V1 on two replicas, `c1` Ada and `c2`
/// Grace; then the schema grows to V2, `new` takes it on and sets `c1`'s
/// phone, while `old` has not synced since.
fn old_and_new() -> (tempfile::TempDir, TestServer, Device, Device) {
    let dir = tempfile::tempdir().unwrap();
    let mut server = TestServer::start_configured(&TestStore::Sqlite, dir.path(), V1, |config| {
        config.conflicts.insert("contacts".into(), ConflictStrategy::Row);
    });
    let new = Device::init(dir.path(), "new", &server.url());
    let old = Device::init(dir.path(), "old", &server.url());
    new.exec("INSERT INTO contacts (id, name) VALUES ('c1', 'Ada'), ('c2', 'Grace')");
    new.sync().unwrap();
    old.sync().unwrap();
    grow(&mut server, V2);
    new.sync().unwrap();
    new.exec("UPDATE contacts SET phone = '555-0100' WHERE id = 'c1'");
    new.sync().unwrap();
    (dir, server, new, old)
}

#[test]
fn a_replica_on_the_old_schema_syncs_beside_one_on_the_new() {
    let (_dir, server, new, old) = old_and_new();

    // Later, the old replica changes the row's name. Under the row
    // strategy the later write's whole row wins: the whole row it knows.
    old.exec("UPDATE contacts SET name = 'Ada Lovelace' WHERE id = 'c1'");
    step(&old, Step::Stamp);
    step(&old, Step::Push { limit: 100, bytes: 1 << 20 });
    assert_eq!(old.replica().status().unwrap().schema_version, 1, "pushing does not need the new schema");
    assert_eq!(
        server.rows("SELECT name, phone FROM contacts WHERE id = 'c1'"),
        vec![vec![text("Ada Lovelace"), text("555-0100")]],
        "the old replica's push left the column it does not know alone"
    );

    // Its next pull carries the new columns: it takes on the schema first.
    let pulled = step(&old, Step::Pull { limit: 1000 });
    assert!(matches!(pulled, Done::Pulled { .. }), "{pulled:?}");
    assert_eq!(old.replica().status().unwrap().schema_version, 2);
    assert_eq!(
        old.rows("SELECT id, name, phone, stars FROM contacts ORDER BY id"),
        vec![
            vec![text("c1"), text("Ada Lovelace"), text("555-0100"), Value::Integer(0)],
            vec![text("c2"), text("Grace"), Value::Null, Value::Integer(0)],
        ]
    );
    new.sync().unwrap();
    assert_eq!(contacts(&new), contacts(&old));
}

#[test]
fn a_write_recorded_before_the_schema_grew_claims_only_the_columns_it_knew() {
    // Under the row strategy a write covers the whole row; one recorded
    // under the old schema, versioned after the replica took on the new
    // one, must not claim the new column (its local default would
    // overwrite a value set elsewhere).
    let (_dir, _server, new, old) = old_and_new();

    old.exec("UPDATE contacts SET email = 'ada@example.com' WHERE id = 'c1'");
    old.sync().unwrap();
    new.sync().unwrap();
    let expected = vec![text("c1"), text("Ada"), text("ada@example.com"), text("555-0100"), Value::Integer(0)];
    assert_eq!(contacts(&old)[0], expected);
    assert_eq!(contacts(&new)[0], expected);
}

#[test]
fn init_of_an_existing_replica_takes_on_a_grown_schema() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = TestServer::start(dir.path(), V1);
    let laptop = Device::init(dir.path(), "laptop", &server.url());
    laptop.exec("INSERT INTO contacts (id, name) VALUES ('c1', 'Ada')");
    grow(&mut server, V2);
    let again = Device::init(dir.path(), "laptop", &server.url());
    assert_eq!(again.replica().status().unwrap().schema_version, 2);
    assert_eq!(
        again.rows("SELECT id, phone, stars FROM contacts"),
        vec![vec![text("c1"), Value::Null, Value::Integer(0)]]
    );
    again.sync().unwrap();
    assert_eq!(server.rows("SELECT name FROM contacts"), vec![vec![text("Ada")]]);
}

#[test]
fn a_direct_write_to_a_row_older_than_a_column_leaves_that_column_alone() {
    on_every_store(direct_write_on);
}

fn direct_write_on(store: &TestStore) {
    let dir = tempfile::tempdir().unwrap();
    let mut server = TestServer::start_on(store, dir.path(), V1);
    let laptop = Device::init(dir.path(), "laptop", &server.url());
    laptop.exec("INSERT INTO contacts (id, name) VALUES ('c1', 'Ada')");
    laptop.sync().unwrap();
    grow(&mut server, V2);
    laptop.sync().unwrap();

    // Offline, the laptop sets the new column; then an admin renames the
    // row in the database. The admin wrote `name` only: the row's `phone`
    // and `stars` (defaults, never written) are not part of that write.
    laptop.exec("UPDATE contacts SET phone = '555-0100' WHERE id = 'c1'");
    std::thread::sleep(std::time::Duration::from_millis(5));
    server.exec("UPDATE contacts SET name = 'Ada (admin)' WHERE id = 'c1'");
    laptop.sync().unwrap();
    let expected = vec![vec![text("c1"), text("Ada (admin)"), Value::Null, text("555-0100"), Value::Integer(0)]];
    assert_eq!(contacts(&laptop), expected);
    assert_eq!(server.rows("SELECT id, name, email, phone, stars FROM contacts"), expected);
}

#[test]
fn a_server_process_started_before_the_schema_grew_asks_to_be_restarted() {
    on_every_store(process_behind_on);
}

fn process_behind_on(store: &TestStore) {
    let dir = tempfile::tempdir().unwrap();
    let mut server = TestServer::start_on(store, dir.path(), V1);
    let behind = server.another_instance();
    let laptop = Device::init(dir.path(), "laptop", &behind.url());
    laptop.exec("INSERT INTO contacts (id, name) VALUES ('c1', 'Ada')");
    laptop.sync().unwrap();
    grow(&mut server, V2);
    let phone = Device::init(dir.path(), "phone", &server.url());
    phone.sync().unwrap();
    phone.exec("UPDATE contacts SET phone = '555-0100' WHERE id = 'c1'");
    phone.sync().unwrap();

    // The process still on V1 cannot merge into a row that has a phone now:
    // it answers 503 and applies nothing, and the laptop keeps its write.
    laptop.exec("UPDATE contacts SET name = 'Ada L.' WHERE id = 'c1'");
    step(&laptop, Step::Stamp);
    let mut replica = laptop.replica();
    let transport = HttpTransport::connect(&replica.server_access().unwrap()).unwrap();
    let failed =
        Driver::new(&mut replica, &transport as &dyn Transport, 1000).run(&Step::Push { limit: 100, bytes: 1 << 20 });
    let detail = format!("{failed:?}");
    assert!(detail.contains("Unreachable") && detail.contains("restart this process"), "{detail}");
    assert_eq!(laptop.pending(), 1);
    // A change naming a column only the new schema has: the same answer,
    // not a refusal (that would set the change aside for good).
    let body = r#"{"site":"0123456789abcdef0123456789abcdef","last_seq":1,"changes":[{"seq":1,"table":"contacts",
        "key":["c2"],"alive":{"hlc":1,"site":"0123456789abcdef0123456789abcdef"},
        "version":{"hlc":1,"site":"0123456789abcdef0123456789abcdef"},
        "cells":[{"column":"name","value":"Bo"},{"column":"phone","value":"1"}]}]}"#;
    let answer = ureq::post(&format!("{}/v1/push", behind.url()))
        .set("Content-Type", "application/json")
        .send_string(&body.replace('\n', ""));
    match answer {
        Err(ureq::Error::Status(code, _)) => assert_eq!(code, 503),
        other => panic!("expected 503, got {other:?}"),
    }
    // The tutorial endpoints answer alike: a change with the new column,
    // and the changes of a row that holds it.
    let tutorial = r#"{"table":"contacts","record_id":"c9","operation":"INSERT","timestamp":"2026-01-01T00:00:00Z",
        "data":{"id":"c9","name":"Cy","phone":"2"}}"#;
    let sync = ureq::post(&format!("{}/sync", behind.url()))
        .set("Content-Type", "application/json")
        .send_string(&tutorial.replace('\n', ""));
    assert!(matches!(sync, Err(ureq::Error::Status(503, _))), "{sync:?}");
    let changes = ureq::get(&format!("{}/changes", behind.url())).call();
    assert!(matches!(changes, Err(ureq::Error::Status(503, _))), "{changes:?}");

    // Restarted with the new schema (here: the laptop moves to the process
    // that has it), everything goes through.
    drop(behind);
    let laptop = Device::init(dir.path(), "laptop", &server.url());
    laptop.sync().unwrap();
    phone.sync().unwrap();
    let expected = vec![vec![text("c1"), text("Ada L."), Value::Null, text("555-0100"), Value::Integer(0)]];
    assert_eq!(contacts(&laptop), expected);
    assert_eq!(contacts(&phone), expected);
}

#[test]
fn writes_that_escaped_capture_are_still_found_when_their_table_grows() {
    // The app rebuilt the table (its capture triggers went with it) and
    // wrote; then the server's schema grew a column on that table. Taking
    // on the new schema must not re-install the triggers as if nothing had
    // happened: the audit must still see them gone and look for the writes.
    let dir = tempfile::tempdir().unwrap();
    let mut server = TestServer::start(dir.path(), V1);
    let laptop = Device::init(dir.path(), "laptop", &server.url());
    laptop.exec("INSERT INTO contacts (id, name) VALUES ('c1', 'Ada'), ('c2', 'Grace')");
    laptop.sync().unwrap();
    laptop.exec(
        "CREATE TABLE contacts_new (id TEXT PRIMARY KEY NOT NULL, name TEXT NOT NULL, email TEXT);
         INSERT INTO contacts_new SELECT id, name, email FROM contacts;
         DROP TABLE contacts;
         ALTER TABLE contacts_new RENAME TO contacts;
         UPDATE contacts SET name = 'Ada (rebuilt)' WHERE id = 'c1';",
    );
    grow(&mut server, V2);
    let report = laptop.sync().unwrap();
    assert!(report.notes.iter().any(|n| n.contains("rebuilt")), "{report:?}");
    assert_eq!(server.rows("SELECT name FROM contacts WHERE id = 'c1'"), vec![vec![text("Ada (rebuilt)")]]);
    // And the table is captured again, new column included.
    laptop.exec("UPDATE contacts SET phone = '555-0100' WHERE id = 'c2'");
    laptop.sync().unwrap();
    assert_eq!(server.rows("SELECT phone FROM contacts WHERE id = 'c2'"), vec![vec![text("555-0100")]]);
}

#[test]
fn a_column_already_in_the_database_is_kept_when_the_schema_adds_it() {
    on_every_store(column_already_there_on);
}

fn column_already_there_on(store: &TestStore) {
    // An admin added the column by hand before updating the schema file
    // (or a start stopped between adding it and recording the schema).
    let dir = tempfile::tempdir().unwrap();
    let mut server = TestServer::start_on(store, dir.path(), V1);
    let laptop = Device::init(dir.path(), "laptop", &server.url());
    laptop.exec("INSERT INTO contacts (id, name) VALUES ('c1', 'Ada')");
    laptop.sync().unwrap();
    server.exec("ALTER TABLE contacts ADD COLUMN phone TEXT");
    grow(&mut server, V2);
    laptop.sync().unwrap();
    assert_eq!(laptop.replica().status().unwrap().schema_version, 2);
    laptop.exec("UPDATE contacts SET phone = '555-0100', stars = 2 WHERE id = 'c1'");
    laptop.sync().unwrap();
    assert_eq!(
        server.rows("SELECT phone, stars FROM contacts WHERE id = 'c1'"),
        vec![vec![text("555-0100"), Value::Integer(2)]]
    );
}
