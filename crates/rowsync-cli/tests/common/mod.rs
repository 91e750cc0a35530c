//! What the command-line tests share: the binary, a free port, and a
//! `rowsync serve` process that is stopped when dropped.

use std::net::TcpListener;
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
