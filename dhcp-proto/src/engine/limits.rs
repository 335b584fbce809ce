//! Lease limits (dhcpd's `lease limit`, Kea's limits hook): how many leases, offered or
//! active, the members of a class hold, or those sharing one value of a matching class
//! (one circuit id, one remote id). One table is shared by every shard of a server, since
//! the clients of one circuit are steered to different workers: a fixed array of atomic
//! counters found by hashing (class, value), so taking a lease under its limit is one
//! compare-and-swap and no worker ever waits for another.
//!
//! Entries are never removed, so a counter keeps its place for the life of the server and
//! a lease remembers where it counted. The table is sized at start from the addresses the
//! server manages; a table that fills up stops counting new values (the limit is then not
//! enforced for them, and `overflowed` says how often).

use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// Where a lease counted: positions in the table; `NONE` for no counter.
pub type Charge = [u32; MAX_CHARGES];

/// A lease counts against at most this many limits: in practice one per subscriber
/// line (circuit id) and one per service class.
pub const MAX_CHARGES: usize = 2;
pub const NONE: u32 = u32::MAX;
pub const NO_CHARGE: Charge = [NONE; MAX_CHARGES];

#[derive(Debug)]
struct Entry {
    /// Hash of (class, value); 0 is an empty entry.
    key: AtomicU64,
    count: AtomicU32,
}

#[derive(Debug)]
pub struct Limits {
    entries: Box<[Entry]>,
    hasher: hashbrown::DefaultHashBuilder,
    overflowed: AtomicU64,
}

impl Limits {
    /// A table for about `values` distinct (class, value) pairs; none when nothing is
    /// limited.
    pub fn new(values: usize) -> Self {
        let n = if values == 0 {
            0
        } else {
            (values * 2).next_power_of_two().max(64)
        };
        Limits {
            entries: (0..n)
                .map(|_| Entry {
                    key: AtomicU64::new(0),
                    count: AtomicU32::new(0),
                })
                .collect(),
            hasher: Default::default(),
            overflowed: AtomicU64::new(0),
        }
    }

    /// What `(class, value)` is found by: hashing alone, without touching the table,
    /// for a message that may not need its counter.
    pub fn key(&self, class: u16, value: &[u8]) -> u64 {
        self.hasher.hash_one((class, value)).max(1)
    }

    /// The counter of a `key`, placed on first use.
    pub fn place_key(&self, key: u64) -> Option<u32> {
        if self.entries.is_empty() {
            return None;
        }
        let mask = self.entries.len() - 1;
        let mut i = key as usize & mask;
        for _ in 0..self.entries.len().min(64) {
            let e = &self.entries[i];
            match e
                .key
                .compare_exchange(0, key, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Some(i as u32),
                Err(k) if k == key => return Some(i as u32),
                Err(_) => i = (i + 1) & mask,
            }
        }
        self.overflowed.fetch_add(1, Ordering::Relaxed);
        None
    }

    /// Takes one lease under `limit` at `at`: false, and nothing taken, when it is reached.
    pub fn take(&self, at: u32, limit: u32) -> bool {
        let c = &self.entries[at as usize].count;
        c.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < limit).then_some(n + 1)
        })
        .is_ok()
    }

    /// Counts a lease whatever the limit: one that exists already (replayed from the
    /// journal, or granted by the failover partner).
    pub fn force(&self, at: u32) {
        self.entries[at as usize]
            .count
            .fetch_add(1, Ordering::AcqRel);
    }

    /// A lease ended: its counters go down.
    pub fn release(&self, charge: &Charge) {
        for &at in charge.iter().filter(|&&a| a != NONE) {
            let c = &self.entries[at as usize].count;
            let _ = c.fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        }
    }

    pub fn count(&self, at: u32) -> u32 {
        self.entries[at as usize].count.load(Ordering::Acquire)
    }

    /// How many times a value found no room in the table.
    pub fn overflowed(&self) -> u64 {
        self.overflowed.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_is_counted_up_to_its_limit_and_released() {
        let l = Limits::new(16);
        let a = l.place_key(l.key(0, b"port-1")).unwrap();
        assert_eq!(l.place_key(l.key(0, b"port-1")), Some(a));
        let b = l.place_key(l.key(1, b"port-1")).unwrap();
        assert_ne!(a, b, "the class is part of the key");
        assert!(l.take(a, 2));
        assert!(l.take(a, 2));
        assert!(!l.take(a, 2));
        assert_eq!(l.count(a), 2);
        l.release(&[a, NONE]);
        assert!(l.take(a, 2));
        l.force(a);
        assert_eq!(l.count(a), 3);
    }

    #[test]
    fn threads_never_take_more_than_the_limit() {
        let l = std::sync::Arc::new(Limits::new(4));
        let at = l.place_key(l.key(3, b"olt-1")).unwrap();
        let taken: u32 = (0..4)
            .map(|_| {
                let l = l.clone();
                std::thread::spawn(move || (0..1000).filter(|_| l.take(at, 100)).count() as u32)
            })
            .map(|h| h.join().unwrap())
            .sum();
        assert_eq!(taken, 100);
    }

    #[test]
    fn a_full_table_stops_placing_and_says_so() {
        let l = Limits::new(1);
        let placed = (0..200u32)
            .filter(|i| l.place_key(l.key(0, &i.to_le_bytes())).is_some())
            .count();
        assert_eq!(placed, 64);
        assert_eq!(l.overflowed(), 136);
        let empty = Limits::new(0);
        assert_eq!(empty.place_key(empty.key(0, b"x")), None);
    }
}
