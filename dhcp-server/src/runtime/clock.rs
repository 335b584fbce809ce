//! The one clock of a running server: seconds since the Unix epoch, read by the shard
//! loops, the failover link and the control side, and passed into the protocol code
//! (which never reads time itself). Tests run servers on a clock they move by hand.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Clone)]
pub struct Clock(Source);

#[derive(Clone)]
enum Source {
    System,
    Manual(Arc<AtomicU64>),
}

impl Clock {
    /// The machine's wall clock.
    pub fn system() -> Self {
        Clock(Source::System)
    }

    /// A clock that stands at `start` until `set` or `advance` moves it; clones share it.
    pub fn manual(start: u64) -> Self {
        Clock(Source::Manual(Arc::new(AtomicU64::new(start))))
    }

    /// Seconds since the Unix epoch.
    pub fn now(&self) -> u64 {
        match &self.0 {
            Source::System => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            Source::Manual(t) => t.load(Ordering::SeqCst),
        }
    }

    /// Moves a manual clock forward by `secs`; the system clock moves by itself.
    pub fn advance(&self, secs: u64) {
        if let Source::Manual(t) = &self.0 {
            t.fetch_add(secs, Ordering::SeqCst);
        }
    }
}

impl Default for Clock {
    fn default() -> Self {
        Clock::system()
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Source::System => f.write_str("Clock::system"),
            Source::Manual(t) => write!(f, "Clock::manual({})", t.load(Ordering::SeqCst)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told_and_clones_share_it() {
        let c = Clock::manual(1_000);
        let d = c.clone();
        assert_eq!(c.now(), 1_000);
        d.advance(5);
        assert_eq!(c.now(), 1_005);
        assert!(Clock::system().now() > 1_700_000_000);
    }
}
