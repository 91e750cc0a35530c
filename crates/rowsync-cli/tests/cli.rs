//! The `rowsync` binary as users and scripts drive it: real processes, a
//! real server on a loopback port, exit codes and one-line errors.

mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{free_port, Server, ROWSYNC};

const EXIT_UNREACHABLE: i32 = 3;

fn rowsync(args: &[&str]) -> Output {
    Command::new(ROWSYNC).args(args).output().expect("run rowsync")
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// One clear line, no panic, no backtrace.
fn assert_one_line_error(output: &Output, needle: &str) {
    let err = stderr(output);
    assert!(!output.status.success(), "expected a failure, got success: {}", stdout(output));
    assert_eq!(err.trim_end().lines().count(), 1, "error is not one line: {err:?}");
    assert!(err.starts_with("rowsync: "), "{err:?}");
    assert!(err.contains(needle), "{err:?} lacks {needle:?}");
    assert!(!err.contains("panicked") && !err.contains("backtrace"), "{err:?}");
}

/// A server without tokens (tokens are tested in `tokens_cli.rs`).
fn serve(dir: &Path, port: u16) -> Server {
    common::serve_open(dir, port, "CREATE TABLE contacts (id TEXT PRIMARY KEY, name TEXT NOT NULL, phone TEXT);")
}

#[test]
fn every_command_answers_help() {
    for command in ["serve", "init", "sync", "watch", "status", "conflicts", "resolve", "token", "demo"] {
        let output = rowsync(&[command, "--help"]);
        assert!(output.status.success(), "{command} --help failed");
        assert!(stdout(&output).contains("Usage: rowsync"), "{command}");
    }
}

#[test]
fn a_bad_schema_file_is_refused_naming_table_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let schema = dir.path().join("schema.sql");
    std::fs::write(&schema, "CREATE TABLE contacts (id TEXT PRIMARY KEY);\n\nCREATE TABLE notes (\n  body TEXT\n);\n")
        .unwrap();
    let database = format!("sqlite://{}", dir.path().join("s.db").display());
    let output =
        rowsync(&["serve", "--database", &database, "--schema", schema.to_str().unwrap(), "--listen", "127.0.0.1:0"]);
    assert_one_line_error(&output, "line 3: table notes: has no PRIMARY KEY");
    assert_eq!(output.status.code(), Some(1));

    let output = rowsync(&["serve", "--database", "ftp://nowhere/db", "--schema", schema.to_str().unwrap()]);
    assert_one_line_error(&output, "--database: unknown database URL");
}

#[test]
fn a_bad_settings_file_is_refused_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let schema = dir.path().join("schema.sql");
    std::fs::write(&schema, "CREATE TABLE contacts (id TEXT PRIMARY KEY, name TEXT);").unwrap();
    let database = format!("sqlite://{}", dir.path().join("s.db").display());
    let settings = dir.path().join("rowsync.toml");
    let serve = |settings_text: &str| {
        std::fs::write(&settings, settings_text).unwrap();
        rowsync(&[
            "serve",
            "--database",
            &database,
            "--schema",
            schema.to_str().unwrap(),
            "--config",
            settings.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
    };
    assert_one_line_error(&serve("[tables.contacts]\nconflict = \"sometimes\"\n"), "unknown variant `sometimes`");
    assert_one_line_error(&serve("[tables.nope]\nconflict = \"row\"\n"), "table nope");
    assert_one_line_error(&serve("max_clock_ahead = 5\n"), "unknown field `max_clock_ahead`");
}

#[test]
fn sync_of_a_file_that_is_not_a_replica_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plain.db");
    let output = rowsync(&["sync", path.to_str().unwrap()]);
    assert_one_line_error(&output, "run `rowsync init");
    assert!(!path.exists(), "sync must not create files");
}

#[test]
fn init_write_sync_status_and_an_unreachable_server() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let server = serve(dir.path(), port);
    let url = format!("http://127.0.0.1:{port}");
    let local = dir.path().join("laptop.db");
    let local = local.to_str().unwrap();

    let output = rowsync(&["init", local, "--server", &url]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).contains("replica"));
    let output = rowsync(&["init", local, "--server", &url]);
    assert!(output.status.success(), "init twice must be harmless: {}", stderr(&output));

    let conn = rusqlite::Connection::open(local).unwrap();
    conn.execute("INSERT INTO contacts VALUES ('k1', 'Kim', '123')", []).unwrap();
    let output = rowsync(&["sync", local]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).contains("pushed 1 change(s)"), "{}", stdout(&output));
    assert_eq!(stdout(&output).lines().count(), 1);

    drop(server);
    conn.execute("UPDATE contacts SET phone = '456' WHERE id = 'k1'", []).unwrap();
    let output = rowsync(&["sync", local]);
    assert_eq!(output.status.code(), Some(EXIT_UNREACHABLE), "{}", stderr(&output));
    assert_one_line_error(&output, "1 change(s) stay queued");

    let output = rowsync(&["status", local, "--json"]);
    assert!(output.status.success());
    let status: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(status["pending_changes"], 1);
    assert_eq!(status["server_url"], url.as_str());
    assert!(status["last_error"].as_str().unwrap().contains("cannot reach"));
    assert!(status["last_sync"].is_string());
    let failed_at = status["last_error_at"].as_str().expect("when the last error happened").to_string();
    assert!(failed_at.as_str() > status["last_sync"].as_str().unwrap(), "{failed_at} is after the last sync");

    let _server = serve(dir.path(), port);
    let output = rowsync(&["sync", local]);
    assert!(output.status.success(), "{}", stderr(&output));
    let output = rowsync(&["status", local]);
    let text = stdout(&output);
    assert!(text.contains("pending      0 change(s)"), "{text}");
    assert!(!text.contains("last error"), "{text}");
    let status: serde_json::Value = serde_json::from_slice(&rowsync(&["status", local, "--json"]).stdout).unwrap();
    assert!(status["last_error"].is_null() && status["last_error_at"].is_null(), "{status}");

    // Conflicts: none here, and bad resolutions are refused in one line.
    assert!(stdout(&rowsync(&["conflicts", local])).contains("no open conflicts"));
    assert_eq!(stdout(&rowsync(&["conflicts", local, "--json"])).trim(), "[]");
    assert_one_line_error(&rowsync(&["resolve", local, "abcd1234", "--keep", "local"]), "no open conflict abcd1234");
    assert_one_line_error(&rowsync(&["resolve", local, "abcd1234", "--set", "phone=1"]), "no open conflict abcd1234");
    let output = rowsync(&["resolve", local, "abcd1234"]);
    assert_eq!(output.status.code(), Some(2), "neither --keep nor --set is a usage error");
}

#[test]
fn the_demo_tells_its_story_and_checks_it() {
    let output = rowsync(&["demo"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.contains("laptop, phone and server hold identical contacts: yes"), "{text}");
    assert!(text.contains("it synced everywhere and closed the conflict"), "{text}");
    assert!(text.contains("the phone could read it") && text.contains("with no sync command"), "{text}");
}

/// What sync finds and mends on the way (here a row deleted by INSERT OR
/// REPLACE, which fires no delete trigger) is said in `note:` lines; a
/// second sync of the same file waits for the first rather than racing it.
#[test]
fn sync_says_what_it_mended_and_waits_for_another_sync_of_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _server = serve(dir.path(), port);
    let local = dir.path().join("laptop.db");
    let local = local.to_str().unwrap();
    assert!(rowsync(&["init", local, "--server", &format!("http://127.0.0.1:{port}")]).status.success());
    let app = rusqlite::Connection::open(local).unwrap();
    app.execute_batch(
        "CREATE UNIQUE INDEX by_phone ON contacts (phone);
         INSERT INTO contacts VALUES ('a', 'Ada', '111');",
    )
    .unwrap();
    assert!(rowsync(&["sync", local]).status.success());
    app.execute("INSERT OR REPLACE INTO contacts VALUES ('b', 'Bo', '111')", []).unwrap();

    // Two syncs at once: both succeed, one after the other.
    let first = Command::new(ROWSYNC).args(["sync", local]).spawn().unwrap();
    let second = rowsync(&["sync", local]);
    let first = first.wait_with_output().unwrap();
    assert!(first.status.success() && second.status.success(), "{}", stderr(&second));
    let status = rowsync(&["status", local, "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["pending_changes"], 0);

    app.execute("INSERT OR REPLACE INTO contacts VALUES ('c', 'Cy', '111')", []).unwrap();
    let output = rowsync(&["sync", local]);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(stdout(&output).contains("note: 1 row(s) of table contacts were deleted"), "{}", stdout(&output));
}

#[test]
fn watch_syncs_by_itself_prints_json_lines_and_stops_on_sigterm_with_exit_0() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _server = serve(dir.path(), port);
    let url = format!("http://127.0.0.1:{port}");
    let (laptop, phone) = (dir.path().join("laptop.db"), dir.path().join("phone.db"));
    let (laptop, phone) = (laptop.to_str().unwrap(), phone.to_str().unwrap());
    for local in [laptop, phone] {
        assert!(rowsync(&["init", local, "--server", &url]).status.success());
    }
    let mut watch = Command::new(ROWSYNC)
        .args(["watch", laptop, "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    let mut next_state = || -> serde_json::Value {
        let line = lines.next().expect("a status line").unwrap();
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?} is not JSON: {e}"))
    };
    while next_state()["state"] != "idle" {}

    // Written by another process, pushed with no command.
    let conn = rusqlite::Connection::open(phone).unwrap();
    conn.execute("INSERT INTO contacts VALUES ('k1', 'Kim', '123')", []).unwrap();
    assert!(rowsync(&["sync", phone]).status.success());
    let written = rusqlite::Connection::open(laptop).unwrap();
    written.execute("INSERT INTO contacts VALUES ('k2', 'Lee', NULL)", []).unwrap();
    let started = std::time::Instant::now();
    let count = |sql: &str| written.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap();
    while count("SELECT count(*) FROM contacts") < 2 || count("SELECT count(*) FROM _rowsync_outbox WHERE op != 0") > 0
    {
        assert!(started.elapsed().as_secs() < 10, "watch did not sync both ways");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(rowsync(&["sync", phone]).status.success());
    let phone_rows: i64 = conn.query_row("SELECT count(*) FROM contacts", [], |r| r.get(0)).unwrap();
    assert_eq!(phone_rows, 2);

    // SIGTERM in the middle of a large push: exit 0, nothing lost, and the
    // next start sends the rest.
    written.execute_batch("BEGIN").unwrap();
    for i in 0..20_000 {
        written.execute("INSERT INTO contacts VALUES (?, 'bulk', NULL)", [format!("b{i:05}")]).unwrap();
    }
    written.execute_batch("COMMIT").unwrap();
    while next_state()["state"] != "syncing" {}
    let pid = watch.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    while next_state()["state"] != "stopped" {}
    let status = watch.wait().unwrap();
    assert_eq!(status.code(), Some(0), "SIGTERM is a clean stop");

    let mut again = Command::new(ROWSYNC).args(["watch", laptop, "--json"]).stdout(Stdio::null()).spawn().unwrap();
    let started = std::time::Instant::now();
    while count("SELECT count(*) FROM _rowsync_outbox WHERE op != 0") > 0 {
        assert!(started.elapsed().as_secs() < 60, "the next start did not send the rest");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(Command::new("kill").args(["-INT", &again.id().to_string()]).status().unwrap().success());
    assert_eq!(again.wait().unwrap().code(), Some(0), "SIGINT is a clean stop");
    assert!(rowsync(&["sync", phone]).status.success());
    let phone_rows: i64 = conn.query_row("SELECT count(*) FROM contacts", [], |r| r.get(0)).unwrap();
    assert_eq!(phone_rows, 20_002);
}

#[test]
fn a_schema_change_rowsync_cannot_carry_out_is_refused_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let schema = dir.path().join("schema.sql");
    std::fs::write(&schema, "CREATE TABLE contacts (id TEXT PRIMARY KEY, name TEXT NOT NULL, email TEXT);").unwrap();
    let database = format!("sqlite://{}", dir.path().join("s.db").display());
    let port = common::free_port();
    drop(common::serve(&["--database", &database, "--schema", schema.to_str().unwrap()], port));

    let serve = || {
        rowsync(&["serve", "--database", &database, "--schema", schema.to_str().unwrap(), "--listen", "127.0.0.1:0"])
    };
    std::fs::write(&schema, "CREATE TABLE contacts (id TEXT PRIMARY KEY, name TEXT NOT NULL, mail TEXT);").unwrap();
    let output = serve();
    assert_one_line_error(&output, "column contacts.email is gone: dropping or renaming a column is not supported");
    assert_eq!(output.status.code(), Some(1));
    std::fs::write(&schema, "CREATE TABLE contacts (id TEXT PRIMARY KEY, name TEXT NOT NULL, email INTEGER);").unwrap();
    assert_one_line_error(&serve(), "column contacts.email changed its type (Text to Integer)");
}

#[test]
fn the_sync_benchmark_prints_each_figure_beside_its_reference_and_its_target() {
    let output = rowsync(&["bench", "sync", "--rows", "300"]);
    let out = stdout(&output);
    assert!(output.status.success(), "{}{out}", stderr(&output));
    for needle in [
        "$ rowsync bench sync --rows 300",
        "push (sync on the writing device)",
        "plain batched insert, server",
        "one request per change, each awaited",
        ">= 50.00x",
        "pull (sync on a new device)",
        "plain insert, Python sqlite3",
        ">= 0.30x",
        "longest app commit during that pull",
        "longest app wait for the write lock during that pull",
        "pull of updates to rows the device holds",
        "targets met",
    ] {
        assert!(out.contains(needle), "{out} lacks {needle:?}");
    }
}

#[test]
fn the_benchmark_report_as_json_holds_every_figure_per_size_with_its_ratio_and_verdict() {
    let output = rowsync(&["bench", "sync", "--rows", "200,400", "--json"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("the report is JSON");
    assert!(report["machine"]["cores"].as_u64().unwrap() >= 1, "{report}");
    let figures = report["figures"].as_array().unwrap();
    for rows in [200, 400] {
        let push = figures
            .iter()
            .find(|f| f["rows"] == rows && f["name"].as_str().unwrap().starts_with("push"))
            .unwrap_or_else(|| panic!("no push figure for {rows} rows in {report}"));
        assert_eq!(push["store"], "sqlite");
        let (value, reference) = (push["value"].as_f64().unwrap(), push["reference"]["value"].as_f64().unwrap());
        assert!(value > 0.0 && reference > 0.0, "{push}");
        let ratio = push["ratio"].as_f64().unwrap();
        assert!((ratio - value / reference).abs() < 1e-9, "{push}");
        assert_eq!(push["target"]["ratio_at_least"], 0.3);
        assert_eq!(push["met"].as_bool().unwrap(), ratio >= 0.3, "{push}");
    }
}

/// Beside each capture figure, the same writes through triggers that do
/// nothing and through triggers logging one rowid per write: what any
/// trigger-based capture costs before it records anything of its own.
#[test]
fn the_capture_benchmark_shows_the_floors_of_trigger_capture_without_targets() {
    let output = rowsync(&["bench", "capture", "--rows", "300", "--rounds", "1", "--json"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("the report is JSON");
    let figures = report["figures"].as_array().unwrap();
    for scenario in ["bulk insert (one transaction)", "single-row commits", "per-row updates", "one INSERT...SELECT"] {
        let of = |kind: &str| {
            figures
                .iter()
                .find(|f| {
                    let name = f["name"].as_str().unwrap();
                    name.starts_with(scenario) && name.ends_with(kind)
                })
                .unwrap_or_else(|| panic!("no {scenario:?} figure for {kind:?} in {report}"))
        };
        assert!(of(", captured")["target"]["ratio_at_least"].as_f64().is_some(), "{report}");
        for floor in [", a trigger that does nothing", ", a trigger logging one rowid per write"] {
            let figure = of(floor);
            assert!(figure["value"].as_f64().unwrap() > 0.0, "{figure}");
            assert_eq!(figure["reference"]["value"], of(", captured")["reference"]["value"], "{figure}");
            assert!(figure["target"].is_null(), "{figure}");
        }
    }
}

#[test]
fn the_benchmark_refuses_bad_sizes_and_databases_before_measuring_anything() {
    assert_one_line_error(&rowsync(&["bench", "sync", "--rows", "0"]), "--rows must be at least 1");
    assert_one_line_error(&rowsync(&["bench", "sync", "--database", "ftp://x/y"]), "unknown database URL");
}
