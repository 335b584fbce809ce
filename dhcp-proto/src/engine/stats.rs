//! Counters the engine keeps per shard: messages in and out by type, and every reason a
//! datagram was not answered. Plain integers: a shard has one writer.

use crate::wire::{MessageType, WireError};

/// Why a datagram got no reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Drop {
    Malformed(WireError),
    /// A BOOTREPLY or another op: not for a server.
    NotRequest,
    /// OFFER, ACK, NAK or an unknown type sent to the server.
    UnexpectedType,
    /// No configured subnet for the link, relay or client address.
    UnknownNetwork,
    /// Every address of the client's network is held, reserved or quarantined.
    NoFreeLease,
    /// The client chose, or is talking to, another server.
    OtherServer,
    /// A REQUEST or DECLINE that names no address.
    NoAddress,
    /// Non-authoritative: the address is not in any pool here.
    NotInPool,
    /// RELEASE or DECLINE of an address the client does not hold here.
    NotHeld,
    /// Non-authoritative: the address is managed by another worker's shard.
    OtherShard,
    /// The reply would not fit even without optional options.
    ReplyTooLarge,
    /// Failover: the pair's state lets this server answer no client (recovering,
    /// resolving conflicts, the partner demands it).
    FailoverNotServing,
    /// Failover: the client's hash bucket is the partner's while the pair cooperates.
    LoadBalanced,
    /// Failover: the address is in the partner's pool, or its end is not yet
    /// acknowledged by the partner.
    PartnerPool,
    /// The client's class (or its circuit, its remote id...) holds as many leases as
    /// its lease limit allows.
    LeaseLimit,
    /// A leasequery from a requester (giaddr) the configuration does not allow.
    LeasequeryNotAllowed,
    /// A leasequery without giaddr, or naming nothing to look up.
    LeasequeryMalformed,
    /// A leasequery the shards could not all be asked about (their mailboxes were full).
    LeasequeryBusy,
}

impl Drop {
    /// Every reason, for listing all counters including the zero ones.
    pub const ALL: [Drop; 18] = [
        Drop::Malformed(WireError::TooShort),
        Drop::NotRequest,
        Drop::UnexpectedType,
        Drop::UnknownNetwork,
        Drop::NoFreeLease,
        Drop::OtherServer,
        Drop::NoAddress,
        Drop::NotInPool,
        Drop::NotHeld,
        Drop::OtherShard,
        Drop::ReplyTooLarge,
        Drop::FailoverNotServing,
        Drop::LoadBalanced,
        Drop::PartnerPool,
        Drop::LeaseLimit,
        Drop::LeasequeryNotAllowed,
        Drop::LeasequeryMalformed,
        Drop::LeasequeryBusy,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Drop::Malformed(_) => "malformed",
            Drop::NotRequest => "not-request",
            Drop::UnexpectedType => "unexpected-type",
            Drop::UnknownNetwork => "unknown-network",
            Drop::NoFreeLease => "no-free-lease",
            Drop::OtherServer => "other-server",
            Drop::NoAddress => "no-address",
            Drop::NotInPool => "not-in-pool",
            Drop::NotHeld => "not-held",
            Drop::OtherShard => "other-shard",
            Drop::ReplyTooLarge => "reply-too-large",
            Drop::FailoverNotServing => "failover-not-serving",
            Drop::LoadBalanced => "load-balanced-to-peer",
            Drop::PartnerPool => "partner-pool",
            Drop::LeaseLimit => "lease-limit",
            Drop::LeasequeryNotAllowed => "leasequery-not-allowed",
            Drop::LeasequeryMalformed => "leasequery-malformed",
            Drop::LeasequeryBusy => "leasequery-busy",
        }
    }

    fn index(self) -> usize {
        match self {
            Drop::Malformed(_) => 0,
            Drop::NotRequest => 1,
            Drop::UnexpectedType => 2,
            Drop::UnknownNetwork => 3,
            Drop::NoFreeLease => 4,
            Drop::OtherServer => 5,
            Drop::NoAddress => 6,
            Drop::NotInPool => 7,
            Drop::NotHeld => 8,
            Drop::OtherShard => 9,
            Drop::ReplyTooLarge => 10,
            Drop::FailoverNotServing => 11,
            Drop::LoadBalanced => 12,
            Drop::PartnerPool => 13,
            Drop::LeaseLimit => 14,
            Drop::LeasequeryNotAllowed => 15,
            Drop::LeasequeryMalformed => 16,
            Drop::LeasequeryBusy => 17,
        }
    }
}

/// Message types 1..=13 by their number (DHCP's, then leasequery's); index 0 counts
/// every other type.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub rx: [u64; 14],
    pub tx: [u64; 14],
    pub drops: [u64; Drop::ALL.len()],
}

fn type_index(t: MessageType) -> usize {
    match t.to_u8() {
        n @ 1..=13 => n as usize,
        _ => 0,
    }
}

impl Stats {
    pub(super) fn count_rx(&mut self, t: MessageType) {
        self.rx[type_index(t)] += 1;
    }
    /// Counts a reply sent (a leasequery's answer is sent by whichever shard gathered it).
    pub fn count_tx(&mut self, t: MessageType) {
        self.tx[type_index(t)] += 1;
    }
    pub fn count_drop(&mut self, d: Drop) {
        self.drops[d.index()] += 1;
    }
    pub fn received(&self, t: MessageType) -> u64 {
        self.rx[type_index(t)]
    }
    pub fn sent(&self, t: MessageType) -> u64 {
        self.tx[type_index(t)]
    }
    pub fn dropped(&self, d: Drop) -> u64 {
        self.drops[d.index()]
    }
}
