//! One sync round: pull until caught up, push until the outbox is empty,
//! then pull what arrived meanwhile. Every step works in bounded pages and
//! batches, so a large backlog never sits in memory whole.

use serde::Serialize;

use crate::apply::apply_page;
use crate::error::ClientError;
use crate::outbox::{acknowledge, next_batch, stamp_all};
use crate::replica::{key, meta_get, Replica};
use crate::transport::Transport;

#[derive(Debug, Clone, Copy)]
pub struct SyncOptions {
    /// Changes asked for per pull page.
    pub pull_limit: u32,
    /// Outbox entries per push batch.
    pub push_limit: usize,
}

impl Default for SyncOptions {
    fn default() -> Self {
        SyncOptions { pull_limit: 1_000, push_limit: 2_000 }
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
    pub pull_pages: u64,
    pub push_batches: u64,
    pub cursor: u64,
}

/// Syncs `replica` through `transport` until both directions are caught up.
/// The outcome (success, or the error and when) is recorded for `status`.
pub fn sync(replica: &Replica, transport: &dyn Transport, options: SyncOptions) -> Result<SyncReport, ClientError> {
    let result = sync_round(replica, transport, options);
    match &result {
        Ok(_) => replica.record_success()?,
        Err(error) => {
            // Recording is best effort: the sync error is what the caller needs.
            let _ = replica.record_error(error);
        }
    }
    result
}

fn sync_round(replica: &Replica, transport: &dyn Transport, options: SyncOptions) -> Result<SyncReport, ClientError> {
    let mut report = SyncReport::default();
    stamp_all(replica)?;
    pull_until_caught_up(replica, transport, options, &mut report)?;
    while let Some(batch) = next_batch(replica, options.push_limit)? {
        let response = transport.push(&batch.request)?;
        if response.acked_seq < batch.request.last_seq {
            return Err(ClientError::Protocol(format!(
                "the server acknowledged up to {} of a batch ending at {}",
                response.acked_seq, batch.request.last_seq
            )));
        }
        report.acknowledged += acknowledge(replica, &batch, response.acked_seq)? as u64;
        report.pushed += batch.request.changes.len() as u64;
        report.push_batches += 1;
    }
    pull_until_caught_up(replica, transport, options, &mut report)?;
    Ok(report)
}

fn pull_until_caught_up(
    replica: &Replica,
    transport: &dyn Transport,
    options: SyncOptions,
    report: &mut SyncReport,
) -> Result<(), ClientError> {
    let mut cursor = meta_get::<i64>(&replica.conn, key::CURSOR)?.unwrap_or(0) as u64;
    loop {
        let page = transport.pull(cursor, options.pull_limit)?;
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
