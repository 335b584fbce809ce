//! How a shard's leases become journal records and come back from them. After each
//! datagram the driver asks for the change it made (an ACK, a RELEASE, a DECLINE) and
//! appends it before the reply leaves; at start the replayed leases are handed back, each
//! to the shard its client is steered to, so a restart with another shard count keeps
//! every lease. Offers are not recorded: a lost offer costs the client one DISCOVER.
//!
//! Records carry a Lamport stamp: it never goes backwards in a shard, starts from the
//! clock's seconds so shards roughly agree, and jumps past the stamp of any address lent
//! in from another shard, so the newest record of an address always wins at replay.

use super::{ClientRef, Engine, KeyKind, LeaseState, SlotId};
use crate::lease::{BindingState, Cause, Context, Lease, LeaseFlags, LeaseRecord, STAMPS_PER_SEC};
use crate::wire::Request;

impl Engine {
    /// The shard a client belongs to: the RFC 3074 hash the XDP program steers by.
    pub fn shard_of(&self, c: ClientRef<'_>) -> u16 {
        let hash = dhcp_ebpf_common::loadb_hash(c.bytes);
        (u32::from(hash) % u32::from(self.shard.count.max(1))) as u16
    }

    /// A fresh stamp at least as new as anything this shard has seen.
    pub fn next_stamp(&mut self, now: u64) -> u64 {
        self.stamp = (self.stamp + 1).max(now.saturating_mul(STAMPS_PER_SEC));
        self.stamp
    }

    /// Notes a stamp seen from another shard (addresses it lent), so this shard's next
    /// records about them are newer.
    pub fn witness(&mut self, stamp: u64) {
        self.stamp = self.stamp.max(stamp);
    }

    /// The operator frees a lease as the client's DHCPRELEASE would: the address stays
    /// remembered for the client. Returns whether this shard held it; the change is then
    /// ready for `take_change`.
    pub fn operator_release(&mut self, addr: std::net::Ipv4Addr, now: u64) -> bool {
        let Some(id) = self.held_here(addr) else {
            return false;
        };
        self.leases.set_state(id, LeaseState::Released, now);
        self.changed(id, Cause::OperatorReleased);
        true
    }

    /// The operator forgets a lease and its client: the address is free for anyone.
    pub fn operator_delete(&mut self, addr: std::net::Ipv4Addr) -> bool {
        let Some(id) = self.held_here(addr) else {
            return false;
        };
        self.leases.forget_client(id);
        self.leases.set_state(id, LeaseState::Free, 0);
        self.changed(id, Cause::OperatorDeleted);
        true
    }

    /// The slot of `addr` when this shard knows a client for it.
    fn held_here(&self, addr: std::net::Ipv4Addr) -> Option<SlotId> {
        self.leases
            .slot_of(addr)
            .filter(|&id| self.leases.slot(id).client.is_some())
    }

    pub(super) fn changed(&mut self, id: SlotId, cause: Cause) {
        self.change = Some((id, cause));
    }

    /// A change made without a message, for the journal (and the partner) in turn.
    pub(super) fn queue_change(&mut self, id: SlotId, cause: Cause) {
        self.queued.push_back((id, cause));
    }

    /// Keeps what the request that made `change` says of the client's whereabouts.
    pub(super) fn note_request(&mut self, req: &Request<'_>) {
        self.change_giaddr = req.msg.giaddr();
        self.change_host.clear();
        self.change_host
            .extend_from_slice(req.host_name.unwrap_or_default());
    }

    /// Leases that ran out since the last call: journaled as expired, and told to the
    /// partner when there is one (its acknowledgement lets the address go to another
    /// client).
    pub(super) fn report_ended(&mut self) {
        let ended = self.leases.take_ended().map(|id| (id, Cause::Expired));
        self.queued.extend(ended);
    }

    /// The lease change the last `handle` made, or else the oldest queued one, as a
    /// journal record, once; `None` when nothing changed that must survive a restart.
    pub fn take_change(&mut self, now: u64) -> Option<LeaseRecord<'_>> {
        let (id, cause, from_message) = match self.change.take() {
            Some((id, cause)) => (id, cause, true),
            None => {
                self.failover_change_taken();
                let (id, cause) = self.queued.pop_front()?;
                (id, cause, false)
            }
        };
        let stamp = self.next_stamp(now);
        let state = self.binding_state(id);
        let (tstp, tsfp) = self.failover_times(id);
        let s = self.leases.slot(id);
        let client_id = match s.client.as_ref().map(|k| k.as_ref()) {
            Some(ClientRef {
                kind: KeyKind::ClientId,
                bytes,
            }) => bytes,
            _ => &[],
        };
        Some(LeaseRecord {
            stamp,
            addr: s.addr,
            state,
            htype: s.htype,
            chaddr: &s.hw[..s.hlen as usize],
            client_id,
            agent_info: s.agent.as_deref().unwrap_or_default(),
            starts: s.cltt,
            ends: s.expires,
            cltt: s.cltt,
            tstp,
            tsfp,
            atsfp: tsfp,
            flags: LeaseFlags(if s.reserved { LeaseFlags::RESERVED } else { 0 }),
            context: Context {
                cause,
                at: now,
                giaddr: if from_message {
                    self.change_giaddr
                } else {
                    std::net::Ipv4Addr::UNSPECIFIED
                },
                host_name: if from_message { &self.change_host } else { &[] },
            },
        })
    }

    /// Takes back the replayed leases: those of this shard's clients are bound again
    /// (expired ones remembered for their client), the addresses of other shards'
    /// clients become foreign here. Returns how many leases this shard now holds.
    pub fn restore<'a>(&mut self, leases: impl IntoIterator<Item = &'a Lease>, now: u64) -> usize {
        let mut held = 0;
        for lease in leases {
            self.witness(lease.stamp);
            let Some(id) = self.leases.slot_of(lease.addr) else {
                continue;
            };
            let client = if lease.client_id.is_empty() {
                ClientRef {
                    kind: KeyKind::Hardware,
                    bytes: lease.hw.bytes(),
                }
            } else {
                ClientRef {
                    kind: KeyKind::ClientId,
                    bytes: &lease.client_id,
                }
            };
            if self.shard_of(client) != self.shard.index {
                if !self.leases.slot(id).reserved {
                    self.leases.make_foreign(id);
                }
                continue;
            }
            self.leases.adopt(&[lease.addr]);
            self.restore_failover_times(id, lease);
            let (state, until) = match lease.state {
                BindingState::Active if lease.ends > now => (LeaseState::Active, lease.ends),
                BindingState::Active | BindingState::Expired => (LeaseState::Expired, now),
                BindingState::Released => (LeaseState::Released, now),
                BindingState::Abandoned if lease.ends > now => (LeaseState::Declined, lease.ends),
                BindingState::Free | BindingState::Backup if self.failover.is_some() => {
                    let ours = lease.state == self.free_state(true);
                    self.leases.set_pool(id, ours);
                    continue;
                }
                _ => continue,
            };
            if state == LeaseState::Declined {
                self.leases.set_state(id, state, until);
                continue;
            }
            self.leases.bind(
                id,
                client,
                lease.hw.htype,
                lease.hw.bytes(),
                LeaseState::Active,
                lease.ends,
            );
            self.leases.set_cltt(id, lease.cltt);
            self.leases.set_agent(
                id,
                Some(&lease.agent_info)
                    .filter(|a| !a.is_empty())
                    .map(|a| &a[..]),
            );
            if state == LeaseState::Active {
                self.charge_existing(id);
                held += 1;
            } else {
                self.leases.set_state(id, state, until);
            }
        }
        held
    }
}
