//! A replica's bookkeeping of one row: the version of each of its cells,
//! of its creation and of its deletion, and which local writes are still
//! waiting for the server, as `_rowsync_rows.clocks` stores them (JSON).
//!
//! Recording a local write ([`Clocks::record_write`]) and reading the row's
//! visibility are pure; the client loads and saves these values around them.

use std::collections::{BTreeMap, HashMap};

use rowsync_proto::{ConflictStrategy, Hlc, SiteId, Table, Value, Version};
use serde::{Deserialize, Serialize};

use crate::capture::{changed_columns, OP_DELETE, OP_INSERT};
use crate::merge::RowState;

/// The versions of one row as `_rowsync_rows.clocks` stores them (see
/// `StoredClocks` for the stored form, [`Clocks::to_json`] for its text).
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Clocks {
    pub alive: Option<Version>,
    pub deleted: Option<Version>,
    /// Indexed like the table's columns.
    pub cells: Vec<Option<Version>>,
    /// Manual tables only: the columns written here and not yet
    /// acknowledged by the server, each with the version it was written over
    /// (what the server compares to tell an edit from a concurrent one).
    pub pending: BTreeMap<usize, Pending>,
    /// Local writes displaced before they could be pushed, pushed in their
    /// place. Manual tables: pending writes a newer pulled value displaced
    /// from the row, so that the server can record the conflict. Any table:
    /// the whole row, when a pulled delete removed it while it had writes
    /// not pushed yet (so those writes still reach the server).
    pub held: BTreeMap<usize, (Value, Version)>,
}

/// `_rowsync_rows.clocks` as JSON: written for every row a replica holds,
/// so it is kept small. The row's most common version is written once
/// (`v`); `a` and each cell of `c` are `1` when they carry that version,
/// `null` when they carry none, and otherwise a version of their own. A
/// version is the text `HLC:SITE`. (Files made before this form write every
/// version as an object `{"hlc": …, "site": …}`; both are read.)
#[derive(Debug, Default, Serialize, Deserialize)]
struct StoredClocks {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    v: Option<Slot>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    a: Option<Slot>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    d: Option<Slot>,
    #[serde(default)]
    c: Vec<Option<Slot>>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    p: BTreeMap<usize, Pending>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    h: BTreeMap<usize, (Value, Version)>,
}

/// One version in [`StoredClocks`].
#[derive(Debug, Clone, PartialEq)]
enum Slot {
    /// The row's most common version (`v`).
    Common,
    Own(Version),
}

impl Serialize for Slot {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Slot::Common => serializer.serialize_u8(1),
            Slot::Own(version) => serializer.collect_str(&format_args!("{}:{}", version.hlc.0, version.site)),
        }
    }
}

impl<'de> Deserialize<'de> for Slot {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Slot, D::Error> {
        struct Visit;
        impl<'de> serde::de::Visitor<'de> for Visit {
            type Value = Slot;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("1, \"HLC:SITE\" or a version object")
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Slot, E> {
                match n {
                    1 => Ok(Slot::Common),
                    _ => Err(E::custom(format!("unknown version slot {n}"))),
                }
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Slot, E> {
                let (hlc, site) = text.split_once(':').ok_or_else(|| E::custom("a version is HLC:SITE"))?;
                let hlc = hlc.parse().map_err(|_| E::custom("a version's HLC is a number"))?;
                let site: SiteId = site.parse().map_err(E::custom)?;
                Ok(Slot::Own(Version { hlc: Hlc(hlc), site }))
            }
            fn visit_map<M: serde::de::MapAccess<'de>>(self, map: M) -> Result<Slot, M::Error> {
                Version::deserialize(serde::de::value::MapAccessDeserializer::new(map)).map(Slot::Own)
            }
        }
        deserializer.deserialize_any(Visit)
    }
}

impl Clocks {
    /// The text `_rowsync_rows.clocks` holds: the stored form as JSON.
    pub fn to_json(&self) -> String {
        // Plain fields and integer-keyed maps: nothing JSON cannot hold.
        serde_json::to_string(&self.to_stored()).expect("stored clocks are plain JSON")
    }

    /// Reads [`Clocks::to_json`]'s text (or the older form, see
    /// `StoredClocks`).
    pub fn from_json(json: &str) -> Result<Clocks, String> {
        Clocks::from_stored(serde_json::from_str(json).map_err(|e| e.to_string())?)
    }

    /// The stored form (see [`StoredClocks`]).
    fn to_stored(&self) -> StoredClocks {
        let mut counts: Vec<(&Version, usize)> = Vec::new();
        for version in self.cells.iter().flatten().chain(self.alive.as_ref()) {
            match counts.iter_mut().find(|(v, _)| *v == version) {
                Some((_, n)) => *n += 1,
                None => counts.push((version, 1)),
            }
        }
        // The most common; on a tie, the first seen.
        let common = counts.iter().fold(None, |best: Option<(&Version, usize)>, &(v, n)| match best {
            Some((_, m)) if m >= n => best,
            _ => Some((v, n)),
        });
        let common = common.filter(|(_, n)| *n > 1).map(|(v, _)| v.clone());
        let slot = |version: &Option<Version>| {
            version.as_ref().map(|v| if Some(v) == common.as_ref() { Slot::Common } else { Slot::Own(v.clone()) })
        };
        StoredClocks {
            a: slot(&self.alive),
            d: self.deleted.clone().map(Slot::Own),
            c: self.cells.iter().map(slot).collect(),
            v: common.map(Slot::Own),
            p: self.pending.clone(),
            h: self.held.clone(),
        }
    }

    /// Reads the stored form.
    fn from_stored(stored: StoredClocks) -> Result<Clocks, String> {
        let common = match stored.v {
            Some(Slot::Own(v)) => Some(v),
            Some(Slot::Common) => return Err("the common version refers to itself".into()),
            None => None,
        };
        let resolve = |slot: Option<Slot>| -> Result<Option<Version>, String> {
            match slot {
                None => Ok(None),
                Some(Slot::Own(v)) => Ok(Some(v)),
                Some(Slot::Common) => common.clone().map(Some).ok_or_else(|| "no common version".to_string()),
            }
        };
        Ok(Clocks {
            alive: resolve(stored.a)?,
            deleted: resolve(stored.d)?,
            cells: stored.c.into_iter().map(resolve).collect::<Result<_, _>>()?,
            pending: stored.p,
            held: stored.h,
        })
    }
}

/// A local write of a manual table's column not yet acknowledged.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pending {
    /// The version of the cell the first such write was made over.
    #[serde(rename = "b")]
    pub base: Option<Version>,
    /// The site sequence number of the newest such write: once the server
    /// acknowledges it, the column is no longer pending. (A batch may carry
    /// a value written after its last entry, read at push time; that does
    /// not settle it.)
    #[serde(rename = "s")]
    pub seq: i64,
}

impl Clocks {
    /// A row state with these versions and placeholder values; merging only
    /// looks at versions.
    pub fn to_state(&self, width: usize) -> RowState {
        let mut cells: Vec<Option<(Value, Version)>> =
            self.cells.iter().map(|c| c.as_ref().map(|v| (Value::Null, v.clone()))).collect();
        cells.resize(width, None);
        RowState { alive: self.alive.clone(), deleted: self.deleted.clone(), cells, ..RowState::default() }
    }

    /// Whether the row these versions describe exists (the rule of
    /// `RowState::is_visible`, without building a state).
    pub fn is_visible(&self) -> bool {
        let newest = self.cells.iter().flatten().chain(self.alive.as_ref()).max();
        crate::merge::visible(newest, self.deleted.as_ref())
    }

    /// The versions of a state. A replica forgets the cell versions of a row
    /// it cannot see: it holds no values for them, and the server sends the
    /// whole row again if the row ever comes back.
    pub fn from_state(state: &RowState) -> Clocks {
        let visible = state.is_visible();
        Clocks {
            alive: state.alive.clone(),
            deleted: state.deleted.clone(),
            cells: if visible {
                state.cells.iter().map(|c| c.as_ref().map(|(_, v)| v.clone())).collect()
            } else {
                Vec::new()
            },
            ..Clocks::default()
        }
    }

    /// Records the versions of one local write (`op` and change `bits` as
    /// the capture triggers record them, `seq` its site sequence number);
    /// returns the columns it wrote (every column for a delete).
    pub fn record_write(&mut self, table: &Table, op: i64, bits: i64, version: Version, seq: i64) -> Vec<usize> {
        let clocks = self;
        let width = table.columns.len();
        let was_visible = clocks.is_visible();
        if op == OP_DELETE {
            clocks.deleted = Some(version);
            clocks.cells.clear();
            clocks.pending.clear();
            clocks.held.clear();
            return (0..width).collect();
        }
        clocks.cells.resize(width, None);
        if !was_visible && table.conflict != ConflictStrategy::Manual {
            // Writes held when a pull deleted the row: this write replaces the
            // whole row.
            clocks.held.clear();
        }
        // An update of a row rowsync has no versions for (or that it believed
        // deleted) is treated as writing the whole row.
        // Under the row strategy every write writes the whole row.
        let whole_row = op == OP_INSERT || !was_visible || table.conflict == ConflictStrategy::Row;
        let columns = if whole_row { changed_columns(table, OP_INSERT, -1) } else { changed_columns(table, op, bits) };
        if op == OP_INSERT || !was_visible {
            clocks.alive = Some(version.clone());
        }
        let manual = table.conflict == ConflictStrategy::Manual;
        for &index in &columns {
            let over = clocks.cells[index].replace(version.clone());
            if manual {
                // The first write since the last push holds the base; a write over
                // a pulled value that displaced a held one is made with the pulled
                // value in view, and replaces the held write.
                if clocks.held.remove(&index).is_some() {
                    clocks.pending.insert(index, Pending { base: over, seq });
                } else {
                    clocks.pending.entry(index).or_insert(Pending { base: over, seq }).seq = seq;
                }
            }
        }
        columns
    }
}

/// Where a pulled state leaves a row the replica holds versions for, when
/// that can be told from versions alone (see [`Clocks::landing`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Landing {
    /// Merging the pulled state changes nothing.
    Unchanged,
    /// The row takes the pulled state's values in the `taken` columns,
    /// keeps its own in the others, and has these versions.
    Whole { clocks: Clocks, taken: Vec<usize>, was_visible: bool, visible: bool },
}

impl Clocks {
    /// What merging `pulled` into the row these versions describe gives,
    /// when that can be told from versions alone: which columns take the
    /// pulled values (the row keeps its own in the others), and the merged
    /// versions. `None` when the row must be merged with more in view: a
    /// manual table, writes held or pending, a pulled state carrying
    /// conflicts or memory, or a row that comes back without every value
    /// coming from the pulled state.
    ///
    /// The rows of an incremental pull are nearly all such rows, so a
    /// replica can write them in bulk (the client's `stage` module).
    pub fn landing(&self, table: &Table, pulled: &RowState) -> Option<Landing> {
        let width = table.columns.len();
        let plain = table.conflict != ConflictStrategy::Manual && self.pending.is_empty() && self.held.is_empty();
        if !plain || !pulled.memory.is_empty() || !pulled.conflicts.is_empty() || pulled.cells.len() < width {
            return None;
        }
        let mut state = self.to_state(width);
        let was_visible = state.is_visible();
        let outcome = state.merge_from(pulled);
        if !outcome.changed {
            return Some(Landing::Unchanged);
        }
        let visible = state.is_visible();
        if visible && !was_visible {
            // A row that comes back is written whole, from the pulled state.
            let version = |state: &RowState, index: usize| state.cells[index].as_ref().map(|(_, v)| v.clone());
            let pulled_values =
                (0..width).filter(|&i| !table.is_key_column(i)).all(|i| version(&state, i) == version(pulled, i));
            if !pulled_values {
                return None;
            }
        }
        Some(Landing::Whole { clocks: Clocks::from_state(&state), taken: outcome.taken, was_visible, visible })
    }
}

/// Milliseconds since the Unix epoch of a `julianday()` reading.
pub fn julian_to_millis(julian: f64) -> u64 {
    ((julian - 2_440_587.5) * 86_400_000.0).round().max(0.0) as u64
}

/// Changes to the number of rows rowsync believes each table holds (kept in
/// `_rowsync_tables.live`, compared with the table's own count to notice
/// deletes no trigger saw; see the client's `audit`).
#[derive(Debug, Default)]
pub struct LiveRows(HashMap<i64, i64>);

impl LiveRows {
    /// A row of table `table_id` went from visible or not to visible or not.
    pub fn moved(&mut self, table_id: i64, was: bool, is: bool) {
        if was != is {
            *self.0.entry(table_id).or_default() += if is { 1 } else { -1 };
        }
    }

    /// `count` rows of table `table_id` became visible (or, negative, went).
    pub fn add(&mut self, table_id: i64, count: i64) {
        *self.0.entry(table_id).or_default() += count;
    }

    /// The non-zero changes, by table id.
    pub fn deltas(&self) -> impl Iterator<Item = (i64, i64)> + '_ {
        self.0.iter().map(|(&table, &delta)| (table, delta)).filter(|(_, delta)| *delta != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn julian_days_convert_to_unix_millis() {
        assert_eq!(julian_to_millis(2_440_587.5), 0);
        assert_eq!(julian_to_millis(2_440_588.5), 86_400_000);
    }

    fn version(hlc: u64, site: u8) -> Version {
        Version { hlc: Hlc(hlc), site: SiteId::from_bytes([site; 16]) }
    }

    fn stored(clocks: &Clocks) -> String {
        clocks.to_json()
    }

    fn read(json: &str) -> Clocks {
        Clocks::from_json(json).unwrap()
    }

    #[test]
    fn the_stored_form_writes_the_common_version_once_and_reads_back_the_same() {
        let (v, w) = (version(7 << 16, 1), version(9 << 16, 2));
        let whole =
            Clocks { alive: Some(v.clone()), cells: vec![None, Some(v.clone()), Some(v.clone())], ..Clocks::default() };
        let text = stored(&whole);
        assert_eq!(text, format!("{{\"v\":\"{}:{}\",\"a\":1,\"c\":[null,1,1]}}", v.hlc.0, v.site));
        assert_eq!(read(&text), whole);
        let mixed = Clocks {
            alive: Some(v.clone()),
            deleted: Some(w.clone()),
            cells: vec![None, Some(w.clone()), Some(v.clone()), Some(v.clone())],
            pending: BTreeMap::from([(1, Pending { base: Some(v.clone()), seq: 3 })]),
            held: BTreeMap::from([(2, (Value::Text("x".into()), w.clone()))]),
        };
        assert_eq!(read(&stored(&mixed)), mixed);
        let lone = Clocks { deleted: Some(w.clone()), ..Clocks::default() };
        assert_eq!(read(&stored(&lone)), lone);
        assert_eq!(read(&stored(&Clocks::default())), Clocks::default());
    }

    #[test]
    fn clocks_stored_by_earlier_versions_are_read() {
        let old = r#"{"a":{"hlc":458752,"site":"01010101010101010101010101010101"},"c":[null,{"hlc":458752,"site":"01010101010101010101010101010101"}],"p":{"1":{"b":null,"s":4}}}"#;
        let clocks = read(old);
        assert_eq!(clocks.alive, Some(version(7 << 16, 1)));
        assert_eq!(clocks.cells, vec![None, Some(version(7 << 16, 1))]);
        assert_eq!(clocks.pending[&1], Pending { base: None, seq: 4 });
    }

    /// Every pair of small row states (two cells, an insert and a delete,
    /// each without a version or with one of three): where
    /// [`Clocks::landing`] answers, it answers what the merge with the
    /// row's values in view gives (the pulled values in the columns taken,
    /// the row's own in the others, the merged versions), and it answers
    /// whenever the pulled state is at least as new as the row in every
    /// part.
    #[test]
    fn a_landing_is_what_the_merge_with_values_in_view_gives() {
        let schema = crate::schema::parse_schema("CREATE TABLE t (id TEXT PRIMARY KEY, a TEXT, b TEXT);").unwrap();
        let table = &schema.tables[0];
        let key = [Value::Text("k".into())];
        let at = |n: usize| (n > 0).then(|| version(n as u64, 1));
        // A cell's value follows from its version, as writes guarantee.
        let cell = |n: usize| at(n).map(|v| (Value::Text(format!("written at {n}")), v));
        let state = |c: usize| RowState {
            alive: at(c % 4),
            deleted: at(c / 4 % 4),
            cells: vec![None, cell(c / 16 % 4), cell(c / 64 % 4)],
            ..RowState::default()
        };
        let newer_or_same = |pulled: Option<Version>, local: Option<Version>| local.is_none() || pulled >= local;
        let (mut answered, mut total) = (0, 0);
        for local in (0..256).map(state) {
            // What the replica holds: versions, and values where the row is.
            let clocks = Clocks::from_state(&local);
            let mut held = local.clone();
            if !local.is_visible() {
                held.cells = vec![None; 3];
            }
            for pulled in (0..256).map(state) {
                total += 1;
                let mut merged = held.clone();
                let outcome = merged.merge_from(&pulled);
                let dominates = newer_or_same(pulled.alive.clone(), clocks.alive.clone())
                    && newer_or_same(pulled.deleted.clone(), clocks.deleted.clone())
                    && (1..3).all(|i| {
                        let v = |s: &RowState| s.cells[i].as_ref().map(|(_, v)| v.clone());
                        newer_or_same(v(&pulled), v(&held)) && (v(&pulled).is_some() || !held.is_visible())
                    });
                let context = format!("local {local:?}, pulled {pulled:?}");
                match clocks.landing(table, &pulled) {
                    None => assert!(!dominates, "a pulled state as new as the row in every part: {context}"),
                    Some(Landing::Unchanged) => assert!(!outcome.changed, "{context}"),
                    Some(Landing::Whole { clocks: landed, taken, was_visible, visible }) => {
                        answered += 1;
                        assert!(outcome.changed, "{context}");
                        assert_eq!((was_visible, visible), (held.is_visible(), merged.is_visible()), "{context}");
                        assert_eq!(landed, Clocks::from_state(&merged), "{context}");
                        if visible {
                            // What a replica writes: pulled values where taken, its own elsewhere.
                            let (theirs, ours) = (pulled.row_values(table, &key), held.row_values(table, &key));
                            let written: Vec<Value> = (0..3)
                                .map(|i| if taken.contains(&i) || !was_visible { &theirs[i] } else { &ours[i] }.clone())
                                .collect();
                            assert_eq!(written, merged.row_values(table, &key), "{context}");
                        }
                    }
                }
            }
        }
        assert!(answered > total / 4, "only {answered} of {total} pairs landed whole");
    }
}
