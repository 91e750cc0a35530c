//! Reading the schema file: plain `CREATE TABLE` statements into a [`Schema`].
//!
//! The schema file is the one place where a user declares what syncs, so every
//! refusal here names the line, the table and the column, and nothing that
//! rowsync cannot sync faithfully is let through (a table without a primary
//! key, a type with no portable meaning, a constraint that replicas could
//! violate independently).

use std::cell::RefCell;
use std::collections::HashMap;

use rowsync_proto::{Column, ColumnType, ConflictStrategy, Schema, Table, Value};
use sqlparser::ast::{
    ColumnOption, DataType, Expr, ObjectNamePart, Statement, TableConstraint, UnaryOperator, Value as SqlValue,
};
use sqlparser::dialect::SQLiteDialect;
use sqlparser::parser::Parser;

/// A refusal of the schema file, pointing at what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{}", location(*.line, .table.as_deref(), .column.as_deref()), .message)]
pub struct SchemaError {
    /// 1-based line in the schema file, when known.
    pub line: Option<u64>,
    pub table: Option<String>,
    pub column: Option<String>,
    pub message: String,
}

fn location(line: Option<u64>, table: Option<&str>, column: Option<&str>) -> String {
    let mut out = String::new();
    if let Some(line) = line {
        out.push_str(&format!("line {line}: "));
    }
    match (table, column) {
        (Some(t), Some(c)) => out.push_str(&format!("table {t}, column {c}: ")),
        (Some(t), None) => out.push_str(&format!("table {t}: ")),
        _ => {}
    }
    out
}

/// Parses a schema file's text. Only `CREATE TABLE` statements are accepted.
pub fn parse_schema(sql: &str) -> Result<Schema, SchemaError> {
    let statements = Parser::parse_sql(&SQLiteDialect {}, sql).map_err(|e| SchemaError {
        line: None,
        table: None,
        column: None,
        message: format!("not valid SQL: {e}"),
    })?;
    let mut schema = Schema::default();
    for statement in statements {
        let Statement::CreateTable(create) = statement else {
            return Err(SchemaError {
                line: None,
                table: None,
                column: None,
                message: format!(
                    "only CREATE TABLE statements belong in a schema file, found: {}",
                    first_words(&statement.to_string())
                ),
            });
        };
        let name_ident = match create.name.0.as_slice() {
            [ObjectNamePart::Identifier(ident)] => ident.clone(),
            _ => {
                return Err(SchemaError {
                    line: None,
                    table: Some(create.name.to_string()),
                    column: None,
                    message: "a table name must be a single plain name (no schema prefix)".into(),
                })
            }
        };
        let table_name = name_ident.value.clone();
        let table_line = Some(name_ident.span.start.line).filter(|l| *l > 0);
        let table_err =
            |message: String| SchemaError { line: table_line, table: Some(table_name.clone()), column: None, message };
        check_identifier(&table_name).map_err(table_err)?;
        if schema.table(&table_name).is_some() {
            return Err(table_err("declared twice".into()));
        }
        if create.columns.is_empty() {
            return Err(table_err("has no columns".into()));
        }

        let mut columns = Vec::new();
        let mut primary_key = Vec::new();
        for def in &create.columns {
            let col_name = def.name.value.clone();
            let col_err = |message: String| SchemaError {
                line: Some(def.name.span.start.line).filter(|l| *l > 0).or(table_line),
                table: Some(table_name.clone()),
                column: Some(col_name.clone()),
                message,
            };
            check_identifier(&col_name).map_err(col_err)?;
            if columns.iter().any(|c: &Column| c.name.eq_ignore_ascii_case(&col_name)) {
                return Err(col_err("declared twice".into()));
            }
            let ty = column_type(&def.data_type).map_err(col_err)?;
            let mut column = Column { name: col_name.clone(), ty, not_null: false, default: None };
            for option in &def.options {
                match &option.option {
                    ColumnOption::NotNull => column.not_null = true,
                    ColumnOption::Null => {}
                    ColumnOption::Default(expr) => column.default = Some(default_text(expr).map_err(col_err)?),
                    ColumnOption::Unique { is_primary: true, .. } => {
                        if !primary_key.is_empty() {
                            return Err(col_err(
                                "a second PRIMARY KEY; declare a composite key as PRIMARY KEY (a, b)".into(),
                            ));
                        }
                        primary_key.push(columns.len());
                    }
                    other => {
                        return Err(col_err(format!(
                            "constraint `{other}` is not supported: replicas cannot enforce it together"
                        )))
                    }
                }
            }
            columns.push(column);
        }

        for constraint in &create.constraints {
            match constraint {
                TableConstraint::PrimaryKey { columns: key_cols, .. } => {
                    if !primary_key.is_empty() {
                        return Err(table_err("has more than one PRIMARY KEY".into()));
                    }
                    for key_col in key_cols {
                        let Expr::Identifier(ident) = &key_col.column.expr else {
                            return Err(table_err(format!("PRIMARY KEY part `{key_col}` is not a column name")));
                        };
                        let Some(index) = columns.iter().position(|c| c.name == ident.value) else {
                            return Err(table_err(format!("PRIMARY KEY names unknown column {}", ident.value)));
                        };
                        if primary_key.contains(&index) {
                            return Err(table_err(format!("PRIMARY KEY names column {} twice", ident.value)));
                        }
                        primary_key.push(index);
                    }
                }
                other => {
                    return Err(table_err(format!(
                        "constraint `{other}` is not supported: replicas cannot enforce it together"
                    )))
                }
            }
        }
        if primary_key.is_empty() {
            return Err(table_err(
                "has no PRIMARY KEY; rowsync identifies rows by their key, so every synced table needs one".into(),
            ));
        }
        for &index in &primary_key {
            let column = &mut columns[index];
            let bad = match column.ty {
                ColumnType::Integer | ColumnType::Text => false,
                ColumnType::Blob => primary_key.len() > 1,
                ColumnType::Real | ColumnType::Boolean => true,
            };
            if bad {
                return Err(SchemaError {
                    line: table_line,
                    table: Some(table_name.clone()),
                    column: Some(column.name.clone()),
                    message: format!(
                        "a {} column cannot be part of this primary key (use TEXT or INTEGER; BLOB only as a single key)",
                        column.ty.sql_name()
                    ),
                });
            }
            column.not_null = true;
        }
        schema.tables.push(Table {
            name: table_name,
            columns,
            primary_key,
            conflict: ConflictStrategy::Field,
            owner: None,
        });
    }
    if schema.tables.is_empty() {
        return Err(SchemaError {
            line: None,
            table: None,
            column: None,
            message: "the schema file declares no tables".into(),
        });
    }
    Ok(schema)
}

/// Warnings worth printing when a schema is loaded: things that work but
/// bite later.
pub fn schema_warnings(schema: &Schema) -> Vec<String> {
    let mut warnings = Vec::new();
    for table in &schema.tables {
        if let [index] = table.primary_key.as_slice() {
            let column = &table.columns[*index];
            if column.ty == ColumnType::Integer {
                warnings.push(format!(
                    "table {}: primary key {} is an INTEGER; keys chosen on two offline devices collide \
                     (SQLite hands out 1, 2, 3 on each). Use TEXT keys such as UUIDs for synced tables",
                    table.name, column.name
                ));
            }
        }
    }
    warnings
}

fn check_identifier(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
        && name.len() <= 63;
    if !valid {
        return Err(format!(
            "name {name:?} is not supported: use letters, digits and underscores, starting with a letter, at most 63 characters"
        ));
    }
    let lower = name.to_ascii_lowercase();
    if lower.starts_with("rowsync_") || lower.starts_with("_rowsync_") || lower.starts_with("sqlite_") {
        return Err(format!("name {name:?} is reserved (rowsync_, _rowsync_ and sqlite_ prefixes)"));
    }
    Ok(())
}

fn column_type(data_type: &DataType) -> Result<ColumnType, String> {
    Ok(match data_type {
        DataType::Text | DataType::Varchar(_) | DataType::String(_) | DataType::Char(_) | DataType::CharVarying(_) => {
            ColumnType::Text
        }
        DataType::Integer(_) | DataType::Int(_) | DataType::BigInt(_) | DataType::Int8(_) => ColumnType::Integer,
        DataType::Real | DataType::Double(_) | DataType::DoublePrecision | DataType::Float(_) | DataType::Float8 => {
            ColumnType::Real
        }
        DataType::Blob(_) | DataType::Bytea => ColumnType::Blob,
        DataType::Boolean | DataType::Bool => ColumnType::Boolean,
        DataType::Unspecified => {
            return Err("has no type; give one of TEXT, INTEGER, REAL, BLOB, BOOLEAN".into());
        }
        other => {
            return Err(format!("type {other} is not supported; use TEXT, INTEGER, REAL, BLOB or BOOLEAN"));
        }
    })
}

/// Only constant defaults are portable across SQLite, PostgreSQL and MySQL.
fn default_text(expr: &Expr) -> Result<String, String> {
    match expr {
        Expr::Value(_) => Ok(expr.to_string()),
        Expr::UnaryOp { expr: inner, .. } if matches!(**inner, Expr::Value(_)) => Ok(expr.to_string()),
        other => Err(format!("DEFAULT {other} is not supported; only constant defaults are")),
    }
}

/// The value a column takes in a row written without it: its constant
/// DEFAULT as a value of its type, or NULL. (A row the server or a replica
/// holds no write of the column for: the column was added to the schema
/// after the row was written, by a writer that did not know it.)
///
/// Rows written before a column was added take this on every write and
/// every pull, so each DEFAULT text is parsed once per thread.
pub fn column_default(column: &Column) -> Value {
    let Some(text) = &column.default else { return Value::Null };
    thread_local! {
        static PARSED: RefCell<HashMap<String, Vec<(ColumnType, Value)>>> = RefCell::new(HashMap::new());
    }
    PARSED.with(|parsed| {
        if let Some((_, value)) =
            parsed.borrow().get(text.as_str()).and_then(|v| v.iter().find(|(ty, _)| *ty == column.ty))
        {
            return value.clone();
        }
        let value = parse_default(column.ty, text);
        parsed.borrow_mut().entry(text.clone()).or_default().push((column.ty, value.clone()));
        value
    })
}

/// A constant DEFAULT's text (as [`default_text`] wrote it) as a value of
/// type `ty`; NULL for anything else.
fn parse_default(ty: ColumnType, text: &str) -> Value {
    let parsed = Parser::new(&SQLiteDialect {}).try_with_sql(text).and_then(|mut p| p.parse_expr());
    let (negative, literal) = match parsed {
        Ok(Expr::Value(v)) => (false, v.value),
        Ok(Expr::UnaryOp { op: UnaryOperator::Minus, expr }) => match *expr {
            Expr::Value(v) => (true, v.value),
            _ => return Value::Null,
        },
        Ok(Expr::UnaryOp { op: UnaryOperator::Plus, expr }) => match *expr {
            Expr::Value(v) => (false, v.value),
            _ => return Value::Null,
        },
        _ => return Value::Null,
    };
    let sign = if negative { "-" } else { "" };
    match (ty, literal) {
        (_, SqlValue::Null) => Value::Null,
        (ColumnType::Integer | ColumnType::Boolean, SqlValue::Boolean(b)) => Value::Integer(i64::from(b)),
        (ColumnType::Integer | ColumnType::Boolean, SqlValue::Number(n, _)) => {
            format!("{sign}{n}").parse().map_or(Value::Null, Value::Integer)
        }
        (ColumnType::Real, SqlValue::Number(n, _)) => format!("{sign}{n}").parse().map_or(Value::Null, Value::Real),
        (ColumnType::Text, SqlValue::Number(n, _)) => Value::Text(format!("{sign}{n}")),
        (ColumnType::Blob, SqlValue::HexStringLiteral(hex)) => (0..hex.len())
            .step_by(2)
            .map(|i| hex.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok()))
            .collect::<Option<Vec<u8>>>()
            .map_or(Value::Null, Value::Blob),
        (_, SqlValue::SingleQuotedString(text)) => Value::Text(text),
        _ => Value::Null,
    }
}

fn first_words(s: &str) -> String {
    s.split_whitespace().take(4).collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONTACTS: &str = "
CREATE TABLE contacts (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    email TEXT,
    phone TEXT DEFAULT '',
    age INTEGER,
    score REAL,
    photo BLOB,
    starred BOOLEAN NOT NULL DEFAULT 0
);
CREATE TABLE memberships (
    contact_id TEXT NOT NULL,
    group_id TEXT NOT NULL,
    PRIMARY KEY (contact_id, group_id)
);";

    #[test]
    fn reads_tables_types_keys_and_defaults() {
        let schema = parse_schema(CONTACTS).unwrap();
        let contacts = schema.table("contacts").unwrap();
        assert_eq!(contacts.primary_key, vec![0]);
        assert!(contacts.columns[0].not_null);
        assert!(contacts.columns[1].not_null);
        assert_eq!(contacts.columns[3].default.as_deref(), Some("''"));
        assert_eq!(contacts.columns[6].ty, ColumnType::Blob);
        assert_eq!(contacts.columns[7].ty, ColumnType::Boolean);
        let memberships = schema.table("memberships").unwrap();
        assert_eq!(memberships.primary_key, vec![0, 1]);
        assert!(schema_warnings(&schema).is_empty());
    }

    #[test]
    fn refuses_a_table_without_primary_key_naming_it() {
        let err =
            parse_schema("CREATE TABLE a (id TEXT PRIMARY KEY);\n\nCREATE TABLE notes (\n  body TEXT\n);").unwrap_err();
        assert_eq!(err.table.as_deref(), Some("notes"));
        assert_eq!(err.line, Some(3));
        assert!(err.to_string().starts_with("line 3: table notes: has no PRIMARY KEY"), "{err}");
    }

    #[test]
    fn refuses_an_unsupported_type_naming_table_column_and_line() {
        let err = parse_schema("CREATE TABLE t (\n  id TEXT PRIMARY KEY,\n  born DATE\n);").unwrap_err();
        assert_eq!(
            err.to_string(),
            "line 3: table t, column born: type DATE is not supported; use TEXT, INTEGER, REAL, BLOB or BOOLEAN"
        );
    }

    #[test]
    fn refuses_malformed_sql_with_its_position() {
        let err = parse_schema("CREATE TABLE t (id TEXT PRIMARY KEY,,);").unwrap_err();
        assert!(err.to_string().contains("not valid SQL"), "{err}");
        assert!(err.to_string().contains("Line: 1"), "{err}");
    }

    #[test]
    fn refuses_other_statements_reserved_names_and_real_keys() {
        assert!(parse_schema("DROP TABLE t;").unwrap_err().to_string().contains("only CREATE TABLE"));
        assert!(parse_schema("CREATE TABLE rowsync_x (id TEXT PRIMARY KEY);")
            .unwrap_err()
            .to_string()
            .contains("reserved"));
        assert!(parse_schema("CREATE TABLE t (id REAL PRIMARY KEY);").unwrap_err().to_string().contains("primary key"));
        assert!(parse_schema("CREATE TABLE t (id TEXT PRIMARY KEY, e TEXT UNIQUE);")
            .unwrap_err()
            .to_string()
            .contains("UNIQUE"));
        assert!(parse_schema("").is_err());
    }

    #[test]
    fn warns_about_integer_keys() {
        let schema = parse_schema("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT);").unwrap();
        assert!(schema_warnings(&schema)[0].contains("collide"));
    }

    #[test]
    fn column_defaults_are_values_of_their_type() {
        let schema = parse_schema(
            "CREATE TABLE t (id TEXT PRIMARY KEY, a INTEGER NOT NULL DEFAULT 0, b INTEGER DEFAULT -7, \
             c REAL DEFAULT 1.5, d TEXT DEFAULT 'it''s', e BOOLEAN DEFAULT TRUE, f BLOB DEFAULT X'00ff', \
             g TEXT, h TEXT DEFAULT NULL, i TEXT DEFAULT 42);",
        )
        .unwrap();
        let defaults: Vec<Value> = schema.tables[0].columns.iter().skip(1).map(column_default).collect();
        assert_eq!(
            defaults,
            vec![
                Value::Integer(0),
                Value::Integer(-7),
                Value::Real(1.5),
                Value::Text("it's".into()),
                Value::Integer(1),
                Value::Blob(vec![0, 255]),
                Value::Null,
                Value::Null,
                Value::Text("42".into()),
            ]
        );
        let again: Vec<Value> = schema.tables[0].columns.iter().skip(1).map(column_default).collect();
        assert_eq!(again, defaults, "parsed once, the same values after");
        // The same text under another type is a value of that type.
        let other = Column { name: "x".into(), ty: ColumnType::Real, not_null: false, default: Some("0".into()) };
        assert_eq!(column_default(&other), Value::Real(0.0));
    }
}
