//! Folding records into state. Per address the lease with the highest stamp wins (on a
//! tie, the one folded later: later in its file, which replay visits in write order), so
//! the result does not depend on which shard wrote what or in which order shards are
//! replayed. Reservations fold the same way by address, and class members by class and
//! value, a removal being a tombstone that compaction keeps (another shard may still
//! hold an older addition). Failover: latest.

use std::hash::Hash;
use std::net::Ipv4Addr;

use hashbrown::HashMap;

use dhcp_proto::lease::{Failover, Lease, Member, MemberRecord, Record, Reservation};

/// A run-time class member's key: its class's name and its value.
pub type MemberKey = (Box<[u8]>, Box<[u8]>);

/// The live state a journal holds, as replay returns it to the engine.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    pub leases: HashMap<Ipv4Addr, Lease>,
    pub reservations: HashMap<Ipv4Addr, Reservation>,
    pub members: HashMap<MemberKey, Member>,
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

    /// Class members sorted by class name, then value.
    pub fn sorted_members(&self) -> Vec<&Member> {
        let mut v: Vec<&Member> = self.members.values().collect();
        v.sort_unstable_by(|a, b| (&a.class, &a.value).cmp(&(&b.class, &b.value)));
        v
    }
}

/// A keyed entry while folding (a reservation, a class member): the stamp of its latest
/// record, and its value, `None` when that record was a removal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Slot<T> {
    pub stamp: u64,
    pub value: Option<T>,
}

/// State under construction, tombstones included.
#[derive(Debug, Default)]
pub(crate) struct Fold {
    pub leases: HashMap<Ipv4Addr, Lease>,
    pub reservations: HashMap<Ipv4Addr, Slot<Reservation>>,
    pub members: HashMap<MemberKey, Slot<Member>>,
    pub failover: Option<Failover>,
    pub max_stamp: u64,
}

/// Keeps the record with the higher stamp for `key` (the later one on a tie), an
/// addition or a removal alike.
fn keep_latest<K: Hash + Eq, T>(
    slots: &mut HashMap<K, Slot<T>>,
    key: K,
    stamp: u64,
    value: Option<T>,
) {
    let slot = slots.entry(key).or_insert(Slot {
        stamp: 0,
        value: None,
    });
    if stamp >= slot.stamp {
        *slot = Slot { stamp, value };
    }
}

fn member_key(m: &MemberRecord<'_>) -> MemberKey {
    (m.class.into(), m.value.into())
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
            Record::ReservationAdded(r) => keep_latest(
                &mut self.reservations,
                r.addr,
                stamp,
                Some(Reservation::from_record(r)),
            ),
            Record::ReservationRemoved { addr, .. } => {
                keep_latest(&mut self.reservations, *addr, stamp, None)
            }
            Record::MemberAdded(m) => keep_latest(
                &mut self.members,
                member_key(m),
                stamp,
                Some(Member::from_record(m)),
            ),
            Record::MemberRemoved(m) => keep_latest(&mut self.members, member_key(m), stamp, None),
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
            keep_latest(&mut self.reservations, addr, slot.stamp, slot.value);
        }
        for (key, slot) in later.members {
            keep_latest(&mut self.members, key, slot.stamp, slot.value);
        }
        if let Some(f) = later.failover {
            if self.failover.as_ref().is_none_or(|o| f.stamp >= o.stamp) {
                self.failover = Some(f);
            }
        }
        self.max_stamp = self.max_stamp.max(later.max_stamp);
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
        let members = self
            .members
            .iter()
            .map(|((class, value), s)| match &s.value {
                Some(m) => Record::MemberAdded(m.as_record()),
                None => Record::MemberRemoved(MemberRecord {
                    stamp: s.stamp,
                    class,
                    value,
                }),
            });
        let failover = self
            .failover
            .iter()
            .map(|f| Record::Failover(f.as_record()));
        leases.chain(reservations).chain(members).chain(failover)
    }

    pub fn into_state(self) -> State {
        State {
            leases: self.leases,
            reservations: self
                .reservations
                .into_iter()
                .filter_map(|(a, s)| s.value.map(|v| (a, v)))
                .collect(),
            members: self
                .members
                .into_iter()
                .filter_map(|(k, s)| s.value.map(|v| (k, v)))
                .collect(),
            failover: self.failover,
            max_stamp: self.max_stamp,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn added(stamp: u64, value: &[u8]) -> Member {
        Member {
            stamp,
            class: b"line".to_vec().into(),
            value: value.into(),
        }
    }

    fn add(f: &mut Fold, stamp: u64, value: &[u8]) {
        f.apply(&Record::MemberAdded(added(stamp, value).as_record()));
    }

    fn remove(f: &mut Fold, stamp: u64, value: &[u8]) {
        f.apply(&Record::MemberRemoved(MemberRecord {
            stamp,
            class: b"line",
            value,
        }));
    }

    fn members(s: &State) -> Vec<(&[u8], &[u8], u64)> {
        s.sorted_members()
            .into_iter()
            .map(|m| (&m.class[..], &m.value[..], m.stamp))
            .collect()
    }

    #[test]
    fn members_fold_by_class_and_value_with_the_highest_stamp() {
        let mut f = Fold::default();
        add(&mut f, 1, b"port-1");
        add(&mut f, 2, b"port-2");
        remove(&mut f, 3, b"port-1");
        // An older addition found later (another shard's file) does not revive it.
        add(&mut f, 2, b"port-1");
        // A tie goes to the record folded later.
        remove(&mut f, 4, b"port-2");
        add(&mut f, 4, b"port-2");
        add(&mut f, 5, b"port-3");
        // The same value in another class is another member.
        f.apply(&Record::MemberAdded(MemberRecord {
            stamp: 6,
            class: b"other",
            value: b"port-1",
        }));
        assert_eq!(f.max_stamp, 6);
        assert_eq!(
            members(&f.into_state()),
            vec![
                (&b"line"[..], &b"port-2"[..], 4),
                (&b"line"[..], &b"port-3"[..], 5),
                (&b"other"[..], &b"port-1"[..], 6),
            ]
        );
    }

    #[test]
    fn member_tombstones_survive_a_snapshot_and_a_merge() {
        let mut first = Fold::default();
        add(&mut first, 1, b"port-1");
        add(&mut first, 2, b"port-2");
        let mut second = Fold::default();
        remove(&mut second, 3, b"port-1");
        // A snapshot of the second shard: its records, tombstone included.
        let mut snap = Fold::default();
        for r in second.records() {
            snap.apply(&r);
        }
        assert_eq!(snap.members, second.members);
        assert_eq!(
            snap.records()
                .filter(|r| matches!(r, Record::MemberRemoved(_)))
                .count(),
            1
        );
        first.merge(snap);
        let s = first.into_state();
        assert_eq!(members(&s), vec![(&b"line"[..], &b"port-2"[..], 2)]);
        assert_eq!(s.max_stamp, 3);
        // Merged the other way round, the removal still wins by its stamp.
        let mut a = Fold::default();
        remove(&mut a, 3, b"port-1");
        let mut b = Fold::default();
        add(&mut b, 1, b"port-1");
        a.merge(b);
        assert!(a.into_state().members.is_empty());
    }
}
