//! SQL text of a replica's metadata tables and capture triggers.
//!
//! Capture runs inside the application's own SQLite library, which may be
//! years older than ours and has no rowsync functions registered. So the
//! triggers are plain SQL that SQLite libraries of a decade ago already run
//! (`julianday('now')`, `IS NOT`, bit operators, `json_array` only for
//! composite keys), and they are as narrow as possible: each write appends one
//! small outbox row (table id, key, operation, time, changed-columns bitmask)
//! and reads nothing. Values are read from the table
//! itself when the change is pushed, and versions are assigned then too, from
//! the recorded time (see `rowsync-client`'s stamping).
//!
//! Rowsync's own writes, when it applies pulled changes, must not echo
//! into the outbox. Rather than make every application write pay for a
//! "who is writing?" check (measured at 5-15% of capture throughput),
//! rowsync turns triggers off on its own connection while it applies a
//! page, where the synced tables carry no triggers but these; where the
//! app has triggers of its own on them (which must see pulled rows), every
//! trigger fires and rowsync deletes the entries its writes produced
//! before that transaction commits (see `rowsync-client`'s apply).

use rowsync_proto::Table;

/// Outbox operation codes written by the triggers.
pub const OP_INSERT: i64 = 1;
pub const OP_UPDATE: i64 = 2;
pub const OP_DELETE: i64 = 3;
/// Written by rowsync, never by a trigger: an entry set aside after the
/// server refused it. It carries nothing and stays in place until the next
/// acknowledgement removes it, so that outbox ids (and the site sequence
/// numbers made from them) are never handed out twice.
pub const OP_SET_ASIDE: i64 = 0;

/// The bit that stands for "some column at or beyond this index changed",
/// for tables wider than an integer's bits.
pub const OVERFLOW_BIT: usize = 62;

/// The replica's metadata tables. Safe to run again on an initialized file.
pub const METADATA_SQL: &str = "
CREATE TABLE IF NOT EXISTS _rowsync_meta (
  key TEXT PRIMARY KEY,
  value
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS _rowsync_tables (
  id INTEGER PRIMARY KEY,
  name TEXT NOT NULL UNIQUE,
  live INTEGER,
  audit INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS _rowsync_outbox (
  id INTEGER PRIMARY KEY,
  tbl INTEGER NOT NULL,
  pk NOT NULL,
  op INTEGER NOT NULL,
  at REAL NOT NULL,
  cols INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS _rowsync_rows (
  tbl INTEGER NOT NULL,
  pk NOT NULL,
  clocks TEXT NOT NULL,
  PRIMARY KEY (tbl, pk)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS _rowsync_conflicts (
  id TEXT NOT NULL,
  tbl INTEGER NOT NULL,
  pk NOT NULL,
  col TEXT NOT NULL,
  body TEXT NOT NULL,
  PRIMARY KEY (tbl, pk, id)
);
CREATE TABLE IF NOT EXISTS _rowsync_seen (
  tbl INTEGER NOT NULL,
  pk NOT NULL,
  PRIMARY KEY (tbl, pk)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS _rowsync_rejected (
  id INTEGER PRIMARY KEY,
  tbl INTEGER NOT NULL,
  pk NOT NULL,
  op INTEGER NOT NULL,
  seq INTEGER,
  reason TEXT NOT NULL,
  at TEXT NOT NULL
);
";

/// The columns `_rowsync_tables` gained after files were first made: the
/// number of rows rowsync believes the table holds (`NULL`: not counted
/// yet), and whether writes may have escaped capture and must be audited
/// against the server (see `rowsync-client`'s `audit`).
pub const MIGRATE_TABLES: &str = "
ALTER TABLE _rowsync_tables ADD COLUMN live INTEGER;
ALTER TABLE _rowsync_tables ADD COLUMN audit INTEGER NOT NULL DEFAULT 0;
";

/// How capture triggers are written: today's form, or the one earlier
/// rowsync versions installed (to recognise their triggers as rowsync's,
/// and replace them without suspecting that writes escaped them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TriggerForm {
    /// Today's. `nullable_key`: the table's one-column key may hold NULL
    /// (SQLite lets a non-INTEGER PRIMARY KEY column do so unless it is
    /// NOT NULL), so a NULL key is recorded as [`NULL_KEY`]: the outbox
    /// cannot hold NULL, and the app's write must not fail because of it.
    Current { nullable_key: bool },
    /// Before blob parts of composite keys were written as objects.
    Legacy,
}

/// How the outbox records a NULL one-column key (a lone NUL character, which
/// no synced key can be: the server refuses NUL in text). Such a row is
/// refused by the server and set aside with the reason.
pub const NULL_KEY: &str = "\0";

/// SQL expression (over `NEW` or `OLD`, or the table's own name) giving a
/// row's key as the outbox stores it: the value itself for a one-column key,
/// a JSON array otherwise.
pub fn key_expression(table: &Table, row: &str, form: TriggerForm) -> String {
    let parts: Vec<String> =
        table.primary_key.iter().map(|&i| format!("{row}.\"{}\"", table.columns[i].name)).collect();
    match (parts.as_slice(), form) {
        ([single], TriggerForm::Current { nullable_key: true }) => format!("ifnull({single}, char(0))"),
        ([single], _) => single.clone(),
        (_, TriggerForm::Legacy) => format!("json_array({})", parts.join(", ")),
        (_, TriggerForm::Current { .. }) => composite_key(&parts),
    }
}

/// The JSON array of a composite key's parts (SQL expressions). JSON has no
/// blobs and `json_array` fails on one, which inside a trigger would fail
/// the app's own write: a blob part becomes `{"blob": "HEX"}` instead.
pub fn composite_key(parts: &[String]) -> String {
    let parts: Vec<String> = parts
        .iter()
        .map(|part| format!("CASE WHEN typeof({part}) = 'blob' THEN json_object('blob', hex({part})) ELSE {part} END"))
        .collect();
    format!("json_array({})", parts.join(", "))
}

fn key_unchanged(table: &Table) -> String {
    let parts: Vec<String> =
        table.primary_key.iter().map(|&i| format!("OLD.\"{0}\" IS NEW.\"{0}\"", table.columns[i].name)).collect();
    parts.join(" AND ")
}

/// The capture triggers of a table as SQLite keeps them in
/// `sqlite_master.sql` (without `IF NOT EXISTS`), to tell whether the ones in
/// a file are still exactly rowsync's.
pub fn stored_capture_triggers(table: &Table, id: i64, form: TriggerForm) -> Vec<String> {
    capture_triggers(table, id, form)
        .into_iter()
        .map(|sql| sql.replacen("CREATE TRIGGER IF NOT EXISTS ", "CREATE TRIGGER ", 1))
        .collect()
}

/// Names of the capture triggers of a table.
pub fn trigger_names(table: &Table) -> [String; 4] {
    ["ins", "upd", "key", "del"].map(|kind| format!("_rowsync_{}_{kind}", table.name))
}

/// The capture triggers of one table, whose id in `_rowsync_tables` is `id`.
pub fn capture_triggers(table: &Table, id: i64, form: TriggerForm) -> Vec<String> {
    let [ins, upd, key, del] = trigger_names(table);
    let name = &table.name;
    let now = "julianday('now')";
    let changed: Vec<String> = table
        .columns
        .iter()
        .enumerate()
        .filter(|(i, _)| !table.is_key_column(*i))
        .map(|(i, c)| {
            let test = format!("(OLD.\"{0}\" IS NOT NEW.\"{0}\")", c.name);
            match i.min(OVERFLOW_BIT) {
                0 => test,
                bit => format!("({test} << {bit})"),
            }
        })
        .collect();
    let changed = if changed.is_empty() { "0".to_string() } else { changed.join(" | ") };
    let new_key = key_expression(table, "NEW", form);
    let old_key = key_expression(table, "OLD", form);
    let same_key = key_unchanged(table);
    // `UPDATE OF` lets SQLite skip this trigger for the common UPDATE whose
    // SET list leaves the key alone (measured: 4 points of update throughput).
    let key_columns: Vec<String> =
        table.primary_key.iter().map(|&i| format!("\"{}\"", table.columns[i].name)).collect();
    let key_columns = key_columns.join(", ");
    vec![
        format!(
            "CREATE TRIGGER IF NOT EXISTS \"{ins}\" AFTER INSERT ON \"{name}\" BEGIN \
             INSERT INTO _rowsync_outbox (tbl, pk, op, at, cols) VALUES ({id}, {new_key}, {OP_INSERT}, {now}, -1); END"
        ),
        format!(
            "CREATE TRIGGER IF NOT EXISTS \"{upd}\" AFTER UPDATE ON \"{name}\" WHEN {same_key} BEGIN \
             INSERT INTO _rowsync_outbox (tbl, pk, op, at, cols) VALUES ({id}, {new_key}, {OP_UPDATE}, {now}, {changed}); END"
        ),
        format!(
            "CREATE TRIGGER IF NOT EXISTS \"{key}\" AFTER UPDATE OF {key_columns} ON \"{name}\" WHEN NOT ({same_key}) BEGIN \
             INSERT INTO _rowsync_outbox (tbl, pk, op, at, cols) VALUES ({id}, {old_key}, {OP_DELETE}, {now}, 0), \
             ({id}, {new_key}, {OP_INSERT}, {now}, -1); END"
        ),
        format!(
            "CREATE TRIGGER IF NOT EXISTS \"{del}\" AFTER DELETE ON \"{name}\" BEGIN \
             INSERT INTO _rowsync_outbox (tbl, pk, op, at, cols) VALUES ({id}, {old_key}, {OP_DELETE}, {now}, 0); END"
        ),
    ]
}

/// The columns an outbox entry's bitmask says changed.
pub fn changed_columns(table: &Table, op: i64, bits: i64) -> Vec<usize> {
    (0..table.columns.len())
        .filter(|&i| !table.is_key_column(i))
        .filter(|&i| op == OP_INSERT || bits & (1i64 << i.min(OVERFLOW_BIT)) != 0)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_schema;

    #[test]
    fn triggers_for_a_single_key_table() {
        let schema = parse_schema("CREATE TABLE c (id TEXT PRIMARY KEY, name TEXT, phone TEXT);").unwrap();
        let sql = capture_triggers(&schema.tables[0], 7, TriggerForm::Current { nullable_key: false });
        assert_eq!(
            sql[0],
            "CREATE TRIGGER IF NOT EXISTS \"_rowsync_c_ins\" AFTER INSERT ON \"c\" BEGIN \
             INSERT INTO _rowsync_outbox (tbl, pk, op, at, cols) VALUES (7, NEW.\"id\", 1, julianday('now'), -1); END"
        );
        assert_eq!(
            sql[1],
            "CREATE TRIGGER IF NOT EXISTS \"_rowsync_c_upd\" AFTER UPDATE ON \"c\" WHEN OLD.\"id\" IS NEW.\"id\" BEGIN \
             INSERT INTO _rowsync_outbox (tbl, pk, op, at, cols) VALUES (7, NEW.\"id\", 2, julianday('now'), \
             ((OLD.\"name\" IS NOT NEW.\"name\") << 1) | ((OLD.\"phone\" IS NOT NEW.\"phone\") << 2)); END"
        );
        assert!(sql[2].contains("AFTER UPDATE OF \"id\" ON \"c\" WHEN NOT (OLD.\"id\" IS NEW.\"id\")"), "{}", sql[2]);
        assert!(sql[3].contains("VALUES (7, OLD.\"id\", 3, julianday('now'), 0)"));
    }

    #[test]
    fn composite_keys_are_json_arrays() {
        let schema = parse_schema("CREATE TABLE m (a TEXT, b INTEGER, PRIMARY KEY (a, b));").unwrap();
        let sql = capture_triggers(&schema.tables[0], 2, TriggerForm::Current { nullable_key: true });
        assert!(
            sql[0].contains(
                "json_array(CASE WHEN typeof(NEW.\"a\") = 'blob' THEN json_object('blob', hex(NEW.\"a\")) ELSE NEW.\"a\" END, "
            ),
            "{}",
            sql[0]
        );
        assert!(sql[1].contains("OLD.\"a\" IS NEW.\"a\" AND OLD.\"b\" IS NEW.\"b\""));
        assert!(sql[1].contains(", 2, julianday('now'), 0)"), "{}", sql[1]);
    }

    #[test]
    fn a_key_column_that_may_hold_null_records_null_as_a_marker() {
        let schema = parse_schema("CREATE TABLE c (id TEXT PRIMARY KEY, name TEXT);").unwrap();
        let sql = capture_triggers(&schema.tables[0], 7, TriggerForm::Current { nullable_key: true });
        assert!(sql[0].contains("VALUES (7, ifnull(NEW.\"id\", char(0)), 1,"), "{}", sql[0]);
        let legacy = capture_triggers(&schema.tables[0], 7, TriggerForm::Legacy);
        assert!(legacy[0].contains("VALUES (7, NEW.\"id\", 1,"), "{}", legacy[0]);
    }

    #[test]
    fn bitmask_decodes_including_wide_tables() {
        let cols: Vec<String> = (0..70).map(|i| format!("c{i} TEXT")).collect();
        let schema = parse_schema(&format!("CREATE TABLE w (id TEXT PRIMARY KEY, {});", cols.join(", "))).unwrap();
        let table = &schema.tables[0];
        assert_eq!(changed_columns(table, OP_UPDATE, 0b110), vec![1, 2]);
        assert_eq!(changed_columns(table, OP_UPDATE, 1 << 62).len(), 71 - 62);
        assert_eq!(changed_columns(table, OP_INSERT, 0).len(), 70);
    }
}
