//! The lease table: one slot per address the server may hand out, each slot in at most one
//! intrusive list (its pool's free list, or a bucket of the expiry wheel), and an index
//! from client to slot, per subnet. Every operation is O(1) and allocation-free once built; the
//! capacity is fixed at start from the configured pools.
//!
//! Free lists are FIFO: never-used addresses first in address order, then addresses in the
//! order they came back (released, expired, quarantine over), so the address that has been
//! free longest is reused first and a returning client most often finds its old one.
//!
//! With several shards each table has a slot for every address but puts on its free lists
//! only the addresses its shard owns; the others are `Foreign` until another shard lends
//! them. An address belongs to whichever shard holds its lease, so a restart with another
//! shard count keeps every lease: the lease goes where its client is steered.

use std::hash::BuildHasher;
use std::net::Ipv4Addr;

use hashbrown::HashTable;

use super::limits::{Charge, Limits, NO_CHARGE};
pub use crate::lease::LeaseState;

pub type SlotId = u32;
const NIL: SlotId = SlotId::MAX;

/// The pool of an address outside every pool (reserved for a host).
pub const NO_POOL: u16 = u16::MAX;

/// The seconds covered by one turn of the expiry wheel. Entries further out stay in their
/// bucket across turns; each turn visits them once, so a day-long lease is looked at
/// about 21 times in its life, never per packet.
const WHEEL: usize = 4096;

/// How a client is identified: its client identifier (option 61) when it sends one,
/// otherwise its hardware type and address (RFC 2131 §4.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyKind {
    ClientId,
    Hardware,
}

/// A borrowed client identity, as read from a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientRef<'a> {
    pub kind: KeyKind,
    pub bytes: &'a [u8],
}

const INLINE: usize = 30;

/// An owned client identity. Identifiers up to 30 octets (all MAC-based and most DUID-based
/// ones) are stored inline, so binding a client does not allocate.
#[derive(Debug, Clone, PartialEq, Eq)]
enum KeyBytes {
    Inline { len: u8, buf: [u8; INLINE] },
    Heap(Box<[u8]>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientKey {
    kind: KeyKind,
    bytes: KeyBytes,
}

impl ClientKey {
    fn from_ref(c: ClientRef<'_>) -> Self {
        let bytes = if c.bytes.len() <= INLINE {
            let mut buf = [0; INLINE];
            buf[..c.bytes.len()].copy_from_slice(c.bytes);
            KeyBytes::Inline {
                len: c.bytes.len() as u8,
                buf,
            }
        } else {
            KeyBytes::Heap(c.bytes.into())
        };
        Self {
            kind: c.kind,
            bytes,
        }
    }

    pub fn as_ref(&self) -> ClientRef<'_> {
        let bytes = match &self.bytes {
            KeyBytes::Inline { len, buf } => &buf[..*len as usize],
            KeyBytes::Heap(b) => b,
        };
        ClientRef {
            kind: self.kind,
            bytes,
        }
    }
}

/// One address and what the server knows of it.
#[derive(Debug, Clone)]
pub struct Slot {
    pub addr: Ipv4Addr,
    pub subnet: u16,
    /// The pool it belongs to, numbered across subnets in configuration order;
    /// `NO_POOL` for an address outside every pool.
    pub pool: u16,
    pub state: LeaseState,
    /// Reserved for one host (in the configuration file or at run time): never on a
    /// free list.
    pub reserved: bool,
    /// Failover: the lease ended (expired or released) and the partner has not yet
    /// acknowledged it: only its last client may have it back meanwhile.
    pub unacked: bool,
    /// Failover: bound while the link to the partner was down, from our own pool, and
    /// never sent: when it ends it goes straight back to our pool (the draft's lease
    /// rewind), since the partner never heard of it.
    pub rewind: bool,
    /// The client that holds it, or held it last (kept for address affinity).
    pub client: Option<ClientKey>,
    /// Hardware type (1: Ethernet) and address of the client.
    pub htype: u8,
    pub hw: [u8; 16],
    pub hlen: u8,
    /// When the current state ends (offer hold, lease end, quarantine end), seconds.
    pub expires: u64,
    /// Client last transaction time: when the client was last ACKed.
    pub cltt: u64,
    /// The relay agent information the client was last ACKed through (dhcpd's
    /// `stash-agent-options`): kept across renewals sent straight to the server.
    pub agent: Option<Box<[u8]>>,
    /// The lease limits its holder counts against while it is held.
    pub charge: Charge,
    prev: SlotId,
    next: SlotId,
    list: ListId,
}

impl Slot {
    /// Inside a pool: when not reserved, it goes on the free list once available. An
    /// address outside every pool has a slot only because it is or was reserved.
    pub fn pooled(&self) -> bool {
        self.pool != NO_POOL
    }
}

/// Which part of the address space a table starts with: addresses whose value modulo
/// `count` is `index`, so every pool is split evenly whatever its size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shard {
    pub index: u16,
    pub count: u16,
}

impl Shard {
    /// The one shard of a single-threaded server.
    pub const WHOLE: Shard = Shard { index: 0, count: 1 };

    pub fn owns(self, addr: Ipv4Addr) -> bool {
        u32::from(addr) % u32::from(self.count.max(1)) == u32::from(self.index)
    }
}

/// Slots kept in reserve for addresses outside the pools reserved at run time.
const SPARE_SLOTS: usize = 1024;

/// Below this many free addresses a shard asks the others for more, or below a quarter of
/// its first share for small pools, so a DISCOVER rarely finds its shard dry.
const LOW_WATER: u32 = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ListId {
    None,
    Free(u16),
    Wheel(u16),
}

#[derive(Debug, Clone, Copy)]
struct List {
    head: SlotId,
    tail: SlotId,
    len: u32,
}

impl List {
    const EMPTY: List = List {
        head: NIL,
        tail: NIL,
        len: 0,
    };
}

/// Address ranges as slot id ranges, sorted, for address-to-slot lookup.
#[derive(Debug, Clone, Copy)]
struct Span {
    first: u32,
    last: u32,
    base: SlotId,
}

pub struct LeaseTable {
    slots: Vec<Slot>,
    spans: Vec<Span>,
    free: Vec<List>,
    wheel: Vec<List>,
    /// The last second the wheel was turned to.
    cursor: u64,
    index: HashTable<SlotId>,
    /// Slots with a client, by hardware type and address, whatever the client's key:
    /// leasequery asks by MAC for clients that name themselves by client identifier too.
    by_hw: HashTable<SlotId>,
    hasher: hashbrown::DefaultHashBuilder,
    /// Per pool: the free count under which the shard is short, and whether it has
    /// already said so since it last got addresses.
    low: Vec<u32>,
    short: Vec<bool>,
    /// Pools that went short, for the shard's driver to ask the other shards.
    starving: Vec<u16>,
    /// Per pool: addresses in the failover partner's pool.
    partner: Vec<u32>,
    /// Failover: leases that end wait for the partner's acknowledgement.
    hold_ended: bool,
    /// Leases that ran out since the last `take_ended`, for the journal (and, with a
    /// failover partner, only those the partner must hear of).
    ended: Vec<SlotId>,
    /// The table belongs to a failover pair's server.
    partnered: bool,
    /// The lease limits' counters, shared by every shard's table.
    limits: std::sync::Arc<Limits>,
}

/// What the table needs to know of each subnet to build its slots.
pub struct SubnetSlots<'a> {
    pub pools: &'a [(Ipv4Addr, Ipv4Addr)],
    /// Addresses reserved for hosts; those outside the pools get slots of their own.
    pub reserved: &'a [Ipv4Addr],
}

impl LeaseTable {
    /// Builds one slot per pool address and per reserved address, the shard's own free and
    /// the rest foreign, and sizes the client index for every slot bound at once. `now`
    /// starts the expiry wheel.
    pub fn new(subnets: &[SubnetSlots<'_>], shard: Shard, now: u64) -> Self {
        let mut ranges: Vec<(u32, u32, u16, u16)> = Vec::new();
        let mut pools = 0u16;
        for (i, s) in subnets.iter().enumerate() {
            for &(a, b) in s.pools {
                ranges.push((a.into(), b.into(), i as u16, pools));
                pools += 1;
            }
            for &r in s.reserved {
                let r = u32::from(r);
                if !s
                    .pools
                    .iter()
                    .any(|&(a, b)| (u32::from(a)..=u32::from(b)).contains(&r))
                {
                    ranges.push((r, r, i as u16, NO_POOL));
                }
            }
        }
        ranges.sort_unstable();
        let total: usize = ranges.iter().map(|r| (r.1 - r.0) as usize + 1).sum();
        // Room for addresses outside the pools reserved at run time, so the first few
        // thousand of those do not copy a table of millions of slots.
        let mut slots = Vec::with_capacity(total + SPARE_SLOTS);
        let mut spans = Vec::with_capacity(ranges.len());
        for &(first, last, subnet, pool) in &ranges {
            spans.push(Span {
                first,
                last,
                base: slots.len() as SlotId,
            });
            slots.extend((first..=last).map(|a| Slot {
                addr: a.into(),
                subnet,
                pool,
                state: LeaseState::Free,
                reserved: false,
                unacked: false,
                rewind: false,
                client: None,
                htype: 0,
                hw: [0; 16],
                hlen: 0,
                expires: 0,
                cltt: 0,
                agent: None,
                charge: NO_CHARGE,
                prev: NIL,
                next: NIL,
                list: ListId::None,
            }));
        }
        let mut table = Self {
            slots,
            spans,
            free: vec![List::EMPTY; pools.into()],
            wheel: vec![List::EMPTY; WHEEL],
            cursor: now,
            index: HashTable::with_capacity(total),
            by_hw: HashTable::with_capacity(total),
            hasher: Default::default(),
            low: vec![0; pools.into()],
            short: vec![false; pools.into()],
            starving: Vec::new(),
            partner: vec![0; pools.into()],
            hold_ended: false,
            // Every lease that runs out passes through here now: no allocation then.
            ended: Vec::with_capacity(256),
            partnered: false,
            limits: std::sync::Arc::new(Limits::new(0)),
        };
        for s in subnets {
            for &r in s.reserved {
                if let Some(id) = table.slot_of(r) {
                    table.slots[id as usize].reserved = true;
                }
            }
        }
        for id in 0..table.slots.len() as SlotId {
            let s = &mut table.slots[id as usize];
            if s.reserved {
                continue;
            }
            if shard.owns(s.addr) {
                let pool = s.pool;
                table.push_back(ListId::Free(pool), id);
            } else {
                s.state = LeaseState::Foreign;
            }
        }
        for (low, free) in table.low.iter_mut().zip(&table.free) {
            *low = LOW_WATER.min(free.len / 4);
        }
        table
    }

    /// Pools that ran short of free addresses since the last call, each named once
    /// until it gets more.
    pub fn take_starving(&mut self) -> impl Iterator<Item = u16> + '_ {
        self.starving.drain(..)
    }

    /// Notes that a client found no free address in `pool`: a shard whose share was too
    /// small to have a low-water mark asks for addresses this way.
    pub fn want(&mut self, pool: u16) {
        let i = pool as usize;
        if !self.short[i] {
            self.short[i] = true;
            self.starving.push(pool);
        }
    }

    /// Hands up to `max` free addresses of `pool` to another shard that ran short:
    /// half of this shard's free ones, oldest first, so that between them the shards can
    /// use the whole pool; they become foreign here.
    pub fn lend(&mut self, pool: u16, max: usize, out: &mut Vec<Ipv4Addr>) {
        let Some(free) = self.free.get(pool as usize) else {
            return;
        };
        let spare = free.len as usize / 2;
        for _ in 0..max.min(spare) {
            let Some(id) = self.peek_free(pool) else {
                break;
            };
            self.make_foreign(id);
            out.push(self.slots[id as usize].addr);
        }
    }

    /// Hands a slot to another shard: whatever this table knew of it is dropped.
    pub fn make_foreign(&mut self, id: SlotId) {
        self.forget_client(id);
        self.slots[id as usize].unacked = false;
        self.set_state(id, LeaseState::Foreign, 0);
    }

    /// Failover on: ended leases wait for the partner before another client gets them.
    pub fn set_hold_ended(&mut self, on: bool) {
        self.hold_ended = on;
    }

    /// The server has a failover partner: only leases the partner has to acknowledge
    /// ending are reported as ended (their record goes to the partner too).
    pub fn set_partnered(&mut self) {
        self.partnered = true;
    }

    /// The client gave the lease up (DHCPRELEASE, or the operator for it).
    pub fn end(&mut self, id: SlotId, state: LeaseState, now: u64) {
        let s = &mut self.slots[id as usize];
        s.unacked = self.hold_ended && !s.rewind;
        self.set_state(id, state, now);
    }

    /// The partner knows the lease ended: the address goes to our pool (`ours`) or
    /// the partner's, still remembered for its last client.
    pub fn settle_ended(&mut self, id: SlotId, ours: bool) {
        self.slots[id as usize].unacked = false;
        self.set_pool(id, ours);
    }

    /// The leases that ran out since the last call, once.
    pub fn take_ended(&mut self) -> std::vec::Drain<'_, SlotId> {
        self.ended.drain(..)
    }

    /// Marks a binding as made while the partner could not hear of it (`on`), or as
    /// known to the partner.
    pub fn set_rewind(&mut self, id: SlotId, on: bool) {
        self.slots[id as usize].rewind = on;
    }

    /// The link is back: every binding made meanwhile goes to the partner now.
    pub fn clear_rewinds(&mut self) {
        for s in &mut self.slots {
            s.rewind = false;
        }
    }

    /// A free address goes to our pool or the partner's (failover pool balancing).
    /// A reserved address is in neither pool: either server may give it to its host.
    pub fn set_pool(&mut self, id: SlotId, ours: bool) {
        let s = &self.slots[id as usize];
        if s.reserved {
            return;
        }
        let state = match (ours, s.state) {
            (false, _) => LeaseState::Partner,
            (true, LeaseState::Released | LeaseState::Expired) => s.state,
            (true, _) if s.client.is_some() => LeaseState::Expired,
            (true, _) => LeaseState::Free,
        };
        let expires = s.expires;
        self.slots[id as usize].unacked = false;
        self.set_state(id, state, expires);
    }

    /// How many addresses of `pool` are in the failover partner's pool here.
    pub fn partner_count(&self, pool: u16) -> u32 {
        self.partner.get(pool as usize).copied().unwrap_or(0)
    }

    /// The shard an address without a client belongs to: the one it started in.
    pub fn home_shard(&self, addr: Ipv4Addr, shard: Shard) -> u16 {
        (u32::from(addr) % u32::from(shard.count.max(1))) as u16
    }

    /// Takes over addresses another shard lent: foreign slots become free here. Returns how
    /// many were taken; an address that is not foreign here is left alone.
    pub fn adopt(&mut self, addrs: &[Ipv4Addr]) -> usize {
        let mut n = 0;
        for &a in addrs {
            if let Some(id) = self.slot_of(a) {
                if self.slots[id as usize].state == LeaseState::Foreign {
                    let pool = self.slots[id as usize].pool;
                    self.set_state(id, LeaseState::Free, 0);
                    if let Some(short) = self.short.get_mut(pool as usize) {
                        *short = false;
                    }
                    n += 1;
                }
            }
        }
        n
    }

    /// Reserves `addr` (of `subnet`) for one host, as a reservation in the file does at
    /// start: the address gets a slot if it is outside the pools, leaves the free list,
    /// and a foreign slot becomes this table's too, since the host may be steered to any
    /// shard. A lease on it stays as it is. Returns the slot.
    pub fn reserve(&mut self, addr: Ipv4Addr, subnet: u16) -> SlotId {
        let id = match self.slot_of(addr) {
            Some(id) => id,
            None => self.add_slot(addr, subnet),
        };
        let s = &mut self.slots[id as usize];
        s.reserved = true;
        let (state, expires) = (s.state, s.expires);
        // Foreign here or the failover partner's: a reserved address is every shard's and
        // either server's, for its host only.
        if state == LeaseState::Foreign || state == LeaseState::Partner {
            self.set_state(id, LeaseState::Free, 0);
        } else if state.available() {
            // Off the free list (reserved slots are never on it).
            self.set_state(id, state, expires);
        }
        id
    }

    /// Ends the reservation of slot `id`. The table keeps the address when it knows a
    /// client for it or holds it in quarantine, or when it is the only table (`sole`);
    /// otherwise an address of a pool becomes foreign, for whichever shard keeps it (or,
    /// when none does, the one the caller hands it to with `adopt`), and one outside the
    /// pools stays off every list, never given out. Returns whether this table kept it.
    pub fn unreserve(&mut self, id: SlotId, sole: bool) -> bool {
        let s = &mut self.slots[id as usize];
        if !s.reserved {
            return s.state != LeaseState::Foreign;
        }
        s.reserved = false;
        let (state, expires, pooled) = (s.state, s.expires, s.pooled());
        let keep = sole || s.client.is_some() || state == LeaseState::Declined;
        if keep {
            if state.available() {
                // Onto the free list now that it may be given to anyone.
                self.set_state(id, state, expires);
            }
            true
        } else {
            if pooled {
                self.make_foreign(id);
            }
            false
        }
    }

    /// A slot for an address outside the pools, reserved at run time.
    fn add_slot(&mut self, addr: Ipv4Addr, subnet: u16) -> SlotId {
        let a = u32::from(addr);
        let id = self.slots.len() as SlotId;
        self.slots.push(Slot {
            addr,
            subnet,
            pool: NO_POOL,
            state: LeaseState::Free,
            reserved: false,
            unacked: false,
            rewind: false,
            client: None,
            htype: 0,
            hw: [0; 16],
            hlen: 0,
            expires: 0,
            cltt: 0,
            agent: None,
            charge: NO_CHARGE,
            prev: NIL,
            next: NIL,
            list: ListId::None,
        });
        let at = self.spans.partition_point(|s| s.last < a);
        self.spans.insert(
            at,
            Span {
                first: a,
                last: a,
                base: id,
            },
        );
        id
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    pub fn slot(&self, id: SlotId) -> &Slot {
        &self.slots[id as usize]
    }

    pub fn slots(&self) -> impl Iterator<Item = (SlotId, &Slot)> {
        self.slots.iter().enumerate().map(|(i, s)| (i as SlotId, s))
    }

    /// The slot of an address the server manages, if any.
    pub fn slot_of(&self, addr: Ipv4Addr) -> Option<SlotId> {
        let a = u32::from(addr);
        let i = self.spans.partition_point(|s| s.last < a);
        let span = self.spans.get(i).filter(|s| s.first <= a)?;
        Some(span.base + (a - span.first))
    }

    pub fn free_count(&self, pool: u16) -> u32 {
        self.free.get(pool as usize).map_or(0, |l| l.len)
    }

    /// How many pools the table was built with.
    pub fn pool_count(&self) -> u16 {
        self.free.len() as u16
    }

    fn hash(&self, subnet: u16, c: ClientRef<'_>) -> u64 {
        self.hasher.hash_one((subnet, c.kind, c.bytes))
    }

    /// The slot a client holds or last held in a subnet.
    pub fn find_client(&self, subnet: u16, c: ClientRef<'_>) -> Option<SlotId> {
        self.find_hashed(self.hash(subnet, c), subnet, c)
    }

    fn find_hashed(&self, hash: u64, subnet: u16, c: ClientRef<'_>) -> Option<SlotId> {
        let slots = &self.slots;
        self.index
            .find(hash, |&id| {
                let s = &slots[id as usize];
                s.subnet == subnet && s.client.as_ref().is_some_and(|k| k.as_ref() == c)
            })
            .copied()
    }

    fn hw_hash(&self, htype: u8, hw: &[u8]) -> u64 {
        self.hasher.hash_one((htype, hw))
    }

    fn index_hw(&mut self, id: SlotId) {
        let s = &self.slots[id as usize];
        let hash = self.hw_hash(s.htype, &s.hw[..usize::from(s.hlen)]);
        let slots = &self.slots;
        self.by_hw.insert_unique(hash, id, |&other| {
            let o = &slots[other as usize];
            self.hasher
                .hash_one((o.htype, &o.hw[..usize::from(o.hlen)]))
        });
    }

    fn unindex_hw(&mut self, id: SlotId) {
        let s = &self.slots[id as usize];
        let hash = self.hw_hash(s.htype, &s.hw[..usize::from(s.hlen)]);
        if let Ok(entry) = self.by_hw.find_entry(hash, |&x| x == id) {
            entry.remove();
        }
    }

    /// Every slot whose client has this hardware address, in any subnet.
    pub fn find_hw<'t>(&'t self, htype: u8, hw: &'t [u8]) -> impl Iterator<Item = SlotId> + 't {
        self.by_hw
            .iter_hash(self.hw_hash(htype, hw))
            .copied()
            .filter(move |&id| {
                let s = &self.slots[id as usize];
                s.htype == htype && &s.hw[..usize::from(s.hlen)] == hw
            })
    }

    /// Whether `c` is the client the slot belongs to or was last given to.
    pub fn is_client(&self, id: SlotId, c: ClientRef<'_>) -> bool {
        self.slots[id as usize]
            .client
            .as_ref()
            .is_some_and(|k| k.as_ref() == c)
    }

    /// The oldest free address of a pool, without taking it.
    pub fn peek_free(&self, pool: u16) -> Option<SlotId> {
        Some(self.free.get(pool as usize)?.head).filter(|&h| h != NIL)
    }

    /// Gives `id` to client `c` in `state` until `expires`. The client's other slot in the
    /// same subnet, if any, loses it (freed if it was held): a client never has two
    /// bindings in one subnet. The slot's previous client is forgotten.
    pub fn bind(
        &mut self,
        id: SlotId,
        c: ClientRef<'_>,
        htype: u8,
        hw: &[u8],
        state: LeaseState,
        expires: u64,
    ) {
        debug_assert!(state.held());
        let subnet = self.slots[id as usize].subnet;
        let new_client = !self.is_client(id, c);
        if new_client {
            let hash = self.hash(subnet, c);
            if let Some(old) = self.find_hashed(hash, subnet, c) {
                self.forget_client(old);
                if self.slots[old as usize].state.held() {
                    self.set_state(old, LeaseState::Free, 0);
                }
            }
            self.forget_client(id);
            self.slots[id as usize].client = Some(ClientKey::from_ref(c));
            let slots = &self.slots;
            self.index.insert_unique(hash, id, |&other| {
                let s = &slots[other as usize];
                let k = s
                    .client
                    .as_ref()
                    .expect("indexed slots have a client")
                    .as_ref();
                self.hasher.hash_one((s.subnet, k.kind, k.bytes))
            });
        }
        let n = hw.len().min(16);
        let s = &self.slots[id as usize];
        let new_hw = s.htype != htype || s.hw[..usize::from(s.hlen)] != hw[..n];
        if new_hw && !new_client {
            self.unindex_hw(id);
        }
        let s = &mut self.slots[id as usize];
        s.hw = [0; 16];
        s.hw[..n].copy_from_slice(&hw[..n]);
        s.hlen = n as u8;
        s.htype = htype;
        if new_hw || new_client {
            self.index_hw(id);
        }
        let s = &mut self.slots[id as usize];
        // Bound again, the lease is no longer one that ended; an offer leaves it as it was.
        s.unacked &= state != LeaseState::Active;
        self.set_state(id, state, expires);
    }

    /// Keeps the relay agent information a client was ACKed through. The same value
    /// again (a renewal through the same relay) costs no allocation; none leaves the
    /// kept one, since a renewal unicast to the server carries none.
    pub fn set_agent(&mut self, id: SlotId, info: Option<&[u8]>) {
        let s = &mut self.slots[id as usize];
        if let Some(v) = info {
            if s.agent.as_deref() != Some(v) {
                s.agent = Some(v.into());
            }
        }
    }

    pub fn limits(&self) -> &std::sync::Arc<Limits> {
        &self.limits
    }

    /// Uses `limits` for the lease limits' counters: one table for all shards.
    pub fn set_limits(&mut self, limits: std::sync::Arc<Limits>) {
        self.limits = limits;
    }

    /// Notes the counters a held or about to be held slot was counted against (the caller
    /// took them); they are released when the slot stops being held. Counters it held
    /// before are released now.
    pub fn charge(&mut self, id: SlotId, charge: Charge) {
        let s = &mut self.slots[id as usize];
        let old = std::mem::replace(&mut s.charge, charge);
        self.limits.release(&old);
    }

    /// Marks a held slot's lease as started now (client last transaction time).
    pub fn set_cltt(&mut self, id: SlotId, now: u64) {
        self.slots[id as usize].cltt = now;
    }

    /// Drops the slot's client association and its index entry.
    pub fn forget_client(&mut self, id: SlotId) {
        self.slots[id as usize].agent = None;
        if self.slots[id as usize].client.is_none() {
            return;
        }
        self.unindex_hw(id);
        let Some(key) = self.slots[id as usize].client.take() else {
            return;
        };
        let subnet = self.slots[id as usize].subnet;
        let hash = self.hash(subnet, key.as_ref());
        if let Ok(entry) = self.index.find_entry(hash, |&x| x == id) {
            entry.remove();
        }
    }

    /// Moves a slot to `state`: held and quarantined slots go on the expiry wheel, available
    /// ones to the back of their pool's free list, reserved ones and those outside the
    /// pools stay off every list.
    pub fn set_state(&mut self, id: SlotId, state: LeaseState, expires: u64) {
        self.unlink(id);
        let s = &mut self.slots[id as usize];
        let was = s.state;
        s.state = state;
        s.expires = expires;
        if was.held() && !state.held() {
            let charge = std::mem::replace(&mut s.charge, NO_CHARGE);
            self.limits.release(&charge);
        }
        let s = &mut self.slots[id as usize];
        let pool = s.pool;
        if (was == LeaseState::Partner) != (state == LeaseState::Partner) {
            if let Some(n) = self.partner.get_mut(pool as usize) {
                *n = if state == LeaseState::Partner {
                    *n + 1
                } else {
                    n.saturating_sub(1)
                };
            }
        }
        if state == LeaseState::Foreign || state == LeaseState::Partner {
            return;
        }
        if state.available() {
            if !s.reserved && s.pooled() && !s.unacked {
                self.push_back(ListId::Free(pool), id);
            }
        } else {
            let due = expires.max(self.cursor + 1);
            self.push_back(ListId::Wheel((due % WHEEL as u64) as u16), id);
        }
    }

    /// Turns the wheel to `now`: offers, leases and quarantines that ended move to their
    /// free list in the order they ended. Returns how many ended.
    pub fn expire(&mut self, now: u64) -> usize {
        if now <= self.cursor {
            return 0;
        }
        let steps = (now - self.cursor).min(WHEEL as u64);
        let mut ended = 0;
        for t in self.cursor + 1..=self.cursor + steps {
            let bucket = (t % WHEEL as u64) as u16;
            let mut id = self.wheel[bucket as usize].head;
            while id != NIL {
                let next = self.slots[id as usize].next;
                let s = &self.slots[id as usize];
                if s.expires <= now {
                    let to = match s.state {
                        LeaseState::Active => {
                            let s = &mut self.slots[id as usize];
                            s.unacked = self.hold_ended && !s.rewind;
                            if s.unacked || !self.partnered {
                                self.ended.push(id);
                            }
                            LeaseState::Expired
                        }
                        LeaseState::Declined => LeaseState::Free,
                        _ => LeaseState::Expired,
                    };
                    if to == LeaseState::Free {
                        self.forget_client(id);
                    }
                    self.set_state(id, to, now);
                    ended += 1;
                }
                id = next;
            }
        }
        self.cursor = now;
        ended
    }

    fn list_mut(&mut self, l: ListId) -> &mut List {
        match l {
            ListId::Free(s) => &mut self.free[s as usize],
            ListId::Wheel(b) => &mut self.wheel[b as usize],
            ListId::None => unreachable!("slots off every list are never linked"),
        }
    }

    fn push_back(&mut self, l: ListId, id: SlotId) {
        let tail = self.list_mut(l).tail;
        {
            let s = &mut self.slots[id as usize];
            s.prev = tail;
            s.next = NIL;
            s.list = l;
        }
        if tail != NIL {
            self.slots[tail as usize].next = id;
        }
        let list = self.list_mut(l);
        if list.head == NIL {
            list.head = id;
        }
        list.tail = id;
        list.len += 1;
    }

    fn unlink(&mut self, id: SlotId) {
        let (l, prev, next) = {
            let s = &self.slots[id as usize];
            (s.list, s.prev, s.next)
        };
        if l == ListId::None {
            return;
        }
        if prev != NIL {
            self.slots[prev as usize].next = next;
        }
        if next != NIL {
            self.slots[next as usize].prev = prev;
        }
        let list = self.list_mut(l);
        if list.head == id {
            list.head = next;
        }
        if list.tail == id {
            list.tail = prev;
        }
        list.len -= 1;
        let len = list.len;
        if let ListId::Free(pool) = l {
            let i = pool as usize;
            if len < self.low[i] && !self.short[i] {
                self.short[i] = true;
                self.starving.push(pool);
            }
        }
        let s = &mut self.slots[id as usize];
        s.prev = NIL;
        s.next = NIL;
        s.list = ListId::None;
    }

    /// Checks the table's structural invariants; for tests.
    #[cfg(test)]
    pub fn check(&self) {
        let mut seen = vec![false; self.slots.len()];
        let lists = self
            .free
            .iter()
            .map(|l| (l, true))
            .chain(self.wheel.iter().map(|l| (l, false)));
        for (l, free) in lists {
            let mut n = 0;
            let mut id = l.head;
            let mut prev = NIL;
            while id != NIL {
                let s = &self.slots[id as usize];
                assert!(!seen[id as usize], "slot {id} on two lists");
                seen[id as usize] = true;
                assert_eq!(s.prev, prev);
                assert_eq!(
                    s.state.available(),
                    free,
                    "slot {id} {:?} on the wrong list",
                    s.state
                );
                prev = id;
                id = s.next;
                n += 1;
            }
            assert_eq!(l.tail, prev);
            assert_eq!(l.len, n);
        }
        for (id, s) in self.slots() {
            if s.state == LeaseState::Foreign {
                assert!(
                    !seen[id as usize] && s.client.is_none(),
                    "foreign slot {id} in use"
                );
            } else if s.state == LeaseState::Partner || (s.unacked && s.state.available()) {
                assert!(
                    !seen[id as usize],
                    "slot {id} of the partner or unacked on a list"
                );
            } else if (!s.reserved && s.pooled()) || !s.state.available() {
                assert!(seen[id as usize], "slot {id} ({:?}) on no list", s.state);
            }
            if let Some(k) = &s.client {
                assert_eq!(self.find_client(s.subnet, k.as_ref()), Some(id));
                let hw = &s.hw[..usize::from(s.hlen)];
                assert!(
                    self.find_hw(s.htype, hw).any(|x| x == id),
                    "slot {id} missing from the hardware index"
                );
            }
        }
        let clients = self.slots.iter().filter(|s| s.client.is_some()).count();
        assert_eq!(self.index.len(), clients);
        assert_eq!(self.by_hw.len(), clients);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> LeaseTable {
        let pools = [(Ipv4Addr::new(192, 0, 2, 10), Ipv4Addr::new(192, 0, 2, 13))];
        let reserved = [Ipv4Addr::new(192, 0, 2, 12), Ipv4Addr::new(192, 0, 2, 99)];
        LeaseTable::new(
            &[SubnetSlots {
                pools: &pools,
                reserved: &reserved,
            }],
            Shard::WHOLE,
            1000,
        )
    }

    fn shard_table(index: u16, count: u16, last: u8) -> LeaseTable {
        let pools = [(
            Ipv4Addr::new(198, 51, 100, 0),
            Ipv4Addr::new(198, 51, 100, last),
        )];
        LeaseTable::new(
            &[SubnetSlots {
                pools: &pools,
                reserved: &[],
            }],
            Shard { index, count },
            1000,
        )
    }

    fn client(b: &[u8]) -> ClientRef<'_> {
        ClientRef {
            kind: KeyKind::ClientId,
            bytes: b,
        }
    }

    #[test]
    fn reserved_addresses_get_slots_and_stay_off_the_free_list() {
        let t = table();
        assert_eq!(t.len(), 5);
        assert_eq!(t.free_count(0), 3);
        let r = t.slot_of([192, 0, 2, 99].into()).unwrap();
        assert!(t.slot(r).reserved);
        assert_eq!(t.slot_of([192, 0, 2, 14].into()), None);
        t.check();
    }

    #[test]
    fn free_list_is_oldest_first_and_expiry_returns_to_the_back() {
        let mut t = table();
        let a = t.peek_free(0).unwrap();
        assert_eq!(t.slot(a).addr, Ipv4Addr::new(192, 0, 2, 10));
        t.bind(a, client(b"\x01a"), 1, &[1; 6], LeaseState::Active, 1010);
        let b = t.peek_free(0).unwrap();
        assert_eq!(t.slot(b).addr, Ipv4Addr::new(192, 0, 2, 11));
        assert_eq!(t.expire(1009), 0);
        assert_eq!(t.expire(1010), 1);
        assert_eq!(t.slot(a).state, LeaseState::Expired);
        assert_eq!(t.find_client(0, client(b"\x01a")), Some(a), "affinity kept");
        t.bind(b, client(b"\x01b"), 1, &[2; 6], LeaseState::Active, 2000);
        t.bind(
            t.peek_free(0).unwrap(),
            client(b"\x01c"),
            1,
            &[3; 6],
            LeaseState::Active,
            2000,
        );
        assert_eq!(
            t.peek_free(0),
            Some(a),
            "the expired address comes after never-used ones"
        );
        t.check();
    }

    #[test]
    fn binding_elsewhere_frees_the_clients_old_slot() {
        let mut t = table();
        let a = t.peek_free(0).unwrap();
        t.bind(a, client(b"\x01a"), 1, &[1; 6], LeaseState::Offered, 1030);
        let b = t.slot_of([192, 0, 2, 13].into()).unwrap();
        t.bind(b, client(b"\x01a"), 1, &[1; 6], LeaseState::Active, 5000);
        assert_eq!(t.slot(a).state, LeaseState::Free);
        assert_eq!(t.slot(a).client, None);
        assert_eq!(t.find_client(0, client(b"\x01a")), Some(b));
        t.check();
    }

    #[test]
    fn a_long_idle_gap_expires_everything_due() {
        let mut t = table();
        let a = t.peek_free(0).unwrap();
        t.bind(
            a,
            client(b"\x01a"),
            1,
            &[1; 6],
            LeaseState::Active,
            1000 + 3 * WHEEL as u64,
        );
        assert_eq!(t.expire(1000 + WHEEL as u64), 0);
        assert_eq!(t.expire(1000 + 10 * WHEEL as u64), 1);
        t.check();
    }

    #[test]
    fn long_client_ids_work() {
        let mut t = table();
        let long = [7u8; 200];
        let a = t.peek_free(0).unwrap();
        t.bind(a, client(&long), 1, &[1; 6], LeaseState::Active, 2000);
        assert_eq!(t.find_client(0, client(&long)), Some(a));
        t.check();
    }

    #[test]
    fn shards_start_with_disjoint_parts_that_cover_the_pool() {
        let tables: Vec<_> = (0..3).map(|i| shard_table(i, 3, 255)).collect();
        let mut owners = vec![0; 256];
        for t in &tables {
            t.check();
            for (_, s) in t.slots() {
                if s.state == LeaseState::Free {
                    owners[s.addr.octets()[3] as usize] += 1;
                }
            }
        }
        assert!(owners.iter().all(|&n| n == 1), "{owners:?}");
        let mut counts: Vec<_> = tables.iter().map(|t| t.free_count(0)).collect();
        counts.sort_unstable();
        assert_eq!(counts, [85, 85, 86]);
    }

    #[test]
    fn a_short_shard_says_so_once_and_borrowed_addresses_move_over() {
        let mut a = shard_table(0, 2, 255);
        let mut b = shard_table(1, 2, 255);
        let mut n = 0u32;
        while a.free_count(0) >= 32 {
            let id = a.peek_free(0).unwrap();
            n += 1;
            a.bind(
                id,
                client(&n.to_be_bytes()),
                1,
                &[1; 6],
                LeaseState::Active,
                9999,
            );
        }
        assert_eq!(a.take_starving().collect::<Vec<_>>(), [0]);
        let id = a.peek_free(0).unwrap();
        a.bind(id, client(b"\x01x"), 1, &[1; 6], LeaseState::Active, 9999);
        assert_eq!(a.take_starving().count(), 0, "asked twice");

        let mut lent = Vec::new();
        b.lend(0, 1000, &mut lent);
        assert_eq!(lent.len(), 64, "gives half of its free addresses");
        assert_eq!(b.free_count(0), 64);
        assert!(lent
            .iter()
            .all(|&x| b.slot(b.slot_of(x).unwrap()).state == LeaseState::Foreign));
        let before = a.free_count(0);
        assert_eq!(a.adopt(&lent), 64);
        assert_eq!(a.free_count(0), before + 64);
        assert_eq!(a.adopt(&lent), 0, "adopting twice is harmless");
        a.check();
        b.check();
    }

    #[test]
    fn reserving_takes_an_address_off_the_free_list_in_every_shard() {
        let mut a = shard_table(0, 2, 15);
        let mut b = shard_table(1, 2, 15);
        let addr = Ipv4Addr::new(198, 51, 100, 4); // shard 0's
        let free = (a.free_count(0), b.free_count(0));
        let (ia, ib) = (a.reserve(addr, 0), b.reserve(addr, 0));
        for (t, id) in [(&a, ia), (&b, ib)] {
            let s = t.slot(id);
            assert!(s.reserved && s.pooled());
            assert_eq!(s.state, LeaseState::Free, "usable by the host in any shard");
        }
        assert_eq!((a.free_count(0), b.free_count(0)), (free.0 - 1, free.1));
        a.check();
        b.check();
        // Nobody held it: it goes back to nobody, then the caller hands it to one shard.
        assert!(!a.unreserve(ia, false));
        assert!(!b.unreserve(ib, false));
        assert_eq!(a.slot(ia).state, LeaseState::Foreign);
        assert_eq!(b.slot(ib).state, LeaseState::Foreign);
        assert_eq!(a.adopt(&[addr]), 1);
        assert_eq!(a.free_count(0), free.0);
        a.check();
        b.check();
    }

    #[test]
    fn the_shard_that_holds_a_reserved_address_keeps_it() {
        let mut a = shard_table(0, 2, 15);
        let mut b = shard_table(1, 2, 15);
        let addr = Ipv4Addr::new(198, 51, 100, 4);
        let (ia, ib) = (a.reserve(addr, 0), b.reserve(addr, 0));
        b.bind(ib, client(b"\x01h"), 1, &[1; 6], LeaseState::Active, 5000);
        assert!(!a.unreserve(ia, false));
        assert!(b.unreserve(ib, false));
        assert_eq!(b.slot(ib).state, LeaseState::Active);
        b.expire(5000);
        assert_eq!(b.slot(ib).state, LeaseState::Expired);
        assert_eq!(b.free_count(0), 9, "its 8 and the expired one");
        a.check();
        b.check();
    }

    #[test]
    fn an_address_outside_the_pools_gets_a_slot_of_its_own() {
        let mut t = table();
        let outside = Ipv4Addr::new(192, 0, 2, 50);
        assert_eq!(t.slot_of(outside), None);
        let id = t.reserve(outside, 0);
        assert_eq!(t.slot_of(outside), Some(id));
        assert!(!t.slot(id).pooled());
        assert_eq!(
            t.slot_of([192, 0, 2, 99].into()).map(|i| t.slot(i).addr),
            Some([192, 0, 2, 99].into())
        );
        t.check();
        t.bind(id, client(b"\x01o"), 1, &[1; 6], LeaseState::Active, 2000);
        assert!(t.unreserve(id, true));
        t.expire(2000);
        assert_eq!(t.slot(id).state, LeaseState::Expired);
        assert_eq!(t.free_count(0), 3, "never on a free list");
        t.check();
        // Reserved again: the same slot.
        assert_eq!(t.reserve(outside, 0), id);
        t.check();
    }

    #[test]
    fn an_empty_share_asks_when_a_client_finds_nothing() {
        let mut t = shard_table(1, 2, 0);
        assert_eq!(t.free_count(0), 0);
        t.want(0);
        t.want(0);
        assert_eq!(t.take_starving().collect::<Vec<_>>(), [0]);
        let mut none = Vec::new();
        t.lend(0, 10, &mut none);
        assert!(none.is_empty());
    }
}
