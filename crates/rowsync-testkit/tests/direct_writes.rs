//! Writes made directly in the server's database (another program, an
//! admin in a shell) on synced tables reach the replicas at their next
//! pull, merged with their offline edits by the table's rule; rowsync's own
//! writes are not noted twice. On every store.

use rowsync_proto::Value;
use rowsync_testkit::{on_every_store, server_stores, text, Device, TestServer, TestStore};

const SCHEMA: &str = "CREATE TABLE contacts (id TEXT PRIMARY KEY, name TEXT NOT NULL, email TEXT, phone TEXT);";

fn contacts(device: &Device) -> Vec<Vec<Value>> {
    device.rows("SELECT id, name, email, phone FROM contacts ORDER BY id")
}

fn server_contacts(server: &TestServer) -> Vec<Vec<Value>> {
    server.rows("SELECT id, name, email, phone FROM contacts ORDER BY id")
}

fn noted(server: &TestServer) -> Value {
    server.rows("SELECT count(*) FROM rowsync_direct")[0][0].clone()
}

#[test]
fn inserts_updates_and_deletes_made_in_the_database_reach_every_replica() {
    on_every_store(inserts_updates_and_deletes_on);
}

fn inserts_updates_and_deletes_on(store: &TestStore) {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_on(store, dir.path(), SCHEMA);
    let laptop = Device::init(dir.path(), "laptop", &server.url());
    let phone = Device::init(dir.path(), "phone", &server.url());
    laptop.exec("INSERT INTO contacts (id, name) VALUES ('c1', 'Ada'), ('c2', 'Grace')");
    laptop.sync().unwrap();
    assert_eq!(noted(&server), Value::Integer(0), "rowsync's own writes are not noted");

    // One transaction of the admin's: an insert, an update, a delete.
    server.exec(
        "BEGIN; INSERT INTO contacts (id, name, email) VALUES ('c3', 'Linus', 'linus@example.com');
         UPDATE contacts SET email = 'ada@example.com' WHERE id = 'c1';
         DELETE FROM contacts WHERE id = 'c2'; COMMIT;",
    );
    phone.sync().unwrap();
    laptop.sync().unwrap();
    let expected = vec![
        vec![text("c1"), text("Ada"), text("ada@example.com"), Value::Null],
        vec![text("c3"), text("Linus"), text("linus@example.com"), Value::Null],
    ];
    assert_eq!(contacts(&phone), expected);
    assert_eq!(contacts(&laptop), expected);
    assert_eq!(server_contacts(&server), expected);
    assert_eq!(noted(&server), Value::Integer(0), "drained");

    // A key changed in place: the old row goes, the new one comes.
    server.exec("UPDATE contacts SET id = 'c9' WHERE id = 'c3'");
    phone.sync().unwrap();
    assert_eq!(phone.rows("SELECT id FROM contacts ORDER BY id"), vec![vec![text("c1")], vec![text("c9")]]);
}

#[test]
fn a_direct_write_merges_with_offline_edits_field_by_field() {
    on_every_store(merges_field_by_field_on);
}

fn merges_field_by_field_on(store: &TestStore) {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_on(store, dir.path(), SCHEMA);
    let laptop = Device::init(dir.path(), "laptop", &server.url());
    laptop.exec("INSERT INTO contacts (id, name) VALUES ('c1', 'Ada')");
    laptop.sync().unwrap();

    // Offline, the laptop edits the phone; meanwhile an admin fixes the name.
    laptop.exec("UPDATE contacts SET phone = '555-0101' WHERE id = 'c1'");
    std::thread::sleep(std::time::Duration::from_millis(5));
    server.exec("UPDATE contacts SET name = 'Ada Lovelace' WHERE id = 'c1'");
    laptop.sync().unwrap();
    let both = vec![vec![text("c1"), text("Ada Lovelace"), Value::Null, text("555-0101")]];
    assert_eq!(contacts(&laptop), both);
    assert_eq!(server_contacts(&server), both);

    // The same column: the later write wins, whoever made it.
    server.exec("UPDATE contacts SET phone = '555-0199' WHERE id = 'c1'");
    std::thread::sleep(std::time::Duration::from_millis(5));
    laptop.exec("UPDATE contacts SET phone = '555-0202' WHERE id = 'c1'");
    laptop.sync().unwrap();
    assert_eq!(contacts(&laptop)[0][3], text("555-0202"));
    assert_eq!(server_contacts(&server)[0][3], text("555-0202"));

    // A direct delete against an older offline edit: the row stays deleted.
    laptop.exec("UPDATE contacts SET email = 'old@example.com' WHERE id = 'c1'");
    std::thread::sleep(std::time::Duration::from_millis(5));
    server.exec("DELETE FROM contacts WHERE id = 'c1'");
    laptop.sync().unwrap();
    assert!(contacts(&laptop).is_empty());
    assert!(server_contacts(&server).is_empty());
}

/// Rows put in the server's table with its capture triggers off (a
/// restore, say) are rows the server holds no state of; a device inserting
/// under one of their keys writes over it, with the rows new to the server
/// in the same push (PostgreSQL copies new rows in, and a row already under
/// the key sends them back to the ordinary upsert).
#[test]
fn an_insert_over_a_row_put_there_unseen_writes_over_it() {
    on_every_store(|store| {
        let dir = tempfile::tempdir().unwrap();
        let server = TestServer::start_on(store, dir.path(), SCHEMA);
        let unseen = "INSERT INTO contacts (id, name, email) VALUES ('c2', 'restored', 'old@example.com')";
        server.exec(&match store.name() {
            "postgres" => format!("BEGIN; SET LOCAL rowsync.applying = 'on'; {unseen}; COMMIT;"),
            "mysql" => format!("SET @rowsync_applying = 1; {unseen};"),
            _ => format!(
                "BEGIN; INSERT INTO rowsync_applying (id) VALUES (1); {unseen}; DELETE FROM rowsync_applying; COMMIT;"
            ),
        });
        assert_eq!(noted(&server), Value::Integer(0), "{}: put there unseen", store.name());
        let laptop = Device::init(dir.path(), "laptop", &server.url());
        laptop.exec("INSERT INTO contacts (id, name) VALUES ('c1', 'Ada'), ('c2', 'Grace'), ('c3', 'Linus')");
        let report = laptop.sync().unwrap();
        assert_eq!(report.rejected, 0, "{}", store.name());
        let expected = vec![
            vec![text("c1"), text("Ada"), Value::Null, Value::Null],
            vec![text("c2"), text("Grace"), Value::Null, Value::Null],
            vec![text("c3"), text("Linus"), Value::Null, Value::Null],
        ];
        assert_eq!(server_contacts(&server), expected, "{}", store.name());
        let phone = Device::init(dir.path(), "phone", &server.url());
        phone.sync().unwrap();
        assert_eq!(contacts(&phone), expected, "{}", store.name());
    });
}

/// Direct writes in many transactions at once, beside pushes through two
/// server processes: afterwards every replica equals the server's table.
#[test]
fn concurrent_direct_writes_and_pushes_through_two_servers_converge() {
    on_every_store(|store| {
        let dir = tempfile::tempdir().unwrap();
        let server = TestServer::start_on(store, dir.path(), SCHEMA);
        let second = server.another_instance();
        let laptop = Device::init(dir.path(), "laptop", &server.url());
        let phone = Device::init(dir.path(), "phone", &format!("http://{}", second.addr));
        for i in 0..20 {
            laptop.exec(&format!("INSERT INTO contacts (id, name) VALUES ('r{i:02}', 'replica {i}')"));
        }
        std::thread::scope(|scope| {
            for writer in 0..3 {
                let server = &server;
                scope.spawn(move || {
                    for i in 0..15 {
                        let id = format!("d{writer}{i:02}");
                        server.exec(&format!(
                            "BEGIN; INSERT INTO contacts (id, name) VALUES ('{id}', 'direct'); \
                             UPDATE contacts SET email = 'e{i}' WHERE id = '{id}'; COMMIT;"
                        ));
                        if i % 3 == 0 {
                            server.exec(&format!("DELETE FROM contacts WHERE id = '{id}'"));
                        }
                    }
                });
            }
            scope.spawn(|| {
                for _ in 0..5 {
                    laptop.sync().unwrap();
                    phone.exec("UPDATE contacts SET phone = 'p' WHERE id LIKE 'r0%'");
                    phone.sync().unwrap();
                }
            });
        });
        for _ in 0..2 {
            laptop.sync().unwrap();
            phone.sync().unwrap();
        }
        let on_server = server_contacts(&server);
        assert_eq!(on_server.len(), 20 + 3 * 10, "{}", store.name());
        assert_eq!(contacts(&laptop), on_server, "{}", store.name());
        assert_eq!(contacts(&phone), on_server, "{}", store.name());
        assert_eq!(noted(&server), Value::Integer(0));
    });
}

/// A pull waiting for news answers soon after a direct write commits.
#[test]
fn a_direct_write_wakes_a_waiting_pull() {
    on_every_store(|store| {
        let dir = tempfile::tempdir().unwrap();
        let server = TestServer::start_on(store, dir.path(), SCHEMA);
        let url = format!("{}/v1/pull?cursor=0&wait=20", server.url());
        let started = std::time::Instant::now();
        let answer = std::thread::scope(|scope| {
            let waiting = scope.spawn(|| ureq::get(&url).call().unwrap().into_string().unwrap());
            std::thread::sleep(std::time::Duration::from_millis(300));
            server.exec("INSERT INTO contacts (id, name) VALUES ('w1', 'Woken')");
            waiting.join().unwrap()
        });
        assert!(answer.contains("Woken"), "{answer}");
        assert!(started.elapsed() < std::time::Duration::from_secs(5), "{:?} on {}", started.elapsed(), store.name());
    });
}

/// A row written directly into a private table belongs to the user its
/// owner column names, or to nobody when it names no valid user.
#[test]
fn a_direct_write_to_a_private_table_goes_to_the_user_it_names() {
    on_every_store(|store| {
        let dir = tempfile::tempdir().unwrap();
        let schema = "CREATE TABLE notes (id TEXT PRIMARY KEY, body TEXT, owner TEXT);";
        let server = TestServer::start_configured(store, dir.path(), schema, |config| {
            config.auth = rowsync_server::Auth::Tokens;
            config.owners.insert("notes".into(), "owner".into());
        });
        let (alice, bob) = (server.token("alice", None), server.token("bob", None));
        let alice = Device::init_with_token(dir.path(), "alice", &server.url(), Some(&alice));
        let bob = Device::init_with_token(dir.path(), "bob", &server.url(), Some(&bob));
        server.exec("INSERT INTO notes (id, body, owner) VALUES ('n1', 'for alice', 'alice'), ('n2', 'for nobody', 'Not A User!')");
        alice.sync().unwrap();
        bob.sync().unwrap();
        assert_eq!(alice.rows("SELECT id FROM notes"), vec![vec![text("n1")]], "{}", store.name());
        assert!(bob.rows("SELECT id FROM notes").is_empty(), "{}", store.name());
        // Deleted directly, it stays hers: the delete reaches her devices.
        server.exec("DELETE FROM notes WHERE id = 'n1'");
        alice.sync().unwrap();
        assert!(alice.rows("SELECT id FROM notes").is_empty(), "{}: the delete reached alice", store.name());
    });
}

#[test]
fn a_long_direct_transaction_that_commits_late_is_not_skipped() {
    // Positions follow commit order, not the order writes began in: a
    // transaction that wrote first and commits after another one's rows
    // were pulled still reaches the replica. (SQLite has one writer at a
    // time, so only the stores with a server of their own can interleave.)
    for store in server_stores() {
        let dir = tempfile::tempdir().unwrap();
        let server = TestServer::start_on(&store, dir.path(), SCHEMA);
        let phone = Device::init(dir.path(), "phone", &server.url());
        let mut long = server.session();
        long.exec("BEGIN");
        long.exec("INSERT INTO contacts (id, name) VALUES ('late', 'Began first')");
        server.exec("INSERT INTO contacts (id, name) VALUES ('early', 'Committed first')");
        phone.sync().unwrap();
        assert_eq!(phone.rows("SELECT id FROM contacts"), vec![vec![text("early")]], "{}", store.name());
        long.exec("UPDATE contacts SET email = 'late@example.com' WHERE id = 'early'; COMMIT");
        phone.sync().unwrap();
        assert_eq!(
            phone.rows("SELECT id, email FROM contacts ORDER BY id"),
            vec![vec![text("early"), text("late@example.com")], vec![text("late"), Value::Null]],
            "{}",
            store.name()
        );
        assert_eq!(noted(&server), Value::Integer(0), "{}: drained", store.name());
    }
}
