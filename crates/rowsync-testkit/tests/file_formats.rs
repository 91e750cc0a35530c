//! Files made by earlier rowsync versions, kept as they were in
//! `tests/data/format-N/STORE/` (a replica, `laptop.db`, with writes synced,
//! writes stamped but not pushed and writes not yet stamped; and the server
//! database it synced with: the embedded store's `server.db`, a dump
//! `server.sql` of the PostgreSQL or MariaDB database): today's rowsync
//! opens them, upgrades them in place, and syncs what they hold. A replica
//! file or a server database of a newer format is refused with a clear
//! message and left alone.
//!
//! Each format's files are made once, by the rowsync that writes it, with
//! `tests/data/make-format-files N` (which says what the replica holds).

use std::path::{Path, PathBuf};

use rowsync_client::{ClientError, Replica};
use rowsync_core::parse_schema;
use rowsync_proto::Value;
use rowsync_server::{Auth, BackgroundServer, DatabaseUrl, ServerConfig};
use rowsync_testkit::{
    exec_database, on_every_store, query_database, query_rows, text, Device, TestServer, TestStore, CONTACTS_SCHEMA,
};
use tempfile::TempDir;

const ALL: &str = "SELECT id, name, email, phone FROM contacts ORDER BY id";

/// The kept files of `format` for `store`: a copy of the replica in `dir`,
/// and the server database as it was (the file copied, or the dump run
/// into a fresh database).
fn kept(format: u32, store: &TestStore, dir: &Path) -> (PathBuf, DatabaseUrl) {
    let from = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/data/format-{format}/{}", store.name()));
    let replica = dir.join("laptop.db");
    std::fs::copy(from.join("laptop.db"), &replica).unwrap();
    let database = match store {
        TestStore::Sqlite => {
            let server = dir.join("server.db");
            std::fs::copy(from.join("server.db"), &server).unwrap();
            DatabaseUrl::Sqlite(server)
        }
        _ => {
            let database = store.fresh_database(dir);
            exec_database(&database, &std::fs::read_to_string(from.join("server.sql")).unwrap());
            database
        }
    };
    (replica, database)
}

/// A copy of the kept format-1 replica in `dir`, changed by `sql` first.
fn kept_replica_changed(dir: &Path, sql: &str) -> PathBuf {
    let (replica, _) = kept(1, &TestStore::Sqlite, dir);
    rusqlite::Connection::open(&replica).unwrap().execute_batch(sql).unwrap();
    replica
}

fn meta(path: &Path, key: &str) -> Value {
    let rows = query_rows(
        &rusqlite::Connection::open(path).unwrap(),
        &format!("SELECT value FROM _rowsync_meta WHERE key = '{key}'"),
    );
    rows.into_iter().next().map_or(Value::Null, |mut row| row.remove(0))
}

#[test]
fn a_replica_and_a_server_database_of_format_1_open_and_sync_what_they_hold() {
    on_every_store(|store| {
        let dir = TempDir::new().unwrap();
        let (replica, database) = kept(1, store, dir.path());
        let schema = parse_schema(CONTACTS_SCHEMA).unwrap();
        let mut config = ServerConfig::new(database.clone(), Some(schema.clone()));
        config.auth = Auth::Off;
        let server = BackgroundServer::start(config, ([127, 0, 0, 1], 0).into()).unwrap();
        let key = if store.name() == "mysql" { "`key`" } else { "key" };
        let format = query_database(&database, &format!("SELECT value FROM rowsync_meta WHERE {key} = 'format'"));
        assert_eq!(format, vec![vec![text(&rowsync_server::store::FORMAT.to_string())]], "the database is marked");
        // The server it synced with listened elsewhere: pointed at this one.
        Replica::init(&replica, &server.url(), &schema, None).unwrap();
        assert_eq!(meta(&replica, "format"), Value::Integer(rowsync_client::replica::FORMAT));
        let laptop = Device { name: "laptop".into(), path: replica };
        assert_eq!(laptop.pending(), 5, "the kept writes not pushed yet");
        laptop.sync().unwrap();
        let phone = Device::init(dir.path(), "phone", &server.url());
        phone.sync().unwrap();
        let expected = vec![
            vec![text("c1"), text("Ada L."), text("ada@example.com"), text("111")],
            vec![text("c2"), text("Bo"), Value::Null, text("333")],
            vec![text("c4"), text("Di"), text("di@example.com"), Value::Null],
            vec![text("c5"), text("Ed"), Value::Null, text("555")],
        ];
        assert_eq!(query_database(&database, ALL), expected);
        for device in [&laptop, &phone] {
            assert_eq!(device.rows(ALL), expected, "{}", device.name);
            assert_eq!(device.pending(), 0, "{}", device.name);
        }
        server.stop();
    });
}

#[test]
fn a_replica_file_of_a_newer_format_is_refused_and_left_alone() {
    let dir = TempDir::new().unwrap();
    let replica = kept_replica_changed(
        dir.path(),
        "UPDATE _rowsync_meta SET value = 99 WHERE key = 'format'; DELETE FROM _rowsync_meta WHERE key = 'last_sync';",
    );
    let error = Replica::open(&replica).err().expect("a file of a newer format is refused");
    assert!(matches!(error, ClientError::FormatTooNew { format: 99, .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("newer rowsync") && message.contains("upgrade rowsync"), "{message}");
    assert_eq!(meta(&replica, "last_sync"), Value::Null, "the file was written to");
}

/// Files made before formats were numbered (format 0) carry no format: they
/// are taken for the oldest, brought up to date, and marked.
#[test]
fn a_replica_file_without_a_format_is_upgraded_in_place() {
    let dir = TempDir::new().unwrap();
    let replica = kept_replica_changed(dir.path(), "DELETE FROM _rowsync_meta WHERE key = 'format'");
    let opened = Replica::open(&replica).unwrap();
    assert_eq!(opened.status().unwrap().pending_changes, 5);
    assert_eq!(meta(&replica, "format"), Value::Integer(rowsync_client::replica::FORMAT));
}

/// A server database of a newer format is refused when the server starts,
/// with a message that says to upgrade rowsync, on every store.
#[test]
fn a_server_database_of_a_newer_format_is_refused_at_start() {
    on_every_store(|store| {
        let dir = TempDir::new().unwrap();
        let mut server = TestServer::start_on(store, dir.path(), CONTACTS_SCHEMA);
        server.stop();
        let key = if store.name() == "mysql" { "`key`" } else { "key" };
        server.exec(&format!("UPDATE rowsync_meta SET value = '99' WHERE {key} = 'format'"));
        let mut config = ServerConfig::new(server.database.clone(), Some(server.schema.clone()));
        config.auth = Auth::Off;
        let error =
            BackgroundServer::start(config, ([127, 0, 0, 1], 0).into()).err().expect("a newer database is refused");
        let message = error.to_string();
        assert!(message.contains("newer rowsync") && message.contains("format 99"), "{}: {message}", store.name());
    });
}
