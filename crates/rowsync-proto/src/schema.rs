//! The synced schema as it travels on the wire (`GET /v1/schema`).
//!
//! Parsing `CREATE TABLE` text into this model lives in `rowsync-core`; this
//! module only describes the result.

use serde::{Deserialize, Serialize};

/// The portable column types rowsync syncs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum ColumnType {
    Text,
    Integer,
    Real,
    Blob,
    /// Stored as INTEGER 0/1 in SQLite, BOOLEAN elsewhere.
    Boolean,
}

impl ColumnType {
    pub fn sql_name(self) -> &'static str {
        match self {
            ColumnType::Text => "TEXT",
            ColumnType::Integer => "INTEGER",
            ColumnType::Real => "REAL",
            ColumnType::Blob => "BLOB",
            ColumnType::Boolean => "BOOLEAN",
        }
    }
}

/// How concurrent edits of one row are resolved.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ConflictStrategy {
    /// Per-column last-writer-wins by version.
    #[default]
    Field,
    /// The later write's whole row wins.
    Row,
    /// "Ask the user": when two sites changed the same column since the
    /// version each had seen, the server keeps the value it has and records
    /// a conflict holding both, for a person to resolve.
    Manual,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Column {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: ColumnType,
    #[serde(default)]
    pub not_null: bool,
    /// The DEFAULT expression exactly as written in the schema file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Table {
    pub name: String,
    pub columns: Vec<Column>,
    /// Indexes into `columns`, in primary key order.
    pub primary_key: Vec<usize>,
    #[serde(default)]
    pub conflict: ConflictStrategy,
    /// A private table's owner column (an index into `columns`): each row
    /// belongs to the user the server wrote into it, and only that user
    /// reads or writes it. Shared tables have none. Set by the server's
    /// settings, like `conflict`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<usize>,
}

impl Table {
    pub fn column_index(&self, name: &str) -> Option<usize> {
        self.columns.iter().position(|c| c.name == name)
    }

    pub fn is_key_column(&self, index: usize) -> bool {
        self.primary_key.contains(&index)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Schema {
    /// Counts the schema's additive changes: 1 when the server first
    /// installed it, one more for each restart that added tables or
    /// columns (0: not installed by a server, as a schema file just read).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub version: u64,
    pub tables: Vec<Table>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Schema {
    pub fn table(&self, name: &str) -> Option<&Table> {
        self.tables.iter().find(|t| t.name == name)
    }

    /// The index of the table called `name` in `tables`.
    pub fn table_index(&self, name: &str) -> Option<usize> {
        self.tables.iter().position(|t| t.name == name)
    }

    /// The same tables, columns and keys, whatever the versions, conflict
    /// strategies and owners.
    pub fn same_shape(&self, other: &Schema) -> bool {
        self.tables.len() == other.tables.len()
            && self
                .tables
                .iter()
                .zip(&other.tables)
                .all(|(a, b)| a.name == b.name && a.columns == b.columns && a.primary_key == b.primary_key)
    }
}
