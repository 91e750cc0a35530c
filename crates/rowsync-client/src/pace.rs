//! Leaving the replica file to the app between sync's write transactions.
//!
//! SQLite does not queue writers. An app waiting for the write lock is
//! retried by its busy handler (`sqlite3_busy_timeout`, which nearly every
//! driver uses) 1, 3, 8, 18, 33, 53 ms ... after its first attempt, and gets
//! in only when a retry finds the lock free. Short write transactions that
//! follow each other with short gaps can still keep it out for hundreds of
//! milliseconds: each retry has about the same odds of landing in a gap,
//! and enough of them miss. What bounds its wait is a gap no retry can
//! jump over: the retries up to 33 ms are at most 15 ms apart, so when sync
//! holds the lock for at most about 30 ms and then leaves it free for at
//! least [`GAP`], a retry lands in that gap, and the app waits about 35 ms
//! at most. (`rowsync bench sync` measures the app's longest commit while
//! a backlog is pushed and pulled.)
//!
//! So sync's long work runs in slices of that length (pull pages and
//! stamping chunks, each sized from the pace of the last to take about
//! [`rowsync_core::pace::SLICE_MS`], stamping chunks also ending when
//! their time is up; push batches read from the outbox,
//! and the acknowledgements that drop them)
//! through a [`Pacer`], which keeps the gap between one slice and the next,
//! whichever step they belong to. A short slice needs
//! a short gap only (as long as it took): the few quick transactions of
//! the agent's round after a single commit are not held back.

use std::cell::Cell;
use std::time::{Duration, Instant};

/// How long the file is left free after a slice: as long as the slice
/// took, up to this.
pub(crate) const GAP: Duration = Duration::from_millis(15);

/// Keeps the gap between the slices run through it.
#[derive(Default)]
pub(crate) struct Pacer {
    /// When the last slice ended, and how long it took.
    last: Cell<Option<(Instant, Duration)>>,
}

impl Pacer {
    /// Runs `slice` once the file has been free for the gap the last slice
    /// needs; returns its result and how long it took (the pace that sizes
    /// the next one, see `rowsync_core::pace`).
    pub(crate) fn slice<T>(&self, slice: impl FnOnce() -> T) -> (T, Duration) {
        if let Some((end, took)) = self.last.get() {
            std::thread::sleep(wait(took, end.elapsed()));
        }
        let started = Instant::now();
        let result = slice();
        let took = started.elapsed();
        self.last.set(Some((Instant::now(), took)));
        (result, took)
    }
}

/// How much longer to wait before the next slice, after one that `took`
/// that long and ended `free` ago.
fn wait(took: Duration, free: Duration) -> Duration {
    took.min(GAP).saturating_sub(free)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn a_long_slice_is_followed_by_the_whole_gap() {
        assert_eq!(wait(200 * MS, Duration::ZERO), GAP);
        assert_eq!(wait(200 * MS, 5 * MS), GAP - 5 * MS);
        assert_eq!(wait(200 * MS, GAP), Duration::ZERO);
    }

    #[test]
    fn a_short_slice_is_followed_by_a_gap_as_long_as_it_took() {
        assert_eq!(wait(4 * MS, Duration::ZERO), 4 * MS);
        assert_eq!(wait(4 * MS, MS), 3 * MS);
        assert_eq!(wait(4 * MS, 10 * MS), Duration::ZERO);
    }

    #[test]
    fn slices_run_through_a_pacer_are_kept_apart() {
        let pacer = Pacer::default();
        let mut times = Vec::new();
        for _ in 0..3 {
            pacer.slice(|| {
                let started = Instant::now();
                std::thread::sleep(GAP);
                times.push((started, Instant::now()));
            });
        }
        for pair in times.windows(2) {
            let free = pair[1].0.duration_since(pair[0].1);
            assert!(free >= GAP, "the file was free for {free:?} only");
        }
    }
}
