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

/// What a slice grows to, in milliseconds at the last slice's pace: a
/// fifth under [`SLICE_MS`]. On a large file the pace varies by a third and
/// more from one slice to the next (rows land on leaf pages the cache may
/// or may not hold), and a slice sized to the aim at the last pace would
/// often run past it.
pub const GROW_MS: u64 = 20;

/// The size of the next slice, after one of `done` changes took `took_us`
/// microseconds, from [`SMALLEST`] to `most`. It shrinks as soon as a slice
/// ran a tenth over [`SLICE_MS`], to what fits in it at that pace; it grows
/// only when a quarter more would fit in [`GROW_MS`], to what does (a
/// transport fetches the next page ahead at the size asked last, so each
/// change of size wastes that work). A slice that runs long keeps the app
/// waiting for another of its busy handler's retries (see the client's
/// `pace`). Slices too small to show a pace change nothing.
pub fn fit(current: u32, done: u64, took_us: u64, most: u32) -> u32 {
    if done < u64::from(SMALLEST) {
        return current;
    }
    let smallest = u64::from(SMALLEST.min(most));
    let fitting = |ms: u64| (done.saturating_mul(ms * 1_000) / took_us.max(1)).clamp(smallest, most.into());
    let current = u64::from(current);
    let (fits, grown) = (fitting(SLICE_MS), fitting(GROW_MS));
    // Round sizes, so that a steady pace keeps one.
    let round = |size: u64| (size / 100 * 100).max(smallest) as u32;
    if fits * 10 < current * 9 {
        round(fits)
    } else if grown * 4 > current * 5 {
        round(grown)
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
        // 1,000 in 5 ms: it grows to what fits in a fifth less (4,000),
        // and never above the most.
        assert_eq!(fit(1_000, 1_000, 5_000, 5_000), 4_000);
        assert_eq!(fit(1_000, 1_000, 4_000, 5_000), 5_000);
        assert_eq!(fit(1_000, 1_000, 5_000, 2_000), 2_000);
        // A slice quicker than the aim keeps the size; only a quarter more
        // fitting in a fifth less grows it, to a round size.
        assert_eq!(fit(1_000, 1_000, 19_000, 5_000), 1_000);
        assert_eq!(fit(1_000, 1_000, 15_000, 5_000), 1_300);
        // So a slice grown at one pace keeps its size at that pace.
        assert_eq!(fit(1_300, 1_300, 19_500, 5_000), 1_300);
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

    /// Updates of a large file's rows run at paces half again apart from
    /// one slice to the next: a slice grown at a quick pace must not run
    /// far past the aim at the slow pace that follows.
    #[test]
    fn a_pace_that_varies_keeps_slices_near_the_aim() {
        let (mut size, mut longest_us) = (1_000, 0);
        for slice in 0..40 {
            let us_per_change = if slice % 2 == 0 { 6 } else { 9 };
            let took_us = u64::from(size) * us_per_change;
            if slice >= 4 {
                longest_us = longest_us.max(took_us);
            }
            size = fit(size, size.into(), took_us, 5_000);
        }
        assert!(longest_us <= 30_000, "a slice took {longest_us} µs against an aim of {SLICE_MS} ms");
    }
}
