//! The tutorial protocol (`POST /sync`, `GET /changes`) against a client
//! written from its description in Python (`tests/tutorial/client.py`,
//! requests and sqlite3): two such clients and a rowsync replica edit one
//! contacts table offline, sync in turns and converge, on every store; a
//! replayed change applies once; a change that cannot be stored gets a 4xx
//! and is counted; tokens and private rows hold as on `/v1`.

use std::path::{Path, PathBuf};
use std::process::Command;

use rowsync_client::SyncOptions;
use rowsync_proto::Value;
use rowsync_server::Auth;
use rowsync_testkit::{on_every_store, Device, TestServer, TestStore};
use serde_json::json;

const SCHEMA: &str = "CREATE TABLE contacts (id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT, phone TEXT);";
const CLIENT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tutorial/client.py");

/// A tutorial client: its SQLite file and how it reaches the server.
struct Client {
    db: PathBuf,
    url: String,
    token: String,
    token_in_query: bool,
}

impl Client {
    fn new(dir: &Path, name: &str, url: &str, token: String) -> Client {
        Client { db: dir.join(format!("{name}.db")), url: url.to_string(), token, token_in_query: false }
    }

    fn run(&self, args: &[&str]) -> String {
        let mut command = Command::new("python3");
        command.arg(CLIENT).arg(&self.db).arg(&self.url).args(["--token", &self.token]);
        if self.token_in_query {
            command.arg("--token-in-query");
        }
        let output = command
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run python3 ({e}): apt-get install python3 python3-requests"));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "client.py {args:?} failed: {stderr}");
        String::from_utf8(output.stdout).unwrap()
    }

    fn add(&self, name: &str) -> i64 {
        self.run(&["add", name]).trim().parse().unwrap()
    }

    fn sync(&self) -> serde_json::Value {
        let report: serde_json::Value = serde_json::from_str(&self.run(&["sync"])).unwrap();
        assert_eq!(report["stopped"], serde_json::Value::Null, "the sync stopped: {report}");
        report
    }

    fn rows(&self) -> serde_json::Value {
        serde_json::from_str(&self.run(&["dump"])).unwrap()
    }
}

fn as_json(rows: Vec<Vec<Value>>) -> serde_json::Value {
    serde_json::to_value(rows).unwrap()
}

fn metric(server: &TestServer, token: &str, name: &str) -> u64 {
    let text = ureq::get(&format!("{}/metrics", server.url()))
        .set("Authorization", &format!("Bearer {token}"))
        .call()
        .unwrap()
        .into_string()
        .unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {name} in {text}"))
}

fn with_tokens(store: &TestStore, dir: &Path) -> TestServer {
    TestServer::start_configured(store, dir, SCHEMA, |config| {
        config.auth = Auth::Tokens;
        config.limits.requests_per_second = None;
    })
}

#[test]
fn two_tutorial_clients_and_a_replica_edit_offline_and_converge() {
    on_every_store(|store| {
        let dir = tempfile::tempdir().unwrap();
        let server = with_tokens(store, dir.path());
        let url = server.url();
        let ann = Client::new(dir.path(), "ann", &url, server.token("ann", None));
        let mut ben = Client::new(dir.path(), "ben", &url, server.token("ben", None));
        ben.token_in_query = true;
        let rita_token = server.token("rita", None);
        let rita = Device::init_with_token(dir.path(), "rita", &url, Some(&rita_token));

        // Ada, made by one client, reaches everyone.
        assert_eq!(ann.add("Ada"), 1);
        assert_eq!(ann.sync()["pushed"], 1);
        assert_eq!(ben.sync()["pulled"], 1);
        rita.sync().unwrap();
        assert_eq!(rita.rows("SELECT name FROM contacts WHERE id = 1"), vec![vec![Value::Text("Ada".into())]]);

        // Offline: each edits another field of Ada; both clients number a
        // new contact 2 (AUTOINCREMENT); the replica adds one of its own.
        // (A tutorial UPDATE carries the whole row: a column it holds stale
        // counts as written at its time. Ben edits before Ann here, so his
        // stale phone is older than her edit and every field edit is kept;
        // the README spells out the other order.)
        ben.run(&["edit", "1", "email", "ada@example.com"]);
        ann.run(&["edit", "1", "phone", "555-0101"]);
        rita.exec("UPDATE contacts SET name = 'Ada Lovelace' WHERE id = 1");
        assert_eq!(ann.add("Anne"), 2);
        assert_eq!(ben.add("Ben"), 2, "both clients pick id 2 offline");
        rita.exec("INSERT INTO contacts (id, name) VALUES (10, 'Rita')");
        ben.run(&["add", "Bea"]);
        ben.run(&["delete", "3"]);

        for _ in 0..2 {
            ann.sync();
            ben.sync();
            rita.sync().unwrap();
        }

        let expected = json!([
            [1, "Ada Lovelace", "ada@example.com", "555-0101"],
            [2, "Ben", null, null],
            [10, "Rita", null, null]
        ]);
        assert_eq!(ann.rows(), expected, "{}", store.name());
        assert_eq!(ben.rows(), expected, "{}", store.name());
        assert_eq!(as_json(rita.rows("SELECT id, name, email, phone FROM contacts ORDER BY id")), expected);
        assert_eq!(as_json(server.rows("SELECT id, name, email, phone FROM contacts ORDER BY id")), expected);
        // Anne lost to Ben's later insert under id 2: logged and counted.
        assert_eq!(metric(&server, &rita_token, "rowsync_key_collisions_total"), 1);
        assert_eq!(metric(&server, &rita_token, "rowsync_sync_refused_total"), 0);
    });
}

fn post(server: &TestServer, token: &str, body: &serde_json::Value) -> (u16, serde_json::Value) {
    let answer = ureq::post(&format!("{}/sync", server.url()))
        .set("Authorization", &format!("Bearer {token}"))
        .send_json(body.clone());
    let (status, response) = match answer {
        Ok(response) => (response.status(), response),
        Err(ureq::Error::Status(status, response)) => (status, response),
        Err(e) => panic!("{e}"),
    };
    (status, response.into_json().unwrap())
}

fn changes(server: &TestServer, token: &str, since: &str) -> Vec<serde_json::Value> {
    ureq::get(&format!("{}/changes", server.url()))
        .query("since", since)
        .query("token", token)
        .call()
        .unwrap()
        .into_json()
        .unwrap()
}

#[test]
fn a_replayed_change_applies_once_and_bad_changes_are_refused_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let server = with_tokens(&TestStore::Sqlite, dir.path());
    let token = server.token("ann", None);
    let insert = json!({"table": "contacts", "record_id": 7, "operation": "INSERT",
        "timestamp": "2026-01-01T10:00:00.000001+00:00",
        "data": {"id": 7, "name": "Grace", "email": null, "phone": null}});
    assert_eq!(post(&server, &token, &insert).0, 200);
    let first = changes(&server, &token, "1970-01-01T00:00:00+00:00");
    assert_eq!(first.len(), 1);
    assert_eq!(first[0]["operation"], "INSERT");
    assert_eq!(first[0]["data"], json!({"id": 7, "name": "Grace", "email": null, "phone": null}));
    let stamp = first[0]["timestamp"].as_str().unwrap().to_string();

    // The answer was lost; the client sends the same change again.
    assert_eq!(post(&server, &token, &insert).0, 200);
    assert!(changes(&server, &token, &stamp).is_empty(), "a replay changes nothing");

    // No data: the row was deleted on the client before it sent this.
    let gone = json!({"table": "contacts", "record_id": 8, "operation": "UPDATE",
        "timestamp": "2026-01-01T10:00:01+00:00"});
    assert_eq!(
        post(&server, &token, &gone),
        (
            200,
            json!({"status": "ignored",
        "reason": "no data: the row was deleted on the client"})
        )
    );

    let refused = [
        (
            json!({"table": "people", "record_id": 1, "operation": "DELETE", "timestamp": "2026-01-01T10:00:00Z"}),
            422,
            "unknown_table",
        ),
        (
            json!({"table": "contacts", "record_id": 1, "operation": "INSERT", "timestamp": "2026-01-01T10:00:00Z",
            "data": {"id": 1, "name": "X", "salary": 1}}),
            422,
            "unknown_column",
        ),
        (
            json!({"table": "contacts", "record_id": 1, "operation": "INSERT", "timestamp": "2026-01-01T10:00:00Z",
            "data": {"id": 1, "name": null}}),
            422,
            "invalid_value",
        ),
        (
            json!({"table": "contacts", "record_id": "one", "operation": "DELETE", "timestamp": "2026-01-01T10:00:00Z"}),
            422,
            "invalid_value",
        ),
        (
            json!({"table": "contacts", "record_id": 1, "operation": "DELETE", "timestamp": "last tuesday"}),
            422,
            "invalid_value",
        ),
        (
            json!({"table": "contacts", "record_id": 1, "operation": "MERGE", "timestamp": "2026-01-01T10:00:00Z"}),
            400,
            "malformed_body",
        ),
        (
            json!({"table": "contacts", "record_id": 1, "operation": "DELETE", "timestamp": "2099-01-01T00:00:00Z"}),
            422,
            "clock_skew",
        ),
    ];
    for (body, status, code) in &refused {
        let (got, answer) = post(&server, &token, body);
        assert_eq!((got, answer["code"].as_str()), (*status, Some(*code)), "{body} -> {answer}");
    }
    assert_eq!(metric(&server, &token, "rowsync_sync_refused_total"), refused.len() as u64);
    assert!(changes(&server, &token, &stamp).is_empty(), "nothing refused was stored");

    // A since later than anything the server holds is a client's own clock.
    let error = ureq::get(&format!("{}/changes?since=2030-01-01T00:00:00Z", server.url()))
        .set("Authorization", &format!("Bearer {token}"))
        .call()
        .unwrap_err();
    assert!(matches!(error, ureq::Error::Status(400, _)), "{error}");
}

#[test]
fn changes_come_in_pages_a_client_follows_and_need_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_configured(&TestStore::Sqlite, dir.path(), SCHEMA, |config| {
        config.auth = Auth::Tokens;
        config.limits.page_changes = 2;
    });
    let token = server.token("rita", None);
    let rita = Device::init_with_token(dir.path(), "rita", &server.url(), Some(&token));
    for i in 1..=5 {
        rita.exec(&format!("INSERT INTO contacts (id, name) VALUES ({i}, 'n{i}')"));
    }
    rita.sync_with(SyncOptions { pull_limit: 2, ..SyncOptions::default() }).unwrap();

    let mut since = "1970-01-01T00:00:00+00:00".to_string();
    let mut seen = Vec::new();
    loop {
        let page = changes(&server, &token, &since);
        assert!(page.len() <= 2, "{page:?}");
        let Some(last) = page.last() else { break };
        let stamp = last["timestamp"].as_str().unwrap().to_string();
        assert!(stamp > since, "strictly increasing: {stamp} after {since}");
        seen.extend(page.iter().map(|c| c["record_id"].as_i64().unwrap()));
        since = stamp;
    }
    assert_eq!(seen, vec![1, 2, 3, 4, 5], "none skipped, none repeated");

    // The Python client follows the pages by itself.
    let ann = Client::new(dir.path(), "ann", &server.url(), server.token("ann", None));
    assert_eq!(ann.sync()["pulled"], 5);
    assert_eq!(ann.rows().as_array().unwrap().len(), 5);

    for bad in [None, Some("rs_nope")] {
        let mut request = ureq::get(&format!("{}/changes", server.url()));
        if let Some(token) = bad {
            request = request.query("token", token);
        }
        assert!(matches!(request.call(), Err(ureq::Error::Status(401, _))));
    }
    let delete =
        json!({"table": "contacts", "record_id": 1, "operation": "DELETE", "timestamp": "2026-01-01T10:00:00Z"});
    let unauthorized = ureq::post(&format!("{}/sync", server.url())).send_json(delete);
    assert!(matches!(unauthorized, Err(ureq::Error::Status(401, _))));
}

#[test]
fn a_long_run_of_positions_without_rows_does_not_stall_a_client() {
    on_every_store(|store| {
        let dir = tempfile::tempdir().unwrap();
        let server = with_tokens(store, dir.path());
        let token = server.token("rita", None);
        let rita = Device::init_with_token(dir.path(), "rita", &server.url(), Some(&token));
        for i in 1..=3 {
            rita.exec(&format!("INSERT INTO contacts (id, name) VALUES ({i}, 'n{i}')"));
        }
        rita.sync().unwrap();
        // Rows changed again move to new positions and leave the old ones
        // empty: here 300,000 of them, three pull spans, after the first
        // row. A page then holds every row of its span and more lie past it:
        // only the span's last position tells a client where to go on.
        server.exec(
            "UPDATE rowsync_rows SET pos = pos + 300000 WHERE pos > 1; \
             UPDATE rowsync_positions SET last = last + 300000",
        );
        let first = changes(&server, &token, "1970-01-01T00:00:00+00:00");
        assert_eq!(first.len(), 1, "{first:?}");
        let since = first[0]["timestamp"].as_str().unwrap();
        let rest = changes(&server, &token, since);
        let ids: Vec<i64> = rest.iter().map(|c| c["record_id"].as_i64().unwrap()).collect();
        assert_eq!(ids, vec![2, 3], "an empty answer would tell the client it has everything");

        // A new replica pulls through the same run on `/v1`, a change a
        // page: its first page holds the span's one row, and only the span's
        // `more` sends it on to the rows past it.
        let sam = Device::init_with_token(dir.path(), "sam", &server.url(), Some(&server.token("sam", None)));
        sam.sync_with(SyncOptions { pull_limit: 1, ..SyncOptions::default() }).unwrap();
        let names = sam.rows("SELECT name FROM contacts ORDER BY id");
        assert_eq!(as_json(names), json!([["n1"], ["n2"], ["n3"]]), "{}", store.name());
    });
}

#[test]
fn private_rows_stay_private_through_the_tutorial_endpoints() {
    let dir = tempfile::tempdir().unwrap();
    let schema = "CREATE TABLE notes (id TEXT PRIMARY KEY, body TEXT, owner TEXT);";
    let server = TestServer::start_configured(&TestStore::Sqlite, dir.path(), schema, |config| {
        config.auth = Auth::Tokens;
        config.owners.insert("notes".into(), "owner".into());
    });
    let (alice, bob) = (server.token("alice", None), server.token("bob", None));
    let note = |id: &str, body: &str, at: &str| {
        json!({"table": "notes", "record_id": id, "operation": "INSERT", "timestamp": at,
            "data": {"id": id, "body": body}})
    };
    assert_eq!(post(&server, &bob, &note("b1", "Bob's", "2026-01-01T10:00:00Z")).0, 200);
    // Alice claims to write as Bob: the owner column is hers whatever she sends.
    let mut claimed = note("a1", "Alice's", "2026-01-01T10:00:01Z");
    claimed["data"]["owner"] = json!("bob");
    assert_eq!(post(&server, &alice, &claimed).0, 200);

    let hers = changes(&server, &alice, "1970-01-01T00:00:00+00:00");
    assert_eq!(hers.len(), 1, "{hers:?}");
    assert_eq!(hers[0]["data"], json!({"id": "a1", "body": "Alice's", "owner": "alice"}));
    // Guessing Bob's key to change or delete it is refused, and counted.
    let (status, _) = post(&server, &alice, &note("b1", "mine now", "2026-01-01T10:00:02Z"));
    assert_eq!(status, 403);
    let delete =
        json!({"table": "notes", "record_id": "b1", "operation": "DELETE", "timestamp": "2026-01-01T10:00:03Z"});
    assert_eq!(post(&server, &alice, &delete).0, 403);
    assert_eq!(metric(&server, &alice, "rowsync_sync_refused_total"), 2);
    let his = changes(&server, &bob, "1970-01-01T00:00:00+00:00");
    assert_eq!(his.len(), 1);
    assert_eq!(his[0]["data"], json!({"id": "b1", "body": "Bob's", "owner": "bob"}));
}
