//! The backlog: outbox entries not stamped yet, and for each row written
//! there, its newest entry.
//!
//! A push batch carries each row's current values with the versions of the
//! writes that made them, so before a row is read for a batch every write
//! to it must be stamped, its later ones included: a value whose write is
//! not stamped yet would go out under an older write's version. Stamping
//! the whole backlog before the first batch does that, but then the server
//! waits for all of it (about a quarter of a large push). With the newest
//! entry of each row at hand, a batch stamps only as far as its own rows
//! need, and the rest is stamped while earlier batches are on their way.
//!
//! The index is built by one scan of the unstamped entries when a batch
//! first needs it (in a read transaction: a million entries take a few
//! hundred milliseconds, too long to hold the write lock), and entries
//! written since (the app goes on writing during a push) are scanned as
//! they come. It is dropped when nothing is left to stamp, and built anew
//! once everything it holds is stamped. Rows are told apart by a 64-bit
//! hash of their table and stored key: two rows sharing one only make a
//! batch stamp further than it must.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, DefaultHasher, Hash, Hasher};

use rowsync_core::capture::OP_SET_ASIDE;
use rusqlite::types::ValueRef;
use rusqlite::{params, Connection};

use crate::bookkeeping::{key, meta_get};
use crate::error::ClientError;
use crate::stamp::stamping_marks;

/// What a push knows of the unstamped outbox; empty until a batch needs it.
#[derive(Default)]
pub(crate) struct Backlog(Option<Scanned>);

/// The newest entry of each row written after entry `from`, up to entry
/// `scanned`.
struct Scanned {
    from: i64,
    scanned: i64,
    /// By row hash.
    newest: HashMap<u64, i64, BuildHasherDefault<RowHashes>>,
}

impl Backlog {
    /// How far the outbox must be stamped before `rows` (table id and
    /// stored key of a batch's entries, the newest of them `through`) can
    /// be read: to the newest entry of any of them, and at least to
    /// `through`.
    pub(crate) fn must_stamp_through<'a>(
        &mut self,
        conn: &Connection,
        through: i64,
        rows: impl Iterator<Item = (i64, ValueRef<'a>)>,
    ) -> Result<i64, ClientError> {
        self.refresh(conn, through)?;
        let Some(scanned) = &self.0 else { return Ok(through) };
        Ok(rows.filter_map(|(table, key)| scanned.newest.get(&row_hash(table, key)).copied()).fold(through, i64::max))
    }

    /// Whether every write to the rows of stamped entries (the newest
    /// `through`) is still stamped, after [`Backlog::must_stamp_through`]
    /// was asked about them and they were stamped: the app may have written
    /// one since.
    pub(crate) fn still_stamped<'a>(
        &mut self,
        conn: &Connection,
        through: i64,
        rows: impl Iterator<Item = (i64, ValueRef<'a>)>,
    ) -> Result<bool, ClientError> {
        let stamped: i64 = meta_get(conn, key::STAMPED_ID)?.unwrap_or(0);
        match (self.refresh(conn, through)?, &self.0) {
            (Some(true), Some(scanned)) => Ok(rows
                .filter_map(|(table, key)| scanned.newest.get(&row_hash(table, key)))
                .all(|&newest| newest <= stamped)),
            // Nothing written since: the rows were stamped as far as they
            // needed.
            _ => Ok(true),
        }
    }

    /// Brings the index up to date: `None` when stamping through entry
    /// `through` would leave nothing unstamped (the index is dropped),
    /// otherwise whether it took in entries it did not hold.
    pub(crate) fn refresh(&mut self, conn: &Connection, through: i64) -> Result<Option<bool>, ClientError> {
        let (stamped, newest) = stamping_marks(conn)?;
        if newest <= through.max(stamped) {
            self.0 = None;
            return Ok(None);
        }
        // An index whose entries are all stamped is built anew (so is one
        // from before a stamping mark that went back, which sync never does
        // but a file restored from a backup may show).
        let mut scanned = match self.0.take() {
            Some(scanned) if scanned.from <= stamped && scanned.scanned > stamped => scanned,
            _ => Scanned { from: stamped, scanned: stamped, newest: HashMap::default() },
        };
        let took = scanned.scan(conn, newest)?;
        self.0 = Some(scanned);
        Ok(Some(took))
    }
}

impl Scanned {
    /// Takes in the entries after those scanned, up to entry `newest`;
    /// returns whether there were any.
    fn scan(&mut self, conn: &Connection, newest: i64) -> Result<bool, ClientError> {
        if newest <= self.scanned {
            return Ok(false);
        }
        let mut select =
            conn.prepare_cached("SELECT id, tbl, pk FROM _rowsync_outbox WHERE id > ? AND id <= ? AND op != ?")?;
        let mut entries = select.query(params![self.scanned, newest, OP_SET_ASIDE])?;
        // At most one row per entry: sized once rather than grown by doubling.
        self.newest.reserve(usize::try_from(newest - self.scanned).unwrap_or(0));
        // In id order: a row's newest entry comes last.
        while let Some(entry) = entries.next()? {
            self.newest.insert(row_hash(entry.get(1)?, entry.get_ref(2)?), entry.get(0)?);
        }
        self.scanned = newest;
        Ok(true)
    }
}

/// A row's hash: its table id and stored key, by storage class.
fn row_hash(table: i64, key: ValueRef) -> u64 {
    let mut hasher = DefaultHasher::new();
    table.hash(&mut hasher);
    match key {
        ValueRef::Null => 0u8.hash(&mut hasher),
        ValueRef::Integer(i) => (1u8, i).hash(&mut hasher),
        ValueRef::Real(r) => (2u8, r.to_bits()).hash(&mut hasher),
        ValueRef::Text(t) => (3u8, t).hash(&mut hasher),
        ValueRef::Blob(b) => (4u8, b).hash(&mut hasher),
    }
    hasher.finish()
}

/// The map's hasher: its keys are row hashes already.
#[derive(Default)]
struct RowHashes(u64);

impl Hasher for RowHashes {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(byte);
        }
    }

    fn write_u64(&mut self, hash: u64) {
        self.0 = hash;
    }
}
