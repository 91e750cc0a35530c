//! Processes killed with SIGKILL at random points, as a phone's OS or a
//! crashing host does it: `rowsync sync` while it stamps and pushes a
//! backlog and while it applies a large pull, and `rowsync serve` while it
//! applies pushes and while it serves pulls. Meanwhile an app keeps
//! committing to each replica file. After restarts and a final sync, every
//! write the app committed is on the server once, every replica equals the
//! server, no file fails `PRAGMA integrity_check`, and the app never got
//! "database is locked" nor waited for the lock longer than [`APP_WAIT`].

mod common;

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use common::{free_port, serve_open, start_sync, Server, ROWSYNC};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rowsync_testkit::{integrity_check, query_rows, run_seeded, AppWriter, Device, CONTACTS_SCHEMA};

const KILLS: usize = 20;
/// The longest an app's commit may wait for sync, killed or not (the
/// README's Guarantees): sync writes in slices of about 25 ms, and a killed
/// process holds no lock. The app's busy timeout is longer, so that a wait
/// over this bound is measured rather than cut short.
const APP_WAIT: Duration = Duration::from_secs(1);
const ALL: &str = "SELECT id, name, email, phone FROM contacts ORDER BY id";

/// The app commits `count` new contacts to `device` in one transaction.
fn app_writes(device: &Device, next: &mut usize, count: usize) {
    let mut app = device.plain();
    let tx = app.transaction().unwrap();
    for _ in 0..count {
        *next += 1;
        tx.execute("INSERT INTO contacts (id, name) VALUES (?, ?)", (format!("{}-{next:06}", device.name), "x"))
            .unwrap();
    }
    tx.commit().unwrap();
}

/// Kills `child` after `after`; true when it was still running then.
fn kill_after(mut child: Child, after: Duration) -> bool {
    std::thread::sleep(after);
    let running = running(&mut child);
    let _ = child.kill();
    let _ = child.wait();
    running
}

fn running(child: &mut Child) -> bool {
    child.try_wait().unwrap().is_none()
}

/// Kills the server `after` into `sync` (true when the sync was still under
/// way then), starts it again on its port and database, and ends `sync`.
fn kill_server_during(mut sync: Child, after: Duration, server: Server, dir: &Path, port: u16) -> (Server, bool) {
    std::thread::sleep(after);
    let landed = running(&mut sync);
    drop(server);
    let server = serve_open(dir, port, CONTACTS_SCHEMA);
    kill_after(sync, Duration::ZERO);
    (server, landed)
}

/// A whole `rowsync sync` of `device`, which must succeed; how long it took.
fn timed_sync(device: &Device) -> Duration {
    let started = Instant::now();
    let status = Command::new(ROWSYNC).args(["sync", device.path.to_str().unwrap()]).status().unwrap();
    assert!(status.success(), "{}: sync failed with the server up", device.name);
    started.elapsed()
}

/// How long a sync of the same work typically takes: the median of three,
/// each after `prepare` (one sync slowed by a busy machine would otherwise
/// stretch every kill window past the syncs it is meant to interrupt).
fn typical(device: &Device, mut prepare: impl FnMut()) -> Duration {
    let mut took: Vec<Duration> = (0..3)
        .map(|_| {
            prepare();
            timed_sync(device)
        })
        .collect();
    took.sort();
    took[1]
}

/// A moment within a sync that takes about `took`.
fn within(rng: &mut StdRng, took: Duration) -> Duration {
    let most = (took.as_millis() as u64 * 9 / 10).max(6);
    Duration::from_millis(rng.gen_range(5..most))
}

#[test]
fn killed_syncs_and_servers_lose_nothing_and_double_nothing() {
    run_seeded("kills", 1, &[], 1, |seed| {
        let mut rng = StdRng::seed_from_u64(seed);
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut server = serve_open(dir.path(), port, CONTACTS_SCHEMA);
        let url = format!("http://127.0.0.1:{port}");
        let laptop = Device::init(dir.path(), "laptop", &url);
        let phone = Device::init(dir.path(), "phone", &url);
        let (mut laptop_next, mut phone_next) = (0, 0);
        let mut landed = [0usize; 4];
        let writers = [&laptop, &phone].map(|device| AppWriter::start(&device.path, &device.name, 5 * APP_WAIT));
        // Kill points are drawn within the time a sync of the same work
        // takes when left alone.
        const BACKLOG: usize = 3_000;

        // The client, while it stamps and pushes a backlog.
        let push = typical(&laptop, || app_writes(&laptop, &mut laptop_next, BACKLOG));
        for _ in 0..KILLS {
            app_writes(&laptop, &mut laptop_next, BACKLOG);
            landed[0] += kill_after(start_sync(&laptop.path), within(&mut rng, push)) as usize;
        }
        // The server, while it applies pushes.
        for _ in 0..KILLS {
            app_writes(&laptop, &mut laptop_next, BACKLOG);
            let killed;
            (server, killed) =
                kill_server_during(start_sync(&laptop.path), within(&mut rng, push), server, dir.path(), port);
            landed[1] += killed as usize;
        }
        timed_sync(&laptop);
        // The client, while it applies a large pull (and stamps its own
        // writes), then the server while it serves one.
        timed_sync(&phone);
        let pull = typical(&phone, || {
            app_writes(&laptop, &mut laptop_next, BACKLOG);
            timed_sync(&laptop);
        });
        for _ in 0..KILLS {
            app_writes(&laptop, &mut laptop_next, BACKLOG);
            timed_sync(&laptop);
            app_writes(&phone, &mut phone_next, 50);
            landed[2] += kill_after(start_sync(&phone.path), within(&mut rng, pull)) as usize;
        }
        for _ in 0..KILLS {
            app_writes(&laptop, &mut laptop_next, BACKLOG);
            timed_sync(&laptop);
            let killed;
            (server, killed) =
                kill_server_during(start_sync(&phone.path), within(&mut rng, pull), server, dir.path(), port);
            landed[3] += killed as usize;
        }

        let written = writers.map(AppWriter::stop);
        for device in [&laptop, &phone, &laptop] {
            timed_sync(device);
        }
        eprintln!("seed {seed}: the apps writing meanwhile: {written:?}");
        eprintln!(
            "seed {seed}: kills that landed mid-sync: client pushing {}/{KILLS}, server applying pushes {}/{KILLS}, \
             client pulling {}/{KILLS}, server serving pulls {}/{KILLS} (a sync alone: push {push:?}, pull {pull:?})",
            landed[0], landed[1], landed[2], landed[3]
        );
        let server_db = dir.path().join("server.db");
        let on_server = query_rows(&rusqlite::Connection::open(&server_db).unwrap(), ALL);
        let app_commits: usize = written.iter().map(|w| w.commits).sum();
        assert_eq!(on_server.len(), laptop_next + phone_next + app_commits, "writes lost or doubled on the server");
        for written in &written {
            assert!(written.errors.is_empty(), "the app's commits failed: {:?}", written.errors);
            assert!(written.longest <= APP_WAIT, "the app waited {:?} for the lock", written.longest);
            assert!(written.commits > 100, "the app hardly wrote: {written:?}");
        }
        for device in [&laptop, &phone] {
            assert_eq!(device.rows(ALL), on_server, "{} differs from the server", device.name);
            assert_eq!(device.pending(), 0, "{}", device.name);
            assert_eq!(integrity_check(&device.path), "ok", "{}", device.name);
        }
        assert_eq!(integrity_check(&server_db), "ok");
        // Enough of them land mid-sync for the test to mean something, on
        // a loaded machine too.
        assert!(landed.iter().all(|&n| n >= KILLS / 4), "too few kills landed while work was under way: {landed:?}");
    });
}
