//! How a replica talks to the server. The sync logic only sees the
//! [`Transport`] trait, so tests can put faults between the two and another
//! transport can be dropped in without touching the sync logic.

use std::io::Read;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use rustls::RootCertStore;

use rowsync_core::protocol::{agree, Mismatch};
use rowsync_proto::{
    ErrorBody, ErrorCode, Protocols, PullRequest, PullResponse, PushRequest, PushResponse, Schema, PROTOCOL_HEADER,
};

use crate::error::ClientError;

pub trait Transport {
    fn schema(&self) -> Result<Schema, ClientError>;
    fn push(&self, request: &PushRequest) -> Result<PushResponse, ClientError>;
    /// Sends a push whose answer is taken later, from what this returns:
    /// a transport that can send while its caller goes on lets the replica
    /// read its next batch meanwhile. The default sends at once.
    fn send_push(&self, request: &PushRequest) -> PushInFlight<'_> {
        PushInFlight(Sending::Answered(self.push(request)))
    }
    /// Makes `request` ready to send while the push before it is still on
    /// its way, so that sending it once that push is answered costs only
    /// the sending (over HTTP, its body is encoded here: the server would
    /// otherwise wait for that between two pushes). The default makes
    /// nothing ready ahead.
    fn ready_push(&self, _request: &PushRequest) -> ReadyPush {
        ReadyPush(None)
    }
    /// Sends `request` as [`Transport::send_push`] does, made ready as
    /// `ready` ([`Transport::ready_push`] of the same request). A transport
    /// that overrides `send_push` overrides both of these or neither: the
    /// driver sends every batch read ahead through them.
    fn send_ready(&self, request: &PushRequest, _ready: ReadyPush) -> PushInFlight<'_> {
        self.send_push(request)
    }
    /// Changes after the request's cursor, leaving out states exactly as its
    /// site pushed them.
    fn pull(&self, request: &PullRequest) -> Result<PullResponse, ClientError>;
}

/// A push made ready to send (see [`Transport::ready_push`]): its encoded
/// body, where the transport makes one ahead.
pub struct ReadyPush(Option<Result<Vec<u8>, ClientError>>);

/// A push sent, and its answer once it has come.
pub struct PushInFlight<'t>(Sending<'t>);

enum Sending<'t> {
    Answered(Result<PushResponse, ClientError>),
    OnItsWay(std::thread::JoinHandle<Result<PushResponse, ClientError>>),
    Later(Box<dyn FnOnce() -> Result<PushResponse, ClientError> + 't>),
}

impl<'t> PushInFlight<'t> {
    /// A push that `send` makes when its answer is asked for (or never,
    /// if it is dropped): to the caller, a push on its way. Simulations
    /// use it to run the driver's overlapping of pushes deterministically,
    /// on one thread.
    pub fn later(send: impl FnOnce() -> Result<PushResponse, ClientError> + 't) -> PushInFlight<'t> {
        PushInFlight(Sending::Later(Box::new(send)))
    }

    /// Whether the answer is still to come (the caller can work meanwhile).
    pub fn on_its_way(&self) -> bool {
        !matches!(self.0, Sending::Answered(_))
    }

    /// The server's answer, waited for.
    pub fn answer(self) -> Result<PushResponse, ClientError> {
        match self.0 {
            Sending::Answered(answer) => answer,
            Sending::OnItsWay(sending) => {
                sending.join().unwrap_or_else(|_| Err(ClientError::Protocol("the push being sent panicked".into())))
            }
            Sending::Later(send) => send(),
        }
    }
}

/// Where a replica's server is and what it needs to reach it, as `rowsync
/// init` stored them: the base URL, the token, and the certificates it
/// trusts for HTTPS instead of the system's roots (PEM).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerAccess {
    pub url: String,
    pub token: Option<String>,
    pub ca_pem: Option<String>,
}

/// The `/v1` HTTP protocol over ureq.
///
/// A pull that answers with `more` starts fetching the next page at once,
/// on a thread of its own, while the caller applies this one: the server
/// reads and sends page N+1 while the replica writes page N, so a long
/// pull costs about the slower of the two instead of their sum. The next
/// pull takes that answer when it asks for exactly that page (anything
/// else, such as a push in between, drops it: a pull changes nothing on
/// the server), and so does a pull that comes too late for it. At most
/// one page is held ahead. A push is sent on a thread of its own as well
/// (see [`Transport::send_push`]).
pub struct HttpTransport {
    http: Http,
    ahead: Mutex<Option<Ahead>>,
}

/// Where the server is and how to talk to it; cheap to clone (the agent
/// shares its connection pool).
#[derive(Clone)]
struct Http {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

/// A pull page being fetched ahead, by the path and query it asks for.
struct Ahead {
    path: String,
    /// When the fetch began: an answer older than [`AHEAD_KEPT`] is not
    /// used (the pulls it was for were interrupted; the next asks afresh).
    began: std::time::Instant,
    answer: std::thread::JoinHandle<Result<PullResponse, ClientError>>,
}

/// How long a page fetched ahead stays the answer to the pull it is for. A
/// sync asks for it as soon as it has applied the page before (tens of
/// milliseconds); a later pull for the same page, after a failure or a
/// pause, gets the server's answer of now instead.
const AHEAD_KEPT: Duration = Duration::from_secs(2);

impl HttpTransport {
    /// A transport to `base_url`; an HTTPS server must have a certificate
    /// the system's roots vouch for.
    pub fn new(base_url: &str, token: Option<String>) -> HttpTransport {
        HttpTransport::with_tls(base_url, token, system_tls())
    }

    /// A transport as `access` describes it: with its CA, if it has one,
    /// as the only roots trusted.
    pub fn connect(access: &ServerAccess) -> Result<HttpTransport, ClientError> {
        let tls = match &access.ca_pem {
            None => system_tls(),
            Some(pem) => tls_trusting(trusted_roots(pem)?),
        };
        Ok(HttpTransport::with_tls(&access.url, access.token.clone(), tls))
    }

    fn with_tls(base_url: &str, token: Option<String>, tls: Arc<rustls::ClientConfig>) -> HttpTransport {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(5))
            .timeout_read(Duration::from_secs(120))
            .timeout_write(Duration::from_secs(120))
            .tls_config(tls)
            .build();
        let http = Http { base: base_url.trim_end_matches('/').to_string(), token, agent };
        HttpTransport { http, ahead: Mutex::new(None) }
    }

    /// A pull page: the one fetched ahead when it is the page asked for,
    /// else fetched now; then, when more follow, the next one is fetched
    /// ahead.
    fn pull_page(&self, request: &PullRequest) -> Result<PullResponse, ClientError> {
        let path = pull_path(request);
        let ahead = self.ahead.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
        let page: PullResponse = match ahead {
            Some(ahead) if ahead.path == path && ahead.began.elapsed() <= AHEAD_KEPT => ahead
                .answer
                .join()
                .unwrap_or_else(|_| Err(ClientError::Protocol("the pull fetched ahead panicked".into())))?,
            _ => self.http.answer("GET", &path, None)?,
        };
        if page.more && page.cursor > request.cursor {
            let next = pull_path(&PullRequest { cursor: page.cursor, ..request.clone() });
            let (http, fetch, began) = (self.http.clone(), next.clone(), std::time::Instant::now());
            let answer = std::thread::Builder::new()
                .name("rowsync-pull-ahead".into())
                .spawn(move || http.answer("GET", &fetch, None));
            // Without a thread, the next pull simply fetches its page itself.
            if let Ok(answer) = answer {
                *self.ahead.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) =
                    Some(Ahead { path: next, began, answer });
            }
        }
        Ok(page)
    }
}

impl Http {
    fn request(&self, method: &str, path: &str) -> ureq::Request {
        let request = self
            .agent
            .request(method, &format!("{}{path}", self.base))
            .set(PROTOCOL_HEADER, &Protocols::SPOKEN.to_string());
        match &self.token {
            Some(token) => request.set("Authorization", &format!("Bearer {token}")),
            None => request,
        }
    }

    /// Sends a request (a JSON `body`, if any) and reads the answer. A 429
    /// is waited out as its `Retry-After` says, a few times, before it
    /// counts as a failure: a request the server turned away was not
    /// applied, so sending it again is safe.
    fn answer<T: serde::de::DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<T, ClientError> {
        let mut retries = 0;
        let result = loop {
            let request = self.request(method, path);
            let result = match body {
                Some(body) => request.set("Content-Type", "application/json").send_bytes(body),
                None => request.call(),
            };
            match &result {
                Err(ureq::Error::Status(429, response)) if retries < RATE_LIMIT_RETRIES => {
                    let seconds = response.header("Retry-After").and_then(|v| v.trim().parse::<u64>().ok());
                    std::thread::sleep(Duration::from_secs(seconds.unwrap_or(1).clamp(1, 60)));
                    retries += 1;
                }
                _ => break result,
            }
        };
        if let Ok(response) | Err(ureq::Error::Status(_, response)) = &result {
            self.speaks_with(response.header(PROTOCOL_HEADER))?;
        }
        match result {
            Ok(response) => {
                // Read the whole body first: parsing from the socket reader
                // goes byte by byte and costs more than the sync work itself.
                let mut body = Vec::new();
                response.into_reader().read_to_end(&mut body).map_err(|e| ClientError::Unreachable {
                    url: self.base.clone(),
                    detail: format!("the answer broke off: {e}"),
                })?;
                read_answer(&self.base, 200, &body)
            }
            Err(ureq::Error::Status(status, response)) => {
                let mut body = Vec::new();
                let _ = response.into_reader().read_to_end(&mut body);
                read_answer(&self.base, status, &body)
            }
            Err(ureq::Error::Transport(e)) => match certificate_error(&e) {
                Some(detail) => Err(ClientError::Untrusted { url: self.base.clone(), detail }),
                None => Err(ClientError::Unreachable { url: self.base.clone(), detail: e.to_string() }),
            },
        }
    }

    /// Whether the server, stating `spoken` (the versions it speaks; none
    /// from servers before versions were stated), speaks a protocol version
    /// this rowsync does: its answers are read only then.
    fn speaks_with(&self, spoken: Option<&str>) -> Result<(), ClientError> {
        let server = match spoken {
            None => Protocols::UNSTATED,
            Some(text) => text
                .parse()
                .map_err(|e| ClientError::Protocol(format!("{} states its protocol versions badly: {e}", self.base)))?,
        };
        let (url, ours) = (self.base.clone(), Protocols::SPOKEN);
        match agree(ours, server) {
            Ok(_) => Ok(()),
            Err(Mismatch::TheyAreOlder) => Err(ClientError::ServerTooOld { url, server, ours }),
            Err(Mismatch::TheyAreNewer) => Err(ClientError::ServerTooNew { url, server, ours }),
        }
    }
}

/// The certificates of `pem` as the only roots to trust; at least one is
/// needed.
pub fn trusted_roots(pem: &str) -> Result<RootCertStore, ClientError> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
        let cert = cert.map_err(|e| ClientError::BadCa(format!("unreadable PEM: {e}")))?;
        roots.add(cert).map_err(|e| ClientError::BadCa(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(ClientError::BadCa("no PEM certificate (-----BEGIN CERTIFICATE-----) in it".into()));
    }
    Ok(roots)
}

/// TLS verified against the system's roots, read once per process.
fn system_tls() -> Arc<rustls::ClientConfig> {
    static SYSTEM: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    SYSTEM
        .get_or_init(|| {
            let mut roots = RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            for error in &found.errors {
                tracing::warn!("reading the system's certificates: {error}");
            }
            roots.add_parsable_certificates(found.certs);
            tls_trusting(roots)
        })
        .clone()
}

fn tls_trusting(roots: RootCertStore) -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    Arc::new(config)
}

/// What was wrong with the server's certificate, when that is why a
/// request failed.
fn certificate_error(error: &ureq::Transport) -> Option<String> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(error);
    while let Some(e) = cause {
        let tls = e
            .downcast_ref::<rustls::Error>()
            .or_else(|| e.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref()?.downcast_ref()));
        if let Some(error @ rustls::Error::InvalidCertificate(_)) = tls {
            return Some(error.to_string());
        }
        cause = e.source();
    }
    None
}

/// How many times a request turned away for its rate (429) is sent again.
const RATE_LIMIT_RETRIES: usize = 5;

/// What an answer of the `/v1` API with HTTP `status` and `body`, from the
/// server at `base`, means to a client: the value asked for, or the error.
pub fn read_answer<T: serde::de::DeserializeOwned>(base: &str, status: u16, body: &[u8]) -> Result<T, ClientError> {
    if (200..300).contains(&status) {
        return serde_json::from_slice(body)
            .map_err(|e| ClientError::Protocol(format!("unreadable answer from {base}: {e}")));
    }
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(body) if status == 503 => Err(ClientError::Unreachable { url: base.to_string(), detail: body.message }),
        Ok(body) if status == 401 || body.code == ErrorCode::Unauthorized => {
            Err(ClientError::Unauthorized { url: base.to_string(), message: body.message })
        }
        Ok(body) => Err(ClientError::Refused {
            status,
            code: body.code,
            message: body.message,
            change: body.change,
            max_clock_ms: body.max_clock_ms,
        }),
        Err(_) if status >= 500 => {
            Err(ClientError::Unreachable { url: base.to_string(), detail: format!("HTTP {status}") })
        }
        Err(_) => Err(ClientError::Protocol(format!(
            "HTTP {status} from {base} is not a rowsync answer; is this a rowsync server?"
        ))),
    }
}

impl Transport for HttpTransport {
    fn schema(&self) -> Result<Schema, ClientError> {
        self.http.answer("GET", "/v1/schema", None)
    }

    fn push(&self, request: &PushRequest) -> Result<PushResponse, ClientError> {
        self.http.answer("POST", "/v1/push", Some(&push_body(request)?))
    }

    fn send_push(&self, request: &PushRequest) -> PushInFlight<'_> {
        self.send_ready(request, self.ready_push(request))
    }

    fn ready_push(&self, request: &PushRequest) -> ReadyPush {
        ReadyPush(Some(push_body(request)))
    }

    fn send_ready(&self, request: &PushRequest, ready: ReadyPush) -> PushInFlight<'_> {
        let body = match ready.0.unwrap_or_else(|| push_body(request)) {
            Ok(body) => body,
            Err(error) => return PushInFlight(Sending::Answered(Err(error))),
        };
        let http = self.http.clone();
        let sending = std::thread::Builder::new()
            .name("rowsync-push".into())
            .spawn(move || http.answer("POST", "/v1/push", Some(&body)));
        match sending {
            Ok(sending) => PushInFlight(Sending::OnItsWay(sending)),
            // Without a thread, the push is sent here and now.
            Err(_) => PushInFlight(Sending::Answered(self.push(request))),
        }
    }

    fn pull(&self, request: &PullRequest) -> Result<PullResponse, ClientError> {
        self.pull_page(request)
    }
}

impl HttpTransport {
    /// A pull that waits at the server up to `wait` (whole seconds, at most
    /// the server's bound) for a change after the cursor (long-poll).
    pub fn pull_waiting(&self, request: &PullRequest, wait: Duration) -> Result<PullResponse, ClientError> {
        let path = format!("{}&wait={}", pull_path(request), wait.as_secs());
        self.http.answer("GET", &path, None)
    }
}

/// The JSON body of a push request.
fn push_body(request: &PushRequest) -> Result<Vec<u8>, ClientError> {
    serde_json::to_vec(request).map_err(|e| ClientError::Protocol(e.to_string()))
}

/// The path and query of a pull request.
pub fn pull_path(request: &PullRequest) -> String {
    let PullRequest { site, cursor, limit, known, full } = request;
    let mut path = format!("/v1/pull?cursor={cursor}&limit={limit}&site={site}");
    if let Some(began) = full {
        path.push_str(&format!("&full={began}"));
    }
    if let Some(known) = known {
        let ids: Vec<String> = known.iter().map(u64::to_string).collect();
        path.push_str(&format!("&known={}", ids.join(",")));
    }
    path
}

/// A warning when a token would cross the network unencrypted: sent over
/// plain `http://` to a host other than this machine.
pub fn cleartext_warning(url: &str, has_token: bool) -> Option<String> {
    let rest = url.strip_prefix("http://")?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host_port = authority.rsplit('@').next().unwrap_or("");
    let host = match host_port.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host_port.split(':').next().unwrap_or(""),
    };
    let loopback =
        host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
    (has_token && !loopback).then(|| {
        format!(
            "the token goes to {host} over plain http://, unencrypted: anyone on the way can read it and use it; \
             serve with --tls-cert/--tls-key and use an https:// URL"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::cleartext_warning;

    #[test]
    fn tokens_over_plain_http_to_other_hosts_are_warned_of() {
        assert!(cleartext_warning("http://sync.example.org:7878", true).is_some());
        assert!(cleartext_warning("http://10.0.0.5/", true).is_some());
        for quiet in ["http://127.0.0.1:7878", "http://localhost:1", "http://[::1]:7878/x", "https://sync.example.org"]
        {
            assert_eq!(cleartext_warning(quiet, true), None, "{quiet}");
        }
        assert_eq!(cleartext_warning("http://sync.example.org", false), None, "no token, nothing to leak");
    }
}
