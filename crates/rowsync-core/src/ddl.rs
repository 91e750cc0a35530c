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
///
/// MySQL cannot index TEXT or BLOB columns whole, so key columns of those
/// types become `VARCHAR(255)` (binary collation: keys compare exactly, as
/// elsewhere) and `VARBINARY(255)` there; text is `utf8mb4` throughout.
pub fn create_table(table: &Table, dialect: Dialect) -> String {
    let mut parts: Vec<String> = (0..table.columns.len()).map(|i| column_definition(table, i, dialect)).collect();
    let key: Vec<String> = table.primary_key.iter().map(|&i| dialect.quote(&table.columns[i].name)).collect();
    parts.push(format!("PRIMARY KEY ({})", key.join(", ")));
    let options = if dialect == Dialect::Mysql { " DEFAULT CHARSET=utf8mb4" } else { "" };
    format!("CREATE TABLE IF NOT EXISTS {} (\n  {}\n){options}", dialect.quote(&table.name), parts.join(",\n  "))
}

/// `ALTER TABLE … ADD COLUMN` for the column at `index` of `table` (added
/// to the schema after the table was created: nullable or with a constant
/// default, so that the rows already there get a value).
pub fn add_column(table: &Table, index: usize, dialect: Dialect) -> String {
    format!("ALTER TABLE {} ADD COLUMN {}", dialect.quote(&table.name), column_definition(table, index, dialect))
}

/// One column as `CREATE TABLE` and `ADD COLUMN` declare it.
fn column_definition(table: &Table, index: usize, dialect: Dialect) -> String {
    let column = &table.columns[index];
    let ty = match (dialect, column.ty) {
        (Dialect::Mysql, ColumnType::Text) if table.is_key_column(index) => {
            "VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"
        }
        (Dialect::Mysql, ColumnType::Blob) if table.is_key_column(index) => "VARBINARY(255)",
        (dialect, ty) => dialect.type_name(ty),
    };
    let mut def = format!("{} {ty}", dialect.quote(&column.name));
    if column.not_null {
        def.push_str(" NOT NULL");
    }
    if let Some(default) = &column.default {
        def.push_str(" DEFAULT ");
        def.push_str(default);
    }
    def
}

/// Placeholder for the `n`th (1-based) bound parameter.
pub fn placeholder(dialect: Dialect, n: usize) -> String {
    match dialect {
        Dialect::Postgres => format!("${n}"),
        Dialect::Sqlite | Dialect::Mysql => "?".to_string(),
    }
}

/// Inserts a whole row, or overwrites every non-key column when the key
/// exists. Parameters: every column, in table order.
pub fn upsert_row(table: &Table, dialect: Dialect) -> String {
    upsert_rows(table, dialect, 1)
}

/// [`upsert_row`] for `rows` rows in one statement. Parameters: every column
/// of the first row, then of the second, and so on.
pub fn upsert_rows(table: &Table, dialect: Dialect, rows: usize) -> String {
    let columns: Vec<String> = table.columns.iter().map(|c| dialect.quote(&c.name)).collect();
    let width = table.columns.len();
    let tuples: Vec<String> = (0..rows)
        .map(|r| {
            let params: Vec<String> = (1..=width).map(|n| placeholder(dialect, r * width + n)).collect();
            format!("({})", params.join(", "))
        })
        .collect();
    let insert =
        format!("INSERT INTO {} ({}) VALUES {}", dialect.quote(&table.name), columns.join(", "), tuples.join(", "));
    format!("{insert} {}", on_conflict_update(table, dialect))
}

/// SQLite: an upsert of the rows a `SELECT` gives, every column of the
/// table in order (the `SELECT` must have a `WHERE` clause, so that SQLite
/// does not read `ON CONFLICT` as a join's `ON`).
pub fn upsert_select(table: &Table, select: &str) -> String {
    let dialect = Dialect::Sqlite;
    let columns: Vec<String> = table.columns.iter().map(|c| dialect.quote(&c.name)).collect();
    format!(
        "INSERT INTO {} ({}) {select} {}",
        dialect.quote(&table.name),
        columns.join(", "),
        on_conflict_update(table, dialect)
    )
}

/// What an upsert does with a row whose key exists: takes the new values
/// of the columns outside the key.
fn on_conflict_update(table: &Table, dialect: Dialect) -> String {
    let non_key: Vec<&str> = table
        .columns
        .iter()
        .enumerate()
        .filter(|(i, _)| !table.is_key_column(*i))
        .map(|(_, c)| c.name.as_str())
        .collect();
    let key: Vec<String> = table.primary_key.iter().map(|&i| dialect.quote(&table.columns[i].name)).collect();
    match dialect {
        Dialect::Mysql => {
            // MySQL has no "do nothing"; assigning a key column to itself is the idiom.
            let sets: Vec<String> = if non_key.is_empty() {
                vec![format!("{0} = {0}", key[0])]
            } else {
                non_key.iter().map(|c| format!("`{c}` = VALUES(`{c}`)")).collect()
            };
            format!("ON DUPLICATE KEY UPDATE {}", sets.join(", "))
        }
        Dialect::Sqlite | Dialect::Postgres => {
            if non_key.is_empty() {
                format!("ON CONFLICT ({}) DO NOTHING", key.join(", "))
            } else {
                let sets: Vec<String> = non_key.iter().map(|c| format!("\"{c}\" = excluded.\"{c}\"")).collect();
                format!("ON CONFLICT ({}) DO UPDATE SET {}", key.join(", "), sets.join(", "))
            }
        }
    }
}

/// Deletes `rows` rows by key in one statement. Parameters: the key values
/// of the first row in key order, then of the second, and so on.
pub fn delete_rows(table: &Table, dialect: Dialect, rows: usize) -> String {
    let width = table.primary_key.len();
    let key: Vec<String> = table.primary_key.iter().map(|&i| dialect.quote(&table.columns[i].name)).collect();
    let tuples: Vec<String> = (0..rows)
        .map(|r| {
            let params: Vec<String> = (1..=width).map(|n| placeholder(dialect, r * width + n)).collect();
            if width == 1 {
                params.join("")
            } else {
                format!("({})", params.join(", "))
            }
        })
        .collect();
    let target = if width == 1 { key.join("") } else { format!("({})", key.join(", ")) };
    format!("DELETE FROM {} WHERE {target} IN ({})", dialect.quote(&table.name), tuples.join(", "))
}

/// How many rows of `params_per_row` parameters fit one statement: SQLite
/// allows 32,766 parameters, PostgreSQL and MySQL 65,535; rowsync stays well
/// below and caps statements at 500 rows.
pub fn rows_per_statement(params_per_row: usize) -> usize {
    (30_000 / params_per_row.max(1)).clamp(1, 500)
}

/// `WHERE` clause matching one row by key, parameters numbered from `first`.
pub fn key_condition(table: &Table, dialect: Dialect, first: usize) -> String {
    let parts: Vec<String> = table
        .primary_key
        .iter()
        .enumerate()
        .map(|(n, &i)| format!("{} = {}", dialect.quote(&table.columns[i].name), placeholder(dialect, first + n)))
        .collect();
    parts.join(" AND ")
}

/// Updates some columns of one row. Parameters: the new values in the order
/// of `columns`, then the key values in key order.
pub fn update_columns(table: &Table, dialect: Dialect, columns: &[usize]) -> String {
    let sets: Vec<String> = columns
        .iter()
        .enumerate()
        .map(|(n, &i)| format!("{} = {}", dialect.quote(&table.columns[i].name), placeholder(dialect, n + 1)))
        .collect();
    format!(
        "UPDATE {} SET {} WHERE {}",
        dialect.quote(&table.name),
        sets.join(", "),
        key_condition(table, dialect, columns.len() + 1)
    )
}

/// Deletes one row by key. Parameters: the key values in key order.
pub fn delete_row(table: &Table, dialect: Dialect) -> String {
    format!("DELETE FROM {} WHERE {}", dialect.quote(&table.name), key_condition(table, dialect, 1))
}

/// Reads one whole row by key. Parameters: the key values in key order.
pub fn select_row(table: &Table, dialect: Dialect) -> String {
    let columns: Vec<String> = table.columns.iter().map(|c| dialect.quote(&c.name)).collect();
    format!(
        "SELECT {} FROM {} WHERE {}",
        columns.join(", "),
        dialect.quote(&table.name),
        key_condition(table, dialect, 1)
    )
}

/// Reads up to `rows` rows by key in one statement (SQLite). Parameters, row
/// after row: the row's place in the caller's list, then its key values in
/// key order (a place bound to NULL, with NULL keys, finds nothing). Each
/// row found comes back as its place, then its columns in table order.
pub fn select_rows_by_key(table: &Table, rows: usize) -> String {
    let quote = |name: &str| Dialect::Sqlite.quote(name);
    let width = 1 + table.primary_key.len();
    let tuple = format!("({})", vec!["?"; width].join(", "));
    let keys: Vec<String> = (0..table.primary_key.len()).map(|n| format!("k{n}")).collect();
    let on: Vec<String> = table
        .primary_key
        .iter()
        .enumerate()
        .map(|(n, &i)| format!("t.{} = _rowsync_keys.k{n}", quote(&table.columns[i].name)))
        .collect();
    let columns: Vec<String> = table.columns.iter().map(|c| format!("t.{}", quote(&c.name))).collect();
    // The listed keys lead (CROSS JOIN keeps SQLite's join order): one
    // index lookup in the table per key. Their table's name is one no
    // synced table may have (a CTE hides a table of the same name).
    format!(
        "WITH _rowsync_keys(place, {}) AS (VALUES {}) \
         SELECT _rowsync_keys.place, {} FROM _rowsync_keys CROSS JOIN {} AS t ON {}",
        keys.join(", "),
        vec![tuple; rows].join(", "),
        columns.join(", "),
        quote(&table.name),
        on.join(" AND ")
    )
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
        let schema = parse_schema(
            "CREATE TABLE t (a TEXT, b INTEGER NOT NULL DEFAULT 0, c REAL, d BLOB, e BOOLEAN, PRIMARY KEY (a, b));",
        )
        .unwrap();
        let table = &schema.tables[0];
        assert_eq!(
            create_table(table, Dialect::Sqlite),
            "CREATE TABLE IF NOT EXISTS \"t\" (\n  \"a\" TEXT NOT NULL,\n  \"b\" INTEGER NOT NULL DEFAULT 0,\n  \"c\" REAL,\n  \"d\" BLOB,\n  \"e\" BOOLEAN,\n  PRIMARY KEY (\"a\", \"b\")\n)"
        );
        assert!(create_table(table, Dialect::Postgres).contains("\"c\" DOUBLE PRECISION,\n  \"d\" BYTEA"));
        let mysql = create_table(table, Dialect::Mysql);
        assert!(
            mysql.contains("`a` VARCHAR(255) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,\n  `b` BIGINT"),
            "{mysql}"
        );
        assert!(mysql.ends_with(") DEFAULT CHARSET=utf8mb4"));
    }

    #[test]
    fn row_statements_per_dialect() {
        let schema = parse_schema("CREATE TABLE c (id TEXT PRIMARY KEY, name TEXT);").unwrap();
        let table = &schema.tables[0];
        assert_eq!(
            upsert_row(table, Dialect::Sqlite),
            "INSERT INTO \"c\" (\"id\", \"name\") VALUES (?, ?) ON CONFLICT (\"id\") DO UPDATE SET \"name\" = excluded.\"name\""
        );
        assert_eq!(
            upsert_row(table, Dialect::Mysql),
            "INSERT INTO `c` (`id`, `name`) VALUES (?, ?) ON DUPLICATE KEY UPDATE `name` = VALUES(`name`)"
        );
        assert_eq!(delete_row(table, Dialect::Postgres), "DELETE FROM \"c\" WHERE \"id\" = $1");
        assert_eq!(
            upsert_rows(table, Dialect::Postgres, 2),
            "INSERT INTO \"c\" (\"id\", \"name\") VALUES ($1, $2), ($3, $4) ON CONFLICT (\"id\") DO UPDATE SET \"name\" = excluded.\"name\""
        );
        assert_eq!(delete_rows(table, Dialect::Sqlite, 3), "DELETE FROM \"c\" WHERE \"id\" IN (?, ?, ?)");
        let pair = parse_schema("CREATE TABLE m (a TEXT, b TEXT, PRIMARY KEY (a, b));").unwrap();
        assert_eq!(
            delete_rows(&pair.tables[0], Dialect::Postgres, 2),
            "DELETE FROM \"m\" WHERE (\"a\", \"b\") IN (($1, $2), ($3, $4))"
        );
        assert_eq!(select_row(table, Dialect::Sqlite), "SELECT \"id\", \"name\" FROM \"c\" WHERE \"id\" = ?");
        assert_eq!(update_columns(table, Dialect::Postgres, &[1]), "UPDATE \"c\" SET \"name\" = $1 WHERE \"id\" = $2");
    }

    #[test]
    fn declared_types_map_back() {
        assert_eq!(sqlite_declared_type("varchar(20)"), Some(ColumnType::Text));
        assert_eq!(sqlite_declared_type("INTEGER"), Some(ColumnType::Integer));
        assert_eq!(sqlite_declared_type("DATE"), None);
    }
}
