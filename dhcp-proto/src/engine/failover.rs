//! The failover rules a shard applies to its clients and leases (draft §5, as ISC dhcpd
//! 4.4 applies them): whether to answer at all in the pair's current states; DISCOVERs
//! of the partner's hash buckets left to it while the pair cooperates; which free
//! addresses are ours to give (the primary's FREE, the secondary's BACKUP; the partner's
//! are `Partner` here); lease times capped by the MCLT beyond what the partner has
//! acknowledged; ended leases kept from other clients until the partner knows; and the
//! partner's bindings applied to this shard's table.
//!
//! The control thread's failover machine decides the pair's state; the shard only reads
//! the `View` it was last given, so no packet ever waits on the partner.

use super::{ClientRef, Drop, Engine, KeyKind, LeaseState, SlotId, Terms};
use crate::failover::machine::{PoolBalance, View};
use crate::failover::message::Reject;
use crate::failover::wire::RejectReason;
use crate::failover::{Role, Service};
use crate::lease::{BindingState, Cause, HwAddr, Lease, LeaseFlags};
use crate::policy::Reservation;
use crate::wire::{MessageType, Request};
use dhcp_ebpf_common::{Asked, Balance};
use std::net::Ipv4Addr;

/// dhcpd's allowance for the pair's clock skew when judging an expiry (60 s + fudge).
const SKEW: u64 = 65;

/// A shard's failover state: the pair's rules and, per slot, what the partner knows.
pub struct Partnership {
    view: View,
    /// The load-balancing rule of `view`, made once per view rather than per packet
    /// (the same rule the XDP program applies).
    balance: Balance,
    /// Per slot: the potential expiration time the partner acknowledged (tsfp), and the
    /// one we last told it (tstp).
    tsfp: Vec<u32>,
    tstp: Vec<u32>,
    /// The partner's free addresses became ours (partner-down, STOS + MCLT passed).
    claimed: bool,
    /// The last change came from the partner: journal it, do not send it back.
    from_partner: bool,
    /// When a client last found no free address here while the partner had some.
    warned_dry: u64,
    /// A run-time reservation a partner's binding brought (`Some`) or ended, for shard 0
    /// to journal.
    reserved_by_partner: Option<(Ipv4Addr, Option<Reservation>)>,
}

/// What a shard made of a partner's binding.
pub enum Applied {
    /// Not this shard's address or client.
    Elsewhere,
    /// This shard holds it now, as this lease; or refused it.
    Here(Result<Lease, Reject>),
}

impl Partnership {
    fn new(view: View, load_balance_max_secs: u16, slots: usize) -> Self {
        Partnership {
            view,
            balance: view.balance(load_balance_max_secs),
            tsfp: vec![0; slots],
            tstp: vec![0; slots],
            claimed: false,
            from_partner: false,
            warned_dry: 0,
            reserved_by_partner: None,
        }
    }

    fn grow(&mut self, id: SlotId) {
        let need = id as usize + 1;
        if self.tsfp.len() < need {
            self.tsfp.resize(need, 0);
            self.tstp.resize(need, 0);
        }
    }
}

impl Engine {
    /// Turns failover on for this shard, at start before the journal's leases are
    /// restored. Until told otherwise every free address is the primary's, as on a
    /// new dhcpd pair, and pool balancing hands the secondary its share.
    pub fn set_partnership(&mut self, view: View, load_balance_max_secs: u16) {
        self.leases.set_hold_ended(true);
        self.leases.set_partnered();
        self.failover = Some(Box::new(Partnership::new(
            view,
            load_balance_max_secs,
            self.leases.len(),
        )));
        if view.role == Role::Secondary {
            let free: Vec<SlotId> = self
                .leases
                .slots()
                .filter(|(_, s)| s.state.available() && !s.reserved)
                .map(|(id, _)| id)
                .collect();
            for id in free {
                self.leases.set_pool(id, false);
            }
        }
    }

    /// The pair's rules changed.
    pub fn set_failover_view(&mut self, view: View, now: u64) {
        if let Some(p) = self.failover.as_mut() {
            if view.service != Service::PartnerDown && p.claimed {
                p.claimed = false;
                self.leases.set_hold_ended(true);
            }
            let reconnected = view.connected && !p.view.connected;
            p.view = view;
            p.balance = view.balance(p.balance.max_secs);
            if reconnected {
                self.leases.clear_rewinds();
            }
        }
        self.claim_partner_pool(now);
    }

    pub fn failover_view(&self) -> Option<View> {
        self.failover.as_ref().map(|p| p.view)
    }

    /// Whether the last change came from the partner (the journal keeps it; the
    /// partner must not get it back).
    pub fn change_from_partner(&self) -> bool {
        self.change.is_some() && self.failover.as_ref().is_some_and(|p| p.from_partner)
    }

    /// A queued change is being journaled: it is ours, for the partner too.
    pub(super) fn failover_change_taken(&mut self) {
        if let Some(p) = self.failover.as_mut() {
            p.from_partner = false;
        }
    }

    /// Whether a message must go unanswered because of the pair's state: nothing is
    /// answered while the pair resolves conflicts or recovers, and while it cooperates a
    /// DISCOVER in the partner's hash buckets is the partner's, unless the client has
    /// waited load-balance-max-seconds (its `secs` field) for it.
    pub(super) fn failover_gate(&self, req: &Request<'_>, client: ClientRef<'_>) -> Option<Drop> {
        let p = self.failover.as_ref()?;
        if !matches!(req.msg_type, MessageType::Discover | MessageType::Request) {
            return None;
        }
        if !p.view.service.serves() {
            return Some(Drop::FailoverNotServing);
        }
        if !p.balance.on || req.msg_type != MessageType::Discover {
            return None;
        }
        let bucket = dhcp_ebpf_common::loadb_hash(client.bytes);
        p.balance
            .leaves_to_partner(bucket, req.msg.secs(), Asked::Discover)
            .then_some(Drop::LoadBalanced)
    }

    /// Caps a lease time by the MCLT rule (draft §5.2.1, dhcpd's ack_lease): beyond the
    /// MCLT, a lease may only run MCLT past what the partner acknowledged. Notes the
    /// potential expiry to tell the partner: the desired time plus half the granted one,
    /// so the client's next renewal can get the full time.
    pub(super) fn failover_terms(&mut self, slot: SlotId, terms: Terms, now: u64) -> Terms {
        let Some(p) = self.failover.as_mut() else {
            return terms;
        };
        p.grow(slot);
        let mclt = u64::from(p.view.mclt);
        let desired = u64::from(terms.lease);
        let tsfp = u64::from(p.tsfp[slot as usize]);
        let granted = if desired <= mclt {
            desired
        } else if tsfp <= now {
            mclt
        } else if now + desired > tsfp + mclt {
            tsfp - now + mclt
        } else {
            desired
        };
        p.tstp[slot as usize] = clamp32(now + desired + granted / 2);
        // Cut off, a binding of an address the partner knows as free (or already such a
        // binding) is one it will not have heard of should it end meanwhile. Not one it
        // knows as active, nor one whose end it has not acknowledged.
        let s = self.leases.slot(slot);
        let partner_knows_free = s.state != LeaseState::Active && !s.unacked;
        let rewind = !p.view.connected && (s.rewind || partner_knows_free);
        self.leases.set_rewind(slot, rewind);
        if granted == desired {
            return terms;
        }
        let lease = granted as u32;
        Terms {
            lease,
            renew: lease / 2,
            rebind: (u64::from(lease) * 7 / 8) as u32,
        }
    }

    /// A client found no free address of ours in `pool`: say so when the partner holds
    /// free ones (dhcpd's "peer holds all free leases"), at most once a minute, so the
    /// operator sees a pool running dry on one side before clients go unserved.
    pub(super) fn warn_partner_holds(&mut self, pool: u16, now: u64) {
        let theirs = self.leases.partner_count(pool);
        let Some(p) = self.failover.as_mut() else {
            return;
        };
        if theirs == 0 || now < p.warned_dry + 60 {
            return;
        }
        p.warned_dry = now;
        tracing::warn!(
            "pool {}: peer holds all free leases ({theirs} of them in shard {}); \
             pool balancing or partner-down will give them back",
            self.pool(pool).range,
            self.shard.index
        );
    }

    /// The potential expiry we last told the partner about `slot`, for its record.
    pub(super) fn failover_times(&self, slot: SlotId) -> (u64, u64) {
        self.failover
            .as_ref()
            .and_then(|p| {
                Some((
                    u64::from(*p.tstp.get(slot as usize)?),
                    u64::from(*p.tsfp.get(slot as usize)?),
                ))
            })
            .unwrap_or((0, 0))
    }

    /// What the journal remembers the partner knew of a restored lease.
    pub(super) fn restore_failover_times(&mut self, id: SlotId, lease: &Lease) {
        if let Some(p) = self.failover.as_mut() {
            p.grow(id);
            p.tstp[id as usize] = clamp32(lease.tstp);
            p.tsfp[id as usize] = clamp32(lease.tsfp);
        }
    }

    /// The state a free slot has on the wire: FREE is the primary's, BACKUP the
    /// secondary's.
    pub(super) fn free_state(&self, ours: bool) -> BindingState {
        let primary = self
            .failover
            .as_ref()
            .is_none_or(|p| p.view.role == Role::Primary);
        if ours == primary {
            BindingState::Free
        } else {
            BindingState::Backup
        }
    }

    /// The partner acknowledged our binding: lease times may count on its tsfp, and an
    /// ended lease may now go to anyone: back to the primary's pool, as dhcpd does.
    pub fn partner_acked(&mut self, lease: &Lease) {
        let Some(id) = self.leases.slot_of(lease.addr) else {
            return;
        };
        let Some(p) = self.failover.as_mut() else {
            return;
        };
        p.grow(id);
        p.tsfp[id as usize] = clamp32(lease.tsfp);
        let role = p.view.role;
        let s = self.leases.slot(id);
        if s.unacked && matches!(lease.state, BindingState::Expired | BindingState::Released) {
            self.leases.settle_ended(id, role == Role::Primary);
        }
    }

    /// Applies the partner's binding if this shard is where it belongs: with the
    /// client's shard when it names a client, else with the shard the address started
    /// in. Every other shard lets go of the address.
    pub fn apply_partner(&mut self, lease: &Lease, conflict: bool, now: u64) -> Applied {
        self.follow_partner_reservation(lease);
        let Some(id) = self.leases.slot_of(lease.addr) else {
            return Applied::Elsewhere;
        };
        let client = client_of_lease(lease);
        let home = match client {
            Some(c) if lease.state != BindingState::Abandoned => self.shard_of(c),
            _ => self.leases.home_shard(lease.addr, self.shard),
        };
        if home != self.shard.index {
            let s = self.leases.slot(id);
            if s.state != LeaseState::Foreign && !s.reserved {
                self.leases.make_foreign(id);
            }
            return Applied::Elsewhere;
        }
        Applied::Here(self.take_partner_binding(id, lease, client, conflict, now))
    }

    /// The reserved flag of the partner's binding is the address's run-time
    /// reservation, as dhcpd's `reserved;` follows every update: flagged, it names the
    /// host the partner reserved the address for, and every shard reserves it too;
    /// unflagged, a run-time reservation of it ended on the partner (`reservation-del`)
    /// and ends here. Shard 0 journals either, so a rebuilt server gets its reservations
    /// back from the partner. Addresses our file reserves stay as the file says.
    fn follow_partner_reservation(&mut self, lease: &Lease) {
        let runtime = self.runtime_at.contains_key(&lease.addr);
        if !lease.flags.reserved() {
            if runtime && self.remove_reservation(lease.addr).is_some() {
                if self.shard.index == 0 {
                    tracing::info!(
                        "reservation of {} removed on the failover partner, here too",
                        lease.addr
                    );
                }
                self.note_partner_reservation(lease.addr, None);
            }
            return;
        }
        if runtime || super::reserve::file_addresses(&self.policy).any(|(a, _)| a == lease.addr) {
            return;
        }
        let hw = lease.hw.bytes();
        let r = Reservation {
            hw_address: (lease.hw.htype == 1)
                .then(|| <[u8; 6]>::try_from(hw).ok())
                .flatten(),
            client_id: (!lease.client_id.is_empty()).then(|| lease.client_id.to_vec()),
            address: Some(lease.addr),
            ..Reservation::default()
        };
        if r.hw_address.is_none() && r.client_id.is_none() {
            return;
        }
        self.restore_reservation(r.clone());
        tracing::info!(
            "reservation of {} for {} replicated from the failover partner",
            lease.addr,
            super::Hw(hw)
        );
        self.note_partner_reservation(lease.addr, Some(r));
    }

    fn note_partner_reservation(&mut self, addr: Ipv4Addr, r: Option<Reservation>) {
        if self.shard.index == 0 {
            if let Some(p) = self.failover.as_mut() {
                p.reserved_by_partner = Some((addr, r));
            }
        }
    }

    /// The run-time reservation the last partner binding brought (`Some`) or ended,
    /// once, for the journal.
    pub fn take_partner_reservation(&mut self) -> Option<(Ipv4Addr, Option<Reservation>)> {
        self.failover.as_mut()?.reserved_by_partner.take()
    }

    /// The binding that tells the partner a run-time reservation ended: the address as
    /// this shard holds it, without the reserved flag, which ends the partner's
    /// reservation too (dhcpd's update after an OMAPI change clears `reserved`).
    pub fn unreservation_binding(&self, addr: Ipv4Addr) -> Option<Lease> {
        self.failover.as_ref()?;
        let id = self.leases.slot_of(addr)?;
        (self.leases.slot(id).state != LeaseState::Foreign).then(|| self.lease_at(id))
    }

    /// The binding that tells the partner of a run-time reservation: the address,
    /// flagged reserved, for its host; a free one in the partner's free state, which
    /// lets it give the address to that host too (dhcpd's send_bind_update).
    pub fn reservation_binding(&self, r: &Reservation) -> Option<Lease> {
        let addr = r.address?;
        self.failover.as_ref()?;
        let id = self.leases.slot_of(addr)?;
        let mut lease = self.lease_at(id);
        if lease.state == self.free_state(true) {
            lease.state = self.free_state(false);
        }
        if let Some(hw) = r.hw_address {
            lease.hw = HwAddr::new(1, &hw);
        }
        if let Some(id) = &r.client_id {
            lease.client_id = id.clone().into_boxed_slice();
        }
        lease.flags = LeaseFlags(lease.flags.0 | LeaseFlags::RESERVED);
        Some(lease)
    }

    fn take_partner_binding(
        &mut self,
        id: SlotId,
        lease: &Lease,
        client: Option<ClientRef<'_>>,
        conflict: bool,
        now: u64,
    ) -> Result<Lease, Reject> {
        let s = self.leases.slot(id);
        let same_client = client.is_some_and(|c| self.leases.is_client(id, c));
        let live = s.state.held() && s.expires > now;
        // A binding of ours that is live for another client wins over the partner's,
        // unless the partner saw the client give it up (released, abandoned, reset).
        if live && !same_client {
            // The end of another client's lease says nothing of ours: a stale update.
            let of_another = client.is_some();
            let ours_stands = match lease.state {
                BindingState::Active | BindingState::Free | BindingState::Backup => true,
                BindingState::Expired => of_another || s.expires > now + SKEW,
                BindingState::Released | BindingState::Reset => {
                    of_another || (!conflict && s.state == LeaseState::Offered)
                }
                BindingState::Abandoned => !conflict && s.state == LeaseState::Offered,
            };
            if ours_stands {
                return Err(Reject::new(
                    RejectReason::FatalConflict,
                    format!(
                        "{}: invalid state transition: {} to {}",
                        lease.addr,
                        if s.state == LeaseState::Active {
                            "active"
                        } else {
                            "offered"
                        },
                        lease.state.isc_name()
                    ),
                ));
            }
        }
        // The same client renewed here after the transaction the partner's end of its
        // lease is about, or after the partner put the address back in a pool (while
        // the two were apart): the client holds our newer lease, so it stands, and goes
        // to the partner.
        let ended = matches!(
            lease.state,
            BindingState::Expired
                | BindingState::Released
                | BindingState::Reset
                | BindingState::Free
                | BindingState::Backup
        );
        if ended && live && same_client && s.state == LeaseState::Active && s.cltt > lease.cltt {
            let until = s.expires;
            self.queue_for_partner(id, Cause::Failover);
            return Err(Reject::new(
                RejectReason::OutdatedBindInfo,
                format!(
                    "{}: the client renewed it here since, until {until}",
                    lease.addr
                ),
            ));
        }
        let role = self
            .failover
            .as_ref()
            .map_or(Role::Primary, |p| p.view.role);
        let primary = role == Role::Primary;
        self.leases.adopt(&[lease.addr]);
        match lease.state {
            BindingState::Active => {
                let c = client.ok_or_else(|| {
                    Reject::new(RejectReason::MissingBindInfo, "BNDUPD without CHADDR")
                })?;
                let mut ends = if lease.ends == 0 { now } else { lease.ends };
                let mut cltt = lease.cltt;
                let here = self.leases.slot(id);
                let (state, our_ends, our_cltt) = (here.state, here.expires, here.cltt);
                let counted = same_client && state.held();
                if same_client && state == LeaseState::Active {
                    // The same client on the same address: an acknowledged lease is
                    // never shortened; a newer one of ours goes back to the partner.
                    if our_ends > ends || our_cltt > cltt {
                        self.queue_for_partner(id, Cause::Failover);
                    }
                    ends = ends.max(our_ends);
                    cltt = cltt.max(our_cltt);
                }
                self.settle_client_elsewhere(id, c, cltt, now)?;
                self.leases.bind(
                    id,
                    c,
                    lease.hw.htype,
                    lease.hw.bytes(),
                    LeaseState::Active,
                    ends,
                );
                self.leases.set_cltt(id, cltt);
                // Only ours send it (dhcpd sends none): an update without leaves the
                // relay information we had.
                let agent = Some(&lease.agent_info[..]).filter(|a| !a.is_empty());
                self.leases.set_agent(id, agent);
                if !counted {
                    self.charge_existing(id);
                }
            }
            BindingState::Expired | BindingState::Released | BindingState::Reset => {
                // Ended on the partner's side: free, in the primary's pool (dhcpd's
                // next_binding_state = FREE), still remembered for its client.
                self.leases.settle_ended(id, primary);
            }
            BindingState::Free => self.leases.set_pool(id, primary),
            BindingState::Backup => self.leases.set_pool(id, !primary),
            BindingState::Abandoned => {
                self.leases.forget_client(id);
                let until = now + u64::from(self.policy.decline_hold);
                self.leases.set_state(id, LeaseState::Declined, until);
            }
        }
        if let Some(p) = self.failover.as_mut() {
            p.grow(id);
            p.tsfp[id as usize] = clamp32(lease.tstp);
            p.from_partner = true;
        }
        self.changed(id, Cause::Partner);
        Ok(self.lease_at(id))
    }

    /// Before the partner's binding of `c` to slot `id`: the client may hold another
    /// address here, given while the pair was apart. A client uses the last address
    /// it was acknowledged, so the later transaction wins: ours refuses the partner's
    /// (and goes to it), theirs ends ours, journaled and told, never silently dropped.
    fn settle_client_elsewhere(
        &mut self,
        id: SlotId,
        c: ClientRef<'_>,
        cltt: u64,
        now: u64,
    ) -> Result<(), Reject> {
        let subnet = self.leases.slot(id).subnet;
        let Some(other) = self.leases.find_client(subnet, c).filter(|&o| o != id) else {
            return Ok(());
        };
        let o = self.leases.slot(other);
        if o.state != LeaseState::Active || o.expires <= now {
            return Ok(());
        }
        if o.cltt > cltt {
            let held = o.addr;
            self.queue_for_partner(other, Cause::Failover);
            return Err(Reject::new(
                RejectReason::OutdatedBindInfo,
                format!("the client holds {held} here since a later transaction"),
            ));
        }
        tracing::info!(
            "{}: its client moved to {} on the failover partner later",
            o.addr,
            self.leases.slot(id).addr
        );
        self.leases.end(other, LeaseState::Released, now);
        self.queue_for_partner(other, Cause::Released);
        Ok(())
    }

    /// A binding of ours the partner must hear of (again), journaled with it.
    fn queue_for_partner(&mut self, id: SlotId, cause: Cause) {
        if self.failover.is_some() {
            self.queue_change(id, cause);
        }
    }

    /// The lease of a slot as the partner must see it.
    pub fn lease_at(&self, id: SlotId) -> Lease {
        let s = self.leases.slot(id);
        let state = self.binding_state(id);
        let (tstp, tsfp) = self.failover_times(id);
        let client_id: Box<[u8]> = match s.client.as_ref().map(|k| k.as_ref()) {
            Some(ClientRef {
                kind: KeyKind::ClientId,
                bytes,
            }) => bytes.into(),
            _ => Box::new([]),
        };
        // The last client's hardware address stays with an ended or free lease, as
        // dhcpd sends it (a released binding without it is refused).
        let hw = HwAddr::new(s.htype, &s.hw[..usize::from(s.hlen)]);
        Lease {
            // The shard's clock now: a change it sent before this snapshot is older.
            stamp: self.stamp,
            addr: s.addr,
            state,
            hw,
            client_id,
            agent_info: s.agent.clone().unwrap_or_default(),
            starts: s.cltt,
            ends: s.expires,
            cltt: s.cltt,
            tstp,
            tsfp,
            atsfp: tsfp,
            flags: LeaseFlags(if s.reserved { LeaseFlags::RESERVED } else { 0 }),
        }
    }

    /// The bindings this shard holds, for the partner: every address it manages (`all`,
    /// an UPDREQALL), or those the partner has not acknowledged (an UPDREQ, or on
    /// entering normal: what changed while the partner was away, or before a restart).
    pub fn failover_bindings(&self, all: bool, out: &mut Vec<Lease>) {
        for (id, s) in self.leases.slots() {
            if s.state == LeaseState::Foreign {
                continue;
            }
            if s.reserved && s.client.is_none() {
                // Nobody holds the address: all there is to tell is a run-time
                // reservation, so that a partner rebuilt from nothing has it too. Every
                // shard reserves the address; shard 0 tells it, once.
                if all && self.shard.index == 0 {
                    let r = self.runtime_reservation(s.addr);
                    out.extend(r.and_then(|r| self.reservation_binding(r)));
                }
                continue;
            }
            let (tstp, tsfp) = self.failover_times(id);
            if all || (s.client.is_some() && (s.unacked || tstp > tsfp)) {
                out.push(self.lease_at(id));
            }
        }
    }

    /// Pool balancing (dhcpd's pool_dobalance), per pool, while the pair is normal:
    /// `lts`, half the difference between our free addresses and the partner's, is how
    /// many to give. First the free addresses whose last client the partner serves (so
    /// it finds its address there), down to `ownership` percent in the partner's favour;
    /// then the oldest, down to `ownership` percent in ours for addresses used before,
    /// to an even split for never-used ones. The changes go to the journal and the
    /// partner. Returns, per pool, what the run found and moved.
    pub fn balance_pools(&mut self, ownership: u8, now: u64) -> Vec<PoolBalance> {
        let Some(p) = self.failover.as_ref() else {
            return Vec::new();
        };
        if p.view.service != Service::Cooperating {
            return Vec::new();
        }
        let (hba, role) = (p.view.hba, p.view.role);
        let mut moved = Vec::new();
        let mut pools = Vec::with_capacity(self.pools.len());
        for pool in 0..self.pools.len() as u16 {
            let ours = self.leases.free_count(pool);
            let theirs = self.leases.partner_count(pool);
            let (total, theirs_end) = self
                .leases
                .slots()
                .filter(|(_, s)| s.pool == pool && s.state != LeaseState::Foreign)
                .fold((0, None), |(n, oldest): (u32, Option<u64>), (_, s)| {
                    let end = (s.state == LeaseState::Partner).then_some(s.expires);
                    (n + 1, oldest.into_iter().chain(end).min())
                });
            let age = |end: Option<u64>| end.map_or(0, |e| now.saturating_sub(e));
            let ours_age = age(self
                .leases
                .peek_free(pool)
                .map(|id| self.leases.slot(id).expires));
            let mut lts = (i64::from(ours) - i64::from(theirs)) / 2;
            let hold = ((i64::from(ours) + i64::from(theirs)) * i64::from(ownership) + 50) / 100;
            let first = moved.len();
            let wanted: Vec<SlotId> = self
                .leases
                .slots()
                .filter(|(_, s)| {
                    s.pool == pool
                        && s.state.available()
                        && !s.reserved
                        && !s.unacked
                        && s.client.as_ref().is_some_and(|c| {
                            !hba.mine(role, dhcp_ebpf_common::loadb_hash(c.as_ref().bytes))
                        })
                })
                .map(|(id, _)| id)
                .collect();
            for id in wanted {
                if lts <= -hold {
                    break;
                }
                self.leases.set_pool(id, false);
                moved.push(id);
                lts -= 1;
            }
            while let Some(id) = self.leases.peek_free(pool) {
                let s = self.leases.slot(id);
                let used = s.client.is_some() || s.expires != 0;
                if lts <= if used { hold } else { 0 } {
                    break;
                }
                self.leases.set_pool(id, false);
                moved.push(id);
                lts -= 1;
            }
            pools.push(PoolBalance {
                pool: self.pool(pool).range,
                total,
                ours,
                theirs,
                moved: (moved.len() - first) as u32,
                ours_age,
                theirs_age: age(theirs_end),
            });
        }
        if self.failover.is_some() {
            for id in moved {
                self.queue_change(id, Cause::Failover);
            }
        }
        pools
    }

    /// In partner-down, once STOS + MCLT has passed, the partner's free addresses and
    /// the leases it never acknowledged ending are ours to give, and so is every lease
    /// that ends afterwards (dhcpd's lease_mine_to_reallocate in partner-down).
    pub(super) fn claim_partner_pool(&mut self, now: u64) {
        let Some(p) = self.failover.as_ref() else {
            return;
        };
        if p.claimed
            || p.view.service != Service::PartnerDown
            || now < p.view.stos + u64::from(p.view.mclt)
        {
            return;
        }
        let ids: Vec<SlotId> = self
            .leases
            .slots()
            .filter(|(_, s)| s.state == LeaseState::Partner || s.unacked)
            .map(|(id, _)| id)
            .collect();
        let n = ids.len();
        for &id in &ids {
            if self.leases.slot(id).state == LeaseState::Partner {
                self.leases.set_pool(id, true);
            } else {
                self.leases.settle_ended(id, true);
            }
        }
        if let Some(p) = self.failover.as_mut() {
            p.claimed = true;
        }
        for id in ids {
            self.queue_change(id, Cause::Failover);
        }
        // From now on a lease that ends is ours at once: whatever the partner granted
        // ran out by STOS + MCLT, and since then it granted nothing.
        self.leases.set_hold_ended(false);
        if n > 0 {
            tracing::info!(
                "partner-down: {n} addresses of the partner's pool and ended leases are usable (shard {})",
                self.shard.index
            );
        }
    }

    /// The wire state of a slot: what the journal and the partner see.
    pub(super) fn binding_state(&self, id: SlotId) -> BindingState {
        let s = self.leases.slot(id);
        // Without a partner an ended lease is always recorded as ended; with one, only
        // until the partner acknowledged it, after which it is free in its pool.
        let ended = s.unacked || self.failover.is_none();
        match s.state {
            LeaseState::Active => BindingState::Active,
            LeaseState::Released if ended => BindingState::Released,
            LeaseState::Expired if ended => BindingState::Expired,
            LeaseState::Declined => BindingState::Abandoned,
            LeaseState::Partner => self.free_state(false),
            _ => self.free_state(true),
        }
    }
}

fn client_of_lease(lease: &Lease) -> Option<ClientRef<'_>> {
    if !lease.client_id.is_empty() {
        Some(ClientRef {
            kind: KeyKind::ClientId,
            bytes: &lease.client_id,
        })
    } else if !lease.hw.bytes().is_empty() {
        Some(ClientRef {
            kind: KeyKind::Hardware,
            bytes: lease.hw.bytes(),
        })
    } else {
        None
    }
}

fn clamp32(t: u64) -> u32 {
    u32::try_from(t).unwrap_or(u32::MAX)
}
