//! Hybrid logical clocks.
//!
//! A version must say *when* a write happened (so the later edit wins a
//! conflict) while never going backwards on one site and always landing after
//! everything the site has already seen (so an edit made after receiving a
//! remote change beats that change even when the local wall clock is behind).
//! The hybrid clock gives both: it follows the wall clock when it can and a
//! counter when it must.

use rowsync_proto::Hlc;

/// One site's clock state: the largest reading issued or observed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Clock {
    last: Hlc,
}

impl Clock {
    pub fn new(last: Hlc) -> Clock {
        Clock { last }
    }

    pub fn last(&self) -> Hlc {
        self.last
    }

    /// The version of a local write made at `wall_ms`: the wall time when it is
    /// ahead of everything seen, otherwise one tick after the last reading.
    pub fn tick(&mut self, wall_ms: u64) -> Hlc {
        let wall = Hlc::from_millis(wall_ms);
        self.last = if wall > self.last { wall } else { Hlc(self.last.0 + 1) };
        self.last
    }

    /// The receive rule: a remote reading moves the clock forward, so the next
    /// local write is ordered after it.
    pub fn observe(&mut self, remote: Hlc) {
        if remote > self.last {
            self.last = remote;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_wall_time_and_never_goes_back() {
        let mut clock = Clock::default();
        let a = clock.tick(1_000);
        assert_eq!(a, Hlc::from_millis(1_000));
        let b = clock.tick(1_000);
        assert!(b > a);
        let c = clock.tick(900); // wall clock stepped back
        assert!(c > b);
        assert_eq!(clock.tick(2_000), Hlc::from_millis(2_000));
    }

    #[test]
    fn a_write_after_receiving_orders_after_the_remote_write() {
        let mut clock = Clock::default();
        clock.tick(1_000);
        let remote = Hlc::from_millis(5_000_000); // a site whose clock runs ahead
        clock.observe(remote);
        let local = clock.tick(1_001);
        assert!(local > remote);
    }
}
