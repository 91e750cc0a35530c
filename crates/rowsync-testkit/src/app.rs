//! An app that keeps writing to a replica file while sync runs beside it.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// An app committing one new contact at a time to a replica file, a few
/// milliseconds apart, while sync runs beside it (and is killed): as a phone
/// app does. Its connection is a plain one that waits for the lock as
/// Python's `sqlite3` does (SQLite's busy handler, up to `busy`).
pub struct AppWriter {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Written>,
}

/// What an [`AppWriter`] did.
#[derive(Debug)]
pub struct Written {
    /// Commits that succeeded (rows `PREFIX-w000001` ...).
    pub commits: usize,
    /// The longest a commit took, waiting for the lock included.
    pub longest: Duration,
    /// Commits that failed, with SQLite's error ("database is locked" ...).
    pub errors: Vec<String>,
}

impl AppWriter {
    pub fn start(path: &Path, prefix: &str, busy: Duration) -> AppWriter {
        let stop = Arc::new(AtomicBool::new(false));
        let (path, prefix, stopped) = (path.to_path_buf(), prefix.to_string(), stop.clone());
        let thread = std::thread::spawn(move || {
            let app = rusqlite::Connection::open(&path).unwrap();
            app.busy_timeout(busy).unwrap();
            let mut written = Written { commits: 0, longest: Duration::ZERO, errors: Vec::new() };
            while !stopped.load(Ordering::Relaxed) {
                let id = format!("{prefix}-w{:06}", written.commits + 1);
                let started = Instant::now();
                match app.execute("INSERT INTO contacts (id, name) VALUES (?, 'w')", [&id]) {
                    Ok(_) => written.commits += 1,
                    Err(e) => written.errors.push(e.to_string()),
                }
                written.longest = written.longest.max(started.elapsed());
                std::thread::sleep(Duration::from_millis(3));
            }
            written
        });
        AppWriter { stop, thread }
    }

    pub fn stop(self) -> Written {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}
