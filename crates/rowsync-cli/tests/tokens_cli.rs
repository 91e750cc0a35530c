//! Tokens from the command line: made, listed and revoked on the server's
//! database; a replica keeps its token; a refused token is exit code 4 and
//! one line; a server without tokens is refused off loopback.

mod common;

use std::process::{Command, Output};

use common::{free_port, ROWSYNC};

const EXIT_UNAUTHORIZED: i32 = 4;

fn rowsync(args: &[&str]) -> Output {
    Command::new(ROWSYNC).args(args).env_remove("ROWSYNC_TOKEN").output().expect("run rowsync")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn one_line_failure(output: &Output, code: i32, needle: &str) {
    let err = text(&output.stderr);
    assert_eq!(output.status.code(), Some(code), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err:?}");
    assert!(err.contains(needle), "{err:?} lacks {needle:?}");
}

#[test]
fn a_token_made_on_the_database_opens_the_server_and_its_revocation_closes_it() {
    let dir = tempfile::tempdir().unwrap();
    let schema = dir.path().join("schema.sql");
    std::fs::write(&schema, "CREATE TABLE contacts (id TEXT PRIMARY KEY, name TEXT NOT NULL);").unwrap();
    let database = format!("sqlite://{}", dir.path().join("server.db").display());

    // Made before the server ever ran: the database gets its bookkeeping.
    let made = rowsync(&["token", "create", "--database", &database, "--user", "ada", "--expires", "30d"]);
    assert!(made.status.success(), "{}", text(&made.stderr));
    let token = text(&made.stdout).trim().to_string();
    assert!(token.starts_with("rs_") && text(&made.stdout).lines().count() == 1, "only the token on stdout");
    assert!(text(&made.stderr).contains("shown only now"));
    one_line_failure(
        &rowsync(&["token", "create", "--database", &database, "--user", "Ada Lovelace"]),
        1,
        "lowercase letters",
    );

    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let _server = common::serve(&["--database", &database, "--schema", schema.to_str().unwrap()], port);

    // Without a token the server says so, and init changes nothing.
    let laptop = dir.path().join("laptop.db");
    let laptop = laptop.to_str().unwrap();
    one_line_failure(&rowsync(&["init", laptop, "--server", &url]), EXIT_UNAUTHORIZED, "needs a token");
    one_line_failure(
        &rowsync(&["init", laptop, "--server", &url, "--token", "rs_nope"]),
        EXIT_UNAUTHORIZED,
        "malformed",
    );

    // The token from the environment, kept in the replica.
    let init =
        Command::new(ROWSYNC).args(["init", laptop, "--server", &url]).env("ROWSYNC_TOKEN", &token).output().unwrap();
    assert!(init.status.success(), "{}", text(&init.stderr));
    let app = rusqlite::Connection::open(laptop).unwrap();
    app.execute("INSERT INTO contacts VALUES ('k1', 'Kim')", []).unwrap();
    let synced = rowsync(&["sync", laptop]);
    assert!(synced.status.success(), "{}", text(&synced.stderr));
    assert!(text(&synced.stdout).contains("pushed 1 change(s)"));

    let listed = rowsync(&["token", "list", "--database", &database, "--json"]);
    let listed: serde_json::Value = serde_json::from_str(text(&listed.stdout).trim()).unwrap();
    assert_eq!((listed["user"].as_str(), listed["state"].as_str()), (Some("ada"), Some("valid")));
    assert!(!text(&rowsync(&["token", "list", "--database", &database]).stdout).contains(&token[20..]));

    // Revoked while the server runs: the next request is refused, the
    // write stays queued, and the exit code says why.
    let id = listed["id"].as_str().unwrap();
    let revoked = rowsync(&["token", "revoke", "--database", &database, id]);
    assert!(revoked.status.success(), "{}", text(&revoked.stderr));
    one_line_failure(&rowsync(&["token", "revoke", "--database", &database, id]), 1, "revoked already");
    app.execute("UPDATE contacts SET name = 'Kim Lee'", []).unwrap();
    let refused = rowsync(&["sync", laptop]);
    one_line_failure(&refused, EXIT_UNAUTHORIZED, "was revoked");
    assert!(text(&refused.stderr).contains("1 change(s) stay queued"));

    // A new token, given with init again: the queued write goes out.
    let made = rowsync(&["token", "create", "--database", &database, "--user", "ada"]);
    let token = text(&made.stdout).trim().to_string();
    assert!(rowsync(&["init", laptop, "--server", &url, "--token", &token]).status.success());
    let synced = rowsync(&["sync", laptop]);
    assert!(synced.status.success(), "{}", text(&synced.stderr));
    assert!(text(&synced.stdout).contains("pushed 1 change(s)"));
}

#[test]
fn a_server_without_tokens_is_refused_where_other_machines_reach_it() {
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}", dir.path().join("server.db").display());
    let output = rowsync(&["serve", "--database", &database, "--insecure-no-auth", "--listen", "0.0.0.0:0"]);
    one_line_failure(&output, 1, "--insecure-no-auth lets anyone read and write everything");
    assert!(!dir.path().join("server.db").exists(), "refused before anything was made");
}

#[test]
fn a_token_for_another_host_over_plain_http_is_warned_of() {
    let dir = tempfile::tempdir().unwrap();
    let laptop = dir.path().join("laptop.db");
    // 192.0.2.1 is a documentation address: nothing answers there.
    let output = rowsync(&[
        "init",
        laptop.to_str().unwrap(),
        "--server",
        "http://192.0.2.1:9",
        "--token",
        "rs_0123456789abcdef_000000000000000000000000000000000000000000000000",
    ]);
    assert!(text(&output.stderr).contains("warning: the token goes to 192.0.2.1 over plain http://"));
}
