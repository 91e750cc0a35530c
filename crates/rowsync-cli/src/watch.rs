//! `rowsync watch`: the background agent in the foreground, with a live
//! status line, and the progress shown by `rowsync sync`.
//!
//! On a terminal the status is one line redrawn in place (indicatif); with
//! `--json` every status is a JSON object on its own line, for scripts;
//! otherwise (output to a file or a pipe) a plain line per change of state
//! and no progress. SIGINT and SIGTERM stop the agent cleanly (the step in
//! flight finishes) and exit 0.

use std::io::{IsTerminal, Write};
use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};
use rowsync_client::{Agent, AgentOptions, AgentStatus, State};

pub fn watch(local: &Path, json: bool) -> anyhow::Result<()> {
    let stop = stop_on_signals()?;
    let agent = Agent::start(local, AgentOptions::default())?;
    let updates = agent.subscribe();
    let line = (!json).then(status_line);
    let mut last_kind = None;
    let mut show = |status: &AgentStatus| -> anyhow::Result<()> {
        if json {
            let mut out = std::io::stdout().lock();
            serde_json::to_writer(&mut out, status)?;
            writeln!(out)?;
            out.flush()?;
        } else if let Some(line) = &line {
            line.set_message(describe(status));
            // Not a terminal: a plain line per change of state, no progress.
            let kind = std::mem::discriminant(&status.state);
            if line.is_hidden() && last_kind != Some(kind) {
                println!("{}", describe(status));
            }
            last_kind = Some(kind);
        }
        Ok(())
    };
    show(&agent.status())?;
    loop {
        if stop.try_recv().is_ok() {
            break;
        }
        match updates.recv_timeout(Duration::from_millis(100)) {
            Ok(status) => show(&status)?,
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    agent.stop()?;
    let last = updates.try_iter().last();
    let mut stopped = last.unwrap_or_else(|| AgentStatus { state: State::Stopped, ..Default::default() });
    stopped.state = State::Stopped;
    show(&stopped)?;
    if let Some(line) = line {
        line.finish();
    }
    Ok(())
}

/// A channel that receives once SIGINT or SIGTERM arrives.
fn stop_on_signals() -> anyhow::Result<mpsc::Receiver<()>> {
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_io().build().context("cannot start the signal handler")?;
    let (sender, receiver) = mpsc::channel();
    let mut terminate = runtime
        .block_on(async { tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) })
        .context("cannot listen for SIGTERM")?;
    std::thread::Builder::new().name("rowsync-signals".into()).spawn(move || {
        runtime.block_on(async {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = terminate.recv() => {}
            }
        });
        let _ = sender.send(());
    })?;
    Ok(receiver)
}

/// The status line, drawn only on a terminal.
fn status_line() -> ProgressBar {
    let line = ProgressBar::new_spinner();
    if !std::io::stdout().is_terminal() {
        line.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    line.set_style(ProgressStyle::with_template("{spinner} {msg}").expect("a valid template"));
    line.enable_steady_tick(Duration::from_millis(200));
    line
}

/// The spinner of `rowsync sync` on a terminal (hidden otherwise), and the
/// function that moves it.
pub fn sync_progress() -> (ProgressBar, impl FnMut(&State)) {
    let bar = ProgressBar::new_spinner();
    if !std::io::stderr().is_terminal() {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar.set_style(ProgressStyle::with_template("{spinner} {msg} ({elapsed})").expect("a valid template"));
    let handle = bar.clone();
    let update = move |state: &State| {
        if let State::Syncing { done, remaining } = state {
            handle.set_message(format!("syncing: {done} change(s) sent and received, {remaining} to send"));
            handle.tick();
        }
    };
    (bar, update)
}

/// The status in words, on one line.
pub fn describe(status: &AgentStatus) -> String {
    let state = match &status.state {
        State::Connecting => "connecting".to_string(),
        State::Syncing { done, remaining } => format!("syncing: {done} done, {remaining} to send"),
        State::Idle => match status.last_sync_unix_ms {
            Some(at) => format!("in sync (last sync {})", time_of_day(at)),
            None => "in sync".to_string(),
        },
        State::Offline { reason, retry_in_ms } => format!("offline: {reason}; retrying in {}", secs(*retry_in_ms)),
        State::ClockAhead { reason, retry_in_ms } => {
            format!("clock ahead: {reason}; retrying in {}", secs(*retry_in_ms))
        }
        State::Failing { reason, retry_in_ms } => format!("failing: {reason}; retrying in {}", secs(*retry_in_ms)),
        State::Stopped => "stopped".to_string(),
    };
    let mut parts = vec![state, format!("{} pending", status.pending_changes)];
    if status.rejected_changes > 0 {
        parts.push(format!("{} refused (see _rowsync_rejected)", status.rejected_changes));
    }
    if status.open_conflicts > 0 {
        parts.push(format!("{} open conflict(s) (rowsync conflicts)", status.open_conflicts));
    }
    parts.join(" · ")
}

fn secs(ms: u64) -> String {
    format!("{:.1} s", ms as f64 / 1000.0)
}

/// `HH:MM:SS UTC` of a time in milliseconds since the Unix epoch.
fn time_of_day(unix_ms: u64) -> String {
    let s = unix_ms / 1000 % 86_400;
    format!("{:02}:{:02}:{:02} UTC", s / 3600, s / 60 % 60, s % 60)
}
