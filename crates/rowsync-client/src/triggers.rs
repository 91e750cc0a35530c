//! The capture triggers in a replica file: whether a table still carries
//! exactly rowsync's, and installing them again.
//!
//! Kept apart from the decisions that use them: the audit (which must tell
//! triggers an app dropped from ones an earlier rowsync made), and a
//! schema that grew (an altered table needs its update trigger to watch
//! the new columns).

use std::collections::HashSet;

use rowsync_core::capture::{capture_triggers, stored_capture_triggers, trigger_names, TriggerForm};
use rowsync_proto::Table;
use rusqlite::{Connection, OptionalExtension};

use crate::error::ClientError;

/// What a table carries of rowsync's capture triggers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Triggers {
    /// Exactly today's four.
    Intact,
    /// The four an earlier rowsync installed: they captured every write
    /// (where they could not, the app's write failed), so replacing them is
    /// all there is to do.
    Outdated,
    /// Missing or altered: writes may have escaped them.
    Missing,
}

/// The capture triggers `table` (registered as `table_id`) carries, for
/// the `form` its key needs.
pub(crate) fn triggers_of(
    conn: &Connection,
    table: &Table,
    table_id: i64,
    form: TriggerForm,
) -> Result<Triggers, ClientError> {
    let mut found = conn.prepare_cached("SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name = ?")?;
    let mut stored = Vec::new();
    for name in trigger_names(table) {
        stored.push(found.query_row([name], |row| row.get::<_, String>(0)).optional()?);
    }
    let matches = |form| {
        stored_capture_triggers(table, table_id, form)
            .iter()
            .zip(&stored)
            .all(|(want, have)| have.as_ref() == Some(want))
    };
    Ok(if matches(form) {
        Triggers::Intact
    } else if matches(TriggerForm::Legacy) {
        Triggers::Outdated
    } else {
        Triggers::Missing
    })
}

/// Whether any of `tables` carries a trigger of the app's own (one that is
/// not a rowsync capture trigger).
pub(crate) fn apps_own_triggers(conn: &Connection, tables: &[Table]) -> Result<bool, ClientError> {
    let ours: HashSet<String> = tables.iter().flat_map(trigger_names).collect();
    let mut triggers = conn.prepare_cached("SELECT name, tbl_name FROM sqlite_master WHERE type = 'trigger'")?;
    let mut rows = triggers.query([])?;
    while let Some(row) = rows.next()? {
        let (name, on): (String, String) = (row.get(0)?, row.get(1)?);
        if !ours.contains(&name) && tables.iter().any(|table| table.name.eq_ignore_ascii_case(&on)) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Drops whatever capture triggers `table` has.
pub(crate) fn drop_triggers(conn: &Connection, table: &Table) -> Result<(), ClientError> {
    for name in trigger_names(table) {
        conn.execute_batch(&format!("DROP TRIGGER IF EXISTS \"{name}\""))?;
    }
    Ok(())
}

/// Installs today's capture triggers on `table` (after [`drop_triggers`],
/// or on a table that has none).
pub(crate) fn install_triggers(
    conn: &Connection,
    table: &Table,
    table_id: i64,
    form: TriggerForm,
) -> Result<(), ClientError> {
    for trigger in capture_triggers(table, table_id, form) {
        conn.execute_batch(&trigger)?;
    }
    Ok(())
}
