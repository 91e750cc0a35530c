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
//!
//! The manual strategy ("ask the user") is the one place where the server
//! decides by arrival rather than by version: [`RowState::merge_manual`]
//! keeps the value it holds against a concurrent edit and records a
//! conflict. It then gives the kept value a fresh server version, newer than
//! both writes, and hangs the conflict on that version. So everything the
//! server sends out still merges as a per-part maximum on the replicas, and
//! a conflict closes everywhere as soon as a later write to its cell exists.

use std::collections::BTreeMap;

use rowsync_proto::{Hlc, SiteId, Value, Version};

/// The state of one row as one side knows it.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RowState {
    /// Version of the newest insert of this key.
    pub alive: Option<Version>,
    /// Version of the newest delete of this key.
    pub deleted: Option<Version>,
    /// Indexed like the table's columns; key columns are always `None`.
    pub cells: Vec<Option<(Value, Version)>>,
    /// Only in states pushed for a manual table: the columns the sender wrote
    /// since its last acknowledged push, each with the version it wrote over
    /// (`None`: it had seen no value).
    pub bases: BTreeMap<usize, Option<Version>>,
    /// Open conflicts (manual strategy), sorted by id. Each is attached to a
    /// version of its cell and open only while the cell holds that version.
    pub conflicts: Vec<CellConflict>,
    /// Server states of manual tables: per column, the value the current one
    /// replaced, to show the base of a later conflict. Not merged.
    pub previous: BTreeMap<usize, (Value, Version)>,
}

/// An open conflict on one cell, as [`rowsync_proto::Conflict`] with the
/// column as an index.
#[derive(Clone, Debug, PartialEq)]
pub struct CellConflict {
    pub id: String,
    pub column: usize,
    pub at: Version,
    pub base: Option<Version>,
    /// The base's value, when known.
    pub base_value: Option<Value>,
    pub kept: (Value, Version),
    pub other: (Value, Version),
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
        RowState { cells: vec![None; width], ..RowState::default() }
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
        // A sender's first write since its last push holds the base.
        for (column, base) in &incoming.bases {
            self.bases.entry(*column).or_insert_with(|| base.clone());
        }
        outcome.changed = !outcome.taken.is_empty();
        outcome.changed |= self.merge_conflicts(&incoming.conflicts);
        self.merge_tombstones(incoming, &mut outcome);
        outcome
    }

    /// Merges a pushed state under the manual strategy (server side). A cell
    /// the sender wrote over the version held here replaces it; a cell it
    /// wrote concurrently (over an older version, or over none) is not
    /// applied but recorded as a conflict against the value held here, unless
    /// both hold the same value. Cells the sender only carried along, and the
    /// row's insert and delete versions, merge as usual. `id` names a
    /// conflict from its column and the version of the write not applied.
    pub fn merge_manual(&mut self, incoming: &RowState, id: impl Fn(usize, &Version) -> String) -> MergeOutcome {
        let mut outcome = MergeOutcome::default();
        if self.cells.len() < incoming.cells.len() {
            self.cells.resize(incoming.cells.len(), None);
        }
        for (index, theirs) in incoming.cells.iter().enumerate() {
            let Some((value, version)) = theirs else { continue };
            let Some((ours_value, ours)) = self.cells[index].clone() else {
                self.cells[index] = theirs.clone();
                outcome.taken.push(index);
                continue;
            };
            let Some(base) = incoming.bases.get(&index) else {
                // Carried along unchanged by the sender: newest wins.
                if version > &ours {
                    self.previous.insert(index, (ours_value, ours));
                    self.cells[index] = theirs.clone();
                    outcome.taken.push(index);
                }
                continue;
            };
            let recorded = self.conflicts.iter().any(|c| c.column == index && &c.other.1 == version);
            if version == &ours || recorded {
                continue; // applied or recorded before
            }
            if value == &ours_value {
                // The same value reached twice: the newer version stands.
                if version > &ours {
                    self.cells[index] = theirs.clone();
                    outcome.taken.push(index);
                }
                continue;
            }
            if base.as_ref() == Some(&ours) {
                // An edit of the value held here. Replicas take it only if it
                // is newer, which a clock that saw the base guarantees.
                let version = if version > &ours { version.clone() } else { server_version(&ours, version) };
                self.previous.insert(index, (ours_value, ours));
                self.cells[index] = Some((value.clone(), version));
                outcome.taken.push(index);
                continue;
            }
            // Concurrent edits of one cell: keep ours, record theirs.
            let at = server_version(&ours, version);
            let kept = self
                .conflicts
                .iter()
                .find(|c| c.column == index && c.at == ours)
                .map_or_else(|| (ours_value.clone(), ours.clone()), |c| c.kept.clone());
            for conflict in self.conflicts.iter_mut().filter(|c| c.column == index && c.at == ours) {
                conflict.at = at.clone();
            }
            self.conflicts.push(CellConflict {
                id: id(index, version),
                column: index,
                at: at.clone(),
                base: base.clone(),
                base_value: self
                    .previous
                    .get(&index)
                    .filter(|(_, v)| base.as_ref() == Some(v))
                    .map(|(value, _)| value.clone()),
                kept,
                other: (value.clone(), version.clone()),
            });
            self.cells[index] = Some((ours_value, at));
            outcome.taken.push(index);
        }
        outcome.changed = !outcome.taken.is_empty();
        outcome.changed |= self.merge_conflicts(&[]);
        self.merge_tombstones(incoming, &mut outcome);
        outcome
    }

    /// Adds `incoming` conflicts and keeps only those attached to the version
    /// their cell holds now. Returns whether the set changed.
    fn merge_conflicts(&mut self, incoming: &[CellConflict]) -> bool {
        let before = self.conflicts.clone();
        for conflict in incoming {
            if !self.conflicts.iter().any(|c| c.id == conflict.id && c.at == conflict.at) {
                self.conflicts.push(conflict.clone());
            }
        }
        let cells = &self.cells;
        self.conflicts.retain(|c| cells.get(c.column).and_then(|cell| cell.as_ref()).is_some_and(|(_, v)| v == &c.at));
        self.conflicts.sort_by(|a, b| a.id.cmp(&b.id));
        self.conflicts != before
    }

    fn merge_tombstones(&mut self, incoming: &RowState, outcome: &mut MergeOutcome) {
        if newer(&incoming.alive, &self.alive) {
            self.alive.clone_from(&incoming.alive);
            outcome.changed = true;
        }
        if newer(&incoming.deleted, &self.deleted) {
            self.deleted.clone_from(&incoming.deleted);
            outcome.changed = true;
        }
    }
}

/// A version minted by the server for a kept value: the least clock reading
/// newer than both writes, so that it outranks them without outranking a
/// delete made after them.
fn server_version(ours: &Version, theirs: &Version) -> Version {
    Version { hlc: Hlc(ours.hlc.max(theirs.hlc).0 + 1), site: SiteId::server() }
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
        RowState { alive: Some(v(alive, 9)), cells, ..RowState::default() }
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

    /// A pushed manual-table state: `cell` written over `base`.
    fn edit(base: &RowState, column: usize, value: &str, ms: u64, site: u8) -> RowState {
        let mut state = base.clone();
        state.bases.insert(column, base.cells[column].as_ref().map(|(_, v)| v.clone()));
        state.cells[column] = text(value, ms, site);
        state
    }

    fn id(column: usize, version: &Version) -> String {
        format!("{column}/{version}")
    }

    #[test]
    fn manual_keeps_the_held_value_and_records_a_concurrent_edit() {
        let base = row(1, vec![None, text("555", 1, 9), text("a@x", 1, 9)]);
        let laptop = edit(&base, 1, "666", 20, 1);
        let phone = edit(&base, 1, "777", 10, 2);
        let mut server = base.clone();
        assert_eq!(server.merge_manual(&laptop, id).taken, vec![1]);
        assert!(server.conflicts.is_empty());
        // The phone's edit is older by clock but concurrent: recorded, not applied.
        assert!(server.merge_manual(&phone, id).changed);
        let (kept, at) = server.cells[1].clone().unwrap();
        assert_eq!(kept, Value::Text("666".into()));
        assert_eq!(at.site, SiteId::server());
        assert!(at > v(20, 1));
        let conflict = &server.conflicts[0];
        assert_eq!((conflict.column, &conflict.at, &conflict.base), (1, &at, &Some(v(1, 9))));
        assert_eq!(conflict.base_value, Some(Value::Text("555".into())), "the value both edits replaced");
        assert_eq!(conflict.kept, (Value::Text("666".into()), v(20, 1)));
        assert_eq!(conflict.other, (Value::Text("777".into()), v(10, 2)));
        // A repeat changes nothing.
        let before = server.clone();
        assert!(!server.merge_manual(&phone, id).changed);
        assert_eq!(server, before);

        // The phone, holding its own edit, takes the server's state whole.
        let mut on_phone = phone.clone();
        on_phone.bases.clear();
        on_phone.merge_from(&server);
        assert_eq!(on_phone.cells[1], server.cells[1]);
        assert_eq!(on_phone.conflicts, server.conflicts);
    }

    #[test]
    fn manual_edits_of_other_columns_or_to_the_same_value_do_not_conflict() {
        let base = row(1, vec![None, text("555", 1, 9), text("a@x", 1, 9)]);
        let mut server = base.clone();
        server.merge_manual(&edit(&base, 1, "666", 10, 1), id);
        server.merge_manual(&edit(&base, 2, "b@x", 11, 2), id);
        server.merge_manual(&edit(&base, 1, "666", 12, 3), id);
        assert!(server.conflicts.is_empty());
        assert_eq!(server.cells[1], text("666", 12, 3), "the same value keeps the newest version");
        assert_eq!(server.cells[2], text("b@x", 11, 2));
    }

    #[test]
    fn a_write_made_with_the_conflict_in_view_closes_it_and_a_blind_one_adds_another() {
        let base = row(1, vec![None, text("555", 1, 9)]);
        let mut server = base.clone();
        server.merge_manual(&edit(&base, 1, "666", 10, 1), id);
        server.merge_manual(&edit(&base, 1, "777", 11, 2), id);
        let seen = server.clone();

        // A third site that never saw the conflict edits from the old base.
        let mut blind = server.clone();
        blind.merge_manual(&edit(&base, 1, "888", 12, 3), id);
        assert_eq!(blind.conflicts.len(), 2, "both refused values are kept");
        assert!(blind.conflicts.iter().all(|c| Some(&c.at) == blind.cells[1].as_ref().map(|(_, v)| v)));
        assert!(blind.conflicts.iter().all(|c| c.kept.0 == Value::Text("666".into())));

        // A resolution: written over the version the conflict hangs on.
        let mut resolved = server.clone();
        resolved.merge_manual(&edit(&seen, 1, "777", 30, 2), id);
        assert!(resolved.conflicts.is_empty());
        assert_eq!(resolved.cells[1], text("777", 30, 2));
        // Replicas holding the conflict drop it when the resolution arrives.
        let mut replica = seen.clone();
        replica.merge_from(&resolved);
        assert!(replica.conflicts.is_empty());
        let mut late = resolved.clone();
        late.merge_from(&seen);
        assert_eq!(late, resolved, "an older state does not reopen it");
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
