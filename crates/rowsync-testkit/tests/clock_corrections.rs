//! A device whose clock ran ahead twice has its refused writes re-stamped
//! twice. The second re-stamp must not hand out a reading of the first: two
//! writes with one version, and the server would take the second for a
//! repeat of the first and keep the first (found by the simulation once its
//! clock became virtual).

use rowsync_client::{sync, ClientError, HttpTransport, Replica, SyncOptions};
use rowsync_proto::ErrorCode;
use rowsync_testkit::{text, Device, TestServer, CONTACTS_SCHEMA};
use rusqlite::functions::FunctionFlags;
use rusqlite::Connection;
use tempfile::TempDir;

const HOUR_MS: i64 = 3_600_000;

/// Makes `julianday('now')` on `conn` read `ms` (a clock that stands still,
/// so that both corrections happen at the same instant).
fn freeze(conn: &Connection, ms: u64) {
    conn.create_scalar_function("julianday", 1, FunctionFlags::SQLITE_UTF8, move |_| {
        Ok(ms as f64 / 86_400_000.0 + 2_440_587.5)
    })
    .unwrap();
}

/// A server and a device whose clock stands still (both its connections).
struct Frozen {
    server: TestServer,
    device: Device,
    replica: Replica,
    app: Connection,
    transport: HttpTransport,
}

impl Frozen {
    fn start(dir: &std::path::Path) -> Frozen {
        let server = TestServer::start(dir, CONTACTS_SCHEMA);
        let device = Device::init(dir, "laptop", &server.url());
        let (replica, app) = (device.replica(), device.plain());
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
        freeze(replica.connection(), now);
        freeze(&app, now);
        let transport = HttpTransport::new(&server.url(), None);
        Frozen { server, device, replica, app, transport }
    }
}

#[test]
fn a_second_clock_correction_never_reuses_a_version_of_the_first() {
    let dir = TempDir::new().unwrap();
    let Frozen { server, device, mut replica, app, transport } = Frozen::start(dir.path());
    let mut sync_now = || sync(&mut replica, &transport, SyncOptions::default());

    for (sql, name) in [
        ("INSERT INTO contacts VALUES ('1', 'Ada', NULL, NULL)", "Ada"),
        // The row written over whole: none of its versions is the first re-stamp's.
        ("INSERT OR REPLACE INTO contacts VALUES ('1', 'Ada L.', NULL, NULL)", "Ada L."),
    ] {
        device.replica().set_clock_offset(6 * HOUR_MS).unwrap();
        app.execute(sql, []).unwrap();
        match sync_now() {
            Err(ClientError::Refused { code: ErrorCode::ClockSkew, .. }) => {}
            other => panic!("a clock 6 h ahead must be refused: {other:?}"),
        }
        device.replica().set_clock_offset(0).unwrap();
        let report = sync_now().unwrap();
        assert!(report.notes.iter().any(|n| n.contains("re-stamped")), "{:?}", report.notes);
        assert_eq!(server.rows("SELECT name FROM contacts"), vec![vec![text(name)]], "the server lost {name:?}");
    }
}

/// The same with a first write pushed while the clock was right: its reading
/// is on the server, and no row here holds it any more once the row is
/// written over whole.
#[test]
fn a_clock_correction_never_reuses_the_version_of_a_write_the_server_holds() {
    let dir = TempDir::new().unwrap();
    let Frozen { server, device, mut replica, app, transport } = Frozen::start(dir.path());
    let mut sync_now = || sync(&mut replica, &transport, SyncOptions::default());

    app.execute("INSERT INTO contacts VALUES ('1', 'Ada', NULL, NULL)", []).unwrap();
    sync_now().unwrap();
    device.replica().set_clock_offset(6 * HOUR_MS).unwrap();
    app.execute("INSERT OR REPLACE INTO contacts VALUES ('1', 'Ada L.', NULL, NULL)", []).unwrap();
    assert!(matches!(sync_now(), Err(ClientError::Refused { code: ErrorCode::ClockSkew, .. })));
    device.replica().set_clock_offset(0).unwrap();
    sync_now().unwrap();
    assert_eq!(server.rows("SELECT name FROM contacts"), vec![vec![text("Ada L.")]], "the server lost the later write");
}
