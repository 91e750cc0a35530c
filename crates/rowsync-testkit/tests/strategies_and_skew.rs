//! Conflict strategies chosen per table in the server's settings, and clocks
//! that run ahead or behind, on every store.

use std::time::Duration;

use rowsync_proto::{ConflictStrategy, ErrorCode};
use rowsync_testkit::{on_every_store, text, Device, TestServer, TestStore, CONTACTS_SCHEMA};
use tempfile::TempDir;

const ALL: &str = "SELECT id, name, email, phone FROM contacts ORDER BY id";
const HOUR_MS: i64 = 3_600_000;

fn row_strategy_on(store: &TestStore) {
    let dir = TempDir::new().unwrap();
    let server = TestServer::start_configured(store, dir.path(), CONTACTS_SCHEMA, |config| {
        config.conflicts.insert("contacts".into(), ConflictStrategy::Row);
    });
    let laptop = Device::init(dir.path(), "laptop", &server.url());
    let phone = Device::init(dir.path(), "phone", &server.url());
    laptop.exec("INSERT INTO contacts VALUES ('a', 'Ada', 'old@x', '111');");
    laptop.sync().unwrap();
    phone.sync().unwrap();
    // Different fields on each device: under the row strategy the later
    // write's whole row wins, so the laptop's phone edit is undone.
    laptop.exec("UPDATE contacts SET phone = '999' WHERE id = 'a';");
    std::thread::sleep(Duration::from_millis(20));
    phone.exec("UPDATE contacts SET email = 'new@x' WHERE id = 'a';");
    laptop.sync().unwrap();
    phone.sync().unwrap();
    laptop.sync().unwrap();
    let expected = vec![vec![text("a"), text("Ada"), text("new@x"), text("111")]];
    assert_eq!(server.rows(ALL), expected, "{}", store.name());
    assert_eq!(laptop.rows(ALL), expected);
    assert_eq!(phone.rows(ALL), expected);
}

#[test]
fn row_strategy_the_later_write_wins_the_whole_row() {
    on_every_store(row_strategy_on);
}

fn skew_on(store: &TestStore) {
    let dir = TempDir::new().unwrap();
    let server = TestServer::start_configured(store, dir.path(), CONTACTS_SCHEMA, |config| {
        config.max_clock_ahead = Duration::from_secs(600);
    });
    let ahead = Device::init(dir.path(), "ahead", &server.url());
    let behind = Device::init(dir.path(), "behind", &server.url());
    let normal = Device::init(dir.path(), "normal", &server.url());
    ahead.replica().set_clock_offset(3 * HOUR_MS).unwrap();
    behind.replica().set_clock_offset(-3 * HOUR_MS).unwrap();

    // A clock hours ahead would win every later conflict: refused, kept queued.
    ahead.exec("INSERT INTO contacts VALUES ('x', 'From the future', NULL, NULL);");
    match ahead.sync() {
        Err(rowsync_client::ClientError::Refused { code: ErrorCode::ClockSkew, message, .. }) => {
            assert!(message.contains("ahead of the server's clock"), "{message}")
        }
        other => panic!("{}: expected a clock skew refusal, got {other:?}", store.name()),
    }
    assert_eq!(ahead.pending(), 1, "the refused change stays queued");
    assert!(ahead.replica().status().unwrap().last_error.unwrap().contains("clock"));
    assert!(server.rows(ALL).is_empty());

    // A clock hours behind still has its later edits applied: having seen
    // the normal device's write, its own next write orders after it.
    normal.exec("INSERT INTO contacts VALUES ('a', 'Ada', NULL, 'normal');");
    normal.sync().unwrap();
    behind.sync().unwrap();
    behind.exec("UPDATE contacts SET phone = 'behind, but later' WHERE id = 'a';");
    behind.sync().unwrap();
    normal.sync().unwrap();
    assert_eq!(server.rows("SELECT phone FROM contacts"), vec![vec![text("behind, but later")]]);
    assert_eq!(normal.rows("SELECT phone FROM contacts"), vec![vec![text("behind, but later")]]);
}

#[test]
fn clocks_ahead_are_refused_and_clocks_behind_still_win_later_edits() {
    on_every_store(skew_on);
}

/// Regression: after a clock that ran hours ahead was corrected, the hybrid
/// clock kept the reading from the future, so every later write was refused
/// too, for hours. Refused versions were seen by nobody: they are re-stamped
/// from the corrected clock, in order, and the writes go through.
fn corrected_clock_on(store: &TestStore) {
    let dir = TempDir::new().unwrap();
    let server = TestServer::start_configured(store, dir.path(), CONTACTS_SCHEMA, |config| {
        config.max_clock_ahead = Duration::from_secs(600);
    });
    let device = Device::init(dir.path(), "device", &server.url());
    let other = Device::init(dir.path(), "other", &server.url());
    device.exec("INSERT INTO contacts VALUES ('before', 'On time', NULL, NULL);");
    device.sync().unwrap();

    device.replica().set_clock_offset(2 * HOUR_MS).unwrap();
    device.exec("INSERT INTO contacts VALUES ('x', 'From the future', NULL, NULL);");
    device.exec("UPDATE contacts SET email = 'first' WHERE id = 'before';");
    assert!(matches!(device.sync(), Err(rowsync_client::ClientError::Refused { code: ErrorCode::ClockSkew, .. })));
    // Still ahead: still refused, nothing changes.
    assert!(device.sync().is_err());

    // The clock is corrected; a write made afterwards goes through, and so
    // do the refused ones, in the order they were made.
    device.replica().set_clock_offset(0).unwrap();
    device.exec("UPDATE contacts SET email = 'second' WHERE id = 'before';");
    let report = device.sync().unwrap();
    assert!(report.notes.iter().any(|n| n.contains("clock")), "{report:?}");
    assert_eq!(device.pending(), 0);
    assert_eq!(
        server.rows("SELECT id, email FROM contacts ORDER BY id"),
        vec![vec![text("before"), text("second")], vec![text("x"), rowsync_proto::Value::Null]],
        "{}",
        store.name()
    );
    // Versions are back in the present: another device's later edit wins.
    other.sync().unwrap();
    other.exec("UPDATE contacts SET name = 'Edited later' WHERE id = 'x';");
    other.sync().unwrap();
    device.sync().unwrap();
    assert_eq!(device.rows("SELECT name FROM contacts WHERE id = 'x'"), vec![vec![text("Edited later")]]);
    assert_eq!(server.rows("SELECT name FROM contacts WHERE id = 'x'"), vec![vec![text("Edited later")]]);
}

#[test]
fn a_clock_corrected_after_running_ahead_is_accepted_again() {
    on_every_store(corrected_clock_on);
}
