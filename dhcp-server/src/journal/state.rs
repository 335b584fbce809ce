//! Folding records into state. Per address the lease with the highest stamp wins (on a
//! tie, the one folded later: later in its file, which replay visits in write order), so
//! the result does not depend on which shard wrote what or in which order shards are
//! replayed. Reservations fold the same way by address, a removal being a tombstone that
//! compaction keeps (another shard may still hold an older addition). Failover: latest.

use std::net::Ipv4Addr;

use hashbrown::HashMap;

use dhcp_proto::lease::{Failover, Lease, Record, Reservation};

/// The live state a journal holds, as replay returns it to the engine.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    pub leases: HashMap<Ipv4Addr, Lease>,
    pub reservations: HashMap<Ipv4Addr, Reservation>,
    pub failover: Option<Failover>,
    /// The highest stamp seen in any record: the engine's clock must continue above it.
    pub max_stamp: u64,
}

impl State {
    /// Leases sorted by address, for output that is the same from run to run.
    pub fn sorted_leases(&self) -> Vec<&Lease> {
        let mut v: Vec<&Lease> = self.leases.values().collect();
        v.sort_unstable_by_key(|l| l.addr);
        v
    }

    pub fn sorted_reservations(&self) -> Vec<&Reservation> {
        let mut v: Vec<&Reservation> = self.reservations.values().collect();
        v.sort_unstable_by_key(|r| r.addr);
        v
    }
}

/// A reservation entry while folding: `None` is a removal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ReservationSlot {
    pub stamp: u64,
    pub value: Option<Reservation>,
}

/// State under construction, tombstones included.
#[derive(Debug, Default)]
pub(crate) struct Fold {
    pub leases: HashMap<Ipv4Addr, Lease>,
    pub reservations: HashMap<Ipv4Addr, ReservationSlot>,
    pub failover: Option<Failover>,
    pub max_stamp: u64,
}

impl Fold {
    pub fn apply(&mut self, rec: &Record<'_>) {
        let stamp = rec.stamp();
        self.max_stamp = self.max_stamp.max(stamp);
        match rec {
            Record::Lease(l) => match self.leases.entry(l.addr) {
                hashbrown::hash_map::Entry::Occupied(mut o) => {
                    if stamp >= o.get().stamp {
                        o.insert(Lease::from_record(l));
                    }
                }
                hashbrown::hash_map::Entry::Vacant(v) => {
                    v.insert(Lease::from_record(l));
                }
            },
            Record::ReservationAdded(r) => {
                self.reservation(r.addr, stamp, Some(Reservation::from_record(r)))
            }
            Record::ReservationRemoved { addr, .. } => self.reservation(*addr, stamp, None),
            Record::Failover(f) => {
                if self.failover.as_ref().is_none_or(|o| stamp >= o.stamp) {
                    self.failover = Some(Failover::from_record(f));
                }
            }
        }
    }

    /// Folds in the fold of records that come after this one's (another shard's, in
    /// shard order): per address the higher stamp wins, the later fold on a tie, as if
    /// its records had been applied here one by one.
    pub fn merge(&mut self, later: Fold) {
        if self.leases.is_empty() {
            self.leases = later.leases;
        } else {
            self.leases.reserve(later.leases.len());
            for (addr, l) in later.leases {
                match self.leases.entry(addr) {
                    hashbrown::hash_map::Entry::Occupied(mut o) => {
                        if l.stamp >= o.get().stamp {
                            o.insert(l);
                        }
                    }
                    hashbrown::hash_map::Entry::Vacant(v) => {
                        v.insert(l);
                    }
                }
            }
        }
        for (addr, slot) in later.reservations {
            self.reservation(addr, slot.stamp, slot.value);
        }
        if let Some(f) = later.failover {
            if self.failover.as_ref().is_none_or(|o| f.stamp >= o.stamp) {
                self.failover = Some(f);
            }
        }
        self.max_stamp = self.max_stamp.max(later.max_stamp);
    }

    fn reservation(&mut self, addr: Ipv4Addr, stamp: u64, value: Option<Reservation>) {
        let slot = self.reservations.entry(addr).or_insert(ReservationSlot {
            stamp: 0,
            value: None,
        });
        if stamp >= slot.stamp {
            *slot = ReservationSlot { stamp, value };
        }
    }

    /// Every record that reproduces this fold, tombstones included (for snapshots).
    pub fn records(&self) -> impl Iterator<Item = Record<'_>> {
        let leases = self.leases.values().map(|l| Record::Lease(l.as_record()));
        let reservations = self.reservations.iter().map(|(addr, s)| match &s.value {
            Some(r) => Record::ReservationAdded(r.as_record()),
            None => Record::ReservationRemoved {
                stamp: s.stamp,
                addr: *addr,
            },
        });
        let failover = self
            .failover
            .iter()
            .map(|f| Record::Failover(f.as_record()));
        leases.chain(reservations).chain(failover)
    }

    pub fn into_state(self) -> State {
        State {
            leases: self.leases,
            reservations: self
                .reservations
                .into_iter()
                .filter_map(|(a, s)| s.value.map(|v| (a, v)))
                .collect(),
            failover: self.failover,
            max_stamp: self.max_stamp,
        }
    }
}
