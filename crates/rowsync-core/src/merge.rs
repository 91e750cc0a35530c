//! A row's state and how two states of one row merge.
//!
//! A row state holds, per column, the value and the version of the write that
//! produced it, plus the version of the newest insert (`alive`) and of the
//! newest delete (`deleted`). The row is visible when its newest write is
//! newer than its newest delete.
//!
//! Merging keeps, for each part, the newer version. That is a per-part
//! maximum, so merging is commutative, associative and idempotent: the same
//! set of changes gives the same row in any order, any number of times, on
//! every replica. It also settles the delete traps by construction: an older
//! update can never outrank a newer delete, so a deleted row does not come
//! back from a stale write, while an edit made after the delete does win.

use rowsync_proto::{Value, Version};

/// The state of one row as one side knows it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RowState {
    /// Version of the newest insert of this key.
    pub alive: Option<Version>,
    /// Version of the newest delete of this key.
    pub deleted: Option<Version>,
    /// Indexed like the table's columns; key columns are always `None`.
    pub cells: Vec<Option<(Value, Version)>>,
}

/// What a merge changed on the local side.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MergeOutcome {
    /// Columns whose value or version was taken from the incoming state.
    pub taken: Vec<usize>,
    /// True when anything at all changed (a cell, `alive` or `deleted`).
    pub changed: bool,
}

impl RowState {
    /// An empty state for a table with `width` columns.
    pub fn empty(width: usize) -> RowState {
        RowState { alive: None, deleted: None, cells: vec![None; width] }
    }

    /// The newest write (insert or cell) this state has seen.
    pub fn newest_write(&self) -> Option<&Version> {
        self.cells.iter().flatten().map(|(_, v)| v).chain(self.alive.as_ref()).max()
    }

    /// Every version in this state, for the clock's receive rule.
    pub fn versions(&self) -> impl Iterator<Item = &Version> {
        self.cells.iter().flatten().map(|(_, v)| v).chain(self.alive.as_ref()).chain(self.deleted.as_ref())
    }

    /// A row is visible when its newest write is newer than its newest delete.
    pub fn is_visible(&self) -> bool {
        match (self.newest_write(), &self.deleted) {
            (Some(write), Some(delete)) => write > delete,
            (Some(_), None) => true,
            (None, _) => false,
        }
    }

    /// The state as the row strategy sees it: the row as of its newest write,
    /// every cell carrying that write's version. Merging such states per cell
    /// makes the later write's whole row win.
    pub fn as_whole_row(mut self) -> RowState {
        if let Some(newest) = self.newest_write().cloned() {
            for (_, version) in self.cells.iter_mut().flatten() {
                *version = newest.clone();
            }
        }
        self
    }

    /// Merges `incoming` into `self`, keeping the newer version of every part.
    pub fn merge_from(&mut self, incoming: &RowState) -> MergeOutcome {
        let mut outcome = MergeOutcome::default();
        if self.cells.len() < incoming.cells.len() {
            self.cells.resize(incoming.cells.len(), None);
        }
        for (index, theirs) in incoming.cells.iter().enumerate() {
            let Some((value, version)) = theirs else { continue };
            let take = match &self.cells[index] {
                None => true,
                Some((_, ours)) => version > ours,
            };
            if take {
                self.cells[index] = Some((value.clone(), version.clone()));
                outcome.taken.push(index);
            }
        }
        outcome.changed = !outcome.taken.is_empty();
        if newer(&incoming.alive, &self.alive) {
            self.alive.clone_from(&incoming.alive);
            outcome.changed = true;
        }
        if newer(&incoming.deleted, &self.deleted) {
            self.deleted.clone_from(&incoming.deleted);
            outcome.changed = true;
        }
        outcome
    }
}

fn newer(theirs: &Option<Version>, ours: &Option<Version>) -> bool {
    match (theirs, ours) {
        (Some(t), Some(o)) => t > o,
        (Some(_), None) => true,
        (None, _) => false,
    }
}

#[cfg(test)]
mod tests {
    use rowsync_proto::{Hlc, SiteId};

    use super::*;

    fn v(ms: u64, site: u8) -> Version {
        Version { hlc: Hlc::from_millis(ms), site: SiteId::from_bytes([site; 16]) }
    }

    fn text(s: &str, ms: u64, site: u8) -> Option<(Value, Version)> {
        Some((Value::Text(s.into()), v(ms, site)))
    }

    fn row(alive: u64, cells: Vec<Option<(Value, Version)>>) -> RowState {
        RowState { alive: Some(v(alive, 9)), deleted: None, cells }
    }

    #[test]
    fn different_fields_both_survive() {
        let base = row(1, vec![None, text("555", 1, 9), text("a@x", 1, 9)]);
        let mut phone = base.clone();
        phone.cells[1] = text("666", 10, 1);
        let mut email = base.clone();
        email.cells[2] = text("b@x", 11, 2);

        let mut left = base.clone();
        left.merge_from(&phone);
        left.merge_from(&email);
        let mut right = base;
        right.merge_from(&email);
        right.merge_from(&phone);
        assert_eq!(left, right);
        assert_eq!(left.cells[1], text("666", 10, 1));
        assert_eq!(left.cells[2], text("b@x", 11, 2));
    }

    #[test]
    fn same_field_later_write_wins_and_site_breaks_ties() {
        let mut a = row(1, vec![None, text("early", 5, 1)]);
        let b = row(1, vec![None, text("late", 6, 1)]);
        assert_eq!(a.merge_from(&b).taken, vec![1]);
        assert_eq!(a.cells[1], text("late", 6, 1));

        let mut low = row(1, vec![None, text("site1", 7, 1)]);
        let high = row(1, vec![None, text("site2", 7, 2)]);
        low.merge_from(&high);
        let mut other = high.clone();
        other.merge_from(&row(1, vec![None, text("site1", 7, 1)]));
        assert_eq!(low.cells[1], text("site2", 7, 2));
        assert_eq!(low, other);
    }

    #[test]
    fn a_delete_beats_older_updates_and_loses_to_newer_ones() {
        let mut state = row(1, vec![None, text("x", 2, 1)]);
        state.merge_from(&RowState { deleted: Some(v(5, 2)), ..RowState::empty(2) });
        assert!(!state.is_visible());

        // A stale update (written before the delete) arriving late: still deleted.
        let stale = row(1, vec![None, text("stale", 4, 3)]);
        state.merge_from(&stale);
        assert!(!state.is_visible(), "a stale write resurrected a deleted row");

        // An edit made after the delete wins, everywhere.
        state.merge_from(&row(1, vec![None, text("later", 6, 3)]));
        assert!(state.is_visible());
    }

    #[test]
    fn with_whole_rows_the_later_write_wins_every_column() {
        let base = row(1, vec![None, text("555", 1, 9), text("a@x", 1, 9)]);
        let mut phone = base.clone();
        phone.cells[1] = text("666", 10, 1);
        let mut email = base.clone();
        email.cells[2] = text("b@x", 11, 2);
        let (phone, email) = (phone.as_whole_row(), email.as_whole_row());
        let mut left = phone.clone();
        left.merge_from(&email);
        let mut right = email.clone();
        right.merge_from(&phone);
        assert_eq!(left, right);
        assert_eq!(left.cells[1].as_ref().unwrap().0, Value::Text("555".into()), "the later row wins whole");
        assert_eq!(left.cells[2].as_ref().unwrap().0, Value::Text("b@x".into()));
    }

    #[test]
    fn merging_is_idempotent() {
        let mut a = row(1, vec![None, text("x", 2, 1)]);
        let b = a.clone();
        let outcome = a.merge_from(&b);
        assert!(!outcome.changed);
        assert_eq!(a, b);
    }
}
