//! Validated server settings, and [`run`], which serves until told to stop.

use std::future::Future;
use std::path::PathBuf;

use rowsync_proto::Schema;
use tokio::net::TcpListener;

use crate::http::{app, AppState, DEFAULT_BODY_LIMIT};
use crate::store::{SqliteStore, Store, StoreError};

/// Where the server's source of truth lives.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DatabaseUrl {
    Sqlite(PathBuf),
}

impl DatabaseUrl {
    /// Accepts `sqlite://PATH` (or a bare path). PostgreSQL and MySQL URLs are
    /// recognised and refused with a clear message until their stores land.
    pub fn parse(url: &str) -> Result<DatabaseUrl, String> {
        if let Some(path) = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")) {
            if path.is_empty() {
                return Err("sqlite:// needs a file path, as in sqlite://server.db".into());
            }
            return Ok(DatabaseUrl::Sqlite(PathBuf::from(path)));
        }
        for scheme in ["postgres://", "postgresql://", "mysql://", "mariadb://"] {
            if url.starts_with(scheme) {
                return Err(format!(
                    "{} stores are not available in this version of rowsync yet; use sqlite://PATH",
                    scheme.trim_end_matches("://")
                ));
            }
        }
        if url.contains("://") {
            return Err(format!("unknown database URL {url:?}: use sqlite://PATH"));
        }
        Ok(DatabaseUrl::Sqlite(PathBuf::from(url)))
    }
}

#[derive(Clone, Debug)]
pub struct ServerConfig {
    pub database: DatabaseUrl,
    /// The schema from `--schema`; `None` serves the one stored earlier.
    pub schema: Option<Schema>,
    pub body_limit: usize,
}

impl ServerConfig {
    pub fn new(database: DatabaseUrl, schema: Option<Schema>) -> ServerConfig {
        ServerConfig { database, schema, body_limit: DEFAULT_BODY_LIMIT }
    }
}

/// Opens the store, installs the schema, and serves on `listener` until
/// `shutdown` completes.
pub async fn run(
    config: ServerConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StoreError> {
    match &config.database {
        DatabaseUrl::Sqlite(path) => {
            let store = SqliteStore::open(path).await?;
            serve(store, &config, listener, shutdown).await
        }
    }
}

async fn serve<S: Store>(
    store: S,
    config: &ServerConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StoreError> {
    let schema = store.install(config.schema.as_ref()).await?;
    let router = app(AppState::new(store, schema), config.body_limit);
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|e| StoreError::Unavailable(format!("serving HTTP failed: {e}")))
}
