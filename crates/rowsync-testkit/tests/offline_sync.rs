//! The offline-first loop end to end: real SQLite files written through plain
//! connections, a real server on a loopback port, and every test run once
//! per store (embedded SQLite, PostgreSQL, MariaDB).

use rowsync_testkit::{on_every_store, text, Device, TestServer, TestStore, CONTACTS_SCHEMA};
use tempfile::TempDir;

const ALL: &str = "SELECT id, name, email, phone FROM contacts ORDER BY id";

fn setup(store: &TestStore) -> (TempDir, TestServer, Device, Device) {
    let dir = TempDir::new().unwrap();
    let server = TestServer::start_on(store, dir.path(), CONTACTS_SCHEMA);
    let laptop = Device::init(dir.path(), "laptop", &server.url());
    let phone = Device::init(dir.path(), "phone", &server.url());
    (dir, server, laptop, phone)
}

fn assert_converged(server: &TestServer, devices: &[&Device]) {
    let expected = server.rows(ALL);
    for device in devices {
        assert_eq!(device.rows(ALL), expected, "{} differs from the server", device.name);
        assert_eq!(device.pending(), 0, "{} still has pending changes", device.name);
    }
}

#[test]
fn offline_writes_on_two_devices_converge_everywhere() {
    on_every_store(|store| {
        let (_dir, mut server, laptop, phone) = setup(store);
        server.stop();
        laptop.exec("INSERT INTO contacts VALUES ('a', 'Ada', 'ada@example.com', '111');");
        laptop.exec("INSERT INTO contacts VALUES ('b', 'Babbage', NULL, '222');");
        phone.exec("INSERT INTO contacts VALUES ('c', 'Curie', 'marie@example.com', NULL);");
        phone.exec("UPDATE contacts SET phone = '333' WHERE id = 'c';");
        let err = laptop.sync().unwrap_err();
        assert!(err.is_unreachable(), "{err}");
        assert_eq!(laptop.pending(), 2, "queued changes must stay queued while offline");
        assert!(laptop.replica().status().unwrap().last_error.unwrap().contains("cannot reach"));

        server.restart();
        phone.sync().unwrap();
        laptop.sync().unwrap();
        phone.sync().unwrap();
        assert_eq!(server.rows(ALL).len(), 3);
        assert_eq!(laptop.rows("SELECT phone FROM contacts WHERE id = 'c'"), vec![vec![text("333")]]);
        assert_converged(&server, &[&laptop, &phone]);
        assert!(laptop.replica().status().unwrap().last_error.is_none());
    });
}

#[test]
fn different_fields_edited_offline_both_survive() {
    on_every_store(|store| {
        let (_dir, mut server, laptop, phone) = setup(store);
        laptop.exec("INSERT INTO contacts VALUES ('a', 'Ada', 'old@example.com', '111');");
        laptop.sync().unwrap();
        phone.sync().unwrap();
        server.stop();
        laptop.exec("UPDATE contacts SET phone = '999' WHERE id = 'a';");
        phone.exec("UPDATE contacts SET email = 'new@example.com' WHERE id = 'a';");
        server.restart();
        laptop.sync().unwrap();
        phone.sync().unwrap();
        laptop.sync().unwrap();
        let expected = vec![vec![text("a"), text("Ada"), text("new@example.com"), text("999")]];
        assert_eq!(server.rows(ALL), expected);
        assert_converged(&server, &[&laptop, &phone]);
    });
}

#[test]
fn same_field_edited_offline_the_later_write_wins_in_any_sync_order() {
    on_every_store(|store| {
        for laptop_first in [true, false] {
            let (_dir, mut server, laptop, phone) = setup(store);
            laptop.exec("INSERT INTO contacts VALUES ('a', 'Ada', NULL, '111');");
            laptop.sync().unwrap();
            phone.sync().unwrap();
            server.stop();
            laptop.exec("UPDATE contacts SET phone = 'laptop' WHERE id = 'a';");
            std::thread::sleep(std::time::Duration::from_millis(20));
            phone.exec("UPDATE contacts SET phone = 'phone-later' WHERE id = 'a';");
            server.restart();
            let (first, second) = if laptop_first { (&laptop, &phone) } else { (&phone, &laptop) };
            first.sync().unwrap();
            second.sync().unwrap();
            first.sync().unwrap();
            assert_eq!(server.rows("SELECT phone FROM contacts"), vec![vec![text("phone-later")]]);
            assert_converged(&server, &[&laptop, &phone]);
        }
    });
}

#[test]
fn a_pulled_change_merges_with_pending_local_edits_cell_by_cell() {
    on_every_store(|store| {
        let (_dir, server, laptop, phone) = setup(store);
        laptop.exec("INSERT INTO contacts VALUES ('a', 'Ada', 'a@x', '111');");
        laptop.sync().unwrap();
        phone.sync().unwrap();
        phone.exec("UPDATE contacts SET email = 'phone@x' WHERE id = 'a';");
        phone.sync().unwrap();
        // The laptop edits another field, then pulls the phone's change before
        // pushing: its own edit must survive and still be pushed.
        laptop.exec("UPDATE contacts SET phone = '222' WHERE id = 'a';");
        let replica = laptop.replica();
        let transport = rowsync_client::HttpTransport::new(&server.url(), None);
        use rowsync_client::Transport;
        let page = transport
            .pull(&rowsync_proto::PullRequest {
                site: replica.site().clone(),
                cursor: 0,
                limit: 100,
                known: None,
                full: None,
            })
            .unwrap();
        rowsync_client::apply::apply_page(&replica, page).unwrap();
        assert_eq!(laptop.rows("SELECT email, phone FROM contacts"), vec![vec![text("phone@x"), text("222")]]);
        assert_eq!(laptop.pending(), 1, "the local edit's outbox entry survives the pull");
        laptop.sync().unwrap();
        phone.sync().unwrap();
        assert_converged(&server, &[&laptop, &phone]);
        assert_eq!(server.rows("SELECT email, phone FROM contacts"), vec![vec![text("phone@x"), text("222")]]);
    });
}

#[test]
fn a_stale_edit_pushed_late_does_not_beat_a_newer_remote_one() {
    on_every_store(|store| {
        let (_dir, server, laptop, phone) = setup(store);
        laptop.exec("INSERT INTO contacts VALUES ('a', 'Ada', NULL, '111');");
        laptop.sync().unwrap();
        phone.sync().unwrap();
        laptop.exec("UPDATE contacts SET phone = 'stale' WHERE id = 'a';");
        std::thread::sleep(std::time::Duration::from_millis(20));
        phone.exec("UPDATE contacts SET phone = 'newer' WHERE id = 'a';");
        phone.sync().unwrap();
        // The laptop's edit is older, though it reaches the server last.
        laptop.sync().unwrap();
        phone.sync().unwrap();
        assert_eq!(server.rows("SELECT phone FROM contacts"), vec![vec![text("newer")]]);
        assert_converged(&server, &[&laptop, &phone]);
    });
}

#[test]
fn delete_against_concurrent_update_resolves_by_version() {
    on_every_store(|store| {
        // Update later than the delete: the row stays, with the update.
        let (_dir, server, laptop, phone) = setup(store);
        laptop.exec("INSERT INTO contacts VALUES ('a', 'Ada', NULL, '111');");
        laptop.sync().unwrap();
        phone.sync().unwrap();
        laptop.exec("DELETE FROM contacts WHERE id = 'a';");
        std::thread::sleep(std::time::Duration::from_millis(20));
        phone.exec("UPDATE contacts SET phone = '999' WHERE id = 'a';");
        laptop.sync().unwrap();
        phone.sync().unwrap();
        laptop.sync().unwrap();
        assert_eq!(server.rows("SELECT phone FROM contacts"), vec![vec![text("999")]]);
        assert_converged(&server, &[&laptop, &phone]);

        // Delete later than the update: the row is gone, and the older update,
        // pushed after the delete, does not bring it back.
        laptop.exec("UPDATE contacts SET phone = 'stale' WHERE id = 'a';");
        std::thread::sleep(std::time::Duration::from_millis(20));
        phone.exec("DELETE FROM contacts WHERE id = 'a';");
        phone.sync().unwrap();
        laptop.sync().unwrap();
        phone.sync().unwrap();
        assert!(server.rows(ALL).is_empty(), "a stale update resurrected a deleted row");
        assert_converged(&server, &[&laptop, &phone]);
    });
}

#[test]
fn insert_update_delete_before_any_sync_leaves_nothing() {
    on_every_store(|store| {
        let (_dir, server, laptop, phone) = setup(store);
        laptop.exec("INSERT INTO contacts VALUES ('a', 'Ada', NULL, '111');");
        laptop.exec("UPDATE contacts SET phone = '222' WHERE id = 'a';");
        laptop.exec("DELETE FROM contacts WHERE id = 'a';");
        laptop.exec("INSERT INTO contacts VALUES ('b', 'Bob', NULL, NULL);");
        laptop.exec("UPDATE contacts SET id = 'b2' WHERE id = 'b';");
        laptop.sync().unwrap();
        phone.sync().unwrap();
        assert_eq!(server.rows("SELECT id FROM contacts"), vec![vec![text("b2")]]);
        assert_converged(&server, &[&laptop, &phone]);
    });
}

#[test]
fn pulled_changes_write_nothing_to_the_outbox() {
    on_every_store(|store| {
        let (_dir, server, laptop, phone) = setup(store);
        laptop.exec("INSERT INTO contacts VALUES ('a', 'Ada', NULL, '111');");
        laptop.sync().unwrap();
        let report = phone.sync().unwrap();
        assert_eq!(report.applied, 1);
        assert_eq!(phone.pending(), 0);
        assert_eq!(phone.sync().unwrap().pushed, 0, "no echo");
        assert_converged(&server, &[&laptop, &phone]);
    });
}

/// Rowsync writes pulled rows with triggers off where the synced tables
/// carry only its own (no echo at no cost), and with every trigger firing
/// where the app has triggers of its own on them: those must see pulled
/// rows as they see any write. Either way nothing echoes into the outbox,
/// and writes made afterwards on the very connection that applied the
/// page are captured.
#[test]
fn the_apps_own_triggers_see_pulled_rows_and_capture_resumes_after_a_pull() {
    let (dir, server, laptop, phone) = setup(&TestStore::Sqlite);
    let tablet = Device::init(dir.path(), "tablet", &server.url());
    phone.exec(
        "CREATE TABLE contact_log (id TEXT, name TEXT);
         CREATE TRIGGER log_contacts AFTER INSERT ON contacts BEGIN INSERT INTO contact_log VALUES (NEW.id, NEW.name); END;
         CREATE TRIGGER log_renames AFTER UPDATE OF name ON contacts BEGIN INSERT INTO contact_log VALUES (NEW.id, NEW.name); END;",
    );
    laptop.exec("INSERT INTO contacts VALUES ('a', 'Ada', NULL, '111');");
    laptop.sync().unwrap();
    for device in [&phone, &tablet] {
        let mut replica = device.replica();
        let transport = rowsync_client::HttpTransport::connect(&replica.server_access().unwrap()).unwrap();
        let report = rowsync_client::sync(&mut replica, &transport, Default::default()).unwrap();
        assert_eq!(report.applied, 1, "{}", device.name);
        assert_eq!(device.pending(), 0, "{}: a pulled row echoed into the outbox", device.name);
        replica.connection().execute("UPDATE contacts SET phone = '222' WHERE id = 'a'", []).unwrap();
        assert_eq!(device.pending(), 1, "{}: a write after the pull escaped capture", device.name);
    }
    laptop.exec("UPDATE contacts SET name = 'Ada L.' WHERE id = 'a';");
    laptop.sync().unwrap();
    phone.sync().unwrap();
    assert_eq!(
        phone.rows("SELECT id, name FROM contact_log"),
        vec![vec![text("a"), text("Ada")], vec![text("a"), text("Ada L.")]],
        "the app's triggers saw the pulled insert and the pulled rename"
    );
    tablet.sync().unwrap();
    laptop.sync().unwrap();
    assert_converged(&server, &[&laptop, &phone, &tablet]);
}

#[test]
fn a_ten_thousand_row_backlog_moves_in_pages() {
    on_every_store(|store| {
        let (_dir, server, laptop, phone) = setup(store);
        laptop.exec(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 10000)
             INSERT INTO contacts SELECT printf('k%05d', i), 'name ' || i, NULL, i FROM n;",
        );
        let options = rowsync_client::SyncOptions { pull_limit: 700, push_limit: 900, ..Default::default() };
        let pushed = laptop.sync_with(options).unwrap();
        assert_eq!(pushed.push_batches, 12);
        assert_eq!(pushed.acknowledged, 10_000);
        assert_eq!(pushed.pulled, 0, "the server must not send a site's own changes back to it");
        // Nor count them toward a page: the laptop's pull after its push
        // skips its 10,000 writes in one page, not one per 700 positions.
        assert!(pushed.pull_pages <= 2, "{store:?}: {} pull pages for the laptop's own writes", pushed.pull_pages);
        let pulled = phone.sync_with(options).unwrap();
        assert_eq!(pulled.pulled, 10_000);
        assert!(pulled.pull_pages >= 15);
        assert_eq!(server.rows("SELECT count(*) FROM contacts"), vec![vec![rowsync_proto::Value::Integer(10_000)]]);
        assert_converged(&server, &[&laptop, &phone]);
    });
}

/// A batch is read while the one before it is on its way to the server;
/// where the two carry the same row, it is read again after the
/// acknowledgement. Either way each row arrives with its last values, and
/// the batches' ids stay known (the next sync is not taken for a copy's).
#[test]
fn rows_written_again_across_batches_read_ahead_arrive_whole() {
    on_every_store(|store| {
        let (_dir, server, laptop, phone) = setup(store);
        laptop.exec(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 12)
             INSERT INTO contacts SELECT 'k' || i, 'name ' || i, NULL, NULL FROM n;
             UPDATE contacts SET phone = 'p' || substr(id, 2) WHERE id IN ('k1', 'k5', 'k9');
             DELETE FROM contacts WHERE id = 'k2';
             INSERT INTO contacts VALUES ('k13', 'name 13', NULL, NULL);
             UPDATE contacts SET name = 'renamed' WHERE id IN ('k1', 'k13');",
        );
        let options = rowsync_client::SyncOptions { push_limit: 4, ..Default::default() };
        let pushed = laptop.sync_with(options).unwrap();
        assert_eq!(pushed.acknowledged, 19);
        assert!(pushed.notes.is_empty(), "{:?}", pushed.notes);
        laptop.exec("UPDATE contacts SET email = 'x@example.com' WHERE id = 'k3';");
        let again = laptop.sync_with(options).unwrap();
        assert_eq!(again.acknowledged, 1);
        assert!(again.notes.is_empty(), "taken for a copy: {:?}", again.notes);
        phone.sync().unwrap();
        assert_eq!(server.rows("SELECT count(*) FROM contacts"), vec![vec![rowsync_proto::Value::Integer(12)]]);
        assert_eq!(
            server.rows("SELECT name, phone FROM contacts WHERE id = 'k1'"),
            vec![vec![text("renamed"), text("p1")]]
        );
        assert_converged(&server, &[&laptop, &phone]);
    });
}

/// The batch read ahead stays known when the one before it is
/// acknowledged: should the server apply it and its answer be lost, the
/// retry (a new batch) names it, and is not taken for a copy's.
#[test]
fn a_batch_read_ahead_whose_answer_is_lost_is_retried_as_this_replicas() {
    use rowsync_client::outbox::{acknowledge, next_batch};
    use rowsync_client::Transport;
    let (_dir, server, laptop, _phone) = setup(&TestStore::Sqlite);
    laptop.exec("INSERT INTO contacts (id, name) VALUES ('1', 'one'), ('2', 'two'), ('3', 'three'), ('4', 'four');");
    let replica = laptop.replica();
    let transport = rowsync_client::HttpTransport::new(&server.url(), None);
    let first = next_batch(&replica, 0, 2, usize::MAX).unwrap().unwrap();
    let second = next_batch(&replica, first.last_id, 2, usize::MAX).unwrap().unwrap();
    let answer = transport.push(&first.request).unwrap();
    acknowledge(&replica, &first, answer.acked_seq).unwrap();
    // Applied by the server; the answer never arrives.
    transport.push(&second.request).unwrap();
    let report = laptop.sync().unwrap();
    assert!(report.notes.is_empty(), "taken for a copy of itself: {:?}", report.notes);
    assert_eq!(server.rows("SELECT count(*) FROM contacts"), vec![vec![rowsync_proto::Value::Integer(4)]]);
    assert_converged(&server, &[&laptop]);
}

/// A batch read ahead while the push before it was on its way is dropped
/// when that push fails: sent first, it would move the server's high-water
/// mark past the failed batch's writes, which would then be skipped as
/// repeats and acknowledged away.
#[test]
fn a_batch_read_ahead_is_dropped_when_the_push_before_it_fails() {
    use rowsync_core::engine::{Done, Event, Step};
    let (_dir, mut server, laptop, _phone) = setup(&TestStore::Sqlite);
    laptop.exec("INSERT INTO contacts (id, name) VALUES ('1', 'one'), ('2', 'two'), ('3', 'three'), ('4', 'four');");
    let mut replica = laptop.replica();
    let transport = rowsync_client::HttpTransport::new(&server.url(), None);
    let mut driver = rowsync_client::Driver::new(&mut replica, &transport, 1_000);
    let push = Step::Push { limit: 2, bytes: 1 << 20 };
    server.stop();
    assert!(matches!(driver.run(&push), Event::Failed(_)), "pushed to a stopped server");
    server.restart();
    // The same driver pushes again, as an engine retrying the step would.
    while matches!(driver.run(&push), Event::Done(Done::Pushed { .. })) {}
    drop(driver);
    assert_eq!(server.rows("SELECT count(*) FROM contacts"), vec![vec![rowsync_proto::Value::Integer(4)]]);
    assert_eq!(laptop.pending(), 0);
}

#[test]
fn rows_present_before_init_are_queued_and_init_twice_is_harmless() {
    on_every_store(|store| {
        let dir = TempDir::new().unwrap();
        let server = TestServer::start_on(store, dir.path(), CONTACTS_SCHEMA);
        let path = dir.path().join("existing.db");
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch(
            "CREATE TABLE contacts (id TEXT PRIMARY KEY, name TEXT NOT NULL, email TEXT, phone TEXT);
             INSERT INTO contacts VALUES ('x', 'Existing', NULL, NULL);",
        )
        .unwrap();
        drop(conn);
        let schema = server.schema.clone();
        rowsync_client::Replica::init(&path, &server.url(), &schema, None).unwrap();
        rowsync_client::Replica::init(&path, &server.url(), &schema, None).unwrap();
        let device = Device { name: "existing".into(), path };
        assert_eq!(device.pending(), 1);
        device.sync().unwrap();
        assert_eq!(server.rows("SELECT id FROM contacts"), vec![vec![text("x")]]);
    });
}

#[test]
fn a_local_table_that_differs_from_the_server_is_refused() {
    on_every_store(|store| {
        let dir = TempDir::new().unwrap();
        let server = TestServer::start_on(store, dir.path(), CONTACTS_SCHEMA);
        let path = dir.path().join("different.db");
        rusqlite::Connection::open(&path)
            .unwrap()
            .execute_batch("CREATE TABLE contacts (id TEXT PRIMARY KEY, name TEXT, nickname TEXT, phone INTEGER);")
            .unwrap();
        let err = rowsync_client::Replica::init(&path, &server.url(), &server.schema, None).err().unwrap().to_string();
        assert!(err.contains("column email is missing locally"), "{err}");
        assert!(err.contains("column phone is INTEGER locally but TEXT on the server"), "{err}");
        assert!(err.contains("column nickname exists locally but not on the server"), "{err}");
    });
}

/// A backlog bigger than several stamping transactions (1,000 entries
/// each) is stamped whole: the last row written carries its version, and
/// all of it reaches the server.
#[test]
fn a_backlog_of_several_stamping_transactions_is_stamped_and_synced_whole() {
    let dir = TempDir::new().unwrap();
    let server = TestServer::start(dir.path(), CONTACTS_SCHEMA);
    let device = Device::init(dir.path(), "laptop", &server.url());
    let inserts: String =
        (0..2_600).map(|i| format!("INSERT INTO contacts (id, name) VALUES ('c{i:05}', 'n{i}');")).collect();
    device.exec(&format!("BEGIN; {inserts} UPDATE contacts SET phone = 'p' WHERE id >= 'c02000'; COMMIT;"));
    let replica = device.replica();
    let version = |key: &str, column: &str| replica.cell_version("contacts", &[text(key)], column).unwrap();
    assert!(version("c02599", "phone").is_some(), "the last write of the backlog is stamped");
    assert!(version("c00000", "name").is_some());
    assert_eq!(device.pending(), 3_200);
    device.sync().unwrap();
    assert_eq!(device.pending(), 0);
    assert_eq!(server.rows("SELECT count(*) FROM contacts"), vec![vec![rowsync_proto::Value::Integer(2_600)]]);
    assert_eq!(device.rows(ALL), server.rows(ALL));
}

/// Behind a backlog large enough to be stamped as it is pushed, a pulled
/// page is still applied only once every local write has its version: an
/// edit made here after the phone's edit of the same cell keeps winning,
/// though the phone's arrives first (invariant 5; the clock must not
/// observe the phone's version before the laptop's write is versioned).
#[test]
fn a_later_edit_behind_a_large_backlog_outranks_an_earlier_one_pulled_first() {
    let (_dir, server, laptop, phone) = setup(&TestStore::Sqlite);
    laptop.exec("INSERT INTO contacts VALUES ('a', 'Ada', NULL, NULL);");
    laptop.sync().unwrap();
    phone.sync().unwrap();

    phone.exec("UPDATE contacts SET name = 'from the phone' WHERE id = 'a';");
    phone.sync().unwrap();
    std::thread::sleep(std::time::Duration::from_millis(5));
    laptop.exec("UPDATE contacts SET name = 'from the laptop' WHERE id = 'a';");
    laptop.exec(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2000) \
         INSERT INTO contacts SELECT 'n' || i, 'Name', NULL, NULL FROM n;",
    );
    laptop.sync().unwrap();
    phone.sync().unwrap();

    let name = "SELECT name FROM contacts WHERE id = 'a'";
    for rows in [server.rows(name), laptop.rows(name), phone.rows(name)] {
        assert_eq!(rows, vec![vec![text("from the laptop")]]);
    }
    assert_converged(&server, &[&laptop, &phone]);
}

/// A replica that joins late downloads every row in pages and then pulls
/// as the others do; it ends where replicas that pulled every change as it
/// came end, and its versions decide later conflicts as theirs do.
#[test]
fn a_replica_that_joins_late_converges_with_those_that_pulled_all_along() {
    on_every_store(|store| {
        let (dir, server, laptop, phone) = setup(store);
        let small_pages = rowsync_client::SyncOptions { pull_limit: 3, push_limit: 4, ..Default::default() };
        for round in 0u32..6 {
            laptop.exec(&format!(
                "INSERT INTO contacts VALUES ('l{round}', 'laptop {round}', NULL, NULL);
                 UPDATE contacts SET email = 'e{round}@example.com' WHERE id IN ('l0', 'l2');"
            ));
            phone.exec(&format!(
                "INSERT INTO contacts VALUES ('p{round}', 'phone {round}', NULL, '{round}');
                 UPDATE contacts SET phone = 'ph{round}' WHERE id IN ('l0', 'l2');
                 DELETE FROM contacts WHERE id = 'p{}';",
                round.saturating_sub(2)
            ));
            if round == 3 {
                // Deleted and written again under the same key.
                laptop.exec(
                    "DELETE FROM contacts WHERE id = 'l1'; INSERT INTO contacts VALUES ('l1', 'back', NULL, NULL);",
                );
            }
            laptop.sync_with(small_pages).unwrap();
            phone.sync_with(small_pages).unwrap();
        }
        let tablet = Device::init(dir.path(), "tablet", &server.url());
        let first = tablet.sync_with(small_pages).unwrap();
        assert!(first.pull_pages >= 3, "{store:?}: downloaded in {} pages", first.pull_pages);
        laptop.sync().unwrap();
        assert_converged(&server, &[&laptop, &phone, &tablet]);

        // From here all three pull incrementally: edits of the same cells
        // on every device, the tablet's last, decide alike everywhere.
        laptop.exec("UPDATE contacts SET name = 'from laptop' WHERE id IN ('l0', 'p5');");
        phone.exec(
            "UPDATE contacts SET name = 'from phone' WHERE id IN ('l0', 'l4'); DELETE FROM contacts WHERE id = 'l3';",
        );
        tablet.exec("UPDATE contacts SET name = 'from tablet' WHERE id = 'l0'; UPDATE contacts SET email = NULL WHERE id = 'l4';");
        for device in [&laptop, &phone, &tablet, &laptop, &phone] {
            device.sync_with(small_pages).unwrap();
        }
        assert_converged(&server, &[&laptop, &phone, &tablet]);
        assert_eq!(
            tablet.rows("SELECT name, email, phone FROM contacts WHERE id IN ('l0', 'l4', 'p5') ORDER BY id"),
            vec![
                vec![text("from tablet"), text("e5@example.com"), text("ph5")],
                vec![text("from phone"), rowsync_proto::Value::Null, rowsync_proto::Value::Null],
                vec![text("from laptop"), rowsync_proto::Value::Null, text("5")],
            ]
        );
        assert!(tablet.rows("SELECT * FROM contacts WHERE id IN ('l3', 'p0', 'p3')").is_empty());
        assert_eq!(tablet.rows("SELECT name FROM contacts WHERE id = 'l1'"), vec![vec![text("back")]]);
    });
}
