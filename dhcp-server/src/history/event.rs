//! Lease events as the follower makes them from journal records, the server they come
//! from, and the position in the journal a sink stores with what it delivered.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use dhcp_proto::lease::{hex, BindingState, Cause, HwAddr, Record, STAMPS_PER_SEC};
use dhcp_proto::wire::relay::{sub, sub_option};

/// What happened to a lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    /// A client was bound to an address it did not hold (DHCPACK after an offer, or for
    /// an address another client held before).
    Granted,
    /// A client's lease on an address it held was extended.
    Renewed,
    /// The client gave the address back (DHCPRELEASE), or the operator did for it.
    Released,
    /// The client declined the address (DHCPDECLINE: in use on the wire).
    Declined,
    /// The lease ran out.
    Expired,
    /// The operator deleted the lease (`ctl delete`).
    Deleted,
    /// The failover partner's binding was applied here (its BNDUPD); `Event::state`
    /// says what the partner did.
    Partner,
    ReservationAdded,
    ReservationRemoved,
}

impl EventKind {
    pub const ALL: [EventKind; 9] = [
        Self::Granted,
        Self::Renewed,
        Self::Released,
        Self::Declined,
        Self::Expired,
        Self::Deleted,
        Self::Partner,
        Self::ReservationAdded,
        Self::ReservationRemoved,
    ];

    /// The name in subjects, rows, lines and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Granted => "granted",
            Self::Renewed => "renewed",
            Self::Released => "released",
            Self::Declined => "declined",
            Self::Expired => "expired",
            Self::Deleted => "deleted",
            Self::Partner => "partner",
            Self::ReservationAdded => "reservation-added",
            Self::ReservationRemoved => "reservation-removed",
        }
    }

    /// Whether the client holds the address after the event (a span is open).
    pub fn binds(self, state: BindingState) -> bool {
        match self {
            Self::Granted | Self::Renewed => true,
            Self::Partner => state == BindingState::Active,
            _ => false,
        }
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The relay agent information a lease was granted through (RFC 3046 option 82) and the
/// relay's address. Empty fields: not sent.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Relay {
    pub circuit_id: Vec<u8>,
    pub remote_id: Vec<u8>,
    /// RFC 3993 sub-option 6.
    pub subscriber_id: Vec<u8>,
    pub giaddr: Option<Ipv4Addr>,
}

impl Relay {
    /// From option 82's stored value and the request's giaddr (0.0.0.0: not relayed).
    pub fn new(agent_info: &[u8], giaddr: Ipv4Addr) -> Self {
        let get = |code| sub_option(agent_info, code).unwrap_or_default().to_vec();
        Relay {
            circuit_id: get(sub::CIRCUIT_ID),
            remote_id: get(sub::REMOTE_ID),
            subscriber_id: get(sub::SUBSCRIBER_ID),
            giaddr: (!giaddr.is_unspecified()).then_some(giaddr),
        }
    }
}

/// One lease event. Times are seconds since the Unix epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    /// The binding state the record left (ISC dhcpd's names: active, free, expired...).
    pub state: BindingState,
    /// When it happened.
    pub at: u64,
    pub addr: Ipv4Addr,
    pub hw: HwAddr,
    /// Option 61, empty when the client sent none.
    pub client_id: Vec<u8>,
    /// Option 12 as the client sent it with the request that made the event; empty for
    /// events no request made.
    pub host_name: Vec<u8>,
    pub relay: Relay,
    /// The lease's start and end (`ends` is `dhcp_proto::lease::NEVER` for infinity).
    pub starts: u64,
    pub ends: u64,
    /// The journal record's Lamport stamp: with the server and the address, it names the
    /// event uniquely and stably (redelivery after a restart carries the same one).
    pub stamp: u64,
    /// Where the record is in the journal.
    pub shard: u32,
    pub seq: u64,
}

impl Event {
    /// The event a journal record tells of, if any (failover bookkeeping, class members
    /// and records without a cause tell of none).
    pub fn from_record(shard: u32, seq: u64, rec: &Record<'_>) -> Option<Event> {
        match rec {
            Record::Lease(l) => {
                let kind = match l.context.cause {
                    Cause::Granted => EventKind::Granted,
                    Cause::Renewed => EventKind::Renewed,
                    Cause::Released | Cause::OperatorReleased => EventKind::Released,
                    Cause::Declined => EventKind::Declined,
                    Cause::Expired => EventKind::Expired,
                    Cause::OperatorDeleted => EventKind::Deleted,
                    Cause::Partner => EventKind::Partner,
                    Cause::Failover | Cause::Unknown => return None,
                };
                Some(Event {
                    kind,
                    state: l.state,
                    at: if l.context.at == 0 {
                        l.cltt
                    } else {
                        l.context.at
                    },
                    addr: l.addr,
                    hw: HwAddr::new(l.htype, l.chaddr),
                    client_id: l.client_id.to_vec(),
                    host_name: l.context.host_name.to_vec(),
                    relay: Relay::new(l.agent_info, l.context.giaddr),
                    starts: l.starts,
                    ends: l.ends,
                    stamp: l.stamp,
                    shard,
                    seq,
                })
            }
            Record::ReservationAdded(r) => Some(Event {
                kind: EventKind::ReservationAdded,
                state: BindingState::Free,
                at: r.stamp / STAMPS_PER_SEC,
                addr: r.addr,
                hw: HwAddr::new(r.htype, r.chaddr),
                client_id: r.client_id.to_vec(),
                host_name: r.host_name.to_vec(),
                relay: Relay::default(),
                starts: 0,
                ends: 0,
                stamp: r.stamp,
                shard,
                seq,
            }),
            Record::ReservationRemoved { stamp, addr } => Some(Event {
                kind: EventKind::ReservationRemoved,
                state: BindingState::Free,
                at: stamp / STAMPS_PER_SEC,
                addr: *addr,
                hw: HwAddr::default(),
                client_id: Vec::new(),
                host_name: Vec::new(),
                relay: Relay::default(),
                starts: 0,
                ends: 0,
                stamp: *stamp,
                shard,
                seq,
            }),
            Record::Failover(_) | Record::MemberAdded(_) | Record::MemberRemoved(_) => None,
        }
    }

    /// A name of the event no other event of any server has, the same at every
    /// redelivery: sinks deduplicate by it.
    pub fn id(&self, origin: &Origin) -> String {
        format!("{}/{}/{}", origin.server, self.addr, self.stamp)
    }

    /// The event as one JSON object (NATS messages, text lines, consumers' input).
    pub fn to_json(&self, origin: &Origin) -> serde_json::Value {
        let opt_hex = |b: &[u8]| (!b.is_empty()).then(|| hex(b));
        serde_json::json!({
            "id": self.id(origin),
            "event": self.kind.as_str(),
            "state": self.state.isc_name(),
            "at": self.at,
            "address": self.addr.to_string(),
            "hardware-type": self.hw.htype,
            "hardware-address": hex(self.hw.bytes()),
            "client-id": opt_hex(&self.client_id),
            "host-name": (!self.host_name.is_empty())
                .then(|| String::from_utf8_lossy(&self.host_name).into_owned()),
            "circuit-id": opt_hex(&self.relay.circuit_id),
            "remote-id": opt_hex(&self.relay.remote_id),
            "subscriber-id": opt_hex(&self.relay.subscriber_id),
            "giaddr": self.relay.giaddr.map(|a| a.to_string()),
            "starts": self.starts,
            "ends": self.ends,
            "server": origin.server,
            "site": origin.site,
            "role": origin.role.as_str(),
        })
    }
}

/// This server's role in a failover pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Standalone,
    Primary,
    Secondary,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Standalone => "standalone",
            Role::Primary => "primary",
            Role::Secondary => "secondary",
        }
    }
}

/// Who the events come from: the server's name (unique among all servers writing to one
/// sink), the site (region) its pair serves, and its failover role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub server: String,
    pub site: String,
    pub role: Role,
}

/// How far a sink has got in the journal: per shard of the journal's generation, the
/// sequence number of the next record to deliver. A position into another journal (its
/// state directory replaced: another id) or another generation (resharded since) does
/// not apply there: the follower starts that journal from its beginning.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Position {
    /// The journal's identity (`journal::Tail::id`).
    pub journal: u64,
    pub generation: u64,
    pub next: Vec<u64>,
}

impl fmt::Display for Position {
    /// `<journal id, 16 hex digits>/g<generation>:<next of shard 0>,<next of shard 1>,...`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}/g{}:", self.journal, self.generation)?;
        for (i, n) in self.next.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{n}")?;
        }
        Ok(())
    }
}

impl FromStr for Position {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!("journal position '{s}': expected <journal id>/g<generation>:<seq>,<seq>...")
        };
        let (journal, rest) = s.split_once("/g").ok_or_else(bad)?;
        let (g, rest) = rest.split_once(':').ok_or_else(bad)?;
        let journal = u64::from_str_radix(journal, 16).map_err(|_| bad())?;
        let generation = g.parse().map_err(|_| bad())?;
        let next = rest
            .split(',')
            .map(|n| n.parse().map_err(|_| bad()))
            .collect::<Result<Vec<u64>, String>>()?;
        Ok(Position {
            journal,
            generation,
            next,
        })
    }
}

/// Events in journal order per shard, and the position after them.
#[derive(Debug, Clone, Default)]
pub struct Batch {
    pub events: Vec<Event>,
    pub after: Position,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn position_round_trips_and_rejects_junk() {
        let p = Position {
            journal: 0xfeed_0000_beef,
            generation: 3,
            next: vec![1, 20_000, 7],
        };
        assert_eq!(p.to_string(), "0000feed0000beef/g3:1,20000,7");
        assert_eq!(p.to_string().parse::<Position>(), Ok(p));
        for junk in [
            "",
            "g3:1",
            "x/g3:1",
            "1/g",
            "1/3:1",
            "1/g3:",
            "1/gx:1",
            "1/g3:1,,2",
            "1/g3:-1",
        ] {
            assert!(junk.parse::<Position>().is_err(), "{junk}");
        }
    }

    #[test]
    fn relay_fields_come_from_option_82() {
        let agent = [1, 3, b'e', b't', b'0', 2, 2, 0xab, 0xcd, 6, 1, b's'];
        let r = Relay::new(&agent, Ipv4Addr::new(192, 0, 2, 1));
        assert_eq!(r.circuit_id, b"et0");
        assert_eq!(r.remote_id, [0xab, 0xcd]);
        assert_eq!(r.subscriber_id, b"s");
        assert_eq!(r.giaddr, Some(Ipv4Addr::new(192, 0, 2, 1)));
        assert_eq!(Relay::new(&[], Ipv4Addr::UNSPECIFIED), Relay::default());
    }
}
