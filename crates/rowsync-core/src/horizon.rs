//! The tombstone horizon: how the server forgets deleted rows without
//! letting anyone miss a delete or bring a row back by mistake.
//!
//! A delete is kept as a tombstone (the row's state with its delete
//! version) so that every replica learns of it and so that an older edit
//! arriving later cannot revive the row. Kept forever, tombstones make the
//! server's storage grow with every row ever deleted. So the server
//! collects the tombstones whose every version is older than its retention
//! (by default 30 days), and remembers two things in their place, the
//! [`Horizon`]:
//! - the highest position of a collected tombstone. A replica whose cursor
//!   lies below it may have missed a delete that is no longer there to be
//!   pulled: its pull is refused ([`cursor_expired`]), and it downloads
//!   everything again, deleting the rows it holds that the server no longer
//!   has (except those with writes of its own still to push). A download
//!   from the start is held to the same rule against the horizon it began
//!   at: a delete forgotten while it runs may be of a row it brought
//!   already, and the download must then begin again.
//! - the newest version of a collected tombstone. A pushed write for a row
//!   the server holds nothing of, all of whose versions are at or below
//!   it, may be an old edit of a row whose delete was collected: it is
//!   refused ([`forgotten`]), and the replica sets it aside and tells the
//!   user, rather than revive the row. A write newer than every collected
//!   delete would have won over it anyway, and is applied.

use rowsync_proto::Hlc;
use serde::{Deserialize, Serialize};

use crate::RowState;

/// What the server remembers of the tombstones it collected.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Horizon {
    /// The highest position a collected tombstone held (0: none collected).
    pub position: u64,
    /// The newest version (its clock reading) of a collected tombstone.
    pub clock: Hlc,
}

impl Horizon {
    /// The horizon after collecting a tombstone at `position` whose newest
    /// version reads `clock`.
    pub fn after(self, position: u64, clock: Hlc) -> Horizon {
        Horizon { position: self.position.max(position), clock: self.clock.max(clock) }
    }
}

/// Whether a stored row state is a tombstone that may be collected: the row
/// is deleted, and every version it holds reads before `cutoff`. Returns
/// the newest of them.
pub fn collectable(state: &RowState, cutoff: Hlc) -> Option<Hlc> {
    if state.is_visible() || state.deleted.is_none() {
        return None;
    }
    let newest = state.versions().map(|v| v.hlc).max()?;
    (newest < cutoff).then_some(newest)
}

/// Whether a pull from `cursor` may have missed a collected delete.
/// `download` is, for a download from the start, the horizon's position
/// when it began: what was forgotten before then it never met, so only a
/// delete forgotten since, beyond its cursor, can have been missed (of a row
/// an earlier page brought). Any other pull from the start misses nothing.
pub fn cursor_expired(horizon: &Horizon, cursor: u64, download: Option<u64>) -> bool {
    match download {
        Some(began) => horizon.position > cursor.max(began),
        None => cursor > 0 && horizon.position > cursor,
    }
}

/// Whether a pushed state, for a row the server holds nothing of, must be
/// refused: it would make the row visible, yet none of its versions is
/// newer than every collected delete, so it may be an old edit of a row
/// deleted since.
pub fn forgotten(horizon: &Horizon, incoming: &RowState) -> bool {
    if horizon.position == 0 || !incoming.is_visible() {
        return false;
    }
    incoming.versions().all(|v| v.hlc <= horizon.clock)
}

#[cfg(test)]
mod tests {
    use rowsync_proto::{SiteId, Value, Version};

    use super::*;

    fn at(ms: u64) -> Version {
        Version { hlc: Hlc::from_millis(ms), site: SiteId::from_bytes([7; 16]) }
    }

    fn row(written: u64, deleted: Option<u64>) -> RowState {
        RowState {
            alive: Some(at(written)),
            cells: vec![None, Some((Value::Text("Ada".into()), at(written)))],
            deleted: deleted.map(at),
            ..RowState::default()
        }
    }

    #[test]
    fn only_deleted_rows_older_than_the_cutoff_are_collected() {
        let cutoff = Hlc::from_millis(1_000);
        assert_eq!(collectable(&row(100, Some(200)), cutoff), Some(Hlc::from_millis(200)));
        assert_eq!(collectable(&row(100, None), cutoff), None, "a live row stays");
        assert_eq!(collectable(&row(300, Some(200)), cutoff), None, "revived by a later write");
        assert_eq!(collectable(&row(100, Some(1_000)), cutoff), None, "deleted too recently");
    }

    #[test]
    fn a_cursor_below_the_horizon_has_expired_unless_the_pull_starts_over() {
        let horizon = Horizon { position: 50, clock: Hlc::from_millis(1) };
        assert!(cursor_expired(&horizon, 49, None));
        assert!(!cursor_expired(&horizon, 50, None), "it pulled the last collected tombstone");
        assert!(!cursor_expired(&horizon, 0, None), "a new replica has nothing to miss");
        assert!(!cursor_expired(&Horizon::default(), 10, None), "nothing collected");
        assert!(!cursor_expired(&horizon, 10, Some(50)), "forgotten before the download began");
        assert!(cursor_expired(&horizon, 10, Some(40)), "forgotten since, beyond the download's cursor");
        assert!(!cursor_expired(&horizon, 50, Some(40)), "forgotten since, but the download passed it");
        assert!(cursor_expired(&horizon, 0, Some(40)), "forgotten while the first page was read");
    }

    #[test]
    fn an_unknown_row_revived_by_writes_older_than_a_collected_delete_is_refused() {
        let horizon = Horizon::default().after(40, Hlc::from_millis(500));
        assert!(forgotten(&horizon, &row(400, None)), "may be an edit the collected delete beat");
        assert!(forgotten(&horizon, &row(500, None)), "a tie is not newer");
        assert!(!forgotten(&horizon, &row(600, None)), "newer than every collected delete");
        let mut edited = row(400, None);
        edited.cells[0] = Some((Value::Integer(1), at(700)));
        assert!(!forgotten(&horizon, &edited), "one newer write is enough");
        assert!(!forgotten(&horizon, &row(100, Some(200))), "a delete revives nothing");
        assert!(!forgotten(&Horizon::default(), &row(1, None)), "nothing collected");
    }
}
