//! The lease engine: RFC 2131 server behaviour as a deterministic state machine. A datagram,
//! where it arrived and the current time go in; a reply written into the caller's buffer
//! and where to send it come out. No sockets, no clock, no allocation per packet: the UDP
//! backend, the AF_XDP workers and the tests all drive this same code.

mod classify;
mod failover;
mod leases;
mod limits;
mod persist;
mod query;
mod reply;
mod reserve;
mod stats;

use std::net::Ipv4Addr;
use std::sync::Arc;

use crate::lease::Cause;
use crate::policy::{LinkId, Policy, Reservation, SubscriberKind};
use crate::wire::frame::Addressing;
use crate::wire::{relay, MessageType, Request, BOOTREQUEST};

pub use crate::policy::class::NotMember;
pub use failover::Applied;
use failover::Partnership;
pub use leases::{ClientRef, KeyKind, LeaseState, LeaseTable, Shard, Slot, SlotId};
pub use limits::Limits;
pub use reply::Destination;
pub use reserve::NotReserved;
pub use stats::{Drop, Stats};

/// Where and how a datagram reached the server.
#[derive(Debug, Clone, Copy)]
pub struct RxMeta {
    /// The listening interface it arrived on.
    pub link: LinkId,
    /// The server's address the datagram reached, or for a broadcast the address of the
    /// receiving interface: the default server identifier and reply source.
    pub local_addr: Ipv4Addr,
    /// The IP destination was a broadcast address.
    pub broadcast: bool,
}

/// A reply ready to send: `len` octets at the start of the caller's buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reply {
    pub len: usize,
    pub kind: MessageType,
    /// The address the reply is about: offered or acknowledged, refused, or ciaddr.
    pub addr: Ipv4Addr,
    pub to: Destination,
    /// Source address for the reply: the server identifier it carries.
    pub from: Ipv4Addr,
}

impl Reply {
    /// The frame addressing for the reply when it leaves as a whole frame from `our_mac`.
    /// `next_hop` is the source MAC of the request: the client itself, or the router or
    /// relay that forwarded it, which is where replies to relays and to ciaddr go first.
    /// The reply goes back on the VLAN the request came from.
    pub fn addressing(&self, our_mac: [u8; 6], next_hop: [u8; 6], vlan: Option<u16>) -> Addressing {
        let dst_mac = match self.to {
            Destination::Hardware { mac, .. } => mac,
            Destination::Broadcast => [0xff; 6],
            Destination::Relay(_) | Destination::Unicast(_) => next_hop,
        };
        Addressing {
            dst_mac,
            src_mac: our_mac,
            src_ip: self.from,
            dst_ip: self.to.ip(),
            src_port: SERVER_PORT,
            dst_port: self.to.port(),
            vlan,
        }
    }
}

/// The server port (RFC 2131 §4.1).
pub const SERVER_PORT: u16 = 67;

/// What the engine made of a datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Reply(Reply),
    /// Handled, nothing to send (RELEASE, DECLINE, a REQUEST for another server, ...).
    Done,
    /// Not served, counted under this reason.
    Dropped(Drop),
    /// A leasequery from an allowed requester whose answer needs every shard's bindings:
    /// the caller gathers them (`bindings`) and answers (`answer_leasequery`).
    Gather,
}

/// The engine's view of one configured subnet.
struct SubnetRt {
    mask: Ipv4Addr,
    net: crate::policy::Ipv4Net,
}

pub struct Engine {
    policy: Arc<Policy>,
    subnets: Vec<SubnetRt>,
    /// Subnet ids in order, so one subnet can be lent out as a one-element slice.
    ids: Vec<u16>,
    /// Subnets whose direct clients are on each link, in configuration order.
    links: Vec<Vec<u16>>,
    /// Subnets sorted by network address for giaddr and ciaddr lookup.
    by_net: Vec<(u32, u32, u16)>,
    /// Every pool as (subnet, index in the subnet), numbered as the lease table's free
    /// lists are; and each subnet's pools as a range of those numbers.
    pools: Vec<(u16, u16)>,
    subnet_pools: Vec<std::ops::Range<u16>>,
    /// Reservations by each identity a request may name: the file's, then the run-time
    /// ones.
    res_index: reserve::ResIndex,
    /// Reservations made while running (control socket, journal replay), by a stable
    /// index (`RUNTIME | i` in a `ResId`); `None` is a freed entry, reused next.
    runtime: Vec<Option<(u16, Reservation)>>,
    runtime_free: Vec<u32>,
    runtime_at: hashbrown::HashMap<Ipv4Addr, u32>,
    leases: LeaseTable,
    stats: Stats,
    shard: Shard,
    /// The Lamport stamp of the last journal record (see `persist`).
    stamp: u64,
    /// The slot the message being handled changed in a way the journal must keep, and why.
    change: Option<(SlotId, Cause)>,
    /// Changes made without a message (leases that ran out, the failover rules), for the
    /// journal and the partner, in the order made.
    queued: std::collections::VecDeque<(SlotId, Cause)>,
    /// The relay and host name of the request that made `change`, for the lease history.
    change_giaddr: Ipv4Addr,
    change_host: Vec<u8>,
    /// The failover partnership's rules, when the server has a partner.
    failover: Option<Box<Partnership>>,
    classifier: classify::Classifier,
    /// The classes of the message being handled.
    classes: classify::Classes,
    /// Some class has a lease limit.
    limited: bool,
}

/// The lease terms granted: lease time, T1 and T2, in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Terms {
    pub lease: u32,
    pub renew: u32,
    pub rebind: u32,
}

/// A reservation: its subnet and its index there, or `RUNTIME | i` for run-time entry `i`.
type ResId = (u16, u32);

/// Marks a `ResId` index as one of the run-time reservations.
const RUNTIME: u32 = 1 << 31;

/// The subnets a message may be served from, named without borrowing the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Net {
    Nowhere,
    Subnet(u16),
    Link(LinkId),
}

/// What a REQUEST for an address comes to.
enum Verdict {
    Ack(SlotId),
    Nak(&'static str),
    Silent(Drop),
}

impl Engine {
    /// Builds the engine from a validated configuration; `now` in seconds since the epoch.
    pub fn new(
        policy: impl Into<Arc<Policy>>,
        now: u64,
    ) -> Result<Self, Vec<crate::policy::Invalid>> {
        Self::new_shard(policy, Shard::WHOLE, now)
    }

    /// Builds the engine of one shard: it starts with `shard`'s part of every pool.
    pub fn new_shard(
        policy: impl Into<Arc<Policy>>,
        shard: Shard,
        now: u64,
    ) -> Result<Self, Vec<crate::policy::Invalid>> {
        let policy = policy.into();
        policy.validate()?;
        let ranges: Vec<Vec<(Ipv4Addr, Ipv4Addr)>> = policy
            .subnets
            .iter()
            .map(|s| {
                s.pools
                    .iter()
                    .map(|p| (p.range.first, p.range.last))
                    .collect()
            })
            .collect();
        let mut pools = Vec::new();
        let mut subnet_pools = Vec::new();
        for (i, s) in policy.subnets.iter().enumerate() {
            let first = pools.len() as u16;
            pools.extend((0..s.pools.len() as u16).map(|k| (i as u16, k)));
            subnet_pools.push(first..pools.len() as u16);
        }
        let reserved: Vec<Vec<Ipv4Addr>> = policy
            .subnets
            .iter()
            .map(|s| s.reservations.iter().filter_map(|r| r.address).collect())
            .collect();
        let slots: Vec<_> = ranges
            .iter()
            .zip(&reserved)
            .map(|(p, r)| leases::SubnetSlots {
                pools: p,
                reserved: r,
            })
            .collect();
        let leases = LeaseTable::new(&slots, shard, now);
        let mut links = vec![Vec::new(); policy.interfaces.len()];
        let mut by_net = Vec::new();
        for (i, s) in policy.subnets.iter().enumerate() {
            let i = i as u16;
            if let Some(l) = s.interface {
                links[l as usize].push(i);
            }
            by_net.push((u32::from(s.net.network()), u32::from(s.net.broadcast()), i));
        }
        by_net.sort_unstable();
        let subnets = policy
            .subnets
            .iter()
            .map(|s| SubnetRt {
                mask: s.net.mask_addr(),
                net: s.net,
            })
            .collect();
        let ids = (0..policy.subnets.len() as u16).collect();
        let mut engine = Self {
            policy,
            subnets,
            ids,
            links,
            by_net,
            pools,
            subnet_pools,
            res_index: Default::default(),
            runtime: Vec::new(),
            runtime_free: Vec::new(),
            runtime_at: Default::default(),
            leases,
            stats: Stats::default(),
            shard,
            stamp: 0,
            change: None,
            // Sized ahead: the request path allocates nothing (benches/tests/alloc_free.rs).
            queued: std::collections::VecDeque::with_capacity(256),
            change_giaddr: Ipv4Addr::UNSPECIFIED,
            change_host: Vec::with_capacity(crate::lease::MAX_HOST_NAME),
            failover: None,
            classifier: classify::Classifier::default(),
            classes: classify::Classes::default(),
            limited: false,
        };
        engine.limited = engine
            .policy
            .classes
            .iter()
            .any(|c| c.lease_limit.is_some());
        if engine.limited {
            let values = engine.leases.len() * limits::MAX_CHARGES;
            engine.leases.set_limits(Arc::new(Limits::new(values)));
        }
        engine.classifier = classify::Classifier::new(&engine.policy);
        engine.index_reservations();
        Ok(engine)
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Counts lease limits in `other`'s table: every shard of a server shares one, since
    /// the clients of one circuit may be steered to any of them. Call before `restore`.
    pub fn share_limits(&mut self, other: &Engine) {
        self.leases.set_limits(Arc::clone(other.leases.limits()));
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    pub fn leases(&self) -> &LeaseTable {
        &self.leases
    }

    /// Which part of the address space this engine started with.
    pub fn shard(&self) -> Shard {
        self.shard
    }

    /// The lease table, for the shard's driver to lend and adopt free addresses.
    pub fn leases_mut(&mut self) -> &mut LeaseTable {
        &mut self.leases
    }

    /// Lets time pass without traffic: ends offers, leases and quarantines due by `now`.
    pub fn tick(&mut self, now: u64) {
        self.leases.expire(now);
        self.report_ended();
        self.claim_partner_pool(now);
    }

    /// Handles one datagram. The reply, if any, is written at the start of `out`.
    pub fn handle(&mut self, packet: &[u8], meta: &RxMeta, now: u64, out: &mut [u8]) -> Outcome {
        self.change = None;
        self.change_giaddr = Ipv4Addr::UNSPECIFIED;
        self.change_host.clear();
        self.leases.expire(now);
        let outcome = self.dispatch(packet, meta, now, out);
        match outcome {
            Outcome::Reply(r) => self.stats.count_tx(r.kind),
            Outcome::Dropped(d) => self.stats.count_drop(d),
            Outcome::Done | Outcome::Gather => {}
        }
        outcome
    }

    fn dispatch(&mut self, packet: &[u8], meta: &RxMeta, now: u64, out: &mut [u8]) -> Outcome {
        let req = match Request::parse(packet) {
            Ok(r) => r,
            Err(e) => return Outcome::Dropped(Drop::Malformed(e)),
        };
        if req.msg.op() != BOOTREQUEST {
            return Outcome::Dropped(Drop::NotRequest);
        }
        self.stats.count_rx(req.msg_type);
        // Before the failover gate: both servers of a pair know every lease, and a
        // requester may ask either.
        if req.msg_type.to_u8() == crate::leasequery::msg::LEASEQUERY {
            return self.leasequery(&req, meta, now, out);
        }
        if let Some(d) = self.failover_gate(&req, client_of(&req)) {
            return Outcome::Dropped(d);
        }
        let hw = Hw(req.msg.chaddr());
        let outcome = match req.msg_type {
            MessageType::Discover => {
                tracing::info!("DHCPDISCOVER from {hw} via {}", self.via(&req, meta));
                self.discover(&req, meta, now, out)
            }
            MessageType::Request => {
                let addr = req.requested_address.unwrap_or(req.msg.ciaddr());
                tracing::info!(
                    "DHCPREQUEST for {addr} from {hw} via {}",
                    self.via(&req, meta)
                );
                self.request(&req, meta, now, out)
            }
            MessageType::Decline => self.decline(&req, meta, now),
            MessageType::Release => self.release(&req, meta, now),
            MessageType::Inform => {
                tracing::info!(
                    "DHCPINFORM from {} via {}",
                    req.msg.ciaddr(),
                    self.via(&req, meta)
                );
                self.inform(&req, meta, out)
            }
            _ => return Outcome::Dropped(Drop::UnexpectedType),
        };
        if let Outcome::Reply(r) = &outcome {
            tracing::info!(
                "{} on {} to {hw} via {}",
                r.kind.name(),
                r.addr,
                self.via(&req, meta)
            );
        }
        outcome
    }

    fn link_name(&self, link: LinkId) -> &str {
        self.policy
            .interfaces
            .get(link as usize)
            .map_or("?", String::as_str)
    }

    /// The subnets a message may be served from (RFC 2131 §4.3.1): the one a relay names
    /// with link selection (RFC 3527, relayed messages only) or the one the client names
    /// with subnet selection (RFC 3011), as dhcpd and Kea take them, in that order; else
    /// the one holding the relay's giaddr; for a unicast from a client with an address,
    /// the one holding ciaddr; otherwise those on the link it arrived on.
    fn network(&self, req: &Request<'_>, meta: &RxMeta) -> Net {
        let giaddr = req.msg.giaddr();
        let link_selection = req
            .relay_addr(relay::sub::LINK_SELECTION)
            .filter(|_| !giaddr.is_unspecified());
        if let Some(a) = link_selection.or(req.subnet_selection) {
            return self.subnet_of(a).map_or(Net::Nowhere, Net::Subnet);
        }
        if !giaddr.is_unspecified() {
            return self.subnet_of(giaddr).map_or(Net::Nowhere, Net::Subnet);
        }
        let ciaddr = req.msg.ciaddr();
        if !ciaddr.is_unspecified() && !meta.broadcast {
            if let Some(i) = self.subnet_of(ciaddr) {
                return Net::Subnet(i);
            }
        }
        Net::Link(meta.link)
    }

    fn ids(&self, net: Net) -> &[u16] {
        match net {
            Net::Nowhere => &[],
            Net::Subnet(i) => self.ids_of(i),
            Net::Link(l) => self.links.get(l as usize).map_or(&[], Vec::as_slice),
        }
    }

    fn subnet_of(&self, ip: Ipv4Addr) -> Option<u16> {
        let a = u32::from(ip);
        let i = self.by_net.partition_point(|s| s.1 < a);
        self.by_net.get(i).filter(|s| s.0 <= a).map(|s| s.2)
    }

    fn subnet_in(&self, net: &[u16], ip: Ipv4Addr) -> Option<u16> {
        net.iter()
            .copied()
            .find(|&s| self.subnets[s as usize].net.contains(ip))
    }

    /// The client's reservation in one of the network's subnets, looked up once per
    /// message: by client identifier, hardware address, then circuit id, remote id,
    /// subscriber id and flex-id (Kea's default order but for the client identifier,
    /// which names the client more precisely than its MAC). No lookup at all when
    /// nothing is reserved, the common ISP case.
    fn reservation(&self, net: &[u16], req: &Request<'_>) -> Option<ResId> {
        if self.res_index.is_empty() {
            return None;
        }
        let client = client_of(req);
        let by_id = (client.kind == KeyKind::ClientId)
            .then(|| self.res_index.by_id.get(client.bytes))
            .flatten();
        let by_hw = <[u8; 6]>::try_from(req.msg.chaddr())
            .ok()
            .and_then(|hw| self.res_index.by_hw.get(&hw));
        let in_net = |ids: &Vec<ResId>| ids.iter().find(|(s, _)| net.contains(s)).copied();
        by_id
            .into_iter()
            .chain(by_hw)
            .find_map(in_net)
            .or_else(|| self.reservation_by_subscriber(req, in_net))
    }

    fn reservation_by_subscriber(
        &self,
        req: &Request<'_>,
        in_net: impl Fn(&Vec<ResId>) -> Option<ResId>,
    ) -> Option<ResId> {
        SubscriberKind::ALL
            .into_iter()
            .zip(&self.res_index.by_subscriber)
            .filter(|(_, map)| !map.is_empty())
            .find_map(|(kind, map)| {
                let value = match kind {
                    // The packet is indexed only when a flex-id reservation needs it.
                    SubscriberKind::Flex => self
                        .policy
                        .flex_id
                        .as_ref()?
                        .eval(&crate::expr::Packet::new(req))?,
                    _ => relay::sub_option(req.relay_agent_info?, kind as u8)?,
                };
                map.get(value).and_then(&in_net)
            })
    }

    fn res(&self, (subnet, k): ResId) -> &Reservation {
        if k & RUNTIME != 0 {
            let entry = self.runtime[(k & !RUNTIME) as usize].as_ref();
            &entry
                .expect("the indexes hold live run-time reservations only")
                .1
        } else {
            &self.policy.subnets[subnet as usize].reservations[k as usize]
        }
    }

    /// The reservation found for the message, if it belongs to `subnet`.
    fn res_in(&self, res: Option<ResId>, subnet: u16) -> Option<&Reservation> {
        res.filter(|r| r.0 == subnet).map(|r| self.res(r))
    }

    fn server_id(&self, subnet: u16, meta: &RxMeta) -> Ipv4Addr {
        self.policy.subnets[subnet as usize]
            .server_id
            .unwrap_or(meta.local_addr)
    }

    /// Whether a client's server identifier names this server: an address it has, one a
    /// subnet sets, or the one the relay told the client to use (RFC 5107).
    fn is_ours(&self, req: &Request<'_>, server_id: Ipv4Addr, net: &[u16], meta: &RxMeta) -> bool {
        server_id == meta.local_addr
            || req.relay_addr(relay::sub::SERVER_ID_OVERRIDE) == Some(server_id)
            || net
                .iter()
                .any(|&s| self.policy.subnets[s as usize].server_id == Some(server_id))
    }

    /// Sorts the sender of `req` into the policy's classes, for the rest of the message;
    /// `res`: its reservation in the network it is served from, if any (KNOWN).
    fn classify(&mut self, req: &Request<'_>, res: Option<ResId>) {
        self.classifier.classify(
            &self.policy.classes,
            req,
            res.is_some(),
            self.leases.limits(),
            &mut self.classes,
        );
    }

    /// The settings the client's classes give it, in the order they apply.
    fn class_settings(&self) -> impl Iterator<Item = &crate::policy::Settings> {
        self.classes.settings(&self.policy.classes)
    }

    /// Whether the client may have the address of slot `id`: an address reserved for a
    /// host is judged by the reservation, one in a pool by the pool's classes.
    fn admitted(&self, id: SlotId) -> bool {
        let s = self.leases.slot(id);
        s.reserved || !s.pooled() || self.classes.admits(self.pool(s.pool))
    }

    fn terms(&self, subnet: u16, asked: Option<u32>) -> Terms {
        let t = self
            .class_settings()
            .find_map(|s| s.lease.as_ref())
            .unwrap_or(&self.policy.subnets[subnet as usize].lease);
        let lease = asked.map_or(t.default, |a| a.clamp(t.min, t.max));
        let renew = t.renew.filter(|&r| r < lease).unwrap_or(lease / 2);
        let default_rebind = (lease as u64 * 7 / 8) as u32;
        let rebind = t
            .rebind
            .filter(|&r| r < lease && r > renew)
            .unwrap_or(default_rebind.max(renew));
        Terms {
            lease,
            renew,
            rebind,
        }
    }

    /// DHCPDISCOVER (RFC 2131 §4.3.1): offer the client's reserved address, else the one it
    /// holds or held last, else the one it asks for if free, else the oldest free one.
    fn discover(&mut self, req: &Request<'_>, meta: &RxMeta, now: u64, out: &mut [u8]) -> Outcome {
        let net = self.network(req, meta);
        if self.ids(net).is_empty() {
            return Outcome::Dropped(Drop::UnknownNetwork);
        }
        let client = client_of(req);
        let res = self.reservation(self.ids(net), req);
        self.classify(req, res);
        let Some(slot) = self.pick_for_offer(self.ids(net), client, req, res) else {
            for i in 0..self.ids(net).len() {
                for pool in self.subnet_pools[usize::from(self.ids(net)[i])].clone() {
                    self.leases.want(pool);
                    self.warn_partner_holds(pool, now);
                }
            }
            return Outcome::Dropped(Drop::NoFreeLease);
        };
        let s = self.leases.slot(slot);
        let (subnet, addr) = (s.subnet, s.addr);
        let holds = s.state.held() && self.leases.is_client(slot, client);
        if !holds {
            let charge = match self.take_limits(req, "offer") {
                Ok(charge) => charge,
                Err(d) => return Outcome::Dropped(d),
            };
            let hold = now + self.policy.offer_hold as u64;
            self.bind(slot, req, LeaseState::Offered, hold);
            self.leases.charge(slot, charge);
        } else if s.state != LeaseState::Active {
            let hold = now + self.policy.offer_hold as u64;
            self.bind(slot, req, LeaseState::Offered, hold);
        }
        let terms = self.terms(subnet, req.lease_time);
        let sid = self.server_id(subnet, meta);
        let res = self.res_in(res, subnet);
        let ans = reply::Answer {
            kind: MessageType::Offer,
            yiaddr: addr,
            ciaddr: None,
            terms: Some(terms),
            nak: None,
        };
        self.answer(req, &ans, subnet, res, sid, out)
    }

    /// A pool by its number in the lease table.
    fn pool(&self, id: u16) -> &crate::policy::Pool {
        let (subnet, k) = self.pools[usize::from(id)];
        &self.policy.subnets[usize::from(subnet)].pools[usize::from(k)]
    }

    fn ids_of(&self, subnet: u16) -> &[u16] {
        std::slice::from_ref(&self.ids[subnet as usize])
    }

    fn pick_for_offer(
        &self,
        net: &[u16],
        client: ClientRef<'_>,
        req: &Request<'_>,
        res: Option<ResId>,
    ) -> Option<SlotId> {
        let usable = |id: SlotId| {
            let s = self.leases.slot(id);
            let theirs = self.leases.is_client(id, client);
            ((s.state.available() && (!s.unacked || theirs)) || (s.state.held() && theirs))
                && (s.pooled() || s.reserved)
                && !self.reserved_for_other(id, res)
                && self.admitted(id)
        };
        if let Some(r) = res.map(|r| self.res(r)) {
            if let Some(id) = r
                .address
                .and_then(|a| self.leases.slot_of(a))
                .filter(|&id| usable(id))
            {
                return Some(id);
            }
        }
        let known = net
            .iter()
            .find_map(|&s| self.leases.find_client(s, client))
            .filter(|&id| usable(id));
        let asked = req
            .requested_address
            .filter(|&a| self.subnet_in(net, a).is_some())
            .and_then(|a| self.leases.slot_of(a))
            .filter(|&id| usable(id));
        known.or(asked).or_else(|| {
            net.iter()
                .flat_map(|&s| self.subnet_pools[usize::from(s)].clone())
                .filter(|&p| self.classes.admits(self.pool(p)))
                .find_map(|p| self.leases.peek_free(p))
        })
    }

    /// A slot reserved in the configuration for a host other than the one whose
    /// reservation is `res`. Reserved addresses are unique, so the address decides.
    fn reserved_for_other(&self, id: SlotId, res: Option<ResId>) -> bool {
        let s = self.leases.slot(id);
        s.reserved && res.is_none_or(|r| self.res(r).address != Some(s.addr))
    }

    /// DHCPREQUEST (RFC 2131 §4.3.2), in each client state.
    fn request(&mut self, req: &Request<'_>, meta: &RxMeta, now: u64, out: &mut [u8]) -> Outcome {
        let net = self.network(req, meta);
        let client = client_of(req);
        let ciaddr = req.msg.ciaddr();
        let (addr, must_answer, renewing) = match (req.server_id, req.requested_address) {
            // SELECTING: the client picked a server; only that one answers.
            (Some(sid), requested) => {
                if !self.is_ours(req, sid, self.ids(net), meta) {
                    self.withdraw_offer(net, client);
                    return Outcome::Dropped(Drop::OtherServer);
                }
                match requested.or((!ciaddr.is_unspecified()).then_some(ciaddr)) {
                    Some(a) => (a, true, false),
                    None => return Outcome::Dropped(Drop::NoAddress),
                }
            }
            // INIT-REBOOT: checking an address it remembers.
            (None, Some(a)) if ciaddr.is_unspecified() => (a, false, false),
            // RENEWING (unicast) or REBINDING (broadcast): extending the lease it has.
            _ if !ciaddr.is_unspecified() => (ciaddr, false, true),
            _ => return Outcome::Dropped(Drop::NoAddress),
        };
        let res = self.reservation(self.ids(net), req);
        self.classify(req, res);
        let ids = self.ids(net);
        let Some(&first) = ids.first() else {
            return Outcome::Dropped(Drop::UnknownNetwork);
        };
        let subnet = self.subnet_in(ids, addr).unwrap_or(first);
        let sid = self.server_id(subnet, meta);
        match self.judge(ids, addr, client, res, must_answer) {
            Verdict::Ack(slot) => {
                let s = self.leases.slot(slot);
                let renewal = s.state == LeaseState::Active && self.leases.is_client(slot, client);
                if !(s.state.held() && self.leases.is_client(slot, client)) {
                    match self.take_limits(req, "lease") {
                        Ok(charge) => self.leases.charge(slot, charge),
                        Err(d) => return Outcome::Dropped(d),
                    }
                }
                let subnet = self.leases.slot(slot).subnet;
                let terms = self.terms(subnet, req.lease_time);
                let terms = self.failover_terms(slot, terms, now);
                let end = now + terms.lease as u64;
                self.bind(slot, req, LeaseState::Active, end);
                self.leases.set_cltt(slot, now);
                self.leases.set_agent(slot, req.relay_agent_info);
                self.changed(
                    slot,
                    if renewal {
                        Cause::Renewed
                    } else {
                        Cause::Granted
                    },
                );
                self.note_request(req);
                let res = self.res_in(res, subnet);
                let ans = reply::Answer {
                    kind: MessageType::Ack,
                    yiaddr: addr,
                    ciaddr: renewing.then_some(ciaddr),
                    terms: Some(terms),
                    nak: None,
                };
                self.answer(req, &ans, subnet, res, sid, out)
            }
            Verdict::Nak(why) => {
                tracing::info!("refusing {addr} to {}: {why}", Hw(req.msg.chaddr()));
                let ans = reply::Answer {
                    kind: MessageType::Nak,
                    yiaddr: addr,
                    ciaddr: None,
                    terms: None,
                    nak: Some(why),
                };
                self.answer(req, &ans, subnet, None, sid, out)
            }
            Verdict::Silent(d) => Outcome::Dropped(d),
        }
    }

    /// Whether `client` may have `addr` in `net`. `must_answer` (the client named us as its
    /// server) or the `authoritative` switch turn "not ours to judge" into a NAK; a
    /// positive conflict is always a NAK.
    fn judge(
        &self,
        net: &[u16],
        addr: Ipv4Addr,
        client: ClientRef<'_>,
        res: Option<ResId>,
        must_answer: bool,
    ) -> Verdict {
        let unknown = |d: Drop, why| {
            if must_answer || self.policy.authoritative {
                Verdict::Nak(why)
            } else {
                Verdict::Silent(d)
            }
        };
        if net.is_empty() || self.subnet_in(net, addr).is_none() {
            return unknown(Drop::UnknownNetwork, "wrong network");
        }
        if let Some(r) = res.map(|r| self.res(r)) {
            if r.address.is_some_and(|a| a != addr) {
                return Verdict::Nak("client has a different reserved address");
            }
        }
        let Some(slot) = self.leases.slot_of(addr) else {
            return unknown(Drop::NotInPool, "address not in any pool");
        };
        let s = self.leases.slot(slot);
        if self.reserved_for_other(slot, res) {
            return Verdict::Nak("address reserved for another client");
        }
        if !self.admitted(slot) {
            return Verdict::Nak("address not available to this client's classes");
        }
        if !s.pooled() && !s.reserved {
            // A reservation outside the pools ended: the address is no longer ours to give.
            return unknown(Drop::NotInPool, "address not in any pool");
        }
        let mine = self.leases.is_client(slot, client);
        match s.state {
            LeaseState::Offered | LeaseState::Active if !mine => {
                Verdict::Nak("address in use by another client")
            }
            LeaseState::Declined => Verdict::Nak("address declined"),
            LeaseState::Foreign => unknown(Drop::OtherShard, "address managed by another worker"),
            LeaseState::Partner => Verdict::Silent(Drop::PartnerPool),
            _ if s.unacked && !mine => Verdict::Silent(Drop::PartnerPool),
            _ => Verdict::Ack(slot),
        }
    }

    /// Gives `slot` to the sender of `req` in `state` until `until`.
    fn bind(&mut self, slot: SlotId, req: &Request<'_>, state: LeaseState, until: u64) {
        let (htype, chaddr) = (req.msg.htype(), req.msg.chaddr());
        self.leases
            .bind(slot, client_of(req), htype, chaddr, state, until);
    }

    /// The client took another server's offer: what we held for it goes back.
    fn withdraw_offer(&mut self, net: Net, client: ClientRef<'_>) {
        for i in 0..self.ids(net).len() {
            if let Some(id) = self.leases.find_client(self.ids(net)[i], client) {
                if self.leases.slot(id).state == LeaseState::Offered {
                    self.leases.set_state(id, LeaseState::Expired, 0);
                }
            }
        }
    }

    /// The slot of `addr`, when the message is for this server and the client holds it.
    fn held_by_sender(
        &self,
        req: &Request<'_>,
        meta: &RxMeta,
        addr: Ipv4Addr,
    ) -> Result<SlotId, Drop> {
        let net = self.ids(self.network(req, meta));
        if req
            .server_id
            .is_some_and(|sid| !self.is_ours(req, sid, net, meta))
        {
            return Err(Drop::OtherServer);
        }
        let client = client_of(req);
        self.leases
            .slot_of(addr)
            .filter(|&id| self.leases.slot(id).state.held() && self.leases.is_client(id, client))
            .ok_or(Drop::NotHeld)
    }

    /// DHCPDECLINE (RFC 2131 §4.3.3): the address is in use on the wire; keep it out of use.
    fn decline(&mut self, req: &Request<'_>, meta: &RxMeta, now: u64) -> Outcome {
        let Some(addr) = req.requested_address else {
            return Outcome::Dropped(Drop::NoAddress);
        };
        let slot = match self.held_by_sender(req, meta, addr) {
            Ok(slot) => slot,
            Err(d) => return Outcome::Dropped(d),
        };
        tracing::warn!(
            "DHCPDECLINE of {addr} from {} via {}: abandoning address",
            Hw(req.msg.chaddr()),
            self.via(req, meta)
        );
        self.leases.forget_client(slot);
        let until = now + self.policy.decline_hold as u64;
        self.leases.set_state(slot, LeaseState::Declined, until);
        self.changed(slot, Cause::Declined);
        self.note_request(req);
        Outcome::Done
    }

    /// DHCPRELEASE (RFC 2131 §4.3.4): the address comes back, still remembered for the client.
    fn release(&mut self, req: &Request<'_>, meta: &RxMeta, now: u64) -> Outcome {
        let addr = req.msg.ciaddr();
        let slot = match self.held_by_sender(req, meta, addr) {
            Ok(slot) => slot,
            Err(d) => return Outcome::Dropped(d),
        };
        tracing::info!(
            "DHCPRELEASE of {addr} from {} via {}",
            Hw(req.msg.chaddr()),
            self.via(req, meta)
        );
        self.leases.end(slot, LeaseState::Released, now);
        self.changed(slot, Cause::Released);
        self.note_request(req);
        Outcome::Done
    }

    /// DHCPINFORM (RFC 2131 §4.3.5): configuration only, no lease, sent to ciaddr.
    fn inform(&mut self, req: &Request<'_>, meta: &RxMeta, out: &mut [u8]) -> Outcome {
        let ciaddr = req.msg.ciaddr();
        let net = self.ids(self.network(req, meta));
        let Some(subnet) = self.subnet_in(net, ciaddr).or(net.first().copied()) else {
            return Outcome::Dropped(Drop::UnknownNetwork);
        };
        let res = self.reservation(self.ids_of(subnet), req);
        self.classify(req, res);
        let res = self.res_in(res, subnet);
        let sid = self.server_id(subnet, meta);
        let ans = reply::Answer {
            kind: MessageType::Ack,
            yiaddr: Ipv4Addr::UNSPECIFIED,
            ciaddr: Some(ciaddr),
            terms: None,
            nak: None,
        };
        self.answer(req, &ans, subnet, res, sid, out)
    }

    fn answer(
        &self,
        req: &Request<'_>,
        ans: &reply::Answer,
        subnet: u16,
        res: Option<&Reservation>,
        server_id: Ipv4Addr,
        out: &mut [u8],
    ) -> Outcome {
        let s = &self.policy.subnets[subnet as usize];
        // RFC 5107: the client sees the relay's address as its server and sends its
        // renewals there; the datagram still leaves from ours.
        let shown = req
            .relay_addr(relay::sub::SERVER_ID_OVERRIDE)
            .unwrap_or(server_id);
        // Options merge reservation < classes < pool < subnet, the first to set a code
        // winning; boot server and file from the first class that sets them.
        let addr = if ans.yiaddr.is_unspecified() {
            ans.ciaddr.unwrap_or(ans.yiaddr)
        } else {
            ans.yiaddr
        };
        let pool = self
            .leases
            .slot_of(addr)
            .map(|id| self.leases.slot(id))
            .filter(|s| s.pooled() && s.subnet == subnet)
            .map(|s| &self.pool(s.pool).options);
        let options = res
            .map(|r| &r.options)
            .into_iter()
            .chain(self.class_settings().map(|c| &c.options))
            .chain(pool)
            .chain(Some(&s.options));
        let ctx = reply::Context {
            mask: self.subnets[subnet as usize].mask,
            server_id: shown,
            host_name: res.and_then(|r| r.host_name.as_deref()),
            options,
            next_server: self.class_settings().find_map(|c| c.next_server),
            filename: self.class_settings().find_map(|c| c.filename.as_deref()),
        };
        match reply::write(req, ans, ctx, out) {
            Ok(len) => Outcome::Reply(Reply {
                len,
                kind: ans.kind,
                addr: ans
                    .ciaddr
                    .filter(|_| ans.terms.is_none())
                    .unwrap_or(ans.yiaddr),
                to: reply::destination(req, ans),
                from: server_id,
            }),
            Err(_) => Outcome::Dropped(Drop::ReplyTooLarge),
        }
    }

    fn via<'a>(&'a self, req: &Request<'_>, meta: &RxMeta) -> Via<'a> {
        Via {
            giaddr: req.msg.giaddr(),
            link: self.link_name(meta.link),
        }
    }
}

fn client_of<'a>(req: &Request<'a>) -> ClientRef<'a> {
    match req.client_id {
        Some(id) => ClientRef {
            kind: KeyKind::ClientId,
            bytes: id,
        },
        None => ClientRef {
            kind: KeyKind::Hardware,
            bytes: req.msg.chaddr(),
        },
    }
}

/// A hardware address as dhcpd prints it.
pub struct Hw<'a>(pub &'a [u8]);

impl std::fmt::Display for Hw<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// "via" in dhcpd's log lines: the relay's address, or the interface.
struct Via<'a> {
    giaddr: Ipv4Addr,
    link: &'a str,
}

impl std::fmt::Display for Via<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.giaddr.is_unspecified() {
            f.write_str(self.link)
        } else {
            write!(f, "{}", self.giaddr)
        }
    }
}

#[cfg(test)]
mod tests;
