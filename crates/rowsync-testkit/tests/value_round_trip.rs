//! Every value survives a trip from one device through the server's
//! database to another device, bit for bit, on every store; and the server's
//! tables hold plain rows of natural types that other programs can read.

use rowsync_proto::Value;
use rowsync_testkit::{on_every_store, Device, TestServer, TestStore};
use tempfile::TempDir;

const SCHEMA: &str = "CREATE TABLE samples (
    id TEXT PRIMARY KEY,
    i INTEGER,
    r REAL,
    t TEXT,
    b BLOB,
    flag BOOLEAN
);";

fn samples() -> Vec<(&'static str, Value, Value, Value, Value, Value)> {
    use Value::*;
    vec![
        ("min", Integer(i64::MIN), Real(-0.0), Text(String::new()), Blob(vec![0, 0, 1]), Integer(0)),
        ("max", Integer(i64::MAX), Real(f64::MIN_POSITIVE / 8.0), Text("Zoë 😀 日本".into()), Blob(vec![]), Integer(1)),
        ("zero", Integer(0), Real(1e300), Text(" trailing space ".into()), Blob(vec![255, 0, 254]), Null),
        ("null", Null, Null, Null, Null, Null),
        ("neg", Integer(-1), Real(-1.7976931348623157e308), Text("'quote\" \\ back".into()), Blob(vec![0]), Integer(0)),
        ("Case", Integer(42), Real(0.1 + 0.2), Text("case".into()), Blob(b"x".to_vec()), Integer(1)),
        ("case", Integer(43), Real(5e-324), Text("CASE".into()), Blob(b"y".to_vec()), Integer(0)),
        // What a line-based bulk format must escape (PostgreSQL copies new rows in).
        (
            "ctl",
            Integer(7),
            Real(f64::MAX),
            Text("tab\there\nline\r\n\\.\n\\N\\\\x00 end\\".into()),
            Blob(b"\\x5c\t\n\r".to_vec()),
            Integer(1),
        ),
    ]
}

fn round_trip_on(store: &TestStore) {
    let dir = TempDir::new().unwrap();
    let server = TestServer::start_on(store, dir.path(), SCHEMA);
    let writer = Device::init(dir.path(), "writer", &server.url());
    let reader = Device::init(dir.path(), "reader", &server.url());
    let conn = writer.plain();
    for (id, i, r, t, b, flag) in samples() {
        let values: Vec<rusqlite::types::Value> =
            [Value::Text(id.into()), i, r, t, b, flag].iter().map(rowsync_client::to_sql).collect();
        conn.execute("INSERT INTO samples VALUES (?, ?, ?, ?, ?, ?)", rusqlite::params_from_iter(values)).unwrap();
    }
    writer.sync().unwrap();
    reader.sync().unwrap();

    let query = "SELECT id, i, r, t, b, flag FROM samples ORDER BY id";
    let written = writer.rows(query);
    let read = reader.rows(query);
    assert_eq!(written.len(), samples().len());
    for (w, r) in written.iter().zip(&read) {
        for (a, b) in w.iter().zip(r) {
            assert!(a.same_as(b), "{}: wrote {a:?}, the other device has {b:?}", store.name());
        }
    }
    // The server's own table, read directly: same values, natural types.
    let on_server = server.rows(query);
    assert_eq!(on_server.len(), written.len());
    for (w, s) in written.iter().zip(&on_server) {
        for (a, b) in w.iter().zip(s) {
            let same = a.same_as(b) || (matches!((a, b), (Value::Real(x), Value::Real(y)) if *x == 0.0 && *y == 0.0));
            assert!(same, "{}: wrote {a:?}, the server table holds {b:?}", store.name());
        }
    }
}

#[test]
fn values_round_trip_exactly_on_every_store() {
    on_every_store(round_trip_on);
}

fn long_keys_on(store: &TestStore) {
    let dir = TempDir::new().unwrap();
    let server = TestServer::start_on(store, dir.path(), SCHEMA);
    let device = Device::init(dir.path(), "device", &server.url());
    let longest = "ß".repeat(255);
    let too_long = "ß".repeat(256);
    device.exec(&format!("INSERT INTO samples (id, i) VALUES ('{longest}', 1), ('{too_long}', 2);"));
    let report = device.sync().unwrap();
    assert_eq!(report.rejected, 1, "{}: the over-long key is set aside", store.name());
    assert!(report.rejections[0].contains("longer than 255"), "{:?}", report.rejections);
    assert_eq!(server.rows("SELECT i FROM samples"), vec![vec![Value::Integer(1)]], "{}", store.name());
}

#[test]
fn keys_up_to_255_characters_work_on_every_store_and_longer_ones_are_refused() {
    on_every_store(long_keys_on);
}

/// A composite key declared in another order than its columns: each key
/// value must land in its own column on the server and on other devices.
fn key_out_of_column_order_on(store: &TestStore) {
    let dir = TempDir::new().unwrap();
    let schema = "CREATE TABLE visits (place TEXT, day INTEGER, note TEXT, PRIMARY KEY (day, place));";
    let server = TestServer::start_on(store, dir.path(), schema);
    let writer = Device::init(dir.path(), "writer", &server.url());
    let reader = Device::init(dir.path(), "reader", &server.url());
    writer.exec("INSERT INTO visits VALUES ('Paris', 7, 'first');");
    writer.sync().unwrap();
    reader.sync().unwrap();
    writer.exec("UPDATE visits SET note = 'second' WHERE place = 'Paris';");
    writer.sync().unwrap();
    reader.sync().unwrap();
    let expected = vec![vec![Value::Text("Paris".into()), Value::Integer(7), Value::Text("second".into())]];
    let all = "SELECT place, day, note FROM visits";
    assert_eq!(server.rows(all), expected, "{}", store.name());
    assert_eq!(reader.rows(all), expected, "{}", store.name());
}

#[test]
fn a_key_declared_out_of_column_order_keeps_each_value_in_its_column() {
    on_every_store(key_out_of_column_order_on);
}
