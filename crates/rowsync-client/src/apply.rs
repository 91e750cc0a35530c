//! Applying a pulled page: merge each incoming row state with the local one,
//! write the result, and move the cursor, all in one transaction.
//!
//! Local writes not yet stamped are stamped first (same transaction), so the
//! merge sees every pending local edit with its version: a pulled change for
//! a row with local edits is merged cell by cell, never written over them,
//! and the outbox entries survive to be pushed. The capture triggers fire for
//! the rows written here too; those entries (every id above the outbox's
//! newest before the page, since no one else can write inside this
//! transaction) are deleted before commit: no pulled change echoes into the
//! outbox.

use rowsync_core::change::decode_change;
use rowsync_core::ddl::{key_condition, Dialect};
use rowsync_proto::{PullResponse, Value};
use rusqlite::types::Value as SqlValue;
use rusqlite::{Transaction, TransactionBehavior};

use crate::error::ClientError;
use crate::outbox::STAMP_CHUNK;
use crate::replica::{key, meta_set, Replica};
use crate::stamp::{load_clock, load_clocks, save_clock, save_clocks, stamp_pending, Clocks};
use crate::values::{stored_key, to_sql};

/// Applies one page and stores its cursor. Returns how many rows changed locally.
pub fn apply_page(replica: &Replica, page: &PullResponse) -> Result<usize, ClientError> {
    let tx = Transaction::new_unchecked(&replica.conn, TransactionBehavior::Immediate)?;
    while stamp_pending(replica, &tx, STAMP_CHUNK)? > 0 {}
    let newest_before: i64 = tx.query_row("SELECT coalesce(max(id), 0) FROM _rowsync_outbox", [], |row| row.get(0))?;
    let mut clock = load_clock(&tx)?;
    let mut changed_rows = 0;
    for change in &page.changes {
        let decoded = decode_change(&replica.schema, change)
            .map_err(|e| ClientError::Protocol(format!("pulled change does not fit the schema: {e}")))?;
        for version in decoded.state.versions() {
            clock.observe(version.hlc);
        }
        let table = &replica.schema.tables[decoded.table];
        let table_id = replica.table_ids[decoded.table];
        let local_key = stored_key(&tx, &decoded.key)?;
        let mut state = load_clocks(&tx, table_id, &local_key)?.unwrap_or_default().to_state(table.columns.len());
        let was_visible = state.is_visible();
        let outcome = state.merge_from(&decoded.state);
        if !outcome.changed {
            continue;
        }
        let key_params: Vec<SqlValue> = decoded.key.iter().map(to_sql).collect();
        match (was_visible, state.is_visible()) {
            (true, true) if !outcome.taken.is_empty() => {
                let sets: Vec<String> =
                    outcome.taken.iter().map(|&i| format!("\"{}\" = ?", table.columns[i].name)).collect();
                let sql = format!(
                    "UPDATE \"{}\" SET {} WHERE {}",
                    table.name,
                    sets.join(", "),
                    key_condition(table, Dialect::Sqlite, outcome.taken.len() + 1)
                );
                let mut params: Vec<SqlValue> = outcome
                    .taken
                    .iter()
                    .map(|&i| state.cells[i].as_ref().map(|(v, _)| to_sql(v)).unwrap_or(SqlValue::Null))
                    .collect();
                params.extend(key_params);
                tx.prepare_cached(&sql)?.execute(rusqlite::params_from_iter(params))?;
            }
            (false, true) => {
                let mut key = decoded.key.iter();
                let params: Vec<SqlValue> = (0..table.columns.len())
                    .map(|i| {
                        if table.is_key_column(i) {
                            key.next().map(to_sql).unwrap_or(SqlValue::Null)
                        } else {
                            state.cells[i].as_ref().map(|(v, _)| to_sql(v)).unwrap_or(to_sql(&Value::Null))
                        }
                    })
                    .collect();
                tx.prepare_cached(&replica.row_sql[decoded.table].upsert)?
                    .execute(rusqlite::params_from_iter(params))?;
            }
            (true, false) => {
                tx.prepare_cached(&replica.row_sql[decoded.table].delete)?
                    .execute(rusqlite::params_from_iter(key_params))?;
            }
            _ => {}
        }
        save_clocks(&tx, table_id, &local_key, &Clocks::from_state(&state))?;
        changed_rows += 1;
    }
    save_clock(&tx, &clock)?;
    meta_set(&tx, key::CURSOR, page.cursor as i64)?;
    tx.execute("DELETE FROM _rowsync_outbox WHERE id > ?", [newest_before])?;
    tx.commit()?;
    Ok(changed_rows)
}
