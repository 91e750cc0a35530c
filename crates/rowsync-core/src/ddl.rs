//! The `CREATE TABLE` text each database gets for a synced table.
//!
//! Type names are translated per database so that people and other programs
//! see natural columns (BIGINT, DOUBLE PRECISION, BYTEA...) when they look at
//! the server's tables. Identifiers are quoted; they were already checked
//! against a strict pattern when the schema was read.

use rowsync_proto::{ColumnType, Table};

/// The SQL dialects rowsync writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
    Mysql,
}

impl Dialect {
    pub fn quote(self, ident: &str) -> String {
        match self {
            Dialect::Mysql => format!("`{ident}`"),
            Dialect::Sqlite | Dialect::Postgres => format!("\"{ident}\""),
        }
    }

    pub fn type_name(self, ty: ColumnType) -> &'static str {
        match (self, ty) {
            (Dialect::Sqlite, ty) => ty.sql_name(),
            (_, ColumnType::Text) => "TEXT",
            (_, ColumnType::Integer) => "BIGINT",
            (Dialect::Postgres, ColumnType::Real) => "DOUBLE PRECISION",
            (Dialect::Mysql, ColumnType::Real) => "DOUBLE",
            (Dialect::Postgres, ColumnType::Blob) => "BYTEA",
            (Dialect::Mysql, ColumnType::Blob) => "LONGBLOB",
            (_, ColumnType::Boolean) => "BOOLEAN",
        }
    }
}

/// `CREATE TABLE IF NOT EXISTS` for one synced table.
pub fn create_table(table: &Table, dialect: Dialect) -> String {
    let mut parts: Vec<String> = table
        .columns
        .iter()
        .map(|c| {
            let mut def = format!("{} {}", dialect.quote(&c.name), dialect.type_name(c.ty));
            if c.not_null {
                def.push_str(" NOT NULL");
            }
            if let Some(default) = &c.default {
                def.push_str(" DEFAULT ");
                def.push_str(default);
            }
            def
        })
        .collect();
    let key: Vec<String> = table.primary_key.iter().map(|&i| dialect.quote(&table.columns[i].name)).collect();
    parts.push(format!("PRIMARY KEY ({})", key.join(", ")));
    format!("CREATE TABLE IF NOT EXISTS {} (\n  {}\n)", dialect.quote(&table.name), parts.join(",\n  "))
}

/// The portable type a SQLite declared type stands for, by the same names the
/// schema file accepts. Used to compare a replica's existing table with the
/// server's schema.
pub fn sqlite_declared_type(declared: &str) -> Option<ColumnType> {
    let upper = declared.trim().to_ascii_uppercase();
    let base = upper.split('(').next().unwrap_or("").trim();
    Some(match base {
        "TEXT" | "VARCHAR" | "CHAR" | "STRING" | "CHARACTER VARYING" => ColumnType::Text,
        "INTEGER" | "INT" | "BIGINT" | "INT8" => ColumnType::Integer,
        "REAL" | "DOUBLE" | "DOUBLE PRECISION" | "FLOAT" | "FLOAT8" => ColumnType::Real,
        "BLOB" | "BYTEA" => ColumnType::Blob,
        "BOOLEAN" | "BOOL" => ColumnType::Boolean,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_schema;

    #[test]
    fn create_table_text_per_dialect() {
        let schema = parse_schema("CREATE TABLE t (a TEXT, b INTEGER NOT NULL DEFAULT 0, c REAL, d BLOB, e BOOLEAN, PRIMARY KEY (a, b));").unwrap();
        let table = &schema.tables[0];
        assert_eq!(
            create_table(table, Dialect::Sqlite),
            "CREATE TABLE IF NOT EXISTS \"t\" (\n  \"a\" TEXT NOT NULL,\n  \"b\" INTEGER NOT NULL DEFAULT 0,\n  \"c\" REAL,\n  \"d\" BLOB,\n  \"e\" BOOLEAN,\n  PRIMARY KEY (\"a\", \"b\")\n)"
        );
        assert!(create_table(table, Dialect::Postgres).contains("\"c\" DOUBLE PRECISION,\n  \"d\" BYTEA"));
        assert!(create_table(table, Dialect::Mysql).contains("`b` BIGINT NOT NULL DEFAULT 0"));
    }

    #[test]
    fn declared_types_map_back() {
        assert_eq!(sqlite_declared_type("varchar(20)"), Some(ColumnType::Text));
        assert_eq!(sqlite_declared_type("INTEGER"), Some(ColumnType::Integer));
        assert_eq!(sqlite_declared_type("DATE"), None);
    }
}
