//! The failover partnership in the configuration model: one partner server, covering
//! every pool of this server (ISC dhcpd's `failover peer` with `failover peer "name";` in
//! each pool). `params` and `endpoints` give the failover link what it runs on.

use std::net::{Ipv4Addr, SocketAddrV4};

use super::Subnet;
use crate::failover::machine::{Balancing, Params};
use crate::failover::Endpoints;
use crate::failover::{Hba, Role};

#[derive(Debug, Clone, PartialEq)]
pub struct Failover {
    /// The relationship name both partners give; it travels in CONNECT and must match.
    pub name: String,
    pub role: Role,
    /// Our address: the secondary listens there, the primary connects from it.
    pub address: Ipv4Addr,
    /// The port the secondary listens on; the primary connects from any port.
    pub port: u16,
    /// The partner's address: the primary connects to it, the secondary accepts a
    /// connection from it only.
    pub peer_address: Ipv4Addr,
    /// The partner's port, which the primary connects to.
    pub peer_port: u16,
    /// Maximum client lead time, seconds. The primary's only: the secondary takes the
    /// primary's when they connect.
    pub mclt: u32,
    /// Load balancing as dhcpd's `split N`: the primary answers the clients of the
    /// first N of the 256 RFC 3074 hash buckets. The primary's only.
    pub split: u16,
    /// An explicit bucket assignment, which replaces `split` (the file takes one of
    /// them, not both). The primary's only.
    pub hba: Option<Hba>,
    /// Seconds of silence from the partner after which the link is taken as down.
    pub max_response_delay: u32,
    /// Binding updates the partner may send before waiting for our acknowledgements.
    pub max_unacked_updates: u32,
    /// Clients that have been trying for longer than this (the `secs` field) are
    /// answered by either server, whatever their bucket.
    pub load_balance_max_seconds: u32,
    /// Seconds in communications-interrupted before going to partner-down alone; 0: never.
    pub auto_partner_down: u32,
    /// Percent by which the free addresses of the pair may differ before they are
    /// rebalanced.
    pub max_lease_misbalance: u8,
    /// Percent of the free addresses a server may hold beyond its share, to keep
    /// clients on the address they had.
    pub max_lease_ownership: u8,
    /// Seconds between two pool rebalancing runs, at least and at most (dhcpd's
    /// `min-balance`, `max-balance`).
    pub min_balance: u32,
    pub max_balance: u32,
}

impl Failover {
    /// IANA's dhcp-failover port, dhcpd's default for both ends.
    pub const DEFAULT_PORT: u16 = 647;
    pub const DEFAULT_MCLT: u32 = 3600;
    pub const DEFAULT_SPLIT: u16 = 128;
    pub const DEFAULT_MAX_RESPONSE_DELAY: u32 = 30;
    /// dhcpd's own default: a window of 10 caps updates at 10 per round trip.
    pub const DEFAULT_MAX_UNACKED_UPDATES: u32 = 100;
    pub const DEFAULT_LOAD_BALANCE_MAX_SECONDS: u32 = 3;
    pub const DEFAULT_MAX_LEASE_MISBALANCE: u8 = 15;
    pub const DEFAULT_MAX_LEASE_OWNERSHIP: u8 = 10;
    pub const DEFAULT_MIN_BALANCE: u32 = 60;
    pub const DEFAULT_MAX_BALANCE: u32 = 3600;
    /// The shortest max-response-delay accepted: the machine must be able to send a
    /// contact message well within it.
    pub const MIN_RESPONSE_DELAY: u32 = 3;
    /// Longest relationship name; it travels as one failover option.
    pub const NAME_MAX: usize = 255;

    /// A partnership with every other value at its default.
    pub fn new(name: String, role: Role, address: Ipv4Addr, peer_address: Ipv4Addr) -> Self {
        Self {
            name,
            role,
            address,
            port: Self::DEFAULT_PORT,
            peer_address,
            peer_port: Self::DEFAULT_PORT,
            mclt: Self::DEFAULT_MCLT,
            split: Self::DEFAULT_SPLIT,
            hba: None,
            max_response_delay: Self::DEFAULT_MAX_RESPONSE_DELAY,
            max_unacked_updates: Self::DEFAULT_MAX_UNACKED_UPDATES,
            load_balance_max_seconds: Self::DEFAULT_LOAD_BALANCE_MAX_SECONDS,
            auto_partner_down: 0,
            max_lease_misbalance: Self::DEFAULT_MAX_LEASE_MISBALANCE,
            max_lease_ownership: Self::DEFAULT_MAX_LEASE_OWNERSHIP,
            min_balance: Self::DEFAULT_MIN_BALANCE,
            max_balance: Self::DEFAULT_MAX_BALANCE,
        }
    }

    /// The bucket assignment in force: `hba` if given, else `split`.
    pub fn hba(&self) -> Hba {
        self.hba.unwrap_or_else(|| Hba::split(self.split))
    }

    /// What the failover state machine runs on.
    pub fn params(&self) -> Params {
        Params {
            name: self.name.clone(),
            role: self.role,
            mclt: self.mclt,
            hba: self.hba(),
            max_unacked: self.max_unacked_updates,
            max_response_delay: self.max_response_delay,
            auto_partner_down: self.auto_partner_down,
            balancing: Balancing {
                misbalance: self.max_lease_misbalance,
                ownership: self.max_lease_ownership,
                min: self.min_balance,
                max: self.max_balance,
            },
        }
    }

    /// Where the failover link listens or connects from, and where the partner is.
    pub fn endpoints(&self) -> Endpoints {
        Endpoints {
            local: SocketAddrV4::new(self.address, self.port),
            peer: SocketAddrV4::new(self.peer_address, self.peer_port),
        }
    }

    /// The checks of `Policy::validate` for the partnership: its own values, and its
    /// addresses against the pools it covers (all of them).
    pub(super) fn validate(&self, subnets: &[Subnet], err: &mut impl FnMut(String, String)) {
        let at = |key: &str| format!("failover.{key}");
        if self.name.is_empty() || self.name.len() > Self::NAME_MAX {
            err(
                at("name"),
                format!("the name must be 1 to {} bytes", Self::NAME_MAX),
            );
        }
        if self.address == self.peer_address {
            err(
                at("peer-address"),
                format!(
                    "{} is also our own address; the partner is another server",
                    self.peer_address
                ),
            );
        }
        for (key, port) in [("port", self.port), ("peer-port", self.peer_port)] {
            if port == 0 {
                err(at(key), "port 0 is not a TCP port".into());
            }
        }
        if self.role == Role::Primary {
            if self.mclt == 0 {
                err(
                    at("mclt"),
                    "must be at least 1 second (3600 is dhcpd's usual value)".into(),
                );
            }
            if self.split > 256 {
                err(
                    at("split"),
                    format!("{} is above the 256 hash buckets", self.split),
                );
            }
        }
        if self.max_response_delay < Self::MIN_RESPONSE_DELAY {
            err(
                at("max-response-delay"),
                format!(
                    "{} is below {} seconds; the partner could not keep the link alive",
                    self.max_response_delay,
                    Self::MIN_RESPONSE_DELAY
                ),
            );
        }
        if self.max_unacked_updates == 0 {
            err(
                at("max-unacked-updates"),
                "must be at least 1: the partner could send no update".into(),
            );
        }
        for (key, percent) in [
            ("max-lease-misbalance", self.max_lease_misbalance),
            ("max-lease-ownership", self.max_lease_ownership),
        ] {
            if percent > 100 {
                err(at(key), format!("{percent} is above 100 percent"));
            }
        }
        if self.min_balance == 0 {
            err(
                at("min-balance"),
                "must be at least 1 second (60 is dhcpd's default)".into(),
            );
        }
        if self.max_balance < self.min_balance {
            err(
                at("max-balance"),
                format!(
                    "{} is below min-balance ({})",
                    self.max_balance, self.min_balance
                ),
            );
        }
        for (key, a, whose) in [
            ("address", self.address, "this server"),
            ("peer-address", self.peer_address, "the partner"),
        ] {
            for (i, s) in subnets.iter().enumerate() {
                for (p, r) in s.pools.iter().map(|p| &p.range).enumerate() {
                    if r.contains(a) {
                        err(
                            at(key),
                            format!(
                                "{a} is inside subnet[{i}].pools[{p}] {r}: the pair could \
                                 lease {whose}'s own address to a client"
                            ),
                        );
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(role: Role) -> Failover {
        Failover::new(
            "pair".into(),
            role,
            Ipv4Addr::new(198, 51, 100, 2),
            Ipv4Addr::new(198, 51, 100, 3),
        )
    }

    #[test]
    fn params_and_endpoints_come_from_the_model() {
        let mut f = pair(Role::Primary);
        f.split = 64;
        f.auto_partner_down = 600;
        assert_eq!(
            f.params(),
            Params {
                name: "pair".into(),
                role: Role::Primary,
                mclt: 3600,
                hba: Hba::split(64),
                max_unacked: 100,
                max_response_delay: 30,
                auto_partner_down: 600,
                balancing: Balancing {
                    misbalance: 15,
                    ownership: 10,
                    min: 60,
                    max: 3600,
                },
            }
        );
        let mut explicit = [0u8; 32];
        explicit[31] = 0x80;
        f.hba = Some(Hba(explicit));
        assert_eq!(f.params().hba, Hba(explicit));
        let e = f.endpoints();
        assert_eq!(e.local.to_string(), "198.51.100.2:647");
        assert_eq!(e.peer.to_string(), "198.51.100.3:647");
    }

    #[test]
    fn bad_values_are_found_by_key() {
        let mut f = pair(Role::Primary);
        f.name.clear();
        f.peer_address = f.address;
        f.mclt = 0;
        f.split = 257;
        f.max_response_delay = 2;
        f.max_unacked_updates = 0;
        f.max_lease_ownership = 101;
        f.min_balance = 0;
        let mut found = Vec::new();
        f.validate(&[], &mut |path, _| found.push(path));
        assert_eq!(
            found,
            [
                "failover.name",
                "failover.peer-address",
                "failover.mclt",
                "failover.split",
                "failover.max-response-delay",
                "failover.max-unacked-updates",
                "failover.max-lease-ownership",
                "failover.min-balance",
            ]
        );
        let mut f = pair(Role::Primary);
        f.max_balance = f.min_balance - 1;
        let mut found = Vec::new();
        f.validate(&[], &mut |path, _| found.push(path));
        assert_eq!(found, ["failover.max-balance"]);
        // The secondary's mclt and split are the primary's, whatever the model holds.
        let mut f = pair(Role::Secondary);
        f.mclt = 0;
        f.split = 257;
        let mut found = Vec::new();
        f.validate(&[], &mut |path, _| found.push(path));
        assert!(found.is_empty(), "{found:?}");
    }
}
