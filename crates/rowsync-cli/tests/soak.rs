//! The soak: several devices write at random (new rows of their own, and
//! edits, replacements and deletes of rows they all share) and sync through
//! a network that breaks requests (the test kit's [`FaultyProxy`]); their
//! `rowsync sync` processes are killed at random points, and `rowsync
//! serve` is killed and started again now and then. It runs for a bounded
//! time: `ROWSYNC_SOAK_SECONDS`, 60 by default (the test suite); `scripts/soak
//! --minutes N` runs it longer.
//!
//! It prints what it injected, then its verdict: once the faults stop and
//! every device has synced twice, every device equals the server, every row
//! a device made is on the server exactly once, nothing is pending, and
//! every file passes `PRAGMA integrity_check`.

mod common;

use std::collections::BTreeMap;
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use common::{free_port, serve_open, start_sync, Server};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rowsync_testkit::{integrity_check, query_rows, run_seeded, Device, FaultyProxy, CONTACTS_SCHEMA};

const DEVICES: usize = 3;
/// Rows every device edits, replaces and deletes.
const SHARED: usize = 40;
/// Longer than any sync of the soak's few rows takes: a sync still running
/// then is stuck, which the verdict counts.
const STUCK: Duration = Duration::from_secs(60);
const ALL: &str = "SELECT id, name, email, phone FROM contacts ORDER BY id";

/// What one device did.
#[derive(Debug, Default)]
struct Tally {
    /// App transactions committed.
    transactions: usize,
    /// Rows of its own it made (`DEVICE-000001` ...): each must reach the
    /// server once.
    own_rows: usize,
    /// Writes to the shared rows: upserts, `INSERT OR REPLACE`, deletes.
    shared_writes: usize,
    syncs_done: usize,
    syncs_failed: usize,
    /// Syncs killed while they were still running.
    syncs_killed: usize,
    syncs_stuck: usize,
}

/// One app transaction of 1 to 10 random writes.
fn app_writes(device: &Device, rng: &mut StdRng, tally: &mut Tally) {
    let mut app = device.plain();
    let tx = app.transaction().unwrap();
    let (mut own, mut shared) = (0, 0);
    for _ in 0..rng.gen_range(1..=10) {
        let shared_id = format!("s{:02}", rng.gen_range(0..SHARED));
        let value = format!("{}-{}", device.name, rng.gen_range(0..1000));
        match rng.gen_range(0..10) {
            0..=3 => {
                own += 1;
                let id = format!("{}-{:06}", device.name, tally.own_rows + own);
                tx.execute("INSERT INTO contacts (id, name) VALUES (?, ?)", (id, &value)).unwrap();
            }
            4..=6 => {
                tx.execute(
                    "INSERT INTO contacts (id, name, email) VALUES (?1, ?2, ?2) \
                     ON CONFLICT (id) DO UPDATE SET email = excluded.email",
                    (&shared_id, &value),
                )
                .unwrap();
                shared += 1;
            }
            7 => {
                tx.execute(
                    "INSERT OR REPLACE INTO contacts (id, name, phone) VALUES (?, ?, ?)",
                    (&shared_id, &value, &value),
                )
                .unwrap();
                shared += 1;
            }
            _ => {
                tx.execute("DELETE FROM contacts WHERE id = ?", [&shared_id]).unwrap();
                shared += 1;
            }
        }
    }
    tx.commit().unwrap();
    tally.transactions += 1;
    tally.own_rows += own;
    tally.shared_writes += shared;
}

/// Waits for `sync` up to `most`; `None` when it is still running then.
fn wait_up_to(sync: &mut Child, most: Duration) -> Option<ExitStatus> {
    let started = Instant::now();
    loop {
        if let Some(status) = sync.try_wait().unwrap() {
            return Some(status);
        }
        if started.elapsed() >= most {
            return None;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// A device's life until `until`: app transactions, whole syncs and syncs
/// killed part-way, at random; the app writes on while a sync runs.
fn live(device: &Device, seed: u64, until: Instant) -> Tally {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut tally = Tally::default();
    while Instant::now() < until {
        match rng.gen_range(0..10) {
            0..=4 => app_writes(device, &mut rng, &mut tally),
            5..=7 => {
                let mut sync = start_sync(&device.path);
                // The app goes on writing while it syncs.
                for _ in 0..rng.gen_range(0..3) {
                    app_writes(device, &mut rng, &mut tally);
                }
                match wait_up_to(&mut sync, STUCK) {
                    Some(status) if status.success() => tally.syncs_done += 1,
                    Some(_) => tally.syncs_failed += 1,
                    None => {
                        tally.syncs_stuck += 1;
                        let _ = sync.kill();
                        let _ = sync.wait();
                    }
                }
            }
            _ => {
                let mut sync = start_sync(&device.path);
                let after = Duration::from_millis(rng.gen_range(1..150));
                if rng.gen_bool(0.5) {
                    app_writes(device, &mut rng, &mut tally);
                }
                if wait_up_to(&mut sync, after).is_none() {
                    tally.syncs_killed += 1;
                    let _ = sync.kill();
                    let _ = sync.wait();
                }
            }
        }
        std::thread::sleep(Duration::from_millis(rng.gen_range(0..20)));
    }
    tally
}

fn soak(seed: u64, length: Duration) {
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut server = serve_open(dir.path(), port, CONTACTS_SCHEMA);
    let proxy = FaultyProxy::start(&format!("http://127.0.0.1:{port}"), seed);
    let devices: Vec<Device> =
        (0..DEVICES).map(|i| Device::init(dir.path(), &format!("device{i}"), &proxy.url())).collect();
    proxy.faults(true);

    let started = Instant::now();
    let until = started + length;
    let mut server_kills = 0;
    // The server in use is handed out of the scope, to stay up for the end.
    let (tallies, _server): (Vec<Tally>, Server) = std::thread::scope(|scope| {
        let lives: Vec<_> = devices
            .iter()
            .enumerate()
            .map(|(i, device)| scope.spawn(move || live(device, seed.wrapping_mul(31).wrapping_add(i as u64), until)))
            .collect();
        // The server is killed every few seconds, whatever it is doing.
        loop {
            let pause = Duration::from_millis(rng.gen_range(500..4000));
            std::thread::sleep(pause.min(until.saturating_duration_since(Instant::now())));
            if Instant::now() >= until {
                break;
            }
            drop(server);
            server = serve_open(dir.path(), port, CONTACTS_SCHEMA);
            server_kills += 1;
        }
        (lives.into_iter().map(|life| life.join().unwrap()).collect(), server)
    });
    let ran = started.elapsed();

    proxy.faults(false);
    let mut final_failures = Vec::new();
    for _ in 0..2 {
        for device in &devices {
            if let Err(e) = device.sync() {
                final_failures.push(format!("{}: {e}", device.name));
            }
        }
    }

    let injected: BTreeMap<_, _> = proxy.injected();
    let sum = |field: fn(&Tally) -> usize| tallies.iter().map(field).sum::<usize>();
    eprintln!(
        "soak, seed {seed}, {:.0} s, {DEVICES} devices: {} app transactions ({} own rows, {} writes to {SHARED} shared \
         rows); syncs: {} done, {} failed, {} killed mid-sync, {} stuck; server killed {server_kills} times; \
         requests through the proxy by fault: {injected:?}",
        ran.as_secs_f64(),
        sum(|t| t.transactions),
        sum(|t| t.own_rows),
        sum(|t| t.shared_writes),
        sum(|t| t.syncs_done),
        sum(|t| t.syncs_failed),
        sum(|t| t.syncs_killed),
        sum(|t| t.syncs_stuck),
    );

    let server_db = dir.path().join("server.db");
    let on_server = query_rows(&rusqlite::Connection::open(&server_db).unwrap(), ALL);
    let mut divergences = Vec::new();
    divergences.extend(final_failures.into_iter().map(|f| format!("the final sync failed: {f}")));
    for (device, tally) in devices.iter().zip(&tallies) {
        let own = on_server.iter().filter(|row| row[0].to_string().contains(&format!("{}-", device.name))).count();
        if own != tally.own_rows {
            divergences
                .push(format!("{}: made {} rows of its own, the server holds {own}", device.name, tally.own_rows));
        }
        if device.rows(ALL) != on_server {
            divergences.push(format!("{} differs from the server", device.name));
        }
        if device.pending() != 0 {
            divergences.push(format!("{}: {} change(s) still pending", device.name, device.pending()));
        }
        let integrity = integrity_check(&device.path);
        if integrity != "ok" {
            divergences.push(format!("{}: integrity_check: {integrity}", device.name));
        }
        if tally.syncs_stuck > 0 {
            divergences.push(format!("{}: {} sync(s) ran over {STUCK:?}", device.name, tally.syncs_stuck));
        }
    }
    let integrity = integrity_check(&server_db);
    if integrity != "ok" {
        divergences.push(format!("the server database: integrity_check: {integrity}"));
    }
    eprintln!("soak, seed {seed}: {} divergence(s)", divergences.len());
    assert!(divergences.is_empty(), "soak, seed {seed}: {divergences:#?}");
    // The faults must have been met for the verdict to mean something.
    assert!(sum(|t| t.syncs_killed) > 0 && server_kills > 0, "nothing was killed in {ran:?}");
    assert!(injected.keys().filter(|kind| **kind != "none").count() >= 3, "few kinds of faults met: {injected:?}");
}

#[test]
fn soak_with_a_hostile_network_and_kills_converges_and_loses_nothing() {
    let seconds: u64 = std::env::var("ROWSYNC_SOAK_SECONDS")
        .map(|s| s.trim().parse().unwrap_or_else(|_| panic!("ROWSYNC_SOAK_SECONDS={s:?} is not a number")))
        .unwrap_or(60);
    run_seeded("soak", 1, &[], 1, |seed| soak(seed, Duration::from_secs(seconds)));
}
