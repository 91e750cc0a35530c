//! One push, in the same steps on every store.
//!
//! The order of the steps is what makes a push safe, so it lives here once:
//! the position counter is locked first and held to commit (positions become
//! visible in the order they were handed out, see the stores' module docs);
//! the site's high-water mark is read in the same transaction that applies
//! the batch and records the new mark (a retried batch is applied once); the
//! merge itself is the pure [`plan`](super::plan). A store supplies only the
//! statements, in its dialect, through [`PushTransaction`].

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use rowsync_core::horizon::Horizon;
use rowsync_proto::{PushResponse, Schema, SiteId, Table, Value};

use super::collect::{read_horizon, META_HORIZON};
use super::direct::{drain_direct, raced};
use super::plan::{fold_batch, plan_writes, IncomingRow, Planned, RowId, RowWrite, Stored};
use super::{from_another_copy, CheckedBatch, Pushed, StoreError};

/// What the server keeps of a site: the highest sequence number applied,
/// the id of the last request applied, and the user it belongs to (the
/// first user that pushed from it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SiteMark {
    pub hwm: u64,
    pub batch: Option<u64>,
    pub user: Option<String>,
}

/// A write noted by a capture trigger: entry id, table, key as the trigger
/// wrote it, and the writer's clock (Unix milliseconds).
pub(crate) type DirectEntry = (i64, String, String, i64);

/// A row of `rowsync_sites`: high-water mark, last request, user.
pub(crate) type MarkRow = (i64, Option<i64>, Option<String>);

impl SiteMark {
    pub(crate) fn from_row((hwm, batch, user): MarkRow) -> SiteMark {
        SiteMark { hwm: hwm as u64, batch: batch.map(|b| b as u64), user }
    }
}

/// The statements of one push transaction, in a store's dialect.
pub(crate) trait PushTransaction: Send {
    /// Whether other writers may commit while this transaction runs (true
    /// where the position lock does not exclude them, as on PostgreSQL and
    /// MySQL): then a direct write may race the push (see `store::direct`).
    const SHARED_WRITERS: bool = false;

    /// Locks the position counter until commit; returns the last position
    /// handed out.
    fn lock_position(&mut self) -> impl Future<Output = Result<i64, StoreError>> + Send;

    /// The site's high-water mark (0 for a site never seen) and the id of
    /// the last request of it applied.
    fn site_mark(&mut self, site: &SiteId) -> impl Future<Output = Result<SiteMark, StoreError>> + Send;

    /// The stored states and owners of `rows` (rows never stored are absent).
    fn load_states(
        &mut self,
        schema: &Schema,
        rows: &[IncomingRow],
    ) -> impl Future<Output = Result<HashMap<RowId, Stored>, StoreError>> + Send;

    /// Records the new states and positions; `site` is the origin of the
    /// writes that are echoes.
    fn save_states(
        &mut self,
        schema: &Schema,
        site: &SiteId,
        writes: &[RowWrite],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Writes visible rows of `table` whole (insert or update).
    fn upsert_rows(
        &mut self,
        schema: &Schema,
        table: &Table,
        rows: &[&RowWrite],
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Deletes rows of `table` that are no longer visible.
    fn delete_rows(&mut self, table: &Table, rows: &[&RowWrite])
        -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Records the last position handed out and the site's new mark.
    fn record(
        &mut self,
        last_position: i64,
        site: &SiteId,
        mark: SiteMark,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// The direct writes noted by the capture triggers and visible now, in
    /// entry order. Stores without capture note none.
    fn direct_entries(&mut self) -> impl Future<Output = Result<Vec<DirectEntry>, StoreError>> + Send {
        async { Ok(Vec::new()) }
    }

    /// The row of `table` under `key` as the table holds it now (`None`:
    /// no such row), in column order.
    fn read_row(
        &mut self,
        _table: &Table,
        _key: &[Value],
    ) -> impl Future<Output = Result<Option<Vec<Value>>, StoreError>> + Send {
        async { Ok(None) }
    }

    /// Records the last position handed out (a drain of its own; a push
    /// records it with the site's mark).
    fn set_position(&mut self, last_position: i64) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Removes drained direct-write entries.
    fn forget_direct(&mut self, _ids: &[i64]) -> impl Future<Output = Result<(), StoreError>> + Send {
        async { Ok(()) }
    }

    /// Announces, in the transaction, that `position` commits with it (for
    /// stores whose database tells other server processes at commit).
    fn announce(&mut self, _position: i64) -> impl Future<Output = Result<(), StoreError>> + Send {
        async { Ok(()) }
    }

    /// A value of `rowsync_meta`.
    fn meta(&mut self, key: &str) -> impl Future<Output = Result<Option<String>, StoreError>> + Send;

    /// Sets a value of `rowsync_meta`.
    fn set_meta(&mut self, key: &str, value: &str) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Removes the bookkeeping row of `table` under `key` if it still holds
    /// `position`; returns whether it did.
    fn forget_row(
        &mut self,
        table: &str,
        key: &str,
        position: i64,
    ) -> impl Future<Output = Result<bool, StoreError>> + Send;

    fn commit(self) -> impl Future<Output = Result<(), StoreError>> + Send;
}

/// Applies one push batch as [`push_batch`] does, each attempt in a
/// transaction `begin` opens; an attempt a direct write raced is rolled back
/// and made again (it then drains that write first), a few times.
pub(crate) async fn push_retrying<T, F, Fut>(
    mut begin: F,
    schema: &Schema,
    batch: &CheckedBatch,
    delay: Option<Duration>,
) -> Result<Pushed, StoreError>
where
    T: PushTransaction,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    for _ in 0..DIRECT_RACE_TRIES {
        match push_batch(begin().await?, schema, batch, delay).await {
            Err(StoreError::DirectRace) => continue,
            other => return other,
        }
    }
    Err(StoreError::Unavailable("direct writes to the same rows kept racing this push".into()))
}

/// How often a push is tried when direct writes to the database race it.
const DIRECT_RACE_TRIES: usize = 3;

/// Applies one push batch in `tx`, skipping changes at or below the site's
/// high-water mark. `delay` is fault injection for tests: a sleep after the
/// writes, before the commit.
pub(crate) async fn push_batch<T: PushTransaction>(
    mut tx: T,
    schema: &Schema,
    batch: &CheckedBatch,
    delay: Option<Duration>,
) -> Result<Pushed, StoreError> {
    let (site, last_seq) = (&batch.site, batch.last_seq);
    // Taken first and held to commit.
    let position = tx.lock_position().await?;
    let SiteMark { hwm, batch: last_batch, user: site_user } = tx.site_mark(site).await?;
    // A device id belongs to the first user that pushed from it: nobody
    // else's token may push as it (or probe its marks).
    if let (Some(owner), Some(user)) = (&site_user, &batch.user) {
        if owner != user {
            return Err(StoreError::ForeignSite);
        }
    }
    // A copy of the replica (restored from a backup, or copied to another
    // device) reuses the site's sequence numbers: its new writes would be
    // skipped as repeats and acknowledged away.
    if from_another_copy(last_batch, batch.batch, batch.known.as_deref()) {
        return Err(StoreError::SiteReused);
    }
    // Writes made directly in the database first: the batch merges over them.
    let position = drain_direct(&mut tx, schema, position, batch.now_ms).await?;
    let (incoming, applied) = fold_batch(&batch.changes, hwm);
    let mut stored = tx.load_states(schema, &incoming).await?;
    // Only rows the server holds nothing of are judged by the horizon. It is
    // read under the position lock, which collecting tombstones takes too.
    let horizon = if incoming.iter().any(|row| !stored.contains_key(&row.id)) {
        read_horizon(tx.meta(META_HORIZON).await?)?
    } else {
        Horizon::default()
    };
    let Planned { writes, collisions } =
        plan_writes(schema, incoming, &mut stored, position, batch.user.as_deref(), &horizon)?;
    if !writes.is_empty() {
        tx.save_states(schema, site, &writes).await?;
    }
    for (index, table) in schema.tables.iter().enumerate() {
        let (visible, deleted): (Vec<&RowWrite>, Vec<&RowWrite>) =
            writes.iter().filter(|w| w.id.0 == index).partition(|w| w.state.is_visible());
        if !visible.is_empty() {
            tx.upsert_rows(schema, table, &visible).await?;
        }
        if !deleted.is_empty() {
            tx.delete_rows(table, &deleted).await?;
        }
    }
    if T::SHARED_WRITERS && raced(&mut tx, schema, &writes).await? {
        return Err(StoreError::DirectRace);
    }
    let last_position = writes.last().map_or(position, |w| w.position);
    let acked = hwm.max(last_seq);
    let mark = SiteMark { hwm: acked, batch: batch.batch.or(last_batch), user: site_user.or(batch.user.clone()) };
    tx.record(last_position, site, mark).await?;
    if !writes.is_empty() {
        tx.announce(last_position).await?;
    }
    if let Some(delay) = delay {
        tokio::time::sleep(delay).await;
    }
    tx.commit().await?;
    Ok(Pushed { response: PushResponse { acked_seq: acked, applied }, position: last_position as u64, collisions })
}
