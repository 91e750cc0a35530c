//! What the command-line tests share: the binary, a free port, a `rowsync
//! serve` process that is stopped when dropped, and `rowsync sync`
//! processes. (Each test binary compiles this module on its own and uses
//! some of it: the rest is not dead code, hence the `allow`s.)

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const ROWSYNC: &str = env!("CARGO_BIN_EXE_rowsync");

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
/// accepts connections.
pub fn serve(args: &[&str], port: u16) -> Server {
    let child = Command::new(ROWSYNC)
        .arg("serve")
        .args(args)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let server = Server(child);
    let started = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(started.elapsed() < Duration::from_secs(20), "rowsync serve did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    server
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
