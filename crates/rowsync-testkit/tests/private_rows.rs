//! Tokens and private tables, on every store: a request without a valid
//! token is refused and changes nothing; Alice neither reads nor writes
//! Bob's rows, by sync or by crafted requests; a token over its rate is told
//! when to come back, and the client waits.

use std::time::{Duration, Instant};

use rowsync_proto::Value;
use rowsync_server::Auth;
use rowsync_testkit::{on_every_store, text, Device, TestServer, TestStore};

const SCHEMA: &str = "CREATE TABLE contacts (id TEXT PRIMARY KEY, owner TEXT, name TEXT);
CREATE TABLE tags (id TEXT PRIMARY KEY, label TEXT);";

/// A server asking for tokens, `contacts` private by its `owner` column.
fn private_server(store: &TestStore, dir: &std::path::Path) -> TestServer {
    TestServer::start_configured(store, dir, SCHEMA, |config| {
        config.auth = Auth::Tokens;
        config.owners.insert("contacts".into(), "owner".into());
        config.limits.requests_per_second = None;
    })
}

/// An answer: status, JSON body, and the `WWW-Authenticate` header.
struct Answer {
    status: u16,
    body: serde_json::Value,
    authenticate: Option<String>,
}

fn answer(result: Result<ureq::Response, ureq::Error>) -> Answer {
    let response = match result {
        Ok(response) => response,
        Err(ureq::Error::Status(_, response)) => response,
        Err(e) => panic!("no answer: {e}"),
    };
    let status = response.status();
    let authenticate = response.header("WWW-Authenticate").map(str::to_string);
    let body = response.into_string().unwrap();
    Answer { status, body: serde_json::from_str(&body).unwrap_or(serde_json::Value::String(body)), authenticate }
}

fn get(url: &str, path: &str, authorization: Option<&str>) -> Answer {
    let request = ureq::get(&format!("{url}{path}"));
    answer(match authorization {
        Some(value) => request.set("Authorization", value).call(),
        None => request.call(),
    })
}

fn post(url: &str, path: &str, authorization: Option<&str>, body: &str) -> Answer {
    let request = ureq::post(&format!("{url}{path}")).set("Content-Type", "application/json");
    answer(match authorization {
        Some(value) => request.set("Authorization", value).send_string(body),
        None => request.send_string(body),
    })
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// The keys of the changes of a pull answer, per table.
fn keys(page: &serde_json::Value, table: &str) -> Vec<String> {
    let changes = page["changes"].as_array().expect("changes");
    changes.iter().filter(|c| c["table"] == table).map(|c| c["key"][0].as_str().unwrap().to_string()).collect()
}

fn site_of(device: &Device) -> String {
    device.replica().site().as_str().to_string()
}

#[test]
fn alice_neither_reads_nor_writes_bobs_rows() {
    on_every_store(|store| {
        let dir = tempfile::tempdir().unwrap();
        let server = private_server(store, dir.path());
        let url = server.url();
        let (alice_token, bob_token) = (server.token("alice", None), server.token("bob", None));
        let alice = Device::init_with_token(dir.path(), "alice", &url, Some(&alice_token));
        let bob = Device::init_with_token(dir.path(), "bob", &url, Some(&bob_token));

        // Alice writes someone else's name into the owner column: the server
        // keeps her as the owner, and her replica learns it.
        alice.exec("INSERT INTO contacts VALUES ('a1', 'mallory', 'Ann'); INSERT INTO tags VALUES ('t1', 'family');");
        alice.sync().unwrap();
        assert_eq!(
            server.rows("SELECT id, owner, name FROM contacts"),
            vec![vec![text("a1"), text("alice"), text("Ann")]]
        );
        assert_eq!(alice.rows("SELECT owner FROM contacts"), vec![vec![text("alice")]]);

        // Bob sees the shared table, none of Alice's rows.
        bob.exec("INSERT INTO contacts VALUES ('b1', 'alice', 'Bo');");
        bob.sync().unwrap();
        assert_eq!(bob.rows("SELECT id FROM tags"), vec![vec![text("t1")]]);
        assert_eq!(bob.rows("SELECT id, owner FROM contacts"), vec![vec![text("b1"), text("bob")]]);
        alice.sync().unwrap();
        assert_eq!(
            alice.rows("SELECT id FROM contacts"),
            vec![vec![text("a1")]],
            "Bob's row, claimed for Alice, is his"
        );

        // Bob guesses Alice's key: the change is set aside, her row unchanged.
        bob.exec("INSERT INTO contacts VALUES ('a1', 'bob', 'Mine now');");
        let report = bob.sync().unwrap();
        assert_eq!(report.rejected, 1, "{report:?}");
        assert!(report.rejections[0].contains("not yours"), "{:?}", report.rejections);
        // An insert and a delete of her key, folded into a delete: refused too.
        alice.exec("INSERT INTO contacts VALUES ('a2', NULL, 'Ada');");
        alice.sync().unwrap();
        bob.exec("INSERT INTO contacts VALUES ('a2', 'bob', 'x'); DELETE FROM contacts WHERE id = 'a2';");
        assert_eq!(bob.sync().unwrap().rejected, 1);
        // A key she deleted stays hers.
        alice.exec("DELETE FROM contacts WHERE id = 'a1';");
        alice.sync().unwrap();
        let bob2 = Device::init_with_token(dir.path(), "bob2", &url, Some(&bob_token));
        bob2.exec("INSERT INTO contacts VALUES ('a1', 'bob', 'Taken');");
        assert_eq!(bob2.sync().unwrap().rejected, 1);
        let mut on_server = server.rows("SELECT id, owner, name FROM contacts ORDER BY id");
        on_server.sort_by_key(|row| format!("{row:?}"));
        assert_eq!(
            on_server,
            vec![vec![text("a2"), text("alice"), text("Ada")], vec![text("b1"), text("bob"), text("Bo")]],
        );

        // Crafted pulls: only Bob's rows and shared ones, whatever the query.
        let bob_auth = bearer(&bob_token);
        let page = get(&url, "/v1/pull?cursor=0&limit=1000&user=alice&owner=alice&table=contacts", Some(&bob_auth));
        assert_eq!(page.status, 200);
        assert_eq!(keys(&page.body, "contacts"), vec!["b1".to_string()]);
        assert_eq!(keys(&page.body, "tags"), vec!["t1".to_string()]);
        let cursor = page.body["cursor"].as_u64().unwrap();
        // Alice's later writes move nothing for Bob: not the cursor, not the
        // timing of a long-poll.
        alice.exec("INSERT INTO contacts VALUES ('a3', NULL, 'Al');");
        alice.sync().unwrap();
        let again = get(&url, &format!("/v1/pull?cursor={cursor}&limit=1000"), Some(&bob_auth));
        assert_eq!(
            (again.body["cursor"].as_u64(), again.body["changes"].as_array().map(Vec::len)),
            (Some(cursor), Some(0))
        );
        let writer = std::thread::spawn({
            let alice = Device { name: "alice".into(), path: alice.path.clone() };
            move || {
                std::thread::sleep(Duration::from_millis(300));
                alice.exec("INSERT INTO contacts VALUES ('a4', NULL, 'Amy');");
                alice.sync().unwrap();
            }
        });
        let started = Instant::now();
        let waited = get(&url, &format!("/v1/pull?cursor={cursor}&limit=1000&wait=2"), Some(&bob_auth));
        writer.join().unwrap();
        assert!(started.elapsed() >= Duration::from_millis(1_900), "woken by Alice's commit: {:?}", started.elapsed());
        assert_eq!(waited.body["changes"].as_array().map(Vec::len), Some(0));
        assert_eq!(waited.body["cursor"].as_u64(), Some(cursor));

        // Alice's device id, under Bob's token: refused both ways.
        let alice_site = site_of(&alice);
        let probe = get(&url, &format!("/v1/pull?cursor=0&site={alice_site}&known=1,2"), Some(&bob_auth));
        assert_eq!((probe.status, probe.body["code"].as_str()), (403, Some("forbidden")));
        let push = format!(r#"{{"site":"{alice_site}","last_seq":999,"changes":[]}}"#);
        let pushed = post(&url, "/v1/push", Some(&bob_auth), &push);
        assert_eq!((pushed.status, pushed.body["code"].as_str()), (403, Some("forbidden")));
        alice.exec("UPDATE contacts SET name = 'Ada L.' WHERE id = 'a2';");
        alice.sync().expect("Alice's device still syncs");
        let names = server.rows("SELECT name FROM contacts WHERE id = 'a2'");
        assert_eq!(names, vec![vec![text("Ada L.")]]);
    });
}

#[test]
fn a_request_without_a_valid_token_is_refused_and_changes_nothing() {
    on_every_store(|store| {
        let dir = tempfile::tempdir().unwrap();
        let server = private_server(store, dir.path());
        let url = server.url();
        let expired = server.token("carol", Some(Duration::from_millis(1)));
        let revoked = server.token("dave", None);
        server.revoke("dave");
        std::thread::sleep(Duration::from_millis(5));
        let unknown = format!("rs_{}_{}", "0".repeat(16), "0".repeat(48));
        let push = r#"{"site":"0123456789abcdef0123456789abcdef","last_seq":1,"changes":[{"seq":1,"table":"tags","key":["t"],"alive":{"hlc":1,"site":"0123456789abcdef0123456789abcdef"},"version":{"hlc":1,"site":"0123456789abcdef0123456789abcdef"},"cells":[{"column":"label","value":"x"}]}]}"#;
        for (authorization, needle) in [
            (None, "needs a token"),
            (Some("Basic YWxpY2U6c2VjcmV0".to_string()), "malformed"),
            (Some("Bearer rs_1234".to_string()), "malformed"),
            (Some(bearer(&unknown)), "unknown"),
            (Some(bearer(&expired)), "expired"),
            (Some(bearer(&revoked)), "revoked"),
        ] {
            let authorization = authorization.as_deref();
            for answer in [
                post(&url, "/v1/push", authorization, push),
                get(&url, "/v1/pull?cursor=0", authorization),
                get(&url, "/v1/schema", authorization),
                get(&url, "/metrics", authorization),
            ] {
                assert_eq!(answer.status, 401, "{authorization:?}: {}", answer.body);
                assert_eq!(answer.body["code"], "unauthorized");
                assert!(answer.body["message"].as_str().unwrap().contains(needle), "{}", answer.body);
                assert_eq!(answer.authenticate.as_deref(), Some("Bearer"));
            }
        }
        assert_eq!(get(&url, "/health", None).status, 200, "health needs no token");
        assert!(server.rows("SELECT id FROM tags").is_empty(), "nothing was applied");
        let good = bearer(&server.token("erin", None));
        let pushed = post(&url, "/v1/push", Some(&good), push);
        assert_eq!(pushed.status, 200, "{}", pushed.body);
        assert_eq!(server.rows("SELECT id FROM tags"), vec![vec![Value::Text("t".into())]]);
    });
}

#[test]
fn a_token_over_its_rate_is_told_when_to_come_back_and_the_client_waits() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_configured(&TestStore::Sqlite, dir.path(), SCHEMA, |config| {
        config.auth = Auth::Tokens;
        config.limits.requests_per_second = std::num::NonZeroU32::new(2);
        config.limits.burst = std::num::NonZeroU32::new(2).unwrap();
    });
    let token = server.token("ann", None);
    let statuses: Vec<u16> = (0..6).map(|_| get(&server.url(), "/v1/schema", Some(&bearer(&token))).status).collect();
    assert!(statuses.contains(&429), "{statuses:?}");
    let limited = ureq::get(&format!("{}/v1/schema", server.url())).set("Authorization", &bearer(&token)).call();
    let Err(ureq::Error::Status(429, response)) = limited else { panic!("still limited") };
    assert!(response.header("Retry-After").and_then(|s| s.parse::<u64>().ok()).is_some_and(|s| s >= 1));
    let body: serde_json::Value = serde_json::from_str(&response.into_string().unwrap()).unwrap();
    assert_eq!(body["code"], "rate_limited");
    // Another token has a rate of its own.
    assert_eq!(get(&server.url(), "/v1/schema", Some(&bearer(&server.token("bo", None)))).status, 200);

    // A sync takes several requests: it waits out each 429 and succeeds.
    std::thread::sleep(Duration::from_secs(1));
    let device = Device::init_with_token(dir.path(), "ann", &server.url(), Some(&token));
    device.exec("INSERT INTO tags VALUES ('t', 'x');");
    device.sync().expect("the client honours Retry-After");
    device.sync().expect("and again");
    assert_eq!(server.rows("SELECT id FROM tags"), vec![vec![text("t")]]);
}

#[test]
fn a_shared_table_made_private_gives_each_row_to_the_user_it_names() {
    on_every_store(|store| {
        let dir = tempfile::tempdir().unwrap();
        let mut server = TestServer::start_configured(store, dir.path(), SCHEMA, |config| {
            config.auth = Auth::Tokens;
            config.limits.requests_per_second = None;
        });
        let (alice_token, bob_token) = (server.token("alice", None), server.token("bob", None));
        let alice = Device::init_with_token(dir.path(), "alice", &server.url(), Some(&alice_token));
        alice.exec(
            "INSERT INTO contacts VALUES ('a1', 'alice', 'Ann'); INSERT INTO contacts VALUES ('b1', 'bob', 'Bo');
             INSERT INTO contacts VALUES ('x1', 'Not A User!', 'Xi');",
        );
        alice.sync().unwrap();

        server.reconfigure(|config| {
            config.owners.insert("contacts".into(), "owner".into());
        });
        let bob = Device::init_with_token(dir.path(), "bob", &server.url(), Some(&bob_token));
        bob.sync().unwrap();
        assert_eq!(bob.rows("SELECT id FROM contacts"), vec![vec![text("b1")]], "only the row naming him");
        bob.exec(
            "UPDATE contacts SET name = 'Bob' WHERE id = 'b1'; INSERT INTO contacts VALUES ('x1', 'bob', 'Mine');",
        );
        assert_eq!(bob.sync().unwrap().rejected, 1, "a row naming no valid user belongs to nobody");
        let alice2 = Device::init_with_token(dir.path(), "alice2", &server.url(), Some(&alice_token));
        alice2.sync().unwrap();
        assert_eq!(alice2.rows("SELECT id FROM contacts"), vec![vec![text("a1")]]);
        assert_eq!(server.rows("SELECT name FROM contacts WHERE id = 'b1'"), vec![vec![text("Bob")]]);
    });
}
