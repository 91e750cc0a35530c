//! What changed between the schema a database serves and the schema file
//! it is started with, and whether rowsync can carry the change out.
//!
//! Only additive changes can travel without losing anything: a new table,
//! or a new column that is nullable or has a constant default (rows written
//! before it, and replicas that do not know it yet, simply lack it).
//! Everything else (a table or column dropped, renamed, retyped, a key
//! changed, a column made NOT NULL) would leave replicas holding rows the
//! server can no longer take, so it is refused at start with the change
//! named and the supported way to get there.

use std::fmt;

use rowsync_proto::{Schema, Table};

/// One difference between two schemas.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SchemaChange {
    /// A table the old schema lacks.
    AddTable {
        table: String,
    },
    /// A column appended to a table, nullable or with a constant default.
    AddColumn {
        table: String,
        column: String,
    },
    /// A column appended that is NOT NULL without a default: rows already
    /// there would have no value for it.
    AddRequiredColumn {
        table: String,
        column: String,
    },
    DropTable {
        table: String,
    },
    DropColumn {
        table: String,
        column: String,
    },
    /// A column's type, NOT NULL or DEFAULT changed.
    AlterColumn {
        table: String,
        column: String,
        what: String,
    },
    /// The primary key is other columns, or in another order.
    ChangeKey {
        table: String,
    },
    /// Existing columns in another order (new ones go at the end).
    ReorderColumns {
        table: String,
    },
}

impl SchemaChange {
    /// Whether rowsync can carry the change out.
    pub fn is_additive(&self) -> bool {
        matches!(self, SchemaChange::AddTable { .. } | SchemaChange::AddColumn { .. })
    }
}

impl fmt::Display for SchemaChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SchemaChange::AddTable { table } => write!(f, "table {table} is new"),
            SchemaChange::AddColumn { table, column } => write!(f, "column {table}.{column} is new"),
            SchemaChange::AddRequiredColumn { table, column } => write!(
                f,
                "column {table}.{column} is new and NOT NULL without a DEFAULT, so the rows already there would \
                 have no value: give it a constant DEFAULT, or make it nullable"
            ),
            SchemaChange::DropTable { table } => write!(
                f,
                "table {table} is gone: dropping a table is not supported; keep it in the schema file and stop \
                 using it"
            ),
            SchemaChange::DropColumn { table, column } => write!(
                f,
                "column {table}.{column} is gone: dropping or renaming a column is not supported; keep it, and \
                 for a new name add a new column, copy the values over, and stop using the old one"
            ),
            SchemaChange::AlterColumn { table, column, what } => write!(
                f,
                "column {table}.{column} changed its {what}: changing a column is not supported; add a new \
                 column with the new definition, copy the values over, and stop using the old one"
            ),
            SchemaChange::ChangeKey { table } => write!(
                f,
                "the primary key of {table} changed: changing a key is not supported; make a new table with \
                 the new key and copy the rows over"
            ),
            SchemaChange::ReorderColumns { table } => write!(
                f,
                "the columns of {table} are in another order: keep the existing columns in their order and add \
                 new ones at the end"
            ),
        }
    }
}

/// Something to create for a schema to grow into another: indexes into the
/// new schema.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Addition {
    Table { table: usize },
    Column { table: usize, column: usize },
}

/// How a database (or a replica) serving `old` comes to serve `new`.
#[derive(Clone, Debug, PartialEq)]
pub struct Evolution {
    /// `new`, with its version: `old`'s, one more when anything is added.
    pub schema: Schema,
    /// What to create, tables and columns in `new`'s order.
    pub additions: Vec<Addition>,
}

/// The evolution from `old` to `new`, or the changes that are not additive
/// (each names the supported way to get there).
pub fn evolve(old: &Schema, new: &Schema) -> Result<Evolution, Vec<SchemaChange>> {
    let changes = schema_changes(old, new);
    let refused: Vec<SchemaChange> = changes.iter().filter(|c| !c.is_additive()).cloned().collect();
    if !refused.is_empty() {
        return Err(refused);
    }
    let mut additions = Vec::new();
    for (t, table) in new.tables.iter().enumerate() {
        match old.table(&table.name) {
            None => additions.push(Addition::Table { table: t }),
            Some(before) => additions.extend(
                (0..table.columns.len())
                    .filter(|&c| before.column_index(&table.columns[c].name).is_none())
                    .map(|column| Addition::Column { table: t, column }),
            ),
        }
    }
    let base = old.version.max(1);
    let version = if additions.is_empty() { base } else { base + 1 };
    Ok(Evolution { schema: Schema { version, ..new.clone() }, additions })
}

/// Every difference from `old` to `new`, tables in `new`'s order then the
/// tables `new` lacks. Conflict strategies and owners are settings, not
/// schema, and are not compared.
pub fn schema_changes(old: &Schema, new: &Schema) -> Vec<SchemaChange> {
    let mut changes = Vec::new();
    for table in &new.tables {
        match old.table(&table.name) {
            None => changes.push(SchemaChange::AddTable { table: table.name.clone() }),
            Some(before) => table_changes(before, table, &mut changes),
        }
    }
    for table in old.tables.iter().filter(|t| new.table(&t.name).is_none()) {
        changes.push(SchemaChange::DropTable { table: table.name.clone() });
    }
    changes
}

fn table_changes(old: &Table, new: &Table, changes: &mut Vec<SchemaChange>) {
    let name = || new.name.clone();
    for column in old.columns.iter().filter(|c| new.column_index(&c.name).is_none()) {
        changes.push(SchemaChange::DropColumn { table: name(), column: column.name.clone() });
    }
    // The columns both have must keep their order, ahead of any new one.
    let kept: Vec<&str> =
        old.columns.iter().map(|c| c.name.as_str()).filter(|n| new.column_index(n).is_some()).collect();
    if !new.columns.iter().take(kept.len()).map(|c| c.name.as_str()).eq(kept.iter().copied()) {
        changes.push(SchemaChange::ReorderColumns { table: name() });
    }
    for column in &new.columns {
        let Some(was) = old.column_index(&column.name).map(|i| &old.columns[i]) else {
            let change = if column.not_null && column.default.is_none() {
                SchemaChange::AddRequiredColumn { table: name(), column: column.name.clone() }
            } else {
                SchemaChange::AddColumn { table: name(), column: column.name.clone() }
            };
            changes.push(change);
            continue;
        };
        let what = if was.ty != column.ty {
            Some(format!("type ({:?} to {:?})", was.ty, column.ty))
        } else if was.not_null != column.not_null {
            Some("NOT NULL".to_string())
        } else if was.default != column.default {
            Some("DEFAULT".to_string())
        } else {
            None
        };
        if let Some(what) = what {
            changes.push(SchemaChange::AlterColumn { table: name(), column: column.name.clone(), what });
        }
    }
    let key = |t: &Table| t.primary_key.iter().map(|&i| t.columns[i].name.clone()).collect::<Vec<_>>();
    if key(old) != key(new) {
        changes.push(SchemaChange::ChangeKey { table: name() });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_schema;

    fn changes(old: &str, new: &str) -> Vec<SchemaChange> {
        schema_changes(&parse_schema(old).unwrap(), &parse_schema(new).unwrap())
    }

    const CONTACTS: &str = "CREATE TABLE contacts (id TEXT PRIMARY KEY, name TEXT NOT NULL, email TEXT);";

    #[test]
    fn the_same_schema_has_no_changes() {
        assert!(changes(CONTACTS, CONTACTS).is_empty());
    }

    #[test]
    fn new_tables_and_nullable_or_defaulted_columns_are_additive() {
        let new = "CREATE TABLE contacts (id TEXT PRIMARY KEY, name TEXT NOT NULL, email TEXT, phone TEXT, \
                   stars INTEGER NOT NULL DEFAULT 0); CREATE TABLE notes (id TEXT PRIMARY KEY, body TEXT);";
        let found = changes(CONTACTS, new);
        assert_eq!(
            found,
            vec![
                SchemaChange::AddColumn { table: "contacts".into(), column: "phone".into() },
                SchemaChange::AddColumn { table: "contacts".into(), column: "stars".into() },
                SchemaChange::AddTable { table: "notes".into() },
            ]
        );
        assert!(found.iter().all(SchemaChange::is_additive));
    }

    #[test]
    fn every_other_change_is_named_with_the_supported_way() {
        let refused = |new: &str, needle: &str| {
            let found = changes(CONTACTS, new);
            assert!(
                found.iter().any(|c| !c.is_additive() && c.to_string().contains(needle)),
                "{found:?} lacks {needle}"
            );
        };
        refused("CREATE TABLE other (id TEXT PRIMARY KEY);", "table contacts is gone");
        refused("CREATE TABLE contacts (id TEXT PRIMARY KEY, name TEXT NOT NULL);", "column contacts.email is gone");
        refused(
            "CREATE TABLE contacts (id TEXT PRIMARY KEY, name TEXT NOT NULL, mail TEXT);",
            "add a new column, copy the values over",
        );
        refused("CREATE TABLE contacts (id TEXT PRIMARY KEY, name TEXT NOT NULL, email INTEGER);", "changed its type");
        refused("CREATE TABLE contacts (id TEXT PRIMARY KEY, name TEXT, email TEXT);", "changed its NOT NULL");
        refused("CREATE TABLE contacts (id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT);", "changed its type");
        refused(
            "CREATE TABLE contacts (id TEXT, name TEXT NOT NULL, email TEXT, PRIMARY KEY (id, name));",
            "the primary key of contacts changed",
        );
        refused("CREATE TABLE contacts (id TEXT PRIMARY KEY, email TEXT, name TEXT NOT NULL);", "another order");
        refused(
            "CREATE TABLE contacts (id TEXT PRIMARY KEY, name TEXT NOT NULL, email TEXT, born TEXT NOT NULL);",
            "NOT NULL without a DEFAULT",
        );
    }

    #[test]
    fn an_evolution_lists_what_to_create_and_counts_the_version_up() {
        let old = Schema { version: 3, ..parse_schema(CONTACTS).unwrap() };
        let new = parse_schema(
            "CREATE TABLE notes (id TEXT PRIMARY KEY, body TEXT); CREATE TABLE contacts (id TEXT PRIMARY KEY, \
             name TEXT NOT NULL, email TEXT, phone TEXT);",
        )
        .unwrap();
        let evolution = evolve(&old, &new).unwrap();
        assert_eq!(evolution.additions, vec![Addition::Table { table: 0 }, Addition::Column { table: 1, column: 3 }]);
        assert_eq!(evolution.schema.version, 4);
        assert_eq!(evolve(&old, &old).unwrap().schema.version, 3, "nothing added: the same version");
        let refused = evolve(&old, &parse_schema("CREATE TABLE contacts (id TEXT PRIMARY KEY);").unwrap());
        assert_eq!(refused.unwrap_err().len(), 2, "two columns dropped");
    }
}
