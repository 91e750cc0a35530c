//! The stores the suite runs against, and reading a server database
//! directly to compare it with the replicas.
//!
//! PostgreSQL and MariaDB come from `scripts/test`, which starts throwaway
//! servers and exports their admin URLs as `ROWSYNC_TEST_POSTGRES` and
//! `ROWSYNC_TEST_MYSQL`; every test gets a database of its own on them.
//! A missing variable fails the test with how to fix it: never a skip.

use std::path::Path;

use rowsync_proto::Value;
use rowsync_server::DatabaseUrl;
use sqlx::{Connection, Row, TypeInfo, ValueRef};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TestStore {
    Sqlite,
    Postgres { admin_url: String },
    Mysql { admin_url: String },
}

fn required(var: &str, what: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!(
            "{var} is not set, so the {what} tests cannot run. Run the suite with ./scripts/test, which starts \
             throwaway PostgreSQL and MariaDB servers (installing the Debian packages postgresql and \
             mariadb-server when missing), or point {var} at an admin URL of a server you own."
        )
    })
}

/// The stores with a server of their own (PostgreSQL, MySQL/MariaDB).
pub fn server_stores() -> Vec<TestStore> {
    test_stores().into_iter().filter(|s| *s != TestStore::Sqlite).collect()
}

/// Every store the suite must pass on: the embedded SQLite store, PostgreSQL
/// and MySQL/MariaDB.
pub fn test_stores() -> Vec<TestStore> {
    vec![
        TestStore::Sqlite,
        TestStore::Postgres { admin_url: required("ROWSYNC_TEST_POSTGRES", "PostgreSQL") },
        TestStore::Mysql { admin_url: required("ROWSYNC_TEST_MYSQL", "MySQL/MariaDB") },
    ]
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime")
}

impl TestStore {
    pub fn name(&self) -> &'static str {
        match self {
            TestStore::Sqlite => "sqlite",
            TestStore::Postgres { .. } => "postgres",
            TestStore::Mysql { .. } => "mysql",
        }
    }

    /// Takes the database server away (`stop`) or brings it back (`start`),
    /// with the control script `scripts/test` exported.
    pub fn control(&self, action: &str) {
        let var = match self {
            TestStore::Sqlite => panic!("the embedded SQLite store has no server to stop"),
            TestStore::Postgres { .. } => "ROWSYNC_TEST_POSTGRES_CTL",
            TestStore::Mysql { .. } => "ROWSYNC_TEST_MYSQL_CTL",
        };
        let script = required(var, self.name());
        let status = std::process::Command::new(&script).arg(action).status().expect("run the database control script");
        assert!(status.success(), "{script} {action} failed");
    }

    /// A new, empty database for one test.
    pub fn fresh_database(&self, dir: &Path) -> DatabaseUrl {
        let name = format!("rowsync_{}", crate::new_key().replace('-', ""));
        match self {
            TestStore::Sqlite => DatabaseUrl::Sqlite(dir.join(format!("{name}.db"))),
            TestStore::Postgres { admin_url } => {
                runtime().block_on(async {
                    let mut admin = sqlx::PgConnection::connect(admin_url).await.expect("connect to test PostgreSQL");
                    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut admin).await.expect("create database");
                });
                DatabaseUrl::Postgres(admin_url.clone()).on_same_server(&name).expect("a server URL")
            }
            TestStore::Mysql { admin_url } => {
                runtime().block_on(async {
                    let mut admin = sqlx::MySqlConnection::connect(admin_url).await.expect("connect to test MariaDB");
                    sqlx::query(&format!("CREATE DATABASE {name} CHARACTER SET utf8mb4 COLLATE utf8mb4_bin"))
                        .execute(&mut admin)
                        .await
                        .expect("create database");
                });
                DatabaseUrl::Mysql(admin_url.clone()).on_same_server(&name).expect("a server URL")
            }
        }
    }
}

/// Every row of a query on a server database, as wire values. BOOLEAN
/// columns read as integers 0/1, as SQLite stores them.
pub fn query_database(database: &DatabaseUrl, sql: &str) -> Vec<Vec<Value>> {
    match database {
        DatabaseUrl::Sqlite(path) => {
            crate::query_rows(&rusqlite::Connection::open(path).expect("open server store"), sql)
        }
        DatabaseUrl::Postgres(url) => runtime().block_on(async {
            let mut conn = sqlx::PgConnection::connect(url).await.expect("connect");
            let rows = sqlx::query(sql).fetch_all(&mut conn).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
            rows.iter().map(|row| (0..row.columns().len()).map(|i| pg_value(row, i)).collect()).collect()
        }),
        DatabaseUrl::Mysql(url) => runtime().block_on(async {
            let mut conn = sqlx::MySqlConnection::connect(url).await.expect("connect");
            let rows = sqlx::query(sql).fetch_all(&mut conn).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
            rows.iter().map(|row| (0..row.columns().len()).map(|i| mysql_value(row, i)).collect()).collect()
        }),
    }
}

/// Runs `sql` (one or more statements) on the server's database on a
/// connection of its own, as another program writing to it would.
pub fn exec_database(database: &DatabaseUrl, sql: &str) {
    match database {
        DatabaseUrl::Sqlite(path) => {
            let conn = rusqlite::Connection::open(path).expect("open server store");
            conn.busy_timeout(std::time::Duration::from_secs(30)).expect("busy timeout");
            conn.execute_batch(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
        DatabaseUrl::Postgres(url) => runtime().block_on(async {
            let mut conn = sqlx::PgConnection::connect(url).await.expect("connect");
            sqlx::raw_sql(sql).execute(&mut conn).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
        }),
        DatabaseUrl::Mysql(url) => runtime().block_on(async {
            let mut conn = sqlx::MySqlConnection::connect(url).await.expect("connect");
            sqlx::raw_sql(sql).execute(&mut conn).await.unwrap_or_else(|e| panic!("{sql}: {e}"));
        }),
    }
}

/// A connection of its own to a server database, kept between statements:
/// another program holding a transaction open while others commit.
pub struct Session {
    runtime: tokio::runtime::Runtime,
    conn: SessionConnection,
}

enum SessionConnection {
    Sqlite(rusqlite::Connection),
    Postgres(sqlx::PgConnection),
    Mysql(sqlx::MySqlConnection),
}

impl Session {
    pub fn open(database: &DatabaseUrl) -> Session {
        let runtime = runtime();
        let conn = match database {
            DatabaseUrl::Sqlite(path) => {
                SessionConnection::Sqlite(rusqlite::Connection::open(path).expect("open server store"))
            }
            DatabaseUrl::Postgres(url) => {
                SessionConnection::Postgres(runtime.block_on(sqlx::PgConnection::connect(url)).expect("connect"))
            }
            DatabaseUrl::Mysql(url) => {
                SessionConnection::Mysql(runtime.block_on(sqlx::MySqlConnection::connect(url)).expect("connect"))
            }
        };
        Session { runtime, conn }
    }

    /// Runs `sql` (one or more statements) on this connection.
    pub fn exec(&mut self, sql: &str) {
        let outcome = match &mut self.conn {
            SessionConnection::Sqlite(conn) => conn.execute_batch(sql).map_err(|e| e.to_string()),
            SessionConnection::Postgres(conn) => {
                self.runtime.block_on(sqlx::raw_sql(sql).execute(conn)).map(drop).map_err(|e| e.to_string())
            }
            SessionConnection::Mysql(conn) => {
                self.runtime.block_on(sqlx::raw_sql(sql).execute(conn)).map(drop).map_err(|e| e.to_string())
            }
        };
        outcome.unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

fn pg_value(row: &sqlx::postgres::PgRow, i: usize) -> Value {
    let raw = row.try_get_raw(i).expect("column");
    if raw.is_null() {
        return Value::Null;
    }
    let ty = raw.type_info().name().to_string();
    match ty.as_str() {
        "INT8" => Value::Integer(row.get::<i64, _>(i)),
        "INT4" => Value::Integer(row.get::<i32, _>(i).into()),
        "INT2" => Value::Integer(row.get::<i16, _>(i).into()),
        "FLOAT8" => Value::Real(row.get::<f64, _>(i)),
        "BOOL" => Value::Integer(row.get::<bool, _>(i).into()),
        "BYTEA" => Value::Blob(row.get::<Vec<u8>, _>(i)),
        "TEXT" | "VARCHAR" | "NAME" | "BPCHAR" => Value::Text(row.get::<String, _>(i)),
        "NUMERIC" => Value::Text(row.get::<String, _>(i)),
        other => panic!("test helper cannot read PostgreSQL type {other}"),
    }
}

fn mysql_value(row: &sqlx::mysql::MySqlRow, i: usize) -> Value {
    let raw = row.try_get_raw(i).expect("column");
    if raw.is_null() {
        return Value::Null;
    }
    let ty = raw.type_info().name().to_string();
    match ty.as_str() {
        "BIGINT" | "INT" | "SMALLINT" | "TINYINT" | "MEDIUMINT" => Value::Integer(row.get::<i64, _>(i)),
        "BOOLEAN" => Value::Integer(row.get::<bool, _>(i).into()),
        "BIGINT UNSIGNED" => Value::Integer(row.get::<u64, _>(i) as i64),
        "DOUBLE" | "FLOAT" => Value::Real(row.get::<f64, _>(i)),
        "VARCHAR" | "CHAR" | "TEXT" | "LONGTEXT" | "MEDIUMTEXT" | "TINYTEXT" => Value::Text(row.get::<String, _>(i)),
        // MySQL reports binary-collated text (rowsync's text keys) as binary.
        "VARBINARY" | "BINARY" => {
            let bytes = row.get::<Vec<u8>, _>(i);
            String::from_utf8(bytes.clone()).map(Value::Text).unwrap_or(Value::Blob(bytes))
        }
        "BLOB" | "LONGBLOB" | "MEDIUMBLOB" | "TINYBLOB" => Value::Blob(row.get::<Vec<u8>, _>(i)),
        other => panic!("test helper cannot read MySQL type {other}"),
    }
}
