//! What the command-line tests share: the binary, a free port, a `rowsync
//! serve` process that is stopped when dropped, and `rowsync sync`
//! processes. (Each test binary compiles this module on its own and uses
//! some of it: the rest is not dead code, hence the `allow`s.)

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

pub const ROWSYNC: &str = env!("CARGO_BIN_EXE_rowsync");

/// How `rowsync serve`'s line on stdout begins once its socket listens.
/// (Connecting to the port is no proof that it does: a loopback connect to
/// a port in the ephemeral range can, now and then, connect to itself with
/// nobody listening.)
pub const SERVING: &str = "rowsync: serving";

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A running `rowsync serve`, killed when dropped.
pub struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `rowsync serve ARGS --listen 127.0.0.1:PORT` and waits until it
/// says it is serving ([`SERVING`]). A server that exits first fails the
/// test with its stderr.
pub fn serve(args: &[&str], port: u16) -> Server {
    let mut child = Command::new(ROWSYNC)
        .arg("serve")
        .args(args)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Both pipes are read to their end, so that a chatty server never blocks
    // on a full pipe; stderr's last lines are kept for the failure message.
    let stderr = child.stderr.take().unwrap();
    let errors = std::thread::spawn(move || {
        let mut tail = VecDeque::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            tail.push_back(line);
            if tail.len() > 20 {
                tail.pop_front();
            }
        }
        Vec::from(tail).join("\n")
    });
    let stdout = child.stdout.take().unwrap();
    let (ready, serving) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines().map_while(Result::ok);
        let said = lines.by_ref().any(|line| line.starts_with(SERVING));
        let _ = ready.send(said);
        lines.for_each(drop);
    });
    let mut server = Server(child);
    match serving.recv_timeout(Duration::from_secs(60)) {
        Ok(true) => server,
        Ok(false) | Err(mpsc::RecvTimeoutError::Disconnected) => {
            let status = server.0.wait().unwrap();
            panic!("rowsync serve exited ({status}) before serving:\n{}", errors.join().unwrap())
        }
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("rowsync serve did not start within 60 s"),
    }
}

/// `rowsync serve` without tokens on an embedded store in `dir`
/// (`server.db`), serving the tables of `schema_sql`.
#[allow(dead_code)]
pub fn serve_open(dir: &Path, port: u16, schema_sql: &str) -> Server {
    let schema = dir.join("schema.sql");
    std::fs::write(&schema, schema_sql).unwrap();
    let database = format!("sqlite://{}", dir.join("server.db").display());
    serve(&["--database", &database, "--schema", schema.to_str().unwrap(), "--insecure-no-auth"], port)
}

/// A `rowsync sync` of the replica at `path`, started and left running.
#[allow(dead_code)]
pub fn start_sync(path: &Path) -> Child {
    Command::new(ROWSYNC)
        .args(["sync", path.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}
