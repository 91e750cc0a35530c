//! The local rowsync replica.
//!
//! An application keeps reading and writing its SQLite file with any SQLite
//! client. Triggers (installed by [`Replica::init`]) record every write in
//! the `_rowsync_outbox` table; [`sync`] later assigns versions to those
//! writes, pulls the server's changes and merges them cell by cell, and
//! pushes the local changes in batches.
//!
//! # Layout
//! - `bookkeeping`: storing the replica's metadata tables (meta values, row versions, open conflicts).
//! - [`replica`]: opening and initializing a replica file; its schema and settings.
//! - [`status`]: what `rowsync status` shows.
//! - [`stamp`]: turning recorded writes into versioned changes (the hybrid clock's send rule).
//! - [`outbox`]: building push batches and dropping what the server acknowledged.
//! - `backlog`: the newest unstamped write of each row, so that a batch stamps only what it needs.
//! - [`apply`]: merging a pulled page into the file, cursor included, in one transaction.
//! - `pace`: leaving the file to the app between sync's write transactions.
//! - [`transport`]: the [`Transport`] trait and its HTTP implementation.
//! - [`conflicts`]: open conflicts of manual-strategy tables, and resolving them.
//! - [`driver`]: runs the steps the sync engine ([`rowsync_core::engine`]) decides on, on the file and a transport.
//! - [`sync`]: one full sync round (pull, push, pull) over a transport: the engine driven until caught up.
//! - [`agent`]: the background agent: syncs by itself on its own threads, noticing local commits and remote news.
//! - [`lock`]: one sync at a time per replica file.
//! - [`audit`]: checking before each sync that capture saw every write (table rebuilds, REPLACE).
//! - `triggers`: whether a table carries exactly rowsync's capture triggers; installing them again.
//! - `rebuild`: downloading everything again, and deleting what the server no longer has.
//! - [`recover`]: new versions for pending writes after a reused identity or a clock that ran ahead.
//! - [`error`]: [`ClientError`], grouped by whose fault it is.
//!
//! Every write transaction rowsync opens is bounded (a pull page, a chunk
//! of stamping, a push batch), and long work leaves the file to the app between
//! its transactions, so the application never waits long for the lock.

pub mod agent;
pub mod apply;
pub mod audit;
mod backlog;
mod bookkeeping;
pub mod conflicts;
pub mod driver;
pub mod error;
pub mod lock;
pub mod outbox;
mod pace;
mod rebuild;
pub mod recover;
pub mod replica;
mod stage;
pub mod stamp;
pub mod status;
pub mod sync;
pub mod transport;
mod triggers;
mod values;

pub use agent::{Agent, AgentOptions, AgentStatus};
pub use conflicts::{OpenConflict, Resolution, Side};
pub use driver::Driver;
pub use error::ClientError;
pub use replica::Replica;
pub use rowsync_core::engine::{Backoff, State};
pub use status::Status;
pub use sync::{sync, sync_showing, SyncOptions, SyncReport};
pub use transport::{HttpTransport, PushInFlight, ReadyPush, ServerAccess, Transport};
pub use values::{from_sql, to_sql};

/// A new random key for a synced row: a UUID (version 4) as text. Keys made
/// on two offline devices must never collide; these do not.
pub fn new_key() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}
