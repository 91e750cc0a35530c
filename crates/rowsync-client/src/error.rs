//! Errors of the client library, grouped by what the caller can do about them.

use rowsync_proto::{ErrorCode, Protocols};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server could not be reached (or said it is unavailable). Nothing
    /// was lost; sync again later.
    #[error("cannot reach the server at {url}: {detail}")]
    Unreachable { url: String, detail: String },
    /// The server refused a request. Retrying the same request will not help.
    #[error("the server refused the request ({code:?}): {message}")]
    Refused {
        status: u16,
        code: ErrorCode,
        message: String,
        /// The refused change of a push batch.
        change: Option<usize>,
        /// With `clock_skew`: the latest wall time a version may carry now.
        max_clock_ms: Option<u64>,
    },
    /// The server refused this replica's credentials (no token, or one that
    /// is malformed, unknown, expired or revoked). Nothing was applied; give
    /// the replica a valid token (`rowsync init … --token`).
    #[error("the server at {url} refused this replica's token: {message}")]
    Unauthorized { url: String, message: String },
    /// The server's certificate did not verify against the roots this
    /// replica trusts (the system's, or the CA given to `rowsync init
    /// --ca-file`). Nothing was sent.
    #[error(
        "the server at {url} did not prove who it is ({detail}); if its certificate comes from a CA of your \
         own, give that CA with `rowsync init … --ca-file CA.pem`"
    )]
    Untrusted { url: String, detail: String },
    /// The certificates given to trust (`--ca-file`) cannot be used.
    #[error("cannot trust these certificates: {0}")]
    BadCa(String),
    /// The server speaks only protocol versions older than this rowsync's:
    /// its answers are not read. Nothing is lost; upgrade the server.
    #[error(
        "the server at {url} is too old for this rowsync: it speaks rowsync protocol {server}, this rowsync \
         speaks {ours}; upgrade the server"
    )]
    ServerTooOld { url: String, server: Protocols, ours: Protocols },
    /// The server speaks only protocol versions newer than this rowsync's:
    /// its answers are not read. Nothing is lost; upgrade rowsync here.
    #[error(
        "the server at {url} is newer than this rowsync: it speaks rowsync protocol {server}, this rowsync \
         speaks {ours}; upgrade rowsync on this device"
    )]
    ServerTooNew { url: String, server: Protocols, ours: Protocols },
    /// The server answered something that is not rowsync's protocol.
    #[error("unexpected answer from the server: {0}")]
    Protocol(String),
    /// The file is not a rowsync replica.
    #[error("{path} is not a rowsync replica (run `rowsync init {path} --server URL` first)")]
    NotAReplica { path: String },
    /// The file was written by a newer rowsync, in a format this one does
    /// not know; it is left untouched.
    #[error(
        "{path} was written by a newer rowsync (replica file format {format}; this rowsync reads formats up to \
         {known}): upgrade rowsync to use it"
    )]
    FormatTooNew { path: String, format: i64, known: i64 },
    /// The local file's tables do not match the server's schema.
    #[error("{0}")]
    SchemaMismatch(String),
    /// The replica file cannot be written (its permissions, or a read-only
    /// disk): nothing was done.
    #[error(
        "{path} cannot be written (the file, or the disk it is on, is read-only): make it writable and sync \
         again; nothing was lost"
    )]
    ReadOnly { path: String },
    /// The local SQLite file could not be read or written. Whatever sync
    /// was writing was rolled back: nothing was lost.
    #[error("{}", local_failure(.0))]
    Sqlite(#[from] rusqlite::Error),
    /// A conflict resolution that cannot be carried out (unknown id, bad
    /// value, row gone). Nothing was written.
    #[error("{0}")]
    BadResolution(String),
    /// Local metadata is damaged.
    #[error("replica metadata is damaged: {0}")]
    Corrupt(String),
    /// Another process is syncing the same replica file and did not finish
    /// in time. Nothing was done; sync again later.
    #[error("another rowsync process is syncing {path} (waited {} s); try again when it is done", waited.as_secs())]
    Busy { path: String, waited: std::time::Duration },
    /// A file beside the replica (its sync lock) could not be used.
    #[error("{0}")]
    Io(String),
}

impl ClientError {
    /// True when the server could not be reached: try again later.
    pub fn is_unreachable(&self) -> bool {
        matches!(self, ClientError::Unreachable { .. })
    }

    /// True when the server refused the replica's token.
    pub fn is_unauthorized(&self) -> bool {
        matches!(self, ClientError::Unauthorized { .. })
    }
}

/// What a failure of the local file means: a full disk and a read-only file
/// say what to do about them.
fn local_failure(error: &rusqlite::Error) -> String {
    match error.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DiskFull) => {
            format!("the disk holding the replica is full ({error}): free some space and sync again; nothing was lost")
        }
        Some(rusqlite::ErrorCode::ReadOnly) => format!(
            "the replica file is read-only ({error}): make it, and the directory it is in, writable and sync again; \
             nothing was lost"
        ),
        _ => format!("local database error: {error}"),
    }
}
