//! A TCP proxy between replicas and the server that breaks requests on
//! purpose: it cuts a connection in the middle of a request or of its
//! answer, delays, sends a request twice, cuts a body short, or answers
//! 502/503 itself. Which fault meets which request is drawn from a seed.
//!
//! It reads each request whole (head, and a body as long as its
//! `Content-Length`), asks the server to close the connection after
//! answering it (so that an answer ends where the connection does, and
//! one connection carries one request), and then carries out the fault.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// What the proxy does to one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Passed on, and its answer passed back.
    None,
    /// The connection is cut half-way through the request: the server never
    /// sees it whole, the client gets no answer.
    CutRequest,
    /// The request reaches the server, which applies it; the connection is
    /// cut half-way through the answer.
    CutAnswer,
    /// Passed on after a while.
    Delay(Duration),
    /// Sent to the server twice; the client gets the second answer.
    Duplicate,
    /// The request's body is cut short (its length says more), and the
    /// server's answer to that is passed back.
    ShortBody,
    /// Answered by the proxy with this status; the server never sees it.
    Status(u16),
}

impl Fault {
    fn kind(self) -> &'static str {
        match self {
            Fault::None => "none",
            Fault::CutRequest => "cut request",
            Fault::CutAnswer => "cut answer",
            Fault::Delay(_) => "delay",
            Fault::Duplicate => "duplicate",
            Fault::ShortBody => "short body",
            Fault::Status(502) => "502",
            Fault::Status(503) => "503",
            Fault::Status(_) => "another status",
        }
    }

    /// A fault drawn at random: none for about half of all requests, each
    /// kind of fault alike for the rest.
    fn draw(rng: &mut StdRng) -> Fault {
        match rng.gen_range(0..14) {
            0 => Fault::CutRequest,
            1 => Fault::CutAnswer,
            2 => Fault::Delay(Duration::from_millis(rng.gen_range(1..50))),
            3 => Fault::Duplicate,
            4 => Fault::ShortBody,
            5 => Fault::Status(502),
            6 => Fault::Status(503),
            _ => Fault::None,
        }
    }
}

/// The proxy, listening on a loopback port until dropped.
pub struct FaultyProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

struct Shared {
    upstream: SocketAddr,
    /// Whether faults are drawn (off: every request passes).
    faults: AtomicBool,
    rng: Mutex<StdRng>,
    /// How many requests met each kind of fault.
    injected: Mutex<BTreeMap<&'static str, usize>>,
    stopping: AtomicBool,
}

impl FaultyProxy {
    /// A proxy to the server at `upstream` (`http://host:port`), drawing
    /// faults from `seed`; faults start off.
    pub fn start(upstream: &str, seed: u64) -> FaultyProxy {
        let upstream: SocketAddr = upstream
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .unwrap_or_else(|e| panic!("the proxy needs http://ip:port, not {upstream}: {e}"));
        let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port for the proxy");
        let addr = listener.local_addr().expect("the proxy's address");
        let shared = Arc::new(Shared {
            upstream,
            faults: AtomicBool::new(false),
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            injected: Mutex::new(BTreeMap::new()),
            stopping: AtomicBool::new(false),
        });
        let accepting = Arc::clone(&shared);
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if accepting.stopping.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                let shared = Arc::clone(&accepting);
                std::thread::spawn(move || {
                    // A broken connection is what this proxy is for; its
                    // own errors end the connection the same way.
                    let _ = shared.carry(client);
                });
            }
        });
        FaultyProxy { addr, shared }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Turns drawing faults on or off.
    pub fn faults(&self, on: bool) {
        self.shared.faults.store(on, Ordering::SeqCst);
    }

    /// How many requests met each kind of fault ("none" included).
    pub fn injected(&self) -> BTreeMap<&'static str, usize> {
        self.shared.injected.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Drop for FaultyProxy {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        // Wakes the accepting thread, which then sees it is to stop.
        let _ = TcpStream::connect(self.addr);
    }
}

impl Shared {
    /// Reads one request from `client` and carries it out with a fault.
    fn carry(&self, mut client: TcpStream) -> std::io::Result<()> {
        let Some(request) = read_request(&mut client)? else { return Ok(()) };
        let fault = if self.faults.load(Ordering::SeqCst) {
            Fault::draw(&mut self.rng.lock().unwrap_or_else(|e| e.into_inner()))
        } else {
            Fault::None
        };
        *self.injected.lock().unwrap_or_else(|e| e.into_inner()).entry(fault.kind()).or_default() += 1;
        match fault {
            Fault::None => client.write_all(&self.exchange(&request)?)?,
            Fault::CutRequest => {
                let mut server = TcpStream::connect(self.upstream)?;
                server.write_all(&request[..request.len() / 2])?;
                server.shutdown(Shutdown::Both)?;
            }
            Fault::CutAnswer => {
                let answer = self.exchange(&request)?;
                client.write_all(&answer[..answer.len() / 2])?;
            }
            Fault::Delay(delay) => {
                std::thread::sleep(delay);
                client.write_all(&self.exchange(&request)?)?;
            }
            Fault::Duplicate => {
                self.exchange(&request)?;
                client.write_all(&self.exchange(&request)?)?;
            }
            Fault::ShortBody => {
                let mut server = TcpStream::connect(self.upstream)?;
                server.set_read_timeout(Some(Duration::from_secs(30)))?;
                let head = request.windows(4).position(|w| w == b"\r\n\r\n").map_or(0, |at| at + 4);
                let cut = head + (request.len() - head) / 2;
                server.write_all(&request[..cut])?;
                server.shutdown(Shutdown::Write)?;
                let mut answer = Vec::new();
                let _ = server.read_to_end(&mut answer);
                client.write_all(&answer)?;
            }
            Fault::Status(status) => {
                let body = "broken on purpose by the test proxy";
                write!(
                    client,
                    "HTTP/1.1 {status} Proxy Fault\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                )?;
            }
        }
        client.shutdown(Shutdown::Both)
    }

    /// Sends `request` to the server and reads its whole answer.
    fn exchange(&self, request: &[u8]) -> std::io::Result<Vec<u8>> {
        let mut server = TcpStream::connect(self.upstream)?;
        server.set_read_timeout(Some(Duration::from_secs(30)))?;
        server.write_all(request)?;
        let mut answer = Vec::new();
        server.read_to_end(&mut answer)?;
        Ok(answer)
    }
}

/// One HTTP/1.1 request read whole from `client`, rewritten to ask the
/// server to close the connection after answering; `None` when the client
/// closed without sending one.
fn read_request(client: &mut TcpStream) -> std::io::Result<Option<Vec<u8>>> {
    client.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut received = Vec::new();
    let mut buffer = [0u8; 64 * 1024];
    let head_end = loop {
        if let Some(at) = received.windows(4).position(|w| w == b"\r\n\r\n") {
            break at;
        }
        let n = client.read(&mut buffer)?;
        if n == 0 {
            return Ok(None);
        }
        received.extend_from_slice(&buffer[..n]);
    };
    let head = String::from_utf8_lossy(&received[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut rewritten = format!("{}\r\n", lines.next().unwrap_or_default());
    let mut length = 0;
    for line in lines {
        let (name, value) = line.split_once(':').unwrap_or((line, ""));
        if name.eq_ignore_ascii_case("connection") {
            continue;
        }
        if name.eq_ignore_ascii_case("content-length") {
            length = value.trim().parse().unwrap_or(0);
        }
        rewritten.push_str(line);
        rewritten.push_str("\r\n");
    }
    rewritten.push_str("Connection: close\r\n\r\n");
    let mut body = received.split_off(head_end + 4);
    while body.len() < length {
        let n = client.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&buffer[..n]);
    }
    let mut request = rewritten.into_bytes();
    request.extend_from_slice(&body);
    Ok(Some(request))
}
