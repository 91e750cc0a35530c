//! One sync round: check capture, pull until caught up, push until the
//! outbox is empty, then pull what arrived meanwhile. Every step works in
//! pages and batches bounded by rows and bytes, so a large backlog never
//! sits in memory whole.

use std::time::Duration;

use serde::Serialize;

use crate::apply::apply_page;
use crate::audit::{audit_against_server, check_capture};
use crate::error::ClientError;
use crate::lock::SyncLock;
use rowsync_proto::{ErrorCode, PullRequest};

use crate::outbox::{acknowledge, next_batch, set_aside, stamp_all};
use crate::replica::{key, known_batches, meta_get, Replica};
use crate::transport::Transport;

#[derive(Debug, Clone, Copy)]
pub struct SyncOptions {
    /// Changes asked for per pull page.
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
            pull_limit: 1_000,
            push_limit: 2_000,
            push_bytes: 4 * 1024 * 1024,
            lock_wait: Duration::from_secs(60),
        }
    }
}

/// What a sync round did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SyncReport {
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

/// Syncs `replica` through `transport` until both directions are caught up,
/// holding the file's sync lock (see [`crate::lock`]). It first takes on the
/// server's conflict strategies (they may change between syncs) and checks
/// that capture saw every write (see [`crate::audit`]). The outcome
/// (success, or the error and when) is recorded for `status`.
pub fn sync(replica: &mut Replica, transport: &dyn Transport, options: SyncOptions) -> Result<SyncReport, ClientError> {
    // One sync at a time per file; waiting for another is not a sync error.
    let _lock = SyncLock::acquire(std::path::Path::new(&replica.path), options.lock_wait)?;
    let result = transport.schema().and_then(|schema| replica.adopt_schema(&schema));
    let result = result.and_then(|()| sync_round(replica, transport, options));
    match &result {
        Ok(report) => {
            replica.record_success()?;
            if let Some(reason) = report.rejections.first() {
                replica.record_error(&ClientError::Refused {
                    status: 422,
                    code: rowsync_proto::ErrorCode::InvalidValue,
                    message: format!("{} change(s) set aside in _rowsync_rejected; first: {reason}", report.rejected),
                    change: None,
                    max_clock_ms: None,
                })?;
            }
        }
        Err(error) => {
            // Recording is best effort: the sync error is what the caller needs.
            let _ = replica.record_error(error);
        }
    }
    result
}

fn sync_round(
    replica: &mut Replica,
    transport: &dyn Transport,
    options: SyncOptions,
) -> Result<SyncReport, ClientError> {
    let mut report = SyncReport::default();
    stamp_all(replica)?;
    // Capture is checked, not trusted: writes it missed are queued first.
    report.notes.extend(check_capture(replica)?);
    report.notes.extend(audit_against_server(replica, transport, options.pull_limit)?);
    let (mut renewed, mut corrected) = (false, false);
    match pull_until_caught_up(replica, transport, options, &mut report) {
        Err(ClientError::Refused { code: ErrorCode::SiteReused, .. }) => {
            renewed = true;
            renew_identity(replica, &mut report)?;
            pull_until_caught_up(replica, transport, options, &mut report)?;
        }
        other => other?,
    }
    let mut limit = options.push_limit.max(1);
    let mut bytes = options.push_bytes.max(1);
    while let Some(batch) = next_batch(replica, limit, bytes)? {
        let response = match transport.push(&batch.request) {
            Ok(response) => response,
            Err(ClientError::Refused { change: Some(index), message, .. }) => {
                // One bad change must not block every later batch: set it
                // aside with the reason and send the rest again.
                set_aside(replica, &batch, index, &message)?;
                report.rejected += 1;
                report.rejections.push(message);
                continue;
            }
            Err(ClientError::Refused { code: ErrorCode::BodyTooLarge, .. }) if batch.request.changes.len() > 1 => {
                limit = (limit / 2).max(1);
                bytes = (bytes / 2).max(1);
                continue;
            }
            Err(ClientError::Refused { code: ErrorCode::BodyTooLarge, message, .. }) => {
                // One row the server can never take: set it aside, say why,
                // and let everything behind it go.
                let reason = format!(
                    "the row is about {} KiB as JSON, more than the server accepts in one request: {message}",
                    batch.request.changes[0].row.wire_size() / 1024
                );
                set_aside(replica, &batch, 0, &reason)?;
                report.rejected += 1;
                report.rejections.push(reason);
                continue;
            }
            Err(ClientError::Refused { code: ErrorCode::SiteReused, .. }) if !renewed => {
                renewed = true;
                renew_identity(replica, &mut report)?;
                pull_until_caught_up(replica, transport, options, &mut report)?;
                continue;
            }
            Err(error @ ClientError::Refused { code: ErrorCode::ClockSkew, max_clock_ms: Some(max), .. })
                if !corrected =>
            {
                corrected = true;
                match replica.correct_clock(max)? {
                    0 => return Err(error),
                    rows => report.notes.push(format!(
                        "this device's clock had run ahead of the server's; the writes made meanwhile \
                         ({rows} row(s)) were re-stamped from the corrected clock"
                    )),
                }
                continue;
            }
            Err(error) => return Err(error),
        };
        report.acknowledged += acknowledge(replica, &batch, response.acked_seq)? as u64;
        report.pushed += batch.request.changes.len() as u64;
        report.push_batches += 1;
    }
    pull_until_caught_up(replica, transport, options, &mut report)?;
    Ok(report)
}

/// The server found this file to be a copy of a replica: a new device id,
/// pending writes sent again, and everything pulled again (the other copy's
/// writes were left out of earlier pulls as this site's own).
fn renew_identity(replica: &mut Replica, report: &mut SyncReport) -> Result<(), ClientError> {
    let old = replica.site().clone();
    let new = replica.take_new_identity()?;
    report.notes.push(format!(
        "this file is a copy of a replica (restored from a backup, or copied to another device): it took the \
         new device id {new} (was {old}), sends its pending writes again and pulls everything again"
    ));
    Ok(())
}

fn pull_until_caught_up(
    replica: &Replica,
    transport: &dyn Transport,
    options: SyncOptions,
    report: &mut SyncReport,
) -> Result<(), ClientError> {
    let mut cursor = meta_get::<i64>(&replica.conn, key::CURSOR)?.unwrap_or(0) as u64;
    loop {
        let known = known_batches(&replica.conn)?;
        let request = PullRequest { site: replica.site.clone(), cursor, limit: options.pull_limit, known };
        let page = transport.pull(&request)?;
        if page.cursor < cursor {
            return Err(ClientError::Protocol(format!(
                "the server moved the cursor back from {cursor} to {}",
                page.cursor
            )));
        }
        report.pulled += page.changes.len() as u64;
        report.applied += apply_page(replica, &page)? as u64;
        report.pull_pages += 1;
        cursor = page.cursor;
        report.cursor = cursor;
        if !page.more {
            return Ok(());
        }
    }
}
