//! Recovering from two situations the server reveals, by giving local
//! writes not yet acknowledged new versions:
//!
//! - **A reused identity.** A replica file restored from a backup, or copied
//!   to a second device, carries the site id and sequence numbers of the
//!   original, and its new writes would be taken for repeats of writes the
//!   server already has (`site_reused`, see `PushRequest::known`). It
//!   takes a new site id; its pending writes keep their clock readings and
//!   take the new site, so they are told apart from whatever the other copy
//!   wrote, and they are sent again. Earlier pulls left the other copy's
//!   writes out as this site's own echoes, so it pulls everything again.
//! - **A clock that ran ahead.** Versions too far ahead of the server's
//!   clock are refused (`clock_skew`), so nobody has seen them. Once the
//!   device's clock is correct again, they are mapped, in order, onto
//!   readings of the corrected clock above every other version the replica
//!   holds, and the local clock is put back: the writes keep their order and
//!   stop being refused.
//!
//! Both rewrite versions of the site in `_rowsync_rows` in one transaction.

use std::collections::{BTreeMap, BTreeSet};

use rowsync_core::clocks::{julian_to_millis, Clocks};
use rowsync_core::Clock;
use rowsync_proto::{Hlc, SiteId, Version};
use rusqlite::types::Value as SqlValue;
use rusqlite::{params, Connection, Transaction, TransactionBehavior};

use crate::bookkeeping::{
    key, load_clock, meta_get, meta_set, read_clocks, save_clock, save_clocks, set_known_batches,
};
use crate::error::ClientError;
use crate::rebuild::start_over;
use crate::replica::Replica;
use crate::stamp::stamp_rest;

/// Every version a row's clocks hold, for reading or rewriting.
fn versions_mut(clocks: &mut Clocks) -> impl Iterator<Item = &mut Version> {
    let Clocks { alive, deleted, cells, pending, held } = clocks;
    alive
        .iter_mut()
        .chain(deleted.iter_mut())
        .chain(cells.iter_mut().flatten())
        .chain(pending.values_mut().filter_map(|p| p.base.as_mut()))
        .chain(held.values_mut().map(|(_, v)| v))
}

/// Rewrites, with `map`, the versions of the rows `rows` selects (a query
/// returning `tbl, pk, clocks`); returns how many rows changed.
fn rewrite_rows(
    conn: &Connection,
    rows: &str,
    mut map: impl FnMut(&Version) -> Option<Version>,
) -> Result<usize, ClientError> {
    let selected: Vec<(i64, SqlValue, String)> = conn
        .prepare(rows)?
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))?
        .collect::<Result<_, _>>()?;
    let mut changed = 0;
    for (table_id, key, json) in selected {
        let mut clocks = read_clocks(&json)?;
        let mut touched = false;
        for version in versions_mut(&mut clocks) {
            if let Some(new) = map(version) {
                *version = new;
                touched = true;
            }
        }
        if touched {
            save_clocks(conn, table_id, &key, &clocks)?;
            changed += 1;
        }
    }
    Ok(changed)
}

impl Replica {
    /// Takes a new site id after the server found this file to be a copy of
    /// the replica (`site_reused`). Every write not yet acknowledged keeps
    /// its clock reading, takes the new site, and will be sent again. Returns
    /// the new site id.
    pub fn take_new_identity(&mut self) -> Result<SiteId, ClientError> {
        let tx = Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)?;
        stamp_rest(self, &tx)?;
        let old = self.site.clone();
        let new = SiteId::from_bytes(rand::random());
        // The rows of the pending writes; other rows hold only writes the
        // server has acknowledged, under the old site.
        let rows = "SELECT r.tbl, r.pk, r.clocks FROM _rowsync_rows r \
                    WHERE EXISTS (SELECT 1 FROM _rowsync_outbox o WHERE o.tbl = r.tbl AND o.pk = r.pk AND o.op != 0)";
        rewrite_rows(&tx, rows, |v| (v.site == old).then(|| Version { hlc: v.hlc, site: new.clone() }))?;
        meta_set(&tx, key::SITE_ID, new.as_str())?;
        // The new site has sent nothing yet. Earlier pulls left out the other
        // copy's writes as this site's own echoes: pull everything again.
        set_known_batches(&tx, &[])?;
        start_over(&tx)?;
        tx.commit()?;
        self.site = new.clone();
        Ok(new)
    }

    /// After a `clock_skew` refusal saying versions may reach `max_clock_ms`
    /// now: when this device's clock is back within it, maps the site's
    /// versions beyond it (refused, so never seen) onto the corrected clock,
    /// keeping their order, and puts the local clock back. Returns how many
    /// rows were re-stamped; `0` when the clock still runs ahead (nothing
    /// changes, the refusal stands).
    pub fn correct_clock(&self, max_clock_ms: u64) -> Result<usize, ClientError> {
        let tx = Transaction::new_unchecked(&self.conn, TransactionBehavior::Immediate)?;
        stamp_rest(self, &tx)?;
        let offset: i64 = meta_get(&tx, key::CLOCK_OFFSET_MS)?.unwrap_or(0);
        let julian_now: f64 = tx.query_row("SELECT julianday('now')", [], |row| row.get(0))?;
        let now_ms = julian_to_millis(julian_now).saturating_add_signed(offset);
        if now_ms > max_clock_ms {
            return Ok(0);
        }
        let limit = Hlc(((max_clock_ms + 1) << Hlc::COUNTER_BITS) - 1);
        // The refused readings, and the newest reading that stays: in a row,
        // or received from the server (a refused write may have outranked
        // it in its row, but a re-stamped one must still come after it).
        let mut refused = BTreeSet::new();
        let mut kept = Hlc(meta_get::<i64>(&tx, key::OBSERVED)?.unwrap_or(0) as u64);
        let all = "SELECT tbl, pk, clocks FROM _rowsync_rows";
        rewrite_rows(&tx, all, |v| {
            if v.site == self.site && v.hlc > limit {
                refused.insert(v.hlc);
            } else {
                kept = kept.max(v.hlc);
            }
            None
        })?;
        // Writes recorded while the clock was ahead and not stamped yet.
        let now_julian = julian_now - (offset as f64) / 86_400_000.0;
        tx.execute("UPDATE _rowsync_outbox SET at = ? WHERE at > ?", params![now_julian, now_julian])?;
        if refused.is_empty() && load_clock(&tx)?.last() <= limit {
            tx.commit()?;
            return Ok(0);
        }
        let mut clock = Clock::new(kept);
        let mapped: BTreeMap<Hlc, Hlc> = refused.into_iter().map(|old| (old, clock.tick(now_ms))).collect();
        let site = &self.site;
        let rows = rewrite_rows(&tx, all, |v| {
            let new = mapped.get(&v.hlc).filter(|_| &v.site == site)?;
            Some(Version { hlc: *new, site: site.clone() })
        })?;
        save_clock(&tx, &clock)?;
        // The server may hold these readings now: a later correction must
        // map above them even once the rows have moved on (otherwise two
        // writes could get one version, and the server would take the
        // second for a repeat of the first).
        meta_set(&tx, key::OBSERVED, clock.last().0 as i64)?;
        tx.commit()?;
        Ok(rows.max(1))
    }
}
