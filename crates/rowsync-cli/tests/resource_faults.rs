//! A disk that fills up under a replica file or under the server's
//! database, and a replica file on a disk that turns read-only. Sync fails
//! with a clear error, loses nothing and leaves every file whole; once the
//! fault is gone it resumes where it was. The server answers 503 meanwhile.
//! (A server database that turns read-only is in `rowsync-testkit`'s
//! `database_restart.rs`: a disk in use cannot be remounted read-only.)
//!
//! Each disk is a small tmpfs mounted in a namespace of its own (`unshare
//! --user --map-root-user --mount`): no root needed, and nothing is mounted
//! outside it. The test drives a shell in that namespace; the `rowsync`
//! processes whose files are on such a disk run there.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

use common::{free_port, serve_open, ROWSYNC, SERVING};
use rowsync_testkit::{query_rows, Device, CONTACTS_SCHEMA};

const ALL: &str = "SELECT id, name, email, phone FROM contacts ORDER BY id";

/// A shell in a user and mount namespace of its own.
struct Namespace {
    shell: Child,
    input: ChildStdin,
    output: BufReader<ChildStdout>,
}

impl Namespace {
    fn new() -> Namespace {
        let shell = Command::new("unshare")
            .args(["--user", "--map-root-user", "--mount", "--propagation", "private", "bash"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn();
        let mut shell = shell.unwrap_or_else(|e| {
            panic!("cannot run unshare ({e}): this test needs util-linux's unshare (apt-get install util-linux)")
        });
        let (input, output) = (shell.stdin.take().unwrap(), BufReader::new(shell.stdout.take().unwrap()));
        let mut namespace = Namespace { shell, input, output };
        let (status, out) = namespace.run("id -u");
        assert!(
            status == 0 && out.trim() == "0",
            "unshare gave no namespace of its own ({out}): this test needs user namespaces \
             (sysctl kernel.unprivileged_userns_clone=1, or run it as root)"
        );
        namespace
    }

    /// Runs `command` in the namespace's shell: its exit status and its
    /// output (stdout and stderr).
    fn run(&mut self, command: &str) -> (i32, String) {
        const END: &str = "__rowsync_test_status=";
        writeln!(self.input, "( {command} ) 2>&1; echo \"{END}$?\"").unwrap();
        self.input.flush().unwrap();
        let mut out = String::new();
        loop {
            let mut line = String::new();
            assert!(self.output.read_line(&mut line).unwrap() > 0, "the namespace's shell ended: {out}");
            if let Some(status) = line.trim_end().strip_prefix(END) {
                return (status.parse().unwrap(), out);
            }
            out.push_str(&line);
        }
    }

    /// Runs `command`, which must succeed; its output.
    fn ok(&mut self, command: &str) -> String {
        let (status, out) = self.run(command);
        assert_eq!(status, 0, "{command}: {out}");
        out
    }

    /// A tmpfs of `size` (as mount takes it: 1m, 64k) at `dir`.
    fn disk(&mut self, dir: &Path, size: &str) {
        std::fs::create_dir_all(dir).unwrap();
        self.ok(&format!("mount -t tmpfs -o size={size} tmpfs {}", dir.display()));
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        let _ = self.shell.kill();
        let _ = self.shell.wait();
    }
}

fn rows_of(path: &Path) -> Vec<Vec<rowsync_proto::Value>> {
    query_rows(&rusqlite::Connection::open(path).unwrap(), ALL)
}

/// `count` contacts with long names, committed to `device` in one go.
fn many_writes(device: &Device, prefix: &str, count: usize) {
    let mut app = device.plain();
    let tx = app.transaction().unwrap();
    for i in 0..count {
        tx.execute("INSERT INTO contacts (id, name) VALUES (?, ?)", (format!("{prefix}{i:05}"), "n".repeat(300)))
            .unwrap();
    }
    tx.commit().unwrap();
}

#[test]
fn a_replica_on_a_full_or_read_only_disk_fails_clearly_loses_nothing_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let _server = serve_open(dir.path(), port, CONTACTS_SCHEMA);
    let server_db = dir.path().join("server.db");
    let url = format!("http://127.0.0.1:{port}");
    // Another device puts about 1.5 MB of rows on the server.
    let phone = Device::init(dir.path(), "phone", &url);
    many_writes(&phone, "p", 4_000);
    phone.sync().unwrap();

    let mut ns = Namespace::new();
    let disk = dir.path().join("disk");
    ns.disk(&disk, "1m");
    let laptop = disk.join("laptop.db");
    let (rowsync, laptop_s) = (ROWSYNC, laptop.display());
    ns.ok(&format!("{rowsync} init --server {url} {laptop_s}"));
    let app = |n: usize| format!("sqlite3 {laptop_s} \"INSERT INTO contacts (id, name) VALUES ('l{n}', 'Lo')\"");
    for n in 0..5 {
        ns.ok(&app(n));
    }

    // The pull does not fit.
    let (status, out) = ns.run(&format!("{rowsync} sync {laptop_s}"));
    assert_ne!(status, 0, "a sync onto a full disk succeeded: {out}");
    assert!(out.contains("disk is full") && out.lines().count() == 1, "{out}");
    assert!(out.contains("nothing was lost"), "{out}");
    // Sync that fails says so where the user looks, even on a full disk.
    let status = ns.ok(&format!("{rowsync} status {laptop_s}"));
    assert!(status.contains("last error   the disk holding the replica is full"), "{status}");
    assert_eq!(ns.ok(&format!("sqlite3 {laptop_s} 'PRAGMA integrity_check'")).trim(), "ok");

    // Room again: it resumes.
    ns.ok(&format!("mount -o remount,size=64m {}", disk.display()));
    ns.ok(&format!("{rowsync} sync {laptop_s}"));

    // A read-only disk: the app's writes wait, untouched, until it is not.
    ns.ok(&app(5));
    ns.ok(&format!("mount -o remount,ro {}", disk.display()));
    let (status, out) = ns.run(&format!("{rowsync} sync {laptop_s}"));
    assert_ne!(status, 0, "a sync of a read-only file succeeded: {out}");
    assert!(out.contains("read-only") && out.lines().count() == 1, "{out}");
    ns.ok(&format!("mount -o remount,rw {}", disk.display()));
    ns.ok(&format!("{rowsync} sync {laptop_s}"));
    phone.sync().unwrap();

    let kept = dir.path().join("laptop-after.db");
    ns.ok(&format!("sqlite3 {laptop_s} \".backup {}\"", kept.display()));
    let on_server = rows_of(&server_db);
    assert_eq!(on_server.len(), 4_000 + 6, "writes lost or doubled");
    assert_eq!(rows_of(&kept), on_server);
    assert_eq!(phone.rows(ALL), on_server);
}

#[test]
fn a_server_database_on_a_full_disk_answers_503_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let mut ns = Namespace::new();
    let disk = dir.path().join("disk");
    ns.disk(&disk, "1m");
    let port = free_port();
    let schema = dir.path().join("schema.sql");
    std::fs::write(&schema, CONTACTS_SCHEMA).unwrap();
    let server_db = disk.join("server.db");
    // The server runs in the namespace, where its disk is.
    ns.ok(&format!(
        "{ROWSYNC} serve --database sqlite://{} --schema {} --insecure-no-auth --listen 127.0.0.1:{port} \
         >{}/serve.log 2>&1 & echo $! >{}/serve.pid",
        server_db.display(),
        schema.display(),
        dir.path().display(),
        dir.path().display()
    ));
    let url = format!("http://127.0.0.1:{port}");
    // It says so once it listens (see `common::SERVING`).
    let started = std::time::Instant::now();
    let serving = || std::fs::read_to_string(dir.path().join("serve.log")).unwrap_or_default();
    while !serving().contains(SERVING) {
        assert!(started.elapsed().as_secs() < 60, "rowsync serve did not start:\n{}", serving());
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let laptop = Device::init(dir.path(), "laptop", &url);
    many_writes(&laptop, "l", 4_000);

    let sync = |device: &Device| Command::new(ROWSYNC).args(["sync", device.path.to_str().unwrap()]).output().unwrap();
    let answer = sync(&laptop);
    let err = String::from_utf8_lossy(&answer.stderr);
    assert!(!answer.status.success(), "a push into a full database succeeded");
    let log = std::fs::read_to_string(dir.path().join("serve.log")).unwrap_or_default();
    assert!(err.contains("server's database") && err.contains("full"), "{err}\nthe server's log:\n{log}");
    assert_eq!(laptop.pending(), 4_000, "changes left the queue");

    ns.ok(&format!("mount -o remount,size=64m {}", disk.display()));
    let answer = sync(&laptop);
    let log = std::fs::read_to_string(dir.path().join("serve.log")).unwrap_or_default();
    assert!(answer.status.success(), "{}\nthe server's log:\n{log}", String::from_utf8_lossy(&answer.stderr));

    let kept = dir.path().join("server-after.db");
    ns.ok(&format!("sqlite3 {} \".backup {}\"", server_db.display(), kept.display()));
    let on_server = rows_of(&kept);
    assert_eq!(on_server.len(), 4_000, "writes lost or doubled");
    assert_eq!(laptop.rows(ALL), on_server);
    ns.ok(&format!("kill $(cat {}/serve.pid)", dir.path().display()));
}
