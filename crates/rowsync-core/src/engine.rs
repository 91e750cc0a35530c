//! The sync engine: every decision a replica makes while syncing, as a state
//! machine with no I/O.
//!
//! A driver feeds it [`Event`]s (a local commit was seen, a timer fired, the
//! step it ran succeeded or failed, the long-poll heard of news, stop was
//! asked) together with the current time, and performs the [`Action`]s it
//! returns (run a step on the replica and the server, long-poll from a
//! cursor, publish a status, report a finished round). Time is an input,
//! randomness (the retry jitter) comes from a seed: the same events at the
//! same times give the same actions, which is what lets a simulation run the
//! real decisions on a virtual clock, and lets each transition be tested
//! here without a file or a socket.
//!
//! The engine runs one step at a time. A *round* is a sequence of steps:
//! - [`Round::Full`] (at start, when asked, after a failure, and now and
//!   then while idle): take on the server's schema and check capture, pull
//!   until caught up, push until the outbox is empty, pull what arrived
//!   meanwhile;
//! - [`Round::Local`] (local commits): stamp, push, pull;
//! - [`Round::Remote`] (the long-poll heard of news): pull.
//!
//! Requests made while a round runs are merged into one round that follows
//! it, so a burst of commits goes out as few batches. Failures the engine
//! can mend are mended in the round (a refused change is set aside, a batch
//! too large is halved, a copied file takes a new identity, a clock that ran
//! ahead is corrected); any other failure ends the round: in
//! [`Mode::Once`] the driver gets it back, in [`Mode::Continuous`] the round
//! is tried again after an exponential backoff with jitter (see [`Backoff`]).

use std::collections::VecDeque;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rowsync_proto::ErrorCode;
use serde::Serialize;

use crate::pace;

/// Whether the engine stops after one round or keeps the replica in sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One full round (`rowsync sync`): the driver stops at its end.
    Once,
    /// Sync whenever something changes, until stopped (the background agent).
    Continuous,
}

/// The delay before retrying after failures in a row: `first`, doubling per
/// failure up to `max`, each drawn uniformly from its upper half (so that
/// devices cut off together do not come back together).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub first_ms: u64,
    pub max_ms: u64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { first_ms: 500, max_ms: 60_000 }
    }
}

impl Backoff {
    /// The longest delay after `failures` failures in a row (at least 1).
    pub fn ceiling(&self, failures: u32) -> u64 {
        let doubled = self.first_ms.saturating_mul(1u64 << failures.saturating_sub(1).min(32));
        doubled.min(self.max_ms).max(1)
    }

    /// A delay after `failures` failures in a row, between half the ceiling
    /// and the ceiling.
    pub fn delay(&self, failures: u32, rng: &mut impl Rng) -> u64 {
        let ceiling = self.ceiling(failures);
        rng.gen_range(ceiling / 2..=ceiling)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Most changes asked for per pull page (pages are sized to take about
    /// [`pace::SLICE_MS`] to apply, from the pace of the last one: a page
    /// is one write transaction on the replica, and the app's writes wait
    /// for it).
    pub pull_limit: u32,
    /// Outbox entries per push batch.
    pub push_limit: usize,
    /// About how many bytes a push batch may carry.
    pub push_bytes: usize,
    pub backoff: Backoff,
    /// Continuous mode: a full round (schema, capture check) runs at least
    /// this often, even when nothing was heard.
    pub check_every_ms: u64,
    /// Continuous mode: how long local commits may gather before a local
    /// round starts (0 starts at once; later commits join the next round).
    pub gather_ms: u64,
    /// Continuous mode: whether to long-poll the server for news while idle.
    pub listen: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            pull_limit: 5_000,
            push_limit: 2_000,
            push_bytes: 4 * 1024 * 1024,
            backoff: Backoff::default(),
            check_every_ms: 60_000,
            gather_ms: 2,
            listen: true,
        }
    }
}

/// What a round does; a stronger one includes the weaker ones' work.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Round {
    Remote,
    Local,
    Full,
}

/// A step the driver runs on the replica and the server, one at a time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Take on the server's schema, stamp local writes and check that
    /// capture saw every write. Answered with [`Done::Prepared`]. (A large
    /// backlog is stamped as it is pushed instead, and the part of the
    /// check that needs every write stamped is made once the push finds
    /// nothing more: its findings come with that push step's answer.)
    Prepare,
    /// Stamp local writes. Answered with [`Done::Stamped`].
    Stamp,
    /// Pull one page from the replica's cursor. Answered with [`Done::Pulled`].
    Pull { limit: u32 },
    /// Push the next batch of the outbox, at most `limit` entries and about
    /// `bytes` bytes. Answered with [`Done::Pushed`] or [`Done::NothingToPush`].
    Push { limit: usize, bytes: usize },
    /// Set change `change` of the last batch aside with `reason`, the rest
    /// of the batch staying in the outbox. Answered with [`Done::SetAside`].
    SetAside { change: usize, reason: String },
    /// The file is a copy of a replica: take a new device id, send pending
    /// writes again, pull everything again. Answered with [`Done::Renewed`].
    RenewIdentity,
    /// Re-stamp own writes made beyond `max_clock_ms`, the latest wall time
    /// the server accepts now. Answered with [`Done::ClockCorrected`].
    CorrectClock { max_clock_ms: u64 },
    /// The server no longer serves the replica's cursor (deletes after it
    /// were forgotten): go back to the start of its log, to download
    /// everything again and reconcile. Answered with [`Done::StartedOver`].
    StartOver,
}

/// A step that succeeded, and what it found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Done {
    /// What the checks found and mended, for the user to read; the local
    /// writes waiting to be pushed.
    Prepared {
        notes: Vec<String>,
        pending: u64,
    },
    Stamped {
        pending: u64,
    },
    /// `changes` row states received, `applied` of them changed the file,
    /// in `took_us` microseconds of writing.
    Pulled {
        changes: u64,
        applied: u64,
        cursor: u64,
        more: bool,
        took_us: u64,
    },
    /// A batch of `changes` changes stored by the server, `acknowledged`
    /// outbox entries dropped; and what the checks that found nothing more
    /// to push (see [`Step::Prepare`]) mended, for the user to read.
    Pushed {
        changes: u64,
        acknowledged: u64,
        notes: Vec<String>,
    },
    NothingToPush {
        notes: Vec<String>,
    },
    SetAside,
    Renewed {
        note: String,
    },
    StartedOver {
        note: String,
    },
    /// How many rows were re-stamped (0: nothing could be corrected).
    ClockCorrected {
        rows: u64,
    },
}

/// Why a step or a long-poll failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The server could not be reached, or said it is unavailable.
    Unreachable { detail: String },
    /// The server refused the request. `sent` is the number of changes the
    /// refused push carried (0 for other requests).
    Refused { code: ErrorCode, message: String, change: Option<usize>, max_clock_ms: Option<u64>, sent: usize },
    /// Another process is syncing the same file.
    Busy { detail: String },
    /// Anything else: the local file, an answer that is not the protocol,
    /// a schema that does not match.
    Other { detail: String },
}

impl Failure {
    /// The failure in words, for the user.
    pub fn reason(&self) -> String {
        match self {
            Failure::Unreachable { detail } | Failure::Busy { detail } | Failure::Other { detail } => detail.clone(),
            Failure::Refused { message, .. } => message.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A local write was committed to the replica file.
    LocalCommit,
    /// The user asked for a sync now (also: the file's schema changed).
    SyncAsked,
    /// Stop: after the step in flight, if any.
    StopAsked,
    /// The time given with the event reached [`Engine::deadline`].
    Tick,
    /// The step in flight succeeded.
    Done(Done),
    /// The step in flight failed.
    Failed(Failure),
    /// A long-poll answered: `news` when it brought changes, with the
    /// cursor after them.
    Heard { news: bool, cursor: u64 },
    /// A long-poll failed.
    HearingFailed(Failure),
}

/// What the driver does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Run(Step),
    /// Long-poll the server for changes after `cursor`, concurrently with
    /// steps; answered by [`Event::Heard`] or [`Event::HearingFailed`].
    Listen {
        cursor: u64,
    },
    /// The status changed (or progressed): show it.
    Publish(Status),
    /// A round ended well (in [`Mode::Once`], the last action).
    RoundDone(Report),
    /// A round ended with a failure the engine cannot mend (in
    /// [`Mode::Once`], the last action).
    RoundFailed(Failure),
    /// The engine stopped; nothing is in flight.
    Stopped,
}

/// What a round did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    /// Row states received.
    pub pulled: u64,
    /// Rows changed locally by what was received.
    pub applied: u64,
    /// Row changes sent.
    pub pushed: u64,
    /// Outbox entries the server acknowledged.
    pub acknowledged: u64,
    /// Changes the server refused; they were set aside in `_rowsync_rejected`.
    pub rejected: u64,
    /// Why, for each refused change.
    pub rejections: Vec<String>,
    pub pull_pages: u64,
    pub push_batches: u64,
    pub cursor: u64,
    /// What the round found and mended on the way, for the user to read:
    /// writes the capture triggers missed, a copied replica file that took a
    /// new device id, a clock that had run ahead and was corrected.
    pub notes: Vec<String>,
}

/// Where syncing stands.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum State {
    /// The first round has not ended yet.
    #[default]
    Connecting,
    /// A round runs: `done` changes sent and received so far, `remaining`
    /// local changes still to send.
    Syncing {
        done: u64,
        remaining: u64,
    },
    /// In sync: the last round ended well, and nothing is waiting.
    Idle,
    /// The server cannot be reached; the next try is in `retry_in_ms`.
    Offline {
        reason: String,
        retry_in_ms: u64,
    },
    /// The server refuses this device's writes because its clock runs ahead
    /// of the server's by more than the server accepts, and correcting the
    /// writes did not help; the next try is in `retry_in_ms`.
    ClockAhead {
        reason: String,
        retry_in_ms: u64,
    },
    /// Syncing fails for another reason (the schema changed, the local
    /// file, another process syncing); the next try is in `retry_in_ms`.
    Failing {
        reason: String,
        retry_in_ms: u64,
    },
    Stopped,
}

/// The status the engine publishes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    #[serde(flatten)]
    pub state: State,
    /// Changes the server refused since the engine started (set aside).
    pub refused: u64,
}

/// Where a round is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stage {
    Preparing,
    Stamping,
    /// Pulling before pushing (then `push` says whether pushing follows).
    PullingFirst,
    Pushing,
    /// Pulling what arrived while pushing; the round ends after it.
    PullingLast,
    SettingAside,
    Renewing,
    Correcting,
    StartingOver,
}

#[derive(Debug)]
struct Running {
    round: Round,
    stage: Stage,
    report: Report,
    /// Local changes waiting to be pushed when the round started.
    pending: u64,
    push_limit: usize,
    push_bytes: usize,
    renewed: bool,
    corrected: bool,
    started_over: bool,
}

/// The size of the first pull page, before any pace is known. The
/// transport fetches the next page while one is applied, at the size asked
/// last: the engine changes its size only when it is well off (see
/// [`pace::fit`]).
const FIRST_PAGE: u32 = 1_000;

#[derive(Debug)]
pub struct Engine {
    mode: Mode,
    config: Config,
    rng: StdRng,
    running: Option<Running>,
    /// The round to run next, merged from every request since.
    queued: Option<Round>,
    /// When the queued round (or the periodic check) starts.
    wake_at: Option<u64>,
    /// Failures in a row (reset by a round that ends well).
    failures: u32,
    /// The cursor a long-poll waits from, while one is out.
    listening: Option<u64>,
    cursor: u64,
    /// Changes asked for by the next pull (see [`pace::fit`]).
    page: u32,
    stopping: bool,
    stopped: bool,
    status: Status,
}

impl Engine {
    /// An engine; `seed` drives the retry jitter.
    pub fn new(mode: Mode, config: Config, seed: u64) -> Engine {
        Engine {
            mode,
            config,
            rng: StdRng::seed_from_u64(seed),
            running: None,
            queued: None,
            wake_at: None,
            failures: 0,
            listening: None,
            cursor: 0,
            page: config.pull_limit.min(FIRST_PAGE),
            stopping: false,
            stopped: false,
            status: Status { state: State::Connecting, refused: 0 },
        }
    }

    /// Starts the first (full) round.
    pub fn start(&mut self) -> Vec<Action> {
        let mut actions = VecDeque::new();
        self.publish(State::Connecting, &mut actions);
        self.begin(Round::Full, &mut actions);
        actions.into()
    }

    /// The last published status.
    pub fn status(&self) -> &Status {
        &self.status
    }

    /// When the driver must send [`Event::Tick`] if nothing else happens
    /// first (`None`: only an event can wake the engine).
    pub fn deadline(&self) -> Option<u64> {
        if self.running.is_some() || self.stopped {
            None
        } else {
            self.wake_at
        }
    }

    pub fn handle(&mut self, now: u64, event: Event) -> Vec<Action> {
        let mut actions = VecDeque::new();
        if self.stopped {
            return actions.into();
        }
        match event {
            Event::LocalCommit => self.ask(Round::Local, now, self.config.gather_ms, &mut actions),
            Event::SyncAsked => self.ask(Round::Full, now, 0, &mut actions),
            Event::StopAsked => {
                self.stopping = true;
                if self.running.is_none() {
                    self.stop(&mut actions);
                }
            }
            Event::Tick => {
                if self.running.is_none() && self.wake_at.is_some_and(|at| at <= now) {
                    let round = self.queued.take().unwrap_or(Round::Full);
                    self.begin(round, &mut actions);
                }
            }
            Event::Done(done) => self.done(done, now, &mut actions),
            Event::Failed(failure) => self.failed(failure, now, &mut actions),
            Event::Heard { news, cursor } => {
                self.listening = None;
                self.cursor = self.cursor.max(cursor);
                if news {
                    self.ask(Round::Remote, now, 0, &mut actions);
                } else {
                    self.listen(&mut actions);
                }
            }
            Event::HearingFailed(failure) => {
                self.listening = None;
                if self.running.is_none() {
                    // The next round finds out what is wrong and says so.
                    self.retry_later(Round::Full, &failure, now, &mut actions);
                }
            }
        }
        actions.into()
    }

    /// A request for a round: runs it after `after_ms`, or after the round
    /// that runs now.
    fn ask(&mut self, round: Round, now: u64, after_ms: u64, actions: &mut VecDeque<Action>) {
        if self.stopping {
            return;
        }
        self.queued = self.queued.max(Some(round));
        if self.running.is_some() {
            return;
        }
        let at = now + after_ms;
        // A request cuts a backoff short only when asked for by the user.
        let retrying = self.failures > 0 && round != Round::Full;
        if !retrying {
            self.wake_at = Some(self.wake_at.map_or(at, |w| w.min(at)));
        }
        if self.wake_at.is_some_and(|w| w <= now) {
            let round = self.queued.take().unwrap_or(round);
            self.begin(round, actions);
        }
    }

    fn begin(&mut self, round: Round, actions: &mut VecDeque<Action>) {
        self.wake_at = None;
        self.running = Some(Running {
            round,
            stage: Stage::PullingFirst,
            report: Report { cursor: self.cursor, ..Report::default() },
            pending: 0,
            push_limit: self.config.push_limit.max(1),
            push_bytes: self.config.push_bytes.max(1),
            renewed: false,
            corrected: false,
            started_over: false,
        });
        match round {
            Round::Full => self.run(Stage::Preparing, Step::Prepare, actions),
            Round::Local => self.run(Stage::Stamping, Step::Stamp, actions),
            Round::Remote => self.pull(Stage::PullingFirst, actions),
        }
    }

    fn run(&mut self, stage: Stage, step: Step, actions: &mut VecDeque<Action>) {
        if let Some(running) = &mut self.running {
            running.stage = stage;
        }
        actions.push_back(Action::Run(step));
    }

    fn pull(&mut self, stage: Stage, actions: &mut VecDeque<Action>) {
        let limit = self.page.clamp(1, self.config.pull_limit.max(1));
        self.run(stage, Step::Pull { limit }, actions);
    }

    fn push(&mut self, actions: &mut VecDeque<Action>) {
        let running = self.running.as_ref().expect("a round runs");
        let step = Step::Push { limit: running.push_limit, bytes: running.push_bytes };
        self.run(Stage::Pushing, step, actions);
    }

    fn progress(&mut self, actions: &mut VecDeque<Action>) {
        let running = self.running.as_ref().expect("a round runs");
        let report = &running.report;
        let state = State::Syncing {
            done: report.pulled + report.pushed,
            remaining: running.pending.saturating_sub(report.acknowledged + report.rejected),
        };
        self.publish(state, actions);
    }

    fn done(&mut self, done: Done, now: u64, actions: &mut VecDeque<Action>) {
        let Some(running) = self.running.as_mut() else { return };
        let stage = running.stage;
        match done {
            Done::Prepared { notes, pending } => {
                running.report.notes.extend(notes);
                running.pending = pending;
            }
            Done::Stamped { pending } => running.pending = pending,
            Done::Pulled { changes, applied, cursor, more, took_us } => {
                self.page = pace::fit(self.page, changes, took_us, self.config.pull_limit);
                running.report.pulled += changes;
                running.report.applied += applied;
                running.report.pull_pages += 1;
                running.report.cursor = cursor;
                self.cursor = self.cursor.max(cursor);
                if more {
                    self.progress(actions);
                    return self.next(stage, now, actions);
                }
            }
            Done::Pushed { changes, acknowledged, notes } => {
                running.report.notes.extend(notes);
                running.report.pushed += changes;
                running.report.acknowledged += acknowledged;
                running.report.push_batches += 1;
                self.progress(actions);
                return self.next(Stage::Pushing, now, actions);
            }
            Done::NothingToPush { notes } => {
                running.report.notes.extend(notes);
                return self.after(Stage::Pushing, now, actions);
            }
            Done::SetAside => {}
            Done::Renewed { note } => running.report.notes.push(note),
            Done::StartedOver { note } => {
                running.report.notes.push(note);
                running.report.cursor = 0;
                self.cursor = 0;
            }
            Done::ClockCorrected { rows: 0 } => {
                let failure = Failure::Refused {
                    code: ErrorCode::ClockSkew,
                    message: "this device's clock runs ahead of the server's, and re-stamping its writes did not help"
                        .into(),
                    change: None,
                    max_clock_ms: None,
                    sent: 0,
                };
                return self.failed(failure, now, actions);
            }
            Done::ClockCorrected { rows } => running.report.notes.push(format!(
                "this device's clock had run ahead of the server's; the writes made meanwhile ({rows} row(s)) \
                 were re-stamped from the corrected clock"
            )),
        }
        self.after(stage, now, actions)
    }

    /// Runs the same step again (another page, another batch).
    fn next(&mut self, stage: Stage, now: u64, actions: &mut VecDeque<Action>) {
        if self.stopping {
            return self.end_round(now, actions);
        }
        match stage {
            Stage::Pushing => self.push(actions),
            _ => self.pull(stage, actions),
        }
    }

    /// Moves on once `stage` is finished.
    fn after(&mut self, stage: Stage, now: u64, actions: &mut VecDeque<Action>) {
        if self.stopping {
            return self.end_round(now, actions);
        }
        let round = self.running.as_ref().expect("a round runs").round;
        match stage {
            Stage::Preparing => {
                self.progress(actions);
                self.pull(Stage::PullingFirst, actions)
            }
            Stage::Stamping => {
                self.progress(actions);
                self.push(actions)
            }
            Stage::PullingFirst if round == Round::Remote => self.end_round(now, actions),
            Stage::PullingFirst | Stage::SettingAside | Stage::Correcting => self.push(actions),
            Stage::StartingOver => self.pull(Stage::PullingFirst, actions),
            Stage::Pushing => self.pull(Stage::PullingLast, actions),
            Stage::PullingLast => self.end_round(now, actions),
            Stage::Renewing => {
                // Pull everything again, then push the pending writes.
                self.running.as_mut().expect("a round runs").round = Round::Full;
                self.pull(Stage::PullingFirst, actions)
            }
        }
    }

    fn failed(&mut self, failure: Failure, now: u64, actions: &mut VecDeque<Action>) {
        let Some(running) = self.running.as_mut() else { return };
        if !self.stopping {
            if let Some((stage, step)) = mend(running, &failure) {
                if let Stage::SettingAside = stage {
                    running.report.rejected += 1;
                    self.status.refused += 1;
                    if let Step::SetAside { reason, .. } = &step {
                        running.report.rejections.push(reason.clone());
                    }
                }
                return self.run(stage, step, actions);
            }
        }
        let round = running.round;
        self.running = None;
        actions.push_back(Action::RoundFailed(failure.clone()));
        match self.mode {
            Mode::Continuous if !self.stopping => self.retry_later(round, &failure, now, actions),
            _ => self.stop(actions),
        }
    }

    fn retry_later(&mut self, round: Round, failure: &Failure, now: u64, actions: &mut VecDeque<Action>) {
        self.failures += 1;
        let delay = self.config.backoff.delay(self.failures, &mut self.rng);
        self.queued = self.queued.max(Some(round)).max(Some(Round::Full));
        self.wake_at = Some(now + delay);
        let reason = failure.reason();
        let state = match failure {
            Failure::Unreachable { .. } => State::Offline { reason, retry_in_ms: delay },
            Failure::Refused { code: ErrorCode::ClockSkew, .. } => State::ClockAhead { reason, retry_in_ms: delay },
            _ => State::Failing { reason, retry_in_ms: delay },
        };
        self.publish(state, actions);
    }

    fn end_round(&mut self, now: u64, actions: &mut VecDeque<Action>) {
        let running = self.running.take().expect("a round runs");
        self.failures = 0;
        self.cursor = self.cursor.max(running.report.cursor);
        actions.push_back(Action::RoundDone(running.report));
        if self.mode == Mode::Once || self.stopping {
            return self.stop(actions);
        }
        self.publish(State::Idle, actions);
        match self.queued.take() {
            // What was asked for meanwhile has gathered long enough.
            Some(round) => self.begin(round, actions),
            None => {
                self.wake_at = Some(now + self.config.check_every_ms);
                self.listen(actions);
            }
        }
    }

    fn listen(&mut self, actions: &mut VecDeque<Action>) {
        if self.mode == Mode::Continuous && self.config.listen && self.listening.is_none() && !self.stopping {
            self.listening = Some(self.cursor);
            actions.push_back(Action::Listen { cursor: self.cursor });
        }
    }

    fn stop(&mut self, actions: &mut VecDeque<Action>) {
        self.stopped = true;
        self.wake_at = None;
        if self.mode == Mode::Continuous {
            self.publish(State::Stopped, actions);
        }
        actions.push_back(Action::Stopped);
    }

    fn publish(&mut self, state: State, actions: &mut VecDeque<Action>) {
        self.status.state = state;
        actions.push_back(Action::Publish(self.status.clone()));
    }
}

/// The step that mends `failure` within the round, if one does: a refused
/// change is set aside, a batch too large is halved (a single row too large
/// is set aside), a copied file takes a new identity once, a clock that ran
/// ahead is corrected once, a cursor the server no longer serves starts the
/// download over once.
fn mend(running: &mut Running, failure: &Failure) -> Option<(Stage, Step)> {
    let Failure::Refused { code, message, change, max_clock_ms, sent } = failure else { return None };
    let pushing = running.stage == Stage::Pushing;
    match (code, change) {
        (_, Some(index)) if pushing => {
            Some((Stage::SettingAside, Step::SetAside { change: *index, reason: message.clone() }))
        }
        (ErrorCode::BodyTooLarge, _) if pushing && *sent > 1 => {
            running.push_limit = (running.push_limit / 2).max(1);
            running.push_bytes = (running.push_bytes / 2).max(1);
            Some((Stage::Pushing, Step::Push { limit: running.push_limit, bytes: running.push_bytes }))
        }
        (ErrorCode::BodyTooLarge, _) if pushing => {
            let reason = format!("the row is more than the server accepts in one request: {message}");
            Some((Stage::SettingAside, Step::SetAside { change: 0, reason }))
        }
        (ErrorCode::CursorExpired, _) if !running.started_over => {
            running.started_over = true;
            Some((Stage::StartingOver, Step::StartOver))
        }
        (ErrorCode::SiteReused, _) if !running.renewed => {
            running.renewed = true;
            Some((Stage::Renewing, Step::RenewIdentity))
        }
        (ErrorCode::ClockSkew, _) if pushing && !running.corrected => {
            running.corrected = true;
            max_clock_ms.map(|max_clock_ms| (Stage::Correcting, Step::CorrectClock { max_clock_ms }))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests;
