//! Leasequery as one shard sees it: who may ask, the bindings of this shard's table that
//! answer a key, a page of them for a bulk query, and the reply once every shard's
//! bindings are in. With one shard the answer is written at once; with several the
//! engine says so (`Outcome::Gather`) and the runtime asks the others.

use std::net::Ipv4Addr;

use super::{Destination, Drop, Engine, KeyKind, LeaseState, Outcome, Reply, RxMeta, Slot, SlotId};
use crate::leasequery::{self, Answer, Binding, Key};
use crate::wire::Request;

impl Engine {
    /// A DHCPLEASEQUERY: refused, answered from this table alone, or to be gathered.
    pub(super) fn leasequery(
        &mut self,
        req: &Request<'_>,
        meta: &RxMeta,
        now: u64,
        out: &mut [u8],
    ) -> Outcome {
        let giaddr = req.msg.giaddr();
        let key = match Key::of(req) {
            Ok(k) => k,
            Err(why) => {
                tracing::info!("DHCPLEASEQUERY from {giaddr}: {why}, no reply sent");
                return Outcome::Dropped(Drop::LeasequeryMalformed);
            }
        };
        if !self.policy.leasequery.iter().any(|n| n.contains(giaddr)) {
            tracing::info!("DHCPLEASEQUERY from {giaddr}: not an allowed requester, query ignored");
            return Outcome::Dropped(Drop::LeasequeryNotAllowed);
        }
        if self.shard.count > 1 {
            return Outcome::Gather;
        }
        let mut found = Vec::new();
        self.bindings(&key, &mut found);
        match self.write_leasequery(req, &key, &found, meta, now, out) {
            Some(r) => Outcome::Reply(r),
            None => Outcome::Dropped(Drop::ReplyTooLarge),
        }
    }

    /// Writes the answer to the leasequery `req` asking about `key`, from `found`, the
    /// bindings every shard holds for it, into `out`, and counts it as sent; a reply
    /// that does not fit is counted as dropped.
    pub fn answer_leasequery(
        &mut self,
        req: &Request<'_>,
        key: &Key,
        found: &[Binding],
        meta: &RxMeta,
        now: u64,
        out: &mut [u8],
    ) -> Option<Reply> {
        let reply = self.write_leasequery(req, key, found, meta, now, out);
        match reply {
            Some(r) => self.stats.count_tx(r.kind),
            None => self.stats.count_drop(Drop::ReplyTooLarge),
        }
        reply
    }

    fn write_leasequery(
        &self,
        req: &Request<'_>,
        key: &Key,
        found: &[Binding],
        meta: &RxMeta,
        now: u64,
        out: &mut [u8],
    ) -> Option<Reply> {
        let managed = match key {
            Key::Address(a) => self.leases.slot_of(*a).is_some(),
            _ => false,
        };
        let answer = Answer::pick(key, found, managed);
        let len = leasequery::write_reply(req, &answer, meta.local_addr, now, out).ok()?;
        let giaddr = req.msg.giaddr();
        let kind = answer.kind();
        tracing::info!(
            "{} to {giaddr} for {}",
            kind.name(),
            answer
                .addr()
                .map_or_else(|| "-".to_string(), |a| a.to_string())
        );
        Some(Reply {
            len,
            kind,
            addr: answer.addr().unwrap_or(Ipv4Addr::UNSPECIFIED),
            to: Destination::Relay(giaddr),
            from: meta.local_addr,
        })
    }

    /// Counts a leasequery that could not be gathered.
    pub fn count_drop(&mut self, d: Drop) {
        self.stats.count_drop(d);
    }

    /// Adds to `out` this shard's bindings that answer `key`: never an address another
    /// shard manages, and for a client, its bindings in every subnet.
    pub fn bindings(&self, key: &Key, out: &mut Vec<Binding>) {
        let mut add = |id: SlotId| {
            let b = binding(self.leases.slot(id));
            if b.state != LeaseState::Foreign && key.matches(&b) {
                out.push(b);
            }
        };
        match key {
            Key::Address(a) => {
                if let Some(id) = self.leases.slot_of(*a) {
                    add(id);
                }
            }
            Key::Hardware { htype, hw, hlen } => {
                for id in self.leases.find_hw(*htype, &hw[..usize::from(*hlen)]) {
                    add(id);
                }
            }
            Key::ClientId(id) => {
                let client = super::ClientRef {
                    kind: KeyKind::ClientId,
                    bytes: id,
                };
                for subnet in 0..self.subnets.len() as u16 {
                    if let Some(slot) = self.leases.find_client(subnet, client) {
                        add(slot);
                    }
                }
            }
            Key::RelayId(_) | Key::RemoteId(_) | Key::All => {
                self.scan(key, 0, usize::MAX, out);
            }
        }
    }

    /// A page of a bulk query: up to `max` bindings that answer `key` among the slots
    /// from `from` on, in slot order, each of a client (held or remembered) and not
    /// another shard's. Returns where the next page starts, `None` after the last.
    pub fn scan(
        &self,
        key: &Key,
        from: SlotId,
        max: usize,
        out: &mut Vec<Binding>,
    ) -> Option<SlotId> {
        let mut taken = 0;
        for (id, s) in self.leases.slots().skip(from as usize) {
            if taken == max {
                return Some(id);
            }
            if s.client.is_none() || s.state == LeaseState::Foreign {
                continue;
            }
            let b = binding(s);
            if key.matches(&b) {
                out.push(b);
                taken += 1;
            }
        }
        None
    }

    /// One step of a bulk query that a shard takes between two batches of requests:
    /// the bindings that answer `key` among at most `slots` slots from `from` on, in
    /// slot order. Unlike [`Engine::scan`], which stops after a number of matches, the
    /// work is bounded by the slots looked at, so a key few bindings answer (a remote
    /// id) never makes a shard walk its whole table at once. Returns where the next step
    /// starts, `None` after the last slot.
    pub fn scan_slots(
        &self,
        key: &Key,
        from: SlotId,
        slots: usize,
        out: &mut Vec<Binding>,
    ) -> Option<SlotId> {
        let mut next = None;
        for (seen, (id, s)) in self.leases.slots().skip(from as usize).enumerate() {
            if seen == slots {
                next = Some(id);
                break;
            }
            if s.client.is_none() || s.state == LeaseState::Foreign {
                continue;
            }
            let b = binding(s);
            if key.matches(&b) {
                out.push(b);
            }
        }
        next
    }
}

fn binding(s: &Slot) -> Binding {
    let client_id = s
        .client
        .as_ref()
        .map(|k| k.as_ref())
        .filter(|k| k.kind == KeyKind::ClientId)
        .map(|k| k.bytes.into());
    Binding {
        addr: s.addr,
        state: s.state,
        htype: s.htype,
        hw: s.hw,
        hlen: s.hlen,
        client_id,
        expires: s.expires,
        cltt: s.cltt,
        agent: s.agent.clone(),
    }
}
