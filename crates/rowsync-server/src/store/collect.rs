//! Collecting tombstones behind the horizon, in the same steps on every
//! store (what may be collected, and what the server must then refuse, is
//! decided in [`rowsync_core::horizon`]).
//!
//! Candidates are found without any lock, in position order: rows whose
//! state holds a delete. Each batch of those that are collectable is then
//! forgotten in one transaction under the position lock, which every push
//! takes too, so a push either sees the rows or the horizon that replaced
//! them. A row is forgotten only where it still holds the position it was
//! read at: one written since (revived, say) has moved on and stays. The
//! horizon is recorded in the same transaction as the rows it accounts for.

use std::future::Future;

use rowsync_core::horizon::{collectable, Horizon};
use rowsync_proto::{Hlc, Schema};

use super::push::PushTransaction;
use super::{decode_stored, StoreError};

/// The key of the horizon in `rowsync_meta`.
pub(crate) const META_HORIZON: &str = "horizon";

/// Rows examined per step.
const BATCH: u32 = 500;

/// A row whose state holds a delete: position, table, key, state.
pub(crate) type Candidate = (i64, String, String, String);

/// The horizon as `rowsync_meta` holds it (none: nothing collected yet).
pub(crate) fn read_horizon(stored: Option<String>) -> Result<Horizon, StoreError> {
    stored
        .map(|json| serde_json::from_str(&json))
        .transpose()
        .map(Option::unwrap_or_default)
        .map_err(|e| StoreError::Conflict(format!("unreadable tombstone horizon in rowsync_meta: {e}")))
}

/// Forgets every tombstone whose versions all read before `cutoff`.
/// `candidates(after, limit)` lists rows holding a delete after a position,
/// in position order; `begin` opens a transaction. Returns how many rows
/// were forgotten.
pub(crate) async fn collect<T, C, CFut, B, BFut>(
    schema: &Schema,
    cutoff: Hlc,
    mut candidates: C,
    mut begin: B,
) -> Result<u64, StoreError>
where
    T: PushTransaction,
    C: FnMut(i64, u32) -> CFut,
    CFut: Future<Output = Result<Vec<Candidate>, StoreError>>,
    B: FnMut() -> BFut,
    BFut: Future<Output = Result<T, StoreError>>,
{
    let (mut after, mut forgotten) = (0, 0);
    loop {
        let rows = candidates(after, BATCH).await?;
        let Some(&(last, ..)) = rows.last() else { return Ok(forgotten) };
        let mut doomed = Vec::new();
        for (position, table, key, json) in rows {
            // A table this process does not serve (yet) is left alone.
            let Ok((_, state)) = decode_stored(schema, &table, &json) else { continue };
            if let Some(newest) = collectable(&state, cutoff) {
                doomed.push((position, table, key, newest));
            }
        }
        if !doomed.is_empty() {
            let mut tx = begin().await?;
            tx.lock_position().await?;
            let mut horizon = read_horizon(tx.meta(META_HORIZON).await?)?;
            let before = horizon;
            for (position, table, key, newest) in &doomed {
                if tx.forget_row(table, key, *position).await? {
                    horizon = horizon.after(*position as u64, *newest);
                    forgotten += 1;
                }
            }
            if horizon != before {
                let json = serde_json::to_string(&horizon).map_err(|e| StoreError::Database(e.to_string()))?;
                tx.set_meta(META_HORIZON, &json).await?;
            }
            tx.commit().await?;
        }
        after = last;
    }
}
