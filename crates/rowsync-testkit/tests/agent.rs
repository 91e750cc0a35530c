//! The background agent against a real server: it notices commits from
//! other processes, keeps two devices in step by itself, rides out a server
//! that goes away, and reports each of those as its own status.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use rowsync_client::{Agent, AgentOptions, AgentStatus, Backoff, State};
use rowsync_proto::Value;
use rowsync_testkit::{eventually, on_every_store, text, Device, TestServer, TestStore, CONTACTS_SCHEMA};
use tempfile::TempDir;

fn options() -> AgentOptions {
    AgentOptions { backoff: Backoff { first_ms: 100, max_ms: 1_000 }, ..AgentOptions::default() }
}

fn start(device: &Device) -> Agent {
    Agent::start(&device.path, options()).expect("the agent starts")
}

fn names(device: &Device) -> Vec<Value> {
    device.rows("SELECT name FROM contacts ORDER BY id").into_iter().map(|mut row| row.remove(0)).collect()
}

/// A write through the sqlite3 shell, another process with no rowsync code.
fn shell(path: &Path, sql: &str) {
    let status = Command::new("sqlite3")
        .arg("-cmd")
        .arg(".timeout 5000")
        .arg(path)
        .arg(sql)
        .status()
        .expect("sqlite3 runs (apt-get install sqlite3)");
    assert!(status.success());
}

fn two_agents_converge_on(store: &TestStore) {
    let dir = TempDir::new().unwrap();
    let server = TestServer::start_on(store, dir.path(), CONTACTS_SCHEMA);
    let laptop = Device::init(dir.path(), "laptop", &server.url());
    let phone = Device::init(dir.path(), "phone", &server.url());
    let (_a, _b) = (start(&laptop), start(&phone));
    shell(&laptop.path, "INSERT INTO contacts VALUES ('1', 'Ada', NULL, NULL);");
    eventually(Duration::from_secs(10), "the laptop's write on the phone", || names(&phone) == [text("Ada")]);
    phone.exec(
        "UPDATE contacts SET name = 'Ada L.' WHERE id = '1'; INSERT INTO contacts VALUES ('2', 'Bo', NULL, NULL);",
    );
    eventually(Duration::from_secs(10), "the phone's writes on the laptop", || {
        names(&laptop) == [text("Ada L."), text("Bo")]
    });
    eventually(Duration::from_secs(10), "nothing pending", || laptop.pending() == 0 && phone.pending() == 0);
    assert_eq!(server.rows("SELECT name FROM contacts ORDER BY id"), vec![vec![text("Ada L.")], vec![text("Bo")]]);
}

#[test]
fn a_write_from_another_process_reaches_another_device_by_itself() {
    on_every_store(two_agents_converge_on);
}

#[test]
fn writes_made_while_the_server_is_down_go_out_when_it_returns() {
    let dir = TempDir::new().unwrap();
    let mut server = TestServer::start(dir.path(), CONTACTS_SCHEMA);
    let laptop = Device::init(dir.path(), "laptop", &server.url());
    let agent = start(&laptop);
    let statuses = agent.subscribe();
    eventually(Duration::from_secs(10), "in sync", || agent.status().state == State::Idle);
    server.stop();
    laptop.exec("INSERT INTO contacts VALUES ('1', 'Ada', NULL, NULL);");
    eventually(Duration::from_secs(10), "offline, with the write counted", || {
        let status = agent.status();
        matches!(status.state, State::Offline { .. }) && status.pending_changes == 1
    });
    let offline = agent.status();
    let State::Offline { reason, retry_in_ms } = &offline.state else { unreachable!() };
    assert!(reason.contains("cannot reach the server"), "{reason}");
    assert!(*retry_in_ms <= 1_000, "bounded by the backoff: {retry_in_ms}");

    server.restart();
    // Within the backoff bound (1 s here), and no command.
    eventually(Duration::from_secs(5), "the write on the server", || {
        server.rows("SELECT name FROM contacts") == vec![vec![text("Ada")]]
    });
    eventually(Duration::from_secs(5), "in sync again", || {
        let status = agent.status();
        status.state == State::Idle && status.pending_changes == 0
    });
    let seen: Vec<AgentStatus> = statuses.try_iter().collect();
    assert!(seen.iter().any(|s| matches!(s.state, State::Offline { .. })), "{seen:?}");
    assert!(seen.iter().any(|s| s.last_sync_unix_ms.is_some()), "{seen:?}");
    agent.stop().unwrap();
}

#[test]
fn a_burst_of_commits_goes_out_in_few_batches_and_stop_loses_nothing() {
    let dir = TempDir::new().unwrap();
    let server = TestServer::start(dir.path(), CONTACTS_SCHEMA);
    let laptop = Device::init(dir.path(), "laptop", &server.url());
    let agent = start(&laptop);
    eventually(Duration::from_secs(10), "in sync", || agent.status().state == State::Idle);
    let conn = laptop.plain();
    for i in 0..300 {
        conn.execute("INSERT INTO contacts VALUES (?, 'x', NULL, NULL)", [format!("{i:04}")]).unwrap();
    }
    eventually(Duration::from_secs(20), "all pushed", || {
        server.rows("SELECT count(*) FROM contacts") == vec![vec![Value::Integer(300)]]
    });
    let pushes = server_metric(&server, "rowsync_pushes_total");
    assert!(pushes < 100, "300 commits went out in {pushes} pushes");
    // Stop in the middle of a larger backlog: what was not pushed stays
    // queued, and a plain sync sends it.
    for i in 300..20_300 {
        conn.execute("INSERT INTO contacts VALUES (?, 'y', NULL, NULL)", [format!("{i:05}")]).unwrap();
    }
    std::thread::sleep(Duration::from_millis(30));
    agent.stop().unwrap();
    laptop.sync().unwrap();
    assert_eq!(server.rows("SELECT count(*) FROM contacts"), vec![vec![Value::Integer(20_300)]]);
    assert_eq!(laptop.pending(), 0);
}

/// A counter of the server's `/metrics`.
fn server_metric(server: &TestServer, name: &str) -> u64 {
    let text = ureq::get(&format!("{}/metrics", server.url())).call().unwrap().into_string().unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}
