//! The driver: runs the steps the sync engine decides on
//! ([`rowsync_core::engine`]) on the replica file and over a transport, and
//! tells the engine how each went. It decides nothing itself; each step is
//! one bounded piece of work (a page, a batch, a check) in its own
//! transactions. `sync` and the agent drive the engine with it; so can a
//! simulation, on its own clock.
//!
//! While a push is on its way (where the transport sends on a thread of
//! its own, see [`Transport::send_push`]), the driver reads the batch after
//! it, so that the replica's reading and the server's writing overlap; once
//! the answer comes, that batch (made ready to send meanwhile, see
//! [`Transport::ready_push`]) is sent at once, and the one answered is
//! acknowledged while it is on its way. The next push step takes its
//! answer. Any other step lets it go unanswered: the request may still
//! reach the server, which applies each change at most once (by its
//! sequence number) and refuses an old request once a newer one of the
//! replica's has been applied; its entries stay in the outbox, to be read
//! and sent again. A large
//! backlog of local writes is stamped in the same way, batch by batch as
//! it is read (see `backlog`), rather than all of it before the first
//! batch: the capture check's row counts, which need every write stamped,
//! are then compared once the push finds nothing more to send.

use rowsync_core::engine::{Done, Event, Failure, Step};
use rowsync_proto::{PullRequest, SiteId};

use crate::apply::apply_staged;
use crate::audit::{audit_against_server, check_capture, RowCounts};
use crate::backlog::Backlog;
use crate::bookkeeping::{key, known_batches, meta_get};
use crate::error::ClientError;
use crate::outbox::{acknowledge, read_batch, set_aside, Batch};
use crate::rebuild::Download;
use crate::replica::Replica;
use crate::stage::stage;
use crate::stamp::{stamp_all_yielding, unstamped, STAMP_CHUNK};
use crate::transport::{PushInFlight, Transport};

/// Runs an engine's steps on one replica over one transport.
pub struct Driver<'a> {
    replica: &'a mut Replica,
    transport: &'a dyn Transport,
    /// The last batch pushed (refused changes are set aside from it).
    batch: Option<Batch>,
    /// The batch after it, read while it was on its way and sent as soon
    /// as it was answered, for the next push step to take the answer of,
    /// whatever limits that step asks for (the engine changes them only
    /// after a failure, which leaves nothing in flight); any other step
    /// lets it go unanswered.
    in_flight: Option<(Batch, PushInFlight<'a>)>,
    /// What the push steps in a row learnt of the unstamped outbox (any
    /// other step drops it).
    backlog: Backlog,
    /// Whether the capture check left the row counts for when the push has
    /// caught up.
    counts_due: bool,
    /// What a capture check made during the push found, for the next push
    /// step that succeeds to report.
    notes: Vec<String>,
    /// Changes per page when comparing tables with the server.
    pull_limit: u32,
    /// The error behind the last failed step, for callers that return it.
    pub last_error: Option<ClientError>,
}

impl<'a> Driver<'a> {
    /// A driver; `pull_limit` is the page size when tables are compared
    /// with the server.
    pub fn new(replica: &'a mut Replica, transport: &'a dyn Transport, pull_limit: u32) -> Driver<'a> {
        Driver {
            replica,
            transport,
            batch: None,
            in_flight: None,
            backlog: Backlog::default(),
            counts_due: false,
            notes: Vec::new(),
            pull_limit,
            last_error: None,
        }
    }

    /// The replica the steps run on.
    pub fn replica(&self) -> &Replica {
        self.replica
    }

    /// Runs `step`; the event says how it went.
    pub fn run(&mut self, step: &Step) -> Event {
        let mut sent = 0;
        match self.try_run(step, &mut sent) {
            Ok(done) => Event::Done(done),
            Err(error) => {
                let failure = failure(&error, sent);
                self.last_error = Some(error);
                Event::Failed(failure)
            }
        }
    }

    fn try_run(&mut self, step: &Step, sent: &mut usize) -> Result<Done, ClientError> {
        let replica = &mut *self.replica;
        let in_flight = self.in_flight.take();
        if !matches!(step, Step::Push { .. }) {
            self.backlog = Backlog::default();
        }
        // Another process may have taken on a new schema meanwhile.
        replica.refresh()?;
        Ok(match step {
            Step::Prepare => {
                let schema = self.transport.schema()?;
                replica.adopt_schema(&schema)?;
                // A large backlog is stamped as it is pushed (the server
                // need not wait for all of it); the row counts are then
                // compared once the push has caught up.
                let counts = if unstamped(&replica.conn)? > STAMP_CHUNK as i64 {
                    RowCounts::Later
                } else {
                    stamp_all_yielding(replica)?;
                    RowCounts::Compare
                };
                self.counts_due = counts == RowCounts::Later;
                // Capture is checked, not trusted: writes it missed are queued first.
                let mut notes = check_capture(replica, counts)?;
                notes.extend(audit_against_server(replica, self.transport, self.pull_limit)?);
                Done::Prepared { notes, pending: replica.pending()? }
            }
            Step::Stamp => {
                stamp_all_yielding(replica)?;
                Done::Stamped { pending: replica.pending()? }
            }
            Step::Pull { limit } => {
                let cursor = meta_get::<i64>(&replica.conn, key::CURSOR)?.unwrap_or(0) as u64;
                let known = known_batches(&replica.conn)?;
                let download = Download::of(&replica.conn, cursor)?;
                // A reconciling download must bring every row, this site's
                // own too: it asks as a site that is nobody's origin.
                let site = match download {
                    Download::Reconciling => SiteId::server(),
                    _ => replica.site.clone(),
                };
                let full = download.full(&replica.conn)?;
                let request = PullRequest { site, cursor, limit: *limit, known, full };
                let mut page = self.transport.pull(&request)?;
                if page.cursor < cursor {
                    return Err(ClientError::Protocol(format!(
                        "the server moved the cursor back from {cursor} to {}",
                        page.cursor
                    )));
                }
                // The page may carry tables and columns the server gained
                // since this replica took on its schema: they are added first.
                if page.schema_version.is_some_and(|version| version > replica.schema.version) {
                    replica.adopt_schema(&self.transport.schema()?)?;
                }
                // Staging takes no lock. The page is then one write
                // transaction: the app gets the file to itself for a while
                // before it begins.
                let merges = download.needs_stamping(page.changes.len());
                let staged = stage(replica, std::mem::take(&mut page.changes))?;
                // Local writes get their versions before anything pulled is
                // merged (a page that brings nothing needs none): a large
                // backlog in paced chunks, before the page's transaction.
                if merges && unstamped(&replica.conn)? > 0 {
                    stamp_all_yielding(replica)?;
                }
                let changes = staged.changes.len() as u64;
                let (applied, took) = replica.pacer.slice(|| apply_staged(replica, &page, staged));
                let (applied, took_us) = (applied? as u64, took.as_micros() as u64);
                Done::Pulled { changes, applied, cursor: page.cursor, more: page.more, took_us }
            }
            Step::Push { limit, bytes } => {
                let (limit, bytes) = (*limit, *bytes);
                let (batch, sending) = match in_flight {
                    Some((batch, sending)) => (Some(batch), Some(sending)),
                    None => (read_batch(replica, &mut self.backlog, 0, limit, bytes)?, None),
                };
                self.batch = batch;
                // A row deleted without the triggers seeing it is not sent
                // as a row without values: the counts are compared first
                // (every write stamped), which queues its delete. So are
                // they, as usual, once the push has caught up; what they
                // find goes out in this sync.
                let unseen_delete = self.batch.as_ref().is_some_and(Batch::holds_an_unseen_delete);
                if unseen_delete || (self.batch.is_none() && self.counts_due) {
                    // A batch sent ahead was sent only without one, and is
                    // never empty.
                    debug_assert!(sending.is_none(), "a batch sent ahead is read again");
                    stamp_all_yielding(replica)?;
                    self.notes.extend(check_capture(replica, RowCounts::Compare)?);
                    self.counts_due = false;
                    self.batch = read_batch(replica, &mut self.backlog, 0, limit, bytes)?;
                }
                let Some(batch) = &self.batch else {
                    return Ok(Done::NothingToPush { notes: std::mem::take(&mut self.notes) });
                };
                *sent = batch.request.changes.len();
                let sending = sending.unwrap_or_else(|| self.transport.send_push(&batch.request));
                // While the server works, the next batch is read. It is
                // what reading it after the acknowledgement would give when
                // the two batches share no row: acknowledging touches only
                // the rows of the batch acknowledged, and entries up to its
                // last. Otherwise, or if this push fails, it is dropped.
                let next = if sending.on_its_way() {
                    read_batch(replica, &mut self.backlog, batch.last_id, limit, bytes).ok().flatten()
                } else {
                    None
                };
                let next = next.filter(|next| !next.shares_rows_with(batch) && !next.holds_an_unseen_delete());
                let transport = self.transport;
                let next = next.map(|next| {
                    let ready = transport.ready_push(&next.request);
                    (next, ready)
                });
                let response = sending.answer()?;
                // The next batch goes out before this one is acknowledged,
                // so that the server need not wait for the replica's write.
                self.in_flight = next.map(|(next, ready)| {
                    let sending = transport.send_ready(&next.request, ready);
                    (next, sending)
                });
                // A write transaction like the rest: it keeps the app's gap.
                // Should it fail, the batch sent meanwhile goes unanswered
                // (as after any other step) and is read again.
                let acknowledged = match replica.pacer.slice(|| acknowledge(replica, batch, response.acked_seq)).0 {
                    Ok(acknowledged) => acknowledged as u64,
                    Err(error) => {
                        self.in_flight = None;
                        return Err(error);
                    }
                };
                let notes = std::mem::take(&mut self.notes);
                Done::Pushed { changes: batch.request.changes.len() as u64, acknowledged, notes }
            }
            Step::SetAside { change, reason } => {
                let batch = self.batch.as_ref().ok_or_else(|| {
                    ClientError::Protocol("the server refused a change of a push that was not sent".into())
                })?;
                set_aside(replica, batch, *change, reason)?;
                Done::SetAside
            }
            Step::RenewIdentity => {
                let old = replica.site().clone();
                let new = replica.take_new_identity()?;
                Done::Renewed {
                    note: format!(
                        "this file is a copy of a replica (restored from a backup, or copied to another device): it \
                         took the new device id {new} (was {old}), sends its pending writes again and pulls \
                         everything again"
                    ),
                }
            }
            Step::StartOver => {
                replica.start_over()?;
                Done::StartedOver {
                    note: "deletes the server has since forgotten (it keeps them for its tombstone retention) may \
                           not have reached this replica: it downloads everything again, and deletes the rows the \
                           server no longer has, except those with writes of its own still to push"
                        .into(),
                }
            }
            Step::CorrectClock { max_clock_ms } => {
                Done::ClockCorrected { rows: replica.correct_clock(*max_clock_ms)? as u64 }
            }
        })
    }
}

/// What the engine needs to know of an error. `sent` is the number of
/// changes of the push it refused.
pub fn failure(error: &ClientError, sent: usize) -> Failure {
    match error {
        ClientError::Unreachable { .. } => Failure::Unreachable { detail: error.to_string() },
        ClientError::Refused { code, message, change, max_clock_ms, .. } => Failure::Refused {
            code: *code,
            message: message.clone(),
            change: *change,
            max_clock_ms: *max_clock_ms,
            sent,
        },
        ClientError::Busy { .. } => Failure::Busy { detail: error.to_string() },
        _ => Failure::Other { detail: error.to_string() },
    }
}
