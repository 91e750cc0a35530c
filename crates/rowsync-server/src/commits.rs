//! Waking long-polling pulls when a change commits.
//!
//! A pull that asks to `wait` and finds nothing after its cursor waits here
//! rather than asking the database again and again: a waiting client costs
//! the database nothing until a change for it commits, and then it pulls
//! once. [`Commits`] holds the newest committed position this server process
//! knows of. It learns of its own pushes at once (after their commit), and of
//! other processes' on the same database through the store
//! ([`Store::follow_commits`](crate::Store::follow_commits)): PostgreSQL
//! notifies every listener at commit, and on SQLite and MySQL one cheap read
//! of the position counter per process, every [`POLL_EVERY`] and only while
//! someone waits, stands in for that.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio::time::Instant;

/// How often a process without commit notifications reads the position
/// counter while pulls wait.
pub const POLL_EVERY: Duration = Duration::from_millis(25);

/// The most pulls that wait at once in one server process; a pull beyond
/// that is answered at once, as if its wait had ended.
pub const MAX_WAITERS: usize = 10_000;

/// How a wait for a commit ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Waited {
    /// A change past the cursor has committed.
    Committed,
    /// The wait ran out, the server is shutting down, or too many wait.
    Ended,
}

/// The newest committed position known to this server process, and the
/// pulls waiting for it to move.
#[derive(Debug)]
pub struct Commits {
    newest: watch::Sender<u64>,
    closed: watch::Sender<bool>,
    waiters: AtomicUsize,
    /// Signalled when a pull starts waiting, so a poller can sleep while
    /// nobody waits.
    first_waiter: Notify,
}

impl Commits {
    pub fn new(newest: u64) -> Commits {
        Commits {
            newest: watch::Sender::new(newest),
            closed: watch::Sender::new(false),
            waiters: AtomicUsize::new(0),
            first_waiter: Notify::new(),
        }
    }

    /// A change committed at `position` (positions never go back, so an
    /// older one changes nothing).
    pub fn committed(&self, position: u64) {
        self.newest.send_if_modified(|newest| {
            let moved = position > *newest;
            if moved {
                *newest = position;
            }
            moved
        });
    }

    /// The newest committed position known.
    pub fn newest(&self) -> u64 {
        *self.newest.borrow()
    }

    /// How many pulls wait now.
    pub fn waiting(&self) -> usize {
        self.waiters.load(Ordering::Relaxed)
    }

    /// Waits until a pull is waiting (returns at once if one is).
    pub async fn someone_waits(&self) {
        loop {
            // Registered before the check, so a waiter arriving in between
            // is not missed.
            let signalled = self.first_waiter.notified();
            tokio::pin!(signalled);
            signalled.as_mut().enable();
            if self.waiting() > 0 {
                return;
            }
            signalled.await;
        }
    }

    /// Ends every wait now and from now on (the server is shutting down).
    pub fn close(&self) {
        self.closed.send_replace(true);
    }

    /// Waits until a change after `cursor` has committed, or until `until`.
    pub async fn wait_past(&self, cursor: u64, until: Instant) -> Waited {
        let mut newest = self.newest.subscribe();
        let mut closed = self.closed.subscribe();
        if *newest.borrow_and_update() > cursor {
            return Waited::Committed;
        }
        if *closed.borrow_and_update() || self.waiters.fetch_add(1, Ordering::AcqRel) >= MAX_WAITERS {
            self.waiters.fetch_sub(1, Ordering::AcqRel);
            return Waited::Ended;
        }
        self.first_waiter.notify_waiters();
        let _leave = Leave(&self.waiters);
        let moved = newest.wait_for(|&newest| newest > cursor);
        tokio::select! {
            result = moved => if result.is_ok() { Waited::Committed } else { Waited::Ended },
            _ = closed.wait_for(|&closed| closed) => Waited::Ended,
            _ = tokio::time::sleep_until(until) => Waited::Ended,
        }
    }
}

/// Counts a waiter out however its wait ends (the pull may be dropped when
/// its client goes away).
struct Leave<'a>(&'a AtomicUsize);

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_commit_past_the_cursor_wakes_a_waiting_pull_and_an_older_one_does_not() {
        let commits = std::sync::Arc::new(Commits::new(10));
        let until = Instant::now() + Duration::from_secs(30);
        assert_eq!(commits.wait_past(5, until).await, Waited::Committed, "already past");
        let waiter = {
            let commits = commits.clone();
            tokio::spawn(async move { commits.wait_past(10, until).await })
        };
        commits.someone_waits().await;
        assert_eq!(commits.waiting(), 1);
        commits.committed(9);
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished(), "an older position wakes nobody");
        commits.committed(11);
        assert_eq!(waiter.await.unwrap(), Waited::Committed);
        assert_eq!(commits.waiting(), 0);
    }

    #[tokio::test]
    async fn a_wait_ends_with_its_time_and_with_the_server() {
        let commits = std::sync::Arc::new(Commits::new(0));
        let soon = Instant::now() + Duration::from_millis(20);
        assert_eq!(commits.wait_past(0, soon).await, Waited::Ended);
        let waiter = {
            let commits = commits.clone();
            tokio::spawn(async move { commits.wait_past(0, Instant::now() + Duration::from_secs(30)).await })
        };
        commits.someone_waits().await;
        commits.close();
        assert_eq!(waiter.await.unwrap(), Waited::Ended);
        assert_eq!(commits.wait_past(0, Instant::now() + Duration::from_secs(30)).await, Waited::Ended);
    }
}
