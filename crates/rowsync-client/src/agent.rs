//! The background agent: keeps a replica in sync by itself, on its own
//! threads, while the application reads and writes the file as usual.
//!
//! - The *agent thread* drives the sync engine ([`rowsync_core::engine`],
//!   continuous mode) through the same steps as `rowsync sync`.
//! - The *watch thread* notices commits to the file from any connection or
//!   process (the app, the sqlite3 shell) through `PRAGMA data_version`,
//!   read every [`AgentOptions::watch_every`]: a change of the outbox starts
//!   a local round, a change of the file's schema (a table rebuilt) a full
//!   round with its capture check. It reads the file only.
//! - The *listen thread* long-polls the server (`/v1/pull?wait=`), so news
//!   from other devices arrive within a round trip, and an idle agent sends
//!   one request per [`AgentOptions::listen_wait`].
//!
//! The app reads where syncing stands with [`Agent::status`] or from the
//! channels of [`Agent::subscribe`]; neither blocks. Offline, the agent
//! retries with exponential backoff and jitter ([`Backoff`]: 0.5 s doubling
//! to 60 s) and resumes by itself when the server returns.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rowsync_core::engine::{Action, Backoff, Engine, Event, Mode, State, Status};
use rowsync_proto::{PullRequest, SiteId};
use rusqlite::{Connection, OpenFlags};
use serde::Serialize;

use crate::driver::{failure, Driver};
use crate::error::ClientError;
use crate::lock::SyncLock;
use crate::replica::Replica;
use crate::sync::{record, SyncOptions};
use crate::transport::HttpTransport;

#[derive(Debug, Clone, Copy)]
pub struct AgentOptions {
    pub sync: SyncOptions,
    /// How often the file is checked for new commits.
    pub watch_every: Duration,
    /// How long one long-poll waits at the server (at most 60 s, the
    /// server's bound).
    pub listen_wait: Duration,
    /// A full round with its capture check runs at least this often.
    pub check_every: Duration,
    pub backoff: Backoff,
}

impl Default for AgentOptions {
    fn default() -> Self {
        AgentOptions {
            sync: SyncOptions::default(),
            watch_every: Duration::from_millis(10),
            listen_wait: Duration::from_secs(25),
            check_every: Duration::from_secs(60),
            backoff: Backoff::default(),
        }
    }
}

/// Where syncing stands, with the file's own counts.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct AgentStatus {
    #[serde(flatten)]
    pub state: State,
    /// Local writes not yet acknowledged by the server.
    pub pending_changes: u64,
    /// Local changes the server refused, kept in `_rowsync_rejected`.
    pub rejected_changes: u64,
    /// Open conflicts of manual-strategy tables.
    pub open_conflicts: u64,
    /// When the last round ended well, in milliseconds since the Unix epoch.
    pub last_sync_unix_ms: Option<u64>,
    /// What the last round found and mended, for the user to read.
    pub notes: Vec<String>,
}

/// What the agent threads share with the app's handle.
struct Shared {
    status: Mutex<AgentStatus>,
    subscribers: Mutex<Vec<Sender<AgentStatus>>>,
}

impl Shared {
    /// Changes the status without telling subscribers (the engine's next
    /// status, which always follows, carries the change).
    fn note(&self, update: impl FnOnce(&mut AgentStatus)) {
        update(&mut self.status.lock().expect("status lock"));
    }

    fn publish(&self, update: impl FnOnce(&mut AgentStatus)) {
        let status = {
            let mut status = self.status.lock().expect("status lock");
            update(&mut status);
            status.clone()
        };
        self.subscribers.lock().expect("subscribers lock").retain(|s| s.send(status.clone()).is_ok());
    }
}

/// A running agent; dropping it stops it (as [`Agent::stop`] does).
pub struct Agent {
    events: Sender<Event>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<Result<(), ClientError>>>,
}

impl Agent {
    /// Starts keeping the replica at `path` in sync with its server.
    pub fn start(path: &Path, options: AgentOptions) -> Result<Agent, ClientError> {
        let replica = Replica::open(path)?;
        let access = replica.server_access()?;
        // One connection for the steps, one for the long-poll beside them.
        let (transport, listener) = (HttpTransport::connect(&access)?, HttpTransport::connect(&access)?);
        let watcher = Watcher::open(path)?;
        let counts = replica.counts()?;
        let shared = Arc::new(Shared {
            status: Mutex::new(AgentStatus {
                state: State::Connecting,
                pending_changes: counts.pending,
                rejected_changes: counts.rejected,
                open_conflicts: counts.conflicts,
                last_sync_unix_ms: None,
                notes: Vec::new(),
            }),
            subscribers: Mutex::new(Vec::new()),
        });
        let (events, inbox) = mpsc::channel();
        let (listen, listen_inbox) = mpsc::channel();
        let stop_watching = Arc::new(AtomicBool::new(false));
        let watch = {
            let (events, stop, every) = (events.clone(), stop_watching.clone(), options.watch_every);
            std::thread::Builder::new()
                .name("rowsync-watch".into())
                .spawn(move || watcher.run(&events, &stop, every))
                .map_err(|e| ClientError::Io(format!("starting the agent: {e}")))?
        };
        {
            let (events, wait) = (events.clone(), options.listen_wait);
            std::thread::Builder::new()
                .name("rowsync-listen".into())
                .spawn(move || listen_loop(&listener, &listen_inbox, &events, wait))
                .map_err(|e| ClientError::Io(format!("starting the agent: {e}")))?;
        }
        let thread = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("rowsync-agent".into())
                .spawn(move || {
                    let result = drive(replica, &transport, &inbox, &listen, &shared, options);
                    stop_watching.store(true, Ordering::Relaxed);
                    let _ = watch.join();
                    result
                })
                .map_err(|e| ClientError::Io(format!("starting the agent: {e}")))?
        };
        Ok(Agent { events, shared, thread: Some(thread) })
    }

    /// Starts a full round now (even during a backoff).
    pub fn sync_now(&self) {
        let _ = self.events.send(Event::SyncAsked);
    }

    /// The latest status, without waiting.
    pub fn status(&self) -> AgentStatus {
        self.shared.status.lock().expect("status lock").clone()
    }

    /// A channel that receives every status from now on.
    pub fn subscribe(&self) -> Receiver<AgentStatus> {
        let (sender, receiver) = mpsc::channel();
        self.shared.subscribers.lock().expect("subscribers lock").push(sender);
        receiver
    }

    /// Stops the agent: the step in flight (one page, one batch, each its
    /// own transaction) finishes, nothing more starts. A long-poll still out
    /// is left to end by itself (its answer is not used), and so is a push
    /// batch sent ahead by the last push step (its entries stay in the
    /// outbox; the server applies each change at most once).
    pub fn stop(mut self) -> Result<(), ClientError> {
        self.shut()
    }

    fn shut(&mut self) -> Result<(), ClientError> {
        let _ = self.events.send(Event::StopAsked);
        match self.thread.take().map(JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(ClientError::Io("the agent thread panicked".into())),
            None => Ok(()),
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Err(error) = self.shut() {
            tracing::warn!(%error, "stopping the sync agent");
        }
    }
}

fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The agent thread: the engine's actions carried out until it stops.
fn drive(
    mut replica: Replica,
    transport: &HttpTransport,
    inbox: &Receiver<Event>,
    listen: &Sender<(u64, SiteId)>,
    shared: &Shared,
    options: AgentOptions,
) -> Result<(), ClientError> {
    let started = Instant::now();
    let now = || started.elapsed().as_millis() as u64;
    let path = PathBuf::from(&replica.path);
    let mut config = options.sync.engine_config();
    config.backoff = options.backoff;
    config.check_every_ms = options.check_every.as_millis() as u64;
    let mut engine = Engine::new(Mode::Continuous, config, rand::random());
    let mut driver = Driver::new(&mut replica, transport, options.sync.pull_limit);
    let mut actions: VecDeque<Action> = engine.start().into();
    // Held for a round, so that `rowsync sync` on the same file waits.
    let mut lock: Option<SyncLock> = None;
    loop {
        while let Some(action) = actions.pop_front() {
            match action {
                Action::Run(step) => {
                    let event = match &lock {
                        Some(_) => driver.run(&step),
                        None => match SyncLock::acquire(&path, Duration::from_secs(1)) {
                            Ok(taken) => {
                                lock = Some(taken);
                                driver.run(&step)
                            }
                            Err(error) => Event::Failed(failure(&error, 0)),
                        },
                    };
                    actions.extend(engine.handle(now(), event));
                    // What arrived meanwhile (a stop, more commits) counts now.
                    while let Ok(event) = inbox.try_recv() {
                        actions.extend(engine.handle(now(), event));
                    }
                }
                Action::Listen { cursor } => {
                    let _ = listen.send((cursor, driver.replica().site().clone()));
                }
                Action::Publish(status) => publish(shared, &driver, status),
                Action::RoundDone(report) => {
                    lock = None;
                    let notes = report.notes.clone();
                    record(driver.replica(), &Ok(report));
                    shared.note(|s| {
                        s.last_sync_unix_ms = Some(unix_ms());
                        s.notes = notes;
                    });
                }
                Action::RoundFailed(failed) => {
                    lock = None;
                    let error = driver.last_error.take().unwrap_or_else(|| ClientError::Protocol(failed.reason()));
                    record(driver.replica(), &Err(error));
                }
                Action::Stopped => return Ok(()),
            }
        }
        let event = match engine.deadline() {
            Some(at) => match inbox.recv_timeout(Duration::from_millis(at.saturating_sub(now()))) {
                Ok(event) => event,
                Err(RecvTimeoutError::Timeout) => Event::Tick,
                Err(RecvTimeoutError::Disconnected) => Event::StopAsked,
            },
            None => inbox.recv().unwrap_or(Event::StopAsked),
        };
        let local = event == Event::LocalCommit;
        actions.extend(engine.handle(now(), event));
        if local
            && matches!(engine.status().state, State::Offline { .. } | State::ClockAhead { .. } | State::Failing { .. })
        {
            // No round will count the new write soon: count it now.
            publish(shared, &driver, engine.status().clone());
        }
    }
}

/// Publishes the engine's status; the file's counts are read again when a
/// round has ended (not on every page).
fn publish(shared: &Shared, driver: &Driver<'_>, status: Status) {
    let counts = match status.state {
        State::Syncing { .. } | State::Connecting => None,
        _ => driver.replica().counts().ok(),
    };
    shared.publish(|s| {
        if let State::Syncing { remaining, .. } = status.state {
            s.pending_changes = remaining;
        }
        s.state = status.state;
        if let Some(counts) = counts {
            s.pending_changes = counts.pending;
            s.rejected_changes = counts.rejected;
            s.open_conflicts = counts.conflicts;
        }
    });
}

/// The listen thread: one long-poll at a time, from the cursor the engine
/// gives; ends when the agent thread does.
fn listen_loop(transport: &HttpTransport, inbox: &Receiver<(u64, SiteId)>, events: &Sender<Event>, wait: Duration) {
    while let Ok(mut asked) = inbox.recv() {
        while let Ok(newer) = inbox.try_recv() {
            asked = newer;
        }
        let (cursor, site) = asked;
        let request = PullRequest { site, cursor, limit: 1, known: None, full: None };
        let event = match transport.pull_waiting(&request, wait) {
            Ok(page) => Event::Heard { news: !page.changes.is_empty(), cursor: page.cursor },
            Err(error) => Event::HearingFailed(failure(&error, 0)),
        };
        if events.send(event).is_err() {
            return;
        }
    }
}

/// Notices commits to the replica file from any connection.
struct Watcher {
    conn: Connection,
}

/// What the watch thread compares between two looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Look {
    data_version: i64,
    schema_version: i64,
    newest_write: i64,
}

impl Watcher {
    fn open(path: &Path) -> Result<Watcher, ClientError> {
        let conn =
            Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)?;
        conn.busy_timeout(Duration::from_secs(1))?;
        Ok(Watcher { conn })
    }

    fn look(&self, last: Option<Look>) -> Result<Look, ClientError> {
        let data_version: i64 = self.conn.query_row("PRAGMA data_version", [], |r| r.get(0))?;
        if let Some(last) = last.filter(|l| l.data_version == data_version) {
            return Ok(last);
        }
        let schema_version: i64 = self.conn.query_row("PRAGMA schema_version", [], |r| r.get(0))?;
        let newest_write: i64 =
            self.conn.query_row("SELECT coalesce(max(id), 0) FROM _rowsync_outbox", [], |r| r.get(0))?;
        Ok(Look { data_version, schema_version, newest_write })
    }

    fn run(self, events: &Sender<Event>, stop: &AtomicBool, every: Duration) {
        let mut last = None;
        while !stop.load(Ordering::Relaxed) {
            match self.look(last) {
                Ok(look) => {
                    if let Some(before) = last {
                        let event = if look.schema_version != before.schema_version {
                            Some(Event::SyncAsked)
                        } else if look.newest_write > before.newest_write {
                            Some(Event::LocalCommit)
                        } else {
                            None
                        };
                        if event.is_some_and(|event| events.send(event).is_err()) {
                            return;
                        }
                    }
                    last = Some(look);
                }
                Err(error) => tracing::debug!(%error, "looking for commits"),
            }
            std::thread::sleep(every);
        }
    }
}
