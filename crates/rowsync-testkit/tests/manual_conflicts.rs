//! The manual strategy ("ask the user") end to end, on every store: the
//! server keeps the value it has against a concurrent edit, every replica
//! receives the conflict with both values, and a resolution made on any
//! replica syncs everywhere and closes the conflict there.

use rowsync_client::{Resolution, Side};
use rowsync_proto::ConflictStrategy;
use rowsync_testkit::{on_every_store, text, Device, TestServer, TestStore, CONTACTS_SCHEMA};
use tempfile::TempDir;

const PHONE: &str = "SELECT phone FROM contacts WHERE id = 'a'";

fn manual_server(store: &TestStore, dir: &TempDir) -> TestServer {
    TestServer::start_configured(store, dir.path(), CONTACTS_SCHEMA, |config| {
        config.conflicts.insert("contacts".into(), ConflictStrategy::Manual);
    })
}

/// Three devices with the same contact, then the laptop and the phone edit
/// its phone number offline. The laptop syncs first.
fn concurrent_edits(store: &TestStore, dir: &TempDir) -> (TestServer, Device, Device, Device) {
    let server = manual_server(store, dir);
    let laptop = Device::init(dir.path(), "laptop", &server.url());
    let phone = Device::init(dir.path(), "phone", &server.url());
    let tablet = Device::init(dir.path(), "tablet", &server.url());
    laptop.exec("INSERT INTO contacts VALUES ('a', 'Ada', 'ada@x', '555');");
    laptop.sync().unwrap();
    phone.sync().unwrap();
    tablet.sync().unwrap();
    // The phone's edit is the later one by the clock, and still does not win.
    laptop.exec("UPDATE contacts SET phone = '666', email = 'ada@work' WHERE id = 'a';");
    std::thread::sleep(std::time::Duration::from_millis(5));
    phone.exec("UPDATE contacts SET phone = '777', name = 'Ada L.' WHERE id = 'a';");
    laptop.sync().unwrap();
    phone.sync().unwrap();
    laptop.sync().unwrap();
    tablet.sync().unwrap();
    (server, laptop, phone, tablet)
}

fn conflict_is_recorded_on(store: &TestStore) {
    let dir = TempDir::new().unwrap();
    let (server, laptop, phone, tablet) = concurrent_edits(store, &dir);
    let all = "SELECT id, name, email, phone FROM contacts";
    let expected = vec![vec![text("a"), text("Ada L."), text("ada@work"), text("666")]];
    assert_eq!(server.rows(all), expected, "{}: the kept value and both non-conflicting edits", store.name());
    for device in [&laptop, &phone, &tablet] {
        assert_eq!(device.rows(all), expected, "{}", store.name());
        let conflicts = device.replica().conflicts().unwrap();
        assert_eq!(conflicts.len(), 1, "{}: every replica has the conflict", store.name());
        assert_eq!((conflicts[0].table.as_str(), conflicts[0].column.as_str()), ("contacts", "phone"));
        assert_eq!(conflicts[0].key, vec![text("a")]);
        assert!(conflicts[0].base.is_some());
        assert_eq!(conflicts[0].base_value, Some(text("555")), "{}: the value both edits replaced", store.name());
    }
    let on_phone = &phone.replica().conflicts().unwrap()[0];
    assert_eq!((&on_phone.local.value, &on_phone.remote.value), (&text("777"), &text("666")));
    assert_eq!(on_phone.local.version.site, *phone.replica().site());
    assert_eq!(on_phone.shown, Side::Remote);
    let on_laptop = &laptop.replica().conflicts().unwrap()[0];
    assert_eq!((&on_laptop.local.value, &on_laptop.remote.value), (&text("666"), &text("777")));
    assert_eq!(on_laptop.id, on_phone.id, "one conflict, one id everywhere");

    // The phone keeps its own value; it syncs everywhere and closes the conflict.
    phone.replica().resolve(&on_phone.id[..6], &Resolution::Keep(Side::Local)).unwrap();
    assert!(phone.replica().conflicts().unwrap().is_empty(), "closed here at once");
    assert_eq!(phone.rows(PHONE), vec![vec![text("777")]]);
    phone.sync().unwrap();
    laptop.sync().unwrap();
    tablet.sync().unwrap();
    for device in [&laptop, &phone, &tablet] {
        assert_eq!(device.rows(PHONE), vec![vec![text("777")]], "{}", store.name());
        assert!(device.replica().conflicts().unwrap().is_empty(), "{}: closed everywhere", store.name());
    }
    assert_eq!(server.rows(PHONE), vec![vec![text("777")]]);
}

#[test]
fn the_server_keeps_its_value_and_every_replica_gets_the_conflict() {
    on_every_store(conflict_is_recorded_on);
}

fn keeping_the_shown_value_on(store: &TestStore) {
    let dir = TempDir::new().unwrap();
    let (server, laptop, phone, tablet) = concurrent_edits(store, &dir);
    // Keeping the value every row shows changes no value, and still settles it.
    let id = tablet.replica().conflicts().unwrap()[0].id.clone();
    tablet.replica().resolve(&id, &Resolution::Keep(Side::Local)).unwrap();
    assert!(tablet.pending() > 0, "queued although no value changed");
    tablet.sync().unwrap();
    laptop.sync().unwrap();
    phone.sync().unwrap();
    for device in [&laptop, &phone, &tablet] {
        assert!(device.replica().conflicts().unwrap().is_empty(), "{}", store.name());
        assert_eq!(device.rows(PHONE), vec![vec![text("666")]]);
    }
    assert_eq!(server.rows(PHONE), vec![vec![text("666")]]);

    // A third value, set on the laptop over a second conflict.
    laptop.exec("UPDATE contacts SET phone = '888' WHERE id = 'a';");
    phone.exec("UPDATE contacts SET phone = '999' WHERE id = 'a';");
    laptop.sync().unwrap();
    phone.sync().unwrap();
    laptop.sync().unwrap();
    let conflict = laptop.replica().conflicts().unwrap().remove(0);
    let set = Resolution::Set(vec![("phone".into(), text("888 or 999")), ("email".into(), text("both@x"))]);
    laptop.replica().resolve(&conflict.id, &set).unwrap();
    laptop.sync().unwrap();
    phone.sync().unwrap();
    assert_eq!(phone.rows("SELECT email, phone FROM contacts"), vec![vec![text("both@x"), text("888 or 999")]]);
    assert!(phone.replica().conflicts().unwrap().is_empty());
}

#[test]
fn keeping_the_shown_value_or_setting_a_new_one_settles_it_everywhere() {
    on_every_store(keeping_the_shown_value_on);
}

#[test]
fn bad_resolutions_are_refused_and_change_nothing() {
    let dir = TempDir::new().unwrap();
    let (_server, laptop, _phone, _tablet) = concurrent_edits(&TestStore::Sqlite, &dir);
    let replica = laptop.replica();
    let id = replica.conflicts().unwrap()[0].id.clone();
    let refused = |resolution: Resolution, id: &str| replica.resolve(id, &resolution).unwrap_err().to_string();
    assert!(refused(Resolution::Keep(Side::Local), "ffffffff").contains("no open conflict ffffffff"));
    assert!(refused(Resolution::Keep(Side::Local), "zz").contains("not a conflict id"));
    let wrong_type = Resolution::Set(vec![("phone".into(), rowsync_proto::Value::Blob(vec![1]))]);
    assert!(refused(wrong_type, &id).contains("expected TEXT"));
    let no_column = Resolution::Set(vec![("email".into(), text("x"))]);
    assert!(refused(no_column, &id).contains("give a value for phone"));
    let unknown = Resolution::Set(vec![("phone".into(), text("1")), ("fax".into(), text("2"))]);
    assert!(refused(unknown, &id).contains("no column fax"));
    assert_eq!(replica.conflicts().unwrap().len(), 1);
    assert_eq!(laptop.pending(), 0);
}

#[test]
fn a_table_leaving_the_manual_strategy_drops_its_conflicts_on_replicas() {
    let dir = TempDir::new().unwrap();
    let (mut server, laptop, phone, _tablet) = concurrent_edits(&TestStore::Sqlite, &dir);
    assert_eq!(phone.replica().status().unwrap().open_conflicts, 1);
    server.reconfigure(|config| {
        config.conflicts.insert("contacts".into(), ConflictStrategy::Field);
    });
    phone.sync().unwrap();
    assert!(phone.replica().conflicts().unwrap().is_empty());
    // From now on edits merge by version: the later one wins, no conflict.
    laptop.exec("UPDATE contacts SET phone = '1' WHERE id = 'a';");
    std::thread::sleep(std::time::Duration::from_millis(5));
    phone.exec("UPDATE contacts SET phone = '2' WHERE id = 'a';");
    laptop.sync().unwrap();
    phone.sync().unwrap();
    laptop.sync().unwrap();
    assert_eq!(laptop.rows(PHONE), vec![vec![text("2")]]);
    assert!(laptop.replica().conflicts().unwrap().is_empty());
}

#[test]
fn an_app_write_to_the_column_settles_the_conflict_like_a_resolution() {
    let dir = TempDir::new().unwrap();
    let (server, laptop, phone, tablet) = concurrent_edits(&TestStore::Sqlite, &dir);
    // The app edits the number itself, with the conflict in view.
    tablet.exec("UPDATE contacts SET phone = '555-0100' WHERE id = 'a';");
    assert!(tablet.replica().conflicts().unwrap().is_empty(), "settled here at once");
    assert_eq!(tablet.replica().status().unwrap().open_conflicts, 0);
    tablet.sync().unwrap();
    laptop.sync().unwrap();
    phone.sync().unwrap();
    for device in [&laptop, &phone] {
        assert!(device.replica().conflicts().unwrap().is_empty());
        assert_eq!(device.rows(PHONE), vec![vec![text("555-0100")]]);
    }
    assert_eq!(server.rows(PHONE), vec![vec![text("555-0100")]]);
}
