//! Reservations that change while the server runs: added and removed through the control
//! socket (and replayed from the journal at start), and the file's replaced by a reload.
//!
//! Every shard's engine applies the same change to its own table. A reserved address is
//! in every shard's table, as the file's are from the start, because the host may be
//! steered to any shard: a reservation by MAC cannot tell which identifier the host will
//! send, and the steering hashes that. When a reservation ends, the shard that knows a
//! client for the address keeps it and the others let it go; an address of a pool that
//! nobody kept is then handed to one shard by the caller (`LeaseTable::adopt`).

use std::net::Ipv4Addr;

use super::{Engine, KeyKind, LeaseState, ResId, Reservation, Slot, RUNTIME};
use crate::policy::SubscriberKind;
use std::sync::Arc;

use crate::policy::Policy;

/// The reservations by each identity a request may name, as `ResId`s: the file's and the
/// run-time ones.
#[derive(Debug, Default)]
pub(super) struct ResIndex {
    pub by_hw: hashbrown::HashMap<[u8; 6], Vec<ResId>>,
    pub by_id: hashbrown::HashMap<Box<[u8]>, Vec<ResId>>,
    /// Per `SubscriberKind::ALL` entry: reservations by that identity.
    pub by_subscriber: [hashbrown::HashMap<Box<[u8]>, Vec<ResId>>; 4],
}

impl ResIndex {
    pub fn is_empty(&self) -> bool {
        self.by_hw.is_empty()
            && self.by_id.is_empty()
            && self.by_subscriber.iter().all(|m| m.is_empty())
    }

    /// Adds reservation `id` to the lookups by each identity it names.
    fn insert(&mut self, id: ResId, r: &Reservation) {
        if let Some(hw) = r.hw_address {
            self.by_hw.entry(hw).or_default().push(id);
        }
        if let Some(cid) = &r.client_id {
            self.by_id
                .entry(cid.clone().into_boxed_slice())
                .or_default()
                .push(id);
        }
        if let Some(s) = &r.subscriber {
            self.by_subscriber[s.kind.index()]
                .entry(s.value.clone().into_boxed_slice())
                .or_default()
                .push(id);
        }
    }

    /// Takes reservation `id` out of the lookups.
    fn remove(&mut self, id: ResId, r: &Reservation) {
        fn drop_from<K: std::hash::Hash + Eq>(
            map: &mut hashbrown::HashMap<K, Vec<ResId>>,
            key: &K,
            id: ResId,
        ) {
            if let Some(v) = map.get_mut(key) {
                v.retain(|x| *x != id);
                if v.is_empty() {
                    map.remove(key);
                }
            }
        }
        if let Some(hw) = r.hw_address {
            drop_from(&mut self.by_hw, &hw, id);
        }
        if let Some(cid) = &r.client_id {
            drop_from(&mut self.by_id, &cid.clone().into_boxed_slice(), id);
        }
        if let Some(s) = &r.subscriber {
            drop_from(
                &mut self.by_subscriber[s.kind.index()],
                &s.value.clone().into_boxed_slice(),
                id,
            );
        }
    }
}

impl Engine {
    /// Rebuilds the lookups by each identity: the file's reservations first, then the
    /// run-time ones.
    pub(super) fn index_reservations(&mut self) {
        let mut index = ResIndex::default();
        let file = self.policy.subnets.iter().enumerate().flat_map(|(i, s)| {
            s.reservations
                .iter()
                .enumerate()
                .map(move |(k, r)| ((i as u16, k as u32), r))
        });
        let runtime = self
            .runtime
            .iter()
            .enumerate()
            .filter_map(|(k, e)| e.as_ref().map(|(s, r)| ((*s, RUNTIME | k as u32), r)));
        for (id, r) in file.chain(runtime) {
            index.insert(id, r);
        }
        self.res_index = index;
    }

    /// Adds a run-time reservation of `r.address` for the host `r` names. Refused, with
    /// the reason, when the address is in no configured subnet or already reserved at
    /// run time, or when this shard has it offered or leased to another client (`now`
    /// says for how long). A lease the host itself holds on it stays.
    pub fn add_reservation(&mut self, r: Reservation, now: u64) -> Result<(), NotReserved> {
        let addr = r.address.ok_or(NotReserved::NoAddress)?;
        let subnet = self.subnet_of(addr).ok_or(NotReserved::NoSubnet(addr))?;
        if self.runtime_at.contains_key(&addr) {
            return Err(NotReserved::AlreadyReserved(addr));
        }
        if let Some(id) = self.leases.slot_of(addr) {
            let s = self.leases.slot(id);
            if s.state.held() && !same_host(s, &r) {
                return Err(NotReserved::Held(held_by_other(s, now)));
            }
        }
        self.insert_runtime(subnet, r);
        self.leases.reserve(addr, subnet);
        Ok(())
    }

    /// Adds a run-time reservation replayed from the journal, before the leases are: the
    /// caller checked it against the configuration.
    pub fn restore_reservation(&mut self, r: Reservation) {
        let Some(addr) = r.address else { return };
        let Some(subnet) = self.subnet_of(addr) else {
            return;
        };
        if self.runtime_at.contains_key(&addr) {
            return;
        }
        self.insert_runtime(subnet, r);
        self.leases.reserve(addr, subnet);
    }

    fn insert_runtime(&mut self, subnet: u16, r: Reservation) {
        let Some(addr) = r.address else { return };
        let k = match self.runtime_free.pop() {
            Some(k) => {
                self.runtime[k as usize] = Some((subnet, r));
                k
            }
            None => {
                self.runtime.push(Some((subnet, r)));
                self.runtime.len() as u32 - 1
            }
        };
        self.runtime_at.insert(addr, k);
        let (_, r) = self.runtime[k as usize].as_ref().expect("just stored");
        self.res_index.insert((subnet, RUNTIME | k), r);
    }

    /// Ends the run-time reservation of `addr`: `None` when there is none. Otherwise
    /// whether this shard kept the address (it knows a client for it, or it is the only
    /// shard); see `LeaseTable::unreserve`. A client holding it keeps its lease; outside
    /// the pools it is refused at its next renewal.
    pub fn remove_reservation(&mut self, addr: Ipv4Addr) -> Option<bool> {
        let k = self.runtime_at.remove(&addr)?;
        let (subnet, r) = self.runtime[k as usize].take()?;
        self.runtime_free.push(k);
        self.res_index.remove((subnet, RUNTIME | k), &r);
        let slot = self.leases.slot_of(addr)?;
        if file_addresses(&self.policy).any(|(a, _)| a == addr) {
            return Some(true);
        }
        Some(self.leases.unreserve(slot, self.shard.count <= 1))
    }

    /// The run-time reservation of `addr`, if it has one.
    pub fn runtime_reservation(&self, addr: Ipv4Addr) -> Option<&Reservation> {
        let &k = self.runtime_at.get(&addr)?;
        self.runtime[k as usize].as_ref().map(|(_, r)| r)
    }

    /// The run-time reservations this engine applies, in no particular order.
    pub fn runtime_reservations(&self) -> impl Iterator<Item = &Reservation> {
        self.runtime.iter().flatten().map(|(_, r)| r)
    }

    /// Takes the configuration a reload made: the same interfaces, subnets and pools
    /// (the caller checked; those need a restart), anything else may differ. Addresses
    /// the file now reserves are reserved here; of those it no longer reserves, returns
    /// the ones this shard kept (see `LeaseTable::unreserve`).
    pub fn reconfigure(&mut self, new: Arc<Policy>) -> Vec<Ipv4Addr> {
        debug_assert_eq!(self.policy.interfaces, new.interfaces);
        debug_assert!(self
            .policy
            .subnets
            .iter()
            .zip(&new.subnets)
            .all(|(a, b)| a.net == b.net
                && a.interface == b.interface
                && a.pools
                    .iter()
                    .map(|p| p.range)
                    .eq(b.pools.iter().map(|p| p.range))));
        let old: hashbrown::HashMap<Ipv4Addr, u16> = file_addresses(&self.policy).collect();
        let now: hashbrown::HashMap<Ipv4Addr, u16> = file_addresses(&new).collect();
        // Members added at run time stay with their class, found by name.
        let members: Vec<(String, Vec<u8>)> = self
            .classifier
            .runtime_members()
            .filter_map(|(c, v)| {
                Some((
                    self.policy.classes.get(usize::from(c))?.name.clone(),
                    v.to_vec(),
                ))
            })
            .collect();
        self.policy = new;
        self.classifier = super::classify::Classifier::new(&self.policy);
        for (name, value) in members {
            if let Ok((c, _)) = crate::policy::class::matching(&self.policy.classes, &name) {
                self.classifier.add_member(&self.policy.classes, c, &value);
            }
        }
        self.index_reservations();
        let mut added: Vec<(Ipv4Addr, u16)> = now
            .iter()
            .filter(|(a, _)| !old.contains_key(*a) && !self.runtime_at.contains_key(*a))
            .map(|(a, s)| (*a, *s))
            .collect();
        added.sort_unstable();
        for (a, subnet) in added {
            self.leases.reserve(a, subnet);
        }
        let mut gone: Vec<Ipv4Addr> = old
            .keys()
            .filter(|a| !now.contains_key(*a) && !self.runtime_at.contains_key(*a))
            .copied()
            .collect();
        gone.sort_unstable();
        let sole = self.shard.count <= 1;
        gone.into_iter()
            .filter(|&a| {
                self.leases
                    .slot_of(a)
                    .is_some_and(|id| self.leases.unreserve(id, sole))
            })
            .collect()
    }
}

/// The addresses the file's reservations fix, with their subnet.
pub(crate) fn file_addresses(policy: &Policy) -> impl Iterator<Item = (Ipv4Addr, u16)> + '_ {
    policy.subnets.iter().enumerate().flat_map(|(i, s)| {
        s.reservations
            .iter()
            .filter_map(move |r| Some((r.address?, i as u16)))
    })
}

/// Whether the client a slot belongs to is the host a reservation names: by its
/// hardware address, by the client identifier it sends, or by the relay agent
/// sub-option it was last granted through.
fn same_host(s: &Slot, r: &Reservation) -> bool {
    let by_relay = r.subscriber.as_ref().is_some_and(|sub| {
        sub.kind != SubscriberKind::Flex
            && s.agent
                .as_deref()
                .and_then(|a| crate::wire::relay::sub_option(a, sub.kind as u8))
                == Some(&sub.value[..])
    });
    let by_hw = r
        .hw_address
        .is_some_and(|hw| s.hlen == 6 && s.hw[..6] == hw);
    let by_id = r.client_id.as_deref().is_some_and(|id| {
        s.client.as_ref().is_some_and(|k| {
            let k = k.as_ref();
            k.kind == KeyKind::ClientId && k.bytes == id
        })
    });
    by_hw || by_id || by_relay
}

/// "192.0.2.50 is leased to 02:00:00:00:00:09 for another 3540 s".
/// Why a run-time reservation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotReserved {
    #[error("a run-time reservation needs an address")]
    NoAddress,
    #[error("{0} is in no configured subnet")]
    NoSubnet(Ipv4Addr),
    #[error("{0} is already reserved")]
    AlreadyReserved(Ipv4Addr),
    /// Offered or leased to another client: who, and for how long.
    #[error("{0}")]
    Held(String),
}

fn held_by_other(s: &Slot, now: u64) -> String {
    let how = if s.state == LeaseState::Offered {
        "offered"
    } else {
        "leased"
    };
    let mut who = if s.hlen == 6 {
        super::Hw(&s.hw[..6]).to_string()
    } else {
        "another client".to_owned()
    };
    if let Some(k) = s.client.as_ref().map(|k| k.as_ref()) {
        if k.kind == KeyKind::ClientId {
            who.push_str(&format!(" (client id {})", super::Hw(k.bytes)));
        }
    }
    format!(
        "{} is {how} to {who} for another {} s",
        s.addr,
        s.expires.saturating_sub(now)
    )
}
