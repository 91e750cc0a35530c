//! Writes made directly in the server's database (psql, another service, a
//! migration) on synced tables, turned into row states that replicas pull.
//!
//! Capture triggers on each synced table note *which row* changed in
//! `rowsync_direct` (table and key, nothing else); rowsync's own writes skip
//! them. A drain, under the position lock, reads each noted row as the
//! table holds it now and compares it with the row's stored state: the
//! columns that differ are what direct writes changed. Those get a version
//! from the server's clock, above every version the row holds (the receive
//! rule: the direct writer saw the row it overwrote), and a site of their
//! own, [`SiteId::direct`]; the merge then keeps replicas' edits of other
//! columns, as for any writer. Positions are handed out in the drain's
//! transaction, after every position a committed transaction already
//! holds, so commit order holds; entries are drained whole, whatever their
//! ids (a long transaction's low ids become visible late, and are simply
//! in a later drain).

use std::collections::HashMap;

use rowsync_core::change::decode_change;
use rowsync_core::horizon::Horizon;
use rowsync_core::schema::column_default;
use rowsync_core::RowState;
use rowsync_proto::{Cell, Hlc, RowChange, Schema, SiteId, Table, Value, Version};

use super::plan::{fold_batch, plan_writes, RowId};
use super::push::PushTransaction;
use super::{CheckedChange, StoreError};

/// Drains every noted direct write visible to `tx` into row states with
/// positions after `position`; returns the last position handed out.
pub(crate) async fn drain_direct<T: PushTransaction>(
    tx: &mut T,
    schema: &Schema,
    position: i64,
    now_ms: u64,
) -> Result<i64, StoreError> {
    let entries = tx.direct_entries().await?;
    if entries.is_empty() {
        return Ok(position);
    }
    let ids: Vec<i64> = entries.iter().map(|(id, ..)| *id).collect();
    // One change per row, in the order of the row's last entry, written
    // when its last direct write was (never later than now).
    let mut latest: HashMap<RowId, (usize, Vec<Value>, u64)> = HashMap::new();
    for (order, (_, table, pk, at)) in entries.iter().enumerate() {
        match noted_key(schema, table, pk) {
            Ok((index, key)) => {
                let id = (index, serde_json::to_string(&key).unwrap_or_default());
                latest.insert(id, (order, key, (*at).clamp(0, now_ms as i64) as u64));
            }
            Err(why) => tracing::warn!(table = %table, key = %pk, "a direct write cannot be synced: {why}"),
        }
    }
    let mut rows: Vec<(usize, usize, Vec<Value>, u64)> =
        latest.into_iter().map(|((index, _), (order, key, at))| (order, index, key, at)).collect();
    rows.sort_unstable_by_key(|(order, ..)| *order);
    // The rows as their tables hold them now, as deletes or whole rows.
    let mut changes = Vec::with_capacity(rows.len());
    let mut written_at = HashMap::with_capacity(rows.len());
    for (_, index, key, at) in rows {
        let table = &schema.tables[index];
        let current = tx.read_row(table, &key).await?;
        match decode_change(schema, noted_change(table, key, current.as_deref(), placeholder())) {
            Ok(change) => {
                written_at.insert((change.table, change.key_json.clone()), at);
                changes.push(CheckedChange { seq: 1, change, whole_row: true });
            }
            Err(why) => tracing::warn!(table = %table.name, "a direct write cannot be synced: {why}"),
        }
    }
    let (mut incoming, _) = fold_batch(&changes, 0);
    let mut stored = tx.load_states(schema, &incoming).await?;
    incoming.retain_mut(|row| {
        let held = stored.get(&row.id).map(|s| &s.state);
        direct_version(&schema.tables[row.id.0], &mut row.state, held, written_at[&row.id])
    });
    // Planning takes the stored rows out of `stored`: their owners first.
    let owners: HashMap<RowId, Option<String>> = stored.iter().map(|(id, s)| (id.clone(), s.owner.clone())).collect();
    let planned = plan_writes(schema, incoming, &mut stored, position, None, &Horizon::default())?;
    let mut writes = planned.writes;
    for write in &mut writes {
        write.echo = false;
        if let Some(owner) = schema.tables[write.id.0].owner {
            write.owner = Some(owner_of(&write.state, owner, owners.get(&write.id).cloned().flatten()));
        }
    }
    if !writes.is_empty() {
        tx.save_states(schema, &SiteId::direct(), &writes).await?;
    }
    tx.forget_direct(&ids).await?;
    Ok(writes.last().map_or(position, |w| w.position))
}

/// Drains in a transaction of its own (`tx`, just begun): under the
/// position lock, recording the new last position when there is one.
pub(crate) async fn drain_alone<T: PushTransaction>(
    mut tx: T,
    schema: &Schema,
    now_ms: u64,
) -> Result<Option<u64>, StoreError> {
    let position = tx.lock_position().await?;
    let last = drain_direct(&mut tx, schema, position, now_ms).await?;
    if last != position {
        tx.set_position(last).await?;
        tx.announce(last).await?;
    }
    tx.commit().await?;
    Ok((last != position).then_some(last as u64))
}

/// Whether a direct write to one of the rows `writes` wrote committed after
/// this transaction drained: its upsert would have overwritten it unseen.
/// Rows it wrote are locked until commit, so a later direct write waits
/// and applies on top; only one that committed in between is caught here.
pub(crate) async fn raced<T: PushTransaction>(
    tx: &mut T,
    schema: &Schema,
    writes: &[super::plan::RowWrite],
) -> Result<bool, StoreError> {
    let entries = tx.direct_entries().await?;
    if entries.is_empty() {
        return Ok(false);
    }
    let written: std::collections::HashSet<&RowId> = writes.iter().map(|w| &w.id).collect();
    Ok(entries.iter().any(|(_, table, pk, _)| {
        noted_key(schema, table, pk)
            .is_ok_and(|(index, key)| written.contains(&(index, serde_json::to_string(&key).unwrap_or_default())))
    }))
}

/// The table and key a capture trigger noted: the key as a JSON array of
/// the key columns' values (a blob as `{"blob": HEX}`).
fn noted_key(schema: &Schema, table: &str, pk: &str) -> Result<(usize, Vec<Value>), String> {
    let index = schema.table_index(table).ok_or_else(|| format!("unknown table {table}"))?;
    let parts: Vec<serde_json::Value> = serde_json::from_str(pk).map_err(|e| format!("key {pk}: {e}"))?;
    let key = parts
        .into_iter()
        .map(|part| match part {
            serde_json::Value::Object(object) => {
                let hex = object.get("blob").and_then(|h| h.as_str()).ok_or("a key part that is no value")?;
                decode_hex(hex).map(Value::Blob).ok_or("a blob key that is not hex")
            }
            other => serde_json::from_value(other).map_err(|_| "a key part that is no value"),
        })
        .collect::<Result<_, _>>()?;
    Ok((index, key))
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok()).collect()
}

/// A version to be replaced by [`direct_version`] once the stored state is
/// known.
fn placeholder() -> Version {
    Version { hlc: Hlc(0), site: SiteId::direct() }
}

/// The change a direct write made to a row, as a wire change at `version`:
/// the whole current row (`current`), or a delete when the row is gone.
fn noted_change(table: &Table, key: Vec<Value>, current: Option<&[Value]>, version: Version) -> RowChange {
    let Some(values) = current else {
        return RowChange {
            table: table.name.clone(),
            key,
            alive: None,
            version: None,
            deleted: Some(version),
            cells: Vec::new(),
            conflicts: Vec::new(),
        };
    };
    let cells = (0..table.columns.len())
        .filter(|c| !table.primary_key.contains(c))
        .map(|c| Cell {
            column: table.columns[c].name.clone(),
            value: values[c].clone(),
            version: None,
            base: None,
            memory: None,
        })
        .collect();
    RowChange {
        table: table.name.clone(),
        key,
        alive: Some(version.clone()),
        version: Some(version),
        deleted: None,
        cells,
        conflicts: Vec::new(),
    }
}

/// Gives a direct write's state its version: the time it was written
/// (`at_ms`), or just above the newest version the row holds when that is
/// later (the writer saw the row it overwrote). Returns
/// false when there is nothing to publish (the row is as stored, or a
/// delete of a row nobody holds).
fn direct_version(table: &Table, state: &mut RowState, held: Option<&RowState>, at_ms: u64) -> bool {
    let visible_before = held.is_some_and(RowState::is_visible);
    if state.deleted.is_some() && !visible_before {
        return false;
    }
    if state.deleted.is_none() {
        if let Some(held) = held.filter(|h| h.is_visible()) {
            let same = state.cells.iter().zip(&held.cells).enumerate().all(|(index, cell)| match cell {
                (Some((sent, _)), Some((had, _))) => sent == had,
                // No write known: the column holds its default.
                (Some((sent, _)), None) => *sent == column_default(&table.columns[index]),
                (None, _) => true,
            });
            if same {
                return false;
            }
            // An update: the row lives on, only its columns change.
            state.alive = None;
        }
    }
    let above = held.and_then(|h| h.versions().map(|v| v.hlc.0).max()).map_or(0, |newest| newest + 1);
    let version = Version { hlc: Hlc(Hlc::from_millis(at_ms).0.max(above)), site: SiteId::direct() };
    for (_, v) in state.cells.iter_mut().flatten() {
        *v = version.clone();
    }
    for v in [&mut state.alive, &mut state.deleted].into_iter().flatten() {
        *v = version.clone();
    }
    true
}

/// The owner of a private row written directly: the user its owner column
/// names, or nobody (`""`) when it names no valid user. A deleted row keeps
/// the owner it had.
fn owner_of(state: &RowState, column: usize, had: Option<String>) -> String {
    if !state.is_visible() {
        return had.unwrap_or_default();
    }
    match state.cells[column].as_ref() {
        Some((Value::Text(user), _)) if crate::auth::check_user(user).is_ok() => user.clone(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use rowsync_core::parse_schema;

    use super::*;

    fn state_of(table: &Table, key: &str, values: Option<&[Value]>) -> RowState {
        let wire = noted_change(table, vec![Value::Text(key.into())], values, placeholder());
        rowsync_core::change::decode_state(table, wire).unwrap()
    }

    #[test]
    fn a_direct_update_gets_a_version_above_what_the_row_holds_and_keeps_the_row_alive() {
        let schema = parse_schema("CREATE TABLE t (id TEXT PRIMARY KEY, name TEXT);").unwrap();
        let table = &schema.tables[0];
        let row = |name: &str| [Value::Text("k".into()), Value::Text(name.into())];
        let mut held = state_of(table, "k", Some(&row("old")));
        // A replica's version from a clock running ahead of the server's.
        let ahead = Version { hlc: Hlc::from_millis(5_000), site: SiteId::from_bytes([9; 16]) };
        held.cells[1] = Some((Value::Text("old".into()), ahead.clone()));
        held.alive = Some(ahead.clone());

        let mut same = state_of(table, "k", Some(&row("old")));
        assert!(!direct_version(table, &mut same, Some(&held), 1_000), "an unchanged row publishes nothing");
        let mut changed = state_of(table, "k", Some(&row("new")));
        assert!(direct_version(table, &mut changed, Some(&held), 1_000));
        assert!(changed.alive.is_none(), "an update, not an insert");
        assert!(changed.cells[1].as_ref().unwrap().1 > ahead, "above what the row holds");

        let mut gone = state_of(table, "k", None);
        assert!(direct_version(table, &mut gone, Some(&held), 9_000));
        assert_eq!(gone.deleted.as_ref().unwrap().hlc, Hlc::from_millis(9_000));
        let mut never = state_of(table, "k", None);
        assert!(!direct_version(table, &mut never, None, 9_000), "a delete of a row nobody holds");
    }

    #[test]
    fn noted_keys_read_back_to_the_stored_form() {
        let schema =
            parse_schema("CREATE TABLE t (id TEXT PRIMARY KEY, v TEXT); CREATE TABLE b (k BLOB PRIMARY KEY, v TEXT);")
                .unwrap();
        assert_eq!(noted_key(&schema, "t", "[\"k1\"]").unwrap(), (0, vec![Value::Text("k1".into())]));
        assert_eq!(noted_key(&schema, "b", "[{\"blob\":\"00FF\"}]").unwrap(), (1, vec![Value::Blob(vec![0, 255])]));
        assert!(noted_key(&schema, "nope", "[1]").is_err());
        assert!(noted_key(&schema, "t", "not json").is_err());
    }
}
