//! How much of sync's long work to do in one write transaction on a
//! replica.
//!
//! The app's writes wait for each of sync's transactions on its file, so
//! sync's long work (applying a backlog of pulled changes, stamping a
//! backlog of local writes) is cut into slices of about [`SLICE_MS`], with
//! the file left to the app between them (the client's pacer keeps those
//! gaps). How many changes fit in a slice depends on the rows and on the
//! machine, so it is learnt from the pace of the last slice: [`fit`].

/// About how long one of sync's write transactions on a replica may take,
/// in milliseconds.
pub const SLICE_MS: u64 = 25;

/// The fewest changes a slice is sized to: below it, a slice's fixed costs
/// (a transaction, a request) would dominate.
pub const SMALLEST: u32 = 100;

/// The size of the next slice, after one of `done` changes took `took_us`
/// microseconds: as many as fit in [`SLICE_MS`] at that pace, from
/// [`SMALLEST`] to `most`. Slices too small to show a pace change nothing.
/// The size grows only when a quarter more would fit (work fetched ahead at
/// the size asked last is not wasted for a small change), but shrinks as
/// soon as a slice ran a tenth over: slices vary by a third from one to the
/// next on a large file, and one that runs long keeps the app waiting for
/// another of its busy handler's retries (see the client's `pace`).
pub fn fit(current: u32, done: u64, took_us: u64, most: u32) -> u32 {
    if done < u64::from(SMALLEST) {
        return current;
    }
    let smallest = u64::from(SMALLEST.min(most));
    let fits = (done.saturating_mul(SLICE_MS * 1_000) / took_us.max(1)).clamp(smallest, most.into());
    let current = u64::from(current);
    if fits * 10 < current * 9 || fits * 4 > current * 5 {
        // Round sizes, so that a steady pace keeps one.
        (fits / 100 * 100).max(smallest) as u32
    } else {
        current as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_are_sized_to_take_about_a_slice() {
        // 1,000 changes in 50 ms: 500 fit in 25 ms.
        assert_eq!(fit(1_000, 1_000, 50_000, 5_000), 500);
        // 1,000 in 5 ms: 5,000 would fit, and that is the most.
        assert_eq!(fit(1_000, 1_000, 5_000, 5_000), 5_000);
        assert_eq!(fit(1_000, 1_000, 5_000, 2_000), 2_000);
        // A slice a little quicker than the aim keeps the size; only a
        // quarter more fitting grows it, to a round size.
        assert_eq!(fit(1_000, 1_000, 21_000, 5_000), 1_000);
        assert_eq!(fit(1_000, 1_000, 19_000, 5_000), 1_300);
        // A slice a little slower than the aim keeps it too, but one a
        // tenth over shrinks it.
        assert_eq!(fit(1_000, 1_000, 27_000, 5_000), 1_000);
        assert_eq!(fit(1_000, 1_000, 30_000, 5_000), 800);
        // Huge rows: never below the smallest, nor above the most.
        assert_eq!(fit(1_000, 1_000, 10_000_000, 5_000), 100);
        assert_eq!(fit(1_000, 1_000, 10_000_000, 40), 40);
        // A slice too small to show a pace (the last of a backlog) changes
        // nothing, nor does one that took no time at all overflow.
        assert_eq!(fit(1_000, 3, 10_000_000, 5_000), 1_000);
        assert_eq!(fit(1_000, 1_000, 0, 5_000), 5_000);
    }
}
