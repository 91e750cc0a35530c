//! Wire types spoken between rowsync replicas and the rowsync server.
//!
//! This crate is deliberately thin: plain data with serde, no I/O and no
//! decisions. Everything that *decides* (merging, validation, clocks) lives in
//! `rowsync-core`, so that both sides of the wire share one implementation.
//!
//! # Layout
//! - [`Value`]: one SQL value, with an exact JSON form (i64 and f64 round-trip).
//! - [`Hlc`], [`SiteId`], [`Version`]: hybrid logical clocks and their tie-break.
//! - [`RowChange`]: the full state of one row as one side knows it.
//! - [`PushRequest`] / [`PushResponse`], [`PullRequest`] / [`PullResponse`]: the `/v1` messages.
//! - [`Schema`]: the synced tables, served at `GET /v1/schema`.
//! - [`ErrorBody`] and [`ErrorCode`]: every 4xx/5xx answer.
//! - [`Protocols`]: the protocol versions each side speaks, stated in a header.

mod schema;
mod value;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use schema::{Column, ColumnType, ConflictStrategy, Schema, Table};
pub use value::Value;

/// The header in which each side of a `/v1` exchange states the protocol
/// versions it speaks ([`Protocols`] in its wire form: `1`, or `1-2`).
pub const PROTOCOL_HEADER: &str = "rowsync-protocol";

/// The versions of the `/v1` protocol one side speaks, oldest to newest.
///
/// A replica sends its range with every request and the server answers with
/// its own; a side that finds no version in common refuses, naming which one
/// to upgrade, instead of misreading the other's messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Protocols {
    pub oldest: u32,
    pub newest: u32,
}

impl Protocols {
    /// The versions this build speaks.
    pub const SPOKEN: Protocols = Protocols { oldest: 1, newest: 1 };
    /// What a side that states nothing speaks: rowsync from before versions
    /// were stated spoke version 1.
    pub const UNSTATED: Protocols = Protocols { oldest: 1, newest: 1 };
}

impl fmt::Display for Protocols {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.oldest == self.newest {
            write!(f, "{}", self.oldest)
        } else {
            write!(f, "{}-{}", self.oldest, self.newest)
        }
    }
}

impl std::str::FromStr for Protocols {
    type Err = String;
    fn from_str(s: &str) -> Result<Protocols, String> {
        let number = |n: &str| n.trim().parse::<u32>().ok();
        let range = match s.split_once('-') {
            Some((oldest, newest)) => number(oldest).zip(number(newest)),
            None => number(s).map(|n| (n, n)),
        };
        match range {
            Some((oldest, newest)) if oldest <= newest => Ok(Protocols { oldest, newest }),
            _ => Err(format!("protocol versions must read N or OLDEST-NEWEST, got {s:?}")),
        }
    }
}

/// A hybrid logical clock reading: wall milliseconds since the Unix epoch in
/// the high 48 bits, a logical counter in the low 16 bits.
///
/// Packing both into one `u64` keeps comparisons a single integer compare and
/// lets SQLite store it as an ordinary INTEGER.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Hlc(pub u64);

impl Hlc {
    /// Bits given to the logical counter.
    pub const COUNTER_BITS: u32 = 16;

    /// The clock reading for a wall time in milliseconds, counter zero.
    pub fn from_millis(ms: u64) -> Hlc {
        Hlc(ms << Self::COUNTER_BITS)
    }

    /// Wall-clock part in milliseconds since the Unix epoch.
    pub fn millis(self) -> u64 {
        self.0 >> Self::COUNTER_BITS
    }

    /// Logical counter part.
    pub fn counter(self) -> u16 {
        (self.0 & 0xffff) as u16
    }
}

impl fmt::Display for Hlc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.millis(), self.counter())
    }
}

/// A replica's identity: 16 random bytes, written as 32 lowercase hex digits.
///
/// Lowercase hex of equal length sorts like the bytes it encodes, so the
/// string order is the tie-break order. The digits are held inline: every
/// version carries a site id, and a version is copied wherever a cell is,
/// so cloning one must not allocate.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SiteId([u8; 32]);

impl SiteId {
    /// The site id used for versions written by the server itself.
    pub fn server() -> SiteId {
        SiteId([b'0'; 32])
    }

    /// The site id of writes made directly in the server's database (not
    /// through rowsync).
    pub fn direct() -> SiteId {
        let mut digits = [b'0'; 32];
        digits[31] = b'1';
        SiteId(digits)
    }

    /// Builds a site id from 16 bytes.
    pub fn from_bytes(bytes: [u8; 16]) -> SiteId {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut digits = [0; 32];
        for (pair, byte) in digits.chunks_exact_mut(2).zip(bytes) {
            pair[0] = HEX[usize::from(byte >> 4)];
            pair[1] = HEX[usize::from(byte & 0xf)];
        }
        SiteId(digits)
    }

    pub fn as_str(&self) -> &str {
        // Only lowercase hex digits are ever stored (see `from_str`).
        std::str::from_utf8(&self.0).expect("a site id is ASCII")
    }
}

impl std::str::FromStr for SiteId {
    type Err = String;
    fn from_str(s: &str) -> Result<SiteId, String> {
        match <[u8; 32]>::try_from(s.as_bytes()) {
            Ok(digits) if digits.iter().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(b)) => Ok(SiteId(digits)),
            _ => Err(format!("site id must be 32 lowercase hex digits, got {s:?}")),
        }
    }
}

impl TryFrom<String> for SiteId {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<SiteId> for String {
    fn from(s: SiteId) -> String {
        s.as_str().to_owned()
    }
}

impl fmt::Display for SiteId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for SiteId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SiteId({:?})", self.as_str())
    }
}

impl Serialize for SiteId {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for SiteId {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<SiteId, D::Error> {
        struct Digits;
        impl serde::de::Visitor<'_> for Digits {
            type Value = SiteId;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("32 lowercase hex digits")
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<SiteId, E> {
                s.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Digits)
    }
}

/// The version of one write: its clock, then the writing site as tie-break.
/// Versions are totally ordered, so every replica picks the same winner.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Version {
    pub hlc: Hlc,
    pub site: SiteId,
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.hlc, &self.site.as_str()[..8])
    }
}

/// One column of a row with the version of the write that produced it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Cell {
    pub column: String,
    pub value: Value,
    /// The cell's version; when absent, the change's `version`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<Version>,
    /// Sent by a replica, for tables under the manual strategy only: present
    /// when the replica wrote this cell and the server has not acknowledged it, and
    /// then the version of the cell it wrote over (`null`: it had seen no
    /// value). The server compares it with the version it holds to tell an
    /// edit of the current value from a concurrent one.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "present")]
    pub base: Option<Option<Version>>,
    /// Sent by the server, for tables under the manual strategy only: what
    /// it remembers of the cell to classify the next write to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<CellMemory>,
}

/// What the server remembers of a manual table's cell besides its value.
/// Clients may ignore it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CellMemory {
    /// The value the cell's value replaced (a later conflict's base value).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<Written>,
    /// Other versions of the cell's current value: the same value written
    /// twice, or the write behind a value the server gave its own version.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<Version>,
    /// The newest write of each site the server processed for this cell.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub writers: Vec<Version>,
}

/// Reads a field that may be `null` as `Some(None)`, so that "absent" and
/// "null" stay different.
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

/// Reads a present value, `null` included, as `Some`.
fn some_value<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(deserializer).map(Some)
}

/// One side of a conflict: a value and the version of the write that made it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Written {
    pub value: Value,
    pub version: Version,
}

/// An open conflict on one column of a row under the manual strategy: two
/// sites changed it concurrently, the server kept the value it had (`kept`)
/// and holds the other one here, so nothing is lost.
///
/// A conflict hangs on a version of its cell (`at`): it stays open while the
/// cell holds that version and closes everywhere once a later write to the
/// cell (a resolution) has been made with the conflict in view.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Conflict {
    /// Stable id, derived from the row, the column and the refused write.
    pub id: String,
    pub column: String,
    /// The cell version this conflict is attached to.
    pub at: Version,
    /// The version the refused write was made over (`None`: it had seen no
    /// value, as when two sites insert the same key).
    pub base: Option<Version>,
    /// The base's value, when the server still knew it.
    #[serde(default, skip_serializing_if = "Option::is_none", deserialize_with = "some_value")]
    pub base_value: Option<Value>,
    /// The value the server kept (the row shows it).
    pub kept: Written,
    /// The concurrent value the server did not apply.
    pub other: Written,
}

/// The state of one row as the sender knows it.
///
/// A change always carries the whole row: every column with the version of
/// the write that produced it, plus the row's delete tombstone if it has one.
/// Sending state rather than operations makes applying a change idempotent and
/// order-independent: merging is a per-cell maximum (see `rowsync-core`).
/// A row is visible when its newest write (insert or cell) is newer than its
/// newest delete.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RowChange {
    pub table: String,
    /// Primary key values, in the table's primary key column order.
    pub key: Vec<Value>,
    /// The newest insert of this key the sender has seen, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alive: Option<Version>,
    /// The version of every cell that does not carry its own. Rows written
    /// in one go have one version for all cells, so this keeps changes small.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<Version>,
    /// The newest delete this row has seen, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deleted: Option<Version>,
    /// Every column of the row (empty when the sender only knows a delete).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cells: Vec<Cell>,
    /// Open conflicts on this row (manual strategy only, sent by the server).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conflicts: Vec<Conflict>,
}

impl RowChange {
    /// Every version the change carries.
    pub fn versions(&self) -> impl Iterator<Item = &Version> {
        let cells = self.cells.iter().filter_map(|c| c.version.as_ref());
        cells.chain(self.alive.as_ref()).chain(self.version.as_ref()).chain(self.deleted.as_ref())
    }

    /// About how many bytes the change takes in its JSON form: an estimate
    /// for bounding batches by size, not an exact count.
    pub fn wire_size(&self) -> usize {
        const VERSION: usize = 80;
        let key: usize = self.key.iter().map(Value::wire_size).sum();
        let cells: usize = self
            .cells
            .iter()
            .map(|c| c.column.len() + c.value.wire_size() + 16 + if c.version.is_some() { VERSION } else { 0 })
            .sum();
        self.table.len() + key + cells + 3 * VERSION + self.conflicts.len() * 8 * VERSION + 64
    }
}

/// `POST /v1/push` body: a batch of a site's changes, oldest first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PushRequest {
    pub site: SiteId,
    /// The site sequence number of the newest outbox entry in this batch.
    /// The server records it as the site's high-water mark in the same
    /// transaction that applies the batch.
    pub last_seq: u64,
    /// A random id of this request, the same in every copy of it (a retry
    /// or a duplicate on the network). The server remembers the last one it
    /// applied for the site.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<u64>,
    /// The ids of this replica's requests the server may have applied last:
    /// its last acknowledged one and those sent since (empty before its
    /// first; absent when it does not know). When the last request the server
    /// applied for the site is none of them (nor this one), another copy of
    /// the replica (a file restored from a backup, or copied to a second
    /// device) pushed with the same site id and sequence numbers: the server
    /// refuses with `site_reused`, since it would otherwise take this copy's
    /// new writes for repeats of that one's and acknowledge them away.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub known: Option<Vec<u64>>,
    pub changes: Vec<PushedChange>,
}

/// One change in a push batch with the site sequence it covers: a
/// [`RowChange`]'s fields with `seq` beside them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(from = "PushedFields")]
pub struct PushedChange {
    /// The newest site sequence number folded into this change. The server
    /// skips a change whose `seq` is at or below the site's high-water mark.
    pub seq: u64,
    #[serde(flatten)]
    pub row: RowChange,
}

/// A [`PushedChange`] as it is read, its fields and its row's side by side
/// (as [`RowChange`] reads them). Read through `flatten`, every change was
/// first buffered whole, each of its strings and numbers copied, and then
/// read again (about 7% of a push into the embedded store, measured).
#[derive(Deserialize)]
#[serde(expecting = "struct PushedChange")]
struct PushedFields {
    seq: u64,
    table: String,
    key: Vec<Value>,
    #[serde(default)]
    alive: Option<Version>,
    #[serde(default)]
    version: Option<Version>,
    #[serde(default)]
    deleted: Option<Version>,
    #[serde(default)]
    cells: Vec<Cell>,
    #[serde(default)]
    conflicts: Vec<Conflict>,
}

impl From<PushedFields> for PushedChange {
    fn from(f: PushedFields) -> PushedChange {
        let row = RowChange {
            table: f.table,
            key: f.key,
            alive: f.alive,
            version: f.version,
            deleted: f.deleted,
            cells: f.cells,
            conflicts: f.conflicts,
        };
        PushedChange { seq: f.seq, row }
    }
}

/// `POST /v1/push` answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PushResponse {
    /// Every outbox entry at or below this site sequence is durable on the
    /// server and may be deleted by the client.
    pub acked_seq: u64,
    /// How many changes of the batch were applied (the rest were repeats).
    pub applied: u64,
}

/// `GET /v1/pull` parameters, as the client sends them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PullRequest {
    /// The pulling site: states exactly as it pushed them are left out.
    pub site: SiteId,
    /// Changes after this position.
    pub cursor: u64,
    /// At most this many positions.
    pub limit: u32,
    /// As [`PushRequest::known`]: a copy of a replica would otherwise skip
    /// the other copy's writes as its own echoes.
    pub known: Option<Vec<u64>>,
    /// A download of everything from the start (`full=N`): `N` is the
    /// [`PullResponse::began`] of its first page (any value on the first
    /// page itself). Its cursor is refused only if a delete was forgotten
    /// since it began, beyond the cursor, and its last page ends past the
    /// tombstone horizon (see [`ErrorCode::CursorExpired`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub full: Option<u64>,
}

/// `GET /v1/pull` answer: changes after `cursor` in commit order.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PullResponse {
    pub changes: Vec<RowChange>,
    /// Pass this as `cursor` to get the next page.
    pub cursor: u64,
    /// True when more changes lie beyond `cursor` right now.
    pub more: bool,
    /// The version of the schema the server serves ([`Schema::version`]):
    /// a replica on an older one takes on the new schema before applying
    /// the page, whose rows may carry the new columns and tables.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_version: Option<u64>,
    /// On a page of a download from the start (`full`): the tombstone
    /// horizon's position when the download began, to send back as `full`
    /// on its next pages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub began: Option<u64>,
}

/// Stable, machine-readable error codes. Never renamed once published.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The body is not valid JSON of the expected shape.
    MalformedBody,
    /// The body is larger than the server accepts.
    BodyTooLarge,
    /// A change names a table the schema does not have.
    UnknownTable,
    /// A change names a column its table does not have.
    UnknownColumn,
    /// A value does not fit its column's type or constraints.
    InvalidValue,
    /// A change's key does not match the table's primary key.
    InvalidKey,
    /// A query parameter is missing or malformed.
    InvalidParameter,
    /// No such route.
    NotFound,
    /// The server's database cannot be reached right now; retry later.
    Unavailable,
    /// A version lies further ahead of the server's clock than it accepts:
    /// the writing device's clock runs ahead. Nothing was applied.
    ClockSkew,
    /// The server holds writes of this site that this replica never sent:
    /// the replica file was restored from a backup or copied to another
    /// device. Nothing was applied; the replica takes a new site id and sends
    /// its pending writes again.
    SiteReused,
    /// The route exists but does not take this HTTP method.
    MethodNotAllowed,
    /// The body's `Content-Encoding` is not one the server reads (gzip or none).
    UnsupportedEncoding,
    /// The request carries no valid token (missing, malformed, unknown,
    /// expired or revoked). Nothing was applied.
    Unauthorized,
    /// The token is valid but its user may not do this (a row another user
    /// owns, a device registered by another user). Nothing was applied.
    Forbidden,
    /// Too many requests with this token; the `Retry-After` header says when
    /// to come back. Nothing was applied.
    RateLimited,
    /// The client and the server speak no protocol version in common; the
    /// message says which of them to upgrade. Nothing was applied.
    ProtocolMismatch,
    /// The pull's cursor lies below the tombstone horizon: deletes it had
    /// not pulled were forgotten since. The replica must download
    /// everything again (`full`) and reconcile what it holds.
    CursorExpired,
    /// A pushed write for a row the server forgot (its delete was collected
    /// behind the tombstone horizon) is no newer than that delete may have
    /// been: it is refused rather than revive the row. `change` says which.
    ForgottenRow,
    /// A bug or unexpected failure on the server.
    Internal,
    /// A code this version does not know (sent by a newer server).
    #[serde(other)]
    Other,
}

/// Body of every error answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: ErrorCode,
    pub message: String,
    /// For a refused push: the index of the change that was refused. The
    /// rest of the batch was not applied either and may be sent again
    /// without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change: Option<usize>,
    /// With `clock_skew`: the latest wall time (Unix milliseconds) a
    /// version may carry right now. Versions beyond it were refused, and so
    /// never seen by anyone: a replica whose clock has been corrected
    /// re-stamps them below it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_clock_ms: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pushed change reads back as it was written, every field of its row
    /// included (a field RowChange gains must be read beside `seq` too).
    #[test]
    fn a_pushed_change_reads_back_whole() {
        let version = |n| Version { hlc: Hlc(n), site: SiteId::from_bytes([n as u8; 16]) };
        let written = Written { value: Value::Text("kept".into()), version: version(4) };
        let row = RowChange {
            table: "contacts".into(),
            key: vec![Value::Text("ann".into()), Value::Integer(7)],
            alive: Some(version(1)),
            version: Some(version(2)),
            deleted: Some(version(3)),
            cells: vec![Cell {
                column: "name".into(),
                value: Value::Blob(vec![0, 1, 2]),
                version: Some(version(5)),
                base: Some(Some(version(6))),
                memory: Some(CellMemory {
                    previous: Some(written.clone()),
                    aliases: vec![version(7)],
                    writers: vec![],
                }),
            }],
            conflicts: vec![Conflict {
                id: "c1".into(),
                column: "name".into(),
                at: version(5),
                base: None,
                base_value: Some(Value::Null),
                kept: written.clone(),
                other: written,
            }],
        };
        let pushed = PushedChange { seq: 42, row };
        let json = serde_json::to_string(&pushed).unwrap();
        assert!(json.starts_with("{\"seq\":42,\"table\":\"contacts\""), "{json}");
        assert_eq!(serde_json::from_str::<PushedChange>(&json).unwrap(), pushed);
        let bare: PushedChange = serde_json::from_str(r#"{"seq":1,"table":"t","key":[1]}"#).unwrap();
        assert_eq!((bare.seq, bare.row.cells.len(), bare.row.alive), (1, 0, None));
        // As before: fields in any order, unknown ones ignored, and the
        // errors name the type.
        let later: PushedChange =
            serde_json::from_str(r#"{"table":"t","key":[1],"future":{"x":[1]},"seq":9}"#).unwrap();
        assert_eq!((later.seq, later.row.table.as_str()), (9, "t"));
        let err = serde_json::from_str::<PushedChange>(r#"{"table":"t","key":[1]}"#).unwrap_err().to_string();
        assert!(err.contains("missing field `seq`"), "{err}");
        let err = serde_json::from_str::<PushedChange>("7").unwrap_err().to_string();
        assert!(err.contains("struct PushedChange"), "{err}");
    }

    #[test]
    fn site_ids_read_and_write_as_32_lowercase_hex_digits_and_sort_as_their_text() {
        let a = SiteId::from_bytes([0x0f; 16]);
        let b = SiteId::from_bytes([0xa0; 16]);
        assert_eq!(a.as_str(), "0f".repeat(16));
        assert_eq!(serde_json::to_string(&b).unwrap(), format!("\"{}\"", "a0".repeat(16)));
        assert_eq!(serde_json::from_str::<SiteId>(&format!("\"{}\"", "a0".repeat(16))).unwrap(), b);
        assert_eq!(a < b, a.as_str() < b.as_str());
        assert!(SiteId::server() < SiteId::direct() && SiteId::direct() < a);
        // The tie-break order (DESIGN invariant 5) is the text's and the
        // bytes', for ids differing in any digit, high or low, digit or letter.
        let mut ids: Vec<SiteId> = (0..=255u8)
            .flat_map(|b| {
                [
                    SiteId::from_bytes([b; 16]),
                    SiteId::from_bytes([0x5a ^ b, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, b]),
                ]
            })
            .collect();
        let mut texts: Vec<String> = ids.iter().map(SiteId::to_string).collect();
        ids.sort();
        texts.sort();
        assert_eq!(ids.iter().map(SiteId::to_string).collect::<Vec<_>>(), texts);
        let mut bytes: Vec<[u8; 16]> = (0..=255u8).map(|b| [b; 16]).collect();
        bytes.reverse();
        let mut by_bytes: Vec<SiteId> = bytes.iter().map(|b| SiteId::from_bytes(*b)).collect();
        by_bytes.sort();
        assert_eq!(by_bytes, (0..=255u8).map(|b| SiteId::from_bytes([b; 16])).collect::<Vec<_>>());
        assert_eq!(SiteId::direct().to_string(), format!("{}1", "0".repeat(31)));
        for bad in ["0F".repeat(16), "0".repeat(31), "0".repeat(33), "g".repeat(32)] {
            let err = serde_json::from_str::<SiteId>(&format!("\"{bad}\"")).unwrap_err();
            assert!(err.to_string().contains("32 lowercase hex digits"), "{bad}: {err}");
            assert!(SiteId::try_from(bad).is_err());
        }
    }
}
