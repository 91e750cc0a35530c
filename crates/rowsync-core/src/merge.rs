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
//! a conflict closes everywhere once a write made with it in view (over that
//! version) has been applied to its cell.

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
    /// Only in states pushed for a manual table: the columns with a write of the
    /// sender the server has not acknowledged, each with the version it wrote over
    /// (`None`: it had seen no value).
    pub bases: BTreeMap<usize, Option<Version>>,
    /// Open conflicts (manual strategy), sorted by id. Each is attached to a
    /// version of its cell and open only while the cell holds that version.
    pub conflicts: Vec<CellConflict>,
    /// Server states of manual tables: what the server remembers of each
    /// cell besides its value. Not merged (replicas ignore it).
    pub memory: BTreeMap<usize, CellMemory>,
}

/// What the server remembers of a manual table's cell to classify the next
/// write to it (see [`RowState::merge_manual`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CellMemory {
    /// The value the current one replaced, to show the base of a later
    /// conflict.
    pub previous: Option<(Value, Version)>,
    /// Other versions of the value the cell holds now (the same value
    /// reached twice, or the write behind a value the server gave a version
    /// of its own). A writer that saw one of them saw the current value.
    pub aliases: Vec<Version>,
    /// The newest write of each site processed, so that a write sent again
    /// (a retry after a lost answer) is known even after the cell moved on.
    pub writers: Vec<Version>,
}

impl CellMemory {
    pub fn is_empty(&self) -> bool {
        self.previous.is_none() && self.aliases.is_empty() && self.writers.is_empty()
    }
}

/// How the server treats a cell pushed for a manual table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ManualCase {
    /// Nothing to compare against (no value held, a value of a deleted
    /// incarnation, or a cell carried along unchanged): newest wins.
    Newest,
    /// This write was applied or recorded before.
    Known,
    /// Written over the value held here, with its open conflicts in view.
    Edit,
    /// The same value as the one held: no conflict.
    SameValue,
    /// Written over the value held here, but not over the version its open
    /// conflicts hang on: the new value is taken, the conflicts stay open.
    BlindEdit,
    /// Written over a value the server no longer holds: the conflict case.
    Concurrent,
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

    /// The row's values in table column order, the key values (given in
    /// primary key order) in their own columns; the column's default where
    /// no cell is known (a column added after the row was written).
    pub fn row_values(&self, table: &rowsync_proto::Table, key: &[Value]) -> Vec<Value> {
        (0..table.columns.len()).map(|index| self.value_at(table, key, index).into_owned()).collect()
    }

    /// One value of [`RowState::row_values`], borrowed where it can be.
    pub fn value_at<'a>(
        &'a self,
        table: &rowsync_proto::Table,
        key: &'a [Value],
        index: usize,
    ) -> std::borrow::Cow<'a, Value> {
        use std::borrow::Cow;
        if let Some(part) = table.primary_key.iter().position(|&column| column == index) {
            return Cow::Borrowed(key.get(part).unwrap_or(&Value::Null));
        }
        match self.cells.get(index).and_then(Option::as_ref) {
            Some((value, _)) => Cow::Borrowed(value),
            None => Cow::Owned(crate::schema::column_default(&table.columns[index])),
        }
    }

    /// The same row data (versions, values, tombstones, open conflicts),
    /// whatever the sender's bases or the server's memory.
    pub fn same_data(&self, other: &RowState) -> bool {
        self.alive == other.alive
            && self.deleted == other.deleted
            && self.cells == other.cells
            && self.conflicts == other.conflicts
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
        visible(self.newest_write(), self.deleted.as_ref())
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

    /// Whether merging this state into a row of `width` columns that holds
    /// nothing yet ([`RowState::empty`]) changes that row and gives exactly
    /// this state, so that a replica may write it as it is. Every part is
    /// taken then, except cell memory (never merged) and open conflicts
    /// (kept only while their cell holds their version, and sorted): a
    /// state with either is merged the long way.
    pub fn merges_into_nothing_unchanged(&self, width: usize) -> bool {
        let carries_something =
            self.alive.is_some() || self.deleted.is_some() || self.cells.iter().any(Option::is_some);
        carries_something && self.cells.len() >= width && self.memory.is_empty() && self.conflicts.is_empty()
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

    /// Merges a pushed state under the manual strategy (server side); see
    /// [`ManualCase`] for how each pushed cell is classified and handled.
    /// The row's insert and delete versions merge as usual. `id` names a
    /// conflict from its column and the version of the write not applied.
    pub fn merge_manual(&mut self, incoming: &RowState, id: impl Fn(usize, &Version) -> String) -> MergeOutcome {
        let mut outcome = MergeOutcome::default();
        if self.cells.len() < incoming.cells.len() {
            self.cells.resize(incoming.cells.len(), None);
        }
        let dead = self.deleted.clone().max(incoming.deleted.clone());
        for (index, theirs) in incoming.cells.iter().enumerate() {
            let Some((value, version)) = theirs else { continue };
            let base = incoming.bases.get(&index);
            let case = self.manual_case(index, value, version, base, dead.as_ref());
            if case == ManualCase::Known {
                continue;
            }
            if base.is_some() {
                let writers = &mut self.memory.entry(index).or_default().writers;
                writers.retain(|v| v.site != version.site);
                writers.push(version.clone());
            }
            let Some((ours_value, ours)) = self.cells[index].clone() else {
                self.cells[index] = theirs.clone();
                outcome.taken.push(index);
                continue;
            };
            // Read before the clean-up below, which may drop the conflict
            // that names the kept value's writer.
            let kept = (case == ManualCase::Concurrent).then(|| self.kept_side(index, &ours_value, &ours));
            let mut closed = false;
            if matches!(case, ManualCase::SameValue | ManualCase::BlindEdit | ManualCase::Concurrent) {
                // A device's later write replaces its own earlier refused one.
                let before = self.conflicts.len();
                self.conflicts
                    .retain(|c| !(c.column == index && c.other.1.site == version.site && &c.other.1 < version));
                closed = self.conflicts.len() < before;
            }
            let hung = self.has_open_conflict(index, &ours);
            match case {
                ManualCase::Known => continue,
                ManualCase::Newest if version <= &ours => continue,
                ManualCase::Newest => self.replace(index, theirs.clone()),
                // Made with the open conflicts (if any) in view: it settles
                // them, as the cell moves past their version.
                ManualCase::Edit if version > &ours => self.replace(index, theirs.clone()),
                ManualCase::Edit => {
                    self.take_as_server(index, value, version, &ours);
                }
                // Replicas drop a conflict only when its cell moves past the
                // version it hangs on: closing one must move the cell.
                ManualCase::SameValue if !hung && closed && version < &ours => {
                    let at = server_version(&ours, version);
                    self.memory.entry(index).or_default().aliases.extend([ours.clone(), version.clone()]);
                    self.cells[index] = Some((ours_value, at));
                }
                ManualCase::SameValue if !hung => {
                    // Holders of either version have seen the value.
                    let (newer, older) = if version > &ours { (version, &ours) } else { (&ours, version) };
                    self.memory.entry(index).or_default().aliases.push(older.clone());
                    self.cells[index] = Some((ours_value, newer.clone()));
                }
                // Not made with the open conflicts in view: they stay open,
                // re-hung on a new version above both writes.
                ManualCase::SameValue => {
                    let at = server_version(&ours, version);
                    self.rehang(index, &ours, &at, None);
                    self.memory.entry(index).or_default().aliases.extend([ours.clone(), version.clone()]);
                    self.cells[index] = Some((ours_value, at));
                }
                ManualCase::BlindEdit => {
                    let at = self.take_as_server(index, value, version, &ours);
                    self.rehang(index, &ours, &at, Some((value.clone(), version.clone())));
                }
                ManualCase::Concurrent => {
                    // Keep ours, record theirs, and give the kept value a new
                    // version above both so that every replica takes it.
                    let at = server_version(&ours, version);
                    self.rehang(index, &ours, &at, None);
                    let base = base.cloned().flatten();
                    let base_value = self
                        .memory
                        .get(&index)
                        .and_then(|m| m.previous.as_ref())
                        .filter(|(_, v)| base.as_ref() == Some(v))
                        .map(|(value, _)| value.clone());
                    self.conflicts.push(CellConflict {
                        id: id(index, version),
                        column: index,
                        at: at.clone(),
                        base,
                        base_value,
                        kept: kept.expect("read for this case"),
                        other: (value.clone(), version.clone()),
                    });
                    self.memory.entry(index).or_default().aliases.push(ours);
                    self.cells[index] = Some((ours_value, at));
                }
            }
            outcome.taken.push(index);
        }
        outcome.changed = !outcome.taken.is_empty();
        outcome.changed |= self.merge_conflicts(&[]);
        self.merge_tombstones(incoming, &mut outcome);
        outcome
    }

    /// How [`RowState::merge_manual`] treats a pushed cell.
    fn manual_case(
        &self,
        index: usize,
        value: &Value,
        version: &Version,
        base: Option<&Option<Version>>,
        dead: Option<&Version>,
    ) -> ManualCase {
        let Some((ours_value, ours)) = &self.cells[index] else { return ManualCase::Newest };
        // A cell older than the row's newest delete belongs to a deleted
        // incarnation of the row: not a value anyone edits against.
        if dead.is_some_and(|dead| ours < dead) {
            return ManualCase::Newest;
        }
        let Some(base) = base else { return ManualCase::Newest };
        let aliases = self.aliases(index);
        let memory = self.memory.get(&index);
        let known = version == ours
            || memory.is_some_and(|m| m.writers.iter().any(|v| v.site == version.site && version <= v))
            || aliases.contains(version)
            || memory.and_then(|m| m.previous.as_ref()).is_some_and(|(_, v)| v == version)
            || self.conflicts.iter().any(|c| c.column == index && (&c.other.1 == version || &c.kept.1 == version));
        if known {
            return ManualCase::Known;
        }
        if base.as_ref() == Some(ours) {
            return ManualCase::Edit;
        }
        if value == ours_value {
            return ManualCase::SameValue;
        }
        // The value held here, under any of its versions, was seen by the
        // writer: it wrote over it, or wrote it itself earlier.
        let seen = std::iter::once(ours)
            .chain(aliases)
            .any(|held| base.as_ref() == Some(held) || (held.site == version.site && held < version));
        if !seen {
            return ManualCase::Concurrent;
        }
        if self.has_open_conflict(index, ours) {
            ManualCase::BlindEdit
        } else {
            ManualCase::Edit
        }
    }

    /// Whether a conflict on column `index` hangs on version `at`.
    fn has_open_conflict(&self, index: usize, at: &Version) -> bool {
        self.conflicts.iter().any(|c| c.column == index && &c.at == at)
    }

    /// Moves the conflicts on column `index` from version `from` to `to`,
    /// with a new kept side when the value changed.
    fn rehang(&mut self, index: usize, from: &Version, to: &Version, kept: Option<(Value, Version)>) {
        for conflict in self.conflicts.iter_mut().filter(|c| c.column == index && &c.at == from) {
            conflict.at = to.clone();
            if let Some(kept) = &kept {
                conflict.kept = kept.clone();
            }
        }
    }

    /// Takes `value` into the cell under a version of the server's own above
    /// both writes, remembering the write behind it; returns that version.
    fn take_as_server(&mut self, index: usize, value: &Value, version: &Version, ours: &Version) -> Version {
        let at = server_version(ours, version);
        self.replace(index, Some((value.clone(), at.clone())));
        self.memory.entry(index).or_default().aliases = vec![version.clone()];
        at
    }

    /// The value held in column `index` with the version of the write that
    /// made it (a version the server gave it says nothing about who wrote it).
    fn kept_side(&self, index: usize, value: &Value, ours: &Version) -> (Value, Version) {
        match self.conflicts.iter().find(|c| c.column == index && &c.at == ours) {
            Some(conflict) => conflict.kept.clone(),
            None if ours.site == SiteId::server() => {
                let written = self.aliases(index).iter().filter(|v| v.site != ours.site).max();
                (value.clone(), written.unwrap_or(ours).clone())
            }
            None => (value.clone(), ours.clone()),
        }
    }

    /// Puts a new value in a cell, remembering the one it replaced.
    fn replace(&mut self, index: usize, cell: Option<(Value, Version)>) {
        let old = std::mem::replace(&mut self.cells[index], cell);
        let memory = self.memory.entry(index).or_default();
        memory.previous = old;
        memory.aliases.clear();
    }

    fn aliases(&self, index: usize) -> &[Version] {
        self.memory.get(&index).map_or(&[], |m| m.aliases.as_slice())
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
        if incoming.alive > self.alive {
            self.alive.clone_from(&incoming.alive);
            outcome.changed = true;
        }
        if incoming.deleted > self.deleted {
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

/// The visibility rule: a row exists when its newest write is newer than
/// its newest delete (no write: never; no delete: always).
pub fn visible(newest_write: Option<&Version>, deleted: Option<&Version>) -> bool {
    newest_write.is_some() && newest_write > deleted
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
    fn a_state_said_to_merge_into_nothing_unchanged_does() {
        let conflict = CellConflict {
            id: "1/x".into(),
            column: 1,
            at: v(2, 1),
            base: None,
            base_value: None,
            kept: (Value::Text("kept".into()), v(2, 1)),
            other: (Value::Text("other".into()), v(1, 2)),
        };
        let whole = row(1, vec![None, text("555", 1, 9), text("a@x", 2, 1)]);
        let states = [
            whole.clone(),
            RowState { deleted: Some(v(3, 2)), ..whole.clone() },
            RowState { deleted: Some(v(3, 2)), ..RowState::empty(3) },
            RowState { bases: BTreeMap::from([(1, Some(v(0, 1)))]), ..whole.clone() },
            RowState { cells: vec![None, text("555", 1, 9)], ..whole.clone() },
            RowState { conflicts: vec![conflict.clone()], ..whole.clone() },
            RowState { conflicts: vec![CellConflict { at: v(1, 9), ..conflict }], ..whole.clone() },
            RowState { memory: BTreeMap::from([(1, CellMemory::default())]), ..whole.clone() },
            RowState::empty(3),
        ];
        let mut said = 0;
        for state in states {
            let mut merged = RowState::empty(3);
            let outcome = merged.merge_from(&state);
            if state.merges_into_nothing_unchanged(3) {
                said += 1;
                assert!(outcome.changed, "{state:?}");
                assert_eq!(merged, state);
            }
        }
        assert_eq!(said, 4, "whole rows, deleted ones and tombstones, with or without bases");
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
    fn the_writer_of_a_kept_value_edits_it_again_without_reopening_or_closing() {
        let base = row(1, vec![None, text("555", 1, 9)]);
        let laptop = edit(&base, 1, "666", 10, 1);
        let mut server = base.clone();
        server.merge_manual(&laptop, id);
        server.merge_manual(&edit(&base, 1, "777", 11, 2), id);
        // The laptop edits again before it received the conflict: its base is
        // its own write, which the server re-versioned. Taken, and the
        // phone's value stays in the open conflict, now against the new value.
        server.merge_manual(&edit(&laptop, 1, "668", 20, 1), id);
        let (value, at) = server.cells[1].clone().unwrap();
        assert_eq!(value, Value::Text("668".into()));
        assert_eq!(server.conflicts.len(), 1);
        assert_eq!(server.conflicts[0].at, at);
        assert_eq!(server.conflicts[0].kept, (Value::Text("668".into()), v(20, 1)));
        assert_eq!(server.conflicts[0].other.0, Value::Text("777".into()));

        // A resend of the phone's write (a retry after a lost answer) is known.
        let before = server.clone();
        assert!(!server.merge_manual(&edit(&base, 1, "777", 11, 2), id).changed);
        assert_eq!(server, before);
    }

    #[test]
    fn the_same_value_written_blind_keeps_an_open_conflict_open() {
        let base = row(1, vec![None, text("555", 1, 9)]);
        let mut server = base.clone();
        server.merge_manual(&edit(&base, 1, "666", 10, 1), id);
        server.merge_manual(&edit(&base, 1, "777", 11, 2), id);
        server.merge_manual(&edit(&base, 1, "666", 50, 3), id);
        assert_eq!(server.conflicts.len(), 1, "not settled by a device that never saw it");
        let (value, at) = server.cells[1].clone().unwrap();
        assert_eq!(value, Value::Text("666".into()));
        assert!(at > v(50, 3), "above the blind write, so its device takes the new version");
        assert_eq!(server.conflicts[0].at, at);
    }

    #[test]
    fn a_row_inserted_again_after_a_delete_does_not_meet_its_old_values() {
        let base = row(1, vec![None, text("555", 1, 9)]);
        let mut server = base.clone();
        server.merge_from(&RowState { deleted: Some(v(5, 9)), ..RowState::empty(2) });
        assert!(!server.is_visible());
        let mut again = RowState { alive: Some(v(8, 2)), ..RowState::empty(2) };
        again.cells[1] = text("fresh", 8, 2);
        again.bases.insert(1, None);
        server.merge_manual(&again, id);
        assert!(server.is_visible());
        assert!(server.conflicts.is_empty());
        assert_eq!(server.cells[1], text("fresh", 8, 2));
    }

    #[test]
    fn a_write_sent_again_after_the_cell_moved_on_is_known() {
        let base = row(1, vec![None, text("555", 1, 9)]);
        let laptop = edit(&base, 1, "666", 10, 1);
        let mut server = base.clone();
        server.merge_manual(&laptop, id);
        let phone = edit(&base, 1, "777", 11, 2);
        server.merge_manual(&phone, id);
        // Resolved on the laptop, then edited again there.
        let resolved = edit(&server, 1, "777", 20, 1);
        server.merge_manual(&resolved, id);
        server.merge_manual(&edit(&resolved, 1, "999", 30, 1), id);
        assert!(server.conflicts.is_empty());
        // The phone's first push is sent again (its answer was lost): known.
        let before = server.clone();
        assert!(!server.merge_manual(&phone, id).changed, "a settled conflict must not reopen");
        assert_eq!(server, before);
    }

    /// Regression (simulation seed 1940317800191002341): a device's later
    /// write of the kept value closed its own conflict on the server without
    /// moving the cell, so replicas that held the conflict kept it forever.
    #[test]
    fn a_conflict_closed_by_its_own_device_closes_on_every_replica() {
        let base = row(1, vec![None, text("555", 1, 9)]);
        let mut server = base.clone();
        server.merge_manual(&edit(&base, 1, "666", 10, 1), id);
        server.merge_manual(&edit(&base, 1, "777", 11, 2), id);
        // A third device writes the kept value blind: the conflict stays
        // open, re-hung on a server version above its write.
        server.merge_manual(&edit(&base, 1, "666", 30, 3), id);
        assert_eq!(server.conflicts.len(), 1);
        let replica_view = server.clone();
        // The refused device writes the kept value too, later than its refused
        // write but below the cell's version: its own conflict closes.
        assert!(server.merge_manual(&edit(&base, 1, "666", 20, 2), id).changed);
        assert!(server.conflicts.is_empty());
        let mut replica = replica_view;
        replica.merge_from(&server);
        assert!(replica.conflicts.is_empty(), "a replica kept a conflict the server closed");
        assert_eq!(replica.cells[1], server.cells[1]);
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
