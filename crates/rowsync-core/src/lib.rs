//! Pure rowsync logic: no I/O, no async runtime, no database driver.
//!
//! Both the client and the server decide through this crate, so a replica
//! and the server always pick the same winner for the same versions.
//!
//! # Layout
//! - [`schema`]: `CREATE TABLE` text into the synced [`Schema`](rowsync_proto::Schema).
//! - [`ddl`]: the `CREATE TABLE` text each database gets for a synced table.
//! - [`evolution`]: how a schema grows (added tables and columns) and which changes are refused.
//! - [`capture`]: the SQL text of the replica's metadata tables and capture triggers.
//! - [`clock`]: the hybrid logical clock's send and receive rules.
//! - [`clocks`]: a replica's versions of one row, and recording a local write in them.
//! - [`merge`]: a row's state and the merge of two states (last writer wins per cell).
//! - [`horizon`]: which tombstones the server may forget, and what it must then refuse.
//! - [`change`]: checking a wire change against the schema and turning it into a row state.
//! - [`protocol`]: whether a client and a server speak a protocol version in common.
//! - [`pace`]: how much of sync's long work goes in one transaction on a replica.
//! - [`engine`]: a replica's sync decisions as a state machine (what to run next, retries, status).

pub mod capture;
pub mod change;
pub mod clock;
pub mod clocks;
pub mod ddl;
pub mod engine;
pub mod evolution;
pub mod horizon;
pub mod merge;
pub mod pace;
pub mod protocol;
pub mod schema;

pub use change::{ChangeError, DecodedChange};
pub use clock::Clock;
pub use evolution::{evolve, schema_changes, Addition, Evolution, SchemaChange};
pub use merge::{CellConflict, CellMemory, MergeOutcome, RowState};
pub use schema::{parse_schema, schema_warnings, SchemaError};
