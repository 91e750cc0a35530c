//! Running randomized tests from seeds, so that the same commit always gets
//! the same verdict and every failure can be replayed.
//!
//! A randomized test draws everything from one seed. In the test suite (and
//! so in CI) it runs a fixed set: the seeds `0..n` plus the regression seeds
//! that once found a bug, each kept with what it found. Fresh seeds are for
//! exploring, on demand:
//! - `ROWSYNC_SEED=S` replays seed `S` alone;
//! - `ROWSYNC_EXPLORE=N` runs `N` fresh random seeds instead of the fixed
//!   set, goes on after a failure, and ends by listing every failing seed
//!   (`scripts/explore` does this for every randomized test).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// A seed that once found a bug, and what it found.
pub struct Regression {
    pub seed: u64,
    pub found: &'static str,
}

/// Which seeds a run uses, from the environment.
fn seeds(fixed: u64, regressions: &[Regression]) -> (Vec<u64>, &'static str) {
    if let Ok(seed) = std::env::var("ROWSYNC_SEED") {
        let seed = seed.trim().parse().unwrap_or_else(|_| panic!("ROWSYNC_SEED={seed:?} is not a number"));
        return (vec![seed], "replayed");
    }
    if let Ok(count) = std::env::var("ROWSYNC_EXPLORE") {
        let count: u64 = count.trim().parse().unwrap_or_else(|_| panic!("ROWSYNC_EXPLORE={count:?} is not a number"));
        return ((0..count).map(|_| rand::random()).collect(), "fresh");
    }
    let mut seeds: Vec<u64> = regressions.iter().map(|r| r.seed).collect();
    seeds.extend(0..fixed);
    (seeds, "fixed")
}

/// Runs `case` once per seed on `threads` threads. Every failing seed is
/// printed with the command that replays it; the run fails at the end if
/// any did.
pub fn run_seeded(name: &str, fixed: u64, regressions: &[Regression], threads: usize, case: impl Fn(u64) + Sync) {
    let (seeds, kind) = seeds(fixed, regressions);
    let next = AtomicUsize::new(0);
    let failed = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(&seed) = seeds.get(i) else { return };
                if std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| case(seed))).is_err() {
                    eprintln!("{name}: seed {seed} failed; replay with ROWSYNC_SEED={seed}");
                    failed.lock().unwrap_or_else(|e| e.into_inner()).push(seed);
                }
            });
        }
    });
    let failed = failed.into_inner().unwrap_or_else(|e| e.into_inner());
    assert!(
        failed.is_empty(),
        "{name}: {} of {} {kind} seeds failed: {failed:?} (replay one with ROWSYNC_SEED=<seed>)",
        failed.len(),
        seeds.len()
    );
    eprintln!("{name}: {} {kind} seeds passed", seeds.len());
}
