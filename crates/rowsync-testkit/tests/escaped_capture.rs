//! Writes the capture triggers never saw, made by SQL that real apps run: a
//! table rebuild drops the triggers, and INSERT OR REPLACE over an app's
//! own UNIQUE index deletes a row without firing them. Each sync checks
//! capture first and queues what escaped it.

use rowsync_proto::Value;
use rowsync_testkit::{on_every_store, text, Device, TestServer, TestStore, CONTACTS_SCHEMA};
use tempfile::TempDir;

const ALL: &str = "SELECT id, name, email, phone FROM contacts ORDER BY id";

/// The usual SQLite way to change a table: create, copy, drop, rename.
const REBUILD: &str = "
    CREATE TABLE contacts_new (id TEXT PRIMARY KEY NOT NULL, name TEXT NOT NULL, email TEXT, phone TEXT);
    INSERT INTO contacts_new SELECT id, name, email, phone FROM contacts;
    DROP TABLE contacts;
    ALTER TABLE contacts_new RENAME TO contacts;";

fn rebuild_on(store: &TestStore) {
    let dir = TempDir::new().unwrap();
    let server = TestServer::start_on(store, dir.path(), CONTACTS_SCHEMA);
    let laptop = Device::init(dir.path(), "laptop", &server.url());
    let phone = Device::init(dir.path(), "phone", &server.url());
    laptop.exec(
        "INSERT INTO contacts VALUES ('a', 'Ada', 'a@x', '1'), ('b', 'Bo', 'b@x', '2'), ('c', 'Cy', 'c@x', '3');",
    );
    laptop.sync().unwrap();
    phone.sync().unwrap();

    // The rebuild, then writes no trigger sees: an insert, an update, a delete.
    laptop.exec(REBUILD);
    laptop.exec(
        "INSERT INTO contacts VALUES ('d', 'Di', NULL, NULL);
         UPDATE contacts SET phone = '22' WHERE id = 'b';
         DELETE FROM contacts WHERE id = 'c';",
    );
    // Meanwhile the phone edits another column of the same row: kept.
    phone.exec("UPDATE contacts SET email = 'bo@phone' WHERE id = 'b';");
    phone.sync().unwrap();

    let report = laptop.sync().unwrap();
    assert!(report.notes.iter().any(|n| n.contains("rebuilt")), "{report:?}");
    assert!(report.notes.iter().any(|n| n.contains("1 row(s) updated")), "{report:?}");
    phone.sync().unwrap();
    let expected = vec![
        vec![text("a"), text("Ada"), text("a@x"), text("1")],
        vec![text("b"), text("Bo"), text("bo@phone"), text("22")],
        vec![text("d"), text("Di"), Value::Null, Value::Null],
    ];
    assert_eq!(server.rows(ALL), expected, "{}", store.name());
    assert_eq!(laptop.rows(ALL), expected);
    assert_eq!(phone.rows(ALL), expected);

    // The triggers are back: later writes are captured as usual.
    laptop.exec("UPDATE contacts SET name = 'Ada L.' WHERE id = 'a';");
    assert_eq!(laptop.pending(), 1);
    let report = laptop.sync().unwrap();
    assert!(report.notes.is_empty(), "{report:?}");
    assert_eq!(server.rows("SELECT name FROM contacts WHERE id = 'a'"), vec![vec![text("Ada L.")]]);
}

#[test]
fn writes_after_a_table_rebuild_are_found_and_synced() {
    on_every_store(rebuild_on);
}

#[test]
fn a_rebuild_that_changed_the_columns_stops_sync_with_what_to_do() {
    let dir = TempDir::new().unwrap();
    let server = TestServer::start(dir.path(), CONTACTS_SCHEMA);
    let laptop = Device::init(dir.path(), "laptop", &server.url());
    laptop.exec("INSERT INTO contacts VALUES ('a', 'Ada', 'a@x', '1');");
    laptop.sync().unwrap();
    laptop.exec(
        "CREATE TABLE contacts_new (id TEXT PRIMARY KEY NOT NULL, name TEXT NOT NULL, email TEXT);
         INSERT INTO contacts_new SELECT id, name, email FROM contacts;
         DROP TABLE contacts;
         ALTER TABLE contacts_new RENAME TO contacts;
         INSERT INTO contacts VALUES ('b', 'Bo', NULL);",
    );
    let error = laptop.sync().unwrap_err().to_string();
    assert!(error.contains("table contacts"), "{error}");
    assert!(error.contains("column phone is missing locally"), "{error}");
    assert!(error.contains("rebuilt"), "{error}");
    assert_eq!(server.rows("SELECT id FROM contacts"), vec![vec![text("a")]], "nothing was synced");

    // The column comes back (another rebuild): everything is found and synced.
    laptop.exec(
        "CREATE TABLE contacts_new (id TEXT PRIMARY KEY NOT NULL, name TEXT NOT NULL, email TEXT, phone TEXT);
         INSERT INTO contacts_new SELECT id, name, email, NULL FROM contacts;
         DROP TABLE contacts;
         ALTER TABLE contacts_new RENAME TO contacts;",
    );
    laptop.sync().unwrap();
    assert_eq!(
        server.rows(ALL),
        vec![
            vec![text("a"), text("Ada"), text("a@x"), Value::Null],
            vec![text("b"), text("Bo"), Value::Null, Value::Null]
        ]
    );
}

fn replace_on(store: &TestStore) {
    let dir = TempDir::new().unwrap();
    let server = TestServer::start_on(store, dir.path(), CONTACTS_SCHEMA);
    let laptop = Device::init(dir.path(), "laptop", &server.url());
    let phone = Device::init(dir.path(), "phone", &server.url());
    // The app's own index: one contact per email.
    laptop.exec("CREATE UNIQUE INDEX contacts_email ON contacts (email);");
    laptop.exec("INSERT INTO contacts VALUES ('a', 'Ada', 'same@x', '1'), ('b', 'Bo', 'b@x', '2');");
    laptop.sync().unwrap();
    phone.sync().unwrap();

    // REPLACE removes 'a' (same email) without firing its delete trigger.
    laptop.exec("INSERT OR REPLACE INTO contacts VALUES ('c', 'Cy', 'same@x', '3');");
    assert_eq!(laptop.rows("SELECT id FROM contacts ORDER BY id"), vec![vec![text("b")], vec![text("c")]]);
    let report = laptop.sync().unwrap();
    assert!(report.notes.iter().any(|n| n.contains("1 row(s) of table contacts were deleted")), "{report:?}");
    phone.sync().unwrap();
    let ids = vec![vec![text("b")], vec![text("c")]];
    assert_eq!(server.rows("SELECT id FROM contacts ORDER BY id"), ids, "{}", store.name());
    assert_eq!(phone.rows("SELECT id FROM contacts ORDER BY id"), ids);
    assert_eq!(laptop.pending(), 0);
}

#[test]
fn a_row_deleted_by_insert_or_replace_is_deleted_everywhere() {
    on_every_store(replace_on);
}

/// Behind a backlog too large to stamp before the push (it is stamped batch
/// by batch), rows a REPLACE removed unseen are still found and deleted on
/// the server by the same sync: one the server held (found when the counts
/// are compared, once the push has caught up), and one written since the
/// last sync, whose batch finds it gone (it is never sent as a row without
/// values).
#[test]
fn rows_replaced_behind_a_large_backlog_are_deleted_by_the_same_sync() {
    let dir = TempDir::new().unwrap();
    let server = TestServer::start_on(&TestStore::Sqlite, dir.path(), CONTACTS_SCHEMA);
    let laptop = Device::init(dir.path(), "laptop", &server.url());
    laptop.exec("CREATE UNIQUE INDEX contacts_email ON contacts (email);");
    laptop.exec("INSERT INTO contacts VALUES ('a', 'Ada', 'same@x', '1');");
    laptop.sync().unwrap();

    laptop.exec("INSERT INTO contacts VALUES ('b', 'Bo', 'b@x', '2');");
    laptop.exec(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000) \
         INSERT INTO contacts SELECT 'n' || i, 'Name', 'n' || i || '@x', NULL FROM n;",
    );
    laptop.exec("INSERT OR REPLACE INTO contacts VALUES ('c', 'Cy', 'same@x', '3');");
    laptop.exec("INSERT OR REPLACE INTO contacts VALUES ('d', 'Di', 'b@x', '4');");
    let report = laptop.sync().unwrap();
    assert!(report.notes.iter().any(|n| n.contains("2 row(s) of table contacts were deleted")), "{report:?}");
    assert_eq!(report.rejected, 0, "{report:?}");
    let count = "SELECT count(*), sum(id IN ('a', 'b')), sum(name IS NULL) FROM contacts";
    assert_eq!(server.rows(count), vec![vec![Value::Integer(3002), Value::Integer(0), Value::Integer(0)]]);
    assert_eq!(laptop.pending(), 0);
}

/// Triggers an earlier rowsync installed are recognised as rowsync's: they
/// are replaced by today's without suspecting that writes escaped them.
#[test]
fn triggers_of_an_earlier_version_are_replaced_quietly() {
    use rowsync_core::capture::{capture_triggers, trigger_names, TriggerForm};
    let dir = TempDir::new().unwrap();
    let schema = "CREATE TABLE visits (person TEXT, day TEXT, note TEXT, PRIMARY KEY (person, day));";
    let server = TestServer::start(dir.path(), schema);
    let device = Device::init(dir.path(), "device", &server.url());
    // As an older rowsync left the file.
    let table = &server.schema.tables[0];
    for name in trigger_names(table) {
        device.exec(&format!("DROP TRIGGER \"{name}\";"));
    }
    for trigger in capture_triggers(table, 1, TriggerForm::Legacy) {
        device.exec(&trigger);
    }
    device.exec("INSERT INTO visits VALUES ('ada', '2026-12-01', 'tea');");
    let report = device.sync().unwrap();
    assert!(report.notes.is_empty(), "{report:?}");
    assert_eq!(server.rows("SELECT note FROM visits"), vec![vec![text("tea")]]);
    // Today's triggers now: a blob key part no longer fails the app's write.
    device.exec("INSERT INTO visits VALUES (x'01', '2026-12-02', 'blob');");
}

/// SQLite lets a TEXT PRIMARY KEY hold NULL unless it is declared NOT NULL.
/// Such a write once failed in the capture trigger ("NOT NULL constraint
/// failed: _rowsync_outbox.pk"); it succeeds, and the server's refusal of a
/// NULL key sets it aside with the reason while the rest syncs.
#[test]
fn a_null_key_in_an_apps_own_table_never_fails_the_apps_write() {
    let dir = TempDir::new().unwrap();
    let server = TestServer::start(dir.path(), CONTACTS_SCHEMA);
    let path = dir.path().join("app.db");
    let app = rusqlite::Connection::open(&path).unwrap();
    app.execute_batch("CREATE TABLE contacts (id TEXT PRIMARY KEY, name TEXT NOT NULL, email TEXT, phone TEXT);")
        .unwrap();
    let transport = rowsync_client::HttpTransport::new(&server.url(), None);
    let schema = rowsync_client::Transport::schema(&transport).unwrap();
    rowsync_client::Replica::init(&path, &server.url(), &schema, None).unwrap();
    app.execute_batch(
        "INSERT INTO contacts (name) VALUES ('no key'); INSERT INTO contacts VALUES ('a', 'Ada', NULL, NULL);",
    )
    .unwrap();
    let device = Device { name: "app".into(), path };
    let report = device.sync().unwrap();
    assert_eq!(report.rejected, 1, "{report:?}");
    assert!(report.rejections[0].contains("column id: is NOT NULL but the value is null"), "{:?}", report.rejections);
    assert_eq!(server.rows("SELECT id FROM contacts"), vec![vec![text("a")]]);
    assert_eq!(device.replica().status().unwrap().pending_changes, 0);
}
