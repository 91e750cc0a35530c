//! One sync at a time per replica file.
//!
//! Two processes syncing one file at once (a background agent and a manual
//! `rowsync sync`, two shells) would each read the same outbox entries and
//! acknowledge them separately. Entries are never acknowledged away unseen
//! (outbox ids never restart, see `outbox::acknowledge`), but two syncs
//! still race over the cursor and waste work, so each sync holds an
//! exclusive lock on a file beside the replica, `<replica>-rowsync-lock`.
//!
//! It is an operating-system file lock (`flock` on Unix, `LockFileEx` on
//! Windows), not a marker in the file: the OS releases it when its process
//! ends, even by a crash or SIGKILL, so a dead sync never blocks the next.

use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::ClientError;

/// Held while a sync runs; dropping it releases the lock.
#[derive(Debug)]
pub struct SyncLock {
    _file: File,
}

/// The lock file of the replica at `replica`.
pub fn lock_path(replica: &Path) -> PathBuf {
    let mut name = replica.as_os_str().to_owned();
    name.push("-rowsync-lock");
    PathBuf::from(name)
}

impl SyncLock {
    /// Takes the sync lock of the replica at `replica`, waiting up to `wait`
    /// for another process to finish its sync.
    pub fn acquire(replica: &Path, wait: Duration) -> Result<SyncLock, ClientError> {
        let path = lock_path(replica);
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| ClientError::Io(format!("cannot open the sync lock {}: {e}", path.display())))?;
        let started = Instant::now();
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(SyncLock { _file: file }),
                Err(TryLockError::WouldBlock) if started.elapsed() < wait => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(TryLockError::WouldBlock) => {
                    return Err(ClientError::Busy { path: replica.display().to_string(), waited: wait })
                }
                Err(TryLockError::Error(e)) => {
                    return Err(ClientError::Io(format!("cannot lock {}: {e}", path.display())))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_waits_then_gives_up_and_a_released_lock_is_free() {
        let dir = tempfile::tempdir().unwrap();
        let replica = dir.path().join("a.db");
        let first = SyncLock::acquire(&replica, Duration::ZERO).unwrap();
        let refused = SyncLock::acquire(&replica, Duration::from_millis(50)).unwrap_err();
        assert!(matches!(refused, ClientError::Busy { .. }), "{refused}");
        assert!(refused.to_string().contains("another rowsync process is syncing"), "{refused}");
        drop(first);
        SyncLock::acquire(&replica, Duration::ZERO).unwrap();
    }
}
