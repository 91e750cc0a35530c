//! `rowsync sync`: one full round of the sync engine, driven until caught
//! up (check capture, pull until caught up, push until the outbox is empty,
//! then pull what arrived meanwhile; see [`rowsync_core::engine`]). Every
//! step works in pages and batches bounded by rows and bytes, so a large
//! backlog never sits in memory whole.

use std::collections::VecDeque;
use std::time::Duration;

use rowsync_core::engine::{Action, Config, Engine, Mode, Report, State};

use crate::driver::Driver;
use crate::error::ClientError;
use crate::lock::SyncLock;
use crate::replica::Replica;
use crate::transport::Transport;

#[derive(Debug, Clone, Copy)]
pub struct SyncOptions {
    /// Most changes asked for per pull page (the engine sizes pages to
    /// its pull slice, see [`rowsync_core::pace`]).
    pub pull_limit: u32,
    /// Outbox entries per push batch.
    pub push_limit: usize,
    /// About how many bytes of JSON a push batch may carry (one row larger
    /// than this goes alone).
    pub push_bytes: usize,
    /// How long to wait for another process syncing the same file.
    pub lock_wait: Duration,
}

impl Default for SyncOptions {
    fn default() -> Self {
        SyncOptions {
            pull_limit: 5_000,
            push_limit: 2_000,
            push_bytes: 4 * 1024 * 1024,
            lock_wait: Duration::from_secs(60),
        }
    }
}

/// What a sync round did.
pub type SyncReport = Report;

impl SyncOptions {
    /// The engine's settings for these options (the rest as the engine's
    /// defaults; the agent adjusts its own).
    pub(crate) fn engine_config(&self) -> Config {
        Config {
            pull_limit: self.pull_limit,
            push_limit: self.push_limit,
            push_bytes: self.push_bytes,
            ..Config::default()
        }
    }
}

/// Syncs `replica` through `transport` until both directions are caught up,
/// holding the file's sync lock (see [`crate::lock`]). It first takes on the
/// server's conflict strategies (they may change between syncs) and checks
/// that capture saw every write (see [`crate::audit`]). The outcome
/// (success, or the error and when) is recorded for `status`.
pub fn sync(replica: &mut Replica, transport: &dyn Transport, options: SyncOptions) -> Result<SyncReport, ClientError> {
    sync_showing(replica, transport, options, &mut |_| {})
}

/// [`sync`], telling `progress` each time the round moves on (a page
/// pulled, a batch pushed), for a progress bar.
pub fn sync_showing(
    replica: &mut Replica,
    transport: &dyn Transport,
    options: SyncOptions,
    progress: &mut dyn FnMut(&State),
) -> Result<SyncReport, ClientError> {
    // One sync at a time per file; waiting for another is not a sync error.
    let _lock = SyncLock::acquire(std::path::Path::new(&replica.path), options.lock_wait)?;
    let mut engine = Engine::new(Mode::Once, options.engine_config(), rand::random());
    let mut driver = Driver::new(replica, transport, options.pull_limit);
    let mut actions: VecDeque<Action> = engine.start().into();
    let mut outcome = None;
    while let Some(action) = actions.pop_front() {
        match action {
            Action::Run(step) => {
                let event = driver.run(&step);
                actions.extend(engine.handle(0, event));
            }
            Action::Publish(status) => progress(&status.state),
            Action::RoundDone(report) => outcome = Some(Ok(report)),
            Action::RoundFailed(failure) => {
                let error = driver.last_error.take().unwrap_or_else(|| ClientError::Protocol(failure.reason()));
                outcome = Some(Err(error));
            }
            Action::Listen { .. } | Action::Stopped => {}
        }
    }
    let result = outcome.unwrap_or_else(|| Err(ClientError::Protocol("the sync engine stopped early".into())));
    record(driver.replica(), &result);
    result
}

/// Records the outcome of a round (success, or the error and when) for
/// `status`. Best effort: the sync's own outcome is what the caller needs.
pub(crate) fn record(replica: &Replica, result: &Result<SyncReport, ClientError>) {
    let recorded = match result {
        Ok(report) => replica.record_success().and_then(|()| match report.rejections.first() {
            Some(reason) => replica.record_error(&ClientError::Refused {
                status: 422,
                code: rowsync_proto::ErrorCode::InvalidValue,
                message: format!("{} change(s) set aside in _rowsync_rejected; first: {reason}", report.rejected),
                change: None,
                max_clock_ms: None,
            }),
            None => Ok(()),
        }),
        Err(error) => replica.record_error(error),
    };
    if let Err(error) = recorded {
        tracing::warn!(%error, "recording the sync's outcome");
    }
}
