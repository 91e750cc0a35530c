//! The store: where the server's source of truth lives.
//!
//! One trait, one adapter per database. Type mapping and SQL dialect live in
//! the adapters and nowhere else. Every adapter keeps the same bookkeeping,
//! in tables whose names begin with `rowsync_`:
//! - `rowsync_meta`: the installed schema and the position counter;
//! - `rowsync_rows`: per synced row, its full merged state (values and
//!   versions, tombstones included) and the position of its latest change;
//! - `rowsync_sites`: per replica, the high-water mark of applied site sequences.
//!
//! A pull returns the rows whose position lies after the cursor, in position
//! order. A row changed again moves to a new position, so the change log
//! compacts itself: a puller never receives a row's superseded states.

pub mod plan;
mod sqlite;

use std::future::Future;

use rowsync_core::DecodedChange;
use rowsync_proto::{PushResponse, Schema, SiteId};

pub use sqlite::SqliteStore;

/// Why a store operation failed, grouped by what the caller should do.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached; the request may be retried later.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The database holds something rowsync did not expect.
    #[error("{0}")]
    Conflict(String),
    /// Any other database failure.
    #[error("database error: {0}")]
    Database(String),
}

impl StoreError {
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> StoreError {
        match err {
            sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Tls(_) => {
                StoreError::Unavailable(err.to_string())
            }
            other => StoreError::Database(other.to_string()),
        }
    }
}

/// A page of changes as raw JSON row states, ready to be sent as they are.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PullPage {
    pub states: Vec<String>,
    pub cursor: u64,
    pub more: bool,
}

/// A change of a push batch, already checked against the schema.
#[derive(Debug, Clone)]
pub struct CheckedChange {
    pub seq: u64,
    pub change: DecodedChange,
}

/// The operations every server database supports.
pub trait Store: Send + Sync + 'static {
    /// Creates the bookkeeping and the schema's tables when missing, and
    /// returns the schema the database serves: `schema` when given (it must
    /// match one installed earlier), otherwise the one installed earlier.
    fn install(&self, schema: Option<&Schema>) -> impl Future<Output = Result<Schema, StoreError>> + Send;

    /// Applies one push batch in one transaction, skipping changes at or below
    /// the site's high-water mark and recording the new mark in the same
    /// transaction.
    fn push(
        &self,
        schema: &Schema,
        site: &SiteId,
        last_seq: u64,
        changes: &[CheckedChange],
    ) -> impl Future<Output = Result<PushResponse, StoreError>> + Send;

    /// The row states changed after `cursor`, oldest first, at most `limit`
    /// positions. With `site`, states that are exactly what that site pushed
    /// are left out (it has them already); the cursor still moves past them.
    fn pull(
        &self,
        cursor: u64,
        limit: u32,
        site: Option<&SiteId>,
    ) -> impl Future<Output = Result<PullPage, StoreError>> + Send;

    /// Whether the database answers.
    fn ping(&self) -> impl Future<Output = Result<(), StoreError>> + Send;
}
