//! Failover with a partner server: the protocol of draft-ietf-dhc-failover-12 as ISC
//! dhcpd 4.4 speaks it. `wire` reads and writes the TCP messages, `message` gives them
//! meaning, `machine` is the sans-I/O state machine of one partnership; the control
//! thread drives it over a TCP link and the workers apply what it decides.

pub mod machine;
pub mod message;
pub mod wire;

use std::net::SocketAddrV4;

pub use wire::ServerState;

/// Where the failover link runs: our address and the partner's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoints {
    pub local: SocketAddrV4,
    pub peer: SocketAddrV4,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Primary,
    Secondary,
}

impl Role {
    pub fn name(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Secondary => "secondary",
        }
    }
}

/// What the pair's states let this server do for clients (ISC's service states).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// Both normal: load balancing, each allocates from its own pool.
    Cooperating,
    /// The partner is out of touch: answer every client, allocate from the own pool.
    NotCooperating,
    /// Partner-down: answer every client; the partner's free addresses become usable
    /// once STOS + MCLT has passed.
    PartnerDown,
    /// Recovering, resolving conflicts, paused, shut down: answer no client.
    NotResponding,
    /// The first seconds after start, until the partner is heard or the wait ends.
    Startup,
}

impl Service {
    pub fn name(self) -> &'static str {
        match self {
            Service::Cooperating => "cooperating",
            Service::NotCooperating => "not-cooperating",
            Service::PartnerDown => "partner-down",
            Service::NotResponding => "not-responding",
            Service::Startup => "startup",
        }
    }

    /// Whether clients get answers at all.
    pub fn serves(self) -> bool {
        matches!(
            self,
            Service::Cooperating | Service::NotCooperating | Service::PartnerDown
        )
    }
}

/// The hash bucket assignment of RFC 3074: bit `b` set means bucket `b` is the
/// primary's. ISC dhcpd's `split N` sets the first N buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hba(pub [u8; 32]);

impl Hba {
    pub fn split(n: u16) -> Self {
        let mut hba = [0u8; 32];
        for b in 0..usize::from(n.min(256)) {
            hba[b / 8] |= 1 << (b % 8);
        }
        Hba(hba)
    }

    /// Whether a client whose RFC 3074 hash is `bucket` belongs to the primary.
    pub fn primary_has(&self, bucket: u8) -> bool {
        self.0[usize::from(bucket >> 3)] & (1 << (bucket & 7)) != 0
    }

    /// Whether `role` answers the client of this bucket while the pair cooperates.
    pub fn mine(&self, role: Role, bucket: u8) -> bool {
        self.primary_has(bucket) == (role == Role::Primary)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_gives_the_primary_the_first_buckets() {
        let hba = Hba::split(128);
        assert!(hba.mine(Role::Primary, 0));
        assert!(hba.mine(Role::Primary, 127));
        assert!(hba.mine(Role::Secondary, 128));
        assert!(hba.mine(Role::Secondary, 255));
        assert_eq!((0..=255u8).filter(|&b| hba.primary_has(b)).count(), 128);
        assert!(!Hba::split(0).primary_has(0));
        assert!(Hba::split(256).primary_has(255));
    }
}
